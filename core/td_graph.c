/* td_graph: CSR construction, symmetrisation and validation. */
#include "config.h"

#include "td_graph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void td_edgelist_init(td_edgelist *el)
{
    memset(el, 0, sizeof *el);
}

void td_edgelist_free(td_edgelist *el)
{
    free(el->u);
    free(el->v);
    free(el->w);
    memset(el, 0, sizeof *el);
}

td_status td_edgelist_push(td_edgelist *el, uint32_t u, uint32_t v, double w,
                           td_error *err)
{
    if (el->m == el->cap) {
        size_t cap = el->cap ? el->cap * 2 : 1024;
        uint32_t *nu = realloc(el->u, cap * sizeof *nu);
        if (nu)
            el->u = nu;
        uint32_t *nv = nu ? realloc(el->v, cap * sizeof *nv) : NULL;
        if (nv)
            el->v = nv;
        double *nw = nv ? realloc(el->w, cap * sizeof *nw) : NULL;
        if (!nw)
            return td_error_set(err, TD_ENOMEM, "edge list: out of memory "
                                "at %zu arcs", el->m);
        el->w = nw;
        el->cap = cap;
    }
    el->u[el->m] = u;
    el->v[el->m] = v;
    el->w[el->m] = w;
    el->m++;
    return TD_OK;
}

typedef struct arc_key {
    uint32_t a, b;
    double w;
} arc_key;

static int cmp_arc(const void *x, const void *y)
{
    const arc_key *p = x, *q = y;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    if (p->b != q->b)
        return p->b < q->b ? -1 : 1;
    return (p->w > q->w) - (p->w < q->w);
}

/* One block: off[n+1] (u64), w[arcs] (f64), adj[arcs] (u32). */
static td_status alloc_block(td_graph *g, uint32_t n, uint64_t arcs,
                             td_error *err)
{
    size_t bytes = ((size_t)n + 1) * 8 + (size_t)arcs * 12;
    unsigned char *blk = malloc(bytes ? bytes : 1);
    if (!blk)
        return td_error_set(err, TD_ENOMEM, "graph: out of memory for %u "
                            "vertices and %llu arcs", (unsigned)n,
                            (unsigned long long)arcs);
    g->owned = blk;
    g->off = (const uint64_t *)blk;
    g->w = (const double *)(blk + ((size_t)n + 1) * 8);
    g->adj = (const uint32_t *)(blk + ((size_t)n + 1) * 8 + arcs * 8);
    g->n = n;
    g->n_arcs = arcs;
    return TD_OK;
}

td_status td_graph_build(const td_edgelist *el, int directed, td_graph *g,
                         td_error *err)
{
    memset(g, 0, sizeof *g);
    if (el->n > TD_GRAPH_MAX_NODES)
        return td_error_set(err, TD_ETOOBIG, "graph: %u vertices exceed the "
                            "limit", (unsigned)el->n);
    arc_key *keys = malloc((el->m ? el->m : 1) * sizeof *keys);
    if (!keys)
        return td_error_set(err, TD_ENOMEM, "graph: out of memory sorting "
                            "%zu arcs", el->m);
    size_t k = 0;
    for (size_t i = 0; i < el->m; i++) {
        uint32_t u = el->u[i], v = el->v[i];
        double w = el->w[i];
        if (u >= el->n || v >= el->n) {
            free(keys);
            return td_error_set(err, TD_EFORMAT, "arc %zu: vertex id %u out "
                                "of range (graph has %u vertices)", i,
                                (unsigned)(u >= el->n ? u : v),
                                (unsigned)el->n);
        }
        if (!isfinite(w) || w < 0) {
            free(keys);
            return td_error_set(err, TD_EFORMAT, "arc %zu (%u->%u): weight "
                                "%g is not a finite number >= 0", i,
                                (unsigned)u, (unsigned)v, w);
        }
        if (u == v)
            continue; /* self-loops never shorten a path */
        if (!directed && u > v) {
            uint32_t t = u;
            u = v;
            v = t;
        }
        keys[k].a = u;
        keys[k].b = v;
        keys[k].w = w;
        k++;
    }
    qsort(keys, k, sizeof *keys, cmp_arc);
    /* Keep the first (lightest) of each run of equal pairs. */
    size_t uniq = 0;
    for (size_t i = 0; i < k; i++)
        if (uniq == 0 || keys[uniq - 1].a != keys[i].a ||
            keys[uniq - 1].b != keys[i].b)
            keys[uniq++] = keys[i];
    uint64_t arcs = directed ? uniq : 2 * (uint64_t)uniq;
    td_status st = alloc_block(g, el->n, arcs, err);
    if (st != TD_OK) {
        free(keys);
        return st;
    }
    uint64_t *off = (uint64_t *)g->off;
    uint32_t *adj = (uint32_t *)g->adj;
    double *w = (double *)g->w;
    memset(off, 0, ((size_t)el->n + 1) * sizeof *off);
    for (size_t i = 0; i < uniq; i++) {
        off[keys[i].a + 1]++;
        if (!directed)
            off[keys[i].b + 1]++;
    }
    for (uint32_t v = 0; v < el->n; v++)
        off[v + 1] += off[v];
    uint64_t *fill = malloc(((size_t)el->n + 1) * sizeof *fill);
    if (!fill) {
        free(keys);
        td_graph_free(g);
        return td_error_set(err, TD_ENOMEM, "graph: out of memory");
    }
    memcpy(fill, off, ((size_t)el->n + 1) * sizeof *fill);
    /* Sorted (a,b) order keeps every row sorted: in row x the pairs (a,x)
     * with a < x come before the pairs (x,b). */
    for (size_t i = 0; i < uniq; i++) {
        uint32_t a = keys[i].a, b = keys[i].b;
        adj[fill[a]] = b;
        w[fill[a]++] = keys[i].w;
        if (!directed) {
            adj[fill[b]] = a;
            w[fill[b]++] = keys[i].w;
        }
    }
    free(fill);
    free(keys);
    g->directed = directed;
    return td_graph_validate(g, err);
}

