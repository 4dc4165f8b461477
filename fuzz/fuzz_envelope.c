/* Envelope and JSON scanner, judged against json_ref.h (an independent
   recursive-descent reader) on the whole document.

     byte 0 (mod 4)  0 validate + decode + lookups of fixed keys, and
                       the one-pass multi-key lookups against them,
                     1 the same for a fuzz-chosen key (key NUL document),
                     2 string escape / unescape round trips,
                     3 envelope encode (type NUL payload) then decode
     byte 1          output capacity for string results (and flags)
     rest            the text */
#include "fuzz.h"
#include "json_ref.h"

#include <errno.h>
#include <math.h>

static int env_invalid_rc(int rc) { return rc == WSCH_ERR_JSON || rc == WSCH_ERR_JSON_DEPTH || rc == WSCH_ERR_UTF8; }

/* Unescapes a string token already known to be valid; returns a heap copy. */
static unsigned char *env_ref_unescape(const char *tok, size_t n, size_t *len) {
    unsigned char *out = (unsigned char *)malloc(n + 4);
    jr j;
    FZ_CHECK(out != NULL);
    j.p = (const unsigned char *)tok;
    j.end = j.p + n;
    j.max_depth = 1;
    FZ_CHECK(jr_string(&j, out, len) && j.p == j.end);
    return out;
}

/* Exact integer value of a JSON number: 1 with *v, 0 not an integer, 2 out of int64 range. */
static int env_ref_int(const char *s, size_t n, int64_t *v) {
    size_t i = 0, nd = 0;
    char digits[600];
    long exp = 0, fraclen = 0;
    int neg = 0, eneg = 0;
    uint64_t mag = 0, limit;
    if (i < n && s[i] == '-') { neg = 1; i++; }
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        if (nd || s[i] != '0') { if (nd < sizeof digits) digits[nd] = s[i]; nd++; }
    if (i < n && s[i] == '.')
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            if (nd || s[i] != '0') { if (nd < sizeof digits) digits[nd] = s[i]; nd++; }
            fraclen++;
        }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) eneg = s[i++] == '-';
        for (; i < n; i++)
            if (exp < 100000000L) exp = exp * 10 + (s[i] - '0');
        if (eneg) exp = -exp;
    }
    if (nd > sizeof digits) return -1; /* caller skips: too long to judge here */
    exp -= fraclen;
    while (nd && digits[nd - 1] == '0') { nd--; exp++; }
    if (nd == 0) { *v = 0; return 1; }
    if (exp < 0) return 0;
    if ((long)nd + exp > 19) return 2;
    limit = neg ? (uint64_t)1 << 63 : ((uint64_t)1 << 63) - 1;
    for (i = 0; i < nd + (size_t)exp; i++) {
        unsigned d = i < nd ? (unsigned)(digits[i] - '0') : 0;
        if (mag > (limit - d) / 10) return 2;
        mag = mag * 10 + d;
    }
    *v = neg ? (mag == ((uint64_t)1 << 63) ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    return 1;
}

