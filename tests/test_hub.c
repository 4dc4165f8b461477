/* Tests of the hub (wsch_hub) over fake transports: each fake records what
   the hub sends, can refuse bytes (a slow reader) or fail (a broken pipe),
   and keeps the timers the hub arms, so every path runs without a socket or
   a clock. Every test ends in hub_teardown, which checks the close rule on
   each fake: one close() per accepted peer, the last callback about it. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER
#include "hub_fixture.h"

#include <stdlib.h>
#include <string.h>
#include <stdio.h>

/* ---- tests ------------------------------------------------------------------ */

TEST connect_ping_pong(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "alice"));
    ASSERT_EQ(1, T.connects);
    ASSERT_STR_EQ("alice", T.last_user);
    ASSERT_EQ(0, f[0].armed[WSCH_TIMER_HANDSHAKE]);     /* the handshake timer was cancelled */
    ASSERT_EQ(1, f[0].armed[WSCH_HUB_TIMER_IDLE]);
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"ping\",\"payload\":{\"t\":17}}"));
    ASSERT_STR_EQ("{\"type\":\"pong\",\"payload\":{\"t\":17}}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"ping\"}"));
    ASSERT_STR_EQ("{\"type\":\"pong\"}", fake_text(&f[0]));
    /* A protocol ping is answered by the connection. */
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_PING, "hb", 2));
    {
        char buf[16];
        size_t len;
        int op;
        ASSERT(fake_next(&f[0], &op, buf, sizeof buf, &len));
        ASSERT_EQ(WSCH_OP_PONG, op);
        ASSERT_EQ(2, (int)len);
    }
    ASSERT_EQ(2, (int)stats().messages_in);     /* protocol pings are not messages */
    ASSERT_EQ(2, (int)stats().messages_out);
    fake_gone(&f[0]);
    ASSERT_EQ(1, T.disconnects);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, T.last_code);
    ASSERT(fake_released(&f[0]));
    ASSERT(f[0].disconnect_seq < f[0].close_seq);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST subscribe_broadcast_reaches_exactly_subscribers(void) {
    fake f[3];
    size_t delivered = 99, i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < 3; i++) ASSERT(fake_open(&f[i], i == 2 ? "carol" : "alice"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "news"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "news"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[2], "sports"));
    ASSERT_STR_EQ("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"news\"}}", fake_text(&f[0]));
    ASSERT_STR_EQ("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"news\"}}", fake_text(&f[1]));
    ASSERT_STR_EQ("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"sports\"}}", fake_text(&f[2]));
    /* Subscribing twice is acknowledged and changes nothing. */
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "news"));
    ASSERT_STR_EQ("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"news\"}}", fake_text(&f[0]));
    ASSERT_EQ(2, (int)wsch_hub_channel_size(T.hub, "news"));

    {
        const char *p = "{\"id\":1,\"t\":\"\\u00e9t\\u00e9\"}";
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "news", "headline", p, strlen(p), &delivered));
    }
    ASSERT_EQ(2, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"headline\",\"payload\":{\"id\":1,\"t\":\"\\u00e9t\\u00e9\"}}", fake_text(&f[0]));
    ASSERT_STR_EQ("{\"type\":\"headline\",\"payload\":{\"id\":1,\"t\":\"\\u00e9t\\u00e9\"}}", fake_text(&f[1]));
    ASSERT_EQ(0, (int)fake_pending(&f[2]));
    /* Nobody on a channel: fine, nothing sent. A payload-less envelope. */
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "empty", "x", NULL, 0, &delivered));
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "sports", "goal", NULL, 0, &delivered));
    ASSERT_EQ(1, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"goal\"}", fake_text(&f[2]));

    /* Unsubscribe: acknowledged, also for a channel never joined. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"news\"}}"));
    ASSERT_STR_EQ("{\"type\":\"unsubscribed\",\"payload\":{\"channel\":\"news\"}}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"nope\"}}"));
    ASSERT_STR_EQ("{\"type\":\"unsubscribed\",\"payload\":{\"channel\":\"nope\"}}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "news", "n", "2", 1, &delivered));
    ASSERT_EQ(1, (int)delivered);
    ASSERT_EQ(0, (int)fake_pending(&f[0]));
    ASSERT_STR_EQ("{\"type\":\"n\",\"payload\":2}", fake_text(&f[1]));
    ASSERT_EQ(2, (int)stats().channels);
    ASSERT_EQ(2, (int)stats().subscriptions);
    for (i = 0; i < 3; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* Broadcast arguments are checked like peer input. */
TEST broadcast_argument_errors(void) {
    fake f[1];
    size_t delivered = 7;
    char big[200];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "u"));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_broadcast(T.hub, "bad name", "t", NULL, 0, &delivered));
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_broadcast(T.hub, "", "t", NULL, 0, NULL));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_broadcast(T.hub, "c", "", NULL, 0, NULL));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_broadcast(T.hub, "c", NULL, NULL, 0, NULL));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_broadcast(T.hub, "c", "t", NULL, 3, NULL));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_hub_broadcast(T.hub, "c", "t", "{", 1, NULL));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_hub_broadcast(T.hub, "c", "t", "1 2", 3, NULL));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_hub_broadcast(T.hub, "c", "t", "\"\xff\"", 3, NULL));
    ASSERT_EQ(WSCH_ERR_UTF8, wsch_hub_broadcast(T.hub, "c", "\xc3", NULL, 0, NULL));
    memset(big, 'a', sizeof big);
    big[WSCH_ENVELOPE_TYPE_MAX + 1] = '\0';
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_hub_broadcast(T.hub, "c", big, NULL, 0, NULL));
    big[WSCH_ENVELOPE_TYPE_MAX] = '\0';
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", big, NULL, 0, NULL));
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "nobody", "t", NULL, 0, &delivered));
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_send_to_user(T.hub, NULL, "t", NULL, 0, NULL));
    /* A type is escaped on the way out. */
    ASSERT_EQ(WSCH_OK, wsch_hub_send(T.hub, f[0].h, "a\"b\n", "[]", 2));
    ASSERT_STR_EQ("{\"type\":\"a\\\"b\\n\",\"payload\":[]}", fake_text(&f[0]));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST message_size_limit(void) {
    fake f[2];
    char msg[200];
    ASSERT_EQ(WSCH_OK, hub_setup(small_messages));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT(fake_open(&f[1], "b"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "c"));
    (void)fake_text(&f[1]);
    /* Outbound: an envelope over max_message_size is refused, nothing sent. */
    memset(msg, 0, sizeof msg);
    msg[0] = '"';
    memset(msg + 1, 'x', 80);
    msg[81] = '"';
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_hub_broadcast(T.hub, "c", "t", msg, 82, NULL));
    ASSERT_EQ(0, (int)fake_pending(&f[1]));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_hub_broadcast(T.hub, "c", "t", msg, 60, NULL));
    /* {"type":"t","payload":P} is 23 bytes around P: 77 fit in 100, 78 do not. */
    msg[76] = '"';
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "t", msg, 77, NULL));
    ASSERT_EQ(100, (int)strlen(fake_text(&f[1])));
    msg[76] = 'x';
    msg[77] = '"';
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, wsch_hub_broadcast(T.hub, "c", "t", msg, 78, NULL));
    /* Inbound: a message over the limit closes with 1009. */
    memset(msg, ' ', 101);
    ASSERT_EQ(WSCH_ERR_TOO_LARGE, fake_frame(&f[0], WSCH_OP_TEXT, msg, 101));
    ASSERT(fake_closed_with(&f[0], WSCH_CLOSE_MESSAGE_TOO_BIG, NULL));
    ASSERT(fake_released(&f[0]));       /* the hub closed it: nothing for the caller to report */
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_PROTOCOL]);
    ASSERT_EQ(WSCH_CLOSE_MESSAGE_TOO_BIG, T.last_code);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

TEST bad_envelopes_get_errors(void) {
    fake f[1];
    char name[300];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "alice"));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "not json"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"bad_envelope\",\"message\":"
                  "\"expected {\\\"type\\\": string, \\\"payload\\\": any}\"}}",
                  fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"payload\":1}"));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_envelope\"") != NULL);
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"subscribe\"}"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"bad_payload\",\"message\":"
                  "\"payload needs a non-empty string \\\"channel\\\"\",\"request\":\"subscribe\"}}",
                  fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"subscribe\",\"payload\":{\"channel\":7}}"));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_payload\"") != NULL);
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"\"}}"));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_payload\"") != NULL);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "has space"));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_channel\"") != NULL);
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"caf\\u00e9\"}}"));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_channel\"") != NULL);
    memset(name, 'n', sizeof name);
    name[WSCH_HUB_DEFAULT_MAX_CHANNEL_LEN + 1] = '\0';
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], name));
    ASSERT(strstr(fake_text(&f[0]), "\"code\":\"bad_channel\"") != NULL);
    name[WSCH_HUB_DEFAULT_MAX_CHANNEL_LEN] = '\0';
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], name));
    ASSERT(strstr(fake_text(&f[0]), "\"type\":\"subscribed\"") != NULL);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "a-Z_0.9:x@y/z"));
    ASSERT(strstr(fake_text(&f[0]), "\"type\":\"subscribed\"") != NULL);
    /* Other types go to on_message, with the payload. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"chat\",\"payload\":{\"x\":[1,2]}}"));
    ASSERT_EQ(1, T.messages);
    ASSERT_STR_EQ("chat", T.last_type);
    ASSERT_STR_EQ("{\"x\":[1,2]}", T.last_payload);
    ASSERT_EQ(0, (int)fake_pending(&f[0]));
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(T.hub, f[0].h));
    /* Binary is not an envelope: 1003. */
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_BINARY, "\x01\x02", 2));
    ASSERT(fake_closed_with(&f[0], WSCH_CLOSE_UNSUPPORTED_DATA, "Binary messages are not supported"));
    ASSERT_EQ(0, (int)stats().subscriptions);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_PROTOCOL]);
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

static void no_handler(wsch_hub_desc *d) { d->on_message = NULL; }

TEST unknown_type_without_handler(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(no_handler));
    ASSERT(fake_open(&f[0], "alice"));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"we\\\"ird\",\"payload\":null}"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"unknown_type\",\"message\":"
                  "\"no handler for this type\",\"request\":\"we\\\"ird\"}}",
                  fake_text(&f[0]));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST send_to_user_reaches_every_connection(void) {
    fake f[5];
    size_t delivered, i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "alice"));
    ASSERT(fake_open(&f[1], "bob"));
    ASSERT(fake_open(&f[2], "alice"));
    ASSERT(fake_open(&f[3], "alice"));
    ASSERT(fake_open(&f[4], "alicia"));
    ASSERT_EQ(3, (int)stats().users);
    ASSERT_EQ(3, (int)wsch_hub_user_connections(T.hub, "alice"));
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "alice", "note", "\"hi\"", 4, &delivered));
    ASSERT_EQ(3, (int)delivered);
    ASSERT_EQ(1, (int)stats().encodes);         /* once for three connections */
    for (i = 0; i < 5; i++) {
        if (i == 1 || i == 4) ASSERT_EQ(0, (int)fake_pending(&f[i]));
        else ASSERT_STR_EQ("{\"type\":\"note\",\"payload\":\"hi\"}", fake_text(&f[i]));
    }
    /* The middle connection leaves; the list stays whole. */
    fake_gone(&f[2]);
    ASSERT_EQ(2, (int)wsch_hub_user_connections(T.hub, "alice"));
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "alice", "note", NULL, 0, &delivered));
    ASSERT_EQ(2, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"note\"}", fake_text(&f[0]));
    ASSERT_STR_EQ("{\"type\":\"note\"}", fake_text(&f[3]));
    fake_gone(&f[0]);
    fake_gone(&f[3]);
    ASSERT_EQ(0, (int)wsch_hub_user_connections(T.hub, "alice"));
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "alice", "note", NULL, 0, &delivered));
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(2, (int)stats().users);
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "bob", "note", NULL, 0, &delivered));
    ASSERT_EQ(1, (int)delivered);
    fake_gone(&f[1]);
    fake_gone(&f[4]);
    ASSERT_EQ(0, (int)stats().users);
    ASSERT_EQ(0, (int)hub_teardown(f, 5));
    PASS();
}

