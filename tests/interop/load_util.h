/* What the load tools (hub_scale.c, redis_bench.c) share: their result
   lines, a microsecond clock, and raw client frames written straight to a
   socket, so thousands of clients cost almost nothing. Include after
   net_util.h. */
#ifndef LOAD_UTIL_H
#define LOAD_UTIL_H

#include <stdio.h>
#include <string.h>
#include <time.h>

static int pass_count, fail_count;

/* One "ok"/"FAIL" line; main() ends with the greatest-style summary. */
static void result(int ok, const char *what) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    fflush(stdout);
    if (ok) pass_count++;
    else fail_count++;
}

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Sends all of data on a nonblocking socket (small messages: spins on EAGAIN). */
static int send_all(int fd, const void *data, size_t len) {
    const char *p = (const char *)data;
    uint64_t deadline = net_now_ms() + 5000;
    while (len) {
        long n = net_write(fd, p, len);
        if (n < 0 || net_now_ms() > deadline) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A masked text frame with the zero key (masking is then the identity). */
static int send_text(int fd, const char *text) {
    unsigned char frame[512];
    size_t n = strlen(text), h = 2;
    if (n > 400) return -1;
    frame[0] = 0x81;
    if (n < 126) {
        frame[1] = (unsigned char)(0x80u | n);
    } else {
        frame[1] = 0x80u | 126u;
        frame[2] = (unsigned char)(n >> 8);
        frame[3] = (unsigned char)n;
        h = 4;
    }
    memset(frame + h, 0, 4);
    memcpy(frame + h + 4, text, n);
    return send_all(fd, frame, h + 4 + n);
}

#endif
