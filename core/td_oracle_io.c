/* td_oracle_io: an oracle as one safetensors file (declared in td_oracle.h).
 *
 * Tensors (names are the format; shapes in brackets):
 *   graph.off U64 [n+1]   graph.adj U32 [arcs]   graph.w F64 [arcs]
 *   cop.sn_of U32 [n]     cop.sn_parent U32 [n_sn]
 *   cop.br_sn U32 [n_br]  cop.br_off U64 [n_br+1]
 *   labels mode: labels.pv_branch U32 [n_pv]  labels.pv_pos F64 [n_pv]
 *                labels.off U64 [n+1]  labels.pv U32 [E]  labels.dist F32 [E]
 * Metadata: kind=oracle, format=tinyd-oracle-1, mode, eps, factor, n, edges
 * and the build statistics (stat.*). Loading checks every index against
 * its array so a corrupt or hostile file cannot make a query read out of
 * bounds. */
#include "config.h"

#include "td_oracle.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "td_safetensors.h"

#define FORMAT_TAG "tinyd-oracle-1"

static td_status add1(td_st_writer *w, const char *name, td_dtype dt,
                      uint64_t len, const void *data, td_error *err)
{
    int64_t shape[1] = {(int64_t)len};
    static const uint64_t dummy = 0;
    return td_st_writer_add(w, name, dt, 1, shape, data ? data : &dummy, err);
}

static td_status meta_num(td_st_writer *w, const char *key, double v,
                          td_error *err)
{
    char buf[64];
    if (isinf(v))
        snprintf(buf, sizeof buf, "inf");
    else
        snprintf(buf, sizeof buf, "%.17g", v);
    return td_st_writer_meta(w, key, buf, err);
}

