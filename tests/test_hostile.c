/* Hostile input: every kind of abuse the library must survive on the open
   internet, each with the outcome it documents (close code, HTTP status,
   error code), each freeing everything it allocated (counted here, and
   LeakSanitizer in the sanitized build), and each leaving a second
   connection on the same descriptor fully served.

   Frame scenarios run twice: fed whole and fed one byte at a time.
   The "fuzz regressions" suite replays, as named tests, the bugs the fuzz
   targets in fuzz/ found (their raw reproducers live in fuzz/regressions/). */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER
#include "wire.h"
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

/* ---- one end of a connection: a scripted transport --------------------- */

typedef struct peer {
    wsch_conn *c;
    unsigned char *out;             /* everything send() took */
    size_t out_len, out_cap;
    size_t budget;                  /* bytes send() takes per call; (size_t)-1 = all, 0 = never reads */
    int broken;                     /* send() reports WSCH_SEND_ERROR: the peer reset the connection */
    int opened, closes, close_code, transport_closed;
    int closes_at_close;            /* on_close calls seen when close() ran */
    int after_close;                /* callbacks after on_close other than one close(), or any after close() */
    size_t msgs, pongs;
    unsigned last_opcode;
    size_t last_len;
    unsigned char last[256];        /* head of the last message */
    unsigned timers;                /* armed timer ids */
} peer;

/* Every callback but close() notes whether it came after the end. */
static peer *peer_cb(void *user) {
    peer *p = (peer *)user;
    if (p->closes || p->transport_closed) p->after_close++;
    return p;
}

static size_t peer_send(const void *data, size_t len, void *user) {
    peer *p = peer_cb(user);
    size_t n = len < p->budget ? len : p->budget;
    if (p->broken) return WSCH_SEND_ERROR;
    if (p->out_len + n > p->out_cap) {
        size_t cap = p->out_cap ? p->out_cap * 2 : 4096;
        while (cap < p->out_len + n) cap *= 2;
        p->out = (unsigned char *)realloc(p->out, cap);
        p->out_cap = cap;
    }
    if (n) memcpy(p->out + p->out_len, data, n);
    p->out_len += n;
    return n;
}
/* The last callback: after on_close (when there is one), exactly once. */
static void peer_close(void *user) {
    peer *p = (peer *)user;
    if (p->transport_closed) p->after_close++;
    p->closes_at_close = p->closes;
    p->transport_closed++;
}
static void peer_timer_set(unsigned id, uint32_t ms, void *user) {
    peer *p = peer_cb(user);
    (void)ms;
    p->timers |= 1u << id;
}
static void peer_timer_cancel(unsigned id, void *user) {
    peer *p = (peer *)user;
    if (p->transport_closed) p->after_close++;
    p->timers &= ~(1u << id);
}
static void peer_random(void *buf, size_t len, void *user) {
    size_t i;
    (void)user;
    for (i = 0; i < len; i++) ((unsigned char *)buf)[i] = (unsigned char)(i * 37u + 11u);
}
static void peer_on_open(wsch_conn *c, void *user) {
    (void)c;
    peer_cb(user)->opened++;
}
static void peer_on_message(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
    peer *p = peer_cb(user);
    (void)c;
    p->msgs++;
    p->last_opcode = (unsigned)op;
    p->last_len = len;
    memcpy(p->last, data, len < sizeof p->last ? len : sizeof p->last);
}
static void peer_on_pong(wsch_conn *c, const void *data, size_t len, void *user) {
    (void)c;
    (void)data;
    (void)len;
    peer_cb(user)->pongs++;
}
static void peer_on_close(wsch_conn *c, int code, const char *reason, size_t len, void *user) {
    peer *p = peer_cb(user);
    (void)c;
    (void)reason;
    (void)len;
    p->closes++;
    p->close_code = code;
}

/* One descriptor shared by a hostile connection and a bystander. */
typedef struct pair {
    wsch_conn_desc desc;
    alloc_counter mem;
    peer bad, good;
} pair;

static void pair_desc(pair *pr, wsch_role role) {
    memset(pr, 0, sizeof *pr);
    pr->desc.role = role;
    pr->desc.request.host = "example.com";
    pr->desc.request.path = "/chat";
    pr->desc.allocator = alloc_counter_allocator(&pr->mem);
    pr->desc.effects.send = peer_send;
    pr->desc.effects.close = peer_close;
    pr->desc.effects.timer_set = peer_timer_set;
    pr->desc.effects.timer_cancel = peer_timer_cancel;
    pr->desc.effects.random_bytes = peer_random;
    pr->desc.on_open = peer_on_open;
    pr->desc.on_message = peer_on_message;
    pr->desc.on_pong = peer_on_pong;
    pr->desc.on_close = peer_on_close;
    pr->bad.budget = pr->good.budget = (size_t)-1;
}

static const char upgrade_request[] =
    "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/* Feeds bytes from a heap copy of exactly len bytes (reads past it are caught). */
static int feed(peer *p, const void *bytes, size_t len) {
    void *copy = malloc(len ? len : 1);
    int rc;
    memcpy(copy, bytes, len);
    rc = wsch_conn_feed(p->c, copy, len);
    free(copy);
    return rc;
}

/* Feeds one byte at a time; returns the first error (not WSCH_ERR_CLOSED). */
static int feed_bytes(peer *p, const void *bytes, size_t len) {
    size_t i;
    int first = WSCH_OK;
    for (i = 0; i < len && !p->closes; i++) {
        int rc = feed(p, (const unsigned char *)bytes + i, 1);
        if (first == WSCH_OK && rc != WSCH_OK && rc != WSCH_ERR_CLOSED) first = rc;
    }
    return first;
}

/* Completes the opening handshake with a valid peer. */
static int peer_open(pair *pr, peer *p) {
    if (wsch_conn_create(&pr->desc, p, &p->c) != WSCH_OK) return 0;
    if (pr->desc.role == WSCH_ROLE_SERVER) {
        if (feed(p, upgrade_request, sizeof upgrade_request - 1) != WSCH_OK) return 0;
    } else {
        char resp[256], accept[WSCH_ACCEPT_LEN + 1];
        const char *k;
        int n;
        p->out = (unsigned char *)realloc(p->out, p->out_cap + 1);
        p->out[p->out_len] = '\0';
        k = strstr((const char *)p->out, "Sec-WebSocket-Key: ");
        if (!k) return 0;
        wsch_accept_key(k + 19, WSCH_KEY_LEN, accept);
        n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
        if (feed(p, resp, (size_t)n) != WSCH_OK) return 0;
    }
    p->out_len = 0;
    return p->opened == 1 && wsch_conn_state(p->c) == WSCH_STATE_OPEN;
}

static int pair_open(pair *pr) { return peer_open(pr, &pr->bad) && peer_open(pr, &pr->good); }


/* The peer's side of the wire: a frame from the "other" end of pr. */
static size_t other_frame(const pair *pr, unsigned char *out, unsigned first, const void *payload, size_t len) {
    return wire_frame(out, first, payload, len, pr->desc.role == WSCH_ROLE_SERVER);
}

/* Close code of the last close frame p wrote (client frames are masked), or -1. */
static int sent_close_code(const peer *p) {
    size_t pos = 0;
    int code = -1;
    while (pos < p->out_len) {
        wsch_frame_header h;
        size_t hl;
        unsigned char b[2];
        if (wsch_frame_header_decode(p->out + pos, p->out_len - pos, &h, &hl) != WSCH_OK) break;
        if (pos + hl + h.payload_len > p->out_len) break;
        if (h.opcode == WSCH_OP_CLOSE && h.payload_len >= 2) {
            b[0] = p->out[pos + hl];
            b[1] = p->out[pos + hl + 1];
            if (h.masked) wsch_mask(b, 2, h.mask_key, 0);
            code = (b[0] << 8) | b[1];
        }
        pos += hl + (size_t)h.payload_len;
    }
    return code;
}

/* Counts the frames of an opcode in p's output. */
static size_t sent_frames(const peer *p, unsigned opcode) {
    size_t pos = 0, n = 0;
    while (pos < p->out_len) {
        wsch_frame_header h;
        size_t hl;
        if (wsch_frame_header_decode(p->out + pos, p->out_len - pos, &h, &hl) != WSCH_OK) break;
        if (h.opcode == opcode) n++;
        pos += hl + (size_t)h.payload_len;
    }
    return n;
}

/* The bystander still gets a message through, after the hostile one failed. */
static enum greatest_test_res still_served(pair *pr) {
    unsigned char f[64];
    size_t before = pr->good.msgs;
    size_t n = other_frame(pr, f, 0x81, "still here", 10);
    ASSERT_EQ(WSCH_OK, feed(&pr->good, f, n));
    ASSERT_EQ(before + 1, pr->good.msgs);
    ASSERT_EQ(10u, pr->good.last_len);
    ASSERT_MEM_EQ("still here", pr->good.last, 10);
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_conn_state(pr->good.c));
    ASSERT_EQ(0, pr->good.closes);
    ASSERT_EQ(WSCH_OK, wsch_conn_send(pr->good.c, WSCH_OP_TEXT, "ok", 2));
    PASS();
}

/* Frees both connections; nothing may be left, and each transport was
   closed exactly once (destroy closes one still open) with nothing after. */
static enum greatest_test_res pair_free(pair *pr) {
    int had_bad = pr->bad.c != NULL, had_good = pr->good.c != NULL;
    if (pr->bad.c) wsch_conn_destroy(pr->bad.c);
    if (pr->good.c) wsch_conn_destroy(pr->good.c);
    ASSERT_EQ(had_bad, pr->bad.transport_closed);
    ASSERT_EQ(had_good, pr->good.transport_closed);
    ASSERT_EQ(0, pr->bad.after_close);
    ASSERT_EQ(0, pr->good.after_close);
    free(pr->bad.out);
    free(pr->good.out);
    pr->bad.c = pr->good.c = NULL;
    pr->bad.out = pr->good.out = NULL;
    ASSERT_EQ_FMT((size_t)0, pr->mem.live_blocks, "%zu");
    ASSERT_EQ_FMT((size_t)0, pr->mem.live_bytes, "%zu");
    PASS();
}

