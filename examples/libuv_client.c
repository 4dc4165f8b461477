/* libuv_client - the reconnecting channel client on libuv.

   The same client as client_cli, on an event loop the library was not
   written for: libuv resolves names (uv_getaddrinfo), watches the socket
   (uv_poll_t, for what wsch_client_want() asks), runs the timers (one
   uv_timer_t per library timer id) and catches the signals; the library
   only sees bytes, "writable", "timer N fired" and "the transport opened /
   failed / closed". The socket is closed in one place, the close effect;
   on_stop ends the program.

       build/libuv_client --url ws://127.0.0.1:8080/ws --token T --subscribe news

   Options: --url URL (required)  --token T  --token-header  --subscribe CH
   (repeatable)  --max-attempts N (default: retry forever)  --backoff-base MS
   --backoff-max MS  --count N (exit after N messages). Ctrl-C closes with
   1000 and exits.

   Build (Debian: libuv1-dev):
       cc -std=c99 -D_GNU_SOURCE -I. -o build/libuv_client examples/libuv_client.c -luv */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define MAX_SUBS 32

typedef struct app {
    uv_loop_t *loop;
    wsch_client *c;
    int fd;                     /* the transport, -1 when there is none */
    int connecting;             /* nonblocking connect in progress */
    uv_poll_t *poll;            /* watches fd */
    int events;                 /* what it watches for */
    unsigned gen;               /* bumped by close(): a resolve still running is abandoned */
    uv_prepare_t prepare;       /* before each wait: poll for what the client wants */
    uv_timer_t timers[32];      /* one per library timer id */
    uv_timer_t quit;
    uv_signal_t sigint, sigterm;
    int quitting, stopped;
    unsigned retries;           /* since the last open: what on_status prints */
    unsigned long messages, stop_after;
} app;

/* A pending resolve carries the generation it belongs to. */
typedef struct attempt {
    app *a;
    unsigned gen;
    uv_getaddrinfo_t req;
} attempt;

static void say(const char *what, const char *detail) {
    printf("%s%s%s\n", what, detail ? " " : "", detail ? detail : "");
    fflush(stdout);
}

/* ---- the socket ---- */

/* Reads and feeds until the socket is drained, the client's close() has
   taken the socket, or 8 reads have gone by (the other handles get a turn). */
static void readable(app *a, void *buf, size_t cap) {
    int i, fd = a->fd;
    for (i = 0; i < 8 && a->fd == fd; i++) {
        ssize_t n = recv(fd, buf, cap, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0) {           /* EOF or error: close() follows */
            wsch_client_transport_closed(a->c);
            break;
        }
        wsch_client_feed(a->c, buf, (size_t)n);
        if ((size_t)n < cap) break; /* a short read drained the socket */
    }
}

static void on_io(uv_poll_t *h, int status, int events) {
    static char buf[65536];
    app *a = (app *)h->data;
    int fd = a->fd, err = 0;
    socklen_t len = sizeof err;
    if (a->connecting) {
        a->connecting = 0;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && (errno = err) == 0 && status == 0) {
            wsch_client_transport_open(a->c);
        } else {
            say("connect failed:", strerror(errno));
            wsch_client_transport_failed(a->c);     /* close() follows */
        }
        return;
    }
    if (status < 0) {           /* a socket error: libuv has stopped watching it */
        wsch_client_transport_closed(a->c);
        return;
    }
    if (events & UV_READABLE) readable(a, buf, sizeof buf);
    if (a->fd == fd && (events & UV_WRITABLE)) wsch_client_writable(a->c);
}

/* Runs before libuv waits: the socket's interest is what the client wants now. */
static void on_prepare(uv_prepare_t *h) {
    app *a = (app *)h->data;
    unsigned want = wsch_client_want(a->c);
    int events = ((want & WSCH_WANT_READ) ? UV_READABLE : 0) | ((want & WSCH_WANT_WRITE) ? UV_WRITABLE : 0);
    if (!a->poll || events == a->events) return;
    a->events = events;
    if (events) uv_poll_start(a->poll, events, on_io);
    else uv_poll_stop(a->poll);
}

/* A nonblocking socket connecting to ai, or -1. */
static int start_connect(const struct addrinfo *ai) {
    int one = 1, fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  /* small messages must not wait */
    return fd;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    attempt *t = (attempt *)req->data;
    app *a = t->a;
    int fd = -1;
    if (t->gen == a->gen) {     /* else the client closed this attempt meanwhile */
        if (status == 0) fd = start_connect(res);
        a->poll = fd >= 0 ? (uv_poll_t *)malloc(sizeof *a->poll) : NULL;
        if (a->poll && uv_poll_init_socket(a->loop, a->poll, fd) == 0) {
            a->poll->data = a;
            a->events = 0;
            a->fd = fd;
            a->connecting = 1;  /* on_io gets the verdict once it is writable */
        } else {
            say("connect failed:", status ? uv_strerror(status) : strerror(errno));
            free(a->poll);
            a->poll = NULL;
            if (fd >= 0) close(fd);
            wsch_client_transport_failed(a->c);     /* close() follows */
        }
    }
    uv_freeaddrinfo(res);
    free(t);
}

/* ---- effects ---- */

