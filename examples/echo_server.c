/* echo_server - a WebSocket echo server, ws:// or wss://, on the header's
   POSIX loop (WS_CHANNEL_POSIX).

   Every text and binary message is sent back on any path. The loop does the
   sockets, the timers and the signals: a connection whose unsent output
   passes --high-water is not read from until it drains (backpressure), and
   SIGINT or SIGTERM closes every connection with 1001, then the program
   exits. A connection that sends no message or pong for half the idle
   timeout gets a ping; one still silent at the full timeout and half of it
   after its ping (a half-open peer, or one that sends and never reads) is
   closed, and its fd is freed at most the close handshake's 5 s later. With --tls-cert and --tls-key it
   serves wss:// (examples/tls_openssl.h). This is the server the Autobahn
   TestSuite's fuzzing client, the interop tests and the benchmarks talk to.

   Build:  cc -std=c99 -O2 -D_GNU_SOURCE -I. -Iexamples -o build/echo_server examples/echo_server.c
           (+ -DEXAMPLE_ZLIB -lz for --deflate, -DEXAMPLE_TLS -lssl -lcrypto for wss)
   Run:    build/echo_server --port 9001     (--port 0 picks a free port and prints it)
           [--idle-timeout S]  (default 60; 0 = never)
           [--tls-cert cert.pem --tls-key key.pem]
   Autobahn TestSuite (sections 1-7, 9, 10, and with --deflate 12 and 13,
   permessage-deflate; where its container can run):
     build/echo_server --port 9001 --deflate &
     docker run --rm --network host -v "$PWD/tests/autobahn:/config" -v "$PWD/build/autobahn:/reports" \
         crossbario/autobahn-testsuite wstest -m fuzzingclient -s /config/fuzzingclient.json */
#define WS_CHANNEL_POSIX
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include "args.h"
#ifdef EXAMPLE_ZLIB
#include "deflate_zlib.h"
#endif
#ifdef EXAMPLE_TLS
#include "tls_openssl.h"
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_BUF_SIZE (256u * 1024u)

/* An open connection, for the idle sweep. */
typedef struct peer {
    wsch_conn *c;
    uint64_t active_ms;     /* when the sweep last found it active */
    int active;             /* a message or a pong since the last sweep (no clock read a message) */
    int pinged;             /* a ping went out in this silence */
    uint64_t ping_ms;       /* when */
    struct peer *prev, *next;
} peer;

typedef struct server {
    uint64_t idle_ms;       /* 0 = never */
    int verbose;
    peer *peers;
    wsch_posix_timer sweep;
} server;

static server srv;

static void on_message(wsch_conn *c, wsch_opcode opcode, void *data, size_t len, void *user) {
    peer *p = (peer *)user;
    int rc = wsch_conn_send(c, opcode, data, len);
    p->active = 1;
    p->pinged = 0;
    if (rc == WSCH_ERR_QUEUE_FULL) {
        /* Only a peer that ignores our backpressure gets here. */
        wsch_conn_close(c, WSCH_CLOSE_POLICY_VIOLATION, "slow consumer", WSCH_CSTR);
    } else if (rc != WSCH_OK && srv.verbose) {
        fprintf(stderr, "conn %p: echo failed: %s\n", (void *)c, wsch_err_str(rc));
    }
}

static void on_pong(wsch_conn *c, const void *data, size_t len, void *user) {
    peer *p = (peer *)user;
    (void)c;
    (void)data;
    (void)len;
    p->active = 1;
    p->pinged = 0;
}

/* Events before on_open get &srv; from on_open on, the conn's peer. */
static void on_open(wsch_conn *c, void *user) {
    peer *p = (peer *)calloc(1, sizeof *p);
    (void)user;
    if (!p) {
        wsch_conn_close(c, WSCH_CLOSE_INTERNAL_ERROR, "out of memory", WSCH_CSTR);
        return;
    }
    p->c = c;
    p->active_ms = wsch_posix_now_ms(NULL);
    p->next = srv.peers;
    if (srv.peers) srv.peers->prev = p;
    srv.peers = p;
    wsch_posix_conn_set_user(c, p);
    if (srv.verbose) fprintf(stderr, "conn %p: open\n", (void *)c);
}

static void peer_free(peer *p) {
    if (p->prev) p->prev->next = p->next;
    else srv.peers = p->next;
    if (p->next) p->next->prev = p->prev;
    free(p);
}

