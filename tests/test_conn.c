/* Connection engine: RFC 6455 sections 5-7 in both roles, written as the
   Autobahn TestSuite categories 1-7, 9 and 10 describe them, each scenario fed
   whole, split at every byte, and one byte at a time. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER
#include "wire.h"
#include "alloc.h"

#include <stdlib.h>

/* ---- a scripted transport ------------------------------------------------ */

typedef struct msg_rec {
    unsigned opcode;
    size_t len;
    unsigned char *data;
} msg_rec;

typedef struct fake {
    wsch_conn_desc desc;
    wsch_conn *c;
    unsigned char *out;             /* everything send() took */
    size_t out_len, out_cap;
    size_t send_budget;             /* bytes send() may still take; (size_t)-1 = all */
    int send_error;                 /* send() reports WSCH_SEND_ERROR (EPIPE, ECONNRESET) */
    int send_calls;
    int flush_asks;                 /* flush_later() calls (gathering) */
    int transport_closed;           /* close() calls */
    int closes;                     /* on_close calls */
    int closes_at_close;            /* on_close calls seen when close() ran */
    int after_close;                /* callbacks of any kind after close() */
    int close_code;
    int close_error;                /* wsch_conn_error() inside on_close */
    char close_reason[128];
    int opened;
    msg_rec msgs[64];
    size_t nmsgs;
    int pongs;
    unsigned timers_armed;          /* bit per timer id */
    uint32_t timer_delay[8];
    unsigned rand_state;
    int destroy_in_message;         /* destroy the conn from on_message */
    int destroy_in_close;           /* ... from on_close */
    int destroy_in_transport_close; /* ... from close(), as the docs suggest */
} fake;

/* Every callback notes whether it came after close(), the last one. */
static fake *fake_cb(void *user) {
    fake *f = (fake *)user;
    if (f->transport_closed) f->after_close++;
    return f;
}

static size_t fake_send(const void *data, size_t len, void *user) {
    fake *f = fake_cb(user);
    size_t n = len < f->send_budget ? len : f->send_budget;
    f->send_calls++;
    if (f->send_error) return WSCH_SEND_ERROR;
    if (f->send_budget != (size_t)-1) f->send_budget -= n;
    wire_append(&f->out, &f->out_len, &f->out_cap, data, n);
    return n;
}
/* writev: the pieces in order, as far as send_budget goes, in one call. */
static size_t fake_send_gather(const wsch_iovec *parts, size_t count, void *user) {
    fake *f = fake_cb(user);
    size_t i, taken = 0;
    f->send_calls++;
    if (f->send_error) return WSCH_SEND_ERROR;
    for (i = 0; i < count && f->send_budget; i++) {
        size_t n = parts[i].len < f->send_budget ? parts[i].len : f->send_budget;
        if (f->send_budget != (size_t)-1) f->send_budget -= n;
        wire_append(&f->out, &f->out_len, &f->out_cap, parts[i].base, n);
        taken += n;
    }
    return taken;
}
static int fake_flush_later(void *user) {
    fake_cb(user)->flush_asks++;
    return 0;
}
static void fake_close(void *user) {
    fake *f = fake_cb(user);
    f->closes_at_close = f->closes;
    f->transport_closed++;
    if (f->destroy_in_transport_close && f->c) {
        wsch_conn_destroy(f->c);
        f->c = NULL;
    }
}
static void fake_timer_set(unsigned id, uint32_t ms, void *user) {
    fake *f = fake_cb(user);
    f->timers_armed |= 1u << id;
    f->timer_delay[id] = ms;
}
static void fake_timer_cancel(unsigned id, void *user) { fake_cb(user)->timers_armed &= ~(1u << id); }
static void fake_random(void *buf, size_t len, void *user) {
    fake *f = fake_cb(user);
    size_t i;
    for (i = 0; i < len; i++) {
        f->rand_state = f->rand_state * 1103515245u + 12345u;
        ((unsigned char *)buf)[i] = (unsigned char)(f->rand_state >> 16);
    }
}
static void fake_on_open(wsch_conn *c, void *user) { (void)c; fake_cb(user)->opened++; }
static void fake_on_message(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
    fake *f = fake_cb(user);
    if (f->nmsgs < 64) {
        msg_rec *m = &f->msgs[f->nmsgs++];
        m->opcode = (unsigned)op;
        m->len = len;
        m->data = (unsigned char *)malloc(len ? len : 1);
        if (len) memcpy(m->data, data, len);
    }
    if (f->destroy_in_message) {
        wsch_conn_destroy(c);
        f->c = NULL;
    }
}
static void fake_on_pong(wsch_conn *c, const void *data, size_t len, void *user) {
    (void)c; (void)data; (void)len;
    fake_cb(user)->pongs++;
}
static void fake_on_close(wsch_conn *c, int code, const char *reason, size_t len, void *user) {
    fake *f = fake_cb(user);
    f->closes++;
    f->close_code = code;
    f->close_error = wsch_conn_error(c);
    if (len > sizeof f->close_reason - 1) len = sizeof f->close_reason - 1;
    memcpy(f->close_reason, reason, len);
    f->close_reason[len] = '\0';
    if (f->destroy_in_close) {
        wsch_conn_destroy(c);
        f->c = NULL;
    }
}

static void fake_init(fake *f, wsch_role role) {
    memset(f, 0, sizeof *f);
    f->send_budget = (size_t)-1;
    f->rand_state = 42;
    f->desc.role = role;
    f->desc.request.host = "example.com";
    f->desc.effects.send = fake_send;
    f->desc.effects.close = fake_close;
    f->desc.effects.timer_set = fake_timer_set;
    f->desc.effects.timer_cancel = fake_timer_cancel;
    f->desc.effects.random_bytes = fake_random;
    f->desc.on_open = fake_on_open;
    f->desc.on_message = fake_on_message;
    f->desc.on_pong = fake_on_pong;
    f->desc.on_close = fake_on_close;
}

static void fake_free(fake *f) {
    size_t i;
    if (f->c) wsch_conn_destroy(f->c);
    for (i = 0; i < f->nmsgs; i++) free(f->msgs[i].data);
    free(f->out);
    f->c = NULL;
}

static const char upgrade_request[] =
    "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/* An open server connection with its 101 already taken out of f->out. */
static int open_server(fake *f) {
    char req[sizeof upgrade_request];
    memcpy(req, upgrade_request, sizeof req);
    if (wsch_conn_create(&f->desc, f, &f->c) != WSCH_OK) return 0;
    if (wsch_conn_feed(f->c, req, sizeof req - 1) != WSCH_OK) return 0;
    if (f->out_len < 12 || memcmp(f->out, "HTTP/1.1 101", 12) != 0) return 0;
    f->out_len = 0;
    return wsch_conn_state(f->c) == WSCH_STATE_OPEN && f->opened == 1;
}

/* Parses the server's output into frames (unmasked, as servers send). */
typedef struct out_frame {
    unsigned opcode, fin;
    size_t len;
    const unsigned char *payload;
} out_frame;

static size_t parse_out(const unsigned char *p, size_t len, out_frame *frames, size_t max, int expect_masked) {
    size_t n = 0, pos = 0;
    while (pos < len && n < max) {
        wsch_frame_header h;
        size_t hl;
        if (wsch_frame_header_decode(p + pos, len - pos, &h, &hl) != WSCH_OK) break;
        if (h.masked != expect_masked || pos + hl + h.payload_len > len) break;
        frames[n].opcode = h.opcode;
        frames[n].fin = h.fin;
        frames[n].len = (size_t)h.payload_len;
        frames[n].payload = p + pos + hl;
        if (h.masked) wsch_mask((void *)(uintptr_t)(p + pos + hl), (size_t)h.payload_len, h.mask_key, 0);
        pos += hl + (size_t)h.payload_len;
        n++;
    }
    return pos == len ? n : (size_t)-1;
}

/* ---- scenario runner: same events for every way of splitting the input -- */

typedef struct outcome {
    size_t nmsgs;
    unsigned opcodes[64];
    size_t lens[64];
    unsigned long sums[64];
    unsigned char out[1024];        /* first bytes written after the handshake */
    size_t out_len;
    int closes, close_code, transport_closed, pongs;
    int closes_at_close, after_close;
} outcome;

static unsigned long checksum(const unsigned char *p, size_t n) {
    unsigned long h = 5381;
    size_t i;
    for (i = 0; i < n; i++) h = h * 33u + p[i];
    return h;
}

/* mode: 0 = whole, 1 = one byte at a time, k >= 2 = split into two at k-2. */
static int run_scenario(const unsigned char *in, size_t len, size_t mode, const wsch_conn_desc *tweak, outcome *o) {
    fake f;
    unsigned char *copy = (unsigned char *)malloc(len ? len : 1);
    size_t i;
    fake_init(&f, WSCH_ROLE_SERVER);
    if (tweak) {
        f.desc.limits.max_frame_size = tweak->limits.max_frame_size;
        f.desc.limits.max_message_size = tweak->limits.max_message_size;
    }
    if (!open_server(&f)) {
        free(copy);
        fake_free(&f);
        return 0;
    }
    memcpy(copy, in, len);
    if (mode == 0) {
        (void)wsch_conn_feed(f.c, copy, len);
    } else if (mode == 1) {
        for (i = 0; i < len && f.closes == 0; i++) (void)wsch_conn_feed(f.c, copy + i, 1);
    } else {
        size_t k = mode - 2;
        (void)wsch_conn_feed(f.c, copy, k);
        if (f.closes == 0) (void)wsch_conn_feed(f.c, copy + k, len - k);
    }
    memset(o, 0, sizeof *o);
    o->nmsgs = f.nmsgs;
    for (i = 0; i < f.nmsgs; i++) {
        o->opcodes[i] = f.msgs[i].opcode;
        o->lens[i] = f.msgs[i].len;
        o->sums[i] = checksum(f.msgs[i].data, f.msgs[i].len);
    }
    o->out_len = f.out_len < sizeof o->out ? f.out_len : sizeof o->out;
    memcpy(o->out, f.out, o->out_len);
    o->closes = f.closes;
    o->close_code = f.close_code;
    o->transport_closed = f.transport_closed;
    o->closes_at_close = f.closes_at_close;
    o->after_close = f.after_close;
    o->pongs = f.pongs;
    free(copy);
    fake_free(&f);
    return 1;
}

static int same_outcome(const outcome *a, const outcome *b) {
    return a->nmsgs == b->nmsgs && memcmp(a->opcodes, b->opcodes, sizeof a->opcodes) == 0 &&
           memcmp(a->lens, b->lens, sizeof a->lens) == 0 && memcmp(a->sums, b->sums, sizeof a->sums) == 0 &&
           a->out_len == b->out_len && memcmp(a->out, b->out, a->out_len) == 0 && a->closes == b->closes &&
           a->close_code == b->close_code && a->transport_closed == b->transport_closed && a->pongs == b->pongs &&
           a->closes_at_close == b->closes_at_close && a->after_close == b->after_close;
}

/* Runs the input whole, then at every split and byte by byte; all must agree. */
static int scenario(const unsigned char *in, size_t len, const wsch_conn_desc *tweak, outcome *o) {
    outcome other;
    size_t k;
    if (!run_scenario(in, len, 0, tweak, o)) return 0;
    if (!run_scenario(in, len, 1, tweak, &other) || !same_outcome(o, &other)) return 0;
    for (k = 0; k <= len && len <= 4096; k++)
        if (!run_scenario(in, len, k + 2, tweak, &other) || !same_outcome(o, &other)) return 0;
    return 1;
}

