/* td_bnn_model: see td_bnn_model.h. */
#include "config.h"

#include "td_bnn_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "td_bitpack.h"
#include "td_gemm.h"
#include "td_kernels.h"

/* ---------------------------------------------------------------- arch */

static int get_int(json_t *o, const char *key, int lo, int hi, int *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return 0;
    if (json_integer_value(v) < lo || json_integer_value(v) > hi)
        return 0;
    *out = (int)json_integer_value(v);
    return 1;
}

static td_status conv_spec(json_t *o, const char *where, int max_cout,
                           td_bnn_conv_spec *s, td_error *err)
{
    if (!json_is_object(o))
        return td_error_set(err, TD_EFORMAT, "arch: %s must be an object",
                            where);
    if (!get_int(o, "cout", 1, max_cout, &s->cout))
        return td_error_set(err, TD_EFORMAT,
                            "arch: %s.cout must be an integer in [1,%d]",
                            where, max_cout);
    if (!get_int(o, "k", 1, 7, &s->k))
        return td_error_set(err, TD_EFORMAT,
                            "arch: %s.k must be an integer in [1,7]", where);
    if (!get_int(o, "stride", 1, 4, &s->stride))
        return td_error_set(err, TD_EFORMAT,
                            "arch: %s.stride must be an integer in [1,4]",
                            where);
    if (!json_object_get(o, "pad"))
        s->pad = s->k / 2;
    else if (!get_int(o, "pad", 0, s->k - 1, &s->pad))
        return td_error_set(err, TD_EFORMAT,
                            "arch: %s.pad must be an integer in [0,%d]",
                            where, s->k - 1);
    return TD_OK;
}

td_status td_bnn_arch_parse(const char *text, td_bnn_arch *a, td_error *err)
{
    json_error_t je;
    json_t *o = json_loads(text ? text : "", 0, &je), *blocks;
    td_status st = TD_OK;
    int h, w;
    memset(a, 0, sizeof *a);
    if (!json_is_object(o)) {
        json_decref(o);
        return td_error_set(err, TD_EFORMAT,
                            "metadata \"arch\": not a JSON object");
    }
    if (!get_int(o, "in_ch", 1, TD_BNN_MAX_IN_CH, &a->in_ch) ||
        !get_int(o, "in_h", 1, 4096, &a->in_h) ||
        !get_int(o, "in_w", 1, 4096, &a->in_w) ||
        !get_int(o, "classes", 1, 100000, &a->classes)) {
        st = td_error_set(err, TD_EFORMAT,
                          "arch: in_ch (1..%d), in_h, in_w (1..4096) and "
                          "classes must be positive integers",
                          TD_BNN_MAX_IN_CH);
        goto out;
    }
    st = conv_spec(json_object_get(o, "stem"), "stem", 4096, &a->stem, err);
    if (st != TD_OK)
        goto out;
    blocks = json_object_get(o, "blocks");
    if (!json_is_array(blocks) || json_array_size(blocks) < 1 ||
        json_array_size(blocks) > TD_BNN_MAX_BLOCKS) {
        st = td_error_set(err, TD_EFORMAT,
                          "arch: blocks must be an array of 1..%d objects",
                          TD_BNN_MAX_BLOCKS);
        goto out;
    }
    a->n_blocks = (int)json_array_size(blocks);
    for (int i = 0; i < a->n_blocks; i++) {
        char where[32];
        snprintf(where, sizeof where, "blocks[%d]", i);
        st = conv_spec(json_array_get(blocks, (size_t)i), where, 4096,
                       &a->blocks[i], err);
        if (st != TD_OK)
            goto out;
    }
    h = td_bconv_out(a->in_h, a->stem.k, a->stem.stride, a->stem.pad);
    w = td_bconv_out(a->in_w, a->stem.k, a->stem.stride, a->stem.pad);
    for (int i = 0; i < a->n_blocks && h > 0 && w > 0; i++) {
        h = td_bconv_out(h, a->blocks[i].k, a->blocks[i].stride,
                         a->blocks[i].pad);
        w = td_bconv_out(w, a->blocks[i].k, a->blocks[i].stride,
                         a->blocks[i].pad);
    }
    if (h <= 0 || w <= 0)
        st = td_error_set(err, TD_EFORMAT,
                          "arch: the input shrinks to nothing before the "
                          "last block");
out:
    json_decref(o);
    return st;
}

static json_t *spec_json(const td_bnn_conv_spec *s)
{
    return json_pack("{s:i,s:i,s:i,s:i}", "cout", s->cout, "k", s->k,
                     "stride", s->stride, "pad", s->pad);
}

char *td_bnn_arch_json(const td_bnn_arch *a)
{
    json_t *bl = json_array(), *o;
    char *s;
    for (int i = 0; i < a->n_blocks; i++)
        json_array_append_new(bl, spec_json(&a->blocks[i]));
    o = json_pack("{s:i,s:i,s:i,s:o,s:o,s:i}", "in_ch", a->in_ch, "in_h",
                  a->in_h, "in_w", a->in_w, "stem", spec_json(&a->stem),
                  "blocks", bl, "classes", a->classes);
    if (!o)
        return NULL;
    s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

/* ---------------------------------------------------------------- layout */

/* Every tensor of a model: its name, dtype, shape and the model field
 * that points at its copy. One table drives load, save and build. */
typedef struct slot {
    char name[48];
    td_dtype dt;
    int ndim;
    int64_t shape[2 + 2]; /* up to 4 dims */
    void *field;          /* address of the pointer field to set */
    size_t bytes;
} slot;

#define MAX_SLOTS (3 + 10 * TD_BNN_MAX_BLOCKS + 2)

static void add_slot(slot *s, int *n, const char *name, td_dtype dt,
                     int ndim, const int64_t *shape, void *field)
{
    slot *t = &s[(*n)++];
    size_t numel = 1;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dt = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        numel *= (size_t)shape[i];
    }
    t->field = field;
    t->bytes = numel * td_dtype_size(dt);
}

/* Fill geometry (cin, sizes) and the slot table; n_diff per block. */
static int make_slots(td_bnn_model *m, const int32_t *n_diff, slot *s)
{
    const td_bnn_arch *a = &m->arch;
    int n = 0, h, w, cin;
    char nm[48];
    int64_t sh[4];
    m->stem_h = td_bconv_out(a->in_h, a->stem.k, a->stem.stride, a->stem.pad);
    m->stem_w = td_bconv_out(a->in_w, a->stem.k, a->stem.stride, a->stem.pad);
    sh[0] = a->stem.cout;
    sh[1] = a->in_ch;
    sh[2] = sh[3] = a->stem.k;
    add_slot(s, &n, "stem.weight", TD_DT_F32, 4, sh, &m->stem_wt);
    add_slot(s, &n, "stem.scale", TD_DT_F32, 1, sh, &m->stem_scale);
    add_slot(s, &n, "stem.bias", TD_DT_F32, 1, sh, &m->stem_bias);
    h = m->stem_h;
    w = m->stem_w;
    cin = a->stem.cout;
    for (int i = 0; i < a->n_blocks; i++) {
        td_bnn_block *b = &m->blocks[i];
        const td_bnn_conv_spec *c = &a->blocks[i];
        int kw = c->k * c->k * td_bp_words(cin);
        b->spec = *c;
        b->cin = cin;
        b->h_in = h;
        b->w_in = w;
        b->h_out = h = td_bconv_out(h, c->k, c->stride, c->pad);
        b->w_out = w = td_bconv_out(w, c->k, c->stride, c->pad);
        cin = c->cout;
#define BSLOT(suffix, dt, nd, fld)                                         \
    do {                                                                   \
        snprintf(nm, sizeof nm, "blocks.%d.%s", i, suffix);                \
        add_slot(s, &n, nm, dt, nd, sh, fld);                              \
    } while (0)
        sh[0] = c->cout;
        sh[1] = kw;
        BSLOT("weight", TD_DT_U64, 2, &b->w);
        BSLOT("scale", TD_DT_F32, 1, &b->scale);
        BSLOT("bias", TD_DT_F32, 1, &b->bias);
        BSLOT("thr", TD_DT_I32, 1, &b->thr);
        BSLOT("tsign", TD_DT_I8, 1, &b->tsign);
        BSLOT("mst.order", TD_DT_I32, 1, &b->plan.order);
        BSLOT("mst.parent", TD_DT_I32, 1, &b->plan.parent);
        sh[0] = c->cout + 1;
        BSLOT("mst.diff_ptr", TD_DT_I32, 1, &b->plan.diff_ptr);
        sh[0] = n_diff[i];
        BSLOT("mst.diff_idx", TD_DT_I32, 1, &b->plan.diff_idx);
        BSLOT("mst.diff_mask", TD_DT_U64, 1, &b->plan.diff_mask);
#undef BSLOT
        b->plan.cout = c->cout;
        b->plan.kw = kw;
        b->plan.n_diff = n_diff[i];
        b->plan.mem = NULL;
    }
    sh[0] = a->classes;
    sh[1] = cin;
    add_slot(s, &n, "fc.weight", TD_DT_F32, 2, sh, &m->fc_w);
    add_slot(s, &n, "fc.bias", TD_DT_F32, 1, sh, &m->fc_b);
    return n;
}

