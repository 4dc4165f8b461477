/* net_util.h - POSIX socket glue for the test-side programs (peer_client.c,
   and the load tools hub_scale.c, soak_load.c, redis_bench.c): they drive
   servers with many raw sockets and time everything, which the header's
   POSIX loop is not for. Not part of the library; the examples use the
   loop (WS_CHANNEL_POSIX). Linux: getrandom, MSG_NOSIGNAL.

   What is here, all `static inline` (a program uses any subset without
   unused-function warnings):
     net_connect / net_connect_finish   nonblocking TCP client sockets
     net_connect_wait                   connect with a deadline
     net_read / net_write               one read or write, errno folded into a result
     net_close                          close a socket without a reset eating our last bytes
     net_now_ms                         CLOCK_MONOTONIC in milliseconds
     net_random_bytes                   getrandom(), /dev/urandom as fallback
     net_parse_port / net_parse_size    command-line numbers
     net_timers_*                       a min-heap of deadlines for the library's
                                        timer_set / timer_cancel callbacks
     net_stop_on_signals                SIGINT/SIGTERM set a flag, SIGPIPE ignored
     net_ws_*                           one wsch_conn on one socket (needs
                                        ws_channel.h included first)

   Build with -D_GNU_SOURCE. Errors are reported as NET_ERR (-1) with errno
   set by the failing call; nothing here prints. */
#ifndef NET_UTIL_H
#define NET_UTIL_H

#if !defined(_GNU_SOURCE)
#error "net_util.h needs -D_GNU_SOURCE (getrandom, MSG_NOSIGNAL)"
#endif

#include "args.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum {
    NET_OK = 0,
    NET_ERR = -1,      /* errno tells why */
    NET_AGAIN = -2,    /* would block: wait for readiness and retry */
    NET_EOF = -3       /* the peer closed its side */
};

/* ---- time and randomness ------------------------------------------------ */

static inline uint64_t net_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Fills buf with len random bytes. Same signature as the descriptors'
   random_bytes callback, so it can be plugged in directly (user unused).
   Exits the program if the system has no randomness at all: a client that
   cannot mask its frames must not go on. */
static inline void net_random_bytes(void *buf, size_t len, void *user) {
    unsigned char *p = (unsigned char *)buf;
    (void)user;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            break;      /* ENOSYS and friends: fall back to the device */
        }
    }
    if (len > 0) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        while (fd >= 0 && len > 0) {
            ssize_t n = read(fd, p, len);
            if (n <= 0 && !(n < 0 && errno == EINTR)) break;
            if (n > 0) {
                p += n;
                len -= (size_t)n;
            }
        }
        if (fd >= 0) close(fd);
        if (len > 0) {
            fputs("net_util: no source of random bytes\n", stderr);
            exit(1);
        }
    }
}

/* ---- small parsing helpers ---------------------------------------------- */

/* NET_OK (0) or NET_ERR (-1), as args.h's (examples/: -Iexamples). */
#define net_parse_port args_port
#define net_parse_size args_size

/* ---- sockets ------------------------------------------------------------ */

static inline int net_set_nonblocking(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return NET_ERR;
    return NET_OK;
}

/* WebSocket traffic is many small writes that must not wait for Nagle. */
static inline void net_set_nodelay(int fd) {
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static inline int net_resolve(const char *host, uint16_t port, int passive, struct addrinfo **res) {
    struct addrinfo hints;
    char service[8];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    snprintf(service, sizeof service, "%u", (unsigned)port);
    if (getaddrinfo(host, service, &hints, res) != 0) {
        errno = EHOSTUNREACH;
        return NET_ERR;
    }
    return NET_OK;
}

/* Starts a nonblocking connect. Returns the fd; *in_progress is 1 when the
   caller must wait for the fd to become writable and then call
   net_connect_finish(). NET_ERR if no address could be tried. */
static inline int net_connect(const char *host, uint16_t port, int *in_progress) {
    struct addrinfo *res, *ai;
    int fd = -1;
    *in_progress = 0;
    if (net_resolve(host, port, 0, &res) != NET_OK) return NET_ERR;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        if (errno == EINPROGRESS) {
            *in_progress = 1;
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) return NET_ERR;
    net_set_nodelay(fd);
    return fd;
}

/* After a connect in progress became writable: NET_OK or NET_ERR (errno set). */
static inline int net_connect_finish(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return NET_ERR;
    if (err != 0) {
        errno = err;
        return NET_ERR;
    }
    return NET_OK;
}

/* Connects within timeout_ms and returns a connected nonblocking fd, or
   NET_ERR (errno ETIMEDOUT on timeout). For clients with nothing else to do. */
static inline int net_connect_wait(const char *host, uint16_t port, int timeout_ms) {
    int in_progress;
    int fd = net_connect(host, port, &in_progress);
    if (fd < 0 || !in_progress) return fd;
    for (;;) {
        struct pollfd p;
        int r;
        p.fd = fd;
        p.events = POLLOUT;
        p.revents = 0;
        r = poll(&p, 1, timeout_ms);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            close(fd);
            if (r == 0) errno = ETIMEDOUT;
            return NET_ERR;
        }
        break;
    }
    if (net_connect_finish(fd) != NET_OK) {
        int saved = errno;
        close(fd);
        errno = saved;
        return NET_ERR;
    }
    return fd;
}

