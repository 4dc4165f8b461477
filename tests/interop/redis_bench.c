/* redis_bench - delivery through Redis between two chat_server processes.

   Opens N WebSocket connections spread evenly over two chat_servers that
   share one Redis (--redis), subscribes all of them to one channel, and has
   one client on the first server publish. Half the subscribers are local to
   the publisher; the other half get every message through Redis (PUBLISH
   on one process, the other's subscriber connection, then its local fan-out).
     latency:    --rounds messages one at a time; for each, the time from the
                 publish to each delivery, split into local and remote
                 recipients (percentiles over all deliveries);
     throughput: --burst messages sent back to back; deliveries per second
                 from the first publish to the last delivery, and whether
                 every subscriber got every message exactly once.
   Each message carries its send time (CLOCK_MONOTONIC, same machine).

   Build:  cc -std=c99 -O2 -D_GNU_SOURCE -I. -o build/redis_bench tests/interop/redis_bench.c
   Run:    redis-server --port 6390 --save '' --appendonly no &
           build/chat_server --port 8081 --redis 127.0.0.1:6390 &
           build/chat_server --port 8082 --redis 127.0.0.1:6390 &
           build/redis_bench --port 8081 --port2 8082 --clients 1000
   Prints the measurements, then greatest's summary line. */
#include "net_util.h"
#include "load_util.h"

#include <sys/epoll.h>
#include <sys/resource.h>

#define MAX_MSGS 20000u

typedef struct bc {
    int fd;
    int state;                  /* 0 connecting, 1 upgrade sent, 2 open, 3 failed */
    int remote;                 /* on the other server than the publisher */
    uint16_t port;
    size_t len;
    unsigned got;               /* messages of the current phase seen */
    unsigned dups;
    unsigned char *seen;        /* bitmap over message ids */
    unsigned char buf[8192];
} bc;

static bc *conns;
static int ep;
static size_t n_conns, welcomed, acked, failed;
static unsigned phase_lo, phase_hi;       /* ids of the current phase: [lo, hi) */
static size_t phase_done;                 /* clients that saw every id of the phase */
static uint64_t last_delivery;
static uint64_t *lat_local, *lat_remote;  /* microseconds, one per delivery */
static size_t n_local, n_remote, lat_cap;

static void on_frame(bc *c, const unsigned char *p, size_t n) {
    char text[600];
    const char *d;
    if (n >= sizeof text) n = sizeof text - 1;
    memcpy(text, p, n);
    text[n] = '\0';
    if (strstr(text, "\"type\":\"welcome\"")) {
        welcomed++;
    } else if (strstr(text, "\"type\":\"subscribed\"")) {
        acked++;
    } else if (strstr(text, "\"type\":\"message\"") && (d = strstr(text, "\"data\":[")) != NULL) {
        char *end;
        unsigned long id = strtoul(d + 8, &end, 10);
        uint64_t sent = *end == ',' ? (uint64_t)strtoull(end + 1, NULL, 10) : 0, t = now_us();
        if (id >= MAX_MSGS) return;
        if (c->seen[id / 8] & (1u << (id % 8))) {
            c->dups++;
            return;
        }
        c->seen[id / 8] |= (unsigned char)(1u << (id % 8));
        if (id < phase_lo || id >= phase_hi) return;    /* a late warm-up probe */
        last_delivery = t;
        if (sent && t >= sent && n_local < lat_cap && n_remote < lat_cap) {
            if (c->remote) lat_remote[n_remote++] = t - sent;
            else lat_local[n_local++] = t - sent;
        }
        if (++c->got == phase_hi - phase_lo) phase_done++;
    }
}

static void fail_conn(bc *c) {
    if (c->state != 3) failed++;
    c->state = 3;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
}

/* Consumes the upgrade answer and every complete frame in c->buf. */
static void parse(bc *c) {
    size_t at = 0;
    if (c->state == 1) {
        unsigned char *end = (unsigned char *)memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end) return;
        if (memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
            fail_conn(c);
            return;
        }
        at = (size_t)(end + 4 - c->buf);
        c->state = 2;
    }
    while (c->state == 2 && c->len - at >= 2) {
        size_t h = 2, n = c->buf[at + 1] & 0x7Fu;
        if (n == 126) {
            if (c->len - at < 4) break;
            n = (size_t)c->buf[at + 2] << 8 | c->buf[at + 3];
            h = 4;
        } else if (n == 127) {
            fail_conn(c);
            return;
        }
        if (c->len - at < h + n) break;
        on_frame(c, c->buf + at + h, n);
        at += h + n;
    }
    memmove(c->buf, c->buf + at, c->len - at);
    c->len -= at;
}

static void on_readable(bc *c) {
    for (;;) {
        size_t room = sizeof c->buf - c->len;
        long n;
        if (room == 0) {            /* a frame larger than anything we expect */
            fail_conn(c);
            return;
        }
        n = net_read(c->fd, c->buf + c->len, room);
        if (n == NET_AGAIN) return;
        if (n < 0) {
            fail_conn(c);
            return;
        }
        c->len += (size_t)n;
        parse(c);
        if (c->state == 3 || (size_t)n < room) return;     /* a short read drained the socket */
    }
}