/* Limits a scenario sets on the shared descriptor. */
typedef struct limits {
    size_t max_frame, max_message, max_header;
} limits;

/* Feeds a hostile byte stream to an open connection, whole (bytewise 0) or
   one byte at a time, and checks the documented end: the error the feed
   returns, the close code sent and reported, the transport closed, nothing
   after on_close, the bystander served, everything freed. */
static enum greatest_test_res expect_failure(wsch_role role, const limits *lim, const unsigned char *bytes,
                                             size_t len, int want_err, int want_code, int bytewise) {
    pair pr;
    int rc;
    pair_desc(&pr, role);
    if (lim) {
        pr.desc.limits.max_frame_size = lim->max_frame;
        pr.desc.limits.max_message_size = lim->max_message;
    }
    ASSERT(pair_open(&pr));
    rc = bytewise ? feed_bytes(&pr.bad, bytes, len) : feed(&pr.bad, bytes, len);
    ASSERT_EQ_FMT(want_err, rc, "%d");
    ASSERT_EQ_FMT(want_code, sent_close_code(&pr.bad), "%d");
    if (role == WSCH_ROLE_CLIENT && pr.bad.closes == 0) {
        /* a failing client waits for the server's TCP close, bounded by the close timer */
        ASSERT(pr.bad.timers & (1u << WSCH_TIMER_CLOSE));
        pr.bad.timers &= ~(1u << WSCH_TIMER_CLOSE);
        wsch_conn_timer_fired(pr.bad.c, WSCH_TIMER_CLOSE);
    }
    ASSERT_EQ(1, pr.bad.closes);
    ASSERT_EQ_FMT(want_code, pr.bad.close_code, "%d");
    ASSERT_EQ(1, pr.bad.transport_closed);
    ASSERT_EQ(1, pr.bad.closes_at_close); /* on_close, then close() */
    ASSERT_EQ(0u, pr.bad.timers);
    ASSERT_EQ(WSCH_ERR_CLOSED, feed(&pr.bad, bytes, len)); /* input after the end is refused */
    ASSERT_EQ(0, pr.bad.after_close);
    CHECK_CALL(still_served(&pr));
    CHECK_CALL(pair_free(&pr));
    PASS();
}

/* Both ways of feeding. */
static enum greatest_test_res expect_failure2(wsch_role role, const limits *lim, const unsigned char *bytes,
                                              size_t len, int want_err, int want_code) {
    CHECK_CALL(expect_failure(role, lim, bytes, len, want_err, want_code, 0));
    CHECK_CALL(expect_failure(role, lim, bytes, len, want_err, want_code, 1));
    PASS();
}

/* ======================================================================== */
/* Frames                                                                   */
/* ======================================================================== */

/* A header with a 64-bit length field and no payload behind it. */
static size_t len64_header(unsigned char *out, unsigned first, uint64_t len, int masked) {
    size_t n = 0;
    int i;
    out[n++] = (unsigned char)first;
    out[n++] = (unsigned char)((masked ? 0x80 : 0) | 127);
    for (i = 0; i < 8; i++) out[n++] = (unsigned char)(len >> (56 - 8 * i));
    if (masked) {
        memset(out + n, 0x5A, 4);
        n += 4;
    }
    return n;
}

TEST frame_length_2_pow_63(void) {
    unsigned char h[14];
    int role;
    for (role = 0; role < 2; role++) {
        int masked = role == WSCH_ROLE_SERVER;
        size_t n = len64_header(h, 0x82, (uint64_t)1 << 63, masked);
        CHECK_CALL(expect_failure2((wsch_role)role, NULL, h, n, WSCH_ERR_PROTOCOL, 1002));
        n = len64_header(h, 0x82, ~(uint64_t)0, masked);
        CHECK_CALL(expect_failure2((wsch_role)role, NULL, h, n, WSCH_ERR_PROTOCOL, 1002));
        /* the largest legal length is still far past every limit */
        n = len64_header(h, 0x82, ((uint64_t)1 << 63) - 1, masked);
        CHECK_CALL(expect_failure2((wsch_role)role, NULL, h, n, WSCH_ERR_TOO_LARGE, 1009));
    }
    PASS();
}

TEST frame_length_non_minimal(void) {
    unsigned char h[16] = {0x82, 0x80 | 126, 0x00, 0x7D, 1, 2, 3, 4};
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, h, 8, WSCH_ERR_PROTOCOL, 1002));
    PASS();
}

TEST frame_just_above_frame_limit(void) {
    static unsigned char f[1200], payload[1001];
    limits lim = {1000, 4000, 0};
    pair pr;
    size_t n;
    memset(payload, 'x', sizeof payload);
    pair_desc(&pr, WSCH_ROLE_SERVER);
    n = wire_frame(f, 0x82, payload, 1001, 1);
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, &lim, f, n, WSCH_ERR_TOO_LARGE, 1009));
    /* the header alone decides: no payload byte is needed */
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, &lim, f, 8, WSCH_ERR_TOO_LARGE, 1009));
    /* exactly at the limit is delivered */
    pr.desc.limits.max_frame_size = 1000;
    ASSERT(pair_open(&pr));
    n = wire_frame(f, 0x82, payload, 1000, 1);
    ASSERT_EQ(WSCH_OK, feed(&pr.bad, f, n));
    ASSERT_EQ(1u, pr.bad.msgs);
    ASSERT_EQ(1000u, pr.bad.last_len);
    CHECK_CALL(pair_free(&pr));
    PASS();
}

TEST frame_just_above_message_limit(void) {
    static unsigned char f[8000], payload[1000];
    limits lim = {1000, 4000, 0};
    size_t n = 0;
    int i;
    memset(payload, 'y', sizeof payload);
    n += wire_frame(f + n, 0x02, payload, 1000, 1);
    for (i = 0; i < 2; i++) n += wire_frame(f + n, 0x00, payload, 1000, 1);
    n += wire_frame(f + n, 0x80, payload, 1000, 1);   /* 4000 in all: fine */
    {
        pair pr;
        pair_desc(&pr, WSCH_ROLE_SERVER);
        pr.desc.limits.max_frame_size = 1000;
        pr.desc.limits.max_message_size = 4000;
        ASSERT(pair_open(&pr));
        ASSERT_EQ(WSCH_OK, feed(&pr.bad, f, n));
        ASSERT_EQ(1u, pr.bad.msgs);
        ASSERT_EQ(4000u, pr.bad.last_len);
        CHECK_CALL(pair_free(&pr));
    }
    /* one byte more, in a last frame of 1 */
    n = 0;
    for (i = 0; i < 4; i++) n += wire_frame(f + n, i ? 0x00 : 0x02, payload, 1000, 1);
    n += wire_frame(f + n, 0x80, payload, 1, 1);
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, &lim, f, n, WSCH_ERR_TOO_LARGE, 1009));
    /* a message limit below the frame limit binds a single frame too */
    lim.max_frame = 1000;
    lim.max_message = 100;
    n = wire_frame(f, 0x81, payload, 101, 1);
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, &lim, f, n, WSCH_ERR_TOO_LARGE, 1009));
    PASS();
}

TEST frame_just_above_default_limits(void) {
    unsigned char h[14];
    size_t n = len64_header(h, 0x82, (uint64_t)WSCH_DEFAULT_MAX_FRAME_SIZE + 1, 1);
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, h, n, WSCH_ERR_TOO_LARGE, 1009));
    n = len64_header(h, 0x82, (uint64_t)WSCH_DEFAULT_MAX_FRAME_SIZE + 1, 0);
    CHECK_CALL(expect_failure2(WSCH_ROLE_CLIENT, NULL, h, n, WSCH_ERR_TOO_LARGE, 1009));
    PASS();
}

/* 5000 one-byte fragments: one message, and no memory kept afterwards. */
TEST thousands_of_one_byte_fragments(void) {
    enum { N = 5000 };
    unsigned char *f = (unsigned char *)malloc(N * 8);
    int bytewise;
    for (bytewise = 0; bytewise < 2; bytewise++) {
        pair pr;
        size_t n = 0, live_open, i;
        for (i = 0; i < N; i++)
            n += wire_frame(f + n, (i == 0 ? 0x01u : 0x00u) | (i == N - 1 ? 0x80u : 0u), "a", 1, 1);
        pair_desc(&pr, WSCH_ROLE_SERVER);
        ASSERT(pair_open(&pr));
        live_open = pr.mem.live_blocks;
        ASSERT_EQ(WSCH_OK, bytewise ? feed_bytes(&pr.bad, f, n) : feed(&pr.bad, f, n));
        ASSERT_EQ(1u, pr.bad.msgs);
        ASSERT_EQ((size_t)N, pr.bad.last_len);
        ASSERT_EQ(WSCH_OP_TEXT, pr.bad.last_opcode);
        ASSERT_EQ(live_open, pr.mem.live_blocks);  /* the reassembly buffer is gone */
        ASSERT_EQ(0, pr.bad.closes);
        CHECK_CALL(still_served(&pr));
        CHECK_CALL(pair_free(&pr));
    }
    free(f);
    PASS();
}