TEST cleanup_on_close_leaves_nothing(void) {
    fake f[4];
    size_t base, i;
    char ch[16];
    wsch_hub_counters s;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    base = T.mem.live_bytes;
    for (i = 0; i < 4; i++) {
        int k;
        ASSERT(fake_open(&f[i], i % 2 ? "x" : "y"));
        for (k = 0; k < 20; k++) {
            snprintf(ch, sizeof ch, "c%d", (int)((size_t)k * (i + 1) % 23));
            ASSERT_EQ(WSCH_OK, fake_sub(&f[i], ch));
        }
    }
    s = stats();
    ASSERT_EQ(4, (int)s.peers);
    ASSERT_EQ(4, (int)s.open);
    ASSERT_EQ(2, (int)s.users);
    ASSERT_EQ(80, (int)s.subscriptions);
    /* Clients go in every way: peer close frame, transport loss, server close. */
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(WSCH_CLOSE_NORMAL, T.last_code);
    fake_gone(&f[1]);
    ASSERT(fake_released(&f[1]));
    ASSERT_EQ(WSCH_OK, wsch_hub_peer_close(T.hub, f[2].h, 1000, "done", WSCH_CSTR));
    ASSERT(fake_closed_with(&f[2], 1000, "done"));
    ASSERT_EQ(WSCH_OK, fake_frame(&f[2], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(fake_released(&f[2]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[3], "{\"type\":\"quit\"}"));
    ASSERT(fake_closed_with(&f[3], 1000, "bye"));
    fake_gone(&f[3]);
    s = stats();
    ASSERT_EQ(0, (int)s.peers);
    ASSERT_EQ(0, (int)s.open);
    ASSERT_EQ(0, (int)s.users);
    ASSERT_EQ(0, (int)s.channels);
    ASSERT_EQ(0, (int)s.subscriptions);
    ASSERT_EQ(0, (int)s.bytes_queued);
    ASSERT_EQ(4, T.disconnects);
    /* Everything but the hub's own tables and the slot array is returned. */
    ASSERT_EQ(base + 16 * sizeof(wsch__hub_slot) + 2 * 16 * sizeof(void *), T.mem.live_bytes);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

TEST stale_handles(void) {
    fake f[2];
    wsch_hub_peer old, zero;
    wsch_str uid;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "alice"));
    old = f[0].h;
    ASSERT_EQ(1, wsch_hub_peer_valid(T.hub, old));
    ASSERT_EQ(&f[0], wsch_hub_peer_user(T.hub, old));
    fake_gone(&f[0]);
    /* During on_disconnect the handle still worked and knew its user. */
    ASSERT_EQ(1, T.handle_valid_in_disconnect);
    ASSERT_EQ(5, (int)T.user_in_disconnect.len);
    ASSERT_EQ(1, f[0].closes);
    ASSERT_EQ(0, wsch_hub_peer_valid(T.hub, old));
    ASSERT_EQ(0u, wsch_hub_peer_want(T.hub, old));
    ASSERT_EQ(NULL, wsch_hub_peer_user(T.hub, old));
    uid.ptr = "junk";
    uid.len = 4;
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_peer_user_id(T.hub, old, &uid));
    ASSERT_EQ(0, (int)uid.len);         /* emptied, not left pointing anywhere */
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_send(T.hub, old, "t", NULL, 0));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_subscribe(T.hub, old, "c"));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_unsubscribe(T.hub, old, "c"));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_peer_close(T.hub, old, 1000, NULL, 0));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_writable(T.hub, old));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_timer_fired(T.hub, old, WSCH_HUB_TIMER_IDLE));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_transport_closed(T.hub, old));
    {
        char x[1] = {'x'};
        ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_feed(T.hub, old, x, 1));
    }
    ASSERT_EQ(WSCH_STATE_CLOSED, wsch_hub_peer_state(T.hub, old));
    ASSERT_EQ(0, (int)wsch_hub_peer_queued_bytes(T.hub, old));
    ASSERT_EQ(0, wsch_hub_is_subscribed(T.hub, old, "c"));
    /* The slot is reused with a new generation; the old handle stays stale. */
    ASSERT(fake_open(&f[1], "bob"));
    ASSERT_EQ(old.index, f[1].h.index);
    ASSERT(old.gen != f[1].h.gen);
    ASSERT_EQ(0, wsch_hub_peer_valid(T.hub, old));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_send(T.hub, old, "t", NULL, 0));
    ASSERT_EQ(0, (int)fake_pending(&f[1]));
    /* Handles never issued. */
    memset(&zero, 0, sizeof zero);
    ASSERT_EQ(0, wsch_hub_peer_valid(T.hub, zero));
    zero.index = 1000;
    zero.gen = 1;
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_send(T.hub, zero, "t", NULL, 0));
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

static void three_clients(wsch_hub_desc *d) { d->max_peers = 3; }

TEST client_limit(void) {
    fake f[4];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(three_clients));
    for (i = 0; i < 3; i++) ASSERT_EQ(WSCH_OK, fake_accept(&f[i]));
    ASSERT_EQ(WSCH_ERR_LIMIT, fake_accept(&f[3]));
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_FULL]);
    fake_gone(&f[1]);           /* a handshaking client's socket died */
    ASSERT(fake_released(&f[1]));
    ASSERT_EQ(0, T.disconnects);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_HANDSHAKE]);
    ASSERT_EQ(WSCH_OK, fake_accept(&f[3]));     /* the freed place is taken again */
    fake_gone(&f[0]);
    fake_gone(&f[2]);
    fake_gone(&f[3]);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

static void two_channels(wsch_hub_desc *d) {
    d->max_channels_per_peer = 2;
    d->max_channel_len = 8;
}

TEST channel_limits(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(two_channels));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "12345678"));
    ASSERT(strstr(fake_text(&f[0]), "subscribed") != NULL);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "123456789"));
    ASSERT(strstr(fake_text(&f[0]), "bad_channel") != NULL);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "b"));
    ASSERT(strstr(fake_text(&f[0]), "subscribed") != NULL);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "c"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"too_many_channels\",\"message\":"
                  "\"subscription limit reached\",\"request\":\"subscribe\",\"channel\":\"c\"}}",
                  fake_text(&f[0]));
    ASSERT_EQ(WSCH_ERR_LIMIT, wsch_hub_subscribe(T.hub, f[0].h, "c"));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_subscribe(T.hub, f[0].h, "123456789"));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_subscribe(T.hub, f[0].h, "a b"));
    ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[0].h, "b"));      /* already */
    ASSERT_EQ(WSCH_OK, wsch_hub_unsubscribe(T.hub, f[0].h, "b"));
    ASSERT_EQ(0, wsch_hub_is_subscribed(T.hub, f[0].h, "b"));
    ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[0].h, "c"));
    ASSERT_EQ(1, wsch_hub_is_subscribed(T.hub, f[0].h, "c"));
    ASSERT_EQ(0, (int)fake_pending(&f[0]));     /* server-side calls send no acknowledgement */
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

static void tight_queue(wsch_hub_desc *d) { d->limits.max_outbound_bytes = 1000; }

static wsch_budget shared_budget;
static void tight_budget(wsch_hub_desc *d) { d->limits.outbound_budget = &shared_budget; }

/* A budget shared by all peers: when it is spent, the peer whose output
   would have to wait is dropped (4008) and its backlog is given back at
   once; a peer that keeps up is never touched. */
TEST shared_budget_drops_the_peers_that_lag(void) {
    fake f[3];
    size_t delivered, i, got = 0;
    const size_t piece = 4 * sizeof(void *), frame = 130 + piece;
    char payload[101];
    int rounds;
    shared_budget.limit = 1000;
    shared_budget.used = 0;
    ASSERT_EQ(WSCH_OK, hub_setup(tight_budget));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "feed"));
        (void)fake_text(&f[i]);
    }
    ASSERT_EQ(0u, shared_budget.used);
    f[1].take = f[2].take = 0;          /* two stop reading */
    memset(payload, 'p', sizeof payload);
    payload[0] = '"';
    payload[99] = '"';
    payload[100] = '\0';
    for (rounds = 0; (size_t)rounds < 1000 / (2 * frame); rounds++) {
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "tick", payload, WSCH_CSTR, &delivered));
        ASSERT_EQ(3, (int)delivered);
    }
    ASSERT_EQ(2 * (size_t)rounds * frame, shared_budget.used);
    /* f[1] would pass the budget: dropped, its backlog given back, so f[2]
       (behind it in the walk) still fits */
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "tick", payload, WSCH_CSTR, &delivered));
    ASSERT_EQ_FMT(2, (int)delivered, "%d");
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    ASSERT_EQ(WSCH_STATE_CLOSING, wsch_hub_peer_state(T.hub, f[1].h));
    ASSERT_EQ(wsch_hub_peer_queued_bytes(T.hub, f[1].h) + wsch_hub_peer_queued_bytes(T.hub, f[2].h),
              shared_budget.used);
    for (; rounds < 30; rounds++)
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "tick", payload, WSCH_CSTR, &delivered));
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    ASSERT(shared_budget.used <= 2 * (17 + piece));     /* two close frames */
    while (fake_text(&f[0])[0]) got++;
    ASSERT_EQ(31u, got);
    /* both laggards read at last: their 4008 comes first */
    for (i = 1; i < 3; i++) {
        f[i].take = FAKE_ALL;
        ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[i].h));
        ASSERT_EQ('\0', fake_text(&f[i])[0]);
        ASSERT(fake_closed_with(&f[i], WSCH_HUB_CLOSE_SLOW_CONSUMER, "Slow consumer"));
    }
    ASSERT_EQ(0u, shared_budget.used);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    ASSERT_EQ(0u, shared_budget.used);
    PASS();
}

