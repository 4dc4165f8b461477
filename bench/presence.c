/* presence - the hub's presence in memory: what 10,000 users joining one
   channel cost in bytes sent, presence messages and time, with presence
   on and off, and the heap a member takes.

   examples/chat_server.c is compiled in (its main renamed, as in
   publish.c and deflate_hub.c), so its hooks and counting allocator run
   as in the server, and the hub gets chat_server's desc as its main()
   sets it up by default: history 200 per channel, positions, presence on
   with the hub's defaults (presence_max_members 1000,
   presence_stats_interval_ms 1000). Peers are in-memory transports that
   take every byte and count it, by message type; the clock is a fake one
   the program moves.

   A run: N peers (BENCH_PRESENCE_USERS, default 10,000), each its own
   user ("user00000" ...), upgrade first (not counted). Then the measured
   part: they subscribe to "room", K subscribes per loop turn, each turn
   ended by wsch_hub_flush() and the clock moved on (1 ms per turn unless
   a row says otherwise), as the POSIX loop (WS_CHANNEL_POSIX) runs it; after the last
   join, the loop "sleeps" as long as flush asks (counts held back by
   presence_stats_interval_ms) until it asks nothing. Counted: every byte
   the hub sent to any peer from the first subscribe on (frame headers
   included: the confirmations, with the members or counts in them, and
   the presence messages), the presence messages the hub encoded (one per
   changed channel and flush) and delivered (one per recipient), the wall
   and CPU time of the whole part (the transports' counting included).
   "on": subscribes with "presence":true; "off": the hub without presence
   (chat_server --no-presence), plain subscribes. Each row's time is the
   median of BENCH_REPS runs (default 3), each on a fresh hub; its bytes
   are the same in every run (checked).

   Heap: the growth of the library's heap (chat_server's counting
   allocator: requested sizes, malloc's own overhead not included) over
   the joins, divided by N: presence off, presence on with plain
   subscribes (members tracked, nobody told), and on with every subscriber
   asking. The differences are a (channel, user) member's heap, and a
   presence subscriber's.

   Prints markdown; --targets FILE appends "(reported)" lines in run.sh's
   "name|goal|measured|met" form. Exit 1 on any inconsistency. Build:
   make -C bench. */
#define main chat_server_main
#include "../examples/chat_server.c"
#undef main
#include "bench_util.h"

/* ---- an in-memory peer that counts ----------------------------------------- */

enum { K_WELCOME, K_SUBSCRIBED, K_DIFF, K_LIST, K_STATS, K_OTHER, K_COUNT };
static const char *const g_kind_type[K_COUNT] = {"welcome", "subscribed", "presence_diff", "presence",
                                                 "presence_stats", NULL};
static uint64_t g_frames[K_COUNT], g_bytes[K_COUNT];

#define PRE 32u         /* payload bytes kept to tell a message's type */

typedef struct sink {
    uint8_t head_match;         /* bytes of "\r\n\r\n" matched at the end of the HTTP answer */
    uint8_t head_done;
    uint8_t hlen, need;
    unsigned char hdr[10];
    char pre[PRE];
    uint32_t pre_len, pre_want;
    uint64_t skip;              /* payload bytes still to come after the kept ones */
    uint64_t flen;              /* the current frame's bytes, header included */
} sink;

static unsigned long g_closes, g_failures;

static void fail(const char *what) {
    fprintf(stderr, "presence: FAIL: %s\n", what);
    g_failures++;
}

static void classify(sink *s) {
    static const char lead[] = "{\"type\":\"";
    size_t ll = sizeof lead - 1;
    int k = K_OTHER, i;
    if (s->pre_len > ll && memcmp(s->pre, lead, ll) == 0) {
        for (i = 0; i < K_OTHER; i++) {
            size_t tl = strlen(g_kind_type[i]);
            if (s->pre_len >= ll + tl + 1 && memcmp(s->pre + ll, g_kind_type[i], tl) == 0 && s->pre[ll + tl] == '"') {
                k = i;
                break;
            }
        }
    }
    g_frames[k]++;
    g_bytes[k] += s->flen;
}