/* Fragments that never end: stopped at max_message_size, memory bounded. */
TEST fragmented_message_that_never_ends(void) {
    enum { LIMIT = 4096, FRAG = 100, COUNT = 200 };
    unsigned char payload[FRAG];
    unsigned char *f = (unsigned char *)malloc(COUNT * (FRAG + 8));
    limits lim = {0, LIMIT, 0};
    size_t n = 0, i;
    int bytewise;
    memset(payload, 'z', sizeof payload);
    for (i = 0; i < COUNT; i++) n += wire_frame(f + n, i ? 0x00 : 0x02, payload, FRAG, 1); /* FIN never set */
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, &lim, f, n, WSCH_ERR_TOO_LARGE, 1009));
    for (bytewise = 0; bytewise < 2; bytewise++) {
        pair pr;
        pair_desc(&pr, WSCH_ROLE_SERVER);
        pr.desc.limits.max_message_size = LIMIT;
        ASSERT(pair_open(&pr));
        ASSERT_EQ(WSCH_ERR_TOO_LARGE, bytewise ? feed_bytes(&pr.bad, f, n) : feed(&pr.bad, f, n));
        /* never more than about twice the limit (buffer doubling) plus the structs */
        ASSERT_LT(pr.mem.peak_bytes, (size_t)(2 * LIMIT + 4096));
        ASSERT_EQ(1009, pr.bad.close_code);
        CHECK_CALL(still_served(&pr));
        CHECK_CALL(pair_free(&pr));
    }
    free(f);
    PASS();
}

/* A ping and a pong between every two fragments: all answered, message intact. */
TEST control_frames_between_every_fragment(void) {
    enum { FRAGS = 200 };
    unsigned char *f = (unsigned char *)malloc(FRAGS * 32);
    int bytewise, role;
    for (role = 0; role < 2; role++) {
        for (bytewise = 0; bytewise < 2; bytewise++) {
            pair pr;
            size_t n = 0, i;
            int masked = role == WSCH_ROLE_SERVER;
            for (i = 0; i < FRAGS; i++) {
                n += wire_frame(f + n, (i == 0 ? 0x01u : 0x00u) | (i == FRAGS - 1 ? 0x80u : 0u), "abc", 3, masked);
                if (i != FRAGS - 1) {
                    n += wire_frame(f + n, 0x89, "p", 1, masked);
                    n += wire_frame(f + n, 0x8A, "q", 1, masked);
                }
            }
            pair_desc(&pr, (wsch_role)role);
            ASSERT(pair_open(&pr));
            ASSERT_EQ(WSCH_OK, bytewise ? feed_bytes(&pr.bad, f, n) : feed(&pr.bad, f, n));
            ASSERT_EQ(1u, pr.bad.msgs);
            ASSERT_EQ((size_t)FRAGS * 3, pr.bad.last_len);
            ASSERT_MEM_EQ("abcabc", pr.bad.last, 6);
            ASSERT_EQ((size_t)FRAGS - 1, sent_frames(&pr.bad, WSCH_OP_PONG));
            ASSERT_EQ((size_t)FRAGS - 1, pr.bad.pongs);
            CHECK_CALL(still_served(&pr));
            CHECK_CALL(pair_free(&pr));
        }
    }
    free(f);
    PASS();
}

TEST reserved_bits(void) {
    static const unsigned rsv[3] = {0x40, 0x20, 0x10};
    unsigned char f[32];
    int i, role;
    for (role = 0; role < 2; role++) {
        for (i = 0; i < 3; i++) {
            size_t n = wire_frame(f, 0x81 | rsv[i], "hi", 2, role == WSCH_ROLE_SERVER);
            CHECK_CALL(expect_failure2((wsch_role)role, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
        }
        /* on a control frame too */
        {
            size_t n = wire_frame(f, 0x89 | 0x40, "", 0, role == WSCH_ROLE_SERVER);
            CHECK_CALL(expect_failure2((wsch_role)role, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
        }
    }
    PASS();
}

TEST reserved_opcodes(void) {
    static const unsigned ops[10] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    unsigned char f[32];
    int i, role;
    for (role = 0; role < 2; role++) {
        for (i = 0; i < 10; i++) {
            size_t n = wire_frame(f, 0x80 | ops[i], "x", 1, role == WSCH_ROLE_SERVER);
            CHECK_CALL(expect_failure2((wsch_role)role, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
        }
    }
    PASS();
}

TEST masked_server_frames_refused_by_client(void) {
    unsigned char f[32];
    size_t n = wire_frame(f, 0x81, "hi", 2, 1);
    CHECK_CALL(expect_failure2(WSCH_ROLE_CLIENT, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
    n = wire_frame(f, 0x89, "", 0, 1);
    CHECK_CALL(expect_failure2(WSCH_ROLE_CLIENT, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
    PASS();
}

TEST unmasked_client_frames_refused_by_server(void) {
    unsigned char f[32];
    size_t n = wire_frame(f, 0x81, "hi", 2, 0);
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
    n = wire_frame(f, 0x88, "\x03\xe8", 2, 0);
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
    PASS();
}

TEST broken_fragmentation_and_control_frames(void) {
    static unsigned char big[126];
    unsigned char f[300];
    size_t n;
    /* continuation with nothing to continue */
    n = wire_frame(f, 0x80, "x", 1, 1);
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
    /* a new message inside a fragmented one */
    n = wire_frame(f, 0x01, "a", 1, 1);
    n += wire_frame(f + n, 0x81, "b", 1, 1);
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
    /* a fragmented control frame */
    n = wire_frame(f, 0x09, "p", 1, 1);
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
    /* a control frame past 125 bytes */
    n = wire_frame(f, 0x89, big, sizeof big, 1);
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
    PASS();
}

TEST invalid_utf8_and_close_payloads(void) {
    static const uint16_t bad_codes[8] = {0, 999, 1004, 1005, 1006, 1015, 2999, 5000};
    unsigned char f[64], p[8];
    size_t n;
    int i;
    n = wire_frame(f, 0x81, "ok\xc0\xaf", 4, 1);                      /* overlong */
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_UTF8, 1007));
    n = wire_frame(f, 0x01, "\xed", 1, 1);                               /* a surrogate, split */
    n += wire_frame(f + n, 0x80, "\xa0\x80", 2, 1);
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_UTF8, 1007));
    n = wire_frame(f, 0x81, "\xf4\x90\x80\x80", 4, 0);                  /* above U+10FFFF */
    CHECK_CALL(expect_failure2(WSCH_ROLE_CLIENT, NULL, f, n, WSCH_ERR_UTF8, 1007));
    n = wire_frame(f, 0x81, "\xe2\x82", 2, 1);                          /* truncated at the end */
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_UTF8, 1007));
    n = wire_frame(f, 0x88, "\x03\xe8\xff", 3, 1);                      /* close reason */
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_UTF8, 1007));
    n = wire_frame(f, 0x88, "\x03", 1, 1);                              /* one-byte close payload */
    CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
    for (i = 1; i < 8; i++) {
        p[0] = (unsigned char)(bad_codes[i] >> 8);
        p[1] = (unsigned char)bad_codes[i];
        n = wire_frame(f, 0x88, p, 2, 1);
        CHECK_CALL(expect_failure2(WSCH_ROLE_SERVER, NULL, f, n, WSCH_ERR_PROTOCOL, 1002));
    }
    PASS();
}

/* A peer that pings and never reads: while output waits, one queued pong
   answers the latest ping (RFC 6455 5.5.3), the connection stays up, memory
   stays bounded, and once the peer reads, all is well. */
TEST ping_flood_from_a_peer_that_never_reads(void) {
    enum { PINGS = 5000 };
    static unsigned char payload[100];
    unsigned char *f = (unsigned char *)malloc(PINGS * 110);
    size_t n = 0, i;
    pair pr;
    for (i = 0; i < PINGS; i++) n += wire_frame(f + n, 0x89, payload, sizeof payload, 1);
    pair_desc(&pr, WSCH_ROLE_SERVER);
    pr.desc.limits.max_outbound_bytes = 4096;
    ASSERT(pair_open(&pr));
    pr.bad.budget = 0;
    ASSERT_EQ(WSCH_OK, feed(&pr.bad, f, n));
    ASSERT_LTE(wsch_conn_queued_bytes(pr.bad.c), 4096u);
    ASSERT_LT(pr.mem.peak_bytes, (size_t)(4096 * 3 + 4096));
    ASSERT_LTE(pr.mem.live_blocks, 2u + 3u);  /* the conn and its peer's, one gathered run, one pong */
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_conn_state(pr.bad.c));
    /* the same flood a byte at a time */
    ASSERT_EQ(WSCH_OK, feed_bytes(&pr.bad, f, 20 * 106));
    ASSERT_LTE(wsch_conn_queued_bytes(pr.bad.c), 4096u);
    /* the peer starts reading: the queue drains and messages flow again */
    pr.bad.budget = (size_t)-1;
    ASSERT_EQ(WSCH_OK, wsch_conn_writable(pr.bad.c));
    ASSERT_EQ(0u, wsch_conn_queued_bytes(pr.bad.c));
    ASSERT(sent_frames(&pr.bad, WSCH_OP_PONG) >= 1);
    n = wire_frame(f, 0x81, "after", 5, 1);
    ASSERT_EQ(WSCH_OK, feed(&pr.bad, f, n));
    ASSERT_EQ(1u, pr.bad.msgs);
    CHECK_CALL(still_served(&pr));
    CHECK_CALL(pair_free(&pr));
    free(f);
    PASS();
}

/* The peer resets the connection (send() reports WSCH_SEND_ERROR) just as
   its bad frame makes us fail it: the close frame cannot leave, the
   connection ends as lost (1006, WSCH_ERR_TRANSPORT), once, close() last. */
TEST peer_resets_while_being_failed(void) {
    int role, bytewise;
    for (role = 0; role < 2; role++) {
        for (bytewise = 0; bytewise < 2; bytewise++) {
            pair pr;
            unsigned char f[32];
            size_t n;
            pair_desc(&pr, (wsch_role)role);
            ASSERT(pair_open(&pr));
            n = wire_frame(f, 0x81 | 0x40, "hi", 2, role == WSCH_ROLE_SERVER); /* RSV1 */
            pr.bad.broken = 1;
            (void)(bytewise ? feed_bytes(&pr.bad, f, n) : feed(&pr.bad, f, n));
            ASSERT_EQ(1, pr.bad.closes);
            ASSERT_EQ(WSCH_CLOSE_ABNORMAL, pr.bad.close_code);
            ASSERT_EQ(WSCH_ERR_TRANSPORT, wsch_conn_error(pr.bad.c));
            ASSERT_EQ(1, pr.bad.transport_closed);
            ASSERT_EQ(1, pr.bad.closes_at_close);
            ASSERT_EQ(0u, pr.bad.out_len);          /* no close frame got out */
            ASSERT_EQ(0u, pr.bad.timers);
            ASSERT_EQ(0u, wsch_conn_want(pr.bad.c));
            ASSERT_EQ(WSCH_ERR_CLOSED, feed(&pr.bad, f, n));
            ASSERT_EQ(0, pr.bad.after_close);
            CHECK_CALL(still_served(&pr));
            CHECK_CALL(pair_free(&pr));
        }
    }
    PASS();
}

/* A peer that pings, never reads, and then resets: the queued pongs are
   dropped with the connection, which ends once; nothing leaks. */
TEST ping_flood_then_reset(void) {
    enum { PINGS = 500 };
    unsigned char *f = (unsigned char *)malloc(PINGS * 16);
    size_t n = 0, i;
    pair pr;
    for (i = 0; i < PINGS; i++) n += wire_frame(f + n, 0x89, "0123456789", 10, 1);
    pair_desc(&pr, WSCH_ROLE_SERVER);
    pr.desc.limits.max_outbound_bytes = 2048;
    ASSERT(pair_open(&pr));
    pr.bad.budget = 0;
    ASSERT_EQ(WSCH_OK, feed(&pr.bad, f, n));
    ASSERT(wsch_conn_queued_bytes(pr.bad.c) > 0);
    ASSERT_EQ((unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE), wsch_conn_want(pr.bad.c));
    ASSERT_EQ(0, pr.bad.closes);
    pr.bad.broken = 1;                       /* the socket turns writable: with ECONNRESET */
    (void)wsch_conn_writable(pr.bad.c);
    ASSERT_EQ(1, pr.bad.closes);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, pr.bad.close_code);
    ASSERT_EQ(WSCH_ERR_TRANSPORT, wsch_conn_error(pr.bad.c));
    ASSERT_EQ(1, pr.bad.transport_closed);
    ASSERT_EQ(1, pr.bad.closes_at_close);
    ASSERT_EQ(0u, wsch_conn_want(pr.bad.c));
    ASSERT_EQ(WSCH_ERR_CLOSED, wsch_conn_writable(pr.bad.c));
    ASSERT_EQ(0, pr.bad.after_close);
    CHECK_CALL(still_served(&pr));
    CHECK_CALL(pair_free(&pr));
    free(f);
    PASS();
}