td_status td_oracle_save(const td_oracle *o, const char *path, td_error *err)
{
    td_st_writer *w = td_st_writer_new();
    td_status st = TD_OK;
    uint32_t n = o->g.n;
    if (!w)
        return td_error_set(err, TD_ENOMEM, "saving oracle: out of memory");
#define TRY(x)                                                                \
    do {                                                                      \
        if (st == TD_OK)                                                      \
            st = (x);                                                         \
    } while (0)
    TRY(add1(w, "graph.off", TD_DT_U64, (uint64_t)n + 1, o->g.off, err));
    TRY(add1(w, "graph.adj", TD_DT_U32, o->g.n_arcs, o->g.adj, err));
    TRY(add1(w, "graph.w", TD_DT_F64, o->g.n_arcs, o->g.w, err));
    if (o->mode == TD_ORACLE_LABELS) {
        TRY(add1(w, "cop.sn_of", TD_DT_U32, n, o->sn_of, err));
        TRY(add1(w, "cop.sn_parent", TD_DT_U32, o->n_sn, o->sn_parent, err));
        TRY(add1(w, "cop.br_sn", TD_DT_U32, o->n_br, o->br_sn, err));
        TRY(add1(w, "cop.br_off", TD_DT_U64, (uint64_t)o->n_br + 1,
                 o->br_off, err));
        TRY(add1(w, "labels.pv_branch", TD_DT_U32, o->n_pv, o->pv_branch,
                 err));
        TRY(add1(w, "labels.pv_pos", TD_DT_F64, o->n_pv, o->pv_pos, err));
        TRY(add1(w, "labels.off", TD_DT_U64, (uint64_t)n + 1, o->lab_off,
                 err));
        TRY(add1(w, "labels.pv", TD_DT_U32, o->stats.label_entries,
                 o->lab_pv, err));
        TRY(add1(w, "labels.dist", TD_DT_F32, o->stats.label_entries,
                 o->lab_dist, err));
    } else {
        uint32_t T = o->n_trees;
        TRY(add1(w, "tc.piece", TD_DT_U32, (uint64_t)T * n, o->tc_piece,
                 err));
        TRY(add1(w, "tc.first", TD_DT_U32, (uint64_t)T * n, o->tc_first,
                 err));
        TRY(add1(w, "tc.euler_off", TD_DT_U64, (uint64_t)T + 1,
                 o->tc_euler_off, err));
        TRY(add1(w, "tc.euler", TD_DT_U32, o->tc_euler_off[T], o->tc_euler,
                 err));
        TRY(add1(w, "tc.pdep_off", TD_DT_U64, (uint64_t)T + 1,
                 o->tc_pdep_off, err));
        TRY(add1(w, "tc.pdep", TD_DT_F64, o->tc_pdep_off[T], o->tc_pdep,
                 err));
        TRY(add1(w, "tc.sparse_off", TD_DT_U64, (uint64_t)T + 1,
                 o->tc_sparse_off, err));
        TRY(add1(w, "tc.sparse", TD_DT_U32, o->tc_sparse_off[T],
                 o->tc_sparse, err));
        TRY(meta_num(w, "stat.scales", o->stats.scales, err));
        TRY(meta_num(w, "stat.pieces", (double)o->stats.pieces, err));
        TRY(meta_num(w, "stat.pieces_dropped",
                     (double)o->stats.pieces_dropped, err));
        TRY(meta_num(w, "stat.max_tau_over_L", o->stats.max_tau_over_L,
                     err));
        TRY(meta_num(w, "stat.max_cluster_hops", o->stats.max_cluster_hops,
                     err));
    }
    TRY(td_st_writer_meta(w, "kind", "oracle", err));
    TRY(td_st_writer_meta(w, "format", FORMAT_TAG, err));
    TRY(td_st_writer_meta(w, "mode", td_oracle_mode_name(o->mode), err));
    TRY(meta_num(w, "eps", o->eps, err));
    TRY(meta_num(w, "id_base", (double)o->id_base, err));
    TRY(meta_num(w, "factor", o->factor, err));
    TRY(meta_num(w, "n", n, err));
    TRY(meta_num(w, "edges", (double)td_graph_edges(&o->g), err));
    TRY(meta_num(w, "bytes", (double)td_oracle_bytes(o), err));
    TRY(meta_num(w, "stat.build_seconds", o->stats.build_seconds, err));
    TRY(meta_num(w, "stat.supernodes", o->stats.supernodes, err));
    TRY(meta_num(w, "stat.branches", o->stats.branches, err));
    TRY(meta_num(w, "stat.max_depth", o->stats.max_depth, err));
    TRY(meta_num(w, "stat.max_ancestors", o->stats.max_ancestors, err));
    TRY(meta_num(w, "stat.mean_depth", o->stats.mean_depth, err));
    TRY(meta_num(w, "stat.label_entries", (double)o->stats.label_entries,
                 err));
    TRY(meta_num(w, "stat.max_label", o->stats.max_label, err));
    TRY(meta_num(w, "stat.dijkstra_settled",
                 (double)o->stats.dijkstra_settled, err));
    TRY(td_st_writer_write(w, path, err));
#undef TRY
    td_st_writer_free(w);
    if (st != TD_OK)
        td_error_prefix(err, "saving oracle %s", path);
    return st;
}

static void close_st(void *f)
{
    td_st_close(f);
    free(f);
}

/* A tensor's data, in place when aligned for its element type, otherwise
 * copied into a block owned by o. */
static const void *tensor_data(td_oracle *o, const td_st_tensor *t,
                               size_t align, td_status *st, td_error *err)
{
    if (*st != TD_OK)
        return NULL;
    if (t->nbytes == 0 || (uintptr_t)t->data % align == 0)
        return t->data;
    void *copy = malloc(t->nbytes);
    if (!copy) {
        *st = td_error_set(err, TD_ENOMEM, "tensor %s: out of memory",
                           t->name);
        return NULL;
    }
    memcpy(copy, t->data, t->nbytes);
    *st = td_oracle_keep(o, copy, err);
    return *st == TD_OK ? copy : NULL;
}

