/* The reconnecting client (wsch_client) driven by a fuzz-chosen sequence of
   events, with a scripted server on the other side.

     bytes 0-3  configuration (backoff, attempts, heartbeat, queue limits,
                token mode, message/outbound limits)
     rest       operations, one byte each plus arguments (see cl_step)

   After every step: the remembered subscriptions equal a model kept here
   (same channels, same order: none leaked, none lost); the offline queue is
   within its limits; status, retry time, stop reason and armed timers agree;
   on_connect/on_disconnect alternate; a removed handler is never called;
   connect() is only asked for when no transport is open or pending, send()
   only on an open transport; close() exactly once for every connect(),
   a failed or caller-closed one included, and nothing about a transport
   (send, its timers) after its close(); wsch_client_want() is 0 exactly
   when there is no transport, WRITE while a connect is pending, the
   connection's want while open; on_stop once per stop, last of its step,
   with the transport closed; max_attempts counts tries (the first included)
   and retry n since the last open or connect() waits min(base << (n - 1),
   cap) (jittered down to half); an HTTP refusal reports WSCH_ERR_STATUS,
   its status, close code 1006 and, for 401/403, the stop; a hard send
   error ends the link at once. Nothing runs after the client is destroyed
   but the close and timer_cancel effects of the destroy itself. At the end
   every timer is cancelled, every transport closed and every allocation
   freed. */
#include "fuzz.h"

/* -DCL_TRACE prints every operation and event (for reading a reproducer). */
#ifdef CL_TRACE
#define CL_T(...) fprintf(stderr, __VA_ARGS__)
#else
#define CL_T(...) ((void)0)
#endif

#define CL_MAX_SUBS 16
#define CL_MAX_HANDLERS 16
#define CL_SRV_CAP (1u << 20)

enum { TR_NONE = 0, TR_PENDING, TR_OPEN };

typedef struct cl_handler {
    struct cl_world *w;
    wsch_client_handler h;
    const char *type;
    int removed;
    int action;         /* 0 none, 1 off self, 2 subscribe "r", 3 disconnect, 4 destroy */
} cl_handler;

typedef struct cl_world {
    wsch_client *c;
    wsch_client_desc desc;
    fz_alloc al;
    int transport;
    unsigned connect_calls, close_calls;        /* effects: equal whenever transport is TR_NONE */
    unsigned send_mode, send_calls;
    int send_fail, send_failed;                 /* the next send() reports WSCH_SEND_ERROR; it did */
    unsigned char *srv;                 /* what the client wrote on the current transport */
    size_t srv_len;
    uint64_t now;
    uint32_t rng;
    uint32_t timers;                    /* armed ids */
    int destroyed, destroying, destroy_next;
    int connected;                      /* between on_connect and on_disconnect */
    int connects, disconnects;
    int started;                        /* wsch_client_connect() succeeded at least once */
    uint32_t retries;                   /* retry timers armed since the last open or connect() */
    int stop_reported;                  /* on_stop ran since the last wsch_client_connect() */
    int after_stop;                     /* on_stop ran in this step: no event may follow */
    int in_connect;                     /* inside wsch_client_connect(): a new step starts there */
    char *subs[CL_MAX_SUBS];            /* model of the remembered channels */
    size_t nsubs;
    cl_handler handlers[CL_MAX_HANDLERS];
    size_t nhandlers;
    uint16_t terminal[2];
} cl_world;

/* ---- the model of subscriptions ----------------------------------------- */

static long cl_model_find(const cl_world *w, const char *ch) {
    size_t i;
    for (i = 0; i < w->nsubs; i++)
        if (strcmp(w->subs[i], ch) == 0) return (long)i;
    return -1;
}

static void cl_subscribe(cl_world *w, const char *ch) {
    long at = cl_model_find(w, ch);
    int rc = wsch_client_subscribe(w->c, ch);
    FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_ARG || rc == WSCH_ERR_UTF8 || rc == WSCH_ERR_QUEUE_FULL ||
             rc == WSCH_ERR_NOMEM || rc == WSCH_ERR_TOO_LARGE || rc == WSCH_ERR_CLOSED || rc == WSCH_ERR_STATE ||
             rc == WSCH_ERR_TRANSPORT);
    if (rc == WSCH_OK && at < 0 && !w->destroyed) {
        FZ_CHECK(w->nsubs < CL_MAX_SUBS);
        w->subs[w->nsubs++] = fz_strdup(ch, strlen(ch));
    }
    if (at >= 0) FZ_CHECK(rc == WSCH_OK || w->destroyed); /* already there: a no-op */
}

