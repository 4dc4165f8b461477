/* permessage-deflate (RFC 7692): the negotiation in both roles, compressed
   frames on the wire, bounded inflation, and a hub broadcast compressed
   once. The compressing is real: zlib, through examples/deflate_zlib.h
   (this suite is built only where zlib is installed). */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER
#include "wire.h"
#include "alloc.h"
#include "examples/deflate_zlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- negotiation on parsed heads ------------------------------------------ */

static wsch_request offer_req;
static char req_buf[2048];

/* Parses a request whose Sec-WebSocket-Extensions lines are ext_lines. */
static int parse_offer(const char *ext_lines) {
    size_t used;
    snprintf(req_buf, sizeof req_buf,
             "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             ext_lines);
    return wsch_request_parse(req_buf, strlen(req_buf), 0, sizeof req_buf, &offer_req, &used) == WSCH_OK;
}

static wsch_deflate_desc desc_of(int snct, int cnct, int sbits, int cbits) {
    wsch_deflate_desc d;
    memset(&d, 0, sizeof d);
    d.codec = deflate_zlib_codec();
    d.server_no_context_takeover = (uint8_t)snct;
    d.client_no_context_takeover = (uint8_t)cnct;
    d.server_max_window_bits = (uint8_t)sbits;
    d.client_max_window_bits = (uint8_t)cbits;
    return d;
}

/* The answer the server builds for an offer, or "" when it declines. */
static const char *answer(const char *ext_lines, const wsch_deflate_desc *d) {
    static char out[256];
    wsch_deflate_params a;
    size_t n;
    out[0] = '\0';
    if (!parse_offer(ext_lines)) return "(bad request)";
    if (!wsch_deflate_negotiate(&offer_req, d, &a)) return "";
    if (wsch_deflate_response_build(&a, out, sizeof out, &n) != WSCH_OK) return "(build failed)";
    return out;
}

TEST server_accepts_the_first_acceptable_offer(void) {
    wsch_deflate_desc d = desc_of(0, 0, 0, 0);
    struct {
        const char *offer, *want;
    } cases[] = {
        {"Sec-WebSocket-Extensions: permessage-deflate\r\n", "permessage-deflate"},
        /* what browsers send: the value-less client_max_window_bits */
        {"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n", "permessage-deflate"},
        {"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
         "permessage-deflate; server_no_context_takeover"},
        {"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n",
         "permessage-deflate; server_max_window_bits=10"},
        {"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=\"12\"\r\n",
         "permessage-deflate; server_max_window_bits=12"},
        /* the first offer asks for a window of 8, which zlib cannot make: the second is taken */
        {"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8, permessage-deflate\r\n",
         "permessage-deflate"},
        /* offers across two header lines, an unknown extension first */
        {"Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
         "permessage-deflate"},
        /* declined as the RFC says: unknown parameter, repeated, bad values, values on flags */
        {"Sec-WebSocket-Extensions: permessage-deflate; foo\r\n", ""},
        {"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_no_context_takeover\r\n",
         ""},
        {"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits\r\n", ""},
        {"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16\r\n", ""},
        {"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=010\r\n", ""},
        {"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=7\r\n", ""},
        {"Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover=1\r\n", ""},
        {"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=\"1 0\"\r\n", ""},
        /* a syntax error ends the reading: nothing after it is accepted */
        {"Sec-WebSocket-Extensions: permessage-deflate;; x, permessage-deflate\r\n", ""},
        {"Sec-WebSocket-Extensions: \"permessage-deflate\"\r\n", ""},
        {"", ""},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) ASSERT_STR_EQm(cases[i].offer, cases[i].want, answer(cases[i].offer, &d));
    PASS();
}

TEST server_parameters_follow_its_desc(void) {
    wsch_deflate_desc d = desc_of(1, 1, 12, 10);
    wsch_deflate_params a;
    /* a hub's choice: both without context takeover, whatever was offered */
    ASSERT_STR_EQ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                  answer("Sec-WebSocket-Extensions: permessage-deflate\r\n", &d));
    /* client_max_window_bits may be asked only when offered; never above the offer */
    ASSERT_STR_EQ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                  "client_max_window_bits=10",
                  answer("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n", &d));
    /* an offer of 9 already keeps the client under the 10 asked for */
    ASSERT_STR_EQ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                  answer("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=9\r\n", &d));
    /* the server's window: its own, or smaller when asked */
    ASSERT_STR_EQ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                  "server_max_window_bits=12",
                  answer("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=15\r\n", &d));
    ASSERT_STR_EQ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                  "server_max_window_bits=9",
                  answer("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n", &d));
    /* no codec: never accepted */
    d.codec = NULL;
    ASSERT(parse_offer("Sec-WebSocket-Extensions: permessage-deflate\r\n"));
    ASSERT_EQ(0, wsch_deflate_negotiate(&offer_req, &d, &a));
    ASSERT_EQ(0, a.enabled);
    PASS();
}

