'use strict';
/* Browser test of the chat demo: examples/chat_server and its page
   (examples/www), driven in Debian's headless Chromium through playwright-core
   (never a downloaded browser). Plain node, no test runner:

     node tests/browser/chat.spec.js --server build/browser/chat_server_redis \
          --www examples/www --out build/browser [--chromium /usr/bin/chromium] \
          [--redis-server /usr/bin/redis-server | --redis-skip REASON]

   It starts and stops its own servers on 127.0.0.1 (--port 0 first; the
   restart reuses the port the first one chose) and checks, through the page's
   documented ids and data-testid hooks (top of examples/www/app.js):
     - the page connects and the badge says Connected;
     - a server broadcast (GET /api/notify) shows a toast;
     - a message published on one page reaches a page in another context;
     - who is online (the page's presence list, #presence): a user joining a
       channel shows on another user's page, once, with the device its page
       named; the same user's second tab changes nothing there (still one
       entry); once both of its tabs are closed it is gone (bounded wait);
       a page whose connection was cut (the TCP proxy below) while one user
       left and another joined shows, once back, exactly the members now:
       no duplicate, no ghost of the one who left;
     - a page whose connection is cut without a close (through a TCP proxy
       this script runs: CDP's offline emulation leaves an open WebSocket
       up in this Chromium) shows, once back, every message published
       meanwhile exactly once, in order and marked recovered, and its own
       publish made while away arrives once;
     - a publish whose ack was lost (the proxy drops what the server sends,
       then cuts) is resent after the reconnect and applied only once;
     - a reload keeps the publish session and the unsent messages; a copied
       tab with the same session takes a new one;
     - a late joiner sees the channel's recent messages, marked earlier;
     - a publish the server refuses shows as failed and can be sent again;
     - after the server is killed and started again, the badge goes to
       Connecting with a retry countdown and back to Connected, and both
       subscriptions are back (a publish after the restart arrives), and the
       history the restart lost shows as a gap line, not as a whole feed;
     - a wrong token shows Unauthorized and is not retried (the page opens one
       WebSocket and the server counts one unauthorized drop);
     - the servers exit cleanly on SIGTERM (they are built with ASan/UBSan);
     - with Redis-backed history (--redis-server: a redis-server of its own on
       a free loopback port, two chat_servers A and B with --redis on it):
       A is killed (SIGKILL) under a page, messages are published through B
       meanwhile (from a page on B and /api/notify), A is started again on
       its port; once back (through the proxy, let through when A's Redis
       links are up) the page shows every missed message exactly once, in
       order, marked recovered, with no gap line, and its publish after the
       restart reaches the page on B; both servers exit cleanly and
       redis-server stops. The --server binary must then be built with
       Redis support (-DCHAT_WITH_REDIS). Without --redis-server (or with
       --redis-skip REASON) these two cases print "skip NAME: REASON" and
       count as skipped, or as failed when CI is set.
   Every wait is bounded and the whole run has a deadline. Screenshots go to
   --out. Prints one line per case and "Pass: N, fail: N, skip: N." last. */

const fs = require('fs');
const path = require('path');
const http = require('http');
const net = require('net');
const { spawn } = require('child_process');

const opt = { server: '', www: 'examples/www', out: 'build/browser', chromium: process.env.CHROMIUM || '/usr/bin/chromium',
              deadline: 150, 'redis-server': '', 'redis-skip': '' };
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].replace(/^--/, '');
  if (!(k in opt) || i + 1 >= process.argv.length) {
    console.error('usage: chat.spec.js --server PATH [--www DIR] [--out DIR] [--chromium PATH] [--deadline S]\n' +
                  '                     [--redis-server PATH | --redis-skip REASON]');
    process.exit(2);
  }
  opt[k] = process.argv[++i];
}

const STEP_MS = 8000;          // default bound for one wait
const results = { pass: 0, fail: 0, skip: 0 };
const started = Date.now();
const servers = new Set();     // every server process this run started
let browser = null;
const pageErrors = [];

// ---- plumbing ---------------------------------------------------------------

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

async function waitFor(what, fn, ms = STEP_MS, every = 50) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() >= end) throw new Error('timed out after ' + ms + ' ms waiting for ' + what);
    await sleep(every);
  }
}

function httpGet(url, ms = 3000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(ms, () => req.destroy(new Error('GET ' + url + ': no answer in ' + ms + ' ms')));
    req.on('error', reject);
  });
}

async function getJson(url) {
  const r = await httpGet(url);
  if (r.status !== 200) throw new Error('GET ' + url + ': HTTP ' + r.status);
  return JSON.parse(r.body);
}

// Starts chat_server; resolves once it printed the port it listens on.
let serverSeq = 0;
function startServer(args, port) {
  const log = path.join(opt.out, 'chat_server-' + (++serverSeq) + '.log');
  const fd = fs.openSync(log, 'w');
  const proc = spawn(opt.server, ['--port', String(port), '--host', '127.0.0.1', '--www', opt.www, '--verbose', ...args],
                     { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  const srv = { proc, log, port: 0, exited: null };
  servers.add(srv);
  srv.exit = new Promise((resolve) => proc.on('exit', (code, sig) => {
    srv.exited = { code, sig };
    servers.delete(srv);
    resolve(srv.exited);
  }));
  return waitFor('chat_server to listen (' + log + ')', () => {
    if (srv.exited) throw new Error('chat_server exited early: ' + fs.readFileSync(log, 'utf8').slice(-2000));
    const m = /listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(fs.readFileSync(log, 'utf8'));
    if (m) srv.port = Number(m[1]);
    return m ? srv : null;
  }, 15000);
}

// Signals our own server by PID and waits (bounded) for it to go.
async function stopServer(srv, sig) {
  if (srv.exited) return srv.exited;
  srv.proc.kill(sig);
  const t = sleep(8000).then(() => null);
  const r = await Promise.race([srv.exit, t]);
  if (r) return r;
  srv.proc.kill('SIGKILL');
  await srv.exit;
  throw new Error((srv.name || 'chat_server') + ' ' + srv.proc.pid + ' did not exit within 8 s of ' + sig);
}

function killAll() {
  for (const srv of servers) { try { srv.proc.kill('SIGKILL'); } catch (e) { /* gone */ } }
  for (const px of proxies) px.close();
}

// A TCP proxy in this process between a page and chat_server, so a test can
// take a page's connection away the way a network does: cut() resets the
// page's side (no close frame, no FIN) and closes the server's; while
// refusing, new connections are dropped at once; mute() swallows what the
// server sends from then on (an answer lost on the way).
const proxies = new Set();
function startProxy(targetPort) {
  const pairs = new Set();
  const px = { port: 0, refusing: false, muted: false };
  const server = net.createServer((down) => {
    if (px.refusing) { down.resetAndDestroy(); return; }
    const up = net.connect(targetPort, '127.0.0.1');
    const pair = { down, up };
    pairs.add(pair);
    down.on('data', (chunk) => up.write(chunk));
    up.on('data', (chunk) => { if (!px.muted) down.write(chunk); });
    const end = () => { pairs.delete(pair); down.destroy(); up.destroy(); };
    for (const s of [down, up]) { s.on('close', end); s.on('error', end); }
  });
  px.cut = (refuse) => {
    px.refusing = !!refuse;
    px.muted = false;
    for (const { down, up } of pairs) { down.resetAndDestroy(); up.destroy(); }
    pairs.clear();
  };
  px.mute = () => { px.muted = true; };
  px.close = () => { px.cut(true); server.close(); proxies.delete(px); };
  proxies.add(px);
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => { px.port = server.address().port; resolve(px); });
  });
}

