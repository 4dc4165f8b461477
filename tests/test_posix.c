/* The POSIX loop layer (WS_CHANNEL_POSIX) on real sockets on 127.0.0.1:
   timers (order, cancel, re-arm, many), your descriptors, partial writes,
   connect refusal and timeout, EPIPE/ECONNRESET as errors, the transport
   hook, graceful shutdown (by call and by signal), and end to end: a conn
   echo server and a client, a hub and clients. The whole suite runs once
   with the poll backend and once with epoll (kqueue where the system has
   it). Every test is bounded in time and checks that it leaves no
   descriptor open. */
#define WS_CHANNEL_POSIX
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER
#include "alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static wsch_posix_backend g_backend;
static int g_no_gather;
static alloc_counter g_alloc;

/* ---- helpers ----------------------------------------------------------- */

static int count_fds(void) {
    int fd, n = 0;
    for (fd = 0; fd < 1024; fd++) {
        if (fcntl(fd, F_GETFD) >= 0) n++;
    }
    return n;
}

static wsch_posix_loop *mk_loop(void) {
    wsch_posix_loop_desc d;
    wsch_posix_loop *loop = NULL;
    memset(&d, 0, sizeof d);
    d.backend = g_backend;
    d.no_gather = g_no_gather;
    d.allocator = alloc_counter_allocator(&g_alloc);
    d.shutdown_timeout_ms = 3000;
    if (wsch_posix_loop_create(&d, &loop) != WSCH_OK) return NULL;
    return loop;
}

/* Turns until *flag is set or ms pass. Returns the flag. */
static int run_until(wsch_posix_loop *loop, const int *flag, uint32_t ms) {
    uint64_t end = wsch_posix_now_ms(NULL) + ms;
    while (!*flag && wsch_posix_now_ms(NULL) < end) {
        if (wsch_posix_loop_run_once(loop, 10) != WSCH_OK) return 0;
    }
    return *flag;
}

/* Two loops turned in alternation (a server and its clients apart). */
static int run2_until(wsch_posix_loop *a, wsch_posix_loop *b, const int *flag, uint32_t ms) {
    uint64_t end = wsch_posix_now_ms(NULL) + ms;
    while (!*flag && wsch_posix_now_ms(NULL) < end) {
        if (wsch_posix_loop_run_once(a, 2) != WSCH_OK) return 0;
        if (wsch_posix_loop_run_once(b, 2) != WSCH_OK) return 0;
    }
    return *flag;
}

static wsch_posix_listener *mk_listener(wsch_posix_loop *loop, const char *host) {
    wsch_posix_listen_desc ld;
    wsch_posix_listener *l = NULL;
    memset(&ld, 0, sizeof ld);
    ld.host = host;
    if (wsch_posix_listen(loop, &ld, &l) != WSCH_OK) return NULL;
    return l;
}

static void url_for(char *out, size_t cap, const char *host, uint16_t port) {
    snprintf(out, cap, "ws://%s:%u/ws", host, (unsigned)port);
}

/* ---- timers ------------------------------------------------------------ */

typedef struct tlog {
    int order[64];
    int n;
    uint64_t at[64];
} tlog;

typedef struct tctx {
    tlog *log;
    int tag;
    int rearm;                      /* re-arm itself this many more times */
    wsch_posix_timer t;
} tctx;

static void t_fire(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    tctx *c = (tctx *)user;
    (void)t;
    if (c->log->n < 64) {
        c->log->at[c->log->n] = wsch_posix_now_ms(NULL);
        c->log->order[c->log->n++] = c->tag;
    }
    if (c->rearm > 0) {
        c->rearm--;
        (void)wsch_posix_timer_start(loop, &c->t, 1);
    }
}

TEST timers_ordering(void) {
    wsch_posix_loop *loop = mk_loop();
    static const uint32_t delays[6] = {30, 10, 20, 10, 0, 25};
    static const int expect[6] = {4, 1, 3, 2, 5, 0};     /* by due time, ties in start order */
    tctx c[6];
    tlog log;
    int i;
    uint64_t t0 = wsch_posix_now_ms(NULL);
    ASSERT(loop);
    memset(&log, 0, sizeof log);
    for (i = 0; i < 6; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].log = &log;
        c[i].tag = i;
        wsch_posix_timer_init(&c[i].t, t_fire, &c[i]);
        ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &c[i].t, delays[i]));
        ASSERT(wsch_posix_timer_active(&c[i].t));
    }
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run(loop));  /* returns when nothing is left */
    ASSERT_EQ(6, log.n);
    for (i = 0; i < 6; i++) ASSERT_EQ(expect[i], log.order[i]);
    ASSERT(log.at[5] - t0 >= 30);   /* never early */
    for (i = 0; i < 6; i++) ASSERT_FALSE(wsch_posix_timer_active(&c[i].t));
    wsch_posix_loop_destroy(loop);
    PASS();
}

TEST timers_cancel_and_rearm(void) {
    wsch_posix_loop *loop = mk_loop();
    tctx a, b, p;
    tlog log;
    ASSERT(loop);
    memset(&log, 0, sizeof log);
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&p, 0, sizeof p);
    a.log = b.log = p.log = &log;
    a.tag = 1;
    b.tag = 2;
    p.tag = 3;
    p.rearm = 4;                    /* re-armed from its own callback: fires 5 times */
    wsch_posix_timer_init(&a.t, t_fire, &a);
    wsch_posix_timer_init(&b.t, t_fire, &b);
    wsch_posix_timer_init(&p.t, t_fire, &p);
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &a.t, 10));
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &b.t, 500));
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &b.t, 5));  /* re-armed earlier: once, at 5 */
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &p.t, 0));
    wsch_posix_timer_stop(loop, &a.t);
    wsch_posix_timer_stop(loop, &a.t);  /* twice: nothing */
    ASSERT_FALSE(wsch_posix_timer_active(&a.t));
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run(loop));
    ASSERT_EQ(6, log.n);
    {
        int i, twos = 0, threes = 0;
        for (i = 0; i < log.n; i++) {
            twos += log.order[i] == 2;
            threes += log.order[i] == 3;
            ASSERT(log.order[i] != 1);
        }
        ASSERT_EQ(1, twos);
        ASSERT_EQ(5, threes);
    }
    ASSERT_EQ(WSCH_ERR_ARG, wsch_posix_timer_start(loop, NULL, 1));
    wsch_posix_loop_destroy(loop);
    PASS();
}

typedef struct many {
    uint64_t last_due;
    int fired, out_of_order;
    wsch_posix_timer t[20000];
    uint32_t delay[20000];
} many;

static void many_fire(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    many *m = (many *)user;
    (void)loop;
    if (t->due < m->last_due) m->out_of_order++;
    m->last_due = t->due;
    m->fired++;
}

TEST timers_many(void) {
    static many m;
    wsch_posix_loop *loop = mk_loop();
    unsigned x = 12345;
    int i, stopped = 0;
    ASSERT(loop);
    memset(&m, 0, sizeof m);
    for (i = 0; i < 20000; i++) {
        x = x * 1103515245u + 12345u;
        m.delay[i] = (x >> 16) % 60u;
        wsch_posix_timer_init(&m.t[i], many_fire, &m);
        ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &m.t[i], m.delay[i]));
    }
    for (i = 0; i < 20000; i += 3) {     /* a third stopped, from anywhere in the heap */
        wsch_posix_timer_stop(loop, &m.t[i]);
        stopped++;
    }
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run(loop));
    ASSERT_EQ(20000 - stopped, m.fired);
    ASSERT_EQ(0, m.out_of_order);
    wsch_posix_loop_destroy(loop);
    PASS();
}

TEST timers_limit(void) {
    wsch_posix_loop_desc d;
    wsch_posix_loop *loop = NULL;
    wsch_posix_timer t[3];
    int i;
    memset(&d, 0, sizeof d);
    d.backend = g_backend;
    d.max_timers = 2;
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_create(&d, &loop));
    for (i = 0; i < 3; i++) wsch_posix_timer_init(&t[i], many_fire, NULL);
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &t[0], 1000));
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &t[1], 1000));
    ASSERT_EQ(WSCH_ERR_LIMIT, wsch_posix_timer_start(loop, &t[2], 1000));
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &t[1], 10));   /* re-arming needs no room */
    wsch_posix_loop_destroy(loop);      /* armed timers: disarmed, not run */
    ASSERT_FALSE(wsch_posix_timer_active(&t[0]));
    PASS();
}


/* stop() before run(): run() returns at once; stop() from a callback ends
   run() after that turn, timers still armed. */
static void stop_fire(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    (void)t;
    ++*(int *)user;
    wsch_posix_loop_stop(loop);
}

TEST stop_and_run(void) {
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_timer a, b;
    int fired = 0;
    uint64_t t0;
    ASSERT(loop);
    wsch_posix_timer_init(&a, stop_fire, &fired);
    wsch_posix_timer_init(&b, stop_fire, &fired);
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &a, 10));
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &b, 60000));
    wsch_posix_loop_stop(loop);
    t0 = wsch_posix_now_ms(NULL);
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run(loop));
    ASSERT_EQ(0, fired);                /* no turn at all: a (10 ms) did not run */
    ASSERT(wsch_posix_now_ms(NULL) - t0 < 1000);
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run(loop));     /* a's callback stops it */
    ASSERT_EQ(1, fired);
    ASSERT(wsch_posix_timer_active(&b));
    wsch_posix_loop_destroy(loop);
    PASS();
}

/* ---- your descriptors -------------------------------------------------- */

typedef struct wctx {
    int reads, writes;
    char got[16];
} wctx;

static void w_fire(wsch_posix_loop *loop, wsch_posix_watch *w, int fd, unsigned ev, void *user) {
    wctx *c = (wctx *)user;
    (void)loop;
    if (ev & WSCH_POSIX_READ) {
        ssize_t n = read(fd, c->got, sizeof c->got - 1);
        if (n > 0) c->got[n] = '\0';
        c->reads++;
        wsch_posix_watch_remove(w);     /* from inside its own callback */
    }
    if (ev & WSCH_POSIX_WRITE) {
        c->writes++;
        (void)wsch_posix_watch_set(w, 0);   /* once is enough */
    }
}

