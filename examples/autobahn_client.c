/* autobahn_client - the client side of the Autobahn TestSuite, on the
   header's POSIX loop.

   Shows wsch_conn in the client role on a real socket, one connection at a
   time: the socket is a descriptor of ours on the loop (the layer connects
   wsch_clients itself, not a bare conn), whose timers, clock and
   randomness are the loop's. It speaks the suite's fuzzing-server protocol:
     GET /getCaseCount                    -> one text message: the number of cases
     GET /runCase?case=N&agent=NAME       -> echo every message until the server closes
     GET /updateReports?agent=NAME        -> the server writes its reports
   Start the suite's fuzzingserver (tests/autobahn/fuzzingserver.json), e.g.
     docker run --rm --network host -v "$PWD/tests/autobahn:/config" -v "$PWD/build/autobahn:/reports" \
         crossbario/autobahn-testsuite wstest -m fuzzingserver -s /config/fuzzingserver.json
   then run this; the reports land in build/autobahn/clients.

   --deflate offers permessage-deflate (RFC 7692) on every connection, for
   the suite's sections 12 and 13, through the zlib codec of
   examples/deflate_zlib.h (a build with zlib: the Makefile adds
   -DEXAMPLE_ZLIB -lz when zlib is installed); the offer is the library's
   default, "permessage-deflate; client_max_window_bits", and every echo of
   64 bytes or more goes compressed. --deflate-no-takeover offers
   client_no_context_takeover as well (each message compressed alone): the
   suite asks a client for it only when offered, so cases 13.2, 13.5 and
   13.6 are run only with it; run the suite once with each, under two
   --agent names. When the suite's server asks for client_max_window_bits=8
   (cases 13.3 and 13.5), zlib cannot compress with that window (see
   examples/deflate_zlib.h): the compressed send fails and the echo goes
   uncompressed instead (RSV1 clear), which RFC 7692 allows on any
   connection.

   Build:  cc -std=c99 -O2 -D_GNU_SOURCE -DEXAMPLE_ZLIB -I. -o build/autobahn_client examples/autobahn_client.c -lz
           (without -DEXAMPLE_ZLIB and -lz: no --deflate)
   Run:    build/autobahn_client --url ws://127.0.0.1:9001 --agent ws_channel [--deflate] */
#define WS_CHANNEL_POSIX
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#define DEFLATE_ZLIB_OPTIONAL
#include "deflate_zlib.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_S 5
/* The 16 MiB cases take seconds, the compression cases (12, 13: 1,000
   echoes of up to 128 KiB) longer; the suite gives a case at most 480 s.
   A stuck case must not hang us. */
#define SESSION_TIMEOUT_MS 500000u
#define MAX_MESSAGE        (64u * 1024u * 1024u)
#define CONN_TIMERS        4u       /* the library's timer ids 0..3 (a wsch_conn arms 1 and 2) */

typedef struct session {
    wsch_posix_loop *loop;
    int echo;               /* echo messages back (the test cases) */
    int deflate;            /* offer permessage-deflate: 0 no, 1 yes, 2 with client_no_context_takeover */
    long number;            /* the first text message as a number (the case count), -1 before */
    int close_code;         /* what on_close reported */
    /* one connection */
    int fd;                 /* -1 once the library has closed it */
    wsch_conn *conn;
    wsch_posix_watch *watch;
    wsch_posix_timer timer[CONN_TIMERS], deadline;
    int timed_out;
    int running;            /* inside wsch_posix_loop_run: close() stops it */
    unsigned char buf[256u * 1024u];
} session;

static void on_message(wsch_conn *c, wsch_opcode opcode, void *data, size_t len, void *user) {
    session *s = (session *)user;
    if (s->echo) {
        (void)wsch_conn_send(c, opcode, data, len);     /* a failure has already failed the connection */
    } else if (opcode == WSCH_OP_TEXT && s->number < 0) {
        const char *p = (const char *)data;
        size_t i;
        s->number = 0;
        for (i = 0; i < len && p[i] >= '0' && p[i] <= '9' && s->number < 1000000; i++)
            s->number = s->number * 10 + (p[i] - '0');
    }
}

static void on_closed(wsch_conn *c, int code, const char *reason, size_t reason_len, void *user) {
    session *s = (session *)user;
    (void)c;
    (void)reason;
    (void)reason_len;
    s->close_code = code;
}

/* ---- the conn's effects on our socket ------------------------------------ */

static size_t fx_send(const void *data, size_t len, void *user) {
    session *s = (session *)user;
    ssize_t n;
    do n = send(s->fd, data, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0) return (size_t)n;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : WSCH_SEND_ERROR;  /* the rest waits in the conn's queue */
}

/* The library's last word about the connection: the socket goes, and the
   loop returns to run_session. */
