/* loadgen - WebSocket load generator for the loopback benchmarks: one
   thread, epoll, nonblocking sockets, frames masked and encoded once at
   start so the generator itself costs little. Speaks plain RFC 6455 to any
   server (ours, wslay, libwebsockets, Node ws, Python websockets).

   Modes (all figures: median over --reps runs of --duration seconds):
     echo       C connections (--conns), K messages in flight on each
                (--inflight), S bytes each (--size): msgs/s, MB/s of echoed
                payload, p50/p99 latency from send to echo.
     handshake  --conns connections in parallel, each: TCP connect, upgrade
                request, 101 response, abortive close (RST, so no TIME_WAIT
                piles up); handshakes/s.
     fanout     --subs M subscribers on one channel of a hub, one publisher
                sending {"type":"publish","payload":{"channel":C,"data":D}}
                with up to --window publishes in flight: deliveries/s and
                publish-to-last-delivery p50/p99.
     idle       --conns N connections opened and held; with --pid, the
                server's RSS growth per connection (VmRSS, /proc).
   --json makes the echo payload a chat envelope of exactly --size bytes
   (words from a small vocabulary, so it compresses like chat text) instead
   of a letter pattern.

   --presence (fanout): every connection subscribes with "presence":true
   (the hub's presence, ws_channel.h), and each subscriber's "subscribed"
   must carry the channel's presence (the run fails otherwise: a server
   without presence ignores the ask). Presence messages (presence,
   presence_diff, presence_stats) are not deliveries: they are counted
   apart, while the subscribers join and while measuring (RESULT
   pres_setup, pres_measured), and the measured part starts only once no
   message of any kind has arrived for a while (the joins have settled).

   --deflate (a build with zlib, -DLOADGEN_ZLIB -lz; --has-zlib tells):
   every connection offers "permessage-deflate; client_max_window_bits",
   the server must accept (the run fails otherwise), and what this program
   sends of 64 bytes or more goes compressed (RSV1), each message on its
   own, compressed once at start like every frame here. Received
   compressed messages are inflated whole and then counted and checked
   like plain ones (an echo must inflate to exactly what was sent). With
   server_no_context_takeover every message inflates alone, so one
   inflater serves all connections, and a message whose compressed bytes
   equal the previous such message's reuses that result: a hub's
   compress-once broadcast is then inflated once, not once per subscriber,
   and the generator's cost per delivery stays what it is without
   compression (--inflate-all inflates every one). With context takeover
   each connection keeps its own inflater. The fanout RESULT adds rx_b
   (bytes on the wire per delivery, frame headers included) and the
   counts of messages inflated and reused.
   --tls (a build with OpenSSL, -DLOADGEN_TLS -lssl -lcrypto; --has-tls
   tells): every connection speaks TLS (1.2 or later, whatever the server
   prefers) under the same WebSocket traffic: wss:// against the same
   server serving wss, for the TLS overhead ratio. The certificate is not
   verified: the figure is the server's cost on loopback, not a client's.
   Prints "RESULT key=value ..." on success (exit 0); errors go to stderr
   (exit 1). Bounded everywhere: every wait has a deadline.

   Only 127.0.0.0/8 is used: sources are spread over 127.0.0.2..(1+N)
   (--src-ips) so many connections do not exhaust one address's ports. */
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <strings.h>
#include <dirent.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifdef LOADGEN_ZLIB
#include <zlib.h>
#endif
#ifdef LOADGEN_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { M_ECHO, M_HANDSHAKE, M_FANOUT, M_IDLE };
enum { S_CONNECTING, S_TLS, S_HANDSHAKE, S_OPEN, S_DEAD };

#define PREFIX_MAX 160      /* payload bytes kept per frame to classify it */
#define RBUF_SIZE (256u * 1024u)
#define MAX_LAT (4u * 1024u * 1024u)

typedef struct lconn {
    int fd;
    int state;
    void *ssl;                  /* --tls: the connection's SSL */
    int role;                   /* fanout: 0 subscriber, 1 publisher */
    char *hs;                   /* response head while handshaking */
    size_t hs_len;
    /* frame parser */
    unsigned char hdr[14];
    size_t hdr_len;
    uint64_t left;              /* payload bytes of the current frame still to come */
    uint64_t plen;
    int opcode;
    int fin, rsv1;              /* of the current frame */
    unsigned char prefix[PREFIX_MAX];
    size_t prefix_len;
    /* output: a run of the pre-encoded periodic buffer */
    size_t out_off, out_len;
    const unsigned char *out_buf;
    /* echo */
    uint64_t *ts;               /* send times, ring of inflight entries */
    unsigned ts_head, ts_count;
    /* fanout */
    uint64_t got;               /* publish deliveries seen */
    int pres_confirmed;         /* --presence: its "subscribed" carried the presence */
    /* permessage-deflate */
    int z_on;                   /* agreed in the handshake */
    int z_fresh;                /* server_no_context_takeover: every message inflates alone */
    int z_msg;                  /* the message being received is compressed */
    int z_opcode;               /* its opcode */
    unsigned char *zbuf;        /* its compressed bytes so far, room for the 4-byte tail */
    size_t zlen, zcap;
    void *zs;                   /* own inflater (context takeover), made when first needed */
} lconn;

static struct {
    int mode;
    const char *host;
    uint16_t port;
    const char *path;
    int conns, inflight, subs, window, reps, src_ips, text, json, deflate, inflate_all, presence, tls;
    size_t size;
    double duration, warmup;
    long pid;
    const char *channel;
    const char *label;
    const char *stats_path;
} opt;

static int g_ep;
static lconn *g_conns;
static int g_nconns;
static unsigned char *g_rbuf;
static char g_request[1024];
static size_t g_request_len;
/* echo: K+1 copies of one masked frame, back to back */
static unsigned char *g_frames;
static size_t g_frame_size;
static uint64_t *g_lat;
static size_t g_nlat;
static uint64_t g_msgs, g_bytes;
static int g_connected;

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

/* ------------------------------------------------------------ encoding */

static size_t encode_frame(unsigned char *out, int opcode, const void *payload, size_t n, uint32_t key) {
    unsigned char k[4];
    size_t h = 0, i;
    memcpy(k, &key, 4);
    out[h++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        out[h++] = (unsigned char)(0x80 | n);
    } else if (n <= 0xFFFF) {
        out[h++] = 0x80 | 126;
        out[h++] = (unsigned char)(n >> 8);
        out[h++] = (unsigned char)n;
    } else {
        int s;
        out[h++] = 0x80 | 127;
        for (s = 56; s >= 0; s -= 8) out[h++] = (unsigned char)((uint64_t)n >> s);
    }
    memcpy(out + h, k, 4);
    h += 4;
    for (i = 0; i < n; i++) out[h + i] = (unsigned char)(((const unsigned char *)payload)[i] ^ k[i & 3]);
    return h + n;
}

/* A chat envelope of exactly n bytes (n >= 96) into out (n + 1 bytes):
   {"type":"message","payload":{"channel":...,"from":...,"data":{"text":...}}}
   with words from a fixed vocabulary, from a fixed seed. */
