/* Envelope layer: strict JSON validation (JSONTestSuite), envelope encode and
   decode, lookups inside a payload. Every decode also runs on a copy of the
   input that ends right before a PROT_NONE page, so any over-read faults.

   The corpus (tests/data/jsontestsuite, MIT, see its LICENSE) is found
   through $WSCH_JSONTESTSUITE, else next to this file (see corpus_dir); a
   missing corpus is a failure, never a skip. Run with -v to
   see which way each i_ file went. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ---- guard page ---------------------------------------------------------- */

typedef struct guard_buf {
    unsigned char *base;
    size_t size;
    char *data;                 /* the copy; its last byte touches the guard page */
} guard_buf;

static int guard_copy(guard_buf *g, const char *s, size_t len) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (len + page - 1) / page + 1;
    void *m = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 0;
    g->base = (unsigned char *)m;
    g->size = pages * page;
    if (mprotect(g->base + (pages - 1) * page, page, PROT_NONE) != 0) {
        munmap(m, g->size);
        return 0;
    }
    g->data = (char *)(g->base + (pages - 1) * page - len);
    if (len) memcpy(g->data, s, len);
    return 1;
}

static void guard_free(guard_buf *g) { munmap(g->base, g->size); }

/* Decodes s twice, in place and from a guard-page copy, and checks both runs
   agree (code, type, payload offset). Returns the code; *env borrows from s. */
static int decode2(const char *s, size_t len, wsch_envelope *env, int *agree) {
    guard_buf g;
    wsch_envelope e2;
    int rc = wsch_envelope_decode(s, len, env), rc2;
    *agree = 0;
    if (!guard_copy(&g, s, len)) return rc;
    rc2 = wsch_envelope_decode(g.data, len, &e2);
    *agree = rc == rc2 && env->type_len == e2.type_len && memcmp(env->type, e2.type, sizeof e2.type) == 0 &&
             env->payload.len == e2.payload.len &&
             (env->payload.ptr ? e2.payload.ptr && env->payload.ptr - s == e2.payload.ptr - g.data : !e2.payload.ptr);
    guard_free(&g);
    return rc;
}

static int validate2(const char *s, size_t len, int *agree) {
    guard_buf g;
    int rc = wsch_json_validate(s, len);
    *agree = 0;
    if (!guard_copy(&g, s, len)) return rc;
    *agree = wsch_json_validate(g.data, len) == rc;
    guard_free(&g);
    return rc;
}

#define DECODE(lit, envp, rcvar)                                                    \
    do {                                                                            \
        int agree_;                                                                 \
        rcvar = decode2((lit), sizeof(lit) - 1, (envp), &agree_);                   \
        ASSERTm("guard-page run differs", agree_);                                  \
    } while (0)

static wsch_str S(const char *lit) {
    wsch_str s;
    s.ptr = lit;
    s.len = strlen(lit);
    return s;
}

static int span_is(wsch_str s, const char *lit) {
    return s.ptr && s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

/* ---- JSONTestSuite -------------------------------------------------------- */

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) return NULL;
    for (;;) {
        size_t got;
        if (n == cap) {
            char *nb;
            cap = cap ? cap * 2 : 4096;
            nb = (char *)realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); return NULL; }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* $WSCH_JSONTESTSUITE, else tests/data/jsontestsuite seen from the
   repository root or tests/, else next to this file's own path. */
static const char *corpus_dir(char *buf, size_t cap) {
    static const char *const rel[] = {
        "tests/data/jsontestsuite/test_parsing",
        "data/jsontestsuite/test_parsing",
    };
    const char *env = getenv("WSCH_JSONTESTSUITE");
    const char *file = __FILE__, *slash = strrchr(file, '/');
    size_t k;
    DIR *d;
    if (env && *env) return env;
    for (k = 0; k < sizeof rel / sizeof rel[0]; k++) {
        if ((d = opendir(rel[k])) != NULL) { closedir(d); return rel[k]; }
    }
    snprintf(buf, cap, "%.*s/data/jsontestsuite/test_parsing", slash ? (int)(slash - file) : 1,
             slash ? file : ".");
    if ((d = opendir(buf)) != NULL) { closedir(d); return buf; }
    return NULL;
}

static size_t trim_len(const char *s, size_t len, size_t *lead) {
    size_t a = 0, b = len;
    while (a < b && strchr(" \t\r\n", s[a]) && s[a]) a++;
    while (b > a && strchr(" \t\r\n", s[b - 1]) && s[b - 1]) b--;
    *lead = a;
    return b - a;
}

/* Wraps doc as the payload of an envelope, through the encoder and by hand,
   and checks the decoder returns exactly doc's value bytes. */
static enum greatest_test_res check_wrapped(const char *name, const char *doc, size_t len) {
    static const char head[] = "{\"type\":\"t\",\"payload\":";
    size_t lead, vlen = trim_len(doc, len, &lead), cap = len + WSCH_ENVELOPE_OVERHEAD_MAX, out_len = 0;
    char *buf = (char *)malloc(cap);
    wsch_envelope env;
    int rc, agree;
    ASSERT(buf != NULL);
    memcpy(buf, head, sizeof head - 1);
    memcpy(buf + sizeof head - 1, doc, len);
    buf[sizeof head - 1 + len] = '}';
    rc = decode2(buf, sizeof head + len, &env, &agree);
    if (rc != WSCH_OK || !agree || env.payload.ptr != buf + sizeof head - 1 + lead || env.payload.len != vlen ||
        !wsch_envelope_type_is(&env, "t")) {
        free(buf);
        fprintf(stdout, "\n%s: rc %d\n", name, rc);
        FAILm("wrapped y_ document not decoded with its exact payload span");
    }
    rc = wsch_envelope_encode("t", 1, doc, len, buf, cap, &out_len);
    if (rc != WSCH_OK || out_len != wsch_envelope_size("t", 1, doc, len) ||
        wsch_envelope_decode(buf, out_len, &env) != WSCH_OK || env.payload.len != vlen ||
        memcmp(env.payload.ptr, doc + lead, vlen) != 0) {
        free(buf);
        fprintf(stdout, "\n%s: encode rc %d\n", name, rc);
        FAILm("y_ document does not survive encode + decode");
    }
    free(buf);
    PASS();
}

