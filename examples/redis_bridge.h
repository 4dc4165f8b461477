/* redis_bridge.h - several hub processes as one, through Redis pub/sub.

   Plugs a wsch_hub's bridge (desc.bridge, see ws_channel.h) into Redis with
   hiredis's asynchronous API (Debian: libhiredis-dev; link with -lhiredis),
   on the caller's epoll loop. Used by chat_server.c (--redis HOST:PORT);
   like example_net.h it is glue, not part of the library.

   What it does:
     - two connections, because a Redis connection that has subscribed can
       do nothing else: one SUBSCRIBEs, one PUBLISHes;
     - the hub's bridge channel NAME is the Redis channel PREFIX NAME
       (prefix "wsch:" unless told otherwise), so several deployments can
       share one Redis: "wsch:news", "wsch:#user:alice";
     - subscribe/unsubscribe from the hub become SUBSCRIBE/UNSUBSCRIBE; a
       publish becomes PUBLISH; a message from Redis goes to
       wsch_hub_bridge_deliver(), which checks it like client input and
       skips the hub's own messages (it delivered those itself);
     - when a connection fails or Redis goes away, it reconnects with
       exponential backoff (200 ms doubling to 5 s, plus up to 25% jitter)
       and a connect timeout, and the subscriber replays every channel the
       hub needs (wsch_hub_bridge_resubscribe);
     - the hub keeps serving its own clients meanwhile. Redis pub/sub keeps
       nothing, so a message published while a link is down reaches the
       publishing process's clients only: publishes are refused at once
       (counted as dropped) rather than queued, and messages other
       processes publish while our subscriber is away are never seen;
     - a link is up only once Redis has answered on it (a PING after the
       TCP connect: a stopped Redis still completes TCP handshakes), and
       while up it is probed every REDIS_BRIDGE_PING_MS (the publisher
       with PING, the subscriber by subscribing again to PREFIX "#health",
       which a subscribed connection may do). A probe unanswered for
       REDIS_BRIDGE_REPLY_TIMEOUT_MS means Redis has stalled (stopped,
       swapping, hung): the link is taken down like a lost one (counted in
       "stalls", reported on stderr and in the up flags), its socket reset
       so that commands still in our send queue are discarded rather than
       run when Redis resumes, and it reconnects with backoff;
     - what is buffered while Redis stalls is bounded twice: by time (the
       stall is noticed within REDIS_BRIDGE_PING_MS +
       REDIS_BRIDGE_REPLY_TIMEOUT_MS, 4 s; from then on publishes are
       refused and counted in "dropped", and the hub counts them in
       bridge_publish_errors) and by size (unanswered PUBLISH payload
       bytes stay below REDIS_BRIDGE_MAX_PENDING, 4 MiB; past it publishes
       are refused the same way). Publishes written before the stall was
       noticed and never answered are counted in "abandoned": Redis may
       have run them, or may still run those it had already read when it
       resumes (late, at most the bound above); nothing else is held.

   Wiring (all on one thread, on hub_loop.h's loop):
     redis_bridge rb;
     redis_bridge_init(&rb, "127.0.0.1", 6379, "wsch:");
     desc.bridge = redis_bridge_hub_bridge(&rb);   (desc.effects.random_bytes must be set)
     wsch_hub_create(&desc, &loop.hub);
     redis_bridge_start(&rb, &loop);    the links' sockets and timers join the loop
     end:  redis_bridge_stop(&rb) before the hub is destroyed.

   Needs example_net.h and hub_loop.h included first. */
#ifndef REDIS_BRIDGE_H
#define REDIS_BRIDGE_H

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <sys/epoll.h>

#define REDIS_BRIDGE_BACKOFF_MIN_MS 200u
#define REDIS_BRIDGE_BACKOFF_MAX_MS 5000u
#define REDIS_BRIDGE_CONNECT_TIMEOUT_MS 3000u
#define REDIS_BRIDGE_MAX_PENDING (4u * 1024u * 1024u)
#define REDIS_BRIDGE_PING_MS 1000u
#define REDIS_BRIDGE_REPLY_TIMEOUT_MS 3000u
#define REDIS_BRIDGE_PREFIX_MAX 64

struct redis_bridge;

