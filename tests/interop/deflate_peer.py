#!/usr/bin/python3
"""permessage-deflate (RFC 7692) interop with Python websockets (Debian's
python3-websockets 10.x), in both roles.

  * websockets as the client of echo_server --deflate (--echo-url): every
    parameter combination the client can ask for, each checked against what
    the server agreed (the response header and websockets' view of it), then
    echo round trips of text and binary messages of 0 bytes to 1 MiB,
    compressible and random;
  * a raw client that does its own handshake and framing: the server's
    frames for compressible messages of at least --min-size bytes carry RSV1
    and inflate to the message, shorter ones do not, uncompressed messages
    on a compressed connection are accepted, RSV1 on control or continuation
    frames fails with 1002, a small message that inflates past the server's
    --max-message fails with 1009, corrupt deflate data fails with 1007, and
    a few negotiation cases (a declined offer, an offer after an unusable
    one, window bits the server must honour);
  * websockets as the server for client_cli --deflate (--client-cli): every
    parameter combination a server can answer with, compressed messages to
    the client (printed by it) and from it (seen with RSV1 set).

Prints "ok NAME" or "FAIL NAME: why" per case and, last, greatest's summary
line. Every wait is bounded; 127.0.0.1 only.
"""
import argparse
import asyncio
import base64
import functools
import hashlib
import json
import os
import random
import struct
import time
import urllib.parse
import zlib

import websockets
from envelope_util import case, check, summary
from websockets.extensions.permessage_deflate import (ClientPerMessageDeflateFactory, PerMessageDeflate,
                                                       ServerPerMessageDeflateFactory)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TAIL = b"\x00\x00\xff\xff"
SIZES = [0, 1, 63, 64, 1000, 100000, 1 << 20]


def short(b):
    r = repr(b)
    return r if len(r) < 80 else r[:77] + "..."


# ------------------------------------------------------------------ data ---

WORDS = ["alice", "bob", "general", "random", "hello", "there", "message", "the", "quick", "brown", "fox", "ok"]


