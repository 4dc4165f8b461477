/* lws_echo - a WebSocket echo server on libwebsockets (Debian
   libwebsockets-dev, its default poll() event loop), a peer of the
   benchmarks. Written the way lws's own minimal examples echo: messages
   (reassembled from the fragments lws hands over) wait in a per-connection
   queue and leave one per SERVER_WRITEABLE callback, as lws requires.

   Build: cc -O2 -o lws_echo lws_echo.c -lwebsockets
   Run:   lws_echo PORT      (127.0.0.1; prints "listening") */
#include "lws_serve.h"
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

int main(int argc, char **argv) { return lws_serve("lws_echo", protocols, argc, argv); }
