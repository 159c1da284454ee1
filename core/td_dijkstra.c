/* td_dijkstra: binary-heap Dijkstra, one- and two-directional. */
#include "config.h"

#include "td_dijkstra.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t td_dijkstra_ws_bytes(uint32_t n)
{
    return 2 * (size_t)n * (sizeof(double) + sizeof(td_heap_item) +
                            4 * sizeof(uint32_t) + 1);
}

td_status td_dijkstra_ws_init(td_dijkstra_ws *ws, uint32_t n, td_error *err)
{
    memset(ws, 0, sizeof *ws);
    ws->n = n;
    size_t nn = (size_t)n + 1;
    for (int s = 0; s < 2; s++) {
        td_dside *d = &ws->side[s];
        d->dist = malloc(nn * sizeof *d->dist);
        d->pred = malloc(nn * sizeof *d->pred);
        d->hpos = calloc(nn, sizeof *d->hpos);
        d->heap = malloc(nn * sizeof *d->heap);
        d->settled = malloc(nn * sizeof *d->settled);
        d->touched = malloc(nn * sizeof *d->touched);
        d->done = calloc(nn, 1);
        if (!d->dist || !d->pred || !d->hpos || !d->heap || !d->settled ||
            !d->touched || !d->done) {
            td_dijkstra_ws_free(ws);
            return td_error_set(err, TD_ENOMEM, "dijkstra workspace: out of "
                                "memory for %u vertices", (unsigned)n);
        }
        for (size_t i = 0; i < nn; i++)
            d->dist[i] = INFINITY;
    }
    return TD_OK;
}

void td_dijkstra_ws_free(td_dijkstra_ws *ws)
{
    for (int s = 0; s < 2; s++) {
        td_dside *d = &ws->side[s];
        free(d->dist);
        free(d->pred);
        free(d->hpos);
        free(d->heap);
        free(d->settled);
        free(d->touched);
        free(d->done);
    }
    memset(ws, 0, sizeof *ws);
}

static void side_reset(td_dside *d)
{
    for (uint32_t i = 0; i < d->n_touched; i++) {
        uint32_t v = d->touched[i];
        d->dist[v] = INFINITY;
        d->hpos[v] = 0;
        d->done[v] = 0;
    }
    d->n_touched = 0;
    d->n_settled = 0;
    d->hsize = 0;
}

static void sift_up(td_dside *d, uint32_t i, td_heap_item it)
{
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (d->heap[p].key <= it.key)
            break;
        d->heap[i] = d->heap[p];
        d->hpos[d->heap[i].v] = i + 1;
        i = p;
    }
    d->heap[i] = it;
    d->hpos[it.v] = i + 1;
}

static void sift_down(td_dside *d, uint32_t i, td_heap_item it)
{
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= d->hsize)
            break;
        if (c + 1 < d->hsize && d->heap[c + 1].key < d->heap[c].key)
            c++;
        if (d->heap[c].key >= it.key)
            break;
        d->heap[i] = d->heap[c];
        d->hpos[d->heap[i].v] = i + 1;
        i = c;
    }
    d->heap[i] = it;
    d->hpos[it.v] = i + 1;
}

/* Lower v's distance to nd (caller checked nd < dist[v]). A settled v can
 * never qualify: its distance is <= the current key, and weights are >= 0,
 * so the loops skip a "settled?" lookup. */
static void relax(td_dside *d, uint32_t v, double nd, uint32_t from)
{
    td_heap_item it = {nd, v};
    if (d->dist[v] == INFINITY && !d->hpos[v])
        d->touched[d->n_touched++] = v;
    d->dist[v] = nd;
    d->pred[v] = from;
    if (d->hpos[v])
        sift_up(d, d->hpos[v] - 1, it);
    else
        sift_up(d, d->hsize++, it);
}

static uint32_t pop_min(td_dside *d)
{
    uint32_t v = d->heap[0].v;
    d->hpos[v] = 0;
    if (--d->hsize)
        sift_down(d, 0, d->heap[d->hsize]);
    d->done[v] = 1;
    d->settled[d->n_settled++] = v;
    return v;
}

