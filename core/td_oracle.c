/* td_oracle: build and query; the 1+eps portal-label mode lives here.
 *
 * Labels (oracle.md §2, construction of the covers is ours [P]):
 * for every supernode X of a balanced cop hierarchy, every branch Q of X
 * (a shortest path of G[dom X]) and every v in dom X, v keeps portals
 * C(v,Q) subset of Q with distances L(v,a) = d_{dom X}(v,a) such that
 *     for every w in Q: min_a L(v,a) + |pos a - pos w| <= (1+eps) d(v,w).
 * A query scans the branches of the common ancestors of u and v and takes
 * min over a, b of L(u,a) + |pos a - pos b| + L(b,v): every term is a real
 * walk (>= d), and for the highest supernode X met by a shortest u-v path
 * P (P lies in dom X and crosses some branch Q of X at w) the cover gives
 * <= (1+eps)(d(u,w) + d(w,v)) = (1+eps) d(u,v).
 *
 * Computing covers without |Q| full searches: portal candidates come from
 * nets on Q per distance scale l (2^l <= d(v,w) < 2^(l+1)): net N_l takes
 * the first vertex of every pos-interval of length s_l = eps1 * 2^(l-1)
 * (all of Q at the finest scale l_min, 2^l_min <= smallest weight). A
 * search from each a in N_l, limited to 2^(l+1) + s_l, offers (v, a) to v
 * when d(v,Q) < 2^(l+1) (nested nets: one search per point suffices). The net point a in w's interval has
 * L(v,a) + |pos a - pos w| <= d(v,w) + 2 s_l <= (1+eps1) d(v,w).
 * Candidates are thinned greedily: one is dropped when a kept portal k has
 * L(v,k) + |pos k - pos a| <= (1+eps2) L(v,a); a kept portal that covers
 * nothing yet is replaced when a newcomer covers it the same way (see
 * offer()). Every candidate is thus covered in one step by a kept portal,
 * and (1+eps1)(1+eps2) = 1+eps.
 * Distances are stored as float rounded UP (still upper bounds). */
#include "config.h"

#include "td_oracle.h"
#include "td_treecover.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *td_oracle_mode_name(td_oracle_mode m)
{
    switch (m) {
    case TD_ORACLE_LABELS: return "labels";
    case TD_ORACLE_TREECOVER: return "treecover";
    }
    return NULL;
}

int td_oracle_mode_parse(const char *s)
{
    if (strcmp(s, "labels") == 0)
        return TD_ORACLE_LABELS;
    if (strcmp(s, "treecover") == 0)
        return TD_ORACLE_TREECOVER;
    return -1;
}

void td_oracle_params_default(td_oracle_params *p)
{
    memset(p, 0, sizeof *p);
    p->mode = TD_ORACLE_LABELS;
    p->eps = 0.1;
    /* Measured: without branches to ancestors the labels are about 30%
     * smaller at the same build cost (rome99, luxembourg); the 1+eps
     * guarantee does not need them (docs/ORACLE.md). */
    p->ancestor_branches = 0;
    p->max_trees = 16;
}

td_status td_oracle_keep(td_oracle *o, void *block, td_error *err)
{
    void **nb = realloc(o->blocks, (o->n_blocks + 1) * sizeof *nb);
    if (!nb) {
        free(block);
        return td_error_set(err, TD_ENOMEM, "oracle: out of memory");
    }
    o->blocks = nb;
    o->blocks[o->n_blocks++] = block;
    return TD_OK;
}

/* ---------------------------------------------------------------- build */

typedef struct lab_entry {
    uint32_t pv;
    float d;
} lab_entry;

typedef struct lab_vec {
    lab_entry *e;
    uint32_t len, cap;
} lab_vec;

typedef struct label_builder {
    const td_graph *g;
    td_dijkstra_ws *ws;
    double eps1, eps2;
    int l_min;
    double *dq;          /* [n] distance to the current branch */
    lab_vec *kept;       /* [n] covers for the current branch */
    lab_vec *lab;        /* [n] final labels */
    uint64_t settled;
    double work_done, work_total;
    const td_oracle_params *p;
} label_builder;

