#!/bin/sh
# The POSIX loop's example programs as a user runs them (built with
# ASan+UBSan, as strict C99 with only _POSIX_C_SOURCE, the way their header
# comments say): posix_hub with two tokens, posix_subscriber on a channel,
# examples/client_cli publishing to it reliably, a refused token, the
# subscriber retrying while the hub is down and recovering once it is back,
# posix_echo echoing to client_cli, and every program leaving cleanly (exit
# 0, no leak) on SIGTERM. Usage: tests/interop/run_posix_examples.sh BUILD_DIR
# (from the repo root). Prints one closing line "Pass: N, fail: N, skip: N.".
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
run=$out/posix-run.$$
mkdir -p "$run" || summary 0 1 0
for p in posix_hub posix_subscriber posix_echo; do
    $CC $warn $san -D_POSIX_C_SOURCE=200809L -I. -o "$out/$p" "examples/$p.c" ||
        { echo "run_posix_examples: build of $p failed"; summary 0 1 0; }
done
$CC $warn $san -D_GNU_SOURCE -I. -Iexamples -o "$out/client_cli" examples/client_cli.c ||
    { echo "run_posix_examples: build of client_cli failed"; summary 0 1 0; }
pass=0; fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
# wait_for FILE PATTERN SECONDS: until the pattern shows up in the file
wait_for() {
    i=0
    while [ $i -lt $(($3 * 10)) ]; do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1; i=$((i + 1))
    done
    return 1
}
port_of() { sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" | head -n 1; }
# stop PID NAME: SIGTERM, then it must exit 0 within 5 s
stop() {
    kill -TERM "$1" 2>/dev/null
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$1" 2>/dev/null; then kill -KILL "$1"; wait "$1" 2>/dev/null; bad "$2 exits on SIGTERM"; return; fi
    wait "$1"; rc=$?
    [ $rc -eq 0 ] && ok "$2 exits 0 on SIGTERM" || bad "$2 exits 0 on SIGTERM (exit $rc)"
}

# --- the hub, a subscriber, a publisher ---
"$out/posix_hub" 0 alice=secret bob=hunter2 > "$run/hub.txt" 2>&1 & hub=$!
wait_for "$run/hub.txt" listening 10 || { cat "$run/hub.txt"; bad "posix_hub starts"; kill $hub; summary $pass $fail 0; }
port=$(port_of "$run/hub.txt")
"$out/posix_subscriber" "ws://127.0.0.1:$port/ws" secret news > "$run/sub.txt" 2>&1 & sub=$!
wait_for "$run/sub.txt" '^subscribed' 10 && ok "posix_subscriber joins news" || bad "posix_subscriber joins news"
timeout 30 "$out/client_cli" --url "ws://127.0.0.1:$port/ws" --token hunter2 --publish news --count 20 --rate 200 \
    > "$run/pub.txt" 2>&1
grep -q 'published 20 acked 20' "$run/pub.txt" && ok "20 reliable publishes acknowledged" ||
    { bad "20 reliable publishes acknowledged"; tail -n 5 "$run/pub.txt"; }
wait_for "$run/sub.txt" '"data":20}' 10 && [ "$(grep -c '^message ' "$run/sub.txt")" -eq 20 ] &&
    ok "the subscriber got each of the 20 once" || bad "the subscriber got each of the 20 once"
timeout 10 "$out/client_cli" --url "ws://127.0.0.1:$port/ws" --token wrong --max-attempts 1 > "$run/bad.txt" 2>&1
grep -q 'code 4001' "$run/bad.txt" && ok "a wrong token is refused with 4001" || bad "a wrong token is refused with 4001"

# --- the hub goes (1001), the subscriber retries, a new hub comes on the same port ---
stop $hub posix_hub
wait_for "$run/sub.txt" 'retrying' 10 && ok "the subscriber retries after 1001" || bad "the subscriber retries after 1001"
"$out/posix_hub" "$port" alice=secret > "$run/hub2.txt" 2>&1 & hub=$!
wait_for "$run/hub2.txt" listening 10 || bad "posix_hub restarts on its port"
wait_for "$run/sub.txt" 'recovered' 40 && ok "the subscriber is back (recovered: false, a new process)" ||
    bad "the subscriber is back"
stop $sub posix_subscriber
stop $hub posix_hub

# --- the echo server ---
"$out/posix_echo" 0 > "$run/echo.txt" 2>&1 & echo=$!
wait_for "$run/echo.txt" listening 10 || bad "posix_echo starts"
eport=$(port_of "$run/echo.txt")
timeout 20 "$out/client_cli" --url "ws://127.0.0.1:$eport/" --send hello '{"n":1}' --send hello '{"n":2}' \
    --count 2 --max-attempts 1 > "$run/echo-cli.txt" 2>&1
[ "$(grep -c 'message {"type":"hello"' "$run/echo-cli.txt")" -eq 2 ] && ok "posix_echo echoes" ||
    { bad "posix_echo echoes"; tail -n 5 "$run/echo-cli.txt"; }
stop $echo posix_echo
[ $fail -ne 0 ] && { echo "logs in $run"; tail -n 20 "$run"/*.txt; }
summary $pass $fail 0
