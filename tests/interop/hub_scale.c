/* hub_scale - opens N WebSocket connections to one chat_server, subscribes
   all of them to one channel, has one of them publish, and measures the time
   from the publish to the last delivery; reads the library's heap bytes from
   /api/stats (the server counts them through the allocator hook) while the
   connections are idle, before and after they subscribe.

   Build:  cc -std=c99 -O2 -D_GNU_SOURCE -I. -o build/hub_scale tests/interop/hub_scale.c
   Run:    build/chat_server --port 8080 --max-clients 20000 &
           build/hub_scale --port 8080 --clients 10000 --rounds 5
   Prints the measurements, then greatest's summary line (one case per
   phase: connect, subscribe, every round delivered to all). */
#include "net_util.h"
#include "load_util.h"

#include <sys/epoll.h>
#include <sys/resource.h>

typedef struct lc {
    int fd;
    int state;                  /* 0 connecting, 1 upgrade sent, 2 open, 3 failed */
    unsigned rounds_seen;       /* bitmask of rounds delivered */
    size_t len;
    unsigned char buf[1024];
} lc;

static lc *conns;
static int ep;
static size_t welcomed, acked, failed;
static size_t delivered[64];
static uint64_t last_delivery[64];

static void on_frame(lc *c, const unsigned char *p, size_t n) {
    char text[600];
    const char *r;
    if (n >= sizeof text) n = sizeof text - 1;
    memcpy(text, p, n);
    text[n] = '\0';
    if (strstr(text, "\"type\":\"welcome\"")) welcomed++;
    else if (strstr(text, "\"type\":\"subscribed\"")) acked++;
    else if (strstr(text, "\"type\":\"message\"") && (r = strstr(text, "\"data\":")) != NULL) {
        unsigned round = (unsigned)atoi(r + 7);
        if (round < 64 && !(c->rounds_seen & (1u << round))) {
            c->rounds_seen |= 1u << round;
            delivered[round]++;
            last_delivery[round] = now_us();
        }
    }
}

static void on_readable(lc *c) {
    for (;;) {
        long n;
        if (c->len == sizeof c->buf) {  /* nothing we expect is this big */
            c->state = 3;
            failed++;
            return;
        }
        n = net_read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (n == NET_AGAIN) break;
        if (n < 0) {
            if (c->state != 3) failed++;
            c->state = 3;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            return;
        }
        c->len += (size_t)n;
    }
    if (c->state == 1) {
        unsigned char *end = (unsigned char *)memmem(c->buf, c->len, "\r\n\r\n", 4);
        size_t head;
        if (!end) return;
        if (memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
            c->state = 3;
            failed++;
            return;
        }
        head = (size_t)(end + 4 - c->buf);
        memmove(c->buf, c->buf + head, c->len - head);
        c->len -= head;
        c->state = 2;
    }
    while (c->state == 2 && c->len >= 2) {
        size_t h = 2, n = c->buf[1] & 0x7Fu;
        if (n == 126) {
            if (c->len < 4) break;
            n = (size_t)c->buf[2] << 8 | c->buf[3];
            h = 4;
        } else if (n == 127) {
            c->state = 3;
            failed++;
            return;
        }
        if (c->len < h + n) break;
        on_frame(c, c->buf + h, n);
        memmove(c->buf, c->buf + h + n, c->len - h - n);
        c->len -= h + n;
    }
}

