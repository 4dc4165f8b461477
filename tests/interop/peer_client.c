/* peer_client - the library's client role, driven by an independent server.

   Connects to --url, echoes every message back, and obeys text messages that
   start with "cmd:" so the server under test can make it do the rest:
     cmd:close CODE REASON   start the closing handshake with that code
     cmd:ping PAYLOAD        send a ping; the pong's payload comes back as
                             the binary message "pong:PAYLOAD"
     cmd:frag A|B|C          send one text message as fragments A, B, C
     cmd:big N [K]           send N bytes (byte i = i % 251) as one binary
                             message, in frames of K bytes when K is given
   Prints one line per event (open, message, pong, close CODE REASON, end),
   which the interop scripts check. Exits 0 when the connection ran to its
   close, 1 on a connect failure or the --timeout-ms deadline.

   Build: cc -std=c99 -O2 -D_GNU_SOURCE -I. -o build/peer_client tests/interop/peer_client.c */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include "net_util.h"

#define MAX_MESSAGE (64u * 1024u * 1024u)

typedef struct peer {
    int closed;
    unsigned char buf[256u * 1024u];
} peer;

static void send_pattern(wsch_conn *c, size_t n, size_t frame) {
    unsigned char *p = (unsigned char *)malloc(n ? n : 1);
    size_t i, off = 0;
    int rc = WSCH_OK;
    if (!p) {
        printf("error no memory for %zu bytes\n", n);
        return;
    }
    for (i = 0; i < n; i++) p[i] = (unsigned char)(i % 251u);
    if (frame == 0 || frame >= n) {
        rc = wsch_conn_send(c, WSCH_OP_BINARY, p, n);
    } else {
        while (rc == WSCH_OK && off < n) {
            size_t len = n - off < frame ? n - off : frame;
            rc = wsch_conn_send_frame(c, off ? WSCH_OP_CONTINUATION : WSCH_OP_BINARY, off + len == n, p + off, len);
            off += len;
        }
    }
    if (rc != WSCH_OK) printf("error send: %s\n", wsch_err_str(rc));
    free(p);
}

static void run_command(wsch_conn *c, const char *cmd) {
    int rc = WSCH_OK;
    if (strncmp(cmd, "close ", 6) == 0) {
        char *end;
        unsigned long code = strtoul(cmd + 6, &end, 10);
        const char *reason = *end == ' ' ? end + 1 : end;
        rc = wsch_conn_close(c, (uint16_t)code, reason, strlen(reason));
    } else if (strncmp(cmd, "ping ", 5) == 0) {
        rc = wsch_conn_ping(c, cmd + 5, strlen(cmd + 5));
    } else if (strncmp(cmd, "frag ", 5) == 0) {
        const char *p = cmd + 5;
        int first = 1;
        for (;;) {
            const char *bar = strchr(p, '|');
            size_t len = bar ? (size_t)(bar - p) : strlen(p);
            rc = wsch_conn_send_frame(c, first ? WSCH_OP_TEXT : WSCH_OP_CONTINUATION, bar == NULL, p, len);
            if (rc != WSCH_OK || !bar) break;
            first = 0;
            p = bar + 1;
        }
    } else if (strncmp(cmd, "big ", 4) == 0) {
        char *end;
        size_t n = (size_t)strtoul(cmd + 4, &end, 10);
        size_t k = (size_t)strtoul(end, NULL, 10);
        send_pattern(c, n, k);
    } else {
        printf("error unknown command %s\n", cmd);
    }
    if (rc != WSCH_OK) printf("error %s: %s\n", cmd, wsch_err_str(rc));
}

static void on_open(wsch_conn *c, void *user) {
    (void)c;
    (void)user;
    printf("open\n");
}

static void on_message(wsch_conn *c, wsch_opcode opcode, void *data, size_t len, void *user) {
    int rc;
    (void)user;
    printf("message %s %zu\n", opcode == WSCH_OP_TEXT ? "text" : "binary", len);
    if (opcode == WSCH_OP_TEXT && len >= 4 && len < 4096 && memcmp(data, "cmd:", 4) == 0) {
        char cmd[4096];
        memcpy(cmd, (const char *)data + 4, len - 4);
        cmd[len - 4] = '\0';
        run_command(c, cmd);
        return;
    }
    rc = wsch_conn_send(c, opcode, data, len);
    if (rc != WSCH_OK) printf("error echo: %s\n", wsch_err_str(rc));
}

