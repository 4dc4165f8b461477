/* redis_bridge.h - several hub processes as one, through Redis pub/sub.

   Plugs a wsch_hub's bridge (desc.bridge, see ws_channel.h) into Redis with
   hiredis's asynchronous API (Debian: libhiredis-dev; link with -lhiredis),
   on the header's POSIX loop (WS_CHANNEL_POSIX): each link's socket is a
   watch, its timers the loop's. Used by chat_server.c (--redis HOST:PORT);
   it is glue, not part of the library.

   What it does:
     - two connections, because a Redis connection that has subscribed can
       do nothing else: one SUBSCRIBEs, one PUBLISHes;
     - the hub's bridge channel NAME is the Redis channel PREFIX NAME
       (prefix "wsch:" unless told otherwise), so several deployments can
       share one Redis: "wsch:news", "wsch:#user:alice";
     - subscribe/unsubscribe from the hub become SUBSCRIBE/UNSUBSCRIBE; a
       publish becomes PUBLISH (with shared positions, below, a channel
       message becomes a script that numbers, keeps and PUBLISHes it); a
       message from Redis goes to wsch_hub_bridge_deliver(), which checks
       it like client input and skips the hub's own messages (it delivered
       those itself; with shared positions it delivers them then);
     - when a connection fails or Redis goes away, it reconnects with
       exponential backoff (200 ms doubling to 5 s, plus up to 25% jitter)
       and a connect timeout, and the subscriber replays every channel the
       hub needs (wsch_hub_bridge_resubscribe; with shared positions again
       when the publisher comes back, for the fetches);
     - the hub keeps serving its own clients meanwhile. Redis pub/sub keeps
       nothing, so a message published while a link is down reaches the
       publishing process's clients only: publishes are refused at once
       (counted as dropped) rather than queued, and messages other
       processes publish while our subscriber is away are never seen
       (with shared positions channel messages are refused instead, and
       nothing is lost unseen: see there);
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

   Shared positions (redis_bridge_history() with a history size > 0, which
   chat_server does when its history is on): Redis numbers and keeps the
   channel messages, so that every process gives a message the same
   offset and epoch and a client recovers on any of them (the hub's
   "Shared positions", ws_channel.h):
     - append (a channel message) runs one Lua script on the publisher
       link: it takes the channel's next offset (HINCRBY, 1 first) and its
       epoch (HSETNX of a random candidate drawn here) from the hash
       PREFIX "#meta:" NAME, writes ,"offset":N,"epoch":"E" before the
       message's closing brace, adds the result to the stream PREFIX
       "#stream:" NAME as entry "N-0" (MAXLEN: the history size), PUBLISHes
       it on PREFIX NAME like any bridge message, and sets both keys to
       expire the history age after this message. A channel whose hash is
       gone, or whose stream is while the hash says it had messages
       (expired, evicted, deleted), starts again: both are dropped and a
       new epoch begins, so no client recovers across the loss. The hub
       delivers the message when it comes back on
       the subscriber link, here as in every other process; the script's
       reply answers the hub (wsch_hub_bridge_appended), a failure or a
       lost link with an error. '#' is not allowed in channel names, so
       these keys never meet a channel's (nor "#user:..." or "#health").
     - fetch (the hub wants a channel's position and last messages) runs
       one script (HGET of epoch and offset, XREVRANGE COUNT) on the
       publisher link and hands the answer to wsch_hub_bridge_fetched().
       It reads, except for a channel that has no position yet (or lost
       its history): that one gets its epoch there and then, at offset 0,
       rather than an empty answer. Every process then confirms its first
       subscribers with the same epoch (the hub would otherwise make one
       up, a different one in each process, and the first message would
       look like a lost history to it), and a client at offset 0 recovers
       on any of them. A fetch also renews the keys' lifetime. But a
       resync (the fetches wsch_hub_bridge_resubscribe() asks for) that
       finds a channel without messages (offset 0) is answered empty, the
       hub's "the bridge has nothing": whatever its live subscribers had
       is gone (Redis restarted empty, or the keys expired meanwhile), and
       it tells those that had messages so.
       It runs only once Redis has confirmed every SUBSCRIBE sent before it
       on the subscriber link: each fetch sends a SUBSCRIBE of the probe
       channel after them (one for a whole batch) and waits for its answer
       (Redis answers a connection's commands in order). So every message
       is in the answer or arrives after it on the subscriber link.
     - both scripts are loaded (SCRIPT LOAD) when the publisher link comes
       up and then run with EVALSHA (their SHA-1 is computed here, so
       nothing waits for the load). A NOSCRIPT answer (SCRIPT FLUSH, a
       failover) fails that one command and loads the scripts again: a
       command sent again as EVAL could overtake the appends behind it and
       reorder a publisher's messages, so none is resent;
     - while Redis is away (either link down or stalled): appends are
       refused at once (counted in "append_errors"; the hub's broadcast
       fails with WSCH_ERR_STATE and chat_server answers the client with
       the error "unavailable"), as are fetches (the hub confirms waiting
       subscribers with "recovered":false rather than guess). Appends and
       fetches written but unanswered when a link is lost are answered
       with an error (their fate is unknown: an append may have run, then
       the other processes have it and a reliable client resends it). A
       fetch waiting for the subscriber link's confirmation fails when
       that link is lost. When the subscriber link comes back, and when
       the publisher does while the subscriber is up, the hub is told
       (wsch_hub_bridge_resubscribe): it subscribes and fetches every
       channel again (the fetches are refused until both are up), which
       resyncs positions and history;
     - appends need both links: the hub delivers its own message when it
       comes back on the subscriber link, so without it a publisher would
       be acknowledged for a message its own process's subscribers could
       not get until a resync;
     - appended and refused appends, fetches answered and failed are
       counted ("appended", "append_errors", "fetches", "fetch_errors");
       unanswered append bytes count against REDIS_BRIDGE_MAX_PENDING like
       PUBLISH bytes.
   Keys hold at most the history size of messages per channel; use one
   Redis (not a cluster: a script's two keys may land on different nodes).

   Wiring (all on one thread, on one wsch_posix_loop):
     redis_bridge rb;
     redis_bridge_init(&rb, "127.0.0.1", 6379, "wsch:");
     redis_bridge_history(&rb, desc.history_size, desc.history_ttl_ms);   (optional: shared positions)
     desc.bridge = redis_bridge_hub_bridge(&rb);
     wsch_posix_hub_create(loop, &desc, &hub);
     redis_bridge_start(&rb, loop, hub);    the links' sockets and timers join the loop
     end:  redis_bridge_stop(&rb) before the hub is destroyed (with the loop).

   Needs ws_channel.h, with WS_CHANNEL_POSIX, included first. */
