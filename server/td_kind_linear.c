/* td_kind_linear: logits = x·Wᵀ + b through one sgemm. */
#include "config.h"

#include "td_kind_linear.h"

#include <cblas.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "td_labels.h"

typedef struct linear_model {
    td_io_pair io; /* first: the td_io_pair accessors */
    float *weight;  /* (C,F); one allocation holds weight then bias */
    float *bias;    /* (C) */
    int classes;    /* C */
    int features;   /* F */
    td_labels labels;
} linear_model;

static td_status linear_load(const td_st_file *f, const char *path,
                             void **impl, td_error *err)
{
    const td_st_tensor *w, *b;
    int64_t bias_shape[1];
    linear_model *m;
    td_status st;
    (void)path;
    st = td_st_expect(f, "weight", TD_DT_F32, -1, NULL, &w, err);
    if (st != TD_OK)
        return st;
    if (w->ndim != 2 || w->shape[0] < 1 || w->shape[1] < 1 ||
        w->shape[0] > 1000000 || w->shape[1] > 100000000)
        return td_error_set(err, TD_EFORMAT,
                            "tensor \"weight\": expected F32 [classes, "
                            "features] with both at least 1");
    bias_shape[0] = w->shape[0];
    st = td_st_expect(f, "bias", TD_DT_F32, 1, bias_shape, &b, err);
    if (st != TD_OK)
        return st;
    m = calloc(1, sizeof *m);
    if (!m)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    m->classes = (int)w->shape[0];
    m->features = (int)w->shape[1];
    /* Copy: file data may be unaligned, and one slab keeps the model
     * independent of the mapping's layout. */
    m->weight = malloc(w->nbytes + b->nbytes);
    if (!m->weight) {
        free(m);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    memcpy(m->weight, w->data, w->nbytes);
    m->bias = m->weight + (size_t)m->classes * (size_t)m->features;
    memcpy(m->bias, b->data, b->nbytes);
    st = td_labels_parse(&m->labels, td_st_meta_get(f, "labels"), m->classes,
                         err);
    if (st != TD_OK) {
        free(m->weight);
        free(m);
        return st;
    }
    m->io.in = (td_tensor_spec){"input", TD_DT_F32, 2, {-1, m->features}};
    m->io.out = (td_tensor_spec){"logits", TD_DT_F32, 2, {-1, m->classes}};
    *impl = m;
    return TD_OK;
}

static void linear_unload(void *impl)
{
    linear_model *m = impl;
    if (!m)
        return;
    td_labels_free(&m->labels);
    free(m->weight);
    free(m);
}

static json_t *linear_describe(const void *impl)
{
    const linear_model *m = impl;
    return json_pack("{s:i, s:i}", "classes", m->classes, "features",
                     m->features);
}

static const char *const *linear_labels(const void *impl, int *n)
{
    const linear_model *m = impl;
    *n = m->labels.n;
    return (const char *const *)m->labels.names;
}

/* in: (N,F) row-major; out: (N,C) */
static td_status linear_infer(const void *impl, const td_tensor *inputs,
                              const td_infer_params *params,
                              td_tensor *outputs, td_arena *scratch,
                              td_error *err)
{
    const linear_model *m = impl;
    const float *x = inputs[0].data;
    int n = (int)inputs[0].shape[0], i, c;
    float *y = td_logits_alloc(&outputs[0], n, m->classes, err);
    (void)scratch;
    (void)params;
    if (!y)
        return err->status;
    if (n > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m->classes,
                    m->features, 1.0f, x, m->features, m->weight,
                    m->features, 0.0f, y, m->classes);
    for (i = 0; i < n; i++)
        for (c = 0; c < m->classes; c++)
            y[(size_t)i * (size_t)m->classes + (size_t)c] += m->bias[c];
    return TD_OK;
}

const td_servable_kind td_kind_linear = {
    .kind = "linear",
    .platform = "tinyd_linear",
    .load = linear_load,
    .unload = linear_unload,
    .inputs = td_io_pair_inputs,
    .outputs = td_io_pair_outputs,
    .describe = linear_describe,
    .labels = linear_labels,
    .infer = linear_infer,
};
