/* permessage-deflate on hostile input: the negotiation in both roles, and
   compressed frames into a server connection that agreed (inflated by zlib,
   through examples/deflate_zlib.h; this target links -lz).

     byte 0  bits 0-1  0 a request's offers, 1 a response's answer,
                       2 client frames after an agreed handshake
             bits 2-4  the desc's profile (parameters and windows)
     rest    modes 0 and 1: Sec-WebSocket-Extensions values, one header
             line per '\n'; mode 2: the bytes a client sends, fed in up to
             four pieces (byte 1: the split points' seed)

   Checks: negotiation results stay within the RFC's values and the desc's
   bounds; an accepted offer's answer, offered back, is accepted again with
   the same effect; a response is judged OK or WSCH_ERR_EXTENSION only;
   frames never deliver more than max_message_size, text is valid UTF-8,
   the connection ends with a documented close code, and every byte the
   library and zlib allocated is freed. */
#include "fuzz.h"
#include "examples/deflate_zlib.h"

#define DF_MAX_MESSAGE 4096u

static wsch_deflate_desc df_desc(unsigned profile) {
    wsch_deflate_desc d;
    memset(&d, 0, sizeof d);
    d.codec = deflate_zlib_codec();
    d.server_no_context_takeover = (uint8_t)(profile & 1u);
    d.client_no_context_takeover = (uint8_t)((profile >> 1) & 1u);
    if (profile & 4u) {
        d.server_max_window_bits = 10;
        d.client_max_window_bits = 9;
        d.mem_level = 2;
    }
    return d;
}

/* Writes a head: first line, then one Sec-WebSocket-Extensions line per
   '\n' of ext (CRs dropped, so the fuzzer cannot add other headers). */
static size_t df_head(char *out, size_t cap, const char *first, const uint8_t *ext, size_t n) {
    size_t at = 0, i;
    at += (size_t)snprintf(out, cap, "%s", first);
    at += (size_t)snprintf(out + at, cap - at, "Sec-WebSocket-Extensions: ");
    for (i = 0; i < n && at + 40 < cap; i++) {
        if (ext[i] == '\r' || ext[i] == 0) continue;
        if (ext[i] == '\n') at += (size_t)snprintf(out + at, cap - at, "\r\nSec-WebSocket-Extensions: ");
        else out[at++] = (char)ext[i];
    }
    at += (size_t)snprintf(out + at, cap - at, "\r\n\r\n");
    return at;
}

static const char df_request_line[] =
    "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

static void df_params_ok(const wsch_deflate_params *a) {
    FZ_CHECK(a->enabled == 1);
    FZ_CHECK(a->server_max_window_bits >= 8 && a->server_max_window_bits <= 15);
    FZ_CHECK(a->client_max_window_bits >= 8 && a->client_max_window_bits <= 15);
    FZ_CHECK(a->server_no_context_takeover <= 1 && a->client_no_context_takeover <= 1);
}

static void df_offers(const wsch_deflate_desc *d, const uint8_t *ext, size_t n) {
    static char buf[8192];
    wsch_request req;
    wsch_deflate_params a, again;
    char answer[256];
    size_t len = df_head(buf, sizeof buf, df_request_line, ext, n), used, alen;
    if (wsch_request_parse(buf, len, 0, sizeof buf, &req, &used) != WSCH_OK) return;
    if (!wsch_deflate_negotiate(&req, d, &a)) {
        FZ_CHECK(a.enabled == 0);
        return;
    }
    df_params_ok(&a);
    FZ_CHECK(a.server_max_window_bits >= 9);        /* this side never compresses with 8 */
    /* named in the answer only when offered (15 = not named), then never above this side's own */
    FZ_CHECK(a.server_max_window_bits == 15 ||
             a.server_max_window_bits <= (d->server_max_window_bits ? d->server_max_window_bits : 15));
    FZ_CHECK(wsch_deflate_response_build(&a, answer, sizeof answer, &alen) == WSCH_OK);
    /* the answer, offered back, is accepted with the same parameters */
    len = df_head(buf, sizeof buf, df_request_line, (const uint8_t *)answer, alen);
    FZ_CHECK(wsch_request_parse(buf, len, 0, sizeof buf, &req, &used) == WSCH_OK);
    FZ_CHECK(wsch_deflate_negotiate(&req, d, &again) == 1);
    FZ_CHECK(again.server_no_context_takeover == a.server_no_context_takeover &&
             again.client_no_context_takeover == a.client_no_context_takeover &&
             again.server_max_window_bits == a.server_max_window_bits);
    /* a client window named in the answer is a promise in the new offer: not named again */
    FZ_CHECK(again.client_max_window_bits == a.client_max_window_bits || again.client_max_window_bits == 15);
}

