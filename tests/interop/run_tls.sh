#!/bin/sh
# wss:// end to end (examples/tls_openssl.h). A throwaway CA and three
# certificates are made here with the openssl command: a good one (localhost
# and 127.0.0.1), an expired one, one for another name. echo_server and
# client_cli are built with OpenSSL and ASan+UBSan; then:
#   Python websockets over ssl as the client of echo_server --tls-cert and as
#   the server of client_cli wss://, small and 1 MiB messages, and a proxy
#   that forwards the TLS stream one byte per write (tests/interop/tls_peer.py);
#   client_cli refuses the expired certificate, the wrong name (by name and
#   by IP address) and an unknown CA, each with the reason on one line, and
#   connects with --insecure while saying it did not verify;
#   builds without OpenSSL refuse --tls-cert and wss:// with one line;
#   every echo_server exits cleanly on SIGTERM.
# Loopback only, bounded waits, only our own processes stopped (by PID).
# Usage: tests/interop/run_tls.sh BUILD_DIR. Closing line "Pass: N, fail: N, skip: N.".
cd "$(dirname "$0")/../.." || exit 1
. tests/interop/common.sh
py=/usr/bin/python3
command -v openssl >/dev/null 2>&1 || skip_all "the openssl command is missing (Debian: openssl)"
printf '#include <openssl/ssl.h>\n' | $CC -E -x c - >/dev/null 2>&1 || skip_all "OpenSSL headers are missing (Debian: libssl-dev)"
$py -c 'import websockets' 2>/dev/null || skip_all "python3-websockets is missing (tests/install_peers.sh installs it)"

run=$(mktemp -d "$out/run-tls.XXXXXX") || { echo "run_tls: mktemp failed"; summary 0 1 0; }
pass=0; fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
pids=
cleanup() { for p in $pids; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; pids=; }
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- the programs: with TLS (sanitized), and without it ---
tls="-DEXAMPLE_TLS"
$CC $warn $san -D_GNU_SOURCE $tls -I. -Iexamples -o "$run/echo_server" examples/echo_server.c -lssl -lcrypto & b1=$!
$CC $warn $san -D_GNU_SOURCE $tls -I. -Iexamples -o "$run/client_cli" examples/client_cli.c -lssl -lcrypto & b2=$!
$CC $warn -O1 -D_GNU_SOURCE -I. -Iexamples -o "$run/echo_server_plain" examples/echo_server.c & b3=$!
$CC $warn $san -D_GNU_SOURCE $tls -I. -Iexamples -o "$run/chat_server" examples/chat_server.c -lssl -lcrypto & b5=$!
$CC $warn -O1 -D_GNU_SOURCE -I. -Iexamples -o "$run/client_cli_plain" examples/client_cli.c || b4=1
wait $b1 && wait $b2 && wait $b3 && wait $b5 && [ -z "$b4" ] || { echo "run_tls: build failed"; summary 0 1 0; }

# --- a CA and certificates, made now ---
ca=$run/ca
mkdir -p "$ca"
mk() { openssl "$@" >>"$ca/openssl.log" 2>&1 || { echo "run_tls: openssl $1 failed"; cat "$ca/openssl.log"; summary 0 1 0; }; }
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
mk req -x509 $ec -keyout "$ca/ca.key" -out "$ca/ca.pem" -days 2 -subj "/CN=ws_channel test CA"
# leaf NAME DAYS SAN: a certificate signed by the CA (DAYS -1: expired a day ago)
leaf() {
    mk req $ec -keyout "$ca/$1.key" -out "$ca/$1.csr" -subj "/CN=$1"
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$3" > "$ca/$1.ext"
    mk x509 -req -in "$ca/$1.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial -days "$2" \
        -extfile "$ca/$1.ext" -out "$ca/$1.pem"
}
leaf good 2 "DNS:localhost,IP:127.0.0.1"
leaf expired -1 "DNS:localhost,IP:127.0.0.1"
leaf wrong 2 "DNS:wrong.example,IP:192.0.2.1"