/* The server's close frame code in the output, or -1. */
static int out_close_code(const outcome *o) {
    out_frame fr[16];
    size_t n = parse_out(o->out, o->out_len, fr, 16, 0), i;
    if (n == (size_t)-1) return -2;
    for (i = 0; i < n; i++)
        if (fr[i].opcode == WSCH_OP_CLOSE) return fr[i].len >= 2 ? (fr[i].payload[0] << 8 | fr[i].payload[1]) : 1005;
    return -1;
}

/* Expect the end of the connection: on_close once, then close() once, and
   nothing after it (f may be a fake or an outcome). */
#define ASSERT_CLOSED_ONCE_LAST(f)                           \
    do {                                                     \
        ASSERT_EQ(1, (f)->closes);                           \
        ASSERT_EQ(1, (f)->transport_closed);                 \
        ASSERT_EQ(1, (f)->closes_at_close);                  \
        ASSERT_EQ(0, (f)->after_close);                      \
    } while (0)

/* Expect the connection failed with code: close frame sent, TCP closed. */
#define ASSERT_FAILED_WITH(o, code)                          \
    do {                                                     \
        ASSERT_EQ_FMT((code), out_close_code(o), "%d");      \
        ASSERT_EQ_FMT((code), (o)->close_code, "%d");        \
        ASSERT_CLOSED_ONCE_LAST(o);                          \
    } while (0)

/* ---- category 1: framing ------------------------------------------------- */

TEST framing_text_and_binary_lengths(void) {
    static const size_t lens[] = {0, 1, 125, 126, 127, 128, 65535, 65536};
    size_t i;
    for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i], flen, j;
        unsigned char *payload = (unsigned char *)malloc(n + 1), *in = (unsigned char *)malloc(2 * n + 32);
        outcome o;
        for (j = 0; j < n; j++) payload[j] = (unsigned char)('a' + j % 26);
        flen = wire_frame(in, 0x81, payload, n, 1);
        flen += wire_frame(in + flen, 0x82, payload, n, 1);
        ASSERT(n > 200 ? run_scenario(in, flen, 0, NULL, &o) : scenario(in, flen, NULL, &o));
        if (n > 200) { /* long inputs: whole, byte by byte and a few splits */
            outcome other;
            ASSERT(run_scenario(in, flen, 1, NULL, &other) && same_outcome(&o, &other));
            ASSERT(run_scenario(in, flen, 2 + flen / 3, NULL, &other) && same_outcome(&o, &other));
        }
        ASSERT_EQ(2u, o.nmsgs);
        ASSERT_EQ(WSCH_OP_TEXT, o.opcodes[0]);
        ASSERT_EQ(WSCH_OP_BINARY, o.opcodes[1]);
        ASSERT_EQ(n, o.lens[0]);
        ASSERT_EQ(checksum(payload, n), o.sums[0]);
        ASSERT_EQ(checksum(payload, n), o.sums[1]);
        ASSERT_EQ(0, o.closes);
        free(payload);
        free(in);
    }
    PASS();
}

/* The common case is delivered straight from the caller's buffer. */
TEST whole_frame_is_delivered_in_place(void) {
    fake f;
    unsigned char in[64];
    size_t n;
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    n = wire_frame(in, 0x82, "abcdef", 6, 1);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
    ASSERT_EQ(1u, f.nmsgs);
    ASSERT_MEM_EQ("abcdef", in + n - 6, 6); /* unmasked in place */
    fake_free(&f);
    PASS();
}

/* ---- category 2: pings and pongs ----------------------------------------- */

TEST ping_answered_with_same_payload(void) {
    unsigned char payload[125], in[256];
    size_t len;
    for (len = 0; len <= 125; len += 25) {
        outcome o;
        out_frame fr[4];
        size_t i, n;
        for (i = 0; i < len; i++) payload[i] = (unsigned char)(0xFE - i);
        n = wire_frame(in, 0x89, payload, len, 1);
        ASSERT(scenario(in, n, NULL, &o));
        ASSERT_EQ(1u, parse_out(o.out, o.out_len, fr, 4, 0));
        ASSERT_EQ(WSCH_OP_PONG, fr[0].opcode);
        ASSERT_EQ(len, fr[0].len);
        ASSERT_MEM_EQ(payload, fr[0].payload, len);
        ASSERT_EQ(0, o.closes);
    }
    PASS();
}

TEST ping_too_long_or_fragmented_fails(void) {
    unsigned char payload[126] = {0}, in[256];
    outcome o;
    size_t n = wire_frame(in, 0x89, payload, 126, 1);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_FAILED_WITH(&o, 1002);
    n = wire_frame(in, 0x09, "x", 1, 1); /* fin clear */
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_FAILED_WITH(&o, 1002);
    PASS();
}

TEST unsolicited_pong_is_ignored(void) {
    unsigned char in[64];
    outcome o;
    size_t n = wire_frame(in, 0x8A, "hi", 2, 1);
    n += wire_frame(in + n, 0x81, "ok", 2, 1);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_EQ(1, o.pongs);
    ASSERT_EQ(0u, o.out_len);
    ASSERT_EQ(1u, o.nmsgs);
    ASSERT_EQ(0, o.closes);
    PASS();
}

TEST ten_pings_ten_pongs(void) {
    unsigned char in[512];
    outcome o;
    out_frame fr[16];
    size_t n = 0, i;
    for (i = 0; i < 10; i++) n += wire_frame(in + n, 0x89, "ping", 4, 1);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_EQ(10u, parse_out(o.out, o.out_len, fr, 16, 0));
    for (i = 0; i < 10; i++) ASSERT_EQ(WSCH_OP_PONG, fr[i].opcode);
    PASS();
}

static void echo_message(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
    (void)user;
    (void)wsch_conn_send(c, op, data, len);
}

/* Everything the callbacks of one feed send leaves in one send() call. */
TEST replies_from_one_feed_leave_together(void) {
    fake f;
    unsigned char in[512];
    out_frame fr[16];
    size_t n = 0, i;
    fake_init(&f, WSCH_ROLE_SERVER);
    f.desc.on_message = echo_message;
    ASSERT(open_server(&f));
    for (i = 0; i < 5; i++) {
        n += wire_frame(in + n, 0x81, "echo", 4, 1);
        n += wire_frame(in + n, 0x89, "p", 1, 1);
    }
    f.send_calls = 0;
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
    ASSERT_EQ(1, f.send_calls);
    ASSERT_EQ(10u, parse_out(f.out, f.out_len, fr, 16, 0));
    for (i = 0; i < 10; i++) ASSERT_EQ(i % 2 ? WSCH_OP_PONG : WSCH_OP_TEXT, fr[i].opcode);
    /* a reply that does not fit the gathering buffer keeps its place in line */
    {
        static unsigned char big[40000];
        f.out_len = 0;
        n = wire_frame(in, 0x89, "a", 1, 1);
        ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
        f.out_len = 0;
        f.desc.on_message = NULL;
        ASSERT_EQ(WSCH_OK, wsch_conn_send(f.c, WSCH_OP_BINARY, big, sizeof big));
        ASSERT_EQ(1u, parse_out(f.out, f.out_len, fr, 16, 0));
        ASSERT_EQ(sizeof big, fr[0].len);
    }
    fake_free(&f);
    PASS();
}

/* ---- category 3 and 4: reserved bits and opcodes ------------------------- */

TEST reserved_bits_fail(void) {
    unsigned rsv;
    for (rsv = 1; rsv < 8; rsv++) {
        unsigned char in[64];
        outcome o;
        size_t n = wire_frame(in, 0x81, "ok", 2, 1);
        n += wire_frame(in + n, 0x80u | (rsv << 4) | 0x1u, "bad", 3, 1);
        n += wire_frame(in + n, 0x89, "", 0, 1); /* must not be answered */
        ASSERT(scenario(in, n, NULL, &o));
        ASSERT_EQ(1u, o.nmsgs);
        ASSERT_FAILED_WITH(&o, 1002);
        ASSERT_EQ(1002, out_close_code(&o)); /* and no pong after it */
    }
    PASS();
}

TEST reserved_opcodes_fail(void) {
    static const unsigned ops[] = {3, 4, 5, 6, 7, 11, 12, 13, 14, 15};
    size_t i;
    for (i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        unsigned char in[64];
        outcome o;
        size_t n = wire_frame(in, 0x80u | ops[i], "x", 1, 1);
        ASSERT(scenario(in, n, NULL, &o));
        ASSERT_EQ(0u, o.nmsgs);
        ASSERT_FAILED_WITH(&o, 1002);
    }
    PASS();
}

/* ---- category 5: fragmentation ------------------------------------------- */

TEST fragmented_with_pings_between(void) {
    unsigned char in[256];
    outcome o;
    out_frame fr[8];
    size_t n = 0;
    n += wire_frame(in + n, 0x01, "frag", 4, 1);
    n += wire_frame(in + n, 0x89, "p1", 2, 1);
    n += wire_frame(in + n, 0x00, "ment", 4, 1);
    n += wire_frame(in + n, 0x89, "p2", 2, 1);
    n += wire_frame(in + n, 0x80, "ed", 2, 1);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_EQ(1u, o.nmsgs);
    ASSERT_EQ(WSCH_OP_TEXT, o.opcodes[0]);
    ASSERT_EQ(10u, o.lens[0]);
    ASSERT_EQ(checksum((const unsigned char *)"fragmented", 10), o.sums[0]);
    ASSERT_EQ(2u, parse_out(o.out, o.out_len, fr, 8, 0));
    ASSERT_MEM_EQ("p1", fr[0].payload, 2);
    ASSERT_MEM_EQ("p2", fr[1].payload, 2);
    PASS();
}

TEST fragmentation_errors(void) {
    unsigned char in[128];
    outcome o;
    size_t n;
    /* continuation with nothing to continue */
    n = wire_frame(in, 0x80, "x", 1, 1);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_FAILED_WITH(&o, 1002);
    n = wire_frame(in, 0x00, "x", 1, 1);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_FAILED_WITH(&o, 1002);
    /* a new data frame inside a fragmented message */
    n = wire_frame(in, 0x01, "a", 1, 1);
    n += wire_frame(in + n, 0x81, "b", 1, 1);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_EQ(0u, o.nmsgs);
    ASSERT_FAILED_WITH(&o, 1002);
    n = wire_frame(in, 0x02, "a", 1, 1);
    n += wire_frame(in + n, 0x02, "b", 1, 1);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_FAILED_WITH(&o, 1002);
    PASS();
}

TEST empty_fragments_make_an_empty_message(void) {
    unsigned char in[64];
    outcome o;
    size_t n = wire_frame(in, 0x01, "", 0, 1);
    n += wire_frame(in + n, 0x00, "", 0, 1);
    n += wire_frame(in + n, 0x80, "", 0, 1);
    n += wire_frame(in + n, 0x82, "", 0, 1);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_EQ(2u, o.nmsgs);
    ASSERT_EQ(WSCH_OP_TEXT, o.opcodes[0]);
    ASSERT_EQ(0u, o.lens[0]);
    ASSERT_EQ(WSCH_OP_BINARY, o.opcodes[1]);
    ASSERT_EQ(0, o.closes);
    PASS();
}

