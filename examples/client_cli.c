/* client_cli - a reconnecting channel client on poll(2).

   Shows wsch_client on a plain poll loop: it connects, subscribes, prints
   every message, every status change and the time until the next retry,
   and keeps reconnecting (with backoff) when the server goes away. Against
   a hub with history nothing is lost across reconnects: a channel message
   prints as "msg CHANNEL OFFSET PAYLOAD", and after each reconnect every
   channel says "recovered CHANNEL" or "not recovered CHANNEL ...".
   wsch_client_want() says what to poll for, the close effect is the one
   place the socket is closed, and on_stop ends the program.

       build/client_cli --url ws://127.0.0.1:8080/ws --token T \
                        --subscribe news --subscribe alerts

   Options: --url URL (required)  --token T  --token-header (send it as
   Authorization: Bearer instead of ?token=)  --subscribe CH (repeatable)
   --send TYPE JSON (queued at start; goes out once connected, repeatable)
   --max-attempts N (default: retry forever)  --backoff-base MS
   --backoff-max MS  --no-jitter  --heartbeat MS  --pong-timeout MS
   --heartbeat-mode app|protocol|both|off  --count N (exit after N messages)
   --deflate (offer permessage-deflate; needs a build with zlib)
   --history K (ask for the last K messages of each channel when first joining)
   --publish CH --count N --rate R: subscribe to CH, publish N numbered
   messages reliably ({"type":"publish","payload":{"channel":CH,"data":K}},
   K = 1..N) at R per second, exit 0 once all are acknowledged, printing
   "published N acked A resent M" (M: messages that needed another send);
   1 when any was refused or given up.
   --presence CH (repeatable): subscribe to CH asking for its presence;
   prints "join CH USER [INFO]" and "leave CH USER" as users come and go
   (per user; after a reconnect only what changed meanwhile), and
   "presence CH N users (counts only)" when the hub sends counts.

   Build: cc -std=c99 -D_GNU_SOURCE -I. -o build/client_cli examples/client_cli.c */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include "example_net.h"

#include <stdarg.h>

#define MAX_SUBS 32
#define MAX_SENDS 16

typedef struct app {
    wsch_client *c;
    int fd;                     /* the transport, -1 when there is none */
    int connecting;             /* nonblocking connect in progress */
    int stopped;                /* on_stop ran: the client will not reconnect */
    net_timers heap;
    net_timer timers[32];       /* one per library timer id */
    uint64_t t0;
    unsigned retries;           /* since the last open: what on_status prints */
    unsigned long messages, stop_after;
    const char *publish;        /* --publish CH */
    int presence;               /* some channel was asked with --presence */
    unsigned long acked, failed;
} app;

#if defined(__GNUC__)
#define PRINTF_LIKE __attribute__((format(printf, 2, 3)))
#else
#define PRINTF_LIKE
#endif

