#!/bin/sh
# client_cli against a server that floods 2-byte pings and never reads
# (tests/interop/flood_peer.py): after a fixed 8 million pings its RSS must
# have stayed below 64 MiB, and while still flooded it must exit cleanly
# within 10 s of SIGTERM. client_cli is built optimized, without the
# sanitizers, so its RSS is its own.
# Usage: tests/interop/run_client_flood.sh BUILD_DIR (from anywhere).
# Prints one closing line "Pass: N, fail: N, skip: N.".
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
py=/usr/bin/python3

run=$(mktemp -d "$out/run-flood.XXXXXX") || { echo "run_client_flood: mktemp failed"; summary 0 1 0; }
cli=$out/client_cli_flood
$CC $warn -O2 -g ${CPPFLAGS:-} -D_GNU_SOURCE -I. -Iexamples -o "$cli.$$" examples/client_cli.c &&
    mv -f "$cli.$$" "$cli" || { rm -f "$cli.$$"; echo "run_client_flood: build failed"; summary 0 1 0; }

res=$run/flood-output.txt
timeout -k 5 400 $py tests/interop/flood_peer.py --client "$cli" --log "$run/client_cli.log" > "$res" 2>&1
peer_counts flood_peer "$res" $?
p=$pp; f=$ff
[ "$f" -eq 0 ] || { echo "logs kept in $run"; tail -n 5 "$run/client_cli.log"; }
summary "$p" "$f" 0
