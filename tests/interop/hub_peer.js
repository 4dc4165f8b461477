'use strict';
// Interop of chat_server (wsch_hub) with Node.js ws clients. Started by
// run_hub_interop.sh with --url http://127.0.0.1:PORT against a chat_server
// run with --token alice=alice-secret --token bob=bob-secret. Prints
// "ok NAME" / "FAIL NAME: why" per case and, last, greatest's summary line.
// Every wait is bounded; 127.0.0.1 only.
const http = require('node:http');
const { WebSocket } = require('ws');
const { withTimeout, runCase: runCaseWithin, summary } = require('./cases');
const runCase = (name, fn, ms = 30000) => runCaseWithin(name, fn, ms);


function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing ${name}`);
  return process.argv[i + 1];
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}


function get(base, path) {
  return new Promise((resolve, reject) => {
    http.get(base + path, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

// A client whose envelopes and close can be awaited in order.
class Client {
  constructor(url, protocols, options) {
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    this.ws = new WebSocket(url, protocols, options);
    this.ws.on('message', (data, isBinary) => this.push({ env: isBinary ? null : JSON.parse(data.toString()) }));
    this.ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.push({ closed: this.closed });
    });
    this.ws.on('error', () => {});
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('unexpected-response', (req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      this.ws.once('close', () => reject(new Error('closed before open')));
    });
  }
  push(item) {
    const w = this.waiters.shift();
    if (w) w(item); else this.queue.push(item);
  }
  next(ms = 5000) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return withTimeout(new Promise((resolve) => this.waiters.push(resolve)), ms, 'next message');
  }
  async recv(type, ms = 5000) {
    for (;;) {
      const item = await this.next(ms);
      if (item.closed) throw new Error(`closed ${item.closed.code} ${item.closed.reason} while waiting for ${type}`);
      if (!type || item.env.type === type) return item.env;
    }
  }
  async quiet(ms = 300) {
    try {
      const item = await this.next(ms);
      throw new Error(`unexpected ${JSON.stringify(item)}`);
    } catch (e) {
      if (!/timed out/.test(e.message)) throw e;
    }
  }
  send(type, payload) { this.ws.send(JSON.stringify(payload === undefined ? { type } : { type, payload })); }
  close() { this.ws.close(); }
}

async function main() {
  const base = arg('--url');
  const wsUrl = base.replace(/^http/, 'ws') + '/ws';
  const open = async (token, how = 'protocol') => {
    const c = how === 'protocol' ? new Client(wsUrl, ['wsch', 'bearer.' + token])
      : how === 'header' ? new Client(wsUrl, [], { headers: { Authorization: 'Bearer ' + token } })
      : new Client(wsUrl + '?token=' + encodeURIComponent(token));
    await c.opened;
    await c.recv('welcome');
    return c;
  };
  const joined = async (token, channel, how) => {
    const c = await open(token, how);
    c.send('subscribe', { channel });
    const ack = await c.recv();
    // chat_server numbers its channels: the confirmation carries the position.
    const p = ack.payload || {};
    check(ack.type === 'subscribed' && p.channel === channel && Number.isInteger(p.offset) &&
      /^[0-9a-f]{16}$/.test(p.epoch) && Object.keys(p).length === 3, JSON.stringify(ack));
    return c;
  };

  await runCase('token in protocol, header and query; subprotocol wsch', async () => {
    for (const [how, token, user] of [['protocol', 'alice-secret', 'alice'], ['header', 'bob-secret', 'bob'],
      ['query', 'bob-secret', 'bob']]) {
      const c = how === 'protocol' ? new Client(wsUrl, ['wsch', 'bearer.' + token])
        : how === 'header' ? new Client(wsUrl, [], { headers: { Authorization: 'Bearer ' + token } })
        : new Client(wsUrl + '?token=' + token);
      await c.opened;
      const w = await c.recv();
      check(w.type === 'welcome' && w.payload.user === user, JSON.stringify(w));
      if (how === 'protocol') check(c.ws.protocol === 'wsch', `protocol ${c.ws.protocol}`);
      c.close();
    }
  });

  await runCase('refused token: close 4001 Unauthorized', async () => {
    const c = new Client(wsUrl, ['wsch', 'bearer.wrong']);
    await c.opened;
    const item = await c.next();
    check(item.closed && item.closed.code === 4001 && item.closed.reason === 'Unauthorized',
      JSON.stringify(item));
  });

  await runCase('subscribe, publish, receive; others do not', async () => {
    const a = await joined('alice-secret', 'js-room', 'protocol');
    const b = await joined('bob-secret', 'js-room', 'header');
    const c = await joined('bob-secret', 'js-other', 'query');
    a.send('publish', { channel: 'js-room', data: { text: 'from node', emoji: '\u{1F680}' } });
    for (const k of [a, b]) {
      const m = await k.recv();
      check(m.type === 'message' && m.payload.channel === 'js-room' && m.payload.from === 'alice' &&
            m.payload.data.text === 'from node' && m.payload.data.emoji === '\u{1F680}', JSON.stringify(m));
    }
    await c.quiet();
    for (const k of [a, b, c]) k.close();
  });

  await runCase('server broadcast through /api/notify', async () => {
    const subs = await Promise.all([joined('alice-secret', 'js-news'), joined('bob-secret', 'js-news', 'query')]);
    const r = await get(base, '/api/notify?channel=js-news&text=hello%20node');
    check(r.status === 200 && JSON.parse(r.body).delivered === 2, r.body);
    for (const k of subs) {
      const m = await k.recv();
      check(m.type === 'notification' && m.payload.text === 'hello node', JSON.stringify(m));
      await k.quiet(100);
    }
    for (const k of subs) k.close();
  });

  await runCase('a large message, fragmented by the sender', async () => {
    const a = await joined('alice-secret', 'js-big');
    const text = 'x'.repeat(40000);
    const env = JSON.stringify({ type: 'publish', payload: { channel: 'js-big', data: text } });
    // ws splits nothing by itself: send the text as three fragments.
    const parts = [env.slice(0, 10), env.slice(10, 20000), env.slice(20000)];
    parts.forEach((p, i) => a.ws.send(p, { fin: i === parts.length - 1 }));
    const m = await a.recv();
    check(m.type === 'message' && m.payload.data === text, 'wrong echo of the big message');
    a.close();
  });

  await runCase('500 ws clients each get one broadcast; all cleaned up', async () => {
    const n = 500;
    const subs = await Promise.all(Array.from({ length: n }, (_, i) => joined(i % 2 ? 'alice-secret' : 'bob-secret',
      'js-crowd', 'query')));
    const r = await get(base, '/api/notify?channel=js-crowd&text=all');
    check(JSON.parse(r.body).delivered === n, r.body);
    const got = await Promise.all(subs.map((k) => k.recv()));
    check(got.every((m) => m.type === 'notification' && m.payload.text === 'all'), 'a wrong message');
    for (const k of subs) k.close();
    const deadline = Date.now() + 5000;
    let s;
    for (;;) {
      s = JSON.parse((await get(base, '/api/stats')).body);
      if (s.open === 0 || Date.now() > deadline) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    // Channels live on only for the history chat_server keeps (bounded).
    check(s.open === 0 && s.subscriptions === 0 && s.channels <= s.history.messages && s.users === 0,
      JSON.stringify(s));
  }, 60000);

  summary();
}

main().catch((e) => {
  console.log(`FAIL hub_peer.js: ${e && e.stack}`);
  console.log(`Pass: 0, fail: 1, skip: 0.`);
  process.exitCode = 1;
});
