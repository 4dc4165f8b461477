#!/bin/sh
# Browser test of the chat demo: examples/chat_server (built with ASan+UBSan)
# and its page, driven in Debian's headless Chromium by playwright-core
# (tests/browser/chat.spec.js; never a downloaded browser). Usage:
# tests/interop/run_browser.sh BUILD_DIR (from the repo root). Screenshots
# and server logs go to BUILD_DIR/browser. Prints one closing line
# "Pass: N, fail: N, skip: N.". Chromium, node or playwright-core missing:
# a skip, or a failure under CI=true (tests/install_peers.sh installs them).
# CHROMIUM=/path overrides /usr/bin/chromium.
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
dir=$build/browser
mkdir -p "$dir" || { echo "run_browser: cannot create $dir"; summary 0 1 0; }
chromium=${CHROMIUM:-/usr/bin/chromium}

[ -x "$chromium" ] || skip_all "no Chromium at $chromium (apt-get install chromium)"
command -v node >/dev/null 2>&1 || skip_all "node is missing (apt-get install nodejs npm)"
[ -f tests/browser/node_modules/playwright-core/package.json ] ||
    skip_all "playwright-core is missing (cd tests/browser && npm ci)"

# Rebuilt when it is older than anything it uses; linked with hiredis once
# chat_server carries the Redis bridge. A private name first, so a
# concurrent run never sees half a file.
bin=$dir/chat_server
libs=
grep -q 'redis_bridge\.h' examples/chat_server.c && libs=-lhiredis
for dep in examples/chat_server.c ws_channel.h examples/*.h; do
    [ "$bin" -nt "$dep" ] && continue
    $CC $warn $san ${CPPFLAGS:-} -D_GNU_SOURCE -I. -Iexamples -o "$bin.$$" examples/chat_server.c $libs &&
        mv -f "$bin.$$" "$bin" || { rm -f "$bin.$$"; echo "run_browser: chat_server build failed"; summary 0 1 0; }
    break
done

# The spec starts, restarts and stops its own servers (by PID) and has its
# own deadline; timeout is the backstop.
res=$dir/output.txt
timeout -k 5 240 node tests/browser/chat.spec.js --server "$bin" --www examples/www \
    --out "$dir" --chromium "$chromium" > "$res" 2>&1
rc=$?
grep -av '^Pass: ' "$res"
line=$(grep -aE '^Pass: [0-9]+, fail: [0-9]+' "$res" | tail -n 1)
if [ -n "$line" ]; then
    p=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\2/')
else
    echo "FAIL browser test: no summary (exit $rc)"
    p=0; f=1
fi
[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && { echo "FAIL browser test: exit $rc"; f=1; }
[ "$f" -eq 0 ] || echo "screenshots and server logs in $dir"
summary "$p" "$f" 0