static void cl_unsubscribe(cl_world *w, const char *ch) {
    long at = cl_model_find(w, ch);
    int rc = wsch_client_unsubscribe(w->c, ch);
    if (at < 0) {
        FZ_CHECK(rc == WSCH_ERR_NOT_FOUND || w->destroyed);
        return;
    }
    FZ_CHECK(rc != WSCH_ERR_NOT_FOUND && rc != WSCH_ERR_ARG);
    free(w->subs[at]);
    memmove(w->subs + at, w->subs + at + 1, (w->nsubs - (size_t)at - 1) * sizeof w->subs[0]);
    w->nsubs--;
}

/* ---- effects ------------------------------------------------------------ */

static void cl_live(const cl_world *w) { FZ_CHECK(!w->destroyed); }

static void cl_connect(const char *host, uint16_t port, void *user) {
    cl_world *w = (cl_world *)user;
    cl_live(w);
    FZ_CHECK(!w->destroying);
    FZ_CHECK(host != NULL && strcmp(host, "example.com") == 0 && port == 9001);
    CL_T("  connect()\n");
    FZ_CHECK(w->transport == TR_NONE); /* the previous one was closed */
    /* a try only while fewer than max_attempts have failed in a row */
    if (w->desc.max_attempts != WSCH_CLIENT_FOREVER) FZ_CHECK(wsch_client_attempts(w->c) < w->desc.max_attempts);
    w->transport = TR_PENDING;
    w->connect_calls++;
    w->srv_len = 0;
}

static size_t cl_send(const void *data, size_t len, void *user) {
    cl_world *w = (cl_world *)user;
    size_t n = len;
    cl_live(w);
    FZ_CHECK(w->transport == TR_OPEN);
    if (w->send_fail) {
        w->send_fail = 0;
        w->send_failed = 1;
        return WSCH_SEND_ERROR;
    }
    switch (w->send_mode) {
    case 1: n = len < 5 ? len : 5; break;
    case 2: n = (w->send_calls & 1u) ? 0 : len; break;
    case 3: n = 0; break;
    default: break;
    }
    w->send_calls++;
    if (w->srv_len + n <= CL_SRV_CAP) {
        memcpy(w->srv + w->srv_len, data, n);
        w->srv_len += n;
    }
    return n;
}

static void cl_close(void *user) {
    cl_world *w = (cl_world *)user;
    FZ_CHECK(!w->destroyed || w->destroying);
    CL_T("  close()\n");
    FZ_CHECK(w->transport != TR_NONE); /* never a second close for one transport */
    w->transport = TR_NONE;
    w->close_calls++;
    FZ_CHECK(w->close_calls == w->connect_calls);
}

static void cl_timer_set(unsigned id, uint32_t ms, void *user) {
    cl_world *w = (cl_world *)user;
    cl_live(w);
    FZ_CHECK(!w->destroying);
    FZ_CHECK(id == WSCH_TIMER_HANDSHAKE || id == WSCH_TIMER_CLOSE || id == WSCH_CLIENT_TIMER_RETRY ||
             id == WSCH_CLIENT_TIMER_HEARTBEAT || id == WSCH_CLIENT_TIMER_PONG);
    if (id == WSCH_CLIENT_TIMER_RETRY) {
        /* retry n, counting the retries since the last link that held for
           min_uptime_ms or connect() (1 for the first), waits
           min(base << (n - 1), cap), with jitter anywhere in
           [delay - delay / 2, delay]; a 429/503 with Retry-After may ask
           for longer (at most a day). No failed try in a row: a link held,
           so this is retry 1. */
        uint32_t n;
        uint64_t delay = w->desc.backoff_max_ms;
        FZ_CHECK(w->transport == TR_NONE);
        if (wsch_client_attempts(w->c) == 0) w->retries = 0;
        n = ++w->retries;
        if (w->desc.max_attempts != WSCH_CLIENT_FOREVER) FZ_CHECK(wsch_client_attempts(w->c) < w->desc.max_attempts);
        if (n - 1u < 32u && ((uint64_t)w->desc.backoff_base_ms << (n - 1u)) < delay)
            delay = (uint64_t)w->desc.backoff_base_ms << (n - 1u);
        if ((wsch_client_http_status(w->c) == 429 || wsch_client_http_status(w->c) == 503) && ms > delay)
            FZ_CHECK(ms <= WSCH_MAX_RETRY_AFTER_S * 1000u);
        else if (w->desc.no_jitter || delay <= 1) FZ_CHECK(ms == delay);
        else FZ_CHECK(ms <= delay && ms >= delay - delay / 2);
    } else {
        FZ_CHECK(w->transport == TR_OPEN); /* the link's timers: none after its close() */
    }
    w->timers |= 1u << id;
}