TEST client_offer_says_what_it_wants(void) {
    char out[256];
    size_t n;
    wsch_deflate_desc d = desc_of(0, 0, 0, 0);
    ASSERT_EQ(WSCH_OK, wsch_deflate_offer_build(&d, out, sizeof out, &n));
    ASSERT_STR_EQ("permessage-deflate; client_max_window_bits", out);
    d = desc_of(1, 1, 10, 11);
    ASSERT_EQ(WSCH_OK, wsch_deflate_offer_build(&d, out, sizeof out, &n));
    ASSERT_STR_EQ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                  "server_max_window_bits=10; client_max_window_bits=11",
                  out);
    d = desc_of(0, 0, 8, 0);            /* this side can never compress with 8: refused */
    ASSERT_EQ(WSCH_ERR_ARG, wsch_deflate_offer_build(&d, out, sizeof out, &n));
    PASS();
}

/* A client's verdict on a server's answer to its offer. */
static int verdict(const char *ext_lines, const wsch_deflate_desc *d, wsch_deflate_params *a) {
    static char buf[1024];
    wsch_response res;
    size_t used;
    snprintf(buf, sizeof buf, "HTTP/1.1 101 Switching Protocols\r\n%s\r\n", ext_lines);
    if (wsch_response_parse(buf, strlen(buf), 0, sizeof buf, &res, &used) != WSCH_OK) return 99;
    return wsch_deflate_response_check(&res, d, a);
}

TEST client_fails_an_answer_that_does_not_match_its_offer(void) {
    wsch_deflate_desc d = desc_of(0, 0, 10, 11);
    wsch_deflate_params a;
    size_t i;
    static const char *const bad[] = {
        "Sec-WebSocket-Extensions: x-unknown\r\n",
        "Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate\r\n",
        "Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
        "Sec-WebSocket-Extensions: permessage-deflate; foo\r\n",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",      /* needs a value */
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=12\r\n",   /* above the offer */
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=11\r\n",   /* above what was asked */
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=7\r\n",
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover=x\r\n",
        "Sec-WebSocket-Extensions: permessage-deflate;\r\n",
        "Sec-WebSocket-Extensions: \r\n",
        /* server_max_window_bits=10 was asked: an answer without it did not accept the offer */
        "Sec-WebSocket-Extensions: permessage-deflate\r\n",
    };
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) ASSERT_EQm(bad[i], WSCH_ERR_EXTENSION, verdict(bad[i], &d, &a));
    /* declined: no header, no extension */
    ASSERT_EQ(WSCH_OK, verdict("", &d, &a));
    ASSERT_EQ(0, a.enabled);
    /* accepted, with what the server may add on its own */
    ASSERT_EQ(WSCH_OK, verdict("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                               "client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=10\r\n",
                               &d, &a));
    ASSERT_EQ(1, a.enabled);
    ASSERT_EQ(1, a.server_no_context_takeover);
    ASSERT_EQ(1, a.client_no_context_takeover);
    ASSERT_EQ(9, a.server_max_window_bits);
    ASSERT_EQ(10, a.client_max_window_bits);
    /* server_no_context_takeover asked for and not granted */
    d = desc_of(1, 0, 0, 0);
    ASSERT_EQ(WSCH_ERR_EXTENSION, verdict("Sec-WebSocket-Extensions: permessage-deflate\r\n", &d, &a));
    ASSERT_EQ(WSCH_OK, verdict("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n", &d, &a));
    /* nothing offered: any extension fails the handshake */
    ASSERT_EQ(WSCH_ERR_EXTENSION, verdict("Sec-WebSocket-Extensions: permessage-deflate\r\n", NULL, &a));
    PASS();
}

/* ---- two connections over memory ----------------------------------------- */

typedef struct side {
    wsch_conn_desc desc;
    wsch_conn *c;
    unsigned char *wire;            /* what this side sent, not yet read by the other */
    size_t wire_len, wire_cap;
    unsigned char *seen;            /* everything it ever sent, for inspection */
    size_t seen_len, seen_cap;
    unsigned char *msg;             /* the last message received */
    size_t msg_len, msgs;
    unsigned msg_opcode;
    unsigned long digest;           /* of every message received, in order */
    int closes, close_code, opened;
} side;

typedef struct duplex {
    side client, server;
    alloc_counter mem;
} duplex;

static size_t end_send(const void *data, size_t len, void *user) {
    side *e = (side *)user;
    wire_append(&e->wire, &e->wire_len, &e->wire_cap, data, len);
    wire_append(&e->seen, &e->seen_len, &e->seen_cap, data, len);
    return len;
}
static void end_close(void *user) { ((side *)user)->closes++; }
static void end_random(void *out, size_t n, void *user) {
    (void)user;
    memset(out, 0x5A, n);
}
static void end_open(wsch_conn *c, void *user) {
    (void)c;
    ((side *)user)->opened++;
}
static void end_message(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
    side *e = (side *)user;
    (void)c;
    free(e->msg);
    e->msg = (unsigned char *)malloc(len + 1);
    memcpy(e->msg, data, len);
    e->msg[len] = '\0';
    e->msg_len = len;
    e->msg_opcode = (unsigned)op;
    e->msgs++;
    {
        size_t i;
        e->digest = e->digest * 31u + (unsigned long)op;
        for (i = 0; i < len; i++) e->digest = e->digest * 131u + ((unsigned char *)data)[i];
    }
}
static void end_on_close(wsch_conn *c, int code, const char *reason, size_t n, void *user) {
    (void)c;
    (void)reason;
    (void)n;
    ((side *)user)->close_code = code;
}

