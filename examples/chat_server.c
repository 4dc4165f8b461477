/* chat_server - the chat demo: a channel hub (wsch_hub) with a browser page,
   an HTTP API and, optionally, Redis to join several processes.

   Shows what an application puts on top of the hub: messages of its own
   (publish, direct), a subscribe-authorization hook, plain HTTP on the same
   port through the hub's on_http hook (the page and a small API), the hub's
   counters and the library's heap (through the allocator hook), and the
   hub's bridge over Redis pub/sub. The sockets, the loop, the hub's
   effects and the graceful shutdown are the header's POSIX layer
   (WS_CHANNEL_POSIX), as in examples/hub_server.c (the smallest hub
   server); the Redis links join the same loop.

   Build:  cc -std=c99 -O2 -D_GNU_SOURCE -I. -o build/chat_server examples/chat_server.c
           (--redis needs -DCHAT_WITH_REDIS ... -lhiredis; the Makefile adds both when hiredis is installed;
           permessage-deflate needs -DEXAMPLE_ZLIB ... -lz, and --tls-cert -DEXAMPLE_TLS ... -lssl -lcrypto:
           it adds each when its library is installed)
   Run:    build/chat_server --port 8080 [--token alice=secret ...]
           then open http://127.0.0.1:8080/

   Options (--help lists them): --port N (0 = any free port; the chosen one
   is printed), --host ADDR (default 127.0.0.1), --token USER=SECRET
   (repeatable; without any, every non-empty token that is UTF-8 and has
   no ':' is accepted as the user name), --www DIR (the page; default examples/www under the current
   directory, else ../examples/www next to the binary), --max-clients N,
   --max-outbound SIZE, --max-queued-total SIZE, --ping-interval MS, --idle-timeout MS, --close-timeout MS,
   --history N, --history-age S, --history-bytes SIZE (below), --no-presence (below), --no-deflate,
   --no-gather (every message written to its clients at once, not once per loop turn: to measure gathering),
   --verbose (connections, and the time each publish to 1,000+ subscribers took to queue),
   --redis HOST[:PORT] and --redis-prefix P (below), --tls-cert F --tls-key F
   (the page over https and the hub over wss, through examples/tls_openssl.h;
   with --max-clients the reserve's hook runs over it).

   Several processes (--redis): every chat_server started with the same
   --redis (and prefix) acts as one hub. A broadcast or a message to a user
   in one process reaches subscribers and connections in all of them,
   exactly once, through Redis pub/sub (redis_bridge.h: Debian's hiredis,
   asynchronous, on this same loop). With the history on (the
   default) Redis also numbers and keeps every channel's messages (the
   hub's shared positions: a Lua script per message takes the channel's
   next offset and its epoch, adds the message to a Redis stream capped at
   --history messages and expiring --history-age after the channel's last
   message, and publishes it), so a message has the same offset and epoch
   in every process and a client that reconnects to another process
   recovers what it missed there. If Redis is unreachable the server keeps
   serving its own clients and reconnects with backoff. Meanwhile, with
   the history on, a publish to a channel is refused with the error
   "unavailable" (nothing is numbered, so nothing is sent: the client may
   try again; /api/notify answers 503) and a subscribe is confirmed with
   "recovered":false; once Redis is back every channel is fetched again
   and traffic resumes. With --history 0 a channel message published
   meanwhile reaches only the clients of its own process. Messages to
   users (direct) are never kept: while Redis is away they reach only this
   process's connections. Without --redis nothing of this runs; built
   without CHAT_WITH_REDIS, --redis is refused.

   History (the hub's, see "History and recovery" in ws_channel.h): each
   channel keeps its last 200 messages for 5 minutes (--history N,
   --history-age SECONDS, --history-bytes SIZE for all channels, 64M;
   --history 0 turns it off: messages are still numbered, so a client that
   missed some is told it could not recover them), enough for a client away a few seconds at a
   chat's pace, or minutes at a calm one, to recover what it missed, and
   for the page to show a late joiner the recent conversation. Without
   --redis the history lives in this process: after a restart a client
   gets "recovered":false and the page says so. With --redis it lives in
   Redis (above), shared by every process, and survives their restarts.

   Presence (the hub's, see "Presence" in ws_channel.h; on unless
   --no-presence): who is in each channel, per user, for subscribers that
   ask for it ({"type":"subscribe","payload":{"channel":C,"presence":true}},
   as the page does): the confirmation carries the members, and changes
   follow once per loop turn (the loop ends each turn with
   wsch_hub_flush). A connection may name its device on the upgrade,
   ?device=NAME (1..32 bytes of UTF-8 without control characters; the page
   sends "desktop" or "phone"): its user is then listed with the info
   {"device":NAME} in the channels it joins first. A malformed or longer
   name is ignored (the connection goes on without one). With --redis
   presence spans every process: each says its users over Redis, again
   every --presence-ttl / 3, and a process that dies without a word drops
   out of the others' presence within 4/3 of --presence-ttl.

   What the demo adds on top of the hub (all envelopes {"type","payload"}):
     -> {"type":"publish","payload":{"channel":C,"data":D}[,"id":I]}   from a subscriber of C;
        with an id it is acknowledged once broadcast ({"type":"ack","payload":{"id":I}})
     <- {"type":"message","payload":{"channel":C,"from":USER,"data":D},"channel":C,"offset":N,"epoch":E}
        to every subscriber of C
     -> {"type":"direct","payload":{"to":USER,"data":D}}
     <- {"type":"direct","payload":{"from":USER,"to":USER,"data":D}}   to every connection of both users
     <- {"type":"welcome","payload":{"user":USER}}            once, after the upgrade
     <- {"type":"error","payload":{"code":K,"message":M,"request":T[,"id":I]}}
        K: "not_subscribed" (publish to a channel you did not join), "bad_payload",
        "too_large", "unavailable" (--redis with history: Redis is away, nothing was sent),
        and the hub's own codes.
   Channels "user:NAME" and "user:NAME:..." are private to NAME (the
   subscribe-authorization hook).

   HTTP on the same port:
     GET /                      the page (index.html, app.css, app.js from --www)
     GET /api/stats             the hub's counters ("peers": connections the hub
                                holds, the request asking among them) and the
                                library's heap bytes, as JSON ("presence":
                                {"enabled","members","messages","sent"}); with --redis also
                                the bridge's and the Redis links' state (with the
                                history on, "shared":true and the hub's and the
                                links' "appended", "append_errors", "fetches",
                                "fetch_errors")
     GET /api/notify?channel=C&text=T    broadcasts {"type":"notification",
                                "payload":{"channel":C,"from":"server","text":T}}; answers {"delivered":N}
                                (N: clients of this process; with --redis the others get it too;
                                with --redis and history N is 0, delivery waiting for Redis to
                                number it, and while Redis is away the answer is 503)
     GET /api/notify?user=U&text=T       the same through send_to_user ({"to":U,...})
   The API has no authentication: the server listens on 127.0.0.1 unless
   told otherwise.

   Limits. --max-clients N: past N connections (WebSocket or HTTP) the
   server keeps a reserve of HTTP_RESERVE (16) more for plain HTTP only, so
   /api/stats answers while the hub is full; an upgrade that arrives then
   gets "503 Service Unavailable" with "Retry-After: 5", and so does a
   connection past the reserve too (the listener's transport hook, below). A client silent for --ping-interval (default 15 s) gets a
   protocol ping, which every WebSocket client answers by itself (browsers
   too, even in a background tab); one silent for --idle-timeout (default
   25 s) is closed, and freed at most --close-timeout (default 3 s) later:
   a half-open client holds its socket at most 28 s.

   SIGINT/SIGTERM: every client gets 1001 Going Away, the loop runs until
   they are gone (at most 3 s), then (with --redis) the Redis links stop,
   then everything is freed. */
