/* The zlib codec of examples/deflate_zlib.h on its own, called the way
   ws_channel.h calls a wsch_deflate_codec: RFC 7692's examples (7.2.3),
   round trips whole and through outputs of every size from 1 to 64 bytes,
   the sync-flush tail, context takeover and reset, corrupt input, a final
   block followed by the tail, windows, and memory through a counting
   allocator. Built only when zlib is installed (the Makefile links -lz). */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER
#include "alloc.h"
#include "examples/deflate_zlib.h"

#include <stdlib.h>

static const unsigned char tail4[4] = {0x00, 0x00, 0xFF, 0xFF};

/* ---- helpers ------------------------------------------------------------- */

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
} buf;

static void buf_put(buf *b, const unsigned char *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        b->p = (unsigned char *)realloc(b->p, cap);
        if (!b->p) abort();
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_free(buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Runs in through the stream as the library does: calls again while input
   remains or the output came back full, each time with at most chunk bytes
   of output room. Appends the output to *out. 0, or -1 as run() said, or -2
   for a call that made no progress with input left and room to spare, or -3
   for a run() that used more than it was given. */
static int pump(const wsch_deflate_codec *k, void *s, const unsigned char *in, size_t in_len, int flush,
                size_t chunk, buf *out) {
    unsigned char *room = (unsigned char *)malloc(chunk);
    int calls = 0;
    if (!room) abort();
    for (;;) {
        size_t took = in_len, made = chunk;
        memset(room, 0xAA, chunk);
        if (k->run(s, in, &took, room, &made, flush, k->user) != 0) {
            free(room);
            return -1;
        }
        if (took > in_len || made > chunk) {
            free(room);
            return -3;
        }
        buf_put(out, room, made);
        in += took;
        in_len -= took;
        if (!in_len && made < chunk) break;
        if (!took && !made && made < chunk) {
            free(room);
            return -2;
        }
        if (++calls > 10000000) {
            free(room);
            return -2;
        }
    }
    free(room);
    return 0;
}

/* One message compressed with the tail removed, as it goes on the wire. */
static int compress_msg(const wsch_deflate_codec *k, void *s, const unsigned char *in, size_t n, size_t chunk,
                        buf *wire) {
    size_t start = wire->len;
    int rc = pump(k, s, in, n, 1, chunk, wire);
    if (rc) return rc;
    if (wire->len - start < 4 || memcmp(wire->p + wire->len - 4, tail4, 4) != 0) return -4;
    wire->len -= 4;
    return 0;
}

/* One message from the wire: its bytes, then the tail, as two pieces. */
static int inflate_msg(const wsch_deflate_codec *k, void *s, const unsigned char *in, size_t n, size_t chunk,
                       buf *msg) {
    int rc = pump(k, s, in, n, 0, chunk, msg);
    if (rc) return rc;
    return pump(k, s, tail4, 4, 0, chunk, msg);
}

static unsigned rng_state = 12345u;
static unsigned rng(void) {
    rng_state = rng_state * 1103515245u + 12345u;
    return (rng_state >> 16) & 0x7FFFu;
}

static void fill_random(unsigned char *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) p[i] = (unsigned char)rng();
}

/* Chat-like text: repeats a lot, as JSON traffic does. */
static void fill_text(unsigned char *p, size_t n) {
    static const char *words[] = {"{\"type\":\"message\",", "\"payload\":{", "\"channel\":\"general\",",
                                  "\"from\":\"alice\",", "\"text\":\"hello there\"}}", " the ", "quick ", "brown "};
    size_t i = 0;
    while (i < n) {
        const char *w = words[rng() % 8u];
        size_t wl = strlen(w);
        if (wl > n - i) wl = n - i;
        memcpy(p + i, w, wl);
        i += wl;
    }
}

/* ---- RFC 7692 7.2.3: the examples, verbatim ---------------------------- */

static const unsigned char hello_msg[5] = {'H', 'e', 'l', 'l', 'o'};

/* 7.2.3.1: "Hello" in one compressed block, tail removed. */
static const unsigned char rfc_hello[7] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
/* 7.2.3.2: the second "Hello" against the first one's window. */
static const unsigned char rfc_hello_again[5] = {0xf2, 0x00, 0x11, 0x00, 0x00};
/* 7.2.3.3: "Hello" in a stored block. */
static const unsigned char rfc_hello_stored[11] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00};
/* 7.2.3.4: "Hello" in a final block (BFINAL 1), then 0x00 to begin the
   stored block the receiver's tail completes. */
