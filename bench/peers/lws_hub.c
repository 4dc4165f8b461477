/* lws_hub - the demo hub's protocol (see node_server.js, hub mode) on
   libwebsockets (Debian libwebsockets-dev, its default poll() event loop),
   the libwebsockets peer of the fan-out benchmark. Accepts any
   /ws?token=T; subscribe, unsubscribe, ping, and publish (the sender must
   be subscribed), delivered to every subscriber of the channel, the
   sender included.

   Broadcast the way lws asks for it: a publish is serialised once into one
   buffer with LWS_PRE bytes of headroom, reference counted, put in each
   subscriber's queue, and each subscriber asks lws_callback_on_writable();
   every LWS_CALLBACK_SERVER_WRITEABLE writes one message with lws_write()
   and asks again while its queue is not empty. lws_ring (as in lws's
   minimal ring server) is not used for the channel: its
   lws_ring_consume_and_update_oldest_tail() walks every reader's tail
   whenever the oldest reader consumes, which with 10,000 readers sharing
   one tail is quadratic per message; per-subscriber queues of shared
   buffers cost the same per delivery at any size.

   Build: cc -O2 -o lws_hub lws_hub.c -lwebsockets -lcjson
   Run:   lws_hub PORT      (127.0.0.1; prints "listening") */
#include "lws_serve.h"
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub_json.h"

/* One envelope, shared by every queue it is in. */
typedef struct msg {
    unsigned refs;
    size_t len;
    unsigned char *buf;         /* LWS_PRE bytes of headroom, then the JSON */
} msg;

typedef struct channel {
    struct channel *next;
    lws_dll2_owner_t members;
    char name[];
} channel;

struct session;
/* A session's place in a channel. */
typedef struct member {
    lws_dll2_t in_channel;
    struct member *next_of_session;
    struct session *s;
    channel *ch;
} member;

typedef struct session {
    struct lws *wsi;
    char user[128];
    msg **q;                    /* messages to write, a ring of q_cap */
    size_t q_head, q_len, q_cap;
    member *subs;
    unsigned char *partial;     /* message being reassembled */
    size_t partial_len, partial_cap;
} session;

static channel *channels;

static void msg_unref(msg *m) {
    if (--m->refs == 0) {
        free(m->buf);
        free(m);
    }
}

static msg *msg_new(unsigned char *buf, size_t len, unsigned refs) {
    msg *m;
    if (!buf) return NULL;
    m = (msg *)malloc(sizeof *m);
    if (!m) {
        free(buf);
        return NULL;
    }
    m->buf = buf;
    m->len = len;
    m->refs = refs;
    return m;
}

/* Queues m (one reference) on s and asks for a writable callback. */
static int enqueue(session *s, msg *m) {
    if (s->q_len == s->q_cap) {
        size_t cap = s->q_cap ? s->q_cap * 2 : 8, i;
        msg **q = (msg **)malloc(cap * sizeof *q);
        if (!q) return -1;
        for (i = 0; i < s->q_len; i++) q[i] = s->q[(s->q_head + i) % s->q_cap];
        free(s->q);
        s->q = q;
        s->q_head = 0;
        s->q_cap = cap;
    }
    s->q[(s->q_head + s->q_len++) % s->q_cap] = m;
    lws_callback_on_writable(s->wsi);
    return 0;
}

static int reply(session *s, const char *type, const char *key, const char *value) {
    size_t len = 0;
    unsigned char *buf = hub_reply(LWS_PRE, type, key, value, &len);
    msg *m = msg_new(buf, len, 1);
    if (!m) return -1;
    if (enqueue(s, m) != 0) {
        msg_unref(m);
        return -1;
    }
    return 0;
}

static channel *channel_find(const char *name, int create) {
    channel *c;
    size_t n = strlen(name);
    for (c = channels; c; c = c->next)
        if (strcmp(c->name, name) == 0) return c;
    if (!create || !(c = (channel *)calloc(1, sizeof *c + n + 1))) return NULL;
    memcpy(c->name, name, n + 1);
    c->next = channels;
    channels = c;
    return c;
}

static member *membership(session *s, const char *name) {
    member *m;
    for (m = s->subs; m; m = m->next_of_session)
        if (strcmp(m->ch->name, name) == 0) return m;
    return NULL;
}

static void leave(session *s, member *m) {
    member **p;
    for (p = &s->subs; *p != m; p = &(*p)->next_of_session) {
    }
    *p = m->next_of_session;
    lws_dll2_remove(&m->in_channel);
    free(m);
}

