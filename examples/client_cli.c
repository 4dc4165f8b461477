/* client_cli - a reconnecting channel client, ws:// or wss://, on the
   header's POSIX loop (WS_CHANNEL_POSIX).

   Shows wsch_client on the loop: it connects, subscribes, prints
   every message, every status change and the time until the next retry,
   and keeps reconnecting (with backoff) when the server goes away. Against
   a hub with history nothing is lost across reconnects: a channel message
   prints as "msg CHANNEL OFFSET PAYLOAD", and after each reconnect every
   channel says "recovered CHANNEL" or "not recovered CHANNEL ...".
   on_stop ends the program; SIGINT or SIGTERM closes with 1000 first.

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
   wss:// URLs (a build with -DEXAMPLE_TLS -lssl -lcrypto,
   examples/tls_openssl.h): the server's certificate and name are checked
   against the system's trust store, or only the CAs of --cafile F;
   --insecure checks nothing (tests only). A refusal is printed as an
   "error: TLS handshake ... failed: certificate verify failed: REASON" line.

   Build: cc -std=c99 -D_GNU_SOURCE -I. -Iexamples -o build/client_cli examples/client_cli.c
          (+ -DEXAMPLE_ZLIB -lz for --deflate, -DEXAMPLE_TLS -lssl -lcrypto for wss://) */
#define WS_CHANNEL_POSIX
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#ifdef EXAMPLE_ZLIB
#include "deflate_zlib.h"
#endif
#ifdef EXAMPLE_TLS
#include "tls_openssl.h"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SUBS 32
#define MAX_SENDS 16