static const unsigned char rfc_hello_final[8] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
/* 7.2.3.5: two blocks, "He" then "llo", with a sync flush between them. */
static const unsigned char rfc_hello_two_blocks[13] = {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff,
                                                       0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00};

TEST rfc7692_examples_inflate(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    static const struct {
        const unsigned char *p;
        size_t n;
    } one[] = {{rfc_hello, sizeof rfc_hello},
               {rfc_hello_stored, sizeof rfc_hello_stored},
               {rfc_hello_final, sizeof rfc_hello_final},
               {rfc_hello_two_blocks, sizeof rfc_hello_two_blocks}};
    size_t i, chunk;
    for (i = 0; i < sizeof one / sizeof one[0]; i++) {
        for (chunk = 1; chunk <= 16; chunk++) {
            void *s = k->create(0, 15, 8, NULL, k->user);
            buf m = {NULL, 0, 0};
            ASSERT(s != NULL);
            ASSERT_EQ(0, inflate_msg(k, s, one[i].p, one[i].n, chunk, &m));
            ASSERT_EQ(sizeof hello_msg, m.len);
            ASSERT_MEM_EQ(hello_msg, m.p, 5);
            /* then 7.2.3.2's second message, against the same window */
            m.len = 0;
            if (one[i].p != rfc_hello_final) {
                ASSERT_EQ(0, inflate_msg(k, s, rfc_hello_again, sizeof rfc_hello_again, chunk, &m));
                ASSERT_EQ(sizeof hello_msg, m.len);
                ASSERT_MEM_EQ(hello_msg, m.p, 5);
            }
            buf_free(&m);
            k->destroy(s, k->user);
        }
    }
    PASS();
}

/* zlib makes exactly the RFC's bytes for both messages with context
   takeover, and the first one's again after a reset. */
TEST rfc7692_examples_deflate(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    void *s = k->create(1, 15, 8, NULL, k->user);
    buf w = {NULL, 0, 0};
    ASSERT(s != NULL);
    ASSERT_EQ(0, compress_msg(k, s, hello_msg, 5, 256, &w));
    ASSERT_EQ(sizeof rfc_hello, w.len);
    ASSERT_MEM_EQ(rfc_hello, w.p, w.len);
    w.len = 0;
    ASSERT_EQ(0, compress_msg(k, s, hello_msg, 5, 256, &w));
    ASSERT_EQ(sizeof rfc_hello_again, w.len);
    ASSERT_MEM_EQ(rfc_hello_again, w.p, w.len);
    w.len = 0;
    ASSERT_EQ(0, k->reset(s, k->user));
    ASSERT_EQ(0, compress_msg(k, s, hello_msg, 5, 256, &w));
    ASSERT_EQ(sizeof rfc_hello, w.len);
    ASSERT_MEM_EQ(rfc_hello, w.p, w.len);
    buf_free(&w);
    k->destroy(s, k->user);
    PASS();
}

/* ---- round trips --------------------------------------------------------- */

static enum greatest_test_res round_trip(const unsigned char *data, size_t n, size_t out_chunk, size_t in_chunk) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    void *tx = k->create(1, 15, 8, NULL, k->user);
    void *rx = k->create(0, 15, 8, NULL, k->user);
    buf w = {NULL, 0, 0}, m = {NULL, 0, 0};
    size_t i;
    ASSERT(tx && rx);
    ASSERT_EQ(0, compress_msg(k, tx, data, n, out_chunk, &w));
    /* the receiver gets the message in pieces of in_chunk bytes */
    for (i = 0; i < w.len; i += in_chunk) {
        size_t len = w.len - i < in_chunk ? w.len - i : in_chunk;
        ASSERT_EQ(0, pump(k, rx, w.p + i, len, 0, out_chunk, &m));
    }
    ASSERT_EQ(0, pump(k, rx, tail4, 4, 0, out_chunk, &m));
    ASSERT_EQ(n, m.len);
    if (n) ASSERT_MEM_EQ(data, m.p, n);
    buf_free(&w);
    buf_free(&m);
    k->destroy(tx, k->user);
    k->destroy(rx, k->user);
    PASS();
}

