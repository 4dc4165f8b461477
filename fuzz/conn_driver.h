/* The connection engine (wsch_conn) fed hostile bytes, in the role chosen by
   the including file (FZ_ROLE). Input layout:

     byte 0  bit 0     1: a valid opening handshake goes first
             bits 1-2  limit profile (see cd_limits)
             bits 3-4  send() policy: all / 7 bytes / would-block every
                       other call / 1 byte
             bit 5     echo every message back from inside on_message
             bit 6     script mode (see cd_script)
     byte 1  bits 0-2  destroy the connection inside the Nth event callback
             bits 3-4  server: on_request decision; client: offer protocols
             bits 5-7  number of split points, then that many 16-bit offsets
     rest    the byte stream from the peer

   The stream is fed whole, split at the chosen points, and one byte at a
   time; the events (opens, messages, pongs, the close code and reason, the
   first error returned) must be the same each time, and so must the bytes
   written while send() takes everything (unless the connection was
   destroyed inside a callback, which drops whatever was still queued).
   After every call: wsch_conn_want() is 0 exactly when close() has run (and
   the state is CLOSED), and asks for WRITE exactly while bytes are queued.
   Every run ends with close() called exactly once, after on_close (or from
   a destroy before CLOSED, with no on_close), on_close at most once and
   exactly once unless destroyed first, no timer left armed, nothing at all
   after close(), no event after on_close or destroy, and every allocation
   freed. In script mode send() can also fail hard (WSCH_SEND_ERROR): the
   connection must then end at once (on_close, WSCH_ERR_TRANSPORT, close()). */
#include "fuzz.h"

#define CD_STORE 2048

typedef struct cd_cfg {
    int handshake;
    unsigned limits, send_mode, destroy_at, req_mode;
    int echo, script;
} cd_cfg;

typedef struct cd_run {
    wsch_conn_desc desc;
    wsch_conn *c;
    fz_alloc al;
    cd_cfg cfg;
    unsigned send_mode;
    unsigned send_calls;
    unsigned ncallbacks;
    unsigned rng;
    uint64_t ev, out;
    size_t nev, out_len;
    char store[CD_STORE];       /* first bytes written (the client's request) */
    size_t store_len;
    int opened, closes, close_code, close_err, first_err;
    int destroyed, in_destroy, close_requested;
    int send_fail;              /* the next send() reports WSCH_SEND_ERROR */
    int send_failed;            /* it did: the connection must have ended */
    unsigned timers;            /* armed timer ids, one bit each */
    wsch_budget budget;         /* counts what the queue holds (a cap in profile 1) */
} cd_run;

static void cd_limits(wsch_conn_desc *d, unsigned profile) {
    switch (profile) {
    case 1:
        d->limits.max_frame_size = 64;
        d->limits.max_message_size = 200;
        d->limits.max_outbound_bytes = 300;
        d->limits.max_header_bytes = 300;
        break;
    case 2: d->limits.max_frame_size = 1000; d->limits.max_message_size = 100; break;
    case 3:
        d->limits.max_frame_size = 125;
        d->limits.max_message_size = 125;
        d->limits.max_outbound_bytes = 64;
        d->limits.max_header_bytes = 190;
        break;
    default: break;
    }
}

static size_t cd_max_message(const cd_run *r) {
    return r->desc.limits.max_message_size ? r->desc.limits.max_message_size : WSCH_DEFAULT_MAX_MESSAGE_SIZE;
}

/* Every effect and event but close() first checks that the connection may
   still speak: not after on_close, not after destroy, and nothing at all
   after close(). */
static void cd_alive(const cd_run *r) {
    FZ_CHECK(r->closes == 0);
    FZ_CHECK(!r->destroyed);
    FZ_CHECK(r->close_requested == 0);
}

static void cd_destroy(cd_run *r, wsch_conn *c) {
    r->in_destroy = 1;
    wsch_conn_destroy(c);
    r->in_destroy = 0;
    r->destroyed = 1;
}

