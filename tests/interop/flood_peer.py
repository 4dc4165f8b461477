#!/usr/bin/python3
"""client_cli against a server that floods 2-byte pings and never reads.
Started by run_client_flood.sh; runs the flooding
server itself (raw sockets, a free loopback port) and the client given by
--client, which it alone stops (by PID).

The server answers the upgrade, then writes empty pings as fast as the
client takes them and never reads a byte, so every pong the client owes
has nowhere to go. The outcome does not depend on timing: the first
phase ends after a fixed number of pings (--pings, 8 million: 16 MB on the
wire) has been consumed by the client (our send queue empty, TIOCOUTQ),
however long that takes on a loaded machine; the client's VmRSS is
sampled from /proc/PID/status throughout and must stay below --max-rss-mib
(64). Without pong coalescing and outbound accounting that counts what is
really held, each pong is a separate allocation and 8 million of them
need several hundred MiB; the client is killed as soon as it passes the
bound (and runs under an address-space limit) so a failure costs little.
The second phase keeps flooding and sends SIGTERM: the client must exit,
with status 0, within --exit-s (10) seconds.

Prints one line per case, then "Pass: N, fail: N, skip: 0."."""
import argparse
import base64
import fcntl
import hashlib
import os
import resource
import signal
import socket
import struct
import subprocess
import termios
import threading
import time

results = []


def report(ok, what):
    results.append(ok)
    print(("ok   " if ok else "FAIL ") + what, flush=True)


class Flooder(threading.Thread):
    def __init__(self, target):
        super().__init__(daemon=True)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.settimeout(0.5)
        self.port = self.lsock.getsockname()[1]
        self.target = target
        self.sent = 0
        self.connections = 0
        self.reached = threading.Event()    # target sent and consumed by the client
        self.stop = threading.Event()

    def handshake(self, s):
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                return False
            buf += d
        key = ""
        for line in buf.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip().decode()
        acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        return True

    def run(self):
        chunk = b"\x89\x00" * 32768
        while not self.stop.is_set():
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            self.connections += 1
            s.settimeout(0.5)
            try:
                if not self.handshake(s):
                    continue
                while not self.stop.is_set():      # never reads again
                    try:
                        n = s.send(chunk)
                    except socket.timeout:
                        continue
                    self.sent += n // 2
                    if self.sent >= self.target and not self.reached.is_set():
                        # Everything written is consumed once our send queue is empty.
                        end = time.monotonic() + 120
                        while time.monotonic() < end and not self.stop.is_set():
                            q = struct.unpack("i", fcntl.ioctl(s, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
                            if q == 0:
                                break
                            time.sleep(0.05)
                        self.reached.set()
            except OSError:
                pass                # the client dropped this link: it reconnects, we count on
            finally:
                s.close()


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True)
    ap.add_argument("--pings", type=int, default=8_000_000)
    ap.add_argument("--max-rss-mib", type=int, default=64)
    ap.add_argument("--exit-s", type=float, default=10.0)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    limit_kib = a.max_rss_mib * 1024

    fl = Flooder(a.pings)
    fl.start()

    def address_space():       # a client that grows without bound hits this, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    log = open(a.log, "w")
    proc = subprocess.Popen([a.client, "--url", f"ws://127.0.0.1:{fl.port}/ws", "--token", "t", "--backoff-base",
                             "100", "--backoff-max", "500"], stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=address_space)
    peak, over, t0 = 0, False, time.monotonic()
    try:
        # Phase 1: a fixed number of pings, however long it takes (bounded for a hung client).
        while not fl.reached.is_set() and proc.poll() is None and time.monotonic() - t0 < 300:
            r = rss_kib(proc.pid)
            peak = max(peak, r)
            if r > limit_kib:
                over = True
                break
            time.sleep(0.1)
        r = rss_kib(proc.pid)
        peak = max(peak, r)
        over = over or r > limit_kib
        took = time.monotonic() - t0
        if proc.poll() is not None:
            report(False, f"client_cli exited ({proc.returncode}) during the flood")
        elif over:
            report(False, f"client_cli RSS {peak / 1024:.1f} MiB passed {a.max_rss_mib} MiB after "
                          f"{fl.sent:,} of {a.pings:,} pings ({took:.1f} s)")
        elif not fl.reached.is_set():
            report(False, f"only {fl.sent:,} of {a.pings:,} pings consumed in 300 s")
        else:
            report(True, f"client_cli consumed {fl.sent:,} flooded pings on {fl.connections} connection(s) in "
                         f"{took:.1f} s with RSS at most {peak / 1024:.1f} MiB (bound {a.max_rss_mib} MiB)")

        # Phase 2: still flooding, SIGTERM.
        if proc.poll() is None:
            time.sleep(0.5)
            ts = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(a.exit_s)
                dt = time.monotonic() - ts
                report(rc == 0, f"client_cli exited {rc} {dt:.1f} s after SIGTERM while flooded "
                                f"(bound {a.exit_s:.0f} s)")
            except subprocess.TimeoutExpired:
                report(False, f"client_cli still running {a.exit_s:.0f} s after SIGTERM while flooded")
        else:
            report(False, "client_cli was not running for the SIGTERM case")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        fl.stop.set()
        fl.join(5)
    print(f"Pass: {results.count(True)}, fail: {results.count(False)}, skip: 0.", flush=True)
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
