'use strict';
// permessage-deflate (RFC 7692) interop with Node.js ws, both roles:
//  * ws as a client of echo_server --deflate (--echo-url), for each set of
//    perMessageDeflate options: the response's Sec-WebSocket-Extensions
//    checked against the request, then echoes of 0 B to 1 MiB, text and
//    binary, compressible and random (threshold 0: ws compresses them all);
//  * ws as the server for client_cli --deflate (--client-cli), for each
//    set of server options: the client's offer, compressed messages both
//    ways.
// Prints "ok NAME" or "FAIL NAME: why" per case and, last, greatest's summary
// line. Every wait is bounded; 127.0.0.1 only.
const { spawn } = require('node:child_process');
const { WebSocket, WebSocketServer } = require('ws');
const { withTimeout, runCase: runCaseWithin, summary } = require('./cases');
const runCase = (name, fn, ms = 120000) => runCaseWithin(name, fn, ms);

const SIZES = [0, 1, 63, 64, 1000, 100000, 1 << 20];

function arg(name) {
  const i = process.argv.indexOf(name);
  return i < 0 || i + 1 >= process.argv.length ? null : process.argv[i + 1];
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

// A small deterministic generator, so every run sends the same bytes.
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s >>> 16;
  };
}

const WORDS = ['alice', 'bob', 'general', 'random', 'hello', 'there', 'message', 'the', 'quick', 'brown', 'fox'];

// n bytes of JSON chat envelopes (ASCII): compresses several-fold.
function chatText(n, seed = 1) {
  const r = rng(seed);
  let out = '';
  while (out.length < n) {
    const words = [];
    for (let i = 3 + (r() % 10); i > 0; i--) words.push(WORDS[r() % WORDS.length]);
    out += JSON.stringify({ type: 'message', payload: { channel: WORDS[2 + (r() % 2)], from: WORDS[r() % 2],
      data: { text: words.join(' '), n: out.length } } }) + '\n';
  }
  return out.slice(0, n);
}

function randomText(n, seed = 2) {
  const r = rng(seed);
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = 0x21 + (r() % 94);
  return b.toString('latin1');
}

function randomBytes(n, seed = 3) {
  const r = rng(seed);
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = r() & 0xff;
  return b;
}

function* messages() {
  for (const n of SIZES) {
    yield [`text ${n} chat`, chatText(n)];
    yield [`text ${n} random`, randomText(n)];
    yield [`binary ${n} chat`, Buffer.from(chatText(n))];
    yield [`binary ${n} random`, randomBytes(n)];
  }
}

// "a; b=1, c" -> [['a', {}], ['c', {b: '1'}]] (names and keys lower-cased)
function extParams(header) {
  if (!header) return [];
  return header.split(',').map((e) => {
    const parts = e.split(';').map((p) => p.trim());
    const params = {};
    for (const p of parts.slice(1)) {
      const [k, v] = p.split('=');
      params[k.trim().toLowerCase()] = v === undefined ? true : v.trim().replace(/^"|"$/g, '');
    }
    return [parts[0].toLowerCase(), params];
  });
}

// Messages of one socket in order, with a bounded wait for each.
class Inbox {
  constructor(ws) {
    this.queue = [];
    this.waiters = [];
    ws.on('message', (data, isBinary) => this.push({ data, isBinary }));
    ws.on('close', (code) => this.push({ close: code }));
  }
  push(m) {
    const w = this.waiters.shift();
    if (w) w(m);
    else this.queue.push(m);
  }
  next(ms = 30000) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return withTimeout(new Promise((resolve) => this.waiters.push(resolve)), ms, 'a message');
  }
}

function open(url, options) {
  return withTimeout(new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: 0, ...options });
    const inbox = new Inbox(ws);
    let response = null;
    ws.on('upgrade', (res) => { response = res; });
    ws.once('open', () => resolve({ ws, inbox, response }));
    ws.once('error', reject);
  }), 10000, `open ${url}`);
}

function closeWs(ws) {
  return withTimeout(new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve();
    ws.once('close', resolve);
    ws.close(1000);
  }), 10000, 'close');
}

// What the client asks for (ws's perMessageDeflate client options).
const CLIENT_OPTIONS = [
  ['default options', {}],
  ['serverNoContextTakeover', { serverNoContextTakeover: true }],
  ['clientNoContextTakeover', { clientNoContextTakeover: true }],
  ['serverMaxWindowBits 9', { serverMaxWindowBits: 9 }],
  ['clientMaxWindowBits 10', { clientMaxWindowBits: 10 }],
  ['everything', { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 11,
    clientMaxWindowBits: 12 }],
];

