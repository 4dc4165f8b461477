/* Tests of the hub (wsch_hub) over fake transports: each fake records what
   the hub sends, can refuse bytes (a slow reader), and keeps the timers the
   hub arms, so every path runs without a socket or a clock. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER

#include <stdlib.h>
#include <string.h>
#include <stdio.h>

/* ---- counting and failing allocator ------------------------------------- */

typedef struct counting {
    size_t live_bytes, live_blocks, allocs, peak;
    long fail_at;           /* the allocation number (1-based) that fails; 0 = none */
    long failed;            /* how many allocations were refused */
} counting;

static void *t_alloc(size_t n, void *user) {
    counting *c = (counting *)user;
    unsigned char *p;
    c->allocs++;
    if (c->fail_at > 0 && (long)c->allocs >= c->fail_at) {
        c->failed++;
        return NULL;
    }
    p = (unsigned char *)malloc(n + 16);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    c->live_bytes += n;
    c->live_blocks++;
    if (c->live_bytes > c->peak) c->peak = c->live_bytes;
    return p + 16;
}

static void t_free(void *ptr, void *user) {
    counting *c = (counting *)user;
    unsigned char *p = (unsigned char *)ptr - 16;
    size_t n;
    memcpy(&n, p, sizeof n);
    c->live_bytes -= n;
    c->live_blocks--;
    free(p);
}

/* ---- a fake transport ------------------------------------------------------ */

#define FAKE_ALL ((size_t)-1)

typedef struct fake {
    wsch_hub *hub;          /* the hub it was accepted by */
    wsch_hub_peer h;
    unsigned char *out;     /* everything the hub sent */
    size_t out_len, out_cap, rd;
    int head_done;          /* the HTTP head of the answer was skipped */
    size_t take;            /* bytes send() accepts per call; FAKE_ALL, or 0 = would block */
    int close_requested;
    int closes;             /* close() calls */
    int reported;           /* transport_closed was reported */
    int armed[32];
    uint32_t delay[32];
    unsigned timer_sets;
} fake;

static size_t f_send(const void *data, size_t len, void *user) {
    fake *f = (fake *)user;
    size_t n = len < f->take ? len : f->take;
    if (f->out_len + n > f->out_cap) {
        size_t cap = f->out_cap ? f->out_cap * 2 : 1024;
        while (cap < f->out_len + n) cap *= 2;
        f->out = (unsigned char *)realloc(f->out, cap);
        f->out_cap = cap;
    }
    memcpy(f->out + f->out_len, data, n);
    f->out_len += n;
    return n;
}

static void f_close(void *user) {
    fake *f = (fake *)user;
    f->close_requested = 1;
    f->closes++;
}

static void f_timer_set(unsigned id, uint32_t ms, void *user) {
    fake *f = (fake *)user;
    if (id < 32) {
        f->armed[id] = 1;
        f->delay[id] = ms;
        f->timer_sets++;
    }
}

static void f_timer_cancel(unsigned id, void *user) {
    fake *f = (fake *)user;
    if (id < 32) f->armed[id] = 0;
}

static const wsch_hub_transport fake_transport = {f_send, f_close, f_timer_set, f_timer_cancel};

/* ---- the hub's caller ------------------------------------------------------ */

typedef struct ctx {
    counting mem;
    wsch_hub *hub;
    wsch_hub_desc desc;
    uint64_t now;
    int connects, disconnects, last_code;
    char last_user[160];
    int messages;
    char last_type[WSCH_ENVELOPE_TYPE_MAX + 1];
    char last_payload[512];
    int deny_all_tokens;        /* authenticate refuses everything */
    const char *long_user_id;   /* authenticate returns this */
    const char *deny_prefix;    /* authorize_subscribe refuses channels starting with it */
    int origin_checks;
    wsch_hub_peer disconnected;
    int handle_valid_in_disconnect;
    wsch_str user_in_disconnect;
    char publish_from[64];
} ctx;

static ctx T;

static uint64_t c_now(void *user) { return ((ctx *)user)->now; }

static int c_origin(wsch_hub *hub, const wsch_hub_request *req, void *user) {
    (void)hub;
    ((ctx *)user)->origin_checks++;
    return req->http->origin.len == 0 ||
           (req->http->origin.len == 17 && memcmp(req->http->origin.ptr, "http://good.local", 17) == 0);
}

/* Any non-empty token is the user name; "bad" never is. */
static int c_auth(wsch_hub *hub, const wsch_hub_request *req, wsch_str *user_id, void *user) {
    ctx *c = (ctx *)user;
    (void)hub;
    if (c->long_user_id) {
        user_id->ptr = c->long_user_id;
        user_id->len = strlen(c->long_user_id);
        return WSCH_OK;
    }
    if (c->deny_all_tokens || req->token.len == 0 || wsch__hub_span_is(req->token, "bad")) return WSCH_ERR_DENIED;
    *user_id = req->token;
    return WSCH_OK;
}

static int c_authorize(wsch_hub *hub, wsch_hub_peer client, wsch_str user_id, wsch_str channel, void *user) {
    ctx *c = (ctx *)user;
    (void)hub;
    (void)client;
    (void)user_id;
    return !c->deny_prefix || channel.len < strlen(c->deny_prefix) ||
           memcmp(channel.ptr, c->deny_prefix, strlen(c->deny_prefix)) != 0;
}

static void c_http(wsch_hub *hub, const wsch_hub_request *req, wsch_hub_http_response *res, void *user) {
    (void)hub;
    (void)user;
    if (wsch__hub_span_is(req->http->path, "/")) {
        res->status = 200;
        res->content_type = "text/html";
        res->body = "<h1>hi</h1>";
        res->body_len = 11;
    } else if (wsch__hub_span_is(req->http->path, "/me")) {
        res->status = 200;      /* the token reaches plain HTTP requests too */
        res->body = req->token.ptr;
        res->body_len = req->token.len;
        res->extra_headers = "X-Token-Source: query\r\n";
        if (req->token_source != WSCH_TOKEN_QUERY) res->status = 500;
    }
}

static void c_connect(wsch_hub *hub, wsch_hub_peer client, wsch_str user_id, void *user) {
    ctx *c = (ctx *)user;
    (void)hub;
    (void)client;
    c->connects++;
    if (user_id.len < sizeof c->last_user) {
        memcpy(c->last_user, user_id.ptr, user_id.len);
        c->last_user[user_id.len] = '\0';
    }
}

static void c_disconnect(wsch_hub *hub, wsch_hub_peer client, int code, void *user) {
    ctx *c = (ctx *)user;
    c->disconnects++;
    c->last_code = code;
    c->disconnected = client;
    c->handle_valid_in_disconnect = wsch_hub_peer_valid(hub, client);
    c->user_in_disconnect.len = 0;
    (void)wsch_hub_peer_user_id(hub, client, &c->user_in_disconnect);
}

/* The demo's publish, and a "quit" that closes the sender from its handler. */
static void c_message(wsch_hub *hub, wsch_hub_peer client, const wsch_envelope *env, void *user) {
    ctx *c = (ctx *)user;
    c->messages++;
    memcpy(c->last_type, env->type, env->type_len + 1);
    c->last_payload[0] = '\0';
    if (env->payload.ptr && env->payload.len < sizeof c->last_payload) {
        memcpy(c->last_payload, env->payload.ptr, env->payload.len);
        c->last_payload[env->payload.len] = '\0';
    }
    if (wsch_envelope_type_is(env, "publish")) {
        char ch[WSCH_HUB_MAX_CHANNEL_LEN + 1];
        size_t n;
        if (wsch_envelope_get_channel(env->payload, ch, sizeof ch, &n) == WSCH_OK)
            (void)wsch_hub_broadcast(hub, ch, "message", env->payload.ptr, env->payload.len, NULL);
    } else if (wsch_envelope_type_is(env, "quit")) {
        (void)wsch_hub_peer_close(hub, client, 1000, "bye");
    }
}

/* Zeroes T and builds a hub with the test hooks; tweak T.desc in `adjust`. */
static int hub_setup(void (*adjust)(wsch_hub_desc *d)) {
    memset(&T, 0, sizeof T);
    T.desc.allocator.alloc = t_alloc;
    T.desc.allocator.free = t_free;
    T.desc.allocator.user = &T.mem;
    T.desc.transport = fake_transport;
    T.desc.now_ms = c_now;
    T.desc.check_origin = c_origin;
    T.desc.authenticate = c_auth;
    T.desc.authorize_subscribe = c_authorize;
    T.desc.on_http = c_http;
    T.desc.on_connect = c_connect;
    T.desc.on_disconnect = c_disconnect;
    T.desc.on_message = c_message;
    T.desc.user = &T;
    T.desc.subprotocol = "wsch";
    if (adjust) adjust(&T.desc);
    return wsch_hub_create(&T.desc, &T.hub);
}

/* Destroys the hub; returns the heap bytes left behind (must be 0). */
static size_t hub_teardown(fake *fakes, size_t n) {
    size_t i;
    wsch_hub_destroy(T.hub);
    T.hub = NULL;
    for (i = 0; i < n; i++) {
        free(fakes[i].out);
        memset(&fakes[i], 0, sizeof fakes[i]);
    }
    return T.mem.live_bytes;
}

/* A fresh fake for the hub in T.hub. */
static void fake_init(fake *f) {
    memset(f, 0, sizeof *f);
    f->take = FAKE_ALL;
    f->hub = T.hub;
}

static int fake_accept(fake *f) {
    fake_init(f);
    return wsch_hub_accept(T.hub, NULL, f, &f->h);
}

static int fake_feed(fake *f, const void *data, size_t len) {
    unsigned char *copy = (unsigned char *)malloc(len ? len : 1);
    int r;
    memcpy(copy, data, len);
    r = wsch_hub_feed(f->hub, f->h, copy, len);
    free(copy);
    return r;
}

static int fake_feed_str(fake *f, const char *s) { return fake_feed(f, s, strlen(s)); }

