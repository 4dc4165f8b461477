/* Frame codec: RFC 6455 section 5.2 header rules and the section 5.7 examples. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER

static const unsigned char hello_unmasked[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
static const unsigned char hello_masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};

/* Decodes a header given whole, and byte by byte as it would arrive: every
   shorter prefix must say INCOMPLETE (or fail the same way as the whole). */
static int decode_every_prefix(const unsigned char *buf, size_t len, wsch_frame_header *h, size_t *hl) {
    int whole = wsch_frame_header_decode(buf, len, h, hl);
    size_t i;
    for (i = 0; i < len && i < *hl; i++) {
        wsch_frame_header tmp;
        size_t tl = 0;
        int rc = wsch_frame_header_decode(buf, i, &tmp, &tl);
        if (rc != WSCH_INCOMPLETE && rc != whole) return 999;
    }
    return whole;
}

TEST rfc_5_7_single_frames(void) {
    wsch_frame_header h;
    size_t hl;
    unsigned char payload[5];
    ASSERT_EQ(WSCH_OK, decode_every_prefix(hello_unmasked, sizeof hello_unmasked, &h, &hl));
    ASSERT_EQ(2u, hl);
    ASSERT_EQ(WSCH_OP_TEXT, h.opcode);
    ASSERT_EQ(1, h.fin);
    ASSERT_EQ(0, h.masked);
    ASSERT_EQ(5u, h.payload_len);
    ASSERT_MEM_EQ("Hello", hello_unmasked + 2, 5);

    ASSERT_EQ(WSCH_OK, decode_every_prefix(hello_masked, sizeof hello_masked, &h, &hl));
    ASSERT_EQ(6u, hl);
    ASSERT_EQ(1, h.masked);
    ASSERT_MEM_EQ("\x37\xfa\x21\x3d", h.mask_key, 4);
    memcpy(payload, hello_masked + hl, 5);
    wsch_mask(payload, 5, h.mask_key, 0);
    ASSERT_MEM_EQ("Hello", payload, 5);
    PASS();
}

TEST rfc_5_7_fragments_and_control(void) {
    static const unsigned char hel[] = {0x01, 0x03, 0x48, 0x65, 0x6c};
    static const unsigned char lo[] = {0x80, 0x02, 0x6c, 0x6f};
    static const unsigned char ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    static const unsigned char pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    wsch_frame_header h;
    size_t hl;
    ASSERT_EQ(WSCH_OK, decode_every_prefix(hel, sizeof hel, &h, &hl));
    ASSERT_EQ(WSCH_OP_TEXT, h.opcode);
    ASSERT_EQ(0, h.fin);
    ASSERT_EQ(3u, h.payload_len);
    ASSERT_EQ(WSCH_OK, decode_every_prefix(lo, sizeof lo, &h, &hl));
    ASSERT_EQ(WSCH_OP_CONTINUATION, h.opcode);
    ASSERT_EQ(1, h.fin);
    ASSERT_EQ(WSCH_OK, decode_every_prefix(ping, sizeof ping, &h, &hl));
    ASSERT_EQ(WSCH_OP_PING, h.opcode);
    ASSERT_EQ(WSCH_OK, decode_every_prefix(pong, sizeof pong, &h, &hl));
    ASSERT_EQ(WSCH_OP_PONG, h.opcode);
    ASSERT_EQ(1, h.masked);
    PASS();
}

TEST rfc_5_7_lengths(void) {
    static const unsigned char len256[] = {0x82, 0x7E, 0x01, 0x00};
    static const unsigned char len64k[] = {0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00};
    wsch_frame_header h;
    unsigned char out[WSCH_FRAME_HEADER_MAX];
    size_t hl;
    ASSERT_EQ(WSCH_OK, decode_every_prefix(len256, sizeof len256, &h, &hl));
    ASSERT_EQ(4u, hl);
    ASSERT_EQ(256u, h.payload_len);
    ASSERT_EQ(4u, wsch_frame_header_encode(out, &h));
    ASSERT_MEM_EQ(len256, out, 4);
    ASSERT_EQ(WSCH_OK, decode_every_prefix(len64k, sizeof len64k, &h, &hl));
    ASSERT_EQ(10u, hl);
    ASSERT_EQ(65536u, h.payload_len);
    ASSERT_EQ(10u, wsch_frame_header_encode(out, &h));
    ASSERT_MEM_EQ(len64k, out, 10);
    PASS();
}

