#!/bin/sh
# No message lost across reconnects, end to end with real processes:
# examples/chat_server (per-channel history) and examples/client_cli
# (resubscribe with recovery, acknowledged publishes), both built with
# ASan+UBSan, with tests/interop/fault_proxy.py between them cutting
# connections at random moments (mid-frame too) and stalling them.
#   1. three subscribers, each through its own cutting proxy, a publisher
#      connected directly: every subscriber prints the 10,000 published
#      values exactly once, in order, with offsets rising by one;
#   2. the publisher through a cutting proxy, two subscribers directly:
#      every one of 10,000 acknowledged publishes is delivered exactly once;
#   3. --history 0: a subscriber through a cutting proxy loses messages,
#      and says so ("not recovered") for every gap; it never prints a
#      duplicate and what it prints is in order.
#   4. two chat_servers on one redis-server (--redis: Redis numbers and
#      keeps channel messages for both, examples/redis_bridge.h), three
#      subscribers each through a cutting proxy that sends every new
#      connection to the other server, the publisher on the first: as in
#      1, every subscriber prints the 10,000 values exactly once, in order,
#      offsets rising by one, and every reconnect recovers (on the other
#      server); both servers answered recovers, none "not recovered";
#   5. the same two servers, Redis killed (SIGKILL) while 6,000 are being
#      published, and restarted on its port 3 s later (empty: its history
#      is lost): publishes are refused meanwhile (the publisher's messages
#      answered "unavailable"), no subscriber prints a value twice or out
#      of order, every value lost that was not refused is preceded by a
#      "not recovered" line (and the subscribers were told, through their
#      reconnects during the outage or when Redis came back), and traffic
#      resumes once Redis is back: every subscriber prints the last value
#      acked.
#   4 and 5 start their own redis-server on a free loopback port, stopped by
#   PID; they are skipped with a note without redis-server, redis-cli or
#   hiredis (failed under CI=true, like a missing peer elsewhere).
# The proxies must really cut (a few times per connection path), or the
# case proves nothing. The faults are seeded: RECOVERY_SEED=S repeats a
# run's fault schedule (as far as the processes' timing allows); the seed
# is printed when a case fails.
# Usage: tests/interop/run_recovery.sh BUILD_DIR (from anywhere). Prints one
# closing line "Pass: N, fail: N, skip: N.". Logs stay in a run directory
# under BUILD_DIR/interop when something failed.
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
py=/usr/bin/python3
proxy_py=tests/interop/fault_proxy.py
pass=0; fail=0; skip=0
pids=                   # every process this runner started, stopped by PID
seed=${RECOVERY_SEED:-$(date +%s)}

ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
done_all() {
    cleanup
    [ "$fail" -eq 0 ] || echo "logs kept in $run; RECOVERY_SEED=$seed repeats the faults"
    summary "$pass" "$fail" "$skip"
}
# Each PID is a `timeout` running one program: that program first (a
# killed `timeout` does not take its child with it), then the PID.
cleanup() {
    for p in $pids; do
        for k in $(cat "/proc/$p/task/$p/children" 2>/dev/null); do kill -KILL "$k" 2>/dev/null; done
        kill -KILL "$p" 2>/dev/null
    done
    for p in $pids; do wait "$p" 2>/dev/null; done
    pids=
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ -x "$py" ] || skip_all "python3 is missing"

run=$(mktemp -d "$out/run-recovery.XXXXXX") || { echo "run_recovery: mktemp failed"; summary 0 1 0; }