/* Accepts and sends an upgrade for target with extra header lines. */
static int fake_request(fake *f, const char *target, const char *headers) {
    char req[2048];
    int r = fake_accept(f);
    if (r != WSCH_OK) return r;
    snprintf(req, sizeof req,
             "GET %s HTTP/1.1\r\nHost: hub.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             target, headers ? headers : "");
    return fake_feed(f, req, strlen(req));
}

/* The HTTP status of the hub's answer, or 0. */
static int fake_status(const fake *f) {
    if (f->out_len < 12 || memcmp(f->out, "HTTP/1.1 ", 9) != 0) return 0;
    return atoi((const char *)f->out + 9);
}

/* A value of a header in the answer (copied into out), or 0 when absent. */
static int fake_header(const fake *f, const char *name, char *out, size_t cap) {
    const char *p = (const char *)f->out, *end = p + f->out_len;
    size_t nl = strlen(name);
    while (p < end) {
        const char *eol = p;
        while (eol + 1 < end && !(eol[0] == '\r' && eol[1] == '\n')) eol++;
        if (eol == p) return 0;
        if ((size_t)(eol - p) > nl + 1 && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            size_t n;
            while (*v == ' ') v++;
            n = (size_t)(eol - v);
            if (n >= cap) n = cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return 1;
        }
        p = eol + 2;
    }
    return 0;
}

/* Opens a client whose token is `user` (NULL: no token). 1 when open. */
static int fake_open(fake *f, const char *user) {
    char target[256];
    if (user) snprintf(target, sizeof target, "/ws?token=%s", user);
    else snprintf(target, sizeof target, "/ws");
    if (fake_request(f, target, NULL) != WSCH_OK) return 0;
    return fake_status(f) == 101 && wsch_hub_peer_state(f->hub, f->h) == WSCH_STATE_OPEN;
}

/* Next complete frame the hub sent: 1 with opcode, payload copied (NUL
   added), 0 when none is complete. */
static int fake_next(fake *f, int *opcode, char *buf, size_t cap, size_t *len) {
    wsch_frame_header h;
    size_t hl;
    if (!f->head_done) {
        size_t i;
        for (i = 0; i + 3 < f->out_len; i++) {
            if (memcmp(f->out + i, "\r\n\r\n", 4) == 0) break;
        }
        if (i + 3 >= f->out_len) return 0;
        f->rd = i + 4;
        f->head_done = 1;
    }
    if (wsch_frame_header_decode(f->out + f->rd, f->out_len - f->rd, &h, &hl) != WSCH_OK) return 0;
    if (h.masked || f->out_len - f->rd - hl < h.payload_len || h.payload_len >= cap) return 0;
    memcpy(buf, f->out + f->rd + hl, (size_t)h.payload_len);
    buf[h.payload_len] = '\0';
    *len = (size_t)h.payload_len;
    *opcode = h.opcode;
    f->rd += hl + (size_t)h.payload_len;
    return 1;
}

/* The next text message, or "" when there is none. */
static const char *fake_text(fake *f) {
    static char buf[70000];
    size_t len, rd = f->rd;
    int op;
    if (!fake_next(f, &op, buf, sizeof buf, &len)) return "";
    if (op != WSCH_OP_TEXT) {
        f->rd = rd;         /* leave a close frame for fake_closed_with */
        return "";
    }
    return buf;
}

/* The next frame is a close with this code (and reason, if not NULL). */
static int fake_closed_with(fake *f, int code, const char *reason) {
    char buf[256];
    size_t len;
    int op;
    while (fake_next(f, &op, buf, sizeof buf, &len)) {
        if (op != WSCH_OP_CLOSE) continue;
        if (len < 2 || ((unsigned char)buf[0] << 8 | (unsigned char)buf[1]) != code) return 0;
        return !reason || (len - 2 == strlen(reason) && memcmp(buf + 2, reason, len - 2) == 0);
    }
    return 0;
}

static size_t fake_pending(fake *f) {
    char buf[70000];
    size_t len, n = 0;
    int op;
    while (fake_next(f, &op, buf, sizeof buf, &len)) n++;
    return n;
}

/* A masked client frame. */
static int fake_frame(fake *f, int opcode, const void *payload, size_t len) {
    unsigned char *frame = (unsigned char *)malloc(len + WSCH_FRAME_HEADER_MAX);
    wsch_frame_header h;
    size_t hl;
    int r;
    memset(&h, 0, sizeof h);
    h.fin = 1;
    h.opcode = (uint8_t)opcode;
    h.masked = 1;
    h.payload_len = len;
    h.mask_key[0] = 0x12;
    h.mask_key[1] = 0x34;
    h.mask_key[2] = 0x56;
    h.mask_key[3] = 0x78;
    hl = wsch_frame_header_encode(frame, &h);
    memcpy(frame + hl, payload, len);
    wsch_mask(frame + hl, len, h.mask_key, 0);
    r = wsch_hub_feed(f->hub, f->h, frame, hl + len);
    free(frame);
    return r;
}

static int fake_say(fake *f, const char *json) { return fake_frame(f, WSCH_OP_TEXT, json, strlen(json)); }

static int fake_sub(fake *f, const char *channel) {
    char msg[512];
    snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\"}}", channel);
    return fake_say(f, msg);
}

/* The caller's side of a closed socket: report it once. */
static void fake_gone(fake *f) {
    if (f->reported) return;
    f->reported = 1;
    (void)wsch_hub_transport_closed(f->hub, f->h);
}

static wsch_hub_counters stats(void) {
    wsch_hub_counters s;
    wsch_hub_stats(T.hub, &s);
    return s;
}

/* ---- tests ------------------------------------------------------------------ */

TEST connect_ping_pong(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "alice"));
    ASSERT_EQ(1, T.connects);
    ASSERT_STR_EQ("alice", T.last_user);
    ASSERT_EQ(0, f[0].armed[WSCH_TIMER_HANDSHAKE]);     /* the handshake timer was cancelled */
    ASSERT_EQ(1, f[0].armed[WSCH_HUB_TIMER_IDLE]);
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"ping\",\"payload\":{\"t\":17}}"));
    ASSERT_STR_EQ("{\"type\":\"pong\",\"payload\":{\"t\":17}}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"ping\"}"));
    ASSERT_STR_EQ("{\"type\":\"pong\"}", fake_text(&f[0]));
    /* A protocol ping is answered by the connection. */
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_PING, "hb", 2));
    {
        char buf[16];
        size_t len;
        int op;
        ASSERT(fake_next(&f[0], &op, buf, sizeof buf, &len));
        ASSERT_EQ(WSCH_OP_PONG, op);
        ASSERT_EQ(2, (int)len);
    }
    ASSERT_EQ(2, (int)stats().messages_in);     /* protocol pings are not messages */
    ASSERT_EQ(2, (int)stats().messages_out);
    fake_gone(&f[0]);
    ASSERT_EQ(1, T.disconnects);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, T.last_code);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST subscribe_broadcast_reaches_exactly_subscribers(void) {
    fake f[3];
    size_t delivered = 99, i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < 3; i++) ASSERT(fake_open(&f[i], i == 2 ? "carol" : "alice"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "news"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "news"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[2], "sports"));
    ASSERT_STR_EQ("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"news\"}}", fake_text(&f[0]));
    ASSERT_STR_EQ("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"news\"}}", fake_text(&f[1]));
    ASSERT_STR_EQ("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"sports\"}}", fake_text(&f[2]));
    /* Subscribing twice is acknowledged and changes nothing. */
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "news"));
    ASSERT_STR_EQ("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"news\"}}", fake_text(&f[0]));
    ASSERT_EQ(2, (int)wsch_hub_channel_size(T.hub, "news"));

    {
        const char *p = "{\"id\":1,\"t\":\"\\u00e9t\\u00e9\"}";
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "news", "headline", p, strlen(p), &delivered));
    }
    ASSERT_EQ(2, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"headline\",\"payload\":{\"id\":1,\"t\":\"\\u00e9t\\u00e9\"}}", fake_text(&f[0]));
    ASSERT_STR_EQ("{\"type\":\"headline\",\"payload\":{\"id\":1,\"t\":\"\\u00e9t\\u00e9\"}}", fake_text(&f[1]));
    ASSERT_EQ(0, (int)fake_pending(&f[2]));
    /* Nobody on a channel: fine, nothing sent. A payload-less envelope. */
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "empty", "x", NULL, 0, &delivered));
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "sports", "goal", NULL, 0, &delivered));
    ASSERT_EQ(1, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"goal\"}", fake_text(&f[2]));

    /* Unsubscribe: acknowledged, also for a channel never joined. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"news\"}}"));
    ASSERT_STR_EQ("{\"type\":\"unsubscribed\",\"payload\":{\"channel\":\"news\"}}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"nope\"}}"));
    ASSERT_STR_EQ("{\"type\":\"unsubscribed\",\"payload\":{\"channel\":\"nope\"}}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "news", "n", "2", 1, &delivered));
    ASSERT_EQ(1, (int)delivered);
    ASSERT_EQ(0, (int)fake_pending(&f[0]));
    ASSERT_STR_EQ("{\"type\":\"n\",\"payload\":2}", fake_text(&f[1]));
    ASSERT_EQ(2, (int)stats().channels);
    ASSERT_EQ(2, (int)stats().subscriptions);
    for (i = 0; i < 3; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* Broadcast arguments are checked like peer input. */
TEST broadcast_argument_errors(void) {
    fake f[1];
    size_t delivered = 7;
    char big[200];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "u"));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_broadcast(T.hub, "bad name", "t", NULL, 0, &delivered));
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_broadcast(T.hub, "", "t", NULL, 0, NULL));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_broadcast(T.hub, "c", "", NULL, 0, NULL));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_broadcast(T.hub, "c", NULL, NULL, 0, NULL));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_broadcast(T.hub, "c", "t", NULL, 3, NULL));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_hub_broadcast(T.hub, "c", "t", "{", 1, NULL));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_hub_broadcast(T.hub, "c", "t", "1 2", 3, NULL));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_hub_broadcast(T.hub, "c", "t", "\"\xff\"", 3, NULL));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_hub_broadcast(T.hub, "c", "\xc3", NULL, 0, NULL));
    memset(big, 'a', sizeof big);
    big[WSCH_ENVELOPE_TYPE_MAX + 1] = '\0';
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_hub_broadcast(T.hub, "c", big, NULL, 0, NULL));
    big[WSCH_ENVELOPE_TYPE_MAX] = '\0';
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", big, NULL, 0, NULL));
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "nobody", "t", NULL, 0, &delivered));
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_send_to_user(T.hub, NULL, "t", NULL, 0, NULL));
    /* A type is escaped on the way out. */
    ASSERT_EQ(WSCH_OK, wsch_hub_send(T.hub, f[0].h, "a\"b\n", "[]", 2));
    ASSERT_STR_EQ("{\"type\":\"a\\\"b\\n\",\"payload\":[]}", fake_text(&f[0]));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

static void small_messages(wsch_hub_desc *d) { d->max_message_size = 100; }

TEST message_size_limit(void) {
    fake f[2];
    char msg[200];
    ASSERT_EQ(WSCH_OK, hub_setup(small_messages));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT(fake_open(&f[1], "b"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "c"));
    (void)fake_text(&f[1]);
    /* Outbound: an envelope over max_message_size is refused, nothing sent. */
    memset(msg, 0, sizeof msg);
    msg[0] = '"';
    memset(msg + 1, 'x', 80);
    msg[81] = '"';
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_hub_broadcast(T.hub, "c", "t", msg, 82, NULL));
    ASSERT_EQ(0, (int)fake_pending(&f[1]));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_hub_broadcast(T.hub, "c", "t", msg, 60, NULL));
    /* {"type":"t","payload":P} is 23 bytes around P: 77 fit in 100, 78 do not. */
    msg[76] = '"';
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "t", msg, 77, NULL));
    ASSERT_EQ(100, (int)strlen(fake_text(&f[1])));
    msg[76] = 'x';
    msg[77] = '"';
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_hub_broadcast(T.hub, "c", "t", msg, 78, NULL));
    /* Inbound: a message over the limit closes with 1009. */
    memset(msg, ' ', 101);
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, fake_frame(&f[0], WSCH_OP_TEXT, msg, 101));
    ASSERT(fake_closed_with(&f[0], WSCH_CLOSE_MESSAGE_TOO_BIG, NULL));
    ASSERT(f[0].close_requested);
    fake_gone(&f[0]);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_PROTOCOL]);
    ASSERT_EQ(WSCH_CLOSE_MESSAGE_TOO_BIG, T.last_code);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

TEST bad_envelopes_get_errors(void) {
    fake f[1];
    char name[300];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "alice"));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "not json"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"bad_envelope\",\"message\":"
                  "\"expected {\\\"type\\\": string, \\\"payload\\\": any}\"}}",
                  fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"payload\":1}"));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_envelope\"") != NULL);
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"subscribe\"}"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"bad_payload\",\"message\":"
                  "\"payload needs a non-empty string \\\"channel\\\"\",\"request\":\"subscribe\"}}",
                  fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"subscribe\",\"payload\":{\"channel\":7}}"));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_payload\"") != NULL);
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"\"}}"));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_payload\"") != NULL);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "has space"));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_channel\"") != NULL);
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"caf\\u00e9\"}}"));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_channel\"") != NULL);
    memset(name, 'n', sizeof name);
    name[WSCH_HUB_DEFAULT_MAX_CHANNEL_LEN + 1] = '\0';
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], name));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_channel\"") != NULL);
    name[WSCH_HUB_DEFAULT_MAX_CHANNEL_LEN] = '\0';
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], name));
    ASSERT(strstr(fake_text(&f[0]), "\"type\":\"subscribed\"") != NULL);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "a-Z_0.9:x@y/z"));
    ASSERT(strstr(fake_text(&f[0]), "\"type\":\"subscribed\"") != NULL);
    /* Other types go to on_message, with the payload. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"chat\",\"payload\":{\"x\":[1,2]}}"));
    ASSERT_EQ(1, T.messages);
    ASSERT_STR_EQ("chat", T.last_type);
    ASSERT_STR_EQ("{\"x\":[1,2]}", T.last_payload);
    ASSERT_EQ(0, (int)fake_pending(&f[0]));
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(T.hub, f[0].h));
    /* Binary is not an envelope: 1003. */
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_BINARY, "\x01\x02", 2));
    ASSERT(fake_closed_with(&f[0], WSCH_CLOSE_UNSUPPORTED_DATA, "Binary messages are not supported"));
    ASSERT_EQ(0, (int)stats().subscriptions);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_PROTOCOL]);
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