SUITE(frames) {
    RUN_TEST(frame_length_2_pow_63);
    RUN_TEST(frame_length_non_minimal);
    RUN_TEST(frame_just_above_frame_limit);
    RUN_TEST(frame_just_above_message_limit);
    RUN_TEST(frame_just_above_default_limits);
    RUN_TEST(thousands_of_one_byte_fragments);
    RUN_TEST(fragmented_message_that_never_ends);
    RUN_TEST(control_frames_between_every_fragment);
    RUN_TEST(reserved_bits);
    RUN_TEST(reserved_opcodes);
    RUN_TEST(masked_server_frames_refused_by_client);
    RUN_TEST(unmasked_client_frames_refused_by_server);
    RUN_TEST(broken_fragmentation_and_control_frames);
    RUN_TEST(invalid_utf8_and_close_payloads);
    RUN_TEST(ping_flood_from_a_peer_that_never_reads);
    RUN_TEST(peer_resets_while_being_failed);
    RUN_TEST(ping_flood_then_reset);
}

/* ======================================================================== */
/* Opening handshake                                                        */
/* ======================================================================== */

/* Feeds a hostile request to a fresh server connection (whole or a byte at
   a time): the refusal must be the documented HTTP status, the error the
   one named, the connection closed once, and a second connection on the
   same descriptor must still complete its handshake and be served. */
static enum greatest_test_res expect_refusal(const char *req, size_t len, size_t max_header, int want_status,
                                             int want_err, int bytewise) {
    pair pr;
    char status[16];
    int rc;
    pair_desc(&pr, WSCH_ROLE_SERVER);
    pr.desc.limits.max_header_bytes = max_header;
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&pr.desc, &pr.bad, &pr.bad.c));
    rc = bytewise ? feed_bytes(&pr.bad, req, len) : feed(&pr.bad, req, len);
    ASSERT_EQ_FMT(want_err, rc, "%d");
    snprintf(status, sizeof status, "HTTP/1.1 %d ", want_status);
    ASSERT(pr.bad.out_len > strlen(status));
    ASSERT_MEM_EQ(status, pr.bad.out, strlen(status));
    if (want_status == 426) {
        pr.bad.out = (unsigned char *)realloc(pr.bad.out, pr.bad.out_len + 1);
        pr.bad.out[pr.bad.out_len] = '\0';
        ASSERT(strstr((const char *)pr.bad.out, "\r\nSec-WebSocket-Version: 13\r\n") != NULL);
    }
    ASSERT_EQ(0, pr.bad.opened);
    ASSERT_EQ(1, pr.bad.closes);
    ASSERT_EQ(1, pr.bad.transport_closed);
    ASSERT_EQ(1, pr.bad.closes_at_close); /* on_close, then close() */
    ASSERT_EQ(0u, pr.bad.timers);
    ASSERT_EQ(want_err, wsch_conn_error(pr.bad.c));
    ASSERT_EQ(want_status, wsch_conn_http_status(pr.bad.c));
    ASSERT_EQ(0, pr.bad.after_close);
    /* bounded: the head buffer stops at its limit (while it grows by copy,
       the old half is alive too), plus the two connections */
    {
        size_t lim = max_header ? max_header : WSCH_DEFAULT_MAX_HEADER_BYTES;
        ASSERT_LT(pr.mem.peak_bytes, lim + lim / 2 + 4096u);
    }
    ASSERT(peer_open(&pr, &pr.good));
    CHECK_CALL(still_served(&pr));
    CHECK_CALL(pair_free(&pr));
    PASS();
}

static enum greatest_test_res expect_refusal2(const char *req, int want_status, int want_err) {
    CHECK_CALL(expect_refusal(req, strlen(req), 0, want_status, want_err, 0));
    CHECK_CALL(expect_refusal(req, strlen(req), 0, want_status, want_err, 1));
    PASS();
}

/* Builds the valid request with one header line replaced (or removed when
   with is ""): which names the line's start, e.g. "Host:". */
static char *request_with(const char *which, const char *with) {
    const char *at = strstr(upgrade_request, which);
    const char *eol = at ? strstr(at, "\r\n") + 2 : NULL;
    size_t head = at ? (size_t)(at - upgrade_request) : 0;
    char *out = (char *)malloc(sizeof upgrade_request + strlen(with) + 8);
    if (!at) return NULL;
    memcpy(out, upgrade_request, head);
    strcpy(out + head, with);
    strcat(out, eol);
    return out;
}

TEST header_flood_one_byte_at_a_time(void) {
    size_t cap = 20000, i;
    char *req = (char *)malloc(cap);
    strcpy(req, "GET /chat HTTP/1.1\r\nHost: example.com\r\n");
    for (i = 0; strlen(req) < 12000; i++) strcat(req, "X-Flood: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    CHECK_CALL(expect_refusal(req, strlen(req), 0, 431, WSCH_ERR_HEADER_TOO_LARGE, 1));
    CHECK_CALL(expect_refusal(req, strlen(req), 0, 431, WSCH_ERR_HEADER_TOO_LARGE, 0));
    /* a smaller configured limit is honoured the same way */
    CHECK_CALL(expect_refusal(req, strlen(req), 1024, 431, WSCH_ERR_HEADER_TOO_LARGE, 1));
    /* one long line instead of many */
    strcpy(req, "GET /chat HTTP/1.1\r\nX-Long: ");
    memset(req + strlen(req), 'b', 10000);
    req[28 + 10000] = '\0';
    CHECK_CALL(expect_refusal(req, strlen(req), 0, 431, WSCH_ERR_HEADER_TOO_LARGE, 0));
    free(req);
    PASS();
}

TEST header_count_flood(void) {
    char req[4096];
    int i;
    strcpy(req, "GET /chat HTTP/1.1\r\nHost: example.com\r\n");
    for (i = 0; i < WSCH_MAX_HEADERS + 8; i++) strcat(req, "X: y\r\n");
    strcat(req, "\r\n");
    CHECK_CALL(expect_refusal2(req, 431, WSCH_ERR_HEADER_TOO_LARGE));
    PASS();
}

/* Slowloris: a request that trickles in and never ends is closed by the
   handshake timer; the other connection completes meanwhile. */
TEST slowloris_handshake_timeout(void) {
    pair pr;
    pair_desc(&pr, WSCH_ROLE_SERVER);
    pr.desc.limits.handshake_timeout_ms = 2000;
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&pr.desc, &pr.bad, &pr.bad.c));
    ASSERT(pr.bad.timers & (1u << WSCH_TIMER_HANDSHAKE));
    ASSERT_EQ(WSCH_OK, feed_bytes(&pr.bad, upgrade_request, 40)); /* part of it, a byte at a time */
    ASSERT(peer_open(&pr, &pr.good));                               /* the other one is served */
    ASSERT_EQ(0, pr.bad.closes);
    pr.bad.timers &= ~(1u << WSCH_TIMER_HANDSHAKE);
    wsch_conn_timer_fired(pr.bad.c, WSCH_TIMER_HANDSHAKE);
    ASSERT_EQ(1, pr.bad.closes);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, pr.bad.close_code);
    ASSERT_EQ(1, pr.bad.transport_closed);
    ASSERT_EQ(1, pr.bad.closes_at_close); /* on_close, then close() */
    ASSERT_EQ(WSCH_ERR_TIMEOUT, wsch_conn_error(pr.bad.c));
    ASSERT_EQ(WSCH_STATE_CLOSED, wsch_conn_state(pr.bad.c));
    ASSERT_EQ(WSCH_ERR_CLOSED, feed(&pr.bad, upgrade_request + 40, sizeof upgrade_request - 41));
    ASSERT_EQ(0, pr.bad.opened);
    ASSERT_EQ(0, pr.bad.after_close);
    CHECK_CALL(still_served(&pr));
    CHECK_CALL(pair_free(&pr));
    PASS();
}