TEST round_trip_whole(void) {
    static const size_t sizes[] = {1, 2, 63, 64, 1000, 100000, 1u << 20};
    size_t i;
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *d = (unsigned char *)malloc(sizes[i]);
        ASSERT(d != NULL);
        fill_random(d, sizes[i]);
        CHECK_CALL(round_trip(d, sizes[i], sizes[i] + 1024, (size_t)-1));
        fill_text(d, sizes[i]);
        CHECK_CALL(round_trip(d, sizes[i], sizes[i] + 1024, (size_t)-1));
        free(d);
    }
    PASS();
}

/* Every output size from 1 to 64 bytes on both sides (a sync flush needs
   more than 6 bytes of room in zlib), input in odd pieces. */
TEST round_trip_tiny_outputs(void) {
    unsigned char d[3000];
    size_t chunk;
    for (chunk = 1; chunk <= 64; chunk++) {
        fill_random(d, sizeof d);
        CHECK_CALL(round_trip(d, sizeof d, chunk, 7));
        fill_text(d, sizeof d);
        CHECK_CALL(round_trip(d, sizeof d, chunk, chunk + 3));
        CHECK_CALL(round_trip(d, 1, chunk, 1));
    }
    PASS();
}

/* An output filled exactly by what a message compresses to: the next
   call still ends the message cleanly (any extra empty block is valid). */
TEST exact_fit_outputs(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    unsigned char d[2000];
    size_t whole, chunk;
    buf w = {NULL, 0, 0};
    void *tx = k->create(1, 15, 8, NULL, k->user);
    ASSERT(tx != NULL);
    fill_text(d, sizeof d);
    ASSERT_EQ(0, pump(k, tx, d, sizeof d, 1, 65536, &w));
    whole = w.len;                  /* with the tail */
    k->destroy(tx, k->user);
    buf_free(&w);
    for (chunk = whole - 6; chunk <= whole + 6; chunk++) CHECK_CALL(round_trip(d, sizeof d, chunk, 5));
    for (chunk = whole / 2 - 3; chunk <= whole / 2 + 3; chunk++) CHECK_CALL(round_trip(d, sizeof d, chunk, 64));
    PASS();
}

TEST sync_flush_tail(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    unsigned char d[500];
    size_t chunk;
    fill_text(d, sizeof d);
    for (chunk = 1; chunk <= 64; chunk += 7) {
        void *tx = k->create(1, 12, 4, NULL, k->user);
        buf w = {NULL, 0, 0};
        ASSERT(tx != NULL);
        ASSERT_EQ(0, pump(k, tx, d, sizeof d, 1, chunk, &w));
        ASSERT(w.len > 4 && w.len < sizeof d);
        ASSERT_MEM_EQ(tail4, w.p + w.len - 4, 4);
        /* the library's extra call after the message adds nothing */
        {
            size_t took = 0, made = 64;
            unsigned char room[64];
            ASSERT_EQ(0, k->run(tx, d, &took, room, &made, 1, k->user));
            ASSERT_EQ(0, took);
            ASSERT_EQ(0, made);
        }
        buf_free(&w);
        k->destroy(tx, k->user);
    }
    PASS();
}

