/* The hub (wsch_hub) driven by a fuzz-chosen sequence of events on up to
   four transports, with the server-side calls mixed in, and optionally a
   bridge to other processes whose answers come at fuzz-chosen times.

     bytes 0-1  configuration (limits, reject_with_http, idle timeout);
                byte 1's top bit adds a bridge, configured by byte 2;
                byte 1 & 0x41 == 0x40 adds presence, configured by the
                next byte
     rest       operations (see hb_step)

   After every step, against the hub's own queries: every live peer's
   subscriptions add up to stats.subscriptions and to the channel sizes (so
   no subscription outlives its peer), no peer exceeds
   max_channels_per_peer, a peer that is not open has none; the peer and
   open counts match the transports; bytes_queued is the sum of the queues;
   each peer's on_connect and on_disconnect come once each and in that
   order; wsch_hub_peer_want() asks for WRITE exactly while bytes are queued
   and is 0 once close() has run. Every transport: close() exactly once on
   every path (the hub's own closes, the caller's transport_closed(), a
   hard send error, shutdown, destroy), after on_disconnect and every timer
   cancelled, and nothing at all after it; the handle is stale as soon as
   close() has run (every call refused, a late transport_closed() too), and
   transport_closed() from inside close() does nothing. Destroy calls
   close() for the peers still open and nothing else. Everything the hub
   writes after its 101 parses as server frames whose text messages are
   valid envelopes, and the channel messages among them (top-level channel,
   offset, epoch) reach each peer with offsets that strictly increase per
   (peer, channel, epoch): no duplicate, no reordering (a new subscription
   after an unsubscribe starts afresh). At the end every allocation is
   freed.

   The bridge (byte 1 & 0x80; inputs without it mean what they always did).
   Byte 2: 0x01 shared positions (append and fetch; history_size 1 + bits
   4-6, now_ms on, unless 0x08 leaves history to byte 1, so append may be
   set without history), 0x02 positions without history (no append) or
   the default ttl (with append), 0x04 the default history_max_bytes. The
   bridge records interest (subscribe/unsubscribe), echoes what is
   published back into one FIFO to this hub like Redis pub/sub, and with
   shared positions keeps a store modelled on tests/test_bridge.c's: append
   records a ticket, answered later (numbered, kept, queued to the hub if
   it listens, then appended()), fetch records a request, answered later
   from the store. Operations 18-25 (only with a bridge) deliver (the FIFO's
   head, a kept message again, a numbered message with a fuzz-chosen
   offset and epoch, raw bytes, an unnumbered message, the head on another
   name), answer appends (OK, failure, numbered but failed, bogus tickets)
   and fetches (from the store, failure, empty, fuzz-chosen epoch /
   last_offset / messages, malformed), resubscribe (the link lost or not),
   make the store lose everything (a new epoch) or lose messages to this
   hub (a gap), toggle refusals, and have a client publish (reliable or not)
   through on_message. Bridge invariants: the callbacks never run inside
   destroy and get NUL-terminated names; subscribe and unsubscribe
   alternate per name (resubscribe replays) and the names held are
   stats.bridge_channels; publish and append get a well-formed bridge
   message from one origin, append's envelope carries its channel and no
   position, and under shared positions channels never go to publish;
   fetch only for a name the bridge listens to; the stats.bridge_*
   counters never decrease; a broadcast under shared positions delivers
   nothing itself; wsch_hub_channel_position()'s offset under shared
   positions never exceeds the highest offset anyone (the store, or a
   forged message or answer) gave that channel and epoch, and kept never
   exceeds history_size. A forged or misrouted message (a lying bridge)
   lets the hub legitimately repeat itself, so it restarts the per-peer
   order check for that channel from that point of each peer's stream.

   Presence (byte 1 & 0x41 == 0x40: history's bit without the clock's,
   which meant nothing; inputs without it mean what they always did). The
   next byte (after byte 2 with a bridge) configures it: 0x01 now_ms (always
   with a bridge), 0x02 history (size 4, as byte 1's would), bits 2-3
   presence_max_members 1-3 (0: the default), 0x10 presence_stats_interval_ms
   2500 (else 300), 0x20 max_presence_info_len 12 (else 256), 0x40
   presence_ttl_ms 6000 (else 30000), 0x80 authenticate gives each
   connection info. With presence, slot 3's query token is a user id that is
   not UTF-8. Its operations follow the others (18 on, 26 with a bridge):
   wsch_hub_flush(), a client's presence message (subscribe with
   "presence":true plain, with recover or history, or "presence" not true;
   "presence" and "presence_stats" requests on any channel, forbidden
   "secret" and invalid names; malformed ones), wsch_hub_set_presence_info()
   (good, malformed, one byte too long, exactly as long as allowed, cleared,
   not UTF-8), the clock 50 ms to 3.2 s on; with a bridge, another hub's
   "wschp" message (joins, leaves, both in either order, sync; members with
   this hub's ids or others, escaped, UTF-8, empty, not strings, U+0000, ids
   of max_user_id_len and one more, connections absent, 1, 2^32 - 1, 0,
   2^32, negative, fractional, strings, 1e2, info up to and past
   max_presence_info_len; malformed bodies and raw bytes; from two other
   origins, this hub's own, malformed ones), and one of this hub's own
   presence messages back as another hub's. The bridge FIFO echoes what the
   hub publishes, so its own presence comes back too.
   Presence invariants, after every step, for every channel: the calls of
   wsch_hub_presence_each are the users of wsch_hub_presence_counts and
   their connections add up to its connections; each member once, UTF-8,
   connections >= 1, info valid JSON within max_presence_info_len. Without a
   bridge the members are exactly the distinct authenticated UTF-8 user ids
   among the peers subscribed there (pending ones included, closed ones
   not), each with that many connections. With one, every such user is a
   member, and (unless the model lost track: an allocation failure in a
   delivery, raw bytes) the members are exactly those and other hubs' users
   as a model of what each origin said has them (joins before leaves, each
   well-formed member applied, malformed ones skipped, the answer the
   model's), connections added up, forgotten when the hub's refresh
   (mirrored: armed at the first flush, every presence_ttl_ms / 3) finds
   them unsaid for presence_ttl_ms, and all of a channel's gone when the
   channel is (bridge unsubscribe); stats.presence_remote is the model's
   count. on_presence: the member set seen through the getters inside it
   already says the join or leave, and joins minus leaves per (channel,
   user) is 0 or 1 and is membership. stats.presence_members >= the users
   summed; the presence counters never decrease (remote and in stay 0
   without a bridge, all stay 0 without presence). What a client receives
   is read as a client does, per (peer, channel): a confirmation carrying
   "presence" (the list) or "presence_stats" (counts) gives the view its
   base; "presence_diff" joins only users it lacks and leaves only users it
   holds, and only to a view holding the list (a diff to a view without a
   base only after an allocation failure); "presence" replaces it;
   "presence_stats" with "listed":false turns it to counts, with true (an
   answer) changes nothing; "unsubscribed" or a server-side unsubscribe
   ends it. After every flush without an allocation failure, each presence
   subscriber that is open and has everything (nothing queued) holds
   exactly the hub's members with their info when the channel is under the
   cap (presence_max_members users and a list within max_message_size), and
   counts over it (without a bridge, when flush says nothing waits).
   wsch_hub_flush() returns 0 or at most presence_stats_interval_ms (at most
   1 without a clock), with a bridge 1 to presence_ttl_ms / 3. What the hub
   publishes as presence starts "wschp " + its origin, on a channel's name,
   within max_message_size, with one array (joins of {"user","connections"
   >= 1[,"info"]}, at least one unless a sync; or leaves of {"user"}),
   "sync":true only with joins, and after a flush without failures it has
   said joined exactly the users it has (one too long to say alone aside).
   The four issues it found (P1-P4 in fuzz/README.md) are fixed and
   checked like everything else. */
#include "fuzz.h"

/* -DHB_TRACE prints every operation (for reading a reproducer). */
#ifdef HB_TRACE
#define HB_T(...) fprintf(stderr, __VA_ARGS__)
#else
#define HB_T(...) ((void)0)
#endif

#define HB_SLOTS 4
#define HB_OUT_CAP 65536

/* Every channel name the script can use: the invariants look at all of them. */
#define HB_NCH 17
static const char *const hb_channels[HB_NCH] = {"a",  "b",  "news", "secret", "", "bad channel", "x.y:z/1", "c0", "c1",
                                                "c2", "c3", "c4",   "c5",     "c6", "c7", "c8", "c9"};

#define HB_EPOCHS 8     /* epochs remembered per (peer, channel) and per channel */
#define HB_RESETS 16    /* order-check restarts waiting in one peer's stream */

/* What one peer has seen of one channel: the last offset per epoch. */
typedef struct hb_seen {
    char epoch[HB_EPOCHS][WSCH_HUB_EPOCH_LEN + 1];
    uint64_t last[HB_EPOCHS];
    unsigned n;
} hb_seen;

/* Presence: what a presence subscriber holds of one channel, built from
   what it receives (a model of a client's view): the member list (hashes of
   each unescaped user id and of its raw info), or only counts. */
#define HB_VMAX 24
typedef struct hb_view {
    int active;                 /* a confirmation carrying presence came: the view has a base */
    int listed;                 /* holds the member list (else counts) */
    int over;                   /* more members than HB_VMAX: not checked until the next whole list */
    unsigned n;
    uint64_t user[HB_VMAX], info[HB_VMAX];
    int64_t users, conns;       /* the last counts */
} hb_view;

typedef struct hb_slot {
    struct hb_world *w;
    int used;                   /* accepted, and close() has not run yet */
    wsch_hub_peer h;
    int close_asked;            /* the hub called close(): nothing may follow, the handle is stale */
    int stale_checked;          /* the stale handle was tried everywhere */
    unsigned send_mode;
    int send_failed;            /* send() reported WSCH_SEND_ERROR: the peer must be gone */
    uint32_t timers;
    int connected, disconnected;
    unsigned char out[HB_OUT_CAP];
    size_t out_len, parsed;     /* bytes written; parse position (after the head) */
    int head_done, out_lost;
    int in_progress;            /* a message fragment left open by the hub */
    hb_seen seen[HB_NCH];       /* channel messages received, per channel */
    struct {
        size_t at;              /* stream position: frames from here on start afresh */
        int ch;                 /* index in hb_channels */
        int unsub;              /* a server-side unsubscribe: the presence view ends there too */
    } resets[HB_RESETS];
    unsigned nresets;
    int lax;                    /* too many restarts pending: no order check for this peer */
    unsigned next_id;           /* reliable messages ("id") sent by op 24 */
    /* Presence (all 0 without it). */
    int has_uid;                /* authenticate gave it a user id: uid */
    unsigned char uid;
    hb_view view[HB_NCH];
} hb_slot;

/* ---- the bridge's side: a pub/sub link and a store ------------------------ */

#define HB_MSG_CAP 640          /* a bridge message the model carries (larger: refused) */
#define HB_NAME_CAP 300
#define HB_QCAP 32              /* messages on their way to this hub */
#define HB_KEEP 8               /* messages the store keeps per channel */
#define HB_TICKETS 16           /* appends not answered yet */
#define HB_FETCHES 16           /* fetches not answered yet */
#define HB_NAMES 48             /* bridge channels listened to */

typedef struct hb_msg {
    char name[HB_NAME_CAP];
    size_t name_len;
    char data[HB_MSG_CAP];
    size_t len;
} hb_msg;

/* A channel in the store (hb_channels[j] is its name): like the Redis
   script, an offset, an epoch ("" until the first message after a loss)
   and the last HB_KEEP messages, offset o at o % HB_KEEP. */
typedef struct hb_store_ch {
    uint64_t offset;
    char epoch[WSCH_HUB_EPOCH_LEN + 1];
    char kept[HB_KEEP][HB_MSG_CAP];
    size_t kept_len[HB_KEEP];
} hb_store_ch;

/* The highest offset anyone gave (channel, epoch): the store by numbering,
   or the script by a forged message or fetch answer. */
typedef struct hb_high {
    char epoch[WSCH_HUB_EPOCH_LEN + 1];
    uint64_t max;
} hb_high;

#define HB_BAL 96              /* (channel, user) pairs on_presence told of */
#define HB_RMAX 24              /* other hubs' members per channel in the model */
#define HB_PMSG_CAP 2048        /* a presence message of this hub kept for replay */
#define HB_OWN 4

/* Another hub's user in a channel, as that hub said: its origin, the
   user id's hash, the connections said and when it is forgotten. */
typedef struct hb_remote {
    uint64_t origin, user;
    uint32_t conns, expires;
} hb_remote;

typedef struct hb_world {
    wsch_hub *hub;
    wsch_hub_desc desc;
    fz_alloc al;
    hb_slot slot[HB_SLOTS];
    uint64_t now;
    uint32_t rng;
    int shut;
    int destroying;             /* inside wsch_hub_destroy(): close() is the only callback */
    int reenter;                /* close() calls wsch_hub_transport_closed() (a no-op) */
    unsigned accepted, closes;  /* transports handed over, close() calls */
    /* The bridge (all 0 without one). */
    int bridged, shared;        /* desc.bridge set; shared positions in effect */
    int in_resub;               /* inside wsch_hub_bridge_resubscribe(): subscribe may repeat */
    int deaf;                   /* the link to this hub is down: what is published is lost */
    int fail_publish, fail_append, fail_fetch;
    char origin[WSCH_HUB_EPOCH_LEN + 1]; /* the hub's origin id, from its first message */
    char names[HB_NAMES][HB_NAME_CAP];   /* what the bridge listens to for this hub */
    size_t name_lens[HB_NAMES];
    unsigned nnames;
    int names_lost;             /* a name did not fit: the count is not checked any more */
    hb_msg q[HB_QCAP];          /* FIFO to this hub */
    unsigned qhead, qlen;
    hb_store_ch store[HB_NCH];
    unsigned store_epochs;
    struct {
        uint64_t ticket;
        int ch;
        char data[HB_MSG_CAP];
        size_t len;
    } tickets[HB_TICKETS];
    unsigned ntickets;
    uint64_t last_ticket;       /* the last one answered (op 21 may answer it again) */
    struct {
        char name[HB_NAME_CAP];
        size_t len;
        size_t count;
    } fetches[HB_FETCHES];
    unsigned nfetches;
    hb_high high[HB_NCH][HB_EPOCHS];
    unsigned nhigh[HB_NCH];
    int wild[HB_NCH];           /* raw bytes with a position nobody can read were taken: no bound */
    wsch_hub_counters last;     /* stats after the previous step */
    /* Presence (all 0 without it: byte 1's history bit without its clock bit). */
    int presence;
    int info_in_auth;           /* authenticate gives each connection presence info */
    int flushed;                /* the step was wsch_hub_flush(): the views are checked */
    uint32_t flush_wait;        /* what it returned */
    int failed_now;             /* an allocation failed during this step */
    int failed_ever;            /* ... during any step so far */
    struct {                    /* on_presence: joins minus leaves per (channel, user) */
        int ch;
        uint64_t user;
        int balance;
    } bal[HB_BAL];
    unsigned nbal;
    int bal_lost;               /* the table was full: not checked */
    /* With a bridge: which channels exist (bridge subscribe/unsubscribe say
       it), other hubs' members as this hub must hold them, the refresh
       clock mirrored, what this hub said of its own users, and its last
       presence messages (replayed as another hub's). */
    int exists[HB_NCH];
    hb_remote rm[HB_NCH][HB_RMAX];
    unsigned nrm[HB_NCH];
    int rinexact[HB_NCH];       /* the model may be wrong (allocation failure, raw bytes) until released */
    int rstray;                 /* presence went to a channel outside hb_channels: presence_remote not checked */
    int parmed;
    uint32_t pat;               /* the next refresh (sweep) */
    signed char said[HB_NCH][256];  /* this hub's users said: 1 joined, 0 left (by the id's byte) */
    int said_unknown[HB_NCH];   /* an allocation failed in a flush since the channel came */
    struct {
        char name[HB_NAME_CAP];
        size_t name_len;
        char data[HB_PMSG_CAP];
        size_t len;
    } own[HB_OWN];
    unsigned nown, own_next;
    uint64_t p_messages, p_sent, p_in, p_expired;  /* counters after the previous step */
} hb_world;

/* ---- transport ------------------------------------------------------------ */

static void hb_alive(const hb_slot *s) {
    FZ_CHECK(s->used && !s->close_asked);
}

/* ---- what peers receive: channel messages in order ------------------------- */

/* Index of name in hb_channels, or -1. */
static int hb_channel_index(const char *name, size_t len) {
    int j;
    for (j = 0; j < HB_NCH; j++)
        if (strlen(hb_channels[j]) == len && memcmp(hb_channels[j], name, len) == 0) return j;
    return -1;
}