static td_status get1(td_oracle *o, const td_st_file *f, const char *name,
                      td_dtype dt, int64_t len, const void **out,
                      td_error *err)
{
    const td_st_tensor *t;
    td_status st;
    if (len < 0) { /* length not known yet: any 1-d shape */
        st = td_st_expect(f, name, dt, -1, NULL, &t, err);
        if (st == TD_OK && t->ndim != 1)
            st = td_error_set(err, TD_EFORMAT, "tensor %s: expected 1 "
                              "dimension", name);
    } else {
        st = td_st_expect(f, name, dt, 1, &len, &t, err);
    }
    if (st != TD_OK)
        return st;
    *out = tensor_data(o, t, td_dtype_size(dt), &st, err);
    return st;
}

static int64_t len_of(const td_st_file *f, const char *name)
{
    const td_st_tensor *t = td_st_find(f, name);
    return t && t->ndim == 1 ? t->shape[0] : -1;
}

static td_status parse_meta_num(const td_st_file *f, const char *key,
                                double *v, td_error *err)
{
    const char *s = td_st_meta_get(f, key);
    char *end;
    if (!s)
        return td_error_set(err, TD_EFORMAT, "missing metadata \"%s\"", key);
    *v = strtod(s, &end);
    if (end == s || *end)
        return td_error_set(err, TD_EFORMAT, "metadata \"%s\": \"%s\" is not "
                            "a number", key, s);
    return TD_OK;
}

static td_status check_labels(td_oracle *o, td_error *err)
{
    uint32_t n = o->g.n;
    if (o->br_off[0] != 0 || o->br_off[o->n_br] != o->n_pv)
        return td_error_set(err, TD_EFORMAT, "cop.br_off does not span "
                            "labels.pv_branch");
    for (uint32_t b = 0; b < o->n_br; b++) {
        if (o->br_off[b + 1] < o->br_off[b] || o->br_off[b + 1] > o->n_pv)
            return td_error_set(err, TD_EFORMAT, "cop.br_off[%u] is not "
                                "monotone", (unsigned)b + 1);
        if (o->br_sn[b] >= o->n_sn)
            return td_error_set(err, TD_EFORMAT, "cop.br_sn[%u] out of "
                                "range", (unsigned)b);
        for (uint64_t i = o->br_off[b]; i < o->br_off[b + 1]; i++)
            if (o->pv_branch[i] != b || !isfinite(o->pv_pos[i]))
                return td_error_set(err, TD_EFORMAT, "labels.pv_branch or "
                                    "pv_pos inconsistent at %llu",
                                    (unsigned long long)i);
    }
    for (uint32_t v = 0; v < n; v++)
        if (o->sn_of[v] >= o->n_sn)
            return td_error_set(err, TD_EFORMAT, "cop.sn_of[%u] out of range",
                                (unsigned)v);
    for (uint32_t s = 0; s < o->n_sn; s++)
        if (o->sn_parent[s] != TD_NONE && o->sn_parent[s] >= s)
            return td_error_set(err, TD_EFORMAT, "cop.sn_parent[%u] is not "
                                "an earlier supernode", (unsigned)s);
    uint64_t E = o->stats.label_entries;
    if (o->lab_off[0] != 0 || o->lab_off[n] != E)
        return td_error_set(err, TD_EFORMAT, "labels.off does not span the "
                            "%llu entries", (unsigned long long)E);
    for (uint32_t v = 0; v < n; v++) {
        if (o->lab_off[v + 1] < o->lab_off[v] || o->lab_off[v + 1] > E)
            return td_error_set(err, TD_EFORMAT, "labels.off[%u] is not "
                                "monotone", (unsigned)v + 1);
        for (uint64_t i = o->lab_off[v]; i < o->lab_off[v + 1]; i++) {
            if (o->lab_pv[i] >= o->n_pv ||
                (i > o->lab_off[v] && o->lab_pv[i] < o->lab_pv[i - 1]))
                return td_error_set(err, TD_EFORMAT, "labels.pv[%llu] out "
                                    "of range or unsorted",
                                    (unsigned long long)i);
            if (!(o->lab_dist[i] >= 0) || isinf(o->lab_dist[i]))
                return td_error_set(err, TD_EFORMAT, "labels.dist[%llu] is "
                                    "not a finite distance",
                                    (unsigned long long)i);
        }
        if (o->lab_off[v + 1] - o->lab_off[v] > o->stats.max_label)
            o->stats.max_label = (uint32_t)(o->lab_off[v + 1] -
                                            o->lab_off[v]);
    }
    return TD_OK;
}