TEST watch_fds(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_watch *wr = NULL, *ww = NULL;
    wctx c;
    int p[2];
    ASSERT(loop);
    memset(&c, 0, sizeof c);
    ASSERT_EQ(0, pipe(p));
    ASSERT_EQ(WSCH_OK, wsch_posix_watch_add(loop, p[0], WSCH_POSIX_READ, w_fire, &c, &wr));
    ASSERT_EQ(WSCH_OK, wsch_posix_watch_add(loop, p[1], WSCH_POSIX_WRITE, w_fire, &c, &ww));
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 100));
    ASSERT_EQ(1, c.writes);
    ASSERT_EQ(0, c.reads);
    ASSERT_EQ(3, (int)write(p[1], "abc", 3));
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 1000));
    ASSERT_EQ(1, c.reads);
    ASSERT_STR_EQ("abc", c.got);
    ASSERT_EQ(3, (int)write(p[1], "def", 3));
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 20));     /* removed: no more reads */
    ASSERT_EQ(1, c.reads);
    ASSERT_EQ(1, c.writes);
    wsch_posix_watch_remove(ww);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_posix_watch_add(loop, -1, WSCH_POSIX_READ, w_fire, &c, &ww));
    wsch_posix_loop_destroy(loop);
    close(p[0]);
    close(p[1]);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* ---- an echo server and a client --------------------------------------- */

typedef struct app {
    int opened, closed, close_code, close_err;
    int got, want, stopped, connected, disconnected, disconnect_code, errors;
    size_t big_len;
    int big_ok;
    wsch_conn *conn;                /* the last served conn opened */
    wsch_client *client;
    wsch_posix_loop *loop;
    int user_seen;                  /* events saw this struct as their user */
    int stop_reason;
} app;

static void echo_message(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
    app *a = (app *)user;
    if (a && a->opened >= 0) a->user_seen++;
    (void)wsch_conn_send(c, op, data, len);
}
static void echo_open(wsch_conn *c, void *user) {
    app *a = (app *)user;
    a->opened++;
    a->conn = c;
}
static void echo_close(wsch_conn *c, int code, const char *reason, size_t len, void *user) {
    app *a = (app *)user;
    (void)reason;
    (void)len;
    a->closed++;
    a->close_code = code;
    a->close_err = wsch_conn_error(c);
}

static wsch_conn_desc echo_desc(void) {
    wsch_conn_desc d;
    memset(&d, 0, sizeof d);
    d.on_message = echo_message;
    d.on_open = echo_open;
    d.on_close = echo_close;
    d.allocator = alloc_counter_allocator(&g_alloc);
    return d;
}

static void cl_chat(wsch_client *c, const wsch_client_message *m, void *user) {
    app *a = (app *)user;
    (void)c;
    (void)m;
    a->got++;
    if (a->got == a->want) (void)wsch_client_disconnect(c);
}
static void cl_big(wsch_client *c, const wsch_client_message *m, void *user) {
    app *a = (app *)user;
    size_t i;
    (void)c;
    a->big_len = m->payload.len;
    a->big_ok = 1;
    for (i = 1; i + 1 < m->payload.len; i++) {
        if (m->payload.ptr[i] != (char)('a' + (char)(i % 26))) a->big_ok = 0;
    }
    (void)wsch_client_disconnect(c);
}
static void cl_stop(wsch_client *c, wsch_stop reason, void *user) {
    app *a = (app *)user;
    (void)c;
    a->stopped++;
    a->stop_reason = (int)reason;
}
static void cl_connect(wsch_client *c, void *user) {
    app *a = (app *)user;
    (void)c;
    a->connected++;
}
static void cl_disconnect(wsch_client *c, int code, const char *reason, size_t len, void *user) {
    app *a = (app *)user;
    (void)c;
    (void)reason;
    (void)len;
    a->disconnected++;
    a->disconnect_code = code;
}
static void cl_error(wsch_client *c, int err, const char *what, void *user) {
    app *a = (app *)user;
    (void)c;
    (void)err;
    (void)what;
    a->errors++;
}

static wsch_client_desc client_desc(app *a, const char *url) {
    wsch_client_desc d;
    memset(&d, 0, sizeof d);
    d.url = url;
    d.user = a;
    d.on_stop = cl_stop;
    d.on_connect = cl_connect;
    d.on_disconnect = cl_disconnect;
    d.on_error = cl_error;
    d.heartbeat = WSCH_HEARTBEAT_OFF;
    d.allocator = alloc_counter_allocator(&g_alloc);
    return d;
}

TEST echo_end_to_end(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    wsch_client_desc d;
    app srv, cli;
    char url[64];
    int i;
    ASSERT(loop);
    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT(wsch_posix_listener_port(l) > 0);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &srv));
    ASSERT_EQ(WSCH_ERR_STATE, wsch_posix_serve_conns(l, &cd, &srv));
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(l));
    d = client_desc(&cli, url);
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &cli.client));
    ASSERT_EQ(&cli, wsch_posix_client_user(cli.client));
    ASSERT_EQ(WSCH_OK, wsch_client_on(cli.client, "chat", cl_chat, &cli, NULL));
    cli.want = 100;
    for (i = 0; i < cli.want; i++)      /* offline queue: flushed once connected */
        ASSERT_EQ(WSCH_OK, wsch_client_send(cli.client, "chat", "{\"text\":\"hi\"}", WSCH_CSTR));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(cli.client));
    ASSERT(run_until(loop, &cli.stopped, 5000));
    ASSERT_EQ(100, cli.got);
    ASSERT_EQ(1, cli.connected);
    ASSERT_EQ(WSCH_STOP_USER, cli.stop_reason);
    ASSERT_EQ(1, srv.opened);
    ASSERT_EQ(100, srv.user_seen);      /* the server's events got its user */
    ASSERT(run_until(loop, &srv.closed, 2000));
    ASSERT_EQ(WSCH_CLOSE_NORMAL, srv.close_code);
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 0));
    ASSERT_EQ(0, (int)wsch_posix_loop_sockets(loop));
    wsch_posix_client_destroy(cli.client);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* A message far larger than the socket buffers, both ways: partial writes
   queue in the library and leave as the sockets drain. */
TEST partial_writes(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    wsch_client_desc d;
    app srv, cli;
    char url[64];
    size_t n = 12u * 1024u * 1024u, i;
    char *payload = (char *)malloc(n + 1);
    ASSERT(loop && payload);
    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &srv));
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(l));
    d = client_desc(&cli, url);
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &cli.client));
    ASSERT_EQ(WSCH_OK, wsch_client_on(cli.client, "big", cl_big, &cli, NULL));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(cli.client));
    ASSERT(run_until(loop, &cli.connected, 3000));
    payload[0] = '"';
    for (i = 1; i + 1 < n; i++) payload[i] = (char)('a' + (char)(i % 26));
    payload[n - 1] = '"';
    payload[n] = '\0';
    ASSERT_EQ(WSCH_OK, wsch_client_send(cli.client, "big", payload, n));
    ASSERT(wsch_conn_queued_bytes(wsch_client_conn(cli.client)) > 0);  /* the socket took only part */
    ASSERT(run_until(loop, &cli.stopped, 10000));
    ASSERT_EQ(n, cli.big_len);
    ASSERT(cli.big_ok);
    free(payload);
    wsch_posix_client_destroy(cli.client);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* ---- connect: refusal, timeout, IPv6, your address -------------------- */

static uint16_t unused_port(void) {
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    uint16_t port;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) return 0;
    (void)getsockname(fd, (struct sockaddr *)&sa, &sl);
    port = ntohs(sa.sin_port);
    close(fd);                      /* nothing listens there now */
    return port;
}

TEST connect_refused(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_client_desc d;
    app cli;
    char url[64];
    uint64_t t0;
    ASSERT(loop);
    memset(&cli, 0, sizeof cli);
    url_for(url, sizeof url, "127.0.0.1", unused_port());
    d = client_desc(&cli, url);
    d.max_attempts = 2;
    d.backoff_base_ms = 10;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &cli.client));
    t0 = wsch_posix_now_ms(NULL);
    ASSERT_EQ(WSCH_OK, wsch_client_connect(cli.client));
    ASSERT(run_until(loop, &cli.stopped, 3000));
    ASSERT(wsch_posix_now_ms(NULL) - t0 < 1000);
    ASSERT_EQ(WSCH_STOP_MAX_ATTEMPTS, cli.stop_reason);
    ASSERT_EQ(2, (int)wsch_client_attempts(cli.client));
    ASSERT_EQ(0, cli.connected);
    ASSERT(cli.errors >= 2);
    wsch_posix_client_destroy(cli.client);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* A listener whose accept queue is full and never served drops further
   SYNs: a connect to it hangs, and the connect timeout ends the try. */
TEST connect_timeout(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_client_desc d;
    wsch_posix_client_opts o;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int lfd, fill[8], nfill = 0, i;
    app cli;
    char url[64];
    uint64_t t0, took;
    ASSERT(loop);
    memset(&cli, 0, sizeof cli);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(0, bind(lfd, (struct sockaddr *)&sa, sizeof sa));
    ASSERT_EQ(0, listen(lfd, 0));
    (void)getsockname(lfd, (struct sockaddr *)&sa, &sl);
    for (i = 0; i < 8; i++) {           /* fill the queue */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        (void)connect(fd, (struct sockaddr *)&sa, sizeof sa);
        fill[nfill++] = fd;
    }
    usleep(50000);
    url_for(url, sizeof url, "127.0.0.1", ntohs(sa.sin_port));
    d = client_desc(&cli, url);
    d.max_attempts = 1;
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = 300;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, &o, &cli.client));
    t0 = wsch_posix_now_ms(NULL);
    ASSERT_EQ(WSCH_OK, wsch_client_connect(cli.client));
    ASSERT(run_until(loop, &cli.stopped, 5000));
    took = wsch_posix_now_ms(NULL) - t0;
    ASSERT_EQ(WSCH_STOP_MAX_ATTEMPTS, cli.stop_reason);
    if (took < 250) {
        /* this system answered the SYN anyway (refused or accepted it) */
        wsch_posix_client_destroy(cli.client);
        wsch_posix_loop_destroy(loop);
        for (i = 0; i < nfill; i++) close(fill[i]);
        close(lfd);
        SKIPm("the full accept queue did not hold the connect");
    }
    ASSERT(took < 2000);
    ASSERT_EQ(0, cli.connected);
    wsch_posix_client_destroy(cli.client);
    wsch_posix_loop_destroy(loop);
    for (i = 0; i < nfill; i++) close(fill[i]);
    close(lfd);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* IPv6 listener, and a client given its address instead of a name. */
