#!/bin/sh
# Several hub processes as one, through Redis pub/sub: examples/chat_server
# built with the Redis bridge (examples/redis_bridge.h, hiredis) and
# ASan+UBSan; tests/interop/redis_peer.py starts its own redis-server on a
# free loopback port (never the system's service) and two chat_servers, and
# checks exactly-once broadcasts and send_to_user across them, a channel
# message at the same offset and epoch on both (shared positions: Redis
# numbers them), channel interest in Redis, and a Redis restart and a stop
# mid-test (publishes refused, subscribers told of a lost history). Then
# tests/interop/redis_presence_peer.py checks presence across two such
# servers (with its own redis-server and a short --presence-ttl): members
# on one process seen on the other, per-user joins and leaves, a kill -9'd
# process's users gone within 4/3 of the TTL (and not before half of it), a
# restarted one leaving no ghosts, a clean stop and a Redis restart (leaves
# lost meanwhile take effect within the same bound), each watcher's model
# equal to the hub's answer. Then, unless REDIS_BENCH=0,
# tests/interop/redis_bench.c measures delivery through Redis
# to REDIS_BENCH_CLIENTS (default 1,000) subscribers spread over two
# optimized chat_servers (one more case: every message reached everyone).
# Usage: tests/interop/run_redis.sh BUILD_DIR (from the repo root). Prints
# one closing line "Pass: N, fail: N, skip: N.". Skips when redis-server,
# hiredis or python3-websockets is missing (fails instead under CI).
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
py=/usr/bin/python3
redis_server=$(command -v redis-server || echo /usr/bin/redis-server)
redis_cli=$(command -v redis-cli || echo /usr/bin/redis-cli)

[ -x "$redis_server" ] && [ -x "$redis_cli" ] || skip_all "redis-server is missing (Debian package redis-server)"
printf '#include <hiredis/async.h>\n' | $CC -E -x c - >/dev/null 2>&1 || skip_all "hiredis is missing (libhiredis-dev)"
$py -c 'import websockets' 2>/dev/null || skip_all "python3-websockets is missing"

run=$(mktemp -d "$out/run-redis.XXXXXX") || { echo "run_redis: mktemp failed"; summary 0 1 0; }
bin=$out/chat_server_redis
$CC $warn $san ${CPPFLAGS:-} -D_GNU_SOURCE -DCHAT_WITH_REDIS -I. -Iexamples -o "$bin.$$" examples/chat_server.c -lhiredis &&
    mv -f "$bin.$$" "$bin" || { rm -f "$bin.$$"; echo "run_redis: build failed"; summary 0 1 0; }

pass=0; fail=0
# adds one program's closing line to pass/fail; $1 = output file, $2 = exit code
add() {
    grep -av '^Pass: ' "$1"
    line=$(grep -aE '^Pass: [0-9]+, fail: [0-9]+' "$1" | tail -n 1)
    if [ -z "$line" ]; then
        echo "FAIL $(basename "$1"): no summary (exit $2)"; tail -n 20 "$1"
        fail=$((fail + 1)); return
    fi
    p=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\2/')
    [ "$2" -ne 0 ] && [ "$f" -eq 0 ] && { echo "FAIL $(basename "$1"): exit $2"; f=1; }
    pass=$((pass + p)); fail=$((fail + f))
}

res=$run/redis_peer-output.txt
timeout -k 5 400 $py tests/interop/redis_peer.py --server "$bin" --www examples/www --run "$run" \
    --redis-server "$redis_server" --redis-cli "$redis_cli" > "$res" 2>&1
add "$res" $?

res=$run/redis_presence_peer-output.txt
timeout -k 5 300 $py tests/interop/redis_presence_peer.py --server "$bin" --www examples/www --run "$run" \
    --redis-server "$redis_server" --redis-cli "$redis_cli" > "$res" 2>&1
add "$res" $?

if [ "${REDIS_BENCH:-1}" != 0 ]; then
    opt="-O2 -g"
    $CC $warn $opt -D_GNU_SOURCE -DCHAT_WITH_REDIS -I. -Iexamples -o "$out/chat_server_redis_opt" \
        examples/chat_server.c -lhiredis &&
    $CC $warn $opt -D_GNU_SOURCE -I. -Iexamples -o "$out/redis_bench" tests/interop/redis_bench.c ||
        { echo "run_redis: bench build failed"; summary "$pass" $((fail + 1)) 0; }
    res=$run/redis_bench-output.txt
    timeout -k 5 300 $py tests/interop/redis_peer.py --server "$out/chat_server_redis_opt" \
        --bench "$out/redis_bench" --clients "${REDIS_BENCH_CLIENTS:-1000}" --www examples/www --run "$run" \
        --redis-server "$redis_server" --redis-cli "$redis_cli" > "$res" 2>&1
    add "$res" $?
fi
[ "$fail" -eq 0 ] || echo "logs kept in $run"
summary "$pass" "$fail" 0