static td_status load_treecover(td_oracle *o, const td_st_file *f,
                                td_error *err)
{
    const void *p;
    td_status st = TD_OK;
    int64_t n1 = len_of(f, "graph.off"), arcs = len_of(f, "graph.adj");
    int64_t T1 = len_of(f, "tc.euler_off");
    if (n1 < 1 || n1 - 1 > (int64_t)TD_GRAPH_MAX_NODES || arcs < 0 ||
        T1 < 1 || T1 - 1 >= (int64_t)TD_NONE)
        return td_error_set(err, TD_EFORMAT, "missing or malformed tensor "
                            "among graph.off, graph.adj, tc.euler_off");
    uint32_t n = (uint32_t)(n1 - 1), T = (uint32_t)(T1 - 1);
    o->g.n = n;
    o->g.n_arcs = (uint64_t)arcs;
    o->n_trees = T;
    if ((uint64_t)T * n > (uint64_t)INT64_MAX / 8)
        return td_error_set(err, TD_EFORMAT, "tc.piece: too large");
#define GET(name, dt, len, field)                                             \
    do {                                                                      \
        if (st == TD_OK) {                                                    \
            st = get1(o, f, name, dt, len, &p, err);                          \
            field = p;                                                        \
        }                                                                     \
    } while (0)
    GET("graph.off", TD_DT_U64, n1, o->g.off);
    GET("graph.adj", TD_DT_U32, arcs, o->g.adj);
    GET("graph.w", TD_DT_F64, arcs, o->g.w);
    GET("tc.piece", TD_DT_U32, (int64_t)T * n, o->tc_piece);
    GET("tc.first", TD_DT_U32, (int64_t)T * n, o->tc_first);
    GET("tc.euler_off", TD_DT_U64, T1, o->tc_euler_off);
    GET("tc.pdep_off", TD_DT_U64, T1, o->tc_pdep_off);
    GET("tc.sparse_off", TD_DT_U64, T1, o->tc_sparse_off);
    GET("tc.euler", TD_DT_U32, len_of(f, "tc.euler"), o->tc_euler);
    GET("tc.pdep", TD_DT_F64, len_of(f, "tc.pdep"), o->tc_pdep);
    GET("tc.sparse", TD_DT_U32, len_of(f, "tc.sparse"), o->tc_sparse);
#undef GET
    if (st != TD_OK)
        return st;
    if ((st = td_graph_validate(&o->g, err)) != TD_OK)
        return st;
    uint64_t EL = (uint64_t)len_of(f, "tc.euler");
    uint64_t PL = (uint64_t)len_of(f, "tc.pdep");
    uint64_t SL = (uint64_t)len_of(f, "tc.sparse");
    if (o->tc_euler_off[0] || o->tc_pdep_off[0] || o->tc_sparse_off[0] ||
        o->tc_euler_off[T] != EL || o->tc_pdep_off[T] != PL ||
        o->tc_sparse_off[T] != SL)
        return td_error_set(err, TD_EFORMAT, "tc offsets do not span their "
                            "arrays");
    for (uint32_t t = 0; t < T; t++) {
        uint64_t e0 = o->tc_euler_off[t], e1 = o->tc_euler_off[t + 1];
        uint64_t p0 = o->tc_pdep_off[t], p1 = o->tc_pdep_off[t + 1];
        uint64_t s0 = o->tc_sparse_off[t], s1 = o->tc_sparse_off[t + 1];
        if (e1 < e0 || e1 > EL || p1 < p0 || p1 > PL || s1 < s0 || s1 > SL)
            return td_error_set(err, TD_EFORMAT, "tree %u: offsets not "
                                "monotone", (unsigned)t);
        uint64_t nb = (e1 - e0 + 31) / 32, levels = 0;
        for (uint64_t w = 1; nb && w <= nb; w *= 2)
            levels++;
        if (s1 - s0 != nb * levels)
            return td_error_set(err, TD_EFORMAT, "tree %u: sparse table has "
                                "%llu entries, expected %llu", (unsigned)t,
                                (unsigned long long)(s1 - s0),
                                (unsigned long long)(nb * levels));
        for (uint64_t i = e0; i < e1; i++)
            if (o->tc_euler[i] >= p1 - p0)
                return td_error_set(err, TD_EFORMAT, "tc.euler[%llu] out of "
                                    "range", (unsigned long long)i);
        for (uint64_t i = s0; i < s1; i++)
            if (o->tc_sparse[i] >= p1 - p0)
                return td_error_set(err, TD_EFORMAT, "tc.sparse[%llu] out "
                                    "of range", (unsigned long long)i);
        for (uint64_t i = p0; i < p1; i++)
            if (!(o->tc_pdep[i] >= 0) || isinf(o->tc_pdep[i]))
                return td_error_set(err, TD_EFORMAT, "tc.pdep[%llu] is not a "
                                    "finite distance", (unsigned long long)i);
        for (uint32_t v = 0; v < n; v++) {
            size_t k = (size_t)t * n + v;
            if ((o->tc_piece[k] == TD_NONE) != (o->tc_first[k] == TD_NONE) ||
                (o->tc_first[k] != TD_NONE && o->tc_first[k] >= e1 - e0))
                return td_error_set(err, TD_EFORMAT, "tc.first of tree %u "
                                    "vertex %u out of range", (unsigned)t,
                                    (unsigned)v);
        }
    }
    double num;
    if (parse_meta_num(f, "stat.scales", &num, NULL) == TD_OK)
        o->stats.scales = (uint32_t)num;
    if (parse_meta_num(f, "stat.pieces", &num, NULL) == TD_OK)
        o->stats.pieces = (uint64_t)num;
    if (parse_meta_num(f, "stat.pieces_dropped", &num, NULL) == TD_OK)
        o->stats.pieces_dropped = (uint64_t)num;
    o->stats.trees = T;
    return TD_OK;
}

