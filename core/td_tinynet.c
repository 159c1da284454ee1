/* td_tinynet: loading (with BatchNorm folding), saving and the forward pass. */
#include "config.h"

#include "td_tinynet.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "td_gemm.h"
#include "td_kernels.h"

/* ------------------------------------------------------------ the plan */

/* Destination layouts of a PyTorch weight [out, K...] in our slab. */
enum { L_KO, L_OK, L_STEM };

/* One parameterised module of the network: its timm names, its PyTorch
 * weight shape and where its folded weight and bias go. */
typedef struct plan_entry {
    char mod[TD_TN_NAME_MAX]; /* e.g. "blocks.1.0.conv_pw" */
    char bn[TD_TN_NAME_MAX];  /* its BatchNorm, e.g. "blocks.1.0.bn1"; "" */
    int ndim;
    int64_t shape[4];
    int out, kdim;            /* shape[0] and the product of the rest */
    int layout;
    float *w, *b;
} plan_entry;

#define MAX_PLAN (4 + 5 * TD_TN_MAX_BLOCKS)

typedef struct layout_state {
    float *base; /* NULL while counting */
    size_t off;  /* floats */
    plan_entry *plan;
    int n_plan;
} layout_state;

/* Reserve n floats, 8-float aligned so every tensor starts on 32 bytes. */
static float *take(layout_state *s, size_t n)
{
    float *p = s->base ? s->base + s->off : NULL;
    s->off += (n + 7) & ~(size_t)7;
    return p;
}

static void add_entry(layout_state *s, const char *mod, const char *bn,
                      int ndim, int o, int i1, int kh, int kw, int layout,
                      const float **w, const float **b)
{
    plan_entry *e = s->plan ? &s->plan[s->n_plan] : NULL;
    int kdim = i1 * (ndim == 4 ? kh * kw : 1);
    float *pw = take(s, (size_t)o * kdim), *pb = take(s, (size_t)o);
    if (w)
        *w = pw;
    if (b)
        *b = pb;
    if (e) {
        snprintf(e->mod, sizeof e->mod, "%s", mod);
        snprintf(e->bn, sizeof e->bn, "%s", bn ? bn : "");
        e->ndim = ndim;
        e->shape[0] = o;
        e->shape[1] = i1;
        e->shape[2] = kh;
        e->shape[3] = kw;
        e->out = o;
        e->kdim = kdim;
        e->layout = layout;
        e->w = pw;
        e->b = pb;
    }
    s->n_plan++;
}

/* Walk the architecture once: count floats (base NULL) or assign m's
 * pointers and fill the plan. */
static size_t layout_model(td_tinynet *m, float *base, plan_entry *plan,
                           int *n_plan)
{
    const td_tn_arch *a = &m->arch;
    layout_state s = {base, 0, plan, 0};
    char mod[TD_TN_NAME_MAX], bn[TD_TN_NAME_MAX];
    int i, cin;
    add_entry(&s, "conv_stem", "bn1", 4, a->stem, 3, TD_TN_STEM_K,
              TD_TN_STEM_K, L_STEM, &m->stem_w, &m->stem_b);
    for (i = 0; i < a->n_blocks; i++) {
        const td_tn_block *bl = &a->blocks[i];
        td_tn_layer *l = &m->layers[i];
        td_tn_block_names nm = td_tn_names_for(bl);
        char pre[32];
        snprintf(pre, sizeof pre, "blocks.%d.%d.", bl->stage, bl->index);
        memset(l, 0, sizeof *l);
        if (nm.expand_conv) {
            snprintf(mod, sizeof mod, "%s%s", pre, nm.expand_conv);
            snprintf(bn, sizeof bn, "%s%s", pre, nm.expand_bn);
            add_entry(&s, mod, bn, 4, bl->cmid, bl->cin, 1, 1, L_KO,
                      &l->exp_w, &l->exp_b);
        }
        snprintf(mod, sizeof mod, "%s%s", pre, nm.dw_conv);
        snprintf(bn, sizeof bn, "%s%s", pre, nm.dw_bn);
        add_entry(&s, mod, bn, 4, bl->cmid, 1, bl->k, bl->k, L_KO, &l->dw_w,
                  &l->dw_b);
        snprintf(mod, sizeof mod, "%sse.conv_reduce", pre);
        add_entry(&s, mod, NULL, 4, bl->cse, bl->cmid, 1, 1, L_OK, &l->se_rw,
                  &l->se_rb);
        snprintf(mod, sizeof mod, "%sse.conv_expand", pre);
        add_entry(&s, mod, NULL, 4, bl->cmid, bl->cse, 1, 1, L_KO, &l->se_ew,
                  &l->se_eb);
        snprintf(mod, sizeof mod, "%s%s", pre, nm.proj_conv);
        snprintf(bn, sizeof bn, "%s%s", pre, nm.proj_bn);
        add_entry(&s, mod, bn, 4, bl->cout, bl->cmid, 1, 1, L_KO, &l->proj_w,
                  &l->proj_b);
    }
    cin = a->n_blocks ? a->blocks[a->n_blocks - 1].cout : a->stem;
    add_entry(&s, "conv_head", "bn2", 4, a->head, cin, 1, 1, L_KO, &m->head_w,
              &m->head_b);
    add_entry(&s, "classifier", NULL, 2, a->classes, a->head, 1, 1, L_KO,
              &m->fc_w, &m->fc_b);
    if (n_plan)
        *n_plan = s.n_plan;
    return s.off;
}

