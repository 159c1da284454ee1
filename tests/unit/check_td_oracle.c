/* Unit tests for td_cop and td_oracle: decomposition invariants, the 1+eps
 * guarantee against exact Dijkstra, exact queries, save/load. */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "td_cop.h"
#include "td_dijkstra.h"
#include "td_file.h"
#include "td_graph.h"
#include "td_graph_io.h"
#include "td_oracle.h"
#include "td_safetensors.h"
#include "td_test_roads.h"

static uint64_t rng_state;

static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

static void build(td_edgelist *el, td_graph *g)
{
    td_error err;
    ck_assert_int_eq(td_graph_build(el, 0, g, &err), TD_OK);
    td_edgelist_free(el);
}

/* w x h grid with random integer weights 1..9, offset by `base`. */
static void add_grid(td_edgelist *el, uint32_t base, uint32_t w, uint32_t h)
{
    td_error err;
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            uint32_t v = base + y * w + x;
            if (x + 1 < w)
                td_edgelist_push(el, v, v + 1, 1 + rnd() % 9, &err);
            if (y + 1 < h)
                td_edgelist_push(el, v, v + w, 1 + rnd() % 9, &err);
        }
}

static void grid(uint32_t w, uint32_t h, td_graph *g)
{
    td_edgelist el;
    td_edgelist_init(&el);
    el.n = w * h;
    add_grid(&el, 0, w, h);
    build(&el, g);
}

/* Random points in a square, each joined to its 3 nearest neighbours with
 * the rounded Euclidean length: a road-like, nearly planar graph. */
static void geometric(uint32_t n, td_graph *g)
{
    td_edgelist el;
    td_error err;
    double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    td_edgelist_init(&el);
    el.n = n;
    for (uint32_t i = 0; i < n; i++) {
        x[i] = rnd() % 100000;
        y[i] = rnd() % 100000;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t best[3] = {i, i, i};
        double bd[3] = {INFINITY, INFINITY, INFINITY};
        for (uint32_t j = 0; j < n; j++) {
            double d = hypot(x[i] - x[j], y[i] - y[j]);
            if (j == i || d >= bd[2])
                continue;
            int k = 2;
            while (k > 0 && d < bd[k - 1]) {
                bd[k] = bd[k - 1];
                best[k] = best[k - 1];
                k--;
            }
            bd[k] = d;
            best[k] = j;
        }
        for (int k = 0; k < 3; k++)
            td_edgelist_push(&el, i, best[k], 1 + round(bd[k]), &err);
    }
    /* Chain the points in index order too, so the graph is connected. */
    for (uint32_t i = 0; i + 1 < n; i++)
        td_edgelist_push(&el, i, i + 1,
                         1 + round(hypot(x[i] - x[i + 1], y[i] - y[i + 1])),
                         &err);
    free(x);
    free(y);
    build(&el, g);
}

/* Two grids and an isolated vertex: three components. */
static void disconnected(td_graph *g)
{
    td_edgelist el;
    td_edgelist_init(&el);
    el.n = 12 * 10 + 7 * 7 + 1;
    add_grid(&el, 0, 12, 10);
    add_grid(&el, 120, 7, 7);
    build(&el, g);
}

static void path_graph(uint32_t n, td_graph *g)
{
    td_edgelist el;
    td_error err;
    td_edgelist_init(&el);
    el.n = n;
    for (uint32_t i = 0; i + 1 < n; i++)
        td_edgelist_push(&el, i, i + 1, 1 + rnd() % 5, &err);
    build(&el, g);
}

/* ---- decomposition invariants ---- */

typedef struct visit_ctx {
    const td_graph *g;
    td_dijkstra_ws ws;
    uint32_t visits;
    uint32_t branches_checked;
} visit_ctx;

/* Every branch is a path of G[dom] whose positions are dom distances from
 * its first vertex, i.e. a shortest path of the domain. */
