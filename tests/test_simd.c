/* SIMD against scalar. One fixed pseudo-random corpus goes through the layers
   that have SIMD paths and the ones whose fast paths WSCH_NO_SIMD turns off:
   UTF-8 validation, unmasking, the JSON envelope scan, and a server
   connection that receives each input as masked text frames (unmasking in
   place and across feeds, UTF-8 across frames, then the envelope scan of
   what arrives). Every input is fed whole, split in two at every byte, and
   one byte at a time; the split runs must agree with the whole run, and
   UTF-8 and unmasking also agree with plain reference code here.

   Every result also goes into one SHA-1 digest, written in a fixed width and
   byte order so the word size and endianness do not enter. The program
   prints it ("digest: ..."); with WSCH_SCALAR_DIGEST set in the environment
   it also checks that its own digest equals that one. tests/simd_check.sh
   runs the scalar build (-DWSCH_NO_SIMD) and hands its digest to the SIMD
   build (SSE2 on x86, NEON on AArch64): identical results on identical
   inputs, every split included. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if WSCH__SSE2
#define SIMD_PATH "SSE2"
#elif WSCH__NEON
#define SIMD_PATH "NEON"
#else
#define SIMD_PATH "scalar"
#endif

#define NO_BAD ((size_t)-1)
#define CORPUS_SIZE 288
#define INPUT_MAX 360

/* ---- the digest ----------------------------------------------------------- */

static wsch_sha1 digest;

static void put_u64(uint64_t v) {
    unsigned char b[8];
    int i;
    for (i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    wsch_sha1_update(&digest, b, 8);
}
static void put_int(int v) { put_u64((uint64_t)(int64_t)v); }
static void put_bytes(const void *p, size_t n) {
    put_u64(n);
    wsch_sha1_update(&digest, p, n);
}

/* ---- the corpus ----------------------------------------------------------- */

/* xorshift64*: the same sequence on every CPU. */
static uint64_t rng_state = 0x2545F4914F6CDD1Du;
static uint32_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Du) >> 32);
}