void td_dijkstra_run(const td_graph *g, td_dijkstra_ws *ws,
                     const uint32_t *src, const double *src_dist,
                     uint32_t n_src, double limit, const uint32_t *mark,
                     uint32_t mark_val)
{
    td_dside *d = &ws->side[0];
    side_reset(d);
    ws->scanned = 0;
    for (uint32_t i = 0; i < n_src; i++) {
        double sd = src_dist ? src_dist[i] : 0.0;
        if (sd < d->dist[src[i]] && sd <= limit)
            relax(d, src[i], sd, TD_NONE);
    }
    while (d->hsize) {
        uint32_t x = pop_min(d);
        double dx = d->dist[x];
        for (uint64_t e = g->off[x]; e < g->off[x + 1]; e++) {
            uint32_t y = g->adj[e];
            if (mark && mark[y] != mark_val)
                continue;
            double nd = dx + g->w[e];
            if (nd < d->dist[y] && nd <= limit)
                relax(d, y, nd, x);
        }
        ws->scanned += g->off[x + 1] - g->off[x];
    }
}

double td_dijkstra_dist(const td_dijkstra_ws *ws, uint32_t v)
{
    const td_dside *d = &ws->side[0];
    return d->done[v] ? d->dist[v] : INFINITY;
}

double td_dijkstra_pair(const td_graph *g, td_dijkstra_ws *ws, uint32_t s,
                        uint32_t t)
{
    td_dside *d = &ws->side[0];
    side_reset(d);
    ws->scanned = 0;
    relax(d, s, 0.0, TD_NONE);
    while (d->hsize) {
        uint32_t x = pop_min(d);
        if (x == t)
            return d->dist[t];
        double dx = d->dist[x];
        for (uint64_t e = g->off[x]; e < g->off[x + 1]; e++) {
            uint32_t y = g->adj[e];
            double nd = dx + g->w[e];
            if (nd < d->dist[y])
                relax(d, y, nd, x);
        }
        ws->scanned += g->off[x + 1] - g->off[x];
    }
    return INFINITY;
}

double td_bidijkstra(const td_graph *g, td_dijkstra_ws *ws, uint32_t s,
                     uint32_t t, double upper_bound)
{
    return td_bidijkstra_lb(g, ws, s, t, upper_bound, NULL, NULL);
}

double td_bidijkstra_lb(const td_graph *g, td_dijkstra_ws *ws, uint32_t s,
                        uint32_t t, double upper_bound, td_lower_bound_fn lb,
                        const void *lb_ctx)
{
    td_dside *f = &ws->side[0], *b = &ws->side[1];
    double best = upper_bound;
    if (s == t)
        return 0.0;
    if (g->directed)
        return fmin(td_dijkstra_pair(g, ws, s, t), upper_bound);
    side_reset(f);
    side_reset(b);
    ws->scanned = 0;
    relax(f, s, 0.0, TD_NONE);
    relax(b, t, 0.0, TD_NONE);
    /* Stop once the two frontiers together cannot beat the best meeting:
     * min key forward + min key backward >= best. Nodes whose key exceeds
     * the bound are never queued, which is where the pruning pays. */
    while (f->hsize && b->hsize) {
        double kf = f->heap[0].key, kb = b->heap[0].key;
        if (kf + kb >= best)
            break;
        td_dside *me = kf <= kb ? f : b, *other = me == f ? b : f;
        uint32_t x = pop_min(me);
        double dx = me->dist[x];
        if (lb && dx + lb(lb_ctx, x, me == f ? t : s) >= best)
            continue; /* every path through x is at least best */
        for (uint64_t e = g->off[x]; e < g->off[x + 1]; e++) {
            uint32_t y = g->adj[e];
            double nd = dx + g->w[e];
            if (nd >= best)
                continue;
            if (nd < me->dist[y])
                relax(me, y, nd, x);
            double through = nd + other->dist[y];
            if (through < best)
                best = through;
        }
        ws->scanned += g->off[x + 1] - g->off[x];
    }
    return best;
}