static void sink_frames(sink *s, const unsigned char *p, size_t len) {
    while (len) {
        if (s->pre_len < s->pre_want) {
            size_t n = s->pre_want - s->pre_len < len ? s->pre_want - s->pre_len : len;
            memcpy(s->pre + s->pre_len, p, n);
            s->pre_len += (uint32_t)n;
            p += n;
            len -= n;
            if (s->pre_len == s->pre_want) classify(s);
            continue;
        }
        if (s->skip) {
            uint64_t n = s->skip < len ? s->skip : len;
            s->skip -= n;
            p += n;
            len -= (size_t)n;
            continue;
        }
        s->hdr[s->hlen++] = *p++;
        len--;
        if (s->hlen == 2) s->need = (uint8_t)(2u + ((s->hdr[1] & 0x7Fu) == 126 ? 2u : (s->hdr[1] & 0x7Fu) == 127 ? 8u : 0u));
        if (s->hlen >= 2 && s->hlen == s->need) {
            uint64_t plen = s->hdr[1] & 0x7Fu;
            size_t i;
            if (plen == 126) plen = ((uint64_t)s->hdr[2] << 8) | s->hdr[3];
            else if (plen == 127)
                for (plen = 0, i = 0; i < 8; i++) plen = (plen << 8) | s->hdr[2 + i];
            s->flen = s->need + plen;
            s->pre_len = 0;
            s->pre_want = (uint32_t)(plen < PRE ? plen : PRE);
            s->skip = plen - s->pre_want;
            s->hlen = 0;
            if (!s->pre_want) classify(s);
        }
    }
}

static size_t mem_send(const void *data, size_t len, void *user) {
    sink *s = (sink *)user;
    const unsigned char *p = (const unsigned char *)data;
    size_t n = len;
    while (n && !s->head_done) {
        static const char end[] = "\r\n\r\n";
        s->head_match = (uint8_t)(*p == (unsigned char)end[s->head_match] ? s->head_match + 1 : *p == '\r');
        p++;
        n--;
        if (s->head_match == 4) s->head_done = 1;
    }
    if (n) sink_frames(s, p, n);
    return len;
}

static void mem_close(void *user) {
    (void)user;
    g_closes++;
}

static void fixed_random(void *buf, size_t len, void *user) {
    (void)user;
    memset(buf, 0xA5, len);
}

static uint64_t g_now_us;       /* the fake clock */

static uint64_t mem_now(void *user) {
    (void)user;
    return g_now_us / 1000u;
}

/* ---- what the clients send -------------------------------------------------- */

/* A masked client text frame (payloads here are under 126 bytes); its length. */
static size_t client_frame(unsigned char *out, const char *payload) {
    static const unsigned char key[4] = {0x37, 0xFA, 0x21, 0x3D};
    size_t len = strlen(payload), n = 2, i;
    out[0] = 0x81;
    out[1] = (unsigned char)(0x80u | len);
    memcpy(out + n, key, 4);
    n += 4;
    for (i = 0; i < len; i++) out[n + i] = (unsigned char)((unsigned char)payload[i] ^ key[i & 3]);
    return n + len;
}

/* Feeds a copy: the hub unmasks in place. */
static int feed(wsch_hub_peer p, const void *data, size_t len) {
    unsigned char buf[1024];
    memcpy(buf, data, len);
    return wsch_hub_feed(A.hub, p, buf, len);
}

/* ---- one run ------------------------------------------------------------------ */

