/* deflate_hub - permessage-deflate in chat_server's hub, in memory: bytes
   on the wire per chat message with and without the extension, and the
   library's heap per idle peer with and without it.

   examples/chat_server.c is compiled in (its main renamed, as in
   publish.c), so its hooks and counting allocator run as in the server,
   and the hub gets its desc the way chat_server's main() gives it: the
   hub's defaults plus the zlib codec (desc.deflate.codec alone, every other
   deflate setting left at its default). Peers are in-memory transports;
   what they send is built here (masked, compressed with zlib when the peer
   negotiated the extension), what they get is parsed here.

   Bytes on the wire: alice publishes to "room"; bob (offered
   permessage-deflate) and carol (did not) are subscribed. For each message
   the bytes of the delivery each of them got are counted (frame header
   included) and bob's is inflated and compared with carol's, byte for
   byte. Rows: three fixed chat texts and a corpus of generated ones (the
   shape bench/deflate.c uses).

   Heap per idle peer: on a fresh hub (one compressed peer connected and
   served first, so the hub's one shared compressor exists before
   counting), N peers (BENCH_HEAP_PEERS, default 1,000) of one kind
   upgrade, subscribe to "room", send a direct message to themselves
   (compressed when they negotiated it) and get it back, then one broadcast
   to "room" reaches all of them; the peers are then idle, and the growth
   of the library's heap (chat_server's counting allocator) divided by N is
   the figure. Once with peers that offer the extension, once with peers
   that do not; each kind on its own hub so both grow the same tables.

   Prints markdown; --targets FILE appends the heap goal (compressed minus
   uncompressed <= 1 KiB) in run.sh's "name|goal|measured|met" form. Exit
   1 on any mismatch. Build: make -C bench (needs zlib1g-dev). */
#define main chat_server_main
#include "../examples/chat_server.c"
#undef main
#include "bench_util.h"

#include <zlib.h>

/* ---- an in-memory peer ---------------------------------------------------- */

typedef struct sink {
    int keep;                   /* keep the bytes (else count them only) */
    char head[2048];            /* the HTTP answer */
    size_t head_len;
    int head_done;
    int pmd;                    /* the answer accepted permessage-deflate */
    unsigned char *out;         /* frames after the head, when kept */
    size_t out_len, out_cap, rd;
    uint64_t bytes;             /* frame bytes after the head */
    /* frame counting when not kept */
    unsigned char hdr[10];
    size_t hlen, need;
    uint64_t skip;
    unsigned long frames, rsv1_frames;
} sink;

static unsigned long g_closes, g_failures;

static void fail(const char *what) {
    fprintf(stderr, "deflate_hub: FAIL: %s\n", what);
    g_failures++;
}

static void sink_frames(sink *s, const unsigned char *p, size_t len) {
    while (len) {
        if (s->skip) {
            uint64_t n = s->skip < len ? s->skip : len;
            s->skip -= n;
            p += n;
            len -= (size_t)n;
            continue;
        }
        s->hdr[s->hlen++] = *p++;
        len--;
        if (s->hlen == 2) s->need = 2u + ((s->hdr[1] & 0x7Fu) == 126 ? 2u : (s->hdr[1] & 0x7Fu) == 127 ? 8u : 0u);
        if (s->hlen >= 2 && s->hlen == s->need) {
            uint64_t plen = s->hdr[1] & 0x7Fu;
            size_t i;
            if (plen == 126) plen = ((uint64_t)s->hdr[2] << 8) | s->hdr[3];
            else if (plen == 127)
                for (plen = 0, i = 0; i < 8; i++) plen = (plen << 8) | s->hdr[2 + i];
            s->frames++;
            if (s->hdr[0] & 0x40) s->rsv1_frames++;
            s->skip = plen;
            s->hlen = 0;
        }
    }
}

