/* wslay_http.h - what the wslay peers (wslay_echo.c, wslay_hub.c) share:
   wslay has no HTTP, so the upgrade is done here (OpenSSL's SHA-1 and
   base64), plus the recv/send callbacks over a nonblocking socket, the
   epoll interest and the listening socket. A peer's connection struct
   starts with a wsl_conn, which is the user data of its wslay context. */
#ifndef BENCH_WSLAY_HTTP_H
#define BENCH_WSLAY_HTTP_H

#include <errno.h>
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

typedef struct wsl_conn {
    int fd;
    wslay_event_context_ptr ctx;    /* NULL while the HTTP upgrade is in progress */
    char *head;                     /* the upgrade request; freed once answered */
    size_t head_len;
    char *resp;                     /* unsent part of the 101 response */
    size_t resp_len;
    uint32_t events;
} wsl_conn;

#define WSL_HEAD_MAX 8192

static ssize_t wsl_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user) {
    wsl_conn *c = (wsl_conn *)user;
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

static ssize_t wsl_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user) {
    wsl_conn *c = (wsl_conn *)user;
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

static void wsl_set_events(int ep, wsl_conn *c, uint32_t want) {
    struct epoll_event ev;
    if (want == c->events) return;
    memset(&ev, 0, sizeof ev);
    ev.events = want;
    ev.data.ptr = c;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = want;
}

/* Finds header `name` in an HTTP head; returns its trimmed value or NULL. */
static const char *wsl_header(const char *head, const char *name, size_t *len) {
    size_t nl = strlen(name);
    const char *p = strstr(head, "\r\n");
    while (p && p[2] != '\r') {
        const char *line = p + 2, *end = strstr(line, "\r\n");
        if (!end) return NULL;
        if ((size_t)(end - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t') v++;
            *len = (size_t)(end - v);
            while (*len && (v[*len - 1] == ' ' || v[*len - 1] == '\t')) (*len)--;
            return v;
        }
        p = end;
    }
    return NULL;
}

/* Reads the upgrade request into c->head: 1 when it is whole, 0 when more
   is to come, -1 when the connection is to be closed. The client waits for
   the 101 before it sends frames, so nothing follows the request. */
static int wsl_read_head(wsl_conn *c) {
    ssize_t n;
    if (!c->head && !(c->head = (char *)malloc(WSL_HEAD_MAX))) return -1;
    n = recv(c->fd, c->head + c->head_len, WSL_HEAD_MAX - 1 - c->head_len, 0);
    if (n < 0 && errno == EAGAIN) return 0;
    if (n <= 0) return -1;
    c->head_len += (size_t)n;
    c->head[c->head_len] = '\0';
    if (!strstr(c->head, "\r\n\r\n")) return c->head_len + 1 < WSL_HEAD_MAX ? 0 : -1;
    return 1;
}

/* Answers the request in c->head (the 101 goes out with wsl_send_resp) and
   makes c's wslay server context, c its user data; frees the head. */
static int wsl_upgrade(wsl_conn *c, const struct wslay_event_callbacks *cb) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[128], accept[64];
    unsigned char md[SHA_DIGEST_LENGTH];
    size_t klen;
    const char *key = wsl_header(c->head, "Sec-WebSocket-Key", &klen);
    if (!key || klen > 64) return -1;
    memcpy(buf, key, klen);
    memcpy(buf + klen, guid, sizeof guid - 1);
    SHA1((const unsigned char *)buf, klen + sizeof guid - 1, md);
    EVP_EncodeBlock((unsigned char *)accept, md, SHA_DIGEST_LENGTH);
    if (!(c->resp = (char *)malloc(256))) return -1;
    c->resp_len = (size_t)snprintf(c->resp, 256,
                                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                   "Sec-WebSocket-Accept: %s\r\n\r\n",
                                   accept);
    if (wslay_event_context_server_init(&c->ctx, cb, c) != 0) return -1;
    free(c->head);
    c->head = NULL;
    return 0;
}

/* Sends what is left of the 101: 1 when all of it is out (reading frames
   from then on), 0 when waiting to be writable, -1 on error. */
static int wsl_send_resp(int ep, wsl_conn *c) {
    ssize_t n = send(c->fd, c->resp, c->resp_len, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN) return -1;
    if (n > 0) {
        memmove(c->resp, c->resp + n, c->resp_len - (size_t)n);
        c->resp_len -= (size_t)n;
    }
    if (c->resp_len) {
        wsl_set_events(ep, c, EPOLLOUT);
        return 0;
    }
    free(c->resp);
    c->resp = NULL;
    wsl_set_events(ep, c, EPOLLIN);
    return 1;
}

static void wsl_conn_free(wsl_conn *c) {
    if (c->ctx) wslay_event_context_free(c->ctx);
    close(c->fd);
    free(c->resp);
    free(c->head);
}

/* A nonblocking listening socket on 127.0.0.1:port, or -1 (said on stderr). */
static int wsl_listen(const char *port, const char *who) {
    struct sockaddr_in a;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)atoi(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 512) < 0) {
        fprintf(stderr, "%s: listen: %s\n", who, strerror(errno));
        return -1;
    }
    return lfd;
}

/* A peer's start: PORT from argv[1], SIGPIPE ignored, the listening socket
   in a new epoll set (*ep) with a NULL data pointer, the listening line
   printed. Returns the socket, or -2 (usage said) or -1 (failure said):
   main returns 2 or 1 then. */
static int wsl_start(int argc, char **argv, const char *who, int *ep) {
    struct epoll_event ev;
    int lfd;
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT\n", who);
        return -2;
    }
    signal(SIGPIPE, SIG_IGN);
    if ((lfd = wsl_listen(argv[1], who)) < 0) return -1;
    *ep = epoll_create1(EPOLL_CLOEXEC);
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(*ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("%s: listening on %s\n", who, argv[1]);
    fflush(stdout);
    return lfd;
}

/* Accepts every waiting connection, each with TCP_NODELAY, into epoll with
   the wsl_conn made by make_conn(fd) as its data (EPOLLIN). */
static void wsl_accept_all(int ep, int lfd, wsl_conn *(*make_conn)(int fd)) {
    int fd, one = 1;
    struct epoll_event ev;
    while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        wsl_conn *k = make_conn(fd);
        if (!k) {
            close(fd);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        k->fd = fd;
        k->events = EPOLLIN;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.ptr = k;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

#endif
