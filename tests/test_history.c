/* Tests of the hub's history and reliable messages: stream positions,
   recovery on subscribe, the limits of the history, replays paced by the
   peer's queue, acks and duplicate suppression per session. Over the fake
   transports and clock of tests/hub_fixture.h. */
#define WS_CHANNEL_IMPLEMENTATION
#include "ws_channel.h"
#include GREATEST_HEADER
#include "hub_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- setup ----------------------------------------------------------------- */

static uint32_t H_size = 5, H_ttl_ms, H_max_sessions;
static size_t H_max_bytes, H_outbound;
static unsigned char H_rng;

/* Deterministic, but different for every hub made: two "processes" never
   share an epoch key. */
static void h_random(void *buf, size_t len, void *user) {
    unsigned char *p = (unsigned char *)buf;
    size_t i;
    (void)user;
    H_rng++;
    for (i = 0; i < len; i++) p[i] = (unsigned char)(H_rng * 31u + i * 7u);
}

/* The test hooks of the fixture, plus "refuse" (refused with a code of its
   own) and "count" (counted only). */
static void h_message(wsch_hub *hub, wsch_hub_peer peer, const wsch_envelope *env, void *user) {
    if (wsch_envelope_type_is(env, "refuse")) {
        ((ctx *)user)->messages++;
        c_result(wsch_hub_refuse(hub, peer, "nope", "not today"));
        return;
    }
    c_message(hub, peer, env, user);
}

static void with_history(wsch_hub_desc *d) {
    d->history_size = H_size;
    d->history_ttl_ms = H_ttl_ms;
    d->history_max_bytes = H_max_bytes;
    d->max_sessions = H_max_sessions;
    if (H_outbound) d->limits.max_outbound_bytes = H_outbound;
    d->effects.random_bytes = h_random;
    d->on_message = h_message;
}

static int setup(uint32_t size) {
    H_size = size;
    return hub_setup(with_history);
}

static void reset_knobs(void) {
    H_size = 5;
    H_ttl_ms = 0;
    H_max_bytes = 0;
    H_max_sessions = 0;
    H_outbound = 0;
}

/* ---- reading what peers got ------------------------------------------------ */

static int64_t int_of(const char *json, const char *key) {
    int64_t v = -1;
    wsch_str s;
    s.ptr = json;
    s.len = strlen(json);
    if (wsch_json_get_int(s, key, &v) != WSCH_OK) return -1;
    return v;
}

static int64_t payload_int(const char *json, const char *key) {
    wsch_str s, p;
    int64_t v = -1;
    s.ptr = json;
    s.len = strlen(json);
    if (wsch_json_get_raw(s, "payload", &p) != WSCH_OK || wsch_json_get_int(p, key, &v) != WSCH_OK) return -1;
    return v;
}

/* The string member key (of the payload when in_payload), or "". */
static const char *str_of(const char *json, const char *key, int in_payload) {
    static char out[128];
    wsch_str s, p;
    size_t n;
    s.ptr = json;
    s.len = strlen(json);
    out[0] = '\0';
    if (in_payload) {
        if (wsch_json_get_raw(s, "payload", &p) != WSCH_OK) return out;
        s = p;
    }
    if (wsch_json_get_string(s, key, out, sizeof out, &n) != WSCH_OK) out[0] = '\0';
    return out;
}

/* The payload's "recovered": 1 true, 0 false, -1 absent. */
static int recovered_of(const char *json) {
    wsch_str s, p, v;
    s.ptr = json;
    s.len = strlen(json);
    if (wsch_json_get_raw(s, "payload", &p) != WSCH_OK || wsch_json_get_raw(p, "recovered", &v) != WSCH_OK) return -1;
    return v.len == 4 && memcmp(v.ptr, "true", 4) == 0;
}

static int is_type(const char *json, const char *type) { return strcmp(str_of(json, "type", 0), type) == 0; }

/* A subscribe asking for the last k messages. */
static void ask_history(fake *f, const char *channel, long k) {
    char msg[512];
    snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\",\"history\":%ld}}", channel, k);
    (void)fake_say(f, msg);
}

static int publish(const char *channel, int n) {
    char p[32];
    snprintf(p, sizeof p, "{\"n\":%d}", n);
    return wsch_hub_broadcast(T.hub, channel, "m", p, strlen(p), NULL);
}

