/* The hub (wsch_hub) driven by a fuzz-chosen sequence of events on up to
   four transports, with the server-side calls mixed in.

     bytes 0-1  configuration (limits, reject_with_http, idle timeout)
     rest       operations (see hb_step)

   After every step, against the hub's own queries: every live peer's
   subscriptions add up to stats.subscriptions and to the channel sizes (so
   no subscription outlives its peer), no peer exceeds
   max_channels_per_peer, a peer that is not open has none; the peer and
   open counts match the transports; bytes_queued is the sum of the queues;
   each peer's on_connect and on_disconnect come once each and in that
   order; wsch_hub_peer_want() asks for WRITE exactly while bytes are queued
   and is 0 once close() has run. Every transport: close() exactly once on
   every path (the hub's own closes, the caller's transport_closed(), a
   hard send error, shutdown, destroy), after on_disconnect and every timer
   cancelled, and nothing at all after it; the handle is stale as soon as
   close() has run (every call refused, a late transport_closed() too), and
   transport_closed() from inside close() does nothing. Destroy calls
   close() for the peers still open and nothing else. Everything the hub
   writes after its 101 parses as server frames whose text messages are
   valid envelopes. At the end every allocation is freed. */
#include "fuzz.h"

/* -DHB_TRACE prints every operation (for reading a reproducer). */
#ifdef HB_TRACE
#define HB_T(...) fprintf(stderr, __VA_ARGS__)
#else
#define HB_T(...) ((void)0)
#endif

#define HB_SLOTS 4
#define HB_OUT_CAP 65536

typedef struct hb_slot {
    struct hb_world *w;
    int used;                   /* accepted, and close() has not run yet */
    wsch_hub_peer h;
    int close_asked;            /* the hub called close(): nothing may follow, the handle is stale */
    int stale_checked;          /* the stale handle was tried everywhere */
    unsigned send_mode;
    int send_failed;            /* send() reported WSCH_SEND_ERROR: the peer must be gone */
    uint32_t timers;
    int connected, disconnected;
    unsigned char out[HB_OUT_CAP];
    size_t out_len, parsed;     /* bytes written; parse position (after the head) */
    int head_done, out_lost;
    int in_progress;            /* a message fragment left open by the hub */
} hb_slot;

typedef struct hb_world {
    wsch_hub *hub;
    wsch_hub_desc desc;
    fz_alloc al;
    hb_slot slot[HB_SLOTS];
    uint64_t now;
    uint32_t rng;
    int shut;
    int destroying;             /* inside wsch_hub_destroy(): close() is the only callback */
    int reenter;                /* close() calls wsch_hub_transport_closed() (a no-op) */
    unsigned accepted, closes;  /* transports handed over, close() calls */
} hb_world;

/* Every channel name the script can use: the invariants look at all of them. */
#define HB_NCH 17
static const char *const hb_channels[HB_NCH] = {"a",  "b",  "news", "secret", "", "bad channel", "x.y:z/1", "c0", "c1",
                                                "c2", "c3", "c4",   "c5",     "c6", "c7", "c8", "c9"};

/* ---- transport ------------------------------------------------------------ */

static void hb_alive(const hb_slot *s) {
    FZ_CHECK(s->used && !s->close_asked);
}