TEST duplicate_headers(void) {
    char *r = request_with("Host:", "Host: a\r\nHost: b\r\n");
    CHECK_CALL(expect_refusal2(r, 400, WSCH_ERR_HTTP));
    free(r);
    r = request_with("Sec-WebSocket-Key:", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                           "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n");
    CHECK_CALL(expect_refusal2(r, 400, WSCH_ERR_HTTP));
    free(r);
    r = request_with("Sec-WebSocket-Version:", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n");
    CHECK_CALL(expect_refusal2(r, 400, WSCH_ERR_HTTP));
    free(r);
    PASS();
}

TEST missing_headers(void) {
    static const char *const names[4] = {"Host:", "Upgrade:", "Connection:", "Sec-WebSocket-Key:"};
    int i;
    for (i = 0; i < 4; i++) {
        char *r = request_with(names[i], "");
        CHECK_CALL(expect_refusal2(r, 400, WSCH_ERR_MISSING_HEADER));
        free(r);
    }
    {
        char *r = request_with("Upgrade:", "Upgrade: h2c\r\n");
        CHECK_CALL(expect_refusal2(r, 400, WSCH_ERR_MISSING_HEADER));
        free(r);
    }
    PASS();
}

TEST invalid_keys(void) {
    static const char *const keys[5] = {
        "Sec-WebSocket-Key: abc\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n",       /* no padding */
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==dGhl\r\n", /* 19 bytes */
        "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n",     /* stray bits */
    };
    int i;
    for (i = 0; i < 5; i++) {
        char *r = request_with("Sec-WebSocket-Key:", keys[i]);
        CHECK_CALL(expect_refusal2(r, 400, WSCH_ERR_KEY));
        free(r);
    }
    PASS();
}

TEST wrong_versions(void) {
    static const char *const versions[5] = {"Sec-WebSocket-Version: 8\r\n", "Sec-WebSocket-Version: 14\r\n",
                                            "Sec-WebSocket-Version: abc\r\n", "Sec-WebSocket-Version: 013x\r\n",
                                            ""};
    int i;
    for (i = 0; i < 5; i++) {
        char *r = request_with("Sec-WebSocket-Version:", versions[i]);
        CHECK_CALL(expect_refusal2(r, 426, WSCH_ERR_WS_VERSION));
        free(r);
    }
    PASS();
}

TEST wrong_method_and_http_version(void) {
    char *r = (char *)malloc(sizeof upgrade_request + 8);
    strcpy(r, "POST");
    strcat(r, upgrade_request + 3);
    CHECK_CALL(expect_refusal2(r, 405, WSCH_ERR_METHOD));
    strcpy(r, upgrade_request);
    memcpy(strstr(r, "HTTP/1.1"), "HTTP/1.0", 8);
    CHECK_CALL(expect_refusal2(r, 400, WSCH_ERR_HTTP_VERSION));
    memcpy(strstr(r, "HTTP/1.0"), "HTTP/2.0", 8);
    CHECK_CALL(expect_refusal2(r, 400, WSCH_ERR_HTTP_VERSION));
    strcpy(r, "GET /chat HTTP/1.1\nHost: x\n\n"); /* bare LF */
    CHECK_CALL(expect_refusal2(r, 400, WSCH_ERR_HTTP));
    free(r);
    PASS();
}

/* The client side of the same: a hostile server's answers. */
static enum greatest_test_res client_refuses(const char *resp, int want_err) {
    pair pr;
    pair_desc(&pr, WSCH_ROLE_CLIENT);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&pr.desc, &pr.bad, &pr.bad.c));
    ASSERT_EQ(want_err, feed_bytes(&pr.bad, resp, strlen(resp)));
    ASSERT_EQ(0, pr.bad.opened);
    ASSERT_EQ(1, pr.bad.closes);
    ASSERT_EQ(1, pr.bad.transport_closed);
    ASSERT_EQ(1, pr.bad.closes_at_close); /* on_close, then close() */
    ASSERT_EQ(want_err, wsch_conn_error(pr.bad.c));
    ASSERT_EQ(0u, pr.bad.timers);
    ASSERT(peer_open(&pr, &pr.good));
    CHECK_CALL(still_served(&pr));
    CHECK_CALL(pair_free(&pr));
    PASS();
}

TEST hostile_server_responses(void) {
    char *flood = (char *)malloc(16000);
    CHECK_CALL(client_refuses("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", WSCH_ERR_STATUS));
    CHECK_CALL(client_refuses("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                              WSCH_ERR_ACCEPT));
    CHECK_CALL(client_refuses("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                              WSCH_ERR_MISSING_HEADER));
    strcpy(flood, "HTTP/1.1 101 Switching Protocols\r\n");
    while (strlen(flood) < 12000) strcat(flood, "X-Flood: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    CHECK_CALL(client_refuses(flood, WSCH_ERR_HEADER_TOO_LARGE));
    free(flood);
    PASS();
}

/* The peer hangs up in the middle of the opening handshake (we see EOF):
   on_close 1006 with WSCH_ERR_HANGUP, then close(), once; the bystander is
   served and nothing is left. Both roles, after any number of bytes. */
TEST hangup_mid_handshake(void) {
    static const char partial_response[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n";
    int role;
    for (role = 0; role < 2; role++) {
        const char *bytes = role == WSCH_ROLE_SERVER ? upgrade_request : partial_response;
        size_t len = role == WSCH_ROLE_SERVER ? sizeof upgrade_request - 3 : sizeof partial_response - 1, cut;
        for (cut = 0; cut <= len; cut += 7) {
            pair pr;
            pair_desc(&pr, (wsch_role)role);
            ASSERT_EQ(WSCH_OK, wsch_conn_create(&pr.desc, &pr.bad, &pr.bad.c));
            ASSERT_EQ(WSCH_OK, feed_bytes(&pr.bad, bytes, cut));
            ASSERT_EQ(WSCH_STATE_HANDSHAKE, wsch_conn_state(pr.bad.c));
            wsch_conn_transport_closed(pr.bad.c);
            ASSERT_EQ(0, pr.bad.opened);
            ASSERT_EQ(1, pr.bad.closes);
            ASSERT_EQ(WSCH_CLOSE_ABNORMAL, pr.bad.close_code);
            ASSERT_EQ(WSCH_ERR_HANGUP, wsch_conn_error(pr.bad.c));
            ASSERT_EQ(1, pr.bad.transport_closed);
            ASSERT_EQ(1, pr.bad.closes_at_close);
            ASSERT_EQ(0u, pr.bad.timers);
            ASSERT_EQ(0u, wsch_conn_want(pr.bad.c));
            ASSERT_EQ(WSCH_ERR_CLOSED, feed(&pr.bad, bytes, len));
            wsch_conn_transport_closed(pr.bad.c); /* a second report changes nothing */
            ASSERT_EQ(1, pr.bad.transport_closed);
            ASSERT_EQ(0, pr.bad.after_close);
            ASSERT(peer_open(&pr, &pr.good));
            CHECK_CALL(still_served(&pr));
            CHECK_CALL(pair_free(&pr));
        }
    }
    PASS();
}

SUITE(handshake) {
    RUN_TEST(header_flood_one_byte_at_a_time);
    RUN_TEST(header_count_flood);
    RUN_TEST(slowloris_handshake_timeout);
    RUN_TEST(duplicate_headers);
    RUN_TEST(missing_headers);
    RUN_TEST(invalid_keys);
    RUN_TEST(wrong_versions);
    RUN_TEST(wrong_method_and_http_version);
    RUN_TEST(hostile_server_responses);
    RUN_TEST(hangup_mid_handshake);
}

/* ======================================================================== */
/* JSON envelopes                                                           */
/* ======================================================================== */

TEST json_nesting_bombs(void) {
    size_t n = 1000000, i;
    char *bomb = (char *)malloc(n + 64);
    wsch_envelope env;
    wsch_str s;
    /* a million '[' : refused at depth 65 without reading on (and no recursion) */
    memset(bomb, '[', n);
    ASSERT_EQ(WSCH_ERR_JSON_DEPTH, wsch_json_validate(bomb, n));
    memset(bomb, '{', n);
    for (i = 1; i + 5 <= n; i += 5) memcpy(bomb + i, "\"a\":{", 5); /* {"a":{"a":{ ... */
    ASSERT_EQ(WSCH_ERR_JSON_DEPTH, wsch_json_validate(bomb, n - (n - 1) % 5));
    /* inside an envelope's payload */
    strcpy(bomb, "{\"type\":\"x\",\"payload\":");
    memset(bomb + 22, '[', 100000);
    ASSERT_EQ(WSCH_ERR_JSON_DEPTH, wsch_envelope_decode(bomb, 22 + 100000, &env));
    ASSERT_EQ(0u, env.type_len);
    /* the limit exactly: 64 levels pass, 65 do not */
    memset(bomb, '[', 64);
    memset(bomb + 64, ']', 64);
    ASSERT_EQ(WSCH_OK, wsch_json_validate(bomb, 128));
    memset(bomb, '[', 65);
    memset(bomb + 65, ']', 65);
    ASSERT_EQ(WSCH_ERR_JSON_DEPTH, wsch_json_validate(bomb, 130));
    s.ptr = bomb;
    s.len = 130;
    ASSERT_EQ(WSCH_ERR_JSON_DEPTH, wsch_json_get_raw(s, "a", &s));
    free(bomb);
    PASS();
}

TEST json_huge_strings(void) {
    size_t n = 4u << 20, i;
    char *doc = (char *)malloc(n + 64), small[16];
    wsch_envelope env;
    wsch_str payload, v;
    size_t need = 0;
    strcpy(doc, "{\"type\":\"big\",\"payload\":{\"channel\":\"");
    i = strlen(doc);
    memset(doc + i, 'c', n);
    strcpy(doc + i + n, "\"}}");
    ASSERT_EQ(WSCH_OK, wsch_envelope_decode(doc, i + n + 3, &env));
    ASSERT_STR_EQ("big", env.type);
    payload = env.payload;
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_envelope_get_channel(payload, small, sizeof small, &need));
    ASSERT_EQ(n, need);    /* the size to retry with, never a truncation */
    ASSERT_EQ(WSCH_OK, wsch_json_get_raw(payload, "channel", &v));
    ASSERT_EQ(n + 2, v.len);
    /* a huge type is refused, not truncated */
    strcpy(doc, "{\"type\":\"");
    memset(doc + 9, 't', 100000);
    strcpy(doc + 9 + 100000, "\"}");
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_envelope_decode(doc, 9 + 100000 + 2, &env));
    /* an unterminated huge string */
    memset(doc, '"', 1);
    memset(doc + 1, 's', n);
    ASSERT_EQ(WSCH_ERR_JSON, wsch_json_validate(doc, n + 1));
    free(doc);
    PASS();
}

TEST json_invalid_escapes(void) {
    static const char *const bad[9] = {
        "\"\\x41\"", "\"\\u12\"", "\"\\u00G0\"", "\"\\\"", "\"\\U0041\"", "\"\\'\"", "\"\\u\"", "\"\\ \"",
        "\"\\0\"",
    };
    int i;
    for (i = 0; i < 9; i++) ASSERT_EQ_FMTm(bad[i], WSCH_ERR_JSON, wsch_json_validate(bad[i], strlen(bad[i])), "%d");
    ASSERT_EQ(WSCH_OK, wsch_json_validate("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\"", 24));
    PASS();
}

TEST json_lone_surrogates(void) {
    static const char *const bad[7] = {
        "{\"type\":\"\\ud800\"}", "{\"type\":\"\\udc00\"}", "{\"type\":\"\\ud800\\u0041\"}",
        "{\"type\":\"\\ud800\\ud800\"}", "{\"type\":\"\\udbff\"}", "{\"type\":\"x\",\"p\":\"\\udfff\"}",
        "{\"type\":\"\\ud83d\\\"\"}",
    };
    wsch_envelope env;
    int i;
    for (i = 0; i < 7; i++) {
        ASSERT_EQ_FMTm(bad[i], WSCH_ERR_UTF8, wsch_envelope_decode(bad[i], strlen(bad[i]), &env), "%d");
    }
    /* a real pair is fine and becomes 4 bytes of UTF-8 */
    ASSERT_EQ(WSCH_OK, wsch_envelope_decode("{\"type\":\"\\ud83d\\ude00\"}", 23, &env));
    ASSERT_EQ(4u, env.type_len);
    ASSERT_MEM_EQ("\xf0\x9f\x98\x80", env.type, 4);
    /* raw invalid UTF-8 in strings */
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_json_validate("\"\xed\xa0\x80\"", 5));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_json_validate("\"\xc0\xaf\"", 4));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_json_validate("\"\xf5\x80\x80\x80\"", 6));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_json_validate("\"a\x01\"", 4)); /* raw control character */
    PASS();
}

