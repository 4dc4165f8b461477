/* publish - CPU per chat publish through wsch_hub, in memory: the demo's own
   publish path, not a copy of it.

   examples/chat_server.c is compiled into this program (its main renamed),
   so its hooks (authenticate, on_message -> on_publish) run exactly as in
   the server. Two peers on in-memory transports (send takes everything and
   counts whole frames, no timers), alice and bob, both subscribed to
   "room". Each publish is one masked client text frame fed to alice's peer:
   the hub decodes the envelope, on_publish reads channel and data and
   broadcasts "message" to the 2 subscribers. Every frame is copied from a
   pristine buffer first (feeding unmasks in place); the copy alone is timed
   too and subtracted.

   Prints ns per publish (median of 5 samples of the thread's CPU time) and
   checks every publish reached both peers; four times, on the same run:
   plain (no positions, no history), with positions (each channel message
   numbered: chat_server --history 0), with history as chat_server keeps
   it by default (numbered, and the last 200 per channel kept), and with
   history and presence, chat_server's default, both peers subscribed
   with "presence":true. Every publish is followed by wsch_hub_flush(), as
   the POSIX loop (WS_CHANNEL_POSIX) ends each turn with it (a no-op without
   presence). Then presence on vs off alone, interleaved: 7 rounds of a
   fresh hub with history and presence off, then one with both on, one
   sample each; the ratio of the medians.
   Then the heap a retained message costs: 10,000 chat messages kept on a
   channel nobody listens to, measured through chat_server's counting
   allocator (the library's own heap, nothing estimated). With an argument N it makes
   exactly N publishes untimed, for instruction counts:
       valgrind --tool=callgrind build/bench/publish 20000   (minus ... 0)
   Build: make -C bench (or see bench/Makefile). */
#define main chat_server_main
#include "../examples/chat_server.c"
#undef main
#include "bench_util.h"

/* Counts complete unmasked frames in a server->client byte stream. */
typedef struct frame_counter {
    unsigned char hdr[10];
    size_t hlen, need;
    uint64_t skip;
    unsigned long frames;
    int counting;                   /* 0 during the HTTP answer */
} frame_counter;

static void fc_feed(frame_counter *fc, const unsigned char *p, size_t len) {
    if (!fc->counting) return;
    while (len) {
        if (fc->skip) {
            uint64_t n = fc->skip < len ? fc->skip : len;
            fc->skip -= n;
            p += n;
            len -= (size_t)n;
            continue;
        }
        fc->hdr[fc->hlen++] = *p++;
        len--;
        if (fc->hlen == 2) fc->need = 2u + ((fc->hdr[1] & 0x7Fu) == 126 ? 2u : (fc->hdr[1] & 0x7Fu) == 127 ? 8u : 0u);
        if (fc->hlen >= 2 && fc->hlen == fc->need) {
            uint64_t plen = fc->hdr[1] & 0x7Fu;
            size_t i;
            if (plen == 126) plen = ((uint64_t)fc->hdr[2] << 8) | fc->hdr[3];
            else if (plen == 127)
                for (plen = 0, i = 0; i < 8; i++) plen = (plen << 8) | fc->hdr[2 + i];
            fc->frames++;
            fc->skip = plen;
            fc->hlen = 0;
        }
    }
}

static frame_counter to_alice, to_bob;
static wsch_hub_peer alice, bob;
static unsigned long closes;

static size_t mem_send(const void *data, size_t len, void *user) {
    fc_feed((frame_counter *)user, (const unsigned char *)data, len);
    return len;
}
static void mem_close(void *user) { (void)user; closes++; }
static void fixed_random(void *buf, size_t len, void *user) {
    (void)user;
    memset(buf, 0xA5, len);
}
static uint64_t mem_now(void *user) {
    (void)user;
    return bench_now_ns() / 1000000u;
}

/* A masked client text frame (FIN, opcode 1); its length. */
static size_t client_frame(unsigned char *out, const char *payload) {
    static const unsigned char key[4] = {0x37, 0xFA, 0x21, 0x3D};
    size_t len = strlen(payload), n = 2, i;
    out[0] = 0x81;
    out[1] = (unsigned char)(0x80u | len);      /* payloads here are under 126 bytes */
    memcpy(out + n, key, 4);
    n += 4;
    for (i = 0; i < len; i++) out[n + i] = (unsigned char)((unsigned char)payload[i] ^ key[i & 3]);
    return n + len;
}

static int feed_copy(wsch_hub_peer p, const void *data, size_t len) {
    unsigned char buf[1024];
    memcpy(buf, data, len);
    return wsch_hub_feed(A.hub, p, buf, len);
}