TEST many_one_byte_fragments(void) {
    unsigned char *in = (unsigned char *)malloc(1000 * 8);
    outcome o;
    size_t n = 0, i;
    for (i = 0; i < 1000; i++) n += wire_frame(in + n, (i == 0 ? 0x02u : 0x00u) | (i == 999 ? 0x80u : 0u), "z", 1, 1);
    ASSERT(run_scenario(in, n, 0, NULL, &o));
    ASSERT_EQ(1u, o.nmsgs);
    ASSERT_EQ(1000u, o.lens[0]);
    {
        outcome other;
        ASSERT(run_scenario(in, n, 1, NULL, &other) && same_outcome(&o, &other));
    }
    free(in);
    PASS();
}

/* ---- category 6: UTF-8 --------------------------------------------------- */

TEST utf8_valid_text_in_any_fragmentation(void) {
    /* "κόσμε" plus a 4-byte code point, fragmented inside code points. */
    static const char text[] = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf0\x9f\x98\x80";
    size_t len = sizeof text - 1, cut;
    for (cut = 1; cut < len; cut++) {
        unsigned char in[64];
        outcome o;
        size_t n = wire_frame(in, 0x01, text, cut, 1);
        n += wire_frame(in + n, 0x80, text + cut, len - cut, 1);
        ASSERT(scenario(in, n, NULL, &o));
        ASSERT_EQ(1u, o.nmsgs);
        ASSERT_EQ(len, o.lens[0]);
        ASSERT_EQ(0, o.closes);
    }
    PASS();
}

TEST utf8_invalid_text_fails_with_1007(void) {
    static const char *bad[] = {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80", "ok\xff", "\xce"};
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char in[64];
        outcome o;
        size_t n = wire_frame(in, 0x81, bad[i], strlen(bad[i]), 1);
        ASSERT(scenario(in, n, NULL, &o));
        ASSERT_EQ(0u, o.nmsgs);
        ASSERT_FAILED_WITH(&o, 1007);
    }
    PASS();
}

/* A bad byte in the first fragment fails the connection before the message ends. */
TEST utf8_fails_fast(void) {
    fake f;
    unsigned char in[64];
    size_t n;
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    n = wire_frame(in, 0x01, "ab\xf5z", 4, 1);
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_conn_feed(f.c, in, n));
    ASSERT_EQ(1, f.closes);
    ASSERT_EQ(1007, f.close_code);
    fake_free(&f);
    /* even inside one frame whose payload has not all arrived */
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    n = wire_frame(in, 0x81, "abc\xc0\xafxyzxyz", 10, 1);
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_conn_feed(f.c, in, n - 4));
    ASSERT_EQ(1007, f.close_code);
    fake_free(&f);
    PASS();
}

/* ---- category 7: close handling ------------------------------------------ */

TEST close_echoes_code_and_server_closes_tcp(void) {
    static const unsigned codes[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999};
    size_t i;
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        unsigned char payload[8], in[64];
        outcome o;
        size_t n;
        payload[0] = (unsigned char)(codes[i] >> 8);
        payload[1] = (unsigned char)codes[i];
        memcpy(payload + 2, "bye", 3);
        n = wire_frame(in, 0x88, payload, 5, 1);
        n += wire_frame(in + n, 0x81, "after", 5, 1); /* ignored: the peer closed */
        ASSERT(scenario(in, n, NULL, &o));
        ASSERT_EQ(0u, o.nmsgs);
        ASSERT_EQ((int)codes[i], out_close_code(&o));
        ASSERT_EQ((int)codes[i], o.close_code);
        ASSERT_CLOSED_ONCE_LAST(&o);
    }
    PASS();
}

TEST close_without_code(void) {
    unsigned char in[16];
    outcome o;
    size_t n = wire_frame(in, 0x88, "", 0, 1);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_EQ(1005, out_close_code(&o)); /* our echo is an empty close frame */
    ASSERT_EQ(1005, o.close_code);
    ASSERT_CLOSED_ONCE_LAST(&o);
    PASS();
}

TEST close_payload_errors(void) {
    static const unsigned invalid[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
    unsigned char payload[8], in[64];
    outcome o;
    size_t n, i;
    n = wire_frame(in, 0x88, "\x03", 1, 1); /* one byte */
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_FAILED_WITH(&o, 1002);
    for (i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        payload[0] = (unsigned char)(invalid[i] >> 8);
        payload[1] = (unsigned char)invalid[i];
        n = wire_frame(in, 0x88, payload, 2, 1);
        ASSERT(scenario(in, n, NULL, &o));
        ASSERT_FAILED_WITH(&o, 1002);
    }
    memcpy(payload, "\x03\xe8\xce\xba\xff", 5); /* 1000 with a bad reason */
    n = wire_frame(in, 0x88, payload, 5, 1);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_FAILED_WITH(&o, 1007);
    PASS();
}

TEST server_initiated_close_handshake(void) {
    fake f;
    unsigned char in[16];
    out_frame fr[2];
    size_t n;
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    ASSERT_EQ(WSCH_OK, wsch_conn_close(f.c, 1000, "done", 4));
    ASSERT_EQ(WSCH_STATE_CLOSING, wsch_conn_state(f.c));
    ASSERT(f.timers_armed & (1u << WSCH_TIMER_CLOSE));
    ASSERT_EQ(WSCH_ERR_CLOSED, wsch_conn_send(f.c, WSCH_OP_TEXT, "x", 1));
    ASSERT_EQ(1u, parse_out(f.out, f.out_len, fr, 2, 0));
    ASSERT_EQ(WSCH_OP_CLOSE, fr[0].opcode);
    ASSERT_MEM_EQ("\x03\xe8" "done", fr[0].payload, 6);
    ASSERT_EQ(0, f.transport_closed);
    n = wire_frame(in, 0x88, "\x03\xe8", 2, 1);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
    ASSERT_CLOSED_ONCE_LAST(&f); /* the server closes TCP first */
    ASSERT_EQ(1000, f.close_code);
    ASSERT_EQ(0u, f.timers_armed);
    ASSERT_EQ(WSCH_STATE_CLOSED, wsch_conn_state(f.c));
    fake_free(&f);
    PASS();
}

TEST close_timeout_closes_transport(void) {
    fake f;
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    ASSERT_EQ(WSCH_OK, wsch_conn_close(f.c, 1001, NULL, 0));
    ASSERT_EQ(WSCH_DEFAULT_CLOSE_TIMEOUT_MS, f.timer_delay[WSCH_TIMER_CLOSE]);
    wsch_conn_timer_fired(f.c, WSCH_TIMER_CLOSE);
    ASSERT_CLOSED_ONCE_LAST(&f);
    ASSERT_EQ(1006, f.close_code); /* the peer never answered */
    fake_free(&f);
    PASS();
}

/* ---- category 9: limits -------------------------------------------------- */

TEST big_messages_whole_and_fragmented(void) {
    size_t size = 4u << 20, frag = 65536, n = 0, off;
    unsigned char *payload = (unsigned char *)malloc(size), *in = (unsigned char *)malloc(size * 2 + 4096);
    outcome o;
    for (off = 0; off < size; off++) payload[off] = (unsigned char)(off * 7);
    n = wire_frame(in, 0x82, payload, size, 1);
    for (off = 0; off < size; off += frag)
        n += wire_frame(in + n, (off == 0 ? 0x02u : 0x00u) | (off + frag >= size ? 0x80u : 0u), payload + off, frag, 1);
    ASSERT(run_scenario(in, n, 0, NULL, &o));
    ASSERT_EQ(2u, o.nmsgs);
    ASSERT_EQ(size, o.lens[0]);
    ASSERT_EQ(checksum(payload, size), o.sums[0]);
    ASSERT_EQ(checksum(payload, size), o.sums[1]);
    ASSERT(run_scenario(in, n, 2 + n / 2 + 3, NULL, &o));
    ASSERT_EQ(2u, o.nmsgs);
    ASSERT_EQ(checksum(payload, size), o.sums[1]);
    free(payload);
    free(in);
    PASS();
}

TEST size_limits_fail_with_1009(void) {
    wsch_conn_desc limits;
    unsigned char payload[300] = {0}, in[1024];
    outcome o;
    size_t n;
    memset(&limits, 0, sizeof limits);
    limits.limits.max_frame_size = 200;
    limits.limits.max_message_size = 250;
    n = wire_frame(in, 0x82, payload, 200, 1); /* at the limit: fine */
    ASSERT(run_scenario(in, n, 0, &limits, &o));
    ASSERT_EQ(1u, o.nmsgs);
    n = wire_frame(in, 0x82, payload, 201, 1);
    ASSERT(scenario(in, n, &limits, &o));
    ASSERT_FAILED_WITH(&o, 1009);
    n = wire_frame(in, 0x02, payload, 200, 1);
    n += wire_frame(in + n, 0x80, payload, 51, 1); /* 251 in all */
    ASSERT(scenario(in, n, &limits, &o));
    ASSERT_FAILED_WITH(&o, 1009);
    /* a 2^63-1 length is refused from its header alone */
    memcpy(in, "\x82\xff\x7f\xff\xff\xff\xff\xff\xff\xff\x01\x02\x03\x04", 14);
    ASSERT(scenario(in, 14, NULL, &o));
    ASSERT_FAILED_WITH(&o, 1009);
    memcpy(in, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04", 14);
    ASSERT(scenario(in, 14, NULL, &o));
    ASSERT_FAILED_WITH(&o, 1002);
    PASS();
}

/* ---- category 10: auto-fragmentation: any fragment size gives one message - */

TEST any_fragment_size_reassembles(void) {
    static const size_t sizes[] = {1, 2, 3, 7, 64, 100, 1000, 4095};
    unsigned char payload[4096], *in = (unsigned char *)malloc(4096 * 16);
    size_t s, i;
    for (i = 0; i < sizeof payload; i++) payload[i] = (unsigned char)('A' + i % 50);
    for (s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        outcome o;
        size_t n = 0, off;
        for (off = 0; off < sizeof payload; off += sizes[s]) {
            size_t len = sizeof payload - off < sizes[s] ? sizeof payload - off : sizes[s];
            n += wire_frame(in + n, (off == 0 ? 0x01u : 0x00u) | (off + len == sizeof payload ? 0x80u : 0u), payload + off, len, 1);
        }
        ASSERT(run_scenario(in, n, 0, NULL, &o));
        ASSERT_EQ(1u, o.nmsgs);
        ASSERT_EQ(sizeof payload, o.lens[0]);
        ASSERT_EQ(checksum(payload, sizeof payload), o.sums[0]);
    }
    free(in);
    PASS();
}

/* ---- roles and masking --------------------------------------------------- */

TEST server_rejects_unmasked_frames(void) {
    unsigned char in[16];
    outcome o;
    size_t n = wire_frame(in, 0x81, "hi", 2, 0);
    ASSERT(scenario(in, n, NULL, &o));
    ASSERT_FAILED_WITH(&o, 1002);
    PASS();
}

/* The server's 101 for the request the client wrote into f->out, with the
   given Upgrade/Connection lines. Returns its length, 0 if no key was sent. */
static size_t answer_101(fake *f, const char *upgrade_lines, char *resp, size_t cap) {
    char key[WSCH_KEY_LEN + 1], accept[WSCH_ACCEPT_LEN + 1];
    const char *k;
    f->out[f->out_len - 1] = '\0';
    k = strstr((const char *)f->out, "Sec-WebSocket-Key: ");
    if (!k) return 0;
    memcpy(key, k + 19, WSCH_KEY_LEN);
    key[WSCH_KEY_LEN] = '\0';
    wsch_accept_key(key, WSCH_KEY_LEN, accept);
    f->out_len = 0;
    return (size_t)snprintf(resp, cap, "HTTP/1.1 101 Switching Protocols\r\n%sSec-WebSocket-Accept: %s\r\n\r\n",
                            upgrade_lines, accept);
}

/* A client: request out, 101 in with a frame in the same read, masked frames out. */
TEST client_role_end_to_end(void) {
    fake f;
    char resp[512];
    unsigned char *buf;
    out_frame fr[4];
    size_t n;
    fake_init(&f, WSCH_ROLE_CLIENT);
    f.desc.request.port = 9001;
    f.desc.request.path = "/echo";
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    ASSERT(f.out_len > 0);
    ASSERT_MEM_EQ("GET /echo HTTP/1.1\r\n", f.out, 20);
    ASSERT_EQ(WSCH_ERR_STATE, wsch_conn_send(f.c, WSCH_OP_TEXT, "x", 1));
    n = answer_101(&f, "Upgrade: websocket\r\nConnection: Upgrade\r\n", resp, sizeof resp);
    ASSERT(n > 0);
    n += wire_frame((unsigned char *)resp + n, 0x81, "welcome", 7, 0);
    buf = (unsigned char *)resp;
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, buf, n));
    ASSERT_EQ(1, f.opened);
    ASSERT_EQ(1u, f.nmsgs);
    ASSERT_MEM_EQ("welcome", f.msgs[0].data, 7);
    ASSERT_EQ(WSCH_OK, wsch_conn_send(f.c, WSCH_OP_TEXT, "hello", 5));
    ASSERT_EQ(1u, parse_out(f.out, f.out_len, fr, 4, 1));
    ASSERT_MEM_EQ("hello", fr[0].payload, 5);
    /* a masked frame from the server is a protocol error */
    n = wire_frame((unsigned char *)resp, 0x81, "m", 1, 1);
    ASSERT_EQ(WSCH_ERR_PROTOCOL, wsch_conn_feed(f.c, resp, n));
    ASSERT_EQ(1002, f.close_code);
    ASSERT_CLOSED_ONCE_LAST(&f);
    fake_free(&f);
    PASS();
}

