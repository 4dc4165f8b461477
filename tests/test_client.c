/* Tests for the reconnecting client (wsch_client): every state transition,
   driven through fakes for the outside world -- a clock, a timer table, a
   transport that records what the client writes and lets a test play the
   server (real handshake responses, real frames), a deterministic random
   source and a counting, failing allocator. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

/* Every client here allocates through A: counted, and failing when asked. */
static alloc_counter A;

/* ---- the fixture: one client and the world around it ---- */

#define MAX_EVENTS 256

typedef struct fx {
    wsch_client *c;
    uint64_t now;
    int armed[32];
    uint64_t due[32];
    uint32_t delay[32];         /* last delay armed per id */
    unsigned timer_sets;

    unsigned connects;
    uint64_t connect_at[64];    /* the clock at each connect() */
    char host[64];
    uint16_t port;
    unsigned closes;
    int live;                   /* between a connect() and its close() */
    unsigned stray_closes;      /* close() with no transport to close */
    unsigned early_connects;    /* connect() before the last transport's close() */
    unsigned late_sends;        /* send() after the transport's close() */
    int auto_open;              /* connect() opens the transport at once */
    int auto_fail;              /* connect() fails at once */

    unsigned char *out;         /* every byte the client wrote */
    size_t out_len, out_cap, out_read;
    size_t send_cap;            /* bytes send() takes per call; 0 = all */
    int send_block;             /* send() takes nothing: the socket would block */
    int send_error;             /* send() reports WSCH_SEND_ERROR, once */

    int rng_mode;               /* 0: LCG, 1: fixed byte */
    unsigned char rng_byte;
    uint64_t rng;

    int statuses[MAX_EVENTS];
    size_t nstatus;
    int disc_codes[MAX_EVENTS];
    char disc_reason[128];
    size_t ndisc;
    int errors[MAX_EVENTS];
    size_t nerr;
    unsigned on_connects;
    int stops[MAX_EVENTS];
    size_t nstop;
    /* every event and connect/close effect in order, one token each:
       S<status> D<code> E<err> P<stop reason> K (connect) X (close) */
    char log[4096];

    /* re-entrancy hooks */
    int disconnect_on_status;   /* call disconnect() when this status is reported (+1) */
    int destroy_on_status;
    int connect_in_disconnect;
    int close_in_send;          /* send() reports the transport closed, once */
} fx;

static fx F;

static void fx_log(const char *tag, int n, int with_n) {
    size_t len = strlen(F.log);
    char tmp[32];
    int w = with_n ? snprintf(tmp, sizeof tmp, "%s%d;", tag, n) : snprintf(tmp, sizeof tmp, "%s;", tag);
    if (w > 0 && (size_t)w < sizeof F.log - len) memcpy(F.log + len, tmp, (size_t)w + 1);
}

/* The last n bytes of the event log (all of it when shorter). */
static const char *fx_log_tail(size_t n) {
    size_t len = strlen(F.log);
    return F.log + (len > n ? len - n : 0);
}

static void fx_connect(const char *host, uint16_t port, void *user) {
    (void)user;
    if (F.live) F.early_connects++;
    F.live = 1;
    if (F.connects < 64) F.connect_at[F.connects] = F.now;
    F.connects++;
    fx_log("K", 0, 0);
    strncpy(F.host, host, sizeof F.host - 1);
    F.host[sizeof F.host - 1] = '\0';
    F.port = port;
    if (F.auto_fail) wsch_client_transport_failed(F.c);
    else if (F.auto_open) wsch_client_transport_open(F.c);
}

static size_t fx_send(const void *data, size_t len, void *user) {
    size_t take = len;
    (void)user;
    if (!F.live) F.late_sends++;
    if (F.send_error) {
        F.send_error = 0;
        return WSCH_SEND_ERROR;
    }
    if (F.send_block) return 0;
    if (F.close_in_send) {
        F.close_in_send = 0;
        wsch_client_transport_closed(F.c);
        return 0;
    }
    if (F.send_cap && take > F.send_cap) take = F.send_cap;
    if (F.out_len + take > F.out_cap) {
        size_t cap = F.out_cap ? F.out_cap * 2 : 4096;
        while (cap < F.out_len + take) cap *= 2;
        F.out = (unsigned char *)realloc(F.out, cap);
        F.out_cap = cap;
    }
    memcpy(F.out + F.out_len, data, take);
    F.out_len += take;
    return take;
}

static void fx_close(void *user) {
    (void)user;
    if (!F.live) F.stray_closes++;
    F.live = 0;
    F.closes++;
    fx_log("X", 0, 0);
}

static void fx_timer_set(unsigned id, uint32_t ms, void *user) {
    (void)user;
    if (id >= 32) return;
    F.armed[id] = 1;
    F.due[id] = F.now + ms;
    F.delay[id] = ms;
    F.timer_sets++;
}

static void fx_timer_cancel(unsigned id, void *user) {
    (void)user;
    if (id < 32) F.armed[id] = 0;
}

static uint64_t fx_now(void *user) {
    (void)user;
    return F.now;
}

static void fx_random(void *buf, size_t len, void *user) {
    unsigned char *p = (unsigned char *)buf;
    size_t i;
    (void)user;
    for (i = 0; i < len; i++) {
        if (F.rng_mode == 1) {
            p[i] = F.rng_byte;
        } else {
            F.rng = F.rng * 6364136223846793005ull + 1442695040888963407ull;
            p[i] = (unsigned char)(F.rng >> 56);
        }
    }
}

static void fx_on_status(wsch_client *c, wsch_status st, void *user) {
    (void)user;
    if (F.nstatus < MAX_EVENTS) F.statuses[F.nstatus++] = (int)st;
    fx_log("S", (int)st, 1);
    if (F.disconnect_on_status == (int)st + 1) {
        F.disconnect_on_status = 0;
        wsch_client_disconnect(c);
    }
    if (F.destroy_on_status == (int)st + 1) {
        F.destroy_on_status = 0;
        wsch_client_destroy(c);
        F.c = NULL;
    }
}

static void fx_on_connect(wsch_client *c, void *user) {
    (void)c;
    (void)user;
    F.on_connects++;
}

static void fx_on_disconnect(wsch_client *c, int code, const char *reason, size_t len, void *user) {
    (void)user;
    if (F.ndisc < MAX_EVENTS) F.disc_codes[F.ndisc++] = code;
    fx_log("D", code, 1);
    if (len >= sizeof F.disc_reason) len = sizeof F.disc_reason - 1;
    memcpy(F.disc_reason, reason, len);
    F.disc_reason[len] = '\0';
    if (F.connect_in_disconnect) {
        F.connect_in_disconnect = 0;
        wsch_client_connect(c);
    }
}

static void fx_on_error(wsch_client *c, int err, const char *what, void *user) {
    (void)c;
    (void)what;
    (void)user;
    if (F.nerr < MAX_EVENTS) F.errors[F.nerr++] = err;
    fx_log("E", err, 1);
}

static void fx_on_stop(wsch_client *c, wsch_stop reason, void *user) {
    (void)c;
    (void)user;
    if (F.nstop < MAX_EVENTS) F.stops[F.nstop++] = (int)reason;
    fx_log("P", (int)reason, 1);
}

static wsch_client_desc fx_desc(void) {
    wsch_client_desc d;
    memset(&d, 0, sizeof d);
    d.url = "ws://127.0.0.1:8080/ws";
    d.effects.connect = fx_connect;
    d.effects.send = fx_send;
    d.effects.close = fx_close;
    d.effects.timer_set = fx_timer_set;
    d.effects.timer_cancel = fx_timer_cancel;
    d.effects.now_ms = fx_now;
    d.effects.random_bytes = fx_random;
    d.on_status = fx_on_status;
    d.on_connect = fx_on_connect;
    d.on_disconnect = fx_on_disconnect;
    d.on_error = fx_on_error;
    d.on_stop = fx_on_stop;
    d.allocator = alloc_counter_allocator(&A);
    d.no_jitter = 1;
    return d;
}

static void fx_reset(void) {
    free(F.out);
    memset(&F, 0, sizeof F);
    memset(&A, 0, sizeof A);
    F.now = 1000000;
    F.rng = 12345;
}

static void fx_teardown(void *arg) {
    (void)arg;
    if (F.c) wsch_client_destroy(F.c);
    F.c = NULL;
    free(F.out);
    F.out = NULL;
    F.out_len = F.out_cap = F.out_read = 0;
}

static int fx_start(const wsch_client_desc *d) {
    fx_reset();
    return wsch_client_create(d, &F.c);
}

/* close() ran exactly once for every connect() so far: none missing, none
   twice, none before its connect(), no send() after it. */
static enum greatest_test_res fx_check_close_once(void) {
    ASSERT_EQ_FMT(F.connects, F.closes, "%u");
    ASSERT_FALSE(F.live);
    ASSERT_EQ(0u, F.stray_closes);
    ASSERT_EQ(0u, F.early_connects);
    ASSERT_EQ(0u, F.late_sends);
    PASS();
}

static int fx_armed_count(void) {
    int i, n = 0;
    for (i = 0; i < 32; i++) n += F.armed[i];
    return n;
}

/* Moves the clock forward by ms, firing due timers in deadline order. */
static void fx_advance(uint64_t ms) {
    uint64_t end = F.now + ms;
    for (;;) {
        int i, best = -1;
        for (i = 0; i < 32; i++) {
            if (F.armed[i] && F.due[i] <= end && (best < 0 || F.due[i] < F.due[best])) best = i;
        }
        if (best < 0) break;
        if (F.due[best] > F.now) F.now = F.due[best];
        F.armed[best] = 0;
        if (F.c) wsch_client_timer_fired(F.c, (unsigned)best);
    }
    F.now = end;
}

/* Plays the server's side of the opening handshake: parses the request the
   client wrote and feeds back a real 101 response. Returns 1 on success. */
static int fx_accept_raw(char *req_target, size_t target_cap, char *auth, size_t auth_cap) {
    wsch_request req;
    size_t consumed = 0, rlen = 0;
    char resp[512];
    int r;
    if (F.out_len <= F.out_read) return 0;
    r = wsch_request_parse((const char *)F.out + F.out_read, F.out_len - F.out_read, 0, 0, &req, &consumed);
    if (r != WSCH_OK) return 0;
    if (wsch_request_check_upgrade(&req) != WSCH_OK) return 0;
    if (req_target && req.target.len < target_cap) {
        memcpy(req_target, req.target.ptr, req.target.len);
        req_target[req.target.len] = '\0';
    }
    if (auth && auth_cap) {
        auth[0] = '\0';
        if (req.authorization.ptr && req.authorization.len < auth_cap) {
            memcpy(auth, req.authorization.ptr, req.authorization.len);
            auth[req.authorization.len] = '\0';
        }
    }
    if (wsch_response_build(&req, NULL, NULL, resp, sizeof resp, &rlen) != WSCH_OK) return 0;
    F.out_read += consumed;
    return wsch_client_feed(F.c, resp, rlen) == WSCH_OK;
}

static int fx_accept(void) { return fx_accept_raw(NULL, 0, NULL, 0); }

/* Marks everything the client wrote so far as read. */
static void fx_drain(void) { F.out_read = F.out_len; }

/* connect() -> transport open -> handshake accepted. */
static int fx_open(void) {
    if (wsch_client_status(F.c) != WSCH_STATUS_CONNECTING) return 0;
    fx_drain();                 /* what earlier transports were sent is not this one's */
    wsch_client_transport_open(F.c);
    return fx_accept() && wsch_client_status(F.c) == WSCH_STATUS_CONNECTED;
}

/* Takes the next complete frame the client wrote, unmasked. */
static int fx_next_frame(int *opcode, char *buf, size_t cap, size_t *len) {
    wsch_frame_header h;
    size_t hl = 0;
    if (F.out_read >= F.out_len) return 0;
    if (wsch_frame_header_decode(F.out + F.out_read, F.out_len - F.out_read, &h, &hl) != WSCH_OK) return 0;
    if (!h.masked || h.payload_len >= cap || F.out_len - F.out_read - hl < h.payload_len) return 0;
    memcpy(buf, F.out + F.out_read + hl, (size_t)h.payload_len);
    wsch_mask(buf, (size_t)h.payload_len, h.mask_key, 0);
    buf[h.payload_len] = '\0';
    *len = (size_t)h.payload_len;
    *opcode = h.opcode;
    F.out_read += hl + (size_t)h.payload_len;
    return 1;
}

/* The next text message the client wrote, or "" when there is none. */
static const char *fx_next_text(void) {
    static char buf[4096];
    int op = 0;
    size_t len = 0;
    if (!fx_next_frame(&op, buf, sizeof buf, &len)) return "";
    if (op != WSCH_OP_TEXT) return "(not text)";
    return buf;
}

/* Feeds the client one unmasked server frame. */
static int fx_srv_frame(int opcode, const void *data, size_t len) {
    unsigned char buf[8192];
    wsch_frame_header h;
    size_t hl;
    memset(&h, 0, sizeof h);
    h.opcode = (uint8_t)opcode;
    h.fin = 1;
    h.payload_len = len;
    hl = wsch_frame_header_encode(buf, &h);
    if (hl + len > sizeof buf) return WSCH_ERR_BUFFER;
    if (len) memcpy(buf + hl, data, len);
    return wsch_client_feed(F.c, buf, hl + len);
}

static int fx_srv_text(const char *s) { return fx_srv_frame(WSCH_OP_TEXT, s, strlen(s)); }

