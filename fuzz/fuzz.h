/* Shared pieces of the fuzz targets: the library itself, a byte reader over
   the fuzz input, a counting allocator that can fail on demand, and a check
   macro that aborts (so libFuzzer and the replay runner both see a crash).

   Every target is one translation unit that includes this file and defines
   LLVMFuzzerTestOneInput(). It is built two ways: with libFuzzer
   (clang -fsanitize=fuzzer,address,undefined) and with fuzz/replay_main.c as
   a plain program that runs corpus files (any compiler + ASan/UBSan). */
#ifndef WSCH_FUZZ_H
#define WSCH_FUZZ_H

#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Helpers here are used by some targets only. */
#if defined(__GNUC__) || defined(__clang__)
#define FZ_HELPER static __attribute__((unused))
#else
#define FZ_HELPER static
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_CHECK(cond)                                                                    \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

/* ---- reading the fuzz input ---------------------------------------------- */

typedef struct fz_in {
    const uint8_t *p;
    size_t n;
} fz_in;

FZ_HELPER unsigned fz_u8(fz_in *in) {
    unsigned v;
    if (!in->n) return 0;
    v = in->p[0];
    in->p++;
    in->n--;
    return v;
}

FZ_HELPER unsigned fz_u16(fz_in *in) {
    unsigned hi = fz_u8(in);
    return (hi << 8) | fz_u8(in);
}

/* Up to want bytes (fewer when the input runs out). */
FZ_HELPER const uint8_t *fz_bytes(fz_in *in, size_t want, size_t *got) {
    const uint8_t *p = in->p;
    if (want > in->n) want = in->n;
    in->p += want;
    in->n -= want;
    *got = want;
    return p;
}

/* A heap copy of exactly n bytes, so ASan sees any read past the end. */
FZ_HELPER char *fz_dup(const void *p, size_t n) {
    char *d = (char *)malloc(n ? n : 1);
    FZ_CHECK(d != NULL);
    if (n) memcpy(d, p, n);
    return d;
}

/* A NUL-terminated heap copy. */
FZ_HELPER char *fz_strdup(const void *p, size_t n) {
    char *d = (char *)malloc(n + 1);
    FZ_CHECK(d != NULL);
    if (n) memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

/* ---- allocator ----------------------------------------------------------- */

typedef struct fz_alloc {
    size_t live;        /* blocks not yet freed */
    size_t count;       /* allocations attempted */
    size_t fail_at;     /* attempt number (1-based) that returns NULL; 0 = never */
    int fail_all_after; /* once failing, keep failing */
} fz_alloc;

FZ_HELPER void *fz_alloc_fn(size_t size, void *user) {
    fz_alloc *a = (fz_alloc *)user;
    void *p;
    a->count++;
    if (a->fail_at && (a->count == a->fail_at || (a->fail_all_after && a->count > a->fail_at))) return NULL;
    p = malloc(size ? size : 1);
    FZ_CHECK(p != NULL);
    a->live++;
    return p;
}

FZ_HELPER void fz_free_fn(void *ptr, void *user) {
    fz_alloc *a = (fz_alloc *)user;
    FZ_CHECK(ptr != NULL);
    FZ_CHECK(a->live > 0);
    a->live--;
    free(ptr);
}

FZ_HELPER wsch_allocator fz_allocator(fz_alloc *a) {
    wsch_allocator w;
    w.alloc = fz_alloc_fn;
    w.free = fz_free_fn;
    w.user = a;
    return w;
}

/* ---- hashing event streams (FNV-1a, 64 bit) ------------------------------ */

#define FZ_HASH_INIT 0xcbf29ce484222325ull

FZ_HELPER uint64_t fz_hash(uint64_t h, const void *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

FZ_HELPER uint64_t fz_hash_u64(uint64_t h, uint64_t v) {
    unsigned char b[8];
    int i;
    for (i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    return fz_hash(h, b, 8);
}

/* ---- a span lies inside a buffer ----------------------------------------- */

FZ_HELPER int fz_inside(wsch_str s, const void *base, size_t len) {
    const char *b = (const char *)base;
    if (s.len == 0) return 1;
    if (!s.ptr) return 0;
    return s.ptr >= b && s.ptr <= b + len && s.len <= (size_t)(b + len - s.ptr);
}

#endif
