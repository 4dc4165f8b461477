/* Primitives: SHA-1, base64, Sec-WebSocket-Accept, UTF-8 validation, masking.
   Standards' vectors verbatim (FIPS 180-4 / RFC 3174, RFC 4648, RFC 6455);
   every decoder input also fed split at every byte. Build once more with
   -DWSCH_NO_SIMD so the scalar paths are covered on SIMD machines too. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define HAVE_GUARD_PAGE 1
#endif

/* ---- helpers ------------------------------------------------------------ */

static void to_hex(const unsigned char *p, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void sha1_hex(const void *data, size_t len, char out[41]) {
    wsch_sha1 s;
    unsigned char d[20];
    wsch_sha1_init(&s);
    wsch_sha1_update(&s, data, len);
    wsch_sha1_final(&s, d);
    to_hex(d, 20, out);
}

/* xorshift64*: deterministic, so a failure reproduces. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint32_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Du) >> 32);
}

/* ---- SHA-1 -------------------------------------------------------------- */

TEST sha1_vectors(void) {
    static const char v448[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    static const char v896[] =
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
        "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    char hex[41];
    sha1_hex("abc", 3, hex);
    ASSERT_STR_EQ("a9993e364706816aba3e25717850c26c9cd0d89d", hex);
    sha1_hex("", 0, hex);
    ASSERT_STR_EQ("da39a3ee5e6b4b0d3255bfef95601890afd80709", hex);
    sha1_hex(v448, strlen(v448), hex);
    ASSERT_STR_EQ("84983e441c3bd26ebaae4aa1f95129e5e54670f1", hex);
    sha1_hex(v896, strlen(v896), hex);
    ASSERT_STR_EQ("a49b2446a02c645bf419f995b67091253a04a259", hex);
    PASS();
}

TEST sha1_million_a_uneven_chunks(void) {
    static const size_t chunks[] = {1, 7, 63, 64, 65, 127, 1000, 3, 4096, 55, 56, 57};
    unsigned char buf[4096];
    unsigned char d[20];
    char hex[41];
    wsch_sha1 s;
    size_t left = 1000000, n, c = 0;
    memset(buf, 'a', sizeof buf);
    wsch_sha1_init(&s);
    while (left > 0) {
        n = chunks[c++ % (sizeof chunks / sizeof chunks[0])];
        if (n > left) n = left;
        wsch_sha1_update(&s, buf, n);
        left -= n;
    }
    wsch_sha1_final(&s, d);
    to_hex(d, 20, hex);
    ASSERT_STR_EQ("34aa973cd4c4daa4f61eeb2bdbad27316534016f", hex);
    PASS();
}

/* Lengths around the padding boundary (55/56 bytes and one block more);
   digests computed independently with Python's hashlib. */
TEST sha1_padding_boundaries(void) {
    static const struct { size_t n; const char *hex; } v[] = {
        {55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
        {56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
        {57, "f08f24908d682555111be7ff6f004e78283d989a"},
        {63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
        {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
        {65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
        {119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"},
        {120, "f34c1488385346a55709ba056ddd08280dd4c6d6"},
        {127, "89d95fa32ed44a7c610b7ee38517ddf57e0bb975"},
        {128, "ad5b3fdbcb526778c2839d2f151ea753995e26a0"},
    };
    unsigned char buf[128];
    char hex[41];
    size_t i;
    memset(buf, 'a', sizeof buf);
    for (i = 0; i < sizeof v / sizeof v[0]; i++) {
        sha1_hex(buf, v[i].n, hex);
        ASSERT_STR_EQm("a * n", v[i].hex, hex);
    }
    PASS();
}

/* Every two-way split of a 200-byte input gives the one-shot digest, which is
   itself checked against hashlib. */
TEST sha1_every_split(void) {
    unsigned char buf[200], d[20];
    char one[41], hex[41];
    wsch_sha1 s;
    size_t i, k;
    for (i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i * 7 + 3);
    sha1_hex(buf, sizeof buf, one);
    ASSERT_STR_EQ("892b673ca3c696ab13ab8aab3cf3abfbc3aaeb3b", one);
    for (k = 0; k <= sizeof buf; k++) {
        wsch_sha1_init(&s);
        wsch_sha1_update(&s, buf, k);
        wsch_sha1_update(&s, buf + k, sizeof buf - k);
        wsch_sha1_final(&s, d);
        to_hex(d, 20, hex);
        ASSERT_STR_EQm("split digest", one, hex);
    }
    /* and one byte at a time */
    wsch_sha1_init(&s);
    for (i = 0; i < sizeof buf; i++) wsch_sha1_update(&s, buf + i, 1);
    wsch_sha1_final(&s, d);
    to_hex(d, 20, hex);
    ASSERT_STR_EQ(one, hex);
    PASS();
}

TEST sha1_zeroed_state_and_reuse(void) {
    wsch_sha1 s;
    unsigned char d[20];
    char hex[41];
    memset(&s, 0, sizeof s);
    wsch_sha1_update(&s, "ab", 2);
    wsch_sha1_update(&s, "c", 1);
    wsch_sha1_final(&s, d);
    to_hex(d, 20, hex);
    ASSERT_STR_EQ("a9993e364706816aba3e25717850c26c9cd0d89d", hex);
    memset(&s, 0, sizeof s);
    wsch_sha1_final(&s, d);
    to_hex(d, 20, hex);
    ASSERT_STR_EQ("da39a3ee5e6b4b0d3255bfef95601890afd80709", hex);
    /* reuse after init */
    wsch_sha1_init(&s);
    wsch_sha1_update(&s, "abc", 3);
    wsch_sha1_final(&s, d);
    to_hex(d, 20, hex);
    ASSERT_STR_EQ("a9993e364706816aba3e25717850c26c9cd0d89d", hex);
    PASS();
}

SUITE(sha1_suite) {
    RUN_TEST(sha1_vectors);
    RUN_TEST(sha1_million_a_uneven_chunks);
    RUN_TEST(sha1_padding_boundaries);
    RUN_TEST(sha1_every_split);
    RUN_TEST(sha1_zeroed_state_and_reuse);
}

/* ---- base64 ------------------------------------------------------------- */

static const struct { const char *raw, *enc; } b64_rfc[] = {
    {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
};

TEST base64_rfc4648_encode(void) {
    char out[16];
    size_t i, n;
    for (i = 0; i < sizeof b64_rfc / sizeof b64_rfc[0]; i++) {
        size_t rl = strlen(b64_rfc[i].raw);
        memset(out, 'x', sizeof out);
        ASSERT_EQ(WSCH_OK, wsch_base64_encode(b64_rfc[i].raw, rl, out, sizeof out, &n));
        ASSERT_STR_EQ(b64_rfc[i].enc, out);
        ASSERT_EQ(strlen(b64_rfc[i].enc), n);
        ASSERT_EQ(WSCH_BASE64_ENCODED_LEN(rl), n);
    }
    PASS();
}

TEST base64_rfc4648_decode(void) {
    unsigned char out[16];
    size_t i, n;
    for (i = 0; i < sizeof b64_rfc / sizeof b64_rfc[0]; i++) {
        size_t rl = strlen(b64_rfc[i].raw);
        n = 99;
        ASSERT_EQ(WSCH_OK, wsch_base64_decode(b64_rfc[i].enc, strlen(b64_rfc[i].enc), out, sizeof out, &n));
        ASSERT_EQ(rl, n);
        ASSERT_MEM_EQ(b64_rfc[i].raw, out, rl);
        /* an exactly sized buffer suffices */
        ASSERT_EQ(WSCH_OK, wsch_base64_decode(b64_rfc[i].enc, strlen(b64_rfc[i].enc), out, rl, &n));
    }
    PASS();
}

TEST base64_buffer_limits(void) {
    char enc[16];
    unsigned char dec[8];
    size_t n = 7;
    /* encode needs room for the NUL */
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_base64_encode("foo", 3, enc, 4, &n));
    ASSERT_EQ(0u, n);
    ASSERT_EQ(WSCH_OK, wsch_base64_encode("foo", 3, enc, 5, &n));
    ASSERT_STR_EQ("Zm9v", enc);
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_base64_encode("", 0, enc, 0, &n));
    ASSERT_EQ(WSCH_OK, wsch_base64_encode("", 0, enc, 1, &n));
    ASSERT_EQ('\0', enc[0]);
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_base64_encode("f", (size_t)-1, enc, sizeof enc, &n));
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_base64_decode("Zm9vYmFy", 8, dec, 5, &n));
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_base64_decode("Zm9vYg==", 8, dec, 3, &n));
    ASSERT_EQ(WSCH_OK, wsch_base64_decode("Zm9vYg==", 8, dec, 4, &n));
    ASSERT_EQ(4u, n);
    PASS();
}

TEST base64_every_byte_value_round_trips(void) {
    unsigned char raw[256], back[256];
    char enc[WSCH_BASE64_ENCODED_LEN(256) + 1];
    size_t i, len, n, m;
    for (i = 0; i < 256; i++) raw[i] = (unsigned char)(255 - i);
    for (len = 0; len <= 256; len += (len < 8 ? 1 : 37)) {
        ASSERT_EQ(WSCH_OK, wsch_base64_encode(raw, len, enc, sizeof enc, &n));
        ASSERT_EQ(WSCH_BASE64_ENCODED_LEN(len), n);
        ASSERT_EQ(WSCH_OK, wsch_base64_decode(enc, n, back, sizeof back, &m));
        ASSERT_EQ(len, m);
        ASSERT_MEM_EQ(raw, back, len);
    }
    /* the two non-alphanumeric characters */
    raw[0] = 0xFB; raw[1] = 0xFF;
    ASSERT_EQ(WSCH_OK, wsch_base64_encode(raw, 2, enc, sizeof enc, &n));
    ASSERT_STR_EQ("+/8=", enc);
    ASSERT_EQ(WSCH_OK, wsch_base64_decode("dGhlIHNhbXBsZSBub25jZQ==", 24, back, sizeof back, &m));
    ASSERT_EQ(16u, m);
    ASSERT_MEM_EQ("the sample nonce", back, 16);
    PASS();
}

TEST base64_strict_rejections(void) {
    static const char *bad[] = {
        "Z", "Zg", "Zg=", "Zm9vY",        /* length not a multiple of 4 */
        "Z===", "====", "=Zg=", "Zg=a",    /* padding in the wrong place */
        "Zg==Zg==", "Zm9=Zm9v",            /* padding before the end */
        "Zh==", "Zm9=", "Zm+=", "AB==",    /* non-zero bits under the padding */
        "Zm9 ", " Zm9", "Zm\n9", "Zm9v\r\n", "Zm9\t", /* whitespace */
        "Zm9-", "Zm9_", "Zm9.", "Zm9!", "Zm*v",  /* not in the alphabet */
        "Zm9\x80", "\xffZm9",
    };
    unsigned char out[16];
    size_t i, n;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = 7;
        ASSERT_EQm(bad[i], WSCH_ERR_BASE64, wsch_base64_decode(bad[i], strlen(bad[i]), out, sizeof out, &n));
        ASSERT_EQ(0u, n);
    }
    /* an embedded NUL */
    ASSERT_EQ(WSCH_ERR_BASE64, wsch_base64_decode("Zm\0v", 4, out, sizeof out, &n));
    /* the smallest legal variants of the bit checks are accepted */
    ASSERT_EQ(WSCH_OK, wsch_base64_decode("Zg==", 4, out, sizeof out, &n));
    ASSERT_EQ(WSCH_OK, wsch_base64_decode("Zm8=", 4, out, sizeof out, &n));
    ASSERT_EQ(WSCH_OK, wsch_base64_decode("AA==", 4, out, sizeof out, &n));
    ASSERT_EQ(1u, n);
    ASSERT_EQ(0, out[0]);
    PASS();
}

SUITE(base64_suite) {
    RUN_TEST(base64_rfc4648_encode);
    RUN_TEST(base64_rfc4648_decode);
    RUN_TEST(base64_buffer_limits);
    RUN_TEST(base64_every_byte_value_round_trips);
    RUN_TEST(base64_strict_rejections);
}

/* ---- Sec-WebSocket-Accept ----------------------------------------------- */

TEST accept_rfc6455_sample(void) {
    char out[WSCH_ACCEPT_LEN + 1];
    memset(out, 'x', sizeof out);
    wsch_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
    ASSERT_STR_EQ("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", out);
    /* a second key, computed independently with Python */
    wsch_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", 24, out);
    ASSERT_STR_EQ("HSmrc0sMlYUkAGmm5OPpG2HaGWk=", out);
    /* only key_len bytes are read */
    wsch_accept_key("dGhlIHNhbXBsZSBub25jZQ==trailing", 24, out);
    ASSERT_STR_EQ("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", out);
    PASS();
}

SUITE(accept_suite) {
    RUN_TEST(accept_rfc6455_sample);
}

/* ---- UTF-8 -------------------------------------------------------------- */

#define NO_BAD ((size_t)-1)

/* Feeds p[0..len) in the given pieces (cut points ascending) and checks that
   the first failure lands exactly at absolute offset `bad` (NO_BAD: none),
   reported relative to the piece it is in, that later pieces fail at 0, and
   that finish agrees with `complete`. */
static enum greatest_test_res utf8_check_cuts(const unsigned char *p, size_t len, size_t bad, int complete,
                                              const size_t *cuts, size_t ncuts) {
    wsch_utf8 v;
    size_t start = 0, piece, end, off;
    int failed = 0, rc;
    v.state = 0;
    for (piece = 0; piece <= ncuts; piece++) {
        end = piece < ncuts ? cuts[piece] : len;
        off = 12345;
        rc = wsch_utf8_feed(&v, p + start, end - start, &off);
        if (failed) {
            ASSERT_EQm("feed after failure", WSCH_ERR_UTF8, rc);
            ASSERT_EQm("offset after failure", 0u, off);
        } else if (bad != NO_BAD && bad < end) {
            ASSERT_EQm("expected failure", WSCH_ERR_UTF8, rc);
            ASSERT_EQ_FMTm("bad_offset", bad - start, off, "%zu");
            failed = 1;
        } else {
            ASSERT_EQm("expected success", WSCH_OK, rc);
        }
        start = end;
    }
    if (bad != NO_BAD || !complete) {
        ASSERT_EQ(WSCH_ERR_UTF8, wsch_utf8_finish(&v));
    } else {
        ASSERT_EQ(WSCH_OK, wsch_utf8_finish(&v));
    }
    PASS();
}

/* Whole, split at every point, and one byte at a time. */
static enum greatest_test_res utf8_check_all_splits(const unsigned char *p, size_t len, size_t bad, int complete) {
    size_t cuts[256], k;
    CHECK_CALL(utf8_check_cuts(p, len, bad, complete, NULL, 0));
    for (k = 0; k <= len; k++) {
        cuts[0] = k;
        CHECK_CALL(utf8_check_cuts(p, len, bad, complete, cuts, 1));
    }
    if (len <= 256) {
        for (k = 0; k < len; k++) cuts[k] = k + 1;
        CHECK_CALL(utf8_check_cuts(p, len, bad, complete, cuts, len ? len - 1 : 0));
    }
    ASSERT_EQ((bad == NO_BAD && complete) ? 1 : 0, wsch_utf8_valid(p, len));
    PASS();
}

typedef struct utf8_case {
    const char *bytes;
    size_t bad;     /* offset of the first byte that is not a valid prefix, or NO_BAD */
    int complete;   /* 1: ends on a code point boundary (when bad == NO_BAD) */
} utf8_case;

static const utf8_case utf8_cases[] = {
    /* boundary code points */
    {"", NO_BAD, 1},
    {"\x7F", NO_BAD, 1},                       /* U+007F */
    {"\xC2\x80", NO_BAD, 1},                   /* U+0080 */
    {"\xDF\xBF", NO_BAD, 1},                   /* U+07FF */
    {"\xE0\xA0\x80", NO_BAD, 1},               /* U+0800 */
    {"\xED\x9F\xBF", NO_BAD, 1},               /* U+D7FF */
    {"\xEE\x80\x80", NO_BAD, 1},               /* U+E000 */
    {"\xEF\xBF\xBD", NO_BAD, 1},               /* U+FFFD */
    {"\xEF\xBF\xBE", NO_BAD, 1},               /* U+FFFE: a noncharacter, still valid */
    {"\xEF\xBF\xBF", NO_BAD, 1},               /* U+FFFF */
    {"\xF0\x90\x80\x80", NO_BAD, 1},           /* U+10000 */
    {"\xF3\xBF\xBF\xBF", NO_BAD, 1},           /* U+FFFFF */
    {"\xF4\x80\x80\x80", NO_BAD, 1},           /* U+100000 */
    {"\xF4\x8F\xBF\xBF", NO_BAD, 1},           /* U+10FFFF */
    {"\xF4\x90\x80\x80", 1, 0},                /* U+110000 */
    {"\xF4\xBF\xBF\xBF", 1, 0},                /* U+13FFFF */
    {"\xF5\x80\x80\x80", 0, 0},                /* U+140000 */
    {"\xF7\xBF\xBF\xBF", 0, 0},                /* U+1FFFFF */
    {"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5", NO_BAD, 1}, /* "kosme" in Greek */
    /* 5- and 6-byte forms, and the bytes that never appear */
    {"\xF8\x88\x80\x80\x80", 0, 0},
    {"\xFB\xBF\xBF\xBF\xBF", 0, 0},
    {"\xFC\x84\x80\x80\x80\x80", 0, 0},
    {"\xFD\xBF\xBF\xBF\xBF\xBF", 0, 0},
    {"\xFE", 0, 0},
    {"\xFF", 0, 0},
    {"a\xFE\xFF", 1, 0},
    /* lone and stray continuation bytes */
    {"\x80", 0, 0},
    {"\xBF", 0, 0},
    {"a\x80", 1, 0},
    {"\xC2\x80\x80", 2, 0},
    {"\xE2\x82\xAC\xBF", 3, 0},
    {"\xF0\x90\x80\x80\x80", 4, 0},
    /* overlong forms: '/' and the largest overlong of each length, and NUL */
    {"\xC0\xAF", 0, 0},
    {"\xE0\x80\xAF", 1, 0},
    {"\xF0\x80\x80\xAF", 1, 0},
    {"\xF8\x80\x80\x80\xAF", 0, 0},
    {"\xFC\x80\x80\x80\x80\xAF", 0, 0},
    {"\xC1\xBF", 0, 0},
    {"\xE0\x9F\xBF", 1, 0},
    {"\xF0\x8F\xBF\xBF", 1, 0},
    {"\xC0\x80", 0, 0},
    {"\xE0\x80\x80", 1, 0},
    {"\xF0\x80\x80\x80", 1, 0},
    /* surrogates, single and paired */
    {"\xED\xA0\x80", 1, 0},                    /* U+D800 */
    {"\xED\xAD\xBF", 1, 0},                    /* U+DB7F */
    {"\xED\xAE\x80", 1, 0},                    /* U+DB80 */
    {"\xED\xAF\xBF", 1, 0},                    /* U+DBFF */
    {"\xED\xB0\x80", 1, 0},                    /* U+DC00 */
    {"\xED\xBE\x80", 1, 0},                    /* U+DF80 */
    {"\xED\xBF\xBF", 1, 0},                    /* U+DFFF */
    {"\xED\xA0\x80\xED\xB0\x80", 1, 0},        /* U+D800 U+DC00 */
    {"\xED\xAF\xBF\xED\xBF\xBF", 1, 0},        /* U+DBFF U+DFFF */
    /* truncated sequences: a valid prefix, so only finish fails */
    {"\xC2", NO_BAD, 0},
    {"\xE0", NO_BAD, 0},
    {"\xE0\xA0", NO_BAD, 0},
    {"\xED\x9F", NO_BAD, 0},
    {"\xF0\x90\x80", NO_BAD, 0},
    {"\xF4\x8F\xBF", NO_BAD, 0},
    {"ab\xE2\x82", NO_BAD, 0},
    /* truncated sequences followed by something else */
    {"\xC2\x41", 1, 0},
    {"\xE0\xA0\xC2\x80", 2, 0},
    {"\xF0\x90\x80\x41", 3, 0},
    {"\xF1\x80\xF1\x80\x80\x80", 2, 0},
    {"\xDF\xC2\x80", 1, 0},
};

static size_t case_len(const utf8_case *c) { return strlen(c->bytes); }

TEST utf8_kuhn_cases(void) {
    size_t i;
    for (i = 0; i < sizeof utf8_cases / sizeof utf8_cases[0]; i++) {
        const utf8_case *c = &utf8_cases[i];
        enum greatest_test_res r = utf8_check_all_splits((const unsigned char *)c->bytes, case_len(c), c->bad, c->complete);
        if (r != GREATEST_TEST_RES_PASS) {
            printf("\n  case %zu\n", i);
            return r;
        }
    }
    PASS();
}

/* The same cases behind ASCII and multi-byte text of various lengths, so the
   word-at-a-time and SIMD paths run right up to the interesting byte. */
TEST utf8_kuhn_cases_after_text(void) {
    static const char *prefixes[] = {
        "a", "0123456", "01234567", "0123456789abcde", "0123456789abcdef",
        "0123456789abcdef0123456789abcdef0", "\xC3\xA9t\xC3\xA9 0123456789abcdefghijklmnop",
        "\xE2\x82\xAC\xE2\x82\xAC\xE2\x82\xAC\xF0\x9F\x98\x80 abcdefghijklmnopqrstuvwxyz0123456789",
    };
    unsigned char buf[256];
    size_t i, j, pl, cl;
    for (j = 0; j < sizeof prefixes / sizeof prefixes[0]; j++) {
        pl = strlen(prefixes[j]);
        for (i = 0; i < sizeof utf8_cases / sizeof utf8_cases[0]; i++) {
            const utf8_case *c = &utf8_cases[i];
            enum greatest_test_res r;
            cl = case_len(c);
            memcpy(buf, prefixes[j], pl);
            memcpy(buf + pl, c->bytes, cl);
            r = utf8_check_all_splits(buf, pl + cl, c->bad == NO_BAD ? NO_BAD : c->bad + pl, c->complete);
            if (r != GREATEST_TEST_RES_PASS) {
                printf("\n  case %zu after prefix %zu\n", i, j);
                return r;
            }
        }
    }
    PASS();
}

/* Every code point from U+0000 to U+10FFFF encodes to valid UTF-8 except the
   surrogates; each is checked whole and as a 1-byte-feed sequence of its
   own bytes. The encoder here is independent of the validator. */
static size_t encode_cp(uint32_t cp, unsigned char *out) {
    if (cp < 0x80) { out[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 63));
        out[2] = (unsigned char)(0x80 | (cp & 63));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 63));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 63));
    out[3] = (unsigned char)(0x80 | (cp & 63));
    return 4;
}