static void cd_event(cd_run *r, unsigned char kind) {
    r->ev = fz_hash(r->ev, &kind, 1);
    r->nev++;
}

/* Counts an event callback; destroys the connection in the chosen one. */
static void cd_maybe_destroy(cd_run *r, wsch_conn *c) {
    if (++r->ncallbacks == r->cfg.destroy_at) cd_destroy(r, c);
}

static size_t cd_send(const void *data, size_t len, void *user) {
    cd_run *r = (cd_run *)user;
    size_t n = len;
    cd_alive(r);
    FZ_CHECK(data != NULL || len == 0);
    FZ_CHECK(!r->send_failed);     /* the first hard error ended the connection */
    if (r->send_fail) {
        r->send_fail = 0;
        r->send_failed = 1;
        return WSCH_SEND_ERROR;
    }
    switch (r->send_mode) {
    case 1: n = len < 7 ? len : 7; break;
    case 2: n = (r->send_calls & 1u) ? 0 : len; break;
    case 3: n = len < 1 ? len : 1; break;
    default: break;
    }
    r->send_calls++;
    r->out = fz_hash(r->out, data, n);
    if (r->store_len < CD_STORE) {
        size_t k = CD_STORE - r->store_len < n ? CD_STORE - r->store_len : n;
        memcpy(r->store + r->store_len, data, k);
        r->store_len += k;
    }
    r->out_len += n;
    return n;
}

/* Exactly once: after on_close, or from a destroy of a connection that had
   not reached CLOSED (then without on_close). */
static void cd_close(void *user) {
    cd_run *r = (cd_run *)user;
    FZ_CHECK(r->close_requested == 0);
    FZ_CHECK(r->closes == 1 || r->in_destroy);
    FZ_CHECK(!r->destroyed || r->closes == 1);     /* a destroy inside on_close: close() still follows */
    FZ_CHECK(r->timers == 0);
    r->close_requested = 1;
}

static void cd_timer_set(unsigned id, uint32_t ms, void *user) {
    cd_run *r = (cd_run *)user;
    cd_alive(r);
    FZ_CHECK(id == WSCH_TIMER_HANDSHAKE || id == WSCH_TIMER_CLOSE);
    FZ_CHECK(ms > 0);
    r->timers |= 1u << id;
}

static void cd_timer_cancel(unsigned id, void *user) {
    cd_run *r = (cd_run *)user;
    FZ_CHECK(r->closes == 0);
    FZ_CHECK(r->close_requested == 0);
    FZ_CHECK(id == WSCH_TIMER_HANDSHAKE || id == WSCH_TIMER_CLOSE);
    FZ_CHECK(r->timers & (1u << id)); /* only what is armed is cancelled */
    r->timers &= ~(1u << id);
}

/* A counter, not random: the client's key is then the base64 of bytes 0..15,
   so a corpus file can carry the matching Sec-WebSocket-Accept. */
static void cd_random(void *buf, size_t len, void *user) {
    cd_run *r = (cd_run *)user;
    size_t i;
    cd_alive(r);
    for (i = 0; i < len; i++) ((unsigned char *)buf)[i] = (unsigned char)(r->rng++);
}

static const char cd_refusal[] = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

static void cd_on_request(wsch_conn *c, const wsch_request *req, wsch_handshake_reply *reply, void *user) {
    cd_run *r = (cd_run *)user;
    cd_alive(r);
    FZ_CHECK(wsch_conn_state(c) == WSCH_STATE_HANDSHAKE);
    FZ_CHECK(req != NULL && reply != NULL);
    FZ_CHECK(reply->status == 101 || reply->status >= 400);
    cd_event(r, 'R');
    r->ev = fz_hash_u64(r->ev, (uint64_t)reply->status);
    switch (r->cfg.req_mode) {
    case 1: reply->protocol = "chat"; reply->extra_headers = "X-Fuzz: 1\r\n"; break;
    case 2:
        reply->status = 403;
        reply->response = cd_refusal;
        reply->response_len = sizeof cd_refusal - 1;
        break;
    case 3: reply->close_code = 4000; reply->close_reason = "bye"; break;
    default: break;
    }
    cd_maybe_destroy(r, c);
}

