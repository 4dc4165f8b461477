/* Handshake layer: HTTP request/response parsing and building, the RFC 6455
   opening handshake in both roles, URLs, query strings, bearer tokens.

   Every parser input is also fed split in two at every byte and one byte at
   a time (growing buffer + prev_len), and every buffer is placed right before
   an unreadable page, so a read past the end faults. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER

#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

/* ------------------------------------------------------------------------
   Guard page: place(data, n) copies n bytes so that the last one sits just
   before a PROT_NONE page.
   ------------------------------------------------------------------------ */
#define GUARD_AREA (64u * 1024u)
static char *guard_end;

static void guard_init(void) {
#if defined(__linux__)
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t area = (GUARD_AREA + page - 1) / page * page;
    char *m = (char *)mmap(NULL, area + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + area, page, PROT_NONE) != 0) {
        fprintf(stderr, "guard page setup failed\n");
        exit(2);
    }
    guard_end = m + area;
#else
    /* Elsewhere the sanitizer build catches over-reads of a heap block. */
    guard_end = (char *)malloc(GUARD_AREA) + GUARD_AREA;
#endif
}

static const char *place(const char *data, size_t n) {
    char *p = guard_end - n;
    if (n > GUARD_AREA) {
        fprintf(stderr, "input too large for the guard area\n");
        exit(2);
    }
    if (n) memcpy(p, data, n);
    return p;
}

/* ------------------------------------------------------------------------
   Every-split driver, shared by the request and the response parser.
   ------------------------------------------------------------------------ */
typedef int (*parse_fn)(const char *buf, size_t len, size_t prev, size_t max, void *out, size_t *consumed);
typedef int (*same_fn)(const void *a, const char *base_a, const void *b, const char *base_b);

static int parse_req(const char *buf, size_t len, size_t prev, size_t max, void *out, size_t *consumed) {
    return wsch_request_parse(buf, len, prev, max, (wsch_request *)out, consumed);
}
static int parse_res(const char *buf, size_t len, size_t prev, size_t max, void *out, size_t *consumed) {
    return wsch_response_parse(buf, len, prev, max, (wsch_response *)out, consumed);
}

/* Same span, as an offset from each run's buffer. */
static int span_same(wsch_str a, const char *ba, wsch_str b, const char *bb) {
    if ((a.ptr == NULL) != (b.ptr == NULL) || a.len != b.len) return 0;
    return a.ptr == NULL || a.ptr - ba == b.ptr - bb;
}

static int headers_same(const wsch_http_header *a, size_t na, const char *ba, const wsch_http_header *b, size_t nb,
                        const char *bb) {
    size_t i;
    if (na != nb) return 0;
    for (i = 0; i < na; i++)
        if (!span_same(a[i].name, ba, b[i].name, bb) || !span_same(a[i].value, ba, b[i].value, bb)) return 0;
    return 1;
}

static int req_same(const void *va, const char *ba, const void *vb, const char *bb) {
    const wsch_request *a = (const wsch_request *)va, *b = (const wsch_request *)vb;
    return span_same(a->method, ba, b->method, bb) && span_same(a->target, ba, b->target, bb) &&
           span_same(a->path, ba, b->path, bb) && span_same(a->query, ba, b->query, bb) &&
           a->minor_version == b->minor_version && span_same(a->host, ba, b->host, bb) &&
           span_same(a->origin, ba, b->origin, bb) && span_same(a->key, ba, b->key, bb) &&
           span_same(a->authorization, ba, b->authorization, bb) && a->ws_version == b->ws_version &&
           headers_same(a->headers, a->num_headers, ba, b->headers, b->num_headers, bb);
}

static int res_same(const void *va, const char *ba, const void *vb, const char *bb) {
    const wsch_response *a = (const wsch_response *)va, *b = (const wsch_response *)vb;
    return a->status == b->status && a->minor_version == b->minor_version && span_same(a->reason, ba, b->reason, bb) &&
           headers_same(a->headers, a->num_headers, ba, b->headers, b->num_headers, bb);
}

/* Parses in[0..len) whole, split in two at every byte, and one byte at a
   time; all runs must give the same code, head length and fields. The last
   run is the whole input, so *obj's spans stay valid until the next place(). */
static enum greatest_test_res parse_every_way(parse_fn parse, same_fn same, size_t size, const char *in, size_t len,
                                              size_t max, int *rc, void *obj, size_t *consumed) {
    void *ref = malloc(size), *got = malloc(size);
    const char *ref_base, *p;
    size_t ref_used = 0, used = 0, k;
    int ref_rc, r;
    if (!ref || !got) FAILm("out of memory");

    ref_base = place(in, len);
    ref_rc = parse(ref_base, len, 0, max, ref, &ref_used);

#define AGREE(BASE)                                                                               \
    do {                                                                                          \
        if (r != ref_rc || (r == WSCH_OK && (used != ref_used || !same(ref, ref_base, got, BASE)))) { \
            fprintf(stdout, "\nsplit at %lu: rc %d vs %d\n", (unsigned long)k, r, ref_rc);          \
            free(ref);                                                                            \
            free(got);                                                                            \
            FAILm("an incremental parse disagrees with the whole-input parse");                   \
        }                                                                                         \
    } while (0)

    /* Two pieces: k bytes, then all of them. */
    for (k = 0; k <= len; k++) {
        p = place(in, k);
        r = parse(p, k, 0, max, got, &used);
        if (r == WSCH_INCOMPLETE) {
            p = place(in, len);
            r = parse(p, len, k, max, got, &used);
        }
        AGREE(p);
    }
    /* One byte at a time. */
    r = WSCH_INCOMPLETE;
    p = place(in, 0);
    for (k = 0; k <= len && r == WSCH_INCOMPLETE; k++) {
        p = place(in, k);
        r = parse(p, k, k ? k - 1 : 0, max, got, &used);
    }
    AGREE(p);
#undef AGREE

    p = place(in, len);
    *rc = parse(p, len, 0, max, obj, consumed);
    free(ref);
    free(got);
    ASSERT_EQ(ref_rc, *rc);
    PASS();
}

static enum greatest_test_res parse_request(const char *in, size_t len, size_t max, int *rc, wsch_request *req,
                                            size_t *consumed) {
    return parse_every_way(parse_req, req_same, sizeof *req, in, len, max, rc, req, consumed);
}

static enum greatest_test_res parse_response(const char *in, size_t len, size_t max, int *rc, wsch_response *res,
                                             size_t *consumed) {
    return parse_every_way(parse_res, res_same, sizeof *res, in, len, max, rc, res, consumed);
}

static int span_is(wsch_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.ptr != NULL && s.len == n && memcmp(s.ptr, lit, n) == 0;
}

#define S(lit) lit, sizeof(lit) - 1

/* ------------------------------------------------------------------------
   RFC 6455 sample handshake (sections 1.2, 1.3, 4.1, 4.2.2).
   ------------------------------------------------------------------------ */
#define RFC_REQUEST                                                        \
    "GET /chat HTTP/1.1\r\n"                                               \
    "Host: server.example.com\r\n"                                         \
    "Upgrade: websocket\r\n"                                               \
    "Connection: Upgrade\r\n"                                              \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                      \
    "Origin: http://example.com\r\n"                                       \
    "Sec-WebSocket-Protocol: chat, superchat\r\n"                          \
    "Sec-WebSocket-Version: 13\r\n"                                        \
    "\r\n"
#define RFC_RESPONSE                                                       \
    "HTTP/1.1 101 Switching Protocols\r\n"                                 \
    "Upgrade: websocket\r\n"                                               \
    "Connection: Upgrade\r\n"                                              \
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"               \
    "Sec-WebSocket-Protocol: chat\r\n"                                     \
    "\r\n"
#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="