#define WS_CHANNEL_POSIX
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#define DEFLATE_ZLIB_OPTIONAL
#include "deflate_zlib.h"
#include "hub_tokens.h"
#include "args.h"
#ifdef CHAT_WITH_REDIS
#include "redis_bridge.h"
#endif
#ifdef EXAMPLE_TLS
#include "tls_openssl.h"
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHUTDOWN_MS 3000u
/* A client that goes silent (half-open: its host vanished, or it stopped
   answering) is pinged after PING_INTERVAL_MS, closed after
   IDLE_TIMEOUT_MS without a byte from it (a live client's pong counts),
   and freed at most CLOSE_TIMEOUT_MS later (the closing handshake it will
   not finish): 28 s in all. */
#define PING_INTERVAL_MS 15000u
#define IDLE_TIMEOUT_MS 25000u
#define CLOSE_TIMEOUT_MS 3000u
#define MAX_QUEUED_TOTAL (256u * 1024u * 1024u)     /* output waiting for all clients together */
#define HISTORY_SIZE 200u                           /* messages kept per channel */
#define HISTORY_AGE_S 300u
#define DEVICE_MAX 32u                              /* bytes of a ?device= name (presence info) */
#define HTTP_RESERVE 16u        /* connections past --max-clients, plain HTTP only */
#define HEAD_MAX 4096u          /* request head read for a reserve connection */
#define RETRY_AFTER_S "5"

typedef struct app {
    wsch_posix_loop *loop;      /* the sockets, the timers, the Redis links */
    wsch_hub *hub;
    size_t max_ws;              /* 0, or: past this many connections, plain HTTP only (the reserve) */
    size_t conns;               /* connections accepted and not yet closed (with max_ws) */
    uint64_t refused_503;       /* connections answered 503: upgrades while full, and refusals */
    hub_tokens tokens;
    char www[1024];
    int have_www;
    int verbose;
    int no_gather;              /* --no-gather */
    char *body;                 /* the last HTTP body, kept until the hub has copied it */
    char *scratch;              /* publish/direct payloads */
    size_t scratch_cap;
    /* the library's heap, counted through the allocator hook */
    size_t heap_bytes, heap_blocks;
    int redis_on;               /* --redis given */
    uint32_t idle_timeout_ms, close_timeout_ms, ping_interval_ms;  /* as configured, for /api/stats */
    int deflate;                                    /* permessage-deflate accepted */
    int presence;                                   /* the hub tracks presence (not --no-presence) */
    wsch_budget queued;                             /* output held for all clients together */
#ifdef CHAT_WITH_REDIS
    redis_bridge redis;
#endif
    /* TLS (--tls-cert): what the listener's connections run on, under the
       reserve's hook when there is one; NULL: plain TCP. */
    const wsch_posix_transport *tls;
#ifdef EXAMPLE_TLS
    tls_openssl openssl;
#endif
} app;

static app A;

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- counting allocator -------------------------------------------------- */

typedef union heap_hdr {     /* keeps the block after it aligned for anything */
    size_t size;
    long double ld;
    void *p;
    long long ll;
} heap_hdr;

static void *heap_alloc(size_t size, void *user) {
    app *a = (app *)user;
    heap_hdr *h;
    if (size > (size_t)-1 - sizeof *h) return NULL;
    h = (heap_hdr *)malloc(sizeof *h + size);
    if (!h) return NULL;
    h->size = size;
    a->heap_bytes += size;
    a->heap_blocks++;
    return h + 1;
}

static void heap_free(void *ptr, void *user) {
    app *a = (app *)user;
    heap_hdr *h = (heap_hdr *)ptr - 1;
    a->heap_bytes -= h->size;
    a->heap_blocks--;
    free(h);
}

/* ---- the application ------------------------------------------------------- */

/* Appends the JSON string for s (escaped) at *at. */
static int put_json_string(char *buf, size_t cap, size_t *at, const char *s, size_t len) {
    size_t n;
    int rc = wsch_json_escape_string(s, len, buf + *at, cap - *at, &n);
    if (rc == WSCH_OK) *at += n;
    return rc;
}

static int put_raw(char *buf, size_t cap, size_t *at, const char *s, size_t len) {
    if (len > cap - *at) return WSCH_ERR_BUFFER;
    memcpy(buf + *at, s, len);
    *at += len;
    return WSCH_OK;
}

/* A device name (?device=NAME on the upgrade) is shown beside the user in
   the channels' presence: 1..DEVICE_MAX bytes of UTF-8 without control
   characters (C0, DEL, C1), so it reads as plain text wherever it goes. */
static int device_ok(const char *s, size_t len) {
    size_t i;
    if (len == 0 || len > DEVICE_MAX || !wsch_utf8_valid(s, len)) return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20u || c == 0x7Fu) return 0;
        if (c == 0xC2u && i + 1 < len && (unsigned char)s[i + 1] < 0xA0u) return 0;   /* U+0080..U+009F */
    }
    return 1;
}

/* The connection's presence info {"device":NAME} when the request names
   one; a missing, empty or unfit name gives none (the connection is not
   refused for it: its user is then shown without a device). */
static void set_device(wsch_hub *hub, const wsch_hub_request *req) {
    char name[DEVICE_MAX + 1], json[16 + 6 * DEVICE_MAX];
    size_t len = 0, at = 0;
    int rc = wsch_query_get(req->http->query, "device", name, sizeof name, &len);
    if (rc == WSCH_ERR_NOT_FOUND || (rc == WSCH_OK && len == 0)) return;
    if (rc != WSCH_OK || !device_ok(name, len)) {
        if (A.verbose) fprintf(stderr, "connect: ignoring a malformed or long ?device=\n");
        return;
    }
    rc = put_raw(json, sizeof json, &at, "{\"device\":", 10);
    if (rc == WSCH_OK) rc = put_json_string(json, sizeof json, &at, name, len);
    if (rc == WSCH_OK) rc = put_raw(json, sizeof json, &at, "}", 1);
    if (rc == WSCH_OK) rc = wsch_hub_set_presence_info(hub, req->peer, json, at);
    if (rc != WSCH_OK && A.verbose) fprintf(stderr, "connect: device not set: %s\n", wsch_err_str(rc));
}

/* Tokens from --token, or any token as the user name that is UTF-8 (it is
   sent inside JSON) and has no ':' (private channels are "user:NAME" and
   "user:NAME:...", so "alice:inbox" would own one of alice's). */
