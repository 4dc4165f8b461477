/* soak_load - the load of the soak test (tests/interop/soak.py): churn,
   steady subscribers with numbered messages, slow consumers, clients that
   vanish, protocol garbage, against one or two chat_servers, for a fixed
   time. One thread, epoll, raw client frames (masked with the zero key).

   Build:  cc -std=c99 -O2 -D_GNU_SOURCE -I. -o build/soak_load tests/interop/soak_load.c
   Run:    build/soak_load --port P [--port2 P2] --seconds S [--windows FILE]

   Who connects (spread over the servers given, round robin):
     steady     --steady N (40) subscribers of "soak", well behaved: they
                read everything and send {"type":"ping"} every 3 s; each
                checks that the numbered messages arrive in order, without
                a gap or a duplicate;
     publisher  one, on the first server: subscribed to "soak" and "bulk",
                publishes {"n":N} to "soak" --rate times a second (20) and
                a 16 KiB message to "bulk" twice a second; it is also a
                steady subscriber;
     bursts     every --burst-ms (1000) --burst (100) connections at once:
                most are churners (welcome, subscribe to one of 50
                channels, publish there, hold 0-3 s, unsubscribe, then
                leave with a close frame or, one in two, an abrupt close);
                1 in 20 is a slow consumer (a 4 KiB receive buffer,
                subscribes to "soak" and "bulk", never reads again); 1 in
                20 vanishes (subscribes, then never reads nor writes nor
                answers); both are held for --vanish-ms (5 s) plus up to
                as much again, then closed: the slow one with a FIN, the
                vanishing one with a reset (SO_LINGER 0: no close frame,
                no FIN). soak.py sets --vanish-ms past the server's idle
                + close timeout, so that the server's eviction is what
                ends them (counted in its drops). 1 in 50
                sends protocol garbage (a bad opcode, an unmasked frame,
                invalid UTF-8, a binary message, a 2^62-byte length, or a
                broken request) and must be closed by the server.
   Messages owed: a steady subscriber is owed every "soak" message published
   after the subscribers were all in (they subscribe before the first
   publish). Across two servers (Redis), a message published during a
   disruption of Redis cannot be numbered there (chat_server keeps history
   by default, so Redis numbers every channel message): it is refused, and
   no subscriber, on either server, is owed the messages published within a window of
   --windows FILE (lines "START_MS END_MS", CLOCK_MONOTONIC, written by the
   orchestrator while we run, read at the end) widened by --grace-ms (8 s
   after the end: the bridge's reconnect backoff, at most 6.25 s, and the
   resubscribe).
   Prints "ok"/"FAIL" lines, one "soak_load: {...}" JSON line with the
   counts, and greatest's summary line. 127.0.0.1 only; bounded in time. */
#include "net_util.h"
#include "load_util.h"

#include <sys/epoll.h>
#include <sys/resource.h>

enum kind { K_STEADY, K_PUBLISHER, K_CHURN, K_SLOW, K_VANISH, K_GARBAGE, K_KINDS };
static const char *const kind_names[K_KINDS] = {"steady", "publisher", "churn", "slow", "vanish", "garbage"};
enum state { S_CONNECTING, S_UPGRADING, S_OPEN, S_SILENT, S_DONE };

#define MAX_GAPS 64

typedef struct lc {
    int fd;
    int kind, state, server;
    int subscribed;             /* ack seen */
    int step;                   /* churner: 0 subscribe sent, 1 published, 2 unsubscribe sent */
    unsigned chan;              /* churner: its channel, "c<chan>" */
    uint64_t deadline;          /* next thing to do, or give up */
    uint64_t next_ping;
    long long last;             /* steady: last "soak" number seen */
    unsigned long received, dups;
    long long gaps[MAX_GAPS][2];
    unsigned ngaps, gaps_lost;  /* gaps_lost: more gaps than recorded */
    size_t len, cap;
    unsigned char *buf;
    struct lc *next;            /* in the list of live connections */
} lc;

static int ep;
static lc *live;
static uint16_t ports[2];
static int nports = 1;
static unsigned long opened[K_KINDS], ended_ok[K_KINDS], failed[K_KINDS];
static unsigned long churn_unanswered, garbage_unclosed;
static uint64_t *pub_ms;        /* publish time of message n (index n) */
static long long published, pub_cap;
static uint64_t rng = 88172645463325252ull;
static unsigned vanish_ms = 5000;   /* a vanishing client is reset after vanish_ms + up to as much again */

