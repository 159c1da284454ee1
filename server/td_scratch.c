/* td_scratch: a mutex-guarded free list of per-worker arenas. */
#include "config.h"

#include "td_scratch.h"

#include <stdlib.h>
#include <string.h>

int td_scratch_init(td_scratch_pool *p, int n)
{
    int i;
    memset(p, 0, sizeof *p);
    p->arenas = calloc((size_t)n, sizeof *p->arenas);
    p->free_list = calloc((size_t)n, sizeof *p->free_list);
    if (!p->arenas || !p->free_list) {
        free(p->arenas);
        free(p->free_list);
        return -1;
    }
    pthread_mutex_init(&p->lock, NULL);
    p->n = p->n_free = n;
    for (i = 0; i < n; i++)
        p->free_list[i] = i;
    return 0;
}

void td_scratch_free(td_scratch_pool *p)
{
    int i;
    if (!p->arenas)
        return;
    for (i = 0; i < p->n; i++)
        td_arena_free(&p->arenas[i]);
    free(p->arenas);
    free(p->free_list);
    pthread_mutex_destroy(&p->lock);
    memset(p, 0, sizeof *p);
}

td_arena *td_scratch_borrow(td_scratch_pool *p, size_t bytes)
{
    td_arena *a = NULL;
    /* A model's size function answers SIZE_MAX for sizes it refuses. */
    if (bytes > ((size_t)1 << 40))
        return NULL;
    pthread_mutex_lock(&p->lock);
    if (p->n_free > 0)
        a = &p->arenas[p->free_list[--p->n_free]];
    pthread_mutex_unlock(&p->lock);
    if (!a)
        return NULL;
    if (a->cap < bytes || !a->base) {
        /* Grow once to what this model needs (plus headroom for the next). */
        td_arena_free(a);
        if (td_arena_init(a, bytes + bytes / 4 + 4096, NULL) != TD_OK) {
            td_scratch_return(p, a);
            return NULL;
        }
    }
    td_arena_reset(a);
    return a;
}

void td_scratch_return(td_scratch_pool *p, td_arena *a)
{
    pthread_mutex_lock(&p->lock);
    p->free_list[p->n_free++] = (int)(a - p->arenas);
    pthread_mutex_unlock(&p->lock);
}
