/* td_treecover: shortcut partitions and the cluster-portal tree cover.
 *
 * Per scale L (L_0 = smallest positive weight, doubling until L >= twice
 * the largest eccentricity found, so the top scale spans each component):
 *   delta = eps * L / 10; cop decomposition with supernodes = the tube of
 *   radius delta around the skeleton (td_cop, balanced roots);
 *   shortcut partition: skeleton vertex k on branch b gets the segment
 *   (b, floor(pos/delta)); every tube vertex joins the segment of its
 *   nearest skeleton vertex; each segment class is one cluster (connected:
 *   shortest paths to the nearest skeleton vertex stay in the class).
 *   Cluster portal p_c: the segment vertex nearest the segment's middle.
 *   tau_c = max over v in c of d(v, k_v) + |pos k_v - pos p_c| (measured).
 *   Piece c: shortest-path tree of G[dom] from p_c limited to L + 2 delta.
 *   Pieces go first-fit into max_trees vertex-disjoint forests; a piece
 *   that fits none is dropped (counted).
 * A pair with d in (L/2, L] whose shortest path's highest supernode X is met
 * at w, nearest skeleton vertex k, cluster c: d(u,p_c) <= d(u,w) + tau_c
 * <= L + 2 delta, likewise v, so both lie in piece c and its tree distance
 * is <= d + 2 tau <= (1 + 4 tau / L) d. Pieces are subgraphs, so tree
 * distances are never below d. Hence the reported factor: 1 + 4 max tau/L
 * when no piece was dropped (and no zero-weight edges), else INFINITY.
 * This follows oracle.md §1.3 [P]; the paper's own tree cover ([R]) is not
 * what is built. */
#include "config.h"

#include "td_treecover.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RMQ_BLOCK 32

typedef struct u32vec {
    uint32_t *a;
    size_t n, cap;
} u32vec;
typedef struct u64vec {
    uint64_t *a;
    size_t n, cap;
} u64vec;
typedef struct f64vec {
    double *a;
    size_t n, cap;
} f64vec;

static int grow_(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 1;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q)
        return 0;
    *p = q;
    *cap = nc;
    return 1;
}
#define PUSH(v, x) (grow_((void **)&(v).a, &(v).cap, (v).n + 1, \
                          sizeof *(v).a) ? ((v).a[(v).n++] = (x), 1) : 0)

typedef struct scale_builder {
    const td_graph *g;
    td_dijkstra_ws *ws;
    td_oracle_stats *stats;
    double L, delta, R;
    uint32_t K;              /* trees per scale */
    uint32_t *piece;         /* [K * n] piece id in tree j, TD_NONE */
    uint32_t *par;           /* [K * n] */
    double *dep;             /* [K * n] */
    uint32_t *cluster;       /* [n] cluster of v at this scale */
    uint32_t *root;          /* [n] nearest skeleton vertex */
    uint32_t *skel_cl;       /* [n] cluster of a skeleton vertex or NONE */
    double *skel_pos;        /* [n] its position on its owning branch */
    uint32_t n_clusters;
    uint32_t next_piece;
    double max_tau;
    const atomic_int *cancel;
} scale_builder;

/* Place the current search tree (side 0 of ws) into the first tree where
 * all its vertices are free. */
static void place_piece(scale_builder *sb)
{
    td_dside *d = &sb->ws->side[0];
    uint32_t n = sb->g->n;
    sb->stats->pieces++;
    for (uint32_t j = 0; j < sb->K; j++) {
        uint32_t *pc = sb->piece + (size_t)j * n;
        uint32_t i;
        for (i = 0; i < d->n_settled; i++)
            if (pc[d->settled[i]] != TD_NONE)
                break;
        if (i < d->n_settled)
            continue;
        uint32_t id = sb->next_piece++;
        for (i = 0; i < d->n_settled; i++) {
            uint32_t v = d->settled[i];
            pc[v] = id;
            sb->par[(size_t)j * n + v] = d->pred[v];
            sb->dep[(size_t)j * n + v] = d->dist[v];
        }
        return;
    }
    sb->stats->pieces_dropped++;
}

