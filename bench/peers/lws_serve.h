/* lws_serve.h - the main loop the libwebsockets peers share: serve one
   protocol on 127.0.0.1:PORT (argv[1]) with libwebsockets' default loop
   until SIGINT or SIGTERM. Included by one .c file each. */
#ifndef LWS_SERVE_H
#define LWS_SERVE_H

#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t lws_serve_stop;

static void lws_serve_on_signal(int sig) {
    (void)sig;
    lws_serve_stop = 1;
}

/* name: the program's, for its messages; protocols: NULL-terminated. */
static int lws_serve(const char *name, const struct lws_protocols *protocols, int argc, char **argv) {
    struct lws_context_creation_info info;
    struct lws_context *ctx;
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT\n", name);
        return 2;
    }
    signal(SIGINT, lws_serve_on_signal);
    signal(SIGTERM, lws_serve_on_signal);
    lws_set_log_level(LLL_ERR, NULL);
    memset(&info, 0, sizeof info);
    info.port = atoi(argv[1]);
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    info.timeout_secs = 60;
    ctx = lws_create_context(&info);
    if (!ctx) {
        fprintf(stderr, "%s: lws_create_context failed\n", name);
        return 1;
    }
    printf("%s: listening on %s (libwebsockets %s)\n", name, argv[1], lws_get_library_version());
    fflush(stdout);
    while (!lws_serve_stop && lws_service(ctx, 0) >= 0) {
    }
    lws_context_destroy(ctx);
    return 0;
}

#endif
