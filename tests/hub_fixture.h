/* The hub tests' fixture, shared by test_hub.c and test_bridge.c: fake
   transports that record what the hub sends, can refuse bytes (a slow
   reader) or fail (WSCH_SEND_ERROR), keep the timers the hub arms, and
   record every callback about them, so the close rule can be checked (one
   close() per accepted peer, the last callback about it: fake_done,
   fake_released); the hub's caller (T, its hooks, hub_setup and
   hub_teardown); helpers that play a client; and the driver that refuses
   each allocation of a scenario in turn.

   Include after ws_channel.h (with WS_CHANNEL_IMPLEMENTATION defined there)
   and GREATEST_HEADER. Helpers only one of the two files calls are
   TEST_HELPER (tests/alloc.h), so the other does not warn. */
#ifndef TESTS_HUB_FIXTURE_H
#define TESTS_HUB_FIXTURE_H

#include "ws_channel.h"
#include "alloc.h"
#include "wire.h"

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
    int broken;             /* send() reports WSCH_SEND_ERROR (EPIPE) */
    int accepted;           /* the hub took it: exactly one close() must follow */
    int closes;             /* close() calls */
    int reported;           /* the caller reported EOF (wsch_hub_transport_closed) */
    int report_result;      /* what that report returned */
    int valid_after_report; /* the handle was still valid after it */
    int connects, disconnects; /* on_connect / on_disconnect about this peer */
    int disconnect_code;
    int late;               /* effects or events about it after its close(): must stay 0 */
    unsigned send_seq, disconnect_seq, close_seq; /* when (T.seq) the last of each ran */
    unsigned writes;        /* calls of send() and send_gather() */
    int armed[32];
    uint32_t delay[32];
    unsigned timer_sets;
} fake;

static unsigned fake_tick(void);

/* Every callback about a fake: close() must have been the last. */
static void fake_touched(fake *f) {
    if (f->closes) f->late++;
}

static size_t f_send(const void *data, size_t len, void *user) {
    fake *f = (fake *)user;
    size_t n = len < f->take ? len : f->take;
    fake_touched(f);
    f->send_seq = fake_tick();
    f->writes++;
    if (f->broken) return WSCH_SEND_ERROR;
    wire_append(&f->out, &f->out_len, &f->out_cap, data, n);
    return n;
}

/* writev: up to `take` bytes of the pieces in order, in one call. */
TEST_HELPER size_t f_send_gather(const wsch_iovec *parts, size_t count, void *user) {
    fake *f = (fake *)user;
    size_t i, taken = 0;
    fake_touched(f);
    f->send_seq = fake_tick();
    f->writes++;
    if (f->broken) return WSCH_SEND_ERROR;
    for (i = 0; i < count && taken < f->take; i++) {
        size_t n = parts[i].len < f->take - taken ? parts[i].len : f->take - taken;
        wire_append(&f->out, &f->out_len, &f->out_cap, parts[i].base, n);
        taken += n;
    }
    return taken;
}

/* The caller's close: the socket would be closed here and nowhere else. */
static void f_close(void *user) {
    fake *f = (fake *)user;
    fake_touched(f);
    f->closes++;
    f->close_seq = fake_tick();
}

static void f_timer_set(unsigned id, uint32_t ms, void *user) {
    fake *f = (fake *)user;
    fake_touched(f);
    if (id < 32) {
        f->armed[id] = 1;
        f->delay[id] = ms;
        f->timer_sets++;
    }
}

static void f_timer_cancel(unsigned id, void *user) {
    fake *f = (fake *)user;
    fake_touched(f);
    if (id < 32) f->armed[id] = 0;
}

/* A peer's effects (the hub's clock is added in hub_setup). */
static wsch_effects fake_effects(void) {
    wsch_effects e;
    memset(&e, 0, sizeof e);
    e.send = f_send;
    e.close = f_close;
    e.timer_set = f_timer_set;
    e.timer_cancel = f_timer_cancel;
    return e;
}

/* ---- the hub's caller ------------------------------------------------------ */

