/* inmem - in-memory benchmarks of ws_channel.h side by side with peers, in
   one process, no sockets: frame decode + unmask (+ UTF-8 for text) against
   memcpy and wslay, unmask and UTF-8 validation alone, the accept key, the
   envelope decoder against cJSON, server frame encode and the cost per extra
   subscriber of a broadcast, and heap per idle connection.

   Every figure is the median of BENCH_REPS samples (default 5) of about
   BENCH_SAMPLE_MS each (default 100; BENCH_QUICK=1 makes it 25) of the
   thread's CPU time (CLOCK_THREAD_CPUTIME_ID, so other processes taking the
   core do not count), contenders sampled in turn; a figure whose samples
   spread by more than 10% of the median is marked '~'.

   Fairness of the decode figures: each contender gets the bytes through
   exactly one copy out of a pristine buffer, standing in for recv(): ours
   (which unmasks in place and delivers pointers into the fed buffer) is
   memcpy + wsch_conn_feed; wslay reads them through its recv callback
   (which copies into its own buffer). memcpy of the same bytes is the limit.

   Build: see bench/Makefile. Prints markdown to stdout; with --targets FILE
   also writes "name|goal|measured|met" lines for run.sh's summary. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include "bench_util.h"

#include <malloc.h>
#include <wslay/wslay.h>
#include <cjson/cJSON.h>

/* libwebsockets' SHA-1 and base64 helpers (declared here so the bench does
   not pull in the whole lws header tree). */
unsigned char *lws_SHA1(const unsigned char *d, size_t n, unsigned char *md);
int lws_b64_encode_string(const char *in, int in_len, char *out, int out_size);

static int g_reps = 5;
static double g_sample_s = 0.1;
static FILE *g_targets;
static int g_failed;

typedef struct fig {
    double sec;     /* median seconds per iteration */
    double spread;  /* (max - min) / median */
} fig;

typedef void (*bench_fn)(void *ctx, size_t iters);

/* Times n contenders on the same context. Each is calibrated alone to about
   g_sample_s per sample; then the samples are taken round-robin (A B C A B
   C ...) so a disturbance from the rest of the machine hits all of them
   alike and the ratios stay meaningful. */
static void run_group(const bench_fn *fns, int n, void *ctx, fig *out) {
    double v[8][64], t0, t;
    size_t iters[8];
    int r, i, reps = g_reps < 64 ? g_reps : 64;
    for (i = 0; i < n && i < 8; i++) {
        iters[i] = 1;
        for (;;) { /* calibrate (also warms caches and branch predictors) */
            t0 = bench_cpu_now();
            fns[i](ctx, iters[i]);
            t = bench_cpu_now() - t0;
            if (t >= g_sample_s / 8 || iters[i] >= ((size_t)1 << 34)) break;
            iters[i] *= 2;
        }
        iters[i] = (size_t)((double)iters[i] * g_sample_s / (t > 1e-9 ? t : 1e-9));
        if (iters[i] < 1) iters[i] = 1;
    }
    for (r = 0; r < reps; r++) {
        for (i = 0; i < n && i < 8; i++) {
            t0 = bench_cpu_now();
            fns[i](ctx, iters[i]);
            v[i][r] = (bench_cpu_now() - t0) / (double)iters[i];
        }
    }
    for (i = 0; i < n && i < 8; i++) {
        out[i].spread = bench_spread(v[i], (size_t)reps);
        out[i].sec = bench_median(v[i], (size_t)reps);
    }
}

static void run_pair(bench_fn a, bench_fn b, void *ctx, fig *fa, fig *fb) {
    bench_fn fns[2];
    fig out[2];
    fns[0] = a;
    fns[1] = b;
    run_group(fns, 2, ctx, out);
    *fa = out[0];
    *fb = out[1];
}

/* "1234.5" or "1234.5~" (noisy) into a static ring of strings. */
static const char *fmt(double value, double spread, int digits) {
    static char ring[16][48];
    static int at;
    char *s = ring[at++ & 15];
    if (digits < 0) snprintf(s, 48, "%.3g", value);
    else snprintf(s, 48, "%.*f", digits, value);
    if (spread > 0.10) strcat(s, "~");
    return s;
}

static void target(const char *name, const char *goal, double measured, double need, int higher_better) {
    int met = higher_better ? measured >= need : measured <= need;
    if (g_targets) fprintf(g_targets, "%s|%s|%.2f|%s\n", name, goal, measured, met ? "yes" : "NO");
}

static void fail(const char *what) {
    fprintf(stderr, "inmem: FAILED: %s\n", what);
    g_failed = 1;
}

/* ---------------------------------------------------------------- frames */