/* Reads per readiness event before the loop gives timers, signals and other
   sockets a turn: a peer that floods must not starve them. */
#define NET_READS_PER_EVENT 8

/* One read. Returns bytes read (> 0), NET_AGAIN, NET_EOF or NET_ERR. */
static inline long net_read(int fd, void *buf, size_t cap) {
    for (;;) {
        ssize_t n = recv(fd, buf, cap, 0);
        if (n > 0) return (long)n;
        if (n == 0) return NET_EOF;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return NET_AGAIN;
        return NET_ERR;
    }
}

/* One write, never raising SIGPIPE. Returns bytes written (>= 0; 0 means
   the socket would block) or NET_ERR. */
static inline long net_write(int fd, const void *data, size_t len) {
    for (;;) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n >= 0) return (long)n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return NET_ERR;
    }
}

/* Closes a socket the program is done with (the close effect of the
   library calls this). Input the peer sent that was never read is
   discarded first: closing a socket with unread input makes the kernel
   answer with a reset, and a reset can destroy the last bytes we sent (our
   close frame) before the peer has read them. */
static inline void net_close(int fd) {
    char sink[4096];
    int i;
    for (i = 0; i < 16 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++) {
    }
    close(fd);
}

/* ---- timers ------------------------------------------------------------- */

/* A deadline owned by the caller (typically an array of them per
   connection, one per library timer id) and kept in a min-heap shared by
   the whole loop. Setting an armed timer moves it; cancelling removes it;
   a connection cancels its timers before it is freed, so the heap never
   points at freed memory. Wiring to a descriptor's callbacks:

       static void my_timer_set(unsigned id, uint32_t ms, void *user) {
           struct my_conn *k = user;      (k->timer[id].id = id, .owner = k, set once)
           if (id < MY_TIMERS) net_timers_set(&loop_timers, &k->timer[id], ms);
       }
       static void my_timer_cancel(unsigned id, void *user) {
           struct my_conn *k = user;
           if (id < MY_TIMERS) net_timers_cancel(&loop_timers, &k->timer[id]);
       }
       loop: wait up to net_timers_timeout(&loop_timers, -1) ms, handle I/O, then
           while ((tm = net_timers_pop_due(&loop_timers, net_now_ms())) != NULL)
               wsch_conn_timer_fired(((struct my_conn *)tm->owner)->conn, tm->id);

   (net_ws below does exactly this for a wsch_conn.) A loop whose heap holds
   timers of several kinds sets fire in each and calls tm->fire(tm) instead. */
typedef struct net_timer {
    uint64_t due;       /* net_now_ms() at which it fires */
    size_t slot;        /* position in the heap + 1; 0 = not armed */
    unsigned id;        /* free for the caller: the library's timer id */
    void *owner;        /* free for the caller: who to tell when it fires */
    void (*fire)(struct net_timer *tm);     /* free for the caller: what to run */
} net_timer;

typedef struct net_timers {
    net_timer **heap;
    size_t len, cap;
} net_timers;

static inline void net_timers__place(net_timers *t, size_t i, net_timer *tm) {
    t->heap[i] = tm;
    tm->slot = i + 1;
}

static inline void net_timers__sift(net_timers *t, size_t i) {
    net_timer *tm = t->heap[i];
    while (i > 0) {                                 /* up */
        size_t parent = (i - 1) / 2;
        if (t->heap[parent]->due <= tm->due) break;
        net_timers__place(t, i, t->heap[parent]);
        i = parent;
    }
    for (;;) {                                      /* down */
        size_t child = 2 * i + 1;
        if (child >= t->len) break;
        if (child + 1 < t->len && t->heap[child + 1]->due < t->heap[child]->due) child++;
        if (t->heap[child]->due >= tm->due) break;
        net_timers__place(t, i, t->heap[child]);
        i = child;
    }
    net_timers__place(t, i, tm);
}

