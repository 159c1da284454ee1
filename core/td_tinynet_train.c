/* td_tinynet_train: trainable TinyNet, forward/backward, model file. */
#include "config.h"

#include "td_tinynet_train.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "td_rng.h"
#include "td_safetensors.h"

/* ------------------------------------------------------------ layout */

static size_t take(size_t *n, size_t count)
{
    size_t at = *n;
    *n += count;
    return at;
}

static void add_bn(td_tnt_model *m, td_tnt_bn *bn, size_t *np, size_t *ns,
                   int c)
{
    bn->c = c;
    bn->gamma = take(np, (size_t)c);
    bn->beta = take(np, (size_t)c);
    bn->mean = take(ns, (size_t)c);
    bn->var = take(ns, (size_t)c);
    m->bns[m->n_bn++] = *bn;
}

static void mark_decay(td_tnt_model *m, size_t off, size_t n)
{
    memset(m->decay + off, 1, n);
}

td_status td_tnt_init(td_tnt_model *m, const td_tn_arch *a, int in_ch,
                      int res, td_error *err)
{
    size_t np = 0, ns = 0;
    int h, w, last;
    memset(m, 0, sizeof *m);
    if (in_ch < 1 || in_ch > 3)
        return td_error_set(err, TD_EINVAL, "input channels %d: must be 1..3",
                            in_ch);
    if (res < 8 || res > 1024)
        return td_error_set(err, TD_EINVAL, "resolution %d: must be 8..1024",
                            res);
    m->arch = *a;
    m->in_ch = in_ch;
    m->res = res;
    m->stem_w_off = take(&np, (size_t)9 * in_ch * a->stem);
    add_bn(m, &m->stem_bn, &np, &ns, a->stem);
    h = m->stem_h = td_tl_conv_out(res, TD_TN_STEM_K, 2);
    w = m->stem_w = td_tl_conv_out(res, TD_TN_STEM_K, 2);
    last = a->stem;
    for (int i = 0; i < a->n_blocks; i++) {
        td_tnt_block *b = &m->blocks[i];
        const td_tn_block *ab = &a->blocks[i];
        b->b = *ab;
        b->h_in = h;
        b->w_in = w;
        h = b->h_out = td_tl_conv_out(h, ab->k, ab->stride);
        w = b->w_out = td_tl_conv_out(w, ab->k, ab->stride);
        if (ab->type == TD_TN_IR) {
            b->exp_w = take(&np, (size_t)ab->cin * ab->cmid);
            add_bn(m, &b->exp_bn, &np, &ns, ab->cmid);
        }
        b->dw_w = take(&np, (size_t)ab->k * ab->k * ab->cmid);
        add_bn(m, &b->dw_bn, &np, &ns, ab->cmid);
        b->se_wr = take(&np, (size_t)ab->cmid * ab->cse);
        b->se_br = take(&np, (size_t)ab->cse);
        b->se_we = take(&np, (size_t)ab->cse * ab->cmid);
        b->se_be = take(&np, (size_t)ab->cmid);
        b->proj_w = take(&np, (size_t)ab->cmid * ab->cout);
        add_bn(m, &b->proj_bn, &np, &ns, ab->cout);
        last = ab->cout;
    }
    m->final_h = h;
    m->final_w = w;
    m->head_w = take(&np, (size_t)last * a->head);
    add_bn(m, &m->head_bn, &np, &ns, a->head);
    m->fc_w = take(&np, (size_t)a->head * a->classes);
    m->fc_b = take(&np, (size_t)a->classes);
    m->n_params = np;
    m->n_stats = ns;
    m->params = calloc(np, sizeof *m->params);
    m->stats = calloc(ns, sizeof *m->stats);
    m->decay = calloc(np, 1);
    if (!m->params || !m->stats || !m->decay) {
        td_tnt_free(m);
        return td_error_set(err, TD_ENOMEM, "model of %zu parameters", np);
    }
    mark_decay(m, m->stem_w_off, (size_t)9 * in_ch * a->stem);
    for (int i = 0; i < a->n_blocks; i++) {
        const td_tnt_block *b = &m->blocks[i];
        const td_tn_block *ab = &b->b;
        if (ab->type == TD_TN_IR)
            mark_decay(m, b->exp_w, (size_t)ab->cin * ab->cmid);
        mark_decay(m, b->dw_w, (size_t)ab->k * ab->k * ab->cmid);
        mark_decay(m, b->se_wr, (size_t)ab->cmid * ab->cse);
        mark_decay(m, b->se_we, (size_t)ab->cse * ab->cmid);
        mark_decay(m, b->proj_w, (size_t)ab->cmid * ab->cout);
    }
    mark_decay(m, m->head_w, (size_t)last * a->head);
    mark_decay(m, m->fc_w, (size_t)a->head * a->classes);
    for (int i = 0; i < m->n_bn; i++)
        for (int j = 0; j < m->bns[i].c; j++)
            m->stats[m->bns[i].var + j] = 1;
    return TD_OK;
}