static const char g_request[] =
    "GET /chat HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

static size_t sink_send(const void *data, size_t len, void *user) {
    (void)data;
    (void)user;
    return len;
}

static void sink_close(void *user) { (void)user; }

static void count_message(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
    (void)c;
    (void)op;
    (void)data;
    (void)len;
    ++*(size_t *)user;
}

/* An open server connection: the handshake request fed, the 101 swallowed. */
static wsch_conn *open_server_conn(const wsch_conn_desc *d, void *user) {
    wsch_conn *c = NULL;
    char req[sizeof g_request];
    memcpy(req, g_request, sizeof g_request);
    if (wsch_conn_create(d, user, &c) != WSCH_OK) return NULL;
    if (wsch_conn_feed(c, req, sizeof g_request - 1) != WSCH_OK || wsch_conn_state(c) != WSCH_STATE_OPEN) {
        wsch_conn_destroy(c);
        return NULL;
    }
    return c;
}

/* Payload kinds. */
enum { K_BINARY, K_TEXT, K_MIXED };

static void fill_payload(unsigned char *p, size_t n, int kind, uint64_t *rng) {
    static const char words[] = "the quick brown fox jumps over the lazy dog {\"type\":\"chat\",\"data\":42} ";
    static const char *seqs[] = {"a", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "z", "\xD0\x96", "\xE4\xB8\xAD"};
    size_t i = 0;
    if (kind == K_BINARY) {
        for (; i < n; i++) p[i] = (unsigned char)bench_rand(rng);
    } else if (kind == K_TEXT) {
        for (; i < n; i++) p[i] = (unsigned char)words[i % (sizeof words - 1)];
    } else {
        unsigned k = 0;
        while (i < n) {
            const char *s = seqs[k++ % 7];
            size_t l = strlen(s);
            if (i + l > n) s = "x", l = 1;
            memcpy(p + i, s, l);
            i += l;
        }
    }
}

/* Appends one masked client frame; returns its size. */
static size_t put_frame(unsigned char *out, int opcode, const unsigned char *payload, size_t n, uint64_t *rng) {
    wsch_frame_header h;
    size_t hl;
    uint64_t r = bench_rand(rng) & 0x7F7F7F7Fu; /* see dec_ours_inplace */
    memset(&h, 0, sizeof h);
    h.fin = 1;
    h.opcode = (uint8_t)opcode;
    h.masked = 1;
    h.payload_len = n;
    memcpy(h.mask_key, &r, 4);
    hl = wsch_frame_header_encode(out, &h);
    memcpy(out + hl, payload, n);
    wsch_mask(out + hl, n, h.mask_key, 0);
    return hl + n;
}

typedef struct decode_case {
    unsigned char *pristine, *work;
    size_t total, frames, size;
    int opcode;
    size_t msgs;            /* messages delivered, all contenders */
    size_t pos;             /* wslay's read position in pristine */
    size_t got;             /* wslay frame API: payload bytes of the current frame */
    wsch_conn_desc desc;
    wsch_conn *conn;
    wslay_event_context_ptr wev;
    wslay_frame_context_ptr wfr;
} decode_case;

static void dec_memcpy(void *vc, size_t iters) {
    decode_case *c = (decode_case *)vc;
    size_t i;
    for (i = 0; i < iters; i++) {
        memcpy(c->work, c->pristine, c->total);
        BENCH_CLOBBER(c->work);
    }
}

/* In place, without the copy: a masked frame unmasked twice is masked again,
   so feeding the same buffer over and over does the same work each time.
   Binary payloads do not care what they hold; ASCII text stays ASCII
   because every mask key byte is below 0x80 (see put_frame). */
static void dec_ours_inplace(void *vc, size_t iters) {
    decode_case *c = (decode_case *)vc;
    size_t i;
    for (i = 0; i < iters; i++) {
        if (wsch_conn_feed(c->conn, c->work, c->total) != WSCH_OK) {
            fail("wsch_conn_feed in place");
            return;
        }
    }
}

static void dec_ours(void *vc, size_t iters) {
    decode_case *c = (decode_case *)vc;
    size_t i;
    for (i = 0; i < iters; i++) {
        memcpy(c->work, c->pristine, c->total);
        if (wsch_conn_feed(c->conn, c->work, c->total) != WSCH_OK) {
            fail("wsch_conn_feed");
            return;
        }
    }
}

static ssize_t wslay_ev_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user) {
    decode_case *c = (decode_case *)user;
    size_t n = c->total - c->pos;
    (void)flags;
    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (n > len) n = len;
    memcpy(buf, c->pristine + c->pos, n);
    c->pos += n;
    return (ssize_t)n;
}