TEST utf8_every_code_point(void) {
    unsigned char b[4];
    uint32_t cp;
    size_t n, k;
    for (cp = 0; cp <= 0x10FFFF; cp++) {
        int surrogate = cp >= 0xD800 && cp <= 0xDFFF;
        wsch_utf8 v;
        size_t off = 99;
        n = encode_cp(cp, b);
        ASSERT_EQ_FMTm("code point", surrogate ? 0 : 1, wsch_utf8_valid(b, n), "%d");
        v.state = 0;
        for (k = 0; k < n; k++) {
            int rc = wsch_utf8_feed(&v, b + k, 1, &off);
            if (surrogate && k == 1) {
                ASSERT_EQ(WSCH_ERR_UTF8, rc);
                ASSERT_EQ(0u, off);
                break;
            }
            ASSERT_EQ(WSCH_OK, rc);
        }
        if (!surrogate) ASSERT_EQ(WSCH_OK, wsch_utf8_finish(&v));
    }
    /* one past the top, encoded the same way */
    b[0] = 0xF4; b[1] = 0x90; b[2] = 0x80; b[3] = 0x80;
    ASSERT_EQ(0, wsch_utf8_valid(b, 4));
    PASS();
}

/* Reference: a prefix is valid when it is whole code points followed by a
   partial sequence that some continuation bytes could complete to a scalar
   value of the lead's length. Computed with interval arithmetic on the code
   point, not with a byte-range table like the library's. */