static float round_up_f32(double d)
{
    float f = (float)d;
    if ((double)f < d)
        f = nextafterf(f, INFINITY);
    return f;
}

static int vec_push(lab_vec *v, uint32_t pv, float d)
{
    if (v->len == v->cap) {
        uint32_t cap = v->cap ? v->cap * 2 : 8;
        lab_entry *e = realloc(v->e, (size_t)cap * sizeof *e);
        if (!e)
            return 0;
        v->e = e;
        v->cap = cap;
    }
    v->e[v->len].pv = pv;
    v->e[v->len].d = d;
    v->len++;
    return 1;
}

static int cmp_entry(const void *a, const void *b)
{
    const lab_entry *x = a, *y = b;
    return (x->pv > y->pv) - (x->pv < y->pv);
}

/* Offer portal pv (at pos) to v at exact distance d. A kept portal that
 * covers some dropped candidate is "load-bearing" (marked by a set sign bit
 * on its stored distance, which is otherwise >= 0); one that is not may
 * itself be dropped when a newcomer covers it, since then nothing depends
 * on it and the newcomer covers it within 1+eps2 directly - and the
 * newcomer becomes load-bearing. So coverage never chains through two
 * thinning steps. */
static int offer(label_builder *lb, const td_cop *c, uint32_t v, uint32_t pv,
                 double d)
{
    lab_vec *k = &lb->kept[v];
    double pos = c->pv_pos[pv], lim = (1 + lb->eps2) * d;
    for (uint32_t i = 0; i < k->len; i++)
        if ((double)fabsf(k->e[i].d) + fabs(c->pv_pos[k->e[i].pv] - pos) <=
            lim) {
            k->e[i].d = -fabsf(k->e[i].d);
            return 1;
        }
    float fd = round_up_f32(d);
    uint32_t out = 0, dropped = 0;
    for (uint32_t i = 0; i < k->len; i++) {
        int used = signbit(k->e[i].d) != 0;
        if (!used && (double)fd + fabs(c->pv_pos[k->e[i].pv] - pos) <=
                         (1 + lb->eps2) * (double)k->e[i].d) {
            dropped++; /* unused and covered by the newcomer: drop it */
            continue;
        }
        k->e[out++] = k->e[i];
    }
    k->len = out;
    /* A newcomer that replaced entries now covers them: load-bearing. */
    return vec_push(k, pv, dropped ? -fd : fd);
}

