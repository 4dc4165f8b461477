#!/bin/sh
# Installs the independent peers the interop tests run against, when missing:
# Python websockets (Debian's python3-websockets, for /usr/bin/python3),
# Node.js and npm, Debian's Chromium, zlib's headers (zlib1g-dev, for the
# permessage-deflate codec and its tests), and the npm packages of
# tests/interop (ws) and tests/browser (playwright-core, which drives the
# Debian Chromium: no browser is ever downloaded). apt-get needs root; without root this only
# reports what is missing. Never fails: the interop runners report (and under
# CI=true fail on) a missing peer themselves.
here=$(cd "$(dirname "$0")" && pwd)
need_apt=""
/usr/bin/python3 -c 'import websockets' 2>/dev/null || need_apt="$need_apt python3-websockets"
command -v node >/dev/null 2>&1 || need_apt="$need_apt nodejs"
command -v npm >/dev/null 2>&1 || need_apt="$need_apt npm"
command -v clang >/dev/null 2>&1 || need_apt="$need_apt clang"
[ -x /usr/bin/chromium ] || need_apt="$need_apt chromium"
[ -f /usr/include/zlib.h ] || need_apt="$need_apt zlib1g-dev"
if [ -n "$need_apt" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "install_peers: apt-get install$need_apt"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt >/dev/null; } ||
            echo "install_peers: apt-get failed for:$need_apt"
    else
        echo "install_peers: not root, cannot install:$need_apt"
    fi
fi

# npm packages: (re)installed when missing or when package.json changed since
# the last install. npm ci follows the lock file exactly.
npm_deps() { # directory
    dir=$1
    stamp=$dir/node_modules/.package-lock.json
    [ -f "$dir/package.json" ] || return 0
    [ -f "$stamp" ] && ! [ "$dir/package.json" -nt "$stamp" ] && return 0
    if ! command -v npm >/dev/null 2>&1; then
        echo "install_peers: npm missing; node packages of $dir not installed"
        return 0
    fi
    if [ -f "$dir/package-lock.json" ] && ! [ "$dir/package.json" -nt "$dir/package-lock.json" ]; then
        cmd="ci"
    else
        cmd="install"
    fi
    echo "install_peers: npm $cmd in $dir"
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm $cmd --no-audit --no-fund --loglevel=error >/dev/null) ||
        echo "install_peers: npm $cmd failed in $dir"
}
npm_deps "$here/interop"
npm_deps "$here/browser"
exit 0