typedef struct row {
    const char *label;
    size_t per_turn;            /* joins per loop turn */
    uint32_t us_per_turn;       /* the clock's move per turn */
    int presence;               /* 0 off, 1 on with plain subscribes, 2 on and every subscriber asks */
    size_t cap;                 /* presence_max_members, 0: the default */
    int reps;                   /* 0: BENCH_REPS */
    /* results */
    uint64_t bytes, kind_frames[K_COUNT], kind_bytes[K_COUNT];
    uint64_t encoded, sent, turns, sleeps;
    double wall_ms, cpu_ms, wall_spread, cpu_spread;
    double heap_per_user;
} row;

static sink *g_sinks;
static wsch_hub_peer *g_peers;
static size_t g_users;

static int make_hub(const row *r) {
    wsch_hub_desc d;
    memset(&d, 0, sizeof d);
    /* as chat_server's main() sets it up by default (no deflate: no client offers it here) */
    d.history_size = HISTORY_SIZE;
    d.history_ttl_ms = HISTORY_AGE_S * 1000u;
    d.positions = 1;
    d.presence = r->presence != 0;
    d.presence_max_members = r->cap;
    d.idle_timeout_ms = IDLE_TIMEOUT_MS;
    chat_hub_desc(&d);
    d.effects.send = mem_send;
    d.effects.close = mem_close;
    d.effects.random_bytes = fixed_random;
    d.effects.now_ms = mem_now;
    return wsch_hub_create(&d, &A.hub) == WSCH_OK ? 0 : -1;
}

static void drop_hub(void) {
    unsigned long closes = g_closes;            /* destroy closes every peer: those do not count */
    wsch_hub_destroy(A.hub);
    g_closes = closes;
    A.hub = NULL;
    if (A.heap_bytes != 0) fail("library heap not all freed with the hub");
}

/* One run of r on a fresh hub: 0, or -1 on a failure. */
static int run_once(row *r, double *wall_ms, double *cpu_ms, double *heap_per_user) {
    static const char upgrade[] =
        "GET /ws?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    static const char sub_plain[] = "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"room\"}}";
    static const char sub_pres[] = "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"room\",\"presence\":true}}";
    unsigned char frame[128];
    size_t i, frame_len, heap0, users = 0, conns = 0;
    wsch_hub_counters st;
    uint32_t wait = 0;
    double w0, c0;
    int k;
    g_now_us = 1000000u;
    if (make_hub(r) != 0) {
        fail("hub");
        return -1;
    }
    memset(g_sinks, 0, g_users * sizeof *g_sinks);
    for (i = 0; i < g_users; i++) {
        char user[32], req[512];
        int n;
        snprintf(user, sizeof user, "user%05lu", (unsigned long)i);
        n = snprintf(req, sizeof req, upgrade, user);
        if (wsch_hub_accept(A.hub, NULL, &g_sinks[i], &g_peers[i]) != WSCH_OK ||
            feed(g_peers[i], req, (size_t)n) != WSCH_OK || !g_sinks[i].head_done) {
            fail("a peer did not upgrade");
            return -1;
        }
    }
    (void)wsch_hub_flush(A.hub);
    for (k = 0; k < K_COUNT; k++) g_frames[k] = g_bytes[k] = 0;
    frame_len = client_frame(frame, r->presence == 2 ? sub_pres : sub_plain);
    r->turns = r->sleeps = 0;
    heap0 = A.heap_bytes;
    w0 = bench_now();
    c0 = bench_cpu_now();
    for (i = 0; i < g_users;) {
        size_t j;
        for (j = 0; j < r->per_turn && i < g_users; j++, i++)
            if (feed(g_peers[i], frame, frame_len) != WSCH_OK) fail("a subscribe was not taken");
        wait = wsch_hub_flush(A.hub);
        r->turns++;
        g_now_us += r->us_per_turn;
    }
    /* Nothing else happens: the loop sleeps as long as flush asks. */
    while (wait && r->sleeps < 1000) {
        g_now_us += (uint64_t)wait * 1000u;
        wait = wsch_hub_flush(A.hub);
        r->sleeps++;
    }
    *cpu_ms = (bench_cpu_now() - c0) * 1e3;
    *wall_ms = (bench_now() - w0) * 1e3;
    *heap_per_user = ((double)A.heap_bytes - (double)heap0) / (double)g_users;
    if (wait) fail("flush still asks to be called again");
    wsch_hub_stats(A.hub, &st);
    r->encoded = st.presence_messages;
    r->sent = st.presence_sent;
    r->bytes = 0;
    for (k = 0; k < K_COUNT; k++) {
        r->kind_frames[k] = g_frames[k];
        r->kind_bytes[k] = g_bytes[k];
        r->bytes += g_bytes[k];
    }
    /* Every peer confirmed, nothing else but presence sent, every presence
       delivery the hub counted seen here, and the members all in. */
    if (g_frames[K_SUBSCRIBED] != g_users || g_frames[K_WELCOME] || g_frames[K_OTHER] || g_closes)
        fail("peers got other messages than one confirmation each and presence");
    if (g_frames[K_DIFF] + g_frames[K_LIST] + g_frames[K_STATS] != st.presence_sent)
        fail("presence messages seen differ from the hub's presence_sent");
    if (r->presence) {
        if (wsch_hub_presence_counts(A.hub, "room", &users, &conns) != WSCH_OK || users != g_users ||
            conns != g_users || st.presence_members != g_users)
            fail("not every user is a member");
    } else if (st.presence_sent || st.presence_members) {
        fail("presence sent or tracked while off");
    }
    drop_hub();
    return g_failures ? -1 : 0;
}