static ssize_t wslay_ev_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user) {
    (void)ctx;
    (void)data;
    (void)flags;
    (void)user;
    return (ssize_t)len;
}

static void wslay_ev_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user) {
    (void)ctx;
    (void)arg;
    ((decode_case *)user)->msgs++;
}

static void dec_wslay_event(void *vc, size_t iters) {
    decode_case *c = (decode_case *)vc;
    size_t i;
    for (i = 0; i < iters; i++) {
        c->pos = 0;
        if (wslay_event_recv(c->wev) != 0 || !wslay_event_want_read(c->wev)) {
            fail("wslay_event_recv");
            return;
        }
    }
}

static ssize_t wslay_fr_recv(uint8_t *buf, size_t len, int flags, void *user) {
    decode_case *c = (decode_case *)user;
    size_t n = c->total - c->pos;
    (void)flags;
    if (n == 0) return -1; /* no more bytes: wslay_frame_recv says WANT_READ */
    if (n > len) n = len;
    memcpy(buf, c->pristine + c->pos, n);
    c->pos += n;
    return (ssize_t)n;
}

static ssize_t wslay_fr_send(const uint8_t *data, size_t len, int flags, void *user) {
    (void)data;
    (void)flags;
    (void)user;
    return (ssize_t)len;
}

static void dec_wslay_frame(void *vc, size_t iters) {
    decode_case *c = (decode_case *)vc;
    struct wslay_frame_iocb io;
    size_t i;
    for (i = 0; i < iters; i++) {
        c->pos = 0;
        for (;;) {
            ssize_t r = wslay_frame_recv(c->wfr, &io);
            if (r == WSLAY_ERR_WANT_READ) break;
            if (r < 0) {
                fail("wslay_frame_recv");
                return;
            }
            c->got += io.data_length;
            if (c->got == io.payload_length) {
                c->msgs++;
                c->got = 0;
            }
        }
    }
}

static void decode_setup(decode_case *c, size_t size, int kind, uint64_t *rng) {
    unsigned char *payload = (unsigned char *)malloc(size ? size : 1);
    size_t cap, target_total = 64 * 1024, per;
    struct wslay_event_callbacks ecb;
    struct wslay_frame_callbacks fcb;
    memset(c, 0, sizeof *c);
    c->size = size;
    c->opcode = kind == K_BINARY ? WSCH_OP_BINARY : WSCH_OP_TEXT;
    per = size + WSCH_FRAME_HEADER_MAX;
    c->frames = target_total / per ? target_total / per : 1;
    cap = c->frames * per;
    c->pristine = (unsigned char *)malloc(cap);
    c->work = (unsigned char *)malloc(cap);
    fill_payload(payload, size, kind, rng);
    c->frames = 0;
    while (c->total + per <= cap) {
        c->total += put_frame(c->pristine + c->total, c->opcode, payload, size, rng);
        c->frames++;
    }
    free(payload);

    c->desc.role = WSCH_ROLE_SERVER;
    c->desc.effects.send = sink_send;
    c->desc.effects.close = sink_close;
    c->desc.on_message = count_message;
    c->conn = open_server_conn(&c->desc, &c->msgs);
    if (!c->conn) fail("open_server_conn");

    memset(&ecb, 0, sizeof ecb);
    ecb.recv_callback = wslay_ev_recv;
    ecb.send_callback = wslay_ev_send;
    ecb.on_msg_recv_callback = wslay_ev_msg;
    if (wslay_event_context_server_init(&c->wev, &ecb, c) != 0) fail("wslay_event_context_server_init");
    memset(&fcb, 0, sizeof fcb);
    fcb.recv_callback = wslay_fr_recv;
    fcb.send_callback = wslay_fr_send;
    if (wslay_frame_context_init(&c->wfr, &fcb, c) != 0) fail("wslay_frame_context_init");
}

static void decode_free(decode_case *c) {
    wsch_conn_destroy(c->conn);
    wslay_event_context_free(c->wev);
    wslay_frame_context_free(c->wfr);
    free(c->pristine);
    free(c->work);
}

/* Checks that a contender delivers every message of a buffer. */
static void check_delivery(bench_fn fn, decode_case *c, const char *who) {
    size_t before = c->msgs;
    fn(c, 3);
    if (c->msgs - before != 3 * c->frames) {
        fprintf(stderr, "inmem: %s delivered %zu messages, not %zu\n", who, c->msgs - before, 3 * c->frames);
        g_failed = 1;
    }
}

static const char *size_name(size_t n) {
    static char ring[8][32];
    static int at;
    char *s = ring[at++ & 7];
    if (n >= 1024 * 1024) snprintf(s, 32, "%zu MiB", n / (1024 * 1024));
    else if (n >= 1024) snprintf(s, 32, "%zu KiB", n / 1024);
    else snprintf(s, 32, "%zu B", n);
    return s;
}