static void json_payload(char *out, size_t n) {
    static const char *const words[] = {"hello", "there", "the", "meeting", "is", "at", "noon", "ok", "thanks",
                                        "see", "you", "tomorrow", "deploy", "done", "lunch?", "on", "my", "way",
                                        "great", "work", "everyone", "build", "is", "green", "again", "ship", "it"};
    static const char head[] = "{\"type\":\"message\",\"payload\":{\"channel\":\"general\",\"from\":\"alice\","
                               "\"data\":{\"text\":\"";
    static const char tail[] = "\"}}}";
    size_t hl = sizeof head - 1, tl = sizeof tail - 1, at, end;
    uint64_t seed = 42;
    memcpy(out, head, hl);
    at = hl;
    end = n - tl;
    while (at < end) {
        const char *w = words[bench_rand(&seed) % (sizeof words / sizeof words[0])];
        if (at > hl) out[at++] = ' ';
        while (*w && at < end) out[at++] = *w++;
    }
    if (out[end - 1] == ' ') out[end - 1] = '.';
    memcpy(out + end, tail, tl);
    out[n] = '\0';
}

#ifdef LOADGEN_ZLIB
static size_t g_zmax_sent;      /* longest message sent compressed (window check) */

/* One message compressed on its own (raw DEFLATE, window 15, sync flush,
   the 00 00 FF FF tail stripped, RFC 7692 7.2.1) into a new buffer. */
static unsigned char *deflate_message(const void *in, size_t n, size_t *out_len) {
    z_stream z;
    size_t cap = n + n / 8 + 64;
    unsigned char *out = (unsigned char *)malloc(cap);
    memset(&z, 0, sizeof z);
    if (!out || deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        fprintf(stderr, "loadgen: deflateInit2 failed\n");
        exit(1);
    }
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_SYNC_FLUSH) != Z_OK || z.avail_in != 0 || cap - z.avail_out < 4) {
        fprintf(stderr, "loadgen: deflate failed\n");
        exit(1);
    }
    *out_len = cap - z.avail_out - 4;
    deflateEnd(&z);
    if (n > g_zmax_sent) g_zmax_sent = n;
    return out;
}
#endif

/* A message as this program sends it: compressed (RSV1) with --deflate
   when it is 64 bytes or more, else as encode_frame() makes it. */
static size_t encode_message(unsigned char *out, int opcode, const void *payload, size_t n, uint32_t key) {
#ifdef LOADGEN_ZLIB
    if (opt.deflate && n >= 64) {
        size_t zl, len;
        unsigned char *z = deflate_message(payload, n, &zl);
        len = encode_frame(out, opcode, z, zl, key);
        out[0] |= 0x40;
        free(z);
        return len;
    }
#endif
    return encode_frame(out, opcode, payload, n, key);
}

/* --------------------------------------------------------- connections */

static void watch(lconn *c, uint32_t events, int op) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = c;
    if (epoll_ctl(g_ep, op, c->fd, &ev) < 0) die("epoll_ctl");
}

/* The socket, or TLS over it: >0 bytes, 0 EOF (recv), -1 with errno
   (EAGAIN when TLS wants either direction: epoll always watches EPOLLIN,
   and EPOLLOUT while output is pending). */
#ifdef LOADGEN_TLS
static SSL_CTX *g_tls;
static ssize_t tls_result(lconn *c, int r) {
    int e = SSL_get_error((SSL *)c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) errno = EAGAIN;
    else if (e == SSL_ERROR_ZERO_RETURN) return 0;
    else if (e != SSL_ERROR_SYSCALL || errno == 0) errno = EPROTO;
    return -1;
}
#endif
static ssize_t io_send(lconn *c, const void *p, size_t n) {
#ifdef LOADGEN_TLS
    if (c->ssl) {
        int r = SSL_write((SSL *)c->ssl, p, n > 1u << 30 ? 1 << 30 : (int)n);
        return r > 0 ? (ssize_t)r : tls_result(c, r);
    }
#endif
    return send(c->fd, p, n, MSG_NOSIGNAL);
}
static ssize_t io_recv(lconn *c, void *p, size_t n) {
#ifdef LOADGEN_TLS
    if (c->ssl) {
        int r = SSL_read((SSL *)c->ssl, p, n > 1u << 30 ? 1 << 30 : (int)n);
        return r > 0 ? (ssize_t)r : tls_result(c, r);
    }
#endif
    return recv(c->fd, p, n, 0);
}

static void conn_kill(lconn *c, int abortive) {
    if (c->fd >= 0) {
        if (abortive) {
            struct linger l;
            l.l_onoff = 1;
            l.l_linger = 0;
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
        close(c->fd); /* also leaves the epoll set */
    }
#ifdef LOADGEN_TLS
    SSL_free((SSL *)c->ssl);
    c->ssl = NULL;
#endif
    free(c->hs);
    c->hs = NULL;
    free(c->zbuf);
    c->zbuf = NULL;
    c->zlen = c->zcap = 0;
#ifdef LOADGEN_ZLIB
    if (c->zs) {
        inflateEnd((z_stream *)c->zs);
        free(c->zs);
        c->zs = NULL;
    }
#endif
    c->fd = -1;
    c->state = S_DEAD;
}

static unsigned g_src_next;

static void conn_start(lconn *c) {
    struct sockaddr_in dst, src;
    int fd, one = 1;
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons(opt.port);
    if (inet_pton(AF_INET, opt.host, &dst.sin_addr) != 1) die("bad --host (IPv4 loopback only)");
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt.src_ips > 0) {
        memset(&src, 0, sizeof src);
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7F000002u + (g_src_next++ % (unsigned)opt.src_ips));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind source address");
    }
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) die("connect");
    {
        int role = c->role;
        memset(c, 0, sizeof *c);
        c->role = role;
    }
    c->fd = fd;
    c->state = S_CONNECTING;
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
}

/* Sends as much of c's pending run as the socket takes. */
static int conn_flush(lconn *c) {
    while (c->out_len > 0) {
        ssize_t n = io_send(c, c->out_buf + c->out_off, c->out_len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 0;
            return -1;
        }
        c->out_off += (size_t)n;
        c->out_len -= (size_t)n;
    }
    return 0;
}

static void conn_update_events(lconn *c) {
    watch(c, EPOLLIN | (c->out_len ? EPOLLOUT : 0u), EPOLL_CTL_MOD);
}

/* Queues n more echo frames: they extend the pending run, which the
   periodic buffer makes contiguous. */
static void echo_send(lconn *c, unsigned n, uint64_t now) {
    unsigned i;
    int had = c->out_len > 0;
    if (!n) return;
    if (!had) c->out_off %= g_frame_size;
    c->out_buf = g_frames;
    c->out_len += n * g_frame_size;
    for (i = 0; i < n; i++) c->ts[(c->ts_head + c->ts_count++) % (unsigned)opt.inflight] = now;
    if (!had) {
        if (conn_flush(c) < 0) {
            fprintf(stderr, "loadgen: send failed: %s\n", strerror(errno));
            exit(1);
        }
        if (c->out_len) conn_update_events(c);
    }
}

