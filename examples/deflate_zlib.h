/* deflate_zlib.h -- permessage-deflate (RFC 7692) for ws_channel.h, through zlib.

   ws_channel.h negotiates the extension and frames compressed messages, but
   keeps no dependency: the compressing goes through a wsch_deflate_codec the
   caller supplies. This header is that codec, made with zlib (Debian:
   zlib1g-dev; link with -lz):

       #define WS_CHANNEL_IMPLEMENTATION      (in one file, as usual)
       #include "ws_channel.h"
       #include "deflate_zlib.h"
       ...
       desc.deflate.codec = deflate_zlib_codec();

   Every function is static: include it in each file that needs it. It needs
   only the declarations of ws_channel.h (include that first) and <zlib.h>.

   Options, defined before the include:
     DEFLATE_ZLIB_LEVEL     compression level 1..9 (default
                            Z_DEFAULT_COMPRESSION, which is 6): speed vs size
     DEFLATE_ZLIB_STRATEGY  default Z_DEFAULT_STRATEGY

   How the streams map onto zlib (zlib.h documents each point):
   - A stream is one raw DEFLATE stream: deflateInit2/inflateInit2 with
     negative window bits, so no zlib header or checksum.
   - Compressing with window bits 8 is refused: zlib 1.2.9 and later return
     Z_STREAM_ERROR for a raw 256-byte window (only the zlib header could
     tell the other side, and older versions silently used 512 bytes). So
     create(1, 8, ...) returns NULL; ws_channel.h never asks for it (it
     declines an offer that demands 8 of this side).
   - Inflating accepts 8..15 and allocates at least a 512-byte window (9)
     for a peer's 8: zlib.h's remedy for the 8-to-9 substitution above ("use
     9 with inflateInit2()"), which costs 256 bytes and accepts every
     stream a 256-byte window accepts.
   - run() with flush 1 is deflate(Z_SYNC_FLUSH): the output ends with an
     empty stored block, 00 00 FF FF. zlib.h warns that a sync flush into
     less than 7 bytes of room can repeat the marker forever; outputs that
     small go through a 64-byte holding buffer instead, so any output size,
     1 byte included, works. When an output happens to be filled exactly by
     the marker, the call that follows may add one more empty stored block
     (5 bytes): harmless (still valid DEFLATE, still ending in 00 00 FF FF)
     and rare.
   - An empty input right after a completed flush produces nothing: there
     is nothing to flush. ws_channel.h never compresses an empty message
     (they are shorter than any min_size), and after reset() an empty input
     gives the 5-byte empty block like any fresh zlib stream.
   - Inflating, a final block (BFINAL, RFC 7692 7.2.3.4) ends zlib's stream
     (Z_STREAM_END). The bytes after it are then read as a new stream: the
     RFC's 0x00 plus the receiver's 00 00 FF FF tail make an empty stored
     block; a sender that put nothing after the final block leaves only
     the tail, which is recognised and dropped, so the next message starts
     cleanly either way.
   - Memory goes through the wsch_allocator given to create() (zlib's
     zalloc/zfree); a NULL allocator, or one without alloc, means malloc and
     free. zlib's own estimate: compressing takes about
     (1 << (window_bits + 2)) + (1 << (mem_level + 9)) bytes, 256 KiB at 15
     and 8; inflating about 1 << window_bits bytes plus 7 KiB.
   - run() returns -1 for corrupt data (Z_DATA_ERROR, Z_NEED_DICT), out of
     memory (Z_MEM_ERROR) and misuse (Z_STREAM_ERROR). Z_BUF_ERROR only
     means nothing could be done (no input and nothing left to write, or
     no room): 0, with both counts 0, unless both input and room were
     there, which zlib never does and is reported as -1 rather than risk a
     caller's loop spinning. After -1 the stream is only fit for destroy().

   A program that builds with or without zlib defines DEFLATE_ZLIB_OPTIONAL
   before the include: then, unless EXAMPLE_ZLIB is defined too (the
   Makefile defines it, and links -lz, where zlib is installed), zlib is
   not needed and deflate_zlib_codec() returns NULL (no compression).

   Compiles as C99 and as C++. Public domain or MIT, like ws_channel.h. */