/* An empty message on a fresh stream is the empty block 00 (plus tail). */
TEST empty_message(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    void *tx = k->create(1, 15, 8, NULL, k->user);
    void *rx = k->create(0, 15, 8, NULL, k->user);
    buf w = {NULL, 0, 0}, m = {NULL, 0, 0};
    ASSERT(tx && rx);
    ASSERT_EQ(0, compress_msg(k, tx, NULL, 0, 64, &w));
    ASSERT_EQ(1, w.len);
    ASSERT_EQ(0x00, w.p[0]);
    ASSERT_EQ(0, inflate_msg(k, rx, w.p, w.len, 64, &m));
    ASSERT_EQ(0, m.len);
    /* then a real message over the same streams */
    w.len = 0;
    ASSERT_EQ(0, compress_msg(k, tx, hello_msg, 5, 64, &w));
    ASSERT_EQ(0, inflate_msg(k, rx, w.p, w.len, 64, &m));
    ASSERT_EQ(5, m.len);
    ASSERT_MEM_EQ(hello_msg, m.p, 5);
    buf_free(&w);
    buf_free(&m);
    k->destroy(tx, k->user);
    k->destroy(rx, k->user);
    PASS();
}

/* ---- context takeover ---------------------------------------------------- */

TEST context_takeover(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    unsigned char first[800];
    void *tx = k->create(1, 15, 8, NULL, k->user);
    void *rx = k->create(0, 15, 8, NULL, k->user);
    void *other = k->create(0, 15, 8, NULL, k->user);
    buf w1 = {NULL, 0, 0}, w2 = {NULL, 0, 0}, m = {NULL, 0, 0};
    ASSERT(tx && rx && other);
    fill_random(first, sizeof first);          /* only a back reference can shrink a repeat */
    ASSERT_EQ(0, compress_msg(k, tx, first, sizeof first, 4096, &w1));
    ASSERT_EQ(0, compress_msg(k, tx, first, sizeof first, 4096, &w2));
    ASSERT(w2.len < 64);                        /* the repeat is a reference to message 1 */
    ASSERT_EQ(0, inflate_msg(k, rx, w1.p, w1.len, 4096, &m));
    m.len = 0;
    ASSERT_EQ(0, inflate_msg(k, rx, w2.p, w2.len, 4096, &m));
    ASSERT_EQ(sizeof first, m.len);
    ASSERT_MEM_EQ(first, m.p, m.len);
    /* an inflater that did not see message 1 cannot read message 2 */
    m.len = 0;
    ASSERT_EQ(-1, inflate_msg(k, other, w2.p, w2.len, 4096, &m));
    /* after reset both sides start afresh: message 1's bytes again */
    w2.len = 0;
    m.len = 0;
    ASSERT_EQ(0, k->reset(tx, k->user));
    ASSERT_EQ(0, k->reset(rx, k->user));
    ASSERT_EQ(0, compress_msg(k, tx, first, sizeof first, 4096, &w2));
    ASSERT_EQ(w1.len, w2.len);
    ASSERT_MEM_EQ(w1.p, w2.p, w1.len);
    ASSERT_EQ(0, inflate_msg(k, rx, w2.p, w2.len, 4096, &m));
    ASSERT_EQ(sizeof first, m.len);
    ASSERT_MEM_EQ(first, m.p, m.len);
    /* and a reset inflater reads a message made without takeover */
    m.len = 0;
    ASSERT_EQ(0, k->reset(other, k->user));
    ASSERT_EQ(0, inflate_msg(k, other, w1.p, w1.len, 4096, &m));
    ASSERT_EQ(sizeof first, m.len);
    buf_free(&w1);
    buf_free(&w2);
    buf_free(&m);
    k->destroy(tx, k->user);
    k->destroy(rx, k->user);
    k->destroy(other, k->user);
    PASS();
}

/* A final block ends zlib's stream; the message's tail must not be an
   error and the next message (a new stream from the sender) must inflate,
   whether the sender added RFC 7692 7.2.3.4's 0x00 or not. */