static td_status check_branches(void *ctx, const td_cop *c, uint32_t s,
                                const uint32_t *dom, uint32_t k,
                                const uint32_t *mark, uint32_t mark_val,
                                td_error *err)
{
    visit_ctx *vc = ctx;
    (void)err;
    vc->visits++;
    for (uint32_t i = 0; i < k; i++)
        ck_assert_uint_eq(mark[dom[i]], mark_val);
    for (uint32_t b = c->sn_br[s]; b < c->sn_br[s + 1]; b++) {
        uint64_t lo = c->br_off[b], hi = c->br_off[b + 1];
        uint32_t first = c->pv_vertex[lo];
        ck_assert_uint_eq(c->br_sn[b], s);
        ck_assert(c->pv_pos[lo] == 0);
        td_dijkstra_run(vc->g, &vc->ws, &first, NULL, 1, INFINITY, mark,
                        mark_val);
        for (uint64_t i = lo; i < hi; i++) {
            uint32_t v = c->pv_vertex[i];
            ck_assert_uint_eq(mark[v], mark_val);
            ck_assert_msg(fabs(td_dijkstra_dist(&vc->ws, v) - c->pv_pos[i]) <
                              1e-9,
                          "branch %u vertex %u: pos %g, dom distance %g", b, v,
                          c->pv_pos[i], td_dijkstra_dist(&vc->ws, v));
            if (i > lo) { /* consecutive branch vertices are adjacent */
                uint32_t u = c->pv_vertex[i - 1];
                int adj = 0;
                for (uint64_t e = vc->g->off[u]; e < vc->g->off[u + 1]; e++)
                    adj |= vc->g->adj[e] == v;
                ck_assert(adj);
            }
        }
        vc->branches_checked++;
    }
    return TD_OK;
}

static void check_cop(const td_graph *g, td_cop_root root, double delta)
{
    td_dijkstra_ws ws;
    td_cop c;
    td_error err;
    visit_ctx vc = {g, {0}, 0, 0};
    td_cop_params p = {root, 1, delta};
    ck_assert_int_eq(td_dijkstra_ws_init(&ws, g->n, &err), TD_OK);
    ck_assert_int_eq(td_dijkstra_ws_init(&vc.ws, g->n, &err), TD_OK);
    ck_assert_int_eq(td_cop_build(g, &p, &ws, check_branches, &vc, NULL, NULL,
                                  NULL, &c, &err), TD_OK);
    ck_assert_uint_eq(vc.visits, c.n_sn);
    ck_assert_uint_eq(vc.branches_checked, c.n_br);
    /* Supernodes partition V and each is connected. */
    uint32_t *size = calloc(c.n_sn, sizeof *size), *seen, *queue;
    for (uint32_t v = 0; v < g->n; v++) {
        ck_assert_uint_lt(c.sn_of[v], c.n_sn);
        size[c.sn_of[v]]++;
    }
    seen = calloc(g->n, sizeof *seen);
    queue = malloc(g->n * sizeof *queue);
    uint32_t *reached = calloc(c.n_sn, sizeof *reached);
    for (uint32_t v = 0; v < g->n; v++) {
        uint32_t s = c.sn_of[v];
        if (reached[s])
            continue;
        uint32_t qn = 0;
        queue[qn++] = v;
        seen[v] = 1;
        for (uint32_t q = 0; q < qn; q++)
            for (uint64_t e = g->off[queue[q]]; e < g->off[queue[q] + 1]; e++) {
                uint32_t y = g->adj[e];
                if (!seen[y] && c.sn_of[y] == s) {
                    seen[y] = 1;
                    queue[qn++] = y;
                }
            }
        reached[s] = qn;
        ck_assert_msg(qn == size[s], "supernode %u: %u of %u vertices "
                      "connected", s, qn, size[s]);
    }
    for (uint32_t s = 0; s < c.n_sn; s++) {
        ck_assert_uint_gt(size[s], 0);
        ck_assert(c.sn_parent[s] == TD_NONE || c.sn_parent[s] < s);
        ck_assert_uint_eq(c.sn_depth[s], c.sn_parent[s] == TD_NONE
                                             ? 0
                                             : c.sn_depth[c.sn_parent[s]] + 1);
    }
    if (delta > 0)
        ck_assert(c.max_radius <= delta);
    free(size);
    free(seen);
    free(queue);
    free(reached);
    td_cop_free(&c);
    td_dijkstra_ws_free(&ws);
    td_dijkstra_ws_free(&vc.ws);
}