static void no_handler(wsch_hub_desc *d) { d->on_message = NULL; }

TEST unknown_type_without_handler(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(no_handler));
    ASSERT(fake_open(&f[0], "alice"));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"we\\\"ird\",\"payload\":null}"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"unknown_type\",\"message\":"
                  "\"no handler for this type\",\"request\":\"we\\\"ird\"}}",
                  fake_text(&f[0]));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST send_to_user_reaches_every_connection(void) {
    fake f[5];
    size_t delivered, i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "alice"));
    ASSERT(fake_open(&f[1], "bob"));
    ASSERT(fake_open(&f[2], "alice"));
    ASSERT(fake_open(&f[3], "alice"));
    ASSERT(fake_open(&f[4], "alicia"));
    ASSERT_EQ(3, (int)stats().users);
    ASSERT_EQ(3, (int)wsch_hub_user_connections(T.hub, "alice"));
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "alice", "note", "\"hi\"", 4, &delivered));
    ASSERT_EQ(3, (int)delivered);
    ASSERT_EQ(1, (int)stats().encodes);         /* once for three connections */
    for (i = 0; i < 5; i++) {
        if (i == 1 || i == 4) ASSERT_EQ(0, (int)fake_pending(&f[i]));
        else ASSERT_STR_EQ("{\"type\":\"note\",\"payload\":\"hi\"}", fake_text(&f[i]));
    }
    /* The middle connection leaves; the list stays whole. */
    fake_gone(&f[2]);
    ASSERT_EQ(2, (int)wsch_hub_user_connections(T.hub, "alice"));
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "alice", "note", NULL, 0, &delivered));
    ASSERT_EQ(2, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"note\"}", fake_text(&f[0]));
    ASSERT_STR_EQ("{\"type\":\"note\"}", fake_text(&f[3]));
    fake_gone(&f[0]);
    fake_gone(&f[3]);
    ASSERT_EQ(0, (int)wsch_hub_user_connections(T.hub, "alice"));
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "alice", "note", NULL, 0, &delivered));
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(2, (int)stats().users);
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "bob", "note", NULL, 0, &delivered));
    ASSERT_EQ(1, (int)delivered);
    fake_gone(&f[1]);
    fake_gone(&f[4]);
    ASSERT_EQ(0, (int)stats().users);
    ASSERT_EQ(0, (int)hub_teardown(f, 5));
    PASS();
}

TEST cleanup_on_close_leaves_nothing(void) {
    fake f[4];
    size_t base, i;
    char ch[16];
    wsch_hub_counters s;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    base = T.mem.live_bytes;
    for (i = 0; i < 4; i++) {
        int k;
        ASSERT(fake_open(&f[i], i % 2 ? "x" : "y"));
        for (k = 0; k < 20; k++) {
            snprintf(ch, sizeof ch, "c%d", (int)((size_t)k * (i + 1) % 23));
            ASSERT_EQ(WSCH_OK, fake_sub(&f[i], ch));
        }
    }
    s = stats();
    ASSERT_EQ(4, (int)s.peers);
    ASSERT_EQ(4, (int)s.open);
    ASSERT_EQ(2, (int)s.users);
    ASSERT_EQ(80, (int)s.subscriptions);
    /* Clients go in every way: peer close frame, transport loss, server close. */
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(f[0].close_requested);
    ASSERT_EQ(WSCH_CLOSE_NORMAL, T.last_code);
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    ASSERT_EQ(WSCH_OK, wsch_hub_peer_close(T.hub, f[2].h, 1000, "done"));
    ASSERT(fake_closed_with(&f[2], 1000, "done"));
    ASSERT_EQ(WSCH_OK, fake_frame(&f[2], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(f[2].close_requested);
    fake_gone(&f[2]);
    ASSERT_EQ(WSCH_OK, fake_say(&f[3], "{\"type\":\"quit\"}"));
    ASSERT(fake_closed_with(&f[3], 1000, "bye"));
    fake_gone(&f[3]);
    s = stats();
    ASSERT_EQ(0, (int)s.peers);
    ASSERT_EQ(0, (int)s.open);
    ASSERT_EQ(0, (int)s.users);
    ASSERT_EQ(0, (int)s.channels);
    ASSERT_EQ(0, (int)s.subscriptions);
    ASSERT_EQ(0, (int)s.bytes_queued);
    ASSERT_EQ(4, T.disconnects);
    /* Everything but the hub's own tables and the slot array is returned. */
    ASSERT_EQ(base + 16 * sizeof(wsch__hub_slot) + 2 * 16 * sizeof(void *), T.mem.live_bytes);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

TEST stale_handles(void) {
    fake f[2];
    wsch_hub_peer old, zero;
    wsch_str uid;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "alice"));
    old = f[0].h;
    ASSERT_EQ(1, wsch_hub_peer_valid(T.hub, old));
    ASSERT_EQ(&f[0], wsch_hub_peer_user(T.hub, old));
    fake_gone(&f[0]);
    /* During on_disconnect the handle still worked and knew its user. */
    ASSERT_EQ(1, T.handle_valid_in_disconnect);
    ASSERT_EQ(5, (int)T.user_in_disconnect.len);
    ASSERT_EQ(0, wsch_hub_peer_valid(T.hub, old));
    ASSERT_EQ(NULL, wsch_hub_peer_user(T.hub, old));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_peer_user_id(T.hub, old, &uid));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_send(T.hub, old, "t", NULL, 0));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_subscribe(T.hub, old, "c"));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_unsubscribe(T.hub, old, "c"));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_peer_close(T.hub, old, 1000, NULL));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_writable(T.hub, old));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_timer_fired(T.hub, old, WSCH_HUB_TIMER_IDLE));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_transport_closed(T.hub, old));
    {
        char x[1] = {'x'};
        ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_feed(T.hub, old, x, 1));
    }
    ASSERT_EQ(WSCH_STATE_CLOSED, wsch_hub_peer_state(T.hub, old));
    ASSERT_EQ(0, (int)wsch_hub_peer_queued_bytes(T.hub, old));
    ASSERT_EQ(0, wsch_hub_is_subscribed(T.hub, old, "c"));
    /* The slot is reused with a new generation; the old handle stays stale. */
    ASSERT(fake_open(&f[1], "bob"));
    ASSERT_EQ(old.index, f[1].h.index);
    ASSERT(old.gen != f[1].h.gen);
    ASSERT_EQ(0, wsch_hub_peer_valid(T.hub, old));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_send(T.hub, old, "t", NULL, 0));
    ASSERT_EQ(0, (int)fake_pending(&f[1]));
    /* Handles never issued. */
    memset(&zero, 0, sizeof zero);
    ASSERT_EQ(0, wsch_hub_peer_valid(T.hub, zero));
    zero.index = 1000;
    zero.gen = 1;
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_send(T.hub, zero, "t", NULL, 0));
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

static void three_clients(wsch_hub_desc *d) { d->max_peers = 3; }

TEST client_limit(void) {
    fake f[4];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(three_clients));
    for (i = 0; i < 3; i++) ASSERT_EQ(WSCH_OK, fake_accept(&f[i]));
    ASSERT_EQ(WSCH_ERR_LIMIT, fake_accept(&f[3]));
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_FULL]);
    fake_gone(&f[1]);           /* a handshaking client's socket died */
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_HANDSHAKE]);
    ASSERT_EQ(WSCH_OK, fake_accept(&f[3]));
    fake_gone(&f[0]);
    fake_gone(&f[2]);
    fake_gone(&f[3]);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

static void two_channels(wsch_hub_desc *d) {
    d->max_channels_per_peer = 2;
    d->max_channel_len = 8;
}

TEST channel_limits(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(two_channels));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "12345678"));
    ASSERT(strstr(fake_text(&f[0]), "subscribed") != NULL);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "123456789"));
    ASSERT(strstr(fake_text(&f[0]), "bad_channel") != NULL);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "b"));
    ASSERT(strstr(fake_text(&f[0]), "subscribed") != NULL);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "c"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"too_many_channels\",\"message\":"
                  "\"subscription limit reached\",\"request\":\"subscribe\",\"channel\":\"c\"}}",
                  fake_text(&f[0]));
    ASSERT_EQ(WSCH_ERR_LIMIT, wsch_hub_subscribe(T.hub, f[0].h, "c"));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_subscribe(T.hub, f[0].h, "123456789"));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_subscribe(T.hub, f[0].h, "a b"));
    ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[0].h, "b"));      /* already */
    ASSERT_EQ(WSCH_OK, wsch_hub_unsubscribe(T.hub, f[0].h, "b"));
    ASSERT_EQ(0, wsch_hub_is_subscribed(T.hub, f[0].h, "b"));
    ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[0].h, "c"));
    ASSERT_EQ(1, wsch_hub_is_subscribed(T.hub, f[0].h, "c"));
    ASSERT_EQ(0, (int)fake_pending(&f[0]));     /* server-side calls send no acknowledgement */
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

static void tight_queue(wsch_hub_desc *d) { d->max_outbound_bytes = 1000; }

TEST slow_consumer_is_dropped_others_served(void) {
    fake f[3];
    size_t delivered, i, got[3] = {0, 0, 0};
    char payload[120];
    int rounds = 0;
    ASSERT_EQ(WSCH_OK, hub_setup(tight_queue));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "feed"));
        (void)fake_text(&f[i]);
    }
    f[1].take = 0;              /* stops reading */
    memset(payload, 'p', sizeof payload);
    payload[0] = '"';
    payload[99] = '"';
    for (rounds = 0; rounds < 30; rounds++) {
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "tick", payload, 100, &delivered));
        /* Each frame is 130 bytes (126 of envelope, a 4-byte header): 7 fit in 1000, 8 do not. */
        if (rounds < 7) ASSERT_EQ(3, (int)delivered);
    }
    ASSERT_EQ(2, (int)delivered);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    ASSERT_EQ(2, (int)wsch_hub_channel_size(T.hub, "feed"));
    /* The queue holds what fit (the close frame may go past the limit). */
    /* 7 frames, then the close frame (2 + 2 + 13) past the limit. */
    ASSERT_EQ_FMT(7 * 130 + 17, (int)wsch_hub_peer_queued_bytes(T.hub, f[1].h), "%d");
    ASSERT_EQ(1, f[1].armed[WSCH_TIMER_CLOSE]);
    ASSERT_EQ(WSCH_STATE_CLOSING, wsch_hub_peer_state(T.hub, f[1].h));
    for (i = 0; i < 3; i++) {
        if (i == 1) continue;
        while (fake_text(&f[i])[0]) got[i]++;
        ASSERT_EQ(30, (int)got[i]);
    }
    /* The reader wakes up: it sees what was queued, then the 4008. */
    f[1].take = FAKE_ALL;
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[1].h));
    while (fake_text(&f[1])[0]) got[1]++;
    ASSERT_EQ(7, (int)got[1]);
    ASSERT(fake_closed_with(&f[1], WSCH_HUB_CLOSE_SLOW_CONSUMER, "Slow consumer"));
    /* The close timer ends it if the peer never answers. */
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_TIMER_CLOSE));
    ASSERT(f[1].close_requested);
    ASSERT_EQ(1, T.disconnects);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, T.last_code);     /* the peer never sent its close frame */
    for (i = 0; i < 3; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* The same bytes go to every subscriber, encoded once, queued by reference:
   memory for a blocked broadcast does not grow with the payload per client. */
TEST broadcast_is_encoded_once_and_shared(void) {
    enum { N = 50, SIZE = 8000 };
    fake f[N];
    size_t i, before, delivered;
    uint64_t encodes;
    char *payload = (char *)malloc(SIZE);
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < N; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "big"));
        (void)fake_text(&f[i]);
        f[i].take = i % 2 ? 0 : 100;     /* all blocked or partly blocked */
    }
    memset(payload, 'z', SIZE);
    payload[0] = '"';
    payload[SIZE - 1] = '"';
    before = T.mem.live_bytes;
    encodes = stats().encodes;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "big", "blob", payload, SIZE, &delivered));
    ASSERT_EQ(N, (int)delivered);
    ASSERT_EQ(encodes + 1, stats().encodes);
    /* One frame of SIZE + overhead, plus one small queue node per client. */
    ASSERT(T.mem.live_bytes - before < SIZE + 200 + N * 64);
    for (i = 0; i < N; i++) {
        f[i].take = FAKE_ALL;
        ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[i].h));
    }
    ASSERT(T.mem.live_bytes <= before);
    for (i = 1; i < N; i++) {
        ASSERT_EQ(f[0].out_len - f[0].rd, f[i].out_len - f[i].rd);
        ASSERT_MEM_EQ(f[0].out + f[0].rd, f[i].out + f[i].rd, f[0].out_len - f[0].rd);
    }
    ASSERT_EQ(SIZE + 26, (int)strlen(fake_text(&f[0])));
    for (i = 0; i < N; i++) fake_gone(&f[i]);
    free(payload);
    ASSERT_EQ(0, (int)hub_teardown(f, N));
    PASS();
}