/* Every lookup for key, each compared with the reference. */
static void env_lookups(const char *doc, size_t n, int valid, const char *key, size_t cap) {
    wsch_str obj, raw;
    int rc, count = 0, is_obj = 0;
    const char *val = NULL;
    size_t val_len = 0, klen = strlen(key), out_len = 0;
    unsigned char *keybuf = (unsigned char *)malloc(n + 4);
    char *out = (char *)malloc(cap ? cap : 1);
    FZ_CHECK(keybuf != NULL && out != NULL);
    obj.ptr = doc;
    obj.len = n;
    if (valid) is_obj = jr_find(doc, n, key, klen, keybuf, &count, &val, &val_len);
    rc = wsch_json_get_raw(obj, key, &raw);
    if (!valid) {
        FZ_CHECK(env_invalid_rc(rc));
        FZ_CHECK(env_invalid_rc(wsch_json_get_string(obj, key, out, cap, &out_len)));
        goto done;
    }
    if (count > 1) {
        FZ_CHECK(rc == WSCH_ERR_JSON);
        goto done;
    }
    if (!is_obj || count == 0) {
        FZ_CHECK(rc == WSCH_ERR_NOT_FOUND);
        goto done;
    }
    FZ_CHECK(rc == WSCH_OK && raw.ptr == val && raw.len == val_len);
    /* string */
    rc = wsch_json_get_string(obj, key, out, cap, &out_len);
    if (val[0] == '"') {
        size_t ulen = 0;
        unsigned char *u = env_ref_unescape(val, val_len, &ulen);
        if (cap < ulen + 1) {
            FZ_CHECK(rc == WSCH_ERR_BUFFER && out_len == ulen);
        } else {
            FZ_CHECK(rc == WSCH_OK && out_len == ulen && memcmp(out, u, ulen) == 0 && out[ulen] == '\0');
        }
        if (strcmp(key, "channel") == 0) {
            int rc2 = wsch_envelope_get_channel(obj, out, cap, &out_len);
            /* too small a buffer may be reported before the content is judged */
            if (ulen == 0 || memchr(u, 0, ulen))
                FZ_CHECK(rc2 == WSCH_ERR_NOT_FOUND || (cap < ulen + 1 && rc2 == WSCH_ERR_BUFFER));
            else if (cap < ulen + 1) FZ_CHECK(rc2 == WSCH_ERR_BUFFER);
            else FZ_CHECK(rc2 == WSCH_OK && out_len == ulen && memcmp(out, u, ulen) == 0);
        }
        free(u);
    } else {
        FZ_CHECK(rc == WSCH_ERR_NOT_FOUND);
        if (strcmp(key, "channel") == 0) FZ_CHECK(wsch_envelope_get_channel(obj, out, cap, &out_len) == WSCH_ERR_NOT_FOUND);
    }
    /* numbers */
    {
        double d = 0;
        int64_t iv = 0, ref = 0;
        int rd = wsch_json_get_number(obj, key, &d), ri = wsch_json_get_int(obj, key, &iv);
        if (val[0] != '-' && (val[0] < '0' || val[0] > '9')) {
            FZ_CHECK(rd == WSCH_ERR_NOT_FOUND && ri == WSCH_ERR_NOT_FOUND);
        } else if (val_len > 512) {
            FZ_CHECK(rd == WSCH_ERR_TOO_LARGE);
        } else {
            char text[520];
            double want;
            int ir;
            memcpy(text, val, val_len);
            text[val_len] = '\0';
            errno = 0;
            want = strtod(text, NULL);
            if (isinf(want)) {
                FZ_CHECK(rd == WSCH_ERR_TOO_LARGE);
            } else {
                FZ_CHECK(rd == WSCH_OK && memcmp(&d, &want, sizeof d) == 0);
            }
            ir = env_ref_int(val, val_len, &ref);
            if (ir == 1) FZ_CHECK(ri == WSCH_OK && iv == ref);
            else if (ir == 0) FZ_CHECK(ri == WSCH_ERR_NOT_FOUND);
            else if (ir == 2) FZ_CHECK(ri == WSCH_ERR_TOO_LARGE);
        }
    }
done:
    free(out);
    free(keybuf);
}

