/* td_kind_tinynet: the TinyNet engine behind the servable interface. */
#include "config.h"

#include "td_kind_tinynet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "td_tinynet.h"

typedef struct tinynet_model {
    td_io_pair io; /* first: the td_io_pair accessors */
    td_tinynet *net;
    td_tn_counts counts;
} tinynet_model;

static td_status tinynet_load(const td_st_file *f, const char *path,
                              void **impl, td_error *err)
{
    tinynet_model *m = calloc(1, sizeof *m);
    int r;
    td_status st;
    if (!m)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    st = td_tinynet_from_st(&m->net, f, path, NULL, err);
    if (st != TD_OK) {
        free(m);
        return st;
    }
    r = m->net->arch.resolution;
    td_tn_arch_count(&m->net->arch, r, r, &m->counts);
    m->io.in = (td_tensor_spec){"input", TD_DT_F32, 4, {-1, 3, r, r}};
    m->io.out =
        (td_tensor_spec){"logits", TD_DT_F32, 2, {-1, m->net->arch.classes}};
    *impl = m;
    return TD_OK;
}

static void tinynet_unload(void *impl)
{
    tinynet_model *m = impl;
    if (!m)
        return;
    td_tinynet_free(m->net);
    free(m);
}

static json_t *tinynet_describe(const void *impl)
{
    const tinynet_model *m = impl;
    const td_tinynet *n = m->net;
    return json_pack("{s:f, s:f, s:f, s:i, s:i, s:I, s:I, s:[f,f,f], "
                     "s:[f,f,f], s:s, s:f}",
                     "r", n->arch.r, "d", n->arch.d, "w", n->arch.w,
                     "resolution", n->arch.resolution, "classes",
                     n->arch.classes, "params", (json_int_t)m->counts.params,
                     "macs", (json_int_t)m->counts.macs, "mean",
                     (double)n->mean[0], (double)n->mean[1],
                     (double)n->mean[2], "std", (double)n->std[0],
                     (double)n->std[1], (double)n->std[2], "interpolation",
                     n->interpolation, "crop_pct", (double)n->crop_pct);
}

static const char *const *tinynet_labels(const void *impl, int *n)
{
    const tinynet_model *m = impl;
    *n = m->net->labels ? m->net->arch.classes : 0;
    return (const char *const *)m->net->labels;
}

static void tinynet_transform(const void *impl, td_image_transform *tf)
{
    const td_tinynet *n = ((const tinynet_model *)impl)->net;
    memset(tf, 0, sizeof *tf);
    tf->out_h = tf->out_w = n->arch.resolution;
    tf->crop_pct = n->crop_pct > 0 ? n->crop_pct : 0.875;
    if (td_interp_parse(n->interpolation, &tf->interp, NULL) != TD_OK)
        tf->interp = TD_INTERP_BICUBIC;
    memcpy(tf->mean, n->mean, sizeof tf->mean);
    memcpy(tf->std, n->std, sizeof tf->std);
    tf->grayscale = 0;
}

static size_t tinynet_scratch(const void *impl, const td_infer_params *params,
                              int64_t rows)
{
    const td_tinynet *n = ((const tinynet_model *)impl)->net;
    (void)params;
    if (rows <= 0)
        return 0;
    return td_tinynet_scratch_bytes(n, (int)rows, n->arch.resolution,
                                    n->arch.resolution);
}

/* in: (N,3,R,R) NCHW normalised; out: logits (N,classes) */
static td_status tinynet_infer(const void *impl, const td_tensor *inputs,
                               const td_infer_params *params,
                               td_tensor *outputs, td_arena *scratch,
                               td_error *err)
{
    const td_tinynet *n = ((const tinynet_model *)impl)->net;
    int rows = (int)inputs[0].shape[0], r = n->arch.resolution;
    float *logits = td_logits_alloc(&outputs[0], rows, n->arch.classes, err);
    td_status st;
    (void)params;
    if (!logits)
        return err->status;
    st = rows > 0 ? td_tinynet_forward(n, scratch, inputs[0].data, rows, r, r,
                                       logits, err)
                  : TD_OK;
    if (st != TD_OK) {
        free(logits);
        outputs[0].data = NULL;
        return st;
    }
    return TD_OK;
}

const td_servable_kind td_kind_tinynet = {
    .kind = "tinynet",
    .platform = "tinyd_tinynet",
    .load = tinynet_load,
    .unload = tinynet_unload,
    .inputs = td_io_pair_inputs,
    .outputs = td_io_pair_outputs,
    .describe = tinynet_describe,
    .labels = tinynet_labels,
    .infer = tinynet_infer,
    .image_transform = tinynet_transform,
    .scratch_bytes = tinynet_scratch,
};
