/* URLs, query strings, percent-encoding and token extraction.

     byte 0 (mod 4)  0 URL parse, 1 query lookup, 2 percent-encoding round
                     trip, 3 token carried in a request
     byte 1          output capacity for the lookups
     rest            the text (mode 1: key NUL query)

   Parsed URLs must rebuild into a URL that parses to the same fields;
   query lookups are compared with a small reference decoder written here;
   anything encoded must decode back; a token put in the query or the
   Authorization header must come back out unchanged. */
#include "fuzz.h"

#include <ctype.h>

static int url_unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

static int url_hex(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int url_span_eq(wsch_str a, wsch_str b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void url_parse_mode(const uint8_t *p, size_t n) {
    char *url = fz_dup(p, n), *again;
    wsch_url u, v;
    size_t i, len;
    int rc = wsch_url_parse(url, n, &u);
    FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_URL);
    if (rc != WSCH_OK) {
        free(url);
        return;
    }
    for (i = 0; i < n; i++) FZ_CHECK(p[i] > 0x20 && p[i] < 0x7F && p[i] != '#');
    FZ_CHECK(fz_inside(u.scheme, url, n) && fz_inside(u.host, url, n) && fz_inside(u.query, url, n));
    FZ_CHECK(u.secure == (u.scheme.len == 3));
    FZ_CHECK(u.scheme.len == 2 || u.scheme.len == 3);
    FZ_CHECK(u.host.len > 0 && u.port != 0);
    FZ_CHECK(u.path.len > 0 && u.path.ptr[0] == '/');
    FZ_CHECK(fz_inside(u.path, url, n) || (u.path.len == 1));
    FZ_CHECK(!memchr(u.host.ptr, '@', u.host.len));
    if (u.query.ptr) FZ_CHECK(u.query.ptr > url && u.query.ptr[-1] == '?');
    /* rebuild with an explicit port and brackets where needed, parse again */
    len = u.host.len + u.path.len + u.query.len + 32;
    again = (char *)malloc(len);
    FZ_CHECK(again != NULL);
    {
        int bracket = memchr(u.host.ptr, ':', u.host.len) != NULL;
        int k = snprintf(again, len, "%s://%s%.*s%s:%u%.*s%s%.*s", u.secure ? "wss" : "ws", bracket ? "[" : "",
                         (int)u.host.len, u.host.ptr, bracket ? "]" : "", (unsigned)u.port, (int)u.path.len,
                         u.path.ptr, u.query.ptr ? "?" : "", (int)u.query.len, u.query.ptr ? u.query.ptr : "");
        FZ_CHECK(k > 0 && (size_t)k < len);
        rc = wsch_url_parse(again, (size_t)k, &v);
    }
    FZ_CHECK(rc == WSCH_OK);
    FZ_CHECK(v.secure == u.secure && v.port == u.port);
    FZ_CHECK(url_span_eq(u.host, v.host) && url_span_eq(u.path, v.path) && url_span_eq(u.query, v.query));
    FZ_CHECK((u.query.ptr == NULL) == (v.query.ptr == NULL));
    free(again);
    free(url);
}

/* Reference x-www-form-urlencoded decoding of [p, p+n) into out; -1 on a bad escape. */
static long url_ref_decode(const char *p, size_t n, char *out) {
    size_t i, k = 0;
    for (i = 0; i < n; i++) {
        if (p[i] == '%') {
            int hi, lo;
            if (n - i < 3) return -1;
            hi = url_hex((unsigned char)p[i + 1]);
            lo = url_hex((unsigned char)p[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            out[k++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[k++] = p[i] == '+' ? ' ' : p[i];
        }
    }
    return (long)k;
}

/* Expected result of wsch_query_get (code; value in val, length in *vlen).
   Empty pairs are skipped, as the URL Standard's form parser does. */
static int url_ref_query(const char *q, size_t n, const char *key, char *val, size_t *vlen) {
    char *tmp = (char *)malloc(n + 1);
    size_t at = 0, klen = strlen(key);
    int rc = WSCH_ERR_NOT_FOUND;
    FZ_CHECK(tmp != NULL);
    if (url_ref_decode(q, n, tmp) < 0) { /* a bad escape anywhere */
        free(tmp);
        return WSCH_ERR_URL;
    }
    while (at <= n) {
        const char *pair = q + at, *amp = (const char *)memchr(pair, '&', n - at);
        size_t plen = amp ? (size_t)(amp - pair) : n - at;
        const char *eq = (const char *)memchr(pair, '=', plen);
        size_t kraw = eq ? (size_t)(eq - pair) : plen;
        long kl = url_ref_decode(pair, kraw, tmp);
        if (plen > 0 && kl >= 0 && (size_t)kl == klen && memcmp(tmp, key, klen) == 0) {
            long vl = eq ? url_ref_decode(eq + 1, plen - kraw - 1, val) : 0;
            FZ_CHECK(vl >= 0);
            *vlen = (size_t)vl;
            rc = memchr(val, 0, (size_t)vl) ? WSCH_ERR_URL : WSCH_OK;
            break;
        }
        if (!amp) break;
        at += plen + 1;
    }
    free(tmp);
    return rc;
}

static void url_query_mode(const uint8_t *p, size_t n, size_t cap) {
    const uint8_t *z = (const uint8_t *)memchr(p, 0, n);
    size_t klen = z ? (size_t)(z - p) : 0, qlen = z ? n - klen - 1 : n, out_len = 0, ref_len = 0;
    char *key = fz_strdup(p, klen), *q = fz_dup(z ? z + 1 : p, qlen);
    char *out = (char *)malloc(cap ? cap : 1), *ref = (char *)malloc(qlen + 1);
    wsch_str qs;
    int rc, want;
    FZ_CHECK(out != NULL && ref != NULL);
    qs.ptr = q;
    qs.len = qlen;
    want = url_ref_query(q, qlen, key, ref, &ref_len);
    rc = wsch_query_get(qs, key, out, cap, &out_len);
    if (want == WSCH_OK && cap < ref_len + 1) want = WSCH_ERR_BUFFER;
    FZ_CHECK(rc == want);
    if (rc == WSCH_OK) {
        FZ_CHECK(out_len == ref_len && memcmp(out, ref, ref_len) == 0 && out[out_len] == '\0');
    }
    free(out);
    free(ref);
    free(key);
    free(q);
}

static void url_encode_mode(const uint8_t *p, size_t n, size_t cap) {
    size_t i, want = 0, len = 0, got = 0;
    char *enc, *query, *dec, small[8];
    wsch_str qs;
    int rc;
    for (i = 0; i < n; i++) want += url_unreserved(p[i]) ? 1 : 3;
    enc = (char *)malloc(want + 1);
    FZ_CHECK(enc != NULL);
    rc = wsch_percent_encode((const char *)p, n, enc, want, &len);
    FZ_CHECK(rc == WSCH_ERR_BUFFER && len == want);
    rc = wsch_percent_encode((const char *)p, n, enc, want + 1, &len);
    FZ_CHECK(rc == WSCH_OK && len == want && enc[len] == '\0');
    rc = wsch_percent_encode((const char *)p, n, small, cap < sizeof small ? cap : sizeof small, &got);
    FZ_CHECK(rc == (want + 1 <= (cap < sizeof small ? cap : sizeof small) ? WSCH_OK : WSCH_ERR_BUFFER));
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)enc[i];
        if (c == '%') {
            FZ_CHECK(i + 2 < len);
            FZ_CHECK(isxdigit((unsigned char)enc[i + 1]) && isxdigit((unsigned char)enc[i + 2]));
            FZ_CHECK(!islower((unsigned char)enc[i + 1]) && !islower((unsigned char)enc[i + 2]));
            FZ_CHECK(!url_unreserved((unsigned char)(url_hex((unsigned char)enc[i + 1]) * 16 +
                                                     url_hex((unsigned char)enc[i + 2]))));
            i += 2;
        } else {
            FZ_CHECK(url_unreserved(c));
        }
    }
    /* decode it back as a query value (and as a URL path, which must parse) */
    query = (char *)malloc(len + 3);
    dec = (char *)malloc(n + 1);
    FZ_CHECK(query != NULL && dec != NULL);
    memcpy(query, "k=", 2);
    memcpy(query + 2, enc, len);
    qs.ptr = query;
    qs.len = len + 2;
    rc = wsch_query_get(qs, "k", dec, n + 1, &got);
    if (memchr(p, 0, n)) {
        FZ_CHECK(rc == WSCH_ERR_URL);
    } else {
        FZ_CHECK(rc == WSCH_OK && got == n && (n == 0 || memcmp(dec, p, n) == 0));
    }
    {
        char *url = (char *)malloc(len + 16);
        wsch_url u;
        FZ_CHECK(url != NULL);
        memcpy(url, "ws://h/", 7);
        memcpy(url + 7, enc, len);
        FZ_CHECK(wsch_url_parse(url, len + 7, &u) == WSCH_OK);
        FZ_CHECK(u.path.len == len + 1);
        free(url);
    }
    free(query);
    free(dec);
    free(enc);
}

static int url_token68(const uint8_t *p, size_t n) {
    size_t i = 0;
    if (n == 0) return 0;
    while (i < n && (url_unreserved(p[i]) || p[i] == '+' || p[i] == '/')) i++;
    if (i == 0) return 0;
    while (i < n && p[i] == '=') i++;
    return i == n;
}

/* A request carrying token (percent-encoded in the query, and in an
   Authorization header when it is token68), parsed; the token must come back. */
static void url_token_mode(const uint8_t *p, size_t n) {
    char *enc = (char *)malloc(3 * n + 1), *req, out[512];
    size_t elen = 0, rlen, olen = 0, consumed = 0;
    wsch_request r;
    wsch_token_source src;
    int auth = url_token68(p, n), rc;
    FZ_CHECK(enc != NULL);
    FZ_CHECK(wsch_percent_encode((const char *)p, n, enc, 3 * n + 1, &elen) == WSCH_OK);
    req = (char *)malloc(2 * elen + n + 256);
    FZ_CHECK(req != NULL);
    rlen = (size_t)sprintf(req, "GET /ws?a=b&token=%s HTTP/1.1\r\nHost: h\r\n%s%.*s%s\r\n", enc,
                           auth ? "Authorization: bearer " : "", auth ? (int)n : 0, auth ? (const char *)p : "",
                           auth ? "\r\n" : "");
    rc = wsch_request_parse(req, rlen, 0, 1u << 16, &r, &consumed);
    FZ_CHECK(rc == WSCH_OK && consumed == rlen);
    rc = wsch_request_token(&r, out, sizeof out, &olen, &src);
    if (n == 0) {
        FZ_CHECK(rc == WSCH_ERR_NOT_FOUND);
    } else if (memchr(p, 0, n)) {
        FZ_CHECK(rc == WSCH_ERR_URL);
    } else if (n + 1 > sizeof out) {
        FZ_CHECK(rc == WSCH_ERR_BUFFER);
    } else {
        FZ_CHECK(rc == WSCH_OK && olen == n && memcmp(out, p, n) == 0 && out[n] == '\0');
        FZ_CHECK(src == (auth ? WSCH_TOKEN_AUTHORIZATION : WSCH_TOKEN_QUERY));
    }
    free(req);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in in;
    unsigned mode, cap;
    in.p = data;
    in.n = size;
    mode = fz_u8(&in) & 3u;
    cap = fz_u8(&in);
    switch (mode) {
    case 0: url_parse_mode(in.p, in.n); break;
    case 1: url_query_mode(in.p, in.n, cap); break;
    case 2: url_encode_mode(in.p, in.n, cap); break;
    default: url_token_mode(in.p, in.n); break;
    }
    return 0;
}
