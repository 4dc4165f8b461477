#!/usr/bin/python3
"""Two chat_server processes joined through Redis pub/sub (issue: scale past
one process). Started by run_redis.sh; runs everything itself, with bounded
waits, and stops only the processes it started:

  - a private redis-server on a free loopback port (no persistence), as our
    own child: never the system's Redis service;
  - two chat_server processes (the sanitized build given by --server) with
    --redis pointing at it;
  - Python websockets clients on both.

Cases: both servers link up; channel interest follows subscriptions
(PUBSUB CHANNELS / NUMSUB); a broadcast published through one process
reaches the subscribers of both exactly once, with the same position
(offset and epoch) in both: the servers run with history, so Redis numbers
channel messages for both (shared positions, redis_bridge.h);
send_to_user reaches a user connected to the other process; the bridge's
user channels are out of reach of clients; Redis goes away (a publish to a
channel is refused with "unavailable" and reaches nobody, a subscribe that
needs Redis is confirmed "recovered":false) and comes back on the same port
empty (both servers reconnect and resubscribe, every live subscriber is
told it may have lost messages, and delivery resumes exactly once in the
new epoch); Redis is stopped (SIGSTOP) and both servers take their links
down within seconds, refuse and count publishes instead of piling them up,
and relink after SIGCONT without delivering anything late, positions going
on where they were; both servers exit cleanly (no sanitizer report, no
library heap left).

With --bench BIN it measures instead: the same Redis and two servers (an
optimized build), then BIN (tests/interop/redis_bench.c) with --clients N
spread over both; its lines are passed through.

Prints "ok NAME" / "FAIL NAME: why" per case and, last, greatest's summary
line. 127.0.0.1 only."""
import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import websockets

from envelope_util import case as shared_case, check, check_subscribed, env, recv, nothing_more as _nothing_more, \
    positioned, results, summary


async def nothing_more(ws, wait=0.5):
    await _nothing_more(ws, wait)


procs = []          # every process we started, for the final cleanup


async def case(name, coro):
    return await shared_case(name, coro, 60)


async def exactly_once(clients, want, wait=0.5):
    """Each client gets `want` now (with a position when it is a channel
    message), and nothing more within `wait` seconds. Returns the position
    (offset, epoch) every client got it at, the same for all (None for a
    message to no channel)."""
    channel = want.get("payload", {}).get("channel")
    got = {}
    for name, ws in clients:
        m = await recv(ws, timeout=5)
        check(positioned(m, channel) == want, f"{name} got {m!r}, wanted {want!r}")
        got[name] = (m.get("offset"), m.get("epoch"))
    await asyncio.gather(*(nothing_more(ws, wait) for _, ws in clients))
    # Shared positions: numbered once, by Redis, for every process.
    check(len(set(got.values())) == 1, f"positions differ between subscribers (and servers): {got!r}")
    return next(iter(got.values()))


async def refused_unavailable(ws):
    """The answer to a publish while Redis cannot number it: the error
    "unavailable" (chat_server's answer to the hub's WSCH_ERR_STATE)."""
    e = await recv(ws, timeout=5)
    check(e["type"] == "error" and e["payload"].get("code") == "unavailable", f"got {e!r}, wanted the error "
          "\"unavailable\"")


async def told_lost(clients, timeout=10):
    """Every client gets the unasked confirmation that says messages may
    have been lost: "subscribed" with "recovered":false, at offset 0 (the
    epoch is each process's own until the channel's next message).
    Returns the epochs."""
    got = {}
    for name, ws in clients:
        try:
            m = await recv(ws, timeout=timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{name} got nothing within {timeout} s: not told that messages may have been "
                                 "lost") from None
        p = m.get("payload", {})
        check(m["type"] == "subscribed" and p.get("recovered") is False, f"{name} got {m!r}, wanted "
              "\"subscribed\" with \"recovered\":false")
        check(p.get("offset") == 0, f"{name} told at {p!r}, wanted offset 0")
        got[name] = p.get("epoch")
    return got