TEST slow_consumer_is_dropped_others_served(void) {
    fake f[3];
    size_t delivered, i, got[3] = {0, 0, 0};
    char payload[120];
    int rounds = 0;
    ASSERT_EQ(WSCH_OK, hub_setup(tight_queue));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "feed"));
        (void)fake_text(&f[i]);
    }
    /* Each frame is 130 bytes (126 of envelope, a 4-byte header); a queued
       one also holds its bookkeeping, `piece` (documented). f[1] takes 50
       bytes of the first, then stops reading. */
    const size_t piece = 4 * sizeof(void *);
    size_t held = 130 - 50 + piece, fit = 1;
    while (held + 130 + piece <= 1000) {
        held += 130 + piece;
        fit++;
    }
    f[1].take = 50;
    memset(payload, 'p', sizeof payload);
    payload[0] = '"';
    payload[99] = '"';
    for (rounds = 0; rounds < 30; rounds++) {
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "tick", payload, 100, &delivered));
        f[1].take = 0;
        if ((size_t)rounds < fit) ASSERT_EQ(3, (int)delivered);
    }
    ASSERT_EQ(2, (int)delivered);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    ASSERT_EQ(2, (int)wsch_hub_channel_size(T.hub, "feed"));
    /* The backlog went with the drop, all but the frame begun: its rest,
       then the close frame (2 + 2 + 13), each with its bookkeeping. */
    ASSERT_EQ_FMT((int)(80 + piece + 17 + piece), (int)wsch_hub_peer_queued_bytes(T.hub, f[1].h), "%d");
    ASSERT_EQ(1, f[1].armed[WSCH_TIMER_CLOSE]);
    ASSERT_EQ(WSCH_STATE_CLOSING, wsch_hub_peer_state(T.hub, f[1].h));
    for (i = 0; i < 3; i++) {
        if (i == 1) continue;
        while (fake_text(&f[i])[0]) got[i]++;
        ASSERT_EQ(30, (int)got[i]);
    }
    /* The reader wakes up: it sees the frame it had begun, then the 4008. */
    f[1].take = FAKE_ALL;
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[1].h));
    while (fake_text(&f[1])[0]) got[1]++;
    ASSERT_EQ(1, (int)got[1]);
    ASSERT(fake_closed_with(&f[1], WSCH_HUB_CLOSE_SLOW_CONSUMER, "Slow consumer"));
    /* The close timer ends it if the peer never answers. */
    ASSERT_EQ(0, f[1].closes);
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_TIMER_CLOSE));
    ASSERT_EQ(1, T.disconnects);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, T.last_code);     /* the peer never sent its close frame */
    ASSERT(fake_released(&f[1]));
    ASSERT(f[1].disconnect_seq < f[1].close_seq);
    for (i = 0; i < 3; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* Gathering: with the budget spent elsewhere (other connections sharing
   it), a peer that reads is written at once instead of holding its turn:
   the budget refuses only output queued behind a full socket. */
static void tight_budget_gathered(wsch_hub_desc *d) {
    d->limits.outbound_budget = &shared_budget;
    d->gather = 1;
}

TEST gathered_turn_writes_through_a_spent_budget(void) {
    enum { SPENT = 1000 };
    fake f[2];
    size_t delivered, i, got = 0;
    int k;
    shared_budget.limit = SPENT;
    shared_budget.used = 0;
    ASSERT_EQ(WSCH_OK, hub_setup(tight_budget_gathered));
    for (i = 0; i < 2; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "feed"));
        (void)fake_text(&f[i]);
    }
    shared_budget.used += SPENT;        /* spent by connections elsewhere */
    for (k = 0; k < 5; k++) {
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "tick", "{\"n\":1}", WSCH_CSTR, &delivered));
        ASSERT_EQ(2, (int)delivered);
    }
    (void)wsch_hub_flush(T.hub);
    ASSERT_EQ(0, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    for (i = 0; i < 2; i++) {
        for (got = 0; fake_text(&f[i])[0]; got++) {}
        ASSERT_EQ(5u, got);
    }
    ASSERT_EQ((size_t)SPENT, shared_budget.used);   /* nothing was held */
    shared_budget.used -= SPENT;
    for (i = 0; i < 2; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    shared_budget.limit = 0;
    PASS();
}

/* desc.gather: a turn's broadcasts wait for wsch_hub_flush() and then
   leave in one write per peer, in order, with or without send_gather (the
   pieces then copied together); a peer that takes part of it gets the
   rest, exactly, when its socket drains. */
static void gather_on(wsch_hub_desc *d) { d->gather = 1; }
static void gather_writev(wsch_hub_desc *d) {
    d->gather = 1;
    d->effects.send_gather = f_send_gather;
}

TEST gathered_turn_is_one_write_per_peer(void) {
    enum { N = 3, MSGS = 5 };
    void (*setups[2])(wsch_hub_desc *) = {gather_on, gather_writev};
    int v;
    for (v = 0; v < 2; v++) {
        fake f[N];
        char payload[32];
        size_t i, k, delivered, before[N];
        ASSERT_EQ(WSCH_OK, hub_setup(setups[v]));
        for (i = 0; i < N; i++) {
            ASSERT(fake_open(&f[i], "u"));
            ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "news"));
            ASSERT_STR_EQ("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"news\"}}", fake_text(&f[i]));
            before[i] = f[i].out_len;
            f[i].writes = 0;
        }
        f[1].take = 7;                  /* takes a few bytes, then blocks */
        for (k = 0; k < MSGS; k++) {
            snprintf(payload, sizeof payload, "{\"n\":%u}", (unsigned)k);
            ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "news", "m", payload, WSCH_CSTR, &delivered));
            ASSERT_EQ(N, (int)delivered);
        }
        for (i = 0; i < N; i++) ASSERT_EQ(before[i], f[i].out_len);      /* nothing before the turn ends */
        ASSERT_EQ(0u, wsch_hub_flush(T.hub));
        for (i = 0; i < N; i++) ASSERT_EQ(1u, f[i].writes);               /* one write each */
        ASSERT_EQ(before[1] + 7, f[1].out_len);
        ASSERT(wsch_hub_peer_want(T.hub, f[1].h) & WSCH_WANT_WRITE);
        ASSERT(!(wsch_hub_peer_want(T.hub, f[0].h) & WSCH_WANT_WRITE));
        f[1].take = FAKE_ALL;
        ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[1].h));
        for (i = 0; i < N; i++) {
            for (k = 0; k < MSGS; k++) {
                char want[64];
                snprintf(want, sizeof want, "{\"type\":\"m\",\"payload\":{\"n\":%u}}", (unsigned)k);
                ASSERT_STR_EQ(want, fake_text(&f[i]));
            }
            ASSERT_EQ(0u, fake_pending(&f[i]));
        }
        /* A flush with nothing held writes nothing. */
        ASSERT_EQ(0u, wsch_hub_flush(T.hub));
        ASSERT_EQ(1u, f[0].writes);
        for (i = 0; i < N; i++) fake_gone(&f[i]);
        ASSERT_EQ(0, (int)hub_teardown(f, N));
    }
    PASS();
}

/* Held output counts against the peer's limit, but a peer is written to
   before it would be refused for it: a turn bigger than max_outbound_bytes
   reaches a peer that reads, and one that does not is still dropped at
   its limit. */
static void gather_small_limit(wsch_hub_desc *d) {
    d->gather = 1;
    d->limits.max_outbound_bytes = 4096;
}

TEST gathered_turn_keeps_the_slow_consumer_rule(void) {
    fake f[2];
    char payload[1100];
    size_t k, delivered;
    ASSERT_EQ(WSCH_OK, hub_setup(gather_small_limit));
    ASSERT(fake_open(&f[0], "reader"));
    ASSERT(fake_open(&f[1], "stuck"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "big"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "big"));
    (void)fake_text(&f[0]);
    (void)fake_text(&f[1]);
    f[1].take = 0;
    memset(payload, 'x', sizeof payload);
    payload[0] = '"';
    payload[sizeof payload - 1] = '"';
    for (k = 0; k < 10; k++)                /* about 11 KiB in one turn */
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "big", "b", payload, sizeof payload, &delivered));
    (void)wsch_hub_flush(T.hub);
    for (k = 0; k < 10; k++) ASSERT_EQ(sizeof payload + 23, strlen(fake_text(&f[0])));
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(T.hub, f[0].h));
    ASSERT_EQ(WSCH_STATE_CLOSING, wsch_hub_peer_state(T.hub, f[1].h));
    f[1].take = FAKE_ALL;
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[1].h));
    ASSERT(fake_closed_with(&f[1], WSCH_HUB_CLOSE_SLOW_CONSUMER, "Slow consumer"));
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

/* The same bytes go to every subscriber, encoded once, queued by reference:
   memory for a blocked broadcast does not grow with the payload per client. */
TEST broadcast_is_encoded_once_and_shared(void) {
    enum { N = 50, SIZE = 8000 };
    fake f[N];
    size_t i, before, delivered, allocs;
    uint64_t encodes;
    char *payload = (char *)malloc(SIZE);
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < N; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "big"));
        (void)fake_text(&f[i]);
        f[i].take = i % 2 ? 0 : 100;     /* all blocked or partly blocked */
    }
    memset(payload, 'z', SIZE);
    payload[0] = '"';
    payload[SIZE - 1] = '"';
    before = T.mem.live_bytes;
    encodes = stats().encodes;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "big", "blob", payload, SIZE, &delivered));
    ASSERT_EQ(N, (int)delivered);
    ASSERT_EQ(encodes + 1, stats().encodes);
    /* One frame of SIZE + overhead, plus one small queue node per client. */
    ASSERT(T.mem.live_bytes - before < SIZE + 200 + N * 64);
    for (i = 0; i < N; i++) {
        f[i].take = FAKE_ALL;
        ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[i].h));
    }
    /* All that is left are the queue entries, kept for the next broadcast
       (4 pointers each, see wsch_budget): it allocates only its frame. */
    ASSERT(T.mem.live_bytes <= before + N * 4 * sizeof(void *));
    for (i = 0; i < N; i++) f[i].take = i % 2 ? 0 : 100;
    allocs = T.mem.allocs;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "big", "blob", payload, SIZE, &delivered));
    ASSERT_EQ(N, (int)delivered);
    ASSERT_EQ(allocs + 1, T.mem.allocs);
    for (i = 0; i < N; i++) {
        f[i].take = FAKE_ALL;
        ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[i].h));
    }
    for (i = 1; i < N; i++) {
        ASSERT_EQ(f[0].out_len - f[0].rd, f[i].out_len - f[i].rd);
        ASSERT_MEM_EQ(f[0].out + f[0].rd, f[i].out + f[i].rd, f[0].out_len - f[0].rd);
    }
    ASSERT_EQ(SIZE + 26, (int)strlen(fake_text(&f[0])));
    for (i = 0; i < N; i++) fake_gone(&f[i]);
    free(payload);
    ASSERT_EQ(0, (int)hub_teardown(f, N));
    PASS();
}

/* Many clients, random subscriptions, checked against a model. */
TEST many_clients_match_a_model(void) {
    enum { N = 600, C = 24 };
    static fake f[N];
    static unsigned char model[N][C];
    unsigned seed = 12345;
    size_t i, round;
    char ch[8];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    memset(model, 0, sizeof model);
    for (i = 0; i < N; i++) ASSERT(fake_open(&f[i], i % 7 ? "many" : "few"));
    for (round = 0; round < 6000; round++) {
        size_t k, c;
        seed = seed * 1103515245u + 12345u;
        k = (seed >> 8) % N;
        c = (seed >> 20) % C;
        snprintf(ch, sizeof ch, "ch%u", (unsigned)c);
        if ((seed >> 3) & 1) {
            ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[k].h, ch));
            model[k][c] = 1;
        } else {
            ASSERT_EQ(WSCH_OK, wsch_hub_unsubscribe(T.hub, f[k].h, ch));
            model[k][c] = 0;
        }
    }
    for (i = 0; i < N; i++) f[i].rd = f[i].out_len, f[i].head_done = 1;
    {
        size_t c, total = 0;
        for (c = 0; c < C; c++) {
            size_t delivered, want = 0;
            char payload[16];
            for (i = 0; i < N; i++) want += model[i][c];
            total += want;
            snprintf(ch, sizeof ch, "ch%u", (unsigned)c);
            snprintf(payload, sizeof payload, "%u", (unsigned)c);
            ASSERT_EQ(want, wsch_hub_channel_size(T.hub, ch));
            ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, ch, "m", payload, strlen(payload), &delivered));
            ASSERT_EQ(want, delivered);
        }
        ASSERT_EQ(total, (size_t)stats().subscriptions);
        for (i = 0; i < N; i++) {
            for (c = 0; c < C; c++) {
                if (!model[i][c]) continue;
                {
                    char expect[40];
                    snprintf(expect, sizeof expect, "{\"type\":\"m\",\"payload\":%u}", (unsigned)c);
                    ASSERT_STR_EQ(expect, fake_text(&f[i]));
                }
            }
            ASSERT_EQ(0, (int)fake_pending(&f[i]));
        }
    }
    /* Every other client leaves; the rest still get exactly their channels. */
    for (i = 0; i < N; i += 2) fake_gone(&f[i]);
    {
        size_t c, total = 0;
        for (c = 0; c < C; c++) {
            size_t want = 0;
            for (i = 1; i < N; i += 2) want += model[i][c];
            total += want;
            snprintf(ch, sizeof ch, "ch%u", (unsigned)c);
            ASSERT_EQ(want, wsch_hub_channel_size(T.hub, ch));
        }
        ASSERT_EQ(total, (size_t)stats().subscriptions);
    }
    ASSERT_EQ(N / 2, (int)stats().peers);
    for (i = 1; i < N; i += 2) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)stats().subscriptions);
    ASSERT_EQ(0, (int)stats().channels);
    ASSERT_EQ(0, (int)hub_teardown(f, N));
    PASS();
}

