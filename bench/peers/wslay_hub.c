/* wslay_hub - the demo hub's protocol (see node_server.js, hub mode) on
   wslay's event API (Debian libwslay-dev) and its own epoll loop, the
   wslay peer of the fan-out benchmark. Accepts any /ws?token=T;
   subscribe, unsubscribe, ping, and publish (the sender must be
   subscribed), delivered to every subscriber of the channel, the sender
   included.

   A publish is serialised once and queued to each subscriber's context
   with wslay_event_queue_msg() (which copies it: wslay owns its queue);
   the subscribers so touched are written with wslay_event_send() once the
   whole batch of epoll events is handled, and wait for EPOLLOUT only when
   the socket is full. The connection handling is wslay_echo.c's
   (wslay_http.h).

   Build: cc -O2 -D_GNU_SOURCE -o wslay_hub wslay_hub.c -lwslay -lcrypto -lcjson
   Run:   wslay_hub PORT    (listens on 127.0.0.1; prints "listening") */
#include <signal.h>
#include <stdlib.h>

#include "hub_json.h"
#include "wslay_http.h"

struct member;

typedef struct channel {
    struct channel *next;
    struct member **members;    /* unordered: a leaving member's slot takes the last one */
    size_t count, cap;
    char name[];
} channel;

typedef struct client {
    wsl_conn conn;              /* first: the wslay context's user data */
    char user[128];
    struct member *subs;
    size_t dirty_at;            /* 1 + its index in `dirty` while queued there, else 0 */
} client;

/* A client's place in a channel. */
typedef struct member {
    client *c;
    channel *ch;
    size_t at;                  /* index in ch->members */
    struct member *next_of_client;
} member;

static int ep;
static channel *channels;
/* Clients given messages by someone else's publish in this batch of events. */
static client **dirty;
static size_t dirty_len, dirty_cap;

static void mark_dirty(client *c) {
    if (c->dirty_at) return;
    if (dirty_len == dirty_cap) {
        size_t cap = dirty_cap ? dirty_cap * 2 : 1024;
        client **d = (client **)realloc(dirty, cap * sizeof *d);
        if (!d) return;         /* written on its next event instead */
        dirty = d;
        dirty_cap = cap;
    }
    dirty[dirty_len++] = c;
    c->dirty_at = dirty_len;
}

static int queue_text(client *c, const unsigned char *text, size_t len) {
    struct wslay_event_msg m;
    m.opcode = WSLAY_TEXT_FRAME;
    m.msg = text;
    m.msg_length = len;
    return wslay_event_queue_msg(c->conn.ctx, &m);
}

/* Queues an envelope built by hub_json.h (NULL: out of memory) and frees it. */
static void queue_built(client *c, unsigned char *buf, size_t len) {
    if (!buf) return;
    queue_text(c, buf, len);
    free(buf);
}

static void reply(client *c, const char *type, const char *key, const char *value) {
    size_t len = 0;
    unsigned char *buf = hub_reply(0, type, key, value, &len);
    queue_built(c, buf, len);
}

static channel *channel_find(const char *name, int create) {
    channel *ch;
    size_t n = strlen(name);
    for (ch = channels; ch; ch = ch->next)
        if (strcmp(ch->name, name) == 0) return ch;
    if (!create || !(ch = (channel *)calloc(1, sizeof *ch + n + 1))) return NULL;
    memcpy(ch->name, name, n + 1);
    ch->next = channels;
    channels = ch;
    return ch;
}

static member *membership(client *c, const char *name) {
    member *m;
    for (m = c->subs; m; m = m->next_of_client)
        if (strcmp(m->ch->name, name) == 0) return m;
    return NULL;
}

static int join(client *c, const char *name) {
    channel *ch = channel_find(name, 1);
    member *m;
    if (!ch) return -1;
    if (ch->count == ch->cap) {
        size_t cap = ch->cap ? ch->cap * 2 : 64;
        member **a = (member **)realloc(ch->members, cap * sizeof *a);
        if (!a) return -1;
        ch->members = a;
        ch->cap = cap;
    }
    if (!(m = (member *)calloc(1, sizeof *m))) return -1;
    m->c = c;
    m->ch = ch;
    m->at = ch->count;
    ch->members[ch->count++] = m;
    m->next_of_client = c->subs;
    c->subs = m;
    return 0;
}

static void leave(client *c, member *m) {
    member **p;
    channel *ch = m->ch;
    for (p = &c->subs; *p != m; p = &(*p)->next_of_client) {
    }
    *p = m->next_of_client;
    ch->members[m->at] = ch->members[--ch->count];
    ch->members[m->at]->at = m->at;
    free(m);
}

