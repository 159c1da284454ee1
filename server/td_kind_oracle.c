/* td_kind_oracle: (1+eps) and exact distance queries over OIP. */
#include "config.h"

#include "td_kind_oracle.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "td_oracle.h"

typedef struct oracle_model {
    td_oracle oracle;
    int64_t id_base;
    td_tensor_spec in_specs[2];
    td_tensor_spec out_specs[2];
} oracle_model;

static td_status oracle_load(const td_st_file *f, const char *path,
                             void **impl, td_error *err)
{
    oracle_model *m = calloc(1, sizeof *m);
    td_status st;
    (void)f; /* validated by the registry; the oracle maps it itself */
    if (!m)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    /* The oracle maps the file itself; the registry's mapping of the same
     * file shares its pages. */
    st = td_oracle_load(path, &m->oracle, err);
    if (st != TD_OK) {
        free(m);
        return st;
    }
    m->id_base = m->oracle.id_base;
    m->in_specs[0] = (td_tensor_spec){"source", TD_DT_I64, 1, {-1}};
    m->in_specs[1] = (td_tensor_spec){"target", TD_DT_I64, 1, {-1}};
    m->out_specs[0] = (td_tensor_spec){"distance", TD_DT_F64, 1, {-1}};
    m->out_specs[1] = (td_tensor_spec){"factor", TD_DT_F64, 1, {-1}};
    *impl = m;
    return TD_OK;
}

static void oracle_unload(void *impl)
{
    oracle_model *m = impl;
    if (!m)
        return;
    td_oracle_free(&m->oracle);
    free(m);
}

static int oracle_inputs(const void *impl, const td_tensor_spec **specs)
{
    *specs = ((const oracle_model *)impl)->in_specs;
    return 2;
}

static int oracle_outputs(const void *impl, const td_tensor_spec **specs)
{
    *specs = ((const oracle_model *)impl)->out_specs;
    return 2;
}

static json_t *oracle_describe(const void *impl)
{
    const oracle_model *m = impl;
    const td_oracle *o = &m->oracle;
    json_t *obj = json_pack(
        "{s:s, s:f, s:I, s:I, s:I, s:I, s:f}", "mode",
        td_oracle_mode_name(o->mode), "eps", o->eps, "nodes",
        (json_int_t)o->g.n, "edges", (json_int_t)td_graph_edges(&o->g),
        "id_base", (json_int_t)m->id_base, "bytes",
        (json_int_t)td_oracle_bytes(o), "build_seconds",
        o->stats.build_seconds);
    /* JSON has no infinity: an unbounded factor is reported as null. */
    if (obj)
        json_object_set_new(obj, "factor", isfinite(o->factor)
                                               ? json_real(o->factor)
                                               : json_null());
    return obj;
}

/* in: source (N), target (N) int64; out: distance (N), factor (N) */
static td_status oracle_infer(const void *impl, const td_tensor *inputs,
                              const td_infer_params *params,
                              td_tensor *outputs, td_arena *scratch,
                              td_error *err)
{
    const oracle_model *m = impl;
    const td_oracle *o = &m->oracle;
    const int64_t *src = inputs[0].data, *dst = inputs[1].data;
    int64_t n = inputs[0].shape[0], i;
    double *dist, *factor;
    td_dijkstra_ws ws;
    td_status st = TD_OK;
    (void)scratch;
    if (inputs[1].shape[0] != n)
        return td_error_set(err, TD_EINVAL,
                            "\"source\" has %lld ids but \"target\" has "
                            "%lld",
                            (long long)n, (long long)inputs[1].shape[0]);
    dist = malloc(((size_t)n + 1) * sizeof *dist);
    factor = malloc(((size_t)n + 1) * sizeof *factor);
    if (!dist || !factor) {
        free(dist);
        free(factor);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    if (params->exact) {
        st = td_dijkstra_ws_init(&ws, o->g.n, err);
        if (st != TD_OK) {
            free(dist);
            free(factor);
            return st;
        }
    }
    for (i = 0; i < n && st == TD_OK; i++) {
        int64_t u = src[i] - m->id_base, v = dst[i] - m->id_base;
        if (u < 0 || u >= (int64_t)o->g.n || v < 0 || v >= (int64_t)o->g.n) {
            st = td_error_set(err, TD_EINVAL,
                              "pair %lld: %s id %lld is not a vertex (ids "
                              "run from %lld to %lld)",
                              (long long)i,
                              (u < 0 || u >= (int64_t)o->g.n) ? "source"
                                                              : "target",
                              (long long)((u < 0 || u >= (int64_t)o->g.n)
                                              ? src[i]
                                              : dst[i]),
                              (long long)m->id_base,
                              (long long)(m->id_base + o->g.n - 1));
            break;
        }
        if (params->exact) {
            st = td_oracle_query_exact(o, &ws, (uint32_t)u, (uint32_t)v,
                                       &dist[i], err);
            factor[i] = 1.0;
        } else {
            st = td_oracle_query(o, (uint32_t)u, (uint32_t)v, &dist[i],
                                 &factor[i], err);
        }
    }
    if (params->exact)
        td_dijkstra_ws_free(&ws);
    if (st != TD_OK) {
        free(dist);
        free(factor);
        return st;
    }
    snprintf(outputs[0].name, sizeof outputs[0].name, "distance");
    outputs[0].dtype = TD_DT_F64;
    outputs[0].ndim = 1;
    outputs[0].shape[0] = n;
    outputs[0].data = dist;
    outputs[0].nbytes = (size_t)n * sizeof *dist;
    snprintf(outputs[1].name, sizeof outputs[1].name, "factor");
    outputs[1].dtype = TD_DT_F64;
    outputs[1].ndim = 1;
    outputs[1].shape[0] = n;
    outputs[1].data = factor;
    outputs[1].nbytes = (size_t)n * sizeof *factor;
    return TD_OK;
}

const td_servable_kind td_kind_oracle = {
    .kind = "oracle",
    .platform = "tinyd_oracle",
    .load = oracle_load,
    .unload = oracle_unload,
    .inputs = oracle_inputs,
    .outputs = oracle_outputs,
    .describe = oracle_describe,
    .labels = NULL,
    .infer = oracle_infer,
    .scratch_bytes = NULL, /* exact queries allocate their workspace */
};