/* A recover subscribe. */
static void recover(fake *f, const char *channel, long offset, const char *epoch) {
    char msg[512];
    snprintf(msg, sizeof msg,
             "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\",\"recover\":{\"offset\":%ld,\"epoch\":\"%s\"}}}",
             channel, offset, epoch);
    (void)fake_say(f, msg);
}

/* ---- positions ------------------------------------------------------------- */

TEST every_channel_message_carries_its_position(void) {
    fake f[2];
    char epoch[32];
    wsch_hub_position pos;
    const char *t;
    int i;
    ASSERT_EQ(WSCH_OK, setup(5));
    ASSERT(fake_open(&f[0], "ann"));
    ASSERT(fake_open(&f[1], "ben"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "news"));
    t = fake_text(&f[0]);
    ASSERT(is_type(t, "subscribed"));
    ASSERT_EQ(0, (int)payload_int(t, "offset"));
    ASSERT_EQ(-1, recovered_of(t));                 /* only said when recover was asked */
    snprintf(epoch, sizeof epoch, "%s", str_of(t, "epoch", 1));
    ASSERT_EQ(16, (int)strlen(epoch));
    for (i = 1; i <= 3; i++) ASSERT_EQ(WSCH_OK, publish("news", i));
    for (i = 1; i <= 3; i++) {
        char want[160];
        snprintf(want, sizeof want,
                 "{\"type\":\"m\",\"payload\":{\"n\":%d},\"channel\":\"news\",\"offset\":%d,\"epoch\":\"%s\"}", i, i,
                 epoch);
        ASSERT_STR_EQ(want, fake_text(&f[0]));
    }
    /* Another channel has its own stream and epoch. */
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "sport"));
    t = fake_text(&f[1]);
    ASSERT(strcmp(epoch, str_of(t, "epoch", 1)) != 0);
    ASSERT_EQ(WSCH_OK, wsch_hub_channel_position(T.hub, "news", &pos));
    ASSERT_EQ(3, (int)pos.offset);
    ASSERT_STR_EQ(epoch, pos.epoch);
    ASSERT_EQ(1, (int)pos.first_kept);
    ASSERT_EQ(3, (int)pos.kept);
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, wsch_hub_channel_position(T.hub, "none", &pos));
    /* send_to_user and send are not channel messages: no position. */
    ASSERT_EQ(WSCH_OK, wsch_hub_send_to_user(T.hub, "ann", "direct", "1", 1, NULL));
    ASSERT_STR_EQ("{\"type\":\"direct\",\"payload\":1}", fake_text(&f[0]));
    ASSERT_EQ(3, (int)stats().history_messages);
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

TEST history_needs_a_clock_and_randomness(void) {
    wsch_hub_desc d;
    wsch_hub *hub = NULL;
    alloc_counter mem;
    memset(&mem, 0, sizeof mem);
    memset(&d, 0, sizeof d);
    d.allocator = alloc_counter_allocator(&mem);
    d.effects = fake_effects();
    d.history_size = 10;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_create(&d, &hub));
    d.effects.now_ms = c_now;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_create(&d, &hub));     /* no randomness: a restart could repeat an epoch */
    d.effects.random_bytes = h_random;
    d.history_size = (1u << 30) + 1u;
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_create(&d, &hub));
    d.history_size = 10;
    d.user = &T;
    ASSERT_EQ(WSCH_OK, wsch_hub_create(&d, &hub));
    {
        wsch_hub_desc got = wsch_hub_desc_defaults(&d);
        ASSERT_EQ(WSCH_HUB_DEFAULT_HISTORY_TTL_MS, got.history_ttl_ms);
        ASSERT_EQ((size_t)WSCH_HUB_DEFAULT_HISTORY_MAX_BYTES, got.history_max_bytes);
        ASSERT_EQ(WSCH_HUB_DEFAULT_SESSION_TTL_MS, got.session_ttl_ms);
        ASSERT_EQ(got.max_peers, got.max_sessions);
    }
    wsch_hub_destroy(hub);
    ASSERT_EQ((size_t)0, mem.live_bytes);
    PASS();
}

/* ---- recovery --------------------------------------------------------------- */

