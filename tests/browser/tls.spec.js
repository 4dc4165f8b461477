'use strict';
/* The chat demo over https and wss, in Debian's headless Chromium through
   playwright-core (never a downloaded browser). Plain node, no test runner:

     node tests/browser/tls.spec.js --url https://127.0.0.1:PORT --out DIR [--chromium /usr/bin/chromium]

   The server (chat_server --tls-cert, started by tests/interop/run_tls.sh
   with a certificate from a CA made at test time) is the caller's. Chromium
   does not know that CA: it runs with --ignore-certificate-errors, which
   the page cannot tell from a trusted certificate. Checks:
     - the page loads over https and its WebSocket goes to wss:// (the page
       picks the scheme from its own), and the badge says Connected;
     - a message published on one page reaches a page in another context
       (another browser profile), both over wss.
   Every wait is bounded. Prints one line per case and
   "Pass: N, fail: N, skip: N." last. */

const fs = require('fs');
const path = require('path');

const opt = { url: '', out: 'build/browser', chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].replace(/^--/, '');
  if (!(k in opt) || i + 1 >= process.argv.length) {
    console.error('usage: tls.spec.js --url https://HOST:PORT [--out DIR] [--chromium PATH]');
    process.exit(2);
  }
  opt[k] = process.argv[++i];
}

const STEP_MS = 8000;
const results = { pass: 0, fail: 0 };

async function test(name, pages, body) {
  try {
    await body();
    results.pass++;
    console.log('ok   ' + name);
  } catch (e) {
    results.fail++;
    console.log('FAIL ' + name + ': ' + (e && e.message ? e.message.split('\n')[0] : e));
    for (const [label, p] of Object.entries(pages())) {
      if (p) await p.screenshot({ path: path.join(opt.out, 'tls-' + label + '.png') }).catch(() => {});
    }
  }
}

function expect(cond, msg) { if (!cond) throw new Error(msg); }

async function openConnected(ctx, user) {
  const page = await ctx.newPage();
  await page.goto(opt.url + '/?token=' + user, { timeout: STEP_MS });
  await page.waitForSelector('#status-badge[data-state="connected"]', { timeout: STEP_MS });
  return page;
}

async function join(page, channel) {
  await page.fill('#channel-input', channel, { timeout: STEP_MS });
  await page.click('#subscribe-btn', { timeout: STEP_MS });
  await page.waitForSelector('#channel-list [data-testid=channel-item][data-channel="' + channel +
                             '"][data-subscribed="true"]', { timeout: STEP_MS });
}

async function waitMessage(page, channel, from, text) {
  await page.waitForFunction(([c, f, t]) => [...document.querySelectorAll('#feed [data-testid=message]')].some(
    (m) => m.dataset.channel === c && m.dataset.from === f && m.querySelector('.text').textContent === t),
  [channel, from, text], { timeout: STEP_MS });
}

async function main() {
  fs.mkdirSync(opt.out, { recursive: true });
  const { chromium } = require('playwright-core');
  const browser = await chromium.launch({
    executablePath: opt.chromium,
    timeout: 30000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--ignore-certificate-errors'],
  });
  let a = null, b = null;
  try {
    const ctxA = await browser.newContext();
    const ctxB = await browser.newContext();
    await test('the page loads over https, connects over wss and shows Connected', () => ({a}), async () => {
      a = await openConnected(ctxA, 'alice');
      const where = await a.evaluate(() => [location.protocol, window.chatApp.client.ws.url]);
      expect(where[0] === 'https:', 'page protocol ' + where[0]);
      expect(/^wss:\/\/127\.0\.0\.1:\d+\/ws/.test(where[1]), 'WebSocket URL ' + where[1]);
    });
    await test('a message published on one page reaches another browser profile, both over wss', () => ({a, b}),
      async () => {
        expect(a, 'no first page');
        b = await openConnected(ctxB, 'bob');
        await join(a, 'lobby');
        await join(b, 'lobby');
        await b.fill('#publish-input', 'hello over wss', { timeout: STEP_MS });
        await b.click('#publish-btn', { timeout: STEP_MS });
        await waitMessage(a, 'lobby', 'bob', 'hello over wss');
        await waitMessage(b, 'lobby', 'bob', 'hello over wss');
      });
  } finally {
    await browser.close();
  }
}

const deadline = setTimeout(() => {
  console.log('FAIL the run did not finish within 90 s');
  console.log('Pass: ' + results.pass + ', fail: ' + (results.fail + 1) + ', skip: 0.');
  process.exit(1);
}, 90000);
main().catch((e) => {
  results.fail++;
  console.log('FAIL ' + (e && e.message ? e.message.split('\n')[0] : e));
}).finally(() => {
  clearTimeout(deadline);
  console.log('Pass: ' + results.pass + ', fail: ' + results.fail + ', skip: 0.');
  process.exitCode = results.fail ? 1 : 0;
});