static void fx_connect(const char *host, uint16_t port, void *user) {
    app *a = (app *)user;
    attempt *t = (attempt *)calloc(1, sizeof *t);
    struct addrinfo hints;
    char service[8];
    say("connecting to", host);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof service, "%u", (unsigned)port);
    if (t) {
        t->a = a;
        t->gen = a->gen;
        t->req.data = t;
    }
    if (!t || uv_getaddrinfo(a->loop, &t->req, on_resolved, host, service, &hints) != 0) {
        free(t);
        say("resolve failed:", host);
        wsch_client_transport_failed(a->c);     /* allowed from inside the effect */
    }
}

static size_t fx_send(const void *data, size_t len, void *user) {
    ssize_t n;
    do n = send(((app *)user)->fd, data, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0) return (size_t)n;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : WSCH_SEND_ERROR;  /* 0: the library queues the rest */
}

/* Frame masks and backoff jitter: libuv's source of randomness (getrandom
   or /dev/urandom). A client that cannot mask its frames must not go on. */
static void random_bytes(void *buf, size_t len, void *user) {
    (void)user;
    if (uv_random(NULL, NULL, buf, len, 0, NULL) != 0) {
        fputs("libuv_client: no source of random bytes\n", stderr);
        exit(1);
    }
}

static void free_handle(uv_handle_t *h) { free(h); }

/* Once per connect(), whatever became of it: the only place the socket is closed. */
static void fx_close(void *user) {
    app *a = (app *)user;
    a->gen++;
    if (a->poll) uv_close((uv_handle_t *)a->poll, free_handle);    /* stops watching at once */
    a->poll = NULL;
    if (a->fd >= 0) {
        char sink[4096];        /* unread input first: closing on it sends a reset, which can eat our close frame */
        int i;
        for (i = 0; i < 16 && recv(a->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++) {
        }
        close(a->fd);
    }
    a->fd = -1;
    a->connecting = 0;
}

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

static void on_status(wsch_client *c, wsch_status st, void *user) {
    app *a = (app *)user;
    char line[96];
    if (st == WSCH_STATUS_CONNECTED) a->retries = 0;
    if (st == WSCH_STATUS_DISCONNECTED && wsch_client_next_retry_ms(c) >= 0)
        snprintf(line, sizeof line, "disconnected; retry %u in %lld ms", ++a->retries,
                 (long long)wsch_client_next_retry_ms(c));
    else
        snprintf(line, sizeof line, "%s", wsch_status_str(st));
    say("status", line);
}

static void on_error(wsch_client *c, int err, const char *what, void *user) {
    (void)c;
    (void)user;
    printf("error: %s (%s)\n", what, wsch_err_str(err));
    fflush(stdout);
}

static void on_disconnect(wsch_client *c, int code, const char *reason, size_t len, void *user) {
    (void)c;
    (void)user;
    printf("closed: code %d reason \"%.*s\"\n", code, (int)len, reason);
    fflush(stdout);
}

static void quit_now(uv_timer_t *t) {
    app *a = (app *)t->data;
    int i;
    if (a->c) wsch_client_destroy(a->c);    /* cancels timers, closes the transport */
    a->c = NULL;
    for (i = 0; i < 32; i++) uv_close((uv_handle_t *)&a->timers[i], NULL);
    uv_close((uv_handle_t *)&a->prepare, NULL);
    uv_close((uv_handle_t *)&a->quit, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
}

/* Stopped for good: retries used up, a terminal close code, a refused
   token, or the close handshake of a quit is done. Leave. */
static void on_stop(wsch_client *c, wsch_stop reason, void *user) {
    app *a = (app *)user;
    (void)c;
    say("stopped:", wsch_stop_str(reason));
    a->stopped = 1;
    uv_timer_start(&a->quit, quit_now, 0, 0);
}

/* Closes with 1000; on_stop leaves once that is done, or after two seconds. */
static void begin_quit(app *a) {
    if (a->quitting) return;
    a->quitting = 1;
    wsch_client_disconnect(a->c);
    if (!a->stopped) uv_timer_start(&a->quit, quit_now, 2000, 0);
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
    a.fd = -1;
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
    d.effects.connect = fx_connect;
    d.effects.send = fx_send;
    d.effects.close = fx_close;
    d.effects.timer_set = fx_timer_set;
    d.effects.timer_cancel = fx_timer_cancel;
    d.effects.now_ms = fx_now;
    d.effects.random_bytes = random_bytes;
    d.on_status = on_status;
    d.on_disconnect = on_disconnect;
    d.on_error = on_error;
    d.on_stop = on_stop;
    r = wsch_client_create(&d, &a.c);
    if (r != WSCH_OK) {
        fprintf(stderr, "libuv_client: %s\n", wsch_err_str(r));
        return 2;
    }
    uv_prepare_init(a.loop, &a.prepare);
    a.prepare.data = &a;
    uv_prepare_start(&a.prepare, on_prepare);
    wsch_client_on(a.c, "*", on_any, &a, NULL);
    for (i = 0; i < nsubs; i++) wsch_client_subscribe(a.c, subs[i]);
    wsch_client_connect(a.c);
    uv_run(a.loop, UV_RUN_DEFAULT);
    uv_loop_close(a.loop);
    return 0;
}