/* Sends a one-off buffer (subscribe, publish): small, written whole or queued. */
static void send_once(lconn *c, const unsigned char *buf, size_t len) {
    if (c->out_len) {
        fprintf(stderr, "loadgen: internal: output busy\n");
        exit(1);
    }
    c->out_buf = buf;
    c->out_off = 0;
    c->out_len = len;
    if (conn_flush(c) < 0) die("send");
    if (c->out_len) conn_update_events(c);
}

/* ---------------------------------------------------------- mode hooks */

static uint64_t *g_pub_sent;    /* fanout: send time of publish k */
static uint32_t *g_pub_done;    /* fanout: subscribers that have publish k */
static uint64_t g_pub_next, g_pub_complete;
static uint64_t *g_sub_base;    /* per subscriber: deliveries before the measured part */
static unsigned char g_sub_frame[256], g_pub_frame[4096];
static size_t g_sub_frame_len, g_pub_frame_len;
static char g_marker[32];
static uint64_t g_deliveries;
static int g_measuring;
static unsigned char *g_echo_payload;   /* echo: what every message carries */
static const unsigned char *g_msg;      /* the whole message on_frame sees, when it was inflated; else NULL */
static uint64_t g_rx_sub;               /* fanout: bytes read by subscribers while measuring */
static uint64_t g_other;                /* fanout: other messages to subscribers (confirmations, presence) */
static uint64_t g_pres_setup, g_pres_measured;  /* fanout: presence messages to subscribers, before/while measuring */


static void on_open(lconn *c) {
    g_connected++;
    if (opt.mode == M_ECHO) {
        c->ts = (uint64_t *)calloc((size_t)opt.inflight, sizeof *c->ts);
        c->out_off = 0;
        echo_send(c, (unsigned)opt.inflight, bench_now_ns());
    } else if (opt.mode == M_FANOUT) {
        /* The publisher subscribes too: the demo hub takes publishes only from
           subscribers of the channel (and so delivers them back to it). */
        send_once(c, g_sub_frame, g_sub_frame_len);
    } else if (opt.mode == M_HANDSHAKE) {
        g_msgs++;
        conn_kill(c, 1);
        if (g_measuring >= 0) conn_start(c);
    }
}

static void on_frame(lconn *c, uint64_t now) {
    if (c->opcode == 8) {
        fprintf(stderr, "loadgen: server sent close on a connection\n");
        exit(1);
    }
    if (c->opcode == 9 || c->opcode == 10) return; /* ping: the servers under test do not send them */
    if (opt.mode == M_ECHO) {
        if (c->ts_count == 0) {
            fprintf(stderr, "loadgen: unexpected message\n");
            exit(1);
        }
        if (c->plen != opt.size || c->opcode != (opt.text ? 1 : 2)) {
            fprintf(stderr, "loadgen: echo of %llu bytes, opcode %d: expected %zu, %d\n", (unsigned long long)c->plen,
                    c->opcode, opt.size, opt.text ? 1 : 2);
            exit(1);
        }
        if (g_msg && memcmp(g_msg, g_echo_payload, opt.size) != 0) {
            fprintf(stderr, "loadgen: an echo inflated to other bytes than were sent\n");
            exit(1);
        }
        if (g_nlat < MAX_LAT) g_lat[g_nlat++] = now - c->ts[c->ts_head];
        c->ts_head = (c->ts_head + 1) % (unsigned)opt.inflight;
        c->ts_count--;
        g_msgs++;
        g_bytes += c->plen;
    } else if (opt.mode == M_FANOUT && c->role == 0) {
        size_t ml = strlen(g_marker);
        size_t i;
        int hit = 0;
        for (i = 0; i + ml <= c->prefix_len && !hit; i++) hit = memcmp(c->prefix + i, g_marker, ml) == 0;
        if (!hit) { /* confirmations, presence and other traffic: no delivery */
            static const char pres[] = "{\"type\":\"presence", subd[] = "{\"type\":\"subscribed\"";
            g_other++;
            if (c->prefix_len >= sizeof pres - 1 && memcmp(c->prefix, pres, sizeof pres - 1) == 0) {
                if (g_measuring > 0) g_pres_measured++;
                else g_pres_setup++;
            } else if (opt.presence && c->prefix_len >= sizeof subd - 1 && memcmp(c->prefix, subd, sizeof subd - 1) == 0) {
                /* ...,"presence":[...]} or ...,"presence_stats":{...}}, after the channel and position */
                for (i = 0; i + 10 <= c->prefix_len && !c->pres_confirmed; i++)
                    c->pres_confirmed = memcmp(c->prefix + i, ",\"presence", 10) == 0;
            }
            return;
        }
        c->got++;
        g_deliveries++;
        if (g_measuring > 0) {
            uint64_t k = c->got - g_sub_base[c - g_conns] - 1;
            if (k < g_pub_next) {
                if (++g_pub_done[k] == (uint32_t)opt.subs) {
                    if (g_nlat < MAX_LAT) g_lat[g_nlat++] = now - g_pub_sent[k];
                    g_pub_complete++;
                }
            }
        }
    }
}

/* --------------------------------------------------------------- input */

static size_t header_need(const unsigned char *h) {
    unsigned l7 = h[1] & 0x7Fu;
    return 2 + (l7 == 126 ? 2u : l7 == 127 ? 8u : 0u) + ((h[1] & 0x80u) ? 4u : 0u);
}

static void start_frame(lconn *c, const unsigned char *h) {
    unsigned l7 = h[1] & 0x7Fu;
    c->opcode = h[0] & 0x0F;
    c->fin = (h[0] & 0x80) != 0;
    c->rsv1 = (h[0] & 0x40) != 0;
    if (c->opcode < 8) {
        if (c->opcode != 0) {           /* the first frame of a message */
            if (c->rsv1 && !c->z_on) {
                fprintf(stderr, "loadgen: RSV1 without permessage-deflate\n");
                exit(1);
            }
            c->z_msg = c->rsv1;
            c->z_opcode = c->opcode;
            c->zlen = 0;
        } else if (c->rsv1) {
            fprintf(stderr, "loadgen: RSV1 on a continuation frame\n");
            exit(1);
        }
    }
    if (l7 < 126) {
        c->plen = l7;
    } else if (l7 == 126) {
        c->plen = ((uint64_t)h[2] << 8) | h[3];
    } else {
        int i;
        c->plen = 0;
        for (i = 0; i < 8; i++) c->plen = (c->plen << 8) | h[2 + i];
    }
    c->left = c->plen;
    c->prefix_len = 0;
}

/* A frame's payload bytes as they arrive: a compressed message's are
   collected whole, of the others only the first PREFIX_MAX are kept. */
/* Room in c->zbuf for more bytes of a compressed message and the tail. */
static void zbuf_room(lconn *c, size_t more) {
    if (c->zlen + more + 4 > c->zcap) {
        size_t cap = c->zcap ? c->zcap : 256;
        while (cap < c->zlen + more + 4) cap *= 2;
        if (cap > 64u * 1024u * 1024u) {
            fprintf(stderr, "loadgen: compressed message over 64 MiB\n");
            exit(1);
        }
        c->zbuf = (unsigned char *)realloc(c->zbuf, cap);
        if (!c->zbuf) die("realloc");
        c->zcap = cap;
    }
}