/* A server close frame, then the server drops the TCP connection. */
static void fx_srv_close(int code, const char *reason) {
    unsigned char p[125];
    size_t rl = strlen(reason);
    p[0] = (unsigned char)(code >> 8);
    p[1] = (unsigned char)code;
    memcpy(p + 2, reason, rl);
    fx_srv_frame(WSCH_OP_CLOSE, p, 2 + rl);
    if (F.c) wsch_client_transport_closed(F.c);
}

/* ---- handler recording ---- */

typedef struct hrec {
    char log[1024];
    wsch_client_handler self, other, third;
    int remove_self, remove_other, add_new, do_send, do_subscribe, do_disconnect, do_destroy;
    int calls;
} hrec;

static void h_append(hrec *r, const char *tag, const wsch_client_message *m) {
    size_t n = strlen(r->log);
    size_t room = sizeof r->log - n;
    char tmp[256];
    size_t tl;
    tl = (size_t)snprintf(tmp, sizeof tmp, "%s:%s:%.*s;", tag, m->type, (int)m->payload.len,
                          m->payload.ptr ? m->payload.ptr : "");
    if (tl < room) memcpy(r->log + n, tmp, tl + 1);
}

static void h_a(wsch_client *c, const wsch_client_message *m, void *user);
static void h_b(wsch_client *c, const wsch_client_message *m, void *user) {
    (void)c;
    if (user) h_append((hrec *)user, "B", m);
}
static void h_c(wsch_client *c, const wsch_client_message *m, void *user) {
    (void)c;
    h_append((hrec *)user, "C", m);
}
static void h_new(wsch_client *c, const wsch_client_message *m, void *user) {
    (void)c;
    h_append((hrec *)user, "N", m);
}
static void h_a(wsch_client *c, const wsch_client_message *m, void *user) {
    hrec *r = (hrec *)user;
    h_append(r, "A", m);
    r->calls++;
    if (r->remove_self) wsch_client_off(c, r->self);
    if (r->remove_other) wsch_client_off(c, r->other);
    if (r->add_new) {
        r->add_new = 0;
        wsch_client_on(c, "*", h_new, r, &r->third);
    }
    if (r->do_send) wsch_client_send(c, "echo", m->payload.ptr ? "1" : NULL, WSCH_CSTR);
    if (r->do_subscribe) wsch_client_subscribe(c, "late");
    if (r->do_disconnect) wsch_client_disconnect(c);
    if (r->do_destroy) {
        wsch_client_destroy(c);
        F.c = NULL;
    }
}

/* ======================================================================== */

TEST defaults_resolved(void) {
    wsch_client_desc z, d;
    memset(&z, 0, sizeof z);
    d = wsch_client_desc_defaults(&z);
    ASSERT_EQ(1000u, d.backoff_base_ms);
    ASSERT_EQ(30000u, d.backoff_max_ms);
    ASSERT_EQ(10u, d.max_attempts);
    ASSERT_EQ(WSCH_HEARTBEAT_APP, d.heartbeat);
    ASSERT_EQ(30000u, d.heartbeat_interval_ms);
    ASSERT_EQ(10000u, d.pong_timeout_ms);
    ASSERT_EQ((size_t)256, d.queue_max_count);
    ASSERT_EQ((size_t)256 * 1024, d.queue_max_bytes);
    ASSERT_EQ(0, d.no_jitter);
    z.backoff_base_ms = 7;
    z.max_attempts = WSCH_CLIENT_FOREVER;
    d = wsch_client_desc_defaults(&z);
    ASSERT_EQ(7u, d.backoff_base_ms);
    ASSERT_EQ(WSCH_CLIENT_FOREVER, d.max_attempts);
    PASS();
}

TEST create_rejects_bad_desc(void) {
    wsch_client_desc d = fx_desc();
    uint16_t codes[WSCH_CLIENT_MAX_TERMINAL_CODES + 1];
    wsch_client *c = NULL;
    fx_reset();
    d.url = NULL;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_client_create(&d, &c));
    d = fx_desc();
    d.url = "http://x/";
    ASSERT_EQ(WSCH_ERR_URL, wsch_client_create(&d, &c));
    d = fx_desc();
    d.effects.timer_set = NULL;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_client_create(&d, &c));
    d = fx_desc();
    d.effects.close = NULL;             /* every connect() is owed a close() */
    ASSERT_EQ(WSCH_ERR_ARG, wsch_client_create(&d, &c));
    d = fx_desc();
    memset(codes, 0, sizeof codes);
    d.terminal_codes = codes;
    d.num_terminal_codes = WSCH_CLIENT_MAX_TERMINAL_CODES + 1;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_client_create(&d, &c));
    d = fx_desc();
    d.token = "a\r\nX-Evil: 1";
    d.token_in = WSCH_TOKEN_AUTHORIZATION;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_client_create(&d, &c));
    ASSERT_EQ(NULL, c);
    ASSERT_EQ((size_t)0, A.live_blocks);
    PASS();
}

TEST token_in_query_is_percent_encoded(void) {
    wsch_client_desc d = fx_desc();
    char target[256], auth[128];
    d.url = "ws://127.0.0.1:9001/chat?room=1";
    d.token = "a b+c/é";
    d.session = "abc-1_Z";
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT_EQ(1u, F.connects);
    ASSERT_STR_EQ("127.0.0.1", F.host);
    ASSERT_EQ(9001, F.port);
    wsch_client_transport_open(F.c);
    ASSERT(fx_accept_raw(target, sizeof target, auth, sizeof auth));
    ASSERT_STR_EQ("/chat?room=1&token=a%20b%2Bc%2F%C3%A9&session=abc-1_Z", target);
    ASSERT_STR_EQ("", auth);
    PASS();
}

TEST token_in_header(void) {
    wsch_client_desc d = fx_desc();
    char target[256], auth[128];
    d.token = "T0k.en";
    d.token_in = WSCH_TOKEN_AUTHORIZATION;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    wsch_client_transport_open(F.c);
    ASSERT(fx_accept_raw(target, sizeof target, auth, sizeof auth));
    /* The token is not in the query; the session (32 random hex digits) is. */
    ASSERT_EQ((size_t)(3 + 9 + 32), strlen(target));
    ASSERT_EQ(0, strncmp("/ws?session=", target, 12));
    ASSERT_STR_EQ(wsch_client_session(F.c), target + 12);
    ASSERT_STR_EQ("Bearer T0k.en", auth);
    PASS();
}