static int authenticate(wsch_hub *hub, const wsch_hub_request *req, wsch_str *user_id, void *user) {
    app *a = (app *)user;
    int rc;
    if (req->token.len == 0) return WSCH_ERR_DENIED;
    if (a->tokens.n == 0) {
        if (!wsch_utf8_valid(req->token.ptr, req->token.len) || memchr(req->token.ptr, ':', req->token.len))
            return WSCH_ERR_DENIED;
        *user_id = req->token;
        rc = WSCH_OK;
    } else {
        rc = hub_tokens_check(&a->tokens, req->token, user_id);
    }
    if (rc == WSCH_OK && a->presence) set_device(hub, req);
    return rc;
}

/* "user:NAME" and "user:NAME:..." belong to NAME alone. */
static int authorize_subscribe(wsch_hub *hub, wsch_hub_peer peer, wsch_str user_id, wsch_str channel,
                               void *user) {
    (void)hub;
    (void)peer;
    (void)user;
    if (channel.len < 5 || memcmp(channel.ptr, "user:", 5) != 0) return 1;
    if (channel.len < 5 + user_id.len || memcmp(channel.ptr + 5, user_id.ptr, user_id.len) != 0) return 0;
    return channel.len == 5 + user_id.len || channel.ptr[5 + user_id.len] == ':';
}

/* Grows the scratch buffer for an outgoing payload. */
static char *scratch(size_t need) {
    if (need > A.scratch_cap) {
        char *p = (char *)realloc(A.scratch, need);
        if (!p) return NULL;
        A.scratch = p;
        A.scratch_cap = need;
    }
    return A.scratch;
}

/* An error answering the message being handled (with its id when it was
   sent reliably: then no ack follows). */
static void send_error(wsch_hub_peer peer, const char *code, const char *message) {
    (void)wsch_hub_refuse(A.hub, peer, code, message);
}

/* The string member v (a span from wsch_envelope_get_members) unescaped
   into out: non-empty, without U+0000, and fitting. */
static int get_name(wsch_str v, char *out, size_t cap, size_t *len) {
    if (wsch_json_kind_of(v) != WSCH_JSON_STRING || wsch_json_unescape_string(v, out, cap, len) != WSCH_OK)
        return 0;
    return *len > 0 && !memchr(out, 0, *len);
}

/* "data", or null when absent. */
static wsch_str data_or_null(wsch_str v) {
    if (!v.ptr) {
        v.ptr = "null";
        v.len = 4;
    }
    return v;
}

/* publish: {"channel":C,"data":D} -> message {"channel":C,"from":USER,"data":D} to C.
   The envelope was validated when it was decoded; one more pass finds both keys. */
static void on_publish(wsch_hub *hub, wsch_hub_peer peer, const wsch_envelope *env, wsch_str from) {
    static const char *const keys[2] = {"channel", "data"};
    char channel[WSCH_HUB_MAX_CHANNEL_LEN + 1];
    size_t clen, at = 0, cap;
    wsch_str v[2], data;
    char *buf;
    int rc;
    if (wsch_envelope_get_members(env, keys, 2, v) != WSCH_OK) {    /* a key given twice */
        send_error(peer, "bad_payload", "publish names \"channel\" or \"data\" twice");
        return;
    }
    if (!get_name(v[0], channel, sizeof channel, &clen)) {
        send_error(peer, "bad_payload", "publish needs a string \"channel\"");
        return;
    }
    if (!wsch_hub_is_subscribed(hub, peer, channel)) {
        send_error(peer, "not_subscribed", "subscribe to the channel before publishing to it");
        return;
    }
    data = data_or_null(v[1]);
    cap = 64 + 6 * clen + 6 * from.len + data.len;
    buf = scratch(cap);
    if (!buf) {
        send_error(peer, "server_error", "out of memory");
        return;
    }
    rc = put_raw(buf, cap, &at, "{\"channel\":", 11);
    if (rc == WSCH_OK) rc = put_json_string(buf, cap, &at, channel, clen);
    if (rc == WSCH_OK) rc = put_raw(buf, cap, &at, ",\"from\":", 8);
    if (rc == WSCH_OK) rc = put_json_string(buf, cap, &at, from.ptr, from.len);
    if (rc == WSCH_OK) rc = put_raw(buf, cap, &at, ",\"data\":", 8);
    if (rc == WSCH_OK) rc = put_raw(buf, cap, &at, data.ptr, data.len);
    if (rc == WSCH_OK) rc = put_raw(buf, cap, &at, "}", 1);
    if (rc == WSCH_OK) {
        uint64_t t0 = A.verbose ? now_us() : 0;
        size_t n = 0;
        rc = wsch_hub_broadcast(hub, channel, "message", buf, at, &n);
        if (A.verbose && n >= 1000)
            fprintf(stderr, "publish to %s: queued to %lu clients in %.2f ms\n", channel, (unsigned long)n,
                    (double)(now_us() - t0) / 1000.0);
    }
    if (rc == WSCH_ERR_TOO_LARGE) send_error(peer, "too_large", "the message would exceed the size limit");
    else if (rc == WSCH_ERR_STATE) send_error(peer, "unavailable", "the channel cannot be numbered now (Redis is away); try again");
    else if (rc != WSCH_OK) send_error(peer, "server_error", "the message could not be sent");
}

/* direct: {"to":USER,"data":D} -> direct {"from","to","data"} to both users. */
static void on_direct(wsch_hub *hub, wsch_hub_peer peer, const wsch_envelope *env, wsch_str from) {
    static const char *const keys[2] = {"to", "data"};
    char to[256];
    size_t tlen, at = 0, cap;
    wsch_str v[2], data;
    char *buf;
    int rc;
    if (wsch_envelope_get_members(env, keys, 2, v) != WSCH_OK || !get_name(v[0], to, sizeof to, &tlen)) {
        send_error(peer, "bad_payload", "direct needs a string \"to\"");
        return;
    }
    data = data_or_null(v[1]);
    cap = 64 + 6 * tlen + 6 * from.len + data.len;
    buf = scratch(cap);
    if (!buf) {
        send_error(peer, "server_error", "out of memory");
        return;
    }
    rc = put_raw(buf, cap, &at, "{\"from\":", 8);
    if (rc == WSCH_OK) rc = put_json_string(buf, cap, &at, from.ptr, from.len);
    if (rc == WSCH_OK) rc = put_raw(buf, cap, &at, ",\"to\":", 6);
    if (rc == WSCH_OK) rc = put_json_string(buf, cap, &at, to, tlen);
    if (rc == WSCH_OK) rc = put_raw(buf, cap, &at, ",\"data\":", 8);
    if (rc == WSCH_OK) rc = put_raw(buf, cap, &at, data.ptr, data.len);
    if (rc == WSCH_OK) rc = put_raw(buf, cap, &at, "}", 1);
    if (rc == WSCH_OK) rc = wsch_hub_send_to_user(hub, to, "direct", buf, at, NULL);
    /* The sender's other tabs see it too. */
    if (rc == WSCH_OK && !(from.len == tlen && memcmp(from.ptr, to, tlen) == 0)) {
        char self[256];
        if (from.len < sizeof self) {
            memcpy(self, from.ptr, from.len);
            self[from.len] = '\0';
            rc = wsch_hub_send_to_user(hub, self, "direct", buf, at, NULL);
        }
    }
    if (rc == WSCH_ERR_TOO_LARGE) send_error(peer, "too_large", "the message would exceed the size limit");
    else if (rc != WSCH_OK) send_error(peer, "server_error", "the message could not be sent");
}