TEST jsontestsuite(void) {
    char pathbuf[1024], file[2048];
    const char *dir = corpus_dir(pathbuf, sizeof pathbuf);
    struct dirent *de;
    DIR *d;
    unsigned y = 0, n = 0, i = 0, i_accepted = 0, i_utf8 = 0, i_json = 0, i_depth = 0;
    if (!dir) FAILm("JSONTestSuite corpus not found: set WSCH_JSONTESTSUITE or run from the repository root");
    d = opendir(dir);
    if (!d) FAILm("cannot open the JSONTestSuite directory");
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        size_t len = 0, nl = strlen(nm);
        char *doc;
        int rc, agree;
        if (nl < 6 || strcmp(nm + nl - 5, ".json") != 0 || nm[1] != '_') continue;
        snprintf(file, sizeof file, "%s/%s", dir, nm);
        doc = read_file(file, &len);
        if (!doc) { closedir(d); FAILm("unreadable corpus file"); }
        rc = validate2(doc, len, &agree);
        if (!agree) { fprintf(stdout, "\n%s\n", nm); free(doc); closedir(d); FAILm("guard-page run differs"); }
        if (nm[0] == 'y') {
            enum greatest_test_res r;
            y++;
            if (rc != WSCH_OK) {
                fprintf(stdout, "\n%s: %s\n", nm, wsch_err_str(rc));
                free(doc);
                closedir(d);
                FAILm("valid document rejected");
            }
            r = check_wrapped(nm, doc, len);
            if (r != GREATEST_TEST_RES_PASS) { free(doc); closedir(d); return r; }
        } else if (nm[0] == 'n') {
            n++;
            if (rc == WSCH_OK) { fprintf(stdout, "\n%s\n", nm); free(doc); closedir(d); FAILm("invalid document accepted"); }
        } else if (nm[0] == 'i') {
            wsch_envelope env;
            char *buf = (char *)malloc(len + 32);
            i++;
            if (rc == WSCH_OK) i_accepted++;
            if (rc == WSCH_ERR_UTF8) i_utf8++;
            if (rc == WSCH_ERR_JSON) i_json++;
            if (rc == WSCH_ERR_JSON_DEPTH) i_depth++;
            if (greatest_info.verbose) printf("    %-50s %s\n", nm, rc == WSCH_OK ? "accepted" : wsch_err_str(rc));
            /* as a payload too: same verdict, no crash */
            if (buf) {
                memcpy(buf, "{\"type\":\"t\",\"payload\":", 22);
                memcpy(buf + 22, doc, len);
                buf[22 + len] = '}';
                int wrc = decode2(buf, len + 23, &env, &agree);
                free(buf);
                if (!agree) { free(doc); closedir(d); FAILm("guard-page run differs (i_ wrapped)"); }
                if ((wrc == WSCH_OK) != (rc == WSCH_OK)) { free(doc); closedir(d); FAILm("i_ verdict differs as a payload"); }
            }
        }
        free(doc);
    }
    closedir(d);
    if (greatest_info.verbose) printf("    y %u, n %u, i %u (%u of the i_ accepted)\n", y, n, i, i_accepted);
    /* The full corpus: 95 y_, 188 n_, 35 i_. A partial copy is a failure. */
    ASSERT_EQ_FMT(95u, y, "%u");
    ASSERT_EQ_FMT(188u, n, "%u");
    ASSERT_EQ_FMT(35u, i, "%u");
    /* Which way the i_ files go, by our documented choices:
       - accepted (10): every i_number_* -- out-of-range numbers are still
         grammatical; only the lookups refuse them (WSCH_ERR_TOO_LARGE);
       - WSCH_ERR_UTF8 (20): lone or inverted surrogate escapes, invalid,
         overlong, truncated or out-of-range UTF-8, Latin-1 bytes;
       - WSCH_ERR_JSON (4): UTF-16 with or without BOM, the UTF-8 BOM;
       - WSCH_ERR_JSON_DEPTH (1): i_structure_500_nested_arrays. */
    ASSERT_EQ_FMT(10u, i_accepted, "%u");
    ASSERT_EQ_FMT(20u, i_utf8, "%u");
    ASSERT_EQ_FMT(4u, i_json, "%u");
    ASSERT_EQ_FMT(1u, i_depth, "%u");
    PASS();
}

/* ---- validation details -------------------------------------------------- */

static int v(const char *lit) {
    int agree, rc = validate2(lit, strlen(lit), &agree);
    return agree ? rc : 999;
}

TEST validate_grammar(void) {
    ASSERT_EQ(WSCH_OK, v("0"));
    ASSERT_EQ(WSCH_OK, v(" -0.0e+0 "));
    ASSERT_EQ(WSCH_OK, v("\"\""));
    ASSERT_EQ(WSCH_OK, v("{}"));
    ASSERT_EQ(WSCH_OK, v("[[],{},[{}]]"));
    ASSERT_EQ(WSCH_OK, v("\"\\u0000\\\"\\\\\\/\\b\\f\\n\\r\\t\""));
    ASSERT_EQ(WSCH_OK, v("\"\x7f\""));                       /* DEL is not a control for JSON */
    ASSERT_EQ(WSCH_OK, v("\"\xf4\x8f\xbf\xbf\""));           /* U+10FFFF */
    ASSERT_EQ(WSCH_ERR_JSON, v(""));
    ASSERT_EQ(WSCH_ERR_JSON, v("   "));
    ASSERT_EQ(WSCH_ERR_JSON, v("01"));
    ASSERT_EQ(WSCH_ERR_JSON, v("1."));
    ASSERT_EQ(WSCH_ERR_JSON, v(".1"));
    ASSERT_EQ(WSCH_ERR_JSON, v("1e"));
    ASSERT_EQ(WSCH_ERR_JSON, v("-"));
    ASSERT_EQ(WSCH_ERR_JSON, v("+1"));
    ASSERT_EQ(WSCH_ERR_JSON, v("tru"));
    ASSERT_EQ(WSCH_ERR_JSON, v("nul"));
    ASSERT_EQ(WSCH_ERR_JSON, v("[1,]"));
    ASSERT_EQ(WSCH_ERR_JSON, v("{\"a\":1,}"));
    ASSERT_EQ(WSCH_ERR_JSON, v("{\"a\"}"));
    ASSERT_EQ(WSCH_ERR_JSON, v("{1:1}"));
    ASSERT_EQ(WSCH_ERR_JSON, v("[1}"));
    ASSERT_EQ(WSCH_ERR_JSON, v("{\"a\":1]"));
    ASSERT_EQ(WSCH_ERR_JSON, v("[] []"));
    ASSERT_EQ(WSCH_ERR_JSON, v("\"abc"));
    ASSERT_EQ(WSCH_ERR_JSON, v("\"\\"));
    ASSERT_EQ(WSCH_ERR_JSON, v("\"\\x\""));
    ASSERT_EQ(WSCH_ERR_JSON, v("\"\\u12\""));
    ASSERT_EQ(WSCH_ERR_JSON, v("\"\\u12G4\""));
    ASSERT_EQ(WSCH_ERR_JSON, v("\"a\tb\""));                 /* raw control character */
    ASSERT_EQ(WSCH_ERR_JSON, v("\"\x1f\""));
    ASSERT_EQ(WSCH_ERR_JSON, v("\xef\xbb\xbf{}"));           /* BOM */
    ASSERT_EQ(WSCH_ERR_JSON, v("[\xc3\xa9]"));               /* non-ASCII outside strings */
    ASSERT_EQ(WSCH_ERR_JSON, v("\x0b" "1"));                 /* VT is not JSON whitespace */
    {   /* an embedded NUL is just a bad byte, inside or outside strings */
        int agree;
        ASSERT_EQ(WSCH_ERR_JSON, validate2("[1]\0", 4, &agree));
        ASSERT(agree);
        ASSERT_EQ(WSCH_ERR_JSON, validate2("\"a\0\"", 4, &agree));
        ASSERT(agree);
    }
    ASSERT_EQ(WSCH_ERR_JSON, wsch_json_validate(NULL, 0));
    PASS();
}

TEST validate_utf8_and_surrogates(void) {
    ASSERT_EQ(WSCH_OK, v("\"\\ud83d\\ude00\""));
    ASSERT_EQ(WSCH_OK, v("\"\\uD834\\uDD1E\""));
    ASSERT_EQ(WSCH_OK, v("\"\\uFFFF\\uE000\\uD7FF\""));
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\\ud83d\""));              /* high alone */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\\ude00\""));              /* low alone */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\\ude00\\ud83d\""));       /* inverted */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\\ud83d\\ud83d\""));       /* high + high */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\\ud83dx\""));
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\\ud83d\\n\""));
    ASSERT_EQ(WSCH_ERR_JSON, v("\"\\ud83d\\u12\""));         /* broken escape after a high half */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\xc3\""));                 /* truncated before the quote */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\xc0\xaf\""));             /* overlong */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\xe0\x80\xaf\""));         /* overlong */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\xed\xa0\x80\""));         /* UTF-8 encoded surrogate */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\xf4\x90\x80\x80\""));     /* above U+10FFFF */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\x80\""));                 /* lone continuation */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"\xff\""));
    ASSERT_EQ(WSCH_ERR_UTF8, v("{\"\xe9\":1}"));             /* Latin-1 in a key */
    /* long ASCII runs around a bad byte, so the word-at-a-time path is crossed */
    ASSERT_EQ(WSCH_ERR_UTF8, v("\"abcdefghijklmnopqrstuvwxyz\xc3(abcdefghijklmnop\""));
    ASSERT_EQ(WSCH_OK, v("\"abcdefghijklmnopqrstuvwxyz\xc3\xa9" "abcdefghijklmnop\""));
    ASSERT_EQ(WSCH_ERR_JSON, v("\"abcdefghijklmnopqrstuvwxyz\x01" "abcdefghijklmnop\""));
    PASS();
}