TEST client_rejects_bad_accept(void) {
    fake f;
    char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    fake_init(&f, WSCH_ROLE_CLIENT);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    ASSERT_EQ(WSCH_ERR_ACCEPT, wsch_conn_feed(f.c, resp, sizeof resp - 1));
    ASSERT_EQ(WSCH_ERR_ACCEPT, wsch_conn_error(f.c));
    ASSERT_EQ(101, wsch_conn_http_status(f.c));
    ASSERT_EQ(0, f.opened);
    ASSERT_CLOSED_ONCE_LAST(&f);
    fake_free(&f);
    PASS();
}

/* The client waits for the server to close TCP after the close handshake. */
TEST client_waits_for_server_tcp_close(void) {
    fake f;
    char resp[512];
    unsigned char in[16];
    size_t n;
    fake_init(&f, WSCH_ROLE_CLIENT);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    n = answer_101(&f, "Upgrade: WebSocket\r\nConnection: keep-alive, upgrade\r\n", resp, sizeof resp);
    ASSERT(n > 0);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, resp, n));
    ASSERT_EQ(1, f.opened);
    n = wire_frame(in, 0x88, "\x03\xe9", 2, 0);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
    ASSERT_EQ(0, f.transport_closed);
    ASSERT_EQ(0, f.closes);
    wsch_conn_transport_closed(f.c);
    ASSERT_EQ(1001, f.close_code);
    /* its report ends the connection like every other path: on_close, then
       close() (the caller closes its socket there, not before) */
    ASSERT_CLOSED_ONCE_LAST(&f);
    fake_free(&f);
    PASS();
}

/* ---- handshake on the server --------------------------------------------- */

TEST frames_after_handshake_in_same_read(void) {
    fake f;
    char buf[512];
    size_t n = sizeof upgrade_request - 1;
    fake_init(&f, WSCH_ROLE_SERVER);
    memcpy(buf, upgrade_request, n);
    n += wire_frame((unsigned char *)buf + n, 0x81, "early", 5, 1);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, buf, n));
    ASSERT_EQ(1, f.opened);
    ASSERT_EQ(1u, f.nmsgs);
    ASSERT_MEM_EQ("early", f.msgs[0].data, 5);
    ASSERT_EQ(0u, f.timers_armed & (1u << WSCH_TIMER_HANDSHAKE));
    fake_free(&f);
    PASS();
}

TEST bad_version_gets_426(void) {
    fake f;
    char req[] = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    ASSERT_EQ(WSCH_ERR_WS_VERSION, wsch_conn_feed(f.c, req, sizeof req - 1));
    ASSERT_MEM_EQ("HTTP/1.1 426", f.out, 12);
    f.out[f.out_len - 1] = '\0';
    ASSERT(strstr((const char *)f.out, "Sec-WebSocket-Version: 13") != NULL);
    ASSERT_CLOSED_ONCE_LAST(&f);
    ASSERT_EQ(0, f.opened);
    fake_free(&f);
    PASS();
}

TEST handshake_timeout_and_header_limit(void) {
    fake f;
    char flood[9000];
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    ASSERT(f.timers_armed & (1u << WSCH_TIMER_HANDSHAKE));
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, flood, 0));
    memcpy(flood, "GET / HTTP/1.1\r\n", 16);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, flood, 16));
    wsch_conn_timer_fired(f.c, WSCH_TIMER_HANDSHAKE);
    ASSERT_CLOSED_ONCE_LAST(&f);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, f.close_code);
    ASSERT_EQ(WSCH_ERR_TIMEOUT, f.close_error);
    fake_free(&f);

    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    memcpy(flood, "GET / HTTP/1.1\r\n", 16);
    memset(flood + 16, 'a', sizeof flood - 16);
    ASSERT_EQ(WSCH_ERR_HEADER_TOO_LARGE, wsch_conn_feed(f.c, flood, sizeof flood));
    ASSERT_MEM_EQ("HTTP/1.1 431", f.out, 12);
    ASSERT_CLOSED_ONCE_LAST(&f);
    fake_free(&f);
    PASS();
}

static void refuse_hook(wsch_conn *c, const wsch_request *req, wsch_handshake_reply *reply, void *user) {
    (void)c; (void)user;
    if (req->query.len == 0) reply->status = 401;
    else reply->close_code = 4001, reply->close_reason = "Unauthorized";
}

TEST on_request_can_refuse_or_close(void) {
    fake f;
    char req[sizeof upgrade_request + 16];
    out_frame fr[2];
    fake_init(&f, WSCH_ROLE_SERVER);
    f.desc.on_request = refuse_hook;
    memcpy(req, upgrade_request, sizeof upgrade_request);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    ASSERT_EQ(WSCH_ERR_DENIED, wsch_conn_feed(f.c, req, sizeof upgrade_request - 1));
    ASSERT_MEM_EQ("HTTP/1.1 401", f.out, 12);
    ASSERT_EQ(401, wsch_conn_http_status(f.c));
    ASSERT_EQ(0, f.opened);
    fake_free(&f);

    fake_init(&f, WSCH_ROLE_SERVER);
    f.desc.on_request = refuse_hook;
    memcpy(req, "GET /chat?t=1", 13);
    memcpy(req + 13, upgrade_request + 9, sizeof upgrade_request - 9);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, req, strlen(req)));
    ASSERT_EQ(1, f.opened);
    {
        char *end = strstr((char *)f.out, "\r\n\r\n");
        size_t head;
        ASSERT(end != NULL);
        head = (size_t)(end + 4 - (char *)f.out);
        ASSERT_EQ(1u, parse_out(f.out + head, f.out_len - head, fr, 2, 0));
    }
    ASSERT_EQ(WSCH_OP_CLOSE, fr[0].opcode);
    ASSERT_MEM_EQ("\x0f\xa1Unauthorized", fr[0].payload, 14);
    fake_free(&f);
    PASS();
}

static void close_in_hook(wsch_conn *c, const wsch_request *req, wsch_handshake_reply *reply, void *user) {
    (void)req; (void)reply; (void)user;
    (void)wsch_conn_close(c, 0, NULL, 0);
}

/* A hook that closes the connection ends it: no 101, no on_open. */
TEST close_inside_on_request_stays_closed(void) {
    fake f;
    char req[sizeof upgrade_request];
    fake_init(&f, WSCH_ROLE_SERVER);
    f.desc.on_request = close_in_hook;
    memcpy(req, upgrade_request, sizeof req);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    (void)wsch_conn_feed(f.c, req, sizeof req - 1);
    ASSERT_EQ(0u, f.out_len);
    ASSERT_EQ(0, f.opened);
    ASSERT_CLOSED_ONCE_LAST(&f);
    ASSERT_EQ(WSCH_STATE_CLOSED, wsch_conn_state(f.c));
    fake_free(&f);
    PASS();
}

/* ---- output: partial sends, queue, limits, shared frames ----------------- */

/* A peer that pings and never reads: while output waits, one queued pong
   answers the latest ping (RFC 6455 5.5.3), so the queue holds the first
   answer and one more, whatever the number of pings. Once that pong has
   begun to leave it is no longer rewritten: the next ping gets its own. */
TEST ping_flood_to_a_non_reader_is_bounded(void) {
    fake f;
    unsigned char in[64];
    char ping[16];
    out_frame fr[8];
    size_t n, i;
    fake_init(&f, WSCH_ROLE_SERVER);
    f.desc.limits.max_outbound_bytes = 4096;
    ASSERT(open_server(&f));
    f.send_budget = 0;
    for (i = 0; i < 5000; i++) {
        snprintf(ping, sizeof ping, "ping%05u", (unsigned)i);
        n = wire_frame(in, 0x89, ping, 9, 1);
        ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
    }
    ASSERT(wsch_conn_queued_bytes(f.c) <= 2 * (2 + 125 + 4 * sizeof(void *)));
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_conn_state(f.c));
    /* the rewritable pong starts to leave; a newer ping queues its own */
    f.send_budget = 11 + 3;
    ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));
    n = wire_frame(in, 0x89, "last", 4, 1);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
    f.send_budget = (size_t)-1;
    ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));
    ASSERT_EQ(0u, wsch_conn_queued_bytes(f.c));
    ASSERT_EQ(3u, parse_out(f.out, f.out_len, fr, 8, 0));
    ASSERT_EQ(WSCH_OP_PONG, fr[0].opcode);
    ASSERT_MEM_EQ("ping00000", fr[0].payload, 9);
    ASSERT_EQ(WSCH_OP_PONG, fr[1].opcode);
    ASSERT_MEM_EQ("ping04999", fr[1].payload, 9);
    ASSERT_EQ(4u, fr[2].len);
    ASSERT_MEM_EQ("last", fr[2].payload, 4);
    fake_free(&f);
    PASS();
}