static int run_row(row *r, int reps) {
    double wall[64], cpu[64], heap = 0;
    uint64_t bytes0 = 0, sent0 = 0;
    int k, n = r->reps ? r->reps : reps;
    if (n > 64) n = 64;
    for (k = 0; k < n; k++) {
        if (run_once(r, &wall[k], &cpu[k], &heap) != 0) return -1;
        if (k && (r->bytes != bytes0 || r->sent != sent0)) {
            fail("bytes or deliveries differ between runs of one row");
            return -1;
        }
        bytes0 = r->bytes;
        sent0 = r->sent;
        fprintf(stderr, "presence: %s, %lu per turn: %.1f ms CPU\n", r->label, (unsigned long)r->per_turn, cpu[k]);
    }
    r->heap_per_user = heap;
    r->wall_spread = bench_spread(wall, (size_t)n);
    r->cpu_spread = bench_spread(cpu, (size_t)n);
    r->wall_ms = bench_median(wall, (size_t)n);
    r->cpu_ms = bench_median(cpu, (size_t)n);
    return 0;
}

/* ---- report ------------------------------------------------------------------- */

static const char *mb(uint64_t b, char *buf, size_t cap) {
    if (b >= 10000000u) snprintf(buf, cap, "%.1f MB", (double)b / 1e6);
    else if (b >= 10000u) snprintf(buf, cap, "%.0f kB", (double)b / 1e3);
    else snprintf(buf, cap, "%lu B", (unsigned long)b);
    return buf;
}

static const char *ms(double v, double spread, char *buf, size_t cap) {
    snprintf(buf, cap, v >= 100 ? "%.0f%s" : v >= 10 ? "%.1f%s" : "%.2f%s", v, spread > 0.10 ? "~" : "");
    return buf;
}

static const char *turn_label(const row *r, char *buf, size_t cap) {
    if (r->per_turn >= g_users) snprintf(buf, cap, "%lu (all in one turn)", (unsigned long)r->per_turn);
    else if (r->us_per_turn == 1000u) snprintf(buf, cap, "%lu", (unsigned long)r->per_turn);
    else snprintf(buf, cap, "%lu (%lu turns per ms)", (unsigned long)r->per_turn, 1000lu / r->us_per_turn);
    return buf;
}

