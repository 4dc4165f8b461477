#!/usr/bin/python3
"""examples/hub_server, the minimal hub a user copies, against Python
websockets clients: token auth (query, Bearer header, bearer subprotocol),
subscribe, a stdin line broadcast to "news", refusals, and a clean exit on
SIGTERM. Started by run_hub_server.sh with --server PATH. Prints "ok NAME" /
"FAIL NAME: why" per case and, last, greatest's summary line. Every wait is
bounded; 127.0.0.1 only."""
import argparse
import asyncio
import os
import signal
import socket
import time

import websockets

from envelope_util import Server, case, check, env, recv, nothing_more, refused, summary

async def subscribed(srv, **kw):
    ws = await websockets.connect(srv.url(kw.pop("query", "")), open_timeout=5, **kw)
    await ws.send(env("subscribe", {"channel": "news"}))
    m = await recv(ws, "subscribed")
    check(m["payload"] == {"channel": "news"}, f"subscribed answer {m}")
    return ws


async def broadcast_reaches_every_way_of_auth(srv):
    a = await subscribed(srv, query="?token=secret-a")
    b = await subscribed(srv, extra_headers={"Authorization": "Bearer secret-b"})
    c = await subscribed(srv, subprotocols=["bearer.secret-a"])
    check(c.subprotocol == "bearer.secret-a", f"subprotocol chosen: {c.subprotocol}")
    srv.say("first line")
    for ws in (a, b, c):
        m = await recv(ws, "news")
        check(m["payload"] == {"text": "first line"}, f"news {m}")
        await nothing_more(ws, 0.2)
    for ws in (a, b, c):
        await ws.close()


async def unsubscribed_hears_nothing(srv):
    a = await subscribed(srv, query="?token=secret-a")
    other = await websockets.connect(srv.url("?token=secret-b"), open_timeout=5)
    await a.send(env("unsubscribe", {"channel": "news"}))
    await recv(a, "unsubscribed")
    srv.say("nobody listens")
    await nothing_more(a, 0.3)
    await nothing_more(other, 0.1)
    await a.close()
    await other.close()


async def wrong_token_refused(srv):
    await refused(srv.url("?token=nope"))


async def missing_token_refused(srv):
    await refused(srv.url())


async def ping_answered(srv):
    ws = await websockets.connect(srv.url("?token=secret-b"), open_timeout=5)
    await ws.send(env("ping", {"n": 7}))
    m = await recv(ws, "pong")
    check(m["payload"] == {"n": 7}, f"pong {m}")
    await ws.close()


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def out_of_descriptors(path):
    """At its descriptor limit the server must not spin on the readable
    listener: the connections it cannot take are closed unserved, it logs
    that at most once a second, and it serves again once peers leave."""
    srv = Server([path, "0", "alice=secret-a", "bob=secret-b"], max_fds=24)
    try:
        socks = []
        for _ in range(60):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            socks.append(s)
        await asyncio.sleep(0.5)
        cpu0 = cpu_seconds(srv.p.pid)
        await asyncio.sleep(2.0)
        used = cpu_seconds(srv.p.pid) - cpu0
        check(used < 0.5, f"{used:.2f} s of CPU in 2 s at the descriptor limit: it spins")
        shed = 0
        for s in socks:
            s.settimeout(0.2)
            try:
                if s.recv(1) == b"":
                    shed += 1
            except (socket.timeout, ConnectionResetError):
                pass
        check(shed > 0, "no connection was closed unserved")
        for s in socks:
            s.close()
        await asyncio.sleep(0.5)
        ws = await websockets.connect(srv.url("?token=secret-a"), open_timeout=5)
        await ws.send(env("ping", {"after": "the limit"}))
        m = await recv(ws, "pong")
        check(m["payload"] == {"after": "the limit"}, f"pong {m}")
        await ws.close()
    finally:
        srv.p.send_signal(signal.SIGTERM)
        srv.p.wait(20)
        log = srv.output()
    lines = [l for l in log.splitlines() if "out of descriptors" in l]
    check(1 <= len(lines) <= 4, f"{len(lines)} log lines about the limit in ~3 s: {lines[:3]}")
    check("ERROR: AddressSanitizer" not in log and "runtime error" not in log, log[-2000:])


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    args = ap.parse_args()
    srv = Server([args.server, "0", "alice=secret-a", "bob=secret-b"])
    await case("broadcast reaches query, header and subprotocol tokens", broadcast_reaches_every_way_of_auth(srv))
    await case("an unsubscribed peer hears nothing", unsubscribed_hears_nothing(srv))
    await case("a wrong token is refused with 4001", wrong_token_refused(srv))
    await case("no token is refused with 4001", missing_token_refused(srv))
    await case("ping is answered with pong", ping_answered(srv))
    await case("at the descriptor limit: no spin, connections shed, served again after", out_of_descriptors(args.server))

    async def exits_cleanly():
        open_ws = await subscribed(srv, query="?token=secret-a")
        srv.p.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(open_ws.recv(), 10)
            raise AssertionError("no close on shutdown")
        except websockets.ConnectionClosed as e:
            check(e.code == 1001, f"close code on shutdown {e.code}")
        rc = await asyncio.get_running_loop().run_in_executor(None, lambda: srv.p.wait(20))
        rest = srv.output()
        check(rc == 0, f"exit code {rc}: {rest[-2000:]}")
        check("ERROR: AddressSanitizer" not in rest and "runtime error" not in rest, rest[-2000:])
    await case("SIGTERM: open peers get 1001, the process exits 0", exits_cleanly())
    if srv.p.poll() is None:
        srv.p.kill()
    summary()


asyncio.run(main())