TEST transitions_happy_path(void) {
    wsch_client_desc d = fx_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(-1, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(0u, F.connects);
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT_EQ(WSCH_STATUS_CONNECTING, wsch_client_status(F.c));
    ASSERT_EQ(WSCH_ERR_STATE, wsch_client_connect(F.c));
    ASSERT_EQ(1u, F.connects);
    ASSERT_EQ((size_t)1, F.nstatus);
    ASSERT_EQ(WSCH_STATUS_CONNECTING, F.statuses[0]);
    wsch_client_transport_open(F.c);                        /* HANDSHAKE */
    ASSERT_EQ(WSCH_STATUS_CONNECTING, wsch_client_status(F.c));
    ASSERT(wsch_client_conn(F.c) != NULL);
    ASSERT(F.armed[WSCH_TIMER_HANDSHAKE]);                  /* the conn's timer, forwarded */
    ASSERT(fx_accept());                                     /* OPEN */
    ASSERT_EQ(WSCH_STATUS_CONNECTED, wsch_client_status(F.c));
    ASSERT_EQ((size_t)2, F.nstatus);
    ASSERT_EQ(WSCH_STATUS_CONNECTED, F.statuses[1]);
    ASSERT_EQ(1u, F.on_connects);
    ASSERT_FALSE(F.armed[WSCH_TIMER_HANDSHAKE]);
    ASSERT(F.armed[WSCH_CLIENT_TIMER_HEARTBEAT]);
    /* transport lost -> WAITING (status disconnected, retry visible) */
    wsch_client_transport_closed(F.c);
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ((size_t)1, F.ndisc);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, F.disc_codes[0]);
    ASSERT_EQ(1000, wsch_client_next_retry_ms(F.c));
    ASSERT(wsch_client_conn(F.c) == NULL);
    ASSERT_FALSE(F.armed[WSCH_CLIENT_TIMER_HEARTBEAT]);
    fx_advance(400);
    ASSERT_EQ(600, wsch_client_next_retry_ms(F.c));
    fx_advance(599);
    ASSERT_EQ(1u, F.connects);
    fx_advance(1);                                           /* WAITING -> CONNECTING */
    ASSERT_EQ(2u, F.connects);
    ASSERT_EQ(WSCH_STATUS_CONNECTING, wsch_client_status(F.c));
    ASSERT_EQ(-1, wsch_client_next_retry_ms(F.c));
    /* CONNECTING -> transport failed -> WAITING */
    wsch_client_transport_failed(F.c);
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(WSCH_ERR_CONNECT, F.errors[F.nerr - 1]);
    ASSERT_EQ(2000, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ((size_t)1, F.ndisc);                           /* never open: no on_disconnect */
    /* HANDSHAKE -> refused for now (503) -> WAITING */
    fx_advance(2000);
    wsch_client_transport_open(F.c);
    {
        char refused[] = "HTTP/1.1 503 Service Unavailable\r\n\r\n";
        ASSERT_EQ(WSCH_ERR_STATUS, wsch_client_feed(F.c, refused, sizeof refused - 1));
    }
    ASSERT(wsch_client_conn(F.c) == NULL);                   /* the refusal ended the link */
    ASSERT_EQ(WSCH_ERR_STATUS, F.errors[F.nerr - 1]);
    ASSERT_EQ(503, wsch_client_http_status(F.c));
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, wsch_client_last_close_code(F.c));   /* no close frame existed */
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(4000, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(3u, wsch_client_attempts(F.c));   /* the open link held less than min_uptime_ms: it counts */
    ASSERT_EQ((size_t)0, F.nstop);                           /* retrying: not stopped */
    CHECK_CALL(fx_check_close_once());
    PASS();
}

/* HTTP 401 or 403 at the handshake: the same token will not do better. */
TEST handshake_refused_401_stops(void) {
    static const char *answers[2] = {"HTTP/1.1 401 Unauthorized\r\n\r\n", "HTTP/1.1 403 Forbidden\r\n\r\n"};
    int i;
    for (i = 0; i < 2; i++) {
        char buf[64];
        wsch_client_desc d = fx_desc();
        ASSERT_EQ(WSCH_OK, fx_start(&d));
        wsch_client_connect(F.c);
        wsch_client_transport_open(F.c);
        strcpy(buf, answers[i]);
        ASSERT_EQ(WSCH_ERR_STATUS, wsch_client_feed(F.c, buf, strlen(buf)));
        ASSERT(wsch_client_conn(F.c) == NULL);
        /* the refusal is reported as what it was: an HTTP status, kept for the caller */
        ASSERT_EQ(WSCH_ERR_STATUS, F.errors[F.nerr - 1]);
        ASSERT_EQ(i == 0 ? 401 : 403, wsch_client_http_status(F.c));
        ASSERT_EQ(WSCH_CLOSE_ABNORMAL, wsch_client_last_close_code(F.c));
        ASSERT_EQ(WSCH_STOP_REFUSED, wsch_client_stop_reason(F.c));
        ASSERT_EQ(-1, wsch_client_next_retry_ms(F.c));
        ASSERT_EQ((size_t)1, F.nstop);
        ASSERT_EQ(WSCH_STOP_REFUSED, F.stops[0]);
        fx_advance(60000);
        ASSERT_EQ(1u, F.connects);
        ASSERT_EQ((size_t)1, F.nstop);
        CHECK_CALL(fx_check_close_once());
        fx_teardown(NULL);
    }
    PASS();
}

TEST handshake_timeout_retries(void) {
    wsch_client_desc d = fx_desc();
    d.limits.handshake_timeout_ms = 500;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    wsch_client_transport_open(F.c);
    ASSERT_EQ(500u, F.delay[WSCH_TIMER_HANDSHAKE]);
    fx_advance(499);
    ASSERT(wsch_client_conn(F.c) != NULL);
    ASSERT_EQ(0u, F.closes);
    fx_advance(1);
    ASSERT(wsch_client_conn(F.c) == NULL);
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(1000, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(WSCH_ERR_TIMEOUT, F.errors[F.nerr - 1]);
    ASSERT_EQ(1u, F.closes);                            /* exactly once, by the library */
    wsch_client_transport_closed(F.c);                  /* a late report: nothing to close twice */
    CHECK_CALL(fx_check_close_once());
    PASS();
}

TEST backoff_exact_without_jitter(void) {
    /* the default 10 tries: the first connect and 9 retries, 9 waits */
    static const int64_t expect[9] = {1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000};
    wsch_client_desc d = fx_desc();
    int i;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    for (i = 0; i < 9; i++) {
        wsch_client_transport_failed(F.c);
        ASSERT_EQ_FMT((long long)expect[i], (long long)wsch_client_next_retry_ms(F.c), "%lld");
        ASSERT_EQ((uint32_t)expect[i], F.delay[WSCH_CLIENT_TIMER_RETRY]);
        ASSERT_EQ((unsigned)(i + 1), F.connects);
        fx_advance((uint64_t)expect[i] - 1);
        ASSERT_EQ((unsigned)(i + 1), F.connects);
        fx_advance(1);
        ASSERT_EQ((unsigned)(i + 2), F.connects);
    }
    /* the 10th try (9th retry) fails too: stop */
    wsch_client_transport_failed(F.c);
    ASSERT_EQ(WSCH_STOP_MAX_ATTEMPTS, wsch_client_stop_reason(F.c));
    ASSERT_EQ(-1, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(0, fx_armed_count());
    fx_advance(3600000);
    ASSERT_EQ(10u, F.connects);
    /* an explicit connect starts over */
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT_EQ(11u, F.connects);
    ASSERT_EQ(0u, wsch_client_attempts(F.c));
    ASSERT_EQ(WSCH_STOP_NONE, wsch_client_stop_reason(F.c));
    wsch_client_transport_failed(F.c);
    ASSERT_EQ(1000, wsch_client_next_retry_ms(F.c));
    PASS();
}

TEST backoff_custom_and_max_attempts(void) {
    static const uint32_t expect[3] = {250, 500, 1000};
    wsch_client_desc d = fx_desc();
    int i;
    d.backoff_base_ms = 250;
    d.backoff_max_ms = 1000;
    d.max_attempts = 3;                 /* 3 tries: the first and 2 retries */
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    for (i = 0; i < 2; i++) {
        wsch_client_transport_failed(F.c);
        ASSERT_EQ(WSCH_STOP_NONE, wsch_client_stop_reason(F.c));
        ASSERT_EQ(expect[i], F.delay[WSCH_CLIENT_TIMER_RETRY]);
        ASSERT_EQ((uint32_t)(i + 1), wsch_client_attempts(F.c));
        fx_advance(expect[i]);
    }
    ASSERT_EQ(3u, F.connects);
    F.nstatus = 0;
    wsch_client_transport_failed(F.c);
    ASSERT_EQ(WSCH_STOP_MAX_ATTEMPTS, wsch_client_stop_reason(F.c));
    ASSERT_EQ(3u, wsch_client_attempts(F.c));
    ASSERT_EQ((size_t)1, F.nstatus);
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, F.statuses[0]);
    ASSERT_EQ((size_t)1, F.nstop);
    ASSERT_EQ(WSCH_STOP_MAX_ATTEMPTS, F.stops[0]);
    fx_advance(3600000);
    ASSERT_EQ(3u, F.connects);
    CHECK_CALL(fx_check_close_once());
    fx_teardown(NULL);

    /* max_attempts 1: the first try only, no retry at all */
    d.max_attempts = 1;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    wsch_client_transport_failed(F.c);
    ASSERT_EQ(WSCH_STOP_MAX_ATTEMPTS, wsch_client_stop_reason(F.c));
    ASSERT_EQ(1u, wsch_client_attempts(F.c));
    ASSERT_EQ(0, fx_armed_count());
    ASSERT_EQ((size_t)1, F.nstop);
    fx_teardown(NULL);

    /* forever: well past ten retries, pinned at the cap */
    d.max_attempts = WSCH_CLIENT_FOREVER;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    for (i = 0; i < 100; i++) {
        wsch_client_transport_failed(F.c);
        ASSERT_EQ(i < 2 ? expect[i] : 1000u, F.delay[WSCH_CLIENT_TIMER_RETRY]);
        fx_advance(F.delay[WSCH_CLIENT_TIMER_RETRY]);
    }
    ASSERT_EQ(101u, F.connects);
    ASSERT_EQ(100u, wsch_client_attempts(F.c));
    ASSERT_EQ(WSCH_STOP_NONE, wsch_client_stop_reason(F.c));
    ASSERT_EQ((size_t)0, F.nstop);
    PASS();
}

TEST jitter_bounds(void) {
    wsch_client_desc d = fx_desc();
    uint32_t lo[40], hi[40];
    int i;
    d.no_jitter = 0;
    d.max_attempts = WSCH_CLIENT_FOREVER;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    for (i = 0; i < 40; i++) {
        lo[i] = 0xFFFFFFFFu;
        hi[i] = 0;
    }
    F.auto_fail = 0;
    wsch_client_connect(F.c);
    /* 40 retries per round, 25 rounds: delays must stay in [d/2, d] and spread */
    {
        int round;
        for (round = 0; round < 25; round++) {
            for (i = 0; i < 40; i++) {
                uint64_t full = (i < 32) ? ((uint64_t)1000 << i) : 30000;
                uint32_t got;
                if (full > 30000) full = 30000;
                wsch_client_transport_failed(F.c);
                got = F.delay[WSCH_CLIENT_TIMER_RETRY];
                ASSERT(got >= full / 2 && got <= full);
                ASSERT_EQ((int64_t)got, wsch_client_next_retry_ms(F.c));
                if (got < lo[i]) lo[i] = got;
                if (got > hi[i]) hi[i] = got;
                fx_advance(got);
            }
            wsch_client_disconnect(F.c);
            wsch_client_connect(F.c);
        }
    }
    /* at the cap, 25 draws must cover most of [15000, 30000] */
    ASSERT(lo[39] < 18000);
    ASSERT(hi[39] > 27000);
    PASS();
}

TEST jitter_exact_extremes(void) {
    wsch_client_desc d = fx_desc();
    d.no_jitter = 0;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    F.rng_mode = 1;
    F.rng_byte = 0;                       /* r = 0: the full delay */
    wsch_client_connect(F.c);
    wsch_client_transport_failed(F.c);
    ASSERT_EQ(1000u, F.delay[WSCH_CLIENT_TIMER_RETRY]);
    fx_advance(1000);
    /* r = 2^64-1: 2^64-1 mod 1001 = 15 (2^64 = 16 mod 1001, as 2^10 = 23 and
       23^6 * 2^4 reduce to 16), so 2000 - 15 */
    F.rng_byte = 0xFF;
    wsch_client_transport_failed(F.c);
    ASSERT_EQ(1985u, F.delay[WSCH_CLIENT_TIMER_RETRY]);
    PASS();
}

TEST counter_resets_after_open(void) {
    wsch_client_desc d = fx_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    wsch_client_transport_failed(F.c);
    fx_advance(1000);
    wsch_client_transport_failed(F.c);
    fx_advance(2000);
    wsch_client_transport_failed(F.c);
    ASSERT_EQ(3u, wsch_client_attempts(F.c));
    ASSERT_EQ(4000, wsch_client_next_retry_ms(F.c));
    fx_advance(4000);
    ASSERT(fx_open());
    ASSERT_EQ(3u, wsch_client_attempts(F.c));         /* not yet: the link must hold first */
    fx_advance(WSCH_CLIENT_DEFAULT_MIN_UPTIME_MS);
    fx_srv_close(1001, "restart");
    ASSERT_EQ(1001, F.disc_codes[0]);
    ASSERT_STR_EQ("restart", F.disc_reason);
    ASSERT_EQ(0u, wsch_client_attempts(F.c));         /* it held: counting starts afresh */
    ASSERT_EQ(1000, wsch_client_next_retry_ms(F.c));
    PASS();
}

/* A server that answers 101 and closes at once (or fails the link with a
   bad frame) must not be hammered every backoff_base_ms: a link shorter
   than min_uptime_ms counts as a failed try, so the waits grow and
   max_attempts ends it. (Before: the counter reset on every open; the
   waits stayed at 1 s forever.) */
TEST quick_drops_after_open_back_off(void) {
    static const uint32_t waits[4] = {1000, 2000, 4000, 8000};
    wsch_client_desc d = fx_desc();
    int i;
    d.no_jitter = 1;
    d.max_attempts = 5;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    for (i = 0; i < 4; i++) {
        ASSERT(fx_open());
        fx_advance(100);
        fx_srv_close(1011, "go away");
        ASSERT_EQ((uint32_t)(i + 1), wsch_client_attempts(F.c));
        ASSERT_EQ(waits[i], F.delay[WSCH_CLIENT_TIMER_RETRY]);
        fx_advance(waits[i]);
    }
    ASSERT(fx_open());
    fx_srv_close(1011, "go away");
    ASSERT_EQ(WSCH_STOP_MAX_ATTEMPTS, wsch_client_stop_reason(F.c));
    ASSERT_EQ((size_t)5, F.ndisc);                    /* each link was announced and ended */
    CHECK_CALL(fx_check_close_once());
    PASS();
}

/* 429 or 503 with Retry-After: the client waits what the server asked,
   even past the backoff cap; other statuses and the HTTP-date form do not
   count. (Before: ignored, retried after the 1 s backoff.) */
TEST retry_after_is_honoured(void) {
    static const struct { const char *answer; int64_t wait; } cases[] = {
        {"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\n\r\n", 30000},
        {"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 120\r\n\r\n", 120000},   /* past the 30 s cap */
        {"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\n\r\n", 1000},     /* the backoff is longer */
        {"HTTP/1.1 500 Internal Server Error\r\nRetry-After: 30\r\n\r\n", 1000},  /* not 429/503 */
        {"HTTP/1.1 503 Service Unavailable\r\nRetry-After: Fri, 31 Dec 1999 23:59:59 GMT\r\n\r\n", 1000},
        {"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 99999999999\r\n\r\n", 86400000},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[160];
        wsch_client_desc d = fx_desc();
        d.no_jitter = 1;
        ASSERT_EQ(WSCH_OK, fx_start(&d));
        wsch_client_connect(F.c);
        wsch_client_transport_open(F.c);
        strcpy(buf, cases[i].answer);
        ASSERT_EQ(WSCH_ERR_STATUS, wsch_client_feed(F.c, buf, strlen(buf)));
        ASSERT_EQ(cases[i].wait, wsch_client_next_retry_ms(F.c));
        fx_advance((uint64_t)cases[i].wait - 1);
        ASSERT_EQ(1u, F.connects);
        fx_advance(1);
        ASSERT_EQ(2u, F.connects);                     /* and then it tries again */
        fx_teardown(NULL);
    }
    PASS();
}

static enum greatest_test_res check_terminal(int code, const uint16_t *extra, size_t n) {
    wsch_client_desc d = fx_desc();
    char tail[32];
    d.terminal_codes = extra;
    d.num_terminal_codes = n;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    fx_srv_close(code, "no");
    ASSERT_EQ((size_t)1, F.ndisc);
    ASSERT_EQ(code, F.disc_codes[0]);
    ASSERT_EQ(code, wsch_client_last_close_code(F.c));
    ASSERT_EQ(WSCH_STOP_TERMINAL_CODE, wsch_client_stop_reason(F.c));
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(-1, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(0, fx_armed_count());
    /* on_stop once, the last event of the step, after on_disconnect */
    ASSERT_EQ((size_t)1, F.nstop);
    ASSERT_EQ(WSCH_STOP_TERMINAL_CODE, F.stops[0]);
    snprintf(tail, sizeof tail, "D%d;P%d;", code, (int)WSCH_STOP_TERMINAL_CODE);
    ASSERT_STR_EQ(tail, fx_log_tail(strlen(tail)));
    fx_advance(600000);
    ASSERT_EQ(1u, F.connects);
    ASSERT_EQ((size_t)1, F.nstop);
    CHECK_CALL(fx_check_close_once());
    fx_teardown(NULL);
    PASS();
}

TEST terminal_close_codes(void) {
    static const uint16_t extra[2] = {4403, 4999};
    CHECK_CALL(check_terminal(4001, NULL, 0));
    CHECK_CALL(check_terminal(1008, NULL, 0));
    CHECK_CALL(check_terminal(4403, extra, 2));
    CHECK_CALL(check_terminal(4999, extra, 2));
    /* a code outside the set retries */
    {
        wsch_client_desc d = fx_desc();
        ASSERT_EQ(WSCH_OK, fx_start(&d));
        wsch_client_connect(F.c);
        ASSERT(fx_open());
        fx_srv_close(4403, "no");
        ASSERT_EQ(WSCH_STOP_NONE, wsch_client_stop_reason(F.c));
        ASSERT_EQ(1000, wsch_client_next_retry_ms(F.c));
        ASSERT_EQ((size_t)0, F.nstop);
    }
    PASS();
}

TEST disconnect_mid_retry(void) {
    wsch_client_desc d = fx_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    wsch_client_transport_failed(F.c);
    ASSERT(F.armed[WSCH_CLIENT_TIMER_RETRY]);
    ASSERT_EQ((size_t)0, F.nstop);
    ASSERT_EQ(WSCH_OK, wsch_client_disconnect(F.c));
    ASSERT_EQ(0, fx_armed_count());
    ASSERT_EQ(WSCH_STOP_USER, wsch_client_stop_reason(F.c));
    ASSERT_EQ(-1, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ((size_t)1, F.nstop);                     /* no open link: on_stop at once */
    ASSERT_EQ(WSCH_STOP_USER, F.stops[0]);
    /* a late fire of the cancelled timer is ignored too */
    wsch_client_timer_fired(F.c, WSCH_CLIENT_TIMER_RETRY);
    fx_advance(120000);
    ASSERT_EQ(1u, F.connects);
    ASSERT_EQ(WSCH_OK, wsch_client_disconnect(F.c));   /* again: harmless */
    ASSERT_EQ((size_t)1, F.nstop);                     /* and no second on_stop */
    CHECK_CALL(fx_check_close_once());
    PASS();
}

TEST disconnect_while_connecting_and_open(void) {
    wsch_client_desc d = fx_desc();
    char buf[256];
    size_t len = 0;
    int op = 0;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    /* CONNECTING: the pending transport is abandoned through close() */
    wsch_client_connect(F.c);
    wsch_client_disconnect(F.c);
    ASSERT_EQ(1u, F.closes);
    ASSERT_EQ((size_t)1, F.nstop);                     /* no open link: on_stop at once */
    ASSERT_EQ(WSCH_STOP_USER, F.stops[0]);
    wsch_client_transport_open(F.c);                   /* late report: ignored */
    ASSERT(wsch_client_conn(F.c) == NULL);
    /* OPEN: close handshake with 1000, status at once, no retry afterwards */
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    fx_drain();
    F.nstatus = 0;
    wsch_client_disconnect(F.c);
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ((size_t)1, F.nstatus);
    ASSERT_FALSE(F.armed[WSCH_CLIENT_TIMER_HEARTBEAT]);
    ASSERT_FALSE(F.armed[WSCH_CLIENT_TIMER_PONG]);
    ASSERT(fx_next_frame(&op, buf, sizeof buf, &len));
    ASSERT_EQ(WSCH_OP_CLOSE, op);
    ASSERT(len >= 2);
    ASSERT_EQ(1000, ((unsigned char)buf[0] << 8) | (unsigned char)buf[1]);
    ASSERT_EQ((size_t)1, F.nstop);                     /* the close handshake is still running */
    fx_srv_close(1000, "");
    ASSERT(wsch_client_conn(F.c) == NULL);
    ASSERT_EQ(0, fx_armed_count());
    ASSERT_EQ(WSCH_STOP_USER, wsch_client_stop_reason(F.c));
    ASSERT_EQ((size_t)2, F.nstop);
    ASSERT_EQ(WSCH_STOP_USER, F.stops[1]);
    fx_advance(600000);
    ASSERT_EQ(2u, F.connects);
    CHECK_CALL(fx_check_close_once());
    PASS();
}

TEST heartbeat_app_timing(void) {
    wsch_client_desc d = fx_desc();
    hrec r;
    memset(&r, 0, sizeof r);
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_on(F.c, "*", h_b, &r, NULL);
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    fx_drain();
    fx_advance(29999);
    ASSERT_STR_EQ("", fx_next_text());
    fx_advance(1);
    ASSERT_STR_EQ("{\"type\":\"ping\"}", fx_next_text());
    ASSERT(F.armed[WSCH_CLIENT_TIMER_PONG]);
    ASSERT_EQ(10000u, F.delay[WSCH_CLIENT_TIMER_PONG]);
    fx_advance(3000);
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"pong\"}"));
    ASSERT_STR_EQ("", r.log);                          /* swallowed */
    fx_advance(7000);                                  /* pong deadline passes: alive */
    ASSERT_EQ(WSCH_STATUS_CONNECTED, wsch_client_status(F.c));
    fx_advance(19999);
    ASSERT_STR_EQ("", fx_next_text());
    fx_advance(1);
    ASSERT_STR_EQ("{\"type\":\"ping\"}", fx_next_text());
    PASS();
}

TEST heartbeat_protocol_and_off(void) {
    wsch_client_desc d = fx_desc();
    char buf[256];
    size_t len = 0;
    int op = 0;
    d.heartbeat = WSCH_HEARTBEAT_PROTOCOL;
    d.heartbeat_interval_ms = 5000;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    fx_drain();
    fx_advance(5000);
    ASSERT(fx_next_frame(&op, buf, sizeof buf, &len));
    ASSERT_EQ(WSCH_OP_PING, op);
    ASSERT_FALSE(fx_next_frame(&op, buf, sizeof buf, &len));
    fx_srv_frame(WSCH_OP_PONG, "", 0);
    fx_advance(10000);
    ASSERT_EQ(WSCH_STATUS_CONNECTED, wsch_client_status(F.c));
    fx_teardown(NULL);

    d.heartbeat = WSCH_HEARTBEAT_OFF;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    fx_drain();
    ASSERT_FALSE(F.armed[WSCH_CLIENT_TIMER_HEARTBEAT]);
    fx_advance(3600000);
    ASSERT_EQ(F.out_read, F.out_len);
    ASSERT_EQ(WSCH_STATUS_CONNECTED, wsch_client_status(F.c));
    PASS();
}

TEST dead_peer_timeout(void) {
    wsch_client_desc d = fx_desc();
    unsigned closes;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    closes = F.closes;
    fx_advance(30000);                                 /* ping sent */
    fx_advance(9999);
    ASSERT_EQ(WSCH_STATUS_CONNECTED, wsch_client_status(F.c));
    fx_advance(1);                                     /* silence for 10 s: dead */
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(closes + 1, F.closes);
    ASSERT_EQ((size_t)1, F.ndisc);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, F.disc_codes[0]);
    ASSERT_STR_EQ("ping timeout", F.disc_reason);
    ASSERT_EQ(WSCH_ERR_TIMEOUT, F.errors[F.nerr - 1]);
    ASSERT_EQ(1000, wsch_client_next_retry_ms(F.c));
    ASSERT(wsch_client_conn(F.c) == NULL);
    /* only the retry timer is left */
    ASSERT_EQ(1, fx_armed_count());
    CHECK_CALL(fx_check_close_once());
    fx_advance(1000);
    ASSERT_EQ(2u, F.connects);
    PASS();
}

TEST any_inbound_byte_counts_as_alive(void) {
    wsch_client_desc d = fx_desc();
    d.pong_timeout_ms = 40000;      /* longer than the interval: one deadline, kept */
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    fx_advance(30000);              /* ping 1, deadline at +40000 */
    fx_advance(20000);
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"news\",\"payload\":1}"));
    fx_advance(30000);              /* ping 2 at 60000; deadline 70000 passes: alive */
    ASSERT_EQ(WSCH_STATUS_CONNECTED, wsch_client_status(F.c));
    fx_advance(49999);              /* ping 3 at 90000 starts a new deadline, 130000 */
    ASSERT_EQ(WSCH_STATUS_CONNECTED, wsch_client_status(F.c));
    fx_advance(1);                  /* silence since ping 3: dead */
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    PASS();
}

