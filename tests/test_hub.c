/* Tests of the hub (wsch_hub) over fake transports: each fake records what
   the hub sends, can refuse bytes (a slow reader), and keeps the timers the
   hub arms, so every path runs without a socket or a clock. */
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
    ASSERT(f[0].close_requested);
    fake_gone(&f[0]);
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
    ASSERT(f[0].close_requested);
    ASSERT_EQ(WSCH_CLOSE_NORMAL, T.last_code);
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    ASSERT_EQ(WSCH_OK, wsch_hub_peer_close(T.hub, f[2].h, 1000, "done"));
    ASSERT(fake_closed_with(&f[2], 1000, "done"));
    ASSERT_EQ(WSCH_OK, fake_frame(&f[2], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(f[2].close_requested);
    fake_gone(&f[2]);
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
    ASSERT_EQ(0, wsch_hub_peer_valid(T.hub, old));
    ASSERT_EQ(NULL, wsch_hub_peer_user(T.hub, old));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_peer_user_id(T.hub, old, &uid));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_send(T.hub, old, "t", NULL, 0));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_subscribe(T.hub, old, "c"));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_unsubscribe(T.hub, old, "c"));
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_peer_close(T.hub, old, 1000, NULL));
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
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_HANDSHAKE]);
    ASSERT_EQ(WSCH_OK, fake_accept(&f[3]));
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

static void tight_queue(wsch_hub_desc *d) { d->max_outbound_bytes = 1000; }

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
    f[1].take = 0;              /* stops reading */
    memset(payload, 'p', sizeof payload);
    payload[0] = '"';
    payload[99] = '"';
    for (rounds = 0; rounds < 30; rounds++) {
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "feed", "tick", payload, 100, &delivered));
        /* Each frame is 130 bytes (126 of envelope, a 4-byte header): 7 fit in 1000, 8 do not. */
        if (rounds < 7) ASSERT_EQ(3, (int)delivered);
    }
    ASSERT_EQ(2, (int)delivered);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    ASSERT_EQ(2, (int)wsch_hub_channel_size(T.hub, "feed"));
    /* The queue holds what fit (the close frame may go past the limit). */
    /* 7 frames, then the close frame (2 + 2 + 13) past the limit. */
    ASSERT_EQ_FMT(7 * 130 + 17, (int)wsch_hub_peer_queued_bytes(T.hub, f[1].h), "%d");
    ASSERT_EQ(1, f[1].armed[WSCH_TIMER_CLOSE]);
    ASSERT_EQ(WSCH_STATE_CLOSING, wsch_hub_peer_state(T.hub, f[1].h));
    for (i = 0; i < 3; i++) {
        if (i == 1) continue;
        while (fake_text(&f[i])[0]) got[i]++;
        ASSERT_EQ(30, (int)got[i]);
    }
    /* The reader wakes up: it sees what was queued, then the 4008. */
    f[1].take = FAKE_ALL;
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[1].h));
    while (fake_text(&f[1])[0]) got[1]++;
    ASSERT_EQ(7, (int)got[1]);
    ASSERT(fake_closed_with(&f[1], WSCH_HUB_CLOSE_SLOW_CONSUMER, "Slow consumer"));
    /* The close timer ends it if the peer never answers. */
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_TIMER_CLOSE));
    ASSERT(f[1].close_requested);
    ASSERT_EQ(1, T.disconnects);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, T.last_code);     /* the peer never sent its close frame */
    for (i = 0; i < 3; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* The same bytes go to every subscriber, encoded once, queued by reference:
   memory for a blocked broadcast does not grow with the payload per client. */
TEST broadcast_is_encoded_once_and_shared(void) {
    enum { N = 50, SIZE = 8000 };
    fake f[N];
    size_t i, before, delivered;
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
    ASSERT(T.mem.live_bytes <= before);
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
    ASSERT(f[3].close_requested);
    ASSERT_EQ(0, (int)wsch_hub_user_connections(T.hub, "bad"));
    /* No token at all. */
    ASSERT_EQ(WSCH_OK, fake_request(&f[4], "/ws", NULL));
    ASSERT(fake_closed_with(&f[4], WSCH_CLOSE_UNAUTHORIZED, "Unauthorized"));
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_UNAUTHORIZED]);
    /* A refused connection gets no broadcasts. */
    ASSERT_EQ(WSCH_ERR_STATE, wsch_hub_send(T.hub, f[4].h, "t", NULL, 0));
    fake_gone(&f[3]);
    fake_gone(&f[4]);
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
    ASSERT(f[0].close_requested);
    /* A user id longer than max_user_id_len is a refusal too. */
    (void)fake_request(&f[1], "/ws?token=123456789", NULL);
    ASSERT_EQ(401, fake_status(&f[1]));
    ASSERT(fake_open(&f[2], "12345678"));
    ASSERT_EQ(2, (int)stats().drops[WSCH_HUB_DROP_UNAUTHORIZED]);
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    fake_gone(&f[2]);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