static size_t mem_send(const void *data, size_t len, void *user) {
    sink *s = (sink *)user;
    const unsigned char *p = (const unsigned char *)data;
    size_t n = len;
    if (!s->head_done) {
        while (n && !s->head_done) {
            if (s->head_len + 1 >= sizeof s->head) {
                fail("HTTP answer too long");
                return len;
            }
            s->head[s->head_len++] = (char)*p++;
            n--;
            s->head[s->head_len] = '\0';
            if (s->head_len >= 4 && memcmp(s->head + s->head_len - 4, "\r\n\r\n", 4) == 0) {
                s->head_done = 1;
                s->pmd = strstr(s->head, "permessage-deflate") != NULL;
            }
        }
    }
    if (!n) return len;
    s->bytes += n;
    if (s->keep) {
        if (s->out_len + n > s->out_cap) {
            size_t cap = s->out_cap ? s->out_cap : 4096;
            while (cap < s->out_len + n) cap *= 2;
            s->out = (unsigned char *)realloc(s->out, cap);
            if (!s->out) exit(1);
            s->out_cap = cap;
        }
        memcpy(s->out + s->out_len, p, n);
        s->out_len += n;
    } else {
        sink_frames(s, p, n);
    }
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

/* The next whole frame kept by s: 1 with its parts, or 0. */
static int next_frame(sink *s, int *rsv1, const unsigned char **payload, size_t *len, size_t *frame_len) {
    const unsigned char *h = s->out + s->rd;
    size_t avail = s->out_len - s->rd, need, l7, i;
    uint64_t plen;
    if (avail < 2) return 0;
    l7 = h[1] & 0x7Fu;
    need = 2u + (l7 == 126 ? 2u : l7 == 127 ? 8u : 0u);
    if (avail < need) return 0;
    plen = l7;
    if (l7 == 126) plen = ((uint64_t)h[2] << 8) | h[3];
    else if (l7 == 127)
        for (plen = 0, i = 0; i < 8; i++) plen = (plen << 8) | h[2 + i];
    if (avail - need < plen) return 0;
    *rsv1 = (h[0] & 0x40) != 0;
    *payload = h + need;
    *len = (size_t)plen;
    *frame_len = need + (size_t)plen;
    s->rd += need + (size_t)plen;
    return 1;
}

/* ---- what a client sends ------------------------------------------------- */

/* text compressed alone (raw DEFLATE, window 15, sync flush, the tail
   stripped: RFC 7692 7.2.1) into out; its length. */
static size_t compress_alone(const char *text, size_t n, unsigned char *out, size_t cap) {
    z_stream z;
    size_t made;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) exit(1);
    z.next_in = (Bytef *)(uintptr_t)text;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_SYNC_FLUSH) != Z_OK || z.avail_in) exit(1);
    made = cap - z.avail_out;
    deflateEnd(&z);
    return made - 4;
}

/* in[0..n) plus the tail, inflated alone into out; its length, or
   (size_t)-1. */
static size_t inflate_alone(const unsigned char *in, size_t n, unsigned char *out, size_t cap) {
    static const unsigned char tail[4] = {0x00, 0x00, 0xFF, 0xFF};
    unsigned char buf[8192];
    z_stream z;
    size_t made;
    int rc;
    if (n + 4 > sizeof buf) return (size_t)-1;
    memcpy(buf, in, n);
    memcpy(buf + n, tail, 4);
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -15) != Z_OK) return (size_t)-1;
    z.next_in = buf;
    z.avail_in = (uInt)(n + 4);
    z.next_out = out;
    z.avail_out = (uInt)cap;
    rc = inflate(&z, Z_SYNC_FLUSH);
    made = cap - z.avail_out;
    inflateEnd(&z);
    return (rc == Z_OK || rc == Z_STREAM_END) && z.avail_in == 0 ? made : (size_t)-1;
}

/* A masked client text frame of text, compressed (RSV1) when deflate and
   text is 64 bytes or more (the library's default min_size); its length. */
static size_t client_frame(unsigned char *out, const char *text, int deflate) {
    static const unsigned char key[4] = {0x37, 0xFA, 0x21, 0x3D};
    unsigned char z[8192];
    const unsigned char *p = (const unsigned char *)text;
    size_t len = strlen(text), n = 0, i;
    int rsv1 = 0;
    if (deflate && len >= 64) {
        len = compress_alone(text, len, z, sizeof z);
        p = z;
        rsv1 = 1;
    }
    out[n++] = (unsigned char)(0x81 | (rsv1 ? 0x40 : 0));
    if (len < 126) {
        out[n++] = (unsigned char)(0x80u | len);
    } else {
        out[n++] = 0x80 | 126;
        out[n++] = (unsigned char)(len >> 8);
        out[n++] = (unsigned char)len;
    }
    memcpy(out + n, key, 4);
    n += 4;
    for (i = 0; i < len; i++) out[n + i] = (unsigned char)(p[i] ^ key[i & 3]);
    return n + len;
}