static void on_message(wsch_hub *hub, wsch_hub_peer peer, const wsch_envelope *env, void *user) {
    wsch_str from;
    (void)user;
    if (wsch_hub_peer_user_id(hub, peer, &from) != WSCH_OK) return;
    if (!env->payload.ptr || wsch_json_kind_of(env->payload) != WSCH_JSON_OBJECT) {
        send_error(peer, "bad_payload", "payload must be an object");
    } else if (wsch_envelope_type_is(env, "publish")) {
        on_publish(hub, peer, env, from);
    } else if (wsch_envelope_type_is(env, "direct")) {
        on_direct(hub, peer, env, from);
    } else {
        send_error(peer, "unknown_type", "this server knows publish and direct");
    }
}

static void on_connect(wsch_hub *hub, wsch_hub_peer peer, wsch_str user_id, void *user) {
    char buf[400];
    size_t at = 0;
    int rc = put_raw(buf, sizeof buf, &at, "{\"user\":", 8);
    (void)user;
    if (rc == WSCH_OK) rc = put_json_string(buf, sizeof buf, &at, user_id.ptr, user_id.len);
    if (rc == WSCH_OK) rc = put_raw(buf, sizeof buf, &at, "}", 1);
    if (rc == WSCH_OK) (void)wsch_hub_send(hub, peer, "welcome", buf, at);
    if (A.verbose) fprintf(stderr, "connect %u: %.*s\n", (unsigned)peer.index, (int)user_id.len, user_id.ptr);
}

static void on_disconnect(wsch_hub *hub, wsch_hub_peer peer, int code, void *user) {
    (void)hub;
    (void)user;
    if (A.verbose) fprintf(stderr, "disconnect %u: %d\n", (unsigned)peer.index, code);
}

/* ---- HTTP: the page and the API ------------------------------------------- */

static const char *content_type(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return "application/octet-stream";
    if (strcmp(dot, ".html") == 0) return "text/html; charset=utf-8";
    if (strcmp(dot, ".css") == 0) return "text/css; charset=utf-8";
    if (strcmp(dot, ".js") == 0) return "text/javascript; charset=utf-8";
    if (strcmp(dot, ".svg") == 0) return "image/svg+xml";
    return "application/octet-stream";
}

/* Reads www/name into A.body. Only names from a fixed list reach here. */
static int load_file(const char *name, size_t *len) {
    char path[1200];
    FILE *f;
    long n;
    snprintf(path, sizeof path, "%s/%s", A.www, name);
    f = fopen(path, "rb");
    if (!f) return 0;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return 0;
    }
    free(A.body);
    A.body = (char *)malloc((size_t)n + 1);
    if (!A.body || fread(A.body, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        return 0;
    }
    fclose(f);
    *len = (size_t)n;
    return 1;
}

/* Sets a JSON body built in A.body. */
static void json_body(wsch_hub_http_response *res, const char *text) {
    size_t n = strlen(text);
    free(A.body);
    A.body = (char *)malloc(n + 1);
    if (!A.body) {
        res->status = 500;
        return;
    }
    memcpy(A.body, text, n + 1);
    res->status = 200;
    res->content_type = "application/json";
    res->body = A.body;
    res->body_len = n;
}

static void api_stats(wsch_hub_http_response *res) {
    static const char *const drop_names[WSCH_HUB_DROP_COUNT] = {"handshake",     "full", "origin",
                                                                "unauthorized",  "protocol",
                                                                "slow_consumer", "idle", "nomem"};
    char text[4096];
    size_t at;
    int i;
    wsch_hub_counters s;
    wsch_hub_stats(A.hub, &s);
    at = (size_t)snprintf(text, sizeof text,
                          "{\"peers\":%llu,\"open\":%llu,\"users\":%llu,\"channels\":%llu,\"subscriptions\":%llu,"
                          "\"bytes_queued\":%llu,\"accepted\":%llu,\"messages_in\":%llu,\"messages_out\":%llu,"
                          "\"encodes\":%llu,\"http_responses\":%llu,\"heap_bytes\":%llu,\"heap_blocks\":%llu,"
                          "\"refused_busy\":%llu,\"limits\":{\"max_clients\":%llu,\"idle_timeout_ms\":%lu,"
                          "\"ping_interval_ms\":%lu,\"close_timeout_ms\":%lu,\"deflate\":%s,\"max_queued_total\":%llu},"
                          "\"queued_total\":%llu,\"history\":{\"messages\":%llu,\"bytes\":%llu,\"replayed\":%llu,"
                          "\"recovered\":%llu,\"not_recovered\":%llu},\"presence\":{\"enabled\":%s,"
                          "\"members\":%llu,\"messages\":%llu,\"sent\":%llu,\"remote\":%llu,\"expired\":%llu},"
                          "\"sessions\":%llu,\"acks\":%llu,"
                          "\"duplicates\":%llu,\"drops\":{",
                          (unsigned long long)s.peers, (unsigned long long)s.open, (unsigned long long)s.users,
                          (unsigned long long)s.channels, (unsigned long long)s.subscriptions,
                          (unsigned long long)s.bytes_queued, (unsigned long long)s.accepted,
                          (unsigned long long)s.messages_in, (unsigned long long)s.messages_out,
                          (unsigned long long)s.encodes, (unsigned long long)s.http_responses,
                          (unsigned long long)A.heap_bytes, (unsigned long long)A.heap_blocks,
                          (unsigned long long)A.refused_503, (unsigned long long)A.max_ws,
                          (unsigned long)A.idle_timeout_ms, (unsigned long)A.ping_interval_ms,
                          (unsigned long)A.close_timeout_ms,
                          A.deflate ? "true" : "false", (unsigned long long)A.queued.limit,
                          (unsigned long long)A.queued.used, (unsigned long long)s.history_messages,
                          (unsigned long long)s.history_bytes, (unsigned long long)s.replayed,
                          (unsigned long long)s.recovered, (unsigned long long)s.not_recovered,
                          A.presence ? "true" : "false", (unsigned long long)s.presence_members,
                          (unsigned long long)s.presence_messages, (unsigned long long)s.presence_sent,
                          (unsigned long long)s.presence_remote, (unsigned long long)s.presence_expired,
                          (unsigned long long)s.sessions, (unsigned long long)s.acks,
                          (unsigned long long)s.duplicates);
    for (i = 0; i < WSCH_HUB_DROP_COUNT && at < sizeof text; i++)
        at += (size_t)snprintf(text + at, sizeof text - at, "%s\"%s\":%llu", i ? "," : "", drop_names[i],
                               (unsigned long long)s.drops[i]);
#ifdef CHAT_WITH_REDIS
    if (A.redis_on && at < sizeof text) {
        const redis_bridge *r = &A.redis;
        at += (size_t)snprintf(text + at, sizeof text - at,
                               "},\"bridge\":{\"channels\":%llu,\"published\":%llu,\"publish_errors\":%llu,"
                               "\"received\":%llu,\"own\":%llu,\"refused\":%llu,\"appended\":%llu,"
                               "\"append_errors\":%llu,\"fetches\":%llu,\"fetch_errors\":%llu,\"gaps\":%llu},"
                               "\"redis\":{\"subscriber\":%d,\"publisher\":%d,\"channels\":%lld,\"connects\":%llu,"
                               "\"published\":%llu,\"dropped\":%llu,\"received\":%llu,\"refused\":%llu,"
                               "\"pending_bytes\":%llu,\"stalls\":%llu,\"abandoned\":%llu,\"shared\":%s,"
                               "\"appended\":%llu,\"append_errors\":%llu,\"fetches\":%llu,\"fetch_errors\":%llu",
                               (unsigned long long)s.bridge_channels, (unsigned long long)s.bridge_published,
                               (unsigned long long)s.bridge_publish_errors, (unsigned long long)s.bridge_received,
                               (unsigned long long)s.bridge_own, (unsigned long long)s.bridge_refused,
                               (unsigned long long)s.bridge_appended, (unsigned long long)s.bridge_append_errors,
                               (unsigned long long)s.bridge_fetches, (unsigned long long)s.bridge_fetch_errors,
                               (unsigned long long)s.bridge_gaps, r->sub.up,
                               r->pub.up, r->channels, (unsigned long long)r->connects,
                               (unsigned long long)r->published, (unsigned long long)r->dropped,
                               (unsigned long long)r->received, (unsigned long long)r->refused,
                               (unsigned long long)r->pending, (unsigned long long)r->stalls,
                               (unsigned long long)r->abandoned, r->history ? "true" : "false",
                               (unsigned long long)r->appended, (unsigned long long)r->append_errors,
                               (unsigned long long)r->fetches, (unsigned long long)r->fetch_errors);
    }
#endif
    if (at < sizeof text) snprintf(text + at, sizeof text - at, "}}");
    json_body(res, text);
}