#ifndef DEFLATE_ZLIB_H
#define DEFLATE_ZLIB_H

#if defined(DEFLATE_ZLIB_OPTIONAL) && !defined(EXAMPLE_ZLIB)
static inline const wsch_deflate_codec *deflate_zlib_codec(void) { return NULL; }
#else

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#ifndef DEFLATE_ZLIB_LEVEL
#define DEFLATE_ZLIB_LEVEL Z_DEFAULT_COMPRESSION
#endif
#ifndef DEFLATE_ZLIB_STRATEGY
#define DEFLATE_ZLIB_STRATEGY Z_DEFAULT_STRATEGY
#endif

/* Outputs smaller than this are filled from the holding buffer (zlib wants
   more than 6 bytes of room for a sync flush). */
#define DEFLATE_ZLIB__HOLD 64

#if defined(__GNUC__) || defined(__clang__)
#define DEFLATE_ZLIB__PRIVATE static __attribute__((unused))
#else
#define DEFLATE_ZLIB__PRIVATE static
#endif

typedef struct deflate_zlib__stream {
    z_stream z;
    wsch_allocator allocator;   /* copied from create(); alloc NULL: malloc/free */
    int compressing;
    /* compressing: output made for a small caller buffer, not yet handed out */
    unsigned char hold[DEFLATE_ZLIB__HOLD];
    size_t hold_pos, hold_len;
    /* inflating: after a final block, how many bytes of a bare 00 00 FF FF
       tail have been held back (-1: not after a final block) */
    int tail_seen;
} deflate_zlib__stream;

static const unsigned char deflate_zlib__tail[4] = {0x00, 0x00, 0xFF, 0xFF};

DEFLATE_ZLIB__PRIVATE void *deflate_zlib__mem(const wsch_allocator *a, size_t size) {
    return a->alloc ? a->alloc(size, a->user) : malloc(size);
}

DEFLATE_ZLIB__PRIVATE void deflate_zlib__unmem(const wsch_allocator *a, void *ptr) {
    if (!ptr) return;
    if (a->alloc) {
        if (a->free) a->free(ptr, a->user);
    } else {
        free(ptr);
    }
}

/* zlib's hooks: opaque is the stream, which carries the allocator. */
DEFLATE_ZLIB__PRIVATE voidpf deflate_zlib__zalloc(voidpf opaque, uInt items, uInt size) {
    deflate_zlib__stream *s = (deflate_zlib__stream *)opaque;
    if (size && (size_t)items > (size_t)-1 / (size_t)size) return Z_NULL;
    return deflate_zlib__mem(&s->allocator, (size_t)items * (size_t)size);
}

DEFLATE_ZLIB__PRIVATE void deflate_zlib__zfree(voidpf opaque, voidpf ptr) {
    deflate_zlib__stream *s = (deflate_zlib__stream *)opaque;
    deflate_zlib__unmem(&s->allocator, ptr);
}

DEFLATE_ZLIB__PRIVATE void *deflate_zlib__create(int deflating, int window_bits, int mem_level,
                                                 const wsch_allocator *allocator, void *user) {
    deflate_zlib__stream *s;
    wsch_allocator a;
    int rc;
    (void)user;
    if (deflating ? (window_bits < 9 || window_bits > 15 || mem_level < 1 || mem_level > 9)
                 : (window_bits < 8 || window_bits > 15))
        return NULL;
    if (allocator) {
        a = *allocator;
    } else {
        memset(&a, 0, sizeof a);
    }
    s = (deflate_zlib__stream *)deflate_zlib__mem(&a, sizeof *s);
    if (!s) return NULL;
    memset(s, 0, sizeof *s);
    s->allocator = a;
    s->compressing = deflating ? 1 : 0;
    s->tail_seen = -1;
    if (a.alloc) {
        s->z.zalloc = deflate_zlib__zalloc;
        s->z.zfree = deflate_zlib__zfree;
        s->z.opaque = s;
    }
    if (deflating)
        rc = deflateInit2(&s->z, DEFLATE_ZLIB_LEVEL, Z_DEFLATED, -window_bits, mem_level, DEFLATE_ZLIB_STRATEGY);
    else
        rc = inflateInit2(&s->z, -(window_bits < 9 ? 9 : window_bits));
    if (rc != Z_OK) {
        deflate_zlib__unmem(&a, s);
        return NULL;
    }
    return s;
}

