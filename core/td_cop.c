/* td_cop: the cop decomposition (see td_cop.h for the construction). */
#include "config.h"

#include "td_cop.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct pending {
    uint32_t lo, hi;   /* range of perm[] */
    uint32_t id;       /* mark value of its vertices */
    uint32_t parent;   /* supernode that split it off, or TD_NONE */
    uint32_t *anc;     /* adjacent earlier supernodes, ascending (owned) */
    uint32_t n_anc;
} pending;

typedef struct builder {
    const td_graph *g;
    td_cop *c;
    size_t cap_sn, cap_br, cap_pv, cap_stack;
    pending *stack;
    size_t n_stack;
    uint32_t *perm, *tmp, *mark, *stamp, *sn_seen;
    uint32_t *best_t;
    double *best_d;
    double depth_sum;
} builder;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 1;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q)
        return 0;
    *p = q;
    *cap = nc;
    return 1;
}

static td_status oom(td_error *err)
{
    return td_error_set(err, TD_ENOMEM, "cop decomposition: out of memory");
}

/* Append branch vertex v at position pos to the current branch. */
static int push_pv(builder *b, uint32_t v, double pos)
{
    td_cop *c = b->c;
    size_t cap = b->cap_pv;
    if (!grow((void **)&c->pv_vertex, &cap, c->n_pv + 1, sizeof(uint32_t)))
        return 0;
    cap = b->cap_pv;
    if (!grow((void **)&c->pv_pos, &cap, c->n_pv + 1, sizeof(double)))
        return 0;
    b->cap_pv = cap;
    c->pv_vertex[c->n_pv] = v;
    c->pv_pos[c->n_pv] = pos;
    c->n_pv++;
    return 1;
}

/* Close the branch started at pv index `start` (owned by supernode s). */
static int end_branch(builder *b, uint32_t s)
{
    td_cop *c = b->c;
    size_t cap = b->cap_br;
    if (!grow((void **)&c->br_off, &cap, (size_t)c->n_br + 2,
              sizeof(uint64_t)))
        return 0;
    cap = b->cap_br;
    if (!grow((void **)&c->br_sn, &cap, (size_t)c->n_br + 2,
              sizeof(uint32_t)))
        return 0;
    b->cap_br = cap;
    c->br_sn[c->n_br] = s;
    c->n_br++;
    c->br_off[c->n_br] = c->n_pv;
    return 1;
}

static int push_pending(builder *b, pending p)
{
    if (!grow((void **)&b->stack, &b->cap_stack, b->n_stack + 1,
              sizeof(pending)))
        return 0;
    b->stack[b->n_stack++] = p;
    return 1;
}