static void api_notify(const wsch_request *req, wsch_hub_http_response *res) {
    char channel[WSCH_HUB_MAX_CHANNEL_LEN + 1], to[256], text[1024], body[64];
    size_t clen = 0, tlen = 0, xlen = 0, at = 0, delivered = 0, cap;
    int have_channel = wsch_query_get(req->query, "channel", channel, sizeof channel, &clen) == WSCH_OK;
    int have_user = wsch_query_get(req->query, "user", to, sizeof to, &tlen) == WSCH_OK;
    char *buf;
    int rc;
    if (wsch_query_get(req->query, "text", text, sizeof text, &xlen) != WSCH_OK || have_channel == have_user) {
        res->status = 400;
        return;
    }
    cap = 64 + 6 * (clen + tlen + xlen);
    buf = scratch(cap);
    if (!buf) {
        res->status = 500;
        return;
    }
    rc = put_raw(buf, cap, &at, have_channel ? "{\"channel\":" : "{\"to\":", have_channel ? 11u : 6u);
    if (rc == WSCH_OK) rc = put_json_string(buf, cap, &at, have_channel ? channel : to, have_channel ? clen : tlen);
    if (rc == WSCH_OK) rc = put_raw(buf, cap, &at, ",\"from\":\"server\",\"text\":", 24);
    if (rc == WSCH_OK) rc = put_json_string(buf, cap, &at, text, xlen);
    if (rc == WSCH_OK) rc = put_raw(buf, cap, &at, "}", 1);
    if (rc == WSCH_OK) {
        rc = have_channel ? wsch_hub_broadcast(A.hub, channel, "notification", buf, at, &delivered)
                          : wsch_hub_send_to_user(A.hub, to, "notification", buf, at, &delivered);
    }
    if (rc != WSCH_OK) {
        res->status = rc == WSCH_ERR_STATE ? 503 : 400;     /* 503: Redis is away (shared positions) */
        if (rc == WSCH_ERR_STATE)
            res->extra_headers = "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nRetry-After: 1\r\n";
        return;
    }
    snprintf(body, sizeof body, "{\"delivered\":%lu}", (unsigned long)delivered);
    json_body(res, body);
}

static const char fallback_page[] =
    "<!doctype html><meta charset=utf-8><title>chat_server</title>"
    "<p>The page files were not found. Start chat_server from the repository root, or pass --www DIR.";

static void on_http(wsch_hub *hub, const wsch_hub_request *req, wsch_hub_http_response *res, void *user) {
    static const char *const files[] = {"index.html", "app.css", "app.js"};
    wsch_str path = req->http->path;
    size_t i, len;
    (void)hub;
    (void)user;
    wsch_str method = req->http->method;
    if (!(method.len == 3 && memcmp(method.ptr, "GET", 3) == 0) &&
        !(method.len == 4 && memcmp(method.ptr, "HEAD", 4) == 0)) {
        res->status = 405;
        res->extra_headers = "Allow: GET, HEAD\r\n";
        return;
    }
    res->extra_headers = "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n";
    if (path.len == 10 && memcmp(path.ptr, "/api/stats", 10) == 0) {
        api_stats(res);
        return;
    }
    if (path.len == 11 && memcmp(path.ptr, "/api/notify", 11) == 0) {
        api_notify(req->http, res);
        return;
    }
    for (i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t n = strlen(files[i]);
        int is_index = i == 0 && path.len == 1 && path.ptr[0] == '/';
        if (!is_index && !(path.len == n + 1 && path.ptr[0] == '/' && memcmp(path.ptr + 1, files[i], n) == 0))
            continue;
        res->content_type = content_type(files[i]);
        if (A.have_www && load_file(files[i], &len)) {
            res->status = 200;
            res->body = A.body;
            res->body_len = len;
        } else if (i == 0) {
            res->status = 200;
            res->body = fallback_page;
            res->body_len = sizeof fallback_page - 1;
        } else {
            res->status = 404;
            res->content_type = NULL;
        }
        return;
    }
}

/* ---- a full server still answers ---------------------------------------------
   With --max-clients the listener gets a transport hook (over TLS with
   --tls-cert, else plain TCP: its read and write are recv and send); it
   is used here to see a connection before the hub does. One accepted
   while max_ws connections are held goes to the reserve: its request head
   is gathered first, and a WebSocket upgrade is answered 503 with
   Retry-After while plain HTTP (/api/stats) goes on to the hub. Past the
   reserve too, a connection gets the same 503 before its request is read
   (best effort: a request that arrives after the close may turn the
   close into a reset). Without --max-clients there is no hook: the
   layer's direct path. */

typedef struct tconn {
    int fd;
    void *tls;                  /* A.tls's session, or NULL: plain TCP */
    int judged;                 /* no head to judge, or it was plain HTTP */
    size_t len, given;          /* head bytes gathered, and handed on */
    char *head;                 /* a reserve connection's request head (HEAD_MAX), else NULL */
} tconn;

