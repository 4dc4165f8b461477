/* The tests' allocator: counts what is live (blocks and bytes) and the peak,
   and refuses the Nth allocation -- or every one from the Nth on -- when
   asked. One copy for every suite, so a fix here reaches all of them.

   Include after ws_channel.h (with WS_CHANNEL_IMPLEMENTATION defined there
   when the file wants the implementation). */
#ifndef TESTS_ALLOC_H
#define TESTS_ALLOC_H

#include "ws_channel.h"

#include <stdlib.h>
#include <string.h>

#include "test_helper.h"

typedef struct alloc_counter {
    size_t allocs;          /* allocations asked for, refused ones included */
    size_t failed;          /* allocations refused */
    size_t live_blocks;     /* blocks not yet freed */
    size_t live_bytes;      /* bytes not yet freed */
    size_t peak_bytes;      /* the most bytes live at once */
    size_t fail_at;         /* the allocation (1-based) refused; 0 = none */
    int fail_all_after;     /* refuse every allocation after fail_at too */
} alloc_counter;

/* Each block carries its size in front; 16 bytes keep malloc's alignment. */
#define ALLOC_COUNTER_HEAD 16

TEST_HELPER void *alloc_counter_alloc(size_t size, void *user) {
    alloc_counter *a = (alloc_counter *)user;
    unsigned char *p;
    a->allocs++;
    if (a->fail_at && (a->allocs == a->fail_at || (a->fail_all_after && a->allocs > a->fail_at))) {
        a->failed++;
        return NULL;
    }
    p = (unsigned char *)malloc(ALLOC_COUNTER_HEAD + size);
    if (!p) return NULL;
    memcpy(p, &size, sizeof size);
    a->live_blocks++;
    a->live_bytes += size;
    if (a->live_bytes > a->peak_bytes) a->peak_bytes = a->live_bytes;
    return p + ALLOC_COUNTER_HEAD;
}

TEST_HELPER void alloc_counter_free(void *ptr, void *user) {
    alloc_counter *a = (alloc_counter *)user;
    unsigned char *p;
    size_t size;
    if (!ptr) return;
    p = (unsigned char *)ptr - ALLOC_COUNTER_HEAD;
    memcpy(&size, p, sizeof size);
    a->live_blocks--;
    a->live_bytes -= size;
    free(p);
}

/* The hooks for a desc's allocator member, counting into a. */
TEST_HELPER wsch_allocator alloc_counter_allocator(alloc_counter *a) {
    wsch_allocator w;
    w.alloc = alloc_counter_alloc;
    w.free = alloc_counter_free;
    w.user = a;
    return w;
}

#endif
