/* td_arena: a bump allocator for per-request and per-worker scratch.
 *
 * One malloc at init; td_arena_alloc carves 64-byte aligned blocks from it
 * and never calls malloc. td_arena_reset gives everything back at once.
 * A forward pass sizes its arena when the model loads, so inference does
 * not allocate. Thread: one arena per thread; no locking. */
#ifndef TD_ARENA_H
#define TD_ARENA_H

#include <stddef.h>

#include "td_err.h"

#define TD_ARENA_ALIGN 64

typedef struct td_arena {
    unsigned char *base; /* owned; freed by td_arena_free */
    size_t cap;          /* bytes */
    size_t used;         /* bytes, always a multiple of TD_ARENA_ALIGN */
    size_t high_water;   /* largest `used` seen, for sizing */
} td_arena;

/* Allocate cap bytes of backing store (rounded up to the alignment). */
td_status td_arena_init(td_arena *a, size_t cap, td_error *err);
void td_arena_free(td_arena *a);
/* n bytes, 64-byte aligned, or NULL when the arena is exhausted. The memory
 * belongs to the arena: valid until the next reset or free. */
void *td_arena_alloc(td_arena *a, size_t n);
/* Like td_arena_alloc but zero-filled. */
void *td_arena_calloc(td_arena *a, size_t n);
/* The bytes td_arena_alloc(n) would consume, for sizing an arena up front. */
size_t td_arena_round(size_t n);
/* Save and restore a position, for nested scratch use. */
size_t td_arena_mark(const td_arena *a);
void td_arena_release(td_arena *a, size_t mark);
void td_arena_reset(td_arena *a);

#endif