START_TEST(test_cop_invariants)
{
    td_graph g;
    rng_state = 1;
    grid(20, 15, &g);
    check_cop(&g, TD_COP_BALANCED, 0);
    check_cop(&g, TD_COP_AGG, 0);
    check_cop(&g, TD_COP_AGG, 12);
    td_graph_free(&g);
    geometric(400, &g);
    check_cop(&g, TD_COP_BALANCED, 0);
    check_cop(&g, TD_COP_AGG, 5000);
    td_graph_free(&g);
    disconnected(&g);
    check_cop(&g, TD_COP_BALANCED, 0);
    check_cop(&g, TD_COP_AGG, 3);
    td_graph_free(&g);
    path_graph(50, &g);
    check_cop(&g, TD_COP_BALANCED, 0);
    td_graph_free(&g);
}
END_TEST

START_TEST(test_balanced_is_shallower_than_agg)
{
    td_graph g;
    td_dijkstra_ws ws;
    td_cop a, b;
    td_error err;
    td_cop_params pb = {TD_COP_BALANCED, 1, 0}, pa = {TD_COP_AGG, 1, 0};
    rng_state = 3;
    grid(40, 40, &g);
    ck_assert_int_eq(td_dijkstra_ws_init(&ws, g.n, &err), TD_OK);
    ck_assert_int_eq(td_cop_build(&g, &pb, &ws, NULL, NULL, NULL, NULL, NULL,
                                  &b, &err), TD_OK);
    ck_assert_int_eq(td_cop_build(&g, &pa, &ws, NULL, NULL, NULL, NULL, NULL,
                                  &a, &err), TD_OK);
    ck_assert_uint_lt(b.max_depth, a.max_depth);
    ck_assert_uint_le(b.max_ancestors, 3); /* planar grid: |A| <= r-2 = 3 */
    td_cop_free(&a);
    td_cop_free(&b);
    td_dijkstra_ws_free(&ws);
    td_graph_free(&g);
}
END_TEST

/* ---- oracle ---- */

/* Compare oracle answers with exact distances on `pairs` random pairs (all
 * pairs when pairs == 0). Returns the max stretch seen. */
static double check_oracle(const td_oracle *o, const td_graph *g,
                           uint32_t pairs)
{
    td_dijkstra_ws ws;
    td_error err;
    double worst = 1;
    uint32_t n = g->n;
    ck_assert_int_eq(td_dijkstra_ws_init(&ws, n, &err), TD_OK);
    uint64_t total = pairs ? pairs : (uint64_t)n * n;
    for (uint64_t k = 0; k < total; k++) {
        uint32_t u = pairs ? rnd() % n : (uint32_t)(k / n);
        uint32_t v = pairs ? rnd() % n : (uint32_t)(k % n);
        double d = td_bidijkstra(g, &ws, u, v, INFINITY), a, f, ex;
        ck_assert_int_eq(td_oracle_query(o, u, v, &a, &f, &err), TD_OK);
        ck_assert(f == o->factor);
        if (isinf(d)) {
            ck_assert_msg(isinf(a), "%u-%u: no path but oracle says %g", u,
                          v, a);
        } else {
            ck_assert_msg(a >= d, "%u-%u: answer %.17g below distance %.17g",
                          u, v, a, d);
            if (isfinite(f))
                ck_assert_msg(a <= f * d + 1e-9, "%u-%u: answer %g > %g * %g",
                              u, v, a, f, d);
            ck_assert_msg(isfinite(a), "%u-%u: connected but no answer", u,
                          v);
            if (d > 0 && a / d > worst)
                worst = a / d;
        }
        ck_assert_int_eq(td_oracle_query_exact(o, &ws, u, v, &ex, &err),
                         TD_OK);
        ck_assert_msg(ex == d || (isinf(ex) && isinf(d)),
                      "%u-%u: exact %g vs %g", u, v, ex, d);
        /* Lower bounds from the oracle never overestimate, so pruning a
         * search with them keeps it exact. */
        ck_assert(td_oracle_lower_bound(o, u, v) <= d);
        if (isfinite(d))
            ck_assert(td_bidijkstra_lb(g, &ws, u, v, a,
                                       td_oracle_lower_bound, o) == d);
    }
    td_dijkstra_ws_free(&ws);
    return worst;
}