// A port nobody listens on now (the kernel's choice; taken by the time it
// is used only by bad luck, which startRedis retries).
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

// True when a Redis on the port answers PING within ms.
function redisPing(port, ms = 1000) {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    let got = '';
    const done = (v) => { clearTimeout(t); c.destroy(); resolve(v); };
    const t = setTimeout(() => done(false), ms);
    c.on('connect', () => c.write('PING\r\n'));
    c.on('data', (d) => { got += d; if (got.includes('\r\n')) done(got.startsWith('+PONG')); });
    c.on('error', () => done(false));
    c.on('close', () => done(false));
  });
}

// Starts --redis-server on a free loopback port, without persistence (as
// tests/interop/run_recovery.sh does); resolves once it answers PING.
// Stopped by PID like the chat_servers (it joins `servers`).
async function startRedis() {
  let last = '';
  for (let i = 0; i < 5; i++) {
    const port = await freePort();
    const log = path.join(opt.out, 'redis-' + port + '.log');
    const fd = fs.openSync(log, 'w');
    const proc = spawn(opt['redis-server'], ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
                                             '--appendonly', 'no', '--dir', opt.out, '--daemonize', 'no'],
                       { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    const rs = { proc, log, port, exited: null, name: 'redis-server' };
    servers.add(rs);
    rs.exit = new Promise((resolve) => proc.on('exit', (code, sig) => {
      rs.exited = { code, sig };
      servers.delete(rs);
      resolve(rs.exited);
    }));
    const end = Date.now() + 10000;
    while (!rs.exited && Date.now() < end) {
      if (await redisPing(port)) return rs;
      await sleep(100);
    }
    last = fs.readFileSync(log, 'utf8').slice(-500);
    if (!rs.exited) await stopServer(rs, 'SIGKILL').catch(() => {});
  }
  throw new Error('redis-server did not start: ' + last);
}

// Both of a chat_server's Redis links are up (/api/stats, built with Redis).
async function redisLinked(srv) {
  try {
    const s = await getJson('http://127.0.0.1:' + srv.port + '/api/stats');
    return !!s.redis && s.redis.subscriber === 1 && s.redis.publisher === 1;
  } catch (e) {
    return false;
  }
}

let caseNo = 0;
async function test(name, pages, fn) {
  const t0 = Date.now();
  caseNo++;
  try {
    await fn();
    results.pass++;
    console.log('ok   ' + name + ' (' + (Date.now() - t0) + ' ms)');
  } catch (e) {
    results.fail++;
    console.log('FAIL ' + name + ': ' + (e && e.message ? e.message.split('\n')[0] : e));
    for (const [label, page] of Object.entries(pages ? pages() : {})) {
      if (!page) continue;
      const file = path.join(opt.out, 'fail-' + caseNo + '-' + label + '.png');
      try { await page.screenshot({ path: file, timeout: 3000 }); console.log('     screenshot: ' + file); }
      catch (e2) { /* the page is gone */ }
    }
  }
}

// A case that cannot run here: a skip, or a failure under CI (where
// everything must be installed), as the runners do for a missing peer.
function skip(name, why) {
  if (process.env.CI) {
    results.fail++;
    console.log('FAIL ' + name + ': ' + why + ' (CI is set)');
  } else {
    results.skip++;
    console.log('skip ' + name + ': ' + why);
  }
}

async function shot(page, name) {
  const file = path.join(opt.out, name + '.png');
  await page.screenshot({ path: file, timeout: 5000, animations: 'disabled' });
  return file;
}

// ---- page helpers (only documented ids and data-testid hooks) -----------------

async function badge(page) {
  return page.evaluate(() => {
    const b = document.getElementById('status-badge');
    const c = document.getElementById('retry-countdown');
    return { state: b.dataset.state, attempt: b.dataset.attempt, text: document.getElementById('status-text').textContent,
             countdown: c.hidden ? '' : c.textContent };
  });
}

// Playwright's timeouts say only "Timeout N ms exceeded"; say what we saw.
async function explain(what, page, promise, seen) {
  try {
    return await promise;
  } catch (e) {
    let now = '';
    try { now = JSON.stringify(await seen(page)); } catch (e2) { /* page gone */ }
    throw new Error(what + ': ' + e.message.split('\n')[0] + (now ? '; the page shows ' + now : ''));
  }
}

async function waitState(page, state, ms = STEP_MS) {
  await explain('badge ' + state, page,
                page.waitForSelector('#status-badge[data-state="' + state + '"]', { timeout: ms }), badge);
  return badge(page);
}

function channelItems(page) {
  return page.evaluate(() => [...document.querySelectorAll('#channel-list [data-testid=channel-item]')].map(
    (li) => li.dataset.channel + ':' + li.dataset.subscribed));
}

function feedItems(page) {
  return page.evaluate(() => [...document.querySelectorAll('#feed [data-testid=message]')].slice(-5).map(
    (m) => m.dataset.channel + '/' + m.dataset.from + ': ' + m.querySelector('.text').textContent));
}

// The active channel's feed, top to bottom: messages, gap lines, outbox rows.
function feed(page) {
  return page.evaluate(() => [...document.querySelectorAll(
    '#feed [data-testid=message], #feed [data-testid=gap], #feed [data-testid=outbox]')].map((n) => ({
    kind: n.dataset.testid, channel: n.dataset.channel, from: n.dataset.from || '', state: n.dataset.state || '',
    text: n.querySelector('.text') ? n.querySelector('.text').textContent : n.textContent,
    recovered: n.dataset.recovered === 'true', history: n.dataset.history === 'true' })));
}

function describe(items) {
  return items.map((m) => m.kind === 'message' ? m.from + ': ' + m.text + (m.recovered ? ' [recovered]' : '') +
                                                 (m.history ? ' [earlier]' : '')
                                               : m.kind === 'gap' ? '[gap]' : '[outbox ' + m.state + '] ' + m.text).join(' | ');
}

// The page's messages in the feed (not outbox rows), as "from: text".
async function said(page) {
  return (await feed(page)).filter((m) => m.kind === 'message').map((m) => m.from + ': ' + m.text);
}

// The active channel's online list (#presence): users top to bottom, as
// "user" or "user/device", and the count.
function online(page) {
  return page.evaluate(() => {
    const box = document.getElementById('presence');
    const count = document.getElementById('presence-count');
    return { channel: box.dataset.channel, mode: box.dataset.mode, stale: box.dataset.stale, hidden: box.hidden,
             count: count.textContent, users: [...document.querySelectorAll('#presence-list [data-testid=presence-member]')].map(
               (li) => li.dataset.user + (li.dataset.device ? '/' + li.dataset.device : '')) };
  });
}

// The online list is current (not stale) for channel and names exactly the
// users of want, each once (any order; "user/device" entries compare their
// device too), and the count agrees.
function onlineIs(o, channel, want) {
  const shown = o.users.map((u) => want.includes(u.split('/')[0]) ? u.split('/')[0] : u);
  return o.channel === channel && o.mode === 'list' && o.stale === 'false' && !o.hidden &&
         JSON.stringify(shown.sort()) === JSON.stringify([...want].sort()) && o.count === want.length + ' online';
}

async function waitOnline(page, channel, want, ms = STEP_MS) {
  let last = null;
  try {
    await waitFor('#' + channel + ' online: ' + want.join(', '), async () => onlineIs(last = await online(page), channel, want), ms);
  } catch (e) {
    throw new Error(e.message + '; the page shows ' + JSON.stringify(last));
  }
  return last;
}

// Brings a page back once the network is: the "Retry now" button when it is
// waiting for its next attempt (the backoff may have grown to seconds).
async function reconnect(page, ms = STEP_MS) {
  await waitFor('the page to reconnect', async () => {
    const s = await page.evaluate(() => {
      const r = document.getElementById('retry-btn');
      if (!r.hidden) r.click();
      return document.getElementById('status-badge').dataset.state;
    });
    return s === 'connected';
  }, ms, 100);
}

async function outboxRows(page) {
  return (await feed(page)).filter((m) => m.kind === 'outbox');
}

async function openPage(ctx, url) {
  const page = await ctx.newPage();
  page.sockets = 0;              // WebSockets the page opened
  page.on('websocket', () => { page.sockets++; });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(url, { timeout: STEP_MS });
  return page;
}

async function join(page, channel) {
  await page.fill('#channel-input', channel, { timeout: STEP_MS });
  await page.click('#subscribe-btn', { timeout: STEP_MS });
  await waitSubscribed(page, channel);
}

async function waitSubscribed(page, channel, ms = STEP_MS) {
  await explain('#' + channel + ' subscribed', page, page.waitForSelector(
    '#channel-list [data-testid=channel-item][data-channel="' + channel + '"][data-subscribed="true"]', { timeout: ms }),
  channelItems);
}

async function publish(page, text) {
  await page.fill('#publish-input', text, { timeout: STEP_MS });
  await page.click('#publish-btn', { timeout: STEP_MS });
}

// Resolves when the feed shows a message from `from` with exactly `text`.
async function waitMessage(page, channel, from, text, ms = STEP_MS) {
  await explain('message "' + text + '" from ' + from, page, page.waitForFunction(
    ([c, f, t]) => [...document.querySelectorAll('#feed [data-testid=message]')].some(
      (m) => m.dataset.channel === c && m.dataset.from === f && m.querySelector('.text').textContent === t),
    [channel, from, text], { timeout: ms }), feedItems);
}

async function waitToast(page, type, body, ms = STEP_MS) {
  const h = await explain(type + ' toast "' + body + '"', page, page.waitForFunction(([ty, b]) => {
    const t = [...document.querySelectorAll('#toasts [data-testid=toast]')].find(
      (x) => x.dataset.type === ty && x.querySelector('.toast-body').textContent === b);
    return t ? t.querySelector('.toast-title').textContent : null;
  }, [type, body], { timeout: ms }), (p) => p.evaluate(() => [...document.querySelectorAll('#toasts [data-testid=toast]')].map(
    (x) => x.dataset.type + ': ' + x.querySelector('.toast-body').textContent)));
  return h.jsonValue();
}

function expect(cond, msg) { if (!cond) throw new Error(msg); }

// ---- the run --------------------------------------------------------------------

async function main() {
  fs.mkdirSync(opt.out, { recursive: true });
  for (const f of fs.readdirSync(opt.out)) if (/\.(png|log)$/.test(f)) fs.unlinkSync(path.join(opt.out, f));
  const { chromium } = require('playwright-core');

  browser = await chromium.launch({
    executablePath: opt.chromium,
    timeout: 30000,
    // Playwright adds --headless and a fresh temporary profile itself.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  console.log('# chromium ' + browser.version() + ', screenshots in ' + opt.out);

  let srv = await startServer([], 0);
  const port = srv.port;
  const base = 'http://127.0.0.1:' + port;
  const viewport = { width: 1280, height: 720 };
  const ctxA = await browser.newContext({ viewport });
  const ctxB = await browser.newContext({ viewport });
  let a = null, b = null;

  await test('page connects and the badge shows Connected', () => ({a}), async () => {
    a = await openPage(ctxA, base + '/?token=alice');
    const s = await waitState(a, 'connected');
    expect(s.text === 'Connected', 'badge text "' + s.text + '"');
    await a.waitForFunction(() => document.getElementById('user-name').textContent === 'alice', null, { timeout: STEP_MS });
    // Chromium offers permessage-deflate; a chat_server built with zlib takes it.
    const stats = await getJson(base + '/api/stats');
    const ext = await a.evaluate(() => window.chatApp.client.ws.extensions);
    expect(/^permessage-deflate/.test(ext) === stats.limits.deflate,
           'extensions "' + ext + '" with deflate ' + stats.limits.deflate + ' on the server');
    await join(a, 'lobby');
    await shot(a, 'connected');
  });

  await test('a server broadcast shows a toast', () => ({a}), async () => {
    const text = 'Deploy 42 finished';
    const r = await getJson(base + '/api/notify?channel=lobby&text=' + encodeURIComponent(text));
    expect(r.delivered === 1, 'notify delivered to ' + r.delivered + ' clients, expected 1');
    const title = await waitToast(a, 'notification', text);
    expect(title.includes('#lobby'), 'toast title "' + title + '" does not name #lobby');
    await waitMessage(a, 'lobby', 'server', text);
    await shot(a, 'toast');
  });

  await test('a notification to a user shows a toast', () => ({a}), async () => {
    const text = 'Your export is ready';
    const r = await getJson(base + '/api/notify?user=alice&text=' + encodeURIComponent(text));
    expect(r.delivered === 1, 'notify delivered to ' + r.delivered + ' connections, expected 1');
    await waitToast(a, 'notification', text);
  });

  await test('a message published on one page reaches another', () => ({a, b}), async () => {
    b = await openPage(ctxB, base + '/?token=bob');
    await waitState(b, 'connected');
    await join(b, 'lobby');
    await publish(b, 'hello from bob');
    await waitMessage(a, 'lobby', 'bob', 'hello from bob');
    await waitToast(a, 'message', 'hello from bob');
    await waitMessage(b, 'lobby', 'bob', 'hello from bob');    // the publisher sees its own message
    await publish(a, 'hi bob, alice here');
    await waitMessage(b, 'lobby', 'alice', 'hi bob, alice here');
    await shot(a, 'message-alice');
    await shot(b, 'message-bob');
    // The same page on a phone-sized screen: nothing may stick out sideways.
    await a.setViewportSize({ width: 390, height: 844 });
    await shot(a, 'phone');
    const widths = await a.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    expect(widths[0] <= widths[1], 'page is ' + widths[0] + ' px wide on a ' + widths[1] + ' px screen');
    await a.setViewportSize(viewport);
  });

  // Who is online, in a channel of its own (#online): alice's page (through
  // a proxy of its own, to cut it later) watches bob's tabs (one context, so
  // they share bob's saved channels, as a user's tabs do), carol and heidi.
  // Each page names its device (?device=). Everything here is closed before
  // the cases that count the server's subscriptions.
  const P_ROOM = 'online';
  const ppx = await startProxy(port);
  const ctxPA = await browser.newContext({ viewport });
  const ctxPB = await browser.newContext({ viewport });
  const ctxPC = await browser.newContext({ viewport });
  const ctxPH = await browser.newContext({ viewport });
  let pa = null, pb1 = null, pb2 = null, pb3 = null, pc = null, ph = null;
  const subscriptions = async () => (await getJson(base + '/api/stats')).subscriptions;

  await test('who is online: a user joining a channel shows on another page, once, with its device', () => ({pa, pb1}), async () => {
    pa = await openPage(ctxPA, base + '/?token=alice&device=desktop&ws=' + encodeURIComponent('ws://127.0.0.1:' + ppx.port + '/ws'));
    await waitState(pa, 'connected');
    await join(pa, P_ROOM);
    await waitOnline(pa, P_ROOM, ['alice/desktop']);
    pb1 = await openPage(ctxPB, base + '/?token=bob&device=phone');
    await waitState(pb1, 'connected');
    await join(pb1, P_ROOM);
    await waitOnline(pa, P_ROOM, ['alice/desktop', 'bob/phone']);
    await waitOnline(pb1, P_ROOM, ['alice/desktop', 'bob/phone']);
    const self = await pa.evaluate(() => [...document.querySelectorAll('#presence-list [data-self=true]')].map((li) => li.dataset.user));
    expect(JSON.stringify(self) === '["alice"]', 'alice\'s page marks ' + JSON.stringify(self) + ' as itself');
    await shot(pa, 'online');
  });

  await test('who is online: a second tab of the same user is not a second entry; with both closed the user is gone', () => ({pa, pb2}), async () => {
    const before = await subscriptions();
    pb2 = await openPage(ctxPB, base + '/?token=bob&device=desktop');
    await waitState(pb2, 'connected');
    await waitSubscribed(pb2, P_ROOM);                    // bob's saved channels: the tab joins #online too
    await waitFor('the server to count bob\'s second subscription', async () => (await subscriptions()) === before + 1);
    // Whatever the second tab's join made the server send alice went before
    // this message (one connection, in order).
    await publish(pb2, 'bob\'s second tab');
    await waitMessage(pa, P_ROOM, 'bob', 'bob\'s second tab');
    // Still one bob, as his first tab (the one that joined) named him.
    let o = await online(pa);
    expect(onlineIs(o, P_ROOM, ['alice', 'bob/phone']), 'with bob\'s second tab alice\'s page shows ' + JSON.stringify(o));
    await waitOnline(pb2, P_ROOM, ['alice', 'bob']);
    // One tab closed: bob is still there.
    await pb1.close();
    pb1 = null;
    await waitFor('the server to drop bob\'s first tab', async () => (await subscriptions()) === before);
    await publish(pb2, 'bob\'s first tab is closed');
    await waitMessage(pa, P_ROOM, 'bob', 'bob\'s first tab is closed');
    o = await online(pa);
    expect(onlineIs(o, P_ROOM, ['alice', 'bob']), 'with one of bob\'s tabs left alice\'s page shows ' + JSON.stringify(o));
    // Both closed: bob leaves.
    await pb2.close();
    pb2 = null;
    await waitOnline(pa, P_ROOM, ['alice']);
  });

  await test('who is online: after a reconnect the list is the channel\'s as it is now (no duplicate, no ghost)', () => ({pa, pc, ph}), async () => {
    pb3 = await openPage(ctxPB, base + '/?token=bob&device=phone');
    await waitSubscribed(pb3, P_ROOM);
    pc = await openPage(ctxPC, base + '/?token=carol&device=phone');
    await waitState(pc, 'connected');
    await join(pc, P_ROOM);
    await waitOnline(pa, P_ROOM, ['alice', 'bob', 'carol']);
    ppx.cut(true);                                         // no close frame; reconnects are refused
    await waitState(pa, 'connecting');
    const away = await online(pa);
    expect(away.stale === 'true' && !away.hidden, 'alice\'s list while away: ' + JSON.stringify(away));
    // Meanwhile bob leaves (a ghost if the page kept its old list) and heidi
    // joins; carol's page shows the channel as the server has it.
    await pb3.close();
    pb3 = null;
    ph = await openPage(ctxPH, base + '/?token=heidi&device=desktop');
    await waitState(ph, 'connected');
    await join(ph, P_ROOM);
    await waitOnline(pc, P_ROOM, ['carol', 'heidi']);      // alice's connection went with the cut
    ppx.refusing = false;
    await reconnect(pa);
    await waitSubscribed(pa, P_ROOM);
    await waitOnline(pa, P_ROOM, ['alice', 'carol/phone', 'heidi/desktop']);
    // Anything more the reconnect made the server send alice came before this.
    await publish(ph, 'heidi after alice is back');
    await waitMessage(pa, P_ROOM, 'heidi', 'heidi after alice is back');
    const o = await online(pa);
    expect(onlineIs(o, P_ROOM, ['alice', 'carol', 'heidi']), 'alice\'s list after the reconnect: ' + JSON.stringify(o));
    await shot(pa, 'online-resynced');
  });
  await Promise.race([Promise.all([ctxPA.close(), ctxPB.close(), ctxPC.close(), ctxPH.close()]), sleep(5000)]);
  ppx.close();

  // dave's page reaches the server through a proxy this script can cut; the
  // page itself is served directly (?ws= names the proxy), so it reloads
  // while the proxy refuses.
  const px = await startProxy(port);
  const ctxD = await browser.newContext({ viewport });
  let d = null, d2 = null, e = null;
  const ROOM = 'recovery';
  const dUrl = base + '/?token=dave&ws=' + encodeURIComponent('ws://127.0.0.1:' + px.port + '/ws');
  const missed = ['missed 1', 'missed 2', 'missed 3', 'missed 4', 'missed 5'];

  await test('a cut connection: back online, every missed message once, in order, marked recovered', () => ({d, b}), async () => {
    d = await openPage(ctxD, dUrl);
    await waitState(d, 'connected');
    await join(d, ROOM);
    await join(b, ROOM);
    await publish(b, 'before the cut');
    await waitMessage(d, ROOM, 'bob', 'before the cut');
    px.cut(true);                                          // no close frame; reconnects are refused
    await waitState(d, 'connecting');
    for (const t of missed) await publish(b, t);
    await waitMessage(b, ROOM, 'bob', missed[missed.length - 1]);   // the server has broadcast them all
    await publish(d, 'dave while away');
    const waiting = await outboxRows(d);
    expect(waiting.length === 1 && waiting[0].state === 'pending' && waiting[0].text === 'dave while away',
           'outbox while away: ' + describe(waiting));
    await shot(d, 'recovery-away');
    px.refusing = false;
    await reconnect(d);
    await waitSubscribed(d, ROOM);
    await waitMessage(b, ROOM, 'dave', 'dave while away');
    await waitFor('dave\'s outbox to empty', async () => (await outboxRows(d)).length === 0);
    await waitMessage(d, ROOM, 'dave', 'dave while away');
    const got = (await feed(d)).filter((m) => m.channel === ROOM);
    const want = ['bob: before the cut', ...missed.map((t) => 'bob: ' + t), 'dave: dave while away'];
    expect(JSON.stringify(got.map((m) => m.from + ': ' + m.text)) === JSON.stringify(want),
           'dave\'s feed: ' + describe(got));
    expect(got.every((m) => m.kind === 'message'), 'dave\'s feed: ' + describe(got));
    expect(got.slice(1, 1 + missed.length).every((m) => m.recovered) && !got[0].recovered && !got[got.length - 1].recovered,
           'recovered marks: ' + describe(got));
    const bobSaw = (await said(b)).filter((t) => t === 'dave: dave while away').length;
    expect(bobSaw === 1, 'bob shows dave\'s message ' + bobSaw + ' times');
    await shot(d, 'recovered');
  });

  await test('a publish whose ack was lost is resent after the reconnect and applied once', () => ({d, b}), async () => {
    px.mute();                                             // the server's answers no longer reach dave
    await publish(d, 'ack lost');
    await waitMessage(b, ROOM, 'dave', 'ack lost');        // applied and broadcast
    await sleep(200);
    const rows = await outboxRows(d);
    expect(rows.length === 1 && rows[0].state === 'pending', 'dave\'s outbox without the ack: ' + describe(rows));
    px.cut(false);
    await waitState(d, 'connecting');
    await reconnect(d);
    await waitFor('dave\'s outbox to empty', async () => (await outboxRows(d)).length === 0);
    // Anything the resend caused reached bob before this, on the same connection order.
    await publish(b, 'after the resend');
    await waitMessage(b, ROOM, 'bob', 'after the resend');
    await waitMessage(d, ROOM, 'bob', 'after the resend');
    const bobSaw = (await said(b)).filter((t) => t === 'dave: ack lost').length;
    expect(bobSaw === 1, 'bob shows "ack lost" ' + bobSaw + ' times');
    const mine = (await feed(d)).filter((m) => m.text === 'ack lost');
    expect(mine.length === 1 && mine[0].kind === 'message' && mine[0].recovered,
           'dave shows "ack lost" as ' + describe(mine));
  });

  await test('a reload keeps the session and the unsent messages; a copied tab takes a new session', () => ({d, d2}), async () => {
    const session = await d.evaluate(() => window.chatApp.client.session);
    expect(/^[A-Za-z0-9_-]{1,64}$/.test(session), 'session id "' + session + '"');
    px.cut(true);
    await waitState(d, 'connecting');
    await publish(d, 'sent across a reload');
    await d.reload({ timeout: STEP_MS });
    await waitState(d, 'connecting');
    const after = await d.evaluate(() => [window.chatApp.client.session, window.chatApp.client.outbox.map((m) => m.data.text)]);
    expect(after[0] === session, 'session after the reload "' + after[0] + '", before "' + session + '"');
    expect(JSON.stringify(after[1]) === '["sent across a reload"]', 'outbox after the reload: ' + JSON.stringify(after[1]));
    px.refusing = false;
    await reconnect(d);
    await waitMessage(b, ROOM, 'dave', 'sent across a reload');
    await waitFor('dave\'s outbox to empty', async () => (await outboxRows(d)).length === 0);
    // A duplicated tab starts with a copy of the tab's sessionStorage.
    const copy = await d.evaluate(() => Object.fromEntries(Object.keys(sessionStorage).map((k) => [k, sessionStorage.getItem(k)])));
    d2 = await ctxD.newPage();
    d2.on('pageerror', (err) => pageErrors.push(err.message));
    await d2.addInitScript((c) => { for (const [k, v] of Object.entries(c)) sessionStorage.setItem(k, v); }, copy);
    await d2.goto(dUrl, { timeout: STEP_MS });
    await waitFor('the copied tab to take a new session', () => d2.evaluate(
      (s) => window.chatApp.client.session !== s && /^[A-Za-z0-9_-]{1,64}$/.test(window.chatApp.client.session), session));
    expect(await d.evaluate(() => window.chatApp.client.session) === session, 'the original tab changed its session');
    await waitState(d2, 'connected');
    await d2.close();
    d2 = null;
  });

  const ctxE = await browser.newContext({ viewport });
  await test('a late joiner sees the recent messages, marked earlier', () => ({e}), async () => {
    e = await openPage(ctxE, base + '/?token=erin');
    await waitState(e, 'connected');
    await join(e, ROOM);
    const want = await said(b);                            // bob has seen the whole conversation
    await waitFor('erin to show the ' + want.length + ' earlier messages', async () => (await said(e)).length >= want.length);
    const got = (await feed(e)).filter((m) => m.channel === ROOM);
    expect(JSON.stringify(got.map((m) => m.from + ': ' + m.text)) === JSON.stringify(want),
           'erin\'s feed: ' + describe(got) + '; bob\'s: ' + want.join(' | '));
    expect(got.every((m) => m.history && !m.recovered), 'erin\'s marks: ' + describe(got));
    await shot(e, 'history');
    await publish(b, 'erin is here');
    await waitMessage(e, ROOM, 'bob', 'erin is here');
    const last = (await feed(e)).pop();
    expect(last.text === 'erin is here' && !last.history, 'a live message after the join: ' + describe([last]));
  });

  await test('a refused publish shows as failed, and "Send again" delivers it once', () => ({e, b}), async () => {
    // Unsubscribed behind the page's back, so the server answers not_subscribed with the id.
    await e.evaluate((room) => window.chatApp.client.sendNow('unsubscribe', { channel: room }), ROOM);
    await publish(e, 'refused once');
    await explain('a failed outbox row', e, e.waitForSelector('#feed [data-testid=outbox][data-state=failed]', { timeout: STEP_MS }),
                  async (p) => describe(await feed(p)));
    const rows = await outboxRows(e);
    expect(rows.length === 1 && rows[0].text === 'refused once', 'erin\'s outbox: ' + describe(rows));
    await shot(e, 'failed');
    await e.evaluate((room) => window.chatApp.client.sendNow('subscribe', { channel: room }), ROOM);
    await e.click('#feed [data-testid=outbox-retry]', { timeout: STEP_MS });
    await waitMessage(b, ROOM, 'erin', 'refused once');
    await waitFor('erin\'s outbox to empty', async () => (await outboxRows(e)).length === 0);
    await publish(b, 'after the retry');
    await waitMessage(b, ROOM, 'bob', 'after the retry');
    const n = (await said(b)).filter((t) => t === 'erin: refused once').length;
    expect(n === 1, 'bob shows "refused once" ' + n + ' times');
  });

  // The cases below count the server's subscriptions: only a's and b's #lobby.
  await test('leaving a channel drops it and shows the next one', () => ({b}), async () => {
    await Promise.race([Promise.all([ctxE.close(), ctxD.close()]), sleep(5000)]);
    px.close();
    await b.click('[data-testid=channel-item][data-channel="' + ROOM + '"] [data-testid=unsubscribe]', { timeout: STEP_MS });
    const left = await channelItems(b);
    expect(JSON.stringify(left) === '["lobby:true"]', 'bob\'s channels: ' + JSON.stringify(left));
    const active = await b.textContent('#active-channel');
    expect(active === '#lobby', 'bob\'s active channel "' + active + '"');
    await waitFor('the server to see only the two #lobby subscriptions', async () =>
      (await getJson(base + '/api/stats')).subscriptions === 2);
  });

  await test('server restart: Connecting with countdown, then Connected with the subscription restored', () => ({a, b}), async () => {
    const old = srv;
    const gone = await stopServer(old, 'SIGKILL');           // a crash: no close frame
    expect(gone.sig === 'SIGKILL', 'chat_server ended with ' + JSON.stringify(gone));
    for (const p of [a, b]) {
      await explain('Connecting with a countdown', p, p.waitForFunction(() => {
        const s = document.getElementById('status-badge').dataset.state;
        const c = document.getElementById('retry-countdown');
        return s === 'connecting' && !c.hidden && /^retry in \d+s$/.test(c.textContent);
      }, null, { timeout: STEP_MS }), badge);
    }
    const s = await badge(a);
    expect(s.text === 'Connecting', 'badge text "' + s.text + '" while the server is down');
    await explain('#lobby pending while offline', a, a.waitForSelector(
      '[data-testid=channel-item][data-channel="lobby"][data-subscribed="pending"]', { timeout: STEP_MS }), channelItems);
    await shot(a, 'reconnecting');
    // Same port; SO_REUSEADDR lets it bind at once, but allow a few tries.
    srv = null;
    for (let i = 0; !srv; i++) {
      try { srv = await startServer([], port); }
      catch (e) { if (i >= 4) throw e; await sleep(500); }
    }
    // Backoff while down: ~1 s, ~2 s, ~4 s (+-20 %); the server is back well before the third.
    for (const p of [a, b]) {
      const s2 = await waitState(p, 'connected', 15000);
      expect(s2.text === 'Connected' && s2.countdown === '', 'badge after restart: ' + JSON.stringify(s2));
      await waitSubscribed(p, 'lobby');
    }
    const st = await getJson(base + '/api/stats');
    expect(st.subscriptions === 2, 'server sees ' + st.subscriptions + ' subscriptions after the restart, expected 2');
    await publish(b, 'back after the restart');
    await waitMessage(a, 'lobby', 'bob', 'back after the restart');
    const r = await getJson(base + '/api/notify?channel=lobby&text=' + encodeURIComponent('Server is back'));
    expect(r.delivered === 2, 'notify after the restart delivered to ' + r.delivered + ', expected 2');
    await waitToast(b, 'notification', 'Server is back');
    await shot(a, 'restored');
  });

  await test('the restart lost the history: the feed says so with a gap line', () => ({a, b}), async () => {
    for (const [who, p] of [['alice', a], ['bob', b]]) {
      const items = (await feed(p)).filter((m) => m.channel === 'lobby');
      const gaps = items.filter((m) => m.kind === 'gap').length;
      const at = items.findIndex((m) => m.kind === 'gap');
      const next = items.findIndex((m) => m.text === 'back after the restart');
      expect(gaps === 1 && at > 0 && next === at + 1, who + '\'s #lobby: ' + describe(items));
      expect(!items.some((m) => m.recovered), who + '\'s #lobby claims recovered messages: ' + describe(items));
    }
    await shot(a, 'gap');
  });

  // A second server that knows only alice=secret.
  const ctxC = await browser.newContext({ viewport });
  let c = null, auth = null;
  await test('a wrong token shows Unauthorized and is not retried', () => ({c}), async () => {
    auth = await startServer(['--token', 'alice=secret'], 0);
    const authBase = 'http://127.0.0.1:' + auth.port;
    c = await openPage(ctxC, authBase + '/');
    await c.fill('#token-input', 'not-the-secret', { timeout: STEP_MS });
    await c.click('#connect-btn', { timeout: STEP_MS });
    const s = await waitState(c, 'unauthorized');
    expect(s.text === 'Unauthorized', 'badge text "' + s.text + '"');
    await c.waitForSelector('#auth-error:not([hidden])', { timeout: STEP_MS });
    const err = await c.textContent('#auth-error');
    expect(/Unauthorized/.test(err), 'auth error text "' + err + '"');
    // Longer than the first two backoff steps (~1 s, ~2 s): nothing may move.
    const end = Date.now() + 4000;
    while (Date.now() < end) {
      const now = await badge(c);
      expect(now.state === 'unauthorized' && now.countdown === '',
             'the page retried or moved on: ' + JSON.stringify(now));
      await sleep(250);
    }
    expect(c.sockets === 1, 'the page opened ' + c.sockets + ' WebSockets, expected 1');
    const st = await getJson(authBase + '/api/stats');
    expect(st.drops.unauthorized === 1, 'server dropped ' + st.drops.unauthorized + ' unauthorized clients, expected 1');
    await shot(c, 'unauthorized');
  });

  await test('the right token after a refusal connects', () => ({c}), async () => {
    await c.fill('#token-input', 'secret', { timeout: STEP_MS });
    await c.click('#connect-btn', { timeout: STEP_MS });
    await waitState(c, 'connected');
    await c.waitForFunction(() => document.getElementById('user-name').textContent === 'alice', null, { timeout: STEP_MS });
    await c.waitForSelector('#auth-error', { state: 'hidden', timeout: STEP_MS });
  });

  await test('graceful shutdown (1001) is retried, and chat_server exits cleanly', () => ({a}), async () => {
    const r = await stopServer(srv, 'SIGTERM');
    expect(r.code === 0, 'chat_server exit ' + JSON.stringify(r) + ', see ' + srv.log);
    await waitState(a, 'connecting');          // Going Away is not a reason to stop retrying
    const r2 = await stopServer(auth, 'SIGTERM');
    expect(r2.code === 0, 'chat_server (tokens) exit ' + JSON.stringify(r2) + ', see ' + auth.log);
  });

  // Two chat_servers on one Redis (shared positions: Redis numbers and keeps
  // every channel message). frank's page is served by A and reaches it
  // through a proxy, so it comes back only once the restarted A has its
  // Redis links up (a recover that arrives before is answered "recovered":
  // false and the missed messages follow as live ones); grace's page is on B.
  const R_ROOM = 'shared';
  const R_NAME = 'server killed and started again with Redis-backed history: every missed message once, ' +
                 'in order, marked recovered, no gap';
  const R_STOP = 'the chat_servers on Redis exit cleanly, and redis-server stops';
  const redisWhy = opt['redis-skip'] ? opt['redis-skip']
    : !opt['redis-server'] ? 'no --redis-server given'
    : (() => { try { fs.accessSync(opt['redis-server'], fs.constants.X_OK); return ''; }
               catch (e2) { return 'no redis-server at ' + opt['redis-server']; } })();
  if (redisWhy) {
    skip(R_NAME, redisWhy);
    skip(R_STOP, redisWhy);
  } else {
    let rs = null, sa = null, sb = null, rpx = null, f = null, g = null;
    const ctxF = await browser.newContext({ viewport });
    const ctxG = await browser.newContext({ viewport });
    const rMissed = ['while A is down 1', 'while A is down 2', 'while A is down 3', 'server: while A is down 4',
                     'while A is down 5', 'while A is down 6'];

    await test(R_NAME, () => ({f, g}), async () => {
      rs = await startRedis();
      const redisArg = ['--redis', '127.0.0.1:' + rs.port];
      [sa, sb] = await Promise.all([startServer(redisArg, 0), startServer(redisArg, 0)]);
      await waitFor('both chat_servers to link to Redis', async () => await redisLinked(sa) && await redisLinked(sb));
      rpx = await startProxy(sa.port);
      const baseA = 'http://127.0.0.1:' + sa.port, baseB = 'http://127.0.0.1:' + sb.port;
      f = await openPage(ctxF, baseA + '/?token=frank&ws=' + encodeURIComponent('ws://127.0.0.1:' + rpx.port + '/ws'));
      g = await openPage(ctxG, baseB + '/?token=grace');
      await Promise.all([waitState(f, 'connected'), waitState(g, 'connected')]);
      await join(f, R_ROOM);
      await join(g, R_ROOM);
      await publish(g, 'grace before the kill');
      await waitMessage(f, R_ROOM, 'grace', 'grace before the kill');
      await publish(f, 'frank before the kill');
      await waitMessage(g, R_ROOM, 'frank', 'frank before the kill');
      await waitMessage(f, R_ROOM, 'frank', 'frank before the kill');

      rpx.refusing = true;                                  // until A is back with its Redis links
      const gone = await stopServer(sa, 'SIGKILL');          // a crash: no close frame
      expect(gone.sig === 'SIGKILL', 'chat_server A ended with ' + JSON.stringify(gone));
      await waitState(f, 'connecting');
      // Published through B meanwhile: grace's page, and one server
      // notification (/api/notify on B), each shown on grace's page (so
      // numbered and kept in Redis) before the next.
      for (const t of rMissed) {
        if (t.startsWith('server: ')) {
          const text = t.slice(8);
          const r = await httpGet(baseB + '/api/notify?channel=' + R_ROOM + '&text=' + encodeURIComponent(text));
          expect(r.status === 200, '/api/notify on B answered HTTP ' + r.status + ' ' + r.body);
          await waitMessage(g, R_ROOM, 'server', text);
        } else {
          await publish(g, t);
          await waitMessage(g, R_ROOM, 'grace', t);
        }
      }
      const away = await badge(f);
      expect(away.state === 'connecting', 'frank\'s page while A is down: ' + JSON.stringify(away));
      await shot(f, 'redis-away');

      // A again, on its port and the same Redis: a new process, no history of its own.
      const portA = sa.port;
      sa = null;
      for (let i = 0; !sa; i++) {
        try { sa = await startServer(redisArg, portA); }
        catch (e2) { if (i >= 4) throw e2; await sleep(500); }
      }
      await waitFor('chat_server A to link to Redis again', () => redisLinked(sa));
      rpx.refusing = false;
      await reconnect(f, 15000);
      await waitSubscribed(f, R_ROOM);
      const got = (await feed(f)).filter((m) => m.channel === R_ROOM);
      const want = ['grace: grace before the kill', 'frank: frank before the kill',
                    ...rMissed.map((t) => t.startsWith('server: ') ? t : 'grace: ' + t)];
      expect(JSON.stringify(got.map((m) => m.from + ': ' + m.text)) === JSON.stringify(want),
             'frank\'s feed: ' + describe(got));
      expect(got.every((m) => m.kind === 'message'), 'frank\'s feed has a gap line: ' + describe(got));
      expect(got.slice(2).every((m) => m.recovered) && !got[0].recovered && !got[1].recovered,
             'recovered marks: ' + describe(got));
      const st = await getJson(baseA + '/api/stats');
      expect(st.history.recovered >= 1 && st.history.not_recovered === 0,
             'A\'s recovers: ' + JSON.stringify(st.history));
      await shot(f, 'redis-recovered');

      // The restarted A carries frank's publishes to B (through Redis) again.
      await publish(f, 'frank after the restart');
      await waitMessage(g, R_ROOM, 'frank', 'frank after the restart');
      await waitFor('frank\'s outbox to empty', async () => (await outboxRows(f)).length === 0);
      await waitMessage(f, R_ROOM, 'frank', 'frank after the restart');
      for (const [who, p] of [['frank', f], ['grace', g]]) {
        const n = (await said(p)).filter((t) => t === 'frank: frank after the restart').length;
        expect(n === 1, who + ' shows "frank after the restart" ' + n + ' times');
      }
      const gSaw = (await feed(g)).filter((m) => m.channel === R_ROOM);
      expect(JSON.stringify(gSaw.map((m) => m.from + ': ' + m.text)) === JSON.stringify([...want, 'frank: frank after the restart']),
             'grace\'s feed: ' + describe(gSaw));
    });

    await test(R_STOP, () => ({f}), async () => {
      await Promise.race([Promise.all([ctxF.close(), ctxG.close()]), sleep(5000)]);
      if (rpx) rpx.close();
      const bad = [];
      for (const [label, s] of [['A', sa], ['B', sb]]) {
        if (!s) continue;
        const r = await stopServer(s, 'SIGTERM');
        if (r.code !== 0) bad.push('chat_server ' + label + ' exit ' + JSON.stringify(r) + ', see ' + s.log);
      }
      if (rs) {
        const r = await stopServer(rs, 'SIGTERM');
        if (r.code !== 0) bad.push('redis-server exit ' + JSON.stringify(r) + ', see ' + rs.log);
      }
      expect(sa && sb && rs, 'not every process started (see the case above)');
      expect(bad.length === 0, bad.join('; '));
    });
  }

  await test('no uncaught errors in the page', null, async () => {
    expect(pageErrors.length === 0, pageErrors.join(' | '));
  });
}

function finish(code) {
  killAll();
  console.log('# browser test ran ' + ((Date.now() - started) / 1000).toFixed(1) + ' s');
  console.log('Pass: ' + results.pass + ', fail: ' + results.fail + ', skip: ' + results.skip + '.');
  process.exit(code);
}

process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { results.fail++; console.log('FAIL interrupted by ' + sig); finish(1); });

const deadline = setTimeout(() => {
  results.fail++;
  console.log('FAIL the whole run passed its deadline of ' + opt.deadline + ' s');
  finish(1);
}, Number(opt.deadline) * 1000);

main().then(async () => {
  clearTimeout(deadline);
  if (browser) await Promise.race([browser.close(), sleep(5000)]);
  finish(results.fail ? 1 : 0);
}, async (e) => {
  clearTimeout(deadline);
  results.fail++;
  console.log('FAIL setup: ' + (e && e.stack ? e.stack : e));
  if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
  finish(1);
});