static int feed(wsch_hub_peer p, const void *data, size_t len) {
    static unsigned char buf[16384];
    memcpy(buf, data, len);
    return wsch_hub_feed(A.hub, p, buf, len);
}

static int send_text(wsch_hub_peer p, const char *text, int deflate) {
    unsigned char frame[16384];
    return feed(p, frame, client_frame(frame, text, deflate));
}

/* Accepts a peer on s and upgrades it as user, offering the extension
   when deflate; 0 when the answer was 101 and matched the offer. */
static int connect_peer(sink *s, wsch_hub_peer *p, const char *user, int deflate) {
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /ws?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     user, deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
    if (wsch_hub_accept(A.hub, NULL, s, p) != WSCH_OK) return -1;
    (void)feed(*p, req, (size_t)n);
    if (!s->head_done || strncmp(s->head, "HTTP/1.1 101", 12) != 0 || s->pmd != deflate) return -1;
    return 0;
}

static int make_hub(void) {
    wsch_hub_desc d;
    memset(&d, 0, sizeof d);
    chat_hub_desc(&d);                          /* as chat_server's main() sets it up */
    d.effects.send = mem_send;
    d.effects.close = mem_close;
    d.effects.random_bytes = fixed_random;
    d.deflate.codec = deflate_zlib_codec();      /* chat_server's default in a build with zlib */
    return wsch_hub_create(&d, &A.hub) == WSCH_OK && d.deflate.codec ? 0 : -1;
}

static void drop_hub(void) {
    unsigned long closes = g_closes;            /* destroy closes every peer: those do not count */
    wsch_hub_destroy(A.hub);
    g_closes = closes;
    A.hub = NULL;
    if (A.heap_bytes != 0) fail("library heap not all freed with the hub");
}

static const char subscribe_room[] = "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"room\"}}";

/* ---- bytes on the wire ---------------------------------------------------- */

static const char *const g_words[] = {"hello", "there", "the", "meeting", "is", "at", "noon", "ok", "thanks",
                                      "see", "you", "tomorrow", "deploy", "done", "lunch?", "on", "my", "way",
                                      "great", "work", "everyone", "build", "is", "green", "again", "ship", "it"};

typedef struct wire_row {
    size_t msgs, envelope, plain, deflated, pub_plain, pub_deflated;
} wire_row;

/* alice publishes text (NULL: the generated corpus) n times; the bytes
   each delivery and publish took, summed over the n. */
static int wire_measure(wsch_hub_peer alice, sink *sb, sink *sc, wsch_hub_peer bob, const char *text, size_t n,
                        wire_row *row) {
    uint64_t seed = 7;
    size_t k;
    (void)bob;
    memset(row, 0, sizeof *row);
    for (k = 0; k < n; k++) {
        char txt[600], pub[1024];
        unsigned char frame[2048], inflated[4096];
        const unsigned char *pb, *pc;
        size_t tl = 0, lb, lc, fb, fc, il;
        int rb, rc;
        if (text) {
            snprintf(txt, sizeof txt, "%s", text);
        } else {
            size_t words = 3 + (size_t)(bench_rand(&seed) % 40u);
            while (words-- > 0) {
                const char *w = g_words[bench_rand(&seed) % (sizeof g_words / sizeof g_words[0])];
                size_t wl = strlen(w);
                if (tl + wl + 2 >= sizeof txt) break;
                if (tl) txt[tl++] = ' ';
                memcpy(txt + tl, w, wl);
                tl += wl;
            }
            txt[tl] = '\0';
        }
        snprintf(pub, sizeof pub, "{\"type\":\"publish\",\"payload\":{\"channel\":\"room\",\"data\":{\"text\":\"%s\"}}}",
                 txt);
        row->pub_plain += client_frame(frame, pub, 0);
        row->pub_deflated += client_frame(frame, pub, 1);
        sb->rd = sb->out_len;
        sc->rd = sc->out_len;
        if (send_text(alice, pub, 1) != WSCH_OK) return -1;
        if (!next_frame(sb, &rb, &pb, &lb, &fb) || !next_frame(sc, &rc, &pc, &lc, &fc) || rc) return -1;
        row->envelope += lc;
        row->plain += fc;
        row->deflated += fb;
        il = rb ? inflate_alone(pb, lb, inflated, sizeof inflated) : lb;
        if (il == (size_t)-1 || il != lc || memcmp(rb ? inflated : pb, pc, lc) != 0) {
            fail("a compressed delivery does not inflate to the plain one");
            return -1;
        }
        row->msgs++;
    }
    return 0;
}

