/* lws_echo - a WebSocket echo server on libwebsockets (Debian
   libwebsockets-dev, its default poll() event loop), a peer of the
   benchmarks. Written the way lws's own minimal examples echo: messages
   (reassembled from the fragments lws hands over) wait in a per-connection
   queue and leave one per SERVER_WRITEABLE callback, as lws requires.

   Build: cc -O2 -o lws_echo lws_echo.c -lwebsockets
   Run:   lws_echo PORT      (127.0.0.1; prints "listening") */
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct msg {
    struct msg *next;
    size_t len;
    int binary;
    unsigned char data[];       /* LWS_PRE bytes of headroom, then the payload */
} msg;

typedef struct session {
    msg *head, *tail;
    msg *partial;               /* message being reassembled */
    size_t partial_cap;
} session;

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    session *s = (session *)user;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        memset(s, 0, sizeof *s);
        break;
    case LWS_CALLBACK_RECEIVE: {
        size_t have = s->partial ? s->partial->len : 0;
        if (!s->partial || have + len > s->partial_cap) {
            size_t cap = (have + len) * 2 + 64;
            msg *m = (msg *)realloc(s->partial, sizeof *m + LWS_PRE + cap);
            if (!m) return -1;
            if (!s->partial) {
                m->len = 0;
                m->next = NULL;
            }
            s->partial = m;
            s->partial_cap = cap;
        }
        memcpy(s->partial->data + LWS_PRE + s->partial->len, in, len);
        s->partial->len += len;
        s->partial->binary = lws_frame_is_binary(wsi);
        if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
            msg *m = s->partial;
            s->partial = NULL;
            if (s->tail) s->tail->next = m;
            else s->head = m;
            s->tail = m;
            lws_callback_on_writable(wsi);
        }
        break;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        msg *m = s->head;
        if (!m) break;
        if (lws_write(wsi, m->data + LWS_PRE, m->len, m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) <
            (int)m->len)
            return -1;
        s->head = m->next;
        if (!s->head) s->tail = NULL;
        free(m);
        if (s->head) lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_CLOSED:
        while (s->head) {
            msg *m = s->head;
            s->head = m->next;
            free(m);
        }
        free(s->partial);
        s->partial = NULL;
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"echo", callback, sizeof(session), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

int main(int argc, char **argv) {
    struct lws_context_creation_info info;
    struct lws_context *ctx;
    if (argc < 2) {
        fprintf(stderr, "usage: lws_echo PORT\n");
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    lws_set_log_level(LLL_ERR, NULL);
    memset(&info, 0, sizeof info);
    info.port = atoi(argv[1]);
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    info.timeout_secs = 60;
    ctx = lws_create_context(&info);
    if (!ctx) {
        fprintf(stderr, "lws_echo: lws_create_context failed\n");
        return 1;
    }
    printf("lws_echo: listening on %s (libwebsockets %s)\n", argv[1], lws_get_library_version());
    fflush(stdout);
    while (!stop && lws_service(ctx, 0) >= 0) {
    }
    lws_context_destroy(ctx);
    return 0;
}