static void say(app *a, const char *fmt, ...) PRINTF_LIKE;
static void say(app *a, const char *fmt, ...) {
    uint64_t ms = net_now_ms() - a->t0;
    va_list ap;
    printf("[%4llu.%03llu] ", (unsigned long long)(ms / 1000u), (unsigned long long)(ms % 1000u));
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* ---- effects: what the library asks of the program ---- */

static void fx_connect(const char *host, uint16_t port, void *user) {
    app *a = (app *)user;
    int in_progress = 0;
    say(a, "connecting to %s:%u", host, (unsigned)port);
    a->fd = net_connect(host, port, &in_progress);
    if (a->fd < 0) {
        say(a, "connect failed: %s", strerror(errno));
        wsch_client_transport_failed(a->c);     /* allowed from inside the effect; close() follows */
        return;
    }
    a->connecting = in_progress;
    if (!in_progress) wsch_client_transport_open(a->c);
}

static size_t fx_send(const void *data, size_t len, void *user) {
    long n = net_write(((app *)user)->fd, data, len);
    return n < 0 ? WSCH_SEND_ERROR : (size_t)n;    /* 0: would block, the library queues the rest */
}

/* Once per connect(), whatever became of it: the only place the socket is closed. */
static void fx_close(void *user) {
    app *a = (app *)user;
    if (a->fd >= 0) net_close(a->fd);    /* unread input first: no reset eats our close frame */
    a->fd = -1;
    a->connecting = 0;
}

static void fx_timer_set(unsigned id, uint32_t ms, void *user) {
    app *a = (app *)user;
    if (id >= 32) return;
    a->timers[id].id = id;
    if (net_timers_set(&a->heap, &a->timers[id], ms) != NET_OK) {
        fputs("client_cli: out of memory for timers\n", stderr);
        exit(1);
    }
}

static void fx_timer_cancel(unsigned id, void *user) {
    app *a = (app *)user;
    if (id < 32) net_timers_cancel(&a->heap, &a->timers[id]);
}

static uint64_t fx_now(void *user) {
    (void)user;
    return net_now_ms();
}

/* ---- events ---- */

static void on_status(wsch_client *c, wsch_status st, void *user) {
    app *a = (app *)user;
    if (st == WSCH_STATUS_CONNECTED) a->retries = 0;
    if (st == WSCH_STATUS_DISCONNECTED && wsch_client_next_retry_ms(c) >= 0)
        say(a, "status disconnected; retry %u in %lld ms", ++a->retries, (long long)wsch_client_next_retry_ms(c));
    else
        say(a, "status %s", wsch_status_str(st));
}

static void on_connect(wsch_client *c, void *user) {
    say((app *)user, "connected; %u subscription(s) replayed", (unsigned)wsch_client_subscription_count(c));
}

static void on_disconnect(wsch_client *c, int code, const char *reason, size_t len, void *user) {
    (void)c;
    say((app *)user, "closed: code %d reason \"%.*s\"", code, (int)len, reason);
}

static void on_error(wsch_client *c, int err, const char *what, void *user) {
    (void)c;
    say((app *)user, "error: %s (%s)", what, wsch_err_str(err));
}

/* The client gave up for good (or finished a disconnect): the loop ends. */
static void on_stop(wsch_client *c, wsch_stop reason, void *user) {
    app *a = (app *)user;
    (void)c;
    say(a, "stopped: %s", wsch_stop_str(reason));
    a->stopped = 1;
}

static void on_any(wsch_client *c, const wsch_client_message *m, void *user) {
    app *a = (app *)user;
    (void)c;
    a->messages++;
    if (m->channel) {
        /* A publisher hears its own messages: only the summary is of use. */
        if (!a->publish) say(a, "msg %s %llu %.*s", m->channel, (unsigned long long)m->offset,
                             (int)m->payload.len, m->payload.ptr ? m->payload.ptr : "");
    } else if (a->presence && m->type_len >= 8 && memcmp(m->type, "presence", 8) == 0) {
        /* on_presence says it */
    } else if (!a->publish || (m->type_len != 3 || memcmp(m->type, "ack", 3) != 0)) {
        say(a, "message %.*s", (int)m->raw.len, m->raw.ptr);
    }
}

static void on_recovery(wsch_client *c, const char *channel, int recovered, void *user) {
    wsch_client_position pos;
    if (recovered || wsch_client_channel_position(c, channel, &pos) != WSCH_OK) {
        say((app *)user, "%s %s", recovered ? "recovered" : "not recovered", channel);
        return;
    }
    say((app *)user, "not recovered %s (now at offset %llu of epoch %s)", channel, (unsigned long long)pos.offset,
        pos.epoch);
}

static void on_presence(wsch_client *c, const char *channel, const char *member, const char *info, int joined,
                        void *user) {
    if (!member) say((app *)user, "presence %s %zu users (counts only)", channel, wsch_client_presence_count(c, channel, NULL));
    else if (joined) say((app *)user, "join %s %s%s%s", channel, member, info ? " " : "", info ? info : "");
    else say((app *)user, "leave %s %s", channel, member);
}

static void on_ack(wsch_client *c, uint64_t id, void *user) {
    (void)c;
    (void)id;
    ((app *)user)->acked++;
}

static void on_send_failed(wsch_client *c, uint64_t id, int err, const char *code, void *user) {
    app *a = (app *)user;
    (void)c;
    a->failed++;
    say(a, "message %llu given up: %s %s", (unsigned long long)id, wsch_err_str(err), code);
}

/* --publish: sends what is due at the rate asked (the outbox, 256
   messages, paces it by the acks when the server is away). */
static void publish_due(app *a, unsigned long *sent, unsigned long count, uint32_t rate) {
    unsigned long due = (unsigned long)((net_now_ms() - a->t0) * rate / 1000u) + 1u;
    char payload[WSCH_HUB_MAX_CHANNEL_LEN * 6 + 64];
    if (due > count) due = count;
    while (*sent < due) {
        int r;
        snprintf(payload, sizeof payload, "{\"channel\":\"%s\",\"data\":%lu}", a->publish, *sent + 1u);
        r = wsch_client_send_reliable(a->c, "publish", payload, WSCH_CSTR, NULL);
        if (r == WSCH_ERR_QUEUE_FULL) return;       /* the outbox is full: the acks make room */
        if (r != WSCH_OK) {
            say(a, "publish: %s", wsch_err_str(r));
            exit(1);
        }
        (*sent)++;
    }
}

/* ---- the loop ---- */

/* One poll round: the socket, as wsch_client_want() asks, then due timers. */
static void step(app *a, int max_wait_ms) {
    static unsigned char buf[65536];
    struct pollfd p;
    unsigned want = wsch_client_want(a->c);
    nfds_t n = 0;
    int fd = a->fd;
    net_timer *t;
    if (fd >= 0) {
        p.fd = fd;
        p.events = (short)(((want & WSCH_WANT_READ) ? POLLIN : 0) | ((want & WSCH_WANT_WRITE) ? POLLOUT : 0));
        p.revents = 0;
        n = 1;
    }
    if (poll(&p, n, net_timers_timeout(&a->heap, max_wait_ms)) < 0 && errno != EINTR) {
        perror("client_cli: poll");
        exit(1);
    }
    if (n && p.revents && a->connecting) {
        a->connecting = 0;
        if (net_connect_finish(fd) == NET_OK) {
            wsch_client_transport_open(a->c);
        } else {
            say(a, "connect failed: %s", strerror(errno));
            wsch_client_transport_failed(a->c);
        }
    } else if (n && p.revents) {
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) net_client_readable(a->c, &a->fd, buf, sizeof buf);
        if (a->fd == fd && (p.revents & POLLOUT)) wsch_client_writable(a->c);
    }
    while ((t = net_timers_pop_due(&a->heap, net_now_ms())) != NULL) wsch_client_timer_fired(a->c, t->id);
}