TEST resubscribe_in_order(void) {
    wsch_client_desc d = fx_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(F.c, "news"));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(F.c, "alerts"));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(F.c, "q\"uote"));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(F.c, "news"));      /* no duplicate */
    ASSERT_EQ(WSCH_ERR_ARG, wsch_client_subscribe(F.c, ""));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_client_subscribe(F.c, "\xff"));
    ASSERT_EQ((size_t)3, wsch_client_subscription_count(F.c));
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"alerts\"}}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"q\\\"uote\"}}", fx_next_text());
    ASSERT_STR_EQ("", fx_next_text());
    ASSERT_EQ(WSCH_OK, wsch_client_unsubscribe(F.c, "alerts"));
    ASSERT_STR_EQ("{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"alerts\"}}", fx_next_text());
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, wsch_client_unsubscribe(F.c, "alerts"));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(F.c, "late"));
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"late\"}}", fx_next_text());
    /* reconnect: the set is replayed in subscription order */
    wsch_client_transport_closed(F.c);
    fx_drain();
    fx_advance(1000);
    ASSERT(fx_open());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"q\\\"uote\"}}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"late\"}}", fx_next_text());
    ASSERT_STR_EQ("", fx_next_text());
    ASSERT_STR_EQ("q\"uote", wsch_client_subscription(F.c, 1));
    ASSERT_EQ(NULL, wsch_client_subscription(F.c, 3));
    PASS();
}

TEST offline_queue_flush_order(void) {
    wsch_client_desc d = fx_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_subscribe(F.c, "news");
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "chat", "{\"n\":1}", WSCH_CSTR));
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "chat", "{\"n\":2}", WSCH_CSTR));
    ASSERT_EQ(WSCH_OK, wsch_client_send_text(F.c, "{\"type\":\"raw\"}", 14));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_client_send(F.c, "chat", "{bad", WSCH_CSTR));
    ASSERT_EQ((size_t)3, wsch_client_queued_count(F.c));
    ASSERT_EQ((size_t)(33 + 33 + 14), wsch_client_queued_bytes(F.c));  /* {"type":"chat","payload":{"n":1}} is 33 */
    wsch_client_connect(F.c);
    wsch_client_transport_open(F.c);
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "chat", "{\"n\":3}", WSCH_CSTR));   /* HANDSHAKE: queued too */
    ASSERT(fx_accept());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":{\"n\":1}}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":{\"n\":2}}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"raw\"}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":{\"n\":3}}", fx_next_text());
    ASSERT_STR_EQ("", fx_next_text());
    ASSERT_EQ((size_t)0, wsch_client_queued_count(F.c));
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "chat", NULL, 0));         /* open: straight out */
    ASSERT_STR_EQ("{\"type\":\"chat\"}", fx_next_text());
    PASS();
}

TEST offline_queue_limits(void) {
    wsch_client_desc d = fx_desc();
    d.queue_max_count = 2;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "a", NULL, 0));
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "b", NULL, 0));
    ASSERT_EQ(WSCH_ERR_QUEUE_FULL, wsch_client_send(F.c, "c", NULL, 0));
    ASSERT_EQ((size_t)2, wsch_client_queued_count(F.c));
    fx_teardown(NULL);

    d = fx_desc();
    d.queue_max_bytes = 30;             /* {"type":"a"} is 12 bytes: two fit, not three */
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "a", NULL, 0));
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "b", NULL, 0));
    ASSERT_EQ(WSCH_ERR_QUEUE_FULL, wsch_client_send(F.c, "c", NULL, 0));
    ASSERT_EQ((size_t)24, wsch_client_queued_bytes(F.c));
    ASSERT_EQ(WSCH_OK, wsch_client_send_text(F.c, "123456", 6));      /* exactly 30 */
    ASSERT_EQ(WSCH_ERR_QUEUE_FULL, wsch_client_send_text(F.c, "1", 1));
    fx_teardown(NULL);

    d = fx_desc();
    d.no_offline_queue = 1;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_ERR_STATE, wsch_client_send(F.c, "a", NULL, 0));
    ASSERT_EQ((size_t)0, wsch_client_queued_count(F.c));
    PASS();
}

TEST queue_keeps_order_under_backpressure(void) {
    /* The connection refuses part of the flush (its outbound limit): what it
       refused stays queued, later sends line up behind it, and writable()
       delivers everything in order. */
    wsch_client_desc d = fx_desc();
    static const char p30[] = "\"xxxxxxxxxxxxxxxxxxxxxxxxxxx\"";
    char want[64];
    int i;
    d.limits.max_outbound_bytes = 64 + 4 * sizeof(void *);   /* one frame and its bookkeeping */
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "m1", p30, WSCH_CSTR));
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "m2", p30, WSCH_CSTR));
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "m3", p30, WSCH_CSTR));
    wsch_client_connect(F.c);
    wsch_client_transport_open(F.c);
    F.send_cap = 1;                     /* the socket takes one byte per write */
    ASSERT(fx_accept());
    ASSERT(wsch_client_queued_count(F.c) >= 1);
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "m4", p30, WSCH_CSTR));
    ASSERT(wsch_client_queued_count(F.c) >= 2);
    F.send_cap = 0;
    for (i = 0; i < 4 && wsch_client_queued_count(F.c); i++) wsch_client_writable(F.c);
    ASSERT_EQ((size_t)0, wsch_client_queued_count(F.c));
    for (i = 1; i <= 4; i++) {
        snprintf(want, sizeof want, "{\"type\":\"m%d\",\"payload\":%s}", i, p30);
        ASSERT_STR_EQ(want, fx_next_text());
    }
    PASS();
}

TEST handlers_by_type_and_wildcard(void) {
    wsch_client_desc d = fx_desc();
    hrec r;
    wsch_client_handler ha, hb;
    memset(&r, 0, sizeof r);
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_on(F.c, "news", h_a, &r, &ha));
    ASSERT_EQ(WSCH_OK, wsch_client_on(F.c, "*", h_b, &r, &hb));
    ASSERT(ha.id != 0 && hb.id != 0 && ha.id != hb.id);
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    fx_srv_text("{\"type\":\"news\",\"payload\":{\"x\":1}}");
    fx_srv_text("{\"payload\":2,\"type\":\"other\"}");
    fx_srv_text("{\"type\":\"n\\u0065ws\"}");
    ASSERT_STR_EQ("A:news:{\"x\":1};B:news:{\"x\":1};B:other:2;A:news:;B:news:;", r.log);
    /* invalid envelopes are reported, not dispatched */
    F.nerr = 0;
    fx_srv_text("{\"type\":1}");
    fx_srv_text("[1,2");
    ASSERT_EQ((size_t)2, F.nerr);
    ASSERT_EQ(WSCH_ERR_NO_TYPE, F.errors[0]);
    ASSERT_EQ(WSCH_ERR_JSON, F.errors[1]);
    ASSERT_EQ(WSCH_OK, wsch_client_off(F.c, ha));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_client_off(F.c, ha));
    {
        wsch_client_handler none;
        none.id = 0;
        ASSERT_EQ(WSCH_ERR_STALE, wsch_client_off(F.c, none));
        none.id = 999;
        ASSERT_EQ(WSCH_ERR_STALE, wsch_client_off(F.c, none));
    }
    ASSERT_EQ(WSCH_ERR_ARG, wsch_client_on(F.c, NULL, h_a, &r, NULL));
    {
        char big[WSCH_ENVELOPE_TYPE_MAX + 2];
        memset(big, 'x', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_client_on(F.c, big, h_a, &r, NULL));
    }
    PASS();
}

TEST handler_removal_during_dispatch(void) {
    wsch_client_desc d = fx_desc();
    hrec r;
    memset(&r, 0, sizeof r);
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_on(F.c, "t", h_a, &r, &r.self));
    ASSERT_EQ(WSCH_OK, wsch_client_on(F.c, "t", h_b, &r, &r.other));
    ASSERT_EQ(WSCH_OK, wsch_client_on(F.c, "t", h_c, &r, NULL));
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    /* A removes B (not called) and itself (called this once) */
    r.remove_other = 1;
    r.remove_self = 1;
    r.add_new = 1;
    fx_srv_text("{\"type\":\"t\",\"payload\":1}");
    ASSERT_STR_EQ("A:t:1;C:t:1;", r.log);
    ASSERT_EQ(WSCH_ERR_STALE, wsch_client_off(F.c, r.self));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_client_off(F.c, r.other));
    r.log[0] = '\0';
    fx_srv_text("{\"type\":\"t\",\"payload\":2}");
    /* the handler added during the first dispatch sees only the second */
    ASSERT_STR_EQ("C:t:2;N:t:2;", r.log);
    ASSERT_EQ(WSCH_OK, wsch_client_off(F.c, r.third));
    PASS();
}