static int ref_completable(const unsigned char *seq, size_t have, size_t n) {
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    static const uint32_t max_cp[5] = {0, 0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
    uint32_t lo, hi;
    size_t i;
    lo = hi = seq[0] & (0x7Fu >> n);
    for (i = 1; i < n; i++) {
        if (i < have) {
            lo = (lo << 6) | (seq[i] & 63u);
            hi = (hi << 6) | (seq[i] & 63u);
        } else {
            lo = lo << 6;
            hi = (hi << 6) | 63u;
        }
    }
    if (lo < min_cp[n]) lo = min_cp[n];
    if (hi > max_cp[n]) hi = max_cp[n];
    if (lo > hi) return 0;
    if (lo >= 0xD800 && hi <= 0xDFFF) return 0;
    return 1;
}

static size_t ref_bad_offset(const unsigned char *p, size_t len, int *complete) {
    size_t i = 0, n, m;
    *complete = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c < 0x80) { i++; continue; }
        if ((c & 0xE0) == 0xC0) n = 2;
        else if ((c & 0xF0) == 0xE0) n = 3;
        else if ((c & 0xF8) == 0xF0) n = 4;
        else return i;
        if (!ref_completable(p + i, 1, n)) return i;
        for (m = 1; m < n; m++) {
            if (i + m >= len) return NO_BAD; /* truncated: valid prefix, incomplete */
            if ((p[i + m] & 0xC0) != 0x80) return i + m;
            if (!ref_completable(p + i, m + 1, n)) return i + m;
        }
        i += n;
    }
    *complete = 1;
    return NO_BAD;
}

