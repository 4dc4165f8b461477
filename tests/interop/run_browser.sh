#!/bin/sh
# Browser test of the chat demo: examples/chat_server (built with ASan+UBSan)
# and its page, driven in Debian's headless Chromium by playwright-core
# (tests/browser/chat.spec.js; never a downloaded browser; its header lists
# the cases). Two of them run two chat_servers on one redis-server of their
# own: the page's server killed and started again while the other publishes,
# the page back with every missed message, recovered from Redis and marked
# so, no gap line; then both servers' clean exits. For those chat_server is
# built with the Redis bridge (-DCHAT_WITH_REDIS -lhiredis, as run_redis.sh
# does) and redis-server is passed to the spec; without hiredis or
# redis-server they are skipped with a note (failed under CI=true). Usage:
# tests/interop/run_browser.sh BUILD_DIR (from the repo root). Screenshots
# and server logs go to BUILD_DIR/browser. Prints one closing line
# "Pass: N, fail: N, skip: N.". Chromium, node or playwright-core missing:
# a skip, or a failure under CI=true (tests/install_peers.sh installs them).
# CHROMIUM=/path overrides /usr/bin/chromium, REDIS_SERVER=/path the
# redis-server found on PATH.
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
dir=$build/browser
mkdir -p "$dir" || { echo "run_browser: cannot create $dir"; summary 0 1 0; }
chromium=${CHROMIUM:-/usr/bin/chromium}

[ -x "$chromium" ] || skip_all "no Chromium at $chromium (apt-get install chromium)"
command -v node >/dev/null 2>&1 || skip_all "node is missing (apt-get install nodejs npm)"
[ -f tests/browser/node_modules/playwright-core/package.json ] ||
    skip_all "playwright-core is missing (cd tests/browser && npm ci)"

# With the Redis bridge when hiredis is installed (its own name, so a
# build of the other kind is never taken for it), else without (the Redis
# cases are then skipped). Rebuilt when it is older than anything it uses;
# a private name first, so a concurrent run never sees half a file.
redis_server=${REDIS_SERVER:-$(command -v redis-server)}
redis_why=
if printf '#include <hiredis/async.h>\n' | $CC -E -x c - >/dev/null 2>&1; then
    bin=$dir/chat_server_redis
    defs=-DCHAT_WITH_REDIS
    libs=-lhiredis
    if [ -z "$redis_server" ] || [ ! -x "$redis_server" ]; then
        redis_why="redis-server is missing (Debian package redis-server)"
    fi
else
    bin=$dir/chat_server
    defs=
    libs=
    redis_why="hiredis is missing (Debian package libhiredis-dev)"
fi
for dep in examples/chat_server.c ws_channel.h examples/*.h; do
    [ "$bin" -nt "$dep" ] && continue
    $CC $warn $san ${CPPFLAGS:-} -D_GNU_SOURCE $defs -I. -Iexamples -o "$bin.$$" examples/chat_server.c $libs &&
        mv -f "$bin.$$" "$bin" || { rm -f "$bin.$$"; echo "run_browser: chat_server build failed"; summary 0 1 0; }
    break
done

# The spec starts, restarts and stops its own servers (by PID) and has its
# own deadline; timeout is the backstop.
res=$dir/output.txt
if [ -z "$redis_why" ]; then
    set -- --redis-server "$redis_server"
else
    set -- --redis-skip "$redis_why"
fi
timeout -k 5 240 node tests/browser/chat.spec.js --server "$bin" --www examples/www \
    --out "$dir" --chromium "$chromium" "$@" > "$res" 2>&1
rc=$?
grep -av '^Pass: ' "$res"
line=$(grep -aE '^Pass: [0-9]+, fail: [0-9]+, skip: [0-9]+' "$res" | tail -n 1)
if [ -n "$line" ]; then
    p=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+), skip: ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+), skip: ([0-9]+).*/\2/')
    k=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+), skip: ([0-9]+).*/\3/')
else
    echo "FAIL browser test: no summary (exit $rc)"
    p=0; f=1; k=0
fi
[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && { echo "FAIL browser test: exit $rc"; f=1; }
[ "$f" -eq 0 ] || echo "screenshots and server logs in $dir"
summary "$p" "$f" "$k"