static void on_pong(wsch_conn *c, const void *data, size_t len, void *user) {
    char msg[5 + WSCH_CONTROL_PAYLOAD_MAX];
    (void)user;
    printf("pong %zu\n", len);
    if (len > WSCH_CONTROL_PAYLOAD_MAX) return;
    memcpy(msg, "pong:", 5);
    memcpy(msg + 5, data, len);
    (void)wsch_conn_send(c, WSCH_OP_BINARY, msg, 5 + len);  /* binary: a pong payload need not be UTF-8 */
}

static void on_closed(wsch_conn *c, int code, const char *reason, size_t reason_len, void *user) {
    net_ws *w = (net_ws *)user;
    (void)c;
    ((peer *)w->app)->closed = 1;
    printf("close %d %.*s\n", code, (int)reason_len, reason ? reason : "");
}

int main(int argc, char **argv) {
    static peer pe;
    const char *url = NULL;
    unsigned long timeout_ms = 30000;
    char host[256], path[1024], query[1024];
    wsch_conn_desc d;
    net_timers timers;
    net_ws w;
    wsch_url u;
    uint64_t deadline;
    int i, fd, rc, result = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--url") == 0 && i + 1 < argc) url = argv[++i];
        else if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc) timeout_ms = strtoul(argv[++i], NULL, 10);
        else url = NULL, i = argc;
    }
    if (!url || wsch_url_parse(url, strlen(url), &u) != WSCH_OK || u.secure || u.host.len >= sizeof host ||
        u.path.len >= sizeof path || u.query.len >= sizeof query) {
        fputs("usage: peer_client --url ws://127.0.0.1:PORT/path [--timeout-ms N]\n", stderr);
        return 2;
    }
    /* Spans may be empty with a NULL pointer: copy only what is there. */
    if (u.host.len) memcpy(host, u.host.ptr, u.host.len);
    host[u.host.len] = '\0';
    if (u.path.len) memcpy(path, u.path.ptr, u.path.len);
    path[u.path.len] = '\0';
    if (u.query.len) memcpy(query, u.query.ptr, u.query.len);
    query[u.query.len] = '\0';
    net_stop_on_signals();
    deadline = net_now_ms() + timeout_ms;

    fd = net_connect_wait(host, u.port, 5000);
    if (fd < 0) {
        printf("error connect: %s\n", strerror(errno));
        return 1;
    }
    memset(&timers, 0, sizeof timers);
    net_ws_init(&w, fd, &timers, WSCH_ROLE_CLIENT);
    w.app = &pe;
    memset(&d, 0, sizeof d);
    d.role = WSCH_ROLE_CLIENT;
    d.request.host = host;
    d.request.port = u.port;
    d.request.path = path;
    d.request.query = u.query.len ? query : NULL;
    d.limits.max_message_size = MAX_MESSAGE;
    d.limits.max_frame_size = MAX_MESSAGE;
    d.limits.max_outbound_bytes = 2u * MAX_MESSAGE;
    net_ws_desc(&d);
    d.on_open = on_open;
    d.on_message = on_message;
    d.on_pong = on_pong;
    d.on_close = on_closed;
    rc = wsch_conn_create(&d, &w, &w.conn);
    if (rc != WSCH_OK) {
        printf("error create: %s\n", wsch_err_str(rc));
        return 1;
    }
    for (;;) {
        struct pollfd p;
        net_timer *tm;
        uint64_t now;
        unsigned want = net_ws_update(&w);
        if (net_ws_finished(&w) || net_stop_requested) break;
        now = net_now_ms();
        if (now >= deadline) {
            printf("error timeout\n");
            result = 1;
            break;
        }
        p.fd = fd;
        p.events = (short)want;
        p.revents = 0;
        if (poll(&p, 1, net_timers_timeout(&timers, (int)(deadline - now))) > 0) {
            if (p.revents & POLLOUT) net_ws_writable(&w);
            if (p.revents & (POLLIN | POLLHUP | POLLERR)) net_ws_readable(&w, pe.buf, sizeof pe.buf);
        }
        now = net_now_ms();
        while ((tm = net_timers_pop_due(&timers, now)) != NULL) net_ws_timer_fired(&w, tm->id);
    }
    net_ws_release(&w);     /* on_close runs here if the transport ended first */
    net_timers_free(&timers);
    printf("end\n");
    return pe.closed && result == 0 ? 0 : 1;
}