static unsigned char random_utf8ish_byte(void) {
    static const unsigned char lo[] = {0x00, 0x80, 0x90, 0xA0, 0xC0, 0xC2, 0xE0, 0xE1, 0xED, 0xEE, 0xF0, 0xF1, 0xF4, 0xF5, 0xF8};
    static const unsigned char hi[] = {0x7F, 0x8F, 0x9F, 0xBF, 0xC1, 0xDF, 0xE0, 0xEC, 0xED, 0xEF, 0xF0, 0xF3, 0xF4, 0xF7, 0xFF};
    uint32_t r = rnd();
    size_t cls = (r >> 8) % sizeof lo;
    if ((r & 7) < 3) cls = 0;                  /* plenty of ASCII */
    else if ((r & 7) < 6) cls = 1 + ((r >> 4) & 3) % 3; /* plenty of continuation bytes */
    return (unsigned char)(lo[cls] + (r >> 16) % (unsigned)(hi[cls] - lo[cls] + 1));
}

TEST utf8_random_vs_reference(void) {
    unsigned char buf[96];
    size_t iter, len, pre, i, bad;
    int complete;
    for (iter = 0; iter < 20000; iter++) {
        enum greatest_test_res r;
        /* an ASCII run of random length so every fast path alignment occurs */
        pre = (rnd() & 1) ? rnd() % 40 : 0;
        len = pre + rnd() % 24;
        for (i = 0; i < pre; i++) buf[i] = (unsigned char)('a' + i % 26);
        for (; i < len; i++) {
            if (rnd() % 4 == 0) { /* a whole valid code point, for realistic runs */
                uint32_t cp = rnd() % 0x110000;
                unsigned char b[4];
                size_t n, k;
                if (cp >= 0xD800 && cp <= 0xDFFF) cp -= 0x800;
                n = encode_cp(cp, b);
                for (k = 0; k < n && i < len; k++) buf[i++] = b[k];
                i--;
            } else {
                buf[i] = random_utf8ish_byte();
            }
        }
        bad = ref_bad_offset(buf, len, &complete);
        r = utf8_check_all_splits(buf, len, bad, complete);
        if (r != GREATEST_TEST_RES_PASS) {
            printf("\n  iteration %zu, len %zu:", iter, len);
            for (i = 0; i < len; i++) printf(" %02x", buf[i]);
            printf("\n");
            return r;
        }
    }
    PASS();
}