TEST json_type_tricks(void) {
    wsch_envelope env;
    ASSERT_EQ(WSCH_ERR_JSON, wsch_envelope_decode("{\"type\":\"a\",\"type\":\"b\"}", 23, &env));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_envelope_decode("{\"type\":\"a\",\"t\\u0079pe\":\"b\"}", 28, &env));
    ASSERT_EQ(WSCH_ERR_NO_TYPE, wsch_envelope_decode("{\"type\":\"a\\u0000b\"}", 19, &env));
    ASSERT_EQ(WSCH_ERR_NO_TYPE, wsch_envelope_decode("{\"type\":1}", 10, &env));
    ASSERT_EQ(WSCH_ERR_NO_TYPE, wsch_envelope_decode("[\"type\"]", 8, &env));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_envelope_decode("{\"type\":\"a\"} x", 14, &env));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_envelope_decode("\xef\xbb\xbf{\"type\":\"a\"}", 15, &env)); /* BOM */
    PASS();
}

SUITE(json) {
    RUN_TEST(json_nesting_bombs);
    RUN_TEST(json_huge_strings);
    RUN_TEST(json_invalid_escapes);
    RUN_TEST(json_lone_surrogates);
    RUN_TEST(json_type_tricks);
}

/* ======================================================================== */
/* Hub                                                                      */
/* ======================================================================== */

typedef struct hubw {
    wsch_hub *hub;
    wsch_hub_desc desc;
    alloc_counter mem;
    peer p[3];
    wsch_hub_peer h[3];
    int accepted[3];        /* p[i] was handed to the hub */
    int connects, disconnects, last_code;
} hubw;

static void hw_on_connect(wsch_hub *hub, wsch_hub_peer c, wsch_str uid, void *user) {
    (void)hub;
    (void)c;
    (void)uid;
    ((hubw *)user)->connects++;
}
static void hw_on_disconnect(wsch_hub *hub, wsch_hub_peer c, int code, void *user) {
    hubw *w = (hubw *)user;
    (void)hub;
    (void)c;
    w->disconnects++;
    w->last_code = code;
}

static void hw_init(hubw *w) {
    int i;
    memset(w, 0, sizeof *w);
    w->desc.allocator = alloc_counter_allocator(&w->mem);
    w->desc.effects.send = peer_send;
    w->desc.effects.close = peer_close;
    w->desc.effects.timer_set = peer_timer_set;
    w->desc.effects.timer_cancel = peer_timer_cancel;
    w->desc.on_connect = hw_on_connect;
    w->desc.on_disconnect = hw_on_disconnect;
    w->desc.user = w;
    for (i = 0; i < 3; i++) w->p[i].budget = (size_t)-1;
}

static const char hub_request[] =
    "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

static int hw_feed(hubw *w, int i, const void *bytes, size_t len) {
    void *copy = malloc(len ? len : 1);
    int rc;
    memcpy(copy, bytes, len);
    rc = wsch_hub_feed(w->hub, w->h[i], copy, len);
    free(copy);
    return rc;
}

static int hw_open(hubw *w, int i) {
    if (wsch_hub_accept(w->hub, NULL, &w->p[i], &w->h[i]) != WSCH_OK) return 0;
    w->accepted[i] = 1;
    if (hw_feed(w, i, hub_request, sizeof hub_request - 1) != WSCH_OK) return 0;
    if (w->p[i].out_len < 12 || memcmp(w->p[i].out, "HTTP/1.1 101", 12) != 0) return 0;
    w->p[i].out_len = 0;
    return wsch_hub_peer_state(w->hub, w->h[i]) == WSCH_STATE_OPEN;
}

static int hw_text(hubw *w, int i, const char *text) {
    unsigned char f[512];
    return hw_feed(w, i, f, wire_frame(f, 0x81, text, strlen(text), 1));
}

/* Counts the envelopes of a type p received (and, for errors, with a code). */
static size_t hw_count(const peer *p, const char *type, const char *code) {
    size_t pos = 0, n = 0;
    while (pos < p->out_len) {
        wsch_frame_header h;
        size_t hl;
        wsch_envelope env;
        if (wsch_frame_header_decode(p->out + pos, p->out_len - pos, &h, &hl) != WSCH_OK) break;
        if (pos + hl + h.payload_len > p->out_len) break;
        if (h.opcode == WSCH_OP_TEXT &&
            wsch_envelope_decode((const char *)p->out + pos + hl, (size_t)h.payload_len, &env) == WSCH_OK &&
            wsch_envelope_type_is(&env, type)) {
            char got[64];
            if (!code || (wsch_json_get_string(env.payload, "code", got, sizeof got, NULL) == WSCH_OK &&
                          strcmp(got, code) == 0))
                n++;
        }
        pos += hl + (size_t)h.payload_len;
    }
    return n;
}

/* Destroys the hub, which closes every transport still its own: each peer
   ever accepted has seen exactly one close(), and nothing after it. */
static enum greatest_test_res hw_free(hubw *w) {
    int i;
    wsch_hub_destroy(w->hub);
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(w->accepted[i], w->p[i].transport_closed);
        ASSERT_EQ(0, w->p[i].after_close);
    }
    for (i = 0; i < 3; i++) free(w->p[i].out);
    ASSERT_EQ_FMT((size_t)0, w->mem.live_blocks, "%zu");
    PASS();
}

