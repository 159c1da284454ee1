/* td_scratch: one scratch arena per pool thread, lent out per work item.
 *
 * libuv's pool threads are not ours, so arenas live in a pool that a work
 * function borrows from and returns to. An arena grows (once) when a model
 * needs more than it has; the forward pass itself never allocates.
 *
 * Thread: td_scratch_borrow/return are thread-safe (a mutex guards the
 * free list); init/free are for the owner. */
#ifndef TD_SCRATCH_H
#define TD_SCRATCH_H

#include <pthread.h>
#include <stddef.h>

#include "td_arena.h"

typedef struct td_scratch_pool {
    pthread_mutex_t lock;
    td_arena *arenas;    /* owned, n of them */
    int *free_list;      /* indices of arenas not lent out */
    int n, n_free;
} td_scratch_pool;

int td_scratch_init(td_scratch_pool *p, int n);
void td_scratch_free(td_scratch_pool *p);
/* An arena with at least `bytes` capacity, reset; NULL if out of memory
 * (or, impossible by construction, none free). Return it when done. */
td_arena *td_scratch_borrow(td_scratch_pool *p, size_t bytes);
void td_scratch_return(td_scratch_pool *p, td_arena *a);

#endif