static void end_desc(duplex *l, side *e, wsch_role role, const wsch_deflate_desc *d) {
    memset(&e->desc, 0, sizeof e->desc);
    e->desc.role = role;
    e->desc.request.host = "example.com";
    e->desc.request.path = "/chat";
    e->desc.allocator = alloc_counter_allocator(&l->mem);
    e->desc.effects.send = end_send;
    e->desc.effects.close = end_close;
    e->desc.effects.random_bytes = end_random;
    e->desc.on_open = end_open;
    e->desc.on_message = end_message;
    e->desc.on_close = end_on_close;
    if (d) e->desc.deflate = *d;
}

/* Moves bytes both ways until neither side has anything to say. */
static void pump(duplex *l) {
    int guard;
    for (guard = 0; guard < 100 && (l->client.wire_len || l->server.wire_len); guard++) {
        side *from = l->client.wire_len ? &l->client : &l->server;
        side *to = from == &l->client ? &l->server : &l->client;
        size_t n = from->wire_len;
        unsigned char *bytes = (unsigned char *)malloc(n);
        memcpy(bytes, from->wire, n);
        from->wire_len = 0;
        if (to->c && wsch_conn_state(to->c) != WSCH_STATE_CLOSED) (void)wsch_conn_feed(to->c, bytes, n);
        free(bytes);
    }
}

/* Connects a client offering cd to a server configured with sd (NULL: no
   extension on that side). */
static int duplex_open(duplex *l, const wsch_deflate_desc *cd, const wsch_deflate_desc *sd) {
    memset(l, 0, sizeof *l);
    end_desc(l, &l->client, WSCH_ROLE_CLIENT, cd);
    end_desc(l, &l->server, WSCH_ROLE_SERVER, sd);
    if (wsch_conn_create(&l->server.desc, &l->server, &l->server.c) != WSCH_OK) return 0;
    if (wsch_conn_create(&l->client.desc, &l->client, &l->client.c) != WSCH_OK) return 0;
    pump(l);
    l->client.seen_len = l->server.seen_len = 0;
    return l->client.opened == 1 && l->server.opened == 1;
}

static void duplex_free(duplex *l) {
    side *e[2];
    int i;
    e[0] = &l->client;
    e[1] = &l->server;
    for (i = 0; i < 2; i++) {
        wsch_conn_destroy(e[i]->c);
        free(e[i]->wire);
        free(e[i]->seen);
        free(e[i]->msg);
    }
}

/* The first byte of the first frame an side sent since the last look. */
static unsigned first_byte(const side *e) { return e->seen_len ? e->seen[0] : 0u; }

static unsigned char *text_of(size_t n, int compressible) {
    unsigned char *p = (unsigned char *)malloc(n + 1);
    size_t i;
    unsigned x = 12345;
    for (i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = compressible ? (unsigned char)"{\"type\":\"message\",\"data\":\"hello\"} "[i % 35]
                            : (unsigned char)('!' + (x >> 16) % 90);
    }
    p[n] = '\0';
    return p;
}

TEST messages_round_trip_compressed_both_ways(void) {
    static const size_t sizes[] = {0, 1, 63, 64, 65, 1000, 70000, 1 << 20};
    static const int configs[][4] = {{0, 0, 0, 0}, {1, 1, 0, 0}, {1, 0, 9, 0}, {0, 1, 0, 9}, {1, 1, 12, 11}};
    size_t i, k, c;
    for (c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        wsch_deflate_desc d = desc_of(configs[c][0], configs[c][1], configs[c][2], configs[c][3]);
        duplex l;
        wsch_deflate_params a;
        ASSERT(duplex_open(&l, &d, &d));
        ASSERT_EQ(1, wsch_conn_deflate(l.client.c, &a));
        ASSERT_EQ(1, wsch_conn_deflate(l.server.c, &a));
        for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            for (k = 0; k < 2; k++) {
                unsigned char *m = text_of(sizes[i], (int)k);
                side *e[2];
                int dir;
                e[0] = &l.client;
                e[1] = &l.server;
                for (dir = 0; dir < 2; dir++) {
                    side *from = e[dir], *to = e[1 - dir];
                    size_t before = to->msgs;
                    from->seen_len = 0;
                    ASSERT_EQ(WSCH_OK, wsch_conn_send(from->c, WSCH_OP_TEXT, m, sizes[i]));
                    /* RSV1 exactly on compressible messages from min_size on */
                    if (k == 1 && sizes[i] >= WSCH_DEFLATE_MIN_SIZE) ASSERT_EQ(0xC1u, first_byte(from));
                    if (sizes[i] < WSCH_DEFLATE_MIN_SIZE) ASSERT_EQ(0x81u, first_byte(from));
                    if (k == 1 && sizes[i] >= 1000) ASSERT(from->seen_len < sizes[i] / 4);
                    pump(&l);
                    ASSERT_EQ(before + 1, to->msgs);
                    ASSERT_EQ(sizes[i], to->msg_len);
                    ASSERT_MEM_EQ(m, to->msg, sizes[i]);
                }
                free(m);
            }
        }
        ASSERT_EQ(0, l.client.closes + l.server.closes);
        duplex_free(&l);
        ASSERT_EQ(0u, l.mem.live_bytes);
    }
    PASS();
}