static void cd_on_open(wsch_conn *c, void *user) {
    cd_run *r = (cd_run *)user;
    cd_alive(r);
    FZ_CHECK(wsch_conn_state(c) == WSCH_STATE_OPEN);
    FZ_CHECK(r->opened == 0);
    r->opened++;
    cd_event(r, 'O');
    cd_maybe_destroy(r, c);
}

/* What wsch_conn_send(), _send_frame() and _ping() may return. */
static int cd_send_rc_documented(int rc) {
    return rc == WSCH_OK || rc == WSCH_ERR_ARG || rc == WSCH_ERR_STATE || rc == WSCH_ERR_CLOSED ||
           rc == WSCH_ERR_UTF8 || rc == WSCH_ERR_QUEUE_FULL || rc == WSCH_ERR_NOMEM || rc == WSCH_ERR_TRANSPORT;
}

static void cd_on_message(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
    cd_run *r = (cd_run *)user;
    cd_alive(r);
    FZ_CHECK(r->opened);
    FZ_CHECK(op == WSCH_OP_TEXT || op == WSCH_OP_BINARY);
    FZ_CHECK(len <= cd_max_message(r));
    FZ_CHECK(data != NULL || len == 0);
    if (op == WSCH_OP_TEXT) FZ_CHECK(wsch_utf8_valid(data, len));
    cd_event(r, 'M');
    r->ev = fz_hash_u64(r->ev, (uint64_t)op);
    r->ev = fz_hash_u64(r->ev, (uint64_t)len);
    r->ev = fz_hash(r->ev, data, len);
    if (r->cfg.echo) {
        int rc = wsch_conn_send(c, op, data, len);
        FZ_CHECK(cd_send_rc_documented(rc) && rc != WSCH_ERR_UTF8 && rc != WSCH_ERR_ARG);
    }
    cd_maybe_destroy(r, c);
}

static void cd_on_pong(wsch_conn *c, const void *data, size_t len, void *user) {
    cd_run *r = (cd_run *)user;
    cd_alive(r);
    FZ_CHECK(len <= WSCH_CONTROL_PAYLOAD_MAX);
    cd_event(r, 'P');
    r->ev = fz_hash(r->ev, data, len);
    cd_maybe_destroy(r, c);
}

static void cd_on_close(wsch_conn *c, int code, const char *reason, size_t reason_len, void *user) {
    cd_run *r = (cd_run *)user;
    int err = wsch_conn_error(c);
    cd_alive(r);
    FZ_CHECK(wsch_conn_state(c) == WSCH_STATE_CLOSED);
    FZ_CHECK(r->timers == 0); /* every timer cancelled before the report */
    FZ_CHECK(code >= 1000 && code <= 4999);
    FZ_CHECK(reason != NULL || reason_len == 0);
    FZ_CHECK(reason_len <= WSCH_CONTROL_PAYLOAD_MAX);
    FZ_CHECK(err <= 0 && err > WSCH_ERR_LAST_ && err != WSCH_INCOMPLETE);
    /* a hang-up during the opening handshake: 1006 and the error's text */
    if (err == WSCH_ERR_HANGUP) {
        FZ_CHECK(!r->opened && code == WSCH_CLOSE_ABNORMAL);
        FZ_CHECK(reason_len == strlen(wsch_err_str(err)) && memcmp(reason, wsch_err_str(err), reason_len) == 0);
    }
    if (r->send_failed) FZ_CHECK(err == WSCH_ERR_TRANSPORT);
    cd_event(r, 'C');
    r->ev = fz_hash_u64(r->ev, (uint64_t)code);
    r->ev = fz_hash(r->ev, reason, reason_len);
    r->close_code = code;
    r->close_err = err;
    r->closes++;
    /* counted after closes++: a destroy here is legal, a later callback is
       not, but for close() */
    if (++r->ncallbacks == r->cfg.destroy_at) cd_destroy(r, c);
}

