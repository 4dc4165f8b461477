/* wslay_echo - a WebSocket echo server on epoll built on wslay's event API
   (Debian libwslay-dev), the peer ws_channel.h's echo_server is measured
   against. Written the way wslay's own example server works: one event
   context per connection, wslay_event_recv on readable, wslay_event_send
   while it wants to write, send() with MSG_MORE when wslay says more
   follows. wslay has no handshake: the HTTP upgrade is the bench glue's
   (wslay_http.h, shared with wslay_hub.c: OpenSSL's SHA-1 and base64).

   Build: cc -O2 -D_GNU_SOURCE -o wslay_echo wslay_echo.c -lwslay -lcrypto
   Run:   wslay_echo PORT    (listens on 127.0.0.1; prints "listening") */
#include <signal.h>
#include <stdlib.h>

#include "wslay_http.h"

typedef struct client {
    wsl_conn conn;                  /* first: the wslay context's user data */
} client;

static int ep;

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user) {
    (void)user;
    if (!wslay_is_ctrl_frame(arg->opcode)) {
        struct wslay_event_msg m;
        m.opcode = arg->opcode;
        m.msg = arg->msg;
        m.msg_length = arg->msg_length;
        wslay_event_queue_msg(ctx, &m);
    }
}

static wsl_conn *client_new(int fd) {
    client *k = (client *)calloc(1, sizeof *k);
    (void)fd;
    return k ? &k->conn : NULL;
}

/* Returns -1 when the client is to be freed. */
static int on_ready(client *k, uint32_t ev) {
    wsl_conn *c = &k->conn;
    if (!c->ctx) { /* reading the upgrade request */
        struct wslay_event_callbacks cb;
        int r = wsl_read_head(c);
        if (r <= 0) return r;
        memset(&cb, 0, sizeof cb);
        cb.recv_callback = wsl_recv_cb;
        cb.send_callback = wsl_send_cb;
        cb.on_msg_recv_callback = on_msg;
        if (wsl_upgrade(c, &cb) != 0) return -1;
    }
    if (c->resp_len) return wsl_send_resp(ep, c) < 0 ? -1 : 0;
    if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) && wslay_event_recv(c->ctx) != 0) return -1;
    if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0) return -1;
    if (!wslay_event_want_read(c->ctx) && !wslay_event_want_write(c->ctx)) return -1;
    wsl_set_events(ep, c, (wslay_event_want_read(c->ctx) ? EPOLLIN : 0u) | (wslay_event_want_write(c->ctx) ? EPOLLOUT : 0u));
    return 0;
}

int main(int argc, char **argv) {
    int lfd = wsl_start(argc, argv, "wslay_echo", &ep);
    if (lfd < 0) return lfd == -2 ? 2 : 1;
    for (;;) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, -1), i;
        for (i = 0; i < n; i++) {
            client *c = (client *)evs[i].data.ptr;
            if (!c) {
                wsl_accept_all(ep, lfd, client_new);
                continue;
            }
            if (on_ready(c, evs[i].events) < 0) {
                wsl_conn_free(&c->conn);
                free(c);
            }
        }
    }
}
