/* hub_loop.h - a wsch_hub on one thread and epoll: the loop that
   hub_server.c and chat_server.c share. Like example_net.h (which it needs,
   included first, after ws_channel.h) it is glue, not part of the library.

   What it does:
     - listens, accepts, and hands every socket to the hub (wsch_hub_accept);
     - gives the hub each peer's effects: send (a broken socket is
       WSCH_SEND_ERROR), the timers on one net_timers heap, and close, which
       closes the socket and frees the peer: the hub calls it exactly once
       per peer, as the last word about it, and releases the peer itself;
     - readiness: a peer sits in the epoll set with its hub handle (index
       and generation) as the event's data, so an event of this batch for a
       peer an earlier event freed finds a stale handle
       (wsch_hub_peer_user() is NULL) and is skipped. After each event a
       peer waits for what wsch_hub_peer_want() says;
     - other descriptors (stdin, Redis links) join the same epoll set
       through hub_loop_tag() / hub_loop_watch();
     - a full server still answers: with max_ws set, a connection accepted
       while max_ws peers are held goes to a small reserve
       (HUB_LOOP_HTTP_RESERVE more; give the hub max_peers = max_ws +
       HUB_LOOP_HTTP_RESERVE) that serves plain HTTP only (a monitoring
       endpoint such as /api/stats stays reachable): its request head is
       read here first, and a WebSocket upgrade is answered "503 Service
       Unavailable" with "Retry-After: HUB_LOOP_RETRY_AFTER_S". When the
       hub refuses a connection outright (reserve full too), it gets the
       same 503 before its request was read (best effort: a request that
       arrives after the close may turn the close into a reset);
     - graceful shutdown: wsch_hub_shutdown(), the loop runs until no peer
       is left (bounded), then wsch_hub_destroy() closes the rest;
     - tokens: "USER=SECRET" pairs, compared in constant time, for an
       authenticate hook.

   Wiring:
       static hub_loop L;                     (static: it holds the read buffer)
       hub_loop_listen(&L, "hub_server", host, port)
       hub_loop_effects(&desc.effects);
       wsch_hub_create(&desc, &L.hub);
       while (!net_stop_requested) hub_loop_run(&L, 1000);
       hub_loop_shutdown(&L, 3000);           (destroys the hub) */
#ifndef HUB_LOOP_H
#define HUB_LOOP_H

#include <sys/epoll.h>
#include <sys/resource.h>

#define HUB_LOOP_READ_BUF (64u * 1024u)
#define HUB_LOOP_WATCHES 8
#define HUB_LOOP_HTTP_RESERVE 16u   /* connections past max_ws, plain HTTP only */
#define HUB_LOOP_HEAD_MAX 4096u     /* request head read for a reserve connection */
#define HUB_LOOP_RETRY_AFTER_S 5

#define HUB_LOOP__STR2(x) #x
#define HUB_LOOP__STR(x) HUB_LOOP__STR2(x)

/* Event data with index 0xFFFFFFFF is not a peer (no hub has 2^32 slots):
   generation 0 is the listening socket, n + 1 watch n. */
#define HUB_LOOP_NOT_A_PEER 0xFFFFFFFFu
#define HUB_LOOP_TAG(slot) (((uint64_t)HUB_LOOP_NOT_A_PEER << 32) | (uint64_t)(slot))

typedef struct hub_loop hub_loop;

/* Runs for the epoll events of a watched descriptor. */
typedef void (*hub_loop_fn)(void *ctx, uint32_t events);

/* The hub's timer ids, mapped to slots of hub_loop_peer.timer. */
enum { HUB_LOOP_T_HANDSHAKE, HUB_LOOP_T_CLOSE, HUB_LOOP_T_IDLE, HUB_LOOP_TIMERS };

typedef struct hub_loop_peer {
    hub_loop *loop;
    wsch_hub_peer h;
    int fd;
    uint32_t events;            /* epoll interest registered now */
    net_timer timer[HUB_LOOP_TIMERS];
    char *head;                 /* reserve connection: its request head, until it is judged */
    size_t head_len;
} hub_loop_peer;