TEST auth_sources_and_rejections(void) {
    fake f[5];
    char v[128];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    /* Authorization header. */
    ASSERT_EQ(WSCH_OK, fake_request(&f[0], "/ws", "Authorization: Bearer hdr-user\r\n"));
    ASSERT_EQ(101, fake_status(&f[0]));
    ASSERT_STR_EQ("hdr-user", T.last_user);
    /* A bearer subprotocol, next to the application's own: the hub selects its own. */
    ASSERT_EQ(WSCH_OK, fake_request(&f[1], "/ws", "Sec-WebSocket-Protocol: wsch, bearer.proto-user\r\n"));
    ASSERT_EQ(101, fake_status(&f[1]));
    ASSERT_STR_EQ("proto-user", T.last_user);
    ASSERT(fake_header(&f[1], "Sec-WebSocket-Protocol", v, sizeof v));
    ASSERT_STR_EQ("wsch", v);
    /* Only the bearer entry offered: it is echoed, or a browser would fail. */
    ASSERT_EQ(WSCH_OK, fake_request(&f[2], "/ws", "Sec-WebSocket-Protocol: bearer.only\r\n"));
    ASSERT_EQ(101, fake_status(&f[2]));
    ASSERT(fake_header(&f[2], "Sec-WebSocket-Protocol", v, sizeof v));
    ASSERT_STR_EQ("bearer.only", v);
    /* A refused token: 101, then 4001 Unauthorized, and no on_connect. */
    T.connects = 0;
    ASSERT_EQ(WSCH_OK, fake_request(&f[3], "/ws?token=bad", NULL));
    ASSERT_EQ(101, fake_status(&f[3]));
    ASSERT(fake_closed_with(&f[3], WSCH_CLOSE_UNAUTHORIZED, "Unauthorized"));
    ASSERT_EQ(0, T.connects);
    ASSERT_EQ(WSCH_OK, fake_frame(&f[3], WSCH_OP_CLOSE, "\x0f\xa1", 2));
    ASSERT(fake_released(&f[3]));
    ASSERT_EQ(0, (int)wsch_hub_user_connections(T.hub, "bad"));
    /* No token at all. */
    ASSERT_EQ(WSCH_OK, fake_request(&f[4], "/ws", NULL));
    ASSERT(fake_closed_with(&f[4], WSCH_CLOSE_UNAUTHORIZED, "Unauthorized"));
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_UNAUTHORIZED]);
    /* A refused connection gets no broadcasts. */
    ASSERT_EQ(WSCH_ERR_STATE, wsch_hub_send(T.hub, f[4].h, "t", NULL, 0));
    fake_gone(&f[4]);
    ASSERT(fake_released(&f[4]));
    ASSERT_EQ(0, T.disconnects);    /* never connected, never disconnected */
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    fake_gone(&f[2]);
    ASSERT_EQ(3, T.disconnects);
    ASSERT_EQ(0, (int)hub_teardown(f, 5));
    PASS();
}

static void http_401(wsch_hub_desc *d) {
    d->reject_with_http = 1;
    d->max_user_id_len = 8;
}

TEST auth_rejection_as_http_401(void) {
    fake f[3];
    char v[64];
    ASSERT_EQ(WSCH_OK, hub_setup(http_401));
    (void)fake_request(&f[0], "/ws?token=bad", NULL);
    ASSERT_EQ(401, fake_status(&f[0]));
    ASSERT(fake_header(&f[0], "WWW-Authenticate", v, sizeof v));
    ASSERT_STR_EQ("Bearer", v);
    ASSERT(fake_released(&f[0]));
    /* A user id longer than max_user_id_len is a refusal too. */
    (void)fake_request(&f[1], "/ws?token=123456789", NULL);
    ASSERT_EQ(401, fake_status(&f[1]));
    ASSERT(fake_released(&f[1]));
    ASSERT(fake_open(&f[2], "12345678"));
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_UNAUTHORIZED]);
    ASSERT_EQ(0, T.disconnects);
    fake_gone(&f[2]);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

TEST origin_hook(void) {
    fake f[2];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    (void)fake_request(&f[0], "/ws?token=a", "Origin: http://evil.local\r\n");
    ASSERT_EQ(403, fake_status(&f[0]));
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_ORIGIN]);
    ASSERT_EQ(WSCH_OK, fake_request(&f[1], "/ws?token=a", "Origin: http://good.local\r\n"));
    ASSERT_EQ(101, fake_status(&f[1]));
    ASSERT_EQ(2, T.origin_checks);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

TEST subscribe_authorization(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    T.deny_prefix = "user:";
    ASSERT(fake_open(&f[0], "mallory"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "user:42:notifications"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"forbidden\",\"message\":\"not allowed to subscribe\","
                  "\"request\":\"subscribe\",\"channel\":\"user:42:notifications\"}}",
                  fake_text(&f[0]));
    ASSERT_EQ(0, (int)wsch_hub_channel_size(T.hub, "user:42:notifications"));
    ASSERT_EQ(0, (int)stats().channels);
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "lobby"));
    ASSERT(strstr(fake_text(&f[0]), "subscribed") != NULL);
    /* The server itself may still subscribe anyone anywhere. */
    ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[0].h, "user:7:inbox"));
    ASSERT_EQ(1, (int)wsch_hub_channel_size(T.hub, "user:7:inbox"));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST plain_http_on_other_paths(void) {
    fake f[4];
    char v[64];
    const char *body;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    /* A browser's GET / is no upgrade: on_http answers it. */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[0]));
    (void)fake_feed_str(&f[0], "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(200, fake_status(&f[0]));
    ASSERT(fake_header(&f[0], "Content-Type", v, sizeof v));
    ASSERT_STR_EQ("text/html", v);
    ASSERT(fake_header(&f[0], "Content-Length", v, sizeof v));
    ASSERT_STR_EQ("11", v);
    body = strstr((const char *)f[0].out, "\r\n\r\n");
    ASSERT(body && f[0].out_len == (size_t)(body + 4 - (const char *)f[0].out) + 11);
    ASSERT_MEM_EQ("<h1>hi</h1>", body + 4, 11);
    ASSERT(fake_released(&f[0]));       /* the connection closes after the answer */
    /* Unknown path: 404 from the hook's default. */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[1]));
    (void)fake_feed_str(&f[1], "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(404, fake_status(&f[1]));
    /* HEAD: headers only. */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[2]));
    (void)fake_feed_str(&f[2], "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(200, fake_status(&f[2]));
    ASSERT_MEM_EQ("\r\n\r\n", f[2].out + f[2].out_len - 4, 4);
    /* on_http sees the token; extra headers pass through. */
    {
        fake g;
        ASSERT_EQ(WSCH_OK, fake_accept(&g));
        (void)fake_feed_str(&g, "GET /me?token=zed HTTP/1.1\r\nHost: x\r\n\r\n");
        ASSERT_EQ(200, fake_status(&g));
        ASSERT(fake_header(&g, "X-Token-Source", v, sizeof v));
        ASSERT_MEM_EQ("\r\n\r\nzed", g.out + g.out_len - 7, 7);
        ASSERT(fake_released(&g));
        ASSERT(fake_done(&g));
    }
    /* A plain GET on the WebSocket path is refused by the connection. */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[3]));
    (void)fake_feed_str(&f[3], "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT(fake_status(&f[3]) >= 400);
    ASSERT_EQ(4, (int)stats().http_responses);
    ASSERT_EQ(0, T.connects);
    ASSERT(fake_released(&f[1]));
    ASSERT(fake_released(&f[2]));
    ASSERT(fake_released(&f[3]));
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_HANDSHAKE]);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

static void short_idle(wsch_hub_desc *d) { d->idle_timeout_ms = 1000; }

TEST idle_timeout_with_clock(void) {
    fake f[2];
    ASSERT_EQ(WSCH_OK, hub_setup(short_idle));
    T.now = 5000;
    ASSERT(fake_open(&f[0], "a"));
    ASSERT(fake_open(&f[1], "b"));
    ASSERT_EQ(1000u, f[0].delay[WSCH_HUB_TIMER_IDLE]);
    T.now = 5600;
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"ping\"}"));
    (void)fake_text(&f[0]);
    T.now = 6000;
    /* f[0] spoke 400 ms ago: re-armed for the rest. f[1] is idle: closed. */
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_HUB_TIMER_IDLE));
    ASSERT_EQ(1, f[0].armed[WSCH_HUB_TIMER_IDLE]);
    ASSERT_EQ(600u, f[0].delay[WSCH_HUB_TIMER_IDLE]);
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(T.hub, f[0].h));
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_HUB_TIMER_IDLE));
    ASSERT(fake_closed_with(&f[1], 1000, "Idle timeout"));
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_IDLE]);
    T.now = 6600;
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_HUB_TIMER_IDLE));
    ASSERT(fake_closed_with(&f[0], 1000, "Idle timeout"));
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_IDLE]);
    /* A stray fire after that changes nothing. */
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_HUB_TIMER_IDLE));
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_IDLE]);
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

static void idle_no_clock(wsch_hub_desc *d) {
    d->idle_timeout_ms = 1000;
    d->effects.now_ms = NULL;
}

TEST idle_timeout_without_clock(void) {
    fake f[1];
    unsigned sets;
    ASSERT_EQ(WSCH_OK, hub_setup(idle_no_clock));
    ASSERT(fake_open(&f[0], "a"));
    sets = f[0].timer_sets;
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"ping\"}"));
    ASSERT_EQ(sets + 1, f[0].timer_sets);       /* every read re-arms it */
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_HUB_TIMER_IDLE));
    (void)fake_text(&f[0]);
    ASSERT(fake_closed_with(&f[0], 1000, "Idle timeout"));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

static void pinging(wsch_hub_desc *d) {
    d->idle_timeout_ms = 1000;
    d->ping_interval_ms = 400;
}

/* With ping_interval_ms a silent peer is pinged once per silence: one that
   answers (as browsers do by themselves) stays past the idle timeout, one
   that does not is dropped at it. */
TEST silent_peers_are_pinged(void) {
    fake f[2];
    int op, i;
    char buf[64];
    size_t len;
    ASSERT_EQ(WSCH_OK, hub_setup(pinging));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT(fake_open(&f[1], "b"));
    for (i = 0; i < 2; i++) {
        (void)fake_text(&f[i]);
        ASSERT_EQ_FMT(400u, f[i].delay[WSCH_HUB_TIMER_IDLE], "%u");   /* armed for the ping first */
    }
    for (i = 1; i <= 6; i++) {
        T.now += 400;
        ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_HUB_TIMER_IDLE));
        if (wsch_hub_peer_state(T.hub, f[1].h) == WSCH_STATE_OPEN)
            ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_HUB_TIMER_IDLE));
        ASSERT(fake_next(&f[0], &op, buf, sizeof buf, &len));
        ASSERT_EQ(WSCH_OP_PING, op);                    /* a ping at each 400 ms of silence */
        ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_PONG, "", 0));   /* a's browser answers */
        if (i == 1) {
            ASSERT(fake_next(&f[1], &op, buf, sizeof buf, &len));
            ASSERT_EQ(WSCH_OP_PING, op);
            ASSERT_EQ_FMT(600u, f[1].delay[WSCH_HUB_TIMER_IDLE], "%u");    /* the rest of the idle timeout */
        }
        if (i == 2) ASSERT_EQ(0, fake_next(&f[1], &op, buf, sizeof buf, &len));   /* pinged once, not twice */
    }
    /* a answered every time: open after 2.4 s; b never did: dropped at 1 s */
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(T.hub, f[0].h));
    ASSERT(fake_closed_with(&f[1], 1000, "Idle timeout"));
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_IDLE]);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

