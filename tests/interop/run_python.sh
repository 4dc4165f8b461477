#!/bin/sh
# Interop with Python websockets (Debian's python3-websockets) in both
# directions: as a client of echo_server and as a server for the library's
# client. Usage: tests/interop/run_python.sh BUILD_DIR (from the repo root).
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
py=/usr/bin/python3
$py -c 'import websockets' 2>/dev/null ||
    skip_all "python3-websockets is missing (tests/install_peers.sh installs it as root)"
build_programs
start_echo_server python
run_cases python $py tests/interop/peer_python.py --echo-url "$echo_url" --peer-client "$out/peer_client" \
    --autobahn-client "$out/autobahn_client"
