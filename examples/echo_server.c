/* echo_server - a WebSocket echo server on one thread and epoll.

   Shows wsch_conn in the server role on real sockets: every text and binary
   message is sent back on any path; partial writes are queued by the library
   and flushed on EPOLLOUT (wsch_conn_writable), and what to wait for comes
   from wsch_conn_want(); a connection whose outbound queue passes a
   high-water mark is not read from until it drains (backpressure); the
   library's handshake and close timers run on a deadline heap; the library
   calls the close effect once per connection, last, and the loop frees the
   connection after that event. A connection that moves no byte for half the
   idle timeout gets a ping; one still silent at the full timeout (a
   half-open peer, or one that sends and never reads) is closed, and its fd
   is freed at most the close handshake's 5 s later. This is the server the
   Autobahn TestSuite's
   fuzzing client and the interop tests talk to.

   Build:  cc -std=c99 -O2 -D_GNU_SOURCE -I. -o build/echo_server examples/echo_server.c
   Run:    build/echo_server --port 9001     (--port 0 picks a free port and prints it)
           [--idle-timeout S]  (default 60; 0 = never)
   Autobahn TestSuite (sections 1-7, 9, 10, and with --deflate 12 and 13,
   permessage-deflate; where its container can run):
     build/echo_server --port 9001 --deflate &
     docker run --rm --network host -v "$PWD/tests/autobahn:/config" -v "$PWD/build/autobahn:/reports" \
         crossbario/autobahn-testsuite wstest -m fuzzingclient -s /config/fuzzingclient.json */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include "example_net.h"

#include <sys/epoll.h>

#define READ_BUF_SIZE (256u * 1024u)

typedef struct server server;

typedef struct conn {
    net_ws w;               /* first member: the library's user pointer is the net_ws */
    uint32_t events;        /* epoll interest registered now */
    uint64_t active_ms;     /* the last readiness event: bytes in, or room for bytes out */
    int pinged;             /* a ping went out in this silence */
    struct conn *prev, *next;
} conn;

struct server {
    int ep;
    int lfd;
    wsch_conn_desc desc;    /* one descriptor shared by every connection */
    net_timers timers;      /* every connection's deadlines */
    size_t high_water;
    uint64_t idle_ms;       /* close after this long without a readiness event; 0 = never */
    uint64_t next_sweep_ms;
    int verbose;
    conn *conns;
    unsigned char buf[READ_BUF_SIZE];   /* one read buffer: the loop is single-threaded */
};

static void on_message(wsch_conn *c, wsch_opcode opcode, void *data, size_t len, void *user) {
    net_ws *w = (net_ws *)user;
    int rc = wsch_conn_send(c, opcode, data, len);
    if (rc == WSCH_ERR_QUEUE_FULL) {
        /* Only a peer that ignores our backpressure gets here. */
        wsch_conn_close(c, WSCH_CLOSE_POLICY_VIOLATION, "slow consumer", WSCH_CSTR);
    } else if (rc != WSCH_OK && ((server *)w->app)->verbose) {
        fprintf(stderr, "fd %d: echo failed: %s\n", w->fd, wsch_err_str(rc));
    }
}

static void on_open(wsch_conn *c, void *user) {
    net_ws *w = (net_ws *)user;
    (void)c;
    if (((server *)w->app)->verbose) fprintf(stderr, "fd %d: open\n", w->fd);
}

static void on_closed(wsch_conn *c, int code, const char *reason, size_t reason_len, void *user) {
    net_ws *w = (net_ws *)user;
    (void)c;
    if (((server *)w->app)->verbose)
        fprintf(stderr, "fd %d: closed, code %d \"%.*s\"\n", w->fd, code, (int)reason_len, reason ? reason : "");
}

static void conn_free(server *s, conn *k) {
    net_ws_release(&k->w);  /* closing the fd also drops it from the epoll set */
    if (k->prev) k->prev->next = k->next;
    else s->conns = k->next;
    if (k->next) k->next->prev = k->prev;
    free(k);
}