#ifndef REDIS_BRIDGE_H
#define REDIS_BRIDGE_H

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define REDIS_BRIDGE_BACKOFF_MIN_MS 200u
#define REDIS_BRIDGE_BACKOFF_MAX_MS 5000u
#define REDIS_BRIDGE_CONNECT_TIMEOUT_MS 3000u
#define REDIS_BRIDGE_MAX_PENDING (4u * 1024u * 1024u)
#define REDIS_BRIDGE_PING_MS 1000u
#define REDIS_BRIDGE_REPLY_TIMEOUT_MS 3000u
#define REDIS_BRIDGE_PREFIX_MAX 64

struct redis_bridge;

/* Shared positions: the two scripts (see the comment at the top). A
   channel's state is the hash (epoch, offset of its last message) and the
   stream of its last messages; a hash whose offset is past 0 without its
   stream (expired, evicted) has lost its history: both go, and the
   channel starts again in a new epoch.
   append: KEYS hash, stream; ARGV the message without its closing brace,
   an epoch candidate, the stream's length, the keys' lifetime in ms, the
   pub/sub channel. Returns the offset. */
static const char redis_append_lua[] =
    "local meta, stream = KEYS[1], KEYS[2]\n"
    "local last = redis.call('HGET', meta, 'offset')\n"
    "if not last or (last ~= '0' and redis.call('EXISTS', stream) == 0) then\n"
    "  redis.call('DEL', meta, stream)\n"
    "end\n"
    "redis.call('HSETNX', meta, 'epoch', ARGV[2])\n"
    "local epoch = redis.call('HGET', meta, 'epoch')\n"
    "local n = redis.call('HINCRBY', meta, 'offset', 1)\n"
    "local msg = ARGV[1] .. string.format(',\"offset\":%d,\"epoch\":\"%s\"}', n, epoch)\n"
    "redis.call('XADD', stream, 'MAXLEN', ARGV[3], string.format('%d-0', n), 'm', msg)\n"
    "redis.call('PEXPIRE', meta, ARGV[4])\n"
    "redis.call('PEXPIRE', stream, ARGV[4])\n"
    "redis.call('PUBLISH', ARGV[5], msg)\n"
    "return n\n";
/* fetch: KEYS hash, stream; ARGV count, an epoch candidate, the keys'
   lifetime in ms. Returns {epoch, last offset, its last count messages
   oldest first}. A channel
   without a position gets one here (the candidate, offset 0), so that
   every process confirms its first subscribers with the same epoch and a
   client recovers from offset 0 on any of them; the only write, besides
   the keys' lifetime, which a fetch renews (someone is interested). */