static void df_answer(const wsch_deflate_desc *d, const uint8_t *ext, size_t n) {
    static char buf[8192];
    wsch_response res;
    wsch_deflate_params a;
    size_t len = df_head(buf, sizeof buf, "HTTP/1.1 101 Switching Protocols\r\n", ext, n), used;
    int rc;
    if (wsch_response_parse(buf, len, 0, sizeof buf, &res, &used) != WSCH_OK) return;
    rc = wsch_deflate_response_check(&res, d, &a);
    FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_EXTENSION);
    if (rc != WSCH_OK || !a.enabled) {
        FZ_CHECK(a.enabled == 0);
        return;
    }
    df_params_ok(&a);
    FZ_CHECK(a.server_max_window_bits <= (d->server_max_window_bits ? d->server_max_window_bits : 15));
    FZ_CHECK(a.client_max_window_bits <= (d->client_max_window_bits ? d->client_max_window_bits : 15));
    /* with nothing offered, any extension is refused */
    FZ_CHECK(wsch_deflate_response_check(&res, NULL, &a) == WSCH_ERR_EXTENSION);
}

/* ---- frames into a server that agreed ---------------------------------- */

typedef struct df_run {
    int closes, close_code;
    size_t msgs;
} df_run;

static size_t df_send(const void *data, size_t len, void *user) {
    (void)data;
    (void)user;
    return len;
}
static void df_close(void *user) { ((df_run *)user)->closes++; }
static void df_message(wsch_conn *c, wsch_opcode op, void *data, size_t len, void *user) {
    (void)c;
    FZ_CHECK(len <= DF_MAX_MESSAGE);
    if (op == WSCH_OP_TEXT) FZ_CHECK(wsch_utf8_valid(data, len));
    ((df_run *)user)->msgs++;
}
static void df_on_close(wsch_conn *c, int code, const char *reason, size_t n, void *user) {
    (void)c;
    (void)reason;
    (void)n;
    ((df_run *)user)->close_code = code;
}

static void df_frames(unsigned profile, fz_in *in) {
    static const uint8_t offer[] = "permessage-deflate; client_max_window_bits";
    static char head[1024];
    wsch_conn_desc cd;
    wsch_conn *c;
    fz_alloc al;
    df_run r;
    unsigned seed = fz_u8(in);
    size_t len = df_head(head, sizeof head, df_request_line, offer, sizeof offer - 1);
    int piece;
    memset(&cd, 0, sizeof cd);
    memset(&al, 0, sizeof al);
    memset(&r, 0, sizeof r);
    cd.role = WSCH_ROLE_SERVER;
    cd.allocator = fz_allocator(&al);
    cd.effects.send = df_send;
    cd.effects.close = df_close;
    cd.on_message = df_message;
    cd.on_close = df_on_close;
    cd.limits.max_message_size = DF_MAX_MESSAGE;
    cd.limits.max_frame_size = DF_MAX_MESSAGE;
    cd.deflate = df_desc(profile);
    FZ_CHECK(wsch_conn_create(&cd, &r, &c) == WSCH_OK);
    FZ_CHECK(wsch_conn_feed(c, head, len) == WSCH_OK);
    FZ_CHECK(wsch_conn_deflate(c, NULL) == 1);
    for (piece = 0; piece < 4 && in->n && wsch_conn_state(c) != WSCH_STATE_CLOSED; piece++) {
        size_t want = piece == 3 ? in->n : (size_t)((seed >> (2 * piece)) & 3u) * 37u + 1u, got;
        char *copy;
        const uint8_t *p = fz_bytes(in, want, &got);
        copy = fz_dup(p, got);
        (void)wsch_conn_feed(c, copy, got);
        free(copy);
    }
    if (wsch_conn_state(c) == WSCH_STATE_CLOSED) {
        int code = r.close_code;
        FZ_CHECK(code == WSCH_CLOSE_PROTOCOL_ERROR || code == WSCH_CLOSE_INVALID_PAYLOAD ||
                 code == WSCH_CLOSE_MESSAGE_TOO_BIG || code == WSCH_CLOSE_ABNORMAL || code == WSCH_CLOSE_NO_STATUS ||
                 (code >= 1000 && code <= 4999));
    }
    wsch_conn_destroy(c);
    FZ_CHECK(r.closes == 1);
    FZ_CHECK(al.live == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in in;
    unsigned b0;
    wsch_deflate_desc d;
    in.p = data;
    in.n = size;
    b0 = fz_u8(&in);
    d = df_desc((b0 >> 2) & 7u);
    switch (b0 & 3u) {
    case 0: df_offers(&d, in.p, in.n); break;
    case 1: df_answer(&d, in.p, in.n); break;
    default: df_frames((b0 >> 2) & 7u, &in); break;
    }
    return 0;
}
