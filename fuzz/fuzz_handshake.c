/* Opening handshake: the server's request parser and upgrade check, the
   client's response parser and check, and the builders, round-tripped.

     byte 0  bits 0-1  0 request, 1 response, 2 client request build,
                       3 refusal build
             bits 2-7  max_bytes = value * 64 (0 = the default)
     byte 1  number of split points (low 3 bits), then 16-bit offsets
     rest    the message (or, for the builders, their NUL-separated fields)

   Parsers: the same bytes parsed whole, at the chosen prefixes and one
   byte at a time (each prefix in its own exact-size heap buffer) must give
   the same result and the same fields; every span lies inside the head.
   Builders: what they write must parse and pass the matching check. */
#include "fuzz.h"

#define HS_BIG 16384

static const char hs_key[] = "dGhlIHNhbXBsZSBub25jZQ==";

/* A span as an offset into its buffer, for comparing two parses of the same bytes. */
typedef struct hs_span {
    long off;               /* -1: absent */
    size_t len;
} hs_span;

static hs_span hs_rel(wsch_str s, const char *base, size_t len) {
    hs_span r;
    FZ_CHECK(fz_inside(s, base, len));
    FZ_CHECK(s.ptr != NULL || s.len == 0);
    r.off = s.ptr ? (long)(s.ptr - base) : -1;
    r.len = s.len;
    return r;
}

static void hs_same(hs_span a, hs_span b) {
    FZ_CHECK(a.off == b.off && a.len == b.len);
}

/* Runs a parser on the first k bytes of msg copied into a fresh buffer. */
typedef int (*hs_parse_fn)(const char *buf, size_t len, size_t prev, size_t max, void *out, size_t *consumed);

static int hs_req_parse(const char *buf, size_t len, size_t prev, size_t max, void *out, size_t *consumed) {
    return wsch_request_parse(buf, len, prev, max, (wsch_request *)out, consumed);
}
static int hs_res_parse(const char *buf, size_t len, size_t prev, size_t max, void *out, size_t *consumed) {
    return wsch_response_parse(buf, len, prev, max, (wsch_response *)out, consumed);
}

static void hs_headers_same(const wsch_http_header *a, size_t na, const char *ba, const wsch_http_header *b,
                            size_t nb, const char *bb, size_t len) {
    size_t i;
    FZ_CHECK(na == nb && na <= WSCH_MAX_HEADERS);
    for (i = 0; i < na; i++) {
        FZ_CHECK(a[i].name.len > 0);
        hs_same(hs_rel(a[i].name, ba, len), hs_rel(b[i].name, bb, len));
        hs_same(hs_rel(a[i].value, ba, len), hs_rel(b[i].value, bb, len));
        /* values are trimmed */
        if (a[i].value.len) {
            char f = a[i].value.ptr[0], l = a[i].value.ptr[a[i].value.len - 1];
            FZ_CHECK(f != ' ' && f != '\t' && l != ' ' && l != '\t');
        }
    }
}

static void hs_req_same(const wsch_request *a, const char *ba, const wsch_request *b, const char *bb, size_t len) {
    hs_same(hs_rel(a->method, ba, len), hs_rel(b->method, bb, len));
    hs_same(hs_rel(a->target, ba, len), hs_rel(b->target, bb, len));
    hs_same(hs_rel(a->path, ba, len), hs_rel(b->path, bb, len));
    hs_same(hs_rel(a->query, ba, len), hs_rel(b->query, bb, len));
    hs_same(hs_rel(a->host, ba, len), hs_rel(b->host, bb, len));
    hs_same(hs_rel(a->origin, ba, len), hs_rel(b->origin, bb, len));
    hs_same(hs_rel(a->key, ba, len), hs_rel(b->key, bb, len));
    hs_same(hs_rel(a->authorization, ba, len), hs_rel(b->authorization, bb, len));
    FZ_CHECK(a->minor_version == b->minor_version && a->ws_version == b->ws_version);
    hs_headers_same(a->headers, a->num_headers, ba, b->headers, b->num_headers, bb, len);
}

static void hs_res_same(const wsch_response *a, const char *ba, const wsch_response *b, const char *bb, size_t len) {
    FZ_CHECK(a->status == b->status && a->minor_version == b->minor_version);
    FZ_CHECK(a->status >= 0 && a->status <= 999); /* 3DIGIT; 0xx is let through */
    hs_same(hs_rel(a->reason, ba, len), hs_rel(b->reason, bb, len));
    hs_headers_same(a->headers, a->num_headers, ba, b->headers, b->num_headers, bb, len);
}