/* RFC 6455 5.4 on the sending side. */
TEST send_frame_keeps_fragments_in_order(void) {
    fake f;
    wsch_shared *s;
    out_frame fr[8];
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    ASSERT_EQ(WSCH_ERR_STATE, wsch_conn_send_frame(f.c, WSCH_OP_CONTINUATION, 1, "x", 1));
    ASSERT_EQ(WSCH_OK, wsch_conn_send_frame(f.c, WSCH_OP_TEXT, 0, "ab", 2));
    ASSERT_EQ(WSCH_ERR_STATE, wsch_conn_send_frame(f.c, WSCH_OP_BINARY, 1, "x", 1));
    ASSERT_EQ(WSCH_ERR_STATE, wsch_conn_send(f.c, WSCH_OP_TEXT, "x", 1));
    ASSERT_EQ(WSCH_OK, wsch_shared_create(NULL, WSCH_OP_TEXT, "s", 1, &s));
    ASSERT_EQ(WSCH_ERR_STATE, wsch_conn_send_shared(f.c, s));
    ASSERT_EQ(WSCH_OK, wsch_conn_ping(f.c, "p", 1)); /* control frames may interleave */
    ASSERT_EQ(WSCH_OK, wsch_conn_send_frame(f.c, WSCH_OP_CONTINUATION, 1, "cd", 2));
    ASSERT_EQ(WSCH_OK, wsch_conn_send_shared(f.c, s));
    wsch_shared_release(s);
    ASSERT_EQ(4u, parse_out(f.out, f.out_len, fr, 8, 0));
    ASSERT_EQ(WSCH_OP_TEXT, fr[0].opcode);
    ASSERT_EQ(0, fr[0].fin);
    ASSERT_EQ(WSCH_OP_PING, fr[1].opcode);
    ASSERT_EQ(WSCH_OP_CONTINUATION, fr[2].opcode);
    ASSERT_EQ(1, fr[2].fin);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_shared_create(NULL, WSCH_OP_PING, "s", 1, &s));
    fake_free(&f);
    PASS();
}

TEST partial_sends_are_queued_in_order(void) {
    fake f;
    unsigned char big[10000];
    out_frame fr[8];
    size_t i;
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    for (i = 0; i < sizeof big; i++) big[i] = (unsigned char)i;
    f.send_budget = 7;
    ASSERT_EQ(WSCH_OK, wsch_conn_send(f.c, WSCH_OP_BINARY, big, sizeof big));
    ASSERT_EQ(WSCH_OK, wsch_conn_send(f.c, WSCH_OP_TEXT, "second", 6));
    ASSERT_EQ(WSCH_OK, wsch_conn_ping(f.c, "p", 1));
    ASSERT(wsch_conn_queued_bytes(f.c) > 0);
    f.send_budget = 100;
    ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));
    f.send_budget = (size_t)-1;
    ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));
    ASSERT_EQ(0u, wsch_conn_queued_bytes(f.c));
    ASSERT_EQ(3u, parse_out(f.out, f.out_len, fr, 8, 0));
    ASSERT_EQ(sizeof big, fr[0].len);
    ASSERT_MEM_EQ(big, fr[0].payload, sizeof big);
    ASSERT_MEM_EQ("second", fr[1].payload, 6);
    ASSERT_EQ(WSCH_OP_PING, fr[2].opcode);
    fake_free(&f);
    PASS();
}

/* The limit counts memory: each queued piece's bookkeeping (documented as
   4 x sizeof(void *)) with its bytes. */
TEST outbound_limit_refuses_without_sending(void) {
    fake f;
    unsigned char data[600] = {0};
    const size_t piece = 4 * sizeof(void *);
    fake_init(&f, WSCH_ROLE_SERVER);
    f.desc.limits.max_outbound_bytes = 1000;
    ASSERT(open_server(&f));
    f.send_budget = 0;
    ASSERT_EQ(WSCH_OK, wsch_conn_send(f.c, WSCH_OP_BINARY, data, sizeof data));
    ASSERT_EQ(WSCH_ERR_QUEUE_FULL, wsch_conn_send(f.c, WSCH_OP_BINARY, data, sizeof data));
    ASSERT_EQ(604u + piece, wsch_conn_queued_bytes(f.c));
    /* a close frame still gets in line */
    ASSERT_EQ(WSCH_OK, wsch_conn_close(f.c, 1008, "slow", 4));
    ASSERT_EQ(612u + 2 * piece, wsch_conn_queued_bytes(f.c));
    fake_free(&f);
    PASS();
}

/* A budget shared by two connections caps what they hold together. Only
   output that must wait takes from it, so a connection whose peer keeps up
   is not refused for another's backlog; close frames pass; it all comes
   back as the bytes leave or the connection goes. */
TEST shared_budget_caps_queued_output(void) {
    fake a, b;
    unsigned char data[600] = {0};
    char reason[100];
    const size_t piece = 4 * sizeof(void *), frame = 604 + piece;
    wsch_budget budget = {3 * frame + 50, 0, NULL, 0};   /* three queued frames fit, a fourth does not */
    int i;
    memset(reason, 'r', sizeof reason);
    fake_init(&a, WSCH_ROLE_SERVER);
    fake_init(&b, WSCH_ROLE_SERVER);
    a.desc.limits.outbound_budget = &budget;
    b.desc.limits.outbound_budget = &budget;
    ASSERT(open_server(&a));
    ASSERT(open_server(&b));
    ASSERT_EQ(0u, budget.used);
    a.send_budget = 0;
    for (i = 0; i < 3; i++) ASSERT_EQ(WSCH_OK, wsch_conn_send(a.c, WSCH_OP_BINARY, data, sizeof data));
    ASSERT_EQ(3 * frame, budget.used);
    ASSERT_EQ(WSCH_ERR_QUEUE_FULL, wsch_conn_send(a.c, WSCH_OP_BINARY, data, sizeof data));
    ASSERT_EQ(budget.used, wsch_conn_queued_bytes(a.c));
    /* b keeps up: its frames leave at once and take nothing */
    for (i = 0; i < 3; i++) ASSERT_EQ(WSCH_OK, wsch_conn_send(b.c, WSCH_OP_BINARY, data, sizeof data));
    ASSERT_EQ(3 * frame, budget.used);
    /* b stops reading: what would have to wait is refused, nothing sent */
    b.send_budget = 0;
    b.out_len = 0;
    ASSERT_EQ(WSCH_ERR_QUEUE_FULL, wsch_conn_send(b.c, WSCH_OP_BINARY, data, sizeof data));
    ASSERT_EQ(0u, wsch_conn_queued_bytes(b.c));
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_conn_state(b.c));
    /* its close frame passes, past the limit */
    ASSERT_EQ(WSCH_OK, wsch_conn_close(b.c, 1001, reason, sizeof reason));
    ASSERT_EQ(3 * frame + 4 + sizeof reason + piece, budget.used);
    ASSERT(budget.used > budget.limit);
    /* a's peer reads: a's share comes back */
    a.send_budget = (size_t)-1;
    ASSERT_EQ(WSCH_OK, wsch_conn_writable(a.c));
    ASSERT_EQ(wsch_conn_queued_bytes(b.c), budget.used);
    ASSERT_EQ(WSCH_OK, wsch_conn_send(a.c, WSCH_OP_BINARY, data, sizeof data));
    /* b goes with its close frame unsent: its share comes back too */
    fake_free(&b);
    ASSERT_EQ(0u, budget.used);
    fake_free(&a);
    PASS();
}

TEST invalid_text_is_refused_on_send(void) {
    fake f;
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_conn_send(f.c, WSCH_OP_TEXT, "\xff", 1));
    ASSERT_EQ(0u, f.out_len);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_conn_close(f.c, 1005, NULL, 0));
    fake_free(&f);
    PASS();
}

TEST shared_frame_to_many(void) {
    fake f[3];
    wsch_shared *s;
    out_frame fr[2];
    int i;
    ASSERT_EQ(WSCH_OK, wsch_shared_create(NULL, WSCH_OP_TEXT, "broadcast!", 10, &s));
    for (i = 0; i < 3; i++) {
        fake_init(&f[i], WSCH_ROLE_SERVER);
        ASSERT(open_server(&f[i]));
        f[i].send_budget = (size_t)(i * 4); /* 0, 4 and 8 bytes go at once */
        ASSERT_EQ(WSCH_OK, wsch_conn_send_shared(f[i].c, s));
    }
    wsch_shared_release(s); /* the queues keep what they need */
    for (i = 0; i < 3; i++) {
        f[i].send_budget = (size_t)-1;
        ASSERT_EQ(WSCH_OK, wsch_conn_writable(f[i].c));
        ASSERT_EQ(1u, parse_out(f[i].out, f[i].out_len, fr, 2, 0));
        ASSERT_MEM_EQ("broadcast!", fr[0].payload, 10);
        fake_free(&f[i]);
    }
    PASS();
}

/* Gathering (effects.flush_later): one turn of mixed output (frames big
   and small, a fragmented message, a shared frame twice, a pong answering
   a read) is held until writable(), then leaves with exactly the bytes the
   plain path writes, in one call when the transport takes it all. A
   transport that takes k bytes, at every k, then the rest, ends with the
   same bytes: through send_gather and through send (pieces copied). */
static int gather_turn(fake *f, wsch_shared *s, const unsigned char *big, size_t big_len) {
    unsigned char ping[] = {0x89, 0x82, 0, 0, 0, 0, 'h', 'i'};   /* masked with a zero key */
    return wsch_conn_send(f->c, WSCH_OP_TEXT, "one", 3) == WSCH_OK && wsch_conn_send_shared(f->c, s) == WSCH_OK &&
           wsch_conn_send(f->c, WSCH_OP_BINARY, big, big_len) == WSCH_OK &&
           wsch_conn_feed(f->c, ping, sizeof ping) == WSCH_OK &&
           wsch_conn_send_frame(f->c, WSCH_OP_TEXT, 0, "fr", 2) == WSCH_OK &&
           wsch_conn_send_frame(f->c, WSCH_OP_CONTINUATION, 1, "ag", 2) == WSCH_OK &&
           wsch_conn_send_shared(f->c, s) == WSCH_OK;
}

TEST gathered_output_equals_the_plain_path_at_every_split(void) {
    enum { BIG = 3000 };
    unsigned char big[BIG];
    wsch_shared *s;
    fake plain;
    size_t k, i;
    int v;
    for (i = 0; i < BIG; i++) big[i] = (unsigned char)(i * 7);
    ASSERT_EQ(WSCH_OK, wsch_shared_create(NULL, WSCH_OP_TEXT, "shared frame", 12, &s));
    fake_init(&plain, WSCH_ROLE_SERVER);
    ASSERT(open_server(&plain));
    ASSERT(gather_turn(&plain, s, big, BIG));
    ASSERT(plain.out_len > BIG);
    for (v = 0; v < 2; v++) {
        for (k = 0; k <= plain.out_len; k++) {
            char req[sizeof upgrade_request];
            fake f;
            int asks;
            fake_init(&f, WSCH_ROLE_SERVER);
            f.desc.effects.flush_later = fake_flush_later;
            if (v) f.desc.effects.send_gather = fake_send_gather;
            memcpy(req, upgrade_request, sizeof req);
            ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
            ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, req, sizeof req - 1));
            ASSERT_EQ(0u, f.out_len);               /* even the 101 waits for the flush */
            ASSERT_EQ(1, f.flush_asks);
            ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));
            ASSERT(f.out_len > 12 && memcmp(f.out, "HTTP/1.1 101", 12) == 0);
            f.out_len = 0;
            f.send_calls = 0;
            ASSERT(gather_turn(&f, s, big, BIG));
            ASSERT_EQ(0u, f.out_len);
            ASSERT_EQ(2, f.flush_asks);             /* once per turn */
            ASSERT(wsch_conn_want(f.c) & WSCH_WANT_WRITE);
            f.send_budget = k;
            ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));
            ASSERT_EQ(k, f.out_len);
            ASSERT_MEM_EQ(plain.out, f.out, k);
            if (v && k == plain.out_len) ASSERT_EQ(1, f.send_calls);   /* one write for the turn */
            asks = f.flush_asks;
            f.send_budget = (size_t)-1;
            ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));   /* the socket drained: the rest, exactly */
            ASSERT_EQ(plain.out_len, f.out_len);
            ASSERT_MEM_EQ(plain.out, f.out, plain.out_len);
            ASSERT_EQ(asks, f.flush_asks);
            ASSERT_EQ(0u, wsch_conn_queued_bytes(f.c));
            ASSERT(!(wsch_conn_want(f.c) & WSCH_WANT_WRITE));
            fake_free(&f);
        }
    }
    wsch_shared_release(s);
    fake_free(&plain);
    PASS();
}