TEST origin_hook(void) {
    fake f[2];
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    (void)fake_request(&f[0], "/ws?token=a", "Origin: http://evil.local\r\n");
    ASSERT_EQ(403, fake_status(&f[0]));
    ASSERT(f[0].close_requested);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_ORIGIN]);
    ASSERT_EQ(WSCH_OK, fake_request(&f[1], "/ws?token=a", "Origin: http://good.local\r\n"));
    ASSERT_EQ(101, fake_status(&f[1]));
    ASSERT_EQ(2, T.origin_checks);
    fake_gone(&f[0]);
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
    ASSERT(f[0].close_requested);
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
        fake_gone(&g);
        free(g.out);
    }
    /* A plain GET on the WebSocket path is refused by the connection. */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[3]));
    (void)fake_feed_str(&f[3], "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT(fake_status(&f[3]) >= 400);
    ASSERT_EQ(4, (int)stats().http_responses);
    ASSERT_EQ(0, T.connects);
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    fake_gone(&f[2]);
    fake_gone(&f[3]);
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
    d->now_ms = NULL;
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
    ASSERT(f[0].close_requested);
    fake_gone(&f[0]);
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
    ASSERT(f[3].close_requested);
    ASSERT_EQ(0, (int)stats().subscriptions);
    {
        fake extra;
        wsch_hub_peer h;
        ASSERT_EQ(WSCH_ERR_STATE, wsch_hub_accept(T.hub, NULL, &extra, &h));
    }
    /* Peers answer; the hub closes each transport; the caller reports it. */
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(WSCH_OK, fake_frame(&f[i], WSCH_OP_CLOSE, "\x03\xe9", 2));
        ASSERT(f[i].close_requested);
        fake_gone(&f[i]);
    }
    ASSERT_EQ(1, (int)stats().peers);
    fake_gone(&f[3]);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(3, T.disconnects);
    ASSERT_EQ(WSCH_CLOSE_GOING_AWAY, T.last_code);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    PASS();
}

/* A client the hub closes during its handshake (close_client, shutdown)
   gets close() once and nothing more: no answer to request bytes the
   caller still feeds, no second close() from the handshake timer. */