/* A stop byte (quote, backslash escape, control, non-ASCII) at every offset
   of strings of every length up to 40, so both the word-at-a-time scan and
   the byte loop meet each case at each alignment. */
TEST string_scan_positions(void) {
    char doc[64], out[64];
    size_t len, k, n;
    int agree;
    for (len = 1; len <= 40; len++) {
        for (k = 0; k < len; k++) {
            wsch_str s;
            memset(doc, 'a', sizeof doc);
            doc[0] = '"';
            doc[len + 1] = '"';
            s.ptr = doc;
            s.len = len + 2;
            ASSERT_EQ(WSCH_OK, validate2(doc, len + 2, &agree));
            doc[1 + k] = '\x01';
            ASSERT_EQ(WSCH_ERR_JSON, validate2(doc, len + 2, &agree));
            ASSERT(agree);
            doc[1 + k] = '"';
            ASSERT_EQ(WSCH_ERR_JSON, validate2(doc, len + 2, &agree));
            doc[1 + k] = '\xc3';
            ASSERT_EQ(WSCH_ERR_UTF8, validate2(doc, len + 2, &agree));
            ASSERT(agree);
            if (k + 1 < len) {
                doc[2 + k] = '\xa9';
                ASSERT_EQ(WSCH_OK, validate2(doc, len + 2, &agree));
                /* a bad lead byte just before an escape in the same word */
                doc[2 + k] = '\\';
                doc[1 + k] = '\xc3';
                if (k + 2 < len) {
                    doc[3 + k] = 'n';
                    ASSERT_EQ(WSCH_ERR_UTF8, validate2(doc, len + 2, &agree));
                    ASSERT(agree);
                    doc[1 + k] = 'a';
                    ASSERT_EQ(WSCH_OK, validate2(doc, len + 2, &agree));
                    ASSERT_EQ(WSCH_OK, wsch_json_unescape_string(s, out, sizeof out, &n));
                    ASSERT_EQ(len - 1, n);
                    ASSERT_EQ('\n', out[k + 1]);
                }
            }
        }
    }
    PASS();
}

static char *repeat(const char *unit, size_t times, const char *tail, size_t *len) {
    size_t ul = strlen(unit), tl = strlen(tail);
    char *buf = (char *)malloc(ul * times + tl + 1);
    size_t i;
    if (!buf) return NULL;
    for (i = 0; i < times; i++) memcpy(buf + i * ul, unit, ul);
    memcpy(buf + ul * times, tail, tl + 1);
    *len = ul * times + tl;
    return buf;
}

TEST nesting_limits(void) {
    size_t len;
    char *doc, *open, *close;
    wsch_envelope env;
    int agree, rc;
    clock_t t0;
    /* 100000 '[' fails fast on depth, before reading what follows */
    doc = repeat("[", 100000, "", &len);
    ASSERT(doc != NULL);
    t0 = clock();
    ASSERT_EQ(WSCH_ERR_JSON_DEPTH, validate2(doc, len, &agree));
    ASSERT(agree);
    ASSERT((double)(clock() - t0) / CLOCKS_PER_SEC < 1.0);
    free(doc);
    doc = repeat("{\"a\":", 100000, "", &len);
    ASSERT(doc != NULL);
    ASSERT_EQ(WSCH_ERR_JSON_DEPTH, decode2(doc, len, &env, &agree));
    ASSERT(agree);
    free(doc);
    /* exactly WSCH_JSON_MAX_DEPTH levels pass, one more fails */
    open = repeat("[", WSCH_JSON_MAX_DEPTH, "", &len);
    close = repeat("]", WSCH_JSON_MAX_DEPTH, "", &len);
    ASSERT(open && close);
    doc = (char *)malloc(2 * len + 64);
    ASSERT(doc != NULL);
    sprintf(doc, "%s%s", open, close);
    ASSERT_EQ(WSCH_OK, validate2(doc, 2 * len, &agree));
    sprintf(doc, "[%s%s]", open, close);
    ASSERT_EQ(WSCH_ERR_JSON_DEPTH, validate2(doc, 2 * len + 2, &agree));
    /* the envelope object is level 1 */
    sprintf(doc, "{\"type\":\"t\",\"payload\":%.*s%.*s}", (int)len - 1, open, (int)len - 1, close);
    rc = decode2(doc, strlen(doc), &env, &agree);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(agree);
    ASSERT_EQ((size_t)(2 * (len - 1)), env.payload.len);
    sprintf(doc, "{\"type\":\"t\",\"payload\":%s%s}", open, close);
    ASSERT_EQ(WSCH_ERR_JSON_DEPTH, decode2(doc, strlen(doc), &env, &agree));
    free(doc);
    free(open);
    free(close);
    PASS();
}

/* ---- envelope decode ------------------------------------------------------ */

