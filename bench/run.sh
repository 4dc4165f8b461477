#!/usr/bin/env bash
# bench/run.sh - the one benchmark command: builds, runs everything side by
# side in one go, prints one summary table and writes bench/RESULTS.md
# (date, machine, every command, the detailed tables) and, beside it, the
# echo and fan-out comparisons as charts, echo.svg and fanout.svg
# (bench/charts.py; left out with a note without python3-matplotlib).
#
#   bench/run.sh                 full run (about 15-20 minutes)
#   BENCH_QUICK=1 bench/run.sh   smoke run: fewer/shorter repetitions, 1,000
#                                connections instead of 10,000 (about 4 minutes)
# Other knobs: BENCH_REPS (default 5, quick 3), BENCH_PORT (first port, 19100),
# BENCH_FANOUT_ROWS (the fan-out matrix, subscribers x publishes in flight:
# default "100x1 1000x1 10000x1 1000x8", quick "100x1 1000x1 1000x8"),
# BENCH_SUBS / BENCH_IDLE (connections for the fan-out variants below /
# idle memory), BENCH_GATHER_ROWS (rows of fanout-gather: chat_server with
# each peer's turn written at once, its default, vs --no-gather; default
# "1000x1 1000x8"),
# BENCH_SKIP="inmem neon deflate publish deflate-hub presence echo echo-deflate
# echo-tls handshake fanout fanout-gather fanout-deflate fanout-history fanout-presence
# fanout-redis idle" (skip sections; neon is a correctness run of the NEON paths under
# qemu, never timed), BENCH_OUT (results file, default bench/RESULTS.md).
# permessage-deflate (RFC 7692), each section skipped with a note without
# zlib (zlib1g-dev) or, for the Node column, without node and ws:
#   deflate-hub     bench/deflate_hub.c: bytes per chat message and library heap
#                   per idle hub peer, compressed and not (BENCH_HEAP_PEERS, 1000)
#   echo-deflate    1 KiB JSON echo, echo_server --deflate vs Node ws with
#                   perMessageDeflate, loadgen --deflate (and both plain)
#   fanout-deflate  chat_server fan-out, subscribers offering the extension vs
#                   not, side by side at 1,000 and BENCH_SUBS subscribers
#                   (BENCH_DEFLATE_SUBS="N ..." to choose; quick: BENCH_SUBS)
# and the idle section adds chat_server with every client compressed.
# TLS (wss://), skipped with a note without OpenSSL (libssl-dev) or the
# openssl command:
#   echo-tls        echo_server plain and echo_server --tls-cert (a throwaway
#                   certificate made here), the same loadgen echo load with
#                   and without --tls, interleaved: the TLS overhead, wss/ws
# History (no message lost): fanout-history runs chat_server with its
# default history (200 messages per channel kept) and with --history 0
# (messages numbered, none kept), side by side at 1,000 and BENCH_SUBS
# subscribers; the publish section gives CPU per publish plain, numbered,
# with history and with history and presence (and presence on vs off
# alone, interleaved), and the heap per retained message. fanout-redis runs
# chat_server joined to a redis-server (started here) with --history 0
# (plain pub/sub: delivered at once) and with its default history (Redis
# numbers and keeps every channel message: delivered on Redis's echo), at
# BENCH_REDIS_SUBS subscribers (1000); skipped with a note without
# redis-server or a chat_server built with hiredis.
# Presence (who is in each channel, chat_server's default):
#   presence         bench/presence.c, in memory: 10,000 users (one
#                    connection each; BENCH_PRESENCE_USERS) joining one
#                    channel, 1 to 10,000 joins per loop turn, each turn
#                    ended by wsch_hub_flush() on a fake clock moving 1 ms:
#                    bytes sent to all peers, presence messages, wall and
#                    CPU time, presence on and off; heap per member
#   fanout-presence  chat_server fan-out with presence tracked and every
#                    subscriber asking for it (loadgen --presence) vs
#                    chat_server --no-presence, side by side at the sizes
#                    of fanout-history (BENCH_PRESENCE_SUBS="N ..." to
#                    choose); all subscribers are one user (token "bench"),
#                    so this is presence's cost on the delivery path, not
#                    its traffic's (that is the presence section's)
#
# The fan-out matrix: each row, M subscribers and one publisher keeping W
# publishes of 64-byte data in flight, against every hub: chat_server,
# posix_hub, libwebsockets (peers/lws_hub.c), wslay (peers/wslay_hub.c),
# Node ws and Python websockets (on uvloop when python3-uvloop is there),
# with deliveries/s, publish-to-last-subscriber p99 and server CPU per
# delivery, the ratios ours/peer and the goals met or not.
#
# Servers run pinned to core 0 (taskset -c 0), the load (loadgen, inmem) to
# core 1. Every figure is the median of the repetitions; '~' marks one whose
# repetitions spread by more than 10% of the median. Only 127.0.0.0/8 is
# used, every loop is bounded, and every process started here is stopped
# here, by PID.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    REPS=${BENCH_REPS:-3}; DUR=0.3; SUBS=${BENCH_SUBS:-1000}; IDLE=${BENCH_IDLE:-1000}; SAMPLE_MS=25
else
    REPS=${BENCH_REPS:-5}; DUR=1; SUBS=${BENCH_SUBS:-10000}; IDLE=${BENCH_IDLE:-10000}; SAMPLE_MS=100
fi
PORT=${BENCH_PORT:-19100}
SKIP=" ${BENCH_SKIP:-} "
OUTFILE=${BENCH_OUT:-bench/RESULTS.md}
B=build/bench
TMP=$(mktemp -d /tmp/wsch-bench.XXXXXX)
PY=/usr/bin/python3
SERVER_CPU=0
LOAD_CPU=1
PIDS=""

log() { printf '%s\n' "$*" >&2; }
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    sleep 0.2
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
skip() { case "$SKIP" in *" $1 "*) return 0 ;; esac; return 1; }
record() { printf '%s\n' "$*" >>"$TMP/cmds"; }

# ---------------------------------------------------------------- setup
# The fan-out matrix, "MxW ...": M subscribers, W publishes in flight.
if [ -n "${BENCH_FANOUT_ROWS:-}" ]; then
    FAN_ROWS=$BENCH_FANOUT_ROWS
elif [ "$QUICK" = 1 ]; then
    FAN_ROWS="100x1 1000x1 1000x8"
else
    FAN_ROWS="100x1 1000x1 10000x1 1000x8"
fi
FAN_MAX=0
for row in $FAN_ROWS; do
    case "$row" in [0-9]*x[0-9]*) ;; *) log "run.sh: BENCH_FANOUT_ROWS: '$row' is not MxW"; exit 2 ;; esac
    [ "${row%x*}" -gt "$FAN_MAX" ] && FAN_MAX=${row%x*}
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null
if [ "$(ulimit -n)" -lt $((IDLE + 100)) ] || [ "$(ulimit -n)" -lt $((SUBS + 100)) ] ||
   [ "$(ulimit -n)" -lt $((FAN_MAX + 100)) ]; then
    log "run.sh: ulimit -n is $(ulimit -n); 10,000-connection figures may fail"
fi
# The peer libraries, Node.js, Python websockets and qemu-user come from the
# project's one package list (tests/packages.txt), installed when missing.
tests/install_peers.sh >&2
if command -v npm >/dev/null 2>&1 && [ ! -d bench/peers/node_modules/ws ]; then
    log "run.sh: npm ci in bench/peers"
    (cd bench/peers && { npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1 ||
        npm install --no-audit --no-fund --loglevel=error >/dev/null; }) || log "run.sh: npm failed"
fi

log "run.sh: building"
make -s build/echo_server build/chat_server build/posix_echo build/posix_hub >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log" >&2; exit 1; }
make -s -C bench all >>"$TMP/build.log" 2>&1 || { cat "$TMP/build.log" >&2; exit 1; }
record "make build/echo_server build/chat_server build/posix_echo build/posix_hub && make -C bench all   # CFLAGS=${CFLAGS:--O2 -g}"
# permessage-deflate over loopback needs loadgen built with zlib (and the
# servers with it: the top Makefile links zlib wherever loadgen gets it).
ZLOAD=0
$B/loadgen --has-zlib 2>/dev/null && ZLOAD=1
NO_ZLIB_NOTE="skipped: zlib is not installed (Debian: zlib1g-dev), so loadgen has no --deflate and the examples do not compress"
HAVE_NODE_WS=0
command -v node >/dev/null 2>&1 && [ -d bench/peers/node_modules/ws ] && HAVE_NODE_WS=1
# The Python peer runs on uvloop when it can (py_server.py decides the same way).
if $PY -c 'import uvloop' 2>/dev/null; then
    PY_LABEL="Python websockets 10 (uvloop)"
else
    PY_LABEL="Python websockets 10 (asyncio: python3-uvloop missing)"
fi

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
T0=$(date +%s)

