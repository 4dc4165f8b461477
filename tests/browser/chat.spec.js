'use strict';
/* Browser test of the chat demo: examples/chat_server and its page
   (examples/www), driven in Debian's headless Chromium through playwright-core
   (never a downloaded browser). Plain node, no test runner:

     node tests/browser/chat.spec.js --server build/browser/chat_server \
          --www examples/www --out build/browser [--chromium /usr/bin/chromium]

   It starts and stops its own servers on 127.0.0.1 (--port 0 first; the
   restart reuses the port the first one chose) and checks, through the page's
   documented ids and data-testid hooks (top of examples/www/app.js):
     - the page connects and the badge says Connected;
     - a server broadcast (GET /api/notify) shows a toast;
     - a message published on one page reaches a page in another context;
     - after the server is killed and started again, the badge goes to
       Connecting with a retry countdown and back to Connected, and both
       subscriptions are back (a publish after the restart arrives);
     - a wrong token shows Unauthorized and is not retried (the page opens one
       WebSocket and the server counts one unauthorized drop);
     - the servers exit cleanly on SIGTERM (they are built with ASan/UBSan).
   Every wait is bounded and the whole run has a deadline. Screenshots go to
   --out. Prints one line per case and "Pass: N, fail: N, skip: N." last. */

const fs = require('fs');
const path = require('path');
const http = require('http');
const { spawn } = require('child_process');

const opt = { server: '', www: 'examples/www', out: 'build/browser', chromium: process.env.CHROMIUM || '/usr/bin/chromium',
              deadline: 150 };
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].replace(/^--/, '');
  if (!(k in opt) || i + 1 >= process.argv.length) {
    console.error('usage: chat.spec.js --server PATH [--www DIR] [--out DIR] [--chromium PATH] [--deadline S]');
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
  throw new Error('chat_server ' + srv.proc.pid + ' did not exit within 8 s of ' + sig);
}

function killAll() {
  for (const srv of servers) { try { srv.proc.kill('SIGKILL'); } catch (e) { /* gone */ } }
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
