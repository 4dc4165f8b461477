#!/usr/bin/python3
"""chat_server in its open mode (no --token: the token is the user name)
against Python websockets clients: a name that is not UTF-8 or holds a ':'
is refused, and a publish that names "data" twice is refused, not broadcast
as null. Started by run_hub_interop.sh with --server PATH. Prints "ok NAME" /
"FAIL NAME: why" per case and, last, greatest's summary line."""
import argparse
import asyncio
import signal

import websockets

from envelope_util import Server, case, check, env, recv, nothing_more, refused, summary


async def names(srv):
    await refused(srv.url("?token=%FF%FE"))            # not UTF-8: it could not be sent in JSON
    await refused(srv.url("?token=alice%3Ainbox"))     # would own alice's private channel user:alice:inbox
    ws = await websockets.connect(srv.url("?token=alice"), open_timeout=5)
    m = await recv(ws, "welcome")
    check(m["payload"] == {"user": "alice"}, f"welcome {m}")
    await ws.send(env("subscribe", {"channel": "user:alice:inbox"}))
    await recv(ws, "subscribed")
    await ws.close()


async def duplicate_data(srv):
    a = await websockets.connect(srv.url("?token=carol"), open_timeout=5)
    b = await websockets.connect(srv.url("?token=dave"), open_timeout=5)
    for ws in (a, b):
        await ws.send(env("subscribe", {"channel": "room"}))
        await recv(ws, "subscribed")
    await a.send('{"type":"publish","payload":{"channel":"room","data":1,"data":2}}')
    m = await recv(a, "error")
    check(m["payload"]["code"] == "bad_payload", f"error {m}")
    await nothing_more(b, 0.3)
    await a.close()
    await b.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--www", required=True)
    args = ap.parse_args()
    srv = Server([args.server, "--port", "0", "--www", args.www])

    def url(query=""):
        return f"ws://127.0.0.1:{srv.port}/ws{query}"
    srv.url = url
    await case("open mode: names that are not UTF-8 or hold ':' are refused", names(srv))
    await case("a publish naming \"data\" twice is refused, not broadcast", duplicate_data(srv))

    async def exits_cleanly():
        srv.p.send_signal(signal.SIGTERM)
        rc = await asyncio.get_running_loop().run_in_executor(None, lambda: srv.p.wait(20))
        log = srv.output()
        check(rc == 0, f"exit {rc}: {log[-1500:]}")
        check("ERROR: AddressSanitizer" not in log and "runtime error" not in log, log[-1500:])
    await case("open-mode chat_server exits cleanly under ASan/UBSan", exits_cleanly())
    summary()


asyncio.run(main())