TEST recover_replays_what_was_missed_in_order(void) {
    fake f[2];
    char epoch[32];
    const char *t;
    int i;
    ASSERT_EQ(WSCH_OK, setup(10));
    ASSERT(fake_open(&f[0], "ann"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "news"));
    snprintf(epoch, sizeof epoch, "%s", str_of(fake_text(&f[0]), "epoch", 1));
    for (i = 1; i <= 3; i++) ASSERT_EQ(WSCH_OK, publish("news", i));
    ASSERT_EQ(3, (int)fake_pending(&f[0]));
    fake_gone(&f[0]);
    /* Nobody listens now; the channel lives on in its history. */
    for (i = 4; i <= 6; i++) ASSERT_EQ(WSCH_OK, publish("news", i));
    ASSERT_EQ(1, (int)stats().channels);
    ASSERT(fake_open(&f[1], "ann"));
    recover(&f[1], "news", 3, epoch);
    for (i = 4; i <= 6; i++) {
        t = fake_text(&f[1]);
        ASSERT_EQ(i, (int)int_of(t, "offset"));
        ASSERT_EQ(i, (int)payload_int(t, "n"));
    }
    t = fake_text(&f[1]);
    ASSERT(is_type(t, "subscribed"));
    ASSERT_EQ(1, recovered_of(t));
    ASSERT_EQ(6, (int)payload_int(t, "offset"));
    ASSERT_STR_EQ(epoch, str_of(t, "epoch", 1));
    /* Live again, after the replay. */
    ASSERT_EQ(WSCH_OK, publish("news", 7));
    ASSERT_EQ(7, (int)int_of(fake_text(&f[1]), "offset"));
    /* Recovering from the current offset replays nothing and is a success. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[1], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"news\"}}"));
    ASSERT(is_type(fake_text(&f[1]), "unsubscribed"));
    recover(&f[1], "news", 7, epoch);
    t = fake_text(&f[1]);
    ASSERT(is_type(t, "subscribed"));
    ASSERT_EQ(1, recovered_of(t));
    ASSERT_EQ(3, (int)stats().replayed);
    ASSERT_EQ(2, (int)stats().recovered);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

TEST recover_says_false_whenever_it_cannot(void) {
    fake f[1];
    char epoch[32];
    const char *t;
    int i;
    ASSERT_EQ(WSCH_OK, setup(3));
    ASSERT(fake_open(&f[0], "ann"));
    for (i = 1; i <= 6; i++) ASSERT_EQ(WSCH_OK, publish("news", i));   /* keeps 4..6 */
    {
        wsch_hub_position pos;
        ASSERT_EQ(WSCH_OK, wsch_hub_channel_position(T.hub, "news", &pos));
        snprintf(epoch, sizeof epoch, "%s", pos.epoch);
        ASSERT_EQ(4, (int)pos.first_kept);
    }
    /* From 2: message 3 is gone. */
    recover(&f[0], "news", 2, epoch);
    t = fake_text(&f[0]);
    ASSERT(is_type(t, "subscribed"));               /* nothing replayed before it */
    ASSERT_EQ(0, recovered_of(t));
    ASSERT_EQ(6, (int)payload_int(t, "offset"));    /* where it is now, to refetch from */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"news\"}}"));
    (void)fake_text(&f[0]);
    /* From 3: everything after it is kept. */
    recover(&f[0], "news", 3, epoch);
    for (i = 4; i <= 6; i++) ASSERT_EQ(i, (int)int_of(fake_text(&f[0]), "offset"));
    ASSERT_EQ(1, recovered_of(fake_text(&f[0])));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"news\"}}"));
    (void)fake_text(&f[0]);
    /* Another epoch, an offset ahead of the channel, a malformed position. */
    recover(&f[0], "news", 5, "0123456789abcdef");
    ASSERT_EQ(0, recovered_of(fake_text(&f[0])));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"news\"}}"));
    (void)fake_text(&f[0]);
    recover(&f[0], "news", 99, epoch);
    ASSERT_EQ(0, recovered_of(fake_text(&f[0])));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"news\"}}"));
    (void)fake_text(&f[0]);
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"news\",\"recover\":{\"offset\":-1}}}"));
    ASSERT_EQ(0, recovered_of(fake_text(&f[0])));
    /* A channel new to this hub: nothing to recover, position 0 of a new epoch. */
    recover(&f[0], "fresh", 0, epoch);
    t = fake_text(&f[0]);
    ASSERT_EQ(0, recovered_of(t));
    ASSERT_EQ(0, (int)payload_int(t, "offset"));
    ASSERT(strcmp(epoch, str_of(t, "epoch", 1)) != 0);
    ASSERT_EQ(0, (int)fake_pending(&f[0]));
    ASSERT_EQ(5, (int)stats().not_recovered);
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST without_history_recover_is_false_and_positions_absent(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, setup(0));
    ASSERT(fake_open(&f[0], "ann"));
    recover(&f[0], "news", 0, "0123456789abcdef");
    ASSERT_STR_EQ("{\"type\":\"subscribed\",\"payload\":{\"channel\":\"news\",\"recovered\":false}}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, publish("news", 1));
    ASSERT_STR_EQ("{\"type\":\"m\",\"payload\":{\"n\":1}}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_channel_position(T.hub, "news", NULL));
    {
        wsch_hub_position pos;
        ASSERT_EQ(WSCH_ERR_STATE, wsch_hub_channel_position(T.hub, "news", &pos));
    }
    /* Without history a channel nobody listens to keeps nothing. */
    fake_gone(&f[0]);
    ASSERT_EQ(WSCH_OK, publish("news", 2));
    ASSERT_EQ(0, (int)stats().channels);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

TEST history_request_gives_the_last_k(void) {
    fake f[2];
    const char *t;
    int i;
    ASSERT_EQ(WSCH_OK, setup(4));
    ASSERT(fake_open(&f[0], "ann"));
    ASSERT(fake_open(&f[1], "ben"));
    for (i = 1; i <= 6; i++) ASSERT_EQ(WSCH_OK, publish("news", i));
    ask_history(&f[0], "news", 2);
    ASSERT_EQ(5, (int)int_of(fake_text(&f[0]), "offset"));
    ASSERT_EQ(6, (int)int_of(fake_text(&f[0]), "offset"));
    t = fake_text(&f[0]);
    ASSERT(is_type(t, "subscribed"));
    ASSERT_EQ(-1, recovered_of(t));
    ASSERT_EQ(6, (int)payload_int(t, "offset"));
    /* More than kept: what is kept. */
    ask_history(&f[1], "news", 100);
    for (i = 3; i <= 6; i++) ASSERT_EQ(i, (int)int_of(fake_text(&f[1]), "offset"));
    ASSERT(is_type(fake_text(&f[1]), "subscribed"));
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

/* ---- limits ------------------------------------------------------------------ */

TEST history_limits_by_count_age_and_bytes(void) {
    fake f[1];
    wsch_hub_position pos;
    char epoch[32];
    size_t per;
    int i;
    reset_knobs();
    H_ttl_ms = 1000;
    ASSERT_EQ(WSCH_OK, setup(3));
    for (i = 1; i <= 5; i++) ASSERT_EQ(WSCH_OK, publish("a", i));
    ASSERT_EQ(WSCH_OK, wsch_hub_channel_position(T.hub, "a", &pos));
    ASSERT_EQ(3, (int)pos.kept);
    ASSERT_EQ(3, (int)pos.first_kept);
    ASSERT_EQ(3, (int)stats().history_messages);
    per = (size_t)stats().history_bytes / 3u;
    if (per <= 56u || per >= 400u) printf("\nbytes per retained message: %lu\n", (unsigned long)per);
    ASSERT(per > 56u && per < 400u);
    snprintf(epoch, sizeof epoch, "%s", pos.epoch);
    /* Age: 999 ms keeps them, 1000 ms drops them (on the next hub call that
       looks). The channel had only its history: it goes, and its next
       message starts a new epoch at offset 1. */
    T.now += 999;
    ASSERT_EQ(WSCH_OK, publish("b", 1));
    ASSERT_EQ(4, (int)stats().history_messages);
    T.now += 1;
    ASSERT_EQ(WSCH_OK, publish("b", 2));
    ASSERT_EQ(2, (int)stats().history_messages);
    ASSERT_EQ(WSCH_ERR_NOT_FOUND, wsch_hub_channel_position(T.hub, "a", &pos));
    ASSERT_EQ(WSCH_OK, publish("a", 6));
    ASSERT_EQ(WSCH_OK, wsch_hub_channel_position(T.hub, "a", &pos));
    ASSERT_EQ(1, (int)pos.offset);
    ASSERT(strcmp(epoch, pos.epoch) != 0);
    /* A subscriber keeps the channel (and its offsets) alive after its history aged out. */
    ASSERT(fake_open(&f[0], "ann"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[0], "a"));
    (void)fake_text(&f[0]);
    T.now += 5000;
    ASSERT_EQ(WSCH_OK, publish("a", 7));
    ASSERT_EQ(WSCH_OK, wsch_hub_channel_position(T.hub, "a", &pos));
    ASSERT_EQ(2, (int)pos.offset);
    ASSERT_EQ(1, (int)pos.kept);
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));

    /* Bytes: the oldest messages of all channels go first. */
    reset_knobs();
    H_max_bytes = 4 * per;
    ASSERT_EQ(WSCH_OK, setup(100));
    ASSERT_EQ(WSCH_OK, publish("a", 1));
    ASSERT_EQ(WSCH_OK, publish("b", 1));
    ASSERT_EQ(WSCH_OK, publish("a", 2));
    ASSERT_EQ(WSCH_OK, publish("b", 2));
    ASSERT_EQ(4, (int)stats().history_messages);
    ASSERT_EQ(WSCH_OK, publish("c", 1));
    ASSERT_EQ(4, (int)stats().history_messages);
    ASSERT(stats().history_bytes <= H_max_bytes);
    ASSERT_EQ(WSCH_OK, wsch_hub_channel_position(T.hub, "a", &pos));
    ASSERT_EQ(2, (int)pos.first_kept);
    ASSERT_EQ(WSCH_OK, wsch_hub_channel_position(T.hub, "b", &pos));
    ASSERT_EQ(1, (int)pos.first_kept);
    ASSERT_EQ(0, (int)hub_teardown(NULL, 0));
    reset_knobs();
    PASS();
}

/* ---- paced replay ------------------------------------------------------------ */

TEST replay_is_paced_by_the_peers_queue(void) {
    fake f[2];
    char epoch[32], big[400];
    wsch_hub_position pos;
    int i, next = 1, confirmed = 0;
    reset_knobs();
    H_outbound = 8192;
    ASSERT_EQ(WSCH_OK, setup(100));
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    for (i = 1; i <= 100; i++) {
        char p[500];
        snprintf(p, sizeof p, "{\"n\":%d,\"pad\":\"%s\"}", i, big);
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "news", "m", p, strlen(p), NULL));
    }
    ASSERT_EQ(WSCH_OK, wsch_hub_channel_position(T.hub, "news", &pos));
    snprintf(epoch, sizeof epoch, "%s", pos.epoch);
    ASSERT(fake_open(&f[0], "ann"));
    ASSERT(fake_open(&f[1], "ben"));
    ASSERT_EQ(WSCH_OK, fake_sub(&f[1], "news"));
    (void)fake_text(&f[1]);
    f[0].take = 0;                      /* a reader that does not read yet */
    recover(&f[0], "news", 0, epoch);
    /* 40 KiB of history against an 8 KiB limit: a part is queued, nobody is dropped. */
    ASSERT(wsch_hub_peer_queued_bytes(T.hub, f[0].h) <= 8192);
    ASSERT(wsch_hub_peer_queued_bytes(T.hub, f[0].h) >= 4096);
    ASSERT_EQ(WSCH_STATE_OPEN, wsch_hub_peer_state(T.hub, f[0].h));
    ASSERT_EQ(1, wsch_hub_is_subscribed(T.hub, f[0].h, "news"));
    ASSERT_EQ(1, (int)wsch_hub_channel_size(T.hub, "news"));  /* not live yet */
    /* Live messages meanwhile go into the history, and to f[0] after the replay. */
    ASSERT_EQ(WSCH_OK, publish("news", 101));
    ASSERT_EQ(WSCH_OK, publish("news", 102));
    for (i = 0; i < 200 && !confirmed; i++) {
        const char *t;
        f[0].take = 1000;               /* reads a little at a time */
        ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[0].h));
        f[0].take = 0;
        while (*(t = fake_text(&f[0]))) {
            if (is_type(t, "subscribed")) {
                ASSERT_EQ(1, recovered_of(t));
                ASSERT_EQ(102, (int)payload_int(t, "offset"));
                ASSERT_EQ(103, next);
                confirmed = 1;
                break;
            }
            ASSERT_EQ(next, (int)int_of(t, "offset"));
            next++;
        }
    }
    ASSERT(confirmed);
    ASSERT_EQ(0, (int)stats().drops[WSCH_HUB_DROP_SLOW_CONSUMER]);
    ASSERT_EQ(2, (int)wsch_hub_channel_size(T.hub, "news"));
    f[0].take = FAKE_ALL;
    ASSERT_EQ(WSCH_OK, publish("news", 103));
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[0].h));
    ASSERT_EQ(103, (int)int_of(fake_text(&f[0]), "offset"));
    fake_gone(&f[0]);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    reset_knobs();
    PASS();
}

