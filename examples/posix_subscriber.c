/* posix_subscriber - a reconnecting subscriber on the POSIX loop: joins a hub's
   channel, prints what arrives, retries (backoff, jitter) when the hub goes away
   and recovers what it missed. SIGINT or SIGTERM: it closes with 1000 and exits.
   Build: cc -std=c99 -D_POSIX_C_SOURCE=200809L -I. -o build/posix_subscriber examples/posix_subscriber.c
   Run:   build/posix_subscriber ws://127.0.0.1:8080/ws secret news */
#define WS_CHANNEL_POSIX
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include <stdio.h>

static void on_message(wsch_client *c, const wsch_client_message *m, void *user) {
    (void)c;
    (void)user;
    printf("%s %.*s\n", m->type, (int)m->payload.len, m->payload.ptr ? m->payload.ptr : "");
    fflush(stdout);
}
static void on_status(wsch_client *c, wsch_status s, void *user) {
    (void)user;
    printf("[%s]\n", s == WSCH_STATUS_DISCONNECTED && wsch_client_next_retry_ms(c) >= 0 ? "retrying" : wsch_status_str(s));
    fflush(stdout);
}

int main(int argc, char **argv) {
    wsch_posix_loop *loop;
    wsch_client *c;
    wsch_client_desc d = {0};
    if (argc != 4) return fputs("usage: posix_subscriber URL TOKEN CHANNEL\n", stderr), 2;
    d.url = argv[1];
    d.token = argv[2];
    d.max_attempts = WSCH_CLIENT_FOREVER;
    d.on_status = on_status;
    if (wsch_posix_loop_create(NULL, &loop) != WSCH_OK || wsch_posix_client_create(loop, &d, NULL, &c) != WSCH_OK ||
        wsch_client_on(c, "*", on_message, NULL, NULL) != WSCH_OK || wsch_client_subscribe(c, argv[3]) != WSCH_OK)
        return fputs("posix_subscriber: bad arguments\n", stderr), 1;
    wsch_posix_handle_signals(loop);
    wsch_client_connect(c);
    wsch_posix_loop_run(loop);          /* until SIGINT or SIGTERM */
    wsch_posix_loop_destroy(loop);
    return 0;
}