static td_status scale_visit(void *ctx, const td_cop *c, uint32_t s,
                             const uint32_t *dom, uint32_t k,
                             const uint32_t *mark, uint32_t mark_val,
                             td_error *err)
{
    scale_builder *sb = ctx;
    const td_graph *g = sb->g;
    td_dside *d = &sb->ws->side[0];
    uint64_t lo = c->br_off[c->sn_br[s]], hi = c->br_off[c->sn_br[s + 1]];
    uint64_t npv = hi - lo;
    (void)dom;
    (void)k;
    if (sb->cancel && atomic_load(sb->cancel))
        return td_error_set(err, TD_EBUSY, "oracle build: cancelled");
    uint64_t *cl_first = malloc((size_t)npv * sizeof *cl_first);
    uint64_t *cl_last = malloc((size_t)npv * sizeof *cl_last);
    uint32_t *portal = malloc((size_t)npv * sizeof *portal);
    double *tau = calloc((size_t)npv, sizeof *tau);
    if (!cl_first || !cl_last || !portal || !tau) {
        free(cl_first);
        free(cl_last);
        free(portal);
        free(tau);
        return td_error_set(err, TD_ENOMEM, "tree cover: out of memory");
    }
    /* Segments: a skeleton vertex belongs to the first branch holding it
     * (later branches share only their junction vertex), so each segment
     * is a contiguous run of one branch. */
    uint32_t first_cl = sb->n_clusters, ncl = 0;
    for (uint32_t b = c->sn_br[s]; b < c->sn_br[s + 1]; b++) {
        double cell_prev = -1;
        int open = 0;
        for (uint64_t i = c->br_off[b]; i < c->br_off[b + 1]; i++) {
            uint32_t v = c->pv_vertex[i];
            if (sb->skel_cl[v] != TD_NONE && sb->skel_cl[v] >= first_cl)
                continue; /* owned by an earlier branch of this supernode */
            double cell = floor(c->pv_pos[i] / sb->delta);
            if (!open || cell != cell_prev) {
                cl_first[ncl] = i;
                ncl++;
                open = 1;
                cell_prev = cell;
            }
            cl_last[ncl - 1] = i;
            sb->skel_cl[v] = first_cl + ncl - 1;
            sb->skel_pos[v] = c->pv_pos[i];
        }
    }
    sb->n_clusters += ncl;
    /* Portal: the segment vertex nearest the segment's middle. */
    for (uint32_t q = 0; q < ncl; q++) {
        double mid = (c->pv_pos[cl_first[q]] + c->pv_pos[cl_last[q]]) / 2;
        uint64_t best = cl_first[q];
        for (uint64_t i = cl_first[q]; i <= cl_last[q]; i++)
            if (fabs(c->pv_pos[i] - mid) < fabs(c->pv_pos[best] - mid))
                best = i;
        portal[q] = c->pv_vertex[best];
        cl_first[q] = best; /* remember the portal's pv index */
    }
    /* Tube vertices join their nearest skeleton vertex's cluster (the
     * tube search in G[dom] limited to delta, from the skeleton). */
    td_dijkstra_run(g, sb->ws, c->pv_vertex + lo, NULL, (uint32_t)npv,
                    sb->delta, mark, mark_val);
    for (uint32_t i = 0; i < d->n_settled; i++) {
        uint32_t v = d->settled[i];
        uint32_t r = d->pred[v] == TD_NONE ? v : sb->root[d->pred[v]];
        sb->root[v] = r;
        uint32_t q = sb->skel_cl[r] - first_cl;
        sb->cluster[v] = sb->skel_cl[r];
        double t = d->dist[v] + fabs(sb->skel_pos[r] -
                                     c->pv_pos[cl_first[q]]);
        if (t > tau[q])
            tau[q] = t;
    }
    for (uint32_t q = 0; q < ncl; q++) {
        if (tau[q] > sb->max_tau)
            sb->max_tau = tau[q];
        td_dijkstra_run(g, sb->ws, &portal[q], NULL, 1, sb->R, mark,
                        mark_val);
        sb->stats->dijkstra_settled += d->n_settled;
        place_piece(sb);
    }
    free(cl_first);
    free(cl_last);
    free(portal);
    free(tau);
    return TD_OK;
}