static int publish(session *s, const hub_req *r) {
    channel *c;
    size_t len = 0;
    unsigned char *buf;
    msg *m;
    if (!membership(s, r->channel)) return reply(s, "error", "code", "not_subscribed");
    c = channel_find(r->channel, 0);
    buf = hub_message(LWS_PRE, r, s->user, &len);
    m = msg_new(buf, len, c->members.count);
    if (!m) return -1;
    lws_start_foreach_dll(struct lws_dll2 *, d, lws_dll2_get_head(&c->members)) {
        member *sub = lws_container_of(d, member, in_channel);
        if (enqueue(sub->s, m) != 0) msg_unref(m);     /* out of memory: this one misses it */
    } lws_end_foreach_dll(d);
    return 0;
}

/* One whole text message from s. */
static int on_message(session *s, const char *text, size_t len) {
    hub_req r;
    int rc = 0;
    switch (hub_parse(text, len, &r)) {
    case HUB_SUBSCRIBE:
        if (!membership(s, r.channel)) {
            channel *c = channel_find(r.channel, 1);
            member *m = (member *)calloc(1, sizeof *m);
            if (!c || !m) {
                free(m);
                rc = -1;
                break;
            }
            m->s = s;
            m->ch = c;
            m->next_of_session = s->subs;
            s->subs = m;
            lws_dll2_add_tail(&m->in_channel, &c->members);
        }
        rc = reply(s, "subscribed", "channel", r.channel);
        break;
    case HUB_UNSUBSCRIBE: {
        member *m = membership(s, r.channel);
        if (m) leave(s, m);
        rc = reply(s, "unsubscribed", "channel", r.channel);
        break;
    }
    case HUB_PUBLISH: rc = publish(s, &r); break;
    case HUB_PING: {
        size_t n = 0;
        unsigned char *buf = hub_pong(LWS_PRE, &r, &n);
        msg *m = msg_new(buf, n, 1);
        rc = m ? enqueue(s, m) : -1;
        break;
    }
    case HUB_UNKNOWN: rc = reply(s, "error", "code", "unknown_type"); break;
    default: rc = reply(s, "error", "code", "bad_envelope"); break;
    }
    hub_req_free(&r);
    return rc;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    session *s = (session *)user;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        /* /ws?token=T with a token, or no WebSocket at all */
        char uri[64], arg[160];
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0 || strcmp(uri, "/ws") != 0) return 1;
        if (!lws_get_urlarg_by_name(wsi, "token=", arg, sizeof arg)) return 1;
        break;
    }
    case LWS_CALLBACK_ESTABLISHED: {
        char arg[160];
        const char *t = lws_get_urlarg_by_name(wsi, "token=", arg, sizeof arg);
        memset(s, 0, sizeof *s);
        s->wsi = wsi;
        snprintf(s->user, sizeof s->user, "%s", t ? t : "");
        return reply(s, "welcome", "user", s->user);
    }
    case LWS_CALLBACK_RECEIVE:
        if (lws_frame_is_binary(wsi)) return -1;
        if (s->partial_len + len > s->partial_cap) {
            size_t cap = (s->partial_len + len) * 2 + 64;
            unsigned char *p = (unsigned char *)realloc(s->partial, cap);
            if (!p) return -1;
            s->partial = p;
            s->partial_cap = cap;
        }
        memcpy(s->partial + s->partial_len, in, len);
        s->partial_len += len;
        if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
            size_t n = s->partial_len;
            s->partial_len = 0;
            return on_message(s, (const char *)s->partial, n);
        }
        break;
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        msg *m;
        if (!s->q_len) break;
        m = s->q[s->q_head];
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
        if (lws_write(wsi, m->buf + LWS_PRE, m->len, LWS_WRITE_TEXT) < (int)m->len) {
            msg_unref(m);
            return -1;
        }
        msg_unref(m);
        if (s->q_len) lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_CLOSED:
        while (s->subs) leave(s, s->subs);
        for (; s->q_len; s->q_len--, s->q_head = (s->q_head + 1) % s->q_cap) msg_unref(s->q[s->q_head]);
        free(s->q);
        free(s->partial);
        s->q = NULL;
        s->partial = NULL;
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"hub", callback, sizeof(session), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

int main(int argc, char **argv) { return lws_serve("lws_hub", protocols, argc, argv); }