static void bench_decode(uint64_t *rng) {
    static const size_t sizes[] = {16, 1024, 64 * 1024, 1024 * 1024};
    static const int kinds[] = {K_BINARY, K_TEXT, K_MIXED};
    static const char *kind_names[] = {"binary", "text (ASCII)", "text (mixed UTF-8)"};
    size_t s;
    int k;
    printf("### Decode + unmask of masked client frames (MB/s of wire bytes; text includes UTF-8 validation)\n\n");
    printf("Buffers hold whole frames: 64 KiB of them, or one frame when larger; on_message does nothing.\n"
           "- *ours in place*: wsch_conn_feed on the same buffer again and again (the library unmasks in place "
           "and hands out pointers into it; unmasking twice re-masks, so every pass does the same work). "
           "Compared with memcpy of the same bytes, the limit.\n"
           "- *ours copy+feed*: memcpy from a pristine buffer, then feed: the bytes arrive by one copy, as "
           "they do for wslay, whose recv callback copies them into its own buffer. Compared with wslay.\n"
           "- *wslay event*: wslay_event_recv (reassembles into a message, validates text); "
           "*wslay frame*: wslay_frame_recv (codec only, no UTF-8 check, no reassembly).\n\n");
    printf("| frames | memcpy | ours in place | ours copy+feed | wslay event | wslay frame | in place / memcpy "
           "| copy+feed / wslay event | ours msgs/s (in place) |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (k = 0; k < 3; k++) {
        for (s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            decode_case c;
            fig out[5];
            bench_fn fns[5];
            int mixed = kinds[k] == K_MIXED, n = 0;
            double mb;
            if (mixed && sizes[s] != 1024) continue;
            decode_setup(&c, sizes[s], kinds[k], rng);
            mb = (double)c.total / 1e6;
            check_delivery(dec_ours, &c, "ours");
            check_delivery(dec_wslay_event, &c, "wslay event");
            check_delivery(dec_wslay_frame, &c, "wslay frame");
            memcpy(c.work, c.pristine, c.total);
            if (!mixed) check_delivery(dec_ours_inplace, &c, "ours in place");
            fns[n++] = dec_memcpy;
            fns[n++] = dec_ours;
            fns[n++] = dec_wslay_event;
            fns[n++] = dec_wslay_frame;
            if (!mixed) fns[n++] = dec_ours_inplace;
            if (g_failed) {
                decode_free(&c);
                return;
            }
            run_group(fns, n, &c, out);
            printf("| %s %s | %s | %s | %s | %s | %s | %s | %.2fx | %s |\n", kind_names[k], size_name(sizes[s]),
                   fmt(mb / out[0].sec, out[0].spread, 0), mixed ? "-" : fmt(mb / out[4].sec, out[4].spread, 0),
                   fmt(mb / out[1].sec, out[1].spread, 0), fmt(mb / out[2].sec, out[2].spread, 0),
                   mixed ? "-" : fmt(mb / out[3].sec, out[3].spread, 0),
                   mixed ? "-" : fmt(out[0].sec / out[4].sec, 0, 2), out[2].sec / out[1].sec,
                   mixed ? "-" : fmt((double)c.frames / out[4].sec, out[4].spread, -1));
            if (kinds[k] == K_BINARY && sizes[s] == 64 * 1024)
                target("binary decode 64 KiB vs memcpy", ">= 0.8x", out[0].sec / out[4].sec, 0.8, 1);
            if (kinds[k] == K_TEXT && sizes[s] == 1024)
                target("text decode 1 KiB vs wslay", ">= 3x", out[2].sec / out[1].sec, 3.0, 1);
            decode_free(&c);
        }
    }
    printf("\n");
}

/* ------------------------------------------------- unmask, UTF-8 alone */

typedef struct buf_case {
    unsigned char *a, *b;
    size_t n;
    unsigned char key[4];
} buf_case;

static void b_memcpy(void *vc, size_t iters) {
    buf_case *c = (buf_case *)vc;
    size_t i;
    for (i = 0; i < iters; i++) {
        memcpy(c->b, c->a, c->n);
        BENCH_CLOBBER(c->b);
    }
}

static void b_mask(void *vc, size_t iters) {
    buf_case *c = (buf_case *)vc;
    size_t i;
    for (i = 0; i < iters; i++) {
        wsch_mask(c->a, c->n, c->key, 0);
        BENCH_CLOBBER(c->a);
    }
}

