/* hub_json.h - the demo hub's envelopes for the C hub peers (lws_hub.c,
   wslay_hub.c), on cJSON (Debian libcjson-dev), so both peers parse and
   build the protocol of node_server.js's hub mode the same way:
       -> {"type":"subscribe","payload":{"channel":C}}    <- {"type":"subscribed","payload":{"channel":C}}
       -> {"type":"unsubscribe","payload":{"channel":C}}  <- {"type":"unsubscribed","payload":{"channel":C}}
       -> {"type":"publish","payload":{"channel":C,"data":D}}
       <- {"type":"message","payload":{"channel":C,"from":T,"data":D}} to every subscriber
       -> {"type":"ping","payload":P}                     <- {"type":"pong","payload":P}
   Every envelope built here is one malloc'd buffer with `pre` bytes of
   headroom before the JSON (libwebsockets writes its frame header there),
   so a broadcast is serialised once and shared by every subscriber. */
#ifndef BENCH_HUB_JSON_H
#define BENCH_HUB_JSON_H

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

enum { HUB_BAD, HUB_PING, HUB_SUBSCRIBE, HUB_UNSUBSCRIBE, HUB_PUBLISH, HUB_UNKNOWN };

typedef struct hub_req {
    int kind;
    const char *type;        /* as sent, for the unknown_type error */
    const char *channel;     /* points into root; NULL when missing */
    cJSON *root, *payload;
} hub_req;

/* Parses one text message; returns r->kind. Free with hub_req_free. */
static int hub_parse(const char *text, size_t len, hub_req *r) {
    cJSON *t, *c;
    memset(r, 0, sizeof *r);
    r->root = cJSON_ParseWithLength(text, len);
    if (!r->root || !cJSON_IsObject(r->root)) return r->kind = HUB_BAD;
    t = cJSON_GetObjectItemCaseSensitive(r->root, "type");
    r->payload = cJSON_GetObjectItemCaseSensitive(r->root, "payload");
    c = cJSON_IsObject(r->payload) ? cJSON_GetObjectItemCaseSensitive(r->payload, "channel") : NULL;
    r->channel = cJSON_IsString(c) ? c->valuestring : NULL;
    r->type = cJSON_IsString(t) ? t->valuestring : "";
    if (strcmp(r->type, "ping") == 0) return r->kind = HUB_PING;
    if (strcmp(r->type, "subscribe") == 0) return r->kind = r->channel ? HUB_SUBSCRIBE : HUB_BAD;
    if (strcmp(r->type, "unsubscribe") == 0) return r->kind = r->channel ? HUB_UNSUBSCRIBE : HUB_BAD;
    if (strcmp(r->type, "publish") == 0) return r->kind = r->channel ? HUB_PUBLISH : HUB_BAD;
    return r->kind = HUB_UNKNOWN;
}

static void hub_req_free(hub_req *r) {
    cJSON_Delete(r->root);
    r->root = NULL;
}

/* {"type":TYPE,"payload":PAYLOAD} into a buffer with `pre` bytes of
   headroom; takes PAYLOAD. Returns NULL when out of memory. */
static unsigned char *hub_envelope(size_t pre, const char *type, cJSON *payload, size_t *len) {
    cJSON *env = cJSON_CreateObject();
    char *json;
    unsigned char *out = NULL;
    if (!env || !payload) {
        cJSON_Delete(env);
        cJSON_Delete(payload);
        return NULL;
    }
    cJSON_AddStringToObject(env, "type", type);
    cJSON_AddItemToObject(env, "payload", payload);
    json = cJSON_PrintUnformatted(env);
    cJSON_Delete(env);
    if (!json) return NULL;
    *len = strlen(json);
    out = (unsigned char *)malloc(pre + *len + 1);
    if (out) memcpy(out + pre, json, *len + 1);
    cJSON_free(json);
    return out;
}

/* {"type":TYPE,"payload":{KEY:VALUE}}: welcome, subscribed, errors. */
static unsigned char *hub_reply(size_t pre, const char *type, const char *key, const char *value, size_t *len) {
    cJSON *p = cJSON_CreateObject();
    if (p) cJSON_AddStringToObject(p, key, value);
    return hub_envelope(pre, type, p, len);
}

/* The broadcast of a publish from `user`. */
static unsigned char *hub_message(size_t pre, const hub_req *r, const char *user, size_t *len) {
    cJSON *p = cJSON_CreateObject(), *data = cJSON_GetObjectItemCaseSensitive(r->payload, "data");
    if (p) {
        cJSON_AddStringToObject(p, "channel", r->channel);
        cJSON_AddStringToObject(p, "from", user);
        cJSON_AddItemToObject(p, "data", data ? cJSON_Duplicate(data, 1) : cJSON_CreateNull());
    }
    return hub_envelope(pre, "message", p, len);
}

/* The pong to a ping: its payload back. */
static unsigned char *hub_pong(size_t pre, const hub_req *r, size_t *len) {
    return hub_envelope(pre, "pong", r->payload ? cJSON_Duplicate(r->payload, 1) : cJSON_CreateNull(), len);
}

#endif