typedef struct ctx {
    alloc_counter mem;
    wsch_hub *hub;
    wsch_hub_desc desc;
    uint64_t now;
    unsigned seq;               /* orders the callbacks the fakes record */
    int connects, disconnects, last_code;
    char last_user[160];
    int messages;
    char last_type[WSCH_ENVELOPE_TYPE_MAX + 1];
    char last_payload[512];
    int deny_all_tokens;        /* authenticate refuses everything */
    const char *long_user_id;   /* authenticate returns this */
    const char *deny_prefix;    /* authorize_subscribe refuses channels starting with it */
    int origin_checks;
    int handle_valid_in_disconnect;
    wsch_str user_in_disconnect;
    /* Calls back into the hub from the hooks (re-entrancy). */
    const char *join_on_connect;    /* on_connect subscribes the peer to it */
    int welcome_on_connect;         /* on_connect sends the peer {"type":"welcome"} */
    const char *farewell_channel;   /* on_disconnect broadcasts {"type":"left"} to it */
    wsch_hub_peer kick;             /* the peer a "kick" message closes */
    int results[8];                 /* what the hub calls made from hooks returned, in order */
    int nresults;
} ctx;

static ctx T;

static unsigned fake_tick(void) { return ++T.seq; }

static void c_result(int r) {
    if (T.nresults < (int)(sizeof T.results / sizeof T.results[0])) T.results[T.nresults++] = r;
}

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

static void c_connect(wsch_hub *hub, wsch_hub_peer peer, wsch_str user_id, void *user) {
    ctx *c = (ctx *)user;
    fake *f = (fake *)wsch_hub_peer_user(hub, peer);
    c->connects++;
    if (f) {
        fake_touched(f);
        f->connects++;
    }
    if (user_id.len < sizeof c->last_user) {
        memcpy(c->last_user, user_id.ptr, user_id.len);
        c->last_user[user_id.len] = '\0';
    }
    if (c->join_on_connect) c_result(wsch_hub_subscribe(hub, peer, c->join_on_connect));
    if (c->welcome_on_connect) c_result(wsch_hub_send(hub, peer, "welcome", NULL, 0));
}

static void c_disconnect(wsch_hub *hub, wsch_hub_peer peer, int code, void *user) {
    ctx *c = (ctx *)user;
    fake *f = (fake *)wsch_hub_peer_user(hub, peer);
    c->disconnects++;
    c->last_code = code;
    c->handle_valid_in_disconnect = wsch_hub_peer_valid(hub, peer);
    c->user_in_disconnect.len = 0;
    (void)wsch_hub_peer_user_id(hub, peer, &c->user_in_disconnect);
    if (f) {
        fake_touched(f);
        f->disconnects++;
        f->disconnect_code = code;
        f->disconnect_seq = fake_tick();
    }
    if (c->farewell_channel) c_result(wsch_hub_broadcast(hub, c->farewell_channel, "left", NULL, 0, NULL));
}

/* The demo's publish, and messages that call back into the hub from the
   handler: "quit" closes the sender, "echo" sends the payload back, "tell"
   sends it to the user it names (a JSON string), "last" sends, closes and
   tries to send again, "kick" closes T.kick. */
static void c_message(wsch_hub *hub, wsch_hub_peer peer, const wsch_envelope *env, void *user) {
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
        (void)wsch_hub_peer_close(hub, peer, 1000, "bye", WSCH_CSTR);
    } else if (wsch_envelope_type_is(env, "echo")) {
        c_result(wsch_hub_send(hub, peer, "echo", env->payload.ptr, env->payload.len));
    } else if (wsch_envelope_type_is(env, "tell")) {
        char to[64];
        size_t n = env->payload.len;
        if (n < 2 || n - 2 >= sizeof to) return;
        memcpy(to, env->payload.ptr + 1, n - 2);    /* a plain JSON string: drop the quotes */
        to[n - 2] = '\0';
        c_result(wsch_hub_send_to_user(hub, to, "told", env->payload.ptr, env->payload.len, NULL));
    } else if (wsch_envelope_type_is(env, "last")) {
        c_result(wsch_hub_send(hub, peer, "last", env->payload.ptr, env->payload.len));
        c_result(wsch_hub_peer_close(hub, peer, 1000, "last words", 10));
        c_result(wsch_hub_send(hub, peer, "too late", NULL, 0));
    } else if (wsch_envelope_type_is(env, "kick")) {
        c_result(wsch_hub_peer_close(hub, c->kick, 4000, "kicked", WSCH_CSTR));
    }
}