static int wire_section(size_t corpus_n) {
    static const char *const texts[3] = {
        "ok, see you at noon",
        "The build is green again: deploying the chat service to staging now, then production after lunch.",
        "Quick summary of today's meeting: the new channel list ships on Thursday, the search box waits for the "
        "index rebuild, and everyone please review the open pull requests before Friday. Alice takes the release "
        "notes, Bob the migration script, Carol the load test. Questions in #dev, and thanks again for the great "
        "work this week, everyone!"};
    static const char *const names[4] = {"short text", "typical text", "long text", "generated corpus"};
    sink sa, sb, sc;
    wsch_hub_peer alice, bob, carol;
    wire_row rows[4];
    int i;
    memset(&sa, 0, sizeof sa);
    memset(&sb, 0, sizeof sb);
    memset(&sc, 0, sizeof sc);
    sb.keep = sc.keep = 1;
    if (make_hub() != 0 || connect_peer(&sa, &alice, "alice", 1) != 0 || connect_peer(&sb, &bob, "bob", 1) != 0 ||
        connect_peer(&sc, &carol, "carol", 0) != 0) {
        fail("wire: hub or upgrade");
        return -1;
    }
    if (send_text(alice, subscribe_room, 1) != WSCH_OK || send_text(bob, subscribe_room, 1) != WSCH_OK ||
        send_text(carol, subscribe_room, 0) != WSCH_OK) {
        fail("wire: subscribe");
        return -1;
    }
    for (i = 0; i < 4; i++) {
        if (wire_measure(alice, &sb, &sc, bob, i < 3 ? texts[i] : NULL, i < 3 ? 1 : corpus_n, &rows[i]) != 0) {
            fail("wire: a delivery is missing or wrong");
            return -1;
        }
    }
    printf("### Bytes on the wire per chat message (chat_server's hub, in memory)\n\n");
    printf("alice publishes `{\"type\":\"publish\",\"payload\":{\"channel\":\"room\",\"data\":{\"text\":T}}}`; each "
           "subscriber gets `{\"type\":\"message\",\"payload\":{\"channel\":\"room\",\"from\":\"alice\",\"data\":"
           "{\"text\":T}}}` as one frame. Bytes per message, frame header included (the corpus row: averages over "
           "%zu generated texts of 3 to 43 words). The hub compresses each broadcast alone (no context takeover, "
           "zlib level 6, window 15) and sends envelopes under 64 bytes as they are. Publish frames are a client's: "
           "masked, here compressed alone too when the client negotiated the extension. Every compressed delivery "
           "was inflated and compared with the plain one.\n\n",
           corpus_n);
    printf("| message | envelope (bytes) | delivery, plain | delivery, compressed | compressed/plain | publish, plain | "
           "publish, compressed |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for (i = 0; i < 4; i++) {
        double m = (double)rows[i].msgs;
        printf("| %s | %.0f | %.1f | %.1f | %.2f | %.1f | %.1f |\n", names[i], (double)rows[i].envelope / m,
               (double)rows[i].plain / m, (double)rows[i].deflated / m,
               (double)rows[i].deflated / (double)rows[i].plain, (double)rows[i].pub_plain / m,
               (double)rows[i].pub_deflated / m);
    }
    printf("\n");
    drop_hub();
    free(sb.out);
    free(sc.out);
    return 0;
}

/* ---- heap per idle peer ---------------------------------------------------- */