async def until(what, pred, timeout=10, step=0.05):
    """Polls pred() (sync) until it is true; bounded."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        await asyncio.sleep(step)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Redis:
    def __init__(self, server, cli, run):
        self.server, self.cli, self.run = server, cli, run
        self.port = None
        self.proc = None
        self.starts = 0

    def start(self, port=None):
        for _ in range(5):
            p = port or free_port()
            self.starts += 1
            log = open(os.path.join(self.run, f"redis-{self.starts}.log"), "w")
            self.proc = subprocess.Popen(
                [self.server, "--port", str(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", self.run, "--daemonize", "no", "--protected-mode", "yes"],
                stdout=log, stderr=subprocess.STDOUT)
            procs.append(self.proc)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.call("PING", port=p) == "PONG":
                    self.port = p
                    return
                time.sleep(0.05)
            self.stop()
            if port:
                break
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def call(self, *args, port=None):
        r = subprocess.run([self.cli, "-h", "127.0.0.1", "-p", str(port or self.port), *args],
                           capture_output=True, text=True, timeout=5)
        return r.stdout.strip()

    def channels(self, pattern="wsch:*"):
        """The bridge's channels in Redis (the bridge's own probe channel aside)."""
        return set(x for x in self.call("PUBSUB", "CHANNELS", pattern).splitlines() if x and x != "wsch:#health")

    def numsub(self, channel):
        out = self.call("PUBSUB", "NUMSUB", channel).splitlines()
        return int(out[1]) if len(out) == 2 else -1


class Server:
    """A chat_server with --redis; port 0: a free one (read from its log);
    args: more options (redis_presence_peer.py gives --presence-ttl)."""
    def __init__(self, binary, www, run, name, redis_port, args=(), port=0):
        self.name = name
        self.log = os.path.join(run, f"chat_server-{name}.log")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [binary, "--port", str(port), "--www", www, "--redis", f"127.0.0.1:{redis_port}", *args],
                stdout=log, stderr=subprocess.STDOUT)
        procs.append(self.proc)
        self.base = None

    async def started(self):
        def port():
            if self.proc.poll() is not None:
                raise RuntimeError(f"chat_server {self.name} exited: {self.tail()}")
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", open(self.log).read())
            return m and m.group(1)
        p = await until(f"chat_server {self.name} to listen", port, timeout=15)
        self.base = f"http://127.0.0.1:{p}"
        self.ws_url = f"ws://127.0.0.1:{p}/ws"

    def tail(self):
        return open(self.log).read()[-1500:]

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=5) as r:
            return r.status, r.read().decode()

    def stats(self):
        return json.loads(self.get("/api/stats")[1])

    def notify(self, **q):
        return json.loads(self.get("/api/notify?" + urllib.parse.urlencode(q))[1])

    async def connect(self, user):
        ws = await websockets.connect(self.ws_url + "?token=" + user)
        w = await recv(ws, "welcome")
        check(w["payload"] == {"user": user}, f"welcome {w!r}")
        return ws

    async def joined(self, user, channel):
        ws = await self.connect(user)
        await ws.send(env("subscribe", {"channel": channel}))
        check_subscribed(await recv(ws), channel)
        return ws

    def linked(self):
        r = self.stats().get("redis", {})
        return r.get("subscriber") == 1 and r.get("publisher") == 1

    def kill(self):
        """SIGKILL (no word to anyone, as a crash), to this process only; waits for it."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        """SIGTERM; the exit code (0: clean, no sanitizer report, no heap left)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--www", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    ap.add_argument("--redis-cli", default="/usr/bin/redis-cli")
    ap.add_argument("--bench", help="run this redis_bench binary instead of the cases")
    ap.add_argument("--clients", type=int, default=1000)
    a = ap.parse_args()

    redis = Redis(a.redis_server, a.redis_cli, a.run)
    redis.start()
    sa = Server(a.server, a.www, a.run, "A", redis.port)
    sb = Server(a.server, a.www, a.run, "B", redis.port)
    socks = []

    async def both_linked():
        await sa.started()
        await sb.started()
        await until("both servers linked to Redis", lambda: sa.linked() and sb.linked())

    if not await case("two chat_servers start and link to Redis (subscriber and publisher each)", both_linked()):
        return
    if a.bench:
        await bench(a, redis, sa, sb)
        return

    async def interest():
        a1 = await sa.joined("alice", "news")
        socks.append(a1)
        await until("wsch:news and wsch:#user:alice in PUBSUB CHANNELS",
                    lambda: {"wsch:news", "wsch:#user:alice"} <= redis.channels())
        check(redis.numsub("wsch:news") == 1, "one process listens to news")
        b1 = await sb.joined("bob", "news")
        socks.append(b1)
        await until("two processes on wsch:news", lambda: redis.numsub("wsch:news") == 2)
        # a second subscriber in the same process asks Redis for nothing more
        b2 = await sb.joined("bea", "news")
        check(redis.numsub("wsch:news") == 2, "still two processes on wsch:news")
        await b2.send(env("subscribe", {"channel": "sports"}))
        await recv(b2, "subscribed")
        await until("wsch:sports", lambda: "wsch:sports" in redis.channels())
        # the last subscriber leaves: by unsubscribing, by disconnecting
        await b2.send(env("unsubscribe", {"channel": "sports"}))
        await recv(b2, "unsubscribed")
        await until("wsch:sports gone", lambda: "wsch:sports" not in redis.channels())
        await b2.close()
        await b1.close()
        await until("only process A on wsch:news, no bob, no bea",
                    lambda: redis.numsub("wsch:news") == 1 and not ({"wsch:#user:bob", "wsch:#user:bea"}
                                                                    & redis.channels()))
        await a1.close()
        await until("no wsch:* channel left", lambda: not redis.channels())
        st = sa.stats()["bridge"]
        check(st["channels"] == 0, f"bridge channels {st!r}")

    await case("channel interest follows subscriptions (PUBSUB CHANNELS, NUMSUB)", interest())

    clients = {}
    last_pos = {}       # channel: (offset, epoch) of its last message

    async def setup_four():
        clients["a1"] = await sa.joined("ann", "news")
        clients["a2"] = await sa.joined("amy", "news")
        clients["b1"] = await sb.joined("ben", "news")
        clients["b2"] = await sb.joined("bob", "news")
        clients["a3"] = await sa.joined("al", "other")
        clients["b3"] = await sb.joined("bo", "other")
        await until("both processes on wsch:news", lambda: redis.numsub("wsch:news") == 2)

    async def broadcast_once():
        await setup_four()
        subs = [(k, clients[k]) for k in ("a1", "a2", "b1", "b2")]
        await clients["a1"].send(env("publish", {"channel": "news", "data": "one"}))
        o1, e1 = await exactly_once(subs, {"type": "message",
                                           "payload": {"channel": "news", "from": "ann", "data": "one"}})
        await clients["b2"].send(env("publish", {"channel": "news", "data": "two"}))
        o2, e2 = await exactly_once(subs, {"type": "message",
                                           "payload": {"channel": "news", "from": "bob", "data": "two"}})
        # Shared positions: delivery happens when Redis has numbered it, so
        # the broadcast itself reaches nobody yet.
        r = sb.notify(channel="news", text="three")
        check(r == {"delivered": 0}, f"notify answered {r!r} (delivered once numbered, not by the broadcast)")
        o3, e3 = await exactly_once(subs, {"type": "notification",
                                           "payload": {"channel": "news", "from": "server", "text": "three"}})
        check(e1 == e2 == e3 and o2 == o1 + 1 and o3 == o2 + 1,
              f"one epoch and consecutive offsets across both servers' publishes: {(o1, e1), (o2, e2), (o3, e3)}")
        last_pos["news"] = (o3, e3)
        await nothing_more(clients["a3"], 0.1)
        await nothing_more(clients["b3"], 0.1)
        sta, stb = sa.stats(), sb.stats()
        check(sta["bridge"]["appended"] >= 1 and stb["bridge"]["appended"] >= 1 and sta["redis"]["appended"] >= 1
              and stb["redis"]["appended"] >= 1 and sta["redis"]["shared"] is True,
              f"both appended through Redis: {sta['bridge']} {sta['redis']} {stb['bridge']} {stb['redis']}")
        check(sta["bridge"]["refused"] == 0 and stb["bridge"]["refused"] == 0, "nothing refused")

    await case("a broadcast through one process reaches subscribers on both exactly once", broadcast_once())

    async def to_user():
        c1 = clients["carol 1"] = await sb.connect("carol")
        c2 = clients["carol 2"] = await sb.connect("carol")
        d1 = clients["dave"] = await sa.connect("dave")
        await until("wsch:#user:carol and wsch:#user:dave",
                    lambda: {"wsch:#user:carol", "wsch:#user:dave"} <= redis.channels())
        await d1.send(env("direct", {"to": "carol", "data": "psst"}))
        want = {"type": "direct", "payload": {"from": "dave", "to": "carol", "data": "psst"}}
        await exactly_once([("carol 1", c1), ("carol 2", c2), ("dave", d1)], want)
        r = sa.notify(user="carol", text="hi")
        check(r == {"delivered": 0}, f"notify answered {r!r}: carol is not on A")
        await exactly_once([("carol 1", c1), ("carol 2", c2)],
                           {"type": "notification", "payload": {"to": "carol", "from": "server", "text": "hi"}})
        await nothing_more(d1, 0.1)

    await case("send_to_user reaches a user connected to the other process", to_user())

    async def private():
        x = await sa.connect("eve")
        socks.append(x)
        await x.send(env("subscribe", {"channel": "#user:carol"}))
        e = await recv(x)
        check(e["type"] == "error" and e["payload"]["code"] == "bad_channel", f"got {e!r}")
        await x.send(env("publish", {"channel": "#user:carol", "data": 1}))
        e = await recv(x)
        check(e["type"] == "error", f"got {e!r}")

    await case("a client can neither join nor publish into a user's bridge channel", private())

    async def outage():
        subs = [(k, clients[k]) for k in ("a1", "a2", "b1", "b2")]
        port = redis.port
        before = sa.stats()
        redis.stop()
        await until("both servers notice Redis is gone",
                    lambda: sa.stats()["redis"]["subscriber"] == 0 and sb.stats()["redis"]["subscriber"] == 0)
        # Nothing can be numbered: the publish is refused and reaches nobody.
        await clients["a1"].send(env("publish", {"channel": "news", "data": "while down"}))
        await refused_unavailable(clients["a1"])
        await asyncio.gather(*(nothing_more(ws, 0.3) for _, ws in subs))
        st = sa.stats()
        check(st["bridge"]["append_errors"] > before["bridge"]["append_errors"] and
              st["redis"]["append_errors"] > before["redis"]["append_errors"],
              f"the refusal was not counted: {st['bridge']} {st['redis']}")
        try:
            sa.get("/api/notify?" + urllib.parse.urlencode({"channel": "news", "text": "x"}))
            raise AssertionError("/api/notify to a channel succeeded while Redis was away")
        except urllib.error.HTTPError as e:
            check(e.code == 503, f"/api/notify answered {e.code}, wanted 503")
        # A subscribe that needs Redis (a channel B holds nothing of) is
        # confirmed all the same, and says it recovered nothing.
        x = await sb.connect("xena")
        socks.append(x)
        await x.send(env("subscribe", {"channel": "fresh", "recover": {"offset": 1, "epoch": "0123456789abcdef"}}))
        m = await recv(x)
        check(m["type"] == "subscribed" and m["payload"].get("channel") == "fresh" and
              m["payload"].get("recovered") is False, f"got {m!r}")
        check(sb.stats()["redis"]["fetch_errors"] >= 1, "the failed fetch was not counted")
        redis.start(port)
        await until("both servers reconnect and resubscribe",
                    lambda: sa.linked() and sb.linked() and redis.numsub("wsch:news") == 2
                    and {"wsch:#user:carol", "wsch:#user:dave", "wsch:other"} <= redis.channels(), timeout=20)
        check(sa.stats()["redis"]["channels"] == sa.stats()["bridge"]["channels"], "A holds every channel it needs")
        # The new Redis kept nothing (no persistence): the history is lost,
        # and every live subscriber is told.
        epochs = await told_lost(subs)
        check(last_pos["news"][1] not in epochs.values(), f"told at the old epoch: {epochs}")
        await clients["b1"].send(env("publish", {"channel": "news", "data": "back"}))
        o, e = await exactly_once(subs, {"type": "message",
                                         "payload": {"channel": "news", "from": "ben", "data": "back"}})
        check(o == 1 and e != last_pos["news"][1], f"the first message of the new epoch at {(o, e)}")
        last_pos["news"] = (o, e)
        await nothing_more(clients["b1"], 0.1)  # the refused message never arrives
        r = sa.notify(user="carol", text="again")
        check(r == {"delivered": 0}, f"notify {r!r}")
        await exactly_once([(k, clients[k]) for k in ("carol 1", "carol 2")],
                           {"type": "notification", "payload": {"to": "carol", "from": "server", "text": "again"}})

    await case("Redis restarted mid-test: publishes refused (\"unavailable\"), subscribes not recovered; then both "
               "resubscribe, subscribers are told of the lost history, and delivery resumes", outage())

    async def stall():
        subs = [(k, clients[k]) for k in ("a1", "a2", "b1", "b2")]
        await clients["a2"].send(env("publish", {"channel": "news", "data": "before the stall"}))
        pos = await exactly_once(subs, {"type": "message",
                                        "payload": {"channel": "news", "from": "amy", "data": "before the stall"}})
        before = sa.stats()
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            await until("both servers to take their links down",
                        lambda: all(s.stats()["redis"]["subscriber"] == 0 and s.stats()["redis"]["publisher"] == 0
                                    for s in (sa, sb)), timeout=20)
            print(f"     links down {time.monotonic() - t0:.1f} s after SIGSTOP", flush=True)
            check(sa.stats()["redis"]["stalls"] >= 1 and sb.stats()["redis"]["stalls"] >= 1, "counted as stalls")
            # While Redis is stopped: the publish is refused and reaches
            # nobody; the bridge counts it and holds nothing.
            await clients["a1"].send(env("publish", {"channel": "news", "data": "while stalled"}))
            await refused_unavailable(clients["a1"])
            await asyncio.gather(*(nothing_more(ws, 0.2) for _, ws in subs))
            st = sa.stats()
            check(st["redis"]["append_errors"] > before["redis"]["append_errors"],
                  f"not counted as refused: {st['redis']}")
            check(st["bridge"]["append_errors"] > before["bridge"]["append_errors"],
                  f"the hub did not count it: {st['bridge']}")
            check(st["redis"]["pending_bytes"] == 0, f"bytes held for a stopped Redis: {st['redis']}")
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        await until("both servers relink and resubscribe after SIGCONT",
                    lambda: sa.linked() and sb.linked() and redis.numsub("wsch:news") == 2, timeout=30)
        # The refused publish never arrives, late or otherwise; Redis kept
        # its history, so nobody is told of a loss either.
        await nothing_more(clients["b1"], 1.0)
        await asyncio.gather(*(nothing_more(ws, 0.1) for _, ws in subs))
        await clients["b2"].send(env("publish", {"channel": "news", "data": "resumed"}))
        o, e = await exactly_once(subs, {"type": "message",
                                         "payload": {"channel": "news", "from": "bob", "data": "resumed"}})
        check((o, e) == (pos[0] + 1, pos[1]), f"positions go on where they were: {(o, e)} after {pos}")

    await case("Redis stopped (SIGSTOP): links go down within seconds, publishes are refused and counted, "
               "nothing arrives late after SIGCONT", stall())

    for ws in list(clients.values()) + socks:
        try:
            await asyncio.wait_for(ws.close(), 5)
        except Exception:  # noqa: BLE001 - the servers' exits are what we check below
            pass

    async def clean_exit():
        rc = [sa.stop(), sb.stop()]
        check(rc == [0, 0], f"exit codes {rc}: A: {sa.tail()} B: {sb.tail()}")

    await case("both chat_servers exit cleanly under ASan/UBSan (no library heap left)", clean_exit())
    redis.stop()