static void publish(client *c, const hub_req *r) {
    channel *ch;
    size_t len = 0, i;
    unsigned char *buf;
    if (!membership(c, r->channel)) {
        reply(c, "error", "code", "not_subscribed");
        return;
    }
    ch = channel_find(r->channel, 0);
    if (!(buf = hub_message(0, r, c->user, &len))) return;
    for (i = 0; i < ch->count; i++) {
        client *sub = ch->members[i]->c;
        queue_text(sub, buf, len);
        if (sub != c) mark_dirty(sub);  /* the sender is written as its own turn ends */
    }
    free(buf);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user) {
    client *c = (client *)user;
    hub_req r;
    (void)ctx;
    if (wslay_is_ctrl_frame(arg->opcode)) return;   /* wslay answers pings and closes itself */
    if (arg->opcode != WSLAY_TEXT_FRAME) {
        wslay_event_queue_close(c->conn.ctx, 1003, NULL, 0);
        return;
    }
    switch (hub_parse((const char *)arg->msg, arg->msg_length, &r)) {
    case HUB_SUBSCRIBE:
        if (membership(c, r.channel) || join(c, r.channel) == 0) reply(c, "subscribed", "channel", r.channel);
        else reply(c, "error", "code", "out_of_memory");
        break;
    case HUB_UNSUBSCRIBE: {
        member *m = membership(c, r.channel);
        if (m) leave(c, m);
        reply(c, "unsubscribed", "channel", r.channel);
        break;
    }
    case HUB_PUBLISH: publish(c, &r); break;
    case HUB_PING: {
        size_t len = 0;
        unsigned char *buf = hub_pong(0, &r, &len);
        queue_built(c, buf, len);
        break;
    }
    case HUB_UNKNOWN: reply(c, "error", "code", "unknown_type"); break;
    default: reply(c, "error", "code", "bad_envelope"); break;
    }
    hub_req_free(&r);
}

static void client_free(client *c) {
    while (c->subs) leave(c, c->subs);
    if (c->dirty_at) dirty[c->dirty_at - 1] = NULL;
    wsl_conn_free(&c->conn);
    free(c);
}

static wsl_conn *client_new(int fd) {
    client *k = (client *)calloc(1, sizeof *k);
    (void)fd;
    return k ? &k->conn : NULL;
}

/* "GET /ws?token=T HTTP/1.1": the token into c->user; -1 for any other target. */
static int take_token(client *c) {
    const char *target = c->conn.head + 4, *end, *p;
    if (strncmp(c->conn.head, "GET /ws?", 8) != 0 || !(end = strchr(target, ' '))) return -1;
    for (p = target + 4; p < end;) {            /* each name=value of the query */
        const char *amp = (const char *)memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
        size_t n = (size_t)(stop - p) - 6;
        if ((size_t)(stop - p) > 6 && memcmp(p, "token=", 6) == 0) {
            if (n >= sizeof c->user) return -1;
            memcpy(c->user, p + 6, n);
            c->user[n] = '\0';
            return 0;
        }
        p = stop + 1;
    }
    return -1;
}

/* Writes what wslay holds for c and sets its epoll interest; -1 when c is to be freed. */
static int flush(client *c) {
    wsl_conn *k = &c->conn;
    if (wslay_event_want_write(k->ctx) && wslay_event_send(k->ctx) != 0) return -1;
    if (!wslay_event_want_read(k->ctx) && !wslay_event_want_write(k->ctx)) return -1;
    wsl_set_events(ep, k, (wslay_event_want_read(k->ctx) ? EPOLLIN : 0u) | (wslay_event_want_write(k->ctx) ? EPOLLOUT : 0u));
    return 0;
}

/* Returns -1 when the client is to be freed. */
static int on_ready(client *c, uint32_t ev) {
    wsl_conn *k = &c->conn;
    if (!k->ctx) { /* reading the upgrade request */
        struct wslay_event_callbacks cb;
        int r = wsl_read_head(k);
        if (r <= 0) return r;
        if (take_token(c) != 0) return -1;
        memset(&cb, 0, sizeof cb);
        cb.recv_callback = wsl_recv_cb;
        cb.send_callback = wsl_send_cb;
        cb.on_msg_recv_callback = on_msg;
        if (wsl_upgrade(k, &cb) != 0) return -1;
        reply(c, "welcome", "user", c->user);   /* leaves after the 101 */
    }
    if (k->resp_len) {
        int r = wsl_send_resp(ep, k);
        if (r <= 0) return r;
        return flush(c);
    }
    if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) && wslay_event_recv(k->ctx) != 0) return -1;
    return flush(c);
}

int main(int argc, char **argv) {
    int lfd = wsl_start(argc, argv, "wslay_hub", &ep);
    if (lfd < 0) return lfd == -2 ? 2 : 1;
    for (;;) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, -1), i;
        size_t d;
        for (i = 0; i < n; i++) {
            client *c = (client *)evs[i].data.ptr;
            if (!c) {
                wsl_accept_all(ep, lfd, client_new);
                continue;
            }
            if (on_ready(c, evs[i].events) < 0) client_free(c);
        }
        /* Subscribers given a broadcast in this batch: written now. */
        for (d = 0; d < dirty_len; d++) {
            client *c = dirty[d];
            if (!c) continue;
            c->dirty_at = 0;
            if (flush(c) < 0) client_free(c);
        }
        dirty_len = 0;
    }
}