/* ---- lifetimes ----------------------------------------------------------- */

TEST destroy_inside_callbacks(void) {
    fake f;
    unsigned char in[64];
    size_t n;
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    f.destroy_in_message = 1;
    n = wire_frame(in, 0x81, "one", 3, 1);
    n += wire_frame(in + n, 0x81, "two", 3, 1);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
    ASSERT_EQ(1u, f.nmsgs); /* nothing after the destroy */
    ASSERT(f.c == NULL);
    /* the conn was OPEN: its transport comes back through close(), no on_close */
    ASSERT_EQ(0, f.closes);
    ASSERT_EQ(1, f.transport_closed);
    ASSERT_EQ(0, f.after_close);
    fake_free(&f);

    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    f.destroy_in_close = 1;
    n = wire_frame(in, 0x81, "\xff", 1, 1);
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_conn_feed(f.c, in, n));
    ASSERT(f.c == NULL);
    ASSERT_CLOSED_ONCE_LAST(&f); /* close() still follows on_close, once */
    fake_free(&f);

    /* from inside close(), the last callback */
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    f.destroy_in_transport_close = 1;
    n = wire_frame(in, 0x88, "\x03\xe8", 2, 1);
    n += wire_frame(in + n, 0x81, "late", 4, 1);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
    ASSERT(f.c == NULL);
    ASSERT_CLOSED_ONCE_LAST(&f);
    ASSERT_EQ(0u, f.nmsgs);
    fake_free(&f);
    PASS();
}

/* ---- allocation: counted, and failing at every point --------------------- */

TEST idle_connection_heap(void) {
    fake f;
    alloc_counter a;
    memset(&a, 0, sizeof a);
    fake_init(&f, WSCH_ROLE_SERVER);
    f.desc.allocator = alloc_counter_allocator(&a);
    ASSERT(open_server(&f));
    printf("  heap of an idle open server connection: %zu bytes\n", a.live_bytes);
    ASSERT_EQ(1u, a.live_blocks);       /* one small struct: no buffer while idle */
    ASSERT(a.live_bytes <= 296);        /* 296 on 64-bit since permessage-deflate; it must not grow */
    fake_free(&f);
    ASSERT_EQ(0u, a.live_bytes);
    PASS();
}

/* A client whose opening request cannot be queued was never handed out: no
   on_close, no close(). */
TEST failed_create_runs_no_callbacks(void) {
    fake f;
    alloc_counter a;
    memset(&a, 0, sizeof a);
    fake_init(&f, WSCH_ROLE_CLIENT);
    f.desc.allocator = alloc_counter_allocator(&a);
    f.send_budget = 10;   /* part of the request leaves... */
    a.fail_at = 3;        /* ...and the rest cannot be queued */
    ASSERT_EQ(WSCH_ERR_NOMEM, wsch_conn_create(&f.desc, &f, &f.c));
    ASSERT(f.c == NULL);
    ASSERT_EQ(0, f.closes);
    ASSERT_EQ(0, f.transport_closed);
    ASSERT_EQ(0u, a.live_bytes);
    fake_free(&f);
    PASS();
}

/* Every allocation of a busy exchange fails in turn: an error comes back,
   nothing leaks, nothing crashes. */
TEST allocation_failures_leak_nothing(void) {
    size_t k;
    for (k = 1; k < 40; k++) {
        fake f;
        alloc_counter a;
        char req[sizeof upgrade_request];
        unsigned char in[256];
        size_t n;
        memset(&a, 0, sizeof a);
        a.fail_at = k;
        fake_init(&f, WSCH_ROLE_SERVER);
        f.desc.allocator = alloc_counter_allocator(&a);
        f.send_budget = 20;
        memcpy(req, upgrade_request, sizeof req);
        if (wsch_conn_create(&f.desc, &f, &f.c) == WSCH_OK) {
            size_t i;
            for (i = 0; i + 10 < sizeof req; i += 10) (void)wsch_conn_feed(f.c, req + i, 10);
            (void)wsch_conn_feed(f.c, req + i, sizeof req - 1 - i);
            n = wire_frame(in, 0x01, "abc", 3, 1);
            n += wire_frame(in + n, 0x80, "def", 3, 1);
            (void)wsch_conn_feed(f.c, in, n - 2);
            (void)wsch_conn_feed(f.c, in + n - 2, 2);
            (void)wsch_conn_send(f.c, WSCH_OP_TEXT, "reply", 5);
            f.send_budget = (size_t)-1;
            (void)wsch_conn_writable(f.c);
        }
        fake_free(&f);
        ASSERT_EQ(0u, a.live_bytes);
    }
    PASS();
}

/* ---- the end of a connection: one rule on every path --------------------- */

/* A client through its opening handshake, its request taken out of f->out. */
static int open_client(fake *f) {
    char resp[512];
    size_t n;
    if (wsch_conn_create(&f->desc, f, &f->c) != WSCH_OK) return 0;
    n = answer_101(f, "Upgrade: websocket\r\nConnection: Upgrade\r\n", resp, sizeof resp);
    if (n == 0 || wsch_conn_feed(f->c, resp, n) != WSCH_OK) return 0;
    f->out_len = 0;
    return wsch_conn_state(f->c) == WSCH_STATE_OPEN && f->opened == 1;
}

/* After close() has run every entry point is refused or ignored, nothing
   calls back, and destroying the conn closes nothing a second time. */
static enum greatest_test_res end_is_final(fake *f) {
    unsigned char in[16];
    size_t n = wire_frame(in, 0x89, "p", 1, f->desc.role == WSCH_ROLE_SERVER);
    ASSERT_EQ(1, f->transport_closed);
    ASSERT_EQ(WSCH_STATE_CLOSED, wsch_conn_state(f->c));
    ASSERT_EQ(0u, wsch_conn_want(f->c));
    ASSERT_EQ(WSCH_ERR_CLOSED, wsch_conn_feed(f->c, in, n));
    ASSERT_EQ(WSCH_ERR_CLOSED, wsch_conn_writable(f->c));
    ASSERT_EQ(WSCH_ERR_CLOSED, wsch_conn_send(f->c, WSCH_OP_TEXT, "x", 1));
    ASSERT_EQ(WSCH_ERR_CLOSED, wsch_conn_ping(f->c, NULL, 0));
    ASSERT_EQ(WSCH_ERR_CLOSED, wsch_conn_close(f->c, 1000, NULL, 0));
    wsch_conn_timer_fired(f->c, WSCH_TIMER_HANDSHAKE);
    wsch_conn_timer_fired(f->c, WSCH_TIMER_CLOSE);
    wsch_conn_transport_closed(f->c);
    wsch_conn_destroy(f->c);
    f->c = NULL;
    ASSERT_EQ(1, f->transport_closed);
    ASSERT_EQ(0, f->after_close);
    PASS();
}

typedef enum end_path {
    END_CLOSE_BY_US,            /* wsch_conn_close(), the peer answers */
    END_CLOSE_BY_PEER,          /* the peer's close frame, answered */
    END_PROTOCOL_FAILURE,       /* a frame with the wrong masking: 1002 */
    END_HANDSHAKE_TIMEOUT,
    END_CLOSE_TIMEOUT,          /* wsch_conn_close(), the peer never answers */
    END_EOF_OPEN,               /* the caller's transport_closed() while OPEN */
    END_EOF_HANDSHAKE,          /* ... during the opening handshake */
    END_SEND_ERROR,             /* send() reports WSCH_SEND_ERROR */
    END_DESTROY_OPEN,           /* wsch_conn_destroy() of an OPEN conn */
    END_DESTROY_HANDSHAKE,      /* ... of one still in the handshake */
    END_PATHS
} end_path;

static const char *const end_path_names[END_PATHS] = {
    "close by us", "close by peer", "protocol failure", "handshake timeout", "close timeout",
    "transport_closed while open", "transport_closed in handshake", "send error", "destroy while open",
    "destroy in handshake"};

/* Drives one path to its end and checks what on_close reported and that
   close() ran once, after on_close, as the last callback. */
static enum greatest_test_res run_end_path(wsch_role role, end_path path) {
    fake f;
    unsigned char in[64];
    size_t n;
    int masked = role == WSCH_ROLE_SERVER, code = WSCH_CLOSE_ABNORMAL, err = WSCH_OK, on_close = 1;
    fake_init(&f, role);
    if (path == END_HANDSHAKE_TIMEOUT || path == END_EOF_HANDSHAKE || path == END_DESTROY_HANDSHAKE)
        ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    else
        ASSERT(role == WSCH_ROLE_SERVER ? open_server(&f) : open_client(&f));
    switch (path) {
    case END_CLOSE_BY_US:
        ASSERT_EQ(WSCH_OK, wsch_conn_close(f.c, 1000, "bye", 3));
        n = wire_frame(in, 0x88, "\x03\xe8", 2, masked);
        ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
        if (role == WSCH_ROLE_CLIENT) { /* the server closes TCP first (RFC 6455 7.1.1) */
            ASSERT_EQ(0, f.transport_closed);
            ASSERT_EQ(0, f.closes);
            wsch_conn_transport_closed(f.c);
        }
        code = 1000;
        break;
    case END_CLOSE_BY_PEER:
        n = wire_frame(in, 0x88, "\x03\xe9" "away", 6, masked);
        ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
        if (role == WSCH_ROLE_CLIENT) {
            ASSERT_EQ(0, f.transport_closed);
            wsch_conn_transport_closed(f.c);
        }
        code = 1001;
        ASSERT_STR_EQ("away", f.close_reason);
        break;
    case END_PROTOCOL_FAILURE:
        n = wire_frame(in, 0x81, "x", 1, !masked);
        ASSERT_EQ(WSCH_ERR_PROTOCOL, wsch_conn_feed(f.c, in, n));
        code = 1002;
        err = WSCH_ERR_PROTOCOL;
        break;
    case END_HANDSHAKE_TIMEOUT:
        ASSERT(f.timers_armed & (1u << WSCH_TIMER_HANDSHAKE));
        f.timers_armed &= ~(1u << WSCH_TIMER_HANDSHAKE); /* one-shot: it fired */
        wsch_conn_timer_fired(f.c, WSCH_TIMER_HANDSHAKE);
        err = WSCH_ERR_TIMEOUT;
        break;
    case END_CLOSE_TIMEOUT:
        ASSERT_EQ(WSCH_OK, wsch_conn_close(f.c, 1000, NULL, 0));
        ASSERT_EQ(0, f.transport_closed);
        ASSERT(f.timers_armed & (1u << WSCH_TIMER_CLOSE));
        f.timers_armed &= ~(1u << WSCH_TIMER_CLOSE);
        wsch_conn_timer_fired(f.c, WSCH_TIMER_CLOSE);
        err = -1; /* not documented for this path */
        break;
    case END_EOF_OPEN:
        wsch_conn_transport_closed(f.c);
        break;
    case END_EOF_HANDSHAKE:
        memcpy(in, "GET / HT", 8); /* part of a request */
        if (role == WSCH_ROLE_SERVER) ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, 8));
        wsch_conn_transport_closed(f.c);
        err = WSCH_ERR_HANGUP;
        ASSERT_STR_EQ(wsch_err_str(WSCH_ERR_HANGUP), f.close_reason);
        break;
    case END_SEND_ERROR:
        f.send_error = 1;
        ASSERT_EQ(WSCH_ERR_TRANSPORT, wsch_conn_send(f.c, WSCH_OP_TEXT, "hello", 5));
        err = WSCH_ERR_TRANSPORT;
        ASSERT_EQ(0u, wsch_conn_queued_bytes(f.c));
        break;
    case END_DESTROY_OPEN:
    case END_DESTROY_HANDSHAKE:
        wsch_conn_destroy(f.c);
        f.c = NULL;
        ASSERT_EQ(0, f.closes); /* no event: the caller asked for it */
        ASSERT_EQ(1, f.transport_closed);
        ASSERT_EQ(0, f.after_close);
        on_close = 0;
        break;
    default:
        FAIL();
    }
    if (on_close) {
        ASSERT_CLOSED_ONCE_LAST(&f);
        ASSERT_EQ_FMT(code, f.close_code, "%d");
        if (err != -1) ASSERT_EQ_FMT(err, f.close_error, "%d");
        ASSERT_EQ(0u, f.timers_armed);
        CHECK_CALL(end_is_final(&f));
    }
    fake_free(&f);
    PASS();
}