/* chat_server's hub without sockets: its hooks, in-memory effects,
   positions on or off, history_size messages kept per channel, and
   presence on (both peers asking for it) or off. */
static int setup(int positions, uint32_t history_size, int presence) {
    static const char upgrade[] =
        "GET /ws?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    static const char subscribe[] = "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"room\"}}";
    static const char subscribe_presence[] =
        "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"room\",\"presence\":true}}";
    wsch_hub_desc d;
    char req[512];
    unsigned char frame[128];
    size_t n;
    int who;
    memset(&d, 0, sizeof d);
    chat_hub_desc(&d);                      /* as chat_server's main() sets it up */
    d.effects.send = mem_send;
    d.effects.close = mem_close;
    d.effects.random_bytes = fixed_random;
    d.effects.now_ms = mem_now;
    d.history_size = history_size;
    d.positions = positions;
    d.presence = presence;
    memset(&to_alice, 0, sizeof to_alice);
    memset(&to_bob, 0, sizeof to_bob);
    closes = 0;
    if (wsch_hub_create(&d, &A.hub) != WSCH_OK) return -1;
    if (wsch_hub_accept(A.hub, NULL, &to_alice, &alice) != WSCH_OK) return -1;
    if (wsch_hub_accept(A.hub, NULL, &to_bob, &bob) != WSCH_OK) return -1;
    for (who = 0; who < 2; who++) {
        int len = snprintf(req, sizeof req, upgrade, who ? "bob" : "alice");
        (void)feed_copy(who ? bob : alice, req, (size_t)len);
    }
    to_alice.counting = to_bob.counting = 1;
    n = client_frame(frame, presence ? subscribe_presence : subscribe);
    if (feed_copy(alice, frame, n) != WSCH_OK || feed_copy(bob, frame, n) != WSCH_OK) return -1;
    (void)wsch_hub_flush(A.hub);
    /* "subscribed", each (the welcome left with the 101, before counting),
       and with presence the diff with both joins */
    if (to_alice.frames == 1u + (unsigned)presence && to_bob.frames == 1u + (unsigned)presence) return 0;
    fprintf(stderr, "publish: frames after setup: alice %lu, bob %lu\n", to_alice.frames, to_bob.frames);
    return -1;
}

static unsigned char pristine[256], work[256];
static size_t frame_len;
static unsigned long feed_errors;

static void publishes(unsigned long n) {
    unsigned long i;
    for (i = 0; i < n; i++) {
        memcpy(work, pristine, frame_len);
        __asm__ __volatile__("" ::: "memory");
        if (wsch_hub_feed(A.hub, alice, work, frame_len) != WSCH_OK) feed_errors++;
        (void)wsch_hub_flush(A.hub);       /* the end of the loop turn */
    }
}

static void copies(unsigned long n) {
    unsigned long i;
    for (i = 0; i < n; i++) {
        memcpy(work, pristine, frame_len);
        __asm__ __volatile__("" ::: "memory");
    }
}

/* Median ns per call of fn over 5 samples of iters calls. */
static double median_ns(void (*fn)(unsigned long), unsigned long iters) {
    double s[5];
    int k;
    for (k = 0; k < 5; k++) {
        double t0 = bench_cpu_now();
        fn(iters);
        s[k] = (bench_cpu_now() - t0) * 1e9 / (double)iters;
    }
    return bench_median(s, 5);
}

/* One configuration: ns per publish, or exactly n publishes untimed. Returns 0 when every publish reached both peers. */
static const char g_publish[] = "{\"type\":\"publish\",\"payload\":{\"channel\":\"room\",\"data\":{\"text\":"
                                "\"hello world, this is a chat message of typical size\"}}}";

static int run(int positions, uint32_t history_size, int presence, unsigned long fixed_n, const char *label) {
    unsigned long n = fixed_n, a0, b0;
    if (setup(positions, history_size, presence) != 0) {
        fprintf(stderr, "publish: setup failed\n");
        return 1;
    }
    frame_len = client_frame(pristine, g_publish);
    a0 = to_alice.frames;
    b0 = to_bob.frames;
    if (fixed_n) {
        publishes(n);
    } else {
        double t0 = bench_cpu_now(), ns_pub, ns_copy;
        unsigned long iters;
        publishes(20000);
        iters = (unsigned long)(20000 * 0.3 / (bench_cpu_now() - t0));
        ns_pub = median_ns(publishes, iters);
        ns_copy = median_ns(copies, iters);
        n = 20000 + 5 * iters;
        printf("chat publish (2 subscribers, %lu-byte frame), %s: %.1f ns per publish, %.1f ns per delivery "
               "(frame copy %.1f ns subtracted)\n",
               (unsigned long)frame_len, label, ns_pub - ns_copy, (ns_pub - ns_copy) / 2, ns_copy);
    }
    if (to_alice.frames - a0 != n || to_bob.frames - b0 != n || feed_errors || closes) {
        fprintf(stderr, "publish: FAIL: %lu publishes, alice got %lu, bob %lu, %lu feed errors, %lu closes\n", n,
                to_alice.frames - a0, to_bob.frames - b0, feed_errors, closes);
        return 1;
    }
    wsch_hub_destroy(A.hub);
    return 0;
}