static void never_idle(wsch_hub_desc *d) { d->idle_timeout_ms = WSCH_HUB_NO_TIMEOUT; }

TEST idle_timeout_disabled(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(never_idle));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT_EQ(0, f[0].armed[WSCH_HUB_TIMER_IDLE]);
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_HUB_TIMER_IDLE));
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(T.hub, f[0].h));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST handshake_timeout(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[0]));
    ASSERT_EQ(1, f[0].armed[WSCH_TIMER_HANDSHAKE]);
    ASSERT_EQ(WSCH_OK, fake_feed(&f[0], "GET /ws HT", 10));
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[0].h, WSCH_TIMER_HANDSHAKE));
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_HANDSHAKE]);
    ASSERT_EQ(0, T.disconnects);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST graceful_shutdown(void) {
    fake f[4];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "c"));
        (void)fake_text(&f[i]);
    }
    ASSERT_EQ(WSCH_OK, fake_accept(&f[3]));     /* still in its handshake */
    wsch_hub_shutdown(T.hub);
    for (i = 0; i < 3; i++) ASSERT(fake_closed_with(&f[i], WSCH_CLOSE_GOING_AWAY, "Server shutting down"));
    ASSERT(fake_released(&f[3]));        /* no handshake to finish: closed at once */
    ASSERT_EQ(3, (int)stats().peers);
    ASSERT_EQ(0, (int)stats().subscriptions);
    {
        fake extra;
        wsch_hub_peer h;
        ASSERT_EQ(WSCH_ERR_STATE, wsch_hub_accept(T.hub, NULL, &extra, &h));
    }
    /* Peers answer; the hub closes each transport and releases the peer. */
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(0, f[i].closes);
        ASSERT_EQ(WSCH_OK, fake_frame(&f[i], WSCH_OP_CLOSE, "\x03\xe9", 2));
        ASSERT(fake_released(&f[i]));
        ASSERT(f[i].disconnect_seq < f[i].close_seq);
    }
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(3, T.disconnects);
    ASSERT_EQ(WSCH_CLOSE_GOING_AWAY, T.last_code);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

/* A client the hub closes during its handshake (wsch_hub_peer_close, shutdown)
   gets close() once and nothing more: no answer to request bytes the
   caller still feeds, no second close() from the handshake timer. */
TEST handshaking_client_closed_by_hub_stays_quiet(void) {
    fake f[2];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[1]));
    ASSERT_EQ(WSCH_OK, wsch_hub_peer_close(T.hub, f[0].h, 1000, "bye", WSCH_CSTR));
    ASSERT_EQ(1, f[0].closes);
    wsch_hub_shutdown(T.hub);
    for (i = 0; i < 2; i++) {
        ASSERT_EQ(1, f[i].closes);
        ASSERT(fake_upgrade(&f[i], "/ws?token=u", NULL) != WSCH_OK);
        (void)wsch_hub_timer_fired(T.hub, f[i].h, WSCH_TIMER_HANDSHAKE);
        ASSERT_EQ(0, (int)f[i].out_len);
        ASSERT(fake_released(&f[i]));
    }
    ASSERT_EQ(0, T.connects);
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_HANDSHAKE]);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

/* The demo's publish, from inside on_message; also partial writes. */
TEST publish_from_handler_and_partial_writes(void) {
    fake f[3];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "room"));
        (void)fake_text(&f[i]);
    }
    f[2].take = 3;      /* a socket that takes 3 bytes per call */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"publish\",\"payload\":{\"channel\":\"room\",\"data\":\"hey\"}}"));
    for (i = 0; i < 2; i++)
        ASSERT_STR_EQ("{\"type\":\"message\",\"payload\":{\"channel\":\"room\",\"data\":\"hey\"}}", fake_text(&f[i]));
    while (wsch_hub_peer_queued_bytes(T.hub, f[2].h)) ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[2].h));
    ASSERT_STR_EQ("{\"type\":\"message\",\"payload\":{\"channel\":\"room\",\"data\":\"hey\"}}", fake_text(&f[2]));
    for (i = 0; i < 3; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* A caller whose close() also reports the transport closed (code that
   handles every end in one place might): from inside close() that report
   is a no-op returning WSCH_OK, on every path -- no second close(), no
   second on_disconnect. */
static void sync_close(void *user) {
    fake *f = (fake *)user;
    f_close(f);
    f->reported = 1;
    f->report_result = wsch_hub_transport_closed(f->hub, f->h);
}

static wsch_effects sync_effects;

/* Effects whose close() reports at once (borrowed by the hub: static). */
static const wsch_effects *sync_close_effects(void) {
    sync_effects = fake_effects();
    sync_effects.close = sync_close;
    return &sync_effects;
}

TEST close_callback_reports_synchronously(void) {
    fake f[3];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(tight_queue));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_open_with(&f[i], sync_close_effects(), "s"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "c"));
    }
    /* A peer close: the hub closes the transport from inside feed. */
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(f[0].reported);
    ASSERT_EQ(WSCH_OK, f[0].report_result);
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(1, f[0].disconnects);
    /* A slow consumer whose close timer fires after the broadcast loop's drops. */
    f[1].take = 0;
    for (i = 0; i < 20; i++) (void)wsch_hub_broadcast(T.hub, "c", "t", "\"0123456789012345678901234567890123456789\"", WSCH_CSTR, NULL);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_TIMER_CLOSE));
    ASSERT(f[1].reported);
    ASSERT_EQ(WSCH_OK, f[1].report_result);
    ASSERT(fake_released(&f[1]));
    ASSERT_EQ(1, f[1].disconnects);
    /* quit closes from inside its own on_message. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[2], "{\"type\":\"quit\"}"));
    ASSERT_EQ(WSCH_OK, fake_frame(&f[2], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(f[2].reported);
    ASSERT_EQ(WSCH_OK, f[2].report_result);
    ASSERT(fake_released(&f[2]));
    ASSERT_EQ(3, T.disconnects);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* A conn can end inside a delivery's send: send() took part of the frame
   and the queue could not grow. The walk over the subscribers (or the
   user's connections) goes on over the others, unchanged; the cut client
   is finished after it (1006, counted as out of memory): on_disconnect,
   then close() -- also when its close() reports the transport closed. */
TEST conn_cut_inside_a_delivery(void) {
    fake f[7];
    size_t delivered = 9, i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_open_with(&f[i], i == 0 ? sync_close_effects() : NULL, "chan"));
        ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[i].h, "c"));
    }
    ASSERT(fake_open_with(&f[3], NULL, "solo"));
    ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[3].h, "s"));
    for (i = 4; i < 7; i++) ASSERT(fake_open_with(&f[i], i == 6 ? sync_close_effects() : NULL, "u"));
    for (i = 0; i < 7; i++) (void)fake_pending(&f[i]);

    /* The first subscriber is cut: the other two still get the message. */
    f[0].take = 1;
    T.mem.fail_at = T.mem.allocs + 2;      /* the frame is allocated, the queue chunk is not */
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "t", "1", 1, &delivered));
    T.mem.fail_at = 0;
    ASSERT_EQ(2, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":1}", fake_text(&f[1]));
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":1}", fake_text(&f[2]));
    ASSERT(f[0].reported);
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(1, T.disconnects);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, T.last_code);
    ASSERT(f[2].send_seq < f[0].disconnect_seq);   /* after the walk */
    ASSERT(f[0].disconnect_seq < f[0].close_seq);
    ASSERT_EQ(2, (int)wsch_hub_channel_size(T.hub, "c"));

    /* The only subscriber is cut: the channel goes, after the walk. */
    f[3].take = 1;
    T.mem.fail_at = T.mem.allocs + 2;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "s", "t", "2", 1, &delivered));
    T.mem.fail_at = 0;
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(0, (int)wsch_hub_channel_size(T.hub, "s"));
    ASSERT_EQ(2, T.disconnects);
    ASSERT(fake_released(&f[3]));
    ASSERT(f[3].disconnect_seq < f[3].close_seq);

    /* A user's first connection (the newest, f[6]) is cut and reports its
       transport closed inside close(): the other two still get it. */
    f[6].take = 1;
    T.mem.fail_at = T.mem.allocs + 2;
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "u", "t", "3", 1, &delivered));
    T.mem.fail_at = 0;
    ASSERT_EQ(2, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":3}", fake_text(&f[4]));
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":3}", fake_text(&f[5]));
    ASSERT(f[6].reported);
    ASSERT(fake_released(&f[6]));
    ASSERT(f[4].send_seq < f[6].disconnect_seq);
    ASSERT(f[6].disconnect_seq < f[6].close_seq);
    ASSERT_EQ(2, (int)wsch_hub_user_connections(T.hub, "u"));
    ASSERT_EQ(3, T.disconnects);
    ASSERT_EQ(3, (int)stats().drops[WSCH_HUB_DROP_NOMEM]);
    for (i = 0; i < 7; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 7));
    PASS();
}

/* ---- the close rule: one close() per peer, on every path, the last
   callback about it; the handle is stale as soon as it has run ---------- */

/* The peer closes cleanly: the hub answers, runs on_disconnect with the
   peer's code, then close(); the handle is stale when feed returns, and the
   caller (who closed the socket in close()) has nothing to report. */
TEST close_once_when_the_peer_closes(void) {
    fake f[2];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT(fake_open(&f[1], "b"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "c"));
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_CLOSE, "\x0f\xa0" "done", 6));     /* 4000 "done" */
    ASSERT(fake_closed_with(&f[0], 4000, NULL));     /* the answer echoes the code */
    ASSERT_EQ(1, f[0].disconnects);
    ASSERT_EQ(4000, f[0].disconnect_code);
    ASSERT(fake_released(&f[0]));
    ASSERT(f[0].disconnect_seq < f[0].close_seq);
    ASSERT_EQ(0, (int)wsch_hub_channel_size(T.hub, "c"));
    ASSERT_EQ(1, (int)stats().peers);
    ASSERT_EQ(1, (int)stats().open);
    ASSERT_EQ(0, f[1].closes);
    fake_gone(&f[1]);
    ASSERT(fake_released(&f[1]));
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

/* wsch_hub_peer_close: the close frame goes out and the peer stays CLOSING
   (no close() yet) until it answers, its close timer fires, or its socket
   ends; each way, on_disconnect then close(), once. */
TEST close_once_when_the_hub_closes(void) {
    fake f[3];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < 3; i++) ASSERT(fake_open(&f[i], "u"));
    for (i = 0; i < 3; i++)
        ASSERT_EQ(WSCH_OK, wsch_hub_peer_close(T.hub, f[i].h, 4000, "go away", i == 0 ? WSCH_CSTR : 7));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_closed_with(&f[i], 4000, "go away"));
        ASSERT_EQ(WSCH_STATE_CLOSING, wsch_hub_peer_state(T.hub, f[i].h));
        ASSERT_EQ(1, f[i].armed[WSCH_TIMER_CLOSE]);
        ASSERT_EQ(0, f[i].closes);
        ASSERT_EQ(0, f[i].disconnects);
    }
    /* Closing again sends nothing more. */
    ASSERT_EQ(WSCH_ERR_CLOSED, wsch_hub_peer_close(T.hub, f[0].h, 1000, NULL, 0));
    ASSERT_EQ(0, (int)fake_pending(&f[0]));
    /* f[0] answers; f[1] never does; f[2]'s socket ends. */
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_CLOSE, "\x0f\xa0", 2));
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(4000, f[0].disconnect_code);
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_TIMER_CLOSE));
    ASSERT(fake_released(&f[1]));
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, f[1].disconnect_code);
    fake_gone(&f[2]);
    ASSERT(fake_released(&f[2]));
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, f[2].disconnect_code);
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(1, f[i].disconnects);
        ASSERT(f[i].disconnect_seq < f[i].close_seq);
    }
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* Refused peers never connect, so never disconnect; close() comes once:
   after the 4001 close handshake (answered, or cut by the close timer), or
   right after an HTTP refusal (403 from the origin hook, 401 with
   reject_with_http). */