static unsigned rnd(unsigned n) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static void watch(lc *c, uint32_t events) {
    struct epoll_event e;
    memset(&e, 0, sizeof e);
    e.events = events;
    e.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0) epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
}

static lc *open_conn(int kind, int server) {
    int inprog;
    lc *c = (lc *)calloc(1, sizeof *c);
    if (!c) return NULL;
    c->kind = kind;
    c->server = server;
    c->cap = kind == K_PUBLISHER ? 256u * 1024u : kind == K_STEADY ? 64u * 1024u : 8192u;
    c->buf = (unsigned char *)malloc(c->cap);
    c->fd = -1;
    if (kind == K_SLOW) {       /* the buffer must be small before the connect */
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), small = 4096;
        struct sockaddr_in sa;
        if (fd >= 0) {
            (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
            memset(&sa, 0, sizeof sa);
            sa.sin_family = AF_INET;
            sa.sin_port = htons(ports[server]);
            sa.sin_addr.s_addr = htonl(0x7F000001u);
            if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
                close(fd);
                fd = -1;
            }
        }
        c->fd = fd;
    } else {
        c->fd = net_connect("127.0.0.1", ports[server], &inprog);
    }
    opened[kind]++;
    if (c->fd < 0 || !c->buf) {
        failed[kind]++;
        if (c->fd >= 0) close(c->fd);
        free(c->buf);
        free(c);
        return NULL;
    }
    c->state = S_CONNECTING;
    c->deadline = net_now_ms() + 10000;
    c->next = live;
    live = c;
    watch(c, EPOLLOUT);
    return c;
}