static void env_decode(const char *doc, size_t n, int valid) {
    wsch_envelope env;
    int rc = wsch_envelope_decode(doc, n, &env);
    if (!valid) {
        size_t i;
        FZ_CHECK(env_invalid_rc(rc));
        for (i = 0; i < sizeof env.type; i++) FZ_CHECK(env.type[i] == 0);
        FZ_CHECK(env.type_len == 0 && env.payload.ptr == NULL && env.payload.len == 0);
        return;
    }
    {
        unsigned char *keybuf = (unsigned char *)malloc(n + 4);
        const char *tval = NULL, *pval = NULL;
        size_t tlen = 0, plen = 0;
        int tcount = 0, pcount = 0, is_obj;
        FZ_CHECK(keybuf != NULL);
        is_obj = jr_find(doc, n, "type", 4, keybuf, &tcount, &tval, &tlen);
        (void)jr_find(doc, n, "payload", 7, keybuf, &pcount, &pval, &plen);
        free(keybuf);
        if (tcount > 1 || pcount > 1) {
            FZ_CHECK(rc == WSCH_ERR_JSON);
        } else if (!is_obj || tcount == 0 || tval[0] != '"') {
            FZ_CHECK(rc == WSCH_ERR_NO_TYPE);
        } else {
            size_t ulen = 0;
            unsigned char *u = env_ref_unescape(tval, tlen, &ulen);
            int has_nul = memchr(u, 0, ulen) != NULL;
            if (has_nul && ulen > WSCH_ENVELOPE_TYPE_MAX) FZ_CHECK(rc == WSCH_ERR_NO_TYPE || rc == WSCH_ERR_TOO_LARGE);
            else if (has_nul) FZ_CHECK(rc == WSCH_ERR_NO_TYPE);
            else if (ulen > WSCH_ENVELOPE_TYPE_MAX) FZ_CHECK(rc == WSCH_ERR_TOO_LARGE);
            else {
                FZ_CHECK(rc == WSCH_OK);
                FZ_CHECK(env.type_len == ulen && memcmp(env.type, u, ulen) == 0 && env.type[ulen] == '\0');
                FZ_CHECK(wsch_envelope_type_is(&env, env.type) == 1);
                FZ_CHECK(env.payload.ptr == pval && env.payload.len == plen);
                if (pval) {
                    wsch_json_kind k = wsch_json_kind_of(env.payload);
                    char c = pval[0];
                    FZ_CHECK(k == (c == '{' ? WSCH_JSON_OBJECT : c == '[' ? WSCH_JSON_ARRAY : c == '"' ? WSCH_JSON_STRING
                                   : c == 't' ? WSCH_JSON_TRUE : c == 'f' ? WSCH_JSON_FALSE : c == 'n' ? WSCH_JSON_NULL
                                   : WSCH_JSON_NUMBER));
                }
            }
            free(u);
        }
    }
}

/* wsch_json_get_members must give, for each key, what wsch_json_get_raw
   says for that key alone: the same span, or absent; an invalid document
   the same error. Only a duplicate of another looked-up key may fail the
   whole call where one lookup succeeds. On a decoded envelope,
   wsch_envelope_get_members (trusted payload) must agree with the
   validating call on the same payload. */
static void env_members(const char *doc, size_t n, const char *const *keys, size_t count) {
    wsch_str obj, vals[4], tv[4];
    wsch_envelope env;
    size_t i;
    int rc, dup = 0;
    FZ_CHECK(count <= 4);
    obj.ptr = doc;
    obj.len = n;
    rc = wsch_json_get_members(obj, keys, count, vals);
    FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_NOT_FOUND || env_invalid_rc(rc));
    for (i = 0; i < count; i++) {
        wsch_str one;
        int r1 = wsch_json_get_raw(obj, keys[i], &one);
        if (rc == WSCH_OK) {
            if (vals[i].ptr) FZ_CHECK(r1 == WSCH_OK && one.ptr == vals[i].ptr && one.len == vals[i].len);
            else FZ_CHECK(r1 == WSCH_ERR_NOT_FOUND && vals[i].len == 0);
        } else {
            FZ_CHECK(vals[i].ptr == NULL && vals[i].len == 0);
            if (r1 == WSCH_ERR_JSON && rc == WSCH_ERR_JSON) dup = 1;
            /* an invalid document fails both ways, though maybe for another of
               its faults: a repeated key can be met before a bad byte */
            if (rc == WSCH_ERR_NOT_FOUND) FZ_CHECK(r1 == rc);
            else if (wsch_json_validate(doc, n) != WSCH_OK) FZ_CHECK(env_invalid_rc(r1));
        }
    }
    /* a valid document refused as a whole: some looked-up key is repeated */
    if (rc == WSCH_ERR_JSON && wsch_json_validate(doc, n) == WSCH_OK) FZ_CHECK(dup);
    if (wsch_envelope_decode(doc, n, &env) == WSCH_OK) {
        int r2 = wsch_envelope_get_members(&env, keys, count, tv);
        if (!env.payload.ptr) {
            FZ_CHECK(r2 == WSCH_ERR_NOT_FOUND);
        } else {
            FZ_CHECK(r2 == wsch_json_get_members(env.payload, keys, count, vals));
            for (i = 0; i < count; i++) FZ_CHECK(tv[i].ptr == vals[i].ptr && tv[i].len == vals[i].len);
        }
    }
}

