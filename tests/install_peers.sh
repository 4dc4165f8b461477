#!/bin/sh
# Installs the independent peers the interop tests run against, when missing:
# Python websockets (Debian package), Node.js ws (npm, into tests/interop),
# Chromium and playwright-core for the browser test. Needs root for apt-get;
# without root it only reports what is missing.
here=$(cd "$(dirname "$0")" && pwd)
need_apt=""
/usr/bin/python3 -c 'import websockets' 2>/dev/null || need_apt="$need_apt python3-websockets"
command -v node >/dev/null 2>&1 || need_apt="$need_apt nodejs npm"
command -v clang >/dev/null 2>&1 || need_apt="$need_apt clang"
if [ -n "$need_apt" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt >/dev/null
    else
        echo "install_peers: not root; missing:$need_apt"
    fi
fi
if [ -f "$here/interop/package.json" ] && [ ! -d "$here/interop/node_modules/ws" ]; then
    (cd "$here/interop" && npm install --no-audit --no-fund --silent) || echo "install_peers: npm install failed"
fi
exit 0
