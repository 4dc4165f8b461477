#!/bin/sh
# Interop with Node.js ws (npm, installed into tests/interop/node_modules by
# tests/install_peers.sh) in both directions: as a client of echo_server and
# as a server for the library's client.
# Usage: tests/interop/run_node.sh BUILD_DIR (from the repo root).
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
command -v node >/dev/null 2>&1 || skip_all "node is missing (tests/install_peers.sh installs it as root)"
[ -d tests/interop/node_modules/ws ] || skip_all "ws is missing (tests/install_peers.sh runs npm install)"
build_programs
start_echo_server node
run_cases node node tests/interop/peer_node.js --echo-url "$echo_url" --peer-client "$out/peer_client"