static const char busy_503[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 26\r\n"
    "Retry-After: " RETRY_AFTER_S "\r\nConnection: close\r\n\r\n"
    "The server is at capacity\n";

/* Best effort: one write, through TLS when the connection has it. */
static void answer_busy(const tconn *t, int fd, const char *why) {
    size_t n;
    A.refused_503++;
    if (A.verbose) fprintf(stderr, "chat_server: %s: answered 503\n", why);
    if (t && t->tls) (void)A.tls->write(t->tls, busy_503, sizeof busy_503 - 1, &n, A.tls->user);
    else if (!A.tls) (void)send(fd, busy_503, sizeof busy_503 - 1, MSG_NOSIGNAL);
}

static void *tconn_open(int fd, int server, const char *host, void *user) {
    tconn *t;
    (void)user;
    if (A.conns >= A.max_ws + HTTP_RESERVE) {
        answer_busy(NULL, fd, "full, the reserve too");     /* before TLS: the close alone */
        return NULL;            /* the loop closes it */
    }
    t = (tconn *)calloc(1, sizeof *t);
    if (t && A.conns >= A.max_ws && !(t->head = (char *)malloc(HEAD_MAX))) {
        free(t);
        t = NULL;
    }
    if (t && A.tls && !(t->tls = A.tls->open(fd, server, host, A.tls->user))) {
        free(t->head);
        free(t);
        t = NULL;
    }
    if (!t) return NULL;
    t->fd = fd;
    t->judged = t->head == NULL;
    A.conns++;
    return t;
}

static void tconn_close(void *session, void *user) {
    tconn *t = (tconn *)session;
    (void)user;
    A.conns--;
    if (t->tls) A.tls->close(t->tls, A.tls->user);
    free(t->head);
    free(t);
}

static wsch_posix_io tconn_handshake(void *session, void *user) {
    tconn *t = (tconn *)session;
    (void)user;
    return t->tls ? A.tls->handshake(t->tls, A.tls->user) : WSCH_POSIX_IO_DONE;
}

static wsch_posix_io tconn_shutdown(void *session, void *user) {
    tconn *t = (tconn *)session;
    (void)user;
    return t->tls && A.tls->shutdown ? A.tls->shutdown(t->tls, A.tls->user) : WSCH_POSIX_IO_DONE;
}

static wsch_posix_io tconn_read_raw(const tconn *t, void *buf, size_t cap, size_t *n) {
    ssize_t k;
    if (t->tls) return A.tls->read(t->tls, buf, cap, n, A.tls->user);
    do k = recv(t->fd, buf, cap, 0);
    while (k < 0 && errno == EINTR);
    if (k > 0) {
        *n = (size_t)k;
        return WSCH_POSIX_IO_DONE;
    }
    if (k == 0) return WSCH_POSIX_IO_EOF;
    return errno == EAGAIN || errno == EWOULDBLOCK ? WSCH_POSIX_IO_WANT_READ : WSCH_POSIX_IO_ERROR;
}

/* A reserve connection's head is gathered until whole (or HEAD_MAX), then
   judged: an upgrade gets the 503 and the connection ends; plain HTTP (or
   a broken head, which the hub answers) is handed on, then the rest. */
static wsch_posix_io tconn_read(void *session, void *buf, size_t cap, size_t *n, void *user) {
    tconn *t = (tconn *)session;
    (void)user;
    *n = 0;
    while (!t->judged) {
        wsch_request req;
        wsch_str up;
        size_t used, prev = t->len, got = 0;
        wsch_posix_io io = tconn_read_raw(t, t->head + t->len, HEAD_MAX - t->len, &got);
        int rc;
        if (io != WSCH_POSIX_IO_DONE) return io;
        t->len += got;
        rc = wsch_request_parse(t->head, t->len, prev, HEAD_MAX, &req, &used);
        if (rc == WSCH_INCOMPLETE && t->len < HEAD_MAX) continue;
        if (rc == WSCH_OK && wsch_header_find(req.headers, req.num_headers, "Upgrade", &up) == WSCH_OK) {
            answer_busy(t, t->fd, "full, an upgrade");
            return WSCH_POSIX_IO_ERROR;
        }
        t->judged = 1;
    }
    if (t->given < t->len) {
        *n = t->len - t->given < cap ? t->len - t->given : cap;
        memcpy(buf, t->head + t->given, *n);
        t->given += *n;
        return WSCH_POSIX_IO_DONE;
    }
    return tconn_read_raw(t, buf, cap, n);
}

static wsch_posix_io tconn_write(void *session, const void *data, size_t len, size_t *n, void *user) {
    tconn *t = (tconn *)session;
    ssize_t k;
    (void)user;
    if (t->tls) return A.tls->write(t->tls, data, len, n, A.tls->user);
    do k = send(t->fd, data, len, MSG_NOSIGNAL);
    while (k < 0 && errno == EINTR);
    if (k > 0) {
        *n = (size_t)k;
        return WSCH_POSIX_IO_DONE;
    }
    return k == 0 || errno == EAGAIN || errno == EWOULDBLOCK ? WSCH_POSIX_IO_WANT_WRITE : WSCH_POSIX_IO_ERROR;
}

static const wsch_posix_transport reserve_transport = {tconn_open, tconn_handshake, tconn_read, tconn_write,
                                                       tconn_shutdown, tconn_close, NULL};

/* ---- setup ------------------------------------------------------------------ */

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* --www, else examples/www here, else ../examples/www next to the binary. */
static void find_www(const char *given) {
    char exe[900];
    ssize_t n;
    if (given) {
        snprintf(A.www, sizeof A.www, "%s", given);
        A.have_www = is_dir(A.www);
        return;
    }
    snprintf(A.www, sizeof A.www, "examples/www");
    if ((A.have_www = is_dir(A.www)) != 0) return;
    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        char *slash;
        exe[n] = '\0';
        slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(A.www, sizeof A.www, "%s/../examples/www", exe);
        A.have_www = is_dir(A.www);
    }
}

/* The demo's part of the hub desc: its hooks and counting allocator (the
   effects are the loop's; bench/publish.c gives in-memory ones). */
static void chat_hub_desc(wsch_hub_desc *d) {
    d->subprotocol = "wsch";
    d->allocator.alloc = heap_alloc;
    d->allocator.free = heap_free;
    d->allocator.user = &A;
    d->authenticate = authenticate;
    d->authorize_subscribe = authorize_subscribe;
    d->on_http = on_http;
    d->on_connect = on_connect;
    d->on_disconnect = on_disconnect;
    d->on_message = on_message;
    d->user = &A;
}

/* The loop's log: only with --verbose (a full descriptor table logs every
   connection it sheds). */
static void on_log(const char *msg, void *user) {
    (void)user;
    fprintf(stderr, "chat_server: %s\n", msg);
}

/* The loop, the hub on it, the listener and (--redis) the Redis links;
   prints the line tests look for: "chat_server: listening on
   http://HOST:PORT/ (hub at ws://HOST:PORT/ws)". 0, or -1 after saying why. */