/* Euler tour, preorder depths and block sparse table of tree j. */
typedef struct cover_out {
    u32vec piece, first, euler, sparse;
    u64vec euler_off, pdep_off, sparse_off;
    f64vec pdep;
} cover_out;

static td_status emit_tree(scale_builder *sb, uint32_t j, cover_out *co,
                           uint32_t *child_off, uint32_t *child, uint32_t *it,
                           uint32_t *pre, uint32_t *stack, td_error *err)
{
    uint32_t n = sb->g->n;
    const uint32_t *pc = sb->piece + (size_t)j * n;
    const uint32_t *par = sb->par + (size_t)j * n;
    const double *dep = sb->dep + (size_t)j * n;
    uint64_t e0 = co->euler.n;
    /* children lists */
    memset(child_off, 0, ((size_t)n + 1) * sizeof *child_off);
    for (uint32_t v = 0; v < n; v++)
        if (pc[v] != TD_NONE && par[v] != TD_NONE)
            child_off[par[v] + 1]++;
    for (uint32_t v = 0; v < n; v++)
        child_off[v + 1] += child_off[v];
    memcpy(it, child_off, (size_t)n * sizeof *it);
    for (uint32_t v = 0; v < n; v++)
        if (pc[v] != TD_NONE && par[v] != TD_NONE)
            child[it[par[v]]++] = v;
    memcpy(it, child_off, (size_t)n * sizeof *it);
    uint32_t npre = 0;
    for (uint32_t r = 0; r < n; r++) {
        if (pc[r] == TD_NONE || par[r] != TD_NONE)
            continue;
        uint32_t top = 0;
        stack[top++] = r;
        pre[r] = npre++;
        if (!PUSH(co->pdep, dep[r]))
            goto oom;
        if (!PUSH(co->euler, pre[r]))
            goto oom;
        it[r] = child_off[r];
        sb->root[r] = (uint32_t)(co->euler.n - 1 - e0); /* first index */
        while (top) {
            uint32_t x = stack[top - 1];
            if (it[x] < child_off[x + 1]) {
                uint32_t y = child[it[x]++];
                pre[y] = npre++;
                if (!PUSH(co->pdep, dep[y]))
                    goto oom;
                if (!PUSH(co->euler, pre[y]))
                    goto oom;
                sb->root[y] = (uint32_t)(co->euler.n - 1 - e0);
                stack[top++] = y;
            } else {
                top--;
                if (top && !PUSH(co->euler, pre[stack[top - 1]]))
                    goto oom;
            }
        }
    }
    for (uint32_t v = 0; v < n; v++) {
        if (!PUSH(co->piece, pc[v]))
            goto oom;
        if (!PUSH(co->first, pc[v] != TD_NONE ? sb->root[v] : TD_NONE))
            goto oom;
    }
    /* Sparse table over block minima of the tour. */
    uint64_t E = co->euler.n - e0, nb = (E + RMQ_BLOCK - 1) / RMQ_BLOCK;
    for (uint64_t b = 0; b < nb; b++) {
        uint32_t m = UINT32_MAX;
        for (uint64_t i = b * RMQ_BLOCK; i < E && i < (b + 1) * RMQ_BLOCK; i++)
            if (co->euler.a[e0 + i] < m)
                m = co->euler.a[e0 + i];
        if (!PUSH(co->sparse, m))
            goto oom;
    }
    for (uint64_t w = 1; 2 * w <= nb; w *= 2) {
        uint64_t base = co->sparse.n - nb;
        for (uint64_t b = 0; b < nb; b++) {
            uint32_t a = co->sparse.a[base + b];
            uint32_t c2 = b + w < nb ? co->sparse.a[base + b + w] : a;
            if (!PUSH(co->sparse, a < c2 ? a : c2))
                goto oom;
        }
    }
    sb->stats->tree_vertices += npre;
    if (!PUSH(co->euler_off, co->euler.n) || !PUSH(co->pdep_off, co->pdep.n) ||
        !PUSH(co->sparse_off, co->sparse.n))
        goto oom;
    return TD_OK;
oom:
    return td_error_set(err, TD_ENOMEM, "tree cover: out of memory");
}

/* 0-1 BFS: crossing into another cluster costs 1; hop[v] = clusters met
 * on the best s-v path minus 1 (UINT32_MAX when unreachable). The deque is
 * a ring of n_arcs + 2 slots: no vertex is queued more often than its
 * in-degree + 1. Returns 0 when out of memory. */
