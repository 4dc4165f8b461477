/* libuv_client - the reconnecting channel client on libuv.

   The same client as client_cli, on an event loop the library was not
   written for: libuv owns the sockets (uv_tcp_t, uv_getaddrinfo), the
   timers (one uv_timer_t per library timer id) and the signals; the library
   only sees bytes, "timer N fired" and "the transport opened / failed /
   closed". libuv buffers what the socket does not take at once (uv_write),
   so the send effect always takes every byte.

       build/libuv_client --url ws://127.0.0.1:8080/ws --token T --subscribe news

   Options: --url URL (required)  --token T  --token-header  --subscribe CH
   (repeatable)  --max-attempts N (default: retry forever)  --backoff-base MS
   --backoff-max MS  --count N (exit after N messages). Ctrl-C closes with
   1000 and exits.

   Build (Debian: libuv1-dev):
       cc -std=c99 -D_GNU_SOURCE -I. -o build/libuv_client examples/libuv_client.c -luv */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include "example_net.h"    /* net_random_bytes only */

#include <uv.h>

#define MAX_SUBS 32

typedef struct app {
    uv_loop_t *loop;
    wsch_client *c;
    uv_tcp_t *tcp;              /* the transport (connecting or open), or NULL */
    unsigned gen;               /* bumped when the transport is dropped: stale callbacks ignore themselves */
    int connected;              /* the TCP connect completed */
    uv_timer_t timers[32];      /* one per library timer id */
    uv_timer_t quit;
    uv_signal_t sigint, sigterm;
    int quitting;
    unsigned long messages, stop_after;
} app;

/* A pending resolve+connect carries the generation it belongs to. */
typedef struct attempt {
    app *a;
    unsigned gen;
    uint16_t port;
    uv_getaddrinfo_t resolve;
    uv_connect_t connect;
} attempt;

static void say(const char *what, const char *detail) {
    printf("%s%s%s\n", what, detail ? " " : "", detail ? detail : "");
    fflush(stdout);
}

/* ---- transport ---- */

static void free_handle(uv_handle_t *h) { free(h); }