/* Checks the server frames that arrived since the last call. */
static void hb_parse(hb_slot *s) {
    if (!s->head_done) {
        unsigned char *e;
        if (s->out_len < 4) return;
        e = (unsigned char *)memmem(s->out, s->out_len, "\r\n\r\n", 4);
        if (!e) return;
        if (memcmp(s->out, "HTTP/1.1 101", 12) != 0) { /* a refusal: no frames follow */
            s->out_lost = 1;
            return;
        }
        s->head_done = 1;
        s->parsed = (size_t)(e + 4 - s->out);
    }
    while (!s->out_lost && s->parsed < s->out_len) {
        wsch_frame_header fh;
        size_t hl;
        int rc = wsch_frame_header_decode(s->out + s->parsed, s->out_len - s->parsed, &fh, &hl);
        if (rc == WSCH_INCOMPLETE) return;
        FZ_CHECK(rc == WSCH_OK);
        FZ_CHECK(!fh.masked && fh.rsv == 0);
        if (fh.payload_len > s->out_len - s->parsed - hl) return;
        if (fh.opcode == WSCH_OP_TEXT) {
            wsch_envelope env;
            const char *p = (const char *)s->out + s->parsed + hl;
            FZ_CHECK(fh.fin); /* the hub sends whole messages */
            FZ_CHECK(wsch_envelope_decode(p, (size_t)fh.payload_len, &env) == WSCH_OK);
        } else {
            FZ_CHECK(fh.opcode == WSCH_OP_CLOSE || fh.opcode == WSCH_OP_PING || fh.opcode == WSCH_OP_PONG);
        }
        s->parsed += hl + (size_t)fh.payload_len;
    }
}

static size_t hb_send(const void *data, size_t len, void *user) {
    hb_slot *s = (hb_slot *)user;
    size_t n = len;
    hb_alive(s);
    FZ_CHECK(!s->w->destroying);
    switch (s->send_mode) {
    case 1: n = len < 9 ? len : 9; break;
    case 2: n = 0; break; /* a peer that never reads */
    case 3: /* a broken transport: the peer ends at once */
        s->send_failed = 1;
        return WSCH_SEND_ERROR;
    default: break;
    }
    if (s->out_len + n <= HB_OUT_CAP) {
        memcpy(s->out + s->out_len, data, n);
        s->out_len += n;
    } else {
        s->out_lost = 1;
    }
    return n;
}

/* The last callback about a transport, once. The peer is released with it. */
static void hb_close(void *user) {
    hb_slot *s = (hb_slot *)user;
    hb_world *w = s->w;
    hb_alive(s);
    if (!w->destroying) {
        FZ_CHECK(s->timers == 0);                   /* cancelled before */
        FZ_CHECK(!s->connected || s->disconnected); /* on_disconnect before */
    }
    s->close_asked = 1;
    s->used = 0;
    w->closes++;
    if (w->reenter) FZ_CHECK(wsch_hub_transport_closed(w->hub, s->h) == WSCH_OK);
}

static void hb_timer_set(unsigned id, uint32_t ms, void *user) {
    hb_slot *s = (hb_slot *)user;
    hb_alive(s);
    FZ_CHECK(!s->w->destroying);
    FZ_CHECK(id == WSCH_TIMER_HANDSHAKE || id == WSCH_TIMER_CLOSE || id == WSCH_HUB_TIMER_IDLE);
    FZ_CHECK(ms > 0);
    s->timers |= 1u << id;
}

static void hb_timer_cancel(unsigned id, void *user) {
    hb_slot *s = (hb_slot *)user;
    hb_alive(s);
    FZ_CHECK(!s->w->destroying);
    FZ_CHECK(id < 32);
    s->timers &= ~(1u << id);
}

static uint64_t hb_now(void *user) { return ((hb_world *)user)->now; }

static void hb_random(void *buf, size_t len, void *user) {
    hb_world *w = (hb_world *)user;
    size_t i;
    for (i = 0; i < len; i++) {
        w->rng = w->rng * 1103515245u + 12345u;
        ((unsigned char *)buf)[i] = (unsigned char)(w->rng >> 16);
    }
}

/* ---- hooks ---------------------------------------------------------------- */

static hb_slot *hb_slot_of(hb_world *w, wsch_hub_peer c) {
    hb_slot *s = (hb_slot *)wsch_hub_peer_user(w->hub, c);
    FZ_CHECK(!w->destroying);
    FZ_CHECK(s != NULL && s >= w->slot && s < w->slot + HB_SLOTS);
    FZ_CHECK(s->h.index == c.index && s->h.gen == c.gen);
    hb_alive(s);
    return s;
}