static int cd_rc_documented(int rc) {
    return rc <= 0 && rc > WSCH_ERR_LAST_ && rc != WSCH_INCOMPLETE && rc != WSCH_ERR_BUFFER;
}

/* After every call into the connection: wsch_conn_want() is 0 exactly when
   close() has run, WRITE exactly while output is queued; on_close and
   close() come together; a hard send error has ended it at once. */
static void cd_check(cd_run *r) {
    unsigned want;
    if (r->destroyed) return;
    want = wsch_conn_want(r->c);
    FZ_CHECK((want & ~(unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE)) == 0);
    FZ_CHECK(r->closes == r->close_requested);
    FZ_CHECK((want == 0) == (r->close_requested == 1));
    FZ_CHECK((want == 0) == (wsch_conn_state(r->c) == WSCH_STATE_CLOSED));
    if (want) FZ_CHECK(((want & WSCH_WANT_WRITE) != 0) == (wsch_conn_queued_bytes(r->c) > 0));
    /* Between calls nothing is gathered: the budget holds exactly the queue. */
    if (want) FZ_CHECK(r->budget.used == wsch_conn_queued_bytes(r->c));
    if (r->send_failed) FZ_CHECK(want == 0 && wsch_conn_error(r->c) == WSCH_ERR_TRANSPORT);
}

static void cd_note_rc(cd_run *r, int rc) {
    FZ_CHECK(cd_rc_documented(rc));
    /* CLOSED only says the connection ended earlier: when depends on the split. */
    if (rc != WSCH_OK && rc != WSCH_ERR_CLOSED && r->first_err == 0) r->first_err = rc;
}

/* Flushes the queue while the policy lets bytes through. */
static void cd_drain(cd_run *r) {
    int guard = 0;
    while (!r->destroyed && r->closes == 0 && wsch_conn_queued_bytes(r->c) && guard++ < 100000) {
        int rc = wsch_conn_writable(r->c);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_CLOSED);
        cd_check(r);
    }
}

static void cd_feed(cd_run *r, const uint8_t *p, size_t n) {
    char *copy;
    if (r->destroyed || r->closes) return;
    copy = fz_dup(p, n);
    cd_note_rc(r, wsch_conn_feed(r->c, copy, n));
    free(copy);
    cd_check(r);
    if (!r->destroyed && r->closes == 0) {
        FZ_CHECK(wsch_conn_state(r->c) <= WSCH_STATE_CLOSED);
        if (r->send_mode) {
            int rc = wsch_conn_writable(r->c);
            FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_CLOSED);
            cd_check(r);
        }
    }
}

static void cd_start(cd_run *r, const cd_cfg *cfg) {
    int rc;
    memset(r, 0, sizeof *r);
    r->cfg = *cfg;
    r->send_mode = cfg->send_mode;
    r->ev = r->out = FZ_HASH_INIT;
    r->desc.role = FZ_ROLE;
    cd_limits(&r->desc, cfg->limits);
    r->budget.limit = cfg->limits == 1 ? 400 : 0;
    r->desc.limits.outbound_budget = &r->budget;
    r->desc.request.host = "example.com";
    r->desc.request.path = "/chat";
    if (FZ_ROLE == WSCH_ROLE_CLIENT && (cfg->req_mode & 1u)) r->desc.request.protocols = "chat, superchat";
    r->desc.allocator = fz_allocator(&r->al);
    r->desc.effects.send = cd_send;
    r->desc.effects.close = cd_close;
    r->desc.effects.timer_set = cd_timer_set;
    r->desc.effects.timer_cancel = cd_timer_cancel;
    r->desc.effects.random_bytes = cd_random;
    r->desc.on_request = cd_on_request;
    r->desc.on_open = cd_on_open;
    r->desc.on_message = cd_on_message;
    r->desc.on_pong = cd_on_pong;
    r->desc.on_close = cd_on_close;
    rc = wsch_conn_create(&r->desc, r, &r->c);
    FZ_CHECK(rc == WSCH_OK && r->c != NULL);
    FZ_CHECK(wsch_conn_state(r->c) == WSCH_STATE_HANDSHAKE);
    FZ_CHECK(r->timers & (1u << WSCH_TIMER_HANDSHAKE));
    cd_check(r);
}