TEST history_evicted_under_a_replay_ends_it_unrecovered(void) {
    fake f[1];
    char epoch[32];
    wsch_hub_position pos;
    const char *t;
    int i, got = 0;
    reset_knobs();
    H_outbound = 2048;
    ASSERT_EQ(WSCH_OK, setup(20));
    for (i = 1; i <= 20; i++) {
        char p[300];
        snprintf(p, sizeof p, "{\"n\":%d,\"pad\":\"%0200d\"}", i, 0);
        ASSERT_EQ(WSCH_OK, wsch_hub_broadcast(T.hub, "news", "m", p, strlen(p), NULL));
    }
    ASSERT_EQ(WSCH_OK, wsch_hub_channel_position(T.hub, "news", &pos));
    snprintf(epoch, sizeof epoch, "%s", pos.epoch);
    ASSERT(fake_open(&f[0], "ann"));
    f[0].take = 0;
    recover(&f[0], "news", 0, epoch);
    /* 20 more push the unsent ones out of the history. */
    for (i = 21; i <= 40; i++) ASSERT_EQ(WSCH_OK, publish("news", i));
    f[0].take = FAKE_ALL;
    ASSERT_EQ(WSCH_OK, wsch_hub_writable(T.hub, f[0].h));
    while (*(t = fake_text(&f[0])) && !is_type(t, "subscribed")) {
        ASSERT_EQ(++got, (int)int_of(t, "offset"));     /* in order, no gap inside what came */
    }
    ASSERT(got > 0 && got < 20);
    ASSERT(is_type(t, "subscribed"));
    ASSERT_EQ(0, recovered_of(t));
    ASSERT_EQ(40, (int)payload_int(t, "offset"));
    fake_gone(&f[0]);
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    reset_knobs();
    PASS();
}