static int hb_check_origin(wsch_hub *hub, const wsch_hub_request *req, void *user) {
    (void)hub;
    (void)user;
    return !(req->http->origin.len == 4 && memcmp(req->http->origin.ptr, "evil", 4) == 0);
}

static int hb_authenticate(wsch_hub *hub, const wsch_hub_request *req, wsch_str *user_id, void *user) {
    (void)hub;
    (void)user;
    FZ_CHECK(req->token.len <= 4096);
    if (req->token.len == 0) return WSCH_OK; /* anonymous */
    if (req->token.len == 6 && memcmp(req->token.ptr, "good-", 5) == 0) {
        user_id->ptr = req->token.ptr + 5; /* "1", "2", ...: borrowed until return */
        user_id->len = 1;
        return WSCH_OK;
    }
    return WSCH_ERR_DENIED;
}

static int hb_authorize(wsch_hub *hub, wsch_hub_peer client, wsch_str user_id, wsch_str channel, void *user) {
    (void)hub;
    (void)client;
    (void)user_id;
    (void)user;
    return !(channel.len == 6 && memcmp(channel.ptr, "secret", 6) == 0);
}

static void hb_on_http(wsch_hub *hub, const wsch_hub_request *req, wsch_hub_http_response *res, void *user) {
    (void)hub;
    (void)user;
    if (req->http->path.len == 1) {
        res->status = 200;
        res->body = "hello";
        res->body_len = 5;
    }
}

static void hb_on_connect(wsch_hub *hub, wsch_hub_peer client, wsch_str user_id, void *user) {
    hb_world *w = (hb_world *)user;
    hb_slot *s = hb_slot_of(w, client);
    FZ_CHECK(hub == w->hub);
    HB_T("  on_connect slot %d\n", (int)(s - w->slot));
    FZ_CHECK(!s->connected && !s->disconnected);
    FZ_CHECK(user_id.len <= 1);
    FZ_CHECK(wsch_hub_peer_state(hub, client) == WSCH_STATE_OPEN);
    s->connected = 1;
}

static void hb_on_disconnect(wsch_hub *hub, wsch_hub_peer client, int code, void *user) {
    hb_world *w = (hb_world *)user;
    hb_slot *s = hb_slot_of(w, client);
    (void)hub;
    HB_T("  on_disconnect slot %d code %d\n", (int)(s - w->slot), code);
    FZ_CHECK(s->connected && !s->disconnected);
    FZ_CHECK(code >= 1000 && code <= 4999);
    s->disconnected = 1;
}

static void hb_on_message(wsch_hub *hub, wsch_hub_peer client, const wsch_envelope *env, void *user) {
    hb_world *w = (hb_world *)user;
    hb_slot *s = hb_slot_of(w, client);
    (void)hub;
    FZ_CHECK(s->connected && !s->disconnected);
    FZ_CHECK(!wsch_envelope_type_is(env, "ping") && !wsch_envelope_type_is(env, "subscribe") &&
             !wsch_envelope_type_is(env, "unsubscribe"));
    /* answering from inside the hook is allowed */
    if (wsch_envelope_type_is(env, "echo")) {
        int rc = wsch_hub_send(hub, client, "echo", env->payload.ptr, env->payload.len);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_STATE || rc == WSCH_ERR_NOMEM || rc == WSCH_ERR_TOO_LARGE);
    }
}

/* ---- helpers -------------------------------------------------------------- */

static void hb_feed(hb_world *w, hb_slot *s, const void *bytes, size_t n) {
    char *copy;
    int rc;
    if (!s->used) return;
    copy = fz_dup(bytes, n);
    rc = wsch_hub_feed(w->hub, s->h, copy, n);
    FZ_CHECK(rc <= 0 && rc > WSCH_ERR_LAST_ && rc != WSCH_INCOMPLETE);
    free(copy);
    hb_parse(s);
}

