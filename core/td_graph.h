/* td_graph: weighted graphs in compressed sparse row (CSR) form.
 *
 * A td_graph is what Dijkstra and the distance oracles read. It is built
 * from a td_edgelist (the readers in td_graph_io.h fill one):
 *   - undirected (the default): every arc u->v becomes the unordered pair
 *     {u,v}; self-loops are dropped; parallel pairs keep the MINIMUM weight
 *     (so a directed road file is symmetrised as in the roads README). Each
 *     remaining edge is stored in both rows, so n_arcs = 2 * edges.
 *   - directed (for validation against published directed distances): arcs
 *     are kept as given, self-loops dropped, parallel arcs collapsed to the
 *     minimum weight.
 * Weights are doubles: road weights are integers (exact in a double up to
 * 2^53) but JSON input may carry reals. Weights must be finite and >= 0.
 * Rows are sorted by neighbour id. Vertex ids are 0-based uint32.
 * Disconnected graphs are fine.
 *
 * Thread: a built graph is immutable; any number of threads may read it.
 * Memory: td_graph_build allocates one block owned by the graph
 * (td_graph_free releases it). A graph whose arrays point into a mapped
 * file (td_oracle_load) has owned == NULL and td_graph_free does nothing. */
#ifndef TD_GRAPH_H
#define TD_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "td_err.h"

/* Largest vertex count (ids must fit below UINT32_MAX, which marks "none"). */
#define TD_GRAPH_MAX_NODES 0xFFFFFFF0u
#define TD_NONE UINT32_MAX

/* A growable list of arcs, as read from a file. Owned arrays. */
typedef struct td_edgelist {
    uint32_t n;       /* vertex count (ids are < n) */
    uint32_t id_base; /* how the source file numbers vertices: 1 for
                         DIMACS, 0 otherwise (ids here are 0-based) */
    size_t m;         /* arcs in u/v/w */
    size_t cap;
    uint32_t *u, *v;
    double *w;
} td_edgelist;

void td_edgelist_init(td_edgelist *el);
void td_edgelist_free(td_edgelist *el);
/* Append one arc; grows the arrays. Does not validate (td_graph_build does). */
td_status td_edgelist_push(td_edgelist *el, uint32_t u, uint32_t v, double w,
                           td_error *err);

typedef struct td_graph {
    uint32_t n;
    int directed;          /* 0: symmetric rows */
    uint64_t n_arcs;       /* entries of adj and w */
    const uint64_t *off;   /* [n+1]: row v is adj[off[v] .. off[v+1]) */
    const uint32_t *adj;   /* [n_arcs] neighbour ids, sorted per row */
    const double *w;       /* [n_arcs] weights, finite, >= 0 */
    double w_min_pos;      /* smallest positive weight (INFINITY if none) */
    double w_max;          /* largest weight (0 if no edges) */
    void *owned;           /* block holding off/adj/w, or NULL if borrowed */
} td_graph;

/* Build a CSR graph from arcs. Validates every arc (ids < n, weight finite
 * and >= 0), naming the arc index on error. directed = 0 symmetrises. */
td_status td_graph_build(const td_edgelist *el, int directed, td_graph *g,
                         td_error *err);
void td_graph_free(td_graph *g);

/* Number of undirected edges (n_arcs / 2) or arcs when directed. */
uint64_t td_graph_edges(const td_graph *g);

/* Check a graph whose arrays came from elsewhere (a file): offsets
 * monotone and ending at n_arcs, ids < n, weights finite >= 0, and for an
 * undirected graph no self-loops. O(n + arcs). Fills w_min_pos/w_max. */
td_status td_graph_validate(td_graph *g, td_error *err);

/* Connected components of an undirected graph: comp[v] in 0..count-1,
 * numbered by smallest vertex. comp has n entries (caller's memory). */
td_status td_graph_components(const td_graph *g, uint32_t *comp,
                              uint32_t *count, td_error *err);

/* Bytes held by the graph's arrays. */
size_t td_graph_bytes(const td_graph *g);

#endif