static void frame_bytes(lconn *c, const unsigned char *p, size_t take) {
    if (c->z_msg && c->opcode < 8) {
        zbuf_room(c, take);
        memcpy(c->zbuf + c->zlen, p, take);
        c->zlen += take;
        return;
    }
    if (c->prefix_len < PREFIX_MAX) {
        size_t k = PREFIX_MAX - c->prefix_len < take ? PREFIX_MAX - c->prefix_len : take;
        memcpy(c->prefix + c->prefix_len, p, k);
        c->prefix_len += k;
    }
}

#ifdef LOADGEN_ZLIB
#define ZOUT_MAX (16u * 1024u * 1024u + 4096u)
static z_stream g_zshared;          /* inflates messages that stand alone */
static int g_zshared_ready;
static unsigned char *g_zout;       /* output of the per-connection inflaters */
static unsigned char *g_zcache_in;  /* the last message through g_zshared: its input */
static size_t g_zcache_in_len, g_zcache_in_cap;
static unsigned char *g_zcache_out; /* and its output */
static size_t g_zcache_out_len;
#endif
static uint64_t g_inflated, g_inflate_reused;

#ifdef LOADGEN_ZLIB
/* Inflates in[0..n) plus the 00 00 FF FF tail into out (cap bytes); the
   size made. A final block (BFINAL) ends zlib's stream: it starts again for
   what follows. Fails the run on corrupt data or an output over cap. */
static size_t inflate_message(z_stream *z, unsigned char *in, size_t n, unsigned char *out, size_t cap) {
    static const unsigned char tail[4] = {0x00, 0x00, 0xFF, 0xFF};
    size_t made = 0;
    memcpy(in + n, tail, 4);
    n += 4;
    z->next_in = in;
    z->avail_in = (uInt)n;
    while (z->avail_in > 0) {
        int rc;
        z->next_out = out + made;
        z->avail_out = (uInt)(cap - made);
        rc = inflate(z, Z_SYNC_FLUSH);
        made = cap - z->avail_out;
        if (rc == Z_STREAM_END) {
            if (inflateReset(z) != Z_OK) break;
            if (z->avail_in <= 4) return made;  /* at most the tail after the final block */
            continue;
        }
        if (rc == Z_BUF_ERROR && z->avail_out == 0) {
            fprintf(stderr, "loadgen: a message inflates past %zu bytes\n", cap);
            exit(1);
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) break;
        if (rc == Z_BUF_ERROR) break;           /* no progress possible */
    }
    if (z->avail_in == 0) return made;
    fprintf(stderr, "loadgen: corrupt compressed message (%s)\n", z->msg ? z->msg : "inflate failed");
    exit(1);
}
#endif

/* A compressed message is complete: inflate it and let on_frame see the
   result (c->plen, c->prefix, g_msg). */
static void inflate_delivery(lconn *c) {
#ifdef LOADGEN_ZLIB
    const unsigned char *out;
    size_t len;
    zbuf_room(c, 0);                    /* an empty payload made no room yet */
    if (c->z_fresh) {
        if (!opt.inflate_all && g_zcache_in && c->zlen == g_zcache_in_len && memcmp(c->zbuf, g_zcache_in, c->zlen) == 0) {
            g_inflate_reused++;
        } else {
            if (!g_zshared_ready) {
                if (inflateInit2(&g_zshared, -15) != Z_OK) die("inflateInit2");
                g_zshared_ready = 1;
            } else if (inflateReset(&g_zshared) != Z_OK) {
                die("inflateReset");
            }
            g_zcache_out_len = inflate_message(&g_zshared, c->zbuf, c->zlen, g_zcache_out, ZOUT_MAX);
            if (c->zlen > g_zcache_in_cap) {
                g_zcache_in = (unsigned char *)realloc(g_zcache_in, c->zlen);
                if (!g_zcache_in) die("realloc");
                g_zcache_in_cap = c->zlen;
            }
            memcpy(g_zcache_in, c->zbuf, c->zlen);
            g_zcache_in_len = c->zlen;
            g_inflated++;
        }
        out = g_zcache_out;
        len = g_zcache_out_len;
    } else {
        if (!c->zs) {
            c->zs = calloc(1, sizeof(z_stream));
            if (!c->zs || inflateInit2((z_stream *)c->zs, -15) != Z_OK) die("inflateInit2");
        }
        len = inflate_message((z_stream *)c->zs, c->zbuf, c->zlen, g_zout, ZOUT_MAX);
        out = g_zout;
        g_inflated++;
    }
    c->opcode = c->z_opcode;
    c->plen = len;
    c->prefix_len = len < PREFIX_MAX ? len : PREFIX_MAX;
    memcpy(c->prefix, out, c->prefix_len);
    g_msg = out;
#else
    (void)c;
#endif
}

/* A frame ended: deliver it, or for a compressed message its last frame
   the whole message inflated (its other frames deliver nothing). */
static void frame_done(lconn *c, uint64_t now) {
    if (c->z_msg && c->opcode < 8) {
        if (!c->fin) return;
        inflate_delivery(c);
        c->z_msg = 0;
        on_frame(c, now);
        g_msg = NULL;
        return;
    }
    on_frame(c, now);
}

/* Frames from the server. */
static void parse_frames(lconn *c, const unsigned char *p, size_t n, uint64_t now) {
    while (n > 0) {
        if (c->left == 0) { /* at a header */
            if (c->hdr_len == 0 && n >= 2 && n >= header_need(p)) {
                size_t need = header_need(p);
                start_frame(c, p);
                p += need;
                n -= need;
            } else { /* a header split across reads */
                while (c->hdr_len < 2 && n > 0) c->hdr[c->hdr_len++] = *p++, n--;
                if (c->hdr_len < 2) return;
                while (c->hdr_len < header_need(c->hdr) && n > 0) c->hdr[c->hdr_len++] = *p++, n--;
                if (c->hdr_len < header_need(c->hdr)) return;
                start_frame(c, c->hdr);
                c->hdr_len = 0;
            }
            if (c->left == 0) {
                frame_done(c, now);
                continue;
            }
        }
        {
            size_t take = c->left < n ? (size_t)c->left : n;
            frame_bytes(c, p, take);
            p += take;
            n -= take;
            c->left -= take;
            if (c->left == 0) frame_done(c, now);
        }
    }
}

static void pmd_refuse(const char *why, const char *v, size_t len) {
    fprintf(stderr, "loadgen: permessage-deflate: %s: \"%.*s\"\n", why, (int)len, v);
    exit(1);
}

/* --deflate: the server's Sec-WebSocket-Extensions (head: the response
   head, NUL-terminated) must accept the offer, with parameters RFC 7692
   allows in an answer to it; sets c->z_on and c->z_fresh. */
