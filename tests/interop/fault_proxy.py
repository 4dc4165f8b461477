#!/usr/bin/python3
"""A TCP proxy that breaks connections on purpose (tests/interop/run_recovery.sh).

    fault_proxy.py --listen PORT --target 127.0.0.1:PORT [--target ...] [--seed S]
                   [--cut-mean SECONDS] [--min-life SECONDS]
                   [--stall-prob P] [--stall-max SECONDS] [--chunk-max BYTES]
                   [--log FILE] [--port-file FILE] [--max-runtime SECONDS]

Every accepted connection gets its own connection to a target and bytes
are forwarded both ways, in chunks of random size (1..--chunk-max) with a
turn of the event loop between chunks, so a cut can land inside a
WebSocket frame, not only between frames. With --target given more than
once, connections go to the targets in turn (the first to the first, the
second to the second, ...): a client that reconnects through the proxy
lands on another server each time.

Faults, drawn from a random source seeded with (--seed, connection number)
so that a failing run is repeatable as far as the peers' timing allows:
  - cut: after a lifetime drawn from an exponential distribution (mean
    --cut-mean; 0 = never cut) but never below --min-life (default 0.3 s,
    so that some handshakes complete), both sides are closed abruptly:
    either a reset (SO_LINGER 0) or a plain close, also drawn at random,
    and never a WebSocket close frame;
  - stall: with probability --stall-prob a connection stops forwarding
    (bytes are held, not dropped) at a random moment of its life, for up
    to --stall-max seconds; then it resumes, or is cut if its lifetime ran
    out meanwhile.

--listen 0 takes a free port; "listening PORT" goes to stdout and, written
atomically, to --port-file. One log line per event (accepted, stalled,
resumed, cut, closed) goes to --log (default stderr), with the bytes
forwarded each way. SIGTERM or SIGINT: every connection is aborted and the
proxy exits 0. --max-runtime bounds its life in case nobody stops it.
Loopback only: it listens on 127.0.0.1."""
import argparse
import asyncio
import os
import random
import signal
import socket
import struct
import sys
import time


class Cut(Exception):
    """The fault schedule ended the connection."""


class Conn:
    def __init__(self, proxy, num, creader, cwriter):
        self.p = proxy
        self.num = num
        self.creader, self.cwriter = creader, cwriter
        self.sreader = self.swriter = None
        self.up = self.down = 0         # bytes client->target, target->client
        self.t0 = time.monotonic()
        self.flowing = asyncio.Event()  # cleared while stalled
        self.flowing.set()
        self.done = False
        rng = random.Random(f"{proxy.seed}:{num}")
        # Every draw for this connection happens here or in its own pumps,
        # so the schedule depends on the seed and the connection number only.
        a = proxy.args
        self.life = None
        if a.cut_mean > 0:
            self.life = max(a.min_life, rng.expovariate(1.0 / a.cut_mean))
        self.stall_at = self.stall_len = None
        if rng.random() < a.stall_prob:
            span = self.life if self.life is not None else 5.0
            self.stall_at = rng.uniform(0.0, span)
            self.stall_len = rng.uniform(0.0, a.stall_max)
        self.reset = rng.random() < 0.5
        self.rng_up = random.Random(f"{proxy.seed}:{num}:up")
        self.rng_down = random.Random(f"{proxy.seed}:{num}:down")

    def log(self, what):
        self.p.log(f"conn {self.num} {what} at {time.monotonic() - self.t0:.3f}s "
                   f"up {self.up} down {self.down}")

    def abort(self, reset):
        for w in (self.cwriter, self.swriter):
            if w is None:
                continue
            if reset:
                sock = w.get_extra_info("socket")
                try:
                    # Linger 0: close() sends a reset instead of a FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            w.transport.abort()

    async def pump(self, reader, writer, rng, up):
        while True:
            data = await reader.read(65536)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            i = 0
            while i < len(data):
                await self.flowing.wait()
                n = rng.randint(1, self.p.args.chunk_max)
                writer.write(data[i:i + n])
                n = min(n, len(data) - i)
                i += n
                if up:
                    self.up += n
                else:
                    self.down += n
                await writer.drain()
                # A turn of the loop between chunks: this is where a cut
                # (or a stall) lands, inside a frame as often as not.
                await asyncio.sleep(0)

    async def schedule(self):
        """Sleeps until the stall and the cut, in time order; raises Cut."""
        now = 0.0
        if self.stall_at is not None and (self.life is None or self.stall_at < self.life):
            await asyncio.sleep(self.stall_at - now)
            self.flowing.clear()
            self.log(f"stalled for {self.stall_len:.3f}s")
            now = self.stall_at
            resume = self.stall_at + self.stall_len
            if self.life is None or resume < self.life:
                await asyncio.sleep(self.stall_len)
                self.flowing.set()
                self.log("resumed")
                now = resume
        if self.life is None:
            await asyncio.Event().wait()    # until the connection ends
        await asyncio.sleep(max(0.0, self.life - now))
        raise Cut()

    async def run(self):
        host, port = self.p.targets[(self.num - 1) % len(self.p.targets)]
        self.p.log(f"conn {self.num} accepted target {host}:{port} life "
                   f"{'none' if self.life is None else f'{self.life:.3f}s'}"
                   + (f" stall at {self.stall_at:.3f}s for {self.stall_len:.3f}s" if self.stall_at is not None else ""))
        try:
            self.sreader, self.swriter = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except (OSError, asyncio.TimeoutError) as e:
            self.p.log(f"conn {self.num} target unreachable: {e!r}")
            self.abort(reset=True)
            return
        tasks = [asyncio.create_task(self.pump(self.creader, self.swriter, self.rng_up, True)),
                 asyncio.create_task(self.pump(self.sreader, self.cwriter, self.rng_down, False))]
        sched = asyncio.create_task(self.schedule())
        how = None
        try:
            pending = set(tasks) | {sched}
            while how is None:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in finished:
                    exc = t.exception()
                    if t is sched:
                        how = "cut"
                    elif exc is not None:
                        # A reset (or error) on one side goes to the other as a reset.
                        how = f"closed ({type(exc).__name__} on {'client' if t is tasks[0] else 'target'} side)"
                    elif all(x.done() for x in tasks):
                        how = "closed by both sides"
        except asyncio.CancelledError:
            how = "aborted at exit"
        for t in tasks + [sched]:
            t.cancel()
        await asyncio.gather(*tasks, sched, return_exceptions=True)
        if how == "cut":
            self.abort(self.reset)
            self.log(f"cut ({'reset' if self.reset else 'close'})")
        elif how.startswith("closed ("):
            self.abort(True)
            self.log(how)
        elif how == "closed by both sides":
            for w in (self.cwriter, self.swriter):
                w.close()
            self.log(how)
        else:
            self.abort(True)
            self.log(how)