/* One connection to Redis and its place in the loop. */
typedef struct redis_link {
    struct redis_bridge *rb;
    const char *role;               /* "subscriber" or "publisher", for the log */
    redisAsyncContext *ac;          /* NULL while down */
    int fd;
    uint64_t tag;                   /* its epoll data in the loop */
    uint32_t want, registered;      /* epoll interest hiredis asked for / registered now */
    int up;                         /* connected, answered, and usable */
    unsigned failures;              /* consecutive failed attempts: the backoff exponent */
    net_timer timer;                /* reconnect when down, connect timeout while connecting */
    net_timer health;               /* while up: the next probe, and the check of the last */
    uint64_t probe_ms;              /* when the unanswered probe was sent; 0: none */
    const char *why;                /* why we are dropping it, for the disconnect callback */
} redis_link;

typedef struct redis_bridge {
    wsch_hub *hub;
    int ep;
    net_timers *timers;             /* the loop's */
    char host[256];
    int port;
    char prefix[REDIS_BRIDGE_PREFIX_MAX + 1];
    size_t prefix_len;
    int stopping;
    redis_link sub, pub;
    size_t pending;                 /* PUBLISH bytes written, not yet answered */
    uint64_t rng;
    /* counters, for /api/stats */
    uint64_t connects;              /* successful connections, both links */
    uint64_t published;             /* PUBLISH commands sent */
    uint64_t dropped;               /* publishes refused: link down or too much pending */
    uint64_t received;              /* messages Redis delivered to the subscriber */
    uint64_t refused;               /* of those, refused by the hub */
    uint64_t stalls;                /* links taken down because Redis stopped answering */
    uint64_t abandoned;             /* PUBLISHes written but never answered (link lost or stalled) */
    long long channels;             /* Redis channels the subscriber holds (Redis's own count) */
} redis_bridge;

/* ---- the event-loop adapter: hiredis's read/write hooks on epoll -------- */

static void redis_link_apply(redis_link *l) {
    struct epoll_event e;
    if (l->fd < 0 || l->want == l->registered) return;
    memset(&e, 0, sizeof e);
    e.events = l->want;
    e.data.u64 = l->tag;
    if (l->want == 0) {
        (void)epoll_ctl(l->rb->ep, EPOLL_CTL_DEL, l->fd, NULL);
    } else if (epoll_ctl(l->rb->ep, l->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, l->fd, &e) < 0) {
        fprintf(stderr, "chat_server: redis %s: epoll_ctl: %s\n", l->role, strerror(errno));
        return;
    }
    l->registered = l->want;
}

static void redis_ev_add_read(void *p) {
    redis_link *l = (redis_link *)p;
    l->want |= EPOLLIN;
    redis_link_apply(l);
}

static void redis_ev_del_read(void *p) {
    redis_link *l = (redis_link *)p;
    l->want &= ~(uint32_t)EPOLLIN;
    redis_link_apply(l);
}

static void redis_ev_add_write(void *p) {
    redis_link *l = (redis_link *)p;
    l->want |= EPOLLOUT;
    redis_link_apply(l);
}

static void redis_ev_del_write(void *p) {
    redis_link *l = (redis_link *)p;
    l->want &= ~(uint32_t)EPOLLOUT;
    redis_link_apply(l);
}

/* hiredis is about to close the socket (the context is being freed). */
static void redis_ev_cleanup(void *p) {
    redis_link *l = (redis_link *)p;
    l->want = 0;
    redis_link_apply(l);
    l->fd = -1;
    l->registered = 0;
}

/* ---- connecting, and reconnecting with backoff -------------------------- */

static void redis_link_connect(redis_link *l);

static uint32_t redis_backoff(redis_bridge *rb, unsigned failures) {
    uint32_t d = REDIS_BRIDGE_BACKOFF_MIN_MS;
    unsigned i;
    for (i = 0; i < failures && d < REDIS_BRIDGE_BACKOFF_MAX_MS; i++) d *= 2u;
    if (d > REDIS_BRIDGE_BACKOFF_MAX_MS) d = REDIS_BRIDGE_BACKOFF_MAX_MS;
    rb->rng ^= rb->rng << 13;       /* xorshift: jitter, so processes do not retry in step */
    rb->rng ^= rb->rng >> 7;
    rb->rng ^= rb->rng << 17;
    return d + (uint32_t)(rb->rng % (d / 4u + 1u));
}

/* The link is down (or never came up): try again later. */
static void redis_link_retry(redis_link *l, const char *why) {
    uint32_t delay;
    l->ac = NULL;
    l->up = 0;
    l->probe_ms = 0;
    net_timers_cancel(l->rb->timers, &l->health);
    if (l->rb->stopping) return;
    delay = redis_backoff(l->rb, l->failures);
    if (l->failures < 30) l->failures++;
    fprintf(stderr, "chat_server: redis %s: %s; retrying in %u ms\n", l->role, why, (unsigned)delay);
    if (net_timers_set(l->rb->timers, &l->timer, delay) != NET_OK) fprintf(stderr, "chat_server: redis: no timer\n");
}

