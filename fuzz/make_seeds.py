#!/usr/bin/python3
"""Writes the small seed corpora under fuzz/corpus/TARGET/. Run from fuzz/.
The files are committed; this script documents how they were made."""
import base64, hashlib, os, struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
# The conn fuzzers' random source is a counter, so the client's key is fixed.
CLIENT_KEY = base64.b64encode(bytes(range(16)))


def accept(key):
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(op, payload, fin=True, mask=None, rsv=0):
    b = bytes([(0x80 if fin else 0) | (rsv << 4) | op])
    n = len(payload)
    m = 0x80 if mask is not None else 0
    if n < 126:
        b += bytes([m | n])
    elif n <= 0xFFFF:
        b += bytes([m | 126]) + struct.pack(">H", n)
    else:
        b += bytes([m | 127]) + struct.pack(">Q", n)
    if mask is not None:
        b += mask
        payload = bytes(c ^ mask[i & 3] for i, c in enumerate(payload))
    return b + payload


def write(target, name, data):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


REQUEST = (b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
           b"Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n")
RESPONSE = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept(CLIENT_KEY) + b"\r\n\r\n")


def cfg(handshake=0, limits=0, send=0, echo=0, script=0, destroy=0, req=0, cuts=()):
    b0 = handshake | (limits << 1) | (send << 3) | (echo << 5) | (script << 6)
    b1 = destroy | (req << 3) | (len(cuts) << 5)
    return bytes([b0, b1]) + b"".join(struct.pack(">H", c) for c in cuts)


def conn_seeds(target, masked):
    mk = (lambda: b"\x37\xfa\x21\x3d") if masked else (lambda: None)
    text = frame(1, b"Hello", mask=mk())
    ping = frame(9, b"ping!", mask=mk())
    close = frame(8, struct.pack(">H", 1000) + b"bye", mask=mk())
    frag = (frame(1, b"Hel", fin=False, mask=mk()) + frame(9, b"", mask=mk()) +
            frame(0, b"lo \xe2\x82", fin=False, mask=mk()) + frame(10, b"p", mask=mk()) +
            frame(0, b"\xac!", mask=mk()))
    big = frame(2, bytes(range(200)), mask=mk())
    head = REQUEST if target == "fuzz_conn_server" else RESPONSE
    write(target, "open_text_ping_close", cfg(1) + text + ping + close)
    write(target, "raw_handshake_then_frames", cfg(0) + head + text + close)
    write(target, "fragmented_with_controls", cfg(1, limits=1) + frag + close)
    write(target, "len16_split", cfg(1, cuts=(1, 3, 9)) + big + close)
    write(target, "echo_partial_sends", cfg(1, send=1, echo=1) + text + big + ping)
    write(target, "bad_mask_bit", cfg(1) + frame(1, b"x", mask=None if masked else b"abcd"))
    write(target, "too_big_for_limits", cfg(1, limits=3) + frame(2, bytes(130), mask=mk()))
    write(target, "protocol_offer_destroy", cfg(0, req=1, destroy=2) + head + text + text)
    # script: feed the head, send a message, ping, writable, close, close timer
    script = (bytes([1]) + struct.pack(">H", len(head)) + head + bytes([5, 0, 3]) + b"abc" +
              bytes([7, 2]) + b"hi" + bytes([10, 2, 2, 8, 1, 2]) + b"ok" + bytes([4]))
    write(target, "script_calls", cfg(0, script=1) + script)