# ------------------------------------------------------------- helpers
# wait_port PORT: until something listens there (10 s at most).
wait_port() {
    local i
    for i in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# start NAME CMD...: starts a server pinned to the server core on $PORT
# (the command uses @PORT@), sets SPID; returns 1 if it does not listen.
start() {
    local name=$1; shift
    local args=() a
    PORT=$((PORT + 1))
    for a in "$@"; do args+=("${a//@PORT@/$PORT}"); done
    taskset -c $SERVER_CPU "${args[@]}" >"$TMP/$name.$PORT.log" 2>&1 &
    SPID=$!
    disown "$SPID" 2>/dev/null   # no "Killed" notices when stop() has to insist
    PIDS="$PIDS $SPID"
    if ! wait_port "$PORT" || ! kill -0 "$SPID" 2>/dev/null; then
        log "run.sh: $name did not start: $(head -c 300 "$TMP/$name.$PORT.log")"
        return 1
    fi
    record "taskset -c $SERVER_CPU ${args[*]}"
    return 0
}

stop() {
    kill "$1" 2>/dev/null
    local i
    for i in $(seq 1 30); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null
}

# load ARGS...: runs loadgen on the load core; prints its RESULT line (or nothing).
load() {
    record "taskset -c $LOAD_CPU $B/loadgen $*"
    taskset -c $LOAD_CPU $B/loadgen "$@" 2>>"$TMP/loadgen.err" | grep '^RESULT' | tail -1
}

# kv LINE KEY: the value of KEY=... in a RESULT line.
kv() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }

# fmt_rate VALUE SPREAD: 123456 -> "123k", with ~ when noisy.
fmt_rate() {
    [ -z "$1" ] && { printf 'n/a'; return; }
    awk -v v="$1" -v s="${2:-0}" 'BEGIN {
        if (v >= 1e6) o = sprintf("%.2fM", v / 1e6); else if (v >= 1e4) o = sprintf("%.0fk", v / 1e3);
        else if (v >= 1e3) o = sprintf("%.1fk", v / 1e3); else o = sprintf("%.0f", v);
        if (s > 0.10) o = o "~"; printf "%s", o }'
}
ratio() { # ratio A B -> "1.23x" (A/B), n/a when either is missing
    [ -z "$1" ] || [ -z "$2" ] && { printf 'n/a'; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "n/a" }'
}
target() { # target NAME GOAL MEASURED MET
    printf '%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" >>"$TMP/targets"
}

: >"$TMP/targets"

# -------------------------------------------------------------- in memory
if ! skip inmem; then
    log "run.sh: in-memory suite"
    record "BENCH_REPS=$REPS BENCH_SAMPLE_MS=$SAMPLE_MS taskset -c $LOAD_CPU $B/inmem --targets FILE"
    BENCH_REPS=$REPS BENCH_SAMPLE_MS=$SAMPLE_MS taskset -c $LOAD_CPU $B/inmem --targets "$TMP/targets" \
        >"$TMP/inmem.md" 2>"$TMP/inmem.err" || log "run.sh: inmem reported a failure: $(cat "$TMP/inmem.err")"
fi
# The zlib deflate codec alone, in memory (bench/deflate.c; built when zlib is installed).
[ -x $B/deflate ] && ! skip deflate && { record "BENCH_REPS=$REPS taskset -c $LOAD_CPU $B/deflate"; BENCH_REPS=$REPS taskset -c $LOAD_CPU $B/deflate >>"$TMP/inmem.md" 2>>"$TMP/inmem.err" || log "run.sh: deflate reported a failure"; }

# ------------------------------------------ NEON, for correctness only
# The NEON paths run under qemu-aarch64 here: test_simd checks that they give
# the scalar paths' results on its corpus, every split included. Timings
# under qemu mean nothing, so none are taken.
if ! skip neon; then
    log "run.sh: NEON paths under qemu-aarch64 (correctness only)"
    record "sh tests/cross_check.sh build aarch64 test_simd   # NEON = scalar under qemu; no timing"
    sh tests/cross_check.sh build aarch64 test_simd >"$TMP/neon.txt" 2>&1
    NEON_LINE=$(grep -E '^Pass: [0-9]+, fail: [0-9]+' "$TMP/neon.txt" | tail -n 1 | sed 's/\.$//')
    if grep -q '^SKIP' "$TMP/neon.txt"; then
        NEON_LINE="not run: $(grep '^SKIP' "$TMP/neon.txt" | head -n 1)"
    elif grep -q 'NEON = scalar: [0-9]* passed, 0 failed' "$TMP/neon.txt" && echo "$NEON_LINE" | grep -q 'fail: 0,'; then
        NEON_LINE="NEON = scalar under qemu-aarch64 (test_simd: $NEON_LINE); correctness only, qemu timings mean nothing"
    else
        NEON_LINE="FAILED under qemu-aarch64: $(grep -E 'FAIL|failed' "$TMP/neon.txt" | grep -v ' 0 failed' | head -n 3 | tr '\n' ' ')"
    fi
    log "run.sh: $NEON_LINE"
fi

# ------------------------------------------------- the chat publish path
if ! skip publish; then
    log "run.sh: chat publish path"
    record "taskset -c $LOAD_CPU $B/publish"
    taskset -c $LOAD_CPU $B/publish >"$TMP/publish.txt" 2>&1 ||
        log "run.sh: publish reported a failure: $(cat "$TMP/publish.txt")"
    q=$(sed -n 's/.*publishes per CPU second on\/off \([0-9.]*\)x.*/\1/p' "$TMP/publish.txt")
    [ -n "$q" ] && target "chat publish path in memory, presence on vs off (publishes per CPU second)" "(reported)" "$q" "-"
fi

# ------------------------------- permessage-deflate in the hub, in memory
if ! skip deflate-hub; then
    if [ -x $B/deflate_hub ]; then
        log "run.sh: permessage-deflate in the hub (bytes per message, heap per idle peer)"
        record "BENCH_HEAP_PEERS=${BENCH_HEAP_PEERS:-1000} taskset -c $LOAD_CPU $B/deflate_hub --targets FILE"
        BENCH_HEAP_PEERS=${BENCH_HEAP_PEERS:-1000} taskset -c $LOAD_CPU $B/deflate_hub --targets "$TMP/targets" \
            >"$TMP/deflate_hub.md" 2>"$TMP/deflate_hub.err" ||
            log "run.sh: deflate_hub reported a failure: $(cat "$TMP/deflate_hub.err")"
    else
        printf '### Bytes per chat message and heap per idle hub peer\n\nSkipped: bench/deflate_hub.c needs zlib (Debian: zlib1g-dev).\n\n' \
            >"$TMP/deflate_hub.md"
    fi
fi

# ------------------------------------------------ presence, in memory
if ! skip presence; then
    log "run.sh: presence in the hub (10,000 users joining one channel, heap per member)"
    record "BENCH_REPS=$REPS BENCH_PRESENCE_USERS=${BENCH_PRESENCE_USERS:-10000} taskset -c $LOAD_CPU $B/presence --targets FILE"
    BENCH_REPS=$REPS BENCH_PRESENCE_USERS=${BENCH_PRESENCE_USERS:-10000} taskset -c $LOAD_CPU $B/presence \
        --targets "$TMP/targets" >"$TMP/presence.md" 2>"$TMP/presence.err" ||
        log "run.sh: presence reported a failure: $(grep FAIL "$TMP/presence.err")"
fi

# ----------------------------------------------------------- echo servers
ECHO_NAMES="ours posix wslay lws node python"
declare -A ECHO_CMD=(
    [ours]="build/echo_server --port @PORT@"
    [posix]="build/posix_echo @PORT@"
    [wslay]="$B/wslay_echo @PORT@"
    [lws]="$B/lws_echo @PORT@"
    [node]="node bench/peers/node_server.js echo @PORT@"
    [python]="$PY bench/peers/py_server.py echo @PORT@"
)
declare -A ECHO_LABEL=([ours]="ours (echo_server)" [posix]="ours (posix_echo, the header's loop)" [wslay]="wslay 1.1 (epoll)" [lws]="libwebsockets 4.1"
    [node]="Node ws 8" [python]="$PY_LABEL")
declare -A EPORT
declare -A R   # results: R[section/config/server]=RESULT line

start_echo_servers() {
    local n
    for n in $ECHO_NAMES; do
        # shellcheck disable=SC2086
        if start "$n" ${ECHO_CMD[$n]}; then EPORT[$n]=$PORT; EPID[$n]=$SPID; else EPORT[$n]=""; fi
    done
}
declare -A EPID

ECHO_CONFIGS=("1 16 16" "64 16 16" "1 16 1024" "64 16 1024" "4 4 65536")
if ! skip echo || ! skip handshake; then
    log "run.sh: starting echo servers"
    start_echo_servers