/* Many clients, random subscriptions, checked against a model. */
TEST many_clients_match_a_model(void) {
    enum { N = 600, C = 24 };
    static fake f[N];
    static unsigned char model[N][C];
    unsigned seed = 12345;
    size_t i, round;
    char ch[8];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    memset(model, 0, sizeof model);
    for (i = 0; i < N; i++) ASSERT(fake_open(&f[i], i % 7 ? "many" : "few"));
    for (round = 0; round < 6000; round++) {
        size_t k, c;
        seed = seed * 1103515245u + 12345u;
        k = (seed >> 8) % N;
        c = (seed >> 20) % C;
        snprintf(ch, sizeof ch, "ch%u", (unsigned)c);
        if ((seed >> 3) & 1) {
            ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[k].h, ch));
            model[k][c] = 1;
        } else {
            ASSERT_EQ(WSCH_OK, wsch_hub_unsubscribe(T.hub, f[k].h, ch));
            model[k][c] = 0;
        }
    }
    for (i = 0; i < N; i++) f[i].rd = f[i].out_len, f[i].head_done = 1;
    {
        size_t c, total = 0;
        for (c = 0; c < C; c++) {
            size_t delivered, want = 0;
            char payload[16];
            for (i = 0; i < N; i++) want += model[i][c];
            total += want;
            snprintf(ch, sizeof ch, "ch%u", (unsigned)c);
            snprintf(payload, sizeof payload, "%u", (unsigned)c);
            ASSERT_EQ(want, wsch_hub_channel_size(T.hub, ch));
            ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, ch, "m", payload, strlen(payload), &delivered));
            ASSERT_EQ(want, delivered);
        }
        ASSERT_EQ(total, (size_t)stats().subscriptions);
        for (i = 0; i < N; i++) {
            for (c = 0; c < C; c++) {
                if (!model[i][c]) continue;
                {
                    char expect[40];
                    snprintf(expect, sizeof expect, "{\"type\":\"m\",\"payload\":%u}", (unsigned)c);
                    ASSERT_STR_EQ(expect, fake_text(&f[i]));
                }
            }
            ASSERT_EQ(0, (int)fake_pending(&f[i]));
        }
    }
    /* Every other client leaves; the rest still get exactly their channels. */
    for (i = 0; i < N; i += 2) fake_gone(&f[i]);
    {
        size_t c, total = 0;
        for (c = 0; c < C; c++) {
            size_t want = 0;
            for (i = 1; i < N; i += 2) want += model[i][c];
            total += want;
            snprintf(ch, sizeof ch, "ch%u", (unsigned)c);
            ASSERT_EQ(want, wsch_hub_channel_size(T.hub, ch));
        }
        ASSERT_EQ(total, (size_t)stats().subscriptions);
    }
    ASSERT_EQ(N / 2, (int)stats().peers);
    for (i = 1; i < N; i += 2) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)stats().subscriptions);
    ASSERT_EQ(0, (int)stats().channels);
    ASSERT_EQ(0, (int)hub_teardown(f, N));
    PASS();
}

TEST auth_sources_and_rejections(void) {
    fake f[5];
    char v[128];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    /* Authorization header. */
    ASSERT_EQ(WSCH_OK, fake_request(&f[0], "/ws", "Authorization: Bearer hdr-user\r\n"));
    ASSERT_EQ(101, fake_status(&f[0]));
    ASSERT_STR_EQ("hdr-user", T.last_user);
    /* A bearer subprotocol, next to the application's own: the hub selects its own. */
    ASSERT_EQ(WSCH_OK, fake_request(&f[1], "/ws", "Sec-WebSocket-Protocol: wsch, bearer.proto-user\r\n"));
    ASSERT_EQ(101, fake_status(&f[1]));
    ASSERT_STR_EQ("proto-user", T.last_user);
    ASSERT(fake_header(&f[1], "Sec-WebSocket-Protocol", v, sizeof v));
    ASSERT_STR_EQ("wsch", v);
    /* Only the bearer entry offered: it is echoed, or a browser would fail. */
    ASSERT_EQ(WSCH_OK, fake_request(&f[2], "/ws", "Sec-WebSocket-Protocol: bearer.only\r\n"));
    ASSERT_EQ(101, fake_status(&f[2]));
    ASSERT(fake_header(&f[2], "Sec-WebSocket-Protocol", v, sizeof v));
    ASSERT_STR_EQ("bearer.only", v);
    /* A refused token: 101, then 4001 Unauthorized, and no on_connect. */
    T.connects = 0;
    ASSERT_EQ(WSCH_OK, fake_request(&f[3], "/ws?token=bad", NULL));
    ASSERT_EQ(101, fake_status(&f[3]));
    ASSERT(fake_closed_with(&f[3], WSCH_CLOSE_UNAUTHORIZED, "Unauthorized"));
    ASSERT_EQ(0, T.connects);
    ASSERT_EQ(WSCH_OK, fake_frame(&f[3], WSCH_OP_CLOSE, "\x0f\xa1", 2));
    ASSERT(f[3].close_requested);
    ASSERT_EQ(0, (int)wsch_hub_user_connections(T.hub, "bad"));
    /* No token at all. */
    ASSERT_EQ(WSCH_OK, fake_request(&f[4], "/ws", NULL));
    ASSERT(fake_closed_with(&f[4], WSCH_CLOSE_UNAUTHORIZED, "Unauthorized"));
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_UNAUTHORIZED]);
    /* A refused connection gets no broadcasts. */
    ASSERT_EQ(WSCH_ERR_STATE, wsch_hub_send(T.hub, f[4].h, "t", NULL, 0));
    fake_gone(&f[3]);
    fake_gone(&f[4]);
    ASSERT_EQ(0, T.disconnects);    /* never connected, never disconnected */
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    fake_gone(&f[2]);
    ASSERT_EQ(3, T.disconnects);
    ASSERT_EQ(0, (int)hub_teardown(f, 5));
    PASS();
}

static void http_401(wsch_hub_desc *d) {
    d->reject_with_http = 1;
    d->max_user_id_len = 8;
}

TEST auth_rejection_as_http_401(void) {
    fake f[3];
    char v[64];
    ASSERT_EQ(WSCH_OK, hub_setup(http_401));
    (void)fake_request(&f[0], "/ws?token=bad", NULL);
    ASSERT_EQ(401, fake_status(&f[0]));
    ASSERT(fake_header(&f[0], "WWW-Authenticate", v, sizeof v));
    ASSERT_STR_EQ("Bearer", v);
    ASSERT(f[0].close_requested);
    /* A user id longer than max_user_id_len is a refusal too. */
    (void)fake_request(&f[1], "/ws?token=123456789", NULL);
    ASSERT_EQ(401, fake_status(&f[1]));
    ASSERT(fake_open(&f[2], "12345678"));
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_UNAUTHORIZED]);
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    fake_gone(&f[2]);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

TEST origin_hook(void) {
    fake f[2];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    (void)fake_request(&f[0], "/ws?token=a", "Origin: http://evil.local\r\n");
    ASSERT_EQ(403, fake_status(&f[0]));
    ASSERT(f[0].close_requested);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_ORIGIN]);
    ASSERT_EQ(WSCH_OK, fake_request(&f[1], "/ws?token=a", "Origin: http://good.local\r\n"));
    ASSERT_EQ(101, fake_status(&f[1]));
    ASSERT_EQ(2, T.origin_checks);
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

TEST subscribe_authorization(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    T.deny_prefix = "user:";
    ASSERT(fake_open(&f[0], "mallory"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "user:42:notifications"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"forbidden\",\"message\":\"not allowed to subscribe\","
                  "\"request\":\"subscribe\",\"channel\":\"user:42:notifications\"}}",
                  fake_text(&f[0]));
    ASSERT_EQ(0, (int)wsch_hub_channel_size(T.hub, "user:42:notifications"));
    ASSERT_EQ(0, (int)stats().channels);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "lobby"));
    ASSERT(strstr(fake_text(&f[0]), "subscribed") != NULL);
    /* The server itself may still subscribe anyone anywhere. */
    ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[0].h, "user:7:inbox"));
    ASSERT_EQ(1, (int)wsch_hub_channel_size(T.hub, "user:7:inbox"));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST plain_http_on_other_paths(void) {
    fake f[4];
    char v[64];
    const char *body;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    /* A browser's GET / is no upgrade: on_http answers it. */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[0]));
    (void)fake_feed_str(&f[0], "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(200, fake_status(&f[0]));
    ASSERT(fake_header(&f[0], "Content-Type", v, sizeof v));
    ASSERT_STR_EQ("text/html", v);
    ASSERT(fake_header(&f[0], "Content-Length", v, sizeof v));
    ASSERT_STR_EQ("11", v);
    body = strstr((const char *)f[0].out, "\r\n\r\n");
    ASSERT(body && f[0].out_len == (size_t)(body + 4 - (const char *)f[0].out) + 11);
    ASSERT_MEM_EQ("<h1>hi</h1>", body + 4, 11);
    ASSERT(f[0].close_requested);
    /* Unknown path: 404 from the hook's default. */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[1]));
    (void)fake_feed_str(&f[1], "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(404, fake_status(&f[1]));
    /* HEAD: headers only. */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[2]));
    (void)fake_feed_str(&f[2], "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(200, fake_status(&f[2]));
    ASSERT_MEM_EQ("\r\n\r\n", f[2].out + f[2].out_len - 4, 4);
    /* on_http sees the token; extra headers pass through. */
    {
        fake g;
        ASSERT_EQ(WSCH_OK, fake_accept(&g));
        (void)fake_feed_str(&g, "GET /me?token=zed HTTP/1.1\r\nHost: x\r\n\r\n");
        ASSERT_EQ(200, fake_status(&g));
        ASSERT(fake_header(&g, "X-Token-Source", v, sizeof v));
        ASSERT_MEM_EQ("\r\n\r\nzed", g.out + g.out_len - 7, 7);
        fake_gone(&g);
        free(g.out);
    }
    /* A plain GET on the WebSocket path is refused by the connection. */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[3]));
    (void)fake_feed_str(&f[3], "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT(fake_status(&f[3]) >= 400);
    ASSERT_EQ(4, (int)stats().http_responses);
    ASSERT_EQ(0, T.connects);
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    fake_gone(&f[2]);
    fake_gone(&f[3]);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_HANDSHAKE]);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

static void short_idle(wsch_hub_desc *d) { d->idle_timeout_ms = 1000; }