/* With context takeover the second copy of a message costs a few bytes;
   without it, as much as the first; and then no stream stays allocated. */
TEST context_takeover_and_its_absence(void) {
    unsigned char *m = text_of(2000, 0);
    size_t first, second, idle;
    duplex l;
    wsch_deflate_desc keep = desc_of(0, 0, 0, 0), fresh = desc_of(1, 1, 0, 0);
    ASSERT(duplex_open(&l, &keep, &keep));
    ASSERT_EQ(WSCH_OK, wsch_conn_send(l.server.c, WSCH_OP_TEXT, m, 2000));
    first = l.server.seen_len;
    l.server.seen_len = 0;
    ASSERT_EQ(WSCH_OK, wsch_conn_send(l.server.c, WSCH_OP_TEXT, m, 2000));
    second = l.server.seen_len;
    ASSERT(second < 32 && first > 1000);
    pump(&l);
    ASSERT_EQ(2u, l.client.msgs);
    ASSERT_MEM_EQ(m, l.client.msg, 2000);
    duplex_free(&l);

    ASSERT(duplex_open(&l, &fresh, &fresh));
    idle = l.mem.live_bytes;
    ASSERT_EQ(WSCH_OK, wsch_conn_send(l.server.c, WSCH_OP_TEXT, m, 2000));
    first = l.server.seen_len;
    l.server.seen_len = 0;
    ASSERT_EQ(WSCH_OK, wsch_conn_send(l.server.c, WSCH_OP_TEXT, m, 2000));
    ASSERT_EQ(first, l.server.seen_len);
    pump(&l);
    ASSERT_EQ(2u, l.client.msgs);
    ASSERT_MEM_EQ(m, l.client.msg, 2000);
    ASSERT_EQ(idle, l.mem.live_bytes);  /* no stream kept between messages */
    duplex_free(&l);
    free(m);
    PASS();
}

/* A server may bind the client's window to 8, which zlib cannot compress
   with: the client's messages then go uncompressed, never refused. */
TEST client_window_the_codec_cannot_make(void) {
    wsch_deflate_desc d = desc_of(0, 0, 0, 0);
    duplex l;
    char answer[512], accept[WSCH_ACCEPT_LEN + 1], key[WSCH_KEY_LEN + 1];
    unsigned char nonce[16], *m = text_of(500, 1);
    size_t n;
    memset(&l, 0, sizeof l);
    end_desc(&l, &l.client, WSCH_ROLE_CLIENT, &d);
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&l.client.desc, &l.client, &l.client.c));
    memset(nonce, 0x5A, sizeof nonce);          /* what end_random gave the key */
    ASSERT_EQ(WSCH_OK, wsch_base64_encode(nonce, sizeof nonce, key, sizeof key, &n));
    wsch_accept_key(key, n, accept);
    snprintf(answer, sizeof answer,
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=8\r\n\r\n",
             accept);
    ASSERT_EQ(WSCH_OK, wsch_conn_feed(l.client.c, answer, strlen(answer)));
    ASSERT_EQ(1, l.client.opened);
    ASSERT_EQ(1, wsch_conn_deflate(l.client.c, NULL));
    l.client.seen_len = 0;
    ASSERT_EQ(WSCH_OK, wsch_conn_send(l.client.c, WSCH_OP_TEXT, m, 500));
    ASSERT_EQ(0x81u, first_byte(&l.client));    /* plain, and sent */
    ASSERT(l.client.seen_len > 500);
    free(m);
    duplex_free(&l);
    ASSERT_EQ(0u, l.mem.live_bytes);
    PASS();
}

TEST extension_off_on_either_side(void) {
    wsch_deflate_desc d = desc_of(0, 0, 0, 0);
    duplex l;
    ASSERT(duplex_open(&l, &d, NULL));
    ASSERT_EQ(0, wsch_conn_deflate(l.client.c, NULL));
    ASSERT_EQ(0, wsch_conn_deflate(l.server.c, NULL));
    duplex_free(&l);
    ASSERT(duplex_open(&l, NULL, &d));
    ASSERT_EQ(0, wsch_conn_deflate(l.server.c, NULL));
    {   /* and a compressible message then goes plain */
        unsigned char *m = text_of(5000, 1);
        ASSERT_EQ(WSCH_OK, wsch_conn_send(l.server.c, WSCH_OP_TEXT, m, 5000));
        ASSERT_EQ(0x81u, first_byte(&l.server));
        free(m);
    }
    duplex_free(&l);
    PASS();
}