TEST final_block_then_tail(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    static const unsigned char bare[7] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    size_t chunk;
    for (chunk = 1; chunk <= 9; chunk++) {
        int variant;
        for (variant = 0; variant < 2; variant++) {
            void *rx = k->create(0, 15, 8, NULL, k->user);
            buf m = {NULL, 0, 0};
            int round;
            ASSERT(rx != NULL);
            for (round = 0; round < 3; round++) {
                m.len = 0;
                if (variant)
                    ASSERT_EQ(0, inflate_msg(k, rx, bare, sizeof bare, chunk, &m));
                else
                    ASSERT_EQ(0, inflate_msg(k, rx, rfc_hello_final, sizeof rfc_hello_final, chunk, &m));
                ASSERT_EQ(5, m.len);
                ASSERT_MEM_EQ(hello_msg, m.p, 5);
                /* then an ordinary message from the sender's new stream */
                m.len = 0;
                ASSERT_EQ(0, inflate_msg(k, rx, rfc_hello, sizeof rfc_hello, chunk, &m));
                ASSERT_EQ(5, m.len);
                ASSERT_MEM_EQ(hello_msg, m.p, 5);
            }
            buf_free(&m);
            k->destroy(rx, k->user);
        }
    }
    /* the message and its tail in one piece */
    {
        unsigned char one[12];
        void *rx = k->create(0, 15, 8, NULL, k->user);
        buf m = {NULL, 0, 0};
        memcpy(one, rfc_hello_final, 8);
        memcpy(one + 8, tail4, 4);
        ASSERT_EQ(0, pump(k, rx, one, sizeof one, 0, 64, &m));
        ASSERT_EQ(5, m.len);
        memcpy(one, bare, 7);
        memcpy(one + 7, tail4, 4);
        ASSERT_EQ(0, pump(k, rx, one, 11, 0, 64, &m));
        ASSERT_EQ(10, m.len);
        ASSERT_EQ(0, inflate_msg(k, rx, rfc_hello, sizeof rfc_hello, 64, &m));
        ASSERT_EQ(15, m.len);
        buf_free(&m);
        k->destroy(rx, k->user);
    }
    PASS();
}

/* ---- corrupt input ------------------------------------------------------- */

TEST corrupt_input(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    /* BTYPE 11 is reserved; a stored block whose NLEN is not ~LEN; a
       distance before the start of the stream */
    static const unsigned char reserved[3] = {0x07, 0x00, 0x00};
    static const unsigned char bad_stored[6] = {0x00, 0x05, 0x00, 0x00, 0x00, 0x41};
    static const unsigned char far_back[5] = {0xf2, 0x00, 0x11, 0x00, 0x00};   /* 7.2.3.2 alone */
    const unsigned char *cases[3];
    size_t lens[3], i, chunk;
    cases[0] = reserved;
    lens[0] = sizeof reserved;
    cases[1] = bad_stored;
    lens[1] = sizeof bad_stored;
    cases[2] = far_back;
    lens[2] = sizeof far_back;
    for (i = 0; i < 3; i++) {
        for (chunk = 1; chunk <= 8; chunk++) {
            void *rx = k->create(0, 15, 8, NULL, k->user);
            buf m = {NULL, 0, 0};
            ASSERT(rx != NULL);
            ASSERT_EQ(-1, inflate_msg(k, rx, cases[i], lens[i], chunk, &m));
            buf_free(&m);
            k->destroy(rx, k->user);
        }
    }
    /* random bytes: an error, or (rarely) valid data; never a hang */
    for (i = 0; i < 200; i++) {
        unsigned char junk[64];
        void *rx = k->create(0, 15, 8, NULL, k->user);
        buf m = {NULL, 0, 0};
        int rc;
        fill_random(junk, sizeof junk);
        rc = inflate_msg(k, rx, junk, sizeof junk, 1 + i % 100, &m);
        ASSERT(rc == 0 || rc == -1);
        buf_free(&m);
        k->destroy(rx, k->user);
    }
    PASS();
}

/* A small message that inflates large comes out in bounded pieces: the
   caller sees every byte before it could decide to stop (1009). */
TEST inflate_is_bounded(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    size_t n = 4u << 20;
    unsigned char *zeros = (unsigned char *)calloc(1, n);
    void *tx = k->create(1, 15, 9, NULL, k->user);
    void *rx = k->create(0, 15, 8, NULL, k->user);
    buf w = {NULL, 0, 0};
    unsigned char out[4096];
    size_t took, made;
    ASSERT(zeros && tx && rx);
    ASSERT_EQ(0, compress_msg(k, tx, zeros, n, 65536, &w));
    ASSERT(w.len < n / 500);
    took = w.len;
    made = sizeof out;
    ASSERT_EQ(0, k->run(rx, w.p, &took, out, &made, 0, k->user));
    ASSERT_EQ(sizeof out, made);                /* stopped at the room it had */
    ASSERT(took < w.len);
    free(zeros);
    buf_free(&w);
    k->destroy(tx, k->user);
    k->destroy(rx, k->user);
    PASS();
}