DEFLATE_ZLIB__PRIVATE void deflate_zlib__destroy(void *stream, void *user) {
    deflate_zlib__stream *s = (deflate_zlib__stream *)stream;
    wsch_allocator a;
    (void)user;
    if (!s) return;
    if (s->compressing)
        (void)deflateEnd(&s->z);
    else
        (void)inflateEnd(&s->z);
    a = s->allocator;
    deflate_zlib__unmem(&a, s);
}

DEFLATE_ZLIB__PRIVATE int deflate_zlib__reset(void *stream, void *user) {
    deflate_zlib__stream *s = (deflate_zlib__stream *)stream;
    (void)user;
    if (!s) return -1;
    s->hold_pos = s->hold_len = 0;
    s->tail_seen = -1;
    return (s->compressing ? deflateReset(&s->z) : inflateReset(&s->z)) == Z_OK ? 0 : -1;
}

/* zlib counts in uInt: a call takes at most this much of a size_t. */
DEFLATE_ZLIB__PRIVATE uInt deflate_zlib__uint(size_t n) {
    return n > (size_t)0xFFFFFFFFu ? (uInt)0xFFFFFFFFu : (uInt)n;
}

DEFLATE_ZLIB__PRIVATE int deflate_zlib__compress(deflate_zlib__stream *s, const unsigned char *in, size_t *in_len,
                                                 unsigned char *out, size_t *out_len, int flush) {
    size_t in_total = *in_len, out_total = *out_len, in_used = 0, out_used = 0;
    for (;;) {
        size_t room = out_total - out_used, took, made;
        int direct, rc;
        if (s->hold_pos < s->hold_len) {        /* hand out what was held first */
            size_t n = s->hold_len - s->hold_pos;
            if (n > room) n = room;
            memcpy(out + out_used, s->hold + s->hold_pos, n);
            s->hold_pos += n;
            out_used += n;
            if (s->hold_pos < s->hold_len) break;           /* the output is full */
            s->hold_pos = s->hold_len = 0;
            room -= n;
        }
        if (!room) break;
        direct = room >= DEFLATE_ZLIB__HOLD;
        s->z.next_in = (Bytef *)(uintptr_t)(in + in_used);   /* zlib reads it only */
        s->z.avail_in = deflate_zlib__uint(in_total - in_used);
        s->z.next_out = direct ? out + out_used : s->hold;
        s->z.avail_out = direct ? deflate_zlib__uint(room) : (uInt)DEFLATE_ZLIB__HOLD;
        took = s->z.avail_in;
        made = s->z.avail_out;
        rc = deflate(&s->z, flush ? Z_SYNC_FLUSH : Z_NO_FLUSH);
        took -= s->z.avail_in;
        made -= s->z.avail_out;
        in_used += took;
        if (direct)
            out_used += made;
        else
            s->hold_len = made;
        if (rc == Z_BUF_ERROR) {                /* nothing to do: not an error */
            if (in_used < in_total) return -1;  /* with input and room: never from zlib */
            break;
        }
        if (rc != Z_OK) return -1;
        if (!direct) continue;                  /* hand out what was made */
        if (s->z.avail_out) {                   /* room to spare: all in, flushed if asked */
            if (in_used < in_total) {           /* a larger input than one uInt: go on */
                if (!took && !made) return -1;
                continue;
            }
            break;
        }
        break;                                  /* the output is full */
    }
    *in_len = in_used;
    *out_len = out_used;
    return 0;
}

/* Feeds n bytes to inflate; a final block makes the stream start again
   (the bytes after it form a new one) and arms the bare-tail check. */