/* Long valid text of random code points with one random change (a byte
   replaced, dropped or inserted), so errors land at every position relative
   to the 16-byte blocks of the SIMD path; checked against the reference,
   whole, at random cuts and one byte at a time. */
TEST utf8_long_random_mutations(void) {
    static unsigned char buf[700];
    size_t iter, n, target, pos, i, bad, cuts[3], k;
    int complete;
    for (iter = 0; iter < 3000; iter++) {
        enum greatest_test_res r;
        n = 0;
        target = 16 + rnd() % 600;
        while (n + 4 <= target) {
            uint32_t cp, kind = rnd() % 5;
            if (kind == 0) cp = rnd() % 0x80;
            else if (kind == 1) cp = 0x80 + rnd() % 0x780;
            else if (kind == 2) cp = 0x800 + rnd() % 0xF800;
            else if (kind == 3) cp = 0x10000 + rnd() % 0x100000;
            else if (rnd() % 4 != 0) cp = rnd() % 2 ? 0x10FFFF : 0xD7FF;
            else { /* an ASCII run, long enough to fill a SIMD block */
                size_t run = rnd() % 40;
                for (k = 0; k < run && n + 4 < target; k++) buf[n++] = (unsigned char)('A' + k % 26);
                continue;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
            n += encode_cp(cp, buf + n);
        }
        pos = rnd() % n;
        switch (rnd() % 3) {
        case 0: buf[pos] = random_utf8ish_byte(); break;
        case 1: memmove(buf + pos, buf + pos + 1, n - pos - 1); n--; break;
        default: memmove(buf + pos + 1, buf + pos, n - pos); buf[pos] = random_utf8ish_byte(); n++; break;
        }
        bad = ref_bad_offset(buf, n, &complete);
        r = utf8_check_cuts(buf, n, bad, complete, NULL, 0);
        for (k = 0; k < 3; k++) cuts[k] = rnd() % (n + 1);
        if (cuts[0] > cuts[1]) { k = cuts[0]; cuts[0] = cuts[1]; cuts[1] = k; }
        if (cuts[1] > cuts[2]) { k = cuts[1]; cuts[1] = cuts[2]; cuts[2] = k; }
        if (cuts[0] > cuts[1]) { k = cuts[0]; cuts[0] = cuts[1]; cuts[1] = k; }
        if (r == GREATEST_TEST_RES_PASS) r = utf8_check_cuts(buf, n, bad, complete, cuts, 3);
        if (r == GREATEST_TEST_RES_PASS && iter % 16 == 0) r = utf8_check_all_splits(buf, n, bad, complete);
        if (r != GREATEST_TEST_RES_PASS) {
            printf("\n  iteration %zu, len %zu, change at %zu\n", iter, n, pos);
            for (i = 0; i < n; i++) printf("%02x%s", buf[i], i % 32 == 31 ? "\n" : " ");
            printf("\n");
            return r;
        }
    }
    PASS();
}

/* A sequence cut short by ASCII, with the cut at every position relative to
   the word and SIMD blocks and a long ASCII run after it. */
TEST utf8_truncated_before_ascii_run(void) {
    static const char *cut[] = {"\xC2", "\xE0\xA0", "\xE2\x82", "\xF0\x90\x80", "\xF4\x8F\xBF", "\xED"};
    static const char *lead_in[] = {"", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
    unsigned char buf[160];
    size_t c, l, pos, cl, ll, n;
    for (c = 0; c < sizeof cut / sizeof cut[0]; c++) {
        for (l = 0; l < sizeof lead_in / sizeof lead_in[0]; l++) {
            for (pos = 0; pos < 48; pos++) {
                cl = strlen(cut[c]);
                ll = strlen(lead_in[l]);
                memset(buf, 'a', sizeof buf);
                memcpy(buf + pos, lead_in[l], ll);
                memcpy(buf + pos + ll, cut[c], cl);
                n = sizeof buf;
                CHECK_CALL(utf8_check_cuts(buf, n, pos + ll + cl, 0, NULL, 0));
                /* and cut at the end of the fragment: only finish fails */
                CHECK_CALL(utf8_check_cuts(buf, pos + ll + cl, NO_BAD, 0, NULL, 0));
            }
        }
    }
    PASS();
}

/* Long inputs: an error deep inside a long run is found at the exact byte. */
TEST utf8_long_inputs(void) {
    static unsigned char buf[5000];
    size_t i, at, off;
    wsch_utf8 v;
    for (i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)('A' + i % 50);
    ASSERT_EQ(1, wsch_utf8_valid(buf, sizeof buf));
    for (at = 4000; at < 4040; at++) {
        buf[at] = 0x80;
        v.state = 0;
        ASSERT_EQ(WSCH_ERR_UTF8, wsch_utf8_feed(&v, buf, sizeof buf, &off));
        ASSERT_EQ(at, off);
        buf[at] = 'x';
    }
    /* three-byte text throughout, then a surrogate */
    for (i = 0; i + 3 <= sizeof buf; i += 3) { buf[i] = 0xE6; buf[i + 1] = 0x97; buf[i + 2] = 0xA5; }
    for (; i < sizeof buf; i++) buf[i] = ' ';
    ASSERT_EQ(1, wsch_utf8_valid(buf, sizeof buf));
    buf[3000] = 0xED; buf[3001] = 0xA0; buf[3002] = 0x80;
    v.state = 0;
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_utf8_feed(&v, buf, sizeof buf, &off));
    ASSERT_EQ(3001u, off);
    /* bad_offset may be NULL */
    v.state = 0;
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_utf8_feed(&v, buf, sizeof buf, NULL));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_utf8_feed(&v, "a", 1, NULL));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_utf8_feed(&v, NULL, 0, &off));
    ASSERT_EQ(0u, off);
    PASS();
}