/* After every event of k: free it once the library is done with it, else
   wait for what it wants now. Only k's own events finish k, and epoll
   reports each socket once per batch, so no later event names a freed conn. */
static void conn_update(server *s, conn *k) {
    struct epoll_event ev;
    if (net_ws_finished(&k->w)) {
        conn_free(s, k);
        return;
    }
    memset(&ev, 0, sizeof ev);
    ev.events = net_ws_update(&k->w);       /* POLLIN/POLLOUT have the EPOLLIN/EPOLLOUT values */
    ev.data.ptr = k;
    if (ev.events != k->events && epoll_ctl(s->ep, EPOLL_CTL_MOD, k->w.fd, &ev) == 0) k->events = ev.events;
}

static void conn_accept(server *s, int fd) {
    struct epoll_event ev;
    int rc;
    conn *k = (conn *)calloc(1, sizeof *k);
    if (!k) {
        close(fd);
        return;
    }
    net_ws_init(&k->w, fd, &s->timers, WSCH_ROLE_SERVER);
    k->w.high_water = s->high_water;
    k->w.app = s;
    k->active_ms = net_now_ms();
    k->next = s->conns;
    if (s->conns) s->conns->prev = k;
    s->conns = k;
    rc = wsch_conn_create(&s->desc, &k->w, &k->w.conn);
    if (rc != WSCH_OK) {
        fprintf(stderr, "echo_server: wsch_conn_create: %s\n", wsch_err_str(rc));
        conn_free(s, k);
        return;
    }
    k->events = EPOLLIN;
    memset(&ev, 0, sizeof ev);
    ev.events = k->events;
    ev.data.ptr = k;
    if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev) < 0) conn_free(s, k);
}

static void accept_all(server *s) {
    for (;;) {
        int fd = net_accept(s->lfd);
        if (fd == NET_AGAIN) return;
        if (fd == NET_SHED) continue;   /* out of descriptors: one closed unserved */
        if (fd < 0) {
            if (errno != ECONNABORTED) perror("echo_server: accept");
            return;
        }
        conn_accept(s, fd);
    }
}

/* Once a second: a ping to connections silent for half the idle timeout,
   a close (1000 "Idle timeout") to those silent for all of it. A peer that
   never reads cannot take the close frame either; the library's close
   timeout (5 s) then drops the transport. O(connections) a second. */
static void idle_sweep(server *s, uint64_t now) {
    conn *k = s->conns;
    if (s->idle_ms == 0 || now < s->next_sweep_ms) return;
    s->next_sweep_ms = now + 1000u;
    while (k) {
        conn *next = k->next;
        uint64_t quiet = now - k->active_ms;
        if (!net_ws_finished(&k->w) && wsch_conn_state(k->w.conn) == WSCH_STATE_OPEN) {
            if (quiet >= s->idle_ms) {
                if (s->verbose)
                    fprintf(stderr, "fd %d: idle for %llu ms, closing\n", k->w.fd, (unsigned long long)quiet);
                (void)wsch_conn_close(k->w.conn, WSCH_CLOSE_NORMAL, "Idle timeout", WSCH_CSTR);
                conn_update(s, k);
            } else if (quiet >= s->idle_ms / 2u && !k->pinged) {
                k->pinged = 1;
                (void)wsch_conn_ping(k->w.conn, NULL, 0);
                conn_update(s, k);
            }
        }
        k = next;
    }
}

static void usage(void) {
    fputs("usage: echo_server [--port N] [--host ADDR] [--max-message SIZE] [--high-water SIZE]\n"
          "                   [--idle-timeout S] [--deflate] [--verbose]\n"
          "  --port N            TCP port, 0 = any free one (default 9001)\n"
          "  --host ADDR         address to listen on (default 127.0.0.1)\n"
          "  --max-message SIZE  largest message and frame accepted, e.g. 64M (default 32M)\n"
          "  --high-water SIZE   stop reading a connection whose unsent output passes this (default 4M)\n"
          "  --idle-timeout S    ping a connection silent for S/2 seconds, close it at S (default 60;\n"
          "                      0 = never); its fd is freed at most 5 s later (the close handshake)\n"
          "  --deflate           accept permessage-deflate (needs a build with zlib)\n"
          "  --verbose           log connections to stderr\n",
          stderr);
}