TEST rfc_server_parses_sample(void) {
    wsch_request req;
    size_t used = 0, iter = 0;
    wsch_str p;
    int rc;
    CHECK_CALL(parse_request(S(RFC_REQUEST), 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(sizeof(RFC_REQUEST) - 1, used);
    ASSERT(span_is(req.method, "GET"));
    ASSERT(span_is(req.target, "/chat"));
    ASSERT(span_is(req.path, "/chat"));
    ASSERT(req.query.ptr == NULL && req.query.len == 0);
    ASSERT_EQ(1, req.minor_version);
    ASSERT(span_is(req.host, "server.example.com"));
    ASSERT(span_is(req.origin, "http://example.com"));
    ASSERT(span_is(req.key, RFC_KEY));
    ASSERT(req.authorization.ptr == NULL);
    ASSERT_EQ(13, req.ws_version);
    ASSERT_EQ(7u, req.num_headers);
    ASSERT(span_is(req.headers[5].name, "Sec-WebSocket-Protocol"));
    ASSERT(span_is(req.headers[5].value, "chat, superchat"));
    ASSERT_EQ(1, wsch_request_next_protocol(&req, &iter, &p));
    ASSERT(span_is(p, "chat"));
    ASSERT_EQ(1, wsch_request_next_protocol(&req, &iter, &p));
    ASSERT(span_is(p, "superchat"));
    ASSERT_EQ(0, wsch_request_next_protocol(&req, &iter, &p));
    ASSERT_EQ(WSCH_OK, wsch_request_check_upgrade(&req));
    PASS();
}

TEST rfc_server_builds_sample_response(void) {
    wsch_request req;
    size_t used = 0, n = 0;
    char out[512];
    int rc;
    CHECK_CALL(parse_request(S(RFC_REQUEST), 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(WSCH_OK, wsch_response_build(&req, "chat", NULL, out, sizeof out, &n));
    ASSERT_EQ(sizeof(RFC_RESPONSE) - 1, n);
    ASSERT_STR_EQ(RFC_RESPONSE, out);
    PASS();
}

TEST rfc_client_builds_sample_request(void) {
    wsch_handshake_request_desc d;
    char out[512], key[WSCH_KEY_LEN + 1];
    size_t n = 0;
    memset(&d, 0, sizeof d);
    d.host = "server.example.com";
    d.path = "/chat";
    d.origin = "http://example.com";
    d.protocols = "chat, superchat";
    memcpy(d.nonce, "the sample nonce", 16);
    ASSERT_EQ(WSCH_OK, wsch_handshake_request_build(&d, out, sizeof out, &n, key));
    ASSERT_EQ(sizeof(RFC_REQUEST) - 1, n);
    ASSERT_STR_EQ(RFC_REQUEST, out);
    ASSERT_STR_EQ(RFC_KEY, key);
    PASS();
}

TEST rfc_client_checks_sample_response(void) {
    wsch_response res;
    wsch_str proto;
    size_t used = 0;
    int rc;
    CHECK_CALL(parse_response(S(RFC_RESPONSE), 0, &rc, &res, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(sizeof(RFC_RESPONSE) - 1, used);
    ASSERT_EQ(101, res.status);
    ASSERT_EQ(1, res.minor_version);
    ASSERT(span_is(res.reason, "Switching Protocols"));
    ASSERT_EQ(4u, res.num_headers);
    ASSERT_EQ(WSCH_OK, wsch_response_check(&res, RFC_KEY, "chat, superchat", &proto));
    ASSERT(span_is(proto, "chat"));
    PASS();
}

/* RFC 6455 4.1 key example, as corrected by erratum 3150. */
TEST client_key_vector(void) {
    wsch_handshake_request_desc d;
    char out[512], key[WSCH_KEY_LEN + 1];
    size_t n = 0;
    unsigned char i;
    memset(&d, 0, sizeof d);
    d.host = "h";
    for (i = 0; i < 16; i++) d.nonce[i] = (unsigned char)(i + 1);
    ASSERT_EQ(WSCH_OK, wsch_handshake_request_build(&d, out, sizeof out, &n, key));
    ASSERT_STR_EQ("AQIDBAUGBwgJCgsMDQ4PEA==", key);
    ASSERT(strstr(out, "\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n") != NULL);
    PASS();
}

/* Client request -> server parse/check/answer -> client parse/check. */
TEST round_trip(void) {
    wsch_handshake_request_desc d;
    wsch_request req;
    wsch_response res;
    wsch_str proto;
    char request[1024], response[512], key[WSCH_KEY_LEN + 1], tok[64];
    size_t n = 0, m = 0, used = 0;
    wsch_token_source src;
    unsigned char i;
    int rc;
    memset(&d, 0, sizeof d);
    d.host = "::1";
    d.port = 9001;
    d.path = "/ws";
    d.query = "token=abc%20def&x=1";
    d.protocols = "v2.chat,v1.chat";
    d.extra_headers = "User-Agent: test\r\n";
    for (i = 0; i < 16; i++) d.nonce[i] = (unsigned char)(0xA0 + i * 7);
    ASSERT_EQ(WSCH_OK, wsch_handshake_request_build(&d, request, sizeof request, &n, key));
    ASSERT_EQ(strlen(request), n);

    CHECK_CALL(parse_request(request, n, 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(n, used);
    ASSERT_EQ(WSCH_OK, wsch_request_check_upgrade(&req));
    ASSERT(span_is(req.host, "[::1]:9001"));
    ASSERT(span_is(req.path, "/ws"));
    ASSERT(span_is(req.query, "token=abc%20def&x=1"));
    ASSERT(span_is(req.key, key));
    ASSERT_EQ(WSCH_OK, wsch_request_token(&req, tok, sizeof tok, &m, &src));
    ASSERT_STR_EQ("abc def", tok);
    ASSERT_EQ(WSCH_TOKEN_QUERY, src);
    ASSERT_EQ(WSCH_OK, wsch_response_build(&req, "v1.chat", "X-Server: t\r\n", response, sizeof response, &m));

    CHECK_CALL(parse_response(response, m, 0, &rc, &res, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(WSCH_OK, wsch_response_check(&res, key, d.protocols, &proto));
    ASSERT(span_is(proto, "v1.chat"));
    /* The same answer does not fit another key. */
    ASSERT_EQ(WSCH_ERR_ACCEPT, wsch_response_check(&res, RFC_KEY, d.protocols, &proto));
    PASS();
}

/* ------------------------------------------------------------------------
   Request parsing and the upgrade check: one table, every rule.
   ------------------------------------------------------------------------ */
#define GET_LINE "GET /ws HTTP/1.1\r\n"
#define L_HOST "Host: h\r\n"
#define L_UPG "Upgrade: websocket\r\n"
#define L_CONN "Connection: Upgrade\r\n"
#define L_KEY "Sec-WebSocket-Key: " RFC_KEY "\r\n"
#define L_VER "Sec-WebSocket-Version: 13\r\n"
#define GOOD L_HOST L_UPG L_CONN L_KEY L_VER

typedef struct req_case {
    const char *name;
    const char *in;
    size_t len;
    int parse_rc;
    int check_rc;               /* when parse_rc is WSCH_OK */
} req_case;

static const req_case req_cases[] = {
    {"minimal", S(GET_LINE GOOD "\r\n"), WSCH_OK, WSCH_OK},
    {"HTTP/1.9", S("GET /ws HTTP/1.9\r\n" GOOD "\r\n"), WSCH_OK, WSCH_OK},
    {"case-insensitive names and tokens",
     S(GET_LINE "HOST: h\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, UPGRADE\r\n"
                "sec-websocket-key: " RFC_KEY "\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n"),
     WSCH_OK, WSCH_OK},
    {"Upgrade and Connection lists over several lines",
     S(GET_LINE L_HOST "Upgrade: h2c\r\nUpgrade: foo/1, websocket\r\nConnection: keep-alive\r\n"
                "Connection: ,upgrade ,\r\n" L_KEY L_VER "\r\n"),
     WSCH_OK, WSCH_OK},
    {"whitespace around values", S(GET_LINE "Host:h\r\nUpgrade: \t websocket \t\r\n" L_CONN L_KEY
                                            "Sec-WebSocket-Version:13   \r\n\r\n"),
     WSCH_OK, WSCH_OK},
    {"obs-text in a value", S(GET_LINE GOOD "X-Name: caf\xc3\xa9\r\n\r\n"), WSCH_OK, WSCH_OK},
    {"HTAB inside a value", S(GET_LINE GOOD "X-A: a\tb\r\n\r\n"), WSCH_OK, WSCH_OK},
    {"empty value", S(GET_LINE GOOD "X-Empty:\r\n\r\n"), WSCH_OK, WSCH_OK},

    {"POST", S("POST /ws HTTP/1.1\r\n" GOOD "\r\n"), WSCH_OK, WSCH_ERR_METHOD},
    {"lowercase method", S("get /ws HTTP/1.1\r\n" GOOD "\r\n"), WSCH_OK, WSCH_ERR_METHOD},
    {"HTTP/1.0", S("GET /ws HTTP/1.0\r\n" GOOD "\r\n"), WSCH_OK, WSCH_ERR_HTTP_VERSION},
    {"HTTP/2.0", S("GET /ws HTTP/2.0\r\n" GOOD "\r\n"), WSCH_ERR_HTTP_VERSION, 0},
    {"HTTP/0.9", S("GET /ws HTTP/0.9\r\n" GOOD "\r\n"), WSCH_ERR_HTTP_VERSION, 0},
    {"no Host", S(GET_LINE L_UPG L_CONN L_KEY L_VER "\r\n"), WSCH_OK, WSCH_ERR_MISSING_HEADER},
    {"empty Host", S(GET_LINE "Host: \r\n" L_UPG L_CONN L_KEY L_VER "\r\n"), WSCH_OK, WSCH_ERR_MISSING_HEADER},
    {"no Upgrade", S(GET_LINE L_HOST L_CONN L_KEY L_VER "\r\n"), WSCH_OK, WSCH_ERR_MISSING_HEADER},
    {"Upgrade: h2c", S(GET_LINE L_HOST "Upgrade: h2c\r\n" L_CONN L_KEY L_VER "\r\n"), WSCH_OK,
     WSCH_ERR_MISSING_HEADER},
    {"Upgrade: websockets", S(GET_LINE L_HOST "Upgrade: websockets\r\n" L_CONN L_KEY L_VER "\r\n"), WSCH_OK,
     WSCH_ERR_MISSING_HEADER},
    {"no Connection", S(GET_LINE L_HOST L_UPG L_KEY L_VER "\r\n"), WSCH_OK, WSCH_ERR_MISSING_HEADER},
    {"Connection without the token",
     S(GET_LINE L_HOST L_UPG "Connection: keep-alive, upgrade-insecure\r\n" L_KEY L_VER "\r\n"), WSCH_OK,
     WSCH_ERR_MISSING_HEADER},
    {"Upgrade only in Connection's list",
     S(GET_LINE L_HOST "Connection: Upgrade, websocket\r\n" L_KEY L_VER "\r\n"), WSCH_OK,
     WSCH_ERR_MISSING_HEADER},
    {"version 8", S(GET_LINE L_HOST L_UPG L_CONN L_KEY "Sec-WebSocket-Version: 8\r\n\r\n"), WSCH_OK,
     WSCH_ERR_WS_VERSION},
    {"no version", S(GET_LINE L_HOST L_UPG L_CONN L_KEY "\r\n"), WSCH_OK, WSCH_ERR_WS_VERSION},
    {"version 013", S(GET_LINE L_HOST L_UPG L_CONN L_KEY "Sec-WebSocket-Version: 013\r\n\r\n"), WSCH_OK,
     WSCH_ERR_WS_VERSION},
    {"version list", S(GET_LINE L_HOST L_UPG L_CONN L_KEY "Sec-WebSocket-Version: 13, 8\r\n\r\n"), WSCH_OK,
     WSCH_ERR_WS_VERSION},
    {"no key", S(GET_LINE L_HOST L_UPG L_CONN L_VER "\r\n"), WSCH_OK, WSCH_ERR_MISSING_HEADER},
    {"empty key", S(GET_LINE L_HOST L_UPG L_CONN "Sec-WebSocket-Key:\r\n" L_VER "\r\n"), WSCH_OK, WSCH_ERR_KEY},
    {"key without padding",
     S(GET_LINE L_HOST L_UPG L_CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n" L_VER "\r\n"), WSCH_OK,
     WSCH_ERR_KEY},
    {"key of 23 characters",
     S(GET_LINE L_HOST L_UPG L_CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n" L_VER "\r\n"), WSCH_OK,
     WSCH_ERR_KEY},
    {"key of 18 bytes",
     S(GET_LINE L_HOST L_UPG L_CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZXNz\r\n" L_VER "\r\n"), WSCH_OK,
     WSCH_ERR_KEY},
    {"key with stray bits",
     S(GET_LINE L_HOST L_UPG L_CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n" L_VER "\r\n"), WSCH_OK,
     WSCH_ERR_KEY},
    {"key with a bad character",
     S(GET_LINE L_HOST L_UPG L_CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==\r\n" L_VER "\r\n"), WSCH_OK,
     WSCH_ERR_KEY},

    {"bare LF line ends", S("GET /ws HTTP/1.1\nHost: h\n\n"), WSCH_ERR_HTTP, 0},
    {"bare LF in the middle", S(GET_LINE "Host: h\n" L_UPG L_CONN L_KEY L_VER "\r\n"), WSCH_ERR_HTTP, 0},
    {"CR without LF", S("GET /ws HTTP/1.1\rHost: h\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"CR CR LF", S(GET_LINE GOOD "\r\r\n"), WSCH_ERR_HTTP, 0},
    {"obs-fold", S(GET_LINE GOOD "X-A: b\r\n c\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"obs-fold with HTAB", S(GET_LINE GOOD "X-A: b\r\n\tc\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"space before colon", S(GET_LINE "Host : h\r\n" L_UPG L_CONN L_KEY L_VER "\r\n"), WSCH_ERR_HTTP, 0},
    {"empty field name", S(GET_LINE GOOD ": x\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"separator in field name", S(GET_LINE GOOD "X(A): x\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"no colon", S(GET_LINE GOOD "X-A x\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"NUL in a value", S(GET_LINE GOOD "X-A: a\0b\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"DEL in a value", S(GET_LINE GOOD "X-A: a\x7f\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"ESC in a value", S(GET_LINE GOOD "X-A: \x1b[0m\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"two spaces after method", S("GET  /ws HTTP/1.1\r\n" GOOD "\r\n"), WSCH_ERR_HTTP, 0},
    {"trailing space on request line", S("GET /ws HTTP/1.1 \r\n" GOOD "\r\n"), WSCH_ERR_HTTP, 0},
    {"no target", S("GET HTTP/1.1\r\n" GOOD "\r\n"), WSCH_ERR_HTTP, 0},
    {"fragment in target", S("GET /ws#x HTTP/1.1\r\n" GOOD "\r\n"), WSCH_ERR_HTTP, 0},
    {"non-ASCII target", S("GET /w\xc3\xa9 HTTP/1.1\r\n" GOOD "\r\n"), WSCH_ERR_HTTP, 0},
    {"lowercase http", S("GET /ws http/1.1\r\n" GOOD "\r\n"), WSCH_ERR_HTTP, 0},
    {"two-digit minor", S("GET /ws HTTP/1.10\r\n" GOOD "\r\n"), WSCH_ERR_HTTP, 0},
    {"no version", S("GET /ws\r\n" GOOD "\r\n"), WSCH_ERR_HTTP, 0},
    {"separator in method", S("G(T /ws HTTP/1.1\r\n" GOOD "\r\n"), WSCH_ERR_HTTP, 0},
    {"leading empty line", S("\r\n" GET_LINE GOOD "\r\n"), WSCH_ERR_HTTP, 0},
    {"empty head", S("\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"TLS record", S("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), WSCH_ERR_HTTP, 0},
    {"LF as first byte", S("\n"), WSCH_ERR_HTTP, 0},

    {"duplicate Host", S(GET_LINE GOOD "host: other\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"duplicate key", S(GET_LINE GOOD "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"duplicate identical key", S(GET_LINE GOOD L_KEY "\r\n"), WSCH_ERR_HTTP, 0},
    {"duplicate version", S(GET_LINE GOOD "sec-websocket-version: 13\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"duplicate Origin", S(GET_LINE GOOD "Origin: http://a\r\nOrigin: http://b\r\n\r\n"), WSCH_ERR_HTTP, 0},
    {"duplicate Authorization", S(GET_LINE GOOD "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n"),
     WSCH_ERR_HTTP, 0},

    {"incomplete: no blank line", S(GET_LINE GOOD), WSCH_INCOMPLETE, 0},
    {"incomplete: ends in CR", S(GET_LINE GOOD "\r"), WSCH_INCOMPLETE, 0},
    {"incomplete: empty", "", 0, WSCH_INCOMPLETE, 0},
};

TEST request_table(void) {
    size_t i;
    for (i = 0; i < sizeof req_cases / sizeof req_cases[0]; i++) {
        const req_case *c = &req_cases[i];
        wsch_request req;
        size_t used = 0;
        int rc;
        CHECK_CALL(parse_request(c->in, c->len, 0, &rc, &req, &used));
        if (rc != c->parse_rc) {
            fprintf(stdout, "\n%s: parse %d (%s), expected %d\n", c->name, rc, wsch_err_str(rc), c->parse_rc);
            FAILm(c->name);
        }
        if (rc == WSCH_OK) {
            ASSERT_EQm(c->name, c->len, used);
            rc = wsch_request_check_upgrade(&req);
            if (rc != c->check_rc) {
                fprintf(stdout, "\n%s: check %d (%s), expected %d\n", c->name, rc, wsch_err_str(rc), c->check_rc);
                FAILm(c->name);
            }
        }
    }
    PASS();
}

TEST request_fields(void) {
    static const char in[] = "OPTIONS /a/b?x=1&y=%20?z HTTP/1.1\r\n"
                             "X-Trim:  \t value with  inner  spaces \t \r\n"
                             "Host: example.com:8080\r\n"
                             "Authorization: Bearer t0k\r\n"
                             "Origin: null\r\n"
                             "\r\n";
    wsch_request req;
    size_t used = 0;
    int rc;
    CHECK_CALL(parse_request(S(in), 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(span_is(req.method, "OPTIONS"));
    ASSERT(span_is(req.target, "/a/b?x=1&y=%20?z"));
    ASSERT(span_is(req.path, "/a/b"));
    ASSERT(span_is(req.query, "x=1&y=%20?z"));
    ASSERT(span_is(req.headers[0].value, "value with  inner  spaces"));
    ASSERT(span_is(req.host, "example.com:8080"));
    ASSERT(span_is(req.authorization, "Bearer t0k"));
    ASSERT(span_is(req.origin, "null"));
    ASSERT(req.key.ptr == NULL);
    ASSERT_EQ(-1, req.ws_version);
    ASSERT_EQ(WSCH_ERR_METHOD, wsch_request_check_upgrade(&req));

    /* A '?' with nothing after it: the query is present and empty. */
    CHECK_CALL(parse_request(S("GET /p? HTTP/1.1\r\n\r\n"), 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(span_is(req.path, "/p"));
    ASSERT(req.query.ptr != NULL && req.query.len == 0);
    ASSERT_EQ(0u, req.num_headers);
    PASS();
}

TEST ws_version_values(void) {
    static const struct { const char *v; int want; } cases[] = {
        {"13", 13}, {"0", 0}, {"255", 255}, {"256", -1}, {"013", -1}, {"00", -1}, {"1a", -1},
        {"", -1}, {"+13", -1}, {"1 3", -1}, {"99999999999999999999", -1},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char in[256];
        wsch_request req;
        size_t used = 0;
        int rc;
        snprintf(in, sizeof in, "GET / HTTP/1.1\r\nSec-WebSocket-Version: %s\r\n\r\n", cases[i].v);
        CHECK_CALL(parse_request(in, strlen(in), 0, &rc, &req, &used));
        ASSERT_EQ(WSCH_OK, rc);
        ASSERT_EQm(cases[i].v, cases[i].want, req.ws_version);
    }
    PASS();
}

/* The head ends at the first blank line; what follows is frame data and is
   neither consumed nor looked at, however odd. */
TEST request_trailing_bytes(void) {
    static const char in[] = GET_LINE GOOD "\r\n\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58\0\n\r";
    wsch_request req;
    size_t used = 0;
    int rc;
    CHECK_CALL(parse_request(S(in), 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(sizeof(GET_LINE GOOD "\r\n") - 1, used);
    ASSERT_EQ(WSCH_OK, wsch_request_check_upgrade(&req));
    PASS();
}

/* Builds "GET / HTTP/1.1" + n header lines "X-Hnn: v" + blank line. */
static size_t build_flood(char *out, size_t cap, size_t n) {
    size_t len = 0, i;
    len += (size_t)snprintf(out + len, cap - len, "GET / HTTP/1.1\r\n");
    for (i = 0; i < n; i++) len += (size_t)snprintf(out + len, cap - len, "X-H%02lu: v\r\n", (unsigned long)i);
    len += (size_t)snprintf(out + len, cap - len, "\r\n");
    return len;
}

TEST header_count_limit(void) {
    char in[4096];
    wsch_request req;
    size_t len, used = 0;
    int rc;
    len = build_flood(in, sizeof in, WSCH_MAX_HEADERS);
    CHECK_CALL(parse_request(in, len, 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ((size_t)WSCH_MAX_HEADERS, req.num_headers);
    ASSERT(span_is(req.headers[WSCH_MAX_HEADERS - 1].value, "v"));
    len = build_flood(in, sizeof in, WSCH_MAX_HEADERS + 1);
    CHECK_CALL(parse_request(in, len, 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_ERR_HEADER_TOO_LARGE, rc);
    ASSERT_EQ(431, wsch_request_error_status(rc));
    len = build_flood(in, sizeof in, 100);
    CHECK_CALL(parse_request(in, len, 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_ERR_HEADER_TOO_LARGE, rc);
    PASS();
}

/* A head of exactly total bytes: request line, one X-Pad header, blank line. */
static size_t build_sized(char *out, size_t total) {
    static const char head[] = "GET / HTTP/1.1\r\nX-Pad: ";
    size_t pad = total - (sizeof head - 1) - 4;
    memcpy(out, head, sizeof head - 1);
    memset(out + sizeof head - 1, 'a', pad);
    memcpy(out + sizeof head - 1 + pad, "\r\n\r\n", 4);
    return total;
}

TEST header_bytes_limit(void) {
    static char in[9000];
    wsch_request req;
    size_t used = 0;
    int rc;
    /* Default 8192: a head of exactly 8192 bytes fits, one more does not. */
    CHECK_CALL(parse_request(in, build_sized(in, 8192), 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(8192u, used);
    CHECK_CALL(parse_request(in, build_sized(in, 8193), 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_ERR_HEADER_TOO_LARGE, rc);
    /* A flood with no end at all stops at the limit, not at the input's end. */
    memset(in, 'a', sizeof in);
    memcpy(in, "GET / HTTP/1.1\r\nX-A: ", 21);
    CHECK_CALL(parse_request(in, 8192, 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_ERR_HEADER_TOO_LARGE, rc);
    CHECK_CALL(parse_request(in, 8191, 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_INCOMPLETE, rc);
    /* An explicit limit. */
    CHECK_CALL(parse_request(in, build_sized(in, 100), 100, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    CHECK_CALL(parse_request(in, build_sized(in, 101), 100, &rc, &req, &used));
    ASSERT_EQ(WSCH_ERR_HEADER_TOO_LARGE, rc);
    /* A complete head under the limit with many bytes after it. */
    build_sized(in, 100);
    memset(in + 100, 0, sizeof in - 100);
    CHECK_CALL(parse_request(in, sizeof in, 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(100u, used);
    PASS();
}

TEST request_bad_args(void) {
    wsch_request req;
    size_t used = 0;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_request_parse("GET", 3, 4, 0, &req, &used));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_request_parse(NULL, 3, 0, 0, &req, &used));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_request_parse("GET", 3, 0, 0, NULL, &used));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_request_parse("GET", 3, 0, 0, &req, NULL));
    ASSERT_EQ(WSCH_INCOMPLETE, wsch_request_parse(NULL, 0, 0, 0, &req, &used));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_request_check_upgrade(NULL));
    PASS();
}

/* One-byte feeds scan each byte once: 1 MiB fed a byte at a time (a million
   calls) would take minutes if every call rescanned the buffer. */
TEST one_byte_feeds_are_linear(void) {
    const size_t total = 1024u * 1024u;
    char *in = (char *)malloc(total);
    wsch_request req;
    size_t k, used = 0;
    clock_t t0;
    double secs;
    int rc = WSCH_INCOMPLETE;
    ASSERT(in != NULL);
    build_sized(in, total);
    t0 = clock();
    for (k = 1; k <= total && rc == WSCH_INCOMPLETE; k++) rc = wsch_request_parse(in, k, k - 1, total, &req, &used);
    secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    free(in);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(total, used);
    ASSERT_LT(secs, 2.0);
    PASS();
}

TEST error_status_mapping(void) {
    ASSERT_EQ(426, wsch_request_error_status(WSCH_ERR_WS_VERSION));
    ASSERT_EQ(405, wsch_request_error_status(WSCH_ERR_METHOD));
    ASSERT_EQ(431, wsch_request_error_status(WSCH_ERR_HEADER_TOO_LARGE));
    ASSERT_EQ(400, wsch_request_error_status(WSCH_ERR_HTTP));
    ASSERT_EQ(400, wsch_request_error_status(WSCH_ERR_KEY));
    ASSERT_EQ(400, wsch_request_error_status(WSCH_ERR_MISSING_HEADER));
    ASSERT_EQ(400, wsch_request_error_status(WSCH_ERR_HTTP_VERSION));
    PASS();
}

/* ------------------------------------------------------------------------
   Header helpers.
   ------------------------------------------------------------------------ */
static wsch_str lit(const char *s) {
    wsch_str r;
    r.ptr = s;
    r.len = strlen(s);
    return r;
}

TEST header_tokens(void) {
    ASSERT_EQ(1, wsch_header_has_token(lit("keep-alive, Upgrade"), "upgrade"));
    ASSERT_EQ(1, wsch_header_has_token(lit("UPGRADE"), "upgrade"));
    ASSERT_EQ(1, wsch_header_has_token(lit(" , ,\tupgrade\t,"), "upgrade"));
    ASSERT_EQ(0, wsch_header_has_token(lit("upgrade2"), "upgrade"));
    ASSERT_EQ(0, wsch_header_has_token(lit("upgrad"), "upgrade"));
    ASSERT_EQ(0, wsch_header_has_token(lit("up grade"), "upgrade"));
    ASSERT_EQ(0, wsch_header_has_token(lit(""), "upgrade"));
    ASSERT_EQ(0, wsch_header_has_token(lit("keep-alive"), "upgrade"));
    PASS();
}

TEST header_find_and_protocols(void) {
    static const char in[] = "GET / HTTP/1.1\r\n"
                             "Sec-WebSocket-Protocol: a, b\r\n"
                             "X-Other: z\r\n"
                             "sec-websocket-protocol:\r\n"
                             "Sec-WebSocket-Protocol: ,c,, d \r\n"
                             "\r\n";
    static const char *const want[] = {"a", "b", "c", "d"};
    wsch_request req;
    wsch_str v;
    size_t used = 0, iter = 0, i;
    int rc;
    CHECK_CALL(parse_request(S(in), 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(WSCH_OK, wsch_header_find(req.headers, req.num_headers, "x-other", &v));
    ASSERT(span_is(v, "z"));
    ASSERT_EQ(WSCH_OK, wsch_header_find(req.headers, req.num_headers, "SEC-WEBSOCKET-PROTOCOL", &v));
    ASSERT(span_is(v, "a, b"));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, wsch_header_find(req.headers, req.num_headers, "X-Oth", &v));
    for (i = 0; i < 4; i++) {
        ASSERT_EQ(1, wsch_request_next_protocol(&req, &iter, &v));
        ASSERT(span_is(v, want[i]));
    }
    ASSERT_EQ(0, wsch_request_next_protocol(&req, &iter, &v));
    ASSERT_EQ(0, wsch_request_next_protocol(&req, &iter, &v));
    PASS();
}

/* ------------------------------------------------------------------------
   Server response builders.
   ------------------------------------------------------------------------ */
typedef int (*build_fn)(const void *ctx, char *out, size_t cap, size_t *out_len);

/* A builder refuses every cap below need + 1 with WSCH_ERR_BUFFER, the size
   it needs and an empty string, and fills exactly need + 1 bytes. */
static enum greatest_test_res check_caps(build_fn build, const void *ctx, const char *want) {
    char out[1024];
    size_t need = strlen(want), cap, n = 0;
    ASSERT_EQ(WSCH_ERR_BUFFER, build(ctx, NULL, 0, &n));
    ASSERT_EQ(need, n);
    for (cap = 1; cap <= need; cap++) {
        memset(out, 'Z', sizeof out);
        n = 0;
        ASSERT_EQ(WSCH_ERR_BUFFER, build(ctx, out, cap, &n));
        ASSERT_EQ(need, n);
        ASSERT_EQ('\0', out[0]);
        ASSERT_EQ('Z', out[cap]); /* nothing written past cap */
    }
    memset(out, 'Z', sizeof out);
    ASSERT_EQ(WSCH_OK, build(ctx, out, need + 1, &n));
    ASSERT_EQ(need, n);
    ASSERT_STR_EQ(want, out);
    ASSERT_EQ('Z', out[need + 1]);
    PASS();
}

static int build_rfc_response(const void *ctx, char *out, size_t cap, size_t *out_len) {
    return wsch_response_build((const wsch_request *)ctx, "chat", NULL, out, cap, out_len);
}

static int build_error_431(const void *ctx, char *out, size_t cap, size_t *out_len) {
    (void)ctx;
    return wsch_http_error_build(431, NULL, out, cap, out_len);
}

static int build_rfc_request(const void *ctx, char *out, size_t cap, size_t *out_len) {
    char key[WSCH_KEY_LEN + 1];
    return wsch_handshake_request_build((const wsch_handshake_request_desc *)ctx, out, cap, out_len, key);
}

TEST builders_never_truncate(void) {
    wsch_request req;
    wsch_handshake_request_desc d;
    size_t used = 0;
    int rc;
    CHECK_CALL(parse_request(S(RFC_REQUEST), 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    CHECK_CALL(check_caps(build_rfc_response, &req, RFC_RESPONSE));
    CHECK_CALL(check_caps(build_error_431, NULL,
                          "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                          "Content-Type: text/plain; charset=utf-8\r\n"
                          "Content-Length: 32\r\n"
                          "Connection: close\r\n"
                          "\r\n"
                          "Request Header Fields Too Large\n"));
    memset(&d, 0, sizeof d);
    d.host = "server.example.com";
    d.path = "/chat";
    d.origin = "http://example.com";
    d.protocols = "chat, superchat";
    memcpy(d.nonce, "the sample nonce", 16);
    CHECK_CALL(check_caps(build_rfc_request, &d, RFC_REQUEST));
    PASS();
}

TEST response_build_rules(void) {
    wsch_request req;
    char out[512];
    size_t used = 0, n = 0;
    int rc;
    CHECK_CALL(parse_request(S(RFC_REQUEST), 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    /* No protocol, and "" means none. */
    ASSERT_EQ(WSCH_OK, wsch_response_build(&req, NULL, NULL, out, sizeof out, &n));
    ASSERT_STR_EQ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                  out);
    ASSERT_EQ(WSCH_OK, wsch_response_build(&req, "", "", out, sizeof out, &n));
    ASSERT(strstr(out, "Sec-WebSocket-Protocol") == NULL);
    /* Extra headers go after the protocol, before the blank line. */
    ASSERT_EQ(WSCH_OK, wsch_response_build(&req, "superchat", "Set-Cookie: a=b\r\nX-Y: \r\n", out, sizeof out, &n));
    ASSERT(strstr(out, "Sec-WebSocket-Protocol: superchat\r\nSet-Cookie: a=b\r\nX-Y: \r\n\r\n") != NULL);
    /* Only an offered protocol, compared exactly. */
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_build(&req, "Chat", NULL, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_build(&req, "chat, superchat", NULL, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_build(&req, "chat\r\nX-Evil: 1", NULL, out, sizeof out, &n));
    /* Malformed extra header lines. */
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_build(&req, NULL, "X-A: b", out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_build(&req, NULL, "X-A: b\n", out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_build(&req, NULL, "X-A: b\r\nX-B", out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_build(&req, NULL, "X A: b\r\n", out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_build(&req, NULL, "X-A: b\rc\r\n", out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_build(&req, NULL, "\r\n", out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_build(&req, NULL, " X-A: b\r\n", out, sizeof out, &n));
    /* Without a key there is nothing to accept. */
    req.key.ptr = NULL;
    req.key.len = 0;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_build(&req, NULL, NULL, out, sizeof out, &n));
    PASS();
}

TEST error_responses(void) {
    static const struct { int status; const char *reason; const char *must; } cases[] = {
        {400, "Bad Request", NULL},
        {401, "Unauthorized", "\r\nWWW-Authenticate: Bearer\r\n"},
        {403, "Forbidden", NULL},
        {404, "Not Found", NULL},
        {405, "Method Not Allowed", "\r\nAllow: GET\r\n"},
        {408, "Request Timeout", NULL},
        {426, "Upgrade Required", "\r\nSec-WebSocket-Version: 13\r\n"},
        {429, "Too Many Requests", NULL},
        {431, "Request Header Fields Too Large", NULL},
        {500, "Internal Server Error", NULL},
        {503, "Service Unavailable", NULL},
        {302, "Found", NULL},
        {418, "Client Error", NULL},
        {599, "Server Error", NULL},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256], cl[32];
        wsch_response res;
        wsch_str v;
        size_t n = 0, used = 0;
        int rc;
        ASSERT_EQm(cases[i].reason, WSCH_OK, wsch_http_error_build(cases[i].status, NULL, out, sizeof out, &n));
        CHECK_CALL(parse_response(out, n, 0, &rc, &res, &used));
        ASSERT_EQm(cases[i].reason, WSCH_OK, rc);
        ASSERT_EQ(cases[i].status, res.status);
        ASSERT(span_is(res.reason, cases[i].reason));
        ASSERT_EQ(WSCH_OK, wsch_header_find(res.headers, res.num_headers, "Connection", &v));
        ASSERT(span_is(v, "close"));
        ASSERT_EQ(WSCH_OK, wsch_header_find(res.headers, res.num_headers, "Content-Length", &v));
        snprintf(cl, sizeof cl, "%lu", (unsigned long)(n - used));
        ASSERT(span_is(v, cl));
        ASSERT_EQ(strlen(cases[i].reason) + 1, n - used); /* the body: the reason and a newline */
        ASSERT_MEM_EQ(cases[i].reason, out + used, strlen(cases[i].reason));
        if (cases[i].must) ASSERTm(cases[i].reason, strstr(out, cases[i].must) != NULL);
        ASSERT_EQ(cases[i].status == 426, strstr(out, "Sec-WebSocket-Version") != NULL);
    }
    {
        char out[256];
        size_t n = 0;
        ASSERT_EQ(WSCH_OK, wsch_http_error_build(400, NULL, out, sizeof out, &n));
        ASSERT_STR_EQ("HTTP/1.1 400 Bad Request\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n"
                      "Content-Length: 12\r\n"
                      "Connection: close\r\n"
                      "\r\n"
                      "Bad Request\n",
                      out);
        ASSERT_EQ(WSCH_OK, wsch_http_error_build(404, "X-A: 1\r\n", out, sizeof out, &n));
        ASSERT(strstr(out, "Connection: close\r\nX-A: 1\r\n\r\nNot Found\n") != NULL);
        ASSERT_EQ(WSCH_ERR_ARG, wsch_http_error_build(404, "X-A: 1", out, sizeof out, &n));
        ASSERT_EQ(WSCH_ERR_ARG, wsch_http_error_build(101, NULL, out, sizeof out, &n));
        ASSERT_EQ(WSCH_ERR_ARG, wsch_http_error_build(200, NULL, out, sizeof out, &n));
        ASSERT_EQ(WSCH_ERR_ARG, wsch_http_error_build(600, NULL, out, sizeof out, &n));
        ASSERT_EQ(WSCH_ERR_ARG, wsch_http_error_build(-400, NULL, out, sizeof out, &n));
    }
    PASS();
}

static int build_ok_200(const void *ctx, char *out, size_t cap, size_t *out_len) {
    (void)ctx;
    return wsch_http_response_build(200, "text/html", "<p>hi</p>", 9, "Cache-Control: no-store\r\n", out, cap,
                                    out_len);
}

TEST http_response_builder(void) {
    static const char want200[] = "HTTP/1.1 200 OK\r\n"
                                  "Content-Type: text/html\r\n"
                                  "Content-Length: 9\r\n"
                                  "Connection: close\r\n"
                                  "Cache-Control: no-store\r\n"
                                  "\r\n"
                                  "<p>hi</p>";
    char out[512];
    size_t n = 0, used = 0;
    wsch_response res;
    int rc;
    /* A 200 with a body, parsed back; every cap below the size refused whole. */
    ASSERT_EQ(WSCH_OK, build_ok_200(NULL, out, sizeof out, &n));
    ASSERT_STR_EQ(want200, out);
    ASSERT_EQ(sizeof want200 - 1, n);
    CHECK_CALL(parse_response(out, n, 0, &rc, &res, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(200, res.status);
    ASSERT(span_is(res.reason, "OK"));
    ASSERT_EQ((size_t)9, n - used);
    CHECK_CALL(check_caps(build_ok_200, NULL, want200));
    /* Size query: out NULL, cap 0. */
    n = 0;
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_http_response_build(200, NULL, "x", 1, NULL, NULL, 0, &n));
    ASSERT_EQ(WSCH_OK, wsch_http_response_build(200, NULL, "x", 1, NULL, out, n + 1, &used));
    ASSERT_EQ(n, used);
    ASSERT(strstr(out, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 1\r\n") != NULL);
    /* Cap too small: nothing but an empty string, and the size needed. */
    memset(out, 'Z', sizeof out);
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_http_response_build(200, NULL, "x", 1, NULL, out, n, &used));
    ASSERT_EQ(n, used);
    ASSERT_EQ('\0', out[0]);
    ASSERT_EQ('Z', out[n]);
    /* Injection through any caller string is refused. */
    ASSERT_EQ(WSCH_ERR_ARG, wsch_http_response_build(200, "text/html\r\nSet-Cookie: a=b", "x", 1, NULL, out,
                                                     sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_http_response_build(200, NULL, "x", 1, "X-A: 1\r\n\r\nHTTP/1.1 200 OK\r\n", out,
                                                     sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_http_response_build(200, NULL, "x", 1, "X-A: 1\nX-B: 2\r\n", out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_http_response_build(200, NULL, "x", 1, "Content-Length: 0\r\n", out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_http_response_build(200, NULL, "x", 1, "transfer-encoding: chunked\r\n", out,
                                                     sizeof out, &n));
    /* Status range and bodyless statuses. */
    ASSERT_EQ(WSCH_ERR_ARG, wsch_http_response_build(101, NULL, NULL, 0, NULL, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_http_response_build(600, NULL, NULL, 0, NULL, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_http_response_build(204, NULL, "x", 1, NULL, out, sizeof out, &n));
    ASSERT_EQ(WSCH_OK, wsch_http_response_build(204, NULL, NULL, 0, NULL, out, sizeof out, &n));
    ASSERT_STR_EQ("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", out);
    ASSERT_EQ(WSCH_OK, wsch_http_response_build(304, NULL, NULL, 0, NULL, out, sizeof out, &n));
    ASSERT_STR_EQ("HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n", out);
    /* HEAD: the length of the body that is not sent. */
    ASSERT_EQ(WSCH_OK, wsch_http_response_build(200, NULL, NULL, 1234, NULL, out, sizeof out, &n));
    ASSERT(strstr(out, "Content-Length: 1234\r\nConnection: close\r\n\r\n") != NULL);
    ASSERT_EQ(strlen(out), n);
    ASSERT_EQ('\n', out[n - 1]);
    /* A header the status needs, unless the caller names its own. */
    ASSERT_EQ(WSCH_OK, wsch_http_response_build(405, NULL, NULL, 0, NULL, out, sizeof out, &n));
    ASSERT(strstr(out, "\r\nAllow: GET\r\n") != NULL);
    ASSERT_EQ(WSCH_OK, wsch_http_response_build(405, NULL, NULL, 0, "allow: GET, HEAD\r\n", out, sizeof out, &n));
    ASSERT(strstr(out, "Allow: GET\r\n") == NULL);
    ASSERT(strstr(out, "\r\nallow: GET, HEAD\r\n") != NULL);
    ASSERT_EQ(WSCH_OK, wsch_http_response_build(401, NULL, NULL, 0, "WWW-Authenticate: Basic\r\n", out, sizeof out, &n));
    ASSERT(strstr(out, "Bearer") == NULL);
    /* The one reason table, for 2xx and 3xx too. */
    ASSERT_EQ(WSCH_OK, wsch_http_response_build(302, NULL, NULL, 0, "Location: /x\r\n", out, sizeof out, &n));
    ASSERT(strncmp(out, "HTTP/1.1 302 Found\r\n", 20) == 0);
    ASSERT_EQ(WSCH_OK, wsch_http_response_build(299, NULL, NULL, 0, NULL, out, sizeof out, &n));
    ASSERT(strncmp(out, "HTTP/1.1 299 Success\r\n", 22) == 0);
    PASS();
}

/* ------------------------------------------------------------------------
   Client request builder.
   ------------------------------------------------------------------------ */
static enum greatest_test_res client_build(const wsch_handshake_request_desc *d, const char *must, int want_rc) {
    char out[1024], key[WSCH_KEY_LEN + 1];
    size_t n = 0;
    int rc = wsch_handshake_request_build(d, out, sizeof out, &n, key);
    if (rc != want_rc) {
        fprintf(stdout, "\nhost '%s' path '%s': %d, expected %d\n", d->host ? d->host : "(null)",
                d->path ? d->path : "(null)", rc, want_rc);
        FAILm("client request build");
    }
    if (must && strstr(out, must) == NULL) {
        fprintf(stdout, "\nmissing '%s' in:\n%s\n", must, out);
        FAILm("client request text");
    }
    PASS();
}

TEST client_request_fields(void) {
    wsch_handshake_request_desc d;
    memset(&d, 0, sizeof d);
    d.host = "example.com";
    CHECK_CALL(client_build(&d, "GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n", WSCH_OK));
    d.port = 80;
    CHECK_CALL(client_build(&d, "\r\nHost: example.com\r\n", WSCH_OK));
    d.port = 8080;
    CHECK_CALL(client_build(&d, "\r\nHost: example.com:8080\r\n", WSCH_OK));
    d.port = 443;
    CHECK_CALL(client_build(&d, "\r\nHost: example.com:443\r\n", WSCH_OK));
    d.host = "::1";
    d.port = 9001;
    CHECK_CALL(client_build(&d, "\r\nHost: [::1]:9001\r\n", WSCH_OK));
    d.host = "[2001:db8::7]";
    d.port = 0;
    CHECK_CALL(client_build(&d, "\r\nHost: [2001:db8::7]\r\n", WSCH_OK));
    d.host = "::ffff:10.0.0.1";
    CHECK_CALL(client_build(&d, "\r\nHost: [::ffff:10.0.0.1]\r\n", WSCH_OK));
    d.host = "10.0.0.1";
    d.path = "/chat/room";
    d.query = "token=a%2Bb&x";
    CHECK_CALL(client_build(&d, "GET /chat/room?token=a%2Bb&x HTTP/1.1\r\nHost: 10.0.0.1\r\n", WSCH_OK));
    d.query = "";
    CHECK_CALL(client_build(&d, "GET /chat/room HTTP/1.1\r\n", WSCH_OK));
    d.protocols = "a,,b";
    d.extra_headers = "Authorization: Bearer xyz\r\nCookie: c=1\r\n";
    CHECK_CALL(client_build(&d,
                            "Sec-WebSocket-Protocol: a,,b\r\nSec-WebSocket-Version: 13\r\n"
                            "Authorization: Bearer xyz\r\nCookie: c=1\r\n\r\n",
                            WSCH_OK));
    PASS();
}

TEST client_request_rejects(void) {
    static const char *const bad_hosts[] = {"", "a b", "a/b", "user@h", "h:80", "h\r\nX: y", "[::1", "[]", "[::g]",
                                            "[::1]:80", "caf\xc3\xa9", "a%41", "cafe:8080",
                                            "[a:b]", "[v1.x]"};
    static const char *const bad_paths[] = {"", "chat", "/a b", "/a#b", "/a\r\n", "/\x7f", "/\xc3\xa9"};
    static const char *const bad_protocols[] = {",", " ", "a b", "a;b", "chat\r\nX: 1", "a/b"};
    wsch_handshake_request_desc d;
    char out[256], key[WSCH_KEY_LEN + 1];
    size_t i, n = 0;
    memset(&d, 0, sizeof d);
    for (i = 0; i < sizeof bad_hosts / sizeof bad_hosts[0]; i++) {
        d.host = bad_hosts[i];
        CHECK_CALL(client_build(&d, NULL, WSCH_ERR_ARG));
    }
    d.host = "h";
    for (i = 0; i < sizeof bad_paths / sizeof bad_paths[0]; i++) {
        d.path = bad_paths[i];
        CHECK_CALL(client_build(&d, NULL, WSCH_ERR_ARG));
    }
    d.path = NULL;
    d.query = "a=b c";
    CHECK_CALL(client_build(&d, NULL, WSCH_ERR_ARG));
    d.query = "a#b";
    CHECK_CALL(client_build(&d, NULL, WSCH_ERR_ARG));
    d.query = NULL;
    for (i = 0; i < sizeof bad_protocols / sizeof bad_protocols[0]; i++) {
        d.protocols = bad_protocols[i];
        CHECK_CALL(client_build(&d, NULL, WSCH_ERR_ARG));
    }
    d.protocols = NULL;
    d.origin = "http://a\r\nX-Evil: 1";
    CHECK_CALL(client_build(&d, NULL, WSCH_ERR_ARG));
    d.origin = NULL;
    d.extra_headers = "X-A: 1";
    CHECK_CALL(client_build(&d, NULL, WSCH_ERR_ARG));
    /* headers the builder writes itself, or two Authorization lines: a
       server would refuse the request as ambiguous */
    d.extra_headers = "host: other\r\n";
    CHECK_CALL(client_build(&d, NULL, WSCH_ERR_ARG));
    d.extra_headers = "X-A: 1\r\nSec-WebSocket-Version: 8\r\n";
    CHECK_CALL(client_build(&d, NULL, WSCH_ERR_ARG));
    d.extra_headers = "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n";
    CHECK_CALL(client_build(&d, NULL, WSCH_ERR_ARG));
    d.extra_headers = "Authorization: Bearer a\r\nX-Trace: 1\r\n";
    CHECK_CALL(client_build(&d, NULL, WSCH_OK));
    d.extra_headers = NULL;
    CHECK_CALL(client_build(&d, NULL, WSCH_OK));
    d.host = NULL;
    CHECK_CALL(client_build(&d, NULL, WSCH_ERR_ARG));
    d.host = "h";
    ASSERT_EQ(WSCH_ERR_ARG, wsch_handshake_request_build(NULL, out, sizeof out, &n, key));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_handshake_request_build(&d, out, sizeof out, NULL, key));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_handshake_request_build(&d, out, sizeof out, &n, NULL));
    PASS();
}

/* ------------------------------------------------------------------------
   Response parsing and checking.
   ------------------------------------------------------------------------ */
#define R_STATUS "HTTP/1.1 101 Switching Protocols\r\n"
#define R_UPG "Upgrade: websocket\r\n"
#define R_CONN "Connection: Upgrade\r\n"
#define R_ACC "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
#define R_GOOD R_UPG R_CONN R_ACC

typedef struct res_case {
    const char *name;
    const char *in;
    size_t len;
    int parse_rc;
    int check_rc;
    const char *offered;
    const char *chosen;         /* expected *protocol, NULL = none */
} res_case;

static const res_case res_cases[] = {
    {"minimal", S(R_STATUS R_GOOD "\r\n"), WSCH_OK, WSCH_OK, NULL, NULL},
    {"offered, none chosen", S(R_STATUS R_GOOD "\r\n"), WSCH_OK, WSCH_OK, "chat", NULL},
    {"no reason phrase", S("HTTP/1.1 101\r\n" R_GOOD "\r\n"), WSCH_OK, WSCH_OK, NULL, NULL},
    {"empty reason phrase", S("HTTP/1.1 101 \r\n" R_GOOD "\r\n"), WSCH_OK, WSCH_OK, NULL, NULL},
    {"case-insensitive", S(R_STATUS "UPGRADE: WebSocket\r\nconnection: keep-alive, upgrade\r\n"
                                    "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
     WSCH_OK, WSCH_OK, NULL, NULL},
    {"protocol chosen", S(R_STATUS R_GOOD "Sec-WebSocket-Protocol: superchat\r\n\r\n"), WSCH_OK, WSCH_OK,
     "chat, superchat", "superchat"},

    {"200", S("HTTP/1.1 200 OK\r\n" R_GOOD "\r\n"), WSCH_OK, WSCH_ERR_STATUS, NULL, NULL},
    {"401", S("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"), WSCH_OK, WSCH_ERR_STATUS, NULL, NULL},
    {"no Upgrade", S(R_STATUS R_CONN R_ACC "\r\n"), WSCH_OK, WSCH_ERR_MISSING_HEADER, NULL, NULL},
    {"Upgrade list", S(R_STATUS "Upgrade: websocket, h2c\r\n" R_CONN R_ACC "\r\n"), WSCH_OK,
     WSCH_ERR_MISSING_HEADER, NULL, NULL},
    {"two Upgrade lines", S(R_STATUS R_UPG R_GOOD "\r\n"), WSCH_OK, WSCH_ERR_MISSING_HEADER, NULL, NULL},
    {"no Connection", S(R_STATUS R_UPG R_ACC "\r\n"), WSCH_OK, WSCH_ERR_MISSING_HEADER, NULL, NULL},
    {"Connection: close", S(R_STATUS R_UPG "Connection: close\r\n" R_ACC "\r\n"), WSCH_OK,
     WSCH_ERR_MISSING_HEADER, NULL, NULL},
    {"no Accept", S(R_STATUS R_UPG R_CONN "\r\n"), WSCH_OK, WSCH_ERR_ACCEPT, NULL, NULL},
    {"wrong Accept", S(R_STATUS R_UPG R_CONN "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo\r\n\r\n"), WSCH_OK,
     WSCH_ERR_ACCEPT, NULL, NULL},
    {"Accept in another case", S(R_STATUS R_UPG R_CONN "Sec-WebSocket-Accept: S3PPLMBITXAQ9KYGZZHZRBK+XOO=\r\n\r\n"),
     WSCH_OK, WSCH_ERR_ACCEPT, NULL, NULL},
    {"two Accept lines", S(R_STATUS R_GOOD R_ACC "\r\n"), WSCH_OK, WSCH_ERR_ACCEPT, NULL, NULL},
    {"extension", S(R_STATUS R_GOOD "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"), WSCH_OK,
     WSCH_ERR_EXTENSION, NULL, NULL},
    {"empty extension line", S(R_STATUS R_GOOD "Sec-WebSocket-Extensions:\r\n\r\n"), WSCH_OK, WSCH_ERR_EXTENSION,
     NULL, NULL},
    {"protocol not offered", S(R_STATUS R_GOOD "Sec-WebSocket-Protocol: chat\r\n\r\n"), WSCH_OK,
     WSCH_ERR_EXTENSION, NULL, NULL},
    {"protocol in another case", S(R_STATUS R_GOOD "Sec-WebSocket-Protocol: Chat\r\n\r\n"), WSCH_OK,
     WSCH_ERR_EXTENSION, "chat", NULL},
    {"protocol list", S(R_STATUS R_GOOD "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n"), WSCH_OK,
     WSCH_ERR_EXTENSION, "chat, superchat", NULL},
    {"two protocol lines", S(R_STATUS R_GOOD "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n\r\n"),
     WSCH_OK, WSCH_ERR_EXTENSION, "chat", NULL},
    {"empty protocol", S(R_STATUS R_GOOD "Sec-WebSocket-Protocol:\r\n\r\n"), WSCH_OK, WSCH_ERR_EXTENSION, "chat",
     NULL},

    {"HTTP/2.0", S("HTTP/2.0 101 Switching Protocols\r\n" R_GOOD "\r\n"), WSCH_ERR_HTTP_VERSION, 0, NULL, NULL},
    {"HTTP/2", S("HTTP/2 101 Switching Protocols\r\n" R_GOOD "\r\n"), WSCH_ERR_HTTP, 0, NULL, NULL},
    {"four-digit status", S("HTTP/1.1 1010 X\r\n" R_GOOD "\r\n"), WSCH_ERR_HTTP, 0, NULL, NULL},
    {"two-digit status", S("HTTP/1.1 10 X\r\n" R_GOOD "\r\n"), WSCH_ERR_HTTP, 0, NULL, NULL},
    {"two spaces", S("HTTP/1.1  101 X\r\n" R_GOOD "\r\n"), WSCH_ERR_HTTP, 0, NULL, NULL},
    {"control in reason", S("HTTP/1.1 101 X\x01Y\r\n" R_GOOD "\r\n"), WSCH_ERR_HTTP, 0, NULL, NULL},
    {"bare LF", S("HTTP/1.1 101 X\n" R_GOOD "\r\n"), WSCH_ERR_HTTP, 0, NULL, NULL},
    {"obs-fold", S(R_STATUS R_GOOD "X: a\r\n b\r\n\r\n"), WSCH_ERR_HTTP, 0, NULL, NULL},
    {"space before colon", S(R_STATUS "Upgrade : websocket\r\n" R_CONN R_ACC "\r\n"), WSCH_ERR_HTTP, 0, NULL,
     NULL},
    {"not HTTP", S("SSH-2.0-OpenSSH_9.2\r\n\r\n"), WSCH_ERR_HTTP, 0, NULL, NULL},
    {"incomplete", S(R_STATUS R_GOOD), WSCH_INCOMPLETE, 0, NULL, NULL},
};

TEST response_table(void) {
    size_t i;
    for (i = 0; i < sizeof res_cases / sizeof res_cases[0]; i++) {
        const res_case *c = &res_cases[i];
        wsch_response res;
        wsch_str proto;
        size_t used = 0;
        int rc;
        CHECK_CALL(parse_response(c->in, c->len, 0, &rc, &res, &used));
        if (rc != c->parse_rc) {
            fprintf(stdout, "\n%s: parse %d (%s), expected %d\n", c->name, rc, wsch_err_str(rc), c->parse_rc);
            FAILm(c->name);
        }
        if (rc != WSCH_OK) continue;
        ASSERT_EQm(c->name, c->len, used);
        proto.ptr = "junk";
        proto.len = 4;
        rc = wsch_response_check(&res, RFC_KEY, c->offered, &proto);
        if (rc != c->check_rc) {
            fprintf(stdout, "\n%s: check %d (%s), expected %d\n", c->name, rc, wsch_err_str(rc), c->check_rc);
            FAILm(c->name);
        }
        if (rc == WSCH_OK && c->chosen) ASSERTm(c->name, span_is(proto, c->chosen));
        if (rc == WSCH_OK && !c->chosen) ASSERTm(c->name, proto.ptr == NULL && proto.len == 0);
    }
    PASS();
}

TEST response_trailing_frames(void) {
    static const char in[] = RFC_RESPONSE "\x81\x05Hello";
    wsch_response res;
    size_t used = 0;
    int rc;
    CHECK_CALL(parse_response(S(in), 0, &rc, &res, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(sizeof(RFC_RESPONSE) - 1, used);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_check(NULL, RFC_KEY, NULL, NULL));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_response_check(&res, NULL, NULL, NULL));
    PASS();
}

/* ------------------------------------------------------------------------
   URLs.
   ------------------------------------------------------------------------ */
typedef struct url_case {
    const char *url;
    int rc;
    const char *host;
    unsigned port;
    int secure;
    const char *path;
    const char *query;          /* NULL = absent */
} url_case;

static const url_case url_cases[] = {
    {"ws://example.com", WSCH_OK, "example.com", 80, 0, "/", NULL},
    {"wss://example.com/chat?x=1", WSCH_OK, "example.com", 443, 1, "/chat", "x=1"},
    {"WS://Example.COM:8080/a/b", WSCH_OK, "Example.COM", 8080, 0, "/a/b", NULL},
    {"WsS://h", WSCH_OK, "h", 443, 1, "/", NULL},
    {"ws://[::1]:9001/ws", WSCH_OK, "::1", 9001, 0, "/ws", NULL},
    {"wss://[2001:db8::1]", WSCH_OK, "2001:db8::1", 443, 1, "/", NULL},
    {"ws://[::ffff:127.0.0.1]/", WSCH_OK, "::ffff:127.0.0.1", 80, 0, "/", NULL},
    {"ws://[::]/", WSCH_OK, "::", 80, 0, "/", NULL},
    {"ws://127.0.0.1:1/", WSCH_OK, "127.0.0.1", 1, 0, "/", NULL},
    {"ws://h:65535", WSCH_OK, "h", 65535, 0, "/", NULL},
    {"ws://h:00080", WSCH_OK, "h", 80, 0, "/", NULL},
    {"ws://h?token=abc", WSCH_OK, "h", 80, 0, "/", "token=abc"},
    {"ws://h/?", WSCH_OK, "h", 80, 0, "/", ""},
    {"ws://h/p?a=/?&b=%2F", WSCH_OK, "h", 80, 0, "/p", "a=/?&b=%2F"},
    {"ws://h/%41%7e/@:!$&'()*+,;=-._~", WSCH_OK, "h", 80, 0, "/%41%7e/@:!$&'()*+,;=-._~", NULL},
    {"ws://my-host_1.example~/", WSCH_OK, "my-host_1.example~", 80, 0, "/", NULL},

    {"http://h/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"wsx://h/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"w://h/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"//h/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws:h", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws:/h", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws:///p", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://?q", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://:80/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h:/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h:0/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h:65536/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h:123456/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h:99999999999999999999999/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h:8a/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h:-1/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h:80:81/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://user@h/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://user:pw@h/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h@evil.example:80/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/p#frag", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h#", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/p?q#f", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h /", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {" ws://h/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/a b", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/a\tb", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/\r\n", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/\x7f", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/caf\xc3\xa9", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h\xc3\xa9/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/a|b", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/a\"b", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/p?a=<b>", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/%zz", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/%4", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/?a=%", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h/?a=%4g", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://h%41/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://[::1/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://[]/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://[a:b]/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://[1.2.3.4]/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://[::1]x/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://[::1]:/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://[::g]/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://[fe80::1%25eth0]/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://::1/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
    {"ws://a[::1]/", WSCH_ERR_URL, NULL, 0, 0, NULL, NULL},
};

TEST url_table(void) {
    size_t i;
    for (i = 0; i < sizeof url_cases / sizeof url_cases[0]; i++) {
        const url_case *c = &url_cases[i];
        size_t len = strlen(c->url);
        const char *p = place(c->url, len);
        wsch_url u;
        int rc = wsch_url_parse(p, len, &u);
        if (rc != c->rc) {
            fprintf(stdout, "\n%s: %d, expected %d\n", c->url, rc, c->rc);
            FAILm(c->url);
        }
        if (rc != WSCH_OK) continue;
        ASSERTm(c->url, span_is(u.host, c->host));
        ASSERT_EQm(c->url, c->port, (unsigned)u.port);
        ASSERT_EQm(c->url, c->secure, u.secure);
        ASSERTm(c->url, span_is(u.path, c->path));
        if (c->query) ASSERTm(c->url, span_is(u.query, c->query));
        else ASSERTm(c->url, u.query.ptr == NULL && u.query.len == 0);
        ASSERTm(c->url, u.scheme.ptr == p && u.scheme.len == (c->secure ? 3u : 2u));
    }
    PASS();
}

/* The parser honours len: a prefix of a longer string is parsed alone. */
TEST url_prefix(void) {
    static const char s[] = "ws://h:81/abc#frag";
    wsch_url u;
    ASSERT_EQ(WSCH_OK, wsch_url_parse(s, 12, &u));
    ASSERT(span_is(u.path, "/ab"));
    ASSERT_EQ(81u, (unsigned)u.port);
    ASSERT_EQ(WSCH_ERR_URL, wsch_url_parse(s, sizeof s - 1, &u));
    ASSERT_EQ(WSCH_ERR_URL, wsch_url_parse(s, 7, &u)); /* "ws://h:" */
    ASSERT_EQ(WSCH_ERR_ARG, wsch_url_parse(NULL, 3, &u));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_url_parse(s, 3, NULL));
    PASS();
}

/* ------------------------------------------------------------------------
   Query strings.
   ------------------------------------------------------------------------ */
typedef struct query_case {
    const char *query;
    const char *key;
    int rc;
    const char *value;
    size_t value_len;
} query_case;

#define QV(lit) lit, sizeof(lit) - 1

static const query_case query_cases[] = {
    {"a=1&token=abc", "token", WSCH_OK, QV("abc")},
    {"token=abc&a=1", "token", WSCH_OK, QV("abc")},
    {"token=a%20b+c", "token", WSCH_OK, QV("a b c")},
    {"token=%2B%2b", "token", WSCH_OK, QV("++")},
    {"token=%e2%82%AC", "token", WSCH_OK, QV("\xe2\x82\xac")},
    {"token=%FF", "token", WSCH_OK, QV("\xff")},
    {"tok%65n=x", "token", WSCH_OK, QV("x")},
    {"a+b=c", "a b", WSCH_OK, QV("c")},
    {"a%3Db=c", "a=b", WSCH_OK, QV("c")},
    {"token=a=b", "token", WSCH_OK, QV("a=b")},
    {"token", "token", WSCH_OK, QV("")},
    {"token=", "token", WSCH_OK, QV("")},
    {"token=1&token=2", "token", WSCH_OK, QV("1")},
    {"tokens=1&token=2", "token", WSCH_OK, QV("2")},
    {"&&token=x&&", "token", WSCH_OK, QV("x")},
    {"=x&token=y", "token", WSCH_OK, QV("y")},
    {"token=?/:@", "token", WSCH_OK, QV("?/:@")},
    {"xtoken=1&tokenx=2&Token=3", "token", WSCH_ERR_NOT_FOUND, NULL, 0},
    {"&&a&", "", WSCH_ERR_NOT_FOUND, NULL, 0},
    {"a&=v", "", WSCH_OK, QV("v")},
    {"a=1", "token", WSCH_ERR_NOT_FOUND, NULL, 0},
    {"", "token", WSCH_ERR_NOT_FOUND, NULL, 0},
    {"tok", "token", WSCH_ERR_NOT_FOUND, NULL, 0},
    {"token=%4", "token", WSCH_ERR_URL, NULL, 0},
    {"token=%", "token", WSCH_ERR_URL, NULL, 0},
    {"token=ab%", "token", WSCH_ERR_URL, NULL, 0},
    {"token=%zz", "token", WSCH_ERR_URL, NULL, 0},
    {"token=%4g", "token", WSCH_ERR_URL, NULL, 0},
    {"token=%g4", "token", WSCH_ERR_URL, NULL, 0},
    {"token=%%41", "token", WSCH_ERR_URL, NULL, 0},
    {"a=%zz&token=x", "token", WSCH_ERR_URL, NULL, 0},
    {"token=x&a=%4", "token", WSCH_ERR_URL, NULL, 0},
    {"to%6ken=x", "token", WSCH_ERR_URL, NULL, 0},
    {"token=a%00b", "token", WSCH_ERR_URL, NULL, 0},
};

TEST query_table(void) {
    size_t i;
    for (i = 0; i < sizeof query_cases / sizeof query_cases[0]; i++) {
        const query_case *c = &query_cases[i];
        char out[64];
        size_t n = 12345;
        wsch_str q;
        int rc;
        q.len = strlen(c->query);
        q.ptr = place(c->query, q.len);
        rc = wsch_query_get(q, c->key, out, sizeof out, &n);
        if (rc != c->rc) {
            fprintf(stdout, "\n%s: %d, expected %d\n", c->query, rc, c->rc);
            FAILm(c->query);
        }
        if (rc != WSCH_OK) continue;
        ASSERT_EQm(c->query, c->value_len, n);
        ASSERT_MEM_EQm(c->query, c->value, out, n + 1); /* with the NUL */
    }
    PASS();
}

TEST query_edges(void) {
    char out[8];
    size_t n = 0;
    wsch_str absent;
    absent.ptr = NULL;
    absent.len = 0;
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, wsch_query_get(absent, "token", out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_query_get(lit("token=abcdefgh"), "token", out, sizeof out, &n));
    ASSERT_EQ(8u, n);
    ASSERT_EQ('\0', out[0]);
    ASSERT_EQ(WSCH_OK, wsch_query_get(lit("token=abcdefg"), "token", out, sizeof out, &n));
    ASSERT_STR_EQ("abcdefg", out);
    ASSERT_EQ(WSCH_OK, wsch_query_get(lit("token=%41%42%43%44%45%46%47"), "token", out, sizeof out, &n));
    ASSERT_STR_EQ("ABCDEFG", out);
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_query_get(lit("token=x"), "token", NULL, 0, &n));
    ASSERT_EQ(1u, n);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_query_get(lit("token=x"), NULL, out, sizeof out, &n));
    PASS();
}

TEST percent_encoding(void) {
    char out[1024], back[512], src[255], q[1100];
    size_t n = 0, m = 0, i;
    ASSERT_EQ(WSCH_OK, wsch_percent_encode(S("a b/\xc3\xa9~-._+&=%"), out, sizeof out, &n));
    ASSERT_STR_EQ("a%20b%2F%C3%A9~-._%2B%26%3D%25", out);
    ASSERT_EQ(strlen(out), n);
    ASSERT_EQ(WSCH_OK, wsch_percent_encode("", 0, out, 1, &n));
    ASSERT_EQ(0u, n);
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_percent_encode("/", 1, out, 3, &n));
    ASSERT_EQ(3u, n);
    ASSERT_EQ(WSCH_OK, wsch_percent_encode("/", 1, out, 4, &n));
    /* Every byte but NUL survives encode, then query decode. */
    for (i = 0; i < sizeof src; i++) src[i] = (char)(i + 1);
    ASSERT_EQ(WSCH_OK, wsch_percent_encode(src, sizeof src, out, sizeof out, &n));
    snprintf(q, sizeof q, "k=%s", out);
    ASSERT_EQ(WSCH_OK, wsch_query_get(lit(q), "k", back, sizeof back, &m));
    ASSERT_EQ(sizeof src, m);
    ASSERT_MEM_EQ(src, back, sizeof src);
    PASS();
}

/* ------------------------------------------------------------------------
   Token extraction.
   ------------------------------------------------------------------------ */
static enum greatest_test_res token_case(const char *headers, int want_rc, const char *want,
                                         wsch_token_source want_src) {
    char in[1024], out[64];
    wsch_request req;
    wsch_token_source src = WSCH_TOKEN_QUERY;
    size_t used = 0, n = 0;
    int rc;
    snprintf(in, sizeof in, "%s\r\n", headers);
    CHECK_CALL(parse_request(in, strlen(in), 0, &rc, &req, &used));
    ASSERT_EQm(headers, WSCH_OK, rc);
    rc = wsch_request_token(&req, out, sizeof out, &n, &src);
    if (rc != want_rc) {
        fprintf(stdout, "\n%s: %d, expected %d\n", headers, rc, want_rc);
        FAILm("token");
    }
    ASSERT_EQm(headers, want_src, src);
    if (want) {
        ASSERT_STR_EQm(headers, want, out);
        ASSERT_EQ(strlen(want), n);
    }
    PASS();
}

#define T_REQ(q) "GET /ws" q " HTTP/1.1\r\n"
#define T_AUTH "Authorization: Bearer A.b-c_d~e+f/g==\r\n"
#define T_PROTO "Sec-WebSocket-Protocol: app.v1, bearer.B-tok\r\n"

TEST token_precedence(void) {
    /* All three: the Authorization header wins, then the protocol, then the query. */
    CHECK_CALL(token_case(T_REQ("?token=C") T_PROTO T_AUTH, WSCH_OK, "A.b-c_d~e+f/g==", WSCH_TOKEN_AUTHORIZATION));
    CHECK_CALL(token_case(T_REQ("?token=C") T_PROTO, WSCH_OK, "B-tok", WSCH_TOKEN_PROTOCOL));
    CHECK_CALL(token_case(T_REQ("?a=1&token=C%2FD+E"), WSCH_OK, "C/D E", WSCH_TOKEN_QUERY));
    CHECK_CALL(token_case(T_REQ("?a=1") "Sec-WebSocket-Protocol: chat\r\n", WSCH_ERR_NOT_FOUND, NULL,
                          WSCH_TOKEN_NONE));
    CHECK_CALL(token_case(T_REQ(""), WSCH_ERR_NOT_FOUND, NULL, WSCH_TOKEN_NONE));
    /* Scheme and prefix are case-insensitive. */
    CHECK_CALL(token_case(T_REQ("") "authorization: bEaReR   xyz\r\n", WSCH_OK, "xyz", WSCH_TOKEN_AUTHORIZATION));
    CHECK_CALL(token_case(T_REQ("") "Sec-WebSocket-Protocol: BEARER.xyz\r\n", WSCH_OK, "xyz", WSCH_TOKEN_PROTOCOL));
    /* Another scheme is not ours: fall through. */
    CHECK_CALL(token_case(T_REQ("?token=q") "Authorization: Basic dXNlcjpwdw==\r\n", WSCH_OK, "q", WSCH_TOKEN_QUERY));
    CHECK_CALL(token_case(T_REQ("?token=q") "Authorization: Bearerx abc\r\n", WSCH_OK, "q", WSCH_TOKEN_QUERY));
    /* A Bearer header without a valid credential is an error, not a fallback. */
    CHECK_CALL(token_case(T_REQ("?token=q") "Authorization: Bearer\r\n", WSCH_ERR_HTTP, NULL, WSCH_TOKEN_NONE));
    CHECK_CALL(token_case(T_REQ("?token=q") "Authorization: Bearer a b\r\n", WSCH_ERR_HTTP, NULL, WSCH_TOKEN_NONE));
    CHECK_CALL(token_case(T_REQ("?token=q") "Authorization: Bearer a=b\r\n", WSCH_ERR_HTTP, NULL, WSCH_TOKEN_NONE));
    CHECK_CALL(token_case(T_REQ("?token=q") "Authorization: Bearer =\r\n", WSCH_ERR_HTTP, NULL, WSCH_TOKEN_NONE));
    /* The first bearer entry across several protocol lines; "bearer." alone is no token. */
    CHECK_CALL(token_case(T_REQ("?token=q") "Sec-WebSocket-Protocol: chat, bearer.\r\n"
                                            "Sec-WebSocket-Protocol: bearer.one, bearer.two\r\n",
                          WSCH_OK, "one", WSCH_TOKEN_PROTOCOL));
    CHECK_CALL(token_case(T_REQ("?token=q") "Sec-WebSocket-Protocol: bearer.\r\n", WSCH_OK, "q", WSCH_TOKEN_QUERY));
    CHECK_CALL(token_case(T_REQ("?token=q") "Sec-WebSocket-Protocol: bearer.a b\r\n", WSCH_ERR_HTTP, NULL,
                          WSCH_TOKEN_NONE));
    /* Query: empty counts as absent, a bad escape is an error. */
    CHECK_CALL(token_case(T_REQ("?token="), WSCH_ERR_NOT_FOUND, NULL, WSCH_TOKEN_NONE));
    CHECK_CALL(token_case(T_REQ("?token=a%zz"), WSCH_ERR_URL, NULL, WSCH_TOKEN_NONE));
    CHECK_CALL(token_case(T_REQ("?token=a%00"), WSCH_ERR_URL, NULL, WSCH_TOKEN_NONE));
    PASS();
}

TEST token_buffer(void) {
    static const char in[] = T_REQ("") "Authorization: Bearer 0123456789\r\n\r\n";
    wsch_request req;
    char out[10];
    size_t used = 0, n = 0;
    int rc;
    CHECK_CALL(parse_request(S(in), 0, &rc, &req, &used));
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_request_token(&req, out, sizeof out, &n, NULL));
    ASSERT_EQ(10u, n);
    ASSERT_EQ('\0', out[0]);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_request_token(NULL, out, sizeof out, &n, NULL));
    PASS();
}

SUITE(rfc_sample) {
    RUN_TEST(rfc_server_parses_sample);
    RUN_TEST(rfc_server_builds_sample_response);
    RUN_TEST(rfc_client_builds_sample_request);
    RUN_TEST(rfc_client_checks_sample_response);
    RUN_TEST(client_key_vector);
    RUN_TEST(round_trip);
}

SUITE(server_request) {
    RUN_TEST(request_table);
    RUN_TEST(request_fields);
    RUN_TEST(ws_version_values);
    RUN_TEST(request_trailing_bytes);
    RUN_TEST(header_count_limit);
    RUN_TEST(header_bytes_limit);
    RUN_TEST(request_bad_args);
    RUN_TEST(one_byte_feeds_are_linear);
    RUN_TEST(error_status_mapping);
    RUN_TEST(header_tokens);
    RUN_TEST(header_find_and_protocols);
}

SUITE(builders) {
    RUN_TEST(builders_never_truncate);
    RUN_TEST(response_build_rules);
    RUN_TEST(error_responses);
    RUN_TEST(http_response_builder);
    RUN_TEST(client_request_fields);
    RUN_TEST(client_request_rejects);
}

SUITE(client_response) {
    RUN_TEST(response_table);
    RUN_TEST(response_trailing_frames);
}

SUITE(urls_and_tokens) {
    RUN_TEST(url_table);
    RUN_TEST(url_prefix);
    RUN_TEST(query_table);
    RUN_TEST(query_edges);
    RUN_TEST(percent_encoding);
    RUN_TEST(token_precedence);
    RUN_TEST(token_buffer);
}

GREATEST_MAIN_DEFS();
int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    guard_init();
    RUN_SUITE(rfc_sample);
    RUN_SUITE(server_request);
    RUN_SUITE(builders);
    RUN_SUITE(client_response);
    RUN_SUITE(urls_and_tokens);
    GREATEST_MAIN_END();
}
