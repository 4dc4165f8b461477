/* args.h - the command-line values the example programs share: a port and
   a size ("64M"). Glue, not part of the library; the load generators in
   tests/interop use it too. Every function is static. */
#ifndef EXAMPLE_ARGS_H
#define EXAMPLE_ARGS_H

#include <stddef.h>
#include <stdint.h>

/* Decimal 0..65535 -> *port. 0, or -1. */
static inline int args_port(const char *s, uint16_t *port) {
    unsigned long v = 0;
    if (!s || !*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || (v = v * 10u + (unsigned long)(*s - '0')) > 65535u) return -1;
    }
    *port = (uint16_t)v;
    return 0;
}

/* Decimal size with an optional k/K, m/M or g/G suffix (powers of 1024). 0, or -1. */
static inline int args_size(const char *s, size_t *out) {
    uint64_t v = 0, mul = 1;
    if (!s || *s < '0' || *s > '9') return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        v = v * 10u + (uint64_t)(*s - '0');
        if (v > ((uint64_t)1 << 40)) return -1;     /* also keeps v * 10 from wrapping */
    }
    if (*s == 'k' || *s == 'K') mul = 1024u;
    else if (*s == 'm' || *s == 'M') mul = 1024u * 1024u;
    else if (*s == 'g' || *s == 'G') mul = 1024u * 1024u * 1024u;
    else if (*s != '\0') return -1;
    if (*s != '\0' && s[1] != '\0') return -1;
    if (v > (uint64_t)SIZE_MAX / mul) return -1;
    *out = (size_t)(v * mul);
    return 0;
}

#endif