static td_status label_visit(void *ctx, const td_cop *c, uint32_t s,
                             const uint32_t *dom, uint32_t k,
                             const uint32_t *mark, uint32_t mark_val,
                             td_error *err)
{
    label_builder *lb = ctx;
    const td_graph *g = lb->g;
    td_dijkstra_ws *ws = lb->ws;
    td_dside *d = &ws->side[0];
    for (uint32_t b = c->sn_br[s]; b < c->sn_br[s + 1]; b++) {
        uint64_t lo = c->br_off[b], hi = c->br_off[b + 1];
        uint32_t nq = (uint32_t)(hi - lo);
        /* Distances to Q (multi-source) decide which scales v needs. */
        td_dijkstra_run(g, ws, c->pv_vertex + lo, NULL, nq, INFINITY, mark,
                        mark_val);
        lb->settled += d->n_settled;
        double maxdq = 0;
        for (uint32_t i = 0; i < d->n_settled; i++) {
            uint32_t v = d->settled[i];
            lb->dq[v] = d->dist[v];
            if (d->dist[v] > maxdq)
                maxdq = d->dist[v];
        }
        for (uint32_t i = 0; i < k; i++)
            lb->kept[dom[i]].len = 0;
        double maxd = maxdq + c->pv_pos[hi - 1];
        int l_top = lb->l_min;
        if (maxd > 0 && isfinite(maxd)) {
            int e = ilogb(maxd);
            if (e > l_top)
                l_top = e;
        }
        /* The nets are nested (N_(l+1) is a subset of N_l), so one search
         * per net point, with the radius of the coarsest net holding it,
         * offers everything the per-scale searches would: the conditions
         * d <= R_l and d(v,Q) < 2^(l+1) only loosen as l grows. */
        int *top = malloc((size_t)nq * sizeof *top);
        if (!top)
            return td_error_set(err, TD_ENOMEM, "oracle build: out of "
                                "memory");
        for (uint64_t a = lo; a < hi; a++)
            top[a - lo] = lb->l_min;
        for (int l = lb->l_min + 1; l <= l_top; l++) {
            double sp = lb->eps1 * ldexp(1.0, l - 1);
            for (uint64_t a = lo; a < hi; a++)
                if (a == lo || floor(c->pv_pos[a] / sp) !=
                                   floor(c->pv_pos[a - 1] / sp))
                    top[a - lo] = l;
        }
        /* Finest first: short, precise portals arrive before coarse ones,
         * which keeps the greedy thinning effective. */
        for (int l = lb->l_min; l <= l_top; l++) {
            double two = ldexp(1.0, l + 1);
            double R = two + lb->eps1 * ldexp(1.0, l - 1);
            for (uint64_t a = lo; a < hi; a++) {
                if (top[a - lo] != l)
                    continue;
                if (lb->p->cancel && atomic_load(lb->p->cancel)) {
                    free(top);
                    return td_error_set(err, TD_EBUSY, "oracle build: "
                                        "cancelled");
                }
                uint32_t src = c->pv_vertex[a];
                td_dijkstra_run(g, ws, &src, NULL, 1, R, mark, mark_val);
                lb->settled += d->n_settled;
                for (uint32_t i = 0; i < d->n_settled; i++) {
                    uint32_t v = d->settled[i];
                    if (lb->dq[v] < two &&
                        !offer(lb, c, v, (uint32_t)a, d->dist[v])) {
                        free(top);
                        return td_error_set(err, TD_ENOMEM, "oracle build: "
                                            "out of memory");
                    }
                }
            }
        }
        free(top);
        for (uint32_t i = 0; i < k; i++) {
            lab_vec *kv = &lb->kept[dom[i]];
            qsort(kv->e, kv->len, sizeof *kv->e, cmp_entry);
            for (uint32_t j = 0; j < kv->len; j++)
                if (!vec_push(&lb->lab[dom[i]], kv->e[j].pv,
                              fabsf(kv->e[j].d)))
                    return td_error_set(err, TD_ENOMEM, "oracle build: out "
                                        "of memory");
        }
        lb->work_done += k;
        if (lb->p->progress) {
            double f = lb->work_done / lb->work_total;
            lb->p->progress(lb->p->progress_ctx, f < 0.99 ? f : 0.99,
                            "labels");
        }
    }
    return TD_OK;
}

/* Copy a graph into blocks owned by o. */
static td_status copy_graph(td_oracle *o, const td_graph *g, td_error *err)
{
    size_t bytes = td_graph_bytes(g);
    unsigned char *blk = malloc(bytes ? bytes : 1);
    if (!blk)
        return td_error_set(err, TD_ENOMEM, "oracle: out of memory copying "
                            "the graph");
    size_t no = ((size_t)g->n + 1) * 8, nw = (size_t)g->n_arcs * 8;
    memcpy(blk, g->off, no);
    memcpy(blk + no, g->w, nw);
    memcpy(blk + no + nw, g->adj, (size_t)g->n_arcs * 4);
    o->g = *g;
    o->g.off = (const uint64_t *)blk;
    o->g.w = (const double *)(blk + no);
    o->g.adj = (const uint32_t *)(blk + no + nw);
    o->g.owned = NULL; /* freed through o->blocks */
    return td_oracle_keep(o, blk, err);
}

