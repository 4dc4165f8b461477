"""py_server.py - the Python peers of the benchmarks, on Debian's
python3-websockets, in uvloop's event loop when python3-uvloop is installed
(the loop Python servers are deployed on for speed), else asyncio's own;
PY_SERVER_LOOP=asyncio forces asyncio's. Run with /usr/bin/python3.

  python3 py_server.py echo PORT   echo every message back
  python3 py_server.py hub PORT    the demo hub's protocol on /ws?token=T
                                   (see node_server.js); broadcasts go out
                                   through websockets.broadcast(), which
                                   encodes the frame once.
Listens on 127.0.0.1; no compression, no keepalive pings. The listening
line says which loop runs ("loop uvloop 0.17.0" or "loop asyncio").
"""
import asyncio
import json
import os
import signal
import sys
from urllib.parse import parse_qs, urlsplit

import websockets

MODE = sys.argv[1] if len(sys.argv) > 1 else ""
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
if MODE not in ("echo", "hub") or not PORT:
    sys.exit("usage: py_server.py echo|hub PORT")

LOOP = "asyncio"
if os.environ.get("PY_SERVER_LOOP", "uvloop") == "uvloop":
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        LOOP = f"uvloop {uvloop.__version__}"
    except ImportError:
        pass

channels = {}  # channel -> set of connections


async def echo(ws, path=None):
    async for msg in ws:
        await ws.send(msg)


def envelope(type_, payload):
    return json.dumps({"type": type_, "payload": payload}, separators=(",", ":"))


async def hub(ws, path=None):
    url = urlsplit(path if path is not None else ws.path)
    user = parse_qs(url.query).get("token", [""])[0]
    if url.path != "/ws" or not user:
        await ws.close(4001, "Unauthorized")
        return
    mine = set()
    await ws.send(envelope("welcome", {"user": user}))
    try:
        async for msg in ws:
            if isinstance(msg, bytes):
                await ws.close(1003)
                return
            try:
                env = json.loads(msg)
            except ValueError:
                await ws.send(envelope("error", {"code": "bad_envelope"}))
                continue
            p = env.get("payload") if isinstance(env, dict) else None
            channel = p.get("channel") if isinstance(p, dict) else None
            t = env.get("type") if isinstance(env, dict) else None
            if t == "ping":
                await ws.send(envelope("pong", p))
            elif t == "subscribe" and isinstance(channel, str):
                channels.setdefault(channel, set()).add(ws)
                mine.add(channel)
                await ws.send(envelope("subscribed", {"channel": channel}))
            elif t == "unsubscribe" and isinstance(channel, str):
                channels.get(channel, set()).discard(ws)
                mine.discard(channel)
                await ws.send(envelope("unsubscribed", {"channel": channel}))
            elif t == "publish" and isinstance(channel, str):
                if channel not in mine:
                    await ws.send(envelope("error", {"code": "not_subscribed", "request": "publish"}))
                    continue
                out = envelope("message", {"channel": channel, "from": user, "data": p.get("data")})
                websockets.broadcast(channels[channel], out)
            else:
                await ws.send(envelope("error", {"code": "unknown_type", "request": str(t)}))
    finally:
        for c in mine:
            s = channels.get(c)
            if s is not None:
                s.discard(ws)
                if not s:
                    del channels[c]


async def main():
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with websockets.serve(echo if MODE == "echo" else hub, "127.0.0.1", PORT, compression=None,
                                ping_interval=None, max_size=64 * 1024 * 1024, max_queue=None, backlog=512):
        print(f"py_server: {MODE} listening on {PORT} (websockets {websockets.__version__}, loop {LOOP})", flush=True)
        await stop


asyncio.run(main())