static void pmd_accept(lconn *c, const char *head) {
    const char *line = head, *v = NULL, *end;
    static const char name[] = "sec-websocket-extensions:";
    while ((line = strstr(line, "\r\n")) != NULL) {
        line += 2;
        if (strncasecmp(line, name, sizeof name - 1) == 0) {
            if (v) pmd_refuse("more than one Sec-WebSocket-Extensions", line, 0);
            v = line + sizeof name - 1;
        }
    }
    if (!v) {
        fprintf(stderr, "loadgen: the server declined permessage-deflate (no Sec-WebSocket-Extensions)\n");
        exit(1);
    }
    end = strstr(v, "\r\n");
    {
        size_t len = (size_t)(end - v), i = 0, k;
        int first = 1;
        while (i < len) {
            char tok[64];
            size_t tl = 0;
            while (i < len && (v[i] == ' ' || v[i] == '\t')) i++;
            k = i;
            while (i < len && v[i] != ';' && v[i] != ',') i++;
            tl = i - k;
            while (tl > 0 && (v[k + tl - 1] == ' ' || v[k + tl - 1] == '\t')) tl--;
            if (i < len && v[i] == ',') pmd_refuse("more than one extension", v, len);
            if (i < len) i++;
            if (tl >= sizeof tok) pmd_refuse("parameter too long", v, len);
            memcpy(tok, v + k, tl);
            tok[tl] = '\0';
            if (first) {
                if (strcasecmp(tok, "permessage-deflate") != 0) pmd_refuse("not permessage-deflate", v, len);
                first = 0;
            } else if (strcasecmp(tok, "server_no_context_takeover") == 0) {
                c->z_fresh = 1;
            } else if (strcasecmp(tok, "client_no_context_takeover") == 0) {
                /* what this program does anyway: every message compressed alone */
            } else if (strncasecmp(tok, "server_max_window_bits=", 23) == 0 ||
                       strncasecmp(tok, "client_max_window_bits=", 23) == 0) {
                const char *b = tok + 23;
                long bits;
                if (*b == '"') b++;
                bits = strtol(b, NULL, 10);
                if (bits < 8 || bits > 15) pmd_refuse("bad window bits", v, len);
                /* A message compressed alone refers back at most its own
                   length: a window that covers it is enough. */
#ifdef LOADGEN_ZLIB
                if ((tok[0] | 0x20) == 'c' && ((size_t)1 << bits) < g_zmax_sent)
                    pmd_refuse("window too small for the messages compressed at start", v, len);
#endif
            } else {
                pmd_refuse("unexpected parameter", v, len);
            }
        }
        if (first) pmd_refuse("empty", v, len);
    }
    c->z_on = 1;
}

static void on_handshake_bytes(lconn *c, const unsigned char *p, size_t n, uint64_t now) {
    char *end;
    size_t head;
    if (!c->hs) c->hs = (char *)malloc(4096);
    if (c->hs_len + n > 4095) {
        fprintf(stderr, "loadgen: handshake response too long\n");
        exit(1);
    }
    memcpy(c->hs + c->hs_len, p, n);
    c->hs_len += n;
    c->hs[c->hs_len] = '\0';
    end = strstr(c->hs, "\r\n\r\n");
    if (!end) return;
    if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "loadgen: handshake refused: %.*s\n", (int)(strchr(c->hs, '\r') - c->hs), c->hs);
        exit(1);
    }
    head = (size_t)(end + 4 - c->hs);
    if (opt.deflate) {
        end[2] = '\0';     /* the head alone, its last line's CRLF kept */
        pmd_accept(c, c->hs);
        end[2] = '\r';
    }
    c->state = S_OPEN;
    {
        size_t rest = c->hs_len - head;
        unsigned char tmp[4096];
        memcpy(tmp, c->hs + head, rest);
        free(c->hs);
        c->hs = NULL;
        c->hs_len = 0;
        watch(c, EPOLLIN, EPOLL_CTL_MOD);
        on_open(c);
        if (c->state == S_OPEN && rest) parse_frames(c, tmp, rest, now);
    }
}

/* The upgrade request, once the transport is up. */
static void send_request(lconn *c) {
    c->state = S_HANDSHAKE;
    c->out_buf = (const unsigned char *)g_request;
    c->out_off = 0;
    c->out_len = g_request_len;
    if (conn_flush(c) < 0) die("send request");
    watch(c, EPOLLIN | (c->out_len ? EPOLLOUT : 0u), EPOLL_CTL_MOD);
}

#ifdef LOADGEN_TLS
static void tls_step(lconn *c) {
    int r;
    if (!c->ssl) {
        BIO *b = NULL;
        SSL *ssl = SSL_new(g_tls);
        if (!ssl || !(b = BIO_new_socket(c->fd, BIO_NOCLOSE))) die("SSL_new");
        SSL_set_bio(ssl, b, b);
        SSL_set_connect_state(ssl);
        c->ssl = ssl;
        c->state = S_TLS;
    }
    r = SSL_do_handshake((SSL *)c->ssl);
    if (r == 1) {
        send_request(c);
        return;
    }
    if (tls_result(c, r) < 0 && errno == EAGAIN) {
        int e = SSL_get_error((SSL *)c->ssl, r);
        watch(c, e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN, EPOLL_CTL_MOD);
        return;
    }
    fprintf(stderr, "loadgen: TLS handshake failed: %s\n", ERR_reason_error_string(ERR_peek_last_error()));
    exit(1);
}
#endif

static void on_event(lconn *c, uint32_t ev) {
    if (c->state == S_DEAD) return;
#ifdef LOADGEN_TLS
    if (c->state == S_TLS) {
        tls_step(c);
        return;
    }
#endif
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            errno = err;
            die("connect");
        }
#ifdef LOADGEN_TLS
        if (opt.tls) {
            tls_step(c);
            return;
        }
#endif
        send_request(c);
        return;
    }
    if (ev & EPOLLOUT) {
        if (conn_flush(c) < 0) die("send");
        if (!c->out_len) conn_update_events(c);
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        int rounds;
        /* TLS hands over one record (16 KiB at most) a read. */
        int max_rounds = c->ssl ? 16 : 4;
        for (rounds = 0; rounds < max_rounds && (c->state == S_HANDSHAKE || c->state == S_OPEN); rounds++) {
            ssize_t n = io_recv(c, g_rbuf, RBUF_SIZE);
            uint64_t now;
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) break;
            if (n <= 0) {
                fprintf(stderr, "loadgen: connection %d closed by the server (%s)\n", (int)(c - g_conns),
                        n == 0 ? "EOF" : strerror(errno));
                exit(1);
            }
            now = bench_now_ns();
            if (g_measuring > 0 && c->role == 0 && c->state == S_OPEN) g_rx_sub += (uint64_t)n;
            if (c->state == S_HANDSHAKE) {
                on_handshake_bytes(c, g_rbuf, (size_t)n, now);
            } else {
                unsigned before = c->ts_count;
                parse_frames(c, g_rbuf, (size_t)n, now);
                if (opt.mode == M_ECHO && c->ts_count < before) echo_send(c, before - c->ts_count, now);
            }
            if ((size_t)n < RBUF_SIZE && !c->ssl) break;     /* a short read drained the socket */
        }
    }
}

/* One turn of the loop: wait at most timeout_ms. */
static void poll_once(int timeout_ms) {
    struct epoll_event evs[1024];
    int n = epoll_wait(g_ep, evs, 1024, timeout_ms), i;
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (i = 0; i < n; i++) on_event((lconn *)evs[i].data.ptr, evs[i].events);
}

/* Opens conns [from, to) with at most 256 handshakes under way at once;
   fails after timeout_s. */