static int zero_one_bfs(const td_graph *g, const uint32_t *cluster,
                        uint32_t s, uint32_t *hop)
{
    uint32_t n = g->n;
    size_t cap = (size_t)g->n_arcs + 2, head = 0, count = 0;
    uint32_t *dq = malloc(cap * sizeof *dq);
    if (!dq)
        return 0;
    for (uint32_t v = 0; v < n; v++)
        hop[v] = UINT32_MAX;
    hop[s] = 0;
    dq[0] = s;
    count = 1;
    while (count) {
        uint32_t x = dq[head];
        head = (head + 1) % cap;
        count--;
        for (uint64_t e = g->off[x]; e < g->off[x + 1]; e++) {
            uint32_t y = g->adj[e];
            uint32_t c = cluster[x] != cluster[y];
            if (hop[x] + c < hop[y] && count < cap) {
                hop[y] = hop[x] + c;
                if (c) {
                    dq[(head + count) % cap] = y;
                } else {
                    head = (head + cap - 1) % cap;
                    dq[head] = y;
                }
                count++;
            }
        }
    }
    free(dq);
    return 1;
}

td_status td_treecover_build(td_oracle *o, const td_graph *g,
                             const td_oracle_params *p, td_error *err)
{
    uint32_t n = g->n;
    td_dijkstra_ws ws;
    td_status st;
    scale_builder sb;
    cover_out co;
    memset(&sb, 0, sizeof sb);
    memset(&co, 0, sizeof co);
    if ((st = td_dijkstra_ws_init(&ws, n, err)) != TD_OK)
        return st;
    sb.g = g;
    sb.ws = &ws;
    sb.stats = &o->stats;
    sb.K = p->max_trees ? p->max_trees : 16;
    sb.cancel = p->cancel;
    size_t nn = (size_t)n + 1;
    sb.piece = malloc(sb.K * nn * sizeof *sb.piece);
    sb.par = malloc(sb.K * nn * sizeof *sb.par);
    sb.dep = malloc(sb.K * nn * sizeof *sb.dep);
    sb.cluster = malloc(nn * sizeof *sb.cluster);
    sb.root = malloc(nn * sizeof *sb.root);
    sb.skel_cl = malloc(nn * sizeof *sb.skel_cl);
    sb.skel_pos = malloc(nn * sizeof *sb.skel_pos);
    uint32_t *child_off = malloc((nn + 1) * sizeof(uint32_t));
    uint32_t *child = malloc(nn * sizeof(uint32_t));
    uint32_t *it = malloc(nn * sizeof(uint32_t));
    uint32_t *pre = malloc(nn * sizeof(uint32_t));
    uint32_t *stack = malloc(2 * nn * sizeof(uint32_t) + 8);
    uint32_t *comp = malloc(nn * sizeof(uint32_t));
    if (!sb.piece || !sb.par || !sb.dep || !sb.cluster || !sb.root ||
        !sb.skel_cl || !sb.skel_pos || !child_off || !child || !it || !pre || !stack ||
        !comp) {
        st = td_error_set(err, TD_ENOMEM, "tree cover: out of memory");
        goto done;
    }
    if (!PUSH(co.euler_off, 0) || !PUSH(co.pdep_off, 0) ||
        !PUSH(co.sparse_off, 0)) {
        st = td_error_set(err, TD_ENOMEM, "tree cover: out of memory");
        goto done;
    }
    /* Largest eccentricity over components bounds every distance by 2x. */
    uint32_t ncomp = 0;
    double ecc_max = 0;
    if ((st = td_graph_components(g, comp, &ncomp, err)) != TD_OK)
        goto done;
    for (uint32_t v = 0, seen = 0; v < n && seen < ncomp; v++)
        if (comp[v] == seen) {
            td_dijkstra_run(g, &ws, &v, NULL, 1, INFINITY, NULL, 0);
            double e = ws.side[0].dist[ws.side[0].settled[
                ws.side[0].n_settled - 1]];
            if (e > ecc_max)
                ecc_max = e;
            seen++;
        }
    double L0 = isfinite(g->w_min_pos) ? g->w_min_pos : 1;
    uint32_t n_scales = 1;
    while (L0 * ldexp(1.0, (int)n_scales - 1) < 2 * ecc_max)
        n_scales++;
    o->stats.scales = n_scales;
    double worst_ratio = 0;
    for (uint32_t si = 0; si < n_scales; si++) {
        td_cop cop;
        sb.L = L0 * ldexp(1.0, (int)si);
        sb.delta = p->eps * sb.L / 10;
        sb.R = sb.L + 2 * sb.delta;
        sb.n_clusters = 0;
        sb.next_piece = 0;
        sb.max_tau = 0;
        for (size_t i = 0; i < sb.K * nn; i++)
            sb.piece[i] = TD_NONE;
        for (uint32_t v = 0; v < n; v++) {
            sb.skel_cl[v] = TD_NONE;
            sb.cluster[v] = TD_NONE;
        }
        td_cop_params cp = {TD_COP_BALANCED, 1, sb.delta};
        st = td_cop_build(g, &cp, &ws, scale_visit, &sb, NULL, NULL, p->cancel,
                          &cop, err);
        if (st != TD_OK)
            goto done;
        if (si == n_scales - 1) {
            o->stats.supernodes = cop.n_sn;
            o->stats.branches = cop.n_br;
            o->stats.max_depth = cop.max_depth;
            o->stats.max_ancestors = cop.max_ancestors;
            o->stats.mean_depth = cop.mean_depth;
        }
        td_cop_free(&cop);
        if (sb.max_tau / sb.L > worst_ratio)
            worst_ratio = sb.max_tau / sb.L;
        /* Low-hop property of the top scale's shortcut partition: 0-1 BFS
         * from a few sources against ceil(d / (eps L)). */
        if (si == n_scales - 1 && n) {
            for (uint32_t q = 0; q < 8; q++) {
                uint32_t s = (uint32_t)(((uint64_t)q * 2654435761u) % n);
                if (!zero_one_bfs(g, sb.cluster, s, it)) {
                    st = td_error_set(err, TD_ENOMEM, "tree cover: out of "
                                      "memory");
                    goto done;
                }
                td_dijkstra_run(g, &ws, &s, NULL, 1, INFINITY, NULL, 0);
                for (uint32_t v = 0; v < n; v++) {
                    if (it[v] == UINT32_MAX)
                        continue;
                    if (it[v] > o->stats.max_cluster_hops)
                        o->stats.max_cluster_hops = it[v];
                    double budget = ceil(ws.side[0].dist[v] /
                                         (p->eps * sb.L));
                    if (budget < 1)
                        budget = 1;
                    if ((it[v] + 1) / budget > o->stats.max_hops_ratio)
                        o->stats.max_hops_ratio = (it[v] + 1) / budget;
                }
            }
        }
        for (uint32_t j = 0; j < sb.K; j++) {
            int used = 0;
            for (uint32_t v = 0; v < n && !used; v++)
                used = sb.piece[(size_t)j * n + v] != TD_NONE;
            if (!used)
                continue;
            st = emit_tree(&sb, j, &co, child_off, child, it, pre, stack, err);
            if (st != TD_OK)
                goto done;
            o->n_trees++;
        }
        if (p->progress)
            p->progress(p->progress_ctx, 0.99 * (si + 1) / n_scales,
                        "tree cover");
    }
    o->stats.trees = o->n_trees;
    o->stats.max_tau_over_L = worst_ratio;
    o->factor = (o->stats.pieces_dropped == 0 && g->w_min_pos > 0 &&
                 !(g->n_arcs && g->w_min_pos == INFINITY))
                    ? 1 + 4 * worst_ratio
                    : INFINITY;
    /* zero-weight edges: pairs at distance 0 have no multiplicative bound */
    for (uint64_t e = 0; e < g->n_arcs; e++)
        if (g->w[e] == 0) {
            o->factor = INFINITY;
            break;
        }
#define KEEP(vec, field)                                                      \
    do {                                                                      \
        if (st == TD_OK) {                                                    \
            if (!(vec).a && !PUSH(vec, 0))                                    \
                st = td_error_set(err, TD_ENOMEM, "out of memory");           \
            if (st == TD_OK)                                                  \
                st = td_oracle_keep(o, (vec).a, err);                         \
            if (st == TD_OK)                                                  \
                field = (vec).a;                                              \
            (vec).a = NULL;                                                   \
        }                                                                     \
    } while (0)
    KEEP(co.piece, o->tc_piece);
    KEEP(co.first, o->tc_first);
    KEEP(co.euler_off, o->tc_euler_off);
    KEEP(co.euler, o->tc_euler);
    KEEP(co.pdep_off, o->tc_pdep_off);
    KEEP(co.pdep, o->tc_pdep);
    KEEP(co.sparse_off, o->tc_sparse_off);
    KEEP(co.sparse, o->tc_sparse);
#undef KEEP
done:
    free(co.piece.a);
    free(co.first.a);
    free(co.euler_off.a);
    free(co.euler.a);
    free(co.pdep_off.a);
    free(co.pdep.a);
    free(co.sparse_off.a);
    free(co.sparse.a);
    free(sb.piece);
    free(sb.par);
    free(sb.dep);
    free(sb.cluster);
    free(sb.root);
    free(sb.skel_cl);
    free(sb.skel_pos);
    free(child_off);
    free(child);
    free(it);
    free(pre);
    free(stack);
    free(comp);
    td_dijkstra_ws_free(&ws);
    return st;
}