static void cl_timer_cancel(unsigned id, void *user) {
    cl_world *w = (cl_world *)user;
    FZ_CHECK(!w->destroyed || w->destroying);
    FZ_CHECK(id < 32);
    if (id < WSCH_CLIENT_TIMER_RETRY) FZ_CHECK(w->transport == TR_OPEN); /* before its close() */
    w->timers &= ~(1u << id);
}

static uint64_t cl_now(void *user) {
    cl_world *w = (cl_world *)user;
    cl_live(w);
    return w->now;
}

static void cl_random(void *buf, size_t len, void *user) {
    cl_world *w = (cl_world *)user;
    size_t i;
    cl_live(w);
    for (i = 0; i < len; i++) {
        w->rng = w->rng * 1103515245u + 12345u;
        ((unsigned char *)buf)[i] = (unsigned char)(w->rng >> 16);
    }
}

/* ---- events ------------------------------------------------------------- */

static void cl_maybe_destroy(cl_world *w, wsch_client *c) {
    if (!w->destroy_next || w->destroyed) return;
    w->destroy_next = 0;
    w->destroyed = 1;
    w->destroying = 1;
    wsch_client_destroy(c);
    w->destroying = 0;
}

static void cl_event(cl_world *w, wsch_client *c) {
    cl_live(w);
    FZ_CHECK(c == w->c);
    FZ_CHECK(!w->after_stop || w->in_connect); /* on_stop is the last event of its step */
}

static void cl_on_status(wsch_client *c, wsch_status s, void *user) {
    cl_world *w = (cl_world *)user;
    cl_event(w, c);
    FZ_CHECK(s == WSCH_STATUS_DISCONNECTED || s == WSCH_STATUS_CONNECTING || s == WSCH_STATUS_CONNECTED);
    CL_T("  on_status %d\n", (int)s);
    FZ_CHECK(s == wsch_client_status(c));
    cl_maybe_destroy(w, c);
}

static void cl_on_connect(wsch_client *c, void *user) {
    cl_world *w = (cl_world *)user;
    cl_event(w, c);
    CL_T("  on_connect\n");
    FZ_CHECK(!w->connected);
    FZ_CHECK(wsch_client_status(c) == WSCH_STATUS_CONNECTED && w->transport == TR_OPEN);
    FZ_CHECK(wsch_client_http_status(c) == 101);      /* the counters reset once a link holds */
    w->connected = 1;
    w->connects++;
    cl_maybe_destroy(w, c);
}

static void cl_on_disconnect(wsch_client *c, int code, const char *reason, size_t reason_len, void *user) {
    cl_world *w = (cl_world *)user;
    cl_event(w, c);
    CL_T("  on_disconnect %d\n", code);
    FZ_CHECK(w->connected);
    FZ_CHECK(code >= 1000 && code <= 4999);
    FZ_CHECK(reason != NULL || reason_len == 0);
    FZ_CHECK(wsch_client_status(c) != WSCH_STATUS_CONNECTED);
    w->connected = 0;
    w->disconnects++;
    cl_maybe_destroy(w, c);
}

