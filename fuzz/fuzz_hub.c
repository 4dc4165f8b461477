/* The hub (wsch_hub) driven by a fuzz-chosen sequence of events on up to
   four transports, with the server-side calls mixed in, and optionally a
   bridge to other processes whose answers come at fuzz-chosen times.

     bytes 0-1  configuration (limits, reject_with_http, idle timeout);
                byte 1's top bit adds a bridge, configured by byte 2
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
   order check for that channel from that point of each peer's stream. */
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
    } resets[HB_RESETS];
    unsigned nresets;
    int lax;                    /* too many restarts pending: no order check for this peer */
    unsigned next_id;           /* reliable messages ("id") sent by op 24 */
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
    s->nresets++;
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
            s->resets[i] = s->resets[--s->nresets];
        } else {
            i++;
        }
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

static void hb_b_subscribe(const char *name, size_t len, void *user) {
    hb_world *w = (hb_world *)user;
    FZ_CHECK(!w->destroying);
    FZ_CHECK(name != NULL && len > 0 && name[len] == '\0');
    HB_T("  bridge subscribe %.*s\n", (int)len, name);
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
    FZ_CHECK(!w->destroying);
    FZ_CHECK(name != NULL && len > 0 && name[len] == '\0');
    HB_T("  bridge unsubscribe %.*s\n", (int)len, name);
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
    (void)hub;
    (void)user;
    FZ_CHECK(req->token.len <= 4096);
    if (req->token.len == 0) return WSCH_OK; /* anonymous */
    if (req->token.len == 6 && memcmp(req->token.ptr, "good-", 5) == 0) {
        user_id->ptr = req->token.ptr + 5; /* "1", "2", ...: borrowed until return */
        user_id->len = 1;
        return WSCH_OK;
    }
    return WSCH_ERR_DENIED;
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
}

/* ---- operations ----------------------------------------------------------- */

static const char *hb_request(unsigned v, char *buf, size_t cap, unsigned slot) {
    char line[128];
    const char *path = (v & 8u) ? "/" : (v & 16u) ? "/other" : (v & 32u) ? "/ws?token=good-9&session=s1" : "/ws";
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
    /* Without a bridge the operations are the original 18, so old inputs keep their meaning. */
    unsigned op = fz_u8(in) % (w->bridged ? 26u : 18u), k = fz_u8(in);
    hb_slot *s = &w->slot[k % HB_SLOTS];
    int rc;
    size_t n, delivered = 0;
    const uint8_t *p;
    HB_T("op %u slot %u (used %d, state %d)\n", op, k % HB_SLOTS, s->used,
         s->used ? (int)wsch_hub_peer_state(w->hub, s->h) : -1);
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
        hb_request(fz_u8(in), req, sizeof req, (unsigned)(s - w->slot));
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
        if (!(a & 1u)) hb_mark_reset(s, (int)((a >> 1) % HB_NCH));
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
    rc = wsch_hub_create(&w->desc, &w->hub);
    FZ_CHECK(rc == WSCH_OK);
    w->desc = wsch_hub_desc_defaults(&w->desc);
    w->shared = w->desc.bridge.append != NULL && w->desc.history_size > 0;
    while (in.n && steps++ < 3000) {
        hb_step(w, &in);
        if (w->al.fail_at && w->al.count >= w->al.fail_at) w->al.fail_at = 0;
        hb_invariants(w);
    }
    /* wind down like a server loop: the peers go away, or the hub is
       destroyed under them (it closes each, and calls nothing else) */
    w->al.fail_at = 0;
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