static void redis_on_health(redisAsyncContext *ac, void *r, void *privdata);

/* Ends a link from our side: a reset, so that commands still in the send
   queue are discarded rather than run whenever Redis resumes; then the
   retry path, once (through the disconnect callback when hiredis runs it). */
static void redis_link_drop(redis_link *l, const char *why) {
    redisAsyncContext *ac = l->ac;
    struct linger lg;
    if (!ac) return;
    lg.l_onoff = 1;
    lg.l_linger = 0;
    (void)setsockopt(ac->c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    l->why = why;
    redisAsyncFree(ac);             /* runs redis_on_disconnect if hiredis saw it connected */
    l->why = NULL;
    if (l->ac == ac) redis_link_retry(l, why);
}

/* Redis answered the first PING: the link is usable. */
static void redis_on_ready(redisAsyncContext *ac, void *r, void *privdata) {
    redis_link *l = (redis_link *)privdata;
    redisReply *reply = (redisReply *)r;
    (void)ac;
    if (!reply || l->up || l->rb->stopping) return;    /* NULL: the context is going away */
    net_timers_cancel(l->rb->timers, &l->timer);
    l->up = 1;
    l->failures = 0;
    l->rb->connects++;
    fprintf(stderr, "chat_server: redis %s: connected to %s:%d\n", l->role, l->rb->host, l->rb->port);
    if (l == &l->rb->sub) {
        /* The probe channel first (so Redis's channel counts include it
           from the start), then everything the hub needs: a new
           connection holds no subscriptions. */
        l->rb->channels = 0;
        if (redisAsyncCommand(l->ac, redis_on_health, l, "SUBSCRIBE %b#health", l->rb->prefix, l->rb->prefix_len) !=
            REDIS_OK)
            fprintf(stderr, "chat_server: redis subscriber: SUBSCRIBE failed\n");
        wsch_hub_bridge_resubscribe(l->rb->hub);
    }
    if (net_timers_set(l->rb->timers, &l->health, REDIS_BRIDGE_PING_MS) != NET_OK)
        fprintf(stderr, "chat_server: redis: no timer\n");
}

static void redis_on_connect(const redisAsyncContext *ac, int status) {
    redis_link *l = (redis_link *)ac->data;
    if (status != REDIS_OK) {
        redis_link_retry(l, ac->errstr);    /* hiredis frees the context after this returns */
        return;
    }
    /* TCP is up, which a stopped Redis also allows (the kernel completes the
       handshake): usable only once Redis answers. The connect timeout runs on. */
    if (!l->ac || redisAsyncCommand(l->ac, redis_on_ready, l, "PING") != REDIS_OK)
        fprintf(stderr, "chat_server: redis %s: PING failed\n", l->role);
}

static void redis_on_disconnect(const redisAsyncContext *ac, int status) {
    redis_link *l = (redis_link *)ac->data;
    if (l == &l->rb->sub) l->rb->channels = 0;
    redis_link_retry(l, l->why ? l->why
                               : status == REDIS_OK ? "disconnected"
                                                    : (ac->errstr[0] ? ac->errstr : "connection lost"));
}

static void redis_link_connect(redis_link *l) {
    redisAsyncContext *ac = redisAsyncConnect(l->rb->host, l->rb->port);
    if (!ac || ac->err) {
        char why[160];
        snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        redis_link_retry(l, why);
        return;
    }
    l->ac = ac;
    l->fd = ac->c.fd;
    l->want = l->registered = 0;
    ac->data = l;
    ac->ev.data = l;
    ac->ev.addRead = redis_ev_add_read;
    ac->ev.delRead = redis_ev_del_read;
    ac->ev.addWrite = redis_ev_add_write;
    ac->ev.delWrite = redis_ev_del_write;
    ac->ev.cleanup = redis_ev_cleanup;
    (void)redisEnableKeepAlive(&ac->c);     /* a peer that vanished is noticed eventually */
    redisAsyncSetConnectCallback(ac, redis_on_connect);   /* also waits for writability */
    redisAsyncSetDisconnectCallback(ac, redis_on_disconnect);
    (void)net_timers_set(l->rb->timers, &l->timer, REDIS_BRIDGE_CONNECT_TIMEOUT_MS);
}

/* ---- the hub's bridge callbacks ----------------------------------------- */

/* Subscription replies and messages on the subscriber connection. */
static void redis_on_sub_reply(redisAsyncContext *ac, void *r, void *privdata) {
    redis_bridge *rb = (redis_bridge *)privdata;
    redisReply *reply = (redisReply *)r, *kind, *ch;
    (void)ac;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) return;  /* NULL: being freed */
    kind = reply->element[0];
    ch = reply->element[1];
    if (kind->type != REDIS_REPLY_STRING || ch->type != REDIS_REPLY_STRING) return;
    if (strcmp(kind->str, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING) {
        redisReply *data = reply->element[2];
        rb->received++;
        if (ch->len < rb->prefix_len || memcmp(ch->str, rb->prefix, rb->prefix_len) != 0 ||
            wsch_hub_bridge_deliver(rb->hub, ch->str + rb->prefix_len, ch->len - rb->prefix_len, data->str,
                                    data->len, NULL) != WSCH_OK)
            rb->refused++;
    } else if (reply->element[2]->type == REDIS_REPLY_INTEGER) {
        /* (un)subscribe: how many this connection holds, the probe channel aside */
        rb->channels = reply->element[2]->integer > 0 ? reply->element[2]->integer - 1 : 0;
    }
}

/* The probe channel's replies on the subscriber: each SUBSCRIBE of it is
   answered, which proves Redis is reading and answering this link. */
static void redis_on_health(redisAsyncContext *ac, void *r, void *privdata) {
    redis_link *l = (redis_link *)privdata;
    redisReply *reply = (redisReply *)r;
    (void)ac;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) return;
    if (reply->element[0]->type == REDIS_REPLY_STRING && strcmp(reply->element[0]->str, "subscribe") == 0) {
        l->probe_ms = 0;
        if (reply->element[2]->type == REDIS_REPLY_INTEGER)
            l->rb->channels = reply->element[2]->integer > 0 ? reply->element[2]->integer - 1 : 0;
    }
}