TEST idle_timeout_with_clock(void) {
    fake f[2];
    ASSERT_EQ(WSCH_OK, hub_setup(short_idle));
    T.now = 5000;
    ASSERT(fake_open(&f[0], "a"));
    ASSERT(fake_open(&f[1], "b"));
    ASSERT_EQ(1000u, f[0].delay[WSCH_HUB_TIMER_IDLE]);
    T.now = 5600;
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"ping\"}"));
    (void)fake_text(&f[0]);
    T.now = 6000;
    /* f[0] spoke 400 ms ago: re-armed for the rest. f[1] is idle: closed. */
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_HUB_TIMER_IDLE));
    ASSERT_EQ(1, f[0].armed[WSCH_HUB_TIMER_IDLE]);
    ASSERT_EQ(600u, f[0].delay[WSCH_HUB_TIMER_IDLE]);
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(T.hub, f[0].h));
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_HUB_TIMER_IDLE));
    ASSERT(fake_closed_with(&f[1], 1000, "Idle timeout"));
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_IDLE]);
    T.now = 6600;
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_HUB_TIMER_IDLE));
    ASSERT(fake_closed_with(&f[0], 1000, "Idle timeout"));
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_IDLE]);
    /* A stray fire after that changes nothing. */
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_HUB_TIMER_IDLE));
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_IDLE]);
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

static void idle_no_clock(wsch_hub_desc *d) {
    d->idle_timeout_ms = 1000;
    d->now_ms = NULL;
}

TEST idle_timeout_without_clock(void) {
    fake f[1];
    unsigned sets;
    ASSERT_EQ(WSCH_OK, hub_setup(idle_no_clock));
    ASSERT(fake_open(&f[0], "a"));
    sets = f[0].timer_sets;
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"ping\"}"));
    ASSERT_EQ(sets + 1, f[0].timer_sets);       /* every read re-arms it */
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_HUB_TIMER_IDLE));
    (void)fake_text(&f[0]);
    ASSERT(fake_closed_with(&f[0], 1000, "Idle timeout"));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

static void never_idle(wsch_hub_desc *d) { d->idle_timeout_ms = WSCH_HUB_NO_TIMEOUT; }

TEST idle_timeout_disabled(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(never_idle));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT_EQ(0, f[0].armed[WSCH_HUB_TIMER_IDLE]);
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_HUB_TIMER_IDLE));
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(T.hub, f[0].h));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST handshake_timeout(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[0]));
    ASSERT_EQ(1, f[0].armed[WSCH_TIMER_HANDSHAKE]);
    ASSERT_EQ(WSCH_OK, fake_feed(&f[0], "GET /ws HT", 10));
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_TIMER_HANDSHAKE));
    ASSERT(f[0].close_requested);
    fake_gone(&f[0]);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_HANDSHAKE]);
    ASSERT_EQ(0, T.disconnects);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST graceful_shutdown(void) {
    fake f[4];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "c"));
        (void)fake_text(&f[i]);
    }
    ASSERT_EQ(WSCH_OK, fake_accept(&f[3]));     /* still in its handshake */
    wsch_hub_shutdown(T.hub);
    for (i = 0; i < 3; i++) ASSERT(fake_closed_with(&f[i], WSCH_CLOSE_GOING_AWAY, "Server shutting down"));
    ASSERT(f[3].close_requested);
    ASSERT_EQ(0, (int)stats().subscriptions);
    {
        fake extra;
        wsch_hub_peer h;
        ASSERT_EQ(WSCH_ERR_STATE, wsch_hub_accept(T.hub, NULL, &extra, &h));
    }
    /* Peers answer; the hub closes each transport; the caller reports it. */
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(WSCH_OK, fake_frame(&f[i], WSCH_OP_CLOSE, "\x03\xe9", 2));
        ASSERT(f[i].close_requested);
        fake_gone(&f[i]);
    }
    ASSERT_EQ(1, (int)stats().peers);
    fake_gone(&f[3]);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(3, T.disconnects);
    ASSERT_EQ(WSCH_CLOSE_GOING_AWAY, T.last_code);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

/* A client the hub closes during its handshake (close_client, shutdown)
   gets close() once and nothing more: no answer to request bytes the
   caller still feeds, no second close() from the handshake timer. */
TEST handshaking_client_closed_by_hub_stays_quiet(void) {
    fake f[2];
    const char *req = "GET /ws?token=u HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[1]));
    ASSERT_EQ(WSCH_OK, wsch_hub_peer_close(T.hub, f[0].h, 1000, "bye"));
    wsch_hub_shutdown(T.hub);
    for (i = 0; i < 2; i++) {
        ASSERT_EQ(1, f[i].closes);
        ASSERT(fake_feed_str(&f[i], req) != WSCH_OK);
        (void)wsch_hub_timer_fired(T.hub, f[i].h, WSCH_TIMER_HANDSHAKE);
        ASSERT_EQ(0, (int)f[i].out_len);
        ASSERT_EQ(1, f[i].closes);
        fake_gone(&f[i]);
    }
    ASSERT_EQ(0, T.connects);
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_HANDSHAKE]);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

/* The demo's publish, from inside on_message; also partial writes. */
TEST publish_from_handler_and_partial_writes(void) {
    fake f[3];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "room"));
        (void)fake_text(&f[i]);
    }
    f[2].take = 3;      /* a socket that takes 3 bytes per call */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"publish\",\"payload\":{\"channel\":\"room\",\"data\":\"hey\"}}"));
    for (i = 0; i < 2; i++)
        ASSERT_STR_EQ("{\"type\":\"message\",\"payload\":{\"channel\":\"room\",\"data\":\"hey\"}}", fake_text(&f[i]));
    while (wsch_hub_peer_queued_bytes(T.hub, f[2].h)) ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[2].h));
    ASSERT_STR_EQ("{\"type\":\"message\",\"payload\":{\"channel\":\"room\",\"data\":\"hey\"}}", fake_text(&f[2]));
    for (i = 0; i < 3; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* The transport's close callback may report the closure at once. */
static size_t sync_send(const void *d, size_t n, void *u) { return f_send(d, n, u); }
static void sync_close(void *user) {
    fake *f = (fake *)user;
    f_close(f);
    fake_gone(f);
}
static const wsch_hub_transport sync_transport = {sync_send, sync_close, f_timer_set, f_timer_cancel};

TEST close_callback_reports_synchronously(void) {
    fake f[3];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(tight_queue));
    for (i = 0; i < 3; i++) {
        fake_init(&f[i]);
        ASSERT_EQ(WSCH_OK, wsch_hub_accept(T.hub, &sync_transport, &f[i], &f[i].h));
        {
            const char *req = "GET /ws?token=s HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
            (void)fake_feed(&f[i], req, strlen(req));
        }
        ASSERT_EQ(101, fake_status(&f[i]));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "c"));
    }
    /* A peer close: the hub closes the transport from inside feed. */
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(f[0].reported);
    ASSERT_EQ(0, wsch_hub_peer_valid(T.hub, f[0].h));
    /* A slow consumer whose close timer fires during the broadcast loop's drops. */
    f[1].take = 0;
    for (i = 0; i < 20; i++) (void)wsch_hub_broadcast(T.hub, "c", "t", "\"0123456789012345678901234567890123456789\"", 42, NULL);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_TIMER_CLOSE));
    ASSERT(f[1].reported);
    /* quit closes from inside its own on_message. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[2], "{\"type\":\"quit\"}"));
    ASSERT_EQ(WSCH_OK, fake_frame(&f[2], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(f[2].reported);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* Opens a client on transport t (its close may report synchronously). */
static int fake_open_with(fake *f, const wsch_hub_transport *t, const char *user) {
    char req[512];
    fake_init(f);
    if (wsch_hub_accept(T.hub, t, f, &f->h) != WSCH_OK) return 0;
    snprintf(req, sizeof req,
             "GET /ws?token=%s HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
             user);
    (void)fake_feed_str(f, req);
    return fake_status(f) == 101 && wsch_hub_peer_state(T.hub, f->h) == WSCH_STATE_OPEN;
}

/* A conn can end inside a delivery's send: send() took part of the frame
   and the queue could not grow. The walk over the subscribers (or the
   user's connections) goes on over the others, unchanged; the cut client
   is finished after it (1006, counted as out of memory), also when its
   close() reports the transport closed at once. */
TEST conn_cut_inside_a_delivery(void) {
    fake f[7];
    size_t delivered = 9, i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_open_with(&f[i], i == 0 ? &sync_transport : &fake_transport, "chan"));
        ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[i].h, "c"));
    }
    ASSERT(fake_open_with(&f[3], &fake_transport, "solo"));
    ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[3].h, "s"));
    for (i = 4; i < 7; i++) ASSERT(fake_open_with(&f[i], i == 6 ? &sync_transport : &fake_transport, "u"));
    for (i = 0; i < 7; i++) (void)fake_pending(&f[i]);

    /* The first subscriber is cut: the other two still get the message. */
    f[0].take = 1;
    T.mem.fail_at = (long)T.mem.allocs + 2;      /* the frame is allocated, the queue chunk is not */
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "t", "1", 1, &delivered));
    T.mem.fail_at = 0;
    ASSERT_EQ(2, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":1}", fake_text(&f[1]));
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":1}", fake_text(&f[2]));
    ASSERT_EQ(1, f[0].closes);
    ASSERT(f[0].reported);
    ASSERT_EQ(0, wsch_hub_peer_valid(T.hub, f[0].h));
    ASSERT_EQ(1, T.disconnects);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, T.last_code);
    ASSERT_EQ(2, (int)wsch_hub_channel_size(T.hub, "c"));

    /* The only subscriber is cut: the channel goes, after the walk. */
    f[3].take = 1;
    T.mem.fail_at = (long)T.mem.allocs + 2;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "s", "t", "2", 1, &delivered));
    T.mem.fail_at = 0;
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(0, (int)wsch_hub_channel_size(T.hub, "s"));
    ASSERT_EQ(2, T.disconnects);
    fake_gone(&f[3]);

    /* A user's first connection (the newest, f[6]) is cut and reports its
       transport closed inside close(): the other two still get it. */
    f[6].take = 1;
    T.mem.fail_at = (long)T.mem.allocs + 2;
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "u", "t", "3", 1, &delivered));
    T.mem.fail_at = 0;
    ASSERT_EQ(2, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":3}", fake_text(&f[4]));
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":3}", fake_text(&f[5]));
    ASSERT(f[6].reported);
    ASSERT_EQ(2, (int)wsch_hub_user_connections(T.hub, "u"));
    ASSERT_EQ(3, T.disconnects);
    ASSERT_EQ(3, (int)stats().drops[WSCH_HUB_DROP_NOMEM]);
    for (i = 0; i < 7; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 7));
    PASS();
}

/* Heap bytes per idle connection, counted through the allocator. */
TEST heap_per_idle_connection(void) {
    enum { N = 1000 };
    static fake f[N];
    size_t base, i, anon, named, subscribed;
    char user[16];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    base = T.mem.live_bytes;
    for (i = 0; i < N; i++) ASSERT(fake_request(&f[i], "/ws?token=same", NULL) == WSCH_OK && fake_status(&f[i]) == 101);
    anon = (T.mem.live_bytes - base) / N;
    for (i = 0; i < N; i++) {
        fake_gone(&f[i]);
        free(f[i].out);
    }
    base = T.mem.live_bytes;
    for (i = 0; i < N; i++) {
        snprintf(user, sizeof user, "user%u", (unsigned)i);
        ASSERT(fake_open(&f[i], user));
    }
    named = (T.mem.live_bytes - base) / N;
    for (i = 0; i < N; i++) ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[i].h, "all"));
    subscribed = (T.mem.live_bytes - base) / N;
    printf("heap per idle connection: %u bytes (one shared user id), %u (distinct user ids), %u (and one channel)\n",
           (unsigned)anon, (unsigned)named, (unsigned)subscribed);
    ASSERT(anon <= 512);
    ASSERT(named <= 512);
    ASSERT(subscribed <= 512);
    for (i = 0; i < N; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, N));
    PASS();
}