static void env_whole(const char *doc, size_t n, size_t cap) {
    static const char *const keys[4] = {"channel", "data", "type", ""};
    int rc = wsch_json_validate(doc, n);
    int valid = jr_valid(doc, n, WSCH_JSON_MAX_DEPTH);
    FZ_CHECK(rc == WSCH_OK || env_invalid_rc(rc));
    FZ_CHECK((rc == WSCH_OK) == valid);
    /* too deep and nothing else wrong: the error must say so */
    if (!valid && jr_valid(doc, n, 1 << 20)) FZ_CHECK(rc == WSCH_ERR_JSON_DEPTH);
    env_decode(doc, n, valid);
    env_lookups(doc, n, valid, "channel", cap);
    env_lookups(doc, n, valid, "type", cap);
    env_lookups(doc, n, valid, "n", cap);
    env_lookups(doc, n, valid, "", cap);
    env_members(doc, n, keys, 4);
}

static void env_strings(const char *s, size_t n, size_t cap) {
    size_t elen = wsch_json_escaped_len(s, n), got = 0;
    char *out = (char *)malloc(elen + 1);
    int rc;
    FZ_CHECK(out != NULL && elen >= n + 2);
    rc = wsch_json_escape_string(s, n, out, elen + 1, &got);
    if (!wsch_utf8_valid(s, n)) {
        FZ_CHECK(rc == WSCH_ERR_UTF8);
    } else {
        wsch_str tok;
        size_t ulen = 0;
        unsigned char *u;
        char *back = (char *)malloc(n + 1);
        FZ_CHECK(back != NULL);
        FZ_CHECK(rc == WSCH_OK && got == elen && out[elen] == '\0');
        FZ_CHECK(wsch_json_escape_string(s, n, out, elen, &got) == WSCH_ERR_BUFFER);
        FZ_CHECK(wsch_json_escape_string(s, n, out, elen + 1, &got) == WSCH_OK);
        FZ_CHECK(jr_valid(out, elen, 1));
        u = env_ref_unescape(out, elen, &ulen);
        FZ_CHECK(ulen == n && memcmp(u, s, n) == 0);
        free(u);
        tok.ptr = out;
        tok.len = elen;
        FZ_CHECK(wsch_json_unescape_string(tok, back, n + 1, &got) == WSCH_OK && got == n && memcmp(back, s, n) == 0);
        free(back);
    }
    free(out);
    /* the input itself as a string token */
    {
        wsch_str tok;
        char *o = (char *)malloc(cap ? cap : 1);
        jr j;
        int ok;
        size_t ulen = 0;
        FZ_CHECK(o != NULL);
        j.p = (const unsigned char *)s;
        j.end = j.p + n;
        j.max_depth = 1;
        ok = jr_string(&j, NULL, &ulen) && j.p == j.end;
        tok.ptr = s;
        tok.len = n;
        rc = wsch_json_unescape_string(tok, o, cap, &got);
        if (!ok) FZ_CHECK(rc == WSCH_ERR_JSON || rc == WSCH_ERR_UTF8);
        else if (cap < ulen + 1) FZ_CHECK(rc == WSCH_ERR_BUFFER && got == ulen);
        else {
            unsigned char *u = env_ref_unescape(s, n, &ulen);
            FZ_CHECK(rc == WSCH_OK && got == ulen && memcmp(o, u, ulen) == 0 && o[ulen] == '\0');
            free(u);
        }
        free(o);
    }
}