void td_tnt_free(td_tnt_model *m)
{
    free(m->params);
    free(m->stats);
    free(m->decay);
    m->params = m->stats = NULL;
    m->decay = NULL;
}

static void fill_normal(float *p, size_t n, double sd, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(sd * td_rng_normal(rng));
}

static void init_bn(td_tnt_model *m, const td_tnt_bn *bn)
{
    for (int j = 0; j < bn->c; j++) {
        m->params[bn->gamma + j] = 1;
        m->params[bn->beta + j] = 0;
        m->stats[bn->mean + j] = 0;
        m->stats[bn->var + j] = 1;
    }
}

void td_tnt_init_weights(td_tnt_model *m, uint64_t seed)
{
    const td_tn_arch *a = &m->arch;
    uint64_t rng = td_rng_mix(seed, 0x5eed, 0x1417);
    float *p = m->params;
    int last = a->stem;
    memset(p, 0, m->n_params * sizeof *p);
    /* fan_out = k*k*out_channels/groups */
    fill_normal(p + m->stem_w_off, (size_t)9 * m->in_ch * a->stem,
                sqrt(2.0 / (9.0 * a->stem)), &rng);
    for (int i = 0; i < a->n_blocks; i++) {
        const td_tnt_block *b = &m->blocks[i];
        const td_tn_block *ab = &b->b;
        if (ab->type == TD_TN_IR)
            fill_normal(p + b->exp_w, (size_t)ab->cin * ab->cmid,
                        sqrt(2.0 / ab->cmid), &rng);
        fill_normal(p + b->dw_w, (size_t)ab->k * ab->k * ab->cmid,
                    sqrt(2.0 / (ab->k * ab->k)), &rng);
        fill_normal(p + b->se_wr, (size_t)ab->cmid * ab->cse,
                    sqrt(2.0 / ab->cse), &rng);
        fill_normal(p + b->se_we, (size_t)ab->cse * ab->cmid,
                    sqrt(2.0 / ab->cmid), &rng);
        fill_normal(p + b->proj_w, (size_t)ab->cmid * ab->cout,
                    sqrt(2.0 / ab->cout), &rng);
        last = ab->cout;
    }
    fill_normal(p + m->head_w, (size_t)last * a->head, sqrt(2.0 / a->head),
                &rng);
    {
        double range = 1.0 / sqrt((double)a->head);
        for (size_t i = 0; i < (size_t)a->head * a->classes; i++)
            p[m->fc_w + i] =
                (float)(range * (2.0 * td_rng_float(&rng) - 1.0));
    }
    for (int i = 0; i < m->n_bn; i++)
        init_bn(m, &m->bns[i]);
}

/* ------------------------------------------------------------ workspace */

typedef struct carve {
    float *base; /* NULL: only count */
    size_t n;
} carve;

static float *cv(carve *c, size_t count)
{
    float *p = c->base ? c->base + c->n : NULL;
    c->n += (count + 15) & ~(size_t)15; /* 64-byte steps */
    return p;
}

static void carve_cba(carve *c, td_tnt_cba *s, size_t mc, int ch, int act)
{
    s->conv = cv(c, mc);
    s->bn = cv(c, mc);
    s->act = act ? cv(c, mc) : NULL;
    s->mean = cv(c, (size_t)ch);
    s->rstd = cv(c, (size_t)ch);
    s->var = cv(c, (size_t)ch);
}

static size_t maxz(size_t a, size_t b) { return a > b ? a : b; }

/* Assign every pointer of ws from c (or just count when c->base is NULL). */
static void layout_ws(td_tnt_ws *ws, const td_tnt_model *m, carve *c)
{
    const td_tn_arch *a = &m->arch;
    size_t nb = (size_t)ws->max_batch, big, se_s = 0;
    size_t m0 = nb * m->stem_h * m->stem_w;
    size_t mf = nb * m->final_h * m->final_w;
    int k = 0, last = a->stem;
    ws->cols = cv(c, m0 * 9 * m->in_ch);
    carve_cba(c, &ws->stem, m0 * a->stem, a->stem, 1);
    ws->cba[k++] = &ws->stem;
    big = m0 * a->stem;
    for (int i = 0; i < a->n_blocks; i++) {
        const td_tnt_block *b = &m->blocks[i];
        const td_tn_block *ab = &b->b;
        td_tnt_bacts *s = &ws->blocks[i];
        size_t mi = nb * b->h_in * b->w_in, mo = nb * b->h_out * b->w_out;
        if (ab->type == TD_TN_IR) {
            carve_cba(c, &s->exp, mi * ab->cmid, ab->cmid, 1);
            ws->cba[k++] = &s->exp;
        }
        carve_cba(c, &s->dw, mo * ab->cmid, ab->cmid, 1);
        ws->cba[k++] = &s->dw;
        s->se.pooled = cv(c, nb * ab->cmid);
        s->se.r_pre = cv(c, nb * ab->cse);
        s->se.r_act = cv(c, nb * ab->cse);
        s->se.gate = cv(c, nb * ab->cmid);
        s->se_out = cv(c, mo * ab->cmid);
        carve_cba(c, &s->proj, mo * ab->cout, ab->cout, 0);
        ws->cba[k++] = &s->proj;
        s->out = ab->residual ? cv(c, mo * ab->cout) : s->proj.bn;
        big = maxz(big, maxz(mi * ab->cmid, mo * ab->cmid));
        big = maxz(big, maxz(mi * ab->cin, mo * ab->cout));
        se_s = maxz(se_s, td_tl_se_scratch((int)nb, ab->cmid, ab->cse));
        last = ab->cout;
    }
    carve_cba(c, &ws->head, mf * a->head, a->head, 1);
    ws->cba[k++] = &ws->head;
    big = maxz(big, maxz(mf * a->head, mf * last));
    ws->pooled = cv(c, nb * a->head);
    ws->logits = cv(c, nb * a->classes);
    ws->grad = cv(c, m->n_params);
    for (int i = 0; i < 3; i++)
        ws->g[i] = cv(c, big);
    ws->dpooled = cv(c, nb * a->head);
    ws->se_scratch = cv(c, se_s);
}