/* Sets up an array of n timers, one per library timer id: timer i gets id
   i, the owner and fire (which may be NULL). */
static inline void net_timers_slots(net_timer *tm, unsigned n, void *owner, void (*fire)(net_timer *tm)) {
    unsigned i;
    for (i = 0; i < n; i++) {
        tm[i].id = i;
        tm[i].owner = owner;
        tm[i].fire = fire;
    }
}

/* Arms (or re-arms) tm to fire delay_ms from now. NET_OK or NET_ERR (no memory). */
static inline int net_timers_set(net_timers *t, net_timer *tm, uint32_t delay_ms) {
    tm->due = net_now_ms() + delay_ms;
    if (tm->slot == 0) {
        if (t->len == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 64;
            net_timer **h = (net_timer **)realloc(t->heap, cap * sizeof *h);
            if (!h) return NET_ERR;
            t->heap = h;
            t->cap = cap;
        }
        net_timers__place(t, t->len++, tm);
    }
    net_timers__sift(t, tm->slot - 1);
    return NET_OK;
}

static inline void net_timers_cancel(net_timers *t, net_timer *tm) {
    size_t i;
    net_timer *last;
    if (tm->slot == 0) return;
    i = tm->slot - 1;
    tm->slot = 0;
    last = t->heap[--t->len];
    if (i < t->len) {
        net_timers__place(t, i, last);
        net_timers__sift(t, i);
    }
}

/* Milliseconds until the earliest deadline, for poll/epoll_wait: 0 when one
   is due, never more than max_ms when max_ms >= 0, and max_ms itself when
   no timer is armed (so -1 means "wait for I/O only"). */
static inline int net_timers_timeout(const net_timers *t, int max_ms) {
    uint64_t now, due;
    if (t->len == 0) return max_ms;
    now = net_now_ms();
    due = t->heap[0]->due;
    if (due <= now) return 0;
    if (max_ms >= 0 && due - now > (uint64_t)max_ms) return max_ms;
    return due - now > 0x7fffffffu ? 0x7fffffff : (int)(due - now);
}

/* Removes and returns one timer that is due at now, or NULL. Call in a loop
   after each wait; the returned timer is disarmed and may be set again. */
static inline net_timer *net_timers_pop_due(net_timers *t, uint64_t now) {
    net_timer *tm;
    if (t->len == 0 || t->heap[0]->due > now) return NULL;
    tm = t->heap[0];
    net_timers_cancel(t, tm);
    return tm;
}

static inline void net_timers_free(net_timers *t) {
    size_t i;
    for (i = 0; i < t->len; i++) t->heap[i]->slot = 0;
    free(t->heap);
    t->heap = NULL;
    t->len = t->cap = 0;
}

/* ---- signals ------------------------------------------------------------ */

/* Set by SIGINT/SIGTERM once net_stop_on_signals() ran; loops poll it. */
static volatile sig_atomic_t net_stop_requested;

static inline void net__on_stop_signal(int sig) {
    (void)sig;
    net_stop_requested = 1;
}

/* SIGINT/SIGTERM set net_stop_requested (and interrupt the wait, without
   SA_RESTART); SIGPIPE is ignored so a dead peer is an error code, not death. */
static inline void net_stop_on_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = net__on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* ---- a wsch_conn on a socket ---------------------------------------------
   Compiled only when ws_channel.h was included first. net_ws is the wiring
   of one wsch_conn to one socket: the effects (send, close, the timers in a
   shared net_timers heap, random bytes), reading, and backpressure.

       net_ws w;                              (or embedded in your own struct)
       net_ws_init(&w, fd, &timers, WSCH_ROLE_SERVER);
       net_ws_desc(&desc);                    fills desc.effects
       wsch_conn_create(&desc, &w, &w.conn);  the user pointer MUST be the net_ws
       loop: until net_ws_finished(&w), wait for net_ws_update(&w) (POLLIN
             and/or POLLOUT, equal to EPOLLIN/EPOLLOUT), call net_ws_readable /
             net_ws_writable, and net_ws_timer_fired for each net_timers_pop_due
             timer (owner is the net_ws); then net_ws_release(&w).

   Event callbacks (on_message...) get the net_ws as their user pointer; put
   your own state in w->app. The end follows the library's one rule: its
   close effect, called once on every path after on_close, closes the
   socket (w->fd becomes -1), and from then on net_ws_finished() is true. */
#ifdef WS_CHANNEL_H


#define NET_WS_TIMERS 4u    /* library timer ids 0..3 (a wsch_conn arms 1 and 2) */