static int parse_u32(const char *s, uint32_t *out) {
    char *end;
    unsigned long v;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v > 0xFFFFFFFFul) return -1;
    *out = (uint32_t)v;
    return 0;
}

static void usage(void) {
    fputs("usage: client_cli --url ws://host:port/path [--token T] [--token-header] [--subscribe CH]...\n"
          "       [--send TYPE JSON]... [--max-attempts N] [--backoff-base MS] [--backoff-max MS]\n"
          "       [--no-jitter] [--heartbeat MS] [--pong-timeout MS]\n"
          "       [--heartbeat-mode app|protocol|both|off] [--count N] [--deflate] [--history K]\n"
          "       [--publish CH --count N --rate R] [--presence CH]...\n", stderr);
    exit(2);
}

int main(int argc, char **argv) {
    static app a;
    wsch_client_desc d;
    const char *subs[MAX_SUBS], *send_type[MAX_SENDS], *send_json[MAX_SENDS], *watch[MAX_SUBS];
    size_t nsubs = 0, nsends = 0, nwatch = 0, i;
    uint32_t v, history = 0, rate = 100;
    unsigned long sent = 0;
    int k, r;

    memset(&d, 0, sizeof d);
    d.max_attempts = WSCH_CLIENT_FOREVER;
    for (k = 1; k < argc; k++) {
        const char *o = argv[k];
        const char *arg = k + 1 < argc ? argv[k + 1] : NULL;
        if (!strcmp(o, "--no-jitter")) d.no_jitter = 1;
        else if (!strcmp(o, "--token-header")) d.token_in = WSCH_TOKEN_AUTHORIZATION;
        else if (!strcmp(o, "--deflate") && net_deflate_codec()) d.deflate.codec = net_deflate_codec();
        else if (!arg) usage();
        else if (!strcmp(o, "--url")) d.url = arg, k++;
        else if (!strcmp(o, "--token")) d.token = arg, k++;
        else if (!strcmp(o, "--subscribe") && nsubs < MAX_SUBS) subs[nsubs++] = arg, k++;
        else if (!strcmp(o, "--presence") && nwatch < MAX_SUBS) watch[nwatch++] = arg, a.presence = 1, k++;
        else if (!strcmp(o, "--publish") && nsubs < MAX_SUBS && strlen(arg) <= WSCH_HUB_MAX_CHANNEL_LEN &&
                 !strpbrk(arg, "\"\\"))
            subs[nsubs++] = a.publish = arg, k++;
        else if (!strcmp(o, "--send") && nsends < MAX_SENDS && k + 2 < argc) {
            send_type[nsends] = arg;
            send_json[nsends++] = argv[k + 2];
            k += 2;
        } else if (!strcmp(o, "--heartbeat-mode")) {
            if (!strcmp(arg, "app")) d.heartbeat = WSCH_HEARTBEAT_APP;
            else if (!strcmp(arg, "protocol")) d.heartbeat = WSCH_HEARTBEAT_PROTOCOL;
            else if (!strcmp(arg, "both")) d.heartbeat = WSCH_HEARTBEAT_BOTH;
            else if (!strcmp(arg, "off")) d.heartbeat = WSCH_HEARTBEAT_OFF;
            else usage();
            k++;
        } else if (parse_u32(arg, &v) != 0) {
            usage();
        } else {
            if (!strcmp(o, "--max-attempts")) d.max_attempts = v ? v : WSCH_CLIENT_FOREVER;
            else if (!strcmp(o, "--backoff-base")) d.backoff_base_ms = v;
            else if (!strcmp(o, "--backoff-max")) d.backoff_max_ms = v;
            else if (!strcmp(o, "--heartbeat")) d.heartbeat_interval_ms = v;
            else if (!strcmp(o, "--pong-timeout")) d.pong_timeout_ms = v;
            else if (!strcmp(o, "--count")) a.stop_after = v;
            else if (!strcmp(o, "--history")) history = v;
            else if (!strcmp(o, "--rate") && v) rate = v;
            else usage();
            k++;
        }
    }
    if (!d.url || (a.publish && !a.stop_after)) usage();

    a.fd = -1;
    a.t0 = net_now_ms();
    d.user = &a;
    d.effects.connect = fx_connect;
    d.effects.send = fx_send;
    d.effects.close = fx_close;
    d.effects.timer_set = fx_timer_set;
    d.effects.timer_cancel = fx_timer_cancel;
    d.effects.now_ms = fx_now;
    d.effects.random_bytes = net_random_bytes;
    d.on_status = on_status;
    d.on_connect = on_connect;
    d.on_disconnect = on_disconnect;
    d.on_error = on_error;
    d.on_stop = on_stop;
    d.on_recovery = on_recovery;
    d.on_ack = on_ack;
    d.on_send_failed = on_send_failed;
    d.on_presence = on_presence;
    r = wsch_client_create(&d, &a.c);
    if (r != WSCH_OK) {
        fprintf(stderr, "client_cli: %s\n", wsch_err_str(r));
        return 2;
    }
    wsch_client_on(a.c, "*", on_any, &a, NULL);
    for (i = 0; i < nsubs; i++) {
        r = wsch_client_subscribe_history(a.c, subs[i], history);
        if (r != WSCH_OK) say(&a, "subscribe %s: %s", subs[i], wsch_err_str(r));
    }
    for (i = 0; i < nwatch; i++) {
        r = wsch_client_subscribe_presence(a.c, watch[i]);
        if (r != WSCH_OK) say(&a, "subscribe %s: %s", watch[i], wsch_err_str(r));
    }
    for (i = 0; i < nsends; i++) {
        r = wsch_client_send(a.c, send_type[i], send_json[i], WSCH_CSTR);
        if (r != WSCH_OK) say(&a, "send %s: %s", send_type[i], wsch_err_str(r));
    }
    net_stop_on_signals();
    wsch_client_connect(a.c);

    if (a.publish) {
        /* Until every message is answered: acked, or refused / given up. */
        while (!a.stopped && !net_stop_requested && a.acked + a.failed < a.stop_after) {
            publish_due(&a, &sent, a.stop_after, rate);
            step(&a, sent < a.stop_after ? (int)(1000u / rate) + 1 : -1);
        }
        say(&a, "published %lu acked %lu resent %llu", sent, a.acked, (unsigned long long)wsch_client_resent(a.c));
    }
    while (!a.publish && !a.stopped && !net_stop_requested && (!a.stop_after || a.messages < a.stop_after))
        step(&a, -1);
    /* A polite exit: the close handshake gets up to two seconds (on_stop
       runs when it is done, or at once when no link was open). */
    wsch_client_disconnect(a.c);
    {
        uint64_t until = net_now_ms() + 2000;
        while (!a.stopped && net_now_ms() < until) step(&a, 100);
    }
    say(&a, "bye (%lu messages)", a.messages);
    wsch_client_destroy(a.c);   /* closes a transport still open (fx_close) */
    net_timers_free(&a.heap);
    return a.publish && (a.failed || a.acked < a.stop_after) ? 1 : 0;
}