/* The publisher's probe answered. */
static void redis_on_pong(redisAsyncContext *ac, void *r, void *privdata) {
    (void)ac;
    if (r) ((redis_link *)privdata)->probe_ms = 0;
}

/* Every REDIS_BRIDGE_PING_MS while a link is up: a link whose last probe
   has waited REDIS_BRIDGE_REPLY_TIMEOUT_MS is taken down, else a new probe
   goes out when none is waiting. */
static void redis_link_health(net_timer *tm) {
    redis_link *l = (redis_link *)tm->owner;
    uint64_t now = net_now_ms();
    int rc;
    if (!l->up || !l->ac || l->rb->stopping) return;
    if (l->probe_ms && now - l->probe_ms >= REDIS_BRIDGE_REPLY_TIMEOUT_MS) {
        char why[96];
        snprintf(why, sizeof why, "no answer for %llu ms: Redis has stalled", (unsigned long long)(now - l->probe_ms));
        l->rb->stalls++;
        redis_link_drop(l, why);
        return;
    }
    if (!l->probe_ms) {
        rc = l == &l->rb->sub ? redisAsyncCommand(l->ac, redis_on_health, l, "SUBSCRIBE %b#health", l->rb->prefix,
                                                  l->rb->prefix_len)
                              : redisAsyncCommand(l->ac, redis_on_pong, l, "PING");
        if (rc == REDIS_OK) l->probe_ms = now;
    }
    (void)net_timers_set(l->rb->timers, &l->health, REDIS_BRIDGE_PING_MS);
}

static void redis_sub_command(redis_bridge *rb, const char *cmd, const char *name, size_t len) {
    if (!rb->sub.up) return;    /* replayed by wsch_hub_bridge_resubscribe() once it is up */
    if (redisAsyncCommand(rb->sub.ac, redis_on_sub_reply, rb, "%s %b%b", cmd, rb->prefix, rb->prefix_len, name,
                          len) != REDIS_OK)
        fprintf(stderr, "chat_server: redis subscriber: %s failed\n", cmd);
}

static void redis_hub_subscribe(const char *name, size_t len, void *user) {
    redis_sub_command((redis_bridge *)user, "SUBSCRIBE", name, len);
}

static void redis_hub_unsubscribe(const char *name, size_t len, void *user) {
    redis_sub_command((redis_bridge *)user, "UNSUBSCRIBE", name, len);
}

/* A PUBLISH answered (or abandoned: reply NULL when the link went down). */
static void redis_on_published(redisAsyncContext *ac, void *r, void *privdata) {
    redis_bridge *rb = ((redis_link *)ac->data)->rb;
    size_t n = (size_t)(uintptr_t)privdata;
    if (!r) rb->abandoned++;        /* fate unknown: Redis may or may not have run it */
    rb->pending = rb->pending > n ? rb->pending - n : 0;
}