/* A JSON string value as the hub writes a channel name or an epoch (no
   escapes): its index among hb_channels, or -1. */
static int hb_channel_of(wsch_str v) {
    if (!v.ptr || v.len < 2 || v.ptr[0] != '"' || v.ptr[v.len - 1] != '"') return -1;
    return hb_channel_index(v.ptr + 1, v.len - 2);
}

/* 16 lowercase hex digits. */
static int hb_hex16(const char *p, size_t len) {
    size_t i;
    if (len != WSCH_HUB_EPOCH_LEN) return 0;
    for (i = 0; i < len; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return 0;
    return 1;
}

/* A decimal offset as the hub writes it. */
static int hb_uint(wsch_str v, uint64_t *out) {
    uint64_t x = 0;
    size_t i;
    if (!v.ptr || v.len == 0 || v.len > 19) return 0;
    for (i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9') return 0;
        x = x * 10u + (uint64_t)(v.ptr[i] - '0');
    }
    *out = x;
    return 1;
}

/* From the stream position of everything queued to the peer now on, the
   order check of channel ch (-1: all) starts afresh: after an unsubscribe
   the hub may replay what the peer had, and after a lying bridge it may
   repeat itself. */
static void hb_mark_reset(hb_slot *s, int ch) {
    if (!s->used || s->close_asked) return;
    if (s->nresets == HB_RESETS) {
        s->lax = 1;
        return;
    }
    s->resets[s->nresets].at = s->out_len + wsch_hub_peer_queued_bytes(s->w->hub, s->h);
    s->resets[s->nresets].ch = ch;
    s->resets[s->nresets].unsub = 0;
    s->nresets++;
}

/* A server-side unsubscribe: the order check restarts, and the presence
   view (which gets no "unsubscribed") ends, at that point of the stream. */
static void hb_mark_unsub(hb_slot *s, int ch) {
    hb_mark_reset(s, ch);
    if (s->nresets && !s->lax && s->resets[s->nresets - 1u].ch == ch) s->resets[s->nresets - 1u].unsub = 1;
}

static void hb_mark_reset_all(hb_world *w, int ch) {
    int i;
    for (i = 0; i < HB_SLOTS; i++) hb_mark_reset(&w->slot[i], ch);
}

static void hb_seen_clear(hb_slot *s, int ch) {
    int j;
    for (j = 0; j < HB_NCH; j++)
        if (ch < 0 || ch == j) s->seen[j].n = 0;
}

static uint64_t hb_high_get(const hb_world *w, int j, const char *epoch);

/* One text message the peer received (a valid envelope). */
static void hb_seen_message(hb_slot *s, const char *p, size_t len, const wsch_envelope *env) {
    static const char *const keys[3] = {"channel", "offset", "epoch"};
    wsch_str whole, v[3];
    uint64_t offset;
    hb_seen *t;
    unsigned i;
    int j;
    if (wsch_envelope_type_is(env, "unsubscribed")) {
        /* In the stream's order: a subscription after it may replay. */
        if (wsch_envelope_get_members(env, keys, 1, v) == WSCH_OK && (j = hb_channel_of(v[0])) >= 0)
            hb_seen_clear(s, j);
        return;
    }
    whole.ptr = p;
    whole.len = len;
    FZ_CHECK(wsch_json_get_members(whole, keys, 3, v) == WSCH_OK);
    if (!v[1].ptr && !v[2].ptr) return;                 /* not a positioned channel message */
    FZ_CHECK(v[0].ptr && v[1].ptr && v[2].ptr);         /* a position comes whole, with its channel */
    FZ_CHECK(hb_uint(v[1], &offset) && offset >= 1);
    FZ_CHECK(v[2].len == WSCH_HUB_EPOCH_LEN + 2u && v[2].ptr[0] == '"' && hb_hex16(v[2].ptr + 1, WSCH_HUB_EPOCH_LEN));
    j = hb_channel_of(v[0]);
    if (j < 0) return;                                  /* a name only raw bytes use */
    if (s->w->shared && !s->w->wild[j]) {
        /* Under shared positions only the bridge numbers (the bound only grows: checking late is fine). */
        char ep[WSCH_HUB_EPOCH_LEN + 1];
        memcpy(ep, v[2].ptr + 1, WSCH_HUB_EPOCH_LEN);
        ep[WSCH_HUB_EPOCH_LEN] = '\0';
        FZ_CHECK(offset <= hb_high_get(s->w, j, ep));
    }
    if (s->lax) return;
    t = &s->seen[j];
    for (i = 0; i < t->n; i++)
        if (memcmp(t->epoch[i], v[2].ptr + 1, WSCH_HUB_EPOCH_LEN) == 0) break;
    HB_T("  slot %d got %s %.*s:%llu\n", (int)(s - s->w->slot), hb_channels[j], 16, v[2].ptr + 1,
         (unsigned long long)offset);
    if (i < t->n) {
        FZ_CHECK(offset > t->last[i]);                  /* no duplicate, no reordering */
        t->last[i] = offset;
        return;
    }
    if (t->n == HB_EPOCHS) {                            /* forget the oldest: fewer checks, never a false one */
        memmove(t->epoch[0], t->epoch[1], sizeof t->epoch[0] * (HB_EPOCHS - 1u));
        memmove(&t->last[0], &t->last[1], sizeof t->last[0] * (HB_EPOCHS - 1u));
        t->n--;
    }
    memcpy(t->epoch[t->n], v[2].ptr + 1, WSCH_HUB_EPOCH_LEN);
    t->epoch[t->n][WSCH_HUB_EPOCH_LEN] = '\0';
    t->last[t->n++] = offset;
}

/* Restarts whose stream position the parse has reached. */
static void hb_apply_resets(hb_slot *s) {
    unsigned i = 0;
    while (i < s->nresets) {
        if (s->resets[i].at <= s->parsed) {
            hb_seen_clear(s, s->resets[i].ch);
            if (s->resets[i].unsub && s->resets[i].ch >= 0) s->view[s->resets[i].ch].active = 0;
            s->resets[i] = s->resets[--s->nresets];
        } else {
            i++;
        }
    }
}

/* ---- what presence subscribers receive: a view per (peer, channel) ------- */

static uint64_t hb_h(const void *p, size_t n) { return fz_hash(FZ_HASH_INIT, p, n); }

/* desc.max_presence_info_len of the hub under test (info longer is never shown). */
static size_t hb_info_max;

/* {"user":U[,"connections":N][,"info":I]} as the hub writes one: the
   hash of U unescaped, of I's raw text ("" when none); conns_too: N is
   there (a member list), else it is not (a diff). */
static void hb_p_read_member(wsch_str m, int conns_too, uint64_t *user, uint64_t *info) {
    static const char *const keys[3] = {"user", "connections", "info"};
    wsch_str v[3];
    char id[300];
    size_t n;
    int64_t c;
    FZ_CHECK(wsch_json_get_members(m, keys, 3, v) == WSCH_OK);
    FZ_CHECK(v[0].ptr && v[0].ptr[0] == '"' && wsch_json_unescape_string(v[0], id, sizeof id, &n) == WSCH_OK);
    FZ_CHECK(n >= 1 && !memchr(id, 0, n) && wsch_utf8_valid(id, n));
    if (!conns_too) FZ_CHECK(!v[1].ptr);
    /* 0: a member as last sent that has left since (its leave follows) */
    else if (v[1].ptr) FZ_CHECK(wsch_json_get_int(m, "connections", &c) == WSCH_OK && c >= 0);
    else FZ_CHECK(v[1].ptr != NULL);                    /* a member list element without "connections" (P2) */
    if (v[2].ptr) FZ_CHECK(v[2].len >= 1 && v[2].len <= hb_info_max);
    *user = hb_h(id, n);
    *info = v[2].ptr ? hb_h(v[2].ptr, v[2].len) : hb_h("", 0);
}

static int hb_view_find(const hb_view *v, uint64_t user) {
    unsigned i;
    for (i = 0; i < v->n; i++)
        if (v->user[i] == user) return (int)i;
    return -1;
}

/* A whole member list replaces the view; into NULL: only checked. */
static void hb_view_list(hb_view *v, wsch_str arr) {
    size_t pos = 0;
    wsch_str m;
    hb_view t;
    memset(&t, 0, sizeof t);
    FZ_CHECK(arr.ptr && arr.ptr[0] == '[');
    while (wsch_json_array_next(arr, &pos, &m) == WSCH_OK) {
        uint64_t u, in;
        hb_p_read_member(m, 1, &u, &in);
        FZ_CHECK(hb_view_find(&t, u) < 0);              /* a user once */
        if (t.n == HB_VMAX) {
            t.over = 1;
            continue;
        }
        t.user[t.n] = u;
        t.info[t.n++] = in;
    }
    if (!v) return;
    t.active = t.listed = 1;
    *v = t;
}

/* A diff applied: every join new, every leave one held. */
static void hb_view_diff(hb_view *v, wsch_str joins, wsch_str leaves) {
    size_t pos = 0;
    wsch_str m;
    FZ_CHECK(joins.ptr && joins.ptr[0] == '[' && leaves.ptr && leaves.ptr[0] == '[');
    while (wsch_json_array_next(joins, &pos, &m) == WSCH_OK) {
        uint64_t u, in;
        hb_p_read_member(m, 0, &u, &in);
        if (!v || v->over) continue;
        FZ_CHECK(hb_view_find(v, u) < 0);               /* a join of a member: the diff does not follow from the view */
        if (v->n == HB_VMAX) {
            v->over = 1;
            continue;
        }
        v->user[v->n] = u;
        v->info[v->n++] = in;
    }
    pos = 0;
    while (wsch_json_array_next(leaves, &pos, &m) == WSCH_OK) {
        static const char *const keys[3] = {"user", "connections", "info"};
        wsch_str f[3];
        char id[300];
        size_t n;
        int i;
        FZ_CHECK(wsch_json_get_members(m, keys, 3, f) == WSCH_OK && !f[1].ptr && !f[2].ptr);
        FZ_CHECK(f[0].ptr && wsch_json_unescape_string(f[0], id, sizeof id, &n) == WSCH_OK && n >= 1);
        if (!v || v->over) continue;
        i = hb_view_find(v, hb_h(id, n));
        FZ_CHECK(i >= 0);                               /* a leave of someone the view does not hold */
        v->n--;
        v->user[i] = v->user[v->n];
        v->info[i] = v->info[v->n];
    }
}

/* {"users":N,"connections":M[,"listed":B]}: counts; listed (when given) 1 or 0. */
static void hb_view_counts(wsch_str obj, int64_t *users, int64_t *conns, int *listed) {
    static const char *const keys[3] = {"users", "connections", "listed"};
    wsch_str v[3];
    FZ_CHECK(wsch_json_get_members(obj, keys, 3, v) == WSCH_OK);
    FZ_CHECK(wsch_json_get_int(obj, "users", users) == WSCH_OK && *users >= 0);
    FZ_CHECK(wsch_json_get_int(obj, "connections", conns) == WSCH_OK && *conns >= *users);
    *listed = -1;
    if (v[2].ptr) {
        FZ_CHECK((v[2].len == 4 && memcmp(v[2].ptr, "true", 4) == 0) || (v[2].len == 5 && memcmp(v[2].ptr, "false", 5) == 0));
        *listed = v[2].len == 4;
    }
}

/* One text message a peer received, as a presence client reads it. */
static void hb_p_message(hb_slot *s, const wsch_envelope *env) {
    static const char *const keys[6] = {"channel", "presence", "presence_stats", "members", "joins", "leaves"};
    wsch_str v[6];
    hb_view *view;
    int j, sub = wsch_envelope_type_is(env, "subscribed"), unsub = wsch_envelope_type_is(env, "unsubscribed");
    int diff = wsch_envelope_type_is(env, "presence_diff"), list = wsch_envelope_type_is(env, "presence");
    int stats = wsch_envelope_type_is(env, "presence_stats");
    int64_t users, conns;
    int listed;
    if (!sub && !unsub && !diff && !list && !stats) return;
    FZ_CHECK(wsch_envelope_get_members(env, keys, 6, v) == WSCH_OK);
    FZ_CHECK(v[0].ptr != NULL);
    j = hb_channel_of(v[0]);
    view = j >= 0 ? &s->view[j] : NULL;
    if (unsub) {
        if (view) view->active = 0;
        return;
    }
    if (sub) {
        /* A confirmation without presence (a repeated one, or one under
           shared positions saying what was lost) leaves the view alone. */
        FZ_CHECK(!(v[1].ptr && v[2].ptr));
        if (v[1].ptr) {
            HB_T("  slot %d: %s confirmed with the member list\n", (int)(s - s->w->slot), j >= 0 ? hb_channels[j] : "?");
            hb_view_list(view, v[1]);
        } else if (v[2].ptr) {
            hb_view_counts(v[2], &users, &conns, &listed);
            FZ_CHECK(listed < 0);
            if (view) {
                memset(view, 0, sizeof *view);
                view->active = 1;
                view->users = users;
                view->conns = conns;
            }
        }
        return;
    }
    if (diff) {
        HB_T("  slot %d: presence_diff %s\n", (int)(s - s->w->slot), j >= 0 ? hb_channels[j] : "?");
        if (view && !view->active) {
            /* Only a subscription whose confirmation carried no presence
               (no memory for it) may get diffs without a base. */
            FZ_CHECK(s->w->failed_ever);
            view = NULL;
        }
        if (view) FZ_CHECK(view->listed);               /* a diff to a view holding counts */
        hb_view_diff(view, v[4], v[5]);
        return;
    }
    if (list) {
        /* The hub's list (a change, or the answer to a request): as last
           sent, so it is what a listed view holds already. */
        HB_T("  slot %d: presence list %s\n", (int)(s - s->w->slot), j >= 0 ? hb_channels[j] : "?");
        hb_view_list(view && view->active ? view : NULL, v[3]);
        return;
    }
    hb_view_counts(env->payload, &users, &conns, &listed);
    FZ_CHECK(listed >= 0);
    HB_T("  slot %d: presence_stats %s users %lld listed %d\n", (int)(s - s->w->slot), j >= 0 ? hb_channels[j] : "?",
         (long long)users, listed);
    if (view && view->active && !listed) {              /* listed: an answer to a request, nothing changes */
        memset(view, 0, sizeof *view);
        view->active = 1;
        view->users = users;
        view->conns = conns;
    }
}

/* Checks the server frames that arrived since the last call. */
static void hb_parse(hb_slot *s) {
    if (!s->head_done) {
        unsigned char *e;
        if (s->out_len < 4) return;
        e = (unsigned char *)memmem(s->out, s->out_len, "\r\n\r\n", 4);
        if (!e) return;
        if (memcmp(s->out, "HTTP/1.1 101", 12) != 0) { /* a refusal: no frames follow */
            s->out_lost = 1;
            return;
        }
        s->head_done = 1;
        s->parsed = (size_t)(e + 4 - s->out);
    }
    while (!s->out_lost && s->parsed < s->out_len) {
        wsch_frame_header fh;
        size_t hl;
        int rc = wsch_frame_header_decode(s->out + s->parsed, s->out_len - s->parsed, &fh, &hl);
        if (rc == WSCH_INCOMPLETE) return;
        FZ_CHECK(rc == WSCH_OK);
        FZ_CHECK(!fh.masked && fh.rsv == 0);
        if (fh.payload_len > s->out_len - s->parsed - hl) return;
        hb_apply_resets(s);
        if (fh.opcode == WSCH_OP_TEXT) {
            wsch_envelope env;
            const char *p = (const char *)s->out + s->parsed + hl;
            FZ_CHECK(fh.fin); /* the hub sends whole messages */
            FZ_CHECK(wsch_envelope_decode(p, (size_t)fh.payload_len, &env) == WSCH_OK);
            hb_seen_message(s, p, (size_t)fh.payload_len, &env);
            if (s->w->presence) hb_p_message(s, &env);
        } else {
            FZ_CHECK(fh.opcode == WSCH_OP_CLOSE || fh.opcode == WSCH_OP_PING || fh.opcode == WSCH_OP_PONG);
        }
        s->parsed += hl + (size_t)fh.payload_len;
    }
}

static size_t hb_send(const void *data, size_t len, void *user) {
    hb_slot *s = (hb_slot *)user;
    size_t n = len;
    hb_alive(s);
    FZ_CHECK(!s->w->destroying);
    switch (s->send_mode) {
    case 1: n = len < 9 ? len : 9; break;
    case 2: n = 0; break; /* a peer that never reads */
    case 3: /* a broken transport: the peer ends at once */
        s->send_failed = 1;
        return WSCH_SEND_ERROR;
    default: break;
    }
    if (s->out_len + n <= HB_OUT_CAP) {
        memcpy(s->out + s->out_len, data, n);
        s->out_len += n;
    } else {
        s->out_lost = 1;
    }
    return n;
}

/* The last callback about a transport, once. The peer is released with it. */
static void hb_close(void *user) {
    hb_slot *s = (hb_slot *)user;
    hb_world *w = s->w;
    hb_alive(s);
    if (!w->destroying) {
        FZ_CHECK(s->timers == 0);                   /* cancelled before */
        FZ_CHECK(!s->connected || s->disconnected); /* on_disconnect before */
    }
    s->close_asked = 1;
    s->used = 0;
    w->closes++;
    if (w->reenter) FZ_CHECK(wsch_hub_transport_closed(w->hub, s->h) == WSCH_OK);
}

static void hb_timer_set(unsigned id, uint32_t ms, void *user) {
    hb_slot *s = (hb_slot *)user;
    hb_alive(s);
    FZ_CHECK(!s->w->destroying);
    FZ_CHECK(id == WSCH_TIMER_HANDSHAKE || id == WSCH_TIMER_CLOSE || id == WSCH_HUB_TIMER_IDLE);
    FZ_CHECK(ms > 0);
    s->timers |= 1u << id;
}

static void hb_timer_cancel(unsigned id, void *user) {
    hb_slot *s = (hb_slot *)user;
    hb_alive(s);
    FZ_CHECK(!s->w->destroying);
    FZ_CHECK(id < 32);
    s->timers &= ~(1u << id);
}

static uint64_t hb_now(void *user) { return ((hb_world *)user)->now; }

static void hb_random(void *buf, size_t len, void *user) {
    hb_world *w = (hb_world *)user;
    size_t i;
    for (i = 0; i < len; i++) {
        w->rng = w->rng * 1103515245u + 12345u;
        ((unsigned char *)buf)[i] = (unsigned char)(w->rng >> 16);
    }
}

/* ---- the bridge ----------------------------------------------------------- */

static int hb_name_find(const hb_world *w, const char *name, size_t len) {
    unsigned i;
    for (i = 0; i < w->nnames; i++)
        if (w->name_lens[i] == len && memcmp(w->names[i], name, len) == 0) return (int)i;
    return -1;
}

/* ---- presence across hubs: the model of what this hub must hold --------- */

/* A channel came (fresh: nothing of the other hubs, nothing said) or went. */
static void hb_r_clear(hb_world *w, int j) {
    w->nrm[j] = 0;
    w->rinexact[j] = 0;
    memset(w->said[j], 0, sizeof w->said[j]);
    w->said_unknown[j] = 0;
}

static int hb_r_find(const hb_world *w, int j, uint64_t origin, uint64_t user) {
    unsigned i;
    for (i = 0; i < w->nrm[j]; i++)
        if (w->rm[j][i].origin == origin && w->rm[j][i].user == user) return (int)i;
    return -1;
}

/* Another hub's user said (conns > 0) or gone (0), as the hub takes it. */
static void hb_r_set(hb_world *w, int j, uint64_t origin, uint64_t user, uint32_t conns, uint32_t expires) {
    int i = hb_r_find(w, j, origin, user);
    if (i < 0 && !conns) return;
    if (i < 0) {
        if (w->nrm[j] == HB_RMAX) {
            w->rinexact[j] = 1;
            return;
        }
        i = (int)w->nrm[j]++;
        w->rm[j][i].origin = origin;
        w->rm[j][i].user = user;
    }
    w->rm[j][i].conns = conns;
    w->rm[j][i].expires = expires;
    if (!conns) w->rm[j][i] = w->rm[j][--w->nrm[j]];
}

/* The body of another hub's presence message (origin) for channel j, read
   as the hub must read it ("presence: across processes"): what it must
   answer, and (apply: the channel exists here) each well-formed member
   applied, joins before leaves. */
static int hb_r_apply(hb_world *w, int j, uint64_t origin, wsch_str body, int apply) {
    static const char *const keys[3] = {"joins", "leaves", "sync"};
    static const char *const mkeys[3] = {"user", "connections", "info"};
    wsch_str v[3];
    uint32_t expires = (uint32_t)w->now + w->desc.presence_ttl_ms;
    int r, k, bad = WSCH_OK;
    if (body.len > w->desc.limits.max_message_size) return WSCH_ERR_TOO_LARGE;
    r = wsch_json_get_members(body, keys, 3, v);
    if (r == WSCH_ERR_NOT_FOUND || (r == WSCH_OK && ((v[0].ptr && v[0].ptr[0] != '[') || (v[1].ptr && v[1].ptr[0] != '['))))
        return WSCH_ERR_ARG;
    if (r != WSCH_OK || !apply) return r;
    for (k = 0; k < 2; k++) {
        size_t pos = 0, n;
        wsch_str elem, m[3];
        char id[300];
        while (v[k].ptr && wsch_json_array_next(v[k], &pos, &elem) == WSCH_OK) {
            int64_t conns = 1;
            if (wsch_json_get_members(elem, mkeys, 3, m) != WSCH_OK || !m[0].ptr || m[0].ptr[0] != '"' ||
                w->desc.max_user_id_len + 1u > sizeof id ||
                wsch_json_unescape_string(m[0], id, w->desc.max_user_id_len + 1u, &n) != WSCH_OK || n == 0 ||
                memchr(id, 0, n) ||
                (m[1].ptr && (wsch_json_get_int(elem, "connections", &conns) != WSCH_OK || conns < 1 || conns > 0xFFFFFFFF)) ||
                m[2].len > w->desc.max_presence_info_len) {
                bad = WSCH_ERR_ARG;
                continue;
            }
            HB_T("  model: %s %s %.*s from %016llx (%lld)\n", hb_channels[j], k ? "leaves" : "joins", (int)n, id,
                 (unsigned long long)origin, (long long)conns);
            hb_r_set(w, j, origin, hb_h(id, n), k ? 0u : (uint32_t)conns, expires);
        }
    }
    return bad;
}

/* The hub's refresh, mirrored (wsch_hub_flush): the first flush arms it;
   every presence_ttl_ms / 3 the other hubs' users not said again within
   presence_ttl_ms are forgotten. */
static void hb_r_sweep(hb_world *w) {
    uint32_t now = (uint32_t)w->now, every = w->desc.presence_ttl_ms / 3u;
    int j;
    if (!every) every = 1;
    if (!w->parmed) {
        w->parmed = 1;
        w->pat = now + every;
    }
    if ((int32_t)(now - w->pat) < 0) return;
    for (j = 0; j < HB_NCH; j++) {
        unsigned i = 0;
        while (i < w->nrm[j]) {
            if ((int32_t)(w->rm[j][i].expires - now) > 0) i++;
            else w->rm[j][i] = w->rm[j][--w->nrm[j]];
        }
    }
    w->pat = now + every;
}

/* A presence message of this hub's (publish): "wschp " + its origin + a
   body of one kind, joins ({"user":U,"connections":N[,"info":I]}, at least
   one unless it is a sync) or leaves ({"user":U}), never longer than
   max_message_size, on a channel's bridge channel. What it says of its
   users is remembered (w->said). */
static void hb_p_published(hb_world *w, const char *name, size_t len, const char *d, size_t dl) {
    static const char *const keys[3] = {"joins", "leaves", "sync"};
    static const char *const mkeys[3] = {"user", "connections", "info"};
    wsch_str body, v[3], arr, elem, m[3];
    size_t pos = 0, items = 0, n;
    char id[300];
    int j = hb_channel_index(name, len), joins;
    FZ_CHECK(w->presence);
    FZ_CHECK(dl > WSCH_HUB_BRIDGE_HEADER_LEN && d[22] == ' ' && hb_hex16(d + 6, WSCH_HUB_EPOCH_LEN));
    if (!w->origin[0]) memcpy(w->origin, d + 6, WSCH_HUB_EPOCH_LEN);
    FZ_CHECK(memcmp(w->origin, d + 6, WSCH_HUB_EPOCH_LEN) == 0);
    FZ_CHECK(len < 6 || memcmp(name, WSCH_HUB_BRIDGE_USER_PREFIX, 6) != 0);    /* a channel's, never a user's */
    body.ptr = d + WSCH_HUB_BRIDGE_HEADER_LEN;
    body.len = dl - WSCH_HUB_BRIDGE_HEADER_LEN;
    FZ_CHECK(body.len <= w->desc.limits.max_message_size);
    FZ_CHECK(wsch_json_get_members(body, keys, 3, v) == WSCH_OK);
    FZ_CHECK((v[0].ptr != NULL) != (v[1].ptr != NULL));
    joins = v[0].ptr != NULL;
    arr = joins ? v[0] : v[1];
    FZ_CHECK(arr.ptr[0] == '[');
    if (v[2].ptr) FZ_CHECK(joins && v[2].len == 4 && memcmp(v[2].ptr, "true", 4) == 0);
    while (wsch_json_array_next(arr, &pos, &elem) == WSCH_OK) {
        int64_t c;
        FZ_CHECK(wsch_json_get_members(elem, mkeys, 3, m) == WSCH_OK);
        FZ_CHECK(m[0].ptr && wsch_json_unescape_string(m[0], id, sizeof id, &n) == WSCH_OK);
        FZ_CHECK(n == 1 && (unsigned char)id[0] < 0x80);  /* one of this hub's users (ids of one byte, UTF-8) */
        if (joins) {
            FZ_CHECK(wsch_json_get_int(elem, "connections", &c) == WSCH_OK && c >= 1 && c <= HB_SLOTS);
            if (m[2].ptr) FZ_CHECK(m[2].len <= w->desc.max_presence_info_len);
        } else {
            FZ_CHECK(!m[1].ptr && !m[2].ptr);
        }
        if (j >= 0) w->said[j][(unsigned char)id[0]] = (signed char)joins;
        items++;
    }
    if (!v[2].ptr) FZ_CHECK(items >= 1);                /* only a sync goes empty */
    HB_T("  bridge presence %.*s: %s %zu%s\n", (int)len, name, joins ? "joins" : "leaves", items, v[2].ptr ? " sync" : "");
    /* Kept, to come back later as another hub's. */
    if (len < HB_NAME_CAP && dl <= HB_PMSG_CAP) {
        unsigned k = w->own_next++ % HB_OWN;
        memcpy(w->own[k].name, name, len);
        w->own[k].name_len = len;
        memcpy(w->own[k].data, d, dl);
        w->own[k].len = dl;
        if (w->nown < HB_OWN) w->nown++;
    }
}

static void hb_b_subscribe(const char *name, size_t len, void *user) {
    hb_world *w = (hb_world *)user;
    int j;
    FZ_CHECK(!w->destroying);
    FZ_CHECK(name != NULL && len > 0 && name[len] == '\0');
    HB_T("  bridge subscribe %.*s\n", (int)len, name);
    j = hb_channel_index(name, len);
    if (j >= 0 && !w->in_resub) {       /* a channel made: nothing of the others' yet */
        FZ_CHECK(!w->exists[j]);
        hb_r_clear(w, j);
    }
    if (j >= 0) w->exists[j] = 1;
    if (hb_name_find(w, name, len) >= 0) {
        FZ_CHECK(w->in_resub || w->names_lost); /* only resubscribe asks again for a name held */
        return;
    }
    if (len >= HB_NAME_CAP || w->nnames == HB_NAMES) {
        w->names_lost = 1;
        return;
    }
    memcpy(w->names[w->nnames], name, len);
    w->name_lens[w->nnames++] = len;
}

static void hb_b_unsubscribe(const char *name, size_t len, void *user) {
    hb_world *w = (hb_world *)user;
    int k;
    unsigned i;
    FZ_CHECK(!w->destroying);
    FZ_CHECK(name != NULL && len > 0 && name[len] == '\0');
    HB_T("  bridge unsubscribe %.*s\n", (int)len, name);
    k = hb_channel_index(name, len);
    if (k >= 0) {                       /* the channel is released */
        FZ_CHECK(w->exists[k]);
        w->exists[k] = 0;
        hb_r_clear(w, k);
        /* Nobody here is subscribed any more: on_presence has heard every
           member leave, other hubs' ones included (P1 in fuzz/README.md). */
        for (i = 0; i < w->nbal; i++) {
            if (w->bal[i].ch != k) continue;
            FZ_CHECK(w->bal[i].balance == 0);   /* a released channel took a member without on_presence's leave */
        }
    }
    k = hb_name_find(w, name, len);
    if (k < 0) {
        /* Not held: a resubscribe after a lost link (which forgot them all)
           may release a channel that only kept history. */
        FZ_CHECK(w->in_resub || w->names_lost);
        return;
    }
    w->nnames--;
    memcpy(w->names[k], w->names[w->nnames], w->name_lens[w->nnames]);
    w->name_lens[k] = w->name_lens[w->nnames];
}

/* A bridge message from the hub: the header with the hub's one origin id,
   then a valid envelope, which *env gets. */
static void hb_check_bridge_data(hb_world *w, const void *data, size_t len, wsch_envelope *env) {
    const char *d = (const char *)data;
    FZ_CHECK(d != NULL && len > WSCH_HUB_BRIDGE_HEADER_LEN);
    FZ_CHECK(memcmp(d, "wsch1 ", 6) == 0 && d[22] == ' ' && hb_hex16(d + 6, WSCH_HUB_EPOCH_LEN));
    if (!w->origin[0]) memcpy(w->origin, d + 6, WSCH_HUB_EPOCH_LEN);
    FZ_CHECK(memcmp(w->origin, d + 6, WSCH_HUB_EPOCH_LEN) == 0);
    FZ_CHECK(wsch_envelope_decode(d + WSCH_HUB_BRIDGE_HEADER_LEN, len - WSCH_HUB_BRIDGE_HEADER_LEN, env) == WSCH_OK);
}

static void hb_queue(hb_world *w, const char *name, size_t name_len, const void *data, size_t len) {
    hb_msg *m;
    if (w->deaf || hb_name_find(w, name, name_len) < 0) return;   /* nobody to carry it to */
    if (w->qlen == HB_QCAP || name_len >= HB_NAME_CAP || len > HB_MSG_CAP) return; /* lost on the way: a gap */
    m = &w->q[(w->qhead + w->qlen++) % HB_QCAP];
    memcpy(m->name, name, name_len);
    m->name[name_len] = '\0';
    m->name_len = name_len;
    memcpy(m->data, data, len);
    m->len = len;
}

static int hb_b_publish(const char *name, size_t len, const void *data, size_t data_len, void *user) {
    hb_world *w = (hb_world *)user;
    wsch_envelope env;
    FZ_CHECK(!w->destroying);
    FZ_CHECK(name != NULL && len > 0 && name[len] == '\0');
    FZ_CHECK(data != NULL && data_len >= 6);
    if (memcmp(data, "wschp ", 6) == 0) {   /* presence, under shared positions too */
        hb_p_published(w, name, len, (const char *)data, data_len);
        if (w->fail_publish) return WSCH_ERR_STATE;
        hb_queue(w, name, len, data, data_len);
        return WSCH_OK;
    }
    hb_check_bridge_data(w, data, data_len, &env);
    /* Under shared positions channel messages go to append, never here. */
    if (w->shared) FZ_CHECK(len > 6 && memcmp(name, WSCH_HUB_BRIDGE_USER_PREFIX, 6) == 0);
    HB_T("  bridge publish %.*s (%zu bytes)%s\n", (int)len, name, data_len, w->fail_publish ? " refused" : "");
    if (w->fail_publish) return WSCH_ERR_STATE;
    hb_queue(w, name, len, data, data_len);      /* Redis sends a publisher its own, too */
    return WSCH_OK;
}

static int hb_b_append(const char *name, size_t len, const void *data, size_t data_len, uint64_t ticket,
                       void *user) {
    static const char *const keys[3] = {"channel", "offset", "epoch"};
    hb_world *w = (hb_world *)user;
    wsch_envelope env;
    wsch_str whole, v[3];
    unsigned i;
    int j;
    FZ_CHECK(!w->destroying);
    FZ_CHECK(w->shared);
    FZ_CHECK(name != NULL && len > 0 && name[len] == '\0');
    hb_check_bridge_data(w, data, data_len, &env);
    /* {"type":T,"payload":P,"channel":C}: its channel, no position, '}' last */
    whole.ptr = (const char *)data + WSCH_HUB_BRIDGE_HEADER_LEN;
    whole.len = data_len - WSCH_HUB_BRIDGE_HEADER_LEN;
    FZ_CHECK(wsch_json_get_members(whole, keys, 3, v) == WSCH_OK);
    FZ_CHECK(v[0].ptr && v[0].len == len + 2u && memcmp(v[0].ptr + 1, name, len) == 0);
    FZ_CHECK(!v[1].ptr && !v[2].ptr);
    FZ_CHECK(((const char *)data)[data_len - 1] == '}');
    FZ_CHECK(ticket != 0 && ticket != w->last_ticket);
    for (i = 0; i < w->ntickets; i++) FZ_CHECK(w->tickets[i].ticket != ticket);
    HB_T("  bridge append %.*s ticket %llu%s\n", (int)len, name, (unsigned long long)ticket,
         w->fail_append ? " refused" : "");
    if (w->fail_append) return WSCH_ERR_STATE;
    j = hb_channel_index(name, len);
    if (j < 0 || data_len > HB_MSG_CAP - 64u || w->ntickets == HB_TICKETS) return WSCH_ERR_LIMIT;
    w->tickets[w->ntickets].ticket = ticket;
    w->tickets[w->ntickets].ch = j;
    memcpy(w->tickets[w->ntickets].data, data, data_len);
    w->tickets[w->ntickets].len = data_len;
    w->ntickets++;
    return WSCH_OK;
}

static int hb_b_fetch(const char *name, size_t len, size_t count, void *user) {
    hb_world *w = (hb_world *)user;
    FZ_CHECK(!w->destroying);
    FZ_CHECK(w->shared);
    FZ_CHECK(name != NULL && len > 0 && name[len] == '\0');
    FZ_CHECK(count >= 1 && count <= w->desc.history_size);
    /* Read only once the subscription to name is in effect. */
    FZ_CHECK(w->names_lost || hb_name_find(w, name, len) >= 0);
    HB_T("  bridge fetch %.*s %zu%s\n", (int)len, name, count, w->fail_fetch ? " refused" : "");
    if (w->fail_fetch) return WSCH_ERR_STATE;
    if (w->nfetches == HB_FETCHES || len >= HB_NAME_CAP) return WSCH_ERR_LIMIT;
    memcpy(w->fetches[w->nfetches].name, name, len);
    w->fetches[w->nfetches].name[len] = '\0';
    w->fetches[w->nfetches].len = len;
    w->fetches[w->nfetches].count = count;
    w->nfetches++;
    return WSCH_OK;
}

/* The highest offset given (channel, epoch) so far. */
static uint64_t hb_high_get(const hb_world *w, int j, const char *epoch) {
    unsigned i;
    for (i = 0; i < w->nhigh[j]; i++)
        if (strcmp(w->high[j][i].epoch, epoch) == 0) return w->high[j][i].max;
    return 0;
}

static void hb_high_raise(hb_world *w, int j, const char *epoch, size_t epoch_len, uint64_t offset) {
    unsigned i;
    if (j < 0 || !hb_hex16(epoch, epoch_len)) return;  /* a malformed epoch is never taken */
    for (i = 0; i < w->nhigh[j]; i++) {
        if (memcmp(w->high[j][i].epoch, epoch, WSCH_HUB_EPOCH_LEN) == 0) {
            if (offset > w->high[j][i].max) w->high[j][i].max = offset;
            return;
        }
    }
    if (i == HB_EPOCHS) {
        w->wild[j] = 1;         /* no room to remember: no bound for this channel */
        return;
    }
    memcpy(w->high[j][i].epoch, epoch, WSCH_HUB_EPOCH_LEN);
    w->high[j][i].epoch[WSCH_HUB_EPOCH_LEN] = '\0';
    w->high[j][i].max = offset;
    w->nhigh[j]++;
}

/* The position in a numbered bridge message (header, envelope), read with
   the public JSON calls: 1 and *offset, epoch (16 digits + NUL), or 0. */
static int hb_msg_position(const char *data, size_t len, uint64_t *offset, char *epoch) {
    static const char *const keys[2] = {"offset", "epoch"};
    wsch_str whole, v[2];
    int64_t n;
    wsch_str one;
    if (len <= WSCH_HUB_BRIDGE_HEADER_LEN) return 0;
    whole.ptr = data + WSCH_HUB_BRIDGE_HEADER_LEN;
    whole.len = len - WSCH_HUB_BRIDGE_HEADER_LEN;
    if (wsch_json_get_members(whole, keys, 2, v) != WSCH_OK || !v[0].ptr || !v[1].ptr) return 0;
    if (v[1].len != WSCH_HUB_EPOCH_LEN + 2u || v[1].ptr[0] != '"' || !hb_hex16(v[1].ptr + 1, WSCH_HUB_EPOCH_LEN))
        return 0;
    if (wsch_json_get_int(whole, "offset", &n) != WSCH_OK || n < 1) return 0;
    one = v[1];
    *offset = (uint64_t)n;
    memcpy(epoch, one.ptr + 1, WSCH_HUB_EPOCH_LEN);
    epoch[WSCH_HUB_EPOCH_LEN] = '\0';
    return 1;
}

/* The store numbers an append (the Redis script): the next offset, the
   epoch (a new one after a loss), kept, and queued to this hub if it
   listens and its link is up (lost: skip). */
static void hb_store_number(hb_world *w, int j, const char *data, size_t len, int lost) {
    hb_store_ch *c = &w->store[j];
    char tail[80];
    size_t tail_len, slot;
    if (!c->epoch[0])
        snprintf(c->epoch, sizeof c->epoch, "%016llx", 0xe000000000000000ull + (unsigned long long)++w->store_epochs);
    c->offset++;
    tail_len = (size_t)snprintf(tail, sizeof tail, ",\"offset\":%llu,\"epoch\":\"%s\"}", (unsigned long long)c->offset,
                                c->epoch);
    slot = (size_t)(c->offset % HB_KEEP);
    memcpy(c->kept[slot], data, len - 1u);
    memcpy(c->kept[slot] + len - 1u, tail, tail_len);
    c->kept_len[slot] = len - 1u + tail_len;
    hb_high_raise(w, j, c->epoch, WSCH_HUB_EPOCH_LEN, c->offset);
    HB_T("  store: %s %s:%llu\n", hb_channels[j], c->epoch, (unsigned long long)c->offset);
    if (!lost) hb_queue(w, hb_channels[j], strlen(hb_channels[j]), c->kept[slot], c->kept_len[slot]);
}

/* Everything lost, as when Redis restarts empty: the next message starts a new epoch. */
static void hb_store_flush(hb_world *w) {
    int j;
    for (j = 0; j < HB_NCH; j++) {
        w->store[j].offset = 0;
        w->store[j].epoch[0] = '\0';
        memset(w->store[j].kept_len, 0, sizeof w->store[j].kept_len);
    }
}

/* The kept message at offset o of channel j, or NULL. */
static const char *hb_store_kept(const hb_world *w, int j, uint64_t o, size_t *len) {
    const hb_store_ch *c = &w->store[j];
    if (j < 0 || !c->epoch[0] || o == 0 || o > c->offset || c->offset - o >= HB_KEEP) return NULL;
    *len = c->kept_len[o % HB_KEEP];
    return *len ? c->kept[o % HB_KEEP] : NULL;
}

/* ---- hooks ---------------------------------------------------------------- */

static hb_slot *hb_slot_of(hb_world *w, wsch_hub_peer c) {
    hb_slot *s = (hb_slot *)wsch_hub_peer_user(w->hub, c);
    FZ_CHECK(!w->destroying);
    FZ_CHECK(s != NULL && s >= w->slot && s < w->slot + HB_SLOTS);
    FZ_CHECK(s->h.index == c.index && s->h.gen == c.gen);
    hb_alive(s);
    return s;
}

static int hb_check_origin(wsch_hub *hub, const wsch_hub_request *req, void *user) {
    (void)hub;
    (void)user;
    return !(req->http->origin.len == 4 && memcmp(req->http->origin.ptr, "evil", 4) == 0);
}

static int hb_authenticate(wsch_hub *hub, const wsch_hub_request *req, wsch_str *user_id, void *user) {
    hb_world *w = (hb_world *)user;
    hb_slot *s = (hb_slot *)req->peer_user;
    FZ_CHECK(req->token.len <= 4096);
    FZ_CHECK(s != NULL && s >= w->slot && s < w->slot + HB_SLOTS);
    s->has_uid = 0;
    if (req->token.len != 0 && (req->token.len != 6 || memcmp(req->token.ptr, "good-", 5) != 0)) return WSCH_ERR_DENIED;
    if (req->token.len) {
        user_id->ptr = req->token.ptr + 5; /* "1", "2", ... (or byte 0xFF): borrowed until return */
        user_id->len = 1;
        s->has_uid = 1;
        s->uid = (unsigned char)req->token.ptr[5];
    }
    if (w->info_in_auth) {  /* presence info, as meant: from authenticate */
        char info[32];
        int rc;
        snprintf(info, sizeof info, "{\"slot\":%d}", (int)(s - w->slot));
        rc = wsch_hub_set_presence_info(hub, req->peer, info, strlen(info));
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_NOMEM || (rc == WSCH_ERR_TOO_LARGE && strlen(info) > w->desc.max_presence_info_len));
    }
    return WSCH_OK; /* anonymous without a token */
}