/* Every allocation in a whole scenario fails in turn: every call returns
   OK or an error, and destroy leaves nothing behind. */
static int run_scenario(long fail_at, int *hit) {
    fake f[4];
    size_t i;
    int r;
    if (hub_setup(NULL) != WSCH_OK) {
        *hit = 1;
        return T.mem.live_bytes == 0;
    }
    T.mem.fail_at = fail_at;
    T.mem.allocs = 0;
    for (i = 0; i < 4; i++) {
        char req[256];
        r = fake_accept(&f[i]);
        if (r == WSCH_ERR_NOMEM && !wsch_hub_peer_valid(T.hub, f[i].h)) continue;
        if (r != WSCH_OK) return 0;
        snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 i == 3 ? "/" : (i % 2 ? "/ws?token=ann" : "/ws?token=ben"));
        (void)fake_feed(&f[i], req, strlen(req));   /* fails the connection when memory runs out */
    }
    for (i = 0; i < 3; i++) {
        if (!wsch_hub_peer_valid(T.hub, f[i].h)) continue;
        (void)fake_sub(&f[i], "alpha");
        (void)fake_sub(&f[i], i ? "beta" : "gamma");
        (void)fake_say(&f[i], "{\"type\":\"ping\",\"payload\":[1]}");
        (void)fake_say(&f[i], "{\"type\":\"publish\",\"payload\":{\"channel\":\"alpha\",\"data\":1}}");
    }
    f[2].take = 5;
    r = wsch_hub_broadcast(T.hub, "alpha", "t", "{\"k\":1}", 7, NULL);
    if (r != WSCH_OK && r != WSCH_ERR_NOMEM) return 0;
    r = wsch_hub_send_to_user(T.hub, "ann", "t", "1", 1, NULL);
    if (r != WSCH_OK && r != WSCH_ERR_NOMEM) return 0;
    r = wsch_hub_subscribe(T.hub, f[0].h, "delta");
    if (r != WSCH_OK && r != WSCH_ERR_NOMEM && r != WSCH_ERR_STALE && r != WSCH_ERR_STATE) return 0;
    (void)fake_say(&f[1], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"beta\"}}");
    fake_gone(&f[1]);
    wsch_hub_shutdown(T.hub);
    for (i = 0; i < 4; i++) fake_gone(&f[i]);
    *hit = T.mem.failed > 0;
    if (stats().peers != 0 || stats().subscriptions != 0 || stats().channels != 0 || stats().users != 0) return 0;
    return hub_teardown(f, 4) == 0;
}

TEST failing_allocator_never_leaks(void) {
    long k;
    int hit = 1;
    for (k = 1; hit && k < 2000; k++) {
        if (!run_scenario(k, &hit)) {
            fprintf(stdout, "\nscenario failed with allocation %ld refused\n", k);
            FAIL();
        }
    }
    ASSERT(!hit);       /* the last run needed no failure: every allocation was tried */
    if (greatest_info.verbose) printf("failing allocator: %ld allocation sites tried\n", k - 1);
    ASSERT(k > 20);
    PASS();
}

/* Destroying a hub with live clients frees them without calling back. */
TEST destroy_with_live_clients(void) {
    fake f[3];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT(fake_open(&f[1], "b"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "c"));
    f[1].take = 0;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "queued", "1", 1, NULL));   /* left in the queue */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[2]));                                    /* mid-handshake */
    for (i = 0; i < 3; i++) f[i].timer_sets = 0, f[i].close_requested = 0;
    T.disconnects = 0;
    wsch_hub_destroy(T.hub);
    T.hub = NULL;
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(1, f[i].armed[i == 2 ? WSCH_TIMER_HANDSHAKE : WSCH_HUB_TIMER_IDLE]);  /* nobody touched them */
        ASSERT_EQ(0, f[i].close_requested);
        free(f[i].out);
    }
    ASSERT_EQ(0, T.disconnects);
    ASSERT_EQ(0, (int)T.mem.live_bytes);
    PASS();
}

TEST desc_defaults_and_create_errors(void) {
    wsch_hub_desc d = wsch_hub_desc_defaults(NULL);
    wsch_hub *h = NULL;
    ASSERT_STR_EQ("/ws", d.path);
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_PEERS, d.max_peers);
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_CHANNELS_PER_PEER, d.max_channels_per_peer);
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_CHANNEL_LEN, d.max_channel_len);
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_MESSAGE_SIZE, d.max_message_size);
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_OUTBOUND_BYTES, d.max_outbound_bytes);
    ASSERT_EQ(WSCH_HUB_DEFAULT_IDLE_TIMEOUT_MS, d.idle_timeout_ms);
    d.max_channel_len = WSCH_HUB_MAX_CHANNEL_LEN + 1;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_create(&d, &h));
    ASSERT_EQ(NULL, h);
    d = wsch_hub_desc_defaults(NULL);
    d.path = "ws";
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_create(&d, &h));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_create(NULL, NULL));
    ASSERT_EQ(WSCH_OK, wsch_hub_create(NULL, &h));
    {
        wsch_hub_peer c;
        ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_accept(h, NULL, NULL, &c));   /* no transport anywhere */
    }
    wsch_hub_destroy(h);
    wsch_hub_destroy(NULL);
    /* Creation under allocation failure. */
    {
        long k;
        for (k = 1; k <= 3; k++) {
            counting mem;
            int r;
            memset(&mem, 0, sizeof mem);
            mem.fail_at = k;
            d = wsch_hub_desc_defaults(NULL);
            d.allocator.alloc = t_alloc;
            d.allocator.free = t_free;
            d.allocator.user = &mem;
            h = NULL;
            r = wsch_hub_create(&d, &h);
            ASSERT(r == WSCH_OK || (r == WSCH_ERR_NOMEM && h == NULL));
            wsch_hub_destroy(h);
            ASSERT_EQ(0, (int)mem.live_bytes);
        }
    }
    PASS();
}

/* ---- the bridge: two hubs joined by an in-memory pub/sub bus -------------- */

/* The bus behaves like Redis pub/sub: a message published on a name goes to
   every hub listening to that name, the publisher included. Deliveries are
   queued and run by bus_pump(), outside the hub calls that published them
   (bridge callbacks must not call back into a hub). */
#define BUS_NODES 2
#define BUS_NAMES 64
#define BUS_NAME_MAX 300

typedef struct bus_msg {
    int node;                   /* the hub it goes to */
    char name[BUS_NAME_MAX];
    size_t name_len;
    char *data;
    size_t len;
} bus_msg;

typedef struct bus_node {
    wsch_hub *hub;
    counting mem;               /* node 0 uses T.mem instead */
    char names[BUS_NAMES][BUS_NAME_MAX]; /* what this hub listens to */
    size_t lens[BUS_NAMES];
    int count;
    int subscribes, unsubscribes, publishes;
    int twice;                  /* subscribe to a name held, or unsubscribe of one not held */
    int fail_publish;
} bus_node;

typedef struct bus {
    bus_node node[BUS_NODES];
    bus_msg q[64];
    int qlen;
    unsigned char seed;
} bus;

static bus B;

static int bus_find(const bus_node *n, const char *name, size_t len) {
    int i;
    for (i = 0; i < n->count; i++) {
        if (n->lens[i] == len && memcmp(n->names[i], name, len) == 0) return i;
    }
    return -1;
}

static int bus_has(int node, const char *name) { return bus_find(&B.node[node], name, strlen(name)) >= 0; }

static void b_subscribe(const char *name, size_t len, void *user) {
    bus_node *n = (bus_node *)user;
    n->subscribes++;
    if (name[len] != '\0' || len >= BUS_NAME_MAX || bus_find(n, name, len) >= 0 || n->count == BUS_NAMES) {
        n->twice++;
        return;
    }
    memcpy(n->names[n->count], name, len);
    n->lens[n->count++] = len;
}

static void b_unsubscribe(const char *name, size_t len, void *user) {
    bus_node *n = (bus_node *)user;
    int k = bus_find(n, name, len);
    n->unsubscribes++;
    if (k < 0) {
        n->twice++;
        return;
    }
    n->count--;
    memcpy(n->names[k], n->names[n->count], n->lens[n->count]);
    n->lens[k] = n->lens[n->count];
}

static int b_publish(const char *name, size_t len, const void *data, size_t data_len, void *user) {
    bus_node *n = (bus_node *)user;
    int k;
    n->publishes++;
    if (n->fail_publish) return WSCH_ERR_NOMEM;
    for (k = 0; k < BUS_NODES; k++) {
        bus_msg *m;
        if (bus_find(&B.node[k], name, len) < 0) continue;
        if (B.qlen == (int)(sizeof B.q / sizeof B.q[0])) return WSCH_ERR_LIMIT;
        m = &B.q[B.qlen++];
        m->node = k;
        memcpy(m->name, name, len);
        m->name_len = len;
        m->data = (char *)malloc(data_len);
        memcpy(m->data, data, data_len);
        m->len = data_len;
    }
    return WSCH_OK;
}

/* Deterministic, but different for every hub: origin ids never collide. */
static void b_random(void *buf, size_t len, void *user) {
    unsigned char *p = (unsigned char *)buf;
    size_t i;
    (void)user;
    for (i = 0; i < len; i++) p[i] = (unsigned char)(++B.seed * 37u);
}

/* Delivers everything queued, in order; returns how many messages. */
static int bus_pump(void) {
    int i, n = B.qlen;
    for (i = 0; i < n; i++) {
        bus_msg *m = &B.q[i];
        (void)wsch_hub_bridge_deliver(B.node[m->node].hub, m->name, m->name_len, m->data, m->len, NULL);
        free(m->data);
    }
    /* Delivering never publishes: nothing may have been queued meanwhile. */
    if (B.qlen != n) return -1;
    B.qlen = 0;
    return n;
}

static void with_bridge(wsch_hub_desc *d) {
    d->bridge.subscribe = b_subscribe;
    d->bridge.unsubscribe = b_unsubscribe;
    d->bridge.publish = b_publish;
    d->bridge.user = &B.node[0];
    d->random_bytes = b_random;
}

static void (*bridge_adjust)(wsch_hub_desc *d);

static void with_bridge_adjusted(wsch_hub_desc *d) {
    with_bridge(d);
    if (bridge_adjust) bridge_adjust(d);
}

/* Hub 0 in T.hub (T.mem), hub 1 beside it with its own allocator count; the
   same hooks and limits. WSCH_OK or the failing create's code. */
static int bridge_setup(void (*adjust)(wsch_hub_desc *d)) {
    wsch_hub_desc d;
    int r;
    memset(&B, 0, sizeof B);
    bridge_adjust = adjust;
    r = hub_setup(with_bridge_adjusted);
    if (r != WSCH_OK) return r;
    B.node[0].hub = T.hub;
    d = T.desc;
    d.allocator.user = &B.node[1].mem;
    d.bridge.user = &B.node[1];
    return wsch_hub_create(&d, &B.node[1].hub);
}

/* Destroys both hubs; returns the heap bytes left behind by both (must be 0). */
static size_t bridge_teardown(fake *fakes, size_t n) {
    int i;
    for (i = 0; i < B.qlen; i++) free(B.q[i].data);
    B.qlen = 0;
    wsch_hub_destroy(B.node[1].hub);
    B.node[1].hub = NULL;
    return hub_teardown(fakes, n) + B.node[1].mem.live_bytes;
}

/* fake_open on hub `node`. */
static int fake_open_at(fake *f, int node, const char *user) {
    wsch_hub *keep = T.hub;
    int ok;
    T.hub = B.node[node].hub;
    ok = fake_open(f, user);
    T.hub = keep;
    return ok;
}

static wsch_hub_counters node_stats(int node) {
    wsch_hub_counters s;
    wsch_hub_stats(B.node[node].hub, &s);
    return s;
}