static size_t encode_cp(uint32_t cp, unsigned char *out) {
    if (cp < 0x80) { out[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Bytes near the edges of UTF-8's ranges, where validators go wrong. */
static unsigned char edge_byte(void) {
    static const unsigned char edges[] = {0x00, 0x1F, 0x22, 0x5C, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF,
                                          0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
    return (rnd() & 1) ? edges[rnd() % sizeof edges] : (unsigned char)rnd();
}

/* Sequences one rule away from valid: overlongs, surrogates, beyond
   U+10FFFF, a lead byte without its continuations, a stray continuation. */
static const char *const near_misses[] = {
    "\xC0\xAF", "\xC1\xBF", "\xE0\x80\xAF", "\xE0\x9F\xBF", "\xED\xA0\x80", "\xED\xBF\xBF",
    "\xF0\x80\x80\xAF", "\xF0\x8F\xBF\xBF", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\xF8\x88\x80\x80",
    "\xC2\x41", "\xE2\x82\x41", "\xF0\x9F\x98\x41", "\x80", "\xBF", "\xE2\x82", "\xF0\x9F\x98",
};

#define NEAR_MISSES (sizeof near_misses / sizeof near_misses[0])

/* Writes near miss m over buf[pos..] (moved back to fit); returns n. */
static size_t put_near_miss(unsigned char *buf, size_t n, size_t pos, size_t m) {
    size_t l = strlen(near_misses[m]);
    if (l > n) return n;
    if (pos + l > n) pos = n - l;
    memcpy(buf + pos, near_misses[m], l);
    return n;
}

/* Valid text: code points of every length, with ASCII runs long enough to
   fill whole SIMD blocks. */
static size_t gen_text(unsigned char *buf, size_t target) {
    size_t n = 0, k, run;
    while (n + 4 <= target) {
        uint32_t cp, kind = rnd() % 6;
        if (kind == 0) cp = 0x20 + rnd() % 0x5F;
        else if (kind == 1) cp = 0x80 + rnd() % 0x780;
        else if (kind == 2) cp = 0x800 + rnd() % 0xF800;
        else if (kind == 3) cp = 0x10000 + rnd() % 0x100000;
        else if (kind == 4) cp = (rnd() % 2) ? 0x10FFFF : 0xD7FF;
        else {
            run = rnd() % 70;
            for (k = 0; k < run && n + 4 < target; k++) buf[n++] = (unsigned char)('a' + k % 26);
            continue;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
        n += encode_cp(cp, buf + n);
    }
    return n;
}

/* A JSON string body: text, escapes of every kind (some invalid), quotes
   and control bytes now and then. */
static size_t gen_json_string(unsigned char *buf, size_t target) {
    static const char *escapes[] = {"\\\"", "\\\\", "\\/", "\\n", "\\t", "\\u00e9", "\\u20AC", "\\ud83d\\ude00",
                                    "\\ud800", "\\udc00x", "\\x", "\\u12", "\"", "\x01"};
    size_t n = 0, e;
    while (n + 16 <= target) {
        if (rnd() % 8 == 0) {
            const char *s = escapes[rnd() % (sizeof escapes / sizeof escapes[0])];
            if (rnd() % 4 != 0 && (s[0] == '"' || s[0] == '\x01' || !strcmp(s, "\\x") || !strcmp(s, "\\u12"))) continue;
            e = strlen(s);
            memcpy(buf + n, s, e);
            n += e;
        } else {
            n += gen_text(buf + n, 4 + rnd() % 12);
        }
    }
    return n;
}

static size_t append(unsigned char *buf, size_t n, const char *s) {
    size_t l = strlen(s);
    memcpy(buf + n, s, l);
    return n + l;
}

/* An envelope, mostly well formed: {"type":"..","payload":{..}}. */
static size_t gen_envelope(unsigned char *buf, size_t target) {
    size_t n = 0;
    char num[32];
    n = append(buf, n, rnd() % 3 ? "{\"type\":\"" : "{ \"type\" : \"");
    n += gen_json_string(buf + n, 16 + rnd() % 24);
    n = append(buf, n, "\",\"payload\":{\"channel\":\"");
    n += gen_json_string(buf + n, 16 + rnd() % 40);
    snprintf(num, sizeof num, "\",\"n\":%u,\"text\":\"", (unsigned)(rnd() % 100000));
    n = append(buf, n, num);
    if (target > n + 24) n += gen_json_string(buf + n, target - n - 8);
    n = append(buf, n, rnd() % 2 ? "\"}}" : "\"} }");
    return n;
}

/* Corpus entry i: a deterministic function of the seed sequence. */
static size_t gen_input(unsigned char *buf, size_t i) {
    size_t n, pos, target = 8 + rnd() % (INPUT_MAX - 96);
    switch (i % 6) {
    case 0: /* valid text */
        return gen_text(buf, target);
    case 1: /* valid text with one byte replaced, dropped or inserted, or
               with a sequence that is almost valid written over it */
        n = gen_text(buf, target);
        if (n == 0) return 0;
        pos = rnd() % n;
        switch (rnd() % 4) {
        case 0: buf[pos] = edge_byte(); break;
        case 1: memmove(buf + pos, buf + pos + 1, n - pos - 1); n--; break;
        case 2: memmove(buf + pos + 1, buf + pos, n - pos); buf[pos] = edge_byte(); n++; break;
        default: return put_near_miss(buf, n, pos, rnd() % NEAR_MISSES);
        }
        return n;
    case 2: /* valid text with each near miss in turn written over it */
        n = gen_text(buf, target);
        return n ? put_near_miss(buf, n, rnd() % n, (i / 6) % NEAR_MISSES) : 0;
    case 3: /* bytes anywhere */
        for (n = 0; n < target; n++) buf[n] = (rnd() % 3) ? (unsigned char)('A' + rnd() % 26) : edge_byte();
        return n;
    case 4: /* an envelope */
        return gen_envelope(buf, target);
    default: /* an envelope with one byte changed */
        n = gen_envelope(buf, target);
        buf[rnd() % n] = edge_byte();
        return n;
    }
}

static unsigned char corpus[CORPUS_SIZE][INPUT_MAX];
static size_t corpus_len[CORPUS_SIZE];

static void make_corpus(void) {
    size_t i;
    for (i = 0; i < CORPUS_SIZE; i++) {
        corpus_len[i] = gen_input(corpus[i], i);
        if (corpus_len[i] > INPUT_MAX) abort(); /* a generator bug, not a library one */
    }
}

/* ---- UTF-8 ----------------------------------------------------------------- */

/* Reference validator, written from RFC 3629's table: the offset of the first
   byte that cannot continue a valid prefix, or NO_BAD; *complete says whether
   the input ends on a code point boundary. */
static size_t ref_utf8(const unsigned char *p, size_t len, int *complete) {
    size_t i = 0, need;
    unsigned c, lo, hi;
    *complete = 0;
    while (i < len) {
        c = p[i];
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { need = 1; lo = 0x80; hi = 0xBF; }
        else if (c == 0xE0) { need = 2; lo = 0xA0; hi = 0xBF; }
        else if (c == 0xED) { need = 2; lo = 0x80; hi = 0x9F; }
        else if (c >= 0xE1 && c <= 0xEF) { need = 2; lo = 0x80; hi = 0xBF; }
        else if (c == 0xF0) { need = 3; lo = 0x90; hi = 0xBF; }
        else if (c >= 0xF1 && c <= 0xF3) { need = 3; lo = 0x80; hi = 0xBF; }
        else if (c == 0xF4) { need = 3; lo = 0x80; hi = 0x8F; }
        else return i;
        for (i++; need > 0; need--, i++) {
            if (i == len) return NO_BAD;
            if (p[i] < lo || p[i] > hi) return i;
            lo = 0x80;
            hi = 0xBF;
        }
    }
    *complete = 1;
    return NO_BAD;
}

/* Feeds p in pieces ending at cuts[0..ncuts-1] (then the end); returns the
   absolute offset of the first bad byte or NO_BAD, and finish's verdict. */
static size_t utf8_pieces(const unsigned char *p, size_t len, const size_t *cuts, size_t ncuts, int *finish_ok) {
    wsch_utf8 v;
    size_t k, start = 0, end, off;
    v.state = 0;
    for (k = 0; k <= ncuts; k++) {
        end = k < ncuts ? cuts[k] : len;
        off = (size_t)-2;
        if (wsch_utf8_feed(&v, p + start, end - start, &off) != WSCH_OK) {
            *finish_ok = 0;
            return off == (size_t)-2 ? (size_t)-3 : start + off;
        }
        start = end;
    }
    *finish_ok = wsch_utf8_finish(&v) == WSCH_OK;
    return NO_BAD;
}

TEST utf8_every_split(void) {
    static unsigned char copy[INPUT_MAX + 16];
    size_t cuts[INPUT_MAX], i, k, len, bad, want, shift;
    int complete, ok;
    const unsigned char *p;
    for (i = 0; i < CORPUS_SIZE; i++) {
        len = corpus_len[i];
        /* at every alignment mod 16 in turn, so blocks start anywhere */
        shift = i % 16;
        memcpy(copy + shift, corpus[i], len);
        p = copy + shift;
        want = ref_utf8(p, len, &complete);
        bad = utf8_pieces(p, len, NULL, 0, &ok);
        if (bad != want || ok != (want == NO_BAD && complete)) {
            printf("\n  input %zu: bad %zu, reference %zu\n", i, bad, want);
            FAILm("whole input disagrees with the reference");
        }
        ASSERT_EQ(want == NO_BAD && complete, wsch_utf8_valid(p, len));
        put_u64(bad);
        put_int(ok);
        for (k = 0; k <= len; k++) {
            cuts[0] = k;
            bad = utf8_pieces(p, len, cuts, 1, &ok);
            if (bad != want) printf("\n  input %zu split at %zu: bad %zu, whole %zu\n", i, k, bad, want);
            ASSERT_EQm("split in two", want, bad);
            ASSERT_EQ(want == NO_BAD && complete, ok);
            put_u64(bad);
        }
        for (k = 0; k + 1 < len; k++) cuts[k] = k + 1;
        bad = utf8_pieces(p, len, cuts, len ? len - 1 : 0, &ok);
        ASSERT_EQm("one byte at a time", want, bad);
        put_u64(bad);
    }
    PASS();
}

/* ---- unmasking ------------------------------------------------------------ */

TEST mask_every_split(void) {
    static unsigned char orig[INPUT_MAX + 16], whole[INPUT_MAX + 16], parts[INPUT_MAX + 16];
    unsigned char key[4];
    size_t i, k, len, shift, off, j, pos, want_pos;
    for (i = 0; i < CORPUS_SIZE; i++) {
        len = corpus_len[i];
        shift = (i * 7) % 16;
        for (j = 0; j < 4; j++) key[j] = (unsigned char)rnd();
        off = rnd() % 4;
        memcpy(orig + shift, corpus[i], len);
        memcpy(whole, orig, sizeof whole);
        want_pos = wsch_mask(whole + shift, len, key, off);
        ASSERT_EQ((off + len) & 3, want_pos);
        for (j = 0; j < len; j++)
            if (whole[shift + j] != (orig[shift + j] ^ key[(off + j) & 3])) FAILm("masked byte differs from the reference");
        put_bytes(whole + shift, len);
        for (k = 0; k <= len; k++) {
            memcpy(parts, orig, sizeof parts);
            pos = wsch_mask(parts + shift, k, key, off);
            pos = wsch_mask(parts + shift + k, len - k, key, pos);
            ASSERT_EQ(want_pos, pos);
            ASSERT_MEM_EQm("split in two", whole, parts, sizeof whole);
        }
    }
    PASS();
}

/* ---- JSON ----------------------------------------------------------------- */

/* The envelope scan over every prefix of every input (a truncated message
   must be refused the same way, wherever the cut falls), and validation. */
TEST json_every_prefix(void) {
    wsch_envelope env;
    size_t i, k, len;
    int rc;
    for (i = 0; i < CORPUS_SIZE; i++) {
        len = corpus_len[i];
        for (k = 0; k <= len; k++) {
            /* a heap block of exactly the prefix: ASan sees any read past it */
            char *p = (char *)malloc(k ? k : 1);
            ASSERT(p != NULL);
            memcpy(p, corpus[i], k);
            memset(&env, 0, sizeof env);
            rc = wsch_envelope_decode(p, k, &env);
            put_int(rc);
            if (rc == WSCH_OK) {
                put_bytes(env.type, env.type_len);
                put_u64(env.payload.ptr ? (uint64_t)(env.payload.ptr - p) : (uint64_t)-1);
                put_u64(env.payload.len);
            }
            put_int(wsch_json_validate(p, k));
            free(p);
        }
    }
    PASS();
}

/* ---- a server connection -------------------------------------------------- */

typedef struct sink {
    unsigned char *out;
    size_t out_len, out_cap;
    wsch_sha1 events;   /* what happened, in order */
    int closed;
} sink;

static void ev_u64(sink *s, uint64_t v) {
    unsigned char b[8];
    int i;
    for (i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    wsch_sha1_update(&s->events, b, 8);
}

static size_t sink_send(const void *data, size_t len, void *user) {
    sink *s = (sink *)user;
    wire_append(&s->out, &s->out_len, &s->out_cap, data, len);
    return len;
}
static void sink_close(void *user) { ((sink *)user)->closed++; }
static void sink_random(void *buf, size_t len, void *user) {
    (void)user;
    memset(buf, 0x5A, len);
}
static void sink_on_message(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
    sink *s = (sink *)user;
    wsch_envelope env;
    int rc;
    (void)c;
    ev_u64(s, 1);
    ev_u64(s, (uint64_t)op);
    ev_u64(s, len);
    wsch_sha1_update(&s->events, data, len);
    rc = wsch_envelope_decode((const char *)data, len, &env);
    ev_u64(s, (uint64_t)(int64_t)rc);
    if (rc == WSCH_OK) {
        ev_u64(s, env.type_len);
        wsch_sha1_update(&s->events, env.type, env.type_len);
        ev_u64(s, env.payload.ptr ? (uint64_t)(env.payload.ptr - (const char *)data) : (uint64_t)-1);
        ev_u64(s, env.payload.len);
    }
}
static void sink_on_close(wsch_conn *c, int code, const char *reason, size_t len, void *user) {
    sink *s = (sink *)user;
    (void)c; (void)reason; (void)len;
    ev_u64(s, 2);
    ev_u64(s, (uint64_t)(int64_t)code);
}

static const char upgrade_request[] =
    "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/* Opens a server connection, feeds wire in pieces ending at cuts (copied
   first: the connection unmasks in place), and returns the digest of its
   events and of everything it wrote after the 101. */
static int conn_run(const wsch_conn_desc *desc, const unsigned char *wire, size_t len, const size_t *cuts,
                    size_t ncuts, unsigned char result[20]) {
    static unsigned char buf[2 * INPUT_MAX];
    char req[sizeof upgrade_request];
    sink s;
    wsch_conn *c;
    size_t k, start = 0, end, skip;
    int rc, first_error = WSCH_OK;
    memset(&s, 0, sizeof s);
    wsch_sha1_init(&s.events);
    memcpy(req, upgrade_request, sizeof req);
    if (wsch_conn_create(desc, &s, &c) != WSCH_OK) return 0;
    if (wsch_conn_feed(c, req, sizeof req - 1) != WSCH_OK || s.out_len < 12) {
        wsch_conn_destroy(c);
        free(s.out);
        return 0;
    }
    skip = s.out_len;
    memcpy(buf, wire, len);
    for (k = 0; k <= ncuts && !s.closed; k++) {
        end = k < ncuts ? cuts[k] : len;
        rc = wsch_conn_feed(c, buf + start, end - start);
        if (first_error == WSCH_OK) first_error = rc;
        start = end;
    }
    ev_u64(&s, 3);
    ev_u64(&s, (uint64_t)(int64_t)first_error);
    wsch_sha1_update(&s.events, s.out + skip, s.out_len - skip);
    wsch_sha1_final(&s.events, result);
    wsch_conn_destroy(c);
    free(s.out);
    return 1;
}

/* Each input as a text message of one to three masked frames (then a ping,
   so a message that fails leaves its trace in what follows), the wire split
   at every byte and fed one byte at a time: the same events each way. */
TEST conn_every_split(void) {
    static unsigned char wire[2 * INPUT_MAX];
    static wsch_conn_desc desc;
    unsigned char want[20], got[20];
    size_t cuts[2 * INPUT_MAX], i, k, n, len, a, b;
    unsigned frames;
    memset(&desc, 0, sizeof desc);
    desc.role = WSCH_ROLE_SERVER;
    desc.effects.send = sink_send;
    desc.effects.close = sink_close;
    desc.effects.random_bytes = sink_random;
    desc.on_message = sink_on_message;
    desc.on_close = sink_on_close;
    desc = wsch_conn_desc_defaults(&desc);
    for (i = 0; i < CORPUS_SIZE; i++) {
        len = corpus_len[i];
        frames = 1 + rnd() % 3;
        a = frames > 1 ? rnd() % (len + 1) : len;
        b = frames > 2 ? a + rnd() % (len - a + 1) : len;
        n = wire_frame(wire, frames > 1 ? 0x01 : 0x81, corpus[i], a, 1);
        if (frames > 1) n += wire_frame(wire + n, frames > 2 ? 0x00 : 0x80, corpus[i] + a, b - a, 1);
        if (frames > 2) n += wire_frame(wire + n, 0x80, corpus[i] + b, len - b, 1);
        n += wire_frame(wire + n, 0x89, "p", 1, 1);
        ASSERT(conn_run(&desc, wire, n, NULL, 0, want));
        wsch_sha1_update(&digest, want, 20);
        for (k = 0; k <= n; k++) {
            cuts[0] = k;
            ASSERT(conn_run(&desc, wire, n, cuts, 1, got));
            if (memcmp(want, got, 20) != 0) printf("\n  input %zu, wire split at %zu of %zu\n", i, k, n);
            ASSERT_MEM_EQm("events with the wire split in two", want, got, 20);
        }
        for (k = 0; k + 1 < n; k++) cuts[k] = k + 1;
        ASSERT(conn_run(&desc, wire, n, cuts, n - 1, got));
        ASSERT_MEM_EQm("events with the wire fed one byte at a time", want, got, 20);
    }
    PASS();
}

/* ---- the digest, against the scalar build's -------------------------------- */

static char digest_hex[41];

TEST same_digest_as_scalar(void) {
    const char *scalar = getenv("WSCH_SCALAR_DIGEST");
    ASSERT(scalar != NULL);
    ASSERT_STR_EQm("this build (" SIMD_PATH ") against the scalar build", scalar, digest_hex);
    PASS();
}

SUITE(simd_suite) {
    RUN_TEST(utf8_every_split);
    RUN_TEST(mask_every_split);
    RUN_TEST(json_every_prefix);
    RUN_TEST(conn_every_split);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    unsigned char d[20];
    size_t i;
    GREATEST_MAIN_BEGIN();
    make_corpus();
    wsch_sha1_init(&digest);
    RUN_SUITE(simd_suite);
    wsch_sha1_final(&digest, d);
    for (i = 0; i < 20; i++) snprintf(digest_hex + 2 * i, 3, "%02x", d[i]);
    printf("digest: %s (%s paths)\n", digest_hex, SIMD_PATH);
    if (getenv("WSCH_SCALAR_DIGEST")) RUN_TEST(same_digest_as_scalar);
    GREATEST_MAIN_END();
}