TEST close_runs_once_and_last_on_every_path(void) {
    int role, path;
    for (role = 0; role < 2; role++) {
        for (path = 0; path < END_PATHS; path++) {
            enum greatest_test_res r = run_end_path((wsch_role)role, (end_path)path);
            if (r != GREATEST_TEST_RES_PASS) {
                printf("\n  path: %s, role %s\n", end_path_names[path], role ? "client" : "server");
                return r;
            }
        }
    }
    PASS();
}

/* What every send error must leave: on_close (1006, WSCH_ERR_TRANSPORT),
   then close() once and last, and a connection deaf to everything after.
   Frees the fake. */
static enum greatest_test_res ended_by_send_error(fake *f) {
    ASSERT_CLOSED_ONCE_LAST(f);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, f->close_code);
    ASSERT_EQ(WSCH_ERR_TRANSPORT, f->close_error);
    CHECK_CALL(end_is_final(f));
    fake_free(f);
    PASS();
}

/* WSCH_SEND_ERROR ends the connection at once, wherever send() is called
   from; 0 only means "would block": the bytes wait in the queue. */
TEST send_error_is_not_would_block(void) {
    fake f;
    unsigned char in[64];
    size_t n;
    /* would block: queued, the transport wants writing, the conn goes on */
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    f.send_budget = 0;
    ASSERT_EQ(WSCH_OK, wsch_conn_send(f.c, WSCH_OP_TEXT, "hello", 5));
    ASSERT_EQ(7u + 4 * sizeof(void *), wsch_conn_queued_bytes(f.c));
    ASSERT_EQ((unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE), wsch_conn_want(f.c));
    ASSERT_EQ(0, f.closes);
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_conn_state(f.c));
    /* ... and then the socket breaks while the queue drains */
    f.send_error = 1;
    ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));
    ASSERT_EQ(WSCH_ERR_TRANSPORT, wsch_conn_error(f.c));
    CHECK_CALL(ended_by_send_error(&f));

    /* an error on the first send: nothing is queued, the call says so */
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    f.send_error = 1;
    f.send_calls = 0;
    ASSERT_EQ(WSCH_ERR_TRANSPORT, wsch_conn_send(f.c, WSCH_OP_BINARY, "abc", 3));
    ASSERT_EQ(1, f.send_calls);
    ASSERT_EQ(0u, wsch_conn_queued_bytes(f.c));
    ASSERT_EQ(0u, wsch_conn_want(f.c));
    ASSERT_EQ(1, f.send_calls); /* no close frame tried on a broken transport */
    CHECK_CALL(ended_by_send_error(&f));

    /* a pong (the reply of a feed) meets the broken socket */
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    f.send_error = 1;
    n = wire_frame(in, 0x89, "ping", 4, 1);
    ASSERT_EQ(WSCH_ERR_TRANSPORT, wsch_conn_feed(f.c, in, n));   /* the feed reports what ended it */
    CHECK_CALL(ended_by_send_error(&f));

    /* the echo of the peer's close frame meets it: the feed says so */
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    f.send_error = 1;
    n = wire_frame(in, 0x88, "\x03\xe8", 2, 1);
    ASSERT_EQ(WSCH_ERR_TRANSPORT, wsch_conn_feed(f.c, in, n));
    CHECK_CALL(ended_by_send_error(&f));

    /* a close frame, ours, meets it */
    fake_init(&f, WSCH_ROLE_CLIENT);
    ASSERT(open_client(&f));
    f.send_error = 1;
    (void)wsch_conn_close(f.c, 1000, NULL, 0);
    CHECK_CALL(ended_by_send_error(&f));

    /* a shared (broadcast) frame meets it: the same error as wsch_conn_send */
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    f.send_error = 1;
    {
        wsch_shared *s;
        ASSERT_EQ(WSCH_OK, wsch_shared_create(NULL, WSCH_OP_TEXT, "all", 3, &s));
        ASSERT_EQ(WSCH_ERR_TRANSPORT, wsch_conn_send_shared(f.c, s));
        wsch_shared_release(s);
    }
    CHECK_CALL(ended_by_send_error(&f));

    /* a client's opening request meets it: create fails, nothing ran, and
       the transport stays the caller's (no close()) */
    fake_init(&f, WSCH_ROLE_CLIENT);
    f.send_error = 1;
    ASSERT_EQ(WSCH_ERR_TRANSPORT, wsch_conn_create(&f.desc, &f, &f.c));
    ASSERT_EQ(NULL, f.c);
    ASSERT_EQ(0, f.transport_closed);
    ASSERT_EQ(0, f.closes);
    fake_free(&f);

    /* the server's 101 meets it: no on_open */
    fake_init(&f, WSCH_ROLE_SERVER);
    f.send_error = 1;
    {
        char req[sizeof upgrade_request];
        memcpy(req, upgrade_request, sizeof req);
        ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
        ASSERT_EQ(WSCH_ERR_TRANSPORT, wsch_conn_feed(f.c, req, sizeof req - 1));
    }
    ASSERT_EQ(0, f.opened);
    CHECK_CALL(ended_by_send_error(&f));
    PASS();
}

/* wsch_conn_want(): what the transport should wait for, at every stage. */
TEST want_follows_the_connection(void) {
    fake f;
    unsigned char in[64];
    size_t n;
    /* server: READ through the handshake and while open */
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_conn_want(f.c));
    fake_free(&f);
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_conn_want(f.c));
    /* READ|WRITE exactly while output is queued */
    f.send_budget = 3;
    ASSERT_EQ(WSCH_OK, wsch_conn_send(f.c, WSCH_OP_TEXT, "hello", 5));
    ASSERT_EQ((unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE), wsch_conn_want(f.c));
    f.send_budget = 2;
    ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));
    ASSERT_EQ((unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE), wsch_conn_want(f.c));
    f.send_budget = (size_t)-1;
    ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_conn_want(f.c));
    /* the peer's close frame, our reply would block: only WRITE is left
       (the server closes once the reply is out; reading is over) */
    f.send_budget = 0;
    n = wire_frame(in, 0x88, "\x03\xe8", 2, 1);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
    ASSERT_EQ(0, f.transport_closed);
    ASSERT_EQ((unsigned)WSCH_WANT_WRITE, wsch_conn_want(f.c));
    f.send_budget = (size_t)-1;
    ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));
    ASSERT_CLOSED_ONCE_LAST(&f);
    ASSERT_EQ(1000, f.close_code);
    ASSERT_EQ(0u, wsch_conn_want(f.c)); /* close() has run */
    fake_free(&f);

    /* client: a request that would block is WRITE during the handshake */
    fake_init(&f, WSCH_ROLE_CLIENT);
    f.send_budget = 10;
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&f.desc, &f, &f.c));
    ASSERT_EQ((unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE), wsch_conn_want(f.c));
    f.send_budget = (size_t)-1;
    ASSERT_EQ(WSCH_OK, wsch_conn_writable(f.c));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_conn_want(f.c));
    fake_free(&f);
    /* client: after the close handshake it waits, reading, for the server's TCP close */
    fake_init(&f, WSCH_ROLE_CLIENT);
    ASSERT(open_client(&f));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_conn_want(f.c));
    ASSERT_EQ(WSCH_OK, wsch_conn_close(f.c, 1000, NULL, 0));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_conn_want(f.c));
    n = wire_frame(in, 0x88, "\x03\xe8", 2, 0);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
    ASSERT_EQ(WSCH_STATE_CLOSING, wsch_conn_state(f.c));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_conn_want(f.c));
    ASSERT_EQ(0, f.transport_closed);
    wsch_conn_transport_closed(f.c);
    ASSERT_CLOSED_ONCE_LAST(&f);
    ASSERT_EQ(0u, wsch_conn_want(f.c));
    fake_free(&f);
    /* the same when the server closed first */
    fake_init(&f, WSCH_ROLE_CLIENT);
    ASSERT(open_client(&f));
    n = wire_frame(in, 0x88, "\x03\xe8", 2, 0);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(f.c, in, n));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_conn_want(f.c));
    wsch_conn_transport_closed(f.c);
    ASSERT_EQ(0u, wsch_conn_want(f.c));
    ASSERT_CLOSED_ONCE_LAST(&f);
    fake_free(&f);
    PASS();
}

/* Every zero limit becomes its documented default; set ones are kept, and
   so is everything else in the desc. */