static void *take_array(td_oracle *o, void *p, td_status *st, td_error *err)
{
    if (*st != TD_OK) {
        free(p);
        return NULL;
    }
    if (!p) {
        *st = td_error_set(err, TD_ENOMEM, "oracle: out of memory");
        return NULL;
    }
    *st = td_oracle_keep(o, p, err);
    return *st == TD_OK ? p : NULL;
}

static td_status build_labels(td_oracle *o, const td_graph *g,
                              const td_oracle_params *p, td_error *err)
{
    td_dijkstra_ws ws;
    td_cop cop;
    label_builder lb;
    td_status st;
    uint32_t n = g->n;
    memset(&lb, 0, sizeof lb);
    if ((st = td_dijkstra_ws_init(&ws, n, err)) != TD_OK)
        return st;
    lb.g = g;
    lb.ws = &ws;
    lb.p = p;
    /* Split the budget: (1+eps1)(1+eps2) = 1+eps; eps1 keeps a margin for
     * rounding the stored distances up to float. */
    lb.eps2 = sqrt(1 + p->eps) - 1;
    lb.eps1 = (1 + p->eps) / (1 + lb.eps2) - 1 - 1e-6;
    lb.l_min = isfinite(g->w_min_pos) ? ilogb(g->w_min_pos) : 0;
    lb.work_total = n ? (double)n * (log2((double)n) + 1) : 1;
    lb.dq = malloc(((size_t)n + 1) * sizeof *lb.dq);
    lb.kept = calloc((size_t)n + 1, sizeof *lb.kept);
    lb.lab = calloc((size_t)n + 1, sizeof *lb.lab);
    if (!lb.dq || !lb.kept || !lb.lab) {
        st = td_error_set(err, TD_ENOMEM, "oracle: out of memory");
        goto done;
    }
    td_cop_params cp = {TD_COP_BALANCED, p->ancestor_branches, 0.0};
    st = td_cop_build(g, &cp, &ws, label_visit, &lb, NULL, NULL, p->cancel,
                      &cop, err);
    if (st != TD_OK)
        goto done;
    o->stats.supernodes = cop.n_sn;
    o->stats.branches = cop.n_br;
    o->stats.max_depth = cop.max_depth;
    o->stats.max_ancestors = cop.max_ancestors;
    o->stats.mean_depth = cop.mean_depth;
    o->stats.dijkstra_settled = lb.settled;

    /* Pack labels and the decomposition into flat arrays. */
    uint64_t total = 0;
    uint32_t maxl = 0;
    for (uint32_t v = 0; v < n; v++) {
        total += lb.lab[v].len;
        if (lb.lab[v].len > maxl)
            maxl = lb.lab[v].len;
    }
    o->stats.label_entries = total;
    o->stats.max_label = maxl;
    uint64_t *off = take_array(o, malloc(((size_t)n + 1) * 8), &st, err);
    uint32_t *lpv = take_array(o, malloc((size_t)(total ? total : 1) * 4),
                               &st, err);
    float *ld = take_array(o, malloc((size_t)(total ? total : 1) * 4), &st,
                           err);
    uint32_t *pvb = take_array(o, malloc((size_t)(cop.n_pv + 1) * 4), &st,
                               err);
    if (st != TD_OK)
        goto done_cop;
    off[0] = 0;
    for (uint32_t v = 0; v < n; v++) {
        for (uint32_t j = 0; j < lb.lab[v].len; j++) {
            lpv[off[v] + j] = lb.lab[v].e[j].pv;
            ld[off[v] + j] = lb.lab[v].e[j].d;
        }
        off[v + 1] = off[v] + lb.lab[v].len;
        free(lb.lab[v].e);
        lb.lab[v].e = NULL;
    }
    for (uint32_t b = 0; b < cop.n_br; b++)
        for (uint64_t i = cop.br_off[b]; i < cop.br_off[b + 1]; i++)
            pvb[i] = b;
    o->lab_off = off;
    o->lab_pv = lpv;
    o->lab_dist = ld;
    o->pv_branch = pvb;
    o->n_pv = cop.n_pv;
    o->n_br = cop.n_br;
    o->n_sn = cop.n_sn;
    /* Hand the cop arrays over to the oracle. */
    if ((st = td_oracle_keep(o, cop.br_off, err)) == TD_OK)
        o->br_off = cop.br_off;
    cop.br_off = NULL;
    if (st == TD_OK && (st = td_oracle_keep(o, cop.pv_pos, err)) == TD_OK)
        o->pv_pos = cop.pv_pos;
    cop.pv_pos = NULL;
    if (st == TD_OK && (st = td_oracle_keep(o, cop.sn_of, err)) == TD_OK)
        o->sn_of = cop.sn_of;
    cop.sn_of = NULL;
    if (st == TD_OK && (st = td_oracle_keep(o, cop.sn_parent, err)) == TD_OK)
        o->sn_parent = cop.sn_parent;
    cop.sn_parent = NULL;
    if (st == TD_OK && (st = td_oracle_keep(o, cop.br_sn, err)) == TD_OK)
        o->br_sn = cop.br_sn;
    cop.br_sn = NULL;
done_cop:
    td_cop_free(&cop);
done:
    if (lb.kept)
        for (uint32_t v = 0; v < n; v++)
            free(lb.kept[v].e);
    if (lb.lab)
        for (uint32_t v = 0; v < n; v++)
            free(lb.lab[v].e);
    free(lb.kept);
    free(lb.lab);
    free(lb.dq);
    td_dijkstra_ws_free(&ws);
    return st;
}

