/* posix_echo - a WebSocket echo server on the header's own POSIX loop
   (WS_CHANNEL_POSIX): no socket, epoll, timer or signal code of its own.
   Every message comes back; a peer that never reads is dropped; SIGINT or
   SIGTERM closes every connection with 1001, then it exits.
   Build: cc -std=c99 -D_POSIX_C_SOURCE=200809L -I. -o build/posix_echo examples/posix_echo.c
   Run:   build/posix_echo 9001      (0: any free port, printed) */
#define WS_CHANNEL_POSIX
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include <stdio.h>
#include <stdlib.h>

static void echo(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
    (void)user;
    if (wsch_conn_send(c, op, data, len) == WSCH_ERR_QUEUE_FULL)     /* it never reads */
        wsch_conn_close(c, WSCH_CLOSE_POLICY_VIOLATION, "slow consumer", WSCH_CSTR);
}

int main(int argc, char **argv) {
    wsch_posix_loop *loop;
    wsch_posix_listener *l;
    wsch_posix_listen_desc ld = {0};
    wsch_conn_desc cd = {0};
    ld.port = (uint16_t)(argc > 1 ? atoi(argv[1]) : 9001);   /* on 127.0.0.1 */
    cd.on_message = echo;
    if (wsch_posix_loop_create(NULL, &loop) != WSCH_OK) return 1;
    if (wsch_posix_listen(loop, &ld, &l) != WSCH_OK || wsch_posix_serve_conns(l, &cd, NULL) != WSCH_OK ||
        wsch_posix_handle_signals(loop) != WSCH_OK) {
        perror("posix_echo");
        return 1;
    }
    printf("posix_echo: listening on ws://127.0.0.1:%u/\n", (unsigned)wsch_posix_listener_port(l));
    fflush(stdout);
    wsch_posix_loop_run(loop);          /* until SIGINT or SIGTERM */
    wsch_posix_loop_destroy(loop);
    return 0;
}