/* Heap bytes per peer for n idle peers of one kind, or -1. */
static double heap_per_peer(size_t n, int deflate) {
    static const char payload[] = "{\"channel\":\"room\",\"from\":\"server\",\"text\":\"maintenance at noon, back "
                                  "in ten minutes; messages sent meanwhile are kept\"}";
    sink warm, *sinks = (sink *)calloc(n, sizeof *sinks);
    wsch_hub_peer w, *peers = (wsch_hub_peer *)calloc(n, sizeof *peers);
    size_t i, before, delivered = 0;
    double per = -1;
    char user[32], direct[256];
    if (!sinks || !peers || make_hub() != 0) goto out;
    memset(&warm, 0, sizeof warm);
    /* One compressed peer served first: the hub's shared compressor exists
       from here on, for both kinds alike. */
    if (connect_peer(&warm, &w, "warm", 1) != 0 || send_text(w, subscribe_room, 1) != WSCH_OK ||
        wsch_hub_broadcast(A.hub, "room", "notification", payload, WSCH_CSTR, NULL) != WSCH_OK ||
        warm.rsv1_frames != 1) {
        fail("heap: warm-up peer");
        goto out;
    }
    before = A.heap_bytes;
    for (i = 0; i < n; i++) {
        snprintf(user, sizeof user, "u%zu", i);
        snprintf(direct, sizeof direct,
                 "{\"type\":\"direct\",\"payload\":{\"to\":\"%s\",\"data\":{\"text\":\"a note to myself, long enough "
                 "to be compressed\"}}}",
                 user);
        if (connect_peer(&sinks[i], &peers[i], user, deflate) != 0 || send_text(peers[i], subscribe_room, deflate) != WSCH_OK ||
            send_text(peers[i], direct, deflate) != WSCH_OK) {
            fail("heap: a peer did not upgrade, subscribe or send");
            goto out;
        }
    }
    if (wsch_hub_broadcast(A.hub, "room", "notification", payload, WSCH_CSTR, &delivered) != WSCH_OK ||
        delivered != n + 1) {
        fail("heap: broadcast");
        goto out;
    }
    for (i = 0; i < n; i++) {
        /* welcome, subscribed, direct, notification; the last two compressed when agreed */
        if (sinks[i].frames != 4 || sinks[i].rsv1_frames != (deflate ? 2u : 0u)) {
            fprintf(stderr, "deflate_hub: peer %zu: %lu frames, %lu compressed\n", i, sinks[i].frames,
                    sinks[i].rsv1_frames);
            fail("heap: a peer got other frames than expected");
            goto out;
        }
    }
    per = ((double)A.heap_bytes - (double)before) / (double)n;
out:
    if (A.hub) drop_hub();
    free(sinks);
    free(peers);
    return per;
}

int main(int argc, char **argv) {
    const char *targets = NULL;
    size_t n = (size_t)bench_env_int("BENCH_HEAP_PEERS", 1000), corpus_n = 1000;
    double plain, deflated;
    int i;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--targets") == 0 && i + 1 < argc) {
            targets = argv[++i];
        } else {
            fputs("usage: deflate_hub [--targets FILE]   (BENCH_HEAP_PEERS=N, default 1000)\n", stderr);
            return 2;
        }
    }
    if (n < 1) n = 1;
    if (wire_section(corpus_n) != 0) return 1;
    plain = heap_per_peer(n, 0);
    deflated = heap_per_peer(n, 1);
    if (plain < 0 || deflated < 0) return 1;
    printf("### Library heap per idle hub peer, with and without permessage-deflate (in memory)\n\n");
    printf("chat_server's hub with the hub's defaults and the zlib codec; %zu peers of each kind upgraded, subscribed "
           "to one channel, sent a direct message to themselves (compressed when agreed) and got it back, then "
           "received one broadcast; then idle. Growth of the library's heap (the counting allocator) per peer; "
           "the hub's one shared compressor is made before counting (it serves every peer).\n\n",
           n);
    printf("| peer | heap per idle peer (bytes) |\n|---|---:|\n");
    printf("| uncompressed (no extension offered) | %.0f |\n", plain);
    printf("| compressed (permessage-deflate agreed) | %.0f |\n", deflated);
    printf("| difference | %.0f |\n\n", deflated - plain);
    if (targets) {
        FILE *f = fopen(targets, "a");
        if (f) {
            fprintf(f, "heap per idle hub peer, compressed minus uncompressed (bytes)|<= 1024|%.0f|%s\n",
                    deflated - plain, deflated - plain <= 1024 ? "yes" : "NO");
            fclose(f);
        }
    }
    free(A.scratch);
    if (g_closes || g_failures) {
        fprintf(stderr, "deflate_hub: FAIL: %lu closes, %lu failures\n", g_closes, g_failures);
        return 1;
    }
    return 0;
}