static const char cd_request[] =
    "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n";

/* Completes the opening handshake with a valid peer. */
static void cd_handshake(cd_run *r) {
    if (FZ_ROLE == WSCH_ROLE_SERVER) {
        cd_feed(r, (const uint8_t *)cd_request, sizeof cd_request - 1);
    } else {
        char resp[256], accept[WSCH_ACCEPT_LEN + 1];
        const char *k;
        int n;
        cd_drain(r);
        FZ_CHECK(r->store_len < CD_STORE);
        r->store[r->store_len] = '\0';
        k = strstr(r->store, "Sec-WebSocket-Key: ");
        FZ_CHECK(k != NULL);
        k += strlen("Sec-WebSocket-Key: ");
        wsch_accept_key(k, WSCH_KEY_LEN, accept);
        n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
        FZ_CHECK(n > 0 && (size_t)n < sizeof resp);
        cd_feed(r, (const uint8_t *)resp, (size_t)n);
    }
    if (r->destroyed || r->closes) return;
    if (FZ_ROLE == WSCH_ROLE_SERVER && r->cfg.req_mode == 2) return; /* refused */
    FZ_CHECK(r->opened == 1);
}

/* A timer fires: it is no longer armed. */
static void cd_fire(cd_run *r, unsigned id) {
    if (!(r->timers & (1u << id))) return;
    r->timers &= ~(1u << id);
    wsch_conn_timer_fired(r->c, id);
    cd_check(r);
}

/* Ends the connection the way a real loop would, then frees it. */
static void cd_end(cd_run *r) {
    if (!r->destroyed && r->closes == 0) {
        wsch_state st;
        cd_drain(r);
        st = r->closes ? WSCH_STATE_CLOSED : wsch_conn_state(r->c);
        if (st == WSCH_STATE_HANDSHAKE && (r->timers & (1u << WSCH_TIMER_HANDSHAKE)))
            cd_fire(r, WSCH_TIMER_HANDSHAKE);
        else if (st == WSCH_STATE_CLOSING && (r->timers & (1u << WSCH_TIMER_CLOSE)))
            cd_fire(r, WSCH_TIMER_CLOSE);
        else if (st != WSCH_STATE_CLOSED)
            wsch_conn_transport_closed(r->c);
        cd_check(r);
        if (!r->destroyed) {
            FZ_CHECK(r->closes == 1);
            FZ_CHECK(r->timers == 0);
            FZ_CHECK(wsch_conn_state(r->c) == WSCH_STATE_CLOSED);
        }
    }
    if (!r->destroyed) {
        /* Calls on a closed connection are refused, never followed. */
        char b[2] = {'x', 'y'};
        FZ_CHECK(wsch_conn_feed(r->c, b, 2) == WSCH_ERR_CLOSED);
        FZ_CHECK(wsch_conn_send(r->c, WSCH_OP_TEXT, "x", 1) == WSCH_ERR_CLOSED);
        FZ_CHECK(wsch_conn_writable(r->c) == WSCH_ERR_CLOSED);
        FZ_CHECK(wsch_conn_close(r->c, 1000, "x", WSCH_CSTR) == WSCH_ERR_CLOSED);
        wsch_conn_timer_fired(r->c, WSCH_TIMER_CLOSE);
        wsch_conn_transport_closed(r->c);
        FZ_CHECK(r->closes == 1);
        FZ_CHECK(wsch_conn_want(r->c) == 0);
        cd_destroy(r, r->c);
    }
    /* close() exactly once, whichever way it ended */
    FZ_CHECK(r->close_requested == 1);
    FZ_CHECK(r->closes <= 1);
    FZ_CHECK(r->al.live == 0);
    FZ_CHECK(r->budget.used == 0);
}

/* ---- script mode: API calls and timer firings between the bytes --------- */