/* Ends a connection: linger 0 makes the close a reset (vanish). */
static void finish(lc *c, int ok, int reset) {
    if (c->state == S_DONE) return;
    if (reset) {
        struct linger lg;
        lg.l_onoff = 1;
        lg.l_linger = 0;
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = S_DONE;
    if (ok) ended_ok[c->kind]++;
    else failed[c->kind]++;
}

static int send_frame(lc *c, unsigned char op, const void *data, size_t n) {
    unsigned char h[14];
    size_t hl = 2;
    h[0] = (unsigned char)(0x80u | op);
    if (n < 126) {
        h[1] = (unsigned char)(0x80u | n);
    } else if (n < 65536) {
        h[1] = 0x80u | 126u;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    } else {
        return -1;
    }
    memset(h + hl, 0, 4);       /* the zero key: masking is the identity */
    hl += 4;
    if (send_all(c->fd, h, hl) != 0) return -1;
    return n ? send_all(c->fd, data, n) : 0;
}

static int send_json(lc *c, const char *text) { return send_frame(c, 1, text, strlen(text)); }

static void garbage(lc *c) {
    static const unsigned char bad_utf8[] = {0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28};
    static const unsigned char unmasked[] = {0x81, 0x02, 'h', 'i'};
    static const unsigned char bad_op[] = {0x83, 0x80, 0, 0, 0, 0};
    static const unsigned char binary[] = {0x82, 0x81, 0, 0, 0, 0, 7};
    static const unsigned char huge[] = {0x81, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    switch (rnd(5)) {
    case 0: (void)send_all(c->fd, bad_utf8, sizeof bad_utf8); break;
    case 1: (void)send_all(c->fd, unmasked, sizeof unmasked); break;
    case 2: (void)send_all(c->fd, bad_op, sizeof bad_op); break;
    case 3: (void)send_all(c->fd, binary, sizeof binary); break;
    default: (void)send_all(c->fd, huge, sizeof huge); break;
    }
    c->deadline = net_now_ms() + 10000;   /* the server must close it by then */
}

static void note_soak(lc *c, long long n, const char *text) {
    static unsigned told;
    c->received++;
    if (n <= c->last) {
        c->dups++;
        if (told++ < 8)     /* enough to tell a repeat from a reorder, and where it came from */
            printf("     server %c: %s got %lld after %lld: %.300s\n", 'A' + c->server, kind_names[c->kind], n, c->last,
                   text);
        return;
    }
    if (n > c->last + 1) {
        if (c->ngaps < MAX_GAPS) {
            c->gaps[c->ngaps][0] = c->last + 1;
            c->gaps[c->ngaps][1] = n - 1;
            c->ngaps++;
        } else {
            c->gaps_lost++;
        }
    }
    c->last = n;
}

static void on_text(lc *c, const char *t, size_t n) {
    char text[512];
    const char *p;
    if (n >= sizeof text) n = sizeof text - 1;  /* bulk messages: the head is enough */
    memcpy(text, t, n);
    text[n] = '\0';
    if (strstr(text, "\"type\":\"welcome\"")) {
        char sub[160];
        switch (c->kind) {
        case K_STEADY: (void)send_json(c, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"soak\"}}"); break;
        case K_PUBLISHER:
            (void)send_json(c, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"soak\"}}");
            (void)send_json(c, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"bulk\"}}");
            break;
        case K_CHURN:
            c->chan = rnd(50);
            snprintf(sub, sizeof sub, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"c%u\"}}", c->chan);
            (void)send_json(c, sub);
            break;
        case K_SLOW:
            (void)send_json(c, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"bulk\"}}");
            (void)send_json(c, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"soak\"}}");
            c->state = S_SILENT;        /* never reads again */
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            c->deadline = net_now_ms() + vanish_ms + rnd(vanish_ms);
            break;
        case K_VANISH:
            (void)send_json(c, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"soak\"}}");
            c->state = S_SILENT;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            c->deadline = net_now_ms() + vanish_ms + rnd(vanish_ms);
            break;
        case K_GARBAGE: garbage(c); break;
        default: break;
        }
        return;
    }
    if (strstr(text, "\"type\":\"subscribed\"")) {
        if (c->kind == K_CHURN && c->step == 0) {
            char pub[200];
            snprintf(pub, sizeof pub, "{\"type\":\"publish\",\"payload\":{\"channel\":\"c%u\",\"data\":\"hello\"}}",
                     c->chan);
            (void)send_json(c, pub);
            c->step = 1;
            c->deadline = net_now_ms() + rnd(3000);
        }
        c->subscribed++;
        return;
    }
    if (strstr(text, "\"type\":\"unsubscribed\"") && c->kind == K_CHURN) {
        if (rnd(2)) {
            (void)send_frame(c, 8, "\x03\xe8", 2);  /* 1000, then we do not wait for the answer */
        }
        finish(c, 1, 0);
        return;
    }
    if ((c->kind == K_STEADY || c->kind == K_PUBLISHER) && strstr(text, "\"channel\":\"soak\"") &&
        (p = strstr(text, "\"data\":{\"n\":")) != NULL) {
        note_soak(c, atoll(p + 12), text);
    }
}

/* Parses what arrived; returns -1 when the connection ended. */
static int on_bytes(lc *c) {
    if (c->state == S_UPGRADING) {
        unsigned char *end = (unsigned char *)memmem(c->buf, c->len, "\r\n\r\n", 4);
        size_t head;
        if (!end) return c->len == c->cap ? -1 : 0;
        if (c->len < 12 || memcmp(c->buf, "HTTP/1.1 101", 12) != 0) return -1;
        head = (size_t)(end + 4 - c->buf);
        memmove(c->buf, c->buf + head, c->len - head);
        c->len -= head;
        c->state = S_OPEN;
    }
    while (c->state == S_OPEN && c->len >= 2) {
        size_t h = 2, n = c->buf[1] & 0x7Fu;
        unsigned op = c->buf[0] & 0x0Fu;
        if (n == 126) {
            if (c->len < 4) break;
            n = (size_t)c->buf[2] << 8 | c->buf[3];
            h = 4;
        } else if (n == 127) {
            return -1;          /* nothing this big is sent to us */
        }
        if (h + n > c->cap) return -1;
        if (c->len < h + n) break;
        if (op == 1) on_text(c, (const char *)c->buf + h, n);
        else if (op == 9) (void)send_frame(c, 10, c->buf + h, n);
        else if (op == 8) {
            if (c->kind != K_GARBAGE) (void)send_frame(c, 8, c->buf + h, n < 2 ? n : 2);
            return -1;
        }
        if (c->state != S_OPEN) return c->state == S_DONE ? -1 : 0;
        memmove(c->buf, c->buf + h + n, c->len - h - n);
        c->len -= h + n;
    }
    return 0;
}

static void on_event(lc *c, uint32_t events) {
    if (c->state == S_CONNECTING) {
        char req[300];
        int len;
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        if (net_connect_finish(c->fd) != NET_OK) {
            finish(c, 0, 0);
            return;
        }
        if (c->kind == K_GARBAGE && rnd(4) == 0) {
            len = snprintf(req, sizeof req, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade websocket\r\n\r\n");
            c->deadline = net_now_ms() + 10000;
        } else {
            len = snprintf(req, sizeof req,
                           "GET /ws?token=%s%u HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n",
                           kind_names[c->kind], rnd(100000));
        }
        if (send_all(c->fd, req, (size_t)len) != 0) {
            finish(c, 0, 0);
            return;
        }
        c->state = S_UPGRADING;
        watch(c, EPOLLIN);
        return;
    }
    for (;;) {
        long n;
        if (c->len == c->cap) {
            if (c->kind == K_GARBAGE) c->len = 0;   /* an answer we do not parse */
            else {
                finish(c, 0, 0);
                return;
            }
        }
        n = net_read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n == NET_AGAIN) break;
        if (n < 0) {
            /* Closed by the server: what garbage must get; for others a failure
               unless they were leaving anyway. */
            finish(c, c->kind == K_GARBAGE, 0);
            return;
        }
        c->len += (size_t)n;
        if (on_bytes(c) < 0) {
            if (c->state != S_DONE) finish(c, c->kind == K_GARBAGE, 0);
            return;
        }
        if (c->state != S_OPEN && c->state != S_UPGRADING) return;
    }
}

/* Timeouts and scheduled steps of every live connection. */
static void tick(uint64_t now) {
    lc **pp = &live;
    while (*pp) {
        lc *c = *pp;
        if (c->state == S_DONE) {
            *pp = c->next;
            if (c->kind != K_STEADY && c->kind != K_PUBLISHER) {
                free(c->buf);
                free(c);
            } else {
                c->next = NULL;     /* kept for the report: they are in the steady array */
            }
            continue;
        }
        if ((c->kind == K_STEADY || c->kind == K_PUBLISHER) && c->state == S_OPEN && now >= c->next_ping) {
            (void)send_json(c, "{\"type\":\"ping\"}");
            c->next_ping = now + 3000;
        }
        if (c->kind != K_STEADY && c->kind != K_PUBLISHER && now >= c->deadline) {
            if (c->kind == K_CHURN && c->step == 1 && c->state == S_OPEN) {
                char un[160];
                snprintf(un, sizeof un, "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"c%u\"}}", c->chan);
                (void)send_json(c, un);
                c->step = 2;
                c->deadline = now + 10000;
            } else if (c->kind == K_SLOW) {
                finish(c, 1, 0);
            } else if (c->kind == K_VANISH) {
                finish(c, 1, 1);
            } else if (c->kind == K_GARBAGE) {
                garbage_unclosed++;
                finish(c, 0, 0);
            } else {
                if (c->kind == K_CHURN) churn_unanswered++;
                finish(c, 0, 0);
            }
        }
        pp = &c->next;
    }
}

static void pump(uint64_t until) {
    struct epoll_event ev[256];
    uint64_t now;
    while ((now = net_now_ms()) < until) {
        int i, n = epoll_wait(ep, ev, 256, (int)(until - now < 20 ? until - now : 20));
        for (i = 0; i < n; i++) on_event((lc *)ev[i].data.ptr, ev[i].events);
        tick(net_now_ms());
    }
}

static int in_windows(uint64_t t, const uint64_t (*w)[2], size_t nw, uint64_t grace) {
    size_t i;
    for (i = 0; i < nw; i++)
        if (t + 1000 >= w[i][0] && t <= w[i][1] + grace) return 1;
    return 0;
}

int main(int argc, char **argv) {
    unsigned steady_n = 40, rate = 20, burst = 100, burst_ms = 1000, seconds = 30, i;
    uint64_t grace = 8000, start, end, next_pub, next_bulk, next_burst, now;
    const char *windows_path = NULL;
    lc **steady;
    struct rlimit rl;
    char what[400];
    static char bulk[16384 + 200];
    uint64_t (*win)[2] = NULL;
    size_t nwin = 0;
    unsigned long owed_missing = 0, excused = 0, dups = 0, delivered = 0, ready = 0;
    long long final_n;
    for (i = 1; i < (unsigned)argc; i++) {
        const char *v = i + 1 < (unsigned)argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (strcmp(argv[i], "--port") == 0 && net_parse_port(v, &ports[0]) == NET_OK) i++;
        else if (strcmp(argv[i], "--port2") == 0 && net_parse_port(v, &ports[1]) == NET_OK) { nports = 2; i++; }
        else if (strcmp(argv[i], "--seconds") == 0 && atoi(v) > 0) seconds = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--steady") == 0 && atoi(v) > 0) steady_n = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--rate") == 0 && atoi(v) > 0 && atoi(v) <= 1000) rate = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--burst") == 0 && atoi(v) > 0) burst = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--burst-ms") == 0 && atoi(v) > 0) burst_ms = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--grace-ms") == 0 && atoi(v) >= 0) grace = (uint64_t)atoi(argv[++i]);
        else if (strcmp(argv[i], "--windows") == 0) windows_path = argv[++i];
        else if (strcmp(argv[i], "--vanish-ms") == 0 && atoi(v) > 0) vanish_ms = (unsigned)atoi(argv[++i]);
        else goto usage;
    }
    if (!ports[0]) goto usage;
    (void)now_us;       /* load_util.h's, unused here */
    (void)send_text;
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    net_random_bytes(&rng, sizeof rng, NULL);
    rng |= 1u;
    ep = epoll_create1(0);
    pub_cap = (long long)rate * (seconds + 5) + 16;
    pub_ms = (uint64_t *)calloc((size_t)pub_cap, sizeof *pub_ms);
    steady = (lc **)calloc(steady_n + 1, sizeof *steady);
    if (ep < 0 || !pub_ms || !steady) return 1;

    /* The steady subscribers and the publisher, all in before the first publish. */
    steady[0] = open_conn(K_PUBLISHER, 0);
    for (i = 1; i <= steady_n; i++) steady[i] = open_conn(K_STEADY, (int)(i % (unsigned)nports));
    start = net_now_ms();
    while (net_now_ms() < start + 30000) {
        ready = 0;
        for (i = 0; i <= steady_n; i++)
            if (steady[i] && steady[i]->subscribed >= (steady[i]->kind == K_PUBLISHER ? 2 : 1)) ready++;
        if (ready == steady_n + 1) break;
        pump(net_now_ms() + 50);
    }
    snprintf(what, sizeof what, "%lu of %u steady subscribers and the publisher in", ready, steady_n + 1);
    result(ready == steady_n + 1, what);
    if (ready != steady_n + 1) goto report;

    memset(bulk, 0, sizeof bulk);
    {
        size_t at = (size_t)snprintf(bulk, sizeof bulk,
                                     "{\"type\":\"publish\",\"payload\":{\"channel\":\"bulk\",\"data\":\"");
        memset(bulk + at, 'x', 16384);
        memcpy(bulk + at + 16384, "\"}}", 4);
    }
    start = net_now_ms();
    end = start + (uint64_t)seconds * 1000u;
    next_pub = next_bulk = next_burst = start;
    printf("soak_load: %u s, %u steady subscribers over %d server(s), %u messages/s, bursts of %u every %u ms\n",
           seconds, steady_n, nports, rate, burst, burst_ms);
    fflush(stdout);
    while ((now = net_now_ms()) < end) {
        lc *pub = steady[0];
        if (pub->state != S_OPEN) break;
        while (now >= next_pub && published + 1 < pub_cap) {
            char msg[160];
            published++;
            pub_ms[published] = net_now_ms();
            snprintf(msg, sizeof msg, "{\"type\":\"publish\",\"payload\":{\"channel\":\"soak\",\"data\":{\"n\":%lld}}}",
                     published);
            if (send_json(pub, msg) != 0) {
                finish(pub, 0, 0);
                break;
            }
            next_pub += 1000u / rate;
        }
        if (now >= next_bulk && pub->state == S_OPEN) {
            if (send_json(pub, bulk) != 0) finish(pub, 0, 0);
            next_bulk += 500;
        }
        if (now >= next_burst) {
            for (i = 0; i < burst; i++) {
                unsigned r = rnd(100);
                int kind = r < 5 ? K_SLOW : r < 10 ? K_VANISH : r < 12 ? K_GARBAGE : K_CHURN;
                (void)open_conn(kind, (int)rnd((unsigned)nports));
            }
            next_burst += burst_ms;
        }
        pump(now + 10);
    }
    final_n = published;
    result(steady[0]->state == S_OPEN, "the publisher's connection held for the whole run");
    pump(net_now_ms() + 3000);      /* the last messages drain */