static void cl_on_error(wsch_client *c, int err, const char *what, void *user) {
    cl_world *w = (cl_world *)user;
    cl_event(w, c);
    CL_T("  on_error %d %s\n", err, what);
    FZ_CHECK(err < 0 && err > WSCH_ERR_LAST_ && what != NULL);
    if (err == WSCH_ERR_STATUS) {
        /* refused with an HTTP status: no close frame existed (1006); the
           same credentials will not do better after 401/403 */
        int hs = wsch_client_http_status(c);
        FZ_CHECK(hs >= 100 && hs <= 999 && hs != 101);
        FZ_CHECK(wsch_client_last_close_code(c) == WSCH_CLOSE_ABNORMAL);
        FZ_CHECK((hs == 401 || hs == 403) == (wsch_client_stop_reason(c) == WSCH_STOP_REFUSED));
    }
    if (err == WSCH_ERR_HANGUP) FZ_CHECK(wsch_client_last_close_code(c) == WSCH_CLOSE_ABNORMAL);
    cl_maybe_destroy(w, c);
}

/* Stopped for good: after everything else of the step, with the transport
   already closed, once until the next wsch_client_connect(). */
static void cl_on_stop(wsch_client *c, wsch_stop reason, void *user) {
    cl_world *w = (cl_world *)user;
    cl_event(w, c);
    CL_T("  on_stop %d\n", (int)reason);
    FZ_CHECK(reason != WSCH_STOP_NONE && reason == wsch_client_stop_reason(c));
    FZ_CHECK(!w->stop_reported);
    FZ_CHECK(wsch_client_status(c) == WSCH_STATUS_DISCONNECTED && wsch_client_next_retry_ms(c) < 0);
    FZ_CHECK(w->transport == TR_NONE && wsch_client_conn(c) == NULL && wsch_client_want(c) == 0);
    FZ_CHECK(!w->connected);
    if (reason == WSCH_STOP_MAX_ATTEMPTS) FZ_CHECK(wsch_client_attempts(c) == w->desc.max_attempts);
    w->stop_reported = 1;
    w->after_stop = 1;
    cl_maybe_destroy(w, c);
}

static void cl_on_binary(wsch_client *c, const void *data, size_t len, void *user) {
    cl_world *w = (cl_world *)user;
    cl_event(w, c);
    FZ_CHECK(data != NULL || len == 0);
    FZ_CHECK(w->connected);
    cl_maybe_destroy(w, c);
}

static void cl_handler_fn(wsch_client *c, const wsch_client_message *m, void *user) {
    cl_handler *h = (cl_handler *)user;
    cl_world *w = h->w;
    cl_event(w, c);
    FZ_CHECK(!h->removed);
    FZ_CHECK(w->connected);
    FZ_CHECK(m->type != NULL && strlen(m->type) == m->type_len && m->type_len <= WSCH_ENVELOPE_TYPE_MAX);
    FZ_CHECK(strcmp(m->type, "pong") != 0); /* swallowed */
    if (strcmp(h->type, "*") != 0) FZ_CHECK(strcmp(h->type, m->type) == 0);
    FZ_CHECK(m->raw.ptr != NULL && wsch_utf8_valid(m->raw.ptr, m->raw.len));
    FZ_CHECK(m->payload.ptr == NULL || (m->payload.ptr >= m->raw.ptr &&
                                        m->payload.ptr + m->payload.len <= m->raw.ptr + m->raw.len));
    switch (h->action) {
    case 1:
        FZ_CHECK(wsch_client_off(c, h->h) == WSCH_OK);
        h->removed = 1;
        break;
    case 2: cl_subscribe(w, "r"); break;
    case 3: FZ_CHECK(wsch_client_disconnect(c) == WSCH_OK); break;
    case 4: w->destroy_next = 1; break;
    default: break;
    }
    cl_maybe_destroy(w, c);
}

/* ---- the scripted server ------------------------------------------------ */

static size_t cl_frame(unsigned char *out, unsigned first, const void *payload, size_t len) {
    size_t n = 0;
    out[n++] = (unsigned char)first;
    if (len < 126) {
        out[n++] = (unsigned char)len;
    } else {
        out[n++] = 126;
        out[n++] = (unsigned char)(len >> 8);
        out[n++] = (unsigned char)len;
    }
    if (len) memcpy(out + n, payload, len);
    return n + len;
}

static void cl_feed(cl_world *w, const void *bytes, size_t len) {
    char *copy = fz_dup(bytes, len);
    int rc = wsch_client_feed(w->c, copy, len);
    FZ_CHECK(rc <= 0 && rc > WSCH_ERR_LAST_ && rc != WSCH_INCOMPLETE);
    free(copy);
}