td_status td_tnt_ws_init(td_tnt_ws *ws, const td_tnt_model *m, int max_batch,
                         td_error *err)
{
    carve c = {NULL, 0};
    memset(ws, 0, sizeof *ws);
    if (max_batch < 1)
        return td_error_set(err, TD_EINVAL, "batch %d: must be >= 1",
                            max_batch);
    ws->max_batch = max_batch;
    layout_ws(ws, m, &c);
    ws->mem = aligned_alloc(64, c.n * sizeof(float));
    if (!ws->mem)
        return td_error_set(err, TD_ENOMEM,
                            "workspace of %zu MB for batch %d",
                            c.n * sizeof(float) >> 20, max_batch);
    memset(ws->mem, 0, c.n * sizeof(float));
    c.base = ws->mem;
    c.n = 0;
    layout_ws(ws, m, &c);
    return TD_OK;
}

void td_tnt_ws_free(td_tnt_ws *ws)
{
    free(ws->mem);
    memset(ws, 0, sizeof *ws);
}

/* ------------------------------------------------------------ forward */

static void cba_forward(const float *P, const float *S, const td_tnt_bn *bn,
                        td_tnt_cba *s, size_t rows, int train)
{
    if (train)
        td_tl_bn_forward_train(s->bn, s->mean, s->rstd, s->var, s->conv,
                               P + bn->gamma, P + bn->beta, (int)rows, bn->c,
                               TD_TN_BN_EPS);
    else
        td_tl_bn_forward_eval(s->bn, s->conv, P + bn->gamma, P + bn->beta,
                              S + bn->mean, S + bn->var, (int)rows, bn->c,
                              TD_TN_BN_EPS);
    if (s->act)
        td_tl_silu_forward(s->act, s->bn, rows * bn->c);
}

void td_tnt_forward(const td_tnt_model *m, td_tnt_ws *ws,
                    const float *params, const float *stats, const float *in,
                    int n, int train)
{
    const td_tn_arch *a = &m->arch;
    const float *P = params, *x;
    size_t rows = (size_t)n * m->stem_h * m->stem_w;
    int last = a->stem;
    ws->n = n;
    /* in: (N, res, res, in_ch) -> stem: (N, stem_h, stem_w, 32) */
    td_tl_conv_forward(ws->stem.conv, ws->cols, in, P + m->stem_w_off, n,
                       m->res, m->res, m->in_ch, a->stem, TD_TN_STEM_K, 2);
    cba_forward(P, stats, &m->stem_bn, &ws->stem, rows, train);
    x = ws->stem.act;
    for (int i = 0; i < a->n_blocks; i++) {
        const td_tnt_block *b = &m->blocks[i];
        const td_tn_block *ab = &b->b;
        td_tnt_bacts *s = &ws->blocks[i];
        size_t mi = (size_t)n * b->h_in * b->w_in;
        size_t mo = (size_t)n * b->h_out * b->w_out;
        const float *dwin = x;
        s->in = x;
        if (ab->type == TD_TN_IR) {
            /* (Mi, cin) -> (Mi, cmid) */
            td_tl_linear_forward(s->exp.conv, x, P + b->exp_w, NULL, (int)mi,
                                 ab->cin, ab->cmid);
            cba_forward(P, stats, &b->exp_bn, &s->exp, mi, train);
            dwin = s->exp.act;
        }
        /* (N, h_in, w_in, cmid) -> (N, h_out, w_out, cmid) */
        td_tl_dw_forward(s->dw.conv, dwin, P + b->dw_w, n, b->h_in, b->w_in,
                         ab->cmid, ab->k, ab->stride);
        cba_forward(P, stats, &b->dw_bn, &s->dw, mo, train);
        td_tl_se_forward(s->se_out, &s->se, s->dw.act, P + b->se_wr,
                         P + b->se_br, P + b->se_we, P + b->se_be, n,
                         b->h_out * b->w_out, ab->cmid, ab->cse);
        /* (Mo, cmid) -> (Mo, cout) */
        td_tl_linear_forward(s->proj.conv, s->se_out, P + b->proj_w, NULL,
                             (int)mo, ab->cmid, ab->cout);
        cba_forward(P, stats, &b->proj_bn, &s->proj, mo, train);
        if (ab->residual)
            for (size_t j = 0; j < mo * ab->cout; j++)
                s->out[j] = s->proj.bn[j] + x[j];
        x = s->out;
        last = ab->cout;
    }
    rows = (size_t)n * m->final_h * m->final_w;
    td_tl_linear_forward(ws->head.conv, x, P + m->head_w, NULL, (int)rows,
                         last, a->head);
    cba_forward(P, stats, &m->head_bn, &ws->head, rows, train);
    td_tl_gap_forward(ws->pooled, ws->head.act, n, m->final_h * m->final_w,
                      a->head);
    td_tl_linear_forward(ws->logits, ws->pooled, P + m->fc_w, P + m->fc_b, n,
                         a->head, a->classes);
}