static int use_ancestor_branches;

static void build_oracle(const td_graph *g, double eps, td_oracle *o)
{
    td_oracle_params p;
    td_error err;
    td_oracle_params_default(&p);
    p.eps = eps;
    p.ancestor_branches = use_ancestor_branches;
    ck_assert_msg(td_oracle_build(g, &p, o, &err) == TD_OK, "%s", err.msg);
    ck_assert_uint_eq(o->stats.label_entries, o->lab_off[g->n]);
}

START_TEST(test_labels_guarantee_on_small_graphs)
{
    td_graph g, g2;
    td_oracle o;
    rng_state = 11;
    const double eps[] = {0.5, 0.1, 0.02};
    for (int i = 0; i < 3; i++) {
        grid(15, 12, &g);
        build_oracle(&g, eps[i], &o);
        check_oracle(&o, &g, 0); /* every pair */
        td_oracle_free(&o);
        td_graph_free(&g);
    }
    geometric(500, &g);
    build_oracle(&g, 0.1, &o);
    check_oracle(&o, &g, 4000);
    td_oracle_free(&o);
    /* The cop variant (branches to every adjacent ancestor) is as exact. */
    use_ancestor_branches = 1;
    build_oracle(&g, 0.1, &o);
    check_oracle(&o, &g, 4000);
    td_oracle_free(&o);
    grid(15, 12, &g2);
    build_oracle(&g2, 0.1, &o);
    check_oracle(&o, &g2, 0);
    td_oracle_free(&o);
    td_graph_free(&g2);
    use_ancestor_branches = 0;
    td_graph_free(&g);
    path_graph(70, &g);
    build_oracle(&g, 0.25, &o);
    check_oracle(&o, &g, 0);
    td_oracle_free(&o);
    td_graph_free(&g);
}
END_TEST

START_TEST(test_labels_disconnected_and_bad_ids)
{
    td_graph g;
    td_oracle o;
    td_error err;
    double d, f;
    rng_state = 5;
    disconnected(&g);
    build_oracle(&g, 0.2, &o);
    check_oracle(&o, &g, 0);
    ck_assert_int_eq(td_oracle_query(&o, 0, 130, &d, &f, &err), TD_OK);
    ck_assert(isinf(d));
    ck_assert_int_eq(td_oracle_query(&o, 169, 169, &d, &f, &err), TD_OK);
    ck_assert(d == 0);
    ck_assert_int_eq(td_oracle_query(&o, 3, g.n, &d, &f, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "vertex id 170"));
    td_oracle_free(&o);
    td_graph_free(&g);
}
END_TEST

START_TEST(test_zero_weights_and_reals)
{
    /* Zero-weight edges and real weights still give >= d, <= (1+eps) d. */
    const char *js = "{\"nodes\": 6, \"edges\": [[0,1,0],[1,2,0.5],[2,3,0],"
                     "[3,4,2.25],[4,5,0],[5,0,7.125],[1,4,3]]}";
    td_edgelist el;
    td_graph g;
    td_oracle o;
    td_error err;
    ck_assert_int_eq(td_graph_parse(js, strlen(js), "z.json", NULL, &el,
                                    &err), TD_OK);
    build(&el, &g);
    build_oracle(&g, 0.1, &o);
    check_oracle(&o, &g, 0);
    td_oracle_free(&o);
    td_graph_free(&g);
}
END_TEST

typedef struct prog {
    double last;
    int calls, done;
    atomic_int *cancel_at_half;
} prog;

static void on_progress(void *ctx, double f, const char *phase)
{
    prog *p = ctx;
    ck_assert(f >= p->last && f <= 1);
    ck_assert_ptr_nonnull(phase);
    p->last = f;
    p->calls++;
    if (f == 1.0)
        p->done = 1;
    if (p->cancel_at_half && f > 0.2)
        atomic_store(p->cancel_at_half, 1);
}