/* Minimum of tour[i..j] (i <= j) for tree t. */
static uint32_t rmq(const td_oracle *o, uint32_t t, uint64_t i, uint64_t j)
{
    const uint32_t *E = o->tc_euler + o->tc_euler_off[t];
    uint64_t len = o->tc_euler_off[t + 1] - o->tc_euler_off[t];
    uint64_t nb = (len + RMQ_BLOCK - 1) / RMQ_BLOCK;
    const uint32_t *S = o->tc_sparse + o->tc_sparse_off[t];
    uint64_t bi = i / RMQ_BLOCK, bj = j / RMQ_BLOCK;
    uint32_t m = UINT32_MAX;
    if (bi == bj) {
        for (uint64_t x = i; x <= j; x++)
            if (E[x] < m)
                m = E[x];
        return m;
    }
    for (uint64_t x = i; x < (bi + 1) * RMQ_BLOCK; x++)
        if (E[x] < m)
            m = E[x];
    for (uint64_t x = bj * RMQ_BLOCK; x <= j; x++)
        if (E[x] < m)
            m = E[x];
    if (bj > bi + 1) {
        uint64_t a = bi + 1, b = bj - 1, w = b - a + 1;
        int k = 63 - __builtin_clzll(w);
        const uint32_t *lvl = S + (uint64_t)k * nb;
        uint32_t x1 = lvl[a], x2 = lvl[b + 1 - ((uint64_t)1 << k)];
        if (x1 < m)
            m = x1;
        if (x2 < m)
            m = x2;
    }
    return m;
}