static void b_utf8(void *vc, size_t iters) {
    buf_case *c = (buf_case *)vc;
    size_t i;
    for (i = 0; i < iters; i++) {
        if (!wsch_utf8_valid(c->a, c->n)) {
            fail("wsch_utf8_valid");
            return;
        }
    }
}

static void bench_buffers(uint64_t *rng) {
    static const size_t sizes[] = {1024, 64 * 1024, 1024 * 1024};
    size_t s;
    printf("### Unmask and UTF-8 validation alone (MB/s)\n\n");
    printf("No peer exposes these as functions (wslay's and lws's are internal), so the reference is memcpy "
           "of the same bytes. Unmask works in place.\n\n");
    printf("| work | size | memcpy | ours | ours/memcpy |\n|---|---|---:|---:|---:|\n");
    for (s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int k;
        for (k = 0; k < 3; k++) {
            buf_case c;
            fig fm, fo;
            double mb;
            static const char *names[] = {"unmask", "UTF-8 valid, ASCII", "UTF-8 valid, mixed 1-4 byte"};
            c.n = sizes[s];
            c.a = (unsigned char *)malloc(c.n);
            c.b = (unsigned char *)malloc(c.n);
            fill_payload(c.a, c.n, k == 0 ? K_BINARY : k == 1 ? K_TEXT : K_MIXED, rng);
            memcpy(c.key, "\x12\x34\x56\x78", 4);
            mb = (double)c.n / 1e6;
            run_pair(b_memcpy, k == 0 ? b_mask : b_utf8, &c, &fm, &fo);
            printf("| %s | %s | %s | %s | %.2fx |\n", names[k], size_name(c.n), fmt(mb / fm.sec, fm.spread, 0),
                   fmt(mb / fo.sec, fo.spread, 0), fm.sec / fo.sec);
            if (k == 0 && c.n == 64 * 1024) target("unmask 64 KiB vs memcpy", ">= 0.9x", fm.sec / fo.sec, 0.9, 1);
            free(c.a);
            free(c.b);
        }
    }
    printf("\n");
}

/* ------------------------------------------------------------ accept key */

typedef struct key_case {
    char keys[64][25];
} key_case;

static void k_ours(void *vc, size_t iters) {
    key_case *c = (key_case *)vc;
    char out[WSCH_ACCEPT_LEN + 1];
    size_t i;
    for (i = 0; i < iters; i++) {
        wsch_accept_key(c->keys[i & 63], 24, out);
        BENCH_CLOBBER(out);
    }
}

static void k_lws(void *vc, size_t iters) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    key_case *c = (key_case *)vc;
    char buf[64], out[32];
    unsigned char md[20];
    size_t i;
    for (i = 0; i < iters; i++) { /* what lws does per handshake: key + GUID, SHA-1, base64 */
        memcpy(buf, c->keys[i & 63], 24);
        memcpy(buf + 24, guid, 36);
        lws_SHA1((const unsigned char *)buf, 60, md);
        lws_b64_encode_string((const char *)md, 20, out, (int)sizeof out);
        BENCH_CLOBBER(out);
    }
}

static void bench_accept(uint64_t *rng) {
    key_case c;
    fig fo, fl;
    char out1[WSCH_ACCEPT_LEN + 1], out2[32];
    size_t i;
    for (i = 0; i < 64; i++) {
        unsigned char raw[16];
        size_t j;
        for (j = 0; j < 16; j++) raw[j] = (unsigned char)bench_rand(rng);
        wsch_base64_encode(raw, 16, c.keys[i], sizeof c.keys[i], NULL);
    }
    /* Same answer from both, or the comparison means nothing. */
    wsch_accept_key(c.keys[0], 24, out1);
    {
        char buf[64];
        unsigned char md[20];
        memcpy(buf, c.keys[0], 24);
        memcpy(buf + 24, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
        lws_SHA1((const unsigned char *)buf, 60, md);
        lws_b64_encode_string((const char *)md, 20, out2, (int)sizeof out2);
        if (strcmp(out1, out2) != 0) fail("accept key differs from lws");
    }
    run_pair(k_ours, k_lws, &c, &fo, &fl);
    printf("### Other CPU work (operations/s)\n\n");
    printf("| work | ours | peer | peer value | ours/peer |\n|---|---:|---|---:|---:|\n");
    printf("| Sec-WebSocket-Accept (SHA-1 + base64) | %s | lws_SHA1 + lws_b64_encode_string | %s | %.2fx |\n",
           fmt(1.0 / fo.sec, fo.spread, -1), fmt(1.0 / fl.sec, fl.spread, -1), fl.sec / fo.sec);
}

/* -------------------------------------------------------------- envelope */

typedef struct env_case {
    const char *json;
    size_t len;
    int channel;            /* also look up payload.channel */
} env_case;

static void e_ours(void *vc, size_t iters) {
    env_case *c = (env_case *)vc;
    wsch_envelope env;
    char ch[128];
    size_t i, n;
    for (i = 0; i < iters; i++) {
        if (wsch_envelope_decode(c->json, c->len, &env) != WSCH_OK ||
            (c->channel && wsch_envelope_get_channel(env.payload, ch, sizeof ch, &n) != WSCH_OK)) {
            fail("wsch_envelope_decode");
            return;
        }
        BENCH_CLOBBER(&env);
        BENCH_CLOBBER(ch);
    }
}

static void e_cjson(void *vc, size_t iters) {
    env_case *c = (env_case *)vc;
    char ch[128], type[65];
    size_t i;
    for (i = 0; i < iters; i++) {
        cJSON *root = cJSON_ParseWithLength(c->json, c->len);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "type");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "payload");
        if (!cJSON_IsString(t) || !p) {
            fail("cJSON");
            cJSON_Delete(root);
            return;
        }
        snprintf(type, sizeof type, "%s", t->valuestring);
        if (c->channel) {
            const cJSON *chan = cJSON_GetObjectItemCaseSensitive(p, "channel");
            if (!cJSON_IsString(chan)) {
                fail("cJSON channel");
                cJSON_Delete(root);
                return;
            }
            snprintf(ch, sizeof ch, "%s", chan->valuestring);
        }
        BENCH_CLOBBER(type);
        BENCH_CLOBBER(ch);
        cJSON_Delete(root);
    }
}