/* Runs the loop until done() or timeout_ms. */
static int pump(int (*done)(void), int timeout_ms) {
    uint64_t deadline = net_now_ms() + (uint64_t)timeout_ms;
    struct epoll_event ev[512];
    while (!done()) {
        int i, n;
        if (net_now_ms() > deadline) return 0;
        n = epoll_wait(ep, ev, 512, 100);
        for (i = 0; i < n; i++) {
            lc *c = (lc *)ev[i].data.ptr;
            if (c->state == 0 && (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                struct epoll_event e;
                if (net_connect_finish(c->fd) != NET_OK) {
                    c->state = 3;
                    failed++;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    continue;
                }
                memset(&e, 0, sizeof e);
                e.events = EPOLLIN;
                e.data.ptr = c;
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
                {
                    char req[256];
                    int len = snprintf(req, sizeof req,
                                       "GET /ws?token=u%u HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                       "Sec-WebSocket-Version: 13\r\n\r\n",
                                       (unsigned)(c - conns));
                    if (send_all(c->fd, req, (size_t)len) != 0) {
                        c->state = 3;
                        failed++;
                        continue;
                    }
                }
                c->state = 1;
            } else if (c->state == 1 || c->state == 2) {
                on_readable(c);
            }
        }
    }
    return 1;
}

static size_t target;
static unsigned cur_round;
static int all_welcomed(void) { return welcomed + failed >= target; }
static int all_acked(void) { return acked + failed >= target; }
static int round_done(void) { return delivered[cur_round] + failed >= target; }

/* GET /api/stats and pick one number. */
static long long server_stat(const char *host, uint16_t port, const char *key) {
    char req[128], resp[4096], pat[64];
    size_t len = 0;
    const char *p;
    int fd = net_connect_wait(host, port, 5000);
    if (fd < 0) return -1;
    snprintf(req, sizeof req, "GET /api/stats HTTP/1.1\r\nHost: %s\r\n\r\n", host);
    if (send_all(fd, req, strlen(req)) != 0) {
        close(fd);
        return -1;
    }
    for (;;) {
        struct pollfd pf;
        long n;
        pf.fd = fd;
        pf.events = POLLIN;
        if (poll(&pf, 1, 5000) <= 0) break;
        n = net_read(fd, resp + len, sizeof resp - 1 - len);
        if (n == NET_AGAIN) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fd);
    resp[len] = '\0';
    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(resp, pat);
    return p ? atoll(p + strlen(pat)) : -1;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    uint16_t port = 8080;
    size_t n = 10000, i, inflight_max = 512;
    unsigned rounds = 5, r;
    uint64_t t0, times[64];
    long long heap0, heap_idle, heap_sub, open_now;
    struct rlimit rl;
    char what[160];
    for (i = 1; i < (size_t)argc; i++) {
        const char *v = i + 1 < (size_t)argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--port") == 0 && v && net_parse_port(v, &port) == NET_OK) i++;
        else if (strcmp(argv[i], "--clients") == 0 && v && net_parse_size(v, &n) == NET_OK && n) i++;
        else if (strcmp(argv[i], "--rounds") == 0 && v && atoi(v) > 0 && atoi(v) < 64) rounds = (unsigned)atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: hub_scale [--port N] [--clients N] [--rounds N]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < n + 64) {
            printf("hub_scale: RLIMIT_NOFILE %lu is too low for %lu connections\n", (unsigned long)rl.rlim_cur,
                   (unsigned long)n);
            printf("Pass: 0, fail: 0, skip: 1.\n");
            return 0;
        }
    }
    heap0 = server_stat(host, port, "heap_bytes");
    if (heap0 < 0) {
        printf("FAIL cannot read /api/stats from %s:%u\nPass: 0, fail: 1, skip: 0.\n", host, (unsigned)port);
        return 1;
    }
    conns = (lc *)calloc(n, sizeof *conns);
    ep = epoll_create1(0);
    if (!conns || ep < 0) return 1;

    /* Connect in waves so the listen backlog never overflows. */
    t0 = now_us();
    target = 0;
    for (i = 0; i < n; i += inflight_max) {
        size_t k, end = i + inflight_max < n ? i + inflight_max : n;
        for (k = i; k < end; k++) {
            int inprog;
            struct epoll_event e;
            lc *c = &conns[k];
            c->fd = net_connect(host, port, &inprog);
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
    snprintf(what, sizeof what, "%lu connections open (%lu failed) in %.2f s", (unsigned long)welcomed,
             (unsigned long)failed, (double)(now_us() - t0) / 1e6);
    result(welcomed == n, what);
    open_now = server_stat(host, port, "open");
    heap_idle = server_stat(host, port, "heap_bytes");

    t0 = now_us();
    for (i = 0; i < n; i++) {
        if (conns[i].state == 2 && send_text(conns[i].fd, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"all\"}}") != 0) {
            conns[i].state = 3;
            failed++;
        }
    }
    target = n;
    pump(all_acked, 30000);
    snprintf(what, sizeof what, "%lu subscribed in %.2f s", (unsigned long)acked, (double)(now_us() - t0) / 1e6);
    result(acked == n, what);
    heap_sub = server_stat(host, port, "heap_bytes");

    for (r = 0; r < rounds; r++) {
        char msg[128];
        int ok;
        cur_round = r;
        snprintf(msg, sizeof msg, "{\"type\":\"publish\",\"payload\":{\"channel\":\"all\",\"data\":%u}}", r);
        t0 = now_us();
        if (send_text(conns[r % n].fd, msg) != 0) break;
        ok = pump(round_done, 30000);
        times[r] = last_delivery[r] > t0 ? last_delivery[r] - t0 : 0;
        snprintf(what, sizeof what, "broadcast %u: %lu of %lu delivered, last after %.2f ms", r,
                 (unsigned long)delivered[r], (unsigned long)n, (double)times[r] / 1000.0);
        result(ok && delivered[r] == n, what);
    }
    if (r == rounds) {
        qsort(times, rounds, sizeof times[0], cmp_u64);
        printf("publish to last delivery over %u broadcasts to %lu subscribers: median %.2f ms, min %.2f ms, "
               "max %.2f ms (%.0f deliveries/s at the median)\n",
               rounds, (unsigned long)n, (double)times[rounds / 2] / 1000.0, (double)times[0] / 1000.0,
               (double)times[rounds - 1] / 1000.0, times[rounds / 2] ? (double)n * 1e6 / (double)times[rounds / 2] : 0.0);
    }
    printf("server: %lld open; library heap %lld bytes before, %lld with %lu idle connections (%.0f bytes each), "
           "%lld subscribed to one channel (%.0f bytes each)\n",
           open_now, heap0, heap_idle, (unsigned long)n, (double)(heap_idle - heap0) / (double)n, heap_sub,
           (double)(heap_sub - heap0) / (double)n);
    for (i = 0; i < n; i++) {
        if (conns[i].fd > 0) close(conns[i].fd);
    }
    free(conns);
    close(ep);
    printf("Pass: %d, fail: %d, skip: 0.\n", pass_count, fail_count);
    return fail_count != 0;
}
