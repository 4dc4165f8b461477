#!/bin/sh
# The reconnecting client on real sockets, against an independent server
# (Python websockets, tests/interop/client_reconnect_peer.py):
#   subscribe and receive; the server is killed and restarted on the same
#   port; the client reconnects within its backoff bound, resubscribes in
#   order, flushes nothing twice and receives the next message; a stopped
#   (half-open) server is detected by the heartbeat; a bad token (4001) ends
#   the retry loop; the client exits cleanly under ASan/UBSan.
# Usage: tests/interop/run_client_reconnect.sh BUILD_DIR (from anywhere).
cd "$(dirname "$0")/../.." || exit 1
build=${1:-build}
out=$build/interop
mkdir -p "$out"
py=/usr/bin/python3
peer=tests/interop/client_reconnect_peer.py
CC=${CC:-cc}
pass=0; fail=0
server_pid=; client_pid=

summary() { echo "Pass: $pass, fail: $fail, skip: $1."; [ "$fail" -eq 0 ]; exit $?; }
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
cleanup() {
    [ -n "$server_pid" ] && { kill -CONT "$server_pid" 2>/dev/null; kill -KILL "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; }
    [ -n "$client_pid" ] && { kill -KILL "$client_pid" 2>/dev/null; wait "$client_pid" 2>/dev/null; }
    server_pid=; client_pid=
}
trap cleanup EXIT
trap 'exit 1' INT TERM

if ! $py -c 'import websockets' 2>/dev/null; then
    echo "run_client_reconnect: python3-websockets is missing (tests/install_peers.sh installs it)"
    [ -n "$CI" ] && { fail=1; summary 0; }
    summary 1
fi

# The client under test, with the sanitizers on.
cli=$out/client_cli_asan
if ! $CC -std=c99 -pedantic -Wall -Wextra -Werror -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
        -fno-sanitize-recover=all ${CPPFLAGS:-} -D_GNU_SOURCE -I. -Iexamples -o "$cli" examples/client_cli.c; then
    bad "build client_cli"; summary 0
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

now_ms() { date +%s%3N; }

# wait_for FILE PATTERN COUNT SECONDS: until PATTERN occurs COUNT times.
wait_for() {
    end=$(( $(now_ms) + $4 * 1000 ))
    while [ "$(now_ms)" -lt "$end" ]; do
        n=$(grep -c -- "$2" "$1" 2>/dev/null)
        [ "${n:-0}" -ge "$3" ] && return 0
        sleep 0.05
    done
    return 1
}

port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token='s3cret +/&'

# start_server LOG: a server on $port; waits until it listens.
start_server() {
    $py -u $peer serve --port "$port" --token "$token" > "$1" 2>&1 &
    server_pid=$!
    wait_for "$1" "^listening" 1 10 || { bad "server did not start"; cat "$1"; summary 0; }
}

publish() { # CHANNEL DATA
    timeout 10 $py $peer publish --port "$port" --token "$token" --channel "$1" --data "$2" > /dev/null 2>&1
}

# Bounds: backoff cap 800 ms; heartbeat 300 ms, dead after 700 ms of silence.
cap=800
slog1=$out/client_reconnect-server1.log
slog2=$out/client_reconnect-server2.log
clog=$out/client_reconnect-client.log
start_server "$slog1"
"$cli" --url "ws://127.0.0.1:$port/ws" --token "$token" --subscribe news --subscribe alerts \
    --send hello '{"n":1}' --backoff-base 100 --backoff-max $cap --heartbeat 300 --pong-timeout 700 \
    > "$clog" 2>&1 &
client_pid=$!

# 1. first connection: token accepted, subscriptions in order, then the queued message
if wait_for "$slog1" "^recv hello" 1 10 &&
   [ "$(grep -E '^(subscribe|recv)' "$slog1" | tr '\n' '|')" = "subscribe news|subscribe alerts|recv hello {\"n\":1}|" ] &&
   grep -q "^open token $token\$" "$slog1"; then
    ok "connect: token, subscriptions in order, offline queue flushed"
else
    bad "connect"; cat "$slog1" "$clog"
fi

# 2. a published message arrives
if publish news '"m1"' && wait_for "$clog" '"data":"m1"' 1 5; then
    ok "message received"
else
    bad "message m1"; tail -n 20 "$clog"
fi

# 3. the server dies: the client notices and starts retrying
kill -KILL "$server_pid"; wait "$server_pid" 2>/dev/null; server_pid=
if wait_for "$clog" "retry 1 in" 1 5; then ok "server killed: retrying"; else bad "no retry after kill"; tail -n 20 "$clog"; fi
sleep 1.5       # several refused attempts; the backoff reaches its cap

# 4. restarted on the same port: back within the cap, resubscribed in order
start_server "$slog2"
t0=$(now_ms)
if wait_for "$slog2" "^subscribe alerts" 1 10; then
    dt=$(( $(now_ms) - t0 ))
    order=$(grep -E '^(subscribe|recv)' "$slog2" | tr '\n' '|')
    if [ "$dt" -le $((cap + 1200)) ] && [ "$order" = "subscribe news|subscribe alerts|" ]; then
        ok "reconnected in $dt ms (cap $cap ms), resubscribed in order, nothing sent twice"
    else
        bad "reconnect took $dt ms or wrong order: $order"
    fi
else
    bad "no resubscribe after restart"; cat "$slog2"; tail -n 20 "$clog"
fi

# 5. the next message arrives
if publish news '"m2"' && wait_for "$clog" '"data":"m2"' 1 5; then
    ok "message after restart received"
else
    bad "message m2"; tail -n 20 "$clog"
fi

# 6. a server that stops answering (half-open) is detected by the heartbeat
kill -STOP "$server_pid"
if wait_for "$clog" 'reason "ping timeout"' 1 5; then ok "dead peer detected"; else bad "dead peer not detected"; tail -n 20 "$clog"; fi
kill -CONT "$server_pid"
if wait_for "$slog2" "^subscribe alerts" 2 15; then ok "reconnected after dead peer"; else bad "no reconnect after dead peer"; tail -n 20 "$clog"; fi

# 7. SIGTERM: a close handshake and a clean exit (LeakSanitizer runs at exit)
kill -TERM "$client_pid"
wait "$client_pid"; rc=$?; client_pid=
if [ "$rc" -eq 0 ] && wait_for "$slog2" "^close 1000 subs=2" 1 5; then
    ok "client closes with 1000 and exits cleanly"
else
    bad "client exit $rc"; tail -n 30 "$clog"; tail -n 5 "$slog2"
fi

# 8. a refused token (4001) ends the retry loop; the program exits on its own
blog=$out/client_reconnect-badtoken.log
timeout 10 "$cli" --url "ws://127.0.0.1:$port/ws" --token wrong --backoff-base 100 > "$blog" 2>&1; rc=$?
if [ "$rc" -eq 0 ] && grep -q "stopped: server closed with a terminal code" "$blog" && [ "$(grep -c 'connecting to' "$blog")" -eq 1 ]; then
    ok "4001 stops retrying"
else
    bad "4001 (exit $rc)"; cat "$blog"
fi

# 9. the same on libuv (examples/libuv_client.c), when libuv is installed
uvcli=$out/libuv_client_asan
if [ ! -f /usr/include/uv.h ]; then
    echo "skip libuv_client: libuv1-dev is missing"
    [ -n "$CI" ] && bad "libuv1-dev missing under CI"
elif ! $CC -std=c99 -pedantic -Wall -Wextra -Werror -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
        -fno-sanitize-recover=all ${CPPFLAGS:-} -D_GNU_SOURCE -I. -Iexamples -o "$uvcli" examples/libuv_client.c -luv; then
    bad "build libuv_client"
else
    ulog=$out/client_reconnect-libuv.log
    slog4=$out/client_reconnect-server4.log
    "$uvcli" --url "ws://127.0.0.1:$port/ws" --token "$token" --subscribe news --backoff-base 100 \
        --backoff-max $cap > "$ulog" 2>&1 &
    client_pid=$!
    if wait_for "$slog2" "^subscribe news" 3 10 && publish news '"u1"' && wait_for "$ulog" '"data":"u1"' 1 5; then
        kill -KILL "$server_pid"; wait "$server_pid" 2>/dev/null; server_pid=
        sleep 1
        start_server "$slog4"
        if wait_for "$slog4" "^subscribe news" 1 10 && publish news '"u2"' && wait_for "$ulog" '"data":"u2"' 1 5; then
            kill -TERM "$client_pid"; wait "$client_pid"; rc=$?; client_pid=
            if [ "$rc" -eq 0 ] && wait_for "$slog4" "^close 1000 subs=1" 1 5; then
                ok "libuv_client: receives, reconnects, resubscribes, exits cleanly"
            else
                bad "libuv_client exit $rc"; tail -n 20 "$ulog"
            fi
        else
            bad "libuv_client after restart"; tail -n 20 "$ulog"; cat "$slog4"
        fi
    else
        bad "libuv_client first message"; tail -n 20 "$ulog"
    fi
fi

cleanup
summary 0