int main(int argc, char **argv) {
    static const size_t sizes[] = {1, 10, 100, 1000, 10000};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    row on[NS + 1], off[NS], plain;
    const char *targets = NULL;
    int reps = bench_env_int("BENCH_REPS", 3), i;
    char a[32], b[32], c[32], d[32], e[32];
    g_users = (size_t)bench_env_int("BENCH_PRESENCE_USERS", 10000);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--targets") == 0 && i + 1 < argc) {
            targets = argv[++i];
        } else {
            fputs("usage: presence [--targets FILE]   (BENCH_PRESENCE_USERS=N, default 10000; BENCH_REPS)\n", stderr);
            return 2;
        }
    }
    if (g_users < 1) g_users = 1;
    if (reps < 1) reps = 1;
    g_sinks = (sink *)calloc(g_users, sizeof *g_sinks);
    g_peers = (wsch_hub_peer *)calloc(g_users, sizeof *g_peers);
    if (!g_sinks || !g_peers) return 1;
    memset(on, 0, sizeof on);
    memset(off, 0, sizeof off);
    memset(&plain, 0, sizeof plain);
    /* on and off of one size in turn, so a busy moment of the machine hits both alike */
    for (i = 0; i < NS; i++) {
        on[i].label = "on";
        on[i].per_turn = sizes[i];
        on[i].us_per_turn = 1000u;
        on[i].presence = 2;
        off[i] = on[i];
        off[i].label = "off";
        off[i].presence = 0;
        if (run_row(&on[i], reps) != 0 || run_row(&off[i], reps) != 0) return 1;
    }
    /* A busier loop: ten turns per millisecond, one join each. */
    on[NS] = on[0];
    on[NS].us_per_turn = 100u;
    if (run_row(&on[NS], reps) != 0) return 1;
    plain = on[2];
    plain.label = "on, plain subscribes";
    plain.presence = 1;
    if (run_row(&plain, reps) != 0) return 1;

    printf("### %lu users joining one channel (chat_server's hub, in memory)\n\n", (unsigned long)g_users);
    printf("%lu peers, each its own user, upgraded first (not counted), then subscribe to one channel, K per loop "
           "turn, each turn ended by `wsch_hub_flush()` and the fake clock moved 1 ms (as the POSIX loop runs "
           "it); after the last join the loop sleeps as long as flush asks. The hub as chat_server sets it up "
           "(history 200, positions; presence cap 1,000 users, counts at most every 1,000 ms). \"on\": every "
           "subscriber asks for presence; \"off\": chat_server --no-presence, plain subscribes. Bytes: everything "
           "sent to all peers from the first subscribe on, frame headers included (confirmations, with the "
           "members or the counts in them, and presence messages). Presence messages: encoded (one per changed "
           "channel and flush) / delivered (one per recipient). Time: the whole part, the in-memory transports' "
           "counting included, median of %d runs ('~': runs spread more than 10%%).\n\n",
           (unsigned long)g_users, reps);
    printf("| joins per turn | turns (+ sleeps) | bytes sent, on | off | on/off | presence messages encoded / "
           "delivered | diff / list / counts delivered | wall ms, on | CPU ms, on | CPU ms, off | on/off (CPU) |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (i = 0; i <= NS; i++) {
        const row *r = &on[i], *o = i < NS ? &off[i] : NULL;
        char t[48], fb[32] = "", fc[32] = "";
        if (o) {
            snprintf(fb, sizeof fb, "%.0fx", (double)r->bytes / (double)o->bytes);
            snprintf(fc, sizeof fc, "%.0fx", r->cpu_ms / o->cpu_ms);
        }
        printf("| %s | %lu (+%lu) | %s | %s | %s | %lu / %lu | %lu / %lu / %lu | %s | %s | %s | %s |\n",
               turn_label(r, t, sizeof t), (unsigned long)r->turns, (unsigned long)r->sleeps, mb(r->bytes, a, sizeof a),
               o ? mb(o->bytes, b, sizeof b) : "", fb, (unsigned long)r->encoded, (unsigned long)r->sent,
               (unsigned long)r->kind_frames[K_DIFF], (unsigned long)r->kind_frames[K_LIST],
               (unsigned long)r->kind_frames[K_STATS], ms(r->wall_ms, r->wall_spread, c, sizeof c),
               ms(r->cpu_ms, r->cpu_spread, d, sizeof d), o ? ms(o->cpu_ms, o->cpu_spread, e, sizeof e) : "", fc);
    }
    printf("\nUp to the cap, a turn's joins go to every presence subscriber as one diff (or the whole list when "
           "shorter) and each confirmation carries the member list as last sent, so bytes grow with the square of "
           "the members up to 1,000 users; past the cap subscribers get the counts, at most once per 1,000 ms of "
           "the clock, and confirmations carry counts. The cap is looked at when a flush runs: the confirmations "
           "of the turn that crosses it still carry the list as last sent. The last row is the first one's joins "
           "with the loop turning ten times per millisecond (a busy server): the same diffs, counts less "
           "often.\n\n");
    printf("Where the bytes of \"on\" went: confirmations (members or counts in them) and presence messages, "
           "frame headers included.\n\n");
    printf("| joins per turn | confirmations | bytes per confirmation | diffs | lists | counts |\n");
    printf("|---:|---:|---:|---:|---:|---:|\n");
    for (i = 0; i <= NS; i++) {
        const row *r = &on[i];
        char t[48];
        printf("| %s | %s | %.0f | %s | %s | %s |\n", turn_label(r, t, sizeof t),
               mb(r->kind_bytes[K_SUBSCRIBED], a, sizeof a),
               (double)r->kind_bytes[K_SUBSCRIBED] / (double)r->kind_frames[K_SUBSCRIBED],
               mb(r->kind_bytes[K_DIFF], b, sizeof b), mb(r->kind_bytes[K_LIST], c, sizeof c),
               mb(r->kind_bytes[K_STATS], d, sizeof d));
    }
    printf("\n### Heap per presence member (chat_server's counting allocator)\n\n");
    printf("Growth of the library's heap over the %lu joins of one channel at 100 per turn, per user: requested "
           "sizes (malloc's own overhead not included), everything once the last flush is done (the channel's "
           "subscriber arrays and the peers' subscriptions included, and the hub's one buffer for presence "
           "messages, about as large as the longest).\n\n",
           (unsigned long)g_users);
    printf("| presence | heap per user (bytes) |\n|---|---:|\n");
    printf("| off | %.1f |\n", off[2].heap_per_user);
    printf("| on, plain subscribes (members tracked, nobody asks) | %.1f |\n", plain.heap_per_user);
    printf("| on, every subscriber asks | %.1f |\n", on[2].heap_per_user);
    printf("| a (channel, user) member: on plain minus off | %.1f |\n", plain.heap_per_user - off[2].heap_per_user);
    printf("| a presence subscriber: on asking minus on plain | %.1f |\n\n", on[2].heap_per_user - plain.heap_per_user);
    if (targets) {
        FILE *f = fopen(targets, "a");
        if (f) {
            fprintf(f, "%lu users join one channel, 1 per turn, presence on vs off (bytes sent)|(reported)|%.1f|-\n",
                    (unsigned long)g_users, (double)on[0].bytes / (double)off[0].bytes);
            fprintf(f, "%lu users join one channel, 100 per turn, presence on vs off (bytes sent)|(reported)|%.1f|-\n",
                    (unsigned long)g_users, (double)on[2].bytes / (double)off[2].bytes);
            fprintf(f, "heap per presence member (bytes)|(reported)|%.0f|-\n", plain.heap_per_user - off[2].heap_per_user);
            fclose(f);
        }
    }
    free(g_sinks);
    free(g_peers);
    free(A.scratch);
    if (g_closes || g_failures) {
        fprintf(stderr, "presence: FAIL: %lu closes, %lu failures\n", g_closes, g_failures);
        return 1;
    }
    return 0;
}