# start_tls NAME CERT: echo_server --tls-cert on a free port; sets port_NAME, pid_NAME
start_tls() {
    log=$run/echo-$1.log
    : > "$log"      # exists before the background shell opens it
    "$run/echo_server" --port 0 --tls-cert "$ca/$2.pem" --tls-key "$ca/$2.key" --verbose > "$log" 2>&1 &
    eval "pid_$1=$!"
    pids="$pids $!"
    i=0; p=
    while [ $i -lt 100 ] && [ -z "$p" ]; do
        p=$(sed -n 's|.*listening on wss://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$log")
        [ -n "$p" ] || sleep 0.1
        i=$((i + 1))
    done
    [ -n "$p" ] || { bad "echo_server --tls-cert $2 starts"; cat "$log"; summary $pass $fail 0; }
    eval "port_$1=$p"
}
# stop_tls NAME: SIGTERM, then a clean exit (no leak, no sanitizer report) within 10 s
stop_tls() {
    eval "p=\$pid_$1"
    kill -TERM "$p" 2>/dev/null
    i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p"
    wait "$p"; rc=$?
    [ $rc -eq 0 ] && ok "echo_server ($1 certificate): clean exit under ASan/UBSan" ||
        { bad "echo_server ($1 certificate): exit $rc"; tail -n 30 "$run/echo-$1.log"; }
}
start_tls good good
start_tls expired expired
start_tls wrong wrong

# --- websockets both ways, and the one-byte proxy ---
res=$run/tls_peer.txt
timeout -k 5 400 $py tests/interop/tls_peer.py --echo-port "$port_good" --cafile "$ca/ca.pem" \
    --cert "$ca/good.pem" --key "$ca/good.key" --client-cli "$run/client_cli" > "$res" 2>&1
peer_counts tls_peer "$res" $?
pass=$((pass + pp)); fail=$((fail + ff))

# --- client_cli refuses what it cannot verify, and says why ---
# refused NAME URL WANT [ARG...]: no connection, WANT on an error line, exit 0 (gave up)
refused() {
    name=$1; url=$2; want=$3; shift 3
    o=$run/cli-$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_').txt
    timeout 20 "$run/client_cli" --url "$url" --send hello '{"n":1}' --count 1 --max-attempts 1 "$@" > "$o" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && grep -q "error: TLS handshake with .* failed: certificate verify failed: $want" "$o" &&
        ! grep -q 'message {' "$o" && grep -q 'stopped: ' "$o"; then
        ok "client_cli refuses $name: \"$want\""
    else
        bad "client_cli refuses $name (exit $rc; wanted \"$want\")"; tail -n 8 "$o"
    fi
}
refused "an expired certificate" "wss://localhost:$port_expired/" "certificate has expired" --cafile "$ca/ca.pem"
refused "a certificate for another name" "wss://localhost:$port_wrong/" "hostname mismatch" --cafile "$ca/ca.pem"
refused "a certificate for another IP address" "wss://127.0.0.1:$port_wrong/" "IP address mismatch" --cafile "$ca/ca.pem"
refused "a CA it does not trust (system store)" "wss://localhost:$port_good/" "unable to get local issuer certificate"

# --insecure: connects to the expired one, and says that nothing was verified
o=$run/cli-insecure.txt
timeout 20 "$run/client_cli" --url "wss://localhost:$port_expired/" --insecure --send hello '{"n":1}' --count 1 \
    --max-attempts 1 > "$o" 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q 'message {"type":"hello"' "$o" && grep -q 'NOT verified' "$o" &&
    ok "client_cli --insecure connects to the expired one and says it verified nothing" ||
    { bad "client_cli --insecure (exit $rc)"; tail -n 8 "$o"; }

# a CA file that is not there: one line, exit 2, no connection tried
o=$run/cli-nocafile.txt
timeout 10 "$run/client_cli" --url "wss://localhost:$port_good/" --cafile "$run/none.pem" > "$o" 2>&1; rc=$?
[ $rc -eq 2 ] && [ "$(wc -l < "$o")" -eq 1 ] && grep -q "cannot load the CA file $run/none.pem" "$o" &&
    ok "client_cli: a missing --cafile is one line, exit 2" || { bad "client_cli missing --cafile (exit $rc)"; cat "$o"; }

# the servers saw the refusals as handshake failures, and served on
grep -q 'TLS handshake from a client failed' "$run/echo-expired.log" &&
    ok "echo_server logs the refused handshake (--verbose)" || bad "echo_server logs the refused handshake"
stop_tls good
stop_tls expired
stop_tls wrong

# a server whose key does not match its certificate does not start
o=$run/echo-mismatch.txt
timeout 10 "$run/echo_server" --port 0 --tls-cert "$ca/good.pem" --tls-key "$ca/wrong.key" > "$o" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "private key $ca/wrong.key.*mismatch\|does not match" "$o" && ok "echo_server: a key that does not match is refused" ||
    { bad "echo_server mismatched key (exit $rc)"; cat "$o"; }

# --- without OpenSSL: the TLS options are refused with one line ---
o=$run/plain-echo.txt
timeout 10 "$run/echo_server_plain" --port 0 --tls-cert "$ca/good.pem" --tls-key "$ca/good.key" > "$o" 2>&1; rc=$?
[ $rc -eq 2 ] && [ "$(wc -l < "$o")" -eq 1 ] && grep -q 'needs a build with OpenSSL' "$o" &&
    ok "echo_server without OpenSSL refuses --tls-cert in one line" || { bad "echo_server without OpenSSL (exit $rc)"; cat "$o"; }
o=$run/plain-cli.txt
timeout 10 "$run/client_cli_plain" --url "wss://127.0.0.1:1/" > "$o" 2>&1; rc=$?
[ $rc -eq 2 ] && [ "$(wc -l < "$o")" -eq 1 ] && grep -q 'needs a build with OpenSSL' "$o" &&
    ok "client_cli without OpenSSL refuses wss:// in one line" || { bad "client_cli without OpenSSL (exit $rc)"; cat "$o"; }

# --- the chat demo over https and wss ---
# start_chat NAME ARG...: chat_server --tls-cert (good) on a free port; sets chat_port, chat_pid
start_chat() {
    log=$run/chat-$1.log; shift
    : > "$log"
    "$run/chat_server" --port 0 --www examples/www --tls-cert "$ca/good.pem" --tls-key "$ca/good.key" "$@" > "$log" 2>&1 &
    chat_pid=$!
    pids="$pids $!"
    i=0; chat_port=
    while [ $i -lt 100 ] && [ -z "$chat_port" ]; do
        chat_port=$(sed -n 's|.*listening on https://127\.0\.0\.1:\([0-9]*\)/ (hub at wss://.*|\1|p' "$log")
        [ -n "$chat_port" ] || sleep 0.1
        i=$((i + 1))
    done
    [ -n "$chat_port" ] || { bad "chat_server --tls-cert starts"; cat "$log"; }
}
# stop_chat NAME PID: SIGTERM, a clean exit within 10 s
stop_chat() {
    kill -TERM "$2" 2>/dev/null
    i=0
    while kill -0 "$2" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -0 "$2" 2>/dev/null && kill -KILL "$2"
    wait "$2"; rc=$?
    [ $rc -eq 0 ] && ok "chat_server ($1): clean exit under ASan/UBSan" || { bad "chat_server ($1): exit $rc"; tail -n 30 "$run/chat-$1.log"; }
}
start_chat demo
demo_pid=$chat_pid demo_port=$chat_port
start_chat full --max-clients 1
full_pid=$chat_pid full_port=$chat_port
if [ -n "$demo_port" ] && [ -n "$full_port" ]; then
    o=$run/chat-py.txt
    timeout 60 $py - "$demo_port" "$full_port" "$ca/ca.pem" > "$o" 2>&1 <<'PY'
import asyncio, json, ssl, sys, urllib.request
import websockets
demo, full, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
res = []
def report(ok, what):
    res.append(ok)
    print(("ok   " if ok else "FAIL ") + what, flush=True)
def get(port, path):
    with urllib.request.urlopen(f"https://localhost:{port}{path}", context=ctx, timeout=5) as r:
        return r.status, r.read()
async def welcome(port, user):
    ws = await websockets.connect(f"wss://localhost:{port}/ws?token={user}", ssl=ctx, open_timeout=5)
    m = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return ws, m
async def main():
    st, body = get(demo, "/")
    report(st == 200 and b"<html" in body.lower(), "chat_server: the page over https, verified against the test CA")
    ws, m = await welcome(demo, "alice")
    report(m == {"type": "welcome", "payload": {"user": "alice"}}, f"chat_server: the hub over wss: {m}")
    await ws.send(json.dumps({"type": "subscribe", "payload": {"channel": "news"}}))
    m = json.loads(await asyncio.wait_for(ws.recv(), 5))
    report(m.get("type") == "subscribed", f"chat_server: subscribed over wss: {m}")
    await ws.close()
    # --max-clients 1 over TLS: the one client holds; an upgrade past it is
    # answered 503 through TLS; plain HTTP (/api/stats) still answers.
    ws1, m = await welcome(full, "bob")
    try:
        ws2, _ = await welcome(full, "carol")
        report(False, "chat_server --max-clients 1: a second client was let in")
        await ws2.close()
    except Exception as e:  # noqa: BLE001 - the status is what we look at
        code = getattr(getattr(e, "response", None), "status_code", None) or getattr(e, "status_code", None)
        report(code == 503, f"chat_server --max-clients 1 over TLS: the upgrade past it gets 503 ({e!r})")
    st, body = get(full, "/api/stats")
    report(st == 200 and json.loads(body)["limits"]["max_clients"] == 1,
           "chat_server --max-clients 1 over TLS: /api/stats still answers from the reserve")
    await ws1.close()
try:
    asyncio.run(asyncio.wait_for(main(), 40))
except Exception as e:  # noqa: BLE001
    report(False, f"chat_server over TLS: {type(e).__name__}: {e}")
print(f"Pass: {sum(res)}, fail: {len(res) - sum(res)}, skip: 0.")
PY
    peer_counts chat_tls "$o" $?
    pass=$((pass + pp)); fail=$((fail + ff))
    # Chromium: the page over https, its WebSocket over wss.
    chromium=${CHROMIUM:-/usr/bin/chromium}
    if [ -x "$chromium" ] && command -v node >/dev/null 2>&1 &&
        [ -f tests/browser/node_modules/playwright-core/package.json ]; then
        o=$run/chat-chromium.txt
        timeout 120 node tests/browser/tls.spec.js --url "https://127.0.0.1:$demo_port" --out "$run" \
            --chromium "$chromium" > "$o" 2>&1
        peer_counts chromium_tls "$o" $?
        pass=$((pass + pp)); fail=$((fail + ff))
    elif [ -n "$CI" ]; then
        bad "Chromium over https: Chromium, node or playwright-core is missing"
    else
        echo "skip Chromium over https: Chromium, node or playwright-core is missing"
    fi
fi
[ -n "$demo_pid" ] && stop_chat demo "$demo_pid"
[ -n "$full_pid" ] && stop_chat full "$full_pid"

pids=
[ $fail -eq 0 ] || echo "logs kept in $run"
summary $pass $fail 0