def handshake_seeds():
    t = "fuzz_handshake"
    write(t, "request_valid", bytes([0, 2, 0, 5, 0, 40]) + REQUEST)
    write(t, "request_token_query_auth",
          bytes([0, 0]) + b"GET /ws?token=abc%2Bd&x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
          b"Connection: keep-alive, Upgrade\r\nAuthorization: Bearer t0k3n\r\n"
          b"Sec-WebSocket-Protocol: bearer.xyz, chat\r\nSec-WebSocket-Key: " + KEY +
          b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    write(t, "request_wrong_version", bytes([0, 0]) + REQUEST.replace(b"Version: 13", b"Version: 8"))
    write(t, "request_duplicate_host", bytes([0, 0]) + REQUEST.replace(b"Host: example.com\r\n",
                                                                      b"Host: a\r\nHost: b\r\n"))
    write(t, "request_small_limit", bytes([1 << 2, 0]) + REQUEST)
    resp = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept(KEY) + b"\r\nSec-WebSocket-Protocol: chat\r\n\r\n")
    write(t, "response_valid", bytes([1, 1, 0, 30]) + resp)
    write(t, "response_403", bytes([1, 0]) + b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    write(t, "client_build", bytes([2]) + struct.pack(">H", 8080) + bytes(range(16)) +
          b"example.com\0/chat\0a=1&b=%20\0chat, superchat\0http://example.com\0X-A: b\r\n")
    write(t, "client_build_ipv6", bytes([2, 0, 0]) + bytes(16) + b"::1\0\0\0\0\0")
    write(t, "refusal_426", bytes([3]) + struct.pack(">H", 426))
    write(t, "refusal_401_extra", bytes([3]) + struct.pack(">H", 401) + b"Retry-After: 5\r\n")


def url_seeds():
    t = "fuzz_url"
    write(t, "url_full", b"\0\0wss://Example.COM:8443/a/b%20c?x=1&token=abc")
    write(t, "url_ipv6", b"\0\0ws://[::1]:9001")
    write(t, "url_bad_port", b"\0\0ws://h:99999/")
    write(t, "query_plus_escape", b"\1\x20token\0a=1&token=a%2Bb+c&token=zz")
    write(t, "query_bad_escape", b"\1\x20a\0a=1&b=%4")
    write(t, "query_small_cap", b"\1\x03k\0k=abcdef")
    write(t, "encode_bytes", b"\2\x10" + bytes([0x41, 0x20, 0xFF, 0x2B, 0x7E, 0x2F]))
    write(t, "token_token68", b"\3\0abc.DEF-123_~+/==")
    write(t, "token_binary", b"\3\0a b\xc3\xa9&=")


def envelope_seeds():
    t = "fuzz_envelope"
    write(t, "subscribe", b"\0\x40" + b'{"type":"subscribe","payload":{"channel":"news\\u00e9","n":-12.5e1}}')
    write(t, "escapes_surrogates", b"\0\x40" + b' {"t\\u0079pe" : "a\\ud83d\\ude00\\n\\/", "payload": [1, 2.0, true, false, null, "x"]} ')
    write(t, "lone_surrogate", b"\0\x40" + b'{"type":"x","payload":"\\ud800"}')
    write(t, "duplicate_type", b"\0\x40" + b'{"type":"a","type":"b"}')
    write(t, "nesting_65", b"\0\x40" + b'{"type":"x","payload":' + b"[" * 64 + b"]" * 64 + b"}")
    write(t, "numbers", b"\0\x40" + b'{"type":"n","n":9223372036854775807,"payload":1e308}')
    write(t, "lookup_key", b"\1\x08data\0" + b'{"data":"\\u0000x","data2":{"data":1}}')
    write(t, "escape_utf8", b"\2\x10" + "a\"\\\x01\x1f\u00e9\U0001F600".encode())
    write(t, "escape_invalid", b"\2\x10" + b"\xc0\xaf\xed\xa0\x80")
    write(t, "encode_roundtrip", b"\3\0chat.message\0 {\"text\":\"hi\"} ")
    write(t, "encode_no_payload", b"\3\1ping")


def client_seeds():
    t = "fuzz_client"
    # ops: 0 connect, 2 transport_open, 4 answer(v), 7 canned(k), 8 writable, 9 fire(k),
    # 10 transport_closed, 11 send(k), 12 subscribe(k), 13 unsubscribe(k), 14 on/off(k), 15 clock(u16)
    hello = bytes([14, 1 | (1 << 1), 14, 1 | (0 << 1) | (1 << 4), 12, 0, 12, 2, 11, 8, 0, 2, 4, 0])
    write(t, "open_subscribe_chat", bytes([0x01, 0x21, 0x07, 0x0F]) + hello +
          bytes([7, 1, 7, 2, 7, 7, 13, 0, 11, 0, 8, 7, 5, 0, 9, 0, 9, 0]))
    write(t, "offline_queue_then_open", bytes([0x02, 0x11, 0x03, 0x0F]) +
          bytes([11, 0, 11, 8, 12, 1, 0, 2, 4, 0, 8, 7, 1, 15, 0x10, 0x00, 9, 0, 9, 1, 9, 0]))
    write(t, "retry_backoff_max", bytes([0x10, 0x31, 0x01, 0x00]) +
          bytes([0, 3, 9, 0, 2, 10, 9, 0, 2, 4, 4, 9, 0, 0, 2, 4, 6]))
    write(t, "dead_peer_heartbeat", bytes([0x20, 0x11, 0x07 | (1 << 2) | (1 << 4), 0x00]) +
          bytes([0, 2, 4, 0, 9, 0, 9, 0, 9, 1, 9, 0, 7, 0, 9, 0]))
    write(t, "terminal_and_refused", bytes([0x06, 0x11, 0x03, 0x40]) +
          bytes([0, 2, 4, 2, 0, 2, 4, 0, 7, 5, 2, 0, 2, 4, 0, 7, 5, 4]))
    write(t, "handler_reentry_destroy", bytes([0x00, 0x11, 0x03, 0x00]) +
          bytes([14, 1 | (1 << 1) | (1 << 4), 14, 1 | (1 << 1) | (2 << 4), 14, 1 | (1 << 1) | (4 << 4),
                 0, 2, 4, 0, 7, 1, 7, 2, 7, 1]))
    write(t, "partial_sends_nomem", bytes([0x08, 0x11, 0x03, 0x30]) +
          bytes([16, 1, 0, 2, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
                 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
                 4, 1, 17, 0, 12, 2, 16, 3, 11, 0, 1, 9, 0, 10]))


def hub_seeds():
    t = "fuzz_hub"
    # ops (op, k, args): 0 accept, 1 request(v), 4 canned(kind<<2|slot, arg), 5 writable,
    # 6 timer((which<<2)|slot), 7 transport_closed, 8 broadcast(a), 12 close_client,
    # 13 send mode((m<<2)|slot), 15 shutdown, 16 clock, 17 close what the hub closed
    two = bytes([0, 0, 0, 1, 1, 0, 1, 1, 1, 0, 4, 0, 0, 4, 1, 0, 8, 0, 153, 5, 0, 5, 1,
                 4, 2 << 2, 7, 4, (3 << 2) | 1, 5, 4, (7 << 2), 0, 17, 0, 7, 1])
    write(t, "two_clients_broadcast", bytes([0, 0]) + two)
    flood = bytes([0, 0, 1, 0, 1]) + b"".join(bytes([4, 0, i]) for i in range(6)) + \
        b"".join(bytes([4, 9 << 2, i]) for i in range(5)) + bytes([4, 1 << 2, 0, 4, 4 << 2, 0, 4, 0, 3])
    write(t, "subscribe_flood", bytes([0x01, 0]) + flood)
    slow = bytes([0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 4, 0, 0, 4, 1, 0, 13, 1 | (2 << 2)]) + \
        bytes([8, 0, 153]) * 12 + bytes([5, 0, 17, 0, 8, 0, 153])
    write(t, "slow_consumer", bytes([0x08, 0]) + slow)
    http = bytes([0, 0, 1, 0, 8, 0, 1, 1, 0x81, 16, 0, 2, 1, 2, 2, 1, 0, 4, 17, 0, 0, 2, 1, 2, 4,
                  1, 2, 0x40, 1, 2, 0x80, 17, 0])
    write(t, "http_and_refusals", bytes([0x10, 0x04]) + http)
    idle = bytes([0, 0, 1, 0, 1, 6, 8, 16, 5, 6, 8, 0, 1, 1, 1, 3, 15, 0, 5, 0, 6, 4, 17, 0])
    write(t, "idle_and_shutdown", bytes([0x20, 0x01]) + idle)
    bridge_seeds(t)
    presence_seeds(t)


def presence_seeds(t):
    # Presence: byte 1's history bit without its clock bit (0x40), then a
    # configuration byte: 0x01 clock, 0x02 history, bits 2-3
    # presence_max_members (1-3; 0: 1000), 0x10 stats interval 2500 ms (else
    # 300), 0x20 max_presence_info_len 12, 0x40 presence_ttl_ms 6000,
    # 0x80 authenticate gives info. Presence ops follow the others (18, or 26
    # with a bridge): +0 flush, +1 canned(kind << 2 | slot, arg), +2
    # set_presence_info(variant << 2 | slot), +3 clock(k), with a bridge +4
    # another hub's presence, +5 this hub's replayed as another's.
    FLUSH, CANNED, INFO, CLOCK, FORGE, REPLAY = range(6)
    three = bytes([0, 0, 0, 1, 0, 2, 1, 0, 1, 1, 1, 1, 1, 2, 1])     # slots 0-2 open as users 1-3
    base = 18
    seq = three + bytes([base + CANNED, 0, 0,        # slot 0 subscribes to "a" with presence
                         4, 1, 0,                    # slot 1 subscribes to "a"
                         base + FLUSH, 0,
                         base + INFO, 2, base + INFO, (2 << 2) | 2, base + INFO, (3 << 2) | 2,
                         base + CANNED, 2, 0,        # slot 2 watches "a" too
                         base + FLUSH, 0,
                         base + CANNED, (3 << 2) | 1, 0, base + CANNED, (4 << 2) | 2, 0,
                         base + CANNED, (3 << 2) | 1, 3, base + CANNED, (3 << 2) | 1, 5,
                         4, (1 << 2) | 1, 0,          # slot 1 unsubscribes
                         base + FLUSH, 0, base + CLOCK, 9, 7, 2, base + FLUSH, 0])
    write(t, "presence_watchers", bytes([0, 0x40, 0x01 | (3 << 2) | 0x80]) + seq)
    # Over the cap (1 member): counts, held back by the interval, then the list again.
    over = three + bytes([base + CANNED, 0, 0, 4, 1, 0, base + FLUSH, 0, 4, 2, 0, base + FLUSH, 0,
                          4, 3 << 2, 1, base + FLUSH, 0, 4, (1 << 2) | 2, 0, base + FLUSH, 0,
                          base + CLOCK, 60, base + FLUSH, 0, base + CANNED, (3 << 2) | 2, 0,
                          4, (1 << 2) | 1, 0, base + CLOCK, 60, base + FLUSH, 0])
    write(t, "presence_over_the_cap", bytes([0, 0x40, 0x01 | (1 << 2) | 0x10]) + over)
    # History and recover with presence, the second subscribe while replaying.
    hist = three + bytes([8, 0, 153, 8, 0, 153, 13, 1 << 2, base + CANNED, (1 << 2), 0x80 | 0x20,
                          base + CANNED, (2 << 2) | 1, 0x40, base + FLUSH, 0, 5, 0, 5, 0,
                          base + FLUSH, 0, 13, 0, 5, 0, base + FLUSH, 0])
    write(t, "presence_history", bytes([0, 0x40, 0x01 | 0x02]) + hist)
    # A bridge: this hub's presence echoed, other hubs' joins and leaves,
    # this hub's replayed as another's, their expiry, a sync, the link lost.
    base = 26
    two = bytes([0, 0, 0, 1, 1, 0, 1, 1, 1, 1])
    br = two + bytes([base + CANNED, 0, 0, 4, 1, 0, base + FLUSH, 0, 18, 0, 0, 18, 0, 0, 18, 0, 0,
                      base + FORGE, 0, 0, 0, 0, 3, 2, 0, 12, 1, 22, 2,
                      base + FORGE, 0, 1, 1, 0, 1, 2, 0,
                      base + FLUSH, 0, base + REPLAY, 0, 0, base + FLUSH, 0,
                      base + FORGE, 0, 8, 1, 0, base + FLUSH, 0, 18, 0, 0,
                      16, 9, base + FLUSH, 0, 22, 4, base + FLUSH, 0, 18, 0, 0])
    write(t, "presence_bridge", bytes([0, 0xC0, 0x00, 0x40]) + br)
    # Shared positions with presence; malformed presence from other hubs.
    bad = two + bytes([base + CANNED, (1 << 2), 0, 21, 0, 0, 0, base + FLUSH, 0,
                       base + FORGE, 5, 0, 0, base + FORGE, 7, 4, 0, base + FORGE, 6, 0, 0, 9,
                       0x7b, 0x22, 0x6a, 0x6f, 0x69, 0x6e, 0x73, 0x22, 0x3a,
                       base + FORGE, 0, 3, 0, 4, 9 * 12 + 10, 0x08, 3 * 12, 0x20, 5 * 12, 4, 4 * 12 + 7, 0x18,
                       base + FLUSH, 0, 16, 20, base + FLUSH, 0])
    write(t, "presence_bridge_shared_malformed", bytes([0, 0xC0, 0x01 | (3 << 4), 0x20]) + bad)
    # Messages of 128 bytes: what this hub says of three users with info goes
    # in several messages, and a user whose info is 256 bytes is not said.
    small = bytes([0, 0, 0, 1, 0, 2, 1, 0, 1, 1, 1, 1, 1, 2, 1, base + INFO, (4 << 2) | 0,
                   base + CANNED, 0, 0, 4, 1, 0, 4, 2, 0, base + FLUSH, 0, 18, 0, 0, 18, 0, 0,
                   base + REPLAY, 0, 0, base + FLUSH, 0, 7, 1, base + FLUSH, 0])
    write(t, "presence_bridge_small_messages", bytes([0x04, 0xC0, 0x00, 0xC0]) + small)


def bridge_seeds(t):
    # Byte 1's top bit adds a bridge; byte 2 configures it (0x01 shared
    # positions, history 1 + bits 4-6). Bridge ops: 18 deliver(variant),
    # 20 appended(variant, which), 21 fetched(variant, which), 22 resubscribe
    # (k & 4: link lost), 23 store event (k >> 2), 24 client pub (k, arg).
    shared = bytes([0, 0x80, 0x01 | (3 << 4)])
    open_sub = bytes([0, 0, 1, 0, 1, 4, 0, 0, 21, 0, 0, 0])        # slot 0 as user 1 on "a", fetch answered
    publish = bytes([8, 0, 153, 20, 0, 0, 0])                      # broadcast on "a", append answered OK
    write(t, "bridge_shared_publish", shared + open_sub + publish * 3 + bytes([18, 0, 0]) * 3 +
          bytes([5, 0, 23, 0]) + publish + bytes([18, 0, 0, 5, 0]))
    # Gaps (a lost message, the link down), resubscribe, a forged message and a forged answer.
    write(t, "bridge_shared_gap_forged", shared + open_sub + publish * 2 +
          bytes([23, 2 << 2, 18, 0, 0, 8, 0, 153, 20, 0, 0, 0, 18, 0, 0, 21, 0, 0, 0, 23, 4 << 2]) + publish +
          bytes([22, 4, 21, 0, 1, 0, 18, 0, 4, 0, 0, 0x02, 3, 0, 21, 0, 5, 0, 0, 1, 0x02, 2, 4, 0, 18, 0, 0]))
    # Reliable publishes from a client with a session: acked when appended,
    # "unavailable" when it fails, a resend, a bogus ticket, refusals.
    write(t, "bridge_shared_reliable", shared + bytes([0, 0, 1, 0, 32, 4, 0, 0, 21, 0, 0, 0]) +
          bytes([24, 0, 0, 20, 0, 0, 0, 18, 0, 0, 24, 0x40, 0, 24, 0, 0, 20, 0, 4, 0, 24, 0, 0, 20, 0, 5, 0,
                 20, 0, 7, 1, 23, 5 << 2, 24, 0, 0, 23, 5 << 2, 23, 6 << 2, 4, 1 << 2, 0, 4, 0, 2, 18, 0, 0, 5, 0]))
    # History under shared positions: a paced "history" replay to a slow
    # reader and a recover from the hub's own epoch, while more is published.
    write(t, "bridge_shared_history_replay", shared + open_sub + (publish + bytes([18, 0, 0])) * 5 +
          bytes([0, 1, 1, 1, 1, 13, 1 | (1 << 2), 4, 41, 51, 5, 1]) + publish +
          bytes([18, 0, 0, 5, 1, 5, 1, 0, 2, 1, 2, 1, 4, 42, 153, 5, 1, 5, 2, 5, 1]))
    # More reliable messages waiting for append's answers than the first
    # array holds, the oldest answered: the waits are moved down.
    write(t, "bridge_shared_reliable_flood", shared + bytes([0, 0, 1, 0, 32]) + bytes([24, 0, 0]) * 2 +
          bytes([20, 0, 0, 0]) + bytes([24, 0, 0]) * 15 + bytes([20, 0, 0, 0, 18, 0, 0]))
    # Plain bridge: interest, publish echoed back (skipped as its own), a
    # foreign message, a user's channel, malformed input, resubscribe.
    plain = bytes([0, 0x80, 0x02])
    write(t, "bridge_plain", plain + bytes([0, 0, 1, 0, 1, 0, 1, 1, 1, 1, 4, 0, 0, 4, 1, 2, 8, 0, 153,
                                            18, 0, 0, 18, 0, 6, 0, 1, 9, 0, 4, 18, 0, 0, 18, 0, 6, 17, 0,
                                            18, 0, 5, 2, 1, 4, 0x7b, 0x7d, 0x20, 0x20, 22, 0, 8, 0, 153,
                                            22, 4, 18, 0, 0, 23, 7 << 2, 8, 0, 153, 5, 0, 5, 1]))


if __name__ == "__main__":
    hub_seeds()
    client_seeds()
    envelope_seeds()
    url_seeds()
    handshake_seeds()
    conn_seeds("fuzz_conn_server", True)
    conn_seeds("fuzz_conn_client", False)