/* ---- reliable messages --------------------------------------------------------- */

TEST reliable_messages_are_acked_once_and_applied_once(void) {
    fake f[2];
    const char *t;
    ASSERT_EQ(WSCH_OK, setup(5));
    ASSERT_EQ(WSCH_OK, fake_request(&f[0], "/ws?token=ann&session=s-1", NULL));
    ASSERT_EQ(101, fake_status(&f[0]));
    ASSERT_EQ(1, (int)stats().sessions);
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"echo\",\"payload\":1,\"id\":1}"));
    ASSERT_STR_EQ("{\"type\":\"echo\",\"payload\":1}", fake_text(&f[0]));
    ASSERT_STR_EQ("{\"type\":\"ack\",\"payload\":{\"id\":1}}", fake_text(&f[0]));     /* after the effect */
    ASSERT_EQ(1, T.messages);
    /* A resend: acked again, not applied again. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"echo\",\"payload\":1,\"id\":1}"));
    ASSERT_STR_EQ("{\"type\":\"ack\",\"payload\":{\"id\":1}}", fake_text(&f[0]));
    ASSERT_EQ(1, T.messages);
    /* Refused by the application: the error carries the id, no ack follows. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"refuse\",\"id\":2}"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"nope\",\"message\":\"not today\",\"request\":\"refuse\",\"id\":2}}",
                  fake_text(&f[0]));
    ASSERT_EQ(0, (int)fake_pending(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"refuse\",\"id\":2}"));
    t = fake_text(&f[0]);
    ASSERT_STR_EQ("refused", str_of(t, "code", 1));
    ASSERT_EQ(2, (int)payload_int(t, "id"));
    ASSERT_EQ(2, T.messages);
    /* Unknown types are refused with the id too. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"nobody\",\"id\":3}"));
    ASSERT_EQ(3, (int)payload_int(fake_text(&f[0]), "id"));
    /* Ids skip forward (the client gave some up): fine. Then the same
       session on a second connection: still deduplicated. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"echo\",\"payload\":9,\"id\":9}"));
    (void)fake_text(&f[0]);
    ASSERT_EQ(9, (int)payload_int(fake_text(&f[0]), "id"));
    fake_gone(&f[0]);
    ASSERT_EQ(1, (int)stats().sessions);            /* remembered while idle */
    ASSERT_EQ(WSCH_OK, fake_request(&f[1], "/ws?token=ann&session=s-1", NULL));
    ASSERT_EQ(WSCH_OK, fake_say(&f[1], "{\"type\":\"echo\",\"payload\":9,\"id\":9}"));
    ASSERT_STR_EQ("{\"type\":\"ack\",\"payload\":{\"id\":9}}", fake_text(&f[1]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[1], "{\"type\":\"refuse\",\"id\":2}"));
    ASSERT_STR_EQ("refused", str_of(fake_text(&f[1]), "code", 1));
    ASSERT_EQ(WSCH_OK, fake_say(&f[1], "{\"type\":\"echo\",\"payload\":10,\"id\":10}"));
    ASSERT(is_type(fake_text(&f[1]), "echo"));
    ASSERT_EQ(10, (int)payload_int(fake_text(&f[1]), "id"));
    ASSERT_EQ(4, (int)stats().duplicates);
    fake_gone(&f[1]);
    ASSERT_EQ(0, (int)hub_teardown(f, 2));
    PASS();
}

