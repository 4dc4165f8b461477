/* A second JSON reader for the envelope fuzzer, written separately from the
   library's scanner and as plainly as possible: recursive descent over RFC
   8259, strict UTF-8 (RFC 3629), surrogate pairs, the same nesting limit.
   It is slow and allocates nothing; it exists only to be compared with. */
#ifndef WSCH_FUZZ_JSON_REF_H
#define WSCH_FUZZ_JSON_REF_H

#include <stddef.h>
#include <string.h>

typedef struct jr {
    const unsigned char *p, *end;
    int max_depth;
} jr;

static void jr_ws(jr *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int jr_hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Four hex digits after "\u"; -1 when malformed. */
static long jr_u4(jr *j) {
    long v = 0;
    int i;
    if (j->end - j->p < 4) return -1;
    for (i = 0; i < 4; i++) {
        int d = jr_hexval(j->p[i]);
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    j->p += 4;
    return v;
}

static size_t jr_put_utf8(unsigned char *out, unsigned long cp) {
    if (cp < 0x80) { out[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { out[0] = (unsigned char)(0xC0 | (cp >> 6)); out[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* One UTF-8 sequence at j->p (first byte >= 0x80); 0 when invalid. */
static int jr_utf8_seq(jr *j, unsigned char *out, size_t *olen) {
    const unsigned char *s = j->p;
    size_t avail = (size_t)(j->end - s), n, i;
    unsigned char lo = 0x80, hi = 0xBF;
    unsigned char c = s[0];
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;      /* no overlongs */
        if (c == 0xED) hi = 0x9F;      /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;      /* nothing above U+10FFFF */
    } else return 0;
    if (avail < n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    if (out) memcpy(out + *olen, s, n);
    *olen += n;
    j->p += n;
    return 1;
}

/* A string at j->p ('"'). Unescaped bytes go to out (room for the raw
   length suffices) when out is not NULL. Returns 1, or 0 when invalid. */
static int jr_string(jr *j, unsigned char *out, size_t *olen) {
    size_t dummy = 0;
    if (!olen) olen = &dummy;
    *olen = 0;
    if (j->p >= j->end || *j->p != '"') return 0;
    j->p++;
    for (;;) {
        unsigned char c;
        if (j->p >= j->end) return 0;
        c = *j->p;
        if (c == '"') {
            j->p++;
            return 1;
        }
        if (c < 0x20) return 0;
        if (c >= 0x80) {
            if (!jr_utf8_seq(j, out, olen)) return 0;
            continue;
        }
        if (c != '\\') {
            if (out) out[*olen] = c;
            (*olen)++;
            j->p++;
            continue;
        }
        j->p++;
        if (j->p >= j->end) return 0;
        c = *j->p++;
        {
            unsigned long cp;
            switch (c) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = 8; break;
            case 'f': cp = 12; break;
            case 'n': cp = 10; break;
            case 'r': cp = 13; break;
            case 't': cp = 9; break;
            case 'u': {
                long u = jr_u4(j);
                if (u < 0) return 0;
                cp = (unsigned long)u;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return 0;            /* lone low surrogate */
                if (cp >= 0xD800 && cp <= 0xDBFF) {                      /* needs its low half */
                    long lo;
                    if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') return 0;
                    j->p += 2;
                    lo = jr_u4(j);
                    if (lo < 0xDC00 || lo > 0xDFFF) return 0;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
                }
                break;
            }
            default: return 0;
            }
            if (out) *olen += jr_put_utf8(out + *olen, cp);
            else *olen += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        }
    }
}

static int jr_digits(jr *j) {
    const unsigned char *s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    return j->p > s;
}

static int jr_number(jr *j) {
    if (j->p < j->end && *j->p == '-') j->p++;
    if (j->p >= j->end) return 0;
    if (*j->p == '0') j->p++;
    else if (!jr_digits(j)) return 0;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!jr_digits(j)) return 0;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (!jr_digits(j)) return 0;
    }
    return 1;
}

static int jr_literal(jr *j, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return 0;
    j->p += n;
    return 1;
}

/* One value at j->p (no leading whitespace); depth = containers around it. */
static int jr_value(jr *j, int depth) {
    if (j->p >= j->end) return 0;
    switch (*j->p) {
    case '{':
    case '[': {
        unsigned char close = *j->p == '{' ? '}' : ']';
        int obj = *j->p == '{';
        if (depth + 1 > j->max_depth) return 0;
        j->p++;
        jr_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 1;
        }
        for (;;) {
            if (obj) {
                if (!jr_string(j, NULL, NULL)) return 0;
                jr_ws(j);
                if (j->p >= j->end || *j->p != ':') return 0;
                j->p++;
                jr_ws(j);
            }
            if (!jr_value(j, depth + 1)) return 0;
            jr_ws(j);
            if (j->p >= j->end) return 0;
            if (*j->p == close) {
                j->p++;
                return 1;
            }
            if (*j->p != ',') return 0;
            j->p++;
            jr_ws(j);
        }
    }
    case '"': return jr_string(j, NULL, NULL);
    case 't': return jr_literal(j, "true");
    case 'f': return jr_literal(j, "false");
    case 'n': return jr_literal(j, "null");
    default: return jr_number(j);
    }
}

/* The whole span is exactly one value with optional whitespace around it. */
static int jr_valid(const char *s, size_t n, int max_depth) {
    jr j;
    j.p = (const unsigned char *)s;
    j.end = j.p + n;
    j.max_depth = max_depth;
    jr_ws(&j);
    if (!jr_value(&j, 0)) return 0;
    jr_ws(&j);
    return j.p == j.end;
}

/* Top-level member lookup in a document already known to be valid. For
   key, *count gets how many times it appears in the top-level object and
   *val the span of the first value; returns 0 when the top level is not an
   object. keybuf needs room for the longest key (n bytes suffice). */
static int jr_find(const char *s, size_t n, const char *key, size_t key_len, unsigned char *keybuf, int *count,
                   const char **val, size_t *val_len) {
    jr j;
    j.p = (const unsigned char *)s;
    j.end = j.p + n;
    j.max_depth = 1 << 30;
    *count = 0;
    *val = NULL;
    *val_len = 0;
    jr_ws(&j);
    if (j.p >= j.end || *j.p != '{') return 0;
    j.p++;
    jr_ws(&j);
    if (*j.p == '}') return 1;
    for (;;) {
        size_t klen = 0;
        const unsigned char *v;
        int match;
        jr_string(&j, keybuf, &klen);
        match = klen == key_len && memcmp(keybuf, key, klen) == 0;
        jr_ws(&j);
        j.p++; /* ':' */
        jr_ws(&j);
        v = j.p;
        jr_value(&j, 1);
        if (match && (*count)++ == 0) {
            *val = (const char *)v;
            *val_len = (size_t)(j.p - v);
        }
        jr_ws(&j);
        if (*j.p == '}') return 1;
        j.p++; /* ',' */
        jr_ws(&j);
    }
}

#endif
