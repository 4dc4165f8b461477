/* deflate - the zlib codec of examples/deflate_zlib.h in memory: compress
   and inflate throughput and the compression ratio on a chat corpus, with
   and without context takeover, called the way ws_channel.h calls a codec
   (one sync flush per message, the 00 00 FF FF tail stripped and put back).

   The corpus: BENCH_DEFLATE_MSGS (default 1,000) generated envelopes of the
   demo's shape, {"type":"message","payload":{"channel":...,"from":...,
   "data":{"text":...,"ts":...}}}, 90 to 400 bytes, from a fixed seed.
   Rows:
     takeover            one stream per direction for the whole corpus
     no takeover, reset  one stream, reset between messages (the hub's
                         compress-once stream, and what RFC 7692's
                         *_no_context_takeover ask for)
     no takeover, new    a stream created and destroyed per message (a
                         connection that holds no state between messages)
   each at window 15 / memory level 8 (zlib's defaults) and the first two
   at window 10 / memory level 4 (small memory). Every figure is the median
   of BENCH_REPS passes (default 5) of the thread's CPU time; MB/s count
   uncompressed bytes. Each pass checks that every message inflates back.

   Build: make -C bench (needs zlib1g-dev). Run: build/bench/deflate.
   Prints a markdown table. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include "deflate_zlib.h"
#include "bench_util.h"

typedef struct corpus {
    unsigned char **msg;
    size_t *len;
    size_t n, bytes;
} corpus;

static const char *const g_words[] = {"hello", "there", "the", "meeting", "is", "at", "noon", "ok", "thanks",
                                      "see", "you", "tomorrow", "deploy", "done", "lunch?", "on", "my", "way",
                                      "great", "work", "everyone", "build", "is", "green", "again", "ship", "it"};
static const char *const g_channels[] = {"general", "random", "dev", "ops", "design"};
static const char *const g_users[] = {"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"};

static void corpus_make(corpus *c, size_t n) {
    uint64_t seed = 42;
    size_t i;
    c->msg = (unsigned char **)calloc(n, sizeof *c->msg);
    c->len = (size_t *)calloc(n, sizeof *c->len);
    if (!c->msg || !c->len) exit(1);
    c->n = n;
    c->bytes = 0;
    for (i = 0; i < n; i++) {
        char text[400], buf[512];
        size_t tl = 0, words = 3 + (size_t)(bench_rand(&seed) % 40u);
        int len;
        while (words-- > 0) {
            const char *w = g_words[bench_rand(&seed) % (sizeof g_words / sizeof g_words[0])];
            size_t wl = strlen(w);
            if (tl + wl + 2 >= sizeof text) break;
            if (tl) text[tl++] = ' ';
            memcpy(text + tl, w, wl);
            tl += wl;
        }
        text[tl] = '\0';
        len = snprintf(buf, sizeof buf,
                       "{\"type\":\"message\",\"payload\":{\"channel\":\"%s\",\"from\":\"%s\","
                       "\"data\":{\"text\":\"%s\",\"ts\":%llu}}}",
                       g_channels[bench_rand(&seed) % 5u], g_users[bench_rand(&seed) % 8u], text,
                       (unsigned long long)(1700000000000ull + i * 1375u + bench_rand(&seed) % 1000u));
        if (len < 0 || (size_t)len >= sizeof buf) exit(1);
        c->msg[i] = (unsigned char *)malloc((size_t)len);
        if (!c->msg[i]) exit(1);
        memcpy(c->msg[i], buf, (size_t)len);
        c->len[i] = (size_t)len;
        c->bytes += (size_t)len;
    }
}

typedef enum mode { TAKEOVER, RESET, FRESH } mode;

/* One message through run() as the library calls it. Returns the bytes
   made, or (size_t)-1 on a failure. */
static size_t pump(const wsch_deflate_codec *k, void *s, const unsigned char *in, size_t n, int flush,
                   unsigned char *out, size_t cap) {
    size_t len = 0;
    for (;;) {
        size_t took = n, made = cap - len;
        if (k->run(s, in, &took, out + len, &made, flush, k->user) != 0) return (size_t)-1;
        in += took;
        n -= took;
        len += made;
        if (!n && len < cap) return len;
        if (len == cap) return (size_t)-1;      /* the buffers here are sized to never fill */
    }
}

static const unsigned char g_tail[4] = {0x00, 0x00, 0xFF, 0xFF};

typedef struct result {
    double comp_s, infl_s;      /* CPU seconds per pass over the corpus */
    size_t wire;                /* compressed bytes, tails stripped */
    int ok;
} result;