/* on_presence: the per-user join or leave, at once. The member set seen
   through the getters already says so; joins minus leaves per (channel,
   user) stays 0 or 1. */
typedef struct hb_find_ctx {
    uint64_t user;
    int found;
} hb_find_ctx;

static int hb_find_member(wsch_str user_id, size_t connections, wsch_str info, void *ctx) {
    hb_find_ctx *f = (hb_find_ctx *)ctx;
    (void)connections;
    (void)info;
    if (hb_h(user_id.ptr, user_id.len) == f->user) f->found++;
    return 0;
}

static void hb_on_presence(wsch_hub *hub, wsch_str channel, wsch_str user_id, int joined, void *user) {
    hb_world *w = (hb_world *)user;
    char name[WSCH_HUB_MAX_CHANNEL_LEN + 1];
    hb_find_ctx f;
    int j;
    unsigned i;
    FZ_CHECK(!w->destroying && w->presence && hub == w->hub);
    FZ_CHECK(joined == 0 || joined == 1);
    FZ_CHECK(channel.ptr && channel.len >= 1 && channel.len <= WSCH_HUB_MAX_CHANNEL_LEN);
    FZ_CHECK(user_id.ptr && user_id.len >= 1 && user_id.len <= w->desc.max_user_id_len);
    FZ_CHECK(wsch_utf8_valid(user_id.ptr, user_id.len));  /* ids not UTF-8 are never members */
    memcpy(name, channel.ptr, channel.len);
    name[channel.len] = '\0';
    f.user = hb_h(user_id.ptr, user_id.len);
    f.found = 0;
    (void)wsch_hub_presence_each(hub, name, hb_find_member, &f);
    FZ_CHECK(f.found == joined);
    j = hb_channel_index(channel.ptr, channel.len);
    HB_T("  on_presence %s %.*s %s\n", name, (int)user_id.len, user_id.ptr, joined ? "joined" : "left");
    if (j < 0) return;
    for (i = 0; i < w->nbal; i++)
        if (w->bal[i].ch == j && w->bal[i].user == f.user) break;
    if (i == w->nbal) {
        if (w->nbal == HB_BAL) {
            w->bal_lost = 1;
            return;
        }
        w->bal[w->nbal].ch = j;
        w->bal[w->nbal].user = f.user;
        w->bal[w->nbal++].balance = 0;
    }
    w->bal[i].balance += joined ? 1 : -1;
    FZ_CHECK(w->bal[i].balance == 0 || w->bal[i].balance == 1);  /* two joins, or two leaves, in a row */
}

