"""A small pub/sub server speaking the envelope protocol, and a publisher for it.

Used by run_client_reconnect.sh to test the reconnecting client against an
independent WebSocket implementation (Debian's python3-websockets).

  serve   --port P [--token T]
      WebSocket endpoint /ws on 127.0.0.1:P. With --token, the query parameter
      "token" must match, else the connection is closed with 4001. Envelopes:
        {"type":"ping"}                                   -> {"type":"pong"}
        {"type":"subscribe","payload":{"channel":C}}      remembered
        {"type":"unsubscribe","payload":{"channel":C}}    forgotten
        {"type":"publish","payload":{"channel":C,"data":D}}
            -> {"type":"message","payload":{"channel":C,"data":D}} to every
               subscriber of C, and {"type":"published","payload":{"count":N}}
               to the publisher
      Any other type is logged as "recv TYPE PAYLOAD". Every event is one
      flushed stdout line, so a shell script can wait for it.
  publish --port P [--token T] --channel C --data JSON
      Publishes once, prints "published N" (subscribers reached), exits 0 when
      N >= 1.
"""
import argparse
import asyncio
import json
import sys
import urllib.parse

import websockets

COMPACT = (",", ":")


def log(*parts):
    print(*parts, flush=True)


async def serve(port, token):
    subscribers = {}  # channel -> set of connections

    async def handler(ws):
        query = urllib.parse.urlparse(ws.path).query
        given = urllib.parse.parse_qs(query).get("token", [None])[0]
        if token is not None and given != token:
            log("reject token", repr(given))
            await ws.close(code=4001, reason="Unauthorized")
            return
        log("open token", given)
        mine = set()
        try:
            async for raw in ws:
                if not isinstance(raw, str):
                    log("binary", len(raw))
                    continue
                try:
                    env = json.loads(raw)
                    kind = env["type"]
                except (ValueError, KeyError, TypeError):
                    log("bad", raw)
                    continue
                payload = env.get("payload")
                if kind == "ping":
                    await ws.send('{"type":"pong"}')
                elif kind in ("subscribe", "unsubscribe"):
                    channel = payload["channel"]
                    if kind == "subscribe":
                        subscribers.setdefault(channel, set()).add(ws)
                        mine.add(channel)
                    else:
                        subscribers.get(channel, set()).discard(ws)
                        mine.discard(channel)
                    log(kind, channel)
                elif kind == "publish":
                    channel = payload["channel"]
                    out = json.dumps({"type": "message", "payload": {"channel": channel, "data": payload.get("data")}},
                                     separators=COMPACT)
                    targets = [t for t in subscribers.get(channel, ()) if t is not ws]
                    for t in targets:
                        try:
                            await t.send(out)
                        except websockets.ConnectionClosed:
                            pass
                    await ws.send(json.dumps({"type": "published", "payload": {"count": len(targets)}}, separators=COMPACT))
                    log("publish", channel, len(targets))
                else:
                    log("recv", kind, json.dumps(payload, separators=COMPACT))
        except websockets.ConnectionClosed:
            pass
        finally:
            for channel in mine:
                subscribers.get(channel, set()).discard(ws)
            log("close", ws.close_code, "subs=%d" % len(mine))

    async def refuse_other_paths(path, headers):
        if urllib.parse.urlparse(path).path != "/ws":
            return (404, [], b"not found\n")
        return None

    async with websockets.serve(handler, "127.0.0.1", port, process_request=refuse_other_paths):
        log("listening", port)
        await asyncio.Future()


async def publish(port, token, channel, data):
    url = "ws://127.0.0.1:%d/ws" % port
    if token is not None:
        url += "?token=" + urllib.parse.quote(token, safe="")
    async with websockets.connect(url, open_timeout=5) as ws:
        await ws.send(json.dumps({"type": "publish", "payload": {"channel": channel, "data": json.loads(data)}},
                                 separators=COMPACT))
        while True:
            env = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if env.get("type") == "published":
                count = env["payload"]["count"]
                log("published", count)
                return 0 if count >= 1 else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["serve", "publish"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token")
    ap.add_argument("--channel")
    ap.add_argument("--data", default="null")
    a = ap.parse_args()
    if a.mode == "serve":
        try:
            asyncio.run(serve(a.port, a.token))
        except KeyboardInterrupt:
            pass
        return 0
    try:
        return asyncio.run(publish(a.port, a.token, a.channel, a.data))
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
        log("publish failed:", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