/* Zeroes T and builds a hub with the test hooks; tweak T.desc in `adjust`. */
static int hub_setup(void (*adjust)(wsch_hub_desc *d)) {
    memset(&T, 0, sizeof T);
    T.mem.fail_all_after = 1;   /* once memory runs out, it stays out */
    T.desc.allocator = alloc_counter_allocator(&T.mem);
    T.desc.effects = fake_effects();
    T.desc.effects.now_ms = c_now;
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

/* The close rule, checked on a fake once its hub is gone: exactly one
   close() if the hub took it (none if accept refused it), nothing about it
   after that close(), at most one on_connect and one on_disconnect (never
   one without the other before it), and an EOF report that ended it as
   documented. Frees its buffer and zeroes it. 1 when all held. */
static int fake_done(fake *f) {
    int ok = f->closes == (f->accepted ? 1 : 0) && f->late == 0 && f->connects <= 1 &&
             f->disconnects <= f->connects &&
             (!f->reported || (f->report_result == WSCH_OK && !f->valid_after_report));
    if (!ok)
        printf("\nfake %p broke the close rule: accepted %d, close() %d times, %d callbacks after it, "
               "on_connect %d, on_disconnect %d, EOF report %d -> %d (handle valid after it: %d)\n",
               (void *)f, f->accepted, f->closes, f->late, f->connects, f->disconnects, f->reported,
               f->report_result, f->valid_after_report);
    free(f->out);
    memset(f, 0, sizeof *f);
    return ok;
}

/* Destroys the hub (it calls close() for every peer still open), then
   checks every fake (fake_done). Returns the heap bytes left behind plus
   the fakes that broke the close rule: 0 when all is well. */
static size_t hub_teardown(fake *fakes, size_t n) {
    size_t i, broken = 0;
    wsch_hub_destroy(T.hub);
    T.hub = NULL;
    for (i = 0; i < n; i++) broken += (size_t)!fake_done(&fakes[i]);
    return T.mem.live_bytes + broken;
}

/* A fresh fake for the hub in T.hub. */
static void fake_init(fake *f) {
    memset(f, 0, sizeof *f);
    f->take = FAKE_ALL;
    f->hub = T.hub;
}

/* Hands f to the hub with the given effects (NULL: the desc's). */
static int fake_accept_with(fake *f, const wsch_effects *effects) {
    int r;
    fake_init(f);
    r = wsch_hub_accept(T.hub, effects, f, &f->h);
    f->accepted = r == WSCH_OK;
    return r;
}

TEST_HELPER int fake_accept(fake *f) { return fake_accept_with(f, NULL); }

static int fake_feed(fake *f, const void *data, size_t len) {
    unsigned char *copy = (unsigned char *)malloc(len ? len : 1);
    int r;
    memcpy(copy, data, len);
    r = wsch_hub_feed(f->hub, f->h, copy, len);
    free(copy);
    if (T.desc.gather) (void)wsch_hub_flush(f->hub);   /* a read ends the caller's turn */
    return r;
}

TEST_HELPER int fake_feed_str(fake *f, const char *s) { return fake_feed(f, s, strlen(s)); }

/* Sends an upgrade request for target with extra header lines (the
   client's side of the opening handshake). */
static int fake_upgrade(fake *f, const char *target, const char *headers) {
    char req[2048];
    snprintf(req, sizeof req,
             "GET %s HTTP/1.1\r\nHost: hub.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             target, headers ? headers : "");
    return fake_feed(f, req, strlen(req));
}

/* Accepts (with effects; NULL: the desc's) and sends an upgrade. */
static int fake_request_with(fake *f, const wsch_effects *effects, const char *target, const char *headers) {
    int r = fake_accept_with(f, effects);
    return r != WSCH_OK ? r : fake_upgrade(f, target, headers);
}

TEST_HELPER int fake_request(fake *f, const char *target, const char *headers) {
    return fake_request_with(f, NULL, target, headers);
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

/* Opens a client whose token is `user` (NULL: no token) on effects (NULL:
   the desc's). 1 when open. */
static int fake_open_with(fake *f, const wsch_effects *effects, const char *user) {
    char target[256];
    if (user) snprintf(target, sizeof target, "/ws?token=%s", user);
    else snprintf(target, sizeof target, "/ws");
    if (fake_request_with(f, effects, target, NULL) != WSCH_OK) return 0;
    return fake_status(f) == 101 && wsch_hub_peer_state(f->hub, f->h) == WSCH_STATE_OPEN;
}

TEST_HELPER int fake_open(fake *f, const char *user) { return fake_open_with(f, NULL, user); }

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
TEST_HELPER const char *fake_text(fake *f) {
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

TEST_HELPER size_t fake_pending(fake *f) {
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
    if (T.desc.gather) (void)wsch_hub_flush(f->hub);   /* a read ends the caller's turn */
    return r;
}

static int fake_say(fake *f, const char *json) { return fake_frame(f, WSCH_OP_TEXT, json, strlen(json)); }

static int fake_sub(fake *f, const char *channel) {
    char msg[512];
    snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\"}}", channel);
    return fake_say(f, msg);
}

/* The caller sees EOF on the socket and reports it -- unless close() has
   run already: then the socket is closed and there is nothing to see. The
   report must end the peer at once: close() has run and the handle is
   stale when it returns (fake_done checks both). */
TEST_HELPER void fake_gone(fake *f) {
    if (!f->accepted || f->closes || f->reported) return;
    f->reported = 1;
    f->report_result = wsch_hub_transport_closed(f->hub, f->h);
    f->valid_after_report = wsch_hub_peer_valid(f->hub, f->h);
}

static int released_fail(const char *what) {
    printf("\nnot released: %s\n", what);
    return 0;
}

/* 1 when f's peer was given back: close() ran exactly once, and its handle
   is stale in every call, with the out-parameters each getter documents,
   and none of those calls closed it again. */
TEST_HELPER int fake_released(fake *f) {
    wsch_hub *hub = f->hub;
    wsch_hub_peer h = f->h;
    wsch_str uid;
    char x[1] = {'x'};
    if (f->closes != 1) return released_fail("close() did not run exactly once");
    if (wsch_hub_peer_valid(hub, h) != 0) return released_fail("wsch_hub_peer_valid");
    if (wsch_hub_peer_want(hub, h) != 0) return released_fail("wsch_hub_peer_want");
    if (wsch_hub_peer_user(hub, h) != NULL) return released_fail("wsch_hub_peer_user");
    if (wsch_hub_peer_state(hub, h) != WSCH_STATE_CLOSED) return released_fail("wsch_hub_peer_state");
    if (wsch_hub_peer_queued_bytes(hub, h) != 0) return released_fail("wsch_hub_peer_queued_bytes");
    uid.ptr = "junk";
    uid.len = 4;
    if (wsch_hub_peer_user_id(hub, h, &uid) != WSCH_ERR_STALE || uid.len != 0)
        return released_fail("wsch_hub_peer_user_id");
    if (wsch_hub_is_subscribed(hub, h, "c") != 0) return released_fail("wsch_hub_is_subscribed");
    if (wsch_hub_send(hub, h, "t", NULL, 0) != WSCH_ERR_STALE) return released_fail("wsch_hub_send");
    if (wsch_hub_subscribe(hub, h, "c") != WSCH_ERR_STALE) return released_fail("wsch_hub_subscribe");
    if (wsch_hub_unsubscribe(hub, h, "c") != WSCH_ERR_STALE) return released_fail("wsch_hub_unsubscribe");
    if (wsch_hub_peer_close(hub, h, 1000, NULL, 0) != WSCH_ERR_STALE) return released_fail("wsch_hub_peer_close");
    if (wsch_hub_feed(hub, h, x, 1) != WSCH_ERR_STALE) return released_fail("wsch_hub_feed");
    if (wsch_hub_writable(hub, h) != WSCH_ERR_STALE) return released_fail("wsch_hub_writable");
    if (wsch_hub_timer_fired(hub, h, WSCH_HUB_TIMER_IDLE) != WSCH_ERR_STALE)
        return released_fail("wsch_hub_timer_fired");
    if (wsch_hub_transport_closed(hub, h) != WSCH_ERR_STALE) return released_fail("wsch_hub_transport_closed");
    if (f->closes != 1) return released_fail("a call on the stale handle closed it again");
    return 1;
}

TEST_HELPER wsch_hub_counters stats(void) {
    wsch_hub_counters s;
    wsch_hub_stats(T.hub, &s);
    return s;
}

/* A hub_setup adjustment both files use. */
TEST_HELPER void small_messages(wsch_hub_desc *d) { d->limits.max_message_size = 100; }

/* Runs scenario(k, &hit) with allocation k refused, for k = 1, 2, ... below
   limit, until a run refused nothing (hit == 0): every allocation site has
   then been tried, and *tried says how many. A scenario returns 0 when
   something leaked or went wrong; that run fails the test, named by `what`. */
TEST_HELPER enum greatest_test_res refuse_each_allocation(int (*scenario)(long fail_at, int *hit), long limit,
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