TEST subscribe_flood_past_channel_limit(void) {
    hubw w;
    wsch_hub_counters st;
    char msg[128];
    size_t delivered = 0;
    int i;
    hw_init(&w);
    w.desc.max_channels_per_peer = 4;
    ASSERT_EQ(WSCH_OK, wsch_hub_create(&w.desc, &w.hub));
    ASSERT(hw_open(&w, 0) && hw_open(&w, 1));
    for (i = 0; i < 200; i++) {
        snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"c%d\"}}", i);
        ASSERT_EQ(WSCH_OK, hw_text(&w, 0, msg));
    }
    ASSERT_EQ(4u, hw_count(&w.p[0], "subscribed", NULL));
    ASSERT_EQ(196u, hw_count(&w.p[0], "error", "too_many_channels"));
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(w.hub, w.h[0])); /* an error never closes */
    /* invalid names are refused one by one as well */
    ASSERT_EQ(WSCH_OK, hw_text(&w, 0, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"bad name\"}}"));
    ASSERT_EQ(WSCH_OK, hw_text(&w, 0, "{\"type\":\"subscribe\",\"payload\":{\"channel\":7}}"));
    ASSERT_EQ(1u, hw_count(&w.p[0], "error", "bad_channel"));
    ASSERT_EQ(1u, hw_count(&w.p[0], "error", "bad_payload"));
    wsch_hub_stats(w.hub, &st);
    ASSERT_EQ(4u, st.subscriptions);
    ASSERT_EQ(4u, st.channels);
    /* the other client is served: it joins c0 and gets a broadcast */
    ASSERT_EQ(WSCH_OK, hw_text(&w, 1, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"c0\"}}"));
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(w.hub, "c0", "news", "1", 1, &delivered));
    ASSERT_EQ(2u, delivered);
    ASSERT_EQ(1u, hw_count(&w.p[1], "news", NULL));
    /* the flooder leaves: every one of its subscriptions goes with it */
    ASSERT_EQ(WSCH_OK, wsch_hub_transport_closed(w.hub, w.h[0]));
    ASSERT_EQ(1, w.p[0].transport_closed); /* close() runs on this path too */
    ASSERT_EQ(0, wsch_hub_peer_valid(w.hub, w.h[0]));
    wsch_hub_stats(w.hub, &st);
    ASSERT_EQ(1u, st.subscriptions);
    ASSERT_EQ(1u, wsch_hub_channel_size(w.hub, "c0"));
    ASSERT_EQ(0u, wsch_hub_channel_size(w.hub, "c1"));
    CHECK_CALL(hw_free(&w));
    PASS();
}

TEST peer_that_never_reads(void) {
    hubw w;
    wsch_hub_counters st;
    char payload[300];
    size_t delivered = 0;
    int i, dropped_at = -1;
    hw_init(&w);
    w.desc.limits.max_outbound_bytes = 4096;
    ASSERT_EQ(WSCH_OK, wsch_hub_create(&w.desc, &w.hub));
    ASSERT(hw_open(&w, 0) && hw_open(&w, 1));
    ASSERT_EQ(WSCH_OK, hw_text(&w, 0, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}"));
    ASSERT_EQ(WSCH_OK, hw_text(&w, 1, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}"));
    w.p[0].budget = 0; /* from now on its socket never drains */
    memset(payload, 'n', sizeof payload);
    payload[0] = '"';
    payload[sizeof payload - 1] = '"';
    for (i = 0; i < 100; i++) {
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(w.hub, "news", "item", payload, sizeof payload, &delivered));
        if (delivered == 1 && dropped_at < 0) dropped_at = i;
        ASSERT_LTE(wsch_hub_peer_queued_bytes(w.hub, w.h[0]), 4096u + 256u); /* + its close frame */
    }
    ASSERT(dropped_at > 0 && dropped_at < 20);
    wsch_hub_stats(w.hub, &st);
    ASSERT_EQ(1u, st.drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    ASSERT_EQ(0, wsch_hub_is_subscribed(w.hub, w.h[0], "news"));
    ASSERT_EQ(1u, wsch_hub_channel_size(w.hub, "news"));
    ASSERT_EQ(100u, hw_count(&w.p[1], "item", NULL)); /* the reader got every one */
    /* the queue (close frame last, code 4008) would leave if the socket drained */
    w.p[0].budget = (size_t)-1;
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(w.hub, w.h[0]));
    ASSERT_EQ(WSCH_HUB_CLOSE_SLOW_CONSUMER, sent_close_code(&w.p[0]));
    /* the peer never answers it: the close timer ends the connection */
    ASSERT(w.p[0].timers & (1u << WSCH_TIMER_CLOSE));
    w.p[0].timers &= ~(1u << WSCH_TIMER_CLOSE);
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(w.hub, w.h[0], WSCH_TIMER_CLOSE));
    ASSERT_EQ(1, w.p[0].transport_closed);
    ASSERT_EQ(1, w.disconnects);
    /* close() released the peer: the handle is stale at once, and a late
       EOF report from the caller changes nothing */
    ASSERT_EQ(0, wsch_hub_peer_valid(w.hub, w.h[0]));
    ASSERT_EQ(0u, wsch_hub_peer_want(w.hub, w.h[0]));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_transport_closed(w.hub, w.h[0]));
    ASSERT_EQ(1, w.p[0].transport_closed);
    ASSERT_EQ(1, w.disconnects);
    wsch_hub_stats(w.hub, &st);
    ASSERT_EQ(1u, st.peers);
    ASSERT_EQ(0u, st.bytes_queued);
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(w.hub, w.h[1]));
    CHECK_CALL(hw_free(&w));
    PASS();
}

SUITE(hub) {
    RUN_TEST(subscribe_flood_past_channel_limit);
    RUN_TEST(peer_that_never_reads);
}

/* ======================================================================== */
/* Regressions: bugs the fuzz targets found (reproducers in fuzz/regressions) */
/* ======================================================================== */

/* fuzz_conn_*: an empty first fragment used to copy from a NULL buffer. */
TEST empty_first_fragment(void) {
    int role;
    for (role = 0; role < 2; role++) {
        pair pr;
        unsigned char f[32];
        size_t n;
        pair_desc(&pr, (wsch_role)role);
        ASSERT(pair_open(&pr));
        n = other_frame(&pr, f, 0x01, "", 0);
        n += other_frame(&pr, f + n, 0x00, "", 0);
        n += other_frame(&pr, f + n, 0x80, "x", 1);
        ASSERT_EQ(WSCH_OK, feed(&pr.bad, f, n));
        ASSERT_EQ(1u, pr.bad.msgs);
        ASSERT_EQ(1u, pr.bad.last_len);
        n = other_frame(&pr, f, 0x02, "", 0);
        n += other_frame(&pr, f + n, 0x80, "", 0);
        ASSERT_EQ(WSCH_OK, feed_bytes(&pr.bad, f, n));
        ASSERT_EQ(2u, pr.bad.msgs);
        ASSERT_EQ(0u, pr.bad.last_len);
        CHECK_CALL(pair_free(&pr));
    }
    PASS();
}

/* fuzz_conn_server: a close frame that left in part and could not be queued
   ended the connection, which then went back to CLOSING, armed a timer and
   reported on_close a second time. */
TEST close_frame_cut_by_nomem(void) {
    pair pr;
    unsigned char f[8];
    size_t n = wire_frame(f, 0x81, "A", 1, 0); /* unmasked: a protocol error */
    pair_desc(&pr, WSCH_ROLE_SERVER);
    ASSERT(pair_open(&pr));
    pr.bad.budget = 1;                      /* one byte of the close frame leaves */
    pr.mem.fail_at = pr.mem.allocs + 1;      /* and the rest cannot be queued */
    (void)feed(&pr.bad, f, n);
    pr.mem.fail_at = 0;
    ASSERT_EQ(1, pr.bad.closes);
    ASSERT_EQ(WSCH_STATE_CLOSED, wsch_conn_state(pr.bad.c));
    ASSERT_EQ(0u, pr.bad.timers);
    ASSERT_EQ(1, pr.bad.transport_closed);
    ASSERT_EQ(1, pr.bad.closes_at_close); /* on_close, then close() */
    ASSERT_EQ(0, pr.bad.after_close);
    wsch_conn_timer_fired(pr.bad.c, WSCH_TIMER_CLOSE);
    ASSERT_EQ(1, pr.bad.closes);
    CHECK_CALL(still_served(&pr));
    CHECK_CALL(pair_free(&pr));
    PASS();
}

/* A scripted world for the client regressions. */
typedef struct cw {
    wsch_client *c;
    wsch_client_desc d;
    alloc_counter mem;
    int transport;          /* 0 none, 1 asked for, 2 open */
    int bad_close;          /* close() with no transport */
    int asked, closed;      /* connect() and close() calls: one close() per connect() */
    int connects, disconnects, destroy_on_connecting;
    unsigned timers;
    char out[4096];
    size_t out_len;
} cw;

static void cw_connect(const char *host, uint16_t port, void *user) {
    cw *w = (cw *)user;
    (void)host;
    (void)port;
    w->asked++;
    w->transport = 1;
    w->out_len = 0;
}
static size_t cw_send(const void *data, size_t len, void *user) {
    cw *w = (cw *)user;
    if (w->out_len + len < sizeof w->out) {
        memcpy(w->out + w->out_len, data, len);
        w->out_len += len;
    }
    return len;
}
static void cw_close(void *user) {
    cw *w = (cw *)user;
    if (w->transport == 0) w->bad_close++;
    w->closed++;
    w->transport = 0;
}
static void cw_timer_set(unsigned id, uint32_t ms, void *user) {
    (void)ms;
    ((cw *)user)->timers |= 1u << id;
}
static void cw_timer_cancel(unsigned id, void *user) { ((cw *)user)->timers &= ~(1u << id); }
static uint64_t cw_now(void *user) {
    (void)user;
    return 1000;
}
static void cw_on_status(wsch_client *c, wsch_status s, void *user) {
    cw *w = (cw *)user;
    if (s == WSCH_STATUS_CONNECTING && w->destroy_on_connecting) {
        w->destroy_on_connecting = 0;
        wsch_client_destroy(c);
        w->c = NULL;
    }
}
static void cw_on_connect(wsch_client *c, void *user) {
    (void)c;
    ((cw *)user)->connects++;
}
static void cw_on_disconnect(wsch_client *c, int code, const char *r, size_t n, void *user) {
    (void)c;
    (void)code;
    (void)r;
    (void)n;
    ((cw *)user)->disconnects++;
}

