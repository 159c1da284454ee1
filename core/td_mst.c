/* td_mst: see td_mst.h. */
#include "config.h"

#include "td_mst.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "td_bitpack.h"

#define MST_MAX_COUT 4096

int64_t td_mst_hamming(const uint64_t *a, const uint64_t *b, int kw)
{
    int64_t s = 0;
    for (int i = 0; i < kw; i++)
        s += __builtin_popcountll(a[i] ^ b[i]);
    return s;
}

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

td_status td_mst_plan_alloc(td_mst_plan *p, int cout, int kw, int32_t n_diff,
                            td_error *err)
{
    size_t o_order, o_parent, o_ptr, o_idx, o_mask, total;
    unsigned char *m;
    memset(p, 0, sizeof *p);
    if (cout < 1 || cout > MST_MAX_COUT || kw < 1 || n_diff < 0)
        return td_error_set(err, TD_EINVAL,
                            "mst plan: bad sizes cout=%d kw=%d n_diff=%d",
                            cout, kw, (int)n_diff);
    o_mask = 0;
    o_order = align8(o_mask + (size_t)n_diff * sizeof(uint64_t));
    o_parent = align8(o_order + (size_t)cout * sizeof(int32_t));
    o_ptr = align8(o_parent + (size_t)cout * sizeof(int32_t));
    o_idx = align8(o_ptr + ((size_t)cout + 1) * sizeof(int32_t));
    total = align8(o_idx + (size_t)n_diff * sizeof(int32_t));
    m = calloc(1, total ? total : 1);
    if (!m)
        return td_error_set(err, TD_ENOMEM, "mst plan: out of memory");
    p->mem = m;
    p->cout = cout;
    p->kw = kw;
    p->n_diff = n_diff;
    p->diff_mask = (uint64_t *)(void *)(m + o_mask);
    p->order = (int32_t *)(void *)(m + o_order);
    p->parent = (int32_t *)(void *)(m + o_parent);
    p->diff_ptr = (int32_t *)(void *)(m + o_ptr);
    p->diff_idx = (int32_t *)(void *)(m + o_idx);
    return TD_OK;
}

void td_mst_plan_free(td_mst_plan *p)
{
    if (!p)
        return;
    free(p->mem);
    memset(p, 0, sizeof *p);
}

/* Prim from `root` with the (d, depth, index) key. Fills par and dep;
 * returns the height, or stops early (returning INT_MAX) once the height
 * reaches `give_up`, since that root cannot win. */
static int prim_from(const int32_t *dist, int c, int root, int give_up,
                     int32_t *par, int32_t *dep, int32_t *kd, int32_t *kdep,
                     unsigned char *in)
{
    int height = 0;
    memset(in, 0, (size_t)c);
    in[root] = 1;
    par[root] = -1;
    dep[root] = 0;
    for (int u = 0; u < c; u++) {
        kd[u] = dist[(size_t)root * (size_t)c + (size_t)u];
        kdep[u] = 1;
        par[u] = u == root ? -1 : root;
    }
    for (int step = 1; step < c; step++) {
        int best = -1;
        for (int u = 0; u < c; u++) {
            if (in[u])
                continue;
            if (best < 0 || kd[u] < kd[best] ||
                (kd[u] == kd[best] && kdep[u] < kdep[best]))
                best = u; /* ties on both keep the lower index */
        }
        in[best] = 1;
        dep[best] = kdep[best];
        if (dep[best] > height)
            height = dep[best];
        if (height >= give_up)
            return INT_MAX;
        const int32_t *row = dist + (size_t)best * (size_t)c;
        for (int v = 0; v < c; v++) {
            if (in[v])
                continue;
            if (row[v] < kd[v] ||
                (row[v] == kd[v] && dep[best] + 1 < kdep[v])) {
                kd[v] = row[v];
                kdep[v] = dep[best] + 1;
                par[v] = best;
            }
        }
    }
    return height;
}

/* BFS order from the root with children by ascending index; returns the
 * number of vertices reached (cout when par is a tree). */
static int bfs_order(const int32_t *par, int c, int root, int32_t *order)
{
    int head = 0, tail = 0;
    order[tail++] = root;
    while (head < tail) {
        int u = order[head++];
        for (int v = 0; v < c; v++)
            if (par[v] == u && v != root)
                order[tail++] = v;
        if (tail > c)
            return -1;
    }
    return tail;
}

