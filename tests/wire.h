/* Frames as a peer would put them on the wire, built byte by byte here
   (not with the library's encoder) so the tests check the library against
   an independent reading of RFC 6455 section 5.2. */
#ifndef WIRE_H
#define WIRE_H

#include "test_helper.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* first_byte is FIN|RSV|opcode as sent; masked frames use the RFC 6455
   section 5.7 example key. Returns the frame's length. */
TEST_HELPER size_t wire_frame(unsigned char *out, unsigned first_byte, const void *payload, size_t len, int masked) {
    static const unsigned char key[4] = {0x37, 0xFA, 0x21, 0x3D};
    size_t n = 0, i;
    out[n++] = (unsigned char)first_byte;
    if (len < 126) {
        out[n++] = (unsigned char)((masked ? 0x80 : 0) | len);
    } else if (len <= 0xFFFF) {
        out[n++] = (unsigned char)((masked ? 0x80 : 0) | 126);
        out[n++] = (unsigned char)(len >> 8);
        out[n++] = (unsigned char)len;
    } else {
        out[n++] = (unsigned char)((masked ? 0x80 : 0) | 127);
        for (i = 0; i < 8; i++) out[n++] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    }
    if (masked) {
        memcpy(out + n, key, 4);
        n += 4;
    }
    for (i = 0; i < len; i++)
        out[n + i] = (unsigned char)(((const unsigned char *)payload)[i] ^ (masked ? key[i & 3] : 0));
    return n + len;
}

/* Appends n bytes to a growing buffer: what a fake transport's send()
   collects. */
TEST_HELPER void wire_append(unsigned char **buf, size_t *len, size_t *cap, const void *data, size_t n) {
    if (*len + n > *cap) {
        size_t c = *cap ? *cap * 2 : 1024;
        while (c < *len + n) c *= 2;
        *buf = (unsigned char *)realloc(*buf, c);
        *cap = c;
    }
    if (n) memcpy(*buf + *len, data, n);
    *len += n;
}

#endif