/* ---- frames from a raw peer ----------------------------------------------- */

/* A server connection that agreed permessage-deflate (with the options
   in d), fed raw client frames. */
static int raw_server(duplex *l, const wsch_deflate_desc *d, const char *offer) {
    char head[512];
    memset(l, 0, sizeof *l);
    end_desc(l, &l->server, WSCH_ROLE_SERVER, d);
    if (wsch_conn_create(&l->server.desc, &l->server, &l->server.c) != WSCH_OK) return 0;
    snprintf(head, sizeof head,
             "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Extensions: %s\r\n\r\n",
             offer);
    if (wsch_conn_feed(l->server.c, head, strlen(head)) != WSCH_OK) return 0;
    l->server.seen_len = 0;
    return l->server.opened == 1;
}

static int feed_raw(duplex *l, unsigned first, const void *payload, size_t len) {
    unsigned char *f = (unsigned char *)malloc(len + 14);
    size_t n = wire_frame(f, first, payload, len, 1);
    int rc = wsch_conn_feed(l->server.c, f, n);
    free(f);
    return rc;
}

/* RFC 7692 7.2.3: "Hello" compressed, in one frame, in two fragments, then
   again with the shared window; a block without compression; BFINAL set. */
TEST rfc7692_examples_inflate(void) {
    static const unsigned char hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    static const unsigned char again[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    static const unsigned char stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00};
    static const unsigned char final[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
    wsch_deflate_desc d = desc_of(0, 0, 0, 0);
    duplex l;
    ASSERT(raw_server(&l, &d, "permessage-deflate"));
    ASSERT_EQ(WSCH_OK, feed_raw(&l, 0xC1, hello, sizeof hello));
    ASSERT_EQ(1u, l.server.msgs);
    ASSERT_STR_EQ("Hello", (const char *)l.server.msg);
    ASSERT_EQ(WSCH_OK, feed_raw(&l, 0x41, hello, 3));       /* RSV1 on the first fragment only */
    ASSERT_EQ(WSCH_OK, feed_raw(&l, 0x80, hello + 3, 4));
    ASSERT_EQ(2u, l.server.msgs);
    ASSERT_STR_EQ("Hello", (const char *)l.server.msg);
    ASSERT_EQ(WSCH_OK, feed_raw(&l, 0xC1, again, sizeof again));  /* refers back into the window */
    ASSERT_EQ(3u, l.server.msgs);
    ASSERT_STR_EQ("Hello", (const char *)l.server.msg);
    ASSERT_EQ(WSCH_OK, feed_raw(&l, 0xC1, stored, sizeof stored));
    ASSERT_STR_EQ("Hello", (const char *)l.server.msg);
    ASSERT_EQ(WSCH_OK, feed_raw(&l, 0xC1, final, sizeof final));
    ASSERT_EQ(5u, l.server.msgs);
    ASSERT_STR_EQ("Hello", (const char *)l.server.msg);
    /* a message without RSV1 on a compressed connection is taken as it is */
    ASSERT_EQ(WSCH_OK, feed_raw(&l, 0x81, "plain", 5));
    ASSERT_STR_EQ("plain", (const char *)l.server.msg);
    ASSERT_EQ(0, l.server.closes);
    duplex_free(&l);
    PASS();
}

/* A client's stream of frames: compressed messages whole and in fragments,
   with context takeover (the second refers back into the window), a plain
   message between them, a large one, a ping inside a fragmented one. */
static size_t mixed_stream(unsigned char *out) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    void *z = k->create(1, 15, 8, NULL, NULL);
    unsigned char *big = text_of(20000, 1), packed[4096];
    static const char *const texts[] = {"Hello", "Hello, hello, hello: the window helps", NULL};
    size_t n = 0, i;
    for (i = 0; i < 3; i++) {
        const unsigned char *m = texts[i] ? (const unsigned char *)texts[i] : big;
        size_t len = texts[i] ? strlen(texts[i]) : 20000, in = len, made = sizeof packed;
        if (k->run(z, m, &in, packed, &made, 1, NULL) != 0 || in != len) {
            n = 0;
            break;
        }
        made -= 4;                                              /* the tail the receiver adds */
        if (i == 1) {   /* three fragments, RSV1 on the first, a ping between */
            size_t third = made / 3;
            n += wire_frame(out + n, 0x41, packed, third, 1);
            n += wire_frame(out + n, 0x89, "p", 1, 1);
            n += wire_frame(out + n, 0x00, packed + third, third, 1);
            n += wire_frame(out + n, 0x80, packed + 2 * third, made - 2 * third, 1);
        } else {
            n += wire_frame(out + n, 0xC1, packed, made, 1);
        }
        n += wire_frame(out + n, 0x82, "plain", 5, 1);
    }
    k->destroy(z, NULL);
    free(big);
    return n;
}

/* The same stream split at every byte, and fed a byte at a time, gives the
   same messages as fed whole. */
