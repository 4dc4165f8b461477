#!/usr/bin/python3
"""Interop of chat_server (wsch_hub) with Python websockets clients.

Started by run_hub_interop.sh with --url http://127.0.0.1:PORT against a
chat_server run with --token alice=alice-secret --token bob=bob-secret.
Prints "ok NAME" / "FAIL NAME: why" per case and, last, greatest's summary
line. Every wait is bounded; 127.0.0.1 only."""
import argparse
import asyncio
import json
import time
import urllib.error
import urllib.request

import websockets

from envelope_util import case, check, check_subscribed, env, recv, nothing_more as _nothing_more, positioned, \
    results, summary


async def nothing_more(ws, wait=0.3):
    await _nothing_more(ws, wait)


def http_get(base, path):
    with urllib.request.urlopen(base + path, timeout=5) as r:
        return r.status, r.read().decode()


class Hub:
    def __init__(self, base):
        self.base = base
        self.ws_url = "ws://" + base.split("://", 1)[1] + "/ws"

    def connect(self, token=None, how="protocol", **kw):
        if how == "protocol":
            return websockets.connect(self.ws_url, subprotocols=["wsch", "bearer." + token], **kw)
        if how == "header":
            return websockets.connect(self.ws_url, extra_headers={"Authorization": "Bearer " + token}, **kw)
        return websockets.connect(self.ws_url + ("?token=" + token if token else ""), **kw)

    async def joined(self, token, channel, how="protocol"):
        ws = await self.connect(token, how)
        await recv(ws, "welcome")
        await ws.send(env("subscribe", {"channel": channel}))
        check_subscribed(await recv(ws), channel)
        return ws