TEST decode_type_escapes(void) {
    wsch_envelope env;
    int rc;
    DECODE("{\"type\":\"caf\\u00e9\"}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_STR_EQ("caf\xc3\xa9", env.type);
    ASSERT_EQ((size_t)5, env.type_len);
    ASSERT(env.payload.ptr == NULL && env.payload.len == 0);
    DECODE("{\"type\":\"\\ud83d\\ude00\"}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_STR_EQ("\xf0\x9f\x98\x80", env.type);
    DECODE("{\"type\":\"a\\/b\\\\c\\\"d\\n\\t\\b\\f\\r\\u20AC\\u0041\"}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_STR_EQ("a/b\\c\"d\n\t\b\f\r\xe2\x82\xac" "A", env.type);
    DECODE("{\"type\":\"\xe2\x82\xac raw\"}", &env, rc);     /* raw UTF-8 passes through */
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_STR_EQ("\xe2\x82\xac raw", env.type);
    DECODE("{\"type\":\"\"}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_EQ((size_t)0, env.type_len);
    ASSERT(wsch_envelope_type_is(&env, ""));
    ASSERT_FALSE(wsch_envelope_type_is(&env, "x"));
    DECODE("{\"t\\u0079pe\":\"ping\"}", &env, rc);           /* escaped key name */
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(wsch_envelope_type_is(&env, "ping"));
    ASSERT_FALSE(wsch_envelope_type_is(&env, "pin"));
    ASSERT_FALSE(wsch_envelope_type_is(&env, "pingx"));
    DECODE("{\"type\":\"a\\u0000b\"}", &env, rc);            /* NUL would cut the C string */
    ASSERT_EQ(WSCH_ERR_NO_TYPE, rc);
    DECODE("{\"type\":\"\\ud83d\"}", &env, rc);
    ASSERT_EQ(WSCH_ERR_UTF8, rc);
    DECODE("{\"type\":\"\xc3\x28\"}", &env, rc);
    ASSERT_EQ(WSCH_ERR_UTF8, rc);
    DECODE("{\"type\":\"a\nb\"}", &env, rc);
    ASSERT_EQ(WSCH_ERR_JSON, rc);
    PASS();
}

TEST decode_type_length(void) {
    char doc[1024], t[512];
    wsch_envelope env;
    int agree, rc;
    size_t i;
    memset(t, 'x', WSCH_ENVELOPE_TYPE_MAX);
    t[WSCH_ENVELOPE_TYPE_MAX] = '\0';
    sprintf(doc, "{\"type\":\"%s\"}", t);
    rc = decode2(doc, strlen(doc), &env, &agree);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(agree);
    ASSERT_EQ((size_t)WSCH_ENVELOPE_TYPE_MAX, env.type_len);
    ASSERT_STR_EQ(t, env.type);
    sprintf(doc, "{\"type\":\"%sy\"}", t);                  /* one byte over: refused, not cut */
    rc = decode2(doc, strlen(doc), &env, &agree);
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, rc);
    ASSERT(agree);
    ASSERT_EQ((size_t)0, env.type_len);
    ASSERT_EQ('\0', env.type[0]);
    sprintf(doc, "{\"type\":\"%.*s\\u00e9\"}", WSCH_ENVELOPE_TYPE_MAX - 1, t);   /* 63 + 2 bytes */
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, decode2(doc, strlen(doc), &env, &agree));
    /* the limit counts unescaped bytes: 64 six-byte escapes fit */
    strcpy(doc, "{\"type\":\"");
    for (i = 0; i < WSCH_ENVELOPE_TYPE_MAX; i++) strcat(doc, "\\u0041");
    strcat(doc, "\"}");
    ASSERT_EQ(WSCH_OK, decode2(doc, strlen(doc), &env, &agree));
    ASSERT_EQ((size_t)WSCH_ENVELOPE_TYPE_MAX, env.type_len);
    ASSERT_EQ('A', env.type[WSCH_ENVELOPE_TYPE_MAX - 1]);
    PASS();
}

TEST decode_missing_or_bad_type(void) {
    wsch_envelope env;
    int rc;
    DECODE("{}", &env, rc);
    ASSERT_EQ(WSCH_ERR_NO_TYPE, rc);
    DECODE("{\"payload\":{\"type\":\"inner\"}}", &env, rc);  /* nested "type" is not ours */
    ASSERT_EQ(WSCH_ERR_NO_TYPE, rc);
    DECODE("{\"type\":42}", &env, rc);
    ASSERT_EQ(WSCH_ERR_NO_TYPE, rc);
    DECODE("{\"type\":null}", &env, rc);
    ASSERT_EQ(WSCH_ERR_NO_TYPE, rc);
    DECODE("{\"type\":[\"x\"]}", &env, rc);
    ASSERT_EQ(WSCH_ERR_NO_TYPE, rc);
    DECODE("{\"Type\":\"x\"}", &env, rc);                    /* names are case-sensitive */
    ASSERT_EQ(WSCH_ERR_NO_TYPE, rc);
    DECODE("[{\"type\":\"x\"}]", &env, rc);
    ASSERT_EQ(WSCH_ERR_NO_TYPE, rc);
    DECODE("\"type\"", &env, rc);
    ASSERT_EQ(WSCH_ERR_NO_TYPE, rc);
    /* syntax errors win over a missing type */
    DECODE("{\"a\":1,}", &env, rc);
    ASSERT_EQ(WSCH_ERR_JSON, rc);
    DECODE("{\"type\":42", &env, rc);
    ASSERT_EQ(WSCH_ERR_JSON, rc);
    DECODE("", &env, rc);
    ASSERT_EQ(WSCH_ERR_JSON, rc);
    ASSERT_EQ(WSCH_ERR_JSON, wsch_envelope_decode(NULL, 0, &env));
    /* a repeated "type" or "payload" is ambiguous, so refused */
    DECODE("{\"type\":\"a\",\"type\":\"b\"}", &env, rc);
    ASSERT_EQ(WSCH_ERR_JSON, rc);
    DECODE("{\"type\":\"a\",\"t\\u0079pe\":\"a\"}", &env, rc);
    ASSERT_EQ(WSCH_ERR_JSON, rc);
    DECODE("{\"type\":1,\"type\":\"a\"}", &env, rc);
    ASSERT_EQ(WSCH_ERR_JSON, rc);
    DECODE("{\"type\":\"a\",\"payload\":1,\"payload\":2}", &env, rc);
    ASSERT_EQ(WSCH_ERR_JSON, rc);
    /* other repeated keys are allowed, at any level */
    DECODE("{\"type\":\"a\",\"x\":1,\"x\":2,\"payload\":{\"k\":1,\"k\":2}}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    PASS();
}

TEST decode_payload_forms(void) {
    wsch_envelope env;
    int rc;
    DECODE("{\"type\":\"t\"}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(env.payload.ptr == NULL && env.payload.len == 0);
    ASSERT_EQ(WSCH_JSON_INVALID, wsch_json_kind_of(env.payload));
    DECODE("{\"type\":\"t\",\"payload\":null}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(span_is(env.payload, "null"));
    ASSERT_EQ(WSCH_JSON_NULL, wsch_json_kind_of(env.payload));
    DECODE("{\"payload\":{\"a\":[1,{\"b\":\"}\"}]},\"type\":\"t\"}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(span_is(env.payload, "{\"a\":[1,{\"b\":\"}\"}]}"));
    ASSERT_EQ(WSCH_JSON_OBJECT, wsch_json_kind_of(env.payload));
    DECODE("{\"type\":\"t\",\"payload\":[1,\"]\",[]]}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(span_is(env.payload, "[1,\"]\",[]]"));
    ASSERT_EQ(WSCH_JSON_ARRAY, wsch_json_kind_of(env.payload));
    DECODE("{\"type\":\"t\",\"payload\":\"s\\\"}\"}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(span_is(env.payload, "\"s\\\"}\""));
    ASSERT_EQ(WSCH_JSON_STRING, wsch_json_kind_of(env.payload));
    DECODE("{\"type\":\"t\",\"payload\":-1.5e3}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(span_is(env.payload, "-1.5e3"));
    ASSERT_EQ(WSCH_JSON_NUMBER, wsch_json_kind_of(env.payload));
    DECODE("{\"type\":\"t\",\"payload\":false,\"extra\":{\"payload\":1}}", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT(span_is(env.payload, "false"));
    ASSERT_EQ(WSCH_JSON_FALSE, wsch_json_kind_of(env.payload));
    DECODE("{\"type\":\"t\",\"payload\":true}", &env, rc);
    ASSERT_EQ(WSCH_JSON_TRUE, wsch_json_kind_of(env.payload));
    /* whitespace everywhere; the span is the value alone */
    DECODE(" \t\r\n{ \"type\" :\n\"x\" ,\t\"payload\" : [ 1 , { } ] \r\n} \n", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    ASSERT_STR_EQ("x", env.type);
    ASSERT(span_is(env.payload, "[ 1 , { } ]"));
    PASS();
}

TEST decode_trailing_and_truncated(void) {
    static const char *const good[] = {
        "{\"type\":\"t\"}",
        "{\"type\":\"caf\\u00e9\",\"payload\":{\"channel\":\"news\",\"data\":[1,2.5e-3,true,null,\"\\ud83d\\ude00\"]}}",
        " { \"payload\" : \"x\" , \"type\" : \"\xe2\x82\xac\" } ",
    };
    wsch_envelope env;
    size_t k, cut;
    int rc, agree;
    DECODE("{\"type\":\"x\"}x", &env, rc);
    ASSERT_EQ(WSCH_ERR_JSON, rc);
    DECODE("{\"type\":\"x\"}{}", &env, rc);
    ASSERT_EQ(WSCH_ERR_JSON, rc);
    DECODE("{\"type\":\"x\"},", &env, rc);
    ASSERT_EQ(WSCH_ERR_JSON, rc);
    DECODE("{\"type\":\"x\"} \n\t\r", &env, rc);
    ASSERT_EQ(WSCH_OK, rc);
    /* Every proper prefix of a valid envelope is refused, and no prefix reads
       a byte past its end (guard page). */
    for (k = 0; k < sizeof good / sizeof good[0]; k++) {
        size_t len = strlen(good[k]);
        ASSERT_EQ(WSCH_OK, decode2(good[k], len, &env, &agree));
        ASSERT(agree);
        for (cut = 0; cut < len; cut++) {
            /* only whitespace may be cut off the end of the third */
            int ws_tail = strspn(good[k] + cut, " ") == len - cut;
            rc = decode2(good[k], cut, &env, &agree);
            ASSERT(agree);
            if (ws_tail) ASSERT_EQ(WSCH_OK, rc);
            else ASSERT_NEQ(WSCH_OK, rc);
        }
    }
    PASS();
}

TEST decode_huge_string(void) {
    const size_t n = (size_t)8 << 20;
    static const char head[] = "{\"type\":\"big\",\"payload\":\"";
    char *doc = (char *)malloc(n + 64);
    wsch_envelope env;
    size_t len;
    int agree;
    ASSERT(doc != NULL);
    memcpy(doc, head, sizeof head - 1);
    memset(doc + sizeof head - 1, 'a', n);
    memcpy(doc + sizeof head - 1 + n, "\"}", 2);
    len = sizeof head - 1 + n + 2;
    ASSERT_EQ(WSCH_OK, decode2(doc, len, &env, &agree));
    ASSERT(agree);
    ASSERT_EQ(n + 2, env.payload.len);
    /* a huge type is refused, not truncated */
    memcpy(doc, "{\"type\":\"", 9);
    memset(doc + 9, 'a', n);
    memcpy(doc + 9 + n, "\"}", 2);
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, decode2(doc, 9 + n + 2, &env, &agree));
    ASSERT(agree);
    /* one bad byte at the very end of a huge string */
    memcpy(doc + 9 + n - 1, "\xc3\"}", 3);
    ASSERT_EQ(WSCH_ERR_UTF8, decode2(doc, 9 + n + 2, &env, &agree));
    free(doc);
    PASS();
}

/* ---- encode ---------------------------------------------------------------- */

TEST escape_string(void) {
    char out[256];
    size_t n = 0;
    static const char in[] = "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f\xc3\xa9";
    static const char want[] = "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\xc3\xa9\"";
    ASSERT_EQ(WSCH_OK, wsch_json_escape_string(in, sizeof in - 1, out, sizeof out, &n));
    ASSERT_STR_EQ(want, out);
    ASSERT_EQ(sizeof want - 1, n);
    ASSERT_EQ(sizeof want - 1, wsch_json_escaped_len(in, sizeof in - 1));
    /* a NUL byte is data here */
    ASSERT_EQ(WSCH_OK, wsch_json_escape_string("a\0b", 3, out, sizeof out, &n));
    ASSERT_STR_EQ("\"a\\u0000b\"", out);
    ASSERT_EQ(WSCH_OK, wsch_json_escape_string(NULL, 0, out, sizeof out, &n));
    ASSERT_STR_EQ("\"\"", out);
    /* cap must hold the NUL too */
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_json_escape_string("ab", 2, out, 4, &n));
    ASSERT_EQ(WSCH_OK, wsch_json_escape_string("ab", 2, out, 5, &n));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_json_escape_string("\xc3", 1, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_json_escape_string("\xed\xa0\x80", 3, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_json_escape_string(NULL, 1, out, sizeof out, &n));
    /* and back */
    ASSERT_EQ(WSCH_OK, wsch_json_escape_string(in, sizeof in - 1, out, sizeof out, &n));
    {
        char back[64];
        size_t bn = 0;
        wsch_str s;
        s.ptr = out;
        s.len = n;
        ASSERT_EQ(WSCH_OK, wsch_json_unescape_string(s, back, sizeof back, &bn));
        ASSERT_EQ(sizeof in - 1, bn);
        ASSERT_MEM_EQ(in, back, bn);
        ASSERT_EQ(WSCH_ERR_BUFFER, wsch_json_unescape_string(s, back, bn, &bn));
        ASSERT_EQ(sizeof in - 1, bn);                      /* the size it needs */
        ASSERT_EQ(WSCH_ERR_JSON, wsch_json_unescape_string(S("\"a\" "), back, sizeof back, &bn));
        ASSERT_EQ(WSCH_ERR_JSON, wsch_json_unescape_string(S("\"a"), back, sizeof back, &bn));
        ASSERT_EQ(WSCH_ERR_JSON, wsch_json_unescape_string(S("a"), back, sizeof back, &bn));
    }
    PASS();
}

TEST encode_envelope(void) {
    char out[512];
    size_t n = 0, need;
    static const char payload[] = " {\"channel\":\"news\"} ";
    ASSERT_EQ(WSCH_OK, wsch_envelope_encode("ping", 4, NULL, 0, out, sizeof out, &n));
    ASSERT_STR_EQ("{\"type\":\"ping\"}", out);
    ASSERT_EQ((size_t)15, n);
    ASSERT_EQ((size_t)15, wsch_envelope_size("ping", 4, NULL, 0));
    ASSERT_EQ(WSCH_OK, wsch_envelope_encode("sub\"x", 5, payload, sizeof payload - 1, out, sizeof out, &n));
    ASSERT_STR_EQ("{\"type\":\"sub\\\"x\",\"payload\": {\"channel\":\"news\"} }", out);
    need = wsch_envelope_size("sub\"x", 5, payload, sizeof payload - 1);
    ASSERT_EQ(need, n);
    ASSERT_EQ(WSCH_ERR_BUFFER, wsch_envelope_encode("sub\"x", 5, payload, sizeof payload - 1, out, need, &n));
    ASSERT_EQ(WSCH_OK, wsch_envelope_encode("sub\"x", 5, payload, sizeof payload - 1, out, need + 1, &n));
    ASSERT_EQ(WSCH_OK, wsch_envelope_encode("t", 1, "null", 4, out, sizeof out, &n));
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":null}", out);
    /* payload must be exactly one value */
    ASSERT_EQ(WSCH_ERR_JSON, wsch_envelope_encode("t", 1, "", 0, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_envelope_encode("t", 1, "{} {}", 5, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_envelope_encode("t", 1, "1,\"type\":\"x\"", 12, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_envelope_encode("t", 1, "{\"a\":1", 6, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_envelope_encode("t", 1, "\"\xff\"", 3, out, sizeof out, &n));
    /* type checks */
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_envelope_encode("\xc3", 1, NULL, 0, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_envelope_encode("a\0b", 3, NULL, 0, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_envelope_encode(NULL, 1, NULL, 0, out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_envelope_encode("t", 1, NULL, 3, out, sizeof out, &n));
    {
        char t[WSCH_ENVELOPE_TYPE_MAX + 1];
        memset(t, '\x01', sizeof t);
        ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_envelope_encode(t, sizeof t, NULL, 0, out, sizeof out, &n));
        /* the worst type fits the documented overhead exactly */
        ASSERT_EQ(WSCH_OK, wsch_envelope_encode(t, sizeof t - 1, "0", 1, out, sizeof out, &n));
        ASSERT_EQ((size_t)(1 + WSCH_ENVELOPE_OVERHEAD_MAX), n + 1);
    }
    ASSERT_EQ(SIZE_MAX, wsch_envelope_size("t", 1, "x", SIZE_MAX - 5));
    PASS();
}

/* ---- round trip ------------------------------------------------------------ */

static uint32_t rng_next(uint32_t *s) {
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Appends one random code point (never U+0000) as UTF-8; returns its length. */
static size_t rand_utf8(uint32_t *s, char *out) {
    uint32_t r = rng_next(s), cp;
    switch (r % 6) {
    case 0: cp = 1 + rng_next(s) % 0x1F; break;             /* controls */
    case 1: cp = (uint32_t)(unsigned char)"\"\\/ab"[rng_next(s) % 5]; break;
    case 2: cp = 0x20 + rng_next(s) % 0x60; break;
    case 3: cp = 0x80 + rng_next(s) % 0x780; break;
    case 4: cp = 0x800 + rng_next(s) % 0xF800; if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xE000; break;
    default: cp = 0x10000 + rng_next(s) % 0x100000; break;
    }
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

TEST round_trip_random(void) {
    static const char *const payloads[] = {
        NULL, "null", "{}", "[]", "0", "-1.25e-7", "\"\\ud83d\\ude00\"", "{\"channel\":\"c\",\"data\":[1,{\"x\":\"}\"}]}",
        "  [ true , false ]\n",
    };
    uint32_t seed = 0x2545F491u;
    char type[WSCH_ENVELOPE_TYPE_MAX + 4], out[1024];
    int iter;
    for (iter = 0; iter < 20000; iter++) {
        size_t tl = 0, target = rng_next(&seed) % (WSCH_ENVELOPE_TYPE_MAX + 1), n = 0, lead;
        const char *pl = payloads[rng_next(&seed) % (sizeof payloads / sizeof payloads[0])];
        size_t pn = pl ? strlen(pl) : 0;
        wsch_envelope env;
        int agree;
        while (tl < target) {
            char cp[4];
            size_t k = rand_utf8(&seed, cp);
            if (tl + k > target) break;
            memcpy(type + tl, cp, k);
            tl += k;
        }
        ASSERT_EQ(WSCH_OK, wsch_envelope_encode(type, tl, pl, pn, out, sizeof out, &n));
        ASSERT_EQ(wsch_envelope_size(type, tl, pl, pn), n);
        ASSERT_EQ((size_t)strlen(out), n);
        ASSERT_EQ(WSCH_OK, decode2(out, n, &env, &agree));
        ASSERT(agree);
        ASSERT_EQ(tl, env.type_len);
        ASSERT_MEM_EQ(type, env.type, tl);
        if (pl) {
            size_t vl = trim_len(pl, pn, &lead);
            ASSERT_EQ(vl, env.payload.len);
            ASSERT_MEM_EQ(pl + lead, env.payload.ptr, vl);
        } else {
            ASSERT(env.payload.ptr == NULL);
        }
    }
    PASS();
}

/* Random byte edits of valid envelopes: never a crash or an over-read, and the
   decoder never accepts what the validator refuses. */
TEST mutations(void) {
    static const char base[] =
        "{\"type\":\"pub\\u00e9\",\"payload\":{\"channel\":\"n\\\"s\",\"v\":[1,-2.5e+3,true,null,\"\xe2\x82\xac\\ud83d\\ude00\"]}}";
    static const char alphabet[] = "{}[]\",:\\u0123456789abcdefeE+-.tnrl \t\x01\x80\xc3\xe2\xed\xf0\xff";
    uint32_t seed = 12345u;
    char doc[sizeof base + 8];
    int iter, accepted = 0;
    for (iter = 0; iter < 30000; iter++) {
        size_t len = sizeof base - 1, edits = 1 + rng_next(&seed) % 3, e;
        wsch_envelope env;
        int agree, rc, vrc;
        memcpy(doc, base, len);
        for (e = 0; e < edits; e++) {
            size_t at = rng_next(&seed) % len;
            char c = alphabet[rng_next(&seed) % (sizeof alphabet - 1)];
            switch (rng_next(&seed) % 3) {
            case 0: doc[at] = c; break;
            case 1: memmove(doc + at, doc + at + 1, len - at - 1); len--; break;
            default:
                if (len < sizeof doc) { memmove(doc + at + 1, doc + at, len - at); doc[at] = c; len++; }
                break;
            }
        }
        rc = decode2(doc, len, &env, &agree);
        ASSERT(agree);
        vrc = validate2(doc, len, &agree);
        ASSERT(agree);
        if (rc == WSCH_OK) {
            accepted++;
            ASSERT_EQ(WSCH_OK, vrc);
            ASSERT(env.payload.ptr == NULL || wsch_json_validate(env.payload.ptr, env.payload.len) == WSCH_OK);
        }
        if (vrc != WSCH_OK) ASSERT_EQ(vrc, rc);
    }
    ASSERT(accepted > 100);                                 /* the edits are not all fatal */
    PASS();
}

/* ---- lookups --------------------------------------------------------------- */

/* The lookups, run in place and on a guard-page copy; 999 when the runs
   disagree (code, length, bytes or offset). */
static int gets2(wsch_str obj, const char *key, char *out, size_t cap, size_t *n) {
    guard_buf g;
    char out2[256];
    size_t n2 = 0;
    wsch_str o2;
    int rc = key ? wsch_json_get_string(obj, key, out, cap, n) : wsch_envelope_get_channel(obj, out, cap, n), rc2;
    if (cap > sizeof out2 || !guard_copy(&g, obj.ptr, obj.len)) return 999;
    o2.ptr = g.data;
    o2.len = obj.len;
    rc2 = key ? wsch_json_get_string(o2, key, out2, cap, &n2) : wsch_envelope_get_channel(o2, out2, cap, &n2);
    guard_free(&g);
    if (rc != rc2 || ((rc == WSCH_OK || rc == WSCH_ERR_BUFFER) && *n != n2) ||
        (rc == WSCH_OK && memcmp(out, out2, n2 + 1) != 0))
        return 999;
    return rc;
}

static int chan2(wsch_str obj, char *out, size_t cap, size_t *n) { return gets2(obj, NULL, out, cap, n); }

static int raw2(wsch_str obj, const char *key, wsch_str *raw) {
    guard_buf g;
    wsch_str o2, r2;
    int rc = wsch_json_get_raw(obj, key, raw), rc2;
    if (!guard_copy(&g, obj.ptr, obj.len)) return 999;
    o2.ptr = g.data;
    o2.len = obj.len;
    rc2 = wsch_json_get_raw(o2, key, &r2);
    guard_free(&g);
    if (rc != rc2 || raw->len != r2.len || (raw->ptr ? raw->ptr - obj.ptr != r2.ptr - g.data : r2.ptr != NULL))
        return 999;
    return rc;
}

TEST lookup_strings(void) {
    char out[64];
    size_t n = 0;
    wsch_str raw;
    wsch_str p = S("{\"a\":{\"channel\":\"inner\"},\"list\":[{\"channel\":\"x\"}],\"channel\":\"news\",\"n\":5}");
    ASSERT_EQ(WSCH_OK, chan2(p, out, sizeof out, &n));
    ASSERT_STR_EQ("news", out);
    ASSERT_EQ((size_t)4, n);
    ASSERT_EQ(WSCH_OK, gets2(p, "channel", out, sizeof out, &n));
    ASSERT_STR_EQ("news", out);
    /* nested same-name keys are never matched */
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, chan2(S("{\"a\":{\"channel\":\"x\"}}"), out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, chan2(S("[{\"channel\":\"x\"}]"), out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, chan2(S("\"channel\""), out, sizeof out, &n));
    /* prefixes and extensions of the key are other keys */
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, chan2(S("{\"chan\":\"x\",\"channels\":\"y\",\"\":\"z\"}"), out, sizeof out, &n));
    /* escaped key names match after unescaping */
    ASSERT_EQ(WSCH_OK, chan2(S("{\"ch\\u0061nnel\":\"z\\u00e9\"}"), out, sizeof out, &n));
    ASSERT_STR_EQ("z\xc3\xa9", out);
    ASSERT_EQ(WSCH_OK, gets2(S("{\"\\ud83d\\ude00\\n\":\"s\"}"), "\xf0\x9f\x98\x80\n", out, sizeof out, &n));
    ASSERT_STR_EQ("s", out);
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, gets2(S("{\"\\u00e9\":\"s\"}"), "\xc3", out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, gets2(S("{\"\\u00e9x\":\"s\"}"), "\xc3\xa9", out, sizeof out, &n));
    /* wrong kind, bad channel values */
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, gets2(p, "n", out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, chan2(S("{\"channel\":5}"), out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, chan2(S("{\"channel\":\"\"}"), out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, chan2(S("{\"channel\":\"a\\u0000b\"}"), out, sizeof out, &n));
    ASSERT_EQ(WSCH_OK, gets2(S("{\"k\":\"a\\u0000b\"}"), "k", out, sizeof out, &n));
    ASSERT_EQ((size_t)3, n);
    ASSERT_MEM_EQ("a\0b", out, 4);
    /* small buffers: the needed length comes back */
    ASSERT_EQ(WSCH_ERR_BUFFER, chan2(p, out, 4, &n));
    ASSERT_EQ((size_t)4, n);
    ASSERT_EQ(WSCH_OK, chan2(p, out, 5, &n));
    /* invalid documents and ambiguous keys */
    ASSERT_EQ(WSCH_ERR_JSON, chan2(S("{\"channel\":\"x\""), out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_JSON, chan2(S("{\"channel\":\"x\"} x"), out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_JSON, chan2(S("{\"channel\":\"x\",\"ch\\u0061nnel\":\"y\"}"), out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_UTF8, chan2(S("{\"channel\":\"\\udc00\"}"), out, sizeof out, &n));
    ASSERT_EQ(WSCH_ERR_JSON, chan2(S(""), out, sizeof out, &n));
    {
        wsch_str none;
        none.ptr = NULL;
        none.len = 0;
        ASSERT_EQ(WSCH_ERR_JSON, chan2(none, out, sizeof out, &n));   /* absent payload */
    }
    /* raw spans of any kind */
    ASSERT_EQ(WSCH_OK, raw2(p, "a", &raw));
    ASSERT(span_is(raw, "{\"channel\":\"inner\"}"));
    ASSERT_EQ(WSCH_OK, raw2(S(" { \"x\" : [ 1 ] , \"y\" : \"\\\"\" } "), "y", &raw));
    ASSERT(span_is(raw, "\"\\\"\""));
    ASSERT_EQ(WSCH_OK, raw2(S("{\"x\":null}"), "x", &raw));
    ASSERT(span_is(raw, "null"));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, raw2(S("{}"), "x", &raw));
    ASSERT(raw.ptr == NULL);
    PASS();
}

/* wsch_json_get_members in place and on a guard-page copy; 999 when the runs
   disagree, or when a value differs from what wsch_json_get_raw says for
   that key alone (one code path, so the answers must be the same). */
static int members2(wsch_str obj, const char *const *keys, size_t count, wsch_str *values) {
    guard_buf g;
    wsch_str o2, v2[8];
    size_t i;
    int rc = wsch_json_get_members(obj, keys, count, values), rc2;
    if (count > 8 || !guard_copy(&g, obj.ptr, obj.len)) return 999;
    o2.ptr = g.data;
    o2.len = obj.len;
    rc2 = wsch_json_get_members(o2, keys, count, v2);
    guard_free(&g);
    if (rc != rc2) return 999;
    for (i = 0; i < count; i++) {
        wsch_str one;
        int r1 = wsch_json_get_raw(obj, keys[i], &one);
        if (values[i].len != v2[i].len || (values[i].ptr ? values[i].ptr - obj.ptr != v2[i].ptr - g.data : v2[i].ptr != NULL))
            return 999;
        if (rc == WSCH_OK && (values[i].ptr ? r1 != WSCH_OK || one.ptr != values[i].ptr || one.len != values[i].len
                                            : r1 != WSCH_ERR_NOT_FOUND))
            return 999;
        if (rc != WSCH_OK && values[i].ptr) return 999;
        /* a duplicate of another looked-up key is no error for this one alone */
        if (rc != WSCH_OK && wsch_json_validate(obj.ptr, obj.len) != WSCH_OK && r1 != rc) return 999;
        if (rc == WSCH_ERR_NOT_FOUND && r1 != rc) return 999;
    }
    return rc;
}

static int decodez(const char *s, wsch_envelope *env, int *agree) { return decode2(s, strlen(s), env, agree); }

TEST lookup_members(void) {
    static const char *const keys[4] = {"channel", "data", "missing", "\xc3\xa9"};
    wsch_str v[4];
    wsch_str p = S("{\"data\":{\"channel\":\"inner\",\"x\":[1,{\"data\":2}]},\"channel\":\"news\",\"\\u00e9\":true}");
    wsch_envelope env;
    int agree;
    /* every key found in one pass; nested same-name keys are never matched */
    ASSERT_EQ(WSCH_OK, members2(p, keys, 2, v));
    ASSERT(span_is(v[0], "\"news\""));
    ASSERT(span_is(v[1], "{\"channel\":\"inner\",\"x\":[1,{\"data\":2}]}"));
    /* absent keys are {NULL, 0} and not an error; escaped names match after unescaping */
    ASSERT_EQ(WSCH_OK, members2(p, keys, 4, v));
    ASSERT(v[2].ptr == NULL && v[2].len == 0);
    ASSERT(span_is(v[3], "true"));
    ASSERT_EQ(WSCH_OK, members2(S("{\"ch\\u0061nnel\":1}"), keys, 2, v));
    ASSERT(span_is(v[0], "1") && v[1].ptr == NULL);
    ASSERT_EQ(WSCH_OK, members2(S("{}"), keys, 4, v));
    ASSERT(!v[0].ptr && !v[1].ptr && !v[2].ptr && !v[3].ptr);
    ASSERT_EQ(WSCH_OK, members2(S("{\"data\":{\"data\":1,\"data\":2}}"), keys, 2, v));  /* nested repeats are not ours */
    /* a looked-up key present twice is refused, also when spelled with escapes */
    ASSERT_EQ(WSCH_ERR_JSON, members2(S("{\"data\":1,\"channel\":\"a\",\"data\":2}"), keys, 2, v));
    ASSERT(!v[0].ptr && !v[1].ptr);
    ASSERT_EQ(WSCH_ERR_JSON, members2(S("{\"channel\":1,\"\\u0063hannel\":2}"), keys, 2, v));
    ASSERT_EQ(WSCH_OK, members2(S("{\"other\":1,\"other\":2,\"data\":3}"), keys, 2, v));  /* others may repeat */
    /* valid JSON that is not an object */
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, members2(S("[{\"channel\":\"x\"}]"), keys, 2, v));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, members2(S("\"channel\""), keys, 2, v));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, members2(S(" 5 "), keys, 2, v));
    /* invalid JSON: the same errors as the single lookups, values cleared */
    ASSERT_EQ(WSCH_ERR_JSON, members2(S("{\"channel\":\"x\",\"data\":}"), keys, 2, v));
    ASSERT(!v[0].ptr);
    ASSERT_EQ(WSCH_ERR_JSON, members2(S("{\"channel\":\"x\"} x"), keys, 2, v));
    ASSERT_EQ(WSCH_ERR_UTF8, members2(S("{\"channel\":\"x\",\"data\":\"\xff\"}"), keys, 2, v));
    ASSERT_EQ(WSCH_ERR_UTF8, members2(S("{\"data\":\"\\udc00\"}"), keys, 2, v));
    ASSERT_EQ(WSCH_ERR_JSON, members2(S(""), keys, 2, v));
    /* count 0 only validates; bad arguments */
    ASSERT_EQ(WSCH_OK, wsch_json_get_members(S("{\"a\":1}"), NULL, 0, NULL));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, wsch_json_get_members(S("[]"), NULL, 0, NULL));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_json_get_members(p, NULL, 2, v));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_json_get_members(p, keys, 2, NULL));
    {
        static const char *const with_null[2] = {"channel", NULL};
        ASSERT_EQ(WSCH_ERR_ARG, wsch_json_get_members(p, with_null, 2, v));
    }
    /* the envelope form trusts the decoded payload and gives the same answers */
    ASSERT_EQ(WSCH_OK, decodez("{\"type\":\"publish\",\"payload\":{\"channel\":\"n\\u00e9\",\"data\":[\"\xc3\xa9\"]}}", &env, &agree));
    ASSERT(agree);
    ASSERT_EQ(WSCH_OK, wsch_envelope_get_members(&env, keys, 4, v));
    ASSERT(span_is(v[0], "\"n\\u00e9\""));
    ASSERT(span_is(v[1], "[\"\xc3\xa9\"]"));
    ASSERT(!v[2].ptr && !v[3].ptr);
    ASSERT_EQ(WSCH_OK, decodez("{\"type\":\"t\",\"payload\":{\"data\":1,\"data\":2}}", &env, &agree));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_envelope_get_members(&env, keys, 2, v));  /* decode does not judge these keys */
    ASSERT_EQ(WSCH_OK, decodez("{\"type\":\"t\",\"payload\":[1]}", &env, &agree));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, wsch_envelope_get_members(&env, keys, 2, v));
    ASSERT_EQ(WSCH_OK, decodez("{\"type\":\"t\"}", &env, &agree));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, wsch_envelope_get_members(&env, keys, 2, v));    /* no payload */
    ASSERT(!v[0].ptr && !v[1].ptr);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_envelope_get_members(NULL, keys, 2, v));
    PASS();
}

/* Member "n" of obj, in place and from a guard-page copy (999: they differ). */
static int get_int(const char *obj, int64_t *out) {
    guard_buf g;
    wsch_str o2;
    int64_t v2 = 0;
    int rc = wsch_json_get_int(S(obj), "n", out), rc2;
    if (!guard_copy(&g, obj, strlen(obj))) return 999;
    o2.ptr = g.data;
    o2.len = strlen(obj);
    rc2 = wsch_json_get_int(o2, "n", &v2);
    guard_free(&g);
    return rc != rc2 || (rc == WSCH_OK && v2 != *out) ? 999 : rc;
}

static int get_num(const char *obj, double *out) {
    guard_buf g;
    wsch_str o2;
    double v2 = 0;
    int rc = wsch_json_get_number(S(obj), "n", out), rc2;
    if (!guard_copy(&g, obj, strlen(obj))) return 999;
    o2.ptr = g.data;
    o2.len = strlen(obj);
    rc2 = wsch_json_get_number(o2, "n", &v2);
    guard_free(&g);
    return rc != rc2 || (rc == WSCH_OK && memcmp(&v2, out, sizeof v2) != 0) ? 999 : rc;
}

TEST lookup_numbers(void) {
    int64_t i = 0;
    double d = 0;
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":42}", &i));
    ASSERT_EQ((int64_t)42, i);
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":-7}", &i));
    ASSERT_EQ((int64_t)-7, i);
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":-0}", &i));
    ASSERT_EQ((int64_t)0, i);
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":0e999999999999999999999}", &i));
    ASSERT_EQ((int64_t)0, i);
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":1e3}", &i));
    ASSERT_EQ((int64_t)1000, i);
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":1E+3}", &i));
    ASSERT_EQ((int64_t)1000, i);
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":2.50e1}", &i));
    ASSERT_EQ((int64_t)25, i);
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":100e-2}", &i));
    ASSERT_EQ((int64_t)1, i);
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":120.000}", &i));
    ASSERT_EQ((int64_t)120, i);
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":9223372036854775807}", &i));
    ASSERT_EQ(INT64_MAX, i);
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":-9223372036854775808}", &i));
    ASSERT_EQ(INT64_MIN, i);
    ASSERT_EQ(WSCH_OK, get_int("{\"n\":0.00000000000000000000000000000000000000001e41}", &i));
    ASSERT_EQ((int64_t)1, i);
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, get_int("{\"n\":9223372036854775808}", &i));
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, get_int("{\"n\":-9223372036854775809}", &i));
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, get_int("{\"n\":1e19}", &i));
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, get_int("{\"n\":1e999999999999999999999}", &i));
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, get_int("{\"n\":123456789012345678901234567890}", &i));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, get_int("{\"n\":1.5}", &i));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, get_int("{\"n\":1e-1}", &i));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, get_int("{\"n\":\"1\"}", &i));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, get_int("{\"m\":1}", &i));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, get_int("{\"x\":{\"n\":1}}", &i));
    ASSERT_EQ(WSCH_ERR_JSON, get_int("{\"n\":01}", &i));
    ASSERT_EQ(WSCH_ERR_JSON, get_int("{\"n\":1,\"n\":1}", &i));

    /* The casts: where floating constants carry excess precision (x87,
       FLT_EVAL_METHOD 2), 0.1 is not the double 0.1 until converted. */
    ASSERT_EQ(WSCH_OK, get_num("{\"n\":0.1}", &d));
    ASSERT(d == (double)0.1);
    ASSERT_EQ(WSCH_OK, get_num("{\"n\":-2.5e-3}", &d));
    ASSERT(d == (double)-2.5e-3);
    ASSERT_EQ(WSCH_OK, get_num("{\"n\":123456789012345678901234567890}", &d));
    ASSERT(d == (double)123456789012345678901234567890.0);
    ASSERT_EQ(WSCH_OK, get_num("{\"n\":1.7976931348623157e308}", &d));
    ASSERT(d == (double)1.7976931348623157e308);
    ASSERT_EQ(WSCH_OK, get_num("{\"n\":4.9406564584124654e-324}", &d));
    ASSERT(d == (double)4.9406564584124654e-324);
    ASSERT_EQ(WSCH_OK, get_num("{\"n\":1e-400}", &d));
    ASSERT(d == 0.0);
    ASSERT_EQ(WSCH_OK, get_num("{\"n\":-0.0}", &d));
    ASSERT(d == 0.0);
    ASSERT_EQ(WSCH_OK, get_num("{\"n\":12}", &d));
    ASSERT(d == 12.0);
    ASSERT_EQ(WSCH_OK, get_num("{\"n\":0.000001e6}", &d));
    ASSERT(d == 1.0);
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, get_num("{\"n\":1e400}", &d));
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, get_num("{\"n\":-1.8e308}", &d));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, get_num("{\"n\":true}", &d));
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, get_num("{\"n\":null}", &d));
    PASS();
}

SUITE(json_validation) {
    RUN_TEST(jsontestsuite);
    RUN_TEST(validate_grammar);
    RUN_TEST(validate_utf8_and_surrogates);
    RUN_TEST(string_scan_positions);
    RUN_TEST(nesting_limits);
}

SUITE(envelope_decode) {
    RUN_TEST(decode_type_escapes);
    RUN_TEST(decode_type_length);
    RUN_TEST(decode_missing_or_bad_type);
    RUN_TEST(decode_payload_forms);
    RUN_TEST(decode_trailing_and_truncated);
    RUN_TEST(decode_huge_string);
}

SUITE(envelope_encode) {
    RUN_TEST(escape_string);
    RUN_TEST(encode_envelope);
    RUN_TEST(round_trip_random);
    RUN_TEST(mutations);
}

SUITE(payload_lookups) {
    RUN_TEST(lookup_strings);
    RUN_TEST(lookup_numbers);
    RUN_TEST(lookup_members);
}

GREATEST_MAIN_DEFS();
int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(json_validation);
    RUN_SUITE(envelope_decode);
    RUN_SUITE(envelope_encode);
    RUN_SUITE(payload_lookups);
    GREATEST_MAIN_END();
}