TEST desc_defaults_fill_only_zero_limits(void) {
    fake f;
    wsch_conn_desc d, got;
    fake_init(&f, WSCH_ROLE_CLIENT);
    got = wsch_conn_desc_defaults(&f.desc);
    ASSERT_EQ((size_t)WSCH_DEFAULT_MAX_FRAME_SIZE, got.limits.max_frame_size);
    ASSERT_EQ((size_t)WSCH_DEFAULT_MAX_MESSAGE_SIZE, got.limits.max_message_size);
    ASSERT_EQ((size_t)WSCH_DEFAULT_MAX_OUTBOUND_BYTES, got.limits.max_outbound_bytes);
    ASSERT_EQ((size_t)WSCH_DEFAULT_MAX_HEADER_BYTES, got.limits.max_header_bytes);
    ASSERT_EQ((uint32_t)WSCH_DEFAULT_HANDSHAKE_TIMEOUT_MS, got.limits.handshake_timeout_ms);
    ASSERT_EQ((uint32_t)WSCH_DEFAULT_CLOSE_TIMEOUT_MS, got.limits.close_timeout_ms);
    /* the documented numbers */
    ASSERT_EQ((size_t)16 << 20, got.limits.max_frame_size);
    ASSERT_EQ((size_t)16 << 20, got.limits.max_message_size);
    ASSERT_EQ((size_t)32 << 20, got.limits.max_outbound_bytes);
    ASSERT_EQ((size_t)8192, got.limits.max_header_bytes);
    ASSERT_EQ(10000u, got.limits.handshake_timeout_ms);
    ASSERT_EQ(5000u, got.limits.close_timeout_ms);
    ASSERT_EQ(WSCH_ROLE_CLIENT, got.role);
    ASSERT_STR_EQ("example.com", got.request.host);
    ASSERT(got.effects.send == fake_send && got.effects.close == fake_close);
    ASSERT(got.effects.random_bytes == fake_random && got.on_close == fake_on_close);
    /* set limits are kept, each one alone */
    d = f.desc;
    d.limits.max_frame_size = 1;
    d.limits.max_message_size = 2;
    d.limits.max_outbound_bytes = 3;
    d.limits.max_header_bytes = 4;
    d.limits.handshake_timeout_ms = 5;
    d.limits.close_timeout_ms = 6;
    got = wsch_conn_desc_defaults(&d);
    ASSERT_EQ(0, memcmp(&d, &got, sizeof d));
    d.limits.max_message_size = 0;
    d.limits.handshake_timeout_ms = 0;
    got = wsch_conn_desc_defaults(&d);
    ASSERT_EQ((size_t)1, got.limits.max_frame_size);
    ASSERT_EQ((size_t)WSCH_DEFAULT_MAX_MESSAGE_SIZE, got.limits.max_message_size);
    ASSERT_EQ((size_t)3, got.limits.max_outbound_bytes);
    ASSERT_EQ((size_t)4, got.limits.max_header_bytes);
    ASSERT_EQ((uint32_t)WSCH_DEFAULT_HANDSHAKE_TIMEOUT_MS, got.limits.handshake_timeout_ms);
    ASSERT_EQ(6u, got.limits.close_timeout_ms);
    /* NULL: all defaults, nothing else set */
    got = wsch_conn_desc_defaults(NULL);
    ASSERT_EQ((size_t)WSCH_DEFAULT_MAX_FRAME_SIZE, got.limits.max_frame_size);
    ASSERT_EQ((uint32_t)WSCH_DEFAULT_CLOSE_TIMEOUT_MS, got.limits.close_timeout_ms);
    ASSERT(got.effects.send == NULL && got.on_message == NULL && got.request.host == NULL);
    /* resolved again, it stays the same */
    d = wsch_conn_desc_defaults(&got);
    ASSERT_EQ(0, memcmp(&d, &got, sizeof d));
    /* a conn made from the resolved desc uses its timers */
    f.desc = wsch_conn_desc_defaults(&f.desc);
    ASSERT(open_client(&f));
    ASSERT_EQ(WSCH_OK, wsch_conn_close(f.c, 1000, NULL, 0));
    ASSERT_EQ(WSCH_DEFAULT_CLOSE_TIMEOUT_MS, f.timer_delay[WSCH_TIMER_CLOSE]);
    fake_free(&f);
    PASS();
}

/* wsch_limits: the frame and message limits act as at most 4 GiB - 1. */
TEST limits_beyond_4_gib(void) {
    wsch_conn_desc big;
    unsigned char h[14];
    outcome o;
    if (sizeof(size_t) <= 4) SKIPm("size_t cannot hold a limit beyond 4 GiB");
    memset(&big, 0, sizeof big);
    big.limits.max_frame_size = (size_t)((uint64_t)1 << 33);   /* 8 GiB */
    big.limits.max_message_size = (size_t)((uint64_t)1 << 33);
    /* 4 GiB - 1: within the limit, the header is taken and the payload awaited */
    memcpy(h, "\x82\xff\x00\x00\x00\x00\xff\xff\xff\xff\x01\x02\x03\x04", 14);
    ASSERT(scenario(h, 14, &big, &o));
    ASSERT_EQ(0, o.closes);
    ASSERT_EQ(0u, o.out_len);
    /* 4 GiB: past it, refused from the header alone */
    memcpy(h, "\x82\xff\x00\x00\x00\x01\x00\x00\x00\x00\x01\x02\x03\x04", 14);
    ASSERT(scenario(h, 14, &big, &o));
    ASSERT_FAILED_WITH(&o, 1009);
    /* with the message limit alone beyond 4 GiB: a fragment of 4 GiB - 1 ... */
    big.limits.max_frame_size = (size_t)((uint64_t)1 << 33);
    big.limits.max_message_size = (size_t)((uint64_t)1 << 32) + 100;
    memcpy(h, "\x02\xff\x00\x00\x00\x00\xff\xff\xff\xff\x01\x02\x03\x04", 14);
    ASSERT(scenario(h, 14, &big, &o));
    ASSERT_EQ(0, o.closes);
    PASS();
}

/* WSCH_CSTR as a reason length: the reason is measured. */
TEST close_reason_as_cstr(void) {
    fake f;
    out_frame fr[2];
    static const char long_reason[] =
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
        "012345678901234567890123"; /* 124 bytes: one too many */
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_conn_close(f.c, 1000, long_reason, WSCH_CSTR));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_conn_close(f.c, 0, "why", WSCH_CSTR)); /* a reason needs a code */
    ASSERT_EQ(WSCH_ERR_ARG, wsch_conn_close(f.c, 1000, "\xff", WSCH_CSTR));
    ASSERT_EQ(0u, f.out_len);
    ASSERT_EQ(WSCH_OK, wsch_conn_close(f.c, 1001, "going away", WSCH_CSTR));
    ASSERT_EQ(1u, parse_out(f.out, f.out_len, fr, 2, 0));
    ASSERT_EQ(WSCH_OP_CLOSE, fr[0].opcode);
    ASSERT_EQ(12u, fr[0].len);
    ASSERT_MEM_EQ("\x03\xe9" "going away", fr[0].payload, 12);
    fake_free(&f);
    /* the longest reason that fits, measured */
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    ASSERT_EQ(WSCH_OK, wsch_conn_close(f.c, 4000, long_reason + 1, WSCH_CSTR));
    ASSERT_EQ(1u, parse_out(f.out, f.out_len, fr, 2, 0));
    ASSERT_EQ(125u, fr[0].len);
    ASSERT_MEM_EQ(long_reason + 1, fr[0].payload + 2, 123);
    fake_free(&f);
    /* NULL and "" measure as no reason; code 0 sends an empty close frame */
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    ASSERT_EQ(WSCH_OK, wsch_conn_close(f.c, 1000, NULL, WSCH_CSTR));
    ASSERT_EQ(1u, parse_out(f.out, f.out_len, fr, 2, 0));
    ASSERT_EQ(2u, fr[0].len);
    fake_free(&f);
    fake_init(&f, WSCH_ROLE_SERVER);
    ASSERT(open_server(&f));
    ASSERT_EQ(WSCH_OK, wsch_conn_close(f.c, 0, "", WSCH_CSTR));
    ASSERT_EQ(1u, parse_out(f.out, f.out_len, fr, 2, 0));
    ASSERT_EQ(0u, fr[0].len);
    fake_free(&f);
    PASS();
}

/* The newest codes sit at the end of the one error list, each with its
   own text, and WSCH_ERR_LAST_ bounds the list. */
TEST error_list_has_transport_and_hangup(void) {
    int e, k;
    ASSERT_EQ(-32, WSCH_ERR_TRANSPORT);
    ASSERT_EQ(-33, WSCH_ERR_HANGUP);
    ASSERT_EQ(-34, WSCH_ERR_COMPRESSION);
    ASSERT_EQ(-35, WSCH_ERR_LAST_);
    for (e = 0; e > WSCH_ERR_LAST_; e--) {
        const char *t = wsch_err_str(e);
        ASSERT(t != NULL && t[0] != '\0');
        ASSERT(strcmp(t, wsch_err_str(WSCH_ERR_LAST_)) != 0);
        for (k = 0; k < -e; k++) ASSERT(strcmp(t, wsch_err_str(-k)) != 0);
    }
    ASSERT(wsch_err_str(WSCH_ERR_LAST_) != NULL);
    ASSERT(wsch_err_str(1) != NULL);
    PASS();
}

SUITE(conn) {
    RUN_TEST(framing_text_and_binary_lengths);
    RUN_TEST(whole_frame_is_delivered_in_place);
    RUN_TEST(ping_answered_with_same_payload);
    RUN_TEST(ping_too_long_or_fragmented_fails);
    RUN_TEST(unsolicited_pong_is_ignored);
    RUN_TEST(ten_pings_ten_pongs);
    RUN_TEST(replies_from_one_feed_leave_together);
    RUN_TEST(reserved_bits_fail);
    RUN_TEST(reserved_opcodes_fail);
    RUN_TEST(fragmented_with_pings_between);
    RUN_TEST(fragmentation_errors);
    RUN_TEST(empty_fragments_make_an_empty_message);
    RUN_TEST(many_one_byte_fragments);
    RUN_TEST(utf8_valid_text_in_any_fragmentation);
    RUN_TEST(utf8_invalid_text_fails_with_1007);
    RUN_TEST(utf8_fails_fast);
    RUN_TEST(close_echoes_code_and_server_closes_tcp);
    RUN_TEST(close_without_code);
    RUN_TEST(close_payload_errors);
    RUN_TEST(server_initiated_close_handshake);
    RUN_TEST(close_timeout_closes_transport);
    RUN_TEST(big_messages_whole_and_fragmented);
    RUN_TEST(size_limits_fail_with_1009);
    RUN_TEST(any_fragment_size_reassembles);
    RUN_TEST(server_rejects_unmasked_frames);
    RUN_TEST(client_role_end_to_end);
    RUN_TEST(client_rejects_bad_accept);
    RUN_TEST(client_waits_for_server_tcp_close);
    RUN_TEST(frames_after_handshake_in_same_read);
    RUN_TEST(bad_version_gets_426);
    RUN_TEST(handshake_timeout_and_header_limit);
    RUN_TEST(on_request_can_refuse_or_close);
    RUN_TEST(close_inside_on_request_stays_closed);
    RUN_TEST(ping_flood_to_a_non_reader_is_bounded);
    RUN_TEST(send_frame_keeps_fragments_in_order);
    RUN_TEST(partial_sends_are_queued_in_order);
    RUN_TEST(outbound_limit_refuses_without_sending);
    RUN_TEST(shared_budget_caps_queued_output);
    RUN_TEST(invalid_text_is_refused_on_send);
    RUN_TEST(shared_frame_to_many);
    RUN_TEST(gathered_output_equals_the_plain_path_at_every_split);
    RUN_TEST(destroy_inside_callbacks);
    RUN_TEST(idle_connection_heap);
    RUN_TEST(failed_create_runs_no_callbacks);
    RUN_TEST(allocation_failures_leak_nothing);
    RUN_TEST(close_runs_once_and_last_on_every_path);
    RUN_TEST(send_error_is_not_would_block);
    RUN_TEST(want_follows_the_connection);
    RUN_TEST(desc_defaults_fill_only_zero_limits);
    RUN_TEST(limits_beyond_4_gib);
    RUN_TEST(close_reason_as_cstr);
    RUN_TEST(error_list_has_transport_and_hangup);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(conn);
    GREATEST_MAIN_END();
}