struct hub_loop {
    wsch_hub *hub;
    int ep, lfd;
    int verbose;                /* log refused connections */
    size_t max_ws;              /* 0, or: past this many peers, plain HTTP only (the reserve) */
    size_t npeers;              /* peers handed to the hub and not yet closed */
    uint64_t refused_503;       /* connections answered 503: upgrades while full, and refusals */
    net_timers timers;          /* every peer's deadlines, and those of the watches' owners */
    uint32_t flush_again_ms;    /* what the last wsch_hub_flush() asked for: 0, or a wait bound */
    struct {
        hub_loop_fn fn;
        void *ctx;
    } watch[HUB_LOOP_WATCHES];
    unsigned nwatch;
    unsigned char buf[HUB_LOOP_READ_BUF];
};

/* ---- the peers' effects --------------------------------------------------- */

static inline uint64_t hub_loop__data(wsch_hub_peer h) { return (uint64_t)h.index << 32 | h.gen; }

static inline void hub_loop__interest(hub_loop_peer *p, uint32_t events) {
    struct epoll_event ev;
    if (events == p->events) return;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = hub_loop__data(p->h);
    if (epoll_ctl(p->loop->ep, EPOLL_CTL_MOD, p->fd, &ev) == 0) p->events = events;
}

static inline size_t hub_loop__send(const void *data, size_t len, void *user) {
    hub_loop_peer *p = (hub_loop_peer *)user;
    long n = net_write(p->fd, data, len);
    if (n < 0) return WSCH_SEND_ERROR;           /* EPIPE, ECONNRESET: the hub ends the peer */
    if ((size_t)n < len) hub_loop__interest(p, p->events | EPOLLOUT);  /* the rest waits in the hub's queue */
    return (size_t)n;
}

/* The last callback about a peer: the socket and the struct go. */
static inline void hub_loop__close(void *user) {
    hub_loop_peer *p = (hub_loop_peer *)user;
    unsigned k;
    for (k = 0; k < HUB_LOOP_TIMERS; k++) net_timers_cancel(&p->loop->timers, &p->timer[k]);
    net_close(p->fd);           /* also drops it from the epoll set */
    p->loop->npeers--;
    free(p->head);
    free(p);
}

static inline int hub_loop__slot(unsigned id) {
    switch (id) {
    case WSCH_TIMER_HANDSHAKE: return HUB_LOOP_T_HANDSHAKE;
    case WSCH_TIMER_CLOSE: return HUB_LOOP_T_CLOSE;
    case WSCH_HUB_TIMER_IDLE: return HUB_LOOP_T_IDLE;
    default: return -1;
    }
}

static inline void hub_loop__timer_set(unsigned id, uint32_t delay_ms, void *user) {
    hub_loop_peer *p = (hub_loop_peer *)user;
    int k = hub_loop__slot(id);
    if (k < 0 || net_timers_set(&p->loop->timers, &p->timer[k], delay_ms) != NET_OK)
        fprintf(stderr, "hub_loop: cannot arm timer %u\n", id);
}

static inline void hub_loop__timer_cancel(unsigned id, void *user) {
    hub_loop_peer *p = (hub_loop_peer *)user;
    int k = hub_loop__slot(id);
    if (k >= 0) net_timers_cancel(&p->loop->timers, &p->timer[k]);
}

static inline uint64_t hub_loop__now_ms(void *user) {
    (void)user;
    return net_now_ms();
}

/* Fills the effects of a wsch_hub_desc: each peer's send, close and timers,
   and the hub's clock and randomness. */
static inline void hub_loop_effects(wsch_effects *e) {
    e->send = hub_loop__send;
    e->close = hub_loop__close;
    e->timer_set = hub_loop__timer_set;
    e->timer_cancel = hub_loop__timer_cancel;
    e->now_ms = hub_loop__now_ms;
    e->random_bytes = net_random_bytes;
}

/* ---- events ---------------------------------------------------------------- */

/* After each event of a peer: wait for what the hub wants of it now. */
static inline void hub_loop__follow(hub_loop *L, wsch_hub_peer h) {
    hub_loop_peer *p = (hub_loop_peer *)wsch_hub_peer_user(L->hub, h);
    unsigned want = wsch_hub_peer_want(L->hub, h);
    if (!p) return;             /* closed and freed by this event */
    hub_loop__interest(p, (want & WSCH_WANT_READ ? (uint32_t)EPOLLIN : 0u) |
                              (want & WSCH_WANT_WRITE ? (uint32_t)EPOLLOUT : 0u));
}