TEST reliable_message_edge_cases(void) {
    fake f[3];
    int i;
    ASSERT_EQ(WSCH_OK, setup(5));
    /* No session: acked each time, not deduplicated (documented). */
    ASSERT(fake_open(&f[0], "ann"));
    for (i = 0; i < 2; i++) {
        ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"echo\",\"payload\":1,\"id\":1}"));
        ASSERT(is_type(fake_text(&f[0]), "echo"));
        ASSERT_EQ(1, (int)payload_int(fake_text(&f[0]), "id"));
    }
    /* Bad ids are refused before anything is applied. */
    {
        static const char *const bad[] = {"0", "-1", "1.5", "\"7\"", "9007199254740993", "null"};
        for (i = 0; i < 6; i++) {
            char msg[128];
            snprintf(msg, sizeof msg, "{\"type\":\"echo\",\"payload\":1,\"id\":%s}", bad[i]);
            ASSERT_EQ(WSCH_OK, fake_say(&f[0], msg));
            ASSERT_STR_EQ("bad_id", str_of(fake_text(&f[0]), "code", 1));
        }
        ASSERT_EQ(2, T.messages);
    }
    /* An id on a hub-handled type is ignored; a repeated "id" is a bad envelope. */
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"ping\",\"id\":5}"));
    ASSERT_STR_EQ("{\"type\":\"pong\"}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"echo\",\"id\":5,\"id\":6}"));
    ASSERT_STR_EQ("bad_envelope", str_of(fake_text(&f[0]), "code", 1));
    /* Malformed sessions are refused at the upgrade (they would lose their deduplication). */
    (void)fake_request(&f[1], "/ws?token=ann&session=a%20b", NULL);
    ASSERT_EQ(400, fake_status(&f[1]));
    (void)fake_request(&f[2], "/ws?token=ann&session=0123456789012345678901234567890123456789012345678901234567890123x",
                       NULL);
    ASSERT_EQ(400, fake_status(&f[2]));
    for (i = 0; i < 3; i++) fake_gone(&f[i]);
    ASSERT_EQ(0, (int)hub_teardown(f, 3));
    PASS();
}