TEST ipv6_and_given_address(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    wsch_client_desc d;
    wsch_posix_client_opts o;
    struct sockaddr_in6 sa6;
    app srv, cli;
    char url[64];
    ASSERT(loop);
    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    l = mk_listener(loop, "::1");
    if (!l) {
        wsch_posix_loop_destroy(loop);
        SKIPm("no IPv6 loopback here");
    }
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &srv));
    memset(&sa6, 0, sizeof sa6);
    sa6.sin6_family = AF_INET6;
    sa6.sin6_addr = in6addr_loopback;
    sa6.sin6_port = htons(wsch_posix_listener_port(l));
    /* the URL names a host that does not resolve: the given address wins */
    snprintf(url, sizeof url, "ws://no-such-host.invalid:%u/ws", (unsigned)wsch_posix_listener_port(l));
    d = client_desc(&cli, url);
    memset(&o, 0, sizeof o);
    o.addr = &sa6;
    o.addr_len = sizeof sa6;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, &o, &cli.client));
    ASSERT_EQ(WSCH_OK, wsch_client_on(cli.client, "chat", cl_chat, &cli, NULL));
    cli.want = 1;
    ASSERT_EQ(WSCH_OK, wsch_client_send(cli.client, "chat", "{}", WSCH_CSTR));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(cli.client));
    ASSERT(run_until(loop, &cli.stopped, 3000));
    ASSERT_EQ(1, cli.got);
    wsch_posix_client_destroy(cli.client);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* Your resolver instead of getaddrinfo: it sees the URL's host and port. */
typedef struct resolver {
    int calls, fail;
    char host[64];
    uint16_t port, real_port;
} resolver;

static int my_resolve(const char *host, uint16_t port, void *addrs, size_t *lens, size_t *count, void *user) {
    resolver *r = (resolver *)user;
    struct sockaddr_in sa;
    r->calls++;
    snprintf(r->host, sizeof r->host, "%s", host);
    r->port = port;
    if (r->fail || *count < 1 || lens[0] < sizeof sa) return WSCH_ERR_NOT_FOUND;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(r->real_port);
    memcpy(addrs, &sa, sizeof sa);      /* the first of WSCH_POSIX_MAX_ADDRS slots */
    lens[0] = sizeof sa;
    *count = 1;
    return WSCH_OK;
}

TEST client_resolver(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    wsch_client_desc d;
    wsch_posix_client_opts o;
    resolver r;
    app srv, cli, c2;
    ASSERT(loop);
    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    memset(&c2, 0, sizeof c2);
    memset(&r, 0, sizeof r);
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &srv));
    r.real_port = wsch_posix_listener_port(l);
    d = client_desc(&cli, "ws://echo.test:4321/ws");
    memset(&o, 0, sizeof o);
    o.resolve = my_resolve;
    o.resolve_user = &r;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, &o, &cli.client));
    ASSERT_EQ(WSCH_OK, wsch_client_on(cli.client, "chat", cl_chat, &cli, NULL));
    cli.want = 1;
    ASSERT_EQ(WSCH_OK, wsch_client_send(cli.client, "chat", "{}", WSCH_CSTR));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(cli.client));
    ASSERT(run_until(loop, &cli.stopped, 3000));
    ASSERT_EQ(1, cli.got);
    ASSERT_EQ(1, r.calls);
    ASSERT_STR_EQ("echo.test", r.host);
    ASSERT_EQ(4321, r.port);
    /* a resolver that finds nothing: the try fails at once */
    r.fail = 1;
    d = client_desc(&c2, "ws://nowhere.test/ws");
    d.max_attempts = 1;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, &o, &c2.client));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(c2.client));
    ASSERT(run_until(loop, &c2.stopped, 1000));
    ASSERT_EQ(WSCH_STOP_MAX_ATTEMPTS, c2.stop_reason);
    ASSERT_EQ(2, r.calls);
    wsch_posix_client_destroy(cli.client);
    wsch_posix_client_destroy(c2.client);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* ---- EPIPE / ECONNRESET ------------------------------------------------- */

/* A raw client: connect, send an upgrade request, read the 101. */
static int raw_ws_client(uint16_t port) {
    struct sockaddr_in sa;
    static const char req[] = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void reset_close(int fd) {
    struct linger lg;
    lg.l_onoff = 1;
    lg.l_linger = 0;
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);                      /* RST instead of FIN */
}

TEST send_error_is_reported(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    app srv;
    char buf[1024];
    int fd, rc;
    ASSERT(loop);
    memset(&srv, 0, sizeof srv);
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &srv));
    fd = raw_ws_client(wsch_posix_listener_port(l));
    ASSERT(fd >= 0);
    ASSERT(run_until(loop, &srv.opened, 2000));
    ASSERT(read(fd, buf, sizeof buf) > 0);  /* the 101 */
    reset_close(fd);
    usleep(20000);
    /* Before the loop reads the reset: the send meets it. */
    rc = wsch_conn_send(srv.conn, WSCH_OP_TEXT, "x", 1);
    if (rc == WSCH_OK) rc = wsch_conn_send(srv.conn, WSCH_OP_TEXT, "y", 1);   /* EPIPE on the second */
    ASSERT_EQ(WSCH_ERR_TRANSPORT, rc);
    ASSERT_EQ(1, srv.closed);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, srv.close_code);
    ASSERT_EQ(WSCH_ERR_TRANSPORT, srv.close_err);
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 0));
    ASSERT_EQ(0, (int)wsch_posix_loop_sockets(loop));
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* A reset seen by the read side ends the connection too (1006). */
TEST reset_while_reading(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    app srv;
    int fd;
    ASSERT(loop);
    memset(&srv, 0, sizeof srv);
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &srv));
    fd = raw_ws_client(wsch_posix_listener_port(l));
    ASSERT(fd >= 0);
    ASSERT(run_until(loop, &srv.opened, 2000));
    reset_close(fd);
    ASSERT(run_until(loop, &srv.closed, 2000));
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, srv.close_code);
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 0));
    ASSERT_EQ(0, (int)wsch_posix_loop_sockets(loop));
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* ---- a hub and clients -------------------------------------------------- */

typedef struct hubctx {
    int connects, disconnects, last_code, messages;
    wsch_hub *hub;
} hubctx;

static int hub_auth(wsch_hub *hub, const wsch_hub_request *req, wsch_str *user_id, void *user) {
    (void)hub;
    (void)user;
    if (req->token.len == 6 && memcmp(req->token.ptr, "secret", 6) == 0) {
        user_id->ptr = "alice";
        user_id->len = 5;
        return WSCH_OK;
    }
    return WSCH_ERR_DENIED;
}
static void hub_connect(wsch_hub *hub, wsch_hub_peer peer, wsch_str user_id, void *user) {
    (void)hub;
    (void)peer;
    (void)user_id;
    ((hubctx *)user)->connects++;
}
static void hub_disconnect(wsch_hub *hub, wsch_hub_peer peer, int code, void *user) {
    (void)hub;
    (void)peer;
    ((hubctx *)user)->disconnects++;
    ((hubctx *)user)->last_code = code;
}
/* "publish" {"text":T} goes to channel news as type "news". */
static void hub_message(wsch_hub *hub, wsch_hub_peer peer, const wsch_envelope *env, void *user) {
    (void)peer;
    ((hubctx *)user)->messages++;
    if (strcmp(env->type, "publish") == 0)
        (void)wsch_hub_broadcast(hub, "news", "news", env->payload.ptr, env->payload.len, NULL);
}

static wsch_hub_desc hub_desc(hubctx *h) {
    wsch_hub_desc d;
    memset(&d, 0, sizeof d);
    d.authenticate = hub_auth;
    d.on_connect = hub_connect;
    d.on_disconnect = hub_disconnect;
    d.on_message = hub_message;
    d.user = h;
    d.allocator = alloc_counter_allocator(&g_alloc);
    return d;
}

static void sub_news(wsch_client *c, const wsch_client_message *m, void *user) {
    app *a = (app *)user;
    (void)c;
    if (m->payload.len == 13 && memcmp(m->payload.ptr, "{\"text\":\"hi\"}", 13) == 0) a->got++;
    else a->errors += 100;
}

static void pub_on_connect(wsch_client *c, void *user) {
    app *a = (app *)user;
    int i;
    a->connected++;
    for (i = 0; i < a->want; i++) (void)wsch_client_send(c, "publish", "{\"text\":\"hi\"}", WSCH_CSTR);
}

static void sub_subscribed(wsch_client *c, const wsch_client_message *m, void *user) {
    (void)c;
    (void)m;
    ((app *)user)->user_seen++;     /* the subscription is confirmed */
}