static void env_encode(const char *p, size_t n, unsigned flags) {
    const char *z = (const char *)memchr(p, 0, n);
    size_t tlen = z ? (size_t)(z - p) : n, plen = z ? n - tlen - 1 : 0, size, got = 0;
    char *type = fz_dup(p, tlen), *payload = (flags & 1u) || !z ? NULL : fz_dup(z + 1, plen);
    char *out;
    wsch_envelope env;
    int rc, expect_ok;
    if (!payload) plen = 0;
    size = wsch_envelope_size(type, tlen, payload, plen);
    FZ_CHECK(size < (size_t)-1);
    out = (char *)malloc(size + 1);
    FZ_CHECK(out != NULL);
    rc = wsch_envelope_encode(type, tlen, payload, plen, out, size + 1, &got);
    expect_ok = tlen <= WSCH_ENVELOPE_TYPE_MAX && !memchr(type, 0, tlen) && wsch_utf8_valid(type, tlen) &&
                (!payload || jr_valid(payload, plen, WSCH_JSON_MAX_DEPTH - 1));
    if (rc == WSCH_OK) {
        size_t a = 0, b = plen;
        FZ_CHECK(expect_ok);
        FZ_CHECK(got == size && out[size] == '\0' && strlen(out) == size);
        FZ_CHECK(wsch_envelope_encode(type, tlen, payload, plen, out, size, &got) == WSCH_ERR_BUFFER);
        FZ_CHECK(wsch_envelope_encode(type, tlen, payload, plen, out, size + 1, &got) == WSCH_OK);
        FZ_CHECK(wsch_envelope_decode(out, size, &env) == WSCH_OK);
        FZ_CHECK(env.type_len == tlen && memcmp(env.type, type, tlen) == 0);
        if (!payload) {
            FZ_CHECK(env.payload.ptr == NULL);
        } else {
            while (a < b && strchr(" \t\r\n", payload[a])) a++;
            while (b > a && strchr(" \t\r\n", payload[b - 1])) b--;
            FZ_CHECK(env.payload.len == b - a && memcmp(env.payload.ptr, payload + a, b - a) == 0);
        }
    } else {
        FZ_CHECK(rc == WSCH_ERR_ARG || rc == WSCH_ERR_TOO_LARGE || rc == WSCH_ERR_UTF8 || env_invalid_rc(rc));
        /* refused only for a reason: the payload at full depth may be the one */
        FZ_CHECK(!expect_ok || (payload && !jr_valid(payload, plen, WSCH_JSON_MAX_DEPTH - 1)));
        if (tlen > WSCH_ENVELOPE_TYPE_MAX) FZ_CHECK(rc == WSCH_ERR_TOO_LARGE || rc == WSCH_ERR_ARG || rc == WSCH_ERR_UTF8 || env_invalid_rc(rc));
    }
    free(out);
    free(type);
    free(payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in in;
    unsigned mode, cap;
    char *doc;
    in.p = data;
    in.n = size;
    mode = fz_u8(&in) & 3u;
    cap = fz_u8(&in);
    doc = fz_dup(in.p, in.n);
    switch (mode) {
    case 0: env_whole(doc, in.n, cap); break;
    case 1: {
        const char *z = (const char *)memchr(doc, 0, in.n);
        if (z) {
            size_t klen = (size_t)(z - doc);
            char *rest = fz_dup(z + 1, in.n - klen - 1);
            const char *keys[2];
            keys[0] = doc;
            keys[1] = "channel";
            env_lookups(rest, in.n - klen - 1, jr_valid(rest, in.n - klen - 1, WSCH_JSON_MAX_DEPTH), doc, cap);
            env_members(rest, in.n - klen - 1, keys, 2);
            free(rest);
        }
        break;
    }
    case 2: env_strings(doc, in.n, cap); break;
    default: env_encode(doc, in.n, cap); break;
    }
    free(doc);
    return 0;
}