static int hb_authorize(wsch_hub *hub, wsch_hub_peer client, wsch_str user_id, wsch_str channel, void *user) {
    (void)hub;
    (void)client;
    (void)user_id;
    (void)user;
    return !(channel.len == 6 && memcmp(channel.ptr, "secret", 6) == 0);
}

static void hb_on_http(wsch_hub *hub, const wsch_hub_request *req, wsch_hub_http_response *res, void *user) {
    (void)hub;
    (void)user;
    if (req->http->path.len == 1) {
        res->status = 200;
        res->body = "hello";
        res->body_len = 5;
    }
}

static void hb_on_connect(wsch_hub *hub, wsch_hub_peer client, wsch_str user_id, void *user) {
    hb_world *w = (hb_world *)user;
    hb_slot *s = hb_slot_of(w, client);
    FZ_CHECK(hub == w->hub);
    HB_T("  on_connect slot %d\n", (int)(s - w->slot));
    FZ_CHECK(!s->connected && !s->disconnected);
    FZ_CHECK(user_id.len <= 1);
    FZ_CHECK(wsch_hub_peer_state(hub, client) == WSCH_STATE_OPEN);
    if (w->desc.authenticate) FZ_CHECK(user_id.len == (size_t)s->has_uid && (!s->has_uid || (unsigned char)user_id.ptr[0] == s->uid));
    s->connected = 1;
}

static void hb_on_disconnect(wsch_hub *hub, wsch_hub_peer client, int code, void *user) {
    hb_world *w = (hb_world *)user;
    hb_slot *s = hb_slot_of(w, client);
    (void)hub;
    HB_T("  on_disconnect slot %d code %d\n", (int)(s - w->slot), code);
    FZ_CHECK(s->connected && !s->disconnected);
    FZ_CHECK(code >= 1000 && code <= 4999);
    s->disconnected = 1;
}

static void hb_on_message(wsch_hub *hub, wsch_hub_peer client, const wsch_envelope *env, void *user) {
    hb_world *w = (hb_world *)user;
    hb_slot *s = hb_slot_of(w, client);
    (void)hub;
    FZ_CHECK(s->connected && !s->disconnected);
    FZ_CHECK(!wsch_envelope_type_is(env, "ping") && !wsch_envelope_type_is(env, "subscribe") &&
             !wsch_envelope_type_is(env, "unsubscribe"));
    /* With presence on, its requests are the hub's. */
    if (w->presence) FZ_CHECK(!wsch_envelope_type_is(env, "presence") && !wsch_envelope_type_is(env, "presence_stats"));
    /* answering from inside the hook is allowed */
    if (wsch_envelope_type_is(env, "echo")) {
        int rc = wsch_hub_send(hub, client, "echo", env->payload.ptr, env->payload.len);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_STATE || rc == WSCH_ERR_NOMEM || rc == WSCH_ERR_TOO_LARGE);
    }
    /* With a bridge, "pub" broadcasts its payload on its channel: under
       shared positions a reliable one is answered when append is. */
    if (w->bridged && wsch_envelope_type_is(env, "pub")) {
        static const char *const key[1] = {"channel"};
        char ch[HB_NAME_CAP];
        size_t delivered = 99, n;
        wsch_str v[1];
        int rc;
        if (wsch_envelope_get_members(env, key, 1, v) != WSCH_OK || !v[0].ptr) return;
        if (wsch_json_get_string(env->payload, "channel", ch, sizeof ch, &n) != WSCH_OK || strlen(ch) != n) return;
        rc = wsch_hub_broadcast(hub, ch, "m", env->payload.ptr, env->payload.len, &delivered);
        HB_T("  pub %s: rc %d\n", ch, rc);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_ARG || rc == WSCH_ERR_NOMEM || rc == WSCH_ERR_TOO_LARGE ||
                 (w->shared && (rc == WSCH_ERR_STATE || rc == WSCH_ERR_LIMIT)));
        if (w->shared) FZ_CHECK(delivered == 0);        /* delivered when the bridge brings it back */
    }
}

/* ---- helpers -------------------------------------------------------------- */

static void hb_feed(hb_world *w, hb_slot *s, const void *bytes, size_t n) {
    char *copy;
    int rc;
    if (!s->used) return;
    copy = fz_dup(bytes, n);
    rc = wsch_hub_feed(w->hub, s->h, copy, n);
    FZ_CHECK(rc <= 0 && rc > WSCH_ERR_LAST_ && rc != WSCH_INCOMPLETE);
    free(copy);
    hb_parse(s);
}

static size_t hb_frame(unsigned char *out, unsigned first, const void *payload, size_t len) {
    static const unsigned char key[4] = {0x11, 0x22, 0x33, 0x44};
    size_t n = 0, i;
    out[n++] = (unsigned char)first;
    if (len < 126) {
        out[n++] = (unsigned char)(0x80 | len);
    } else {
        out[n++] = 0x80 | 126;
        out[n++] = (unsigned char)(len >> 8);
        out[n++] = (unsigned char)len;
    }
    memcpy(out + n, key, 4);
    n += 4;
    for (i = 0; i < len; i++) out[n + i] = (unsigned char)(((const unsigned char *)payload)[i] ^ key[i & 3]);
    return n + len;
}