fi
# Repetitions are interleaved across servers (A B C D E, A B C D E, ...) so
# a burst of other work on the machine hits them all alike; each loadgen run
# is one repetition, and the medians are taken here.
if ! skip echo; then
    for cfg in "${ECHO_CONFIGS[@]}"; do
        set -- $cfg
        log "run.sh: echo $1 conns x $2 in flight x $3 B"
        for r in $(seq 1 "$REPS"); do
            for n in $ECHO_NAMES; do
                [ -n "${EPORT[$n]}" ] || continue
                R["echo/$cfg/$n"]+="$(load --mode echo --port "${EPORT[$n]}" --pid "${EPID[$n]}" --conns "$1" \
                    --inflight "$2" --size "$3" --duration "$DUR" --reps 1 --label "$n")"$'\n'
            done
        done
    done
fi
if ! skip handshake; then
    log "run.sh: handshakes"
    for r in $(seq 1 "$REPS"); do
        for n in $ECHO_NAMES; do
            [ -n "${EPORT[$n]}" ] || continue
            R["hs/$n"]+="$(load --mode handshake --port "${EPORT[$n]}" --pid "${EPID[$n]}" --conns 16 \
                --duration "$DUR" --reps 1 --label "$n")"$'\n'
        done
    done
fi
for n in $ECHO_NAMES; do [ -n "${EPID[$n]:-}" ] && stop "${EPID[$n]}"; done

# ------------------------------------------- echo with permessage-deflate
# One echo_server --deflate and one Node ws server with perMessageDeflate;
# against each, the load generator offering the extension (compressed) and
# not (plain), repetitions interleaved as above. The payload is a 1 KiB
# chat envelope (loadgen --json), sent compressed by the client too.
ZECHO_NAMES="ours node"
declare -A ZECHO_CMD=(
    [ours]="build/echo_server --port @PORT@ --deflate"
    [node]="node bench/peers/node_server.js echo @PORT@ deflate"
)
declare -A ZECHO_LABEL=([ours]="ours (echo_server --deflate)" [node]="Node ws 8 (perMessageDeflate)")
declare -A ZEPORT ZEPID
ZECHO_CONFIGS=("1 16 1024" "64 16 1024")
ZECHO_NOTE=""
if ! skip echo-deflate; then
    if [ "$ZLOAD" != 1 ]; then
        ZECHO_NOTE=$NO_ZLIB_NOTE
    else
        [ "$HAVE_NODE_WS" = 1 ] || ZECHO_NOTE="the Node ws column is skipped: node or bench/peers/node_modules/ws is missing (npm ci in bench/peers)"
        log "run.sh: starting echo servers with permessage-deflate"
        for n in $ZECHO_NAMES; do
            ZEPORT[$n]=""
            [ "$n" = node ] && [ "$HAVE_NODE_WS" != 1 ] && continue
            # shellcheck disable=SC2086
            if start "zecho-$n" ${ZECHO_CMD[$n]}; then ZEPORT[$n]=$PORT; ZEPID[$n]=$SPID; fi
        done
        for cfg in "${ZECHO_CONFIGS[@]}"; do
            set -- $cfg
            log "run.sh: echo with permessage-deflate, $1 conns x $2 in flight x $3 B JSON"
            for r in $(seq 1 "$REPS"); do
                for n in $ZECHO_NAMES; do
                    [ -n "${ZEPORT[$n]:-}" ] || continue
                    for z in on off; do
                        zarg=(); [ "$z" = on ] && zarg=(--deflate)
                        R["zecho/$cfg/$n/$z"]+="$(load --mode echo --port "${ZEPORT[$n]}" --pid "${ZEPID[$n]}" --conns "$1" \
                            --inflight "$2" --size "$3" --json "${zarg[@]}" --duration "$DUR" --reps 1 --label "$n-$z")"$'\n'
                    done
                done
            done
        done
        for n in $ZECHO_NAMES; do [ -n "${ZEPID[$n]:-}" ] && stop "${ZEPID[$n]}"; done
    fi
fi

# ------------------------------------------------------------ echo over TLS
# One echo_server serving ws:// and one the same binary serving wss://
# (examples/tls_openssl.h, OpenSSL's defaults), both pinned to the server
# core in turn; loadgen is the load for both (--tls for wss, certificate not
# verified), repetitions interleaved. The figure is wss/ws.
TECHO_CONFIGS=("1 16 16" "64 16 16" "64 16 1024" "4 4 65536")
TECHO_NOTE=""
declare -A TEPORT TEPID
if ! skip echo-tls; then
    if ! $B/loadgen --has-tls 2>/dev/null; then
        TECHO_NOTE="loadgen was built without --tls: OpenSSL is not installed (Debian: libssl-dev)"
    elif ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
            -addext subjectAltName=IP:127.0.0.1 -keyout "$TMP/tls.key" -out "$TMP/tls.pem" >/dev/null 2>&1; then
        TECHO_NOTE="no certificate: the openssl command is missing (Debian: openssl)"
    elif start "tlsecho-ws" build/echo_server --port @PORT@ && TEPORT[ws]=$PORT && TEPID[ws]=$SPID &&
         start "tlsecho-wss" build/echo_server --port @PORT@ --tls-cert "$TMP/tls.pem" --tls-key "$TMP/tls.key"; then
        TEPORT[wss]=$PORT; TEPID[wss]=$SPID
        TLS_SUITE=$(openssl s_client -connect "127.0.0.1:$PORT" -brief </dev/null 2>&1 |
            sed -n 's/^\(Protocol version\|Ciphersuite\): *//p' | tr '\n' ' ' | sed 's/ *$//')
        for cfg in "${TECHO_CONFIGS[@]}"; do
            set -- $cfg
            log "run.sh: echo ws vs wss, $1 conns x $2 in flight x $3 B"
            for r in $(seq 1 "$REPS"); do
                for t in ws wss; do
                    targ=(); [ "$t" = wss ] && targ=(--tls)
                    R["techo/$cfg/$t"]+="$(load --mode echo --port "${TEPORT[$t]}" --pid "${TEPID[$t]}" --conns "$1" \
                        --inflight "$2" --size "$3" "${targ[@]}" --duration "$DUR" --reps 1 --label "$t")"$'\n'
                done
            done
        done
    else
        TECHO_NOTE="echo_server would not serve wss:// (built without OpenSSL?): $(head -c 200 "$TMP"/tlsecho-wss.*.log 2>/dev/null)"
    fi
    for t in ws wss; do [ -n "${TEPID[$t]:-}" ] && stop "${TEPID[$t]}"; done
fi

# ----------------------------------------------------------------- fan-out
HUB_NAMES="ours posix lws wslay node python"
declare -A HUB_CMD=(
    [ours]="build/chat_server --port @PORT@"
    [posix]="build/posix_hub @PORT@ bench=bench"
    [lws]="$B/lws_hub @PORT@"
    [wslay]="$B/wslay_hub @PORT@"
    [node]="node bench/peers/node_server.js hub @PORT@"
    [python]="$PY bench/peers/py_server.py hub @PORT@"
)
declare -A HUB_LABEL=([ours]="ours (chat_server)" [posix]="ours (posix_hub: the header's loop; history 100, no presence)"
    [lws]="libwebsockets 4.1" [wslay]="wslay 1.1 (epoll)" [node]="Node ws 8" [python]="$PY_LABEL")
