#!/bin/sh
# Interop of the hub through examples/chat_server (built with ASan+UBSan):
# Python websockets and Node.js ws clients connect with a token, subscribe,
# publish and receive broadcasts (tests/interop/hub_peer.py, hub_peer.js);
# then the server must exit cleanly on SIGTERM (no sanitizer report, no
# library heap left). Usage: tests/interop/run_hub_interop.sh BUILD_DIR
# (from the repo root). Prints one closing line "Pass: N, fail: N, skip: N.".
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
py=/usr/bin/python3
pass=0; fail=0; skip=0

$CC $warn $san ${CPPFLAGS:-} -D_GNU_SOURCE -I. -Iexamples -o "$out/chat_server" examples/chat_server.c ||
    { echo "run_hub_interop: build failed"; summary 0 1 0; }

log=$out/chat_server-interop.log
: > "$log"
"$out/chat_server" --port 0 --token alice=alice-secret --token bob=bob-secret --www examples/www > "$log" 2>&1 &
server_pid=$!
trap '[ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null' EXIT
trap 'exit 1' INT TERM
port=
i=0
while [ $i -lt 100 ]; do        # up to 10 s, sanitizer start-up included
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log")
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
done
[ -n "$port" ] || { echo "run_hub_interop: chat_server did not start"; cat "$log"; summary 0 1 0; }
url=http://127.0.0.1:$port

# peer NAME COMMAND...: runs one peer script and adds up its summary line.
peer() {
    name=$1; shift
    res=$out/hub-$name-output.txt
    timeout -k 5 300 "$@" > "$res" 2>&1
    rc=$?
    grep -v '^Pass: ' "$res"
    line=$(grep -E '^Pass: [0-9]+, fail: [0-9]+' "$res" | tail -n 1)
    if [ -z "$line" ]; then
        echo "FAIL $name: no summary (exit $rc)"; tail -n 20 "$res"
        fail=$((fail + 1)); return
    fi
    p=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\2/')
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && { echo "FAIL $name: exit $rc"; f=1; }
    pass=$((pass + p)); fail=$((fail + f))
}

# A peer that is not installed is a skip, or a failure under CI.
missing() {
    echo "run_hub_interop: $1"
    if [ -n "$CI" ]; then fail=$((fail + 1)); else skip=$((skip + 1)); fi
}

if $py -c 'import websockets' 2>/dev/null; then
    peer python $py tests/interop/hub_peer.py --url "$url"
else
    missing "python3-websockets is missing (tests/install_peers.sh installs it as root)"
fi
if $py -c 'import websockets' 2>/dev/null; then
    peer python-open $py tests/interop/chat_open_peer.py --server "$out/chat_server" --www examples/www
fi
if command -v node >/dev/null 2>&1 && [ -d tests/interop/node_modules/ws ]; then
    peer node node tests/interop/hub_peer.js --url "$url"
else
    missing "node or ws is missing (tests/install_peers.sh installs them)"
fi

# Graceful shutdown: clients still connected get 1001 Going Away.
holder=
if $py -c 'import websockets' 2>/dev/null; then
    ready=$out/hub-hold-ready
    rm -f "$ready"
    timeout -k 5 60 $py tests/interop/hub_peer.py --url "$url" --hold 50 "$ready" > "$out/hub-hold-output.txt" 2>&1 &
    holder=$!
    i=0
    while [ ! -f "$ready" ] && [ $i -lt 200 ] && kill -0 "$holder" 2>/dev/null; do sleep 0.05; i=$((i + 1)); done
fi
kill -TERM "$server_pid" 2>/dev/null
wait "$server_pid"
rc=$?
server_pid=
if [ -n "$holder" ]; then
    wait "$holder"
    res=$out/hub-hold-output.txt
    grep -v '^Pass: ' "$res"
    if grep -q '^Pass: 1, fail: 0' "$res"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
fi
if [ "$rc" -eq 0 ]; then
    echo "ok   chat_server: clean exit under ASan/UBSan, no library heap left"
    pass=$((pass + 1))
else
    echo "FAIL chat_server: exit $rc:"; tail -n 30 "$log"
    fail=$((fail + 1))
fi
summary "$pass" "$fail" "$skip"