/* Once close() has run, the handle is stale at once: refused everywhere. */
static void hb_check_stale(hb_world *w, hb_slot *s) {
    FZ_CHECK(s->close_asked && !s->used);
    FZ_CHECK(!wsch_hub_peer_valid(w->hub, s->h));
    FZ_CHECK(wsch_hub_peer_want(w->hub, s->h) == 0);
    FZ_CHECK(s->timers == 0); /* nothing left to fire for a released peer */
    FZ_CHECK(!s->connected || s->disconnected);
    FZ_CHECK(wsch_hub_transport_closed(w->hub, s->h) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_feed(w->hub, s->h, NULL, 0) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_writable(w->hub, s->h) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_timer_fired(w->hub, s->h, WSCH_TIMER_CLOSE) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_send(w->hub, s->h, "x", NULL, 0) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_subscribe(w->hub, s->h, "a") == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_peer_close(w->hub, s->h, 1000, NULL, 0) == WSCH_ERR_STALE);
    FZ_CHECK(wsch_hub_is_subscribed(w->hub, s->h, "a") == 0);
    FZ_CHECK(wsch_hub_peer_user(w->hub, s->h) == NULL);
    FZ_CHECK(wsch_hub_peer_state(w->hub, s->h) == WSCH_STATE_CLOSED);
    FZ_CHECK(wsch_hub_peer_queued_bytes(w->hub, s->h) == 0);
    FZ_CHECK(wsch_hub_set_presence_info(w->hub, s->h, "1", 1) == WSCH_ERR_STALE);
    s->stale_checked = 1;
}

/* The caller saw EOF first: on_disconnect and close() run inside the call. */
static void hb_report_closed(hb_world *w, hb_slot *s) {
    FZ_CHECK(wsch_hub_transport_closed(w->hub, s->h) == WSCH_OK);
    FZ_CHECK(s->close_asked);
    hb_check_stale(w, s);
}

static void hb_bridge_invariants(hb_world *w, const wsch_hub_counters *st) {
    const wsch_hub_counters *o = &w->last;
    int j;
    if (!w->bridged) {
        FZ_CHECK(st->bridge_channels == 0 && st->bridge_published == 0 && st->bridge_received == 0 &&
                 st->bridge_refused == 0 && st->bridge_fetches == 0 && st->bridge_appended == 0);
        return;
    }
    /* Counters never go back (bridge_channels is a gauge). */
    FZ_CHECK(st->bridge_published >= o->bridge_published);
    FZ_CHECK(st->bridge_publish_errors >= o->bridge_publish_errors);
    FZ_CHECK(st->bridge_received >= o->bridge_received);
    FZ_CHECK(st->bridge_own >= o->bridge_own);
    FZ_CHECK(st->bridge_refused >= o->bridge_refused);
    FZ_CHECK(st->bridge_appended >= o->bridge_appended);
    FZ_CHECK(st->bridge_append_errors >= o->bridge_append_errors);
    FZ_CHECK(st->bridge_fetches >= o->bridge_fetches);
    FZ_CHECK(st->bridge_fetch_errors >= o->bridge_fetch_errors);
    FZ_CHECK(st->bridge_gaps >= o->bridge_gaps);
    if (!w->shared) FZ_CHECK(st->bridge_appended == 0 && st->bridge_fetches == 0 && st->bridge_gaps == 0);
    /* The bridge listens to exactly what the hub says it needs. */
    if (!w->names_lost) FZ_CHECK(st->bridge_channels == w->nnames);
    w->last = *st;
    if (!w->shared) return;
    /* Never a position the bridge did not give. */
    for (j = 0; j < HB_NCH; j++) {
        wsch_hub_position pos;
        if (wsch_hub_channel_position(w->hub, hb_channels[j], &pos) != WSCH_OK) continue;
        FZ_CHECK(pos.kept <= w->desc.history_size);
        if (!w->wild[j]) FZ_CHECK(pos.offset <= hb_high_get(w, j, pos.epoch));
    }
}

/* ---- presence invariants ---------------------------------------------------- */

/* The hub's members of a channel (wsch_hub_presence_each). */
#define HB_TMAX 48
typedef struct hb_truth {
    unsigned n;
    int over;
    uint64_t user[HB_TMAX], info[HB_TMAX];
    size_t conns[HB_TMAX], info_len[HB_TMAX];
    size_t calls, sum, list_len;    /* calls, connections summed, length of the member list as the hub writes it */
} hb_truth;

static size_t hb_digits(size_t v) {
    size_t n = 1;
    while (v >= 10u) {
        v /= 10u;
        n++;
    }
    return n;
}

static int hb_truth_add(wsch_str user_id, size_t connections, wsch_str info, void *ctx) {
    hb_truth *t = (hb_truth *)ctx;
    unsigned i;
    uint64_t u;
    FZ_CHECK(user_id.ptr && user_id.len >= 1 && wsch_utf8_valid(user_id.ptr, user_id.len));
    FZ_CHECK(connections >= 1);
    FZ_CHECK(info.len <= hb_info_max && (info.len == 0 || wsch_json_validate(info.ptr, info.len) == WSCH_OK));
    u = hb_h(user_id.ptr, user_id.len);
    for (i = 0; i < t->n; i++) FZ_CHECK(t->user[i] != u);  /* each user once */
    t->calls++;
    t->sum += connections;
    /* ,{"user":U,"connections":N[,"info":I]} */
    t->list_len += (t->calls > 1 ? 1u : 0u) + 8u + wsch_json_escaped_len(user_id.ptr, user_id.len) + 15u +
                   hb_digits(connections) + (info.len ? 8u + info.len : 0u) + 1u;
    if (t->n == HB_TMAX) {
        t->over = 1;
        return 0;
    }
    t->user[t->n] = u;
    t->info[t->n] = hb_h(info.len ? info.ptr : "", info.len);
    t->info_len[t->n] = info.len;
    t->conns[t->n++] = connections;
    return 0;
}

static int hb_truth_find(const hb_truth *t, uint64_t u) {
    unsigned i;
    for (i = 0; i < t->n; i++)
        if (t->user[i] == u) return (int)i;
    return -1;
}

/* The subscribed slots of channel j with a user id that can be a member
   (authenticated, UTF-8): connections per id byte. Returns the users. */
static size_t hb_local(hb_world *w, int j, size_t lc[256], size_t *conns) {
    size_t users = 0;
    int i;
    memset(lc, 0, 256 * sizeof lc[0]);
    *conns = 0;
    for (i = 0; i < HB_SLOTS; i++) {
        hb_slot *s = &w->slot[i];
        if (!s->used || !s->has_uid || s->uid >= 0x80 || !wsch_hub_is_subscribed(w->hub, s->h, hb_channels[j])) continue;
        if (lc[s->uid]++ == 0) users++;
        (*conns)++;
    }
    return users;
}

/* One listed view against the hub's members: the same users, with the same info. */
static void hb_view_is_truth(const hb_view *v, const hb_truth *t) {
    unsigned i;
    FZ_CHECK(v->listed);                                /* under the cap the list goes, not counts */
    FZ_CHECK(v->n == t->n);
    for (i = 0; i < t->n; i++) {
        int k = hb_view_find(v, t->user[i]);
        FZ_CHECK(k >= 0);                               /* a member the view does not hold */
        FZ_CHECK(v->info[k] == t->info[i]);
    }
}

static void hb_p_invariants(hb_world *w, const wsch_hub_counters *st) {
    size_t total = 0, budget, overhead = 2u * WSCH_HUB_MAX_CHANNEL_LEN + 256u, remote = 0;
    int j, i, exact_remote = w->bridged && !w->rstray;
    unsigned b;
    if (!w->presence) {
        FZ_CHECK(st->presence_members == 0 && st->presence_messages == 0 && st->presence_sent == 0 &&
                 st->presence_remote == 0 && st->presence_in == 0 && st->presence_expired == 0);
        return;
    }
    /* Counters never go back (members and remote are gauges). */
    FZ_CHECK(st->presence_messages >= w->p_messages && st->presence_sent >= w->p_sent && st->presence_in >= w->p_in &&
             st->presence_expired >= w->p_expired);
    w->p_messages = st->presence_messages;
    w->p_sent = st->presence_sent;
    w->p_in = st->presence_in;
    w->p_expired = st->presence_expired;
    if (!w->bridged) FZ_CHECK(st->presence_remote == 0 && st->presence_in == 0 && st->presence_expired == 0);
    budget = w->desc.limits.max_message_size > overhead ? w->desc.limits.max_message_size - overhead : 0;
    if (w->flushed) {
        /* What flush asks: without a bridge 0 unless counts wait (at most
           an interval; 1 after a failure); with one, the next refresh. */
        uint32_t every = w->desc.presence_ttl_ms / 3u ? w->desc.presence_ttl_ms / 3u : 1u;
        if (w->bridged) FZ_CHECK(w->flush_wait >= 1 && w->flush_wait <= every);
        else if (!w->desc.effects.now_ms) FZ_CHECK(w->flush_wait <= 1);
        else FZ_CHECK(w->flush_wait <= w->desc.presence_stats_interval_ms);
    }
    for (j = 0; j < HB_NCH; j++) {
        hb_truth t;
        size_t users = 99, conns = 99, lc[256], lconns, lusers, subscribed = 0, list_len;
        int fits, sure, pending;
        memset(&t, 0, sizeof t);
        FZ_CHECK(wsch_hub_presence_counts(w->hub, hb_channels[j], &users, &conns) == WSCH_OK);
        (void)wsch_hub_presence_each(w->hub, hb_channels[j], hb_truth_add, &t);
        FZ_CHECK(t.calls == users && t.sum == conns);   /* the walk and the counts agree */
        total += users;
        lusers = hb_local(w, j, lc, &lconns);
        if (!w->bridged) {
            /* Members are exactly the authenticated UTF-8 users subscribed here. */
            FZ_CHECK(users == lusers && conns == lconns);
            for (b = 0; b < 256; b++) {
                unsigned char c = (unsigned char)b;
                int k;
                if (!lc[b]) continue;
                k = hb_truth_find(&t, hb_h(&c, 1));
                FZ_CHECK(k >= 0 && t.conns[k] == lc[b]);
            }
        } else {
            /* Here and on the other hubs: every local user, and with an
               exact model exactly the union, connections added up. */
            for (b = 0; b < 256; b++) {
                unsigned char c = (unsigned char)b;
                int k;
                if (!lc[b]) continue;
                k = hb_truth_find(&t, hb_h(&c, 1));
                FZ_CHECK(t.over || (k >= 0 && t.conns[k] >= lc[b]));
            }
            if (!w->exists[j]) FZ_CHECK(users == 0 && w->nrm[j] == 0);
            remote += w->nrm[j];
            if (w->rinexact[j]) exact_remote = 0;
            if (!w->rinexact[j] && !t.over) {
                hb_truth e;
                unsigned r;
                memset(&e, 0, sizeof e);
                for (b = 0; b < 256; b++) {
                    unsigned char c = (unsigned char)b;
                    if (!lc[b]) continue;
                    e.user[e.n] = hb_h(&c, 1);
                    e.conns[e.n++] = lc[b];
                }
                for (r = 0; r < w->nrm[j]; r++) {
                    int k = hb_truth_find(&e, w->rm[j][r].user);
                    if (k < 0) {
                        FZ_CHECK(e.n < HB_TMAX);
                        k = (int)e.n++;
                        e.user[k] = w->rm[j][r].user;
                        e.conns[k] = 0;
                    }
                    e.conns[k] += w->rm[j][r].conns;
                }
                if (t.n || e.n) HB_T("  %s: hub %u members, model %u\n", hb_channels[j], t.n, e.n);
                FZ_CHECK(t.n == e.n);                   /* a member too many or too few (expired, left) */
                for (r = 0; r < e.n; r++) {
                    int k = hb_truth_find(&t, e.user[r]);
                    FZ_CHECK(k >= 0 && t.conns[k] == e.conns[r]);
                }
            }
            /* After a flush without failures, what this hub said of its users
               is who it has (one too long to say alone is not said). */
            if (w->flushed && !w->failed_now && w->exists[j] && !w->said_unknown[j]) {
                for (b = 0; b < 256; b++) {
                    unsigned char c = (unsigned char)b;
                    int k = lc[b] ? hb_truth_find(&t, hb_h(&c, 1)) : -1;
                    if (lc[b] && k < 0) continue;       /* t.over */
                    if (!lc[b]) {
                        FZ_CHECK(w->said[j][b] != 1);   /* said to have left */
                    } else if (w->said[j][b] != 1) {
                        /* {"joins":[{"user":"U","connections":N[,"info":I]}],"sync":true} */
                        size_t alone = 10u + 27u + 1u + (t.info_len[k] ? 8u + t.info_len[k] : 0u) + 16u;
                        FZ_CHECK(alone > w->desc.limits.max_message_size);  /* never said to the other hubs */
                    }
                }
            }
        }
        /* on_presence said exactly the members. */
        if (!w->bal_lost) {
            unsigned r, ones = 0;
            for (r = 0; r < w->nbal; r++) {
                if (w->bal[r].ch != j) continue;
                FZ_CHECK(w->bal[r].balance == (hb_truth_find(&t, w->bal[r].user) >= 0) || t.over);
                ones += (unsigned)w->bal[r].balance;
            }
            FZ_CHECK(ones == users);
        }
        if (!w->flushed || w->failed_now) continue;
        /* After a flush, each presence subscriber's view is the member set
           (under the cap), or counts (over it, unless they wait). */
        list_len = 11u + wsch_json_escaped_len(hb_channels[j], strlen(hb_channels[j])) + 12u + t.list_len + 2u;
        fits = users <= w->desc.presence_max_members && list_len <= budget;
        sure = !t.over && (list_len + 32u < budget || list_len > budget + 32u);
        for (i = 0; i < HB_SLOTS; i++) if (w->slot[i].used && wsch_hub_is_subscribed(w->hub, w->slot[i].h, hb_channels[j])) subscribed++;
        pending = wsch_hub_channel_size(w->hub, hb_channels[j]) < subscribed;
        for (i = 0; i < HB_SLOTS && sure && !pending; i++) {
            hb_slot *s = &w->slot[i];
            hb_view *v = &s->view[j];
            if (!s->used || !v->active || v->over || s->lax || s->out_lost || !s->head_done || s->parsed != s->out_len ||
                wsch_hub_peer_state(w->hub, s->h) != WSCH_STATE_OPEN || wsch_hub_peer_queued_bytes(w->hub, s->h) != 0)
                continue;
            hb_apply_resets(s);                         /* a server-side unsubscribe at the end of the stream */
            if (!v->active) continue;
            FZ_CHECK(wsch_hub_is_subscribed(w->hub, s->h, hb_channels[j]));     /* a view without a subscription */
            HB_T("  view slot %d %s: %s n %u (hub %u, fits %d)\n", i, hb_channels[j], v->listed ? "listed" : "counts", v->n,
                 t.n, fits);
            if (fits) hb_view_is_truth(v, &t);
            else if (!w->bridged && w->flush_wait == 0) {
                FZ_CHECK(!v->listed);                   /* over the cap: counts */
                /* Counts a flush could not send go at the next (P3), and a
                   confirmation's counts are sent again by the next flush (P4). */
                FZ_CHECK(v->users == (int64_t)users);
            }
        }
    }
    FZ_CHECK(st->presence_members >= total);
    if (w->bridged && exact_remote) FZ_CHECK(st->presence_remote == remote);
}

