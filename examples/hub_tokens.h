/* hub_tokens.h - "USER=SECRET" pairs for a hub's authenticate hook, the
   secret compared in constant time: what hub_server.c and chat_server.c
   let in. Glue for the examples, not part of the library (the hub asks
   its authenticate hook and keeps no table of its own). Include after
   ws_channel.h.

       static hub_tokens tokens;
       hub_tokens_add(&tokens, "alice=secret")       (0, or -1: malformed, no memory)
       authenticate hook: return hub_tokens_check(&tokens, req->token, user_id);
       at the end: hub_tokens_free(&tokens) */
#ifndef HUB_TOKENS_H
#define HUB_TOKENS_H

#include <stdlib.h>
#include <string.h>

typedef struct hub_tokens {
    char **pairs;               /* "USER\0SECRET", split at the '=' */
    size_t n;
} hub_tokens;

/* Adds "USER=SECRET" (both non-empty). 0, or -1 for a malformed pair or no memory. */
static inline int hub_tokens_add(hub_tokens *t, const char *pair) {
    const char *eq = strchr(pair, '=');
    char **more, *copy;
    size_t len = strlen(pair);
    if (!eq || eq == pair || !eq[1]) return -1;
    more = (char **)realloc(t->pairs, (t->n + 1) * sizeof *more);
    if (!more) return -1;
    t->pairs = more;
    if (!(copy = (char *)malloc(len + 1))) return -1;
    memcpy(copy, pair, len + 1);
    copy[eq - pair] = '\0';
    t->pairs[t->n++] = copy;
    return 0;
}

/* WSCH_OK with *user_id set when token is one of the secrets, else
   WSCH_ERR_DENIED. Each comparison takes the same time whatever bytes match. */
static inline int hub_tokens_check(const hub_tokens *t, wsch_str token, wsch_str *user_id) {
    size_t i, k;
    for (i = 0; i < t->n; i++) {
        const char *user = t->pairs[i], *secret = user + strlen(user) + 1;
        unsigned diff = 0;
        if (strlen(secret) != token.len) continue;
        for (k = 0; k < token.len; k++) diff |= (unsigned)(unsigned char)(secret[k] ^ token.ptr[k]);
        if (diff == 0) {
            user_id->ptr = user;
            user_id->len = strlen(user);
            return WSCH_OK;
        }
    }
    return WSCH_ERR_DENIED;
}

static inline void hub_tokens_free(hub_tokens *t) {
    while (t->n) free(t->pairs[--t->n]);
    free(t->pairs);
    t->pairs = NULL;
}

#endif /* HUB_TOKENS_H */
