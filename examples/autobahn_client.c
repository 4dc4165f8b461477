/* autobahn_client - the client side of the Autobahn TestSuite, on poll().

   Shows wsch_conn in the client role on a real socket, one connection at a
   time, and speaks the suite's fuzzing-server protocol:
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
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include "example_net.h"

#define CONNECT_TIMEOUT_MS 5000
/* The 16 MiB cases take seconds, the compression cases (12, 13: 1,000
   echoes of up to 128 KiB) longer; the suite gives a case at most 480 s.
   A stuck case must not hang us. */
#define SESSION_TIMEOUT_MS 500000u
#define MAX_MESSAGE        (64u * 1024u * 1024u)

typedef struct session {
    int echo;               /* echo messages back (the test cases) */
    int deflate;            /* offer permessage-deflate: 0 no, 1 yes, 2 with client_no_context_takeover */
    long number;            /* the first text message as a number (the case count), -1 before */
    int close_code;         /* what on_close reported */
    unsigned char buf[256u * 1024u];
} session;

static void on_message(wsch_conn *c, wsch_opcode opcode, void *data, size_t len, void *user) {
    session *s = (session *)((net_ws *)user)->app;
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
    session *s = (session *)((net_ws *)user)->app;
    (void)c;
    (void)reason;
    (void)reason_len;
    s->close_code = code;
}

/* One WebSocket connection from connect to the end of TCP. Returns 0 when it
   ran to its end, -1 when it could not be made or timed out. */
static int run_session(session *s, const char *host, uint16_t port, const char *path, const char *query) {
    wsch_conn_desc d;
    net_timers timers;
    net_ws w;
    uint64_t deadline = net_now_ms() + SESSION_TIMEOUT_MS;
    int rc, result = 0;
    int fd = net_connect_wait(host, port, CONNECT_TIMEOUT_MS);
    if (fd < 0) {
        fprintf(stderr, "autobahn_client: connect %s:%u: %s\n", host, (unsigned)port, strerror(errno));
        return -1;
    }
    memset(&timers, 0, sizeof timers);
    net_ws_init(&w, fd, &timers, WSCH_ROLE_CLIENT);
    w.app = s;
    s->close_code = 0;

    memset(&d, 0, sizeof d);
    d.role = WSCH_ROLE_CLIENT;
    d.request.host = host;
    d.request.port = port;
    d.request.path = path;
    d.request.query = query;
    d.limits.max_message_size = MAX_MESSAGE;
    d.limits.max_frame_size = MAX_MESSAGE;
    d.limits.max_outbound_bytes = 2u * MAX_MESSAGE;
    net_ws_desc(&d);
    if (s->deflate) {
        d.deflate.codec = net_deflate_codec();
        d.deflate.client_no_context_takeover = (uint8_t)(s->deflate == 2);
    }
    d.on_message = on_message;
    d.on_close = on_closed;
    rc = wsch_conn_create(&d, &w, &w.conn);     /* sends the opening request */
    if (rc != WSCH_OK) {
        fprintf(stderr, "autobahn_client: wsch_conn_create: %s\n", wsch_err_str(rc));
        close(fd);
        return -1;
    }

    for (;;) {
        struct pollfd p;
        net_timer *tm;
        uint64_t now;
        unsigned want = net_ws_update(&w);
        if (net_ws_finished(&w) || net_stop_requested) break;
        now = net_now_ms();
        if (now >= deadline) {
            fprintf(stderr, "autobahn_client: %s?%s timed out\n", path, query ? query : "");
            result = -1;
            break;
        }
        p.fd = fd;
        p.events = (short)want;
        p.revents = 0;
        if (poll(&p, 1, net_timers_timeout(&timers, (int)(deadline - now))) > 0) {
            if (p.revents & POLLOUT) net_ws_writable(&w);
            if (p.revents & (POLLIN | POLLHUP | POLLERR)) net_ws_readable(&w, s->buf, sizeof s->buf);
        }
        now = net_now_ms();
        while ((tm = net_timers_pop_due(&timers, now)) != NULL) net_ws_timer_fired(&w, tm->id);
    }
    net_ws_release(&w);
    net_timers_free(&timers);
    return result;
}

int main(int argc, char **argv) {
    static session sess;    /* static: it holds the read buffer */
    const char *url = "ws://127.0.0.1:9001";
    const char *agent = "ws_channel";
    char host[256], agent_enc[256], query[512];
    size_t agent_len;
    wsch_url u;
    long cases, n;
    int i, failures = 0, deflate = 0;

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
    if (deflate && !net_deflate_codec()) {
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
    net_stop_on_signals();

    sess.deflate = deflate;
    sess.echo = 0;
    sess.number = -1;
    if (run_session(&sess, host, u.port, "/getCaseCount", NULL) != 0 || sess.number < 0) {
        fputs("autobahn_client: could not get the case count\n", stderr);
        return 1;
    }
    cases = sess.number;
    printf("autobahn_client: %ld cases\n", cases);
    fflush(stdout);

    sess.echo = 1;
    for (n = 1; n <= cases && !net_stop_requested; n++) {
        snprintf(query, sizeof query, "case=%ld&agent=%s", n, agent_enc);
        if (run_session(&sess, host, u.port, "/runCase", query) != 0) failures++;
        printf("case %ld/%ld: close %d\n", n, cases, sess.close_code);
        fflush(stdout);
    }

    sess.echo = 0;
    snprintf(query, sizeof query, "agent=%s", agent_enc);
    if (run_session(&sess, host, u.port, "/updateReports", query) != 0) failures++;
    printf("autobahn_client: done, %d connection failures\n", failures);
    return failures ? 1 : 0;
}