td_status td_oracle_build(const td_graph *g, const td_oracle_params *p,
                          td_oracle *o, td_error *err)
{
    struct timespec t0, t1;
    td_status st;
    memset(o, 0, sizeof *o);
    if (g->directed)
        return td_error_set(err, TD_EINVAL, "oracle: the graph must be "
                            "undirected");
    if (!(p->eps > 0 && p->eps <= 1))
        return td_error_set(err, TD_EINVAL, "oracle: eps must be in (0, 1], "
                            "got %g", p->eps);
    if (p->mode != TD_ORACLE_LABELS && p->mode != TD_ORACLE_TREECOVER)
        return td_error_set(err, TD_EINVAL, "oracle: unknown mode %d",
                            (int)p->mode);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    o->mode = p->mode;
    o->eps = p->eps;
    if ((st = copy_graph(o, g, err)) != TD_OK)
        goto fail;
    if (p->mode == TD_ORACLE_LABELS) {
        o->factor = 1 + p->eps;
        st = build_labels(o, g, p, err);
    } else {
        o->factor = INFINITY;
        st = td_treecover_build(o, g, p, err);
    }
    if (st != TD_OK)
        goto fail;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    o->stats.build_seconds = (double)(t1.tv_sec - t0.tv_sec) +
                             (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (p->progress)
        p->progress(p->progress_ctx, 1.0, "done");
    return TD_OK;
fail:
    td_oracle_free(o);
    return st;
}

void td_oracle_free(td_oracle *o)
{
    for (size_t i = 0; i < o->n_blocks; i++)
        free(o->blocks[i]);
    free(o->blocks);
    if (o->file && o->close_file)
        o->close_file(o->file);
    memset(o, 0, sizeof *o);
}

/* ---------------------------------------------------------------- query */

static double query_labels(const td_oracle *o, uint32_t u, uint32_t v)
{
    uint64_t i = o->lab_off[u], ie = o->lab_off[u + 1];
    uint64_t j = o->lab_off[v], je = o->lab_off[v + 1];
    const uint32_t *P = o->lab_pv;
    const float *L = o->lab_dist;
    const double *pos = o->pv_pos;
    double best = INFINITY;
    /* Common ancestors' branches form a common prefix of both labels. */
    while (i < ie && j < je) {
        uint32_t b = o->pv_branch[P[i]];
        if (o->pv_branch[P[j]] != b)
            break;
        uint64_t end = o->br_off[b + 1];
        double minu = INFINITY, minv = INFINITY; /* min of L - pos so far */
        while (i < ie && P[i] < end && j < je && P[j] < end) {
            if (P[i] <= P[j]) {
                double pu = pos[P[i]], lu = L[i];
                double c = lu + pu + minv;
                if (c < best)
                    best = c;
                if (lu - pu < minu)
                    minu = lu - pu;
                i++;
            } else {
                double pv = pos[P[j]], lv = L[j];
                double c = lv + pv + minu;
                if (c < best)
                    best = c;
                if (lv - pv < minv)
                    minv = lv - pv;
                j++;
            }
        }
        /* The tail of one side pairs only with the other's minimum. */
        for (; i < ie && P[i] < end; i++) {
            double c = L[i] + pos[P[i]] + minv;
            if (c < best)
                best = c;
        }
        for (; j < je && P[j] < end; j++) {
            double c = L[j] + pos[P[j]] + minu;
            if (c < best)
                best = c;
        }
    }
    return best;
}

td_status td_oracle_query(const td_oracle *o, uint32_t u, uint32_t v,
                          double *dist, double *factor, td_error *err)
{
    if (u >= o->g.n || v >= o->g.n)
        return td_error_set(err, TD_EINVAL, "vertex id %u out of range "
                            "(graph has %u vertices)",
                            (unsigned)(u >= o->g.n ? u : v),
                            (unsigned)o->g.n);
    if (u == v)
        *dist = 0;
    else if (o->mode == TD_ORACLE_LABELS)
        *dist = query_labels(o, u, v);
    else
        *dist = td_treecover_query(o, u, v);
    if (factor)
        *factor = o->factor;
    return TD_OK;
}

double td_oracle_lower_bound(const void *ctx, uint32_t x, uint32_t target)
{
    const td_oracle *o = ctx;
    double a;
    if (x == target || !isfinite(o->factor))
        return 0;
    a = o->mode == TD_ORACLE_LABELS ? query_labels(o, x, target)
                                    : td_treecover_query(o, x, target);
    /* The margin absorbs rounding in a / factor. */
    return a / o->factor * (1 - 1e-12);
}

td_status td_oracle_query_exact(const td_oracle *o, td_dijkstra_ws *ws,
                                uint32_t u, uint32_t v, double *dist,
                                td_error *err)
{
    double ub = INFINITY;
    td_status st = td_oracle_query(o, u, v, &ub, NULL, err);
    if (st != TD_OK)
        return st;
    if (ws->n < o->g.n)
        return td_error_set(err, TD_EINVAL, "exact query: workspace for %u "
                            "vertices, graph has %u", (unsigned)ws->n,
                            (unsigned)o->g.n);
    if (u == v) {
        *dist = 0;
        return TD_OK;
    }
    if (ub == INFINITY) { /* different components: nothing to search */
        *dist = INFINITY;
        return TD_OK;
    }
    /* The bound rarely prunes a bidirectional search (best drops to d as
     * soon as the frontiers meet); it certifies the answer. Pruning with
     * td_oracle_lower_bound as well cut scanned arcs 3.4x on rome99 at
     * eps 0.1 but cost an oracle query per settled vertex, which did not
     * pay on luxembourg (docs/ORACLE.md), so it is left to callers. */
    *dist = td_bidijkstra(&o->g, ws, u, v, ub);
    return TD_OK;
}

size_t td_oracle_bytes(const td_oracle *o)
{
    size_t b = td_graph_bytes(&o->g);
    b += ((size_t)o->g.n + o->n_sn + o->n_br) * 4;
    if (o->mode == TD_ORACLE_LABELS) {
        b += ((size_t)o->n_br + 1) * 8 + (size_t)o->n_pv * 12;
        b += ((size_t)o->g.n + 1) * 8 + (size_t)o->stats.label_entries * 8;
    } else {
        b += td_treecover_bytes(o);
    }
    return b;
}
