/* td_arena: bump allocation over one aligned block. */
#include "config.h"

#include "td_arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t td_arena_round(size_t n)
{
    if (n > SIZE_MAX - (TD_ARENA_ALIGN - 1))
        return SIZE_MAX;
    return (n + TD_ARENA_ALIGN - 1) & ~(size_t)(TD_ARENA_ALIGN - 1);
}

td_status td_arena_init(td_arena *a, size_t cap, td_error *err)
{
    memset(a, 0, sizeof *a);
    cap = td_arena_round(cap ? cap : TD_ARENA_ALIGN);
    if (cap == SIZE_MAX)
        return td_error_set(err, TD_ENOMEM, "arena of %zu bytes is too large",
                            cap);
    a->base = aligned_alloc(TD_ARENA_ALIGN, cap);
    if (!a->base)
        return td_error_set(err, TD_ENOMEM,
                            "cannot allocate an arena of %zu bytes", cap);
    a->cap = cap;
    return TD_OK;
}

void td_arena_free(td_arena *a)
{
    free(a->base);
    memset(a, 0, sizeof *a);
}

void *td_arena_alloc(td_arena *a, size_t n)
{
    size_t need = td_arena_round(n ? n : 1);
    void *p;
    if (need == SIZE_MAX || need > a->cap - a->used)
        return NULL;
    p = a->base + a->used;
    a->used += need;
    if (a->used > a->high_water)
        a->high_water = a->used;
    return p;
}

void *td_arena_calloc(td_arena *a, size_t n)
{
    void *p = td_arena_alloc(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

size_t td_arena_mark(const td_arena *a) { return a->used; }

void td_arena_release(td_arena *a, size_t mark)
{
    if (mark <= a->used)
        a->used = mark;
}

void td_arena_reset(td_arena *a) { a->used = 0; }
