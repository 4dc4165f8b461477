// node_server.js - the Node.js peers of the benchmarks, on the npm "ws"
// package (with its native bufferutil and utf-8-validate addons when they
// are installed: the script says which).
//
//   node node_server.js echo PORT [deflate]   echo every message back, as it came
//   node node_server.js hub PORT    the demo hub's protocol on /ws?token=T:
//       <- {"type":"welcome","payload":{"user":T}} after the upgrade
//       -> {"type":"subscribe","payload":{"channel":C}}  <- {"type":"subscribed",...}
//       -> {"type":"publish","payload":{"channel":C,"data":D}} (sender must be subscribed)
//       <- {"type":"message","payload":{"channel":C,"from":T,"data":D}} to every subscriber
// A broadcast is serialised once and the same Buffer is sent to every
// subscriber, the way ws's documentation broadcasts. Listens on 127.0.0.1.
// With "deflate" after the port, permessage-deflate is accepted with ws's
// own defaults (perMessageDeflate: true: context takeover, window 15,
// zlib's default level, messages of 1 KiB and more compressed), as a user
// who turns it on gets it; without it, the extension is refused.
'use strict';
const { WebSocketServer } = require('ws');

const mode = process.argv[2];
const port = Number(process.argv[3]);
const deflate = process.argv[4] === 'deflate';
if ((mode !== 'echo' && mode !== 'hub') || !port || (process.argv[4] !== undefined && !deflate)) {
  console.error('usage: node node_server.js echo|hub PORT [deflate]');
  process.exit(2);
}

function has(name) {
  try { require.resolve(name); return true; } catch (e) { return false; }
}
const addons = ['bufferutil', 'utf-8-validate'].filter(has);

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  backlog: 512,
  perMessageDeflate: deflate,
  maxPayload: 64 * 1024 * 1024,
  clientTracking: false,
});

if (mode === 'echo') {
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', () => {});
  });
} else {
  const channels = new Map(); // channel -> Set of sockets
  const send = (ws, type, payload) => ws.send(JSON.stringify({ type, payload }));
  wss.on('connection', (ws, req) => {
    const url = new URL(req.url, 'http://localhost');
    const user = url.searchParams.get('token');
    if (url.pathname !== '/ws' || !user) {
      ws.close(4001, 'Unauthorized');
      return;
    }
    const mine = new Set();
    send(ws, 'welcome', { user });
    ws.on('message', (data, isBinary) => {
      if (isBinary) { ws.close(1003); return; }
      let env;
      try { env = JSON.parse(data.toString()); } catch (e) {
        send(ws, 'error', { code: 'bad_envelope', message: 'not JSON' });
        return;
      }
      const p = env && env.payload;
      const channel = p && typeof p.channel === 'string' ? p.channel : null;
      switch (env && env.type) {
        case 'ping': send(ws, 'pong', p); break;
        case 'subscribe':
          if (!channel) { send(ws, 'error', { code: 'bad_payload', request: 'subscribe' }); break; }
          if (!channels.has(channel)) channels.set(channel, new Set());
          channels.get(channel).add(ws);
          mine.add(channel);
          send(ws, 'subscribed', { channel });
          break;
        case 'unsubscribe':
          if (channel && channels.has(channel)) channels.get(channel).delete(ws);
          if (channel) mine.delete(channel);
          send(ws, 'unsubscribed', { channel });
          break;
        case 'publish': {
          if (!channel || !mine.has(channel)) {
            send(ws, 'error', { code: 'not_subscribed', request: 'publish' });
            break;
          }
          const out = Buffer.from(JSON.stringify({ type: 'message', payload: { channel, from: user, data: p.data } }));
          for (const sub of channels.get(channel)) sub.send(out, { binary: false });
          break;
        }
        default: send(ws, 'error', { code: 'unknown_type', request: String(env && env.type) });
      }
    });
    ws.on('close', () => {
      for (const c of mine) {
        const set = channels.get(c);
        if (set) { set.delete(ws); if (set.size === 0) channels.delete(c); }
      }
    });
    ws.on('error', () => {});
  });
}

wss.on('listening', () => {
  console.log(`node_server: ${mode} listening on ${port} (ws ${require('ws/package.json').version}, ` +
    `permessage-deflate ${deflate ? 'on' : 'off'}, ` +
    `native addons: ${addons.join(', ') || 'none'})`);
});
process.on('SIGTERM', () => process.exit(0));