TEST handler_registers_many_during_dispatch(void) {
    /* growing the handler array while a dispatch walks it */
    wsch_client_desc d = fx_desc();
    hrec r;
    int i;
    memset(&r, 0, sizeof r);
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    for (i = 0; i < 7; i++) wsch_client_on(F.c, "x", h_b, &r, NULL);
    wsch_client_on(F.c, "t", h_a, &r, NULL);
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    r.add_new = 1;
    for (i = 0; i < 20; i++) {
        r.add_new = 1;
        fx_srv_text("{\"type\":\"t\"}");
    }
    ASSERT_EQ(20, r.calls);
    PASS();
}

TEST reentrant_calls_from_handler(void) {
    wsch_client_desc d = fx_desc();
    hrec r;
    memset(&r, 0, sizeof r);
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_on(F.c, "t", h_a, &r, NULL);
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    fx_drain();
    r.do_send = 1;
    r.do_subscribe = 1;
    fx_srv_text("{\"type\":\"t\",\"payload\":0}");
    ASSERT_STR_EQ("{\"type\":\"echo\",\"payload\":1}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"late\"}}", fx_next_text());
    /* disconnect from inside a handler: no retry afterwards */
    r.do_send = r.do_subscribe = 0;
    r.do_disconnect = 1;
    fx_srv_text("{\"type\":\"t\"}");
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(WSCH_STOP_USER, wsch_client_stop_reason(F.c));
    fx_srv_close(1000, "");
    fx_advance(600000);
    ASSERT_EQ(1u, F.connects);
    PASS();
}

TEST destroy_from_inside_callbacks(void) {
    wsch_client_desc d = fx_desc();
    hrec r;
    memset(&r, 0, sizeof r);
    /* from a handler, in the middle of a feed */
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_on(F.c, "t", h_a, &r, NULL);
    wsch_client_on(F.c, "t", h_b, &r, NULL);
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    r.do_destroy = 1;
    fx_srv_text("{\"type\":\"t\"}");
    ASSERT_EQ(NULL, F.c);
    ASSERT_STR_EQ("A:t:;", r.log);                   /* B never ran */
    ASSERT_EQ((size_t)0, A.live_blocks);
    ASSERT_EQ(0, fx_armed_count());
    /* from on_status while connecting */
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    F.destroy_on_status = WSCH_STATUS_CONNECTING + 1;
    wsch_client_connect(F.c);
    ASSERT_EQ(NULL, F.c);
    ASSERT_EQ(0u, F.connects);
    ASSERT_EQ((size_t)0, A.live_blocks);
    PASS();
}

TEST status_callback_reentry(void) {
    wsch_client_desc d = fx_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    /* disconnect() while being told "connecting": connect() is never called */
    F.disconnect_on_status = WSCH_STATUS_CONNECTING + 1;
    wsch_client_connect(F.c);
    ASSERT_EQ(0u, F.connects);
    ASSERT_EQ(0u, F.closes);                            /* no connect(), nothing to close */
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ((size_t)2, F.nstatus);
    ASSERT_EQ(WSCH_STATUS_CONNECTING, F.statuses[0]);
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, F.statuses[1]);
    /* connect() from on_disconnect: the retry wait is skipped, no stale status */
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    F.nstatus = 0;
    F.connect_in_disconnect = 1;
    wsch_client_transport_closed(F.c);
    ASSERT_EQ(WSCH_STATUS_CONNECTING, wsch_client_status(F.c));
    ASSERT_EQ(-1, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(WSCH_STATUS_CONNECTING, F.statuses[F.nstatus - 1]);
    ASSERT_FALSE(F.armed[WSCH_CLIENT_TIMER_RETRY]);
    /* synchronous transport results from inside connect() */
    fx_teardown(NULL);
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    F.auto_open = 1;
    wsch_client_connect(F.c);
    ASSERT(wsch_client_conn(F.c) != NULL);
    ASSERT(fx_accept());
    ASSERT_EQ(WSCH_STATUS_CONNECTED, wsch_client_status(F.c));
    fx_teardown(NULL);
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    F.auto_fail = 1;
    wsch_client_connect(F.c);
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(1000, wsch_client_next_retry_ms(F.c));
    CHECK_CALL(fx_check_close_once());                  /* the failed connect is closed too */
    PASS();
}

TEST transport_closed_from_inside_send(void) {
    /* while the opening request is written, and while open */
    wsch_client_desc d = fx_desc();
    unsigned closes;
    int r;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    F.close_in_send = 1;
    closes = F.closes;
    wsch_client_transport_open(F.c);
    ASSERT(wsch_client_conn(F.c) == NULL);
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(1000, wsch_client_next_retry_ms(F.c));
    /* the caller reported it closed; the library still hands it back once */
    ASSERT_EQ(closes + 1, F.closes);
    ASSERT_EQ(WSCH_ERR_HANGUP, F.errors[F.nerr - 1]);   /* dropped during the handshake */
    CHECK_CALL(fx_check_close_once());
    ASSERT_EQ(1, fx_armed_count());                     /* only the retry timer */
    fx_advance(1000);
    ASSERT(fx_open());
    F.close_in_send = 1;
    /* the message did not leave and is not queued: the send says so */
    r = wsch_client_send(F.c, "x", NULL, 0);
    ASSERT_EQ_FMT(WSCH_ERR_TRANSPORT, r, "%d");
    ASSERT_EQ((size_t)0, wsch_client_queued_count(F.c));
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ((size_t)1, F.ndisc);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, F.disc_codes[0]);
    CHECK_CALL(fx_check_close_once());
    PASS();
}

TEST destroy_cleans_up_everything(void) {
    wsch_client_desc d = fx_desc();
    unsigned closes;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_subscribe(F.c, "a");
    wsch_client_on(F.c, "*", h_b, NULL, NULL);
    wsch_client_send(F.c, "q", NULL, 0);
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    wsch_client_send(F.c, "q", NULL, 0);
    closes = F.closes;
    ASSERT(A.live_blocks > 0);
    wsch_client_destroy(F.c);
    F.c = NULL;
    ASSERT_EQ(closes + 1, F.closes);
    CHECK_CALL(fx_check_close_once());
    ASSERT_EQ((size_t)0, F.nstop);                     /* destroy runs no event */
    ASSERT_EQ(0, fx_armed_count());
    ASSERT_EQ((size_t)0, A.live_blocks);
    PASS();
}

/* ---- the documented numbers and events of the new API ---- */

/* Every default (only the jitter off): 10 tries -- the first connect and 9
   retries -- waiting 1, 2, 4, 8, 16 s and then the 30 s cap; attempts()
   counts the failed tries; on_stop(MAX_ATTEMPTS) runs once, after the last
   failure's on_error. */
TEST default_ten_tries_then_on_stop(void) {
    static const uint64_t waits[9] = {1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000};
    wsch_client_desc d = fx_desc();
    char tail[32];
    int i;
    ASSERT_EQ(0u, d.backoff_base_ms);
    ASSERT_EQ(0u, d.backoff_max_ms);
    ASSERT_EQ(0u, d.max_attempts);
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(0u, wsch_client_attempts(F.c));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    for (i = 0; i < 10; i++) {
        ASSERT_EQ_FMT((unsigned)(i + 1), F.connects, "%u");
        wsch_client_transport_failed(F.c);
        ASSERT_EQ_FMT((unsigned)(i + 1), (unsigned)wsch_client_attempts(F.c), "%u");
        ASSERT_EQ((size_t)(i + 1), F.nerr);
        ASSERT_EQ(WSCH_ERR_CONNECT, F.errors[i]);
        if (i == 9) break;
        ASSERT_EQ((size_t)0, F.nstop);
        ASSERT_EQ(WSCH_STOP_NONE, wsch_client_stop_reason(F.c));
        ASSERT_EQ_FMT((long long)waits[i], (long long)wsch_client_next_retry_ms(F.c), "%lld");
        fx_advance(waits[i] - 1);
        ASSERT_EQ((unsigned)(i + 1), F.connects);
        fx_advance(1);
    }
    ASSERT_EQ(10u, F.connects);
    for (i = 0; i < 9; i++)
        ASSERT_EQ_FMT((unsigned long long)waits[i], (unsigned long long)(F.connect_at[i + 1] - F.connect_at[i]),
                      "%llu");
    ASSERT_EQ((uint64_t)151000, F.connect_at[9] - F.connect_at[0]);
    ASSERT_EQ(WSCH_STOP_MAX_ATTEMPTS, wsch_client_stop_reason(F.c));
    ASSERT_EQ(10u, wsch_client_attempts(F.c));
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(-1, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(0, fx_armed_count());
    ASSERT_EQ((size_t)1, F.nstop);
    ASSERT_EQ(WSCH_STOP_MAX_ATTEMPTS, F.stops[0]);
    snprintf(tail, sizeof tail, "E%d;P%d;", WSCH_ERR_CONNECT, (int)WSCH_STOP_MAX_ATTEMPTS);
    ASSERT_STR_EQ(tail, fx_log_tail(strlen(tail)));
    fx_advance(3600000);
    ASSERT_EQ(10u, F.connects);
    ASSERT_EQ((size_t)1, F.nstop);
    CHECK_CALL(fx_check_close_once());
    PASS();
}

/* HTTP 401 at the handshake: reported as the status it was, no close frame
   existed (1006, not 1002), the client stops for good at once. */
TEST refused_401_status_and_stop(void) {
    wsch_client_desc d = fx_desc();
    char resp[] = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 0\r\n\r\n";
    char tail[32];
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    wsch_client_transport_open(F.c);
    ASSERT_EQ(0, wsch_client_http_status(F.c));        /* no answer yet */
    ASSERT_EQ(0, wsch_client_last_close_code(F.c));
    ASSERT_EQ(WSCH_ERR_STATUS, wsch_client_feed(F.c, resp, sizeof resp - 1));
    ASSERT_EQ((size_t)1, F.nerr);
    ASSERT_EQ(WSCH_ERR_STATUS, F.errors[0]);
    ASSERT_EQ(401, wsch_client_http_status(F.c));
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, wsch_client_last_close_code(F.c));
    ASSERT_EQ(WSCH_STOP_REFUSED, wsch_client_stop_reason(F.c));
    ASSERT_EQ(1u, wsch_client_attempts(F.c));           /* the refused try counts as failed */
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT(wsch_client_conn(F.c) == NULL);
    ASSERT_EQ((size_t)0, F.ndisc);                     /* it never was open */
    ASSERT_EQ((size_t)1, F.nstop);
    ASSERT_EQ(WSCH_STOP_REFUSED, F.stops[0]);
    snprintf(tail, sizeof tail, "E%d;P%d;", WSCH_ERR_STATUS, (int)WSCH_STOP_REFUSED);
    ASSERT_STR_EQ(tail, fx_log_tail(strlen(tail)));
    /* no retry timer: nothing armed at all */
    ASSERT_FALSE(F.armed[WSCH_CLIENT_TIMER_RETRY]);
    ASSERT_EQ(0, fx_armed_count());
    ASSERT_EQ(-1, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(0u, wsch_client_want(F.c));
    CHECK_CALL(fx_check_close_once());
    fx_advance(3600000);
    ASSERT_EQ(1u, F.connects);
    ASSERT_EQ((size_t)1, F.nstop);
    /* an explicit connect clears the stop */
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT_EQ(WSCH_STOP_NONE, wsch_client_stop_reason(F.c));
    ASSERT_EQ(0u, wsch_client_attempts(F.c));
    ASSERT_EQ(2u, F.connects);
    PASS();
}

/* The peer drops TCP during the opening handshake, before and in the middle
   of its answer: WSCH_ERR_HANGUP, and a retry. */
TEST handshake_eof_is_hangup(void) {
    wsch_client_desc d = fx_desc();
    char part[] = "HTTP/1.1 101 Switching Protocols\r\nUpgr";
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    wsch_client_transport_open(F.c);
    ASSERT(wsch_client_conn(F.c) != NULL);
    wsch_client_transport_closed(F.c);
    ASSERT_EQ((size_t)1, F.nerr);
    ASSERT_EQ(WSCH_ERR_HANGUP, F.errors[0]);
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT(wsch_client_conn(F.c) == NULL);
    ASSERT_EQ(WSCH_STOP_NONE, wsch_client_stop_reason(F.c));
    ASSERT_EQ((size_t)0, F.nstop);
    ASSERT_EQ((size_t)0, F.ndisc);
    ASSERT(F.armed[WSCH_CLIENT_TIMER_RETRY]);
    ASSERT_EQ(1000, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(1u, wsch_client_attempts(F.c));
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, wsch_client_last_close_code(F.c));
    CHECK_CALL(fx_check_close_once());
    /* half an answer, then EOF */
    fx_advance(1000);
    ASSERT_EQ(2u, F.connects);
    wsch_client_transport_open(F.c);
    ASSERT_EQ(WSCH_OK, wsch_client_feed(F.c, part, sizeof part - 1));
    wsch_client_transport_closed(F.c);
    ASSERT_EQ((size_t)2, F.nerr);
    ASSERT_EQ(WSCH_ERR_HANGUP, F.errors[1]);
    ASSERT_EQ(2000, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(2u, wsch_client_attempts(F.c));
    CHECK_CALL(fx_check_close_once());
    fx_advance(2000);
    ASSERT_EQ(3u, F.connects);
    PASS();
}

/* on_stop(USER): for an open link only once its close handshake is over
   (the server's close frame, then its TCP close; or the close timeout), at
   once when there is no open link. */
TEST on_stop_user_after_close_handshake(void) {
    wsch_client_desc d = fx_desc();
    static const unsigned char normal[2] = {0x03, 0xE8};     /* 1000 */
    char tail[32];
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    fx_drain();
    ASSERT_EQ(WSCH_OK, wsch_client_disconnect(F.c));
    ASSERT_EQ(WSCH_STOP_USER, wsch_client_stop_reason(F.c));
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ((size_t)0, F.nstop);                     /* our close frame is out, nothing back yet */
    ASSERT_EQ(0u, F.closes);
    ASSERT_EQ(WSCH_OK, fx_srv_frame(WSCH_OP_CLOSE, normal, sizeof normal));
    ASSERT_EQ((size_t)0, F.nstop);                     /* the server closes TCP first */
    ASSERT_EQ(0u, F.closes);
    wsch_client_transport_closed(F.c);
    ASSERT_EQ((size_t)1, F.nstop);
    ASSERT_EQ(WSCH_STOP_USER, F.stops[0]);
    ASSERT_EQ((size_t)1, F.ndisc);
    ASSERT_EQ(1000, F.disc_codes[0]);
    snprintf(tail, sizeof tail, "D1000;P%d;", (int)WSCH_STOP_USER);
    ASSERT_STR_EQ(tail, fx_log_tail(strlen(tail)));
    ASSERT_EQ(0, fx_armed_count());
    CHECK_CALL(fx_check_close_once());
    fx_advance(600000);
    ASSERT_EQ(1u, F.connects);
    ASSERT_EQ((size_t)1, F.nstop);
    fx_teardown(NULL);

    /* the server never answers: the close timeout ends the handshake */
    d.limits.close_timeout_ms = 500;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    wsch_client_disconnect(F.c);
    fx_advance(499);
    ASSERT_EQ((size_t)0, F.nstop);
    ASSERT_EQ(0u, F.closes);
    fx_advance(1);
    ASSERT_EQ((size_t)1, F.nstop);
    ASSERT_EQ(WSCH_STOP_USER, F.stops[0]);
    ASSERT_EQ((size_t)1, F.ndisc);
    ASSERT(wsch_client_conn(F.c) == NULL);
    CHECK_CALL(fx_check_close_once());
    fx_teardown(NULL);

    /* WAITING: no open link, on_stop before disconnect() returns */
    d = fx_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    wsch_client_transport_failed(F.c);
    ASSERT_EQ((size_t)0, F.nstop);
    wsch_client_disconnect(F.c);
    ASSERT_EQ((size_t)1, F.nstop);
    ASSERT_EQ(WSCH_STOP_USER, F.stops[0]);
    snprintf(tail, sizeof tail, "P%d;", (int)WSCH_STOP_USER);
    ASSERT_STR_EQ(tail, fx_log_tail(strlen(tail)));
    wsch_client_disconnect(F.c);                       /* stopped already: no second on_stop */
    ASSERT_EQ((size_t)1, F.nstop);
    CHECK_CALL(fx_check_close_once());
    fx_teardown(NULL);

    /* connect() while the close handshake runs abandons the old link: its
       on_disconnect comes, but no on_stop, since the client goes on */
    d = fx_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    wsch_client_disconnect(F.c);
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT_EQ((size_t)1, F.ndisc);
    ASSERT_EQ((size_t)0, F.nstop);
    ASSERT_EQ(WSCH_STATUS_CONNECTING, wsch_client_status(F.c));
    ASSERT_EQ(2u, F.connects);
    ASSERT_EQ(1u, F.closes);                           /* the abandoned link's transport... */
    ASSERT_EQ(0u, F.early_connects);                   /* ...before the new connect() */
    ASSERT_EQ(0u, F.stray_closes);
    PASS();
}

/* The link breaks while on_open replays the subscriptions and the offline
   queue (they no longer fit the gathered reply under a small outbound
   limit, so they meet send(), which reports the socket broken): on_connect
   never ran, so no on_disconnect either; the try counts as failed, and the
   channel and the queued message wait for the next link. */
TEST link_lost_during_replay_is_never_announced(void) {
    wsch_client_desc d = fx_desc();
    d.limits.max_outbound_bytes = 64 + 4 * sizeof(void *);   /* one frame and its bookkeeping */
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(F.c, "news"));
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "chat", "{\"text\":\"sent while offline\"}", WSCH_CSTR));
    wsch_client_connect(F.c);
    fx_drain();
    wsch_client_transport_open(F.c);
    F.send_error = 1;                                  /* the request is out; the next send breaks */
    ASSERT_FALSE(fx_accept());
    ASSERT_EQ(0u, F.on_connects);
    ASSERT_EQ((size_t)0, F.ndisc);
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(1u, wsch_client_attempts(F.c));
    ASSERT_EQ(1u, (unsigned)wsch_client_subscription_count(F.c));
    ASSERT_EQ((size_t)1, wsch_client_queued_count(F.c));
    CHECK_CALL(fx_check_close_once());
    /* the next link replays both, and is announced */
    fx_advance(F.delay[WSCH_CLIENT_TIMER_RETRY]);
    ASSERT(fx_open());
    ASSERT_EQ(1u, F.on_connects);
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":{\"text\":\"sent while offline\"}}", fx_next_text());
    ASSERT_EQ((size_t)0, wsch_client_queued_count(F.c));
    PASS();
}

