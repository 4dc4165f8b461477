/* posix_hub - a channel hub with token auth on the POSIX loop. A peer with
   ?token=SECRET (or a Bearer header) is USER; the hub answers ping/subscribe/
   unsubscribe, and {"type":"publish","payload":{"channel":C,...}} from a
   subscriber of C reaches C's subscribers as "message", numbered and kept (100
   per channel) for clients that reconnect. SIGINT/SIGTERM: peers get 1001.
   Build: cc -std=c99 -D_POSIX_C_SOURCE=200809L -I. -o build/posix_hub examples/posix_hub.c
   Run:   build/posix_hub 8080 alice=secret bob=hunter2     (0: any free port) */
#define WS_CHANNEL_POSIX
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static char **tokens;                   /* argv's USER=SECRET pairs */
static int ntokens;
/* One of the secrets, compared in constant time; the user id is its name. */
static int authenticate(wsch_hub *hub, const wsch_hub_request *req, wsch_str *user_id, void *user) {
    int i;
    (void)hub;
    (void)user;
    for (i = 0; i < ntokens; i++) {
        const char *eq = strchr(tokens[i], '=');
        unsigned diff = 0;
        size_t k;
        if (!eq || strlen(eq + 1) != req->token.len) continue;
        for (k = 0; k < req->token.len; k++) diff |= (unsigned)(eq[1 + k] ^ req->token.ptr[k]);
        if (diff == 0) return user_id->ptr = tokens[i], user_id->len = (size_t)(eq - tokens[i]), WSCH_OK;
    }
    return WSCH_ERR_DENIED;             /* closed with 4001 */
}
static void on_message(wsch_hub *hub, wsch_hub_peer peer, const wsch_envelope *env, void *user) {
    char ch[WSCH_HUB_MAX_CHANNEL_LEN + 1];
    (void)user;
    if (strcmp(env->type, "publish") != 0 || wsch_envelope_get_channel(env->payload, ch, sizeof ch, NULL) != WSCH_OK)
        wsch_hub_refuse(hub, peer, "bad_request", "publish {\"channel\":C,...} only");
    else if (!wsch_hub_is_subscribed(hub, peer, ch))
        wsch_hub_refuse(hub, peer, "forbidden", "subscribe to the channel first");
    else
        wsch_hub_broadcast(hub, ch, "message", env->payload.ptr, env->payload.len, NULL);
}
int main(int argc, char **argv) {
    wsch_posix_loop *loop;
    wsch_posix_listener *l;
    wsch_posix_listen_desc ld = {0};
    wsch_hub_desc hd = {0};
    wsch_hub *hub;
    if (argc < 3) return fputs("usage: posix_hub PORT USER=SECRET...\n", stderr), 2;
    tokens = argv + 2, ntokens = argc - 2;
    ld.port = (uint16_t)atoi(argv[1]);
    hd.authenticate = authenticate, hd.on_message = on_message, hd.history_size = 100;
    if (wsch_posix_loop_create(NULL, &loop) != WSCH_OK || wsch_posix_hub_create(loop, &hd, &hub) != WSCH_OK ||
        wsch_posix_listen(loop, &ld, &l) != WSCH_OK || wsch_posix_serve_hub(l, hub) != WSCH_OK)
        return perror("posix_hub"), 1;
    wsch_posix_handle_signals(loop);
    printf("posix_hub: listening on ws://127.0.0.1:%u/ws\n", (unsigned)wsch_posix_listener_port(l));
    fflush(stdout);
    wsch_posix_loop_run(loop);          /* until SIGINT or SIGTERM */
    wsch_posix_loop_destroy(loop);      /* the hub with it */
    return 0;
}