TEST sessions_expire_and_are_bounded(void) {
    fake f[4];
    reset_knobs();
    H_max_sessions = 2;
    ASSERT_EQ(WSCH_OK, setup(5));
    ASSERT_EQ(WSCH_OK, fake_request(&f[0], "/ws?token=ann&session=a", NULL));
    ASSERT_EQ(WSCH_OK, fake_say(&f[0], "{\"type\":\"echo\",\"payload\":1,\"id\":1}"));
    ASSERT_EQ(WSCH_OK, fake_request(&f[1], "/ws?token=ben&session=b", NULL));
    /* Both live: a third session cannot be had. */
    (void)fake_request(&f[2], "/ws?token=cat&session=c", NULL);
    ASSERT_EQ(503, fake_status(&f[2]));
    fake_gone(&f[2]);
    /* a goes idle; past the ttl (5 minutes by default) it is forgotten when
       another session arrives, and its ids with it: a resend is applied
       again (at least once, as documented). */
    fake_gone(&f[0]);
    T.now += WSCH_HUB_DEFAULT_SESSION_TTL_MS;
    ASSERT_EQ(WSCH_OK, fake_request(&f[2], "/ws?token=cat&session=c", NULL));
    ASSERT_EQ(101, fake_status(&f[2]));
    ASSERT_EQ(2, (int)stats().sessions);
    (void)fake_request(&f[3], "/ws?token=ann&session=a", NULL);
    ASSERT_EQ(503, fake_status(&f[3]));     /* b and c are live */
    fake_gone(&f[3]);
    fake_gone(&f[1]);
    ASSERT_EQ(WSCH_OK, fake_request(&f[3], "/ws?token=ann&session=a", NULL));
    ASSERT_EQ(101, fake_status(&f[3]));     /* b, idle, made room */
    ASSERT_EQ(WSCH_OK, fake_say(&f[3], "{\"type\":\"echo\",\"payload\":1,\"id\":1}"));
    ASSERT(is_type(fake_text(&f[3]), "echo"));
    ASSERT_EQ(2, T.messages);
    fake_gone(&f[2]);
    fake_gone(&f[3]);
    ASSERT_EQ(0, (int)hub_teardown(f, 4));
    reset_knobs();
    PASS();
}