/* One close() for every connect(), on every path a transport can end. */
TEST close_once_per_connect_every_path(void) {
    wsch_client_desc d = fx_desc();
    d.max_attempts = WSCH_CLIENT_FOREVER;
    d.limits.handshake_timeout_ms = 500;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    /* the connect failed */
    wsch_client_connect(F.c);
    wsch_client_transport_failed(F.c);
    ASSERT_EQ(1u, F.closes);
    CHECK_CALL(fx_check_close_once());
    /* the caller saw the pending transport close */
    fx_advance(F.delay[WSCH_CLIENT_TIMER_RETRY]);
    ASSERT_EQ(2u, F.connects);
    ASSERT(F.live);
    wsch_client_transport_closed(F.c);
    CHECK_CALL(fx_check_close_once());
    /* ... during the handshake */
    fx_advance(F.delay[WSCH_CLIENT_TIMER_RETRY]);
    wsch_client_transport_open(F.c);
    wsch_client_transport_closed(F.c);
    CHECK_CALL(fx_check_close_once());
    /* the handshake timed out */
    fx_advance(F.delay[WSCH_CLIENT_TIMER_RETRY]);
    wsch_client_transport_open(F.c);
    fx_advance(500);
    ASSERT_EQ(WSCH_ERR_TIMEOUT, F.errors[F.nerr - 1]);
    CHECK_CALL(fx_check_close_once());
    /* the caller saw the open transport close */
    fx_advance(F.delay[WSCH_CLIENT_TIMER_RETRY]);
    ASSERT(fx_open());
    wsch_client_transport_closed(F.c);
    CHECK_CALL(fx_check_close_once());
    /* dead peer */
    fx_advance(F.delay[WSCH_CLIENT_TIMER_RETRY]);
    ASSERT(fx_open());
    fx_advance(30000 + 10000);
    ASSERT_STR_EQ("ping timeout", F.disc_reason);
    CHECK_CALL(fx_check_close_once());
    /* the server closed */
    fx_advance(F.delay[WSCH_CLIENT_TIMER_RETRY]);
    ASSERT(fx_open());
    fx_srv_close(1001, "bye");
    ASSERT_EQ(1001, F.disc_codes[F.ndisc - 1]);
    CHECK_CALL(fx_check_close_once());
    /* send() reported a broken transport */
    fx_advance(F.delay[WSCH_CLIENT_TIMER_RETRY]);
    ASSERT(fx_open());
    F.send_error = 1;
    ASSERT_EQ(WSCH_ERR_TRANSPORT, wsch_client_send(F.c, "x", NULL, 0));
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(F.c));
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, F.disc_codes[F.ndisc - 1]);
    CHECK_CALL(fx_check_close_once());
    /* disconnect() while connecting */
    fx_advance(F.delay[WSCH_CLIENT_TIMER_RETRY]);
    ASSERT_EQ(WSCH_STATUS_CONNECTING, wsch_client_status(F.c));
    wsch_client_disconnect(F.c);
    CHECK_CALL(fx_check_close_once());
    /* disconnect() while open, the close handshake completed */
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    wsch_client_disconnect(F.c);
    ASSERT(F.live);                                    /* not before the handshake ends */
    fx_srv_close(1000, "");
    CHECK_CALL(fx_check_close_once());
    /* connect() while CLOSING: the old link is closed before the new connect() */
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    wsch_client_disconnect(F.c);
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT_EQ(0u, F.early_connects);
    ASSERT_EQ(F.connects - 1, F.closes);
    /* destroy while open */
    ASSERT(fx_open());
    wsch_client_destroy(F.c);
    F.c = NULL;
    CHECK_CALL(fx_check_close_once());
    ASSERT_EQ((size_t)0, A.live_blocks);
    fx_teardown(NULL);

    /* destroy while connecting, and while waiting (no transport then) */
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    wsch_client_destroy(F.c);
    F.c = NULL;
    ASSERT_EQ(1u, F.closes);
    CHECK_CALL(fx_check_close_once());
    fx_teardown(NULL);
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    wsch_client_transport_failed(F.c);
    wsch_client_destroy(F.c);
    F.c = NULL;
    ASSERT_EQ(1u, F.closes);
    CHECK_CALL(fx_check_close_once());
    PASS();
}

/* wsch_client_want(): what the caller's poll loop waits for. */
TEST want_follows_state(void) {
    wsch_client_desc d = fx_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(0u, wsch_client_want(F.c));                              /* IDLE */
    wsch_client_connect(F.c);
    ASSERT_EQ((unsigned)WSCH_WANT_WRITE, wsch_client_want(F.c));       /* CONNECTING */
    wsch_client_transport_open(F.c);
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_client_want(F.c));        /* request out, answer awaited */
    ASSERT(fx_accept());
    fx_drain();
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_client_want(F.c));        /* OPEN, nothing queued */
    F.send_block = 1;
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "chat", "{\"n\":1}", WSCH_CSTR));
    ASSERT_EQ((unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE), wsch_client_want(F.c));
    ASSERT_STR_EQ("", fx_next_text());
    F.send_block = 0;
    ASSERT_EQ(WSCH_OK, wsch_client_writable(F.c));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_client_want(F.c));
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":{\"n\":1}}", fx_next_text());
    wsch_client_transport_closed(F.c);
    ASSERT_EQ(1000, wsch_client_next_retry_ms(F.c));
    ASSERT_EQ(0u, wsch_client_want(F.c));                              /* WAITING */
    /* the opening request blocked in the socket */
    fx_advance(1000);
    ASSERT_EQ((unsigned)WSCH_WANT_WRITE, wsch_client_want(F.c));
    F.send_block = 1;
    wsch_client_transport_open(F.c);
    ASSERT_EQ((unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE), wsch_client_want(F.c));
    F.send_block = 0;
    ASSERT_EQ(WSCH_OK, wsch_client_writable(F.c));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_client_want(F.c));
    ASSERT(fx_accept());
    wsch_client_disconnect(F.c);
    fx_srv_close(1000, "");
    ASSERT_EQ(0u, wsch_client_want(F.c));                              /* IDLE, stopped */
    PASS();
}

/* payload_len: WSCH_CSTR measures, an explicit length sends only that many
   bytes (no NUL needed), and the prefix must be JSON on its own. */
TEST send_cstr_and_explicit_length(void) {
    static const char body[10] = {'{', '"', 'n', '"', ':', '2', '}', 'x', 'y', 'z'};   /* no NUL */
    wsch_client_desc d = fx_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    wsch_client_connect(F.c);
    ASSERT(fx_open());
    fx_drain();
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "chat", "{\"n\":1}", WSCH_CSTR));
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":{\"n\":1}}", fx_next_text());
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "chat", body, 7));
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":{\"n\":2}}", fx_next_text());
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "chat", "[1,2]]]", 5));
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":[1,2]}", fx_next_text());
    /* a prefix that is not JSON by itself, and one with a stray byte after the value */
    ASSERT_EQ(WSCH_ERR_JSON, wsch_client_send(F.c, "chat", body, 4));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_client_send(F.c, "chat", body, 8));
    ASSERT_STR_EQ("", fx_next_text());
    /* NULL is "no payload" with WSCH_CSTR; NULL with a length is a misuse */
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "chat", NULL, WSCH_CSTR));
    ASSERT_STR_EQ("{\"type\":\"chat\"}", fx_next_text());
    ASSERT_EQ(WSCH_ERR_ARG, wsch_client_send(F.c, "chat", NULL, 3));
    ASSERT_EQ(WSCH_OK, wsch_client_send_text(F.c, "{\"type\":\"raw\"}", WSCH_CSTR));
    ASSERT_STR_EQ("{\"type\":\"raw\"}", fx_next_text());
    ASSERT_STR_EQ("", fx_next_text());
    /* offline: the queue holds the prefix's envelope, nothing for the refused one */
    wsch_client_transport_closed(F.c);
    fx_drain();
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "chat", body, 7));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_client_send(F.c, "chat", body, 4));
    ASSERT_EQ((size_t)1, wsch_client_queued_count(F.c));
    ASSERT_EQ((size_t)33, wsch_client_queued_bytes(F.c));
    fx_advance(1000);
    ASSERT(fx_open());
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":{\"n\":2}}", fx_next_text());
    ASSERT_STR_EQ("", fx_next_text());
    PASS();
}

