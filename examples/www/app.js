/* app.js - the Channels demo page for chat_server (plain JavaScript, no build
   step). It speaks the same envelope as ws_channel.h, {"type", "payload"},
   through the browser's own WebSocket, with the library client's policy:
   exponential backoff min(1 s * 2^n, 30 s) with +-20 % jitter, at most 10
   attempts; a heartbeat ping every 30 s and a reconnect when nothing comes
   back within 10 s; subscriptions replayed after every reconnect; a bounded
   offline queue (100 envelopes); close codes 4001 (Unauthorized) and 1008
   end the retry loop.

   The token goes in a Sec-WebSocket-Protocol entry "bearer.<token>" next to
   "wsch" (the server selects "wsch"), so it stays out of URLs and logs; a
   token with characters a protocol entry cannot hold goes in ?token=.
   The page's URL may carry ?token=T (connect at once) and ?ws=URL (another hub).

   Stable hooks for browser tests (id and data-testid):
     #status-badge     [data-testid=status]        data-state = connected | connecting |
                                                   disconnected | unauthorized; data-attempt = N
     #status-text      [data-testid=status-text]   "Connected" / "Connecting" / "Disconnected" / "Unauthorized"
     #retry-countdown  [data-testid=retry-countdown] "retry in 3s" while waiting to reconnect
     #retry-btn        [data-testid=retry]         reconnect now (while waiting, or after giving up)
     #disconnect-btn   [data-testid=disconnect]    sign out: stops reconnecting, forgets the token
     #user-name        [data-testid=user]          the user name from the server's welcome
     #signin           [data-testid=signin]        the sign-in card (hidden while signed in)
     #token-input      [data-testid=token-input]
     #connect-btn      [data-testid=connect]
     #auth-error       [data-testid=auth-error]    "Unauthorized: ..." after a refused token
     #channel-input    [data-testid=channel-input]
     #subscribe-btn    [data-testid=subscribe]
     #channel-list     [data-testid=channel-list]  li[data-testid=channel-item][data-channel=NAME]
                                                   [data-subscribed=pending|true], with
                                                   button[data-testid=unsubscribe] and
                                                   span[data-testid=unread]
     #channel-count    [data-testid=channel-count]
     #active-channel   [data-testid=active-channel]
     #feed             [data-testid=feed]          div[data-testid=message][data-channel][data-from]
                                                   with .text holding the message text
     #publish-input    [data-testid=publish-input] publishes to the active channel
     #publish-btn      [data-testid=publish]
     #toasts           [data-testid=toasts]        div[data-testid=toast][data-type=message |
                                                   notification | direct | error | info], with
                                                   .toast-title and .toast-body
   window.chatApp = {client, state} is there for debugging and tests. */
'use strict';