/* One allocation for every slot, 8-byte aligned each; fields set. */
static td_status alloc_slots(td_bnn_model *m, slot *s, int n, td_error *err)
{
    size_t total = 0, off = 0;
    unsigned char *mem;
    for (int i = 0; i < n; i++)
        total += (s[i].bytes + 63) & ~(size_t)63;
    mem = calloc(1, total ? total : 1);
    if (!mem)
        return td_error_set(err, TD_ENOMEM, "bnn: out of memory");
    m->mem = mem;
    for (int i = 0; i < n; i++) {
        void *p = mem + off;
        memcpy(s[i].field, &p, sizeof p);
        off += (s[i].bytes + 63) & ~(size_t)63;
    }
    return TD_OK;
}

static void *slot_ptr(const slot *s)
{
    void *p;
    memcpy(&p, s->field, sizeof p);
    return p;
}

void td_bnn_free(td_bnn_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->arch.n_blocks; i++) {
        td_bconv_release(&m->blocks[i].conv);
        td_bslice_release(&m->slice[i]);
    }
    td_bnn_stem_release(&m->stem);
    for (int i = 0; i <= TD_BNN_MAX_BLOCKS; i++)
        free(m->slice_lane[i]);
    if (m->labels)
        free(m->labels);
    free(m->stem_wt_t);
    free(m->mem);
    free(m);
}

/* ---------------------------------------------------------------- stats */

static void compute_stats(td_bnn_model *m)
{
    memset(&m->total, 0, sizeof m->total);
    for (int i = 0; i < m->arch.n_blocks; i++) {
        td_bnn_block *b = &m->blocks[i];
        td_mst_layer_stats(&b->plan,
                           (int64_t)b->cin * b->spec.k * b->spec.k,
                           &b->stats);
        td_mst_stats_add(&m->total, &b->stats,
                         (int64_t)b->h_out * b->w_out);
    }
}

static json_t *stats_obj(const td_mst_stats *s)
{
    return json_pack("{s:I,s:I,s:i,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:I}",
                     "cout", (json_int_t)s->cout, "k_bits",
                     (json_int_t)s->k_bits, "depth", s->depth,
                     "mst_distance", (json_int_t)s->distance,
                     "bitops_dense", (json_int_t)s->bitops_dense,
                     "bitops_mst", (json_int_t)s->bitops_mst, "bits_dense",
                     (json_int_t)s->bits_dense, "bits_mst",
                     (json_int_t)s->bits_mst, "compression", s->compression,
                     "bitops_ratio", s->bitops_ratio, "mask_words",
                     (json_int_t)s->mask_words);
}

json_t *td_bnn_stats_json(const td_bnn_model *m)
{
    json_t *layers = json_array(), *o;
    if (!layers)
        return NULL;
    for (int i = 0; i < m->arch.n_blocks; i++) {
        json_t *l = stats_obj(&m->blocks[i].stats);
        json_object_set_new(l, "pixels",
                            json_integer((json_int_t)m->blocks[i].h_out *
                                         m->blocks[i].w_out));
        json_array_append_new(layers, l);
    }
    o = json_pack("{s:o,s:o}", "layers", layers, "total",
                  stats_obj(&m->total));
    return o;
}

void td_bnn_stats_fprint(const td_bnn_model *m, FILE *out)
{
    fprintf(out, "%-6s %5s %6s %5s %9s %12s %12s %7s %10s %10s %6s\n",
            "layer", "Cout", "K", "depth", "mst_dist", "bitops_dense",
            "bitops_mst", "ratio", "bits_dense", "bits_mst", "compr");
    for (int i = 0; i < m->arch.n_blocks; i++) {
        const td_mst_stats *s = &m->blocks[i].stats;
        fprintf(out,
                "%-6d %5lld %6lld %5d %9lld %12lld %12lld %6.2fx %10lld "
                "%10lld %5.2fx\n",
                i, (long long)s->cout, (long long)s->k_bits, s->depth,
                (long long)s->distance, (long long)s->bitops_dense,
                (long long)s->bitops_mst, s->bitops_ratio,
                (long long)s->bits_dense, (long long)s->bits_mst,
                s->compression);
    }
    fprintf(out,
            "%-6s %5lld %6s %5d %9lld %12lld %12lld %6.2fx %10lld %10lld "
            "%5.2fx  (bit-ops per image)\n",
            "total", (long long)m->total.cout, "", m->total.depth,
            (long long)m->total.distance, (long long)m->total.bitops_dense,
            (long long)m->total.bitops_mst, m->total.bitops_ratio,
            (long long)m->total.bits_dense, (long long)m->total.bits_mst,
            m->total.compression);
}

/* ---------------------------------------------------------------- load */

static td_status prepare_blocks(td_bnn_model *m, td_error *err)
{
    const td_bnn_arch *a = &m->arch;
    size_t taps = (size_t)a->in_ch * (size_t)(a->stem.k * a->stem.k);
    m->stem_wt_t = malloc(taps * (size_t)a->stem.cout * sizeof(float));
    if (!m->stem_wt_t)
        return td_error_set(err, TD_ENOMEM, "bnn: out of memory");
    /* (C0, in_ch, k, k) -> (k, k, in_ch, C0): im2col's column order */
    for (int ci = 0; ci < a->in_ch; ci++)
        for (int t = 0; t < a->stem.k * a->stem.k; t++)
            for (int o = 0; o < a->stem.cout; o++)
                m->stem_wt_t[((size_t)t * (size_t)a->in_ch + (size_t)ci) *
                                 (size_t)a->stem.cout + (size_t)o] =
                    m->stem_wt[((size_t)o * (size_t)a->in_ch + (size_t)ci) *
                                   (size_t)(a->stem.k * a->stem.k) +
                               (size_t)t];
    {
        td_status st = td_bnn_stem_prepare(
            &m->stem, a->in_ch, a->in_h, a->in_w, a->stem.k, a->stem.stride,
            a->stem.pad, a->stem.cout, m->stem_wt_t, m->stem_scale,
            m->stem_bias, NULL, err);
        if (st != TD_OK)
            return st;
    }
    for (int i = 0; i < m->arch.n_blocks; i++) {
        td_bnn_block *b = &m->blocks[i];
        td_status st = td_bconv_prepare(&b->conv, b->cin, b->spec.cout,
                                        b->spec.k, b->spec.stride,
                                        b->spec.pad, b->w, &b->plan, err);
        if (st != TD_OK) {
            td_error_prefix(err, "blocks.%d", i);
            return st;
        }
    }
    return td_bnn_slice_rebuild(m, 1, err);
}