static void fx_close(void *user) {
    session *s = (session *)user;
    unsigned k;
    for (k = 0; k < CONN_TIMERS; k++) wsch_posix_timer_stop(s->loop, &s->timer[k]);
    wsch_posix_watch_remove(s->watch);
    close(s->fd);
    s->fd = -1;
    if (s->running) wsch_posix_loop_stop(s->loop);   /* a stop outside run would end the next one at once */
}

static void fx_timer_set(unsigned id, uint32_t delay_ms, void *user) {
    session *s = (session *)user;
    if (id >= CONN_TIMERS || wsch_posix_timer_start(s->loop, &s->timer[id], delay_ms) != WSCH_OK)
        fprintf(stderr, "autobahn_client: cannot arm timer %u\n", id);
}

static void fx_timer_cancel(unsigned id, void *user) {
    session *s = (session *)user;
    if (id < CONN_TIMERS) wsch_posix_timer_stop(s->loop, &s->timer[id]);
}

static void timer_fired(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    session *s = (session *)user;
    (void)loop;
    wsch_conn_timer_fired(s->conn, (unsigned)(t - s->timer));
}

static void session_expired(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    (void)t;
    ((session *)user)->timed_out = 1;
    wsch_posix_loop_stop(loop);
}

/* The socket's readiness: read and feed (at most 8 reads, so timers get a
   turn), write what waits, then wait for what the conn wants next. */
static void on_socket(wsch_posix_loop *loop, wsch_posix_watch *w, int fd, unsigned events, void *user) {
    session *s = (session *)user;
    unsigned want;
    int i;
    (void)loop;
    if (events & WSCH_POSIX_WRITE) (void)wsch_conn_writable(s->conn);
    for (i = 0; i < 8 && s->fd >= 0 && (events & (WSCH_POSIX_READ | WSCH_POSIX_HANGUP)); i++) {
        ssize_t n = recv(fd, s->buf, sizeof s->buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0) {           /* EOF or error: on_close, then close() */
            wsch_conn_transport_closed(s->conn);
            break;
        }
        (void)wsch_conn_feed(s->conn, s->buf, (size_t)n);  /* an error already became a close frame */
        if ((size_t)n < sizeof s->buf) break;   /* a short read drained the socket */
    }
    if (s->fd < 0) return;      /* closed: w is gone */
    want = wsch_conn_want(s->conn);
    (void)wsch_posix_watch_set(w, (want & WSCH_WANT_READ ? (unsigned)WSCH_POSIX_READ : 0u) |
                                      (want & WSCH_WANT_WRITE ? (unsigned)WSCH_POSIX_WRITE : 0u));
}

/* A blocking connect, bounded by CONNECT_TIMEOUT_S (the bound a connect
   takes from SO_SNDTIMEO on Linux), then non-blocking. -1 with errno set. */
static int connect_to(const char *host, uint16_t port) {
    struct addrinfo hints, *res, *ai;
    struct timeval tv;
    char service[8];
    int fd = -1, one = 1, e = EHOSTUNREACH;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(service, sizeof service, "%u", (unsigned)port);
    if (getaddrinfo(host, service, &hints, &res) != 0) {
        errno = EHOSTUNREACH;
        return -1;
    }
    tv.tv_sec = CONNECT_TIMEOUT_S;
    tv.tv_usec = 0;
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM, 0);
        if (fd < 0) continue;
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        errno = e;
        return -1;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  /* many small echoes */
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
    return fd;
}

/* One WebSocket connection from connect to the end of TCP. Returns 0 when it
   ran to its end, -1 when it could not be made or timed out, 1 when a
   signal asked us to stop. */