/* Presence on vs off on the publish path, interleaved so drift on a
   shared machine hits both: rounds of a fresh hub with history and
   presence off, then one with both on (the subscribers asking for
   presence), one timed sample each after 20,000 untimed publishes. */
static int presence_pair(void) {
    enum { ROUNDS = 7 };
    double v[2][ROUNDS], med[2];
    unsigned long iters = 0;
    int k, p;
    for (k = 0; k < ROUNDS; k++) {
        for (p = 0; p < 2; p++) {
            unsigned long a0, b0, n;
            double t0;
            if (setup(1, 200, p) != 0) return 1;
            frame_len = client_frame(pristine, g_publish);
            a0 = to_alice.frames;
            b0 = to_bob.frames;
            t0 = bench_cpu_now();
            publishes(20000);
            if (!iters) iters = (unsigned long)(20000 * 0.1 / (bench_cpu_now() - t0)) + 1;
            t0 = bench_cpu_now();
            publishes(iters);
            v[p][k] = (bench_cpu_now() - t0) * 1e9 / (double)iters;
            n = 20000 + iters;
            if (to_alice.frames - a0 != n || to_bob.frames - b0 != n || feed_errors || closes) {
                fprintf(stderr, "publish: FAIL: presence %s: %lu publishes, alice got %lu, bob %lu\n", p ? "on" : "off",
                        n, to_alice.frames - a0, to_bob.frames - b0);
                return 1;
            }
            wsch_hub_destroy(A.hub);
        }
    }
    med[0] = bench_median(v[0], ROUNDS);
    med[1] = bench_median(v[1], ROUNDS);
    printf("presence on vs off, interleaved (%d rounds of fresh hubs in turn, history 200 in both, frame copy "
           "included): %.1f ns per publish off, %.1f on; CPU per publish on/off %.2fx, publishes per CPU second "
           "on/off %.2fx\n",
           ROUNDS, med[0], med[1], med[1] / med[0], med[0] / med[1]);
    return 0;
}

/* The library's heap per retained chat message: 10,000 kept on a channel
   with no subscribers, before and after, through the counting allocator. */
static int retained_heap(void) {
    static const char payload[] = "{\"channel\":\"quiet\",\"from\":\"alice\",\"data\":{\"text\":"
                                  "\"hello world, this is a chat message of typical size\"}}";
    const unsigned long n = 10000;
    wsch_hub_counters st;
    size_t before;
    unsigned long i;
    if (setup(1, 10000, 0) != 0) return 1;
    (void)wsch_hub_broadcast(A.hub, "quiet", "message", payload, WSCH_CSTR, NULL);   /* the channel itself */
    before = A.heap_bytes;
    for (i = 0; i < n; i++) {
        if (wsch_hub_broadcast(A.hub, "quiet", "message", payload, WSCH_CSTR, NULL) != WSCH_OK) return 1;
    }
    wsch_hub_stats(A.hub, &st);
    printf("history: %.1f bytes of heap per retained %lu-byte chat message (%lu kept; the hub counts %.1f "
           "against history_max_bytes)\n",
           (double)(A.heap_bytes - before) / (double)n, (unsigned long)strlen(payload) + 60u,
           (unsigned long)st.history_messages, (double)st.history_bytes / (double)st.history_messages);
    wsch_hub_destroy(A.hub);
    return st.history_messages == 10000u + 0u ? 0 : 1;
}

int main(int argc, char **argv) {
    int r;
    if (argc > 1) {
        r = run(0, 0, 0, strtoul(argv[1], NULL, 10), "plain");
    } else {
        r = run(0, 0, 0, 0, "plain (no positions, no history)");
        if (!r) r = run(1, 0, 0, 0, "positions, no history (chat_server --history 0)");
        if (!r) r = run(1, 200, 0, 0, "history (200 per channel, as chat_server keeps; chat_server --no-presence)");
        if (!r) r = run(1, 200, 1, 0, "history and presence (chat_server's default; both subscribers asked for presence)");
        if (!r) r = presence_pair();
        if (!r) r = retained_heap();
    }
    free(A.scratch);
    return r;
}