async def hold(hub, n, ready_file):
    """--hold N READY: opens N subscribed clients, touches READY, then expects
    every one to be closed with 1001 when the server shuts down."""
    conns = await asyncio.gather(*[hub.joined("alice-secret", "shutdown", "query") for _ in range(n)])
    with open(ready_file, "w") as f:
        f.write("ready\n")

    async def closed(ws):
        try:
            await asyncio.wait_for(ws.recv(), 20)
            return None
        except websockets.ConnectionClosed as e:
            return e.code

    codes = await asyncio.gather(*[closed(ws) for ws in conns])
    going_away = sum(1 for c in codes if c == 1001)
    ok = going_away == n
    print(f"{'ok  ' if ok else 'FAIL'} graceful shutdown: {going_away} of {n} clients got 1001", flush=True)
    print(f"Pass: {int(ok)}, fail: {int(not ok)}, skip: 0.")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--hold", nargs=2, metavar=("N", "READY_FILE"))
    args = ap.parse_args()
    hub = Hub(args.url)
    if args.hold:
        await hold(hub, int(args.hold[0]), args.hold[1])
        return

    async def page():
        loop = asyncio.get_running_loop()
        status, body = await loop.run_in_executor(None, http_get, args.url, "/")
        check(status == 200 and "/app.js" in body and "status-badge" in body, f"{status} {body[:80]!r}")
        for path in ("/app.js", "/app.css"):
            status, body = await loop.run_in_executor(None, http_get, args.url, path)
            check(status == 200 and len(body) > 1000, f"{path}: {status}")
        try:
            await loop.run_in_executor(None, http_get, args.url, "/../etc/passwd")
            raise AssertionError("a path outside the page was served")
        except urllib.error.HTTPError as e:
            check(e.code == 404, f"status {e.code}")
    await case("the page and its files over plain HTTP on the same port", page())

    async def token_sources():
        for how, token, user in (("protocol", "alice-secret", "alice"), ("header", "bob-secret", "bob"),
                                 ("query", "alice-secret", "alice")):
            async with hub.connect(token, how) as ws:
                w = await recv(ws)
                check(w == {"type": "welcome", "payload": {"user": user}}, f"{how}: {w!r}")
                if how == "protocol":
                    check(ws.subprotocol == "wsch", f"subprotocol {ws.subprotocol!r}")
    await case("token in protocol, header and query", token_sources())

    async def bad_token():
        for how, token in (("protocol", "nope"), ("query", None)):
            async with hub.connect(token, how) as ws:
                try:
                    await asyncio.wait_for(ws.recv(), 5)
                    raise AssertionError("a message after a refused token")
                except websockets.ConnectionClosed as e:
                    check(e.code == 4001 and e.reason == "Unauthorized", f"close {e.code} {e.reason!r}")
    await case("refused token: close 4001 Unauthorized", bad_token())

    async def ping_pong():
        async with hub.connect("alice-secret") as ws:
            await recv(ws, "welcome")
            await ws.send(env("ping", {"t": 12345, "s": "\u00e9\u4e2d"}))
            m = await recv(ws)
            check(m == {"type": "pong", "payload": {"t": 12345, "s": "\u00e9\u4e2d"}}, f"{m!r}")
            pong = await ws.ping(b"proto")      # protocol-level ping, answered by the connection
            await asyncio.wait_for(pong, 5)
    await case("ping envelope and protocol ping", ping_pong())

    async def publish_fanout():
        a = await hub.joined("alice-secret", "room")
        b = await hub.joined("bob-secret", "room", "header")
        c = await hub.joined("bob-secret", "elsewhere", "query")
        try:
            await a.send(env("publish", {"channel": "room", "data": {"text": "hi", "n": [1, 2]}}))
            want = {"type": "message", "payload": {"channel": "room", "from": "alice", "data": {"text": "hi", "n": [1, 2]}}}
            for ws in (a, b):
                m = await recv(ws)
                check(positioned(m, "room") == want, f"{m!r}")
            await nothing_more(c)
            await c.send(env("publish", {"channel": "room", "data": 1}))
            m = await recv(c)
            check(m["type"] == "error" and m["payload"]["code"] == "not_subscribed", f"{m!r}")
        finally:
            for ws in (a, b, c):
                await ws.close()
    await case("publish reaches exactly the channel's subscribers", publish_fanout())

    async def notify():
        subs = [await hub.joined(t, "news", how) for t, how in
                (("alice-secret", "protocol"), ("bob-secret", "header"), ("alice-secret", "query"))]
        try:
            status, body = await asyncio.get_running_loop().run_in_executor(
                None, http_get, args.url, "/api/notify?channel=news&text=caf%C3%A9%20%22open%22")
            check(status == 200 and json.loads(body) == {"delivered": 3}, f"{status} {body}")
            for ws in subs:
                m = await recv(ws)
                check(positioned(m, "news") == {"type": "notification", "payload": {"channel": "news", "from": "server",
                                                                                  "text": "caf\u00e9 \"open\""}}, f"{m!r}")
                await nothing_more(ws, 0.1)
        finally:
            for ws in subs:
                await ws.close()
    await case("server broadcast to every subscriber, once", notify())

    async def to_user():
        a1 = await hub.connect("alice-secret")
        a2 = await hub.connect("alice-secret", "query")
        b = await hub.connect("bob-secret", "header")
        try:
            for ws in (a1, a2, b):
                await recv(ws, "welcome")
            status, body = await asyncio.get_running_loop().run_in_executor(
                None, http_get, args.url, "/api/notify?user=alice&text=yours")
            check(json.loads(body) == {"delivered": 2}, body)
            for ws in (a1, a2):
                m = await recv(ws)
                check(m["type"] == "notification" and m["payload"]["to"] == "alice", f"{m!r}")
            await nothing_more(b)
            await b.send(env("direct", {"to": "alice", "data": "psst"}))
            for ws in (a1, a2, b):
                m = await recv(ws)
                check(positioned(m, None) == {"type": "direct", "payload": {"from": "bob", "to": "alice", "data": "psst"}},
                      f"{m!r}")
        finally:
            for ws in (a1, a2, b):
                await ws.close()
    await case("send_to_user reaches every connection of the user", to_user())

    async def errors():
        async with hub.connect("bob-secret") as ws:
            await recv(ws, "welcome")
            await ws.send("{not json")
            m = await recv(ws)
            check(m["type"] == "error" and m["payload"]["code"] == "bad_envelope", f"{m!r}")
            await ws.send(env("subscribe", {"channel": "user:alice:inbox"}))
            m = await recv(ws)
            check(m["type"] == "error" and m["payload"]["code"] == "forbidden"
                  and m["payload"]["channel"] == "user:alice:inbox", f"{m!r}")
            await ws.send(env("subscribe", {"channel": "user:bob:inbox"}))
            m = await recv(ws)
            check(m["type"] == "subscribed", f"{m!r}")
            await ws.send(env("subscribe", {"channel": "no spaces"}))
            m = await recv(ws)
            check(m["payload"]["code"] == "bad_channel", f"{m!r}")
            await ws.send(b"\x00binary")
            try:
                await asyncio.wait_for(ws.recv(), 5)
                raise AssertionError("still open after a binary message")
            except websockets.ConnectionClosed as e:
                check(e.code == 1003, f"close {e.code}")
    await case("bad envelopes, private channels, binary", errors())

    async def unsubscribe():
        a = await hub.joined("alice-secret", "temp")
        b = await hub.joined("bob-secret", "temp")
        try:
            await a.send(env("unsubscribe", {"channel": "temp"}))
            m = await recv(a)
            check(m == {"type": "unsubscribed", "payload": {"channel": "temp"}}, f"{m!r}")
            await b.send(env("publish", {"channel": "temp", "data": "x"}))
            m = await recv(b)
            check(m["payload"]["data"] == "x", f"{m!r}")
            await nothing_more(a)
        finally:
            await a.close()
            await b.close()
    await case("unsubscribe stops deliveries", unsubscribe())

    async def many():
        n = 300
        conns = await asyncio.gather(*[hub.joined("alice-secret" if i % 2 else "bob-secret", "crowd", "query")
                                       for i in range(n)])
        try:
            status, body = await asyncio.get_running_loop().run_in_executor(
                None, http_get, args.url, "/api/notify?channel=crowd&text=all")
            check(json.loads(body) == {"delivered": n}, body)
            got = await asyncio.gather(*[recv(ws) for ws in conns])
            check(all(m["payload"]["text"] == "all" for m in got), "a wrong message")
        finally:
            await asyncio.gather(*[ws.close() for ws in conns])
        # Every subscription went with its connection; the channels live on
        # only for the history chat_server keeps (bounded, documented).
        deadline = time.monotonic() + 5
        while True:
            _, body = await asyncio.get_running_loop().run_in_executor(None, http_get, args.url, "/api/stats")
            s = json.loads(body)
            if s["open"] == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        check(s["open"] == 0 and s["subscriptions"] == 0 and s["users"] == 0 and
              s["channels"] <= s["history"]["messages"], body)
    await case("300 clients get one broadcast each; all cleaned up", many(), 60)

    summary()


asyncio.run(main())
