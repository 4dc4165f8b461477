/* wslay_echo - a WebSocket echo server on epoll built on wslay's event API
   (Debian libwslay-dev), the peer ws_channel.h's echo_server is measured
   against. Written the way wslay's own example server works: one event
   context per connection, wslay_event_recv on readable, wslay_event_send
   while it wants to write, send() with MSG_MORE when wslay says more
   follows. wslay has no handshake: the HTTP upgrade is done here with
   OpenSSL's SHA-1 and base64.

   Build: cc -O2 -D_GNU_SOURCE -o wslay_echo wslay_echo.c -lwslay -lcrypto
   Run:   wslay_echo PORT    (listens on 127.0.0.1; prints "listening") */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

typedef struct client {
    int fd;
    wslay_event_context_ptr ctx;    /* NULL while the HTTP upgrade is in progress */
    char *head;                     /* the upgrade request; freed once answered */
    size_t head_len;
    char *resp;                     /* unsent part of the 101 response */
    size_t resp_len;
    uint32_t events;
} client;

#define HEAD_MAX 8192

static int ep;

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user) {
    client *c = (client *)user;
    ssize_t n;
    (void)flags;
    do n = recv(c->fd, buf, len, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        wslay_event_set_error(ctx, errno == EAGAIN ? WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user) {
    client *c = (client *)user;
    ssize_t n;
    int sflags = MSG_NOSIGNAL | ((flags & WSLAY_MSG_MORE) ? MSG_MORE : 0);
    do n = send(c->fd, data, len, sflags);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        wslay_event_set_error(ctx, errno == EAGAIN ? WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return n;
}

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

static void client_free(client *c) {
    if (c->ctx) wslay_event_context_free(c->ctx);
    close(c->fd);
    free(c->resp);
    free(c->head);
    free(c);
}

static void set_events(client *c, uint32_t want) {
    struct epoll_event ev;
    if (want == c->events) return;
    memset(&ev, 0, sizeof ev);
    ev.events = want;
    ev.data.ptr = c;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = want;
}

/* Finds header `name` in the head; returns its trimmed value or NULL. */
static const char *header(client *c, const char *name, size_t *len) {
    size_t nl = strlen(name);
    char *p = strstr(c->head, "\r\n");
    while (p && p[2] != '\r') {
        char *line = p + 2, *end = strstr(line, "\r\n");
        if (!end) return NULL;
        if ((size_t)(end - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t') v++;
            *len = (size_t)(end - v);
            while (*len && (v[*len - 1] == ' ' || v[*len - 1] == '\t')) (*len)--;
            return v;
        }
        p = end;
    }
    return NULL;
}

static int upgrade(client *c) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[128], accept[64];
    unsigned char md[SHA_DIGEST_LENGTH];
    size_t klen;
    const char *key = header(c, "Sec-WebSocket-Key", &klen);
    struct wslay_event_callbacks cb;
    if (!key || klen > 64) return -1;
    memcpy(buf, key, klen);
    memcpy(buf + klen, guid, sizeof guid - 1);
    SHA1((const unsigned char *)buf, klen + sizeof guid - 1, md);
    EVP_EncodeBlock((unsigned char *)accept, md, SHA_DIGEST_LENGTH);
    c->resp = (char *)malloc(256);
    c->resp_len = (size_t)snprintf(c->resp, 256,
                                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                   "Sec-WebSocket-Accept: %s\r\n\r\n",
                                   accept);
    memset(&cb, 0, sizeof cb);
    cb.recv_callback = recv_cb;
    cb.send_callback = send_cb;
    cb.on_msg_recv_callback = on_msg;
    if (wslay_event_context_server_init(&c->ctx, &cb, c) != 0) return -1;
    return 0;
}

/* Returns -1 when the client is to be freed. */
static int on_ready(client *c, uint32_t ev) {
    if (!c->ctx) { /* reading the upgrade request */
        ssize_t n;
        if (!c->head && !(c->head = (char *)malloc(HEAD_MAX))) return -1;
        n = recv(c->fd, c->head + c->head_len, HEAD_MAX - 1 - c->head_len, 0);
        if (n < 0 && errno == EAGAIN) return 0;
        if (n <= 0) return -1;
        c->head_len += (size_t)n;
        c->head[c->head_len] = '\0';
        if (!strstr(c->head, "\r\n\r\n")) return c->head_len + 1 < HEAD_MAX ? 0 : -1;
        if (upgrade(c) != 0) return -1;
        free(c->head);
        c->head = NULL;
        /* The client waits for the 101 before it sends frames: nothing is
           left in head past the request. */
    }
    if (c->resp_len) {
        ssize_t n = send(c->fd, c->resp, c->resp_len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) return -1;
        if (n > 0) {
            memmove(c->resp, c->resp + n, c->resp_len - (size_t)n);
            c->resp_len -= (size_t)n;
        }
        if (c->resp_len) {
            set_events(c, EPOLLOUT);
            return 0;
        }
        free(c->resp);
        c->resp = NULL;
        set_events(c, EPOLLIN);
        return 0;
    }
    if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) && wslay_event_recv(c->ctx) != 0) return -1;
    if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0) return -1;
    if (!wslay_event_want_read(c->ctx) && !wslay_event_want_write(c->ctx)) return -1;
    set_events(c, (wslay_event_want_read(c->ctx) ? EPOLLIN : 0u) | (wslay_event_want_write(c->ctx) ? EPOLLOUT : 0u));
    return 0;
}

int main(int argc, char **argv) {
    struct sockaddr_in a;
    struct epoll_event ev;
    int lfd, one = 1;
    if (argc < 2) {
        fprintf(stderr, "usage: wslay_echo PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 512) < 0) {
        perror("wslay_echo: listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("wslay_echo: listening on %s\n", argv[1]);
    fflush(stdout);
    for (;;) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, -1), i;
        for (i = 0; i < n; i++) {
            client *c = (client *)evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    client *k = (client *)calloc(1, sizeof *k);
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    k->fd = fd;
                    k->events = EPOLLIN;
                    memset(&ev, 0, sizeof ev);
                    ev.events = EPOLLIN;
                    ev.data.ptr = k;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (on_ready(c, evs[i].events) < 0) client_free(c);
        }
    }
}