DEFLATE_ZLIB__PRIVATE int deflate_zlib__inflate_some(deflate_zlib__stream *s, const unsigned char *in, size_t n,
                                                     size_t *took, unsigned char *out, size_t room, size_t *made) {
    int rc;
    s->z.next_in = (Bytef *)(uintptr_t)in;
    s->z.avail_in = deflate_zlib__uint(n);
    s->z.next_out = out;
    s->z.avail_out = deflate_zlib__uint(room);
    *took = s->z.avail_in;
    *made = s->z.avail_out;
    rc = inflate(&s->z, Z_SYNC_FLUSH);
    *took -= s->z.avail_in;
    *made -= s->z.avail_out;
    if (rc == Z_STREAM_END) {
        if (inflateReset(&s->z) != Z_OK) return -1;
        s->tail_seen = 0;
        return 0;
    }
    if (rc == Z_OK) return 0;
    if (rc == Z_BUF_ERROR) return (*took || *made || !n || !room) ? 0 : -1;
    return -1;                                  /* Z_DATA_ERROR, Z_NEED_DICT, Z_MEM_ERROR, Z_STREAM_ERROR */
}

DEFLATE_ZLIB__PRIVATE int deflate_zlib__inflate(deflate_zlib__stream *s, const unsigned char *in, size_t *in_len,
                                                unsigned char *out, size_t *out_len) {
    size_t in_total = *in_len, out_total = *out_len, in_used = 0, out_used = 0;
    for (;;) {
        size_t took, made;
        if (s->tail_seen >= 0) {
            /* After a final block: hold back bytes while they match a bare
               00 00 FF FF tail; all four are dropped, anything else is
               given to the new stream, held bytes first (they are a stored
               block's header and make no output, so they always go in). */
            while (in_used < in_total && s->tail_seen < 4 && in[in_used] == deflate_zlib__tail[s->tail_seen]) {
                in_used++;
                s->tail_seen++;
            }
            if (s->tail_seen == 4) {
                s->tail_seen = -1;
                if (in_used == in_total) break;
                continue;
            }
            if (in_used == in_total) break;     /* still a prefix of the tail: wait */
            if (s->tail_seen > 0) {
                int held = s->tail_seen;
                s->tail_seen = -1;
                if (deflate_zlib__inflate_some(s, deflate_zlib__tail, (size_t)held, &took, out + out_used,
                                               out_total - out_used, &made) != 0 ||
                    took != (size_t)held)
                    return -1;
                out_used += made;
            } else {
                s->tail_seen = -1;
            }
        }
        if (in_used == in_total && out_used == out_total) break;
        if (deflate_zlib__inflate_some(s, in + in_used, in_total - in_used, &took, out + out_used,
                                       out_total - out_used, &made) != 0)
            return -1;
        in_used += took;
        out_used += made;
        if (s->tail_seen >= 0) continue;        /* a final block ended: read on */
        if (!took && !made) break;              /* nothing more can happen now */
        if (in_used == in_total || out_used == out_total) break;
    }
    *in_len = in_used;
    *out_len = out_used;
    return 0;
}

DEFLATE_ZLIB__PRIVATE int deflate_zlib__run(void *stream, const unsigned char *in, size_t *in_len, unsigned char *out,
                                            size_t *out_len, int flush, void *user) {
    deflate_zlib__stream *s = (deflate_zlib__stream *)stream;
    static const unsigned char none[1] = {0};
    (void)user;
    if (!s || !in_len || !out_len) return -1;
    if (!in) {                                  /* zlib wants pointers even for 0 bytes */
        if (*in_len) return -1;
        in = none;
    }
    if (!out) {
        if (*out_len) return -1;
        out = (unsigned char *)s->hold;         /* never written: room is 0 */
    }
    if (s->compressing) return deflate_zlib__compress(s, in, in_len, out, out_len, flush);
    return deflate_zlib__inflate(s, in, in_len, out, out_len);
}

/* The codec, ready for wsch_deflate_desc.codec. */
DEFLATE_ZLIB__PRIVATE const wsch_deflate_codec *deflate_zlib_codec(void) {
    static const wsch_deflate_codec codec = {deflate_zlib__create, deflate_zlib__destroy, deflate_zlib__reset,
                                             deflate_zlib__run, NULL};
    return &codec;
}

#endif /* zlib */
#endif /* DEFLATE_ZLIB_H */