/* Encode then decode round trip over every length class boundary. */
TEST encode_decode_roundtrip(void) {
    static const uint64_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 0xFFFFFFFFull, 0x7FFFFFFFFFFFFFFFull};
    size_t i;
    int masked;
    for (masked = 0; masked < 2; masked++) {
        for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            wsch_frame_header h, d;
            unsigned char out[WSCH_FRAME_HEADER_MAX];
            size_t n, hl;
            memset(&h, 0, sizeof h);
            h.opcode = WSCH_OP_BINARY;
            h.fin = 1;
            h.masked = (uint8_t)masked;
            memcpy(h.mask_key, "\x01\x02\x03\x04", 4);
            h.payload_len = lens[i];
            n = wsch_frame_header_encode(out, &h);
            ASSERT_EQ((lens[i] < 126 ? 2u : lens[i] <= 65535 ? 4u : 10u) + (masked ? 4u : 0u), n);
            ASSERT_EQ(WSCH_OK, decode_every_prefix(out, n, &d, &hl));
            ASSERT_EQ(n, hl);
            ASSERT_EQ(lens[i], d.payload_len);
            ASSERT_EQ(h.masked, d.masked);
            if (masked) ASSERT_MEM_EQ(h.mask_key, d.mask_key, 4);
        }
    }
    PASS();
}

TEST rejects_what_no_role_accepts(void) {
    wsch_frame_header h;
    size_t hl;
    unsigned op;
    static const unsigned char top_bit[] = {0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char non_minimal16[] = {0x82, 0x7E, 0x00, 0x7D};
    static const unsigned char non_minimal64[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    static const unsigned char ping126[] = {0x89, 0x7E, 0x00, 0x7E};
    static const unsigned char ping_fragment[] = {0x09, 0x00};
    ASSERT_EQ(WSCH_ERR_PROTOCOL, wsch_frame_header_decode(top_bit, sizeof top_bit, &h, &hl));
    ASSERT_EQ(WSCH_ERR_PROTOCOL, wsch_frame_header_decode(non_minimal16, sizeof non_minimal16, &h, &hl));
    ASSERT_EQ(WSCH_ERR_PROTOCOL, wsch_frame_header_decode(non_minimal64, sizeof non_minimal64, &h, &hl));
    /* Control-frame rules are decided from the first two bytes alone. */
    ASSERT_EQ(WSCH_ERR_PROTOCOL, wsch_frame_header_decode(ping126, 2, &h, &hl));
    ASSERT_EQ(WSCH_ERR_PROTOCOL, wsch_frame_header_decode(ping_fragment, 2, &h, &hl));
    for (op = 0; op < 16; op++) {
        unsigned char b[2];
        int known = op <= 2 || (op >= 8 && op <= 10);
        b[0] = (unsigned char)(0x80u | op);
        b[1] = 0;
        ASSERT_EQ(known ? WSCH_OK : WSCH_ERR_PROTOCOL, wsch_frame_header_decode(b, 2, &h, &hl));
    }
    PASS();
}

TEST rsv_bits_are_reported(void) {
    unsigned char b[2] = {0xF1, 0x00};
    wsch_frame_header h;
    size_t hl;
    ASSERT_EQ(WSCH_OK, wsch_frame_header_decode(b, 2, &h, &hl));
    ASSERT_EQ(7, h.rsv);
    PASS();
}

SUITE(frame_codec) {
    RUN_TEST(rfc_5_7_single_frames);
    RUN_TEST(rfc_5_7_fragments_and_control);
    RUN_TEST(rfc_5_7_lengths);
    RUN_TEST(encode_decode_roundtrip);
    RUN_TEST(rejects_what_no_role_accepts);
    RUN_TEST(rsv_bits_are_reported);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(frame_codec);
    GREATEST_MAIN_END();
}