static void hb_invariants(hb_world *w) {
    wsch_hub_counters st;
    size_t i, j, clients = 0, subs = 0, channels = 0;
    uint64_t queued = 0;
    size_t per_channel[HB_NCH];
    memset(per_channel, 0, sizeof per_channel);
    for (i = 0; i < HB_SLOTS; i++) hb_parse(&w->slot[i]); /* what bridge answers and broadcasts wrote */
    wsch_hub_stats(w->hub, &st);
    for (i = 0; i < HB_SLOTS; i++) {
        hb_slot *s = &w->slot[i];
        size_t mine = 0;
        unsigned want;
        if (s->send_failed) FZ_CHECK(s->close_asked);
        if (s->close_asked && !s->stale_checked) hb_check_stale(w, s);
        if (!s->used) continue;
        clients++;
        FZ_CHECK(wsch_hub_peer_valid(w->hub, s->h));
        FZ_CHECK(wsch_hub_peer_state(w->hub, s->h) != WSCH_STATE_CLOSED); /* CLOSED: close() has run */
        queued += wsch_hub_peer_queued_bytes(w->hub, s->h);
        want = wsch_hub_peer_want(w->hub, s->h);
        FZ_CHECK(want != 0 && (want & ~(unsigned)(WSCH_WANT_READ | WSCH_WANT_WRITE)) == 0);
        FZ_CHECK(((want & WSCH_WANT_WRITE) != 0) == (wsch_hub_peer_queued_bytes(w->hub, s->h) > 0));
        for (j = 0; j < HB_NCH; j++) {
            if (wsch_hub_is_subscribed(w->hub, s->h, hb_channels[j])) {
                mine++;
                per_channel[j]++;
            }
        }
        subs += mine;
        FZ_CHECK(mine <= w->desc.max_channels_per_peer);
        /* A connection its peer broke stays subscribed (and gets nothing)
           until its on_close; handshaking and closed ones never are. */
        if (wsch_hub_peer_state(w->hub, s->h) == WSCH_STATE_HANDSHAKE ||
            wsch_hub_peer_state(w->hub, s->h) == WSCH_STATE_CLOSED)
            FZ_CHECK(mine == 0);
        if (s->disconnected) FZ_CHECK(mine == 0);
    }
    for (j = 0; j < HB_NCH; j++) {
        /* With history a subscription may wait for its replay: subscribed,
           not yet among the channel's live subscribers. */
        if (w->desc.history_size) FZ_CHECK(wsch_hub_channel_size(w->hub, hb_channels[j]) <= per_channel[j]);
        else FZ_CHECK(wsch_hub_channel_size(w->hub, hb_channels[j]) == per_channel[j]);
        if (per_channel[j]) channels++;
        if (w->desc.history_size) {
            wsch_hub_position pos;
            if (wsch_hub_channel_position(w->hub, hb_channels[j], &pos) == WSCH_OK) {
                FZ_CHECK(pos.kept <= w->desc.history_size);
                FZ_CHECK(pos.kept == 0 || (pos.first_kept + pos.kept - 1u == pos.offset));
            }
        }
    }
    FZ_CHECK(per_channel[4] == 0 && per_channel[5] == 0); /* invalid names never exist */
    FZ_CHECK(st.peers == clients);
    FZ_CHECK(w->accepted - w->closes == clients);   /* one close() per transport that left */
    FZ_CHECK(st.subscriptions == subs);
    if (w->desc.history_size) {
        FZ_CHECK(st.channels >= channels);          /* and those kept for their history */
        FZ_CHECK(st.history_bytes <= w->desc.history_max_bytes);
    } else {
        FZ_CHECK(st.channels == channels);
    }
    FZ_CHECK(st.open <= st.peers);
    FZ_CHECK(st.bytes_queued == queued);
    FZ_CHECK(st.users <= st.peers);
    {
        size_t open = 0;
        for (i = 0; i < HB_SLOTS; i++)
            if (w->slot[i].used && w->slot[i].connected && !w->slot[i].disconnected) open++;
        FZ_CHECK(st.open == open);
    }
    hb_bridge_invariants(w, &st);
    hb_p_invariants(w, &st);
}

/* ---- operations ----------------------------------------------------------- */

static const char *hb_request(unsigned v, char *buf, size_t cap, unsigned slot, int presence) {
    char line[128];
    /* With presence, slot 3's query token gives a user id that is not UTF-8 (no member). */
    const char *path = (v & 8u) ? "/" : (v & 16u) ? "/other" : !(v & 32u) ? "/ws" :
                       presence && slot == 3 ? "/ws?token=good-%FF&session=s1" : "/ws?token=good-9&session=s1";
    switch ((v & 7u) % 6u) {
    case 1: snprintf(line, sizeof line, "Authorization: Bearer good-%u\r\n", slot + 1u); break;
    case 2: snprintf(line, sizeof line, "Authorization: Bearer bad\r\n"); break;
    case 3: snprintf(line, sizeof line, "Sec-WebSocket-Protocol: chat, bearer.good-%u\r\n", slot + 1u); break;
    case 4: snprintf(line, sizeof line, "Origin: evil\r\n"); break;
    case 5: snprintf(line, sizeof line, "Authorization: Basic Zm9vOmJhcg==\r\n"); break;
    default: line[0] = '\0'; break;
    }
    snprintf(buf, cap,
             "GET %s HTTP/1.1\r\nHost: h\r\n%s%s%sSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: %s\r\n\r\n",
             path, (v & 64u) ? "" : "Upgrade: websocket\r\n", "Connection: Upgrade\r\n", line,
             (v & 128u) ? "8" : "13");
    return buf;
}

static void hb_canned(hb_world *w, hb_slot *s, unsigned k, unsigned arg) {
    char text[200];
    unsigned char f[300];
    size_t n;
    const char *ch = hb_channels[arg % HB_NCH];
    switch (k % 13u) {
    case 0: snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\"}}", ch); break;
    case 1: snprintf(text, sizeof text, "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"%s\"}}", ch); break;
    case 2: snprintf(text, sizeof text, "{\"type\":\"ping\",\"payload\":%u}", arg); break;
    case 3: snprintf(text, sizeof text, "{\"type\":\"echo\",\"payload\":{\"n\":%u}}", arg); break;
    case 4: snprintf(text, sizeof text, "{\"type\":\"subscribe\"}"); break;
    case 5: snprintf(text, sizeof text, "not json"); break;
    case 6: hb_feed(w, s, f, hb_frame(f, 0x82, "bin", 3)); return;
    case 7: {
        unsigned char p[2] = {0x03, 0xE8};
        hb_feed(w, s, f, hb_frame(f, 0x88, p, 2));
        return;
    }
    case 8: hb_feed(w, s, f, hb_frame(f, 0x89, "p", 1)); return;
    case 9: {   /* recover: from the channel's own epoch (when it has one), or a foreign one */
        wsch_hub_position pos;
        const char *epoch = "0123456789abcdef";
        if ((arg & 8u) && wsch_hub_channel_position(w->hub, ch, &pos) == WSCH_OK) epoch = pos.epoch;
        snprintf(text, sizeof text,
                 "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\",\"recover\":{\"offset\":%u,\"epoch\":\"%s\"}}}",
                 ch, (arg >> 4) % 8u, epoch);
        break;
    }
    case 10:
        snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\",\"history\":%u}}", ch,
                 (arg >> 4) % 6u);
        break;
    case 11: snprintf(text, sizeof text, "{\"type\":\"echo\",\"payload\":1,\"id\":%u}", (arg >> 4) % 5u); break;
    default: snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"c%u\"}}", arg % 10u); break;
    }
    n = hb_frame(f, 0x81, text, strlen(text));
    hb_feed(w, s, f, n);
}

/* ---- presence operations ---------------------------------------------------- */

/* A client's presence message: subscribe with "presence" (plain, with
   recover or history, or a "presence" that is not true), the two
   requests (any channel: forbidden "secret", invalid ones), malformed. */
static void hb_p_canned(hb_world *w, hb_slot *s, unsigned k, unsigned arg) {
    char text[300];
    unsigned char f[400];
    const char *ch = hb_channels[arg % HB_NCH];
    switch (k % 10u) {
    case 0:
        snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\",\"presence\":true}}", ch);
        break;
    case 1: {
        wsch_hub_position pos;
        const char *epoch = "0123456789abcdef";
        if ((arg & 0x80u) && wsch_hub_channel_position(w->hub, ch, &pos) == WSCH_OK) epoch = pos.epoch;
        snprintf(text, sizeof text,
                 "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\",\"presence\":true,"
                 "\"recover\":{\"offset\":%u,\"epoch\":\"%s\"}}}", ch, (arg >> 5) % 4u, epoch);
        break;
    }
    case 2:
        snprintf(text, sizeof text,
                 "{\"type\":\"subscribe\",\"payload\":{\"history\":%u,\"channel\":\"%s\",\"presence\":true}}",
                 (arg >> 5) % 6u, ch);
        break;
    case 3: snprintf(text, sizeof text, "{\"type\":\"presence\",\"payload\":{\"channel\":\"%s\"}}", ch); break;
    case 4: snprintf(text, sizeof text, "{\"type\":\"presence_stats\",\"payload\":{\"channel\":\"%s\"}}", ch); break;
    case 5:
        snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\",\"presence\":%s}}", ch,
                 (arg & 0x80u) ? "false" : "\"true\"");
        break;
    case 6: snprintf(text, sizeof text, "{\"type\":\"unsubscribe\",\"payload\":{\"channel\":\"%s\"}}", ch); break;
    case 7:
        snprintf(text, sizeof text, "{\"type\":\"%s\",\"payload\":%s}", (arg & 1u) ? "presence" : "presence_stats",
                 (arg & 2u) ? "{}" : (arg & 4u) ? "{\"channel\":7}" : "[\"a\"]");
        break;
    case 8: snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"payload\":{\"channel\":\"%s\"}}", ch); break;
    default:
        snprintf(text, sizeof text, "{\"type\":\"presence\",\"payload\":{\"channel\":\"%s\"},\"id\":%u}", ch, arg % 4u);
        break;
    }
    HB_T("  presence message %s\n", text);
    hb_feed(w, s, f, hb_frame(f, 0x81, text, strlen(text)));
}

/* wsch_hub_set_presence_info: good, malformed, too long, exactly as long
   as allowed, cleared, not UTF-8. */
static void hb_p_info(hb_world *w, hb_slot *s, unsigned v) {
    char buf[400];
    const char *json = buf;
    size_t len, max = w->desc.max_presence_info_len;
    int want = WSCH_OK, rc;
    switch (v % 8u) {
    case 0: len = (size_t)snprintf(buf, sizeof buf, "{\"n\":%u}", v >> 3); break;
    case 1: len = (size_t)snprintf(buf, sizeof buf, "\"phone\""); break;
    case 2: len = (size_t)snprintf(buf, sizeof buf, "{bad"); want = WSCH_ERR_JSON; break;
    case 3: /* one byte over */
    case 4: /* exactly the limit */
        len = max + ((v % 8u) == 3u ? 1u : 0u);
        if (len + 1u > sizeof buf) len = sizeof buf - 1u;
        memset(buf, 'i', len);
        buf[0] = buf[len - 1u] = '"';
        buf[len] = '\0';
        if (len > max) want = WSCH_ERR_TOO_LARGE;
        break;
    case 5: json = NULL; len = 0; break;
    case 6: len = (size_t)snprintf(buf, sizeof buf, "\"\xff\""); want = WSCH_ERR_UTF8; break;
    default: len = 0; snprintf(buf, sizeof buf, "[1,2]"); break;  /* len 0: cleared */
    }
    if (len > max && want == WSCH_OK) want = WSCH_ERR_TOO_LARGE;
    {
        char *copy = json ? fz_dup(json, len) : NULL;
        rc = wsch_hub_set_presence_info(w->hub, s->h, copy, len);
        free(copy);
    }
    HB_T("  set_presence_info(%u) len %zu: rc %d\n", v % 8u, len, rc);
    if (!s->used) FZ_CHECK(rc == WSCH_ERR_STALE);
    else FZ_CHECK(rc == want || (want == WSCH_OK && len && rc == WSCH_ERR_NOMEM) ||
                  (want == WSCH_ERR_UTF8 && rc == WSCH_ERR_JSON));
}

static void hb_op_flush(hb_world *w) {
    if (w->bridged) hb_r_sweep(w);
    w->flush_wait = wsch_hub_flush(w->hub);
    w->flushed = 1;
    HB_T("  flush: %u\n", (unsigned)w->flush_wait);
}

/* ---- bridge operations (18-25) --------------------------------------------- */

/* A bridge channel name: the hub's channels, users, malformed ones, fuzz
   bytes. *j gets its index in hb_channels, or -1. */
static size_t hb_pick_name(fz_in *in, char *buf, int *j) {
    static const char users[5] = {'1', '2', '3', '4', '9'};
    unsigned v = fz_u8(in);
    size_t got;
    const uint8_t *p;
    *j = -1;
    switch (v % 24u) {
    case 17: case 18: case 19: snprintf(buf, HB_NAME_CAP, "#user:%c", users[(v / 24u) % 5u]); break;
    case 20: snprintf(buf, HB_NAME_CAP, "#user:"); break;
    case 21: snprintf(buf, HB_NAME_CAP, "#userx1"); break;
    case 22:
        p = fz_bytes(in, fz_u8(in) % 24u, &got);
        memcpy(buf, p, got);
        buf[got] = '\0';
        *j = hb_channel_index(buf, got);
        return got;
    case 23:
        memset(buf, (v & 128u) ? 'x' : '#', 256);   /* longer than any limit */
        memcpy(buf, "#user:", 6);
        buf[(v & 64u) ? 256 : 135] = '\0';
        break;
    default:
        *j = (int)(v % 24u);
        snprintf(buf, HB_NAME_CAP, "%s", hb_channels[*j]);
        break;
    }
    return strlen(buf);
}

/* An epoch for a forged message: the store's, the hub's, a foreign one, or a malformed one. */
static void hb_forge_epoch(hb_world *w, fz_in *in, int j, char ep[WSCH_HUB_EPOCH_LEN + 1]) {
    unsigned v = fz_u8(in) % 7u;
    wsch_hub_position pos;
    if (v == 0 && j >= 0 && w->store[j].epoch[0]) memcpy(ep, w->store[j].epoch, WSCH_HUB_EPOCH_LEN + 1);
    else if (v == 1 && j >= 0 && wsch_hub_channel_position(w->hub, hb_channels[j], &pos) == WSCH_OK)
        memcpy(ep, pos.epoch, WSCH_HUB_EPOCH_LEN + 1);
    else if (v == 5) snprintf(ep, WSCH_HUB_EPOCH_LEN + 1, "E00000000000000F");     /* uppercase: refused */
    else if (v == 6) snprintf(ep, WSCH_HUB_EPOCH_LEN + 1, "abc");                  /* short: refused */
    else snprintf(ep, WSCH_HUB_EPOCH_LEN + 1, "f00000000000000%u", v % 4u);
}

/* An offset for a forged message: near the store's or the hub's, or extreme. */
static uint64_t hb_forge_offset(hb_world *w, fz_in *in, int j) {
    unsigned v = fz_u8(in), d = fz_u8(in) % 16u;
    wsch_hub_position pos;
    uint64_t base = 0;
    if (v & 1u) base = j >= 0 ? w->store[j].offset : 0;
    else if (j >= 0 && wsch_hub_channel_position(w->hub, hb_channels[j], &pos) == WSCH_OK) base = pos.offset;
    if (v & 8u) return (v & 16u) ? (uint64_t)INT64_MAX : (uint64_t)1 << 53;
    if (v & 2u) return base + d;
    if (v & 4u) return base > d ? base - d : 0;
    return d;
}