static int run_session(session *s, const char *host, uint16_t port, const char *path, const char *query) {
    wsch_conn_desc d;
    unsigned k;
    int rc, result = 0;
    s->fd = connect_to(host, port);
    if (s->fd < 0) {
        fprintf(stderr, "autobahn_client: connect %s:%u: %s\n", host, (unsigned)port, strerror(errno));
        return -1;
    }
    s->close_code = 0;
    s->timed_out = 0;
    for (k = 0; k < CONN_TIMERS; k++) wsch_posix_timer_init(&s->timer[k], timer_fired, s);
    wsch_posix_timer_init(&s->deadline, session_expired, s);
    if (wsch_posix_watch_add(s->loop, s->fd, WSCH_POSIX_READ | WSCH_POSIX_WRITE, on_socket, s, &s->watch) != WSCH_OK ||
        wsch_posix_timer_start(s->loop, &s->deadline, SESSION_TIMEOUT_MS) != WSCH_OK) {
        fputs("autobahn_client: the loop refused the socket\n", stderr);
        close(s->fd);
        return -1;
    }

    memset(&d, 0, sizeof d);
    d.role = WSCH_ROLE_CLIENT;
    d.request.host = host;
    d.request.port = port;
    d.request.path = path;
    d.request.query = query;
    d.limits.max_message_size = MAX_MESSAGE;
    d.limits.max_frame_size = MAX_MESSAGE;
    d.limits.max_outbound_bytes = 2u * MAX_MESSAGE;
    d.effects.send = fx_send;
    d.effects.close = fx_close;
    d.effects.timer_set = fx_timer_set;
    d.effects.timer_cancel = fx_timer_cancel;
    d.effects.now_ms = wsch_posix_now_ms;
    d.effects.random_bytes = wsch_posix_random_bytes;
    if (s->deflate) {
        d.deflate.codec = deflate_zlib_codec();
        d.deflate.client_no_context_takeover = (uint8_t)(s->deflate == 2);
    }
    d.on_message = on_message;
    d.on_close = on_closed;
    rc = wsch_conn_create(&d, s, &s->conn);     /* sends the opening request */
    if (rc != WSCH_OK) {
        fprintf(stderr, "autobahn_client: wsch_conn_create: %s\n", wsch_err_str(rc));
        wsch_posix_watch_remove(s->watch);
        close(s->fd);
        s->fd = -1;
    } else {
        s->running = s->fd >= 0;    /* else close() has already run (the request could not be sent) */
        if (s->running) (void)wsch_posix_loop_run(s->loop);    /* until close(), the deadline or a signal */
        s->running = 0;
        if (s->timed_out) {
            fprintf(stderr, "autobahn_client: %s?%s timed out\n", path, query ? query : "");
            result = -1;
        } else if (s->fd >= 0) {
            result = 1;         /* SIGINT/SIGTERM */
        }
        wsch_conn_transport_closed(s->conn);   /* one still running ends as a lost transport */
        wsch_conn_destroy(s->conn);
    }
    s->conn = NULL;
    wsch_posix_timer_stop(s->loop, &s->deadline);
    return rc == WSCH_OK ? result : -1;
}

int main(int argc, char **argv) {
    static session sess;    /* static: it holds the read buffer */
    const char *url = "ws://127.0.0.1:9001";
    const char *agent = "ws_channel";
    char host[256], agent_enc[256], query[512];
    size_t agent_len;
    wsch_url u;
    long cases, n;
    int i, rc, failures = 0, deflate = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--url") == 0 && i + 1 < argc) url = argv[++i];
        else if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc) agent = argv[++i];
        else if (strcmp(argv[i], "--deflate") == 0) deflate = deflate ? deflate : 1;
        else if (strcmp(argv[i], "--deflate-no-takeover") == 0) deflate = 2;
        else {
            fputs("usage: autobahn_client [--url ws://127.0.0.1:9001] [--agent ws_channel]\n"
                  "                       [--deflate | --deflate-no-takeover]   (permessage-deflate; a build with zlib)\n",
                  stderr);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (deflate && !deflate_zlib_codec()) {
        fputs("autobahn_client: --deflate needs a build with zlib (-DEXAMPLE_ZLIB ... -lz; the Makefile adds both "
              "when zlib1g-dev is installed)\n",
              stderr);
        return 2;
    }
    if (wsch_url_parse(url, strlen(url), &u) != WSCH_OK || u.secure || u.host.len >= sizeof host) {
        fprintf(stderr, "autobahn_client: bad or unsupported url: %s\n", url);
        return 2;
    }
    memcpy(host, u.host.ptr, u.host.len);
    host[u.host.len] = '\0';
    if (wsch_percent_encode(agent, strlen(agent), agent_enc, sizeof agent_enc, &agent_len) != WSCH_OK) {
        fputs("autobahn_client: agent name too long\n", stderr);
        return 2;
    }
    if (wsch_posix_loop_create(NULL, &sess.loop) != WSCH_OK) {
        fputs("autobahn_client: no event loop\n", stderr);
        return 1;
    }
    (void)wsch_posix_handle_signals(sess.loop);     /* SIGINT/SIGTERM: the run in progress returns */

    sess.deflate = deflate;
    sess.echo = 0;
    sess.number = -1;
    if (run_session(&sess, host, u.port, "/getCaseCount", NULL) != 0 || sess.number < 0) {
        fputs("autobahn_client: could not get the case count\n", stderr);
        wsch_posix_loop_destroy(sess.loop);
        return 1;
    }
    cases = sess.number;
    printf("autobahn_client: %ld cases\n", cases);
    fflush(stdout);

    sess.echo = 1;
    for (n = 1, rc = 0; n <= cases && rc != 1; n++) {
        snprintf(query, sizeof query, "case=%ld&agent=%s", n, agent_enc);
        rc = run_session(&sess, host, u.port, "/runCase", query);
        if (rc < 0) failures++;
        printf("case %ld/%ld: close %d\n", n, cases, sess.close_code);
        fflush(stdout);
    }

    sess.echo = 0;
    snprintf(query, sizeof query, "agent=%s", agent_enc);
    if (rc != 1 && run_session(&sess, host, u.port, "/updateReports", query) != 0) failures++;
    if (rc == 1) printf("autobahn_client: interrupted, %d connection failures before\n", failures);
    else printf("autobahn_client: done, %d connection failures\n", failures);
    wsch_posix_loop_destroy(sess.loop);
    return failures || rc == 1 ? 1 : 0;
}