td_status td_mst_build(const uint64_t *rows, int c, int kw, td_mst_plan *plan,
                       td_error *err)
{
    int32_t *dist = NULL, *par, *dep, *kd, *kdep, *bestpar;
    unsigned char *in;
    int best_root = 0, best_h = INT_MAX;
    int32_t n_diff = 0;
    td_status st;
    memset(plan, 0, sizeof *plan);
    if (c < 1 || c > MST_MAX_COUT || kw < 1)
        return td_error_set(err, TD_EINVAL, "mst: bad sizes cout=%d kw=%d",
                            c, kw);
    dist = malloc(((size_t)c * (size_t)c + 5 * (size_t)c) * sizeof *dist +
                  (size_t)c);
    if (!dist)
        return td_error_set(err, TD_ENOMEM, "mst: out of memory");
    par = dist + (size_t)c * (size_t)c;
    dep = par + c;
    kd = dep + c;
    kdep = kd + c;
    bestpar = kdep + c;
    in = (unsigned char *)(bestpar + c);
    for (int i = 0; i < c; i++) {
        dist[(size_t)i * (size_t)c + (size_t)i] = 0;
        for (int j = i + 1; j < c; j++) {
            int32_t d = (int32_t)td_mst_hamming(rows + (size_t)i * (size_t)kw,
                                                rows + (size_t)j * (size_t)kw,
                                                kw);
            dist[(size_t)i * (size_t)c + (size_t)j] = d;
            dist[(size_t)j * (size_t)c + (size_t)i] = d;
        }
    }
    bestpar[0] = -1;
    for (int r = 0; r < c; r++) {
        int h = prim_from(dist, c, r, best_h, par, dep, kd, kdep, in);
        if (h < best_h) {
            best_h = h;
            best_root = r;
            memcpy(bestpar, par, (size_t)c * sizeof *par);
        }
    }
    if (c == 1)
        best_h = 0;
    for (int j = 0; j < c; j++) {
        if (bestpar[j] < 0)
            continue;
        for (int w = 0; w < kw; w++)
            n_diff += rows[(size_t)j * (size_t)kw + (size_t)w] !=
                      rows[(size_t)bestpar[j] * (size_t)kw + (size_t)w];
    }
    st = td_mst_plan_alloc(plan, c, kw, n_diff, err);
    if (st != TD_OK) {
        free(dist);
        return st;
    }
    plan->root = best_root;
    plan->depth = best_h;
    memcpy(plan->parent, bestpar, (size_t)c * sizeof *bestpar);
    bfs_order(plan->parent, c, best_root, plan->order);
    n_diff = 0;
    for (int j = 0; j < c; j++) {
        int p = plan->parent[j];
        plan->diff_ptr[j] = n_diff;
        if (p < 0)
            continue;
        plan->distance += dist[(size_t)j * (size_t)c + (size_t)p];
        for (int w = 0; w < kw; w++) {
            uint64_t m = rows[(size_t)j * (size_t)kw + (size_t)w] ^
                         rows[(size_t)p * (size_t)kw + (size_t)w];
            if (m) {
                plan->diff_idx[n_diff] = w;
                plan->diff_mask[n_diff] = m;
                n_diff++;
            }
        }
    }
    plan->diff_ptr[c] = n_diff;
    free(dist);
    return TD_OK;
}

