#!/usr/bin/python3
"""Interop with Python websockets (Debian's python3-websockets, asyncio API).

Both directions:
  * websockets as the client of build/.../echo_server (--echo-url), plus raw
    TCP scripts that send what no polite library would (unmasked frames,
    invalid UTF-8, bad close frames) and check the close code that comes back;
  * websockets as the server for the library's client (--peer-client, see
    peer_client.c), which it drives with "cmd:" messages.
Prints "ok NAME" or "FAIL NAME: why" per case and, last, greatest's summary
line. Every wait is bounded; 127.0.0.1 only.
"""
import argparse
import asyncio
import base64
import hashlib
import os
import random
import struct
import time
import urllib.parse

import websockets

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BIG = 16 * 1024 * 1024
PATTERN = bytes(i % 251 for i in range(251))

results = []


def pattern(n):
    """n bytes with byte i = i % 251, as peer_client's cmd:big makes them."""
    return (PATTERN * (n // 251 + 1))[:n]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def short(b):
    r = repr(b)
    return r if len(r) < 80 else r[:77] + "..."


async def run_case(name, coro_fn, timeout=60):
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(coro_fn(), timeout)
        results.append((name, True))
        print(f"ok   {name} ({time.monotonic() - t0:.2f} s)", flush=True)
    except asyncio.TimeoutError:
        results.append((name, False))
        print(f"FAIL {name}: timed out (case limit {timeout} s)", flush=True)
    except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
        results.append((name, False))
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)


# ---------------------------------------------------------------- raw TCP ---

def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None, key=None):
    """One frame's bytes; length overrides the encoded payload length. A zero
    key masks big payloads for free."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = key or os.urandom(4)
    if key == b"\0\0\0\0":
        return head + key + payload
    return head + key + bytes(c ^ key[i & 3] for i, c in enumerate(payload))


def handshake_request(host, port, path="/", version=13, key=None):
    key = key or base64.b64encode(os.urandom(16)).decode()
    return key, (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: {version}\r\n\r\n").encode()


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


async def read_frame(r):
    """Returns (fin, opcode, payload), unmasking if needed."""
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await r.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await r.readexactly(8))[0]
    key = await r.readexactly(4) if b1 & 0x80 else None
    data = await r.readexactly(n)
    if key:
        data = bytes(c ^ key[i & 3] for i, c in enumerate(data))
    return bool(b0 & 0x80), b0 & 0x0F, data


async def expect_close(r, codes, then_eof=True):
    """Reads frames until a close frame; checks its code; then waits for EOF."""
    while True:
        fin, op, data = await asyncio.wait_for(read_frame(r), 5)
        if op == 0x8:
            break
    check(len(data) >= 2, f"close frame without a code: {short(data)}")
    code = struct.unpack("!H", data[:2])[0]
    check(code in codes, f"close code {code}, expected {codes}")
    if then_eof:
        rest = await asyncio.wait_for(r.read(), 5)
        check(rest == b"", f"bytes after the close frame: {short(rest)}")
    return code


class Raw:
    """A raw WebSocket client connection to the echo server."""

    def __init__(self, host, port):
        self.host, self.port = host, port

    async def __aenter__(self):
        self.r, self.w = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc):
        self.w.close()

    async def upgrade(self, extra=b""):
        key, req = handshake_request(self.host, self.port)
        self.w.write(req + extra)
        head = await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), 5)
        check(head.startswith(b"HTTP/1.1 101"), f"status line {short(head[:40])}")
        check(f"Sec-WebSocket-Accept: {accept_for(key)}".lower().encode() in head.lower(),
              "missing or wrong Sec-WebSocket-Accept")
        return head

    def send(self, data):
        self.w.write(data)


# ---------------------------------------- websockets as client of echo_server ---

def client_cases(url, host, port):
    def connect(**kw):
        kw.setdefault("max_size", None)
        kw.setdefault("open_timeout", 5)
        kw.setdefault("close_timeout", 5)
        return websockets.connect(url, **kw)

    async def echo(msgs, **kw):
        async with connect(**kw) as ws:
            for m in msgs:
                await ws.send(m)
                got = await ws.recv()
                check(got == m, f"sent {short(m)}, got back {short(got)}")

    async def text():
        await echo(["hello", "a" * 125, "b" * 126, "c" * 65535, "d" * 65536])

    async def binary():
        await echo([bytes(range(256)), b"\x00", b"\xff" * 70000])

    async def empty():
        await echo(["", b"", "x", b""])

    async def utf8():
        await echo(["κόσμε", "€ ✓ 𝄞 \u0000 \U0010FFFF", "\uFFFF\u07FF\u0800"])

    async def fragmented():
        async with connect() as ws:
            await ws.send(["fra", "gme", "nted ✓"])
            check(await ws.recv() == "fragmented ✓", "fragmented text not reassembled")
            await ws.send([b"\x00\x01", b"", b"\xff"])
            check(await ws.recv() == b"\x00\x01\xff", "fragmented binary with an empty fragment")

    async def big_binary():
        data = pattern(BIG)
        async with connect() as ws:
            await ws.send(data)
            got = await ws.recv()
            check(got == data, f"16 MiB binary: got {len(got)} bytes, equal={got == data}")

    async def big_text_fragmented():
        piece = "é✓x" * (1024 * 1024 // 6)     # 6 bytes of UTF-8 per 3 characters

        async def pieces():
            for _ in range(BIG // len(piece.encode())):
                yield piece
        async with connect() as ws:
            await ws.send(pieces())
            got = await ws.recv()
            want = piece * (BIG // len(piece.encode()))
            check(got == want, f"fragmented ~16 MiB text: got {len(got)} characters")

    async def ping_pong():
        async with connect() as ws:
            waiter = await ws.ping(b"ping \x00\xff payload")
            await asyncio.wait_for(waiter, 5)
            waiter = await ws.ping(b"")
            await asyncio.wait_for(waiter, 5)
            await ws.send("after ping")
            check(await ws.recv() == "after ping", "message after ping")

    async def close_code():
        async with connect() as ws:
            await ws.send("x")
            await ws.recv()
            await ws.close(4000, "bye")
            check(ws.close_code == 4000, f"server answered close 4000 with {ws.close_code}")

    async def pipelined():
        async with connect() as ws:
            msgs = [f"message {i}" if i % 2 else f"{i}".encode() * 50 for i in range(1000)]
            for m in msgs:
                await ws.send(m)
            for m in msgs:
                got = await ws.recv()
                check(got == m, f"out of order or lost: {short(got)} instead of {short(m)}")

    async def concurrent():
        async def one(i):
            async with connect() as ws:
                for j in range(20):
                    m = f"client {i} message {j}" if j % 2 else bytes([i & 0xFF, j]) * (i + 1)
                    await ws.send(m)
                    got = await ws.recv()
                    check(got == m, f"client {i}: {short(got)} instead of {short(m)}")
        await asyncio.gather(*(one(i) for i in range(200)))

    async def deflate_offer_ignored():
        async with connect(compression="deflate") as ws:
            check(ws.extensions == [], f"server accepted extensions {ws.extensions}")
            await ws.send("compress me? no")
            check(await ws.recv() == "compress me? no", "echo")

    async def subprotocol_offer():
        async with connect(subprotocols=["chat.v1"]) as ws:
            check(ws.subprotocol is None, f"server chose {ws.subprotocol} unasked")
            await ws.send("sub")
            check(await ws.recv() == "sub", "echo")

    # ---- raw: what the library must refuse, with the RFC close code ----
    def raw_expect(frames, codes):
        async def run():
            async with Raw(host, port) as c:
                await c.upgrade()
                for f in frames:
                    c.send(f)
                await expect_close(c.r, codes)
        return run

    async def raw_split_bytes():
        async with Raw(host, port) as c:
            await c.upgrade()
            f = frame(0x1, "split ✓".encode())
            for i in range(len(f)):
                c.send(f[i:i + 1])
                await c.w.drain()
                await asyncio.sleep(0.002)
            fin, op, data = await asyncio.wait_for(read_frame(c.r), 5)
            check((fin, op, data) == (True, 0x1, "split ✓".encode()), f"got {(fin, op, short(data))}")

    async def raw_with_handshake():
        async with Raw(host, port) as c:
            await c.upgrade(extra=frame(0x2, b"early") + frame(0x1, b"bird"))
            got = [await asyncio.wait_for(read_frame(c.r), 5) for _ in range(2)]
            check(got == [(True, 0x2, b"early"), (True, 0x1, b"bird")], f"got {got}")

    async def raw_utf8_across_fragments():
        async with Raw(host, port) as c:
            await c.upgrade()
            c.send(frame(0x1, b"\xe2", fin=False) + frame(0x0, b"\x82", fin=False) + frame(0x0, b"\xac"))
            fin, op, data = await asyncio.wait_for(read_frame(c.r), 5)
            check((op, data) == (0x1, "€".encode()), f"got {(op, short(data))}")

    async def raw_utf8_fail_fast():
        # The bad byte arrives in the first fragment; the message never ends.
        async with Raw(host, port) as c:
            await c.upgrade()
            c.send(frame(0x1, "κόσμε".encode() + b"\xed\xa0\x80", fin=False))
            await expect_close(c.r, (1007,))

    async def raw_utf8_fail_fast_in_frame():
        # Autobahn 6.4.3: one frame whose bytes arrive in pieces; the invalid
        # code point (U+110000) is in the second piece, the frame never ends.
        good, bad, rest = bytes.fromhex("cebae1bdb9cf83cebcceb5"), bytes.fromhex("f4908080"), b"edited"
        f = frame(0x1, good + bad + rest)
        async with Raw(host, port) as c:
            await c.upgrade()
            c.send(f[:-len(rest)])
            await expect_close(c.r, (1007,))

    async def raw_ping_interleaved():
        async with Raw(host, port) as c:
            await c.upgrade()
            c.send(frame(0x1, b"frag", fin=False) + frame(0x9, b"p1") + frame(0x0, b"ment"))
            got = [await asyncio.wait_for(read_frame(c.r), 5) for _ in range(2)]
            check(got == [(True, 0xA, b"p1"), (True, 0x1, b"fragment")], f"got {got}")

    async def raw_unsolicited_pong():
        async with Raw(host, port) as c:
            await c.upgrade()
            c.send(frame(0xA, b"unasked") + frame(0x1, b"still here"))
            got = await asyncio.wait_for(read_frame(c.r), 5)
            check(got == (True, 0x1, b"still here"), f"got {got}")

    async def raw_backpressure():
        # 96 MiB sent without reading any echo: a server that kept reading
        # would pass its outbound limit (about 36 MiB) and close with 1008.
        # Ours stops reading, so our writes stall; then every echo arrives.
        n, msg = 96, pattern(1 << 20)
        f = frame(0x2, msg, key=b"\0\0\0\0")
        sent = 0
        async with Raw(host, port) as c:
            await c.upgrade()

            async def writer():
                nonlocal sent
                for _ in range(n):
                    c.w.write(f)
                    await c.w.drain()
                    sent += 1
            task = asyncio.create_task(writer())
            await asyncio.sleep(2)
            stalled_at = sent
            check(stalled_at < n, "all 96 MiB went in while no echo was read: no backpressure")
            for i in range(n):
                fin, op, data = await asyncio.wait_for(read_frame(c.r), 10)
                check((fin, op) == (True, 0x2) and data == msg, f"echo {i}: {(fin, op, len(data))}")
            await asyncio.wait_for(task, 10)
            print(f"     (writes stalled at {stalled_at} of {n} MiB until echoes were read)", flush=True)

    async def raw_expect_frames(send, want):
        async with Raw(host, port) as c:
            await c.upgrade()
            c.send(send)
            got = [await asyncio.wait_for(read_frame(c.r), 5) for _ in range(len(want))]
            check(got == want, f"got {[(f, o, short(d)) for f, o, d in got]}")

    async def raw_empty_fragments():
        await raw_expect_frames(frame(0x1, b"", fin=False) + frame(0x0, b"", fin=False) + frame(0x0, b""),
                                [(True, 0x1, b"")])

    async def raw_max_control():
        await raw_expect_frames(frame(0x9, b"\xfe" * 125), [(True, 0xA, b"\xfe" * 125)])

    async def raw_ten_pings():
        await raw_expect_frames(b"".join(frame(0x9, b"%d" % i) for i in range(10)),
                                [(True, 0xA, b"%d" % i) for i in range(10)])

    async def raw_nothing_after_close():
        # Data and pings after the client's close frame get no answer.
        async with Raw(host, port) as c:
            await c.upgrade()
            c.send(frame(0x8, struct.pack("!H", 1000)) + frame(0x1, b"late") + frame(0x9, b"late"))
            fin, op, data = await asyncio.wait_for(read_frame(c.r), 5)
            check(op == 0x8 and data[:2] == struct.pack("!H", 1000), f"first frame {(op, short(data))}")
            rest = await asyncio.wait_for(c.r.read(), 5)
            check(rest == b"", f"frames after the close: {short(rest)}")

    async def raw_big_close_reason():
        reason = "ü" * 61 + "x"                 # 123 bytes: the largest close payload
        async with Raw(host, port) as c:
            await c.upgrade()
            c.send(frame(0x8, struct.pack("!H", 4999) + reason.encode()))
            await expect_close(c.r, (4999,))

    async def raw_random_stream():
        # Random messages cut into random fragments with pings between them,
        # written in random chops: every split point the decoder can meet.
        rng = random.Random(6455)
        async with Raw(host, port) as c:
            await c.upgrade()
            wire, want = bytearray(), []
            for i in range(300):
                text = rng.random() < 0.5
                if text:
                    payload = "".join(rng.choice("aé€𝄞 ") for _ in range(rng.randrange(0, 400))).encode()
                else:
                    payload = rng.randbytes(rng.choice([0, 1, 125, 126, 1000, 65535, 65536, 70000]))
                cuts = sorted(rng.randrange(0, len(payload) + 1) for _ in range(rng.randrange(0, 4)))
                pieces = [payload[a:b] for a, b in zip([0] + cuts, cuts + [len(payload)])]
                for j, piece in enumerate(pieces):
                    last = j == len(pieces) - 1
                    wire += frame(0x1 if text and j == 0 else 0x2 if j == 0 else 0x0, piece, fin=last)
                    if last:
                        want.append((True, 0x1 if text else 0x2, payload))
                    if rng.random() < 0.2:
                        wire += frame(0x9, b"p%d.%d" % (i, j))
                        want.append((True, 0xA, b"p%d.%d" % (i, j)))
            pos = 0
            while pos < len(wire):
                n = rng.choice([1, 2, 3, 7, 14, 100, 1500, 65536])
                c.send(bytes(wire[pos:pos + n]))
                pos += n
                if rng.random() < 0.05:
                    await c.w.drain()
                    await asyncio.sleep(0.001)
            for i, w in enumerate(want):
                got = await asyncio.wait_for(read_frame(c.r), 10)
                check(got == w, f"frame {i}: {(got[0], got[1], short(got[2]))} instead of {(w[0], w[1], short(w[2]))}")

    async def raw_bad_version():
        async with Raw(host, port) as c:
            _, req = handshake_request(host, port, version=12)
            c.send(req)
            head = await asyncio.wait_for(c.r.readuntil(b"\r\n\r\n"), 5)
            check(head.startswith(b"HTTP/1.1 426"), f"status {short(head[:40])}")
            check(b"sec-websocket-version: 13" in head.lower(), "426 without Sec-WebSocket-Version: 13")

    close_p = struct.pack("!H", 1000)
    return [
        ("client: text echo", text),
        ("client: binary echo", binary),
        ("client: empty messages", empty),
        ("client: multi-byte UTF-8", utf8),
        ("client: fragmented messages", fragmented),
        ("client: 16 MiB binary", big_binary),
        ("client: ~16 MiB text in 1 MiB fragments", big_text_fragmented),
        ("client: ping/pong", ping_pong),
        ("client: close 4000 bye echoed", close_code),
        ("client: 1000 pipelined messages", pipelined),
        ("client: 200 concurrent connections", concurrent),
        ("client: permessage-deflate offer ignored", deflate_offer_ignored),
        ("client: unasked subprotocol not chosen", subprotocol_offer),
        ("raw: frame split into 1-byte writes", raw_split_bytes),
        ("raw: frames in the handshake's packet", raw_with_handshake),
        ("raw: code point split across fragments", raw_utf8_across_fragments),
        ("raw: ping between fragments", raw_ping_interleaved),
        ("raw: unsolicited pong ignored", raw_unsolicited_pong),
        ("raw: unmasked client frame -> 1002", raw_expect([frame(0x1, b"hi", mask=False)], (1002,))),
        ("raw: RSV1 without extension -> 1002", raw_expect([frame(0x1, b"hi", rsv=4)], (1002,))),
        ("raw: reserved opcode 3 -> 1002", raw_expect([frame(0x3)], (1002,))),
        ("raw: continuation without start -> 1002", raw_expect([frame(0x0, b"x")], (1002,))),
        ("raw: new message inside fragmented -> 1002",
         raw_expect([frame(0x1, b"a", fin=False), frame(0x1, b"b")], (1002,))),
        ("raw: fragmented ping -> 1002", raw_expect([frame(0x9, b"p", fin=False)], (1002,))),
        ("raw: 126-byte ping -> 1002", raw_expect([frame(0x9, b"p" * 126)], (1002,))),
        ("raw: invalid UTF-8 text -> 1007",
         raw_expect([frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")], (1007,))),
        ("raw: invalid UTF-8 fails fast in a fragment -> 1007", raw_utf8_fail_fast),
        ("raw: invalid UTF-8 fails fast inside a frame -> 1007", raw_utf8_fail_fast_in_frame),
        ("raw: text ending mid code point -> 1007", raw_expect([frame(0x1, b"ok\xe2\x82")], (1007,))),
        ("raw: 1-byte close payload -> 1002", raw_expect([frame(0x8, b"\x03")], (1002,))),
        ("raw: close code 999 -> 1002", raw_expect([frame(0x8, struct.pack("!H", 999))], (1002,))),
        ("raw: close code 1005 on the wire -> 1002", raw_expect([frame(0x8, struct.pack("!H", 1005))], (1002,))),
        ("raw: close reason invalid UTF-8 -> 1007", raw_expect([frame(0x8, close_p + b"\xff")], (1007,))),
        ("raw: 40 MiB frame header -> 1009", raw_expect([frame(0x2, b"", length=40 << 20)], (1009,))),
        ("raw: close 1000 answered", raw_expect([frame(0x8, close_p + b"done")], (1000,))),
        ("raw: empty fragments make an empty message", raw_empty_fragments),
        ("raw: 125-byte ping answered", raw_max_control),
        ("raw: ten pings, ten pongs in order", raw_ten_pings),
        ("raw: nothing answered after the close frame", raw_nothing_after_close),
        ("raw: 125-byte close payload, code 4999", raw_big_close_reason),
        ("raw: RSV3 on a ping -> 1002", raw_expect([frame(0x9, b"p", rsv=1)], (1002,))),
        ("raw: reserved control opcode 0xB -> 1002", raw_expect([frame(0xB, b"")], (1002,))),
        ("raw: 64-bit length with the top bit set -> 1002",
         raw_expect([b"\x82\xff" + struct.pack("!Q", 1 << 63) + b"\0\0\0\0"], (1002,))),
        ("raw: 300 random messages, fragments, pings, chops", raw_random_stream),
        ("raw: version 12 -> 426", raw_bad_version),
        ("raw: backpressure on a peer that does not read", raw_backpressure),
    ]


# ------------------------------------ websockets as server for peer_client ---

class ServerSide:
    """A websockets server; each case is a path the peer_client connects to."""

    def __init__(self, peer_client):
        self.peer_client = peer_client
        self.handlers = {}
        self.port = None

    async def handler(self, ws, path=None):
        path = urllib.parse.urlsplit(path or ws.path).path
        fn = self.handlers.get(path)
        fut = self.verdicts.get(path)
        try:
            if fn is None:
                raise AssertionError(f"no case at {path}")
            await fn(ws)
            if fut and not fut.done():
                fut.set_result(None)
        except Exception as e:  # noqa: BLE001 - handed to the case
            if fut and not fut.done():
                fut.set_exception(e)

    async def run_client(self, path, server_fn, expect_lines=(), port=None):
        """Starts peer_client on path, lets server_fn talk to it, checks both."""
        self.handlers[path] = server_fn
        fut = asyncio.get_running_loop().create_future()
        self.verdicts[path] = fut
        proc = await asyncio.create_subprocess_exec(
            self.peer_client, "--url", f"ws://127.0.0.1:{port or self.port}{path}", "--timeout-ms", "20000",
            stdout=asyncio.subprocess.PIPE)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 25)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError("peer_client did not exit within 25 s")
        lines = out.decode(errors="replace").splitlines()
        try:
            await asyncio.wait_for(fut, 5)
        except asyncio.TimeoutError:
            raise AssertionError(f"server side unfinished after peer_client exited {proc.returncode}: {lines[-6:]}")
        for want in expect_lines:
            check(any(line.startswith(want) for line in lines), f"peer_client printed no '{want}': {lines[-6:]}")
        check(not any(line.startswith("error") for line in lines), f"peer_client: {[x for x in lines if x.startswith('error')]}")
        return lines

    def cases(self):
        async def closed_by(ws, code):
            try:
                await asyncio.wait_for(ws.recv(), 5)
                raise AssertionError("expected the client to close")
            except websockets.ConnectionClosed:
                pass
            check(ws.close_code == code, f"server saw close code {ws.close_code}, expected {code}")

        def echo_case(path, msgs):
            async def fn(ws):
                for m in msgs:
                    await ws.send(m)
                    got = await ws.recv()
                    check(got == m, f"sent {short(m)}, got back {short(got)}")
                await ws.close(1000, "done")

            async def run():
                await self.run_client(path, fn, ["open", "close 1000"])
            return run

        async def frag_from_server(ws):
            await ws.send(["fra", "gme", "nted ✓"])
            check(await ws.recv() == "fragmented ✓", "reassembled text")
            await ws.send([b"\x01", b"", b"\x02\x03"])
            check(await ws.recv() == b"\x01\x02\x03", "reassembled binary")
            await ws.send(["", ""])
            check(await ws.recv() == "", "empty fragments make an empty message")
            await ws.close()

        async def big_from_server(ws):
            data = pattern(BIG)
            await ws.send(data)
            check(await ws.recv() == data, "16 MiB echo")

            async def chunks():
                for i in range(16):
                    yield data[i << 20:(i + 1) << 20]
            await ws.send(chunks())
            check(await ws.recv() == data, "16 MiB in 1 MiB fragments echo")
            await ws.close()

        async def frag_from_client(ws):
            await ws.send("cmd:frag one|two ✓|three")
            check(await ws.recv() == "onetwo ✓three", "client's fragments reassembled")
            await ws.send("cmd:frag |x|")
            check(await ws.recv() == "x", "client's empty fragments")
            await ws.close()

        async def big_from_client(ws):
            await ws.send(f"cmd:big {BIG}")
            got = await ws.recv()
            check(got == pattern(BIG), f"16 MiB from the client: {len(got)} bytes")
            await ws.send(f"cmd:big {BIG} {1 << 20}")
            got = await ws.recv()
            check(got == pattern(BIG), f"16 MiB in 1 MiB frames from the client: {len(got)} bytes")
            await ws.close()

        async def server_ping(ws):
            waiter = await ws.ping(b"are you there \xff")
            await asyncio.wait_for(waiter, 5)
            await ws.close()

        async def client_ping(ws):
            await ws.send("cmd:ping hello")
            check(await ws.recv() == b"pong:hello", "pong payload relayed")
            await ws.close()

        async def client_closes(ws):
            await ws.send("cmd:close 4000 bye")
            await closed_by(ws, 4000)
            check(ws.close_reason == "bye", f"server saw reason {ws.close_reason!r}")

        async def server_closes(ws):
            await ws.send("x")
            await ws.recv()
            await ws.close(4000, "bye")
            check(ws.close_code == 4000, f"client answered close 4000 with {ws.close_code}")

        async def run(path, fn, lines):
            await self.run_client(path, fn, lines)

        return [
            ("server: text echo", echo_case("/text", ["hello", "κόσμε ✓ 𝄞", "a" * 70000])),
            ("server: binary echo", echo_case("/binary", [bytes(range(256)), b"\xff" * 65536])),
            ("server: empty messages", echo_case("/empty", ["", b"", "y"])),
            ("server: fragmented from server", lambda: run("/frag-in", frag_from_server, ["open", "close 1000"])),
            ("server: fragmented from client", lambda: run("/frag-out", frag_from_client, ["close 1000"])),
            ("server: 16 MiB from server", lambda: run("/big-in", big_from_server, ["close 1000"])),
            ("server: 16 MiB from client", lambda: run("/big-out", big_from_client, ["close 1000"])),
            ("server: server ping answered", lambda: run("/ping-in", server_ping, ["close 1000"])),
            ("server: client ping answered", lambda: run("/ping-out", client_ping, ["pong 5", "close 1000"])),
            ("server: client closes 4000 bye", lambda: run("/close-out", client_closes, ["close 4000"])),
            ("server: server closes 4000 bye", lambda: run("/close-in", server_closes, ["close 4000 bye"])),
        ]


async def raw_server_cases(peer_client):
    """A hand-written server that breaks the rules; the client must fail the
    connection with the RFC code and say so in its close frame."""
    script = {}

    async def serve(r, w):
        try:
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            path = head.split(b" ")[1].decode()
            key = ""
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"sec-websocket-key:"):
                    key = line.split(b":", 1)[1].strip().decode()
            frames, want, fut = script[path]
            w.write(ok101(key) + frames)
            try:
                code = await expect_close(r, (want,), then_eof=False)
                fut.set_result(code)
            except Exception as e:  # noqa: BLE001
                fut.set_exception(e)
        finally:
            w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def ok101(key):
        return (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n").encode()

    def case(path, frames, code, line):
        async def run():
            fut = asyncio.get_running_loop().create_future()
            script[path] = (frames, code, fut)
            proc = await asyncio.create_subprocess_exec(
                peer_client, "--url", f"ws://127.0.0.1:{port}{path}", "--timeout-ms", "10000",
                stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(proc.communicate(), 15)
            lines = out.decode(errors="replace").splitlines()
            try:
                await asyncio.wait_for(fut, 5)
            except asyncio.TimeoutError:
                raise AssertionError(f"no close frame from peer_client (exit {proc.returncode}): {lines[-4:]}")
            check(any(x.startswith(line) for x in lines), f"peer_client printed no '{line}': {lines[-4:]}")
        return run

    return server, [
        ("raw server: masked server frame -> 1002", case("/masked", frame(0x1, b"hi", mask=True), 1002, "close 1002")),
        ("raw server: invalid UTF-8 -> 1007",
         case("/utf8", frame(0x1, b"\xf8\x88\x80\x80\x80", mask=False), 1007, "close 1007")),
        ("raw server: RSV2 set -> 1002", case("/rsv", frame(0x2, b"x", mask=False, rsv=2), 1002, "close 1002")),
    ]


async def bad_accept_case(peer_client):
    async def serve(r, w):
        try:
            await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n")
            rest = await asyncio.wait_for(r.read(), 5)   # the client must hang up, sending no frame
            check(rest == b"", f"client sent {short(rest)} after a bad Accept")
        finally:
            w.close()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proc = await asyncio.create_subprocess_exec(
            peer_client, "--url", f"ws://127.0.0.1:{port}/", "--timeout-ms", "10000", stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
        lines = out.decode(errors="replace").splitlines()
        check("open" not in lines, "opened despite a wrong Sec-WebSocket-Accept")
        check(any(x.startswith("close ") for x in lines), f"no close reported: {lines}")
    finally:
        server.close()


async def autobahn_protocol_case(autobahn_client):
    """autobahn_client against a stand-in for the suite's fuzzing server: the
    same three endpoints, a few echo cases, and the agent name checked."""
    cases = ["hello ✓", pattern(1 << 20), ["frag", "mented"]]
    seen = {"cases": [], "report": None}

    async def handler(ws, path=None):
        u = urllib.parse.urlsplit(path or ws.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/getCaseCount":
            await ws.send(str(len(cases)))
        elif u.path == "/runCase":
            n = int(q["case"])
            await ws.send(cases[n - 1])
            got = await asyncio.wait_for(ws.recv(), 10)
            want = "".join(cases[n - 1]) if isinstance(cases[n - 1], list) else cases[n - 1]
            seen["cases"].append((n, q.get("agent"), got == want))
        elif u.path == "/updateReports":
            seen["report"] = q.get("agent")
        await ws.close()

    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            autobahn_client, "--url", f"ws://127.0.0.1:{port}", "--agent", "ws channel/1",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    check(proc.returncode == 0, f"autobahn_client exit {proc.returncode}: {out.decode()[-300:]}")
    check(seen["cases"] == [(1, "ws channel/1", True), (2, "ws channel/1", True), (3, "ws channel/1", True)],
          f"cases seen {seen['cases']}")
    check(seen["report"] == "ws channel/1", f"updateReports agent {seen['report']!r}")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--echo-url", required=True)
    ap.add_argument("--peer-client", required=True)
    ap.add_argument("--autobahn-client")
    args = ap.parse_args()
    u = urllib.parse.urlsplit(args.echo_url)
    print(f"python websockets {websockets.__version__}", flush=True)

    for name, fn in client_cases(args.echo_url, u.hostname, u.port):
        await run_case(name, fn)

    side = ServerSide(args.peer_client)
    side.verdicts = {}
    async with websockets.serve(side.handler, "127.0.0.1", 0, max_size=None, close_timeout=5) as server:
        side.port = server.sockets[0].getsockname()[1]
        for name, fn in side.cases():
            await run_case(name, fn)
    raw, cases = await raw_server_cases(args.peer_client)
    async with raw:
        for name, fn in cases:
            await run_case(name, fn)
    await run_case("raw server: wrong Sec-WebSocket-Accept refused", lambda: bad_accept_case(args.peer_client))
    if args.autobahn_client:
        await run_case("autobahn_client: fuzzing-server protocol", lambda: autobahn_protocol_case(args.autobahn_client))

    passed = sum(1 for _, ok in results if ok)
    print(f"Pass: {passed}, fail: {len(results) - passed}, skip: 0.")


if __name__ == "__main__":
    asyncio.run(main())
