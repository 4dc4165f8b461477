#!/bin/sh
# Installs what the tests, the interop peers, the cross runs and the
# benchmarks need, when missing: the Debian packages of tests/packages.txt
# (one list for everything), then the npm packages of tests/interop (ws) and
# tests/browser (playwright-core, which drives the Debian Chromium: no
# browser is ever downloaded). apt-get needs root; without root this only
# reports what is missing. Quick when everything is there (one dpkg-query).
# Never fails: the runners report (and under CI=true fail on) a missing peer
# or toolchain themselves.
here=$(cd "$(dirname "$0")" && pwd)
# package [command] per line, comments stripped
list=$(sed 's/#.*//' "$here/packages.txt" | awk 'NF')
installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $(echo "$list" | awk '{print $1}') 2>/dev/null |
    awk '$1 == "ii" {print $2}')
need_apt=""
while read -r pkg cmd; do
    echo "$installed" | grep -qx "$pkg" && continue
    [ -n "$cmd" ] && command -v "$cmd" >/dev/null 2>&1 && continue
    need_apt="$need_apt $pkg"
done <<LIST
$list
LIST
if [ -n "$need_apt" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "install_peers: apt-get install$need_apt"
        { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need_apt >/dev/null; } ||
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