static void plan_executors(td_bnn_model *m);

/* Leave the model on the XOR-popcount kernels only: release the
 * bit-sliced blocks, lane tables and the stem's planar tables. */
static td_status slice_off(td_bnn_model *m, td_error *err)
{
    const td_bnn_arch *a = &m->arch;
    m->slice_ok = 0;
    for (int i = 0; i < TD_BNN_MAX_BLOCKS; i++)
        td_bslice_release(&m->slice[i]);
    for (int i = 0; i <= TD_BNN_MAX_BLOCKS; i++) {
        free(m->slice_lane[i]);
        m->slice_lane[i] = NULL;
    }
    td_bnn_stem_release(&m->stem);
    return td_bnn_stem_prepare(&m->stem, a->in_ch, a->in_h, a->in_w,
                               a->stem.k, a->stem.stride, a->stem.pad,
                               a->stem.cout, m->stem_wt_t, m->stem_scale,
                               m->stem_bias, NULL, err);
}

td_status td_bnn_slice_rebuild(td_bnn_model *m, int plan, td_error *err)
{
    int n = m->arch.n_blocks, k[TD_BNN_MAX_BLOCKS], st[TD_BNN_MAX_BLOCKS];
    int pad[TD_BNN_MAX_BLOCKS], min_lw = 8;
    td_bslice_layout lay[TD_BNN_MAX_BLOCKS + 1];
    td_error why;
    for (int i = 0; i < TD_BNN_MAX_BLOCKS; i++)
        td_bslice_release(&m->slice[i]);
    m->slice_ok = 0;
    m->slice_note[0] = 0;
    for (int i = 0; i < n; i++) {
        k[i] = m->arch.blocks[i].k;
        st[i] = m->arch.blocks[i].stride;
        pad[i] = m->arch.blocks[i].pad;
    }
    if (!td_bslice_layouts(n, k, st, pad, m->stem_h, m->stem_w, lay, &why)) {
        snprintf(m->slice_note, sizeof m->slice_note, "%s", why.msg);
        return slice_off(m, err);
    }
    for (int i = 0; i <= n; i++)
        if (lay[i].lw < min_lw)
            min_lw = lay[i].lw;
    /* enough images per pass to fill a 512-bit vector in the narrowest
     * layer */
    m->slice_chunk = 8 / min_lw;
    for (int i = 0; i <= n; i++) {
        m->slice_lay[i] = lay[i];
        free(m->slice_lane[i]);
        m->slice_lane[i] = malloc((size_t)lay[i].h * (size_t)lay[i].w *
                                  sizeof(int32_t));
        if (!m->slice_lane[i])
            return td_error_set(err, TD_ENOMEM, "bnn: out of memory");
        td_bslice_lane_table(&lay[i], m->slice_lane[i]);
    }
    {
        const td_bnn_arch *a = &m->arch;
        td_status s;
        td_bnn_stem_release(&m->stem);
        s = td_bnn_stem_prepare(&m->stem, a->in_ch, a->in_h, a->in_w,
                                a->stem.k, a->stem.stride, a->stem.pad,
                                a->stem.cout, m->stem_wt_t, m->stem_scale,
                                m->stem_bias, &lay[0], err);
        if (s != TD_OK)
            return s;
    }
    for (int i = 0; i < n; i++) {
        td_bnn_block *b = &m->blocks[i];
        int last = i + 1 == n;
        td_status s = td_bslice_prepare(&m->slice[i], &b->conv, &lay[i],
                                        &lay[i + 1], m->slice_chunk,
                                        plan ? &b->plan : NULL,
                                        last ? NULL : b->tsign,
                                        last ? NULL : b->thr, &why);
        if (s != TD_OK) {
            if (s == TD_ENOMEM) {
                slice_off(m, NULL);
                td_error_set(err, s, "blocks.%d: %s", i, why.msg);
                return s;
            }
            snprintf(m->slice_note, sizeof m->slice_note, "blocks.%d: %s", i,
                     why.msg);
            return slice_off(m, err);
        }
    }
    m->slice_ok = 1;
    /* scratch per worker grows with images per pass and stream size:
     * past a bound, the model serves through the XOR-popcount kernels */
    {
        size_t with = td_bnn_scratch_bytes(m), without;
        m->slice_ok = 0;
        without = td_bnn_scratch_bytes(m);
        if (with > without && with - without > TD_BNN_SLICE_MAX_SCRATCH) {
            snprintf(m->slice_note, sizeof m->slice_note,
                     "bit-sliced scratch would be %zu MiB per worker (max "
                     "%d)",
                     (with - without) >> 20, TD_BNN_SLICE_MAX_SCRATCH >> 20);
            return slice_off(m, err);
        }
        m->slice_ok = 1;
    }
    plan_executors(m);
    return TD_OK;
}

static td_status float_array(const td_st_file *f, const char *key, int n,
                             float *dst, int positive, td_error *err)
{
    const char *v = td_st_meta_get(f, key);
    json_t *a;
    td_status st = TD_OK;
    for (int i = 0; i < n; i++)
        dst[i] = positive ? 1.0f : 0.0f;
    if (!v)
        return TD_OK;
    a = json_loads(v, 0, NULL);
    if (!json_is_array(a) || (int)json_array_size(a) != n)
        st = td_error_set(err, TD_EFORMAT,
                          "metadata \"%s\": expected a JSON array of %d "
                          "numbers", key, n);
    for (int i = 0; st == TD_OK && i < n; i++) {
        json_t *x = json_array_get(a, (size_t)i);
        if (!json_is_number(x) ||
            (positive && !(json_number_value(x) > 0)))
            st = td_error_set(err, TD_EFORMAT,
                              "metadata \"%s\"[%d]: not a %snumber", key, i,
                              positive ? "positive " : "");
        else
            dst[i] = (float)json_number_value(x);
    }
    json_decref(a);
    return st;
}

static td_status set_labels(td_bnn_model *m, json_t *arr, td_error *err)
{
    size_t n = json_array_size(arr), bytes = n * sizeof(char *);
    char *p;
    if ((int)n != m->arch.classes)
        return td_error_set(err, TD_EFORMAT,
                            "metadata \"labels\": %zu entries for %d classes",
                            n, m->arch.classes);
    for (size_t i = 0; i < n; i++) {
        if (!json_is_string(json_array_get(arr, i)))
            return td_error_set(err, TD_EFORMAT,
                                "metadata \"labels\"[%zu]: not a string", i);
        bytes += strlen(json_string_value(json_array_get(arr, i))) + 1;
    }
    m->labels = malloc(bytes ? bytes : 1);
    if (!m->labels)
        return td_error_set(err, TD_ENOMEM, "out of memory for labels");
    p = (char *)(m->labels + n);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        size_t l = strlen(s) + 1;
        memcpy(p, s, l);
        m->labels[i] = p;
        p += l;
    }
    return TD_OK;
}

static td_status check_weights(const td_bnn_block *b, int i, td_error *err)
{
    int cw = td_bp_words(b->cin), taps = b->spec.k * b->spec.k;
    uint64_t pad_mask = b->cin % 64 ? ~((1ull << (b->cin % 64)) - 1) : 0;
    for (int o = 0; o < b->spec.cout; o++) {
        if (b->tsign[o] < -1 || b->tsign[o] > 1)
            return td_error_set(err, TD_EFORMAT,
                                "tensor blocks.%d.tsign: entry %d is %d, "
                                "not -1, 0 or 1", i, o, b->tsign[o]);
        for (int t = 0; pad_mask && t < taps; t++)
            if (b->w[((size_t)o * (size_t)taps + (size_t)t) * (size_t)cw +
                     (size_t)cw - 1] & pad_mask)
                return td_error_set(err, TD_EFORMAT,
                                    "tensor blocks.%d.weight: row %d has bits "
                                    "set past Cin=%d (padding must be zero)",
                                    i, o, b->cin);
    }
    return TD_OK;
}