/* ------------------------------------------------------------ backward */

/* d (rows, c) is the gradient of the block's output (after SiLU when the
 * unit has one; overwritten); dconv receives the gradient of the conv
 * output. */
static void cba_backward(const float *P, float *G, const td_tnt_bn *bn,
                         const td_tnt_cba *s, float *d, float *dconv,
                         size_t rows)
{
    if (s->act)
        td_tl_silu_backward(d, d, s->bn, rows * bn->c);
    td_tl_bn_backward(dconv, G + bn->gamma, G + bn->beta, d, s->conv,
                      s->mean, s->rstd, P + bn->gamma, (int)rows, bn->c);
}

void td_tnt_backward(const td_tnt_model *m, td_tnt_ws *ws,
                     const float *params, const float *dlogits)
{
    const td_tn_arch *a = &m->arch;
    const float *P = params;
    float *G = ws->grad, *A = ws->g[0], *B = ws->g[1], *C = ws->g[2], *t;
    int n = ws->n, last = a->n_blocks ? a->blocks[a->n_blocks - 1].cout
                                      : a->stem;
    size_t rows = (size_t)n * m->final_h * m->final_w;
    const float *xlast =
        a->n_blocks ? ws->blocks[a->n_blocks - 1].out : ws->stem.act;

    td_tl_linear_backward(ws->dpooled, G + m->fc_w, G + m->fc_b, dlogits,
                          ws->pooled, P + m->fc_w, n, a->head, a->classes);
    td_tl_gap_backward(A, ws->dpooled, n, m->final_h * m->final_w, a->head);
    cba_backward(P, G, &m->head_bn, &ws->head, A, B, rows);
    td_tl_linear_backward(A, G + m->head_w, NULL, B, xlast, P + m->head_w,
                          (int)rows, last, a->head);
    /* A holds the gradient of the current block's output */
    for (int i = a->n_blocks - 1; i >= 0; i--) {
        const td_tnt_block *b = &m->blocks[i];
        const td_tn_block *ab = &b->b;
        const td_tnt_bacts *s = &ws->blocks[i];
        size_t mi = (size_t)n * b->h_in * b->w_in;
        size_t mo = (size_t)n * b->h_out * b->w_out;
        const float *dwin = ab->type == TD_TN_IR ? s->exp.act : s->in;
        cba_backward(P, G, &b->proj_bn, &s->proj, A, B, mo);
        td_tl_linear_backward(C, G + b->proj_w, NULL, B, s->se_out,
                              P + b->proj_w, (int)mo, ab->cmid, ab->cout);
        td_tl_se_backward(B, G + b->se_wr, G + b->se_br, G + b->se_we,
                          G + b->se_be, C, s->dw.act, &s->se, P + b->se_wr,
                          P + b->se_we, n, b->h_out * b->w_out, ab->cmid,
                          ab->cse, ws->se_scratch);
        cba_backward(P, G, &b->dw_bn, &s->dw, B, C, mo);
        td_tl_dw_backward(B, G + b->dw_w, C, dwin, P + b->dw_w, n, b->h_in,
                          b->w_in, ab->cmid, ab->k, ab->stride);
        if (ab->type == TD_TN_IR) {
            cba_backward(P, G, &b->exp_bn, &s->exp, B, C, mi);
            td_tl_linear_backward(B, G + b->exp_w, NULL, C, s->in,
                                  P + b->exp_w, (int)mi, ab->cin, ab->cmid);
        }
        if (ab->residual) /* proj output was only touched via A's copy */
            for (size_t j = 0; j < mi * ab->cin; j++)
                B[j] += A[j];
        t = A;
        A = B;
        B = t;
    }
    rows = (size_t)n * m->stem_h * m->stem_w;
    cba_backward(P, G, &m->stem_bn, &ws->stem, A, B, rows);
    td_tl_conv_backward(NULL, G + m->stem_w_off, NULL, B, ws->cols,
                        P + m->stem_w_off, n, m->res, m->res, m->in_ch,
                        a->stem, TD_TN_STEM_K, 2);
}

