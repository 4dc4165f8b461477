"""What the Python hub peers share: building envelopes, waiting for them,
counting cases into greatest's summary line, and starting a server."""
import asyncio
import json
import re
import resource
import subprocess
import threading
import time

import websockets

results = []


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def case(name, coro, timeout=30):
    """Runs one bounded case, prints "ok NAME" or "FAIL NAME: why"; True if it passed."""
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(coro, timeout)
        results.append(True)
        print(f"ok   {name} ({time.monotonic() - t0:.2f} s)", flush=True)
        return True
    except Exception as e:  # noqa: BLE001 - every failure is a failed case
        results.append(False)
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        return False


async def refused(url, code=4001):
    """A connection the server accepts at the HTTP level and then closes
    with code, before any message."""
    ws = await websockets.connect(url, open_timeout=5)
    try:
        m = await asyncio.wait_for(ws.recv(), 5)
        raise AssertionError(f"a refused client got {m!r}")
    except websockets.ConnectionClosed as e:
        check(e.code == code, f"close code {e.code}, not {code}")


def summary():
    passed = sum(results)
    print(f"Pass: {passed}, fail: {len(results) - passed}, skip: 0.", flush=True)


def env(type_, payload=None):
    """{"type": type_, "payload": payload} as text (no payload when None)."""
    return json.dumps({"type": type_} if payload is None else {"type": type_, "payload": payload})


async def recv(ws, want_type=None, timeout=5):
    """The next envelope (of want_type, skipping others)."""
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if want_type is None or m["type"] == want_type:
            return m


async def nothing_more(ws, wait):
    """Fails if anything arrives within wait seconds (a duplicate, say)."""
    try:
        m = await asyncio.wait_for(ws.recv(), wait)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected (duplicate?) message {m!r}")


class Server:
    """A server program (argv) started here, its port read from its
    "listening on http://127.0.0.1:PORT/" line, its output drained."""

    def __init__(self, argv, max_fds=None):
        def limit():
            if max_fds:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_fds, max_fds))
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                  preexec_fn=limit)
        self.lines = []
        deadline = time.monotonic() + 10
        self.port = None
        while time.monotonic() < deadline and self.port is None:
            line = self.p.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
        if self.port is None:
            raise RuntimeError(f"{argv[0]} did not start: " + "".join(self.lines))
        # Drain its output from now on: a full pipe would block (and hide) a
        # server that logs in a loop.
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.p.stdout.readline, "")),
                                       daemon=True)
        self.reader.start()

    def output(self):
        """Everything it printed, once it has exited."""
        self.reader.join(10)
        return "".join(self.lines)

    def say(self, text):
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def url(self, query=""):
        return f"ws://127.0.0.1:{self.port}/ws{query}"


def positioned(m, channel):
    """m without its stream position (a hub with positions, as chat_server
    runs, numbers every channel message: channel, offset, epoch beside type
    and payload), after checking that a channel message has a well-formed
    one and any other message none. Each hub process numbers its own
    channels, so only the form is checked here."""
    m = dict(m)
    pos = {k: m.pop(k) for k in ("channel", "offset", "epoch") if k in m}
    if channel is None:
        check(not pos, f"a position on a message to no channel: {pos!r}")
    else:
        check(pos.get("channel") == channel and isinstance(pos.get("offset"), int) and pos["offset"] >= 0 and
              isinstance(pos.get("epoch"), str) and re.fullmatch(r"[0-9a-f]{16}", pos["epoch"]) is not None,
              f"position {pos!r} for channel {channel!r}")
    return m


def check_subscribed(ack, channel):
    """A hub with positions confirms a plain subscribe with the channel's
    position: {"type":"subscribed","payload":{"channel":C,"offset":N,"epoch":E}}."""
    p = ack.get("payload", {}) if isinstance(ack, dict) else {}
    check(ack.get("type") == "subscribed" and p.get("channel") == channel and isinstance(p.get("offset"), int) and
          isinstance(p.get("epoch"), str) and set(p) == {"channel", "offset", "epoch"}, f"ack {ack!r}")