SUITE(utf8_suite) {
    RUN_TEST(utf8_kuhn_cases);
    RUN_TEST(utf8_kuhn_cases_after_text);
    RUN_TEST(utf8_every_code_point);
    RUN_TEST(utf8_random_vs_reference);
    RUN_TEST(utf8_long_random_mutations);
    RUN_TEST(utf8_truncated_before_ascii_run);
    RUN_TEST(utf8_long_inputs);
}

/* ---- masking ------------------------------------------------------------ */

static void naive_mask(unsigned char *p, size_t len, const unsigned char key[4], size_t offset) {
    size_t i;
    for (i = 0; i < len; i++) p[i] ^= key[(offset + i) & 3];
}

TEST mask_rfc6455_hello(void) {
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    unsigned char payload[5] = {0x7f, 0x9f, 0x4d, 0x51, 0x58};
    ASSERT_EQ(1u, wsch_mask(payload, 5, key, 0));
    ASSERT_MEM_EQ("Hello", payload, 5);
    PASS();
}

TEST mask_matches_naive(void) {
    static const unsigned char key[4] = {0xA5, 0x3C, 0x0F, 0xE1};
    unsigned char got[300], want[300];
    size_t start, len, off, i;
    for (i = 0; i < sizeof got; i++) want[i] = (unsigned char)(i * 31 + 7);
    for (start = 0; start < 16; start++) {
        for (len = 0; len <= 200; len++) {
            for (off = 0; off < 4; off++) {
                memcpy(got, want, sizeof got);
                naive_mask(want + start, len, key, off);
                ASSERT_EQ((off + len) & 3, wsch_mask(got + start, len, key, off));
                ASSERT_MEM_EQm("masked bytes and untouched neighbours", want, got, sizeof got);
            }
        }
    }
    /* only offset & 3 matters */
    memcpy(got, want, sizeof got);
    naive_mask(want, 37, key, 2);
    ASSERT_EQ((((size_t)-2) + 37) & 3, wsch_mask(got, 37, key, (size_t)-2));
    ASSERT_MEM_EQ(want, got, sizeof got);
    PASS();
}