static int redis_hub_publish(const char *name, size_t len, const void *data, size_t data_len, void *user) {
    redis_bridge *rb = (redis_bridge *)user;
    if (!rb->pub.up || data_len > REDIS_BRIDGE_MAX_PENDING - rb->pending) {
        rb->dropped++;      /* Redis keeps nothing for later: neither do we */
        return rb->pub.up ? WSCH_ERR_QUEUE_FULL : WSCH_ERR_CLOSED;
    }
    if (redisAsyncCommand(rb->pub.ac, redis_on_published, (void *)(uintptr_t)data_len, "PUBLISH %b%b %b", rb->prefix,
                          rb->prefix_len, name, len, data, data_len) != REDIS_OK) {
        rb->dropped++;
        return WSCH_ERR_CLOSED;
    }
    rb->pending += data_len;
    rb->published++;
    return WSCH_OK;
}

/* ---- the public face ----------------------------------------------------- */

/* Returns 0, or -1 when host or prefix is too long. */
static int redis_bridge_init(redis_bridge *rb, const char *host, int port, const char *prefix) {
    memset(rb, 0, sizeof *rb);
    if (strlen(host) >= sizeof rb->host || strlen(prefix) > REDIS_BRIDGE_PREFIX_MAX) return -1;
    snprintf(rb->host, sizeof rb->host, "%s", host);
    rb->port = port;
    snprintf(rb->prefix, sizeof rb->prefix, "%s", prefix);
    rb->prefix_len = strlen(prefix);
    rb->sub.rb = rb->pub.rb = rb;
    rb->sub.role = "subscriber";
    rb->pub.role = "publisher";
    rb->sub.fd = rb->pub.fd = -1;
    rb->sub.timer.owner = rb->sub.health.owner = &rb->sub;
    rb->pub.timer.owner = rb->pub.health.owner = &rb->pub;
    net_random_bytes(&rb->rng, sizeof rb->rng, NULL);
    rb->rng |= 1u;
    return 0;
}

static wsch_hub_bridge redis_bridge_hub_bridge(redis_bridge *rb) {
    wsch_hub_bridge b;
    b.subscribe = redis_hub_subscribe;
    b.unsubscribe = redis_hub_unsubscribe;
    b.publish = redis_hub_publish;
    b.user = rb;
    return b;
}

/* The link's socket is ready (the loop's watch callback). */
static void redis_link_event(void *ctx, uint32_t events) {
    redis_link *l = (redis_link *)ctx;
    /* Each call may free the context (its callbacks then set l->ac to NULL). */
    if (l->ac && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) redisAsyncHandleRead(l->ac);
    if (l->ac && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) redisAsyncHandleWrite(l->ac);
}

/* A link's timer: reconnect when down, give up a connect that hangs. */
static void redis_link_timer(net_timer *tm) {
    redis_link *l = (redis_link *)tm->owner;
    if (l->rb->stopping) return;
    if (!l->ac) redis_link_connect(l);
    else if (!l->up) redis_link_drop(l, "connect timed out (no answer to PING)");
}

/* Joins the loop and starts connecting; failures are retried from its timers. */
static void redis_bridge_start(redis_bridge *rb, hub_loop *loop) {
    redis_link *links[2];
    int i;
    rb->hub = loop->hub;
    rb->ep = loop->ep;
    rb->timers = &loop->timers;
    links[0] = &rb->sub;
    links[1] = &rb->pub;
    for (i = 0; i < 2; i++) {
        links[i]->tag = hub_loop_tag(loop, redis_link_event, links[i]);
        links[i]->timer.fire = redis_link_timer;
        links[i]->health.fire = redis_link_health;
        redis_link_connect(links[i]);
    }
}

/* Drops both links for good; the hub may still call in (nothing happens). */
static void redis_bridge_stop(redis_bridge *rb) {
    rb->stopping = 1;
    net_timers_cancel(rb->timers, &rb->sub.timer);
    net_timers_cancel(rb->timers, &rb->pub.timer);
    net_timers_cancel(rb->timers, &rb->sub.health);
    net_timers_cancel(rb->timers, &rb->pub.health);
    if (rb->sub.ac) redisAsyncFree(rb->sub.ac);     /* runs redis_on_disconnect when it was up */
    if (rb->pub.ac) redisAsyncFree(rb->pub.ac);
    rb->sub.ac = rb->pub.ac = NULL;
    rb->sub.up = rb->pub.up = 0;
}

#endif