async def bench(a, redis, sa, sb):
    pa, pb = sa.base.rsplit(":", 1)[1], sb.base.rsplit(":", 1)[1]
    cmd = [a.bench, "--port", pa, "--port2", pb, "--clients", str(a.clients)]
    print("measured: redis-server (loopback, no persistence); two chat_server --redis; " + " ".join(cmd), flush=True)
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    for line in out.decode(errors="replace").splitlines():
        m = re.match(r"Pass: (\d+), fail: (\d+)", line)
        if m:
            results.extend([True] * int(m.group(1)) + [False] * int(m.group(2)))
        else:
            print(line, flush=True)
    if proc.returncode != 0 and all(results):
        results.append(False)
        print(f"FAIL redis_bench: exit {proc.returncode}", flush=True)
    for s in (sa, sb):
        r = s.stats()
        print(f"server {s.name}: messages_out {r['messages_out']}, bridge {r['bridge']}, "
              f"redis published {r['redis']['published']}, dropped {r['redis']['dropped']}", flush=True)

    async def clean_exit():
        rc = [sa.stop(), sb.stop()]
        check(rc == [0, 0], f"exit codes {rc}")

    await case("both chat_servers exit cleanly", clean_exit())
    redis.stop()


def run_main(main, name, timeout_s):
    """Runs main() within timeout_s; whatever happens, every process this
    run started is killed (by PID), and the summary line is printed.
    Returns the exit code."""
    try:
        asyncio.run(asyncio.wait_for(main(), timeout_s))
    except Exception as e:  # noqa: BLE001
        results.append(False)
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    summary()
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(run_main(main, "redis_peer", 300))