static const char hub_loop__busy[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 26\r\n"
    "Retry-After: " HUB_LOOP__STR(HUB_LOOP_RETRY_AFTER_S) "\r\nConnection: close\r\n\r\n"
    "The server is at capacity\n";

/* A reserve connection's bytes: gathered until the request head is whole.
   A WebSocket upgrade gets the 503 and the connection ends; anything else
   (plain HTTP) goes to the hub as usual. Returns 1 while still gathering
   or when the peer ended, 0 when the hub has the bytes. */
static inline int hub_loop__judge(hub_loop *L, hub_loop_peer *p, wsch_hub_peer h, const void *data, size_t n) {
    wsch_request req;
    wsch_str up;
    size_t used, prev = p->head_len;
    int rc;
    if (n > HUB_LOOP_HEAD_MAX - p->head_len) n = HUB_LOOP_HEAD_MAX - p->head_len;     /* the hub refuses the rest */
    memcpy(p->head + p->head_len, data, n);
    p->head_len += n;
    rc = wsch_request_parse(p->head, p->head_len, prev, HUB_LOOP_HEAD_MAX, &req, &used);
    if (rc == WSCH_INCOMPLETE && p->head_len < HUB_LOOP_HEAD_MAX) return 1;
    if (rc == WSCH_OK && wsch_header_find(req.headers, req.num_headers, "Upgrade", &up) == WSCH_OK) {
        L->refused_503++;
        if (L->verbose) fprintf(stderr, "hub_loop: full, an upgrade answered 503\n");
        (void)net_write(p->fd, hub_loop__busy, sizeof hub_loop__busy - 1);
        (void)wsch_hub_transport_closed(L->hub, h);     /* close() frees p */
        return 1;
    }
    {
        char *head = p->head;   /* plain HTTP (or a broken head: the hub answers it) */
        size_t len = p->head_len;
        p->head = NULL;
        (void)wsch_hub_feed(L->hub, h, head, len);
        free(head);
    }
    return 0;
}

static inline void hub_loop__readable(hub_loop *L, wsch_hub_peer h) {
    int i;
    for (i = 0; i < NET_READS_PER_EVENT; i++) {
        hub_loop_peer *p = (hub_loop_peer *)wsch_hub_peer_user(L->hub, h);
        long n;
        if (!p) return;
        if (p->head) {          /* a reserve connection, not judged yet */
            n = net_read(p->fd, L->buf, sizeof L->buf);
            if (n == NET_AGAIN) return;
            if (n < 0) {
                (void)wsch_hub_transport_closed(L->hub, h);
                return;
            }
            if (hub_loop__judge(L, p, h, L->buf, (size_t)n)) return;
            continue;
        }
        n = net_read(p->fd, L->buf, sizeof L->buf);
        if (n == NET_AGAIN) return;
        if (n < 0) {            /* EOF or error: on_disconnect, then close() frees p */
            (void)wsch_hub_transport_closed(L->hub, h);
            return;
        }
        (void)wsch_hub_feed(L->hub, h, L->buf, (size_t)n);     /* an error already became a close */
        if (!(wsch_hub_peer_want(L->hub, h) & WSCH_WANT_READ)) return;
        if ((size_t)n < sizeof L->buf) return;  /* a short read drained the socket: skip the EAGAIN read */
    }
}

static inline void hub_loop__timer_fired(net_timer *tm) {
    static const unsigned ids[HUB_LOOP_TIMERS] = {WSCH_TIMER_HANDSHAKE, WSCH_TIMER_CLOSE, WSCH_HUB_TIMER_IDLE};
    hub_loop_peer *p = (hub_loop_peer *)tm->owner;
    hub_loop *L = p->loop;
    wsch_hub_peer h = p->h;
    (void)wsch_hub_timer_fired(L->hub, h, ids[tm->id]);
    hub_loop__follow(L, h);
}

static inline void hub_loop__accept(hub_loop *L) {
    for (;;) {
        struct epoll_event ev;
        hub_loop_peer *p;
        int rc, fd = net_accept(L->lfd);
        if (fd == NET_AGAIN) return;
        if (fd == NET_SHED) continue;   /* out of descriptors: one closed unserved */
        if (fd < 0) {
            if (errno != ECONNABORTED && errno != EINTR) perror("hub_loop: accept");
            return;
        }
        p = (hub_loop_peer *)calloc(1, sizeof *p);
        if (p && L->max_ws && L->npeers >= L->max_ws && !(p->head = (char *)malloc(HUB_LOOP_HEAD_MAX))) {
            free(p);
            p = NULL;
        }
        if (!p) {
            close(fd);
            continue;
        }
        p->loop = L;
        p->fd = fd;
        p->events = EPOLLIN;
        net_timers_slots(p->timer, HUB_LOOP_TIMERS, p, hub_loop__timer_fired);
        rc = wsch_hub_accept(L->hub, NULL, p, &p->h);
        if (rc != WSCH_OK) {    /* full or shutting down: the socket is still ours */
            if (L->verbose) fprintf(stderr, "hub_loop: refused a connection: %s\n", wsch_err_str(rc));
            if (rc == WSCH_ERR_LIMIT) {
                L->refused_503++;
                (void)net_write(fd, hub_loop__busy, sizeof hub_loop__busy - 1);
            }
            net_close(fd);
            free(p->head);
            free(p);
            continue;
        }
        L->npeers++;
        memset(&ev, 0, sizeof ev);
        ev.events = p->events;
        ev.data.u64 = hub_loop__data(p->h);
        if (epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev) < 0) (void)wsch_hub_transport_closed(L->hub, p->h);
    }
}