/* Index in our slab of PyTorch weight element (o, j) for an entry. */
static size_t dst_index(const plan_entry *e, int o, int j)
{
    switch (e->layout) {
    case L_OK:
        return (size_t)o * e->kdim + j;
    case L_STEM: { /* j = ci*kk + t (PyTorch) -> row t*cin + ci */
        int kk = (int)(e->shape[2] * e->shape[3]), cin = (int)e->shape[1];
        int ci = j / kk, t = j % kk;
        return ((size_t)t * cin + ci) * e->out + o;
    }
    default:
        return (size_t)j * e->out + o;
    }
}

/* ------------------------------------------------------------ model */

static td_status model_alloc(td_tinynet **out, const td_tn_arch *a,
                             plan_entry *plan, int *n_plan, td_error *err)
{
    td_tinynet *m = calloc(1, sizeof *m);
    size_t n;
    *out = NULL;
    if (!m)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    m->arch = *a;
    n = layout_model(m, NULL, NULL, NULL);
    m->weights = aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
    if (!m->weights) {
        free(m);
        return td_error_set(err, TD_ENOMEM,
                            "cannot allocate %zu bytes of weights",
                            n * sizeof(float));
    }
    memset(m->weights, 0, n * sizeof(float));
    m->n_weights = n;
    layout_model(m, m->weights, plan, n_plan);
    m->mean[0] = 0.485f;
    m->mean[1] = 0.456f;
    m->mean[2] = 0.406f;
    m->std[0] = 0.229f;
    m->std[1] = 0.224f;
    m->std[2] = 0.225f;
    snprintf(m->interpolation, sizeof m->interpolation, "bicubic");
    m->crop_pct = 0.875f;
    *out = m;
    return TD_OK;
}

td_status td_tinynet_new(td_tinynet **out, const td_tn_arch *a,
                         td_error *err)
{
    return model_alloc(out, a, NULL, NULL, err);
}

void td_tinynet_free(td_tinynet *m)
{
    if (!m)
        return;
    free(m->weights);
    free(m->labels);
    free(m);
}

/* ------------------------------------------------------------ config */

/* A number given as a JSON number or as a string holding one (safetensors
 * metadata values are strings). */
static int json_num(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 1;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        double d = strtod(s, &end);
        if (end == s || *end != '\0')
            return 0;
        *out = d;
        return 1;
    }
    return 0;
}

/* A JSON array given as such or as a string holding its JSON text; a new
 * reference or NULL. */
static json_t *json_arr(json_t *v)
{
    if (json_is_array(v))
        return json_incref(v);
    if (json_is_string(v)) {
        json_t *a = json_loads(json_string_value(v), 0, NULL);
        if (json_is_array(a))
            return a;
        json_decref(a);
    }
    return NULL;
}

/* Read the architecture and preprocessing fields of a JSON object (the
 * sidecar, or the metadata turned into one). *labels gets a new reference
 * to the labels array when present. */