TEST hub_end_to_end(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l4, *l6;
    hubctx h;
    wsch_hub_desc hd;
    wsch_client_desc d;
    app sub, pub, bad;
    char url[64], url6[64];
    ASSERT(loop);
    memset(&h, 0, sizeof h);
    memset(&sub, 0, sizeof sub);
    memset(&pub, 0, sizeof pub);
    memset(&bad, 0, sizeof bad);
    hd = hub_desc(&h);
    ASSERT_EQ(WSCH_OK, wsch_posix_hub_create(loop, &hd, &h.hub));
    l4 = mk_listener(loop, "127.0.0.1");
    ASSERT(l4);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_hub(l4, h.hub));
    l6 = mk_listener(loop, "::1");
    if (l6) ASSERT_EQ(WSCH_OK, wsch_posix_serve_hub(l6, h.hub));   /* one hub, two listeners */
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(l4));

    d = client_desc(&sub, url);
    d.token = "secret";
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &sub.client));
    ASSERT_EQ(WSCH_OK, wsch_client_on(sub.client, "news", sub_news, &sub, NULL));
    ASSERT_EQ(WSCH_OK, wsch_client_on(sub.client, "subscribed", sub_subscribed, &sub, NULL));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(sub.client, "news"));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(sub.client));
    ASSERT(run_until(loop, &sub.user_seen, 3000));

    if (l6) snprintf(url6, sizeof url6, "ws://[::1]:%u/ws", (unsigned)wsch_posix_listener_port(l6));
    d = client_desc(&pub, l6 ? url6 : url);
    d.token = "secret";
    d.on_connect = pub_on_connect;
    pub.want = 50;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &pub.client));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(pub.client));
    sub.want = 50;
    {
        uint64_t end = wsch_posix_now_ms(NULL) + 5000;
        while (sub.got < 50 && wsch_posix_now_ms(NULL) < end) ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 10));
    }
    ASSERT_EQ(50, sub.got);
    ASSERT_EQ(0, sub.errors);
    ASSERT_EQ(2, h.connects);
    ASSERT_EQ(50, h.messages);
    {
        wsch_posix_counters k;
        wsch_posix_loop_counters(loop, &k);
        wsch_hub_counters hk;
        wsch_hub_stats(h.hub, &hk);
        ASSERT(k.turns > 0 && k.reads > 0 && k.writes > 0);
        ASSERT_EQ(g_no_gather ? 0 : 1, hk.flushed_peers > 0);  /* 50 broadcasts in a turn or two */
    }

    /* A wrong token: refused with 4001, which stops the client. */
    d = client_desc(&bad, url);
    d.token = "wrong";
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &bad.client));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(bad.client));
    ASSERT(run_until(loop, &bad.stopped, 3000));
    ASSERT_EQ(WSCH_STOP_TERMINAL_CODE, bad.stop_reason);
    ASSERT_EQ(4001, wsch_client_last_close_code(bad.client));

    wsch_posix_client_destroy(sub.client);
    wsch_posix_client_destroy(pub.client);
    wsch_posix_client_destroy(bad.client);
    wsch_posix_loop_destroy(loop);      /* the hub too */
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* ---- graceful shutdown ------------------------------------------------- */

/* The hub's loop shuts down (by a signal): peers get 1001, run() returns;
   the client, on a loop of its own, sees 1001 and waits to retry. */
TEST shutdown_hub_by_signal(void) {
    int fds0 = count_fds();
    wsch_posix_loop *srv = mk_loop(), *cl = mk_loop();
    wsch_posix_listener *l;
    hubctx h;
    wsch_hub_desc hd;
    wsch_client_desc d;
    app sub;
    char url[64];
    uint64_t t0;
    ASSERT(srv && cl);
    memset(&h, 0, sizeof h);
    memset(&sub, 0, sizeof sub);
    hd = hub_desc(&h);
    ASSERT_EQ(WSCH_OK, wsch_posix_hub_create(srv, &hd, &h.hub));
    l = mk_listener(srv, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_hub(l, h.hub));
    ASSERT_EQ(WSCH_OK, wsch_posix_handle_signals(srv));
    ASSERT_EQ(WSCH_ERR_STATE, wsch_posix_handle_signals(cl));  /* one loop per process */
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(l));
    d = client_desc(&sub, url);
    d.token = "secret";
    d.backoff_base_ms = 5000;           /* no reconnect within the test */
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(cl, &d, NULL, &sub.client));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(sub.client));
    ASSERT(run2_until(srv, cl, &sub.connected, 3000));
    ASSERT_EQ(1, h.connects);

    ASSERT_EQ(0, raise(SIGTERM));
    t0 = wsch_posix_now_ms(NULL);
    ASSERT(run2_until(srv, cl, &sub.disconnected, 3000));
    ASSERT_EQ(WSCH_CLOSE_GOING_AWAY, sub.disconnect_code);
    ASSERT_EQ(1, h.disconnects);
    ASSERT(run2_until(srv, cl, &sub.disconnected, 100) >= 0);
    ASSERT_EQ(0, (int)wsch_posix_loop_sockets(srv));
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run(srv));  /* the shutdown is complete: returns at once */
    ASSERT(wsch_posix_now_ms(NULL) - t0 < 2000);
    ASSERT(wsch_client_next_retry_ms(sub.client) >= 0);    /* WAITING */

    wsch_posix_client_destroy(sub.client);
    wsch_posix_loop_destroy(cl);
    wsch_posix_loop_destroy(srv);       /* restores the signal handlers */
    {
        struct sigaction sa;
        ASSERT_EQ(0, sigaction(SIGTERM, NULL, &sa));
        ASSERT(sa.sa_handler == SIG_DFL);
    }
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* The client's loop shuts down: the client closes with 1000, the served
   conn on the other loop sees it; run() returns on both sides. */
TEST shutdown_client_and_conns(void) {
    int fds0 = count_fds();
    wsch_posix_loop *srv = mk_loop(), *cl = mk_loop();
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    wsch_client_desc d;
    app s, c2, c1;
    char url[64];
    ASSERT(srv && cl);
    memset(&s, 0, sizeof s);
    memset(&c1, 0, sizeof c1);
    memset(&c2, 0, sizeof c2);
    l = mk_listener(srv, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &s));
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(l));
    d = client_desc(&c1, url);
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(cl, &d, NULL, &c1.client));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(c1.client));
    d = client_desc(&c2, url);
    d.backoff_base_ms = 5000;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(cl, &d, NULL, &c2.client));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(c2.client));
    ASSERT(run2_until(srv, cl, &c1.connected, 3000));
    ASSERT(run2_until(srv, cl, &c2.connected, 3000));
    ASSERT_EQ(2, s.opened);

    /* The client side first: 1000 from both clients. */
    wsch_posix_loop_shutdown(cl);
    ASSERT(run2_until(srv, cl, &c1.stopped, 3000));
    ASSERT(run2_until(srv, cl, &c2.stopped, 3000));
    ASSERT_EQ(WSCH_STOP_USER, c1.stop_reason);
    {
        int both = 0;
        uint64_t end = wsch_posix_now_ms(NULL) + 2000;
        while (s.closed < 2 && wsch_posix_now_ms(NULL) < end) (void)run2_until(srv, cl, &both, 5);
    }
    ASSERT_EQ(2, s.closed);
    ASSERT_EQ(WSCH_CLOSE_NORMAL, s.close_code);
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run(cl));   /* done: returns at once */

    /* Then the server: nothing left, it returns at once too. */
    wsch_posix_loop_shutdown(srv);
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run(srv));
    wsch_posix_client_destroy(c1.client);
    wsch_posix_client_destroy(c2.client);
    wsch_posix_loop_destroy(cl);
    wsch_posix_loop_destroy(srv);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* Served conns get 1001 when their server shuts down. */
TEST shutdown_served_conns(void) {
    int fds0 = count_fds();
    wsch_posix_loop *srv = mk_loop(), *cl = mk_loop();
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    wsch_client_desc d;
    app s, c1;
    char url[64];
    ASSERT(srv && cl);
    memset(&s, 0, sizeof s);
    memset(&c1, 0, sizeof c1);
    l = mk_listener(srv, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &s));
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(l));
    d = client_desc(&c1, url);
    d.backoff_base_ms = 5000;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(cl, &d, NULL, &c1.client));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(c1.client));
    ASSERT(run2_until(srv, cl, &c1.connected, 3000));
    wsch_posix_loop_shutdown(srv);
    ASSERT(run2_until(srv, cl, &c1.disconnected, 3000));
    ASSERT_EQ(WSCH_CLOSE_GOING_AWAY, c1.disconnect_code);
    ASSERT(run2_until(srv, cl, &s.closed, 3000));
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run(srv));
    ASSERT_EQ(0, (int)wsch_posix_loop_sockets(srv));
    wsch_posix_client_destroy(c1.client);
    wsch_posix_loop_destroy(cl);
    wsch_posix_loop_destroy(srv);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* ---- the transport hook ------------------------------------------------
   A toy transport: each side first sends "HELO" and waits for the other's,
   then every byte travels XORed with 0x5A. Enough to prove that the loop
   drives a handshake, reads and writes only through the hook, and closes
   each session once. */
typedef struct toy {
    int fd;
    int sent_helo;
    size_t got_helo;
    int server;
    /* As a TLS library: bytes offered to a write that could not finish are
       in a record already, and the next write must offer them again, first. */
    unsigned char committed[4096];
    size_t committed_len;
} toy;

typedef struct toy_stats {
    int opens, closes, handshakes, shutdowns, servers;
    int nodelay;                    /* sockets opened with TCP_NODELAY on (small frames must not wait) */
    int retries, bad_retries;       /* writes after a WANT_WRITE; those not offering the same bytes first */
    int server_full;                /* server sessions' writes say WANT_WRITE (a peer not reading) */
} toy_stats;