static int start(const wsch_hub_desc *d, const char *host, uint16_t port) {
    wsch_posix_loop_desc ld;
    wsch_posix_listen_desc sd;
    wsch_posix_listener *l;
    struct rlimit rl;
    int rc;
    /* 10,000 sockets need more than the usual 1024 descriptors. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    memset(&ld, 0, sizeof ld);
    ld.shutdown_timeout_ms = SHUTDOWN_MS;
    ld.no_gather = A.no_gather;
    if (A.verbose) ld.log = on_log;
    memset(&sd, 0, sizeof sd);
    sd.host = host;
    sd.port = port;
    sd.backlog = 4096;          /* thousands of clients may connect at once */
    sd.transport = A.max_ws ? &reserve_transport : A.tls;
    if ((rc = wsch_posix_loop_create(&ld, &A.loop)) != WSCH_OK || (rc = wsch_posix_hub_create(A.loop, d, &A.hub)) != WSCH_OK) {
        fprintf(stderr, "chat_server: %s\n", wsch_err_str(rc));
        return -1;
    }
    if (wsch_posix_listen(A.loop, &sd, &l) != WSCH_OK || wsch_posix_serve_hub(l, A.hub) != WSCH_OK) {
        fprintf(stderr, "chat_server: cannot listen on %s:%u: %s\n", host, (unsigned)port, strerror(errno));
        return -1;
    }
    (void)wsch_posix_handle_signals(A.loop);
#ifdef CHAT_WITH_REDIS
    if (A.redis_on) redis_bridge_start(&A.redis, A.loop, A.hub);
#endif
    port = wsch_posix_listener_port(l);
    printf("chat_server: listening on %s://%s:%u/ (hub at %s://%s:%u/ws)\n", A.tls ? "https" : "http", host,
           (unsigned)port, A.tls ? "wss" : "ws", host, (unsigned)port);
    fflush(stdout);
    return 0;
}

static void usage(void) {
    fputs("usage: chat_server [--port N] [--host ADDR] [--token USER=SECRET]... [--www DIR]\n"
          "                   [--max-clients N] [--max-outbound SIZE] [--max-queued-total SIZE]\n"
          "                   [--ping-interval MS] [--idle-timeout MS] [--close-timeout MS] [--no-deflate] [--no-gather]\n"
          "                   [--history N] [--history-age S] [--history-bytes SIZE] [--no-presence] [--presence-ttl S]\n"
          "                   [--redis HOST[:PORT] [--redis-prefix P]] [--tls-cert F --tls-key F] [--verbose]\n"
          "  --port N            TCP port, 0 = any free one (default 8080)\n"
          "  --host ADDR         address to listen on (default 127.0.0.1)\n"
          "  --token USER=SECRET accept SECRET as USER's token (repeatable); without any,\n"
          "                      every non-empty UTF-8 token without ':' is the user name\n"
          "  --www DIR           the page's files (default examples/www)\n"
          "  --max-clients N     clients at once (default 65536); past it 16 more connections serve\n"
          "                      plain HTTP only (/api/stats) and upgrades get 503 with Retry-After\n"
          "  --max-outbound SIZE unsent bytes per client before it is dropped (default 1M)\n"
          "  --max-queued-total SIZE  unsent bytes of all clients together (default 256M); past\n"
          "                      it, a client whose output would have to wait is dropped (4008)\n"
          "  --ping-interval MS  ping clients silent this long (default 15000); clients answer\n"
          "  --idle-timeout MS   close clients silent this long, pongs counting (default 25000)\n"
          "  --close-timeout MS  bound on a closing handshake (default 3000): a silent client is\n"
          "                      freed within idle + close timeout (28 s by default)\n"
          "  --redis HOST[:PORT] join the other chat_servers using this Redis (port 6379)\n"
          "  --redis-prefix P    prefix of the Redis channels (default \"wsch:\")\n"
          "  --history N         messages kept per channel for clients to recover (default 200; 0 = off)\n"
          "  --history-age S     ... for at most S seconds (default 300)\n"
          "  --history-bytes SIZE  ... in at most SIZE bytes for all channels (default 64M)\n"
          "  --no-presence       do not track who is in each channel (on by default; a client's\n"
          "                      ?device=NAME on the upgrade is shown beside its user)\n"
          "  --presence-ttl S    with --redis: a process silent this long drops out of the others'\n"
          "                      presence (default 30; gone within 4/3 of it after a kill -9)\n"
          "  --no-deflate        refuse permessage-deflate (accepted by default in a build with zlib)\n"
          "  --no-gather         write every message to its clients at once instead of once per\n"
          "                      loop turn (gathering costs no latency past the turn; for measuring it)\n"
          "  --tls-cert F, --tls-key F  serve the page over https and the hub over wss (PEM files:\n"
          "                      the certificate chain, its key; a build with OpenSSL)\n"
          "  --verbose           log connections to stderr\n",
          stderr);
}

#ifdef CHAT_WITH_REDIS
/* HOST[:PORT] (or [V6ADDR]:PORT) into host and port; 0 or -1. */
static int parse_redis(const char *arg, char *host, size_t cap, int *port) {
    const char *colon = strrchr(arg, ':');
    const char *h = arg;
    size_t n = strlen(arg);
    uint16_t p = 6379;
    if (arg[0] == '[') {
        const char *close = strchr(arg, ']');
        if (!close) return -1;
        h = arg + 1;
        n = (size_t)(close - h);
        colon = close[1] == ':' ? close + 1 : NULL;
        if (close[1] && !colon) return -1;
    } else if (colon) {
        n = (size_t)(colon - arg);
    }
    if (colon && args_port(colon + 1, &p) != 0) return -1;
    if (n == 0 || n >= cap || p == 0) return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    *port = p;
    return 0;
}
#endif