/* The next text is exactly `want` and nothing else is pending. */
static int only_text(fake *f, const char *want) {
    return strcmp(fake_text(f), want) == 0 && fake_pending(f) == 0;
}

TEST bridge_interest_follows_subscriptions(void) {
    fake f[3];
    bus_node *n0 = &B.node[0];
    ASSERT_EQ(WSCH_OK, bridge_setup(NULL));
    /* A user's first connection asks for the user's bridge channel, once. */
    ASSERT(fake_open(&f[0], "alice"));
    ASSERT(bus_has(0, "#user:alice"));
    ASSERT(fake_open(&f[1], "alice"));
    ASSERT_EQ(1, n0->subscribes);
    ASSERT(!fake_open(&f[2], "bad"));           /* refused by authenticate: asks for nothing */
    fake_gone(&f[2]);
    ASSERT_EQ(1, n0->count);
    /* A channel's first subscriber asks for it; the second does not. */
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "news"));
    ASSERT(bus_has(0, "news"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "news"));
    ASSERT_EQ(2, n0->subscribes);
    ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[1].h, "sports"));   /* server-side too */
    ASSERT(bus_has(0, "sports"));
    T.deny_prefix = "secret";
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "secret.x"));                   /* forbidden: nothing */
    ASSERT(!bus_has(0, "secret.x"));
    ASSERT_EQ(3, n0->count);
    ASSERT_EQ(3, (int)stats().bridge_channels);
    /* One of two subscribers leaves: still needed. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"news\"}}"));
    ASSERT(bus_has(0, "news"));
    ASSERT_EQ(0, n0->unsubscribes);
    /* After a lost link the bridge knows nothing; resubscribe replays what is needed. */
    n0->count = 0;
    wsch_hub_bridge_resubscribe(T.hub);
    ASSERT_EQ(3, n0->count);
    ASSERT(bus_has(0, "#user:alice") && bus_has(0, "news") && bus_has(0, "sports"));
    /* The last subscriber leaves: by unsubscribing, by closing. */
    ASSERT_EQ(WSCH_OK, wsch_hub_unsubscribe(T.hub, f[1].h, "sports"));
    ASSERT(!bus_has(0, "sports"));
    fake_gone(&f[1]);
    ASSERT(!bus_has(0, "news"));
    ASSERT(bus_has(0, "#user:alice"));          /* f[0] is still alice */
    fake_gone(&f[0]);
    ASSERT_EQ(0, n0->count);
    ASSERT_EQ(0, n0->twice);
    ASSERT_EQ(3, n0->unsubscribes);
    ASSERT_EQ(0, (int)stats().bridge_channels);
    /* The other hub heard nothing of it, and nothing was published. */
    ASSERT_EQ(0, B.node[1].subscribes);
    ASSERT_EQ(0, n0->publishes + B.node[1].publishes);
    ASSERT_EQ(0, (int)bridge_teardown(f, 3));
    PASS();
}

TEST bridge_broadcast_exactly_once(void) {
    fake a[2], b[3];
    size_t delivered = 9, i;
    int published;
    wsch_hub_counters s0, s1;
    ASSERT_EQ(WSCH_OK, bridge_setup(NULL));
    ASSERT(fake_open(&a[0], "ann") && fake_open(&a[1], "amy"));
    ASSERT(fake_open_at(&b[0], 1, "ben") && fake_open_at(&b[1], 1, "bea") && fake_open_at(&b[2], 1, "bob"));
    ASSERT_EQ(WSCH_OK, fake_sub(&a[0], "news"));
    ASSERT_EQ(WSCH_OK, fake_sub(&b[0], "news"));
    ASSERT_EQ(WSCH_OK, fake_sub(&b[1], "news"));
    ASSERT_EQ(WSCH_OK, fake_sub(&b[2], "other"));
    ASSERT_EQ(WSCH_OK, fake_sub(&a[1], "solo"));
    for (i = 0; i < 2; i++) (void)fake_pending(&a[i]);      /* the acknowledgements */
    for (i = 0; i < 3; i++) (void)fake_pending(&b[i]);

    /* From the API on hub 0: local delivery at once, the rest through the bus. */
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "news", "headline", "{\"n\":1}", 7, &delivered));
    ASSERT_EQ(1, (int)delivered);
    ASSERT_EQ(2, B.qlen);                       /* to hub 1, and back to hub 0 as Redis does */
    ASSERT_EQ(2, bus_pump());
    ASSERT(only_text(&a[0], "{\"type\":\"headline\",\"payload\":{\"n\":1}}"));   /* once, not twice */
    ASSERT(only_text(&b[0], "{\"type\":\"headline\",\"payload\":{\"n\":1}}"));
    ASSERT(only_text(&b[1], "{\"type\":\"headline\",\"payload\":{\"n\":1}}"));
    ASSERT_EQ(0, (int)fake_pending(&a[1]));
    ASSERT_EQ(0, (int)fake_pending(&b[2]));
    s0 = node_stats(0);
    s1 = node_stats(1);
    ASSERT_EQ(1, (int)s0.bridge_published);
    ASSERT_EQ(1, (int)s0.bridge_own);
    ASSERT_EQ(0, (int)s0.bridge_received);
    ASSERT_EQ(1, (int)s1.bridge_received);
    ASSERT_EQ(0, (int)s1.bridge_published);     /* delivering from the bridge never publishes */

    /* From a client on hub 1 (the test's publish handler broadcasts). */
    published = B.node[0].publishes + B.node[1].publishes;
    ASSERT_EQ(WSCH_OK, fake_say(&b[1], "{\"type\":\"publish\",\"payload\":{\"channel\":\"news\",\"data\":2}}"));
    ASSERT_EQ(published + 1, B.node[0].publishes + B.node[1].publishes);
    ASSERT_EQ(2, bus_pump());
    ASSERT_EQ(published + 1, B.node[0].publishes + B.node[1].publishes);
    for (i = 0; i < 2; i++) {
        fake *f = i ? &b[0] : &a[0];
        ASSERT(only_text(f, "{\"type\":\"message\",\"payload\":{\"channel\":\"news\",\"data\":2}}"));
    }
    ASSERT(only_text(&b[1], "{\"type\":\"message\",\"payload\":{\"channel\":\"news\",\"data\":2}}"));

    /* A channel only hub 0 listens to goes back to hub 0 alone (and is skipped there). */
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "solo", "t", NULL, 0, &delivered));
    ASSERT_EQ(1, B.qlen);
    ASSERT_EQ(1, bus_pump());
    ASSERT(only_text(&a[1], "{\"type\":\"t\"}"));
    /* Nobody anywhere: published all the same (the hub cannot know), carried nowhere. */
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "void", "t", NULL, 0, &delivered));
    ASSERT_EQ(0, B.qlen);
    s0 = node_stats(0);
    s1 = node_stats(1);
    ASSERT_EQ(3, (int)s0.bridge_published);
    ASSERT_EQ(2, (int)s0.bridge_own);           /* "void" never came back */
    ASSERT_EQ(1, (int)s0.bridge_received);
    ASSERT_EQ(1, (int)s1.bridge_published);
    ASSERT_EQ(1, (int)s1.bridge_own);
    ASSERT_EQ(1, (int)s1.bridge_received);
    ASSERT_EQ(0, (int)(s0.bridge_refused + s1.bridge_refused + s0.bridge_publish_errors + s1.bridge_publish_errors));
    for (i = 0; i < 2; i++) fake_gone(&a[i]);
    for (i = 0; i < 3; i++) fake_gone(&b[i]);
    ASSERT_EQ(0, B.node[0].count + B.node[1].count);
    ASSERT_EQ(0, B.node[0].twice + B.node[1].twice);
    ASSERT_EQ(0, (int)bridge_teardown(a, 2));
    for (i = 0; i < 3; i++) free(b[i].out);
    PASS();
}

TEST bridge_send_to_user_across_hubs(void) {
    fake f[5];
    size_t delivered = 9, i;
    ASSERT_EQ(WSCH_OK, bridge_setup(NULL));
    ASSERT(fake_open(&f[0], "alice") && fake_open(&f[1], "alice"));
    ASSERT(fake_open_at(&f[2], 1, "alice") && fake_open_at(&f[3], 1, "bob"));
    ASSERT(fake_open(&f[4], "carol"));
    ASSERT(bus_has(0, "#user:alice") && bus_has(1, "#user:alice"));
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(B.node[1].hub, "alice", "note", "\"hi\"", 4, &delivered));
    ASSERT_EQ(1, (int)delivered);
    ASSERT_EQ(2, bus_pump());
    for (i = 0; i < 3; i++) ASSERT(only_text(&f[i], "{\"type\":\"note\",\"payload\":\"hi\"}"));
    ASSERT_EQ(0, (int)(fake_pending(&f[3]) + fake_pending(&f[4])));
    /* A user connected to the other hub only. */
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(B.node[1].hub, "carol", "note", "1", 1, &delivered));
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(1, bus_pump());
    ASSERT(only_text(&f[4], "{\"type\":\"note\",\"payload\":1}"));
    /* Nobody anywhere: published, carried nowhere. No user id: not published at all. */
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "dave", "note", NULL, 0, &delivered));
    ASSERT_EQ(0, B.qlen);
    ASSERT_EQ(1, B.node[0].publishes);
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "", "note", NULL, 0, &delivered));
    ASSERT_EQ(1, B.node[0].publishes);
    /* Alice leaves hub 1: it stops listening, and hub 0's message stays at hub 0. */
    fake_gone(&f[2]);
    ASSERT(!bus_has(1, "#user:alice"));
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "alice", "note", NULL, 0, &delivered));
    ASSERT_EQ(2, (int)delivered);
    ASSERT_EQ(1, bus_pump());                   /* its own copy, skipped */
    ASSERT(only_text(&f[0], "{\"type\":\"note\"}") && only_text(&f[1], "{\"type\":\"note\"}"));
    ASSERT_EQ(2, (int)node_stats(0).bridge_received);
    ASSERT_EQ(0, (int)node_stats(1).bridge_received);
    ASSERT_EQ(2, (int)node_stats(0).bridge_own + (int)node_stats(1).bridge_own);
    for (i = 0; i < 5; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, B.node[0].count + B.node[1].count + B.node[0].twice + B.node[1].twice);
    ASSERT_EQ(0, (int)bridge_teardown(f, 5));
    PASS();
}

/* Bridge input is untrusted: everything malformed is refused and counted,
   and reaches no client. */
