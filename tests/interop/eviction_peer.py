#!/usr/bin/python3
"""Eviction by the example servers, over raw sockets so a
peer can misbehave exactly: stop reading, never answer a ping, send without
reading. Started by run_eviction.sh with the sanitized builds; starts and
stops its own servers (by PID), on free loopback ports, with bounded waits.

echo_server --idle-timeout 2:
  - a peer that goes silent after the handshake (half-open) is closed and
    its fd freed within idle + the close handshake bound (5 s) + slack;
  - so is a peer that sends 1 MiB and never reads;
  - a peer that answers the server's pings, and sends nothing else, stays
    open through three idle timeouts and is still echoed.
chat_server:
  - its default bound on a silent client (idle + close timeout, in
    /api/stats "limits") is at most 30 s, and its ping interval (which
    keeps quiet but live clients) is below the idle timeout;
  - with --idle-timeout 2000 --close-timeout 1000 a half-open client is
    freed (peers gauge and fd count back to where they were) within 3 s +
    slack, and not at once;
  - --max-clients 3: with three clients open a fourth upgrade is answered
    503 with Retry-After, /api/stats still answers 200 (open 3), and once a
    client leaves a new upgrade is accepted.
Prints one line per case, then "Pass: N, fail: N, skip: 0."."""
import argparse
import base64
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time

results = []
procs = []
lock = threading.Lock()


