#!/bin/sh
# permessage-deflate (RFC 7692) interop: Python websockets and Node.js ws
# against echo_server --deflate (server role) and client_cli --deflate
# (client role), both built here with ASan+UBSan and zlib
# (examples/deflate_zlib.h). The peers are deflate_peer.py and
# deflate_peer.js; a missing one is skipped (a failure under CI, like the
# other runners). Closing line: "Pass: N, fail: N, skip: N."
# Usage: tests/interop/run_deflate.sh BUILD_DIR (from the repo root).
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
py=/usr/bin/python3
max_message=4M              # the 1009 case sends a message inflating to twice this
max_message_bytes=4194304

printf '\043include <zlib.h>\n' | $CC -E -x c - >/dev/null 2>&1 ||
    skip_all "zlib is missing (Debian: zlib1g-dev; tests/install_peers.sh installs it as root)"
have_py=; have_node=
$py -c 'import websockets' 2>/dev/null && have_py=1
command -v node >/dev/null 2>&1 && [ -d tests/interop/node_modules/ws ] && have_node=1
[ -n "$have_py$have_node" ] ||
    skip_all "neither python3-websockets nor node ws is installed (tests/install_peers.sh)"

# compile_z OUTPUT SOURCE: common.sh's compile, linking zlib.
compile_z() {
    for dep in "$2" ws_channel.h examples/*.h tests/interop/net_util.h; do
        [ "$1" -nt "$dep" ] && continue
        $CC $warn $san ${CPPFLAGS:-} -D_GNU_SOURCE -DEXAMPLE_ZLIB -I. -Iexamples -o "$1.$$" "$2" ${DEFLATE_LIBS:--lz} && mv -f "$1.$$" "$1"
        return
    done
}
compile_z "$out/echo_server_z" examples/echo_server.c & a=$!
compile_z "$out/client_cli_z" examples/client_cli.c || { wait; echo "run_deflate: build failed"; summary 0 1 0; }
wait $a || { echo "run_deflate: build failed"; summary 0 1 0; }

start_echo_server deflate "$out/echo_server_z" --deflate --max-message $max_message

p=0; f=0; s=0
# peer NAME COMMAND...: runs one peer (bounded), shows its cases, adds its counts.
peer() {
    name=$1; shift
    res=$run/$name-output.txt
    timeout -k 5 900 "$@" > "$res" 2>&1
    peer_counts "$name" "$res" $?
    p=$((p + pp)); f=$((f + ff))
}
if [ -n "$have_py" ]; then
    peer python $py tests/interop/deflate_peer.py --echo-url "$echo_url" --client-cli "$out/client_cli_z" \
        --max-message $max_message_bytes
else
    echo "skip python: python3-websockets is missing"; s=$((s + 1))
fi
if [ -n "$have_node" ]; then
    peer node node tests/interop/deflate_peer.js --echo-url "$echo_url" --client-cli "$out/client_cli_z"
else
    echo "skip node: node or ws is missing"; s=$((s + 1))
fi
[ -n "$CI" ] && [ "$s" -gt 0 ] && f=$((f + s))

stop_echo_server
if [ "$server_rc" -eq 0 ]; then
    echo "ok   echo_server --deflate: clean exit under ASan/UBSan"
    p=$((p + 1))
else
    echo "FAIL echo_server --deflate: exit $server_rc (sanitizer report or crash):"
    tail -n 30 "$log"
    f=$((f + 1))
fi
[ "$f" -eq 0 ] || echo "logs kept in $run"
summary "$p" "$f" "$s"