static void *toy_open(int fd, int server, const char *host, void *user) {
    toy_stats *st = (toy_stats *)user;
    toy *t = (toy *)calloc(1, sizeof *t);
    int on = 0;
    socklen_t len = (socklen_t)sizeof on;
    (void)host;
    if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0 && on) st->nodelay++;
    st->opens++;
    st->servers += server;
    if (t) {
        t->fd = fd;
        t->server = server;
    }
    return t;
}
static wsch_posix_io toy_handshake(void *session, void *user) {
    toy *t = (toy *)session;
    char b[4];
    ((toy_stats *)user)->handshakes++;
    if (!t->sent_helo) {
        if (send(t->fd, "HELO", 4, MSG_NOSIGNAL) != 4) return WSCH_POSIX_IO_ERROR;
        t->sent_helo = 1;
    }
    while (t->got_helo < 4) {
        ssize_t n = recv(t->fd, b, 4 - t->got_helo, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return WSCH_POSIX_IO_WANT_READ;
        if (n <= 0 || memcmp(b, "HELO" + t->got_helo, (size_t)n) != 0) return WSCH_POSIX_IO_ERROR;
        t->got_helo += (size_t)n;
    }
    return WSCH_POSIX_IO_DONE;
}
static wsch_posix_io toy_read(void *session, void *buf, size_t cap, size_t *n, void *user) {
    toy *t = (toy *)session;
    ssize_t r = recv(t->fd, buf, cap, 0);
    size_t i;
    (void)user;
    if (r > 0) {
        for (i = 0; i < (size_t)r; i++) ((unsigned char *)buf)[i] ^= 0x5A;
        *n = (size_t)r;
        return WSCH_POSIX_IO_DONE;
    }
    if (r == 0) return WSCH_POSIX_IO_EOF;
    return errno == EAGAIN || errno == EWOULDBLOCK ? WSCH_POSIX_IO_WANT_READ : WSCH_POSIX_IO_ERROR;
}
static wsch_posix_io toy_write(void *session, const void *data, size_t len, size_t *n, void *user) {
    toy *t = (toy *)session;
    toy_stats *st = (toy_stats *)user;
    const unsigned char *p = (const unsigned char *)data;
    unsigned char tmp[4096];
    size_t i, k, done = 0;
    ssize_t r;
    if (t->committed_len) {
        st->retries++;
        if (len < t->committed_len || memcmp(data, t->committed, t->committed_len) != 0) {
            st->bad_retries++;
            return WSCH_POSIX_IO_ERROR;     /* OpenSSL: "bad write retry" */
        }
        t->committed_len = 0;
    }
    if (t->server && st->server_full) {     /* as if the socket were full */
        k = len < sizeof tmp ? len : sizeof tmp;
        memcpy(t->committed, p, k);
        t->committed_len = k;
        return WSCH_POSIX_IO_WANT_WRITE;
    }
    while (done < len) {
        k = len - done < sizeof tmp ? len - done : sizeof tmp;
        for (i = 0; i < k; i++) tmp[i] = (unsigned char)(p[done + i] ^ 0x5A);
        r = send(t->fd, tmp, k, MSG_NOSIGNAL);
        if (r > 0) {
            done += (size_t)r;
            if ((size_t)r < k) break;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (done) break;
            memcpy(t->committed, p, k);     /* in a "record" now: they must come again */
            t->committed_len = k;
            return WSCH_POSIX_IO_WANT_WRITE;
        }
        return WSCH_POSIX_IO_ERROR;
    }
    *n = done;
    return WSCH_POSIX_IO_DONE;
}
static wsch_posix_io toy_shutdown(void *session, void *user) {
    (void)session;
    ((toy_stats *)user)->shutdowns++;
    return WSCH_POSIX_IO_DONE;
}
static void toy_close(void *session, void *user) {
    ((toy_stats *)user)->closes++;
    free(session);
}

/* The toy transport (no shutdown: callers that test it add it). */
static wsch_posix_transport toy_transport(toy_stats *st) {
    wsch_posix_transport tr;
    memset(&tr, 0, sizeof tr);
    tr.open = toy_open;
    tr.handshake = toy_handshake;
    tr.read = toy_read;
    tr.write = toy_write;
    tr.close = toy_close;
    tr.user = st;
    return tr;
}

TEST transport_hook(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l = NULL;
    wsch_posix_listen_desc ld;
    wsch_posix_transport tr;
    wsch_posix_client_opts o;
    toy_stats st;
    wsch_conn_desc cd = echo_desc();
    wsch_client_desc d;
    app srv, cli;
    char url[64];
    int raw;
    ASSERT(loop);
    memset(&st, 0, sizeof st);
    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    tr = toy_transport(&st);
    tr.shutdown = toy_shutdown;
    memset(&ld, 0, sizeof ld);
    ld.transport = &tr;
    ASSERT_EQ(WSCH_OK, wsch_posix_listen(loop, &ld, &l));
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &srv));
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(l));
    d = client_desc(&cli, url);
    memset(&o, 0, sizeof o);
    o.transport = &tr;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, &o, &cli.client));
    ASSERT_EQ(WSCH_OK, wsch_client_on(cli.client, "chat", cl_chat, &cli, NULL));
    cli.want = 20;
    {
        int i;
        for (i = 0; i < 20; i++) ASSERT_EQ(WSCH_OK, wsch_client_send(cli.client, "chat", "{\"n\":1}", WSCH_CSTR));
    }
    ASSERT_EQ(WSCH_OK, wsch_client_connect(cli.client));
    ASSERT(run_until(loop, &cli.stopped, 5000));
    ASSERT_EQ(20, cli.got);
    ASSERT(run_until(loop, &srv.closed, 2000));
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 0));
    ASSERT_EQ(2, st.opens);
    ASSERT_EQ(2, st.nodelay);           /* the accepted socket too (inherited from the listener on Linux) */
    ASSERT_EQ(1, st.servers);
    ASSERT_EQ(2, st.closes);
    ASSERT(st.handshakes >= 2);
    ASSERT(st.shutdowns >= 1);

    /* A peer that never finishes the handshake: the server's handshake
       timeout would end it; here the client side's connect timeout does. */
    raw = -1;
    {
        app c3;
        uint64_t t0;
        int lfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        memset(&c3, 0, sizeof c3);
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ASSERT_EQ(0, bind(lfd, (struct sockaddr *)&sa, sizeof sa));
        ASSERT_EQ(0, listen(lfd, 4));   /* accepted by the kernel, never answered */
        (void)getsockname(lfd, (struct sockaddr *)&sa, &sl);
        url_for(url, sizeof url, "127.0.0.1", ntohs(sa.sin_port));
        d = client_desc(&c3, url);
        d.max_attempts = 1;
        o.connect_timeout_ms = 200;
        ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, &o, &c3.client));
        t0 = wsch_posix_now_ms(NULL);
        ASSERT_EQ(WSCH_OK, wsch_client_connect(c3.client));
        ASSERT(run_until(loop, &c3.stopped, 3000));
        ASSERT(wsch_posix_now_ms(NULL) - t0 >= 190);
        ASSERT_EQ(WSCH_STOP_MAX_ATTEMPTS, c3.stop_reason);
        ASSERT_EQ(3, st.opens);
        ASSERT_EQ(3, st.closes);
        wsch_posix_client_destroy(c3.client);
        raw = accept(lfd, NULL, NULL);
        if (raw >= 0) close(raw);
        close(lfd);
    }
    wsch_posix_client_destroy(cli.client);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* The room a connection's own timers need is kept for them: your timers
   cannot take it, so the library's timeouts are never lost. */
TEST timers_reserved_for_connections(void) {
    int fds0 = count_fds();
    wsch_posix_loop_desc d;
    wsch_posix_loop *loop = NULL;
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    wsch_posix_timer t[64];
    app srv;
    int i, armed = 0, fd;
    memset(&d, 0, sizeof d);
    memset(&srv, 0, sizeof srv);
    d.backend = g_backend;
    d.max_timers = 40;
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_create(&d, &loop));
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &srv));
    fd = raw_ws_client(wsch_posix_listener_port(l));
    ASSERT(fd >= 0);
    ASSERT(run_until(loop, &srv.opened, 2000));
    for (i = 0; i < 64; i++) {
        wsch_posix_timer_init(&t[i], many_fire, NULL);
        if (wsch_posix_timer_start(loop, &t[i], 60000) == WSCH_OK) armed++;
    }
    ASSERT(armed > 0 && armed < 40);
    /* the conn can still arm its close timer */
    ASSERT_EQ(WSCH_OK, wsch_conn_close(srv.conn, WSCH_CLOSE_NORMAL, NULL, 0));
    close(fd);                          /* the peer goes: the conn ends all the same */
    ASSERT(run_until(loop, &srv.closed, 3000));
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* ---- gathered writes keep the stream in order ---------------------------
   20,000 broadcasts from one timer callback (one turn) to a raw peer whose
   receive buffer is small and which reads only afterwards: the first goes
   out at once, the next ones gather, the block fills and is written, the
   socket fills, the rest queue in the library. Every frame must arrive,
   once, in order. */
#define BURST 20000

typedef struct burst {
    wsch_hub *hub;
    int done;
} burst;

static void burst_fire(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    burst *b = (burst *)user;
    char payload[400];
    int i;
    (void)loop;
    (void)t;
    memset(payload, 0, sizeof payload);
    for (i = 0; i < BURST; i++) {
        int n = snprintf(payload, sizeof payload, "{\"n\":%d,\"pad\":\"%0200d\"}", i, 0);
        if (wsch_hub_broadcast(b->hub, "news", "news", payload, (size_t)n, NULL) != WSCH_OK) break;
    }
    b->done = 1;
}

/* Parses the server's frames in buf[0..len): calls back each text
   payload's "n". Returns the bytes used. */
static size_t parse_frames(const unsigned char *buf, size_t len, int *next, int *bad, int *closed) {
    size_t off = 0;
    while (len - off >= 2) {
        size_t h = 2, plen = buf[off + 1] & 0x7Fu;
        const char *p;
        if (plen == 126) {
            if (len - off < 4) break;
            plen = (size_t)buf[off + 2] << 8 | buf[off + 3];
            h = 4;
        } else if (plen == 127) {
            *bad += 1;
            return len;
        }
        if (len - off < h + plen) break;
        if ((buf[off] & 0x0F) == 8) *closed = 1;
        if ((buf[off] & 0x0F) == 1) {
            p = strstr((const char *)buf + off + h, "\"n\":");
            if (p && p < (const char *)buf + off + h + plen) {
                if (atoi(p + 4) == *next) (*next)++;
                else *bad += 1;
            }
        }
        off += h + plen;
    }
    return off;
}