TEST refuse_outside_a_message_is_a_plain_error(void) {
    fake f[1];
    ASSERT_EQ(WSCH_OK, setup(0));
    ASSERT(fake_open(&f[0], "ann"));
    ASSERT_EQ(WSCH_OK, wsch_hub_refuse(T.hub, f[0].h, "k", "m"));
    ASSERT_STR_EQ("{\"type\":\"error\",\"payload\":{\"code\":\"k\",\"message\":\"m\"}}", fake_text(&f[0]));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_refuse(T.hub, f[0].h, "\xff", "m"));
    ASSERT_EQ(WSCH_ERR_ARG, wsch_hub_refuse(T.hub, f[0].h, NULL, "m"));
    fake_gone(&f[0]);
    ASSERT_EQ(WSCH_ERR_STALE, wsch_hub_refuse(T.hub, f[0].h, "k", "m"));
    ASSERT_EQ(0, (int)hub_teardown(f, 1));
    PASS();
}

/* ---- memory -------------------------------------------------------------------- */

static int history_scenario(long fail_at, int *hit) {
    fake f[3];
    size_t i;
    int r;
    reset_knobs();
    H_outbound = 4096;
    if (setup(8) != WSCH_OK) {
        *hit = 1;
        return T.mem.live_bytes == 0;
    }
    T.mem.fail_at = (size_t)fail_at;
    T.mem.allocs = 0;
    for (i = 0; i < 3; i++) {
        r = fake_accept(&f[i]);
        if (r == WSCH_ERR_NOMEM && !wsch_hub_peer_valid(T.hub, f[i].h)) continue;
        if (r != WSCH_OK) return 0;
        (void)fake_upgrade(&f[i], i ? "/ws?token=ann&session=x1" : "/ws?token=ben", NULL);
    }
    for (i = 0; i < 12; i++) {
        r = publish(i % 3 ? "a" : "b", (int)i);
        if (r != WSCH_OK && r != WSCH_ERR_NOMEM) return 0;
    }
    if (wsch_hub_peer_valid(T.hub, f[1].h)) {
        f[1].take = 0;
        (void)fake_say(&f[1], "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"a\",\"history\":8}}");
        (void)fake_say(&f[1], "{\"type\":\"echo\",\"payload\":1,\"id\":1}");
        (void)fake_say(&f[1], "{\"type\":\"echo\",\"payload\":1,\"id\":1}");
        f[1].take = FAKE_ALL;
        (void)wsch_hub_writable(T.hub, f[1].h);
    }
    if (wsch_hub_peer_valid(T.hub, f[2].h)) recover(&f[2], "b", 1, "0000000000000000");
    T.now += 400000;
    (void)publish("c", 1);
    for (i = 0; i < 3; i++) fake_gone(&f[i]);
    *hit = T.mem.failed > 0;
    return hub_teardown(f, 3) == 0;
}

TEST failing_allocator_never_leaks_history(void) {
    long tried;
    CHECK_CALL(refuse_each_allocation(history_scenario, 2000, "history scenario", &tried));
    reset_knobs();
    PASS();
}

SUITE(history) {
    RUN_TEST(every_channel_message_carries_its_position);
    RUN_TEST(history_needs_a_clock_and_randomness);
    RUN_TEST(recover_replays_what_was_missed_in_order);
    RUN_TEST(recover_says_false_whenever_it_cannot);
    RUN_TEST(without_history_recover_is_false_and_positions_absent);
    RUN_TEST(history_request_gives_the_last_k);
    RUN_TEST(history_limits_by_count_age_and_bytes);
    RUN_TEST(replay_is_paced_by_the_peers_queue);
    RUN_TEST(history_evicted_under_a_replay_ends_it_unrecovered);
    RUN_TEST(reliable_messages_are_acked_once_and_applied_once);
    RUN_TEST(reliable_message_edge_cases);
    RUN_TEST(sessions_expire_and_are_bounded);
    RUN_TEST(refuse_outside_a_message_is_a_plain_error);
    RUN_TEST(failing_allocator_never_leaks_history);
}

GREATEST_MAIN_DEFS();

int main(int argc, char **argv) {
    GREATEST_MAIN_BEGIN();
    RUN_SUITE(history);
    GREATEST_MAIN_END();
}