static td_status config_from_json(json_t *o, const char *where,
                                  td_tn_config *c, json_t **labels,
                                  td_error *err)
{
    json_t *v;
    double d;
    int i;
    memset(c, 0, sizeof *c);
    *labels = NULL;
    if ((v = json_object_get(o, "variant"))) {
        if (!json_is_string(v) ||
            strlen(json_string_value(v)) >= sizeof c->variant)
            return td_error_set(err, TD_EFORMAT,
                                "%s: \"variant\" must be a short string",
                                where);
        snprintf(c->variant, sizeof c->variant, "%s", json_string_value(v));
    }
    {
        static const char *keys[] = {"r", "d", "w", "crop_pct"};
        for (i = 0; i < 4; i++) {
            if (!(v = json_object_get(o, keys[i])))
                continue;
            if (!json_num(v, &d) || !(d > 0))
                return td_error_set(err, TD_EFORMAT,
                                    "%s: \"%s\" must be a positive number",
                                    where, keys[i]);
            if (i == 0)
                c->r = d;
            else if (i == 1)
                c->d = d;
            else if (i == 2)
                c->w = d;
            else
                c->crop_pct = (float)d;
        }
    }
    {
        static const char *keys[] = {"resolution", "classes"};
        for (i = 0; i < 2; i++) {
            if (!(v = json_object_get(o, keys[i])))
                continue;
            if (!json_num(v, &d) || d != floor(d) || d < 1 || d > 1e6)
                return td_error_set(err, TD_EFORMAT,
                                    "%s: \"%s\" must be a positive integer",
                                    where, keys[i]);
            if (i == 0)
                c->resolution = (int)d;
            else
                c->classes = (int)d;
        }
    }
    {
        static const char *keys[] = {"mean", "std"};
        for (i = 0; i < 2; i++) {
            json_t *arr;
            float *dst = i == 0 ? c->mean : c->std;
            size_t j;
            if (!(v = json_object_get(o, keys[i])))
                continue;
            arr = json_arr(v);
            if (!arr || json_array_size(arr) != 3) {
                json_decref(arr);
                return td_error_set(err, TD_EFORMAT,
                                    "%s: \"%s\" must be an array of 3 numbers",
                                    where, keys[i]);
            }
            for (j = 0; j < 3; j++) {
                if (!json_num(json_array_get(arr, j), &d) ||
                    (i == 1 && !(d > 0))) {
                    json_decref(arr);
                    return td_error_set(err, TD_EFORMAT,
                                        "%s: \"%s\"[%zu] is not a %snumber",
                                        where, keys[i], j,
                                        i == 1 ? "positive " : "");
                }
                dst[j] = (float)d;
            }
            json_decref(arr);
        }
        if (json_object_get(o, "mean") && !json_object_get(o, "std")) {
            c->std[0] = 0.229f; /* mean alone: keep ImageNet's std */
            c->std[1] = 0.224f;
            c->std[2] = 0.225f;
        }
    }
    if ((v = json_object_get(o, "interpolation"))) {
        if (!json_is_string(v) ||
            strlen(json_string_value(v)) >= sizeof c->interpolation)
            return td_error_set(err, TD_EFORMAT,
                                "%s: \"interpolation\" must be a short string",
                                where);
        snprintf(c->interpolation, sizeof c->interpolation, "%s",
                 json_string_value(v));
    }
    if ((v = json_object_get(o, "labels"))) {
        *labels = json_arr(v);
        if (!*labels)
            return td_error_set(err, TD_EFORMAT,
                                "%s: \"labels\" must be a JSON array of strings",
                                where);
    }
    return TD_OK;
}

static int has_arch(const td_tn_config *c)
{
    return c && (c->variant[0] || (c->r > 0 && c->d > 0 && c->w > 0));
}

int td_tinynet_sidecar_path(const char *path, char *buf, size_t len)
{
    size_t n = strlen(path);
    const char *ext = ".safetensors";
    size_t el = strlen(ext);
    int w;
    if (n >= el && !strcmp(path + n - el, ext))
        n -= el;
    w = snprintf(buf, len, "%.*s.json", (int)n, path);
    return w < 0 || (size_t)w >= len ? -1 : 0;
}

/* Labels into one allocation: the pointer array, then the strings. */
static td_status take_labels(td_tinynet *m, json_t *arr, const char *where,
                             td_error *err)
{
    size_t i, n = json_array_size(arr), bytes;
    char *p;
    if (n != (size_t)m->arch.classes)
        return td_error_set(err, TD_EFORMAT,
                            "%s: \"labels\" has %zu entries, the classifier "
                            "has %d classes",
                            where, n, m->arch.classes);
    bytes = n * sizeof(char *);
    for (i = 0; i < n; i++) {
        json_t *s = json_array_get(arr, i);
        if (!json_is_string(s))
            return td_error_set(err, TD_EFORMAT,
                                "%s: \"labels\"[%zu] is not a string", where,
                                i);
        bytes += json_string_length(s) + 1;
    }
    m->labels = malloc(bytes ? bytes : 1);
    if (!m->labels)
        return td_error_set(err, TD_ENOMEM, "out of memory for labels");
    p = (char *)(m->labels + n);
    for (i = 0; i < n; i++) {
        json_t *s = json_array_get(arr, i);
        size_t l = json_string_length(s);
        memcpy(p, json_string_value(s), l + 1);
        m->labels[i] = p;
        p += l + 1;
    }
    return TD_OK;
}

/* ------------------------------------------------------------ loading */