static size_t hb_numbered(char *out, size_t cap, const char *origin, uint64_t offset, const char *epoch) {
    int n = snprintf(out, cap, "wsch1 %s {\"type\":\"m\",\"payload\":%llu,\"channel\":\"c\",\"offset\":%llu,\"epoch\":\"%s\"}",
                     origin, (unsigned long long)(offset & 0xFFFFFFu), (unsigned long long)offset, epoch);
    FZ_CHECK(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static const char *hb_origin(const hb_world *w, unsigned foreign) {
    return foreign || !w->origin[0] ? "00000000000000aa" : w->origin;
}

/* A message from the bridge, on a name the script picks. */
static void hb_op_deliver(hb_world *w, fz_in *in) {
    unsigned variant = fz_u8(in) % 8u, v = variant;
    char name[HB_NAME_CAP + 1], data[HB_MSG_CAP + 64], ep[WSCH_HUB_EPOCH_LEN + 1];
    size_t name_len = 0, len = 0, delivered = 99, got;
    int j = -1, lie = 0, known = 0, rc;
    uint64_t off = 0;
    const uint8_t *p;
    switch (v) {
    case 0: case 1: case 2: case 7: { /* the FIFO's head, in order; 7: on a name the script picks */
        const hb_msg *m;
        if (!w->qlen) return;
        m = &w->q[w->qhead];
        w->qhead = (w->qhead + 1u) % HB_QCAP;
        w->qlen--;
        memcpy(data, m->data, m->len);
        len = m->len;
        if (v == 7) {
            name_len = hb_pick_name(in, name, &j);
            lie = name_len != m->name_len || memcmp(name, m->name, name_len) != 0;
        } else {
            memcpy(name, m->name, m->name_len + 1u);
            name_len = m->name_len;
            j = hb_channel_index(name, name_len);
        }
        break;
    }
    case 3: { /* a kept message once more, or before its turn */
        const char *kept;
        j = (int)(fz_u8(in) % HB_NCH);
        kept = hb_store_kept(w, j, w->store[j].offset - fz_u8(in) % HB_KEEP, &len);
        if (!kept) return;
        memcpy(data, kept, len);
        name_len = strlen(hb_channels[j]);
        memcpy(name, hb_channels[j], name_len + 1u);
        break;
    }
    case 4: /* numbered with a fuzz-chosen offset and epoch */
        name_len = hb_pick_name(in, name, &j);
        hb_forge_epoch(w, in, j, ep);
        off = hb_forge_offset(w, in, j);
        len = hb_numbered(data, sizeof data, hb_origin(w, fz_u8(in) & 1u), off, ep);
        lie = 1;
        break;
    case 5: /* raw bytes, perhaps behind a good header */
        name_len = hb_pick_name(in, name, &j);
        v = fz_u8(in);
        if (v & 1u) len = (size_t)snprintf(data, sizeof data, "wsch1 %s ", hb_origin(w, v & 2u));
        p = fz_bytes(in, fz_u8(in), &got);
        memcpy(data + len, p, got);
        len += got;
        lie = 1;
        break;
    default: /* 6: unnumbered, from this hub or another */
        name_len = hb_pick_name(in, name, &j);
        v = fz_u8(in);
        len = (size_t)snprintf(data, sizeof data, "wsch1 %s {\"type\":\"t\",\"payload\":[%u]}", hb_origin(w, v & 1u), v);
        break;
    }
    if (variant == 5 && len >= 6 && memcmp(data, "wschp ", 6) == 0) {
        /* Raw bytes as another hub's presence: the model cannot follow. */
        if (j >= 0) w->rinexact[j] = 1;
        else w->rstray = 1;
    }
    if (lie && w->shared && j >= 0) {
        /* A lying bridge may make the hub repeat itself from here on. */
        hb_mark_reset_all(w, j);
        known = hb_msg_position(data, len, &off, ep);
        if (known) hb_high_raise(w, j, ep, WSCH_HUB_EPOCH_LEN, off);
    }
    {
        char *copy = fz_dup(data, len); /* exact size: a read past the end is caught */
        rc = wsch_hub_bridge_deliver(w->hub, name, name_len, copy, len, &delivered);
        free(copy);
    }
    HB_T("  deliver(%u) %.*s: rc %d, delivered %zu\n", variant, (int)name_len, name, rc, delivered);
    FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_ARG || rc == WSCH_ERR_TOO_LARGE || rc == WSCH_ERR_JSON ||
             rc == WSCH_ERR_JSON_DEPTH || rc == WSCH_ERR_UTF8 || rc == WSCH_ERR_NO_TYPE || rc == WSCH_ERR_NOMEM);
    FZ_CHECK(delivered <= HB_SLOTS);
    if (rc != WSCH_OK) FZ_CHECK(delivered == 0);
    if (rc == WSCH_OK && lie && w->shared && j >= 0 && !known && name_len == strlen(hb_channels[j])) w->wild[j] = 1;
}

/* An answer to append: for a ticket out (numbered or not, OK or failed),
   or a ticket nobody has. */
static void hb_op_appended(hb_world *w, fz_in *in) {
    unsigned v = fz_u8(in) % 8u, i;
    uint64_t ticket;
    int status = WSCH_OK;
    if (!w->ntickets || v == 7) {
        unsigned b = fz_u8(in);
        ticket = (b & 3u) == 0 ? 0 : (b & 3u) == 1 ? w->last_ticket : (b & 3u) == 2 ? w->last_ticket + 1u + (b >> 4) : UINT64_MAX;
        HB_T("  appended bogus %llu\n", (unsigned long long)ticket);
        wsch_hub_bridge_appended(w->hub, ticket, (b & 4u) ? WSCH_ERR_STATE : WSCH_OK);
        return;
    }
    i = fz_u8(in) % w->ntickets;
    ticket = w->tickets[i].ticket;
    if (v != 4) hb_store_number(w, w->tickets[i].ch, w->tickets[i].data, w->tickets[i].len, v == 6);
    if (v == 4 || v == 5) status = (v == 4) ? WSCH_ERR_STATE : WSCH_ERR_TRANSPORT;
    w->tickets[i] = w->tickets[--w->ntickets];
    w->last_ticket = ticket;
    HB_T("  appended %llu status %d\n", (unsigned long long)ticket, status);
    wsch_hub_bridge_appended(w->hub, ticket, status);
}

/* An answer to fetch: from the store, failed, empty, forged, malformed. */
static void hb_op_fetched(hb_world *w, fz_in *in) {
    unsigned v = fz_u8(in) % 8u, i;
    char name[HB_NAME_CAP + 1], ep[WSCH_HUB_EPOCH_LEN + 1];
    char forged[HB_KEEP + 2][160];
    wsch_str msgs[HB_KEEP + 2];
    size_t name_len, count = HB_KEEP, k = 0;
    const char *epoch = "";
    uint64_t last = 0;
    int j, rc, status = WSCH_OK;
    if (w->nfetches && v != 7) {
        i = fz_u8(in) % w->nfetches;
        name_len = w->fetches[i].len;
        memcpy(name, w->fetches[i].name, name_len + 1u);
        count = w->fetches[i].count;
        w->fetches[i] = w->fetches[--w->nfetches];
        j = hb_channel_index(name, name_len);
    } else {
        name_len = hb_pick_name(in, name, &j);          /* nobody asked (any more) */
    }
    if (v == 5) { /* a position and messages of the script's choosing */
        unsigned c, n;
        if (fz_u8(in) & 1u) ep[0] = '\0';
        else hb_forge_epoch(w, in, j, ep);
        epoch = ep;
        last = hb_forge_offset(w, in, j);
        n = fz_u8(in) % (HB_KEEP + 3u);
        for (k = 0; k < n; k++) {
            uint64_t o = last - n + 1u + k;
            size_t kl;
            const char *kept = j >= 0 && strcmp(ep, w->store[j].epoch) == 0 ? hb_store_kept(w, j, o, &kl) : NULL;
            msgs[k].ptr = kept ? kept : forged[k];
            msgs[k].len = kept ? kl : hb_numbered(forged[k], sizeof forged[k], hb_origin(w, 0), o, ep);
        }
        c = fz_u8(in);
        if ((c & 1u) && k) {    /* and one of them wrong */
            size_t x = (c >> 1) % k;
            msgs[x].len = hb_numbered(forged[x], sizeof forged[x], hb_origin(w, 1), last - n + 1u + x + ((c & 2u) ? 1u : 0u),
                                      (c & 4u) ? "f000000000000009" : ep);
            msgs[x].ptr = forged[x];
        }
        if (w->shared && j >= 0) {
            hb_mark_reset_all(w, j);
            hb_high_raise(w, j, ep, strlen(ep), last);
        }
    } else if (v == 3) {
        unsigned c = fz_u8(in) % 4u;
        status = c == 0 ? WSCH_ERR_STATE : c == 1 ? WSCH_ERR_TRANSPORT : c == 2 ? WSCH_ERR_NOMEM : 7;
    } else if (v == 4) { /* "nothing": the truth only if the store has nothing */
        if (w->shared && j >= 0 && w->store[j].epoch[0]) hb_mark_reset_all(w, j);
    } else if (j >= 0 && w->store[j].epoch[0]) { /* what the store has now */
        const hb_store_ch *c = &w->store[j];
        uint64_t want = count < HB_KEEP ? count : HB_KEEP, o;
        if (want > c->offset) want = c->offset;
        if (v == 2) want = want ? fz_u8(in) % (want + 1u) : 0;     /* fewer than asked */
        for (o = c->offset - want + 1u; o <= c->offset; o++) {
            msgs[k].ptr = c->kept[o % HB_KEEP];
            msgs[k++].len = c->kept_len[o % HB_KEEP];
        }
        epoch = c->epoch;
        last = c->offset;
        if (v == 6) { /* malformed */
            unsigned c6 = fz_u8(in) % 5u;
            if (c6 == 0 && k >= 2) msgs[k - 1] = msgs[k - 2];         /* an offset twice, the last missing */
            else if (c6 == 1) epoch = NULL;
            else if (c6 == 2) last++;
            else if (c6 == 3 && k) msgs[k - 1].len--;                  /* cut short */
            else if (c6 == 4 && k) last = k - 1u;                     /* more messages than offsets */
            else if (c6 == 4) epoch = "0123";                          /* a short epoch */
        }
    }
    {
        /* Exact-size copies, so a read past the end of any is caught. */
        wsch_str copies[HB_KEEP + 2];
        char *nm = fz_dup(name, name_len);
        for (i = 0; i < k; i++) {
            copies[i].ptr = fz_dup(msgs[i].ptr, msgs[i].len);
            copies[i].len = msgs[i].len;
        }
        rc = wsch_hub_bridge_fetched(w->hub, nm, name_len, status, epoch, last, k ? copies : NULL, k);
        for (i = 0; i < k; i++) free((void *)(uintptr_t)copies[i].ptr);
        free(nm);
    }
    HB_T("  fetched(%u) %.*s status %d epoch %s last %llu count %zu: rc %d\n", v, (int)name_len, name, status,
         epoch ? epoch : "NULL", (unsigned long long)last, k, rc);
    /* The documented codes: a malformed message in an answer returns its own parse error. */
    FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_ARG || rc == WSCH_ERR_NOMEM || (!w->shared && rc == WSCH_ERR_STATE) ||
             rc == WSCH_ERR_JSON || rc == WSCH_ERR_JSON_DEPTH || rc == WSCH_ERR_UTF8 || rc == WSCH_ERR_NO_TYPE ||
             rc == WSCH_ERR_TOO_LARGE);
    if (!w->shared) FZ_CHECK(rc == WSCH_ERR_STATE);
}

/* ---- presence from other hubs (bridge and presence) ------------------------- */

/* Hands a presence message (header, body) to the hub on name (channel j
   of hb_channels, or -1) and keeps the model in step: another hub's
   message, to a channel that exists here, is applied as hb_r_apply reads
   it; the answer is the one the model expects. */
static void hb_p_deliver(hb_world *w, const char *name, size_t name_len, int j, const char *data, size_t len) {
    uint64_t origin = 0;
    size_t delivered = 99;
    int rc, want = WSCH_OK, expect = 0, header, own = 0, failed;
    char *nm = fz_dup(name, name_len), *copy = fz_dup(data, len);
    unsigned i;
    header = len >= WSCH_HUB_BRIDGE_HEADER_LEN && memcmp(data, "wschp ", 6) == 0 && data[22] == ' ' &&
             hb_hex16(data + 6, WSCH_HUB_EPOCH_LEN);
    if (header) {
        for (i = 0; i < WSCH_HUB_EPOCH_LEN; i++) {
            char c = data[6 + i];
            origin = (origin << 4) | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
        }
        own = w->origin[0] && memcmp(w->origin, data + 6, WSCH_HUB_EPOCH_LEN) == 0;
    }
    if (j >= 0 && (name_len != strlen(hb_channels[j]) || memcmp(name, hb_channels[j], name_len) != 0)) j = -1;
    if (header && !own && j >= 0 && w->exists[j]) {
        wsch_str body;
        body.ptr = data + WSCH_HUB_BRIDGE_HEADER_LEN;
        body.len = len - WSCH_HUB_BRIDGE_HEADER_LEN;
        want = hb_r_apply(w, j, origin, body, 1);
        expect = 1;
    } else if (header && !own && j < 0) {
        w->rstray = 1;          /* a channel this model does not follow may take it */
    }
    rc = wsch_hub_bridge_deliver(w->hub, nm, name_len, copy, len, &delivered);
    free(nm);
    free(copy);
    failed = w->al.fail_at && w->al.count >= w->al.fail_at;    /* what was applied is not known */
    HB_T("  presence delivered on %.*s (%zu bytes): rc %d, model %d%s\n", (int)name_len, name, len, rc, want,
         expect ? "" : " (not followed)");
    FZ_CHECK(delivered == 0);                           /* presence reaches no peer itself */
    FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_ARG || rc == WSCH_ERR_TOO_LARGE || rc == WSCH_ERR_JSON ||
             rc == WSCH_ERR_JSON_DEPTH || rc == WSCH_ERR_UTF8 || rc == WSCH_ERR_NOMEM);
    if (own && j >= 0 && w->exists[j]) FZ_CHECK(rc == WSCH_OK);   /* its own, said back: skipped */
    if (expect) {
        if (failed) w->rinexact[j] = 1;
        else FZ_CHECK(rc == want);
    }
}

/* A user id of another hub, as JSON text: this hub's ids too, escaped
   ones, UTF-8, and malformed (empty, not a string, U+0000, too long). */
static size_t hb_p_user(char *out, unsigned v, size_t max_id) {
    static const char *const ids[9] = {"\"1\"", "\"2\"", "\"r\"", "\"\\u0072\"", "\"\xc3\xa9\"", "\"\"", "7",
                                       "\"a\\u0000b\"", "\"\\ud83d\\ude00\""};
    v %= 12u;
    if (v == 9 || v == 10) {    /* exactly max_user_id_len, one over */
        size_t n = max_id + (v == 10 ? 1u : 0u);
        out[0] = '"';
        memset(out + 1, 'L', n);
        out[n + 1] = '"';
        return n + 2;
    }
    if (v == 11) v = 0;
    memcpy(out, ids[v], strlen(ids[v]));
    return strlen(ids[v]);
}

/* One member of a joins or leaves array, from two bytes. */
static size_t hb_p_elem(hb_world *w, char *out, unsigned a, unsigned b) {
    static const char *const conns[10] = {"", "1", "3", "4294967295", "0", "4294967296", "-2", "1.5", "\"2\"", "1e2"};
    size_t n = 0, max_info = w->desc.max_presence_info_len, i;
    unsigned shape = (b >> 3) % 5u, c = (a / 12u) % 10u, info = b % 8u;
    if (shape == 3) {
        memcpy(out, "7", 1);
        return 1;
    }
    if (shape == 4) {
        memcpy(out, "{\"nouser\":1}", 12);
        return 12;
    }
    memcpy(out, "{\"user\":", 8);
    n = 8;
    n += hb_p_user(out + n, a, w->desc.max_user_id_len);
    if (c) n += (size_t)sprintf(out + n, ",\"connections\":%s", conns[c]);
    if (info == 1) n += (size_t)sprintf(out + n, ",\"info\":1");
    else if (info == 2) n += (size_t)sprintf(out + n, ",\"info\":{\"k\":\"v\"}");
    else if (info == 3 || info == 4) {  /* exactly max_presence_info_len, one over */
        size_t len = max_info + (info == 4 ? 1u : 0u);
        n += (size_t)sprintf(out + n, ",\"info\":");
        out[n] = '"';
        for (i = 1; i + 1 < len; i++) out[n + i] = 'i';
        out[n + len - 1u] = '"';
        n += len;
    }
    out[n++] = '}';
    return n;
}

/* Another hub's presence message: joins, leaves, both (in either order),
   a sync, malformed bodies, raw bytes; from two other origins, this hub's
   own, or a malformed origin; mostly to the hub's channels. */
static void hb_op_pforge(hb_world *w, fz_in *in) {
    static const char *const origins[5] = {"00000000000000aa", "00000000000000bb", NULL, "0000000000000XYZ",
                                           "00000000000000AA"};
    char name[HB_NAME_CAP + 1], data[6144];
    size_t name_len, n, got;
    unsigned v = fz_u8(in), o = fz_u8(in) % 5u, shape = v % 10u, a, i;
    int j;
    const uint8_t *p;
    if (v & 0x80u) {
        name_len = hb_pick_name(in, name, &j);
    } else {
        j = (int)(fz_u8(in) % HB_NCH);
        name_len = strlen(hb_channels[j]);
        memcpy(name, hb_channels[j], name_len + 1u);
    }
    n = (size_t)snprintf(data, sizeof data, "wschp %s ", origins[o] ? origins[o] : hb_origin(w, 0));
    if (shape == 5) {
        n += (size_t)snprintf(data + n, sizeof data - n, "{\"joins\":{}}");
    } else if (shape == 6) {
        p = fz_bytes(in, fz_u8(in) % 64u, &got);
        memcpy(data + n, p, got);
        n += got;
    } else if (shape == 7) {
        n += (size_t)snprintf(data + n, sizeof data - n, "[1]");
    } else if (shape == 8) {
        n += (size_t)snprintf(data + n, sizeof data - n, "{\"sync\":true}");
    } else {
        /* 0 joins, 1 leaves, 2 joins and leaves, 3 joins and sync, 4 leaves then joins, 9 joins and "sync":false */
        int k, first = 1;
        data[n++] = '{';
        for (k = 0; k < 2; k++) {
            int leaves = (shape == 4) ? !k : k;
            unsigned count;
            if ((shape == 0 || shape == 3 || shape == 9) && leaves) continue;
            if (shape == 1 && !leaves) continue;
            if (!first) data[n++] = ',';
            first = 0;
            n += (size_t)sprintf(data + n, leaves ? "\"leaves\":[" : "\"joins\":[");
            count = fz_u8(in) % 5u;
            for (i = 0; i < count; i++) {
                a = fz_u8(in);
                if (i) data[n++] = ',';
                n += hb_p_elem(w, data + n, a, fz_u8(in));
            }
            data[n++] = ']';
        }
        if (shape == 3) n += (size_t)sprintf(data + n, ",\"sync\":true");
        if (shape == 9) n += (size_t)sprintf(data + n, ",\"sync\":false");
        data[n++] = '}';
    }
    hb_p_deliver(w, name, name_len, j, data, n);
}