static int hs_parse_rc_ok(int rc) {
    return rc == WSCH_OK || rc == WSCH_INCOMPLETE || rc == WSCH_ERR_HEADER_TOO_LARGE || rc == WSCH_ERR_HTTP ||
           rc == WSCH_ERR_HTTP_VERSION;
}

/* Parses msg whole, then grown at the cut points, then grown a byte at a
   time; all three must agree. Returns the whole parse's code; *keep gets
   a heap copy of msg the whole parse's spans point into. */
static int hs_parse_all(hs_parse_fn parse, int is_req, const uint8_t *msg, size_t n, size_t max, const size_t *cuts,
                        size_t ncuts, void *whole, size_t whole_size, char **keep, size_t *consumed) {
    void *inc = malloc(whole_size);
    char *buf = fz_dup(msg, n);
    int rc, pass;
    FZ_CHECK(inc != NULL);
    rc = parse(buf, n, 0, max, whole, consumed);
    FZ_CHECK(hs_parse_rc_ok(rc));
    if (rc == WSCH_OK) FZ_CHECK(*consumed >= 4 && *consumed <= n && memcmp(buf + *consumed - 4, "\r\n\r\n", 4) == 0);
    for (pass = 0; pass < 2; pass++) {
        size_t prev = 0, k = 0, step = 0, used = 0;
        int r2 = WSCH_INCOMPLETE;
        char *piece = NULL;
        while (r2 == WSCH_INCOMPLETE) {
            /* pass 0: the fuzz-chosen prefixes, then all; pass 1: every byte */
            if (pass == 0) k = step < ncuts ? cuts[step] : n;
            else k = step < n ? step + 1 : n;
            if (k < prev) k = prev;
            free(piece);
            piece = fz_dup(msg, k);
            r2 = parse(piece, k, prev, max, inc, &used);
            FZ_CHECK(hs_parse_rc_ok(r2));
            prev = k;
            if (k == n && r2 == WSCH_INCOMPLETE) break;
            step++;
        }
        FZ_CHECK(r2 == rc);
        if (rc == WSCH_OK) {
            FZ_CHECK(used == *consumed);
            if (is_req) hs_req_same((const wsch_request *)whole, buf, (const wsch_request *)inc, piece, *consumed);
            else hs_res_same((const wsch_response *)whole, buf, (const wsch_response *)inc, piece, *consumed);
        }
        free(piece);
    }
    free(inc);
    *keep = buf;
    return rc;
}

static char *hs_span_dup(wsch_str s) { return fz_strdup(s.ptr ? s.ptr : "", s.len); }

/* A response built for req must parse and pass the client's check. */
static void hs_roundtrip_response(const wsch_request *req, const char *protocol, const char *extra) {
    char *out = (char *)malloc(HS_BIG), *key = hs_span_dup(req->key);
    size_t len = 0, need = 0, consumed = 0;
    wsch_response res;
    wsch_str chosen;
    int rc;
    FZ_CHECK(out != NULL);
    rc = wsch_response_build(req, protocol, extra, NULL, 0, &need);
    if (rc == WSCH_ERR_ARG) goto done; /* protocol not a token, say */
    FZ_CHECK(rc == WSCH_ERR_BUFFER && need > 0);
    if (need >= HS_BIG) goto done;
    rc = wsch_response_build(req, protocol, extra, out, need, &len);
    FZ_CHECK(rc == WSCH_ERR_BUFFER && out[0] == '\0');
    rc = wsch_response_build(req, protocol, extra, out, need + 1, &len);
    FZ_CHECK(rc == WSCH_OK && len == need && out[len] == '\0' && strlen(out) == len);
    rc = wsch_response_parse(out, len, 0, HS_BIG, &res, &consumed);
    FZ_CHECK(rc == WSCH_OK && consumed == len && res.status == 101);
    rc = wsch_response_check(&res, key, protocol, &chosen);
    FZ_CHECK(rc == WSCH_OK);
    if (protocol && *protocol) FZ_CHECK(chosen.len == strlen(protocol) && memcmp(chosen.ptr, protocol, chosen.len) == 0);
    else FZ_CHECK(chosen.ptr == NULL && chosen.len == 0);
done:
    free(key);
    free(out);
}