START_TEST(test_progress_and_cancel)
{
    td_graph g;
    td_oracle o;
    td_oracle_params p;
    td_error err;
    atomic_int cancel = 0;
    prog pr = {0, 0, 0, NULL};
    rng_state = 9;
    grid(30, 30, &g);
    td_oracle_params_default(&p);
    p.progress = on_progress;
    p.progress_ctx = &pr;
    ck_assert_int_eq(td_oracle_build(&g, &p, &o, &err), TD_OK);
    ck_assert_int_gt(pr.calls, 3);
    ck_assert(pr.done);
    td_oracle_free(&o);
    pr = (prog){0, 0, 0, &cancel};
    p.cancel = &cancel;
    ck_assert_int_eq(td_oracle_build(&g, &p, &o, &err), TD_EBUSY);
    ck_assert_ptr_nonnull(strstr(err.msg, "cancelled"));
    ck_assert(!pr.done);
    p.eps = 0;
    ck_assert_int_eq(td_oracle_build(&g, &p, &o, &err), TD_EINVAL);
    td_graph_free(&g);
}
END_TEST

static double check_treecover(const td_graph *g, double eps, uint32_t K,
                              uint32_t pairs, td_oracle *o);

START_TEST(test_save_load_roundtrip_and_corruption)
{
    char dir[] = "/tmp/td_oracle_XXXXXX", path[128], path2[160];
    td_graph g;
    td_oracle o, l;
    td_error err;
    rng_state = 21;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/o.safetensors", dir);
    geometric(300, &g);
    build_oracle(&g, 0.1, &o);
    ck_assert_msg(td_oracle_save(&o, path, &err) == TD_OK, "%s", err.msg);
    ck_assert_msg(td_oracle_load(path, &l, &err) == TD_OK, "%s", err.msg);
    ck_assert_uint_eq(l.g.n, g.n);
    ck_assert(l.eps == o.eps && l.factor == o.factor);
    ck_assert_uint_eq(l.stats.label_entries, o.stats.label_entries);
    ck_assert_uint_eq(l.stats.max_label, o.stats.max_label);
    ck_assert_uint_eq(td_oracle_bytes(&l), td_oracle_bytes(&o));
    for (uint32_t k = 0; k < 3000; k++) {
        uint32_t u = rnd() % g.n, v = rnd() % g.n;
        double a, b;
        ck_assert_int_eq(td_oracle_query(&o, u, v, &a, NULL, &err), TD_OK);
        ck_assert_int_eq(td_oracle_query(&l, u, v, &b, NULL, &err), TD_OK);
        ck_assert(a == b);
    }
    check_oracle(&l, &g, 500);
    td_st_file *f = l.file;
    ck_assert_str_eq(td_st_meta_get(f, "kind"), "oracle");
    ck_assert_str_eq(td_st_meta_get(f, "mode"), "labels");
    ck_assert_ptr_nonnull(td_st_meta_get(f, "stat.label_entries"));
    /* Typed arrays are used in place (aligned by our writer). */
    ck_assert_ptr_eq(l.lab_pv, td_st_find(f, "labels.pv")->data);

    /* A foreign writer may leave tensors unaligned: shift the data area by
     * one byte (one more space in the header). The loader copies such
     * tensors and answers the same. */
    {
        char *raw, *shifted;
        size_t rlen;
        uint64_t hlen = 0;
        td_oracle m;
        ck_assert_int_eq(td_file_read(path, 1u << 30, &raw, &rlen, &err),
                         TD_OK);
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | (unsigned char)raw[i];
        shifted = malloc(rlen + 1);
        for (int i = 0; i < 8; i++)
            shifted[i] = (char)(((hlen + 1) >> (8 * i)) & 0xff);
        memcpy(shifted + 8, raw + 8, hlen);
        shifted[8 + hlen] = ' ';
        memcpy(shifted + 9 + hlen, raw + 8 + hlen, rlen - 8 - hlen);
        snprintf(path2, sizeof path2, "%s/shifted.safetensors", dir);
        ck_assert_int_eq(td_file_write_atomic(path2, shifted, rlen + 1, &err),
                         TD_OK);
        free(raw);
        free(shifted);
        ck_assert_msg(td_oracle_load(path2, &m, &err) == TD_OK, "%s",
                      err.msg);
        ck_assert_ptr_ne(m.lab_pv, td_st_find(m.file, "labels.pv")->data);
        ck_assert_uint_eq((uintptr_t)m.pv_pos % 8, 0);
        for (uint32_t k = 0; k < 2000; k++) {
            uint32_t u = rnd() % g.n, v = rnd() % g.n;
            double a, b;
            ck_assert_int_eq(td_oracle_query(&l, u, v, &a, NULL, &err),
                             TD_OK);
            ck_assert_int_eq(td_oracle_query(&m, u, v, &b, NULL, &err),
                             TD_OK);
            ck_assert(a == b);
        }
        td_oracle_free(&m);
        unlink(path2);
    }

    /* Corrupt one portal index: the loader must refuse the file. */
    char *buf;
    size_t len;
    const td_st_tensor *t = td_st_find(f, "labels.pv");
    size_t at = (size_t)((const unsigned char *)t->data - f->bytes);
    td_oracle_free(&l);
    ck_assert_int_eq(td_file_read(path, 1u << 30, &buf, &len, &err), TD_OK);
    uint32_t bad = 0xFFFFFF00u;
    memcpy(buf + at, &bad, 4);
    ck_assert_int_eq(td_file_write_atomic(path, buf, len, &err), TD_OK);
    free(buf);
    ck_assert_int_eq(td_oracle_load(path, &l, &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "labels.pv"));
    /* A file that is not an oracle. */
    ck_assert_int_eq(td_file_write_atomic(path, "junk", 4, &err), TD_OK);
    ck_assert_int_ne(td_oracle_load(path, &l, &err), TD_OK);

    /* The tree-cover mode round-trips too. */
    td_oracle_free(&o);
    check_treecover(&g, 0.3, 8, 200, &o);
    ck_assert_msg(td_oracle_save(&o, path, &err) == TD_OK, "%s", err.msg);
    ck_assert_msg(td_oracle_load(path, &l, &err) == TD_OK, "%s", err.msg);
    ck_assert_uint_eq(l.mode, TD_ORACLE_TREECOVER);
    ck_assert_uint_eq(l.n_trees, o.n_trees);
    ck_assert(l.factor == o.factor);
    for (uint32_t k = 0; k < 3000; k++) {
        uint32_t u = rnd() % g.n, v = rnd() % g.n;
        double a, b;
        ck_assert_int_eq(td_oracle_query(&o, u, v, &a, NULL, &err), TD_OK);
        ck_assert_int_eq(td_oracle_query(&l, u, v, &b, NULL, &err), TD_OK);
        ck_assert(a == b);
    }
    td_oracle_free(&l);
    unlink(path);
    rmdir(dir);
    td_oracle_free(&o);
    td_graph_free(&g);
}
END_TEST