void td_tnt_update_running(const td_tnt_model *m, float *stats,
                           td_tnt_ws *const *ws, int nws, float momentum)
{
    float mean[2048], var[2048];
    for (int i = 0; i < m->n_bn; i++) {
        const td_tnt_bn *bn = &m->bns[i];
        for (int j0 = 0; j0 < bn->c; j0 += 2048) {
            int cnt = bn->c - j0 < 2048 ? bn->c - j0 : 2048;
            for (int j = 0; j < cnt; j++) {
                double sm = 0, sv = 0;
                for (int t = 0; t < nws; t++) {
                    sm += ws[t]->cba[i]->mean[j0 + j];
                    sv += ws[t]->cba[i]->var[j0 + j];
                }
                mean[j] = (float)(sm / nws);
                var[j] = (float)(sv / nws);
            }
            td_tl_bn_running(stats + bn->mean + j0, stats + bn->var + j0,
                             mean, var, cnt, momentum);
        }
    }
}

/* ------------------------------------------------------------ model file */

/* Exported tensors: each owns a malloc'd buffer until the write. */
typedef struct exporter {
    td_st_writer *w;
    float *bufs[4 * TD_TN_MAX_BLOCKS * 8 + 32];
    int nbuf;
    td_status st;
    td_error *err;
} exporter;

static float *ex_buf(exporter *x, size_t n)
{
    float *b;
    if (x->st != TD_OK)
        return NULL;
    b = malloc((n ? n : 1) * sizeof *b);
    if (!b || x->nbuf == (int)(sizeof x->bufs / sizeof x->bufs[0])) {
        free(b);
        x->st = td_error_set(x->err, TD_ENOMEM, "exporting the model");
        return NULL;
    }
    x->bufs[x->nbuf++] = b;
    return b;
}

static void ex_add(exporter *x, const char *name, int ndim,
                   const int64_t *shape, const float *data)
{
    if (x->st != TD_OK)
        return;
    x->st = td_st_writer_add(x->w, name, TD_DT_F32, ndim, shape, data,
                             x->err);
}

/* src (rows, cols) -> (cols, rows), stored under name with shape. */
static void ex_transposed(exporter *x, const char *name, const float *src,
                          int rows, int cols, int ndim, const int64_t *shape)
{
    float *b = ex_buf(x, (size_t)rows * cols);
    if (!b)
        return;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            b[(size_t)j * rows + i] = src[(size_t)i * cols + j];
    ex_add(x, name, ndim, shape, b);
}

static void ex_bn(exporter *x, const td_tnt_model *m, const char *prefix,
                  const td_tnt_bn *bn)
{
    char name[TD_TN_NAME_MAX + 16];
    int64_t shape[1] = {bn->c};
    snprintf(name, sizeof name, "%s.weight", prefix);
    ex_add(x, name, 1, shape, m->params + bn->gamma);
    snprintf(name, sizeof name, "%s.bias", prefix);
    ex_add(x, name, 1, shape, m->params + bn->beta);
    snprintf(name, sizeof name, "%s.running_mean", prefix);
    ex_add(x, name, 1, shape, m->stats + bn->mean);
    snprintf(name, sizeof name, "%s.running_var", prefix);
    ex_add(x, name, 1, shape, m->stats + bn->var);
}

static void blk(char *buf, size_t len, const td_tn_block *b, const char *part)
{
    snprintf(buf, len, "blocks.%d.%d.%s", b->stage, b->index, part);
}

static void meta_num(exporter *x, const char *key, double v)
{
    char s[64];
    snprintf(s, sizeof s, "%.10g", v);
    if (strtod(s, NULL) != v)
        snprintf(s, sizeof s, "%.17g", v);
    if (x->st == TD_OK)
        x->st = td_st_writer_meta(x->w, key, s, x->err);
}

static void meta_str(exporter *x, const char *key, const char *v)
{
    if (x->st == TD_OK)
        x->st = td_st_writer_meta(x->w, key, v, x->err);
}