TEST handshaking_client_closed_by_hub_stays_quiet(void) {
    fake f[2];
    const char *req = "GET /ws?token=u HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_accept(&f[1]));
    ASSERT_EQ(WSCH_OK, wsch_hub_peer_close(T.hub, f[0].h, 1000, "bye"));
    wsch_hub_shutdown(T.hub);
    for (i = 0; i < 2; i++) {
        ASSERT_EQ(1, f[i].closes);
        ASSERT(fake_feed_str(&f[i], req) != WSCH_OK);
        (void)wsch_hub_timer_fired(T.hub, f[i].h, WSCH_TIMER_HANDSHAKE);
        ASSERT_EQ(0, (int)f[i].out_len);
        ASSERT_EQ(1, f[i].closes);
        fake_gone(&f[i]);
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

/* The transport's close callback may report the closure at once. */
static size_t sync_send(const void *d, size_t n, void *u) { return f_send(d, n, u); }
static void sync_close(void *user) {
    fake *f = (fake *)user;
    f_close(f);
    fake_gone(f);
}
static const wsch_hub_transport sync_transport = {sync_send, sync_close, f_timer_set, f_timer_cancel};

TEST close_callback_reports_synchronously(void) {
    fake f[3];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(tight_queue));
    for (i = 0; i < 3; i++) {
        fake_init(&f[i]);
        ASSERT_EQ(WSCH_OK, wsch_hub_accept(T.hub, &sync_transport, &f[i], &f[i].h));
        {
            const char *req = "GET /ws?token=s HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
            (void)fake_feed(&f[i], req, strlen(req));
        }
        ASSERT_EQ(101, fake_status(&f[i]));
        ASSERT_EQ(WSCH_OK, fake_sub(&f[i], "c"));
    }
    /* A peer close: the hub closes the transport from inside feed. */
    ASSERT_EQ(WSCH_OK, fake_frame(&f[0], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(f[0].reported);
    ASSERT_EQ(0, wsch_hub_peer_valid(T.hub, f[0].h));
    /* A slow consumer whose close timer fires during the broadcast loop's drops. */
    f[1].take = 0;
    for (i = 0; i < 20; i++) (void)wsch_hub_broadcast(T.hub, "c", "t", "\"0123456789012345678901234567890123456789\"", 42, NULL);
    ASSERT_EQ(1, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    ASSERT_EQ(WSCH_OK, wsch_hub_timer_fired(T.hub, f[1].h, WSCH_TIMER_CLOSE));
    ASSERT(f[1].reported);
    /* quit closes from inside its own on_message. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[2], "{\"type\":\"quit\"}"));
    ASSERT_EQ(WSCH_OK, fake_frame(&f[2], WSCH_OP_CLOSE, "\x03\xe8", 2));
    ASSERT(f[2].reported);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

/* Opens a client on transport t (its close may report synchronously). */
static int fake_open_with(fake *f, const wsch_hub_transport *t, const char *user) {
    char req[512];
    fake_init(f);
    if (wsch_hub_accept(T.hub, t, f, &f->h) != WSCH_OK) return 0;
    snprintf(req, sizeof req,
             "GET /ws?token=%s HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
             user);
    (void)fake_feed_str(f, req);
    return fake_status(f) == 101 && wsch_hub_peer_state(T.hub, f->h) == WSCH_STATE_OPEN;
}

/* A conn can end inside a delivery's send: send() took part of the frame
   and the queue could not grow. The walk over the subscribers (or the
   user's connections) goes on over the others, unchanged; the cut client
   is finished after it (1006, counted as out of memory), also when its
   close() reports the transport closed at once. */
TEST conn_cut_inside_a_delivery(void) {
    fake f[7];
    size_t delivered = 9, i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    for (i = 0; i < 3; i++) {
        ASSERT(fake_open_with(&f[i], i == 0 ? &sync_transport : &fake_transport, "chan"));
        ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[i].h, "c"));
    }
    ASSERT(fake_open_with(&f[3], &fake_transport, "solo"));
    ASSERT_EQ(WSCH_OK, wsch_hub_subscribe(T.hub, f[3].h, "s"));
    for (i = 4; i < 7; i++) ASSERT(fake_open_with(&f[i], i == 6 ? &sync_transport : &fake_transport, "u"));
    for (i = 0; i < 7; i++) (void)fake_pending(&f[i]);

    /* The first subscriber is cut: the other two still get the message. */
    f[0].take = 1;
    T.mem.fail_at = T.mem.allocs + 2;      /* the frame is allocated, the queue chunk is not */
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "t", "1", 1, &delivered));
    T.mem.fail_at = 0;
    ASSERT_EQ(2, (int)delivered);
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":1}", fake_text(&f[1]));
    ASSERT_STR_EQ("{\"type\":\"t\",\"payload\":1}", fake_text(&f[2]));
    ASSERT_EQ(1, f[0].closes);
    ASSERT(f[0].reported);
    ASSERT_EQ(0, wsch_hub_peer_valid(T.hub, f[0].h));
    ASSERT_EQ(1, T.disconnects);
    ASSERT_EQ(WSCH_CLOSE_ABNORMAL, T.last_code);
    ASSERT_EQ(2, (int)wsch_hub_channel_size(T.hub, "c"));

    /* The only subscriber is cut: the channel goes, after the walk. */
    f[3].take = 1;
    T.mem.fail_at = T.mem.allocs + 2;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "s", "t", "2", 1, &delivered));
    T.mem.fail_at = 0;
    ASSERT_EQ(0, (int)delivered);
    ASSERT_EQ(0, (int)wsch_hub_channel_size(T.hub, "s"));
    ASSERT_EQ(2, T.disconnects);
    fake_gone(&f[3]);

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
    ASSERT_EQ(2, (int)wsch_hub_user_connections(T.hub, "u"));
    ASSERT_EQ(3, T.disconnects);
    ASSERT_EQ(3, (int)stats().drops[WSCH_HUB_DROP_NOMEM]);
    for (i = 0; i < 7; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)stats().peers);
    ASSERT_EQ(0, (int)hub_teardown(f, 7));
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
        free(f[i].out);
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
        char req[256];
        r = fake_accept(&f[i]);
        if (r == WSCH_ERR_NOMEM && !wsch_hub_peer_valid(T.hub, f[i].h)) continue;
        if (r != WSCH_OK) return 0;
        snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 i == 3 ? "/" : (i % 2 ? "/ws?token=ann" : "/ws?token=ben"));
        (void)fake_feed(&f[i], req, strlen(req));   /* fails the connection when memory runs out */
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