/* One turn: waits up to max_wait_ms (less when a timer is due, or when the
   hub's flush asked to be called again sooner) for events, handles them,
   runs the timers that are due, and ends the turn with wsch_hub_flush()
   (presence changes of the turn go out together). */
static inline void hub_loop_run(hub_loop *L, int max_wait_ms) {
    struct epoll_event events[256];
    net_timer *tm;
    uint64_t now;
    int j, n;
    if (L->flush_again_ms && (int)L->flush_again_ms < max_wait_ms) max_wait_ms = (int)L->flush_again_ms;
    n = epoll_wait(L->ep, events, 256, net_timers_timeout(&L->timers, max_wait_ms));
    if (n < 0 && errno != EINTR) {
        perror("hub_loop: epoll_wait");
        net_stop_requested = 1;
        return;
    }
    for (j = 0; j < n; j++) {
        uint64_t data = events[j].data.u64;
        uint32_t e = events[j].events;
        wsch_hub_peer h;
        h.index = (uint32_t)(data >> 32);
        h.gen = (uint32_t)data;
        if (h.index == HUB_LOOP_NOT_A_PEER) {
            if (h.gen == 0) hub_loop__accept(L);
            else L->watch[h.gen - 1].fn(L->watch[h.gen - 1].ctx, e);
            continue;
        }
        if (!wsch_hub_peer_user(L->hub, h)) continue;   /* freed by an earlier event of this batch */
        if (e & EPOLLOUT) (void)wsch_hub_writable(L->hub, h);
        if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) hub_loop__readable(L, h);
        hub_loop__follow(L, h);
    }
    now = net_now_ms();
    while ((tm = net_timers_pop_due(&L->timers, now)) != NULL) tm->fire(tm);
    L->flush_again_ms = wsch_hub_flush(L->hub);
}

/* ---- setup and the end ------------------------------------------------------ */

/* The epoll data for a descriptor the caller adds to (and changes in) L->ep
   itself: its events go to fn(ctx, events). Timers of such a caller go in
   L->timers with their fire set. Returns 0 when all HUB_LOOP_WATCHES are
   taken. */
static inline uint64_t hub_loop_tag(hub_loop *L, hub_loop_fn fn, void *ctx) {
    if (L->nwatch == HUB_LOOP_WATCHES) return 0;
    L->watch[L->nwatch].fn = fn;
    L->watch[L->nwatch].ctx = ctx;
    return HUB_LOOP_TAG(++L->nwatch);
}

/* Adds fd to the epoll set for events; they go to fn(ctx, events). 0 or -1. */
static inline int hub_loop_watch(hub_loop *L, int fd, uint32_t events, hub_loop_fn fn, void *ctx) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = hub_loop_tag(L, fn, ctx);
    return ev.data.u64 && epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -1;
}

/* Listens on host:port (0: any free port), makes SIGINT/SIGTERM set
   net_stop_requested, and prints the line tests look for:
   "NAME: listening on http://HOST:PORT/ (hub at ws://HOST:PORT/ws)".
   Returns 0, or -1 after saying why. */