/* Process one pending component: skeleton, supernode, visit, split. */
static td_status process(builder *b, pending C, td_dijkstra_ws *ws,
                         const td_cop_params *p, td_cop_visit_fn visit,
                         void *ctx, uint32_t *next_id, uint32_t *assigned,
                         td_error *err)
{
    const td_graph *g = b->g;
    td_cop *c = b->c;
    uint32_t *dom = b->perm + C.lo, k = C.hi - C.lo;
    uint32_t s = c->n_sn, x;
    td_dside *d = &ws->side[0];

    /* New supernode record. */
    size_t cap = b->cap_sn;
    if (!grow((void **)&c->sn_parent, &cap, (size_t)s + 2, sizeof(uint32_t)))
        return oom(err);
    cap = b->cap_sn;
    if (!grow((void **)&c->sn_depth, &cap, (size_t)s + 2, sizeof(uint32_t)))
        return oom(err);
    cap = b->cap_sn;
    if (!grow((void **)&c->sn_dom, &cap, (size_t)s + 2, sizeof(uint32_t)))
        return oom(err);
    cap = b->cap_sn;
    if (!grow((void **)&c->sn_br, &cap, (size_t)s + 2, sizeof(uint32_t)))
        return oom(err);
    b->cap_sn = cap;
    c->sn_parent[s] = C.parent;
    c->sn_depth[s] = C.parent == TD_NONE ? 0 : c->sn_depth[C.parent] + 1;
    c->sn_dom[s] = k;
    c->sn_br[s] = c->n_br;
    c->n_sn++;
    if (c->sn_depth[s] > c->max_depth)
        c->max_depth = c->sn_depth[s];
    if (C.n_anc > c->max_ancestors)
        c->max_ancestors = C.n_anc;

    /* stamp[v] == s marks skeleton vertices of this supernode. */
    if (p->root == TD_COP_BALANCED) {
        uint32_t a, z;
        td_dijkstra_run(g, ws, &dom[0], NULL, 1, INFINITY, b->mark, C.id);
        a = d->settled[d->n_settled - 1];
        td_dijkstra_run(g, ws, &a, NULL, 1, INFINITY, b->mark, C.id);
        z = d->settled[d->n_settled - 1];
        double half = d->dist[z] / 2, bestgap = INFINITY;
        /* The tree path a..z, written from a (pos 0) to z. */
        uint32_t len = 0;
        for (uint32_t v = z; v != TD_NONE; v = d->pred[v])
            b->tmp[len++] = v;
        x = a;
        for (uint32_t i = len; i-- > 0;) {
            uint32_t v = b->tmp[i];
            if (!push_pv(b, v, d->dist[v]))
                return oom(err);
            b->stamp[v] = s;
            if (fabs(d->dist[v] - half) < bestgap) {
                bestgap = fabs(d->dist[v] - half);
                x = v;
            }
        }
        if (!end_branch(b, s))
            return oom(err);
    } else {
        x = dom[0];
        if (C.n_anc) {
            uint32_t last = C.anc[C.n_anc - 1];
            for (uint32_t i = 0; i < k && x == dom[0]; i++)
                for (uint64_t e = g->off[dom[i]]; e < g->off[dom[i] + 1]; e++)
                    if (c->sn_of[g->adj[e]] == last) {
                        x = dom[i];
                        break;
                    }
        }
        b->stamp[x] = s;
    }

    if (p->ancestor_branches && C.n_anc) {
        /* Closest vertex of C adjacent to each ancestor, from x. */
        td_dijkstra_run(g, ws, &x, NULL, 1, INFINITY, b->mark, C.id);
        for (uint32_t j = 0; j < C.n_anc; j++) {
            b->best_t[j] = TD_NONE;
            b->best_d[j] = INFINITY;
        }
        for (uint32_t i = 0; i < k; i++) {
            uint32_t v = dom[i];
            for (uint64_t e = g->off[v]; e < g->off[v + 1]; e++) {
                uint32_t y = c->sn_of[g->adj[e]];
                if (y == TD_NONE)
                    continue;
                for (uint32_t j = 0; j < C.n_anc; j++)
                    if (C.anc[j] == y && d->dist[v] < b->best_d[j]) {
                        b->best_d[j] = d->dist[v];
                        b->best_t[j] = v;
                    }
            }
        }
        for (uint32_t j = 0; j < C.n_anc; j++) {
            uint32_t t = b->best_t[j], len = 0;
            if (t == TD_NONE || b->stamp[t] == s)
                continue; /* skeleton already touches this ancestor */
            /* Walk back towards x and stop at the skeleton (a junction). */
            uint32_t v = t;
            for (;;) {
                b->tmp[len++] = v;
                if (b->stamp[v] == s || d->pred[v] == TD_NONE)
                    break;
                v = d->pred[v];
            }
            double base = d->dist[b->tmp[len - 1]];
            for (uint32_t i = len; i-- > 0;) {
                if (!push_pv(b, b->tmp[i], d->dist[b->tmp[i]] - base))
                    return oom(err);
                b->stamp[b->tmp[i]] = s;
            }
            if (!end_branch(b, s))
                return oom(err);
        }
    }
    if (c->n_br == c->sn_br[s]) { /* AGG root with nothing to reach */
        if (!push_pv(b, x, 0.0) || !end_branch(b, s))
            return oom(err);
    }
    c->sn_br[s + 1] = c->n_br;

    /* The supernode: skeleton, or the tube of radius delta around it. */
    uint32_t members = 0;
    if (p->delta > 0) {
        uint32_t nk = 0;
        for (uint64_t i = c->br_off[c->sn_br[s]]; i < c->n_pv; i++)
            b->tmp[nk++] = c->pv_vertex[i];
        td_dijkstra_run(g, ws, b->tmp, NULL, nk, p->delta, b->mark, C.id);
        for (uint32_t i = 0; i < d->n_settled; i++) {
            uint32_t v = d->settled[i];
            c->sn_of[v] = s;
            members++;
        }
        double r = d->dist[d->settled[d->n_settled - 1]];
        if (r > c->max_radius)
            c->max_radius = r;
    } else {
        for (uint64_t i = c->br_off[c->sn_br[s]]; i < c->n_pv; i++) {
            uint32_t v = c->pv_vertex[i];
            if (c->sn_of[v] != s) {
                c->sn_of[v] = s;
                members++;
            }
        }
    }
    *assigned += members;
    b->depth_sum += (double)members * (c->sn_depth[s] + 1);

    if (visit) {
        td_status st = visit(ctx, c, s, dom, k, b->mark, C.id, err);
        if (st != TD_OK)
            return st;
    }

    /* Split the rest of C into connected components, each contiguous in
     * perm[C.lo ..), and push them with their adjacent supernodes. */
    uint32_t out = 0;
    uint32_t *tmp = b->tmp;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t r = dom[i];
        if (c->sn_of[r] != TD_NONE || b->mark[r] != C.id)
            continue;
        uint32_t cid = (*next_id)++, start = out;
        b->mark[r] = cid;
        tmp[out++] = r;
        for (uint32_t q = start; q < out; q++) {
            uint32_t v = tmp[q];
            for (uint64_t e = g->off[v]; e < g->off[v + 1]; e++) {
                uint32_t y = g->adj[e];
                if (b->mark[y] == C.id && c->sn_of[y] == TD_NONE) {
                    b->mark[y] = cid;
                    tmp[out++] = y;
                }
            }
        }
        pending ch = {C.lo + start, C.lo + out, cid, s, NULL, 0};
        /* Adjacent supernodes: stamp sn_seen with the child's id. */
        uint32_t na = 0;
        for (uint32_t q = start; q < out; q++) {
            uint32_t v = tmp[q];
            for (uint64_t e = g->off[v]; e < g->off[v + 1]; e++) {
                uint32_t y = c->sn_of[g->adj[e]];
                if (y != TD_NONE && b->sn_seen[y] != cid) {
                    b->sn_seen[y] = cid;
                    na++;
                }
            }
        }
        ch.anc = malloc((na ? na : 1) * sizeof *ch.anc);
        if (!ch.anc)
            return oom(err);
        for (uint32_t q = start; q < out && ch.n_anc < na; q++) {
            uint32_t v = tmp[q];
            for (uint64_t e = g->off[v]; e < g->off[v + 1]; e++) {
                uint32_t y = c->sn_of[g->adj[e]];
                if (y != TD_NONE && b->sn_seen[y] == cid) {
                    b->sn_seen[y] = TD_NONE; /* take once */
                    ch.anc[ch.n_anc++] = y;
                }
            }
        }
        /* ascending ids = shallow to deep (insertion sort, |A| is small) */
        for (uint32_t u = 1; u < ch.n_anc; u++)
            for (uint32_t w = u; w > 0 && ch.anc[w - 1] > ch.anc[w]; w--) {
                uint32_t t = ch.anc[w];
                ch.anc[w] = ch.anc[w - 1];
                ch.anc[w - 1] = t;
            }
        if (!push_pending(b, ch)) {
            free(ch.anc);
            return oom(err);
        }
    }
    memcpy(dom, tmp, (size_t)out * sizeof *dom);
    for (uint32_t i = out; i < k; i++)
        dom[i] = TD_NONE;
    return TD_OK;
}