static void on_closed(wsch_conn *c, int code, const char *reason, size_t reason_len, void *user) {
    if (srv.verbose)
        fprintf(stderr, "conn %p: closed, code %d \"%.*s\"\n", (void *)c, code, (int)reason_len, reason ? reason : "");
    if (user != &srv) peer_free((peer *)user);
}

/* Every quarter of the idle timeout (at most a second): a ping to
   connections silent for half of it, a close (1000 "Idle timeout") to
   those silent for all of it whose ping has gone unanswered for half of
   it (however late the sweep that sent it ran). A peer that never
   reads cannot take the close frame either; the library's close timeout
   (5 s) then drops the transport. O(connections) a sweep. Activity is
   timed by the sweep that finds it (one sweep late at most), so a
   message costs no clock read. */
static uint32_t sweep_ms(void) { return srv.idle_ms >= 4000u ? 1000u : (uint32_t)srv.idle_ms / 4u + 1u; }

static void idle_sweep(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    uint64_t now = wsch_posix_now_ms(NULL);
    peer *p = srv.peers;
    (void)user;
    while (p) {
        peer *next = p->next;   /* a close may run on_close, which frees p */
        uint64_t quiet;
        if (p->active) {
            p->active = 0;
            p->active_ms = now;
        }
        quiet = now - p->active_ms;
        if (wsch_conn_state(p->c) == WSCH_STATE_OPEN) {
            if (quiet >= srv.idle_ms && p->pinged && now - p->ping_ms >= srv.idle_ms / 2u) {
                if (srv.verbose)
                    fprintf(stderr, "conn %p: idle for %llu ms, closing\n", (void *)p->c, (unsigned long long)quiet);
                (void)wsch_conn_close(p->c, WSCH_CLOSE_NORMAL, "Idle timeout", WSCH_CSTR);
            } else if (quiet >= srv.idle_ms / 2u && !p->pinged) {
                p->pinged = 1;
                p->ping_ms = now;
                (void)wsch_conn_ping(p->c, NULL, 0);
            }
        }
        p = next;
    }
    (void)wsch_posix_timer_start(loop, t, sweep_ms());
}

#ifdef EXAMPLE_TLS
static void tls_error(const char *msg, void *user) {
    (void)user;
    if (srv.verbose) fprintf(stderr, "echo_server: %s\n", msg);
}
#endif

static void usage(void) {
    fputs("usage: echo_server [--port N] [--host ADDR] [--max-message SIZE] [--high-water SIZE]\n"
          "                   [--idle-timeout S] [--deflate] [--tls-cert F --tls-key F] [--verbose]\n"
          "  --port N            TCP port, 0 = any free one (default 9001)\n"
          "  --host ADDR         address to listen on (default 127.0.0.1)\n"
          "  --max-message SIZE  largest message and frame accepted, e.g. 64M (default 32M)\n"
          "  --high-water SIZE   stop reading a connection whose unsent output passes this (default 4M)\n"
          "  --idle-timeout S    ping a connection silent for S/2 seconds, close it at S (default 60;\n"
          "                      0 = never); its fd is freed at most 5 s later (the close handshake)\n"
          "  --deflate           accept permessage-deflate (needs a build with zlib)\n"
          "  --tls-cert F        serve wss:// with this PEM certificate chain (needs a build with OpenSSL)\n"
          "  --tls-key F         and this PEM private key\n"
          "  --verbose           log connections to stderr\n",
          stderr);
}