void td_graph_free(td_graph *g)
{
    free(g->owned);
    memset(g, 0, sizeof *g);
}

uint64_t td_graph_edges(const td_graph *g)
{
    return g->directed ? g->n_arcs : g->n_arcs / 2;
}

td_status td_graph_validate(td_graph *g, td_error *err)
{
    if (g->n > TD_GRAPH_MAX_NODES)
        return td_error_set(err, TD_EFORMAT, "graph: %u vertices exceed the "
                            "limit", (unsigned)g->n);
    if (g->off[0] != 0 || g->off[g->n] != g->n_arcs)
        return td_error_set(err, TD_EFORMAT, "graph: offsets do not span "
                            "the %llu arcs", (unsigned long long)g->n_arcs);
    double wmin = INFINITY, wmax = 0;
    for (uint32_t v = 0; v < g->n; v++) {
        if (g->off[v + 1] < g->off[v] || g->off[v + 1] > g->n_arcs)
            return td_error_set(err, TD_EFORMAT, "graph: offsets of vertex "
                                "%u are not monotone", (unsigned)v);
        for (uint64_t e = g->off[v]; e < g->off[v + 1]; e++) {
            double w = g->w[e];
            if (g->adj[e] >= g->n || (!g->directed && g->adj[e] == v))
                return td_error_set(err, TD_EFORMAT, "graph: vertex %u has "
                                    "bad neighbour %u", (unsigned)v,
                                    (unsigned)g->adj[e]);
            if (!isfinite(w) || w < 0)
                return td_error_set(err, TD_EFORMAT, "graph: edge %u-%u has "
                                    "bad weight %g", (unsigned)v,
                                    (unsigned)g->adj[e], w);
            if (w > 0 && w < wmin)
                wmin = w;
            if (w > wmax)
                wmax = w;
        }
    }
    g->w_min_pos = wmin;
    g->w_max = wmax;
    return TD_OK;
}

td_status td_graph_components(const td_graph *g, uint32_t *comp,
                              uint32_t *count, td_error *err)
{
    uint32_t *stack = malloc(((size_t)g->n + 1) * sizeof *stack);
    if (!stack)
        return td_error_set(err, TD_ENOMEM, "components: out of memory");
    for (uint32_t v = 0; v < g->n; v++)
        comp[v] = TD_NONE;
    uint32_t c = 0;
    for (uint32_t s = 0; s < g->n; s++) {
        if (comp[s] != TD_NONE)
            continue;
        size_t top = 0;
        stack[top++] = s;
        comp[s] = c;
        while (top) {
            uint32_t x = stack[--top];
            for (uint64_t e = g->off[x]; e < g->off[x + 1]; e++)
                if (comp[g->adj[e]] == TD_NONE) {
                    comp[g->adj[e]] = c;
                    stack[top++] = g->adj[e];
                }
        }
        c++;
    }
    free(stack);
    *count = c;
    return TD_OK;
}

size_t td_graph_bytes(const td_graph *g)
{
    return ((size_t)g->n + 1) * 8 + (size_t)g->n_arcs * 12;
}
