#!/usr/bin/python3
"""The soak test: chat_server under churn for a fixed time, then
the same with two chat_servers joined by Redis while Redis is killed and
restarted and stopped (SIGSTOP) for a while. Started by run_soak.sh (short,
inside `make test`) and by `make soak` (SOAK_SECONDS, 1800 by default).

The load is tests/interop/soak_load.c (see its header: steady subscribers
of numbered messages, a publisher, bursts of churners, slow consumers,
clients that vanish with a reset, protocol garbage). This script starts the
servers (and a private redis-server on a free loopback port), runs the
load, and every second samples each server: VmRSS (/proc/PID/status), the
library's heap (chat_server's counting allocator, /api/stats heap_bytes),
open fds (/proc/PID/fd), the hub's gauges (/api/stats), and whether a fresh
client is answered (upgrade, then the welcome, within 5 s).

What must hold:
  - a fresh client was answered at every sample;
  - soak_load's own cases: every well-behaved subscriber got every message
    it was owed, in order, no duplicate (across Redis: not the messages
    published while Redis was disrupted, which Redis cannot carry); every
    churner was served; every garbage connection was closed by the server;
  - after the load, each server returns to its baseline (measured before
    the load) within the documented tolerance, once idle + close timeout
    have passed (and, with Redis, the presence TTL, so a user whose leave
    Redis lost while it was away is forgotten): no client left (open 0, peers 1: the stats request
    itself), no subscription, no queued byte; library heap at most
    HEAP_TOLERANCE (64 KiB) above the baseline (tables keep some
    capacity) once the channel history the server keeps by design is
    taken out (/api/stats history.bytes: the messages a reconnecting
    client may still recover, bounded by --history-bytes); fds at most FD_TOLERANCE (1) above; RSS at most
    RSS_TOLERANCE_MIB (16 MiB) above the baseline (malloc keeps some
    freed memory);
  - with Redis: both servers noticed the stop (redis.stalls) and are linked
    again at the end.
Writes the samples as CSV and, with python3-matplotlib, a plot of RSS,
heap, connections and fds over time (PNG) under --out. Prints one line
per case and greatest's summary line. 127.0.0.1 only; every process it
starts is stopped by PID."""
import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

HEAP_TOLERANCE = 64 * 1024
FD_TOLERANCE = 1
RSS_TOLERANCE_MIB = 16

results = []
procs = []