static const uint16_t cd_codes[8] = {0, 1000, 1001, 1002, 1011, 3000, 4001, 4999};

static void cd_script(const cd_cfg *cfg, fz_in *in) {
    cd_run r;
    cd_start(&r, cfg);
    if (cfg->handshake) cd_handshake(&r);
    while (in->n && !r.destroyed && r.closes == 0) {
        unsigned op = fz_u8(in) % 13u;
        const uint8_t *p;
        size_t n;
        int rc = WSCH_OK;
        switch (op) {
        case 0: p = fz_bytes(in, fz_u8(in), &n); cd_feed(&r, p, n); break;
        case 1: p = fz_bytes(in, fz_u16(in), &n); cd_feed(&r, p, n); break;
        case 2: rc = wsch_conn_writable(r.c); FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_CLOSED); break;
        case 3: cd_fire(&r, WSCH_TIMER_HANDSHAKE); break;
        case 4: cd_fire(&r, WSCH_TIMER_CLOSE); break;
        case 5: {
            unsigned k = fz_u8(in);
            p = fz_bytes(in, fz_u8(in), &n);
            rc = wsch_conn_send(r.c, (k & 1u) ? WSCH_OP_BINARY : WSCH_OP_TEXT, p, n);
            FZ_CHECK(cd_send_rc_documented(rc) && rc != WSCH_ERR_ARG);
            break;
        }
        case 6: {
            unsigned k = fz_u8(in);
            p = fz_bytes(in, fz_u8(in), &n);
            rc = wsch_conn_send_frame(r.c, (wsch_opcode)(k & 0x0Fu), (int)(k >> 7), p, n);
            FZ_CHECK(cd_send_rc_documented(rc) && rc != WSCH_ERR_UTF8);
            break;
        }
        case 7:
            p = fz_bytes(in, fz_u8(in) & 0x7Fu, &n);
            rc = wsch_conn_ping(r.c, p, n);
            FZ_CHECK(cd_send_rc_documented(rc) && rc != WSCH_ERR_UTF8);
            break;
        case 8: {
            unsigned k = fz_u8(in);
            p = fz_bytes(in, fz_u8(in) & 0x7Fu, &n);
            if (k & 8u) { /* the reason as a C string */
                char *z = fz_strdup(p, n);
                rc = wsch_conn_close(r.c, cd_codes[k & 7u], z, (k & 7u) ? WSCH_CSTR : 0);
                free(z);
            } else {
                rc = wsch_conn_close(r.c, cd_codes[k & 7u], (const char *)p, (k & 7u) ? n : 0);
            }
            FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_ARG || rc == WSCH_ERR_CLOSED || rc == WSCH_ERR_NOMEM ||
                     rc == WSCH_ERR_TRANSPORT);
            break;
        }
        case 9: {
            /* the caller saw EOF: on_close, then close(); during the opening
               handshake as a hang-up (1006, WSCH_ERR_HANGUP) */
            int hangup = wsch_conn_state(r.c) == WSCH_STATE_HANDSHAKE && wsch_conn_error(r.c) == WSCH_OK;
            wsch_conn_transport_closed(r.c);
            FZ_CHECK(r.destroyed || r.closes == 1);
            FZ_CHECK(r.close_requested == 1);
            if (hangup) FZ_CHECK(r.close_code == WSCH_CLOSE_ABNORMAL && r.close_err == WSCH_ERR_HANGUP);
            break;
        }
        case 10: {
            unsigned k = fz_u8(in);
            r.send_mode = k & 3u;
            if (k & 0x80u) r.send_fail = 1;
            break;
        }
        case 11: r.al.fail_at = r.al.count + 1 + (fz_u8(in) & 3u); break;
        default: cd_destroy(&r, r.c); break;
        }
        cd_check(&r);
        if (!r.destroyed && r.closes == 0) {
            wsch_state st = wsch_conn_state(r.c);
            FZ_CHECK(st != WSCH_STATE_CLOSED);
            if (st == WSCH_STATE_HANDSHAKE) FZ_CHECK(r.opened == 0);
            else FZ_CHECK(r.opened == 1);
        }
    }
    r.al.fail_at = 0;
    cd_end(&r);
}

