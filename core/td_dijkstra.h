/* td_dijkstra: exact shortest paths with reusable workspaces.
 *
 * A td_dijkstra_ws holds per-vertex state for two searches (forward and
 * backward) plus binary heaps. It is sized once for n vertices; a query
 * only touches the entries it visits and resets just those, so queries do
 * not allocate and cost O(visited), not O(n).
 *
 *   td_dijkstra_run     multi-source single-direction search with an
 *                       optional distance limit and an optional vertex
 *                       filter (only vertices with mark[v] == mark_val are
 *                       entered) - the oracle builder uses it on subgraphs.
 *   td_dijkstra_pair    one-to-one, stops when the target is settled.
 *   td_bidijkstra       bidirectional one-to-one on an undirected graph,
 *                       optionally pruned by a known upper bound (the
 *                       oracle's answer) for exact=true queries.
 *
 * Distances are INFINITY when there is no path.
 * Thread: a workspace belongs to one thread at a time; graphs are shared
 * read-only. Memory: the workspace owns its arrays (td_dijkstra_ws_free). */
#ifndef TD_DIJKSTRA_H
#define TD_DIJKSTRA_H

#include <stddef.h>
#include <stdint.h>

#include "td_err.h"
#include "td_graph.h"

typedef struct td_heap_item {
    double key;
    uint32_t v;
} td_heap_item;

typedef struct td_dside {
    double *dist;      /* [n]; INFINITY when untouched */
    uint32_t *pred;    /* [n]; TD_NONE for sources */
    uint32_t *hpos;    /* [n]; heap slot + 1, 0 = not in heap */
    td_heap_item *heap; /* [n] keyed binary heap (keys inline: no gather) */
    uint32_t hsize;
    uint32_t *settled; /* [n] vertices in settle order */
    uint32_t n_settled;
    uint32_t *touched; /* [n] vertices whose dist was set */
    uint32_t n_touched;
    unsigned char *done; /* [n] settled flag */
} td_dside;

typedef struct td_dijkstra_ws {
    uint32_t n;
    td_dside side[2];
    uint64_t scanned;  /* arcs scanned by the last query (statistic) */
} td_dijkstra_ws;

td_status td_dijkstra_ws_init(td_dijkstra_ws *ws, uint32_t n, td_error *err);
void td_dijkstra_ws_free(td_dijkstra_ws *ws);
size_t td_dijkstra_ws_bytes(uint32_t n);

/* Multi-source search on side 0: sources get distance 0 (or src_dist[i]
 * when src_dist is non-NULL). Vertices farther than limit are not settled
 * (limit = INFINITY for none). mark == NULL: no filter. Afterwards
 * ws->side[0].settled lists the settled vertices in order of distance, with
 * ws->side[0].dist / pred valid for them; the state stays until the next
 * call on this workspace. */
void td_dijkstra_run(const td_graph *g, td_dijkstra_ws *ws,
                     const uint32_t *src, const double *src_dist,
                     uint32_t n_src, double limit, const uint32_t *mark,
                     uint32_t mark_val);

/* Distance of v after td_dijkstra_run (INFINITY if not settled). */
double td_dijkstra_dist(const td_dijkstra_ws *ws, uint32_t v);

/* Exact s-t distance by one-directional Dijkstra (works on directed graphs:
 * follows arcs). Ids must be < g->n. */
double td_dijkstra_pair(const td_graph *g, td_dijkstra_ws *ws, uint32_t s,
                        uint32_t t);

/* Exact s-t distance by bidirectional Dijkstra on an undirected graph,
 * pruned by upper_bound: returns min(d(s,t), upper_bound); pass INFINITY
 * for none. A finite bound that is the length of a real s-t walk (any
 * oracle answer) makes the result exact and shrinks both searches. */
double td_bidijkstra(const td_graph *g, td_dijkstra_ws *ws, uint32_t s,
                     uint32_t t, double upper_bound);

/* A lower bound on d(v, target) (e.g. an oracle's answer divided by its
 * factor). Must never exceed the true distance. */
typedef double (*td_lower_bound_fn)(const void *ctx, uint32_t v,
                                    uint32_t target);

/* td_bidijkstra that also skips expanding a vertex v popped at distance
 * dv when dv + lb(v, other end) >= the best length known: no shorter
 * path can pass there. Exact as long as lb never overestimates. lb may be
 * NULL. */
double td_bidijkstra_lb(const td_graph *g, td_dijkstra_ws *ws, uint32_t s,
                        uint32_t t, double upper_bound, td_lower_bound_fn lb,
                        const void *lb_ctx);

#endif