static void connect_range(int from, int to, double timeout_s) {
    double deadline = bench_now() + timeout_s;
    int next = from;
    g_connected = 0;
    while (g_connected < to - from) {
        while (next < to && (next - from) - g_connected < 256) conn_start(&g_conns[next++]);
        if (bench_now() > deadline) {
            fprintf(stderr, "loadgen: only %d of %d connections opened in %.0f s\n", g_connected, to - from,
                    timeout_s);
            exit(1);
        }
        poll_once(50);
    }
}

static long read_rss_kb(long pid) {
    char path[64], line[256];
    long kb = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
    fclose(f);
    return kb;
}

/* CPU time the server has used so far, all its threads, in ns (schedstat);
   0 without --pid. Unlike a rate, CPU per message does not depend on how
   much of its core the server was given while other work ran. */
static uint64_t server_cpu_ns(void) {
    char path[64], line[128];
    uint64_t total = 0;
    DIR *d;
    struct dirent *e;
    if (!opt.pid) return 0;
    snprintf(path, sizeof path, "/proc/%ld/task", opt.pid);
    d = opendir(path);
    if (!d) return 0;
    while ((e = readdir(d)) != NULL) {
        char p2[400];
        FILE *f;
        if (e->d_name[0] == '.') continue;
        snprintf(p2, sizeof p2, "%s/%s/schedstat", path, e->d_name);
        f = fopen(p2, "r");
        if (!f) continue;
        if (fgets(line, sizeof line, f)) total += strtoull(line, NULL, 10);
        fclose(f);
    }
    closedir(d);
    return total;
}

/* --------------------------------------------------------------- modes */

static double g_cpu_us[64];     /* server CPU us per message (or handshake, delivery) of each rep */
static double g_self_us[64];    /* the load generator's own CPU us per message, same */

static uint64_t self_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void report_rates(const char *what, double *rates, int n, double *extra, const char *extra_name,
                         double *p50, double *p99) {
    double r[64];
    int i;
    memcpy(r, rates, (size_t)n * sizeof *r);
    printf("RESULT label=%s mode=%s %s=%.1f spread=%.3f", opt.label, what,
           opt.mode == M_HANDSHAKE ? "hs_s" : opt.mode == M_FANOUT ? "deliveries_s" : "msgs_s", bench_median(r, (size_t)n),
           bench_spread(rates, (size_t)n));
    if (extra) {
        memcpy(r, extra, (size_t)n * sizeof *r);
        printf(" %s=%.2f", extra_name, bench_median(r, (size_t)n));
    }
    if (p50) {
        memcpy(r, p50, (size_t)n * sizeof *r);
        printf(" p50_us=%.1f", bench_median(r, (size_t)n));
        memcpy(r, p99, (size_t)n * sizeof *r);
        printf(" p99_us=%.1f", bench_median(r, (size_t)n));
    }
    if (opt.pid) {
        memcpy(r, g_cpu_us, (size_t)n * sizeof *r);
        printf(" cpu_us=%.3f", bench_median(r, (size_t)n));
    }
    memcpy(r, g_self_us, (size_t)n * sizeof *r);
    printf(" load_cpu_us=%.3f", bench_median(r, (size_t)n));
    if (opt.deflate)
        printf(" deflate=1 inflated=%llu reused=%llu", (unsigned long long)g_inflated,
               (unsigned long long)g_inflate_reused);
    if (opt.presence)
        printf(" presence=1 pres_setup=%llu pres_measured=%llu", (unsigned long long)g_pres_setup,
               (unsigned long long)g_pres_measured);
    printf(" reps=%d\n", n);
    for (i = 0; i < n; i++) fprintf(stderr, "  rep %d: %.1f\n", i + 1, rates[i]);
}

static void latency_pct(double *p50, double *p99) {
    qsort(g_lat, g_nlat, sizeof *g_lat, bench_cmp_u64);
    *p50 = (double)bench_pct(g_lat, g_nlat, 50) / 1000.0;
    *p99 = (double)bench_pct(g_lat, g_nlat, 99) / 1000.0;
}

static void run_echo(void) {
    double rates[64], mbs[64], p50[64], p99[64], t0;
    unsigned char *payload = (unsigned char *)malloc(opt.size + 1);
    size_t i;
    int r;
    if (opt.json)
        json_payload((char *)payload, opt.size);
    else
        for (i = 0; i < opt.size; i++) payload[i] = (unsigned char)(opt.text ? 'a' + i % 26 : i * 31);
    g_frame_size = encode_message(g_rbuf, opt.text ? 1 : 2, payload, opt.size, 0x5A3C96E1u);
    g_frames = (unsigned char *)malloc(g_frame_size * (size_t)(opt.inflight + 1));
    for (i = 0; i <= (size_t)opt.inflight; i++) memcpy(g_frames + i * g_frame_size, g_rbuf, g_frame_size);
    g_echo_payload = payload;           /* an inflated echo is checked against it */
    g_nconns = opt.conns;
    connect_range(0, opt.conns, 30);
    t0 = bench_now();
    while (bench_now() - t0 < opt.warmup) poll_once(10);
    for (r = 0; r < opt.reps; r++) {
        double t;
        uint64_t c0 = server_cpu_ns(), s0 = self_cpu_ns();
        g_msgs = g_bytes = 0;
        g_nlat = 0;
        t0 = bench_now();
        while ((t = bench_now() - t0) < opt.duration) poll_once(10);
        rates[r] = (double)g_msgs / t;
        g_cpu_us[r] = g_msgs ? (double)(server_cpu_ns() - c0) / 1e3 / (double)g_msgs : 0;
        g_self_us[r] = g_msgs ? (double)(self_cpu_ns() - s0) / 1e3 / (double)g_msgs : 0;
        mbs[r] = (double)g_bytes / t / 1e6;
        latency_pct(&p50[r], &p99[r]);
        if (g_msgs == 0) {
            fprintf(stderr, "loadgen: no echo in %.1f s\n", t);
            exit(1);
        }
    }
    report_rates("echo", rates, opt.reps, mbs, "mb_s", p50, p99);
}

static void run_handshake(void) {
    double rates[64], t0, t;
    int r, i;
    g_nconns = opt.conns;
    g_measuring = 0;
    for (i = 0; i < opt.conns; i++) conn_start(&g_conns[i]);
    t0 = bench_now();
    while (bench_now() - t0 < opt.warmup) poll_once(10);
    for (r = 0; r < opt.reps; r++) {
        uint64_t c0 = server_cpu_ns(), s0 = self_cpu_ns();
        g_msgs = 0;
        t0 = bench_now();
        while ((t = bench_now() - t0) < opt.duration) poll_once(10);
        rates[r] = (double)g_msgs / t;
        g_cpu_us[r] = g_msgs ? (double)(server_cpu_ns() - c0) / 1e3 / (double)g_msgs : 0;
        g_self_us[r] = g_msgs ? (double)(self_cpu_ns() - s0) / 1e3 / (double)g_msgs : 0;
    }
    g_measuring = -1; /* no new connections */
    for (i = 0; i < opt.conns; i++)
        if (g_conns[i].state != S_DEAD) conn_kill(&g_conns[i], 1);
    report_rates("handshake", rates, opt.reps, NULL, NULL, NULL, NULL);
}