td_status td_oracle_load(const char *path, td_oracle *o, td_error *err)
{
    td_st_file *f = calloc(1, sizeof *f);
    td_status st;
    const void *p;
    double num;
    memset(o, 0, sizeof *o);
    if (!f)
        return td_error_set(err, TD_ENOMEM, "loading %s: out of memory",
                            path);
    if ((st = td_st_open(f, path, err)) != TD_OK) {
        free(f);
        return st;
    }
    o->file = f;
    o->close_file = close_st;
    const char *kind = td_st_meta_get(f, "kind");
    const char *fmt = td_st_meta_get(f, "format");
    const char *mode = td_st_meta_get(f, "mode");
    if (!kind || strcmp(kind, "oracle") != 0) {
        st = td_error_set(err, TD_EFORMAT, "metadata kind is %s%s%s, not "
                          "\"oracle\"", kind ? "\"" : "",
                          kind ? kind : "missing", kind ? "\"" : "");
        goto fail;
    }
    if (!fmt || strcmp(fmt, FORMAT_TAG) != 0) {
        st = td_error_set(err, TD_EUNSUPPORTED, "metadata format is not "
                          "\"%s\"", FORMAT_TAG);
        goto fail;
    }
    int m = mode ? td_oracle_mode_parse(mode) : -1;
    if (m < 0) {
        st = td_error_set(err, TD_EUNSUPPORTED, "metadata mode \"%s\" is "
                          "unknown", mode ? mode : "");
        goto fail;
    }
    o->mode = TD_ORACLE_LABELS;
    {
        /* Optional: files written before it existed number from 0. */
        const char *base = td_st_meta_get(f, "id_base");
        o->id_base = base && strtod(base, NULL) == 1.0 ? 1 : 0;
    }
    o->mode = (td_oracle_mode)m;
    if ((st = parse_meta_num(f, "eps", &o->eps, err)) != TD_OK)
        goto fail;
    if (!(o->eps > 0 && o->eps <= 1)) {
        st = td_error_set(err, TD_EFORMAT, "metadata eps %g out of (0,1]",
                          o->eps);
        goto fail;
    }
    if (o->mode == TD_ORACLE_LABELS) {
        o->factor = 1 + o->eps;
    } else {
        if ((st = parse_meta_num(f, "factor", &o->factor, err)) != TD_OK)
            goto fail;
        if (!(o->factor >= 1)) {
            st = td_error_set(err, TD_EFORMAT, "metadata factor %g below 1",
                              o->factor);
            goto fail;
        }
        st = load_treecover(o, f, err);
        goto finish;
    }
    int64_t n1 = len_of(f, "graph.off"), arcs = len_of(f, "graph.adj");
    int64_t n_sn = len_of(f, "cop.sn_parent"), n_br = len_of(f, "cop.br_sn");
    int64_t n_pv = len_of(f, "labels.pv_pos"), E = len_of(f, "labels.pv");
    if (n1 < 1 || n1 - 1 > (int64_t)TD_GRAPH_MAX_NODES || arcs < 0 ||
        n_sn < 0 || n_sn >= (int64_t)TD_NONE || n_br < 0 ||
        n_br >= (int64_t)TD_NONE || n_pv < 0 || E < 0) {
        st = td_error_set(err, TD_EFORMAT, "missing or malformed tensor "
                          "among graph.off, graph.adj, cop.sn_parent, "
                          "cop.br_sn, labels.pv_pos, labels.pv");
        goto fail;
    }
    o->g.n = (uint32_t)(n1 - 1);
    o->g.n_arcs = (uint64_t)arcs;
    o->n_sn = (uint32_t)n_sn;
    o->n_br = (uint32_t)n_br;
    o->n_pv = (uint64_t)n_pv;
    o->stats.label_entries = (uint64_t)E;
#define GET(name, dt, len, field)                                             \
    do {                                                                      \
        if (st == TD_OK) {                                                    \
            st = get1(o, f, name, dt, len, &p, err);                          \
            field = p;                                                        \
        }                                                                     \
    } while (0)
    GET("graph.off", TD_DT_U64, n1, o->g.off);
    GET("graph.adj", TD_DT_U32, arcs, o->g.adj);
    GET("graph.w", TD_DT_F64, arcs, o->g.w);
    GET("cop.sn_of", TD_DT_U32, n1 - 1, o->sn_of);
    GET("cop.sn_parent", TD_DT_U32, n_sn, o->sn_parent);
    GET("cop.br_sn", TD_DT_U32, n_br, o->br_sn);
    GET("cop.br_off", TD_DT_U64, n_br + 1, o->br_off);
    GET("labels.pv_branch", TD_DT_U32, n_pv, o->pv_branch);
    GET("labels.pv_pos", TD_DT_F64, n_pv, o->pv_pos);
    GET("labels.off", TD_DT_U64, n1, o->lab_off);
    GET("labels.pv", TD_DT_U32, E, o->lab_pv);
    GET("labels.dist", TD_DT_F32, E, o->lab_dist);
#undef GET
    if (st != TD_OK)
        goto fail;
    if ((st = td_graph_validate(&o->g, err)) != TD_OK)
        goto fail;
    if ((st = check_labels(o, err)) != TD_OK)
        goto fail;
finish:
    if (st != TD_OK)
        goto fail;
    /* Statistics are informative; absent ones stay 0. */
    if (parse_meta_num(f, "stat.build_seconds", &num, NULL) == TD_OK)
        o->stats.build_seconds = num;
    if (parse_meta_num(f, "stat.mean_depth", &num, NULL) == TD_OK)
        o->stats.mean_depth = num;
    if (parse_meta_num(f, "stat.max_depth", &num, NULL) == TD_OK)
        o->stats.max_depth = (uint32_t)num;
    if (parse_meta_num(f, "stat.max_ancestors", &num, NULL) == TD_OK)
        o->stats.max_ancestors = (uint32_t)num;
    o->stats.supernodes = o->n_sn;
    o->stats.branches = o->n_br;
    return TD_OK;
fail:
    td_error_prefix(err, "loading oracle %s", path);
    td_oracle_free(o);
    return st;
}