/* Header lines in a caller's block. */
static size_t hs_lines(const char *extra) {
    size_t n = 0;
    while (extra && (extra = strstr(extra, "\r\n")) != NULL) {
        n++;
        extra += 2;
    }
    return n;
}

/* A refusal must parse as a response with that status and an exact body. */
static void hs_check_refusal(int status, const char *extra) {
    char out[4096];
    size_t len = 0, consumed = 0;
    wsch_response res;
    wsch_str cl;
    int rc = wsch_http_error_build(status, extra, out, sizeof out, &len);
    if (status < 300 || status > 599) {
        FZ_CHECK(rc == WSCH_ERR_ARG);
        return;
    }
    FZ_CHECK(rc == WSCH_OK || (extra && (rc == WSCH_ERR_ARG || rc == WSCH_ERR_BUFFER)));
    if (rc != WSCH_OK) return;
    if (!extra) FZ_CHECK(len < 256);
    FZ_CHECK(len < sizeof out && out[len] == '\0');
    rc = wsch_response_parse(out, len, 0, sizeof out, &res, &consumed);
    if (rc == WSCH_ERR_HEADER_TOO_LARGE && hs_lines(extra) > WSCH_MAX_HEADERS - 8) return; /* too many to keep */
    FZ_CHECK(rc == WSCH_OK && res.status == status);
    FZ_CHECK(wsch_header_find(res.headers, res.num_headers, "content-length", &cl) == WSCH_OK);
    {
        char num[24];
        FZ_CHECK(cl.len < sizeof num);
        memcpy(num, cl.ptr, cl.len);
        num[cl.len] = '\0';
        FZ_CHECK((size_t)strtoul(num, NULL, 10) == len - consumed);
    }
    if (status == 426) {
        wsch_str v;
        FZ_CHECK(wsch_header_find(res.headers, res.num_headers, "Sec-WebSocket-Version", &v) == WSCH_OK);
        FZ_CHECK(v.len == 2 && memcmp(v.ptr, "13", 2) == 0);
    }
}

static void hs_request(const uint8_t *msg, size_t n, size_t max, const size_t *cuts, size_t ncuts) {
    wsch_request req;
    char *buf = NULL, tok[64], *big;
    size_t consumed = 0, tlen = 0, tlen2 = 0, iter = 0, count = 0;
    wsch_token_source src = WSCH_TOKEN_NONE, src2 = WSCH_TOKEN_NONE;
    wsch_str v, first_protocol = {NULL, 0};
    int rc = hs_parse_all(hs_req_parse, 1, msg, n, max, cuts, ncuts, &req, sizeof req, &buf, &consumed);
    int check, trc, trc2;
    if (rc != WSCH_OK) {
        int st = wsch_request_error_status(rc);
        if (rc != WSCH_INCOMPLETE) FZ_CHECK(st == (rc == WSCH_ERR_HEADER_TOO_LARGE ? 431 : 400));
        free(buf);
        return;
    }
    FZ_CHECK(req.method.len > 0 && req.target.len > 0);
    FZ_CHECK(req.path.ptr == req.target.ptr);
    FZ_CHECK(req.ws_version >= -1);
    /* single-valued headers: the lookup finds the same span the parser kept */
    if (req.host.ptr) {
        FZ_CHECK(wsch_header_find(req.headers, req.num_headers, "HOST", &v) == WSCH_OK);
        FZ_CHECK(v.ptr == req.host.ptr && v.len == req.host.len);
    }
    if (req.key.ptr) {
        FZ_CHECK(wsch_header_find(req.headers, req.num_headers, "sec-websocket-key", &v) == WSCH_OK);
        FZ_CHECK(v.ptr == req.key.ptr && v.len == req.key.len);
    }
    while (wsch_request_next_protocol(&req, &iter, &v)) {
        FZ_CHECK(++count <= consumed);
        FZ_CHECK(v.len > 0 && fz_inside(v, buf, consumed));
        FZ_CHECK(!memchr(v.ptr, ',', v.len));
        FZ_CHECK(v.ptr[0] != ' ' && v.ptr[0] != '\t' && v.ptr[v.len - 1] != ' ' && v.ptr[v.len - 1] != '\t');
        if (!first_protocol.ptr) first_protocol = v;
    }
    FZ_CHECK(!wsch_request_next_protocol(&req, &iter, &v)); /* stays at the end */
    /* token: a small buffer and a large one agree */
    trc = wsch_request_token(&req, tok, sizeof tok, &tlen, &src);
    big = (char *)malloc(HS_BIG);
    FZ_CHECK(big != NULL);
    trc2 = wsch_request_token(&req, big, HS_BIG, &tlen2, &src2);
    FZ_CHECK(trc2 == WSCH_OK || trc2 == WSCH_ERR_NOT_FOUND || trc2 == WSCH_ERR_HTTP || trc2 == WSCH_ERR_URL);
    if (trc == WSCH_OK) {
        FZ_CHECK(trc2 == WSCH_OK && tlen == tlen2 && src == src2 && tlen < sizeof tok && tok[tlen] == '\0');
        FZ_CHECK(memcmp(tok, big, tlen) == 0 && tlen > 0);
        FZ_CHECK(src == WSCH_TOKEN_QUERY || src == WSCH_TOKEN_AUTHORIZATION || src == WSCH_TOKEN_PROTOCOL);
    } else if (trc == WSCH_ERR_BUFFER) {
        FZ_CHECK(trc2 == WSCH_OK && tlen2 >= sizeof tok);
    } else {
        FZ_CHECK(trc == trc2);
    }
    free(big);
    check = wsch_request_check_upgrade(&req);
    if (check != WSCH_OK) {
        int st = wsch_request_error_status(check);
        FZ_CHECK(check == WSCH_ERR_METHOD || check == WSCH_ERR_HTTP_VERSION || check == WSCH_ERR_MISSING_HEADER ||
                 check == WSCH_ERR_WS_VERSION || check == WSCH_ERR_KEY);
        FZ_CHECK(st == (check == WSCH_ERR_WS_VERSION ? 426 : check == WSCH_ERR_METHOD ? 405 : 400));
        hs_check_refusal(st, NULL);
    } else {
        char *proto = first_protocol.ptr ? hs_span_dup(first_protocol) : NULL;
        FZ_CHECK(req.ws_version == 13 && req.key.len > 0 && req.host.len > 0);
        FZ_CHECK(req.method.len == 3 && memcmp(req.method.ptr, "GET", 3) == 0);
        hs_roundtrip_response(&req, NULL, NULL);
        hs_roundtrip_response(&req, proto, "X-Extra: 1\r\n");
        free(proto);
    }
    free(buf);
}