int main(int argc, char **argv) {
    wsch_posix_loop_desc ld;
    wsch_posix_listen_desc lsd;
    wsch_conn_desc cd;
    wsch_posix_loop *loop;
    wsch_posix_listener *l;
    const char *host = "127.0.0.1", *cert = NULL, *key = NULL;
    size_t max_message = 32u * 1024u * 1024u, high_water = 4u * 1024u * 1024u, idle_s = 60;
    uint16_t port = 9001;
    int i, rc, deflate = 0;
#ifdef EXAMPLE_TLS
    static tls_openssl tls;
#endif
    memset(&ld, 0, sizeof ld);
    memset(&lsd, 0, sizeof lsd);
    memset(&cd, 0, sizeof cd);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--port") == 0 && v && args_port(v, &port) == 0) i++;
        else if (strcmp(a, "--host") == 0 && v) { host = v; i++; }
        else if (strcmp(a, "--max-message") == 0 && v && args_size(v, &max_message) == 0) i++;
        else if (strcmp(a, "--high-water") == 0 && v && args_size(v, &high_water) == 0) i++;
        else if (strcmp(a, "--idle-timeout") == 0 && v && args_size(v, &idle_s) == 0 && idle_s <= 86400u) i++;
        else if (strcmp(a, "--tls-cert") == 0 && v) { cert = v; i++; }
        else if (strcmp(a, "--tls-key") == 0 && v) { key = v; i++; }
        else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) srv.verbose = 1;
        else if (strcmp(a, "--deflate") == 0) deflate = 1;
        else {
            usage();
            return strcmp(a, "--help") == 0 ? 0 : 2;
        }
    }
    if (max_message == 0 || high_water == 0 || !cert != !key) {
        usage();
        return 2;
    }
#ifdef EXAMPLE_ZLIB
    if (deflate) cd.deflate.codec = deflate_zlib_codec();
#else
    if (deflate) {
        fputs("echo_server: --deflate needs a build with zlib (-DEXAMPLE_ZLIB -lz; Debian: zlib1g-dev)\n", stderr);
        return 2;
    }
#endif
    if (cert) {
#ifdef EXAMPLE_TLS
        if (tls_openssl_server(&tls, cert, key) != WSCH_OK) {
            fprintf(stderr, "echo_server: %s\n", tls_openssl_error(&tls));
            return 1;
        }
        tls.on_error = tls_error;
        lsd.transport = &tls.transport;
#else
        fputs("echo_server: --tls-cert needs a build with OpenSSL (-DEXAMPLE_TLS -lssl -lcrypto; Debian: libssl-dev)\n",
              stderr);
        return 2;
#endif
    }
    srv.idle_ms = (uint64_t)idle_s * 1000u;

    ld.read_buffer_size = READ_BUF_SIZE;
    ld.read_pause_bytes = high_water;
    cd.limits.max_message_size = max_message;
    cd.limits.max_frame_size = max_message;
    /* Room for one echo of the largest message on top of what backpressure
       lets pile up: the high-water mark plus the echoes of one read. */
    cd.limits.max_outbound_bytes = max_message + high_water + 2u * READ_BUF_SIZE + 1024u;
    cd.on_open = on_open;
    cd.on_message = on_message;
    cd.on_pong = on_pong;
    cd.on_close = on_closed;
    lsd.host = host;
    lsd.port = port;
    lsd.backlog = 512;

    rc = wsch_posix_loop_create(&ld, &loop);
    if (rc != WSCH_OK) {
        fprintf(stderr, "echo_server: cannot create the loop: %s\n", wsch_err_str(rc));
        return 1;
    }
    rc = wsch_posix_listen(loop, &lsd, &l);
    if (rc != WSCH_OK) {
        fprintf(stderr, "echo_server: cannot listen on %s:%u: %s\n", host, (unsigned)port,
                rc == WSCH_ERR_CONNECT ? strerror(errno) : wsch_err_str(rc));
        wsch_posix_loop_destroy(loop);
        return 1;
    }
    if (wsch_posix_serve_conns(l, &cd, &srv) != WSCH_OK || wsch_posix_handle_signals(loop) != WSCH_OK) {
        fputs("echo_server: cannot start serving\n", stderr);
        wsch_posix_loop_destroy(loop);
        return 1;
    }
    wsch_posix_timer_init(&srv.sweep, idle_sweep, NULL);
    if (srv.idle_ms) (void)wsch_posix_timer_start(loop, &srv.sweep, sweep_ms());
    /* Tests start us with --port 0 and read the port from this line. */
    printf("echo_server: listening on %s://%s:%u/\n", cert ? "wss" : "ws", host,
           (unsigned)wsch_posix_listener_port(l));
    fflush(stdout);

    rc = wsch_posix_loop_run(loop);     /* until SIGINT or SIGTERM */
    wsch_posix_timer_stop(loop, &srv.sweep);
    wsch_posix_loop_destroy(loop);      /* cuts what is left, without events: */
    while (srv.peers) peer_free(srv.peers);
#ifdef EXAMPLE_TLS
    if (cert) tls_openssl_free(&tls);
#endif
    return rc == WSCH_OK ? 0 : 1;
}