/* Destroying a hub with live clients frees them without calling back. */
TEST destroy_with_live_clients(void) {
    fake f[3];
    size_t i;
    ASSERT_EQ(WSCH_OK, hub_setup(NULL));
    ASSERT(fake_open(&f[0], "a"));
    ASSERT(fake_open(&f[1], "b"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "c"));
    f[1].take = 0;
    ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "c", "queued", "1", 1, NULL));   /* left in the queue */
    ASSERT_EQ(WSCH_OK, fake_accept(&f[2]));                                    /* mid-handshake */
    for (i = 0; i < 3; i++) f[i].timer_sets = 0, f[i].close_requested = 0;
    T.disconnects = 0;
    wsch_hub_destroy(T.hub);
    T.hub = NULL;
    for (i = 0; i < 3; i++) {
        ASSERT_EQ(1, f[i].armed[i == 2 ? WSCH_TIMER_HANDSHAKE : WSCH_HUB_TIMER_IDLE]);  /* nobody touched them */
        ASSERT_EQ(0, f[i].close_requested);
        free(f[i].out);
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
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_MESSAGE_SIZE, d.max_message_size);
    ASSERT_EQ(WSCH_HUB_DEFAULT_MAX_OUTBOUND_BYTES, d.max_outbound_bytes);
    ASSERT_EQ(WSCH_HUB_DEFAULT_IDLE_TIMEOUT_MS, d.idle_timeout_ms);
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
        ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_accept(h, NULL, NULL, &c));   /* no transport anywhere */
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
    RUN_TEST(broadcast_is_encoded_once_and_shared);
    RUN_TEST(many_clients_match_a_model);
    RUN_TEST(auth_sources_and_rejections);
    RUN_TEST(auth_rejection_as_http_401);
    RUN_TEST(origin_hook);
    RUN_TEST(subscribe_authorization);
    RUN_TEST(plain_http_on_other_paths);
    RUN_TEST(idle_timeout_with_clock);
    RUN_TEST(idle_timeout_without_clock);
    RUN_TEST(idle_timeout_disabled);
    RUN_TEST(handshake_timeout);
    RUN_TEST(graceful_shutdown);
    RUN_TEST(handshaking_client_closed_by_hub_stays_quiet);
    RUN_TEST(publish_from_handler_and_partial_writes);
    RUN_TEST(close_callback_reports_synchronously);
    RUN_TEST(conn_cut_inside_a_delivery);
    RUN_TEST(heap_per_idle_connection);
    RUN_TEST(failing_allocator_never_leaks);
    RUN_TEST(destroy_with_live_clients);
    RUN_TEST(desc_defaults_and_create_errors);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(hub);
    GREATEST_MAIN_END();
}