/* ---- windows ------------------------------------------------------------- */

TEST window_bits(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    unsigned char *d = (unsigned char *)malloc(200000);
    int wb, rb;
    ASSERT(d != NULL);
    fill_text(d, 200000);
    /* zlib cannot compress with a raw 256-byte window; out-of-range asks fail */
    ASSERT(k->create(1, 8, 8, NULL, k->user) == NULL);
    ASSERT(k->create(1, 16, 8, NULL, k->user) == NULL);
    ASSERT(k->create(1, 15, 0, NULL, k->user) == NULL);
    ASSERT(k->create(1, 15, 10, NULL, k->user) == NULL);
    ASSERT(k->create(0, 7, 8, NULL, k->user) == NULL);
    ASSERT(k->create(0, 16, 8, NULL, k->user) == NULL);
    for (wb = 9; wb <= 15; wb++) {
        void *tx = k->create(1, wb, 1 + wb % 9, NULL, k->user);
        buf w = {NULL, 0, 0};
        ASSERT(tx != NULL);
        ASSERT_EQ(0, compress_msg(k, tx, d, 200000, 65536, &w));
        /* the peer's window, or any larger one, inflates it; 8 included */
        for (rb = wb == 9 ? 8 : wb; rb <= 15; rb++) {
            void *rx = k->create(0, rb, 8, NULL, k->user);
            buf m = {NULL, 0, 0};
            ASSERT(rx != NULL);
            ASSERT_EQ(0, inflate_msg(k, rx, w.p, w.len, 65536, &m));
            ASSERT_EQ(200000, m.len);
            ASSERT_MEM_EQ(d, m.p, m.len);
            buf_free(&m);
            k->destroy(rx, k->user);
        }
        /* a window too small for the data's distances is corrupt data, once
           the distance reaches past the output zlib still has in this call */
        if (wb >= 11) {
            void *rx = k->create(0, 9, 8, NULL, k->user);
            buf m = {NULL, 0, 0};
            unsigned char *rep = (unsigned char *)malloc(4096);
            buf w2 = {NULL, 0, 0};
            void *tx2 = k->create(1, wb, 8, NULL, k->user);
            ASSERT(rep && rx && tx2);
            fill_random(rep, 1024);
            memcpy(rep + 1024, rep, 1024);     /* a repeat 1024 bytes back */
            ASSERT_EQ(0, compress_msg(k, tx2, rep, 2048, 65536, &w2));
            ASSERT(w2.len < 1500);
            ASSERT_EQ(-1, inflate_msg(k, rx, w2.p, w2.len, 100, &m));
            free(rep);
            buf_free(&w2);
            buf_free(&m);
            k->destroy(tx2, k->user);
            k->destroy(rx, k->user);
        }
        buf_free(&w);
        k->destroy(tx, k->user);
    }
    free(d);
    PASS();
}

/* ---- memory -------------------------------------------------------------- */

TEST memory_through_allocator(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    alloc_counter ac;
    wsch_allocator a;
    unsigned char d[5000];
    void *tx, *rx;
    buf w = {NULL, 0, 0}, m = {NULL, 0, 0};
    memset(&ac, 0, sizeof ac);
    a = alloc_counter_allocator(&ac);
    fill_text(d, sizeof d);
    tx = k->create(1, 15, 8, &a, k->user);
    rx = k->create(0, 15, 8, &a, k->user);
    ASSERT(tx && rx);
    ASSERT_EQ(0, compress_msg(k, tx, d, sizeof d, 100, &w));
    ASSERT_EQ(0, inflate_msg(k, rx, w.p, w.len, 100, &m));
    ASSERT_EQ(sizeof d, m.len);
    ASSERT(ac.live_blocks > 2);                 /* zlib's state and windows came from here */
    ASSERT(ac.peak_bytes > 200000);             /* window 15, memory level 8: about 256 KiB */
    k->destroy(tx, k->user);
    k->destroy(rx, k->user);
    ASSERT_EQ(0, ac.live_blocks);
    ASSERT_EQ(0, ac.live_bytes);
    /* smaller settings cost less */
    memset(&ac, 0, sizeof ac);
    tx = k->create(1, 9, 1, &a, k->user);
    ASSERT(tx != NULL);
    ASSERT(ac.peak_bytes < 16384);
    k->destroy(tx, k->user);
    ASSERT_EQ(0, ac.live_blocks);
    buf_free(&w);
    buf_free(&m);
    PASS();
}