(function () {
  // ---- the client ----------------------------------------------------------

  const RECONNECT_BASE_MS = 1000;
  const RECONNECT_CAP_MS = 30000;
  const MAX_ATTEMPTS = 10;
  const JITTER = 0.2;
  const HEARTBEAT_MS = 30000;
  const PONG_TIMEOUT_MS = 10000;
  const OFFLINE_QUEUE_MAX = 100;
  const NO_RETRY = new Set([4001, 1008]);
  const TOKEN_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;   // what a protocol entry may hold

  class ChannelClient {
    constructor(url) {
      this.url = url;
      this.token = '';
      this.ws = null;
      this.status = 'disconnected';
      this.attempt = 0;            // failed attempts since the last open
      this.nextRetryAt = 0;        // Date.now() of the next attempt while waiting, else 0
      this.stopped = true;
      this.channels = new Set();   // replayed after every reconnect
      this.queue = [];             // envelopes sent while offline
      this.handlers = new Map();   // type -> Set of functions; '*' sees every envelope
      this.statusHandlers = new Set();
      this.retryTimer = 0;
      this.heartbeatTimer = 0;
      this.pongTimer = 0;
      this.lastClose = null;
    }

    on(type, fn) {
      if (!this.handlers.has(type)) this.handlers.set(type, new Set());
      this.handlers.get(type).add(fn);
      return () => this.handlers.get(type).delete(fn);
    }

    onStatus(fn) {
      this.statusHandlers.add(fn);
      return () => this.statusHandlers.delete(fn);
    }

    setStatus(status) {
      this.status = status;
      for (const fn of this.statusHandlers) fn(status, this);
    }

    connect(token) {
      this.token = token;
      this.stopped = false;
      this.attempt = 0;
      this.open();
    }

    disconnect() {
      this.stopped = true;
      this.clearTimers();
      this.nextRetryAt = 0;
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        this.detach(ws);
        try { ws.close(1000, 'bye'); } catch (e) { /* already closing */ }
      }
      this.setStatus('disconnected');
    }

    retryNow() {
      if (this.ws || !this.token) return;
      this.stopped = false;
      if (this.attempt >= MAX_ATTEMPTS) this.attempt = 0;
      this.open();
    }

    subscribe(channel) {
      this.channels.add(channel);
      this.sendNow('subscribe', { channel });
    }

    unsubscribe(channel) {
      this.channels.delete(channel);
      this.sendNow('unsubscribe', { channel });
    }

    // Sends now, or queues while offline (bounded: the oldest goes first).
    send(type, payload) {
      if (this.sendNow(type, payload)) return true;
      if (this.queue.length >= OFFLINE_QUEUE_MAX) this.queue.shift();
      this.queue.push({ type, payload });
      return false;
    }

    sendNow(type, payload) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
      this.ws.send(JSON.stringify(payload === undefined ? { type } : { type, payload }));
      return true;
    }

    open() {
      this.clearTimers();
      this.nextRetryAt = 0;
      this.setStatus('connecting');
      let ws;
      try {
        if (TOKEN_CHARS.test(this.token)) {
          ws = new WebSocket(this.url, ['wsch', 'bearer.' + this.token]);
        } else {
          const sep = this.url.includes('?') ? '&' : '?';
          ws = new WebSocket(this.url + sep + 'token=' + encodeURIComponent(this.token), ['wsch']);
        }
      } catch (e) {
        this.scheduleRetry();
        return;
      }
      this.ws = ws;
      ws.onopen = () => {
        this.attempt = 0;
        this.setStatus('connected');
        for (const channel of this.channels) this.sendNow('subscribe', { channel });
        const queued = this.queue;
        this.queue = [];
        for (const m of queued) this.send(m.type, m.payload);
        this.heartbeat();
      };
      ws.onmessage = (ev) => {
        let env;
        try { env = JSON.parse(ev.data); } catch (e) { return; }
        if (!env || typeof env.type !== 'string') return;
        clearTimeout(this.pongTimer);       // the peer is alive
        this.pongTimer = 0;
        const set = this.handlers.get(env.type);
        if (set) for (const fn of [...set]) fn(env.payload, env);
        const all = this.handlers.get('*');
        if (all) for (const fn of [...all]) fn(env.payload, env);
      };
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.detach(ws);
        this.lastClose = { code: ev.code, reason: ev.reason };
        this.clearTimers();
        if (this.stopped) {
          this.setStatus('disconnected');
        } else if (NO_RETRY.has(ev.code)) {
          this.stopped = true;
          this.setStatus(ev.code === 4001 ? 'unauthorized' : 'disconnected');
        } else {
          this.scheduleRetry();
        }
      };
    }

    detach(ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = null;
    }

    // Dead-peer detection: a ping every HEARTBEAT_MS; no answer (of any kind)
    // within PONG_TIMEOUT_MS means the connection is gone even if TCP says not.
    heartbeat() {
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = setInterval(() => {
        if (!this.sendNow('ping', { t: Date.now() })) return;
        if (this.pongTimer) return;
        this.pongTimer = setTimeout(() => {
          const ws = this.ws;
          if (!ws) return;
          this.ws = null;
          this.detach(ws);
          try { ws.close(); } catch (e) { /* ignore */ }
          this.lastClose = { code: 1006, reason: 'no answer to ping' };
          this.clearTimers();
          this.scheduleRetry();
        }, PONG_TIMEOUT_MS);
      }, HEARTBEAT_MS);
    }

    scheduleRetry() {
      if (this.attempt >= MAX_ATTEMPTS) {
        this.stopped = true;
        this.nextRetryAt = 0;
        this.setStatus('disconnected');
        return;
      }
      const base = Math.min(RECONNECT_BASE_MS * Math.pow(2, this.attempt), RECONNECT_CAP_MS);
      const delay = Math.round(base * (1 - JITTER + 2 * JITTER * Math.random()));
      this.attempt++;
      this.nextRetryAt = Date.now() + delay;
      this.retryTimer = setTimeout(() => this.open(), delay);
      this.setStatus('connecting');
    }

    clearTimers() {
      clearTimeout(this.retryTimer);
      clearInterval(this.heartbeatTimer);
      clearTimeout(this.pongTimer);
      this.retryTimer = this.heartbeatTimer = this.pongTimer = 0;
    }
  }

  // ---- the page ------------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const el = {
    badge: $('status-badge'), statusText: $('status-text'), countdown: $('retry-countdown'),
    retry: $('retry-btn'), disconnect: $('disconnect-btn'), user: $('user-name'),
    signin: $('signin'), signinForm: $('signin-form'), token: $('token-input'), authError: $('auth-error'),
    subscribeForm: $('subscribe-form'), channelInput: $('channel-input'), channelList: $('channel-list'),
    channelCount: $('channel-count'), channelsEmpty: $('channels-empty'),
    active: $('active-channel'), activeSub: $('active-sub'), feed: $('feed'),
    publishForm: $('publish-form'), publishInput: $('publish-input'), publishBtn: $('publish-btn'),
    toasts: $('toasts'),
  };

  const params = new URLSearchParams(location.search);
  const wsUrl = params.get('ws') || (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  const CHANNEL_RE = /^[A-Za-z0-9_.:@\/-]{1,128}$/;
  const MAX_FEED = 200;
  // Toasts stay 6 s; on a phone (the layout's breakpoint in app.css) they sit
  // over the feed, so 4 s.
  const TOAST_MS = 6000, TOAST_MS_SMALL = 4000;
  const small = window.matchMedia('(max-width: 760px)');
  const store = {
    get(k, d) { try { const v = localStorage.getItem('wsch.' + k); return v === null ? d : JSON.parse(v); } catch (e) { return d; } },
    set(k, v) { try { localStorage.setItem('wsch.' + k, JSON.stringify(v)); } catch (e) { /* private mode */ } },
    del(k) { try { localStorage.removeItem('wsch.' + k); } catch (e) { /* ignore */ } },
  };

  const state = {
    user: '',
    channels: new Map(),   // name -> {subscribed: bool, unread: n, messages: []}
    active: '',
  };
  const client = new ChannelClient(wsUrl);
  window.chatApp = { client, state };

  function time(d) {
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function colorFor(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return 'hsl(' + (h % 360) + ' 62% 52%)';
  }

  function textOf(data) {
    if (typeof data === 'string') return data;
    if (data && typeof data === 'object' && typeof data.text === 'string') return data.text;
    return JSON.stringify(data);
  }

  function node(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  }

  // ---- toasts ----
  function toast(type, title, body) {
    const t = node('div', 'toast');
    t.setAttribute('data-testid', 'toast');
    t.dataset.type = type;
    const head = node('div', 'toast-title');
    head.append(node('span', '', title), node('span', 'time', time(new Date())));
    t.append(head, node('div', 'toast-body', body));
    const remove = () => {
      if (!t.isConnected || t.classList.contains('leaving')) return;
      t.classList.add('leaving');
      setTimeout(() => t.remove(), 200);
    };
    t.addEventListener('click', remove);
    setTimeout(remove, small.matches ? TOAST_MS_SMALL : TOAST_MS);
    el.toasts.prepend(t);
    while (el.toasts.children.length > 5) el.toasts.lastElementChild.remove();
  }

  // ---- status ----
  let countdownTimer = 0;
  function renderStatus() {
    const s = client.status;
    el.badge.dataset.state = s;
    el.badge.dataset.attempt = String(client.attempt);
    el.statusText.textContent = { connected: 'Connected', connecting: 'Connecting', disconnected: 'Disconnected',
                                  unauthorized: 'Unauthorized' }[s];
    const waiting = s === 'connecting' && client.nextRetryAt > 0;
    if (waiting) {
      const secs = Math.max(0, Math.ceil((client.nextRetryAt - Date.now()) / 1000));
      el.countdown.textContent = 'retry in ' + secs + 's';
    }
    el.countdown.hidden = !waiting;
    el.retry.hidden = !(waiting || (s === 'disconnected' && client.token && client.attempt >= MAX_ATTEMPTS));
    const signedIn = !!client.token && (s === 'connected' || s === 'connecting' || el.retry.hidden === false);
    el.signin.hidden = signedIn;
    document.body.classList.toggle('signed-in', signedIn);   // app.css lays out phones by it
    el.disconnect.hidden = !signedIn;
    el.user.hidden = !(signedIn && state.user);
    if (s === 'unauthorized') {
      el.authError.textContent = 'Unauthorized: the server refused this token.';
      el.authError.hidden = false;
    }
    renderComposer();
    clearInterval(countdownTimer);
    if (waiting) countdownTimer = setInterval(renderStatus, 250);
  }

  client.onStatus((s) => {
    if (s === 'connected') el.authError.hidden = true;
    if (s !== 'connected') {
      for (const ch of state.channels.values()) ch.subscribed = false;
      renderChannels();
    }
    renderStatus();
  });

  // ---- channels ----
  function saveChannels() {
    store.set('channels', [...state.channels.keys()]);
    store.set('active', state.active);
  }

  function addChannel(name) {
    if (!state.channels.has(name)) state.channels.set(name, { subscribed: false, unread: 0, messages: [] });
    client.subscribe(name);
    saveChannels();
    renderChannels();
  }

  function removeChannel(name) {
    state.channels.delete(name);
    client.unsubscribe(name);
    if (state.active === name) state.active = state.channels.keys().next().value || '';
    saveChannels();
    renderChannels();
    renderFeed();
  }

  function select(name) {
    state.active = name;
    const ch = state.channels.get(name);
    if (ch) ch.unread = 0;
    saveChannels();
    renderChannels();
    renderFeed();
  }

  function renderChannels() {
    el.channelList.replaceChildren();
    for (const [name, ch] of state.channels) {
      const li = node('li', 'channel-item' + (name === state.active ? ' active' : ''));
      li.setAttribute('data-testid', 'channel-item');
      li.dataset.channel = name;
      li.dataset.subscribed = ch.subscribed ? 'true' : 'pending';
      li.title = ch.subscribed ? name : name + ' (joining…)';
      li.append(node('span', 'hash', '#'), node('span', 'name', name));
      if (ch.unread) {
        const u = node('span', 'unread', ch.unread > 99 ? '99+' : String(ch.unread));
        u.setAttribute('data-testid', 'unread');
        li.append(u);
      }
      const x = node('button', 'remove', '×');
      x.type = 'button';
      x.title = 'Leave ' + name;
      x.setAttribute('aria-label', 'Leave ' + name);
      x.setAttribute('data-testid', 'unsubscribe');
      x.addEventListener('click', (e) => { e.stopPropagation(); removeChannel(name); });
      li.append(x);
      li.addEventListener('click', () => select(name));
      el.channelList.append(li);
    }
    el.channelCount.textContent = String(state.channels.size);
    el.channelsEmpty.hidden = state.channels.size > 0;
    renderComposer();
  }

  // ---- the feed ----
  function messageNode(m) {
    const row = node('div', 'msg' + (m.system ? ' system' : '') + (m.from && m.from === state.user ? ' mine' : ''));
    row.setAttribute('data-testid', 'message');
    row.dataset.channel = m.channel;
    row.dataset.from = m.from || '';
    const av = node('div', 'avatar', (m.from || '•').slice(0, 1).toUpperCase());
    av.style.background = m.system ? '#9097a8' : colorFor(m.from || '');
    const body = node('div', 'body');
    const meta = node('div', 'meta');
    meta.append(node('span', 'from', m.from || 'server'), node('span', 'time', time(m.at)));
    body.append(meta, node('div', 'text', m.text));
    row.append(av, body);
    return row;
  }

  function renderFeed() {
    const ch = state.channels.get(state.active);
    el.active.textContent = state.active ? '#' + state.active : 'No channel selected';
    el.activeSub.textContent = state.active ? 'Messages published here reach every subscriber of #' + state.active + '.'
                                            : 'Join a channel to start talking.';
    el.feed.replaceChildren();
    if (!ch || ch.messages.length === 0) {
      el.feed.append(node('div', 'feed-empty', ch ? 'No messages yet. Say hello!' : 'Pick a channel from your list, or join one.'));
    } else {
      for (const m of ch.messages) el.feed.append(messageNode(m));
      el.feed.scrollTop = el.feed.scrollHeight;
    }
    renderComposer();
  }

  function addMessage(channel, m) {
    const ch = state.channels.get(channel);
    if (!ch) return;
    ch.messages.push(m);
    if (ch.messages.length > MAX_FEED) ch.messages.shift();
    if (channel === state.active) {
      const empty = el.feed.querySelector('.feed-empty');
      if (empty) empty.remove();
      el.feed.append(messageNode(m));
      while (el.feed.children.length > MAX_FEED) el.feed.firstElementChild.remove();
      el.feed.scrollTop = el.feed.scrollHeight;
    } else {
      ch.unread++;
      renderChannels();
    }
  }

  function renderComposer() {
    const ch = state.channels.get(state.active);
    const ok = !!ch && !!client.token && client.status !== 'unauthorized';
    el.publishInput.disabled = !ok;
    el.publishBtn.disabled = !ok;
    el.publishInput.placeholder = !ch ? 'Join a channel to write…'
      : !ok ? 'Sign in to write…'
      : client.status === 'connected' ? 'Message #' + state.active
      : 'Message #' + state.active + ' (sent when back online)';
  }

  // ---- envelopes from the server ----
  client.on('welcome', (p) => {
    state.user = p && typeof p.user === 'string' ? p.user : '';
    el.user.textContent = state.user;
    renderStatus();
  });

  client.on('subscribed', (p) => {
    const ch = p && state.channels.get(p.channel);
    if (ch) { ch.subscribed = true; renderChannels(); }
  });

  client.on('message', (p) => {
    if (!p || typeof p.channel !== 'string') return;
    const from = typeof p.from === 'string' ? p.from : '';
    const text = textOf(p.data);
    addMessage(p.channel, { channel: p.channel, from, text, at: new Date() });
    if (from !== state.user) toast('message', '#' + p.channel + ' · ' + from, text);
  });

  client.on('notification', (p) => {
    if (!p) return;
    const text = typeof p.text === 'string' ? p.text : textOf(p);
    const where = typeof p.channel === 'string' ? ' · #' + p.channel : '';
    toast('notification', 'Notification' + where, text);
    if (typeof p.channel === 'string') addMessage(p.channel, { channel: p.channel, from: 'server', text, at: new Date(), system: true });
  });

  client.on('direct', (p) => {
    if (!p || p.from === state.user) return;
    toast('direct', 'Direct message from ' + p.from, textOf(p.data));
  });

  client.on('error', (p) => {
    if (!p) return;
    if (p.request === 'subscribe' && typeof p.channel === 'string') {
      state.channels.delete(p.channel);
      client.channels.delete(p.channel);
      if (state.active === p.channel) state.active = state.channels.keys().next().value || '';
      saveChannels();
      renderChannels();
      renderFeed();
    }
    toast('error', 'Server: ' + (p.code || 'error'), p.message || '');
  });

  // ---- user actions ----
  el.signinForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const token = el.token.value.trim();
    if (!token) {
      el.authError.textContent = 'Enter a token.';
      el.authError.hidden = false;
      return;
    }
    el.authError.hidden = true;
    store.set('token', token);
    state.user = '';
    client.connect(token);
  });

  el.disconnect.addEventListener('click', () => {
    store.del('token');
    client.disconnect();
    client.token = '';
    state.user = '';
    el.user.textContent = '';
    el.token.value = '';
    renderStatus();
  });

  el.retry.addEventListener('click', () => client.retryNow());

  el.subscribeForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = el.channelInput.value.trim().replace(/^#/, '');
    if (!CHANNEL_RE.test(name)) {
      toast('error', 'Invalid channel name', 'Use 1-128 letters, digits or - _ . : @ /');
      return;
    }
    el.channelInput.value = '';
    addChannel(name);
    select(name);
  });

  el.channelsEmpty.addEventListener('click', (e) => {
    const name = e.target && e.target.dataset ? e.target.dataset.join : '';
    if (name) { addChannel(name); select(name); }
  });

  el.publishForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = el.publishInput.value;
    if (!text.trim() || !state.active) return;
    client.send('publish', { channel: state.active, data: { text } });
    el.publishInput.value = '';
  });

  // ---- start ----
  for (const name of store.get('channels', [])) {
    if (typeof name === 'string' && CHANNEL_RE.test(name)) {
      state.channels.set(name, { subscribed: false, unread: 0, messages: [] });
      client.channels.add(name);
    }
  }
  const savedActive = store.get('active', '');
  state.active = state.channels.has(savedActive) ? savedActive : (state.channels.keys().next().value || '');
  renderChannels();
  renderFeed();
  renderStatus();
  const token = params.get('token') || store.get('token', '');
  if (token) {
    el.token.value = token;
    store.set('token', token);
    client.connect(token);
  }
})();