/* The paper-style tree cover: answers never below d, connected pairs
 * always answered (the top scale spans each component), and within the
 * reported factor whenever one is guaranteed (no pieces dropped). */
static double check_treecover(const td_graph *g, double eps, uint32_t K,
                              uint32_t pairs, td_oracle *o)
{
    td_oracle_params p;
    td_error err;
    td_oracle_params_default(&p);
    p.mode = TD_ORACLE_TREECOVER;
    p.eps = eps;
    p.max_trees = K;
    ck_assert_msg(td_oracle_build(g, &p, o, &err) == TD_OK, "%s", err.msg);
    ck_assert_uint_gt(o->n_trees, 0);
    ck_assert_uint_le(o->n_trees, o->stats.scales * K);
    if (o->stats.pieces_dropped == 0 && g->w_min_pos > 0)
        ck_assert(isfinite(o->factor) && o->factor <= 1 + eps + 1e-12);
    return check_oracle(o, g, pairs);
}

START_TEST(test_treecover_bounds)
{
    td_graph g;
    td_oracle o;
    rng_state = 31;
    grid(12, 10, &g);
    double worst = check_treecover(&g, 0.5, 64, 0, &o);
    ck_assert(worst <= o.factor + 1e-12);
    ck_assert_uint_gt(o.stats.max_cluster_hops, 0);
    td_oracle_free(&o);
    /* Few trees per scale: pieces are dropped, factor is unbounded, answers
     * stay upper bounds. */
    check_treecover(&g, 0.2, 2, 0, &o);
    ck_assert_uint_gt(o.stats.pieces_dropped, 0);
    ck_assert(isinf(o.factor));
    td_oracle_free(&o);
    td_graph_free(&g);
    disconnected(&g);
    check_treecover(&g, 0.3, 8, 0, &o);
    td_oracle_free(&o);
    td_graph_free(&g);
    geometric(200, &g);
    check_treecover(&g, 0.25, 16, 3000, &o);
    td_oracle_free(&o);
    td_graph_free(&g);
}
END_TEST

