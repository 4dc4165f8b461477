"""What the Python hub peers share: building envelopes, waiting for them,
and counting cases into greatest's summary line."""
import asyncio
import json
import time

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