td_status td_tnt_save(const td_tnt_model *m, const td_tnt_meta *meta,
                      const char *path, td_error *err)
{
    const td_tn_arch *a = &m->arch;
    exporter x;
    char name[TD_TN_NAME_MAX + 16], part[TD_TN_NAME_MAX];
    int last = a->stem;
    memset(&x, 0, sizeof x);
    x.err = err;
    x.w = td_st_writer_new();
    if (!x.w)
        return td_error_set(err, TD_ENOMEM, "safetensors writer");
    /* stem: (ky,kx,ci, co) -> [co, 3, ky, kx]; grey spread over RGB */
    {
        int64_t shape[4] = {a->stem, 3, 3, 3};
        float *b = ex_buf(&x, (size_t)a->stem * 27);
        if (b) {
            for (int o = 0; o < a->stem; o++)
                for (int ch = 0; ch < 3; ch++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int ci = m->in_ch == 1 ? 0 : ch;
                            float v = m->params[m->stem_w_off +
                                                ((size_t)(ky * 3 + kx) *
                                                     m->in_ch + ci) *
                                                    a->stem + o];
                            b[((o * 3 + ch) * 3 + ky) * 3 + kx] =
                                m->in_ch == 1 ? v / 3.0f : v;
                        }
            ex_add(&x, "conv_stem.weight", 4, shape, b);
        }
        ex_bn(&x, m, "bn1", &m->stem_bn);
    }
    for (int i = 0; i < a->n_blocks; i++) {
        const td_tnt_block *b = &m->blocks[i];
        const td_tn_block *ab = &b->b;
        td_tn_block_names nm = td_tn_names_for(ab);
        if (ab->type == TD_TN_IR) {
            int64_t sh[4] = {ab->cmid, ab->cin, 1, 1};
            blk(part, sizeof part, ab, nm.expand_conv);
            snprintf(name, sizeof name, "%s.weight", part);
            ex_transposed(&x, name, m->params + b->exp_w, ab->cin, ab->cmid,
                          4, sh);
            blk(part, sizeof part, ab, nm.expand_bn);
            ex_bn(&x, m, part, &b->exp_bn);
        }
        {
            int64_t sh[4] = {ab->cmid, 1, ab->k, ab->k};
            blk(part, sizeof part, ab, nm.dw_conv);
            snprintf(name, sizeof name, "%s.weight", part);
            ex_transposed(&x, name, m->params + b->dw_w, ab->k * ab->k,
                          ab->cmid, 4, sh);
            blk(part, sizeof part, ab, nm.dw_bn);
            ex_bn(&x, m, part, &b->dw_bn);
        }
        {
            int64_t shr[4] = {ab->cse, ab->cmid, 1, 1}, sbr[1] = {ab->cse};
            int64_t she[4] = {ab->cmid, ab->cse, 1, 1}, sbe[1] = {ab->cmid};
            blk(part, sizeof part, ab, "se.conv_reduce.weight");
            ex_transposed(&x, part, m->params + b->se_wr, ab->cmid, ab->cse,
                          4, shr);
            blk(part, sizeof part, ab, "se.conv_reduce.bias");
            ex_add(&x, part, 1, sbr, m->params + b->se_br);
            blk(part, sizeof part, ab, "se.conv_expand.weight");
            ex_transposed(&x, part, m->params + b->se_we, ab->cse, ab->cmid,
                          4, she);
            blk(part, sizeof part, ab, "se.conv_expand.bias");
            ex_add(&x, part, 1, sbe, m->params + b->se_be);
        }
        {
            int64_t sh[4] = {ab->cout, ab->cmid, 1, 1};
            blk(part, sizeof part, ab, nm.proj_conv);
            snprintf(name, sizeof name, "%s.weight", part);
            ex_transposed(&x, name, m->params + b->proj_w, ab->cmid,
                          ab->cout, 4, sh);
            blk(part, sizeof part, ab, nm.proj_bn);
            ex_bn(&x, m, part, &b->proj_bn);
        }
        last = ab->cout;
    }
    {
        int64_t sh[4] = {a->head, last, 1, 1}, sw[2] = {a->classes, a->head};
        int64_t sb[1] = {a->classes};
        ex_transposed(&x, "conv_head.weight", m->params + m->head_w, last,
                      a->head, 4, sh);
        ex_bn(&x, m, "bn2", &m->head_bn);
        ex_transposed(&x, "classifier.weight", m->params + m->fc_w, a->head,
                      a->classes, 2, sw);
        ex_add(&x, "classifier.bias", 1, sb, m->params + m->fc_b);
    }
    meta_str(&x, "kind", "tinynet");
    meta_num(&x, "r", a->r);
    meta_num(&x, "d", a->d);
    meta_num(&x, "w", a->w);
    meta_num(&x, "resolution", m->res);
    meta_num(&x, "classes", a->classes);
    meta_num(&x, "channels", m->in_ch);
    meta_str(&x, "interpolation", "bilinear");
    meta_str(&x, "crop_pct", "1.0");
    meta_str(&x, "bn", "unfolded");
    if (meta) {
        char s[128];
        snprintf(s, sizeof s, "[%.8g, %.8g, %.8g]", meta->mean, meta->mean,
                 meta->mean);
        meta_str(&x, "mean", s);
        snprintf(s, sizeof s, "[%.8g, %.8g, %.8g]", meta->std, meta->std,
                 meta->std);
        meta_str(&x, "std", s);
        if (meta->labels && x.st == TD_OK) {
            json_t *arr = json_array();
            char *txt;
            for (int i = 0; i < a->classes; i++)
                json_array_append_new(arr, json_string(meta->labels[i]));
            txt = json_dumps(arr, JSON_COMPACT | JSON_ENSURE_ASCII);
            json_decref(arr);
            if (!txt)
                x.st = td_error_set(err, TD_ENOMEM, "labels");
            else {
                meta_str(&x, "labels", txt);
                free(txt);
            }
        }
        for (int i = 0; meta->extra && meta->extra[i]; i += 2)
            meta_str(&x, meta->extra[i], meta->extra[i + 1]);
    }
    if (x.st == TD_OK)
        x.st = td_st_writer_write(x.w, path, err);
    td_st_writer_free(x.w);
    for (int i = 0; i < x.nbuf; i++)
        free(x.bufs[i]);
    return x.st;
}