static void bench_envelope(void) {
    static const char small[] = "{\"type\":\"publish\",\"payload\":{\"channel\":\"room-42\",\"data\":\"hello\"}}";
    static char big[4096];
    env_case c;
    fig fo, fc;
    int v, ch;
    size_t n = 0;
    n += (size_t)snprintf(big, sizeof big, "{\"type\":\"publish\",\"payload\":{\"channel\":\"room-42\",\"data\":{\"items\":[");
    for (v = 0; v < 20; v++)
        n += (size_t)snprintf(big + n, sizeof big - n, "%s{\"id\":%d,\"name\":\"caf\xC3\xA9 %d\",\"score\":%d.5}",
                              v ? "," : "", v, v, v * 7);
    n += (size_t)snprintf(big + n, sizeof big - n, "],\"note\":\"line\\nbreak \\u00e9\"}}}");
    for (v = 0; v < 2; v++) {
        for (ch = 0; ch < 2; ch++) {
            c.json = v ? big : small;
            c.len = v ? n : sizeof small - 1;
            c.channel = ch;
            run_pair(e_ours, e_cjson, &c, &fo, &fc);
            printf("| envelope decode%s, %zu B | %s | cJSON parse + lookups | %s | %.2fx |\n",
                   ch ? " + channel" : "", c.len, fmt(1.0 / fo.sec, fo.spread, -1),
                   fmt(1.0 / fc.sec, fc.spread, -1), fc.sec / fo.sec);
        }
    }
}

/* -------------------------------------------- broadcast encode and fanout */

typedef struct enc_case {
    unsigned char *payload, *out;
    size_t len, out_len;
    wslay_frame_context_ptr wfr;
} enc_case;

static void x_ours(void *vc, size_t iters) {
    enc_case *c = (enc_case *)vc;
    size_t i;
    for (i = 0; i < iters; i++) {
        wsch_shared *s;
        if (wsch_shared_create(NULL, WSCH_OP_TEXT, c->payload, c->len, &s) != WSCH_OK) {
            fail("wsch_shared_create");
            return;
        }
        BENCH_CLOBBER(s);
        wsch_shared_release(s);
    }
}

static ssize_t wslay_fr_collect(const uint8_t *data, size_t len, int flags, void *user) {
    enc_case *c = (enc_case *)user;
    (void)flags;
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return (ssize_t)len;
}

static void x_wslay(void *vc, size_t iters) {
    enc_case *c = (enc_case *)vc;
    size_t i;
    for (i = 0; i < iters; i++) {
        struct wslay_frame_iocb io;
        memset(&io, 0, sizeof io);
        io.fin = 1;
        io.opcode = WSLAY_TEXT_FRAME;
        io.payload_length = c->len;
        io.data = c->payload;
        io.data_length = c->len;
        c->out_len = 0;
        while (io.data_length > 0) {
            ssize_t r = wslay_frame_send(c->wfr, &io);
            if (r < 0) {
                fail("wslay_frame_send");
                return;
            }
            io.data += r;
            io.data_length -= (size_t)r;
        }
        BENCH_CLOBBER(c->out);
    }
}