td_status td_cop_build(const td_graph *g, const td_cop_params *p,
                       td_dijkstra_ws *ws, td_cop_visit_fn visit, void *ctx,
                       td_progress_fn progress, void *progress_ctx,
                       const atomic_int *cancel, td_cop *out, td_error *err)
{
    builder b;
    td_status st = TD_OK;
    uint32_t n = g->n, n_comp = 0, assigned = 0;
    memset(out, 0, sizeof *out);
    memset(&b, 0, sizeof b);
    if (g->directed)
        return td_error_set(err, TD_EINVAL, "cop decomposition: the graph "
                            "must be undirected");
    if (ws->n < n)
        return td_error_set(err, TD_EINVAL, "cop decomposition: workspace "
                            "for %u vertices, graph has %u", (unsigned)ws->n,
                            (unsigned)n);
    b.g = g;
    b.c = out;
    out->n = n;
    size_t nn = (size_t)n + 1;
    out->sn_of = malloc(nn * sizeof(uint32_t));
    b.perm = malloc(nn * sizeof(uint32_t));
    b.tmp = malloc(nn * sizeof(uint32_t));
    b.mark = malloc(nn * sizeof(uint32_t));
    b.stamp = malloc(nn * sizeof(uint32_t));
    b.sn_seen = malloc(nn * sizeof(uint32_t));
    b.best_t = malloc(nn * sizeof(uint32_t));
    b.best_d = malloc(nn * sizeof(double));
    out->br_off = malloc(sizeof(uint64_t));
    b.cap_br = 1;
    if (!out->sn_of || !b.perm || !b.tmp || !b.mark || !b.stamp ||
        !b.sn_seen || !b.best_t || !b.best_d || !out->br_off) {
        st = oom(err);
        goto done;
    }
    out->br_off[0] = 0;
    for (uint32_t v = 0; v < n; v++) {
        out->sn_of[v] = TD_NONE;
        b.stamp[v] = TD_NONE;
        b.sn_seen[v] = TD_NONE;
    }
    if ((st = td_graph_components(g, b.mark, &n_comp, err)) != TD_OK)
        goto done;
    {
        /* perm grouped by component: counting sort on the component id. */
        uint32_t *start = calloc((size_t)n_comp + 1, sizeof *start);
        if (!start) {
            st = oom(err);
            goto done;
        }
        for (uint32_t v = 0; v < n; v++)
            start[b.mark[v] + 1]++;
        for (uint32_t i = 0; i < n_comp; i++)
            start[i + 1] += start[i];
        for (uint32_t i = n_comp; i-- > 0;) {
            pending pc = {start[i], start[i + 1], i, TD_NONE, NULL, 0};
            if (!push_pending(&b, pc)) {
                free(start);
                st = oom(err);
                goto done;
            }
        }
        for (uint32_t v = 0; v < n; v++)
            b.perm[start[b.mark[v]]++] = v;
        free(start);
    }
    uint32_t next_id = n_comp;
    double last_report = -1;
    while (b.n_stack) {
        pending C = b.stack[--b.n_stack];
        if (cancel && atomic_load(cancel)) {
            free(C.anc);
            st = td_error_set(err, TD_EBUSY, "cop decomposition: cancelled");
            goto done;
        }
        st = process(&b, C, ws, p, visit, ctx, &next_id, &assigned, err);
        free(C.anc);
        if (st != TD_OK)
            goto done;
        if (progress && n) {
            double f = (double)assigned / n;
            if (f - last_report >= 0.01 || assigned == n) {
                progress(progress_ctx, f, "decomposition");
                last_report = f;
            }
        }
    }
    out->mean_depth = n ? b.depth_sum / n : 0;
    if (!out->sn_br) { /* empty graph */
        out->sn_br = calloc(1, sizeof(uint32_t));
        if (!out->sn_br)
            st = oom(err);
    }
done:
    while (b.n_stack)
        free(b.stack[--b.n_stack].anc);
    free(b.stack);
    free(b.perm);
    free(b.tmp);
    free(b.mark);
    free(b.stamp);
    free(b.sn_seen);
    free(b.best_t);
    free(b.best_d);
    if (st != TD_OK)
        td_cop_free(out);
    return st;
}

void td_cop_free(td_cop *c)
{
    free(c->sn_of);
    free(c->sn_parent);
    free(c->sn_depth);
    free(c->sn_dom);
    free(c->sn_br);
    free(c->br_off);
    free(c->br_sn);
    free(c->pv_vertex);
    free(c->pv_pos);
    memset(c, 0, sizeof *c);
}
