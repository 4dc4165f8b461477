'use strict';
// Interop with Node.js ws (npm), both directions:
//  * ws as a client of echo_server (--echo-url);
//  * ws as a server for the library's client (--peer-client, see
//    peer_client.c), which it drives with "cmd:" messages.
// Prints "ok NAME" or "FAIL NAME: why" per case and, last, greatest's summary
// line. Every wait is bounded; 127.0.0.1 only.
const { spawn } = require('node:child_process');
const { WebSocket, WebSocketServer } = require('ws');
const { withTimeout, runCase: runCaseWithin, summary } = require('./cases');
const runCase = (name, fn, ms = 60000) => runCaseWithin(name, fn, ms);

const BIG = 16 * 1024 * 1024;

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing ${name}`);
  return process.argv[i + 1];
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

function short(v) {
  const s = Buffer.isBuffer(v) ? `<${v.length} bytes ${v.subarray(0, 16).toString('hex')}>` : JSON.stringify(v);
  return s.length < 80 ? s : s.slice(0, 77) + '...';
}

// n bytes with byte i = i % 251, as peer_client's cmd:big makes them.
function pattern(n) {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
}


// Queues a socket's messages and its close so a case can await them in order.
class Peer {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiting = [];
    this.pongs = [];
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        resolve({ code, reason: reason.toString() });
        for (const w of this.waiting.splice(0)) w.reject(new Error(`closed ${code} while waiting for a message`));
      });
    });
    ws.on('message', (data, isBinary) => {
      const m = isBinary ? Buffer.from(data) : data.toString();
      const w = this.waiting.shift();
      if (w) w.resolve(m);
      else this.queue.push(m);
    });
    ws.on('pong', (data) => this.pongs.push(Buffer.from(data)));
    ws.on('error', () => {});
  }

  next(ms = 10000) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return withTimeout(new Promise((resolve, reject) => this.waiting.push({ resolve, reject })), ms, 'message');
  }

  send(data, opts = {}) {
    return new Promise((resolve, reject) => this.ws.send(data, opts, (err) => (err ? reject(err) : resolve())));
  }

  async echo(m) {
    await this.send(m, { binary: Buffer.isBuffer(m) });
    const got = await this.next();
    check(same(got, m), `sent ${short(m)}, got back ${short(got)}`);
  }
}

function same(a, b) {
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  return a === b;
}

function connect(url, opts = {}) {
  const ws = new WebSocket(url, { maxPayload: 64 * 1024 * 1024, handshakeTimeout: 5000, ...opts });
  const peer = new Peer(ws);
  return withTimeout(new Promise((resolve, reject) => {
    ws.once('open', () => resolve(peer));
    ws.once('error', reject);
  }), 5000, 'open');
}

async function closeAndCheck(peer, code, reason) {
  peer.ws.close(code, reason);
  const c = await withTimeout(peer.closed, 5000, 'close');
  return c;
}

// ------------------------------------------------ ws as client of echo_server

function clientCases(url) {
  const echoCase = (msgs, opts) => async () => {
    const p = await connect(url, opts);
    for (const m of msgs) await p.echo(m);
    await closeAndCheck(p, 1000);
  };
  return [
    ['client: text echo', echoCase(['hello', 'a'.repeat(125), 'b'.repeat(126), 'c'.repeat(65536)])],
    ['client: binary echo', echoCase([Buffer.from([...Array(256).keys()]), Buffer.alloc(70000, 0xff)])],
    ['client: empty messages', echoCase(['', Buffer.alloc(0), 'x'])],
    ['client: multi-byte UTF-8', echoCase(['κόσμε', '€ ✓ 𝄞 \u0000 \u{10FFFF}'])],
    ['client: permessage-deflate offer ignored', async () => {
      const p = await connect(url, { perMessageDeflate: true });
      check(p.ws.extensions === '', `server accepted extensions ${p.ws.extensions}`);
      await p.echo('plain');
      await closeAndCheck(p, 1000);
    }],
    ['client: fragmented messages', async () => {
      const p = await connect(url);
      await p.send('fra', { fin: false });
      await p.send('gme', { fin: false });
      await p.send('nted ✓', { fin: true });
      check((await p.next()) === 'fragmented ✓', 'fragmented text not reassembled');
      await p.send(Buffer.from([0, 1]), { binary: true, fin: false });
      await p.send(Buffer.alloc(0), { binary: true, fin: false });
      await p.send(Buffer.from([0xff]), { binary: true, fin: true });
      const got = await p.next();
      check(same(got, Buffer.from([0, 1, 0xff])), `fragmented binary: ${short(got)}`);
      await closeAndCheck(p, 1000);
    }],
    ['client: 16 MiB binary', async () => {
      const p = await connect(url);
      const data = pattern(BIG);
      await p.send(data, { binary: true });
      const got = await p.next(30000);
      check(same(got, data), `16 MiB echo: ${Buffer.isBuffer(got) ? got.length : typeof got}`);
      await closeAndCheck(p, 1000);
    }],
    ['client: ~16 MiB text in 1 MiB fragments', async () => {
      const p = await connect(url);
      const piece = 'é✓x'.repeat(Math.floor((1 << 20) / 6)); // 6 bytes of UTF-8 per repeat
      let want = '';
      for (let i = 0; i < 16; i++) {
        await p.send(piece, { fin: i === 15 });
        want += piece;
      }
      const got = await p.next(30000);
      check(got === want, `fragmented text: ${typeof got === 'string' ? got.length : 'binary'} characters`);
      await closeAndCheck(p, 1000);
    }],
    ['client: ping/pong', async () => {
      const p = await connect(url);
      const payload = Buffer.from('ping \x00 payload');
      p.ws.ping(payload);
      await p.echo('after ping');   // the pong precedes the echo on the wire
      check(p.pongs.length === 1 && p.pongs[0].equals(payload), `pongs ${p.pongs.map(short)}`);
      await closeAndCheck(p, 1000);
    }],
    ['client: close 4000 bye echoed', async () => {
      const p = await connect(url);
      await p.echo('x');
      const c = await closeAndCheck(p, 4000, 'bye');
      check(c.code === 4000, `server answered close 4000 with ${c.code}`);
    }],
    ['client: 1000 pipelined messages', async () => {
      const p = await connect(url);
      const msgs = [];
      for (let i = 0; i < 1000; i++) msgs.push(i % 2 ? `message ${i}` : Buffer.alloc(i, i & 0xff));
      await Promise.all(msgs.map((m) => p.send(m, { binary: Buffer.isBuffer(m) })));
      for (const m of msgs) {
        const got = await p.next();
        check(same(got, m), `out of order or lost: ${short(got)} instead of ${short(m)}`);
      }
      await closeAndCheck(p, 1000);
    }],
  ];
}

// ------------------------------------- ws as server for the library's client

function serverCases(peerClient) {
  let wss;
  let port;
  const handlers = new Map();

  async function start() {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: 64 * 1024 * 1024 });
    await new Promise((resolve) => wss.once('listening', resolve));
    port = wss.address().port;
    wss.on('connection', (ws, req) => {
      const h = handlers.get(req.url);
      if (h) h(new Peer(ws));
      else ws.close(1011, 'no case');
    });
  }

  // Runs peer_client against path while serverFn(peer) talks to it; checks
  // the server's verdict and the lines the client printed.
  function clientCase(path, serverFn, wantLines) {
    return async () => {
      if (!wss) await start();
      const verdict = new Promise((resolve, reject) => {
        handlers.set(path, (peer) => serverFn(peer).then(resolve, reject));
      });
      const child = spawn(peerClient, ['--url', `ws://127.0.0.1:${port}${path}`, '--timeout-ms', '20000'],
        { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d) => { out += d; });
      const exited = new Promise((resolve) => child.on('exit', resolve));
      try {
        await withTimeout(verdict, 25000, 'server side');
        await withTimeout(exited, 25000, 'peer_client exit');
      } finally {
        child.kill('SIGKILL');  // no-op once it has exited
      }
      const lines = out.split('\n');
      for (const w of wantLines) {
        check(lines.some((l) => l.startsWith(w)), `peer_client printed no '${w}': ${JSON.stringify(lines.slice(-6))}`);
      }
      const errors = lines.filter((l) => l.startsWith('error'));
      check(errors.length === 0, `peer_client: ${errors}`);
    };
  }

  const echo = (msgs) => async (p) => {
    for (const m of msgs) await p.echo(m);
    await closeAndCheck(p, 1000, 'done');
  };

  const cases = [
    ['server: text echo', clientCase('/text', echo(['hello', 'κόσμε ✓ 𝄞', 'a'.repeat(70000)]), ['open', 'close 1000'])],
    ['server: binary echo', clientCase('/binary', echo([Buffer.from([...Array(256).keys()]), Buffer.alloc(65536, 0xff)]),
      ['close 1000'])],
    ['server: empty messages', clientCase('/empty', echo(['', Buffer.alloc(0), 'y']), ['close 1000'])],
    ['server: fragmented from server', clientCase('/frag-in', async (p) => {
      await p.send('fra', { fin: false });
      await p.send('gme', { fin: false });
      await p.send('nted ✓', { fin: true });
      check((await p.next()) === 'fragmented ✓', 'reassembled text');
      await closeAndCheck(p, 1000);
    }, ['close 1000'])],
    ['server: fragmented from client', clientCase('/frag-out', async (p) => {
      await p.send('cmd:frag one|two ✓|three');
      check((await p.next()) === 'onetwo ✓three', "client's fragments reassembled");
      await closeAndCheck(p, 1000);
    }, ['close 1000'])],
    ['server: 16 MiB from server', clientCase('/big-in', async (p) => {
      const data = pattern(BIG);
      await p.send(data, { binary: true });
      check(same(await p.next(30000), data), '16 MiB echo');
      for (let i = 0; i < 16; i++) {
        await p.send(data.subarray(i << 20, (i + 1) << 20), { binary: true, fin: i === 15 });
      }
      check(same(await p.next(30000), data), '16 MiB in 1 MiB fragments echo');
      await closeAndCheck(p, 1000);
    }, ['close 1000'])],
    ['server: 16 MiB from client', clientCase('/big-out', async (p) => {
      await p.send(`cmd:big ${BIG} ${1 << 20}`);
      const got = await p.next(30000);
      check(same(got, pattern(BIG)), `16 MiB in 1 MiB frames: ${Buffer.isBuffer(got) ? got.length : typeof got}`);
      await closeAndCheck(p, 1000);
    }, ['close 1000'])],
    ['server: server ping answered', clientCase('/ping-in', async (p) => {
      p.ws.ping(Buffer.from('are you there'));
      await p.echo('after ping');
      check(p.pongs.length === 1 && p.pongs[0].toString() === 'are you there', 'pong payload');
      await closeAndCheck(p, 1000);
    }, ['close 1000'])],
    ['server: client ping answered', clientCase('/ping-out', async (p) => {
      await p.send('cmd:ping hello');
      const got = await p.next();
      check(same(got, Buffer.from('pong:hello')), `pong relayed as ${short(got)}`);
      await closeAndCheck(p, 1000);
    }, ['pong 5', 'close 1000'])],
    ['server: client closes 4000 bye', clientCase('/close-out', async (p) => {
      await p.send('cmd:close 4000 bye');
      const c = await withTimeout(p.closed, 5000, 'close');
      check(c.code === 4000 && c.reason === 'bye', `server saw ${c.code} ${JSON.stringify(c.reason)}`);
    }, ['close 4000'])],
    ['server: server closes 4000 bye', clientCase('/close-in', async (p) => {
      await p.echo('x');
      const c = await closeAndCheck(p, 4000, 'bye');
      check(c.code === 4000, `client answered close 4000 with ${c.code}`);
    }, ['close 4000 bye'])],
  ];
  const stop = () => new Promise((resolve) => {
    if (!wss) return resolve();
    for (const c of wss.clients) c.terminate();
    return wss.close(() => resolve());
  });
  return { cases, stop };
}

async function main() {
  const echoUrl = arg('--echo-url');
  const peerClient = arg('--peer-client');
  console.log(`node ${process.version}, ws ${require('ws/package.json').version}`);
  for (const [name, fn] of clientCases(echoUrl)) await runCase(name, fn);
  const { cases, stop } = serverCases(peerClient);
  for (const [name, fn] of cases) await runCase(name, fn);
  await stop();
  summary();
  process.exit(0);
}

main().catch((e) => {
  console.log(`FAIL setup: ${e && e.stack}`);
  console.log('Pass: 0, fail: 1, skip: 0.');
  process.exit(1);
});