TEST mask_in_pieces(void) {
    static const unsigned char key[4] = {0x01, 0x80, 0xFF, 0x5A};
    unsigned char whole[200], parts[200], orig[200];
    size_t i, s, s2, pos;
    for (i = 0; i < sizeof orig; i++) orig[i] = (unsigned char)(i ^ 0x6B);
    memcpy(whole, orig, sizeof whole);
    ASSERT_EQ(0u, wsch_mask(whole, sizeof whole, key, 0));
    for (s = 0; s <= sizeof orig; s++) {
        memcpy(parts, orig, sizeof parts);
        pos = wsch_mask(parts, s, key, 0);
        pos = wsch_mask(parts + s, sizeof parts - s, key, pos);
        ASSERT_EQ(0u, pos);
        ASSERT_MEM_EQ(whole, parts, sizeof whole);
    }
    /* three uneven pieces */
    for (s = 0; s < 40; s++) {
        for (s2 = s; s2 < 80; s2 += 3) {
            memcpy(parts, orig, sizeof parts);
            pos = wsch_mask(parts, s, key, 0);
            pos = wsch_mask(parts + s, s2 - s, key, pos);
            pos = wsch_mask(parts + s2, sizeof parts - s2, key, pos);
            ASSERT_MEM_EQ(whole, parts, sizeof whole);
        }
    }
    /* masking twice restores the input */
    ASSERT_EQ(0u, wsch_mask(whole, sizeof whole, key, 0));
    ASSERT_MEM_EQ(orig, whole, sizeof orig);
    PASS();
}