static void on_event(bc *c, uint32_t events) {
    if (c->state == 0 && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        struct epoll_event e;
        char req[256];
        int len;
        if (net_connect_finish(c->fd) != NET_OK) {
            fail_conn(c);
            return;
        }
        memset(&e, 0, sizeof e);
        e.events = EPOLLIN;
        e.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
        len = snprintf(req, sizeof req,
                       "GET /ws?token=u%u HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n",
                       (unsigned)(c - conns));
        if (send_all(c->fd, req, (size_t)len) != 0) {
            fail_conn(c);
            return;
        }
        c->state = 1;
    } else if (c->state == 1 || c->state == 2) {
        on_readable(c);
    }
}

/* Handles what is ready now, waiting at most wait_ms for something. */
static void poll_once(int wait_ms) {
    struct epoll_event ev[512];
    int i, n = epoll_wait(ep, ev, 512, wait_ms);
    for (i = 0; i < n; i++) on_event((bc *)ev[i].data.ptr, ev[i].events);
}

/* Runs the loop until done() or timeout_ms; 1 when done. */
static int pump(int (*done)(void), int timeout_ms) {
    uint64_t deadline = net_now_ms() + (uint64_t)timeout_ms;
    while (!done()) {
        uint64_t now = net_now_ms();
        if (now >= deadline) return 0;
        poll_once(deadline - now < 50 ? (int)(deadline - now) : 50);
    }
    return 1;
}

static size_t target;
static int all_welcomed(void) { return welcomed + failed >= target; }
static int all_acked(void) { return acked + failed >= n_conns; }
static int phase_complete(void) { return phase_done + failed >= n_conns; }
static int never(void) { return 0; }

static void start_phase(unsigned lo, unsigned hi) {
    size_t i;
    phase_lo = lo;
    phase_hi = hi;
    phase_done = 0;
    for (i = 0; i < n_conns; i++) conns[i].got = 0;
}