static size_t hb_frame(unsigned char *out, unsigned first, const void *payload, size_t len) {
    static const unsigned char key[4] = {0x11, 0x22, 0x33, 0x44};
    size_t n = 0, i;
    out[n++] = (unsigned char)first;
    if (len < 126) {
        out[n++] = (unsigned char)(0x80 | len);
    } else {
        out[n++] = 0x80 | 126;
        out[n++] = (unsigned char)(len >> 8);
        out[n++] = (unsigned char)len;
    }
    memcpy(out + n, key, 4);
    n += 4;
    for (i = 0; i < len; i++) out[n + i] = (unsigned char)(((const unsigned char *)payload)[i] ^ key[i & 3]);
    return n + len;
}

/* Once close() has run, the handle is stale at once: refused everywhere. */
static void hb_check_stale(hb_world *w, hb_slot *s) {
    FZ_CHECK(s->close_asked && !s->used);
    FZ_CHECK(!wsch_hub_peer_valid(w->hub, s->h));
    FZ_CHECK(wsch_hub_peer_want(w->hub, s->h) == 0);
    FZ_CHECK(s->timers == 0); /* nothing left to fire for a released peer */
    FZ_CHECK(!s->connected || s->disconnected);
    FZ_CHECK(wsch_hub_transport_closed(w->hub, s->h) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_feed(w->hub, s->h, NULL, 0) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_writable(w->hub, s->h) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_timer_fired(w->hub, s->h, WSCH_TIMER_CLOSE) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_send(w->hub, s->h, "x", NULL, 0) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_subscribe(w->hub, s->h, "a") == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_peer_close(w->hub, s->h, 1000, NULL, 0) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_is_subscribed(w->hub, s->h, "a") == 0);
    FZ_CHECK(wsch_hub_peer_user(w->hub, s->h) == NULL);
    FZ_CHECK(wsch_hub_peer_state(w->hub, s->h) == WSCH_STATE_CLOSED);
    FZ_CHECK(wsch_hub_peer_queued_bytes(w->hub, s->h) == 0);
    s->stale_checked = 1;
}

/* The caller saw EOF first: on_disconnect and close() run inside the call. */
static void hb_report_closed(hb_world *w, hb_slot *s) {
    FZ_CHECK(wsch_hub_transport_closed(w->hub, s->h) == WSCH_OK);
    FZ_CHECK(s->close_asked);
    hb_check_stale(w, s);
}