td_status td_mst_build_tree(const uint64_t *rows, int c, int kw,
                            const int32_t *parent, td_mst_plan *plan,
                            td_error *err)
{
    int root = -1, reached;
    int32_t n_diff = 0, *dep;
    td_status st;
    memset(plan, 0, sizeof *plan);
    if (c < 1 || c > MST_MAX_COUT || kw < 1)
        return td_error_set(err, TD_EINVAL, "mst: bad sizes cout=%d kw=%d",
                            c, kw);
    for (int j = 0; j < c; j++) {
        if (parent[j] < -1 || parent[j] >= c || parent[j] == j)
            return td_error_set(err, TD_EINVAL,
                                "mst: channel %d's parent %d is out of range",
                                j, parent[j]);
        if (parent[j] < 0) {
            if (root >= 0)
                return td_error_set(err, TD_EINVAL,
                                    "mst: two roots (%d and %d)", root, j);
            root = j;
        } else {
            for (int w = 0; w < kw; w++)
                n_diff += rows[(size_t)j * (size_t)kw + (size_t)w] !=
                          rows[(size_t)parent[j] * (size_t)kw + (size_t)w];
        }
    }
    if (root < 0)
        return td_error_set(err, TD_EINVAL, "mst: no root");
    st = td_mst_plan_alloc(plan, c, kw, n_diff, err);
    if (st != TD_OK)
        return st;
    memcpy(plan->parent, parent, (size_t)c * sizeof *parent);
    reached = bfs_order(plan->parent, c, root, plan->order);
    dep = malloc((size_t)c * sizeof *dep);
    if (reached != c || !dep) {
        free(dep);
        td_mst_plan_free(plan);
        if (reached != c)
            return td_error_set(err, TD_EINVAL,
                                "mst: the parents are not a tree (a cycle "
                                "leaves %d channels unreached)",
                                c - (reached > 0 ? reached : 0));
        return td_error_set(err, TD_ENOMEM, "mst: out of memory");
    }
    plan->root = root;
    dep[root] = 0;
    for (int i = 1; i < c; i++) {
        int v = plan->order[i];
        dep[v] = dep[plan->parent[v]] + 1;
        if (dep[v] > plan->depth)
            plan->depth = dep[v];
    }
    free(dep);
    n_diff = 0;
    for (int j = 0; j < c; j++) {
        int p = plan->parent[j];
        plan->diff_ptr[j] = n_diff;
        if (p < 0)
            continue;
        plan->distance += td_mst_hamming(rows + (size_t)j * (size_t)kw,
                                         rows + (size_t)p * (size_t)kw, kw);
        for (int w = 0; w < kw; w++) {
            uint64_t m = rows[(size_t)j * (size_t)kw + (size_t)w] ^
                         rows[(size_t)p * (size_t)kw + (size_t)w];
            if (m) {
                plan->diff_idx[n_diff] = w;
                plan->diff_mask[n_diff] = m;
                n_diff++;
            }
        }
    }
    plan->diff_ptr[c] = n_diff;
    return TD_OK;
}

td_status td_mst_validate(const td_mst_plan *p, const uint64_t *rows,
                          const char *what, td_error *err)
{
    int c = p->cout, kw = p->kw, root = -1, height = 0;
    int32_t *pos, *dep;
    int64_t distance = 0;
    td_status st = TD_OK;
    pos = malloc(2 * (size_t)c * sizeof *pos);
    if (!pos)
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", what);
    dep = pos + c;
    for (int i = 0; i < c; i++)
        pos[i] = -1;
    for (int i = 0; i < c; i++) {
        int v = p->order[i];
        if (v < 0 || v >= c) {
            st = td_error_set(err, TD_EFORMAT,
                              "tensor %s.order: entry %d names channel %d, "
                              "out of range [0,%d)", what, i, v, c);
            goto out;
        }
        if (pos[v] >= 0) {
            st = td_error_set(err, TD_EFORMAT,
                              "tensor %s.order: channel %d appears twice",
                              what, v);
            goto out;
        }
        pos[v] = i;
    }
    for (int v = 0; v < c; v++) {
        int q = p->parent[v];
        if (q == -1) {
            if (root >= 0) {
                st = td_error_set(err, TD_EFORMAT,
                                  "tensor %s.parent: two roots (%d and %d)",
                                  what, root, v);
                goto out;
            }
            root = v;
            continue;
        }
        if (q < 0 || q >= c || q == v) {
            st = td_error_set(err, TD_EFORMAT,
                              "tensor %s.parent: channel %d has parent %d, "
                              "out of range [0,%d) or itself", what, v, q, c);
            goto out;
        }
    }
    if (root < 0 || p->order[0] != root) {
        st = td_error_set(err, TD_EFORMAT,
                          "tensor %s.parent: %s", what,
                          root < 0 ? "no root (a parent cycle)"
                                   : "the root is not first in the order");
        goto out;
    }
    /* Parents before children along the order: with a single root this
     * rules out every cycle. */
    for (int i = 0; i < c; i++) {
        int v = p->order[i], q = p->parent[v];
        if (q < 0) {
            dep[v] = 0;
            continue;
        }
        if (pos[q] >= i) {
            st = td_error_set(err, TD_EFORMAT,
                              "tensor %s.parent: channel %d's parent %d does "
                              "not precede it in the order (a parent cycle "
                              "or a bad order)", what, v, q);
            goto out;
        }
        dep[v] = dep[q] + 1;
        if (dep[v] > height)
            height = dep[v];
        distance += td_mst_hamming(rows + (size_t)v * (size_t)kw,
                                   rows + (size_t)q * (size_t)kw, kw);
    }
    if (height != p->depth) {
        st = td_error_set(err, TD_EFORMAT,
                          "%s: depth %d does not match the plan's tree "
                          "height %d", what, p->depth, height);
        goto out;
    }
    if (p->distance >= 0 && distance != p->distance) {
        st = td_error_set(err, TD_EFORMAT,
                          "%s: distance %lld does not match the plan's %lld",
                          what, (long long)p->distance, (long long)distance);
        goto out;
    }
    if (p->diff_ptr[0] != 0 || p->diff_ptr[c] != p->n_diff) {
        st = td_error_set(err, TD_EFORMAT,
                          "tensor %s.diff_ptr: must run from 0 to %d", what,
                          (int)p->n_diff);
        goto out;
    }
    for (int v = 0; v < c; v++) {
        int32_t e = p->diff_ptr[v], end = p->diff_ptr[v + 1];
        int q = p->parent[v];
        if (end < e || end > p->n_diff) {
            st = td_error_set(err, TD_EFORMAT,
                              "tensor %s.diff_ptr: not ascending at %d",
                              what, v);
            goto out;
        }
        for (int w = 0; w < kw; w++) {
            uint64_t m = q < 0 ? 0
                               : rows[(size_t)v * (size_t)kw + (size_t)w] ^
                                     rows[(size_t)q * (size_t)kw + (size_t)w];
            if (!m)
                continue;
            if (e >= end || p->diff_idx[e] != w || p->diff_mask[e] != m) {
                st = td_error_set(err, TD_EFORMAT,
                                  "tensor %s.diff_idx/diff_mask: channel %d "
                                  "word %d does not match the weights' XOR "
                                  "with parent %d", what, v, w, q);
                goto out;
            }
            e++;
        }
        if (e != end) {
            st = td_error_set(err, TD_EFORMAT,
                              "tensor %s.diff_idx: channel %d has %d entries "
                              "beyond its differing words", what, v,
                              (int)(end - e));
            goto out;
        }
    }
out:
    free(pos);
    return st;
}