TEST compressed_frames_split_anywhere(void) {
    static unsigned char stream[8192];
    size_t n = mixed_stream(stream), split;
    unsigned long want;
    size_t want_msgs;
    wsch_deflate_desc d = desc_of(0, 0, 0, 0);
    duplex l;
    ASSERT(n > 0);
    ASSERT(raw_server(&l, &d, "permessage-deflate"));
    {
        unsigned char copy[8192];   /* a feed unmasks in place: the stream stays as sent */
        memcpy(copy, stream, n);
        ASSERT_EQ(WSCH_OK, wsch_conn_feed(l.server.c, copy, n));
    }
    ASSERT_EQ(6u, l.server.msgs);
    ASSERT_EQ(5u, l.server.msg_len);
    want = l.server.digest;
    want_msgs = l.server.msgs;
    duplex_free(&l);
    for (split = 0; split <= n; split++) {
        unsigned char copy[8192];
        memcpy(copy, stream, n);
        ASSERT(raw_server(&l, &d, "permessage-deflate"));
        ASSERT_EQ(WSCH_OK, wsch_conn_feed(l.server.c, copy, split));
        ASSERT_EQ(WSCH_OK, wsch_conn_feed(l.server.c, copy + split, n - split));
        ASSERT_EQ(want_msgs, l.server.msgs);
        ASSERT_EQ(want, l.server.digest);
        ASSERT_EQ(0, l.server.closes);
        duplex_free(&l);
    }
    {
        unsigned char copy[8192];
        size_t i;
        memcpy(copy, stream, n);
        ASSERT(raw_server(&l, &d, "permessage-deflate"));
        for (i = 0; i < n; i++) ASSERT_EQ(WSCH_OK, wsch_conn_feed(l.server.c, copy + i, 1));
        ASSERT_EQ(want, l.server.digest);
        duplex_free(&l);
    }
    PASS();
}

/* Every way a peer can misuse RSV1 or the compressed data, with the close
   code the documentation gives. */
TEST bad_compressed_frames_fail_as_documented(void) {
    static const unsigned char hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    static const unsigned char corrupt[] = {0xff, 0xff, 0xff, 0x00, 0x12};
    static const unsigned char bad_utf8[] = {0x00, 0x02, 0x00, 0xfd, 0xff, 0xc3, 0x28};   /* stored "\xc3(" */
    wsch_deflate_desc d = desc_of(0, 0, 0, 0);
    struct {
        const char *name;
        int negotiated;
        unsigned first;
        const unsigned char *payload;
        size_t len;
        int code, err;
    } cases[] = {
        {"RSV1 without the extension", 0, 0xC1, hello, sizeof hello, 1002, WSCH_ERR_PROTOCOL},
        {"RSV1 on a ping", 1, 0xC9, hello, sizeof hello, 1002, WSCH_ERR_PROTOCOL},
        {"RSV2", 1, 0xA1, hello, sizeof hello, 1002, WSCH_ERR_PROTOCOL},
        {"corrupt data", 1, 0xC1, corrupt, sizeof corrupt, 1007, WSCH_ERR_COMPRESSION},
        {"invalid UTF-8 once inflated", 1, 0xC1, bad_utf8, sizeof bad_utf8, 1007, WSCH_ERR_UTF8},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        duplex l;
        ASSERT(raw_server(&l, &d, cases[i].negotiated ? "permessage-deflate" : "x-none"));
        (void)feed_raw(&l, cases[i].first, cases[i].payload, cases[i].len);
        ASSERT_EQm(cases[i].name, 0u, l.server.msgs);
        ASSERT_EQm(cases[i].name, cases[i].code, l.server.close_code);
        ASSERT_EQm(cases[i].name, cases[i].err, wsch_conn_error(l.server.c));
        duplex_free(&l);
    }
    {   /* RSV1 on a continuation */
        duplex l;
        ASSERT(raw_server(&l, &d, "permessage-deflate"));
        ASSERT_EQ(WSCH_OK, feed_raw(&l, 0x41, hello, 3));
        (void)feed_raw(&l, 0xC0, hello + 3, 4);
        ASSERT_EQ(1002, l.server.close_code);
        duplex_free(&l);
    }
    PASS();
}

/* A small frame that inflates past max_message_size fails with 1009, and
   no more than the limit (and one byte) of output is ever allocated. */