def case(name, fn):
    try:
        fn()
        ok, why = True, ""
    except Exception as e:  # noqa: BLE001 - the case's failure, reported
        ok, why = False, f": {type(e).__name__}: {e}"
    with lock:
        results.append(ok)
        print(("ok   " if ok else "FAIL ") + name + why, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def until(what, pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def holds(pid, server_port, sock):
    """Does process pid still hold the server side of sock's connection (an
    open fd on it)? From /proc/net/tcp: the socket whose local port is the
    server's and remote port is sock's, and its inode among pid's fds."""
    cport = sock.getsockname()[1]
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            x = line.split()
            if int(x[1].split(":")[1], 16) == server_port and int(x[2].split(":")[1], 16) == cport:
                if x[9] in inodes:
                    return True
    return False


def start(cmd, log, pattern):
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    procs.append(p)

    def port():
        if p.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {open(log).read()[-800:]}")
        m = re.search(pattern, open(log).read())
        return m and int(m.group(1))
    return p, until(f"{os.path.basename(cmd[0])} to listen", port, 20)


def stop(p):
    if p.poll() is None:
        p.terminate()
    try:
        return p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait(5)


# ---- a raw WebSocket client ----------------------------------------------

def upgrade(port, path="/", timeout=10):
    """Connects and sends an upgrade; returns (socket, status line, head, rest)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if status.startswith("HTTP/1.1 101"):
        want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        check(want in head, "bad Sec-WebSocket-Accept")
    return s, status, head.decode(errors="replace"), rest


def frame(opcode, payload=b""):
    n = len(payload)
    if n < 126:
        h = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        h = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        h = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return h + b"\0\0\0\0" + payload      # the zero mask key: masking is the identity


def read_frame(s, buf):
    """One server frame (unmasked): (opcode, payload, rest of buf)."""
    while True:
        if len(buf) >= 2:
            n, h = buf[1] & 0x7F, 2
            if n == 126 and len(buf) >= 4:
                n, h = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127 and len(buf) >= 10:
                n, h = struct.unpack("!Q", buf[2:10])[0], 10
            if n < 126 or h > 2:
                if len(buf) >= h + n:
                    return buf[0] & 0x0F, buf[h:h + n], buf[h + n:]
        d = s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        buf += d


def http_get(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body.decode(errors="replace")


# ---- echo_server -----------------------------------------------------------

def echo_cases(binary, run):
    p, port = start([binary, "--port", "0", "--idle-timeout", "2"], os.path.join(run, "echo_server-idle.log"),
                    r"listening on ws://127\.0\.0\.1:(\d+)/")
    bound = 2 + 5 + 5       # idle, the close handshake bound, slack for a loaded machine

    def silent():
        s, status, _, _ = upgrade(port)
        check(status.startswith("HTTP/1.1 101"), f"upgrade answered {status!r}")
        check(holds(p.pid, port, s), "the server holds the peer's socket")
        t0 = time.monotonic()
        until("the silent peer's fd to be freed", lambda: not holds(p.pid, port, s), bound)
        check(time.monotonic() - t0 >= 1.5, "freed before the idle timeout")
        s.close()

    def flooder():
        s, status, _, _ = upgrade(port)
        check(status.startswith("HTTP/1.1 101"), f"upgrade answered {status!r}")
        s.settimeout(0.2)
        msg = frame(2, b"x" * 65536)
        sent = 0
        try:
            while sent < 1 << 20:
                s.sendall(msg)
                sent += len(msg)
        except socket.timeout:
            pass                # the server stopped reading (backpressure): that is enough
        until("the non-reading sender's fd to be freed", lambda: not holds(p.pid, port, s), bound + 5)
        s.close()

    def answers_pings():
        s, status, _, rest = upgrade(port)
        check(status.startswith("HTTP/1.1 101"), f"upgrade answered {status!r}")
        s.settimeout(0.5)
        buf, pings, end = rest, 0, time.monotonic() + 6.5
        while time.monotonic() < end:
            try:
                op, data, buf = read_frame(s, buf)
            except socket.timeout:
                continue
            check(op == 9, f"unexpected opcode {op}")
            pings += 1
            s.sendall(frame(10, data))
        check(pings >= 2, f"{pings} pings in 6.5 s with a 2 s idle timeout")
        s.settimeout(10)
        s.sendall(frame(1, b"still here"))
        while True:
            op, data, buf = read_frame(s, buf)
            if op != 9:
                break
        check(op == 1 and data == b"still here", f"echo {op} {data!r}")
        s.close()

    threads = [threading.Thread(target=case, args=args) for args in [
        ("echo_server: a silent (half-open) peer is closed and its fd freed (--idle-timeout 2)", silent),
        ("echo_server: a peer that sends 1 MiB and never reads is closed and its fd freed", flooder),
        ("echo_server: a peer that answers pings stays open through three idle timeouts", answers_pings)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rc = stop(p)
    case("echo_server: clean exit under ASan/UBSan", lambda: check(rc == 0, f"exit {rc}"))


# ---- chat_server -----------------------------------------------------------

def chat_start(binary, run, name, *args):
    return start([binary, "--port", "0", "--www", "examples/www", *args], os.path.join(run, f"chat-{name}.log"),
                 r"listening on http://127\.0\.0\.1:(\d+)/")


def stats(port):
    status, body = http_get(port, "/api/stats")
    check(status.startswith("HTTP/1.1 200"), f"/api/stats answered {status!r}")
    return json.loads(body)


def join(port, user):
    s, status, _, rest = upgrade(port, f"/ws?token={user}")
    check(status.startswith("HTTP/1.1 101"), f"upgrade answered {status!r}")
    op, data, _ = read_frame(s, rest)
    check(op == 1 and b'"welcome"' in data, f"no welcome: {data!r}")
    return s


def chat_cases(binary, run):
    def default_bound():
        p, port = chat_start(binary, run, "defaults")
        try:
            lim = stats(port)["limits"]
            bound = lim["idle_timeout_ms"] + lim["close_timeout_ms"]
            check(bound <= 30000, f"a half-open client is held up to {bound} ms by default ({lim})")
            check(0 < lim["ping_interval_ms"] < lim["idle_timeout_ms"],
                  f"ping interval {lim['ping_interval_ms']} ms against idle timeout {lim['idle_timeout_ms']} ms: "
                  "a quiet client would be dropped")
        finally:
            rc = stop(p)
        check(rc == 0, f"exit {rc}")

    case("chat_server: by default a half-open client is freed within 30 s (idle + close timeout)", default_bound)

    p, port = chat_start(binary, run, "evict", "--idle-timeout", "2000", "--close-timeout", "1000",
                         "--max-clients", "3")

    def half_open():
        base_peers = stats(port)["peers"]      # the request asking counts itself
        base_fds = fds(p.pid)
        s = join(port, "halfopen")
        check(holds(p.pid, port, s), "the server holds the client's socket")
        check(stats(port)["open"] == 1, "one client open")
        t0 = time.monotonic()
        # It never reads and never answers: only the idle timeout can notice.
        last = []

        def freed():
            last[:] = [stats(port)["peers"], holds(p.pid, port, s), fds(p.pid)]
            return last[0] <= base_peers and not last[1] and last[2] <= base_fds
        try:
            until("the half-open client to be freed", freed, 2 + 1 + 3)
        except AssertionError:
            raise AssertionError(f"not freed in 6 s: peers {last[0]} (was {base_peers}), server holds its socket: "
                                 f"{last[1]}, fds {last[2]} (were {base_fds})") from None
        took = time.monotonic() - t0
        check(took >= 1.5, f"freed after {took:.1f} s, before the idle timeout")
        check(stats(port)["drops"]["idle"] >= 1, "counted as an idle drop")
        print(f"     half-open client freed after {took:.1f} s (idle 2 s + close 1 s)", flush=True)
        s.close()

    case("chat_server: a half-open client is freed within idle + close timeout (2 s + 1 s)", half_open)

    def full():
        clients = [join(port, f"u{i}") for i in range(3)]
        s, status, head, _ = upgrade(port, "/ws?token=late")
        check(status.startswith("HTTP/1.1 503"), f"a 4th upgrade answered {status!r}")
        check(re.search(r"(?im)^retry-after: *\d+\s*$", head), f"no Retry-After in {head!r}")
        s.close()
        st = stats(port)
        check(st["open"] == 3, f"open {st['open']}")
        check(st["refused_busy"] >= 1, f"refused_busy {st['refused_busy']}")
        check(http_get(port, "/")[0].startswith("HTTP/1.1 200"), "the page is served while full")
        clients.pop().close()
        until("a client to leave", lambda: stats(port)["open"] == 2, 10)
        clients.append(join(port, "next"))
        for c in clients:
            c.close()

    case("chat_server --max-clients 3: a 4th upgrade gets 503 + Retry-After, /api/stats still answers", full)
    rc = stop(p)
    case("chat_server: clean exit under ASan/UBSan, no library heap left", lambda: check(rc == 0, f"exit {rc}"))

    cap = 256 * 1024
    p, port = chat_start(binary, run, "budget", "--max-queued-total", str(cap), "--max-outbound", "8M")

    def budget():
        slow = []
        for i in range(3):      # subscribers that never read, with the smallest buffer the kernel allows
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.close()
            s = join(port, f"slow{i}")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(frame(1, b'{"type":"subscribe","payload":{"channel":"feed"}}'))
            slow.append(s)
        pub = join(port, "pub")     # publishes, and reads everything like a good client
        pub.sendall(frame(1, b'{"type":"subscribe","payload":{"channel":"feed"}}'))
        got, stop_reading, buf = [0], threading.Event(), [b""]

        def reader():
            pub.settimeout(0.2)
            while not stop_reading.is_set():
                try:
                    op, data, buf[0] = read_frame(pub, buf[0])
                except socket.timeout:
                    continue
                except (EOFError, OSError):
                    return
                if op == 1 and b'"message"' in data:
                    got[0] += 1
        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.3)
        data = "x" * 30000
        sent, peak = 0, 0
        try:
            for i in range(200):
                pub.sendall(frame(1, json.dumps({"type": "publish", "payload": {"channel": "feed",
                                                 "data": f"{i}:{data}"}}).encode()))
                sent += 1
                if i % 20 == 19:
                    peak = max(peak, stats(port)["queued_total"])
            until("the publisher to get every message", lambda: got[0] >= sent, 30)
            st = stats(port)
            peak = max(peak, st["queued_total"])
        finally:
            stop_reading.set()
            t.join()
        # close frames and one read's gathered output may pass the cap, by little
        check(peak <= cap + 64 * 1024, f"queued_total reached {peak} against a cap of {cap}")
        check(st["drops"]["slow_consumer"] >= 1, f"no slow consumer dropped: {st['drops']}")
        check(got[0] == sent, f"the publisher, who reads, got {got[0]} of {sent}")
        check(st["open"] >= 1, "the publisher was dropped")
        print(f"     6 MB to three readers that never read: queued_total peaked at {peak} bytes "
              f"(cap {cap}), {st['drops']['slow_consumer']} dropped, the reader got all {sent}", flush=True)
        for s in slow + [pub]:
            s.close()

    case("chat_server --max-queued-total: the clients that lag are dropped, the one that reads gets everything",
         budget)

    def ping_flood():
        # A client that pings as fast as it can and never reads: the answers
        # must not pile up (one pong waits for the latest ping), so the
        # library's heap (/api/stats, the allocator hook) stays near its
        # 1 MiB per-client limit, not the many MB one pong per ping held.
        base = stats(port)["heap_bytes"]
        s = join(port, "pinger")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        pings = frame(9) * 4096
        off, sent, peak = 0, 0, 0
        t0 = time.monotonic()
        next_sample = t0
        while time.monotonic() - t0 < 3:
            try:
                n = s.send(pings[off:])
                sent += n
                off = (off + n) % len(pings)
            except BlockingIOError:
                time.sleep(0.001)
            if time.monotonic() >= next_sample:
                peak = max(peak, stats(port)["heap_bytes"] - base)
                next_sample += 0.2
        peak = max(peak, stats(port)["heap_bytes"] - base)
        check(sent >= 6 * 100000, f"only {sent // 6} pings got in")
        check(peak < 1536 * 1024, f"library heap grew by {peak} bytes under {sent // 6} pings")
        print(f"     {sent // 6} pings from a client that never reads: library heap at most {peak} bytes above "
              "the baseline", flush=True)
        s.close()

    case("chat_server: a client flooding pings that never reads holds a bounded heap", ping_flood)
    rc = stop(p)
    case("chat_server (budget): clean exit under ASan/UBSan", lambda: check(rc == 0, f"exit {rc}"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--echo", required=True)
    ap.add_argument("--chat", required=True)
    ap.add_argument("--run", required=True)
    a = ap.parse_args()
    try:
        t = threading.Thread(target=echo_cases, args=(a.echo, a.run))
        t.start()           # the echo cases wait on timeouts: the chat cases run meanwhile
        chat_cases(a.chat, a.run)
        t.join(120)
    except Exception as e:  # noqa: BLE001
        results.append(False)
        print(f"FAIL eviction_peer: {type(e).__name__}: {e}", flush=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    print(f"Pass: {results.count(True)}, fail: {results.count(False)}, skip: 0.", flush=True)
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