/* Runs one scripted session; returns the first error met (or WSCH_OK). */
static int alloc_script(void) {
    wsch_client_desc d = fx_desc();
    char big[600];
    int r;
    d.token = "tok";
    r = wsch_client_create(&d, &F.c);
    if (r != WSCH_OK) return r;
    if ((r = wsch_client_subscribe(F.c, "news")) != WSCH_OK) return r;
    if ((r = wsch_client_on(F.c, "*", h_b, NULL, NULL)) != WSCH_OK) return r;
    if ((r = wsch_client_send(F.c, "q", "[1]", WSCH_CSTR)) != WSCH_OK) return r;
    memset(big, 'x', sizeof big);
    big[0] = '"';
    big[sizeof big - 2] = '"';
    big[sizeof big - 1] = '\0';
    if ((r = wsch_client_send(F.c, "big", big, WSCH_CSTR)) != WSCH_OK) return r;   /* encoded on the heap */
    wsch_client_connect(F.c);
    wsch_client_transport_open(F.c);
    if (!wsch_client_conn(F.c)) return WSCH_ERR_NOMEM;      /* connection creation failed */
    if (!fx_accept()) return WSCH_ERR_NOMEM;
    if ((r = wsch_client_subscribe(F.c, "alerts")) != WSCH_OK) return r;
    if ((r = wsch_client_send(F.c, "big", big, WSCH_CSTR)) != WSCH_OK) return r;
    fx_srv_text("{\"type\":\"news\",\"payload\":1}");
    return WSCH_OK;
}

TEST failing_allocator_leaks_nothing(void) {
    size_t total, k;
    fx_reset();
    ASSERT_EQ(WSCH_OK, alloc_script());
    total = A.allocs;
    fx_teardown(NULL);
    ASSERT_EQ((size_t)0, A.live_blocks);
    ASSERT(total >= 5);
    for (k = 1; k <= total; k++) {
        int r;
        fx_reset();
        A.fail_at = k;
        r = alloc_script();
        ASSERT_EQ(1, (int)A.failed);
        ASSERT_EQ_FMT(WSCH_ERR_NOMEM, r, "%d");
        fx_teardown(NULL);
        ASSERT_EQ_FMT((size_t)0, A.live_blocks, "%zu");
    }
    PASS();
}

/* ---- nothing lost: positions, recovery, the outbox ---- */

typedef struct rrec {
    char log[2048];             /* R<channel>:<0|1> A<id> F<id>:<err>:<code> M<channel>@<offset> */
} rrec;

static rrec R;

static void r_append(const char *s) {
    size_t n = strlen(R.log);
    snprintf(R.log + n, sizeof R.log - n, "%s ", s);
}

static void r_recovery(wsch_client *c, const char *channel, int recovered, void *user) {
    char t[300];
    (void)c;
    (void)user;
    snprintf(t, sizeof t, "R%s:%d", channel, recovered);
    r_append(t);
}

static void r_ack(wsch_client *c, uint64_t id, void *user) {
    char t[32];
    (void)c;
    (void)user;
    snprintf(t, sizeof t, "A%llu", (unsigned long long)id);
    r_append(t);
}

static void r_failed(wsch_client *c, uint64_t id, int err, const char *code, void *user) {
    char t[128];
    (void)c;
    (void)user;
    snprintf(t, sizeof t, "F%llu:%d:%s", (unsigned long long)id, err, code);
    r_append(t);
}

static void r_msg(wsch_client *c, const wsch_client_message *m, void *user) {
    char t[300];
    (void)c;
    (void)user;
    if (m->channel) snprintf(t, sizeof t, "M%s@%llu", m->channel, (unsigned long long)m->offset);
    else snprintf(t, sizeof t, "T%.*s", (int)m->type_len, m->type);
    r_append(t);
}

static wsch_client_desc r_desc(void) {
    wsch_client_desc d = fx_desc();
    memset(&R, 0, sizeof R);
    d.on_recovery = r_recovery;
    d.on_ack = r_ack;
    d.on_send_failed = r_failed;
    d.session = "sess-1";
    return d;
}

/* A channel message as the hub sends it. */
static int srv_msg(const char *channel, int offset, const char *epoch) {
    char m[256];
    snprintf(m, sizeof m, "{\"type\":\"m\",\"payload\":%d,\"channel\":\"%s\",\"offset\":%d,\"epoch\":\"%s\"}", offset,
             channel, offset, epoch);
    return fx_srv_text(m);
}

static int srv_subscribed(const char *channel, int offset, const char *epoch, const char *recovered) {
    char m[256];
    snprintf(m, sizeof m, "{\"type\":\"subscribed\",\"payload\":{\"channel\":\"%s\",\"offset\":%d,\"epoch\":\"%s\"%s%s}}",
             channel, offset, epoch, recovered ? ",\"recovered\":" : "", recovered ? recovered : "");
    return fx_srv_text(m);
}

/* The link drops and the next one opens, after the backoff. */
static int relink(void) {
    wsch_client_transport_closed(F.c);
    fx_advance((uint64_t)wsch_client_next_retry_ms(F.c));
    return fx_open();
}

TEST recovery_from_the_last_position(void) {
    wsch_client_desc d = r_desc();
    wsch_client_position pos;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_on(F.c, "*", r_msg, NULL, NULL));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(F.c, "news"));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT(fx_open());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}", fx_next_text());
    ASSERT_EQ(WSCH_OK, wsch_client_channel_position(F.c, "news", &pos));
    ASSERT_EQ(0, pos.known);
    ASSERT_EQ(WSCH_OK, srv_subscribed("news", 7, "e1", NULL));
    ASSERT_EQ(WSCH_OK, srv_msg("news", 8, "e1"));
    ASSERT_EQ(WSCH_OK, srv_msg("news", 9, "e1"));
    ASSERT_EQ(WSCH_OK, wsch_client_channel_position(F.c, "news", &pos));
    ASSERT_EQ(1, pos.known);
    ASSERT_EQ(9, (int)pos.offset);
    ASSERT_STR_EQ("e1", pos.epoch);
    ASSERT_EQ(WSCH_RECOVERY_NONE, pos.recovery);
    /* Back after a drop: recover from 9; the overlap is dropped, the rest delivered once. */
    ASSERT(relink());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\",\"recover\":{\"offset\":9,\"epoch\":\"e1\"}}}",
                  fx_next_text());
    ASSERT_EQ(WSCH_OK, wsch_client_channel_position(F.c, "news", &pos));
    ASSERT_EQ(WSCH_RECOVERY_PENDING, pos.recovery);
    ASSERT_EQ(WSCH_OK, srv_msg("news", 9, "e1"));
    ASSERT_EQ(WSCH_OK, srv_msg("news", 10, "e1"));
    ASSERT_EQ(WSCH_OK, srv_msg("news", 11, "e1"));
    ASSERT_EQ(WSCH_OK, srv_subscribed("news", 11, "e1", "true"));
    ASSERT_EQ(WSCH_OK, srv_msg("news", 11, "e1"));
    ASSERT_EQ(WSCH_OK, srv_msg("news", 12, "e1"));
    ASSERT_STR_EQ("Tsubscribed Mnews@8 Mnews@9 Mnews@10 Mnews@11 Rnews:1 Tsubscribed Mnews@12 ", R.log);
    ASSERT_EQ(WSCH_OK, wsch_client_channel_position(F.c, "news", &pos));
    ASSERT_EQ(WSCH_RECOVERY_RECOVERED, pos.recovery);
    ASSERT_EQ(12, (int)pos.offset);
    /* Not recovered: the hub's position is taken, the application told. */
    ASSERT(relink());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\",\"recover\":{\"offset\":12,\"epoch\":\"e1\"}}}",
                  fx_next_text());
    R.log[0] = '\0';
    ASSERT_EQ(WSCH_OK, srv_subscribed("news", 3, "e2", "false"));
    ASSERT_EQ(WSCH_OK, srv_msg("news", 4, "e2"));
    ASSERT_STR_EQ("Rnews:0 Tsubscribed Mnews@4 ", R.log);
    ASSERT_EQ(WSCH_OK, wsch_client_channel_position(F.c, "news", &pos));
    ASSERT_EQ(WSCH_RECOVERY_LOST, pos.recovery);
    ASSERT_STR_EQ("e2", pos.epoch);
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, wsch_client_channel_position(F.c, "other", &pos));
    /* Messages of channels not subscribed, and positions out of bounds, are delivered untouched. */
    R.log[0] = '\0';
    ASSERT_EQ(WSCH_OK, srv_msg("other", 1, "x"));
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"m\",\"channel\":\"news\",\"offset\":-1,\"epoch\":\"e2\"}"));
    ASSERT_STR_EQ("Mother@1 Tm ", R.log);
    PASS();
}

TEST history_first_then_recover(void) {
    wsch_client_desc d = r_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe_history(F.c, "news", 20));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT(fx_open());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\",\"history\":20}}", fx_next_text());
    /* The link drops before the confirmation: ask for the history again. */
    ASSERT(relink());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\",\"history\":20}}", fx_next_text());
    ASSERT_EQ(WSCH_OK, srv_msg("news", 5, "e"));
    ASSERT_EQ(WSCH_OK, srv_subscribed("news", 5, "e", NULL));
    ASSERT(relink());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\",\"recover\":{\"offset\":5,\"epoch\":\"e\"}}}",
                  fx_next_text());
    /* A hub without positions: recovered false said once, then plain subscribes. */
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"news\",\"recovered\":false}}"));
    ASSERT_STR_EQ("Rnews:0 ", R.log);
    ASSERT(relink());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}", fx_next_text());
    PASS();
}

TEST reliable_sends_survive_reconnects_until_acked(void) {
    wsch_client_desc d = r_desc();
    uint64_t id = 0;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(F.c, "news"));
    ASSERT_EQ(WSCH_OK, wsch_client_send_reliable(F.c, "chat", "{\"n\":1}", WSCH_CSTR, &id));
    ASSERT_EQ(1, (int)id);
    ASSERT_EQ(WSCH_OK, wsch_client_send_reliable(F.c, "chat", "{\"n\":2}", WSCH_CSTR, &id));
    ASSERT_EQ(WSCH_OK, wsch_client_send(F.c, "plain", NULL, 0));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_client_send_reliable(F.c, "chat", "{", WSCH_CSTR, &id));
    ASSERT_EQ(0, (int)id);
    ASSERT_EQ((size_t)2, wsch_client_outbox_count(F.c));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT(fx_open());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":{\"n\":1},\"id\":1}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":{\"n\":2},\"id\":2}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"plain\"}", fx_next_text());
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"ack\",\"payload\":{\"id\":1}}"));
    ASSERT_STR_EQ("A1 ", R.log);
    ASSERT_EQ((size_t)1, wsch_client_outbox_count(F.c));
    /* 2 was not acked: sent again on the next link; the plain one is not. */
    ASSERT(relink());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":{\"n\":2},\"id\":2}", fx_next_text());
    ASSERT_STR_EQ("", fx_next_text());
    ASSERT_EQ(1, (int)wsch_client_resent(F.c));
    /* Open: a reliable send goes out at once. An ack of an unknown id is ignored. */
    ASSERT_EQ(WSCH_OK, wsch_client_send_reliable(F.c, "chat", NULL, 0, &id));
    ASSERT_STR_EQ("{\"type\":\"chat\",\"id\":3}", fx_next_text());
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"ack\",\"payload\":{\"id\":1}}"));
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"ack\",\"payload\":{\"id\":3}}"));
    /* Refused by the hub: given up with its code. */
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"error\",\"payload\":{\"code\":\"not_subscribed\",\"message\":\"m\",\"id\":2}}"));
    ASSERT_STR_EQ("A1 A3 F2:-29:not_subscribed ", R.log);
    ASSERT_EQ((size_t)0, wsch_client_outbox_count(F.c));
    /* The session travels in every handshake. */
    ASSERT_STR_EQ("sess-1", wsch_client_session(F.c));
    PASS();
}

/* The hub refuses the link right after the upgrade (4001): the messages
   flushed into it were never acknowledged, so they are given up, loudly;
   a user's disconnect keeps them for the next connect. */
TEST refused_after_open_gives_the_outbox_up_not_silently(void) {
    wsch_client_desc d = r_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_send_reliable(F.c, "chat", "1", WSCH_CSTR, NULL));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT(fx_open());
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":1,\"id\":1}", fx_next_text());
    ASSERT_EQ(WSCH_OK, wsch_client_disconnect(F.c));
    ASSERT_EQ((size_t)1, wsch_client_outbox_count(F.c));
    fx_srv_close(1000, "");
    ASSERT_STR_EQ("", R.log);
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT(fx_open());
    ASSERT_STR_EQ("{\"type\":\"chat\",\"payload\":1,\"id\":1}", fx_next_text());
    fx_srv_close(4001, "Unauthorized");
    ASSERT_STR_EQ("F1:-10: ", R.log);
    ASSERT_EQ((size_t)0, wsch_client_outbox_count(F.c));
    ASSERT_EQ(WSCH_STOP_TERMINAL_CODE, wsch_client_stop_reason(F.c));
    PASS();
}

