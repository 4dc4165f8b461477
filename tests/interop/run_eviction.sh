#!/bin/sh
# Eviction by the example servers (tests/interop/eviction_peer.py, raw
# sockets): echo_server's idle timeout frees a silent peer and a peer that
# sends and never reads, and keeps one that answers pings; chat_server frees
# a half-open client within its idle + close timeout (and its default bound
# is at most 45 s), answers an upgrade past --max-clients with 503 and
# Retry-After, and keeps /api/stats reachable while full. Both servers are
# built with ASan+UBSan and must exit cleanly.
# Usage: tests/interop/run_eviction.sh BUILD_DIR (from anywhere). Prints one
# closing line "Pass: N, fail: N, skip: N.".
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
py=/usr/bin/python3

run=$(mktemp -d "$out/run-eviction.XXXXXX") || { echo "run_eviction: mktemp failed"; summary 0 1 0; }
compile "$out/echo_server" examples/echo_server.c || { echo "run_eviction: build failed"; summary 0 1 0; }
chat=$out/chat_server_evict
$CC $warn $san ${CPPFLAGS:-} -D_GNU_SOURCE -I. -Iexamples -o "$chat.$$" examples/chat_server.c &&
    mv -f "$chat.$$" "$chat" || { rm -f "$chat.$$"; echo "run_eviction: build failed"; summary 0 1 0; }

res=$run/eviction-output.txt
timeout -k 5 240 $py tests/interop/eviction_peer.py --echo "$out/echo_server" --chat "$chat" --run "$run" > "$res" 2>&1
peer_counts eviction_peer "$res" $?
p=$pp; f=$ff
[ "$f" -eq 0 ] || echo "logs kept in $run"
summary "$p" "$f" 0