static const char redis_fetch_lua[] =
    "local meta, stream = KEYS[1], KEYS[2]\n"
    "local epoch = redis.call('HGET', meta, 'epoch')\n"
    "local last = redis.call('HGET', meta, 'offset')\n"
    "if not epoch or not last or (last ~= '0' and redis.call('EXISTS', stream) == 0) then\n"
    "  redis.call('DEL', meta, stream)\n"
    "  epoch, last = ARGV[2], '0'\n"
    "  redis.call('HSET', meta, 'epoch', epoch, 'offset', last)\n"
    "end\n"
    "redis.call('PEXPIRE', meta, ARGV[3])\n"
    "redis.call('PEXPIRE', stream, ARGV[3])\n"
    "local out = {epoch, last}\n"
    "if last ~= '0' and tonumber(ARGV[1]) > 0 then\n"
    "  local items = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', ARGV[1])\n"
    "  for i = #items, 1, -1 do out[#out + 1] = items[i][2][2] end\n"
    "end\n"
    "return out\n";

/* An append written to Redis, until its answer. */
typedef struct redis_append {
    uint64_t ticket;
    size_t bytes;               /* counted in pending */
} redis_append;

/* A fetch: queued until the subscriber link has confirmed what came
   before it, then written to Redis, until its answer. */
typedef struct redis_fetch {
    struct redis_fetch *next;
    struct redis_bridge *rb;
    uint64_t barrier;           /* the probe-channel SUBSCRIBE whose answer it waits for */
    size_t count, len, bytes;
    int resync;                 /* asked by wsch_hub_bridge_resubscribe(): an empty channel is answered "" */
    char *name;                 /* NUL-terminated, in the same allocation */
} redis_fetch;

/* One connection to Redis and its place in the loop. */
typedef struct redis_link {
    struct redis_bridge *rb;
    const char *role;               /* "subscriber" or "publisher", for the log */
    redisAsyncContext *ac;          /* NULL while down */
    int fd;
    wsch_posix_watch *watch;        /* fd on the loop, while hiredis holds it */
    unsigned want;                  /* readiness hiredis asked for (WSCH_POSIX_READ/_WRITE) */
    int up;                         /* connected, answered, and usable */
    unsigned failures;              /* consecutive failed attempts: the backoff exponent */
    wsch_posix_timer timer;         /* reconnect when down, connect timeout while connecting */
    wsch_posix_timer health;        /* while up: the next probe, and the check of the last */
    uint64_t probe_ms;              /* when the unanswered probe was sent; 0: none */
    uint64_t probe_seq;             /* subscriber: the probe's place among the SUBSCRIBEs of "#health" */
    const char *why;                /* why we are dropping it, for the disconnect callback */
} redis_link;

typedef struct redis_bridge {
    wsch_hub *hub;
    wsch_posix_loop *loop;
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
    /* Shared positions (redis_bridge_history) */
    uint32_t history;               /* messages kept per channel; 0: off (publish only) */
    uint32_t ttl_ms;                /* the keys' lifetime after a channel's last message */
    char sha_append[41], sha_fetch[41];
    int reloading;                  /* a SCRIPT LOAD after NOSCRIPT is on its way */
    int resyncing;                  /* inside wsch_hub_bridge_resubscribe() */
    uint64_t hs_sent, hs_acked;     /* subscriber: SUBSCRIBEs of "#health" sent / answered */
    uint64_t hs_need;               /* the first of those sent after the last channel SUBSCRIBE */
    int sub_dirty;                  /* a channel SUBSCRIBE went out after the last of those */
    redis_fetch *fq_head, *fq_tail; /* fetches waiting for the subscriber link */
    uint64_t appended;              /* appends numbered and published */
    uint64_t append_errors;         /* appends refused, failed or lost */
    uint64_t fetches;               /* fetches answered */
    uint64_t fetch_errors;          /* fetches refused, failed or lost */
} redis_bridge;

/* ---- the event-loop adapter: hiredis's read/write hooks on the loop ----- */

static void redis_link_apply(redis_link *l) {
    if (l->watch && wsch_posix_watch_set(l->watch, l->want) != WSCH_OK)
        fprintf(stderr, "chat_server: redis %s: the loop refused the socket\n", l->role);
}

static void redis_ev_add_read(void *p) {
    redis_link *l = (redis_link *)p;
    l->want |= WSCH_POSIX_READ;
    redis_link_apply(l);
}

static void redis_ev_del_read(void *p) {
    redis_link *l = (redis_link *)p;
    l->want &= ~(unsigned)WSCH_POSIX_READ;
    redis_link_apply(l);
}

static void redis_ev_add_write(void *p) {
    redis_link *l = (redis_link *)p;
    l->want |= WSCH_POSIX_WRITE;
    redis_link_apply(l);
}

