#!/usr/bin/python3
"""wss:// against Python websockets and its ssl module, both directions.
Started by run_tls.sh, which made the throwaway CA and certificates and
started echo_server --tls-cert (--echo-port); this script starts its own
servers, proxy and client_cli processes (stopped by PID), on loopback only,
with bounded waits.

  * websockets as the client of echo_server over TLS, verifying it against
    the test CA by IP address and by name: small and 1 MiB messages, text
    and binary, a pipelined burst;
  * websockets as a TLS server for client_cli wss:// (--cafile): a small
    and a 1 MiB message to the client, a 100 KiB one from it; SNI is the
    name for a name and absent for an IP address;
  * a proxy that forwards the TLS byte stream one byte per write
    (TCP_NODELAY, the first 8 KiB each way paced so the reader sees them
    one at a time), between websockets and echo_server and between
    client_cli and echo_server: every record cut at every byte position,
    and the echo still right both ways.

Prints one line per case, then "Pass: N, fail: N, skip: 0."."""
import argparse
import asyncio
import json
import os
import socket
import ssl
import subprocess
import threading
import time

import websockets

from envelope_util import case as shared_case, check, summary

MIB = 1 << 20


async def case(name, coro, timeout=60):
    return await shared_case(name, coro, timeout)


def client_ctx(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# ---- a proxy: one byte per write ------------------------------------------

class ByteProxy:
    """Accepts one connection at a time and forwards each direction one byte
    per send() with TCP_NODELAY, so every byte leaves in a segment of its
    own. The first PACED bytes of each direction wait a little between
    bytes, so the reader really gets them one read at a time (the TLS
    handshake and the first records); the rest go as fast as one-byte
    writes go."""
    PACED = 8192

    def __init__(self, target_port):
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.lsock.settimeout(0.5)
        self.port = self.lsock.getsockname()[1]
        self.bytes = [0, 0]         # client->server, server->client
        self.writes = [0, 0]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            s = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            for x in (c, s):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                x.settimeout(None)
            a = threading.Thread(target=self.pump, args=(c, s, 0), daemon=True)
            b = threading.Thread(target=self.pump, args=(s, c, 1), daemon=True)
            a.start()
            b.start()

    def pump(self, src, dst, d):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                for i in range(len(data)):
                    if dst.send(data[i:i + 1]) != 1:
                        raise OSError("short one-byte send")
                    self.bytes[d] += 1
                    self.writes[d] += 1
                    if self.bytes[d] <= self.PACED:
                        time.sleep(0.0002)
        except OSError:
            pass
        for x in (dst, src):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.lsock.close()


# ---- websockets as the client of echo_server --------------------------------

async def echo_cases(url, ctx, label, big=True):
    async with websockets.connect(url, ssl=ctx, max_size=8 * MIB, open_timeout=20) as ws:
        for msg in ["hello", "é" * 200, b"\x00\xff" * 70, "x" * 70000]:
            await ws.send(msg)
            back = await ws.recv()
            check(back == msg, f"{label}: echo of {len(msg)} {'bytes' if isinstance(msg, bytes) else 'chars'} differs")
        if big:
            blob = os.urandom(MIB)
            await ws.send(blob)
            check(await ws.recv() == blob, f"{label}: 1 MiB binary echo differs")
            text = "".join(chr(0x41 + (i % 26)) for i in range(MIB))
            await ws.send(text)
            check(await ws.recv() == text, f"{label}: 1 MiB text echo differs")
        burst = [f"burst {i}" for i in range(200)]
        for m in burst:
            await ws.send(m)
        got = [await ws.recv() for _ in burst]
        check(got == burst, f"{label}: the pipelined burst came back out of order or changed")


# ---- websockets as the TLS server of client_cli ------------------------------

async def run_cli(args, timeout=30):
    p = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(p.communicate(), timeout)
    except asyncio.TimeoutError:
        p.kill()
        await p.wait()
        raise AssertionError(f"client_cli still running after {timeout} s")
    return p.returncode, out.decode("utf-8", "replace")


async def cli_server_case(cli, cafile, cert, key, host):
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.minimum_version = ssl.TLSVersion.TLSv1_2
    sctx.load_cert_chain(cert, key)
    sni = []
    sctx.sni_callback = lambda sock, name, c: sni.append(name)
    got = []
    big = json.dumps({"type": "big", "data": "y" * MIB})

    async def handler(ws, path=None):
        await ws.send(json.dumps({"type": "welcome", "n": 1}))
        await ws.send(big)
        async for m in ws:
            got.append(m)

    async with websockets.serve(handler, "127.0.0.1", 0, ssl=sctx, max_size=8 * MIB) as server:
        port = server.sockets[0].getsockname()[1]
        payload = json.dumps({"data": "z" * 100000})
        rc, out = await run_cli([cli, "--url", f"wss://{host}:{port}/ws", "--cafile", cafile,
                                 "--send", "hello", payload, "--count", "2", "--max-attempts", "1"])
    check(rc == 0, f"client_cli exit {rc}: {out[-400:]}")
    check('message {"type": "welcome", "n": 1}' in out, f"no welcome in client_cli's output: {out[-300:]}")
    check(f"message {big}" in out, "the 1 MiB message did not reach client_cli intact")
    check(len(got) == 1 and json.loads(got[0]) == {"type": "hello", "payload": {"data": "z" * 100000}},
          f"the 100 KiB message from client_cli: {[m[:80] for m in got]}")
    want = None if host[0].isdigit() else host
    check(sni == [want], f"SNI {sni}, expected {[want]}")


async def cli_proxy_case(cli, cafile, echo_port):
    proxy = ByteProxy(echo_port)
    try:
        rc, out = await run_cli([cli, "--url", f"wss://127.0.0.1:{proxy.port}/", "--cafile", cafile,
                                 "--send", "hello", '{"n":1}', "--send", "hello", json.dumps({"n": "w" * 3000}),
                                 "--count", "2", "--max-attempts", "1"], timeout=60)
    finally:
        proxy.close()
    check(rc == 0, f"client_cli exit {rc}: {out[-400:]}")
    check(out.count('message {"type":"hello"') == 2, f"client_cli did not get both echoes: {out[-400:]}")
    check('"w' + "w" * 2999 + '"' in out, "the 3000-byte echo differs")
    check(proxy.writes == proxy.bytes and min(proxy.bytes) > 1000,
          f"proxy: {proxy.bytes} bytes in {proxy.writes} writes")


async def py_proxy_case(cafile, echo_port):
    proxy = ByteProxy(echo_port)
    try:
        await echo_cases(f"wss://127.0.0.1:{proxy.port}/", client_ctx(cafile), "via proxy", big=False)
    finally:
        proxy.close()
    check(proxy.writes == proxy.bytes and min(proxy.bytes) > 70000,
          f"proxy: {proxy.bytes} bytes in {proxy.writes} writes")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--echo-port", type=int, required=True, help="echo_server --tls-cert (the good certificate)")
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--cert", required=True, help="a certificate for 127.0.0.1 and localhost")
    ap.add_argument("--key", required=True)
    ap.add_argument("--client-cli", required=True)
    a = ap.parse_args()
    ctx = client_ctx(a.cafile)
    await case("websockets -> echo_server wss://127.0.0.1 (IP verified): small and 1 MiB, text and binary",
               echo_cases(f"wss://127.0.0.1:{a.echo_port}/", ctx, "by IP"))
    await case("websockets -> echo_server wss://localhost (name verified): small and 1 MiB",
               echo_cases(f"wss://localhost:{a.echo_port}/", ctx, "by name"))
    for host in ("127.0.0.1", "localhost"):
        await case(f"client_cli wss://{host} -> websockets TLS server: 1 MiB in, 100 KiB out, SNI",
                   cli_server_case(a.client_cli, a.cafile, a.cert, a.key, host))
    await case("websockets -> one-byte-write proxy -> echo_server: every record cut, echo intact",
               py_proxy_case(a.cafile, a.echo_port), timeout=120)
    await case("client_cli -> one-byte-write proxy -> echo_server: every record cut, echo intact",
               cli_proxy_case(a.client_cli, a.cafile, a.echo_port), timeout=120)
    summary()


if __name__ == "__main__":
    asyncio.run(main())