static void hb_invariants(hb_world *w) {
    wsch_hub_counters st;
    size_t i, j, clients = 0, subs = 0, channels = 0;
    uint64_t queued = 0;
    size_t per_channel[HB_NCH];
    memset(per_channel, 0, sizeof per_channel);
    wsch_hub_stats(w->hub, &st);
    for (i = 0; i < HB_SLOTS; i++) {
        hb_slot *s = &w->slot[i];
        size_t mine = 0;
        unsigned want;
        if (s->send_failed) FZ_CHECK(s->close_asked);
        if (s->close_asked && !s->stale_checked) hb_check_stale(w, s);
        if (!s->used) continue;
        clients++;
        FZ_CHECK(wsch_hub_peer_valid(w->hub, s->h));
        FZ_CHECK(wsch_hub_peer_state(w->hub, s->h) != WSCH_STATE_CLOSED); /* CLOSED: close() has run */
        queued += wsch_hub_peer_queued_bytes(w->hub, s->h);
        want = wsch_hub_peer_want(w->hub, s->h);
        FZ_CHECK(want != 0 && (want & ~(unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE)) == 0);
        FZ_CHECK(((want & WSCH_WANT_WRITE) != 0) == (wsch_hub_peer_queued_bytes(w->hub, s->h) > 0));
        for (j = 0; j < HB_NCH; j++) {
            if (wsch_hub_is_subscribed(w->hub, s->h, hb_channels[j])) {
                mine++;
                per_channel[j]++;
            }
        }
        subs += mine;
        FZ_CHECK(mine <= w->desc.max_channels_per_peer);
        /* A connection its peer broke stays subscribed (and gets nothing)
           until its on_close; handshaking and closed ones never are. */
        if (wsch_hub_peer_state(w->hub, s->h) == WSCH_STATE_HANDSHAKE ||
            wsch_hub_peer_state(w->hub, s->h) == WSCH_STATE_CLOSED)
            FZ_CHECK(mine == 0);
        if (s->disconnected) FZ_CHECK(mine == 0);
    }
    for (j = 0; j < HB_NCH; j++) {
        /* With history a subscription may wait for its replay: subscribed,
           not yet among the channel's live subscribers. */
        if (w->desc.history_size) FZ_CHECK(wsch_hub_channel_size(w->hub, hb_channels[j]) <= per_channel[j]);
        else FZ_CHECK(wsch_hub_channel_size(w->hub, hb_channels[j]) == per_channel[j]);
        if (per_channel[j]) channels++;
        if (w->desc.history_size) {
            wsch_hub_position pos;
            if (wsch_hub_channel_position(w->hub, hb_channels[j], &pos) == WSCH_OK) {
                FZ_CHECK(pos.kept <= w->desc.history_size);
                FZ_CHECK(pos.kept == 0 || (pos.first_kept + pos.kept - 1u == pos.offset));
            }
        }
    }
    FZ_CHECK(per_channel[4] == 0 && per_channel[5] == 0); /* invalid names never exist */
    FZ_CHECK(st.peers == clients);
    FZ_CHECK(w->accepted - w->closes == clients);   /* one close() per transport that left */
    FZ_CHECK(st.subscriptions == subs);
    if (w->desc.history_size) {
        FZ_CHECK(st.channels >= channels);          /* and those kept for their history */
        FZ_CHECK(st.history_bytes <= w->desc.history_max_bytes);
    } else {
        FZ_CHECK(st.channels == channels);
    }
    FZ_CHECK(st.open <= st.peers);
    FZ_CHECK(st.bytes_queued == queued);
    FZ_CHECK(st.users <= st.peers);
    {
        size_t open = 0;
        for (i = 0; i < HB_SLOTS; i++)
            if (w->slot[i].used && w->slot[i].connected && !w->slot[i].disconnected) open++;
        FZ_CHECK(st.open == open);
    }
}

/* ---- operations ----------------------------------------------------------- */

static const char *hb_request(unsigned v, char *buf, size_t cap, unsigned slot) {
    char line[128];
    const char *path = (v & 8u) ? "/" : (v & 16u) ? "/other" : (v & 32u) ? "/ws?token=good-9&session=s1" : "/ws";
    switch ((v & 7u) % 6u) {
    case 1: snprintf(line, sizeof line, "Authorization: Bearer good-%u\r\n", slot + 1u); break;
    case 2: snprintf(line, sizeof line, "Authorization: Bearer bad\r\n"); break;
    case 3: snprintf(line, sizeof line, "Sec-WebSocket-Protocol: chat, bearer.good-%u\r\n", slot + 1u); break;
    case 4: snprintf(line, sizeof line, "Origin: evil\r\n"); break;
    case 5: snprintf(line, sizeof line, "Authorization: Basic Zm9vOmJhcg==\r\n"); break;
    default: line[0] = '\0'; break;
    }
    snprintf(buf, cap,
             "GET %s HTTP/1.1\r\nHost: h\r\n%s%s%sSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: %s\r\n\r\n",
             path, (v & 64u) ? "" : "Upgrade: websocket\r\n", "Connection: Upgrade\r\n", line,
             (v & 128u) ? "8" : "13");
    return buf;
}