TEST inflating_past_the_limit_fails_early(void) {
    enum { LIMIT = 100000 };
    wsch_deflate_desc d = desc_of(0, 0, 0, 0);
    unsigned char *zeros = (unsigned char *)calloc(1, 50u << 20), *bomb = NULL;
    size_t bomb_len = 0, live;
    duplex l;
    {   /* 50 MiB of zeros, compressed by the codec itself: about 50 KiB */
        const wsch_deflate_codec *k = deflate_zlib_codec();
        void *z = k->create(1, 15, 8, NULL, NULL);
        size_t cap = 1 << 20, in = 50u << 20, out = cap;
        bomb = (unsigned char *)malloc(cap);
        ASSERT(z != NULL);
        ASSERT_EQ(0, k->run(z, zeros, &in, bomb, &out, 1, NULL));
        ASSERT_EQ((size_t)50 << 20, in);
        bomb_len = out - 4;
        k->destroy(z, NULL);
    }
    ASSERT(bomb_len < 200000);
    memset(&l, 0, sizeof l);
    end_desc(&l, &l.server, WSCH_ROLE_SERVER, &d);
    l.server.desc.limits.max_message_size = LIMIT;
    l.server.desc.limits.max_frame_size = 1 << 20;
    ASSERT_EQ(WSCH_OK, wsch_conn_create(&l.server.desc, &l.server, &l.server.c));
    {
        char head[] =
            "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
        ASSERT_EQ(WSCH_OK, wsch_conn_feed(l.server.c, head, sizeof head - 1));
    }
    live = l.mem.peak_bytes = l.mem.live_bytes;
    (void)feed_raw(&l, 0xC2, bomb, bomb_len);
    ASSERT_EQ(0u, l.server.msgs);
    ASSERT_EQ(1009, l.server.close_code);
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_conn_error(l.server.c));
    /* The output buffer grows by copying: at worst its last two sizes
       (under 2 x (LIMIT + 1)) and the inflater (zlib: about 40 KiB) are
       live together, never the 50 MiB the frame would inflate to. */
    printf("  inflating a 50 MiB bomb against a %d-byte limit: peak %zu bytes above the open connection\n", LIMIT,
           l.mem.peak_bytes - live);
    ASSERT_LT(l.mem.peak_bytes - live, (size_t)2 * (LIMIT + 1) + 64 * 1024);
    duplex_free(&l);
    free(zeros);
    free(bomb);
    PASS();
}


/* ---- the hub: a broadcast compressed once --------------------------------- */

#include "hub_fixture.h"

/* The zlib codec, counting compressions (a reset starts each one). */
static size_t compressions;
static void *counting_create(int compress, int bits, int level, const wsch_allocator *a, void *user) {
    return deflate_zlib_codec()->create(compress, bits, level, a, user);
}
static void counting_destroy(void *z, void *user) { deflate_zlib_codec()->destroy(z, user); }
static int counting_reset(void *z, void *user) {
    compressions++;
    return deflate_zlib_codec()->reset(z, user);
}
static int counting_run(void *z, const unsigned char *in, size_t *in_len, unsigned char *out, size_t *out_len,
                        int flush, void *user) {
    return deflate_zlib_codec()->run(z, in, in_len, out, out_len, flush, user);
}
static const wsch_deflate_codec counting_codec = {counting_create, counting_destroy, counting_reset, counting_run,
                                                  NULL};

static void hub_deflate(wsch_hub_desc *d) { d->deflate.codec = &counting_codec; }

/* The frames after the 101 head: each one's first byte and payload, the
   compressed ones inflated. Returns how many, or -1 on a malformed one. */
static int hub_frames(const fake *f, unsigned *first, char texts[][2048], int max) {
    const unsigned char *p = f->out, *end = f->out + f->out_len;
    int n = 0;
    while (p + 3 < end && memcmp(p, "\r\n\r\n", 4) != 0) p++;
    for (p += 4; p < end && n < max; n++) {
        wsch_frame_header h;
        size_t hl;
        if (wsch_frame_header_decode(p, (size_t)(end - p), &h, &hl) != WSCH_OK) return -1;
        first[n] = p[0];
        if (h.rsv) {
            static const unsigned char tail[4] = {0, 0, 0xFF, 0xFF};
            const wsch_deflate_codec *k = deflate_zlib_codec();
            void *z = k->create(0, 15, 0, NULL, NULL);
            size_t in = (size_t)h.payload_len, out = 2047, in2 = 4, out2;
            if (k->run(z, p + hl, &in, (unsigned char *)texts[n], &out, 0, NULL) != 0) return -1;
            out2 = 2047 - out;
            if (k->run(z, tail, &in2, (unsigned char *)texts[n] + out, &out2, 0, NULL) != 0) return -1;
            texts[n][out + out2] = '\0';
            k->destroy(z, NULL);
        } else {
            memcpy(texts[n], p + hl, (size_t)h.payload_len);
            texts[n][h.payload_len] = '\0';
        }
        p += hl + (size_t)h.payload_len;
    }
    return n;
}