static void drop_transport(app *a) {
    a->gen++;
    a->connected = 0;
    if (a->tcp) {
        uv_close((uv_handle_t *)a->tcp, free_handle);
        a->tcp = NULL;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    static char storage[65536];
    (void)h;
    (void)suggested;
    buf->base = storage;
    buf->len = sizeof storage;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    app *a = (app *)s->data;
    if ((uv_tcp_t *)s != a->tcp) return;
    if (nread > 0) {
        wsch_client_feed(a->c, buf->base, (size_t)nread);
    } else if (nread < 0) {
        drop_transport(a);
        wsch_client_transport_closed(a->c);
    }
}

static void on_tcp_connected(uv_connect_t *req, int status) {
    attempt *t = (attempt *)req->data;
    app *a = t->a;
    int stale = t->gen != a->gen;
    free(t);
    if (stale) return;          /* the client gave up on this attempt */
    if (status != 0) {
        say("connect failed:", uv_strerror(status));
        drop_transport(a);
        wsch_client_transport_failed(a->c);
        return;
    }
    a->connected = 1;
    uv_tcp_nodelay(a->tcp, 1);
    uv_read_start((uv_stream_t *)a->tcp, on_alloc, on_read);
    wsch_client_transport_open(a->c);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    attempt *t = (attempt *)req->data;
    app *a = t->a;
    int rc = status;
    if (t->gen != a->gen) {
        uv_freeaddrinfo(res);
        free(t);
        return;
    }
    if (rc == 0) {
        a->tcp = (uv_tcp_t *)malloc(sizeof *a->tcp);
        if (!a->tcp) rc = UV_ENOMEM;
    }
    if (rc == 0) {
        uv_tcp_init(a->loop, a->tcp);
        a->tcp->data = a;
        t->connect.data = t;
        rc = uv_tcp_connect(&t->connect, a->tcp, res->ai_addr, on_tcp_connected);
    }
    uv_freeaddrinfo(res);
    if (rc != 0) {
        say("connect failed:", uv_strerror(rc));
        free(t);
        drop_transport(a);
        wsch_client_transport_failed(a->c);
    }
}

/* ---- effects ---- */

static void fx_connect(const char *host, uint16_t port, void *user) {
    app *a = (app *)user;
    attempt *t = (attempt *)calloc(1, sizeof *t);
    struct addrinfo hints;
    char service[8];
    int rc;
    say("connecting to", host);
    if (!t) {
        wsch_client_transport_failed(a->c);
        return;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof service, "%u", (unsigned)port);
    t->a = a;
    t->gen = a->gen;
    t->port = port;
    t->resolve.data = t;
    rc = uv_getaddrinfo(a->loop, &t->resolve, on_resolved, host, service, &hints);
    if (rc != 0) {
        free(t);
        say("resolve failed:", uv_strerror(rc));
        wsch_client_transport_failed(a->c);
    }
}

static void on_written(uv_write_t *req, int status) {
    (void)status;               /* a failed write shows up as a read error */
    free(req);
}

static size_t fx_send(const void *data, size_t len, void *user) {
    app *a = (app *)user;
    uv_buf_t b;
    int n;
    if (!a->tcp || !a->connected) return 0;
    b = uv_buf_init((char *)(uintptr_t)data, (unsigned)len);
    n = uv_try_write((uv_stream_t *)a->tcp, &b, 1);
    if (n < 0) n = 0;           /* EAGAIN: everything goes through uv_write */
    if ((size_t)n < len) {
        /* One allocation: the request, then a copy of the bytes libuv must keep. */
        size_t rest = len - (size_t)n;
        uv_write_t *req = (uv_write_t *)malloc(sizeof *req + rest);
        if (!req) return (size_t)n;     /* the library queues the rest */
        memcpy(req + 1, (const char *)data + n, rest);
        b = uv_buf_init((char *)(req + 1), (unsigned)rest);
        if (uv_write(req, (uv_stream_t *)a->tcp, &b, 1, on_written) != 0) {
            free(req);
            return (size_t)n;
        }
    }
    return len;
}

static void fx_close(void *user) { drop_transport((app *)user); }

static void on_timer(uv_timer_t *t) {
    app *a = (app *)t->data;
    wsch_client_timer_fired(a->c, (unsigned)(t - a->timers));
}

static void fx_timer_set(unsigned id, uint32_t ms, void *user) {
    app *a = (app *)user;
    if (id < 32) uv_timer_start(&a->timers[id], on_timer, ms, 0);
}

static void fx_timer_cancel(unsigned id, void *user) {
    app *a = (app *)user;
    if (id < 32) uv_timer_stop(&a->timers[id]);
}

static uint64_t fx_now(void *user) {
    (void)user;
    return uv_hrtime() / 1000000u;
}

/* ---- events ---- */

static void begin_quit(app *a);

static void on_status(wsch_client *c, wsch_status st, void *user) {
    app *a = (app *)user;
    char line[96];
    if (st == WSCH_STATUS_DISCONNECTED && wsch_client_next_retry_ms(c) >= 0)
        snprintf(line, sizeof line, "disconnected; retry %u in %lld ms", (unsigned)wsch_client_attempts(c),
                 (long long)wsch_client_next_retry_ms(c));
    else if (st == WSCH_STATUS_DISCONNECTED)
        snprintf(line, sizeof line, "disconnected; stopped: %s", wsch_stop_str(wsch_client_stop_reason(c)));
    else
        snprintf(line, sizeof line, "%s", wsch_status_str(st));
    say("status", line);
    /* stopped for good (a terminal close code, retries used up): leave */
    if (st == WSCH_STATUS_DISCONNECTED && wsch_client_stop_reason(c) != WSCH_STOP_NONE && !a->quitting)
        begin_quit(a);
}

static void on_error(wsch_client *c, int err, const char *what, void *user) {
    (void)c;
    (void)user;
    printf("error: %s (%s)\n", what, wsch_err_str(err));
    fflush(stdout);
}

static void quit_now(uv_timer_t *t) {
    app *a = (app *)t->data;
    int i;
    if (a->c) wsch_client_destroy(a->c);    /* cancels timers, closes the transport */
    a->c = NULL;
    for (i = 0; i < 32; i++) uv_close((uv_handle_t *)&a->timers[i], NULL);
    uv_close((uv_handle_t *)&a->quit, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
}

/* Leaves once the close handshake is done, or after two seconds. */
static void begin_quit(app *a) {
    if (a->quitting) return;
    a->quitting = 1;
    wsch_client_disconnect(a->c);
    uv_timer_start(&a->quit, quit_now, wsch_client_conn(a->c) ? 2000 : 0, 0);
}

static void on_disconnect(wsch_client *c, int code, const char *reason, size_t len, void *user) {
    app *a = (app *)user;
    (void)c;
    printf("closed: code %d reason \"%.*s\"\n", code, (int)len, reason);
    fflush(stdout);
    if (a->quitting) uv_timer_start(&a->quit, quit_now, 0, 0);
}

static void on_any(wsch_client *c, const wsch_client_message *m, void *user) {
    app *a = (app *)user;
    (void)c;
    printf("message %.*s\n", (int)m->raw.len, m->raw.ptr);
    fflush(stdout);
    if (a->stop_after && ++a->messages >= a->stop_after) begin_quit(a);
}

static void on_signal(uv_signal_t *s, int signum) {
    (void)signum;
    begin_quit((app *)s->data);
}

static void usage(void) {
    fputs("usage: libuv_client --url ws://host:port/path [--token T] [--token-header] [--subscribe CH]...\n"
          "       [--max-attempts N] [--backoff-base MS] [--backoff-max MS] [--count N]\n", stderr);
    exit(2);
}

int main(int argc, char **argv) {
    static app a;
    wsch_client_desc d;
    const char *subs[MAX_SUBS];
    size_t nsubs = 0, i;
    int k, r;

    memset(&d, 0, sizeof d);
    d.max_attempts = WSCH_CLIENT_FOREVER;
    for (k = 1; k < argc; k++) {
        const char *o = argv[k], *arg = k + 1 < argc ? argv[k + 1] : NULL;
        if (!strcmp(o, "--token-header")) {
            d.token_in = WSCH_TOKEN_AUTHORIZATION;
            continue;
        }
        if (!arg) usage();
        k++;
        if (!strcmp(o, "--url")) d.url = arg;
        else if (!strcmp(o, "--token")) d.token = arg;
        else if (!strcmp(o, "--subscribe") && nsubs < MAX_SUBS) subs[nsubs++] = arg;
        else if (!strcmp(o, "--max-attempts")) d.max_attempts = (uint32_t)strtoul(arg, NULL, 10);
        else if (!strcmp(o, "--count")) a.stop_after = strtoul(arg, NULL, 10);
        else if (!strcmp(o, "--backoff-base")) d.backoff_base_ms = (uint32_t)strtoul(arg, NULL, 10);
        else if (!strcmp(o, "--backoff-max")) d.backoff_max_ms = (uint32_t)strtoul(arg, NULL, 10);
        else usage();
    }
    if (!d.url) usage();
    if (!d.max_attempts) d.max_attempts = WSCH_CLIENT_FOREVER;

    signal(SIGPIPE, SIG_IGN);
    a.loop = uv_default_loop();
    for (i = 0; i < 32; i++) {
        uv_timer_init(a.loop, &a.timers[i]);
        a.timers[i].data = &a;
    }
    uv_timer_init(a.loop, &a.quit);
    a.quit.data = &a;
    uv_signal_init(a.loop, &a.sigint);
    uv_signal_init(a.loop, &a.sigterm);
    a.sigint.data = a.sigterm.data = &a;
    uv_signal_start(&a.sigint, on_signal, SIGINT);
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);

    d.user = &a;
    d.connect = fx_connect;
    d.send = fx_send;
    d.close = fx_close;
    d.timer_set = fx_timer_set;
    d.timer_cancel = fx_timer_cancel;
    d.now_ms = fx_now;
    d.random_bytes = net_random_bytes;
    d.on_status = on_status;
    d.on_disconnect = on_disconnect;
    d.on_error = on_error;
    r = wsch_client_create(&d, &a.c);
    if (r != WSCH_OK) {
        fprintf(stderr, "libuv_client: %s\n", wsch_err_str(r));
        return 2;
    }
    wsch_client_on(a.c, "*", on_any, &a, NULL);
    for (i = 0; i < nsubs; i++) wsch_client_subscribe(a.c, subs[i]);
    wsch_client_connect(a.c);
    uv_run(a.loop, UV_RUN_DEFAULT);
    uv_loop_close(a.loop);
    return 0;
}