static float f32_at(const void *data, size_t i)
{
    float v;
    memcpy(&v, (const unsigned char *)data + i * sizeof v, sizeof v);
    return v;
}

typedef struct load_ctx {
    const td_st_file *f;
    unsigned char *used; /* per file tensor: consumed by the plan */
    int folded;          /* 1: conv.bias instead of BatchNorm tensors */
} load_ctx;

static td_status expect(load_ctx *c, const char *name, int ndim,
                        const int64_t *shape, const td_st_tensor **t,
                        td_error *err)
{
    td_status st = td_st_expect(c->f, name, TD_DT_F32, ndim, shape, t, err);
    size_t i;
    if (st != TD_OK)
        return st;
    c->used[*t - c->f->tensors] = 1;
    for (i = 0; i < (*t)->numel; i++)
        if (!isfinite(f32_at((*t)->data, i)))
            return td_error_set(err, TD_EFORMAT,
                                "tensor \"%s\": non-finite value at element "
                                "%zu",
                                name, i);
    return TD_OK;
}

static td_status load_entry(load_ctx *c, const plan_entry *e, td_error *err)
{
    char name[TD_TN_NAME_MAX + 32];
    const td_st_tensor *w, *g = NULL, *be = NULL, *mu = NULL, *var = NULL,
                          *bias = NULL;
    int64_t vec[1];
    int o, j;
    td_status st;
    vec[0] = e->out;
    snprintf(name, sizeof name, "%s.weight", e->mod);
    if ((st = expect(c, name, e->ndim, e->shape, &w, err)) != TD_OK)
        return st;
    if (e->bn[0] && !c->folded) {
        const td_st_tensor **dst[4] = {&g, &be, &mu, &var};
        static const char *leaf[4] = {"weight", "bias", "running_mean",
                                      "running_var"};
        const td_st_tensor *nbt;
        for (j = 0; j < 4; j++) {
            snprintf(name, sizeof name, "%s.%s", e->bn, leaf[j]);
            if ((st = expect(c, name, 1, vec, dst[j], err)) != TD_OK)
                return st;
        }
        snprintf(name, sizeof name, "%s.num_batches_tracked", e->bn);
        if ((nbt = td_st_find(c->f, name)))
            c->used[nbt - c->f->tensors] = 1; /* training state: ignored */
        for (o = 0; o < e->out; o++)
            if (!(f32_at(var->data, (size_t)o) >= 0))
                return td_error_set(err, TD_EFORMAT,
                                    "tensor \"%s.running_var\": negative "
                                    "variance at channel %d",
                                    e->bn, o);
    } else {
        snprintf(name, sizeof name, "%s.bias", e->mod);
        if ((st = expect(c, name, 1, vec, &bias, err)) != TD_OK)
            return st;
    }
    for (o = 0; o < e->out; o++) {
        double scale = 1, shift;
        if (g) {
            scale = f32_at(g->data, (size_t)o) /
                    sqrt((double)f32_at(var->data, (size_t)o) +
                         (double)TD_TN_BN_EPS);
            shift = f32_at(be->data, (size_t)o) -
                    f32_at(mu->data, (size_t)o) * scale;
        } else {
            shift = f32_at(bias->data, (size_t)o);
        }
        e->b[o] = (float)shift;
        for (j = 0; j < e->kdim; j++)
            e->w[dst_index(e, o, j)] =
                (float)(f32_at(w->data, (size_t)o * e->kdim + j) * scale);
    }
    return TD_OK;
}

/* Merge the architecture sources: the caller's config, then the file's
 * metadata, then the sidecar. */