# The programs under test, rebuilt when older than anything they use; a
# private name first, so a concurrent run never sees half a file. The
# server like run_eviction.sh builds it, the client like
# run_client_reconnect.sh.
chat=$out/chat_server_recovery
cli=$out/client_cli_recovery
build_chat() {
    for dep in examples/chat_server.c ws_channel.h examples/*.h; do
        [ "$chat" -nt "$dep" ] && continue
        $CC $warn $san ${CPPFLAGS:-} -D_GNU_SOURCE -I. -Iexamples -o "$chat.$$" examples/chat_server.c &&
            mv -f "$chat.$$" "$chat" || { rm -f "$chat.$$"; return 1; }
        return 0
    done
}
build_cli() {
    for dep in examples/client_cli.c ws_channel.h examples/*.h; do
        [ "$cli" -nt "$dep" ] && continue
        $CC -std=c99 -pedantic -Wall -Wextra -Werror $san ${CPPFLAGS:-} -D_GNU_SOURCE -I. -Iexamples \
            -o "$cli.$$" examples/client_cli.c && mv -f "$cli.$$" "$cli" || { rm -f "$cli.$$"; return 1; }
        return 0
    done
}
# Cases 4 and 5: chat_server with the Redis bridge, and a redis-server.
chat_redis=$out/chat_server_recovery_redis
redis_server=$(command -v redis-server)
redis_cli=$(command -v redis-cli)
redis_why=
if [ -z "$redis_server" ] || [ -z "$redis_cli" ]; then
    redis_why="redis-server or redis-cli is missing (Debian package redis-server)"
elif ! printf '#include <hiredis/async.h>\n' | $CC -E -x c - >/dev/null 2>&1; then
    redis_why="hiredis is missing (Debian package libhiredis-dev)"
fi
build_chat_redis() {
    for dep in examples/chat_server.c ws_channel.h examples/*.h; do
        [ "$chat_redis" -nt "$dep" ] && continue
        $CC $warn $san ${CPPFLAGS:-} -D_GNU_SOURCE -DCHAT_WITH_REDIS -I. -Iexamples -o "$chat_redis.$$" \
            examples/chat_server.c -lhiredis && mv -f "$chat_redis.$$" "$chat_redis" || { rm -f "$chat_redis.$$"; return 1; }
        return 0
    done
}
build_chat & b=$!
r=
if [ -z "$redis_why" ]; then build_chat_redis & r=$!; fi
build_cli || { wait $b; [ -n "$r" ] && wait $r; echo "run_recovery: client_cli build failed"; summary 0 1 0; }
wait $b || { [ -n "$r" ] && wait $r; echo "run_recovery: chat_server build failed"; summary 0 1 0; }
if [ -n "$r" ] && ! wait $r; then echo "run_recovery: chat_server (Redis) build failed"; summary 0 1 0; fi

now_ms() { date +%s%3N; }

# wait_for FILE PATTERN COUNT SECONDS: until the extended regex PATTERN
# matches COUNT lines of FILE.
wait_for() {
    end=$(( $(now_ms) + $4 * 1000 ))
    while [ "$(now_ms)" -lt "$end" ]; do
        n=$(grep -cE -- "$2" "$1" 2>/dev/null)
        [ "${n:-0}" -ge "$3" ] && return 0
        sleep 0.1
    done
    return 1
}

# alive PID: the process runs (an exited child is a zombie until waited
# for, so its state is read rather than probed with kill -0).
alive() {
    st=$(sed -n 's/^[0-9]* ([^)]*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)
    [ -n "$st" ] && [ "$st" != Z ]
}

# hung PID: what a process that does not exit is doing: its state, kernel
# wait channel, CPU time over one second, open files and sockets, and its
# stack when gdb may attach.
hung() {
    grep -E '^(State|Threads)' "/proc/$1/status"
    echo "wchan: $(cat "/proc/$1/wchan")"
    echo "utime stime: $(cut -d' ' -f14,15 "/proc/$1/stat")"; sleep 1
    echo "utime stime 1 s later: $(cut -d' ' -f14,15 "/proc/$1/stat")"
    for t in $(cat "/proc/$1/task/$1/children"); do     # e.g. LeakSanitizer's tracer
        echo "child $t: $(grep -E '^(State|TracerPid)' "/proc/$t/status" | tr '\n\t' '  ') wchan $(cat "/proc/$t/wchan")"
    done
    ls -l "/proc/$1/fd"
    cat "/proc/$1/net/tcp"
    command -v gdb > /dev/null && timeout -k 2 20 gdb -p "$1" -batch -ex 'thread apply all bt'
}

# await PID SECONDS: waits up to SECONDS for PID to exit, then kills it;
# sets rc to its exit status and forgets the PID. Every process also runs
# under `timeout`, which passes a SIGTERM on, so waits are bounded twice.
# One still running then is named, what it was doing kept in the run
# directory (hung), and killed together with the program under
# `timeout` (killing only `timeout` would leave that one running).
await() {
    end=$(( $(now_ms) + $2 * 1000 ))
    while [ "$(now_ms)" -lt "$end" ] && alive "$1"; do sleep 0.1; done
    if alive "$1"; then
        kids=$(cat "/proc/$1/task/$1/children" 2>/dev/null)
        echo "run_recovery: pid $1 ($(tr '\0' ' ' < "/proc/$1/cmdline" | cut -c 1-120)) still running $2 s on; killed"
        for k in $kids; do
            hung "$k" > "$run/hung-$k.txt" 2>&1
            echo "run_recovery: what it was doing: $run/hung-$k.txt"
            kill -KILL "$k" 2>/dev/null
        done
    fi
    kill -KILL "$1" 2>/dev/null
    wait "$1"; rc=$?
    pids=$(for p in $pids; do [ "$p" = "$1" ] || printf '%s ' "$p"; done)
}

# stop PID SECONDS: SIGTERM to the program under `timeout` PID, then as
# await. To the program, not to `timeout`: that one would pass it on twice
# (to the program and to its process group), and a second SIGTERM landing
# in LeakSanitizer's exit-time check was seen to hang the program for good
# (spinning, its tracer waiting), and one landing late in Python's exit to
# kill the proxy.
term() {
    kids=$(cat "/proc/$1/task/$1/children" 2>/dev/null)
    for k in ${kids:-$1}; do kill -TERM "$k" 2>/dev/null; done
}
stop() { term "$1"; await "$1" "$2"; }

# await_port PID TENTHS CMD...: runs CMD (which prints the port a program
# chose, or nothing yet) every 0.1 s while PID lives, at most TENTHS
# times; prints the port.
await_port() {
    ap_pid=$1; ap_n=$2; shift 2
    ap_w=0
    while [ $ap_w -lt "$ap_n" ] && alive "$ap_pid"; do
        ap_port=$("$@")
        [ -n "$ap_port" ] && { echo "$ap_port"; return 0; }
        sleep 0.1
        ap_w=$((ap_w + 1))
    done
    return 1
}
chat_port_in_log() { sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$chat_log" | head -n 1; }
proxy_port_in_file() { [ -s "$pf" ] && cat "$pf"; }

# start_chat NAME ARG...: the server ($chat_bin, default $chat) on a free
# port; sets chat_pid, chat_port, chat_log.
start_chat() {
    chat_log=$run/$1-server.log; shift
    : > "$chat_log"
    timeout -k 15 170 "${chat_bin:-$chat}" --port 0 --www examples/www "$@" > "$chat_log" 2>&1 &
    chat_pid=$!; pids="$pids $chat_pid"
    chat_port=$(await_port "$chat_pid" 200 chat_port_in_log)     # up to 20 s
    [ -n "$chat_port" ] && return 0
    echo "run_recovery: chat_server did not start"; cat "$chat_log"
    return 1
}

# start_proxy NAME SEED ARG...: a fault proxy (ARGs: its fault settings)
# in front of the server (or of the servers in $proxy_targets, "--target
# 127.0.0.1:PORT ..." in turn); sets proxy_pid, proxy_port. Its log is
# $run/NAME.log.
start_proxy() {
    pname=$1; pseed=$2; shift 2
    pf=$run/$pname.port
    timeout -k 15 170 $py "$proxy_py" --listen 0 ${proxy_targets:---target "127.0.0.1:$chat_port"} --seed "$pseed" \
        --log "$run/$pname.log" --port-file "$pf" --max-runtime 170 "$@" > /dev/null 2>> "$run/$pname.log" &
    proxy_pid=$!; pids="$pids $proxy_pid"
    proxy_port=$(await_port "$proxy_pid" 100 proxy_port_in_file)   # up to 10 s
    [ -n "$proxy_port" ] && return 0
    echo "run_recovery: fault_proxy did not start"; cat "$run/$pname.log"
    return 1
}

# three_subscribers CASE NAME: three client_cli subscribers of "recovery",
# each through its own cutting proxy (start_proxy's targets); sets
# case_proxies, case_clis and sublogs; 0 once all three are subscribed,
# else says why.
three_subscribers() {
    for i in 1 2 3; do
        start_proxy $1-proxy$i "$seed-$1-$i" --cut-mean 1.5 --stall-prob 0.2 --stall-max 1 || break
        case_proxies="$case_proxies $proxy_pid"
        start_cli $1-sub$i --url "ws://127.0.0.1:$proxy_port/ws" --token sub$i --subscribe recovery \
            --backoff-base 100 --backoff-max 500 --max-attempts 0
        case_clis="$case_clis $cli_pid"; sublogs="$sublogs $run/$1-sub$i.log"
    done
    if [ "$(echo $case_clis | wc -w)" -ne 3 ]; then
        bad "$2: a proxy did not start"
        return 1
    fi
    wait_subscribed 3 $sublogs && return 0
    bad "$2: the subscribers were not all subscribed within 20 s"
    for l in $sublogs; do tail -n 5 "$l"; done
    return 1
}

# start_cli NAME ARG...: a client_cli in the background, output to
# $run/NAME.log; sets cli_pid.
start_cli() {
    l=$run/$1.log; shift
    : > "$l"
    timeout -k 15 170 "$cli" "$@" > "$l" 2>&1 &
    cli_pid=$!; pids="$pids $cli_pid"
}

cuts() { grep -c ' cut (' "$1" 2>/dev/null; }

# stat PORT EXPR: a value from the server's /api/stats (a Python
# expression over s, the parsed JSON); nothing when it does not answer.
stat() {
    $py -c 'import json, sys, urllib.request
s = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))
print(eval(sys.argv[2]))' "http://127.0.0.1:$1/api/stats" "$2" 2>/dev/null
}

# subscriptions: the count of channel subscriptions of the server (of
# every server in $stat_ports).
subscriptions() {
    t=0
    for sp in ${stat_ports:-$chat_port}; do
        v=$(stat "$sp" 's["subscriptions"]'); t=$((t + ${v:-0}))
    done
    echo "$t"
}

# wait_subscribed COUNT LOG...: until the server holds COUNT subscriptions
# and every LOG shows its client's subscription confirmed, so nothing is
# published before a subscriber has a position to recover from.
wait_subscribed() {
    want=$1; shift
    end=$(( $(now_ms) + 20000 ))
    while [ "$(now_ms)" -lt "$end" ]; do
        all=1
        for l in "$@"; do grep -qE "$subscribed_re" "$l" || all=0; done
        [ $all -eq 1 ] && [ "$(subscriptions)" -ge "$want" ] && return 0
        sleep 0.1
    done
    return 1
}
# client_cli prints the first confirmation as a raw "subscribed" envelope,
# later ones as "recovered" / "not recovered" lines.
subscribed_re='"type":"subscribed".*"channel":"recovery"|recovered recovery'

# check_log FILE N MODE: reads a client's output. Every "msg recovery OFF
# PAYLOAD" line's (or, from a hub that sends no positions, every raw
# "message" envelope's) data value must be above the previous one (no duplicate,
# in order), and its offset must rise exactly as much as the value does
# (only the publisher writes to the channel). MODE all: the values are
# exactly 1..N and no "not recovered" line appears. MODE honest: each gap
# in the values (and a missing tail) is preceded by a "not recovered" line
# since the previous message. Prints one summary line; exit 0 when fine,
# 1 when wrong, 2 (honest) when only the tail is still unexplained.
check_log() {
    awk -v n="$2" -v mode="$3" '
    function problem(s) { if (np < 5) why = why (np ? "; " : "") s; np++ }
    {
        sub(/^\[[ 0-9.]*\] /, "")
    }
    /^not recovered recovery/ { status = "not"; notrec++; next }
    /^recovered recovery/ { status = "rec"; rec++; next }
    /^connected/ { connects++; next }
    # A hub that sends no positions: client_cli prints the raw envelope.
    /^message \{"type":"message","payload":\{"channel":"recovery",/ { nopos++; off = -1 }
    /^msg recovery / { off = $3 + 0 }
    off != "" {
        if (!match($0, /"data":-?[0-9]+/)) { problem("no data in: " $0); next }
        d = substr($0, RSTART + 7, RLENGTH - 7) + 0
        count++
        if (d in seen) dups++
        seen[d] = 1
        if (d <= prev) problem("value " d " after " prev " (duplicate or out of order)")
        else if (d > prev + 1) {
            gaps++
            if (mode == "all") problem("values " prev + 1 ".." d - 1 " missing")
            else if (status != "not") problem("values " prev + 1 ".." d - 1 " lost without \"not recovered\"")
        }
        if (havoff && off >= 0 && d > prev && off - prevoff != d - prev)
            problem("offset " off " after " prevoff " for value " d " after " prev)
        prev = d; prevoff = off; havoff = off >= 0; status = ""; off = ""
    }
    END {
        tail = 0
        if (mode == "all") {
            if (notrec) problem(notrec " \"not recovered\" line(s) with history on")
            if (nopos) problem(nopos " messages without a position")
            if (prev != n) problem("last value " prev + 0 ", expected " n)
            if (count != n) problem(count + 0 " messages, expected " n)
        } else if (prev < n && status != "not") tail = 1
        printf "%d messages, %d duplicates, %d gaps, %d connects, %d recovered, %d not recovered", \
            count, dups, gaps, connects, rec, notrec
        if (nopos) printf " (%d messages carried no position)", nopos
        if (np) printf ": %s", why
        if (tail && !np) printf ": values %d..%d lost, not (yet) reported", prev + 1, n
        printf "\n"
        exit np ? 1 : (tail ? 2 : 0)
    }' "$1"
}

# finish_case NAME: stops the case's clients, proxies and server (clients
# first, so their close handshakes have somewhere to go; the servers of
# $case_servers, default $chat_pid, then the redis-server $case_redis) and
# checks that the sanitizers found nothing: every program exits 0.
finish_case() {
    bad_exits=
    # All at once, then each waited for: a client takes up to 2 s to close.
    for p in $case_clis; do term "$p"; done
    for p in $case_clis; do
        await "$p" 10
        [ "$rc" -eq 0 ] || bad_exits="$bad_exits client_cli(pid $p)=$rc"
    done
    for p in $case_proxies; do
        stop "$p" 10
        [ "$rc" -eq 0 ] || bad_exits="$bad_exits fault_proxy(pid $p)=$rc"
    done
    for p in ${case_servers:-$chat_pid}; do
        stop "$p" 10
        [ "$rc" -eq 0 ] || bad_exits="$bad_exits chat_server(pid $p)=$rc"
    done
    if [ -n "$case_redis" ]; then
        stop "$case_redis" 10
        [ "$rc" -eq 0 ] || bad_exits="$bad_exits redis-server=$rc"
    fi
    if [ -z "$bad_exits" ]; then
        ok "$1: every process exits cleanly under ASan/UBSan"
    else
        bad "$1: exit status:$bad_exits"
        tail -n 30 "$chat_log"
    fi
}

N=10000
RATE=500


# publish NAME URL: the publisher (N acknowledged publishes at RATE per
# second), waited for up to 90 s; sets pub_rc, pub_log, pub_line (its
# "published ..." line).
publish() {
    pub_log=$run/$1.log
    start_cli "$1" --url "$2" --token pub --publish recovery --count "$N" --rate "$RATE" \
        --backoff-base 100 --backoff-max 500 --max-attempts 0
    await "$cli_pid" 90; pub_rc=$rc
    pub_line=$(sed -n 's/^\[[ 0-9.]*\] \(published .*\)/\1/p' "$pub_log" | tail -n 1)
}

# check_publisher NAME: exit 0 and all N acknowledged.
check_publisher() {
    if [ "$pub_rc" -eq 0 ] && echo "$pub_line" | grep -qE "^published $N acked $N resent [0-9]+\$"; then
        ok "$1: publisher exits 0: $pub_line"
    else
        bad "$1: publisher exit $pub_rc, \"$pub_line\""; tail -n 20 "$pub_log"
    fi
}

# wait_last SECONDS LOG...: until every LOG shows the value N (one deadline
# for all).
wait_last() {
    end=$(( $(now_ms) + $1 * 1000 )); shift
    for l in "$@"; do
        while [ "$(now_ms)" -lt "$end" ] && ! grep -qE "^\[[ 0-9.]*\] msg recovery .*\"data\":${N}[,}]" "$l"; do
            sleep 0.2
        done
    done
}

# check_all NAME LOG PROXYLOG: LOG holds 1..N exactly once, in order; when
# PROXYLOG is given, its proxy cut at least 3 times.
check_all() {
    r=$(check_log "$2" "$N" all); crc=$?
    k=
    if [ -n "$3" ]; then
        k=$(cuts "$3")
        [ "${k:-0}" -ge 3 ] || { crc=1; r="$r; the proxy cut only ${k:-0} times, nothing proven"; }
        k=", ${k} cuts"
    fi
    if [ "$crc" -eq 0 ]; then ok "$1: $r$k"; else bad "$1: $r$k"; fi
}

# ---- 1. subscribers through the fault proxy -------------------------------
c=subscribers
name="subscribers through the fault proxy"
case_clis=; case_proxies=; sublogs=
if start_chat $c --history 20000 --history-age 600; then
    if three_subscribers $c "$name"; then
        publish $c-pub "ws://127.0.0.1:$chat_port/ws"
        check_publisher "$name"
        wait_last 30 $sublogs
        for i in 1 2 3; do
            check_all "$name: sub$i" "$run/$c-sub$i.log" "$run/$c-proxy$i.log"
        done
    fi
    finish_case "$name"
else
    bad "$name: chat_server did not start"
fi

# ---- 2. the publisher through the fault proxy -----------------------------
c=publisher
name="publisher through the fault proxy"
case_clis=; case_proxies=; sublogs=
if start_chat $c --history 20000 --history-age 600; then
    for i in 1 2; do
        start_cli $c-sub$i --url "ws://127.0.0.1:$chat_port/ws" --token sub$i --subscribe recovery \
            --backoff-base 100 --backoff-max 500 --max-attempts 0
        case_clis="$case_clis $cli_pid"; sublogs="$sublogs $run/$c-sub$i.log"
    done
    if ! start_proxy $c-proxy "$seed-$c" --cut-mean 1.5 --stall-prob 0.2 --stall-max 1; then
        bad "$name: the proxy did not start"
    elif ! wait_subscribed 2 $sublogs; then
        bad "$name: the subscribers were not all subscribed within 20 s"
        for l in $sublogs; do tail -n 5 "$l"; done
    else
        case_proxies=$proxy_pid
        publish $c-pub "ws://127.0.0.1:$proxy_port/ws"
        check_publisher "$name"
        k=$(cuts "$run/$c-proxy.log")
        if [ "${k:-0}" -ge 3 ]; then ok "$name: the proxy cut the publisher $k times"
        else bad "$name: the proxy cut the publisher only ${k:-0} times, nothing proven"; fi
        wait_last 30 $sublogs
        for i in 1 2; do
            check_all "$name: sub$i" "$run/$c-sub$i.log"
        done
    fi
    [ -n "$case_proxies" ] || case_proxies=$proxy_pid
    finish_case "$name"
else
    bad "$name: chat_server did not start"
fi

# ---- 3. no history: the gap is reported, never hidden ---------------------
c=nohistory
name="no history: the gap is reported, never hidden"
N=2000
case_clis=; case_proxies=; sublogs=
if start_chat $c --history 0; then
    # A short mean lifetime: the 4 s of publishing see a cut almost surely.
    if start_proxy $c-proxy "$seed-$c" --cut-mean 0.6 --stall-prob 0.2 --stall-max 1; then
        case_proxies=$proxy_pid
        start_cli $c-sub --url "ws://127.0.0.1:$proxy_port/ws" --token sub1 --subscribe recovery \
            --backoff-base 100 --backoff-max 500 --max-attempts 0
        case_clis=$cli_pid; sublog=$run/$c-sub.log
        if ! wait_subscribed 1 "$sublog"; then
            bad "$name: the subscriber was not subscribed within 20 s"; tail -n 5 "$sublog"
        else
            publish $c-pub "ws://127.0.0.1:$chat_port/ws"
            check_publisher "$name"
            # Until the subscriber has the last value or has said it lost
            # the tail (after its next reconnect): at most 15 s.
            end=$(( $(now_ms) + 15000 ))
            while r=$(check_log "$sublog" "$N" honest); crc=$?; [ "$crc" -eq 2 ] && [ "$(now_ms)" -lt "$end" ]; do
                sleep 0.2
            done
            gaps=$(echo "$r" | sed -n 's/.* \([0-9]*\) gaps,.*/\1/p')
            k=$(cuts "$run/$c-proxy.log")
            [ "${gaps:-0}" -ge 1 ] || { crc=1; r="$r; no message was lost, nothing proven"; }
            [ "${k:-0}" -ge 1 ] || { crc=1; r="$r; the proxy never cut"; }
            if [ "$crc" -eq 0 ]; then ok "$name: $r, $k cuts"; else bad "$name: $r, ${k:-0} cuts"; fi
        fi
    else
        bad "$name: the proxy did not start"
    fi
    finish_case "$name"
else
    bad "$name: chat_server did not start"
fi

# ---- Redis: helpers for cases 4 and 5 ------------------------------------
redis_ping() { "$redis_cli" -h 127.0.0.1 -p "$1" ping 2>/dev/null; }

# start_redis [PORT]: a redis-server without persistence on PORT (default a
# free one, tried up to 5 times); sets redis_pid, redis_port.
start_redis() {
    for try in 1 2 3 4 5; do
        rp=${1:-$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
        rlog=$run/redis-$rp-$try.log
        timeout -k 5 170 "$redis_server" --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --dir "$run" \
            --daemonize no > "$rlog" 2>&1 &
        redis_pid=$!; pids="$pids $redis_pid"
        w=0
        while [ $w -lt 100 ] && alive "$redis_pid"; do
            [ "$(redis_ping "$rp")" = PONG ] && { redis_port=$rp; return 0; }
            sleep 0.1; w=$((w + 1))
        done
        stop "$redis_pid" 5
        [ -n "$1" ] && break
    done
    echo "run_recovery: redis-server did not start"; tail -n 5 "$rlog"
    return 1
}

# kill_redis: SIGKILL to the redis-server (under `timeout` $redis_pid).
kill_redis() {
    for k in $(cat "/proc/$redis_pid/task/$redis_pid/children" 2>/dev/null); do kill -KILL "$k" 2>/dev/null; done
    await "$redis_pid" 10
}

# start_pair NAME: redis-server and two chat_servers on it (history as in
# case 1), both with their Redis links up; sets redis_pid, redis_port,
# pid_a, port_a, pid_b, port_b, case_servers, case_redis, stat_ports,
# proxy_targets.
start_pair() {
    case_servers=; case_redis=; stat_ports=; proxy_targets=
    start_redis || return 1
    case_redis=$redis_pid
    for s in a b; do
        chat_bin=$chat_redis start_chat "$1-$s" --redis "127.0.0.1:$redis_port" --history 20000 --history-age 600 ||
            return 1
        case_servers="$case_servers $chat_pid"
        eval "pid_$s=\$chat_pid; port_$s=\$chat_port"
    done
    stat_ports="$port_a $port_b"
    proxy_targets="--target 127.0.0.1:$port_a --target 127.0.0.1:$port_b"
    end=$(( $(now_ms) + 20000 ))
    while [ "$(now_ms)" -lt "$end" ]; do
        [ "$(linked "$port_a")" = 1 ] && [ "$(linked "$port_b")" = 1 ] && return 0
        sleep 0.1
    done
    echo "run_recovery: the chat_servers did not link to Redis within 20 s"
    return 1
}

# linked PORT: 1 when both of the server's Redis links are up.
linked() { stat "$1" 's["redis"]["subscriber"] * s["redis"]["publisher"]'; }

# targets_used PROXYLOG: how many different servers the proxy sent
# connections to.
targets_used() { sed -n 's/.* accepted target \([^ ]*\) .*/\1/p' "$1" | sort -u | wc -l; }

# ---- 4. two servers on one Redis: reconnects land on the other ------------
c=twoservers
name="two chat_servers on one Redis, every reconnect on the other"
N=10000
case_clis=; case_proxies=; sublogs=
if [ -n "$redis_why" ]; then
    if [ -n "$CI" ]; then bad "$name: $redis_why"; else echo "skip $name: $redis_why"; skip=$((skip + 1)); fi
elif start_pair $c; then
    if three_subscribers $c "$name"; then
        publish $c-pub "ws://127.0.0.1:$port_a/ws"
        check_publisher "$name"
        wait_last 30 $sublogs
        for i in 1 2 3; do
            check_all "$name: sub$i" "$run/$c-sub$i.log" "$run/$c-proxy$i.log"
            t=$(targets_used "$run/$c-proxy$i.log")
            [ "$t" -eq 2 ] || bad "$name: sub$i: its proxy used $t server(s), not both"
        done
        # Both servers answered recovers (the reconnects), all of them true.
        ra=$(stat "$port_a" '"%d %d" % (s["history"]["recovered"], s["history"]["not_recovered"])')
        rb=$(stat "$port_b" '"%d %d" % (s["history"]["recovered"], s["history"]["not_recovered"])')
        if [ "${ra% *}" -ge 1 ] 2>/dev/null && [ "${rb% *}" -ge 1 ] && [ "${ra#* }" -eq 0 ] && [ "${rb#* }" -eq 0 ]; then
            ok "$name: recovered on both servers (recovered / not: A $ra, B $rb)"
        else
            bad "$name: recovered / not recovered: A \"$ra\", B \"$rb\" (wanted some on each, none not)"
        fi
    fi
    finish_case "$name"
else
    bad "$name: the servers did not start"
    [ -n "$case_servers" ] && finish_case "$name"
fi

# check_outage FILE N GIVENUP: a subscriber's output when some publishes
# were refused: GIVENUP lists the values the publisher was refused (their
# fate unknown: each may appear, at most once). Values must rise (no
# duplicate, in order); a value that is missing and not in GIVENUP needs a
# "not recovered" line since the previous message; without such a line
# the offset rises by one, or starts a new epoch at 1 (a hub that found
# Redis's new epoch already begun follows it from its start: nothing is
# missing then, which the values show). Prints a summary; exit 0 when
# fine, 1 when wrong.
check_outage() {
    awk -v n="$2" '
    function problem(s) { if (np < 5) why = why (np ? "; " : "") s; np++ }
    FNR == NR { gu[$1] = 1; ngu++; next }
    { sub(/^\[[ 0-9.]*\] /, "") }
    /^not recovered recovery/ { told = 1; notrec++; next }
    /^recovered recovery/ { rec++; next }
    /^connected/ { connects++; next }
    /^msg recovery / {
        off = $3 + 0
        if (!match($0, /"data":-?[0-9]+/)) { problem("no data in: " $0); next }
        d = substr($0, RSTART + 7, RLENGTH - 7) + 0
        count++
        if (d <= prev) { problem("value " d " after " prev " (duplicate or out of order)"); next }
        lost = 0
        for (v = prev + 1; v < d; v++) if (!(v in gu)) { lost++; if (!first) first = v }
        if (lost && !told) problem(lost " value(s) from " first " lost before " d " without \"not recovered\"")
        if (!told && havoff && off != prevoff + 1 && off != 1)
            problem("offset " off " after " prevoff " (value " d " after " prev ") without \"not recovered\"")
        if (lost) gaps++
        prev = d; prevoff = off; havoff = 1; told = 0; first = 0
    }
    END {
        printf "%d messages, %d gaps, %d refused publishes, %d connects, %d recovered, %d not recovered", \
            count, gaps, ngu, connects, rec, notrec
        if (np) printf ": %s", why
        printf "\n"
        exit np ? 1 : 0
    }' "$3" "$1"
}

# ---- 5. Redis killed mid-run, then restarted -------------------------------
c=redisdown
name="Redis killed mid-run and restarted"
N=6000
case_clis=; case_proxies=; sublogs=
if [ -n "$redis_why" ]; then
    if [ -n "$CI" ]; then bad "$name: $redis_why"; else echo "skip $name: $redis_why"; skip=$((skip + 1)); fi
elif start_pair $c; then
    # Cuts a little more often than in 4: reconnects during the outage
    # are what tells a subscriber "not recovered" most surely.
    for i in 1 2; do
        start_proxy $c-proxy$i "$seed-$c-$i" --cut-mean 1.0 --stall-prob 0.2 --stall-max 1 || break
        case_proxies="$case_proxies $proxy_pid"
        start_cli $c-sub$i --url "ws://127.0.0.1:$proxy_port/ws" --token sub$i --subscribe recovery \
            --backoff-base 100 --backoff-max 500 --max-attempts 0
        case_clis="$case_clis $cli_pid"; sublogs="$sublogs $run/$c-sub$i.log"
    done
    if [ "$(echo $case_clis | wc -w)" -ne 2 ]; then
        bad "$name: a proxy did not start"
    elif ! wait_subscribed 2 $sublogs; then
        bad "$name: the subscribers were not all subscribed within 20 s"
        for l in $sublogs; do tail -n 5 "$l"; done
    else
        pub_log=$run/$c-pub.log
        start_cli $c-pub --url "ws://127.0.0.1:$port_a/ws" --token pub --publish recovery --count "$N" \
            --rate "$RATE" --backoff-base 100 --backoff-max 500 --max-attempts 0
        pub_pid=$cli_pid
        sleep 2
        rport=$redis_port
        kill_redis; case_redis=
        sleep 3
        if start_redis "$rport"; then
            case_redis=$redis_pid
        else
            bad "$name: redis-server did not start again on port $rport"
        fi
        await "$pub_pid" 90; pub_rc=$rc
        pub_line=$(sed -n 's/^\[[ 0-9.]*\] \(published .*\)/\1/p' "$pub_log" | tail -n 1)
        gufile=$run/$c-refused.txt
        # "unavailable": refused while Redis was away; "unconfirmed": written
        # just before the kill, its answer lost (it may have been published).
        sed -n 's/^\[[ 0-9.]*\] message \([0-9]*\) given up: .* \(unavailable\|unconfirmed\)$/\1/p' "$pub_log" > "$gufile"
        ngu=$(wc -l < "$gufile")
        others=$(grep -c 'given up' "$pub_log")
        acked=$(echo "$pub_line" | sed -n 's/^published [0-9]* acked \([0-9]*\) .*/\1/p')
        # The publisher's messages while Redis was away: refused, each with "unavailable" (or "unconfirmed").
        if [ "$ngu" -ge 1 ] && [ "$ngu" -eq "$others" ] && [ "${acked:-0}" -ge 1 ] &&
           [ $((${acked:-0} + ngu)) -eq "$N" ]; then
            ok "$name: publishes refused meanwhile (\"unavailable\"): $pub_line, $ngu refused"
        else
            bad "$name: publisher exit $pub_rc, \"$pub_line\", $ngu refused with \"unavailable\" of $others given up"
            tail -n 5 "$pub_log"
        fi
        # Traffic resumed: the last value not refused reaches every subscriber.
        last=$N
        while grep -qx "$last" "$gufile" && [ "$last" -gt 0 ]; do last=$((last - 1)); done
        end=$(( $(now_ms) + 30000 ))
        for l in $sublogs; do
            while [ "$(now_ms)" -lt "$end" ] && ! grep -qE "^\[[ 0-9.]*\] msg recovery .*\"data\":${last}[,}]" "$l"; do
                sleep 0.2
            done
        done
        told=0
        for i in 1 2; do
            l=$run/$c-sub$i.log
            told=$((told + $(grep -c '^\[[ 0-9.]*\] not recovered recovery' "$l")))
            r=$(check_outage "$l" "$N" "$gufile"); crc=$?
            if ! grep -qE "^\[[ 0-9.]*\] msg recovery .*\"data\":${last}[,}]" "$l"; then
                crc=1; r="$r; value $last (the last acked) never arrived: traffic did not resume"
            fi
            if [ "$crc" -eq 0 ]; then ok "$name: sub$i: $r"; else bad "$name: sub$i: $r"; fi
        done
        if [ "$told" -ge 1 ]; then ok "$name: the subscribers were told \"not recovered\" $told time(s)"
        else bad "$name: no subscriber was told \"not recovered\" across the outage"; fi
        if grep -qE 'Sanitizer|runtime error' "$pub_log"; then bad "$name: the publisher's sanitizers reported:"
            grep -E -A5 'Sanitizer|runtime error' "$pub_log" | head -n 20; fi
        a=$(stat "$port_a" 's["redis"]["append_errors"]')
        [ "${a:-0}" -ge 1 ] && ok "$name: server A counted $a refused appends" ||
            bad "$name: server A counted \"$a\" refused appends"
    fi
    finish_case "$name"
else
    bad "$name: the servers did not start"
    [ -n "$case_servers" ] && finish_case "$name"
fi

done_all
