/* bench_util.h - timing, statistics and small helpers shared by the bench
   programs (inmem.c, loadgen.c). Not part of the library. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the calling thread: what the in-memory figures are timed
   with, so time slices lost to other processes on a shared machine do not
   count against whichever contender was running. */
static inline double bench_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline uint64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline int bench_cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Median of n values (sorts v). */
static inline double bench_median(double *v, size_t n) {
    if (n == 0) return 0.0;
    qsort(v, n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* Relative spread of n values: (max - min) / median. */
static inline double bench_spread(const double *v, size_t n) {
    double lo = v[0], hi = v[0], tmp[64], med;
    size_t i;
    for (i = 1; i < n; i++) {
        if (v[i] < lo) lo = v[i];
        if (v[i] > hi) hi = v[i];
    }
    if (n > 64) n = 64;
    memcpy(tmp, v, n * sizeof *v);
    med = bench_median(tmp, n);
    return med > 0 ? (hi - lo) / med : 0.0;
}

/* Percentile p (0..100) of n sorted values. */
static inline uint64_t bench_pct(const uint64_t *sorted, size_t n, double p) {
    size_t i;
    if (n == 0) return 0;
    i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

static inline int bench_env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

/* Deterministic pseudo-random bytes (xorshift64*). */
static inline uint64_t bench_rand(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717u;
}

/* Keeps the compiler from proving a buffer's contents unused. */
#define BENCH_CLOBBER(p) __asm__ __volatile__("" : : "r"(p) : "memory")

#endif