static td_status resolve_config(const td_st_file *f, const char *path,
                                const td_tn_config *cfg, td_tn_arch *arch,
                                td_tn_config *pre, json_t **labels,
                                char *labels_where, size_t lw_len,
                                int *folded, td_error *err)
{
    td_tn_config meta_c, side_c;
    json_t *meta_labels = NULL, *side_labels = NULL;
    const td_tn_config *src[3] = {NULL, NULL, NULL};
    const char *kind = td_st_meta_get(f, "kind");
    const char *bn = td_st_meta_get(f, "bn");
    char side[4096];
    const td_tn_config *arch_src = NULL;
    td_status st = TD_OK;
    int i, classes = 0, resolution = 0;
    *labels = NULL;
    *folded = bn && !strcmp(bn, "folded");
    if (bn && !*folded && strcmp(bn, "unfolded"))
        return td_error_set(err, TD_EFORMAT,
                            "metadata \"bn\": expected \"folded\" or "
                            "\"unfolded\", found \"%s\"",
                            bn);
    if (kind && strcmp(kind, "tinynet"))
        return td_error_set(err, TD_EFORMAT,
                            "metadata \"kind\": expected \"tinynet\", found "
                            "\"%s\"",
                            kind);
    src[0] = cfg;
    if (kind) { /* our format: the metadata describes the model */
        json_t *o = json_object();
        size_t k;
        if (!o)
            return td_error_set(err, TD_ENOMEM, "out of memory");
        for (k = 0; k < f->n_meta; k++)
            json_object_set_new(o, f->meta[k].key,
                                json_string(f->meta[k].value));
        st = config_from_json(o, "metadata", &meta_c, &meta_labels, err);
        json_decref(o);
        if (st != TD_OK)
            return st;
        src[1] = &meta_c;
    }
    if (td_tinynet_sidecar_path(path, side, sizeof side) == 0 &&
        access(side, R_OK) == 0) {
        json_error_t je;
        json_t *o = json_load_file(side, 0, &je);
        if (!json_is_object(o)) {
            json_decref(o);
            json_decref(meta_labels);
            return td_error_set(err, TD_EFORMAT,
                                "sidecar %s: not a JSON object (line %d: %s)",
                                side, je.line, je.text);
        }
        st = config_from_json(o, side, &side_c, &side_labels, err);
        json_decref(o);
        if (st != TD_OK) {
            json_decref(meta_labels);
            return st;
        }
        src[2] = &side_c;
    }
    for (i = 0; i < 3; i++)
        if (has_arch(src[i])) {
            arch_src = src[i];
            break;
        }
    if (!arch_src) {
        json_decref(meta_labels);
        json_decref(side_labels);
        return td_error_set(err, TD_EINVAL,
                            "no architecture: expected metadata kind=tinynet "
                            "with r, d, w, a sidecar %s with \"variant\" or "
                            "r, d, w, or a variant given by the caller",
                            side);
    }
    for (i = 0; i < 3; i++) {
        if (!src[i])
            continue;
        if (!classes)
            classes = src[i]->classes;
        if (!resolution)
            resolution = src[i]->resolution;
    }
    if (!classes) { /* a timm checkpoint: the classifier says */
        const td_st_tensor *t = td_st_find(f, "classifier.weight");
        if (!t || t->ndim != 2 || t->shape[0] < 1 ||
            t->shape[0] > TD_TN_MAX_CLASSES)
            return td_error_set(err, TD_EFORMAT,
                                "tensor \"classifier.weight\": expected F32 "
                                "[classes,head] to tell the class count");
        classes = (int)t->shape[0];
    }
    if (arch_src->r > 0 && arch_src->d > 0 && arch_src->w > 0)
        st = td_tn_arch_build(arch, arch_src->r, arch_src->d, arch_src->w,
                              resolution, classes, err);
    else {
        st = td_tn_arch_preset(arch, arch_src->variant, classes, err);
        if (st == TD_OK && resolution)
            st = td_tn_arch_build(arch, arch->r, arch->d, arch->w, resolution,
                                  classes, err);
    }
    if (st != TD_OK) {
        json_decref(meta_labels);
        json_decref(side_labels);
        return st;
    }
    /* preprocessing: first source that sets each field */
    memset(pre, 0, sizeof *pre);
    for (i = 0; i < 3; i++) {
        if (!src[i])
            continue;
        if (pre->std[0] == 0 && src[i]->std[0] > 0) {
            memcpy(pre->mean, src[i]->mean, sizeof pre->mean);
            memcpy(pre->std, src[i]->std, sizeof pre->std);
        }
        if (!pre->interpolation[0] && src[i]->interpolation[0])
            memcpy(pre->interpolation, src[i]->interpolation,
                   sizeof pre->interpolation);
        if (pre->crop_pct == 0 && src[i]->crop_pct > 0)
            pre->crop_pct = src[i]->crop_pct;
    }
    if (meta_labels) {
        *labels = meta_labels;
        snprintf(labels_where, lw_len, "metadata");
        json_decref(side_labels);
    } else if (side_labels) {
        *labels = side_labels;
        snprintf(labels_where, lw_len, "%s", side);
    }
    return TD_OK;
}