static int publish(bc *pub, unsigned id) {
    char msg[160];
    snprintf(msg, sizeof msg, "{\"type\":\"publish\",\"payload\":{\"channel\":\"bench\",\"data\":[%u,%llu]}}", id,
             (unsigned long long)now_us());
    return send_text(pub->fd, msg);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void percentiles(const char *what, uint64_t *v, size_t n) {
    if (n == 0) {
        printf("%s: no deliveries\n", what);
        return;
    }
    qsort(v, n, sizeof *v, cmp_u64);
    printf("%s: %lu deliveries, latency p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms\n", what, (unsigned long)n,
           (double)v[n / 2] / 1000.0, (double)v[n * 9 / 10] / 1000.0, (double)v[n * 99 / 100] / 1000.0,
           (double)v[n - 1] / 1000.0);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    uint16_t ports[2] = {8081, 8082};
    size_t i, inflight_max = 256, dups = 0, complete = 0;
    unsigned rounds = 50, burst = 200, r, id = 0;
    uint64_t t0, t1;
    struct rlimit rl;
    char what[200];
    bc *pub;
    n_conns = 1000;
    for (i = 1; i < (size_t)argc; i += 2) {     /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < (size_t)argc ? argv[i + 1] : NULL;
        size_t k = 0;
        int ok = v != NULL;
        if (ok && strcmp(a, "--port") == 0) ok = net_parse_port(v, &ports[0]) == NET_OK;
        else if (ok && strcmp(a, "--port2") == 0) ok = net_parse_port(v, &ports[1]) == NET_OK;
        else if (ok && strcmp(a, "--clients") == 0) ok = net_parse_size(v, &n_conns) == NET_OK && n_conns >= 2;
        else if (ok && strcmp(a, "--rounds") == 0) ok = net_parse_size(v, &k) == NET_OK && k && k < 1000;
        else if (ok && strcmp(a, "--burst") == 0) ok = net_parse_size(v, &k) == NET_OK && k && k < 10000;
        else ok = 0;
        if (!ok) {
            fprintf(stderr, "usage: redis_bench [--port A] [--port2 B] [--clients N] [--rounds N] [--burst N]\n");
            return 2;
        }
        if (strcmp(a, "--rounds") == 0) rounds = (unsigned)k;
        if (strcmp(a, "--burst") == 0) burst = (unsigned)k;
    }
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < n_conns + 64) {
            printf("redis_bench: RLIMIT_NOFILE %lu is too low for %lu connections\n", (unsigned long)rl.rlim_cur,
                   (unsigned long)n_conns);
            printf("Pass: 0, fail: 0, skip: 1.\n");
            return 0;
        }
    }
    conns = (bc *)calloc(n_conns, sizeof *conns);
    lat_cap = n_conns * (size_t)(rounds > burst ? rounds : burst);
    lat_local = (uint64_t *)calloc(lat_cap, sizeof *lat_local);
    lat_remote = (uint64_t *)calloc(lat_cap, sizeof *lat_remote);
    ep = epoll_create1(0);
    if (!conns || !lat_local || !lat_remote || ep < 0) return 1;
    for (i = 0; i < n_conns; i++) {
        conns[i].seen = (unsigned char *)calloc(MAX_MSGS / 8, 1);
        if (!conns[i].seen) return 1;
        conns[i].port = ports[i % 2];       /* even: the publisher's server, odd: the other */
        conns[i].remote = (int)(i % 2);
    }

    /* Connect in waves so the listen backlogs never overflow. */
    t0 = now_us();
    for (i = 0; i < n_conns; i += inflight_max) {
        size_t k, end = i + inflight_max < n_conns ? i + inflight_max : n_conns;
        for (k = i; k < end; k++) {
            int inprog;
            struct epoll_event e;
            bc *c = &conns[k];
            c->fd = net_connect(host, c->port, &inprog);
            if (c->fd < 0) {
                c->state = 3;
                failed++;
                continue;
            }
            memset(&e, 0, sizeof e);
            e.events = EPOLLOUT;
            e.data.ptr = c;
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
        }
        target = end;
        if (!pump(all_welcomed, 30000)) break;
    }
    snprintf(what, sizeof what, "%lu connections open over ports %u and %u (%lu failed) in %.2f s",
             (unsigned long)welcomed, (unsigned)ports[0], (unsigned)ports[1], (unsigned long)failed,
             (double)(now_us() - t0) / 1e6);
    result(welcomed == n_conns, what);
    for (i = 0; i < n_conns; i++) {
        if (conns[i].state == 2 && send_text(conns[i].fd, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"bench\"}}") != 0)
            fail_conn(&conns[i]);
    }
    pump(all_acked, 30000);
    snprintf(what, sizeof what, "%lu subscribed to one channel", (unsigned long)acked);
    result(acked == n_conns, what);
    pub = &conns[0];
    if (failed || pub->state != 2) goto out;

    /* Warm-up: the other process's SUBSCRIBE reaches Redis asynchronously;
       probe until a message reaches everyone (ids from MAX_MSGS - 100 up). */
    for (r = 0; r < 50; r++) {
        start_phase(MAX_MSGS - 100 + r, MAX_MSGS - 100 + r + 1);
        publish(pub, MAX_MSGS - 100 + r);
        if (pump(phase_complete, 200)) break;
    }
    (void)pump(never, 200); /* late probes land now, not in the measurements */
    snprintf(what, sizeof what, "both processes deliver (after %u probe%s)", r + 1, r ? "s" : "");
    result(r < 50, what);
    if (r == 50) goto out;

    /* Latency: one message at a time. */
    n_local = n_remote = 0;
    complete = 0;
    for (r = 0; r < rounds; r++, id++) {
        start_phase(id, id + 1);
        if (publish(pub, id) != 0) break;
        complete += (size_t)pump(phase_complete, 10000);
    }
    snprintf(what, sizeof what, "latency: %u of %u messages reached all %lu subscribers", (unsigned)complete, rounds,
             (unsigned long)n_conns);
    result(complete == rounds, what);
    percentiles("  local (publisher's process)", lat_local, n_local);
    percentiles("  remote (through Redis)     ", lat_remote, n_remote);

    /* Throughput: a burst, back to back. */
    n_local = n_remote = 0;
    start_phase(id, id + burst);
    t0 = now_us();
    for (r = 0; r < burst; r++) {
        if (publish(pub, id + r) != 0) break;
        if ((r & 15u) == 15u) poll_once(0);     /* keep reading while sending */
    }
    complete = (size_t)pump(phase_complete, 60000);
    t1 = last_delivery > t0 ? last_delivery : now_us();
    for (i = 0; i < n_conns; i++) dups += conns[i].dups;
    snprintf(what, sizeof what,
             "throughput: %u messages x %lu subscribers = %lu deliveries in %.3f s: %.0f deliveries/s, %.0f "
             "messages/s; every one exactly once (%lu duplicates)",
             burst, (unsigned long)n_conns, (unsigned long)((size_t)burst * n_conns), (double)(t1 - t0) / 1e6,
             (double)burst * (double)n_conns * 1e6 / (double)(t1 - t0 ? t1 - t0 : 1),
             (double)burst * 1e6 / (double)(t1 - t0 ? t1 - t0 : 1), (unsigned long)dups);
    result(complete && dups == 0, what);
    percentiles("  local, under the burst ", lat_local, n_local);
    percentiles("  remote, under the burst", lat_remote, n_remote);
out:
    for (i = 0; i < n_conns; i++) {
        if (conns[i].fd > 0) close(conns[i].fd);
        free(conns[i].seen);
    }
    free(conns);
    free(lat_local);
    free(lat_remote);
    close(ep);
    printf("Pass: %d, fail: %d, skip: 0.\n", pass_count, fail_count);
    return fail_count != 0;
}
