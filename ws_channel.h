/* ws_channel.h - v0.1.0 - MIT or public domain - WebSocket (RFC 6455) and a
   small real-time channel system for C99, in one header. No dependencies
   beyond the C standard library.

   Do this:
       #define WS_CHANNEL_IMPLEMENTATION
   before you include this file in *one* C or C++ file to create the
   implementation. Every other file just includes it.

DOCUMENTATION

   What it is
   ----------
   Everything a C program needs to speak WebSocket, in both roles, and to run
   a small message system on top of it:

     primitives   SHA-1, base64, incremental UTF-8 validation, masking
     frame codec  encode and decode frame headers (RFC 6455 section 5.2)
     handshake    request/response parsing and building, URLs, query, tokens,
                  permessage-deflate negotiation (RFC 7692)
     connection   wsch_conn: one connection, either role - validation,
                  reassembly, ping/pong, the close handshake, output queue,
                  compression through a codec you supply (zlib in
                  examples/deflate_zlib.h)
     envelope     the {"type": ..., "payload": ...} message, strict JSON
     client       wsch_client: reconnecting client with backoff, heartbeat,
                  dead-peer detection, subscriptions replayed on reconnect,
                  missed messages recovered, acknowledged sends
     hub          wsch_hub: server side - auth, users, channels, broadcast
                  encoded once, send to a user, backpressure, channel history
                  with offsets and recovery, acks per session, and a bridge
                  interface to join several hub processes, which may number
                  and keep channel messages for all of them, so a client
                  recovers on any (over Redis: examples/redis_bridge.h)

   Each layer is usable alone; the codec layers never allocate.

   Opt-in, behind WS_CHANNEL_POSIX: a POSIX loop (epoll, kqueue or poll)
   that supplies every effect below - timers, clock, randomness, listen,
   accept, connect with a timeout, signals, a TLS transport hook - for a
   program without a loop of its own. See "POSIX loop" in the API part.

   What it does NOT do
   -------------------
   It never opens a socket, resolves a name, reads a clock, starts a thread
   or does TLS. Your program owns the event loop (poll, epoll, kqueue, libuv,
   a game loop, an RTOS) and tells the library what happened:

       bytes arrived        wsch_conn_feed(c, data, len)
       socket writable      wsch_conn_writable(c)
       a timer fired        wsch_conn_timer_fired(c, id)
       you saw EOF/error    wsch_conn_transport_closed(c)

   and the library asks for effects through one struct, wsch_effects, in
   each descriptor, and reports events (on_open, on_message, on_close...).
   For TLS, put your TLS library between the socket and these calls.

   Effects and the transport: one set of rules for conn, client and hub
   ---------------------------------------------------------------------
   - Each effect gets the user pointer of the object it acts for: a conn's
     (given to wsch_conn_create), a hub peer's (given to wsch_hub_accept),
     a client's (wsch_client_desc.user). The hub's own effects (now_ms,
     random_bytes) get wsch_hub_desc.user.
   - send(data, len) returns how many bytes it took. Fewer than len, or 0,
     means "would block": the rest is queued and the transport wants
     writing. WSCH_SEND_ERROR means the transport is broken (EPIPE,
     ECONNRESET): the connection ends at once (close 1006,
     WSCH_ERR_TRANSPORT).
   - Closing, one rule on every path: the library calls close() exactly
     once for every transport it was given (a conn's, each hub peer's, each
     one a client's connect() asked for, even one that failed to connect),
     whoever started the end: a clean close by either side, a protocol
     failure, a timeout, a send error, your ..._transport_closed() report,
     or destroying an object whose transport is still open. close() is the
     last callback about that transport: close the socket there and nowhere
     else. A conn's on_close comes just before it. Any call may end in
     close(), so release the rest of your per-connection state once that
     call has returned (want() is then 0): destroy the conn, free your
     struct. (Destroying from inside close() is safe too, the free waits
     for the library to return; but then touch nothing of that connection
     after the call.) A hub peer's handle goes stale when its close() runs.
     Report ..._transport_closed() only when you see the end first (EOF, a
     read error); the library then runs the same path.
   - Readiness (wslay's want_read/want_write): wsch_conn_want(),
     wsch_hub_peer_want() and wsch_client_want() say what the transport
     should wait for now, WSCH_WANT_READ and/or WSCH_WANT_WRITE; 0 means
     finished (close() has run). Ask after each event instead of inferring
     it from callbacks: watch for writability exactly while WRITE is set.

   Quick start: an echo server connection
   --------------------------------------
       static size_t my_send(const void *p, size_t n, void *user) {
           ssize_t r = send(((struct peer *)user)->fd, p, n, MSG_NOSIGNAL);
           if (r >= 0) return (size_t)r;
           return errno == EAGAIN || errno == EINTR ? 0 : WSCH_SEND_ERROR;
       }
       static void my_close(void *user) {    // the last callback about the socket
           struct peer *p = (struct peer *)user;
           close(p->fd);
           p->fd = -1;
       }
       static void my_message(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
           wsch_conn_send(c, op, data, len); // echo
       }
       static wsch_conn_desc desc;           // one desc serves every connection
       desc.role = WSCH_ROLE_SERVER;
       desc.effects.send = my_send;
       desc.effects.close = my_close;
       desc.on_message = my_message;
       desc = wsch_conn_desc_defaults(&desc); // limits resolved once, for all
       wsch_conn_create(&desc, peer, &peer->conn);
       ...
       n = recv(fd, buf, sizeof buf, 0);     // in your loop
       if (n > 0) wsch_conn_feed(peer->conn, buf, n);  // handshake, frames, pings
       else wsch_conn_transport_closed(peer->conn);     // my_close runs
       ...                                   // writable: wsch_conn_writable()
       if (wsch_conn_want(peer->conn) == 0) {           // finished: my_close ran
           wsch_conn_destroy(peer->conn);
           free(peer);
       } else {
           want_pollout = wsch_conn_want(peer->conn) & WSCH_WANT_WRITE;
       }

   examples/echo_server.c is this, complete, on epoll.

   Quick start: a reconnecting client
   ----------------------------------
       wsch_client_desc d;
       memset(&d, 0, sizeof d);              // zero = documented default
       d.url = "ws://127.0.0.1:8080/ws";
       d.token = "secret";                   // ?token=... (or as a Bearer header)
       d.effects.connect = my_connect;       // open TCP; later call
                                             // wsch_client_transport_open/_failed
       d.effects.send = my_send; d.effects.close = my_close;
       d.effects.timer_set = my_timer_set; d.effects.timer_cancel = my_timer_cancel;
       d.effects.now_ms = my_now; d.effects.random_bytes = my_random;
       d.on_status = my_status;              // connected / connecting / disconnected
       d.on_stop = my_stopped;               // gave up, refused, or disconnect() done
       wsch_client_create(&d, &client);
       wsch_client_on(client, "message", on_chat, NULL, &handle);
       wsch_client_subscribe(client, "news"); // replayed after every reconnect
       wsch_client_connect(client);
       wsch_client_send(client, "chat", "{\"text\":\"hi\"}", WSCH_CSTR);
   Backoff is min(1 s * 2^n, 30 s) with jitter, at most 10 tries in a row
   (the first connect and 9 retries); close codes 4001 and 1008 and HTTP
   401/403 stop the retries. See the state table in the client section
   below. examples/client_cli.c (poll) and examples/libuv_client.c (libuv)
   are complete programs.

   Quick start: a channel hub
   --------------------------
       wsch_hub_desc d;
       memset(&d, 0, sizeof d);
       d.effects.send = my_send;             // per-peer effects; user = your peer
       d.effects.close = my_close;           // close the fd; the handle goes stale
       d.authenticate = check_token;         // token -> user id, or refuse (4001)
       d.on_message = on_app_message;        // anything but ping/subscribe/unsubscribe
       wsch_hub_create(&d, &hub);
       ...                                   // for each accepted socket:
       wsch_hub_accept(hub, NULL, peer, &peer->handle);
       wsch_hub_feed(hub, peer->handle, buf, n);
       ...
       wsch_hub_broadcast(hub, "news", "message", "{\"text\":\"hi\"}", WSCH_CSTR, NULL);
       wsch_hub_send_to_user(hub, "alice", "notice", payload, len, NULL);
   examples/hub_server.c is a minimal hub server and examples/chat_server.c
   serves the demo page beside its hub, both on the header's POSIX loop
   (WS_CHANNEL_POSIX); the calls above are what that loop makes.

   Ownership and lifetimes
   -----------------------
   - Descriptors, and the strings in them: wsch_client_create() and
     wsch_hub_create() *copy* theirs (the desc need not outlive the call);
     wsch_conn_create() *borrows* its desc until wsch_conn_destroy(), since
     one desc serves thousands of connections (each with its own user
     pointer): resolve it once with wsch_conn_desc_defaults() and keep it.
     The caller's user pointers are never owned.
   - Strings passed to a function are *borrowed until return*: payloads and
     reasons as (pointer, length), where the length WSCH_CSTR means
     NUL-terminated; names (types, channels, user ids, keys) and header
     text NUL-terminated.
   - Data handed to a callback is *valid only during the callback*. Data you
     pass to a send function is *copied* (or sent) *before return*.
   - Received bytes passed to wsch_conn_feed() are modified in place
     (unmasked) and may be handed to on_message without a copy.
   - Parsed spans (wsch_str) are *borrowed* from the buffer they were parsed
     from.
   - An object may be destroyed from inside its own callbacks; the free is
     deferred until the library's call returns.

   Threading
   ---------
   No globals, no thread-locals. Objects are independent: use any number,
   each from one thread at a time.

   Errors
   ------
   Functions return WSCH_OK (0) or a negative wsch_err; wsch_err_str() names
   it. Incremental parsers return WSCH_INCOMPLETE when they need more bytes.
   A protocol violation by the peer fails the connection with the RFC close
   code (1002 protocol, 1007 bad UTF-8, 1009 too big) and on_close reports
   it; peer bytes never reach an assert. Asserts guard caller misuse only.

   Allocation
   ----------
   Only the connection, client and hub allocate, through the allocator in
   their descriptor ({alloc, free, user}; zero = malloc/free). Nothing is
   allocated per message on the fast path: a whole frame inside the fed
   buffer is delivered in place, and output goes straight to send() when the
   socket takes it. Buffers exist only while a message spans several feeds
   or output is waiting; a broadcast frame waits by reference, in an entry
   the budget keeps for reuse (a hub always has one), so once warm a
   broadcast allocates its frame and nothing per peer. An idle open
   connection is one small struct.

   Limits and defaults (wsch_limits, in every descriptor; zero = default)
   ---------------------------------------------------------------------
     max_frame_size        16 MiB   larger data frame: close 1009
     max_message_size      16 MiB   larger reassembled message: close 1009
     max_outbound_bytes    32 MiB   output memory held unsent; sends beyond
                                    fail with WSCH_ERR_QUEUE_FULL (close
                                    frames pass)
     outbound_budget       none     a wsch_budget shared by many connections:
                                    a process-wide cap on queued output
     max_header_bytes      8192     opening handshake head: HTTP 431
     handshake_timeout_ms  10000    then the transport is closed
     close_timeout_ms      5000     closing handshake bound
   A connection keeps the first three as 32-bit numbers: larger values act
   as 4 GiB - 1. Output is counted as the memory it holds: the unsent bytes
   and each queued piece's own bookkeeping (4 x sizeof(void *)), so a peer
   that makes us queue many tiny frames holds no more than its limit. While output waits, the answer to a ping waits in one
   place that each newer ping overwrites (RFC 6455 5.5.3: a pong may answer
   only the latest ping), so a peer that pings and never reads holds one
   pong. wsch_conn_desc_defaults() resolves them once for a desc
   shared by many connections. A hub defaults to 64 KiB messages and 1 MiB
   queued per peer, and documents its own limits (64 channels per peer,
   90 s idle timeout; history off, or per channel as configured, 5 minutes
   and 64 MiB in all by default; sessions remembered 5 minutes); the client
   its queue, outbox (256 messages, 256 KiB) and backoff.

   The envelope
   ------------
   Messages of the client and hub are {"type": T, "payload": P} text frames.
   Decoding is one strict RFC 8259 pass: the whole document must be valid
   JSON (nesting at most WSCH_JSON_MAX_DEPTH), strings valid UTF-8, a lone
   surrogate escape is refused, and a repeated "type" or "payload" key is
   refused rather than guessed at. The type is unescaped into the envelope;
   the payload is a span into your buffer. Lookups (wsch_json_get_string,
   _get_number, _get_int, _get_raw, wsch_envelope_get_channel) read one
   top-level key of a payload without building a tree;
   wsch_json_get_members reads several in one pass, and
   wsch_envelope_get_members does so on a decoded payload without
   validating it again.

   Compile-time options
   --------------------
   "Everywhere": define it the same way before every #include of this file.
   "Implementation": only the file that defines WS_CHANNEL_IMPLEMENTATION
   reads it.
     WS_CHANNEL_IMPLEMENTATION  in one file: emit the implementation
     WS_CHANNEL_STATIC          everywhere: all functions static (a private
                                copy per translation unit; unused ones do not
                                warn)
     WS_CHANNEL_NO_CONN         everywhere: leave out wsch_conn (and so the
                                client and the hub): a codec-only build is
                                WS_CHANNEL_NO_CONN + WS_CHANNEL_NO_ENVELOPE
     WS_CHANNEL_NO_ENVELOPE     everywhere: leave out the envelope and JSON
                                (and so the client and the hub)
     WS_CHANNEL_NO_CLIENT       everywhere: leave out wsch_client
     WS_CHANNEL_NO_HUB          everywhere: leave out wsch_hub
     WSCH_ASSERT(c)             implementation; default assert()
     WSCH_MEMCPY, WSCH_MEMSET, WSCH_MEMMOVE, WSCH_MEMCMP, WSCH_MEMCHR,
     WSCH_STRLEN                implementation; default the libc function of
                                that name (for libc-free builds)
     WSCH_NO_SIMD               implementation; scalar paths only (SSE2 on
                                x86 and NEON on AArch64 are otherwise used
                                where the compiler targets them)
     WSCH_SEND_CHUNK            implementation; stack bytes used to coalesce
                                one frame into one send() (2048)
     WSCH_CORK_BYTES            implementation; stack bytes in which every
                                wsch_conn_feed() gathers the replies its
                                callbacks send, so a read that brings many
                                messages answers with one send() (16384;
                                0 turns gathering off: on a small stack,
                                shrink it, at most 1 MiB); also the buffer
                                in which queued pieces are copied together
                                for a send() when there is no send_gather
     WSCH_BUDGET_SPARES         implementation; queue entries of shared
                                frames a wsch_budget keeps for reuse (16384)
     WSCH_MAX_HEADERS           everywhere; header lines kept per parsed
                                request/response (32)
     WSCH_JSON_MAX_DEPTH        implementation; JSON nesting limit (64)
     WSCH_ENVELOPE_TYPE_MAX     everywhere; longest envelope type (64)
     WS_CHANNEL_POSIX           everywhere: add the POSIX loop layer (off by
                                default; needs POSIX.1-2008: with glibc and
                                a strict -std=c99 define _POSIX_C_SOURCE
                                200809L first)
     WSCH_POSIX_EPOLL, WSCH_POSIX_KQUEUE
                                implementation; 0 or 1: whether the loop may
                                use epoll / kqueue (default: by platform;
                                poll() is always there)

   The sections below are in the order a reader meets them: common types,
   then each layer's API from the bottom up; the implementation follows in
   the same order, each part marked with a greppable "// >>layer" line.
*/

#ifndef WS_CHANNEL_H
#define WS_CHANNEL_H

#define WS_CHANNEL_VERSION_MAJOR 0
#define WS_CHANNEL_VERSION_MINOR 1
#define WS_CHANNEL_VERSION_PATCH 0

#include <stddef.h>
#include <stdint.h>

/* Functions a build may leave unused (WS_CHANNEL_STATIC, a left-out layer)
   must not warn. */
#if defined(__GNUC__) || defined(__clang__)
#define WSCH__UNUSED __attribute__((unused))
#else
#define WSCH__UNUSED
#endif

#ifdef WS_CHANNEL_STATIC
#define WSCH_API static WSCH__UNUSED
#else
#define WSCH_API extern
#endif

/* The client and the hub stand on the connection and the envelope. */
#if defined(WS_CHANNEL_NO_CONN) || defined(WS_CHANNEL_NO_ENVELOPE)
#ifndef WS_CHANNEL_NO_CLIENT
#define WS_CHANNEL_NO_CLIENT
#endif
#ifndef WS_CHANNEL_NO_HUB
#define WS_CHANNEL_NO_HUB
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
   Errors. One list generates the enum and wsch_err_str(). Every function that
   can fail returns WSCH_OK (0) or one of these negative codes.
   ------------------------------------------------------------------------ */
#define WSCH_ERROR_LIST(X)                                                          \
    X(WSCH_OK,                  0, "ok")                                          \
    X(WSCH_INCOMPLETE,         -1, "more input is needed")                        \
    X(WSCH_ERR_ARG,            -2, "invalid argument")                            \
    X(WSCH_ERR_NOMEM,          -3, "allocation failed")                           \
    X(WSCH_ERR_BUFFER,         -4, "output buffer too small")                     \
    X(WSCH_ERR_STATE,          -5, "call not valid in the current state")         \
    X(WSCH_ERR_PROTOCOL,       -6, "WebSocket protocol violation")                \
    X(WSCH_ERR_UTF8,           -7, "invalid UTF-8")                               \
    X(WSCH_ERR_TOO_LARGE,      -8, "size limit exceeded")                         \
    X(WSCH_ERR_QUEUE_FULL,     -9, "outbound queue limit reached")                \
    X(WSCH_ERR_CLOSED,        -10, "connection is closing or closed")             \
    X(WSCH_ERR_HTTP,          -11, "malformed HTTP message")                      \
    X(WSCH_ERR_HEADER_TOO_LARGE, -12, "HTTP header block exceeds its limit")     \
    X(WSCH_ERR_METHOD,        -13, "HTTP method is not GET")                      \
    X(WSCH_ERR_HTTP_VERSION,  -14, "HTTP version is not 1.1 or later")            \
    X(WSCH_ERR_MISSING_HEADER,-15, "required handshake header missing or wrong") \
    X(WSCH_ERR_WS_VERSION,    -16, "Sec-WebSocket-Version is not 13")             \
    X(WSCH_ERR_KEY,           -17, "Sec-WebSocket-Key is not 16 base64 bytes")    \
    X(WSCH_ERR_STATUS,        -18, "handshake response status is not 101")        \
    X(WSCH_ERR_ACCEPT,        -19, "Sec-WebSocket-Accept does not match")         \
    X(WSCH_ERR_EXTENSION,     -20, "extension or subprotocol was not offered")    \
    X(WSCH_ERR_URL,           -21, "malformed or unsupported URL")                \
    X(WSCH_ERR_BASE64,        -22, "malformed base64")                            \
    X(WSCH_ERR_JSON,          -23, "malformed JSON")                              \
    X(WSCH_ERR_JSON_DEPTH,    -24, "JSON nesting too deep")                       \
    X(WSCH_ERR_NO_TYPE,       -25, "envelope has no string \"type\"")             \
    X(WSCH_ERR_NOT_FOUND,     -26, "key or item not found")                       \
    X(WSCH_ERR_STALE,         -27, "handle refers to an object that is gone")     \
    X(WSCH_ERR_LIMIT,         -28, "configured count limit reached")              \
    X(WSCH_ERR_DENIED,        -29, "rejected by a caller hook")                   \
    X(WSCH_ERR_TIMEOUT,       -30, "timed out")                                 \
    X(WSCH_ERR_CONNECT,       -31, "transport could not be opened")              \
    X(WSCH_ERR_TRANSPORT,     -32, "transport failed: send reported an error")   \
    X(WSCH_ERR_HANGUP,        -33, "transport closed before the handshake finished") \
    X(WSCH_ERR_COMPRESSION,   -34, "compressed data is corrupt or could not be made")

typedef enum wsch_err {
#define WSCH__ERR_ENUM(name, value, text) name = value,
    WSCH_ERROR_LIST(WSCH__ERR_ENUM)
#undef WSCH__ERR_ENUM
    WSCH_ERR_LAST_ = -35
} wsch_err;

/* Human-readable text for an error code; never NULL. */
WSCH_API const char *wsch_err_str(int err);

/* RFC 6455 section 7.4 close codes, plus the application codes this library uses. */
typedef enum wsch_close_code {
    WSCH_CLOSE_NORMAL            = 1000,
    WSCH_CLOSE_GOING_AWAY        = 1001,
    WSCH_CLOSE_PROTOCOL_ERROR    = 1002,
    WSCH_CLOSE_UNSUPPORTED_DATA  = 1003,
    WSCH_CLOSE_NO_STATUS         = 1005, /* never sent: "the close frame had no code" */
    WSCH_CLOSE_ABNORMAL          = 1006, /* never sent: "the transport closed without a close frame" */
    WSCH_CLOSE_INVALID_PAYLOAD   = 1007,
    WSCH_CLOSE_POLICY_VIOLATION  = 1008,
    WSCH_CLOSE_MESSAGE_TOO_BIG   = 1009,
    WSCH_CLOSE_MANDATORY_EXT     = 1010,
    WSCH_CLOSE_INTERNAL_ERROR    = 1011,
    WSCH_CLOSE_UNAUTHORIZED      = 4001
} wsch_close_code;

/* A borrowed byte span: never owned, never NUL-terminated unless said. */
typedef struct wsch_str {
    const char *ptr;
    size_t len;
} wsch_str;

/* One piece of a gathered write (effects.send_gather): a borrowed span.
   A call offers at most WSCH_GATHER_PARTS of them. */
typedef struct wsch_iovec {
    const void *base;
    size_t len;
} wsch_iovec;
#define WSCH_GATHER_PARTS 64

/* Length argument meaning "ptr is a NUL-terminated string: measure it".
   Every payload and reason parameter is (pointer, length) and accepts it:
   wsch_client_send(c, "chat", "{\"text\":\"hi\"}", WSCH_CSTR). */
#define WSCH_CSTR ((size_t)-1)

/* Caller-replaceable allocator. Zero fields mean malloc/free. */
typedef struct wsch_allocator {
    void *(*alloc)(size_t size, void *user);
    void (*free)(void *ptr, void *user);
    void *user;
} wsch_allocator;

/* What send() returns for a hard error (EPIPE, ECONNRESET, ...), as opposed
   to 0, "would block: call ..._writable() when the socket drains". */
#define WSCH_SEND_ERROR ((size_t)-1)

/* The effects the library asks of its caller: one struct, embedded in the
   descriptors of wsch_conn, wsch_client and wsch_hub. Each callback gets the
   user pointer of the object it acts for (see "Effects and the transport"
   in the documentation above for which pointer that is, which callbacks each
   object requires, and the one rule for closing). */
typedef struct wsch_effects {
    /* Writes bytes; returns how many it took (fewer than len, or 0: the rest
       is queued until ..._writable()), or WSCH_SEND_ERROR: the transport is
       broken and the connection ends at once (close 1006, WSCH_ERR_TRANSPORT). */
    size_t (*send)(const void *data, size_t len, void *user);
    /* Close the transport. Called exactly once per transport, on every path,
       and the last callback about it. */
    void (*close)(void *user);
    /* Arm (or re-arm) one-shot timer timer_id to fire after delay_ms, then
       call ..._timer_fired(timer_id); cancel disarms it. Ids never clash
       between the layers of one object. */
    void (*timer_set)(unsigned timer_id, uint32_t delay_ms, void *user);
    void (*timer_cancel)(unsigned timer_id, void *user);
    uint64_t (*now_ms)(void *user);                         /* monotonic clock */
    void (*random_bytes)(void *buf, size_t len, void *user); /* masks, keys, jitter, seeds */
    void (*log)(const char *msg, void *user);               /* optional; short static strings */
    /* wsch_client only: open a transport to host:port (host valid only during
       the call), then call wsch_client_transport_open() or _failed(). */
    void (*connect)(const char *host, uint16_t port, void *user);
    /* Optional: one write of several pieces (writev), same answer as send:
       bytes taken, counted across the pieces in order, or WSCH_SEND_ERROR.
       Used whenever queued output is written, so a backlog of shared
       broadcast frames leaves without being copied. Without it, pieces
       are copied into one stack buffer (WSCH_CORK_BYTES) for one send. */
    size_t (*send_gather)(const wsch_iovec *parts, size_t count, void *user);
    /* Optional: turns gathering on (a wsch_conn; a hub has desc.gather).
       Nothing is written while the caller's loop runs a turn: what the
       connection is sent waits in its queue (a broadcast frame by
       reference), and flush_later() is called at the first such send. The
       caller then calls wsch_conn_writable() before that turn ends, which
       writes it all in one call. No byte waits past the turn, and a reply
       to a read leaves with everything else due to that peer. It must not
       call into the library; nonzero says it cannot flush this turn, and
       that send is written at once, as without gathering. */
    int (*flush_later)(void *user);
} wsch_effects;

/* Defaults for zero fields of wsch_limits. */
#define WSCH_DEFAULT_MAX_FRAME_SIZE     (16u * 1024u * 1024u)
#define WSCH_DEFAULT_MAX_MESSAGE_SIZE   (16u * 1024u * 1024u)
#define WSCH_DEFAULT_MAX_OUTBOUND_BYTES (32u * 1024u * 1024u)
#define WSCH_DEFAULT_MAX_HEADER_BYTES   8192u
#define WSCH_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000u
#define WSCH_DEFAULT_CLOSE_TIMEOUT_MS   5000u

/* Output memory shared by many connections: a cap for a whole process (or
   loop thread) on top of each connection's max_outbound_bytes. A connection
   takes from it only what it must queue (output the socket takes at once
   never counts) and gives it back as the bytes leave. Past the limit a send
   that would have to queue fails with WSCH_ERR_QUEUE_FULL, as at the
   connection's own limit: the connections refused are those whose peers do
   not keep up, not those that do (a hub drops them as slow consumers,
   4008). Close frames, the handshake's text and output gathered by one
   feed (WSCH_CORK_BYTES) pass, so `used` may exceed `limit` by that much.
   Output held for a turn's flush (effects.flush_later) does not: with the
   budget spent it is written at once, as without gathering.
   Plain counters, no locking: share one budget only among connections
   driven by one thread. It must outlive them.
   It also keeps the small entries that queue a shared broadcast frame,
   given back by its connections, for reuse (at most WSCH_BUDGET_SPARES):
   once warm, queuing a broadcast to a peer allocates nothing. Connections
   sharing a budget must share an allocator; wsch_budget_free_spares()
   frees the entries once they are gone (wsch_hub_destroy() does it for
   its peers' budget). */
typedef struct wsch_budget {
    size_t limit;                   /* bytes; 0 = no cap, only counting */
    size_t used;                    /* held now by every connection using it */
    void *spares;                   /* library-owned: start NULL */
    size_t spare_count;
} wsch_budget;

/* Size and time limits of a connection: one struct, embedded in the
   descriptors of wsch_conn, wsch_client and wsch_hub. Zero means the
   default; a hub has its own defaults for two of them (see wsch_hub_desc). */
typedef struct wsch_limits {
    size_t max_frame_size;          /* 16 MiB: bytes of one data frame's payload; larger: close 1009 */
    size_t max_message_size;        /* 16 MiB: bytes of one reassembled message; larger: close 1009 */
    size_t max_outbound_bytes;      /* 32 MiB: output memory held unsent (bytes plus each
                                       queued piece's bookkeeping) before sends fail
                                       with WSCH_ERR_QUEUE_FULL (close frames pass).
                                       These three act as at most 4 GiB - 1. */
    wsch_budget *outbound_budget;   /* NULL: none. Shared with other connections (borrowed) */
    size_t max_header_bytes;        /* 8192: the opening handshake head; larger: HTTP 431 */
    uint32_t handshake_timeout_ms;  /* 10000: the opening handshake must finish in time */
    uint32_t close_timeout_ms;      /* 5000: the closing handshake must finish in time */
} wsch_limits;

/* What a transport should wait for now: the answer of wsch_conn_want(),
   wsch_hub_peer_want() and wsch_client_want(). 0 means finished: close() has
   been called and nothing more will happen on this transport. */
enum {
    WSCH_WANT_READ  = 1,            /* feed bytes when they arrive */
    WSCH_WANT_WRITE = 2             /* output is queued: call ..._writable() when the socket drains */
};

// >>primitives
/* ========================================================================
   Primitives: SHA-1, base64, UTF-8 validation, masking. No allocation.
   ======================================================================== */

/* SHA-1 (FIPS 180-4). Zero or wsch_sha1_init() a state, update any number of
   times, then final. The state may be reused after another init. */
typedef struct wsch_sha1 {
    uint32_t h[5];
    uint64_t total_len;         /* bytes hashed so far */
    unsigned char block[64];
    size_t block_len;
} wsch_sha1;

WSCH_API void wsch_sha1_init(wsch_sha1 *s);
WSCH_API void wsch_sha1_update(wsch_sha1 *s, const void *data, size_t len);
WSCH_API void wsch_sha1_final(wsch_sha1 *s, unsigned char digest[20]);

/* Base64 (RFC 4648 section 4, with padding). */
#define WSCH_BASE64_ENCODED_LEN(n) ((((n) + 2u) / 3u) * 4u)
/* Writes WSCH_BASE64_ENCODED_LEN(len) characters and a NUL; returns WSCH_OK or
   WSCH_ERR_BUFFER when cap < WSCH_BASE64_ENCODED_LEN(len) + 1. *out_len (may
   be NULL) gets the length without the NUL, 0 on error. */
WSCH_API int wsch_base64_encode(const void *src, size_t len, char *dst, size_t cap, size_t *out_len);
/* Strict decode: canonical padding, no whitespace, no stray bits. Returns
   WSCH_OK, WSCH_ERR_BASE64, or WSCH_ERR_BUFFER when cap is below the decoded
   length (known from len and the padding, so checked before the characters).
   *out_len (may be NULL) gets the decoded length, 0 on error; on error dst
   may hold partial output. */
WSCH_API int wsch_base64_decode(const char *src, size_t len, void *dst, size_t cap, size_t *out_len);

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)). Writes 28
   characters and a NUL. The key is used as given (checking that it is 16
   base64 bytes is the handshake's job). */
#define WSCH_ACCEPT_LEN 28
WSCH_API void wsch_accept_key(const char *key, size_t key_len, char out[WSCH_ACCEPT_LEN + 1]);

/* Incremental UTF-8 validator (RFC 3629: no overlongs, no surrogates, nothing
   above U+10FFFF). Zero the struct to start. Feed fragments in order; a code
   point may straddle fragments. Borrows data until return; never allocates. */
typedef struct wsch_utf8 {
    uint32_t state;             /* 0 = between code points; other values private */
} wsch_utf8;

/* Returns WSCH_OK, or WSCH_ERR_UTF8 with *bad_offset (if not NULL) set to the
   offset in this fragment of the first byte at which the text stops being a
   prefix of valid UTF-8 (so a peer can be failed without waiting for the rest
   of a sequence). After an error the state stays failed: later feeds fail at
   offset 0 and finish fails. */
WSCH_API int wsch_utf8_feed(wsch_utf8 *v, const void *data, size_t len, size_t *bad_offset);
/* WSCH_OK when the text ends on a code point boundary, else WSCH_ERR_UTF8. */
WSCH_API int wsch_utf8_finish(const wsch_utf8 *v);
/* One-shot predicate: 1 when the whole span is complete, valid UTF-8, else 0
   (not an error code, so `if (!wsch_utf8_valid(p, n))` reads naturally). */
WSCH_API int wsch_utf8_valid(const void *data, size_t len);

/* XOR data in place with the 4-byte key, starting at key position
   (offset & 3); masking and unmasking are the same operation. Works a machine
   word (or SIMD register) at a time, any alignment. Returns the key position
   after the last byte, (offset + len) & 3, so a payload can be unmasked in
   pieces. */
WSCH_API size_t wsch_mask(void *data, size_t len, const unsigned char key[4], size_t offset);

// >>frame
/* ========================================================================
   Frame codec (RFC 6455 section 5.2). No allocation.
   ======================================================================== */

typedef enum wsch_opcode {
    WSCH_OP_CONTINUATION = 0x0,
    WSCH_OP_TEXT         = 0x1,
    WSCH_OP_BINARY       = 0x2,
    WSCH_OP_CLOSE        = 0x8,
    WSCH_OP_PING         = 0x9,
    WSCH_OP_PONG         = 0xA
} wsch_opcode;

#define WSCH_FRAME_HEADER_MAX 14    /* 2 + 8 length bytes + 4 mask bytes */
#define WSCH_CONTROL_PAYLOAD_MAX 125

typedef struct wsch_frame_header {
    uint64_t payload_len;
    unsigned char mask_key[4];
    uint8_t opcode;             /* wsch_opcode */
    uint8_t fin;                /* 1 = final fragment */
    uint8_t rsv;                /* RSV1..3 as bits 2..0; RSV1 (4) marks a compressed message */
    uint8_t masked;
} wsch_frame_header;

/* Encodes a header into out (WSCH_FRAME_HEADER_MAX bytes suffice); returns
   its length. Uses the shortest length encoding, as RFC 6455 requires. */
WSCH_API size_t wsch_frame_header_encode(unsigned char out[WSCH_FRAME_HEADER_MAX], const wsch_frame_header *h);

/* Decodes the header at the start of buf. Returns WSCH_OK with *header_len
   set, WSCH_INCOMPLETE when len is too short to hold it (feed more bytes and
   call again: the result never depends on how the input was split), or
   WSCH_ERR_PROTOCOL for what no role may accept: a non-minimal or 2^63+
   length, an unknown opcode, a fragmented or oversized control frame. Role
   rules (masking, RSV bits) are the connection's job. */
WSCH_API int wsch_frame_header_decode(const void *buf, size_t len, wsch_frame_header *h, size_t *header_len);

// >>handshake
/* ========================================================================
   Handshake (RFC 6455 section 4), URLs and query strings. No allocation:
   parsed fields are spans borrowed from the caller's buffer.

   Conventions of this section:
   - An absent field is the span {NULL, 0}; a present but empty one has a
     non-NULL ptr and len 0.
   - Builders write the text and a NUL after it; cap must hold both. When it
     does not they return WSCH_ERR_BUFFER, set *out_len to the length the
     text needs (without the NUL) and leave out as an empty string: never a
     truncated message. out may be NULL when cap is 0 (a size query).
   - Text the caller hands to a builder (paths, header lines, protocols) is
     validated, so a caller string can never inject a header line:
     WSCH_ERR_ARG otherwise.
   ======================================================================== */

#ifndef WSCH_MAX_HEADERS
#define WSCH_MAX_HEADERS 32     /* header lines kept per request/response */
#endif

typedef struct wsch_http_header {
    wsch_str name;
    wsch_str value;             /* surrounding whitespace trimmed */
} wsch_http_header;

/* A parsed HTTP request. Every span points into the parsed buffer. */
typedef struct wsch_request {
    wsch_str method;
    wsch_str target;            /* the request-target as sent */
    wsch_str path;              /* target up to '?' */
    wsch_str query;             /* after '?', without it; absent if no '?' */
    int minor_version;          /* HTTP/1.x */
    wsch_str host, origin, key, authorization;
    int ws_version;             /* Sec-WebSocket-Version as a number, -1 if absent or not a number */
    wsch_http_header headers[WSCH_MAX_HEADERS];
    size_t num_headers;
} wsch_request;

/* Parses an HTTP/1.x request head. Incremental: call again with the same
   bytes grown by newly received ones (the buffer may move), passing the
   previous length as prev_len (0 the first time) so only new bytes are
   scanned: one-byte feeds cost O(n) in all, and any split of the input gives
   the same result. Never reads buf[len] or beyond.

   Strict HTTP/1.1 syntax (RFC 9112): request line `method SP target SP
   HTTP/1.d CRLF`, method and field names are tokens, no space before the
   colon, lines end in CRLF (a bare LF or a CR without LF is an error, found
   as soon as the byte arrives, as is any control byte other than HTAB),
   obs-fold (a line starting with SP or HTAB) is an error, the target is
   visible ASCII without '#'. Bytes after the head are not looked at: they
   belong to the WebSocket stream.

   Returns WSCH_OK with *consumed = head length and *req filled, or
   WSCH_INCOMPLETE (call again with more bytes), or an error after which the
   request is hopeless (*req unspecified):
     WSCH_ERR_HEADER_TOO_LARGE  max_bytes (0 = 8192, which is
                                WSCH_DEFAULT_MAX_HEADER_BYTES) passed without
                                the end of the head, or more than
                                WSCH_MAX_HEADERS header lines (431);
     WSCH_ERR_HTTP              malformed, or Host, Origin, Authorization,
                                Sec-WebSocket-Key or Sec-WebSocket-Version
                                given more than once (they are single values
                                and a second copy is ambiguous);
     WSCH_ERR_HTTP_VERSION      HTTP major version other than 1;
     WSCH_ERR_ARG               NULL req/consumed, or prev_len > len.
   Checks only HTTP syntax: see wsch_request_check_upgrade(). */
WSCH_API int wsch_request_parse(const char *buf, size_t len, size_t prev_len, size_t max_bytes,
                                wsch_request *req, size_t *consumed);
/* Is a parsed request a valid WebSocket upgrade (RFC 6455 4.2.1)? Checked in
   this order: method GET (WSCH_ERR_METHOD); HTTP/1.1 or later
   (WSCH_ERR_HTTP_VERSION); a non-empty Host, Upgrade with the token
   "websocket", Connection with the token "upgrade" (both case-insensitive
   in comma lists, over all lines of that name) (WSCH_ERR_MISSING_HEADER);
   Sec-WebSocket-Version 13, also when absent (WSCH_ERR_WS_VERSION, so the
   answer is 426 naming version 13); Sec-WebSocket-Key present
   (WSCH_ERR_MISSING_HEADER) and decoding to exactly 16 bytes
   (WSCH_ERR_KEY). Returns WSCH_OK or the first failure. */
WSCH_API int wsch_request_check_upgrade(const wsch_request *req);
/* The HTTP status a server answers a failed parse or check with: 426 for
   WSCH_ERR_WS_VERSION, 405 for WSCH_ERR_METHOD, 431 for
   WSCH_ERR_HEADER_TOO_LARGE, else 400. */
WSCH_API int wsch_request_error_status(int err);

/* Case-insensitive header lookup; the first match. WSCH_OK or WSCH_ERR_NOT_FOUND. */
WSCH_API int wsch_header_find(const wsch_http_header *headers, size_t count, const char *name, wsch_str *value);
/* Does a comma-separated header value contain token (case-insensitive,
   elements trimmed, empty elements ignored)? 1 or 0. */
WSCH_API int wsch_header_has_token(wsch_str value, const char *token);
/* Iterates the comma-separated entries of every Sec-WebSocket-Protocol
   header, in order. Start with *iter = 0. Returns 1 with *protocol set (a
   trimmed, non-empty span into the request), 0 at the end. */
WSCH_API int wsch_request_next_protocol(const wsch_request *req, size_t *iter, wsch_str *protocol);

/* Builds the server's 101 response:
     HTTP/1.1 101 Switching Protocols / Upgrade: websocket /
     Connection: Upgrade / Sec-WebSocket-Accept / [Sec-WebSocket-Protocol]
   then extra_headers and the blank line. req must have passed
   wsch_request_check_upgrade(). protocol (NULL or "" = none) must be a
   token the client offered, compared exactly; extra_headers (NULL or "")
   are complete "Name: value\r\n" lines, none naming a header the builder
   writes itself and at most one Authorization (a peer refuses duplicated
   single-valued headers). Returns WSCH_OK, WSCH_ERR_ARG (no key, protocol
   not offered, malformed or clashing extra_headers) or WSCH_ERR_BUFFER. */
WSCH_API int wsch_response_build(const wsch_request *req, const char *protocol, const char *extra_headers,
                                 char *out, size_t cap, size_t *out_len);
/* Builds a complete plain HTTP/1.1 answer (not an upgrade), for a server
   that answers other paths or refuses a handshake itself:
     HTTP/1.1 <status> <reason> / Content-Type / Content-Length /
     Connection: close / [a header the status needs] / extra_headers /
     the blank line / body
   status is 200..599; the reason phrase comes from the library's table
   (200 OK, 204 No Content, 301, 302 Found, 304 Not Modified, 400 Bad
   Request, ... 503 Service Unavailable; "Success", "Redirect", "Client
   Error" or "Server Error" for statuses it does not name). content_type
   (NULL or "" = "text/plain; charset=utf-8") must be header-value
   characters. The body is copied; body NULL with body_len > 0 answers a
   HEAD request: Content-Length says body_len and no body follows. 204 and
   304 answers have no body and no Content-Type or Content-Length (RFC 9110
   8.6, 15.3.5): body_len must be 0. A 401 gets "WWW-Authenticate: Bearer",
   a 405 "Allow: GET", a 426 "Sec-WebSocket-Version: 13", each unless
   extra_headers names that header itself. extra_headers as for
   wsch_response_build(), and none may name Content-Type, Content-Length,
   Connection or Transfer-Encoding. Returns WSCH_OK, WSCH_ERR_ARG (status
   out of range, bad content_type or extra_headers, a body on 204/304) or
   WSCH_ERR_BUFFER (see the conventions above: cap 0 asks for the size). */
WSCH_API int wsch_http_response_build(int status, const char *content_type, const void *body, size_t body_len,
                                      const char *extra_headers, char *out, size_t cap, size_t *out_len);
/* Builds a complete refusal for status 300..599 with
   wsch_http_response_build(): the reason phrase (400 Bad Request,
   401 Unauthorized, 403 Forbidden, 404 Not Found, 405 Method Not Allowed,
   408, 426 Upgrade Required, 429, 431 Request Header Fields Too Large,
   500 Internal Server Error, 503, ...; a generic one for others),
   Content-Type text/plain, Content-Length, "Connection: close", the reason
   and a newline as the body (none for 304). A 426 carries
   "Sec-WebSocket-Version: 13", a 405 "Allow: GET", a 401
   "WWW-Authenticate: Bearer", unless extra_headers names that header.
   extra_headers as for wsch_http_response_build().
   Returns WSCH_OK, WSCH_ERR_ARG (status out of range, bad extra_headers) or
   WSCH_ERR_BUFFER. Every refusal without extra headers fits in 256 bytes. */
WSCH_API int wsch_http_error_build(int status, const char *extra_headers, char *out, size_t cap, size_t *out_len);

/* Client side. Strings are NUL-terminated, borrowed until return. */
typedef struct wsch_handshake_request_desc {
    const char *host;           /* required: a DNS name, IPv4 address, or IPv6 literal (brackets optional) */
    uint16_t port;              /* 0 = 80; the Host header omits 80 */
    const char *path;           /* NULL = "/"; must start with '/', visible ASCII, no '#' */
    const char *query;          /* without '?', already encoded; NULL or "" = none */
    const char *protocols;      /* comma-separated tokens, or NULL */
    const char *origin;         /* or NULL */
    const char *extra_headers;  /* complete "Name: value\r\n" lines, or NULL */
    const char *extensions;     /* Sec-WebSocket-Extensions value (wsch_deflate_offer_build), or NULL */
    unsigned char nonce[16];    /* random bytes from the caller's random source */
} wsch_handshake_request_desc;

#define WSCH_KEY_LEN 24
/* Writes the request in RFC 6455 section 1.2 order (Host, Upgrade,
   Connection, Sec-WebSocket-Key, Origin, Sec-WebSocket-Protocol,
   Sec-WebSocket-Version, then extra_headers) and, on WSCH_OK, the key it
   carries (base64 of the nonce: 24 characters and a NUL). Returns WSCH_OK,
   WSCH_ERR_ARG (missing or malformed field) or WSCH_ERR_BUFFER. */
WSCH_API int wsch_handshake_request_build(const wsch_handshake_request_desc *d, char *out, size_t cap, size_t *out_len,
                                       char key_out[WSCH_KEY_LEN + 1]);

typedef struct wsch_response {
    int status;
    int minor_version;
    wsch_str reason;            /* may be empty; a missing SP before it is tolerated */
    wsch_http_header headers[WSCH_MAX_HEADERS];
    size_t num_headers;
} wsch_response;

/* Same contract and syntax rules as wsch_request_parse(), for a status line
   `HTTP/1.d SP 3DIGIT [SP reason] CRLF` and its headers (no duplicate
   rules here: wsch_response_check() judges those). */
WSCH_API int wsch_response_parse(const char *buf, size_t len, size_t prev_len, size_t max_bytes,
                                 wsch_response *res, size_t *consumed);
/* Strict check of a parsed response against the request (RFC 6455 4.1), in
   this order: status 101 (WSCH_ERR_STATUS); exactly one Upgrade header whose
   value is "websocket" (case-insensitive) and a Connection header with the
   token "upgrade" (WSCH_ERR_MISSING_HEADER); exactly one
   Sec-WebSocket-Accept, byte-exact for key (WSCH_ERR_ACCEPT); no
   Sec-WebSocket-Extensions at all (a client that offered permessage-deflate
   judges that header with wsch_deflate_response_check()), and at most
   one Sec-WebSocket-Protocol whose value is one of offered_protocols
   (comma-separated, compared exactly; NULL = none offered)
   (WSCH_ERR_EXTENSION). Returns WSCH_OK or the first failure, WSCH_ERR_ARG
   for NULL res/key. *protocol (may be NULL) gets the chosen protocol, a span
   into the response, or {NULL, 0}. */
WSCH_API int wsch_response_check(const wsch_response *res, const char *key, const char *offered_protocols,
                                 wsch_str *protocol);

/* ---- permessage-deflate (RFC 7692) --------------------------------------

   The header negotiates; the compressing is done by a codec the caller
   supplies (examples/deflate_zlib.h wraps zlib), so the library keeps no
   dependency. A connection whose desc names a codec offers the extension
   (client) or accepts the first acceptable offer (server); then messages
   are compressed whole (RSV1 on their first frame), control frames never.
   Messages shorter than min_size, and those sent with wsch_conn_send_frame(),
   go uncompressed (RSV1 clear), which the RFC allows on a compressed
   connection. Received compressed messages are inflated whole once their
   last frame is in, and never past max_message_size: a message that would
   inflate larger fails with 1009 after at most max_message_size + 1 bytes
   of output; corrupt data fails with 1007 (WSCH_ERR_COMPRESSION).

   Memory per connection: with context takeover each side keeps its stream
   between messages (zlib: about 256 KiB to compress at window 15 and
   memory level 8, 44 KiB to inflate); without it ("no_context_takeover")
   a stream lives only while one message is processed. A hub asks for both
   (see wsch_hub_desc), so an idle peer holds no compression state and a
   broadcast is compressed once for every peer that agreed. */

/* One raw DEFLATE stream (RFC 1951), compressing or inflating. */
typedef struct wsch_deflate_codec {
    /* A new stream: compress 1 to compress (window_bits 9..15, mem_level
       1..9), 0 to inflate (window_bits 8..15: the peer's window; a larger
       one inflates it too). Memory through allocator. NULL: out of memory. */
    void *(*create)(int compress, int window_bits, int mem_level, const wsch_allocator *allocator, void *user);
    void (*destroy)(void *stream, void *user);
    /* Forgets the history: the next message starts a fresh window. 0 or -1. */
    int (*reset)(void *stream, void *user);
    /* Consumes from in[0..*in_len) and writes to out[0..*out_len); on
       return both hold the counts used. Compressing with flush 1 (the end
       of a message), the output ends with a sync flush (00 00 FF FF) once
       all input is taken and the output had room: the library calls again
       while the output comes back full. Inflating, flush is 0. Returns 0,
       or -1 for corrupt input or a failure. */
    int (*run)(void *stream, const unsigned char *in, size_t *in_len, unsigned char *out, size_t *out_len,
               int flush, void *user);
    void *user;                 /* passed to each call */
} wsch_deflate_codec;

/* The extension's configuration, one struct for both roles. The four
   parameters keep the RFC's names and say what this side wants:
     server_no_context_takeover  client: ask the server for it;
                                 server: compress every message afresh
     client_no_context_takeover  client: compress every message afresh (and
                                 say so); server: ask the client for it
     server_max_window_bits      client: ask the server for at most this;
                                 server: the most it compresses with
     client_max_window_bits      client: the most it compresses with;
                                 server: ask the client, if its offer lets it
   Window bits 9..15, 0 = 15 (zlib cannot compress with 8; an offer that
   demands 8 of this side is declined). */
typedef struct wsch_deflate_desc {
    const wsch_deflate_codec *codec;    /* NULL: the extension is off */
    uint8_t server_no_context_takeover;
    uint8_t client_no_context_takeover;
    uint8_t server_max_window_bits;
    uint8_t client_max_window_bits;
    uint8_t mem_level;                  /* 1..9, 0 = 8: compression memory vs ratio */
    uint32_t min_size;                  /* shorter messages go uncompressed; 0 = WSCH_DEFLATE_MIN_SIZE */
} wsch_deflate_desc;
#define WSCH_DEFLATE_MIN_SIZE 64u

/* What was agreed, from this side's point of view. */
typedef struct wsch_deflate_params {
    uint8_t enabled;                    /* 0: no extension on this connection */
    uint8_t server_no_context_takeover, client_no_context_takeover;
    uint8_t server_max_window_bits, client_max_window_bits;   /* 8..15 */
} wsch_deflate_params;

/* Client: the Sec-WebSocket-Extensions value that offers d, e.g.
   "permessage-deflate; client_max_window_bits". Builder conventions.
   WSCH_ERR_ARG for window bits outside 9..15 (0 allowed). */
WSCH_API int wsch_deflate_offer_build(const wsch_deflate_desc *d, char *out, size_t cap, size_t *out_len);
/* Server: reads every Sec-WebSocket-Extensions offer of req in order and
   accepts the first permessage-deflate offer it can honour under d; offers
   with unknown or repeated parameters or invalid values are declined (RFC
   7692 5, 7.1), as is everything after a syntax error. Returns 1 with
   *agreed filled, or 0 (no extension; not an error). */
WSCH_API int wsch_deflate_negotiate(const wsch_request *req, const wsch_deflate_desc *d, wsch_deflate_params *agreed);
/* Server: the Sec-WebSocket-Extensions value answering with agreed. */
WSCH_API int wsch_deflate_response_build(const wsch_deflate_params *agreed, char *out, size_t cap, size_t *out_len);
/* Client: checks the response's Sec-WebSocket-Extensions against the offer
   of d (NULL: nothing was offered). WSCH_OK with *agreed filled
   (enabled 0 when the server declined), or WSCH_ERR_EXTENSION: an
   extension not offered, more than one, an unknown or repeated parameter,
   an invalid value, client_max_window_bits without a value or above the
   offer, server_max_window_bits above what was asked, or missing while
   asked for, server_no_context_takeover missing while asked for. */
WSCH_API int wsch_deflate_response_check(const wsch_response *res, const wsch_deflate_desc *d,
                                         wsch_deflate_params *agreed);

/* ws://host[:port][/path][?query] and wss://. IPv6 literals in brackets.
   Spans point into the parsed string, except a default path. */
typedef struct wsch_url {
    wsch_str scheme;            /* "ws" or "wss", as written (any case) */
    wsch_str host;              /* without brackets */
    uint16_t port;              /* explicit, or 80 / 443 */
    int secure;                 /* 1 for wss */
    wsch_str path;              /* a static "/" when absent */
    wsch_str query;             /* without '?'; absent ({NULL, 0}) if no '?' */
} wsch_url;

/* Parses a WebSocket URL (RFC 6455 section 3, RFC 3986 syntax). Scheme ws
   or wss in any case; host a name of unreserved characters, an IPv4 address
   or a bracketed IPv6 literal (no zone id); port 1..65535; path and query
   of RFC 3986 pchar with valid %XX escapes. Returns WSCH_OK, WSCH_ERR_ARG
   (NULL url or u) or WSCH_ERR_URL: any other scheme, empty host, userinfo
   ('@' before the path), bad or empty port, a fragment ('#'), whitespace,
   control or non-ASCII bytes, a bad escape. */
WSCH_API int wsch_url_parse(const char *url, size_t len, wsch_url *u);

/* Finds key in an application/x-www-form-urlencoded query (pairs split on
   '&', keys compared after decoding, first match wins) and decodes its
   value into out (NUL-terminated): %XX is a byte and '+' is a space, as in
   HTML form encoding; a literal '+' arrives as %2B. A pair without '=' has
   an empty value. Returns WSCH_OK, WSCH_ERR_NOT_FOUND, WSCH_ERR_URL (a bad
   or truncated escape anywhere in the query, or a value that decodes to a
   NUL byte, which would silently shorten a C string) or WSCH_ERR_BUFFER. */
WSCH_API int wsch_query_get(wsch_str query, const char *key, char *out, size_t cap, size_t *out_len);
/* Percent-encodes everything but RFC 3986 unreserved characters
   (A-Z a-z 0-9 - . _ ~) as uppercase %XX; the result is safe in a path
   segment and as a query key or value. Returns WSCH_OK or WSCH_ERR_BUFFER. */
WSCH_API int wsch_percent_encode(const char *src, size_t len, char *out, size_t cap, size_t *out_len);

/* Where a bearer token travels in an opening request: where a server found
   it (wsch_request_token), or where a client puts it (wsch_client_desc). */
typedef enum wsch_token_source {
    WSCH_TOKEN_NONE = 0,
    WSCH_TOKEN_QUERY,           /* ?token=... */
    WSCH_TOKEN_AUTHORIZATION,   /* Authorization: Bearer ... */
    WSCH_TOKEN_PROTOCOL         /* Sec-WebSocket-Protocol entry "bearer.<token>" */
} wsch_token_source;

/* Extracts the bearer token into out (copied, NUL-terminated), trying in
   order: an Authorization header with the scheme Bearer (case-insensitive)
   and a token68 credential (RFC 6750); the first Sec-WebSocket-Protocol
   entry "bearer.<token>" (prefix case-insensitive); the query parameter
   "token" (decoded). Empty tokens count as absent; an Authorization header
   with another scheme is skipped. A server that takes the token from
   Sec-WebSocket-Protocol must still answer with one offered protocol, or
   browsers fail the connection: offer an application protocol next to the
   bearer entry and choose that one.
   Returns WSCH_OK with *source (may be NULL) set, WSCH_ERR_NOT_FOUND,
   WSCH_ERR_HTTP (a Bearer Authorization header without a valid token68:
   the client said where its token is, so there is no fallback),
   WSCH_ERR_URL (bad escape in the query) or WSCH_ERR_BUFFER. */
WSCH_API int wsch_request_token(const wsch_request *req, char *out, size_t cap, size_t *out_len,
                                wsch_token_source *source);

// >>conn
#ifndef WS_CHANNEL_NO_CONN
/* ========================================================================
   Connection (wsch_conn): one WebSocket connection in either role.
   ======================================================================== */

typedef struct wsch_conn wsch_conn;

typedef enum wsch_role {
    WSCH_ROLE_SERVER = 0,
    WSCH_ROLE_CLIENT = 1
} wsch_role;

typedef enum wsch_state {
    WSCH_STATE_HANDSHAKE = 0,    /* opening handshake in progress */
    WSCH_STATE_OPEN,             /* messages flow both ways */
    WSCH_STATE_CLOSING,          /* a close frame was sent; waiting for the peer or the transport */
    WSCH_STATE_CLOSED            /* on_close has run; only wsch_conn_destroy() remains */
} wsch_state;

/* Timer ids a connection arms through timer_set. */
enum {
    WSCH_TIMER_HANDSHAKE = 1,   /* opening handshake must finish in time */
    WSCH_TIMER_CLOSE     = 2    /* closing handshake must finish in time */
};

/* The server's answer to a request head, filled in by on_request. It starts
   as 101 (accept, no subprotocol) for a valid upgrade, or as the refusal
   status wsch_request_error_status() gives for anything else (a plain GET
   included, so one port can serve pages too). A request that is not a valid
   upgrade is never accepted, whatever status the hook leaves. */
typedef struct wsch_handshake_reply {
    int status;                 /* 101 accepts; anything else refuses with that HTTP status */
    const void *response;       /* refusing: a complete HTTP response to send instead of the built one */
    size_t response_len;        /* (copied before return), e.g. a page or a 401 with WWW-Authenticate */
    const char *protocol;       /* accepted subprotocol (one of the offered) or NULL */
    const char *extra_headers;  /* "Name: value\r\n" lines, or NULL; copied before return */
    uint16_t close_code;        /* nonzero: accept, then close at once with this code */
    const char *close_reason;   /* with close_code, or NULL */
} wsch_handshake_reply;

/* Everything a connection needs. Zero means the documented default. The desc
   is borrowed until wsch_conn_destroy(): one desc serves many connections (a
   server keeps one for all its peers), each with its own user pointer, the
   one every effect and event receives. */
typedef struct wsch_conn_desc {
    wsch_role role;
    wsch_limits limits;
    /* Client role: what the opening request carries (host is required; the
       nonce is drawn from effects.random_bytes, whatever is set here). */
    wsch_handshake_request_desc request;
    wsch_allocator allocator;
    /* send and close are required; random_bytes too for clients (keys and
       masks). Without timer_set there are no timeouts. now_ms, log and
       connect are not used by a bare connection. */
    wsch_effects effects;
    /* permessage-deflate: offered (client) or accepted (server) when codec
       is set. See "permessage-deflate" in the handshake section. */
    wsch_deflate_desc deflate;

    /* Events. All optional. Data pointers are valid only during the callback.
       on_request (server) sees every complete request head and fills reply.
       on_message gets a complete message: writable bytes, text already
       validated as UTF-8. on_close runs exactly once, when the connection
       reaches CLOSED, just before effects.close: code is the peer's close
       code, WSCH_CLOSE_NO_STATUS if its close frame had none,
       WSCH_CLOSE_ABNORMAL if the transport ended without one, or the code
       this side failed the connection with (wsch_conn_error() says why). */
    void (*on_request)(wsch_conn *c, const wsch_request *req, wsch_handshake_reply *reply, void *user);
    void (*on_open)(wsch_conn *c, void *user);
    void (*on_message)(wsch_conn *c, wsch_opcode opcode, void *data, size_t len, void *user);
    void (*on_pong)(wsch_conn *c, const void *data, size_t len, void *user);
    void (*on_close)(wsch_conn *c, int code, const char *reason, size_t reason_len, void *user);
} wsch_conn_desc;

/* desc (may be NULL) with every zero limit replaced by its default: what a
   connection created from desc uses. Keep the result and pass it to
   wsch_conn_create(): a desc whose limits are all set is used as it is. */
WSCH_API wsch_conn_desc wsch_conn_desc_defaults(const wsch_conn_desc *desc);

/* Creates a connection over a transport that is already open. A client
   connection sends its opening request at once. Returns WSCH_OK,
   WSCH_ERR_ARG, WSCH_ERR_NOMEM or WSCH_ERR_TRANSPORT (send failed on the
   request); on error no callback has run and the transport is still yours. */
WSCH_API int wsch_conn_create(const wsch_conn_desc *desc, void *user, wsch_conn **out);
/* Frees everything, queued output included. No event callback runs; armed
   timers are cancelled through timer_cancel. Safe from inside any callback
   of this connection (the free waits until it returns). */
WSCH_API void wsch_conn_destroy(wsch_conn *c);

/* Received bytes. They are modified in place (unmasking) and may be handed to
   on_message without a copy. Returns WSCH_OK, or the error that failed the
   connection (WSCH_ERR_PROTOCOL, WSCH_ERR_UTF8, WSCH_ERR_TOO_LARGE, handshake
   errors, WSCH_ERR_NOMEM); after an error the close frame is on its way and
   further input is ignored. */
WSCH_API int wsch_conn_feed(wsch_conn *c, void *data, size_t len);
/* The socket can take more bytes, or (gathering: effects.flush_later) the
   turn is ending: write the queue, several pieces a call when they are
   small or send_gather is set. Returns WSCH_OK, WSCH_ERR_ARG or
   WSCH_ERR_CLOSED (already closed). */
WSCH_API int wsch_conn_writable(wsch_conn *c);
WSCH_API void wsch_conn_timer_fired(wsch_conn *c, unsigned timer_id);
/* The caller saw the transport end first (EOF, a read error). The
   connection ends as the transport lost (WSCH_CLOSE_ABNORMAL unless the
   close handshake was complete; WSCH_ERR_HANGUP during the opening
   handshake): on_close, then close(), as on every other path. */
WSCH_API void wsch_conn_transport_closed(wsch_conn *c);
/* What the transport should wait for now: WSCH_WANT_READ and/or
   WSCH_WANT_WRITE; 0 once the connection is CLOSED (close() has run: destroy
   it). */
WSCH_API unsigned wsch_conn_want(const wsch_conn *c);

/* Sends a whole message. Text must be valid UTF-8 (checked). Data is copied
   or sent before return. Returns WSCH_OK, WSCH_ERR_ARG (opcode not TEXT or
   BINARY), WSCH_ERR_STATE (handshake not done, or a fragmented message from
   wsch_conn_send_frame() is still open), WSCH_ERR_CLOSED (closing or
   closed), WSCH_ERR_UTF8, WSCH_ERR_QUEUE_FULL (nothing was sent: the queue
   would pass max_outbound_bytes), WSCH_ERR_NOMEM or WSCH_ERR_TRANSPORT (the
   connection is cut: on_close and close() have run). */
WSCH_API int wsch_conn_send(wsch_conn *c, wsch_opcode opcode, const void *data, size_t len);
/* One frame: TEXT/BINARY starts a message, CONTINUATION carries it on, fin
   ends it (RFC 6455 5.4); PING and PONG (at most 125 bytes) may go between
   fragments. Text is not checked here. Returns what wsch_conn_send() does,
   and WSCH_ERR_STATE for a continuation with no message open or a new
   message before the open one's final frame. */
WSCH_API int wsch_conn_send_frame(wsch_conn *c, wsch_opcode opcode, int fin, const void *data, size_t len);
/* A ping of at most 125 bytes; same returns as wsch_conn_send_frame(). */
WSCH_API int wsch_conn_ping(wsch_conn *c, const void *data, size_t len);
/* Starts the closing handshake. code 0 sends a close frame without a code.
   During the opening handshake it just closes the transport (on_close
   runs). Returns WSCH_OK, WSCH_ERR_ARG (a code not valid on the wire, a
   reason over 123 bytes, not UTF-8, or without a code), WSCH_ERR_CLOSED
   (a close frame was already sent or the connection is closed) or
   WSCH_ERR_NOMEM (the close frame could not be queued: the connection is
   cut and on_close has run). reason_len may be WSCH_CSTR. */
WSCH_API int wsch_conn_close(wsch_conn *c, uint16_t code, const char *reason, size_t reason_len);

WSCH_API wsch_state wsch_conn_state(const wsch_conn *c);
/* Why this side failed the connection (WSCH_ERR_PROTOCOL, WSCH_ERR_ACCEPT,
   WSCH_ERR_TIMEOUT, ...), or WSCH_OK. Useful inside on_close. */
WSCH_API int wsch_conn_error(const wsch_conn *c);
/* The handshake's HTTP status: received (client) or sent (server); 0 while
   none. A client refused with 401 sees 401 here. */
WSCH_API int wsch_conn_http_status(const wsch_conn *c);
/* Client role, after a refused handshake: the answer's Retry-After header
   (delta-seconds; at most WSCH_MAX_RETRY_AFTER_S) in milliseconds, or -1
   when it had none (or gave an HTTP-date) or the connection opened. */
#define WSCH_MAX_RETRY_AFTER_S 86400u
WSCH_API int64_t wsch_conn_retry_after_ms(const wsch_conn *c);
/* Output held unsent, as max_outbound_bytes counts it (bookkeeping
   included); 0 once CLOSED. */
WSCH_API size_t wsch_conn_queued_bytes(const wsch_conn *c);
WSCH_API void *wsch_conn_user(const wsch_conn *c);
WSCH_API void wsch_conn_set_user(wsch_conn *c, void *user);
/* The subprotocol agreed in the handshake, or an empty span. */
WSCH_API wsch_str wsch_conn_protocol(const wsch_conn *c);
/* permessage-deflate as agreed in the handshake: 1 with *out filled, or 0
   (not agreed, or the handshake is not done). */
WSCH_API int wsch_conn_deflate(const wsch_conn *c, wsch_deflate_params *out);

/* A shared, reference-counted, unmasked frame: encoded once, queued by
   reference to many server connections (a broadcast). */
typedef struct wsch_shared wsch_shared;
/* Encodes one final TEXT or BINARY frame (else WSCH_ERR_ARG). payload may
   be NULL to leave len bytes to fill through wsch_shared_payload(). The
   caller holds one reference. */
WSCH_API int wsch_shared_create(const wsch_allocator *a, wsch_opcode opcode, const void *payload, size_t len,
                                wsch_shared **out);
WSCH_API void *wsch_shared_payload(wsch_shared *s);
WSCH_API size_t wsch_shared_frame_size(const wsch_shared *s);
WSCH_API void wsch_shared_release(wsch_shared *s);
/* Sends or queues the shared frame (server role); takes its own reference
   only if bytes remain queued. Same returns as wsch_conn_send(). A
   connection that agreed permessage-deflate without server context
   takeover is sent the compressed copy, if s has one its window allows. */
WSCH_API int wsch_conn_send_shared(wsch_conn *c, wsch_shared *s);
/* Frees the queue entries b keeps for reuse (see wsch_budget), with the
   allocator its connections used. */
WSCH_API void wsch_budget_free_spares(wsch_budget *b, const wsch_allocator *a);
/* Gives s a compressed copy, made once for every connection that agreed
   permessage-deflate with server_no_context_takeover (a broadcast
   compressed once). stream is a compressing stream of codec with a window
   of window_bits (9..15), reset here before use. Only when it is smaller:
   WSCH_OK without a copy otherwise (and for an s already tried). Returns
   WSCH_OK, WSCH_ERR_ARG, WSCH_ERR_NOMEM or WSCH_ERR_COMPRESSION. */
WSCH_API int wsch_shared_compress(wsch_shared *s, const wsch_deflate_codec *codec, void *stream, int window_bits);


#endif /* WS_CHANNEL_NO_CONN */

// >>envelope
#ifndef WS_CHANNEL_NO_ENVELOPE
/* ========================================================================
   Envelope: the {"type": T, "payload": P} message, and the strict JSON
   scanner under it. No allocation, no recursion, no tree: one bounded pass
   over the bytes. Everything returned points into the caller's input
   (borrowed) or is copied into a caller buffer.
   ======================================================================== */

/* Deepest nesting of arrays and objects accepted (the envelope's own object
   counts as 1). Deeper input fails with WSCH_ERR_JSON_DEPTH. Only the
   implementation file reads it. */
#ifndef WSCH_JSON_MAX_DEPTH
#define WSCH_JSON_MAX_DEPTH 64
#endif

/* Longest envelope type in bytes, after unescaping. Sizes wsch_envelope, so
   it must have the same value in every file that includes this header. */
#ifndef WSCH_ENVELOPE_TYPE_MAX
#define WSCH_ENVELOPE_TYPE_MAX 64
#endif

/* Longest session id (the "session" query parameter that scopes reliable
   message ids between a wsch_client and a wsch_hub): 1..64 bytes of
   A-Z a-z 0-9 - _. */
#define WSCH_SESSION_MAX 64u

/* Any envelope wsch_envelope_encode() accepts fits in
   payload_len + WSCH_ENVELOPE_OVERHEAD_MAX bytes, NUL included:
   {"type":  "T escaped (6 bytes per byte at worst)"  ,"payload":  }  NUL. */
#define WSCH_ENVELOPE_OVERHEAD_MAX (8u + 2u + 6u * (WSCH_ENVELOPE_TYPE_MAX) + 11u + 1u + 1u)

/* A decoded envelope. The type is copied; the payload is borrowed from the
   decoded input (valid as long as that input is). */
typedef struct wsch_envelope {
    char type[WSCH_ENVELOPE_TYPE_MAX + 1]; /* unescaped UTF-8, NUL-terminated */
    size_t type_len;                       /* bytes in type, NUL excluded */
    wsch_str payload;                      /* raw JSON text of the payload value, exactly the
                                              value's bytes (no surrounding whitespace);
                                              absent: ptr NULL and len 0; null: "null" */
} wsch_envelope;

/* The kind of a JSON value, judged from its first byte. */
typedef enum wsch_json_kind {
    WSCH_JSON_INVALID = 0,      /* empty span or not the start of a value */
    WSCH_JSON_OBJECT,
    WSCH_JSON_ARRAY,
    WSCH_JSON_STRING,
    WSCH_JSON_NUMBER,
    WSCH_JSON_TRUE,
    WSCH_JSON_FALSE,
    WSCH_JSON_NULL
} wsch_json_kind;

/* ---- Strictness, for every function below that reads JSON ----
   - RFC 8259 exactly: one value, optional whitespace (space, tab, CR, LF)
     around it, nothing else. No BOM, no comments, no trailing commas, no
     NaN/Infinity, no leading zeros, no single quotes.
   - Strings must be valid UTF-8 (RFC 3629) and free of raw control
     characters (< 0x20). An escape \uD800-\uDFFF that is not part of a
     high+low surrogate pair cannot become UTF-8 and is refused with
     WSCH_ERR_UTF8 (RFC 8259 section 8.2 leaves its meaning undefined).
   - Nesting deeper than WSCH_JSON_MAX_DEPTH: WSCH_ERR_JSON_DEPTH, found
     before any deeper byte is read.
   - Invalid input yields WSCH_ERR_JSON (syntax), WSCH_ERR_UTF8 or
     WSCH_ERR_JSON_DEPTH; when it has several faults, which one is reported
     is unspecified.
   - A key looked up (or "type"/"payload" in an envelope) that appears twice
     in the same object is refused with WSCH_ERR_JSON: parsers disagree on
     which copy wins, so accepting it would let two programs read one message
     two ways. Other duplicate keys are allowed, as RFC 8259 allows them.
   - Keys are compared after unescaping: "t\u0079pe" is "type". */

/* The whole span is one valid JSON value. Returns WSCH_OK, WSCH_ERR_JSON,
   WSCH_ERR_JSON_DEPTH or WSCH_ERR_UTF8. json is borrowed until return. */
WSCH_API int wsch_json_validate(const char *json, size_t len);

/* Decodes one envelope: the whole input is validated, the top level must be
   an object with a string member "type"; "payload" may be any value or
   absent; other members are ignored. On WSCH_OK, env->type holds the
   unescaped type and env->payload borrows from json. On error env is zeroed.
   Returns WSCH_OK; WSCH_ERR_JSON, WSCH_ERR_JSON_DEPTH or WSCH_ERR_UTF8 when
   the input is not valid JSON (or repeats "type" or "payload");
   WSCH_ERR_NO_TYPE when it is valid JSON but not an object, has no
   "type", or its type is not a string or contains U+0000 (types are compared
   as C strings; refusing NUL keeps "a\u0000b" from passing for "a");
   WSCH_ERR_TOO_LARGE when the unescaped type exceeds WSCH_ENVELOPE_TYPE_MAX
   bytes (never truncated). */
WSCH_API int wsch_envelope_decode(const char *json, size_t len, wsch_envelope *env);

/* 1 when env's type is exactly the NUL-terminated string type, else 0. */
WSCH_API int wsch_envelope_type_is(const wsch_envelope *env, const char *type);

/* Exact length (NUL excluded) of the envelope wsch_envelope_encode() writes
   for these arguments (payload_len 0 with a NULL payload: no payload member).
   Does not validate; saturates at SIZE_MAX. Buffers need one more byte. */
WSCH_API size_t wsch_envelope_size(const char *type, size_t type_len, const char *payload, size_t payload_len);

/* Writes {"type":"T","payload":P} and a NUL into out, or {"type":"T"} when
   payload is NULL. T is escaped (wsch_json_escape_string); P is copied
   verbatim after being checked to be exactly one JSON value. *out_len (may be
   NULL) gets the length without the NUL. Everything is borrowed until return.
   Returns WSCH_OK; WSCH_ERR_ARG (NULL pointer with a nonzero length, or a
   U+0000 in type); WSCH_ERR_TOO_LARGE (type_len > WSCH_ENVELOPE_TYPE_MAX, so
   every envelope sent can be decoded); WSCH_ERR_UTF8 (type is not valid
   UTF-8, or payload has a bad string); WSCH_ERR_JSON / WSCH_ERR_JSON_DEPTH
   (payload is not one valid JSON value); WSCH_ERR_BUFFER (cap is less than
   wsch_envelope_size() + 1). Nothing useful is in out after an error. */
WSCH_API int wsch_envelope_encode(const char *type, size_t type_len, const char *payload, size_t payload_len,
                                  char *out, size_t cap, size_t *out_len);

/* Exact length of s as a quoted JSON string (quotes included, NUL excluded),
   for any input; saturates at SIZE_MAX. */
WSCH_API size_t wsch_json_escaped_len(const char *s, size_t len);

/* Writes s as a quoted JSON string and a NUL: '"' and '\' escaped, control
   characters as \b \f \n \r \t or \u00XX, everything else (non-ASCII
   included) verbatim. Use it to build payloads such as
   {"channel":C,"data":D}. *out_len (may be NULL) gets the length without the
   NUL. Returns WSCH_OK, WSCH_ERR_ARG (NULL with nonzero length), WSCH_ERR_UTF8
   (s is not valid UTF-8) or WSCH_ERR_BUFFER (cap < wsch_json_escaped_len + 1). */
WSCH_API int wsch_json_escape_string(const char *s, size_t len, char *out, size_t cap, size_t *out_len);

/* Unescapes a raw JSON string token (quotes included, e.g. from
   wsch_json_get_raw) into out with a NUL. The text may contain U+0000; trust
   *out_len, not strlen. Returns WSCH_OK; WSCH_ERR_JSON / WSCH_ERR_UTF8 when
   str is not exactly one valid JSON string; WSCH_ERR_BUFFER when cap is less
   than the unescaped length + 1, with *out_len (if not NULL) set to that
   length so the caller can retry. */
WSCH_API int wsch_json_unescape_string(wsch_str str, char *out, size_t cap, size_t *out_len);

/* Kind of the value whose raw text starts at v.ptr (no validation). */
WSCH_API wsch_json_kind wsch_json_kind_of(wsch_str v);

/* ---- Lookups in one object, typically an envelope's payload ----
   obj must be one valid JSON value (it is validated in full on every call,
   one pass); only the members of the top-level object are searched, never
   nested ones. key is a NUL-terminated UTF-8 name. All spans returned borrow
   from obj. Common codes: WSCH_ERR_JSON / WSCH_ERR_JSON_DEPTH / WSCH_ERR_UTF8
   (obj invalid, or key present twice); WSCH_ERR_NOT_FOUND (obj is not an
   object, the key is absent, or its value is not of the kind asked for).
   To read several keys, wsch_json_get_members() does it in one pass; every
   single-key lookup below is that function with one key. */

/* Looks up count keys in one pass over obj, which is validated exactly as
   by the single lookups (same strictness; a looked-up key present twice is
   WSCH_ERR_JSON). values[i] gets the raw text of keys[i]'s value (as
   wsch_json_get_raw), or {NULL, 0} when obj has no such member: an absent
   key is not an error, check values[i].ptr. A key listed twice in keys fills
   only its first slot. keys and values are borrowed until return.
   Returns WSCH_OK when obj is a valid object (whichever keys were found);
   WSCH_ERR_NOT_FOUND when obj is valid JSON but not an object;
   WSCH_ERR_JSON / WSCH_ERR_JSON_DEPTH / WSCH_ERR_UTF8 when it is invalid;
   WSCH_ERR_ARG for NULL keys or values with count > 0, or a NULL key. After
   any other code than WSCH_OK or WSCH_ERR_ARG all values are {NULL, 0}. */
WSCH_API int wsch_json_get_members(wsch_str obj, const char *const *keys, size_t count, wsch_str *values);

/* wsch_json_get_members() over env->payload without validating it again:
   wsch_envelope_decode() validated the whole message, so this pass only
   finds the members (and still refuses a looked-up key present twice with
   WSCH_ERR_JSON, which decoding does not check). A decode and this call read
   the payload's bytes twice in all, where decode, wsch_envelope_get_channel
   and wsch_json_get_raw read them three times and validate them thrice.
   env must be filled by a successful wsch_envelope_decode() whose input has
   not changed since; anything else gives unspecified answers (never an
   out-of-bounds read). An absent payload is WSCH_ERR_NOT_FOUND. Returns as
   wsch_json_get_members, WSCH_ERR_ARG also for a NULL env. */
WSCH_API int wsch_envelope_get_members(const wsch_envelope *env, const char *const *keys, size_t count,
                                       wsch_str *values);

/* *value = raw text of the member's value (any kind). */
WSCH_API int wsch_json_get_raw(wsch_str obj, const char *key, wsch_str *value);

/* String member, unescaped into out with a NUL (see
   wsch_json_unescape_string for WSCH_ERR_BUFFER and *out_len). */
WSCH_API int wsch_json_get_string(wsch_str obj, const char *key, char *out, size_t cap, size_t *out_len);

/* Number member as the nearest double (strtod's rounding, correct on glibc
   and musl; independent of the locale's decimal point).
   WSCH_ERR_TOO_LARGE when it overflows a double or its text is longer than
   512 bytes. */
WSCH_API int wsch_json_get_number(wsch_str obj, const char *key, double *out);

/* Number member whose exact value is an integer in int64_t range: 42, -7,
   1e3, 2.50e1 and -0 qualify; 1.5 is WSCH_ERR_NOT_FOUND; out of range is
   WSCH_ERR_TOO_LARGE. */
WSCH_API int wsch_json_get_int(wsch_str obj, const char *key, int64_t *out);

/* The elements of a JSON array, one per call: *pos starts at 0 and is
   advanced; *elem gets the next element's raw text. Returns WSCH_OK,
   WSCH_ERR_NOT_FOUND past the last one, or WSCH_ERR_JSON when array does
   not start with '['. array must be valid JSON (a span a lookup above
   returned, say: they validate); on anything else the answers are
   unspecified, but nothing outside array is read. */
WSCH_API int wsch_json_array_next(wsch_str array, size_t *pos, wsch_str *elem);

/* The "channel" of a subscribe/unsubscribe/publish payload: a non-empty
   string without U+0000, unescaped into out with a NUL. Returns as
   wsch_json_get_string, and WSCH_ERR_NOT_FOUND for an empty channel or one
   containing U+0000. */
WSCH_API int wsch_envelope_get_channel(wsch_str payload, char *out, size_t cap, size_t *out_len);

#endif /* WS_CHANNEL_NO_ENVELOPE */

// >>client
#ifndef WS_CHANNEL_NO_CLIENT
/* ========================================================================
   Client (wsch_client): a reconnecting message client over one wsch_conn.

   The client owns the connection's life: it asks the caller to open a
   transport, runs the opening handshake, keeps the link alive with a
   heartbeat, notices a dead peer, and when the link goes away it waits
   (exponential backoff with jitter) and opens a new one, replaying the
   channel subscriptions and then the messages sent while offline.

   Effects, all in desc.effects, all receiving desc.user:
     connect(host, port)     open a transport; later call
                             wsch_client_transport_open() or
                             wsch_client_transport_failed()
     send(bytes)             write; bytes taken, 0 = would block,
                             WSCH_SEND_ERROR = broken (the link is lost)
     close()                 release the transport: exactly once for every
                             connect(), whatever happened to it (failed,
                             closed by either side, reported closed by you,
                             abandoned, destroyed). The transport is gone
                             for the client at once: report nothing more.
     timer_set/timer_cancel  one-shot timers by id; on expiry call
                             wsch_client_timer_fired(id). The ids the
                             connection uses (1..15) and the client's own
                             (WSCH_CLIENT_TIMER_*, 16 and up) share the one
                             callback pair and never clash.
     now_ms                  a monotonic clock in milliseconds
     random_bytes            handshake keys, frame masks and jitter
     log                     optional: short static strings, for tracing
   Inputs: wsch_client_feed(bytes), wsch_client_writable(),
   wsch_client_timer_fired(id), wsch_client_transport_closed().

   States (status is what wsch_client_status() and on_status report):

   | state      | status       | meaning                                    |
   | ---------- | ------------ | ------------------------------------------ |
   | IDLE       | disconnected | not started, or stopped (see stop reason)  |
   | CONNECTING | connecting   | connect() effect called, transport pending |
   | HANDSHAKE  | connecting   | transport open, opening handshake running  |
   | OPEN       | connected    | messages flow; heartbeat running           |
   | WAITING    | disconnected | retry timer armed (next_retry_ms >= 0)     |
   | CLOSING    | disconnected | disconnect() while open: the close         |
   |            |              | handshake finishes in the background       |

   | from       | event                                | to                  |
   | ---------- | ------------------------------------ | ------------------- |
   | IDLE       | wsch_client_connect()                | CONNECTING          |
   | CONNECTING | wsch_client_transport_open()         | HANDSHAKE           |
   | CONNECTING | transport_failed / _closed           | WAITING or IDLE (1) |
   | HANDSHAKE  | handshake accepted                   | OPEN (2)            |
   | HANDSHAKE  | handshake refused, timeout, closed   | WAITING or IDLE (1) |
   | OPEN       | close frame, transport closed,       | WAITING or IDLE (1) |
   |            | protocol error                       | (on_disconnect)     |
   | OPEN       | no inbound byte within pong timeout  | WAITING or IDLE (1) |
   |            | of a heartbeat (dead peer)           | (on_disconnect)     |
   | OPEN       | close code in the terminal set       | IDLE (terminal)     |
   | WAITING    | retry timer fired                    | CONNECTING          |
   | OPEN       | wsch_client_disconnect()             | CLOSING             |
   | CLOSING    | close handshake done or timed out    | IDLE                |
   | any other  | wsch_client_disconnect()             | IDLE (stopped: user)|
   | CLOSING    | wsch_client_connect()                | CONNECTING (the     |
   |            |                                      | old link is dropped)|

   (1) max_attempts counts tries in a row, the first connect included: with
       the default 10 the client makes 10 tries (1 + 9 retries), then stops
       (IDLE, stop reason MAX_ATTEMPTS, on_stop). wsch_client_attempts() is
       the number of failed tries in a row. Retry n (1 for the first) waits
       delay = min(backoff_base_ms << (n - 1), backoff_max_ms), n counting
       the retries since the last open or wsch_client_connect(); with jitter
       (the default) the wait is uniform in [delay/2, delay] (exactly
       delay - r, r uniform in 0..delay/2).
       A refusal with HTTP 429 or 503 and a Retry-After of N seconds waits
       at least N s (at most WSCH_MAX_RETRY_AFTER_S), whatever the backoff.
   (2) On open the remembered subscriptions are sent in the order they were
       made (each asking to recover from its position, see below), then the
       outbox of reliable messages is sent again, then the offline queue is
       flushed in order, then on_status(CONNECTED) and on_connect run. The retry counters reset
       only when that link has stayed open for min_uptime_ms: one that ends
       sooner counts as a failed try, so a server that accepts and drops at
       once is retried with growing waits, not every backoff_base_ms.

   The first wsch_client_connect() connects at once; only retries wait.

   Heartbeat: every heartbeat_interval_ms while OPEN the client sends
   {"type":"ping"} (and/or a protocol ping, see wsch_heartbeat). If no
   byte at all arrives within pong_timeout_ms after a heartbeat, the peer is
   taken for dead: the transport is closed, on_disconnect reports
   WSCH_CLOSE_ABNORMAL with reason "ping timeout", and the retry path runs.
   Incoming {"type":"pong"} is swallowed (no handler sees it).

   Nothing lost across reconnects (with a hub that keeps history; see the
   hub's "History and recovery" and "Reliable messages"):
   - Downstream. A channel message carries its position ("channel",
     "offset", "epoch"); the client remembers the last one per subscribed
     channel (or the position a "subscribed" confirmation gave) and, after a
     reconnect, subscribes with "recover" from it. A message whose offset is
     not past the remembered one (same epoch) is a duplicate: dropped, no
     handler sees it. The confirmation says whether everything missed was
     replayed: on_recovery reports it per channel, and
     wsch_client_channel_position() keeps it. A server that sends no
     positions gets plain subscribes, as before.
   - Upstream. wsch_client_send_reliable() gives the message an id and keeps
     it in the outbox until the hub's ack, sending it again after every
     reconnect; the hub applies an id once per session. The session is the
     "session" query parameter of every handshake (desc.session, or 32 hex
     digits drawn at create). on_ack reports each ack; on_send_failed a
     message given up: refused by the hub (its error code), or the client
     stopped for good (terminal close code, refused handshake, retries used
     up; not wsch_client_disconnect(), which keeps the outbox). Plain sends
     (wsch_client_send) stay fire-and-forget: queued offline and flushed on
     open, lost if that link dies before the hub reads them.

   Re-entrancy: from inside any callback the caller may send, subscribe,
   unsubscribe, register or remove handlers (the running one included),
   connect, disconnect, and destroy the client (the free waits until the
   outermost client call returns). A handler registered during a dispatch
   first sees the next message; one removed during a dispatch is not called
   again, even for the message being dispatched.
   ======================================================================== */

typedef struct wsch_client wsch_client;

typedef enum wsch_status {
    WSCH_STATUS_DISCONNECTED = 0,
    WSCH_STATUS_CONNECTING,
    WSCH_STATUS_CONNECTED
} wsch_status;

/* Why the client is not trying to connect (wsch_client_stop_reason()). */
typedef enum wsch_stop {
    WSCH_STOP_NONE = 0,         /* running, or waiting to retry, or never started */
    WSCH_STOP_USER,             /* wsch_client_disconnect() */
    WSCH_STOP_TERMINAL_CODE,    /* the server closed with a code that means "do not retry" */
    WSCH_STOP_MAX_ATTEMPTS,     /* max_attempts tries in a row failed */
    WSCH_STOP_REFUSED           /* the handshake was refused with HTTP 401 or 403 */
} wsch_stop;

/* How the heartbeat is sent. */
typedef enum wsch_heartbeat {
    WSCH_HEARTBEAT_DEFAULT = 0, /* = WSCH_HEARTBEAT_APP */
    WSCH_HEARTBEAT_APP,         /* text message {"type":"ping"}; servers answer {"type":"pong"} */
    WSCH_HEARTBEAT_PROTOCOL,    /* RFC 6455 ping frame; the peer's pong frame is the answer */
    WSCH_HEARTBEAT_BOTH,        /* both, each interval */
    WSCH_HEARTBEAT_OFF          /* no heartbeat and no dead-peer detection */
} wsch_heartbeat;

/* The client's own timer ids (the connection's are 1..15). */
enum {
    WSCH_CLIENT_TIMER_RETRY     = 16,   /* backoff wait before the next connect */
    WSCH_CLIENT_TIMER_HEARTBEAT = 17,   /* next heartbeat */
    WSCH_CLIENT_TIMER_PONG      = 18    /* dead-peer deadline after a heartbeat */
};

/* max_attempts value for "try forever" (0 means the default, 10 tries). */
#define WSCH_CLIENT_FOREVER 0xFFFFFFFFu

/* Defaults for zero fields in wsch_client_desc. */
#define WSCH_CLIENT_DEFAULT_BACKOFF_BASE_MS    1000u
#define WSCH_CLIENT_DEFAULT_BACKOFF_MAX_MS     30000u
#define WSCH_CLIENT_DEFAULT_MAX_ATTEMPTS       10u
#define WSCH_CLIENT_DEFAULT_HEARTBEAT_MS       30000u
#define WSCH_CLIENT_DEFAULT_PONG_TIMEOUT_MS    10000u
#define WSCH_CLIENT_DEFAULT_MIN_UPTIME_MS      5000u
#define WSCH_CLIENT_DEFAULT_QUEUE_MAX_COUNT    256u
#define WSCH_CLIENT_DEFAULT_QUEUE_MAX_BYTES    (256u * 1024u)
#define WSCH_CLIENT_MAX_TERMINAL_CODES         16u
#define WSCH_CLIENT_DEFAULT_OUTBOX_MAX_COUNT   256u   /* also the most: the hub's window of outcomes */
#define WSCH_CLIENT_DEFAULT_OUTBOX_MAX_BYTES   (256u * 1024u)
#define WSCH_CLIENT_EPOCH_MAX                  64u    /* longer epochs are not remembered */
#define WSCH_CLIENT_CHANNEL_MAX                255u   /* positions of longer channel names are ignored */
#define WSCH_CLIENT_MEMBER_ID_MAX              255u   /* presence: longer user ids are skipped */
#define WSCH_CLIENT_MEMBER_INFO_MAX            4096u  /* ... and so are members with longer info */
#define WSCH_CLIENT_MEMBERS_MAX                65536u /* ... and members past this many in a channel */

/* Where a subscribed channel stands after the last reconnect. */
typedef enum wsch_recovery {
    WSCH_RECOVERY_NONE = 0,     /* not resubscribed since it was joined (or no position was known) */
    WSCH_RECOVERY_PENDING,      /* resubscribed with recover; the confirmation has not come */
    WSCH_RECOVERY_RECOVERED,    /* the hub replayed everything missed */
    WSCH_RECOVERY_LOST          /* it could not: messages were missed (refetch what matters) */
} wsch_recovery;

/* A subscribed channel's position (wsch_client_channel_position()). */
typedef struct wsch_client_position {
    int known;                              /* 0: no position yet (none given by the server) */
    uint64_t offset;                        /* of the last message seen */
    char epoch[WSCH_CLIENT_EPOCH_MAX + 1];  /* NUL-terminated */
    wsch_recovery recovery;
} wsch_client_position;

/* A received message as handlers see it. Every pointer is valid only during
   the callback. */
typedef struct wsch_client_message {
    const char *type;           /* unescaped, NUL-terminated */
    size_t type_len;
    wsch_str payload;           /* raw JSON text of "payload"; ptr NULL when absent */
    wsch_str raw;               /* the whole envelope as received */
    const char *channel;        /* a channel message's "channel", unescaped; NULL when it has no position */
    uint64_t offset;            /* and its "offset" */
} wsch_client_message;

typedef void (*wsch_client_handler_fn)(wsch_client *c, const wsch_client_message *msg, void *user);

/* A handler registration. id 0 is never valid. Ids are never reused within
   a client (a 32-bit generation counter), so a removed or foreign handle is
   detected (WSCH_ERR_STALE), not followed. */
typedef struct wsch_client_handler {
    uint32_t id;
} wsch_client_handler;

/* Everything a client needs. Zero means the documented default. Strings and
   the terminal-code array are copied by wsch_client_create(); the desc need
   not outlive the call. */
typedef struct wsch_client_desc {
    const char *url;                    /* required: ws://host[:port][/path][?query]; wss:// is
                                           accepted when the caller's transport does TLS */
    const char *token;                  /* NULL = no token */
    wsch_token_source token_in;         /* where it travels: WSCH_TOKEN_QUERY (the default,
                                           ?token=<percent-encoded> appended to the URL's query)
                                           or WSCH_TOKEN_AUTHORIZATION (Authorization: Bearer) */
    const char *origin;                 /* Origin header, or NULL */
    const char *protocols;              /* Sec-WebSocket-Protocol offer, or NULL */
    const char *extra_headers;          /* complete "Name: value\r\n" lines, or NULL */

    uint32_t backoff_base_ms;           /* 1000 */
    uint32_t backoff_max_ms;            /* 30000 (the cap) */
    uint32_t max_attempts;              /* 10 tries in a row (the first included);
                                           WSCH_CLIENT_FOREVER = no limit */
    int no_jitter;                      /* 1: wait exactly min(base << n, cap) */
    wsch_heartbeat heartbeat;    /* APP */
    uint32_t heartbeat_interval_ms;     /* 30000 */
    uint32_t pong_timeout_ms;           /* 10000: silence after a heartbeat that means "dead" */
    uint32_t min_uptime_ms;             /* 5000: how long a link must stay open before the
                                           retry counters reset (see (2) above) */

    /* Offline queue: messages sent while not connected, flushed in order
       after the subscriptions are replayed. A send that would pass either
       limit fails with WSCH_ERR_QUEUE_FULL. Bytes count the encoded
       envelopes. */
    size_t queue_max_count;             /* 256 messages */
    size_t queue_max_bytes;             /* 256 KiB */
    int no_offline_queue;               /* 1: sends while not connected fail with WSCH_ERR_STATE */
    /* Outbox of reliable messages (wsch_client_send_reliable): sent or not,
       each stays until acked or given up. */
    size_t outbox_max_count;            /* 256 messages, and at most 256 */
    size_t outbox_max_bytes;            /* 256 KiB of encoded envelopes */
    const char *session;                /* 1..64 of A-Z a-z 0-9 - _ ; NULL: 32 random hex digits */

    /* Close codes that end the retry loop besides 4001 and 1008 (always terminal). */
    const uint16_t *terminal_codes;     /* copied; at most WSCH_CLIENT_MAX_TERMINAL_CODES */
    size_t num_terminal_codes;

    wsch_limits limits;                 /* of each connection (0 = the connection's defaults) */
    wsch_deflate_desc deflate;          /* permessage-deflate offer: codec NULL = none */
    wsch_allocator allocator;
    /* connect, send, close, timer_set, timer_cancel, now_ms and random_bytes
       are required; log is optional. */
    wsch_effects effects;
    void *user;                         /* passed to every effect and event */

    /* Events, all optional. Pointers are valid only during the callback.
       on_disconnect runs when a link whose on_connect ran ends: code is the
       peer's close code, WSCH_CLOSE_NO_STATUS, WSCH_CLOSE_ABNORMAL (transport
       lost, dead peer) or the code this side failed the connection with;
       by then the next step is decided (stop reason, next retry).
       on_error reports failed attempts and dropped input: err is a
       wsch_err, what a short static description.
       on_binary receives binary messages (the envelope protocol is text).
       on_stop runs once each time the client stops for good, last of the
       events of that step: retries used up, a terminal close code, a
       refused handshake, or wsch_client_disconnect() (when its close
       handshake is complete, or at once when there was no open link). */
    void (*on_status)(wsch_client *c, wsch_status status, void *user);
    void (*on_connect)(wsch_client *c, void *user);
    void (*on_disconnect)(wsch_client *c, int code, const char *reason, size_t reason_len, void *user);
    void (*on_error)(wsch_client *c, int err, const char *what, void *user);
    void (*on_binary)(wsch_client *c, const void *data, size_t len, void *user);
    void (*on_stop)(wsch_client *c, wsch_stop reason, void *user);
    /* After a reconnect, per channel resubscribed with recover: 1 when
       everything missed was replayed (the messages came before this), 0
       when some could not be. Also 0, any time, when the hub says messages
       were lost under a live subscription. */
    void (*on_recovery)(wsch_client *c, const char *channel, int recovered, void *user);
    /* A reliable message was acknowledged: it took effect, once. */
    void (*on_ack)(wsch_client *c, uint64_t id, void *user);
    /* A reliable message was given up: err WSCH_ERR_DENIED with the hub's
       error code (it was refused; it had no effect, except for the code
       "unconfirmed": the hub's bridge lost track of it, so it may have),
       or WSCH_ERR_CLOSED
       with code "" (the client stopped for good; it may or may not have
       taken effect). */
    void (*on_send_failed)(wsch_client *c, uint64_t id, int err, const char *code, void *user);
    /* Presence (wsch_client_subscribe_presence): member joined (1) or left
       (0) channel; info is its info (JSON text) or NULL. After a reconnect
       the hub's list replaces what the client had, and only the difference
       is reported. member NULL: the hub sends counts only for this channel
       now (over its cap; wsch_client_presence_count() has them), and the
       member list is dropped. */
    void (*on_presence)(wsch_client *c, const char *channel, const char *member, const char *info, int joined,
                        void *user);
} wsch_client_desc;

/* desc with every zero field replaced by its default (strings and callbacks
   are left as they are): what a client created from desc will use. */
WSCH_API wsch_client_desc wsch_client_desc_defaults(const wsch_client_desc *desc);

/* Creates a client in IDLE; nothing happens until wsch_client_connect().
   Returns WSCH_OK, WSCH_ERR_ARG (missing url or required callback, too many
   terminal codes, token too long), WSCH_ERR_URL or WSCH_ERR_NOMEM. The
   client is owned by the caller until wsch_client_destroy(). */
WSCH_API int wsch_client_create(const wsch_client_desc *desc, wsch_client **out);
/* Frees everything: connection, handlers, subscriptions, queued messages.
   Cancels the timers it armed and closes an open transport (the close and
   timer_cancel effects run; no event callbacks). Safe from inside any
   callback: the free waits until the outermost client call returns. */
WSCH_API void wsch_client_destroy(wsch_client *c);

/* Starts connecting (at once) from IDLE, WAITING (the wait is cut short) or
   CLOSING; clears the stop reason and the retry counter. Returns WSCH_OK,
   or WSCH_ERR_STATE when already CONNECTING, in HANDSHAKE or OPEN. */
WSCH_API int wsch_client_connect(wsch_client *c);
/* Stops for good until the next wsch_client_connect(): cancels the retry
   and heartbeat timers, closes a connection (with 1000 when OPEN: the close
   handshake finishes in the background, bounded by close_timeout_ms) or
   abandons a pending transport. Status becomes DISCONNECTED, stop reason
   WSCH_STOP_USER. Subscriptions, handlers and the offline queue are kept.
   Returns WSCH_OK (also when already stopped). */
WSCH_API int wsch_client_disconnect(wsch_client *c);

/* The transport asked for by connect() is open, or could not be opened.
   Ignored unless the client is CONNECTING. */
WSCH_API void wsch_client_transport_open(wsch_client *c);
WSCH_API void wsch_client_transport_failed(wsch_client *c);
/* Received bytes (modified in place: unmasking). Any byte counts as a sign
   of life for the dead-peer check. Returns WSCH_OK, or the error that ended
   the connection (the retry path has already run); bytes arriving with no
   connection are ignored (WSCH_ERR_STATE). */
WSCH_API int wsch_client_feed(wsch_client *c, void *data, size_t len);
/* The transport can take more bytes. WSCH_OK or WSCH_ERR_STATE. */
WSCH_API int wsch_client_writable(wsch_client *c);
/* A timer armed through timer_set fired. Unknown or cancelled ids are ignored. */
WSCH_API void wsch_client_timer_fired(wsch_client *c, unsigned timer_id);
/* The transport closed by itself (EOF, error). Ignored when there is none. */
WSCH_API void wsch_client_transport_closed(wsch_client *c);

/* Sends {"type":type,"payload":payload}: type NUL-terminated, payload JSON
   text of payload_len bytes (WSCH_CSTR: NUL-terminated) or NULL for none;
   both borrowed until return. While not OPEN the encoded envelope
   goes to the offline queue. Returns WSCH_OK; envelope errors
   (WSCH_ERR_ARG, WSCH_ERR_TOO_LARGE, WSCH_ERR_UTF8, WSCH_ERR_JSON,
   WSCH_ERR_JSON_DEPTH); WSCH_ERR_QUEUE_FULL (offline queue full, or the
   connection's outbound limit); WSCH_ERR_STATE (not OPEN and the offline
   queue is off); WSCH_ERR_CLOSED (the server's close frame has arrived and
   the link is ending: the message would be lost, resend after the
   reconnect); WSCH_ERR_TRANSPORT (send reported the transport broken: the
   link is lost and the message with it); WSCH_ERR_NOMEM. On error nothing
   was sent or queued. */
WSCH_API int wsch_client_send(wsch_client *c, const char *type, const char *payload, size_t payload_len);
/* Same for an already encoded text message (checked to be UTF-8, not
   parsed); len may be WSCH_CSTR. */
WSCH_API int wsch_client_send_text(wsch_client *c, const char *text, size_t len);
/* Sends {"type":type,"payload":payload,"id":I} reliably: into the outbox
   (sent at once when OPEN), kept until the hub acknowledges I, sent again
   after every reconnect (see "Nothing lost" above). *id (may be NULL) gets
   I, growing from 1 per client. Returns WSCH_OK, the envelope errors of
   wsch_client_send, WSCH_ERR_QUEUE_FULL (outbox limits; nothing kept) or
   WSCH_ERR_NOMEM. A send the open link cannot take now stays in the outbox
   for writable() or the next link: not an error. Reliable sends keep their
   order among themselves, as plain sends do; a plain send may overtake a
   reliable one still waiting in the outbox. */
WSCH_API int wsch_client_send_reliable(wsch_client *c, const char *type, const char *payload, size_t payload_len,
                                       uint64_t *id);
/* Reliable messages not yet acknowledged, and how many in all needed more
   than one send. */
WSCH_API size_t wsch_client_outbox_count(const wsch_client *c);
WSCH_API uint64_t wsch_client_resent(const wsch_client *c);
/* The session id sent in every handshake (NUL-terminated, the client's). */
WSCH_API const char *wsch_client_session(const wsch_client *c);

/* Adds channel (copied) to the remembered set and, when OPEN, sends
   {"type":"subscribe","payload":{"channel":channel}}. The set is replayed
   in subscription order after every reconnect. Subscribing twice is a
   no-op. A link that ends under the send (WSCH_ERR_TRANSPORT or _CLOSED
   inside) keeps the channel for the replay, as offline. Returns WSCH_OK,
   WSCH_ERR_ARG (empty or NUL channel), WSCH_ERR_UTF8, WSCH_ERR_QUEUE_FULL
   (the send failed; the set is unchanged) or WSCH_ERR_NOMEM. */
WSCH_API int wsch_client_subscribe(wsch_client *c, const char *channel);
/* The same, asking the first time for the last `last` messages the hub
   keeps (a late joiner sees the recent conversation); reconnects recover
   from the position as always. */
WSCH_API int wsch_client_subscribe_history(wsch_client *c, const char *channel, uint32_t last);
/* The same, asking also for the channel's presence: the client keeps its
   members (user ids, sorted, with their info), resynchronised after each
   reconnect, and reports joins and leaves through on_presence. Asking a
   channel already subscribed adds presence to it. Members with a user id
   longer than WSCH_CLIENT_MEMBER_ID_MAX or info longer than
   WSCH_CLIENT_MEMBER_INFO_MAX, or past WSCH_CLIENT_MEMBERS_MAX, are
   skipped (on_error says so). */
WSCH_API int wsch_client_subscribe_presence(wsch_client *c, const char *channel);
/* Users in channel as the client knows them: its members, or, when the hub
   sends counts only (*listed 0), the last count it sent. 0 for a channel
   not subscribed with presence. listed may be NULL. */
WSCH_API size_t wsch_client_presence_count(const wsch_client *c, const char *channel, int *listed);
/* The i-th member in user id order, or NULL past the last; *info (may be
   NULL) gets its info (JSON text) or NULL. Valid until the client's next
   call or event. */
WSCH_API const char *wsch_client_presence_member(const wsch_client *c, const char *channel, size_t i,
                                                 const char **info);
/* The position of a subscribed channel: WSCH_OK or WSCH_ERR_NOT_FOUND. */
WSCH_API int wsch_client_channel_position(const wsch_client *c, const char *channel, wsch_client_position *out);
/* Removes channel and, when OPEN, sends the matching "unsubscribe".
   Returns WSCH_OK, WSCH_ERR_NOT_FOUND (not subscribed) or the send's error
   (the channel is removed all the same). */
WSCH_API int wsch_client_unsubscribe(wsch_client *c, const char *channel);
/* Number of remembered subscriptions, and the i-th (in order; NULL when out
   of range). The string is owned by the client until unsubscribed. */
WSCH_API size_t wsch_client_subscription_count(const wsch_client *c);
WSCH_API const char *wsch_client_subscription(const wsch_client *c, size_t i);

/* Registers fn for messages whose type equals type (copied), or for every
   message with type "*". Handlers run in registration order. Type "pong"
   is the heartbeat's answer and never reaches a handler. *out (may be
   NULL) gets the handle. Returns WSCH_OK, WSCH_ERR_ARG, WSCH_ERR_TOO_LARGE
   (type longer than WSCH_ENVELOPE_TYPE_MAX) or WSCH_ERR_NOMEM. */
WSCH_API int wsch_client_on(wsch_client *c, const char *type, wsch_client_handler_fn fn, void *user,
                            wsch_client_handler *out);
/* Removes a handler. Returns WSCH_OK or WSCH_ERR_STALE (removed already,
   never registered, or from another client). */
WSCH_API int wsch_client_off(wsch_client *c, wsch_client_handler h);

WSCH_API wsch_status wsch_client_status(const wsch_client *c);
/* Milliseconds until the next connect attempt while WAITING, else -1. */
WSCH_API int64_t wsch_client_next_retry_ms(const wsch_client *c);
/* Failed tries in a row (tries that never opened) since the last open or
   wsch_client_connect(): 0 while none, 1 after the first failure, and
   max_attempts when the client stopped for that reason. */
WSCH_API uint32_t wsch_client_attempts(const wsch_client *c);
/* The HTTP status of the last handshake answer (101 once open; 401 for a
   refused token), 0 before any answer arrived. A handshake refused with a
   status other than 101 is reported to on_error as WSCH_ERR_STATUS. */
WSCH_API int wsch_client_http_status(const wsch_client *c);
/* What the current transport should wait for (WSCH_WANT_READ/_WRITE; WRITE
   while a connect() is pending, as a non-blocking connect completes by
   becoming writable), 0 when the client has no transport. */
WSCH_API unsigned wsch_client_want(const wsch_client *c);
WSCH_API wsch_stop wsch_client_stop_reason(const wsch_client *c);
/* Last close code seen (0 before any), e.g. the terminal code that stopped it. */
WSCH_API int wsch_client_last_close_code(const wsch_client *c);
/* Messages and bytes waiting in the offline queue. */
WSCH_API size_t wsch_client_queued_count(const wsch_client *c);
WSCH_API size_t wsch_client_queued_bytes(const wsch_client *c);
/* The current connection (HANDSHAKE, OPEN or CLOSING), or NULL. Borrowed:
   it may be destroyed by the next event. */
WSCH_API wsch_conn *wsch_client_conn(const wsch_client *c);
WSCH_API void *wsch_client_user(const wsch_client *c);
WSCH_API const char *wsch_status_str(wsch_status s);
WSCH_API const char *wsch_stop_str(wsch_stop s);

#endif /* WS_CHANNEL_NO_CLIENT */

// >>hub
#ifndef WS_CHANNEL_NO_HUB
/* ========================================================================
   Hub (wsch_hub): the server side of the message system. The caller accepts
   TCP connections and hands each to the hub; the hub runs the handshake on
   its path, authenticates, keeps the index of users and channels, answers
   ping/subscribe/unsubscribe envelopes and fans broadcasts out, encoding
   each broadcast once and queueing the same bytes to every subscriber.
   Channels and users are hash tables (keyed hash, seeded from random_bytes);
   send_to_user walks the user's own connections, never all peers;
   unsubscribing costs a hash lookup and a scan of that peer's own
   subscriptions (at most max_channels_per_peer). A hub and its peers
   belong to one thread; any number of hubs may run side by side.

   Re-entrancy: from on_message, on_connect and on_disconnect the caller may
   call wsch_hub_broadcast, _send_to_user, _send, _peer_close, _subscribe,
   _unsubscribe and every getter, for any peer, the one being served
   included (a peer dropped meanwhile just stops receiving). check_origin,
   authenticate, authorize_subscribe and on_http may call the getters only.
   The effects and the bridge callbacks must not call into the hub (close()
   may call wsch_hub_transport_closed(), which does nothing there). Never
   wsch_hub_destroy() from inside a hub callback.

   Stale handles: once a peer's close() has run its handle is stale; every
   call taking it returns WSCH_ERR_STALE, or what its comment says (0, NULL,
   WSCH_STATE_CLOSED), and leaves its out-parameters as documented there
   (*user_id empty), never pointing at freed memory.

   Wire protocol (text frames, one envelope each):
     peer -> hub   {"type":"ping","payload":P}          hub answers {"type":"pong","payload":P}
                     {"type":"subscribe","payload":{"channel":C}}
                                                          hub answers {"type":"subscribed","payload":{"channel":C}}
                     {"type":"unsubscribe","payload":{"channel":C}}
                                                          hub answers {"type":"unsubscribed","payload":{"channel":C}}
                                                          (also when C was not subscribed: it is idempotent)
                     anything else                        on_message (or an "unknown_type" error without one)
     hub -> peer   {"type":"error","payload":{"code":K,"message":M[,"request":T][,"channel":C][,"id":I]}}
                     K is one of:
                       "bad_envelope"       not JSON, or no string "type" (T absent)
                       "bad_payload"        subscribe/unsubscribe without a string "channel"
                       "bad_channel"        channel empty, longer than max_channel_len, or with a
                                            byte outside A-Z a-z 0-9 and - _ . : @ / (C absent)
                       "too_many_channels"  max_channels_per_peer reached
                       "forbidden"          authorize_subscribe said no
                       "unknown_type"       no on_message handler for T
                       "server_error"       out of memory; the request had no effect
                       "bad_id"             a message's "id" is not an integer 1..2^53
                       others               from wsch_hub_refuse() (the application's own)
                     An error never closes the connection. Binary messages are
                     not envelopes: they close it with 1003.
   History and recovery (desc.history_size > 0, or desc.positions for the
   positions alone; without either none of this):
     Every channel has a stream position: an offset, one more per message
     broadcast to it (the first is 1), and an epoch, 16 hex digits drawn
     when the channel's stream starts (the channel is new to this process,
     or its history and subscribers were all gone). Every channel message
     carries it beside type and payload (clients that ignore it work as
     before):
       {"type":T,"payload":P,"channel":C,"offset":N,"epoch":E}
     The last history_size messages of each channel, none older than
     history_ttl_ms, history_max_bytes in all, are kept (the oldest go first).
     A subscribe's payload may carry one of
       "recover":{"offset":N,"epoch":E}   every message after N, then the
                                          confirmation with "recovered":true;
                                          when that is impossible (another
                                          epoch, N older than the history, N
                                          ahead of the channel), nothing is
                                          replayed and "recovered":false
       "history":K                        the last K messages kept (at most
                                          history_size), then the confirmation
     and the confirmation carries the position the subscriber is at:
       {"type":"subscribed","payload":{"channel":C,"offset":N,"epoch":E[,"recovered":B]}}
     ("recovered" only when recover was asked). A replay is paced: it goes
     out while the peer's queue is under half of max_outbound_bytes and
     resumes from wsch_hub_writable(), so it never counts as a slow
     consumer; live messages of the channel reach the peer only after it,
     in offset order. History evicted under a replay ends it with
     "recovered":false (the subscriber keeps what it got). A replay is
     paced only when the transport fills: over a transport that takes
     everything, it goes out inside the subscribe.
     With positions but no history nothing can be replayed, but a
     subscriber still learns whether it missed anything: "recovered" is
     true only when nothing was sent since its position.
     Under a bridge's shared positions (see wsch_hub_bridge) a subscribe
     may wait for the bridge's answer before anything is sent, and a live
     subscriber whose messages were lost for good (the bridge lost its
     history) gets the confirmation again, unasked, with "recovered":false
     and the position delivery goes on from.
   Reliable messages (client to hub): an envelope with a top-level "id"
     (an integer 1..2^53, growing per session) is answered, once on_message
     has returned, with {"type":"ack","payload":{"id":I}}, or with the error
     that wsch_hub_refuse() (or the hub itself) sent, carrying "id":I. The
     session scoping ids is the "session" query parameter of the upgrade
     request (1..64 bytes of A-Z a-z 0-9 - _; malformed: HTTP 400). Per
     session the hub remembers the highest id applied and the outcome of
     the 256 ids below it: an id not above that is not applied again but
     answered again (ack, or the error code "refused" for one refused; an id
     more than 256 below is acked). A session is remembered while it has a
     connection, then for session_ttl_ms (forgotten at the first handshake
     after that), or less when max_sessions are in use: then the longest
     idle goes first. A message resent after its session was forgotten (or
     to another process) is applied again: at least once, never silently
     lost.
     Without a session parameter ids are answered but not deduplicated.
   Presence (desc.presence nonzero): who is in each channel. A member is a
     user (an authenticated peer; anonymous peers are never members) with
     at least one connection subscribed to the channel; info is the JSON
     value wsch_hub_set_presence_info() gave the connection that made the
     user join. Changes are per user: a user's first connection joins, its
     last leaves; a second tab changes nothing others see. They are sent
     once per loop turn: the caller calls wsch_hub_flush() when a turn of
     its loop ends, and each presence subscriber gets one message per
     changed channel (a join and a leave in one turn cancel out).
       {"type":"subscribe","payload":{"channel":C,"presence":true}}
                        the confirmation then also carries the members as
                        last sent ("connections" at most a turn old), or, over the cap
                        below, only the counts:
                          ...,"presence":[{"user":U,"connections":N[,"info":I]},...]}
                          ...,"presence_stats":{"users":N,"connections":M}}
                        and the subscriber gets, after each turn with changes:
       {"type":"presence_diff","payload":{"channel":C,"joins":[{"user":U[,"info":I]},...],"leaves":[{"user":U},...]}}
                        or, when the whole list is shorter than the diff
                        (or the channel came back under the cap), the
                        whole list, which replaces what the subscriber had:
       {"type":"presence","payload":{"channel":C,"members":[...]}}
                        or, over the cap, the counts, at most once per
                        presence_stats_interval_ms:
       {"type":"presence_stats","payload":{"channel":C,"users":N,"connections":M,"listed":false}}
       {"type":"presence","payload":{"channel":C}}        answered with the
                        "presence" message above (or "presence_stats" over the cap)
       {"type":"presence_stats","payload":{"channel":C}}  answered with the counts
     "listed" (an addition to the counts' wire format) says whether
     presence subscribers are sent the member list (false: over the cap,
     counts only), so a client can tell an answer to its own request from
     the switch to counts.
     Over the cap means more than presence_max_members users, or a member
     list longer than max_message_size. Only a peer allowed to subscribe
     to C (authorize_subscribe) may ask; the others get "forbidden". A
     confirmation with presence, and each diff, is consistent with the
     messages before it: applying them in order gives the member set as of
     the last flush. Without desc.presence none of this: "presence" and
     "presence_stats" are application messages like any other, and a
     subscribe's "presence" is ignored.
     Several processes (a bridge): each hub says which users it has in a
     channel on that channel's bridge channel (see "presence across
     processes" in the implementation for the messages), so a user on one
     process is a member on every process listening to the channel, and
     per-user events stay per user across processes. Each hub says its
     users again every presence_ttl_ms / 3 and forgets another's not said
     for presence_ttl_ms: a process that dies without a word (kill -9)
     drops out of the others' presence within 4/3 of presence_ttl_ms (40 s
     by default); a restarted process is a new origin and leaves no ghosts.
     A hub that starts listening to a channel, or whose link came back
     (wsch_hub_bridge_resubscribe), asks the others to say theirs at once;
     a leave lost while a link was down takes effect within the same bound.
     wsch_hub_flush() must then run at least as often as it asks (its
     return value), to say and to forget in time. "connections" counts
     every process's connections, as last said.
   Close codes the hub sends: 4001 "Unauthorized" (authenticate refused),
   WSCH_HUB_CLOSE_SLOW_CONSUMER 4008 "Slow consumer", 1000 "Idle timeout",
   1001 "Server shutting down", 1011 "Out of memory"; the connection's own
   protocol codes (1002, 1007, 1009) for broken frames. A slow consumer's
   backlog is discarded when it is dropped (all but a frame already begun):
   its 4008 leaves next instead of behind what it could not read.

   Authentication: the token is taken from the request by
   wsch_request_token(): an "Authorization: Bearer" header, a
   Sec-WebSocket-Protocol entry "bearer.<token>" (the one header a browser
   lets a page set), or the "token" query parameter. The authenticate hook
   maps it to a user id. A browser fails a handshake whose response selects
   none of the protocols it offered, so when the token came in a protocol
   entry and the subprotocol below was not offered, the hub selects the
   bearer entry itself.

   Several hub processes as one (the bridge): a hub given desc.bridge tells
   it which bridge channels it needs and hands it every broadcast and
   send_to_user, encoded once; the caller carries them to the other hubs
   (examples/redis_bridge.h does it over Redis pub/sub) and hands what
   arrives to wsch_hub_bridge_deliver(). See wsch_hub_bridge below.
   ======================================================================== */

typedef struct wsch_hub wsch_hub;

/* A peer of a hub: slot index and generation. A handle stays safe to pass
   after its peer is gone: every call then returns WSCH_ERR_STALE (or NULL
   / 0). The zeroed handle is never valid. */
typedef struct wsch_hub_peer {
    uint32_t index;
    uint32_t gen;
} wsch_hub_peer;

/* The timer id the hub arms for a peer's idle timeout, beside the
   connection's WSCH_TIMER_HANDSHAKE and WSCH_TIMER_CLOSE. */
enum { WSCH_HUB_TIMER_IDLE = 16 };

/* Application close code for a dropped slow consumer (may reconnect). */
#define WSCH_HUB_CLOSE_SLOW_CONSUMER 4008

/* Defaults for zero fields of wsch_hub_desc. */
#define WSCH_HUB_DEFAULT_PATH                 "/ws"
#define WSCH_HUB_DEFAULT_MAX_PEERS          65536u
#define WSCH_HUB_DEFAULT_MAX_CHANNELS_PER_PEER 64u
#define WSCH_HUB_DEFAULT_MAX_CHANNEL_LEN      128u  /* at most WSCH_HUB_MAX_CHANNEL_LEN */
#define WSCH_HUB_DEFAULT_MAX_USER_ID_LEN      128u
#define WSCH_HUB_DEFAULT_MAX_TOKEN_LEN        4096u
#define WSCH_HUB_DEFAULT_MAX_MESSAGE_SIZE     (64u * 1024u)
#define WSCH_HUB_DEFAULT_MAX_OUTBOUND_BYTES   (1024u * 1024u)
#define WSCH_HUB_DEFAULT_IDLE_TIMEOUT_MS      90000u  /* three wsch_client heartbeats */
#define WSCH_HUB_MAX_CHANNEL_LEN              255u    /* hard ceiling of max_channel_len */
#define WSCH_HUB_DEFAULT_HISTORY_TTL_MS       300000u /* 5 minutes */
#define WSCH_HUB_DEFAULT_HISTORY_MAX_BYTES    (64u * 1024u * 1024u)
#define WSCH_HUB_DEFAULT_SESSION_TTL_MS       300000u
#define WSCH_HUB_EPOCH_LEN                    16u     /* hex digits */
#define WSCH_HUB_NO_TIMEOUT                   0xFFFFFFFFu /* idle_timeout_ms: never */
#define WSCH_HUB_DEFAULT_PRESENCE_MAX_MEMBERS 1000u
#define WSCH_HUB_DEFAULT_PRESENCE_STATS_MS    1000u
#define WSCH_HUB_DEFAULT_MAX_PRESENCE_INFO_LEN 256u
#define WSCH_HUB_DEFAULT_PRESENCE_TTL_MS      30000u

/* Why the hub dropped a peer: the index into wsch_hub_counters.drops. */
typedef enum wsch_hub_drop {
    WSCH_HUB_DROP_HANDSHAKE = 0,    /* bad upgrade request, wrong path, or handshake timeout */
    WSCH_HUB_DROP_FULL,             /* max_peers reached: wsch_hub_accept refused it */
    WSCH_HUB_DROP_ORIGIN,           /* check_origin refused: HTTP 403 */
    WSCH_HUB_DROP_UNAUTHORIZED,     /* authenticate refused: 4001, or HTTP 401 */
    WSCH_HUB_DROP_PROTOCOL,         /* a broken frame or message, too big, binary: 1002/1003/1007/1009 */
    WSCH_HUB_DROP_SLOW_CONSUMER,    /* output past max_outbound_bytes or the budget: 4008 */
    WSCH_HUB_DROP_IDLE,             /* nothing received for idle_timeout_ms: 1000 */
    WSCH_HUB_DROP_NOMEM,            /* a message to it could not be queued: 1011 */
    WSCH_HUB_DROP_COUNT
} wsch_hub_drop;

/* Counters a caller can export. Gauges are current values; the rest count
   since wsch_hub_create(). */
typedef struct wsch_hub_counters {
    uint64_t peers;           /* gauge: handed to the hub and not yet released */
    uint64_t open;              /* gauge: peers past the handshake, still open */
    uint64_t users;             /* gauge: distinct user ids among peers */
    uint64_t channels;          /* gauge: channels with a subscriber, or history */
    uint64_t subscriptions;     /* gauge: (peer, channel) pairs */
    uint64_t bytes_queued;      /* gauge: outbound bytes waiting in all peers' queues */
    uint64_t accepted;          /* connections handed to wsch_hub_accept and taken */
    uint64_t messages_in;       /* complete messages received from peers */
    uint64_t messages_out;      /* messages queued to peers, one per recipient */
    uint64_t encodes;           /* frames encoded for broadcast/send_to_user/send */
    uint64_t http_responses;    /* plain HTTP answers (on_http, 404) */
    uint64_t drops[WSCH_HUB_DROP_COUNT];
    /* With a bridge (all 0 without one): */
    uint64_t bridge_channels;   /* gauge: bridge channels the hub listens to (channels and users) */
    uint64_t bridge_published;  /* messages bridge.publish accepted */
    uint64_t bridge_publish_errors; /* messages bridge.publish refused, or not built for lack of memory */
    uint64_t bridge_received;   /* messages from other hubs delivered here (to zero or more peers) */
    uint64_t bridge_own;        /* this hub's own messages coming back, skipped */
    uint64_t bridge_refused;    /* malformed bridge input (header, channel, envelope, size): refused */
    /* With shared positions (bridge.append and fetch): */
    uint64_t bridge_appended;   /* channel messages the bridge numbered (appended: WSCH_OK) */
    uint64_t bridge_append_errors; /* refused by append, or answered with a failure */
    uint64_t bridge_fetches;    /* fetches asked */
    uint64_t bridge_fetch_errors; /* fetches refused, failed or answered malformed */
    uint64_t bridge_gaps;       /* channel messages that arrived after a gap (a fetch filled it) */
    /* History and reliable messages: */
    uint64_t history_messages;  /* gauge: messages kept */
    uint64_t history_bytes;     /* gauge: what they cost, as counted against history_max_bytes */
    uint64_t replayed;          /* messages sent by a replay (recover or history) */
    uint64_t recovered;         /* recover requests answered "recovered":true */
    uint64_t not_recovered;     /* ... answered "recovered":false */
    uint64_t sessions;          /* gauge: sessions remembered */
    uint64_t acks;              /* reliable messages acknowledged (duplicates included) */
    uint64_t duplicates;        /* reliable messages already applied: answered, not applied */
    /* Presence: */
    uint64_t presence_members;  /* gauge: (channel, user) members */
    uint64_t presence_messages; /* presence messages encoded by wsch_hub_flush (one per changed channel) */
    uint64_t presence_sent;     /* ... queued to peers, one per recipient */
    uint64_t presence_remote;   /* gauge: (channel, user) members on other hubs, as they said */
    uint64_t presence_in;       /* presence messages from other hubs taken */
    uint64_t presence_expired;  /* other hubs' members forgotten, not said again within presence_ttl_ms */
    /* Gathering (desc.gather): */
    uint64_t flushed_peers;     /* peers written by wsch_hub_flush(): one per peer per turn with output */
} wsch_hub_counters;

/* A channel's stream position (wsch_hub_channel_position()). */
typedef struct wsch_hub_position {
    uint64_t offset;                        /* of the last message; 0 before any */
    char epoch[WSCH_HUB_EPOCH_LEN + 1];     /* NUL-terminated */
    uint64_t first_kept;                    /* offset of the oldest message kept; 0 when none */
    size_t kept;                            /* messages kept */
} wsch_hub_position;


/* The bridge: how a hub reaches the hubs in other processes (or threads,
   or machines) through a pub/sub system the caller provides.

   Bridge channels. A channel C is bridged under its own name, C; a user U
   under WSCH_HUB_BRIDGE_USER_PREFIX followed by U's id ("#user:alice").
   '#' is outside the characters a channel name may use, so no peer can
   subscribe to, or publish into, another user's bridge channel.

   Interest. subscribe(name) runs when a channel gains its first local
   subscriber or a user its first local connection (from the upgrade
   request on); unsubscribe(name) when the last one leaves. After the
   bridge has lost and regained its link, wsch_hub_bridge_resubscribe()
   replays subscribe for everything needed now.

   Publishing. broadcast and send_to_user queue to local peers as always
   and also hand the message to publish(name, data). data is a bridge
   message: the 23-byte header "wsch1 " + the hub's origin id as 16
   lowercase hex digits + " ", then the envelope exactly as peers
   receive it. The bridge carries the bytes as they are.

   Delivery, exactly once, no loops. A message from the bridge goes through
   wsch_hub_bridge_deliver() to local peers only, never back to the
   bridge. Pub/sub systems (Redis among them) also send a publisher its own
   messages when it listens to the channel; the hub has already delivered
   those locally, so a message carrying the hub's own origin id is skipped
   (stats.bridge_own). The origin id is 64 random bits from the desc's
   random_bytes, drawn at wsch_hub_create(), which is why a bridge needs
   random_bytes.

   A bridge with publish alone does not store messages. Whatever it cannot
   carry (its link is down, say) reaches local peers only. With positions,
   each process numbers what it delivers itself (its own epochs), so a
   client that reconnects to another process recovers nothing ("recovered":
   false), and wsch_hub_bridge_resubscribe() starts a new epoch on every
   channel: what went by while the link was down may be missing, so no
   recovery may span it.

   Shared positions: a bridge that also sets append and fetch numbers and
   keeps channel messages itself, for every hub (used when history_size >
   0; without history they are ignored). Then a client recovers on any
   process of the bridge, and nothing is delivered under a number the
   other processes do not share:
     - append(name, data, ticket) replaces publish for channel messages.
       data is the header, then the envelope with its channel but no
       offset or epoch: {"type":T,"payload":P,"channel":C}. The bridge
       must, atomically and in one order for all hubs: take the channel's
       next offset N (1 for a new channel) and its epoch E (16 lowercase
       hex digits, drawn anew whenever the channel's history is lost),
       write ,"offset":N,"epoch":"E" before data's last byte (the closing
       brace), keep that message (the last history_size at least), publish
       it to every hub that listens to name, this one included, and then
       call wsch_hub_bridge_appended(ticket, status) once, WSCH_OK when it
       is done, anything else when it did not happen (or may not have).
       append returns WSCH_OK when it took the message and will answer;
       anything else refuses it, and wsch_hub_broadcast() fails with
       WSCH_ERR_STATE: while the bridge cannot number, nothing is sent.
     - Local delivery happens when the message comes back through
       wsch_hub_bridge_deliver(), in the bridge's order, for the
       publishing hub as for the others (no own-origin skip). A hub seeing
       an offset it already has skips it; one seeing a gap (its link lost
       some) holds its live subscribers until a fetch has filled it.
     - fetch(name, count) asks for the channel's last count kept messages,
       its epoch and its last offset; the answer comes through
       wsch_hub_bridge_fetched(). The hub fetches when a channel's first
       subscriber arrives (its position is unknown until then: the
       subscribe waits), when a recover asks for more than it keeps, on a
       gap, and after wsch_hub_bridge_resubscribe(). The bridge must read
       only once the subscription to name it was given before is in
       effect, so that every message is in the answer or arrives after.
       The answer may reach the hub after messages published since it
       was read (it travels apart from them); one that is then older than
       the epoch those messages began is not merged but asked again.
     - Reliable client messages whose on_message broadcast went to append
       are acknowledged when appended reports WSCH_OK, and answered with
       the error code "unconfirmed" when it reports a failure (it may have
       been published all the same: the application decides whether to
       send it again); "unavailable" when append refused it (it was not).
   Neither callback may call into the hub; answers come later, from the
   caller's loop. A resend of a reliable message whose append has not
   been answered yet is not applied again: the answer goes to the
   connection that sent it last. Sessions (reliable message ids) stay per
   process: a resend that reaches another process after its ack was lost
   is applied again there.

   Presence (desc.presence) travels on a channel's bridge channel through
   publish too, as messages whose header starts "wschp " instead of
   "wsch1 ": the bridge carries them like any other.

   Give every hub on one bridge the same limits (max_message_size,
   max_channel_len, max_user_id_len): what one hub sends and another's
   limits refuse is counted there in stats.bridge_refused, not delivered.

   The callbacks run inside hub calls and must not call back into the hub.
   Names are NUL-terminated and len bytes long (a user id may contain any
   byte, so trust len); names and data are borrowed until return. Set all
   three callbacks or none. wsch_hub_destroy() calls none of them: the
   bridge drops its own link. */
#define WSCH_HUB_BRIDGE_USER_PREFIX "#user:"
#define WSCH_HUB_BRIDGE_HEADER_LEN 23u

typedef struct wsch_hub_bridge {
    void (*subscribe)(const char *name, size_t len, void *user);
    void (*unsubscribe)(const char *name, size_t len, void *user);
    /* Returns WSCH_OK when it took the message (counted in
       stats.bridge_published), anything else when it could not
       (stats.bridge_publish_errors); either way local delivery happens. */
    int (*publish)(const char *name, size_t len, const void *data, size_t data_len, void *user);
    /* Shared positions (above): both or neither. */
    int (*append)(const char *name, size_t len, const void *data, size_t data_len, uint64_t ticket, void *user);
    int (*fetch)(const char *name, size_t len, size_t count, void *user);
    void *user;
} wsch_hub_bridge;

/* What the request hooks see. Everything is valid only during the callback. */
typedef struct wsch_hub_request {
    const wsch_request *http;       /* the parsed request head */
    wsch_hub_peer peer;
    void *peer_user;              /* the pointer given to wsch_hub_accept() */
    wsch_str token;                 /* bearer token, decoded; empty when none (or too long).
                                       Extracted for on_http requests too. */
    wsch_token_source token_source;
} wsch_hub_request;

/* An answer to a plain HTTP request on another path (see on_http). */
typedef struct wsch_hub_http_response {
    int status;                     /* starts at 404 */
    const char *content_type;       /* NULL: "text/plain; charset=utf-8" */
    const void *body;               /* NULL: a one-line text for the status */
    size_t body_len;
    const char *extra_headers;      /* complete "Name: value\r\n" lines, or NULL */
} wsch_hub_http_response;

/* Everything a hub needs. Zero means the documented default. The desc and
   its strings are copied: it need not outlive wsch_hub_create(). Hooks are
   optional; `user` goes to every hook. */
typedef struct wsch_hub_desc {
    const char *path;                   /* the WebSocket endpoint, "/ws" */
    const char *subprotocol;            /* selected when a peer offers it; NULL = none */
    int reject_with_http;               /* nonzero: a refused token gets HTTP 401 before the
                                           upgrade (with "WWW-Authenticate: Bearer") instead of
                                           101 followed by close 4001 "Unauthorized" */
    size_t max_peers;                 /* peers at once, handshaking ones included */
    size_t max_channels_per_peer;     /* up to 65535 */
    size_t max_channel_len;             /* bytes, 1..WSCH_HUB_MAX_CHANNEL_LEN */
    size_t max_user_id_len;             /* bytes of the id authenticate returns, up to 65535 */
    size_t max_token_len;               /* longer tokens are treated as absent */
    uint32_t idle_timeout_ms;           /* no inbound bytes for this long: closed.
                                           WSCH_HUB_NO_TIMEOUT disables it */
    uint32_t ping_interval_ms;          /* 0 = never: a peer silent this long gets a
                                           protocol ping (needs effects.now_ms). Browsers
                                           answer pings themselves, so a client alive but
                                           quiet (a background tab) stays, and the idle
                                           timeout can be shorter than the clients'
                                           heartbeat: a half-open peer goes sooner */
    /* Per peer. The hub's defaults differ from a bare connection's:
       max_message_size 64 KiB (also the largest envelope the hub encodes),
       max_frame_size = max_message_size, max_outbound_bytes 1 MiB (past it
       a peer is dropped as a slow consumer); the rest as wsch_limits. */
    wsch_limits limits;
    /* permessage-deflate (codec NULL = off). The hub always answers with
       server_no_context_takeover and client_no_context_takeover, whatever
       is set here: a broadcast is then compressed once (with
       server_max_window_bits, default 15) and the same bytes go to every
       peer that agreed, and an idle peer holds no compression state.
       Envelopes shorter than min_size go uncompressed. */
    wsch_deflate_desc deflate;
    /* History (see "History and recovery" above). history_size 0 = off
       (positions then only with `positions`); with it, effects.now_ms and
       random_bytes are required (ages; epochs that a restarted process does
       not repeat). A retained message costs its frame (the envelope with its
       position) plus 120 bytes of bookkeeping on 64-bit machines, counted
       against history_max_bytes; channels without subscribers live on while
       they hold history. Limits are applied when messages are published and
       subscribers arrive: an idle hub keeps what it held. */
    uint32_t history_size;              /* messages per channel */
    int positions;                      /* nonzero: positions even with history_size 0, so a
                                           reconnecting subscriber is told it missed messages
                                           (needs effects.random_bytes) */
    uint32_t history_ttl_ms;            /* 300000 */
    size_t history_max_bytes;           /* 64 MiB, all channels together */
    /* Reliable messages: how long a session without connections is
       remembered, and how many sessions at most (connected ones included;
       past it a new session's upgrade is refused with 503). */
    uint32_t session_ttl_ms;            /* 300000 */
    size_t max_sessions;                /* max_peers */
    /* Presence (see "Presence" above): on when nonzero. Over
       presence_max_members users a channel's presence goes as counts, at
       most every presence_stats_interval_ms (needs effects.now_ms, else
       every flush). Info is at most max_presence_info_len bytes of JSON. */
    int presence;
    size_t presence_max_members;        /* 1000 */
    uint32_t presence_stats_interval_ms;/* 1000 */
    size_t max_presence_info_len;       /* 256 */
    /* With a bridge: another hub's user not said again for this long is
       forgotten (each hub says its users every presence_ttl_ms / 3), so a
       process that dies without a word drops out of the others' presence
       within 4/3 of it. Needs effects.now_ms. */
    uint32_t presence_ttl_ms;           /* 30000 */
    wsch_allocator allocator;
    /* Each peer's transport: send and close required, timers optional
       (without them, no timeouts); they get the peer's user pointer (the
       one given to wsch_hub_accept(), which may also pass other effects for
       one peer). The hub's own: now_ms, optional (with it the idle timer is
       armed once and re-armed lazily; without it every read re-arms it);
       random_bytes, optional but required with a bridge (the origin id),
       seeds the tables' keyed hash so no peer can choose colliding channel
       names (without it the seed is fixed); they get desc.user. A peer's
       send_gather, when set, writes its queued pieces at once (see
       `gather`); its flush_later is not used. */
    wsch_effects effects;
    /* Nonzero: nothing a peer is sent is written while the caller's turn
       runs; wsch_hub_flush() at the end of the turn writes each peer's
       share in one call (send_gather's pieces, broadcast frames by
       reference, or copied into one buffer for send). A turn of many
       broadcasts then costs each peer one write, not one per message, and
       adds no latency past the turn. The caller must then call
       wsch_hub_flush() after every batch of events, timers included (the
       POSIX loop does). Held output counts against each peer's
       max_outbound_bytes and the budget; before a peer would be refused
       for it, what it holds is written first, and with the budget spent
       a send is written at once, as without gathering. */
    int gather;

    wsch_hub_bridge bridge;             /* all NULL: a hub on its own */

    /* Hooks. Data pointers are valid only during the callback. */
    /* Nonzero allows the request; zero refuses it with HTTP 403. Runs before
       authenticate. Default: every origin. */
    int (*check_origin)(wsch_hub *hub, const wsch_hub_request *req, void *user);
    /* WSCH_OK accepts, with *user_id set to the peer's user id (1 to
       max_user_id_len bytes, borrowed until return, copied; leave it empty
       for an anonymous peer no send_to_user reaches); anything else
       refuses. Default (NULL): every peer is accepted anonymously. */
    int (*authenticate)(wsch_hub *hub, const wsch_hub_request *req, wsch_str *user_id, void *user);
    /* Nonzero lets the peer join channel. Default: every valid channel. */
    int (*authorize_subscribe)(wsch_hub *hub, wsch_hub_peer peer, wsch_str user_id, wsch_str channel,
                               void *user);
    /* A request for another path than desc.path (a browser asking for "/",
       say): fill res, which starts as a 404. Without it every other path gets
       a 404. The connection closes after the answer. */
    void (*on_http)(wsch_hub *hub, const wsch_hub_request *req, wsch_hub_http_response *res, void *user);
    /* The peer is open (after authenticate accepted it). */
    void (*on_connect)(wsch_hub *hub, wsch_hub_peer peer, wsch_str user_id, void *user);
    /* A peer that had on_connect is closed: code as in wsch_conn_desc's
       on_close. The handle is still valid during the call; it goes stale
       when the peer's close() runs, right after. */
    void (*on_disconnect)(wsch_hub *hub, wsch_hub_peer peer, int code, void *user);
    /* An envelope of any type but ping, subscribe and unsubscribe. For a
       reliable one (with an "id"), the ack goes out when this returns,
       unless wsch_hub_refuse() answered it. */
    void (*on_message)(wsch_hub *hub, wsch_hub_peer peer, const wsch_envelope *env, void *user);
    /* A user joined (joined 1) or left (0) a channel's presence: at once,
       per user, inside the change that made it (a peer's subscribe,
       unsubscribe or end; another hub's word in wsch_hub_bridge_deliver(),
       or its silence noticed in wsch_hub_flush(); the channel going away
       here, which takes the other hubs' members with it). The getters
       already show it. It may call the getters only. */
    void (*on_presence)(wsch_hub *hub, wsch_str channel, wsch_str user_id, int joined, void *user);
    void *user;
} wsch_hub_desc;

/* The desc with every default filled in (desc may be NULL). */
WSCH_API wsch_hub_desc wsch_hub_desc_defaults(const wsch_hub_desc *desc);

/* Returns WSCH_OK, WSCH_ERR_ARG (path not starting with '/', max_channel_len
   above WSCH_HUB_MAX_CHANNEL_LEN, max_channels_per_peer or max_user_id_len
   above 65535, a bridge with a callback missing or without random_bytes) or
   WSCH_ERR_NOMEM. */
WSCH_API int wsch_hub_create(const wsch_hub_desc *desc, wsch_hub **out);
/* Frees the hub, every peer and its queued output. The only callback that
   runs is close(), once for each peer whose transport was still the
   library's (no events, no timer_cancel: the caller's timers go with the
   hub). Not from inside a hub callback. */
WSCH_API void wsch_hub_destroy(wsch_hub *hub);

/* Hands an accepted transport to the hub. effects NULL means desc.effects;
   otherwise they are borrowed until the peer's close() (only send, close
   and the timers are used). user goes to the peer's effects. Returns WSCH_OK
   with *out set, or WSCH_ERR_ARG (no send or close), WSCH_ERR_LIMIT
   (max_peers), WSCH_ERR_STATE (shutting down) or WSCH_ERR_NOMEM: then the
   transport is still the caller's (no close() comes for it). */
WSCH_API int wsch_hub_accept(wsch_hub *hub, const wsch_effects *effects, void *user, wsch_hub_peer *out);

/* Transport events for one peer. feed's bytes are modified in place.
   feed returns WSCH_OK or the error that failed the connection (see
   wsch_conn_feed); the others return WSCH_OK or WSCH_ERR_STALE. */
WSCH_API int wsch_hub_feed(wsch_hub *hub, wsch_hub_peer peer, void *data, size_t len);
WSCH_API int wsch_hub_writable(wsch_hub *hub, wsch_hub_peer peer);
WSCH_API int wsch_hub_timer_fired(wsch_hub *hub, wsch_hub_peer peer, unsigned timer_id);
/* The caller saw the transport end first (EOF, a read error): the peer ends
   as a lost connection (on_disconnect with WSCH_CLOSE_ABNORMAL if it was
   open), then close() runs as on every path and the handle goes stale.
   From inside that peer's close() it does nothing. WSCH_OK or
   WSCH_ERR_STALE. */
WSCH_API int wsch_hub_transport_closed(wsch_hub *hub, wsch_hub_peer peer);
/* What the peer's transport should wait for now (WSCH_WANT_READ/_WRITE);
   0 once its close() has run (or the handle is stale). */
WSCH_API unsigned wsch_hub_peer_want(const wsch_hub *hub, wsch_hub_peer peer);

/* Queues {"type":type,"payload":payload} to every open subscriber of
   channel. payload is raw JSON text of payload_len bytes (WSCH_CSTR:
   NUL-terminated), checked to be one value (NULL with len 0: no payload
   member). The frame is encoded once and queued by reference;
   subscribers past their outbound limit are dropped (4008) and the rest are
   served. *delivered (may be NULL) gets the number of peers it was queued
   to. Everything is borrowed until return. Returns WSCH_OK (also when nobody
   is subscribed), WSCH_ERR_ARG (bad channel name or type), WSCH_ERR_TOO_LARGE
   (the envelope exceeds max_message_size or the type WSCH_ENVELOPE_TYPE_MAX),
   WSCH_ERR_JSON / WSCH_ERR_JSON_DEPTH / WSCH_ERR_UTF8 (payload), or
   WSCH_ERR_NOMEM (nobody got it). With a bridge, the message is also
   published on the channel's bridge channel; *delivered counts local
   peers only. Under shared positions (bridge.append, history on) it goes
   to append alone: *delivered is 0, local peers get it when the bridge
   brings it back numbered, and WSCH_ERR_STATE means append refused it
   (nobody got it; a reliable message being answered gets "unavailable"),
   WSCH_ERR_LIMIT that too many reliable messages wait for append's
   answers. */
WSCH_API int wsch_hub_broadcast(wsch_hub *hub, const char *channel, const char *type, const char *payload,
                                size_t payload_len, size_t *delivered);
/* The same, to every open connection of user_id (through the user index);
   with a bridge, also published on the user's bridge channel (unless
   user_id is empty or longer than max_user_id_len: no hub has such a user). */
WSCH_API int wsch_hub_send_to_user(wsch_hub *hub, const char *user_id, const char *type, const char *payload,
                                   size_t payload_len, size_t *delivered);
/* The same, to one peer: WSCH_ERR_STALE when it is gone, WSCH_ERR_STATE
   when it is not open (or this send ended it: a slow consumer dropped, a
   transport that send() reported broken). */
WSCH_API int wsch_hub_send(wsch_hub *hub, wsch_hub_peer peer, const char *type, const char *payload,
                           size_t payload_len);

/* Server-side subscription management, as if the peer had asked, but
   without authorize_subscribe and without an acknowledgement. Returns
   WSCH_OK (also when already subscribed / not subscribed), WSCH_ERR_STALE,
   WSCH_ERR_STATE (not open), WSCH_ERR_ARG (bad channel name), WSCH_ERR_LIMIT
   (max_channels_per_peer) or WSCH_ERR_NOMEM. */
WSCH_API int wsch_hub_subscribe(wsch_hub *hub, wsch_hub_peer peer, const char *channel);
WSCH_API int wsch_hub_unsubscribe(wsch_hub *hub, wsch_hub_peer peer, const char *channel);
/* 1 when peer is subscribed to channel, else 0. */
WSCH_API int wsch_hub_is_subscribed(const wsch_hub *hub, wsch_hub_peer peer, const char *channel);
/* Subscribers of channel (0 when it does not exist). */
WSCH_API size_t wsch_hub_channel_size(const wsch_hub *hub, const char *channel);
/* Open connections of user_id. */
WSCH_API size_t wsch_hub_user_connections(const wsch_hub *hub, const char *user_id);

/* Answers the message on_message is handling for peer with
   {"type":"error","payload":{"code":code,"message":message,"request":T[,"id":I]}}
   (code and message NUL-terminated UTF-8): a reliable message then gets
   this instead of its ack, and a resend of it gets "refused"; a message
   already refused is not answered twice. Outside on_message (or for
   another peer) it is an error without request and id.
   WSCH_OK, WSCH_ERR_STALE, WSCH_ERR_ARG (NULL or invalid strings, or
   longer than 255 bytes) or WSCH_ERR_STATE (not open). */
WSCH_API int wsch_hub_refuse(wsch_hub *hub, wsch_hub_peer peer, const char *code, const char *message);

/* The stream position of channel: WSCH_OK, WSCH_ERR_NOT_FOUND (no such
   channel here: no subscribers and no history) or WSCH_ERR_STATE (no
   positions: history off and desc.positions 0). */
WSCH_API int wsch_hub_channel_position(const wsch_hub *hub, const char *channel, wsch_hub_position *out);

/* The end of a turn of the caller's loop. With desc.gather, writes what
   every peer was sent in the turn (each peer in one call). Presence
   (desc.presence): sends each changed channel's presence to its presence
   subscribers (one message each), and returns how many milliseconds may pass before it wants to be
   called again with nothing else happening (counts held back by
   presence_stats_interval_ms), 0 when nothing waits. Cheap when nothing
   changed; call it after every batch of events. Not from inside a hub
   callback. */
WSCH_API uint32_t wsch_hub_flush(wsch_hub *hub);
/* The peer's presence info: one JSON value of 1..max_presence_info_len
   bytes (copied; NULL or len 0 clears it), shown to others in the
   channels the peer's user joins after this call. A user's info in a
   channel is that of the connection that made it join there, and stays
   while the user does (its other connections' info is not shown). Meant
   for authenticate or on_connect. WSCH_OK, WSCH_ERR_STALE, WSCH_ERR_STATE (presence off),
   WSCH_ERR_TOO_LARGE, WSCH_ERR_JSON or WSCH_ERR_NOMEM. */
WSCH_API int wsch_hub_set_presence_info(wsch_hub *hub, wsch_hub_peer peer, const char *json, size_t len);
/* Members of channel now: users with a connection subscribed, and those
   connections. WSCH_OK (zeros for an unknown channel) or WSCH_ERR_STATE
   (presence off). */
WSCH_API int wsch_hub_presence_counts(const wsch_hub *hub, const char *channel, size_t *users,
                                      size_t *connections);
/* Calls fn for each member of channel now (in no particular order) until
   it returns nonzero; info is empty when none was given. Nothing may
   change the hub during the walk. Returns the number of calls. */
typedef int (*wsch_hub_member_fn)(wsch_str user_id, size_t connections, wsch_str info, void *ctx);
WSCH_API size_t wsch_hub_presence_each(const wsch_hub *hub, const char *channel, wsch_hub_member_fn fn, void *ctx);

/* Starts the closing handshake with code and reason (reason_len bytes, or
   WSCH_CSTR; borrowed until return); the peer gets no further broadcasts.
   WSCH_OK, WSCH_ERR_STALE or the connection's error (see wsch_conn_close). */
WSCH_API int wsch_hub_peer_close(wsch_hub *hub, wsch_hub_peer peer, uint16_t code, const char *reason,
                                 size_t reason_len);

/* 1 while the handle refers to a peer, 0 once it is stale. */
WSCH_API int wsch_hub_peer_valid(const wsch_hub *hub, wsch_hub_peer peer);
/* The peer's user id (empty when anonymous or not yet authenticated),
   valid until the peer's close(). WSCH_OK, or WSCH_ERR_STALE with *user_id
   empty. */
WSCH_API int wsch_hub_peer_user_id(const wsch_hub *hub, wsch_hub_peer peer, wsch_str *user_id);
/* The user pointer given to wsch_hub_accept(), or NULL when stale. */
WSCH_API void *wsch_hub_peer_user(const wsch_hub *hub, wsch_hub_peer peer);
/* The connection's state, WSCH_STATE_CLOSED when stale. */
WSCH_API wsch_state wsch_hub_peer_state(const wsch_hub *hub, wsch_hub_peer peer);
/* Outbound bytes queued for the peer (0 when stale). */
WSCH_API size_t wsch_hub_peer_queued_bytes(const wsch_hub *hub, wsch_hub_peer peer);

/* Graceful shutdown: open peers get 1001 "Server shutting down", peers
   still in the handshake get their transport closed, and accept refuses new
   ones. Keep running the loop until stats.peers is 0 (close_timeout_ms
   bounds it), then wsch_hub_destroy(). */
WSCH_API void wsch_hub_shutdown(wsch_hub *hub);

/* A message from the bridge: data (data_len bytes) arrived on bridge
   channel name (name_len bytes). It is untrusted input and checked like a
   peer's message: the name must be a valid channel name or the user
   prefix and a user id of 1..max_user_id_len bytes; data must be a bridge
   message (header as above) whose envelope is at most max_message_size
   bytes and valid (wsch_envelope_decode); the envelope is re-encoded, so
   peers get exactly what a local broadcast would send. It is queued to
   local subscribers (or the user's local connections) only, never
   published again; *delivered (may be NULL) gets how many. Everything is
   borrowed until return. Under shared positions a channel message must
   carry its offset and epoch (else WSCH_ERR_ARG), is delivered whatever
   its origin, and is held back or skipped as described there. Returns
   WSCH_OK (also for this hub's own message, skipped, and when nobody here
   wants it); WSCH_ERR_ARG (no hub or NULL
   with a length; a bad name or header), WSCH_ERR_TOO_LARGE, WSCH_ERR_JSON,
   WSCH_ERR_JSON_DEPTH, WSCH_ERR_UTF8, WSCH_ERR_NO_TYPE (envelope), each
   counted in stats.bridge_refused; WSCH_ERR_STATE without a bridge;
   WSCH_ERR_NOMEM. */
WSCH_API int wsch_hub_bridge_deliver(wsch_hub *hub, const char *name, size_t name_len, const void *data,
                                     size_t data_len, size_t *delivered);
/* Calls bridge.subscribe once for every bridge channel the hub needs now:
   after the bridge's link came back. Nothing without a bridge. With
   positions, every channel starts a new epoch (its history is dropped):
   messages may have been missed while the link was down. Under shared
   positions the epochs are the bridge's: every channel with live
   subscribers is fetched instead, and they get what they missed. */
WSCH_API void wsch_hub_bridge_resubscribe(wsch_hub *hub);
/* Shared positions: the answer to append's ticket. status WSCH_OK: the
   message was numbered and published; anything else: it was not (or
   may not have been). An unknown ticket is ignored. */
WSCH_API void wsch_hub_bridge_appended(wsch_hub *hub, uint64_t ticket, int status);
/* Shared positions: the answer to fetch(name). status WSCH_OK: epoch (16
   lowercase hex digits, or empty when the channel has never had a
   message or has lost everything) and last_offset (0 then) are the
   channel's position, and messages[0..count) its last kept messages,
   oldest first, each exactly as the bridge published it (header and
   positioned envelope), offsets consecutive and ending at last_offset.
   Anything else: the read failed; waiting subscribers are confirmed with
   "recovered":false. Checked like bridge input. Returns WSCH_OK;
   WSCH_ERR_ARG (no hub, NULL with a length, a bad name) or, for a
   malformed answer, the error of what was wrong in it, as
   wsch_hub_bridge_deliver() returns (WSCH_ERR_ARG, WSCH_ERR_TOO_LARGE,
   WSCH_ERR_JSON, WSCH_ERR_UTF8, ...): counted in stats.bridge_refused and
   treated as a failed read; WSCH_ERR_STATE (no shared positions);
   WSCH_ERR_NOMEM. */
WSCH_API int wsch_hub_bridge_fetched(wsch_hub *hub, const char *name, size_t name_len, int status,
                                     const char *epoch, uint64_t last_offset, const wsch_str *messages,
                                     size_t count);

/* Fills *out. O(peers): bytes_queued is summed on demand. */
WSCH_API void wsch_hub_stats(const wsch_hub *hub, wsch_hub_counters *out);
#endif /* WS_CHANNEL_NO_HUB */

#ifdef __cplusplus
} /* extern "C" */
#endif

// >>posix
#ifdef WS_CHANNEL_POSIX
#ifdef __cplusplus
extern "C" {
#endif
/* ========================================================================
   POSIX loop (opt-in: define WS_CHANNEL_POSIX everywhere). A small event
   loop that supplies every effect the layers above ask for, for a program
   that has no loop of its own. Without the define none of this exists and
   the header is the sans-I/O library, byte for byte.

     backend     epoll (Linux), kqueue (BSD, macOS) or poll() (anything;
                 selectable on Linux too): wsch_posix_loop_desc.backend
     timers      a binary min-heap of deadlines (ties fire in start order);
                 yours too: wsch_posix_timer_start()
     clock       CLOCK_MONOTONIC, milliseconds: wsch_posix_now_ms()
     randomness  getrandom() (Linux), arc4random_buf() (BSD, macOS), else
                 /dev/urandom; the loop keeps a small pool so a client's
                 frame masks do not cost a system call each
     sockets     listen on IPv4 and IPv6, non-blocking accept (out of
                 descriptors, a pending connection is closed unserved instead
                 of spinning), non-blocking connect with a timeout, trying
                 each resolved address in turn
     serving     wsch_posix_serve_conns() (a wsch_conn per accepted socket),
                 wsch_posix_hub_create() + wsch_posix_serve_hub() (a hub,
                 wsch_hub_flush() at the end of every turn, the wait bounded
                 by its answer), wsch_posix_client_create() (a reconnecting
                 client): one call each
     yours       your own descriptors (wsch_posix_watch_add) and timers join
                 the same loop
     signals     wsch_posix_handle_signals(): SIGINT/SIGTERM shut down
                 gracefully (hub peers get 1001, served conns 1001, clients
                 close with 1000), then wsch_posix_loop_run() returns; a
                 second signal returns at once
     TLS         a transport hook (wsch_posix_transport: open, handshake,
                 read, write, shutdown, close) that any TLS library plugs
                 into; plain TCP is the default and takes a direct path
     batching    per turn: readiness interest is updated once per socket
                 (no system call when it did not change), hubs are flushed
                 once, and what a socket is sent after its first write of
                 the turn (a hub peer: all of it) is gathered and written
                 once at the end of it (gather_bytes);
                 wsch_posix_loop_counters() shows the effect

   A turn: wait for readiness (bounded by the next timer and the hubs'
   flush), handle every ready socket (up to READS_PER_EVENT reads each),
   run the timers that are due, write what was gathered, flush the hubs,
   update interest, free what finished.

   Compile: C99 plus POSIX.1-2008; link nothing extra. glibc hides POSIX
   under a strict -std=c99: there define _POSIX_C_SOURCE 200809L (or
   _GNU_SOURCE / _DEFAULT_SOURCE) before the first #include of the
   implementation file. macOS and the BSDs show it by default; a
   _POSIX_C_SOURCE there hides what kqueue needs (leave it out, or add
   _DARWIN_C_SOURCE on macOS). Where the system has neither MSG_NOSIGNAL
   nor SO_NOSIGPIPE, creating a loop ignores SIGPIPE for the process.

   One loop per thread; everything attached to a loop belongs to it and to
   its thread. The loop owns what it creates (served conns, hub peers, the
   hubs and clients made through it) and frees them in
   wsch_posix_loop_destroy(). Every allocation goes through
   wsch_posix_loop_desc.allocator (getaddrinfo's own excepted); every
   table is bounded (max_fds, max_timers, gather_bytes) and grows only as
   used. The one process-wide thing is the signal handler's pipe (signals
   belong to the process): see wsch_posix_handle_signals(). Nothing of the
   loop is re-entrant: call wsch_posix_loop_run/_run_once/_destroy from
   outside its callbacks.

   The user pointers. The layer keeps its own pointer in the places the
   effects read it, and hands yours to your events:
   - a served conn's events get the `user` given to
     wsch_posix_serve_conns(), or what wsch_posix_conn_set_user() set for
     that conn (do not call wsch_conn_set_user() on it);
   - a client's events get its desc.user (wsch_client_user() returns the
     layer's record: use wsch_posix_client_user());
   - a hub is untouched: its hooks get desc.user, as always.

   DNS. getaddrinfo() blocks the loop while it resolves a name (a numeric
   address never blocks). A client whose URL names a host resolves it at
   each connect; give wsch_posix_client_opts.addr (an address you resolved)
   or .resolve (your own resolver, e.g. a cache filled by an asynchronous
   one) to keep the loop from blocking.

   Quick start: an echo server (examples/posix_echo.c is this, complete)
       static void echo(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
           (void)user;
           wsch_conn_send(c, op, data, len);
       }
       wsch_posix_loop *loop;
       wsch_posix_listener *l;
       wsch_posix_listen_desc ld = {0};
       wsch_conn_desc cd = {0};
       ld.port = 9001;
       cd.on_message = echo;
       wsch_posix_loop_create(NULL, &loop);
       wsch_posix_listen(loop, &ld, &l);
       wsch_posix_serve_conns(l, &cd, NULL);
       wsch_posix_handle_signals(loop);
       wsch_posix_loop_run(loop);            // until SIGINT/SIGTERM
       wsch_posix_loop_destroy(loop);
   ======================================================================== */

typedef struct wsch_posix_loop wsch_posix_loop;
typedef struct wsch_posix_listener wsch_posix_listener;
typedef struct wsch_posix_watch wsch_posix_watch;

typedef enum wsch_posix_backend {
    WSCH_POSIX_BACKEND_AUTO = 0,    /* epoll on Linux, kqueue on BSD and macOS, else poll */
    WSCH_POSIX_BACKEND_EPOLL,
    WSCH_POSIX_BACKEND_KQUEUE,
    WSCH_POSIX_BACKEND_POLL
} wsch_posix_backend;

/* Readiness, for your watches (the same values as WSCH_WANT_READ/_WRITE). */
enum {
    WSCH_POSIX_READ   = 1,
    WSCH_POSIX_WRITE  = 2,
    WSCH_POSIX_HANGUP = 4           /* reported only: error or hang-up (read to learn which) */
};

/* A wait without a bound (wsch_posix_loop_run_once). */
#define WSCH_POSIX_FOREVER 0xFFFFFFFFu

/* Defaults for zero fields of wsch_posix_loop_desc. */
#define WSCH_POSIX_DEFAULT_MAX_FDS          65536u
#define WSCH_POSIX_DEFAULT_MAX_TIMERS       (1024u * 1024u)
#define WSCH_POSIX_DEFAULT_READ_BUFFER      (256u * 1024u)
#define WSCH_POSIX_DEFAULT_MAX_EVENTS       256u
#define WSCH_POSIX_DEFAULT_READ_PAUSE_BYTES (4u * 1024u * 1024u)
#define WSCH_POSIX_DEFAULT_SHUTDOWN_MS      5000u
#define WSCH_POSIX_DEFAULT_CONNECT_TIMEOUT_MS 10000u
#define WSCH_POSIX_DEFAULT_BACKLOG          511u
#define WSCH_POSIX_READS_PER_EVENT          8u   /* reads per readiness event before others get a turn */
#define WSCH_POSIX_ADDR_MAX                 128u /* bytes of one socket address (sockaddr_storage) */
#define WSCH_POSIX_MAX_ADDRS                8u   /* resolved addresses a connect tries, in order */
#define WSCH_POSIX_GATHER_BLOCK             16384u /* bytes a socket gathers in a turn, at most */
#define WSCH_POSIX_DEFAULT_GATHER_BYTES     (4u * 1024u * 1024u)

typedef struct wsch_posix_loop_desc {
    wsch_posix_backend backend;     /* AUTO */
    size_t max_fds;                 /* 65536: sockets, listeners and watches at once; an
                                       accept past it is closed unserved */
    size_t max_timers;              /* 1 Mi: timers at once, yours and the loop's (which
                                       keeps room for 6 per connection, 10 per client) */
    size_t read_buffer_size;        /* 256 KiB: one buffer per loop, lent to every read (a
                                       large message then arrives whole, unassembled) */
    size_t max_events;              /* 256: readiness events taken per wait */
    size_t read_pause_bytes;        /* 4 MiB: a served conn with more output unsent is not
                                       read until it drains (backpressure) */
    uint32_t shutdown_timeout_ms;   /* 5000: a graceful shutdown's bound */
    /* Gathered writes: the first send to a served conn or a client's link
       in a turn is written at once (its feed has gathered its replies
       already); later ones in the same turn, and a hub peer's first one
       too, are copied into a block of WSCH_POSIX_GATHER_BLOCK bytes and
       written together at the end of the turn (a hub's burst of broadcasts
       costs each peer one write a turn, not one a message). Nothing waits
       past the end of its turn. gather_bytes bounds the blocks in use;
       without a free one a send is written at once, as with no_gather. A
       transport that asks for a write to be retried (TLS) gets its bytes
       kept in a block even past the bound or with no_gather: one per such
       socket. */
    size_t gather_bytes;            /* 4 MiB */
    int no_gather;                  /* 1: every send is written at once */
    wsch_allocator allocator;
    void (*log)(const char *msg, void *user);   /* optional: short static strings */
    void *user;                     /* for log */
} wsch_posix_loop_desc;

/* desc (may be NULL) with every zero field replaced by its default; AUTO
   resolved to the backend this platform uses. */
WSCH_API wsch_posix_loop_desc wsch_posix_loop_desc_defaults(const wsch_posix_loop_desc *desc);

/* Creates a loop (desc may be NULL: every default). Returns WSCH_OK,
   WSCH_ERR_ARG (a backend this platform lacks), WSCH_ERR_NOMEM, or
   WSCH_ERR_STATE (the system refused the backend or has no randomness). */
WSCH_API int wsch_posix_loop_create(const wsch_posix_loop_desc *desc, wsch_posix_loop **out);
/* Frees the loop and everything it owns: clients and hubs made through it
   are destroyed (their close() effects run, closing every socket), served
   conns are cut, listeners closed, watches dropped (your descriptors stay
   open), signal handlers restored. Not from inside a callback of the loop. */
WSCH_API void wsch_posix_loop_destroy(wsch_posix_loop *loop);

/* Runs turns until wsch_posix_loop_stop(), a graceful shutdown completes
   (or its timeout passes), or nothing is left to wait for (no descriptor,
   no timer). Returns WSCH_OK, or WSCH_ERR_STATE when the backend's wait
   failed. Not re-entrant. */
WSCH_API int wsch_posix_loop_run(wsch_posix_loop *loop);
/* One turn: waits at most max_wait_ms (WSCH_POSIX_FOREVER: no bound; less
   when a timer is due or a hub's flush asks), handles the readiness
   events, runs the timers that are due, then ends the turn: hubs are
   flushed, readiness interest is brought up to date in one pass, and
   connections finished during the turn are freed. Returns WSCH_OK or
   WSCH_ERR_STATE (the wait failed). */
WSCH_API int wsch_posix_loop_run_once(wsch_posix_loop *loop, uint32_t max_wait_ms);
/* Makes wsch_posix_loop_run() return after the current turn (or at once,
   when called before it). */
WSCH_API void wsch_posix_loop_stop(wsch_posix_loop *loop);
/* Graceful shutdown, as a signal does: listeners close, every hub gets
   wsch_hub_shutdown() (peers: 1001), served conns are closed with 1001,
   clients are disconnected (1000); run() returns once all of them are gone
   or shutdown_timeout_ms has passed. Your watches and timers are left
   alone. */
WSCH_API void wsch_posix_loop_shutdown(wsch_posix_loop *loop);
/* SIGINT and SIGTERM start wsch_posix_loop_shutdown() (a second one stops
   the loop at once), and SIGPIPE is ignored. Signals belong to the process:
   one loop at a time may have them (WSCH_ERR_STATE otherwise); the previous
   handlers come back at wsch_posix_loop_destroy(). WSCH_OK, WSCH_ERR_STATE
   or WSCH_ERR_LIMIT (max_fds). */
WSCH_API int wsch_posix_handle_signals(wsch_posix_loop *loop);

WSCH_API wsch_posix_backend wsch_posix_loop_backend(const wsch_posix_loop *loop);
/* What the loop has done since it was created. */
typedef struct wsch_posix_counters {
    uint64_t turns;                 /* waits for readiness */
    uint64_t accepted;              /* connections accepted (served or shed) */
    uint64_t reads;                 /* reads that brought bytes */
    uint64_t writes;                /* writes to sockets (system calls, or the transport's) */
    uint64_t gathered;              /* sends that joined bytes waiting in a gather block (a hub
                                       gathers its peers' itself: wsch_hub_counters.flushed_peers) */
} wsch_posix_counters;
WSCH_API void wsch_posix_loop_counters(const wsch_posix_loop *loop, wsch_posix_counters *out);
/* Sockets the loop holds now (served conns, hub peers, client links),
   listeners and watches not counted. */
WSCH_API size_t wsch_posix_loop_sockets(const wsch_posix_loop *loop);
/* The monotonic clock in milliseconds. Has the signature of the now_ms
   effect (user unused), so it can be plugged in anywhere. */
WSCH_API uint64_t wsch_posix_now_ms(void *user);
/* Fills buf from the system's source of randomness (no pool: each call is
   a system call). Has the signature of the random_bytes effect (user
   unused). Should the system have none, the bytes come from the clock and
   a counter, which is no secret: wsch_posix_loop_create() refuses to start
   on such a system, so a program with a loop never sees it. */
WSCH_API void wsch_posix_random_bytes(void *buf, size_t len, void *user);

/* ---- timers ------------------------------------------------------------
   A timer is yours: a struct you keep (zeroed, or set up with
   wsch_posix_timer_init) for as long as it may be armed. Starting an armed
   timer re-arms it; stop it before its memory goes. Its callback runs once
   per start, from the loop; it may start, stop or free timers, its own
   included. A timer started with 0 ms runs in the next turn (one started
   from a timer's callback never runs in the same pass over the timers). */
typedef struct wsch_posix_timer wsch_posix_timer;
typedef void (*wsch_posix_timer_fn)(wsch_posix_loop *loop, wsch_posix_timer *t, void *user);
struct wsch_posix_timer {
    wsch_posix_timer_fn fn;
    void *user;
    /* private */
    uint64_t due;
    uint64_t seq;
    size_t slot;                    /* position in the heap + 1; 0 = not armed */
    unsigned id;
};
WSCH_API void wsch_posix_timer_init(wsch_posix_timer *t, wsch_posix_timer_fn fn, void *user);
/* Arms t to run fn after delay_ms. WSCH_OK, WSCH_ERR_ARG (no fn),
   WSCH_ERR_LIMIT (max_timers) or WSCH_ERR_NOMEM (t is then not armed). */
WSCH_API int wsch_posix_timer_start(wsch_posix_loop *loop, wsch_posix_timer *t, uint32_t delay_ms);
/* Disarms t (nothing when it is not armed). */
WSCH_API void wsch_posix_timer_stop(wsch_posix_loop *loop, wsch_posix_timer *t);
/* 1 while t is armed. */
WSCH_API int wsch_posix_timer_active(const wsch_posix_timer *t);

/* ---- your descriptors --------------------------------------------------
   fn gets the readiness (WSCH_POSIX_READ/_WRITE/_HANGUP) of fd while it
   waits for events (0: not waiting, but still watched). The fd stays
   yours: the loop never reads, writes or closes it. Level-triggered. */
typedef void (*wsch_posix_watch_fn)(wsch_posix_loop *loop, wsch_posix_watch *w, int fd, unsigned events, void *user);
/* WSCH_OK with *out set, WSCH_ERR_ARG, WSCH_ERR_LIMIT (max_fds),
   WSCH_ERR_NOMEM or WSCH_ERR_STATE (the backend refused the fd: a regular
   file under epoll, say). */
WSCH_API int wsch_posix_watch_add(wsch_posix_loop *loop, int fd, unsigned events, wsch_posix_watch_fn fn, void *user,
                                  wsch_posix_watch **out);
/* Changes what w waits for. WSCH_OK or WSCH_ERR_STATE (the backend refused). */
WSCH_API int wsch_posix_watch_set(wsch_posix_watch *w, unsigned events);
/* Stops watching (its fn is not called again) and frees w after the turn:
   safe from inside its own callback. The fd is not closed. */
WSCH_API void wsch_posix_watch_remove(wsch_posix_watch *w);

/* ---- the transport hook (TLS) ------------------------------------------
   Between the socket and the library: NULL everywhere means plain TCP.
   A TLS adapter fills this (examples/tls_openssl.h is one, on OpenSSL).
   Every call gets `user`; a session is the adapter's pointer for one
   connection. Results: */
typedef enum wsch_posix_io {
    WSCH_POSIX_IO_DONE = 0,         /* moved *n bytes (> 0), or the handshake/shutdown finished */
    WSCH_POSIX_IO_WANT_READ,        /* try again when the socket is readable */
    WSCH_POSIX_IO_WANT_WRITE,       /* try again when the socket is writable */
    WSCH_POSIX_IO_EOF,              /* read: the peer closed (cleanly) */
    WSCH_POSIX_IO_ERROR             /* broken: the connection ends */
} wsch_posix_io;

typedef struct wsch_posix_transport {
    /* A session over the connected, non-blocking socket fd: server 1 for
       an accepted one; host (client side, for SNI and certificate checks;
       valid only during the call), NULL on the server side. NULL refuses
       the connection. */
    void *(*open)(int fd, int server, const char *host, void *user);
    /* Advances the handshake: DONE, WANT_READ, WANT_WRITE or ERROR. Bounded
       by the connect timeout (client) or the handshake timeout (server). */
    wsch_posix_io (*handshake)(void *session, void *user);
    /* Plain bytes: DONE with *n > 0, WANT_READ, WANT_WRITE, EOF or ERROR.
       Data the session holds beyond the socket's readiness is asked for
       again in the next turn, so nothing waits for a readiness that never
       comes. */
    wsch_posix_io (*read)(void *session, void *buf, size_t cap, size_t *n, void *user);
    /* DONE with *n > 0 bytes taken (possibly fewer than len), WANT_WRITE,
       WANT_READ or ERROR. len is at most WSCH_POSIX_GATHER_BLOCK. After a
       WANT, the loop waits for that readiness and then offers the same
       bytes again, first (from a copy of its own, moved: as OpenSSL's
       SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows), possibly with more
       behind them. */
    wsch_posix_io (*write)(void *session, const void *data, size_t len, size_t *n, void *user);
    /* Optional: once, before close, when the connection ends in order (a
       close_notify); best effort, its result is not waited for. Writes
       of the adapter's own must not raise SIGPIPE (MSG_NOSIGNAL, or
       wsch_posix_handle_signals(), which ignores it). */
    wsch_posix_io (*shutdown)(void *session, void *user);
    /* Frees the session; the loop closes the socket after it. Once per
       successful open(). */
    void (*close)(void *session, void *user);
    void *user;
} wsch_posix_transport;

/* ---- listening ---------------------------------------------------------- */
typedef struct wsch_posix_listen_desc {
    const char *host;               /* NULL: "127.0.0.1". "0.0.0.0" (all IPv4), "::" (all
                                       IPv6, and IPv4 where the system maps it), "::1"; a
                                       name is resolved with getaddrinfo (blocks) */
    uint16_t port;                  /* 0: a free port (wsch_posix_listener_port) */
    const void *addr;               /* or: a struct sockaddr_in / _in6 to bind (borrowed */
    size_t addr_len;                /*     until return); host and port are then unused */
    unsigned backlog;               /* 511 */
    int v6only;                     /* nonzero: an IPv6 listener takes IPv6 only */
    const wsch_posix_transport *transport;  /* NULL: plain TCP; borrowed until the loop is destroyed */
} wsch_posix_listen_desc;

/* Binds and listens (desc may be NULL: 127.0.0.1, a free port). Accepting
   starts once something is served on it. Returns WSCH_OK, WSCH_ERR_ARG,
   WSCH_ERR_CONNECT (no address could be bound: errno says why),
   WSCH_ERR_LIMIT or WSCH_ERR_NOMEM. */
WSCH_API int wsch_posix_listen(wsch_posix_loop *loop, const wsch_posix_listen_desc *desc, wsch_posix_listener **out);
/* The port bound (the answer to port 0). */
WSCH_API uint16_t wsch_posix_listener_port(const wsch_posix_listener *l);
/* Stops accepting and closes the socket; what it accepted lives on. The
   listener is freed after the turn (or with the loop). */
WSCH_API void wsch_posix_listener_close(wsch_posix_listener *l);

#ifndef WS_CHANNEL_NO_CONN
/* Every connection accepted on l becomes a server wsch_conn of desc (copied
   once; role, effects and the transport are the layer's; events, limits,
   deflate and the allocator are yours). Each conn's events get user, or
   what wsch_posix_conn_set_user() gave it. A conn is freed by the loop
   after its close(); never destroy it yourself. Returns WSCH_OK,
   WSCH_ERR_ARG, WSCH_ERR_STATE (l already serves something) or
   WSCH_ERR_NOMEM. */
WSCH_API int wsch_posix_serve_conns(wsch_posix_listener *l, const wsch_conn_desc *desc, void *user);
/* The user pointer the events of c (a conn served by a loop) get; set it
   from on_request or on_open for state of your own per connection. */
WSCH_API void *wsch_posix_conn_user(const wsch_conn *c);
WSCH_API void wsch_posix_conn_set_user(wsch_conn *c, void *user);
#endif

#ifndef WS_CHANNEL_NO_HUB
/* Creates a hub whose effects are the loop's (desc.effects: send, close,
   the timers, now_ms and random_bytes are replaced; log is kept). The
   loop owns it: it calls wsch_hub_flush() at the end of every turn and
   destroys it with the loop (or wsch_posix_hub_destroy). Everything else
   is yours as usual: broadcast, send_to_user, the hooks. Returns what
   wsch_hub_create() returns. */
WSCH_API int wsch_posix_hub_create(wsch_posix_loop *loop, const wsch_hub_desc *desc, wsch_hub **out);
/* Every connection accepted on l goes to hub (made by wsch_posix_hub_create
   on l's loop). A hub may serve several listeners (IPv4 and IPv6, say).
   WSCH_OK, WSCH_ERR_ARG or WSCH_ERR_STATE (l already serves something). */
WSCH_API int wsch_posix_serve_hub(wsch_posix_listener *l, wsch_hub *hub);
/* Destroys a hub made by wsch_posix_hub_create (every peer's socket is
   closed). Not from inside a callback. */
WSCH_API void wsch_posix_hub_destroy(wsch_posix_loop *loop, wsch_hub *hub);
#endif

#ifndef WS_CHANNEL_NO_CLIENT
/* How a client's transport is opened. Zero means the default. */
typedef struct wsch_posix_client_opts {
    uint32_t connect_timeout_ms;    /* 10000: TCP connect (every address tried) and the
                                       transport's handshake together */
    const void *addr;               /* a struct sockaddr_in / _in6 to connect to instead of
                                       resolving the URL's host (copied; its port is the one
                                       used; the URL still names the Host header) */
    size_t addr_len;
    /* Your resolver instead of getaddrinfo: write up to *count addresses of
       host (each a struct sockaddr_in / _in6, at most WSCH_POSIX_ADDR_MAX
       bytes) into addrs[i] with their lengths in lens[i], set *count, and
       return WSCH_OK (anything else: this try fails). It must not block
       for long: the loop waits for it. */
    int (*resolve)(const char *host, uint16_t port, void *addrs, size_t *lens, size_t *count, void *user);
    void *resolve_user;
    const wsch_posix_transport *transport;  /* NULL: plain TCP; borrowed until the client is destroyed */
} wsch_posix_client_opts;

/* Creates a client on the loop (desc copied as wsch_client_create copies
   it; its effects are the loop's, all of them but log; its events get
   desc.user). It does not connect: call wsch_client_connect() when you
   are ready. opts may be NULL. Returns what wsch_client_create() returns,
   or WSCH_ERR_ARG for bad opts or a wss:// URL without opts->transport
   (it would go out in clear text). */
WSCH_API int wsch_posix_client_create(wsch_posix_loop *loop, const wsch_client_desc *desc,
                                      const wsch_posix_client_opts *opts, wsch_client **out);
/* Destroys a client made by wsch_posix_client_create (use this, not
   wsch_client_destroy). Safe from inside its callbacks: it is freed after
   the turn. */
WSCH_API void wsch_posix_client_destroy(wsch_client *c);
/* The desc.user of a client made by wsch_posix_client_create. */
WSCH_API void *wsch_posix_client_user(const wsch_client *c);
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif
#endif /* WS_CHANNEL_POSIX */

#endif /* WS_CHANNEL_H */

/* ======================================================================== */
/*                              IMPLEMENTATION                              */
/* ======================================================================== */
#ifdef WS_CHANNEL_IMPLEMENTATION
#ifndef WS_CHANNEL_IMPLEMENTATION_DONE
#define WS_CHANNEL_IMPLEMENTATION_DONE

#include <string.h>
#include <stdlib.h>
#include <errno.h>      /* envelope: strtod's range report, restored for the caller */
#include <float.h>

#ifndef WSCH_ASSERT
#include <assert.h>
#define WSCH_ASSERT(c) assert(c)
#endif
#ifndef WSCH_MEMCPY
#define WSCH_MEMCPY(d, s, n) memcpy((d), (s), (n))
#endif
#ifndef WSCH_MEMSET
#define WSCH_MEMSET(d, v, n) memset((d), (v), (n))
#endif
#ifndef WSCH_MEMMOVE
#define WSCH_MEMMOVE(d, s, n) memmove((d), (s), (n))
#endif
#ifndef WSCH_MEMCMP
#define WSCH_MEMCMP(a, b, n) memcmp((a), (b), (n))
#endif
#ifndef WSCH_MEMCHR
#define WSCH_MEMCHR(s, c, n) memchr((s), (c), (n))
#endif
#ifndef WSCH_STRLEN
#define WSCH_STRLEN(s) strlen((s))
#endif

/* Private helpers are static even without WS_CHANNEL_STATIC. */
#define WSCH__PRIVATE static WSCH__UNUSED

// >>common
WSCH_API const char *wsch_err_str(int err) {
    switch (err) {
#define WSCH__ERR_CASE(name, value, text) case value: return text;
        WSCH_ERROR_LIST(WSCH__ERR_CASE)
#undef WSCH__ERR_CASE
    default: return "unknown error";
    }
}

WSCH__PRIVATE void *wsch__alloc(const wsch_allocator *a, size_t size) {
    if (a && a->alloc) return a->alloc(size, a->user);
    return malloc(size);
}

WSCH__PRIVATE void wsch__free(const wsch_allocator *a, void *ptr) {
    if (!ptr) return;
    if (a && a->free) a->free(ptr, a->user);
    else free(ptr);
}

/* A zero field means its default. */
WSCH__PRIVATE size_t wsch__or(size_t v, size_t def) { return v ? v : def; }

/* The start of every ..._desc_defaults(): the caller's desc, or all zero. */
WSCH__PRIVATE void wsch__desc_copy(void *dst, const void *desc, size_t size) {
    if (desc) WSCH_MEMCPY(dst, desc, size);
    else WSCH_MEMSET(dst, 0, size);
}

/* A (pointer, length) argument's length, WSCH_CSTR resolved. */
WSCH__PRIVATE size_t wsch__cstr_len(const char *s, size_t len) {
    if (len != WSCH_CSTR) return len;
    return s ? WSCH_STRLEN(s) : 0;
}


/* ASCII case-insensitive compare of a span with a NUL-terminated string. */
WSCH__PRIVATE int wsch__lower(int ch) { return (ch >= 'A' && ch <= 'Z') ? ch + 32 : ch; }

WSCH__PRIVATE int wsch__str_ieq(wsch_str s, const char *lit) {
    size_t i;
    for (i = 0; i < s.len; i++) {
        if (lit[i] == '\0' || wsch__lower((unsigned char)s.ptr[i]) != wsch__lower((unsigned char)lit[i])) return 0;
    }
    return lit[i] == '\0';
}

/* ---- the text writer: one code path measures and writes ----------------
   Every text the library builds (HTTP heads and answers, envelopes, escaped
   JSON strings) goes through it. A put that fits is copied; a put that does
   not only counts, and nothing is copied after it, so out always holds a
   prefix of the text. len is the length the whole text needs (saturating at
   SIZE_MAX): a pass with cap 0 (out may be NULL) measures, and a pass with
   cap >= len + 1 writes, by the same code, so a size and its bytes cannot
   disagree. Invariant: !overflow implies len <= cap. */
typedef struct wsch__writer {
    char *out;
    size_t cap;
    size_t len;                 /* bytes the text needs so far */
    int overflow;               /* some put did not fit: out holds a prefix */
} wsch__writer;

WSCH__PRIVATE void wsch__w_init(wsch__writer *w, char *out, size_t cap) {
    w->out = out;
    w->cap = out ? cap : 0;
    w->len = 0;
    w->overflow = 0;
}

WSCH__PRIVATE void wsch__w_put(wsch__writer *w, const void *s, size_t n) {
    if (!w->overflow && n <= w->cap - w->len) {
        if (n == 1) w->out[w->len] = *(const char *)s;  /* quotes, braces: no call */
        else if (n) WSCH_MEMCPY(w->out + w->len, s, n);
        w->len += n;
        return;
    }
    w->overflow = 1;
    w->len = n > SIZE_MAX - w->len ? SIZE_MAX : w->len + n;
}

WSCH__PRIVATE void wsch__w_puts(wsch__writer *w, const char *s) { wsch__w_put(w, s, WSCH_STRLEN(s)); }
/* One "Name: value" header line. */
WSCH__PRIVATE void wsch__w_header(wsch__writer *w, const char *name, const char *value) {
    wsch__w_puts(w, name);
    wsch__w_puts(w, ": ");
    wsch__w_puts(w, value);
    wsch__w_puts(w, "\r\n");
}

WSCH__PRIVATE void wsch__w_put_uint(wsch__writer *w, uint64_t v) {
    char digits[20];
    size_t n = sizeof digits;
    do {
        digits[--n] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    wsch__w_put(w, digits + n, sizeof digits - n);
}

/* s[0..len) as a quoted JSON string: '"' and '\' escaped, control
   characters as \b \f \n \r \t or \u00XX, every other byte (non-ASCII
   included) verbatim, in runs. Checking UTF-8 is the caller's business. The
   library's only JSON escaper. */
WSCH__PRIVATE void wsch__w_put_json_string(wsch__writer *w, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;
    wsch__w_put(w, "\"", 1);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[6];
        size_t k = 2;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        wsch__w_put(w, s + run, i - run);
        run = i + 1;
        e[0] = '\\';
        switch (c) {
        case '"':  e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15u];
            k = 6;
            break;
        }
        wsch__w_put(w, e, k);
    }
    if (len) wsch__w_put(w, s + run, len - run);
    wsch__w_put(w, "\"", 1);
}

/* The text and a NUL after it fit: WSCH_OK. Otherwise WSCH_ERR_BUFFER and
   out (when cap > 0) is left an empty string, never a truncated text.
   *out_len (may be NULL) gets the text's length, without the NUL, either
   way. */
WSCH__PRIVATE int wsch__w_finish(wsch__writer *w, size_t *out_len) {
    if (out_len) *out_len = w->len;
    if (w->overflow || w->len >= w->cap) {
        if (w->cap) w->out[0] = '\0';
        return WSCH_ERR_BUFFER;
    }
    w->out[w->len] = '\0';
    return WSCH_OK;
}

// >>primitives
/* SHA-1, base64, UTF-8 validation and masking. None of them allocates. */

// >>sha1
/* FIPS 180-4 section 6.1. Words are assembled from bytes explicitly, so the
   code is the same on either endianness. */
WSCH__PRIVATE uint32_t wsch__sha1_rol32(uint32_t x, unsigned n) {
    return (x << n) | (x >> (32u - n));
}

WSCH__PRIVATE void wsch__sha1_block(uint32_t h[5], const unsigned char *p) {
    uint32_t w[16], a, b, c, d, e, f, k, t;
    unsigned i;
    for (i = 0; i < 16; i++) {
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) |
               ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
    }
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4];
    for (i = 0; i < 80; i++) {
        if (i >= 16) { /* the message schedule, kept as a 16-word ring */
            t = w[(i + 13) & 15] ^ w[(i + 8) & 15] ^ w[(i + 2) & 15] ^ w[i & 15];
            w[i & 15] = wsch__sha1_rol32(t, 1);
        }
        if (i < 20)      { f = (b & c) | (~b & d);          k = 0x5A827999u; }
        else if (i < 40) { f = b ^ c ^ d;                   k = 0x6ED9EBA1u; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDCu; }
        else             { f = b ^ c ^ d;                   k = 0xCA62C1D6u; }
        t = wsch__sha1_rol32(a, 5) + f + e + k + w[i & 15];
        e = d; d = c; c = wsch__sha1_rol32(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

WSCH_API void wsch_sha1_init(wsch_sha1 *s) {
    WSCH_ASSERT(s);
    s->h[0] = 0x67452301u;
    s->h[1] = 0xEFCDAB89u;
    s->h[2] = 0x98BADCFEu;
    s->h[3] = 0x10325476u;
    s->h[4] = 0xC3D2E1F0u;
    s->total_len = 0;
    s->block_len = 0;
}

WSCH_API void wsch_sha1_update(wsch_sha1 *s, const void *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    WSCH_ASSERT(s && (data || len == 0));
    /* Nothing hashed yet: the chaining value must be the IV, which also makes
       a zeroed struct a valid starting state. */
    if (s->total_len == 0) wsch_sha1_init(s);
    s->total_len += len;
    if (s->block_len > 0) {
        size_t take = 64 - s->block_len;
        if (take > len) take = len;
        WSCH_MEMCPY(s->block + s->block_len, p, take);
        s->block_len += take;
        p += take;
        len -= take;
        if (s->block_len < 64) return;
        wsch__sha1_block(s->h, s->block);
        s->block_len = 0;
    }
    for (; len >= 64; p += 64, len -= 64) wsch__sha1_block(s->h, p);
    if (len > 0) WSCH_MEMCPY(s->block, p, len);
    s->block_len = len;
}

WSCH_API void wsch_sha1_final(wsch_sha1 *s, unsigned char digest[20]) {
    uint64_t bits;
    unsigned i;
    WSCH_ASSERT(s && digest);
    if (s->total_len == 0) wsch_sha1_init(s);
    bits = s->total_len * 8u;
    /* Padding: 0x80, zeros up to 56 mod 64, then the bit length big-endian. */
    s->block[s->block_len++] = 0x80;
    if (s->block_len > 56) {
        WSCH_MEMSET(s->block + s->block_len, 0, 64 - s->block_len);
        wsch__sha1_block(s->h, s->block);
        s->block_len = 0;
    }
    WSCH_MEMSET(s->block + s->block_len, 0, 56 - s->block_len);
    for (i = 0; i < 8; i++) s->block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    wsch__sha1_block(s->h, s->block);
    for (i = 0; i < 20; i++) digest[i] = (unsigned char)(s->h[i / 4] >> (24 - 8 * (i % 4)));
    s->block_len = 0;
}

// >>base64
WSCH__PRIVATE const char wsch__b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

WSCH_API int wsch_base64_encode(const void *src, size_t len, char *dst, size_t cap, size_t *out_len) {
    const unsigned char *p = (const unsigned char *)src;
    size_t need, i, o = 0;
    uint32_t v;
    WSCH_ASSERT(src || len == 0);
    if (out_len) *out_len = 0;
    /* The encoded length must itself fit in a size_t, with the NUL. */
    if (len / 3 >= (SIZE_MAX - 1) / 4 - 1) return WSCH_ERR_BUFFER;
    need = WSCH_BASE64_ENCODED_LEN(len);
    if (!dst || cap < need + 1) return WSCH_ERR_BUFFER;
    for (i = 0; i + 3 <= len; i += 3) {
        v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | (uint32_t)p[i + 2];
        dst[o++] = wsch__b64_chars[(v >> 18) & 63];
        dst[o++] = wsch__b64_chars[(v >> 12) & 63];
        dst[o++] = wsch__b64_chars[(v >> 6) & 63];
        dst[o++] = wsch__b64_chars[v & 63];
    }
    if (i < len) { /* one or two bytes left: pad to a full quad */
        v = (uint32_t)p[i] << 16;
        if (i + 1 < len) v |= (uint32_t)p[i + 1] << 8;
        dst[o++] = wsch__b64_chars[(v >> 18) & 63];
        dst[o++] = wsch__b64_chars[(v >> 12) & 63];
        dst[o++] = (i + 1 < len) ? wsch__b64_chars[(v >> 6) & 63] : '=';
        dst[o++] = '=';
    }
    dst[o] = '\0';
    if (out_len) *out_len = o;
    return WSCH_OK;
}

/* The 6-bit value of a base64 character, or -1 ('=' included). */
WSCH__PRIVATE int wsch__b64_value(char ch) {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

WSCH_API int wsch_base64_decode(const char *src, size_t len, void *dst, size_t cap, size_t *out_len) {
    unsigned char *out = (unsigned char *)dst;
    size_t pad = 0, need, i, o = 0;
    WSCH_ASSERT(src || len == 0);
    if (out_len) *out_len = 0;
    if (len % 4 != 0) return WSCH_ERR_BASE64;
    if (len == 0) return WSCH_OK;
    if (src[len - 1] == '=') pad = (src[len - 2] == '=') ? 2 : 1;
    need = len / 4 * 3 - pad;
    if (cap < need || (!dst && need > 0)) return WSCH_ERR_BUFFER;
    for (i = 0; i < len; i += 4) {
        /* Only the final quad may hold padding; '=' anywhere else is -1 here. */
        size_t q = (i + 4 == len) ? 4 - pad : 4, j;
        uint32_t v = 0;
        for (j = 0; j < q; j++) {
            int d = wsch__b64_value(src[i + j]);
            if (d < 0) return WSCH_ERR_BASE64;
            v = (v << 6) | (uint32_t)d;
        }
        v <<= 6 * (4 - q);
        /* Canonical form: the bits that padding drops must be zero. */
        if ((q == 2 && (v & 0xFFFFu) != 0) || (q == 3 && (v & 0xFFu) != 0)) return WSCH_ERR_BASE64;
        out[o++] = (unsigned char)(v >> 16);
        if (q > 2) out[o++] = (unsigned char)(v >> 8);
        if (q > 3) out[o++] = (unsigned char)v;
    }
    if (out_len) *out_len = o;
    return WSCH_OK;
}

// >>accept
WSCH_API void wsch_accept_key(const char *key, size_t key_len, char out[WSCH_ACCEPT_LEN + 1]) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[20];
    wsch_sha1 s;
    WSCH_ASSERT((key || key_len == 0) && out);
    wsch_sha1_init(&s);
    wsch_sha1_update(&s, key, key_len);
    wsch_sha1_update(&s, guid, sizeof guid - 1);
    wsch_sha1_final(&s, digest);
    (void)wsch_base64_encode(digest, sizeof digest, out, WSCH_ACCEPT_LEN + 1, NULL);
}

// >>simd
/* SIMD is chosen at compile time only (SSE2 is part of every x86-64 target;
   MSVC does not define __SSE2__ there; NEON is part of every AArch64 target,
   where gcc and clang define __ARM_NEON). The scalar code is always present
   and is what runs with WSCH_NO_SIMD or elsewhere (32-bit ARM included: its
   NEON lacks the across-vector reductions used below). */
#if (defined(__SSE2__) || defined(_M_X64)) && !defined(WSCH_NO_SIMD)
#define WSCH__SSE2 1
#include <emmintrin.h>
#else
#define WSCH__SSE2 0
#endif
#if defined(__ARM_NEON) && defined(__aarch64__) && !WSCH__SSE2 && !defined(WSCH_NO_SIMD)
#define WSCH__NEON 1
#include <arm_neon.h>
#else
#define WSCH__NEON 0
#endif

// >>utf8
/* The validator state between bytes: 0 at a code point boundary; inside a
   sequence, the number of continuation bytes still due (bits 0-7) and the
   range the next one must fall in (low bound bits 8-15, high bound 16-23).
   The narrowed ranges after E0, ED, F0 and F4 are what exclude overlongs,
   surrogates and code points above U+10FFFF (RFC 3629 section 4). */
#define WSCH__UTF8_FAILED 0x80000000u
#define WSCH__UTF8_ST(need, lo, hi) ((uint32_t)(need) | ((uint32_t)(lo) << 8) | ((uint32_t)(hi) << 16))

WSCH__PRIVATE uint32_t wsch__utf8_step(uint32_t st, unsigned char c) {
    uint32_t need;
    if (st == 0) {
        if (c < 0x80) return 0;
        if (c < 0xC2) return WSCH__UTF8_FAILED; /* continuation, or overlong C0/C1 */
        if (c < 0xE0) return WSCH__UTF8_ST(1, 0x80, 0xBF);
        if (c == 0xE0) return WSCH__UTF8_ST(2, 0xA0, 0xBF);
        if (c == 0xED) return WSCH__UTF8_ST(2, 0x80, 0x9F);
        if (c < 0xF0) return WSCH__UTF8_ST(2, 0x80, 0xBF);
        if (c == 0xF0) return WSCH__UTF8_ST(3, 0x90, 0xBF);
        if (c < 0xF4) return WSCH__UTF8_ST(3, 0x80, 0xBF);
        if (c == 0xF4) return WSCH__UTF8_ST(3, 0x80, 0x8F);
        return WSCH__UTF8_FAILED;
    }
    if (c < ((st >> 8) & 0xFFu) || c > ((st >> 16) & 0xFFu)) return WSCH__UTF8_FAILED;
    need = st & 0xFFu;
    return need == 1 ? 0 : WSCH__UTF8_ST(need - 1, 0x80, 0xBF);
}

#if WSCH__SSE2 || WSCH__NEON
/* Where a vector run stopped inside a sequence, backs up over it (its
   continuations, then its lead) so the byte-wise step sees it whole. */
WSCH__PRIVATE size_t wsch__utf8_back_up(const unsigned char *p, size_t start, size_t i) {
    while (i > start && (p[i - 1] & 0xC0) == 0x80) i--;
    if (i > start && p[i - 1] >= 0xC0) i--;
    return i;
}
#endif

#if WSCH__SSE2
/* The 16 bytes ending k bytes before the block x, whose predecessor is prev. */
#define WSCH__SSE2_BEFORE(x, prev, k) _mm_or_si128(_mm_slli_si128((x), (k)), _mm_srli_si128((prev), 16 - (k)))

/* Validates 16 bytes at a time from a code point boundary at p[i]. Each block
   is checked against the bytes before it with the rules the scalar step
   encodes: a continuation byte exactly where a lead byte promised one, no
   C0, C1 or F5..FF, and the narrowed second-byte ranges after E0, ED, F0, F4.
   Returns the end of the last block that passed, moved back to a code point
   boundary; the scalar code goes on from there (and finds the exact offset
   of an error in the block that did not pass). */
WSCH__PRIVATE size_t wsch__utf8_run_sse2(const unsigned char *p, size_t i, size_t len) {
    const size_t start = i;
    const __m128i zero = _mm_setzero_si128();
    __m128i prev = zero, x, b1, b2, b3, expect, is_cont, below_a0, below_90, err;
    int high, open = 0; /* open: the previous block may owe continuations */
    while (len - i >= 16) {
        if (!open && len - i >= 64) { /* skip ASCII 64 bytes at a time */
            __m128i x1, x2, x3;
            WSCH_MEMCPY(&x, p + i, 16);
            WSCH_MEMCPY(&x1, p + i + 16, 16);
            WSCH_MEMCPY(&x2, p + i + 32, 16);
            WSCH_MEMCPY(&x3, p + i + 48, 16);
            if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(x, x1), _mm_or_si128(x2, x3))) == 0) {
                prev = x3;
                i += 64;
                continue;
            }
        }
        WSCH_MEMCPY(&x, p + i, 16);
        high = _mm_movemask_epi8(x);
        if (!open && high == 0) { /* all ASCII, nothing owed */
            prev = x;
            i += 16;
            continue;
        }
        b1 = WSCH__SSE2_BEFORE(x, prev, 1);
        b2 = WSCH__SSE2_BEFORE(x, prev, 2);
        b3 = WSCH__SSE2_BEFORE(x, prev, 3);
        /* a continuation is due where 1 byte back is >= C0, 2 back >= E0 or
           3 back >= F0 (saturating subtraction is non-zero exactly there) */
        expect = _mm_or_si128(_mm_subs_epu8(b1, _mm_set1_epi8((char)0xBF)),
                              _mm_or_si128(_mm_subs_epu8(b2, _mm_set1_epi8((char)0xDF)),
                                           _mm_subs_epu8(b3, _mm_set1_epi8((char)0xEF))));
        is_cont = _mm_cmplt_epi8(x, _mm_set1_epi8((char)0xC0)); /* signed: 80..BF */
        /* lanes where "no continuation due" equals "is a continuation" are errors */
        err = _mm_cmpeq_epi8(_mm_cmpeq_epi8(expect, zero), is_cont);
        /* bytes that are never valid: C0, C1, F5..FF */
        err = _mm_or_si128(err, _mm_cmpeq_epi8(_mm_and_si128(x, _mm_set1_epi8((char)0xFE)), _mm_set1_epi8((char)0xC0)));
        err = _mm_or_si128(err, _mm_subs_epu8(x, _mm_set1_epi8((char)0xF4)));
        /* second bytes, which are continuations (so signed order is byte
           order): E0 needs A0..BF, ED 80..9F, F0 90..BF, F4 80..8F */
        below_a0 = _mm_cmplt_epi8(x, _mm_set1_epi8((char)0xA0));
        below_90 = _mm_cmplt_epi8(x, _mm_set1_epi8((char)0x90));
        err = _mm_or_si128(err, _mm_and_si128(_mm_cmpeq_epi8(b1, _mm_set1_epi8((char)0xE0)), below_a0));
        err = _mm_or_si128(err, _mm_andnot_si128(below_a0, _mm_cmpeq_epi8(b1, _mm_set1_epi8((char)0xED))));
        err = _mm_or_si128(err, _mm_and_si128(_mm_cmpeq_epi8(b1, _mm_set1_epi8((char)0xF0)), below_90));
        err = _mm_or_si128(err, _mm_andnot_si128(below_90, _mm_cmpeq_epi8(b1, _mm_set1_epi8((char)0xF4))));
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(err, zero)) != 0xFFFF) break;
        open = high != 0;
        prev = x;
        i += 16;
    }
    return wsch__utf8_back_up(p, start, i);
}
#endif

#if WSCH__NEON
/* The same block check as wsch__utf8_run_sse2, rule for rule. vld1q_u8 is
   the unaligned load of NEON (byte lanes: memory order, any alignment, any
   endianness); vextq_u8 takes the bytes before the block from prev; the
   unsigned compares NEON has make the range checks direct; vmaxvq_u8 (one
   AArch64 instruction) answers "any byte set" and "any byte >= 0x80". */
WSCH__PRIVATE size_t wsch__utf8_run_neon(const unsigned char *p, size_t i, size_t len) {
    const size_t start = i;
    uint8x16_t prev = vdupq_n_u8(0), x, b1, b1_due, expect, is_cont, below_a0, below_90, err;
    int open = 0, high; /* open: the previous block may owe continuations */
    while (len - i >= 16) {
        if (!open && len - i >= 64) { /* skip ASCII 64 bytes at a time */
            uint8x16_t x1, x2, x3;
            x = vld1q_u8(p + i);
            x1 = vld1q_u8(p + i + 16);
            x2 = vld1q_u8(p + i + 32);
            x3 = vld1q_u8(p + i + 48);
            if (vmaxvq_u8(vorrq_u8(vorrq_u8(x, x1), vorrq_u8(x2, x3))) < 0x80) {
                prev = x3;
                i += 64;
                continue;
            }
        }
        x = vld1q_u8(p + i);
        high = vmaxvq_u8(x) >= 0x80;
        if (!open && !high) { /* all ASCII, nothing owed */
            prev = x;
            i += 16;
            continue;
        }
        b1 = vextq_u8(prev, x, 15); /* lane j: the byte 1 before x[j] */
        /* a continuation is due where 1 byte back is >= C0, 2 back >= E0 or
           3 back >= F0 (saturating subtraction is non-zero exactly there) */
        b1_due = vqsubq_u8(b1, vdupq_n_u8(0xBF));
        expect = vorrq_u8(b1_due, vorrq_u8(vqsubq_u8(vextq_u8(prev, x, 14), vdupq_n_u8(0xDF)),
                                           vqsubq_u8(vextq_u8(prev, x, 13), vdupq_n_u8(0xEF))));
        is_cont = vceqq_u8(vandq_u8(x, vdupq_n_u8(0xC0)), vdupq_n_u8(0x80));
        /* lanes where "no continuation due" equals "is a continuation" are errors */
        err = vceqq_u8(vceqq_u8(expect, vdupq_n_u8(0)), is_cont);
        /* bytes that are never valid: C0, C1, F5..FF */
        err = vorrq_u8(err, vceqq_u8(vandq_u8(x, vdupq_n_u8(0xFE)), vdupq_n_u8(0xC0)));
        err = vorrq_u8(err, vcgtq_u8(x, vdupq_n_u8(0xF4)));
        /* second bytes: E0 needs A0..BF, ED 80..9F, F0 90..BF, F4 80..8F
           (a byte that is no continuation at all is caught above) */
        below_a0 = vcltq_u8(x, vdupq_n_u8(0xA0));
        below_90 = vcltq_u8(x, vdupq_n_u8(0x90));
        err = vorrq_u8(err, vandq_u8(vceqq_u8(b1, vdupq_n_u8(0xE0)), below_a0));
        err = vorrq_u8(err, vbicq_u8(vceqq_u8(b1, vdupq_n_u8(0xED)), below_a0));
        err = vorrq_u8(err, vandq_u8(vceqq_u8(b1, vdupq_n_u8(0xF0)), below_90));
        err = vorrq_u8(err, vbicq_u8(vceqq_u8(b1, vdupq_n_u8(0xF4)), below_90));
        if (vmaxvq_u8(err) != 0) break;
        open = high;
        prev = x;
        i += 16;
    }
    return wsch__utf8_back_up(p, start, i);
}
#endif

/* Validates whole code points from a boundary at p[i] while a longest
   sequence still fits; returns the boundary where it stopped, either near
   the end or at a sequence the byte-wise step must look at. The checks per
   length are the step's table, one sequence at a time. */
WSCH__PRIVATE size_t wsch__utf8_run(const unsigned char *p, size_t i, size_t len) {
    unsigned char c, c1;
#if WSCH__SSE2
    i = wsch__utf8_run_sse2(p, i, len);
#elif WSCH__NEON
    i = wsch__utf8_run_neon(p, i, len);
#endif
    while (len - i >= 4) {
        c = p[i];
        if (c < 0x80) {
            /* ASCII: four words at a time, then one, then bytes */
            while (len - i >= 32) {
                uint64_t w0, w1, w2, w3;
                WSCH_MEMCPY(&w0, p + i, 8);
                WSCH_MEMCPY(&w1, p + i + 8, 8);
                WSCH_MEMCPY(&w2, p + i + 16, 8);
                WSCH_MEMCPY(&w3, p + i + 24, 8);
                if ((w0 | w1 | w2 | w3) & 0x8080808080808080u) break;
                i += 32;
            }
            while (len - i >= 8) {
                uint64_t w;
                WSCH_MEMCPY(&w, p + i, 8);
                if (w & 0x8080808080808080u) break;
                i += 8;
            }
            while (i < len && p[i] < 0x80) i++;
            continue;
        }
        c1 = p[i + 1];
        if (c < 0xE0) {
            if (c < 0xC2 || (c1 & 0xC0) != 0x80) return i;
            i += 2;
        } else if (c < 0xF0) {
            if (c1 < (c == 0xE0 ? 0xA0 : 0x80) || c1 > (c == 0xED ? 0x9F : 0xBF)) return i;
            if ((p[i + 2] & 0xC0) != 0x80) return i;
            i += 3;
        } else {
            if (c > 0xF4 || c1 < (c == 0xF0 ? 0x90 : 0x80) || c1 > (c == 0xF4 ? 0x8F : 0xBF)) return i;
            if ((p[i + 2] & 0xC0) != 0x80 || (p[i + 3] & 0xC0) != 0x80) return i;
            i += 4;
        }
    }
    return i;
}

WSCH_API int wsch_utf8_feed(wsch_utf8 *v, const void *data, size_t len, size_t *bad_offset) {
    const unsigned char *p = (const unsigned char *)data;
    uint32_t st;
    size_t i = 0;
    WSCH_ASSERT(v && (data || len == 0));
    st = v->state;
    if (st != 0 && ((st & WSCH__UTF8_FAILED) || (st & 0xFFu) == 0 || (st & 0xFFu) > 3)) goto fail;
    /* Finish a code point begun in an earlier fragment, run over whole code
       points, and step byte by byte over what is left: a sequence cut by the
       end of this fragment, or the one that is invalid. */
    for (; st != 0 && i < len; i++) {
        st = wsch__utf8_step(st, p[i]);
        if (st == WSCH__UTF8_FAILED) goto fail;
    }
    if (st == 0) i = wsch__utf8_run(p, i, len);
    for (; i < len; i++) {
        st = wsch__utf8_step(st, p[i]);
        if (st == WSCH__UTF8_FAILED) goto fail;
    }
    v->state = st;
    return WSCH_OK;
fail:
    v->state = WSCH__UTF8_FAILED;
    if (bad_offset) *bad_offset = i;
    return WSCH_ERR_UTF8;
}

WSCH_API int wsch_utf8_finish(const wsch_utf8 *v) {
    WSCH_ASSERT(v);
    return v->state == 0 ? WSCH_OK : WSCH_ERR_UTF8;
}

WSCH_API int wsch_utf8_valid(const void *data, size_t len) {
    wsch_utf8 v;
    v.state = 0;
    return wsch_utf8_feed(&v, data, len, NULL) == WSCH_OK && v.state == 0;
}

// >>mask
WSCH_API size_t wsch_mask(void *data, size_t len, const unsigned char key[4], size_t offset) {
    unsigned char *p = (unsigned char *)data;
    unsigned char k[4];
    uint32_t k32;
    uint64_t k64, w0, w1;
    size_t i = 0;
    WSCH_ASSERT(key && (data || len == 0));
    /* The key rotated so that k[j] masks p[j], then repeated to a word: every
       block below starts at a multiple of 4, so one pattern serves them all.
       Only byte order in memory matters, so endianness does not. */
    k[0] = key[offset & 3];
    k[1] = key[(offset + 1) & 3];
    k[2] = key[(offset + 2) & 3];
    k[3] = key[(offset + 3) & 3];
    WSCH_MEMCPY(&k32, k, 4);
    k64 = ((uint64_t)k32 << 32) | k32;
#if WSCH__SSE2
    if (len >= 16) {
        const __m128i kv = _mm_set1_epi32((int)k32);
        __m128i a, b, c, d;
        for (; len - i >= 64; i += 64) {
            WSCH_MEMCPY(&a, p + i, 16);
            WSCH_MEMCPY(&b, p + i + 16, 16);
            WSCH_MEMCPY(&c, p + i + 32, 16);
            WSCH_MEMCPY(&d, p + i + 48, 16);
            a = _mm_xor_si128(a, kv);
            b = _mm_xor_si128(b, kv);
            c = _mm_xor_si128(c, kv);
            d = _mm_xor_si128(d, kv);
            WSCH_MEMCPY(p + i, &a, 16);
            WSCH_MEMCPY(p + i + 16, &b, 16);
            WSCH_MEMCPY(p + i + 32, &c, 16);
            WSCH_MEMCPY(p + i + 48, &d, 16);
        }
        for (; len - i >= 16; i += 16) {
            WSCH_MEMCPY(&a, p + i, 16);
            a = _mm_xor_si128(a, kv);
            WSCH_MEMCPY(p + i, &a, 16);
        }
    }
#elif WSCH__NEON
    if (len >= 16) {
        /* the pattern loaded from bytes, so lane order is memory order */
        unsigned char k16[16];
        uint8x16_t kv, a, b, c, d;
        size_t j;
        for (j = 0; j < 16; j++) k16[j] = k[j & 3];
        kv = vld1q_u8(k16);
        for (; len - i >= 64; i += 64) {
            a = veorq_u8(vld1q_u8(p + i), kv);
            b = veorq_u8(vld1q_u8(p + i + 16), kv);
            c = veorq_u8(vld1q_u8(p + i + 32), kv);
            d = veorq_u8(vld1q_u8(p + i + 48), kv);
            vst1q_u8(p + i, a);
            vst1q_u8(p + i + 16, b);
            vst1q_u8(p + i + 32, c);
            vst1q_u8(p + i + 48, d);
        }
        for (; len - i >= 16; i += 16) vst1q_u8(p + i, veorq_u8(vld1q_u8(p + i), kv));
    }
#endif
    for (; len - i >= 16; i += 16) {
        WSCH_MEMCPY(&w0, p + i, 8);
        WSCH_MEMCPY(&w1, p + i + 8, 8);
        w0 ^= k64;
        w1 ^= k64;
        WSCH_MEMCPY(p + i, &w0, 8);
        WSCH_MEMCPY(p + i + 8, &w1, 8);
    }
    if (len - i >= 8) {
        WSCH_MEMCPY(&w0, p + i, 8);
        w0 ^= k64;
        WSCH_MEMCPY(p + i, &w0, 8);
        i += 8;
    }
    for (; i < len; i++) p[i] ^= k[i & 3];
    return (offset + len) & 3;
}
// >>frame
WSCH_API size_t wsch_frame_header_encode(unsigned char out[WSCH_FRAME_HEADER_MAX], const wsch_frame_header *h) {
    size_t n = 2;
    uint64_t len = h->payload_len;
    out[0] = (unsigned char)((h->fin ? 0x80u : 0u) | ((unsigned)(h->rsv & 7u) << 4) | (h->opcode & 0x0Fu));
    out[1] = (unsigned char)(h->masked ? 0x80u : 0u);
    if (len < 126) {
        out[1] = (unsigned char)(out[1] | len);
    } else if (len <= 0xFFFFu) {
        out[1] = (unsigned char)(out[1] | 126u);
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        n = 4;
    } else {
        int i;
        out[1] = (unsigned char)(out[1] | 127u);
        for (i = 0; i < 8; i++) out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
        n = 10;
    }
    if (h->masked) {
        WSCH_MEMCPY(out + n, h->mask_key, 4);
        n += 4;
    }
    return n;
}

WSCH__PRIVATE int wsch__frame_opcode_known(unsigned op) {
    return op <= WSCH_OP_BINARY || (op >= WSCH_OP_CLOSE && op <= WSCH_OP_PONG);
}

WSCH_API int wsch_frame_header_decode(const void *buf, size_t len, wsch_frame_header *h, size_t *header_len) {
    const unsigned char *p = (const unsigned char *)buf;
    size_t need = 2;
    unsigned len7;
    uint64_t plen;
    if (len < 2) return WSCH_INCOMPLETE;
    len7 = p[1] & 0x7Fu;
    need += (len7 == 126) ? 2u : (len7 == 127) ? 8u : 0u;
    need += (p[1] & 0x80u) ? 4u : 0u;
    /* Opcode and control-frame rules need only the first two bytes: fail as
       early as the bytes allow. */
    if (!wsch__frame_opcode_known(p[0] & 0x0Fu)) return WSCH_ERR_PROTOCOL;
    if ((p[0] & 0x08u) && (!(p[0] & 0x80u) || len7 > WSCH_CONTROL_PAYLOAD_MAX)) return WSCH_ERR_PROTOCOL;
    if (len < need) return WSCH_INCOMPLETE;
    if (len7 == 126) {
        plen = ((uint64_t)p[2] << 8) | p[3];
        if (plen < 126) return WSCH_ERR_PROTOCOL; /* not the minimal encoding */
    } else if (len7 == 127) {
        int i;
        plen = 0;
        for (i = 0; i < 8; i++) plen = (plen << 8) | p[2 + i];
        if (plen >> 63) return WSCH_ERR_PROTOCOL;
        if (plen <= 0xFFFFu) return WSCH_ERR_PROTOCOL;
    } else {
        plen = len7;
    }
    h->fin = (uint8_t)(p[0] >> 7);
    h->rsv = (uint8_t)((p[0] >> 4) & 7u);
    h->opcode = (uint8_t)(p[0] & 0x0Fu);
    h->masked = (uint8_t)(p[1] >> 7);
    h->payload_len = plen;
    if (h->masked) WSCH_MEMCPY(h->mask_key, p + need - 4, 4);
    else WSCH_MEMSET(h->mask_key, 0, 4);
    *header_len = need;
    return WSCH_OK;
}

// >>handshake

/* --- character classes (RFC 9110 5.6.2 tchar, RFC 3986 2.2/2.3) ---------- */

WSCH__PRIVATE int wsch__h_is_digit(unsigned c) { return c >= '0' && c <= '9'; }
WSCH__PRIVATE int wsch__h_is_alpha(unsigned c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
WSCH__PRIVATE int wsch__h_is_ows(unsigned c) { return c == ' ' || c == '\t'; }

WSCH__PRIVATE int wsch__h_hex_val(unsigned c) {
    if (wsch__h_is_digit(c)) return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

WSCH__PRIVATE int wsch__h_is_tchar(unsigned c) {
    if (wsch__h_is_alpha(c) || wsch__h_is_digit(c)) return 1;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return 1;
    default:
        return 0;
    }
}

WSCH__PRIVATE int wsch__h_is_unreserved(unsigned c) {
    return wsch__h_is_alpha(c) || wsch__h_is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* pchar minus pct-encoded, which the callers check as a whole escape. */
WSCH__PRIVATE int wsch__h_is_pchar(unsigned c) {
    if (wsch__h_is_unreserved(c)) return 1;
    switch (c) {
    case '!': case '$': case '&': case '\'': case '(': case ')': case '*': case '+':
    case ',': case ';': case '=': case ':': case '@':
        return 1;
    default:
        return 0;
    }
}

/* field-vchar, SP and HTAB: what a header value may hold (obs-text included). */
WSCH__PRIVATE int wsch__h_is_field_char(unsigned c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

/* A request-target byte: visible ASCII except '#' (fragments are never sent). */
WSCH__PRIVATE int wsch__h_is_target_char(unsigned c) { return c > 0x20 && c < 0x7f && c != '#'; }

/* --- spans and small helpers --------------------------------------------- */

WSCH__PRIVATE wsch_str wsch__h_span(const char *p, size_t n) {
    wsch_str s;
    s.ptr = p;
    s.len = n;
    return s;
}

WSCH__PRIVATE wsch_str wsch__h_trim(wsch_str s) {
    while (s.len && wsch__h_is_ows((unsigned char)s.ptr[0])) {
        s.ptr++;
        s.len--;
    }
    while (s.len && wsch__h_is_ows((unsigned char)s.ptr[s.len - 1])) s.len--;
    return s;
}

/* Exact (case-sensitive) comparison of a span with a span. */
WSCH__PRIVATE int wsch__h_span_eq(wsch_str a, wsch_str b) {
    size_t i;
    if (a.len != b.len) return 0;
    for (i = 0; i < a.len; i++)
        if (a.ptr[i] != b.ptr[i]) return 0;
    return 1;
}

WSCH__PRIVATE int wsch__h_span_is_token(wsch_str s) {
    size_t i;
    if (!s.len) return 0;
    for (i = 0; i < s.len; i++)
        if (!wsch__h_is_tchar((unsigned char)s.ptr[i])) return 0;
    return 1;
}

/* Next element of a comma-separated list from *pos: trimmed, empty elements
   skipped (RFC 9110 5.6.1). Returns 1 with *elem, 0 at the end. */
WSCH__PRIVATE int wsch__h_list_next(wsch_str list, size_t *pos, wsch_str *elem) {
    while (*pos < list.len) {
        size_t start = *pos;
        while (*pos < list.len && list.ptr[*pos] != ',') (*pos)++;
        *elem = wsch__h_trim(wsch__h_span(list.ptr + start, *pos - start));
        if (*pos < list.len) (*pos)++; /* the comma */
        if (elem->len) return 1;
    }
    return 0;
}

/* Is elem one of the entries of a comma-separated C string (exact match)? */
WSCH__PRIVATE int wsch__h_list_contains(const char *list, wsch_str elem) {
    wsch_str l, e;
    size_t pos = 0;
    if (!list) return 0;
    l = wsch__h_span(list, WSCH_STRLEN(list));
    while (wsch__h_list_next(l, &pos, &e))
        if (wsch__h_span_eq(e, elem)) return 1;
    return 0;
}

/* Does any header named name carry token in its comma list? */
WSCH__PRIVATE int wsch__h_headers_have_token(const wsch_http_header *h, size_t n, const char *name, const char *token) {
    size_t i;
    for (i = 0; i < n && i < WSCH_MAX_HEADERS; i++)
        if (wsch__str_ieq(h[i].name, name) && wsch_header_has_token(h[i].value, token)) return 1;
    return 0;
}

/* --- output: the common writer (wsch__writer) under the builders' rules -- */

/* Copies a span out as a C string under the builders' rules. */
WSCH__PRIVATE int wsch__h_copy_out(wsch_str s, char *out, size_t cap, size_t *out_len) {
    wsch__writer w;
    wsch__w_init(&w, out, cap);
    wsch__w_put(&w, s.ptr, s.len);
    return wsch__w_finish(&w, out_len);
}

/* Caller-supplied "Name: value\r\n" lines: token names, field characters
   only, every line CRLF-terminated, none of the reserved names (headers the
   builder writes itself), at most one Authorization. NULL and "" are fine. */
WSCH__PRIVATE int wsch__h_header_lines_ok(const char *s, const char *const *reserved) {
    size_t i = 0, k, auths = 0;
    if (!s) return 1;
    while (s[i]) {
        size_t start = i;
        wsch_str name;
        while (wsch__h_is_tchar((unsigned char)s[i])) i++;
        if (i == start || s[i] != ':') return 0;
        /* A header the builder writes itself, or a second Authorization,
           would make the peer's parser refuse the message as ambiguous. */
        name.ptr = s + start;
        name.len = i - start;
        for (k = 0; reserved && reserved[k]; k++)
            if (wsch__str_ieq(name, reserved[k])) return 0;
        if (wsch__str_ieq(name, "Authorization") && ++auths > 1) return 0;
        i++;
        while (wsch__h_is_field_char((unsigned char)s[i])) i++;
        if (s[i] != '\r' || s[i + 1] != '\n') return 0;
        i += 2;
    }
    return 1;
}

/* A header value the caller supplies (Origin): non-empty field characters. */
WSCH__PRIVATE int wsch__h_value_ok(const char *s) {
    size_t i;
    for (i = 0; s[i]; i++)
        if (!wsch__h_is_field_char((unsigned char)s[i])) return 0;
    return i > 0;
}

/* A comma-separated list of tokens with optional whitespace, at least one. */
WSCH__PRIVATE int wsch__h_token_list_ok(const char *s) {
    wsch_str l = wsch__h_span(s, WSCH_STRLEN(s)), e;
    size_t pos = 0, i, n = 0;
    for (i = 0; i < l.len; i++) {
        unsigned c = (unsigned char)s[i];
        if (!wsch__h_is_tchar(c) && c != ',' && !wsch__h_is_ows(c)) return 0;
    }
    while (wsch__h_list_next(l, &pos, &e)) {
        if (!wsch__h_span_is_token(e)) return 0; /* "a b": whitespace inside an entry */
        n++;
    }
    return n > 0;
}

/* --- incremental head scanner -------------------------------------------- */

/* Looks at the bytes from prev_len on for the CRLF CRLF that ends a head,
   failing at once on a bare LF, a CR followed by anything but LF, or a
   control byte no head may hold. A CR that ends one call's bytes is paired
   with its LF at the start of the next call, so any split of the input gives
   the same answer and each byte is looked at once. Never reads buf[len] or
   past max_bytes. */
WSCH__PRIVATE int wsch__h_head_scan(const char *buf, size_t len, size_t prev_len, size_t max_bytes,
                                    size_t *head_len) {
    size_t i = prev_len, limit;
    if (prev_len > len || (!buf && len)) return WSCH_ERR_ARG;
    if (max_bytes == 0) max_bytes = WSCH_DEFAULT_MAX_HEADER_BYTES;
    limit = len < max_bytes ? len : max_bytes;
    if (i > 0 && i < limit && buf[i - 1] == '\r') {
        if (buf[i] != '\n') return WSCH_ERR_HTTP;
        i++;
        if (i >= 4 && buf[i - 4] == '\r' && buf[i - 3] == '\n') {
            *head_len = i;
            return WSCH_OK;
        }
    }
    while (i < limit) {
        unsigned c = (unsigned char)buf[i];
        if ((c >= 0x20 && c != 0x7f) || c == '\t') { /* the common case */
            i++;
            continue;
        }
        if (c != '\r') return WSCH_ERR_HTTP; /* a bare LF or another control byte */
        if (i + 1 == limit) break;          /* its LF has not arrived yet */
        if (buf[i + 1] != '\n') return WSCH_ERR_HTTP;
        i += 2;
        if (i >= 4 && buf[i - 4] == '\r' && buf[i - 3] == '\n') {
            *head_len = i;
            return WSCH_OK;
        }
    }
    /* The end would have to lie past max_bytes. */
    if (len >= max_bytes) return WSCH_ERR_HEADER_TOO_LARGE;
    return WSCH_INCOMPLETE;
}

/* --- head parser: runs once, over a head the scanner delimited ----------- */

/* The scanner proved b[end-4..end) is CRLF CRLF and no CR lacks its LF, so
   every loop below stops at a CR before end; the bounds are checked anyway. */

/* "HTTP/1.d" at *pos. */
WSCH__PRIVATE int wsch__h_parse_http_version(const char *b, size_t *pos, size_t end, int *minor) {
    size_t p = *pos;
    if (end - p < 8 || b[p] != 'H' || b[p + 1] != 'T' || b[p + 2] != 'T' || b[p + 3] != 'P' || b[p + 4] != '/' ||
        !wsch__h_is_digit((unsigned char)b[p + 5]) || b[p + 6] != '.' || !wsch__h_is_digit((unsigned char)b[p + 7]))
        return WSCH_ERR_HTTP;
    if (b[p + 5] != '1') return WSCH_ERR_HTTP_VERSION;
    *minor = b[p + 7] - '0';
    *pos = p + 8;
    return WSCH_OK;
}

WSCH__PRIVATE int wsch__h_parse_crlf(const char *b, size_t *pos, size_t end) {
    if (end - *pos < 2 || b[*pos] != '\r' || b[*pos + 1] != '\n') return WSCH_ERR_HTTP;
    *pos += 2;
    return WSCH_OK;
}


/* Header lines from pos up to and including the blank line that ends at end. */
WSCH__PRIVATE int wsch__h_parse_fields(const char *b, size_t pos, size_t end, wsch_http_header *hs, size_t *count) {
    size_t n = 0;
    while (pos < end && b[pos] != '\r') {
        size_t name_start = pos, name_end, value_start;
        if (wsch__h_is_ows((unsigned char)b[pos])) return WSCH_ERR_HTTP; /* obs-fold */
        while (pos < end && wsch__h_is_tchar((unsigned char)b[pos])) pos++;
        name_end = pos;
        if (name_end == name_start || pos >= end || b[pos] != ':') return WSCH_ERR_HTTP;
        pos++;
        while (pos < end && wsch__h_is_ows((unsigned char)b[pos])) pos++;
        value_start = pos;
        while (pos < end && wsch__h_is_field_char((unsigned char)b[pos])) pos++;
        if (wsch__h_parse_crlf(b, &pos, end) != WSCH_OK) return WSCH_ERR_HTTP;
        if (n == WSCH_MAX_HEADERS) return WSCH_ERR_HEADER_TOO_LARGE;
        hs[n].name = wsch__h_span(b + name_start, name_end - name_start);
        hs[n].value = wsch__h_trim(wsch__h_span(b + value_start, pos - 2 - value_start));
        n++;
    }
    if (wsch__h_parse_crlf(b, &pos, end) != WSCH_OK || pos != end) return WSCH_ERR_HTTP;
    *count = n;
    return WSCH_OK;
}

/* RFC 6455 4.3: 1*DIGIT without leading zeros, 0..255; anything else is -1. */
WSCH__PRIVATE int wsch__h_parse_ws_version(wsch_str v) {
    int n = 0;
    size_t i;
    if (!v.len || v.len > 3 || (v.len > 1 && v.ptr[0] == '0')) return -1;
    for (i = 0; i < v.len; i++) {
        if (!wsch__h_is_digit((unsigned char)v.ptr[i])) return -1;
        n = n * 10 + (v.ptr[i] - '0');
    }
    return n <= 255 ? n : -1;
}

/* --- server side ---------------------------------------------------------- */

WSCH_API int wsch_request_parse(const char *buf, size_t len, size_t prev_len, size_t max_bytes,
                                wsch_request *req, size_t *consumed) {
    size_t end, pos = 0, start, i;
    wsch_str version;
    int rc;
    if (!req || !consumed) return WSCH_ERR_ARG;
    rc = wsch__h_head_scan(buf, len, prev_len, max_bytes, &end);
    if (rc != WSCH_OK) return rc;
    WSCH_MEMSET(req, 0, sizeof *req);
    version = wsch__h_span(NULL, 0);

    while (pos < end && wsch__h_is_tchar((unsigned char)buf[pos])) pos++;
    if (pos == 0 || pos >= end || buf[pos] != ' ') return WSCH_ERR_HTTP;
    req->method = wsch__h_span(buf, pos);
    start = ++pos;
    while (pos < end && wsch__h_is_target_char((unsigned char)buf[pos])) pos++;
    if (pos == start || pos >= end || buf[pos] != ' ') return WSCH_ERR_HTTP;
    req->target = wsch__h_span(buf + start, pos - start);
    req->path = req->target;
    for (i = 0; i < req->target.len; i++) {
        if (req->target.ptr[i] == '?') {
            req->path.len = i;
            req->query = wsch__h_span(req->target.ptr + i + 1, req->target.len - i - 1);
            break;
        }
    }
    pos++;
    rc = wsch__h_parse_http_version(buf, &pos, end, &req->minor_version);
    if (rc == WSCH_OK) rc = wsch__h_parse_crlf(buf, &pos, end);
    if (rc == WSCH_OK) rc = wsch__h_parse_fields(buf, pos, end, req->headers, &req->num_headers);
    if (rc != WSCH_OK) return rc;

    for (i = 0; i < req->num_headers; i++) {
        const wsch_http_header *h = &req->headers[i];
        wsch_str *slot = NULL;
        switch (h->name.len) { /* one comparison per header at most */
        case 4: if (wsch__str_ieq(h->name, "Host")) slot = &req->host; break;
        case 6: if (wsch__str_ieq(h->name, "Origin")) slot = &req->origin; break;
        case 13: if (wsch__str_ieq(h->name, "Authorization")) slot = &req->authorization; break;
        case 17: if (wsch__str_ieq(h->name, "Sec-WebSocket-Key")) slot = &req->key; break;
        case 21: if (wsch__str_ieq(h->name, "Sec-WebSocket-Version")) slot = &version; break;
        default: break;
        }
        if (!slot) continue;
        if (slot->ptr) return WSCH_ERR_HTTP; /* a second copy of a single-valued field */
        *slot = h->value;
    }
    req->ws_version = wsch__h_parse_ws_version(version);
    *consumed = end;
    return WSCH_OK;
}

WSCH_API int wsch_request_check_upgrade(const wsch_request *req) {
    unsigned char raw[18]; /* 24 base64 characters decode to at most 18 bytes */
    size_t n = 0;
    if (!req) return WSCH_ERR_ARG;
    if (!wsch__h_span_eq(req->method, wsch__h_span("GET", 3))) return WSCH_ERR_METHOD;
    if (req->minor_version < 1) return WSCH_ERR_HTTP_VERSION;
    if (!req->host.len) return WSCH_ERR_MISSING_HEADER;
    if (!wsch__h_headers_have_token(req->headers, req->num_headers, "Upgrade", "websocket"))
        return WSCH_ERR_MISSING_HEADER;
    if (!wsch__h_headers_have_token(req->headers, req->num_headers, "Connection", "upgrade"))
        return WSCH_ERR_MISSING_HEADER;
    if (req->ws_version != 13) return WSCH_ERR_WS_VERSION;
    if (!req->key.ptr) return WSCH_ERR_MISSING_HEADER;
    if (req->key.len != WSCH_KEY_LEN || wsch_base64_decode(req->key.ptr, req->key.len, raw, sizeof raw, &n) != WSCH_OK ||
        n != 16)
        return WSCH_ERR_KEY;
    return WSCH_OK;
}

WSCH_API int wsch_request_error_status(int err) {
    switch (err) {
    case WSCH_ERR_WS_VERSION: return 426;
    case WSCH_ERR_METHOD: return 405;
    case WSCH_ERR_HEADER_TOO_LARGE: return 431;
    default: return 400;
    }
}

WSCH_API int wsch_header_find(const wsch_http_header *headers, size_t count, const char *name, wsch_str *value) {
    size_t i;
    if (!name || !value || (!headers && count)) return WSCH_ERR_ARG;
    for (i = 0; i < count; i++) {
        if (wsch__str_ieq(headers[i].name, name)) {
            *value = headers[i].value;
            return WSCH_OK;
        }
    }
    return WSCH_ERR_NOT_FOUND;
}

WSCH_API int wsch_header_has_token(wsch_str value, const char *token) {
    size_t pos = 0;
    wsch_str e;
    if (!token) return 0;
    while (wsch__h_list_next(value, &pos, &e))
        if (wsch__str_ieq(e, token)) return 1;
    return 0;
}

/* *iter is an offset into the values of all Sec-WebSocket-Protocol lines
   laid end to end, so resuming costs one pass over at most WSCH_MAX_HEADERS
   headers and never rescans returned entries. */
WSCH_API int wsch_request_next_protocol(const wsch_request *req, size_t *iter, wsch_str *protocol) {
    size_t skip, i, pos;
    if (!req || !iter || !protocol) return 0;
    skip = *iter;
    for (i = 0; i < req->num_headers && i < WSCH_MAX_HEADERS; i++) {
        const wsch_http_header *h = &req->headers[i];
        if (!wsch__str_ieq(h->name, "Sec-WebSocket-Protocol")) continue;
        if (skip >= h->value.len) {
            skip -= h->value.len;
            continue;
        }
        pos = skip;
        if (wsch__h_list_next(h->value, &pos, protocol)) {
            *iter += pos - skip;
            return 1;
        }
        *iter += h->value.len - skip;
        skip = 0;
    }
    return 0;
}

WSCH__PRIVATE int wsch__h_protocol_offered(const wsch_request *req, const char *protocol) {
    wsch_str want = wsch__h_span(protocol, WSCH_STRLEN(protocol)), p;
    size_t iter = 0;
    if (!wsch__h_span_is_token(want)) return 0;
    while (wsch_request_next_protocol(req, &iter, &p))
        if (wsch__h_span_eq(p, want)) return 1;
    return 0;
}

/* The 101 answer; extensions (NULL = none) is a Sec-WebSocket-Extensions
   value the connection itself agreed to (wsch_deflate_response_build). */
WSCH__PRIVATE int wsch__h_response_build(const wsch_request *req, const char *protocol, const char *extensions,
                                         const char *extra_headers, char *out, size_t cap, size_t *out_len) {
    char accept[WSCH_ACCEPT_LEN + 1];
    wsch__writer w;
    if (!req || !out_len || (!out && cap) || !req->key.len) return WSCH_ERR_ARG;
    if (protocol && !protocol[0]) protocol = NULL;
    if (protocol && !wsch__h_protocol_offered(req, protocol)) return WSCH_ERR_ARG;
    {
        static const char *const mine[] = {"Upgrade", "Connection", "Sec-WebSocket-Accept",
                                           "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", NULL};
        if (!wsch__h_header_lines_ok(extra_headers, mine)) return WSCH_ERR_ARG;
    }
    wsch_accept_key(req->key.ptr, req->key.len, accept);
    wsch__w_init(&w, out, cap);
    wsch__w_puts(&w, "HTTP/1.1 101 Switching Protocols\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: ");
    wsch__w_put(&w, accept, WSCH_ACCEPT_LEN);
    wsch__w_puts(&w, "\r\n");
    if (protocol) {
        wsch__w_header(&w, "Sec-WebSocket-Protocol", protocol);
    }
    if (extensions) wsch__w_header(&w, "Sec-WebSocket-Extensions", extensions);
    if (extra_headers) wsch__w_puts(&w, extra_headers);
    wsch__w_puts(&w, "\r\n");
    return wsch__w_finish(&w, out_len);
}

WSCH_API int wsch_response_build(const wsch_request *req, const char *protocol, const char *extra_headers,
                                 char *out, size_t cap, size_t *out_len) {
    return wsch__h_response_build(req, protocol, NULL, extra_headers, out, cap, out_len);
}

/* The one table of reason phrases: every status the library or the hub
   answers with, a class name for the rest. */
WSCH__PRIVATE const char *wsch__h_reason_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default:
        return status < 300 ? "Success" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* Does a list of "Name: value\r\n" lines that wsch__h_header_lines_ok
   accepted name the header name? */
WSCH__PRIVATE int wsch__h_header_lines_name(const char *s, const char *name) {
    size_t i = 0;
    while (s && s[i]) {
        size_t start = i;
        while (s[i] != ':') i++;
        if (wsch__str_ieq(wsch__h_span(s + start, i - start), name)) return 1;
        while (s[i] != '\n') i++;
        i++;
    }
    return 0;
}

WSCH_API int wsch_http_response_build(int status, const char *content_type, const void *body, size_t body_len,
                                      const char *extra_headers, char *out, size_t cap, size_t *out_len) {
    static const char *const mine[] = {"Content-Type", "Content-Length", "Connection", "Transfer-Encoding", NULL};
    /* Headers a status needs (RFC 9110 15.5.2, 15.5.6; RFC 6455 4.4), unless the caller gives its own. */
    static const struct { int status; const char *name, *line; } needs[] = {
        {401, "WWW-Authenticate", "WWW-Authenticate: Bearer\r\n"},
        {405, "Allow", "Allow: GET\r\n"},
        {426, "Sec-WebSocket-Version", "Sec-WebSocket-Version: 13\r\n"},
    };
    int bodyless = status == 204 || status == 304;
    const char *reason;
    size_t i;
    wsch__writer w;
    if (status < 200 || status > 599 || !out_len || (!out && cap)) return WSCH_ERR_ARG;
    if (bodyless && body_len) return WSCH_ERR_ARG;
    if (content_type && content_type[0] && !wsch__h_value_ok(content_type)) return WSCH_ERR_ARG;
    if (!wsch__h_header_lines_ok(extra_headers, mine)) return WSCH_ERR_ARG;
    if (!content_type || !content_type[0]) content_type = "text/plain; charset=utf-8";
    reason = wsch__h_reason_phrase(status);
    wsch__w_init(&w, out, cap);
    wsch__w_puts(&w, "HTTP/1.1 ");
    wsch__w_put_uint(&w, (uint64_t)status);
    wsch__w_puts(&w, " ");
    wsch__w_puts(&w, reason);
    wsch__w_puts(&w, "\r\n");
    if (!bodyless) {
        wsch__w_puts(&w, "Content-Type: ");
        wsch__w_puts(&w, content_type);
        wsch__w_puts(&w, "\r\nContent-Length: ");
        wsch__w_put_uint(&w, (uint64_t)body_len);
        wsch__w_puts(&w, "\r\n");
    }
    wsch__w_puts(&w, "Connection: close\r\n");
    for (i = 0; i < sizeof needs / sizeof needs[0]; i++)
        if (status == needs[i].status && !wsch__h_header_lines_name(extra_headers, needs[i].name))
            wsch__w_puts(&w, needs[i].line);
    if (extra_headers) wsch__w_puts(&w, extra_headers);
    wsch__w_puts(&w, "\r\n");
    if (body) wsch__w_put(&w, body, body_len);
    return wsch__w_finish(&w, out_len);
}

WSCH_API int wsch_http_error_build(int status, const char *extra_headers, char *out, size_t cap, size_t *out_len) {
    char body[48];              /* the reason and a newline */
    const char *reason;
    size_t n;
    if (status < 300 || status > 599) return WSCH_ERR_ARG;
    reason = wsch__h_reason_phrase(status);
    n = WSCH_STRLEN(reason);
    WSCH_ASSERT(n < sizeof body);
    WSCH_MEMCPY(body, reason, n);
    body[n++] = '\n';
    if (status == 304) n = 0;   /* a 304 has no body */
    return wsch_http_response_build(status, NULL, body, n, extra_headers, out, cap, out_len);
}

/* --- client side ---------------------------------------------------------- */

/* A host for the Host header: a name of unreserved characters (DNS names and
   IPv4 addresses), or an IPv6 literal with or without brackets. *bracket is
   set when the literal needs brackets added. */
WSCH__PRIVATE int wsch__h_host_ok(const char *h, int *bracket) {
    size_t i, n = WSCH_STRLEN(h), colons = 0;
    size_t from = 0, to = n;
    *bracket = 0;
    if (!n) return 0;
    if (h[0] == '[') {
        if (n < 3 || h[n - 1] != ']') return 0;
        from = 1;
        to = n - 1;
    }
    for (i = from; i < to; i++) {
        unsigned c = (unsigned char)h[i];
        if (c == ':') colons++;
        else if (!wsch__h_is_unreserved(c)) return 0;
    }
    if (from == 0 && !colons) return 1;
    /* An IPv6 literal: hex digits, ':' and '.' (an embedded IPv4 address);
       every form has at least two colons, so "name:port" is refused. */
    if (colons < 2) return 0;
    for (i = from; i < to; i++)
        if (h[i] != ':' && h[i] != '.' && wsch__h_hex_val((unsigned char)h[i]) < 0) return 0;
    *bracket = from == 0;
    return 1;
}

WSCH__PRIVATE int wsch__h_target_part_ok(const char *s) {
    size_t i;
    for (i = 0; s[i]; i++)
        if (!wsch__h_is_target_char((unsigned char)s[i])) return 0;
    return 1;
}

WSCH_API int wsch_handshake_request_build(const wsch_handshake_request_desc *d, char *out, size_t cap, size_t *out_len,
                                       char key_out[WSCH_KEY_LEN + 1]) {
    char key[WSCH_KEY_LEN + 1];
    size_t key_len = 0;
    const char *path, *query, *protocols, *origin;
    int bracket, rc;
    wsch__writer w;
    if (!d || !out_len || !key_out || (!out && cap) || !d->host) return WSCH_ERR_ARG;
    path = d->path ? d->path : "/";
    query = d->query && d->query[0] ? d->query : NULL;
    protocols = d->protocols && d->protocols[0] ? d->protocols : NULL;
    origin = d->origin && d->origin[0] ? d->origin : NULL;
    if (!wsch__h_host_ok(d->host, &bracket)) return WSCH_ERR_ARG;
    if (path[0] != '/' || !wsch__h_target_part_ok(path)) return WSCH_ERR_ARG;
    if (query && !wsch__h_target_part_ok(query)) return WSCH_ERR_ARG;
    if (protocols && !wsch__h_token_list_ok(protocols)) return WSCH_ERR_ARG;
    if (origin && !wsch__h_value_ok(origin)) return WSCH_ERR_ARG;
    if (d->extensions && d->extensions[0] && !wsch__h_value_ok(d->extensions)) return WSCH_ERR_ARG;
    {
        static const char *const mine[] = {"Host", "Upgrade", "Connection", "Sec-WebSocket-Key",
                                           "Sec-WebSocket-Version", "Origin", "Sec-WebSocket-Protocol",
                                           "Sec-WebSocket-Extensions", NULL};
        if (!wsch__h_header_lines_ok(d->extra_headers, mine)) return WSCH_ERR_ARG;
    }
    if (wsch_base64_encode(d->nonce, sizeof d->nonce, key, sizeof key, &key_len) != WSCH_OK ||
        key_len != WSCH_KEY_LEN)
        return WSCH_ERR_ARG;

    wsch__w_init(&w, out, cap);
    wsch__w_puts(&w, "GET ");
    wsch__w_puts(&w, path);
    if (query) {
        wsch__w_puts(&w, "?");
        wsch__w_puts(&w, query);
    }
    wsch__w_puts(&w, " HTTP/1.1\r\nHost: ");
    if (bracket) wsch__w_puts(&w, "[");
    wsch__w_puts(&w, d->host);
    if (bracket) wsch__w_puts(&w, "]");
    if (d->port && d->port != 80) {
        wsch__w_puts(&w, ":");
        wsch__w_put_uint(&w, d->port);
    }
    wsch__w_puts(&w, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    wsch__w_put(&w, key, WSCH_KEY_LEN);
    wsch__w_puts(&w, "\r\n");
    if (origin) {
        wsch__w_header(&w, "Origin", origin);
    }
    if (protocols) {
        wsch__w_header(&w, "Sec-WebSocket-Protocol", protocols);
    }
    if (d->extensions && d->extensions[0]) wsch__w_header(&w, "Sec-WebSocket-Extensions", d->extensions);
    wsch__w_puts(&w, "Sec-WebSocket-Version: 13\r\n");
    if (d->extra_headers) wsch__w_puts(&w, d->extra_headers);
    wsch__w_puts(&w, "\r\n");
    rc = wsch__w_finish(&w, out_len);
    if (rc == WSCH_OK) WSCH_MEMCPY(key_out, key, WSCH_KEY_LEN + 1);
    return rc;
}

WSCH_API int wsch_response_parse(const char *buf, size_t len, size_t prev_len, size_t max_bytes,
                                 wsch_response *res, size_t *consumed) {
    size_t end, pos = 0, start, i;
    int rc;
    if (!res || !consumed) return WSCH_ERR_ARG;
    rc = wsch__h_head_scan(buf, len, prev_len, max_bytes, &end);
    if (rc != WSCH_OK) return rc;
    WSCH_MEMSET(res, 0, sizeof *res);
    rc = wsch__h_parse_http_version(buf, &pos, end, &res->minor_version);
    if (rc != WSCH_OK) return rc;
    if (end - pos < 4 || buf[pos] != ' ') return WSCH_ERR_HTTP;
    for (i = 1; i <= 3; i++) {
        if (!wsch__h_is_digit((unsigned char)buf[pos + i])) return WSCH_ERR_HTTP;
        res->status = res->status * 10 + (buf[pos + i] - '0');
    }
    pos += 4;
    start = pos;
    if (pos < end && buf[pos] == ' ') {
        start = ++pos;
        while (pos < end && wsch__h_is_field_char((unsigned char)buf[pos])) pos++;
    }
    res->reason = wsch__h_span(buf + start, pos - start);
    rc = wsch__h_parse_crlf(buf, &pos, end);
    if (rc == WSCH_OK) rc = wsch__h_parse_fields(buf, pos, end, res->headers, &res->num_headers);
    if (rc != WSCH_OK) return rc;
    *consumed = end;
    return WSCH_OK;
}

/* wsch_response_check(); with extensions_judged, Sec-WebSocket-Extensions
   are left to the caller (wsch_deflate_response_check). */
WSCH__PRIVATE int wsch__h_response_check(const wsch_response *res, const char *key, const char *offered_protocols,
                                         wsch_str *protocol, int extensions_judged) {
    char expect[WSCH_ACCEPT_LEN + 1];
    wsch_str accept = wsch__h_span(NULL, 0), chosen = wsch__h_span(NULL, 0);
    size_t i, n_upgrade = 0, n_accept = 0, n_protocol = 0, n_ext = 0;
    int upgrade_ok = 0, connection_ok = 0;
    if (protocol) *protocol = chosen;
    if (!res || !key) return WSCH_ERR_ARG;
    if (res->status != 101) return WSCH_ERR_STATUS;
    for (i = 0; i < res->num_headers && i < WSCH_MAX_HEADERS; i++) {
        const wsch_http_header *h = &res->headers[i];
        if (wsch__str_ieq(h->name, "Upgrade")) {
            n_upgrade++;
            upgrade_ok = wsch__str_ieq(h->value, "websocket");
        } else if (wsch__str_ieq(h->name, "Connection")) {
            if (wsch_header_has_token(h->value, "upgrade")) connection_ok = 1;
        } else if (wsch__str_ieq(h->name, "Sec-WebSocket-Accept")) {
            n_accept++;
            accept = h->value;
        } else if (wsch__str_ieq(h->name, "Sec-WebSocket-Extensions")) {
            n_ext++;
        } else if (wsch__str_ieq(h->name, "Sec-WebSocket-Protocol")) {
            n_protocol++;
            chosen = h->value;
        }
    }
    if (n_upgrade != 1 || !upgrade_ok || !connection_ok) return WSCH_ERR_MISSING_HEADER;
    wsch_accept_key(key, WSCH_STRLEN(key), expect);
    if (n_accept != 1 || !wsch__h_span_eq(accept, wsch__h_span(expect, WSCH_ACCEPT_LEN))) return WSCH_ERR_ACCEPT;
    if (n_ext && !extensions_judged) return WSCH_ERR_EXTENSION;
    if (n_protocol > 1) return WSCH_ERR_EXTENSION;
    if (n_protocol == 1) {
        if (!wsch__h_span_is_token(chosen) || !wsch__h_list_contains(offered_protocols, chosen))
            return WSCH_ERR_EXTENSION;
        if (protocol) *protocol = chosen;
    }
    return WSCH_OK;
}

WSCH_API int wsch_response_check(const wsch_response *res, const char *key, const char *offered_protocols,
                                 wsch_str *protocol) {
    return wsch__h_response_check(res, key, offered_protocols, protocol, 0);
}

/* ---- permessage-deflate negotiation (RFC 7692 5, 7.1) -------------------- */

#define WSCH__PMD_NAME "permessage-deflate"
#define WSCH__PMD_PARAMS_MAX 8          /* more in one element: not an offer we accept */
#define WSCH__PMD_TEXT_MAX 160          /* the longest offer or answer we write is 128 bytes */

/* One element of a Sec-WebSocket-Extensions list (RFC 6455 9.1): a token,
   then `; name[=value]` parameters, the value a token or a quoted string
   whose unescaped text is a token. Values longer than 2 bytes are kept
   only as "too long": no parameter of ours has one. */
typedef struct wsch__x_elem {
    wsch_str name;
    size_t count;                       /* parameters seen (may pass WSCH__PMD_PARAMS_MAX) */
    struct {
        wsch_str name;
        char value[3];                  /* unescaped, NUL-terminated */
        uint8_t has_value, too_long;
    } params[WSCH__PMD_PARAMS_MAX];
} wsch__x_elem;

WSCH__PRIVATE void wsch__x_ows(const char **p, const char *end) {
    while (*p < end && (**p == ' ' || **p == '\t')) (*p)++;
}

WSCH__PRIVATE wsch_str wsch__x_token(const char **p, const char *end) {
    const char *start = *p;
    while (*p < end && wsch__h_is_tchar((unsigned char)**p)) (*p)++;
    return wsch__h_span(start, (size_t)(*p - start));
}

/* A parameter value at *p into out (cap 3). 0 on a syntax error. */
WSCH__PRIVATE int wsch__x_value(const char **p, const char *end, char *out, uint8_t *too_long) {
    size_t n = 0;
    if (*p < end && **p == '"') {
        for ((*p)++; *p < end && **p != '"'; (*p)++) {
            unsigned char ch = (unsigned char)**p;
            if (ch == '\\') {
                if (++*p == end) return 0;
                ch = (unsigned char)**p;
            }
            if (!wsch__h_is_tchar(ch)) return 0;    /* the unescaped value must be a token */
            if (n < 2) out[n] = (char)ch;
            n++;
        }
        if (*p == end) return 0;
        (*p)++;
    } else {
        wsch_str t = wsch__x_token(p, end);
        if (!t.len) return 0;
        n = t.len;
        if (n <= 2) WSCH_MEMCPY(out, t.ptr, n);
    }
    if (n == 0) return 0;
    *too_long = (uint8_t)(n > 2);
    out[n <= 2 ? n : 0] = '\0';
    return 1;
}

/* Parses the element at *p, leaving *p past its comma. An empty element
   has an empty name. Returns 0 on a syntax error. */
WSCH__PRIVATE int wsch__x_elem_parse(const char **p, const char *end, wsch__x_elem *e) {
    e->count = 0;
    wsch__x_ows(p, end);
    e->name = wsch__x_token(p, end);
    wsch__x_ows(p, end);
    while (e->name.len && *p < end && **p == ';') {
        wsch_str name;
        char value[3] = {0};
        uint8_t has_value = 0, too_long = 0;
        (*p)++;
        wsch__x_ows(p, end);
        name = wsch__x_token(p, end);
        if (!name.len) return 0;
        wsch__x_ows(p, end);
        if (*p < end && **p == '=') {
            (*p)++;
            wsch__x_ows(p, end);
            if (!wsch__x_value(p, end, value, &too_long)) return 0;
            has_value = 1;
            wsch__x_ows(p, end);
        }
        if (e->count < WSCH__PMD_PARAMS_MAX) {
            e->params[e->count].name = name;
            WSCH_MEMCPY(e->params[e->count].value, value, sizeof value);
            e->params[e->count].has_value = has_value;
            e->params[e->count].too_long = too_long;
        }
        e->count++;
    }
    if (*p < end && **p != ',') return 0;
    if (*p < end) (*p)++;
    return 1;
}

/* A permessage-deflate element read into values: window bits 8..15, 0 for
   a parameter without a value, -1 when absent. ok = 0: an unknown or
   repeated parameter, or a value the RFC does not allow. */
typedef struct wsch__pmd {
    int ok;
    uint8_t server_nct, client_nct;
    int server_bits, client_bits;
} wsch__pmd;

WSCH__PRIVATE int wsch__pmd_bits(const char *v) {
    /* 1*DIGIT without a leading zero, 8..15 (RFC 7692 7.1.2) */
    if (v[0] >= '8' && v[0] <= '9' && !v[1]) return v[0] - '0';
    if (v[0] == '1' && v[1] >= '0' && v[1] <= '5' && !v[2]) return 10 + (v[1] - '0');
    return -1;
}

WSCH__PRIVATE void wsch__pmd_read(const wsch__x_elem *e, wsch__pmd *o) {
    size_t i;
    o->ok = e->count <= WSCH__PMD_PARAMS_MAX;
    o->server_nct = o->client_nct = 0;
    o->server_bits = o->client_bits = -1;
    for (i = 0; o->ok && i < e->count; i++) {
        wsch_str n = e->params[i].name;
        int bits = 0;                   /* no value */
        if (e->params[i].has_value) bits = e->params[i].too_long ? -1 : wsch__pmd_bits(e->params[i].value);
        if (wsch__str_ieq(n, "server_no_context_takeover") && !o->server_nct && !e->params[i].has_value)
            o->server_nct = 1;
        else if (wsch__str_ieq(n, "client_no_context_takeover") && !o->client_nct && !e->params[i].has_value)
            o->client_nct = 1;
        else if (wsch__str_ieq(n, "server_max_window_bits") && o->server_bits == -1 && bits >= 0)
            o->server_bits = bits;
        else if (wsch__str_ieq(n, "client_max_window_bits") && o->client_bits == -1 && bits >= 0)
            o->client_bits = bits;
        else
            o->ok = 0;
    }
}

/* Calls visit for each element of every Sec-WebSocket-Extensions header;
   stops at a syntax error (returns WSCH_ERR_EXTENSION) or when visit
   returns nonzero (returns that). 0 when all were visited. */
WSCH__PRIVATE int wsch__x_each(const wsch_http_header *h, size_t n, int (*visit)(const wsch__x_elem *e, void *ctx),
                               void *ctx) {
    size_t i;
    for (i = 0; i < n && i < WSCH_MAX_HEADERS; i++) {
        const char *p, *end;
        if (!wsch__str_ieq(h[i].name, "Sec-WebSocket-Extensions")) continue;
        p = h[i].value.ptr;
        end = p + h[i].value.len;
        while (p < end) {
            wsch__x_elem e;
            int r;
            if (!wsch__x_elem_parse(&p, end, &e)) return WSCH_ERR_EXTENSION;
            if (e.name.len && (r = visit(&e, ctx)) != 0) return r;
        }
    }
    return 0;
}

WSCH__PRIVATE uint8_t wsch__pmd_own_bits(uint8_t bits) { return bits ? bits : 15; }

WSCH__PRIVATE int wsch__pmd_desc_ok(const wsch_deflate_desc *d) {
    return (!d->server_max_window_bits || (d->server_max_window_bits >= 9 && d->server_max_window_bits <= 15)) &&
           (!d->client_max_window_bits || (d->client_max_window_bits >= 9 && d->client_max_window_bits <= 15)) &&
           d->mem_level <= 9;
}

WSCH_API int wsch_deflate_offer_build(const wsch_deflate_desc *d, char *out, size_t cap, size_t *out_len) {
    wsch__writer w;
    if (!d || !out_len || (!out && cap) || !wsch__pmd_desc_ok(d)) return WSCH_ERR_ARG;
    wsch__w_init(&w, out, cap);
    wsch__w_puts(&w, WSCH__PMD_NAME);
    if (d->server_no_context_takeover) wsch__w_puts(&w, "; server_no_context_takeover");
    if (d->client_no_context_takeover) wsch__w_puts(&w, "; client_no_context_takeover");
    if (wsch__pmd_own_bits(d->server_max_window_bits) < 15) {
        wsch__w_puts(&w, "; server_max_window_bits=");
        wsch__w_put_uint(&w, d->server_max_window_bits);
    }
    /* Always offered: it lets the server ask for a smaller window. */
    wsch__w_puts(&w, "; client_max_window_bits");
    if (wsch__pmd_own_bits(d->client_max_window_bits) < 15) {
        wsch__w_puts(&w, "=");
        wsch__w_put_uint(&w, d->client_max_window_bits);
    }
    return wsch__w_finish(&w, out_len);
}

WSCH_API int wsch_deflate_response_build(const wsch_deflate_params *a, char *out, size_t cap, size_t *out_len) {
    wsch__writer w;
    if (!a || !out_len || (!out && cap) || !a->enabled) return WSCH_ERR_ARG;
    wsch__w_init(&w, out, cap);
    wsch__w_puts(&w, WSCH__PMD_NAME);
    if (a->server_no_context_takeover) wsch__w_puts(&w, "; server_no_context_takeover");
    if (a->client_no_context_takeover) wsch__w_puts(&w, "; client_no_context_takeover");
    if (a->server_max_window_bits < 15) {
        wsch__w_puts(&w, "; server_max_window_bits=");
        wsch__w_put_uint(&w, a->server_max_window_bits);
    }
    if (a->client_max_window_bits < 15) {
        wsch__w_puts(&w, "; client_max_window_bits=");
        wsch__w_put_uint(&w, a->client_max_window_bits);
    }
    return wsch__w_finish(&w, out_len);
}

typedef struct wsch__pmd_ctx {
    const wsch_deflate_desc *d;
    wsch_deflate_params *agreed;
    size_t seen;
} wsch__pmd_ctx;

/* Server: accepts the element if it can be honoured (returns 1). */
WSCH__PRIVATE int wsch__pmd_try_offer(const wsch__x_elem *e, void *ctx) {
    const wsch__pmd_ctx *x = (const wsch__pmd_ctx *)ctx;
    uint8_t own_server = wsch__pmd_own_bits(x->d->server_max_window_bits);
    uint8_t own_client = wsch__pmd_own_bits(x->d->client_max_window_bits);
    wsch_deflate_params *a = x->agreed;
    wsch__pmd o;
    if (!wsch__str_ieq(e->name, WSCH__PMD_NAME)) return 0;
    wsch__pmd_read(e, &o);
    /* server_max_window_bits needs a value, and 8 cannot be honoured */
    if (!o.ok || o.server_bits == 0 || (o.server_bits > 0 && o.server_bits < 9)) return 0;
    a->enabled = 1;
    a->server_no_context_takeover = (uint8_t)(o.server_nct || x->d->server_no_context_takeover);
    a->client_no_context_takeover = (uint8_t)(o.client_nct || x->d->client_no_context_takeover);
    /* Named only when offered: otherwise the client inflates with 15,
       which takes any smaller window too. */
    a->server_max_window_bits = 15;
    if (o.server_bits > 0) a->server_max_window_bits = (uint8_t)(o.server_bits < own_server ? o.server_bits : own_server);
    a->client_max_window_bits = 15;
    if (o.client_bits >= 0) {
        int limit = o.client_bits > 0 ? o.client_bits : 15;
        if (own_client < limit) a->client_max_window_bits = own_client;
    }
    return 1;
}

WSCH_API int wsch_deflate_negotiate(const wsch_request *req, const wsch_deflate_desc *d, wsch_deflate_params *agreed) {
    wsch__pmd_ctx x;
    if (!agreed) return 0;
    WSCH_MEMSET(agreed, 0, sizeof *agreed);
    if (!req || !d || !d->codec || !wsch__pmd_desc_ok(d)) return 0;
    x.d = d;
    x.agreed = agreed;
    x.seen = 0;
    if (wsch__x_each(req->headers, req->num_headers, wsch__pmd_try_offer, &x) == 1) return 1;
    WSCH_MEMSET(agreed, 0, sizeof *agreed);
    return 0;
}

/* Client: judges the one element the server may answer with (returns a
   negative error, or 0 to go on). */
WSCH__PRIVATE int wsch__pmd_check_answer(const wsch__x_elem *e, void *ctx) {
    wsch__pmd_ctx *x = (wsch__pmd_ctx *)ctx;
    uint8_t own_server = wsch__pmd_own_bits(x->d->server_max_window_bits);
    uint8_t own_client = wsch__pmd_own_bits(x->d->client_max_window_bits);
    wsch_deflate_params *a = x->agreed;
    wsch__pmd o;
    if (x->seen++ || !wsch__str_ieq(e->name, WSCH__PMD_NAME)) return WSCH_ERR_EXTENSION;
    wsch__pmd_read(e, &o);
    if (!o.ok || o.server_bits == 0 || o.client_bits == 0) return WSCH_ERR_EXTENSION;
    if (o.server_bits > own_server || o.client_bits > own_client) return WSCH_ERR_EXTENSION;
    /* A server accepts what was asked of it only by naming it (RFC 7692
       7.1.1.1, 7.1.2.1): an answer without it did not accept this offer. */
    if ((x->d->server_no_context_takeover && !o.server_nct) || (own_server < 15 && o.server_bits < 0))
        return WSCH_ERR_EXTENSION;
    a->enabled = 1;
    a->server_no_context_takeover = o.server_nct;
    a->client_no_context_takeover = (uint8_t)(o.client_nct || x->d->client_no_context_takeover);
    a->server_max_window_bits = (uint8_t)(o.server_bits > 0 ? o.server_bits : 15);
    a->client_max_window_bits = (uint8_t)(o.client_bits > 0 ? o.client_bits : own_client);
    return 0;
}

WSCH_API int wsch_deflate_response_check(const wsch_response *res, const wsch_deflate_desc *d,
                                         wsch_deflate_params *agreed) {
    wsch__pmd_ctx x;
    size_t i, n = 0;
    int rc;
    if (!res || !agreed) return WSCH_ERR_ARG;
    WSCH_MEMSET(agreed, 0, sizeof *agreed);
    for (i = 0; i < res->num_headers && i < WSCH_MAX_HEADERS; i++)
        if (wsch__str_ieq(res->headers[i].name, "Sec-WebSocket-Extensions")) n++;
    if (!n) return WSCH_OK;
    if (!d || !d->codec || !wsch__pmd_desc_ok(d)) return WSCH_ERR_EXTENSION;  /* nothing was offered */
    x.d = d;
    x.agreed = agreed;
    x.seen = 0;
    rc = wsch__x_each(res->headers, res->num_headers, wsch__pmd_check_answer, &x);
    /* a syntax error, a bad element, or headers with no element at all */
    if (rc != 0 || !agreed->enabled) {
        WSCH_MEMSET(agreed, 0, sizeof *agreed);
        return WSCH_ERR_EXTENSION;
    }
    return WSCH_OK;
}

/* --- URLs and query strings ---------------------------------------------- */

/* Path (and, with query set, query) characters of s[from..to): pchar, '/',
   '?' in a query, and complete %XX escapes. */
WSCH__PRIVATE int wsch__h_url_part_ok(const char *s, size_t from, size_t to, int query) {
    size_t i;
    for (i = from; i < to; i++) {
        unsigned c = (unsigned char)s[i];
        if (c == '%') {
            if (to - i < 3 || wsch__h_hex_val((unsigned char)s[i + 1]) < 0 ||
                wsch__h_hex_val((unsigned char)s[i + 2]) < 0)
                return 0;
            i += 2;
        } else if (!wsch__h_is_pchar(c) && c != '/' && !(query && c == '?')) {
            return 0;
        }
    }
    return 1;
}

/* host[:port] of a URL. */
WSCH__PRIVATE int wsch__h_parse_authority(wsch_str a, wsch_url *u) {
    size_t i = 0, start;
    unsigned long port = 0;
    if (a.len && a.ptr[0] == '[') {
        size_t colons = 0;
        for (i = 1; i < a.len && a.ptr[i] != ']'; i++) {
            if (a.ptr[i] == ':') colons++;
            else if (a.ptr[i] != '.' && wsch__h_hex_val((unsigned char)a.ptr[i]) < 0) return WSCH_ERR_URL;
        }
        if (i >= a.len || colons < 2) return WSCH_ERR_URL;
        u->host = wsch__h_span(a.ptr + 1, i - 1);
        i++;
    } else {
        while (i < a.len && a.ptr[i] != ':') {
            if (!wsch__h_is_unreserved((unsigned char)a.ptr[i])) return WSCH_ERR_URL; /* '@' (userinfo) lands here */
            i++;
        }
        if (i == 0) return WSCH_ERR_URL;
        u->host = wsch__h_span(a.ptr, i);
    }
    if (i == a.len) return WSCH_OK;
    if (a.ptr[i] != ':') return WSCH_ERR_URL;
    start = ++i;
    for (; i < a.len; i++) {
        if (!wsch__h_is_digit((unsigned char)a.ptr[i]) || i - start >= 5) return WSCH_ERR_URL;
        port = port * 10u + (unsigned long)(a.ptr[i] - '0');
    }
    if (i == start || port == 0 || port > 65535u) return WSCH_ERR_URL;
    u->port = (uint16_t)port;
    return WSCH_OK;
}

WSCH_API int wsch_url_parse(const char *url, size_t len, wsch_url *u) {
    size_t pos = 0, start, i;
    int rc;
    if (!u || (!url && len)) return WSCH_ERR_ARG;
    WSCH_MEMSET(u, 0, sizeof *u);
    /* Whitespace, controls, non-ASCII and '#' (fragments, RFC 6455 3) are
       invalid anywhere in a WebSocket URL. */
    for (i = 0; i < len; i++)
        if (!wsch__h_is_target_char((unsigned char)url[i])) return WSCH_ERR_URL;
    while (pos < len && url[pos] != ':') pos++;
    u->scheme = wsch__h_span(url, pos);
    if (wsch__str_ieq(u->scheme, "ws")) {
        u->port = 80;
    } else if (wsch__str_ieq(u->scheme, "wss")) {
        u->port = 443;
        u->secure = 1;
    } else {
        return WSCH_ERR_URL;
    }
    if (len - pos < 3 || url[pos + 1] != '/' || url[pos + 2] != '/') return WSCH_ERR_URL;
    start = pos += 3;
    while (pos < len && url[pos] != '/' && url[pos] != '?') pos++;
    rc = wsch__h_parse_authority(wsch__h_span(url + start, pos - start), u);
    if (rc != WSCH_OK) return rc;
    start = pos;
    while (pos < len && url[pos] != '?') pos++;
    if (!wsch__h_url_part_ok(url, start, pos, 0)) return WSCH_ERR_URL;
    u->path = pos > start ? wsch__h_span(url + start, pos - start) : wsch__h_span("/", 1);
    if (pos < len) {
        if (!wsch__h_url_part_ok(url, pos + 1, len, 1)) return WSCH_ERR_URL;
        u->query = wsch__h_span(url + pos + 1, len - pos - 1);
    }
    return WSCH_OK;
}

/* Next decoded byte of form-encoded s from *i: 1 with *c, 0 at the end, -1
   on a bad or truncated escape. */
WSCH__PRIVATE int wsch__h_form_next(wsch_str s, size_t *i, unsigned *c) {
    unsigned ch;
    if (*i >= s.len) return 0;
    ch = (unsigned char)s.ptr[*i];
    if (ch == '%') {
        int hi, lo;
        if (s.len - *i < 3) return -1;
        hi = wsch__h_hex_val((unsigned char)s.ptr[*i + 1]);
        lo = wsch__h_hex_val((unsigned char)s.ptr[*i + 2]);
        if (hi < 0 || lo < 0) return -1;
        *c = (unsigned)(hi * 16 + lo);
        *i += 3;
        return 1;
    }
    *c = ch == '+' ? ' ' : ch;
    (*i)++;
    return 1;
}

/* Does form-encoded name decode to exactly key? */
WSCH__PRIVATE int wsch__h_form_key_is(wsch_str name, const char *key) {
    size_t i = 0, k = 0;
    unsigned c;
    int r;
    while ((r = wsch__h_form_next(name, &i, &c)) > 0) {
        if (key[k] == '\0' || (unsigned char)key[k] != c) return 0;
        k++;
    }
    return r == 0 && key[k] == '\0';
}

WSCH_API int wsch_query_get(wsch_str query, const char *key, char *out, size_t cap, size_t *out_len) {
    size_t pos = 0, i;
    unsigned c;
    int r;
    if (!key || !out_len || (!out && cap) || (!query.ptr && query.len)) return WSCH_ERR_ARG;
    /* A malformed query is refused whole, whichever key is asked for. */
    i = 0;
    while ((r = wsch__h_form_next(query, &i, &c)) != 0)
        if (r < 0) return WSCH_ERR_URL;
    while (pos < query.len) {
        size_t start = pos, stop, eq;
        wsch_str name, value;
        wsch__writer w;
        while (pos < query.len && query.ptr[pos] != '&') pos++;
        stop = pos;
        if (pos < query.len) pos++; /* the '&' */
        if (stop == start) continue; /* "&&" */
        for (eq = start; eq < stop && query.ptr[eq] != '='; eq++) {}
        name = wsch__h_span(query.ptr + start, eq - start);
        value = eq < stop ? wsch__h_span(query.ptr + eq + 1, stop - eq - 1) : wsch__h_span(query.ptr + stop, 0);
        if (!wsch__h_form_key_is(name, key)) continue;
        wsch__w_init(&w, out, cap);
        i = 0;
        while (wsch__h_form_next(value, &i, &c) > 0) {
            char ch = (char)c;
            if (c == 0) return WSCH_ERR_URL;
            wsch__w_put(&w, &ch, 1);
        }
        return wsch__w_finish(&w, out_len);
    }
    return WSCH_ERR_NOT_FOUND;
}

/* src[0..len) percent-encoded (wsch_percent_encode's rules) into w. */
WSCH__PRIVATE void wsch__h_put_percent(wsch__writer *w, const char *src, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned c = (unsigned char)src[i];
        if (wsch__h_is_unreserved(c)) {
            wsch__w_put(w, src + i, 1);
        } else {
            char esc[3];
            esc[0] = '%';
            esc[1] = hex[c >> 4];
            esc[2] = hex[c & 15u];
            wsch__w_put(w, esc, 3);
        }
    }
}

WSCH_API int wsch_percent_encode(const char *src, size_t len, char *out, size_t cap, size_t *out_len) {
    wsch__writer w;
    if (!out_len || (!src && len) || (!out && cap)) return WSCH_ERR_ARG;
    wsch__w_init(&w, out, cap);
    wsch__h_put_percent(&w, src, len);
    return wsch__w_finish(&w, out_len);
}

/* RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
WSCH__PRIVATE int wsch__h_token68_ok(wsch_str s) {
    size_t i = 0;
    while (i < s.len && (wsch__h_is_unreserved((unsigned char)s.ptr[i]) || s.ptr[i] == '+' || s.ptr[i] == '/')) i++;
    if (i == 0) return 0;
    while (i < s.len && s.ptr[i] == '=') i++;
    return i == s.len;
}

WSCH_API int wsch_request_token(const wsch_request *req, char *out, size_t cap, size_t *out_len,
                                wsch_token_source *source) {
    wsch_str v, p;
    size_t iter = 0, i = 0;
    int rc;
    if (source) *source = WSCH_TOKEN_NONE;
    if (!req || !out_len || (!out && cap)) return WSCH_ERR_ARG;

    v = req->authorization;
    while (i < v.len && v.ptr[i] != ' ') i++;
    if (v.len && wsch__str_ieq(wsch__h_span(v.ptr, i), "Bearer")) {
        while (i < v.len && v.ptr[i] == ' ') i++;
        p = wsch__h_span(v.ptr + i, v.len - i);
        if (!wsch__h_token68_ok(p)) return WSCH_ERR_HTTP;
        rc = wsch__h_copy_out(p, out, cap, out_len);
        if (rc == WSCH_OK && source) *source = WSCH_TOKEN_AUTHORIZATION;
        return rc;
    }

    while (wsch_request_next_protocol(req, &iter, &p)) {
        if (p.len <= 7 || !wsch__str_ieq(wsch__h_span(p.ptr, 7), "bearer.")) continue;
        p = wsch__h_span(p.ptr + 7, p.len - 7);
        if (!wsch__h_span_is_token(p)) return WSCH_ERR_HTTP;
        rc = wsch__h_copy_out(p, out, cap, out_len);
        if (rc == WSCH_OK && source) *source = WSCH_TOKEN_PROTOCOL;
        return rc;
    }

    rc = wsch_query_get(req->query, "token", out, cap, out_len);
    if (rc == WSCH_OK && *out_len == 0) return WSCH_ERR_NOT_FOUND;
    if (rc == WSCH_OK && source) *source = WSCH_TOKEN_QUERY;
    return rc;
}
// >>conn
#ifndef WS_CHANNEL_NO_CONN
/* Bytes of a frame copied through the stack on their way to send(): a small
   frame leaves in one call, a masked one is masked in pieces of this size. */
#ifndef WSCH_SEND_CHUNK
#define WSCH_SEND_CHUNK 2048
#endif

/* Stack bytes in which wsch_conn_feed() gathers the frames its callbacks
   send (echoes, pongs, replies), so a read that brings many messages leaves
   in one send() call. 0 turns the gathering off. */
#ifndef WSCH_CORK_BYTES
#define WSCH_CORK_BYTES 16384
#endif
#if WSCH_CORK_BYTES < 0 || WSCH_CORK_BYTES > 1048576
#error "WSCH_CORK_BYTES must be between 0 and 1 MiB"
#endif

/* Queue entries of shared frames a wsch_budget keeps for reuse, at most
   (each 4 pointers). */
#ifndef WSCH_BUDGET_SPARES
#define WSCH_BUDGET_SPARES 16384
#endif

/* The buffer in which pieces are copied together without send_gather; a
   piece this large or larger is sent on its own. */
#define WSCH__COPY_BYTES (WSCH_CORK_BYTES > 0 ? WSCH_CORK_BYTES : 1)

/* One queued run of unsent bytes: a private copy (data follows the struct) or
   a reference into a shared broadcast frame. */
typedef struct wsch__chunk {
    struct wsch__chunk *next;
    wsch_shared *shared;
    const unsigned char *data;      /* next unsent byte */
    size_t len;                     /* unsent bytes left */
} wsch__chunk;

struct wsch_shared {
    size_t refs;
    size_t size;                    /* whole frame */
    size_t header_len;
    wsch_allocator allocator;
    struct wsch_shared *deflated;   /* the compressed copy (RSV1), or NULL */
    int window_bits;                /* a compressed copy: its window; -1: compression tried, no copy */
    /* the frame bytes follow */
};

/* permessage-deflate on one connection, allocated when agreed. Streams are
   made when first needed; without context takeover they live only while
   one message is processed, so an idle connection holds none. */
typedef struct wsch__deflate {
    wsch_deflate_params agreed;
    uint8_t tx_bits, rx_bits;       /* our compressor's window, the peer's */
    uint8_t tx_fresh, rx_fresh;     /* no context takeover: a stream per message */
    void *tx, *rx;
} wsch__deflate;

/* Set on the opcode given to wsch__c_write_frame: the frame starts a
   compressed message (RSV1, RFC 7692 6). */
#define WSCH__C_RSV1 0x100u

/* State kept only during the opening handshake, freed once open. */
typedef struct wsch__handshake {
    char *buf;
    size_t len, cap;
    char key[WSCH_KEY_LEN + 1];     /* client: the key we sent */
    uint32_t retry_after_s;         /* client: a refusal's Retry-After + 1; 0 = none */
} wsch__handshake;

enum {
    WSCH__F_CLOSE_SENT   = 1u << 0,
    WSCH__F_CLOSE_RECV   = 1u << 1,
    WSCH__F_FAILED       = 1u << 2,  /* we failed the connection: ignore input */
    WSCH__F_SHUTDOWN     = 1u << 3,  /* close the transport once the queue drains */
    WSCH__F_DESTROYED    = 1u << 4,  /* destroy requested inside a callback */
    WSCH__F_TIMER_HS     = 1u << 5,  /* handshake timer armed */
    WSCH__F_TIMER_CLOSE  = 1u << 6,  /* close timer armed */
    WSCH__F_CREATING     = 1u << 7   /* inside wsch_conn_create: no events yet */
};

struct wsch_conn {
    const wsch_conn_desc *desc;     /* borrowed */
    void *user;
    uint8_t state;                  /* wsch_state */
    uint8_t flags;
    uint8_t depth;                  /* nesting of public calls, for a deferred destroy */
    /* frame being decoded */
    uint8_t hdr_len;                /* header bytes buffered across feeds */
    uint8_t in_frame;               /* header decoded, payload pending */
    uint8_t frame_opcode;
    uint8_t frame_fin;
    uint8_t mask_pos;
    uint8_t msg_opcode;             /* data message being reassembled, 0 = none */
    uint8_t out_opcode;             /* data message being sent in fragments, 0 = none */
    uint8_t ctrl_len;               /* control payload buffered; after a close, the reason */
    uint8_t msg_deflated;           /* the message being received is compressed */
    uint16_t close_code;            /* peer's code, or ours on failure */
    uint16_t http_status;           /* of the handshake answer, received or sent */
    int fail_err;
    unsigned char hdr[WSCH_FRAME_HEADER_MAX];
    unsigned char mask_key[4];
    uint64_t frame_left;            /* payload bytes of this frame still to come */
    wsch_utf8 utf8;                 /* text message validation across frames and feeds */
    uint32_t msg_len, msg_cap;      /* at most max_message */
    unsigned char *msg;             /* reassembly buffer, only when a message spans feeds */
    wsch__chunk *out_head, *out_tail;
    wsch__chunk *pong;              /* queued pong not yet started: the next ping rewrites it */
    size_t out_bytes;               /* output memory held: queued (bookkeeping included) and corked */
    unsigned char *cork;            /* the outermost feed's stack buffer, or NULL */
    uint32_t cork_len;
    /* The limits every frame and send checks, resolved once at create (the
       handshake's and the close timeout are read from the desc when used). */
    uint32_t max_frame, max_message, max_outbound;
    wsch__handshake *hs;
    wsch__deflate *z;               /* permessage-deflate, when agreed */
    char *protocol;                 /* NUL-terminated, or NULL */
    unsigned char ctrl[WSCH_CONTROL_PAYLOAD_MAX];
    uint8_t flush_asked;            /* gathering: flush_later() called, writable() not yet */
};




/* A limit as the conn keeps it: at most 4 GiB - 1 (see wsch_limits). */
WSCH__PRIVATE uint32_t wsch__c_limit32(size_t v, size_t def) {
    v = wsch__or(v, def);
    return v > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)v;
}

WSCH__PRIVATE void wsch__c_timer(wsch_conn *c, unsigned id, unsigned flag, uint32_t ms) {
    if (!c->desc->effects.timer_set) return;
    c->desc->effects.timer_set(id, ms, c->user);
    c->flags = (uint8_t)(c->flags | flag);
}

WSCH__PRIVATE void wsch__c_untimer(wsch_conn *c, unsigned id, unsigned flag) {
    if (!(c->flags & flag)) return;
    c->flags = (uint8_t)(c->flags & ~flag);
    if (c->desc->effects.timer_cancel) c->desc->effects.timer_cancel(id, c->user);
}

WSCH__PRIVATE void wsch__c_shared_unref(wsch_shared *s) {
    if (s && --s->refs == 0) {
        wsch_allocator a = s->allocator;
        wsch__c_shared_unref(s->deflated);
        wsch__free(&a, s);
    }
}

/* --- output -------------------------------------------------------------- */

WSCH__PRIVATE void wsch__c_finish(wsch_conn *c);

/* What the transport said to len bytes offered: how many it took. A hard
   error ends the connection here (1006, WSCH_ERR_TRANSPORT); the caller
   sees the state CLOSED and stops. */
WSCH__PRIVATE size_t wsch__c_took(wsch_conn *c, size_t n, size_t len) {
    if (n != WSCH_SEND_ERROR) return n < len ? n : len;
    c->flags = (uint8_t)(c->flags | WSCH__F_FAILED | WSCH__F_CLOSE_SENT);
    c->close_code = WSCH_CLOSE_ABNORMAL;
    c->fail_err = WSCH_ERR_TRANSPORT;
    wsch__c_finish(c);
    return 0;
}

WSCH__PRIVATE int wsch__c_budget_room(const wsch_conn *c, size_t total);

/* One send while nothing is queued: how many bytes left. Gathering, none
   do: they wait in the queue for the flush the caller was asked for;
   unless the shared budget has no room for them, which refuses only
   output queued behind a full socket: then they are written now. */
WSCH__PRIVATE size_t wsch__c_send(wsch_conn *c, const void *data, size_t len) {
    const wsch_effects *fx = &c->desc->effects;
    if (fx->flush_later && wsch__c_budget_room(c, sizeof(wsch__chunk) + len) &&
        (c->flush_asked || fx->flush_later(c->user) == 0)) {
        c->flush_asked = 1;
        return 0;
    }
    return wsch__c_took(c, fx->send(data, len, c->user), len);
}

/* Pieces written through send alone: as many as fit copied into one
   buffer a call, a piece of WSCH__COPY_BYTES or more on its own. Returns
   what send_gather would: bytes taken in order, or WSCH_SEND_ERROR. */
WSCH__PRIVATE size_t wsch__send_copied(size_t (*send)(const void *, size_t, void *), const wsch_iovec *parts,
                                       size_t count, void *user) {
    unsigned char buf[WSCH__COPY_BYTES];
    size_t i = 0, taken = 0;
    while (i < count) {
        const void *out = parts[i].base;
        size_t fill = parts[i++].len, n;
        if (fill < sizeof buf && i < count && parts[i].len <= sizeof buf - fill) {
            WSCH_MEMCPY(buf, out, fill);
            for (; i < count && parts[i].len <= sizeof buf - fill; i++) {
                WSCH_MEMCPY(buf + fill, parts[i].base, parts[i].len);
                fill += parts[i].len;
            }
            out = buf;
        }
        n = send(out, fill, user);
        if (n == WSCH_SEND_ERROR) return n;
        taken += n;
        if (n < fill) break;
    }
    return taken;
}

/* The largest control frame: the one size a queued pong is given, so each
   newer ping can rewrite it in place. */
#define WSCH__PONG_CAP (2u + 4u + WSCH_CONTROL_PAYLOAD_MAX)

/* What a queued chunk holds of the output budget: its unsent bytes and its
   own bookkeeping; the rewritable pong, its whole capacity. */
WSCH__PRIVATE size_t wsch__c_chunk_cost(const wsch_conn *c, const wsch__chunk *ch) {
    return sizeof *ch + (ch == c->pong ? WSCH__PONG_CAP : ch->len);
}

/* Counts cost bytes of queued output, against the shared budget too unless
   `pass` (close frames, handshake text, a feed's gathered output). */
WSCH__PRIVATE int wsch__c_hold(wsch_conn *c, size_t cost, int pass) {
    wsch_budget *b = c->desc->limits.outbound_budget;
    if (b) {
        if (!pass && b->limit && (b->used > b->limit || cost > b->limit - b->used)) return WSCH_ERR_QUEUE_FULL;
        b->used += cost;
    }
    c->out_bytes += cost;
    return WSCH_OK;
}

WSCH__PRIVATE void wsch__c_unhold(wsch_conn *c, size_t cost) {
    wsch_budget *b = c->desc->limits.outbound_budget;
    if (b) b->used -= cost;
    c->out_bytes -= cost;
}

/* A queue entry for a shared frame: one the budget kept, when it has one. */
WSCH__PRIVATE wsch__chunk *wsch__c_ref_chunk(wsch_conn *c) {
    wsch_budget *b = c->desc->limits.outbound_budget;
    wsch__chunk *ch;
    if (!b || !b->spares) return (wsch__chunk *)wsch__alloc(&c->desc->allocator, sizeof *ch);
    ch = (wsch__chunk *)b->spares;
    b->spares = ch->next;
    b->spare_count--;
    return ch;
}

/* Unlinks nothing: frees a chunk already taken off the queue (an entry
   for a shared frame goes back to the budget's spares while there is room). */
WSCH__PRIVATE void wsch__c_free_chunk(wsch_conn *c, wsch__chunk *ch) {
    wsch_budget *b = c->desc->limits.outbound_budget;
    wsch__c_unhold(c, wsch__c_chunk_cost(c, ch));
    if (ch == c->pong) c->pong = NULL;
    if (ch->shared && b && b->spare_count < WSCH_BUDGET_SPARES) {
        wsch__c_shared_unref(ch->shared);
        ch->next = (wsch__chunk *)b->spares;
        b->spares = ch;
        b->spare_count++;
        return;
    }
    wsch__c_shared_unref(ch->shared);
    wsch__free(&c->desc->allocator, ch);
}

WSCH_API void wsch_budget_free_spares(wsch_budget *b, const wsch_allocator *a) {
    if (!b || !a) return;
    while (b->spares) {
        wsch__chunk *ch = (wsch__chunk *)b->spares;
        b->spares = ch->next;
        wsch__free(a, ch);
    }
    b->spare_count = 0;
}

WSCH__PRIVATE void wsch__c_link_chunk(wsch_conn *c, wsch__chunk *ch) {
    ch->next = NULL;
    if (c->out_tail) c->out_tail->next = ch;
    else c->out_head = ch;
    c->out_tail = ch;
}

/* Encodes the header of an outgoing frame; a client masks it with a fresh
   key (*mask points at it), a server does not (*mask is NULL). */
WSCH__PRIVATE size_t wsch__c_frame_header(wsch_conn *c, unsigned opcode, int fin, size_t len,
                                         unsigned char hdr[WSCH_FRAME_HEADER_MAX], wsch_frame_header *h,
                                         const unsigned char **mask) {
    WSCH_MEMSET(h, 0, sizeof *h);
    h->opcode = (uint8_t)(opcode & 0x0Fu);
    h->rsv = (uint8_t)(opcode & WSCH__C_RSV1 ? 4u : 0u);
    h->fin = (uint8_t)(fin ? 1 : 0);
    h->payload_len = len;
    *mask = NULL;
    if (c->desc->role == WSCH_ROLE_CLIENT) {
        h->masked = 1;
        c->desc->effects.random_bytes(h->mask_key, 4, c->user);
        *mask = h->mask_key;
    }
    return wsch_frame_header_encode(hdr, h);
}

/* Queues the bytes of a frame from offset `done` on: the header tail, then
   the payload, masked on the way when mask is not NULL. One allocation.
   `pass` as for wsch__c_hold. */
WSCH__PRIVATE int wsch__c_enqueue(wsch_conn *c, const unsigned char *hdr, size_t hlen, const unsigned char *payload,
                                size_t plen, const unsigned char *mask, size_t done, int pass) {
    size_t total = hlen + plen, n = total - done, off;
    wsch__chunk *ch;
    unsigned char *dst;
    if (wsch__c_hold(c, sizeof *ch + n, pass) != WSCH_OK) return WSCH_ERR_QUEUE_FULL;
    ch = (wsch__chunk *)wsch__alloc(&c->desc->allocator, sizeof *ch + n);
    if (!ch) {
        wsch__c_unhold(c, sizeof *ch + n);
        return WSCH_ERR_NOMEM;
    }
    dst = (unsigned char *)(ch + 1);
    ch->shared = NULL;
    ch->data = dst;
    ch->len = n;
    if (done < hlen) {
        WSCH_MEMCPY(dst, hdr + done, hlen - done);
        dst += hlen - done;
        done = hlen;
    }
    off = done - hlen;
    if (plen > off) {
        WSCH_MEMCPY(dst, payload + off, plen - off);
        if (mask) wsch_mask(dst, plen - off, mask, off);
    }
    wsch__c_link_chunk(c, ch);
    return WSCH_OK;
}

/* A frame that left in part and could not be queued has cut the byte
   stream: nothing sensible can follow it, so the connection ends here. */
WSCH__PRIVATE int wsch__c_queue_or_cut(wsch_conn *c, int rc, size_t sent) {
    if (rc != WSCH_OK && sent) {
        c->flags = (uint8_t)(c->flags | WSCH__F_FAILED | WSCH__F_CLOSE_SENT);
        c->close_code = WSCH_CLOSE_ABNORMAL;
        c->fail_err = rc;
        wsch__c_finish(c);
    }
    return rc;
}

/* Sends what the cork gathered; what send() does not take is queued. */
WSCH__PRIVATE int wsch__c_uncork(wsch_conn *c) {
    size_t n, len = c->cork_len;
    if (!len) return WSCH_OK;
    c->cork_len = 0;
    c->out_bytes -= len;
    n = wsch__c_send(c, c->cork, len);
    if (c->state == WSCH_STATE_CLOSED) return WSCH_ERR_TRANSPORT;
    if (n >= len) return WSCH_OK;
    /* These frames were accepted by calls that returned OK: losing any of
       them cuts the stream, even if none has left yet. */
    return wsch__c_queue_or_cut(c, wsch__c_enqueue(c, NULL, 0, c->cork, len, NULL, n, 1), len);
}

WSCH__PRIVATE int wsch__c_write_queue(wsch_conn *c);

/* Room in the shared budget for total more bytes (none: room). */
WSCH__PRIVATE int wsch__c_budget_room(const wsch_conn *c, size_t total) {
    const wsch_budget *b = c->desc->limits.outbound_budget;
    return !b || !b->limit || (b->used <= b->limit && total <= b->limit - b->used);
}

/* Room under max_outbound_bytes for total more bytes, should they have to
   be queued; while output is held for a flush, under the budget too. */
WSCH__PRIVATE int wsch__c_fits(const wsch_conn *c, size_t total) {
    if (c->out_bytes + total > c->max_outbound) return 0;
    return !c->flush_asked || wsch__c_budget_room(c, total);
}

/* Is there room for total more bytes? Gathered bytes (corked by a feed,
   or held for the turn's flush) have not met the socket yet, so they are
   offered to it before a frame is refused: the answer must not depend on
   how the input was split into reads, or into turns. */
WSCH__PRIVATE int wsch__c_room(wsch_conn *c, size_t total) {
    total += sizeof(wsch__chunk);       /* should it have to wait, in a chunk of its own */
    if (wsch__c_fits(c, total)) return WSCH_OK;
    if (c->cork && c->cork_len) {
        int rc = wsch__c_uncork(c);
        if (rc != WSCH_OK) return rc;
    }
    if (c->flush_asked) {
        while (c->out_head && wsch__c_write_queue(c)) {}
        if (c->state == WSCH_STATE_CLOSED) return WSCH_ERR_TRANSPORT;
    }
    return wsch__c_fits(c, total) ? WSCH_OK : WSCH_ERR_QUEUE_FULL;
}

/* Writes one frame: straight to send() while the queue is empty and send
   takes everything, the remainder to the queue. Small frames leave in one
   send() call; large unmasked payloads go from the caller's memory. */
WSCH__PRIVATE int wsch__c_write_frame(wsch_conn *c, unsigned opcode, int fin, const void *data, size_t len) {
    const unsigned char *payload = (const unsigned char *)data;
    wsch_frame_header h;
    unsigned char hdr[WSCH_FRAME_HEADER_MAX];
    unsigned char buf[WSCH_SEND_CHUNK];
    const unsigned char *mask;
    size_t hlen = wsch__c_frame_header(c, opcode, fin, len, hdr, &h, &mask), total = hlen + len, done = 0;
    int is_close = opcode == WSCH_OP_CLOSE;

    /* Only a close frame passes the limit: it must get through to end the
       connection. Pongs obey it, or a peer that pings and never reads
       would grow the queue without bound. */
    if (!is_close) {
        int rc = wsch__c_room(c, total);
        if (rc != WSCH_OK) return rc;
    }
    if (c->cork && !c->out_head) {
        if (total <= WSCH_CORK_BYTES - c->cork_len) {
            unsigned char *dst = c->cork + c->cork_len;
            WSCH_MEMCPY(dst, hdr, hlen);
            if (len) {
                WSCH_MEMCPY(dst + hlen, payload, len);
                if (mask) wsch_mask(dst + hlen, len, mask, 0);
            }
            c->cork_len = (uint32_t)(c->cork_len + total);   /* total <= WSCH_CORK_BYTES */
            c->out_bytes += total;
            return WSCH_OK;
        }
        {
            int rc = wsch__c_uncork(c);
            if (rc != WSCH_OK) return rc;
        }
    }

    while (!c->out_head && done < total) {
        const unsigned char *piece;
        size_t piece_len, n;
        if (!mask && done >= hlen && total > sizeof buf) {
            piece = payload + (done - hlen); /* large and unmasked: no copy */
            piece_len = total - done;
        } else {
            size_t fill = 0, off;
            if (done < hlen) {
                WSCH_MEMCPY(buf, hdr + done, hlen - done);
                fill = hlen - done;
            }
            off = done + fill - hlen;
            n = len - off < sizeof buf - fill ? len - off : sizeof buf - fill;
            if (n) {
                WSCH_MEMCPY(buf + fill, payload + off, n);
                if (mask) wsch_mask(buf + fill, n, mask, off);
            }
            piece = buf;
            piece_len = fill + n;
        }
        n = wsch__c_send(c, piece, piece_len);
        if (c->state == WSCH_STATE_CLOSED) return WSCH_ERR_TRANSPORT;
        done += n;
        if (n < piece_len) break;
    }
    if (done == total) return WSCH_OK;
    return wsch__c_queue_or_cut(c, wsch__c_enqueue(c, hdr, hlen, payload, len, mask, done, is_close), done);
}

/* Answers a ping. While output waits, the answer waits in one queued pong
   that each newer ping rewrites (RFC 6455 5.5.3 lets a pong answer only the
   latest ping): a peer that pings and never reads holds one pong, not one
   per ping. */
WSCH__PRIVATE int wsch__c_pong(wsch_conn *c, const unsigned char *payload, size_t len) {
    wsch__chunk *ch = c->pong;
    wsch_frame_header h;
    const unsigned char *mask;
    unsigned char *dst;
    size_t hlen;
    if (!c->out_head) return wsch__c_write_frame(c, WSCH_OP_PONG, 1, payload, len);
    if (!ch) {
        size_t cost = sizeof *ch + WSCH__PONG_CAP;
        int rc = wsch__c_room(c, WSCH__PONG_CAP);
        if (rc != WSCH_OK) return rc;
        if (wsch__c_hold(c, cost, 0) != WSCH_OK) return WSCH_ERR_QUEUE_FULL;
        ch = (wsch__chunk *)wsch__alloc(&c->desc->allocator, cost);
        if (!ch) {
            wsch__c_unhold(c, cost);
            return WSCH_ERR_NOMEM;
        }
        ch->shared = NULL;
        wsch__c_link_chunk(c, ch);
        c->pong = ch;
    }
    dst = (unsigned char *)(ch + 1);
    hlen = wsch__c_frame_header(c, WSCH_OP_PONG, 1, len, dst, &h, &mask);
    if (len) {
        WSCH_MEMCPY(dst + hlen, payload, len);
        if (mask) wsch_mask(dst + hlen, len, mask, 0);
    }
    ch->data = dst;
    ch->len = hlen + len;
    return WSCH_OK;
}

/* Frees the queued output that has not started to leave (a frame begun
   must be finished, or the stream is cut): for a peer dropped for its
   backlog, whose close frame should not wait behind it. */
WSCH__PRIVATE void wsch__c_discard_backlog(wsch_conn *c) {
    wsch__chunk *head = c->out_head, *ch, *rest;
    const unsigned char *start;
    if (!head) return;
    start = head->shared ? (const unsigned char *)(head->shared + 1) : (const unsigned char *)(head + 1);
    if (head->data != start && head != c->pong) {   /* begun: keep it */
        rest = head->next;
        head->next = NULL;
        c->out_tail = head;
    } else {
        rest = head;
        c->out_head = c->out_tail = NULL;
    }
    while ((ch = rest) != NULL) {
        rest = ch->next;
        wsch__c_free_chunk(c, ch);
    }
}

/* Sends raw bytes (handshake text) through the same queue. */
WSCH__PRIVATE int wsch__c_write_raw(wsch_conn *c, const void *data, size_t len) {
    size_t done = 0;
    int rc;
    if (c->cork && (rc = wsch__c_uncork(c)) != WSCH_OK) return rc;
    if (!c->out_head) {
        done = wsch__c_send(c, data, len);
        if (c->state == WSCH_STATE_CLOSED) return WSCH_ERR_TRANSPORT;
    }
    if (done == len) return WSCH_OK;
    return wsch__c_queue_or_cut(c, wsch__c_enqueue(c, NULL, 0, (const unsigned char *)data, len, NULL, done, 1), done);
}

/* --- lifecycle ----------------------------------------------------------- */

WSCH__PRIVATE void wsch__c_free_conn(wsch_conn *c) {
    const wsch_allocator *a = &c->desc->allocator;
    wsch__chunk *ch = c->out_head;
    while (ch) {
        wsch__chunk *next = ch->next;
        wsch__c_free_chunk(c, ch);
        ch = next;
    }
    if (c->hs) {
        wsch__free(a, c->hs->buf);
        wsch__free(a, c->hs);
    }
    if (c->z) {
        const wsch_deflate_codec *k = c->desc->deflate.codec;
        if (c->z->tx) k->destroy(c->z->tx, k->user);
        if (c->z->rx) k->destroy(c->z->rx, k->user);
        wsch__free(a, c->z);
    }
    wsch__free(a, c->msg);
    wsch__free(a, c->protocol);
    wsch__free(a, c);
}

/* Public entry points bracket their work with enter/leave so a destroy from
   inside a callback waits until the outermost call returns. */
WSCH__PRIVATE void wsch__c_enter(wsch_conn *c) { c->depth++; }

WSCH__PRIVATE int wsch__c_leave(wsch_conn *c, int rc) {
    if (--c->depth == 0 && (c->flags & WSCH__F_DESTROYED)) wsch__c_free_conn(c);
    return rc;
}

WSCH__PRIVATE int wsch__c_gone(const wsch_conn *c) { return (c->flags & WSCH__F_DESTROYED) != 0; }

/* The one way to CLOSED, on every path: report on_close, then hand the
   transport back through close(), the last callback about it. */
WSCH__PRIVATE void wsch__c_finish(wsch_conn *c) {
    const char *reason;
    size_t reason_len;
    int code;
    if (c->state == WSCH_STATE_CLOSED || (c->flags & WSCH__F_CREATING)) return;
    c->state = WSCH_STATE_CLOSED;
    wsch__c_untimer(c, WSCH_TIMER_HANDSHAKE, WSCH__F_TIMER_HS);
    wsch__c_untimer(c, WSCH_TIMER_CLOSE, WSCH__F_TIMER_CLOSE);
    if (c->flags & WSCH__F_CLOSE_RECV) {
        code = c->close_code;
        reason = (const char *)c->ctrl;
        reason_len = c->ctrl_len;
    } else if (c->flags & WSCH__F_FAILED) {
        code = c->close_code;
        reason = wsch_err_str(c->fail_err);
        reason_len = WSCH_STRLEN(reason);
    } else {
        code = WSCH_CLOSE_ABNORMAL;
        reason = "";
        reason_len = 0;
    }
    if (c->desc->on_close) c->desc->on_close(c, code, reason, reason_len, c->user);
    c->desc->effects.close(c->user);
}

/* Closes the transport as soon as everything queued has left. */
WSCH__PRIVATE void wsch__c_shutdown(wsch_conn *c) {
    if (c->state == WSCH_STATE_CLOSED) return; /* a cut stream already ended it */
    c->flags = (uint8_t)(c->flags | WSCH__F_SHUTDOWN);
    if (c->cork) (void)wsch__c_uncork(c);
    if (!c->out_head) wsch__c_finish(c);
}

WSCH__PRIVATE void wsch__c_enter_closing(wsch_conn *c) {
    if (c->state == WSCH_STATE_CLOSED) return;
    c->state = WSCH_STATE_CLOSING;
    if (!(c->flags & WSCH__F_TIMER_CLOSE))
        wsch__c_timer(c, WSCH_TIMER_CLOSE, WSCH__F_TIMER_CLOSE,
                    (uint32_t)wsch__or(c->desc->limits.close_timeout_ms, WSCH_DEFAULT_CLOSE_TIMEOUT_MS));
}

WSCH__PRIVATE int wsch__c_send_close(wsch_conn *c, uint16_t code, const char *reason, size_t reason_len) {
    unsigned char payload[WSCH_CONTROL_PAYLOAD_MAX];
    size_t n = 0;
    if (code) {
        payload[0] = (unsigned char)(code >> 8);
        payload[1] = (unsigned char)code;
        if (reason_len > WSCH_CONTROL_PAYLOAD_MAX - 2) reason_len = WSCH_CONTROL_PAYLOAD_MAX - 2;
        if (reason_len) WSCH_MEMCPY(payload + 2, reason, reason_len);
        n = 2 + reason_len;
    }
    c->flags = (uint8_t)(c->flags | WSCH__F_CLOSE_SENT);
    return wsch__c_write_frame(c, WSCH_OP_CLOSE, 1, payload, n);
}

/* _Fail the WebSocket Connection_ (RFC 6455 7.1.7): say why in a close frame
   if the protocol is up, then close the transport; input is ignored from here. */
WSCH__PRIVATE int wsch__c_fail(wsch_conn *c, uint16_t code, int err) {
    if (c->flags & WSCH__F_FAILED) return err;
    c->flags = (uint8_t)(c->flags | WSCH__F_FAILED);
    c->close_code = code;
    c->fail_err = err;
    if (c->state == WSCH_STATE_OPEN || c->state == WSCH_STATE_CLOSING) {
        if (!(c->flags & WSCH__F_CLOSE_SENT)) {
            const char *why = wsch_err_str(err);
            (void)wsch__c_send_close(c, code, why, WSCH_STRLEN(why));
        }
        wsch__c_enter_closing(c);
    }
    wsch__c_shutdown(c);
    return err;
}

/* --- input: frames ------------------------------------------------------- */

WSCH__PRIVATE int wsch__c_close_code_valid(unsigned code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

WSCH__PRIVATE int wsch__c_on_control(wsch_conn *c, unsigned char *p, size_t n) {
    switch (c->frame_opcode) {
    case WSCH_OP_PING:
        /* A peer that is not reading gets no pong past the outbound limit:
           RFC 6455 5.5.3 lets a pong answer only the latest of many pings. */
        if (!(c->flags & WSCH__F_CLOSE_SENT) && wsch__c_pong(c, p, n) == WSCH_ERR_NOMEM)
            return wsch__c_fail(c, WSCH_CLOSE_INTERNAL_ERROR, WSCH_ERR_NOMEM);
        return WSCH_OK;
    case WSCH_OP_PONG:
        if (c->desc->on_pong) c->desc->on_pong(c, p, n, c->user);
        return WSCH_OK;
    default: { /* close */
        uint16_t code = WSCH_CLOSE_NO_STATUS;
        if (n == 1) return wsch__c_fail(c, WSCH_CLOSE_PROTOCOL_ERROR, WSCH_ERR_PROTOCOL);
        if (n >= 2) {
            code = (uint16_t)((p[0] << 8) | p[1]);
            if (!wsch__c_close_code_valid(code)) return wsch__c_fail(c, WSCH_CLOSE_PROTOCOL_ERROR, WSCH_ERR_PROTOCOL);
            if (!wsch_utf8_valid(p + 2, n - 2)) return wsch__c_fail(c, WSCH_CLOSE_INVALID_PAYLOAD, WSCH_ERR_UTF8);
            WSCH_MEMMOVE(c->ctrl, p + 2, n - 2);
            c->ctrl_len = (uint8_t)(n - 2);
        } else {
            c->ctrl_len = 0;
        }
        c->close_code = code;
        c->flags = (uint8_t)(c->flags | WSCH__F_CLOSE_RECV);
        if (!(c->flags & WSCH__F_CLOSE_SENT))
            (void)wsch__c_send_close(c, code == WSCH_CLOSE_NO_STATUS ? 0 : code, NULL, 0);
        wsch__c_enter_closing(c);
        /* The server closes TCP first (RFC 6455 7.1.1); a client waits for it,
           bounded by the close timer. */
        if (c->desc->role == WSCH_ROLE_SERVER) wsch__c_shutdown(c);
        return WSCH_OK;
    }
    }
}

/* Checks a decoded header against the role and the message in progress. */
WSCH__PRIVATE int wsch__c_begin_frame(wsch_conn *c, const wsch_frame_header *h) {
    const wsch_conn_desc *d = c->desc;
    /* RSV1 marks a compressed message: only with permessage-deflate, only
       on a data message's first frame (RFC 7692 6). */
    if (h->rsv && (h->rsv != 4u || !c->z || (h->opcode & 0x08u) || h->opcode == WSCH_OP_CONTINUATION))
        return wsch__c_fail(c, WSCH_CLOSE_PROTOCOL_ERROR, WSCH_ERR_PROTOCOL);
    if (h->masked != (d->role == WSCH_ROLE_SERVER))
        return wsch__c_fail(c, WSCH_CLOSE_PROTOCOL_ERROR, WSCH_ERR_PROTOCOL);
    c->frame_opcode = h->opcode;
    c->frame_fin = h->fin;
    c->frame_left = h->payload_len;
    c->mask_pos = 0;
    WSCH_MEMCPY(c->mask_key, h->mask_key, 4);
    c->in_frame = 1;
    if (h->opcode & 0x08u) {
        c->ctrl_len = 0;
        return WSCH_OK;
    }
    if ((h->opcode == WSCH_OP_CONTINUATION) != (c->msg_opcode != 0))
        return wsch__c_fail(c, WSCH_CLOSE_PROTOCOL_ERROR, WSCH_ERR_PROTOCOL);
    if (h->opcode != WSCH_OP_CONTINUATION) {
        c->msg_opcode = h->opcode;
        c->msg_deflated = (uint8_t)(h->rsv != 0);
        c->msg_len = 0;
        WSCH_MEMSET(&c->utf8, 0, sizeof c->utf8);
    }
    if (h->payload_len > c->max_frame || h->payload_len > c->max_message - c->msg_len)
        return wsch__c_fail(c, WSCH_CLOSE_MESSAGE_TOO_BIG, WSCH_ERR_TOO_LARGE);
    return WSCH_OK;
}

WSCH__PRIVATE int wsch__c_msg_reserve(wsch_conn *c, size_t extra) {
    size_t need = c->msg_len + extra, cap;   /* need <= max_message: checked per frame */
    unsigned char *p;
    if (need <= c->msg_cap) return WSCH_OK;
    cap = c->msg_cap ? (size_t)c->msg_cap * 2 : 256;
    if (cap > c->max_message) cap = c->max_message;
    if (cap < need) cap = need;
    p = (unsigned char *)wsch__alloc(&c->desc->allocator, cap);
    if (!p) return WSCH_ERR_NOMEM;
    if (c->msg_len) WSCH_MEMCPY(p, c->msg, c->msg_len);
    wsch__free(&c->desc->allocator, c->msg);
    c->msg = p;
    c->msg_cap = (uint32_t)cap;
    return WSCH_OK;
}

WSCH__PRIVATE void wsch__c_deliver(wsch_conn *c, unsigned opcode, unsigned char *p, size_t n) {
    if (c->desc->on_message) c->desc->on_message(c, (wsch_opcode)opcode, p, n, c->user);
}

/* One stream of the connection's codec, made when first needed. */
WSCH__PRIVATE void *wsch__c_stream(wsch_conn *c, int compress) {
    const wsch_deflate_codec *k = c->desc->deflate.codec;
    wsch__deflate *z = c->z;
    void **slot = compress ? &z->tx : &z->rx;
    if (!*slot)
        *slot = k->create(compress, compress ? z->tx_bits : z->rx_bits, c->desc->deflate.mem_level ? c->desc->deflate.mem_level : 8,
                          &c->desc->allocator, k->user);
    return *slot;
}

/* After a message: without context takeover the stream goes (an idle
   connection holds none); with it, it keeps the window. */
WSCH__PRIVATE void wsch__c_stream_done(wsch_conn *c, int compress) {
    const wsch_deflate_codec *k = c->desc->deflate.codec;
    void **slot = compress ? &c->z->tx : &c->z->rx;
    if (*slot && (compress ? c->z->tx_fresh : c->z->rx_fresh)) {
        k->destroy(*slot, k->user);
        *slot = NULL;
    }
}

/* Runs in through a stream into a growing buffer of at most limit + 1
   bytes (the +1 tells a message past the limit), in two pieces (a message
   and the tail its sender removed). On WSCH_OK *out (allocated) holds
   *out_len bytes. WSCH_ERR_TOO_LARGE past limit, WSCH_ERR_COMPRESSION for
   corrupt data or a codec failure, WSCH_ERR_NOMEM. */
WSCH__PRIVATE int wsch__z_run(const wsch_deflate_codec *k, void *stream, int compress, const wsch_allocator *a,
                              const unsigned char *in, size_t in_len, const unsigned char *in2, size_t in2_len,
                              size_t limit, unsigned char **out, size_t *out_len) {
    size_t cap = in_len + in2_len, len = 0;
    unsigned char *buf;
    int piece, err = WSCH_OK;
    /* first guess: the input's size (compressing) or four times it (inflating) */
    cap = compress ? cap + cap / 64 + 64 : (cap < limit / 4 ? cap * 4 + 64 : limit);
    if (cap > limit) cap = limit + (limit < (size_t)-1 ? 1u : 0u);
    *out = NULL;
    *out_len = 0;
    buf = (unsigned char *)wsch__alloc(a, cap ? cap : 1);
    if (!buf) return WSCH_ERR_NOMEM;
    for (piece = 0; piece < 2 && err == WSCH_OK && (!piece || in2_len); piece++) {
        const unsigned char *src = piece ? in2 : in;
        size_t left = piece ? in2_len : in_len;
        for (;;) {
            size_t took = left, made;
            if (len == cap) {           /* full: grow, never past limit + 1 */
                size_t more = cap <= limit / 2 ? cap * 2 : limit + 1;
                unsigned char *bigger;
                if (more <= cap) {
                    err = WSCH_ERR_TOO_LARGE;
                    break;
                }
                bigger = (unsigned char *)wsch__alloc(a, more);
                if (!bigger) {
                    err = WSCH_ERR_NOMEM;
                    break;
                }
                WSCH_MEMCPY(bigger, buf, len);
                wsch__free(a, buf);
                buf = bigger;
                cap = more;
            }
            made = cap - len;
            if (k->run(stream, src, &took, buf + len, &made, compress, k->user) != 0 || took > left ||
                made > cap - len) {
                err = WSCH_ERR_COMPRESSION;
                break;
            }
            src += took;
            left -= took;
            len += made;
            if (len > limit) {
                err = WSCH_ERR_TOO_LARGE;
                break;
            }
            if (!left && len < cap) break;          /* all in, and the output had room: done */
            if (!took && !made && len < cap) {      /* no progress with room to spare */
                err = WSCH_ERR_COMPRESSION;
                break;
            }
        }
    }
    if (err != WSCH_OK) {
        wsch__free(a, buf);
        return err;
    }
    *out = buf;
    *out_len = len;
    return WSCH_OK;
}

/* A whole compressed message: inflated with the tail its sender removed
   (RFC 7692 7.2.2), never past max_message_size (1009), then delivered.
   Corrupt data fails with 1007. */
WSCH__PRIVATE int wsch__c_inflate_deliver(wsch_conn *c, unsigned opcode, const unsigned char *in, size_t in_len) {
    static const unsigned char tail[4] = {0x00, 0x00, 0xFF, 0xFF};
    void *rx = wsch__c_stream(c, 0);
    unsigned char *msg;
    size_t n;
    int rc;
    if (!rx) return wsch__c_fail(c, WSCH_CLOSE_INTERNAL_ERROR, WSCH_ERR_NOMEM);
    rc = wsch__z_run(c->desc->deflate.codec, rx, 0, &c->desc->allocator, in, in_len, tail, sizeof tail, c->max_message,
                     &msg, &n);
    if (rc != WSCH_OK) {
        uint16_t code = rc == WSCH_ERR_TOO_LARGE ? WSCH_CLOSE_MESSAGE_TOO_BIG
                        : rc == WSCH_ERR_NOMEM   ? WSCH_CLOSE_INTERNAL_ERROR
                                                 : WSCH_CLOSE_INVALID_PAYLOAD;
        return wsch__c_fail(c, code, rc);
    }
    wsch__c_stream_done(c, 0);
    if (opcode == WSCH_OP_TEXT && !wsch_utf8_valid(msg, n)) {
        wsch__free(&c->desc->allocator, msg);
        return wsch__c_fail(c, WSCH_CLOSE_INVALID_PAYLOAD, WSCH_ERR_UTF8);
    }
    wsch__c_deliver(c, opcode, msg, n);
    wsch__free(&c->desc->allocator, msg);
    return WSCH_OK;
}

/* Consumes avail payload bytes at p of the current frame. */
WSCH__PRIVATE int wsch__c_frame_payload(wsch_conn *c, unsigned char *p, size_t avail) {
    int whole = (uint64_t)avail == c->frame_left;
    size_t bad;
    if (c->frame_opcode & 0x08u) {
        if (whole && c->ctrl_len == 0) { /* in the caller's buffer: no copy */
            wsch_mask(p, avail, c->mask_key, 0);
            c->frame_left = 0;
            return wsch__c_on_control(c, p, avail);
        }
        WSCH_MEMCPY(c->ctrl + c->ctrl_len, p, avail);
        c->mask_pos = (uint8_t)wsch_mask(c->ctrl + c->ctrl_len, avail, c->mask_key, c->mask_pos);
        c->ctrl_len = (uint8_t)(c->ctrl_len + avail);
        c->frame_left -= avail;
        return c->frame_left ? WSCH_OK : wsch__c_on_control(c, c->ctrl, c->ctrl_len);
    }
    if (whole && c->frame_fin && c->msg_len == 0 && c->frame_opcode != WSCH_OP_CONTINUATION) {
        /* The common case: a whole unfragmented message in the caller's buffer. */
        wsch_mask(p, avail, c->mask_key, 0);
        c->frame_left = 0;
        c->msg_opcode = 0;
        if (c->msg_deflated) return wsch__c_inflate_deliver(c, c->frame_opcode, p, avail);
        if (c->frame_opcode == WSCH_OP_TEXT && !wsch_utf8_valid(p, avail))
            return wsch__c_fail(c, WSCH_CLOSE_INVALID_PAYLOAD, WSCH_ERR_UTF8);
        wsch__c_deliver(c, c->frame_opcode, p, avail);
        return WSCH_OK;
    }
    if (avail) { /* empty fragments are legal and leave no trace */
        if (wsch__c_msg_reserve(c, avail) != WSCH_OK) return wsch__c_fail(c, WSCH_CLOSE_INTERNAL_ERROR, WSCH_ERR_NOMEM);
        WSCH_MEMCPY(c->msg + c->msg_len, p, avail);
        c->mask_pos = (uint8_t)wsch_mask(c->msg + c->msg_len, avail, c->mask_key, c->mask_pos);
        /* Text is checked as it arrives so a bad byte fails at once
           (compressed text once inflated). */
        if (c->msg_opcode == WSCH_OP_TEXT && !c->msg_deflated &&
            wsch_utf8_feed(&c->utf8, c->msg + c->msg_len, avail, &bad) != WSCH_OK)
            return wsch__c_fail(c, WSCH_CLOSE_INVALID_PAYLOAD, WSCH_ERR_UTF8);
        c->msg_len = (uint32_t)(c->msg_len + avail);
    }
    c->frame_left -= avail;
    if (c->frame_left || !c->frame_fin) return WSCH_OK;
    if (c->msg_opcode == WSCH_OP_TEXT && !c->msg_deflated && wsch_utf8_finish(&c->utf8) != WSCH_OK)
        return wsch__c_fail(c, WSCH_CLOSE_INVALID_PAYLOAD, WSCH_ERR_UTF8);
    {
        unsigned opcode = c->msg_opcode;
        unsigned char *msg = c->msg;
        size_t n = c->msg_len;
        /* Hand the buffer over first so a callback may feed or send freely. */
        c->msg = NULL;
        c->msg_len = c->msg_cap = 0;
        c->msg_opcode = 0;
        if (c->msg_deflated) {
            int rc = wsch__c_inflate_deliver(c, opcode, msg ? msg : c->hdr, n);
            wsch__free(&c->desc->allocator, msg);
            return rc;
        }
        /* An all-empty fragmented message has no buffer; still hand out a valid pointer. */
        wsch__c_deliver(c, opcode, msg ? msg : c->hdr, n);
        wsch__free(&c->desc->allocator, msg);
    }
    return WSCH_OK;
}

/* Frames mode: decodes and dispatches everything in p. */
WSCH__PRIVATE int wsch__c_read_frames(wsch_conn *c, unsigned char *p, size_t len) {
    for (;;) {
        size_t avail;
        int rc;
        if (c->flags & (WSCH__F_FAILED | WSCH__F_CLOSE_RECV | WSCH__F_DESTROYED)) return WSCH_OK;
        if (!c->in_frame) {
            wsch_frame_header h;
            size_t hl;
            if (len == 0) return WSCH_OK;
            if (c->hdr_len == 0) {
                rc = wsch_frame_header_decode(p, len, &h, &hl);
                if (rc == WSCH_INCOMPLETE) { /* len < 14 here */
                    WSCH_MEMCPY(c->hdr, p, len);
                    c->hdr_len = (uint8_t)len;
                    return WSCH_OK;
                }
            } else { /* a header split across feeds */
                size_t old = c->hdr_len, take = sizeof c->hdr - old;
                if (take > len) take = len;
                WSCH_MEMCPY(c->hdr + old, p, take);
                rc = wsch_frame_header_decode(c->hdr, old + take, &h, &hl);
                if (rc == WSCH_INCOMPLETE) {
                    c->hdr_len = (uint8_t)(old + take);
                    return WSCH_OK;
                }
                c->hdr_len = 0;
                if (rc == WSCH_OK) hl -= old; /* header bytes taken from p */
            }
            if (rc != WSCH_OK) return wsch__c_fail(c, WSCH_CLOSE_PROTOCOL_ERROR, rc);
            p += hl;
            len -= hl;
            rc = wsch__c_begin_frame(c, &h);
            if (rc != WSCH_OK) return rc;
        }
        avail = c->frame_left < (uint64_t)len ? (size_t)c->frame_left : len;
        if (avail == 0 && c->frame_left) return WSCH_OK;
        rc = wsch__c_frame_payload(c, p, avail);
        if (!c->frame_left) c->in_frame = 0;
        if (rc != WSCH_OK) return rc;
        p += avail;
        len -= avail;
    }
}

/* --- input: opening handshake -------------------------------------------- */

/* Buffers handshake bytes; returns how many of data it took into the buffer. */
WSCH__PRIVATE int wsch__c_hs_append(wsch_conn *c, const void *data, size_t len, size_t *took) {
    wsch__handshake *hs = c->hs;
    size_t max = wsch__or(c->desc->limits.max_header_bytes, WSCH_DEFAULT_MAX_HEADER_BYTES);
    size_t n = len < max - hs->len ? len : max - hs->len;
    if (hs->len + n > hs->cap) {
        size_t cap = hs->cap ? hs->cap * 2 : 512;
        char *b;
        while (cap < hs->len + n) cap *= 2;
        if (cap > max) cap = max;
        b = (char *)wsch__alloc(&c->desc->allocator, cap);
        if (!b) return WSCH_ERR_NOMEM;
        if (hs->len) WSCH_MEMCPY(b, hs->buf, hs->len);
        wsch__free(&c->desc->allocator, hs->buf);
        hs->buf = b;
        hs->cap = cap;
    }
    if (n) WSCH_MEMCPY(hs->buf + hs->len, data, n);
    hs->len += n;
    *took = n;
    return WSCH_OK;
}

WSCH__PRIVATE void wsch__c_hs_done(wsch_conn *c) {
    wsch__free(&c->desc->allocator, c->hs->buf);
    wsch__free(&c->desc->allocator, c->hs);
    c->hs = NULL;
    wsch__c_untimer(c, WSCH_TIMER_HANDSHAKE, WSCH__F_TIMER_HS);
}

WSCH__PRIVATE int wsch__c_set_protocol(wsch_conn *c, const char *p, size_t n) {
    if (!n) return WSCH_OK;
    c->protocol = (char *)wsch__alloc(&c->desc->allocator, n + 1);
    if (!c->protocol) return WSCH_ERR_NOMEM;
    WSCH_MEMCPY(c->protocol, p, n);
    c->protocol[n] = '\0';
    return WSCH_OK;
}

/* permessage-deflate was agreed: keep what was, no stream yet. */
WSCH__PRIVATE int wsch__c_deflate_start(wsch_conn *c, const wsch_deflate_params *a) {
    const wsch_deflate_desc *d = &c->desc->deflate;
    int server = c->desc->role == WSCH_ROLE_SERVER;
    uint8_t own = wsch__pmd_own_bits(server ? d->server_max_window_bits : d->client_max_window_bits);
    uint8_t agreed_own = server ? a->server_max_window_bits : a->client_max_window_bits;
    wsch__deflate *z = (wsch__deflate *)wsch__alloc(&c->desc->allocator, sizeof *z);
    if (!z) return WSCH_ERR_NOMEM;
    WSCH_MEMSET(z, 0, sizeof *z);
    z->agreed = *a;
    z->tx_bits = own < agreed_own ? own : agreed_own;
    z->rx_bits = server ? a->client_max_window_bits : a->server_max_window_bits;
    z->tx_fresh = server ? a->server_no_context_takeover : a->client_no_context_takeover;
    z->rx_fresh = server ? a->client_no_context_takeover : a->server_no_context_takeover;
    c->z = z;
    return WSCH_OK;
}

/* Refuses a request with an HTTP response (the caller's, or a built one),
   then closes. */
WSCH__PRIVATE int wsch__c_refuse(wsch_conn *c, const wsch_handshake_reply *reply, int err) {
    char buf[512];
    size_t n;
    c->http_status = (uint16_t)reply->status;
    if (reply->response) {
        (void)wsch__c_write_raw(c, reply->response, reply->response_len);
    } else {
        /* A status or headers that cannot be built become a plain 500. */
        if (wsch_http_error_build(reply->status, reply->extra_headers, buf, sizeof buf, &n) != WSCH_OK &&
            wsch_http_error_build(reply->status, NULL, buf, sizeof buf, &n) != WSCH_OK &&
            wsch_http_error_build(500, NULL, buf, sizeof buf, &n) != WSCH_OK)
            n = 0;
        if (n) (void)wsch__c_write_raw(c, buf, n);
    }
    return wsch__c_fail(c, WSCH_CLOSE_PROTOCOL_ERROR, err);
}

/* A complete request head: let the caller decide, then upgrade or refuse.
   check is wsch_request_check_upgrade()'s verdict. */
WSCH__PRIVATE int wsch__c_server_accept(wsch_conn *c, const wsch_request *req, int check) {
    wsch_handshake_reply reply;
    size_t iter = 0, n = 0;
    wsch_str offered;
    const char *protocol = NULL, *extensions = NULL;
    char stack[512], *buf = stack, ext[WSCH__PMD_TEXT_MAX];
    wsch_deflate_params agreed;
    int rc;
    WSCH_MEMSET(&reply, 0, sizeof reply);
    reply.status = check == WSCH_OK ? 101 : wsch_request_error_status(check);
    if (c->desc->on_request) {
        c->desc->on_request(c, req, &reply, c->user);
        /* The hook may have closed or destroyed the connection. */
        if (wsch__c_gone(c) || c->state != WSCH_STATE_HANDSHAKE) return WSCH_ERR_CLOSED;
    }
    if (check != WSCH_OK && reply.status == 101) reply.status = wsch_request_error_status(check);
    if (reply.status != 101) return wsch__c_refuse(c, &reply, check != WSCH_OK ? check : WSCH_ERR_DENIED);
    /* Only a protocol the client offered may be named in the answer. */
    while (reply.protocol && wsch_request_next_protocol(req, &iter, &offered)) {
        if (offered.len == WSCH_STRLEN(reply.protocol) && WSCH_MEMCMP(offered.ptr, reply.protocol, offered.len) == 0) {
            protocol = reply.protocol;
            break;
        }
    }
    if (wsch_deflate_negotiate(req, &c->desc->deflate, &agreed)) {
        rc = wsch_deflate_response_build(&agreed, ext, sizeof ext, &n);
        if (rc == WSCH_OK) rc = wsch__c_deflate_start(c, &agreed);
        if (rc != WSCH_OK) return wsch__c_fail(c, WSCH_CLOSE_INTERNAL_ERROR, rc);
        extensions = ext;
    }
    rc = wsch__h_response_build(req, protocol, extensions, reply.extra_headers, stack, sizeof stack, &n);
    if (rc == WSCH_ERR_BUFFER) { /* long extra headers: n is the size it needs */
        buf = (char *)wsch__alloc(&c->desc->allocator, n + 1);
        rc = buf ? wsch__h_response_build(req, protocol, extensions, reply.extra_headers, buf, n + 1, &n)
                 : WSCH_ERR_NOMEM;
    }
    if (rc == WSCH_OK) rc = wsch__c_write_raw(c, buf, n);
    if (buf != stack) wsch__free(&c->desc->allocator, buf);
    if (rc == WSCH_OK && protocol) rc = wsch__c_set_protocol(c, protocol, WSCH_STRLEN(protocol));
    if (rc != WSCH_OK) return wsch__c_fail(c, WSCH_CLOSE_INTERNAL_ERROR, rc);
    c->http_status = 101;
    wsch__c_hs_done(c);
    c->state = WSCH_STATE_OPEN;
    if (c->desc->on_open) {
        c->desc->on_open(c, c->user);
        if (wsch__c_gone(c)) return WSCH_ERR_CLOSED;
    }
    if (reply.close_code && c->state == WSCH_STATE_OPEN)
        (void)wsch_conn_close(c, reply.close_code, reply.close_reason,
                              reply.close_reason ? WSCH_STRLEN(reply.close_reason) : 0);
    return WSCH_OK;
}

/* A refusal's Retry-After in delta-seconds (RFC 9110 10.2.3), plus 1 so 0
   can mean none; saturated at a day. The HTTP-date form counts as none. */
WSCH__PRIVATE uint32_t wsch__c_retry_after(const wsch_response *res) {
    wsch_str v;
    uint32_t secs = 0;
    size_t i;
    if (res->status == 101 || wsch_header_find(res->headers, res->num_headers, "Retry-After", &v) != WSCH_OK ||
        v.len == 0)
        return 0;
    for (i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9') return 0;
        if (secs < WSCH_MAX_RETRY_AFTER_S) secs = secs * 10u + (uint32_t)(v.ptr[i] - '0');
    }
    return (secs < WSCH_MAX_RETRY_AFTER_S ? secs : WSCH_MAX_RETRY_AFTER_S) + 1u;
}

/* Feeds handshake bytes; *used = bytes of data that belonged to the head. */
WSCH__PRIVATE int wsch__c_read_handshake(wsch_conn *c, const void *data, size_t len, size_t *used) {
    wsch__handshake *hs = c->hs;
    size_t prev = hs->len, took = 0, head = 0;
    int rc = wsch__c_hs_append(c, data, len, &took);
    *used = took;
    if (rc != WSCH_OK) return wsch__c_fail(c, WSCH_CLOSE_INTERNAL_ERROR, rc);
    if (c->desc->role == WSCH_ROLE_SERVER) {
        wsch_request req;
        rc = wsch_request_parse(hs->buf, hs->len, prev, c->desc->limits.max_header_bytes, &req, &head);
        if (rc == WSCH_INCOMPLETE) return WSCH_OK;
        if (rc != WSCH_OK) { /* not even HTTP: no hook to ask */
            wsch_handshake_reply reply;
            WSCH_MEMSET(&reply, 0, sizeof reply);
            reply.status = wsch_request_error_status(rc);
            return wsch__c_refuse(c, &reply, rc);
        }
        *used = head - prev;
        return wsch__c_server_accept(c, &req, wsch_request_check_upgrade(&req));
    } else {
        wsch_response res;
        wsch_str protocol;
        wsch_deflate_params agreed;
        rc = wsch_response_parse(hs->buf, hs->len, prev, c->desc->limits.max_header_bytes, &res, &head);
        if (rc == WSCH_INCOMPLETE) return WSCH_OK;
        if (rc == WSCH_OK) {
            c->http_status = (uint16_t)res.status;
            hs->retry_after_s = wsch__c_retry_after(&res);
            rc = wsch__h_response_check(&res, hs->key, c->desc->request.protocols, &protocol, 1);
        }
        if (rc == WSCH_OK)
            rc = wsch_deflate_response_check(&res, c->desc->deflate.codec ? &c->desc->deflate : NULL, &agreed);
        if (rc == WSCH_OK && agreed.enabled) rc = wsch__c_deflate_start(c, &agreed);
        if (rc == WSCH_OK) rc = wsch__c_set_protocol(c, protocol.ptr, protocol.len);
        if (rc != WSCH_OK) return wsch__c_fail(c, WSCH_CLOSE_PROTOCOL_ERROR, rc);
        *used = head - prev;
        wsch__c_hs_done(c);
        c->state = WSCH_STATE_OPEN;
        if (c->desc->on_open) c->desc->on_open(c, c->user);
        return WSCH_OK;
    }
}

/* --- public API ---------------------------------------------------------- */

WSCH_API wsch_conn_desc wsch_conn_desc_defaults(const wsch_conn_desc *desc) {
    wsch_conn_desc d;
    wsch__desc_copy(&d, desc, sizeof d);
    d.limits.max_frame_size = wsch__or(d.limits.max_frame_size, WSCH_DEFAULT_MAX_FRAME_SIZE);
    d.limits.max_message_size = wsch__or(d.limits.max_message_size, WSCH_DEFAULT_MAX_MESSAGE_SIZE);
    d.limits.max_outbound_bytes = wsch__or(d.limits.max_outbound_bytes, WSCH_DEFAULT_MAX_OUTBOUND_BYTES);
    d.limits.max_header_bytes = wsch__or(d.limits.max_header_bytes, WSCH_DEFAULT_MAX_HEADER_BYTES);
    if (!d.limits.handshake_timeout_ms) d.limits.handshake_timeout_ms = WSCH_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    if (!d.limits.close_timeout_ms) d.limits.close_timeout_ms = WSCH_DEFAULT_CLOSE_TIMEOUT_MS;
    return d;
}

/* The one conn desc a client or hub shares among all its connections:
   fields the caller set (the request, events) are kept, limits resolved. */
WSCH__PRIVATE void wsch__conn_desc_for(wsch_conn_desc *cd, wsch_role role, const wsch_limits *limits,
                                       const wsch_allocator *allocator, const wsch_effects *effects) {
    cd->role = role;
    cd->limits = *limits;
    cd->allocator = *allocator;
    cd->effects = *effects;
    *cd = wsch_conn_desc_defaults(cd);
}

/* Client role: writes the opening request, sized by the builder itself. */
WSCH__PRIVATE int wsch__c_send_request(wsch_conn *c) {
    wsch_handshake_request_desc rd = c->desc->request;
    char buf[1024], *req = buf, ext[WSCH__PMD_TEXT_MAX];
    size_t n = 0;
    int rc;
    c->desc->effects.random_bytes(rd.nonce, sizeof rd.nonce, c->user);
    if (c->desc->deflate.codec) {
        rc = wsch_deflate_offer_build(&c->desc->deflate, ext, sizeof ext, &n);
        if (rc != WSCH_OK) return rc;
        rd.extensions = ext;
    }
    rc = wsch_handshake_request_build(&rd, buf, sizeof buf, &n, c->hs->key);
    if (rc == WSCH_ERR_BUFFER) { /* long paths or headers: n is the size it needs */
        req = (char *)wsch__alloc(&c->desc->allocator, n + 1);
        rc = req ? wsch_handshake_request_build(&rd, req, n + 1, &n, c->hs->key) : WSCH_ERR_NOMEM;
    }
    if (rc == WSCH_OK) rc = wsch__c_write_raw(c, req, n);
    if (req != buf) wsch__free(&c->desc->allocator, req);
    return rc;
}

WSCH_API int wsch_conn_create(const wsch_conn_desc *desc, void *user, wsch_conn **out) {
    wsch_conn *c;
    if (!out) return WSCH_ERR_ARG;
    *out = NULL;
    if (!desc || !desc->effects.send || !desc->effects.close) return WSCH_ERR_ARG;
    if (desc->role == WSCH_ROLE_CLIENT && (!desc->request.host || !desc->effects.random_bytes)) return WSCH_ERR_ARG;
    if (desc->deflate.codec && (!wsch__pmd_desc_ok(&desc->deflate) || !desc->deflate.codec->create ||
                                !desc->deflate.codec->destroy || !desc->deflate.codec->reset || !desc->deflate.codec->run))
        return WSCH_ERR_ARG;
    c = (wsch_conn *)wsch__alloc(&desc->allocator, sizeof *c);
    if (!c) return WSCH_ERR_NOMEM;
    WSCH_MEMSET(c, 0, sizeof *c);
    c->desc = desc;
    c->user = user;
    c->state = WSCH_STATE_HANDSHAKE;
    c->max_frame = wsch__c_limit32(desc->limits.max_frame_size, WSCH_DEFAULT_MAX_FRAME_SIZE);
    c->max_message = wsch__c_limit32(desc->limits.max_message_size, WSCH_DEFAULT_MAX_MESSAGE_SIZE);
    c->max_outbound = wsch__c_limit32(desc->limits.max_outbound_bytes, WSCH_DEFAULT_MAX_OUTBOUND_BYTES);
    c->hs = (wsch__handshake *)wsch__alloc(&desc->allocator, sizeof *c->hs);
    if (!c->hs) {
        wsch__free(&desc->allocator, c);
        return WSCH_ERR_NOMEM;
    }
    WSCH_MEMSET(c->hs, 0, sizeof *c->hs);
    /* Until create returns, the caller has no connection: a failure here
       must not reach on_close or close(). */
    c->flags = WSCH__F_CREATING;
    if (desc->role == WSCH_ROLE_CLIENT) {
        int rc = wsch__c_send_request(c);
        if (rc == WSCH_OK && (c->flags & WSCH__F_FAILED)) rc = c->fail_err; /* send said the transport broke */
        if (rc != WSCH_OK) {
            wsch__c_free_conn(c);
            return rc;
        }
    }
    c->flags = (uint8_t)(c->flags & ~WSCH__F_CREATING);
    wsch__c_timer(c, WSCH_TIMER_HANDSHAKE, WSCH__F_TIMER_HS,
                (uint32_t)wsch__or(desc->limits.handshake_timeout_ms, WSCH_DEFAULT_HANDSHAKE_TIMEOUT_MS));
    *out = c;
    return WSCH_OK;
}

WSCH_API void wsch_conn_destroy(wsch_conn *c) {
    if (!c) return;
    wsch__c_untimer(c, WSCH_TIMER_HANDSHAKE, WSCH__F_TIMER_HS);
    wsch__c_untimer(c, WSCH_TIMER_CLOSE, WSCH__F_TIMER_CLOSE);
    if (c->state != WSCH_STATE_CLOSED) { /* the transport is still the library's: hand it back */
        c->state = WSCH_STATE_CLOSED;
        c->desc->effects.close(c->user);
    }
    if (c->depth) c->flags = (uint8_t)(c->flags | WSCH__F_DESTROYED);
    else wsch__c_free_conn(c);
}

WSCH_API int wsch_conn_feed(wsch_conn *c, void *data, size_t len) {
    unsigned char *p = (unsigned char *)data;
    int rc = WSCH_OK;
#if WSCH_CORK_BYTES > 0
    unsigned char cork[WSCH_CORK_BYTES];
#endif
    int corked = 0;
    if (!c || (!data && len)) return WSCH_ERR_ARG;
    if (c->state == WSCH_STATE_CLOSED) return WSCH_ERR_CLOSED;
    wsch__c_enter(c);
#if WSCH_CORK_BYTES > 0
    if (!c->cork) {
        c->cork = cork;
        c->cork_len = 0;
        corked = 1;
    }
#endif
    if (c->state == WSCH_STATE_HANDSHAKE && !(c->flags & WSCH__F_FAILED)) {
        size_t used = 0;
        rc = wsch__c_read_handshake(c, p, len, &used);
        p += used;
        len -= used;
    }
    /* Bytes after the handshake in the same read are frames, not lost. */
    if (rc == WSCH_OK && !wsch__c_gone(c) && c->state != WSCH_STATE_HANDSHAKE && c->state != WSCH_STATE_CLOSED)
        rc = wsch__c_read_frames(c, p, len);
    else if (rc == WSCH_OK && c->flags & WSCH__F_FAILED)
        rc = c->fail_err;
    if (corked) {
        if (!wsch__c_gone(c) && c->state != WSCH_STATE_CLOSED) {
            int sent = wsch__c_uncork(c);
            if (rc == WSCH_OK) rc = sent;
        }
        c->cork = NULL;
        c->cork_len = 0;
    }
    /* A send from inside a callback (an echo, a reply) met a broken transport. */
    if (rc == WSCH_OK && (c->flags & WSCH__F_FAILED) && c->fail_err == WSCH_ERR_TRANSPORT) rc = WSCH_ERR_TRANSPORT;
    return wsch__c_leave(c, rc);
}

/* Offers the queue's first pieces to the transport in one call (through
   send_gather, or copied together for send) and lets go of what it took.
   Returns 1 when it took all of them: more may follow. */
WSCH__PRIVATE int wsch__c_write_queue(wsch_conn *c) {
    const wsch_effects *fx = &c->desc->effects;
    wsch_iovec parts[WSCH_GATHER_PARTS];
    size_t count = 0, offered = 0, n;
    wsch__chunk *ch;
    int all;
    for (ch = c->out_head; ch && count < WSCH_GATHER_PARTS; ch = ch->next) {
        if (ch == c->pong) {            /* leaving now: no longer rewritable, and held at its size */
            wsch__c_unhold(c, WSCH__PONG_CAP - ch->len);
            c->pong = NULL;
        }
        parts[count].base = ch->data;
        parts[count++].len = ch->len;
        offered += ch->len;
    }
    n = fx->send_gather ? fx->send_gather(parts, count, c->user) : wsch__send_copied(fx->send, parts, count, c->user);
    n = wsch__c_took(c, n, offered);
    if (c->state == WSCH_STATE_CLOSED) return 0;
    all = n == offered;
    wsch__c_unhold(c, n);
    while (n) {
        size_t k;
        ch = c->out_head;
        k = n < ch->len ? n : ch->len;
        ch->data += k;
        ch->len -= k;
        n -= k;
        if (ch->len) break;
        c->out_head = ch->next;
        if (!c->out_head) c->out_tail = NULL;
        wsch__c_free_chunk(c, ch);
    }
    return all;
}

WSCH_API int wsch_conn_writable(wsch_conn *c) {
    if (!c) return WSCH_ERR_ARG;
    if (c->state == WSCH_STATE_CLOSED) return WSCH_ERR_CLOSED;
    wsch__c_enter(c);
    c->flush_asked = 0;
    while (c->out_head && wsch__c_write_queue(c)) {}
    if (!c->out_head && (c->flags & WSCH__F_SHUTDOWN)) wsch__c_finish(c);
    return wsch__c_leave(c, WSCH_OK);
}

WSCH_API void wsch_conn_timer_fired(wsch_conn *c, unsigned timer_id) {
    if (!c || c->state == WSCH_STATE_CLOSED) return;
    wsch__c_enter(c);
    if (timer_id == WSCH_TIMER_HANDSHAKE && (c->flags & WSCH__F_TIMER_HS)) {
        c->flags = (uint8_t)(c->flags & ~WSCH__F_TIMER_HS);
        c->flags = (uint8_t)(c->flags | WSCH__F_FAILED);
        c->close_code = WSCH_CLOSE_ABNORMAL;
        c->fail_err = WSCH_ERR_TIMEOUT;
        wsch__c_finish(c);
    } else if (timer_id == WSCH_TIMER_CLOSE && (c->flags & WSCH__F_TIMER_CLOSE)) {
        c->flags = (uint8_t)(c->flags & ~WSCH__F_TIMER_CLOSE);
        wsch__c_finish(c);
    }
    (void)wsch__c_leave(c, WSCH_OK);
}

WSCH_API void wsch_conn_transport_closed(wsch_conn *c) {
    if (!c || c->state == WSCH_STATE_CLOSED) return;
    wsch__c_enter(c);
    if (c->state == WSCH_STATE_HANDSHAKE && !(c->flags & WSCH__F_FAILED)) {
        c->flags = (uint8_t)(c->flags | WSCH__F_FAILED);
        c->close_code = WSCH_CLOSE_ABNORMAL;
        c->fail_err = WSCH_ERR_HANGUP;
    }
    wsch__c_finish(c);
    (void)wsch__c_leave(c, WSCH_OK);
}

WSCH__PRIVATE int wsch__c_check_send(const wsch_conn *c) {
    if (c->state == WSCH_STATE_OPEN) return WSCH_OK;
    return c->state == WSCH_STATE_HANDSHAKE ? WSCH_ERR_STATE : WSCH_ERR_CLOSED;
}

/* A whole message: compressed when permessage-deflate was agreed and it is
   long enough (RFC 7692 7.2.1). Without context takeover a message that
   does not shrink leaves as it is. With it the peer's window must see
   every byte the compressor did, so a compressed message that cannot leave
   ends the connection (1011); room is checked first to make that rare. */
WSCH__PRIVATE int wsch__c_send_message(wsch_conn *c, unsigned opcode, const void *data, size_t len) {
    const wsch_deflate_desc *d = &c->desc->deflate;
    size_t bound = len + len / 64 + 64, n;
    unsigned char *out;
    void *tx;
    int rc;
    if (!c->z || len < (d->min_size ? d->min_size : WSCH_DEFLATE_MIN_SIZE))
        return wsch__c_write_frame(c, opcode, 1, data, len);
    if ((rc = wsch__c_room(c, bound + WSCH_FRAME_HEADER_MAX)) != WSCH_OK) return rc;
    /* No compressor (out of memory, or a window the codec cannot make, as
       zlib cannot make 8): nothing was compressed yet, so the message may
       go as it is (RFC 7692 allows uncompressed messages). */
    if (!(tx = wsch__c_stream(c, 1))) return wsch__c_write_frame(c, opcode, 1, data, len);
    rc = wsch__z_run(d->codec, tx, 1, &c->desc->allocator, (const unsigned char *)data, len, NULL, 0, (size_t)-1 - 1,
                     &out, &n);
    /* a sync flush ends with 00 00 FF FF, which the peer adds back */
    if (rc == WSCH_OK && (n < 4 || out[n - 4] || out[n - 3] || out[n - 2] != 0xFF || out[n - 1] != 0xFF)) {
        wsch__free(&c->desc->allocator, out);
        rc = WSCH_ERR_COMPRESSION;
    }
    if (rc != WSCH_OK) {
        if (!c->z->tx_fresh) return wsch__c_fail(c, WSCH_CLOSE_INTERNAL_ERROR, rc);
        wsch__c_stream_done(c, 1);
        return rc;
    }
    n -= 4;
    wsch__c_stream_done(c, 1);
    if (c->z->tx_fresh && n >= len) rc = wsch__c_write_frame(c, opcode, 1, data, len);
    else rc = wsch__c_write_frame(c, opcode | WSCH__C_RSV1, 1, out, n);
    wsch__free(&c->desc->allocator, out);
    if (rc != WSCH_OK && !c->z->tx_fresh && c->state != WSCH_STATE_CLOSED)
        return wsch__c_fail(c, WSCH_CLOSE_INTERNAL_ERROR, rc);
    return rc;
}

WSCH_API int wsch_conn_send(wsch_conn *c, wsch_opcode opcode, const void *data, size_t len) {
    int rc;
    if (!c || (!data && len) || (opcode != WSCH_OP_TEXT && opcode != WSCH_OP_BINARY)) return WSCH_ERR_ARG;
    if ((rc = wsch__c_check_send(c)) != WSCH_OK) return rc;
    if (c->out_opcode) return WSCH_ERR_STATE; /* a fragmented message is still open */
    if (opcode == WSCH_OP_TEXT && !wsch_utf8_valid(data, len)) return WSCH_ERR_UTF8;
    wsch__c_enter(c);
    return wsch__c_leave(c, wsch__c_send_message(c, (unsigned)opcode, data, len));
}

WSCH_API int wsch_conn_send_frame(wsch_conn *c, wsch_opcode opcode, int fin, const void *data, size_t len) {
    int rc;
    if (!c || (!data && len) || !wsch__frame_opcode_known((unsigned)opcode)) return WSCH_ERR_ARG;
    if ((opcode & 0x08) && (!fin || len > WSCH_CONTROL_PAYLOAD_MAX || opcode == WSCH_OP_CLOSE)) return WSCH_ERR_ARG;
    if ((rc = wsch__c_check_send(c)) != WSCH_OK) return rc;
    /* Data frames follow RFC 6455 5.4: continuations only inside a message,
       no new message before the last one's final frame. */
    if (!(opcode & 0x08) && (opcode == WSCH_OP_CONTINUATION) != (c->out_opcode != 0)) return WSCH_ERR_STATE;
    wsch__c_enter(c);
    rc = wsch__c_write_frame(c, (unsigned)opcode, fin, data, len);
    if (rc == WSCH_OK && !(opcode & 0x08))
        c->out_opcode = (uint8_t)(fin ? 0 : opcode == WSCH_OP_CONTINUATION ? c->out_opcode : (unsigned)opcode);
    return wsch__c_leave(c, rc);
}

WSCH_API int wsch_conn_ping(wsch_conn *c, const void *data, size_t len) {
    return wsch_conn_send_frame(c, WSCH_OP_PING, 1, data, len);
}

WSCH_API int wsch_conn_close(wsch_conn *c, uint16_t code, const char *reason, size_t reason_len) {
    int rc;
    reason_len = wsch__cstr_len(reason, reason_len);
    if (!c || (code && !wsch__c_close_code_valid(code)) || reason_len > WSCH_CONTROL_PAYLOAD_MAX - 2 ||
        (!code && reason_len) || (reason_len && !wsch_utf8_valid(reason, reason_len)))
        return WSCH_ERR_ARG;
    if (c->state == WSCH_STATE_HANDSHAKE) { /* nothing to say in WebSocket yet */
        wsch__c_enter(c);
        wsch__c_finish(c);
        return wsch__c_leave(c, WSCH_OK);
    }
    if (c->state != WSCH_STATE_OPEN || (c->flags & WSCH__F_CLOSE_SENT)) return WSCH_ERR_CLOSED;
    wsch__c_enter(c);
    rc = wsch__c_send_close(c, code, reason, reason_len);
    wsch__c_enter_closing(c);
    return wsch__c_leave(c, rc);
}

WSCH_API wsch_state wsch_conn_state(const wsch_conn *c) { return (wsch_state)c->state; }

/* Reading stops mattering once this side closes the transport as soon as the
   queue drains (then the queue is not empty, or the conn would be CLOSED). */
WSCH_API unsigned wsch_conn_want(const wsch_conn *c) {
    unsigned w = 0;
    if (!c || c->state == WSCH_STATE_CLOSED) return 0;
    if (!(c->flags & WSCH__F_SHUTDOWN)) w |= WSCH_WANT_READ;
    if (c->out_head) w |= WSCH_WANT_WRITE;
    return w;
}
WSCH_API int wsch_conn_error(const wsch_conn *c) { return (c->flags & WSCH__F_FAILED) ? c->fail_err : WSCH_OK; }
WSCH_API int wsch_conn_http_status(const wsch_conn *c) { return c->http_status; }
WSCH_API int64_t wsch_conn_retry_after_ms(const wsch_conn *c) {
    return c->hs && c->hs->retry_after_s ? (int64_t)(c->hs->retry_after_s - 1u) * 1000 : -1;
}
WSCH_API size_t wsch_conn_queued_bytes(const wsch_conn *c) {
    return c->state == WSCH_STATE_CLOSED ? 0 : c->out_bytes;  /* a closed conn sends nothing more */
}
WSCH_API void *wsch_conn_user(const wsch_conn *c) { return c->user; }
WSCH_API void wsch_conn_set_user(wsch_conn *c, void *user) { c->user = user; }

WSCH_API int wsch_conn_deflate(const wsch_conn *c, wsch_deflate_params *out) {
    if (!c || !c->z) {
        if (out) WSCH_MEMSET(out, 0, sizeof *out);
        return 0;
    }
    if (out) *out = c->z->agreed;
    return 1;
}

WSCH_API wsch_str wsch_conn_protocol(const wsch_conn *c) {
    wsch_str s;
    s.ptr = c->protocol ? c->protocol : "";
    s.len = c->protocol ? WSCH_STRLEN(c->protocol) : 0;
    return s;
}

/* --- shared frames (broadcast) ------------------------------------------- */

/* A shared frame; rsv 4 marks a compressed message. */
WSCH__PRIVATE int wsch__c_shared_make(const wsch_allocator *a, unsigned opcode, unsigned rsv, const void *payload,
                                      size_t len, wsch_shared **out) {
    wsch_frame_header h;
    unsigned char hdr[WSCH_FRAME_HEADER_MAX];
    size_t hlen;
    wsch_shared *s;
    if (!out) return WSCH_ERR_ARG;
    *out = NULL;
    if (opcode != WSCH_OP_TEXT && opcode != WSCH_OP_BINARY) return WSCH_ERR_ARG;
    if (len > (size_t)-1 - sizeof *s - WSCH_FRAME_HEADER_MAX) return WSCH_ERR_TOO_LARGE;
    WSCH_MEMSET(&h, 0, sizeof h);
    h.opcode = (uint8_t)opcode;
    h.rsv = (uint8_t)rsv;
    h.fin = 1;
    h.payload_len = len;
    hlen = wsch_frame_header_encode(hdr, &h);
    s = (wsch_shared *)wsch__alloc(a, sizeof *s + hlen + len);
    if (!s) return WSCH_ERR_NOMEM;
    s->refs = 1;
    s->size = hlen + len;
    s->header_len = hlen;
    s->deflated = NULL;
    s->window_bits = 0;
    if (a) s->allocator = *a;
    else WSCH_MEMSET(&s->allocator, 0, sizeof s->allocator);
    WSCH_MEMCPY(s + 1, hdr, hlen);
    if (payload && len) WSCH_MEMCPY((unsigned char *)(s + 1) + hlen, payload, len);
    *out = s;
    return WSCH_OK;
}

WSCH_API int wsch_shared_create(const wsch_allocator *a, wsch_opcode opcode, const void *payload, size_t len,
                                wsch_shared **out) {
    return wsch__c_shared_make(a, (unsigned)opcode, 0, payload, len, out);
}

WSCH_API int wsch_shared_compress(wsch_shared *s, const wsch_deflate_codec *codec, void *stream, int window_bits) {
    const unsigned char *frame;
    unsigned char *out;
    size_t len, n;
    int rc;
    if (!s || !codec || !stream || window_bits < 9 || window_bits > 15) return WSCH_ERR_ARG;
    if (s->deflated || s->window_bits) return WSCH_OK;      /* has a copy, or is one */
    frame = (const unsigned char *)(s + 1);
    len = s->size - s->header_len;
    s->window_bits = -1;            /* tried: not again for this frame, whatever comes */
    if (codec->reset(stream, codec->user) != 0) return WSCH_ERR_COMPRESSION;
    rc = wsch__z_run(codec, stream, 1, &s->allocator, frame + s->header_len, len, NULL, 0, (size_t)-1 - 1, &out, &n);
    if (rc != WSCH_OK) return rc;
    if (n < 4 || out[n - 4] || out[n - 3] || out[n - 2] != 0xFF || out[n - 1] != 0xFF) rc = WSCH_ERR_COMPRESSION;
    else if (n - 4 < len) rc = wsch__c_shared_make(&s->allocator, frame[0] & 0x0Fu, 4, out, n - 4, &s->deflated);
    if (rc == WSCH_OK && s->deflated) s->deflated->window_bits = window_bits;
    wsch__free(&s->allocator, out);
    return rc;
}

WSCH_API void *wsch_shared_payload(wsch_shared *s) { return (unsigned char *)(s + 1) + s->header_len; }
WSCH_API size_t wsch_shared_frame_size(const wsch_shared *s) { return s->size; }
WSCH_API void wsch_shared_release(wsch_shared *s) { wsch__c_shared_unref(s); }

WSCH__PRIVATE int wsch__c_send_shared(wsch_conn *c, wsch_shared *s) {
    const unsigned char *frame;
    size_t done = 0;
    wsch__chunk *ch;
    int rc;
    /* The compressed copy fits a peer whose inflater starts every message
       afresh with a window at least as large. */
    if (s->deflated && c->z && c->z->tx_fresh && s->deflated->window_bits <= c->z->agreed.server_max_window_bits)
        s = s->deflated;
    rc = wsch__c_room(c, s->size);
    if (rc != WSCH_OK) return rc;
    frame = (const unsigned char *)(s + 1);
    if (c->cork && (rc = wsch__c_uncork(c)) != WSCH_OK) return rc;
    if (!c->out_head) {
        done = wsch__c_send(c, frame, s->size);
        if (c->state == WSCH_STATE_CLOSED) return WSCH_ERR_TRANSPORT;
        if (done >= s->size) return WSCH_OK;
    }
    if (wsch__c_hold(c, sizeof *ch + s->size - done, 0) != WSCH_OK)
        return wsch__c_queue_or_cut(c, WSCH_ERR_QUEUE_FULL, done);
    ch = wsch__c_ref_chunk(c);
    if (!ch) {
        wsch__c_unhold(c, sizeof *ch + s->size - done);
        return wsch__c_queue_or_cut(c, WSCH_ERR_NOMEM, done);
    }
    ch->shared = s;
    s->refs++;
    ch->data = frame + done;
    ch->len = s->size - done;
    wsch__c_link_chunk(c, ch);
    return WSCH_OK;
}

WSCH_API int wsch_conn_send_shared(wsch_conn *c, wsch_shared *s) {
    int rc;
    if (!c || !s || c->desc->role != WSCH_ROLE_SERVER) return WSCH_ERR_ARG;
    if ((rc = wsch__c_check_send(c)) != WSCH_OK) return rc;
    if (c->out_opcode) return WSCH_ERR_STATE; /* a fragmented message is still open */
    wsch__c_enter(c);
    return wsch__c_leave(c, wsch__c_send_shared(c, s));
}

#endif /* WS_CHANNEL_NO_CONN */

// >>envelope
#ifndef WS_CHANNEL_NO_ENVELOPE

#if WSCH_JSON_MAX_DEPTH < 1
#error "WSCH_JSON_MAX_DEPTH must be at least 1"
#endif

/* wsch__json_scan flags. TRUSTED: the bytes were validated before (the
   payload span of a decoded envelope), so strings skip the UTF-8 check.
   Every bound is still checked: garbage passed as trusted gives wrong
   answers, never an out-of-bounds read. */
#define WSCH__JSON_TRUSTED 1u

WSCH__PRIVATE const char *wsch__json_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

/* Value of four hex digits at p, or -1 when fewer remain or one is not hex. */
WSCH__PRIVATE int32_t wsch__json_hex4(const char *p, const char *end) {
    int32_t v = 0;
    int i;
    if (end - p < 4) return -1;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        int32_t d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Bytes of the word that are '"', '\\' or below 0x20 (where a string scan
   must stop), as their top bits. The lowest flagged byte is always a true
   hit: a borrow can only flag bytes above one. */
WSCH__PRIVATE uint64_t wsch__json_word_stops(uint64_t x) {
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t q = x ^ (ones * (uint64_t)'"'), b = x ^ (ones * (uint64_t)'\\');
    return (((x - ones * 0x20u) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs;
}

/* With a count-trailing-zeros builtin on a little-endian target, the string
   scan jumps straight to the first stop byte of a word; elsewhere it finishes
   the word a byte at a time. */
#if !defined(WSCH_NO_SIMD) && (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define WSCH__JSON_CTZ64(x) ((unsigned)__builtin_ctzll(x))
#endif
#endif

/* Scans string content starting just after the opening quote. On WSCH_OK
   *pp is just past the closing quote and *escaped says whether a backslash
   was seen (so the raw bytes differ from the value). Bytes >= 0x80 only set
   a flag here; the UTF-8 layer checks them once for the whole string,
   unless the text is trusted. */
WSCH__PRIVATE int wsch__json_scan_string(const char **pp, const char *end, unsigned flags, int *escaped) {
    const uint64_t highs = 0x8080808080808080u;
    const char *p = *pp, *start = *pp;
    uint64_t high = 0, w;
    int esc = 0;
    int32_t u, lo;
    unsigned char c;
    for (;;) {
        while (end - p >= 8) {
            uint64_t stops;
            WSCH_MEMCPY(&w, p, 8);
            stops = wsch__json_word_stops(w);
            if (stops) {
#ifdef WSCH__JSON_CTZ64
                unsigned k = WSCH__JSON_CTZ64(stops) >> 3;  /* bytes before the stop */
                high |= w & ((((uint64_t)1) << (8 * k)) - 1u);
                p += k;
#endif
                break;
            }
            high |= w;
            p += 8;
        }
        for (; p < end; p++) {
            c = (unsigned char)*p;
            if (c < 0x20 || c == '"' || c == '\\') break;
            high |= c;
        }
        if (p == end) return WSCH_ERR_JSON;
        c = (unsigned char)*p;
        if (c == '"') break;
        if (c < 0x20) return WSCH_ERR_JSON;
        esc = 1;                                    /* c == '\\' */
        if (end - p < 2) return WSCH_ERR_JSON;
        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            continue;
        case 'u':
            break;
        default:
            return WSCH_ERR_JSON;
        }
        u = wsch__json_hex4(p + 2, end);
        if (u < 0) return WSCH_ERR_JSON;
        p += 6;
        if (u >= 0xDC00 && u <= 0xDFFF) return WSCH_ERR_UTF8;     /* low half first */
        if (u >= 0xD800) {
            if (u > 0xDBFF) continue;
            if (end - p < 2 || p[0] != '\\' || p[1] != 'u') return WSCH_ERR_UTF8;
            lo = wsch__json_hex4(p + 2, end);
            if (lo < 0) return WSCH_ERR_JSON;
            if (lo < 0xDC00 || lo > 0xDFFF) return WSCH_ERR_UTF8;
            p += 6;
        }
    }
    if ((high & highs) && !(flags & WSCH__JSON_TRUSTED) && !wsch_utf8_valid(start, (size_t)(p - start)))
        return WSCH_ERR_UTF8;
    *pp = p + 1;
    *escaped = esc;
    return WSCH_OK;
}

/* Decodes one character of string content that wsch__json_scan_string
   accepted (so every escape is complete and paired) into 1..4 UTF-8 bytes. */
WSCH__PRIVATE size_t wsch__json_unit(const char **pp, unsigned char out[4]) {
    const char *p = *pp;
    uint32_t cp;
    if (*p != '\\') {
        out[0] = (unsigned char)*p;
        *pp = p + 1;
        return 1;
    }
    if (p[1] != 'u') {
        switch (p[1]) {
        case 'b': out[0] = 0x08; break;
        case 'f': out[0] = 0x0C; break;
        case 'n': out[0] = 0x0A; break;
        case 'r': out[0] = 0x0D; break;
        case 't': out[0] = 0x09; break;
        default:  out[0] = (unsigned char)p[1]; break;     /* " \ / */
        }
        *pp = p + 2;
        return 1;
    }
    cp = (uint32_t)wsch__json_hex4(p + 2, p + 6);
    p += 6;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        cp = 0x10000u + ((cp - 0xD800u) << 10) + ((uint32_t)wsch__json_hex4(p + 2, p + 6) - 0xDC00u);
        p += 6;
    }
    *pp = p;
    if (cp < 0x80) { out[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0u | (cp >> 6));
        out[1] = (unsigned char)(0x80u | (cp & 0x3Fu));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0u | (cp >> 12));
        out[1] = (unsigned char)(0x80u | ((cp >> 6) & 0x3Fu));
        out[2] = (unsigned char)(0x80u | (cp & 0x3Fu));
        return 3;
    }
    out[0] = (unsigned char)(0xF0u | (cp >> 18));
    out[1] = (unsigned char)(0x80u | ((cp >> 12) & 0x3Fu));
    out[2] = (unsigned char)(0x80u | ((cp >> 6) & 0x3Fu));
    out[3] = (unsigned char)(0x80u | (cp & 0x3Fu));
    return 4;
}

/* Unescapes accepted string content [p, end) into out with a NUL. *len gets
   the full unescaped length even when it does not fit (WSCH_ERR_BUFFER). */
WSCH__PRIVATE int wsch__json_unescape(const char *p, const char *end, char *out, size_t cap, size_t *len) {
    size_t n = 0;
    unsigned char u[4];
    if (!WSCH_MEMCHR(p, '\\', (size_t)(end - p))) {      /* nothing to unescape */
        n = (size_t)(end - p);
        *len = n;
        if (cap <= n) return WSCH_ERR_BUFFER;
        WSCH_MEMCPY(out, p, n);
        out[n] = '\0';
        return WSCH_OK;
    }
    while (p < end) {
        size_t k = wsch__json_unit(&p, u);
        if (cap > n && cap - n > k) WSCH_MEMCPY(out + n, u, k);
        n += k;
    }
    *len = n;
    if (cap <= n) return WSCH_ERR_BUFFER;
    out[n] = '\0';
    return WSCH_OK;
}

/* Does a member name equal the NUL-terminated key? The name's raw bytes
   [p, end) are accepted string content, escaped says whether they hold a
   backslash (then they are compared after unescaping). key is read no
   further than its NUL: a mismatch stops the loop there, since no raw name
   byte and no looked-up key byte is 0. */
WSCH__PRIVATE int wsch__json_name_is(const char *p, const char *end, int escaped, const char *key) {
    size_t n = 0, j;
    unsigned char u[4];
    if (!escaped) {
        for (; p < end; p++, n++)
            if (key[n] != *p) return 0;
        return key[n] == '\0';
    }
    while (p < end) {
        size_t k = wsch__json_unit(&p, u);
        for (j = 0; j < k; j++, n++)
            if (u[j] == 0 || (unsigned char)key[n] != u[j]) return 0;
    }
    return key[n] == '\0';
}

/* End of the number starting at p, or NULL when it breaks RFC 8259's grammar.
   What follows the number is the caller's business. */
WSCH__PRIVATE const char *wsch__json_scan_number(const char *p, const char *end) {
    if (p < end && *p == '-') p++;
    if (p == end) return NULL;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') while (p < end && *p >= '0' && *p <= '9') p++;
    else return NULL;
    if (p < end && *p == '.') {
        p++;
        if (p == end || *p < '0' || *p > '9') return NULL;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p == end || *p < '0' || *p > '9') return NULL;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    return p;
}

/* Bit i of the container stack: 1 = object, 0 = array. */
WSCH__PRIVATE int wsch__json_bit(const unsigned char *stack, size_t i) {
    return (stack[i >> 3] >> (i & 7u)) & 1;
}

/* The one pass under everything: checks that [json, json+len) is exactly one
   JSON value and records the members of a top-level object named in keys:
   values[i] (cleared by the caller to {NULL, 0}) gets the raw value of
   keys[i]; a second member of that name is WSCH_ERR_JSON. The container
   stack is a bitset (1 = object) of WSCH_JSON_MAX_DEPTH bits, so memory is
   fixed and nothing recurses. *top gets the first byte of the value. */
WSCH__PRIVATE int wsch__json_scan(const char *json, size_t len, const char *const *keys, size_t nkeys,
                                  wsch_str *values, unsigned flags, char *top) {
    unsigned char stack[(WSCH_JSON_MAX_DEPTH + 7) / 8];
    size_t depth = 0, i;
    const char *p, *end, *key, *vstart = NULL;
    wsch_str *cur = NULL;           /* slot of the member whose value is being scanned */
    int rc, esc, in_obj;

    *top = 0;
    WSCH_MEMSET(stack, 0, sizeof stack);
    if (!json) return len ? WSCH_ERR_ARG : WSCH_ERR_JSON;
    p = wsch__json_ws(json, json + len);
    end = json + len;
    if (p == end) return WSCH_ERR_JSON;
    *top = *p;

value: /* p is at the first byte of a value */
    switch (*p) {
    case '{':
    case '[':
        if (depth == WSCH_JSON_MAX_DEPTH) return WSCH_ERR_JSON_DEPTH;
        in_obj = *p == '{';
        if (in_obj) stack[depth >> 3] = (unsigned char)(stack[depth >> 3] | (1u << (depth & 7u)));
        else stack[depth >> 3] = (unsigned char)(stack[depth >> 3] & ~(1u << (depth & 7u)));
        depth++;
        p = wsch__json_ws(p + 1, end);
        if (p == end) return WSCH_ERR_JSON;
        if (*p == (in_obj ? '}' : ']')) {
            p++;
            depth--;
            goto after;
        }
        if (in_obj) goto member;
        goto value;
    case '"':
        p++;
        rc = wsch__json_scan_string(&p, end, flags, &esc);
        if (rc != WSCH_OK) return rc;
        goto after;
    case 't':
        if (end - p < 4 || WSCH_MEMCMP(p, "true", 4) != 0) return WSCH_ERR_JSON;
        p += 4;
        goto after;
    case 'f':
        if (end - p < 5 || WSCH_MEMCMP(p, "false", 5) != 0) return WSCH_ERR_JSON;
        p += 5;
        goto after;
    case 'n':
        if (end - p < 4 || WSCH_MEMCMP(p, "null", 4) != 0) return WSCH_ERR_JSON;
        p += 4;
        goto after;
    default:
        p = wsch__json_scan_number(p, end);
        if (!p) return WSCH_ERR_JSON;
        goto after;
    }

member: /* p is at the first byte of a member, inside an object */
    if (*p != '"') return WSCH_ERR_JSON;
    key = ++p;
    rc = wsch__json_scan_string(&p, end, flags, &esc);
    if (rc != WSCH_OK) return rc;
    if (depth == 1) {
        cur = NULL;
        for (i = 0; i < nkeys && !cur; i++)
            if (wsch__json_name_is(key, p - 1, esc, keys[i])) cur = &values[i];
        if (cur && cur->ptr) return WSCH_ERR_JSON;              /* duplicate */
    }
    p = wsch__json_ws(p, end);
    if (p == end || *p != ':') return WSCH_ERR_JSON;
    p = wsch__json_ws(p + 1, end);
    if (p == end) return WSCH_ERR_JSON;
    if (depth == 1) vstart = p;
    goto value;

after: /* p is just past a complete value */
    if (cur && depth == 1) {
        cur->ptr = vstart;
        cur->len = (size_t)(p - vstart);
        cur = NULL;
    }
    p = wsch__json_ws(p, end);
    if (depth == 0) return p == end ? WSCH_OK : WSCH_ERR_JSON;
    if (p == end) return WSCH_ERR_JSON;
    if (wsch__json_bit(stack, depth - 1)) {
        if (*p == '}') { p++; depth--; goto after; }
        if (*p != ',') return WSCH_ERR_JSON;
        p = wsch__json_ws(p + 1, end);
        if (p == end) return WSCH_ERR_JSON;
        goto member;
    }
    if (*p == ']') { p++; depth--; goto after; }
    if (*p != ',') return WSCH_ERR_JSON;
    p = wsch__json_ws(p + 1, end);
    if (p == end) return WSCH_ERR_JSON;
    goto value;
}

WSCH_API int wsch_json_validate(const char *json, size_t len) {
    char top;
    return wsch__json_scan(json, len, NULL, 0, NULL, 0, &top);
}

WSCH_API wsch_json_kind wsch_json_kind_of(wsch_str v) {
    if (!v.ptr || v.len == 0) return WSCH_JSON_INVALID;
    switch (v.ptr[0]) {
    case '{': return WSCH_JSON_OBJECT;
    case '[': return WSCH_JSON_ARRAY;
    case '"': return WSCH_JSON_STRING;
    case 't': return WSCH_JSON_TRUE;
    case 'f': return WSCH_JSON_FALSE;
    case 'n': return WSCH_JSON_NULL;
    default:  return (v.ptr[0] == '-' || (v.ptr[0] >= '0' && v.ptr[0] <= '9')) ? WSCH_JSON_NUMBER : WSCH_JSON_INVALID;
    }
}

/* One pass over obj filling values[0..count) (see wsch_json_get_members). */
WSCH__PRIVATE int wsch__json_members(wsch_str obj, const char *const *keys, size_t count, wsch_str *values,
                                     unsigned flags) {
    size_t i;
    char top;
    int rc;
    if (count && (!keys || !values)) return WSCH_ERR_ARG;
    for (i = 0; i < count; i++) {
        if (!keys[i]) return WSCH_ERR_ARG;
        values[i].ptr = NULL;
        values[i].len = 0;
    }
    rc = wsch__json_scan(obj.ptr, obj.len, keys, count, values, flags, &top);
    if (rc == WSCH_OK && top != '{') rc = WSCH_ERR_NOT_FOUND;
    if (rc != WSCH_OK) {
        for (i = 0; i < count; i++) {
            values[i].ptr = NULL;
            values[i].len = 0;
        }
    }
    return rc;
}

/* wsch_envelope_decode that also finds up to 4 more top-level members in
   the same pass (the hub's "id", the client's channel position): extra[i]
   gets the raw value of keys[i], {NULL, 0} when absent. */
WSCH__PRIVATE int wsch__envelope_decode_with(const char *json, size_t len, wsch_envelope *env,
                                            const char *const *extra_keys, size_t nextra, wsch_str *extra) {
    const char *keys[6];
    wsch_str v[6];
    size_t i;
    int rc;
    WSCH_ASSERT(env != NULL && nextra <= 4u);
    WSCH_MEMSET(env, 0, sizeof *env);
    keys[0] = "type";
    keys[1] = "payload";
    for (i = 0; i < nextra; i++) keys[2u + i] = extra_keys[i];
    rc = wsch__json_members(wsch__h_span(json, len), keys, 2u + nextra, v, 0);
    for (i = 0; i < nextra; i++) extra[i] = v[2u + i];
    if (rc == WSCH_ERR_NOT_FOUND) return WSCH_ERR_NO_TYPE;
    if (rc != WSCH_OK) return rc;
    if (!v[0].ptr || v[0].ptr[0] != '"') return WSCH_ERR_NO_TYPE;
    rc = wsch__json_unescape(v[0].ptr + 1, v[0].ptr + v[0].len - 1, env->type, sizeof env->type, &env->type_len);
    if (rc == WSCH_OK && WSCH_MEMCHR(env->type, 0, env->type_len)) rc = WSCH_ERR_NO_TYPE;
    if (rc != WSCH_OK) {
        WSCH_MEMSET(env, 0, sizeof *env);
        return rc == WSCH_ERR_BUFFER ? WSCH_ERR_TOO_LARGE : rc;
    }
    env->payload = v[1];
    return WSCH_OK;
}

/* A session id (WSCH_SESSION_MAX) is valid: the client checks its own, the hub what it is sent. */
WSCH__PRIVATE int wsch__session_ok(const char *id, size_t len) {
    size_t i;
    if (len < 1u || len > WSCH_SESSION_MAX) return 0;
    for (i = 0; i < len; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

WSCH_API int wsch_envelope_decode(const char *json, size_t len, wsch_envelope *env) {
    return wsch__envelope_decode_with(json, len, env, NULL, 0, NULL);
}

WSCH_API int wsch_envelope_type_is(const wsch_envelope *env, const char *type) {
    size_t n = WSCH_STRLEN(type);
    return n == env->type_len && WSCH_MEMCMP(env->type, type, n) == 0;
}

WSCH_API size_t wsch_json_escaped_len(const char *s, size_t len) {
    wsch__writer w;
    wsch__w_init(&w, NULL, 0);
    wsch__w_put_json_string(&w, s, len);
    return w.len;
}

WSCH_API int wsch_json_escape_string(const char *s, size_t len, char *out, size_t cap, size_t *out_len) {
    wsch__writer w;
    size_t n;
    int rc;
    if ((!s && len) || (!out && cap)) return WSCH_ERR_ARG;
    if (len && !wsch_utf8_valid(s, len)) return WSCH_ERR_UTF8;
    wsch__w_init(&w, out, cap);
    wsch__w_put_json_string(&w, s, len);
    rc = wsch__w_finish(&w, &n);
    if (rc == WSCH_OK && out_len) *out_len = n;
    return rc;
}

/* {"type":T[,"payload":P]TAIL}, unchecked: wsch_envelope_size measures with
   it, wsch_envelope_encode writes with it. tail (tail_len bytes, starting
   with a comma) is more members: the hub's channel position, the client's
   message id. */
WSCH__PRIVATE void wsch__env_put(wsch__writer *w, const char *type, size_t type_len, const char *payload,
                                 size_t payload_len, const char *tail, size_t tail_len) {
    wsch__w_put(w, "{\"type\":", 8);
    wsch__w_put_json_string(w, type, type_len);
    if (payload) {
        wsch__w_put(w, ",\"payload\":", 11);
        wsch__w_put(w, payload, payload_len);
    }
    wsch__w_put(w, tail, tail_len);
    wsch__w_put(w, "}", 1);
}

WSCH_API size_t wsch_envelope_size(const char *type, size_t type_len, const char *payload, size_t payload_len) {
    wsch__writer w;
    wsch__w_init(&w, NULL, 0);
    wsch__env_put(&w, type, type_len, payload, payload_len, NULL, 0);
    return w.len;
}

/* What wsch_envelope_encode() checks before it writes a byte. */
WSCH__PRIVATE int wsch__env_check(const char *type, size_t type_len, const char *payload, size_t payload_len) {
    if ((!type && type_len) || (!payload && payload_len)) return WSCH_ERR_ARG;
    if (type_len > WSCH_ENVELOPE_TYPE_MAX) return WSCH_ERR_TOO_LARGE;
    if (type_len && WSCH_MEMCHR(type, 0, type_len)) return WSCH_ERR_ARG;
    if (type_len && !wsch_utf8_valid(type, type_len)) return WSCH_ERR_UTF8;
    return payload ? wsch_json_validate(payload, payload_len) : WSCH_OK;
}

WSCH_API int wsch_envelope_encode(const char *type, size_t type_len, const char *payload, size_t payload_len,
                                  char *out, size_t cap, size_t *out_len) {
    wsch__writer w;
    size_t n;
    int rc;
    if (!out && cap) return WSCH_ERR_ARG;
    rc = wsch__env_check(type, type_len, payload, payload_len);
    if (rc != WSCH_OK) return rc;
    wsch__w_init(&w, out, cap);
    wsch__env_put(&w, type, type_len, payload, payload_len, NULL, 0);
    rc = wsch__w_finish(&w, &n);
    if (rc == WSCH_OK && out_len) *out_len = n;
    return rc;
}

WSCH_API int wsch_json_unescape_string(wsch_str str, char *out, size_t cap, size_t *out_len) {
    const char *p = str.ptr;
    size_t n = 0;
    int esc, rc;
    if ((!str.ptr && str.len) || (!out && cap)) return WSCH_ERR_ARG;
    if (str.len < 2 || str.ptr[0] != '"') return WSCH_ERR_JSON;
    p++;
    rc = wsch__json_scan_string(&p, str.ptr + str.len, 0, &esc);
    if (rc != WSCH_OK) return rc;
    if (p != str.ptr + str.len) return WSCH_ERR_JSON;
    rc = wsch__json_unescape(str.ptr + 1, p - 1, out, cap, &n);
    if (out_len) *out_len = n;
    return rc;
}

WSCH_API int wsch_json_get_members(wsch_str obj, const char *const *keys, size_t count, wsch_str *values) {
    return wsch__json_members(obj, keys, count, values, 0);
}

WSCH_API int wsch_envelope_get_members(const wsch_envelope *env, const char *const *keys, size_t count,
                                       wsch_str *values) {
    if (!env) return WSCH_ERR_ARG;
    if (!env->payload.ptr) {
        wsch_str none = wsch__h_span(NULL, 0);
        int rc = wsch__json_members(none, keys, count, values, 0);    /* checks the arguments, clears values */
        return rc == WSCH_ERR_JSON ? WSCH_ERR_NOT_FOUND : rc;
    }
    return wsch__json_members(env->payload, keys, count, values, WSCH__JSON_TRUSTED);
}

/* Every single-key lookup is this: wsch_json_get_members with one key. */
WSCH_API int wsch_json_get_raw(wsch_str obj, const char *key, wsch_str *value) {
    int rc;
    WSCH_ASSERT(key != NULL && value != NULL);
    rc = wsch__json_members(obj, &key, 1, value, 0);
    if (rc == WSCH_OK && !value->ptr) rc = WSCH_ERR_NOT_FOUND;
    return rc;
}

/* A looked-up value (validated) as a string, unescaped into out. */
WSCH__PRIVATE int wsch__json_string_value(wsch_str v, char *out, size_t cap, size_t *n) {
    *n = 0;
    if (!v.ptr || v.ptr[0] != '"') return WSCH_ERR_NOT_FOUND;
    return wsch__json_unescape(v.ptr + 1, v.ptr + v.len - 1, out, cap, n);
}

/* The same, as a channel name: non-empty and without U+0000. */
WSCH__PRIVATE int wsch__env_channel_value(wsch_str v, char *out, size_t cap, size_t *n) {
    int rc = wsch__json_string_value(v, out, cap, n);
    if (rc != WSCH_OK) return rc;
    return *n == 0 || WSCH_MEMCHR(out, 0, *n) ? WSCH_ERR_NOT_FOUND : WSCH_OK;
}

WSCH_API int wsch_json_get_string(wsch_str obj, const char *key, char *out, size_t cap, size_t *out_len) {
    wsch_str v;
    size_t n = 0;
    int rc;
    if (!out && cap) return WSCH_ERR_ARG;
    rc = wsch_json_get_raw(obj, key, &v);
    if (rc == WSCH_OK) rc = wsch__json_string_value(v, out, cap, &n);
    if (out_len) *out_len = n;
    return rc;
}

WSCH_API int wsch_envelope_get_channel(wsch_str payload, char *out, size_t cap, size_t *out_len) {
    wsch_str v;
    size_t n = 0;
    int rc;
    if (!out && cap) return WSCH_ERR_ARG;
    rc = wsch_json_get_raw(payload, "channel", &v);
    if (rc == WSCH_OK) rc = wsch__env_channel_value(v, out, cap, &n);
    if (out_len) *out_len = n;
    return rc;
}

/* A number token split into what the conversions need: the sign, the
   significant digits (first to last nonzero, skipping the '.') and the power
   of ten that scales them as an integer. exp10 saturates far beyond any
   double or int64 so huge exponents cannot overflow the arithmetic. */
typedef struct wsch__json_num {
    int neg;
    const char *int_p, *frac_p;     /* digit runs; the fraction may be empty */
    size_t int_len, frac_len;
    size_t first, last;             /* indexes into int digits ++ frac digits */
    size_t sig;                     /* last - first + 1, 0 when the value is zero */
    int64_t exp10;                  /* value = digits[first..last] * 10^exp10 */
} wsch__json_num;

WSCH__PRIVATE char wsch__json_num_digit(const wsch__json_num *n, size_t i) {
    return i < n->int_len ? n->int_p[i] : n->frac_p[i - n->int_len];
}

/* v is a number token the scanner accepted. */
WSCH__PRIVATE void wsch__json_num_split(wsch_str v, wsch__json_num *n) {
    const char *p = v.ptr, *end = v.ptr + v.len;
    const int64_t cap = (int64_t)1 << 40;
    int64_t e = 0;
    size_t total, i;
    int eneg = 0;
    n->neg = *p == '-';
    if (n->neg) p++;
    n->int_p = p;
    while (p < end && *p >= '0' && *p <= '9') p++;
    n->int_len = (size_t)(p - n->int_p);
    n->frac_p = p;
    n->frac_len = 0;
    if (p < end && *p == '.') {
        n->frac_p = ++p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        n->frac_len = (size_t)(p - n->frac_p);
    }
    if (p < end) {                                  /* 'e' or 'E' */
        p++;
        if (*p == '+' || *p == '-') eneg = *p++ == '-';
        for (; p < end; p++) if (e < cap) e = e * 10 + (*p - '0');
        if (eneg) e = -e;
    }
    total = n->int_len + n->frac_len;
    n->first = n->last = 0;
    n->sig = 0;
    n->exp10 = 0;
    for (i = 0; i < total && wsch__json_num_digit(n, i) == '0'; i++) {}
    if (i == total) return;                         /* zero */
    n->first = i;
    for (i = total - 1; wsch__json_num_digit(n, i) == '0'; i--) {}
    n->last = i;
    n->sig = n->last - n->first + 1;
    /* Digits after `last` are zeros folded into the exponent. Lengths are
       bounded by the input, far below 2^62. */
    n->exp10 = e - (int64_t)n->frac_len + (int64_t)(total - 1 - n->last);
}

/* A raw value the scanner accepted, as an exact integer (see wsch_json_get_int). */
WSCH__PRIVATE int wsch__json_int_value(wsch_str v, int64_t *out) {
    wsch__json_num n;
    uint64_t mag = 0, limit;
    size_t i;
    int64_t k;
    if (!v.ptr || wsch_json_kind_of(v) != WSCH_JSON_NUMBER) return WSCH_ERR_NOT_FOUND;
    wsch__json_num_split(v, &n);
    if (n.sig == 0) { *out = 0; return WSCH_OK; }
    if (n.exp10 < 0) return WSCH_ERR_NOT_FOUND;            /* has a nonzero fraction */
    if ((int64_t)n.sig + n.exp10 > 19) return WSCH_ERR_TOO_LARGE;   /* >= 10^19 */
    for (i = n.first; i <= n.last; i++) mag = mag * 10u + (uint64_t)(wsch__json_num_digit(&n, i) - '0');
    for (k = 0; k < n.exp10; k++) mag *= 10u;             /* at most 19 digits: fits */
    limit = n.neg ? (uint64_t)1 << 63 : ((uint64_t)1 << 63) - 1u;
    if (mag > limit) return WSCH_ERR_TOO_LARGE;
    *out = n.neg ? (mag == (uint64_t)1 << 63 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    return WSCH_OK;
}

WSCH_API int wsch_json_array_next(wsch_str array, size_t *pos, wsch_str *elem) {
    const char *p, *end, *start;
    size_t depth = 0;
    if (!array.ptr || !pos || !elem || array.len < 2 || array.ptr[0] != '[' || *pos > array.len) return WSCH_ERR_JSON;
    end = array.ptr + array.len;
    p = wsch__json_ws(array.ptr + (*pos ? *pos : 1u), end);
    if (p < end && *p == ',') p = wsch__json_ws(p + 1, end);
    if (p >= end || *p == ']') return WSCH_ERR_NOT_FOUND;
    start = p;
    while (p < end) {               /* to the end of the element */
        char c = *p;
        if (c == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\' && p + 1 < end) p++;
            if (p < end) p++;
            if (!depth) break;
        } else if (c == '{' || c == '[') {
            depth++;
            p++;
        } else if (c == '}' || c == ']') {
            if (!depth) break;      /* the array's own end, after a scalar */
            p++;
            if (--depth == 0) break;
        } else if (!depth && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            break;
        } else {
            p++;
        }
    }
    elem->ptr = start;
    elem->len = (size_t)(p - start);
    *pos = (size_t)(p - array.ptr);
    return WSCH_OK;
}

WSCH_API int wsch_json_get_int(wsch_str obj, const char *key, int64_t *out) {
    wsch_str v;
    int rc;
    WSCH_ASSERT(out != NULL);
    rc = wsch_json_get_raw(obj, key, &v);
    return rc != WSCH_OK ? rc : wsch__json_int_value(v, out);
}

WSCH_API int wsch_json_get_number(wsch_str obj, const char *key, double *out) {
    /* strtod reads the locale's decimal point, so it is given digits and an
       exponent only: "12.5e3" becomes "125e2". */
    char buf[1 + 512 + 2 + 24];
    char tmp[24];
    wsch_str v;
    wsch__json_num n;
    size_t i, len = 0, t = 0;
    int64_t e;
    double d;
    int rc, saved_errno;
    WSCH_ASSERT(out != NULL);
    rc = wsch_json_get_raw(obj, key, &v);
    if (rc != WSCH_OK) return rc;
    if (wsch_json_kind_of(v) != WSCH_JSON_NUMBER) return WSCH_ERR_NOT_FOUND;
    if (v.len > 512) return WSCH_ERR_TOO_LARGE;
    wsch__json_num_split(v, &n);
    if (n.sig == 0) { *out = n.neg ? -0.0 : 0.0; return WSCH_OK; }
    if (n.neg) buf[len++] = '-';
    for (i = n.first; i <= n.last; i++) buf[len++] = wsch__json_num_digit(&n, i);
    buf[len++] = 'e';
    /* Beyond +-100000 the result is already 0 or infinite for <= 512 digits. */
    e = n.exp10 > 100000 ? 100000 : n.exp10 < -100000 ? -100000 : n.exp10;
    if (e < 0) { buf[len++] = '-'; e = -e; }
    do { tmp[t++] = (char)('0' + e % 10); e /= 10; } while (e);
    while (t) buf[len++] = tmp[--t];
    buf[len] = '\0';
    saved_errno = errno;                            /* ERANGE is no news to the caller */
    d = strtod(buf, NULL);
    errno = saved_errno;
    if (d > DBL_MAX || d < -DBL_MAX) return WSCH_ERR_TOO_LARGE;
    *out = d;
    return WSCH_OK;
}
#endif /* WS_CHANNEL_NO_ENVELOPE */

// >>client
#ifndef WS_CHANNEL_NO_CLIENT
/* The client is a thin state machine around one wsch_conn at a time. Every
   public entry point counts itself in c->depth so that a destroy from inside
   a callback only marks the client dead; the memory goes when the outermost
   call returns. After every user callback the code re-checks c->dead (and,
   where the next step depends on it, c->epoch, bumped on each state change). */

typedef enum wsch__cl_state {
    WSCH__CL_IDLE = 0,
    WSCH__CL_CONNECTING,
    WSCH__CL_HANDSHAKE,
    WSCH__CL_OPEN,
    WSCH__CL_WAITING,
    WSCH__CL_CLOSING
} wsch__cl_state;

typedef struct wsch__cl_handler {
    uint32_t id;                /* 0: removed, waiting for compaction */
    wsch_client_handler_fn fn;
    void *user;
    int wildcard;
    size_t type_len;
    char type[WSCH_ENVELOPE_TYPE_MAX + 1];
} wsch__cl_handler;

/* One offline message; its bytes follow the struct in the same allocation. */
typedef struct wsch__cl_qmsg {
    struct wsch__cl_qmsg *next;
    size_t len;
} wsch__cl_qmsg;

/* One reliable message in the outbox; its envelope follows the struct. */
typedef struct wsch__cl_omsg {
    struct wsch__cl_omsg *next;
    uint64_t id;
    size_t len;
    uint32_t sends;
} wsch__cl_omsg;

/* One remembered subscription; its name (NUL-terminated) follows the struct. */
typedef struct wsch__cl_sub {
    uint64_t offset;                        /* position: of the last message seen */
    char epoch[WSCH_CLIENT_EPOCH_MAX + 1];
    int known;                              /* a position is known */
    wsch_recovery recovery;                 /* PENDING: recover was sent on this link, a confirmation is due */
    uint32_t history;                       /* messages to ask for on the first subscribe */
    size_t len;
    /* Presence (asked): members sorted by user id; without the list (over
       the hub's cap) only its count. */
    int presence, listed;
    struct wsch__cl_member **members;
    size_t num_members, cap_members;
    uint64_t users;                         /* the hub's count, when not listed */
} wsch__cl_sub;

/* A member: its user id (user_len bytes, NUL) and info (info_len, NUL) follow. */
typedef struct wsch__cl_member {
    size_t user_len, info_len;              /* info_len 0: none */
} wsch__cl_member;
#define WSCH__CL_MEMBER_ID(m) ((const char *)((m) + 1))
#define WSCH__CL_MEMBER_INFO(m) ((m)->info_len ? WSCH__CL_MEMBER_ID(m) + (m)->user_len + 1u : NULL)

#define WSCH__CL_SUB_NAME(sub) ((char *)((sub) + 1))

struct wsch_client {
    wsch_client_desc d;         /* resolved; string fields point into strings */
    wsch_conn_desc cd;          /* borrowed by every connection the client creates */
    char *strings;              /* one block: host, path, query, origin, protocols, headers */
    uint16_t terminal[WSCH_CLIENT_MAX_TERMINAL_CODES + 2];
    size_t num_terminal;

    wsch__cl_state state;
    uint32_t epoch;
    wsch_status reported; /* last status given to on_status */
    wsch_stop stop;
    wsch_conn *conn;
    int transport_live;         /* a transport is open or being opened: close() owed */
    int creating;               /* inside wsch_conn_create() */
    int closed_early;           /* transport_closed() arrived during it */
    uint32_t attempts;          /* failed tries in a row: the max_attempts count */
    uint32_t retries;           /* retries since the last lasting link or connect(): the backoff's n */
    uint32_t retry_after_ms;    /* the server asked (429/503 Retry-After) to wait this long */
    uint64_t opened_at;         /* now_ms() when the current link opened */
    uint64_t retry_at;
    int rx_since_ping;
    int last_close_code;
    int http_status;            /* of the last handshake answer, 0 before any */
    int announced;              /* on_connect ran for the current link: on_disconnect is owed */
    uint32_t armed;             /* bit n: timer id n is armed (ids < 32) */

    wsch__cl_handler *handlers;
    size_t num_handlers, cap_handlers;
    uint32_t next_handler_id;
    unsigned dispatching;
    int handlers_dirty;

    wsch__cl_sub **subs;
    size_t num_subs, cap_subs;

    wsch__cl_qmsg *q_head, *q_tail;
    size_t q_count, q_bytes;

    wsch__cl_omsg *o_head, *o_tail;
    wsch__cl_omsg *o_unsent;    /* the first one not yet sent on the current link */
    size_t o_count, o_bytes;
    uint64_t next_id, resent;
    char session[WSCH_SESSION_MAX + 1];

    unsigned depth;
    int dead;
};

static const char wsch__cl_ping[] = "{\"type\":\"ping\"}";

WSCH__PRIVATE int wsch__cl_outbox_take(wsch_client *c, uint64_t id);
WSCH__PRIVATE void wsch__cl_outbox_give_up(wsch_client *c);
WSCH__PRIVATE int wsch__cl_find_sub(const wsch_client *c, const char *channel, size_t len, size_t *index);

WSCH__PRIVATE void wsch__cl_log(wsch_client *c, const char *msg) {
    if (c->d.effects.log) c->d.effects.log(msg, c->d.user);
}

WSCH__PRIVATE void wsch__cl_set_state(wsch_client *c, wsch__cl_state s) {
    c->state = s;
    c->epoch++;
}

WSCH__PRIVATE wsch_status wsch__cl_status_of(wsch__cl_state s) {
    switch (s) {
    case WSCH__CL_CONNECTING:
    case WSCH__CL_HANDSHAKE: return WSCH_STATUS_CONNECTING;
    case WSCH__CL_OPEN: return WSCH_STATUS_CONNECTED;
    default: return WSCH_STATUS_DISCONNECTED;
    }
}

/* Reports the current status if it differs from the last one reported. A
   callback that changes the state reports the change itself; the loop only
   catches what it left unreported, so no stale status is ever delivered. */
WSCH__PRIVATE void wsch__cl_notify(wsch_client *c) {
    while (!c->dead) {
        wsch_status st = wsch__cl_status_of(c->state);
        if (st == c->reported) break;
        c->reported = st;
        if (c->d.on_status) c->d.on_status(c, st, c->d.user);
    }
}

WSCH__PRIVATE void wsch__cl_error(wsch_client *c, int err, const char *what) {
    if (!c->dead && c->d.on_error) c->d.on_error(c, err, what, c->d.user);
}

/* ---- timers: one armed bit per id; conn ids 1..15, client ids 16.. ---- */

WSCH__PRIVATE void wsch__cl_timer_set(wsch_client *c, unsigned id, uint32_t ms) {
    c->armed |= (uint32_t)1u << id;
    c->d.effects.timer_set(id, ms, c->d.user);
}

WSCH__PRIVATE void wsch__cl_timer_cancel(wsch_client *c, unsigned id) {
    uint32_t bit = (uint32_t)1u << id;
    if (!(c->armed & bit)) return;
    c->armed &= ~bit;
    c->d.effects.timer_cancel(id, c->d.user);
}

/* Trampolines handed to the connection. Its user pointer is the client, set
   to NULL just before the connection is destroyed, so a connection whose free
   is deferred can no longer reach the caller's effects. */
WSCH__PRIVATE size_t wsch__cl_conn_send(const void *data, size_t len, void *user) {
    wsch_client *c = (wsch_client *)user;
    if (!c) return len;
    return c->d.effects.send(data, len, c->d.user);
}

WSCH__PRIVATE void wsch__cl_conn_close(void *user) {
    wsch_client *c = (wsch_client *)user;
    if (!c || !c->transport_live) return;
    c->transport_live = 0;
    c->d.effects.close(c->d.user);
}

WSCH__PRIVATE void wsch__cl_conn_timer_set(unsigned id, uint32_t ms, void *user) {
    wsch_client *c = (wsch_client *)user;
    WSCH_ASSERT(id > 0 && id < WSCH_CLIENT_TIMER_RETRY);
    if (!c || id == 0 || id >= WSCH_CLIENT_TIMER_RETRY) return;
    wsch__cl_timer_set(c, id, ms);
}

WSCH__PRIVATE void wsch__cl_conn_timer_cancel(unsigned id, void *user) {
    wsch_client *c = (wsch_client *)user;
    if (!c || id == 0 || id >= WSCH_CLIENT_TIMER_RETRY) return;
    wsch__cl_timer_cancel(c, id);
}

WSCH__PRIVATE void wsch__cl_conn_random(void *buf, size_t len, void *user) {
    wsch_client *c = (wsch_client *)user;
    if (c) c->d.effects.random_bytes(buf, len, c->d.user);
}

/* Destroys the connection (if any), cancels its timers and the heartbeat,
   and closes the transport if one is still owed a close. No events run. */
WSCH__PRIVATE void wsch__cl_drop_conn(wsch_client *c) {
    unsigned id;
    wsch_conn *cn = c->conn;
    wsch__cl_timer_cancel(c, WSCH_CLIENT_TIMER_HEARTBEAT);
    wsch__cl_timer_cancel(c, WSCH_CLIENT_TIMER_PONG);
    for (id = 1; id < WSCH_CLIENT_TIMER_RETRY; id++) wsch__cl_timer_cancel(c, id);
    c->conn = NULL;
    if (cn) {
        wsch_conn_set_user(cn, NULL);
        wsch_conn_destroy(cn);
    }
    if (c->transport_live) {
        c->transport_live = 0;
        c->d.effects.close(c->d.user);
    }
}

/* ---- backoff ---- */

WSCH__PRIVATE uint32_t wsch__cl_backoff(wsch_client *c, uint32_t n) {
    uint64_t delay = c->d.backoff_max_ms;
    if (n < 32) {
        uint64_t d = (uint64_t)c->d.backoff_base_ms << n;
        if (d < delay) delay = d;
    }
    if (!c->d.no_jitter && delay > 1) {
        unsigned char rb[8];
        uint64_t r = 0;
        size_t i;
        c->d.effects.random_bytes(rb, sizeof rb, c->d.user);
        for (i = 0; i < sizeof rb; i++) r = (r << 8) | rb[i];
        delay -= r % (delay / 2 + 1);
    }
    return (uint32_t)delay;
}

/* Arms the next retry, or stops when the retries are used up. */
WSCH__PRIVATE void wsch__cl_schedule_retry(wsch_client *c) {
    uint32_t delay;
    if (c->d.max_attempts != WSCH_CLIENT_FOREVER && c->attempts >= c->d.max_attempts) {
        c->stop = WSCH_STOP_MAX_ATTEMPTS;
        wsch__cl_set_state(c, WSCH__CL_IDLE);
        wsch__cl_log(c, "client: tries used up, stopping");
        return;
    }
    delay = wsch__cl_backoff(c, c->retries);
    if (c->retries < 0xFFFFFFFFu) c->retries++;
    if (c->retry_after_ms > delay) delay = c->retry_after_ms;
    c->retry_after_ms = 0;
    c->retry_at = c->d.effects.now_ms(c->d.user) + delay;
    wsch__cl_set_state(c, WSCH__CL_WAITING);
    wsch__cl_timer_set(c, WSCH_CLIENT_TIMER_RETRY, delay);
    wsch__cl_log(c, "client: retry scheduled");
}

WSCH__PRIVATE int wsch__cl_is_terminal(const wsch_client *c, int code) {
    size_t i;
    for (i = 0; i < c->num_terminal; i++) {
        if (c->terminal[i] == code) return 1;
    }
    return 0;
}

/* The link is gone (or never came up): decide the next step, then tell the
   caller. Events are facts, so they are delivered even if a status callback
   already moved the client on; only a destroy stops them. */
/* on_disconnect, only for a link whose on_connect ran: a link lost while
   its subscriptions or queue were still being replayed was never announced. */
WSCH__PRIVATE void wsch__cl_disconnected(wsch_client *c, int code, const char *reason, size_t reason_len) {
    if (c->dead || !c->announced) return;
    c->announced = 0;
    if (c->d.on_disconnect) c->d.on_disconnect(c, code, reason ? reason : "", reason ? reason_len : 0, c->d.user);
}

/* on_stop, when the step that began at epoch e left the client stopped. */
WSCH__PRIVATE void wsch__cl_stopped(wsch_client *c, uint32_t e) {
    if (c->dead || c->state != WSCH__CL_IDLE || c->epoch != e || c->stop == WSCH_STOP_NONE) return;
    /* Stopped for good, not by the user: nothing will carry the outbox. */
    if (c->stop != WSCH_STOP_USER) wsch__cl_outbox_give_up(c);
    if (c->dead || c->state != WSCH__CL_IDLE || c->epoch != e) return;
    if (c->d.on_stop) c->d.on_stop(c, c->stop, c->d.user);
}

WSCH__PRIVATE void wsch__cl_lost(wsch_client *c, int code, const char *reason, size_t reason_len, int was_open,
                                 int err, const char *what) {
    uint32_t e;
    wsch__cl_drop_conn(c);
    /* A link that held for min_uptime_ms starts the counting afresh; a try
       that never opened, broke before it was announced or soon after,
       counts as failed. */
    if (was_open && c->announced && c->d.effects.now_ms(c->d.user) - c->opened_at >= c->d.min_uptime_ms)
        c->attempts = c->retries = 0;
    else if (c->attempts < 0xFFFFFFFFu)
        c->attempts++;
    if (code) c->last_close_code = code;
    if (!was_open && (c->http_status == 401 || c->http_status == 403)) {
        /* the same credentials will not do better */
        c->stop = WSCH_STOP_REFUSED;
        wsch__cl_set_state(c, WSCH__CL_IDLE);
        wsch__cl_log(c, "client: handshake refused, stopping");
    } else if (wsch__cl_is_terminal(c, code)) {
        c->stop = WSCH_STOP_TERMINAL_CODE;
        wsch__cl_set_state(c, WSCH__CL_IDLE);
        wsch__cl_log(c, "client: terminal close code, stopping");
    } else {
        wsch__cl_schedule_retry(c);
    }
    e = c->epoch;
    wsch__cl_notify(c);
    if (was_open) wsch__cl_disconnected(c, code, reason, reason_len);
    if (err) wsch__cl_error(c, err, what);
    wsch__cl_stopped(c, e);
}

/* Asks the caller for a transport. */
WSCH__PRIVATE void wsch__cl_start_connect(wsch_client *c) {
    uint32_t e;
    wsch__cl_set_state(c, WSCH__CL_CONNECTING);
    e = c->epoch;
    wsch__cl_log(c, "client: connecting");
    wsch__cl_notify(c);
    if (c->dead || c->epoch != e) return;
    /* Only now is a transport owed a close(): the status callback above may
       have disconnected or destroyed the client before connect() ran. */
    c->transport_live = 1;
    c->d.effects.connect(c->cd.request.host, c->cd.request.port, c->d.user);
}

/* ---- sending ---- */

/* Encodes an envelope (and tail: more members, see wsch__env_put) into
   stack (stack_cap bytes) when it fits, else into a fresh allocation; the
   caller frees *out when it is not stack. */
WSCH__PRIVATE int wsch__cl_encode(wsch_client *c, const char *type, size_t type_len, const char *payload,
                                  size_t payload_len, const char *tail, size_t tail_len, char *stack,
                                  size_t stack_cap, char **out, size_t *out_len) {
    wsch__writer w;
    size_t need;
    char *buf = stack;
    int r = wsch__env_check(type, type_len, payload, payload_len);
    if (r != WSCH_OK) return r;
    wsch__w_init(&w, NULL, 0);
    wsch__env_put(&w, type, type_len, payload, payload_len, tail, tail_len);
    need = w.len;
    if (need == (size_t)-1) return WSCH_ERR_TOO_LARGE;
    if (need + 1 > stack_cap) {
        buf = (char *)wsch__alloc(&c->d.allocator, need + 1);
        if (!buf) return WSCH_ERR_NOMEM;
    }
    wsch__w_init(&w, buf, need + 1);
    wsch__env_put(&w, type, type_len, payload, payload_len, tail, tail_len);
    (void)wsch__w_finish(&w, out_len);      /* it fits: measured above */
    *out = buf;
    return WSCH_OK;
}

WSCH__PRIVATE int wsch__cl_enqueue(wsch_client *c, const char *text, size_t len) {
    wsch__cl_qmsg *m;
    if (c->d.no_offline_queue) return WSCH_ERR_STATE;
    if (c->q_count >= c->d.queue_max_count || len > c->d.queue_max_bytes - c->q_bytes) return WSCH_ERR_QUEUE_FULL;
    if (len > (size_t)-1 - sizeof *m) return WSCH_ERR_TOO_LARGE;
    m = (wsch__cl_qmsg *)wsch__alloc(&c->d.allocator, sizeof *m + len);
    if (!m) return WSCH_ERR_NOMEM;
    m->next = NULL;
    m->len = len;
    WSCH_MEMCPY((char *)(m + 1), text, len);
    if (c->q_tail) c->q_tail->next = m;
    else c->q_head = m;
    c->q_tail = m;
    c->q_count++;
    c->q_bytes += len;
    return WSCH_OK;
}

/* Sends queued messages in order while the connection takes them. A message
   the connection refuses stays at the head and is retried on writable() or
   on the next open; nothing is dropped. */
WSCH__PRIVATE void wsch__cl_flush(wsch_client *c) {
    while (c->o_unsent && c->state == WSCH__CL_OPEN && c->conn && !c->dead) {
        wsch__cl_omsg *m = c->o_unsent;
        int r = wsch_conn_send(c->conn, WSCH_OP_TEXT, (const char *)(m + 1), m->len);
        if (r != WSCH_OK || c->dead) return;    /* the outbox keeps it: writable() or the next link */
        if (++m->sends == 2u) c->resent++;
        if (c->o_unsent == m) c->o_unsent = m->next;
    }
    while (c->q_head && c->state == WSCH__CL_OPEN && c->conn && !c->dead) {
        wsch__cl_qmsg *m = c->q_head;
        int r = wsch_conn_send(c->conn, WSCH_OP_TEXT, (const char *)(m + 1), m->len);
        if (r != WSCH_OK || c->dead) break;
        c->q_head = m->next;
        if (!c->q_head) c->q_tail = NULL;
        c->q_count--;
        c->q_bytes -= m->len;
        wsch__free(&c->d.allocator, m);
    }
}

/* Sends now when open and nothing older waits; otherwise queues. */
WSCH__PRIVATE int wsch__cl_send_text(wsch_client *c, const char *text, size_t len) {
    if (c->state == WSCH__CL_OPEN && c->conn) {
        if (c->q_head || c->o_unsent) wsch__cl_flush(c);
        if (c->dead) return WSCH_ERR_STATE;
        if (!c->q_head && c->state == WSCH__CL_OPEN && c->conn) return wsch_conn_send(c->conn, WSCH_OP_TEXT, text, len);
    }
    return wsch__cl_enqueue(c, text, len);
}

/* {"channel":C[,"recover":{"offset":N,"epoch":E} or ,"history":K][,"presence":true]}; the
   channel was checked to be UTF-8 when subscribed, the epoch when it came. */
WSCH__PRIVATE void wsch__cl_put_channel(wsch__writer *w, const char *channel, size_t len, const wsch__cl_sub *sub) {
    wsch__w_puts(w, "{\"channel\":");
    wsch__w_put_json_string(w, channel, len);
    if (sub && sub->known) {
        wsch__w_puts(w, ",\"recover\":{\"offset\":");
        wsch__w_put_uint(w, sub->offset);
        wsch__w_puts(w, ",\"epoch\":");
        wsch__w_put_json_string(w, sub->epoch, WSCH_STRLEN(sub->epoch));
        wsch__w_puts(w, "}");
    } else if (sub && sub->history) {
        wsch__w_puts(w, ",\"history\":");
        wsch__w_put_uint(w, sub->history);
    }
    if (sub && sub->presence) wsch__w_puts(w, ",\"presence\":true");
    wsch__w_puts(w, "}");
}

/* Sends {"type":type,"payload":{"channel":channel...}} on the open
   connection; sub (NULL for an unsubscribe) adds what a subscribe asks. */
WSCH__PRIVATE int wsch__cl_send_channel_msg(wsch_client *c, const char *type, const char *channel, size_t len,
                                            const wsch__cl_sub *sub) {
    char pstack[256], estack[384];
    char *payload = pstack, *env = NULL;
    size_t elen = 0;
    wsch__writer w;
    int r;
    wsch__w_init(&w, pstack, sizeof pstack);
    wsch__cl_put_channel(&w, channel, len, sub);
    if (w.overflow) { /* a long name: w.len is what it needs */
        if (w.len == SIZE_MAX) return WSCH_ERR_TOO_LARGE;
        payload = (char *)wsch__alloc(&c->d.allocator, w.len);
        if (!payload) return WSCH_ERR_NOMEM;
        wsch__w_init(&w, payload, w.len);
        wsch__cl_put_channel(&w, channel, len, sub);
    }
    r = wsch__cl_encode(c, type, WSCH_STRLEN(type), payload, w.len, NULL, 0, estack, sizeof estack, &env, &elen);
    if (payload != pstack) wsch__free(&c->d.allocator, payload);
    if (r != WSCH_OK) return r;
    r = (c->state == WSCH__CL_OPEN && c->conn) ? wsch_conn_send(c->conn, WSCH_OP_TEXT, env, elen) : WSCH_ERR_STATE;
    if (env != estack) wsch__free(&c->d.allocator, env);
    return r;
}

/* ---- connection events ---- */

WSCH__PRIVATE void wsch__cl_on_open(wsch_conn *cn, void *user) {
    wsch_client *c = (wsch_client *)user;
    uint32_t e;
    size_t i;
    if (!c || cn != c->conn || c->state != WSCH__CL_HANDSHAKE) return;
    wsch__cl_set_state(c, WSCH__CL_OPEN);
    e = c->epoch;
    c->opened_at = c->d.effects.now_ms(c->d.user);
    c->http_status = wsch_conn_http_status(cn);
    c->rx_since_ping = 1;
    wsch__cl_log(c, "client: open");
    if (c->d.heartbeat != WSCH_HEARTBEAT_OFF)
        wsch__cl_timer_set(c, WSCH_CLIENT_TIMER_HEARTBEAT, c->d.heartbeat_interval_ms);
    for (i = 0; i < c->num_subs && c->epoch == e && !c->dead; i++) {
        wsch__cl_sub *sub = c->subs[i];
        int r;
        if (sub->known) sub->recovery = WSCH_RECOVERY_PENDING;
        r = wsch__cl_send_channel_msg(c, "subscribe", WSCH__CL_SUB_NAME(sub), sub->len, sub);
        /* A link that ended meanwhile replays the set on the next one. */
        if (r != WSCH_OK && !c->dead && c->epoch == e) wsch__cl_error(c, r, "resubscribe failed");
    }
    c->o_unsent = c->o_head;        /* the outbox goes again, whatever the last link took */
    if (c->epoch == e) wsch__cl_flush(c);
    if (c->dead || c->epoch != e) return;
    wsch__cl_notify(c);
    if (c->dead || c->epoch != e) return;
    c->announced = 1;
    if (c->d.on_connect) c->d.on_connect(c, c->d.user);
}

WSCH__PRIVATE void wsch__cl_dispatch(wsch_client *c, const wsch_client_message *m) {
    size_t i, n = c->num_handlers;   /* handlers added meanwhile wait for the next message */
    c->dispatching++;
    for (i = 0; i < n && !c->dead; i++) {
        wsch__cl_handler *h = &c->handlers[i];
        if (h->id == 0) continue;
        if (h->wildcard || (h->type_len == m->type_len && WSCH_MEMCMP(h->type, m->type, m->type_len) == 0))
            h->fn(c, m, h->user);
    }
    c->dispatching--;
    if (!c->dispatching && c->handlers_dirty && !c->dead) {
        size_t j = 0;
        for (i = 0; i < c->num_handlers; i++) {
            if (c->handlers[i].id != 0) c->handlers[j++] = c->handlers[i];
        }
        c->num_handlers = j;
        c->handlers_dirty = 0;
    }
}

/* A position as the hub sends it: the channel (unescaped into name, at
   most WSCH_CLIENT_CHANNEL_MAX bytes), an offset (0..2^53) and an epoch (a
   string of at most WSCH_CLIENT_EPOCH_MAX bytes). 0 when any is missing or
   out of bounds: then the message is treated as having none. */
WSCH__PRIVATE int wsch__cl_position(wsch_str channel, wsch_str offset, wsch_str epoch,
                                    char name[WSCH_CLIENT_CHANNEL_MAX + 1], size_t *name_len, uint64_t *off,
                                    char ep[WSCH_CLIENT_EPOCH_MAX + 1]) {
    int64_t k;
    size_t n;
    if (wsch__json_string_value(channel, name, WSCH_CLIENT_CHANNEL_MAX + 1, name_len) != WSCH_OK ||
        wsch__json_int_value(offset, &k) != WSCH_OK || k < 0 || k > ((int64_t)1 << 53) ||
        wsch__json_string_value(epoch, ep, WSCH_CLIENT_EPOCH_MAX + 1, &n) != WSCH_OK || WSCH_MEMCHR(ep, 0, n))
        return 0;
    *off = (uint64_t)k;
    return 1;
}

/* ---- presence: the members of channels subscribed with presence ---- */

WSCH__PRIVATE void wsch__cl_members_free(wsch_client *c, wsch__cl_member **m, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) wsch__free(&c->d.allocator, m[i]);
    wsch__free(&c->d.allocator, m);
}

WSCH__PRIVATE void wsch__cl_sub_free(wsch_client *c, wsch__cl_sub *sub) {
    wsch__cl_members_free(c, sub->members, sub->num_members);
    wsch__free(&c->d.allocator, sub);
}

/* Binary search by user id: 1 when found at *at, else 0 with *at where it goes. */
WSCH__PRIVATE int wsch__cl_member_find(wsch__cl_member *const *m, size_t n, const char *id, size_t len, size_t *at) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2u, ml = m[mid]->user_len;
        int d = WSCH_MEMCMP(WSCH__CL_MEMBER_ID(m[mid]), id, ml < len ? ml : len);
        if (d == 0) d = ml < len ? -1 : ml > len ? 1 : 0;
        if (d == 0) {
            *at = mid;
            return 1;
        }
        if (d < 0) lo = mid + 1u;
        else hi = mid;
    }
    *at = lo;
    return 0;
}

/* Reads a member {"user":U[,"info":I]} (U into id, at most
   WSCH_CLIENT_MEMBER_ID_MAX bytes without U+0000). 0 when it cannot be kept. */
WSCH__PRIVATE int wsch__cl_member_parse(wsch_str obj, char id[WSCH_CLIENT_MEMBER_ID_MAX + 1], size_t *id_len,
                                        wsch_str *info) {
    static const char *const keys[2] = {"user", "info"};
    wsch_str v[2];
    if (wsch__json_members(obj, keys, 2, v, WSCH__JSON_TRUSTED) != WSCH_OK ||
        wsch__json_string_value(v[0], id, WSCH_CLIENT_MEMBER_ID_MAX + 1, id_len) != WSCH_OK ||
        WSCH_MEMCHR(id, 0, *id_len) || v[1].len > WSCH_CLIENT_MEMBER_INFO_MAX)
        return 0;
    *info = v[1];
    return 1;
}

/* Inserts a new member at `at` of *arr (n members, *cap room). */
WSCH__PRIVATE int wsch__cl_member_add(wsch_client *c, wsch__cl_member ***arr, size_t *n, size_t *cap, size_t at,
                                      const char *id, size_t id_len, wsch_str info) {
    wsch__cl_member *m;
    char *p;
    if (*n >= WSCH_CLIENT_MEMBERS_MAX) return WSCH_ERR_LIMIT;
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2u : 8u;
        wsch__cl_member **grown = (wsch__cl_member **)wsch__alloc(&c->d.allocator, ncap * sizeof *grown);
        if (!grown) return WSCH_ERR_NOMEM;
        if (*n) WSCH_MEMCPY(grown, *arr, *n * sizeof *grown);
        wsch__free(&c->d.allocator, *arr);
        *arr = grown;
        *cap = ncap;
    }
    m = (wsch__cl_member *)wsch__alloc(&c->d.allocator, sizeof *m + id_len + 1u + info.len + 1u);
    if (!m) return WSCH_ERR_NOMEM;
    m->user_len = id_len;
    m->info_len = info.len;
    p = (char *)(m + 1);
    WSCH_MEMCPY(p, id, id_len);
    p[id_len] = '\0';
    if (info.len) WSCH_MEMCPY(p + id_len + 1u, info.ptr, info.len);
    p[id_len + 1u + info.len] = '\0';
    WSCH_MEMMOVE(*arr + at + 1u, *arr + at, (*n - at) * sizeof **arr);
    (*arr)[at] = m;
    (*n)++;
    return WSCH_OK;
}

/* The subscription named name still exists as sub after a callback. */
WSCH__PRIVATE int wsch__cl_sub_alive(const wsch_client *c, const wsch__cl_sub *sub, const char *name, size_t len) {
    size_t i;
    return !c->dead && wsch__cl_find_sub(c, name, len, &i) && c->subs[i] == sub;
}

WSCH__PRIVATE void wsch__cl_presence_event(wsch_client *c, const char *name, const wsch__cl_member *m, int joined) {
    if (c->d.on_presence)
        c->d.on_presence(c, name, m ? WSCH__CL_MEMBER_ID(m) : NULL, m ? WSCH__CL_MEMBER_INFO(m) : NULL, joined,
                         c->d.user);
}

/* The hub's whole list (a confirmation's "presence", or a "presence"
   message) replaces the members; only the difference is reported. */
WSCH__PRIVATE void wsch__cl_presence_list(wsch_client *c, wsch__cl_sub *sub, const char *name, size_t name_len,
                                          wsch_str list) {
    char id[WSCH_CLIENT_MEMBER_ID_MAX + 1];
    wsch__cl_member **fresh = NULL, **old;
    size_t n = 0, cap = 0, pos = 0, at, id_len, i = 0, j = 0, num_old;
    wsch_str elem, info;
    int skipped = 0, r;
    while (wsch_json_array_next(list, &pos, &elem) == WSCH_OK) {
        if (!wsch__cl_member_parse(elem, id, &id_len, &info) || wsch__cl_member_find(fresh, n, id, id_len, &at)) {
            skipped = 1;
            continue;
        }
        r = wsch__cl_member_add(c, &fresh, &n, &cap, at, id, id_len, info);
        if (r == WSCH_ERR_NOMEM) {
            wsch__cl_members_free(c, fresh, n);
            wsch__cl_error(c, r, "presence list dropped: out of memory");
            return;
        }
        skipped |= r != WSCH_OK;
    }
    old = sub->members;
    num_old = sub->num_members;
    sub->members = fresh;
    sub->num_members = n;
    sub->cap_members = cap;
    sub->listed = 1;
    while (i < num_old || j < n) {      /* both sorted: one merge walk */
        int d;
        if (i == num_old) d = 1;
        else if (j == n) d = -1;
        else d = wsch__cl_member_find(old + i, 1, WSCH__CL_MEMBER_ID(fresh[j]), fresh[j]->user_len, &at) ? 0
                 : at == 0 ? 1 : -1;
        if (d == 0) {
            i++;
            j++;
            continue;
        }
        wsch__cl_presence_event(c, name, d < 0 ? old[i] : fresh[j], d > 0);
        if (d < 0) i++;
        else j++;
        if (!wsch__cl_sub_alive(c, sub, name, name_len)) break;     /* fresh went with it */
    }
    wsch__cl_members_free(c, old, num_old);
    if (skipped) wsch__cl_error(c, WSCH_ERR_LIMIT, "presence members skipped: too long or too many");
}

/* A presence_diff: joins added, leaves removed, each reported. */
WSCH__PRIVATE void wsch__cl_presence_diff(wsch_client *c, wsch__cl_sub *sub, const char *name, size_t name_len,
                                          wsch_str joins, wsch_str leaves) {
    char id[WSCH_CLIENT_MEMBER_ID_MAX + 1];
    size_t pos = 0, at, id_len;
    wsch_str elem, info;
    int skipped = 0, r;
    while (wsch_json_array_next(joins, &pos, &elem) == WSCH_OK) {
        if (!wsch__cl_member_parse(elem, id, &id_len, &info)) {
            skipped = 1;
            continue;
        }
        if (wsch__cl_member_find(sub->members, sub->num_members, id, id_len, &at)) continue;
        r = wsch__cl_member_add(c, &sub->members, &sub->num_members, &sub->cap_members, at, id, id_len, info);
        if (r != WSCH_OK) {
            skipped = 1;
            continue;
        }
        wsch__cl_presence_event(c, name, sub->members[at], 1);
        if (!wsch__cl_sub_alive(c, sub, name, name_len)) return;
    }
    pos = 0;
    while (wsch_json_array_next(leaves, &pos, &elem) == WSCH_OK) {
        wsch__cl_member *m;
        if (!wsch__cl_member_parse(elem, id, &id_len, &info) ||
            !wsch__cl_member_find(sub->members, sub->num_members, id, id_len, &at))
            continue;
        m = sub->members[at];
        WSCH_MEMMOVE(sub->members + at, sub->members + at + 1u, (sub->num_members - at - 1u) * sizeof *sub->members);
        sub->num_members--;
        wsch__cl_presence_event(c, name, m, 0);
        wsch__free(&c->d.allocator, m);
        if (!wsch__cl_sub_alive(c, sub, name, name_len)) return;
    }
    if (skipped) wsch__cl_error(c, WSCH_ERR_LIMIT, "presence members skipped: too long or too many");
}

/* Counts only (over the hub's cap): the list is dropped. */
WSCH__PRIVATE void wsch__cl_presence_counts(wsch_client *c, wsch__cl_sub *sub, const char *name, wsch_str users) {
    int64_t k;
    if (wsch__json_int_value(users, &k) != WSCH_OK || k < 0) return;
    wsch__cl_members_free(c, sub->members, sub->num_members);
    sub->members = NULL;
    sub->num_members = sub->cap_members = 0;
    sub->listed = 0;
    sub->users = (uint64_t)k;
    wsch__cl_presence_event(c, name, NULL, 0);
}

/* "presence_diff", "presence" and "presence_stats" about a channel
   subscribed with presence; the others are the application's. */
WSCH__PRIVATE void wsch__cl_on_presence(wsch_client *c, const wsch_envelope *env) {
    static const char *const keys[6] = {"channel", "joins", "leaves", "members", "users", "listed"};
    char name[WSCH_CLIENT_CHANNEL_MAX + 1];
    wsch_str v[6];
    size_t name_len, i;
    wsch__cl_sub *sub;
    if (wsch_envelope_get_members(env, keys, 6, v) != WSCH_OK ||
        wsch__json_string_value(v[0], name, sizeof name, &name_len) != WSCH_OK ||
        !wsch__cl_find_sub(c, name, name_len, &i) || !c->subs[i]->presence)
        return;
    sub = c->subs[i];
    if (wsch_envelope_type_is(env, "presence_diff")) {
        if (sub->listed && v[1].ptr && v[2].ptr && v[1].ptr[0] == '[' && v[2].ptr[0] == '[')
            wsch__cl_presence_diff(c, sub, name, name_len, v[1], v[2]);
    } else if (wsch_envelope_type_is(env, "presence")) {
        if (v[3].ptr && v[3].ptr[0] == '[') wsch__cl_presence_list(c, sub, name, name_len, v[3]);
    } else if (v[4].ptr && v[5].len == 5u && WSCH_MEMCMP(v[5].ptr, "false", 5) == 0) {
        wsch__cl_presence_counts(c, sub, name, v[4]);   /* an answer to a request of the application's ("listed":true) changes nothing */
    }
}

/* "subscribed": the position the channel is at, and after a recover
   whether everything missed was replayed. */
WSCH__PRIVATE void wsch__cl_on_subscribed(wsch_client *c, const wsch_envelope *env) {
    static const char *const keys[6] = {"channel", "offset", "epoch", "recovered", "presence", "presence_stats"};
    char name[WSCH_CLIENT_CHANNEL_MAX + 1], epoch[WSCH_CLIENT_EPOCH_MAX + 1];
    wsch_str v[6], users;
    size_t name_len, i;
    uint64_t offset;
    wsch__cl_sub *sub;
    int recovered;
    if (wsch_envelope_get_members(env, keys, 6, v) != WSCH_OK ||
        wsch__json_string_value(v[0], name, sizeof name, &name_len) != WSCH_OK ||
        !wsch__cl_find_sub(c, name, name_len, &i))
        return;
    sub = c->subs[i];
    recovered = v[3].len == 4u && WSCH_MEMCMP(v[3].ptr, "true", 4) == 0;
    if (wsch__cl_position(v[0], v[1], v[2], name, &name_len, &offset, epoch)) {
        if (!(sub->known && recovered && WSCH_STRLEN(sub->epoch) == WSCH_STRLEN(epoch) &&
              WSCH_MEMCMP(sub->epoch, epoch, WSCH_STRLEN(epoch)) == 0 && sub->offset > offset)) {
            sub->offset = offset;       /* where this subscription now starts */
            WSCH_MEMCPY(sub->epoch, epoch, sizeof epoch);
        }
        sub->known = 1;
        sub->history = 0;
    } else {
        sub->known = 0;                 /* a hub without positions: nothing to recover from */
        recovered = 0;
    }
    /* Unasked, "recovered":false says messages were lost under a live
       subscription (the hub's bridge lost them): reported all the same. */
    if (sub->recovery == WSCH_RECOVERY_PENDING || (!recovered && v[3].ptr)) {
        sub->recovery = recovered ? WSCH_RECOVERY_RECOVERED : WSCH_RECOVERY_LOST;
        if (c->d.on_recovery) c->d.on_recovery(c, name, recovered, c->d.user);
        if (!wsch__cl_sub_alive(c, sub, name, name_len)) return;
    }
    if (!sub->presence) return;
    if (v[4].ptr && v[4].ptr[0] == '[') wsch__cl_presence_list(c, sub, name, name_len, v[4]);
    else if (v[5].ptr && wsch_json_get_raw(v[5], "users", &users) == WSCH_OK) wsch__cl_presence_counts(c, sub, name, users);
}

/* "ack" and an "error" carrying an id answer a reliable message. */
WSCH__PRIVATE void wsch__cl_on_answer(wsch_client *c, const wsch_envelope *env, int ack) {
    static const char *const keys[2] = {"id", "code"};
    char code[64];
    wsch_str v[2];
    size_t n = 0;
    int64_t id;
    if (wsch_envelope_get_members(env, keys, 2, v) != WSCH_OK || wsch__json_int_value(v[0], &id) != WSCH_OK ||
        id < 1 || !wsch__cl_outbox_take(c, (uint64_t)id))
        return;
    if (ack) {
        if (c->d.on_ack) c->d.on_ack(c, (uint64_t)id, c->d.user);
        return;
    }
    if (wsch__json_string_value(v[1], code, sizeof code, &n) != WSCH_OK || WSCH_MEMCHR(code, 0, n)) code[0] = '\0';
    if (c->d.on_send_failed) c->d.on_send_failed(c, (uint64_t)id, WSCH_ERR_DENIED, code, c->d.user);
}

WSCH__PRIVATE void wsch__cl_on_message(wsch_conn *cn, wsch_opcode op, void *data, size_t len, void *user) {
    static const char *const pos_keys[3] = {"channel", "offset", "epoch"};
    wsch_client *c = (wsch_client *)user;
    char name[WSCH_CLIENT_CHANNEL_MAX + 1], epoch[WSCH_CLIENT_EPOCH_MAX + 1];
    wsch_envelope env;
    wsch_client_message m;
    wsch_str pos[3];
    size_t name_len = 0, i;
    uint64_t offset = 0;
    int r;
    if (!c || cn != c->conn) return;
    if (op != WSCH_OP_TEXT) {
        if (c->d.on_binary) c->d.on_binary(c, data, len, c->d.user);
        return;
    }
    r = wsch__envelope_decode_with((const char *)data, len, &env, pos_keys, 3, pos);
    if (r != WSCH_OK) {
        wsch__cl_error(c, r, "invalid envelope dropped");
        return;
    }
    if (wsch_envelope_type_is(&env, "pong")) return;
    m.type = env.type;
    m.type_len = env.type_len;
    m.payload = env.payload;
    m.raw.ptr = (const char *)data;
    m.raw.len = len;
    m.channel = NULL;
    m.offset = 0;
    if (pos[0].ptr && wsch__cl_position(pos[0], pos[1], pos[2], name, &name_len, &offset, epoch)) {
        m.channel = name;
        m.offset = offset;
        if (wsch__cl_find_sub(c, name, name_len, &i)) {
            wsch__cl_sub *sub = c->subs[i];
            int same = sub->known && WSCH_STRLEN(sub->epoch) == WSCH_STRLEN(epoch) &&
                       WSCH_MEMCMP(sub->epoch, epoch, WSCH_STRLEN(epoch)) == 0;
            if (same && offset <= sub->offset) return;      /* seen already: a replay overlapping */
            sub->offset = offset;
            WSCH_MEMCPY(sub->epoch, epoch, sizeof epoch);
            sub->known = 1;
        }
    } else if (wsch_envelope_type_is(&env, "subscribed")) {
        wsch__cl_on_subscribed(c, &env);
    } else if (wsch_envelope_type_is(&env, "presence_diff") || wsch_envelope_type_is(&env, "presence") ||
               wsch_envelope_type_is(&env, "presence_stats")) {
        wsch__cl_on_presence(c, &env);
    } else if (wsch_envelope_type_is(&env, "ack")) {
        wsch__cl_on_answer(c, &env, 1);
    } else if (wsch_envelope_type_is(&env, "error")) {
        wsch__cl_on_answer(c, &env, 0);
    }
    if (!c->dead) wsch__cl_dispatch(c, &m);
}

/* The link disconnect() was closing is gone: its close handshake finished,
   or connect() abandoned it. Either way the on_connect it had gets its
   on_disconnect. */
WSCH__PRIVATE void wsch__cl_closing_done(wsch_client *c, int code, const char *reason, size_t reason_len,
                                         int stopping) {
    uint32_t e;
    wsch__cl_drop_conn(c);
    c->last_close_code = code;
    wsch__cl_set_state(c, WSCH__CL_IDLE);
    e = c->epoch;
    wsch__cl_notify(c);
    wsch__cl_disconnected(c, code, reason, reason_len);
    if (stopping) wsch__cl_stopped(c, e);
}

WSCH__PRIVATE void wsch__cl_on_close(wsch_conn *cn, int code, const char *reason, size_t reason_len, void *user) {
    wsch_client *c = (wsch_client *)user;
    if (!c || cn != c->conn) return;
    if (c->state == WSCH__CL_CLOSING) {
        wsch__cl_closing_done(c, code, reason, reason_len, 1);
    } else if (c->state == WSCH__CL_OPEN) {
        wsch__cl_lost(c, code, reason, reason_len, 1, WSCH_OK, NULL);
    } else {
        /* Say what really failed: an HTTP refusal (the status is in
           wsch_client_http_status()), a bad Accept, a timeout, a hang-up.
           No close frame existed, so the close code is 1006. */
        int err = wsch_conn_error(cn);
        int64_t after = wsch_conn_retry_after_ms(cn);
        (void)code;
        c->http_status = wsch_conn_http_status(cn);
        if ((c->http_status == 429 || c->http_status == 503) && after >= 0) c->retry_after_ms = (uint32_t)after;
        if (err == WSCH_OK) err = WSCH_ERR_HANGUP;
        wsch__cl_lost(c, WSCH_CLOSE_ABNORMAL, reason, reason_len, 0, err, "handshake failed");
    }
}

/* ---- timers ---- */

WSCH__PRIVATE void wsch__cl_heartbeat(wsch_client *c) {
    if (c->state != WSCH__CL_OPEN || !c->conn) return;
    if (c->d.heartbeat == WSCH_HEARTBEAT_APP || c->d.heartbeat == WSCH_HEARTBEAT_BOTH)
        (void)wsch_conn_send(c->conn, WSCH_OP_TEXT, wsch__cl_ping, sizeof wsch__cl_ping - 1);
    if (c->dead || !c->conn) return;
    if (c->d.heartbeat == WSCH_HEARTBEAT_PROTOCOL || c->d.heartbeat == WSCH_HEARTBEAT_BOTH)
        (void)wsch_conn_ping(c->conn, NULL, 0);
    if (c->dead || c->state != WSCH__CL_OPEN) return;
    /* An outstanding deadline is kept: re-arming it each beat would let a
       pong timeout longer than the interval postpone the verdict forever. */
    if (!(c->armed & ((uint32_t)1u << WSCH_CLIENT_TIMER_PONG))) {
        c->rx_since_ping = 0;
        wsch__cl_timer_set(c, WSCH_CLIENT_TIMER_PONG, c->d.pong_timeout_ms);
    }
    wsch__cl_timer_set(c, WSCH_CLIENT_TIMER_HEARTBEAT, c->d.heartbeat_interval_ms);
}

WSCH__PRIVATE void wsch__cl_timer(wsch_client *c, unsigned id) {
    if (id < WSCH_CLIENT_TIMER_RETRY) {
        if (c->conn) wsch_conn_timer_fired(c->conn, id);
    } else if (id == WSCH_CLIENT_TIMER_RETRY) {
        if (c->state == WSCH__CL_WAITING) wsch__cl_start_connect(c);
    } else if (id == WSCH_CLIENT_TIMER_HEARTBEAT) {
        wsch__cl_heartbeat(c);
    } else if (id == WSCH_CLIENT_TIMER_PONG) {
        if (c->state == WSCH__CL_OPEN && !c->rx_since_ping) {
            static const char why[] = "ping timeout";
            wsch__cl_log(c, "client: dead peer");
            wsch__cl_lost(c, WSCH_CLOSE_ABNORMAL, why, sizeof why - 1, 1, WSCH_ERR_TIMEOUT,
                          "dead peer: nothing received after a heartbeat");
        }
    }
}

/* ---- creation ---- */

WSCH_API wsch_client_desc wsch_client_desc_defaults(const wsch_client_desc *desc) {
    wsch_client_desc d;
    wsch__desc_copy(&d, desc, sizeof d);
    if (!d.backoff_base_ms) d.backoff_base_ms = WSCH_CLIENT_DEFAULT_BACKOFF_BASE_MS;
    if (!d.backoff_max_ms) d.backoff_max_ms = WSCH_CLIENT_DEFAULT_BACKOFF_MAX_MS;
    if (!d.max_attempts) d.max_attempts = WSCH_CLIENT_DEFAULT_MAX_ATTEMPTS;
    if (d.heartbeat == WSCH_HEARTBEAT_DEFAULT) d.heartbeat = WSCH_HEARTBEAT_APP;
    if (!d.heartbeat_interval_ms) d.heartbeat_interval_ms = WSCH_CLIENT_DEFAULT_HEARTBEAT_MS;
    if (!d.pong_timeout_ms) d.pong_timeout_ms = WSCH_CLIENT_DEFAULT_PONG_TIMEOUT_MS;
    if (!d.min_uptime_ms) d.min_uptime_ms = WSCH_CLIENT_DEFAULT_MIN_UPTIME_MS;
    if (!d.queue_max_count) d.queue_max_count = WSCH_CLIENT_DEFAULT_QUEUE_MAX_COUNT;
    if (!d.queue_max_bytes) d.queue_max_bytes = WSCH_CLIENT_DEFAULT_QUEUE_MAX_BYTES;
    if (!d.outbox_max_count) d.outbox_max_count = WSCH_CLIENT_DEFAULT_OUTBOX_MAX_COUNT;
    if (!d.outbox_max_bytes) d.outbox_max_bytes = WSCH_CLIENT_DEFAULT_OUTBOX_MAX_BYTES;
    if (d.token_in == WSCH_TOKEN_NONE) d.token_in = WSCH_TOKEN_QUERY;
    return d;
}

/* The strings a client keeps, in one block, each NUL-terminated: host,
   path, query (the URL's, then token=<percent-encoded>, then session=S),
   origin, protocols,
   extra headers (a bearer line first). at[] gets where each starts. A
   cap-0 writer measures the block, a real one writes it: the same code. */
enum { WSCH__CL_HOST, WSCH__CL_PATH, WSCH__CL_QUERY, WSCH__CL_ORIGIN, WSCH__CL_PROTOCOLS, WSCH__CL_HEADERS,
       WSCH__CL_STRINGS };

WSCH__PRIVATE void wsch__cl_put_strings(wsch__writer *w, const wsch_client_desc *d, const wsch_url *u,
                                        const char *session, size_t at[WSCH__CL_STRINGS]) {
    size_t token_len = wsch__cstr_len(d->token, WSCH_CSTR);
    at[WSCH__CL_HOST] = w->len;
    wsch__w_put(w, u->host.ptr, u->host.len);
    wsch__w_put(w, "", 1);
    at[WSCH__CL_PATH] = w->len;
    wsch__w_put(w, u->path.ptr, u->path.len);
    wsch__w_put(w, "", 1);
    at[WSCH__CL_QUERY] = w->len;
    wsch__w_put(w, u->query.ptr, u->query.len);
    if (d->token && d->token_in == WSCH_TOKEN_QUERY) {
        if (u->query.len) wsch__w_puts(w, "&");
        wsch__w_puts(w, "token=");
        wsch__h_put_percent(w, d->token, token_len);
    }
    if (u->query.len || (d->token && d->token_in == WSCH_TOKEN_QUERY)) wsch__w_puts(w, "&");
    wsch__w_puts(w, "session=");
    wsch__w_puts(w, session);       /* its characters need no escapes */
    wsch__w_put(w, "", 1);
    at[WSCH__CL_ORIGIN] = w->len;
    if (d->origin) wsch__w_puts(w, d->origin);
    wsch__w_put(w, "", 1);
    at[WSCH__CL_PROTOCOLS] = w->len;
    if (d->protocols) wsch__w_puts(w, d->protocols);
    wsch__w_put(w, "", 1);
    at[WSCH__CL_HEADERS] = w->len;
    if (d->token && d->token_in == WSCH_TOKEN_AUTHORIZATION) {
        wsch__w_puts(w, "Authorization: Bearer ");
        wsch__w_put(w, d->token, token_len);
        wsch__w_puts(w, "\r\n");
    }
    if (d->extra_headers) wsch__w_puts(w, d->extra_headers);
    wsch__w_put(w, "", 1);
}

/* String i of the block, or NULL when it is empty (or was not given). */
WSCH__PRIVATE const char *wsch__cl_string(const char *block, const size_t at[WSCH__CL_STRINGS], int i) {
    return block[at[i]] ? block + at[i] : NULL;
}

WSCH_API int wsch_client_create(const wsch_client_desc *desc, wsch_client **out) {
    wsch_client *c;
    wsch_client_desc d;
    wsch_url u;
    wsch__writer w;
    size_t at[WSCH__CL_STRINGS], token_len, i;
    char session[WSCH_SESSION_MAX + 1];
    int r;
    if (!out) return WSCH_ERR_ARG;
    *out = NULL;
    if (!desc || !desc->url || !desc->effects.connect || !desc->effects.send || !desc->effects.close ||
        !desc->effects.timer_set || !desc->effects.timer_cancel || !desc->effects.now_ms ||
        !desc->effects.random_bytes)
        return WSCH_ERR_ARG;
    if (desc->num_terminal_codes > WSCH_CLIENT_MAX_TERMINAL_CODES || (desc->num_terminal_codes && !desc->terminal_codes))
        return WSCH_ERR_ARG;
    if ((unsigned)desc->heartbeat > (unsigned)WSCH_HEARTBEAT_OFF ||
        desc->token_in == WSCH_TOKEN_PROTOCOL || (unsigned)desc->token_in > (unsigned)WSCH_TOKEN_PROTOCOL)
        return WSCH_ERR_ARG;
    d = wsch_client_desc_defaults(desc);
    r = wsch_url_parse(d.url, WSCH_STRLEN(d.url), &u);
    if (r != WSCH_OK) return r;
    token_len = wsch__cstr_len(d.token, WSCH_CSTR);
    if (d.token && d.token_in == WSCH_TOKEN_AUTHORIZATION) {
        /* A header value must not smuggle in a line break or other controls. */
        for (i = 0; i < token_len; i++) {
            unsigned char ch = (unsigned char)d.token[i];
            if (ch < 0x20 || ch == 0x7f) return WSCH_ERR_ARG;
        }
    }
    if (d.session) {
        size_t n = WSCH_STRLEN(d.session);
        if (!wsch__session_ok(d.session, n)) return WSCH_ERR_ARG;
        WSCH_MEMCPY(session, d.session, n + 1u);
    } else {
        static const char hex[] = "0123456789abcdef";
        unsigned char rnd[16];
        d.effects.random_bytes(rnd, sizeof rnd, d.user);
        for (i = 0; i < sizeof rnd; i++) {
            session[2u * i] = hex[rnd[i] >> 4];
            session[2u * i + 1u] = hex[rnd[i] & 15u];
        }
        session[32] = '\0';
    }
    if (d.outbox_max_count > WSCH_CLIENT_DEFAULT_OUTBOX_MAX_COUNT) return WSCH_ERR_ARG;
    wsch__w_init(&w, NULL, 0);
    wsch__cl_put_strings(&w, &d, &u, session, at);
    if (w.len == SIZE_MAX) return WSCH_ERR_NOMEM;

    c = (wsch_client *)wsch__alloc(&d.allocator, sizeof *c);
    if (!c) return WSCH_ERR_NOMEM;
    WSCH_MEMSET(c, 0, sizeof *c);
    c->strings = (char *)wsch__alloc(&d.allocator, w.len);
    if (!c->strings) {
        wsch__free(&d.allocator, c);
        return WSCH_ERR_NOMEM;
    }
    wsch__w_init(&w, c->strings, w.len);
    wsch__cl_put_strings(&w, &d, &u, session, at);
    WSCH_ASSERT(!w.overflow);
    c->d = d;
    WSCH_MEMCPY(c->session, session, sizeof session);
    c->d.session = c->session;
    c->cd.request.host = c->strings + at[WSCH__CL_HOST];
    c->cd.request.port = u.port;
    c->cd.request.path = c->strings + at[WSCH__CL_PATH];
    c->cd.request.query = wsch__cl_string(c->strings, at, WSCH__CL_QUERY);
    c->cd.request.origin = d.origin ? c->strings + at[WSCH__CL_ORIGIN] : NULL;
    c->cd.request.protocols = d.protocols ? c->strings + at[WSCH__CL_PROTOCOLS] : NULL;
    c->cd.request.extra_headers = wsch__cl_string(c->strings, at, WSCH__CL_HEADERS);
    c->d.url = NULL;            /* not kept: the parts above are what is used */
    /* The caller's strings are not kept past this call. */
    c->d.token = NULL;
    c->d.origin = c->cd.request.origin;
    c->d.protocols = c->cd.request.protocols;
    c->d.extra_headers = c->cd.request.extra_headers;

    c->terminal[0] = WSCH_CLOSE_UNAUTHORIZED;
    c->terminal[1] = WSCH_CLOSE_POLICY_VIOLATION;
    c->num_terminal = 2;
    for (i = 0; i < d.num_terminal_codes; i++) c->terminal[c->num_terminal++] = d.terminal_codes[i];
    c->d.terminal_codes = NULL;

    c->cd.on_open = wsch__cl_on_open;
    c->cd.on_message = wsch__cl_on_message;
    c->cd.on_close = wsch__cl_on_close;
    {   /* in wsch_effects order: send, close, timer_set, timer_cancel, now_ms,
           random_bytes, log, connect, send_gather, flush_later */
        static const wsch_effects via_client = {wsch__cl_conn_send, wsch__cl_conn_close, wsch__cl_conn_timer_set,
                                                wsch__cl_conn_timer_cancel, NULL, wsch__cl_conn_random, NULL, NULL,
                                                NULL, NULL};
        wsch__conn_desc_for(&c->cd, WSCH_ROLE_CLIENT, &d.limits, &d.allocator, &via_client);
    }
    c->cd.deflate = d.deflate;

    c->state = WSCH__CL_IDLE;
    c->reported = WSCH_STATUS_DISCONNECTED;
    c->next_handler_id = 1;
    *out = c;
    return WSCH_OK;
}

/* Stops every effect: timers, connection, transport. Memory stays. */
WSCH__PRIVATE void wsch__cl_shutdown(wsch_client *c) {
    wsch__cl_timer_cancel(c, WSCH_CLIENT_TIMER_RETRY);
    wsch__cl_drop_conn(c);
    wsch__cl_set_state(c, WSCH__CL_IDLE);
}

WSCH__PRIVATE void wsch__cl_free(wsch_client *c) {
    wsch_allocator a = c->d.allocator;
    size_t i;
    while (c->q_head) {
        wsch__cl_qmsg *m = c->q_head;
        c->q_head = m->next;
        wsch__free(&a, m);
    }
    while (c->o_head) {
        wsch__cl_omsg *m = c->o_head;
        c->o_head = m->next;
        wsch__free(&a, m);
    }
    for (i = 0; i < c->num_subs; i++) wsch__cl_sub_free(c, c->subs[i]);
    wsch__free(&a, c->subs);
    wsch__free(&a, c->handlers);
    wsch__free(&a, c->strings);
    wsch__free(&a, c);
}

WSCH__PRIVATE void wsch__cl_enter(wsch_client *c) { c->depth++; }

WSCH__PRIVATE void wsch__cl_leave(wsch_client *c) {
    if (--c->depth == 0 && c->dead) wsch__cl_free(c);
}

WSCH_API void wsch_client_destroy(wsch_client *c) {
    if (!c || c->dead) return;
    c->dead = 1;
    c->depth++;
    wsch__cl_shutdown(c);
    wsch__cl_leave(c);
}

/* ---- control ---- */

WSCH_API int wsch_client_connect(wsch_client *c) {
    if (!c || c->dead) return WSCH_ERR_ARG;
    if (c->state == WSCH__CL_CONNECTING || c->state == WSCH__CL_HANDSHAKE || c->state == WSCH__CL_OPEN)
        return WSCH_ERR_STATE;
    wsch__cl_enter(c);
    wsch__cl_timer_cancel(c, WSCH_CLIENT_TIMER_RETRY);
    if (c->state == WSCH__CL_CLOSING) { /* the old link is abandoned mid-close */
        static const char why[] = "abandoned by connect()";
        wsch__cl_closing_done(c, WSCH_CLOSE_ABNORMAL, why, sizeof why - 1, 0);   /* not a stop: it goes on */
        if (c->dead || c->state != WSCH__CL_IDLE) { /* the callback destroyed or reconnected it */
            wsch__cl_leave(c);
            return WSCH_OK;
        }
    }
    c->stop = WSCH_STOP_NONE;
    c->attempts = c->retries = c->retry_after_ms = 0;
    wsch__cl_start_connect(c);
    wsch__cl_leave(c);
    return WSCH_OK;
}

WSCH_API int wsch_client_disconnect(wsch_client *c) {
    if (!c || c->dead) return WSCH_ERR_ARG;
    wsch__cl_enter(c);
    if (c->state == WSCH__CL_IDLE || c->state == WSCH__CL_CLOSING) {
        if (c->stop == WSCH_STOP_NONE) c->stop = WSCH_STOP_USER;
    } else {
        c->stop = WSCH_STOP_USER;
        wsch__cl_timer_cancel(c, WSCH_CLIENT_TIMER_RETRY);
        wsch__cl_log(c, "client: disconnect");
        if (c->state == WSCH__CL_OPEN && c->conn) {
            static const char why[] = "client disconnect";
            wsch__cl_timer_cancel(c, WSCH_CLIENT_TIMER_HEARTBEAT);
            wsch__cl_timer_cancel(c, WSCH_CLIENT_TIMER_PONG);
            wsch__cl_set_state(c, WSCH__CL_CLOSING);
            /* WSCH_ERR_CLOSED: the peer's close frame came first and its
               handshake is already running; either way the conn's on_close
               ends CLOSING with the real code and on_disconnect. */
            (void)wsch_conn_close(c->conn, WSCH_CLOSE_NORMAL, why, sizeof why - 1);
            wsch__cl_notify(c);
        } else {
            uint32_t e;
            wsch__cl_drop_conn(c);
            wsch__cl_set_state(c, WSCH__CL_IDLE);
            e = c->epoch;
            wsch__cl_notify(c);
            wsch__cl_stopped(c, e);
        }
    }
    wsch__cl_leave(c);
    return WSCH_OK;
}

WSCH_API void wsch_client_transport_open(wsch_client *c) {
    wsch_conn *cn = NULL;
    int r;
    if (!c || c->dead || c->state != WSCH__CL_CONNECTING) return;
    wsch__cl_enter(c);
    wsch__cl_set_state(c, WSCH__CL_HANDSHAKE);
    c->creating = 1;
    c->closed_early = 0;
    r = wsch_conn_create(&c->cd, c, &cn);
    c->creating = 0;
    if (r != WSCH_OK) {
        wsch__cl_lost(c, 0, NULL, 0, 0, r, "cannot create the connection");
    } else if (c->dead || c->state != WSCH__CL_HANDSHAKE) {
        /* an effect during create moved the client on: this link is not wanted */
        wsch_conn_set_user(cn, NULL);
        wsch_conn_destroy(cn);
    } else {
        c->conn = cn;
        /* the send effect reported the transport gone while the request was written */
        if (c->closed_early) wsch_conn_transport_closed(cn);
    }
    wsch__cl_leave(c);
}

WSCH_API void wsch_client_transport_failed(wsch_client *c) {
    if (!c || c->dead || c->state != WSCH__CL_CONNECTING) return;
    wsch__cl_enter(c);
    wsch__cl_lost(c, 0, NULL, 0, 0, WSCH_ERR_CONNECT, "connect failed");
    wsch__cl_leave(c);
}

WSCH_API int wsch_client_feed(wsch_client *c, void *data, size_t len) {
    int r;
    if (!c || c->dead) return WSCH_ERR_ARG;
    if (!c->conn) return WSCH_ERR_STATE;
    wsch__cl_enter(c);
    if (len) c->rx_since_ping = 1;
    r = wsch_conn_feed(c->conn, data, len);
    wsch__cl_leave(c);
    return r;
}

WSCH_API int wsch_client_writable(wsch_client *c) {
    int r;
    if (!c || c->dead) return WSCH_ERR_ARG;
    if (!c->conn) return WSCH_ERR_STATE;
    wsch__cl_enter(c);
    r = wsch_conn_writable(c->conn);
    if (!c->dead && (c->q_head || c->o_unsent)) wsch__cl_flush(c);
    wsch__cl_leave(c);
    return r;
}

WSCH_API void wsch_client_timer_fired(wsch_client *c, unsigned timer_id) {
    uint32_t bit;
    if (!c || c->dead || timer_id == 0 || timer_id >= 32) return;
    bit = (uint32_t)1u << timer_id;
    if (!(c->armed & bit)) return;
    c->armed &= ~bit;
    wsch__cl_enter(c);
    wsch__cl_timer(c, timer_id);
    wsch__cl_leave(c);
}

WSCH_API void wsch_client_transport_closed(wsch_client *c) {
    if (!c || c->dead) return;
    wsch__cl_enter(c);
    if (c->state == WSCH__CL_CONNECTING) {
        wsch__cl_lost(c, 0, NULL, 0, 0, WSCH_ERR_CONNECT, "connect failed");
    } else if (c->creating) {
        c->closed_early = 1;
    } else if (c->conn) {
        wsch_conn *cn = c->conn;
        wsch_conn_transport_closed(cn);
        /* on_close normally ran inside; if it did not, the link is gone anyway */
        if (!c->dead && c->conn == cn) wsch__cl_on_close(cn, WSCH_CLOSE_ABNORMAL, "", 0, c);
    }
    wsch__cl_leave(c);
}

/* ---- messages ---- */

WSCH_API int wsch_client_send(wsch_client *c, const char *type, const char *payload, size_t payload_len) {
    char stack[512];
    char *env = NULL;
    size_t len = 0;
    wsch_allocator a;
    int r;
    if (!c || c->dead || !type) return WSCH_ERR_ARG;
    a = c->d.allocator;     /* the client may be gone after the send's effects */
    payload_len = wsch__cstr_len(payload, payload_len);
    if (!payload && payload_len) return WSCH_ERR_ARG;
    r = wsch__cl_encode(c, type, WSCH_STRLEN(type), payload, payload_len, NULL, 0, stack, sizeof stack, &env, &len);
    if (r != WSCH_OK) return r;
    wsch__cl_enter(c);
    r = wsch__cl_send_text(c, env, len);
    wsch__cl_leave(c);
    if (env != stack) wsch__free(&a, env);
    return r;
}

WSCH_API int wsch_client_send_text(wsch_client *c, const char *text, size_t len) {
    int r;
    len = wsch__cstr_len(text, len);
    if (!c || c->dead || (!text && len)) return WSCH_ERR_ARG;
    if (!wsch_utf8_valid(text, len)) return WSCH_ERR_UTF8;
    wsch__cl_enter(c);
    r = wsch__cl_send_text(c, text, len);
    wsch__cl_leave(c);
    return r;
}

WSCH__PRIVATE int wsch__cl_find_sub(const wsch_client *c, const char *channel, size_t len, size_t *index) {
    size_t i;
    for (i = 0; i < c->num_subs; i++) {
        if (c->subs[i]->len == len && WSCH_MEMCMP(WSCH__CL_SUB_NAME(c->subs[i]), channel, len) == 0) {
            *index = i;
            return 1;
        }
    }
    return 0;
}

WSCH__PRIVATE int wsch__cl_subscribe(wsch_client *c, const char *channel, uint32_t history, int presence) {
    size_t len, i;
    wsch__cl_sub *sub;
    int r = WSCH_OK;
    if (!c || c->dead || !channel || !channel[0]) return WSCH_ERR_ARG;
    len = WSCH_STRLEN(channel);
    if (wsch__cl_find_sub(c, channel, len, &i)) {
        wsch__cl_sub ask;
        if (!presence || c->subs[i]->presence) return WSCH_OK;
        /* Presence added to a subscription: asked again without recover
           (nothing was missed), which the hub confirms with the members. */
        c->subs[i]->presence = 1;
        if (c->state != WSCH__CL_OPEN) return WSCH_OK;
        ask = *c->subs[i];
        ask.known = 0;
        ask.history = 0;
        wsch__cl_enter(c);
        r = wsch__cl_send_channel_msg(c, "subscribe", channel, len, &ask);
        wsch__cl_leave(c);
        return r == WSCH_ERR_TRANSPORT || r == WSCH_ERR_CLOSED ? WSCH_OK : r;
    }
    if (!wsch_utf8_valid(channel, len)) return WSCH_ERR_UTF8;
    if (c->num_subs == c->cap_subs) {
        size_t cap = c->cap_subs ? c->cap_subs * 2 : 8;
        wsch__cl_sub **grown;
        if (cap > ((size_t)-1) / sizeof *grown) return WSCH_ERR_NOMEM;
        grown = (wsch__cl_sub **)wsch__alloc(&c->d.allocator, cap * sizeof *grown);
        if (!grown) return WSCH_ERR_NOMEM;
        if (c->num_subs) WSCH_MEMCPY(grown, c->subs, c->num_subs * sizeof *grown);
        wsch__free(&c->d.allocator, c->subs);
        c->subs = grown;
        c->cap_subs = cap;
    }
    if (len > (size_t)-1 - sizeof *sub - 1u) return WSCH_ERR_NOMEM;
    sub = (wsch__cl_sub *)wsch__alloc(&c->d.allocator, sizeof *sub + len + 1u);
    if (!sub) return WSCH_ERR_NOMEM;
    WSCH_MEMSET(sub, 0, sizeof *sub);
    sub->len = len;
    sub->history = history;
    sub->presence = presence;
    sub->listed = 1;
    WSCH_MEMCPY(WSCH__CL_SUB_NAME(sub), channel, len + 1u);
    wsch__cl_enter(c);
    if (c->state == WSCH__CL_OPEN) r = wsch__cl_send_channel_msg(c, "subscribe", channel, len, sub);
    /* The link is ending under the send: kept, the set is replayed after the
       reconnect, as for a subscribe made offline. */
    if (r == WSCH_ERR_TRANSPORT || r == WSCH_ERR_CLOSED) r = WSCH_OK;
    if (c->dead || r != WSCH_OK || wsch__cl_find_sub(c, channel, len, &i)) {
        wsch__cl_sub_free(c, sub);          /* refused, or an effect subscribed it meanwhile */
    } else if (c->num_subs < c->cap_subs) {
        c->subs[c->num_subs++] = sub;
    } else {
        wsch__cl_sub_free(c, sub);          /* an effect filled the array meanwhile */
        r = WSCH_ERR_NOMEM;
    }
    wsch__cl_leave(c);
    return r;
}

WSCH_API int wsch_client_subscribe(wsch_client *c, const char *channel) { return wsch__cl_subscribe(c, channel, 0, 0); }

WSCH_API int wsch_client_subscribe_history(wsch_client *c, const char *channel, uint32_t last) {
    return wsch__cl_subscribe(c, channel, last, 0);
}

WSCH_API int wsch_client_subscribe_presence(wsch_client *c, const char *channel) {
    return wsch__cl_subscribe(c, channel, 0, 1);
}

/* The subscription to channel that asked for presence, or NULL. */
WSCH__PRIVATE const wsch__cl_sub *wsch__cl_presence_sub(const wsch_client *c, const char *channel) {
    size_t i;
    if (!c || !channel || !wsch__cl_find_sub(c, channel, WSCH_STRLEN(channel), &i) || !c->subs[i]->presence) return NULL;
    return c->subs[i];
}

WSCH_API size_t wsch_client_presence_count(const wsch_client *c, const char *channel, int *listed) {
    const wsch__cl_sub *sub = wsch__cl_presence_sub(c, channel);
    if (listed) *listed = sub ? sub->listed : 0;
    if (!sub) return 0;
    return sub->listed ? sub->num_members : (size_t)sub->users;
}

WSCH_API const char *wsch_client_presence_member(const wsch_client *c, const char *channel, size_t i,
                                                 const char **info) {
    const wsch__cl_sub *sub = wsch__cl_presence_sub(c, channel);
    if (info) *info = NULL;
    if (!sub || i >= sub->num_members) return NULL;
    if (info) *info = WSCH__CL_MEMBER_INFO(sub->members[i]);
    return WSCH__CL_MEMBER_ID(sub->members[i]);
}

WSCH_API int wsch_client_unsubscribe(wsch_client *c, const char *channel) {
    size_t i;
    wsch__cl_sub *sub;
    int r = WSCH_OK;
    if (!c || c->dead || !channel) return WSCH_ERR_ARG;
    if (!wsch__cl_find_sub(c, channel, WSCH_STRLEN(channel), &i)) return WSCH_ERR_NOT_FOUND;
    /* Removed first, so an effect that runs during the send sees the new set. */
    sub = c->subs[i];
    WSCH_MEMMOVE(c->subs + i, c->subs + i + 1, (c->num_subs - i - 1) * sizeof *c->subs);
    c->num_subs--;
    wsch__cl_enter(c);
    if (c->state == WSCH__CL_OPEN) r = wsch__cl_send_channel_msg(c, "unsubscribe", WSCH__CL_SUB_NAME(sub), sub->len, NULL);
    wsch__cl_sub_free(c, sub);
    wsch__cl_leave(c);
    return r;
}

WSCH_API size_t wsch_client_subscription_count(const wsch_client *c) { return c ? c->num_subs : 0; }

WSCH_API const char *wsch_client_subscription(const wsch_client *c, size_t i) {
    return (c && i < c->num_subs) ? WSCH__CL_SUB_NAME(c->subs[i]) : NULL;
}

WSCH_API int wsch_client_channel_position(const wsch_client *c, const char *channel, wsch_client_position *out) {
    size_t i;
    const wsch__cl_sub *sub;
    if (!c || !channel || !out) return WSCH_ERR_ARG;
    WSCH_MEMSET(out, 0, sizeof *out);
    if (!wsch__cl_find_sub(c, channel, WSCH_STRLEN(channel), &i)) return WSCH_ERR_NOT_FOUND;
    sub = c->subs[i];
    out->known = sub->known;
    out->offset = sub->offset;
    WSCH_MEMCPY(out->epoch, sub->epoch, sizeof out->epoch);
    out->recovery = sub->recovery;
    return WSCH_OK;
}

/* ---- reliable messages: the outbox ---- */

WSCH_API int wsch_client_send_reliable(wsch_client *c, const char *type, const char *payload, size_t payload_len,
                                       uint64_t *id) {
    char tail[32];
    wsch__writer w;
    wsch__cl_omsg *m;
    char *env = NULL;
    size_t len = 0;
    int r;
    if (id) *id = 0;
    if (!c || c->dead || !type) return WSCH_ERR_ARG;
    payload_len = wsch__cstr_len(payload, payload_len);
    if (!payload && payload_len) return WSCH_ERR_ARG;
    wsch__w_init(&w, tail, sizeof tail);
    wsch__w_puts(&w, ",\"id\":");
    wsch__w_put_uint(&w, c->next_id + 1u);
    /* Encoded straight into the outbox entry: nothing to copy. */
    r = wsch__cl_encode(c, type, WSCH_STRLEN(type), payload, payload_len, tail, w.len, NULL, 0, &env, &len);
    if (r != WSCH_OK) return r;
    if (c->o_count >= c->d.outbox_max_count || len > c->d.outbox_max_bytes - c->o_bytes ||
        len > (size_t)-1 - sizeof *m) {
        wsch__free(&c->d.allocator, env);
        return WSCH_ERR_QUEUE_FULL;
    }
    m = (wsch__cl_omsg *)wsch__alloc(&c->d.allocator, sizeof *m + len);
    if (!m) {
        wsch__free(&c->d.allocator, env);
        return WSCH_ERR_NOMEM;
    }
    WSCH_MEMCPY((char *)(m + 1), env, len);
    wsch__free(&c->d.allocator, env);
    m->next = NULL;
    m->id = ++c->next_id;
    m->len = len;
    m->sends = 0;
    if (c->o_tail) c->o_tail->next = m;
    else c->o_head = m;
    c->o_tail = m;
    if (!c->o_unsent) c->o_unsent = m;
    c->o_count++;
    c->o_bytes += len;
    if (id) *id = m->id;
    wsch__cl_enter(c);
    if (c->state == WSCH__CL_OPEN && c->conn) wsch__cl_flush(c);
    wsch__cl_leave(c);
    return WSCH_OK;
}

/* Takes message id out of the outbox; 0 when it is not there (acked before,
   or not ours). */
WSCH__PRIVATE int wsch__cl_outbox_take(wsch_client *c, uint64_t id) {
    wsch__cl_omsg *m = c->o_head, *prev = NULL;
    for (; m && m->id != id; prev = m, m = m->next) {}
    if (!m) return 0;
    if (prev) prev->next = m->next;
    else c->o_head = m->next;
    if (c->o_tail == m) c->o_tail = prev;
    if (c->o_unsent == m) c->o_unsent = m->next;
    c->o_count--;
    c->o_bytes -= m->len;
    wsch__free(&c->d.allocator, m);
    return 1;
}

/* The client stopped for good: every message in the outbox is given up
   (unless a callback connects again: what is left then goes on that link). */
WSCH__PRIVATE void wsch__cl_outbox_give_up(wsch_client *c) {
    while (c->o_head && !c->dead && c->state == WSCH__CL_IDLE) {
        uint64_t id = c->o_head->id;
        (void)wsch__cl_outbox_take(c, id);
        if (c->d.on_send_failed) c->d.on_send_failed(c, id, WSCH_ERR_CLOSED, "", c->d.user);
    }
}

WSCH_API size_t wsch_client_outbox_count(const wsch_client *c) { return c ? c->o_count : 0; }
WSCH_API uint64_t wsch_client_resent(const wsch_client *c) { return c ? c->resent : 0; }
WSCH_API const char *wsch_client_session(const wsch_client *c) { return c ? c->session : NULL; }

/* ---- handlers ---- */

WSCH_API int wsch_client_on(wsch_client *c, const char *type, wsch_client_handler_fn fn, void *user,
                            wsch_client_handler *out) {
    wsch__cl_handler *h;
    size_t len;
    if (out) out->id = 0;
    if (!c || c->dead || !type || !fn) return WSCH_ERR_ARG;
    len = WSCH_STRLEN(type);
    if (len > WSCH_ENVELOPE_TYPE_MAX) return WSCH_ERR_TOO_LARGE;
    if (c->num_handlers == c->cap_handlers) {
        /* Grown by copy, never in place: a dispatch in progress re-reads the
           array by index, so moving it is safe. */
        size_t cap = c->cap_handlers ? c->cap_handlers * 2 : 8;
        wsch__cl_handler *grown;
        if (cap > ((size_t)-1) / sizeof *grown) return WSCH_ERR_NOMEM;
        grown = (wsch__cl_handler *)wsch__alloc(&c->d.allocator, cap * sizeof *grown);
        if (!grown) return WSCH_ERR_NOMEM;
        if (c->num_handlers) WSCH_MEMCPY(grown, c->handlers, c->num_handlers * sizeof *grown);
        wsch__free(&c->d.allocator, c->handlers);
        c->handlers = grown;
        c->cap_handlers = cap;
    }
    h = &c->handlers[c->num_handlers++];
    h->id = c->next_handler_id++;
    if (c->next_handler_id == 0) c->next_handler_id = 1;
    h->fn = fn;
    h->user = user;
    h->wildcard = (len == 1 && type[0] == '*');
    h->type_len = len;
    WSCH_MEMCPY(h->type, type, len + 1);
    if (out) out->id = h->id;
    return WSCH_OK;
}

WSCH_API int wsch_client_off(wsch_client *c, wsch_client_handler handle) {
    size_t i;
    if (!c || c->dead) return WSCH_ERR_ARG;
    if (handle.id == 0) return WSCH_ERR_STALE;
    for (i = 0; i < c->num_handlers; i++) {
        if (c->handlers[i].id == handle.id) {
            if (c->dispatching) {
                /* the dispatch loop holds indices: mark now, compact after */
                c->handlers[i].id = 0;
                c->handlers[i].fn = NULL;
                c->handlers_dirty = 1;
            } else {
                WSCH_MEMMOVE(c->handlers + i, c->handlers + i + 1, (c->num_handlers - i - 1) * sizeof *c->handlers);
                c->num_handlers--;
            }
            return WSCH_OK;
        }
    }
    return WSCH_ERR_STALE;
}

/* ---- queries ---- */

WSCH_API wsch_status wsch_client_status(const wsch_client *c) {
    return c ? wsch__cl_status_of(c->state) : WSCH_STATUS_DISCONNECTED;
}

WSCH_API int64_t wsch_client_next_retry_ms(const wsch_client *c) {
    uint64_t now;
    if (!c || c->state != WSCH__CL_WAITING) return -1;
    now = c->d.effects.now_ms(c->d.user);
    return now >= c->retry_at ? 0 : (int64_t)(c->retry_at - now);
}

WSCH_API uint32_t wsch_client_attempts(const wsch_client *c) { return c ? c->attempts : 0; }
WSCH_API int wsch_client_http_status(const wsch_client *c) { return c ? c->http_status : 0; }

WSCH_API unsigned wsch_client_want(const wsch_client *c) {
    if (!c || c->dead) return 0;
    if (c->state == WSCH__CL_CONNECTING) return WSCH_WANT_WRITE;   /* a non-blocking connect completes */
    return c->conn ? wsch_conn_want(c->conn) : 0;
}
WSCH_API wsch_stop wsch_client_stop_reason(const wsch_client *c) { return c ? c->stop : WSCH_STOP_NONE; }
WSCH_API int wsch_client_last_close_code(const wsch_client *c) { return c ? c->last_close_code : 0; }
WSCH_API size_t wsch_client_queued_count(const wsch_client *c) { return c ? c->q_count : 0; }
WSCH_API size_t wsch_client_queued_bytes(const wsch_client *c) { return c ? c->q_bytes : 0; }
WSCH_API wsch_conn *wsch_client_conn(const wsch_client *c) { return c ? c->conn : NULL; }
WSCH_API void *wsch_client_user(const wsch_client *c) { return c ? c->d.user : NULL; }

WSCH_API const char *wsch_status_str(wsch_status s) {
    switch (s) {
    case WSCH_STATUS_CONNECTED: return "connected";
    case WSCH_STATUS_CONNECTING: return "connecting";
    default: return "disconnected";
    }
}

WSCH_API const char *wsch_stop_str(wsch_stop s) {
    switch (s) {
    case WSCH_STOP_USER: return "disconnect() called";
    case WSCH_STOP_TERMINAL_CODE: return "server closed with a terminal code";
    case WSCH_STOP_MAX_ATTEMPTS: return "retries used up";
    case WSCH_STOP_REFUSED: return "handshake refused (HTTP 401/403)";
    default: return "not stopped";
    }
}
#endif /* WS_CHANNEL_NO_CLIENT */

// >>hub
#ifndef WS_CHANNEL_NO_HUB
/* Layout. A peer is one allocation (wsch__hub_peer) beside its
   wsch_conn; a slot table maps handles (index, generation) to peers, so a
   stale handle finds a bumped generation instead of freed memory. Channels
   and users live in two chained hash tables with a keyed hash. A channel
   keeps an array of its subscribers; a peer keeps an array of
   (channel, position in that channel's array), so unsubscribing is a hash
   lookup, a scan of the peer's own few subscriptions and a swap-remove.
   A user keeps a doubly linked list of its peers. Nothing is scanned per
   broadcast but the subscribers themselves.
   With a bridge, a user entry's key is preceded by the user prefix
   ("#user:" + id in one allocation), so the user's bridge channel name is
   at hand without a buffer; the interest callbacks run where a channel or
   user entry is created and freed, nowhere else. */

enum { WSCH__HUB_HANDSHAKE = 0, WSCH__HUB_OPEN, WSCH__HUB_CLOSING, WSCH__HUB_CLOSED };

/* Peer flags. */
#define WSCH__HUB_CONNECTED  0x01u  /* on_connect ran; counted in stats.open */
#define WSCH__HUB_REJECTED   0x02u  /* refused in on_request: never becomes open */
#define WSCH__HUB_HTTP       0x04u  /* answered as plain HTTP */
#define WSCH__HUB_IDLE_ARMED 0x08u
#define WSCH__HUB_DROP_LISTED 0x10u /* on a delivery's drop list */
#define WSCH__HUB_COUNTED    0x20u  /* its end is already counted in stats.drops */
#define WSCH__HUB_GIVEN_BACK 0x40u  /* close() has run (or runs now): the transport is the caller's */
#define WSCH__HUB_FINISH_LATER 0x80u /* its conn closed during a delivery walk: finished after it */
#define WSCH__HUB_CLOSE_LATER 0x100u /* and its close() waits for that too, to stay the last callback */
#define WSCH__HUB_PINGED     0x200u /* pinged for its silence; cleared by its next bytes */
#define WSCH__HUB_REPLAYING  0x400u /* has subscriptions waiting for a replay to finish */

typedef struct wsch__hub_entry {
    struct wsch__hub_entry *next;   /* bucket chain */
    const char *key;                /* bytes right after the containing struct */
    uint32_t key_len;               /* channel names and user ids are short */
    uint32_t hash;
} wsch__hub_entry;

typedef struct wsch__hub_table {
    wsch__hub_entry **buckets;
    size_t nbuckets;                /* 0 or a power of two */
    size_t count;
} wsch__hub_table;

struct wsch__hub_peer;
struct wsch__hub_channel;

/* One retained message. The hub's list of them is in arrival order, so the
   oldest overall is also the oldest of its channel: age and memory limits
   pop from one end. */
typedef struct wsch__hub_rec {
    struct wsch__hub_rec *older, *newer;
    struct wsch__hub_channel *ch;
    wsch_shared *frame;             /* exactly as subscribers got it, position included */
    uint64_t offset;
    uint32_t at_ms;
    uint32_t bytes;                 /* counted against history_max_bytes */
} wsch__hub_rec;

/* A user in a channel's presence (desc.presence): its connections
   subscribed there, the other hubs it is in (through the bridge), and what
   was told: presence subscribers (announced), the other hubs (published).
   Info (info_len bytes) sits right after the struct, the key after it. */
typedef struct wsch__hub_member {
    wsch__hub_entry e;              /* first; key: the user id */
    struct wsch__hub_member *dirty_next;    /* the channel's changes since the last flush */
    uint64_t rconns;                /* its connections on other hubs, as they said */
    uint32_t conns;                 /* here */
    uint32_t remote;                /* other hubs it is in */
    uint32_t info_len;              /* 0: none */
    uint8_t announced, dirty, published;
} wsch__hub_member;
#define WSCH__HUB_MEMBER_INFO(m) ((const char *)((m) + 1))
#define WSCH__HUB_PRESENT(m) ((m)->conns || (m)->remote)

/* A user in a channel on another hub, as that hub last said (bridge
   presence); forgotten when not said again before expires_ms. */
typedef struct wsch__hub_remote {
    wsch__hub_entry e;              /* first; key: the hub's origin (8 bytes, big-endian), then the user id */
    uint32_t expires_ms;
    uint32_t conns;
} wsch__hub_remote;

typedef struct wsch__hub_channel {
    wsch__hub_entry e;              /* first: the table hands back entries */
    struct wsch__hub_peer **subs;   /* live subscribers; room is kept for the pending ones too */
    size_t count, cap;
    /* Stream position and history (history on): ring[(head + i) & (ring_cap - 1)]
       is the i-th oldest kept message, offsets consecutive up to `offset`. */
    wsch__hub_rec **ring;
    uint32_t ring_cap, head, kept;
    uint32_t pending;               /* subscriptions waiting for their replay (or a fetch) */
    uint64_t offset, epoch;
    /* Live subscribers have every message up to `delivered`: equal to offset,
       except under shared positions while a fetch fills a gap. */
    uint64_t delivered;
    uint8_t synced;                 /* shared positions: the position is the bridge's, checked by a fetch */
    uint8_t fetching;               /* shared positions: a fetch is out */
    uint8_t moved;                  /* shared positions: the bridge's messages changed the epoch
                                       since the fetch was asked (its answer may be older) */
    uint8_t lost;                   /* shared positions: lost_epoch is one the bridge lost, having had messages */
    uint64_t lost_epoch;            /* (its late messages, still on their way, are skipped) */
    /* Presence: members by user id; psubs the live presence subscribers
       (room kept for the pending ones: ptotal counts both). */
    wsch__hub_table members, remote;
    struct wsch__hub_peer **psubs;
    size_t npsubs, psubs_cap, ptotal;
    size_t users, member_conns;     /* members present (here or elsewhere), and their connections */
    size_t local_users;             /* members with a connection here */
    wsch__hub_member *dirty;        /* members changed since the last flush */
    struct wsch__hub_channel *plist_prev, *plist_next;  /* on the hub's flush list (or wait list) */
    uint32_t stats_at_ms;           /* when counts last went out */
    uint8_t plist;                  /* 0, WSCH__HUB_PLIST_DIRTY or WSCH__HUB_PLIST_WAIT */
    uint8_t listed;                 /* presence subscribers hold the member list (else counts) */
    uint8_t stats_sent;             /* counts went out at least once (stats_at_ms is set) */
    uint8_t stats_due;              /* over the cap: counts held back by the interval are owed */
    uint8_t conns_changed;          /* some member's connections changed since the last flush */
    char *listed_json;              /* [members as last sent], made for the first confirmation or
                                       request that needs it; dropped when a flush changes it */
    size_t listed_len;
    uint8_t psync;                  /* bridge: ask the other hubs for their members at the next flush */
    uint8_t prefresh;               /* bridge: say all members here again at the next flush */
} wsch__hub_channel;
enum { WSCH__HUB_PLIST_DIRTY = 1, WSCH__HUB_PLIST_WAIT = 2 };

/* A client session (reliable messages): the highest id applied and which
   of the WSCH__HUB_WINDOW ids below it were refused. */
#define WSCH__HUB_WINDOW 256u
typedef struct wsch__hub_session {
    wsch__hub_entry e;
    struct wsch__hub_session *idle_prev, *idle_next;   /* the idle list, longest idle first */
    uint64_t last_id;
    uint64_t refused[WSCH__HUB_WINDOW / 64u];          /* bit i: id last_id - i was refused */
    uint32_t conns;
    uint32_t idle_since_ms;
    uint32_t waiting;               /* its reliable messages waiting for bridge.append's answer */
} wsch__hub_session;

typedef struct wsch__hub_user {
    wsch__hub_entry e;
    struct wsch__hub_peer *first;
    size_t count;
} wsch__hub_user;

/* What a subscribe asked for: recover from a position, or the last n kept. */
enum { WSCH__ASK_NONE, WSCH__ASK_RECOVER, WSCH__ASK_BAD_RECOVER, WSCH__ASK_HISTORY };
typedef struct wsch__hub_ask {
    uint64_t n;                     /* recover: the offset; history: how many */
    uint64_t epoch;                 /* recover: the epoch */
    int kind;
} wsch__hub_ask;

typedef struct wsch__hub_sub {
    wsch__hub_channel *ch;
    size_t pos;                     /* index of this peer in ch->subs; WSCH__HUB_PENDING while replaying */
    uint64_t next;                  /* while replaying: the offset to send next; while waiting: ask.n */
    uint64_t want_epoch;            /* while waiting for a fetch: ask.epoch */
    uint8_t asked, gap;             /* while replaying: recover was asked; history went under it */
    uint8_t waiting;                /* pending until a fetch answers: then 1 + the ask's kind, or WSCH__HUB_OWN */
    uint8_t presence;               /* presence was asked: confirmations carry it, and diffs follow */
    uint32_t ppos;                  /* index in ch->psubs while live with presence */
} wsch__hub_sub;
#define WSCH__HUB_OWN 0xFFu         /* a recover whose fetch failed: confirmed at its own position */
#define WSCH__HUB_PENDING ((size_t)-1)

typedef struct wsch__hub_peer {
    wsch_hub *hub;
    wsch_conn *conn;
    const wsch_effects *effects;    /* send, close and timers of this peer's transport */
    void *user;
    wsch__hub_user *uent;           /* NULL: anonymous */
    wsch__hub_session *sess;        /* NULL: no session given */
    struct wsch__hub_peer *user_prev, *user_next;
    struct wsch__hub_peer *link;  /* a delivery's drop list, then the hub's free list */
    wsch__hub_sub *subs;
    char *info;                     /* presence info, info_len bytes; NULL: none */
    uint32_t info_len;
    uint32_t last_in_ms;            /* now_ms() of the last read, truncated: differences wrap correctly */
    uint32_t index;
    uint16_t nsubs, subs_cap;
    uint16_t close_code;            /* for a FINISH_LATER peer */
    uint16_t flags;
    uint8_t state, drop_reason;
} wsch__hub_peer;

/* A reliable message whose broadcast went to bridge.append: answered when
   appended() reports. The session is held (counted as a connection) so
   that the outcome is recorded even if the peer has gone. */
typedef struct wsch__hub_wait {
    uint64_t ticket, id;
    wsch_hub_peer peer;
    struct wsch__hub_session *sess;
} wsch__hub_wait;

typedef struct wsch__hub_slot {
    wsch__hub_peer *peer;       /* NULL when free */
    uint32_t gen;                   /* never 0 */
    /* index + 1 of the next slot on its list: the free list (0 ends it)
       while free, the flush list (desc.gather; END ends it) while listed.
       An open slot is listed when link is nonzero; one whose peer goes
       while listed joins the free list when the flush passes it. */
    uint32_t link;
} wsch__hub_slot;
#define WSCH__HUB_FLUSH_END UINT32_MAX

struct wsch_hub {
    wsch_hub_desc desc;             /* defaults filled in */
    wsch_conn_desc conn_desc;       /* one for every peer; user = the peer */
    wsch_budget own_budget;         /* the peers', when desc.limits has none: counts, keeps spares */
    uint32_t flush_head, flush_tail;/* desc.gather: slots (index + 1) wsch_hub_flush() writes */
    uint64_t hash_key[2];
    wsch__hub_slot *slots;
    uint32_t nslots, slots_cap, free_head;
    wsch__hub_table channels, users, sessions;
    wsch__hub_rec *oldest, *newest; /* every retained message */
    wsch__hub_session *idle_first, *idle_last;
    uint64_t epoch_key, epochs;     /* epoch = mix(epoch_key + epochs++) */
    int positioned;                 /* channel messages carry their position (history or desc.positions) */
    uint64_t history_messages, history_bytes, replayed, recovered, not_recovered, acks, duplicates;
    wsch__hub_peer *answering;      /* on_message runs for this peer's reliable message... */
    uint64_t answering_id;          /* ...with this id (0: not reliable) */
    const wsch_envelope *answering_env;
    int answered;                   /* wsch_hub_refuse() answered it */
    wsch__hub_peer *to_free;      /* released inside a callback; freed on the way out */
    char *token_buf;                /* max_token_len + 1 */
    char *proto_buf;                /* "bearer." + max_token_len + 1 */
    char *http_buf;                 /* the last on_http answer, until the conn has copied it */
    unsigned depth;                 /* nesting of hub calls on the stack */
    unsigned walking;               /* a delivery walks a subscriber array or user list */
    struct wsch__hub_peer *walk_drops; /* peers to drop or finish when the walk ends */
    int shutting_down;
    int destroying;                 /* wsch_hub_destroy() runs: no more callbacks */
    int bridged;                    /* desc.bridge is set */
    int shared;                     /* shared positions: the bridge numbers and keeps channel messages */
    struct wsch__hub_wait *waits;   /* reliable messages waiting for bridge.append's answer, oldest first */
    size_t whead, nwaits, waits_cap;    /* waits[whead..nwaits) are out */
    uint64_t next_ticket;
    int deferred;                   /* the reliable message being answered waits for append */
    uint64_t origin;                /* this hub's id in bridge messages */
    char *bridge_buf;               /* an outgoing bridge name and message; kept for the next one */
    size_t bridge_cap;
    void *deflater;                 /* compresses broadcasts once (permessage-deflate), made when first needed */
    uint64_t peers, open, subscriptions, accepted, messages_in, messages_out, encodes, http_responses;
    uint64_t drops[WSCH_HUB_DROP_COUNT];
    uint64_t bridge_published, bridge_publish_errors, bridge_received, bridge_own, bridge_refused;
    uint64_t bridge_appended, bridge_append_errors, bridge_fetches, bridge_fetch_errors, bridge_gaps;
    /* Presence: channels with changes to send at the next flush, and those
       whose counts wait for presence_stats_interval_ms; a buffer for the
       member lists. */
    wsch__hub_channel *pdirty, *pwait;
    char *pbuf;
    size_t pbuf_cap;
    uint32_t prefresh_at_ms;        /* bridge: when members are said again, and stale ones forgotten */
    int prefresh_armed;             /* prefresh_at_ms is set (at the first flush) */
    uint64_t presence_members, presence_messages, presence_sent;
    uint64_t flushed_peers;
    uint64_t presence_remote, presence_in, presence_expired;
};

#define WSCH__HUB_UPFX_LEN 6u       /* WSCH_STRLEN(WSCH_HUB_BRIDGE_USER_PREFIX) */
#define WSCH__HUB_BRIDGE_MAGIC "wsch1 " /* a bridge message starts with it (6 bytes) */
#define WSCH__HUB_PRESENCE_MAGIC "wschp " /* ... and a presence message of another hub with this */

/* ---- keyed hash: SipHash-1-3 (channel names and user ids come from peers) */

WSCH__PRIVATE uint64_t wsch__hub_rotl(uint64_t x, unsigned b) { return (x << b) | (x >> (64u - b)); }

WSCH__PRIVATE void wsch__hub_sipround(uint64_t v[4]) {
    v[0] += v[1]; v[1] = wsch__hub_rotl(v[1], 13); v[1] ^= v[0]; v[0] = wsch__hub_rotl(v[0], 32);
    v[2] += v[3]; v[3] = wsch__hub_rotl(v[3], 16); v[3] ^= v[2];
    v[0] += v[3]; v[3] = wsch__hub_rotl(v[3], 21); v[3] ^= v[0];
    v[2] += v[1]; v[1] = wsch__hub_rotl(v[1], 17); v[1] ^= v[2]; v[2] = wsch__hub_rotl(v[2], 32);
}

WSCH__PRIVATE uint32_t wsch__hub_hash(const wsch_hub *hub, const char *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t v[4], m, b = (uint64_t)len << 56;
    size_t i, blocks = len / 8u;
    v[0] = hub->hash_key[0] ^ 0x736f6d6570736575ull;
    v[1] = hub->hash_key[1] ^ 0x646f72616e646f6dull;
    v[2] = hub->hash_key[0] ^ 0x6c7967656e657261ull;
    v[3] = hub->hash_key[1] ^ 0x7465646279746573ull;
    for (i = 0; i < blocks; i++, p += 8) {
        unsigned j;
        m = 0;
        for (j = 0; j < 8u; j++) m |= (uint64_t)p[j] << (8u * j);
        v[3] ^= m;
        wsch__hub_sipround(v);
        v[0] ^= m;
    }
    for (i = 0; i < (len & 7u); i++) b |= (uint64_t)p[i] << (8u * i);
    v[3] ^= b;
    wsch__hub_sipround(v);
    v[0] ^= b;
    v[2] ^= 0xffu;
    wsch__hub_sipround(v);
    wsch__hub_sipround(v);
    wsch__hub_sipround(v);
    m = v[0] ^ v[1] ^ v[2] ^ v[3];
    return (uint32_t)(m ^ (m >> 32));
}

/* ---- chained hash table of entries --------------------------------------- */

WSCH__PRIVATE wsch__hub_entry *wsch__hub_find(const wsch__hub_table *t, const char *key, size_t len, uint32_t h) {
    wsch__hub_entry *e;
    if (t->nbuckets == 0) return NULL;
    for (e = t->buckets[(size_t)h & (t->nbuckets - 1u)]; e; e = e->next) {
        if (e->hash == h && e->key_len == len && WSCH_MEMCMP(e->key, key, len) == 0) return e;
    }
    return NULL;
}

/* Rehashes into n buckets. Best effort: on allocation failure the old table
   stays, only slower. Returns WSCH_OK or WSCH_ERR_NOMEM. */
WSCH__PRIVATE int wsch__hub_rehash(wsch_hub *hub, wsch__hub_table *t, size_t n) {
    wsch__hub_entry **nb;
    size_t i;
    if (n > (size_t)-1 / sizeof *nb) return WSCH_ERR_NOMEM;
    nb = (wsch__hub_entry **)wsch__alloc(&hub->desc.allocator, n * sizeof *nb);
    if (!nb) return WSCH_ERR_NOMEM;
    for (i = 0; i < n; i++) nb[i] = NULL;
    for (i = 0; i < t->nbuckets; i++) {
        wsch__hub_entry *e = t->buckets[i], *next;
        for (; e; e = next) {
            size_t b = (size_t)e->hash & (n - 1u);
            next = e->next;
            e->next = nb[b];
            nb[b] = e;
        }
    }
    wsch__free(&hub->desc.allocator, t->buckets);
    t->buckets = nb;
    t->nbuckets = n;
    return WSCH_OK;
}

WSCH__PRIVATE int wsch__hub_insert(wsch_hub *hub, wsch__hub_table *t, wsch__hub_entry *e) {
    size_t b;
    if (t->nbuckets == 0 && wsch__hub_rehash(hub, t, 16) != WSCH_OK) return WSCH_ERR_NOMEM;
    if (t->count >= t->nbuckets && t->nbuckets <= ((size_t)-1 >> 2)) (void)wsch__hub_rehash(hub, t, t->nbuckets * 2u);
    b = (size_t)e->hash & (t->nbuckets - 1u);
    e->next = t->buckets[b];
    t->buckets[b] = e;
    t->count++;
    return WSCH_OK;
}

WSCH__PRIVATE void wsch__hub_remove(wsch_hub *hub, wsch__hub_table *t, wsch__hub_entry *e) {
    wsch__hub_entry **pp = &t->buckets[(size_t)e->hash & (t->nbuckets - 1u)];
    while (*pp != e) pp = &(*pp)->next;
    *pp = e->next;
    t->count--;
    /* Shrink, so memory follows the number of channels and users down. */
    if (t->nbuckets > 16u && t->count < t->nbuckets / 8u) (void)wsch__hub_rehash(hub, t, t->nbuckets / 2u);
}

/* An entry struct of `size` bytes followed by pfx_len bytes of pfx (the
   bridge's user prefix, or nothing) and a copy of the key. */
WSCH__PRIVATE wsch__hub_entry *wsch__hub_entry_new(wsch_hub *hub, size_t size, const char *pfx, size_t pfx_len,
                                                   const char *key, size_t len, uint32_t h) {
    wsch__hub_entry *e;
    char *bytes;
    if (len > 0xFFFFu) return NULL;    /* longer than any key the hub accepts */
    bytes = (char *)wsch__alloc(&hub->desc.allocator, size + pfx_len + len + 1u);
    if (!bytes) return NULL;
    WSCH_MEMSET(bytes, 0, size);
    if (pfx_len) WSCH_MEMCPY(bytes + size, pfx, pfx_len);
    WSCH_MEMCPY(bytes + size + pfx_len, key, len);
    bytes[size + pfx_len + len] = '\0';
    e = (wsch__hub_entry *)(void *)bytes;
    e->key = bytes + size + pfx_len;
    e->key_len = (uint32_t)len;
    e->hash = h;
    return e;
}

/* ---- small helpers --------------------------------------------------------- */

WSCH__PRIVATE int wsch__hub_span_is(wsch_str s, const char *lit) {
    size_t n = WSCH_STRLEN(lit);
    return s.len == n && (n == 0 || WSCH_MEMCMP(s.ptr, lit, n) == 0);
}

/* Channel names: 1..max bytes of A-Z a-z 0-9 - _ . : @ /, so a name never
   needs escaping in JSON, a URL or a log line. */
WSCH__PRIVATE int wsch__hub_channel_ok(const wsch_hub *hub, const char *name, size_t len) {
    size_t i;
    if (len == 0 || len > hub->desc.max_channel_len) return 0;
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_' || ch == '.' || ch == ':' || ch == '@' || ch == '/'))
            return 0;
    }
    return 1;
}

WSCH__PRIVATE wsch__hub_peer *wsch__hub_get(const wsch_hub *hub, wsch_hub_peer h) {
    if (!hub || h.gen == 0 || h.index >= hub->nslots) return NULL;
    if (hub->slots[h.index].gen != h.gen) return NULL;
    return hub->slots[h.index].peer;
}

WSCH__PRIVATE wsch_hub_peer wsch__hub_handle(const wsch_hub *hub, const wsch__hub_peer *cl) {
    wsch_hub_peer h;
    h.index = cl->index;
    h.gen = hub->slots[cl->index].gen;
    return h;
}

WSCH__PRIVATE wsch_str wsch__hub_user_id(const wsch__hub_peer *cl) {
    wsch_str s;
    s.ptr = cl->uent ? cl->uent->e.key : "";
    s.len = cl->uent ? cl->uent->e.key_len : 0;
    return s;
}

/* Every public entry point that can run callbacks brackets them with
   enter/leave; peers released meanwhile are freed on the outermost leave,
   so no frame on the stack is left holding a freed peer. */
WSCH__PRIVATE void wsch__hub_enter(wsch_hub *hub) { hub->depth++; }

WSCH__PRIVATE void wsch__hub_free_peer(wsch_hub *hub, wsch__hub_peer *cl) {
    if (cl->conn) wsch_conn_destroy(cl->conn);
    wsch__free(&hub->desc.allocator, cl->subs);
    wsch__free(&hub->desc.allocator, cl->info);
    wsch__free(&hub->desc.allocator, cl);
}

WSCH__PRIVATE void wsch__hub_leave(wsch_hub *hub) {
    if (--hub->depth != 0) return;
    while (hub->to_free) {
        wsch__hub_peer *cl = hub->to_free;
        hub->to_free = cl->link;
        wsch__hub_free_peer(hub, cl);
    }
    wsch__free(&hub->desc.allocator, hub->http_buf);
    hub->http_buf = NULL;
}

/* ---- bridge interest ------------------------------------------------------- */

/* Tells the bridge that the hub starts (on) or stops needing the bridge
   channel of a channel or user entry. */
WSCH__PRIVATE void wsch__hub_interest(wsch_hub *hub, const wsch__hub_entry *e, int is_user, int on) {
    const char *name = e->key;
    size_t len = e->key_len;
    if (!hub->bridged) return;
    if (is_user) {
        name -= WSCH__HUB_UPFX_LEN;     /* the prefix sits right before the id */
        len += WSCH__HUB_UPFX_LEN;
    }
    if (on) hub->desc.bridge.subscribe(name, len, hub->desc.bridge.user);
    else hub->desc.bridge.unsubscribe(name, len, hub->desc.bridge.user);
}

/* ---- presence: members ---------------------------------------------------- */

WSCH__PRIVATE void wsch__hub_presence_goodbye(wsch_hub *hub, wsch__hub_channel *ch);

/* The hub's two lists of channels whose presence has something to send:
   at the next flush (DIRTY), or once their counts may go again (WAIT). */
WSCH__PRIVATE void wsch__hub_plist_unlink(wsch_hub *hub, wsch__hub_channel *ch) {
    wsch__hub_channel **head = ch->plist == WSCH__HUB_PLIST_DIRTY ? &hub->pdirty : &hub->pwait;
    if (!ch->plist || hub->destroying) return;
    if (ch->plist_prev) ch->plist_prev->plist_next = ch->plist_next;
    else *head = ch->plist_next;
    if (ch->plist_next) ch->plist_next->plist_prev = ch->plist_prev;
    ch->plist_prev = ch->plist_next = NULL;
    ch->plist = 0;
}

WSCH__PRIVATE void wsch__hub_plist_push(wsch_hub *hub, wsch__hub_channel *ch, uint8_t which) {
    wsch__hub_channel **head = which == WSCH__HUB_PLIST_DIRTY ? &hub->pdirty : &hub->pwait;
    wsch__hub_plist_unlink(hub, ch);
    ch->plist = which;
    ch->plist_prev = NULL;
    ch->plist_next = *head;
    if (*head) (*head)->plist_prev = ch;
    *head = ch;
}

WSCH__PRIVATE void wsch__hub_member_dirty(wsch_hub *hub, wsch__hub_channel *ch, wsch__hub_member *m) {
    if (!m->dirty) {
        m->dirty = 1;
        m->dirty_next = ch->dirty;
        ch->dirty = m;
    }
    if (ch->plist != WSCH__HUB_PLIST_DIRTY) wsch__hub_plist_push(hub, ch, WSCH__HUB_PLIST_DIRTY);
}

WSCH__PRIVATE void wsch__hub_member_free(wsch_hub *hub, wsch__hub_channel *ch, wsch__hub_member *m) {
    wsch__hub_remove(hub, &ch->members, &m->e);
    hub->presence_members--;
    wsch__free(&hub->desc.allocator, m);
}

/* The user came into the channel's presence (came 1: its first connection
   here or elsewhere) or left it (0: its last): counted, sent at the next
   flush, and told to on_presence. */
WSCH__PRIVATE void wsch__hub_member_came(wsch_hub *hub, wsch__hub_channel *ch, wsch__hub_member *m, int came) {
    wsch_str cs, us;
    if (came) ch->users++;
    else ch->users--;
    wsch__hub_member_dirty(hub, ch, m);
    cs.ptr = ch->e.key;
    cs.len = ch->e.key_len;
    us.ptr = m->e.key;
    us.len = m->e.key_len;
    if (hub->desc.on_presence) hub->desc.on_presence(hub, cs, us, came, hub->desc.user);
}

/* The member for user id (len bytes, hashed h) in the channel, made when
   absent with info. NULL without memory. */
WSCH__PRIVATE wsch__hub_member *wsch__hub_member_get(wsch_hub *hub, wsch__hub_channel *ch, const char *id, size_t len,
                                                     uint32_t h, const char *info, size_t info_len) {
    wsch__hub_member *m = (wsch__hub_member *)(void *)wsch__hub_find(&ch->members, id, len, h);
    if (m) return m;
    m = (wsch__hub_member *)(void *)wsch__hub_entry_new(hub, sizeof *m + info_len, NULL, 0, id, len, h);
    if (!m) return NULL;
    if (wsch__hub_insert(hub, &ch->members, &m->e) != WSCH_OK) {
        wsch__free(&hub->desc.allocator, m);
        return NULL;
    }
    m->info_len = (uint32_t)info_len;
    if (info_len) WSCH_MEMCPY(m + 1, info, info_len);
    hub->presence_members++;
    return m;
}

/* The peer's connection now counts in the channel's presence. A user id
   that is not UTF-8 cannot be said in JSON: such a peer is no member, as
   an anonymous one. WSCH_ERR_NOMEM when a new member cannot be made. */
WSCH__PRIVATE int wsch__hub_member_join(wsch_hub *hub, wsch__hub_channel *ch, const wsch__hub_peer *cl) {
    const wsch__hub_entry *u = cl->uent ? &cl->uent->e : NULL;
    wsch__hub_member *m;
    if (!hub->desc.presence || !u) return WSCH_OK;
    if (!wsch_utf8_valid(u->key, u->key_len)) return WSCH_OK;
    m = wsch__hub_member_get(hub, ch, u->key, u->key_len, u->hash, cl->info, cl->info_len);
    if (!m) return WSCH_ERR_NOMEM;
    ch->member_conns++;
    ch->conns_changed = 1;
    if (m->conns++ == 0) {
        ch->local_users++;
        wsch__hub_member_dirty(hub, ch, m);     /* the other hubs are told */
        if (!m->remote) wsch__hub_member_came(hub, ch, m, 1);
    }
    return WSCH_OK;
}

/* The peer's connection no longer counts there: its user's last one leaves. */
WSCH__PRIVATE void wsch__hub_member_leave(wsch_hub *hub, wsch__hub_channel *ch, const wsch__hub_peer *cl) {
    const wsch__hub_entry *u = cl->uent ? &cl->uent->e : NULL;
    wsch__hub_member *m;
    if (!hub->desc.presence || !u) return;
    m = (wsch__hub_member *)(void *)wsch__hub_find(&ch->members, u->key, u->key_len, u->hash);
    if (!m || !m->conns) return;    /* was no member (not UTF-8) */
    ch->member_conns--;
    ch->conns_changed = 1;
    if (--m->conns == 0) {
        ch->local_users--;
        wsch__hub_member_dirty(hub, ch, m);
        if (!m->remote) wsch__hub_member_came(hub, ch, m, 0);
    }
}

/* A channel going away takes its presence with it (nobody is left to tell
   here; wsch__hub_presence_goodbye told the others and on_presence). */
WSCH__PRIVATE void wsch__hub_members_free(wsch_hub *hub, wsch__hub_channel *ch) {
    size_t i;
    wsch__hub_plist_unlink(hub, ch);
    for (i = 0; i < ch->members.nbuckets; i++) {
        wsch__hub_entry *e = ch->members.buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            hub->presence_members--;
            wsch__free(&hub->desc.allocator, e);
        }
    }
    wsch__free(&hub->desc.allocator, ch->members.buckets);
    for (i = 0; i < ch->remote.nbuckets; i++) {
        wsch__hub_entry *e = ch->remote.buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            hub->presence_remote--;
            wsch__free(&hub->desc.allocator, e);
        }
    }
    wsch__free(&hub->desc.allocator, ch->remote.buckets);
    wsch__free(&hub->desc.allocator, ch->psubs);
    wsch__free(&hub->desc.allocator, ch->listed_json);
}

/* ---- subscriptions --------------------------------------------------------- */

WSCH__PRIVATE wsch__hub_channel *wsch__hub_channel_find(const wsch_hub *hub, const char *name, size_t len) {
    return (wsch__hub_channel *)(void *)wsch__hub_find(&hub->channels, name, len, wsch__hub_hash(hub, name, len));
}

WSCH__PRIVATE int wsch__hub_sub_index(const wsch__hub_peer *cl, const wsch__hub_channel *ch) {
    int i;
    for (i = 0; i < (int)cl->nsubs; i++) {
        if (cl->subs[i].ch == ch) return i;
    }
    return -1;
}

/* Grows an array of elem-sized items to hold one more than *cap allows,
   doubling from `first`, never past `max`. WSCH_OK or WSCH_ERR_NOMEM. */
WSCH__PRIVATE int wsch__hub_grow(wsch_hub *hub, void **arr, size_t count, size_t *cap, size_t elem, size_t first,
                                 size_t max) {
    size_t ncap;
    void *na;
    if (count < *cap) return WSCH_OK;
    ncap = *cap ? *cap * 2u : first;
    if (ncap > max) ncap = max;
    if (ncap <= count || ncap > (size_t)-1 / elem) return WSCH_ERR_NOMEM;
    na = wsch__alloc(&hub->desc.allocator, ncap * elem);
    if (!na) return WSCH_ERR_NOMEM;
    if (count) WSCH_MEMCPY(na, *arr, count * elem);
    wsch__free(&hub->desc.allocator, *arr);
    *arr = na;
    *cap = ncap;
    return WSCH_OK;
}

/* ---- channels and their history -------------------------------------------- */

/* splitmix64's finalizer: a bijection, so epochs drawn from one key and a
   counter never repeat within a process, and look random across processes. */
WSCH__PRIVATE uint64_t wsch__hub_mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

WSCH__PRIVATE void wsch__hub_epoch_hex(uint64_t epoch, char out[WSCH_HUB_EPOCH_LEN + 1]) {
    static const char hex[] = "0123456789abcdef";
    unsigned i;
    for (i = 0; i < WSCH_HUB_EPOCH_LEN; i++) out[i] = hex[(epoch >> (60u - 4u * i)) & 0xFu];
    out[WSCH_HUB_EPOCH_LEN] = '\0';
}

/* 16 lowercase hex digits (an epoch, an origin id): 1 and *out, or 0. */
WSCH__PRIVATE int wsch__hub_hex16(const char *p, uint64_t *out) {
    uint64_t v = 0;
    unsigned i;
    for (i = 0; i < WSCH_HUB_EPOCH_LEN; i++) {
        char ch = p[i];
        unsigned d;
        if (ch >= '0' && ch <= '9') d = (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') d = (unsigned)(ch - 'a') + 10u;
        else return 0;
        v = (v << 4) | d;
    }
    *out = v;
    return 1;
}

WSCH__PRIVATE uint32_t wsch__hub_now(const wsch_hub *hub) {
    return hub->desc.effects.now_ms ? (uint32_t)hub->desc.effects.now_ms(hub->desc.user) : 0u;
}

/* The channel named so, created when absent (create 1): a new channel
   starts a new epoch, and the bridge starts listening to it. */
WSCH__PRIVATE wsch__hub_channel *wsch__hub_channel_get(wsch_hub *hub, const char *name, size_t len, int create) {
    uint32_t h = wsch__hub_hash(hub, name, len);
    wsch__hub_channel *ch = (wsch__hub_channel *)(void *)wsch__hub_find(&hub->channels, name, len, h);
    if (ch || !create) return ch;
    ch = (wsch__hub_channel *)(void *)wsch__hub_entry_new(hub, sizeof *ch, NULL, 0, name, len, h);
    if (!ch) return NULL;
    if (wsch__hub_insert(hub, &hub->channels, &ch->e) != WSCH_OK) {
        wsch__free(&hub->desc.allocator, ch);
        return NULL;
    }
    ch->epoch = wsch__hub_mix(hub->epoch_key + hub->epochs++);
    ch->listed = 1;                 /* the empty member list */
    wsch__hub_interest(hub, &ch->e, 0, 1);
    if (hub->bridged && hub->desc.presence) {
        ch->psync = 1;              /* the other hubs are asked for their members at the next flush */
        wsch__hub_plist_push(hub, ch, WSCH__HUB_PLIST_DIRTY);
    }
    return ch;
}

/* Frees a channel nothing holds any more: no subscriber, live or pending,
   no history, no fetch out. Its position goes with it (the next one is a new epoch). */
WSCH__PRIVATE void wsch__hub_channel_release(wsch_hub *hub, wsch__hub_channel *ch) {
    if (ch->count || ch->pending || ch->kept || ch->fetching) return;
    wsch__hub_presence_goodbye(hub, ch);        /* before it is forgotten here */
    wsch__hub_interest(hub, &ch->e, 0, 0);
    wsch__hub_members_free(hub, ch);
    wsch__hub_remove(hub, &hub->channels, &ch->e);
    wsch__free(&hub->desc.allocator, ch->subs);
    wsch__free(&hub->desc.allocator, ch->ring);
    wsch__free(&hub->desc.allocator, ch);
}

/* Forgets the channel's oldest kept message. */
WSCH__PRIVATE void wsch__hub_hist_pop(wsch_hub *hub, wsch__hub_channel *ch) {
    wsch__hub_rec *r = ch->ring[ch->head];
    ch->head = (ch->head + 1u) & (ch->ring_cap - 1u);
    ch->kept--;
    if (r->older) r->older->newer = r->newer;
    else hub->oldest = r->newer;
    if (r->newer) r->newer->older = r->older;
    else hub->newest = r->older;
    hub->history_messages--;
    hub->history_bytes -= r->bytes;
    wsch_shared_release(r->frame);
    wsch__free(&hub->desc.allocator, r);
    if (ch->kept == 0) {
        wsch__free(&hub->desc.allocator, ch->ring);   /* a quiet channel returns to its bare size */
        ch->ring = NULL;
        ch->ring_cap = ch->head = 0;
    }
}

WSCH__PRIVATE void wsch__hub_hist_drop(wsch_hub *hub, wsch__hub_channel *ch) {
    while (ch->kept) wsch__hub_hist_pop(hub, ch);
}

/* Applies the age and memory limits: the oldest messages go first, and a
   channel left with nothing is freed. */
WSCH__PRIVATE void wsch__hub_hist_trim(wsch_hub *hub, uint32_t now) {
    while (hub->oldest && (hub->history_bytes > hub->desc.history_max_bytes ||
                           now - hub->oldest->at_ms >= hub->desc.history_ttl_ms)) {
        wsch__hub_channel *ch = hub->oldest->ch;
        WSCH_ASSERT(ch->ring[ch->head] == hub->oldest);
        wsch__hub_hist_pop(hub, ch);
        wsch__hub_channel_release(hub, ch);
    }
}

/* Makes room for one more in the channel's ring when it is full and may
   grow (without memory it stays full). */
WSCH__PRIVATE void wsch__hub_ring_room(wsch_hub *hub, wsch__hub_channel *ch) {
    if (ch->kept == ch->ring_cap && ch->ring_cap < hub->desc.history_size) {
        uint32_t ncap = ch->ring_cap ? ch->ring_cap * 2u : 4u, i;
        wsch__hub_rec **nr = (wsch__hub_rec **)wsch__alloc(&hub->desc.allocator, ncap * sizeof *nr);
        if (nr) {
            for (i = 0; i < ch->kept; i++) nr[i] = ch->ring[(ch->head + i) & (ch->ring_cap - 1u)];
            wsch__free(&hub->desc.allocator, ch->ring);
            ch->ring = nr;
            ch->ring_cap = ncap;
            ch->head = 0;
        }
    }
}

/* A new record for s at offset, counted; NULL without memory. */
WSCH__PRIVATE wsch__hub_rec *wsch__hub_rec_new(wsch_hub *hub, wsch__hub_channel *ch, wsch_shared *s, uint64_t offset,
                                              uint32_t at_ms) {
    wsch__hub_rec *r = (wsch__hub_rec *)wsch__alloc(&hub->desc.allocator, sizeof *r);
    if (!r) return NULL;
    s->refs++;
    r->frame = s;
    r->ch = ch;
    r->offset = offset;
    r->at_ms = at_ms;
    /* What the message holds on to: its record, its frame, its ring slot. */
    r->bytes = (uint32_t)(sizeof *r + sizeof *s + wsch_shared_frame_size(s) + sizeof r);
    hub->history_messages++;
    hub->history_bytes += r->bytes;
    return r;
}

/* Keeps s as the channel's message at offset ch->offset. Without memory the
   channel's history is dropped instead: a recovery must never skip a
   message, and an empty history cannot be replayed across. */
WSCH__PRIVATE void wsch__hub_hist_append(wsch_hub *hub, wsch__hub_channel *ch, wsch_shared *s, uint32_t now) {
    wsch__hub_rec *r;
    wsch__hub_ring_room(hub, ch);
    if (ch->kept && ch->kept >= hub->desc.history_size) wsch__hub_hist_pop(hub, ch);
    r = ch->kept < ch->ring_cap ? wsch__hub_rec_new(hub, ch, s, ch->offset, now) : NULL;
    if (!r) {
        wsch__hub_hist_drop(hub, ch);
        return;
    }
    r->older = hub->newest;
    r->newer = NULL;
    if (hub->newest) hub->newest->newer = r;
    else hub->oldest = r;
    hub->newest = r;
    ch->ring[(ch->head + ch->kept) & (ch->ring_cap - 1u)] = r;
    ch->kept++;
}

/* Keeps s as the message just before the channel's oldest kept one (a
   fetch filling in): beside it in the list of every retained message, with
   its age, so that list stays oldest-first within each channel. Returns 0
   when the channel keeps all it may (or without memory). */
WSCH__PRIVATE int wsch__hub_hist_prepend(wsch_hub *hub, wsch__hub_channel *ch, wsch_shared *s) {
    wsch__hub_rec *next, *r;
    WSCH_ASSERT(ch->kept);              /* it goes before the oldest kept */
    if (ch->kept >= hub->desc.history_size) return 0;
    wsch__hub_ring_room(hub, ch);
    next = ch->ring[ch->head];
    r = ch->kept < ch->ring_cap ? wsch__hub_rec_new(hub, ch, s, next->offset - 1u, next->at_ms) : NULL;
    if (!r) return 0;
    r->newer = next;
    r->older = next->older;
    if (next->older) next->older->newer = r;
    else hub->oldest = r;
    next->older = r;
    ch->head = (ch->head - 1u) & (ch->ring_cap - 1u);
    ch->ring[ch->head] = r;
    ch->kept++;
    return 1;
}

/* Offset of the oldest message the channel keeps; one past its last when
   it keeps none. */
WSCH__PRIVATE uint64_t wsch__hub_first_kept(const wsch__hub_channel *ch) {
    return ch->kept ? ch->ring[ch->head]->offset : ch->offset + 1u;
}

/* ---- subscriptions --------------------------------------------------------- */

/* The peer's subscription sub goes live: into the channel's subscribers
   (and presence subscribers), where room was kept when it was made. */
WSCH__PRIVATE void wsch__hub_sub_live(wsch__hub_peer *cl, wsch__hub_sub *sub) {
    wsch__hub_channel *ch = sub->ch;
    if (sub->pos == WSCH__HUB_PENDING) ch->pending--;
    sub->pos = ch->count;
    ch->subs[ch->count++] = cl;
    if (sub->presence) {
        sub->ppos = (uint32_t)ch->npsubs;
        ch->psubs[ch->npsubs++] = cl;
    }
}

/* The subscription asks for presence from now on: room in psubs is kept
   for it. WSCH_ERR_NOMEM leaves it without. */
WSCH__PRIVATE int wsch__hub_sub_presence(wsch_hub *hub, wsch__hub_peer *cl, wsch__hub_sub *sub) {
    wsch__hub_channel *ch = sub->ch;
    void *arr = (void *)ch->psubs;
    if (sub->presence) return WSCH_OK;
    if (wsch__hub_grow(hub, &arr, ch->ptotal, &ch->psubs_cap, sizeof(wsch__hub_peer *), 4, (size_t)-1) != WSCH_OK)
        return WSCH_ERR_NOMEM;
    ch->psubs = (wsch__hub_peer **)arr;
    ch->ptotal++;
    sub->presence = 1;
    if (sub->pos != WSCH__HUB_PENDING) {
        sub->ppos = (uint32_t)ch->npsubs;
        ch->psubs[ch->npsubs++] = cl;
    }
    return WSCH_OK;
}

/* Subscribes the peer. replay_from 0: live at once; otherwise the
   subscription waits (pending) until a replay from that offset has caught
   up (wsch__hub_replay). With wait, it is pending until a fetch answers
   (shared positions), and keeps the ask to plan it then. The peer's user
   joins the channel's presence. */
WSCH__PRIVATE int wsch__hub_sub_add(wsch_hub *hub, wsch__hub_peer *cl, const char *name, size_t len,
                                    uint64_t replay_from, unsigned asked, const wsch__hub_ask *wait, int presence) {
    wsch__hub_channel *ch = wsch__hub_channel_get(hub, name, len, 0);
    wsch__hub_sub *sub;
    size_t cap;
    void *arr;
    int created = 0;
    if (ch && wsch__hub_sub_index(cl, ch) >= 0) return WSCH_OK;
    if (cl->nsubs >= hub->desc.max_channels_per_peer) return WSCH_ERR_LIMIT;
    cap = cl->subs_cap;
    arr = cl->subs;
    if (wsch__hub_grow(hub, &arr, cl->nsubs, &cap, sizeof(wsch__hub_sub), 1, hub->desc.max_channels_per_peer) !=
        WSCH_OK)
        return WSCH_ERR_NOMEM;
    cl->subs = (wsch__hub_sub *)arr;
    cl->subs_cap = (uint16_t)cap;
    if (!ch) {
        ch = wsch__hub_channel_get(hub, name, len, 1);
        if (!ch) return WSCH_ERR_NOMEM;
        created = 1;
    }
    /* Room for every subscriber, pending ones included: a replay that
       catches up joins without allocating. */
    arr = (void *)ch->subs;
    if (wsch__hub_grow(hub, &arr, ch->count + ch->pending, &ch->cap, sizeof(wsch__hub_peer *), 4, (size_t)-1) !=
        WSCH_OK) {
        if (created) wsch__hub_channel_release(hub, ch);
        return WSCH_ERR_NOMEM;
    }
    ch->subs = (wsch__hub_peer **)arr;
    if (wsch__hub_member_join(hub, ch, cl) != WSCH_OK) {
        if (created) wsch__hub_channel_release(hub, ch);
        return WSCH_ERR_NOMEM;
    }
    sub = &cl->subs[cl->nsubs++];
    sub->ch = ch;
    sub->next = wait ? wait->n : replay_from;
    sub->want_epoch = wait ? wait->epoch : 0u;
    sub->asked = (uint8_t)asked;
    sub->gap = 0;
    sub->waiting = (uint8_t)(wait ? 1 + wait->kind : 0);
    sub->presence = 0;
    sub->pos = WSCH__HUB_PENDING;       /* every subscription starts pending */
    ch->pending++;
    if (replay_from || wait) cl->flags |= WSCH__HUB_REPLAYING;
    else wsch__hub_sub_live(cl, sub);
    hub->subscriptions++;
    /* Without room for presence the subscription stands; it is confirmed
       without the members, which tells the subscriber. */
    if (presence) (void)wsch__hub_sub_presence(hub, cl, sub);
    return WSCH_OK;
}

/* Removes the peer's k-th subscription: swap-removes on both sides. */
WSCH__PRIVATE void wsch__hub_sub_remove(wsch_hub *hub, wsch__hub_peer *cl, int k) {
    wsch__hub_channel *ch = cl->subs[k].ch;
    size_t pos = cl->subs[k].pos;
    if (pos == WSCH__HUB_PENDING) {
        ch->pending--;
    } else {
        wsch__hub_peer *moved = ch->subs[--ch->count];
        if (pos != ch->count) {
            ch->subs[pos] = moved;
            moved->subs[wsch__hub_sub_index(moved, ch)].pos = pos;
        }
        if (cl->subs[k].presence) {
            uint32_t ppos = cl->subs[k].ppos;
            moved = ch->psubs[--ch->npsubs];
            if (ppos != ch->npsubs) {
                ch->psubs[ppos] = moved;
                moved->subs[wsch__hub_sub_index(moved, ch)].ppos = ppos;
            }
        }
    }
    if (cl->subs[k].presence) ch->ptotal--;
    cl->subs[k] = cl->subs[--cl->nsubs];
    hub->subscriptions--;
    wsch__hub_member_leave(hub, ch, cl);
    if (cl->nsubs == 0) {
        /* An idle peer returns to its bare size. */
        wsch__free(&hub->desc.allocator, cl->subs);
        cl->subs = NULL;
        cl->subs_cap = 0;
    }
    if (ch->count == 0 && ch->pending == 0) {
        wsch__free(&hub->desc.allocator, ch->subs);
        wsch__free(&hub->desc.allocator, ch->psubs);
        ch->subs = NULL;
        ch->psubs = NULL;
        ch->cap = ch->psubs_cap = 0;
        wsch__hub_channel_release(hub, ch);     /* unless it keeps history */
    } else if (ch->cap > 16u && ch->count + ch->pending < ch->cap / 4u) {
        void *arr = wsch__alloc(&hub->desc.allocator, (ch->cap / 2u) * sizeof(wsch__hub_peer *));
        if (arr) {
            WSCH_MEMCPY(arr, ch->subs, ch->count * sizeof(wsch__hub_peer *));
            wsch__free(&hub->desc.allocator, ch->subs);
            ch->subs = (wsch__hub_peer **)arr;
            ch->cap /= 2u;
        }
    }
}

WSCH__PRIVATE void wsch__hub_unsubscribe_all(wsch_hub *hub, wsch__hub_peer *cl) {
    while (cl->nsubs) wsch__hub_sub_remove(hub, cl, (int)cl->nsubs - 1);
}

/* ---- the user index -------------------------------------------------------- */

WSCH__PRIVATE wsch__hub_user *wsch__hub_user_find(const wsch_hub *hub, const char *id, size_t len) {
    return (wsch__hub_user *)(void *)wsch__hub_find(&hub->users, id, len, wsch__hub_hash(hub, id, len));
}

WSCH__PRIVATE int wsch__hub_user_link(wsch_hub *hub, wsch__hub_peer *cl, const char *id, size_t len) {
    uint32_t h = wsch__hub_hash(hub, id, len);
    wsch__hub_user *u = (wsch__hub_user *)(void *)wsch__hub_find(&hub->users, id, len, h);
    if (!u) {
        u = (wsch__hub_user *)(void *)wsch__hub_entry_new(hub, sizeof *u, WSCH_HUB_BRIDGE_USER_PREFIX,
                                                          hub->bridged ? WSCH__HUB_UPFX_LEN : 0u, id, len, h);
        if (!u) return WSCH_ERR_NOMEM;
        if (wsch__hub_insert(hub, &hub->users, &u->e) != WSCH_OK) {
            wsch__free(&hub->desc.allocator, u);
            return WSCH_ERR_NOMEM;
        }
        wsch__hub_interest(hub, &u->e, 1, 1);   /* the user's first connection here */
    }
    cl->uent = u;
    cl->user_prev = NULL;
    cl->user_next = u->first;
    if (u->first) u->first->user_prev = cl;
    u->first = cl;
    u->count++;
    return WSCH_OK;
}

WSCH__PRIVATE void wsch__hub_user_unlink(wsch_hub *hub, wsch__hub_peer *cl) {
    wsch__hub_user *u = cl->uent;
    if (!u) return;
    if (cl->user_prev) cl->user_prev->user_next = cl->user_next;
    else u->first = cl->user_next;
    if (cl->user_next) cl->user_next->user_prev = cl->user_prev;
    cl->uent = NULL;
    cl->user_prev = cl->user_next = NULL;
    if (--u->count == 0) {
        wsch__hub_interest(hub, &u->e, 1, 0);
        wsch__hub_remove(hub, &hub->users, &u->e);
        wsch__free(&hub->desc.allocator, u);
    }
}

/* ---- encoding and delivery ------------------------------------------------- */

/* ,"offset":N,"epoch":"E": a position, in messages and confirmations alike. */
WSCH__PRIVATE void wsch__hub_put_position(wsch__writer *w, uint64_t offset, uint64_t epoch_id) {
    char epoch[WSCH_HUB_EPOCH_LEN + 1];
    wsch__hub_epoch_hex(epoch_id, epoch);
    wsch__w_puts(w, ",\"offset\":");
    wsch__w_put_uint(w, offset);
    wsch__w_puts(w, ",\"epoch\":\"");
    wsch__w_puts(w, epoch);
    wsch__w_puts(w, "\"");
}

/* The tail of a channel message's envelope, after type and payload:
   ,"channel":C and, with offset > 0, its position (offset 0: what
   bridge.append is handed). A valid channel name needs no escapes. */
WSCH__PRIVATE size_t wsch__hub_position_tail(const char *name, size_t len, uint64_t offset, uint64_t epoch_id,
                                             char *buf, size_t cap) {
    wsch__writer w;
    wsch__w_init(&w, buf, cap);
    wsch__w_puts(&w, ",\"channel\":");
    wsch__w_put_json_string(&w, name, len);
    if (offset) wsch__hub_put_position(&w, offset, epoch_id);
    WSCH_ASSERT(!w.overflow);
    return w.len;
}

/* Room for any position tail: a channel name, 20 digits, an epoch. */
#define WSCH__HUB_TAIL_MAX (WSCH_HUB_MAX_CHANNEL_LEN + 64u)

/* Encodes {"type":T,"payload":P[,position]} once into a shared frame. The
   payload is validated here, so what a bridge or a caller hands in is
   checked like what a peer sends. */
WSCH__PRIVATE int wsch__hub_encode(wsch_hub *hub, const char *type, size_t type_len, const char *payload,
                                   size_t payload_len, const char *tail, size_t tail_len, wsch_shared **out,
                                   size_t *out_len) {
    size_t size;
    wsch__writer w;
    int r;
    if (!type || type_len == 0) return WSCH_ERR_ARG;
    if (payload_len > hub->desc.limits.max_message_size) return WSCH_ERR_TOO_LARGE;
    r = wsch__env_check(type, type_len, payload, payload_len);
    if (r != WSCH_OK) return r;
    /* The envelope encoder's own writer measures, then writes into the
       frame (no NUL: the frame is exactly the envelope). */
    wsch__w_init(&w, NULL, 0);
    wsch__env_put(&w, type, type_len, payload, payload_len, tail, tail_len);
    size = w.len;
    if (size > hub->desc.limits.max_message_size) return WSCH_ERR_TOO_LARGE;
    r = wsch_shared_create(&hub->desc.allocator, WSCH_OP_TEXT, NULL, size, out);
    if (r != WSCH_OK) return r;
    wsch__w_init(&w, (char *)wsch_shared_payload(*out), size);
    wsch__env_put(&w, type, type_len, payload, payload_len, tail, tail_len);
    WSCH_ASSERT(!w.overflow && w.len == size);
    hub->encodes++;
    if (out_len) *out_len = size;
    return WSCH_OK;
}

/* Deliveries walk a channel's subscriber array or a user's list, and
   nothing may change those under the walk: a peer to drop, or one whose
   conn ended inside a send (its bytes cut short by a failed allocation:
   see wsch__hub_on_close), goes on hub->walk_drops and is handled when the
   walk ends, where callbacks may run again. */
WSCH__PRIVATE void wsch__hub_list_drop(wsch_hub *hub, wsch__hub_peer *cl, wsch_hub_drop reason) {
    if (cl->flags & WSCH__HUB_DROP_LISTED) return;
    cl->flags |= WSCH__HUB_DROP_LISTED;
    cl->drop_reason = (uint8_t)reason;
    cl->link = hub->walk_drops;
    hub->walk_drops = cl;
}

/* The first peer of a delivery that agreed permessage-deflate has the
   frame compressed, once for all (each peer's inflater starts every
   message afresh: the hub asked for that). Compression that fails or does
   not shrink leaves the frame as it is. */
WSCH__PRIVATE void wsch__hub_compress(wsch_hub *hub, wsch__hub_peer *cl, wsch_shared *s) {
    const wsch_deflate_desc *d = &hub->conn_desc.deflate;
    int bits = wsch__pmd_own_bits(d->server_max_window_bits);
    if (!cl->conn->z || s->deflated || s->window_bits) return;     /* tried already */
    if (s->size - s->header_len < (d->min_size ? d->min_size : WSCH_DEFLATE_MIN_SIZE)) {
        s->window_bits = -1;
        return;
    }
    if (!hub->deflater)
        hub->deflater = d->codec->create(1, bits, d->mem_level ? d->mem_level : 8, &hub->desc.allocator, d->codec->user);
    if (hub->deflater) (void)wsch_shared_compress(s, d->codec, hub->deflater, bits);
}

/* Queues s to one peer, between walk_begin and walk_end. Returns 1 when queued. */
WSCH__PRIVATE int wsch__hub_push(wsch_hub *hub, wsch__hub_peer *cl, wsch_shared *s) {
    int r;
    if (cl->state != WSCH__HUB_OPEN || (cl->flags & WSCH__HUB_DROP_LISTED)) return 0;
    wsch__hub_compress(hub, cl, s);
    r = wsch_conn_send_shared(cl->conn, s);
    if (r == WSCH_OK) {
        hub->messages_out++;
        return 1;
    }
    if (r == WSCH_ERR_QUEUE_FULL) {
        /* Its backlog goes now, not when the walk ends: under a shared
           budget, what it held may let the peers after it be served. */
        wsch__c_discard_backlog(cl->conn);
        wsch__hub_list_drop(hub, cl, WSCH_HUB_DROP_SLOW_CONSUMER);
    } else if (r == WSCH_ERR_NOMEM) {
        wsch__hub_list_drop(hub, cl, WSCH_HUB_DROP_NOMEM);
    }
    return 0;   /* closing or closed: it gets no more */
}

WSCH__PRIVATE void wsch__hub_drop(wsch_hub *hub, wsch__hub_peer *cl, wsch_hub_drop reason);

WSCH__PRIVATE void wsch__hub_finish(wsch_hub *hub, wsch__hub_peer *cl, int code);
WSCH__PRIVATE void wsch__hub_give_back(wsch_hub *hub, wsch__hub_peer *cl);

WSCH__PRIVATE void wsch__hub_walk_begin(wsch_hub *hub) { hub->walking++; }

/* Ends a walk: drops the peers it listed, finishes those whose conn ended
   during it. Callbacks (on_disconnect) run here, after the walk. */
WSCH__PRIVATE void wsch__hub_walk_end(wsch_hub *hub) {
    wsch__hub_peer *drops;
    if (--hub->walking != 0) return;
    drops = hub->walk_drops;
    hub->walk_drops = NULL;
    while (drops) {
        wsch__hub_peer *cl = drops;
        drops = cl->link;
        cl->link = NULL;
        cl->flags = (uint16_t)(cl->flags & ~WSCH__HUB_DROP_LISTED);
        if (cl->flags & WSCH__HUB_FINISH_LATER) {
            cl->flags = (uint16_t)(cl->flags & ~WSCH__HUB_FINISH_LATER);
            if (!(cl->flags & WSCH__HUB_COUNTED)) {
                hub->drops[cl->drop_reason]++;
                cl->flags |= WSCH__HUB_COUNTED;
            }
            wsch__hub_finish(hub, cl, cl->close_code);
            if (cl->flags & WSCH__HUB_CLOSE_LATER) wsch__hub_give_back(hub, cl);
        } else {
            wsch__hub_drop(hub, cl, (wsch_hub_drop)cl->drop_reason);
        }
    }
}

/* Local delivery to a channel's subscribers and to a user's connections:
   kept apart from encoding so a bridge can feed frames from elsewhere. */
WSCH__PRIVATE size_t wsch__hub_deliver_channel(wsch_hub *hub, wsch__hub_channel *ch, wsch_shared *s) {
    size_t i, n = 0;
    wsch__hub_walk_begin(hub);
    for (i = 0; i < ch->count; i++) n += (size_t)wsch__hub_push(hub, ch->subs[i], s);
    wsch__hub_walk_end(hub);            /* ch may be gone after this */
    return n;
}

WSCH__PRIVATE size_t wsch__hub_deliver_user(wsch_hub *hub, wsch__hub_user *u, wsch_shared *s) {
    wsch__hub_peer *cl;
    size_t n = 0;
    wsch__hub_walk_begin(hub);
    for (cl = u->first; cl; cl = cl->user_next) n += (size_t)wsch__hub_push(hub, cl, s);
    wsch__hub_walk_end(hub);            /* u may be gone after this */
    return n;
}

/* ---- the bridge: out and in ------------------------------------------------ */

/* Writes the bridge channel pfx + name (NUL-terminated) and, after it, the
   bridge message: the header "<magic><origin> " (magic: "wsch1 ", or
   "wschp " for presence) and body (env_len bytes), into hub->bridge_buf. *data_len gets the message's
   length; WSCH_ERR_NOMEM when the buffer cannot grow. */
WSCH__PRIVATE int wsch__hub_bridge_build(wsch_hub *hub, const char *pfx, size_t pfx_len, const char *name,
                                         size_t name_len, const char *magic, const void *body, size_t env_len,
                                         size_t *data_len) {
    static const char hex[] = "0123456789abcdef";
    size_t name_total = pfx_len + name_len, need, i;
    char *p;
    /* name_len is at most max_user_id_len or WSCH_HUB_MAX_CHANNEL_LEN, env_len
       at most max_message_size: neither sum can wrap unless that limit is absurd. */
    if (env_len > (size_t)-1 - name_total - 1u - WSCH_HUB_BRIDGE_HEADER_LEN) return WSCH_ERR_NOMEM;
    need = name_total + 1u + WSCH_HUB_BRIDGE_HEADER_LEN + env_len;
    if (need > hub->bridge_cap) {
        char *nb = (char *)wsch__alloc(&hub->desc.allocator, need);
        if (!nb) return WSCH_ERR_NOMEM;
        wsch__free(&hub->desc.allocator, hub->bridge_buf);
        hub->bridge_buf = nb;
        hub->bridge_cap = need;
    }
    p = hub->bridge_buf;
    if (pfx_len) WSCH_MEMCPY(p, pfx, pfx_len);
    WSCH_MEMCPY(p + pfx_len, name, name_len);
    p[name_total] = '\0';
    p += name_total + 1u;
    WSCH_MEMCPY(p, magic, 6);
    for (i = 0; i < 16u; i++) p[6u + i] = hex[(hub->origin >> (60u - 4u * i)) & 0xFu];
    p[22] = ' ';
    WSCH_MEMCPY(p + WSCH_HUB_BRIDGE_HEADER_LEN, body, env_len);
    *data_len = WSCH_HUB_BRIDGE_HEADER_LEN + env_len;
    return WSCH_OK;
}

/* Hands body (an envelope, or presence) to bridge.publish on the bridge
   channel pfx + name, behind the header magic. Failures are counted, never
   fatal: local delivery does not depend on the bridge. */
WSCH__PRIVATE void wsch__hub_bridge_publish(wsch_hub *hub, const char *pfx, size_t pfx_len, const char *name,
                                            size_t name_len, const char *magic, const void *body, size_t env_len) {
    size_t data_len;
    if (wsch__hub_bridge_build(hub, pfx, pfx_len, name, name_len, magic, body, env_len, &data_len) == WSCH_OK &&
        hub->desc.bridge.publish(hub->bridge_buf, pfx_len + name_len, hub->bridge_buf + pfx_len + name_len + 1u,
                                 data_len, hub->desc.bridge.user) == WSCH_OK)
        hub->bridge_published++;
    else
        hub->bridge_publish_errors++;
}

/* The origin id in a bridge message's header, or WSCH_ERR_ARG when data
   does not start with a well-formed header. */
WSCH__PRIVATE int wsch__hub_bridge_header(const char *data, size_t len, uint64_t *origin) {
    if (len < WSCH_HUB_BRIDGE_HEADER_LEN || WSCH_MEMCMP(data, WSCH__HUB_BRIDGE_MAGIC, 6) != 0 ||
        data[22] != ' ' || !wsch__hub_hex16(data + 6, origin))
        return WSCH_ERR_ARG;
    return WSCH_OK;
}

/* The same for a presence message's header. */
WSCH__PRIVATE int wsch__hub_presence_header(const char *data, size_t len, uint64_t *origin) {
    if (len < WSCH_HUB_BRIDGE_HEADER_LEN || WSCH_MEMCMP(data, WSCH__HUB_PRESENCE_MAGIC, 6) != 0 ||
        data[22] != ' ' || !wsch__hub_hex16(data + 6, origin))
        return WSCH_ERR_ARG;
    return WSCH_OK;
}

/* A bridge message: header, then an envelope of at most max_message_size
   bytes, and with offset (shared positions) its position, which it must
   carry. */
WSCH__PRIVATE int wsch__hub_bridge_parse(const wsch_hub *hub, const char *d, size_t len, uint64_t *origin,
                                         wsch_envelope *env, uint64_t *offset, uint64_t *epoch) {
    static const char *const keys[2] = {"offset", "epoch"};
    wsch_str v[2];
    int64_t n;
    int r = wsch__hub_bridge_header(d, len, origin);
    if (r != WSCH_OK) return r;
    d += WSCH_HUB_BRIDGE_HEADER_LEN;
    len -= WSCH_HUB_BRIDGE_HEADER_LEN;
    if (len > hub->desc.limits.max_message_size) return WSCH_ERR_TOO_LARGE;
    if (!offset) return wsch_envelope_decode(d, len, env);
    r = wsch__envelope_decode_with(d, len, env, keys, 2, v);
    if (r != WSCH_OK) return r;
    if (!v[0].ptr || wsch__json_int_value(v[0], &n) != WSCH_OK || n < 1 || !v[1].ptr ||
        v[1].len != WSCH_HUB_EPOCH_LEN + 2u || v[1].ptr[0] != '"' || !wsch__hub_hex16(v[1].ptr + 1, epoch))
        return WSCH_ERR_ARG;
    *offset = (uint64_t)n;
    return WSCH_OK;
}

/* Shared positions: a channel message from here goes to bridge.append,
   and reaches local subscribers when it comes back numbered. A reliable
   message being answered (the first broadcast of its on_message) waits
   for append's answer; its session is held until then. */
WSCH__PRIVATE void wsch__hub_send_error(wsch_hub *hub, wsch__hub_peer *cl, const char *code, const char *message,
                                        const wsch_envelope *req, const char *channel, size_t channel_len,
                                        uint64_t id);
#define WSCH__HUB_MAX_WAITS 65536u
#define WSCH__HUB_UNAVAILABLE "the bridge could not publish it now; it may be sent again"
WSCH__PRIVATE int wsch__hub_append(wsch_hub *hub, const char *name, size_t len, const char *type, size_t type_len,
                                   const char *payload, size_t payload_len) {
    char tail[WSCH__HUB_TAIL_MAX];
    size_t tail_len = wsch__hub_position_tail(name, len, 0, 0, tail, sizeof tail), env_len, data_len;
    int reliable = hub->answering && hub->answering_id && !hub->deferred;
    wsch_shared *s;
    int r = wsch__hub_encode(hub, type, type_len, payload, payload_len, tail, tail_len, &s, &env_len);
    if (r != WSCH_OK) return r;
    r = wsch__hub_bridge_build(hub, NULL, 0, name, len, WSCH__HUB_BRIDGE_MAGIC, wsch_shared_payload(s), env_len,
                               &data_len);
    wsch_shared_release(s);
    if (r == WSCH_OK && reliable && hub->nwaits == hub->waits_cap) {
        if (hub->whead) {       /* answered ones at the front: move the rest down */
            hub->nwaits -= hub->whead;
            WSCH_MEMMOVE(hub->waits, hub->waits + hub->whead, hub->nwaits * sizeof *hub->waits);
            hub->whead = 0;
        } else {
            void *arr = hub->waits;
            r = wsch__hub_grow(hub, &arr, hub->nwaits, &hub->waits_cap, sizeof *hub->waits, 16, WSCH__HUB_MAX_WAITS);
            hub->waits = (wsch__hub_wait *)arr;
            if (r != WSCH_OK) r = WSCH_ERR_LIMIT;
        }
    }
    if (r == WSCH_OK) {
        hub->next_ticket++;
        if (hub->desc.bridge.append(hub->bridge_buf, len, hub->bridge_buf + len + 1u, data_len, hub->next_ticket,
                                    hub->desc.bridge.user) != WSCH_OK)
            r = WSCH_ERR_STATE;
    }
    if (r != WSCH_OK) {
        hub->bridge_append_errors++;
        /* Refused by the bridge, or too many wait for it: never acked, it did not happen. */
        if (reliable && (r == WSCH_ERR_STATE || r == WSCH_ERR_LIMIT)) {
            hub->answered = 1;
            wsch__hub_send_error(hub, hub->answering, "unavailable", WSCH__HUB_UNAVAILABLE, hub->answering_env,
                                 NULL, 0, hub->answering_id);
        }
        return r;
    }
    if (reliable) {
        wsch__hub_wait *w = &hub->waits[hub->nwaits++];
        w->ticket = hub->next_ticket;
        w->id = hub->answering_id;
        w->peer = wsch__hub_handle(hub, hub->answering);
        w->sess = hub->answering->sess;
        if (w->sess) {
            w->sess->conns++;               /* the peer holds it too: never idle here */
            w->sess->waiting++;
        }
        hub->deferred = 1;
    }
    return WSCH_OK;
}

/* A message to a channel, from here (bridge_out 1: other hubs get it too)
   or from the bridge: encoded once with the channel's next position when
   history is on, kept, then queued to the local subscribers. */
WSCH__PRIVATE int wsch__hub_publish(wsch_hub *hub, const char *name, size_t len, const char *type, size_t type_len,
                                    const char *payload, size_t payload_len, int bridge_out, size_t *delivered) {
    char tail[WSCH__HUB_TAIL_MAX];
    size_t tail_len = 0, env_len = 0, n = 0;
    uint32_t now = 0;
    wsch__hub_channel *ch;
    wsch_shared *s;
    int r;
    if (delivered) *delivered = 0;
    if (bridge_out && hub->shared) return wsch__hub_append(hub, name, len, type, type_len, payload, payload_len);
    if (hub->desc.history_size) {
        now = wsch__hub_now(hub);
        wsch__hub_hist_trim(hub, now);
    }
    /* With history a channel lives on without subscribers: whoever comes
       back recovers from it. A message that cannot be sent is refused
       before one is made for it (its own error, not the allocation's). */
    ch = wsch__hub_channel_find(hub, name, len);
    if (!ch && hub->desc.history_size) {
        r = type_len ? wsch__env_check(type, type_len, payload, payload_len) : WSCH_ERR_ARG;
        if (r != WSCH_OK) return r;
        ch = wsch__hub_channel_get(hub, name, len, 1);
        if (!ch) return WSCH_ERR_NOMEM;
    }
    if (ch && hub->positioned)
        tail_len = wsch__hub_position_tail(ch->e.key, ch->e.key_len, ch->offset + 1u, ch->epoch, tail, sizeof tail);
    r = wsch__hub_encode(hub, type, type_len, payload, payload_len, tail, tail_len, &s, &env_len);
    if (r != WSCH_OK) {
        if (ch) wsch__hub_channel_release(hub, ch);     /* one just made for it */
        return r;
    }
    wsch__hub_enter(hub);
    if (tail_len) {
        ch->delivered = ++ch->offset;
        if (hub->desc.history_size) wsch__hub_hist_append(hub, ch, s, now);
    }
    /* Other hubs first: the bridge only copies, local delivery may take a while. */
    if (bridge_out && hub->bridged)
        wsch__hub_bridge_publish(hub, NULL, 0, name, len, WSCH__HUB_BRIDGE_MAGIC, wsch_shared_payload(s), env_len);
    if (ch && ch->count) n = wsch__hub_deliver_channel(hub, ch, s);     /* ch may be gone after this */
    else if (ch) wsch__hub_channel_release(hub, ch);
    wsch_shared_release(s);
    if (hub->desc.history_size) wsch__hub_hist_trim(hub, now);
    wsch__hub_leave(hub);
    if (delivered) *delivered = n;
    return WSCH_OK;
}

/* Encodes and queues an envelope to one peer. */
WSCH__PRIVATE int wsch__hub_send_one(wsch_hub *hub, wsch__hub_peer *cl, const char *type, const char *payload,
                                     size_t payload_len) {
    wsch_shared *s;
    int r = wsch__hub_encode(hub, type, WSCH_STRLEN(type), payload, payload_len, NULL, 0, &s, NULL);
    if (r != WSCH_OK) return r;
    wsch__hub_walk_begin(hub);
    r = wsch__hub_push(hub, cl, s) ? WSCH_OK : WSCH_ERR_STATE;
    wsch_shared_release(s);
    wsch__hub_walk_end(hub);
    return r;
}

/* {"type":"error","payload":{"code":K,"message":M[,"request":T][,"channel":C][,"id":I]}}.
   channel is only passed once it is known to be a valid name; id 0: none. */
WSCH__PRIVATE void wsch__hub_send_error(wsch_hub *hub, wsch__hub_peer *cl, const char *code, const char *message,
                                        const wsch_envelope *req, const char *channel, size_t channel_len,
                                        uint64_t id) {
    /* code and message are valid UTF-8 of at most 255 bytes (the hub's own,
       or checked by wsch_hub_refuse), the type was decoded as UTF-8 and the
       channel checked to be a valid name: all fit. */
    char buf[128u + 6u * WSCH_ENVELOPE_TYPE_MAX + 6u * WSCH_HUB_MAX_CHANNEL_LEN + 12u * 255u];
    wsch__writer w;
    wsch__w_init(&w, buf, sizeof buf);
    wsch__w_puts(&w, "{\"code\":");
    wsch__w_put_json_string(&w, code, WSCH_STRLEN(code));
    wsch__w_puts(&w, ",\"message\":");
    wsch__w_put_json_string(&w, message, WSCH_STRLEN(message));
    if (req) {
        wsch__w_puts(&w, ",\"request\":");
        wsch__w_put_json_string(&w, req->type, req->type_len);
    }
    if (channel) {
        wsch__w_puts(&w, ",\"channel\":");
        wsch__w_put_json_string(&w, channel, channel_len);
    }
    if (id) {
        wsch__w_puts(&w, ",\"id\":");
        wsch__w_put_uint(&w, id);
    }
    wsch__w_puts(&w, "}");
    if (!w.overflow) (void)wsch__hub_send_one(hub, cl, "error", buf, w.len);
}

/* {"type":"ack","payload":{"id":I}} */
WSCH__PRIVATE void wsch__hub_send_ack(wsch_hub *hub, wsch__hub_peer *cl, uint64_t id) {
    char buf[32];
    wsch__writer w;
    wsch__w_init(&w, buf, sizeof buf);
    wsch__w_puts(&w, "{\"id\":");
    wsch__w_put_uint(&w, id);
    wsch__w_puts(&w, "}");
    hub->acks++;
    (void)wsch__hub_send_one(hub, cl, "ack", buf, w.len);
}

/* ---- sessions: the scope of reliable message ids ---------------------------- */

WSCH__PRIVATE void wsch__hub_idle_unlink(wsch_hub *hub, wsch__hub_session *se) {
    if (se->idle_prev) se->idle_prev->idle_next = se->idle_next;
    else hub->idle_first = se->idle_next;
    if (se->idle_next) se->idle_next->idle_prev = se->idle_prev;
    else hub->idle_last = se->idle_prev;
    se->idle_prev = se->idle_next = NULL;
}

WSCH__PRIVATE void wsch__hub_session_free(wsch_hub *hub, wsch__hub_session *se) {
    wsch__hub_idle_unlink(hub, se);
    wsch__hub_remove(hub, &hub->sessions, &se->e);
    wsch__free(&hub->desc.allocator, se);
}

/* Joins the peer to its session, made when new. Sessions idle past
   session_ttl_ms go first; at max_sessions the longest idle one is
   forgotten, and with none idle the session cannot be had (WSCH_ERR_LIMIT). */
WSCH__PRIVATE int wsch__hub_session_link(wsch_hub *hub, wsch__hub_peer *cl, const char *id, size_t len) {
    uint32_t now = wsch__hub_now(hub), h;
    wsch__hub_session *se;
    while (hub->idle_first && now - hub->idle_first->idle_since_ms >= hub->desc.session_ttl_ms)
        wsch__hub_session_free(hub, hub->idle_first);
    h = wsch__hub_hash(hub, id, len);
    se = (wsch__hub_session *)(void *)wsch__hub_find(&hub->sessions, id, len, h);
    if (!se) {
        if (hub->sessions.count >= hub->desc.max_sessions) {
            if (!hub->idle_first) return WSCH_ERR_LIMIT;
            wsch__hub_session_free(hub, hub->idle_first);
        }
        se = (wsch__hub_session *)(void *)wsch__hub_entry_new(hub, sizeof *se, NULL, 0, id, len, h);
        if (!se) return WSCH_ERR_NOMEM;
        if (wsch__hub_insert(hub, &hub->sessions, &se->e) != WSCH_OK) {
            wsch__free(&hub->desc.allocator, se);
            return WSCH_ERR_NOMEM;
        }
    } else if (se->conns == 0) {
        wsch__hub_idle_unlink(hub, se);     /* back from the idle list */
    }
    se->conns++;
    cl->sess = se;
    return WSCH_OK;
}

/* One holder (a connection, or a message waiting for bridge.append) less:
   a session nothing holds starts its idle time. */
WSCH__PRIVATE void wsch__hub_session_put(wsch_hub *hub, wsch__hub_session *se) {
    if (--se->conns) return;
    se->idle_since_ms = wsch__hub_now(hub);
    se->idle_next = NULL;
    se->idle_prev = hub->idle_last;
    if (hub->idle_last) hub->idle_last->idle_next = se;
    else hub->idle_first = se;
    hub->idle_last = se;
}

WSCH__PRIVATE void wsch__hub_session_unlink(wsch_hub *hub, wsch__hub_peer *cl) {
    wsch__hub_session *se = cl->sess;
    if (!se) return;
    cl->sess = NULL;
    wsch__hub_session_put(hub, se);
}

/* Records the outcome of id, newer than the session's last: the window of
   outcomes moves up by the difference. */
WSCH__PRIVATE void wsch__hub_session_record(wsch__hub_session *se, uint64_t id, int refused) {
    uint64_t shift = id - se->last_id, *w = se->refused;
    int i;
    if (shift >= WSCH__HUB_WINDOW) {
        for (i = 0; i < 4; i++) w[i] = 0;
    } else {
        int words = (int)(shift / 64u);
        unsigned bits = (unsigned)(shift % 64u);
        for (i = 3; i >= 0; i--) {
            uint64_t hi = i >= words ? w[i - words] : 0u, lo = i >= words + 1 ? w[i - words - 1] : 0u;
            w[i] = bits ? (hi << bits) | (lo >> (64u - bits)) : hi;
        }
    }
    w[0] |= refused ? 1u : 0u;
    se->last_id = id;
}

/* ---- drops and the end of a peer ---------------------------------------- */

WSCH__PRIVATE void wsch__hub_idle_arm(wsch_hub *hub, wsch__hub_peer *cl, uint32_t delay) {
    if (hub->desc.idle_timeout_ms == WSCH_HUB_NO_TIMEOUT || !cl->effects->timer_set) return;
    cl->flags |= WSCH__HUB_IDLE_ARMED;
    cl->effects->timer_set(WSCH_HUB_TIMER_IDLE, delay, cl->user);
}

/* Pings are sent only where the silence can be measured (now_ms). */
WSCH__PRIVATE uint32_t wsch__hub_ping_interval(const wsch_hub *hub) {
    uint32_t p = hub->desc.effects.now_ms ? hub->desc.ping_interval_ms : 0;
    return p < hub->desc.idle_timeout_ms ? p : 0;
}

/* The idle timer after `idle` ms of silence: at the ping, or at the end. */
WSCH__PRIVATE void wsch__hub_idle_rearm(wsch_hub *hub, wsch__hub_peer *cl, uint32_t idle) {
    uint32_t ping = wsch__hub_ping_interval(hub);
    if (ping && !(cl->flags & WSCH__HUB_PINGED) && idle < ping) wsch__hub_idle_arm(hub, cl, ping - idle);
    else wsch__hub_idle_arm(hub, cl, hub->desc.idle_timeout_ms - idle);
}

/* Takes the peer out of every delivery path (it keeps its user id, which
   on_disconnect may still ask for, until it is released). */
WSCH__PRIVATE void wsch__hub_detach(wsch_hub *hub, wsch__hub_peer *cl) {
    wsch__hub_unsubscribe_all(hub, cl);
    if ((cl->flags & WSCH__HUB_IDLE_ARMED) && cl->effects->timer_cancel)
        cl->effects->timer_cancel(WSCH_HUB_TIMER_IDLE, cl->user);
    cl->flags = (uint16_t)(cl->flags & ~WSCH__HUB_IDLE_ARMED);
}

/* Starts closing an open peer from this side. Returns the conn's result;
   when the conn cannot even queue a close frame, the transport is closed. */
WSCH__PRIVATE int wsch__hub_close(wsch_hub *hub, wsch__hub_peer *cl, uint16_t code, const char *reason,
                                  size_t reason_len) {
    int r;
    if (cl->state == WSCH__HUB_CLOSED) return WSCH_ERR_CLOSED;
    if (cl->state == WSCH__HUB_HANDSHAKE) {
        /* Through the conn, not the transport: it closes the transport once,
           runs on_close (wsch__hub_finish) and refuses whatever the caller
           still feeds, so no answer goes out after close(). */
        cl->state = WSCH__HUB_CLOSING;
        wsch__hub_detach(hub, cl);
        return wsch_conn_close(cl->conn, 0, NULL, 0);
    }
    cl->state = WSCH__HUB_CLOSING;
    wsch__hub_detach(hub, cl);
    r = wsch_conn_close(cl->conn, code, reason, reason_len);
    /* No close frame could even be queued: the transport is abandoned. */
    if (r != WSCH_OK && r != WSCH_ERR_CLOSED && wsch_conn_state(cl->conn) == WSCH_STATE_OPEN)
        wsch_conn_transport_closed(cl->conn);
    return r;
}

WSCH__PRIVATE void wsch__hub_drop(wsch_hub *hub, wsch__hub_peer *cl, wsch_hub_drop reason) {
    uint16_t code = WSCH_CLOSE_INTERNAL_ERROR;
    const char *text = "Out of memory";
    if (cl->state != WSCH__HUB_OPEN) return;
    switch (reason) {
    case WSCH_HUB_DROP_SLOW_CONSUMER:
        code = WSCH_HUB_CLOSE_SLOW_CONSUMER;
        text = "Slow consumer";
        /* The backlog is what got it dropped: its close frame goes ahead of
           it, so the peer learns why at once, and the memory comes back now. */
        wsch__c_discard_backlog(cl->conn);
        break;
    case WSCH_HUB_DROP_IDLE: code = WSCH_CLOSE_NORMAL; text = "Idle timeout"; break;
    case WSCH_HUB_DROP_PROTOCOL: code = WSCH_CLOSE_UNSUPPORTED_DATA; text = "Binary messages are not supported"; break;
    default: break;
    }
    hub->drops[reason]++;
    cl->flags |= WSCH__HUB_COUNTED;
    (void)wsch__hub_close(hub, cl, code, text, WSCH_CSTR);
}

WSCH__PRIVATE void wsch__hub_slot_free(wsch_hub *hub, uint32_t index) {
    hub->slots[index].link = hub->free_head;
    hub->free_head = index + 1u;
}

/* Forgets the peer: its handle goes stale now, its memory on the way out. */
WSCH__PRIVATE void wsch__hub_release(wsch_hub *hub, wsch__hub_peer *cl) {
    wsch__hub_slot *slot = &hub->slots[cl->index];
    wsch__hub_user_unlink(hub, cl);
    wsch__hub_session_unlink(hub, cl);
    slot->peer = NULL;
    if (++slot->gen == 0) slot->gen = 1;
    if (!slot->link) wsch__hub_slot_free(hub, cl->index);
    hub->peers--;
    cl->link = hub->to_free;
    hub->to_free = cl;
}

/* The connection reached CLOSED (or its transport went away first). */
WSCH__PRIVATE void wsch__hub_finish(wsch_hub *hub, wsch__hub_peer *cl, int code) {
    if (cl->state == WSCH__HUB_CLOSED) return;
    cl->state = WSCH__HUB_CLOSED;
    if (!(cl->flags & (WSCH__HUB_COUNTED | WSCH__HUB_HTTP))) {
        if (!(cl->flags & WSCH__HUB_CONNECTED)) hub->drops[WSCH_HUB_DROP_HANDSHAKE]++;
        else if (code == WSCH_CLOSE_PROTOCOL_ERROR || code == WSCH_CLOSE_INVALID_PAYLOAD ||
                 code == WSCH_CLOSE_MESSAGE_TOO_BIG || code == WSCH_CLOSE_UNSUPPORTED_DATA)
            hub->drops[WSCH_HUB_DROP_PROTOCOL]++;
        cl->flags |= WSCH__HUB_COUNTED;
    }
    wsch__hub_detach(hub, cl);
    if (cl->flags & WSCH__HUB_CONNECTED) {
        cl->flags = (uint16_t)(cl->flags & ~WSCH__HUB_CONNECTED);
        hub->open--;
        if (hub->desc.on_disconnect) hub->desc.on_disconnect(hub, wsch__hub_handle(hub, cl), code, hub->desc.user);
    }
}

/* Hands the transport back through the caller's close(), the last callback
   about this peer; the handle goes stale with it (not while the hub is
   being destroyed: that frees every peer itself). */
WSCH__PRIVATE void wsch__hub_give_back(wsch_hub *hub, wsch__hub_peer *cl) {
    cl->flags = (uint16_t)((cl->flags | WSCH__HUB_GIVEN_BACK) & ~WSCH__HUB_CLOSE_LATER);
    cl->effects->close(cl->user);
    if (!hub->destroying) wsch__hub_release(hub, cl);
}

/* ---- connection callbacks (user = the peer) ----------------------------- */

WSCH__PRIVATE void wsch__hub_replay(wsch_hub *hub, wsch__hub_peer *cl);

/* The peer's queue written, and a replay that waited for room resumed. */
WSCH__PRIVATE int wsch__hub_write(wsch_hub *hub, wsch__hub_peer *cl) {
    int r = wsch_conn_writable(cl->conn);
    if (cl->flags & WSCH__HUB_REPLAYING && cl->state == WSCH__HUB_OPEN) wsch__hub_replay(hub, cl);
    return r;
}

WSCH__PRIVATE size_t wsch__hub_t_send(const void *data, size_t len, void *user) {
    wsch__hub_peer *cl = (wsch__hub_peer *)user;
    return cl->effects->send(data, len, cl->user);
}

/* A peer whose transport cannot write pieces at once gets them copied
   together, as a bare connection would. */
WSCH__PRIVATE size_t wsch__hub_t_send_gather(const wsch_iovec *parts, size_t count, void *user) {
    wsch__hub_peer *cl = (wsch__hub_peer *)user;
    if (cl->effects->send_gather) return cl->effects->send_gather(parts, count, cl->user);
    return wsch__send_copied(cl->effects->send, parts, count, cl->user);
}

/* desc.gather: the peer's slot joins the list wsch_hub_flush() writes, in
   the order peers were first sent something. A slot stays listed when its
   peer goes (the flush frees it), so nothing is ever unlinked. */
WSCH__PRIVATE int wsch__hub_t_flush_later(void *user) {
    wsch__hub_peer *cl = (wsch__hub_peer *)user;
    wsch_hub *hub = cl->hub;
    wsch__hub_slot *slot = &hub->slots[cl->index];
    if (slot->link) return 0;
    slot->link = WSCH__HUB_FLUSH_END;
    if (hub->flush_tail) hub->slots[hub->flush_tail - 1u].link = cl->index + 1u;
    else hub->flush_head = cl->index + 1u;
    hub->flush_tail = cl->index + 1u;
    return 0;
}

/* Writes every listed peer's output, each in one call of its transport
   when it takes it all. Peers sent something meanwhile (a replay going on,
   a callback's broadcast) join the list and are written too. */
WSCH__PRIVATE void wsch__hub_flush_peers(wsch_hub *hub) {
    while (hub->flush_head) {
        uint32_t index = hub->flush_head - 1u;
        wsch__hub_slot *slot = &hub->slots[index];
        wsch__hub_peer *cl = slot->peer;
        hub->flush_head = slot->link == WSCH__HUB_FLUSH_END ? 0u : slot->link;
        if (!hub->flush_head) hub->flush_tail = 0;
        slot->link = 0;
        if (cl) {
            hub->flushed_peers++;
            wsch__hub_write(hub, cl);
        } else {
            wsch__hub_slot_free(hub, index);
        }
    }
}

/* The conn is done with its transport (after its on_close). A peer whose
   finish waits for a delivery walk keeps its close() for then too. */
WSCH__PRIVATE void wsch__hub_t_close(void *user) {
    wsch__hub_peer *cl = (wsch__hub_peer *)user;
    if (cl->flags & WSCH__HUB_FINISH_LATER) cl->flags |= WSCH__HUB_CLOSE_LATER;
    else wsch__hub_give_back(cl->hub, cl);
}

WSCH__PRIVATE void wsch__hub_t_timer_set(unsigned timer_id, uint32_t delay_ms, void *user) {
    wsch__hub_peer *cl = (wsch__hub_peer *)user;
    if (cl->effects->timer_set) cl->effects->timer_set(timer_id, delay_ms, cl->user);
}

WSCH__PRIVATE void wsch__hub_t_timer_cancel(unsigned timer_id, void *user) {
    wsch__hub_peer *cl = (wsch__hub_peer *)user;
    /* Destroying a conn cancels its timers; the caller's side may be gone. */
    if (cl->effects->timer_cancel && !cl->hub->destroying) cl->effects->timer_cancel(timer_id, cl->user);
}

/* A request for another path: on_http's answer, or a 404. */
WSCH__PRIVATE void wsch__hub_http(wsch_hub *hub, wsch__hub_peer *cl, const wsch_hub_request *hr,
                                  wsch_handshake_reply *reply) {
    wsch_hub_http_response res;
    size_t size = 0;
    int head = wsch__hub_span_is(hr->http->method, "HEAD");
    res.status = 404;
    res.content_type = NULL;
    res.body = NULL;
    res.body_len = 0;
    res.extra_headers = NULL;
    cl->flags |= WSCH__HUB_HTTP;
    hub->http_responses++;
    if (hub->desc.on_http) hub->desc.on_http(hub, hr, &res, hub->desc.user);
    if (res.status < 200 || res.status > 599) res.status = 500;
    if (!res.body && res.status != 204 && res.status != 304) { /* a one-line page naming the status */
        res.body = wsch__h_reason_phrase(res.status);
        res.body_len = WSCH_STRLEN((const char *)res.body);
        res.content_type = NULL;
    }
    if (head) res.body = NULL;              /* the length, not the bytes */
    /* Until the answer is built, the conn's own short page is the fallback
       (also for extra_headers the builder refuses). */
    reply->status = 503;
    if (wsch_http_response_build(res.status, res.content_type, res.body, res.body_len, res.extra_headers, NULL, 0,
                                 &size) != WSCH_ERR_BUFFER)
        return;
    wsch__free(&hub->desc.allocator, hub->http_buf);
    hub->http_buf = (char *)wsch__alloc(&hub->desc.allocator, size + 1u);
    if (!hub->http_buf) return;
    if (wsch_http_response_build(res.status, res.content_type, res.body, res.body_len, res.extra_headers,
                                 hub->http_buf, size + 1u, &size) != WSCH_OK)
        return;
    reply->status = res.status;
    reply->response = hub->http_buf;
    reply->response_len = size;
}

/* Picks the subprotocol: the configured one when offered; else, when the
   token came in a "bearer." entry, that entry (browsers insist on one). */
WSCH__PRIVATE void wsch__hub_pick_protocol(wsch_hub *hub, const wsch_request *req, wsch_handshake_reply *reply) {
    size_t iter = 0;
    wsch_str p, bearer;
    bearer.ptr = NULL;
    bearer.len = 0;
    while (wsch_request_next_protocol(req, &iter, &p)) {
        if (hub->desc.subprotocol && wsch__hub_span_is(p, hub->desc.subprotocol)) {
            reply->protocol = hub->desc.subprotocol;
            return;
        }
        if (!bearer.ptr && p.len > 7u && p.len <= hub->desc.max_token_len + 7u) {
            wsch_str prefix;
            prefix.ptr = p.ptr;
            prefix.len = 7;
            if (wsch__str_ieq(prefix, "bearer.")) bearer = p;
        }
    }
    if (bearer.ptr) {
        WSCH_MEMCPY(hub->proto_buf, bearer.ptr, bearer.len);
        hub->proto_buf[bearer.len] = '\0';
        reply->protocol = hub->proto_buf;
    }
}

WSCH__PRIVATE void wsch__hub_on_request(wsch_conn *c, const wsch_request *req, wsch_handshake_reply *reply,
                                        void *user) {
    wsch__hub_peer *cl = (wsch__hub_peer *)user;
    wsch_hub *hub = cl->hub;
    wsch_hub_request hr;
    wsch_str uid;
    size_t tlen = 0, sess_len = 0;
    char sess[WSCH_SESSION_MAX + 1u];
    (void)c;
    hr.http = req;
    hr.peer = wsch__hub_handle(hub, cl);
    hr.peer_user = cl->user;
    hr.token.ptr = hub->token_buf;
    hr.token.len = 0;
    hr.token_source = WSCH_TOKEN_NONE;
    hub->token_buf[0] = '\0';
    if (wsch_request_token(req, hub->token_buf, hub->desc.max_token_len + 1u, &tlen, &hr.token_source) == WSCH_OK) {
        hr.token.len = tlen;
    } else {
        hr.token_source = WSCH_TOKEN_NONE;
        hub->token_buf[0] = '\0';
    }
    if (!wsch__hub_span_is(req->path, hub->desc.path)) {
        wsch__hub_http(hub, cl, &hr, reply);
        return;
    }
    if (reply->status != 101) return;           /* not a valid upgrade: the conn refuses it */
    if (hub->shutting_down) {
        reply->status = 503;
        return;
    }
    if (hub->desc.check_origin && !hub->desc.check_origin(hub, &hr, hub->desc.user)) {
        reply->status = 403;
        cl->flags |= WSCH__HUB_REJECTED | WSCH__HUB_COUNTED;
        hub->drops[WSCH_HUB_DROP_ORIGIN]++;
        return;
    }
    {   /* a malformed session would silently lose its deduplication: refuse it */
        size_t slen = 0;
        int sr = wsch_query_get(req->query, "session", sess, sizeof sess, &slen);
        if (sr == WSCH_OK) sess_len = slen;
        if ((sr == WSCH_OK && !wsch__session_ok(sess, slen)) || sr == WSCH_ERR_BUFFER) {
            reply->status = 400;
            cl->flags |= WSCH__HUB_REJECTED | WSCH__HUB_COUNTED;
            hub->drops[WSCH_HUB_DROP_HANDSHAKE]++;
            return;
        }
    }
    wsch__hub_pick_protocol(hub, req, reply);
    uid.ptr = "";
    uid.len = 0;
    if (hub->desc.authenticate) {
        int r = hub->desc.authenticate(hub, &hr, &uid, hub->desc.user);
        if (r != WSCH_OK || uid.len > hub->desc.max_user_id_len || (uid.len && !uid.ptr)) {
            cl->flags |= WSCH__HUB_REJECTED | WSCH__HUB_COUNTED;
            hub->drops[WSCH_HUB_DROP_UNAUTHORIZED]++;
            if (hub->desc.reject_with_http) {
                reply->status = 401;    /* the built answer carries WWW-Authenticate: Bearer */
            } else {
                reply->close_code = WSCH_CLOSE_UNAUTHORIZED;
                reply->close_reason = "Unauthorized";
            }
            return;
        }
    }
    if ((uid.len && wsch__hub_user_link(hub, cl, uid.ptr, uid.len) != WSCH_OK) ||
        (sess_len && wsch__hub_session_link(hub, cl, sess, sess_len) != WSCH_OK)) {
        reply->status = 503;
        cl->flags |= WSCH__HUB_REJECTED | WSCH__HUB_COUNTED;
        hub->drops[WSCH_HUB_DROP_NOMEM]++;
    }
}

WSCH__PRIVATE void wsch__hub_on_open(wsch_conn *c, void *user) {
    wsch__hub_peer *cl = (wsch__hub_peer *)user;
    wsch_hub *hub = cl->hub;
    (void)c;
    if (cl->state != WSCH__HUB_HANDSHAKE) return;
    if (cl->flags & WSCH__HUB_REJECTED) {
        cl->state = WSCH__HUB_CLOSING;           /* the conn is sending 4001 */
        return;
    }
    cl->state = WSCH__HUB_OPEN;
    cl->flags |= WSCH__HUB_CONNECTED;
    hub->open++;
    if (hub->desc.effects.now_ms) cl->last_in_ms = (uint32_t)hub->desc.effects.now_ms(hub->desc.user);
    wsch__hub_idle_rearm(hub, cl, 0);
    if (hub->desc.on_connect) hub->desc.on_connect(hub, wsch__hub_handle(hub, cl), wsch__hub_user_id(cl), hub->desc.user);
}

/* ---- presence: messages ---------------------------------------------------- */

/* {"user":U[,"connections":conns][,"info":I]}: with_conns in lists, and
   to the other hubs; a diff's joins say none. */
WSCH__PRIVATE void wsch__hub_put_member(wsch__writer *w, const wsch__hub_member *m, uint64_t conns, int with_conns) {
    wsch__w_puts(w, "{\"user\":");
    wsch__w_put_json_string(w, m->e.key, m->e.key_len);
    if (with_conns) {
        wsch__w_puts(w, ",\"connections\":");
        wsch__w_put_uint(w, conns);
    }
    if (m->info_len) {
        wsch__w_puts(w, ",\"info\":");
        wsch__w_put(w, WSCH__HUB_MEMBER_INFO(m), m->info_len);
    }
    wsch__w_puts(w, "}");
}

/* [member, ...]: as last sent (announced), or as they are now (now: those
   with a connection, which is what they are once the flush settles them). */
WSCH__PRIVATE void wsch__hub_put_members(wsch__writer *w, const wsch__hub_channel *ch, int now) {
    size_t i;
    int first = 1;
    wsch__w_puts(w, "[");
    for (i = 0; i < ch->members.nbuckets; i++) {
        const wsch__hub_entry *e;
        for (e = ch->members.buckets[i]; e; e = e->next) {
            const wsch__hub_member *m = (const wsch__hub_member *)(const void *)e;
            if (now ? !WSCH__HUB_PRESENT(m) : !m->announced) continue;
            if (!first) wsch__w_puts(w, ",");
            first = 0;
            wsch__hub_put_member(w, m, m->conns + m->rconns, 1);
        }
    }
    wsch__w_puts(w, "]");
}

/* "users":N,"connections":M, now */
WSCH__PRIVATE void wsch__hub_put_counts(wsch__writer *w, const wsch__hub_channel *ch) {
    wsch__w_puts(w, "\"users\":");
    wsch__w_put_uint(w, ch ? ch->users : 0u);
    wsch__w_puts(w, ",\"connections\":");
    wsch__w_put_uint(w, ch ? ch->member_conns : 0u);
}

/* The payload of a presence message about ch (named name, n bytes):
     WSCH__PRES_DIFF   {"channel":C,"joins":[...],"leaves":[...]} of the changes not yet sent
     WSCH__PRES_LIST   {"channel":C,"members":[...]} (now: as they are now, else as last sent)
     WSCH__PRES_STATS  {"channel":C,"users":N,"connections":M,"listed":B}
   ch may be NULL for LIST and STATS: a channel nobody is in. */
enum { WSCH__PRES_DIFF, WSCH__PRES_LIST, WSCH__PRES_STATS };
WSCH__PRIVATE void wsch__hub_put_presence(wsch__writer *w, const char *name, size_t n, const wsch__hub_channel *ch,
                                          int kind, int now) {
    wsch__w_puts(w, "{\"channel\":");
    wsch__w_put_json_string(w, name, n);
    if (kind == WSCH__PRES_DIFF) {
        const wsch__hub_member *m;
        int first = 1;
        wsch__w_puts(w, ",\"joins\":[");
        for (m = ch->dirty; m; m = m->dirty_next) {
            if (!WSCH__HUB_PRESENT(m) || m->announced) continue;
            if (!first) wsch__w_puts(w, ",");
            first = 0;
            wsch__hub_put_member(w, m, 0, 0);
        }
        wsch__w_puts(w, "],\"leaves\":[");
        first = 1;
        for (m = ch->dirty; m; m = m->dirty_next) {
            if (WSCH__HUB_PRESENT(m) || !m->announced) continue;
            if (!first) wsch__w_puts(w, ",");
            first = 0;
            wsch__w_puts(w, "{\"user\":");
            wsch__w_put_json_string(w, m->e.key, m->e.key_len);
            wsch__w_puts(w, "}");
        }
        wsch__w_puts(w, "]");
    } else if (kind == WSCH__PRES_LIST) {
        wsch__w_puts(w, ",\"members\":");
        if (ch && !now && ch->listed_json) wsch__w_put(w, ch->listed_json, ch->listed_len);
        else if (ch) wsch__hub_put_members(w, ch, now);
        else wsch__w_puts(w, "[]");
    } else {
        wsch__w_puts(w, ",");
        wsch__hub_put_counts(w, ch);
        wsch__w_puts(w, !ch || ch->listed ? ",\"listed\":true" : ",\"listed\":false");
    }
    wsch__w_puts(w, "}");
}

/* hub->pbuf with room for n bytes, or NULL. Past WSCH__HUB_PBUF_KEEP bytes
   it is freed at the end of wsch_hub_flush(). */
#define WSCH__HUB_PBUF_KEEP 4096u
WSCH__PRIVATE char *wsch__hub_pbuf(wsch_hub *hub, size_t n) {
    if (n > hub->pbuf_cap) {
        char *p = (char *)wsch__alloc(&hub->desc.allocator, n);
        if (!p) return NULL;
        wsch__free(&hub->desc.allocator, hub->pbuf);
        hub->pbuf = p;
        hub->pbuf_cap = n;
    }
    return hub->pbuf;
}

/* [members as last sent] of the channel: kept from the first confirmation
   or request that needs it until a flush changes it, so a burst of
   subscribes walks the members once. NULL without memory. */
WSCH__PRIVATE const char *wsch__hub_listed(wsch_hub *hub, wsch__hub_channel *ch) {
    wsch__writer w;
    if (ch->listed_json) return ch->listed_json;
    wsch__w_init(&w, NULL, 0);
    wsch__hub_put_members(&w, ch, 0);
    ch->listed_json = (char *)wsch__alloc(&hub->desc.allocator, w.len);
    if (!ch->listed_json) return NULL;
    ch->listed_len = w.len;
    wsch__w_init(&w, ch->listed_json, ch->listed_len);
    wsch__hub_put_members(&w, ch, 0);
    WSCH_ASSERT(!w.overflow);
    return ch->listed_json;
}

/* Writes a presence message's payload into hub->pbuf (measured first).
   Returns its length, 0 without memory. */
WSCH__PRIVATE size_t wsch__hub_presence_payload(wsch_hub *hub, const char *name, size_t n,
                                                const wsch__hub_channel *ch, int kind, int now) {
    wsch__writer w;
    char *buf;
    wsch__w_init(&w, NULL, 0);
    wsch__hub_put_presence(&w, name, n, ch, kind, now);
    buf = wsch__hub_pbuf(hub, w.len);
    if (!buf) return 0;
    wsch__w_init(&w, buf, w.len);
    wsch__hub_put_presence(&w, name, n, ch, kind, now);
    WSCH_ASSERT(!w.overflow);
    return w.len;
}

/* The largest member list a message carries: room is left for a
   confirmation's other members and the envelope around it. */
WSCH__PRIVATE size_t wsch__hub_list_budget(const wsch_hub *hub) {
    size_t overhead = 2u * WSCH_HUB_MAX_CHANNEL_LEN + 256u;
    size_t max = hub->desc.limits.max_message_size;
    return max > overhead ? max - overhead : 0u;
}

/* ---- presence: across processes (the bridge) --------------------------------
   Each hub says, on a channel's bridge channel, which users it has there:
   "wschp <origin> " then {"joins":[{"user":U,"connections":N[,"info":I]},...]}
   for users whose first connection here came (or all of them again, every
   presence_ttl_ms / 3), {"leaves":[{"user":U},...]} for those whose last
   went, and {"joins":[...],"sync":true} when it starts listening to the
   channel (or its link came back), which asks the others to say all theirs.
   A hub forgets another's user that is not said again within
   presence_ttl_ms: a process that dies without a word drops out. */

/* Bridge presence messages of one kind ("joins" or "leaves") being written
   into hub->pbuf: as many as max_message_size needs. */
typedef struct wsch__hub_pout {
    const wsch__hub_channel *ch;
    const char *kind;
    size_t len, items, cap;
    int sync;                       /* the next message asks the others for theirs */
} wsch__hub_pout;

WSCH__PRIVATE void wsch__hub_pout_open(wsch__hub_pout *po, const char *kind) {
    po->kind = kind;
    po->items = 0;
    po->len = 0;
}

/* Sends what is written (a sync is sent even empty). */
WSCH__PRIVATE void wsch__hub_pout_send(wsch_hub *hub, wsch__hub_pout *po) {
    wsch__writer w;
    if (!po->items && !po->sync) return;
    wsch__w_init(&w, hub->pbuf + po->len, po->cap - po->len);
    if (!po->items) {               /* nothing was begun */
        wsch__w_init(&w, hub->pbuf, po->cap);
        wsch__w_puts(&w, "{\"");
        wsch__w_puts(&w, po->kind);
        wsch__w_puts(&w, "\":[");
    }
    wsch__w_puts(&w, po->sync ? "],\"sync\":true}" : "]}");
    WSCH_ASSERT(!w.overflow);
    po->len = (size_t)(w.out + w.len - hub->pbuf);
    wsch__hub_bridge_publish(hub, NULL, 0, po->ch->e.key, po->ch->e.key_len, WSCH__HUB_PRESENCE_MAGIC, hub->pbuf,
                             po->len);
    po->sync = 0;
    po->items = 0;
    po->len = 0;
}

/* Adds member m (with conns: a join saying them; 0: a leave). */
WSCH__PRIVATE void wsch__hub_pout_add(wsch_hub *hub, wsch__hub_pout *po, const wsch__hub_member *m, uint32_t conns) {
    wsch__writer w;
    size_t room = 16u;              /* "{"joins":[" ... "],"sync":true}" */
    int pass;
    for (pass = 0; pass < 2; pass++) {
        wsch__w_init(&w, pass ? hub->pbuf + po->len : NULL, pass ? po->cap - po->len : 0);
        if (!po->items) {
            wsch__w_puts(&w, "{\"");
            wsch__w_puts(&w, po->kind);
            wsch__w_puts(&w, "\":[");
        } else {
            wsch__w_puts(&w, ",");
        }
        if (conns) {
            wsch__hub_put_member(&w, m, conns, 1);
        } else {
            wsch__w_puts(&w, "{\"user\":");
            wsch__w_put_json_string(&w, m->e.key, m->e.key_len);
            wsch__w_puts(&w, "}");
        }
        if (pass) break;
        if (po->len + w.len + room <= po->cap) continue;
        if (!po->items) return;     /* alone too long for a message: the others learn nothing of it */
        wsch__hub_pout_send(hub, po);
        pass = -1;                  /* again, as the first of the next message */
    }
    WSCH_ASSERT(!w.overflow);
    po->len += w.len;
    po->items++;
}

/* Tells the other hubs what changed here since the last flush: users whose
   first connection here came or last went (or, with prefresh, every user
   here again); with psync it asks them for theirs. */
WSCH__PRIVATE void wsch__hub_presence_out(wsch_hub *hub, wsch__hub_channel *ch) {
    wsch__hub_member *m;
    wsch__hub_pout po;
    size_t i;
    po.ch = ch;
    po.cap = hub->desc.limits.max_message_size;
    po.sync = ch->psync;
    if (!wsch__hub_pbuf(hub, po.cap)) {
        ch->prefresh = 1;           /* said again at the next refresh; leaves expire there */
        for (m = ch->dirty; m; m = m->dirty_next) m->published = m->conns > 0;
        return;
    }
    wsch__hub_pout_open(&po, "joins");
    if (ch->prefresh) {
        for (i = 0; i < ch->members.nbuckets; i++) {
            wsch__hub_entry *e;
            for (e = ch->members.buckets[i]; e; e = e->next) {
                m = (wsch__hub_member *)(void *)e;
                if (!m->conns) continue;
                wsch__hub_pout_add(hub, &po, m, m->conns);
                m->published = 1;
            }
        }
    } else {
        for (m = ch->dirty; m; m = m->dirty_next) {
            if (!m->conns || m->published) continue;
            wsch__hub_pout_add(hub, &po, m, m->conns);
            m->published = 1;
        }
    }
    wsch__hub_pout_send(hub, &po);
    wsch__hub_pout_open(&po, "leaves");
    for (m = ch->dirty; m; m = m->dirty_next) {
        if (m->conns || !m->published) continue;
        wsch__hub_pout_add(hub, &po, m, 0);
        m->published = 0;
    }
    wsch__hub_pout_send(hub, &po);
    ch->psync = ch->prefresh = 0;
}

/* The channel goes away here (its last subscriber left): the other hubs
   are told at once that this one's users left it, not when they would
   have forgotten them; on_presence hears the others' members leave. */
WSCH__PRIVATE void wsch__hub_presence_goodbye(wsch_hub *hub, wsch__hub_channel *ch) {
    wsch__hub_pout po;
    size_t i;
    if (!hub->desc.presence || hub->destroying) return;
    if (hub->desc.on_presence) {
        /* Members of other hubs are forgotten here with the channel: for
           on_presence they leave (its joins and leaves stay paired). */
        for (i = 0; i < ch->members.nbuckets; i++) {
            wsch__hub_entry *e;
            for (e = ch->members.buckets[i]; e; e = e->next) {
                wsch__hub_member *m = (wsch__hub_member *)(void *)e;
                if (!WSCH__HUB_PRESENT(m)) continue;
                ch->member_conns -= (size_t)m->rconns;      /* gone here before the hook hears it */
                m->rconns = 0;
                m->remote = 0;
                wsch__hub_member_came(hub, ch, m, 0);
            }
        }
    }
    if (!hub->bridged) return;
    po.ch = ch;
    po.cap = hub->desc.limits.max_message_size;
    po.sync = 0;
    if (!wsch__hub_pbuf(hub, po.cap)) return;       /* they forget within presence_ttl_ms */
    wsch__hub_pout_open(&po, "leaves");
    for (i = 0; i < ch->members.nbuckets; i++) {
        wsch__hub_entry *e;
        for (e = ch->members.buckets[i]; e; e = e->next) {
            wsch__hub_member *m = (wsch__hub_member *)(void *)e;
            if (!m->published) continue;
            wsch__hub_pout_add(hub, &po, m, 0);
            m->published = 0;
        }
    }
    wsch__hub_pout_send(hub, &po);
}

/* Another hub's user in the channel: said (conns > 0: joined or said
   again, until expires_ms) or gone (conns 0). id is in hub->pbuf + 8,
   after the origin: the key. */
WSCH__PRIVATE int wsch__hub_remote_set(wsch_hub *hub, wsch__hub_channel *ch, size_t id_len, uint32_t conns,
                                       wsch_str info, uint32_t expires_ms) {
    const char *key = hub->pbuf, *id = hub->pbuf + 8;
    uint32_t h = wsch__hub_hash(hub, key, 8u + id_len);
    wsch__hub_remote *r = (wsch__hub_remote *)(void *)wsch__hub_find(&ch->remote, key, 8u + id_len, h);
    wsch__hub_member *m;
    if (!r && !conns) return WSCH_OK;
    m = wsch__hub_member_get(hub, ch, id, id_len, wsch__hub_hash(hub, id, id_len), info.ptr, info.len);
    if (!m) return WSCH_ERR_NOMEM;
    if (!r) {
        r = (wsch__hub_remote *)(void *)wsch__hub_entry_new(hub, sizeof *r, NULL, 0, key, 8u + id_len, h);
        if (!r || wsch__hub_insert(hub, &ch->remote, &r->e) != WSCH_OK) {
            wsch__free(&hub->desc.allocator, r);
            if (!WSCH__HUB_PRESENT(m)) wsch__hub_member_dirty(hub, ch, m);   /* freed at the flush */
            return WSCH_ERR_NOMEM;
        }
        hub->presence_remote++;
        if (m->remote++ == 0 && !m->conns) wsch__hub_member_came(hub, ch, m, 1);
    }
    m->rconns = m->rconns - r->conns + conns;
    ch->member_conns = ch->member_conns - r->conns + conns;
    ch->conns_changed |= r->conns != conns;
    r->conns = conns;
    r->expires_ms = expires_ms;
    if (conns) return WSCH_OK;
    wsch__hub_remove(hub, &ch->remote, &r->e);
    wsch__free(&hub->desc.allocator, r);
    hub->presence_remote--;
    if (--m->remote == 0 && !m->conns) wsch__hub_member_came(hub, ch, m, 0);
    return WSCH_OK;
}

/* Forgets the other hubs' users of the channel not said again in time. */
WSCH__PRIVATE void wsch__hub_remote_sweep(wsch_hub *hub, wsch__hub_channel *ch, uint32_t now) {
    size_t i;
    if (!wsch__hub_pbuf(hub, 8u + hub->desc.max_user_id_len + 1u)) return;     /* the next sweep, then */
    for (i = 0; i < ch->remote.nbuckets; i++) {
        wsch__hub_entry *e = ch->remote.buckets[i];
        while (e) {
            wsch__hub_remote *r = (wsch__hub_remote *)(void *)e;
            wsch_str none;
            size_t id_len = e->key_len - 8u;
            if ((int32_t)(r->expires_ms - now) > 0) {
                e = e->next;
                continue;
            }
            /* The key goes to pbuf (room made above), and the removal may
               rehash: look at the bucket again. */
            WSCH_MEMCPY(hub->pbuf, e->key, e->key_len);
            none.ptr = NULL;
            none.len = 0;
            hub->presence_expired++;
            (void)wsch__hub_remote_set(hub, ch, id_len, 0, none, 0);
            if (i >= ch->remote.nbuckets) return;
            e = ch->remote.buckets[i];
        }
    }
}

/* Bridge presence from another hub (after the header was read). Returns
   WSCH_OK, WSCH_ERR_NOMEM or the error of what was malformed (what could
   be read was applied). */
WSCH__PRIVATE int wsch__hub_presence_in(wsch_hub *hub, const char *name, size_t len, uint64_t origin,
                                        wsch_str body) {
    static const char *const keys[3] = {"joins", "leaves", "sync"};
    static const char *const mkeys[3] = {"user", "connections", "info"};
    wsch_str v[3];
    wsch__hub_channel *ch;
    uint32_t expires;
    int r, k, bad = WSCH_OK;
    if (body.len > hub->desc.limits.max_message_size) return WSCH_ERR_TOO_LARGE;
    r = wsch_json_get_members(body, keys, 3, v);
    if (r == WSCH_ERR_NOT_FOUND || (r == WSCH_OK && ((v[0].ptr && v[0].ptr[0] != '[') || (v[1].ptr && v[1].ptr[0] != '['))))
        r = WSCH_ERR_ARG;
    if (r != WSCH_OK) return r;
    ch = hub->desc.presence ? wsch__hub_channel_find(hub, name, len) : NULL;
    if (!ch) return WSCH_OK;        /* not (or no longer) listened to here */
    if (!wsch__hub_pbuf(hub, 8u + hub->desc.max_user_id_len + 1u)) return WSCH_ERR_NOMEM;
    hub->presence_in++;
    expires = wsch__hub_now(hub) + hub->desc.presence_ttl_ms;
    for (k = 0; k < 2; k++) {
        size_t pos = 0, id_len;
        wsch_str elem, m[3];
        while (wsch_json_array_next(v[k], &pos, &elem) == WSCH_OK) {
            int64_t conns = 1;
            for (r = 0; r < 8; r++) hub->pbuf[r] = (char)(origin >> (56 - 8 * r));
            if (wsch__json_members(elem, mkeys, 3, m, WSCH__JSON_TRUSTED) != WSCH_OK ||
                wsch__json_string_value(m[0], hub->pbuf + 8, hub->desc.max_user_id_len + 1u, &id_len) != WSCH_OK ||
                id_len == 0 || WSCH_MEMCHR(hub->pbuf + 8, 0, id_len) ||
                (m[1].ptr && (wsch__json_int_value(m[1], &conns) != WSCH_OK || conns < 1 || conns > 0xFFFFFFFF)) ||
                m[2].len > hub->desc.max_presence_info_len) {
                bad = WSCH_ERR_ARG;
                continue;
            }
            if (k == 1) conns = 0;
            r = wsch__hub_remote_set(hub, ch, id_len, (uint32_t)conns, m[2], expires);
            if (r != WSCH_OK) bad = r;
        }
    }
    if (v[2].len == 4u && WSCH_MEMCMP(v[2].ptr, "true", 4) == 0) {
        ch->prefresh = 1;           /* answered at the next flush */
        if (ch->plist != WSCH__HUB_PLIST_DIRTY) wsch__hub_plist_push(hub, ch, WSCH__HUB_PLIST_DIRTY);
    }
    return bad;
}

/* Sends what changed in ch's presence since the last flush to its presence
   subscribers, in one message, and settles its members (the announced
   state becomes the current one). Returns 0, or the milliseconds until
   counts held back by presence_stats_interval_ms may go (ch then waits on
   the hub's wait list). ch may be gone after this. */
/* What was sent becomes the members' announced state; those present
   nowhere (and told to the other hubs) are freed. The members as last
   sent are made again when next needed. */
WSCH__PRIVATE void wsch__hub_presence_settle(wsch_hub *hub, wsch__hub_channel *ch, int changes) {
    wsch__hub_member *m, *next;
    for (m = ch->dirty; m; m = next) {
        next = m->dirty_next;
        m->dirty = 0;
        m->announced = WSCH__HUB_PRESENT(m);
        if (!m->announced && !m->published) wsch__hub_member_free(hub, ch, m);
    }
    ch->dirty = NULL;
    if (changes || ch->conns_changed) {
        wsch__free(&hub->desc.allocator, ch->listed_json);
        ch->listed_json = NULL;
    }
    ch->conns_changed = 0;
}

WSCH__PRIVATE uint32_t wsch__hub_presence_turn(wsch_hub *hub, wsch__hub_channel *ch, uint32_t now) {
    wsch__hub_member *m;
    wsch__writer w;
    size_t diff_len = 0, list_len = 0, len = 0, i, sent = 0;
    int kind = -1, changes = 0, fits;
    wsch_shared *s;
    if (hub->bridged) wsch__hub_presence_out(hub, ch);
    for (m = ch->dirty; m; m = m->dirty_next) changes += WSCH__HUB_PRESENT(m) != (m->announced != 0);
    fits = ch->users <= hub->desc.presence_max_members;
    if (fits) {
        wsch__w_init(&w, NULL, 0);
        wsch__hub_put_presence(&w, ch->e.key, ch->e.key_len, ch, WSCH__PRES_LIST, 1);
        list_len = w.len;
        fits = list_len <= wsch__hub_list_budget(hub);
    }
    if (!ch->npsubs) {
        ch->listed = (uint8_t)fits;     /* what a confirmation will give */
    } else if (!fits) {
        ch->listed = 0;
        if (changes || ch->stats_due) {
            uint32_t interval = hub->desc.presence_stats_interval_ms;
            if (hub->desc.effects.now_ms && ch->stats_sent && now - ch->stats_at_ms < interval) {
                /* Settled now (nobody holds a list to keep in step), so a
                   wait costs no flush more than its own changes. */
                ch->stats_due = 1;
                wsch__hub_presence_settle(hub, ch, changes);
                wsch__hub_plist_push(hub, ch, WSCH__HUB_PLIST_WAIT);
                return interval - (now - ch->stats_at_ms);
            }
            kind = WSCH__PRES_STATS;
        }
    } else if (!ch->listed) {
        kind = WSCH__PRES_LIST;             /* back under the cap, or a diff that could not go */
    } else if (changes) {
        wsch__w_init(&w, NULL, 0);
        wsch__hub_put_presence(&w, ch->e.key, ch->e.key_len, ch, WSCH__PRES_DIFF, 1);
        diff_len = w.len;
        kind = diff_len <= list_len ? WSCH__PRES_DIFF : WSCH__PRES_LIST;
    }
    if (kind >= 0) {
        len = wsch__hub_presence_payload(hub, ch->e.key, ch->e.key_len, ch, kind, 1);
        ch->listed = (uint8_t)(kind != WSCH__PRES_STATS);
    }
    wsch__hub_presence_settle(hub, ch, changes);
    if (kind < 0) return 0;
    if (!len || wsch__hub_encode(hub, kind == WSCH__PRES_DIFF ? "presence_diff" : kind == WSCH__PRES_LIST ? "presence"
                                 : "presence_stats", kind == WSCH__PRES_DIFF ? 13u : kind == WSCH__PRES_LIST ? 8u : 14u,
                                 hub->pbuf, len, NULL, 0, &s, NULL) != WSCH_OK) {
        /* Nothing went: the whole list, or the counts, at the next flush instead. */
        if (kind != WSCH__PRES_STATS) ch->listed = 0;
        else ch->stats_due = 1;
        wsch__hub_plist_push(hub, ch, WSCH__HUB_PLIST_WAIT);
        return 1;
    }
    if (kind == WSCH__PRES_STATS) {
        ch->stats_at_ms = now;
        ch->stats_sent = 1;
        ch->stats_due = 0;
    }
    hub->presence_messages++;
    wsch__hub_walk_begin(hub);
    for (i = 0; i < ch->npsubs; i++) sent += (size_t)wsch__hub_push(hub, ch->psubs[i], s);
    wsch__hub_walk_end(hub);                /* ch may be gone after this */
    wsch_shared_release(s);
    hub->presence_sent += sent;
    return 0;
}

/* The payload of {"type":"subscribed"|"unsubscribed","payload":{"channel":C[,"offset":N,"epoch":E][,"recovered":B]}}:
   ch NULL: no position (history off, or an unsubscribe); asked: recover was
   asked, so "recovered" is said. The position is where live delivery is
   (wsch__hub_confirm_payload_at: the one given). */
#define WSCH__HUB_CONFIRM_MAX (WSCH_HUB_MAX_CHANNEL_LEN + 96u)
WSCH__PRIVATE size_t wsch__hub_confirm_payload_at(char *buf, const char *name, size_t n, int positioned,
                                                  uint64_t offset, uint64_t epoch_id, int asked, int recovered) {
    wsch__writer w;
    wsch__w_init(&w, buf, WSCH__HUB_CONFIRM_MAX);      /* a valid name needs no escapes */
    wsch__w_puts(&w, "{\"channel\":");
    wsch__w_put_json_string(&w, name, n);
    if (positioned) wsch__hub_put_position(&w, offset, epoch_id);
    if (asked) wsch__w_puts(&w, recovered ? ",\"recovered\":true" : ",\"recovered\":false");
    wsch__w_puts(&w, "}");
    WSCH_ASSERT(!w.overflow);
    return w.len;
}

WSCH__PRIVATE size_t wsch__hub_confirm_payload(char *buf, const char *name, size_t n, const wsch__hub_channel *ch,
                                               int asked, int recovered) {
    return wsch__hub_confirm_payload_at(buf, name, n, ch != NULL, ch ? ch->delivered : 0u, ch ? ch->epoch : 0u, asked,
                                        recovered);
}

/* A confirmation's payload, base, with pres's presence in it: the members
   as last sent, or the counts over the cap. */
WSCH__PRIVATE void wsch__hub_put_confirmation(wsch__writer *w, const char *base, size_t base_len,
                                              const wsch__hub_channel *pres) {
    wsch__w_put(w, base, base_len - 1u);       /* without its closing brace */
    if (pres->listed) {
        wsch__w_puts(w, ",\"presence\":");
        wsch__w_put(w, pres->listed_json, pres->listed_len);    /* made by the caller */
    } else {                        /* as they are now: the next flush sends them again (stats_due) */
        wsch__w_puts(w, ",\"presence_stats\":{");
        wsch__hub_put_counts(w, pres);
        wsch__w_puts(w, "}");
    }
    wsch__w_puts(w, "}");
}

/* Sends a "subscribed" (or other) confirmation; with pres (a subscription
   that asked for presence) the channel's presence goes in it. Without
   memory for that it goes without: the subscriber sees no presence. */
WSCH__PRIVATE void wsch__hub_send_confirmation(wsch_hub *hub, wsch__hub_peer *cl, const char *type, const char *base,
                                               size_t base_len, wsch__hub_channel *pres) {
    wsch__writer w;
    char *buf;
    if (pres && !pres->listed) {
        /* Counts as they are now, which this turn may still undo: the
           next flush sends them again, so no subscriber keeps them wrong. */
        pres->stats_due = 1;
        if (pres->plist != WSCH__HUB_PLIST_DIRTY) wsch__hub_plist_push(hub, pres, WSCH__HUB_PLIST_DIRTY);
    }
    if (pres && (!pres->listed || wsch__hub_listed(hub, pres))) {
        wsch__w_init(&w, NULL, 0);
        wsch__hub_put_confirmation(&w, base, base_len, pres);
        buf = wsch__hub_pbuf(hub, w.len);
        if (buf) {
            wsch__w_init(&w, buf, w.len);
            wsch__hub_put_confirmation(&w, base, base_len, pres);
            WSCH_ASSERT(!w.overflow);
            (void)wsch__hub_send_one(hub, cl, type, buf, w.len);
            return;
        }
    }
    (void)wsch__hub_send_one(hub, cl, type, base, base_len);
}

WSCH__PRIVATE void wsch__hub_confirm(wsch_hub *hub, wsch__hub_peer *cl, const char *type, const char *name, size_t n,
                                     const wsch__hub_channel *ch, int asked, int recovered,
                                     wsch__hub_channel *pres) {
    char buf[WSCH__HUB_CONFIRM_MAX];
    size_t len = wsch__hub_confirm_payload(buf, name, n, ch, asked, recovered);
    if (asked) {
        if (recovered) hub->recovered++;
        else hub->not_recovered++;
    }
    wsch__hub_send_confirmation(hub, cl, type, buf, len, pres);
}

/* Shared positions: the channel's live subscribers missed messages that
   cannot be had any more (the bridge lost them, or its history moved on):
   each is told so with a "subscribed" at the position live delivery goes
   on from, "recovered":false. */
WSCH__PRIVATE void wsch__hub_confirm_lost(wsch_hub *hub, wsch__hub_channel *ch) {
    char buf[WSCH__HUB_CONFIRM_MAX];
    size_t len = wsch__hub_confirm_payload(buf, ch->e.key, ch->e.key_len, ch, 1, 0);
    wsch_shared *s;
    if (!ch->count) return;
    hub->not_recovered += ch->count;
    if (wsch__hub_encode(hub, "subscribed", 10, buf, len, NULL, 0, &s, NULL) != WSCH_OK) return;
    (void)wsch__hub_deliver_channel(hub, ch, s);    /* ch may be gone after this */
    wsch_shared_release(s);
}

/* Sends what the peer's pending subscriptions still miss, oldest first,
   while its queue is under half of max_outbound_bytes (a transport that
   fills resumes it through wsch_hub_writable); a subscription that caught
   up joins its channel live and is confirmed, so live messages follow the
   replay in offset order. Subscriptions waiting for a fetch stay. */
WSCH__PRIVATE void wsch__hub_replay(wsch_hub *hub, wsch__hub_peer *cl) {
    size_t limit = hub->desc.limits.max_outbound_bytes / 2u;
    int k, waiting = 0;
    for (k = 0; cl->state == WSCH__HUB_OPEN && k < (int)cl->nsubs; k++) {
        wsch__hub_sub *sub = &cl->subs[k];
        wsch__hub_channel *ch = sub->ch;
        if (sub->pos != WSCH__HUB_PENDING) continue;
        if (sub->waiting == WSCH__HUB_OWN) {
            /* Where the channel is could not be learned: the subscriber keeps
               its own position (sub->next, want_epoch), to recover from later. */
            char buf[WSCH__HUB_CONFIRM_MAX];
            size_t len = wsch__hub_confirm_payload_at(buf, ch->e.key, ch->e.key_len, 1, sub->next, sub->want_epoch, 1, 0);
            sub->waiting = 0;
            wsch__hub_sub_live(cl, sub);
            hub->not_recovered++;
            wsch__hub_send_confirmation(hub, cl, "subscribed", buf, len, sub->presence ? ch : NULL);
            k = -1;
            waiting = 0;
            continue;
        }
        if (sub->waiting) {
            waiting = 1;
            continue;
        }
        while (sub->next <= ch->delivered) {
            uint64_t first = wsch__hub_first_kept(ch);
            int queued;
            if (sub->next < first) {
                sub->gap = 1;           /* evicted under the replay: what is left would skip some */
                break;
            }
            if (wsch_conn_queued_bytes(cl->conn) >= limit) return;
            wsch__hub_walk_begin(hub);
            queued = wsch__hub_push(hub, cl, ch->ring[(ch->head + (uint32_t)(sub->next - first)) & (ch->ring_cap - 1u)]->frame);
            wsch__hub_walk_end(hub);
            if (!queued || cl->state != WSCH__HUB_OPEN) return;
            hub->replayed++;
            sub->next++;
        }
        wsch__hub_sub_live(cl, sub);    /* room was kept when it subscribed */
        wsch__hub_confirm(hub, cl, "subscribed", ch->e.key, ch->e.key_len, ch, (int)sub->asked, !sub->gap,
                          sub->presence ? ch : NULL);
        k = -1;                     /* the confirmation may have changed the array: look again */
        waiting = 0;
    }
    if (cl->state == WSCH__HUB_OPEN && !waiting) cl->flags = (uint16_t)(cl->flags & ~WSCH__HUB_REPLAYING);
}

/* Reads a subscribe's "recover" or "history" (positions on). */
WSCH__PRIVATE wsch__hub_ask wsch__hub_ask_parse(wsch_str recover, wsch_str history) {
    static const char *const keys[2] = {"offset", "epoch"};
    wsch__hub_ask a;
    a.n = a.epoch = 0;
    a.kind = WSCH__ASK_NONE;
    if (recover.ptr) {
        wsch_str v[2];
        int64_t offset;
        a.kind = WSCH__ASK_BAD_RECOVER;
        if (wsch__json_members(recover, keys, 2, v, WSCH__JSON_TRUSTED) == WSCH_OK &&
            wsch__json_int_value(v[0], &offset) == WSCH_OK && offset >= 0 && v[1].ptr &&
            v[1].len == WSCH_HUB_EPOCH_LEN + 2u && v[1].ptr[0] == '"' && wsch__hub_hex16(v[1].ptr + 1, &a.epoch)) {
            a.kind = WSCH__ASK_RECOVER;
            a.n = (uint64_t)offset;
        }
    } else if (history.ptr) {
        int64_t k;
        if (wsch__json_int_value(history, &k) == WSCH_OK && k > 0) {
            a.kind = WSCH__ASK_HISTORY;
            a.n = (uint64_t)k;
        }
    }
    return a;
}

/* Where a subscription starts: *from 0 is live at once (*ok: a recover
   asked is honoured), otherwise a replay from *from. Returns 1 when it must
   wait for a fetch first (shared positions, not fetched yet): the position
   is not known here, a fill is under way, or the bridge may hold what the
   ask needs and this hub does not (its feed lags, or it keeps less). */
WSCH__PRIVATE int wsch__hub_plan(const wsch_hub *hub, const wsch__hub_channel *ch, const wsch__hub_ask *a,
                                 int fetched, uint64_t *from, int *ok) {
    int may_fetch = hub->shared && !fetched;
    uint64_t first = ch ? wsch__hub_first_kept(ch) : 1u, last = ch ? ch->delivered : 0u;
    *from = 0;
    *ok = 0;
    if (may_fetch && (!ch || !ch->synced || ch->delivered != ch->offset)) return 1;
    if (a->kind == WSCH__ASK_RECOVER) {
        if (!ch) return 0;
        if (a->epoch != ch->epoch || a->n > last) return may_fetch;
        /* Everything after the offset must still be here. */
        if (a->n + 1u < first) return may_fetch && ch->kept < hub->desc.history_size;
        *ok = 1;
        *from = a->n == last ? 0u : a->n + 1u;
    } else if (a->kind == WSCH__ASK_HISTORY && ch && ch->kept) {
        uint64_t k = a->n < ch->kept ? a->n : ch->kept;
        *from = last - k + 1u;
    }
    return 0;
}

/* ---- shared positions: the bridge numbers and keeps channel messages ------ */

WSCH__PRIVATE void wsch__hub_fetch_done(wsch_hub *hub, wsch__hub_channel *ch, int ok);

/* Asks the bridge for the channel's position and last messages, unless a
   fetch is out already. 0 when the bridge refused. */
WSCH__PRIVATE int wsch__hub_fetch_ask(wsch_hub *hub, wsch__hub_channel *ch) {
    if (ch->fetching) return 1;
    ch->fetching = 1;
    ch->moved = 0;
    hub->bridge_fetches++;
    if (hub->desc.bridge.fetch(ch->e.key, ch->e.key_len, hub->desc.history_size, hub->desc.bridge.user) == WSCH_OK)
        return 1;
    ch->fetching = 0;
    hub->bridge_fetch_errors++;
    return 0;
}

/* The same, and a refusal ends it at once, as a failed fetch. */
WSCH__PRIVATE void wsch__hub_fetch(wsch_hub *hub, wsch__hub_channel *ch) {
    if (ch && !wsch__hub_fetch_ask(hub, ch)) {
        ch->fetching = 1;
        wsch__hub_fetch_done(hub, ch, 0);
    }
}

/* The channel leaves its epoch for another (or for none): if it had
   messages there, what of that epoch is still on its way is late. */
WSCH__PRIVATE void wsch__hub_leave_epoch(wsch_hub *hub, wsch__hub_channel *ch, uint64_t epoch) {
    if (ch->offset) {
        ch->lost = 1;
        ch->lost_epoch = ch->epoch;
    }
    wsch__hub_hist_drop(hub, ch);
    ch->epoch = epoch;
    ch->offset = ch->delivered = 0;
}

/* When the bridge's epoch changes under live subscribers, the end of the
   old one may have gone by unseen: the link was lost since (not synced),
   or a gap was being filled. Then they are told, before the new one. */
WSCH__PRIVATE int wsch__hub_tail_unseen(const wsch__hub_channel *ch) {
    return ch->count && ch->delivered && (!ch->synced || ch->delivered < ch->offset);
}

/* Live subscribers behind (a gap was seen) get what the history now holds
   after `delivered`, in order; if it lacks the first of those, they are
   told they lost some, at the position it resumes from. */
WSCH__PRIVATE void wsch__hub_catch_up(wsch_hub *hub, wsch__hub_channel *ch) {
    char name[WSCH_HUB_MAX_CHANNEL_LEN + 1u];
    size_t len = ch->e.key_len;
    WSCH_MEMCPY(name, ch->e.key, len);
    while (ch->delivered < ch->offset) {
        uint64_t first = wsch__hub_first_kept(ch);
        if (!ch->count) {
            ch->delivered = ch->offset;
            return;
        }
        if (ch->delivered + 1u < first) {
            ch->delivered = first - 1u;
            wsch__hub_confirm_lost(hub, ch);
            ch = wsch__hub_channel_find(hub, name, len);
            if (!ch) return;
            continue;
        }
        ch->delivered++;
        (void)wsch__hub_deliver_channel(hub, ch, ch->ring[(ch->head + (uint32_t)(ch->delivered - first)) & (ch->ring_cap - 1u)]->frame);
        ch = wsch__hub_channel_find(hub, name, len);
        if (!ch) return;
    }
}

/* A fetch ended (ok: its answer is merged). Live subscribers catch up, and
   the subscriptions that waited for it are planned again, without waiting
   now. Their peers are found among all peers: answers are rare. */
WSCH__PRIVATE void wsch__hub_fetch_done(wsch_hub *hub, wsch__hub_channel *ch, int ok) {
    char name[WSCH_HUB_MAX_CHANNEL_LEN + 1u];
    size_t len = ch->e.key_len;
    uint32_t i;
    WSCH_MEMCPY(name, ch->e.key, len);
    if (ok) ch->synced = 1;
    wsch__hub_catch_up(hub, ch);    /* ch->fetching still holds the channel */
    for (i = 0; i < hub->nslots; i++) {
        wsch__hub_peer *cl = hub->slots[i].peer;
        int k, planned = 0;
        if (!cl || cl->state != WSCH__HUB_OPEN || !(cl->flags & WSCH__HUB_REPLAYING)) continue;
        for (k = 0; k < (int)cl->nsubs; k++) {
            wsch__hub_sub *sub = &cl->subs[k];
            wsch__hub_ask a;
            uint64_t from;
            int recovered;
            if (sub->ch != ch || !sub->waiting) continue;
            a.kind = sub->waiting - 1;
            a.n = sub->next;
            a.epoch = sub->want_epoch;
            planned = 1;
            if (!ok && a.kind == WSCH__ASK_RECOVER) {
                sub->waiting = WSCH__HUB_OWN;
                continue;
            }
            (void)wsch__hub_plan(hub, ch, &a, 1, &from, &recovered);
            sub->waiting = 0;
            sub->next = from ? from : ch->delivered + 1u;
            sub->gap = (uint8_t)!recovered;
        }
        if (planned) wsch__hub_replay(hub, cl);
    }
    ch->fetching = 0;
    wsch__hub_channel_release(hub, ch);
}

/* One message of a fetch's answer, framed as local subscribers get it. */
WSCH__PRIVATE int wsch__hub_fetched_frame(wsch_hub *hub, const wsch__hub_channel *ch, wsch_str msg, uint64_t offset,
                                          wsch_shared **out) {
    char tail[WSCH__HUB_TAIL_MAX];
    wsch_envelope env;
    uint64_t origin, o, e;
    int r = wsch__hub_bridge_parse(hub, msg.ptr, msg.len, &origin, &env, &o, &e);
    if (r != WSCH_OK) return r;
    return wsch__hub_encode(hub, env.type, env.type_len, env.payload.ptr, env.payload.len, tail,
                            wsch__hub_position_tail(ch->e.key, ch->e.key_len, offset, ch->epoch, tail, sizeof tail),
                            out, NULL);
}

/* A fetch's answer, merged into the channel's history. The bridge's epoch
   wins: another one replaces what this hub kept. Otherwise its messages join what is kept, older ones
   before and newer ones after, so the history stays consecutive; an
   answer that cannot join replaces it. Everything is checked first. */
WSCH__PRIVATE int wsch__hub_merge(wsch_hub *hub, wsch__hub_channel *ch, const char *epoch_hex, uint64_t last,
                                  const wsch_str *msgs, size_t count) {
    uint32_t now = wsch__hub_now(hub);
    uint64_t epoch, first, off;
    wsch_envelope env;
    size_t i;
    int r;
    if (!epoch_hex) return WSCH_ERR_ARG;
    if (!epoch_hex[0]) {
        if (last || count) return WSCH_ERR_ARG;
        /* The bridge has nothing: no recovery may reach across this, and
           live subscribers cannot be told they missed nothing. */
        r = ch->count && ch->delivered;
        wsch__hub_leave_epoch(hub, ch, wsch__hub_mix(hub->epoch_key + hub->epochs++));
        if (r) wsch__hub_confirm_lost(hub, ch);
        return WSCH_OK;
    }
    if (WSCH_STRLEN(epoch_hex) != WSCH_HUB_EPOCH_LEN || !wsch__hub_hex16(epoch_hex, &epoch) || count > last)
        return WSCH_ERR_ARG;
    first = last - count + 1u;
    for (i = 0; i < count; i++) {
        uint64_t origin, o, e;
        r = wsch__hub_bridge_parse(hub, msgs[i].ptr, msgs[i].len, &origin, &env, &o, &e);
        if (r != WSCH_OK) return r;
        if (o != first + i || e != epoch) return WSCH_ERR_ARG;
    }
    if (epoch != ch->epoch) {
        /* Another stream: live subscribers follow it from its start, as far as it is kept. */
        int lost = wsch__hub_tail_unseen(ch);
        wsch__hub_leave_epoch(hub, ch, epoch);
        if (lost) wsch__hub_confirm_lost(hub, ch);
    }
    r = WSCH_OK;
    if (ch->kept && last + 1u < wsch__hub_first_kept(ch)) {
        off = last + 1u;            /* older than what is kept, and apart from it: nothing to add */
    } else if (ch->kept && first <= ch->offset + 1u) {
        /* Joins what is kept: older ones in front (while there is room), newer behind. */
        for (off = wsch__hub_first_kept(ch); off > first && r == WSCH_OK;) {
            wsch_shared *s;
            off--;
            r = wsch__hub_fetched_frame(hub, ch, msgs[off - first], off, &s);
            if (r != WSCH_OK) break;
            if (!wsch__hub_hist_prepend(hub, ch, s)) off = first;
            wsch_shared_release(s);
        }
        off = ch->offset + 1u;
    } else if (ch->kept || last >= ch->offset) {
        wsch__hub_hist_drop(hub, ch);       /* newer and apart, or nothing kept: it replaces */
        ch->offset = first - 1u;
        off = first;
    } else {
        off = last + 1u;            /* kept nothing, and the answer is older than what went by */
    }
    for (; off <= last && r == WSCH_OK; off++) {
        wsch_shared *s;
        r = wsch__hub_fetched_frame(hub, ch, msgs[off - first], off, &s);
        if (r != WSCH_OK) break;
        ch->offset = off;
        wsch__hub_hist_append(hub, ch, s, now);
        wsch_shared_release(s);
    }
    if (r != WSCH_OK) {
        /* Out of memory part way: nothing kept beats a history with a hole. */
        wsch__hub_hist_drop(hub, ch);
        if (ch->offset < last) ch->offset = last;
    }
    if (!ch->count) ch->delivered = ch->offset;
    wsch__hub_hist_trim(hub, now);          /* the answer counts against the limits too (ch is held) */
    return r;
}

/* A numbered message from the bridge (shared positions): skipped when
   already had, kept, and delivered live unless a gap holds live
   subscribers back (a fetch fills it first). */
WSCH__PRIVATE int wsch__hub_take(wsch_hub *hub, const char *name, size_t len, const wsch_envelope *env,
                                 uint64_t offset, uint64_t epoch, size_t *delivered) {
    char tail[WSCH__HUB_TAIL_MAX];
    uint32_t now = wsch__hub_now(hub);
    wsch__hub_channel *ch;
    wsch_shared *s;
    size_t n = 0;
    int r;
    wsch__hub_hist_trim(hub, now);
    ch = wsch__hub_channel_find(hub, name, len);
    if (!ch) return WSCH_OK;                /* nobody here listens any more */
    r = wsch__hub_encode(hub, env->type, env->type_len, env->payload.ptr, env->payload.len, tail,
                         wsch__hub_position_tail(name, len, offset, epoch, tail, sizeof tail), &s, NULL);
    if (r != WSCH_OK) return r;
    wsch__hub_enter(hub);
    if (ch->lost && epoch == ch->lost_epoch && epoch != ch->epoch) {
        wsch_shared_release(s);             /* late: sent before the bridge lost that epoch */
        wsch__hub_leave(hub);
        return WSCH_OK;
    }
    if (epoch != ch->epoch) {
        /* Another stream (the first seen, or the bridge lost the channel's
           history): live subscribers follow it from its start. */
        int lost = wsch__hub_tail_unseen(ch);
        wsch__hub_leave_epoch(hub, ch, epoch);
        if (lost) wsch__hub_confirm_lost(hub, ch);
        ch->moved = ch->fetching;
    }
    if (offset <= ch->offset) {
        wsch_shared_release(s);             /* had it: a fetch brought it first */
        wsch__hub_leave(hub);
        return WSCH_OK;
    } else if (offset > ch->offset + 1u) {
        wsch__hub_hist_drop(hub, ch);       /* the history must stay consecutive */
        ch->offset = offset - 1u;
        if (ch->count) hub->bridge_gaps++;
        else ch->delivered = ch->offset;
    }
    ch->offset = offset;
    wsch__hub_hist_append(hub, ch, s, now);
    if (ch->delivered + 1u == offset) {
        ch->delivered = offset;
        if (ch->count) n = wsch__hub_deliver_channel(hub, ch, s);
    } else {
        wsch__hub_fetch(hub, ch);           /* live subscribers wait for the fill */
    }
    wsch_shared_release(s);
    wsch__hub_hist_trim(hub, now);
    wsch__hub_leave(hub);
    if (delivered) *delivered = n;
    return WSCH_OK;
}

/* Reads the payload members keys[0..nkeys) into v, keys[0] being
   "channel", whose value goes to name (*n bytes, NUL-terminated). A bad
   one is answered with its error: returns 0 then. */
WSCH__PRIVATE int wsch__hub_channel_arg(wsch_hub *hub, wsch__hub_peer *cl, const wsch_envelope *env,
                                        const char *const *keys, size_t nkeys, wsch_str *v, char *name, size_t *n) {
    /* The envelope is decoded (validated) already: one more pass finds the keys. */
    int r = wsch_envelope_get_members(env, keys, nkeys, v);
    if (r == WSCH_OK) r = wsch__env_channel_value(v[0], name, hub->desc.max_channel_len + 1u, n);
    if (r == WSCH_ERR_BUFFER || (r == WSCH_OK && !wsch__hub_channel_ok(hub, name, *n))) {
        wsch__hub_send_error(hub, cl, "bad_channel", "channel name is too long or has characters outside [A-Za-z0-9_.:@/-]",
                             env, NULL, 0, 0);
        return 0;
    }
    if (r != WSCH_OK) {
        wsch__hub_send_error(hub, cl, "bad_payload", "payload needs a non-empty string \"channel\"", env, NULL, 0, 0);
        return 0;
    }
    return 1;
}

/* May the peer join the channel (authorize_subscribe)? A refusal is
   answered "forbidden"; 0 then, and also when the hook closed the peer. */
WSCH__PRIVATE int wsch__hub_may_join(wsch_hub *hub, wsch__hub_peer *cl, const wsch_envelope *env, const char *name,
                                     size_t n) {
    wsch_str cs;
    if (!hub->desc.authorize_subscribe) return 1;
    cs.ptr = name;
    cs.len = n;
    if (!hub->desc.authorize_subscribe(hub, wsch__hub_handle(hub, cl), wsch__hub_user_id(cl), cs, hub->desc.user)) {
        wsch__hub_send_error(hub, cl, "forbidden", "not allowed to subscribe", env, name, n, 0);
        return 0;
    }
    return cl->state == WSCH__HUB_OPEN;
}

WSCH__PRIVATE void wsch__hub_on_subscribe(wsch_hub *hub, wsch__hub_peer *cl, const wsch_envelope *env, int sub) {
    char name[WSCH_HUB_MAX_CHANNEL_LEN + 1u];
    static const char *const keys[4] = {"channel", "recover", "history", "presence"};
    wsch_str v[4];
    wsch__hub_channel *ch;
    wsch__hub_ask ask;
    size_t n = 0;
    int asked = 0, ok = 0, wait = 0, k;
    int presence;
    if (!wsch__hub_channel_arg(hub, cl, env, keys, 4, v, name, &n)) return;
    presence = hub->desc.presence && v[3].ptr && wsch__hub_span_is(v[3], "true");
    if (!sub) {
        ch = wsch__hub_channel_find(hub, name, n);
        k = ch ? wsch__hub_sub_index(cl, ch) : -1;
        if (k >= 0) wsch__hub_sub_remove(hub, cl, k);
        wsch__hub_confirm(hub, cl, "unsubscribed", name, n, NULL, 0, 0, NULL);
        return;
    }
    if (hub->desc.history_size) wsch__hub_hist_trim(hub, wsch__hub_now(hub));
    ch = wsch__hub_channel_find(hub, name, n);
    if (!ch || wsch__hub_sub_index(cl, ch) < 0) {
        uint64_t from = 0;
        if (cl->nsubs >= hub->desc.max_channels_per_peer) {
            wsch__hub_send_error(hub, cl, "too_many_channels", "subscription limit reached", env, name, n, 0);
            return;
        }
        if (!wsch__hub_may_join(hub, cl, env, name, n)) return;
        ch = wsch__hub_channel_find(hub, name, n);
        asked = v[1].ptr != NULL;
        if (hub->positioned) {
            ask = wsch__hub_ask_parse(v[1], v[2]);
            wait = wsch__hub_plan(hub, ch, &ask, 0, &from, &ok);
        }
        if (wsch__hub_sub_add(hub, cl, name, n, from, (unsigned)asked, wait ? &ask : NULL, presence) != WSCH_OK) {
            wsch__hub_send_error(hub, cl, "server_error", "out of memory", env, name, n, 0);
            return;
        }
        if (wait) {
            wsch__hub_fetch(hub, wsch__hub_channel_find(hub, name, n));   /* plans it when answered */
            return;
        }
        if (from) {
            wsch__hub_replay(hub, cl);      /* confirms once caught up */
            return;
        }
    } else {
        asked = v[1].ptr != NULL;           /* already subscribed here: nothing was replayed */
        if (presence) (void)wsch__hub_sub_presence(hub, cl, &cl->subs[wsch__hub_sub_index(cl, ch)]);
    }
    ch = wsch__hub_channel_find(hub, name, n);
    k = wsch__hub_sub_index(cl, ch);
    wsch__hub_confirm(hub, cl, "subscribed", name, n, hub->positioned ? ch : NULL, asked, ok,
                      cl->subs[k].presence ? ch : NULL);
}

/* {"type":"presence"|"presence_stats","payload":{"channel":C}}: answered
   with the members as last sent (or the counts over the cap), or the
   counts, to a peer that may subscribe to C. */
WSCH__PRIVATE void wsch__hub_on_presence_request(wsch_hub *hub, wsch__hub_peer *cl, const wsch_envelope *env,
                                                 int stats) {
    char name[WSCH_HUB_MAX_CHANNEL_LEN + 1u];
    static const char *const keys[1] = {"channel"};
    wsch_str v[1];
    wsch__hub_channel *ch;
    size_t n = 0, len;
    int kind;
    if (!wsch__hub_channel_arg(hub, cl, env, keys, 1, v, name, &n)) return;
    ch = wsch__hub_channel_find(hub, name, n);
    if ((!ch || wsch__hub_sub_index(cl, ch) < 0) && !wsch__hub_may_join(hub, cl, env, name, n)) return;
    ch = wsch__hub_channel_find(hub, name, n);
    kind = stats || (ch && !ch->listed) ? WSCH__PRES_STATS : WSCH__PRES_LIST;
    len = kind == WSCH__PRES_LIST && ch && !wsch__hub_listed(hub, ch) ? 0
          : wsch__hub_presence_payload(hub, name, n, ch, kind, 0);
    if (!len) {
        wsch__hub_send_error(hub, cl, "server_error", "out of memory", env, name, n, 0);
        return;
    }
    (void)wsch__hub_send_one(hub, cl, kind == WSCH__PRES_LIST ? "presence" : "presence_stats", hub->pbuf, len);
}

/* An application message: on_message, and for a reliable one (with an
   "id") the answer, once; a resend of an id its session applied already is
   answered again without being applied. */
WSCH__PRIVATE void wsch__hub_on_app_message(wsch_hub *hub, wsch__hub_peer *cl, const wsch_envelope *env,
                                            wsch_str idv) {
    wsch__hub_session *se = cl->sess;   /* kept: the peer may end inside on_message */
    wsch__hub_peer *outer = hub->answering;
    uint64_t id = 0, outer_id = hub->answering_id;
    const wsch_envelope *outer_env = hub->answering_env;
    int refused, deferred, outer_answered = hub->answered, outer_deferred = hub->deferred;
    if (idv.ptr) {
        int64_t k;
        if (wsch__json_int_value(idv, &k) != WSCH_OK || k < 1 || k > ((int64_t)1 << 53)) {
            wsch__hub_send_error(hub, cl, "bad_id", "\"id\" must be an integer from 1 to 2^53", env, NULL, 0, 0);
            return;
        }
        id = (uint64_t)k;
    }
    if (id && se && se->waiting && id > se->last_id) {
        /* Sent again while the bridge has yet to answer it (a reconnect):
           not applied twice; the answer, when it comes, goes here. */
        size_t i;
        for (i = hub->whead; i < hub->nwaits; i++) {
            wsch__hub_wait *w = &hub->waits[i];
            if (w->ticket && w->sess == se && w->id == id) {
                w->peer = wsch__hub_handle(hub, cl);
                hub->duplicates++;
                return;
            }
        }
    }
    if (id && se && id <= se->last_id) {
        uint64_t back = se->last_id - id;
        hub->duplicates++;
        if (back < WSCH__HUB_WINDOW && (se->refused[back / 64u] >> (back % 64u)) & 1u)
            wsch__hub_send_error(hub, cl, "refused", "this message was refused before", env, NULL, 0, id);
        else
            wsch__hub_send_ack(hub, cl, id);
        return;
    }
    hub->answering = cl;
    hub->answering_id = id;
    hub->answering_env = env;
    hub->answered = 0;
    hub->deferred = 0;
    if (hub->desc.on_message) {
        hub->desc.on_message(hub, wsch__hub_handle(hub, cl), env, hub->desc.user);
    } else {
        wsch__hub_send_error(hub, cl, "unknown_type", "no handler for this type", env, NULL, 0, id);
        hub->answered = 1;
    }
    refused = hub->answered;
    deferred = hub->deferred;
    hub->answering = outer;
    hub->answering_id = outer_id;
    hub->answering_env = outer_env;
    hub->answered = outer_answered;
    hub->deferred = outer_deferred;
    if (!id || deferred) return;            /* deferred: appended() answers it */
    if (se) wsch__hub_session_record(se, id, refused);
    if (!refused) wsch__hub_send_ack(hub, cl, id);
}

WSCH__PRIVATE void wsch__hub_on_message(wsch_conn *c, wsch_opcode opcode, void *data, size_t len, void *user) {
    static const char *const id_key[1] = {"id"};
    wsch__hub_peer *cl = (wsch__hub_peer *)user;
    wsch_hub *hub = cl->hub;
    wsch_envelope env;
    wsch_str idv;
    (void)c;
    hub->messages_in++;
    if (cl->state != WSCH__HUB_OPEN) return;
    if (opcode != WSCH_OP_TEXT) {
        wsch__hub_drop(hub, cl, WSCH_HUB_DROP_PROTOCOL);
        return;
    }
    if (wsch__envelope_decode_with((const char *)data, len, &env, id_key, 1, &idv) != WSCH_OK) {
        wsch__hub_send_error(hub, cl, "bad_envelope", "expected {\"type\": string, \"payload\": any}", NULL, NULL, 0, 0);
        return;
    }
    if (wsch_envelope_type_is(&env, "ping")) {
        (void)wsch__hub_send_one(hub, cl, "pong", env.payload.ptr, env.payload.len);
    } else if (wsch_envelope_type_is(&env, "subscribe")) {
        wsch__hub_on_subscribe(hub, cl, &env, 1);
    } else if (wsch_envelope_type_is(&env, "unsubscribe")) {
        wsch__hub_on_subscribe(hub, cl, &env, 0);
    } else if (hub->desc.presence && wsch_envelope_type_is(&env, "presence")) {
        wsch__hub_on_presence_request(hub, cl, &env, 0);
    } else if (hub->desc.presence && wsch_envelope_type_is(&env, "presence_stats")) {
        wsch__hub_on_presence_request(hub, cl, &env, 1);
    } else {
        wsch__hub_on_app_message(hub, cl, &env, idv);
    }
}

WSCH__PRIVATE void wsch__hub_on_close(wsch_conn *c, int code, const char *reason, size_t reason_len, void *user) {
    wsch__hub_peer *cl = (wsch__hub_peer *)user;
    (void)reason;
    (void)reason_len;
    if (cl->hub->walking && cl->state != WSCH__HUB_CLOSED) {
        /* Inside a send of a delivery walk: finishing now would change the
           subscriber array or user list under the walk (and run
           on_disconnect there). The walk's end finishes it. */
        cl->flags |= WSCH__HUB_FINISH_LATER;
        if (wsch_conn_error(c) == WSCH_ERR_TRANSPORT) cl->flags |= WSCH__HUB_COUNTED; /* lost, not dropped */
        cl->close_code = (uint16_t)code;
        wsch__hub_list_drop(cl->hub, cl, WSCH_HUB_DROP_NOMEM);
        return;
    }
    wsch__hub_finish(cl->hub, cl, code);
}

/* ---- public API ------------------------------------------------------------ */

WSCH_API wsch_hub_desc wsch_hub_desc_defaults(const wsch_hub_desc *desc) {
    wsch_hub_desc d;
    wsch__desc_copy(&d, desc, sizeof d);
    if (!d.path) d.path = WSCH_HUB_DEFAULT_PATH;
    d.max_peers = wsch__or(d.max_peers, WSCH_HUB_DEFAULT_MAX_PEERS);
    d.max_channels_per_peer = wsch__or(d.max_channels_per_peer, WSCH_HUB_DEFAULT_MAX_CHANNELS_PER_PEER);
    d.max_channel_len = wsch__or(d.max_channel_len, WSCH_HUB_DEFAULT_MAX_CHANNEL_LEN);
    d.max_user_id_len = wsch__or(d.max_user_id_len, WSCH_HUB_DEFAULT_MAX_USER_ID_LEN);
    d.max_token_len = wsch__or(d.max_token_len, WSCH_HUB_DEFAULT_MAX_TOKEN_LEN);
    if (!d.idle_timeout_ms) d.idle_timeout_ms = WSCH_HUB_DEFAULT_IDLE_TIMEOUT_MS;
    if (!d.history_ttl_ms) d.history_ttl_ms = WSCH_HUB_DEFAULT_HISTORY_TTL_MS;
    d.history_max_bytes = wsch__or(d.history_max_bytes, WSCH_HUB_DEFAULT_HISTORY_MAX_BYTES);
    if (!d.session_ttl_ms) d.session_ttl_ms = WSCH_HUB_DEFAULT_SESSION_TTL_MS;
    d.max_sessions = wsch__or(d.max_sessions, d.max_peers);
    d.presence_max_members = wsch__or(d.presence_max_members, WSCH_HUB_DEFAULT_PRESENCE_MAX_MEMBERS);
    if (!d.presence_stats_interval_ms) d.presence_stats_interval_ms = WSCH_HUB_DEFAULT_PRESENCE_STATS_MS;
    d.max_presence_info_len = wsch__or(d.max_presence_info_len, WSCH_HUB_DEFAULT_MAX_PRESENCE_INFO_LEN);
    if (!d.presence_ttl_ms) d.presence_ttl_ms = WSCH_HUB_DEFAULT_PRESENCE_TTL_MS;
    /* The hub's own defaults; a frame may be as large as a message. */
    if (!d.limits.max_message_size) d.limits.max_message_size = WSCH_HUB_DEFAULT_MAX_MESSAGE_SIZE;
    if (!d.limits.max_frame_size) d.limits.max_frame_size = d.limits.max_message_size;
    if (!d.limits.max_outbound_bytes) d.limits.max_outbound_bytes = WSCH_HUB_DEFAULT_MAX_OUTBOUND_BYTES;
    {   /* the rest as any connection has them */
        wsch_conn_desc cd;
        WSCH_MEMSET(&cd, 0, sizeof cd);
        cd.limits = d.limits;
        d.limits = wsch_conn_desc_defaults(&cd).limits;
    }
    return d;
}

WSCH_API int wsch_hub_create(const wsch_hub_desc *desc, wsch_hub **out) {
    wsch_hub_desc d;
    wsch_hub *hub;
    unsigned char seed[16];
    if (!out) return WSCH_ERR_ARG;
    *out = NULL;
    d = wsch_hub_desc_defaults(desc);
    if (d.deflate.codec && !wsch__pmd_desc_ok(&d.deflate)) return WSCH_ERR_ARG;
    if (d.path[0] != '/' || d.max_channel_len > WSCH_HUB_MAX_CHANNEL_LEN || d.max_channels_per_peer > 0xFFFFu ||
        d.max_peers > 0xFFFFFFF0u || d.max_user_id_len > 0xFFFFu || d.max_token_len > ((size_t)-1 - 16u) / 2u)
        return WSCH_ERR_ARG;
    /* History needs ages (now_ms) and epochs a restarted process does not repeat (random_bytes). */
    if (d.history_size && (d.history_size > (1u << 30) || !d.effects.now_ms || !d.effects.random_bytes))
        return WSCH_ERR_ARG;
    if (d.positions && !d.effects.random_bytes) return WSCH_ERR_ARG;
    if (d.bridge.subscribe || d.bridge.unsubscribe || d.bridge.publish) {
        /* Without randomness two hubs could share an origin id and skip each other's messages. */
        if (!d.bridge.subscribe || !d.bridge.unsubscribe || !d.bridge.publish || !d.effects.random_bytes)
            return WSCH_ERR_ARG;
    }
    if (!d.bridge.append != !d.bridge.fetch || (d.bridge.append && !d.bridge.publish)) return WSCH_ERR_ARG;
    if (d.presence && d.bridge.publish && !d.effects.now_ms) return WSCH_ERR_ARG;  /* ages of the others' members */
    hub = (wsch_hub *)wsch__alloc(&d.allocator, sizeof *hub);
    if (!hub) return WSCH_ERR_NOMEM;
    WSCH_MEMSET(hub, 0, sizeof *hub);
    hub->desc = d;
    {   /* One allocation for both scratch buffers and the desc's strings,
           copied so the desc need not outlive this call. */
        size_t path_len = WSCH_STRLEN(d.path), sub_len = wsch__cstr_len(d.subprotocol, WSCH_CSTR);
        size_t scratch = 2u * d.max_token_len + 16u;
        if (path_len > (size_t)-1 / 2u - scratch - sub_len) {
            wsch__free(&d.allocator, hub);
            return WSCH_ERR_NOMEM;
        }
        hub->token_buf = (char *)wsch__alloc(&d.allocator, scratch + path_len + 1u + sub_len + 1u);
        if (!hub->token_buf) {
            wsch__free(&d.allocator, hub);
            return WSCH_ERR_NOMEM;
        }
        hub->proto_buf = hub->token_buf + d.max_token_len + 1u;
        hub->desc.path = hub->token_buf + scratch;
        WSCH_MEMCPY(hub->token_buf + scratch, d.path, path_len + 1u);
        if (d.subprotocol) {
            hub->desc.subprotocol = hub->token_buf + scratch + path_len + 1u;
            WSCH_MEMCPY(hub->token_buf + scratch + path_len + 1u, d.subprotocol, sub_len + 1u);
        }
    }
    WSCH_MEMSET(seed, 0x5a, sizeof seed);
    if (d.effects.random_bytes) d.effects.random_bytes(seed, sizeof seed, d.user);
    WSCH_MEMCPY(&hub->hash_key[0], seed, 8);
    WSCH_MEMCPY(&hub->hash_key[1], seed + 8, 8);
    if (d.bridge.publish) {
        hub->bridged = 1;
        d.effects.random_bytes(&hub->origin, sizeof hub->origin, d.user);
    }
    hub->positioned = d.history_size || d.positions;
    hub->shared = d.bridge.append && d.history_size;
    if (hub->positioned) d.effects.random_bytes(&hub->epoch_key, sizeof hub->epoch_key, d.user);

    {   /* in wsch_effects order: send, close, timer_set, timer_cancel, now_ms,
           random_bytes, log, connect, send_gather, flush_later; each
           forwards to the peer's own, or (flush_later) lists the peer for
           wsch_hub_flush() */
        static const wsch_effects via_peer = {wsch__hub_t_send, wsch__hub_t_close, wsch__hub_t_timer_set,
                                              wsch__hub_t_timer_cancel, NULL, NULL, NULL, NULL,
                                              wsch__hub_t_send_gather, wsch__hub_t_flush_later};
        wsch__conn_desc_for(&hub->conn_desc, WSCH_ROLE_SERVER, &d.limits, &d.allocator, &via_peer);
    }
    if (!d.gather) hub->conn_desc.effects.flush_later = NULL;
    if (!hub->conn_desc.limits.outbound_budget) hub->conn_desc.limits.outbound_budget = &hub->own_budget;
    hub->conn_desc.deflate = d.deflate;
    hub->conn_desc.deflate.server_no_context_takeover = 1;
    hub->conn_desc.deflate.client_no_context_takeover = 1;
    hub->conn_desc.on_request = wsch__hub_on_request;
    hub->conn_desc.on_open = wsch__hub_on_open;
    hub->conn_desc.on_message = wsch__hub_on_message;
    hub->conn_desc.on_close = wsch__hub_on_close;
    *out = hub;
    return WSCH_OK;
}

WSCH__PRIVATE void wsch__hub_free_table(wsch_hub *hub, wsch__hub_table *t, int channels) {
    size_t i;
    for (i = 0; i < t->nbuckets; i++) {
        wsch__hub_entry *e = t->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            if (channels) {
                wsch__hub_members_free(hub, (wsch__hub_channel *)(void *)e);
                wsch__free(&hub->desc.allocator, ((wsch__hub_channel *)(void *)e)->subs);
                wsch__free(&hub->desc.allocator, ((wsch__hub_channel *)(void *)e)->ring);
            }
            wsch__free(&hub->desc.allocator, e);
        }
    }
    wsch__free(&hub->desc.allocator, t->buckets);
    t->buckets = NULL;
    t->nbuckets = t->count = 0;
}

WSCH_API void wsch_hub_destroy(wsch_hub *hub) {
    uint32_t i;
    wsch_allocator a;
    if (!hub) return;
    a = hub->desc.allocator;
    hub->destroying = 1;
    for (i = 0; i < hub->nslots; i++) {
        if (hub->slots[i].peer) wsch__hub_free_peer(hub, hub->slots[i].peer);
    }
    hub->depth = 1;
    wsch__hub_leave(hub);       /* frees anything released but not yet freed */
    hub->pdirty = hub->pwait = NULL;    /* the channels go all at once: no list to keep */
    while (hub->oldest) wsch__hub_hist_pop(hub, hub->oldest->ch);
    wsch__hub_free_table(hub, &hub->channels, 1);
    wsch__hub_free_table(hub, &hub->users, 0);
    wsch__hub_free_table(hub, &hub->sessions, 0);
    wsch__free(&a, hub->slots);
    wsch__free(&a, hub->token_buf);
    wsch__free(&a, hub->bridge_buf);
    wsch__free(&a, hub->waits);
    wsch__free(&a, hub->pbuf);
    if (hub->deflater) hub->desc.deflate.codec->destroy(hub->deflater, hub->desc.deflate.codec->user);
    wsch_budget_free_spares(hub->conn_desc.limits.outbound_budget, &hub->conn_desc.allocator);
    wsch__free(&a, hub);
}

WSCH_API int wsch_hub_accept(wsch_hub *hub, const wsch_effects *effects, void *user, wsch_hub_peer *out) {
    const wsch_effects *t;
    wsch__hub_peer *cl;
    uint32_t idx;
    int r;
    if (!hub || !out) return WSCH_ERR_ARG;
    out->index = out->gen = 0;
    t = effects ? effects : &hub->desc.effects;
    if (!t->send || !t->close) return WSCH_ERR_ARG;
    if (hub->shutting_down) return WSCH_ERR_STATE;
    if (hub->peers >= hub->desc.max_peers) {
        hub->drops[WSCH_HUB_DROP_FULL]++;
        return WSCH_ERR_LIMIT;
    }
    if (!hub->free_head && hub->nslots == hub->slots_cap) {
        size_t cap = hub->slots_cap;
        void *arr = hub->slots;
        if (wsch__hub_grow(hub, &arr, hub->nslots, &cap, sizeof(wsch__hub_slot), 16, hub->desc.max_peers) != WSCH_OK)
            return WSCH_ERR_NOMEM;
        hub->slots = (wsch__hub_slot *)arr;
        hub->slots_cap = (uint32_t)cap;
    }
    cl = (wsch__hub_peer *)wsch__alloc(&hub->desc.allocator, sizeof *cl);
    if (!cl) return WSCH_ERR_NOMEM;
    WSCH_MEMSET(cl, 0, sizeof *cl);
    cl->hub = hub;
    cl->effects = t;
    cl->user = user;
    cl->state = WSCH__HUB_HANDSHAKE;
    if (hub->free_head) {
        idx = hub->free_head - 1u;
    } else {
        idx = hub->nslots;
        hub->slots[idx].gen = 1;
        hub->slots[idx].peer = NULL;
        hub->slots[idx].link = 0;
    }
    cl->index = idx;
    wsch__hub_enter(hub);
    r = wsch_conn_create(&hub->conn_desc, cl, &cl->conn);
    if (r != WSCH_OK) {
        wsch__free(&hub->desc.allocator, cl);
        wsch__hub_leave(hub);
        return r;
    }
    if (hub->free_head) {
        hub->free_head = hub->slots[idx].link;
        hub->slots[idx].link = 0;
    } else {
        hub->nslots++;
    }
    hub->slots[idx].peer = cl;
    hub->peers++;
    hub->accepted++;
    *out = wsch__hub_handle(hub, cl);
    wsch__hub_leave(hub);
    return WSCH_OK;
}

WSCH_API int wsch_hub_feed(wsch_hub *hub, wsch_hub_peer peer, void *data, size_t len) {
    wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    int r;
    if (!cl) return WSCH_ERR_STALE;
    if (cl->state == WSCH__HUB_OPEN && len) {
        cl->flags = (uint16_t)(cl->flags & ~WSCH__HUB_PINGED);
        if (hub->desc.effects.now_ms) cl->last_in_ms = (uint32_t)hub->desc.effects.now_ms(hub->desc.user);
        else if (cl->flags & WSCH__HUB_IDLE_ARMED) wsch__hub_idle_arm(hub, cl, hub->desc.idle_timeout_ms);
    }
    wsch__hub_enter(hub);
    r = wsch_conn_feed(cl->conn, data, len);
    wsch__hub_leave(hub);
    return r;
}

WSCH_API int wsch_hub_writable(wsch_hub *hub, wsch_hub_peer peer) {
    wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    int r;
    if (!cl) return WSCH_ERR_STALE;
    wsch__hub_enter(hub);
    r = wsch__hub_write(hub, cl);
    wsch__hub_leave(hub);
    return r;
}

WSCH_API int wsch_hub_timer_fired(wsch_hub *hub, wsch_hub_peer peer, unsigned timer_id) {
    wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    if (!cl) return WSCH_ERR_STALE;
    wsch__hub_enter(hub);
    if (timer_id != WSCH_HUB_TIMER_IDLE) {
        wsch_conn_timer_fired(cl->conn, timer_id);
    } else if (cl->flags & WSCH__HUB_IDLE_ARMED) {
        cl->flags = (uint16_t)(cl->flags & ~WSCH__HUB_IDLE_ARMED);
        if (cl->state == WSCH__HUB_OPEN) {
            uint32_t idle;
            if (hub->desc.effects.now_ms) {
                idle = (uint32_t)hub->desc.effects.now_ms(hub->desc.user) - cl->last_in_ms;
            } else {
                idle = hub->desc.idle_timeout_ms;   /* re-armed on every read: it really expired */
            }
            if (idle >= hub->desc.idle_timeout_ms) {
                wsch__hub_drop(hub, cl, WSCH_HUB_DROP_IDLE);
            } else {
                uint32_t ping = wsch__hub_ping_interval(hub);
                if (ping && idle >= ping && !(cl->flags & WSCH__HUB_PINGED)) {
                    cl->flags |= WSCH__HUB_PINGED;      /* once per silence: its pong clears it */
                    (void)wsch_conn_ping(cl->conn, NULL, 0);
                }
                if (cl->state == WSCH__HUB_OPEN) wsch__hub_idle_rearm(hub, cl, idle);
            }
        }
    }
    wsch__hub_leave(hub);
    return WSCH_OK;
}

WSCH_API int wsch_hub_transport_closed(wsch_hub *hub, wsch_hub_peer peer) {
    wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    if (!cl) return WSCH_ERR_STALE;
    if (cl->flags & WSCH__HUB_GIVEN_BACK) return WSCH_OK;  /* from inside its close(): nothing left */
    wsch__hub_enter(hub);
    wsch_conn_transport_closed(cl->conn);   /* on_close, then close(): the peer is released */
    wsch__hub_leave(hub);
    return WSCH_OK;
}

/* Shared front half of broadcast / send_to_user / send. */
WSCH__PRIVATE int wsch__hub_prepare(wsch_hub *hub, const char *type, const char *payload, size_t payload_len,
                                    wsch_shared **s, size_t *env_len) {
    if (!hub || !type) return WSCH_ERR_ARG;
    payload_len = wsch__cstr_len(payload, payload_len);
    return wsch__hub_encode(hub, type, WSCH_STRLEN(type), payload, payload_len, NULL, 0, s, env_len);
}

WSCH_API int wsch_hub_broadcast(wsch_hub *hub, const char *channel, const char *type, const char *payload,
                                size_t payload_len, size_t *delivered) {
    size_t len;
    if (delivered) *delivered = 0;
    if (!hub || !channel || !type) return WSCH_ERR_ARG;
    len = WSCH_STRLEN(channel);
    if (!wsch__hub_channel_ok(hub, channel, len)) return WSCH_ERR_ARG;
    return wsch__hub_publish(hub, channel, len, type, WSCH_STRLEN(type), payload, wsch__cstr_len(payload, payload_len),
                             1, delivered);
}

/* Encode once, hand to the bridge, deliver to the user's local connections. */
WSCH_API int wsch_hub_send_to_user(wsch_hub *hub, const char *user_id, const char *type, const char *payload,
                                   size_t payload_len, size_t *delivered) {
    wsch_shared *s;
    wsch__hub_user *u;
    size_t n = 0, len, env_len = 0;
    int r;
    if (delivered) *delivered = 0;
    if (!hub || !user_id) return WSCH_ERR_ARG;
    len = WSCH_STRLEN(user_id);
    r = wsch__hub_prepare(hub, type, payload, payload_len, &s, &env_len);
    if (r != WSCH_OK) return r;
    wsch__hub_enter(hub);
    /* Other hubs first: the bridge only copies, local delivery may take a
       while. No hub has a user id that is empty or past the limit. */
    if (hub->bridged && len > 0 && len <= hub->desc.max_user_id_len)
        wsch__hub_bridge_publish(hub, WSCH_HUB_BRIDGE_USER_PREFIX, WSCH__HUB_UPFX_LEN, user_id, len,
                                 WSCH__HUB_BRIDGE_MAGIC, wsch_shared_payload(s), env_len);
    u = wsch__hub_user_find(hub, user_id, len);
    if (u) n = wsch__hub_deliver_user(hub, u, s);
    wsch_shared_release(s);
    wsch__hub_leave(hub);
    if (delivered) *delivered = n;
    return WSCH_OK;
}

WSCH_API int wsch_hub_send(wsch_hub *hub, wsch_hub_peer peer, const char *type, const char *payload,
                           size_t payload_len) {
    wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    int r;
    if (!cl) return WSCH_ERR_STALE;
    if (!type) return WSCH_ERR_ARG;
    wsch__hub_enter(hub);
    payload_len = wsch__cstr_len(payload, payload_len);
    r = wsch__hub_send_one(hub, cl, type, payload, payload_len);
    wsch__hub_leave(hub);
    return r;
}

/* Looks up an open peer and checks a channel name for the calls below. */
WSCH__PRIVATE int wsch__hub_sub_args(wsch_hub *hub, wsch_hub_peer peer, const char *channel,
                                     wsch__hub_peer **cl) {
    *cl = wsch__hub_get(hub, peer);
    if (!*cl) return WSCH_ERR_STALE;
    if (!channel || !wsch__hub_channel_ok(hub, channel, WSCH_STRLEN(channel))) return WSCH_ERR_ARG;
    if ((*cl)->state != WSCH__HUB_OPEN) return WSCH_ERR_STATE;
    return WSCH_OK;
}

WSCH_API int wsch_hub_subscribe(wsch_hub *hub, wsch_hub_peer peer, const char *channel) {
    wsch__hub_peer *cl;
    int r = wsch__hub_sub_args(hub, peer, channel, &cl);
    if (r != WSCH_OK) return r;
    return wsch__hub_sub_add(hub, cl, channel, WSCH_STRLEN(channel), 0, 0, NULL, 0);
}

WSCH_API int wsch_hub_unsubscribe(wsch_hub *hub, wsch_hub_peer peer, const char *channel) {
    wsch__hub_peer *cl;
    wsch__hub_channel *ch;
    int k, r = wsch__hub_sub_args(hub, peer, channel, &cl);
    if (r != WSCH_OK) return r;
    ch = wsch__hub_channel_find(hub, channel, WSCH_STRLEN(channel));
    k = ch ? wsch__hub_sub_index(cl, ch) : -1;
    if (k >= 0) wsch__hub_sub_remove(hub, cl, k);
    return WSCH_OK;
}

WSCH_API int wsch_hub_is_subscribed(const wsch_hub *hub, wsch_hub_peer peer, const char *channel) {
    const wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    const wsch__hub_channel *ch;
    if (!cl || !channel) return 0;
    ch = wsch__hub_channel_find(hub, channel, WSCH_STRLEN(channel));
    return ch && wsch__hub_sub_index(cl, ch) >= 0;
}

WSCH_API size_t wsch_hub_channel_size(const wsch_hub *hub, const char *channel) {
    const wsch__hub_channel *ch;
    if (!hub || !channel) return 0;
    ch = wsch__hub_channel_find(hub, channel, WSCH_STRLEN(channel));
    return ch ? ch->count : 0;
}

WSCH_API size_t wsch_hub_user_connections(const wsch_hub *hub, const char *user_id) {
    const wsch__hub_user *u;
    const wsch__hub_peer *cl;
    size_t n = 0;
    if (!hub || !user_id) return 0;
    u = wsch__hub_user_find(hub, user_id, WSCH_STRLEN(user_id));
    for (cl = u ? u->first : NULL; cl; cl = cl->user_next) n += cl->state == WSCH__HUB_OPEN;
    return n;
}

WSCH_API int wsch_hub_peer_close(wsch_hub *hub, wsch_hub_peer peer, uint16_t code, const char *reason,
                                 size_t reason_len) {
    wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    int r;
    if (!cl) return WSCH_ERR_STALE;
    wsch__hub_enter(hub);
    r = wsch__hub_close(hub, cl, code, reason, reason_len);
    wsch__hub_leave(hub);
    return r;
}

WSCH_API unsigned wsch_hub_peer_want(const wsch_hub *hub, wsch_hub_peer peer) {
    const wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    return cl && !(cl->flags & WSCH__HUB_GIVEN_BACK) ? wsch_conn_want(cl->conn) : 0;
}

WSCH_API int wsch_hub_peer_valid(const wsch_hub *hub, wsch_hub_peer peer) {
    return wsch__hub_get(hub, peer) != NULL;
}

WSCH_API int wsch_hub_peer_user_id(const wsch_hub *hub, wsch_hub_peer peer, wsch_str *user_id) {
    const wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    if (user_id) {
        user_id->ptr = "";
        user_id->len = 0;
    }
    if (!cl) return WSCH_ERR_STALE;
    if (user_id) *user_id = wsch__hub_user_id(cl);
    return WSCH_OK;
}

WSCH_API void *wsch_hub_peer_user(const wsch_hub *hub, wsch_hub_peer peer) {
    const wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    return cl ? cl->user : NULL;
}

WSCH_API wsch_state wsch_hub_peer_state(const wsch_hub *hub, wsch_hub_peer peer) {
    const wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    return cl ? wsch_conn_state(cl->conn) : WSCH_STATE_CLOSED;
}

WSCH_API size_t wsch_hub_peer_queued_bytes(const wsch_hub *hub, wsch_hub_peer peer) {
    const wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    return cl ? wsch_conn_queued_bytes(cl->conn) : 0;
}

WSCH_API void wsch_hub_shutdown(wsch_hub *hub) {
    uint32_t i;
    if (!hub) return;
    hub->shutting_down = 1;
    wsch__hub_enter(hub);
    for (i = 0; i < hub->nslots; i++) {
        wsch__hub_peer *cl = hub->slots[i].peer;
        if (cl && (cl->state == WSCH__HUB_OPEN || cl->state == WSCH__HUB_HANDSHAKE))
            (void)wsch__hub_close(hub, cl, WSCH_CLOSE_GOING_AWAY, "Server shutting down", WSCH_CSTR);
    }
    wsch__hub_leave(hub);
}

WSCH_API int wsch_hub_bridge_deliver(wsch_hub *hub, const char *name, size_t name_len, const void *data,
                                     size_t data_len, size_t *delivered) {
    const char *d = (const char *)data;
    const char *id = NULL;
    size_t id_len = 0, n = 0;
    uint64_t origin = 0;
    wsch_envelope env;
    wsch_shared *s;
    int r;
    if (delivered) *delivered = 0;
    if (!hub || (!name && name_len) || (!data && data_len)) return WSCH_ERR_ARG;
    if (!hub->bridged) return WSCH_ERR_STATE;
    if (data_len >= 6u && WSCH_MEMCMP(d, WSCH__HUB_PRESENCE_MAGIC, 6) == 0) {
        wsch_str body;
        r = wsch__hub_channel_ok(hub, name, name_len) ? wsch__hub_presence_header(d, data_len, &origin) : WSCH_ERR_ARG;
        if (r == WSCH_OK && origin == hub->origin) {
            hub->bridge_own++;
            return WSCH_OK;
        }
        body.ptr = d + WSCH_HUB_BRIDGE_HEADER_LEN;
        body.len = data_len - WSCH_HUB_BRIDGE_HEADER_LEN;
        wsch__hub_enter(hub);
        if (r == WSCH_OK) r = wsch__hub_presence_in(hub, name, name_len, origin, body);
        wsch__hub_leave(hub);
        if (r != WSCH_OK && r != WSCH_ERR_NOMEM) hub->bridge_refused++;
        return r;
    }
    if (name_len >= WSCH__HUB_UPFX_LEN && WSCH_MEMCMP(name, WSCH_HUB_BRIDGE_USER_PREFIX, WSCH__HUB_UPFX_LEN) == 0) {
        id = name + WSCH__HUB_UPFX_LEN;
        id_len = name_len - WSCH__HUB_UPFX_LEN;
        r = id_len >= 1 && id_len <= hub->desc.max_user_id_len ? WSCH_OK : WSCH_ERR_ARG;
    } else {
        r = wsch__hub_channel_ok(hub, name, name_len) ? WSCH_OK : WSCH_ERR_ARG;
    }
    if (r == WSCH_OK && !id && hub->shared) {
        /* Numbered by the bridge: this hub's own come back to be delivered too. */
        uint64_t offset = 0, epoch = 0;
        r = wsch__hub_bridge_parse(hub, d, data_len, &origin, &env, &offset, &epoch);
        if (r == WSCH_OK) r = wsch__hub_take(hub, name, name_len, &env, offset, epoch, delivered);
        if (r == WSCH_OK) hub->bridge_received++;
        else if (r != WSCH_ERR_NOMEM) hub->bridge_refused++;
        return r;
    }
    if (r == WSCH_OK) r = wsch__hub_bridge_header(d, data_len, &origin);
    if (r == WSCH_OK && origin == hub->origin) {
        hub->bridge_own++;      /* delivered here when it was sent */
        return WSCH_OK;
    }
    if (r == WSCH_OK) r = wsch__hub_bridge_parse(hub, d, data_len, &origin, &env, NULL, NULL);
    /* Re-encoded, so what peers get is exactly what a local broadcast sends
       (with this hub's own position for the channel). */
    if (r == WSCH_OK && !id) {
        r = wsch__hub_publish(hub, name, name_len, env.type, env.type_len, env.payload.ptr, env.payload.len, 0, delivered);
        if (r == WSCH_OK) hub->bridge_received++;
        else if (r != WSCH_ERR_NOMEM) hub->bridge_refused++;
        return r;
    }
    if (r == WSCH_OK) r = wsch__hub_encode(hub, env.type, env.type_len, env.payload.ptr, env.payload.len, NULL, 0, &s, NULL);
    if (r != WSCH_OK) {
        if (r != WSCH_ERR_NOMEM) hub->bridge_refused++;
        return r;
    }
    hub->bridge_received++;
    wsch__hub_enter(hub);
    {
        wsch__hub_user *u = wsch__hub_user_find(hub, id, id_len);
        if (u) n = wsch__hub_deliver_user(hub, u, s);
    }
    wsch_shared_release(s);
    wsch__hub_leave(hub);
    if (delivered) *delivered = n;
    return WSCH_OK;
}

WSCH_API void wsch_hub_bridge_resubscribe(wsch_hub *hub) {
    size_t i;
    if (!hub || !hub->bridged) return;
    if (hub->desc.presence) {
        /* Presence said meanwhile may be lost both ways: every channel asks
           the others for theirs and says its own again at the next flush. */
        for (i = 0; i < hub->channels.nbuckets; i++) {
            wsch__hub_entry *e;
            for (e = hub->channels.buckets[i]; e; e = e->next) {
                wsch__hub_channel *ch = (wsch__hub_channel *)(void *)e;
                ch->psync = ch->prefresh = 1;
                if (ch->plist != WSCH__HUB_PLIST_DIRTY) wsch__hub_plist_push(hub, ch, WSCH__HUB_PLIST_DIRTY);
            }
        }
    }
    if (hub->shared) {
        /* Messages may have gone by unseen: every channel's position is
           checked again, and live subscribers get what they missed. */
        for (i = 0; i < hub->channels.nbuckets; i++) {
            wsch__hub_entry *e;
            for (e = hub->channels.buckets[i]; e; e = e->next) {
                wsch__hub_channel *ch = (wsch__hub_channel *)(void *)e;
                wsch__hub_interest(hub, e, 0, 1);
                ch->synced = 0;
                /* Refused: the next message's gap, or the next subscribe, asks again. */
                if (ch->count) (void)wsch__hub_fetch_ask(hub, ch);
            }
        }
        for (i = 0; i < hub->users.nbuckets; i++) {
            const wsch__hub_entry *e;
            for (e = hub->users.buckets[i]; e; e = e->next) wsch__hub_interest(hub, e, 1, 1);
        }
        return;
    }
    /* Messages may have gone by unseen: no recovery may span the outage. */
    while (hub->oldest) {
        wsch__hub_channel *ch = hub->oldest->ch;
        wsch__hub_hist_pop(hub, ch);
        wsch__hub_channel_release(hub, ch);
    }
    for (i = 0; i < hub->channels.nbuckets; i++) {
        wsch__hub_entry *e;
        for (e = hub->channels.buckets[i]; e; e = e->next) {
            if (hub->positioned) ((wsch__hub_channel *)(void *)e)->epoch = wsch__hub_mix(hub->epoch_key + hub->epochs++);
            wsch__hub_interest(hub, e, 0, 1);
        }
    }
    for (i = 0; i < hub->users.nbuckets; i++) {
        const wsch__hub_entry *e;
        for (e = hub->users.buckets[i]; e; e = e->next) wsch__hub_interest(hub, e, 1, 1);
    }
}

WSCH_API void wsch_hub_bridge_appended(wsch_hub *hub, uint64_t ticket, int status) {
    wsch__hub_wait w;
    wsch__hub_peer *cl;
    size_t i;
    if (!hub || !hub->shared) return;
    if (status == WSCH_OK) hub->bridge_appended++;
    else hub->bridge_append_errors++;
    for (i = hub->whead; i < hub->nwaits && hub->waits[i].ticket != ticket; i++) {}
    if (!ticket || i == hub->nwaits) return;        /* a plain broadcast's */
    w = hub->waits[i];
    hub->waits[i].ticket = 0;
    while (hub->whead < hub->nwaits && hub->waits[hub->whead].ticket == 0) hub->whead++;
    if (hub->whead == hub->nwaits) hub->whead = hub->nwaits = 0;
    wsch__hub_enter(hub);
    if (w.sess) {
        /* Recorded even with the peer gone: a resend is answered, not applied again. */
        uint64_t back = w.sess->last_id - w.id;
        w.sess->waiting--;
        if (w.id > w.sess->last_id) wsch__hub_session_record(w.sess, w.id, status != WSCH_OK);
        else if (status != WSCH_OK && back < WSCH__HUB_WINDOW) w.sess->refused[back / 64u] |= (uint64_t)1u << (back % 64u);
        wsch__hub_session_put(hub, w.sess);
    }
    cl = wsch__hub_get(hub, w.peer);
    if (cl && cl->state == WSCH__HUB_OPEN) {
        if (status == WSCH_OK) wsch__hub_send_ack(hub, cl, w.id);
        else wsch__hub_send_error(hub, cl, "unconfirmed", "the bridge lost track of it: it may or may not have been published",
                                  NULL, NULL, 0, w.id);
    }
    wsch__hub_leave(hub);
}

WSCH_API int wsch_hub_bridge_fetched(wsch_hub *hub, const char *name, size_t name_len, int status,
                                     const char *epoch, uint64_t last_offset, const wsch_str *messages,
                                     size_t count) {
    wsch__hub_channel *ch;
    uint64_t e;
    int r = WSCH_OK;
    if (!hub || (!name && name_len) || (!messages && count)) return WSCH_ERR_ARG;
    if (!hub->shared) return WSCH_ERR_STATE;
    if (!wsch__hub_channel_ok(hub, name, name_len)) {
        hub->bridge_refused++;
        return WSCH_ERR_ARG;
    }
    ch = wsch__hub_channel_find(hub, name, name_len);
    if (!ch || !ch->fetching) return WSCH_OK;      /* nobody asked (any more) */
    if (status == WSCH_OK && ch->moved && epoch &&
        (!epoch[0] || (WSCH_STRLEN(epoch) == WSCH_HUB_EPOCH_LEN && wsch__hub_hex16(epoch, &e) && e != ch->epoch))) {
        /* Older than a message taken since it was asked: the fetch ran
           before the bridge began the epoch the channel follows now, and
           its answer came another way than that message (two links, say).
           Merged, it would take the channel back to a stream its
           subscribers have left, or to "nothing" (the new stream's
           messages would then look late). Asked again, the answer is at
           least as new as that message. */
        ch->fetching = 0;
        wsch__hub_enter(hub);
        wsch__hub_fetch(hub, ch);
        wsch__hub_leave(hub);
        return WSCH_OK;
    }
    wsch__hub_enter(hub);
    if (status == WSCH_OK) r = wsch__hub_merge(hub, ch, epoch, last_offset, messages, count);
    if (status != WSCH_OK || r != WSCH_OK) hub->bridge_fetch_errors++;
    if (r != WSCH_OK && r != WSCH_ERR_NOMEM) hub->bridge_refused++;
    wsch__hub_fetch_done(hub, ch, status == WSCH_OK && r == WSCH_OK);
    wsch__hub_leave(hub);
    return r;
}

WSCH_API int wsch_hub_refuse(wsch_hub *hub, wsch_hub_peer peer, const char *code, const char *message) {
    wsch__hub_peer *cl = wsch__hub_get(hub, peer);
    size_t code_len, message_len;
    if (!cl) return WSCH_ERR_STALE;
    if (!code || !message) return WSCH_ERR_ARG;
    code_len = WSCH_STRLEN(code);
    message_len = WSCH_STRLEN(message);
    if (code_len > 255u || message_len > 255u || !wsch_utf8_valid(code, code_len) ||
        !wsch_utf8_valid(message, message_len))
        return WSCH_ERR_ARG;
    if (cl->state != WSCH__HUB_OPEN) return WSCH_ERR_STATE;
    wsch__hub_enter(hub);
    if (hub->answering == cl) {
        /* Answered once: a second refusal (or one after the hub's own) adds nothing. */
        if (!hub->answered) wsch__hub_send_error(hub, cl, code, message, hub->answering_env, NULL, 0, hub->answering_id);
        hub->answered = 1;
    } else {
        wsch__hub_send_error(hub, cl, code, message, NULL, NULL, 0, 0);
    }
    wsch__hub_leave(hub);
    return WSCH_OK;
}

WSCH_API int wsch_hub_channel_position(const wsch_hub *hub, const char *channel, wsch_hub_position *out) {
    const wsch__hub_channel *ch;
    if (!hub || !channel || !out) return WSCH_ERR_ARG;
    WSCH_MEMSET(out, 0, sizeof *out);
    if (!hub->positioned) return WSCH_ERR_STATE;
    ch = wsch__hub_channel_find(hub, channel, WSCH_STRLEN(channel));
    if (!ch) return WSCH_ERR_NOT_FOUND;
    out->offset = ch->offset;
    wsch__hub_epoch_hex(ch->epoch, out->epoch);
    out->kept = ch->kept;
    out->first_kept = ch->kept ? wsch__hub_first_kept(ch) : 0u;
    return WSCH_OK;
}

/* How often a hub says its users again over the bridge. */
WSCH__PRIVATE uint32_t wsch__hub_presence_refresh_ms(const wsch_hub *hub) {
    uint32_t r = hub->desc.presence_ttl_ms / 3u;
    return r ? r : 1u;
}

/* wsch_hub_flush()'s presence work: the changed channels' messages. */
WSCH__PRIVATE uint32_t wsch__hub_presence_flush(wsch_hub *hub) {
    uint32_t now, wait = 0;
    now = hub->desc.effects.now_ms ? wsch__hub_now(hub) : 0u;
    wsch__hub_enter(hub);
    if (hub->bridged && !hub->prefresh_armed) {
        hub->prefresh_at_ms = now + wsch__hub_presence_refresh_ms(hub);
        hub->prefresh_armed = 1;
    }
    if (hub->bridged && (int32_t)(now - hub->prefresh_at_ms) >= 0) {
        /* Every presence_ttl_ms / 3: this hub's users said again, the other
           hubs' ones not said for presence_ttl_ms forgotten. */
        size_t i;
        for (i = 0; i < hub->channels.nbuckets; i++) {
            wsch__hub_entry *e;
            for (e = hub->channels.buckets[i]; e; e = e->next) {
                wsch__hub_channel *ch = (wsch__hub_channel *)(void *)e;
                if (ch->remote.count) wsch__hub_remote_sweep(hub, ch, now);
                if (ch->local_users) {
                    ch->prefresh = 1;
                    if (ch->plist != WSCH__HUB_PLIST_DIRTY) wsch__hub_plist_push(hub, ch, WSCH__HUB_PLIST_DIRTY);
                }
            }
        }
        hub->prefresh_at_ms = now + wsch__hub_presence_refresh_ms(hub);
    }
    /* Counts held back are looked at again: those still early go back. */
    while (hub->pwait) wsch__hub_plist_push(hub, hub->pwait, WSCH__HUB_PLIST_DIRTY);
    /* A delivery may drop peers, which may change other channels (they join
       this list) or free them (they leave it): take one at a time. */
    while (hub->pdirty) {
        wsch__hub_channel *ch = hub->pdirty;
        uint32_t d;
        wsch__hub_plist_unlink(hub, ch);
        d = wsch__hub_presence_turn(hub, ch, now);
        if (d && (!wait || d < wait)) wait = d;
    }
    if (hub->pbuf_cap > WSCH__HUB_PBUF_KEEP) {
        /* A member list or a bridge batch made it large: not kept idle. */
        wsch__free(&hub->desc.allocator, hub->pbuf);
        hub->pbuf = NULL;
        hub->pbuf_cap = 0;
    }
    wsch__hub_leave(hub);
    if (hub->bridged) {
        uint32_t d = hub->prefresh_at_ms - now;
        if (!d) d = 1;
        if (!wait || d < wait) wait = d;
    }
    return wait;
}

WSCH_API uint32_t wsch_hub_flush(wsch_hub *hub) {
    uint32_t wait;
    if (!hub) return 0;
    wsch__hub_enter(hub);
    /* Writing may end peers (a close frame that was all they waited for),
       and their leaving changes presence: round again until neither waits. */
    do {
        wait = hub->desc.presence ? wsch__hub_presence_flush(hub) : 0u;
        wsch__hub_flush_peers(hub);
    } while (hub->pdirty);
    wsch__hub_leave(hub);
    return wait;
}

WSCH_API int wsch_hub_set_presence_info(wsch_hub *hub, wsch_hub_peer peer, const char *json, size_t len) {
    wsch__hub_peer *cl = hub ? wsch__hub_get(hub, peer) : NULL;
    char *copy = NULL;
    int r;
    if (!cl) return WSCH_ERR_STALE;
    if (!hub->desc.presence) return WSCH_ERR_STATE;
    if (!json) len = 0;
    if (len) {
        if (len > hub->desc.max_presence_info_len || len > 0xFFFFFFFFu) return WSCH_ERR_TOO_LARGE;
        r = wsch_json_validate(json, len);
        if (r != WSCH_OK) return r;
        copy = (char *)wsch__alloc(&hub->desc.allocator, len);
        if (!copy) return WSCH_ERR_NOMEM;
        WSCH_MEMCPY(copy, json, len);
    }
    wsch__free(&hub->desc.allocator, cl->info);
    cl->info = copy;
    cl->info_len = (uint32_t)len;
    return WSCH_OK;
}

WSCH_API int wsch_hub_presence_counts(const wsch_hub *hub, const char *channel, size_t *users,
                                      size_t *connections) {
    const wsch__hub_channel *ch;
    if (users) *users = 0;
    if (connections) *connections = 0;
    if (!hub || !channel) return WSCH_ERR_ARG;
    if (!hub->desc.presence) return WSCH_ERR_STATE;
    ch = wsch__hub_channel_find(hub, channel, WSCH_STRLEN(channel));
    if (ch && users) *users = ch->users;
    if (ch && connections) *connections = ch->member_conns;
    return WSCH_OK;
}

WSCH_API size_t wsch_hub_presence_each(const wsch_hub *hub, const char *channel, wsch_hub_member_fn fn, void *ctx) {
    const wsch__hub_channel *ch;
    size_t i, calls = 0;
    if (!hub || !channel || !fn || !hub->desc.presence) return 0;
    ch = wsch__hub_channel_find(hub, channel, WSCH_STRLEN(channel));
    if (!ch) return 0;
    for (i = 0; i < ch->members.nbuckets; i++) {
        const wsch__hub_entry *e;
        for (e = ch->members.buckets[i]; e; e = e->next) {
            const wsch__hub_member *m = (const wsch__hub_member *)(const void *)e;
            wsch_str id, info;
            if (!WSCH__HUB_PRESENT(m)) continue;
            id.ptr = m->e.key;
            id.len = m->e.key_len;
            info.ptr = m->info_len ? WSCH__HUB_MEMBER_INFO(m) : "";
            info.len = m->info_len;
            calls++;
            if (fn(id, (size_t)(m->conns + m->rconns), info, ctx)) return calls;
        }
    }
    return calls;
}

WSCH_API void wsch_hub_stats(const wsch_hub *hub, wsch_hub_counters *out) {
    uint32_t i;
    if (!out) return;
    WSCH_MEMSET(out, 0, sizeof *out);
    if (!hub) return;
    out->peers = hub->peers;
    out->open = hub->open;
    out->users = hub->users.count;
    out->channels = hub->channels.count;
    out->subscriptions = hub->subscriptions;
    out->accepted = hub->accepted;
    out->messages_in = hub->messages_in;
    out->messages_out = hub->messages_out;
    out->encodes = hub->encodes;
    out->http_responses = hub->http_responses;
    for (i = 0; i < (uint32_t)WSCH_HUB_DROP_COUNT; i++) out->drops[i] = hub->drops[i];
    if (hub->bridged) out->bridge_channels = (uint64_t)(hub->channels.count + hub->users.count);
    out->bridge_published = hub->bridge_published;
    out->bridge_publish_errors = hub->bridge_publish_errors;
    out->bridge_received = hub->bridge_received;
    out->bridge_own = hub->bridge_own;
    out->bridge_refused = hub->bridge_refused;
    out->bridge_appended = hub->bridge_appended;
    out->bridge_append_errors = hub->bridge_append_errors;
    out->bridge_fetches = hub->bridge_fetches;
    out->bridge_fetch_errors = hub->bridge_fetch_errors;
    out->bridge_gaps = hub->bridge_gaps;
    out->history_messages = hub->history_messages;
    out->history_bytes = hub->history_bytes;
    out->replayed = hub->replayed;
    out->recovered = hub->recovered;
    out->not_recovered = hub->not_recovered;
    out->sessions = hub->sessions.count;
    out->acks = hub->acks;
    out->duplicates = hub->duplicates;
    out->presence_members = hub->presence_members;
    out->presence_messages = hub->presence_messages;
    out->flushed_peers = hub->flushed_peers;
    out->presence_sent = hub->presence_sent;
    out->presence_remote = hub->presence_remote;
    out->presence_in = hub->presence_in;
    out->presence_expired = hub->presence_expired;
    for (i = 0; i < hub->nslots; i++) {
        if (hub->slots[i].peer) out->bytes_queued += wsch_conn_queued_bytes(hub->slots[i].peer->conn);
    }
}
#endif /* WS_CHANNEL_NO_HUB */

// >>posix
#ifdef WS_CHANNEL_POSIX
/* The POSIX loop. Layout: platform selection, the clock and randomness,
   the backends (epoll, kqueue, poll) behind one small interface, timers
   (a min-heap), sockets (the records behind served conns, hub peers and
   client links: one read path, one write path, one close path), listeners,
   the hub and client attachments, signals and shutdown, then the turn. */

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <fcntl.h>
#include <unistd.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>

/* Which backends this platform has. WSCH_POSIX_EPOLL / WSCH_POSIX_KQUEUE
   (0 or 1) override the guess. */
#ifndef WSCH_POSIX_EPOLL
#if defined(__linux__)
#define WSCH_POSIX_EPOLL 1
#else
#define WSCH_POSIX_EPOLL 0
#endif
#endif
#ifndef WSCH_POSIX_KQUEUE
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || \
    defined(__DragonFly__)
#define WSCH_POSIX_KQUEUE 1
#else
#define WSCH_POSIX_KQUEUE 0
#endif
#endif
#if WSCH_POSIX_EPOLL
#include <sys/epoll.h>
#endif
#if WSCH_POSIX_KQUEUE
#include <sys/event.h>
#endif
/* getrandom(): Linux with glibc 2.25 or later (musl has it too, but says
   nothing of its version: /dev/urandom serves there). */
#define WSCH__PX_GETRANDOM 0
#if defined(__linux__) && defined(__GLIBC__) && defined(__GLIBC_MINOR__)
#if __GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 25)
#undef WSCH__PX_GETRANDOM
#define WSCH__PX_GETRANDOM 1
#include <sys/random.h>
#endif
#endif
/* arc4random_buf(): macOS and the BSDs, unless a _POSIX_C_SOURCE of the
   program's hides it there (then /dev/urandom, through the loop's pool). */
#if (defined(__APPLE__) && (!defined(_POSIX_C_SOURCE) || defined(_DARWIN_C_SOURCE))) || \
    ((defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || defined(__DragonFly__)) && \
     !defined(_POSIX_C_SOURCE))
#define WSCH__PX_ARC4RANDOM 1
#else
#define WSCH__PX_ARC4RANDOM 0
#endif
#ifdef MSG_NOSIGNAL
#define WSCH__PX_SEND_FLAGS MSG_NOSIGNAL
#else
#define WSCH__PX_SEND_FLAGS 0
#endif

#define WSCH__PX_POOL 512           /* random bytes drawn per system call */
#define WSCH__PX_ACCEPTS_PER_EVENT 64

// >>posix-clock
WSCH_API uint64_t wsch_posix_now_ms(void *user) {
    struct timespec ts;
    (void)user;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The system's randomness: WSCH_OK, or WSCH_ERR_STATE when it has none. */
WSCH__PRIVATE int wsch__px_sys_random(void *buf, size_t len) {
    unsigned char *p = (unsigned char *)buf;
#if WSCH__PX_ARC4RANDOM
    arc4random_buf(p, len);
    return WSCH_OK;
#else
    int fd;
#if WSCH__PX_GETRANDOM
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (!(n < 0 && errno == EINTR)) {
            break;              /* ENOSYS (an old kernel): the device */
        }
    }
    if (len == 0) return WSCH_OK;
#endif
    fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0) return WSCH_ERR_STATE;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (!(n < 0 && errno == EINTR)) {
            break;
        }
    }
    (void)close(fd);
    return len == 0 ? WSCH_OK : WSCH_ERR_STATE;
#endif
}

WSCH_API void wsch_posix_random_bytes(void *buf, size_t len, void *user) {
    (void)user;
    if (wsch__px_sys_random(buf, len) != WSCH_OK) {
        /* No source at all (a loop refuses to start so): the clock and a
           counter, through xorshift, so at least nothing repeats. */
        struct timespec a, b;
        unsigned char *p = (unsigned char *)buf;
        uint64_t x;
        size_t i;
        (void)clock_gettime(CLOCK_MONOTONIC, &a);
        (void)clock_gettime(CLOCK_REALTIME, &b);
        x = ((uint64_t)a.tv_nsec << 32) ^ (uint64_t)b.tv_nsec ^ ((uint64_t)b.tv_sec * 0x9E3779B97F4A7C15u) ^
            (uint64_t)(size_t)buf ^ len;
        x |= 1u;
        for (i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p[i] = (unsigned char)(x >> 24);
        }
    }
}

// >>posix-types
typedef struct wsch__px_io wsch__px_io;
typedef struct wsch__px_sock wsch__px_sock;
typedef struct wsch__px_serve wsch__px_serve;
typedef struct wsch__px_hub wsch__px_hub;
typedef struct wsch__px_client wsch__px_client;
typedef void (*wsch__px_io_fn)(wsch_posix_loop *loop, wsch__px_io *io, unsigned events);

/* A descriptor in the backend. Freed only at the end of a turn, so an
   event later in the same batch that names a closed one finds fd -1. */
struct wsch__px_io {
    int fd;                         /* -1 once closed */
    unsigned interest;              /* what the backend waits for now */
    int registered;                 /* in the backend (epoll, kqueue) or holding a slot (poll) */
    size_t slot;                    /* poll: index + 1 */
    wsch__px_io_fn fn;
};

enum { WSCH__PX_CONN = 1, WSCH__PX_PEER, WSCH__PX_LINK };
enum {
    WSCH__PX_S_CONNECTING = 1,      /* client: TCP connect in progress */
    WSCH__PX_S_HANDSHAKE,           /* the transport's handshake */
    WSCH__PX_S_READY,               /* bytes flow through the library */
    WSCH__PX_S_CLOSED               /* closed; freed at the end of the turn */
};

/* A socket the loop reads and writes for the library: a served conn, a hub
   peer or a client's link (one per connect attempt). */
struct wsch__px_sock {
    wsch__px_io io;
    wsch_posix_loop *loop;
    uint8_t kind, state;
    uint8_t dirty, pending, graved;
    uint8_t attached;               /* the library has it (conn created, peer accepted, link opened) */
    uint8_t write_wants_read;       /* the transport's write asked for readability */
    uint8_t read_wants_write;       /* ... and its read for writability (a renegotiation) */
    uint8_t touched;                /* wrote in this turn (on loop->touched) */
    uint8_t read_ended;             /* a read saw the end (EOF, reset): nothing left to discard */
    unsigned char *gbuf;            /* gathered bytes: [goff, goff + glen) of a gather block */
    size_t goff, glen;
    unsigned tls_want;              /* during the transport's handshake: what it waits for */
    const wsch_posix_transport *tr;
    void *tls;
    wsch__px_sock *prev, *next;     /* every sock of the loop */
    wsch__px_sock *next_dirty, *next_pending, *next_grave, *next_touched;
    wsch_posix_timer timer[3];      /* library timer ids 1, 2 and 16 (the link: its connect deadline) */
    void *obj;                      /* CONN: the wsch_conn; LINK: the wsch__px_client */
    void *owner;                    /* CONN: the wsch__px_serve; PEER: the wsch__px_hub */
    void *user;                     /* CONN: what its events get */
#ifndef WS_CHANNEL_NO_HUB
    wsch_hub_peer h;
#endif
};

struct wsch_posix_listener {
    wsch__px_io io;
    wsch_posix_loop *loop;
    uint16_t port;
    int dead;
    const wsch_posix_transport *tr;
    wsch__px_serve *serve;
    wsch__px_hub *hub;
    wsch_posix_listener *next;
};

struct wsch_posix_watch {
    wsch__px_io io;
    wsch_posix_loop *loop;
    int dead;
    int user_fd;
    wsch_posix_watch_fn fn;
    void *user;
    wsch_posix_watch *next;
};

#ifndef WS_CHANNEL_NO_CONN
struct wsch__px_serve {
    wsch_conn_desc desc;            /* what the conns borrow: the layer's effects and events */
    wsch_conn_desc app;             /* the caller's events */
    void *user;
    wsch__px_serve *next;
};
#endif

#ifndef WS_CHANNEL_NO_HUB
struct wsch__px_hub {
    wsch_hub *hub;
    size_t npeers;
    int dead;
    wsch__px_hub *next;
};
#endif

#ifndef WS_CHANNEL_NO_CLIENT
struct wsch__px_client {
    wsch_posix_loop *loop;
    wsch_client *client;
    wsch_client_desc app;           /* the caller's events and user */
    wsch_posix_client_opts opts;
    unsigned char addr[WSCH_POSIX_ADDR_MAX];
    wsch_posix_timer timer[5];      /* library ids 1, 2, 16, 17, 18 */
    wsch__px_sock *link;            /* the transport now, or NULL */
    unsigned char addrs[WSCH_POSIX_MAX_ADDRS][WSCH_POSIX_ADDR_MAX];
    size_t lens[WSCH_POSIX_MAX_ADDRS];
    size_t naddrs, next_addr;
    uint64_t connect_deadline;
    char host[256];
    int dead;
    wsch__px_client *prev, *next;
};
#endif

struct wsch_posix_loop {
    wsch_posix_loop_desc desc;
    int bfd;                        /* epoll or kqueue descriptor */
    void *events;                   /* epoll_event / kevent array */
    struct pollfd *pfd;             /* poll: the set, and its owners */
    wsch__px_io **pio;
    size_t npfd, cap_pfd, holes;
    size_t nio;                     /* descriptors held (max_fds) */
    size_t nsocks;
    wsch_posix_timer **heap;
    size_t nheap, cap_heap, reserved;
    uint64_t seq;
    unsigned char *buf;
    unsigned char pool[WSCH__PX_POOL];
    size_t pool_pos;
    int spare_fd;                   /* given up to shed a connection when out of descriptors */
    wsch__px_sock *socks, *dirty, *pending, *grave, *touched;
    unsigned char *gfree;           /* free gather blocks (each starts with the next's address) */
    size_t gblocks, gmax;           /* blocks made, and the most there may be */
    int in_turn;                    /* dispatching a turn's events and timers: sends may gather */
    wsch_posix_counters counters;
    wsch_posix_listener *listeners;
    wsch_posix_watch *watches;
#ifndef WS_CHANNEL_NO_CONN
    wsch__px_serve *serves;
#endif
#ifndef WS_CHANNEL_NO_HUB
    wsch__px_hub *hubs;
#endif
#ifndef WS_CHANNEL_NO_CLIENT
    wsch__px_client *clients;
#endif
    uint32_t flush_ms;              /* the hubs' last answer: 0, or a bound on the next wait */
    int stop, shutting, running;
    wsch_posix_timer shutdown_timer;
    /* signals */
    int sig_pipe[2];
    wsch__px_io sig_io;
    struct sigaction old_int, old_term, old_pipe;
};

/* The process's signal pipe: signals belong to the process, so this is the
   one piece of state outside any object (a write end, or -1). */
static volatile sig_atomic_t wsch__px_sig_fd = -1;

WSCH__PRIVATE void wsch__px_log(wsch_posix_loop *loop, const char *msg) {
    if (loop->desc.log) loop->desc.log(msg, loop->desc.user);
}

WSCH__PRIVATE void wsch__px_random(wsch_posix_loop *loop, void *buf, size_t len) {
    unsigned char *p = (unsigned char *)buf;
    if (len > WSCH__PX_POOL / 2) {
        wsch_posix_random_bytes(buf, len, NULL);
        return;
    }
    if (WSCH__PX_POOL - loop->pool_pos < len) {
        wsch_posix_random_bytes(loop->pool, WSCH__PX_POOL, NULL);
        loop->pool_pos = 0;
    }
    WSCH_MEMCPY(p, loop->pool + loop->pool_pos, len);
    WSCH_MEMSET(loop->pool + loop->pool_pos, 0, len);      /* used bytes do not linger */
    loop->pool_pos += len;
}

WSCH__PRIVATE void wsch__px_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl >= 0) (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    fl = fcntl(fd, F_GETFD, 0);
    if (fl >= 0) (void)fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

/* WebSocket traffic is many small writes that must not wait for Nagle. */
WSCH__PRIVATE void wsch__px_tune(int fd) {
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, (socklen_t)sizeof one);
#ifdef SO_NOSIGPIPE
    (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, (socklen_t)sizeof one);
#endif
}

// >>posix-backend
/* Adds, changes or (want 0) parks io in the backend. A parked descriptor
   reports nothing, not even a hang-up (which would otherwise repeat).
   WSCH_OK or WSCH_ERR_STATE. */
WSCH__PRIVATE int wsch__px_io_set(wsch_posix_loop *loop, wsch__px_io *io, unsigned want) {
    want &= (unsigned)(WSCH_POSIX_READ | WSCH_POSIX_WRITE);
    if (io->fd < 0) return WSCH_ERR_STATE;
    if (io->registered && io->interest == want) return WSCH_OK;
    switch (loop->desc.backend) {
#if WSCH_POSIX_EPOLL
    case WSCH_POSIX_BACKEND_EPOLL: {
        struct epoll_event ev;
        WSCH_MEMSET(&ev, 0, sizeof ev);
        ev.events = (want & WSCH_POSIX_READ ? (uint32_t)EPOLLIN : 0u) | (want & WSCH_POSIX_WRITE ? (uint32_t)EPOLLOUT : 0u);
        ev.data.ptr = io;
        if (!want) {
            if (io->registered) (void)epoll_ctl(loop->bfd, EPOLL_CTL_DEL, io->fd, &ev);
            io->registered = 0;
        } else if (epoll_ctl(loop->bfd, io->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, io->fd, &ev) != 0) {
            return WSCH_ERR_STATE;
        } else {
            io->registered = 1;
        }
        break;
    }
#endif
#if WSCH_POSIX_KQUEUE
    case WSCH_POSIX_BACKEND_KQUEUE: {
        struct kevent ch[2];
        int n = 0;
        unsigned had = io->registered ? io->interest : 0u;
        if ((want ^ had) & WSCH_POSIX_READ) {
            EV_SET(&ch[n], (uintptr_t)io->fd, EVFILT_READ, (want & WSCH_POSIX_READ) ? EV_ADD : EV_DELETE, 0, 0, io);
            n++;
        }
        if ((want ^ had) & WSCH_POSIX_WRITE) {
            EV_SET(&ch[n], (uintptr_t)io->fd, EVFILT_WRITE, (want & WSCH_POSIX_WRITE) ? EV_ADD : EV_DELETE, 0, 0, io);
            n++;
        }
        if (n && kevent(loop->bfd, ch, n, NULL, 0, NULL) != 0 && (want & ~had)) return WSCH_ERR_STATE;
        io->registered = want != 0;
        break;
    }
#endif
    default: {                      /* poll */
        if (!io->slot) {
            if (loop->npfd == loop->cap_pfd) {
                size_t cap = loop->cap_pfd ? loop->cap_pfd * 2 : 64;
                struct pollfd *p = (struct pollfd *)wsch__alloc(&loop->desc.allocator, cap * sizeof *p);
                wsch__px_io **q = (wsch__px_io **)wsch__alloc(&loop->desc.allocator, cap * sizeof *q);
                if (!p || !q) {
                    wsch__free(&loop->desc.allocator, p);
                    wsch__free(&loop->desc.allocator, q);
                    return WSCH_ERR_STATE;
                }
                if (loop->npfd) {
                    WSCH_MEMCPY(p, loop->pfd, loop->npfd * sizeof *p);
                    WSCH_MEMCPY(q, loop->pio, loop->npfd * sizeof *q);
                }
                wsch__free(&loop->desc.allocator, loop->pfd);
                wsch__free(&loop->desc.allocator, loop->pio);
                loop->pfd = p;
                loop->pio = q;
                loop->cap_pfd = cap;
            }
            loop->pio[loop->npfd] = io;
            io->slot = ++loop->npfd;
        }
        loop->pfd[io->slot - 1].fd = want ? io->fd : -1;
        loop->pfd[io->slot - 1].events =
            (short)((want & WSCH_POSIX_READ ? POLLIN : 0) | (want & WSCH_POSIX_WRITE ? POLLOUT : 0));
        loop->pfd[io->slot - 1].revents = 0;
        io->registered = 1;
        break;
    }
    }
    io->interest = want;
    return WSCH_OK;
}

/* Takes io out of the backend before its descriptor is closed. */
WSCH__PRIVATE void wsch__px_io_remove(wsch_posix_loop *loop, wsch__px_io *io) {
    if (io->fd < 0) return;
    if (loop->desc.backend == WSCH_POSIX_BACKEND_POLL) {
        if (io->slot) {
            loop->pfd[io->slot - 1].fd = -1;
            loop->pio[io->slot - 1] = NULL;
            loop->holes++;
            io->slot = 0;
        }
    } else {
        (void)wsch__px_io_set(loop, io, 0);
    }
    io->registered = 0;
    io->interest = 0;
}

/* poll: closes the holes left by removed descriptors (before a wait, never
   during the dispatch of one). */
WSCH__PRIVATE void wsch__px_poll_compact(wsch_posix_loop *loop) {
    size_t i, j = 0;
    if (!loop->holes) return;
    for (i = 0; i < loop->npfd; i++) {
        if (!loop->pio[i]) continue;
        loop->pfd[j] = loop->pfd[i];
        loop->pio[j] = loop->pio[i];
        loop->pio[j]->slot = j + 1;
        j++;
    }
    loop->npfd = j;
    loop->holes = 0;
}

/* Waits and dispatches. Returns the events handled, or -1 (errno). */
WSCH__PRIVATE int wsch__px_wait(wsch_posix_loop *loop, int timeout) {
    int n, i;
    switch (loop->desc.backend) {
#if WSCH_POSIX_EPOLL
    case WSCH_POSIX_BACKEND_EPOLL: {
        struct epoll_event *ev = (struct epoll_event *)loop->events;
        n = epoll_wait(loop->bfd, ev, (int)loop->desc.max_events, timeout);
        if (n < 0) return errno == EINTR ? 0 : -1;
        for (i = 0; i < n; i++) {
            wsch__px_io *io = (wsch__px_io *)ev[i].data.ptr;
            uint32_t e = ev[i].events;
            unsigned what = (e & EPOLLIN ? (unsigned)WSCH_POSIX_READ : 0u) | (e & EPOLLOUT ? (unsigned)WSCH_POSIX_WRITE : 0u) |
                            (e & (EPOLLERR | EPOLLHUP) ? (unsigned)WSCH_POSIX_HANGUP : 0u);
            if (io->fd >= 0) io->fn(loop, io, what);
        }
        return n;
    }
#endif
#if WSCH_POSIX_KQUEUE
    case WSCH_POSIX_BACKEND_KQUEUE: {
        struct kevent *ev = (struct kevent *)loop->events;
        struct timespec ts, *tp = NULL;
        if (timeout >= 0) {
            ts.tv_sec = timeout / 1000;
            ts.tv_nsec = (long)(timeout % 1000) * 1000000L;
            tp = &ts;
        }
        n = kevent(loop->bfd, NULL, 0, ev, (int)loop->desc.max_events, tp);
        if (n < 0) return errno == EINTR ? 0 : -1;
        for (i = 0; i < n; i++) {
            wsch__px_io *io = (wsch__px_io *)ev[i].udata;
            unsigned what = ev[i].filter == EVFILT_WRITE ? (unsigned)WSCH_POSIX_WRITE : (unsigned)WSCH_POSIX_READ;
            if (ev[i].flags & (EV_EOF | EV_ERROR)) what |= (unsigned)WSCH_POSIX_HANGUP;
            if (io->fd >= 0) io->fn(loop, io, what);
        }
        return n;
    }
#endif
    default: {
        size_t k, count;
        wsch__px_poll_compact(loop);
        count = loop->npfd;
        n = poll(loop->pfd, (nfds_t)count, timeout);
        if (n < 0) return errno == EINTR ? 0 : -1;
        for (k = 0, i = n; k < count && i > 0; k++) {
            short re = loop->pfd[k].revents;
            wsch__px_io *io = loop->pio[k];
            unsigned what;
            if (!re) continue;
            i--;
            loop->pfd[k].revents = 0;
            if (!io || io->fd < 0) continue;    /* removed by an earlier event of this turn */
            what = (re & POLLIN ? (unsigned)WSCH_POSIX_READ : 0u) | (re & POLLOUT ? (unsigned)WSCH_POSIX_WRITE : 0u) |
                   (re & (POLLERR | POLLHUP | POLLNVAL) ? (unsigned)WSCH_POSIX_HANGUP : 0u);
            io->fn(loop, io, what);
        }
        return n;
    }
    }
}

// >>posix-timers
WSCH__PRIVATE int wsch__px_timer_before(const wsch_posix_timer *a, const wsch_posix_timer *b) {
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

WSCH__PRIVATE void wsch__px_heap_place(wsch_posix_loop *loop, size_t i, wsch_posix_timer *t) {
    loop->heap[i] = t;
    t->slot = i + 1;
}

WSCH__PRIVATE void wsch__px_heap_sift(wsch_posix_loop *loop, size_t i) {
    wsch_posix_timer *t = loop->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!wsch__px_timer_before(t, loop->heap[parent])) break;
        wsch__px_heap_place(loop, i, loop->heap[parent]);
        i = parent;
    }
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= loop->nheap) break;
        if (child + 1 < loop->nheap && wsch__px_timer_before(loop->heap[child + 1], loop->heap[child])) child++;
        if (!wsch__px_timer_before(loop->heap[child], t)) break;
        wsch__px_heap_place(loop, i, loop->heap[child]);
        i = child;
    }
    wsch__px_heap_place(loop, i, t);
}

/* Room in the heap for n more timers: WSCH_OK, WSCH_ERR_LIMIT or
   WSCH_ERR_NOMEM. The loop's own timers (3 per socket, 5 per client) have
   their room reserved when their owner is made, so arming one never fails;
   the armed ones among them are counted twice here, which errs on the safe
   side. */
WSCH__PRIVATE int wsch__px_heap_room(wsch_posix_loop *loop, size_t n) {
    size_t need = loop->reserved + loop->nheap + n, cap;
    wsch_posix_timer **h;
    if (need > loop->desc.max_timers) return WSCH_ERR_LIMIT;
    if (need <= loop->cap_heap) return WSCH_OK;
    cap = loop->cap_heap ? loop->cap_heap : 64;
    while (cap < need) cap *= 2;
    if (cap > loop->desc.max_timers) cap = loop->desc.max_timers;
    h = (wsch_posix_timer **)wsch__alloc(&loop->desc.allocator, cap * sizeof *h);
    if (!h) return WSCH_ERR_NOMEM;
    if (loop->nheap) WSCH_MEMCPY(h, loop->heap, loop->nheap * sizeof *h);
    wsch__free(&loop->desc.allocator, loop->heap);
    loop->heap = h;
    loop->cap_heap = cap;
    return WSCH_OK;
}

/* Arms a timer whose room is known to be there (reserved, or just made). */
WSCH__PRIVATE void wsch__px_timer_arm(wsch_posix_loop *loop, wsch_posix_timer *t, uint32_t delay_ms) {
    t->due = wsch_posix_now_ms(NULL) + delay_ms;
    t->seq = ++loop->seq;
    if (!t->slot) {
        if (loop->nheap == loop->cap_heap) {   /* only when a reservation was exceeded: a bug */
            wsch__px_log(loop, "wsch posix: timer heap full");
            return;
        }
        wsch__px_heap_place(loop, loop->nheap++, t);
    }
    wsch__px_heap_sift(loop, t->slot - 1);
}

WSCH_API void wsch_posix_timer_init(wsch_posix_timer *t, wsch_posix_timer_fn fn, void *user) {
    if (!t) return;
    WSCH_MEMSET(t, 0, sizeof *t);
    t->fn = fn;
    t->user = user;
}

WSCH_API int wsch_posix_timer_start(wsch_posix_loop *loop, wsch_posix_timer *t, uint32_t delay_ms) {
    if (!loop || !t || !t->fn) return WSCH_ERR_ARG;
    if (!t->slot) {
        int rc = wsch__px_heap_room(loop, 1);
        if (rc != WSCH_OK) return rc;
    }
    wsch__px_timer_arm(loop, t, delay_ms);
    return WSCH_OK;
}

WSCH_API void wsch_posix_timer_stop(wsch_posix_loop *loop, wsch_posix_timer *t) {
    size_t i;
    wsch_posix_timer *last;
    if (!loop || !t || !t->slot) return;
    i = t->slot - 1;
    t->slot = 0;
    last = loop->heap[--loop->nheap];
    if (i < loop->nheap) {
        wsch__px_heap_place(loop, i, last);
        wsch__px_heap_sift(loop, i);
    }
}

WSCH_API int wsch_posix_timer_active(const wsch_posix_timer *t) { return t && t->slot != 0; }

/* Milliseconds until the first timer is due, capped at cap. */
WSCH__PRIVATE uint32_t wsch__px_timer_wait(const wsch_posix_loop *loop, uint32_t cap) {
    uint64_t now, due;
    if (!loop->nheap) return cap;
    due = loop->heap[0]->due;
    now = wsch_posix_now_ms(NULL);
    if (due <= now) return 0;
    return due - now < (uint64_t)cap ? (uint32_t)(due - now) : cap;
}

/* Runs the timers due now, only those armed before it began: a timer
   (re-)armed from a callback, with 0 ms too, waits for the next turn. */
WSCH__PRIVATE void wsch__px_timers_run(wsch_posix_loop *loop) {
    uint64_t now = wsch_posix_now_ms(NULL), seq0 = loop->seq;
    while (loop->nheap && loop->heap[0]->due <= now && loop->heap[0]->seq <= seq0) {
        wsch_posix_timer *t = loop->heap[0];
        wsch_posix_timer_stop(loop, t);
        t->fn(loop, t, t->user);
    }
}

// >>posix-sockets
WSCH__PRIVATE void wsch__px_mark_dirty(wsch__px_sock *s) {
    if (s->dirty || s->state == WSCH__PX_S_CLOSED) return;
    s->dirty = 1;
    s->next_dirty = s->loop->dirty;
    s->loop->dirty = s;
}

WSCH__PRIVATE void wsch__px_mark_pending(wsch__px_sock *s) {
    if (s->pending || s->state == WSCH__PX_S_CLOSED) return;
    s->pending = 1;
    s->next_pending = s->loop->pending;
    s->loop->pending = s;
}

/* Closes a descriptor the program is done with. Unread input is discarded
   first: closing over unread bytes makes the kernel send a reset, which
   can destroy our last bytes (a close frame) before the peer reads them. */
WSCH__PRIVATE void wsch__px_close_fd(int fd) {
    char sink[2048];
    int i;
    for (i = 0; i < 8 && recv(fd, sink, sizeof sink, 0) > 0; i++) {
    }
    (void)close(fd);
}

WSCH__PRIVATE void wsch__px_sock_timer_fired(wsch_posix_loop *loop, wsch_posix_timer *t, void *user);

WSCH__PRIVATE wsch__px_sock *wsch__px_sock_new(wsch_posix_loop *loop, int fd, int kind, const wsch_posix_transport *tr) {
    wsch__px_sock *s;
    int k;
    if (loop->nio >= loop->desc.max_fds || wsch__px_heap_room(loop, 3) != WSCH_OK) return NULL;
    s = (wsch__px_sock *)wsch__alloc(&loop->desc.allocator, sizeof *s);
    if (!s) return NULL;
    WSCH_MEMSET(s, 0, sizeof *s);
    s->io.fd = fd;
    s->loop = loop;
    s->kind = (uint8_t)kind;
    s->state = WSCH__PX_S_READY;
    s->tr = tr;
    for (k = 0; k < 3; k++) wsch_posix_timer_init(&s->timer[k], wsch__px_sock_timer_fired, s);
    s->timer[0].id = 1;             /* WSCH_TIMER_HANDSHAKE (a link's: its connect deadline) */
    s->timer[1].id = 2;             /* WSCH_TIMER_CLOSE */
    s->timer[2].id = 16;            /* WSCH_HUB_TIMER_IDLE */
    loop->reserved += 3;
    loop->nio++;
    loop->nsocks++;
    s->next = loop->socks;
    if (loop->socks) loop->socks->prev = s;
    loop->socks = s;
    return s;
}

WSCH__PRIVATE int wsch__px_gather_flush(wsch__px_sock *s);
WSCH__PRIVATE void wsch__px_gather_release(wsch__px_sock *s);

/* The one way a socket ends: timers stopped, the transport's session shut
   down and freed, the descriptor closed; the record waits for the end of
   the turn. */
WSCH__PRIVATE void wsch__px_sock_close(wsch__px_sock *s, int orderly) {
    wsch_posix_loop *loop = s->loop;
    int k;
    if (s->state == WSCH__PX_S_CLOSED) return;
    for (k = 0; k < 3; k++) wsch_posix_timer_stop(loop, &s->timer[k]);
    if (s->glen && s->state == WSCH__PX_S_READY) (void)wsch__px_gather_flush(s);  /* a close frame, say */
    wsch__px_gather_release(s);
    if (s->tls) {
        if (orderly && s->state == WSCH__PX_S_READY && s->tr->shutdown) (void)s->tr->shutdown(s->tls, s->tr->user);
        s->tr->close(s->tls, s->tr->user);
        s->tls = NULL;
    }
    wsch__px_io_remove(loop, &s->io);
    if (s->io.fd >= 0) {
        if (s->read_ended) (void)close(s->io.fd);
        else wsch__px_close_fd(s->io.fd);
    }
    s->io.fd = -1;
    s->state = WSCH__PX_S_CLOSED;
    s->graved = 1;
    s->next_grave = loop->grave;
    loop->grave = s;
#ifndef WS_CHANNEL_NO_HUB
    if (s->kind == WSCH__PX_PEER && s->attached) ((wsch__px_hub *)s->owner)->npeers--;
#endif
}

/* Frees a record closed during the turn. */
WSCH__PRIVATE void wsch__px_sock_free(wsch__px_sock *s) {
    wsch_posix_loop *loop = s->loop;
#ifndef WS_CHANNEL_NO_CONN
    if (s->kind == WSCH__PX_CONN && s->obj) {
        wsch_conn *c = (wsch_conn *)s->obj;
        s->obj = NULL;
        wsch_conn_destroy(c);       /* CLOSED already: only the free */
    }
#endif
    if (s->prev) s->prev->next = s->next;
    else loop->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    loop->reserved -= 3;
    loop->nio--;
    loop->nsocks--;
    wsch__free(&loop->desc.allocator, s);
}

/* One read: DONE with *n > 0, WANT_READ, WANT_WRITE, EOF or ERROR. */
WSCH__PRIVATE wsch_posix_io wsch__px_read(wsch__px_sock *s, void *buf, size_t cap, size_t *n) {
    *n = 0;
    if (s->tls) return s->tr->read(s->tls, buf, cap, n, s->tr->user);
    for (;;) {
        ssize_t r = recv(s->io.fd, buf, cap, 0);
        if (r > 0) {
            *n = (size_t)r;
            return WSCH_POSIX_IO_DONE;
        }
        if (r == 0) return WSCH_POSIX_IO_EOF;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return WSCH_POSIX_IO_WANT_READ;
        return WSCH_POSIX_IO_ERROR;
    }
}

/* One send() of data, or sendmsg() of m's pieces (len bytes in all), on a
   plain socket: bytes taken, 0 when it is full, or WSCH_SEND_ERROR. */
WSCH__PRIVATE size_t wsch__px_sys_send(wsch__px_sock *s, const struct msghdr *m, const void *data, size_t len) {
    for (;;) {
        ssize_t r = m ? sendmsg(s->io.fd, m, WSCH__PX_SEND_FLAGS) : send(s->io.fd, data, len, WSCH__PX_SEND_FLAGS);
        if (r >= 0) {
            if ((size_t)r < len) wsch__px_mark_dirty(s);
            return (size_t)r;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            wsch__px_mark_dirty(s);
            return 0;
        }
        return WSCH_SEND_ERROR;     /* EPIPE, ECONNRESET: the library ends the connection */
    }
}

/* One write to the socket (or through the transport): bytes taken, 0
   (would block: the interest is brought up to date at the end of the turn)
   or WSCH_SEND_ERROR. */
WSCH__PRIVATE size_t wsch__px_raw_write(wsch__px_sock *s, const void *data, size_t len) {
    s->loop->counters.writes++;
    if (s->tls) {
        size_t n = 0;
        /* At most what a retry may have to hold (wsch__px_write). */
        wsch_posix_io r = s->tr->write(s->tls, data, len < WSCH_POSIX_GATHER_BLOCK ? len : WSCH_POSIX_GATHER_BLOCK, &n,
                                       s->tr->user);
        if (r == WSCH_POSIX_IO_DONE) {
            if (n > len) n = len;
            if (n < len) wsch__px_mark_dirty(s);
            return n;
        }
        if (r == WSCH_POSIX_IO_WANT_READ || r == WSCH_POSIX_IO_WANT_WRITE) {
            s->write_wants_read = r == WSCH_POSIX_IO_WANT_READ;
            wsch__px_mark_dirty(s);
            return 0;
        }
        return WSCH_SEND_ERROR;
    }
    return wsch__px_sys_send(s, NULL, data, len);
}

/* ---- gathered writes ----
   Bytes the library was told were sent but that wait in the sock's gather
   block: at most WSCH_POSIX_GATHER_BLOCK per socket, and gather_bytes in
   all. Every later byte of that socket goes behind them, so the stream
   keeps its order. */
WSCH__PRIVATE unsigned char *wsch__px_gather_block(wsch_posix_loop *loop, int retry) {
    unsigned char *b = loop->gfree;
    if (b) {
        WSCH_MEMCPY(&loop->gfree, b, sizeof loop->gfree);
        return b;
    }
    if (loop->gblocks >= loop->gmax && !retry) return NULL;     /* a retry's bytes must be kept: one a socket */
    b = (unsigned char *)wsch__alloc(&loop->desc.allocator, WSCH_POSIX_GATHER_BLOCK);
    if (b) loop->gblocks++;
    return b;
}

WSCH__PRIVATE void wsch__px_gather_release(wsch__px_sock *s) {
    if (!s->gbuf) return;
    WSCH_MEMCPY(s->gbuf, &s->loop->gfree, sizeof s->loop->gfree);
    s->loop->gfree = s->gbuf;
    s->gbuf = NULL;
    s->goff = s->glen = 0;
}

/* Writes the gathered bytes: WSCH_OK (some may remain when the socket is
   full) or WSCH_ERR_TRANSPORT. */
WSCH__PRIVATE int wsch__px_gather_flush(wsch__px_sock *s) {
    while (s->glen) {
        size_t n = wsch__px_raw_write(s, s->gbuf + s->goff, s->glen);
        if (n == WSCH_SEND_ERROR) return WSCH_ERR_TRANSPORT;
        if (n == 0) return WSCH_OK;
        if (n > s->glen) n = s->glen;
        s->goff += n;
        s->glen -= n;
    }
    wsch__px_gather_release(s);
    return WSCH_OK;
}

WSCH__PRIVATE void wsch__px_touch(wsch__px_sock *s) {
    if (s->touched) return;
    s->touched = 1;
    s->next_touched = s->loop->touched;
    s->loop->touched = s;
}

/* The send effect's body: bytes taken, 0 (would block) or WSCH_SEND_ERROR. */
WSCH__PRIVATE size_t wsch__px_write(wsch__px_sock *s, const void *data, size_t len) {
    wsch_posix_loop *loop;
    size_t n;
    if (!s || s->state != WSCH__PX_S_READY) return WSCH_SEND_ERROR;
    loop = s->loop;
    if (s->glen) {                  /* earlier bytes wait: these go behind them */
        if (loop->in_turn && !loop->desc.no_gather && len <= WSCH_POSIX_GATHER_BLOCK - s->goff - s->glen) {
            WSCH_MEMCPY(s->gbuf + s->goff + s->glen, data, len);
            s->glen += len;
            loop->counters.gathered++;
            wsch__px_touch(s);
            return len;
        }
        if (wsch__px_gather_flush(s) != WSCH_OK) return WSCH_SEND_ERROR;
        if (s->glen) {
            wsch__px_mark_dirty(s);
            return 0;
        }
    }
    if (loop->in_turn && !loop->desc.no_gather) {
        /* A hub peer's first write of the turn waits too: broadcasts from
           the other peers' input may follow it in this turn (publishes in
           flight), and then they all leave in one write. */
        if ((s->touched || s->kind == WSCH__PX_PEER) && len < WSCH_POSIX_GATHER_BLOCK &&
            (s->gbuf = wsch__px_gather_block(loop, 0)) != NULL) {
            WSCH_MEMCPY(s->gbuf, data, len);
            s->goff = 0;
            s->glen = len;
            loop->counters.gathered++;
            wsch__px_touch(s);
            return len;
        }
        wsch__px_touch(s);          /* a conn's or a link's first write of the turn leaves at once */
    }
    n = wsch__px_raw_write(s, data, len);
    if (n == 0 && s->tls && (s->gbuf = wsch__px_gather_block(loop, 1)) != NULL) {
        /* The transport must be offered these bytes again (a TLS record is
           made of them), but the library may drop its copy meanwhile (a slow
           consumer's backlog, before a close frame): they are kept here and
           reported taken. raw_write offered at most a block. */
        n = len < WSCH_POSIX_GATHER_BLOCK ? len : WSCH_POSIX_GATHER_BLOCK;
        WSCH_MEMCPY(s->gbuf, data, n);
        s->goff = 0;
        s->glen = n;
    }
    return n;
}

/* ---- the library's side of a sock: feed, writable, the end, want ---- */

#ifndef WS_CHANNEL_NO_CLIENT
WSCH__PRIVATE void wsch__px_link_up(wsch__px_sock *s);
WSCH__PRIVATE void wsch__px_link_ready(wsch__px_sock *s);
WSCH__PRIVATE void wsch__px_link_failed(wsch__px_sock *s);
#endif

WSCH__PRIVATE void wsch__px_owner_feed(wsch__px_sock *s, void *data, size_t len) {
    (void)data;
    (void)len;
    switch (s->kind) {
#ifndef WS_CHANNEL_NO_CONN
    case WSCH__PX_CONN: (void)wsch_conn_feed((wsch_conn *)s->obj, data, len); break;
#endif
#ifndef WS_CHANNEL_NO_HUB
    case WSCH__PX_PEER: (void)wsch_hub_feed(((wsch__px_hub *)s->owner)->hub, s->h, data, len); break;
#endif
#ifndef WS_CHANNEL_NO_CLIENT
    case WSCH__PX_LINK: (void)wsch_client_feed(((wsch__px_client *)s->obj)->client, data, len); break;
#endif
    default: break;
    }
}

WSCH__PRIVATE void wsch__px_owner_writable(wsch__px_sock *s) {
    switch (s->kind) {
#ifndef WS_CHANNEL_NO_CONN
    case WSCH__PX_CONN: (void)wsch_conn_writable((wsch_conn *)s->obj); break;
#endif
#ifndef WS_CHANNEL_NO_HUB
    case WSCH__PX_PEER: (void)wsch_hub_writable(((wsch__px_hub *)s->owner)->hub, s->h); break;
#endif
#ifndef WS_CHANNEL_NO_CLIENT
    case WSCH__PX_LINK: (void)wsch_client_writable(((wsch__px_client *)s->obj)->client); break;
#endif
    default: break;
    }
}

/* The transport ended under the library (EOF, a read error): the library
   runs its path, which ends in the close effect. */
WSCH__PRIVATE void wsch__px_owner_lost(wsch__px_sock *s) {
#ifndef WS_CHANNEL_NO_CLIENT
    if (s->kind == WSCH__PX_LINK && !s->attached) {
        wsch__px_link_failed(s);    /* the next address, or the try has failed */
        return;
    }
#endif
    if (!s->attached) {
        wsch__px_sock_close(s, 0);
        return;
    }
    switch (s->kind) {
#ifndef WS_CHANNEL_NO_CONN
    case WSCH__PX_CONN: wsch_conn_transport_closed((wsch_conn *)s->obj); break;
#endif
#ifndef WS_CHANNEL_NO_HUB
    case WSCH__PX_PEER: (void)wsch_hub_transport_closed(((wsch__px_hub *)s->owner)->hub, s->h); break;
#endif
#ifndef WS_CHANNEL_NO_CLIENT
    case WSCH__PX_LINK: wsch_client_transport_closed(((wsch__px_client *)s->obj)->client); break;
#endif
    default: break;
    }
    wsch__px_sock_close(s, 0);      /* when the library had nothing to close */
}

WSCH__PRIVATE unsigned wsch__px_owner_want(wsch__px_sock *s) {
    unsigned want = 0;
    switch (s->kind) {
#ifndef WS_CHANNEL_NO_CONN
    case WSCH__PX_CONN: {
        wsch_conn *c = (wsch_conn *)s->obj;
        want = wsch_conn_want(c);
        if ((want & WSCH_WANT_WRITE) && wsch_conn_queued_bytes(c) > s->loop->desc.read_pause_bytes)
            want &= ~(unsigned)WSCH_WANT_READ;     /* backpressure: it drains first */
        break;
    }
#endif
#ifndef WS_CHANNEL_NO_HUB
    case WSCH__PX_PEER: want = wsch_hub_peer_want(((wsch__px_hub *)s->owner)->hub, s->h); break;
#endif
#ifndef WS_CHANNEL_NO_CLIENT
    case WSCH__PX_LINK: want = wsch_client_want(((wsch__px_client *)s->obj)->client); break;
#endif
    default: break;
    }
    return want;
}

WSCH__PRIVATE void wsch__px_follow(wsch__px_sock *s) {
    unsigned want;
    if (s->state == WSCH__PX_S_CLOSED) return;
    if (s->state == WSCH__PX_S_CONNECTING) want = WSCH_POSIX_WRITE;
    else if (s->state == WSCH__PX_S_HANDSHAKE) want = s->tls_want;
    else want = wsch__px_owner_want(s);
    if (s->write_wants_read && (want & WSCH_POSIX_WRITE)) want |= WSCH_POSIX_READ;
    if (s->read_wants_write && (want & WSCH_POSIX_READ)) want |= WSCH_POSIX_WRITE;
    if (s->glen) want |= WSCH_POSIX_WRITE;
    if (wsch__px_io_set(s->loop, &s->io, want) != WSCH_OK) {
        wsch__px_log(s->loop, "wsch posix: the backend refused a socket");
        wsch__px_owner_lost(s);
    }
}

/* Readable (or hung up): reads and feeds up to READS_PER_EVENT buffers. */
WSCH__PRIVATE void wsch__px_sock_read(wsch__px_sock *s) {
    wsch_posix_loop *loop = s->loop;
    unsigned i;
    for (i = 0; i < WSCH_POSIX_READS_PER_EVENT; i++) {
        size_t n;
        wsch_posix_io r = wsch__px_read(s, loop->buf, loop->desc.read_buffer_size, &n);
        if (r == WSCH_POSIX_IO_WANT_READ) return;
        if (r == WSCH_POSIX_IO_WANT_WRITE) {
            s->read_wants_write = 1;    /* a renegotiation: read again once writable */
            wsch__px_mark_dirty(s);
            return;
        }
        if (r != WSCH_POSIX_IO_DONE) {
            s->read_ended = 1;
            wsch__px_owner_lost(s);
            return;
        }
        loop->counters.reads++;
        wsch__px_owner_feed(s, loop->buf, n);
        if (s->state != WSCH__PX_S_READY) return;
        if (!(wsch__px_owner_want(s) & WSCH_WANT_READ)) return;    /* closing, or paused */
        if (!s->tls && n < loop->desc.read_buffer_size) return;   /* a short read drained the socket */
    }
    if (s->tls) wsch__px_mark_pending(s);   /* the session may hold more than the socket shows */
}

WSCH__PRIVATE void wsch__px_sock_established(wsch__px_sock *s);

/* Advances the transport's handshake; on DONE the library gets the socket. */
WSCH__PRIVATE void wsch__px_sock_handshake(wsch__px_sock *s) {
    wsch_posix_io r = s->tr->handshake(s->tls, s->tr->user);
    if (r == WSCH_POSIX_IO_DONE) {
        s->state = WSCH__PX_S_READY;
        wsch_posix_timer_stop(s->loop, &s->timer[0]);
        wsch__px_sock_established(s);
        return;
    }
    if (r == WSCH_POSIX_IO_WANT_READ || r == WSCH_POSIX_IO_WANT_WRITE) {
        s->tls_want = r == WSCH_POSIX_IO_WANT_READ ? (unsigned)WSCH_POSIX_READ : (unsigned)WSCH_POSIX_WRITE;
        wsch__px_mark_dirty(s);
        return;
    }
    wsch__px_log(s->loop, "wsch posix: transport handshake failed");
    wsch__px_owner_lost(s);
}

/* Starts the transport (when there is one) on a connected socket, bounded
   by ms; otherwise hands the socket to the library at once. */
WSCH__PRIVATE void wsch__px_sock_start(wsch__px_sock *s, const char *host, uint32_t ms) {
    if (!s->tr) {
        s->state = WSCH__PX_S_READY;
        wsch__px_sock_established(s);
        return;
    }
    s->tls = s->tr->open(s->io.fd, s->kind != WSCH__PX_LINK, host, s->tr->user);
    if (!s->tls) {
        wsch__px_log(s->loop, "wsch posix: transport refused the connection");
        wsch__px_owner_lost(s);
        return;
    }
    s->state = WSCH__PX_S_HANDSHAKE;
    if (s->kind != WSCH__PX_LINK) wsch__px_timer_arm(s->loop, &s->timer[0], ms);
    wsch__px_sock_handshake(s);
}

WSCH__PRIVATE void wsch__px_sock_event(wsch_posix_loop *loop, wsch__px_io *io, unsigned ev) {
    wsch__px_sock *s = (wsch__px_sock *)io;    /* io is the first member */
    (void)loop;
    if (s->state == WSCH__PX_S_CONNECTING) {
        int err = 0;
        socklen_t len = (socklen_t)sizeof err;
        if (getsockopt(s->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err == 0 && !(ev & (WSCH_POSIX_WRITE | WSCH_POSIX_HANGUP))) return;
#ifndef WS_CHANNEL_NO_CLIENT
        if (err == 0) wsch__px_link_up(s);
        else wsch__px_link_failed(s);
#endif
        return;
    }
    if (s->state == WSCH__PX_S_HANDSHAKE) {
        wsch__px_sock_handshake(s);
        return;
    }
    if (s->state != WSCH__PX_S_READY) return;
    if ((ev & WSCH_POSIX_WRITE) || (s->write_wants_read && (ev & WSCH_POSIX_READ))) {
        s->write_wants_read = 0;
        if (s->glen && wsch__px_gather_flush(s) != WSCH_OK) {
            wsch__px_owner_lost(s);
            return;
        }
        if (!s->glen) wsch__px_owner_writable(s);
    }
    if (s->state == WSCH__PX_S_READY &&
        ((ev & (WSCH_POSIX_READ | WSCH_POSIX_HANGUP)) || (s->read_wants_write && (ev & WSCH_POSIX_WRITE)))) {
        s->read_wants_write = 0;
        wsch__px_sock_read(s);
    }
    wsch__px_mark_dirty(s);
}

/* ---- effects: what the library asks of a sock ---- */

WSCH__PRIVATE size_t wsch__px_fx_send(const void *data, size_t len, void *user) {
    return wsch__px_write((wsch__px_sock *)user, data, len);
}

#ifndef WS_CHANNEL_NO_HUB
/* A hub peer's queue (the hub gathers a turn's output, desc.gather): the
   pieces in one sendmsg(), broadcast frames not copied. A TLS transport,
   or bytes still waiting in the gather block, take the send path, the
   pieces copied together. */
WSCH__PRIVATE size_t wsch__px_fx_send_gather(const wsch_iovec *parts, size_t count, void *user) {
    wsch__px_sock *s = (wsch__px_sock *)user;
    struct iovec iov[WSCH_GATHER_PARTS];
    struct msghdr m;
    size_t i, len = 0;
    if (s->state != WSCH__PX_S_READY || s->tls || s->glen || count > WSCH_GATHER_PARTS)
        return wsch__send_copied(wsch__px_fx_send, parts, count, user);
    if (count == 1) return wsch__px_raw_write(s, parts[0].base, parts[0].len);  /* send(): no iovec to import */
    for (i = 0; i < count; i++) {
        iov[i].iov_base = (void *)(uintptr_t)parts[i].base;    /* sendmsg only reads it */
        iov[i].iov_len = parts[i].len;
        len += parts[i].len;
    }
    WSCH_MEMSET(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = (unsigned char)count;    /* <= 64: widens into int (POSIX) or size_t (glibc) */
    s->loop->counters.writes++;
    return wsch__px_sys_send(s, &m, NULL, len);
}
#endif

WSCH__PRIVATE void wsch__px_fx_close(void *user) { wsch__px_sock_close((wsch__px_sock *)user, 1); }

WSCH__PRIVATE wsch_posix_timer *wsch__px_sock_timer(wsch__px_sock *s, unsigned id) {
    switch (id) {
    case 1: return &s->timer[0];
    case 2: return &s->timer[1];
    case 16: return &s->timer[2];
    default: return NULL;
    }
}

WSCH__PRIVATE void wsch__px_fx_timer_set(unsigned id, uint32_t delay_ms, void *user) {
    wsch__px_sock *s = (wsch__px_sock *)user;
    wsch_posix_timer *t = wsch__px_sock_timer(s, id);
    if (!t) wsch__px_log(s->loop, "wsch posix: a timer id the loop does not know");
    else if (s->state != WSCH__PX_S_CLOSED) wsch__px_timer_arm(s->loop, t, delay_ms);
}

WSCH__PRIVATE void wsch__px_fx_timer_cancel(unsigned id, void *user) {
    wsch__px_sock *s = (wsch__px_sock *)user;
    wsch_posix_timer *t = wsch__px_sock_timer(s, id);
    if (t) wsch_posix_timer_stop(s->loop, t);
}

WSCH__PRIVATE void wsch__px_fx_random(void *buf, size_t len, void *user) {
    wsch__px_random(((wsch__px_sock *)user)->loop, buf, len);
}

WSCH__PRIVATE void wsch__px_sock_timer_fired(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    wsch__px_sock *s = (wsch__px_sock *)user;
    (void)loop;
    (void)t;
    if (s->state == WSCH__PX_S_CLOSED) return;
    if (s->state == WSCH__PX_S_CONNECTING || s->state == WSCH__PX_S_HANDSHAKE) {
#ifndef WS_CHANNEL_NO_CLIENT
        if (s->kind == WSCH__PX_LINK) {
            wsch__px_link_failed(s);    /* the connect deadline */
            return;
        }
#endif
        {
            wsch__px_log(s->loop, "wsch posix: transport handshake timed out");
            wsch__px_owner_lost(s);
        }
        return;
    }
    switch (s->kind) {
#ifndef WS_CHANNEL_NO_CONN
    case WSCH__PX_CONN: wsch_conn_timer_fired((wsch_conn *)s->obj, t->id); break;
#endif
#ifndef WS_CHANNEL_NO_HUB
    case WSCH__PX_PEER: (void)wsch_hub_timer_fired(((wsch__px_hub *)s->owner)->hub, s->h, t->id); break;
#endif
    default: break;
    }
    wsch__px_mark_dirty(s);
}

// >>posix-listen
WSCH__PRIVATE void wsch__px_accept_one(wsch_posix_listener *l, int fd);

/* Out of descriptors, accept() fails while the connection stays queued and
   the listener stays readable: a level-triggered loop would spin. The
   spare descriptor is given up to take the connection and close it. */
WSCH__PRIVATE int wsch__px_shed(wsch_posix_loop *loop, int lfd) {
    int fd;
    if (loop->spare_fd < 0) return 0;
    (void)close(loop->spare_fd);
    fd = accept(lfd, NULL, NULL);
    if (fd >= 0) (void)close(fd);
    loop->spare_fd = open("/dev/null", O_RDONLY);
    wsch__px_log(loop, "wsch posix: out of descriptors: a connection was closed unserved");
    return fd >= 0;
}

WSCH__PRIVATE void wsch__px_listener_event(wsch_posix_loop *loop, wsch__px_io *io, unsigned ev) {
    wsch_posix_listener *l = (wsch_posix_listener *)io;
    int i;
    (void)ev;
    for (i = 0; i < WSCH__PX_ACCEPTS_PER_EVENT && !l->dead; i++) {
#if defined(__linux__) && defined(_GNU_SOURCE) && defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
        int fd = accept4(l->io.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
        int fd = accept(l->io.fd, NULL, NULL);
        if (fd >= 0) wsch__px_nonblock(fd);
#endif
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if ((errno == EMFILE || errno == ENFILE) && wsch__px_shed(loop, l->io.fd)) continue;
            return;                 /* EAGAIN: drained */
        }
#ifndef __linux__
        wsch__px_tune(fd);          /* Linux: inherited from the listener (a system call saved per accept) */
#endif
        loop->counters.accepted++;
        wsch__px_accept_one(l, fd);
    }
}

WSCH__PRIVATE int wsch__px_bind(const struct sockaddr *sa, socklen_t len, int v6only, unsigned backlog) {
    int one = 1, fd = socket(sa->sa_family, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    wsch__px_nonblock(fd);
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, (socklen_t)sizeof one);
    wsch__px_tune(fd);              /* for what it accepts, where they inherit it */
#ifdef IPV6_V6ONLY
    if (sa->sa_family == AF_INET6 && v6only) (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, (socklen_t)sizeof one);
#else
    (void)v6only;
#endif
    if (bind(fd, sa, len) != 0 || listen(fd, (int)(backlog > 65535u ? 65535u : backlog)) != 0) {
        int e = errno;
        (void)close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

WSCH_API int wsch_posix_listen(wsch_posix_loop *loop, const wsch_posix_listen_desc *desc, wsch_posix_listener **out) {
    wsch_posix_listen_desc d;
    wsch_posix_listener *l;
    struct sockaddr_storage ss;
    socklen_t sl = (socklen_t)sizeof ss;
    int fd = -1;
    if (out) *out = NULL;
    if (!loop || !out) return WSCH_ERR_ARG;
    wsch__desc_copy(&d, desc, sizeof d);
    if (!d.backlog) d.backlog = WSCH_POSIX_DEFAULT_BACKLOG;
    if (d.addr && (d.addr_len < sizeof(struct sockaddr_in) || d.addr_len > sizeof ss)) return WSCH_ERR_ARG;
    if (loop->nio >= loop->desc.max_fds) return WSCH_ERR_LIMIT;
    if (d.addr) {
        fd = wsch__px_bind((const struct sockaddr *)d.addr, (socklen_t)d.addr_len, d.v6only, d.backlog);
    } else {
        struct addrinfo hints, *res = NULL, *ai;
        char service[8];
        int e = 0;
        WSCH_MEMSET(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        (void)snprintf(service, sizeof service, "%u", (unsigned)d.port);
        if (getaddrinfo(d.host ? d.host : "127.0.0.1", service, &hints, &res) != 0) {
            errno = EADDRNOTAVAIL;
            return WSCH_ERR_CONNECT;
        }
        for (ai = res; ai && fd < 0; ai = ai->ai_next) {
            fd = wsch__px_bind(ai->ai_addr, ai->ai_addrlen, d.v6only, d.backlog);
            if (fd < 0) e = errno;
        }
        freeaddrinfo(res);
        if (fd < 0) errno = e;
    }
    if (fd < 0) return WSCH_ERR_CONNECT;
    l = (wsch_posix_listener *)wsch__alloc(&loop->desc.allocator, sizeof *l);
    if (!l) {
        (void)close(fd);
        return WSCH_ERR_NOMEM;
    }
    WSCH_MEMSET(l, 0, sizeof *l);
    l->io.fd = fd;
    l->io.fn = wsch__px_listener_event;
    l->loop = loop;
    l->tr = d.transport;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) l->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6) l->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    loop->nio++;
    l->next = loop->listeners;
    loop->listeners = l;
    *out = l;
    return WSCH_OK;
}

WSCH_API uint16_t wsch_posix_listener_port(const wsch_posix_listener *l) { return l ? l->port : 0; }

WSCH_API void wsch_posix_listener_close(wsch_posix_listener *l) {
    if (!l || l->dead) return;
    wsch__px_io_remove(l->loop, &l->io);
    (void)close(l->io.fd);
    l->io.fd = -1;
    l->dead = 1;
}

/* Starts accepting once the listener serves something. */
WSCH__PRIVATE int wsch__px_listener_arm(wsch_posix_listener *l) {
    if (l->dead) return WSCH_ERR_STATE;
    return wsch__px_io_set(l->loop, &l->io, WSCH_POSIX_READ);
}

// >>posix-conns
#ifndef WS_CHANNEL_NO_CONN
/* The layer forwards every event of wsch_conn_desc and wsch_client_desc to
   the caller with the caller's user pointer (the effects need their own).
   These fail to compile when an event is added after the last one known
   here: forward it below (wsch__px_ev_* / wsch__px_cl_*), then move the
   check to the new last member. */
typedef char wsch__px_conn_events_forwarded[(offsetof(wsch_conn_desc, on_close) + sizeof(void (*)(void)) ==
                                             sizeof(wsch_conn_desc)) ? 1 : -1];
/* Each event of a served conn goes to the caller's, with the caller's user
   (the conn's own user pointer is the sock, for the effects). */
#define WSCH__PX_APP(user) (((wsch__px_serve *)((wsch__px_sock *)(user))->owner)->app)
#define WSCH__PX_APP_USER(user) (((wsch__px_sock *)(user))->user)
WSCH__PRIVATE void wsch__px_ev_request(wsch_conn *c, const wsch_request *req, wsch_handshake_reply *reply, void *user) {
    WSCH__PX_APP(user).on_request(c, req, reply, WSCH__PX_APP_USER(user));
}
WSCH__PRIVATE void wsch__px_ev_open(wsch_conn *c, void *user) { WSCH__PX_APP(user).on_open(c, WSCH__PX_APP_USER(user)); }
WSCH__PRIVATE void wsch__px_ev_message(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
    WSCH__PX_APP(user).on_message(c, op, data, len, WSCH__PX_APP_USER(user));
}
WSCH__PRIVATE void wsch__px_ev_pong(wsch_conn *c, const void *data, size_t len, void *user) {
    WSCH__PX_APP(user).on_pong(c, data, len, WSCH__PX_APP_USER(user));
}
WSCH__PRIVATE void wsch__px_ev_close(wsch_conn *c, int code, const char *reason, size_t reason_len, void *user) {
    WSCH__PX_APP(user).on_close(c, code, reason, reason_len, WSCH__PX_APP_USER(user));
}
WSCH__PRIVATE void wsch__px_ev_log(const char *msg, void *user) {
    WSCH__PX_APP(user).effects.log(msg, WSCH__PX_APP_USER(user));
}

WSCH_API int wsch_posix_serve_conns(wsch_posix_listener *l, const wsch_conn_desc *desc, void *user) {
    wsch__px_serve *v;
    int rc;
    if (!l || !desc) return WSCH_ERR_ARG;
    if (l->serve || l->hub) return WSCH_ERR_STATE;
    v = (wsch__px_serve *)wsch__alloc(&l->loop->desc.allocator, sizeof *v);
    if (!v) return WSCH_ERR_NOMEM;
    WSCH_MEMSET(v, 0, sizeof *v);
    v->app = *desc;
    v->user = user;
    v->desc = wsch_conn_desc_defaults(desc);
    v->desc.role = WSCH_ROLE_SERVER;
    WSCH_MEMSET(&v->desc.effects, 0, sizeof v->desc.effects);
    v->desc.effects.send = wsch__px_fx_send;
    v->desc.effects.close = wsch__px_fx_close;
    v->desc.effects.timer_set = wsch__px_fx_timer_set;
    v->desc.effects.timer_cancel = wsch__px_fx_timer_cancel;
    v->desc.effects.now_ms = wsch_posix_now_ms;
    v->desc.effects.random_bytes = wsch__px_fx_random;
    if (desc->effects.log) v->desc.effects.log = wsch__px_ev_log;
    v->desc.on_request = desc->on_request ? wsch__px_ev_request : NULL;
    v->desc.on_open = desc->on_open ? wsch__px_ev_open : NULL;
    v->desc.on_message = desc->on_message ? wsch__px_ev_message : NULL;
    v->desc.on_pong = desc->on_pong ? wsch__px_ev_pong : NULL;
    v->desc.on_close = desc->on_close ? wsch__px_ev_close : NULL;
    rc = wsch__px_listener_arm(l);
    if (rc != WSCH_OK) {
        wsch__free(&l->loop->desc.allocator, v);
        return rc;
    }
    v->next = l->loop->serves;
    l->loop->serves = v;
    l->serve = v;
    return WSCH_OK;
}

WSCH_API void *wsch_posix_conn_user(const wsch_conn *c) {
    wsch__px_sock *s = c ? (wsch__px_sock *)wsch_conn_user(c) : NULL;
    return s ? s->user : NULL;
}

WSCH_API void wsch_posix_conn_set_user(wsch_conn *c, void *user) {
    wsch__px_sock *s = c ? (wsch__px_sock *)wsch_conn_user(c) : NULL;
    if (s) s->user = user;
}
#endif

// >>posix-hub
#ifndef WS_CHANNEL_NO_HUB
WSCH__PRIVATE wsch__px_hub *wsch__px_hub_find(wsch_posix_loop *loop, const wsch_hub *hub) {
    wsch__px_hub *x;
    for (x = loop ? loop->hubs : NULL; x; x = x->next) {
        if (x->hub == hub && !x->dead) return x;
    }
    return NULL;
}

WSCH_API int wsch_posix_hub_create(wsch_posix_loop *loop, const wsch_hub_desc *desc, wsch_hub **out) {
    wsch_hub_desc d;
    wsch__px_hub *x;
    int rc;
    if (out) *out = NULL;
    if (!loop || !out) return WSCH_ERR_ARG;
    wsch__desc_copy(&d, desc, sizeof d);
    d.effects.send = wsch__px_fx_send;
    d.effects.send_gather = wsch__px_fx_send_gather;
    if (!loop->desc.no_gather) d.gather = 1;    /* written at the turn's end, in wsch__px_settle */
    d.effects.close = wsch__px_fx_close;
    d.effects.timer_set = wsch__px_fx_timer_set;
    d.effects.timer_cancel = wsch__px_fx_timer_cancel;
    d.effects.now_ms = wsch_posix_now_ms;
    d.effects.random_bytes = wsch_posix_random_bytes;
    d.effects.connect = NULL;
    x = (wsch__px_hub *)wsch__alloc(&loop->desc.allocator, sizeof *x);
    if (!x) return WSCH_ERR_NOMEM;
    WSCH_MEMSET(x, 0, sizeof *x);
    rc = wsch_hub_create(&d, &x->hub);
    if (rc != WSCH_OK) {
        wsch__free(&loop->desc.allocator, x);
        return rc;
    }
    x->next = loop->hubs;
    loop->hubs = x;
    *out = x->hub;
    return WSCH_OK;
}

WSCH_API int wsch_posix_serve_hub(wsch_posix_listener *l, wsch_hub *hub) {
    wsch__px_hub *x;
    int rc;
    if (!l || !hub) return WSCH_ERR_ARG;
    if (l->serve || l->hub) return WSCH_ERR_STATE;
    x = wsch__px_hub_find(l->loop, hub);
    if (!x) return WSCH_ERR_ARG;
    rc = wsch__px_listener_arm(l);
    if (rc == WSCH_OK) l->hub = x;
    return rc;
}

WSCH__PRIVATE void wsch__px_hub_free(wsch_posix_loop *loop, wsch__px_hub *x) {
    wsch_posix_listener *l;
    for (l = loop->listeners; l; l = l->next) {
        if (l->hub == x) {
            wsch_posix_listener_close(l);
            l->hub = NULL;
        }
    }
    if (x->hub) wsch_hub_destroy(x->hub);   /* every peer's close() runs */
    {
        wsch__px_sock *s;               /* and sockets not yet handed to it (a transport's handshake) */
        for (s = loop->socks; s; s = s->next) {
            if (s->kind == WSCH__PX_PEER && s->owner == x) wsch__px_sock_close(s, 0);
        }
    }
    x->hub = NULL;
    x->dead = 1;
}

WSCH_API void wsch_posix_hub_destroy(wsch_posix_loop *loop, wsch_hub *hub) {
    wsch__px_hub *x = wsch__px_hub_find(loop, hub);
    if (x) wsch__px_hub_free(loop, x);
}
#endif

/* An accepted socket goes to what its listener serves. */
WSCH__PRIVATE void wsch__px_accept_one(wsch_posix_listener *l, int fd) {
    wsch_posix_loop *loop = l->loop;
    int kind = l->hub ? WSCH__PX_PEER : WSCH__PX_CONN;
    wsch__px_sock *s;
    if (loop->shutting || (!l->hub && !l->serve)) {
        (void)close(fd);
        return;
    }
    s = wsch__px_sock_new(loop, fd, kind, l->tr);
    if (!s) {
        wsch__px_log(loop, "wsch posix: a connection refused (max_fds, max_timers or memory)");
        (void)close(fd);
        return;
    }
    s->io.fn = wsch__px_sock_event;
    s->owner = l->hub ? (void *)l->hub : (void *)l->serve;
#ifndef WS_CHANNEL_NO_CONN
    if (kind == WSCH__PX_CONN) s->user = l->serve->user;
#endif
    if (wsch__px_io_set(loop, &s->io, WSCH_POSIX_READ) != WSCH_OK) {
        s->owner = NULL;
        wsch__px_sock_close(s, 0);
        return;
    }
    {
        uint32_t hs = WSCH_DEFAULT_HANDSHAKE_TIMEOUT_MS;
#ifndef WS_CHANNEL_NO_CONN
        if (l->serve) hs = l->serve->desc.limits.handshake_timeout_ms;
#endif
        wsch__px_sock_start(s, NULL, hs);
    }
}

/* The socket is ready for the library (after the transport's handshake). */
WSCH__PRIVATE void wsch__px_sock_established(wsch__px_sock *s) {
    int rc = WSCH_ERR_ARG;
    switch (s->kind) {
#ifndef WS_CHANNEL_NO_CONN
    case WSCH__PX_CONN: {
        wsch_conn *c = NULL;
        rc = wsch_conn_create(&((wsch__px_serve *)s->owner)->desc, s, &c);
        s->obj = c;
        s->attached = rc == WSCH_OK;
        break;
    }
#endif
#ifndef WS_CHANNEL_NO_HUB
    case WSCH__PX_PEER: {
        wsch__px_hub *x = (wsch__px_hub *)s->owner;
        rc = wsch_hub_accept(x->hub, NULL, s, &s->h);
        if (rc == WSCH_OK) {
            x->npeers++;
            s->attached = 1;
        }
        break;
    }
#endif
#ifndef WS_CHANNEL_NO_CLIENT
    case WSCH__PX_LINK: wsch__px_link_ready(s); return;
#endif
    default: break;
    }
    if (rc != WSCH_OK) {            /* refused (full, shutting down, memory): the socket is still ours */
        s->obj = NULL;
        wsch__px_sock_close(s, 0);
        return;
    }
    wsch__px_mark_dirty(s);
}

// >>posix-client
#ifndef WS_CHANNEL_NO_CLIENT
typedef char wsch__px_client_events_forwarded[(offsetof(wsch_client_desc, on_presence) + sizeof(void (*)(void)) ==
                                               sizeof(wsch_client_desc)) ? 1 : -1];
WSCH__PRIVATE wsch__px_client *wsch__px_cl(wsch_client *c) { return (wsch__px_client *)wsch_client_user(c); }

WSCH__PRIVATE void wsch__px_cl_status(wsch_client *c, wsch_status st, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    x->app.on_status(c, st, x->app.user);
}
WSCH__PRIVATE void wsch__px_cl_connect(wsch_client *c, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    x->app.on_connect(c, x->app.user);
}
WSCH__PRIVATE void wsch__px_cl_disconnect(wsch_client *c, int code, const char *reason, size_t len, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    x->app.on_disconnect(c, code, reason, len, x->app.user);
}
WSCH__PRIVATE void wsch__px_cl_error(wsch_client *c, int err, const char *what, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    x->app.on_error(c, err, what, x->app.user);
}
WSCH__PRIVATE void wsch__px_cl_binary(wsch_client *c, const void *data, size_t len, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    x->app.on_binary(c, data, len, x->app.user);
}
WSCH__PRIVATE void wsch__px_cl_stop(wsch_client *c, wsch_stop reason, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    x->app.on_stop(c, reason, x->app.user);
}
WSCH__PRIVATE void wsch__px_cl_recovery(wsch_client *c, const char *channel, int recovered, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    x->app.on_recovery(c, channel, recovered, x->app.user);
}
WSCH__PRIVATE void wsch__px_cl_ack(wsch_client *c, uint64_t id, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    x->app.on_ack(c, id, x->app.user);
}
WSCH__PRIVATE void wsch__px_cl_send_failed(wsch_client *c, uint64_t id, int err, const char *code, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    x->app.on_send_failed(c, id, err, code, x->app.user);
}
WSCH__PRIVATE void wsch__px_cl_presence(wsch_client *c, const char *channel, const char *member, const char *info,
                                        int joined, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    x->app.on_presence(c, channel, member, info, joined, x->app.user);
}
WSCH__PRIVATE void wsch__px_cl_log(const char *msg, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    x->app.effects.log(msg, x->app.user);
}

/* The client's effects: the link is whatever transport is current. */
WSCH__PRIVATE size_t wsch__px_cl_send(const void *data, size_t len, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    return x->link ? wsch__px_write(x->link, data, len) : WSCH_SEND_ERROR;
}

WSCH__PRIVATE void wsch__px_cl_close(void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    wsch__px_sock *s = x->link;
    x->link = NULL;
    if (s) wsch__px_sock_close(s, 1);
}

WSCH__PRIVATE wsch_posix_timer *wsch__px_cl_timer(wsch__px_client *x, unsigned id) {
    switch (id) {
    case 1: return &x->timer[0];
    case 2: return &x->timer[1];
    case WSCH_CLIENT_TIMER_RETRY: return &x->timer[2];
    case WSCH_CLIENT_TIMER_HEARTBEAT: return &x->timer[3];
    case WSCH_CLIENT_TIMER_PONG: return &x->timer[4];
    default: return NULL;
    }
}

WSCH__PRIVATE void wsch__px_cl_timer_set(unsigned id, uint32_t delay_ms, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    wsch_posix_timer *t = wsch__px_cl_timer(x, id);
    if (!t) wsch__px_log(x->loop, "wsch posix: a client timer id the loop does not know");
    else if (!x->dead) wsch__px_timer_arm(x->loop, t, delay_ms);
}

WSCH__PRIVATE void wsch__px_cl_timer_cancel(unsigned id, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    wsch_posix_timer *t = wsch__px_cl_timer(x, id);
    if (t) wsch_posix_timer_stop(x->loop, t);
}

WSCH__PRIVATE void wsch__px_cl_timer_fired(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    (void)loop;
    if (x->dead) return;
    wsch_client_timer_fired(x->client, t->id);
    if (x->link) wsch__px_mark_dirty(x->link);
}

WSCH__PRIVATE void wsch__px_cl_random(void *buf, size_t len, void *user) {
    wsch__px_random(((wsch__px_client *)user)->loop, buf, len);
}

/* Tries the next address; none left: the try has failed. */
WSCH__PRIVATE void wsch__px_link_try(wsch__px_client *x) {
    wsch_posix_loop *loop = x->loop;
    while (x->next_addr < x->naddrs && !x->dead) {
        const struct sockaddr *sa = (const struct sockaddr *)x->addrs[x->next_addr];
        socklen_t len = (socklen_t)x->lens[x->next_addr];
        uint64_t now = wsch_posix_now_ms(NULL);
        wsch__px_sock *s;
        int fd, r;
        x->next_addr++;
        if (now >= x->connect_deadline) break;
        fd = socket(sa->sa_family, SOCK_STREAM, 0);
        if (fd < 0) continue;
        wsch__px_nonblock(fd);
        wsch__px_tune(fd);
        s = wsch__px_sock_new(loop, fd, WSCH__PX_LINK, x->opts.transport);
        if (!s) {
            (void)close(fd);
            break;
        }
        s->io.fn = wsch__px_sock_event;
        s->obj = x;
        x->link = s;
        wsch__px_timer_arm(loop, &s->timer[0], (uint32_t)(x->connect_deadline - now));     /* the deadline */
        do {
            r = connect(fd, sa, len);
        } while (r != 0 && errno == EINTR);
        if (r == 0) {
            wsch__px_link_up(s);
            return;
        }
        if (errno == EINPROGRESS) {
            s->state = WSCH__PX_S_CONNECTING;
            if (wsch__px_io_set(loop, &s->io, WSCH_POSIX_WRITE) == WSCH_OK) return;
        }
        x->link = NULL;
        wsch__px_sock_close(s, 0);  /* refused at once (or the backend refused it): the next address */
    }
    /* Every address failed. The client calls the close effect (x->link is
       NULL: nothing left to close) and decides about retrying. */
    x->next_addr = x->naddrs;
    if (!x->dead) wsch_client_transport_failed(x->client);
}

/* This address failed (refused, timed out, the transport's handshake). */
WSCH__PRIVATE void wsch__px_link_failed(wsch__px_sock *s) {
    wsch__px_client *x = (wsch__px_client *)s->obj;
    if (x->link == s) x->link = NULL;
    wsch__px_sock_close(s, 0);
    wsch__px_link_try(x);
}

/* TCP is up: the transport's handshake next (bounded by the connect
   deadline, whose timer runs on), or the library at once. */
WSCH__PRIVATE void wsch__px_link_up(wsch__px_sock *s) { wsch__px_sock_start(s, ((wsch__px_client *)s->obj)->host, 0); }

/* The link carries bytes: the client may send its opening request. */
WSCH__PRIVATE void wsch__px_link_ready(wsch__px_sock *s) {
    wsch__px_client *x = (wsch__px_client *)s->obj;
    wsch_posix_timer_stop(x->loop, &s->timer[0]);
    s->attached = 1;
    wsch__px_mark_dirty(s);
    wsch_client_transport_open(x->client);
}

WSCH__PRIVATE void wsch__px_cl_fx_connect(const char *host, uint16_t port, void *user) {
    wsch__px_client *x = (wsch__px_client *)user;
    size_t hl = WSCH_STRLEN(host);
    x->naddrs = x->next_addr = 0;
    x->connect_deadline = wsch_posix_now_ms(NULL) + x->opts.connect_timeout_ms;
    if (hl >= sizeof x->host) hl = sizeof x->host - 1;
    WSCH_MEMCPY(x->host, host, hl);
    x->host[hl] = '\0';
    if (x->opts.addr) {
        WSCH_MEMCPY(x->addrs[0], x->addr, x->opts.addr_len);
        x->lens[0] = x->opts.addr_len;
        x->naddrs = 1;
    } else if (x->opts.resolve) {
        size_t count = WSCH_POSIX_MAX_ADDRS, i;
        for (i = 0; i < WSCH_POSIX_MAX_ADDRS; i++) x->lens[i] = WSCH_POSIX_ADDR_MAX;
        if (x->opts.resolve(host, port, x->addrs, x->lens, &count, x->opts.resolve_user) == WSCH_OK)
            x->naddrs = count <= WSCH_POSIX_MAX_ADDRS ? count : WSCH_POSIX_MAX_ADDRS;
        for (i = 0; i < x->naddrs; i++) {
            if (x->lens[i] < sizeof(struct sockaddr_in) || x->lens[i] > WSCH_POSIX_ADDR_MAX) x->naddrs = i;
        }
    } else {
        struct addrinfo hints, *res = NULL, *ai;
        char service[8];
        WSCH_MEMSET(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        (void)snprintf(service, sizeof service, "%u", (unsigned)port);
        if (getaddrinfo(host, service, &hints, &res) == 0) {     /* blocks for a name: see "DNS" */
            for (ai = res; ai && x->naddrs < WSCH_POSIX_MAX_ADDRS; ai = ai->ai_next) {
                if ((size_t)ai->ai_addrlen > WSCH_POSIX_ADDR_MAX) continue;
                WSCH_MEMCPY(x->addrs[x->naddrs], ai->ai_addr, (size_t)ai->ai_addrlen);
                x->lens[x->naddrs++] = (size_t)ai->ai_addrlen;
            }
            freeaddrinfo(res);
        }
    }
    if (!x->naddrs) wsch__px_log(x->loop, "wsch posix: no address for the client's host");
    wsch__px_link_try(x);
}

WSCH_API int wsch_posix_client_create(wsch_posix_loop *loop, const wsch_client_desc *desc,
                                      const wsch_posix_client_opts *opts, wsch_client **out) {
    wsch__px_client *x;
    wsch_client_desc d;
    wsch_url u;
    int rc, k;
    if (out) *out = NULL;
    if (!loop || !desc || !out) return WSCH_ERR_ARG;
    if (opts && opts->addr && (opts->addr_len < sizeof(struct sockaddr_in) || opts->addr_len > WSCH_POSIX_ADDR_MAX))
        return WSCH_ERR_ARG;
    /* wss:// without a transport would go out in clear text. */
    if (desc->url && wsch_url_parse(desc->url, WSCH_STRLEN(desc->url), &u) == WSCH_OK && u.secure &&
        !(opts && opts->transport))
        return WSCH_ERR_ARG;
    rc = wsch__px_heap_room(loop, 5);
    if (rc != WSCH_OK) return rc;
    x = (wsch__px_client *)wsch__alloc(&loop->desc.allocator, sizeof *x);
    if (!x) return WSCH_ERR_NOMEM;
    WSCH_MEMSET(x, 0, sizeof *x);
    x->loop = loop;
    x->app = *desc;
    if (opts) x->opts = *opts;
    if (!x->opts.connect_timeout_ms) x->opts.connect_timeout_ms = WSCH_POSIX_DEFAULT_CONNECT_TIMEOUT_MS;
    if (x->opts.addr) {
        WSCH_MEMCPY(x->addr, x->opts.addr, x->opts.addr_len);
        x->opts.addr = x->addr;
    }
    for (k = 0; k < 5; k++) wsch_posix_timer_init(&x->timer[k], wsch__px_cl_timer_fired, x);
    x->timer[0].id = 1;
    x->timer[1].id = 2;
    x->timer[2].id = WSCH_CLIENT_TIMER_RETRY;
    x->timer[3].id = WSCH_CLIENT_TIMER_HEARTBEAT;
    x->timer[4].id = WSCH_CLIENT_TIMER_PONG;
    d = *desc;
    d.user = x;
    WSCH_MEMSET(&d.effects, 0, sizeof d.effects);
    d.effects.connect = wsch__px_cl_fx_connect;
    d.effects.send = wsch__px_cl_send;
    d.effects.close = wsch__px_cl_close;
    d.effects.timer_set = wsch__px_cl_timer_set;
    d.effects.timer_cancel = wsch__px_cl_timer_cancel;
    d.effects.now_ms = wsch_posix_now_ms;
    d.effects.random_bytes = wsch__px_cl_random;
    if (desc->effects.log) d.effects.log = wsch__px_cl_log;
    d.on_status = desc->on_status ? wsch__px_cl_status : NULL;
    d.on_connect = desc->on_connect ? wsch__px_cl_connect : NULL;
    d.on_disconnect = desc->on_disconnect ? wsch__px_cl_disconnect : NULL;
    d.on_error = desc->on_error ? wsch__px_cl_error : NULL;
    d.on_binary = desc->on_binary ? wsch__px_cl_binary : NULL;
    d.on_stop = desc->on_stop ? wsch__px_cl_stop : NULL;
    d.on_recovery = desc->on_recovery ? wsch__px_cl_recovery : NULL;
    d.on_ack = desc->on_ack ? wsch__px_cl_ack : NULL;
    d.on_send_failed = desc->on_send_failed ? wsch__px_cl_send_failed : NULL;
    d.on_presence = desc->on_presence ? wsch__px_cl_presence : NULL;
    loop->reserved += 5;
    rc = wsch_client_create(&d, &x->client);
    if (rc != WSCH_OK) {
        loop->reserved -= 5;
        wsch__free(&loop->desc.allocator, x);
        return rc;
    }
    x->next = loop->clients;
    if (loop->clients) loop->clients->prev = x;
    loop->clients = x;
    *out = x->client;
    return WSCH_OK;
}

WSCH_API void wsch_posix_client_destroy(wsch_client *c) {
    wsch__px_client *x;
    if (!c) return;
    x = wsch__px_cl(c);
    if (x->dead) return;
    wsch_client_destroy(c);         /* closes the link (our close effect), cancels its timers */
    x->dead = 1;                    /* freed at the end of the turn */
}

WSCH_API void *wsch_posix_client_user(const wsch_client *c) {
    return c ? ((wsch__px_client *)wsch_client_user(c))->app.user : NULL;
}

WSCH__PRIVATE void wsch__px_client_free(wsch_posix_loop *loop, wsch__px_client *x) {
    int k;
    for (k = 0; k < 5; k++) wsch_posix_timer_stop(loop, &x->timer[k]);
    if (x->prev) x->prev->next = x->next;
    else loop->clients = x->next;
    if (x->next) x->next->prev = x->prev;
    loop->reserved -= 5;
    wsch__free(&loop->desc.allocator, x);
}
#endif

// >>posix-watch
WSCH__PRIVATE void wsch__px_watch_event(wsch_posix_loop *loop, wsch__px_io *io, unsigned ev) {
    wsch_posix_watch *w = (wsch_posix_watch *)io;
    if (!w->dead) w->fn(loop, w, w->user_fd, ev, w->user);
}

WSCH_API int wsch_posix_watch_add(wsch_posix_loop *loop, int fd, unsigned events, wsch_posix_watch_fn fn, void *user,
                                  wsch_posix_watch **out) {
    wsch_posix_watch *w;
    if (out) *out = NULL;
    if (!loop || fd < 0 || !fn || !out) return WSCH_ERR_ARG;
    if (loop->nio >= loop->desc.max_fds) return WSCH_ERR_LIMIT;
    w = (wsch_posix_watch *)wsch__alloc(&loop->desc.allocator, sizeof *w);
    if (!w) return WSCH_ERR_NOMEM;
    WSCH_MEMSET(w, 0, sizeof *w);
    w->io.fd = fd;
    w->io.fn = wsch__px_watch_event;
    w->loop = loop;
    w->user_fd = fd;
    w->fn = fn;
    w->user = user;
    if (wsch__px_io_set(loop, &w->io, events) != WSCH_OK) {
        wsch__free(&loop->desc.allocator, w);
        return WSCH_ERR_STATE;
    }
    loop->nio++;
    w->next = loop->watches;
    loop->watches = w;
    *out = w;
    return WSCH_OK;
}

WSCH_API int wsch_posix_watch_set(wsch_posix_watch *w, unsigned events) {
    if (!w || w->dead) return WSCH_ERR_STATE;
    return wsch__px_io_set(w->loop, &w->io, events);
}

WSCH_API void wsch_posix_watch_remove(wsch_posix_watch *w) {
    if (!w || w->dead) return;
    wsch__px_io_remove(w->loop, &w->io);
    w->io.fd = -1;
    w->dead = 1;
}

// >>posix-signals
WSCH__PRIVATE void wsch__px_on_signal(int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (wsch__px_sig_fd >= 0) {
        ssize_t r = write((int)wsch__px_sig_fd, &b, 1);
        (void)r;
    }
    errno = saved;
}

WSCH__PRIVATE void wsch__px_signal_event(wsch_posix_loop *loop, wsch__px_io *io, unsigned ev) {
    unsigned char b[16];
    ssize_t n;
    (void)ev;
    n = read(io->fd, b, sizeof b);
    if (n <= 0) return;
    if (loop->shutting) {
        loop->stop = 1;             /* a second signal: no more waiting */
        return;
    }
    wsch__px_log(loop, "wsch posix: signal: shutting down");
    wsch_posix_loop_shutdown(loop);
    if (n > 1) loop->stop = 1;
}

WSCH_API int wsch_posix_handle_signals(wsch_posix_loop *loop) {
    struct sigaction sa;
    if (!loop) return WSCH_ERR_ARG;
    if (wsch__px_sig_fd >= 0 || loop->sig_pipe[0] >= 0) return WSCH_ERR_STATE;
    if (loop->nio >= loop->desc.max_fds) return WSCH_ERR_LIMIT;
    if (pipe(loop->sig_pipe) != 0) return WSCH_ERR_STATE;
    wsch__px_nonblock(loop->sig_pipe[0]);
    wsch__px_nonblock(loop->sig_pipe[1]);
    loop->sig_io.fd = loop->sig_pipe[0];
    loop->sig_io.fn = wsch__px_signal_event;
    if (wsch__px_io_set(loop, &loop->sig_io, WSCH_POSIX_READ) != WSCH_OK) {
        (void)close(loop->sig_pipe[0]);
        (void)close(loop->sig_pipe[1]);
        loop->sig_pipe[0] = loop->sig_pipe[1] = -1;
        loop->sig_io.fd = -1;
        return WSCH_ERR_STATE;
    }
    loop->nio++;
    wsch__px_sig_fd = loop->sig_pipe[1];
    WSCH_MEMSET(&sa, 0, sizeof sa);
    sa.sa_handler = wsch__px_on_signal;
    (void)sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGINT, &sa, &loop->old_int);
    (void)sigaction(SIGTERM, &sa, &loop->old_term);
    sa.sa_handler = SIG_IGN;
    (void)sigaction(SIGPIPE, &sa, &loop->old_pipe);
    return WSCH_OK;
}

WSCH__PRIVATE void wsch__px_signals_release(wsch_posix_loop *loop) {
    if (loop->sig_pipe[0] < 0) return;
    (void)sigaction(SIGINT, &loop->old_int, NULL);
    (void)sigaction(SIGTERM, &loop->old_term, NULL);
    (void)sigaction(SIGPIPE, &loop->old_pipe, NULL);
    wsch__px_sig_fd = -1;
    wsch__px_io_remove(loop, &loop->sig_io);
    (void)close(loop->sig_pipe[0]);
    (void)close(loop->sig_pipe[1]);
    loop->sig_pipe[0] = loop->sig_pipe[1] = -1;
    loop->sig_io.fd = -1;
    loop->nio--;
}

// >>posix-shutdown
WSCH__PRIVATE void wsch__px_shutdown_timeout(wsch_posix_loop *loop, wsch_posix_timer *t, void *user) {
    (void)t;
    (void)user;
    wsch__px_log(loop, "wsch posix: shutdown timed out");
    loop->stop = 1;
}

WSCH_API void wsch_posix_loop_shutdown(wsch_posix_loop *loop) {
    wsch_posix_listener *l;
    wsch__px_sock *s;
    if (!loop || loop->shutting) return;
    loop->shutting = 1;
    wsch_posix_timer_init(&loop->shutdown_timer, wsch__px_shutdown_timeout, NULL);
    if (wsch_posix_timer_start(loop, &loop->shutdown_timer, loop->desc.shutdown_timeout_ms) != WSCH_OK)
        loop->stop = 1;
    for (l = loop->listeners; l; l = l->next) wsch_posix_listener_close(l);
#ifndef WS_CHANNEL_NO_HUB
    {
        wsch__px_hub *x;
        for (x = loop->hubs; x; x = x->next) {
            if (!x->dead) wsch_hub_shutdown(x->hub);
        }
    }
#endif
#ifndef WS_CHANNEL_NO_CLIENT
    {
        wsch__px_client *x;
        for (x = loop->clients; x; x = x->next) {
            if (!x->dead) (void)wsch_client_disconnect(x->client);
        }
    }
#endif
    for (s = loop->socks; s; s = s->next) {
        if (s->kind != WSCH__PX_CONN || s->state == WSCH__PX_S_CLOSED) continue;
#ifndef WS_CHANNEL_NO_CONN
        if (s->obj) {
            (void)wsch_conn_close((wsch_conn *)s->obj, WSCH_CLOSE_GOING_AWAY, "Server shutting down", WSCH_CSTR);
            wsch__px_mark_dirty(s);
            continue;
        }
#endif
        wsch__px_sock_close(s, 0);  /* still in the transport's handshake */
    }
}

/* Shutting down and nothing of the library's is left: run() may return. */
WSCH__PRIVATE int wsch__px_shutdown_done(const wsch_posix_loop *loop) {
    const wsch__px_sock *s;
#ifndef WS_CHANNEL_NO_CLIENT
    const wsch__px_client *x;
    for (x = loop->clients; x; x = x->next) {
        if (!x->dead && x->link) return 0;
    }
#endif
    for (s = loop->socks; s; s = s->next) {
        if (s->state != WSCH__PX_S_CLOSED) return 0;
    }
    return 1;
}

// >>posix-loop
WSCH_API wsch_posix_loop_desc wsch_posix_loop_desc_defaults(const wsch_posix_loop_desc *desc) {
    wsch_posix_loop_desc d;
    wsch__desc_copy(&d, desc, sizeof d);
    if (d.backend == WSCH_POSIX_BACKEND_AUTO) {
#if WSCH_POSIX_EPOLL
        d.backend = WSCH_POSIX_BACKEND_EPOLL;
#elif WSCH_POSIX_KQUEUE
        d.backend = WSCH_POSIX_BACKEND_KQUEUE;
#else
        d.backend = WSCH_POSIX_BACKEND_POLL;
#endif
    }
    d.max_fds = wsch__or(d.max_fds, WSCH_POSIX_DEFAULT_MAX_FDS);
    d.max_timers = wsch__or(d.max_timers, WSCH_POSIX_DEFAULT_MAX_TIMERS);
    d.read_buffer_size = wsch__or(d.read_buffer_size, WSCH_POSIX_DEFAULT_READ_BUFFER);
    d.max_events = wsch__or(d.max_events, WSCH_POSIX_DEFAULT_MAX_EVENTS);
    if (d.max_events > 65536u) d.max_events = 65536u;
    d.read_pause_bytes = wsch__or(d.read_pause_bytes, WSCH_POSIX_DEFAULT_READ_PAUSE_BYTES);
    if (!d.shutdown_timeout_ms) d.shutdown_timeout_ms = WSCH_POSIX_DEFAULT_SHUTDOWN_MS;
    d.gather_bytes = wsch__or(d.gather_bytes, WSCH_POSIX_DEFAULT_GATHER_BYTES);
    return d;
}

WSCH_API int wsch_posix_loop_create(const wsch_posix_loop_desc *desc, wsch_posix_loop **out) {
    wsch_posix_loop *loop;
    wsch_posix_loop_desc d = wsch_posix_loop_desc_defaults(desc);
    int rc = WSCH_OK;
    if (out) *out = NULL;
    if (!out) return WSCH_ERR_ARG;
    if ((d.backend == WSCH_POSIX_BACKEND_EPOLL && !WSCH_POSIX_EPOLL) ||
        (d.backend == WSCH_POSIX_BACKEND_KQUEUE && !WSCH_POSIX_KQUEUE) || d.backend > WSCH_POSIX_BACKEND_POLL)
        return WSCH_ERR_ARG;
    loop = (wsch_posix_loop *)wsch__alloc(&d.allocator, sizeof *loop);
    if (!loop) return WSCH_ERR_NOMEM;
    WSCH_MEMSET(loop, 0, sizeof *loop);
    loop->desc = d;
    loop->bfd = -1;
    loop->spare_fd = -1;
    loop->sig_pipe[0] = loop->sig_pipe[1] = -1;
    loop->sig_io.fd = -1;
    loop->buf = (unsigned char *)wsch__alloc(&d.allocator, d.read_buffer_size);
    if (!loop->buf) rc = WSCH_ERR_NOMEM;
    if (rc == WSCH_OK && wsch__px_sys_random(loop->pool, sizeof loop->pool) != WSCH_OK) rc = WSCH_ERR_STATE;
#if WSCH_POSIX_EPOLL
    if (rc == WSCH_OK && d.backend == WSCH_POSIX_BACKEND_EPOLL) {
        loop->events = wsch__alloc(&d.allocator, d.max_events * sizeof(struct epoll_event));
        if (!loop->events) rc = WSCH_ERR_NOMEM;
        else if ((loop->bfd = epoll_create1(EPOLL_CLOEXEC)) < 0) rc = WSCH_ERR_STATE;
    }
#endif
#if WSCH_POSIX_KQUEUE
    if (rc == WSCH_OK && d.backend == WSCH_POSIX_BACKEND_KQUEUE) {
        loop->events = wsch__alloc(&d.allocator, d.max_events * sizeof(struct kevent));
        if (!loop->events) rc = WSCH_ERR_NOMEM;
        else if ((loop->bfd = kqueue()) < 0) rc = WSCH_ERR_STATE;
    }
#endif
    if (rc == WSCH_OK && loop->bfd >= 0) {
        int fl = fcntl(loop->bfd, F_GETFD, 0);
        if (fl >= 0) (void)fcntl(loop->bfd, F_SETFD, fl | FD_CLOEXEC);
    }
    if (rc != WSCH_OK) {
        if (loop->bfd >= 0) (void)close(loop->bfd);
        wsch__free(&d.allocator, loop->events);
        wsch__free(&d.allocator, loop->buf);
        wsch__free(&d.allocator, loop);
        return rc;
    }
    loop->spare_fd = open("/dev/null", O_RDONLY);
#if !defined(MSG_NOSIGNAL) && !defined(SO_NOSIGPIPE)
    /* No way to write to a socket without SIGPIPE on this system: a peer
       gone would kill the process. Ignoring it is the only defence. */
    (void)signal(SIGPIPE, SIG_IGN);
#endif
    loop->gmax = d.no_gather ? 0 : d.gather_bytes / WSCH_POSIX_GATHER_BLOCK;
    *out = loop;
    return WSCH_OK;
}

/* The end of a turn: hubs flushed, interest brought up to date, what
   finished freed. */
WSCH__PRIVATE void wsch__px_settle(wsch_posix_loop *loop) {
    wsch__px_sock *s;
    loop->flush_ms = 0;
#ifndef WS_CHANNEL_NO_HUB
    {
        wsch__px_hub *x, **px;
        for (x = loop->hubs; x; x = x->next) {
            uint32_t ms;
            if (x->dead) continue;
            ms = wsch_hub_flush(x->hub);
            if (ms && (!loop->flush_ms || ms < loop->flush_ms)) loop->flush_ms = ms;
        }
        for (px = &loop->hubs; (x = *px) != NULL;) {
            if (x->dead) {
                *px = x->next;
                wsch__free(&loop->desc.allocator, x);
            } else {
                px = &x->next;
            }
        }
    }
#endif
    while ((s = loop->dirty) != NULL) {
        loop->dirty = s->next_dirty;
        s->dirty = 0;
        wsch__px_follow(s);
    }
    while ((s = loop->grave) != NULL) {
        loop->grave = s->next_grave;
        if (s->pending) {           /* out of the pending list first */
            wsch__px_sock **pp;
            for (pp = &loop->pending; *pp; pp = &(*pp)->next_pending) {
                if (*pp == s) {
                    *pp = s->next_pending;
                    break;
                }
            }
        }
        wsch__px_sock_free(s);
    }
#ifndef WS_CHANNEL_NO_CLIENT
    {
        wsch__px_client *x = loop->clients;
        while (x) {
            wsch__px_client *next = x->next;
            if (x->dead) wsch__px_client_free(loop, x);
            x = next;
        }
    }
#endif
    {
        wsch_posix_listener *l, **pl;
        wsch_posix_watch *w, **pw;
        for (pl = &loop->listeners; (l = *pl) != NULL;) {
            if (l->dead) {
                *pl = l->next;
                loop->nio--;
                wsch__free(&loop->desc.allocator, l);
            } else {
                pl = &l->next;
            }
        }
        for (pw = &loop->watches; (w = *pw) != NULL;) {
            if (w->dead) {
                *pw = w->next;
                loop->nio--;
                wsch__free(&loop->desc.allocator, w);
            } else {
                pw = &w->next;
            }
        }
    }
    if (loop->shutting && wsch__px_shutdown_done(loop)) loop->stop = 1;
}

/* One turn; the caller has settled what happened before it. */
WSCH__PRIVATE int wsch__px_turn(wsch_posix_loop *loop, uint32_t max_wait_ms) {
    uint32_t wait;
    int n;
    wait = wsch__px_timer_wait(loop, max_wait_ms);
    if (loop->flush_ms && loop->flush_ms < wait) wait = loop->flush_ms;
    if (loop->pending || loop->stop) wait = 0;
    if (!loop->nio && !loop->nheap && !loop->flush_ms) wait = 0;   /* nothing could wake it */
    loop->in_turn = 1;
    loop->counters.turns++;
    n = wsch__px_wait(loop, wait == WSCH_POSIX_FOREVER ? -1 : (wait > 0x7fffffffu ? 0x7fffffff : (int)wait));
    if (n < 0) {
        loop->in_turn = 0;
        wsch__px_log(loop, "wsch posix: the wait failed");
        return WSCH_ERR_STATE;
    }
    if (loop->pending) {            /* sessions holding bytes the socket no longer shows */
        wsch__px_sock *s = loop->pending;
        loop->pending = NULL;
        while (s) {
            wsch__px_sock *next = s->next_pending;
            s->pending = 0;
            if (s->state == WSCH__PX_S_READY) {
                wsch__px_sock_read(s);
                wsch__px_mark_dirty(s);
            }
            s = next;
        }
    }
    wsch__px_timers_run(loop);
    loop->in_turn = 0;
    {                               /* what each socket gathered leaves in one write */
        wsch__px_sock *s = loop->touched;
        loop->touched = NULL;
        while (s) {
            wsch__px_sock *next = s->next_touched;
            s->touched = 0;
            if (s->glen && s->state == WSCH__PX_S_READY) {
                if (wsch__px_gather_flush(s) != WSCH_OK) wsch__px_owner_lost(s);
                else wsch__px_mark_dirty(s);
            }
            s = next;
        }
    }
    wsch__px_settle(loop);
    return WSCH_OK;
}

WSCH_API int wsch_posix_loop_run_once(wsch_posix_loop *loop, uint32_t max_wait_ms) {
    if (!loop) return WSCH_ERR_ARG;
    wsch__px_settle(loop);          /* what the caller did since the last turn */
    return wsch__px_turn(loop, max_wait_ms);
}

WSCH_API int wsch_posix_loop_run(wsch_posix_loop *loop) {
    int rc = WSCH_OK;
    if (!loop || loop->running) return WSCH_ERR_ARG;
    loop->running = 1;
    wsch__px_settle(loop);          /* what the caller did before; each turn settles its own */
    while (!loop->stop) {
        rc = wsch__px_turn(loop, WSCH_POSIX_FOREVER);
        if (rc != WSCH_OK) break;
        if (!loop->nio && !loop->nheap && !loop->flush_ms) break;   /* nothing can ever happen */
    }
    loop->running = 0;
    loop->stop = 0;
    return rc;
}

WSCH_API void wsch_posix_loop_stop(wsch_posix_loop *loop) {
    if (loop) loop->stop = 1;
}

WSCH_API wsch_posix_backend wsch_posix_loop_backend(const wsch_posix_loop *loop) {
    return loop ? loop->desc.backend : WSCH_POSIX_BACKEND_AUTO;
}

WSCH_API size_t wsch_posix_loop_sockets(const wsch_posix_loop *loop) { return loop ? loop->nsocks : 0; }

WSCH_API void wsch_posix_loop_counters(const wsch_posix_loop *loop, wsch_posix_counters *out) {
    if (!out) return;
    if (loop) *out = loop->counters;
    else WSCH_MEMSET(out, 0, sizeof *out);
}

WSCH_API void wsch_posix_loop_destroy(wsch_posix_loop *loop) {
    wsch__px_sock *s;
    if (!loop) return;
#ifndef WS_CHANNEL_NO_CLIENT
    {
        wsch__px_client *x;
        for (x = loop->clients; x; x = x->next) {
            if (!x->dead) wsch_client_destroy(x->client);
            x->dead = 1;
        }
    }
#endif
#ifndef WS_CHANNEL_NO_HUB
    {
        wsch__px_hub *x;
        for (x = loop->hubs; x; x = x->next) {
            if (!x->dead) wsch__px_hub_free(loop, x);
        }
    }
#endif
    for (s = loop->socks; s; s = s->next) {
        if (s->state == WSCH__PX_S_CLOSED) continue;
#ifndef WS_CHANNEL_NO_CONN
        if (s->kind == WSCH__PX_CONN && s->obj) {
            wsch_conn *c = (wsch_conn *)s->obj;
            s->obj = NULL;
            wsch_conn_destroy(c);   /* its close() runs: the socket closes */
        }
#endif
        wsch__px_sock_close(s, 0);
    }
    {
        wsch_posix_listener *l;
        wsch_posix_watch *w;
        for (l = loop->listeners; l; l = l->next) wsch_posix_listener_close(l);
        for (w = loop->watches; w; w = w->next) wsch_posix_watch_remove(w);
    }
    wsch__px_signals_release(loop);
    if (loop->shutting) wsch_posix_timer_stop(loop, &loop->shutdown_timer);
    loop->shutting = 0;
    wsch__px_settle(loop);          /* frees every record */
#ifndef WS_CHANNEL_NO_CONN
    while (loop->serves) {
        wsch__px_serve *v = loop->serves;
        loop->serves = v->next;
        wsch__free(&loop->desc.allocator, v);
    }
#endif
    {
        size_t i;                   /* your timers stay yours: only disarmed */
        for (i = 0; i < loop->nheap; i++) loop->heap[i]->slot = 0;
    }
    while (loop->gfree) {
        unsigned char *b = loop->gfree;
        WSCH_MEMCPY(&loop->gfree, b, sizeof loop->gfree);
        wsch__free(&loop->desc.allocator, b);
    }
    if (loop->bfd >= 0) (void)close(loop->bfd);
    if (loop->spare_fd >= 0) (void)close(loop->spare_fd);
    wsch__free(&loop->desc.allocator, loop->heap);
    wsch__free(&loop->desc.allocator, loop->pfd);
    wsch__free(&loop->desc.allocator, loop->pio);
    wsch__free(&loop->desc.allocator, loop->events);
    wsch__free(&loop->desc.allocator, loop->buf);
    wsch__free(&loop->desc.allocator, loop);
}
#endif /* WS_CHANNEL_POSIX */

#endif /* WS_CHANNEL_IMPLEMENTATION_DONE */
#endif /* WS_CHANNEL_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 the ws_channel.h authors
Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:
The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain.
Anyone is free to copy, modify, publish, use, compile, sell, or distribute this
software, either in source code form or as a compiled binary, for any purpose,
commercial or non-commercial, and by any means.
------------------------------------------------------------------------------
*/