/* Every allocation refused in turn: create() returns NULL or a stream, a
   run either works or returns -1, and nothing leaks. */
TEST allocation_failures(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    unsigned char d[3000];
    size_t nth;
    int dir;
    fill_text(d, sizeof d);
    for (dir = 0; dir < 2; dir++) {
        for (nth = 1; nth <= 8; nth++) {
            alloc_counter ac;
            wsch_allocator a;
            void *s;
            memset(&ac, 0, sizeof ac);
            ac.fail_at = nth;
            a = alloc_counter_allocator(&ac);
            s = k->create(dir, 15, 8, &a, k->user);
            if (s) {
                buf w = {NULL, 0, 0};
                int rc;
                if (dir)
                    rc = compress_msg(k, s, d, sizeof d, 4096, &w);
                else
                    rc = inflate_msg(k, s, rfc_hello, sizeof rfc_hello, 4096, &w);
                ASSERT(rc == 0 || rc == -1);
                buf_free(&w);
                k->destroy(s, k->user);
            }
            ASSERT_EQ(0, ac.live_blocks);
        }
    }
    PASS();
}

/* Misuse that must not crash: empty calls, NULL pointers with zero sizes. */
TEST edge_calls(void) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    void *rx = k->create(0, 15, 8, NULL, k->user);
    void *tx = k->create(1, 15, 8, NULL, k->user);
    size_t took = 0, made = 0;
    unsigned char out[8];
    ASSERT(rx && tx);
    ASSERT_EQ(0, k->run(rx, NULL, &took, NULL, &made, 0, k->user));
    ASSERT_EQ(0, took);
    ASSERT_EQ(0, made);
    took = 3;
    made = 0;
    ASSERT_EQ(0, k->run(rx, rfc_hello, &took, out, &made, 0, k->user));   /* no room */
    ASSERT(took <= 3);
    ASSERT_EQ(0, made);
    took = 5;
    made = 0;
    ASSERT_EQ(0, k->run(tx, hello_msg, &took, out, &made, 1, k->user));    /* no room */
    ASSERT_EQ(0, made);
    took = 1;
    ASSERT_EQ(-1, k->run(rx, NULL, &took, out, &made, 0, k->user));
    ASSERT_EQ(-1, k->reset(NULL, k->user));
    k->destroy(NULL, k->user);
    k->destroy(rx, k->user);
    k->destroy(tx, k->user);
    PASS();
}

SUITE(rfc7692_examples) {
    RUN_TEST(rfc7692_examples_inflate);
    RUN_TEST(rfc7692_examples_deflate);
}

SUITE(round_trips) {
    RUN_TEST(round_trip_whole);
    RUN_TEST(round_trip_tiny_outputs);
    RUN_TEST(exact_fit_outputs);
    RUN_TEST(sync_flush_tail);
    RUN_TEST(empty_message);
}

SUITE(streams) {
    RUN_TEST(context_takeover);
    RUN_TEST(final_block_then_tail);
    RUN_TEST(corrupt_input);
    RUN_TEST(inflate_is_bounded);
    RUN_TEST(window_bits);
}

SUITE(memory) {
    RUN_TEST(memory_through_allocator);
    RUN_TEST(allocation_failures);
    RUN_TEST(edge_calls);
}

GREATEST_MAIN_DEFS();
int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(rfc7692_examples);
    RUN_SUITE(round_trips);
    RUN_SUITE(streams);
    RUN_SUITE(memory);
    GREATEST_MAIN_END();
}
