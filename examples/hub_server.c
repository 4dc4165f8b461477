/* hub_server - the smallest complete channel hub: start here, copy it.

   Shows wsch_hub on the header's POSIX loop with nothing else around it:
   it listens, the loop hands each accepted socket to the hub, and only the
   tokens given on the command line get in. The hub itself answers ping,
   subscribe and unsubscribe. Each line typed on stdin is broadcast to the
   subscribers of channel "news" as {"type":"news","payload":{"text":LINE}}
   (stdin is a descriptor of ours on the same loop). SIGINT/SIGTERM: every
   peer gets 1001 Going Away, then the process exits.

   Build:  cc -std=c99 -O2 -D_GNU_SOURCE -I. -o build/hub_server examples/hub_server.c
           (permessage-deflate: add -DEXAMPLE_ZLIB ... -lz; the Makefile does where zlib is installed)
   Run:    build/hub_server 8080 alice=secret bob=hunter2     (port 0: any free port, printed)
   Try:    python3 -m websockets 'ws://127.0.0.1:8080/ws?token=secret'
           > {"type":"subscribe","payload":{"channel":"news"}}
           then type a line into hub_server. A token may also come as
           "Authorization: Bearer TOKEN" or the subprotocol "bearer.TOKEN". */
#define WS_CHANNEL_POSIX
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#define DEFLATE_ZLIB_OPTIONAL
#include "deflate_zlib.h"
#include "hub_tokens.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

static wsch_hub *hub;
static hub_tokens tokens;       /* USER=SECRET pairs from the command line */
static char line[LINE_MAX_BYTES];   /* stdin up to the next newline */
static size_t line_len;

/* The token (?token=, a Bearer header or the subprotocol) must be one of
   the secrets; the peer's user id is the name paired with it. */
static int authenticate(wsch_hub *h, const wsch_hub_request *req, wsch_str *user_id, void *user) {
    (void)h;
    (void)user;
    return hub_tokens_check(&tokens, req->token, user_id);
}

static void on_connect(wsch_hub *h, wsch_hub_peer peer, wsch_str user_id, void *user) {
    (void)h;
    (void)user;
    printf("peer %u: %.*s connected\n", (unsigned)peer.index, (int)user_id.len, user_id.ptr);
    fflush(stdout);
}

static void on_disconnect(wsch_hub *h, wsch_hub_peer peer, int code, void *user) {
    (void)h;
    (void)user;
    printf("peer %u: gone, close code %d\n", (unsigned)peer.index, code);
    fflush(stdout);
}

/* The loop's log, at most once a second per message (a full descriptor
   table would otherwise print a line per connection shed). */
static void on_log(const char *msg, void *user) {
    static const char *last;
    static uint64_t last_ms;
    static unsigned long again;
    uint64_t now = wsch_posix_now_ms(NULL);
    (void)user;
    if (msg == last && now - last_ms < 1000) {
        again++;
        return;
    }
    if (again) fprintf(stderr, "hub_server: (%lu more of the last)\n", again);
    fprintf(stderr, "hub_server: %s\n", msg);
    last = msg;
    last_ms = now;
    again = 0;
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
        rc = wsch_hub_broadcast(hub, "news", "news", payload, 9 + n, &delivered);
    }
    if (rc == WSCH_OK) printf("sent to %lu subscriber(s) of news\n", (unsigned long)delivered);
    else printf("not sent: %s\n", wsch_err_str(rc));
    fflush(stdout);
}

/* stdin is readable: one read, then every complete line goes out. */
static void on_stdin(wsch_posix_loop *loop, wsch_posix_watch *w, int fd, unsigned events, void *user) {
    char *nl;
    ssize_t n = read(fd, line + line_len, sizeof line - line_len);
    (void)loop;
    (void)events;
    (void)user;
    if (n <= 0) {               /* end of input: nothing more to send */
        wsch_posix_watch_remove(w);
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
    wsch_posix_loop_desc ld;
    wsch_posix_listen_desc sd;
    wsch_hub_desc d;
    wsch_posix_loop *loop;
    wsch_posix_listener *l;
    wsch_posix_watch *w;
    char *end;
    unsigned long port;
    int i, rc;
    if (argc < 3) return usage();
    port = strtoul(argv[1], &end, 10);
    if (!argv[1][0] || *end || port > 65535) return usage();
    for (i = 2; i < argc; i++)
        if (hub_tokens_add(&tokens, argv[i]) != 0) return usage();

    memset(&ld, 0, sizeof ld);
    ld.log = on_log;
    ld.shutdown_timeout_ms = 3000;  /* peers that do not finish their close by then are cut */
    memset(&sd, 0, sizeof sd);
    sd.port = (uint16_t)port;
    memset(&d, 0, sizeof d);
    d.deflate.codec = deflate_zlib_codec();     /* permessage-deflate, in a build with zlib */
    d.authenticate = authenticate;
    d.on_connect = on_connect;
    d.on_disconnect = on_disconnect;
    if ((rc = wsch_posix_loop_create(&ld, &loop)) != WSCH_OK || (rc = wsch_posix_hub_create(loop, &d, &hub)) != WSCH_OK) {
        fprintf(stderr, "hub_server: %s\n", wsch_err_str(rc));
        return 1;
    }
    if (wsch_posix_listen(loop, &sd, &l) != WSCH_OK || wsch_posix_serve_hub(l, hub) != WSCH_OK) {
        perror("hub_server: cannot listen on 127.0.0.1");
        return 1;
    }
    if (wsch_posix_watch_add(loop, 0, WSCH_POSIX_READ, on_stdin, NULL, &w) != WSCH_OK)
        fputs("hub_server: stdin cannot be watched (a file?): nothing will be broadcast\n", stderr);
    (void)wsch_posix_handle_signals(loop);
    port = wsch_posix_listener_port(l);
    printf("hub_server: listening on http://127.0.0.1:%lu/ (hub at ws://127.0.0.1:%lu/ws)\n", port, port);
    fflush(stdout);

    wsch_posix_loop_run(loop);      /* until SIGINT or SIGTERM: peers get 1001, then it returns */
    wsch_posix_loop_destroy(loop);  /* the hub with it */
    hub_tokens_free(&tokens);
    return 0;
}