function clientCases(url) {
  const cases = [];
  for (const [label, opts] of CLIENT_OPTIONS) {
    cases.push([`ws client, ${label}: agreed as asked, echo 0 B..1 MiB`, async () => {
      const { ws, inbox, response } = await open(url, { perMessageDeflate: { threshold: 0, ...opts } });
      const header = response.headers['sec-websocket-extensions'] || '';
      const exts = extParams(header);
      check(exts.length === 1 && exts[0][0] === 'permessage-deflate', `response extensions '${header}'`);
      const p = exts[0][1];
      if (opts.serverNoContextTakeover) check(p.server_no_context_takeover === true, `'${header}'`);
      if (opts.serverMaxWindowBits) check(+p.server_max_window_bits <= opts.serverMaxWindowBits, `'${header}'`);
      if (p.client_max_window_bits !== undefined) {
        check(p.client_max_window_bits !== true, `client_max_window_bits without a value: '${header}'`);
        if (opts.clientMaxWindowBits) check(+p.client_max_window_bits <= opts.clientMaxWindowBits, `'${header}'`);
      }
      check(ws.extensions === 'permessage-deflate', `ws.extensions '${ws.extensions}'`);
      for (const [what, m] of messages()) {
        ws.send(m);
        const got = await inbox.next();
        check(got.close === undefined, `${what}: closed with ${got.close}`);
        if (typeof m === 'string') {
          check(!got.isBinary && got.data.toString() === m, `${what}: text echo differs (${got.data.length} bytes)`);
        } else {
          check(got.isBinary && Buffer.compare(got.data, m) === 0, `${what}: binary echo differs`);
        }
      }
      await closeWs(ws);
    }]);
  }
  cases.push(['ws client, serverMaxWindowBits 8: declined, works uncompressed', async () => {
    const { ws, inbox, response } = await open(url, { perMessageDeflate: { threshold: 0, serverMaxWindowBits: 8 } });
    check(!response.headers['sec-websocket-extensions'], 'an extension for an offer demanding window 8');
    ws.send('w'.repeat(500));
    const got = await inbox.next();
    check(got.data && got.data.toString() === 'w'.repeat(500), 'echo without the extension');
    await closeWs(ws);
  }]);
  return cases;
}

// What the server answers with (ws's perMessageDeflate server options).
const SERVER_OPTIONS = [
  ['default options', {}],
  ['serverNoContextTakeover', { serverNoContextTakeover: true }],
  ['clientNoContextTakeover', { clientNoContextTakeover: true }],
  ['serverMaxWindowBits 10', { serverMaxWindowBits: 10 }],
  ['clientMaxWindowBits 9', { clientMaxWindowBits: 9 }],
];
const CLIENT_SIZES = [10, 100, 1000, 10000, 100000];

function serverCase(clientCli, opts) {
  return async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: 0,
      perMessageDeflate: { threshold: 0, ...opts } });
    await new Promise((resolve) => wss.once('listening', resolve));
    const seen = { offer: '', answer: '', got: [], rsv1: [] };
    wss.on('headers', (headers) => {
      for (const h of headers) if (/^sec-websocket-extensions:/i.test(h)) seen.answer = h.slice(h.indexOf(':') + 1).trim();
    });
    wss.on('connection', (ws, req) => {
      seen.offer = req.headers['sec-websocket-extensions'] || '';
      seen.extensions = ws.extensions;
      // RSV1 of the client's frames, from the raw bytes ws reads.
      req.socket.on('data', (chunk) => { if (chunk.length >= 1 && seen.rsv1.length < 8) seen.rsv1.push(!!(chunk[0] & 0x40)); });
      ws.on('message', (data) => seen.got.push(data.toString()));
      for (const n of CLIENT_SIZES) ws.send(JSON.stringify({ type: 'chat', payload: { n, text: chatText(n, n) } }));
    });
    const port = wss.address().port;
    const sent = JSON.stringify({ text: chatText(2000, 77) });
    let out = '';
    const code = await withTimeout(new Promise((resolve) => {
      const p = spawn(clientCli, ['--url', `ws://127.0.0.1:${port}/ws`, '--deflate', '--count', `${CLIENT_SIZES.length}`,
        '--heartbeat-mode', 'off', '--max-attempts', '1', '--send', 'chat', sent]);
      p.stdout.on('data', (d) => { out += d; });
      p.stderr.on('data', (d) => { out += d; });
      p.on('close', resolve);
    }), 30000, 'client_cli');
    await new Promise((resolve) => wss.close(resolve));
    check(code === 0, `client_cli exit ${code}: ${out.slice(-300)}`);
    check(extParams(seen.offer).some(([n]) => n === 'permessage-deflate'), `client offer '${seen.offer}'`);
    check(seen.extensions === 'permessage-deflate' && seen.answer.startsWith('permessage-deflate'),
      `not negotiated: answer '${seen.answer}'`);
    for (const n of CLIENT_SIZES) {
      const want = JSON.stringify({ type: 'chat', payload: { n, text: chatText(n, n) } });
      check(out.includes(`message ${want}`), `client_cli did not print the ${n}-byte message`);
    }
    const text = JSON.parse(sent).text;
    check(seen.got.some((m) => m.includes(JSON.stringify(text).slice(1, -1))), `client's message: ${seen.got.length} received`);
    check(seen.rsv1.includes(true), 'no frame from the client had RSV1 set');
  };
}

async function main() {
  const echoUrl = arg('--echo-url');
  const clientCli = arg('--client-cli');
  console.log(`node ${process.version}, ws ${require('ws/package.json').version}`);
  if (echoUrl) for (const [name, fn] of clientCases(echoUrl)) await runCase(name, fn);
  if (clientCli) {
    for (const [label, opts] of SERVER_OPTIONS) await runCase(`client_cli via ws server, ${label}`, serverCase(clientCli, opts));
  }
  process.exitCode = summary() ? 1 : 0;
}

main();