static inline int hub_loop_listen(hub_loop *L, const char *name, const char *host, uint16_t port) {
    struct epoll_event ev;
    struct rlimit rl;
    uint16_t bound = 0;
    /* 10,000 sockets need more than the usual 1024 descriptors. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    net_stop_on_signals();
    L->lfd = net_listen(host, port, 4096, &bound);
    if (L->lfd < 0) {
        fprintf(stderr, "%s: cannot listen on %s:%u: %s\n", name, host, (unsigned)port, strerror(errno));
        return -1;
    }
    L->ep = epoll_create1(EPOLL_CLOEXEC);
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u64 = HUB_LOOP_TAG(0);
    if (L->ep < 0 || epoll_ctl(L->ep, EPOLL_CTL_ADD, L->lfd, &ev) < 0) {
        fprintf(stderr, "%s: epoll: %s\n", name, strerror(errno));
        return -1;
    }
    printf("%s: listening on http://%s:%u/ (hub at ws://%s:%u/ws)\n", name, host, (unsigned)bound, host,
           (unsigned)bound);
    fflush(stdout);
    return 0;
}

/* Graceful shutdown, first half: no more connections, open peers get 1001
   Going Away; the loop runs until every peer is gone, ms have passed or
   another signal came. What the caller's watches still have to send (a
   bridge's last words) can go out now, before hub_loop_free(). */
static inline void hub_loop_drain(hub_loop *L, uint32_t ms) {
    uint64_t deadline = net_now_ms() + ms;
    close(L->lfd);
    L->lfd = -1;
    wsch_hub_shutdown(L->hub);
    net_stop_requested = 0;
    for (;;) {
        wsch_hub_counters st;
        uint64_t now = net_now_ms();
        wsch_hub_stats(L->hub, &st);
        if (st.peers == 0 || now >= deadline || net_stop_requested) break;
        hub_loop_run(L, (int)(deadline - now));
    }
}

/* Destroys the hub (closing whatever peers are left) and the loop. */
static inline void hub_loop_free(hub_loop *L) {
    wsch_hub_destroy(L->hub);
    L->hub = NULL;
    net_timers_free(&L->timers);
    close(L->ep);
}

/* Both: drain for up to ms, then free. */
static inline void hub_loop_shutdown(hub_loop *L, uint32_t ms) {
    hub_loop_drain(L, ms);
    hub_loop_free(L);
}

/* ---- tokens ------------------------------------------------------------------ */

typedef struct hub_tokens {
    char **pairs;               /* "USER\0SECRET", split at the '=' */
    size_t n;
} hub_tokens;

/* Adds "USER=SECRET" (both non-empty). 0, or -1 for a malformed pair or no memory. */
static inline int hub_tokens_add(hub_tokens *t, const char *pair) {
    const char *eq = strchr(pair, '=');
    char **more, *copy;
    if (!eq || eq == pair || !eq[1]) return -1;
    more = (char **)realloc(t->pairs, (t->n + 1) * sizeof *more);
    if (!more) return -1;
    t->pairs = more;
    if (!(copy = strdup(pair))) return -1;
    copy[eq - pair] = '\0';
    t->pairs[t->n++] = copy;
    return 0;
}

/* WSCH_OK with *user_id set when token is one of the secrets, else
   WSCH_ERR_DENIED. Each comparison takes the same time whatever bytes match. */
static inline int hub_tokens_check(const hub_tokens *t, wsch_str token, wsch_str *user_id) {
    size_t i, k;
    for (i = 0; i < t->n; i++) {
        const char *user = t->pairs[i], *secret = user + strlen(user) + 1;
        unsigned diff = 0;
        if (strlen(secret) != token.len) continue;
        for (k = 0; k < token.len; k++) diff |= (unsigned)(unsigned char)(secret[k] ^ token.ptr[k]);
        if (diff == 0) {
            user_id->ptr = user;
            user_id->len = strlen(user);
            return WSCH_OK;
        }
    }
    return WSCH_ERR_DENIED;
}

static inline void hub_tokens_free(hub_tokens *t) {
    while (t->n) free(t->pairs[--t->n]);
    free(t->pairs);
    t->pairs = NULL;
}

#endif /* HUB_LOOP_H */
