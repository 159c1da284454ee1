/* td_kind_bnn: the BNN engine behind the servable interface. */
#include "config.h"

#include "td_kind_bnn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "td_bnn_model.h"

typedef struct bnn_servable {
    td_io_pair io; /* first: the td_io_pair accessors */
    td_bnn_model *m;
} bnn_servable;

static td_status bnn_load(const td_st_file *f, const char *path, void **impl,
                          td_error *err)
{
    bnn_servable *s = calloc(1, sizeof *s);
    td_status st;
    (void)path;
    if (!s)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    st = td_bnn_load(&s->m, f, err);
    if (st != TD_OK) {
        free(s);
        return st;
    }
    s->io.in = (td_tensor_spec){"input", TD_DT_F32, 4,
                                  {-1, s->m->arch.in_ch, s->m->arch.in_h,
                                   s->m->arch.in_w}};
    s->io.out =
        (td_tensor_spec){"logits", TD_DT_F32, 2, {-1, s->m->arch.classes}};
    *impl = s;
    return TD_OK;
}

static void bnn_unload(void *impl)
{
    bnn_servable *s = impl;
    if (!s)
        return;
    td_bnn_free(s->m);
    free(s);
}

static json_t *bnn_describe(const void *impl)
{
    const td_bnn_model *m = ((const bnn_servable *)impl)->m;
    char *arch = td_bnn_arch_json(&m->arch);
    json_t *mean = json_array(), *std = json_array();
    json_t *o;
    for (int c = 0; c < m->arch.in_ch; c++) {
        json_array_append_new(mean, json_real(m->mean[c]));
        json_array_append_new(std, json_real(m->std[c]));
    }
    o = json_pack("{s:b,s:b,s:o,s:o,s:o,s:o}", "binary", 1, "mst", 1,
                  "arch", arch ? json_loads(arch, 0, NULL) : json_null(),
                  "stats", td_bnn_stats_json(m), "mean", mean, "std", std);
    free(arch);
    /* which executor runs the MST plans (docs/BNN.md), and why not the
     * bit-sliced one when it does not */
    if (o && m->slice_ok) {
        /* per block, bit-sliced (true) or XOR-popcount, for a request of
         * one image and for a full pass of slice_chunk images */
        json_t *one = json_array(), *full = json_array();
        for (int i = 0; i < m->arch.n_blocks; i++) {
            json_array_append_new(
                one, json_boolean(td_bnn_block_sliced(m, i, 1, TD_BNN_AUTO)));
            json_array_append_new(
                full, json_boolean(td_bnn_block_sliced(m, i, m->slice_chunk,
                                                       TD_BNN_AUTO)));
        }
        json_object_set_new(o, "executor", json_string("auto"));
        json_object_set_new(o, "sliced_blocks",
                            json_pack("{s:o,s:o,s:i}", "batch_1", one,
                                      "batch_full", full, "full_batch",
                                      m->slice_chunk));
    } else if (o) {
        json_object_set_new(o, "executor", json_string("xor-popcount"));
        json_object_set_new(o, "executor_note", json_string(m->slice_note));
    }
    return o;
}

static const char *const *bnn_labels(const void *impl, int *n)
{
    const td_bnn_model *m = ((const bnn_servable *)impl)->m;
    *n = m->labels ? m->arch.classes : 0;
    return (const char *const *)m->labels;
}

static void bnn_transform(const void *impl, td_image_transform *tf)
{
    const td_bnn_model *m = ((const bnn_servable *)impl)->m;
    memset(tf, 0, sizeof *tf);
    tf->out_h = m->arch.in_h;
    tf->out_w = m->arch.in_w;
    tf->crop_pct = 1.0; /* small images: resize, no border crop */
    tf->interp = TD_INTERP_BILINEAR;
    tf->grayscale = m->arch.in_ch == 1;
    for (int c = 0; c < 3; c++) {
        int src = m->arch.in_ch == 1 ? 0 : (c < m->arch.in_ch ? c : 0);
        tf->mean[c] = m->mean[src];
        tf->std[c] = m->std[src];
    }
}

static size_t bnn_scratch(const void *impl, const td_infer_params *params,
                          int64_t rows)
{
    (void)params;
    (void)rows; /* images run slice_chunk at a time: bounded by the model */
    return td_bnn_scratch_bytes(((const bnn_servable *)impl)->m);
}

/* in: (N, in_ch, H, W) NCHW normalised; out: logits (N, classes) */
static td_status bnn_infer(const void *impl, const td_tensor *inputs,
                           const td_infer_params *params, td_tensor *outputs,
                           td_arena *scratch, td_error *err)
{
    const td_bnn_model *m = ((const bnn_servable *)impl)->m;
    int rows = (int)inputs[0].shape[0];
    float *logits = td_logits_alloc(&outputs[0], rows, m->arch.classes, err);
    td_status st;
    (void)params;
    if (!logits)
        return err->status;
    st = rows > 0 ? td_bnn_forward(m, TD_BCONV_PLAN | TD_BNN_AUTO, scratch, inputs[0].data, rows,
                                   logits, err)
                  : TD_OK;
    if (st != TD_OK) {
        free(logits);
        outputs[0].data = NULL;
        return st;
    }
    return TD_OK;
}

const td_servable_kind td_kind_bnn = {
    .kind = "bnn",
    .platform = "tinyd_bnn",
    .load = bnn_load,
    .unload = bnn_unload,
    .inputs = td_io_pair_inputs,
    .outputs = td_io_pair_outputs,
    .describe = bnn_describe,
    .labels = bnn_labels,
    .infer = bnn_infer,
    .image_transform = bnn_transform,
    .scratch_bytes = bnn_scratch,
};