static void hs_response(const uint8_t *msg, size_t n, size_t max, const size_t *cuts, size_t ncuts) {
    wsch_response res;
    char *buf = NULL;
    size_t consumed = 0;
    wsch_str chosen;
    int rc = hs_parse_all(hs_res_parse, 0, msg, n, max, cuts, ncuts, &res, sizeof res, &buf, &consumed);
    if (rc == WSCH_OK) {
        rc = wsch_response_check(&res, hs_key, "chat, superchat", &chosen);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_STATUS || rc == WSCH_ERR_MISSING_HEADER || rc == WSCH_ERR_ACCEPT ||
                 rc == WSCH_ERR_EXTENSION);
        if (rc == WSCH_OK) {
            FZ_CHECK(res.status == 101);
            FZ_CHECK(fz_inside(chosen, buf, consumed));
            FZ_CHECK(chosen.ptr == NULL || (chosen.len == 4 && memcmp(chosen.ptr, "chat", 4) == 0) ||
                     (chosen.len == 9 && memcmp(chosen.ptr, "superchat", 9) == 0));
        }
        rc = wsch_response_check(&res, hs_key, NULL, &chosen);
        if (rc == WSCH_OK) FZ_CHECK(chosen.ptr == NULL);
    }
    free(buf);
}

/* Client request builder: fields from the input; whatever it accepts must
   be a valid upgrade carrying exactly those fields. */