/* One of this hub's own presence messages, back as another hub's (its
   origin replaced), on its channel or another. */
static void hb_op_preplay(hb_world *w, fz_in *in) {
    char data[HB_PMSG_CAP], name[HB_NAME_CAP + 1];
    size_t name_len;
    unsigned v = fz_u8(in), k;
    int j;
    if (!w->nown) return;
    k = (w->own_next - 1u - (v % w->nown)) % HB_OWN;
    memcpy(data, w->own[k].data, w->own[k].len);
    memcpy(data + 6, (v & 0x10u) ? "00000000000000bb" : "00000000000000aa", WSCH_HUB_EPOCH_LEN);
    if (v & 0x20u) {
        name_len = hb_pick_name(in, name, &j);
    } else {
        name_len = w->own[k].name_len;
        memcpy(name, w->own[k].name, name_len);
        name[name_len] = '\0';
        j = hb_channel_index(name, name_len);
    }
    hb_p_deliver(w, name, name_len, j, data, w->own[k].len);
}

/* The link came back (4: it was lost, with what was on the way and
   everything the bridge listened to). */
static void hb_op_resubscribe(hb_world *w, unsigned k) {
    if (k & 4u) {
        w->qlen = 0;
        w->nnames = 0;
        w->names_lost = 0;
    }
    w->deaf = 0;
    w->in_resub = 1;
    HB_T("  resubscribe%s\n", (k & 4u) ? " (link lost)" : "");
    wsch_hub_bridge_resubscribe(w->hub);
    w->in_resub = 0;
}

static void hb_op_store(hb_world *w, unsigned v) {
    HB_T("  store event %u\n", v % 8u);
    switch (v % 8u) {
    case 0: hb_store_flush(w); break;                   /* lost everything; what is on the way still comes */
    case 1: hb_store_flush(w); w->qlen = 0; break;      /* and what was on the way too */
    case 2:                                             /* one message lost to this hub: a gap */
        if (w->qlen) {
            w->qhead = (w->qhead + 1u) % HB_QCAP;
            w->qlen--;
        }
        break;
    case 3: w->qlen = 0; break;
    case 4: w->deaf = 1; break;                         /* link down until resubscribe */
    case 5: w->fail_append = !w->fail_append; break;
    case 6: w->fail_fetch = !w->fail_fetch; break;
    default: w->fail_publish = !w->fail_publish; break;
    }
}

/* A client publishes through on_message: reliable (a new id, or a resend) or not. */
static void hb_op_pub(hb_world *w, hb_slot *s, unsigned k, unsigned a) {
    char text[200];
    unsigned char f[300];
    const char *ch = hb_channels[a % HB_NCH];
    if (k & 0x80u) {
        snprintf(text, sizeof text, "{\"type\":\"pub\",\"payload\":{\"channel\":\"%s\",\"n\":%u}}", ch, a);
    } else {
        unsigned id = (k & 0x40u) && s->next_id ? s->next_id : ++s->next_id;
        snprintf(text, sizeof text, "{\"type\":\"pub\",\"payload\":{\"channel\":\"%s\",\"n\":%u},\"id\":%u}", ch, a,
                 id);
    }
    hb_feed(w, s, f, hb_frame(f, 0x81, text, strlen(text)));
}

static void hb_step(hb_world *w, fz_in *in) {
    /* Without a bridge the operations are the original 18, so old inputs
       keep their meaning; presence adds its own after the others. */
    unsigned base = w->bridged ? 26u : 18u, np = w->presence ? (w->bridged ? 6u : 4u) : 0u;
    unsigned op = fz_u8(in) % (base + np), k = fz_u8(in);
    hb_slot *s = &w->slot[k % HB_SLOTS];
    int rc;
    size_t n, delivered = 0;
    const uint8_t *p;
    HB_T("op %u slot %u (used %d, state %d)\n", op, k % HB_SLOTS, s->used,
         s->used ? (int)wsch_hub_peer_state(w->hub, s->h) : -1);
    if (op >= base) {
        switch (op - base) {
        case 0: hb_op_flush(w); break;
        case 1: hb_p_canned(w, s, k >> 2, fz_u8(in)); break;
        case 2: hb_p_info(w, s, k >> 2); break;
        case 3: w->now += ((k >> 2) + 1u) * 50u; break;   /* 50 ms to 3.2 s: intervals and TTLs */
        case 4: hb_op_pforge(w, in); break;
        default: hb_op_preplay(w, in); break;
        }
        return;
    }
    switch (op) {
    case 0: /* accept */
        if (!s->used) {
            wsch_hub_peer h;
            hb_slot keep = *s;
            memset(s, 0, sizeof *s);
            s->w = w;
            s->used = 1;
            rc = wsch_hub_accept(w->hub, NULL, s, &h);
            FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_LIMIT || rc == WSCH_ERR_STATE || rc == WSCH_ERR_NOMEM);
            FZ_CHECK(!s->close_asked); /* refused: the transport stays ours, no close() */
            if (rc == WSCH_OK) {
                w->accepted++;
                s->h = h;
                FZ_CHECK(wsch_hub_peer_valid(w->hub, h) && wsch_hub_peer_user(w->hub, h) == s);
                FZ_CHECK(keep.h.gen == 0 || keep.h.index != h.index || keep.h.gen != h.gen); /* handles not reused */
            } else {
                *s = keep;
                s->used = 0;
            }
        }
        break;
    case 1: { /* the opening request, whole or a byte at a time */
        char req[512];
        size_t i, len;
        hb_request(fz_u8(in), req, sizeof req, (unsigned)(s - w->slot), w->presence);
        len = strlen(req);
        if (k & 0x80u) {
            for (i = 0; i < len && s->used; i++) hb_feed(w, s, req + i, 1);
        } else {
            hb_feed(w, s, req, len);
        }
        break;
    }
    case 2: p = fz_bytes(in, fz_u8(in), &n); hb_feed(w, s, p, n); break;
    case 3: {
        unsigned char f[300];
        p = fz_bytes(in, fz_u8(in), &n);
        hb_feed(w, s, f, hb_frame(f, 0x81, p, n));
        break;
    }
    case 4: hb_canned(w, s, k >> 2, fz_u8(in)); break;
    case 5:
        if (s->used) {
            rc = wsch_hub_writable(w->hub, s->h);
            FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_CLOSED);
            hb_parse(s);
        }
        break;
    case 6: { /* fire one of the slot's armed timers */
        unsigned id = (k >> 2) % 3u == 0 ? WSCH_TIMER_HANDSHAKE : (k >> 2) % 3u == 1 ? WSCH_TIMER_CLOSE : WSCH_HUB_TIMER_IDLE;
        if (s->used && (s->timers & (1u << id))) {
            s->timers &= ~(1u << id);
            FZ_CHECK(wsch_hub_timer_fired(w->hub, s->h, id) == WSCH_OK);
            hb_parse(s);
        }
        break;
    }
    case 7: if (s->used) hb_report_closed(w, s); break;
    case 8: {
        static const char *const payloads[4] = {NULL, "{\"m\":\"hi\"}", "[1,", "\"x\""};
        unsigned a = fz_u8(in);
        const char *pl = payloads[(a >> 4) % 4u];
        rc = wsch_hub_broadcast(w->hub, hb_channels[a % HB_NCH], (a & 8u) ? "chat" : "", pl,
                                pl ? ((a & 1u) ? WSCH_CSTR : strlen(pl)) : 0, &delivered);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_ARG || rc == WSCH_ERR_JSON || rc == WSCH_ERR_NOMEM ||
                 rc == WSCH_ERR_TOO_LARGE || (w->shared && (rc == WSCH_ERR_STATE || rc == WSCH_ERR_LIMIT)));
        HB_T("  broadcast %s: rc %d, delivered %zu\n", hb_channels[a % HB_NCH], rc, delivered);
        if ((a >> 4) % 4u == 2) FZ_CHECK(rc == WSCH_ERR_JSON || rc == WSCH_ERR_ARG);
        if (rc == WSCH_OK) FZ_CHECK(delivered <= HB_SLOTS);
        if (w->shared) FZ_CHECK(delivered == 0);   /* delivered when the bridge brings it back */
        break;
    }
    case 9: {
        char uid[4];
        snprintf(uid, sizeof uid, "%u", (k >> 2) % 5u);
        rc = wsch_hub_send_to_user(w->hub, uid, "note", "1", (k & 0x80u) ? WSCH_CSTR : 1, &delivered);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_NOMEM);
        if (rc == WSCH_OK) FZ_CHECK(delivered <= wsch_hub_user_connections(w->hub, uid) + HB_SLOTS);
        break;
    }
    case 10:
        rc = wsch_hub_send(w->hub, s->h, "direct", "{}", 2);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_STALE || rc == WSCH_ERR_STATE || rc == WSCH_ERR_NOMEM);
        break;
    case 11: {
        unsigned a = fz_u8(in);
        /* A server-side unsubscribe says nothing to the peer: its order check
           starts afresh after what is queued now. */
        if (!(a & 1u)) hb_mark_unsub(s, (int)((a >> 1) % HB_NCH));
        rc = (a & 1u) ? wsch_hub_subscribe(w->hub, s->h, hb_channels[(a >> 1) % HB_NCH])
                      : wsch_hub_unsubscribe(w->hub, s->h, hb_channels[(a >> 1) % HB_NCH]);
        FZ_CHECK(rc == WSCH_OK || rc == WSCH_ERR_STALE || rc == WSCH_ERR_STATE || rc == WSCH_ERR_ARG ||
                 rc == WSCH_ERR_LIMIT || rc == WSCH_ERR_NOMEM);
        break;
    }
    case 12:
        rc = wsch_hub_peer_close(w->hub, s->h, (k & 4u) ? 4000 : 1000, (k & 8u) ? "bye" : NULL,
                                 (k & 16u) ? WSCH_CSTR : (k & 8u) ? 3 : 0);
        FZ_CHECK(rc <= 0 && rc > WSCH_ERR_LAST_);
        hb_parse(s);
        break;
    case 13: s->send_mode = (k >> 2) % 4u; break;
    case 14: w->al.fail_at = w->al.count + 1 + ((k >> 2) & 3u); break;
    case 15: wsch_hub_shutdown(w->hub); w->shut = 1; break;
    case 16: w->now += (k + 1u) * 1000u; break;
    case 18: case 19: hb_op_deliver(w, in); break;
    case 20: hb_op_appended(w, in); break;
    case 21: case 25: hb_op_fetched(w, in); break;
    case 22: hb_op_resubscribe(w, k); break;
    case 23: hb_op_store(w, k >> 2); break;
    case 24: hb_op_pub(w, s, k, fz_u8(in)); break;
    default: /* 17: the peer's EOF arrives after close(): too late to matter */
        for (k = 0; k < HB_SLOTS; k++)
            if (w->slot[k].close_asked) FZ_CHECK(wsch_hub_transport_closed(w->hub, w->slot[k].h) == WSCH_ERR_STALE);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    hb_world *w = (hb_world *)calloc(1, sizeof(hb_world));
    fz_in in;
    unsigned b0, b1, i, steps = 0;
    int rc;
    FZ_CHECK(w != NULL);
    in.p = data;
    in.n = size;
    b0 = fz_u8(&in);
    b1 = fz_u8(&in);
    w->rng = 1;
    w->now = 5000;
    w->desc.max_peers = 3;
    w->desc.max_channels_per_peer = (b0 & 1u) ? 2 : 0;
    w->desc.max_channel_len = (b0 & 2u) ? 8 : 0;
    w->desc.limits.max_message_size = (b0 & 4u) ? 128 : 0;
    w->desc.limits.max_outbound_bytes = (b0 & 8u) ? 256 : 0;
    w->desc.reject_with_http = (int)((b0 >> 4) & 1u);
    w->desc.idle_timeout_ms = (b0 & 32u) ? 3000 : (b0 & 64u) ? WSCH_HUB_NO_TIMEOUT : 0;
    w->desc.subprotocol = (b0 & 128u) ? "chat" : NULL;
    w->desc.allocator = fz_allocator(&w->al);
    w->desc.effects.send = hb_send;
    w->desc.effects.close = hb_close;
    w->desc.effects.timer_set = hb_timer_set;
    w->desc.effects.timer_cancel = hb_timer_cancel;
    if (b1 & 1u) w->desc.effects.now_ms = hb_now;
    if ((b1 & 1u) && (b1 & 64u)) {     /* history: small, so its limits are reached */
        w->desc.history_size = 4;
        w->desc.history_ttl_ms = 4000;
        w->desc.history_max_bytes = 1500;
    }
    w->desc.effects.random_bytes = hb_random;
    w->reenter = (b1 & 16u) != 0;
    w->desc.check_origin = hb_check_origin;
    w->desc.authenticate = (b1 & 2u) ? NULL : hb_authenticate;
    w->desc.authorize_subscribe = hb_authorize;
    w->desc.on_http = (b1 & 4u) ? hb_on_http : NULL;
    w->desc.on_connect = hb_on_connect;
    w->desc.on_disconnect = hb_on_disconnect;
    w->desc.on_message = (b1 & 8u) ? NULL : hb_on_message;
    w->desc.user = w;
    if (b1 & 128u) { /* a bridge (byte 2: see the top of this file) */
        unsigned b2 = fz_u8(&in);
        w->bridged = 1;
        w->desc.bridge.subscribe = hb_b_subscribe;
        w->desc.bridge.unsubscribe = hb_b_unsubscribe;
        w->desc.bridge.publish = hb_b_publish;
        w->desc.bridge.user = w;
        if (b2 & 1u) {
            w->desc.bridge.append = hb_b_append;
            w->desc.bridge.fetch = hb_b_fetch;
            if (!(b2 & 8u)) {
                w->desc.effects.now_ms = hb_now;
                w->desc.history_size = 1u + ((b2 >> 4) & 7u);
                w->desc.history_ttl_ms = (b2 & 2u) ? 0 : 4000;
                w->desc.history_max_bytes = (b2 & 4u) ? 0 : 1500;
            }
        } else if (b2 & 2u) {
            w->desc.positions = 1;
        }
    }
    /* Presence: byte 1's history bit without its clock bit (which meant
       nothing), configured by the next byte (see the top of this file). */
    w->presence = (b1 & 0x41u) == 0x40u;
    if (w->presence) {
        unsigned p = fz_u8(&in);
        w->desc.presence = 1;
        if ((p & 1u) || w->bridged) w->desc.effects.now_ms = hb_now;
        if ((p & 2u) && w->desc.effects.now_ms && !w->desc.history_size) {
            w->desc.history_size = 4;
            w->desc.history_ttl_ms = 4000;
            w->desc.history_max_bytes = 1500;
        }
        w->desc.presence_max_members = (p >> 2) & 3u;      /* 1 to 3, or 0: the default (1000) */
        w->desc.presence_stats_interval_ms = (p & 16u) ? 2500u : 300u;
        w->desc.max_presence_info_len = (p & 32u) ? 12u : 0u;
        w->desc.presence_ttl_ms = (p & 64u) ? 6000u : 0u;
        w->info_in_auth = (p & 128u) != 0;
        w->desc.on_presence = hb_on_presence;
    }
    rc = wsch_hub_create(&w->desc, &w->hub);
    FZ_CHECK(rc == WSCH_OK);
    w->desc = wsch_hub_desc_defaults(&w->desc);
    w->shared = w->desc.bridge.append != NULL && w->desc.history_size > 0;
    hb_info_max = w->desc.max_presence_info_len;
    while (in.n && steps++ < 3000) {
        w->flushed = 0;
        w->failed_now = 0;
        hb_step(w, &in);
        if (w->al.fail_at && w->al.count >= w->al.fail_at) {
            w->al.fail_at = 0;
            w->failed_now = w->failed_ever = 1;
            /* What this hub said of its users may differ from what it has. */
            if (w->flushed)
                for (i = 0; i < HB_NCH; i++) w->said_unknown[i] = 1;
        }
        hb_invariants(w);
    }
    /* wind down like a server loop: the peers go away, or the hub is
       destroyed under them (it closes each, and calls nothing else) */
    w->al.fail_at = 0;
    w->flushed = w->failed_now = 0;
    for (i = 0; i < HB_SLOTS; i++)
        if (w->slot[i].used && (b1 & 32u)) hb_report_closed(w, &w->slot[i]);
    hb_invariants(w);
    w->destroying = 1;
    wsch_hub_destroy(w->hub);
    for (i = 0; i < HB_SLOTS; i++) FZ_CHECK(!w->slot[i].used);
    FZ_CHECK(w->closes == w->accepted);     /* close() exactly once per transport */
    FZ_CHECK(w->al.live == 0);
    free(w);
    return 0;
}