static void hb_canned(hb_world *w, hb_slot *s, unsigned k, unsigned arg) {
    char text[200];
    unsigned char f[300];
    size_t n;
    const char *ch = hb_channels[arg % HB_NCH];
    switch (k % 13u) {
    case 0: snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\"}}", ch); break;
    case 1: snprintf(text, sizeof text, "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"%s\"}}", ch); break;
    case 2: snprintf(text, sizeof text, "{\"type\":\"ping\",\"payload\":%u}", arg); break;
    case 3: snprintf(text, sizeof text, "{\"type\":\"echo\",\"payload\":{\"n\":%u}}", arg); break;
    case 4: snprintf(text, sizeof text, "{\"type\":\"subscribe\"}"); break;
    case 5: snprintf(text, sizeof text, "not json"); break;
    case 6: hb_feed(w, s, f, hb_frame(f, 0x82, "bin", 3)); return;
    case 7: {
        unsigned char p[2] = {0x03, 0xE8};
        hb_feed(w, s, f, hb_frame(f, 0x88, p, 2));
        return;
    }
    case 8: hb_feed(w, s, f, hb_frame(f, 0x89, "p", 1)); return;
    case 9: {   /* recover: from the channel's own epoch (when it has one), or a foreign one */
        wsch_hub_position pos;
        const char *epoch = "0123456789abcdef";
        if ((arg & 8u) && wsch_hub_channel_position(w->hub, ch, &pos) == WSCH_OK) epoch = pos.epoch;
        snprintf(text, sizeof text,
                 "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\",\"recover\":{\"offset\":%u,\"epoch\":\"%s\"}}}",
                 ch, (arg >> 4) % 8u, epoch);
        break;
    }
    case 10:
        snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\",\"history\":%u}}", ch,
                 (arg >> 4) % 6u);
        break;
    case 11: snprintf(text, sizeof text, "{\"type\":\"echo\",\"payload\":1,\"id\":%u}", (arg >> 4) % 5u); break;
    default: snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"c%u\"}}", arg % 10u); break;
    }
    n = hb_frame(f, 0x81, text, strlen(text));
    hb_feed(w, s, f, n);
}

