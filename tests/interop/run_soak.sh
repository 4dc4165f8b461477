#!/bin/sh
# The soak test (tests/interop/soak.py, load from tests/interop/soak_load.c):
# chat_server under churn, steady numbered broadcasts, slow consumers,
# clients that vanish with a reset and protocol garbage, sampled every
# second (RSS, library heap, fds, hub gauges, a fresh client); then the same
# with two chat_servers joined by a private redis-server that is killed and
# restarted, and stopped (SIGSTOP), during the run.
#
# Short by default (inside `make test`): SOAK_SECONDS=20 per part, Redis
# stopped 5 s, chat_server --idle-timeout 5000 --close-timeout 1000 so the
# clients that went silent are evicted within the run. `make soak` runs it
# with SOAK_SECONDS=1800 (each part: an hour in all), Redis stopped 20 s and
# chat_server's default timeouts. Samples (CSV) and plots (PNG, with
# python3-matplotlib) go to BUILD_DIR/soak/. The Redis part is skipped when
# redis-server or hiredis is missing (a failure under CI).
# Usage: tests/interop/run_soak.sh BUILD_DIR (from anywhere). Prints one
# closing line "Pass: N, fail: N, skip: N.".
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
py=/usr/bin/python3
seconds=${SOAK_SECONDS:-20}
soak_out=$build/soak
mkdir -p "$soak_out" || { echo "run_soak: mkdir failed"; summary 0 1 0; }
opt="-O2 -g"
redis_server=$(command -v redis-server || echo /usr/bin/redis-server)

modes="--mode single"
skip=0
if [ -x "$redis_server" ] && printf '#include <hiredis/async.h>\n' | $CC -E -x c - >/dev/null 2>&1; then
    redis_flags="-DCHAT_WITH_REDIS -lhiredis"
    modes="$modes --mode redis"
else
    echo "run_soak: redis-server or hiredis is missing: the part with Redis is skipped"
    redis_flags=
    if [ -n "$CI" ]; then skip_fail=1; else skip=1; fi
fi
# shellcheck disable=SC2086 # redis_flags is a list of flags
$CC $warn $opt -D_GNU_SOURCE -I. -Iexamples -o "$out/chat_server_soak.$$" examples/chat_server.c $redis_flags &&
    mv -f "$out/chat_server_soak.$$" "$out/chat_server_soak" &&
$CC $warn $opt -D_GNU_SOURCE -I. -Iexamples -o "$out/soak_load.$$" tests/interop/soak_load.c &&
    mv -f "$out/soak_load.$$" "$out/soak_load" || { echo "run_soak: build failed"; summary 0 1 0; }

if [ "$seconds" -ge 300 ]; then
    timing="--stop-s 20"
else
    timing="--stop-s 5 --idle-ms 5000 --close-ms 1000"
fi
res=$soak_out/soak-output.txt
# shellcheck disable=SC2086 # modes and timing are lists of arguments
timeout -k 5 $((seconds * 2 + 400)) $py tests/interop/soak.py --server "$out/chat_server_soak" \
    --load "$out/soak_load" --out "$soak_out" --seconds "$seconds" $modes $timing > "$res" 2>&1
peer_counts soak "$res" $?
p=$pp; f=$ff
[ -n "${skip_fail:-}" ] && f=$((f + 1))
[ "$f" -eq 0 ] || echo "samples and logs in $soak_out"
summary "$p" "$f" "$skip"
