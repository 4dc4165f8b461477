# Shared by the interop runners (sourced, POSIX sh, from the repo root). Each
# runner prints its cases and exactly one closing line
# "Pass: N, fail: N, skip: N.".
#
# The programs under test are built here with AddressSanitizer and UBSan, so
# traffic from real peers also runs through the sanitizers:
#   $out/echo_server       examples/echo_server.c
#   $out/autobahn_client   examples/autobahn_client.c
#   $out/peer_client       tests/interop/peer_client.c
# Two runs may share a build directory: binaries are replaced atomically and
# each run keeps its logs in its own directory ($run, removed when all passed).
# Peers missing: the runner skips, except under CI=true where that fails.
# Other runners may source this too and use $build, $out, $CC, $warn, $san,
# summary and skip_all.

build=${1:-build}
out=$build/interop
mkdir -p "$out" || exit 1
CC=${CC:-cc}
san="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
warn="-std=c99 -pedantic -Wall -Wextra -Wshadow -Wconversion -Wsign-conversion -Wstrict-prototypes \
-Wcast-qual -Wpointer-arith -Wwrite-strings -Wundef -Wvla -Wformat=2 -Werror"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
server_pid=
server_rc=0
run=

# summary PASS FAIL SKIP, then exit (nonzero if anything failed).
summary() {
    echo "Pass: $1, fail: $2, skip: $3."
    if [ "$2" -eq 0 ] && [ -n "$run" ]; then rm -rf "$run"; fi
    [ "$2" -eq 0 ]
    exit $?
}

# Skips the whole runner (a failure under CI, where peers must be installed).
skip_all() {
    echo "$(basename "$0" .sh): $1"
    if [ -n "$CI" ]; then summary 0 1 0; fi
    summary 0 0 1
}

# compile OUTPUT SOURCE: builds unless OUTPUT is newer than everything it
# uses, into a private name first so a concurrent run never sees half a file.
compile() {
    for dep in "$2" ws_channel.h examples/*.h tests/interop/net_util.h; do
        [ "$1" -nt "$dep" ] && continue
        $CC $warn $san ${CPPFLAGS:-} -D_GNU_SOURCE -I. -Iexamples -o "$1.$$" "$2" && mv -f "$1.$$" "$1"
        return
    done
}

build_programs() {
    compile "$out/echo_server" examples/echo_server.c & a=$!
    compile "$out/autobahn_client" examples/autobahn_client.c & b=$!
    compile "$out/peer_client" tests/interop/peer_client.c || { wait; echo "interop: build failed"; summary 0 1 0; }
    wait $a && wait $b || { echo "interop: build failed"; summary 0 1 0; }
}

# Stops the server we started (SIGTERM: it frees everything and exits 0;
# LeakSanitizer reports at exit). Sets server_rc.
stop_echo_server() {
    [ -n "$server_pid" ] || return 0
    kill -TERM "$server_pid" 2>/dev/null
    wait "$server_pid"
    server_rc=$?
    server_pid=
    return 0
}

# start_echo_server NAME [BINARY [ARG...]]: starts the sanitized echo server
# (BINARY, default $out/echo_server, with ARGs) on a free port; sets run,
# log, server_pid, echo_url.
start_echo_server() {
    run=$(mktemp -d "$out/run-$1.XXXXXX") || { echo "interop: mktemp failed"; summary 0 1 0; }
    shift
    [ $# -gt 0 ] || set -- "$out/echo_server"
    log=$run/echo_server.log
    : > "$log"      # exists before the background shell opens it
    "$@" --port 0 > "$log" 2>&1 &
    server_pid=$!
    trap stop_echo_server EXIT
    trap 'exit 1' INT TERM
    i=0
    port=
    while [ $i -lt 100 ]; do        # up to 10 s, sanitizer start-up included
        port=$(sed -n 's|.*listening on ws://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log")
        [ -n "$port" ] && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$port" ]; then
        echo "interop: echo_server did not start"; cat "$log"
        summary 0 1 0
    fi
    echo_url=ws://127.0.0.1:$port/
}

# peer_counts NAME RES RC: shows the case lines a peer script wrote to RES
# and sets pp and ff from its closing "Pass: N, fail: N" line; no such line,
# or a non-zero exit RC with no failure counted, is one failure.
peer_counts() {
    grep -v '^Pass: ' "$2"
    line=$(grep -E '^Pass: [0-9]+, fail: [0-9]+' "$2" | tail -n 1)
    if [ -n "$line" ]; then
        pp=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\1/')
        ff=$(echo "$line" | sed -E 's/^Pass: ([0-9]+), fail: ([0-9]+).*/\2/')
    else
        echo "FAIL $1: no summary (exit $3)"; tail -n 20 "$2"
        pp=0; ff=1
    fi
    [ "$3" -ne 0 ] && [ "$ff" -eq 0 ] && { echo "FAIL $1: exit $3"; ff=1; }
    return 0
}

# run_cases NAME COMMAND...: runs the peer script (bounded by timeout), shows
# its case lines, adds one case for the echo server's clean exit, and prints
# the closing summary.
run_cases() {
    name=$1; shift
    res=$run/$name-output.txt
    timeout -k 5 600 "$@" > "$res" 2>&1
    peer_counts "$name" "$res" $?
    p=$pp; f=$ff
    stop_echo_server
    if [ "$server_rc" -eq 0 ]; then
        echo "ok   echo_server: clean exit under ASan/UBSan"
        p=$((p + 1))
    else
        echo "FAIL echo_server: exit $server_rc (sanitizer report or crash):"
        tail -n 30 "$log"
        f=$((f + 1))
    fi
    [ "$f" -eq 0 ] || echo "logs kept in $run"
    summary "$p" "$f" 0
}