TEST close_once_for_refused_peers(void) {
    fake f[3];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT_EQ(WSCH_OK, fake_request(&f[0], "/ws?token=bad", NULL));
    ASSERT_EQ(101, fake_status(&f[0]));
    ASSERT(fake_closed_with(&f[0], WSCH_CLOSE_UNAUTHORIZED, "Unauthorized"));
    ASSERT_EQ(0, f[0].closes);
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_CLOSE, "\x0f\xa1", 2));
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_request(&f[1], "/ws", NULL));
    ASSERT(fake_closed_with(&f[1], WSCH_CLOSE_UNAUTHORIZED, "Unauthorized"));
    ASSERT_EQ(0, f[1].closes);
    ASSERT_EQ(1, f[1].armed[WSCH_TIMER_CLOSE]);
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_TIMER_CLOSE));
    ASSERT(fake_released(&f[1]));
    (void)fake_request(&f[2], "/ws?token=a", "Origin: http://evil.local\r\n");
    ASSERT_EQ(403, fake_status(&f[2]));
    ASSERT(fake_released(&f[2]));
    ASSERT_EQ(0, T.connects + T.disconnects);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));

    ASSERT_EQ(WSCH_OK, hub_setup(http_401));
    (void)fake_request(&f[0], "/ws?token=bad", NULL);
    ASSERT_EQ(401, fake_status(&f[0]));
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(0, T.connects + T.disconnects);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

/* Requests that never become a WebSocket: garbage, a broken upgrade, an
   upgrade on another path (answered as plain HTTP), on_http's own answer,
   a head too large, a peer that hangs up mid-request. close() once each,
   no on_connect, no on_disconnect. */
TEST close_once_for_bad_handshakes_and_http_answers(void) {
    fake f[6];
    char *big;
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[0]));
    ASSERT(fake_feed_str(&f[0], "\x16\x03\x01 not http at all\r\n\r\n") != WSCH_OK);
    ASSERT(fake_status(&f[0]) >= 400);
    ASSERT_EQ(WSCH_OK, fake_accept(&f[1]));   /* no Sec-WebSocket-Key */
    ASSERT(fake_feed_str(&f[1], "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                "Sec-WebSocket-Version: 13\r\n\r\n") != WSCH_OK);
    ASSERT(fake_status(&f[1]) >= 400);
    (void)fake_request(&f[2], "/elsewhere?token=a", NULL);
    ASSERT_EQ(404, fake_status(&f[2]));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[3]));
    (void)fake_feed_str(&f[3], "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(200, fake_status(&f[3]));
    big = (char *)malloc(20000);
    ASSERT(big != NULL);
    memset(big, 'a', 20000);
    memcpy(big, "GET /ws HTTP/1.1\r\nX-Big: ", 25);
    ASSERT_EQ(WSCH_OK, fake_accept(&f[4]));
    ASSERT(fake_feed(&f[4], big, 20000) != WSCH_OK);
    free(big);
    ASSERT(fake_status(&f[4]) >= 400);
    ASSERT_EQ(WSCH_OK, fake_accept(&f[5]));
    ASSERT_EQ(WSCH_OK, fake_feed_str(&f[5], "GET /ws HTTP/1.1\r\nHo"));
    ASSERT_EQ(0, f[5].closes);
    fake_gone(&f[5]);
    for (i = 0; i < 6; i++) ASSERT(fake_released(&f[i]));
    ASSERT_EQ(0, T.connects + T.disconnects);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 6));
    PASS();
}

/* The idle timeout closes with 1000 "Idle timeout"; close() follows the
   close handshake (answered, or cut by the close timer). */
TEST close_once_on_idle_timeout(void) {
    fake f[2];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(short_idle));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT(fake_open(&f[1], "b"));
    T.now += 1000;
    for (i = 0; i < 2; i++) {
        ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[i].h, WSCH_HUB_TIMER_IDLE));
        ASSERT(fake_closed_with(&f[i], 1000, "Idle timeout"));
        ASSERT_EQ(0, f[i].closes);
    }
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(1000, f[0].disconnect_code);
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_TIMER_CLOSE));
    ASSERT(fake_released(&f[1]));
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, f[1].disconnect_code);
    for (i = 0; i < 2; i++) ASSERT(f[i].disconnect_seq < f[i].close_seq);
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_IDLE]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

/* Slow consumers are found inside a broadcast's walk over the subscribers
   and dropped when it ends: the others are served, the slow ones get 4008
   and no on_disconnect or close() yet. Later on_disconnect runs (here it
   broadcasts a farewell to the same channel, as it may), and only after it
   close(). */
TEST close_once_for_slow_consumers_dropped_in_a_walk(void) {
    fake f[4];
    size_t i, delivered;
    char payload[601];
    ASSERT_EQ(WSCH_OK, hub_setup(tight_queue));
    for (i = 0; i < 4; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "feed"));
        (void)fake_text(&f[i]);
    }
    T.farewell_channel = "feed";
    f[1].take = 0;
    f[2].take = 0;
    memset(payload, 'p', sizeof payload - 1);
    payload[0] = '"';
    payload[sizeof payload - 2] = '"';
    payload[sizeof payload - 1] = '\0';
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "t", payload, WSCH_CSTR, &delivered));
    ASSERT_EQ(4, (int)delivered);       /* about 630 bytes wait for each slow one */
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "t", payload, WSCH_CSTR, &delivered));
    ASSERT_EQ(2, (int)delivered);       /* twice that is past 1000: both dropped */
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    for (i = 1; i < 3; i++) {
        ASSERT_EQ(WSCH_STATE_CLOSING, wsch_hub_peer_state(T.hub, f[i].h));
        ASSERT_EQ(0, f[i].disconnects);
        ASSERT_EQ(0, f[i].closes);
        ASSERT_EQ(WSCH_WANT_READ | WSCH_WANT_WRITE, wsch_hub_peer_want(T.hub, f[i].h));
    }
    ASSERT_EQ(2, (int)wsch_hub_channel_size(T.hub, "feed"));
    /* f[1] wakes up: its backlog was dropped with it, so the 4008 is the
       first thing it reads; it answers. */
    f[1].take = FAKE_ALL;
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[1].h));
    ASSERT_EQ('\0', fake_text(&f[1])[0]);
    ASSERT(fake_closed_with(&f[1], WSCH_HUB_CLOSE_SLOW_CONSUMER, "Slow consumer"));
    ASSERT_EQ(WSCH_OK, fake_frame(&f[1], WSCH_OP_CLOSE, "\x0f\xa8", 2));
    ASSERT(fake_released(&f[1]));
    ASSERT_EQ(WSCH_HUB_CLOSE_SLOW_CONSUMER, f[1].disconnect_code);
    /* on_disconnect, its farewell to f[3], then close(). */
    ASSERT(f[1].disconnect_seq < f[3].send_seq && f[3].send_seq < f[1].close_seq);
    /* f[2] never wakes: its close timer ends it. */
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[2].h, WSCH_TIMER_CLOSE));
    ASSERT(fake_released(&f[2]));
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, f[2].disconnect_code);
    ASSERT(f[2].disconnect_seq < f[3].send_seq && f[3].send_seq < f[2].close_seq);
    for (i = 0; i < 4; i += 3) {
        size_t n = 0;
        while (strcmp(fake_text(&f[i]), "{\"type\":\"left\"}") != 0 && n < 10) n++;
        ASSERT_EQ(2, (int)n);               /* both broadcasts came first */
        ASSERT_STR_EQ("{\"type\":\"left\"}", fake_text(&f[i]));   /* once per dropped peer */
    }
    ASSERT_EQ(2, T.nresults);
    ASSERT_EQ(WSCH_OK, T.results[0]);
    ASSERT_EQ(WSCH_OK, T.results[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

/* send() reports WSCH_SEND_ERROR for one subscriber in the middle of a
   broadcast to many: the walk goes on (every other subscriber gets the
   message), and after it the broken peer gets on_disconnect with 1006,
   then close(). The same for send_to_user's walk over a user's connections. */
TEST send_error_during_a_broadcast_to_many(void) {
    enum { N = 6 };
    fake f[N];
    size_t i, delivered = 0;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < N; i++) {
        ASSERT(fake_open(&f[i], "u"));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "c"));
        (void)fake_text(&f[i]);
    }
    f[2].broken = 1;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "t", "1", 1, &delivered));
    ASSERT_EQ(N - 1, (int)delivered);
    for (i = 0; i < N; i++) {
        if (i == 2) continue;
        ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":1}", fake_text(&f[i]));
    }
    ASSERT_EQ(1, f[2].disconnects);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, f[2].disconnect_code);
    ASSERT(f[N - 1].send_seq < f[2].disconnect_seq);   /* after the walk, not inside it */
    ASSERT(f[2].disconnect_seq < f[2].close_seq);
    ASSERT(fake_released(&f[2]));
    ASSERT_EQ(N - 1, (int)wsch_hub_channel_size(T.hub, "c"));
    ASSERT_EQ(N - 1, (int)stats().open);
    ASSERT_EQ(0, (int)(stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER] + stats().drops[WSCH_HUB_DROP_NOMEM]));
    /* A user's connections are walked newest first: break the second one. */
    f[4].broken = 1;
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "u", "t", "2", 1, &delivered));
    ASSERT_EQ(N - 2, (int)delivered);
    for (i = 0; i < N; i++) {
        if (i == 2 || i == 4) continue;
        ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":2}", fake_text(&f[i]));
    }
    ASSERT(f[0].send_seq < f[4].disconnect_seq);       /* f[0], the oldest, is walked last */
    ASSERT(f[4].disconnect_seq < f[4].close_seq);
    ASSERT(fake_released(&f[4]));
    ASSERT_EQ(N - 2, (int)wsch_hub_user_connections(T.hub, "u"));
    ASSERT_EQ(2, T.disconnects);
    for (i = 0; i < N; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, N));
    PASS();
}

/* A send error anywhere else ends the peer the same way, at once: the 101
   answer (no on_connect), a send to one peer, a pong written from inside
   feed, a queue flushed by writable. */
TEST send_error_on_every_other_path(void) {
    fake f[4];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[0]));
    f[0].broken = 1;
    (void)fake_upgrade(&f[0], "/ws?token=a", NULL);
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(0, T.connects);
    ASSERT(fake_open(&f[1], "b"));
    f[1].broken = 1;
    ASSERT(wsch_hub_send(T.hub, f[1].h, "t", "1", 1) != WSCH_OK);
    ASSERT(fake_released(&f[1]));
    ASSERT(fake_open(&f[2], "c"));
    f[2].broken = 1;
    (void)fake_say(&f[2], "{\"type\":\"ping\"}");
    ASSERT(fake_released(&f[2]));
    ASSERT(fake_open(&f[3], "d"));
    f[3].take = 0;
    ASSERT_EQ(WSCH_OK, wsch_hub_send(T.hub, f[3].h, "t", "1", 1));     /* queued */
    ASSERT_EQ(0, f[3].closes);
    f[3].broken = 1;
    (void)wsch_hub_writable(T.hub, f[3].h);
    ASSERT(fake_released(&f[3]));
    for (i = 1; i < 4; i++) {
        ASSERT_EQ(1, f[i].disconnects);
        ASSERT_EQ(WSCH_CLOSE_ABNORMAL, f[i].disconnect_code);
        ASSERT(f[i].disconnect_seq < f[i].close_seq);
    }
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

/* The caller sees EOF first and reports it: an open peer gets on_disconnect
   1006, then close(); a handshaking one just close(); a closing one (the
   hub's close frame unanswered) on_disconnect 1006, then close(). The
   handle is stale when the report returns; a second report is refused. */