TEST bridge_refuses_malformed_input(void) {
    static const struct {
        const char *name, *data;
        int err;
    } bad[] = {
        {"news", "", WSCH_ERR_ARG},
        {"news", "wsch1", WSCH_ERR_ARG},
        {"news", "wsch2 00000000000000aa {\"type\":\"t\"}", WSCH_ERR_ARG},
        {"news", "wsch1 00000000000000AA {\"type\":\"t\"}", WSCH_ERR_ARG},      /* lowercase only */
        {"news", "wsch1 00000000000000a {\"type\":\"t\"}", WSCH_ERR_ARG},       /* 15 digits */
        {"news", "wsch1 00000000000000ag {\"type\":\"t\"}", WSCH_ERR_ARG},
        {"news", "wsch1 00000000000000aa{\"type\":\"t\"}", WSCH_ERR_ARG},
        {"news", "wsch1 00000000000000aa ", WSCH_ERR_JSON},
        {"news", "wsch1 00000000000000aa {\"type\":\"t\"", WSCH_ERR_JSON},
        {"news", "wsch1 00000000000000aa {\"type\":\"t\",\"type\":\"u\"}", WSCH_ERR_JSON},
        {"news", "wsch1 00000000000000aa {\"type\":1}", WSCH_ERR_NO_TYPE},
        {"news", "wsch1 00000000000000aa [\"type\"]", WSCH_ERR_NO_TYPE},
        {"news", "wsch1 00000000000000aa {\"payload\":1}", WSCH_ERR_NO_TYPE},
        {"news", "wsch1 00000000000000aa {\"type\":\"t\",\"payload\":\"\xc3\"}", WSCH_ERR_UTF8},
        {"news", "wsch1 00000000000000aa {\"type\":\"t\"} x", WSCH_ERR_JSON},
        {"news two", "wsch1 00000000000000aa {\"type\":\"t\"}", WSCH_ERR_ARG},
        {"", "wsch1 00000000000000aa {\"type\":\"t\"}", WSCH_ERR_ARG},
        {"ne\"ws", "wsch1 00000000000000aa {\"type\":\"t\"}", WSCH_ERR_ARG},
        {"#user:", "wsch1 00000000000000aa {\"type\":\"t\"}", WSCH_ERR_ARG},
        {"#alice", "wsch1 00000000000000aa {\"type\":\"t\"}", WSCH_ERR_ARG},
    };
    const char *good = "wsch1 00000000000000aa {\"type\":\"t\",\"payload\":[1]}";
    char *big;
    fake f[1];
    size_t i, n, k, before, total;
    wsch_hub *h1;
    ASSERT_EQ(WSCH_OK, bridge_setup(NULL));
    h1 = B.node[1].hub;
    ASSERT(fake_open_at(&f[0], 1, "ann"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "news"));
    (void)fake_pending(&f[0]);
    before = (size_t)node_stats(1).messages_out;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = 5;
        if (wsch_hub_bridge_deliver(h1, bad[i].name, strlen(bad[i].name), bad[i].data, strlen(bad[i].data), &n) !=
                bad[i].err ||
            n != 0) {
            fprintf(stdout, "\ncase %u: %s / %s\n", (unsigned)i, bad[i].name, bad[i].data);
            FAIL();
        }
    }
    total = sizeof bad / sizeof bad[0];
    /* A user id longer than max_user_id_len; an envelope past max_message_size. */
    big = (char *)malloc(70000);
    ASSERT(big != NULL);
    memcpy(big, "#user:", 6);
    memset(big + 6, 'u', 129);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_bridge_deliver(h1, big, 6 + 129, good, strlen(good), NULL));
    memcpy(big, "wsch1 00000000000000aa {\"type\":\"t\",\"payload\":\"", 47);
    memset(big + 47, 'x', 70000 - 49);
    memcpy(big + 70000 - 2, "\"}", 2);
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_hub_bridge_deliver(h1, "news", 4, big, 70000, NULL));
    free(big);
    total += 2;
    /* Every proper prefix of a good message is refused; the whole is delivered. */
    for (k = 0; k < strlen(good); k++) {
        ASSERT(wsch_hub_bridge_deliver(h1, "news", 4, good, k, &n) != WSCH_OK);
        ASSERT_EQ(0, (int)n);
    }
    total += strlen(good);
    ASSERT_EQ(total, (size_t)node_stats(1).bridge_refused);
    ASSERT_EQ(before, (size_t)node_stats(1).messages_out);
    ASSERT_EQ(0, (int)fake_pending(&f[0]));
    ASSERT_EQ(WSCH_OK, wsch_hub_bridge_deliver(h1, "news", 4, good, strlen(good), &n));
    ASSERT_EQ(1, (int)n);
    ASSERT(only_text(&f[0], "{\"type\":\"t\",\"payload\":[1]}"));
    /* Re-encoded: whitespace around the envelope and unknown members go. */
    {
        const char *loose = "wsch1 00000000000000aa  { \"payload\" : [1, 2] , \"x\":{}, \"t\\u0079pe\" : \"t\" }\n";
        ASSERT_EQ(WSCH_OK, wsch_hub_bridge_deliver(h1, "news", 4, loose, strlen(loose), &n));
        ASSERT(only_text(&f[0], "{\"type\":\"t\",\"payload\":[1, 2]}"));
    }
    /* To a user: the user's connections here. */
    ASSERT_EQ(WSCH_OK, wsch_hub_bridge_deliver(h1, "#user:ann", 9, good, strlen(good), &n));
    ASSERT_EQ(1, (int)n);
    ASSERT(only_text(&f[0], "{\"type\":\"t\",\"payload\":[1]}"));
    ASSERT_EQ(3, (int)node_stats(1).bridge_received);
    /* Misuse. */
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_bridge_deliver(NULL, "news", 4, good, strlen(good), &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_bridge_deliver(h1, NULL, 4, good, strlen(good), &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_bridge_deliver(h1, "news", 4, NULL, 5, &n));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)bridge_teardown(f, 1));
    PASS();
}

static void bridge_small(wsch_hub_desc *d) { d->max_message_size = 100; }

TEST bridge_limits_and_publish_failures(void) {
    fake f[2];
    char payload[100];
    size_t delivered;
    ASSERT_EQ(WSCH_OK, bridge_setup(bridge_small));
    ASSERT(fake_open(&f[0], "ann") && fake_open_at(&f[1], 1, "ben"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "c"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "c"));
    (void)fake_pending(&f[0]);
    (void)fake_pending(&f[1]);
    /* {"type":"t","payload":"x...x"} is 25 + k bytes: k = 75 is the largest allowed. */
    payload[0] = '"';
    memset(payload + 1, 'x', 76);
    payload[76] = '"';
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "t", payload, 77, &delivered));
    ASSERT_EQ(2, bus_pump());
    ASSERT_EQ(0, (int)node_stats(1).bridge_refused);
    ASSERT_EQ(1, (int)fake_pending(&f[0]));
    ASSERT_EQ(1, (int)fake_pending(&f[1]));
    payload[77] = '"';
    payload[76] = 'x';
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_hub_broadcast(T.hub, "c", "t", payload, 78, &delivered));
    ASSERT_EQ(0, B.qlen);
    /* The bridge cannot take it: local clients still get it; counted. */
    B.node[0].fail_publish = 1;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "t", "1", 1, &delivered));
    ASSERT_EQ(1, (int)delivered);
    ASSERT_EQ(0, B.qlen);
    ASSERT_EQ(1, (int)node_stats(0).bridge_publish_errors);
    ASSERT_EQ(1, (int)node_stats(0).bridge_published);
    ASSERT(only_text(&f[0], "{\"type\":\"t\",\"payload\":1}"));
    ASSERT_EQ(0, (int)fake_pending(&f[1]));
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)bridge_teardown(f, 2));
    PASS();
}

TEST bridge_create_errors(void) {
    wsch_hub_desc d;
    wsch_hub *h = NULL;
    wsch_hub_counters s;
    memset(&B, 0, sizeof B);
    memset(&d, 0, sizeof d);
    with_bridge(&d);
    d.bridge.unsubscribe = NULL;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_create(&d, &h));
    with_bridge(&d);
    d.random_bytes = NULL;                      /* no origin id */
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_create(&d, &h));
    ASSERT(h == NULL);
    /* A hub without a bridge refuses bridge input and asks nothing. */
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT_EQ(WSCH_ERR_STATE, wsch_hub_bridge_deliver(T.hub, "c", 1, "wsch1 00000000000000aa {\"type\":\"t\"}", 35, NULL));
    wsch_hub_bridge_resubscribe(T.hub);
    wsch_hub_stats(T.hub, &s);
    ASSERT_EQ(0, (int)(s.bridge_channels + s.bridge_refused + s.bridge_received));
    ASSERT_EQ(0, (int)hub_teardown(NULL, 0));
    PASS();
}

/* Two bridged hubs while hub 0's allocations fail in turn: no leak, and
   hub 0's interest stays exactly what it needs (nothing asked twice, every
   subscribe matched by an unsubscribe). */
static int run_bridge_scenario(long fail_at, int *hit) {
    fake a[3], b[2];
    size_t i;
    if (bridge_setup(NULL) != WSCH_OK) return 0;
    T.mem.fail_at = fail_at;
    T.mem.allocs = 0;
    for (i = 0; i < 3; i++) (void)fake_open(&a[i], i ? "ann" : "ada");
    for (i = 0; i < 2; i++) (void)fake_open_at(&b[i], 1, i ? "ann" : "bo");
    for (i = 0; i < 3; i++) {
        (void)fake_sub(&a[i], "alpha");
        (void)fake_sub(&a[i], i ? "beta" : "gamma");
        (void)fake_say(&a[i], "{\"type\":\"publish\",\"payload\":{\"channel\":\"alpha\",\"data\":1}}");
    }
    for (i = 0; i < 2; i++) {
        (void)fake_sub(&b[i], "alpha");
        (void)fake_say(&b[i], "{\"type\":\"publish\",\"payload\":{\"channel\":\"alpha\",\"data\":2}}");
    }
    (void)wsch_hub_send_to_user(B.node[1].hub, "ann", "t", "1", 1, NULL);
    (void)wsch_hub_send_to_user(T.hub, "bo", "t", "2", 1, NULL);
    if (bus_pump() < 0) return 0;
    B.node[0].count = 0;
    wsch_hub_bridge_resubscribe(T.hub);
    if ((uint64_t)B.node[0].count != node_stats(0).bridge_channels) return 0;
    (void)fake_say(&a[1], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"beta\"}}");
    fake_gone(&a[1]);
    wsch_hub_shutdown(T.hub);
    for (i = 0; i < 3; i++) fake_gone(&a[i]);
    for (i = 0; i < 2; i++) fake_gone(&b[i]);
    *hit = T.mem.failed > 0;
    if (B.node[0].count != 0 || B.node[0].twice != 0) return 0;
    for (i = 0; i < 2; i++) free(b[i].out);
    return bridge_teardown(a, 3) == 0;
}

TEST bridge_failing_allocator_never_leaks(void) {
    long k;
    int hit = 1;
    for (k = 1; hit && k < 4000; k++) {
        if (!run_bridge_scenario(k, &hit)) {
            fprintf(stdout, "\nbridge scenario failed with allocation %ld refused\n", k);
            FAIL();
        }
    }
    ASSERT(!hit);
    ASSERT(k > 20);
    PASS();
}

SUITE(hub) {
    RUN_TEST(connect_ping_pong);
    RUN_TEST(subscribe_broadcast_reaches_exactly_subscribers);
    RUN_TEST(broadcast_argument_errors);
    RUN_TEST(message_size_limit);
    RUN_TEST(bad_envelopes_get_errors);
    RUN_TEST(unknown_type_without_handler);
    RUN_TEST(send_to_user_reaches_every_connection);
    RUN_TEST(cleanup_on_close_leaves_nothing);
    RUN_TEST(stale_handles);
    RUN_TEST(client_limit);
    RUN_TEST(channel_limits);
    RUN_TEST(slow_consumer_is_dropped_others_served);
    RUN_TEST(broadcast_is_encoded_once_and_shared);
    RUN_TEST(many_clients_match_a_model);
    RUN_TEST(auth_sources_and_rejections);
    RUN_TEST(auth_rejection_as_http_401);
    RUN_TEST(origin_hook);
    RUN_TEST(subscribe_authorization);
    RUN_TEST(plain_http_on_other_paths);
    RUN_TEST(idle_timeout_with_clock);
    RUN_TEST(idle_timeout_without_clock);
    RUN_TEST(idle_timeout_disabled);
    RUN_TEST(handshake_timeout);
    RUN_TEST(graceful_shutdown);
    RUN_TEST(handshaking_client_closed_by_hub_stays_quiet);
    RUN_TEST(publish_from_handler_and_partial_writes);
    RUN_TEST(close_callback_reports_synchronously);
    RUN_TEST(conn_cut_inside_a_delivery);
    RUN_TEST(heap_per_idle_connection);
    RUN_TEST(failing_allocator_never_leaks);
    RUN_TEST(destroy_with_live_clients);
    RUN_TEST(desc_defaults_and_create_errors);
    RUN_TEST(bridge_interest_follows_subscriptions);
    RUN_TEST(bridge_broadcast_exactly_once);
    RUN_TEST(bridge_send_to_user_across_hubs);
    RUN_TEST(bridge_refuses_malformed_input);
    RUN_TEST(bridge_limits_and_publish_failures);
    RUN_TEST(bridge_create_errors);
    RUN_TEST(bridge_failing_allocator_never_leaks);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(hub);
    GREATEST_MAIN_END();
}