/* The server's answer to the request the client wrote. */
static void cl_answer(cl_world *w, unsigned variant) {
    char resp[512], accept[WSCH_ACCEPT_LEN + 1];
    const char *k;
    int n = 0;
    if (w->transport != TR_OPEN || !wsch_client_conn(w->c)) return;
    if (w->srv_len >= CL_SRV_CAP) return;
    w->srv[w->srv_len] = '\0';
    k = strstr((const char *)w->srv, "Sec-WebSocket-Key: ");
    if (!k) return; /* the request has not left yet */
    wsch_accept_key(k + 19, WSCH_KEY_LEN, accept);
    if (variant >= 2 && variant <= 5) {
        static const int status[4] = {401, 403, 500, 426};
        n = snprintf(resp, sizeof resp, "HTTP/1.1 %d No\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
                     status[variant - 2]);
    } else {
        n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n%s\r\n",
                     variant == 6 ? "AAAAAAAAAAAAAAAAAAAAAAAAAAA=" : accept,
                     variant == 1 ? "Sec-WebSocket-Protocol: chat\r\n" : "");
    }
    FZ_CHECK(n > 0 && (size_t)n < sizeof resp);
    cl_feed(w, resp, (size_t)n);
}

static const char *const cl_channels[8] = {"a", "b", "news", "", "\xff", "r", "chat:room/1", NULL};
static const char *const cl_types[6] = {"chat", "*", "a", "pong", "subscribed", "x"};
static const uint16_t cl_codes[6] = {1000, 1001, 4001, 1008, 4000, 3000};

static void cl_canned(cl_world *w, unsigned k, fz_in *in) {
    unsigned char f[300];
    size_t n = 0;
    switch (k % 10u) {
    case 0: n = cl_frame(f, 0x81, "{\"type\":\"pong\"}", 15); break;
    case 1: n = cl_frame(f, 0x81, "{\"type\":\"chat\",\"payload\":{\"channel\":\"a\",\"x\":1}}", 47); break;
    case 2: n = cl_frame(f, 0x81, "{\"type\":\"a\"}", 12); break;
    case 3: n = cl_frame(f, 0x89, "hi", 2); break;
    case 4: n = cl_frame(f, 0x8A, "", 0); break;
    case 5: {
        unsigned char p[2];
        unsigned code = cl_codes[fz_u8(in) % 6u];
        p[0] = (unsigned char)(code >> 8);
        p[1] = (unsigned char)code;
        n = cl_frame(f, 0x88, p, 2);
        break;
    }
    case 6: n = cl_frame(f, 0x82, "\x00\x01", 2); break;
    case 7: /* a text message in two fragments with a ping between */
        n = cl_frame(f, 0x01, "{\"type\":", 8);
        n += cl_frame(f + n, 0x89, "", 0);
        n += cl_frame(f + n, 0x80, "\"x\"}", 4);
        break;
    case 8: n = cl_frame(f, 0x81, "not json", 8); break;
    default: n = cl_frame(f, 0x81, "{\"type\":\"subscribed\",\"payload\":{\"channel\":\"a\"}}", 48); break;
    }
    cl_feed(w, f, n);
}

/* ---- checks after every step -------------------------------------------- */