static void run_config(const corpus *c, mode m, int wbits, int mem, int reps, result *r) {
    const wsch_deflate_codec *k = deflate_zlib_codec();
    unsigned char *z = (unsigned char *)malloc(c->bytes + 64 * c->n + 64);
    unsigned char *back = (unsigned char *)malloc(1024);
    size_t *zl = (size_t *)calloc(c->n, sizeof *zl);
    double tc[64], ti[64];
    int rep;
    if (reps > 64) reps = 64;
    if (!z || !back || !zl) exit(1);
    r->ok = 1;
    for (rep = 0; rep < reps; rep++) {
        void *tx = NULL, *rx = NULL;
        size_t i, off = 0;
        double t0 = bench_cpu_now();
        if (m != FRESH) tx = k->create(1, wbits, mem, NULL, k->user);
        for (i = 0; i < c->n; i++) {
            size_t made;
            if (m == FRESH) tx = k->create(1, wbits, mem, NULL, k->user);
            else if (m == RESET && i) k->reset(tx, k->user);
            if (!tx) exit(1);
            made = pump(k, tx, c->msg[i], c->len[i], 1, z + off, c->len[i] + 64);
            if (made == (size_t)-1 || made < 4 || memcmp(z + off + made - 4, g_tail, 4) != 0) r->ok = 0;
            zl[i] = made - 4;
            off += made - 4;
            if (m == FRESH) k->destroy(tx, k->user);
        }
        if (m != FRESH) k->destroy(tx, k->user);
        tc[rep] = bench_cpu_now() - t0;
        r->wire = off;
        t0 = bench_cpu_now();
        off = 0;
        if (m != FRESH) rx = k->create(0, wbits, 8, NULL, k->user);
        for (i = 0; i < c->n; i++) {
            size_t a, b;
            if (m == FRESH) rx = k->create(0, wbits, 8, NULL, k->user);
            else if (m == RESET && i) k->reset(rx, k->user);
            if (!rx) exit(1);
            a = pump(k, rx, z + off, zl[i], 0, back, 1024);
            b = a == (size_t)-1 ? a : pump(k, rx, g_tail, 4, 0, back + a, 1024 - a);
            if (b == (size_t)-1 || a + b != c->len[i] || memcmp(back, c->msg[i], c->len[i]) != 0) r->ok = 0;
            off += zl[i];
            if (m == FRESH) k->destroy(rx, k->user);
        }
        if (m != FRESH) k->destroy(rx, k->user);
        ti[rep] = bench_cpu_now() - t0;
    }
    r->comp_s = bench_median(tc, (size_t)reps);
    r->infl_s = bench_median(ti, (size_t)reps);
    free(z);
    free(back);
    free(zl);
}

int main(void) {
    static const struct {
        const char *name;
        mode m;
        int wbits, mem;
    } rows[] = {
        {"takeover", TAKEOVER, 15, 8},
        {"no takeover, reset", RESET, 15, 8},
        {"no takeover, new stream", FRESH, 15, 8},
        {"takeover", TAKEOVER, 10, 4},
        {"no takeover, reset", RESET, 10, 4},
    };
    corpus c;
    size_t i, n = (size_t)bench_env_int("BENCH_DEFLATE_MSGS", 1000);
    int reps = bench_env_int("BENCH_REPS", 5), failed = 0;
    if (n < 1) n = 1;
    if (reps < 1) reps = 1;
    corpus_make(&c, n);
    printf("## permessage-deflate codec (bench/deflate.c: examples/deflate_zlib.h, zlib %s, level %d%s)\n\n",
           zlibVersion(), DEFLATE_ZLIB_LEVEL == Z_DEFAULT_COMPRESSION ? 6 : DEFLATE_ZLIB_LEVEL,
           DEFLATE_ZLIB_LEVEL == Z_DEFAULT_COMPRESSION ? ", zlib's default" : "");
    printf("%zu chat envelopes, %zu bytes (%.0f per message); median of %d passes, CPU time.\n\n", c.n, c.bytes,
           (double)c.bytes / (double)c.n, reps);
    printf("| context | window / mem level | bytes per message on the wire | ratio | compress MB/s | "
           "compress msg/s | inflate MB/s | inflate msg/s |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        result r;
        run_config(&c, rows[i].m, rows[i].wbits, rows[i].mem, reps, &r);
        if (!r.ok) failed = 1;
        printf("| %s%s | %d / %d | %.1f (from %.1f) | %.3f | %.1f | %.0f | %.1f | %.0f |\n", rows[i].name,
               r.ok ? "" : " (ROUND TRIP FAILED)", rows[i].wbits, rows[i].mem, (double)r.wire / (double)c.n,
               (double)c.bytes / (double)c.n, (double)r.wire / (double)c.bytes, (double)c.bytes / r.comp_s / 1e6,
               (double)c.n / r.comp_s, (double)c.bytes / r.infl_s / 1e6, (double)c.n / r.infl_s);
    }
    printf("\nratio = compressed / original (lower is better); the frame header (2 bytes at these sizes, +4 masked "
           "from a client) comes on top either way.\n");
    for (i = 0; i < c.n; i++) free(c.msg[i]);
    free(c.msg);
    free(c.len);
    if (failed) fprintf(stderr, "deflate: a message did not survive the round trip\n");
    return failed;
}