@functools.lru_cache(maxsize=None)
def chat_text(n, seed=1):
    """n bytes of JSON chat envelopes: compresses several-fold, like real traffic."""
    rnd = random.Random(seed)
    out, size = [], 0
    while size < n:
        env = json.dumps({"type": "message", "payload": {
            "channel": rnd.choice(WORDS[2:4]), "from": rnd.choice(WORDS[:2]),
            "data": {"text": " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12))), "n": size}}})
        out.append(env)
        size += len(env) + 1
    return "\n".join(out)[:n]


@functools.lru_cache(maxsize=None)
def random_text(n, seed=2):
    rnd = random.Random(seed)
    return "".join(chr(rnd.randint(0x21, 0x7e)) for _ in range(n))


@functools.lru_cache(maxsize=None)
def random_bytes(n, seed=3):
    return random.Random(seed).randbytes(n)


def messages():
    """(label, message) for every size: compressible and random, text and binary."""
    for n in SIZES:
        yield f"text {n} chat", chat_text(n)
        yield f"text {n} random", random_text(n)
        yield f"binary {n} chat", chat_text(n).encode()
        yield f"binary {n} random", random_bytes(n)


def ext_params(header):
    """Parses one Sec-WebSocket-Extensions value into [(name, {param: value})]."""
    out = []
    for ext in header.split(","):
        parts = [p.strip() for p in ext.split(";")]
        params = {}
        for p in parts[1:]:
            k, _, v = p.partition("=")
            params[k.strip().lower()] = v.strip().strip('"') if v else True
        out.append((parts[0].lower(), params))
    return out


# --------------------------------------------------------------- raw TCP ---

def frame(opcode, payload=b"", fin=True, rsv1=False, mask=True):
    n = len(payload)
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    k = (key * (n // 4 + 1))[:n]
    return head + key + (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def deflate_message(data, wbits=15):
    """One message compressed afresh (always allowed for a sender), tail removed."""
    c = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    check(out.endswith(TAIL), "zlib's sync flush has no tail")
    return out[:-4]


class Raw:
    """A raw client connection: our own handshake, framing and inflating."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.inflater = zlib.decompressobj(-15)

    async def __aenter__(self):
        self.r, self.w = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc):
        self.w.close()

    async def upgrade(self, extensions="permessage-deflate"):
        """Returns the response's Sec-WebSocket-Extensions value ("" if none)."""
        key = base64.b64encode(os.urandom(16)).decode()
        ext = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
        self.w.write((f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      f"{ext}\r\n").encode())
        head = (await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
        check(head.startswith("HTTP/1.1 101"), f"status line {short(head[:40])}")
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        values = []
        for line in head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "sec-websocket-accept":
                check(v.strip() == accept, "wrong Sec-WebSocket-Accept")
            if k.strip().lower() == "sec-websocket-extensions":
                values.append(v.strip())
        self.extensions = ", ".join(values)
        bits, self.client_bits = 15, 15
        for name, params in ext_params(self.extensions) if self.extensions else []:
            if name == "permessage-deflate" and params.get("server_max_window_bits") not in (None, True):
                bits = int(params["server_max_window_bits"])
            if name == "permessage-deflate" and params.get("client_max_window_bits") not in (None, True):
                self.client_bits = int(params["client_max_window_bits"])
        self.inflater = zlib.decompressobj(-bits)
        return self.extensions

    def deflate(self, data):
        """data as one compressed message within the window we were given."""
        return deflate_message(data, self.client_bits)

    def send(self, data):
        self.w.write(data)

    async def read_frame(self):
        """(fin, rsv1, opcode, payload) of the server's next frame (unmasked)."""
        b0, b1 = await self.r.readexactly(2)
        check(not b1 & 0x80, "the server masked a frame")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.r.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.r.readexactly(8))[0]
        return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, await self.r.readexactly(n)

    async def read_message(self):
        """(opcode, compressed, payload) of the next data message, inflated."""
        fin, rsv1, op, data = await asyncio.wait_for(self.read_frame(), 10)
        check(op in (1, 2), f"expected a data frame, got opcode {op}")
        parts = [data]
        while not fin:
            fin, r, o, data = await asyncio.wait_for(self.read_frame(), 10)
            check(o == 0, f"expected a continuation, got opcode {o}")
            check(not r, "RSV1 on a continuation frame")
            parts.append(data)
        payload = b"".join(parts)
        if rsv1:
            payload = self.inflater.decompress(payload + TAIL)
        return op, rsv1, payload

    async def expect_close(self, codes):
        while True:
            fin, rsv1, op, data = await asyncio.wait_for(self.read_frame(), 10)
            if op == 0x8:
                break
        check(len(data) >= 2, f"close frame without a code: {short(data)}")
        code = struct.unpack("!H", data[:2])[0]
        check(code in codes, f"close code {code}, expected {codes}")
        return code


# ------------------------------------------- websockets as client of echo_server ---

# What the client asks for; None: websockets' default offer (compression="deflate").
CLIENT_OFFERS = [
    ("default offer", None),
    ("plain offer", dict(client_max_window_bits=None)),
    ("server_no_context_takeover", dict(server_no_context_takeover=True)),
    ("client_no_context_takeover", dict(client_no_context_takeover=True)),
    ("both no_context_takeover", dict(server_no_context_takeover=True, client_no_context_takeover=True)),
    ("server_max_window_bits=9", dict(server_max_window_bits=9)),
    ("server_max_window_bits=12", dict(server_max_window_bits=12)),
    ("client_max_window_bits=9", dict(client_max_window_bits=9)),
    ("client_max_window_bits=11, server_max_window_bits=10", dict(client_max_window_bits=11, server_max_window_bits=10)),
    ("everything", dict(server_no_context_takeover=True, client_no_context_takeover=True,
                        server_max_window_bits=10, client_max_window_bits=10)),
]


def client_cases(url, host, port, max_message, min_size):
    def connect(offer):
        kw = dict(max_size=None, open_timeout=5, close_timeout=5)
        if offer is None:
            kw["compression"] = "deflate"
        else:
            kw["compression"] = None
            kw["extensions"] = [ClientPerMessageDeflateFactory(**offer)]
        return websockets.connect(url, **kw)

    def agreed_case(offer):
        async def run():
            async with connect(offer) as ws:
                header = ws.response_headers.get("Sec-WebSocket-Extensions", "")
                exts = ext_params(header) if header else []
                check(len(exts) == 1 and exts[0][0] == "permessage-deflate",
                      f"response Sec-WebSocket-Extensions {header!r}")
                check(len(ws.extensions) == 1 and isinstance(ws.extensions[0], PerMessageDeflate),
                      f"websockets negotiated {ws.extensions}")
                e, params = ws.extensions[0], exts[0][1]
                o = offer or {}
                # What the client asked of the server, the server must do.
                if o.get("server_no_context_takeover"):
                    check(e.remote_no_context_takeover, "server_no_context_takeover asked, not agreed")
                if o.get("server_max_window_bits"):
                    check(e.remote_max_window_bits <= o["server_max_window_bits"],
                          f"server window {e.remote_max_window_bits} above {o['server_max_window_bits']}")
                if o.get("client_no_context_takeover"):
                    check(e.local_no_context_takeover, "client_no_context_takeover lost")
                if "client_max_window_bits" in params:
                    check(params["client_max_window_bits"] is not True, "client_max_window_bits without a value")
                    check(9 <= int(params["client_max_window_bits"]) <= 15, "client_max_window_bits out of range")
                for m in (b"x" * 200, "y" * 200):
                    await ws.send(m)
                    check(await ws.recv() == m, "echo after negotiation")
        return run

    def echo_case(offer):
        async def run():
            async with connect(offer) as ws:
                check(len(ws.extensions) == 1, "permessage-deflate not negotiated")
                for label, m in messages():
                    await ws.send(m)
                    got = await asyncio.wait_for(ws.recv(), 30)
                    check(type(got) is type(m) and got == m,
                          f"{label}: sent {len(m)}, got {len(got)} {type(got).__name__}, equal={got == m}")
                # fragmented compressed messages too
                await ws.send([chat_text(500), chat_text(700, 5), ""])
                check(await ws.recv() == chat_text(500) + chat_text(700, 5), "fragmented compressed text")
        return run

    async def declined_window_8():
        # The server cannot compress with 8 (zlib): it declines the offer,
        # and the connection works uncompressed.
        async with connect(dict(server_max_window_bits=8)) as ws:
            check(ws.extensions == [], f"expected no extension, got {ws.response_headers.get('Sec-WebSocket-Extensions')}")
            await ws.send("z" * 300)
            check(await ws.recv() == "z" * 300, "echo without the extension")

    async def no_offer():
        async with websockets.connect(url, compression=None, open_timeout=5) as ws:
            check("Sec-WebSocket-Extensions" not in ws.response_headers, "an extension nobody offered")
            await ws.send("q" * 300)
            check(await ws.recv() == "q" * 300, "echo without the extension")

    # ---- raw: what the wire shows ----
    async def raw_rsv1_on_wire():
        async with Raw(host, port) as c:
            ext = await c.upgrade("permessage-deflate; client_max_window_bits")
            check(ext.startswith("permessage-deflate"), f"response extensions {ext!r}")
            for n in (min_size, min_size + 1, 1000, 100000):
                m = chat_text(n, n).encode()
                c.send(frame(2, c.deflate(m), rsv1=True))
                op, rsv1, got = await c.read_message()
                check(got == m, f"{n} bytes: echo differs")
                check(rsv1, f"{n}-byte compressible message came back without RSV1")
            for n in (0, 1, min_size - 1):
                m = chat_text(n, n).encode()
                c.send(frame(2, c.deflate(m), rsv1=True))
                op, rsv1, got = await c.read_message()
                check(got == m, f"{n} bytes: echo differs")
                check(not rsv1, f"{n}-byte message (under {min_size}) came back compressed")

    async def raw_uncompressed_accepted():
        async with Raw(host, port) as c:
            await c.upgrade()
            for m in (b"plain", chat_text(5000).encode()):
                c.send(frame(1, m))                 # RSV1 clear: delivered as it is
                op, rsv1, got = await c.read_message()
                check(op == 1 and got == m, "uncompressed message on a compressed connection")

    async def raw_fragmented_compressed():
        async with Raw(host, port) as c:
            await c.upgrade()
            m = chat_text(20000).encode()
            z = c.deflate(m)
            a, b = len(z) // 3, 2 * len(z) // 3
            c.send(frame(1, z[:a], fin=False, rsv1=True) + frame(0, z[a:b], fin=False) + frame(0, z[b:]))
            op, rsv1, got = await c.read_message()
            check(got == m, "fragmented compressed message")

    async def raw_context_takeover():
        # Our messages compressed against each other (the server did not ask
        # for client_no_context_takeover in a plain offer's answer, else skip).
        async with Raw(host, port) as c:
            ext = await c.upgrade()
            params = ext_params(ext)[0][1]
            if "client_no_context_takeover" in params:
                return
            comp = zlib.compressobj(9, zlib.DEFLATED, -c.client_bits)
            m = chat_text(3000, 9).encode()
            for i in range(3):
                z = comp.compress(m) + comp.flush(zlib.Z_SYNC_FLUSH)
                c.send(frame(2, z[:-4], rsv1=True))
                op, rsv1, got = await c.read_message()
                check(got == m, f"message {i} with context takeover")

    async def raw_rsv1_control():
        async with Raw(host, port) as c:
            await c.upgrade()
            c.send(frame(9, b"ping", rsv1=True))
            await c.expect_close([1002])

    async def raw_rsv1_continuation():
        async with Raw(host, port) as c:
            await c.upgrade()
            z = c.deflate(b"a" * 100)
            c.send(frame(2, z[:2], fin=False, rsv1=True) + frame(0, z[2:], rsv1=True))
            await c.expect_close([1002])

    async def raw_rsv1_without_extension():
        async with Raw(host, port) as c:
            ext = await c.upgrade(None)
            check(ext == "", f"extensions {ext!r} without an offer")
            c.send(frame(2, deflate_message(b"b" * 100), rsv1=True))
            await c.expect_close([1002])

    async def raw_inflate_bomb():
        async with Raw(host, port) as c:
            await c.upgrade()
            comp = zlib.compressobj(9, zlib.DEFLATED, -c.client_bits)
            z = comp.compress(bytes(2 * max_message)) + comp.flush(zlib.Z_SYNC_FLUSH)
            check(len(z) < max_message // 100, "the bomb is not small")
            c.send(frame(2, z[:-4], rsv1=True))
            await c.expect_close([1009])

    async def raw_corrupt():
        for name, z in (("reserved block type", b"\xff\xff\xff\xff\x00"),
                        ("bad stored lengths", b"\x00\x05\x00\x00\x00Hello"),
                        ("distance too far back", b"\xf2\x00\x11\x00\x00")):
            async with Raw(host, port) as c:
                await c.upgrade("permessage-deflate; client_no_context_takeover")
                c.send(frame(1, z, rsv1=True))
                code = await c.expect_close([1007])
                check(code == 1007, name)

    async def raw_negotiation():
        cases = [
            # (offer, expect accepted, params the answer must carry)
            ("x-webkit-deflate-frame", False, {}),
            ("permessage-deflate; unknown_param", False, {}),
            ("permessage-deflate; server_max_window_bits=16", False, {}),
            ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", False, {}),
            ("permessage-deflate; foo=1, permessage-deflate", True, {}),
            ("permessage-deflate; server_no_context_takeover", True, {"server_no_context_takeover": True}),
            ("permessage-deflate; server_max_window_bits=10", True, {"server_max_window_bits": "10"}),
            ('permessage-deflate; server_max_window_bits="11"', True, {"server_max_window_bits": "11"}),
        ]
        for offer, accepted, want in cases:
            async with Raw(host, port) as c:
                ext = await c.upgrade(offer)
                if not accepted:
                    check(ext == "", f"offer {offer!r} answered with {ext!r}")
                    continue
                exts = ext_params(ext)
                check(len(exts) == 1 and exts[0][0] == "permessage-deflate", f"offer {offer!r}: answer {ext!r}")
                for k, v in want.items():
                    got = exts[0][1].get(k)
                    if k == "server_max_window_bits":
                        check(got is not None and got is not True and int(got) <= int(v),
                              f"offer {offer!r}: answer {ext!r}")
                    else:
                        check(got == v, f"offer {offer!r}: answer {ext!r}")
                check("client_max_window_bits" not in exts[0][1], f"client_max_window_bits not offered: {ext!r}")
                m = chat_text(4000).encode()
                c.send(frame(2, c.deflate(m), rsv1=True))
                op, rsv1, got = await c.read_message()
                check(got == m, f"offer {offer!r}: echo")

    cases = []
    for label, offer in CLIENT_OFFERS:
        cases.append((f"websockets client, {label}: agreed as asked", agreed_case(offer)))
        cases.append((f"websockets client, {label}: echo 0 B..1 MiB, text/binary, chat/random", echo_case(offer)))
    cases += [
        ("websockets client, server_max_window_bits=8: declined, works uncompressed", declined_window_8),
        ("websockets client without an offer: no extension", no_offer),
        (f"raw: RSV1 set on compressible echoes >= {min_size} B, clear below", raw_rsv1_on_wire),
        ("raw: uncompressed messages on a compressed connection", raw_uncompressed_accepted),
        ("raw: a compressed message in three frames", raw_fragmented_compressed),
        ("raw: client context takeover across messages", raw_context_takeover),
        ("raw: RSV1 on a ping fails with 1002", raw_rsv1_control),
        ("raw: RSV1 on a continuation fails with 1002", raw_rsv1_continuation),
        ("raw: RSV1 without the extension fails with 1002", raw_rsv1_without_extension),
        (f"raw: a message inflating past {max_message} B fails with 1009", raw_inflate_bomb),
        ("raw: corrupt deflate data fails with 1007", raw_corrupt),
        ("raw: negotiation (declined, skipped and honoured offers)", raw_negotiation),
    ]
    return cases


# ------------------------------------------- websockets as server for client_cli ---

SERVER_ANSWERS = [
    ("default answer", dict()),
    ("server_no_context_takeover", dict(server_no_context_takeover=True)),
    ("client_no_context_takeover", dict(client_no_context_takeover=True)),
    ("server_max_window_bits=10", dict(server_max_window_bits=10)),
    ("client_max_window_bits=9", dict(client_max_window_bits=9)),
    ("everything", dict(server_no_context_takeover=True, client_no_context_takeover=True,
                        server_max_window_bits=11, client_max_window_bits=12)),
]

CLIENT_SIZES = [10, 100, 1000, 10000, 100000]


class SpyFactory(ServerPerMessageDeflateFactory):
    """The server's extension, noting RSV1 of every data frame the client
    sends, from the first frame on."""

    def __init__(self, rsv1, **kw):
        super().__init__(**kw)
        self.rsv1 = rsv1

    def process_request_params(self, params, accepted_extensions):
        response, ext = super().process_request_params(params, accepted_extensions)
        decode, rsv1 = ext.decode, self.rsv1

        def spy(f, *, max_size=None):
            if f.opcode in (websockets.frames.Opcode.TEXT, websockets.frames.Opcode.BINARY):
                rsv1.append(f.rsv1)
            return decode(f, max_size=max_size)
        ext.decode = spy
        return response, ext


def find_value(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            r = find_value(v, key)
            if r is not None:
                return r
    return None


async def client_cli_case(client_cli, answer):
    seen = {"rsv1": [], "got": []}

    async def handler(ws, path=None):
        seen["offer"] = ws.request_headers.get("Sec-WebSocket-Extensions", "")
        seen["exts"] = list(ws.extensions)
        for n in CLIENT_SIZES:
            await ws.send(json.dumps({"type": "chat", "payload": {"n": n, "text": chat_text(n, n)}}))
        try:
            async for m in ws:
                seen["got"].append(m)
        except websockets.ConnectionClosed:
            pass

    async with websockets.serve(handler, "127.0.0.1", 0, compression=None, max_size=None, close_timeout=5,
                                extensions=[SpyFactory(seen["rsv1"], **answer)]) as server:
        port = server.sockets[0].getsockname()[1]
        sent = json.dumps({"text": chat_text(2000, 77)})
        proc = await asyncio.create_subprocess_exec(
            client_cli, "--url", f"ws://127.0.0.1:{port}/ws", "--deflate", "--count", str(len(CLIENT_SIZES)),
            "--heartbeat-mode", "off", "--max-attempts", "1", "--send", "chat", sent,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    out = out.decode(errors="replace")
    check(proc.returncode == 0, f"client_cli exit {proc.returncode}: {short(out[-300:])}")
    exts = ext_params(seen.get("offer", "")) if seen.get("offer") else []
    check(any(name == "permessage-deflate" for name, _ in exts), f"client offer {seen.get('offer')!r}")
    check(len(seen.get("exts", [])) == 1, "permessage-deflate not negotiated")
    for n in CLIENT_SIZES:
        want = json.dumps({"type": "chat", "payload": {"n": n, "text": chat_text(n, n)}})
        check(f"message {want}" in out, f"client_cli did not print the {n}-byte message")
    got = [m for m in seen["got"] if find_value(json.loads(m), "text") == chat_text(2000, 77)]
    check(len(got) == 1, f"client's message: {short(seen['got'])}")
    check(seen["rsv1"] and seen["rsv1"][-1], f"client's compressible message came without RSV1: {seen['rsv1']}")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--echo-url", help="echo_server --deflate to talk to")
    ap.add_argument("--client-cli", help="client_cli binary (understands --deflate) to serve")
    ap.add_argument("--max-message", type=int, default=4 << 20, help="the echo server's --max-message")
    ap.add_argument("--min-size", type=int, default=64, help="the smallest message the server compresses")
    args = ap.parse_args()
    print(f"python websockets {websockets.__version__}, zlib {zlib.ZLIB_RUNTIME_VERSION}", flush=True)
    if args.echo_url:
        u = urllib.parse.urlsplit(args.echo_url)
        for name, fn in client_cases(args.echo_url, u.hostname, u.port, args.max_message, args.min_size):
            await case(name, fn(), timeout=120)
    if args.client_cli:
        for label, answer in SERVER_ANSWERS:
            await case(f"client_cli via websockets server, {label}", client_cli_case(args.client_cli, answer),
                       timeout=120)
    summary()


if __name__ == "__main__":
    asyncio.run(main())