TEST close_once_on_eof_report(void) {
    fake f[3];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[1]));
    ASSERT(fake_open(&f[2], "c"));
    ASSERT_EQ(WSCH_OK, wsch_hub_peer_close(T.hub, f[2].h, 1000, NULL, 0));
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(0, f[i].closes);
        ASSERT_EQ(WSCH_OK, wsch_hub_transport_closed(T.hub, f[i].h));
        ASSERT(fake_released(&f[i]));
        ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_transport_closed(T.hub, f[i].h));
        ASSERT_EQ(1, f[i].closes);
    }
    ASSERT_EQ(1, f[0].disconnects);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, f[0].disconnect_code);
    ASSERT(f[0].disconnect_seq < f[0].close_seq);
    ASSERT_EQ(0, f[1].disconnects);
    ASSERT_EQ(1, f[2].disconnects);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, f[2].disconnect_code);
    ASSERT(f[2].disconnect_seq < f[2].close_seq);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_HANDSHAKE]);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* wsch_hub_shutdown: a handshaking peer is closed at once; open ones get
   1001 and close() after their close handshake (answered, cut by the close
   timer, or ended by EOF); a peer accept refused gets no close() at all. */
TEST close_once_on_shutdown(void) {
    fake f[5];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < 3; i++) ASSERT(fake_open(&f[i], "u"));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[3]));
    f[2].take = 0;
    wsch_hub_shutdown(T.hub);
    ASSERT(fake_released(&f[3]));
    ASSERT_EQ(0, f[3].disconnects);
    ASSERT_EQ(WSCH_ERR_STATE, fake_accept(&f[4]));
    ASSERT_EQ(0, f[4].accepted);
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(0, f[i].closes);
        ASSERT_EQ(0, f[i].disconnects);
    }
    ASSERT(fake_closed_with(&f[0], WSCH_CLOSE_GOING_AWAY, "Server shutting down"));
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_CLOSE, "\x03\xe9", 2));
    ASSERT(fake_released(&f[0]));
    fake_gone(&f[1]);
    ASSERT(fake_released(&f[1]));
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[2].h, WSCH_TIMER_CLOSE));
    ASSERT(fake_released(&f[2]));
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(1, f[i].disconnects);
        ASSERT(f[i].disconnect_seq < f[i].close_seq);
    }
    ASSERT_EQ(WSCH_CLOSE_GOING_AWAY, f[0].disconnect_code);
    wsch_hub_shutdown(T.hub);       /* again: nothing left to close */
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 5));
    PASS();
}

/* ---- readiness, re-entrancy, string lengths -------------------------------- */

/* Every payload and reason length may be WSCH_CSTR: "NUL-terminated,
   measure it" -- the same bytes as the measured length. */
TEST payload_lengths_may_be_cstr(void) {
    fake f[1];
    size_t delivered = 0;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "ann"));
    ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[0].h, "c"));
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "b", "{\"k\":[1]}", WSCH_CSTR, &delivered));
    ASSERT_EQ(1, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"b\",\"payload\":{\"k\":[1]}}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "ann", "u", "\"x\"", WSCH_CSTR, &delivered));
    ASSERT_EQ(1, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"u\",\"payload\":\"x\"}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, wsch_hub_send(T.hub, f[0].h, "s", "null", WSCH_CSTR));
    ASSERT_STR_EQ("{\"type\":\"s\",\"payload\":null}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_ERR_JSON, wsch_hub_send(T.hub, f[0].h, "s", "{", WSCH_CSTR));   /* measured, then checked */
    ASSERT_EQ(WSCH_OK, wsch_hub_peer_close(T.hub, f[0].h, 1000, "so long", WSCH_CSTR));
    ASSERT(fake_closed_with(&f[0], 1000, "so long"));
    fake_gone(&f[0]);
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

/* wsch_hub_peer_want: READ while the peer can be read, WRITE added exactly
   while output waits for the socket, 0 once close() has run. */
TEST peer_want_follows_the_transport(void) {
    fake f[2];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[0]));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_hub_peer_want(T.hub, f[0].h));     /* waiting for the request */
    f[0].take = 0;
    ASSERT_EQ(WSCH_OK, fake_upgrade(&f[0], "/ws?token=a", NULL));
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(T.hub, f[0].h));
    ASSERT_EQ((unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE), wsch_hub_peer_want(T.hub, f[0].h)); /* the 101 waits */
    f[0].take = FAKE_ALL;
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[0].h));
    ASSERT_EQ(101, fake_status(&f[0]));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_hub_peer_want(T.hub, f[0].h));
    f[0].take = 0;
    ASSERT_EQ(WSCH_OK, wsch_hub_send(T.hub, f[0].h, "t", "\"0123456789\"", 12));
    ASSERT_EQ((unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE), wsch_hub_peer_want(T.hub, f[0].h));
    f[0].take = 3;                      /* a partial write leaves some */
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[0].h));
    ASSERT_EQ((unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE), wsch_hub_peer_want(T.hub, f[0].h));
    f[0].take = FAKE_ALL;
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[0].h));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_hub_peer_want(T.hub, f[0].h));
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":\"0123456789\"}", fake_text(&f[0]));
    /* Closing: the close frame is out, the peer's answer is awaited. */
    ASSERT_EQ(WSCH_OK, wsch_hub_peer_close(T.hub, f[0].h, 1000, NULL, 0));
    ASSERT_EQ((unsigned)WSCH_WANT_READ, wsch_hub_peer_want(T.hub, f[0].h));
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(fake_released(&f[0]));
    ASSERT_EQ(0u, wsch_hub_peer_want(T.hub, f[0].h));
    /* A plain HTTP answer to a blocked socket: written first, then close(). */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[1]));
    f[1].take = 0;
    (void)fake_feed_str(&f[1], "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(0, f[1].closes);
    ASSERT(wsch_hub_peer_want(T.hub, f[1].h) & WSCH_WANT_WRITE);
    f[1].take = FAKE_ALL;
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[1].h));
    ASSERT_EQ(200, fake_status(&f[1]));
    ASSERT(fake_released(&f[1]));
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

/* What the hub section allows from on_connect (subscribe, send),
   on_message (broadcast, send_to_user, send, close -- of the sender or of
   another peer) and on_disconnect (broadcast) works, for the peer being
   served too. */
TEST reentrant_calls_from_hooks(void) {
    fake f[4];
    int k;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    T.join_on_connect = "lobby";
    T.welcome_on_connect = 1;
    ASSERT(fake_open(&f[0], "ann"));
    ASSERT(fake_open(&f[1], "bob"));
    ASSERT(fake_open(&f[2], "bob"));
    ASSERT(fake_open(&f[3], "cat"));
    ASSERT_EQ(8, T.nresults);
    for (k = 0; k < 8; k++) ASSERT_EQ(WSCH_OK, T.results[k]);
    for (k = 0; k < 4; k++) {
        ASSERT_STR_EQ("{\"type\":\"welcome\"}", fake_text(&f[k]));
        ASSERT_EQ(1, wsch_hub_is_subscribed(T.hub, f[k].h, "lobby"));
    }
    ASSERT_EQ(4, (int)wsch_hub_channel_size(T.hub, "lobby"));
    T.join_on_connect = NULL;
    T.welcome_on_connect = 0;
    T.nresults = 0;
    /* Broadcast from on_message: every subscriber, the sender included. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"publish\",\"payload\":{\"channel\":\"lobby\"}}"));
    for (k = 0; k < 4; k++)
        ASSERT_STR_EQ("{\"type\":\"message\",\"payload\":{\"channel\":\"lobby\"}}", fake_text(&f[k]));
    /* send_to_user from on_message: both of bob's connections, nobody else. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"tell\",\"payload\":\"bob\"}"));
    ASSERT_STR_EQ("{\"type\":\"told\",\"payload\":\"bob\"}", fake_text(&f[1]));
    ASSERT_STR_EQ("{\"type\":\"told\",\"payload\":\"bob\"}", fake_text(&f[2]));
    ASSERT_EQ(0, (int)(fake_pending(&f[0]) + fake_pending(&f[3])));
    /* send to the sender itself. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[3], "{\"type\":\"echo\",\"payload\":[1,2]}"));
    ASSERT_STR_EQ("{\"type\":\"echo\",\"payload\":[1,2]}", fake_text(&f[3]));
    /* Close another peer from on_message. */
    T.kick = f[2].h;
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"kick\"}"));
    ASSERT(fake_closed_with(&f[2], 4000, "kicked"));
    ASSERT_EQ(WSCH_STATE_CLOSING, wsch_hub_peer_state(T.hub, f[2].h));
    /* Send, close itself, try to send again: the last one is refused. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[3], "{\"type\":\"last\",\"payload\":\"bye\"}"));
    ASSERT_STR_EQ("{\"type\":\"last\",\"payload\":\"bye\"}", fake_text(&f[3]));
    ASSERT(fake_closed_with(&f[3], 1000, "last words"));
    ASSERT_EQ(0, (int)fake_pending(&f[3]));
    ASSERT_EQ(6, T.nresults);
    ASSERT_EQ(WSCH_OK, T.results[0]);   /* tell */
    ASSERT_EQ(WSCH_OK, T.results[1]);   /* echo */
    ASSERT_EQ(WSCH_OK, T.results[2]);   /* kick */
    ASSERT_EQ(WSCH_OK, T.results[3]);   /* last: send */
    ASSERT_EQ(WSCH_OK, T.results[4]);   /* last: close */
    ASSERT_EQ(WSCH_ERR_STATE, T.results[5]); /* last: send after close */
    /* Broadcast from on_disconnect: those still open get the farewell. */
    T.farewell_channel = "lobby";
    T.nresults = 0;
    ASSERT_EQ(WSCH_OK, fake_frame(&f[2], WSCH_OP_CLOSE, "\x0f\xa0", 2));
    ASSERT(fake_released(&f[2]));
    ASSERT_STR_EQ("{\"type\":\"left\"}", fake_text(&f[0]));
    ASSERT_STR_EQ("{\"type\":\"left\"}", fake_text(&f[1]));
    ASSERT(f[1].send_seq < f[2].close_seq);     /* sent inside on_disconnect, before close() */
    fake_gone(&f[3]);
    ASSERT(fake_released(&f[3]));
    ASSERT_STR_EQ("{\"type\":\"left\"}", fake_text(&f[0]));
    ASSERT_STR_EQ("{\"type\":\"left\"}", fake_text(&f[1]));
    fake_gone(&f[0]);
    ASSERT_STR_EQ("{\"type\":\"left\"}", fake_text(&f[1]));
    fake_gone(&f[1]);
    ASSERT_EQ(4, T.nresults);
    for (k = 0; k < 4; k++) ASSERT_EQ(WSCH_OK, T.results[k]);
    ASSERT_EQ(0, (int)stats().channels);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

/* Heap bytes per idle connection, counted through the allocator. */
TEST heap_per_idle_connection(void) {
    enum { N = 1000 };
    static fake f[N];
    size_t base, i, anon, named, subscribed;
    char user[16];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    base = T.mem.live_bytes;
    for (i = 0; i < N; i++) ASSERT(fake_request(&f[i], "/ws?token=same", NULL) == WSCH_OK && fake_status(&f[i]) == 101);
    anon = (T.mem.live_bytes - base) / N;
    for (i = 0; i < N; i++) {
        fake_gone(&f[i]);
        ASSERT(fake_done(&f[i]));
    }
    base = T.mem.live_bytes;
    for (i = 0; i < N; i++) {
        snprintf(user, sizeof user, "user%u", (unsigned)i);
        ASSERT(fake_open(&f[i], user));
    }
    named = (T.mem.live_bytes - base) / N;
    for (i = 0; i < N; i++) ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[i].h, "all"));
    subscribed = (T.mem.live_bytes - base) / N;
    printf("heap per idle connection: %u bytes (one shared user id), %u (distinct user ids), %u (and one channel)\n",
           (unsigned)anon, (unsigned)named, (unsigned)subscribed);
    ASSERT(anon <= 512);
    ASSERT(named <= 512);
    ASSERT(subscribed <= 512);
    for (i = 0; i < N; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, N));
    PASS();
}