static void cl_invariants(cl_world *w) {
    wsch_client *c = w->c;
    wsch_status st;
    size_t i;
    if (w->destroyed) return;
    st = wsch_client_status(c);
    FZ_CHECK(wsch_client_subscription_count(c) == w->nsubs);
    for (i = 0; i < w->nsubs; i++) FZ_CHECK(strcmp(wsch_client_subscription(c, i), w->subs[i]) == 0);
    FZ_CHECK(wsch_client_subscription(c, w->nsubs) == NULL);
    FZ_CHECK(wsch_client_queued_count(c) <= w->desc.queue_max_count || w->desc.queue_max_count == 0);
    FZ_CHECK(wsch_client_queued_bytes(c) <= w->desc.queue_max_bytes || w->desc.queue_max_bytes == 0);
    if (st == WSCH_STATUS_CONNECTED) {
        FZ_CHECK(w->connected && wsch_client_conn(c) != NULL && w->transport == TR_OPEN);
        /* a close frame came in: connected until the connection reports its end */
        FZ_CHECK(wsch_conn_state(wsch_client_conn(c)) == WSCH_STATE_OPEN ||
                 wsch_conn_state(wsch_client_conn(c)) == WSCH_STATE_CLOSING);
    } else if (st == WSCH_STATUS_CONNECTING || !wsch_client_conn(c)) {
        /* the link that had on_connect is gone: on_disconnect has run */
        FZ_CHECK(!w->connected);
    }
    if (wsch_client_next_retry_ms(c) >= 0) {
        FZ_CHECK(st == WSCH_STATUS_DISCONNECTED);
        FZ_CHECK(w->timers & (1u << WSCH_CLIENT_TIMER_RETRY));
        FZ_CHECK(wsch_client_stop_reason(c) == WSCH_STOP_NONE);
        FZ_CHECK(w->transport == TR_NONE);
    }
    if (wsch_client_stop_reason(c) != WSCH_STOP_NONE) {
        FZ_CHECK(st == WSCH_STATUS_DISCONNECTED);
        FZ_CHECK(!(w->timers & (1u << WSCH_CLIENT_TIMER_RETRY)));
    }
    if (st == WSCH_STATUS_CONNECTING) FZ_CHECK(w->transport != TR_NONE);
    if (w->transport == TR_NONE) FZ_CHECK(wsch_client_conn(c) == NULL);
    if (!wsch_client_conn(c)) FZ_CHECK(!(w->timers & ((1u << WSCH_TIMER_HANDSHAKE) | (1u << WSCH_TIMER_CLOSE))));
    FZ_CHECK(w->connects - w->disconnects == w->connected);
    if (w->desc.max_attempts != WSCH_CLIENT_FOREVER) FZ_CHECK(wsch_client_attempts(c) <= w->desc.max_attempts);
    /* one close() per connect(); what the transport should wait for */
    FZ_CHECK(w->connect_calls - w->close_calls == (w->transport != TR_NONE ? 1u : 0u));
    {
        unsigned want = wsch_client_want(c);
        FZ_CHECK((want == 0) == (w->transport == TR_NONE));
        if (w->transport == TR_PENDING) FZ_CHECK(want == WSCH_WANT_WRITE && st == WSCH_STATUS_CONNECTING);
        if (w->transport == TR_OPEN) FZ_CHECK(wsch_client_conn(c) && want == wsch_conn_want(wsch_client_conn(c)));
    }
    /* a hard send error ended that link at once */
    if (w->send_failed) FZ_CHECK(w->transport == TR_NONE);
    /* stopped with nothing left open: on_stop has said so */
    if (w->started && wsch_client_stop_reason(c) != WSCH_STOP_NONE && w->transport == TR_NONE)
        FZ_CHECK(w->stop_reported);
}

/* ---- one operation ------------------------------------------------------ */