TEST gather_keeps_order(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l;
    wsch_hub_desc hd;
    wsch_posix_timer t;
    struct sockaddr_in sa;
    hubctx h;
    burst b;
    static unsigned char in[1 << 20];
    size_t have = 0;
    int fd, small = 4096, next = 0, bad = 0, closed = 0, subscribed = 0;
    static const char req[] = "GET /ws?token=secret HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n";
    static const char sub[] = "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\"}}";
    unsigned char frame[128];
    uint64_t end;
    ASSERT(loop);
    memset(&h, 0, sizeof h);
    memset(&b, 0, sizeof b);
    hd = hub_desc(&h);
    hd.limits.max_outbound_bytes = 64u * 1024u * 1024u;    /* no slow-consumer drop here */
    ASSERT_EQ(WSCH_OK, wsch_posix_hub_create(loop, &hd, &h.hub));
    b.hub = h.hub;
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_hub(l, h.hub));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(wsch_posix_listener_port(l));
    ASSERT_EQ(0, connect(fd, (struct sockaddr *)&sa, sizeof sa));
    ASSERT_EQ((ssize_t)(sizeof req - 1), write(fd, req, sizeof req - 1));
    frame[0] = 0x81;                    /* text, masked with a zero key */
    frame[1] = (unsigned char)(0x80 | (sizeof sub - 1));
    memset(frame + 2, 0, 4);
    memcpy(frame + 6, sub, sizeof sub - 1);
    ASSERT_EQ((ssize_t)(6 + sizeof sub - 1), write(fd, frame, 6 + sizeof sub - 1));
    fcntl(fd, F_SETFL, O_NONBLOCK);
    end = wsch_posix_now_ms(NULL) + 3000;
    while (!subscribed && wsch_posix_now_ms(NULL) < end) {     /* the 101, then "subscribed" */
        ssize_t n;
        (void)wsch_posix_loop_run_once(loop, 5);
        n = read(fd, in + have, sizeof in - have);
        if (n > 0) have += (size_t)n;
        if (have && memmem(in, have, "subscribed", 10)) subscribed = 1;
    }
    ASSERT(subscribed);
    have = 0;
    wsch_posix_timer_init(&t, burst_fire, &b);
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &t, 0));
    ASSERT(run_until(loop, &b.done, 3000));
    end = wsch_posix_now_ms(NULL) + 20000;
    while (next < BURST && !bad && wsch_posix_now_ms(NULL) < end) {
        ssize_t n = read(fd, in + have, sizeof in - have);
        if (n > 0) {
            size_t used;
            have += (size_t)n;
            used = parse_frames(in, have, &next, &bad, &closed);
            memmove(in, in + used, have - used);
            have -= used;
        } else {
            (void)wsch_posix_loop_run_once(loop, 5);
        }
    }
    ASSERT_EQ(0, bad);
    ASSERT_EQ(BURST, next);
    ASSERT_EQ(0, closed);
    if (!g_no_gather) {
        wsch_posix_counters k;
        wsch_hub_counters hk;
        wsch_posix_loop_counters(loop, &k);
        wsch_hub_stats(h.hub, &hk);
        ASSERT(hk.flushed_peers > 0);
        ASSERT(k.writes < (uint64_t)BURST);    /* far fewer writes than messages */
    }
    close(fd);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* ---- the library's timers through the loop ------------------------------ */

/* Reads until EOF or a reset (1) within ms, or 0. Runs the loop meanwhile. */
static int peer_ends(wsch_posix_loop *loop, int fd, uint32_t ms) {
    uint64_t end = wsch_posix_now_ms(NULL) + ms;
    char b[512];
    fcntl(fd, F_SETFL, O_NONBLOCK);
    while (wsch_posix_now_ms(NULL) < end) {
        ssize_t n = read(fd, b, sizeof b);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return 1;
        (void)wsch_posix_loop_run_once(loop, 5);
    }
    return 0;
}

/* A conn's handshake timeout (timer 1): a peer that never sends its request. */
TEST conn_handshake_timeout(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    struct sockaddr_in sa;
    app srv;
    uint64_t t0;
    int fd;
    ASSERT(loop);
    memset(&srv, 0, sizeof srv);
    cd.limits.handshake_timeout_ms = 150;
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &srv));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(wsch_posix_listener_port(l));
    ASSERT_EQ(0, connect(fd, (struct sockaddr *)&sa, sizeof sa));
    t0 = wsch_posix_now_ms(NULL);
    ASSERT(peer_ends(loop, fd, 3000));
    ASSERT(wsch_posix_now_ms(NULL) - t0 >= 140);
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 0));
    ASSERT_EQ(0, (int)wsch_posix_loop_sockets(loop));
    close(fd);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* A hub peer's idle timeout (timer 16): open, then silent. */
TEST hub_idle_timeout(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l;
    wsch_hub_desc hd;
    hubctx h;
    int fd;
    ASSERT(loop);
    memset(&h, 0, sizeof h);
    hd = hub_desc(&h);
    hd.authenticate = NULL;             /* anonymous peers */
    hd.idle_timeout_ms = 150;
    hd.limits.close_timeout_ms = 200;   /* the silent peer never answers the close */
    ASSERT_EQ(WSCH_OK, wsch_posix_hub_create(loop, &hd, &h.hub));
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_hub(l, h.hub));
    fd = raw_ws_client(wsch_posix_listener_port(l));
    ASSERT(fd >= 0);
    ASSERT(run_until(loop, &h.connects, 2000));
    ASSERT(run_until(loop, &h.disconnects, 3000));
    {
        wsch_hub_counters k;
        wsch_hub_stats(h.hub, &k);
        ASSERT_EQ(1, (int)k.drops[WSCH_HUB_DROP_IDLE]);
    }
    ASSERT(peer_ends(loop, fd, 3000));
    close(fd);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* A client's heartbeat (timers 17, 18): kept alive by a hub that answers,
   and a dead peer found when the server stops answering. */
TEST client_heartbeat(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l;
    wsch_hub_desc hd;
    wsch_client_desc d;
    hubctx h;
    app cli;
    char url[64];
    uint64_t end;
    ASSERT(loop);
    memset(&h, 0, sizeof h);
    memset(&cli, 0, sizeof cli);
    hd = hub_desc(&h);
    ASSERT_EQ(WSCH_OK, wsch_posix_hub_create(loop, &hd, &h.hub));
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_hub(l, h.hub));
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(l));
    d = client_desc(&cli, url);
    d.token = "secret";
    d.heartbeat = WSCH_HEARTBEAT_APP;   /* {"type":"ping"}: the hub counts them */
    d.heartbeat_interval_ms = 30;
    d.pong_timeout_ms = 1000;           /* a loaded machine may stall us; the answers come at once */
    d.backoff_base_ms = 5000;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &cli.client));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(cli.client));
    ASSERT(run_until(loop, &cli.connected, 3000));
    end = wsch_posix_now_ms(NULL) + 400;
    while (wsch_posix_now_ms(NULL) < end) ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 10));
    ASSERT_EQ(0, cli.disconnected);     /* every heartbeat answered */
    ASSERT_EQ(WSCH_STATUS_CONNECTED, wsch_client_status(cli.client));
    {
        wsch_hub_counters k;
        wsch_hub_stats(h.hub, &k);
        ASSERT(k.messages_in >= 5);     /* 400 ms of 30 ms heartbeats */
    }
    wsch_posix_client_destroy(cli.client);
    wsch_posix_loop_destroy(loop);

    /* A server that accepts the handshake and then never says a word. */
    {
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        char req[2048], resp[512], acc[WSCH_ACCEPT_LEN + 1];
        size_t have = 0, used;
        wsch_request r;
        app c2;
        int lfd = socket(AF_INET, SOCK_STREAM, 0), fd = -1;
        memset(&c2, 0, sizeof c2);
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ASSERT_EQ(0, bind(lfd, (struct sockaddr *)&sa, sizeof sa));
        ASSERT_EQ(0, listen(lfd, 4));
        (void)getsockname(lfd, (struct sockaddr *)&sa, &sl);
        url_for(url, sizeof url, "127.0.0.1", ntohs(sa.sin_port));
        d = client_desc(&c2, url);
        d.heartbeat = WSCH_HEARTBEAT_PROTOCOL;
        d.heartbeat_interval_ms = 30;
        d.pong_timeout_ms = 100;
        d.backoff_base_ms = 5000;
        ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop = mk_loop(), &d, NULL, &c2.client));
        ASSERT_EQ(WSCH_OK, wsch_client_connect(c2.client));
        end = wsch_posix_now_ms(NULL) + 3000;
        fcntl(lfd, F_SETFL, O_NONBLOCK);
        while (wsch_posix_now_ms(NULL) < end) {     /* accept and read the request */
            (void)wsch_posix_loop_run_once(loop, 5);
            if (fd < 0) fd = accept(lfd, NULL, NULL);
            if (fd >= 0) {
                ssize_t n;
                fcntl(fd, F_SETFL, O_NONBLOCK);
                n = read(fd, req + have, sizeof req - 1 - have);
                if (n > 0) have += (size_t)n;
                if (have && wsch_request_parse(req, have, 0, 0, &r, &used) == WSCH_OK) break;
            }
        }
        ASSERT(fd >= 0 && r.key.len > 0);
        wsch_accept_key(r.key.ptr, r.key.len, acc);
        snprintf(resp, sizeof resp,
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
        ASSERT_EQ((ssize_t)strlen(resp), write(fd, resp, strlen(resp)));
        ASSERT(run_until(loop, &c2.connected, 2000));
        end = wsch_posix_now_ms(NULL);
        ASSERT(run_until(loop, &c2.disconnected, 2000));    /* ping, no pong: dead */
        ASSERT(wsch_posix_now_ms(NULL) - end >= 100);
        ASSERT_EQ(WSCH_CLOSE_ABNORMAL, c2.disconnect_code);
        wsch_posix_client_destroy(c2.client);
        close(fd);
        close(lfd);
    }
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* ---- teardown, limits, backpressure ------------------------------------ */

static void destroy_on_stop(wsch_client *c, wsch_stop reason, void *user) {
    app *a = (app *)user;
    a->stopped++;
    a->stop_reason = (int)reason;
    wsch_posix_client_destroy(c);       /* from inside its own callback */
}