static void hs_client_build(fz_in *in) {
    wsch_handshake_request_desc d;
    char *field[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    char *out = NULL, key[WSCH_KEY_LEN + 1];
    size_t i, need = 0, len = 0, consumed = 0, got;
    wsch_request req;
    const uint8_t *nonce;
    int rc;
    memset(&d, 0, sizeof d);
    d.port = (uint16_t)fz_u16(in);
    nonce = fz_bytes(in, 16, &got);
    memcpy(d.nonce, nonce, got);
    for (i = 0; i < 6; i++) { /* host, path, query, protocols, origin, extra: NUL-separated */
        const uint8_t *p = in->p, *z = (const uint8_t *)memchr(in->p, 0, in->n);
        size_t n = z ? (size_t)(z - p) : in->n;
        field[i] = fz_strdup(p, n);
        (void)fz_bytes(in, z ? n + 1 : n, &got);
    }
    d.host = field[0];
    d.path = field[1][0] ? field[1] : NULL;
    d.query = field[2][0] ? field[2] : NULL;
    d.protocols = field[3][0] ? field[3] : NULL;
    d.origin = field[4][0] ? field[4] : NULL;
    d.extra_headers = field[5][0] ? field[5] : NULL;
    rc = wsch_handshake_request_build(&d, NULL, 0, &need, key);
    FZ_CHECK(rc == WSCH_ERR_ARG || rc == WSCH_ERR_BUFFER);
    if (rc == WSCH_ERR_BUFFER && need < HS_BIG) {
        out = (char *)malloc(need + 1);
        FZ_CHECK(out != NULL);
        rc = wsch_handshake_request_build(&d, out, need, &len, key);
        FZ_CHECK(rc == WSCH_ERR_BUFFER && out[0] == '\0');
        rc = wsch_handshake_request_build(&d, out, need + 1, &len, key);
        FZ_CHECK(rc == WSCH_OK && len == need && strlen(out) == len && strlen(key) == WSCH_KEY_LEN);
        rc = wsch_request_parse(out, len, 0, HS_BIG, &req, &consumed);
        if (rc == WSCH_ERR_HEADER_TOO_LARGE && hs_lines(d.extra_headers) > WSCH_MAX_HEADERS - 8) goto out;
        FZ_CHECK(rc == WSCH_OK && consumed == len);
        FZ_CHECK(wsch_request_check_upgrade(&req) == WSCH_OK);
        FZ_CHECK(req.key.len == WSCH_KEY_LEN && memcmp(req.key.ptr, key, WSCH_KEY_LEN) == 0);
        {
            const char *path = d.path ? d.path : "/";
            size_t pl = strlen(path), ql = d.query ? strlen(d.query) : 0;
            /* the target is path, then ?query (a '?' inside path is the caller's own) */
            FZ_CHECK(req.target.len == pl + (d.query ? 1 + ql : 0) && memcmp(req.target.ptr, path, pl) == 0);
            if (d.query) FZ_CHECK(req.target.ptr[pl] == '?' && memcmp(req.target.ptr + pl + 1, d.query, ql) == 0);
            if (!d.query && !strchr(path, '?')) FZ_CHECK(req.query.ptr == NULL);
            if (d.origin) { /* the parser trims what the builder let through */
                const char *o = d.origin, *e = d.origin + strlen(d.origin);
                while (o < e && (*o == ' ' || *o == '\t')) o++;
                while (e > o && (e[-1] == ' ' || e[-1] == '\t')) e--;
                FZ_CHECK(req.origin.len == (size_t)(e - o) && memcmp(req.origin.ptr, o, req.origin.len) == 0);
            }
        }
        hs_roundtrip_response(&req, NULL, NULL);
    }
out:
    free(out);
    for (i = 0; i < 6; i++) free(field[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in in;
    unsigned b0, i, ncuts;
    size_t max, cuts[8];
    in.p = data;
    in.n = size;
    b0 = fz_u8(&in);
    max = (size_t)(b0 >> 2) * 64u;
    if ((b0 & 3u) == 2) {
        hs_client_build(&in);
        return 0;
    }
    if ((b0 & 3u) == 3) {
        unsigned status = fz_u16(&in) % 700u;
        size_t n;
        const uint8_t *p = fz_bytes(&in, in.n, &n);
        char *extra = fz_strdup(p, n);
        hs_check_refusal((int)status, n ? extra : NULL);
        free(extra);
        return 0;
    }
    ncuts = fz_u8(&in) & 7u;
    for (i = 0; i < ncuts; i++) cuts[i] = fz_u16(&in);
    for (i = 0; i < ncuts; i++) {
        size_t j;
        cuts[i] %= in.n + 1;
        for (j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) { /* keep them sorted */
            size_t t = cuts[j];
            cuts[j] = cuts[j - 1];
            cuts[j - 1] = t;
        }
    }
    if ((b0 & 3u) == 0) hs_request(in.p, in.n, max, cuts, ncuts);
    else hs_response(in.p, in.n, max, cuts, ncuts);
    return 0;
}