TEST hub_compresses_a_broadcast_once(void) {
    static const char *const offers[4] = {
        "Sec-WebSocket-Extensions: permessage-deflate\r\n",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        NULL,                                                                   /* no extension */
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n",    /* too small a window */
    };
    fake f[4];
    unsigned first[4][8];
    char (*texts)[8][2048] = (char (*)[8][2048])malloc(sizeof(char[4][8][2048]));
    char payload[1200], want[1300];
    size_t delivered, i;
    int n[4];
    ASSERT_EQ(WSCH_OK, hub_setup(hub_deflate));
    for (i = 0; i < 4; i++) {
        char ext[128];
        ASSERT_EQ(WSCH_OK, fake_request(&f[i], "/ws?token=u", offers[i]));
        ASSERT_EQ(101, fake_status(&f[i]));
        ASSERT_EQ(offers[i] ? 1 : 0, fake_header(&f[i], "Sec-WebSocket-Extensions", ext, sizeof ext));
        /* the hub answers without context takeover both ways */
        if (offers[i]) ASSERT(strstr(ext, "server_no_context_takeover; client_no_context_takeover") != NULL);
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "feed"));
    }
    for (i = 0; i < 4; i++) f[i].out_len = f[i].rd = 0, f[i].head_done = 0;
    memset(payload, 'x', sizeof payload);
    payload[0] = '"';
    payload[sizeof payload - 2] = '"';
    payload[sizeof payload - 1] = '\0';
    compressions = 0;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "big", payload, WSCH_CSTR, &delivered));
    ASSERT_EQ(4u, delivered);
    ASSERT_EQ(1u, compressions);                    /* once, for every peer that can take it */
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "small", "1", WSCH_CSTR, &delivered));
    ASSERT_EQ(1u, compressions);                    /* below min_size: never compressed */
    snprintf(want, sizeof want, "{\"type\":\"big\",\"payload\":%s}", payload);
    for (i = 0; i < 4; i++) {
        /* hub_frames reads from the start of out, which now starts at the frames */
        memmove(f[i].out + 4, f[i].out, f[i].out_len);
        memcpy(f[i].out, "\r\n\r\n", 4);
        f[i].out_len += 4;
        n[i] = hub_frames(&f[i], first[i], texts[i], 8);
        ASSERT_EQ(2, n[i]);
        ASSERT_STR_EQ(want, texts[i][0]);
        ASSERT_STR_EQ("{\"type\":\"small\",\"payload\":1}", texts[i][1]);
        ASSERT_EQ(i < 2 ? 0xC1u : 0x81u, first[i][0]);     /* compressed only where agreed and fitting */
        ASSERT_EQ(0x81u, first[i][1]);
    }
    /* the two compressed peers got the very same bytes */
    ASSERT_EQ(f[0].out_len, f[1].out_len);
    ASSERT_MEM_EQ(f[0].out, f[1].out, f[0].out_len);
    ASSERT(f[0].out_len < f[2].out_len / 4);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    free(texts);
    PASS();
}

/* An idle peer that agreed permessage-deflate costs the hub no stream: a
   few bytes more than one that did not, also after messages both ways. */
TEST hub_idle_compressed_peer_holds_no_stream(void) {
    fake f[3];
    size_t base, cost[3], delivered, i;
    char payload[600];
    memset(payload, 'y', sizeof payload);
    payload[0] = '"';
    payload[sizeof payload - 2] = '"';
    payload[sizeof payload - 1] = '\0';
    ASSERT_EQ(WSCH_OK, hub_setup(hub_deflate));
    /* f[0] warms the hub's tables up; f[1] plain, f[2] compressed */
    for (i = 0; i < 3; i++) {
        base = T.mem.live_bytes;
        ASSERT_EQ(WSCH_OK, fake_request(&f[i], "/ws?token=u", i == 2 ? "Sec-WebSocket-Extensions: permessage-deflate\r\n" : NULL));
        ASSERT_EQ(101, fake_status(&f[i]));
        cost[i] = T.mem.live_bytes - base;
    }
    printf("  heap per idle hub peer: %zu bytes plain, %zu with permessage-deflate\n", cost[1], cost[2]);
    ASSERT(cost[2] >= cost[1] && cost[2] - cost[1] <= 1024);
    /* a broadcast compressed, a compressed message in: still no stream per peer */
    for (i = 0; i < 3; i++) ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "feed"));
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "big", payload, WSCH_CSTR, &delivered));
    ASSERT_EQ(3u, delivered);
    base = T.mem.live_bytes;
    {
        static const unsigned char hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
        unsigned char frame[32];
        size_t n = wire_frame(frame, 0xC1, hello, sizeof hello, 1);
        ASSERT_EQ(WSCH_OK, fake_feed(&f[2], frame, n));     /* "Hello": not JSON, the hub answers an error */
    }
    ASSERT_EQ(base, T.mem.live_bytes);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

SUITE(negotiation) {
    RUN_TEST(server_accepts_the_first_acceptable_offer);
    RUN_TEST(server_parameters_follow_its_desc);
    RUN_TEST(client_offer_says_what_it_wants);
    RUN_TEST(client_fails_an_answer_that_does_not_match_its_offer);
}

SUITE(frames) {
    RUN_TEST(messages_round_trip_compressed_both_ways);
    RUN_TEST(context_takeover_and_its_absence);
    RUN_TEST(extension_off_on_either_side);
    RUN_TEST(client_window_the_codec_cannot_make);
    RUN_TEST(rfc7692_examples_inflate);
    RUN_TEST(compressed_frames_split_anywhere);
    RUN_TEST(bad_compressed_frames_fail_as_documented);
    RUN_TEST(inflating_past_the_limit_fails_early);
}

SUITE(hub) {
    RUN_TEST(hub_compresses_a_broadcast_once);
    RUN_TEST(hub_idle_compressed_peer_holds_no_stream);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(negotiation);
    RUN_SUITE(frames);
    RUN_SUITE(hub);
    GREATEST_MAIN_END();
}