/* Everything open at once when the loop goes: no descriptor, no byte left. */
TEST destroy_busy_loop(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *lc, *lh;
    wsch_conn_desc cd = echo_desc();
    wsch_hub_desc hd;
    wsch_client_desc d;
    wsch_posix_watch *w;
    wsch_posix_timer t;
    hubctx h;
    app srv, c1, c2, c3, c4;
    char url[64];
    int p[2], raw;
    ASSERT(loop);
    memset(&h, 0, sizeof h);
    memset(&srv, 0, sizeof srv);
    memset(&c1, 0, sizeof c1);
    memset(&c2, 0, sizeof c2);
    memset(&c3, 0, sizeof c3);
    memset(&c4, 0, sizeof c4);
    lc = mk_listener(loop, "127.0.0.1");
    lh = mk_listener(loop, "127.0.0.1");
    ASSERT(lc && lh);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(lc, &cd, &srv));
    hd = hub_desc(&h);
    ASSERT_EQ(WSCH_OK, wsch_posix_hub_create(loop, &hd, &h.hub));
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_hub(lh, h.hub));
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(lc));
    d = client_desc(&c1, url);
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &c1.client));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(c1.client));
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(lh));
    d = client_desc(&c2, url);
    d.token = "secret";
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &c2.client));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(c2.client, "news"));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(c2.client));
    ASSERT(run_until(loop, &c1.connected, 3000));
    ASSERT(run_until(loop, &c2.connected, 3000));
    /* a client destroyed from its own on_stop, and one still connecting */
    d = client_desc(&c3, url);
    d.on_stop = destroy_on_stop;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &c3.client));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(c3.client));
    ASSERT_EQ(WSCH_OK, wsch_client_disconnect(c3.client));
    ASSERT_EQ(1, c3.stopped);
    d = client_desc(&c4, url);
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &c4.client));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(c4.client));
    raw = raw_ws_client(wsch_posix_listener_port(lc));     /* mid-handshake */
    ASSERT(raw >= 0);
    ASSERT_EQ(0, pipe(p));
    ASSERT_EQ(WSCH_OK, wsch_posix_watch_add(loop, p[0], WSCH_POSIX_READ, w_fire, NULL, &w));
    wsch_posix_timer_init(&t, t_fire, NULL);
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &t, 60000));
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 0));
    ASSERT(wsch_posix_loop_sockets(loop) >= 3);
    wsch_posix_loop_destroy(loop);
    ASSERT_FALSE(wsch_posix_timer_active(&t));
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    close(raw);
    close(p[0]);
    close(p[1]);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* max_fds: a connection past it is closed unserved, the rest are served. */
TEST max_fds(void) {
    int fds0 = count_fds();
    wsch_posix_loop_desc ld;
    wsch_posix_loop *loop = NULL;
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    app srv;
    char b[64];
    int a1, a2;
    memset(&ld, 0, sizeof ld);
    memset(&srv, 0, sizeof srv);
    ld.backend = g_backend;
    ld.max_fds = 2;                     /* the listener and one connection */
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_create(&ld, &loop));
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &srv));
    a1 = raw_ws_client(wsch_posix_listener_port(l));
    ASSERT(run_until(loop, &srv.opened, 2000));
    a2 = raw_ws_client(wsch_posix_listener_port(l));
    ASSERT(a1 >= 0 && a2 >= 0);
    (void)wsch_posix_loop_run_once(loop, 50);
    (void)wsch_posix_loop_run_once(loop, 50);
    ASSERT_EQ(1, srv.opened);
    ASSERT_EQ(1, (int)wsch_posix_loop_sockets(loop));
    ASSERT((int)read(a2, b, sizeof b) <= 0);    /* closed unserved: EOF (or a reset: its request was unread) */
    wsch_posix_loop_destroy(loop);
    close(a1);
    close(a2);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* A peer that sends and never reads: past read_pause_bytes of unsent echo
   the conn is not read any more, so its queue stays bounded. */
TEST read_pause(void) {
    int fds0 = count_fds();
    wsch_posix_loop_desc ld;
    wsch_posix_loop *loop = NULL;
    wsch_posix_listener *l;
    wsch_conn_desc cd = echo_desc();
    app srv;
    char b[4096];
    static unsigned char frame[4 + 4 + 16384];
    size_t sent = 0, max_queued = 0;
    int fd, i, blocked = 0;
    memset(&ld, 0, sizeof ld);
    memset(&srv, 0, sizeof srv);
    ld.backend = g_backend;
    ld.read_pause_bytes = 64u * 1024u;
    ld.allocator = alloc_counter_allocator(&g_alloc);
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_create(&ld, &loop));
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_conns(l, &cd, &srv));
    fd = raw_ws_client(wsch_posix_listener_port(l));
    ASSERT(fd >= 0);
    ASSERT(run_until(loop, &srv.opened, 2000));
    ASSERT(read(fd, b, sizeof b) > 0);  /* the 101 */
    fcntl(fd, F_SETFL, O_NONBLOCK);
    frame[0] = 0x82;                    /* binary, 16 KiB, masked with a zero key */
    frame[1] = 0x80 | 126;
    frame[2] = 0x40;
    frame[3] = 0;
    memset(frame + 4, 0, sizeof frame - 4);
    for (i = 0; i < 20000 && !blocked; i++) {
        size_t off = 0;
        while (off < sizeof frame) {
            ssize_t n = write(fd, frame + off, sizeof frame - off);
            if (n > 0) {
                off += (size_t)n;
                continue;
            }
            (void)wsch_posix_loop_run_once(loop, 5);
            if (++blocked > 200) break;     /* the server stopped reading: we are blocked for good */
        }
        if (off == sizeof frame) {
            sent++;
            if (blocked <= 200) blocked = 0;
        }
        (void)wsch_posix_loop_run_once(loop, 0);
        if (srv.conn && wsch_conn_queued_bytes(srv.conn) > max_queued) max_queued = wsch_conn_queued_bytes(srv.conn);
    }
    ASSERT(blocked > 200);              /* backpressure reached us */
    ASSERT(max_queued >= 64u * 1024u);
    /* bounded: the pause mark plus the echoes of one turn's reads */
    ASSERT(max_queued <= 64u * 1024u + WSCH_POSIX_READS_PER_EVENT * WSCH_POSIX_DEFAULT_READ_BUFFER * 2u);
    ASSERT_EQ(0, srv.closed);           /* paused, not dropped */
    wsch_posix_loop_destroy(loop);
    close(fd);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* A hub behind the transport: a client through it subscribes; then the hub
   is destroyed while another socket is still in the transport's handshake. */
TEST hub_over_transport(void) {
    int fds0 = count_fds();
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l = NULL;
    wsch_posix_listen_desc ld;
    wsch_posix_transport tr;
    wsch_posix_client_opts o;
    wsch_hub_desc hd;
    wsch_client_desc d;
    toy_stats st;
    hubctx h;
    app sub;
    char url[64];
    int raw;
    ASSERT(loop);
    memset(&st, 0, sizeof st);
    memset(&h, 0, sizeof h);
    memset(&sub, 0, sizeof sub);
    tr = toy_transport(&st);        /* no shutdown: optional */
    hd = hub_desc(&h);
    ASSERT_EQ(WSCH_OK, wsch_posix_hub_create(loop, &hd, &h.hub));
    memset(&ld, 0, sizeof ld);
    ld.transport = &tr;
    ASSERT_EQ(WSCH_OK, wsch_posix_listen(loop, &ld, &l));
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_hub(l, h.hub));
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(l));
    d = client_desc(&sub, url);
    d.token = "secret";
    memset(&o, 0, sizeof o);
    o.transport = &tr;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, &o, &sub.client));
    ASSERT_EQ(WSCH_OK, wsch_client_on(sub.client, "subscribed", sub_subscribed, &sub, NULL));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(sub.client, "news"));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(sub.client));
    ASSERT(run_until(loop, &sub.user_seen, 3000));
    ASSERT_EQ(1, h.connects);
    raw = raw_ws_client(wsch_posix_listener_port(l));  /* never says HELO */
    ASSERT(raw >= 0);
    (void)wsch_posix_loop_run_once(loop, 20);
    (void)wsch_posix_loop_run_once(loop, 20);
    ASSERT_EQ(3, st.opens);         /* the client, its peer, the raw one */
    wsch_posix_hub_destroy(loop, h.hub);
    ASSERT_EQ(4, (int)write(raw, "HELO", 4));     /* too late: its socket went with the hub */
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 20));
    {
        char b[64];
        ssize_t n;
        while ((n = read(raw, b, sizeof b)) > 0) {
        }
        ASSERT(n <= 0);             /* EOF or reset, never served */
    }
    ASSERT_EQ(0, (int)wsch_posix_loop_sockets(loop) - (wsch_client_conn(sub.client) ? 1 : 0));
    wsch_posix_client_destroy(sub.client);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(st.opens, st.closes);
    close(raw);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    ASSERT_EQ(fds0, count_fds());
    PASS();
}

/* ---- allocation failures ----------------------------------------------- */

static void burst_of_five(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    int i;
    (void)loop;
    (void)t;
    for (i = 0; i < 5; i++) (void)wsch_hub_broadcast((wsch_hub *)user, "news", "news", "{\"text\":\"hi\"}", WSCH_CSTR, NULL);
}

/* Five broadcasts in one turn leave in one write per peer, at the end of
   that turn (without gathering: one write per message). */