int main(int argc, char **argv) {
    static server srv;      /* static: it holds the read buffer */
    server *s = &srv;
    const char *host = "127.0.0.1";
    uint16_t port = 9001, bound = 0;
    size_t max_message = 32u * 1024u * 1024u, idle_s = 60;
    struct epoll_event ev;
    int i;
    s->high_water = 4u * 1024u * 1024u;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--port") == 0 && v && net_parse_port(v, &port) == NET_OK) i++;
        else if (strcmp(a, "--host") == 0 && v) { host = v; i++; }
        else if (strcmp(a, "--max-message") == 0 && v && net_parse_size(v, &max_message) == NET_OK) i++;
        else if (strcmp(a, "--high-water") == 0 && v && net_parse_size(v, &s->high_water) == NET_OK) i++;
        else if (strcmp(a, "--idle-timeout") == 0 && v && net_parse_size(v, &idle_s) == NET_OK && idle_s <= 86400u) i++;
        else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) s->verbose = 1;
        else if (strcmp(a, "--deflate") == 0 && net_deflate_codec()) s->desc.deflate.codec = net_deflate_codec();
        else {
            usage();
            return strcmp(a, "--help") == 0 ? 0 : 2;
        }
    }
    if (max_message == 0 || s->high_water == 0) {
        usage();
        return 2;
    }
    s->idle_ms = (uint64_t)idle_s * 1000u;

    s->desc.role = WSCH_ROLE_SERVER;
    s->desc.limits.max_message_size = max_message;
    s->desc.limits.max_frame_size = max_message;
    /* Room for one echo of the largest message on top of what backpressure
       lets pile up: the high-water mark plus the echoes of one read. */
    s->desc.limits.max_outbound_bytes = max_message + s->high_water + 2u * READ_BUF_SIZE + 1024u;
    net_ws_desc(&s->desc);
    s->desc.on_open = on_open;
    s->desc.on_message = on_message;
    s->desc.on_close = on_closed;

    net_stop_on_signals();
    s->lfd = net_listen(host, port, 512, &bound);
    if (s->lfd < 0) {
        fprintf(stderr, "echo_server: cannot listen on %s:%u: %s\n", host, (unsigned)port, strerror(errno));
        return 1;
    }
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;     /* NULL marks the listening socket */
    if (s->ep < 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &ev) < 0) {
        perror("echo_server: epoll");
        return 1;
    }
    /* Tests start us with --port 0 and read the port from this line. */
    printf("echo_server: listening on ws://%s:%u/\n", host, (unsigned)bound);
    fflush(stdout);

    while (!net_stop_requested) {
        struct epoll_event events[128];
        net_timer *tm;
        uint64_t now;
        int n = epoll_wait(s->ep, events, 128, net_timers_timeout(&s->timers, 1000));
        int j;
        if (n < 0 && errno != EINTR) {
            perror("echo_server: epoll_wait");
            break;
        }
        for (j = 0; j < n; j++) {
            conn *k = (conn *)events[j].data.ptr;
            uint32_t e = events[j].events;
            if (!k) {
                accept_all(s);
                continue;
            }
            k->active_ms = net_now_ms();
            k->pinged = 0;
            if (e & EPOLLOUT) net_ws_writable(&k->w);
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) net_ws_readable(&k->w, s->buf, sizeof s->buf);
            conn_update(s, k);
        }
        now = net_now_ms();
        while ((tm = net_timers_pop_due(&s->timers, now)) != NULL) {
            conn *k = (conn *)tm->owner;    /* the net_ws is the conn's first member */
            net_ws_timer_fired(&k->w, tm->id);
            conn_update(s, k);
        }
        idle_sweep(s, now);
    }

    while (s->conns) conn_free(s, s->conns);
    net_timers_free(&s->timers);
    close(s->ep);
    close(s->lfd);
    return 0;
}
