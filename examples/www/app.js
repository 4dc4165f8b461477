/* app.js - the Channels demo page for chat_server (plain JavaScript, no build
   step). It speaks the same envelope as ws_channel.h, {"type", "payload"},
   through the browser's own WebSocket, with the library client's policy:
   exponential backoff min(1 s * 2^n, 30 s) with +-20 % jitter, at most 10
   attempts; a heartbeat ping every 30 s and a reconnect when nothing comes
   back within 10 s; subscriptions replayed after every reconnect; a bounded
   offline queue (100 envelopes; publishes use the outbox below, 100 unacked
   at most, past that a publish is refused); close codes 4001 (Unauthorized) and 1008
   end the retry loop.

   Nothing is lost or shown twice across a reconnect. The server numbers each
   channel's messages (envelope fields "channel", "offset", "epoch"; the epoch
   changes when the server lost the channel's history, e.g. on a restart). The
   page remembers per channel the position of the last message it showed,
   drops anything not newer, and after every reconnect subscribes again with
   {"recover": {offset, epoch}}: the server replays what was missed, then
   confirms with "subscribed" and recovered true or false. A channel the page
   has not joined yet asks for {"history": 50} instead, so a late joiner sees
   the recent conversation. Publishes go through an outbox: each carries an
   id ("id" beside type and payload), stays until the server's "ack" with
   that id, and is sent again after a reconnect; the server acks a resent id
   again without publishing it twice, because ids are scoped by the session
   named in the URL (?session=S, random, kept in sessionStorage so a reload
   keeps it, together with the next id and the unsent messages). A
   duplicated tab starts with a copy of that; pages sharing a session find
   each other on a BroadcastChannel and the newer one takes a new session.

   Who is online: every subscribe asks for the channel's presence
   ("presence": true). The page keeps one member set per channel, per user
   (a user's second tab is not a second member): the "subscribed"
   confirmation's "presence" list replaces it, so after a reconnect it is
   resynchronised, not added to; "presence_diff" applies joins and leaves;
   a "presence" message replaces it; "presence_stats" (or a confirmation's,
   past the server's cap) leaves only the counts ("N online"). The active
   channel's set shows in its header, each user once, with the device it
   named if any. Connecting, the page names its device (?device=desktop or
   phone, guessed from the browser) for the others' lists.

   The token goes in a Sec-WebSocket-Protocol entry "bearer.<token>" next to
   "wsch" (the server selects "wsch"), so it stays out of URLs and logs; a
   token with characters a protocol entry cannot hold goes in ?token=.
   The page's URL may carry ?token=T (connect at once), ?ws=URL (another hub)
   and ?device=NAME (the device others see instead of the guess; empty: none).

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
     #presence         [data-testid=presence]      who is online in the active channel (hidden when
                                                   unknown or off): data-channel = NAME, data-mode =
                                                   list | stats (counts only) | off (server does not
                                                   track it) | none (not known yet); data-stale = true
                                                   while the channel is not subscribed (last known set)
     #presence-count   [data-testid=presence-count] "N online", data-users = N
     #presence-list    [data-testid=presence-list] li[data-testid=presence-member][data-user=U], one per
                                                   user (empty in stats mode), with .presence-name,
                                                   [data-self=true] for this page's user, and when the
                                                   user named a device [data-device=D] and
                                                   .presence-device
     #feed             [data-testid=feed]          div[data-testid=message][data-channel][data-from]
                                                   with .text holding the message text, and
                                                   [data-offset=N] when the server numbered it;
                                                   replayed after a reconnect: .recovered,
                                                   [data-recovered=true], a "recovered" tag;
                                                   replayed on first join: .earlier,
                                                   [data-history=true], an "earlier" tag
                                                   div[data-testid=gap][data-channel]  "Some messages
                                                   could not be recovered" where a replay fell short
                                                   div[data-testid=outbox][data-channel][data-id]
                                                   [data-state=pending|failed]: an unacknowledged
                                                   publish of this page (after the messages), .text;
                                                   failed ones have .outbox-error and
                                                   button[data-testid=outbox-retry|outbox-discard]
     #publish-input    [data-testid=publish-input] publishes to the active channel
     #publish-btn      [data-testid=publish]
     #toasts           [data-testid=toasts]        div[data-testid=toast][data-type=message |
                                                   notification | direct | error | info], with
                                                   .toast-title and .toast-body
   window.chatApp = {client, state} is there for debugging and tests
   (client.session, client.outbox, state.channels.get(C).pos and .presence). */
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
  const OUTBOX_MAX = 100;          // unacknowledged publishes; past that a publish is refused, not dropped
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
      // What a subscribe asks for (the page adds recover or history).
      this.subscribePayload = (channel) => ({ channel });
      this.queue = [];             // envelopes sent while offline (not publishes: those use the outbox)
      this.session = '';           // ?session=: scopes publish ids on the server
      this.device = '';            // ?device=: shown to others beside this user (presence info)
      this.nextId = 1;
      this.outbox = [];            // {id, channel, data, state: 'pending' | 'failed', error}, oldest first
      this.outboxHandlers = new Set();
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
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.sendNow('subscribe', this.subscribePayload(channel));
    }

    unsubscribe(channel) {
      this.channels.delete(channel);
      this.sendNow('unsubscribe', { channel });
    }

    onOutbox(fn) {
      this.outboxHandlers.add(fn);
      return () => this.outboxHandlers.delete(fn);
    }

    outboxChanged() {
      for (const fn of this.outboxHandlers) fn(this.outbox, this);
    }

    // Reliable publish: kept until the server acks its id, sent again after
    // every reconnect. Returns the entry, or null when the outbox is full.
    publish(channel, data) {
      if (this.outbox.length >= OUTBOX_MAX) return null;
      const m = { id: this.nextId++, channel, data, state: 'pending', error: '' };
      this.outbox.push(m);
      this.sendPublish(m);
      this.outboxChanged();
      return m;
    }

    // A failed publish tried again: a new id, since the server may remember
    // the old one as answered.
    retryPublish(m) {
      const i = this.outbox.indexOf(m);
      if (i < 0 || m.state !== 'failed') return;
      this.outbox.splice(i, 1);
      Object.assign(m, { id: this.nextId++, state: 'pending', error: '' });
      this.outbox.push(m);
      this.sendPublish(m);
      this.outboxChanged();
    }

    discard(pred) {
      const before = this.outbox.length;
      this.outbox = this.outbox.filter((m) => !pred(m));
      if (this.outbox.length !== before) this.outboxChanged();
    }

    sendPublish(m) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
      this.ws.send(JSON.stringify({ type: 'publish', payload: { channel: m.channel, data: m.data }, id: m.id }));
      return true;
    }

    // The answer to a publish: an ack drops it, an error marks it failed.
    settle(id, error) {
      const m = this.outbox.find((x) => x.id === id);
      if (!m || m.state !== 'pending') return;
      if (error === undefined) this.outbox.splice(this.outbox.indexOf(m), 1);
      else Object.assign(m, { state: 'failed', error });
      this.outboxChanged();
    }

    // Opens a new connection now (the session changed, so the URL did).
    reopen() {
      if (this.stopped || !this.token) return;
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        this.detach(ws);
        try { ws.close(1000, 'new session'); } catch (e) { /* already closing */ }
      }
      this.open();
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
        const query = [];
        if (this.session) query.push('session=' + encodeURIComponent(this.session));
        if (this.device) query.push('device=' + encodeURIComponent(this.device));
        const inProtocol = TOKEN_CHARS.test(this.token);
        if (!inProtocol) query.push('token=' + encodeURIComponent(this.token));
        const url = query.length ? this.url + (this.url.includes('?') ? '&' : '?') + query.join('&') : this.url;
        ws = new WebSocket(url, inProtocol ? ['wsch', 'bearer.' + this.token] : ['wsch']);
      } catch (e) {
        this.scheduleRetry();
        return;
      }
      this.ws = ws;
      ws.onopen = () => {
        this.attempt = 0;
        this.setStatus('connected');
        // Subscriptions first: the server answers a publish only to a subscriber.
        for (const channel of this.channels) this.sendNow('subscribe', this.subscribePayload(channel));
        // Unacknowledged publishes again, oldest first (one already applied is
        // acked again, not published twice).
        for (const m of this.outbox) if (m.state === 'pending') this.sendPublish(m);
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
        const p = env.payload;
        if (env.type === 'ack' && p && Number.isSafeInteger(p.id)) this.settle(p.id);
        if (env.type === 'error' && p && Number.isSafeInteger(p.id)) {
          this.settle(p.id, String(p.message || p.code || 'error'));
        }
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
    presence: $('presence'), presenceCount: $('presence-count'), presenceList: $('presence-list'),
    publishForm: $('publish-form'), publishInput: $('publish-input'), publishBtn: $('publish-btn'),
    toasts: $('toasts'),
  };

  const params = new URLSearchParams(location.search);
  const wsUrl = params.get('ws') || (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  const CHANNEL_RE = /^[A-Za-z0-9_.:@\/-]{1,128}$/;
  const MAX_FEED = 200;
  const HISTORY = 50;          // messages asked for on a channel's first join
  // Toasts stay 6 s; on a phone (the layout's breakpoint in app.css) they sit
  // over the feed, so 4 s.
  const TOAST_MS = 6000, TOAST_MS_SMALL = 4000;
  const small = window.matchMedia('(max-width: 760px)');
  const store = {
    get(k, d) { try { const v = localStorage.getItem('wsch.' + k); return v === null ? d : JSON.parse(v); } catch (e) { return d; } },
    set(k, v) { try { localStorage.setItem('wsch.' + k, JSON.stringify(v)); } catch (e) { /* private mode */ } },
    del(k) { try { localStorage.removeItem('wsch.' + k); } catch (e) { /* ignore */ } },
  };
  // Per tab and kept over a reload: the publish session, its next id, the outbox.
  const tabStore = {
    get(k, d) { try { const v = sessionStorage.getItem('wsch.' + k); return v === null ? d : JSON.parse(v); } catch (e) { return d; } },
    set(k, v) { try { sessionStorage.setItem('wsch.' + k, JSON.stringify(v)); } catch (e) { /* private mode */ } },
  };
  const SESSION_RE = /^[A-Za-z0-9_-]{1,64}$/;

  function randomHex(bytes) {
    const b = new Uint8Array(bytes);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  const state = {
    user: '',
    // name -> {subscribed: bool, unread: n, messages: [],
    //          pos: {offset, epoch} of the last message shown, or null,
    //          replay: 'history' | 'recover' while a subscribe's replay runs, else '',
    //          replayed: messages shown by that replay, askedFrom: the pos it asked from,
    //          presence: null (not known yet) | {mode: 'list', members: Map user -> info (undefined: none)}
    //                    | {mode: 'stats', users, connections} | {mode: 'off'},
    //          presenceAsked: a full list was asked for (a diff came with no list to apply it to)}
    channels: new Map(),
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
      renderPresence();                              // the last known set, marked stale
    }
    if (client.outbox.length) renderOutbox();      // "sending…" or "waiting for the connection"
    renderStatus();
  });

  // ---- channels ----
  function saveChannels() {
    store.set('channels', [...state.channels.keys()]);
    store.set('active', state.active);
  }

  function newChannel() {
    return { subscribed: false, unread: 0, messages: [], pos: null, replay: '', replayed: 0, askedFrom: null,
             presence: null, presenceAsked: false };
  }

  function addChannel(name) {
    // One the page has is subscribed or on its way (the client resubscribes it
    // after a reconnect); a second subscribe would start a second replay.
    if (!state.channels.has(name)) {
      state.channels.set(name, newChannel());
      client.subscribe(name);
    }
    saveChannels();
    renderChannels();
  }

  function removeChannel(name) {
    state.channels.delete(name);
    client.unsubscribe(name);
    client.discard((m) => m.channel === name);     // the server would refuse them: not subscribed
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
  // Items in ch.messages: {channel, from, text, at, system, offset, origin: 'live' |
  // 'recovered' | 'history'} or {kind: 'gap', channel, at}.
  function messageNode(m) {
    if (m.kind === 'gap') {
      const gap = node('div', 'gap', 'Some messages could not be recovered');
      gap.setAttribute('data-testid', 'gap');
      gap.setAttribute('role', 'note');
      gap.dataset.channel = m.channel;
      gap.title = 'The server no longer had everything sent while this page was away (' + time(m.at) + ').';
      return gap;
    }
    const row = node('div', 'msg' + (m.system ? ' system' : '') + (m.from && m.from === state.user ? ' mine' : ''));
    row.setAttribute('data-testid', 'message');
    row.dataset.channel = m.channel;
    row.dataset.from = m.from || '';
    if (m.offset !== undefined) row.dataset.offset = String(m.offset);
    const av = node('div', 'avatar', (m.from || '•').slice(0, 1).toUpperCase());
    av.style.background = m.system ? '#9097a8' : colorFor(m.from || '');
    const body = node('div', 'body');
    const meta = node('div', 'meta');
    meta.append(node('span', 'from', m.from || 'server'), node('span', 'time', time(m.at)));
    if (m.origin === 'recovered') {
      row.classList.add('recovered');
      row.dataset.recovered = 'true';
      const tag = node('span', 'tag', 'recovered');
      tag.title = 'Sent while this page was offline';
      meta.append(tag);
    } else if (m.origin === 'history') {
      row.classList.add('earlier');
      row.dataset.history = 'true';
      const tag = node('span', 'tag', 'earlier');
      tag.title = 'Sent before you joined';
      meta.append(tag);
    }
    body.append(meta, node('div', 'text', m.text));
    row.append(av, body);
    return row;
  }

  // A publish of this page the server has not acknowledged yet (or refused).
  function outboxNode(m) {
    const row = node('div', 'msg mine outbox ' + m.state);
    row.setAttribute('data-testid', 'outbox');
    row.dataset.channel = m.channel;
    row.dataset.id = String(m.id);
    row.dataset.state = m.state;
    const av = node('div', 'avatar', (state.user || '•').slice(0, 1).toUpperCase());
    av.style.background = colorFor(state.user || '');
    const body = node('div', 'body');
    const meta = node('div', 'meta');
    meta.append(node('span', 'from', state.user || 'you'),
                node('span', 'tag', m.state === 'failed' ? 'not sent' : client.status === 'connected' ? 'sending…' : 'waiting for the connection'));
    body.append(meta, node('div', 'text', textOf(m.data)));
    if (m.state === 'failed') {
      const why = node('div', 'outbox-error', 'The server refused it: ' + m.error);
      const retry = node('button', 'link', 'Send again');
      retry.type = 'button';
      retry.setAttribute('data-testid', 'outbox-retry');
      retry.addEventListener('click', () => client.retryPublish(m));
      const drop = node('button', 'link', 'Discard');
      drop.type = 'button';
      drop.setAttribute('data-testid', 'outbox-discard');
      drop.addEventListener('click', () => client.discard((x) => x === m));
      why.append(' ', retry, ' · ', drop);
      body.append(why);
    }
    row.append(av, body);
    return row;
  }

  function renderFeed() {
    const ch = state.channels.get(state.active);
    el.active.textContent = state.active ? '#' + state.active : 'No channel selected';
    el.activeSub.textContent = state.active ? 'Messages published here reach every subscriber of #' + state.active + '.'
                                            : 'Join a channel to start talking.';
    el.feed.replaceChildren();
    for (const m of ch ? ch.messages : []) el.feed.append(messageNode(m));
    renderOutbox();
    renderComposer();
    renderPresence();
  }

  // The active channel's outbox rows, after its messages; the empty-feed hint
  // when there is nothing at all.
  function renderOutbox() {
    for (const n of el.feed.querySelectorAll('.outbox, .feed-empty')) n.remove();
    for (const m of client.outbox) if (m.channel === state.active) el.feed.append(outboxNode(m));
    if (!el.feed.firstElementChild) {
      el.feed.append(node('div', 'feed-empty', state.channels.has(state.active) ? 'No messages yet. Say hello!'
                                                                                : 'Pick a channel from your list, or join one.'));
    }
    el.feed.scrollTop = el.feed.scrollHeight;
  }

  function addMessage(channel, m) {
    const ch = state.channels.get(channel);
    if (!ch) return;
    ch.messages.push(m);
    if (ch.messages.length > MAX_FEED) ch.messages.shift();
    if (channel === state.active) {
      const empty = el.feed.querySelector('.feed-empty');
      if (empty) empty.remove();
      el.feed.insertBefore(messageNode(m), el.feed.querySelector('.outbox'));   // outbox rows stay last
      while (el.feed.querySelectorAll('[data-testid=message], [data-testid=gap]').length > MAX_FEED) {
        el.feed.firstElementChild.remove();
      }
      el.feed.scrollTop = el.feed.scrollHeight;
    } else if (m.origin !== 'history') {
      ch.unread++;
      renderChannels();
    }
  }

  // Where a channel's stream stands. Returns how a numbered message is to be
  // shown ('live', 'recovered', 'history'), or '' for one already shown.
  function place(ch, env) {
    const offset = env.offset, epoch = env.epoch;
    if (Number.isSafeInteger(offset) && typeof epoch === 'string') {
      if (ch.pos && ch.pos.epoch === epoch && offset <= ch.pos.offset) return '';
      ch.pos = { offset, epoch };     // a new epoch starts a new stream
    }
    if (!ch.replay) return 'live';
    ch.replayed++;
    return ch.replay === 'recover' ? 'recovered' : 'history';
  }

  // What a subscribe asks for: the rest of the stream after the last message
  // shown, or on a first join the recent history.
  // Every subscribe asks for the channel's presence too.
  client.subscribePayload = (name) => {
    const ch = state.channels.get(name);
    if (!ch) return { channel: name, presence: true };
    ch.replayed = 0;
    ch.askedFrom = ch.pos;
    ch.presenceAsked = false;
    if (ch.pos) {
      ch.replay = 'recover';
      return { channel: name, recover: { offset: ch.pos.offset, epoch: ch.pos.epoch }, presence: true };
    }
    ch.replay = 'history';
    return { channel: name, history: HISTORY, presence: true };
  };

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
    renderPresence();
  });

  // The replay (if any) is over. recovered:false after a recover means some
  // of what was sent meanwhile is gone: say so rather than show a feed that
  // looks whole. offset/epoch are then the current position, to go on from.
  client.on('subscribed', (p) => {
    const ch = p && state.channels.get(p.channel);
    if (!ch) return;
    ch.subscribed = true;
    const asked = ch.replay;
    ch.replay = '';
    // The answer to this page's subscribe carries the channel's presence (a
    // list that replaces the set, or counts); one without it means the server
    // does not track presence. Other confirmations (the server telling a live
    // subscriber it lost messages) leave the set as it is.
    if (Array.isArray(p.presence)) setMembers(ch, p.presence);
    else if (p.presence_stats && typeof p.presence_stats === 'object') setCounts(ch, p.presence_stats);
    else if (asked) ch.presence = { mode: 'off' };
    // The stream still where we asked from (same epoch and offset): nothing
    // was missed, whatever the server could have replayed.
    const from = ch.askedFrom;
    const unmoved = !!from && p.epoch === from.epoch && p.offset === from.offset;
    if (asked === 'recover' && p.recovered === false && !unmoved) {
      ch.messages.splice(gapIndex(ch, from), 0, { kind: 'gap', channel: p.channel, at: new Date() });
      if (ch.messages.length > MAX_FEED) ch.messages.shift();
      if (p.channel === state.active) renderFeed();
    }
    if (Number.isSafeInteger(p.offset) && typeof p.epoch === 'string' &&
        (!ch.pos || ch.pos.epoch !== p.epoch || p.offset > ch.pos.offset)) {
      ch.pos = { offset: p.offset, epoch: p.epoch };
    }
    renderChannels();
    if (p.channel === state.active) renderPresence();
  });

  // Where a replay that fell short lost messages: before the first replayed
  // message that does not follow on from the one before (a replay that
  // skipped ahead), else after the replay (one ended early, e.g. history
  // evicted under it; or nothing replayed at all).
  function gapIndex(ch, from) {
    const first = Math.max(0, ch.messages.length - ch.replayed);
    let prev = from ? from.offset : undefined;
    for (let i = first; i < ch.messages.length; i++) {
      const o = ch.messages[i].offset;
      if (!Number.isSafeInteger(o)) continue;
      if (prev !== undefined && o !== prev + 1) return i;
      prev = o;
    }
    return ch.messages.length;
  }

  // The stream's channel: beside type and payload, else in the payload.
  function streamOf(p, env) {
    return typeof env.channel === 'string' ? env.channel : p && typeof p.channel === 'string' ? p.channel : '';
  }

  client.on('message', (p, env) => {
    const channel = streamOf(p, env);
    const ch = state.channels.get(channel);
    if (!p || !ch) return;
    const origin = place(ch, env);
    if (!origin) return;                           // shown already
    const from = typeof p.from === 'string' ? p.from : '';
    const text = textOf(p.data);
    addMessage(channel, { channel, from, text, at: new Date(), offset: env.offset, origin });
    // Replays can be dozens of messages: a toast each would bury the screen.
    if (from !== state.user && origin === 'live') toast('message', '#' + channel + ' · ' + from, text);
  });

  client.on('notification', (p, env) => {
    if (!p) return;
    const text = typeof p.text === 'string' ? p.text : textOf(p);
    const channel = streamOf(p, env);
    const ch = state.channels.get(channel);
    const origin = ch ? place(ch, env) : 'live';
    if (!origin) return;
    if (origin === 'live') toast('notification', 'Notification' + (channel ? ' · #' + channel : ''), text);
    if (ch) addMessage(channel, { channel, from: 'server', text, at: new Date(), system: true, offset: env.offset, origin });
  });

  // ---- who is online ----
  // The set is per user: a list naming a user twice shows it once.
  function setMembers(ch, list) {
    const members = new Map();
    for (const m of list) if (m && typeof m.user === 'string') members.set(m.user, m.info);
    ch.presence = { mode: 'list', members };
    ch.presenceAsked = false;
  }

  function setCounts(ch, p) {
    ch.presence = { mode: 'stats', users: Number.isSafeInteger(p.users) ? p.users : 0,
                    connections: Number.isSafeInteger(p.connections) ? p.connections : 0 };
  }

  client.on('presence_diff', (p) => {
    const ch = p && state.channels.get(p.channel);
    if (!ch) return;
    if (!ch.presence || ch.presence.mode !== 'list') {
      // Changes to a list this page does not have: ask for the whole one.
      if (!ch.presenceAsked && client.sendNow('presence', { channel: p.channel })) ch.presenceAsked = true;
      return;
    }
    const members = ch.presence.members;
    for (const m of Array.isArray(p.leaves) ? p.leaves : []) if (m && typeof m.user === 'string') members.delete(m.user);
    for (const m of Array.isArray(p.joins) ? p.joins : []) if (m && typeof m.user === 'string') members.set(m.user, m.info);
    if (p.channel === state.active) renderPresence();
  });

  client.on('presence', (p) => {
    const ch = p && state.channels.get(p.channel);
    if (!ch || !Array.isArray(p.members)) return;
    setMembers(ch, p.members);
    if (p.channel === state.active) renderPresence();
  });

  client.on('presence_stats', (p) => {
    const ch = p && state.channels.get(p.channel);
    if (!ch) return;
    setCounts(ch, p);
    if (p.channel === state.active) renderPresence();
  });

  // What a member's info says about its device: {"device": D}, or a plain string.
  function deviceOf(info) {
    if (typeof info === 'string') return info;
    if (info && typeof info === 'object' && typeof info.device === 'string') return info.device;
    return '';
  }

  function renderPresence() {
    const ch = state.channels.get(state.active);
    const pr = ch ? ch.presence : null;
    const box = el.presence;
    box.dataset.channel = state.active;
    box.dataset.mode = pr ? pr.mode : 'none';
    box.dataset.stale = ch && ch.subscribed ? 'false' : 'true';
    box.hidden = !pr || pr.mode === 'off';
    el.presenceList.replaceChildren();
    if (!pr || pr.mode === 'off') return;
    const users = pr.mode === 'list' ? pr.members.size : pr.users;
    el.presenceCount.dataset.users = String(users);
    el.presenceCount.textContent = users.toLocaleString() + ' online';
    box.title = pr.mode === 'stats' ? users + ' users on ' + pr.connections + ' connections: too many to list'
              : ch.subscribed ? '' : 'As last known: not connected';
    if (pr.mode !== 'list') return;
    const names = [...pr.members.keys()].sort((x, y) =>
      (x === state.user ? -1 : y === state.user ? 1 : x.localeCompare(y)));
    for (const name of names) {
      const li = node('li', 'presence-member' + (name === state.user ? ' me' : ''));
      li.setAttribute('data-testid', 'presence-member');
      li.dataset.user = name;
      if (name === state.user) li.dataset.self = 'true';
      const av = node('span', 'presence-avatar', name.slice(0, 1).toUpperCase());
      av.style.background = colorFor(name);
      av.setAttribute('aria-hidden', 'true');
      li.append(av, node('span', 'presence-name', name));
      const device = deviceOf(pr.members.get(name));
      if (device) {
        li.dataset.device = device;
        li.append(node('span', 'presence-device', device));
      }
      li.title = name + (device ? ' (' + device + ')' : '') + (name === state.user ? ', you' : '');
      el.presenceList.append(li);
    }
  }

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

  // ---- the outbox ----
  function saveOutbox() {
    tabStore.set('session', client.session);
    tabStore.set('nextId', client.nextId);
    tabStore.set('outbox', client.outbox.map((m) => ({ id: m.id, channel: m.channel, data: m.data, state: m.state, error: m.error })));
  }

  client.onOutbox(() => {
    saveOutbox();
    renderOutbox();
  });

  // A fresh publish session: after sign-out (the next user's ids start
  // anew) and when another tab holds this one's.
  function newSession() {
    client.session = randomHex(16);
    client.nextId = 1;
    for (const m of client.outbox) m.id = client.nextId++;
    saveOutbox();
  }

  // A duplicated tab starts with a copy of sessionStorage: the same session
  // and next id, so the server would take the copy's publishes for resends
  // of the original's and drop them. Every page says hello on a
  // BroadcastChannel; of two with one session, the one loaded later takes a
  // new session and leaves the copied unsent messages to the other.
  const me = { nonce: randomHex(8), loadedAt: Date.now() };
  function startSessionGuard() {
    if (typeof BroadcastChannel !== 'function') return;
    const bc = new BroadcastChannel('wsch.session');
    const say = (kind) => bc.postMessage({ kind, session: client.session, nonce: me.nonce, loadedAt: me.loadedAt });
    bc.onmessage = (ev) => {
      const d = ev.data;
      if (!d || d.session !== client.session || d.nonce === me.nonce) return;
      const theyAreOlder = d.loadedAt < me.loadedAt || (d.loadedAt === me.loadedAt && d.nonce < me.nonce);
      if (theyAreOlder) {
        client.outbox = client.outbox.filter((m) => !m.copied);
        newSession();
        renderOutbox();
        client.reopen();                 // the URL names the session
        say('hello');
      } else if (d.kind === 'hello') {
        say('mine');
      }
    };
    say('hello');
  }

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
    client.outbox = [];                  // the user's unsent messages go with the user
    newSession();
    renderOutbox();
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
    if (!client.publish(state.active, { text })) {
      toast('error', 'Too many unsent messages', 'Wait until the connection is back, or discard some.');
      return;
    }
    el.publishInput.value = '';
  });

  // ---- start ----
  for (const name of store.get('channels', [])) {
    if (typeof name === 'string' && CHANNEL_RE.test(name)) {
      state.channels.set(name, newChannel());
      client.channels.add(name);
    }
  }
  const savedSession = tabStore.get('session', '');
  if (typeof savedSession === 'string' && SESSION_RE.test(savedSession)) {
    client.session = savedSession;
    const next = tabStore.get('nextId', 1);
    client.nextId = Number.isSafeInteger(next) && next > 0 ? next : 1;
    for (const m of tabStore.get('outbox', [])) {
      if (!m || !Number.isSafeInteger(m.id) || typeof m.channel !== 'string' || !state.channels.has(m.channel)) continue;
      client.outbox.push({ id: m.id, channel: m.channel, data: m.data, state: m.state === 'failed' ? 'failed' : 'pending',
                           error: typeof m.error === 'string' ? m.error : '', copied: true });
      if (m.id >= client.nextId) client.nextId = m.id + 1;
    }
  } else {
    newSession();
  }
  startSessionGuard();
  // The device others see beside this user: ?device= (empty: none), else a guess.
  client.device = params.has('device') ? params.get('device').trim()
    : (navigator.userAgentData && typeof navigator.userAgentData.mobile === 'boolean'
      ? navigator.userAgentData.mobile : /Mobi|Android|iPhone|iPod/i.test(navigator.userAgent)) ? 'phone' : 'desktop';
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