static void redis_ev_del_write(void *p) {
    redis_link *l = (redis_link *)p;
    l->want &= ~(unsigned)WSCH_POSIX_WRITE;
    redis_link_apply(l);
}

/* hiredis is about to close the socket (the context is being freed). */
static void redis_ev_cleanup(void *p) {
    redis_link *l = (redis_link *)p;
    wsch_posix_watch_remove(l->watch);
    l->watch = NULL;
    l->want = 0;
    l->fd = -1;
}

/* ---- connecting, and reconnecting with backoff -------------------------- */

static void redis_link_connect(redis_link *l);
static void redis_link_event(wsch_posix_loop *loop, wsch_posix_watch *w, int fd, unsigned events, void *user);
static void redis_fetch_fail_all(redis_bridge *rb);
static void redis_fetch_run(redis_bridge *rb);

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
    wsch_posix_timer_stop(l->rb->loop, &l->health);
    /* What waited for this link's confirmation will not get it. */
    if (l == &l->rb->sub) redis_fetch_fail_all(l->rb);
    if (l->rb->stopping) return;
    delay = redis_backoff(l->rb, l->failures);
    if (l->failures < 30) l->failures++;
    fprintf(stderr, "chat_server: redis %s: %s; retrying in %u ms\n", l->role, why, (unsigned)delay);
    if (wsch_posix_timer_start(l->rb->loop, &l->timer, delay) != WSCH_OK) fprintf(stderr, "chat_server: redis: no timer\n");
}

