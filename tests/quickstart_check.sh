#!/bin/sh
# Compiles and links the quick starts of the doc block at the top of
# ws_channel.h, taken from the header itself, so the documentation cannot
# drift from the API. Each quick start is a fragment: its function
# definitions go to file scope, its statements into a function, and the
# names it leaves to the reader (a socket, callbacks) come from a small
# prelude below. "..." lines are dropped. Prints a greatest-style summary.
build=${1:-build}/quickstart
mkdir -p "$build"
pass=0; fail=0

# extract TITLE: the quick start's indented code, without the indent.
extract() {
    awk -v title="$1" '
        index($0, "Quick start: " title) { on = 1; next }
        on && /^   ---/ { next }
        on && /^       / { sub(/^       /, ""); if ($0 !~ /^\.\.\./) print; seen = 1; next }
        on && seen { exit }' ws_channel.h
}

# Lines of the fragment's leading function definitions: the count of lines
# up to where, outside any braces, a line is not the start of one.
defs_end() {
    awk '{ if (depth == 0 && $0 !~ /^static .*\(.*\) *\{/) { print NR - 1; found = 1; exit }
           n = gsub(/\{/, "{"); m = gsub(/\}/, "}"); depth += n - m }
         END { if (!found) print NR }'
}

# check NAME TITLE PRELUDE BODY_PRELUDE: the fragment's leading function
# definitions at file scope, the rest in a function body after BODY_PRELUDE.
check() {
    f=$build/$1.c
    code=$(extract "$2")
    last=$(printf '%s\n' "$code" | defs_end)
    {
        printf '#define WS_CHANNEL_IMPLEMENTATION\n#include "ws_channel.h"\n%s\n' "$3"
        printf '%s\n' "$code" | head -n "$last"
        printf 'void quick_start(void);\nvoid quick_start(void) {\n%s\n' "$4"
        printf '%s\n' "$code" | tail -n +"$((last + 1))"
        printf '}\nint main(void) { return 0; }\n'
    } > "$f"
    if [ -z "$code" ]; then
        echo "FAIL quick start \"$2\": not found in ws_channel.h"; fail=$((fail + 1))
    elif cc -std=c99 -D_GNU_SOURCE -DWS_CHANNEL_POSIX -Wall -Wextra -Wno-unused-parameter -Wno-unused-variable -Wno-unused-but-set-variable -Werror -I. \
            -o "$build/$1" "$f" 2> "$build/$1.err"; then
        echo "ok   quick start \"$2\""; pass=$((pass + 1))
    else
        echo "FAIL quick start \"$2\" ($f)"; cat "$build/$1.err"; fail=$((fail + 1))
    fi
}

check echo_conn "an echo server connection" '
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
struct peer { int fd; wsch_conn *conn; };' '
    struct peer *peer = (struct peer *)calloc(1, sizeof *peer);
    int fd = 0;
    char buf[512];
    ssize_t n;
    unsigned want_pollout;'

check client "a reconnecting client" '
#include <string.h>
static void my_connect(const char *host, uint16_t port, void *user) { (void)host; (void)port; (void)user; }
static size_t my_send(const void *p, size_t n, void *user) { (void)p; (void)user; return n; }
static void my_close(void *user) { (void)user; }
static void my_timer_set(unsigned id, uint32_t ms, void *user) { (void)id; (void)ms; (void)user; }
static void my_timer_cancel(unsigned id, void *user) { (void)id; (void)user; }
static uint64_t my_now(void *user) { (void)user; return 0; }
static void my_random(void *buf, size_t len, void *user) { (void)user; memset(buf, 1, len); }
static void my_status(wsch_client *c, wsch_status s, void *user) { (void)c; (void)s; (void)user; }
static void my_stopped(wsch_client *c, wsch_stop why, void *user) { (void)c; (void)why; (void)user; }
static void on_chat(wsch_client *c, const wsch_client_message *m, void *user) { (void)c; (void)m; (void)user; }' '
    wsch_client *client;
    wsch_client_handler handle;'

check hub "a channel hub" '
#include <string.h>
static size_t my_send(const void *p, size_t n, void *user) { (void)p; (void)user; return n; }
static void my_close(void *user) { (void)user; }
static int check_token(wsch_hub *hub, const wsch_hub_request *req, wsch_str *user_id, void *user) {
    (void)hub; (void)user; *user_id = req->token; return WSCH_OK;
}
static void on_app_message(wsch_hub *hub, wsch_hub_peer peer, const wsch_envelope *env, void *user) {
    (void)hub; (void)peer; (void)env; (void)user;
}
struct peer { wsch_hub_peer handle; };' '
    wsch_hub *hub;
    struct peer peer_storage, *peer = &peer_storage;
    char buf[64] = "";
    size_t n = 0;
    const char *payload = "{}";
    size_t len = 2;'

# The POSIX loop's quick start (WS_CHANNEL_POSIX, set for every check above).
check posix_echo "an echo server (examples/posix_echo.c" '' ''

echo "Pass: $pass, fail: $fail, skip: 0."
[ "$fail" -eq 0 ]