#define FANOUT_N 1000

typedef struct fan_case {
    wsch_conn *conns[FANOUT_N];
    wslay_event_context_ptr wev[FANOUT_N];
    wsch_conn_desc desc;
    unsigned char payload[128];
    size_t msgs;
} fan_case;

static void f_ours(void *vc, size_t iters) {
    fan_case *c = (fan_case *)vc;
    size_t i, j;
    for (i = 0; i < iters; i++) {
        wsch_shared *s;
        if (wsch_shared_create(NULL, WSCH_OP_TEXT, c->payload, sizeof c->payload, &s) != WSCH_OK) {
            fail("wsch_shared_create");
            return;
        }
        for (j = 0; j < FANOUT_N; j++) {
            if (wsch_conn_send_shared(c->conns[j], s) != WSCH_OK) {
                fail("wsch_conn_send_shared");
                return;
            }
        }
        wsch_shared_release(s);
    }
}

static void f_wslay(void *vc, size_t iters) {
    fan_case *c = (fan_case *)vc;
    size_t i, j;
    for (i = 0; i < iters; i++) {
        struct wslay_event_msg m;
        m.opcode = WSLAY_TEXT_FRAME;
        m.msg = c->payload;
        m.msg_length = sizeof c->payload;
        for (j = 0; j < FANOUT_N; j++) {
            if (wslay_event_queue_msg(c->wev[j], &m) != 0 || wslay_event_send(c->wev[j]) != 0) {
                fail("wslay_event_queue_msg/send");
                return;
            }
        }
    }
}

static void bench_broadcast(uint64_t *rng) {
    static const size_t sizes[] = {128, 16 * 1024};
    size_t s, j;
    fan_case *fc;
    struct wslay_event_callbacks ecb;
    struct wslay_frame_callbacks fcb;
    fig fo, fw;
    for (s = 0; s < 2; s++) {
        enc_case c;
        c.len = sizes[s];
        c.payload = (unsigned char *)malloc(c.len);
        c.out = (unsigned char *)malloc(c.len + 16);
        fill_payload(c.payload, c.len, K_TEXT, rng);
        memset(&fcb, 0, sizeof fcb);
        fcb.send_callback = wslay_fr_collect;
        fcb.recv_callback = wslay_fr_recv;
        wslay_frame_context_init(&c.wfr, &fcb, &c);
        run_pair(x_ours, x_wslay, &c, &fo, &fw);
        printf("| server frame encode for broadcast, %s payload (MB/s) | %s | wslay_frame_send into a buffer | %s | "
               "%.2fx |\n",
               size_name(c.len), fmt((double)c.len / 1e6 / fo.sec, fo.spread, 0),
               fmt((double)c.len / 1e6 / fw.sec, fw.spread, 0), fw.sec / fo.sec);
        wslay_frame_context_free(c.wfr);
        free(c.payload);
        free(c.out);
    }

    fc = (fan_case *)calloc(1, sizeof *fc);
    fill_payload(fc->payload, sizeof fc->payload, K_TEXT, rng);
    fc->desc.role = WSCH_ROLE_SERVER;
    fc->desc.effects.send = sink_send;
    fc->desc.effects.close = sink_close;
    fc->desc.on_message = count_message;
    memset(&ecb, 0, sizeof ecb);
    ecb.recv_callback = wslay_ev_recv;
    ecb.send_callback = wslay_ev_send;
    for (j = 0; j < FANOUT_N; j++) {
        fc->conns[j] = open_server_conn(&fc->desc, &fc->msgs);
        if (!fc->conns[j]) fail("open_server_conn");
        if (wslay_event_context_server_init(&fc->wev[j], &ecb, NULL) != 0) fail("wslay init");
    }
    if (!g_failed) {
        run_pair(f_ours, f_wslay, fc, &fo, &fw);
        printf("| broadcast of 128 B, cost per extra subscriber (ns; lower is better) | %s | "
               "wslay_event_queue_msg + wslay_event_send per subscriber | %s | %.2fx |\n",
               fmt(fo.sec * 1e9 / FANOUT_N, fo.spread, 1), fmt(fw.sec * 1e9 / FANOUT_N, fw.spread, 1),
               fw.sec / fo.sec);
    }
    for (j = 0; j < FANOUT_N; j++) {
        wsch_conn_destroy(fc->conns[j]);
        wslay_event_context_free(fc->wev[j]);
    }
    free(fc);
    printf("\nThe per-subscriber figure uses a send() that accepts everything at once, so it is the library's own "
           "cost; a real socket adds a send() system call per subscriber (about 1-2 us).\n\n");
}