double td_treecover_query(const td_oracle *o, uint32_t u, uint32_t v)
{
    uint32_t n = o->g.n;
    double best = INFINITY;
    for (uint32_t t = 0; t < o->n_trees; t++) {
        uint32_t pu = o->tc_piece[(size_t)t * n + u];
        if (pu == TD_NONE || pu != o->tc_piece[(size_t)t * n + v])
            continue;
        uint64_t i = o->tc_first[(size_t)t * n + u];
        uint64_t j = o->tc_first[(size_t)t * n + v];
        const uint32_t *E = o->tc_euler + o->tc_euler_off[t];
        const double *D = o->tc_pdep + o->tc_pdep_off[t];
        double du = D[E[i]], dv = D[E[j]];
        uint32_t a = i <= j ? rmq(o, t, i, j) : rmq(o, t, j, i);
        double d = du + dv - 2 * D[a];
        if (d < best)
            best = d;
    }
    return best;
}

size_t td_treecover_bytes(const td_oracle *o)
{
    if (!o->n_trees)
        return 0;
    uint32_t T = o->n_trees;
    return (size_t)T * o->g.n * 8 + (size_t)(T + 1) * 24 +
           (size_t)o->tc_euler_off[T] * 4 + (size_t)o->tc_pdep_off[T] * 8 +
           (size_t)o->tc_sparse_off[T] * 4;
}
