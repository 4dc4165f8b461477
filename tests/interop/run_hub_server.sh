#!/bin/sh
# examples/hub_server (built with ASan+UBSan), the minimal hub a user copies,
# against Python websockets clients (tests/interop/hub_server_peer.py): the
# three ways a token travels, a stdin line broadcast to "news", refusals, and
# a clean exit on SIGTERM. Usage: tests/interop/run_hub_server.sh BUILD_DIR
# (from the repo root). Prints one closing line "Pass: N, fail: N, skip: N.".
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
py=/usr/bin/python3
$py -c 'import websockets' 2>/dev/null || skip_all "python3-websockets is missing"
$CC $warn $san ${CPPFLAGS:-} -D_GNU_SOURCE -I. -Iexamples -o "$out/hub_server" examples/hub_server.c ||
    { echo "run_hub_server: build failed"; summary 0 1 0; }
res=$out/hub_server-output.txt
timeout -k 5 120 $py tests/interop/hub_server_peer.py --server "$out/hub_server" > "$res" 2>&1
rc=$?
cat "$res"
grep -qE '^Pass: [0-9]+, fail: 0,' "$res" && [ $rc -eq 0 ] && exit 0
grep -qE '^Pass: ' "$res" || summary 0 1 0
exit 1