static void publish(lconn *pub, uint64_t now) {
    send_once(pub, g_pub_frame, g_pub_frame_len);
    if (g_measuring > 0) g_pub_sent[g_pub_next++] = now;
}

/* Waits until no message (delivery or other) has come for quiet_s. */
static void settle(double quiet_s, double timeout_s) {
    double deadline = bench_now() + timeout_s, last = bench_now();
    uint64_t seen = g_deliveries + g_other;
    while (bench_now() < deadline) {
        poll_once(5);
        if (g_deliveries + g_other != seen) {
            seen = g_deliveries + g_other;
            last = bench_now();
        } else if (bench_now() - last >= quiet_s) {
            return;
        }
    }
}

static void run_fanout(void) {
    double rates[64], p50[64], p99[64], rxb[64];
    lconn *pub;
    char json[4096], data[2048];
    size_t i, n;
    int r, s;
    uint64_t per_rep = (uint64_t)(opt.duration * 100000) + 16; /* upper bound of publishes per rep */
    g_nconns = opt.subs + 1;
    /* Subscribe message, and the publish with a marker the subscribers look for. */
    n = (size_t)snprintf(json, sizeof json, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\"%s}}", opt.channel,
                         opt.presence ? ",\"presence\":true" : "");
    g_sub_frame_len = encode_frame(g_sub_frame, 1, json, n, 0x1F2E3D4Cu);
    snprintf(g_marker, sizeof g_marker, "FANOUT-");
    if (opt.size > sizeof data - 1) opt.size = sizeof data - 1;
    for (i = 0; i < opt.size; i++) data[i] = i < 7 ? g_marker[i] : (char)('a' + i % 26);
    data[opt.size] = '\0';
    n = (size_t)snprintf(json, sizeof json, "{\"type\":\"publish\",\"payload\":{\"channel\":\"%s\",\"data\":\"%s\"}}",
                         opt.channel, data);
    g_pub_frame_len = encode_message(g_pub_frame, 1, json, n, 0x0A0B0C0Du);
    g_sub_base = (uint64_t *)calloc((size_t)g_nconns, sizeof *g_sub_base);
    g_pub_sent = (uint64_t *)calloc(per_rep, sizeof *g_pub_sent);
    g_pub_done = (uint32_t *)calloc(per_rep, sizeof *g_pub_done);

    pub = &g_conns[opt.subs];
    pub->role = 1;
    connect_range(0, opt.subs, 120);
    connect_range(opt.subs, opt.subs + 1, 10);
    /* Subscriptions take effect in their own time: publish probes until every
       subscriber has seen one, then let the pipes drain. */
    {
        double deadline = bench_now() + 60, last = 0;
        for (;;) {
            int all = 1;
            for (s = 0; s < opt.subs && all; s++) all = g_conns[s].got > 0;
            if (all) break;
            if (bench_now() > deadline) {
                int missing = 0;
                for (s = 0; s < opt.subs; s++) missing += g_conns[s].got == 0;
                fprintf(stderr, "loadgen: %d of %d subscribers never got a publish\n", missing, opt.subs);
                exit(1);
            }
            if (bench_now() - last > 0.2 && !pub->out_len) {
                publish(pub, bench_now_ns());
                last = bench_now();
            }
            poll_once(5);
        }
        settle(0.3, 30);
        if (opt.presence) {
            int missing = 0;
            for (s = 0; s < opt.subs; s++) missing += !g_conns[s].pres_confirmed;
            if (missing) {
                fprintf(stderr, "loadgen: %d of %d subscribers were confirmed without presence (server without it?)\n",
                        missing, opt.subs);
                exit(1);
            }
        }
    }
    for (r = 0; r < opt.reps; r++) {
        double t0, t;
        uint64_t c0 = server_cpu_ns(), s0 = self_cpu_ns();
        for (s = 0; s < opt.subs; s++) g_sub_base[s] = g_conns[s].got;
        memset(g_pub_done, 0, per_rep * sizeof *g_pub_done);
        g_pub_next = g_pub_complete = 0;
        g_nlat = 0;
        g_rx_sub = 0;
        g_measuring = 1;
        t0 = bench_now();
        while ((t = bench_now() - t0) < opt.duration) {
            while (g_pub_next - g_pub_complete < (uint64_t)opt.window && g_pub_next < per_rep && !pub->out_len)
                publish(pub, bench_now_ns());
            poll_once(5);
        }
        /* Count only publishes that completed; wait for the stragglers so
           the next rep starts clean. */
        {
            double deadline = bench_now() + 30;
            while (g_pub_complete < g_pub_next && bench_now() < deadline) poll_once(5);
            t = bench_now() - t0;
            if (g_pub_complete < g_pub_next) {
                fprintf(stderr, "loadgen: %llu publishes never reached every subscriber\n",
                        (unsigned long long)(g_pub_next - g_pub_complete));
                exit(1);
            }
        }
        g_measuring = 0;
        rates[r] = (double)g_pub_complete * opt.subs / t;
        rxb[r] = g_pub_complete ? (double)g_rx_sub / (double)(g_pub_complete * (uint64_t)opt.subs) : 0;
        /* the publisher's own copy counts: the server sends subs + 1 per publish */
        g_cpu_us[r] = g_pub_complete ? (double)(server_cpu_ns() - c0) / 1e3 / (double)(g_pub_complete * (uint64_t)(opt.subs + 1)) : 0;
        g_self_us[r] = g_pub_complete ? (double)(self_cpu_ns() - s0) / 1e3 / (double)(g_pub_complete * (uint64_t)opt.subs) : 0;
        latency_pct(&p50[r], &p99[r]);
        fprintf(stderr, "  rep %d: %llu publishes\n", r + 1, (unsigned long long)g_pub_complete);
        settle(0.05, 5);
    }
    report_rates("fanout", rates, opt.reps, rxb, "rx_b", p50, p99);
}

/* GET opt.stats_path on a plain blocking connection (2 s bound); returns
   the number after "key": in the body, or -1. For chat_server's
   /api/stats, whose heap_bytes is the library's own heap. */
static long long http_stat(const char *key) {
    struct sockaddr_in dst;
    struct timeval tv;
    char req[512], buf[8192], pat[64], *at;
    size_t got = 0;
    int fd;
    long long v = -1;
    if (!opt.stats_path) return -1;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons(opt.port);
    inet_pton(AF_INET, opt.host, &dst.sin_addr);
    tv.tv_sec = 2;
    tv.tv_usec = 0;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&dst, sizeof dst) == 0) {
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", opt.stats_path,
                         opt.host);
        if (send(fd, req, (size_t)n, MSG_NOSIGNAL) == n) {
            ssize_t r;
            while (got < sizeof buf - 1 && (r = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0) got += (size_t)r;
        }
    }
    if (fd >= 0) close(fd);
    buf[got] = '\0';
    snprintf(pat, sizeof pat, "\"%s\":", key);
    at = strstr(buf, pat);
    if (at) v = atoll(at + strlen(pat));
    return v;
}