/* Inputs that end right before an inaccessible page: no byte past the end is
   read (or written). */
TEST guard_page_no_overread(void) {
#ifdef HAVE_GUARD_PAGE
    static const unsigned char key[4] = {1, 2, 3, 4};
    size_t page = (size_t)sysconf(_SC_PAGESIZE), len, off;
    unsigned char *map, *end, *p;
    wsch_utf8 v;
    map = (unsigned char *)mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT(map != MAP_FAILED);
    ASSERT_EQ(0, mprotect(map + page, page, PROT_NONE));
    end = map + page;
    for (len = 0; len <= 100; len++) {
        p = end - len;
        memset(p, 'a', len);
        ASSERT_EQ(1, wsch_utf8_valid(p, len));
        if (len >= 2) { p[len - 2] = 0xC3; p[len - 1] = 0xA9; }
        ASSERT_EQ(1, wsch_utf8_valid(p, len));
        if (len >= 1) { /* a truncated sequence at the very end */
            if (len >= 2) p[len - 2] = 'a';
            p[len - 1] = 0xE2;
            v.state = 0;
            ASSERT_EQ(WSCH_OK, wsch_utf8_feed(&v, p, len, &off));
            ASSERT_EQ(WSCH_ERR_UTF8, wsch_utf8_finish(&v));
        }
        for (off = 0; off < 4; off++) (void)wsch_mask(p, len, key, off);
    }
    ASSERT_EQ(0, munmap(map, 2 * page));
    PASS();
#else
    SKIPm("no mmap");
#endif
}

SUITE(mask_suite) {
    RUN_TEST(mask_rfc6455_hello);
    RUN_TEST(mask_matches_naive);
    RUN_TEST(mask_in_pieces);
    RUN_TEST(guard_page_no_overread);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(sha1_suite);
    RUN_SUITE(base64_suite);
    RUN_SUITE(accept_suite);
    RUN_SUITE(utf8_suite);
    RUN_SUITE(mask_suite);
    GREATEST_MAIN_END();
}