typedef struct app {
    wsch_posix_loop *loop;
    wsch_client *c;
    char where[300];            /* host:port, for "connecting to" */
    int stopped;                /* on_stop ran: the client will not reconnect */
    int finishing;              /* the end was asked for (count reached, all acked) */
    wsch_posix_timer end;       /* finish(): the disconnect, then its bound */
    wsch_posix_timer tick;      /* --publish: the pace */
    uint64_t t0;
    unsigned retries;           /* since the last open: what on_status prints */
    unsigned long messages, stop_after, sent;
    const char *publish;        /* --publish CH */
    uint32_t rate;
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
    uint64_t ms = wsch_posix_now_ms(NULL) - a->t0;
    va_list ap;
    printf("[%4llu.%03llu] ", (unsigned long long)(ms / 1000u), (unsigned long long)(ms % 1000u));
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* The polite end, from a timer (outside the client's callbacks): a close
   handshake of up to two seconds (on_stop stops the loop when it is done,
   or at once when no link was open), then the loop stops regardless. */
static void end_fired(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    app *a = (app *)user;
    if (a->finishing == 2 || a->stopped) {
        wsch_posix_loop_stop(loop);
        return;
    }
    a->finishing = 2;
    (void)wsch_posix_timer_start(loop, t, 2000);
    (void)wsch_client_disconnect(a->c);
}

static void finish(app *a) {
    if (a->finishing) return;
    a->finishing = 1;
    wsch_posix_timer_stop(a->loop, &a->tick);
    (void)wsch_posix_timer_start(a->loop, &a->end, 0);
}

static void publish_check(app *a);

/* ---- events ---- */

static void on_status(wsch_client *c, wsch_status st, void *user) {
    app *a = (app *)user;
    if (st == WSCH_STATUS_CONNECTING) say(a, "connecting to %s", a->where);
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
    wsch_posix_loop_stop(a->loop);
}

static void on_any(wsch_client *c, const wsch_client_message *m, void *user) {
    app *a = (app *)user;
    (void)c;
    a->messages++;
    if (!a->publish && a->stop_after && a->messages == a->stop_after) finish(a);
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
    publish_check((app *)user);
}

static void on_send_failed(wsch_client *c, uint64_t id, int err, const char *code, void *user) {
    app *a = (app *)user;
    (void)c;
    a->failed++;
    say(a, "message %llu given up: %s %s", (unsigned long long)id, wsch_err_str(err), code);
    publish_check(a);
}

/* --publish: sends what is due at the rate asked (the outbox, 256
   messages, paces it by the acks when the server is away). */
static void publish_due(app *a) {
    unsigned long due = (unsigned long)((wsch_posix_now_ms(NULL) - a->t0) * a->rate / 1000u) + 1u;
    char payload[WSCH_HUB_MAX_CHANNEL_LEN * 6 + 64];
    if (due > a->stop_after) due = a->stop_after;
    while (a->sent < due) {
        int r;
        snprintf(payload, sizeof payload, "{\"channel\":\"%s\",\"data\":%lu}", a->publish, a->sent + 1u);
        r = wsch_client_send_reliable(a->c, "publish", payload, WSCH_CSTR, NULL);
        if (r == WSCH_ERR_QUEUE_FULL) return;       /* the outbox is full: the acks make room */
        if (r != WSCH_OK) {
            say(a, "publish: %s", wsch_err_str(r));
            exit(1);
        }
        a->sent++;
    }
}

static void tick_fired(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    app *a = (app *)user;
    publish_due(a);
    if (a->sent < a->stop_after) (void)wsch_posix_timer_start(loop, t, 1000u / a->rate + 1u);
}

static void publish_summary(app *a) {
    say(a, "published %lu acked %lu resent %llu", a->sent, a->acked, (unsigned long long)wsch_client_resent(a->c));
}

/* Every message answered (acked, or refused / given up): the end. */
static void publish_check(app *a) {
    if (!a->publish || a->finishing || a->acked + a->failed < a->stop_after) return;
    publish_summary(a);
    finish(a);
}

#ifdef EXAMPLE_TLS
static void tls_said(const char *msg, void *user) { say((app *)user, "error: %s", msg); }
#endif

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
    fputs("usage: client_cli --url ws[s]://host:port/path [--token T] [--token-header] [--subscribe CH]...\n"
          "       [--send TYPE JSON]... [--max-attempts N] [--backoff-base MS] [--backoff-max MS]\n"
          "       [--no-jitter] [--heartbeat MS] [--pong-timeout MS]\n"
          "       [--heartbeat-mode app|protocol|both|off] [--count N] [--deflate] [--history K]\n"
          "       [--publish CH --count N --rate R] [--presence CH]... [--cafile F] [--insecure]\n", stderr);
    exit(2);
}

/* A one-line refusal of an option this build or this URL cannot honour. */
static void refuse(const char *why) {
    fprintf(stderr, "client_cli: %s\n", why);
    exit(2);
}

int main(int argc, char **argv) {
    static app a;
    wsch_client_desc d;
    wsch_posix_loop_desc ld;
    wsch_posix_client_opts opts;
    wsch_url url;
    const char *subs[MAX_SUBS], *send_type[MAX_SENDS], *send_json[MAX_SENDS], *watch[MAX_SUBS];
    const char *cafile = NULL;
    size_t nsubs = 0, nsends = 0, nwatch = 0, i;
    uint32_t v, history = 0;
    int k, r, deflate = 0, insecure = 0;
#ifdef EXAMPLE_TLS
    static tls_openssl tls;
#endif

    memset(&d, 0, sizeof d);
    memset(&ld, 0, sizeof ld);
    memset(&opts, 0, sizeof opts);
    d.max_attempts = WSCH_CLIENT_FOREVER;
    a.rate = 100;
    for (k = 1; k < argc; k++) {
        const char *o = argv[k];
        const char *arg = k + 1 < argc ? argv[k + 1] : NULL;
        if (!strcmp(o, "--no-jitter")) d.no_jitter = 1;
        else if (!strcmp(o, "--token-header")) d.token_in = WSCH_TOKEN_AUTHORIZATION;
        else if (!strcmp(o, "--deflate")) deflate = 1;
        else if (!strcmp(o, "--insecure")) insecure = 1;
        else if (!arg) usage();
        else if (!strcmp(o, "--url")) d.url = arg, k++;
        else if (!strcmp(o, "--cafile")) cafile = arg, k++;
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
            else if (!strcmp(o, "--rate") && v) a.rate = v;
            else usage();
            k++;
        }
    }
    if (!d.url || (a.publish && !a.stop_after)) usage();
    if (wsch_url_parse(d.url, strlen(d.url), &url) != WSCH_OK) refuse("not a ws:// or wss:// URL");
    if (!url.secure && (cafile || insecure)) refuse("--cafile and --insecure apply to wss:// URLs only");
#ifdef EXAMPLE_ZLIB
    if (deflate) d.deflate.codec = deflate_zlib_codec();
#else
    if (deflate) refuse("--deflate needs a build with zlib (-DEXAMPLE_ZLIB -lz; Debian: zlib1g-dev)");
#endif
    if (url.secure) {
#ifdef EXAMPLE_TLS
        if (tls_openssl_client(&tls, cafile, insecure) != WSCH_OK) refuse(tls_openssl_error(&tls));
        tls.on_error = tls_said;
        tls.user = &a;
        opts.transport = &tls.transport;
        if (insecure) fputs("client_cli: --insecure: the server's certificate and name are NOT verified\n", stderr);
#else
        refuse("wss:// needs a build with OpenSSL (-DEXAMPLE_TLS -lssl -lcrypto; Debian: libssl-dev)");
#endif
    }
    snprintf(a.where, sizeof a.where, url.host.len && memchr(url.host.ptr, ':', url.host.len) ? "[%.*s]:%u" : "%.*s:%u",
             (int)url.host.len, url.host.ptr, (unsigned)url.port);

    a.t0 = wsch_posix_now_ms(NULL);
    ld.shutdown_timeout_ms = 2000;      /* SIGINT/SIGTERM: the close handshake's bound */
    r = wsch_posix_loop_create(&ld, &a.loop);
    if (r != WSCH_OK) {
        fprintf(stderr, "client_cli: %s\n", wsch_err_str(r));
        return 1;
    }
    wsch_posix_timer_init(&a.end, end_fired, &a);
    wsch_posix_timer_init(&a.tick, tick_fired, &a);
    d.user = &a;
    d.on_status = on_status;
    d.on_connect = on_connect;
    d.on_disconnect = on_disconnect;
    d.on_error = on_error;
    d.on_stop = on_stop;
    d.on_recovery = on_recovery;
    d.on_ack = on_ack;
    d.on_send_failed = on_send_failed;
    d.on_presence = on_presence;
    r = wsch_posix_client_create(a.loop, &d, &opts, &a.c);
    if (r != WSCH_OK) {
        fprintf(stderr, "client_cli: %s\n", wsch_err_str(r));
        wsch_posix_loop_destroy(a.loop);
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
    if (wsch_posix_handle_signals(a.loop) != WSCH_OK) fputs("client_cli: signals not handled\n", stderr);
    wsch_client_connect(a.c);
    if (a.publish) tick_fired(a.loop, &a.tick, &a);

    (void)wsch_posix_loop_run(a.loop);  /* until on_stop, finish() or a signal */
    if (a.publish && !a.finishing) publish_summary(&a);     /* stopped early */
    say(&a, "bye (%lu messages)", a.messages);
    wsch_posix_loop_destroy(a.loop);    /* the client too, and a link still open */
#ifdef EXAMPLE_TLS
    if (url.secure) tls_openssl_free(&tls);
#endif
    return a.publish && (a.failed || a.acked < a.stop_after) ? 1 : 0;
}