static void redis_on_health(redisAsyncContext *ac, void *r, void *privdata);
static void redis_scripts_load(redis_bridge *rb);

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
    l->up = 0;      /* the answers of the commands it drops go to the hub, which may call in */
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
    wsch_posix_timer_stop(l->rb->loop, &l->timer);
    l->up = 1;
    l->failures = 0;
    l->rb->connects++;
    fprintf(stderr, "chat_server: redis %s: connected to %s:%d\n", l->role, l->rb->host, l->rb->port);
    if (l == &l->rb->sub) {
        /* The probe channel first (so Redis's channel counts include it
           from the start), then everything the hub needs: a new
           connection holds no subscriptions. */
        l->rb->channels = 0;
        l->rb->hs_sent = l->rb->hs_acked = l->rb->hs_need = 0;
        l->rb->sub_dirty = 0;
        if (redisAsyncCommand(l->ac, redis_on_health, l, "SUBSCRIBE %b#health", l->rb->prefix, l->rb->prefix_len) !=
            REDIS_OK)
            fprintf(stderr, "chat_server: redis subscriber: SUBSCRIBE failed\n");
        else
            l->rb->hs_sent++;
    } else if (l->rb->history) {
        /* Before anything else on this connection, so every EVALSHA
           written after finds them. */
        redis_scripts_load(l->rb);
    }
    /* The subscriber's return: everything the hub needs is subscribed
       again. Shared positions: the hub also fetches every channel again,
       which needs the publisher too (fetches are refused while it is
       down), so once more when the publisher comes back. */
    if (l == &l->rb->sub || (l->rb->history && l->rb->sub.up)) {
        l->rb->resyncing = 1;       /* its fetches are resyncs (redis_on_fetched) */
        wsch_hub_bridge_resubscribe(l->rb->hub);
        l->rb->resyncing = 0;
    }
    if (wsch_posix_timer_start(l->rb->loop, &l->health, REDIS_BRIDGE_PING_MS) != WSCH_OK)
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
    l->want = 0;
    if (wsch_posix_watch_add(l->rb->loop, ac->c.fd, 0, redis_link_event, l, &l->watch) != WSCH_OK) {
        redisAsyncFree(ac);     /* no hooks of ours yet: nothing calls back */
        redis_link_retry(l, "the loop refused the socket");
        return;
    }
    l->ac = ac;
    l->fd = ac->c.fd;
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
    (void)wsch_posix_timer_start(l->rb->loop, &l->timer, REDIS_BRIDGE_CONNECT_TIMEOUT_MS);
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
   answered, which proves Redis is reading and answering this link, and
   has run every SUBSCRIBE written before it (a fetch's barrier). */
static void redis_on_health(redisAsyncContext *ac, void *r, void *privdata) {
    redis_link *l = (redis_link *)privdata;
    redisReply *reply = (redisReply *)r;
    (void)ac;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) return;
    if (reply->element[0]->type == REDIS_REPLY_STRING && strcmp(reply->element[0]->str, "subscribe") == 0) {
        l->rb->hs_acked++;
        if (l->rb->hs_acked >= l->probe_seq) l->probe_ms = 0;
        if (reply->element[2]->type == REDIS_REPLY_INTEGER)
            l->rb->channels = reply->element[2]->integer > 0 ? reply->element[2]->integer - 1 : 0;
        redis_fetch_run(l->rb);     /* the fetches this answer was the barrier of */
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
static void redis_link_health(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    redis_link *l = (redis_link *)user;
    uint64_t now = wsch_posix_now_ms(NULL);
    int rc;
    (void)loop;
    (void)t;
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
        if (rc == REDIS_OK) {
            l->probe_ms = now;
            if (l == &l->rb->sub) {
                l->probe_seq = ++l->rb->hs_sent;
                if (l->rb->sub_dirty) l->rb->hs_need = l->rb->hs_sent;  /* a barrier too */
                l->rb->sub_dirty = 0;
            }
        }
    }
    (void)wsch_posix_timer_start(l->rb->loop, &l->health, REDIS_BRIDGE_PING_MS);
}

static void redis_sub_command(redis_bridge *rb, const char *cmd, const char *name, size_t len) {
    if (!rb->sub.up) return;    /* replayed by wsch_hub_bridge_resubscribe() once it is up */
    if (redisAsyncCommand(rb->sub.ac, redis_on_sub_reply, rb, "%s %b%b", cmd, rb->prefix, rb->prefix_len, name,
                          len) != REDIS_OK)
        fprintf(stderr, "chat_server: redis subscriber: %s failed\n", cmd);
    else if (cmd[0] == 'S')
        rb->sub_dirty = 1;      /* a fetch from now on waits for it */
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

/* ---- shared positions: append and fetch through the scripts ------------- */

/* A script's answer was an error: said on stderr (the first, then at each
   power of two, so a Redis that refuses everything does not flood it);
   NOSCRIPT (the script cache was flushed, or this is another server
   now) loads the scripts again, for the commands after this one. */
static void redis_script_error(redis_bridge *rb, const char *what, uint64_t count, const redisReply *reply) {
    if (strncmp(reply->str, "NOSCRIPT", 8) == 0 && !rb->reloading && rb->pub.up) redis_scripts_load(rb);
    if ((count & (count - 1u)) == 0)
        fprintf(stderr, "chat_server: redis: %s failed (%llu so far): %s\n", what, (unsigned long long)count,
                reply->str);
}

/* SCRIPT LOAD answered: it must name the SHA-1 computed here. */
static void redis_on_script_loaded(redisAsyncContext *ac, void *r, void *privdata) {
    redis_bridge *rb = ((redis_link *)ac->data)->rb;
    redisReply *reply = (redisReply *)r;
    const char *sha = (const char *)privdata;
    if (sha == rb->sha_fetch) rb->reloading = 0;      /* the second of the two */
    if (!reply) return;
    if (reply->type != REDIS_REPLY_STRING || strcmp(reply->str, sha) != 0)
        fprintf(stderr, "chat_server: redis: SCRIPT LOAD answered %s, expected %s\n",
                reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_ERROR ? reply->str : "?", sha);
}

static void redis_scripts_load(redis_bridge *rb) {
    if (redisAsyncCommand(rb->pub.ac, redis_on_script_loaded, rb->sha_append, "SCRIPT LOAD %s", redis_append_lua) !=
            REDIS_OK ||
        redisAsyncCommand(rb->pub.ac, redis_on_script_loaded, rb->sha_fetch, "SCRIPT LOAD %s", redis_fetch_lua) !=
            REDIS_OK) {
        fprintf(stderr, "chat_server: redis publisher: SCRIPT LOAD failed\n");
        return;
    }
    rb->reloading = 1;
}

/* The append script answered (the offset), or failed, or its link went
   (reply NULL: Redis may or may not have run it). */
static void redis_on_appended(redisAsyncContext *ac, void *r, void *privdata) {
    redis_bridge *rb = ((redis_link *)ac->data)->rb;
    redisReply *reply = (redisReply *)r;
    redis_append *a = (redis_append *)privdata;
    uint64_t ticket = a->ticket;
    int status = WSCH_OK;
    rb->pending = rb->pending > a->bytes ? rb->pending - a->bytes : 0;
    free(a);
    if (!reply) {
        rb->abandoned++;
        status = WSCH_ERR_CLOSED;
    } else if (reply->type != REDIS_REPLY_INTEGER) {
        status = WSCH_ERR_STATE;
    }
    if (status == WSCH_OK) {
        rb->appended++;
    } else {
        rb->append_errors++;
        if (reply && reply->type == REDIS_REPLY_ERROR) redis_script_error(rb, "append", rb->append_errors, reply);
    }
    wsch_hub_bridge_appended(rb->hub, ticket, status);
}

/* 16 random lowercase hex digits: the epoch a channel gets if the script
   finds it has none. */
static void redis_epoch_candidate(char out[17]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char rnd[8];
    int i;
    wsch_posix_random_bytes(rnd, sizeof rnd, NULL);
    for (i = 0; i < 8; i++) {
        out[2 * i] = hex[rnd[i] >> 4];
        out[2 * i + 1] = hex[rnd[i] & 15u];
    }
    out[16] = '\0';
}

static int redis_hub_append(const char *name, size_t len, const void *data, size_t data_len, uint64_t ticket,
                            void *user) {
    redis_bridge *rb = (redis_bridge *)user;
    const char *d = (const char *)data;
    char epoch[17], maxlen[24], ttl[24];
    redis_append *a;
    /* Both links: this process's subscribers get the message when it
       comes back on the subscriber link. */
    if (!rb->pub.up || !rb->sub.up || data_len > REDIS_BRIDGE_MAX_PENDING - rb->pending) {
        rb->append_errors++;
        return rb->pub.up && rb->sub.up ? WSCH_ERR_QUEUE_FULL : WSCH_ERR_CLOSED;
    }
    if (data_len < 2 || d[data_len - 1] != '}') {
        rb->append_errors++;
        return WSCH_ERR_ARG;
    }
    a = (redis_append *)malloc(sizeof *a);
    if (!a) {
        rb->append_errors++;
        return WSCH_ERR_NOMEM;
    }
    a->ticket = ticket;
    a->bytes = data_len;
    redis_epoch_candidate(epoch);
    snprintf(maxlen, sizeof maxlen, "%lu", (unsigned long)rb->history);
    snprintf(ttl, sizeof ttl, "%lu", (unsigned long)rb->ttl_ms);
    if (redisAsyncCommand(rb->pub.ac, redis_on_appended, a, "EVALSHA %s 2 %b#meta:%b %b#stream:%b %b %s %s %s %b%b",
                          rb->sha_append, rb->prefix, rb->prefix_len, name, len, rb->prefix, rb->prefix_len, name,
                          len, data, data_len - 1, epoch, maxlen, ttl, rb->prefix, rb->prefix_len, name,
                          len) != REDIS_OK) {
        free(a);
        rb->append_errors++;
        return WSCH_ERR_CLOSED;
    }
    rb->pending += data_len;
    return WSCH_OK;
}

/* Answers a fetch that did not happen (status: why), and frees it. */
static void redis_fetch_fail(redis_fetch *f, int status) {
    redis_bridge *rb = f->rb;
    rb->pending = rb->pending > f->bytes ? rb->pending - f->bytes : 0;
    rb->fetch_errors++;
    (void)wsch_hub_bridge_fetched(rb->hub, f->name, f->len, status, "", 0, NULL, 0);
    free(f);
}

/* The fetch script answered {epoch, last offset, messages...}, or failed,
   or its link went (reply NULL). */
static void redis_on_fetched(redisAsyncContext *ac, void *r, void *privdata) {
    redis_fetch *f = (redis_fetch *)privdata;
    redis_bridge *rb = f->rb;
    redisReply *reply = (redisReply *)r;
    wsch_str *msgs = NULL;
    unsigned long long last = 0;
    size_t i, n = 0;
    char *end = NULL;
    int rc;
    (void)ac;
    if (!reply) {
        redis_fetch_fail(f, WSCH_ERR_CLOSED);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        redis_script_error(rb, "fetch", rb->fetch_errors + 1u, reply);
        redis_fetch_fail(f, WSCH_ERR_STATE);
        return;
    }
    rc = reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2 &&
         reply->element[0]->type == REDIS_REPLY_STRING && reply->element[1]->type == REDIS_REPLY_STRING &&
         reply->element[1]->len > 0 && reply->element[1]->str[0] >= '0' && reply->element[1]->str[0] <= '9';
    if (rc) {
        errno = 0;
        last = strtoull(reply->element[1]->str, &end, 10);
        rc = errno == 0 && end == reply->element[1]->str + reply->element[1]->len;
    }
    if (rc) n = reply->elements - 2;
    if (rc && n) {
        msgs = (wsch_str *)malloc(n * sizeof *msgs);
        if (!msgs) {
            redis_fetch_fail(f, WSCH_ERR_NOMEM);
            return;
        }
        for (i = 0; i < n && rc; i++) {
            const redisReply *m = reply->element[i + 2];
            rc = m->type == REDIS_REPLY_STRING;
            msgs[i].ptr = m->str;
            msgs[i].len = m->len;
        }
    }
    if (!rc) {
        free(msgs);
        fprintf(stderr, "chat_server: redis: a fetch of %s answered something else than a history\n", f->name);
        redis_fetch_fail(f, WSCH_ERR_ARG);
        return;
    }
    rb->pending = rb->pending > f->bytes ? rb->pending - f->bytes : 0;
    /* A resync that found a channel without messages: what the hub
       delivered from (if anything) is gone, Redis having restarted empty
       or the keys expired while the link was down (another process's
       resync may have made the new position already). The hub hears it as
       an empty answer, "the bridge has nothing", and tells live
       subscribers that had messages that they may have lost some. Redis
       has the new epoch all the same, for the next message. */
    if (f->resync && last == 0) {
        rc = wsch_hub_bridge_fetched(rb->hub, f->name, f->len, WSCH_OK, "", 0, NULL, 0);
    } else {
        /* The hub checks it like bridge input (a malformed one is a failed read). */
        rc = wsch_hub_bridge_fetched(rb->hub, f->name, f->len, WSCH_OK, reply->element[0]->str, (uint64_t)last, msgs,
                                     n);
    }
    if (rc == WSCH_OK) rb->fetches++;
    else rb->fetch_errors++;
    free(msgs);
    free(f);
}

/* Writes the fetch to Redis; 0, or -1 when the publisher link cannot take it. */
static int redis_fetch_send(redis_fetch *f) {
    redis_bridge *rb = f->rb;
    char count[24], epoch[17], ttl[24];
    if (!rb->pub.up) return -1;
    snprintf(count, sizeof count, "%llu", (unsigned long long)f->count);
    redis_epoch_candidate(epoch);
    snprintf(ttl, sizeof ttl, "%lu", (unsigned long)rb->ttl_ms);
    return redisAsyncCommand(rb->pub.ac, redis_on_fetched, f, "EVALSHA %s 2 %b#meta:%b %b#stream:%b %s %s %s",
                             rb->sha_fetch, rb->prefix, rb->prefix_len, f->name, f->len, rb->prefix, rb->prefix_len,
                             f->name, f->len, count, epoch, ttl) == REDIS_OK
               ? 0
               : -1;
}

/* The fetches whose barrier Redis has answered go out, in order. */
static void redis_fetch_run(redis_bridge *rb) {
    redis_fetch *f;
    while ((f = rb->fq_head) != NULL && f->barrier <= rb->hs_acked) {
        rb->fq_head = f->next;
        if (!rb->fq_head) rb->fq_tail = NULL;
        if (redis_fetch_send(f) != 0) redis_fetch_fail(f, WSCH_ERR_CLOSED);
    }
}

/* The subscriber link is gone: no waiting fetch will be confirmed. Each is
   taken off the queue before it is answered (the hub may call in). */
static void redis_fetch_fail_all(redis_bridge *rb) {
    redis_fetch *f;
    while ((f = rb->fq_head) != NULL) {
        rb->fq_head = f->next;
        if (!rb->fq_head) rb->fq_tail = NULL;
        redis_fetch_fail(f, WSCH_ERR_CLOSED);
    }
}

static int redis_hub_fetch(const char *name, size_t len, size_t count, void *user) {
    redis_bridge *rb = (redis_bridge *)user;
    size_t bytes = len + 64u;       /* what the command costs, roughly */
    redis_fetch *f;
    /* Refused rather than kept for later: the hub confirms its waiting
       subscribers ("recovered":false) and fetches again once both links
       are back (wsch_hub_bridge_resubscribe). */
    if (!rb->pub.up || !rb->sub.up || bytes > REDIS_BRIDGE_MAX_PENDING - rb->pending) {
        rb->fetch_errors++;
        return rb->pub.up && rb->sub.up ? WSCH_ERR_QUEUE_FULL : WSCH_ERR_CLOSED;
    }
    f = (redis_fetch *)malloc(sizeof *f + len + 1);
    if (!f) {
        rb->fetch_errors++;
        return WSCH_ERR_NOMEM;
    }
    f->next = NULL;
    f->rb = rb;
    f->count = count;
    f->resync = rb->resyncing;
    f->len = len;
    f->bytes = bytes;
    f->name = (char *)(f + 1);
    memcpy(f->name, name, len);
    f->name[len] = '\0';
    /* A channel SUBSCRIBE written since the last barrier (this channel's,
       when the hub has just subscribed): one more barrier after it. */
    if (rb->sub_dirty) {
        if (redisAsyncCommand(rb->sub.ac, redis_on_health, &rb->sub, "SUBSCRIBE %b#health", rb->prefix,
                              rb->prefix_len) != REDIS_OK) {
            free(f);
            rb->fetch_errors++;
            return WSCH_ERR_CLOSED;
        }
        rb->hs_need = ++rb->hs_sent;
        rb->sub_dirty = 0;
    }
    f->barrier = rb->hs_need;      /* probes sent since need not be waited for */
    if (!rb->fq_head && rb->hs_acked >= f->barrier) {
        if (redis_fetch_send(f) != 0) {
            free(f);
            rb->fetch_errors++;
            return WSCH_ERR_CLOSED;
        }
    } else if (rb->fq_tail) {
        rb->fq_tail->next = f;
        rb->fq_tail = f;
    } else {
        rb->fq_head = rb->fq_tail = f;
    }
    rb->pending += bytes;
    return WSCH_OK;
}

/* ---- the public face ----------------------------------------------------- */

/* The SHA-1 of a script as Redis names it (EVALSHA): 40 lowercase hex digits. */
static void redis_sha1_hex(const char *text, char out[41]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char d[20];
    wsch_sha1 s;
    int i;
    wsch_sha1_init(&s);
    wsch_sha1_update(&s, text, strlen(text));
    wsch_sha1_final(&s, d);
    for (i = 0; i < 20; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15u];
    }
    out[40] = '\0';
}

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
    wsch_posix_random_bytes(&rb->rng, sizeof rb->rng, NULL);
    rb->rng |= 1u;
    redis_sha1_hex(redis_append_lua, rb->sha_append);
    redis_sha1_hex(redis_fetch_lua, rb->sha_fetch);
    return 0;
}