/* ---------------------------------------------------------------- memory */

typedef struct counting {
    size_t live, peak, calls;
} counting;

static void *count_alloc(size_t size, void *user) {
    counting *c = (counting *)user;
    size_t *p = (size_t *)malloc(size + 16);
    if (!p) return NULL;
    p[0] = size;
    c->live += size;
    c->calls++;
    if (c->live > c->peak) c->peak = c->live;
    return (char *)p + 16;
}

static void count_free(void *ptr, void *user) {
    counting *c = (counting *)user;
    size_t *p = (size_t *)((char *)ptr - 16);
    c->live -= p[0];
    free(p);
}

static size_t heap_in_use(void) {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks;
}

static void bench_memory(void) {
    enum { N = 1000 };
    static wsch_conn *conns[N];
    static wslay_event_context_ptr wev[N];
    counting cnt;
    wsch_conn_desc d;
    struct wslay_event_callbacks ecb;
    size_t msgs = 0, before, ours_malloc, wslay_malloc, i, handshake_peak;
    memset(&cnt, 0, sizeof cnt);
    memset(&d, 0, sizeof d);
    d.role = WSCH_ROLE_SERVER;
    d.effects.send = sink_send;
    d.effects.close = sink_close;
    d.on_message = count_message;
    d.allocator.alloc = count_alloc;
    d.allocator.free = count_free;
    d.allocator.user = &cnt;
    conns[0] = open_server_conn(&d, &msgs);
    if (!conns[0]) {
        fail("open_server_conn (counting)");
        return;
    }
    handshake_peak = cnt.peak;
    printf("### Memory in process\n\n");
    printf("| measure | ours | wslay |\n|---|---:|---:|\n");
    printf("| library heap per idle open server connection, counting allocator (bytes requested) | %zu | - |\n",
           cnt.live);
    target("library heap per idle open server conn (bytes)", "<= 512", (double)cnt.live, 512, 0);
    printf("| peak heap during the opening handshake (bytes requested) | %zu | - |\n", handshake_peak);
    wsch_conn_destroy(conns[0]);
    if (cnt.live != 0) fail("conn leaked");

    d.allocator.alloc = NULL;
    d.allocator.free = NULL;
    before = heap_in_use();
    for (i = 0; i < N; i++) conns[i] = open_server_conn(&d, &msgs);
    ours_malloc = (heap_in_use() - before) / N;
    memset(&ecb, 0, sizeof ecb);
    ecb.recv_callback = wslay_ev_recv;
    ecb.send_callback = wslay_ev_send;
    before = heap_in_use();
    for (i = 0; i < N; i++) wslay_event_context_server_init(&wev[i], &ecb, NULL);
    wslay_malloc = (heap_in_use() - before) / N;
    printf("| malloc'd bytes per idle connection, glibc headers included (mallinfo2 over %d) | %zu | %zu |\n", N,
           ours_malloc, wslay_malloc);
    for (i = 0; i < N; i++) {
        wsch_conn_destroy(conns[i]);
        wslay_event_context_free(wev[i]);
    }
    printf("\nwslay's figure is its event context alone: it does no handshake, so a server adds its own state "
           "for that.\n\n");
}

int main(int argc, char **argv) {
    uint64_t rng = 0x9E3779B97F4A7C15u;
    int i;
    const char *only = NULL;
    g_reps = bench_env_int("BENCH_REPS", 5);
    if (g_reps < 1) g_reps = 1;
    g_sample_s = bench_env_int("BENCH_QUICK", 0) ? 0.025 : 0.1;
    if (bench_env_int("BENCH_SAMPLE_MS", 0) > 0) g_sample_s = bench_env_int("BENCH_SAMPLE_MS", 0) / 1000.0;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--targets") == 0 && i + 1 < argc) {
            g_targets = fopen(argv[++i], "a");
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else {
            fprintf(stderr, "usage: inmem [--targets FILE] [--only decode|buffers|cpu|memory]\n");
            return 2;
        }
    }
    printf("## In memory (median of %d samples of %.0f ms of thread CPU time, contenders in turn; ~ = spread > "
           "10%%)\n\n",
           g_reps, g_sample_s * 1000);
    if (!only || strcmp(only, "decode") == 0) bench_decode(&rng);
    if (!only || strcmp(only, "buffers") == 0) bench_buffers(&rng);
    if (!only || strcmp(only, "cpu") == 0) {
        bench_accept(&rng);
        bench_envelope();
        bench_broadcast(&rng);
    }
    if (!only || strcmp(only, "memory") == 0) bench_memory();
    fflush(stdout);
    if (g_targets) fclose(g_targets);
    return g_failed ? 1 : 0;
}