class Proxy:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.targets = []
        for t in args.target:
            host, _, port = t.rpartition(":")
            self.targets.append((host, int(port)))
        self.count = 0
        self.conns = set()
        self.logf = open(args.log, "a", buffering=1) if args.log else sys.stderr

    def log(self, line):
        self.logf.write(f"{time.time():.3f} {line}\n")

    async def accept(self, reader, writer):
        self.count += 1
        c = Conn(self, self.count, reader, writer)
        task = asyncio.current_task()
        self.conns.add(task)
        try:
            await c.run()
        finally:
            self.conns.discard(task)

    async def main(self):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(signum, frame):
            # From now on ignored: `timeout` sends its SIGTERM twice (to the
            # program, then to its process group), and on a busy machine the
            # second may come late, after the loop closed (which would
            # restore the default action had loop.add_signal_handler set
            # it) or while Python finalizes (which restores it for a Python
            # handler, not for SIG_IGN): the exit would be "killed by
            # SIGTERM" instead of 0.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if not loop.is_closed():
                loop.call_soon_threadsafe(stop.set)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        server = await asyncio.start_server(self.accept, "127.0.0.1", self.args.listen)
        port = server.sockets[0].getsockname()[1]
        if self.args.port_file:
            tmp = f"{self.args.port_file}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(f"{port}\n")
            os.replace(tmp, self.args.port_file)    # a reader never sees half a number
        print(f"listening {port}", flush=True)
        self.log(f"listening {port} target {' '.join(self.args.target)} seed {self.seed}")
        try:
            await asyncio.wait_for(stop.wait(), self.args.max_runtime or None)
            why = "signal"
        except asyncio.TimeoutError:
            why = "max runtime"
        server.close()
        for t in list(self.conns):
            t.cancel()
        await asyncio.wait_for(asyncio.gather(*self.conns, return_exceptions=True), 5)
        self.log(f"exit ({why}) after {self.count} connections")


def main():
    ap = argparse.ArgumentParser(description="TCP proxy that cuts and stalls connections")
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--target", required=True, action="append",
                    help="127.0.0.1:PORT; repeated: each connection goes to the next, in turn")
    ap.add_argument("--seed", default="1")
    ap.add_argument("--cut-mean", type=float, default=2.0, help="mean lifetime in seconds, 0 = never cut")
    ap.add_argument("--min-life", type=float, default=0.3)
    ap.add_argument("--stall-prob", type=float, default=0.0)
    ap.add_argument("--stall-max", type=float, default=1.0)
    ap.add_argument("--chunk-max", type=int, default=512)
    ap.add_argument("--log")
    ap.add_argument("--port-file")
    ap.add_argument("--max-runtime", type=float, default=0, help="exit after this many seconds, 0 = never")
    args = ap.parse_args()
    if args.chunk_max < 1 or not 0 <= args.stall_prob <= 1 or args.cut_mean < 0:
        ap.error("bad --chunk-max, --stall-prob or --cut-mean")
    asyncio.run(Proxy(args).main())


if __name__ == "__main__":
    main()