static int cl_step(cl_world *w, fz_in *in) {
    unsigned op = fz_u8(in) % 21u, k;
    const uint8_t *p;
    size_t n;
    int rc;
    CL_T("op %u (status %d, transport %d)\n", op, (int)wsch_client_status(w->c), w->transport);
    w->after_stop = 0;
    w->send_failed = 0;
    switch (op) {
    case 0:
        w->in_connect = 1;
        rc = wsch_client_connect(w->c);
        w->in_connect = 0;
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_STATE);
        if (rc == WSCH_OK) {
            w->started = 1;
            w->retries = 0;
            w->stop_reported = 0;
            w->after_stop = 0;
        }
        break;
    case 1: FZ_CHECK(wsch_client_disconnect(w->c) == WSCH_OK); break;
    case 2:
        if (w->transport == TR_PENDING) {
            w->transport = TR_OPEN;
            wsch_client_transport_open(w->c);
        }
        break;
    case 3: /* the connect failed: close() all the same, at once */
        if (w->transport == TR_PENDING) {
            wsch_client_transport_failed(w->c);
            FZ_CHECK(w->transport == TR_NONE);
        }
        break;
    case 4: cl_answer(w, fz_u8(in) % 7u); break;
    case 5: p = fz_bytes(in, fz_u8(in), &n); cl_feed(w, p, n); break;
    case 6: {
        unsigned char f[300];
        p = fz_bytes(in, fz_u8(in), &n);
        cl_feed(w, f, cl_frame(f, 0x81, p, n));
        break;
    }
    case 7: cl_canned(w, fz_u8(in), in); break;
    case 8:
        rc = wsch_client_writable(w->c);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_STATE || rc == WSCH_ERR_CLOSED);
        break;
    case 9: { /* fire the k-th armed timer */
        unsigned id, seen = 0;
        k = fz_u8(in);
        for (id = 1; id < 32; id++) {
            if (!(w->timers & (1u << id))) continue;
            if (seen++ == k % 8u) {
                w->timers &= ~(1u << id);
                wsch_client_timer_fired(w->c, id);
                break;
            }
        }
        break;
    }
    case 10: /* the caller saw EOF: close() follows, at once */
        if (w->transport != TR_NONE) {
            wsch_client_transport_closed(w->c);
            FZ_CHECK(w->transport == TR_NONE);
        }
        break;
    case 11: {
        static const char *const payloads[5] = {NULL, "{\"x\":1}", "[1,2", "\"s\"", "{\"a\":{\"b\":[null]}}"};
        const char *pl;
        k = fz_u8(in);
        pl = payloads[(k >> 3) % 5u];
        rc = wsch_client_send(w->c, cl_types[k % 6u], pl, (k & 0x80u) ? WSCH_CSTR : pl ? strlen(pl) : 0);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_JSON || rc == WSCH_ERR_QUEUE_FULL || rc == WSCH_ERR_STATE ||
                 rc == WSCH_ERR_NOMEM || rc == WSCH_ERR_CLOSED || rc == WSCH_ERR_TRANSPORT);
        if ((k >> 3) % 5u == 2) FZ_CHECK(rc == WSCH_ERR_JSON);
        break;
    }
    case 12: {
        const char *ch = cl_channels[fz_u8(in) % 8u];
        char longch[300];
        if (!ch) {
            memset(longch, 'L', sizeof longch - 1);
            longch[sizeof longch - 1] = '\0';
            ch = longch;
        }
        cl_subscribe(w, ch);
        break;
    }
    case 13: {
        const char *ch = cl_channels[fz_u8(in) % 7u];
        cl_unsubscribe(w, ch);
        break;
    }
    case 14: {
        k = fz_u8(in);
        if ((k & 1u) && w->nhandlers < CL_MAX_HANDLERS) {
            cl_handler *h = &w->handlers[w->nhandlers];
            h->w = w;
            h->type = cl_types[(k >> 1) % 6u];
            h->removed = 0;
            h->action = (int)((k >> 4) % 5u);
            rc = wsch_client_on(w->c, h->type, cl_handler_fn, h, &h->h);
            FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_NOMEM);
            if (rc == WSCH_OK) {
                FZ_CHECK(h->h.id != 0);
                w->nhandlers++;
            }
        } else if (w->nhandlers) {
            cl_handler *h = &w->handlers[(k >> 1) % w->nhandlers];
            rc = wsch_client_off(w->c, h->h);
            FZ_CHECK(rc == (h->removed ? WSCH_ERR_STALE : WSCH_OK));
            h->removed = 1;
        }
        break;
    }
    case 15: w->now += fz_u16(in); break;
    case 16:
        k = fz_u8(in);
        w->send_mode = k % 4u;
        if (k & 0x80u) w->send_fail = 1;
        break;
    case 17: w->al.fail_at = w->al.count + 1 + (fz_u8(in) & 3u); break;
    case 18: w->destroy_next = 1; break;
    case 19:
        p = fz_bytes(in, fz_u8(in), &n);
        rc = wsch_client_send_text(w->c, (const char *)p, n);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_UTF8 || rc == WSCH_ERR_QUEUE_FULL || rc == WSCH_ERR_STATE ||
                 rc == WSCH_ERR_NOMEM || rc == WSCH_ERR_CLOSED || rc == WSCH_ERR_TRANSPORT);
        break;
    default: /* the same stale handle twice, and a foreign one */
        if (w->nhandlers) {
            wsch_client_handler bogus;
            bogus.id = 0x7FFFFFFFu;
            FZ_CHECK(wsch_client_off(w->c, bogus) == WSCH_ERR_STALE);
        }
        break;
    }
    return !w->destroyed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cl_world w;
    fz_in in;
    unsigned b0, b1, b2, b3;
    size_t i, steps = 0;
    int rc;
    in.p = data;
    in.n = size;
    memset(&w, 0, sizeof w);
    w.srv = (unsigned char *)malloc(CL_SRV_CAP + 1);
    FZ_CHECK(w.srv != NULL);
    w.now = 1000;
    w.rng = 7;
    b0 = fz_u8(&in);
    b1 = fz_u8(&in);
    b2 = fz_u8(&in);
    b3 = fz_u8(&in);
    w.desc.url = (b0 & 1u) ? "ws://example.com:9001/ws?room=1" : "ws://example.com:9001/ws";
    w.desc.token = (b0 & 2u) ? "s3cr3t token" : NULL;
    w.desc.token_in = (b0 & 4u) ? WSCH_TOKEN_AUTHORIZATION : WSCH_TOKEN_QUERY;
    if (w.desc.token_in == WSCH_TOKEN_AUTHORIZATION && w.desc.token) w.desc.token = "s3cr3t.token";
    w.desc.protocols = (b0 & 8u) ? "chat" : NULL;
    w.desc.no_jitter = (int)((b0 >> 4) & 1u);
    w.desc.heartbeat = (wsch_heartbeat)((b0 >> 5) % 5u);
    w.desc.backoff_base_ms = (b1 & 15u) * 100u;
    w.desc.backoff_max_ms = (b1 >> 4) * 1000u;
    w.desc.max_attempts = (b2 & 3u) == 3 ? WSCH_CLIENT_FOREVER : (b2 & 3u);
    w.desc.heartbeat_interval_ms = ((b2 >> 2) & 3u) * 500u;
    w.desc.pong_timeout_ms = ((b2 >> 4) & 3u) * 300u;
    w.desc.no_offline_queue = (int)((b2 >> 6) & 1u);
    w.desc.queue_max_count = (b3 & 3u) * 2u;
    w.desc.queue_max_bytes = ((b3 >> 2) & 3u) * 64u;
    w.desc.limits.max_message_size = (b3 & 16u) ? 64u : 0u;
    w.desc.limits.max_outbound_bytes = (b3 & 32u) ? 128u : 0u;
    w.terminal[0] = 4000;
    w.terminal[1] = 3000;
    w.desc.terminal_codes = w.terminal;
    w.desc.num_terminal_codes = (b3 & 64u) ? 2u : 0u;
    w.desc.allocator = fz_allocator(&w.al);
    w.desc.user = &w;
    w.desc.effects.connect = cl_connect;
    w.desc.effects.send = cl_send;
    w.desc.effects.close = cl_close;
    w.desc.effects.timer_set = cl_timer_set;
    w.desc.effects.timer_cancel = cl_timer_cancel;
    w.desc.effects.now_ms = cl_now;
    w.desc.effects.random_bytes = cl_random;
    w.desc.on_status = cl_on_status;
    w.desc.on_connect = cl_on_connect;
    w.desc.on_disconnect = cl_on_disconnect;
    w.desc.on_error = cl_on_error;
    w.desc.on_binary = cl_on_binary;
    w.desc.on_stop = cl_on_stop;
    rc = wsch_client_create(&w.desc, &w.c);
    FZ_CHECK(rc == WSCH_OK);
    w.desc = wsch_client_desc_defaults(&w.desc);
    while (in.n && steps++ < 2000) {
        if (!cl_step(&w, &in)) break;
        if (!w.destroyed) w.al.fail_at = w.al.fail_at && w.al.count >= w.al.fail_at ? 0 : w.al.fail_at;
        cl_invariants(&w);
    }
    if (!w.destroyed) {
        w.destroying = 1;
        w.destroyed = 1;
        wsch_client_destroy(w.c);
    }
    FZ_CHECK(w.timers == 0);            /* every timer it armed is cancelled */
    FZ_CHECK(w.transport == TR_NONE);   /* and the transport closed */
    FZ_CHECK(w.close_calls == w.connect_calls);
    FZ_CHECK(w.al.live == 0);
    for (i = 0; i < w.nsubs; i++) free(w.subs[i]);
    free(w.srv);
    return 0;
}
