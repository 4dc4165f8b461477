/* The hub tests' fixture, shared by test_hub.c and test_bridge.c: fake
   transports that record what the hub sends, can refuse bytes (a slow
   reader) and keep the timers the hub arms; the hub's caller (T, its hooks,
   hub_setup and hub_teardown); helpers that play a client; and the driver
   that refuses each allocation of a scenario in turn.

   Include after ws_channel.h (with WS_CHANNEL_IMPLEMENTATION defined there)
   and GREATEST_HEADER. Helpers only one of the two files calls are
   TEST_HELPER (tests/alloc.h), so the other does not warn. */
#ifndef TESTS_HUB_FIXTURE_H
#define TESTS_HUB_FIXTURE_H

#include "ws_channel.h"
#include "alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    alloc_counter mem;
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
    T.mem.fail_all_after = 1;   /* once memory runs out, it stays out */
    T.desc.allocator = alloc_counter_allocator(&T.mem);
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

TEST_HELPER int fake_feed_str(fake *f, const char *s) { return fake_feed(f, s, strlen(s)); }

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
TEST_HELPER int fake_header(const fake *f, const char *name, char *out, size_t cap) {
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
TEST_HELPER int fake_closed_with(fake *f, int code, const char *reason) {
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

/* A hub_setup adjustment both files use. */
static void small_messages(wsch_hub_desc *d) { d->max_message_size = 100; }

/* Runs scenario(k, &hit) with allocation k refused, for k = 1, 2, ... below
   limit, until a run refused nothing (hit == 0): every allocation site has
   then been tried, and *tried says how many. A scenario returns 0 when
   something leaked or went wrong; that run fails the test, named by `what`. */
static enum greatest_test_res refuse_each_allocation(int (*scenario)(long fail_at, int *hit), long limit,
                                                     const char *what, long *tried) {
    long k;
    int hit = 1;
    for (k = 1; hit && k < limit; k++) {
        if (!scenario(k, &hit)) {
            fprintf(stdout, "\n%s failed with allocation %ld refused\n", what, k);
            FAIL();
        }
    }
    *tried = k - 1;
    ASSERT(!hit);       /* the last run needed no failure: every allocation was tried */
    ASSERT(k > 20);
    PASS();
}

#endif