TEST outbox_limits_and_session_checks(void) {
    wsch_client_desc d = r_desc();
    int i;
    d.outbox_max_count = 2;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_send_reliable(F.c, "a", NULL, 0, NULL));
    ASSERT_EQ(WSCH_OK, wsch_client_send_reliable(F.c, "b", NULL, 0, NULL));
    ASSERT_EQ(WSCH_ERR_QUEUE_FULL, wsch_client_send_reliable(F.c, "c", NULL, 0, NULL));
    fx_teardown(NULL);
    d = r_desc();
    d.outbox_max_bytes = 40;            /* {"type":"a","id":1} is 19 bytes: two fit */
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_send_reliable(F.c, "a", NULL, 0, NULL));
    ASSERT_EQ(WSCH_OK, wsch_client_send_reliable(F.c, "a", NULL, 0, NULL));
    ASSERT_EQ(WSCH_ERR_QUEUE_FULL, wsch_client_send_reliable(F.c, "a", NULL, 0, NULL));
    fx_teardown(NULL);
    /* At most 256: the hub remembers the outcome of 256 ids. */
    d = r_desc();
    d.outbox_max_count = 257;
    ASSERT_EQ(WSCH_ERR_ARG, fx_start(&d));
    {
        static const char *const bad[] = {"", "a b", "x/y", "0123456789012345678901234567890123456789012345678901234567890123x"};
        for (i = 0; i < 4; i++) {
            d = r_desc();
            d.session = bad[i];
            ASSERT_EQ(WSCH_ERR_ARG, fx_start(&d));
        }
    }
    ASSERT_EQ((size_t)0, A.live_blocks);
    PASS();
}

/* ---- presence ---- */

static struct {
    char log[1024];             /* +user(info) joins, -user leaves, # counts only */
    const char *unsub_on;       /* unsubscribe this channel from inside the event */
    int events;
} PR;

static void pr_event(wsch_client *c, const char *channel, const char *member, const char *info, int joined,
                     void *user) {
    size_t n = strlen(PR.log);
    (void)user;
    PR.events++;
    if (!member) snprintf(PR.log + n, sizeof PR.log - n, "# ");
    else if (info) snprintf(PR.log + n, sizeof PR.log - n, "%c%s(%s) ", joined ? '+' : '-', member, info);
    else snprintf(PR.log + n, sizeof PR.log - n, "%c%s ", joined ? '+' : '-', member);
    if (PR.unsub_on && strcmp(PR.unsub_on, channel) == 0) (void)wsch_client_unsubscribe(c, channel);
}

static wsch_client_desc pr_desc(void) {
    wsch_client_desc d = r_desc();
    memset(&PR, 0, sizeof PR);
    d.on_presence = pr_event;
    return d;
}

TEST presence_members_follow_the_hub_and_resync_after_a_reconnect(void) {
    wsch_client_desc d = pr_desc();
    const char *info;
    int listed;
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe_presence(F.c, "room"));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(F.c, "news"));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT(fx_open());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"room\",\"presence\":true}}", fx_next_text());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}", fx_next_text());
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"room\",\"presence\":["
                                   "{\"user\":\"bob\",\"connections\":2},"
                                   "{\"user\":\"alice\",\"connections\":1,\"info\":{\"d\":\"phone\"}}]}}"));
    ASSERT_STR_EQ("+alice({\"d\":\"phone\"}) +bob ", PR.log);
    ASSERT_EQ(2u, wsch_client_presence_count(F.c, "room", &listed));
    ASSERT_EQ(1, listed);
    ASSERT_STR_EQ("alice", wsch_client_presence_member(F.c, "room", 0, &info));     /* sorted */
    ASSERT_STR_EQ("{\"d\":\"phone\"}", info);
    ASSERT_STR_EQ("bob", wsch_client_presence_member(F.c, "room", 1, &info));
    ASSERT_EQ(NULL, info);
    ASSERT_EQ(NULL, wsch_client_presence_member(F.c, "room", 2, NULL));
    ASSERT_EQ(0u, wsch_client_presence_count(F.c, "news", NULL));                  /* not asked */

    PR.log[0] = '\0';
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"presence_diff\",\"payload\":{\"channel\":\"room\","
                                   "\"joins\":[{\"user\":\"carol\"},{\"user\":\"alice\"}],\"leaves\":[{\"user\":\"bob\"},{\"user\":\"zed\"}]}}"));
    ASSERT_STR_EQ("+carol -bob ", PR.log);          /* alice is in already, zed never was */
    ASSERT_EQ(2u, wsch_client_presence_count(F.c, "room", NULL));
    /* Presence of a channel subscribed without it is the application's. */
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"presence_diff\",\"payload\":{\"channel\":\"news\",\"joins\":[{\"user\":\"x\"}],\"leaves\":[]}}"));
    ASSERT_STR_EQ("+carol -bob ", PR.log);

    /* After a reconnect the hub's list replaces the set: only the difference is told. */
    ASSERT(relink());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"room\",\"presence\":true}}", fx_next_text());
    PR.log[0] = '\0';
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"room\",\"presence\":["
                                   "{\"user\":\"dave\",\"connections\":1},{\"user\":\"alice\",\"connections\":3}]}}"));
    ASSERT_STR_EQ("-carol +dave ", PR.log);         /* in user id order */
    ASSERT_EQ(2u, wsch_client_presence_count(F.c, "room", NULL));

    /* Over the hub's cap: counts only, the list dropped; an answer to the
       application's own request ("listed":true) changes nothing. */
    PR.log[0] = '\0';
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"presence_stats\",\"payload\":{\"channel\":\"room\",\"users\":7,\"connections\":9,\"listed\":true}}"));
    ASSERT_STR_EQ("", PR.log);
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"presence_stats\",\"payload\":{\"channel\":\"room\",\"users\":5000,\"connections\":6000,\"listed\":false}}"));
    ASSERT_STR_EQ("# ", PR.log);
    ASSERT_EQ(5000u, wsch_client_presence_count(F.c, "room", &listed));
    ASSERT_EQ(0, listed);
    ASSERT_EQ(NULL, wsch_client_presence_member(F.c, "room", 0, NULL));
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"presence_diff\",\"payload\":{\"channel\":\"room\",\"joins\":[{\"user\":\"x\"}],\"leaves\":[]}}"));
    ASSERT_STR_EQ("# ", PR.log);                    /* no list to apply it to */
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"presence\",\"payload\":{\"channel\":\"room\",\"members\":[{\"user\":\"alice\",\"connections\":1}]}}"));
    ASSERT_STR_EQ("# +alice ", PR.log);             /* back under the cap: the whole list */
    ASSERT_EQ(1u, wsch_client_presence_count(F.c, "room", &listed));
    ASSERT_EQ(1, listed);
    /* A confirmation over the cap. */
    ASSERT(relink());
    PR.log[0] = '\0';
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"room\",\"presence_stats\":{\"users\":1200,\"connections\":1300}}}"));
    ASSERT_STR_EQ("# ", PR.log);
    ASSERT_EQ(1200u, wsch_client_presence_count(F.c, "room", NULL));
    PASS();
}

TEST presence_added_later_and_unsubscribed_inside_its_event(void) {
    wsch_client_desc d = pr_desc();
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(F.c, "room"));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT(fx_open());
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"room\"}}", fx_next_text());
    ASSERT_EQ(WSCH_OK, srv_subscribed("room", 4, "e1", NULL));
    /* Presence asked for a subscribed channel: asked again, without recover. */
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe_presence(F.c, "room"));
    ASSERT_STR_EQ("{\"type\":\"subscribe\",\"payload\":{\"channel\":\"room\",\"presence\":true}}", fx_next_text());
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe_presence(F.c, "room"));     /* once */
    ASSERT_STR_EQ("", fx_next_text());
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"room\",\"offset\":4,\"epoch\":\"e1\",\"presence\":["
                                   "{\"user\":\"a\"},{\"user\":\"b\"},{\"user\":\"c\"}]}}"));
    ASSERT_STR_EQ("+a +b +c ", PR.log);
    ASSERT(strstr(R.log, "Rroom") == NULL);         /* not a recovery */
    /* An event handler that unsubscribes: the rest of the list is not reported. */
    PR.unsub_on = "room";
    PR.log[0] = '\0';
    ASSERT_EQ(WSCH_OK, fx_srv_text("{\"type\":\"presence\",\"payload\":{\"channel\":\"room\",\"members\":[{\"user\":\"x\"},{\"user\":\"y\"}]}}"));
    ASSERT_STR_EQ("-a ", PR.log);
    ASSERT_EQ(0u, wsch_client_subscription_count(F.c));
    ASSERT_STR_EQ("{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"room\"}}", fx_next_text());
    PASS();
}

TEST presence_members_are_bounded(void) {
    wsch_client_desc d = pr_desc();
    char msg[2048], id[300];
    size_t nerr;
    memset(id, 'u', sizeof id);
    id[sizeof id - 1] = '\0';
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe_presence(F.c, "room"));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    ASSERT(fx_open());
    nerr = F.nerr;
    snprintf(msg, sizeof msg, "{\"type\":\"subscribed\",\"payload\":{\"channel\":\"room\",\"presence\":["
             "{\"user\":\"%s\"},{\"user\":\"ok\"},{\"nouser\":1},{\"user\":\"a\\u0000b\"},{\"user\":\"ok\"}]}}", id);
    ASSERT_EQ(WSCH_OK, fx_srv_text(msg));
    ASSERT_STR_EQ("+ok ", PR.log);                  /* too long, none, U+0000, twice: skipped */
    ASSERT_EQ(nerr + 1, F.nerr);
    ASSERT_EQ(WSCH_ERR_LIMIT, F.errors[nerr]);
    PASS();
}

TEST outbox_keeps_order_under_backpressure(void) {
    wsch_client_desc d = r_desc();
    static const char p30[] = "\"xxxxxxxxxxxxxxxxxxxxxxxxxxx\"";
    char want[128];
    int i;
    d.limits.max_outbound_bytes = 72 + 4 * sizeof(void *);
    ASSERT_EQ(WSCH_OK, fx_start(&d));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(F.c));
    wsch_client_transport_open(F.c);
    F.send_cap = 1;
    ASSERT(fx_accept());
    for (i = 1; i <= 4; i++) {
        char type[16];
        snprintf(type, sizeof type, "m%d", i);
        ASSERT_EQ(WSCH_OK, wsch_client_send_reliable(F.c, type, p30, WSCH_CSTR, NULL));
    }
    F.send_cap = 0;
    for (i = 0; i < 8; i++) wsch_client_writable(F.c);
    for (i = 1; i <= 4; i++) {
        snprintf(want, sizeof want, "{\"type\":\"m%d\",\"payload\":%s,\"id\":%d}", i, p30, i);
        ASSERT_STR_EQ(want, fx_next_text());
    }
    ASSERT_STR_EQ("", fx_next_text());
    ASSERT_EQ((size_t)4, wsch_client_outbox_count(F.c));
    ASSERT_EQ(0, (int)wsch_client_resent(F.c));
    PASS();
}

SUITE(client) {
    SET_TEARDOWN(fx_teardown, NULL);
    RUN_TEST(defaults_resolved);
    RUN_TEST(create_rejects_bad_desc);
    RUN_TEST(token_in_query_is_percent_encoded);
    RUN_TEST(token_in_header);
    RUN_TEST(transitions_happy_path);
    RUN_TEST(handshake_refused_401_stops);
    RUN_TEST(handshake_timeout_retries);
    RUN_TEST(backoff_exact_without_jitter);
    RUN_TEST(backoff_custom_and_max_attempts);
    RUN_TEST(jitter_bounds);
    RUN_TEST(jitter_exact_extremes);
    RUN_TEST(counter_resets_after_open);
    RUN_TEST(terminal_close_codes);
    RUN_TEST(disconnect_mid_retry);
    RUN_TEST(disconnect_while_connecting_and_open);
    RUN_TEST(heartbeat_app_timing);
    RUN_TEST(heartbeat_protocol_and_off);
    RUN_TEST(dead_peer_timeout);
    RUN_TEST(any_inbound_byte_counts_as_alive);
    RUN_TEST(resubscribe_in_order);
    RUN_TEST(offline_queue_flush_order);
    RUN_TEST(offline_queue_limits);
    RUN_TEST(queue_keeps_order_under_backpressure);
    RUN_TEST(handlers_by_type_and_wildcard);
    RUN_TEST(handler_removal_during_dispatch);
    RUN_TEST(handler_registers_many_during_dispatch);
    RUN_TEST(reentrant_calls_from_handler);
    RUN_TEST(destroy_from_inside_callbacks);
    RUN_TEST(status_callback_reentry);
    RUN_TEST(transport_closed_from_inside_send);
    RUN_TEST(destroy_cleans_up_everything);
    RUN_TEST(default_ten_tries_then_on_stop);
    RUN_TEST(refused_401_status_and_stop);
    RUN_TEST(handshake_eof_is_hangup);
    RUN_TEST(on_stop_user_after_close_handshake);
    RUN_TEST(link_lost_during_replay_is_never_announced);
    RUN_TEST(quick_drops_after_open_back_off);
    RUN_TEST(retry_after_is_honoured);
    RUN_TEST(close_once_per_connect_every_path);
    RUN_TEST(want_follows_state);
    RUN_TEST(send_cstr_and_explicit_length);
    RUN_TEST(failing_allocator_leaks_nothing);
    RUN_TEST(recovery_from_the_last_position);
    RUN_TEST(history_first_then_recover);
    RUN_TEST(reliable_sends_survive_reconnects_until_acked);
    RUN_TEST(refused_after_open_gives_the_outbox_up_not_silently);
    RUN_TEST(outbox_limits_and_session_checks);
    RUN_TEST(outbox_keeps_order_under_backpressure);
    RUN_TEST(presence_members_follow_the_hub_and_resync_after_a_reconnect);
    RUN_TEST(presence_added_later_and_unsubscribed_inside_its_event);
    RUN_TEST(presence_members_are_bounded);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(client);
    GREATEST_MAIN_END();
}