/* ------------------------------------------------------------ reading */

static double meta_double(const td_st_file *f, const char *key, int *ok)
{
    const char *v = td_st_meta_get(f, key);
    char *end;
    double d;
    if (!v) {
        *ok = 0;
        return 0;
    }
    d = strtod(v, &end);
    if (end == v || *end)
        *ok = 0;
    return d;
}

/* Copy tensor `name` of `shape` into dst, un-transposing (rows, cols) when
 * transpose is set (file holds (cols, rows)). */
static td_status get_tensor(const td_st_file *f, const char *name, int ndim,
                            const int64_t *shape, float *dst, int transpose,
                            int rows, int cols, td_error *err)
{
    const td_st_tensor *t;
    td_status st = td_st_expect(f, name, TD_DT_F32, ndim, shape, &t, err);
    const unsigned char *p;
    if (st != TD_OK)
        return st;
    p = t->data;
    for (size_t i = 0; i < t->numel; i++) {
        float v;
        memcpy(&v, p + i * 4, 4);
        if (!isfinite(v))
            return td_error_set(err, TD_EFORMAT,
                                "tensor %s: non-finite value at %zu", name, i);
        if (transpose) {
            size_t j = i / (size_t)rows, r = i % (size_t)rows;
            dst[r * (size_t)cols + j] = v;
        } else
            dst[i] = v;
    }
    return TD_OK;
}

static td_status get_bn(const td_st_file *f, td_tnt_model *m,
                        const char *prefix, const td_tnt_bn *bn,
                        td_error *err)
{
    static const char *leaf[4] = {"weight", "bias", "running_mean",
                                  "running_var"};
    char name[TD_TN_NAME_MAX + 16];
    int64_t shape[1] = {bn->c};
    float *dst[4] = {m->params + bn->gamma, m->params + bn->beta,
                     m->stats + bn->mean, m->stats + bn->var};
    for (int i = 0; i < 4; i++) {
        td_status st;
        snprintf(name, sizeof name, "%s.%s", prefix, leaf[i]);
        st = get_tensor(f, name, 1, shape, dst[i], 0, 0, 0, err);
        if (st != TD_OK)
            return st;
    }
    return TD_OK;
}

static td_status parse_first(const td_st_file *f, const char *key, float *out,
                             td_error *err)
{
    const char *v = td_st_meta_get(f, key);
    if (!out)
        return TD_OK;
    if (!v)
        return td_error_set(err, TD_EFORMAT, "metadata %s missing", key);
    while (*v == '[' || *v == ' ')
        v++;
    *out = strtof(v, NULL);
    return TD_OK;
}