td_status td_bnn_load(td_bnn_model **out, const td_st_file *f, td_error *err)
{
    td_bnn_model *m;
    slot *s = NULL;
    int ns;
    int32_t n_diff[TD_BNN_MAX_BLOCKS] = {0};
    json_t *stats = NULL, *labels = NULL;
    td_status st;
    *out = NULL;
    st = td_st_expect_meta(f, "kind", "bnn", err);
    if (st != TD_OK)
        return st;
    m = calloc(1, sizeof *m);
    s = calloc(MAX_SLOTS, sizeof *s);
    if (!m || !s) {
        free(m);
        free(s);
        return td_error_set(err, TD_ENOMEM, "bnn: out of memory");
    }
    st = td_bnn_arch_parse(td_st_meta_get(f, "arch"), &m->arch, err);
    if (st != TD_OK)
        goto fail;
    for (int i = 0; i < m->arch.n_blocks; i++) {
        char nm[48];
        const td_st_tensor *t;
        snprintf(nm, sizeof nm, "blocks.%d.mst.diff_idx", i);
        st = td_st_expect(f, nm, TD_DT_I32, -1, NULL, &t, err);
        if (st != TD_OK)
            goto fail;
        if (t->ndim != 1 || t->shape[0] > (int64_t)1 << 30) {
            st = td_error_set(err, TD_EFORMAT,
                              "tensor \"%s\": expected I32 [E] (one "
                              "dimension)", nm);
            goto fail;
        }
        n_diff[i] = (int32_t)t->shape[0];
    }
    ns = make_slots(m, n_diff, s);
    st = alloc_slots(m, s, ns, err);
    if (st != TD_OK)
        goto fail;
    for (int i = 0; i < ns; i++) {
        const td_st_tensor *t;
        st = td_st_expect(f, s[i].name, s[i].dt, s[i].ndim, s[i].shape, &t,
                          err);
        if (st != TD_OK)
            goto fail;
        memcpy(slot_ptr(&s[i]), t->data, s[i].bytes);
    }
    {
        const char *sv = td_st_meta_get(f, "bnn_stats");
        json_t *layers;
        stats = sv ? json_loads(sv, 0, NULL) : NULL;
        layers = json_object_get(stats, "layers");
        if (!json_is_array(layers) ||
            (int)json_array_size(layers) != m->arch.n_blocks) {
            st = td_error_set(err, TD_EFORMAT,
                              "metadata \"bnn_stats\": expected an object "
                              "with \"layers\", one per block (%d)",
                              m->arch.n_blocks);
            goto fail;
        }
        for (int i = 0; i < m->arch.n_blocks; i++) {
            json_t *l = json_array_get(layers, (size_t)i);
            json_t *dp = json_object_get(l, "depth"),
                   *di = json_object_get(l, "mst_distance");
            td_bnn_block *b = &m->blocks[i];
            char what[32];
            if (!json_is_integer(dp) || !json_is_integer(di)) {
                st = td_error_set(err, TD_EFORMAT,
                                  "metadata \"bnn_stats\": layers[%d] needs "
                                  "integer \"depth\" and \"mst_distance\"",
                                  i);
                goto fail;
            }
            b->plan.depth = (int)json_integer_value(dp);
            b->plan.distance = (int64_t)json_integer_value(di);
            b->plan.root = b->plan.order[0];
            snprintf(what, sizeof what, "blocks.%d.mst", i);
            st = check_weights(b, i, err);
            if (st == TD_OK)
                st = td_mst_validate(&b->plan, b->w, what, err);
            if (st != TD_OK)
                goto fail;
        }
    }
    {
        const char *lv = td_st_meta_get(f, "labels");
        if (lv) {
            labels = json_loads(lv, 0, NULL);
            if (!json_is_array(labels)) {
                st = td_error_set(err, TD_EFORMAT,
                                  "metadata \"labels\": not a JSON array");
                goto fail;
            }
            st = set_labels(m, labels, err);
            if (st != TD_OK)
                goto fail;
        }
    }
    st = float_array(f, "mean", m->arch.in_ch, m->mean, 0, err);
    if (st == TD_OK)
        st = float_array(f, "std", m->arch.in_ch, m->std, 1, err);
    if (st == TD_OK)
        st = prepare_blocks(m, err);
    if (st != TD_OK)
        goto fail;
    compute_stats(m);
    json_decref(stats);
    json_decref(labels);
    free(s);
    *out = m;
    return TD_OK;
fail:
    json_decref(stats);
    json_decref(labels);
    free(s);
    td_bnn_free(m);
    return st;
}

td_status td_bnn_open(td_bnn_model **out, const char *path, td_error *err)
{
    td_st_file f;
    td_status st = td_st_open(&f, path, err);
    if (st != TD_OK)
        return st;
    st = td_bnn_load(out, &f, err);
    td_st_close(&f);
    if (st != TD_OK)
        td_error_prefix(err, "%s", path);
    return st;
}

/* ---------------------------------------------------------------- save */

