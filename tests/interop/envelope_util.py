"""What the Python hub peers share: building envelopes and waiting for them."""
import asyncio
import json


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