TEST hub_turn_is_one_write_per_peer(void) {
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l;
    wsch_posix_timer t;
    wsch_posix_counters k0, k1;
    wsch_hub_counters hk0, hk1;
    wsch_hub_desc hd;
    wsch_client_desc d;
    hubctx h;
    app sub[3];
    char url[64];
    int i, all;
    ASSERT(loop);
    memset(&h, 0, sizeof h);
    hd = hub_desc(&h);
    ASSERT_EQ(WSCH_OK, wsch_posix_hub_create(loop, &hd, &h.hub));
    l = mk_listener(loop, "127.0.0.1");
    ASSERT(l);
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_hub(l, h.hub));
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(l));
    for (i = 0; i < 3; i++) {
        memset(&sub[i], 0, sizeof sub[i]);
        d = client_desc(&sub[i], url);
        d.token = "secret";
        ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, NULL, &sub[i].client));
        ASSERT_EQ(WSCH_OK, wsch_client_on(sub[i].client, "news", sub_news, &sub[i], NULL));
        ASSERT_EQ(WSCH_OK, wsch_client_on(sub[i].client, "subscribed", sub_subscribed, &sub[i], NULL));
        ASSERT_EQ(WSCH_OK, wsch_client_subscribe(sub[i].client, "news"));
        ASSERT_EQ(WSCH_OK, wsch_client_connect(sub[i].client));
        ASSERT(run_until(loop, &sub[i].user_seen, 3000));
    }
    for (i = 0; i < 5; i++) (void)wsch_posix_loop_run_once(loop, 10);    /* quiet */
    wsch_posix_timer_init(&t, burst_of_five, h.hub);
    ASSERT_EQ(WSCH_OK, wsch_posix_timer_start(loop, &t, 0));
    wsch_posix_loop_counters(loop, &k0);
    wsch_hub_stats(h.hub, &hk0);
    ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 100));              /* the timer's turn */
    wsch_posix_loop_counters(loop, &k1);
    ASSERT_EQ(g_no_gather ? 15 : 3, (int)(k1.writes - k0.writes));        /* all of it written in that turn */
    ASSERT_EQ(0, (int)(k1.gathered - k0.gathered));                       /* by the hub: no copy */
    wsch_hub_stats(h.hub, &hk1);
    ASSERT_EQ(g_no_gather ? 0 : 3, (int)(hk1.flushed_peers - hk0.flushed_peers));
    {
        uint64_t end = wsch_posix_now_ms(NULL) + 3000;
        do {
            ASSERT_EQ(WSCH_OK, wsch_posix_loop_run_once(loop, 10));
            for (all = 1, i = 0; i < 3; i++) all &= sub[i].got == 5;
        } while (!all && wsch_posix_now_ms(NULL) < end);
    }
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(5, sub[i].got);
        ASSERT_EQ(0, sub[i].errors);
        wsch_posix_client_destroy(sub[i].client);
    }
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    PASS();
}

/* A hub peer over a transport that holds the loop to its word: after a
   WANT_WRITE the same bytes come again, first (OpenSSL's rule), even when
   the library drops that peer's backlog as a slow consumer before its
   close frame. */
TEST transport_retry_survives_a_dropped_backlog(void) {
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_listener *l = NULL;
    wsch_posix_listen_desc ld;
    wsch_posix_transport tr;
    wsch_posix_client_opts o;
    wsch_hub_desc hd;
    wsch_client_desc d;
    wsch_hub_counters hc;
    toy_stats st;
    hubctx h;
    app sub;
    char url[64], *payload;
    size_t plen = 30000;
    int i;
    ASSERT(loop);
    memset(&st, 0, sizeof st);
    memset(&h, 0, sizeof h);
    memset(&sub, 0, sizeof sub);
    tr = toy_transport(&st);
    hd = hub_desc(&h);
    hd.limits.max_outbound_bytes = 1024u * 1024u;
    ASSERT_EQ(WSCH_OK, wsch_posix_hub_create(loop, &hd, &h.hub));
    memset(&ld, 0, sizeof ld);
    ld.transport = &tr;
    ASSERT_EQ(WSCH_OK, wsch_posix_listen(loop, &ld, &l));
    ASSERT_EQ(WSCH_OK, wsch_posix_serve_hub(l, h.hub));
    url_for(url, sizeof url, "127.0.0.1", wsch_posix_listener_port(l));
    d = client_desc(&sub, url);
    d.token = "secret";
    memset(&o, 0, sizeof o);
    o.transport = &tr;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, &o, &sub.client));
    ASSERT_EQ(WSCH_OK, wsch_client_on(sub.client, "subscribed", sub_subscribed, &sub, NULL));
    ASSERT_EQ(WSCH_OK, wsch_client_subscribe(sub.client, "news"));
    ASSERT_EQ(WSCH_OK, wsch_client_connect(sub.client));
    ASSERT(run_until(loop, &sub.user_seen, 3000));
    payload = (char *)malloc(plen);
    ASSERT(payload);
    memset(payload, 'x', plen);
    payload[0] = payload[plen - 1] = '"';
    st.server_full = 1;             /* the subscriber's peer cannot write: its output piles up */
    for (i = 0; i < 4000; i++) {
        wsch_hub_stats(h.hub, &hc);
        if (hc.drops[WSCH_HUB_DROP_SLOW_CONSUMER]) break;
        (void)wsch_hub_broadcast(h.hub, "news", "big", payload, plen, NULL);
        (void)wsch_posix_loop_run_once(loop, 0);
        (void)wsch_posix_loop_run_once(loop, 0);
    }
    free(payload);
    ASSERT_EQ(1, (int)hc.drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    for (i = 0; i < 50; i++) (void)wsch_posix_loop_run_once(loop, 5);   /* the close frame's turns */
    wsch_posix_client_destroy(sub.client);
    for (i = 0; i < 50 && st.closes < st.opens; i++) (void)wsch_posix_loop_run_once(loop, 5);
    ASSERT(st.retries > 0);         /* the transport did say WANT_WRITE, and was offered them again */
    ASSERT_EQ(0, st.bad_retries);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(st.opens, st.closes);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    PASS();
}

TEST wss_needs_a_transport(void) {
    wsch_posix_loop *loop = mk_loop();
    wsch_posix_transport tr;
    wsch_posix_client_opts o;
    wsch_client_desc d;
    wsch_client *c = NULL;
    app a;
    ASSERT(loop);
    memset(&a, 0, sizeof a);
    tr = toy_transport(NULL);
    d = client_desc(&a, "wss://127.0.0.1:9/");
    ASSERT_EQ(WSCH_ERR_ARG, wsch_posix_client_create(loop, &d, NULL, &c));   /* it would go out in clear text */
    ASSERT(c == NULL);
    memset(&o, 0, sizeof o);
    o.transport = &tr;
    ASSERT_EQ(WSCH_OK, wsch_posix_client_create(loop, &d, &o, &c));
    wsch_posix_client_destroy(c);
    wsch_posix_loop_destroy(loop);
    ASSERT_EQ(0, (int)g_alloc.live_blocks);
    PASS();
}

TEST loop_create_nomem(void) {
    size_t k;
    for (k = 1; k <= 3; k++) {
        wsch_posix_loop_desc d;
        wsch_posix_loop *loop = NULL;
        int rc;
        memset(&d, 0, sizeof d);
        memset(&g_alloc, 0, sizeof g_alloc);
        g_alloc.fail_at = k;
        d.backend = g_backend;
        d.allocator = alloc_counter_allocator(&g_alloc);
        rc = wsch_posix_loop_create(&d, &loop);
        if (rc == WSCH_OK) {
            wsch_posix_loop_destroy(loop);
        } else {
            ASSERT_EQ(WSCH_ERR_NOMEM, rc);
            ASSERT(loop == NULL);
        }
        ASSERT_EQ(0, (int)g_alloc.live_blocks);
    }
    memset(&g_alloc, 0, sizeof g_alloc);
    PASS();
}

static void reset_alloc(void *unused) {
    (void)unused;
    memset(&g_alloc, 0, sizeof g_alloc);
}

SUITE(posix) {
    SET_SETUP(reset_alloc, NULL);
    RUN_TEST(timers_ordering);
    RUN_TEST(timers_cancel_and_rearm);
    RUN_TEST(timers_many);
    RUN_TEST(timers_limit);
    RUN_TEST(stop_and_run);
    RUN_TEST(timers_reserved_for_connections);
    RUN_TEST(watch_fds);
    RUN_TEST(echo_end_to_end);
    RUN_TEST(partial_writes);
    RUN_TEST(connect_refused);
    RUN_TEST(connect_timeout);
    RUN_TEST(ipv6_and_given_address);
    RUN_TEST(client_resolver);
    RUN_TEST(send_error_is_reported);
    RUN_TEST(reset_while_reading);
    RUN_TEST(hub_end_to_end);
    RUN_TEST(conn_handshake_timeout);
    RUN_TEST(hub_idle_timeout);
    RUN_TEST(client_heartbeat);
    RUN_TEST(gather_keeps_order);
    RUN_TEST(shutdown_hub_by_signal);
    RUN_TEST(shutdown_client_and_conns);
    RUN_TEST(shutdown_served_conns);
    RUN_TEST(transport_hook);
    RUN_TEST(hub_over_transport);
    RUN_TEST(transport_retry_survives_a_dropped_backlog);
    RUN_TEST(hub_turn_is_one_write_per_peer);
    RUN_TEST(wss_needs_a_transport);
    RUN_TEST(destroy_busy_loop);
    RUN_TEST(max_fds);
    RUN_TEST(read_pause);
    RUN_TEST(loop_create_nomem);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    static const wsch_posix_backend backends[] = {WSCH_POSIX_BACKEND_POLL, WSCH_POSIX_BACKEND_AUTO};
    size_t b;
    GREATEST_MAIN_BEGIN();
    for (b = 0; b < sizeof backends / sizeof backends[0]; b++) {
        g_backend = wsch_posix_loop_desc_defaults(NULL).backend;
        if (backends[b] != WSCH_POSIX_BACKEND_AUTO) g_backend = backends[b];
        else if (g_backend == WSCH_POSIX_BACKEND_POLL) continue;    /* no other backend here */
        printf("* backend %s\n", g_backend == WSCH_POSIX_BACKEND_EPOLL    ? "epoll"
                                 : g_backend == WSCH_POSIX_BACKEND_KQUEUE ? "kqueue"
                                                                          : "poll");
        RUN_SUITE(posix);
    }
    /* Once more without gathered writes: every send written at once. */
    g_backend = wsch_posix_loop_desc_defaults(NULL).backend;
    g_no_gather = 1;
    printf("* backend %s, no gathering\n", g_backend == WSCH_POSIX_BACKEND_EPOLL ? "epoll" : "default");
    RUN_SUITE(posix);
    GREATEST_MAIN_END();
}