static json_t *float_json(const float *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

static td_status meta_json(td_st_writer *w, const char *key, json_t *v,
                           td_error *err)
{
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    td_status st;
    json_decref(v);
    if (!s)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    st = td_st_writer_meta(w, key, s, err);
    free(s);
    return st;
}

td_status td_bnn_save(const td_bnn_model *cm, const char *path,
                      td_error *err)
{
    td_bnn_model tmp = *cm; /* make_slots fills geometry into its target */
    slot *s = calloc(MAX_SLOTS, sizeof *s);
    td_st_writer *w = td_st_writer_new();
    int32_t n_diff[TD_BNN_MAX_BLOCKS] = {0};
    char *arch = td_bnn_arch_json(&cm->arch);
    td_status st = TD_OK;
    int ns;
    if (!s || !w || !arch) {
        st = td_error_set(err, TD_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < cm->arch.n_blocks; i++)
        n_diff[i] = cm->blocks[i].plan.n_diff;
    ns = make_slots(&tmp, n_diff, s);
    /* make_slots points the fields of tmp; the data is cm's own */
    for (int i = 0; i < ns && st == TD_OK; i++) {
        size_t off = (size_t)((char *)s[i].field - (char *)&tmp);
        void *p;
        memcpy(&p, (const char *)cm + off, sizeof p);
        st = td_st_writer_add(w, s[i].name, s[i].dt, s[i].ndim, s[i].shape,
                              p, err);
    }
    if (st == TD_OK)
        st = td_st_writer_meta(w, "kind", "bnn", err);
    if (st == TD_OK)
        st = td_st_writer_meta(w, "arch", arch, err);
    if (st == TD_OK)
        st = meta_json(w, "bnn_stats", td_bnn_stats_json(cm), err);
    if (st == TD_OK)
        st = meta_json(w, "mean", float_json(cm->mean, cm->arch.in_ch), err);
    if (st == TD_OK)
        st = meta_json(w, "std", float_json(cm->std, cm->arch.in_ch), err);
    if (st == TD_OK && cm->labels) {
        json_t *a = json_array();
        for (int i = 0; i < cm->arch.classes; i++)
            json_array_append_new(a, json_string(cm->labels[i]));
        st = meta_json(w, "labels", a, err);
    }
    if (st == TD_OK)
        st = td_st_writer_write(w, path, err);
out:
    free(arch);
    free(s);
    td_st_writer_free(w);
    return st;
}

/* ---------------------------------------------------------------- export */

static void bn_affine(const td_bnn_bn *bn, int c, double *mul, double *add)
{
    /* z = gamma (x - mean)/sqrt(var + eps) + beta = mul x + add */
    if (!bn->gamma && !bn->beta && !bn->mean && !bn->var) {
        *mul = 1;
        *add = 0;
        return;
    }
    double g = bn->gamma ? bn->gamma[c] : 1, be = bn->beta ? bn->beta[c] : 0;
    double mu = bn->mean ? bn->mean[c] : 0, var = bn->var ? bn->var[c] : 1;
    double inv = g / sqrt(var + (double)bn->eps);
    *mul = inv;
    *add = be - mu * inv;
}

/* (k*k*ci, co) rows (ky,kx,ci) -> (co, ci, k, k); malloc'd. */
static float *kkio_to_oihw(const float *w, int k, int ci, int co)
{
    float *o = malloc((size_t)k * (size_t)k * (size_t)ci * (size_t)co *
                      sizeof *o);
    if (!o)
        return NULL;
    for (int t = 0; t < k * k; t++)
        for (int c = 0; c < ci; c++)
            for (int q = 0; q < co; q++)
                o[((size_t)q * (size_t)ci + (size_t)c) * (size_t)(k * k) +
                  (size_t)t] =
                    w[((size_t)t * (size_t)ci + (size_t)c) * (size_t)co +
                      (size_t)q];
    return o;
}

static td_status from_latent_oihw(td_bnn_model **out,
                                  const td_bnn_latent *src, td_error *err);

td_status td_bnn_from_latent(td_bnn_model **out, const td_bnn_latent *src,
                             td_error *err)
{
    td_bnn_latent l;
    float *tmp[TD_BNN_MAX_BLOCKS + 2] = {0};
    td_status st = TD_OK;
    const td_bnn_arch *a = &src->arch;
    int cin;
    if (src->layout == TD_BNN_OIHW)
        return from_latent_oihw(out, src, err);
    *out = NULL;
    if (src->layout != TD_BNN_KKIO || a->n_blocks < 1 ||
        a->n_blocks > TD_BNN_MAX_BLOCKS || !src->stem_w || !src->fc_w)
        return td_error_set(err, TD_EINVAL,
                            "export: bad layout, arch or missing weights");
    l = *src;
    l.layout = TD_BNN_OIHW;
    tmp[0] = kkio_to_oihw(src->stem_w, a->stem.k, a->in_ch, a->stem.cout);
    l.stem_w = tmp[0];
    cin = a->stem.cout;
    for (int i = 0; i < a->n_blocks; i++) {
        if (!src->block_w[i]) {
            st = td_error_set(err, TD_EINVAL,
                              "export: block %d has no weights", i);
            goto out;
        }
        tmp[1 + i] = kkio_to_oihw(src->block_w[i], a->blocks[i].k, cin,
                                  a->blocks[i].cout);
        l.block_w[i] = tmp[1 + i];
        cin = a->blocks[i].cout;
    }
    /* fc (C, classes) -> (classes, C): a 1x1 "conv" */
    tmp[1 + a->n_blocks] = kkio_to_oihw(src->fc_w, 1, cin, a->classes);
    l.fc_w = tmp[1 + a->n_blocks];
    for (int i = 0; i < a->n_blocks + 2; i++)
        if (!tmp[i]) {
            st = td_error_set(err, TD_ENOMEM, "export: out of memory");
            goto out;
        }
    st = from_latent_oihw(out, &l, err);
out:
    for (int i = 0; i < TD_BNN_MAX_BLOCKS + 2; i++)
        free(tmp[i]);
    return st;
}

static td_status from_latent_oihw(td_bnn_model **out,
                                  const td_bnn_latent *src, td_error *err)
{
    td_bnn_model *m = calloc(1, sizeof *m);
    slot *s = calloc(MAX_SLOTS, sizeof *s);
    td_mst_plan plans[TD_BNN_MAX_BLOCKS];
    int32_t n_diff[TD_BNN_MAX_BLOCKS] = {0};
    uint64_t *rows[TD_BNN_MAX_BLOCKS] = {0};
    char *archj = NULL;
    td_status st = TD_OK;
    int ns, built = 0;
    const td_bnn_arch *a = &src->arch;
    *out = NULL;
    memset(plans, 0, sizeof plans);
    if (!m || !s) {
        st = td_error_set(err, TD_ENOMEM, "bnn: out of memory");
        goto out;
    }
    /* round-trip the arch through its checker */
    archj = td_bnn_arch_json(a);
    st = td_bnn_arch_parse(archj, &m->arch, err);
    if (st != TD_OK)
        goto out;
    {
        int cin = a->stem.cout;
        for (int i = 0; i < a->n_blocks; i++) {
            const td_bnn_conv_spec *c = &a->blocks[i];
            int k = c->k, cw = td_bp_words(cin), kw = k * k * cw;
            const float *lw = src->block_w[i];
            if (!lw) {
                st = td_error_set(err, TD_EINVAL,
                                  "export: block %d has no weights", i);
                goto out;
            }
            rows[i] = calloc((size_t)c->cout * (size_t)kw, sizeof(uint64_t));
            if (!rows[i]) {
                st = td_error_set(err, TD_ENOMEM, "bnn: out of memory");
                goto out;
            }
            /* (Cout, Cin, k, k) latent -> rows (ky, kx, word) */
            for (int o = 0; o < c->cout; o++)
                for (int ci = 0; ci < cin; ci++)
                    for (int t = 0; t < k * k; t++) {
                        float v = lw[((size_t)o * (size_t)cin + (size_t)ci) *
                                         (size_t)(k * k) + (size_t)t];
                        rows[i][(size_t)o * (size_t)kw +
                                (size_t)t * (size_t)cw + (size_t)(ci >> 6)] |=
                            (uint64_t)(v < 0) << (ci & 63);
                    }
            st = src->block_parent[i]
                     ? td_mst_build_tree(rows[i], c->cout, kw,
                                         src->block_parent[i], &plans[i], err)
                     : td_mst_build(rows[i], c->cout, kw, &plans[i], err);
            if (st != TD_OK) {
                td_error_prefix(err, "export: block %d", i);
                goto out;
            }
            built = i + 1;
            n_diff[i] = plans[i].n_diff;
            cin = c->cout;
        }
    }
    ns = make_slots(m, n_diff, s);
    st = alloc_slots(m, s, ns, err);
    if (st != TD_OK)
        goto out;
    {
        const td_bnn_conv_spec *c = &a->stem;
        size_t nw = (size_t)c->cout * (size_t)a->in_ch * (size_t)(c->k * c->k);
        float *sw = (float *)m->stem_wt, *ss = (float *)m->stem_scale,
              *sb = (float *)m->stem_bias;
        if (!src->stem_w || !src->fc_w) {
            st = td_error_set(err, TD_EINVAL,
                              "export: stem and fc weights are required");
            goto out;
        }
        memcpy(sw, src->stem_w, nw * sizeof *sw);
        for (int o = 0; o < c->cout; o++) {
            double mul, add, b0 = src->stem_b ? src->stem_b[o] : 0;
            bn_affine(&src->stem_bn, o, &mul, &add);
            ss[o] = (float)mul;
            sb[o] = (float)(mul * b0 + add);
        }
    }
    for (int i = 0; i < a->n_blocks; i++) {
        td_bnn_block *b = &m->blocks[i];
        int cout = b->spec.cout, kw = b->plan.kw, k = b->spec.k;
        int64_t kbits = (int64_t)b->cin * k * k;
        const float *lw = src->block_w[i];
        memcpy((uint64_t *)b->w, rows[i],
               (size_t)cout * (size_t)kw * sizeof(uint64_t));
        for (int o = 0; o < cout; o++) {
            double alpha, mul, add;
            if (src->block_alpha[i]) {
                alpha = src->block_alpha[i][o];
            } else {
                double sum = 0;
                for (int64_t q = 0; q < kbits; q++)
                    sum += fabs(lw[(size_t)o * (size_t)kbits + (size_t)q]);
                alpha = sum / (double)kbits;
            }
            bn_affine(&src->block_bn[i], o, &mul, &add);
            ((float *)b->scale)[o] = (float)(alpha * mul);
            ((float *)b->bias)[o] = (float)add;
            td_bnn_fold_threshold(alpha * mul, add, kbits,
                                  (int8_t *)&b->tsign[o],
                                  (int32_t *)&b->thr[o]);
        }
        memcpy(b->plan.order, plans[i].order, (size_t)cout * 4);
        memcpy(b->plan.parent, plans[i].parent, (size_t)cout * 4);
        memcpy(b->plan.diff_ptr, plans[i].diff_ptr, ((size_t)cout + 1) * 4);
        memcpy(b->plan.diff_idx, plans[i].diff_idx, (size_t)n_diff[i] * 4);
        memcpy(b->plan.diff_mask, plans[i].diff_mask, (size_t)n_diff[i] * 8);
        b->plan.root = plans[i].root;
        b->plan.depth = plans[i].depth;
        b->plan.distance = plans[i].distance;
    }
    {
        int cl = a->blocks[a->n_blocks - 1].cout;
        memcpy((float *)m->fc_w, src->fc_w,
               (size_t)a->classes * (size_t)cl * sizeof(float));
        for (int c = 0; c < a->classes; c++)
            ((float *)m->fc_b)[c] = src->fc_b ? src->fc_b[c] : 0;
    }
    for (int c = 0; c < a->in_ch; c++) {
        m->mean[c] = src->mean[c];
        m->std[c] = src->std[c] > 0 ? src->std[c] : 1;
    }
    if (src->labels) {
        json_t *arr = json_array();
        for (int c = 0; c < a->classes; c++)
            json_array_append_new(arr, json_string(src->labels[c]
                                                       ? src->labels[c]
                                                       : ""));
        st = set_labels(m, arr, err);
        json_decref(arr);
        if (st != TD_OK)
            goto out;
    }
    st = prepare_blocks(m, err);
    if (st != TD_OK)
        goto out;
    compute_stats(m);
out:
    for (int i = 0; i < built; i++)
        td_mst_plan_free(&plans[i]);
    for (int i = 0; i < a->n_blocks && i < TD_BNN_MAX_BLOCKS; i++)
        free(rows[i]);
    free(archj);
    free(s);
    if (st != TD_OK) {
        td_bnn_free(m);
        return st;
    }
    *out = m;
    return TD_OK;
}

td_status td_bnn_export(const td_bnn_latent *src, const char *path,
                        td_error *err)
{
    td_bnn_model *m;
    td_status st = td_bnn_from_latent(&m, src, err);
    if (st != TD_OK)
        return st;
    st = td_bnn_save(m, path, err);
    td_bnn_free(m);
    return st;
}

/* ---------------------------------------------------------------- forward */

typedef struct fwd_sizes {
    size_t stem_f, bits, y, scr_words, pooled;
    size_t sl_act, sl_scr, sl_sum; /* bit-sliced: planar buffer, scratch
                                      and sums (words), one chunk */
    size_t sl_nhwc, sl_lanes, sl_y, sl_cscr; /* mixed passes (words) */
} fwd_sizes;

static void forward_sizes(const td_bnn_model *m, fwd_sizes *z)
{
    size_t px = (size_t)m->stem_h * (size_t)m->stem_w;
    memset(z, 0, sizeof *z);
    z->stem_f = td_bnn_stem_planar_scratch(&m->stem); /* 0 if unsliced */
    z->bits = px * (size_t)td_bp_words(m->arch.stem.cout);
    for (int i = 0; i < m->arch.n_blocks; i++) {
        const td_bnn_block *b = &m->blocks[i];
        size_t po = (size_t)b->h_out * (size_t)b->w_out;
        size_t bw = po * (size_t)td_bp_words(b->spec.cout);
        size_t sw = td_bconv_scratch_words(&b->conv);
        if (bw > z->bits)
            z->bits = bw;
        if (po * (size_t)b->spec.cout > z->y)
            z->y = po * (size_t)b->spec.cout;
        if (sw > z->scr_words)
            z->scr_words = sw;
    }
    z->pooled = (size_t)m->arch.blocks[m->arch.n_blocks - 1].cout;
    if (m->slice_ok) {
        int nb = m->slice_chunk, c = m->arch.stem.cout;
        const td_bslice_layout *l0 = &m->slice_lay[0];
        z->sl_act = (size_t)m->arch.stem.cout * td_bslice_stride(l0->lw, nb);
        /* where executors meet: NHWC bits of the pass, the blocks'
         * integers and scratch, and a lane-ordered copy of one image */
        for (int i = 0; i <= m->arch.n_blocks; i++) {
            const td_bslice_layout *L = &m->slice_lay[i];
            size_t lpx = (size_t)L->h * (size_t)L->w;
            size_t cw = (size_t)td_bp_words(c);
            if (lpx * cw * (size_t)nb > z->sl_nhwc)
                z->sl_nhwc = lpx * cw * (size_t)nb;
            if ((size_t)L->lw * 64 * cw > z->sl_lanes)
                z->sl_lanes = (size_t)L->lw * 64 * cw;
            if (i < m->arch.n_blocks) {
                const td_bnn_block *b = &m->blocks[i];
                size_t yw = (size_t)b->h_out * (size_t)b->w_out *
                            (size_t)b->spec.cout * (size_t)nb;
                if (yw > z->sl_y)
                    z->sl_y = yw;
                if (td_bconv_scratch_words(&b->conv) > z->sl_cscr)
                    z->sl_cscr = td_bconv_scratch_words(&b->conv);
                c = b->spec.cout;
            }
        }

        for (int i = 0; i < m->arch.n_blocks; i++) {
            const td_bslice *l = &m->slice[i];
            size_t a = (size_t)l->cout * td_bslice_stride(l->out.lw, nb);
            size_t sw = td_bslice_scratch_words(l);
            if (a > z->sl_act)
                z->sl_act = a;
            if (sw > z->sl_scr)
                z->sl_scr = sw;
        }
        /* td_bslice_forward reads guard words around the buffers */
        z->sl_act += 2 * TD_BSLICE_GUARD;
        z->sl_sum = (size_t)nb * z->pooled;
    }
}

size_t td_bnn_scratch_bytes(const td_bnn_model *m)
{
    fwd_sizes z;
    forward_sizes(m, &z);
    size_t vertical = td_arena_round(z.y * 4) +
                      td_arena_round(z.scr_words * 8) +
                      td_arena_round(z.pooled * 8);
    size_t sliced = 2 * td_arena_round(z.sl_act * 8) +
                    td_arena_round(z.sl_scr * 8) +
                    td_arena_round(z.sl_sum * 8) +
                    2 * td_arena_round(z.sl_nhwc * 8) +
                    td_arena_round(z.sl_lanes * 8) +
                    td_arena_round(z.sl_y * 4) +
                    td_arena_round(z.sl_cscr * 8);
    return td_arena_round((z.stem_f + 1) * 4) + 2 * td_arena_round(z.bits * 8) +
           (vertical > sliced ? vertical : sliced) +
           td_arena_round(z.pooled * 4);
}

/* y: (po, c) one image's integers; ysum: (c) their sums over pixels. */
static void sum_pixels(const int32_t *y, size_t po, int c, int64_t *ysum)
{
    for (int o = 0; o < c; o++)
        ysum[o] = 0;
    for (size_t p = 0; p < po; p++)
        for (int o = 0; o < c; o++)
            ysum[o] += y[p * (size_t)c + (size_t)o];
}

/* The last block's output, z = scale*y + bias, averaged over space, from
 * the exact integer sum of y over its po pixels (both executors give the
 * same sums, so the same floats). */
static void pool_from_sums(const td_bnn_block *b, const int64_t *ysum,
                           size_t po, float *pooled)
{
    for (int o = 0; o < b->spec.cout; o++)
        pooled[o] = (float)((double)b->scale[o] * (double)ysum[o] /
                                (double)po +
                            (double)b->bias[o]);
}

static void classify(const td_bnn_model *m, const float *pooled,
                     float *logits)
{
    int cl = m->arch.blocks[m->arch.n_blocks - 1].cout;
    for (int c = 0; c < m->arch.classes; c++)
        logits[c] = m->fc_b[c] +
                    td_k_dot(m->fc_w + (size_t)c * (size_t)cl, pooled, cl);
}

/* Estimated ns over nimg images (nimg <= slice_chunk), from per-operation
 * times measured on this machine (AMD Zen 4; bench/bnn_bench, perf;
 * docs/BNN.md), for the AVX-512 kernels (level 2) and for what an
 * AVX2-only machine runs (level 1: AVX2 bit-sliced kernels, scalar POPCNT
 * XOR kernels, measured here with TD_BNN_AVX2):
 *   XOR-popcount block: per (pixel, channel, window word) 0.12 | 0.43;
 *   bit-sliced block: per table row and vector of up to 2 words 0.5 | 0.7,
 *     of 4 words 0.6 | 0.9, of 8 words 0.9 | (two of 4); plus 1.1 per
 *     table word built;
 *   stem: per (tap, channel, pixel) to NHWC 0.044 | 0.088, per (tap,
 *     channel, lane) planar 0.05 | 0.1;
 *   changing form (planar <-> NHWC): 0.2 per (lane, channel). */
typedef struct cost_model {
    double xor_word, row2, row4, row8, stem_nhwc, stem_planar;
} cost_model;

static const cost_model cost_levels[2] = {
    {0.43, 0.7, 0.9, 1.8, 0.088, 0.1},  /* AVX2 */
    {0.12, 0.5, 0.6, 0.9, 0.044, 0.05}, /* AVX-512 */
};

static double cost_xor(const cost_model *cm, const td_bnn_block *b,
                       int nimg)
{
    return cm->xor_word * (double)nimg * (double)b->h_out *
           (double)b->w_out * (double)b->spec.cout * (double)b->conv.kw;
}

static double cost_sliced(const cost_model *cm, const td_bslice *l, int nimg)
{
    double t = (double)l->out.lw * (double)nimg, rows = (double)l->n_rows;
    double per_row = 0;
    while (t >= 8) {
        per_row += cm->row8;
        t -= 8;
    }
    if (t > 2)
        per_row += cm->row4;
    else if (t > 0)
        per_row += cm->row2;
    return rows * per_row +
           1.1 * (double)l->kbits * (double)l->out.lw * (double)nimg;
}

/* The cheapest executor per block for passes of 1..slice_chunk images at
 * each kernel level, counting the stem's form and each change of form: a
 * shortest path over (block, form). Fills m->slice_pick. */
static void plan_executors(td_bnn_model *m)
{
    const td_bnn_arch *a = &m->arch;
    int taps = a->stem.k * a->stem.k * a->in_ch;
    for (int lv = 0; lv < 2; lv++) {
        const cost_model *cm = &cost_levels[lv];
        for (int nb = 1; nb <= m->slice_chunk && nb <= TD_BNN_MAX_CHUNK;
             nb++) {
            double cost[TD_BNN_MAX_BLOCKS + 1][2];
            int from[TD_BNN_MAX_BLOCKS + 1][2];
            /* form 0: NHWC (XOR-popcount), 1: planar (bit-sliced) */
            cost[0][0] = cm->stem_nhwc * taps * a->stem.cout *
                         (double)m->stem_h * m->stem_w * nb;
            cost[0][1] = cm->stem_planar * taps * a->stem.cout *
                         (double)m->slice_lay[0].lw * 64 * nb;
            for (int i = 0; i < a->n_blocks; i++) {
                int c = i ? a->blocks[i - 1].cout : a->stem.cout;
                double conv = 0.2 * (double)m->slice_lay[i].lw * 64 * c * nb;
                double run[2] = {cost_xor(cm, &m->blocks[i], nb),
                                 cost_sliced(cm, &m->slice[i], nb)};
                for (int f = 0; f < 2; f++) {
                    double stay = cost[i][f], change = cost[i][!f] + conv;
                    from[i + 1][f] = stay <= change ? f : !f;
                    cost[i + 1][f] = (stay <= change ? stay : change) + run[f];
                }
            }
            /* the last block's sums need no form; walk back */
            {
                int f = cost[a->n_blocks][1] < cost[a->n_blocks][0];
                for (int i = a->n_blocks; i >= 1; i--) {
                    m->slice_pick[lv][nb - 1][i - 1] = (uint8_t)f;
                    f = from[i][f];
                }
            }
        }
    }
}

int td_bnn_block_sliced(const td_bnn_model *m, int i, int nimg, int flags)
{
    int level;
    if (!m->slice_ok ||
        !(flags & (TD_BNN_SLICE | TD_BNN_AUTO | TD_BNN_MIX_ODD |
                   TD_BNN_MIX_EVEN)))
        return 0;
    if (flags & TD_BNN_SLICE)
        return 1;
    if (flags & (TD_BNN_MIX_ODD | TD_BNN_MIX_EVEN))
        return (i % 2 == 1) == !!(flags & TD_BNN_MIX_ODD);
    /* portable C (no SIMD): the XOR-popcount kernels are kept */
    level = td_bslice_level(flags);
    if (level == 0)
        return 0;
    if (nimg > m->slice_chunk)
        nimg = m->slice_chunk;
    if (nimg < 1)
        nimg = 1;
    return m->slice_pick[level - 1][nimg - 1][i];
}

/* Planar rows of c channels, stride words apart, t words used: zero the
 * spare column (stride > t) and the guard after the last row. Readers
 * take the word before each stream for zeros (td_bnn_slice.h). */
static void clear_spare(uint64_t *act, int c, size_t stride, size_t t)
{
    for (size_t r = 0; stride > t && r < (size_t)c; r++)
        act[r * stride + t] = 0;
    memset(act + (size_t)c * stride, 0, TD_BSLICE_GUARD * 8);
}

typedef struct mixed_buf {
    float *sf;               /* the planar stem's scratch */
    uint64_t *act[2];        /* planar, TD_BSLICE_GUARD words each side */
    uint64_t *nhwc[2];       /* NHWC bits of the pass */
    uint64_t *lanes;         /* one image in lane order */
    uint64_t *scr, *cscr;    /* bit-sliced, XOR-popcount scratch */
    int32_t *y;              /* the XOR-popcount blocks' integers */
    int64_t *ysum;           /* (nimg, C_last) */
} mixed_buf;

/* slice_chunk images at a time; each block runs bit-sliced or through
 * the XOR-popcount kernels (td_bnn_block_sliced), and the activations
 * change form where the two meet: planar streams in the block's layout or
 * channel-packed NHWC words. */
static void forward_mixed(const td_bnn_model *m, int flags, const float *in,
                          int n, float *logits, const mixed_buf *bf,
                          float *pooled)
{
    const td_bnn_arch *a = &m->arch;
    size_t img = (size_t)a->in_ch * (size_t)a->in_h * (size_t)a->in_w;
    int cl = a->blocks[a->n_blocks - 1].cout;
    int xflags = (flags & (TD_BCONV_PLAN | TD_BCONV_PORTABLE | TD_BCONV_CH8)) |
                 (flags & TD_BNN_AVX2 ? TD_BCONV_PORTABLE : 0);
    for (int i0 = 0; i0 < n; i0 += m->slice_chunk) {
        int nb = n - i0 < m->slice_chunk ? n - i0 : m->slice_chunk;
        int planar = td_bnn_block_sliced(m, 0, nb, flags);
        int c = a->stem.cout, h = m->stem_h, w = m->stem_w, cur = 0;
        size_t st = td_bslice_stride(m->slice_lay[0].lw, nb);
        /* the stem, in the form block 0 reads */
        for (int j = 0; j < nb; j++) {
            const float *x = in + (size_t)(i0 + j) * img;
            if (planar)
                td_bnn_stem_planar(&m->stem, flags, x,
                                   bf->act[0] + (size_t)j *
                                                    (size_t)m->slice_lay[0].lw,
                                   st, bf->sf);
            else
                td_bnn_stem_nhwc(&m->stem, flags, x,
                                 bf->nhwc[0] + (size_t)j * (size_t)h *
                                                   (size_t)w *
                                                   (size_t)td_bp_words(c));
        }
        if (planar)
            clear_spare(bf->act[0], c, st, (size_t)nb * (size_t)m->slice_lay[0].lw);
        for (int i = 0; i < a->n_blocks; i++) {
            const td_bnn_block *b = &m->blocks[i];
            const td_bslice_layout *L = &m->slice_lay[i];
            int sl = td_bnn_block_sliced(m, i, nb, flags);
            int last = i + 1 == a->n_blocks;
            size_t px = (size_t)h * (size_t)w, cw = (size_t)td_bp_words(c);
            if (sl && !planar) { /* NHWC -> planar */
                st = td_bslice_stride(L->lw, nb);
                for (int j = 0; j < nb; j++)
                    td_bslice_from_nhwc(bf->nhwc[cur] + (size_t)j * px * cw,
                                        c, L, m->slice_lane[i],
                                        bf->act[cur] + (size_t)j *
                                                           (size_t)L->lw,
                                        st, bf->lanes);
                clear_spare(bf->act[cur], c, st,
                            (size_t)nb * (size_t)L->lw);
            } else if (!sl && planar) { /* planar -> NHWC */
                for (int j = 0; j < nb; j++)
                    td_bslice_to_nhwc(bf->act[cur] + (size_t)j * (size_t)L->lw,
                                      st, c, L, m->slice_lane[i],
                                      bf->nhwc[cur] + (size_t)j * px * cw,
                                      bf->lanes);
            }
            if (sl) {
                td_bslice_forward(&m->slice[i], flags, bf->act[cur], st, nb,
                                  last ? NULL : bf->act[!cur],
                                  last ? bf->ysum : NULL, bf->scr);
                st = td_bslice_stride(m->slice[i].out.lw, nb);
            } else {
                size_t po = (size_t)b->h_out * (size_t)b->w_out;
                td_bconv_forward(&b->conv, xflags, bf->nhwc[cur], nb, h, w,
                                 bf->y, bf->cscr);
                if (!last) {
                    td_bnn_threshold(bf->y, po * (size_t)nb, b->spec.cout,
                                     b->tsign, b->thr, bf->nhwc[!cur]);
                } else {
                    for (int j = 0; j < nb; j++)
                        sum_pixels(bf->y + (size_t)j * po * (size_t)cl, po, cl,
                                   bf->ysum + (size_t)j * (size_t)cl);
                }
            }
            planar = sl;
            cur = !cur;
            c = b->spec.cout;
            h = b->h_out;
            w = b->w_out;
        }
        for (int j = 0; j < nb; j++) {
            const td_bnn_block *b = &m->blocks[a->n_blocks - 1];
            pool_from_sums(b, bf->ysum + (size_t)j * (size_t)cl,
                           (size_t)b->h_out * (size_t)b->w_out, pooled);
            classify(m, pooled, logits + (size_t)(i0 + j) * (size_t)a->classes);
        }
    }
}

td_status td_bnn_forward(const td_bnn_model *m, int flags, td_arena *ar,
                         const float *in, int n, float *logits,
                         td_error *err)
{
    fwd_sizes z;
    size_t mark = td_arena_mark(ar);
    float *sf, *pooled;
    uint64_t *b0, *b1;
    const td_bnn_arch *a = &m->arch;
    int cl = a->blocks[a->n_blocks - 1].cout;
    size_t img = (size_t)a->in_ch * (size_t)a->in_h * (size_t)a->in_w;
    forward_sizes(m, &z);
    sf = td_arena_alloc(ar, (z.stem_f + 1) * 4);
    b0 = td_arena_alloc(ar, z.bits * 8);
    b1 = td_arena_alloc(ar, z.bits * 8);
    pooled = td_arena_alloc(ar, z.pooled * 4);
    if (!sf || !b0 || !b1 || !pooled)
        goto nomem;
    if ((flags & (TD_BNN_SLICE | TD_BNN_AUTO | TD_BNN_MIX_ODD |
                  TD_BNN_MIX_EVEN)) &&
        m->slice_ok) {
        mixed_buf bf;
        bf.sf = sf;
        bf.act[0] = td_arena_alloc(ar, z.sl_act * 8);
        bf.act[1] = td_arena_alloc(ar, z.sl_act * 8);
        bf.nhwc[0] = td_arena_alloc(ar, z.sl_nhwc * 8);
        bf.nhwc[1] = td_arena_alloc(ar, z.sl_nhwc * 8);
        bf.lanes = td_arena_alloc(ar, z.sl_lanes * 8);
        bf.scr = td_arena_alloc(ar, z.sl_scr * 8);
        bf.cscr = td_arena_alloc(ar, z.sl_cscr * 8);
        bf.y = td_arena_alloc(ar, z.sl_y * 4);
        bf.ysum = td_arena_alloc(ar, z.sl_sum * 8);
        if (!bf.act[0] || !bf.act[1] || !bf.nhwc[0] || !bf.nhwc[1] ||
            !bf.lanes || !bf.scr || !bf.cscr || !bf.y || !bf.ysum)
            goto nomem;
        /* zero guards before (those after each layer's rows are zeroed
         * by whoever writes the rows) */
        for (int i = 0; i < 2; i++) {
            memset(bf.act[i], 0, TD_BSLICE_GUARD * 8);
            bf.act[i] += TD_BSLICE_GUARD;
        }
        forward_mixed(m, flags, in, n, logits, &bf, pooled);
        td_arena_release(ar, mark);
        return TD_OK;
    }
    int32_t *y = td_arena_alloc(ar, z.y * 4);
    uint64_t *scr = td_arena_alloc(ar, z.scr_words * 8);
    int64_t *ysum = td_arena_alloc(ar, z.pooled * 8);
    if (!y || !scr || !ysum)
        goto nomem;
    for (int img_i = 0; img_i < n; img_i++) {
        uint64_t *bin = b0, *bout = b1, *t;
        int h = m->stem_h, w = m->stem_w;
        td_bnn_stem_nhwc(&m->stem, flags, in + (size_t)img_i * img, bin);
        for (int i = 0; i < a->n_blocks; i++) {
            const td_bnn_block *b = &m->blocks[i];
            size_t po = (size_t)b->h_out * (size_t)b->w_out;
            td_bconv_forward(&b->conv,
                             flags | (flags & TD_BNN_AVX2 ? TD_BCONV_PORTABLE
                                                          : 0),
                             bin, 1, h, w, y, scr);
            if (i + 1 < a->n_blocks) {
                td_bnn_threshold(y, po, b->spec.cout, b->tsign, b->thr, bout);
                t = bin;
                bin = bout;
                bout = t;
            } else {
                sum_pixels(y, po, cl, ysum);
                pool_from_sums(b, ysum, po, pooled);
            }
            h = b->h_out;
            w = b->w_out;
        }
        classify(m, pooled, logits + (size_t)img_i * (size_t)a->classes);
    }
    td_arena_release(ar, mark);
    return TD_OK;
nomem:
    td_arena_release(ar, mark);
    return td_error_set(err, TD_ENOMEM,
                        "bnn: scratch arena too small (%zu bytes needed)",
                        td_bnn_scratch_bytes(m));
}