/* Every allocation in a whole scenario fails in turn: every call returns
   OK or an error, and destroy leaves nothing behind. */
static int run_scenario(long fail_at, int *hit) {
    fake f[4];
    size_t i;
    int r;
    if (hub_setup(NULL) != WSCH_OK) {
        *hit = 1;
        return T.mem.live_bytes == 0;
    }
    T.mem.fail_at = (size_t)fail_at;
    T.mem.allocs = 0;
    for (i = 0; i < 4; i++) {
        r = fake_accept(&f[i]);
        if (r == WSCH_ERR_NOMEM && !wsch_hub_peer_valid(T.hub, f[i].h)) continue;
        if (r != WSCH_OK) return 0;
        /* fails the connection when memory runs out */
        (void)fake_upgrade(&f[i], i == 3 ? "/" : (i % 2 ? "/ws?token=ann" : "/ws?token=ben"), NULL);
    }
    for (i = 0; i < 3; i++) {
        if (!wsch_hub_peer_valid(T.hub, f[i].h)) continue;
        (void)fake_sub(&f[i], "alpha");
        (void)fake_sub(&f[i], i ? "beta" : "gamma");
        (void)fake_say(&f[i], "{\"type\":\"ping\",\"payload\":[1]}");
        (void)fake_say(&f[i], "{\"type\":\"publish\",\"payload\":{\"channel\":\"alpha\",\"data\":1}}");
    }
    f[2].take = 5;
    r = wsch_hub_broadcast(T.hub, "alpha", "t", "{\"k\":1}", 7, NULL);
    if (r != WSCH_OK && r != WSCH_ERR_NOMEM) return 0;
    r = wsch_hub_send_to_user(T.hub, "ann", "t", "1", 1, NULL);
    if (r != WSCH_OK && r != WSCH_ERR_NOMEM) return 0;
    r = wsch_hub_subscribe(T.hub, f[0].h, "delta");
    if (r != WSCH_OK && r != WSCH_ERR_NOMEM && r != WSCH_ERR_STALE && r != WSCH_ERR_STATE) return 0;
    (void)fake_say(&f[1], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"beta\"}}");
    fake_gone(&f[1]);
    wsch_hub_shutdown(T.hub);
    for (i = 0; i < 4; i++) fake_gone(&f[i]);
    *hit = T.mem.failed > 0;
    if (stats().peers != 0 || stats().subscriptions != 0 || stats().channels != 0 || stats().users != 0) return 0;
    return hub_teardown(f, 4) == 0;
}

TEST failing_allocator_never_leaks(void) {
    long tried;
    CHECK_CALL(refuse_each_allocation(run_scenario, 2000, "scenario", &tried));
    if (greatest_info.verbose) printf("failing allocator: %ld allocation sites tried\n", tried);
    PASS();
}

/* Destroying a hub with live peers frees them; the only callback is
   close(), once for each peer whose transport is still the library's --
   open, closing or handshaking -- and none for one already given back. */
TEST destroy_with_live_clients(void) {
    fake f[5];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT(fake_open(&f[1], "b"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "c"));
    f[1].take = 0;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "queued", "1", 1, NULL));   /* left in the queue */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[2]));                                    /* mid-handshake */
    ASSERT(fake_open(&f[3], "d"));
    ASSERT_EQ(WSCH_OK, wsch_hub_peer_close(T.hub, f[3].h, 1000, NULL, 0));    /* closing: no answer yet */
    ASSERT(fake_open(&f[4], "e"));
    ASSERT_EQ(WSCH_OK, fake_frame(&f[4], WSCH_OP_CLOSE, "\x03\xe8", 2));     /* given back already */
    ASSERT(fake_released(&f[4]));
    for (i = 0; i < 5; i++) {
        ASSERT_EQ(i == 4 ? 1 : 0, f[i].closes);
        f[i].timer_sets = 0;
    }
    T.disconnects = 0;
    wsch_hub_destroy(T.hub);
    T.hub = NULL;
    for (i = 0; i < 5; i++) {
        ASSERT_EQ(1, f[i].closes);
        ASSERT_EQ(0u, f[i].timer_sets);
        if (i < 3) ASSERT_EQ(1, f[i].armed[i == 2 ? WSCH_TIMER_HANDSHAKE : WSCH_HUB_TIMER_IDLE]);  /* nobody touched them */
        ASSERT(fake_done(&f[i]));
    }
    ASSERT_EQ(0, T.disconnects);
    ASSERT_EQ(0, (int)T.mem.live_bytes);
    PASS();
}

TEST desc_defaults_and_create_errors(void) {
    wsch_hub_desc d = wsch_hub_desc_defaults(NULL);
    wsch_hub *h = NULL;
    ASSERT_STR_EQ("/ws", d.path);
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_PEERS, d.max_peers);
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_CHANNELS_PER_PEER, d.max_channels_per_peer);
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_CHANNEL_LEN, d.max_channel_len);
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_MESSAGE_SIZE, d.limits.max_message_size);
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_MESSAGE_SIZE, d.limits.max_frame_size);   /* a frame may be a whole message */
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_OUTBOUND_BYTES, d.limits.max_outbound_bytes);
    ASSERT_EQ(WSCH_HUB_DEFAULT_IDLE_TIMEOUT_MS, d.idle_timeout_ms);
    {
        wsch_hub_desc in;
        memset(&in, 0, sizeof in);
        in.limits.max_message_size = 1000;
        in.limits.max_outbound_bytes = 5000;
        d = wsch_hub_desc_defaults(&in);
        ASSERT_EQ(1000u, d.limits.max_frame_size);                    /* follows the message size */
        ASSERT_EQ(5000u, d.limits.max_outbound_bytes);
        ASSERT_EQ(WSCH_DEFAULT_MAX_HEADER_BYTES, d.limits.max_header_bytes); /* the rest as a conn's */
    }
    d = wsch_hub_desc_defaults(NULL);
    d.max_channel_len = WSCH_HUB_MAX_CHANNEL_LEN + 1;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_create(&d, &h));
    ASSERT_EQ(NULL, h);
    d = wsch_hub_desc_defaults(NULL);
    d.path = "ws";
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_create(&d, &h));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_create(NULL, NULL));
    ASSERT_EQ(WSCH_OK, wsch_hub_create(NULL, &h));
    {
        wsch_hub_peer c;
        wsch_effects e = fake_effects();
        ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_accept(h, NULL, NULL, &c));   /* no effects anywhere */
        ASSERT_EQ(0, wsch_hub_peer_valid(h, c));
        e.close = NULL;
        ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_accept(h, &e, NULL, &c));     /* close() is required */
        e = fake_effects();
        e.send = NULL;
        ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_accept(h, &e, NULL, &c));     /* and send() */
    }
    wsch_hub_destroy(h);
    wsch_hub_destroy(NULL);
    /* Creation under allocation failure. */
    {
        size_t k;
        for (k = 1; k <= 3; k++) {
            alloc_counter mem;
            int r;
            memset(&mem, 0, sizeof mem);
            mem.fail_at = k;
            mem.fail_all_after = 1;
            d = wsch_hub_desc_defaults(NULL);
            d.allocator = alloc_counter_allocator(&mem);
            h = NULL;
            r = wsch_hub_create(&d, &h);
            ASSERT(r == WSCH_OK || (r == WSCH_ERR_NOMEM && h == NULL));
            wsch_hub_destroy(h);
            ASSERT_EQ(0, (int)mem.live_bytes);
        }
    }
    PASS();
}

/* wsch_hub_create() copies the desc and its strings: a path and a
   subprotocol in a buffer the caller reuses right after still serve. */
static char reused_path[16], reused_protocol[16];
static void strings_from_a_reused_buffer(wsch_hub_desc *d) {
    strcpy(reused_path, "/live");
    strcpy(reused_protocol, "chat.v2");
    d->path = reused_path;
    d->subprotocol = reused_protocol;
}

TEST desc_strings_are_copied(void) {
    fake f[2];
    char proto[64];
    memset(f, 0, sizeof f);
    ASSERT_EQ(WSCH_OK, hub_setup(strings_from_a_reused_buffer));
    memset(reused_path, 'x', sizeof reused_path - 1);
    memset(reused_protocol, 'y', sizeof reused_protocol - 1);
    ASSERT_EQ(WSCH_OK, fake_request(&f[0], "/live?token=alice", "Sec-WebSocket-Protocol: chat.v2\r\n"));
    ASSERT_EQ(101, fake_status(&f[0]));
    ASSERT(fake_header(&f[0], "Sec-WebSocket-Protocol", proto, sizeof proto));
    ASSERT_STR_EQ("chat.v2", proto);
    (void)fake_request(&f[1], "/xxxxxxxxxxxxxxx?token=bob", NULL);      /* answered, then closed */
    ASSERT_EQ(404, fake_status(&f[1]));
    ASSERT_EQ(0u, hub_teardown(f, 2));
    PASS();
}

SUITE(hub) {
    RUN_TEST(connect_ping_pong);
    RUN_TEST(subscribe_broadcast_reaches_exactly_subscribers);
    RUN_TEST(broadcast_argument_errors);
    RUN_TEST(message_size_limit);
    RUN_TEST(bad_envelopes_get_errors);
    RUN_TEST(unknown_type_without_handler);
    RUN_TEST(send_to_user_reaches_every_connection);
    RUN_TEST(cleanup_on_close_leaves_nothing);
    RUN_TEST(stale_handles);
    RUN_TEST(client_limit);
    RUN_TEST(channel_limits);
    RUN_TEST(slow_consumer_is_dropped_others_served);
    RUN_TEST(shared_budget_drops_the_peers_that_lag);
    RUN_TEST(broadcast_is_encoded_once_and_shared);
    RUN_TEST(gathered_turn_is_one_write_per_peer);
    RUN_TEST(gathered_turn_keeps_the_slow_consumer_rule);
    RUN_TEST(gathered_turn_writes_through_a_spent_budget);
    RUN_TEST(many_clients_match_a_model);
    RUN_TEST(auth_sources_and_rejections);
    RUN_TEST(auth_rejection_as_http_401);
    RUN_TEST(origin_hook);
    RUN_TEST(subscribe_authorization);
    RUN_TEST(plain_http_on_other_paths);
    RUN_TEST(idle_timeout_with_clock);
    RUN_TEST(idle_timeout_without_clock);
    RUN_TEST(silent_peers_are_pinged);
    RUN_TEST(idle_timeout_disabled);
    RUN_TEST(handshake_timeout);
    RUN_TEST(graceful_shutdown);
    RUN_TEST(handshaking_client_closed_by_hub_stays_quiet);
    RUN_TEST(publish_from_handler_and_partial_writes);
    RUN_TEST(close_callback_reports_synchronously);
    RUN_TEST(conn_cut_inside_a_delivery);
    RUN_TEST(close_once_when_the_peer_closes);
    RUN_TEST(close_once_when_the_hub_closes);
    RUN_TEST(close_once_for_refused_peers);
    RUN_TEST(close_once_for_bad_handshakes_and_http_answers);
    RUN_TEST(close_once_on_idle_timeout);
    RUN_TEST(close_once_for_slow_consumers_dropped_in_a_walk);
    RUN_TEST(send_error_during_a_broadcast_to_many);
    RUN_TEST(send_error_on_every_other_path);
    RUN_TEST(close_once_on_eof_report);
    RUN_TEST(close_once_on_shutdown);
    RUN_TEST(payload_lengths_may_be_cstr);
    RUN_TEST(peer_want_follows_the_transport);
    RUN_TEST(reentrant_calls_from_hooks);
    RUN_TEST(heap_per_idle_connection);
    RUN_TEST(failing_allocator_never_leaks);
    RUN_TEST(destroy_with_live_clients);
    RUN_TEST(desc_defaults_and_create_errors);
    RUN_TEST(desc_strings_are_copied);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(hub);
    GREATEST_MAIN_END();
}