# The peers the ratios ours/peer are given for, in table order.
FAN_PEERS="lws wslay python node"
# Two rounds, each over the rows, each row over the hubs in turn (A B C,
# A B C), every run on a fresh server with its own connections: a busy
# minute on the machine then does not land on one hub only. The figure is
# the median over both rounds' runs.
FAN_ROUNDS=2
FAN_REPS=$(( (REPS + 1) / 2 ))
[ "$QUICK" = 1 ] && { FAN_ROUNDS=1; FAN_REPS=$REPS; }
FAN_NOTE=""
if ! skip fanout; then
    [ "$HAVE_NODE_WS" = 1 ] || FAN_NOTE="the Node ws column is empty: node or bench/peers/node_modules/ws is missing (npm ci in bench/peers)"
    for round in $(seq 1 $FAN_ROUNDS); do
        for row in $FAN_ROWS; do
            m=${row%x*}; w=${row#*x}
            for n in $HUB_NAMES; do
                [ "$n" = node ] && [ "$HAVE_NODE_WS" != 1 ] && continue
                log "run.sh: fan-out to $m subscribers, $w in flight: $n (round $round)"
                # shellcheck disable=SC2086
                start "hub-$n" ${HUB_CMD[$n]} || continue
                R["fan/$row/$n"]+="$(load --mode fanout --port "$PORT" --pid "$SPID" --path "/ws?token=bench" --subs "$m" \
                    --size 64 --window "$w" --duration "$DUR" --reps "$FAN_REPS" --label "$n-$row")"$'\n'
                stop "$SPID"
            done
        done
    done
fi

# ------------------------------------------- fan-out gathered per turn or not
# chat_server as it runs (a subscriber's share of a loop turn leaves in one
# write, desc.gather through the POSIX loop) and with --no-gather (every
# message written to every subscriber as it is sent): the cost or gain of
# gathering, each on a fresh server, in turn, FAN_ROUNDS rounds.
GATHER_ROWS=${BENCH_GATHER_ROWS:-"1000x1 1000x8"}
if ! skip fanout-gather; then
    for round in $(seq 1 $FAN_ROUNDS); do
        for row in $GATHER_ROWS; do
            m=${row%x*}; w=${row#*x}
            for g in off on; do
                log "run.sh: fan-out to $m subscribers, $w in flight, gathering $g (round $round)"
                garg=(); [ "$g" = off ] && garg=(--no-gather)
                start "ghub-$g" build/chat_server --port @PORT@ "${garg[@]}" || continue
                R["gfan/$row/$g"]+="$(load --mode fanout --port "$PORT" --pid "$SPID" --path "/ws?token=bench" --subs "$m" \
                    --size 64 --window "$w" --duration "$DUR" --reps "$FAN_REPS" --label "gfan-$row-$g")"$'\n'
                stop "$SPID"
            done
        done
    done
fi

# ------------------------------------------ fan-out with permessage-deflate
# chat_server (which accepts the extension by default) fed by the same
# load twice: subscribers and publisher offering permessage-deflate, and
# not; each run on a fresh server, plain and compressed in turn, at each
# size in turn, FAN_ROUNDS rounds. The hub compresses each broadcast once.
if [ -n "${BENCH_DEFLATE_SUBS:-}" ]; then
    ZSUBS=$BENCH_DEFLATE_SUBS
elif [ "$QUICK" = 1 ] || [ "$SUBS" -le 1000 ]; then
    ZSUBS=$SUBS
else
    ZSUBS="1000 $SUBS"
fi
ZFAN_NOTE=""
if ! skip fanout-deflate; then
    if [ "$ZLOAD" != 1 ]; then
        ZFAN_NOTE=$NO_ZLIB_NOTE
    else
        for round in $(seq 1 $FAN_ROUNDS); do
            for m in $ZSUBS; do
                for z in off on; do
                    log "run.sh: fan-out to $m subscribers, permessage-deflate $z (round $round)"
                    start "zhub-$z" build/chat_server --port @PORT@ || continue
                    zarg=(); [ "$z" = on ] && zarg=(--deflate)
                    R["zfan/$m/$z"]+="$(load --mode fanout --port "$PORT" --pid "$SPID" --path "/ws?token=bench" --subs "$m" \
                        --size 64 --window 4 "${zarg[@]}" --duration "$DUR" --reps "$FAN_REPS" --label "zfan-$m-$z")"$'\n'
                    stop "$SPID"
                done
            done
        done
    fi
fi

# ------------------------------------------------------ fan-out with history
# chat_server keeps history by default: the fan-out above includes its cost.
# Here the same load against history off (--history 0) and on (default),
# each on a fresh server, in turn, FAN_ROUNDS rounds.
HSUBS=$ZSUBS
if ! skip fanout-history; then
    for round in $(seq 1 $FAN_ROUNDS); do
        for m in $HSUBS; do
            for h in off on; do
                log "run.sh: fan-out to $m subscribers, history $h (round $round)"
                harg=(); [ "$h" = off ] && harg=(--history 0)
                start "hhub-$h" build/chat_server --port @PORT@ "${harg[@]}" || continue
                R["hfan/$m/$h"]+="$(load --mode fanout --port "$PORT" --pid "$SPID" --path "/ws?token=bench" --subs "$m" \
                    --size 64 --window 4 --duration "$DUR" --reps "$FAN_REPS" --label "hfan-$m-$h")"$'\n'
                stop "$SPID"
            done
        done
    done
fi

# ----------------------------------------------------- fan-out with presence
# chat_server tracks presence by default: "on" is that, with every
# subscriber (and the publisher) subscribing with "presence":true; "off" is
# chat_server --no-presence with plain subscribes. Each on a fresh server,
# in turn, FAN_ROUNDS rounds. loadgen counts presence messages apart from
# deliveries and measures only once the joins have settled.
PSUBS=${BENCH_PRESENCE_SUBS:-$ZSUBS}
if ! skip fanout-presence; then
    for round in $(seq 1 $FAN_ROUNDS); do
        for m in $PSUBS; do
            for p in off on; do
                log "run.sh: fan-out to $m subscribers, presence $p (round $round)"
                parg=(); larg=()
                if [ "$p" = off ]; then parg=(--no-presence); else larg=(--presence); fi
                start "phub-$p" build/chat_server --port @PORT@ "${parg[@]}" || continue
                R["pfan/$m/$p"]+="$(load --mode fanout --port "$PORT" --pid "$SPID" --path "/ws?token=bench" --subs "$m" \
                    --size 64 --window 4 "${larg[@]}" --duration "$DUR" --reps "$FAN_REPS" --label "pfan-$m-$p")"$'\n'
                stop "$SPID"
            done
        done
    done
fi

# ------------------------------------------------------ fan-out over Redis
# One chat_server joined to one Redis (on the server's core: it is part of
# the serving side), history off and on in turn, Redis emptied between.
RSUBS=${BENCH_REDIS_SUBS:-1000}
REDIS_NOTE=
if ! skip fanout-redis; then
    if ! command -v redis-server >/dev/null 2>&1; then
        REDIS_NOTE="redis-server is not installed (Debian package redis-server)"
    elif ! ldd build/chat_server 2>/dev/null | grep -q hiredis; then
        REDIS_NOTE="build/chat_server was built without hiredis (Debian package libhiredis-dev)"
    elif start "redis" redis-server --port @PORT@ --bind 127.0.0.1 --save "" --appendonly no; then
        RPORT=$PORT; RPID=$SPID
        for round in $(seq 1 $FAN_ROUNDS); do
            for m in $RSUBS; do
                for h in off on; do
                    log "run.sh: fan-out to $m subscribers over Redis, history $h (round $round)"
                    redis-cli -p "$RPORT" flushall >/dev/null 2>&1
                    harg=(); [ "$h" = off ] && harg=(--history 0)
                    start "rhub-$h" build/chat_server --port @PORT@ --redis "127.0.0.1:$RPORT" "${harg[@]}" || continue
                    sleep 0.3       # the Redis links come up
                    R["rfan/$m/$h"]+="$(load --mode fanout --port "$PORT" --pid "$SPID" --path "/ws?token=bench" \
                        --subs "$m" --size 64 --window 4 --duration "$DUR" --reps "$FAN_REPS" --label "rfan-$m-$h")"$'\n'
                    stop "$SPID"
                done
            done
        done
        stop "$RPID"
    else
        REDIS_NOTE="redis-server did not start"
    fi
fi

# ------------------------------------------------------------ idle memory
# ours-hub-z: the same hub with every client having agreed permessage-deflate.
IDLE_NAMES="ours-hub $ECHO_NAMES"
[ "$ZLOAD" = 1 ] && IDLE_NAMES="ours-hub ours-hub-z $ECHO_NAMES"
if ! skip idle; then
    for n in $IDLE_NAMES; do
        log "run.sh: RSS of $IDLE idle connections: $n"
        extra=()
        if [ "$n" = ours-hub ] || [ "$n" = ours-hub-z ]; then
            start "idle-$n" build/chat_server --port @PORT@ || continue
            extra=(--path "/ws?token=bench" --stats-path /api/stats)
            [ "$n" = ours-hub-z ] && extra+=(--deflate)
        else
            # shellcheck disable=SC2086
            start "idle-$n" ${ECHO_CMD[$n]} || continue
        fi
        sleep 0.3
        R["idle/$n"]=$(load --mode idle --port "$PORT" --conns "$IDLE" --pid "$SPID" "${extra[@]}" --label "$n")
        stop "$SPID"
    done
fi
HUB_HEAP=$(kv "${R[idle/ours-hub]:-}" heap_per_conn_b)
HUB_HEAP_Z=$(kv "${R[idle/ours-hub-z]:-}" heap_per_conn_b)
END=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(( $(date +%s) - T0 ))

# ---------------------------------------------------------------- report
# med LINES KEY: median of KEY over the RESULT lines (one per repetition).
med() {
    printf '%s\n' "$1" | grep '^RESULT' | tr ' ' '\n' | sed -n "s/^$2=//p" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR) printf "%s", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# spr LINES KEY: (max - min) / median over the lines; a single line's own spread.
spr() {
    local n
    n=$(printf '%s\n' "$1" | grep -c '^RESULT')
    if [ "$n" -le 1 ]; then kv "$1" spread; return; fi
    printf '%s\n' "$1" | grep '^RESULT' | tr ' ' '\n' | sed -n "s/^$2=//p" | sort -g |
        awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
              if (m > 0) printf "%.3f", (v[NR] - v[1]) / m }'
}
cell() { fmt_rate "$(med "$1" "$2")" "$(spr "$1" "$2")"; }
us() { [ -n "$1" ] && awk -v v="$1" 'BEGIN { printf "%.2f", v }' || printf 'n/a'; }
ms() { [ -n "$1" ] && awk -v v="$1" 'BEGIN { printf "%.1f", v / 1000 }' || printf 'n/a'; }
# b1 BYTES -> "123.4" (or n/a)
b1() { [ -n "$1" ] && awk -v v="$1" 'BEGIN { printf "%.1f", v }' || printf 'n/a'; }
# rowname MxW -> "1,000 x 8", a fan-out row as the tables and charts name it.
rowname() { awk -v m="${1%x*}" -v w="${1#*x}" 'BEGIN { s = ""; while (m >= 1000) { s = sprintf(",%03d", m % 1000) s; m = int(m / 1000) }
    printf "%d%s x %s", m, s, w }'; }
# best_peer_p99 MxW -> "NAME P99_US", the peer with the lowest median p99 in that row (or nothing).
best_peer_p99() {
    local p v best="" bv=""
    for p in $FAN_PEERS; do
        v=$(med "${R["fan/$1/$p"]:-}" p99_us)
        [ -n "$v" ] || continue
        if [ -z "$bv" ] || awk -v a="$v" -v b="$bv" 'BEGIN { exit !(a < b) }'; then best=$p; bv=$v; fi
    done
    [ -n "$best" ] && printf '%s %s' "$best" "$bv"
}
{
    echo "### Echo over loopback (messages/s; C connections x K in flight x S bytes)"
    echo
    printf '| C x K x S |'
    for n in $ECHO_NAMES; do printf ' %s |' "${ECHO_LABEL[$n]}"; done
    printf ' ours/wslay | ours/lws | ours/node | ours/python |\n|---|'
    for n in $ECHO_NAMES; do printf -- '---:|'; done
    printf -- '---:|---:|---:|---:|\n'
    for cfg in "${ECHO_CONFIGS[@]}"; do
        set -- $cfg
        printf '| %s x %s x %s B |' "$1" "$2" "$3"
        for n in $ECHO_NAMES; do printf ' %s |' "$(cell "${R["echo/$cfg/$n"]:-}" msgs_s)"; done
        o=$(med "${R["echo/$cfg/ours"]:-}" msgs_s)
        for p in wslay lws node python; do printf ' %s |' "$(ratio "$o" "$(med "${R["echo/$cfg/$p"]:-}" msgs_s)")"; done
        echo
    done
    echo
    echo "Server CPU time per echoed message (microseconds, all server threads, from /proc/PID/task/*/schedstat)."
    echo "Unlike messages/s it does not depend on how much of its core the server got while other work ran."
    echo
    printf '| C x K x S |'
    for n in $ECHO_NAMES; do printf ' %s |' "${ECHO_LABEL[$n]}"; done
    printf ' wslay/ours | node/ours |\n|---|'
    for n in $ECHO_NAMES; do printf -- '---:|'; done
    printf -- '---:|---:|\n'
    for cfg in "${ECHO_CONFIGS[@]}"; do
        set -- $cfg
        printf '| %s x %s x %s B |' "$1" "$2" "$3"
        for n in $ECHO_NAMES; do printf ' %s |' "$(us "$(med "${R["echo/$cfg/$n"]:-}" cpu_us)")"; done
        o=$(med "${R["echo/$cfg/ours"]:-}" cpu_us)
        for p in wslay node; do printf ' %s |' "$(ratio "$(med "${R["echo/$cfg/$p"]:-}" cpu_us)" "$o")"; done
        echo
    done
    echo
    echo "Latency of the same runs, p50 / p99 in microseconds from send to echo (with K messages in flight it"
    echo "includes queueing behind them); MB/s of echoed payload for the 64 KiB row."
    echo
    printf '| C x K x S |'
    for n in $ECHO_NAMES; do printf ' %s |' "${ECHO_LABEL[$n]}"; done
    printf '\n|---|'
    for n in $ECHO_NAMES; do printf -- '---:|'; done
    echo
    for cfg in "${ECHO_CONFIGS[@]}"; do
        set -- $cfg
        printf '| %s x %s x %s B |' "$1" "$2" "$3"
        for n in $ECHO_NAMES; do
            l=${R["echo/$cfg/$n"]:-}
            if [ -z "$(med "$l" msgs_s)" ]; then printf ' n/a |'; continue; fi
            if [ "$3" -ge 65536 ]; then
                printf ' %.0f / %.0f (%.0f MB/s) |' "$(med "$l" p50_us)" "$(med "$l" p99_us)" "$(med "$l" mb_s)"
            else
                printf ' %.0f / %.0f |' "$(med "$l" p50_us)" "$(med "$l" p99_us)"
            fi
        done
        echo
    done
    echo
    echo "### Handshakes over loopback (16 in parallel: connect, upgrade request, 101, abortive close)"
    echo
    printf '| server | handshakes/s | ours/server | server CPU us per handshake |\n|---|---:|---:|---:|\n'
    o=$(med "${R[hs/ours]:-}" hs_s)
    for n in $ECHO_NAMES; do
        l=${R["hs/$n"]:-}
        printf '| %s | %s | %s | %s |\n' "${ECHO_LABEL[$n]}" "$(cell "$l" hs_s)" "$(ratio "$o" "$(med "$l" hs_s)")" \
            "$(us "$(med "$l" cpu_us)")"
    done
    echo
    echo "wslay does no HTTP: its handshake is the bench glue's (OpenSSL SHA-1), so that row measures the glue."
    echo "Most of a handshake's cost is the kernel's: accept, three packets each way, the reset."
    echo
    if ! skip fanout; then
        echo "### Fan-out over loopback: M subscribers x W publishes in flight (64-byte data; $FAN_ROUNDS round(s) x $FAN_REPS repetitions)"
        echo
        echo "One publisher (itself subscribed, as the demo hub requires) keeps W publishes"
        echo '`{"type":"publish","payload":{"channel":"bench","data":D}}` in flight; every one of the M subscribers'
        echo 'receives `{"type":"message","payload":{"channel":"bench","from":U,"data":D}}`. Each hub runs fresh for'
        echo "each row, the hubs in turn. Latency: publish sent to its delivery to the last subscriber. CPU: server"
        echo "CPU time per delivery (the publisher's own copy included). chat_server runs as it ships: history on"
        echo "(200 messages per channel kept, every message numbered) and presence tracked; the sections below"
        echo "give each off and on. The peers serialise each broadcast once: libwebsockets (peers/lws_hub.c) puts"
        echo "one LWS_PRE-headroom buffer in every subscriber's queue and writes one message per writable callback"
        echo "(its default poll() loop); wslay (peers/wslay_hub.c) queues it with wslay_event_queue_msg (a copy per"
        echo "subscriber, wslay's API) and writes with wslay_event_send on its own epoll loop; Node ws sends one"
        echo "Buffer to each; Python websockets uses websockets.broadcast()."
        [ -n "$FAN_NOTE" ] && { echo; echo "Note: $FAN_NOTE."; }
        echo
        echo "Deliveries/s (more is better):"
        echo
        printf '| M x W |'
        for n in $HUB_NAMES; do printf ' %s |' "${HUB_LABEL[$n]}"; done
        for p in $FAN_PEERS; do printf ' ours/%s |' "$p"; done
        printf '\n|---|'
        for n in $HUB_NAMES $FAN_PEERS; do printf -- '---:|'; done
        echo
        for row in $FAN_ROWS; do
            printf '| %s |' "$(rowname "$row")"
            for n in $HUB_NAMES; do printf ' %s |' "$(cell "${R["fan/$row/$n"]:-}" deliveries_s)"; done
            o=$(med "${R["fan/$row/ours"]:-}" deliveries_s)
            for p in $FAN_PEERS; do printf ' %s |' "$(ratio "$o" "$(med "${R["fan/$row/$p"]:-}" deliveries_s)")"; done
            echo
        done
        echo
        echo "Publish to last subscriber, p50 / p99 in ms (less is better):"
        echo
        printf '| M x W |'
        for n in $HUB_NAMES; do printf ' %s |' "${HUB_LABEL[$n]}"; done
        printf ' best peer p99 |\n|---|'
        for n in $HUB_NAMES; do printf -- '---:|'; done
        printf -- '---|\n'
        for row in $FAN_ROWS; do
            printf '| %s |' "$(rowname "$row")"
            for n in $HUB_NAMES; do
                l=${R["fan/$row/$n"]:-}
                if [ -z "$(med "$l" p99_us)" ]; then printf ' n/a |'; continue; fi
                printf ' %s / %s |' "$(ms "$(med "$l" p50_us)")" "$(ms "$(med "$l" p99_us)")"
            done
            b=$(best_peer_p99 "$row")
            printf ' %s |\n' "$( [ -n "$b" ] && echo "${HUB_LABEL[${b%% *}]}: $(ms "${b#* }")" || echo n/a)"
        done
        echo
        echo "Server CPU time per delivery, microseconds (less is better; unlike deliveries/s it does not depend"
        echo "on how much of its core the server got while other work ran), and peer/ours:"
        echo
        printf '| M x W |'
        for n in $HUB_NAMES; do printf ' %s |' "${HUB_LABEL[$n]}"; done
        for p in $FAN_PEERS; do printf ' %s/ours |' "$p"; done
        printf '\n|---|'
        for n in $HUB_NAMES $FAN_PEERS; do printf -- '---:|'; done
        echo
        for row in $FAN_ROWS; do
            printf '| %s |' "$(rowname "$row")"
            for n in $HUB_NAMES; do printf ' %s |' "$(us "$(med "${R["fan/$row/$n"]:-}" cpu_us)")"; done
            o=$(med "${R["fan/$row/ours"]:-}" cpu_us)
            for p in $FAN_PEERS; do printf ' %s |' "$(ratio "$(med "${R["fan/$row/$p"]:-}" cpu_us)" "$o")"; done
            echo
        done
        echo
        # The hubs' messages are not the same size: chat_server numbers each one.
        row=${FAN_ROWS%% *}; sizes=""
        for n in $HUB_NAMES; do
            v=$(med "${R["fan/$row/$n"]:-}" rx_b)
            [ -n "$v" ] && sizes="$sizes${sizes:+, }$n $(b1 "$v")"
        done
        [ -n "$sizes" ] && { echo "Bytes on the wire per delivery, frame header included ($(rowname "$row")): $sizes. chat_server's"; \
            echo "and posix_hub's messages (history on) carry their channel position (offset, epoch); the peers' do not."; echo; }
        echo "With one publish in flight every server pays about one system call per delivery, and the kernel's"
        echo "loopback TCP path is most of its profile. With several in flight ours writes each subscriber's share of"
        echo "a loop turn in one call (see \"Gathered writes\" below); the peers write each message on its own."
        echo "Deliveries/s is bounded by whichever of the two single cores is slower, and the load"
        echo "generator needs about as much CPU per delivery as the fastest servers do, so the wall-clock ratio"
        echo "understates the servers' difference; server CPU per delivery states it."
        echo
    fi
    echo "### Memory over loopback: server RSS growth per idle connection ($IDLE connections open, fresh server)"
    echo
    printf '| server | RSS per connection (bytes) |\n|---|---:|\n'
    for n in $IDLE_NAMES; do
        l=${R["idle/$n"]:-}
        label=${ECHO_LABEL[$n]:-ours (chat_server, authenticated hub clients)}
        [ "$n" = ours-hub-z ] && label="ours (chat_server, hub clients with permessage-deflate)"
        printf '| %s | %s |\n' "$label" "$( [ -n "$l" ] && kv "$l" rss_per_conn_b || echo n/a)"
    done
    echo
    [ -n "${HUB_HEAP:-}" ] && echo "Library heap per idle hub connection (chat_server's /api/stats heap_bytes before and after): ${HUB_HEAP} bytes$( [ -n "${HUB_HEAP_Z:-}" ] && echo "; ${HUB_HEAP_Z} bytes with permessage-deflate agreed")."
    echo "RSS counts the server process's resident memory only (not kernel socket buffers)."
    echo
} >"$TMP/loopback.md"

# The echo and fan-out comparisons as charts (bench/charts.py, SVG beside
# the results file); without python3-matplotlib, a note instead.
{
    for cfg in "${ECHO_CONFIGS[@]}"; do
        set -- $cfg
        for n in $ECHO_NAMES; do
            v=$(med "${R["echo/$cfg/$n"]:-}" msgs_s)
            [ -n "$v" ] && printf 'echo\t%s x %s x %s B\t%s\t%s\n' "$1" "$2" "$3" "${ECHO_LABEL[$n]}" "$v"
        done
    done
    for row in $FAN_ROWS; do
        for n in $HUB_NAMES; do
            v=$(med "${R["fan/$row/$n"]:-}" deliveries_s)
            [ -n "$v" ] && printf 'fanout\t%s\t%s\t%s\n' "$(rowname "$row")" "${HUB_LABEL[$n]}" "$v"
            v=$(med "${R["fan/$row/$n"]:-}" cpu_us)
            [ -n "$v" ] && printf 'fanout-cpu\t%s\t%s\t%s\n' "$(rowname "$row")" "${HUB_LABEL[$n]}" "$v"
        done
    done
} >"$TMP/points.tsv"
CHARTS=$($PY bench/charts.py "$TMP/points.tsv" "$(dirname "$OUTFILE")" 2>"$TMP/charts.err")
[ $? -eq 0 ] || CHARTS_NOTE="Charts not drawn: $(head -n 1 "$TMP/charts.err")"

# permessage-deflate: the hub in memory, then echo and fan-out over loopback.
# pair_target KEY WHAT GOAL N...: a target line per subscriber count N, the
# deliveries/s of R[KEY/N/on] over R[KEY/N/off] against GOAL.
pair_target() {
    local key=$1 what=$2 goal=$3 m p z q
    shift 3
    for m in "$@"; do
        p=$(med "${R["$key/$m/off"]:-}" deliveries_s); z=$(med "${R["$key/$m/on"]:-}" deliveries_s)
        [ -n "$p" ] && [ -n "$z" ] || continue
        q=$(awk -v a="$z" -v b="$p" 'BEGIN { printf "%.2f", a / b }')
        target "fan-out $m subs, $what (deliveries/s)" ">= ${goal}x" "$q" \
            "$(awk -v q="$q" -v g="$goal" 'BEGIN { print (q >= g) ? "yes" : "NO" }')"
    done
}
# pair_table KEY OFF_LABEL ON_LABEL N...: a fan-out table comparing the runs
# R[KEY/N/off] and R[KEY/N/on] at each subscriber count N.
pair_table() {
    local key=$1 a=$2 b=$3 m p z
    shift 3
    printf '| subscribers | deliveries/s, %s | %s | %s/%s | server CPU us per delivery, %s | %s | p99 ms, %s | %s | bytes per delivery, %s | %s |\n' \
        "$a" "$b" "$b" "$a" "$a" "$b" "$a" "$b" "$a" "$b"
    printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
    for m in "$@"; do
        p=${R["$key/$m/off"]:-}; z=${R["$key/$m/on"]:-}
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$m" "$(cell "$p" deliveries_s)" \
            "$(cell "$z" deliveries_s)" "$(ratio "$(med "$z" deliveries_s)" "$(med "$p" deliveries_s)")" \
            "$(us "$(med "$p" cpu_us)")" "$(us "$(med "$z" cpu_us)")" "$(ms "$(med "$p" p99_us)")" \
            "$(ms "$(med "$z" p99_us)")" "$(b1 "$(med "$p" rx_b)")" "$(b1 "$(med "$z" rx_b)")"
    done
}
{
    [ -f "$TMP/deflate_hub.md" ] && cat "$TMP/deflate_hub.md"
    if ! skip echo-deflate; then
        echo "### Echo of 1 KiB JSON with permessage-deflate over loopback (messages/s; C connections x K in flight)"
        echo
        if [ "$ZLOAD" != 1 ]; then
            echo "Not run: $ZECHO_NOTE."
        else
            echo "The message is a 1,024-byte chat envelope (loadgen --json), the same every time. \"compressed\": the load"
            echo "generator offers permessage-deflate; client_max_window_bits, sends each message compressed (alone) and"
            echo "inflates and checks every echo; both servers keep their context takeover (their defaults), Node ws with"
            echo "ws's perMessageDeflate defaults (zlib level 6 on its thread pool, messages from 1 KiB compressed)."
            echo "\"plain\": the same servers, the extension not offered. CPU: server CPU time per echoed message."
            echo
            printf '| C x K x 1 KiB JSON | %s, compressed | %s, compressed | ours/node compressed | ours, plain | Node, plain | ours: compressed/plain | server CPU us per message, ours compressed | Node compressed |\n' \
                "${ZECHO_LABEL[ours]}" "${ZECHO_LABEL[node]}"
            printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
            for cfg in "${ZECHO_CONFIGS[@]}"; do
                set -- $cfg
                oz=${R["zecho/$cfg/ours/on"]:-}; nz=${R["zecho/$cfg/node/on"]:-}
                op=${R["zecho/$cfg/ours/off"]:-}; np=${R["zecho/$cfg/node/off"]:-}
                printf '| %s x %s |' "$1" "$2"
                printf ' %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(cell "$oz" msgs_s)" "$(cell "$nz" msgs_s)" \
                    "$(ratio "$(med "$oz" msgs_s)" "$(med "$nz" msgs_s)")" "$(cell "$op" msgs_s)" "$(cell "$np" msgs_s)" \
                    "$(ratio "$(med "$oz" msgs_s)" "$(med "$op" msgs_s)")" "$(us "$(med "$oz" cpu_us)")" "$(us "$(med "$nz" cpu_us)")"
            done
            [ -n "$ZECHO_NOTE" ] && { echo; echo "Note: $ZECHO_NOTE."; }
        fi
        echo
    fi
    if ! skip fanout-deflate; then
        echo "### Fan-out with and without permessage-deflate over loopback (chat_server; 64-byte data, 4 publishes in flight)"
        echo
        if [ "$ZLOAD" != 1 ]; then
            echo "Not run: $ZFAN_NOTE."
        else
            echo "The fan-out above, against the same chat_server (which accepts the extension by default), once with"
            echo "every subscriber and the publisher offering permessage-deflate (\"compressed\") and once not (\"plain\"),"
            echo "each on a fresh server, in turn, $FAN_ROUNDS round(s) x $FAN_REPS repetitions. The hub answers without context"
            echo "takeover and compresses each broadcast once for all subscribers. Each subscriber inflates what it gets"
            echo "and checks it (loadgen --deflate: identical compressed bytes are inflated once and the result reused,"
            echo "so the generator's own cost stays near the plain run's). Bytes: on the wire per delivery, frame header"
            echo "included. CPU: server CPU time per delivery."
            echo
            pair_table zfan plain compressed $ZSUBS
        fi
        echo
    fi
} >"$TMP/deflate.md"

if ! skip fanout-gather; then
    {
        echo "### Fan-out with each subscriber's turn gathered into one write, and without (chat_server; 64-byte data)"
        echo
        echo "Rows are MxW: M subscribers, W publishes in flight. \"on\": chat_server as it runs, every message a"
        echo "subscriber is due in one loop turn written at the end of that turn in one sendmsg() of the queued frames"
        echo "(hub desc.gather). \"off\": \`--no-gather\`, each message written to each subscriber as it is sent. Each on"
        echo "a fresh server, in turn, $FAN_ROUNDS round(s) x $FAN_REPS repetitions."
        echo
        pair_table gfan "--no-gather" gathered $GATHER_ROWS
        echo
    } >"$TMP/gather.md"
    for row in $GATHER_ROWS; do
        p=$(med "${R["gfan/$row/off"]:-}" deliveries_s); z=$(med "${R["gfan/$row/on"]:-}" deliveries_s)
        [ -n "$p" ] && [ -n "$z" ] && target "fan-out $(rowname "$row"), gathered vs --no-gather (deliveries/s)" \
            "(reported)" "$(awk -v a="$z" -v b="$p" 'BEGIN { printf "%.2fx", a / b }')" "-"
    done
fi
if ! skip fanout-history; then
    {
        echo "### Fan-out with history off and on over loopback (chat_server; 64-byte data, 4 publishes in flight)"
        echo
        echo "The fan-out load against chat_server with \`--history 0\` (\"off\": messages still numbered with their"
        echo "channel, offset and epoch, nothing kept) and with its default history (\"on\": the last 200 messages of"
        echo "each channel kept), each on a fresh server, in turn, $FAN_ROUNDS round(s) x $FAN_REPS repetitions. Latency:"
        echo "publish sent to its delivery to the last subscriber. Bytes: on the wire per delivery. The cost of the"
        echo "numbering alone is in the chat publish path above (bench/publish.c, in memory)."
        echo
        pair_table hfan off on $HSUBS
        echo
    } >"$TMP/history.md"
    pair_target hfan "history on vs off" 0.95 $HSUBS
    for m in $HSUBS; do
        z=$(med "${R["hfan/$m/on"]:-}" p99_us)
        [ -n "$z" ] && target "fan-out $m subs, history on: publish to last subscriber p99 ms" "(reported)" "$(ms "$z")" "-"
    done
fi
if ! skip fanout-redis; then
    {
        echo "### Fan-out over Redis: plain pub/sub and shared positions (chat_server --redis; 64-byte data, 4 in flight)"
        echo
        if [ -n "$REDIS_NOTE" ]; then
            echo "Not run: $REDIS_NOTE."
        else
            echo "One chat_server joined to a redis-server on the server's core. \"off\" (\`--history 0\`): a publish is"
            echo "delivered at once and PUBLISHed for the other processes. \"on\" (its default history): Redis numbers and"
            echo "keeps every channel message in one script (INCR, stream, PUBLISH), and every process delivers it when"
            echo "it comes back, so a client recovers on any of them. Its cost is that round trip: the publish waits for it."
            echo "CPU: chat_server's only (Redis's own is not counted)."
            echo
            pair_table rfan off on $RSUBS
        fi
        echo
    } >>"$TMP/history.md"
    for m in $RSUBS; do
        p=$(med "${R["rfan/$m/off"]:-}" deliveries_s); z=$(med "${R["rfan/$m/on"]:-}" deliveries_s)
        [ -n "$p" ] && [ -n "$z" ] && target "fan-out $m subs over Redis, shared positions vs plain pub/sub (deliveries/s)" \
            "(reported)" "$(awk -v a="$z" -v b="$p" 'BEGIN { printf "%.2f", a / b }')" "-"
    done
fi
if ! skip fanout-presence; then
    {
        echo "### Fan-out with presence off and on over loopback (chat_server; 64-byte data, 4 publishes in flight)"
        echo
        echo "The fan-out load against chat_server with \`--no-presence\` and plain subscribes (\"off\") and against"
        echo "chat_server as it ships, presence tracked, with every subscriber and the publisher subscribing with"
        echo "\`\"presence\":true\` (\"on\", loadgen --presence: each confirmation must carry the presence), each on a"
        echo "fresh server, in turn, $FAN_ROUNDS round(s) x $FAN_REPS repetitions. Every connection uses the token \"bench\":"
        echo "they are all one user, and presence changes per user, so only the first subscriber's join makes a"
        echo "presence message (to the subscribers already in; later ones find the user in their confirmation):"
        for m in $PSUBS; do
            printf '%s subscribers: %s presence messages received while joining, %s while measuring (medians).\n' "$m" \
                "$(med "${R["pfan/$m/on"]:-}" pres_setup)" "$(med "${R["pfan/$m/on"]:-}" pres_measured)"
        done
        echo "So this is presence's cost on the delivery path (the flush at the end of every loop turn, the"
        echo "subscriber bookkeeping), not the cost of presence traffic: that is the in-memory table above, with"
        echo "10,000 distinct users. loadgen counts presence messages apart from deliveries and starts measuring"
        echo "once no message of any kind has come for 0.3 s. The chat publish path section gives presence on vs"
        echo "off in memory too (CPU per publish, interleaved on fresh hubs), free of the loopback's noise."
        echo
        pair_table pfan off on $PSUBS
        echo
    } >"$TMP/presence_fan.md"
    pair_target pfan "presence on vs off" 0.95 $PSUBS
fi
pair_target zfan "permessage-deflate vs plain" 0.9 $ZSUBS
for cfg in "${ZECHO_CONFIGS[@]}"; do
    set -- $cfg
    o=$(med "${R["zecho/$cfg/ours/on"]:-}" msgs_s); nd=$(med "${R["zecho/$cfg/node/on"]:-}" msgs_s)
    [ -n "$o" ] && [ -n "$nd" ] && target "echo $1 conn x $2 x 1 KiB JSON, permessage-deflate, vs Node ws compressed (msgs/s)" \
        "(reported)" "$(awk -v a="$o" -v b="$nd" 'BEGIN { printf "%.2f", a / b }')" "-"
done

if ! skip echo-tls; then
    {
        echo "### Echo over TLS: wss:// vs ws:// on the same echo_server (messages/s; C connections x K in flight x S bytes)"
        echo
        if [ -n "$TECHO_NOTE" ]; then
            echo "Not run: $TECHO_NOTE."
        else
            echo "The same build/echo_server twice, plain and with \`--tls-cert\` (examples/tls_openssl.h; a P-256"
            echo "certificate made for the run; negotiated: ${TLS_SUITE:-?}), and the same load, loadgen, with \`--tls\`"
            echo "for wss (OpenSSL on both sides; the client does not verify). CPU: server CPU time per echoed message."
            echo
            printf '| C x K x S | ws:// | wss:// | wss/ws | server CPU us per message, ws | wss | p99 ms, ws | wss |\n'
            printf '|---|---:|---:|---:|---:|---:|---:|---:|\n'
            for cfg in "${TECHO_CONFIGS[@]}"; do
                set -- $cfg
                p=${R["techo/$cfg/ws"]:-}; t=${R["techo/$cfg/wss"]:-}
                printf '| %s x %s x %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$(cell "$p" msgs_s)" \
                    "$(cell "$t" msgs_s)" "$(ratio "$(med "$t" msgs_s)" "$(med "$p" msgs_s)")" "$(us "$(med "$p" cpu_us)")" \
                    "$(us "$(med "$t" cpu_us)")" "$(ms "$(med "$p" p99_us)")" "$(ms "$(med "$t" p99_us)")"
            done
        fi
        echo
    } >"$TMP/tls.md"
    for cfg in "${TECHO_CONFIGS[@]}"; do
        set -- $cfg
        p=$(med "${R["techo/$cfg/ws"]:-}" msgs_s); t=$(med "${R["techo/$cfg/wss"]:-}" msgs_s)
        [ -n "$p" ] && [ -n "$t" ] && target "echo $1 conn x $3 B, wss vs ws on one echo_server (msgs/s)" "(reported)" \
            "$(awk -v a="$t" -v b="$p" 'BEGIN { printf "%.2f", a / b }')" "-"
    done
fi

# Targets measured over loopback.
for cfg in "1 16 16" "64 16 16" "1 16 1024" "64 16 1024"; do
    set -- $cfg
    o=$(med "${R["echo/$cfg/ours"]:-}" msgs_s)
    w=$(med "${R["echo/$cfg/wslay"]:-}" msgs_s)
    if [ -n "$o" ] && [ -n "$w" ]; then
        m=$(awk -v a="$o" -v b="$w" 'BEGIN { printf "%.2f", a / b }')
        target "echo $1 conn x $3 B vs wslay (msgs/s)" ">= 1.2x" "$m" "$(awk -v m="$m" 'BEGIN { print (m >= 1.2) ? "yes" : "NO" }')"
    fi
done
# The fan-out goals: ours/peer deliveries/s in a row against a floor, ours'
# p99 against the best peer's in every row, and the CPU per delivery.
# fan_goal MxW PEER GOAL
fan_goal() {
    local row=$1 p=$2 goal=$3 o v q what
    what="fan-out $(rowname "$row") vs ${HUB_LABEL[$p]} (deliveries/s)"
    case " $FAN_ROWS " in *" $row "*) ;; *) target "$what" ">= ${goal}x" "not run (not in BENCH_FANOUT_ROWS)" "-"; return ;; esac
    o=$(med "${R["fan/$row/ours"]:-}" deliveries_s); v=$(med "${R["fan/$row/$p"]:-}" deliveries_s)
    if [ -z "$o" ] || [ -z "$v" ]; then target "$what" ">= ${goal}x" "n/a (a hub did not run)" "-"; return; fi
    q=$(awk -v a="$o" -v b="$v" 'BEGIN { printf "%.2f", a / b }')
    target "$what" ">= ${goal}x" "${q}x ($(fmt_rate "$o") vs $(fmt_rate "$v"))" \
        "$(awk -v q="$q" -v g="$goal" 'BEGIN { print (q >= g) ? "yes" : "NO" }')"
}
if ! skip fanout; then
    fan_goal 1000x8 python 1.3
    fan_goal 1000x8 lws 2
    fan_goal 10000x1 lws 1.5
    fan_goal 100x1 lws 1.2
    # Node ws, on the largest row: the goal the fan-out had before the matrix.
    NODE_ROW=""
    for row in $FAN_ROWS; do [ -z "$NODE_ROW" ] && [ "${row%x*}" = "$FAN_MAX" ] && NODE_ROW=$row; done
    fan_goal "$NODE_ROW" node 2
    for row in $FAN_ROWS; do
        a=$(med "${R["fan/$row/ours"]:-}" p99_us)
        b=$(best_peer_p99 "$row")
        if [ -n "$a" ] && [ -n "$b" ]; then
            target "fan-out $(rowname "$row") publish to last subscriber p99 ms (best peer: ${HUB_LABEL[${b%% *}]}, $(ms "${b#* }"))" \
                "<= best peer" "$(ms "$a")" "$(awk -v a="$a" -v b="${b#* }" 'BEGIN { print (a <= b) ? "yes" : "NO" }')"
        fi
        o=$(med "${R["fan/$row/ours"]:-}" cpu_us)
        [ -n "$o" ] || continue
        peers=""
        for p in $FAN_PEERS; do
            v=$(med "${R["fan/$row/$p"]:-}" cpu_us)
            [ -n "$v" ] && peers="$peers${peers:+, }$p $(us "$v")"
        done
        target "fan-out $(rowname "$row") server CPU us per delivery (peers: ${peers:-none})" "(reported)" "$(us "$o")" "-"
    done
fi
[ -n "${HUB_HEAP:-}" ] && target "library heap per idle hub connection (bytes)" "<= 512" "$HUB_HEAP" \
    "$(awk -v h="$HUB_HEAP" 'BEGIN { print (h <= 512) ? "yes" : "NO" }')"

{
    echo "| target | goal | measured | met |"
    echo "|---|---|---:|---|"
    awk -F'|' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$TMP/targets"
} >"$TMP/summary.md"

MODEL=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
CPUS=$(nproc)
{
    echo "# Benchmark results"
    echo
    echo "Generated by \`bench/run.sh\`$( [ "$QUICK" = 1 ] && echo ' (BENCH_QUICK=1: a smoke run, not for comparison)')."
    echo
    echo "- Date: $START to $END ($ELAPSED s)"
    echo "- Machine: $MODEL, $CPUS cores ($(uname -srm)); $(free -g | awk '/^Mem:/ { print $2 " GiB" }') RAM"
    echo "- Load average (1/5/15 min) at start: $LOAD0; at end: $LOAD1 (other work on the machine makes figures noisy)"
    echo "- Compiler: $(cc --version | head -1); CFLAGS ${CFLAGS:--O2 -g} (no -march: the SSE2 baseline)"
    echo "- Peers: wslay $(dpkg-query -W -f '${Version}' libwslay-dev 2>/dev/null), libwebsockets $(dpkg-query -W -f '${Version}' libwebsockets-dev 2>/dev/null), cJSON $(dpkg-query -W -f '${Version}' libcjson-dev 2>/dev/null), Node $(node --version 2>/dev/null) with ws $(node -p "require('./bench/peers/node_modules/ws/package.json').version" 2>/dev/null) (bufferutil + utf-8-validate: $(ls bench/peers/node_modules 2>/dev/null | grep -c -E '^(bufferutil|utf-8-validate)$')/2), Python $($PY -c 'import sys; print(sys.version.split()[0])') with websockets $($PY -c 'import websockets; print(websockets.__version__)' 2>/dev/null) on $($PY -c 'import uvloop; print("uvloop", uvloop.__version__)' 2>/dev/null || echo asyncio)"
    echo "- Pinning: servers on core $SERVER_CPU, load generator and in-memory suite on core $LOAD_CPU; $REPS repetitions of each figure, median reported; '~' = repetitions spread more than 10% of the median"
    echo "- Library: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet -- ws_channel.h 2>/dev/null || echo ' + uncommitted ws_channel.h')"
    echo
    echo "## Targets"
    echo
    cat "$TMP/summary.md"
    echo
    [ -f "$TMP/inmem.md" ] && cat "$TMP/inmem.md"
    if [ -f "$TMP/publish.txt" ]; then
        echo "## The chat publish path (bench/publish.c: examples/chat_server.c's own hooks, in memory)"
        echo
        cat "$TMP/publish.txt"
        echo
    fi
    if [ -n "${NEON_LINE:-}" ]; then
        echo "## NEON (AArch64) paths"
        echo
        echo "$NEON_LINE."
        echo
        echo '```'
        cat "$TMP/neon.txt"
        echo '```'
        echo
    fi
    echo "## Over loopback (whole processes)"
    echo
    for c in $CHARTS; do echo "![${c%.svg}]($c)"; echo; done
    [ -n "${CHARTS_NOTE:-}" ] && { echo "$CHARTS_NOTE."; echo; }
    cat "$TMP/loopback.md"
    if [ -s "$TMP/deflate.md" ]; then
        echo "## permessage-deflate (RFC 7692)"
        echo
        cat "$TMP/deflate.md"
    fi
    if [ -s "$TMP/tls.md" ]; then
        echo "## TLS (wss://)"
        echo
        cat "$TMP/tls.md"
    fi
    if [ -s "$TMP/gather.md" ]; then
        echo "## Gathered writes (one write per subscriber per loop turn)"
        echo
        cat "$TMP/gather.md"
    fi
    if [ -s "$TMP/history.md" ]; then
        echo "## History (no message lost across reconnects)"
        echo
        cat "$TMP/history.md"
    fi
    if [ -s "$TMP/presence.md" ] || [ -s "$TMP/presence_fan.md" ]; then
        echo "## Presence (who is in each channel)"
        echo
        [ -f "$TMP/presence.md" ] && cat "$TMP/presence.md"
        [ -f "$TMP/presence_fan.md" ] && cat "$TMP/presence_fan.md"
    fi
    echo "## Commands"
    echo
    echo '```'
    awk '!seen[$0]++' "$TMP/cmds"
    echo '```'
    if [ -s "$TMP/loadgen.err" ] && grep -q 'loadgen:' "$TMP/loadgen.err"; then
        echo
        echo "## Load generator errors"
        echo
        echo '```'
        grep 'loadgen:' "$TMP/loadgen.err" | head -20
        echo '```'
    fi
} >"$TMP/RESULTS.md"
cp "$TMP/RESULTS.md" "$OUTFILE"

echo
echo "ws_channel.h benchmarks, $START, $MODEL x $CPUS, load $LOAD0 -> $LOAD1$( [ "$QUICK" = 1 ] && echo ', QUICK')"
echo
cat "$TMP/summary.md"
echo
[ -n "${NEON_LINE:-}" ] && echo "NEON paths: $NEON_LINE." && echo
echo "Details (in-memory ratios, echo, handshakes, fan-out, memory, permessage-deflate, history, presence): $OUTFILE"