int main(int argc, char **argv) {
    wsch_hub_desc d;
    const char *host = "127.0.0.1", *www = NULL;
#ifdef CHAT_WITH_REDIS
    const char *redis_prefix = "wsch:";
    char redis_host[256];
    int redis_port = 0;
#endif
    const char *tls_cert = NULL, *tls_key = NULL;
    uint16_t port = 8080;
    int i, no_deflate = 0, history_set = 0, no_presence = 0;
    memset(&d, 0, sizeof d);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        size_t sz;
        if (strcmp(a, "--port") == 0 && v && args_port(v, &port) == 0) i++;
        else if (strcmp(a, "--host") == 0 && v) { host = v; i++; }
        else if (strcmp(a, "--www") == 0 && v) { www = v; i++; }
        else if (strcmp(a, "--token") == 0 && v && hub_tokens_add(&A.tokens, v) == 0) i++;
        else if (strcmp(a, "--max-clients") == 0 && v && args_size(v, &sz) == 0 && sz &&
                 sz <= 0xFFFFFFF0u - HTTP_RESERVE) {
            A.max_ws = sz;
            d.max_peers = sz + HTTP_RESERVE;
            i++;
        } else if (strcmp(a, "--max-outbound") == 0 && v && args_size(v, &sz) == 0 && sz) {
            d.limits.max_outbound_bytes = sz;
            i++;
        } else if (strcmp(a, "--max-queued-total") == 0 && v && args_size(v, &sz) == 0 && sz) {
            A.queued.limit = sz;
            i++;
        } else if (strcmp(a, "--ping-interval") == 0 && v && args_size(v, &sz) == 0 && sz &&
                   sz <= 0xFFFFFFFFu) {
            d.ping_interval_ms = (uint32_t)sz;
            i++;
        } else if (strcmp(a, "--idle-timeout") == 0 && v && args_size(v, &sz) == 0 && sz &&
                   sz <= 0xFFFFFFFFu) {
            d.idle_timeout_ms = (uint32_t)sz;
            i++;
        } else if (strcmp(a, "--close-timeout") == 0 && v && args_size(v, &sz) == 0 && sz &&
                   sz <= 0xFFFFFFFFu) {
            d.limits.close_timeout_ms = (uint32_t)sz;
            i++;
        } else if ((strcmp(a, "--redis") == 0 || strcmp(a, "--redis-prefix") == 0) && v) {
#ifdef CHAT_WITH_REDIS
            int is_prefix = strcmp(a, "--redis-prefix") == 0;
            if (is_prefix ? strlen(v) > REDIS_BRIDGE_PREFIX_MAX
                          : parse_redis(v, redis_host, sizeof redis_host, &redis_port) != 0) {
                usage();
                return 2;
            }
            if (is_prefix) redis_prefix = v;
            else A.redis_on = 1;
            i++;
#else
            fprintf(stderr, "chat_server: built without Redis support (build with -DCHAT_WITH_REDIS -lhiredis)\n");
            return 2;
#endif
        } else if (strcmp(a, "--history") == 0 && v && args_size(v, &sz) == 0 && sz <= (1u << 30)) {
            d.history_size = (uint32_t)sz;
            history_set = 1;
            i++;
        } else if (strcmp(a, "--history-age") == 0 && v && args_size(v, &sz) == 0 && sz &&
                   sz <= 0xFFFFFFFFu / 1000u) {
            d.history_ttl_ms = (uint32_t)sz * 1000u;
            i++;
        } else if (strcmp(a, "--history-bytes") == 0 && v && args_size(v, &sz) == 0 && sz) {
            d.history_max_bytes = sz;
            i++;
        } else if (strcmp(a, "--no-deflate") == 0) {
            no_deflate = 1;
        } else if (strcmp(a, "--no-gather") == 0) {
            A.no_gather = 1;
        } else if (strcmp(a, "--no-presence") == 0) {
            no_presence = 1;
        } else if (strcmp(a, "--presence-ttl") == 0 && v && args_size(v, &sz) == 0 && sz &&
                   sz <= 0xFFFFFFFFu / 1000u) {
            d.presence_ttl_ms = (uint32_t)sz * 1000u;
            i++;
        } else if (strcmp(a, "--tls-cert") == 0 && v) {
            tls_cert = v;
            i++;
        } else if (strcmp(a, "--tls-key") == 0 && v) {
            tls_key = v;
            i++;
        } else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) {
            A.verbose = 1;
        } else {
            usage();
            return strcmp(a, "--help") == 0 ? 0 : 2;
        }
    }
    if (!tls_cert != !tls_key) {
        fputs("chat_server: --tls-cert and --tls-key go together\n", stderr);
        return 2;
    }
    if (tls_cert) {
#ifdef EXAMPLE_TLS
        if (tls_openssl_server(&A.openssl, tls_cert, tls_key) != WSCH_OK) {
            fprintf(stderr, "chat_server: %s\n", tls_openssl_error(&A.openssl));
            return 1;
        }
        A.tls = &A.openssl.transport;
#else
        fputs("chat_server: --tls-cert needs a build with OpenSSL (-DEXAMPLE_TLS -lssl -lcrypto; Debian: libssl-dev)\n",
              stderr);
        return 2;
#endif
    }
    if (!d.idle_timeout_ms) d.idle_timeout_ms = IDLE_TIMEOUT_MS;
    if (!history_set) d.history_size = HISTORY_SIZE;
    d.positions = 1;        /* with --history 0 too: a gap is never silent */
    d.presence = A.presence = !no_presence;
    if (!d.history_ttl_ms) d.history_ttl_ms = HISTORY_AGE_S * 1000u;
    if (!d.ping_interval_ms) d.ping_interval_ms = d.idle_timeout_ms > PING_INTERVAL_MS ? PING_INTERVAL_MS
                                                                                      : d.idle_timeout_ms / 2u;
    A.ping_interval_ms = d.ping_interval_ms;
    if (!d.limits.close_timeout_ms) d.limits.close_timeout_ms = CLOSE_TIMEOUT_MS;
    A.idle_timeout_ms = d.idle_timeout_ms;
    A.close_timeout_ms = d.limits.close_timeout_ms;
    find_www(www);
    if (!A.have_www) fprintf(stderr, "chat_server: no page directory at %s; serving a placeholder\n", A.www);

    chat_hub_desc(&d);      /* the effects are the loop's (wsch_posix_hub_create) */
    /* Browsers offer it on every connection; a broadcast is compressed once. */
    if (!no_deflate) d.deflate.codec = deflate_zlib_codec();
    A.deflate = d.deflate.codec != NULL;
    if (!A.queued.limit) A.queued.limit = MAX_QUEUED_TOTAL;
    d.limits.outbound_budget = &A.queued;
#ifdef CHAT_WITH_REDIS
    if (A.redis_on) {
        if (redis_bridge_init(&A.redis, redis_host, redis_port, redis_prefix) != 0) {
            fprintf(stderr, "chat_server: bad --redis or --redis-prefix\n");
            return 2;
        }
        /* History on: Redis numbers and keeps channel messages for every
           process (shared positions); off: the bridge only publishes. */
        redis_bridge_history(&A.redis, d.history_size, d.history_ttl_ms);
        d.bridge = redis_bridge_hub_bridge(&A.redis);
    }
#endif
    if (start(&d, host, port) != 0) return 1;
    wsch_posix_loop_run(A.loop);    /* until SIGINT/SIGTERM: clients get 1001, and are gone or cut after 3 s */
#ifdef CHAT_WITH_REDIS
    /* Clients first, Redis still up: their leaves reach the other servers'
       presence at once (the channels going away here say so), then a turn
       for those last publishes to leave, then Redis, then the hub. */
    if (A.redis_on) {
        (void)wsch_posix_loop_run_once(A.loop, 50);
        redis_bridge_stop(&A.redis);
    }
#endif
    wsch_posix_loop_destroy(A.loop);   /* the hub with it */
#ifdef EXAMPLE_TLS
    if (A.tls) tls_openssl_free(&A.openssl);
#endif
    free(A.body);
    free(A.scratch);
    hub_tokens_free(&A.tokens);
    if (A.heap_bytes != 0) fprintf(stderr, "chat_server: %lu library heap bytes not freed\n", (unsigned long)A.heap_bytes);
    printf("chat_server: stopped\n");
    return A.heap_bytes != 0;
}