td_status td_tinynet_from_st(td_tinynet **out, const td_st_file *f,
                             const char *path, const td_tn_config *cfg,
                             td_error *err)
{
    td_tn_arch arch;
    td_tn_config pre;
    json_t *labels = NULL;
    char lwhere[4096];
    plan_entry *plan = NULL;
    load_ctx c = {f, NULL, 0};
    td_tinynet *m = NULL;
    int n_plan = 0, i;
    size_t k;
    td_status st;
    *out = NULL;
    st = resolve_config(f, path, cfg, &arch, &pre, &labels, lwhere,
                        sizeof lwhere, &c.folded, err);
    if (st != TD_OK)
        goto fail;
    plan = malloc(MAX_PLAN * sizeof *plan);
    c.used = calloc(f->n_tensors ? f->n_tensors : 1, 1);
    if (!plan || !c.used) {
        st = td_error_set(err, TD_ENOMEM, "out of memory");
        goto fail;
    }
    if ((st = model_alloc(&m, &arch, plan, &n_plan, err)) != TD_OK)
        goto fail;
    for (i = 0; i < n_plan; i++)
        if ((st = load_entry(&c, &plan[i], err)) != TD_OK)
            goto fail;
    for (k = 0; k < f->n_tensors; k++)
        if (!c.used[k]) {
            st = td_error_set(err, TD_EFORMAT,
                              "unexpected tensor \"%s\": TinyNet r=%g d=%g "
                              "w=%g has no such parameter",
                              f->tensors[k].name, arch.r, arch.d, arch.w);
            goto fail;
        }
    if (pre.std[0] > 0) {
        memcpy(m->mean, pre.mean, sizeof m->mean);
        memcpy(m->std, pre.std, sizeof m->std);
    }
    if (pre.interpolation[0])
        memcpy(m->interpolation, pre.interpolation, sizeof m->interpolation);
    if (pre.crop_pct > 0)
        m->crop_pct = pre.crop_pct;
    if (labels && (st = take_labels(m, labels, lwhere, err)) != TD_OK)
        goto fail;
    json_decref(labels);
    free(plan);
    free(c.used);
    *out = m;
    return TD_OK;
fail:
    json_decref(labels);
    free(plan);
    free(c.used);
    td_tinynet_free(m);
    td_error_prefix(err, "%s", path);
    return st;
}

td_status td_tinynet_load(td_tinynet **out, const char *path,
                          const td_tn_config *cfg, td_error *err)
{
    td_st_file f;
    td_status st;
    *out = NULL;
    if ((st = td_st_open(&f, path, err)) != TD_OK)
        return st;
    st = td_tinynet_from_st(out, &f, path, cfg, err);
    td_st_close(&f);
    return st;
}

/* ------------------------------------------------------------ saving */