/* Empty, single-vertex and edgeless graphs build, answer and round-trip
 * in both modes. */
START_TEST(test_tiny_graphs)
{
    char dir[] = "/tmp/td_oracle_XXXXXX", path[128];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    for (uint32_t n = 0; n < 4; n++)
        for (int mode = 0; mode < 2; mode++) {
            td_edgelist el;
            td_graph g;
            td_oracle o, l;
            td_oracle_params p;
            td_error err;
            double d;
            td_edgelist_init(&el);
            el.n = n;
            if (n == 3)
                td_edgelist_push(&el, 0, 1, 2, &err); /* vertex 2 isolated */
            build(&el, &g);
            td_oracle_params_default(&p);
            p.mode = (td_oracle_mode)mode;
            ck_assert_msg(td_oracle_build(&g, &p, &o, &err) == TD_OK, "%s",
                          err.msg);
            ck_assert_msg(td_oracle_save(&o, path, &err) == TD_OK, "%s",
                          err.msg);
            ck_assert_msg(td_oracle_load(path, &l, &err) == TD_OK, "%s",
                          err.msg);
            ck_assert_int_eq(td_oracle_query(&l, 0, 0, &d, NULL, &err),
                             n ? TD_OK : TD_EINVAL);
            if (n)
                ck_assert(d == 0);
            if (n == 3) {
                ck_assert_int_eq(td_oracle_query(&l, 0, 1, &d, NULL, &err),
                                 TD_OK);
                ck_assert(d == 2);
                ck_assert_int_eq(td_oracle_query(&l, 0, 2, &d, NULL, &err),
                                 TD_OK);
                ck_assert(isinf(d));
            }
            td_oracle_free(&l);
            td_oracle_free(&o);
            td_graph_free(&g);
        }
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_rome99_stretch)
{
    char dirbuf[512], path[600];
    td_edgelist el;
    td_graph g;
    td_oracle o;
    td_error err;
    snprintf(path, sizeof path, "%s/rome99.gr",
             roads_dir(dirbuf, sizeof dirbuf));
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "# SKIP rome99: %s not found (set TD_ROADS_DIR)\n",
                path);
        return;
    }
    ck_assert_int_eq(td_graph_read_file(path, NULL, &el, &err), TD_OK);
    build(&el, &g);
    rng_state = 99;
    build_oracle(&g, 0.1, &o);
    double worst = check_oracle(&o, &g, 3000);
    ck_assert(worst <= 1.1 + 1e-12);
    td_oracle_free(&o);
    td_graph_free(&g);
}
END_TEST

static Suite *oracle_suite(void)
{
    Suite *s = suite_create("oracle");
    TCase *tc = tcase_create("oracle");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_cop_invariants);
    tcase_add_test(tc, test_balanced_is_shallower_than_agg);
    tcase_add_test(tc, test_labels_guarantee_on_small_graphs);
    tcase_add_test(tc, test_labels_disconnected_and_bad_ids);
    tcase_add_test(tc, test_zero_weights_and_reals);
    tcase_add_test(tc, test_progress_and_cancel);
    tcase_add_test(tc, test_save_load_roundtrip_and_corruption);
    tcase_add_test(tc, test_rome99_stretch);
    tcase_add_test(tc, test_treecover_bounds);
    tcase_add_test(tc, test_tiny_graphs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(oracle_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