def report(ok, what):
    results.append(bool(ok))
    print(("ok   " if ok else "FAIL ") + what, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def mono_ms():
    return int(time.monotonic() * 1000)     # CLOCK_MONOTONIC, as soak_load's net_now_ms()


def http_get(port, path, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        buf = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
    finally:
        s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n")[0].decode(errors="replace"))
    return json.loads(body)


def fresh_client(port, timeout=5.0):
    """Upgrade and read the welcome; the time it took in ms, or None."""
    t0 = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return None
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws?token=fresh HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b'"welcome"' not in buf:
            if time.monotonic() - t0 > timeout:
                return None
            d = s.recv(4096)
            if not d:
                return None
            buf += d
        if not buf.startswith(b"HTTP/1.1 101"):
            return None
        s.sendall(b"\x88\x82\0\0\0\0\x03\xe8")     # close 1000 (zero mask key)
        return (time.monotonic() - t0) * 1000
    except OSError:
        return None
    finally:
        s.close()


def status_kib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def nfds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Server:
    def __init__(self, name, binary, out, args):
        self.name = name
        self.log = os.path.join(out, f"chat_server-{name}.log")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([binary, "--port", "0", "--www", "examples/www", *args],
                                         stdout=log, stderr=subprocess.STDOUT)
        procs.append(self.proc)
        deadline = time.monotonic() + 20
        self.port = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", open(self.log).read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if not self.port:
            raise RuntimeError(f"chat_server {name} did not start: {open(self.log).read()[-500:]}")
        self.samples = []
        self.fresh_failures = 0

    def sample(self, t):
        row = {"t": t, "rss_kib": status_kib(self.proc.pid), "fds": nfds(self.proc.pid)}
        try:
            st = http_get(self.port, "/api/stats")
        except Exception as e:  # noqa: BLE001 - recorded as a missing sample
            st = {}
            row["stats_error"] = str(e)
        for k in ("heap_bytes", "peers", "open", "subscriptions", "channels", "bytes_queued"):
            row[k] = st.get(k, -1)
        row["history_bytes"] = st.get("history", {}).get("bytes", 0)
        row["drops"] = st.get("drops", {})
        row["redis"] = st.get("redis", {})
        row["fresh_ms"] = fresh_client(self.port)
        if row["fresh_ms"] is None:
            self.fresh_failures += 1
        self.samples.append(row)
        return row

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


class Redis:
    def __init__(self, binary, out):
        self.binary, self.out, self.port, self.proc, self.starts = binary, out, free_port(), None, 0

    def start(self):
        self.starts += 1
        log = open(os.path.join(self.out, f"redis-{self.starts}.log"), "w")
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", self.out, "--protected-mode", "yes"],
                                     stdout=log, stderr=subprocess.STDOUT)
        procs.append(self.proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                s.sendall(b"PING\r\n")
                ok = s.recv(64).startswith(b"+PONG")
                s.close()
                if ok:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def plot(servers, windows, t0, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"     no plot: python3-matplotlib is not installed (Debian: apt-get install python3-matplotlib)",
              flush=True)
        return
    fig, ax = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    for s, color in zip(servers, ["tab:blue", "tab:orange"]):
        t = [r["t"] for r in s.samples]
        ax[0].plot(t, [r["rss_kib"] / 1024 for r in s.samples], color=color, label=f"server {s.name}")
        ax[1].plot(t, [r["heap_bytes"] / 1024 for r in s.samples], color=color, label=f"server {s.name}")
        ax[2].plot(t, [r["open"] for r in s.samples], color=color, label=f"open, server {s.name}")
        ax[2].plot(t, [r["subscriptions"] for r in s.samples], color=color, linestyle=":",
                   label=f"subscriptions, server {s.name}")
        ax[3].plot(t, [r["fds"] for r in s.samples], color=color, label=f"server {s.name}")
    for a, lab in zip(ax, ["RSS (MiB)", "library heap (KiB)", "connections", "open fds"]):
        a.set_ylabel(lab)
        a.grid(True, alpha=0.3)
        a.legend(loc="upper right", fontsize=7)
        for w0, w1, what in windows:
            a.axvspan((w0 - t0) / 1000, (w1 - t0) / 1000, color="orange", alpha=0.2)
    if windows:
        ax[0].text(0.01, 0.95, "shaded: " + ", ".join(w[2] for w in windows), transform=ax[0].transAxes,
                   fontsize=7, va="top")
    ax[3].set_xlabel("seconds")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"     plot: {path}", flush=True)


def write_csv(servers, path):
    with open(path, "w") as f:
        f.write("server,t,rss_kib,heap_bytes,fds,peers,open,subscriptions,channels,bytes_queued,fresh_ms\n")
        for s in servers:
            for r in s.samples:
                f.write(f"{s.name},{r['t']:.1f},{r['rss_kib']},{r['heap_bytes']},{r['fds']},{r['peers']},{r['open']},"
                        f"{r['subscriptions']},{r['channels']},{r['bytes_queued']},"
                        f"{'' if r['fresh_ms'] is None else round(r['fresh_ms'], 1)}\n")


def run(a, mode):
    out = a.out
    tag = f"{mode}"
    redis = None
    windows = []            # (start_ms, end_ms, what)
    win_path = os.path.join(out, f"windows-{tag}.txt")
    open(win_path, "w").close()
    srv_args = ["--max-outbound", "256K"]
    if a.idle_ms:
        srv_args += ["--idle-timeout", str(a.idle_ms), "--close-timeout", str(a.close_ms)]
    idle_ms = a.idle_ms or 40000
    close_ms = a.close_ms if a.idle_ms else 3000
    if mode == "redis":
        redis = Redis(a.redis_server, out)
        redis.start()
        # Leaves lost while Redis is disrupted are forgotten by the TTL:
        # within 4/3 of it, well inside the settling time below.
        ttl_s = max(1, int((idle_ms + close_ms) / 1000 * 0.6))
        srv_args += ["--redis", f"127.0.0.1:{redis.port}", "--presence-ttl", str(ttl_s)]
    servers = [Server("A", a.server, out, srv_args)]
    if mode == "redis":
        servers.append(Server("B", a.server, out, srv_args))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(http_get(s.port, "/api/stats").get("redis", {}).get("publisher") == 1 and
                   http_get(s.port, "/api/stats").get("redis", {}).get("subscriber") == 1 for s in servers):
                break
            time.sleep(0.1)

    t0 = mono_ms()
    base = [s.sample(0.0) for s in servers]
    load_log = os.path.join(out, f"soak_load-{tag}.txt")
    cmd = [a.load, "--port", str(servers[0].port), "--seconds", str(a.seconds), "--windows", win_path,
           "--vanish-ms", str(idle_ms + close_ms + 2000)]
    if mode == "redis":
        cmd += ["--port2", str(servers[1].port)]
    print(f"== {mode}: {a.seconds} s; " + " ".join(os.path.basename(c) if c == a.load else c for c in cmd), flush=True)
    load = subprocess.Popen(cmd, stdout=open(load_log, "w"), stderr=subprocess.STDOUT)
    procs.append(load)

    # Disruptions of Redis (the long run: a kill and restart, then a 20 s stop).
    plan = []
    if mode == "redis":
        plan = [(0.2 * a.seconds, "kill"), (0.5 * a.seconds, "stop")]
    stalls_before = [s.samples[0]["redis"].get("stalls", 0) for s in servers]
    limit = a.seconds + 120         # soak_load ends by itself; this bounds a hang
    next_t = 1.0

    def wait_sampling(seconds):     # sleeps, sampling every second meanwhile
        nonlocal next_t
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = (mono_ms() - t0) / 1000
            if t >= next_t:
                for s in servers:
                    s.sample(t)
                next_t += 1.0
            time.sleep(0.05)

    while load.poll() is None and (mono_ms() - t0) / 1000 < limit:
        el = (mono_ms() - t0) / 1000
        if plan and el >= plan[0][0]:
            _, what = plan.pop(0)
            w0 = mono_ms()
            if what == "kill":
                redis.kill()
                wait_sampling(2.0)
                redis.start()
                windows.append((w0, mono_ms(), "Redis killed and restarted"))
            else:
                os.kill(redis.proc.pid, signal.SIGSTOP)
                wait_sampling(a.stop_s)
                os.kill(redis.proc.pid, signal.SIGCONT)
                windows.append((w0, mono_ms(), f"Redis stopped {a.stop_s:.0f} s"))
            with open(win_path, "w") as f:
                for w in windows:
                    f.write(f"{w[0]} {w[1]}\n")
            continue
        if el >= next_t:
            for s in servers:
                s.sample(el)
            next_t += 1.0
        time.sleep(0.05)
    if load.poll() is None:
        load.kill()
        load.wait(5)
        report(False, f"{mode}: soak_load did not end in time")
    # soak_load's own cases
    text = open(load_log).read()
    figures = {}
    for line in text.splitlines():
        m = re.match(r"(ok  |FAIL) (.*)", line)
        if m:
            report(m.group(1) == "ok  ", f"{mode}: {m.group(2)}")
        m = re.match(r"soak_load: (\{.*\})$", line)
        if m:
            figures = json.loads(m.group(1))
    if not re.search(r"^Pass: \d+, fail: 0", text, re.M) or load.returncode != 0:
        report(False, f"{mode}: soak_load exit {load.returncode}: {text[-600:]}")
    load_end = mono_ms()

    # Settling: every client is gone; silent ones after idle + close timeout.
    settle = (idle_ms + close_ms) / 1000 + 15
    while (mono_ms() - load_end) / 1000 < settle:
        el = (mono_ms() - t0) / 1000
        rows = [s.sample(el) for s in servers]
        if all(r["open"] == 0 and r["peers"] <= 1 and r["subscriptions"] == 0 and r["bytes_queued"] == 0
               for r in rows):
            break
        time.sleep(1.0)
    settled_s = (mono_ms() - load_end) / 1000
    final = [s.samples[-1] for s in servers]

    for s, b, f in zip(servers, base, final):
        peak = max(s.samples, key=lambda r: r["rss_kib"])
        peak_heap = max(r["heap_bytes"] for r in s.samples)
        peak_fds = max(r["fds"] for r in s.samples)
        peak_open = max(r["open"] for r in s.samples)
        fresh = [r["fresh_ms"] for r in s.samples if r["fresh_ms"] is not None]
        print(f"     server {s.name}: {len(s.samples)} samples; RSS {b['rss_kib'] / 1024:.1f} MiB before, peak "
              f"{peak['rss_kib'] / 1024:.1f}, final {f['rss_kib'] / 1024:.1f}; heap {b['heap_bytes']} B before, "
              f"peak {peak_heap}, final {f['heap_bytes']}; fds {b['fds']} before, peak {peak_fds}, final {f['fds']}; "
              f"open peak {peak_open}; fresh client p50 {sorted(fresh)[len(fresh) // 2] if fresh else -1:.1f} ms, "
              f"max {max(fresh) if fresh else -1:.1f} ms; drops {f['drops']}", flush=True)
        report(s.fresh_failures == 0, f"{mode}: server {s.name}: a fresh client was answered at every sample "
                                      f"({len(s.samples) - s.fresh_failures} of {len(s.samples)})")
        report(f["open"] == 0 and f["peers"] <= 1 and f["subscriptions"] == 0 and f["bytes_queued"] == 0,
               f"{mode}: server {s.name}: every client gone {settled_s:.1f} s after the load (open {f['open']}, "
               f"peers {f['peers']}, subscriptions {f['subscriptions']}, queued {f['bytes_queued']})")
        report(0 <= f["heap_bytes"] - f["history_bytes"] <= b["heap_bytes"] + HEAP_TOLERANCE,
               f"{mode}: server {s.name}: library heap back to baseline: {f['heap_bytes']} B, of which "
               f"{f['history_bytes']} B channel history kept for recovery (baseline {b['heap_bytes']} B + "
               f"{HEAP_TOLERANCE} B tolerance; peak {peak_heap} B)")
        report(0 <= f["fds"] <= b["fds"] + FD_TOLERANCE,
               f"{mode}: server {s.name}: fds back to baseline: {f['fds']} (baseline {b['fds']} + {FD_TOLERANCE})")
        report(0 <= f["rss_kib"] <= b["rss_kib"] + RSS_TOLERANCE_MIB * 1024,
               f"{mode}: server {s.name}: RSS back near baseline: {f['rss_kib'] / 1024:.1f} MiB (baseline "
               f"{b['rss_kib'] / 1024:.1f} MiB + {RSS_TOLERANCE_MIB} MiB; peak {peak['rss_kib'] / 1024:.1f} MiB)")
        if mode == "redis":
            r = f["redis"]
            report(r.get("subscriber") == 1 and r.get("publisher") == 1 and
                   r.get("stalls", 0) > stalls_before[servers.index(s)],
                   f"{mode}: server {s.name}: noticed the stop (stalls {r.get('stalls')}) and is linked again "
                   f"(connects {r.get('connects')}, dropped {r.get('dropped')}, abandoned {r.get('abandoned')})")
    if figures:
        print(f"     figures ({mode}): {figures.get('connections')} connections opened {figures.get('opened')}, "
              f"{figures.get('published')} messages published, {figures.get('delivered')} delivered to the steady "
              f"subscribers", flush=True)
    write_csv(servers, os.path.join(out, f"soak-{tag}.csv"))
    plot(servers, windows, t0, os.path.join(out, f"soak-{tag}.png"),
         f"chat_server soak ({mode}, {a.seconds} s): RSS, library heap, connections, fds")
    rcs = [s.stop() for s in servers]
    report(rcs == [0] * len(servers), f"{mode}: chat_server exit codes {rcs} (0: no library heap left)")
    if redis:
        redis.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="chat_server (optimized; with Redis for --mode redis)")
    ap.add_argument("--load", required=True, help="soak_load")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--mode", action="append", choices=["single", "redis"])
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    ap.add_argument("--stop-s", type=float, default=20.0, help="how long Redis is stopped (SIGSTOP)")
    ap.add_argument("--idle-ms", type=int, default=0, help="chat_server --idle-timeout (0: its default)")
    ap.add_argument("--close-ms", type=int, default=1000)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    try:
        for mode in a.mode or ["single"]:
            run(a, mode)
    except Exception as e:  # noqa: BLE001
        report(False, f"soak: {type(e).__name__}: {e}")
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except OSError:
                    pass
                p.kill()
                p.wait(5)
    print(f"Pass: {results.count(True)}, fail: {results.count(False)}, skip: 0.", flush=True)
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
