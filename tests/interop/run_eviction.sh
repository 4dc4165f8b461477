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
rc=$?
grep -v '^Pass: ' "$res"
line=$(grep -E '^Pass: [0-9]+, fail: [0-9]+' "$res" | tail -n 1)
if [ -n "$line" ]; then
    p=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\2/')
else
    echo "FAIL eviction_peer: no summary (exit $rc)"; tail -n 20 "$res"
    p=0; f=1
fi
[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && { echo "FAIL eviction_peer: exit $rc"; f=1; }
[ "$f" -eq 0 ] || echo "logs kept in $run"
summary "$p" "$f" 0