static void hb_step(hb_world *w, fz_in *in) {
    unsigned op = fz_u8(in) % 18u, k = fz_u8(in);
    hb_slot *s = &w->slot[k % HB_SLOTS];
    int rc;
    size_t n, delivered = 0;
    const uint8_t *p;
    HB_T("op %u slot %u (used %d, state %d)\n", op, k % HB_SLOTS, s->used,
         s->used ? (int)wsch_hub_peer_state(w->hub, s->h) : -1);
    switch (op) {
    case 0: /* accept */
        if (!s->used) {
            wsch_hub_peer h;
            hb_slot keep = *s;
            memset(s, 0, sizeof *s);
            s->w = w;
            s->used = 1;
            rc = wsch_hub_accept(w->hub, NULL, s, &h);
            FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_LIMIT || rc == WSCH_ERR_STATE || rc == WSCH_ERR_NOMEM);
            FZ_CHECK(!s->close_asked); /* refused: the transport stays ours, no close() */
            if (rc == WSCH_OK) {
                w->accepted++;
                s->h = h;
                FZ_CHECK(wsch_hub_peer_valid(w->hub, h) && wsch_hub_peer_user(w->hub, h) == s);
                FZ_CHECK(keep.h.gen == 0 || keep.h.index != h.index || keep.h.gen != h.gen); /* handles not reused */
            } else {
                *s = keep;
                s->used = 0;
            }
        }
        break;
    case 1: { /* the opening request, whole or a byte at a time */
        char req[512];
        size_t i, len;
        hb_request(fz_u8(in), req, sizeof req, (unsigned)(s - w->slot));
        len = strlen(req);
        if (k & 0x80u) {
            for (i = 0; i < len && s->used; i++) hb_feed(w, s, req + i, 1);
        } else {
            hb_feed(w, s, req, len);
        }
        break;
    }
    case 2: p = fz_bytes(in, fz_u8(in), &n); hb_feed(w, s, p, n); break;
    case 3: {
        unsigned char f[300];
        p = fz_bytes(in, fz_u8(in), &n);
        hb_feed(w, s, f, hb_frame(f, 0x81, p, n));
        break;
    }
    case 4: hb_canned(w, s, k >> 2, fz_u8(in)); break;
    case 5:
        if (s->used) {
            rc = wsch_hub_writable(w->hub, s->h);
            FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_CLOSED);
            hb_parse(s);
        }
        break;
    case 6: { /* fire one of the slot's armed timers */
        unsigned id = (k >> 2) % 3u == 0 ? WSCH_TIMER_HANDSHAKE : (k >> 2) % 3u == 1 ? WSCH_TIMER_CLOSE : WSCH_HUB_TIMER_IDLE;
        if (s->used && (s->timers & (1u << id))) {
            s->timers &= ~(1u << id);
            FZ_CHECK(wsch_hub_timer_fired(w->hub, s->h, id) == WSCH_OK);
            hb_parse(s);
        }
        break;
    }
    case 7: if (s->used) hb_report_closed(w, s); break;
    case 8: {
        static const char *const payloads[4] = {NULL, "{\"m\":\"hi\"}", "[1,", "\"x\""};
        unsigned a = fz_u8(in);
        const char *pl = payloads[(a >> 4) % 4u];
        rc = wsch_hub_broadcast(w->hub, hb_channels[a % HB_NCH], (a & 8u) ? "chat" : "", pl,
                                pl ? ((a & 1u) ? WSCH_CSTR : strlen(pl)) : 0, &delivered);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_ARG || rc == WSCH_ERR_JSON || rc == WSCH_ERR_NOMEM ||
                 rc == WSCH_ERR_TOO_LARGE);
        HB_T("  broadcast %s: rc %d, delivered %zu\n", hb_channels[a % HB_NCH], rc, delivered);
        if ((a >> 4) % 4u == 2) FZ_CHECK(rc == WSCH_ERR_JSON || rc == WSCH_ERR_ARG);
        if (rc == WSCH_OK) FZ_CHECK(delivered <= HB_SLOTS);
        break;
    }
    case 9: {
        char uid[4];
        snprintf(uid, sizeof uid, "%u", (k >> 2) % 5u);
        rc = wsch_hub_send_to_user(w->hub, uid, "note", "1", (k & 0x80u) ? WSCH_CSTR : 1, &delivered);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_NOMEM);
        if (rc == WSCH_OK) FZ_CHECK(delivered <= wsch_hub_user_connections(w->hub, uid) + HB_SLOTS);
        break;
    }
    case 10:
        rc = wsch_hub_send(w->hub, s->h, "direct", "{}", 2);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_STALE || rc == WSCH_ERR_STATE || rc == WSCH_ERR_NOMEM);
        break;
    case 11: {
        unsigned a = fz_u8(in);
        rc = (a & 1u) ? wsch_hub_subscribe(w->hub, s->h, hb_channels[(a >> 1) % HB_NCH])
                      : wsch_hub_unsubscribe(w->hub, s->h, hb_channels[(a >> 1) % HB_NCH]);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_STALE || rc == WSCH_ERR_STATE || rc == WSCH_ERR_ARG ||
                 rc == WSCH_ERR_LIMIT || rc == WSCH_ERR_NOMEM);
        break;
    }
    case 12:
        rc = wsch_hub_peer_close(w->hub, s->h, (k & 4u) ? 4000 : 1000, (k & 8u) ? "bye" : NULL,
                                 (k & 16u) ? WSCH_CSTR : (k & 8u) ? 3 : 0);
        FZ_CHECK(rc <= 0 && rc > WSCH_ERR_LAST_);
        hb_parse(s);
        break;
    case 13: s->send_mode = (k >> 2) % 4u; break;
    case 14: w->al.fail_at = w->al.count + 1 + ((k >> 2) & 3u); break;
    case 15: wsch_hub_shutdown(w->hub); w->shut = 1; break;
    case 16: w->now += (k + 1u) * 1000u; break;
    default: /* the peer's EOF arrives after close(): too late to matter */
        for (k = 0; k < HB_SLOTS; k++)
            if (w->slot[k].close_asked) FZ_CHECK(wsch_hub_transport_closed(w->hub, w->slot[k].h) == WSCH_ERR_STALE);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    hb_world *w = (hb_world *)calloc(1, sizeof(hb_world));
    fz_in in;
    unsigned b0, b1, i, steps = 0;
    int rc;
    FZ_CHECK(w != NULL);
    in.p = data;
    in.n = size;
    b0 = fz_u8(&in);
    b1 = fz_u8(&in);
    w->rng = 1;
    w->now = 5000;
    w->desc.max_peers = 3;
    w->desc.max_channels_per_peer = (b0 & 1u) ? 2 : 0;
    w->desc.max_channel_len = (b0 & 2u) ? 8 : 0;
    w->desc.limits.max_message_size = (b0 & 4u) ? 128 : 0;
    w->desc.limits.max_outbound_bytes = (b0 & 8u) ? 256 : 0;
    w->desc.reject_with_http = (int)((b0 >> 4) & 1u);
    w->desc.idle_timeout_ms = (b0 & 32u) ? 3000 : (b0 & 64u) ? WSCH_HUB_NO_TIMEOUT : 0;
    w->desc.subprotocol = (b0 & 128u) ? "chat" : NULL;
    w->desc.allocator = fz_allocator(&w->al);
    w->desc.effects.send = hb_send;
    w->desc.effects.close = hb_close;
    w->desc.effects.timer_set = hb_timer_set;
    w->desc.effects.timer_cancel = hb_timer_cancel;
    if (b1 & 1u) w->desc.effects.now_ms = hb_now;
    if ((b1 & 1u) && (b1 & 64u)) {     /* history: small, so its limits are reached */
        w->desc.history_size = 4;
        w->desc.history_ttl_ms = 4000;
        w->desc.history_max_bytes = 1500;
    }
    w->desc.effects.random_bytes = hb_random;
    w->reenter = (b1 & 16u) != 0;
    w->desc.check_origin = hb_check_origin;
    w->desc.authenticate = (b1 & 2u) ? NULL : hb_authenticate;
    w->desc.authorize_subscribe = hb_authorize;
    w->desc.on_http = (b1 & 4u) ? hb_on_http : NULL;
    w->desc.on_connect = hb_on_connect;
    w->desc.on_disconnect = hb_on_disconnect;
    w->desc.on_message = (b1 & 8u) ? NULL : hb_on_message;
    w->desc.user = w;
    rc = wsch_hub_create(&w->desc, &w->hub);
    FZ_CHECK(rc == WSCH_OK);
    w->desc = wsch_hub_desc_defaults(&w->desc);
    while (in.n && steps++ < 3000) {
        hb_step(w, &in);
        if (w->al.fail_at && w->al.count >= w->al.fail_at) w->al.fail_at = 0;
        hb_invariants(w);
    }
    /* wind down like a server loop: the peers go away, or the hub is
       destroyed under them (it closes each, and calls nothing else) */
    w->al.fail_at = 0;
    for (i = 0; i < HB_SLOTS; i++)
        if (w->slot[i].used && (b1 & 32u)) hb_report_closed(w, &w->slot[i]);
    hb_invariants(w);
    w->destroying = 1;
    wsch_hub_destroy(w->hub);
    for (i = 0; i < HB_SLOTS; i++) FZ_CHECK(!w->slot[i].used);
    FZ_CHECK(w->closes == w->accepted);     /* close() exactly once per transport */
    FZ_CHECK(w->al.live == 0);
    free(w);
    return 0;
}
