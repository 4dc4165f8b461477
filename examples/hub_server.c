/* hub_server - the smallest complete channel hub: start here, copy it.

   Shows wsch_hub on real sockets with nothing else around it: it listens,
   hands each accepted socket to the hub, and lets in only the tokens given
   on the command line. The hub itself answers ping, subscribe and
   unsubscribe. Each line typed on stdin is broadcast to the subscribers of
   channel "news" as {"type":"news","payload":{"text":LINE}}. The sockets,
   epoll and the hub's effects are in hub_loop.h, the loop the chat demo
   (chat_server.c: page, HTTP API, Redis) runs on too.

   Build:  cc -std=c99 -O2 -D_GNU_SOURCE -I. -o build/hub_server examples/hub_server.c
   Run:    build/hub_server 8080 alice=secret bob=hunter2     (port 0: any free port, printed)
   Try:    python3 -m websockets 'ws://127.0.0.1:8080/ws?token=secret'
           > {"type":"subscribe","payload":{"channel":"news"}}
           then type a line into hub_server. A token may also come as
           "Authorization: Bearer TOKEN" or the subprotocol "bearer.TOKEN". */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include "example_net.h"
#include "hub_loop.h"

#define LINE_MAX_BYTES 4096

static hub_loop L;              /* static: it holds the read buffer */
static hub_tokens tokens;       /* USER=SECRET pairs from the command line */
static char line[LINE_MAX_BYTES];   /* stdin up to the next newline */
static size_t line_len;

/* The token (?token=, a Bearer header or the subprotocol) must be one of
   the secrets; the peer's user id is the name paired with it. */
static int authenticate(wsch_hub *hub, const wsch_hub_request *req, wsch_str *user_id, void *user) {
    (void)hub;
    (void)user;
    return hub_tokens_check(&tokens, req->token, user_id);
}

static void on_connect(wsch_hub *hub, wsch_hub_peer peer, wsch_str user_id, void *user) {
    (void)hub;
    (void)user;
    printf("peer %u: %.*s connected\n", (unsigned)peer.index, (int)user_id.len, user_id.ptr);
    fflush(stdout);
}

static void on_disconnect(wsch_hub *hub, wsch_hub_peer peer, int code, void *user) {
    (void)hub;
    (void)user;
    printf("peer %u: gone, close code %d\n", (unsigned)peer.index, code);
    fflush(stdout);
}

/* {"type":"news","payload":{"text":TEXT}} to every subscriber of "news". */
static void broadcast_line(const char *text, size_t len) {
    char payload[6 * LINE_MAX_BYTES + 16];
    size_t n = 0, delivered = 0;
    int rc;
    memcpy(payload, "{\"text\":", 8);
    rc = wsch_json_escape_string(text, len, payload + 8, sizeof payload - 8, &n);
    if (rc == WSCH_OK) {
        payload[8 + n] = '}';   /* over the NUL the escape wrote */
        rc = wsch_hub_broadcast(L.hub, "news", "news", payload, 9 + n, &delivered);
    }
    if (rc == WSCH_OK) printf("sent to %lu subscriber(s) of news\n", (unsigned long)delivered);
    else printf("not sent: %s\n", wsch_err_str(rc));
    fflush(stdout);
}

/* stdin is readable: one read, then every complete line goes out. */
static void on_stdin(void *ctx, uint32_t events) {
    char *nl;
    ssize_t n = read(0, line + line_len, sizeof line - line_len);
    (void)ctx;
    (void)events;
    if (n <= 0) {               /* end of input: nothing more to send */
        (void)epoll_ctl(L.ep, EPOLL_CTL_DEL, 0, NULL);
        return;
    }
    line_len += (size_t)n;
    while ((nl = (char *)memchr(line, '\n', line_len)) != NULL) {
        size_t k = (size_t)(nl - line);
        broadcast_line(line, k);
        line_len -= k + 1;
        memmove(line, nl + 1, line_len);
    }
    if (line_len == sizeof line) {  /* no newline in sight: send what there is */
        broadcast_line(line, line_len);
        line_len = 0;
    }
}

static int usage(void) {
    fputs("usage: hub_server PORT USER=SECRET...   (PORT 0: any free port)\n", stderr);
    return 2;
}

int main(int argc, char **argv) {
    wsch_hub_desc d;
    uint16_t port = 0;
    int i, rc;
    if (argc < 3 || net_parse_port(argv[1], &port) != NET_OK) return usage();
    for (i = 2; i < argc; i++)
        if (hub_tokens_add(&tokens, argv[i]) != 0) return usage();

    memset(&d, 0, sizeof d);
    hub_loop_effects(&d.effects);   /* send, close and timers per peer; clock, randomness */
    d.deflate.codec = net_deflate_codec();  /* permessage-deflate, in a build with zlib */
    d.authenticate = authenticate;
    d.on_connect = on_connect;
    d.on_disconnect = on_disconnect;
    rc = wsch_hub_create(&d, &L.hub);
    if (rc != WSCH_OK) {
        fprintf(stderr, "hub_server: wsch_hub_create: %s\n", wsch_err_str(rc));
        return 1;
    }
    if (hub_loop_listen(&L, "hub_server", "127.0.0.1", port) != 0) return 1;
    if (hub_loop_watch(&L, 0, EPOLLIN, on_stdin, NULL) != 0)
        fputs("hub_server: stdin cannot be watched (a file?): nothing will be broadcast\n", stderr);

    while (!net_stop_requested) hub_loop_run(&L, 1000);    /* until SIGINT or SIGTERM */

    hub_loop_shutdown(&L, 3000);    /* 1001 Going Away to everyone, then the hub is destroyed */
    hub_tokens_free(&tokens);
    return 0;
}