td_status td_tnt_load(td_tnt_model *m, const char *path, float *mean,
                      float *std, td_error *err)
{
    td_st_file f;
    td_tn_arch a;
    td_status st;
    int ok = 1, res, classes, ch;
    double r, d, w;
    char name[TD_TN_NAME_MAX + 16], part[TD_TN_NAME_MAX];
    int last;
    memset(m, 0, sizeof *m);
    st = td_st_open(&f, path, err);
    if (st != TD_OK)
        return st;
    st = td_st_expect_meta(&f, "kind", "tinynet", err);
    if (st != TD_OK)
        goto out;
    r = meta_double(&f, "r", &ok);
    d = meta_double(&f, "d", &ok);
    w = meta_double(&f, "w", &ok);
    res = (int)meta_double(&f, "resolution", &ok);
    classes = (int)meta_double(&f, "classes", &ok);
    ch = td_st_meta_get(&f, "channels") ? (int)meta_double(&f, "channels", &ok)
                                        : 3;
    if (!ok) {
        st = td_error_set(err, TD_EFORMAT,
                          "metadata r, d, w, resolution, classes: missing or "
                          "not numbers");
        goto out;
    }
    st = td_tn_arch_build(&a, r, d, w, res, classes, err);
    if (st == TD_OK)
        st = td_tnt_init(m, &a, ch == 1 ? 1 : 3, res, err);
    if (st != TD_OK)
        goto out;
    st = parse_first(&f, "mean", mean, err);
    if (st == TD_OK)
        st = parse_first(&f, "std", std, err);
    /* stem [co, 3, 3, 3]; a grey model sums the three channels back */
    if (st == TD_OK) {
        int64_t shape[4] = {a.stem, 3, 3, 3};
        float *b = malloc((size_t)a.stem * 27 * sizeof *b);
        if (!b)
            st = td_error_set(err, TD_ENOMEM, "stem");
        else
            st = get_tensor(&f, "conv_stem.weight", 4, shape, b, 0, 0, 0, err);
        if (st == TD_OK)
            for (int o = 0; o < a.stem; o++)
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++)
                        for (int ci = 0; ci < m->in_ch; ci++) {
                            float v = 0;
                            for (int c = 0; c < 3; c++)
                                if (m->in_ch == 3 ? c == ci : 1)
                                    v += b[((o * 3 + c) * 3 + ky) * 3 + kx];
                            m->params[m->stem_w_off +
                                      ((size_t)(ky * 3 + kx) * m->in_ch + ci) *
                                          a.stem + o] = v;
                        }
        free(b);
    }
    if (st == TD_OK)
        st = get_bn(&f, m, "bn1", &m->stem_bn, err);
    last = a.stem;
    for (int i = 0; i < a.n_blocks && st == TD_OK; i++) {
        const td_tnt_block *b = &m->blocks[i];
        const td_tn_block *ab = &b->b;
        td_tn_block_names nm = td_tn_names_for(ab);
        if (ab->type == TD_TN_IR) {
            int64_t sh[4] = {ab->cmid, ab->cin, 1, 1};
            blk(part, sizeof part, ab, nm.expand_conv);
            snprintf(name, sizeof name, "%s.weight", part);
            st = get_tensor(&f, name, 4, sh, m->params + b->exp_w, 1,
                            ab->cin, ab->cmid, err);
            blk(part, sizeof part, ab, nm.expand_bn);
            if (st == TD_OK)
                st = get_bn(&f, m, part, &b->exp_bn, err);
        }
        if (st == TD_OK) {
            int64_t sh[4] = {ab->cmid, 1, ab->k, ab->k};
            blk(part, sizeof part, ab, nm.dw_conv);
            snprintf(name, sizeof name, "%s.weight", part);
            st = get_tensor(&f, name, 4, sh, m->params + b->dw_w, 1,
                            ab->k * ab->k, ab->cmid, err);
            blk(part, sizeof part, ab, nm.dw_bn);
            if (st == TD_OK)
                st = get_bn(&f, m, part, &b->dw_bn, err);
        }
        if (st == TD_OK) {
            int64_t shr[4] = {ab->cse, ab->cmid, 1, 1}, sbr[1] = {ab->cse};
            int64_t she[4] = {ab->cmid, ab->cse, 1, 1}, sbe[1] = {ab->cmid};
            blk(part, sizeof part, ab, "se.conv_reduce.weight");
            st = get_tensor(&f, part, 4, shr, m->params + b->se_wr, 1,
                            ab->cmid, ab->cse, err);
            blk(part, sizeof part, ab, "se.conv_reduce.bias");
            if (st == TD_OK)
                st = get_tensor(&f, part, 1, sbr, m->params + b->se_br, 0, 0,
                                0, err);
            blk(part, sizeof part, ab, "se.conv_expand.weight");
            if (st == TD_OK)
                st = get_tensor(&f, part, 4, she, m->params + b->se_we, 1,
                                ab->cse, ab->cmid, err);
            blk(part, sizeof part, ab, "se.conv_expand.bias");
            if (st == TD_OK)
                st = get_tensor(&f, part, 1, sbe, m->params + b->se_be, 0, 0,
                                0, err);
        }
        if (st == TD_OK) {
            int64_t sh[4] = {ab->cout, ab->cmid, 1, 1};
            blk(part, sizeof part, ab, nm.proj_conv);
            snprintf(name, sizeof name, "%s.weight", part);
            st = get_tensor(&f, name, 4, sh, m->params + b->proj_w, 1,
                            ab->cmid, ab->cout, err);
            blk(part, sizeof part, ab, nm.proj_bn);
            if (st == TD_OK)
                st = get_bn(&f, m, part, &b->proj_bn, err);
        }
        last = ab->cout;
    }
    if (st == TD_OK) {
        int64_t sh[4] = {a.head, last, 1, 1}, sw[2] = {a.classes, a.head};
        int64_t sb[1] = {a.classes};
        st = get_tensor(&f, "conv_head.weight", 4, sh, m->params + m->head_w,
                        1, last, a.head, err);
        if (st == TD_OK)
            st = get_bn(&f, m, "bn2", &m->head_bn, err);
        if (st == TD_OK)
            st = get_tensor(&f, "classifier.weight", 2, sw,
                            m->params + m->fc_w, 1, a.head, a.classes, err);
        if (st == TD_OK)
            st = get_tensor(&f, "classifier.bias", 1, sb, m->params + m->fc_b,
                            0, 0, 0, err);
    }
out:
    if (st != TD_OK) {
        td_error_prefix(err, "%s", path);
        td_tnt_free(m);
    }
    td_st_close(&f);
    return st;
}
