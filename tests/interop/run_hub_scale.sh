#!/bin/sh
# Scale of the hub: one chat_server process (optimized build) holds
# HUB_SCALE_CLIENTS (default 10,000) WebSocket connections on loopback, all
# subscribed to one channel, and delivers broadcasts to all of them
# (tests/interop/hub_scale.c). Prints the library's heap bytes per idle
# connection (counted by chat_server through the allocator hook) and the
# publish-to-last-delivery time; passes when every connection opened,
# subscribed and received every broadcast. Skips when the descriptor limit
# is too low. Usage: tests/interop/run_hub_scale.sh BUILD_DIR (from the repo root).
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
n=${HUB_SCALE_CLIENTS:-10000}
opt="-O2 -g"

limit=$(ulimit -Hn)
if [ "$limit" != unlimited ] && [ "$limit" -lt $((n + 64)) ]; then
    echo "run_hub_scale: the descriptor limit ($limit) is below $n connections"
    summary 0 0 1
fi
$CC $warn $opt -D_GNU_SOURCE -I. -Iexamples -o "$out/chat_server_opt" examples/chat_server.c &&
$CC $warn $opt -D_GNU_SOURCE -I. -Iexamples -o "$out/hub_scale" tests/interop/hub_scale.c ||
    { echo "run_hub_scale: build failed"; summary 0 1 0; }

log=$out/chat_server-scale.log
: > "$log"
"$out/chat_server_opt" --port 0 --max-clients $((n + 100)) --www examples/www > "$log" 2>&1 &
server_pid=$!
trap '[ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null' EXIT
trap 'exit 1' INT TERM
port=
i=0
while [ $i -lt 100 ]; do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log")
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
done
[ -n "$port" ] || { echo "run_hub_scale: chat_server did not start"; cat "$log"; summary 0 1 0; }

res=$out/hub_scale-output.txt
timeout -k 5 300 "$out/hub_scale" --port "$port" --clients "$n" --rounds 5 > "$res" 2>&1
rc=$?
grep -v '^Pass: ' "$res"
line=$(grep -E '^Pass: [0-9]+, fail: [0-9]+' "$res" | tail -n 1)
if [ -n "$line" ]; then
    p=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+), skip: ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+), skip: ([0-9]+).*/\2/')
    s=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+), skip: ([0-9]+).*/\3/')
else
    echo "FAIL hub_scale: no summary (exit $rc)"
    p=0; f=1; s=0
fi
[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && { echo "FAIL hub_scale: exit $rc"; f=1; }

kill -TERM "$server_pid" 2>/dev/null
wait "$server_pid"
rc=$?
server_pid=
if [ "$rc" -eq 0 ]; then
    echo "ok   chat_server: clean shutdown, no library heap left"
    p=$((p + 1))
else
    echo "FAIL chat_server: exit $rc"; tail -n 20 "$log"
    f=$((f + 1))
fi
summary "$p" "$f" "$s"