report:
    if (windows_path) {
        FILE *f = fopen(windows_path, "r");
        unsigned long long a, b;
        win = (uint64_t (*)[2])calloc(64, sizeof *win);
        while (f && win && nwin < 64 && fscanf(f, "%llu %llu", &a, &b) == 2) {
            win[nwin][0] = a;
            win[nwin][1] = b;
            nwin++;
        }
        if (f) fclose(f);
    }
    final_n = published;
    for (i = 0; i <= steady_n; i++) {
        lc *c = steady[i];
        unsigned g;
        long long n;
        if (!c) continue;
        if (c->last < final_n && c->ngaps < MAX_GAPS) {     /* the tail never came */
            c->gaps[c->ngaps][0] = c->last + 1;
            c->gaps[c->ngaps][1] = final_n;
            c->ngaps++;
        }
        delivered += c->received;
        dups += c->dups;
        if (c->gaps_lost) owed_missing += c->gaps_lost;
        for (g = 0; g < c->ngaps; g++) {
            for (n = c->gaps[g][0]; n <= c->gaps[g][1] && n <= final_n; n++) {
                /* Refused for everyone while Redis could not number it. */
                if (in_windows(pub_ms[n], (const uint64_t (*)[2])win, nwin, grace)) excused++;
                else owed_missing++;
            }
        }
    }
    snprintf(what, sizeof what,
             "every well-behaved subscriber got every message it was owed: %lld published, %lu deliveries, %lu "
             "missing, %lu duplicates or out of order, %lu not owed (published while Redis was disrupted)",
             final_n, delivered, owed_missing, dups, excused);
    result(final_n > 0 && owed_missing == 0 && dups == 0, what);
    snprintf(what, sizeof what, "churners answered: %lu opened, %lu left cleanly, %lu failed (%lu unanswered)",
             opened[K_CHURN], ended_ok[K_CHURN], failed[K_CHURN], churn_unanswered);
    result(failed[K_CHURN] == 0, what);
    snprintf(what, sizeof what, "protocol garbage closed by the server: %lu of %lu (%lu still open after 10 s)",
             ended_ok[K_GARBAGE], opened[K_GARBAGE], garbage_unclosed);
    result(garbage_unclosed == 0, what);
    {
        unsigned long total = 0;
        int k;
        printf("soak_load: {\"opened\":{");
        for (k = 0; k < K_KINDS; k++) {
            printf("%s\"%s\":%lu", k ? "," : "", kind_names[k], opened[k]);
            total += opened[k];
        }
        printf("},\"connections\":%lu,\"published\":%lld,\"delivered\":%lu,\"missing\":%lu,\"excused\":%lu,"
               "\"duplicates\":%lu}\n",
               total, final_n, delivered, owed_missing, excused, dups);
    }
    /* Everything still open goes now (the vanishing ones with a reset). */
    while (live) {
        lc *c = live;
        live = c->next;
        if (c->state != S_DONE) finish(c, 1, c->kind == K_VANISH);
        if (c->kind != K_STEADY && c->kind != K_PUBLISHER) {
            free(c->buf);
            free(c);
        }
    }
    for (i = 0; i <= steady_n; i++) {
        if (steady[i] && steady[i]->state != S_DONE) finish(steady[i], 1, 0);
        if (steady[i]) free(steady[i]->buf);
        free(steady[i]);
    }
    free(steady);
    free(pub_ms);
    free(win);
    close(ep);
    printf("Pass: %d, fail: %d, skip: 0.\n", pass_count, fail_count);
    return fail_count != 0;
usage:
    fprintf(stderr, "usage: soak_load --port P [--port2 P2] [--seconds S] [--steady N] [--rate R] [--burst N]\n"
                    "                 [--burst-ms MS] [--vanish-ms MS] [--windows FILE] [--grace-ms MS]\n");
    return 2;
}