/* ---- whole / split / byte-at-a-time -------------------------------------- */

typedef struct cd_result {
    uint64_t ev, out;
    size_t nev, out_len;
    int opened, closes, close_code, close_err, first_err;
    int destroyed_in_callback;  /* queued output went with it: not comparable */
} cd_result;

static void cd_run_pieces(const cd_cfg *cfg, const uint8_t *s, size_t n, const size_t *cuts, size_t ncuts,
                          cd_result *res) {
    cd_run r;
    size_t i, at = 0;
    cd_start(&r, cfg);
    if (cfg->handshake) cd_handshake(&r);
    for (i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        if (end < at) end = at;
        cd_feed(&r, s + at, end - at);
        at = end;
    }
    cd_end(&r);
    res->ev = r.ev;
    res->nev = r.nev;
    res->out = r.out;
    res->out_len = r.out_len;
    res->opened = r.opened;
    res->closes = r.closes;
    res->close_code = r.close_code;
    res->close_err = r.close_err;
    res->first_err = r.first_err;
    res->destroyed_in_callback = cfg->destroy_at != 0 && r.ncallbacks >= cfg->destroy_at;
}

static void cd_same(const cd_result *a, const cd_result *b, int compare_output) {
    FZ_CHECK(a->opened == b->opened);
    FZ_CHECK(a->closes == b->closes);
    FZ_CHECK(a->close_code == b->close_code);
    FZ_CHECK(a->close_err == b->close_err);
    FZ_CHECK(a->first_err == b->first_err);
    FZ_CHECK(a->nev == b->nev);
    FZ_CHECK(a->ev == b->ev);
    FZ_CHECK(a->destroyed_in_callback == b->destroyed_in_callback);
    /* A destroy drops what was queued, and how much was queued rather than
       sent depends on the split (replies are gathered until a feed ends). */
    if (compare_output && !a->destroyed_in_callback) {
        FZ_CHECK(a->out_len == b->out_len);
        FZ_CHECK(a->out == b->out);
    }
}

static int cd_cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in in;
    cd_cfg cfg;
    unsigned b0, b1, i, ncuts;
    size_t cuts[8];
    cd_result whole, split, bytes;

    in.p = data;
    in.n = size;
    b0 = fz_u8(&in);
    b1 = fz_u8(&in);
    memset(&cfg, 0, sizeof cfg);
    cfg.handshake = (int)(b0 & 1u);
    cfg.limits = (b0 >> 1) & 3u;
    cfg.send_mode = (b0 >> 3) & 3u;
    cfg.echo = (int)((b0 >> 5) & 1u);
    cfg.script = (int)((b0 >> 6) & 1u);
    cfg.destroy_at = b1 & 7u;
    cfg.req_mode = (b1 >> 3) & 3u;
    if (cfg.script) {
        cd_script(&cfg, &in);
        return 0;
    }
    ncuts = (b1 >> 5) & 7u;
    for (i = 0; i < ncuts; i++) cuts[i] = fz_u16(&in);
    for (i = 0; i < ncuts; i++) cuts[i] = in.n ? cuts[i] % (in.n + 1) : 0;
    qsort(cuts, ncuts, sizeof cuts[0], cd_cmp_size);

    cd_run_pieces(&cfg, in.p, in.n, NULL, 0, &whole);
    cd_run_pieces(&cfg, in.p, in.n, cuts, ncuts, &split);
    cd_same(&whole, &split, cfg.send_mode == 0);
    if (in.n <= 4096) {
        size_t *every = (size_t *)malloc((in.n ? in.n : 1) * sizeof *every);
        size_t k;
        FZ_CHECK(every != NULL);
        for (k = 0; k < in.n; k++) every[k] = k + 1;
        cd_run_pieces(&cfg, in.p, in.n, every, in.n, &bytes);
        free(every);
        cd_same(&whole, &bytes, cfg.send_mode == 0);
    }
    return 0;
}