typedef struct net_ws {
    int fd;                 /* -1 once the library has closed it */
    wsch_conn *conn;
    net_timers *timers;
    net_timer timer[NET_WS_TIMERS];
    wsch_role role;         /* as given to net_ws_init, for the program */
    size_t high_water;      /* stop reading while more than this is queued (0 = never stop) */
    void *app;              /* the program's own pointer */
} net_ws;

static inline void net_ws_init(net_ws *w, int fd, net_timers *timers, wsch_role role) {
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->timers = timers;
    w->role = role;
    net_timers_slots(w->timer, NET_WS_TIMERS, w, NULL);
}

static inline size_t net_ws__send(const void *data, size_t len, void *user) {
    long n = net_write(((net_ws *)user)->fd, data, len);
    return n < 0 ? WSCH_SEND_ERROR : (size_t)n;    /* EPIPE, ECONNRESET: the connection ends at once */
}

static inline void net_ws__close(void *user) {
    net_ws *w = (net_ws *)user;
    net_close(w->fd);
    w->fd = -1;
}

static inline void net_ws__timer_set(unsigned id, uint32_t delay_ms, void *user) {
    net_ws *w = (net_ws *)user;
    if (id >= NET_WS_TIMERS || net_timers_set(w->timers, &w->timer[id], delay_ms) != NET_OK)
        fprintf(stderr, "net_ws: cannot arm timer %u\n", id);
}

static inline void net_ws__timer_cancel(unsigned id, void *user) {
    net_ws *w = (net_ws *)user;
    if (id < NET_WS_TIMERS) net_timers_cancel(w->timers, &w->timer[id]);
}

/* Fills the descriptor's effects; leaves every other field. */
static inline void net_ws_desc(wsch_conn_desc *d) {
    d->effects.send = net_ws__send;
    d->effects.close = net_ws__close;
    d->effects.timer_set = net_ws__timer_set;
    d->effects.timer_cancel = net_ws__timer_cancel;
    d->effects.random_bytes = net_random_bytes;
}

/* 1 once the library is done with the connection (close() has run). */
static inline int net_ws_finished(const net_ws *w) {
    return !w->conn || wsch_conn_want(w->conn) == 0;
}

/* The readiness to wait for now: POLLIN and/or POLLOUT, from
   wsch_conn_want(), without POLLIN while more than high_water is queued. */
static inline unsigned net_ws_update(const net_ws *w) {
    unsigned want = w->conn ? wsch_conn_want(w->conn) : 0;
    if (w->high_water && (want & WSCH_WANT_WRITE) && wsch_conn_queued_bytes(w->conn) > w->high_water)
        want &= ~(unsigned)WSCH_WANT_READ;
    return (want & WSCH_WANT_READ ? (unsigned)POLLIN : 0u) | (want & WSCH_WANT_WRITE ? (unsigned)POLLOUT : 0u);
}

/* The socket is readable (or hung up): read and feed up to NET_READS_PER_EVENT
   buffers. buf is scratch space the caller lends (one per thread is
   enough: the library copies what it must keep). */
static inline void net_ws_readable(net_ws *w, void *buf, size_t cap) {
    int i;
    for (i = 0; i < NET_READS_PER_EVENT && !net_ws_finished(w); i++) {
        long n = net_read(w->fd, buf, cap);
        if (n == NET_AGAIN) break;
        if (n < 0) {            /* EOF or error: on_close, then close() */
            wsch_conn_transport_closed(w->conn);
            break;
        }
        (void)wsch_conn_feed(w->conn, buf, (size_t)n);  /* an error already became a close frame */
        if (!(net_ws_update(w) & POLLIN)) break;         /* closing, or past the high-water mark */
        if ((size_t)n < cap) break; /* a short read drained the socket: skip the EAGAIN read */
    }
}

static inline void net_ws_writable(net_ws *w) {
    if (!net_ws_finished(w)) (void)wsch_conn_writable(w->conn);
}

/* A timer popped from the heap whose owner is w. */
static inline void net_ws_timer_fired(net_ws *w, unsigned id) {
    if (!net_ws_finished(w)) wsch_conn_timer_fired(w->conn, id);
}

/* Frees the connection. One still running ends as a lost transport first
   (on_close with 1006, then close()); a socket the library never had is
   closed here. */
static inline void net_ws_release(net_ws *w) {
    if (w->conn) {
        wsch_conn_transport_closed(w->conn);    /* nothing when already finished */
        wsch_conn_destroy(w->conn);
        w->conn = NULL;
    }
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
}

#endif /* WS_CHANNEL_H */
#endif /* NET_UTIL_H */