/* Shared positions (the comment at the top): Redis keeps the last history
   messages of each channel (0: off, the bridge only publishes), and a
   channel's keys expire ttl_ms (0: 5 minutes) after its last message.
   Give it the hub's desc.history_size and history_ttl_ms, before
   redis_bridge_hub_bridge(). */
static void redis_bridge_history(redis_bridge *rb, uint32_t history, uint32_t ttl_ms) {
    rb->history = history;
    rb->ttl_ms = ttl_ms ? ttl_ms : 300000u;
}

static wsch_hub_bridge redis_bridge_hub_bridge(redis_bridge *rb) {
    wsch_hub_bridge b;
    memset(&b, 0, sizeof b);
    b.subscribe = redis_hub_subscribe;
    b.unsubscribe = redis_hub_unsubscribe;
    b.publish = redis_hub_publish;      /* user channels; channels too without history */
    if (rb->history) {
        b.append = redis_hub_append;
        b.fetch = redis_hub_fetch;
    }
    b.user = rb;
    return b;
}

/* The link's socket is ready (its watch). */
static void redis_link_event(wsch_posix_loop *loop, wsch_posix_watch *w, int fd, unsigned events, void *user) {
    redis_link *l = (redis_link *)user;
    (void)loop;
    (void)w;
    (void)fd;
    /* Each call may free the context (its callbacks then set l->ac to NULL). */
    if (l->ac && (events & (WSCH_POSIX_READ | WSCH_POSIX_HANGUP))) redisAsyncHandleRead(l->ac);
    if (l->ac && (events & (WSCH_POSIX_WRITE | WSCH_POSIX_HANGUP))) redisAsyncHandleWrite(l->ac);
}