static char *fmt_floats(const float *v, int n)
{
    json_t *a = json_array();
    char *s;
    int i;
    for (i = 0; i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

td_status td_tinynet_save(const td_tinynet *m, const char *path,
                          td_error *err)
{
    td_tinynet tmp = *m; /* to walk the plan without touching m */
    plan_entry *plan = malloc(MAX_PLAN * sizeof *plan);
    float *buf = NULL;
    td_st_writer *w = td_st_writer_new();
    char name[TD_TN_NAME_MAX + 16], num[64];
    char *labels = NULL, *mean = NULL, *std = NULL;
    int n_plan = 0, i, o, j;
    size_t off = 0;
    td_status st = TD_OK;
    if (!plan || !w) {
        st = td_error_set(err, TD_ENOMEM, "out of memory");
        goto done;
    }
    /* The plan's destination pointers are m's slab: read them back. */
    layout_model(&tmp, m->weights, plan, &n_plan);
    buf = malloc(m->n_weights * sizeof *buf);
    if (!buf) {
        st = td_error_set(err, TD_ENOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < n_plan && st == TD_OK; i++) {
        const plan_entry *e = &plan[i];
        float *wp = buf + off, *bp;
        int64_t vec[1];
        for (o = 0; o < e->out; o++)
            for (j = 0; j < e->kdim; j++)
                wp[(size_t)o * e->kdim + j] = e->w[dst_index(e, o, j)];
        off += (size_t)e->out * e->kdim;
        bp = buf + off;
        memcpy(bp, e->b, (size_t)e->out * sizeof *bp);
        off += (size_t)e->out;
        vec[0] = e->out;
        snprintf(name, sizeof name, "%s.weight", e->mod);
        st = td_st_writer_add(w, name, TD_DT_F32, e->ndim, e->shape, wp, err);
        snprintf(name, sizeof name, "%s.bias", e->mod);
        if (st == TD_OK)
            st = td_st_writer_add(w, name, TD_DT_F32, 1, vec, bp, err);
    }
    if (st != TD_OK)
        goto done;
#define META(k, v)                                                       \
    do {                                                                 \
        if (st == TD_OK)                                                 \
            st = td_st_writer_meta(w, k, v, err);                        \
    } while (0)
    META("kind", "tinynet");
    META("bn", "folded");
    snprintf(num, sizeof num, "%.17g", m->arch.r);
    META("r", num);
    snprintf(num, sizeof num, "%.17g", m->arch.d);
    META("d", num);
    snprintf(num, sizeof num, "%.17g", m->arch.w);
    META("w", num);
    snprintf(num, sizeof num, "%d", m->arch.resolution);
    META("resolution", num);
    snprintf(num, sizeof num, "%d", m->arch.classes);
    META("classes", num);
    mean = fmt_floats(m->mean, 3);
    std = fmt_floats(m->std, 3);
    if (!mean || !std) {
        st = td_error_set(err, TD_ENOMEM, "out of memory");
        goto done;
    }
    META("mean", mean);
    META("std", std);
    META("interpolation", m->interpolation);
    snprintf(num, sizeof num, "%.9g", m->crop_pct);
    META("crop_pct", num);
    if (m->labels) {
        json_t *a = json_array();
        for (i = 0; i < m->arch.classes; i++)
            json_array_append_new(a, json_string(m->labels[i]));
        labels = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        if (!labels) {
            st = td_error_set(err, TD_ENOMEM, "out of memory");
            goto done;
        }
        META("labels", labels);
    }
#undef META
    if (st == TD_OK)
        st = td_st_writer_write(w, path, err);
done:
    free(labels);
    free(mean);
    free(std);
    free(buf);
    free(plan);
    td_st_writer_free(w);
    return st;
}

/* ------------------------------------------------------------ forward */

/* Sizes (floats) of the three activation buffers and the largest channel
 * counts, for n images of h x w. */
typedef struct fwd_sizes {
    size_t a, b, c;   /* block in/out, expanded (and im2col), depthwise out */
    int maxc, maxr;   /* largest cmid/head, largest cse */
} fwd_sizes;

static size_t zmax(size_t x, size_t y) { return x > y ? x : y; }

static void fwd_sizes_of(const td_tn_arch *a, int n, int h, int w,
                         fwd_sizes *s)
{
    size_t hw;
    int i;
    memset(s, 0, sizeof *s);
    h = td_tn_conv_out(h, TD_TN_STEM_K, 2);
    w = td_tn_conv_out(w, TD_TN_STEM_K, 2);
    hw = (size_t)n * h * w;
    s->a = hw * a->stem;
    s->b = hw * TD_TN_STEM_K * TD_TN_STEM_K * 3;
    s->maxc = a->head;
    for (i = 0; i < a->n_blocks; i++) {
        const td_tn_block *b = &a->blocks[i];
        if (b->type == TD_TN_IR)
            s->b = zmax(s->b, hw * b->cmid);
        h = td_tn_conv_out(h, b->k, b->stride);
        w = td_tn_conv_out(w, b->k, b->stride);
        hw = (size_t)n * h * w;
        s->c = zmax(s->c, hw * b->cmid);
        s->a = zmax(s->a, hw * b->cout);
        if (b->cmid > s->maxc)
            s->maxc = b->cmid;
        if (b->cse > s->maxr)
            s->maxr = b->cse;
    }
    s->b = zmax(s->b, hw * a->head);
}

/* Sizes the forward pass accepts: every row count handed to BLAS must fit
 * an int (offsets are size_t everywhere else). */
#define MAX_BATCH 65536
#define MAX_SIDE 8192
static int sizes_ok(int n, int h, int w)
{
    size_t rows;
    if (n < 1 || h < 1 || w < 1 || n > MAX_BATCH || h > MAX_SIDE ||
        w > MAX_SIDE)
        return 0;
    /* rows after the stride-2 stem: the largest matrix height */
    rows = (size_t)n * (size_t)td_tn_conv_out(h, TD_TN_STEM_K, 2) *
           (size_t)td_tn_conv_out(w, TD_TN_STEM_K, 2);
    return rows <= (size_t)(INT32_MAX / 8);
}

size_t td_tinynet_scratch_bytes(const td_tinynet *m, int n, int h, int w)
{
    fwd_sizes s;
    if (!sizes_ok(n, h, w))
        return SIZE_MAX;
    fwd_sizes_of(&m->arch, n, h, w, &s);
    return td_arena_round(s.a * sizeof(float)) +
           td_arena_round(s.b * sizeof(float)) +
           td_arena_round(s.c * sizeof(float)) +
           td_arena_round((size_t)s.maxc * sizeof(float)) +
           td_arena_round(td_k_se_tmp(s.maxc, s.maxr) * sizeof(float)) +
           td_arena_round((size_t)n * m->arch.head * sizeof(float));
}

td_status td_tinynet_forward(const td_tinynet *m, td_arena *scratch,
                             const float *in, int n, int h, int w,
                             float *logits, td_error *err)
{
    const td_tn_arch *a = &m->arch;
    size_t mark = td_arena_mark(scratch), hw1;
    float *A, *B, *C, *sums, *setmp, *pooled;
    fwd_sizes s;
    int i, img, cin, hh, ww;
    if (!sizes_ok(n, h, w))
        return td_error_set(err, TD_EINVAL,
                            "input [%d,3,%d,%d]: batch 1..%d, sides 1..%d, "
                            "at most %d stem pixels in all",
                            n, h, w, MAX_BATCH, MAX_SIDE, INT32_MAX / 8);
    fwd_sizes_of(a, n, h, w, &s);
    A = td_arena_alloc(scratch, s.a * sizeof(float));
    B = td_arena_alloc(scratch, s.b * sizeof(float));
    C = td_arena_alloc(scratch, s.c * sizeof(float));
    sums = td_arena_alloc(scratch, (size_t)s.maxc * sizeof(float));
    setmp = td_arena_alloc(scratch, td_k_se_tmp(s.maxc, s.maxr) * sizeof(float));
    pooled = td_arena_alloc(scratch, (size_t)n * a->head * sizeof(float));
    if (!A || !B || !C || !sums || !setmp || !pooled) {
        td_arena_release(scratch, mark);
        return td_error_set(err, TD_ENOMEM,
                            "scratch arena too small for [%d,3,%d,%d]: needs "
                            "%zu bytes",
                            n, h, w, td_tinynet_scratch_bytes(m, n, h, w));
    }
    /* stem: im2col (B) . W -> A, bias, silu */
    td_k_im2col_nchw(in, n, 3, h, w, TD_TN_STEM_K, 2, B);
    hh = td_tn_conv_out(h, TD_TN_STEM_K, 2);
    ww = td_tn_conv_out(w, TD_TN_STEM_K, 2);
    hw1 = (size_t)hh * ww;
    td_sgemm((int)(n * hw1), a->stem, 27, B, 27, m->stem_w, a->stem, 0, A,
             a->stem);
    td_k_bias_act(A, n * hw1, a->stem, m->stem_b, 1, NULL);
    cin = a->stem;
    for (i = 0; i < a->n_blocks; i++) {
        const td_tn_block *b = &a->blocks[i];
        const td_tn_layer *l = &m->layers[i];
        const float *src = A;
        int ho = td_tn_conv_out(hh, b->k, b->stride);
        int wo = td_tn_conv_out(ww, b->k, b->stride);
        size_t hwo = (size_t)ho * wo;
        if (b->type == TD_TN_IR) { /* expand: A (cin) -> B (cmid) */
            td_sgemm((int)(n * hw1), b->cmid, cin, A, cin, l->exp_w, b->cmid,
                     0, B, b->cmid);
            td_k_bias_act(B, n * hw1, b->cmid, l->exp_b, 1, NULL);
            src = B;
        }
        for (img = 0; img < n; img++) { /* depthwise + SE: src -> C */
            float *dst = C + img * hwo * b->cmid;
            td_k_dwconv_silu(src + img * hw1 * b->cmid, hh, ww, b->cmid,
                             l->dw_w, l->dw_b, b->k, b->stride, dst, sums);
            td_k_se(dst, (int)hwo, b->cmid, sums, l->se_rw, l->se_rb,
                    l->se_ew, l->se_eb, b->cse, setmp);
        }
        /* project: C (cmid) -> A (cout); the residual input is already in
         * A, so beta = 1 adds it. */
        td_sgemm((int)(n * hwo), b->cout, b->cmid, C, b->cmid, l->proj_w,
                 b->cout, b->residual ? 1.0f : 0.0f, A, b->cout);
        td_k_bias_act(A, n * hwo, b->cout, l->proj_b, 0, NULL);
        cin = b->cout;
        hh = ho;
        ww = wo;
        hw1 = hwo;
    }
    /* head: A (cin) -> B (head), bias, silu, pooled per image */
    td_sgemm((int)(n * hw1), a->head, cin, A, cin, m->head_w, a->head, 0, B,
             a->head);
    for (img = 0; img < n; img++) {
        float *p = pooled + (size_t)img * a->head;
        int j;
        td_k_bias_act(B + img * hw1 * a->head, hw1, a->head, m->head_b, 1, p);
        for (j = 0; j < a->head; j++)
            p[j] /= (float)hw1;
    }
    td_sgemm(n, a->classes, a->head, pooled, a->head, m->fc_w, a->classes, 0,
             logits, a->classes);
    td_k_bias_act(logits, (size_t)n, a->classes, m->fc_b, 0, NULL);
    td_arena_release(scratch, mark);
    return TD_OK;
}