static void cw_init(cw *w) {
    memset(w, 0, sizeof *w);
    w->d.url = "ws://example.com:9001/ws";
    w->d.allocator = alloc_counter_allocator(&w->mem);
    w->d.user = w;
    w->d.effects.connect = cw_connect;
    w->d.effects.send = cw_send;
    w->d.effects.close = cw_close;
    w->d.effects.timer_set = cw_timer_set;
    w->d.effects.timer_cancel = cw_timer_cancel;
    w->d.effects.now_ms = cw_now;
    w->d.effects.random_bytes = peer_random;
    w->d.on_status = cw_on_status;
    w->d.on_connect = cw_on_connect;
    w->d.on_disconnect = cw_on_disconnect;
}

/* (connect,) transport open, a valid 101: OPEN. */
static int cw_answer(cw *w) {
    char resp[256], accept[WSCH_ACCEPT_LEN + 1];
    const char *k;
    int n;
    if (w->transport != 1) return 0;
    w->transport = 2;
    wsch_client_transport_open(w->c);
    w->out[w->out_len] = '\0';
    k = strstr(w->out, "Sec-WebSocket-Key: ");
    if (!k) return 0;
    wsch_accept_key(k + 19, WSCH_KEY_LEN, accept);
    n = snprintf(resp, sizeof resp,
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
    (void)wsch_client_feed(w->c, resp, (size_t)n);
    return wsch_client_status(w->c) == WSCH_STATUS_CONNECTED;
}

static int cw_open(cw *w) { return wsch_client_connect(w->c) == WSCH_OK && cw_answer(w); }

/* fuzz_client: destroying the client from on_status(CONNECTING) made it
   close a transport it had never asked for. */
TEST client_close_without_connect(void) {
    cw w;
    cw_init(&w);
    ASSERT_EQ(WSCH_OK, wsch_client_create(&w.d, &w.c));
    w.destroy_on_connecting = 1;
    ASSERT_EQ(WSCH_OK, wsch_client_connect(w.c));
    ASSERT(w.c == NULL);
    ASSERT_EQ(0, w.bad_close);
    ASSERT_EQ(w.asked, w.closed);
    ASSERT_EQ(0u, w.timers);
    ASSERT_EQ(0u, w.mem.live_blocks);
    PASS();
}

/* fuzz_client: connect() while CLOSING dropped the open link without
   on_disconnect, so on_connect came twice in a row. */
TEST client_connect_from_closing_pairs_events(void) {
    cw w;
    cw_init(&w);
    ASSERT_EQ(WSCH_OK, wsch_client_create(&w.d, &w.c));
    ASSERT(cw_open(&w));
    ASSERT_EQ(WSCH_OK, wsch_client_disconnect(w.c)); /* CLOSING: close frame sent */
    ASSERT_EQ(WSCH_OK, wsch_client_connect(w.c));
    ASSERT_EQ(1, w.connects);
    ASSERT_EQ(1, w.disconnects);
    ASSERT_EQ(0, w.bad_close);
    ASSERT(cw_answer(&w));                           /* and the new link pairs up again */
    ASSERT_EQ(2, w.connects);
    ASSERT_EQ(1, w.disconnects);
    ASSERT_EQ(1, w.closed);                          /* the first link's transport */
    wsch_client_destroy(w.c);
    ASSERT_EQ(2, w.asked);
    ASSERT_EQ(2, w.closed);                          /* and the second's, by destroy */
    ASSERT_EQ(0, w.bad_close);
    ASSERT_EQ(0u, w.mem.live_blocks);
    ASSERT_EQ(0u, w.timers);
    PASS();
}

/* fuzz_client: disconnect() after the server's close frame dropped the link
   without on_disconnect. */
TEST client_disconnect_after_close_frame_pairs_events(void) {
    cw w;
    unsigned char f[8];
    size_t n = wire_frame(f, 0x88, "\x03\xe8", 2, 0);
    cw_init(&w);
    ASSERT_EQ(WSCH_OK, wsch_client_create(&w.d, &w.c));
    ASSERT(cw_open(&w));
    (void)wsch_client_feed(w.c, f, n);
    ASSERT_EQ(WSCH_OK, wsch_client_disconnect(w.c));
    ASSERT_EQ(WSCH_STATUS_DISCONNECTED, wsch_client_status(w.c));
    if (w.transport) { /* the close handshake is finishing: the server closes TCP */
        wsch_client_transport_closed(w.c);
        ASSERT_EQ(0, w.transport); /* close() releases the socket on this path too */
    }
    ASSERT_EQ(1, w.closed);
    ASSERT(wsch_client_conn(w.c) == NULL);
    ASSERT_EQ(1, w.connects);
    ASSERT_EQ(1, w.disconnects);
    ASSERT_EQ(WSCH_STOP_USER, wsch_client_stop_reason(w.c));
    ASSERT_EQ(0, w.bad_close);
    wsch_client_destroy(w.c);
    ASSERT_EQ(1, w.closed);
    ASSERT_EQ(0, w.bad_close);
    ASSERT_EQ(0u, w.mem.live_blocks);
    PASS();
}

/* fuzz_hub: a handshaking client closed by the hub (shutdown, close_client)
   still answered later bytes after close(), and its handshake timer closed
   the transport a second time. */
TEST hub_handshaking_client_closed_once(void) {
    int variant;
    for (variant = 0; variant < 2; variant++) {
        hubw w;
        hw_init(&w);
        ASSERT_EQ(WSCH_OK, wsch_hub_create(&w.desc, &w.hub));
        ASSERT_EQ(WSCH_OK, wsch_hub_accept(w.hub, NULL, &w.p[0], &w.h[0]));
        w.accepted[0] = 1;
        if (variant == 0) wsch_hub_shutdown(w.hub);
        else (void)wsch_hub_peer_close(w.hub, w.h[0], 1000, NULL, 0);
        ASSERT_EQ(1, w.p[0].transport_closed);
        ASSERT_EQ(0, wsch_hub_peer_valid(w.hub, w.h[0]));          /* released by close() */
        ASSERT_EQ(0u, w.p[0].timers);                              /* its handshake timer cancelled */
        /* bytes read before the close, then a timer already in flight */
        ASSERT_EQ(WSCH_ERR_STALE, hw_feed(&w, 0, hub_request, sizeof hub_request - 1));
        ASSERT_EQ(0u, w.p[0].out_len);                             /* nothing written after close() */
        ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_timer_fired(w.hub, w.h[0], WSCH_TIMER_HANDSHAKE));
        ASSERT_EQ(1, w.p[0].transport_closed);                     /* closed exactly once */
        CHECK_CALL(hw_free(&w));
    }
    PASS();
}

/* fuzz_conn_server: replies gathered during one feed counted against
   max_outbound_bytes, so a peer that reads everything lost pongs when its
   pings came in one read. */
TEST pongs_do_not_depend_on_read_size(void) {
    unsigned char f[8 * 70], payload[60];
    size_t n = 0, i;
    int bytewise;
    for (bytewise = 0; bytewise < 2; bytewise++) {
        pair pr;
        n = 0;
        for (i = 0; i < 8; i++) {
            memset(payload, (int)i, sizeof payload);
            n += wire_frame(f + n, 0x89, payload, sizeof payload, 1);
        }
        pair_desc(&pr, WSCH_ROLE_SERVER);
        pr.desc.limits.max_outbound_bytes = 300;
        ASSERT(pair_open(&pr));
        ASSERT_EQ(WSCH_OK, bytewise ? feed_bytes(&pr.bad, f, n) : feed(&pr.bad, f, n));
        ASSERT_EQ(8u, sent_frames(&pr.bad, WSCH_OP_PONG));
        ASSERT_EQ(0u, wsch_conn_queued_bytes(pr.bad.c));
        CHECK_CALL(pair_free(&pr));
    }
    PASS();
}

/* fuzz_handshake: extra_headers repeating a header the builder writes made
   a request the library's own server refuses as ambiguous. */
TEST request_extra_headers_cannot_repeat_handshake_headers(void) {
    static const char *const bad[5] = {"Host: other\r\n", "sec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==\r\n",
                                       "Sec-WebSocket-Version: 8\r\n", "Upgrade: h2c\r\n",
                                       "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"};
    wsch_handshake_request_desc d;
    char out[1024], key[WSCH_KEY_LEN + 1];
    size_t len = 0, consumed = 0;
    wsch_request req;
    int i;
    memset(&d, 0, sizeof d);
    d.host = "example.com";
    for (i = 0; i < 5; i++) {
        d.extra_headers = bad[i];
        ASSERT_EQ_FMTm(bad[i], WSCH_ERR_ARG, wsch_handshake_request_build(&d, out, sizeof out, &len, key), "%d");
    }
    d.extra_headers = "X-Trace: 1\r\nAuthorization: Bearer t\r\n";
    ASSERT_EQ(WSCH_OK, wsch_handshake_request_build(&d, out, sizeof out, &len, key));
    ASSERT_EQ(WSCH_OK, wsch_request_parse(out, len, 0, 0, &req, &consumed));
    ASSERT_EQ(WSCH_OK, wsch_request_check_upgrade(&req));
    PASS();
}

SUITE(fuzz_regressions) {
    RUN_TEST(empty_first_fragment);
    RUN_TEST(close_frame_cut_by_nomem);
    RUN_TEST(client_close_without_connect);
    RUN_TEST(client_connect_from_closing_pairs_events);
    RUN_TEST(client_disconnect_after_close_frame_pairs_events);
    RUN_TEST(hub_handshaking_client_closed_once);
    RUN_TEST(pongs_do_not_depend_on_read_size);
    RUN_TEST(request_extra_headers_cannot_repeat_handshake_headers);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(frames);
    RUN_SUITE(handshake);
    RUN_SUITE(json);
    RUN_SUITE(hub);
    RUN_SUITE(fuzz_regressions);
    GREATEST_MAIN_END();
}