static int ceil_log2(int64_t k)
{
    int b = 0;
    while (((int64_t)1 << b) < k)
        b++;
    return b ? b : 1;
}

void td_mst_layer_stats(const td_mst_plan *p, int64_t k_bits, td_mst_stats *s)
{
    int lg = ceil_log2(k_bits);
    memset(s, 0, sizeof *s);
    s->cout = p->cout;
    s->k_bits = k_bits;
    s->depth = p->depth;
    s->distance = p->distance;
    s->bitops_dense = (int64_t)p->cout * k_bits;
    s->bitops_mst = k_bits + p->distance;
    s->bits_dense = s->bitops_dense;
    s->bits_mst = k_bits;
    s->mask_words = p->n_diff;
    for (int v = 0; v < p->cout; v++) {
        int q = p->parent[v];
        int64_t d = 0;
        if (q < 0)
            continue;
        for (int32_t e = p->diff_ptr[v]; e < p->diff_ptr[v + 1]; e++)
            d += __builtin_popcountll(p->diff_mask[e]);
        s->bits_mst += d * lg < k_bits ? d * lg : k_bits;
    }
    s->compression = (double)s->bits_dense / (double)s->bits_mst;
    s->bitops_ratio = (double)s->bitops_dense / (double)s->bitops_mst;
}

void td_mst_stats_add(td_mst_stats *t, const td_mst_stats *l, int64_t pixels)
{
    t->cout += l->cout;
    t->k_bits += l->k_bits;
    if (l->depth > t->depth)
        t->depth = l->depth;
    t->distance += l->distance;
    t->bitops_dense += l->bitops_dense * pixels;
    t->bitops_mst += l->bitops_mst * pixels;
    t->bits_dense += l->bits_dense;
    t->bits_mst += l->bits_mst;
    t->mask_words += l->mask_words;
    t->compression = t->bits_mst ? (double)t->bits_dense / (double)t->bits_mst
                                 : 0;
    t->bitops_ratio =
        t->bitops_mst ? (double)t->bitops_dense / (double)t->bitops_mst : 0;
}