/* A link's timer: reconnect when down, give up a connect that hangs. */
static void redis_link_timer(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    redis_link *l = (redis_link *)user;
    (void)loop;
    (void)t;
    if (l->rb->stopping) return;
    if (!l->ac) redis_link_connect(l);
    else if (!l->up) redis_link_drop(l, "connect timed out (no answer to PING)");
}

/* Joins the loop and starts connecting; failures are retried from its timers. */
static void redis_bridge_start(redis_bridge *rb, wsch_posix_loop *loop, wsch_hub *hub) {
    redis_link *links[2];
    int i;
    rb->hub = hub;
    rb->loop = loop;
    links[0] = &rb->sub;
    links[1] = &rb->pub;
    for (i = 0; i < 2; i++) {
        wsch_posix_timer_init(&links[i]->timer, redis_link_timer, links[i]);
        wsch_posix_timer_init(&links[i]->health, redis_link_health, links[i]);
        redis_link_connect(links[i]);
    }
}

/* Drops both links for good; the hub may still call in (nothing happens). */
static void redis_bridge_stop(redis_bridge *rb) {
    rb->stopping = 1;
    wsch_posix_timer_stop(rb->loop, &rb->sub.timer);
    wsch_posix_timer_stop(rb->loop, &rb->pub.timer);
    wsch_posix_timer_stop(rb->loop, &rb->sub.health);
    wsch_posix_timer_stop(rb->loop, &rb->pub.health);
    rb->sub.up = rb->pub.up = 0;   /* the hub may call in while the answers below go out */
    /* Each runs redis_on_disconnect when it was connected; the appends and
       fetches still waiting are answered with an error. */
    if (rb->sub.ac) redisAsyncFree(rb->sub.ac);
    if (rb->pub.ac) redisAsyncFree(rb->pub.ac);
    rb->sub.ac = rb->pub.ac = NULL;
    redis_fetch_fail_all(rb);
}

#endif