static void run_idle(void) {
    long before = opt.pid ? read_rss_kb(opt.pid) : -1, after;
    long long heap0 = http_stat("heap_bytes"), heap1;
    double t0;
    g_nconns = opt.conns;
    connect_range(0, opt.conns, 120);
    t0 = bench_now();
    while (bench_now() - t0 < 1.0) poll_once(50);
    after = opt.pid ? read_rss_kb(opt.pid) : -1;
    heap1 = http_stat("heap_bytes");
    printf("RESULT label=%s mode=idle conns=%d rss_before_kb=%ld rss_after_kb=%ld rss_per_conn_b=%.0f", opt.label,
           opt.conns, before, after, before >= 0 && after >= 0 ? (double)(after - before) * 1024.0 / opt.conns : -1.0);
    if (heap0 >= 0 && heap1 >= 0) printf(" heap_per_conn_b=%.0f", (double)(heap1 - heap0) / opt.conns);
    printf("\n");
}

static void usage(void) {
    fputs("usage: loadgen --mode echo|handshake|fanout|idle --port N [--host 127.0.0.1] [--path /]\n"
          "  [--conns C] [--inflight K] [--size S] [--binary] [--subs M] [--window W] [--channel NAME]\n"
          "  [--duration SEC] [--warmup SEC] [--reps R] [--pid PID] [--src-ips N] [--label NAME]\n"
          "  [--stats-path /api/stats]   (idle: library heap per connection from the server's JSON)\n"
          "  [--json] (echo: a chat envelope of --size bytes, at least 128)\n"
          "  [--presence] (fanout: subscribe with \"presence\":true; presence messages counted apart)\n"
          "  [--deflate [--inflate-all]] (offer permessage-deflate; a build with zlib)   [--has-zlib] (exit 0 if so)\n"
          "  [--tls] (wss: TLS on every connection, not verified; a build with OpenSSL)   [--has-tls] (exit 0 if so)\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv) {
    int i;
    struct rlimit rl;
    opt.mode = M_ECHO;
    opt.host = "127.0.0.1";
    opt.path = "/";
    opt.conns = 1;
    opt.inflight = 16;
    opt.size = 16;
    opt.subs = 100;
    opt.window = 4;
    opt.reps = 5;
    opt.src_ips = 16;
    opt.text = 1;
    opt.duration = 1.0;
    opt.warmup = 0.3;
    opt.channel = "bench";
    opt.label = "-";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--binary") == 0) { opt.text = 0; continue; }
        if (strcmp(a, "--json") == 0) { opt.json = 1; continue; }
        if (strcmp(a, "--inflate-all") == 0) { opt.inflate_all = 1; continue; }
        if (strcmp(a, "--presence") == 0) { opt.presence = 1; continue; }
        if (strcmp(a, "--deflate") == 0) {
#ifdef LOADGEN_ZLIB
            opt.deflate = 1;
            continue;
#else
            fputs("loadgen: --deflate needs a build with zlib (-DLOADGEN_ZLIB -lz)\n", stderr);
            return 3;
#endif
        }
        if (strcmp(a, "--tls") == 0) {
#ifdef LOADGEN_TLS
            opt.tls = 1;
            continue;
#else
            fputs("loadgen: --tls needs a build with OpenSSL (-DLOADGEN_TLS -lssl -lcrypto)\n", stderr);
            return 3;
#endif
        }
        if (strcmp(a, "--has-tls") == 0) {
#ifdef LOADGEN_TLS
            return 0;
#else
            return 1;
#endif
        }
        if (strcmp(a, "--has-zlib") == 0) {
#ifdef LOADGEN_ZLIB
            return 0;
#else
            return 1;
#endif
        }
        if (!v) usage();
        i++;
        if (strcmp(a, "--mode") == 0) {
            opt.mode = strcmp(v, "echo") == 0 ? M_ECHO : strcmp(v, "handshake") == 0 ? M_HANDSHAKE
                     : strcmp(v, "fanout") == 0 ? M_FANOUT : strcmp(v, "idle") == 0 ? M_IDLE : -1;
            if (opt.mode < 0) usage();
        } else if (strcmp(a, "--host") == 0) opt.host = v;
        else if (strcmp(a, "--port") == 0) opt.port = (uint16_t)atoi(v);
        else if (strcmp(a, "--path") == 0) opt.path = v;
        else if (strcmp(a, "--conns") == 0) opt.conns = atoi(v);
        else if (strcmp(a, "--inflight") == 0) opt.inflight = atoi(v);
        else if (strcmp(a, "--size") == 0) opt.size = (size_t)atol(v);
        else if (strcmp(a, "--subs") == 0) opt.subs = atoi(v);
        else if (strcmp(a, "--window") == 0) opt.window = atoi(v);
        else if (strcmp(a, "--channel") == 0) opt.channel = v;
        else if (strcmp(a, "--duration") == 0) opt.duration = atof(v);
        else if (strcmp(a, "--warmup") == 0) opt.warmup = atof(v);
        else if (strcmp(a, "--reps") == 0) opt.reps = atoi(v);
        else if (strcmp(a, "--pid") == 0) opt.pid = atol(v);
        else if (strcmp(a, "--src-ips") == 0) opt.src_ips = atoi(v);
        else if (strcmp(a, "--label") == 0) opt.label = v;
        else if (strcmp(a, "--stats-path") == 0) opt.stats_path = v;
        else usage();
    }
    if (!opt.port || opt.conns < 1 || opt.inflight < 1 || opt.subs < 1 || opt.window < 1 || opt.reps < 1 ||
        opt.reps > 64 || opt.duration <= 0 || opt.size > 16u * 1024u * 1024u || (opt.json && opt.size < 128))
        usage();
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    g_request_len = (size_t)snprintf(g_request, sizeof g_request,
                                     "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                                     opt.path, opt.host, (unsigned)opt.port,
                                     opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
#ifdef LOADGEN_TLS
    if (opt.tls) {
        g_tls = SSL_CTX_new(TLS_client_method());
        if (!g_tls || SSL_CTX_set_min_proto_version(g_tls, TLS1_2_VERSION) != 1) die("SSL_CTX_new");
        SSL_CTX_set_verify(g_tls, SSL_VERIFY_NONE, NULL);
        /* a pending run is offered again longer, or from further on */
        SSL_CTX_set_mode(g_tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
#endif
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g_ep < 0) die("epoll_create1");
    g_rbuf = (unsigned char *)malloc(RBUF_SIZE > 16u * 1024u * 1024u + 16 ? RBUF_SIZE : 16u * 1024u * 1024u + 16);
    g_lat = (uint64_t *)malloc(MAX_LAT * sizeof *g_lat);
    g_conns = (lconn *)calloc((size_t)(opt.mode == M_FANOUT ? opt.subs + 1 : opt.conns), sizeof *g_conns);
    if (!g_rbuf || !g_lat || !g_conns) die("malloc");
#ifdef LOADGEN_ZLIB
    if (opt.deflate) {
        g_zout = (unsigned char *)malloc(ZOUT_MAX);
        g_zcache_out = (unsigned char *)malloc(ZOUT_MAX);
        if (!g_zout || !g_zcache_out) die("malloc");
    }
#endif
    switch (opt.mode) {
    case M_ECHO: run_echo(); break;
    case M_HANDSHAKE: run_handshake(); break;
    case M_FANOUT: run_fanout(); break;
    default: run_idle(); break;
    }
    fflush(stdout);
    return 0;
}
