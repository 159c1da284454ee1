/* td_bnn_train: trainable binary CNN, forward/backward, MST regulariser. */
#include "config.h"

#include "td_bnn_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "td_bitpack.h"
#include "td_mst.h"
#include "td_rng.h"
#include "td_train_layers.h"

/* ------------------------------------------------------------ layout */

static size_t take(size_t *n, size_t count)
{
    size_t at = *n;
    *n += count;
    return at;
}

static void add_bn(td_bnt_bn *bn, size_t *np, size_t *ns, int c)
{
    bn->c = c;
    bn->gamma = take(np, (size_t)c);
    bn->beta = take(np, (size_t)c);
    bn->mean = take(ns, (size_t)c);
    bn->var = take(ns, (size_t)c);
}

static td_status check_spec(const td_bnn_conv_spec *s, const char *what,
                            td_error *err)
{
    if (s->pad != s->k / 2)
        return td_error_set(err, TD_EINVAL,
                            "arch: %s.pad is %d; the trainer pads k/2 = %d "
                            "(its convolutions are im2col with symmetric "
                            "padding)",
                            what, s->pad, s->k / 2);
    return TD_OK;
}

td_status td_bnt_init(td_bnt_model *m, const td_bnn_arch *a, td_error *err)
{
    size_t np = 0, ns = 0;
    char *json;
    td_status st;
    int h, w, cin;
    memset(m, 0, sizeof *m);
    /* the same checks a model file gets */
    json = td_bnn_arch_json(a);
    if (!json)
        return td_error_set(err, TD_ENOMEM, "arch: out of memory");
    st = td_bnn_arch_parse(json, &m->arch, err);
    free(json);
    if (st != TD_OK)
        return st;
    if (m->arch.in_ch != 1)
        return td_error_set(err, TD_EINVAL,
                            "arch: in_ch is %d; the trainer's data are grey "
                            "(in_ch 1)",
                            m->arch.in_ch);
    if ((st = check_spec(&m->arch.stem, "stem", err)) != TD_OK)
        return st;
    for (int i = 0; i < m->arch.n_blocks; i++) {
        char what[32];
        snprintf(what, sizeof what, "blocks[%d]", i);
        if ((st = check_spec(&m->arch.blocks[i], what, err)) != TD_OK)
            return st;
    }
    a = &m->arch;
    h = a->in_h;
    w = a->in_w;
    cin = a->in_ch;
    for (int i = -1; i < a->n_blocks; i++) {
        td_bnt_layer *l = i < 0 ? &m->stem : &m->blocks[i];
        const td_bnn_conv_spec *s = i < 0 ? &a->stem : &a->blocks[i];
        l->cin = cin;
        l->cout = s->cout;
        l->k = s->k;
        l->stride = s->stride;
        l->h_in = h;
        l->w_in = w;
        h = l->h_out = td_tl_conv_out(h, s->k, s->stride);
        w = l->w_out = td_tl_conv_out(w, s->k, s->stride);
        if (h < 1 || w < 1)
            return td_error_set(err, TD_EINVAL,
                                "arch: the input shrinks to nothing at "
                                "layer %d",
                                i + 1);
        l->w = take(&np, (size_t)s->k * s->k * cin * s->cout);
        add_bn(&l->bn, &np, &ns, s->cout);
        cin = s->cout;
    }
    m->fc_w = take(&np, (size_t)cin * a->classes);
    m->fc_b = take(&np, (size_t)a->classes);
    m->n_params = np;
    m->n_stats = ns;
    m->params = calloc(np, sizeof(float));
    m->stats = calloc(ns, sizeof(float));
    m->decay = calloc(np, 1);
    for (int i = 0; i < a->n_blocks; i++) {
        const td_bnn_conv_spec *b = &a->blocks[i];
        int kw = b->k * b->k * td_bp_words(i ? a->blocks[i - 1].cout
                                               : a->stem.cout);
        m->parent[i] = malloc((size_t)b->cout * sizeof(int32_t));
        m->order[i] = malloc((size_t)b->cout * sizeof(int32_t));
        m->tied[i] = calloc((size_t)b->cout * kw, 1);
    }
    if (!m->params || !m->stats || !m->decay) {
        td_bnt_free(m);
        return td_error_set(err, TD_ENOMEM, "bnn model of %zu parameters",
                            np);
    }
    for (int i = 0; i < a->n_blocks; i++)
        if (!m->parent[i] || !m->order[i] || !m->tied[i]) {
            td_bnt_free(m);
            return td_error_set(err, TD_ENOMEM, "bnn trees");
        }
    memset(m->decay + m->stem.w, 1,
           (size_t)m->stem.k * m->stem.k * m->stem.cin * m->stem.cout);
    memset(m->decay + m->fc_w, 1, (size_t)cin * a->classes);
    return TD_OK;
}

void td_bnt_free(td_bnt_model *m)
{
    free(m->params);
    free(m->stats);
    free(m->decay);
    for (int i = 0; i < TD_BNN_MAX_BLOCKS; i++) {
        free(m->parent[i]);
        free(m->order[i]);
        free(m->tied[i]);
    }
    memset(m, 0, sizeof *m);
}

static void init_bn(td_bnt_model *m, const td_bnt_bn *bn)
{
    for (int j = 0; j < bn->c; j++) {
        m->params[bn->gamma + j] = 1;
        m->params[bn->beta + j] = 0;
        m->stats[bn->mean + j] = 0;
        m->stats[bn->var + j] = 1;
    }
}

void td_bnt_init_weights(td_bnt_model *m, uint64_t seed)
{
    const td_bnn_arch *a = &m->arch;
    uint64_t rng = td_rng_mix(seed, 0xb22, 0x1417);
    int last = a->n_blocks ? a->blocks[a->n_blocks - 1].cout : a->stem.cout;
    memset(m->params, 0, m->n_params * sizeof(float));
    for (int i = -1; i < a->n_blocks; i++) {
        const td_bnt_layer *l = i < 0 ? &m->stem : &m->blocks[i];
        size_t fan_in = (size_t)l->k * l->k * l->cin;
        double sd = sqrt(2.0 / (double)fan_in);
        for (size_t j = 0; j < fan_in * (size_t)l->cout; j++)
            m->params[l->w + j] = (float)(sd * td_rng_normal(&rng));
        init_bn(m, &l->bn);
    }
    {
        double range = 1.0 / sqrt((double)last);
        for (size_t i = 0; i < (size_t)last * a->classes; i++)
            m->params[m->fc_w + i] =
                (float)(range * (2.0 * td_rng_float(&rng) - 1.0));
    }
    m->trees_valid = 0;
    m->n_tied = 0;
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

static size_t maxz(size_t a, size_t b) { return a > b ? a : b; }

static void layout_ws(td_bnt_ws *ws, const td_bnt_model *m, carve *c)
{
    const td_bnn_arch *a = &m->arch;
    size_t nb = (size_t)ws->max_batch, big = 0, cols = 0, wmax = 0;
    int last = a->stem.cout;
    for (int i = -1; i < a->n_blocks; i++) {
        const td_bnt_layer *l = i < 0 ? &m->stem : &m->blocks[i];
        td_bnt_acts *s = i < 0 ? &ws->stem : &ws->blocks[i];
        size_t mo = nb * l->h_out * l->w_out, kk = (size_t)l->k * l->k * l->cin;
        s->cols = cv(c, mo * kk);
        s->weff = i < 0 ? NULL : cv(c, kk * l->cout);
        s->conv = cv(c, mo * l->cout);
        s->bn = cv(c, mo * l->cout);
        s->act = i == a->n_blocks - 1 ? NULL : cv(c, mo * l->cout);
        s->mean = cv(c, (size_t)l->cout);
        s->rstd = cv(c, (size_t)l->cout);
        s->var = cv(c, (size_t)l->cout);
        big = maxz(big, maxz(mo * l->cout, nb * l->h_in * l->w_in * l->cin));
        cols = maxz(cols, mo * kk);
        wmax = maxz(wmax, kk * l->cout);
        last = l->cout;
    }
    ws->pooled = cv(c, nb * last);
    ws->logits = cv(c, nb * a->classes);
    ws->grad = cv(c, m->n_params);
    ws->g[0] = cv(c, big);
    ws->g[1] = cv(c, big);
    ws->dcols = cv(c, cols);
    ws->dweff = cv(c, wmax);
    ws->dpooled = cv(c, nb * last);
}

td_status td_bnt_ws_init(td_bnt_ws *ws, const td_bnt_model *m, int max_batch,
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

void td_bnt_ws_free(td_bnt_ws *ws)
{
    free(ws->mem);
    memset(ws, 0, sizeof *ws);
}

/* ------------------------------------------------------------ pieces */

void td_bnt_sign_forward(float *out, const float *in, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = in[i] < 0 ? -1.0f : 1.0f;
}

void td_bnt_sign_backward(float *din, const float *dout, const float *in,
                          size_t n)
{
    for (size_t i = 0; i < n; i++)
        din[i] = fabsf(in[i]) <= 1.0f ? dout[i] : 0.0f;
}

/* w: (kk, cout) */
void td_bnt_binarize(float *weff, float *alpha, const float *w, int kk,
                     int cout)
{
    double sum[512];
    for (int c0 = 0; c0 < cout; c0 += 512) {
        int cn = cout - c0 < 512 ? cout - c0 : 512;
        memset(sum, 0, sizeof sum);
        for (int r = 0; r < kk; r++) {
            const float *row = w + (size_t)r * cout + c0;
            for (int c = 0; c < cn; c++)
                sum[c] += fabsf(row[c]);
        }
        for (int c = 0; c < cn; c++) {
            float al = (float)(sum[c] / kk);
            if (alpha)
                alpha[c0 + c] = al;
            for (int r = 0; r < kk; r++) {
                size_t at = (size_t)r * cout + (size_t)(c0 + c);
                weff[at] = w[at] < 0 ? -al : al;
            }
        }
    }
}

void td_bnt_binarize_backward(float *dw, const float *dweff, const float *w,
                              int kk, int cout)
{
    size_t n = (size_t)kk * cout;
    for (size_t i = 0; i < n; i++)
        if (fabsf(w[i]) <= 1.0f)
            dw[i] += dweff[i];
}

double td_bnt_mst_reg(float *dw, const float *w, const int32_t *parent,
                      int kk, int cout, float lambda)
{
    double r = 0;
    for (int r0 = 0; r0 < kk; r0++) {
        const float *row = w + (size_t)r0 * cout;
        float *drow = dw ? dw + (size_t)r0 * cout : NULL;
        for (int c = 0; c < cout; c++) {
            int p = parent[c];
            float d;
            if (p < 0)
                continue;
            /* only where the bits differ: those are the child's cost */
            if ((row[c] < 0) == (row[p] < 0))
                continue;
            d = row[c] - row[p];
            r += (double)d * d;
            if (drow)
                drow[c] += 2.0f * lambda * d;
        }
    }
    return lambda * r;
}

double td_bnt_mst_reg_words(float *dw, const float *w, const int32_t *parent,
                            int taps, int cin, int cout, float lambda)
{
    double r = 0;
    for (int c = 0; c < cout; c++) {
        int p = parent[c];
        if (p < 0)
            continue;
        for (int t = 0; t < taps; t++)
            for (int c0 = 0; c0 < cin; c0 += 64) {
                int c1 = c0 + 64 < cin ? c0 + 64 : cin;
                double ss = 0, norm;
                for (int ci = c0; ci < c1; ci++) {
                    const float *row = w + ((size_t)t * cin + ci) * cout;
                    if ((row[c] < 0) != (row[p] < 0)) {
                        double d = (double)row[c] - row[p];
                        ss += d * d;
                    }
                }
                if (ss == 0)
                    continue;
                norm = sqrt(ss);
                r += norm;
                if (!dw)
                    continue;
                for (int ci = c0; ci < c1; ci++) {
                    size_t at = ((size_t)t * cin + ci) * cout;
                    if ((w[at + c] < 0) != (w[at + p] < 0))
                        dw[at + c] +=
                            (float)(lambda * (w[at + c] - w[at + p]) / norm);
                }
            }
    }
    return lambda * r;
}

/* ------------------------------------------------------------ forward */

static void bn_fwd(const float *P, const float *S, const td_bnt_bn *bn,
                   td_bnt_acts *s, size_t rows, int train)
{
    if (train)
        td_tl_bn_forward_train(s->bn, s->mean, s->rstd, s->var, s->conv,
                               P + bn->gamma, P + bn->beta, (int)rows, bn->c,
                               TD_BNT_BN_EPS);
    else
        td_tl_bn_forward_eval(s->bn, s->conv, P + bn->gamma, P + bn->beta,
                              S + bn->mean, S + bn->var, (int)rows, bn->c,
                              TD_BNT_BN_EPS);
    if (s->act)
        td_bnt_sign_forward(s->act, s->bn, rows * bn->c);
}

void td_bnt_forward(const td_bnt_model *m, td_bnt_ws *ws, const float *params,
                    const float *stats, const float *in, int n, int train,
                    int binw)
{
    const td_bnn_arch *a = &m->arch;
    const float *P = params, *x = in;
    int last = a->stem.cout;
    ws->n = n;
    ws->binw = binw;
    for (int i = -1; i < a->n_blocks; i++) {
        const td_bnt_layer *l = i < 0 ? &m->stem : &m->blocks[i];
        td_bnt_acts *s = i < 0 ? &ws->stem : &ws->blocks[i];
        size_t rows = (size_t)n * l->h_out * l->w_out;
        int kk = l->k * l->k * l->cin;
        const float *w = P + l->w;
        if (i >= 0) {
            if (binw)
                td_bnt_binarize(s->weff, NULL, w, kk, l->cout);
            else
                memcpy(s->weff, w, (size_t)kk * l->cout * sizeof(float));
            w = s->weff;
        }
        /* (N, h_in, w_in, cin) -> (N, h_out, w_out, cout) */
        td_tl_conv_forward(s->conv, s->cols, x, w, n, l->h_in, l->w_in,
                           l->cin, l->cout, l->k, l->stride);
        bn_fwd(P, stats, &l->bn, s, rows, train);
        x = s->act ? s->act : s->bn;
        last = l->cout;
    }
    {
        const td_bnt_layer *l =
            a->n_blocks ? &m->blocks[a->n_blocks - 1] : &m->stem;
        /* (N, HW, C) -> (N, C) -> (N, classes) */
        td_tl_gap_forward(ws->pooled, x, n, l->h_out * l->w_out, last);
        td_tl_linear_forward(ws->logits, ws->pooled, P + m->fc_w,
                             P + m->fc_b, n, last, a->classes);
    }
}

/* ------------------------------------------------------------ backward */

void td_bnt_backward(const td_bnt_model *m, td_bnt_ws *ws,
                     const float *params, const float *dlogits)
{
    const td_bnn_arch *a = &m->arch;
    const float *P = params;
    float *G = ws->grad, *A = ws->g[0], *B = ws->g[1];
    int n = ws->n;
    const td_bnt_layer *ll = &m->blocks[a->n_blocks - 1];
    int last = ll->cout;
    td_tl_linear_backward(ws->dpooled, G + m->fc_w, G + m->fc_b, dlogits,
                          ws->pooled, P + m->fc_w, n, last, a->classes);
    td_tl_gap_backward(A, ws->dpooled, n, ll->h_out * ll->w_out, last);
    /* A: gradient of the current layer's output (after its sign, whose
     * STE is applied here); the conv backward then overwrites A with the
     * gradient of the layer below's output */
    for (int i = a->n_blocks - 1; i >= -1; i--) {
        const td_bnt_layer *l = i < 0 ? &m->stem : &m->blocks[i];
        const td_bnt_acts *s = i < 0 ? &ws->stem : &ws->blocks[i];
        size_t rows = (size_t)n * l->h_out * l->w_out;
        int kk = l->k * l->k * l->cin;
        if (s->act)
            td_bnt_sign_backward(A, A, s->bn, rows * l->cout);
        td_tl_bn_backward(B, G + l->bn.gamma, G + l->bn.beta, A, s->conv,
                          s->mean, s->rstd, P + l->bn.gamma, (int)rows,
                          l->cout);
        if (i < 0) {
            td_tl_conv_backward(NULL, G + l->w, NULL, B, s->cols, P + l->w,
                                n, l->h_in, l->w_in, l->cin, l->cout, l->k,
                                l->stride);
            break;
        }
        /* through the effective weights, then their STE */
        memset(ws->dweff, 0, (size_t)kk * l->cout * sizeof(float));
        td_tl_conv_backward(A, ws->dweff, ws->dcols, B, s->cols, s->weff, n,
                            l->h_in, l->w_in, l->cin, l->cout, l->k,
                            l->stride);
        if (ws->binw)
            td_bnt_binarize_backward(G + l->w, ws->dweff, P + l->w, kk,
                                     l->cout);
        else
            for (size_t j = 0; j < (size_t)kk * l->cout; j++)
                G[l->w + j] += ws->dweff[j];
    }
}

void td_bnt_update_running(const td_bnt_model *m, float *stats,
                           td_bnt_ws *const *ws, int nws, float momentum)
{
    float mean[512], var[512];
    const td_bnn_arch *a = &m->arch;
    for (int i = -1; i < a->n_blocks; i++) {
        const td_bnt_bn *bn = i < 0 ? &m->stem.bn : &m->blocks[i].bn;
        for (int j0 = 0; j0 < bn->c; j0 += 512) {
            int cnt = bn->c - j0 < 512 ? bn->c - j0 : 512;
            for (int j = 0; j < cnt; j++) {
                double sm = 0, sv = 0;
                for (int q = 0; q < nws; q++) {
                    const td_bnt_acts *s =
                        i < 0 ? &ws[q]->stem : &ws[q]->blocks[i];
                    sm += s->mean[j0 + j];
                    sv += s->var[j0 + j];
                }
                mean[j] = (float)(sm / nws);
                var[j] = (float)(sv / nws);
            }
            td_tl_bn_running(stats + bn->mean + j0, stats + bn->var + j0,
                             mean, var, cnt, momentum);
        }
    }
}

/* ------------------------------------------------------------ MST */

td_status td_bnt_refresh_trees(td_bnt_model *m, const float *params,
                               td_mst_stats *stats, td_error *err)
{
    const td_bnn_arch *a = &m->arch;
    for (int i = 0; i < a->n_blocks; i++) {
        const td_bnt_layer *l = &m->blocks[i];
        int cw = td_bp_words(l->cin), taps = l->k * l->k;
        int kw = taps * cw;
        const float *w = params + l->w;
        uint64_t *rows = calloc((size_t)l->cout * kw, sizeof(uint64_t));
        td_mst_plan plan;
        td_status st;
        if (!rows)
            return td_error_set(err, TD_ENOMEM, "bnn trees");
        /* (k*k*cin, cout) rows (ky,kx,ci) -> packed rows (ky,kx,word):
         * the same bits the exporter writes */
        for (int t = 0; t < taps; t++)
            for (int ci = 0; ci < l->cin; ci++) {
                const float *src = w + ((size_t)t * l->cin + ci) * l->cout;
                for (int o = 0; o < l->cout; o++)
                    rows[(size_t)o * kw + (size_t)t * cw + (ci >> 6)] |=
                        (uint64_t)(src[o] < 0) << (ci & 63);
            }
        st = td_mst_build(rows, l->cout, kw, &plan, err);
        free(rows);
        if (st != TD_OK) {
            td_error_prefix(err, "block %d tree", i);
            return st;
        }
        memcpy(m->parent[i], plan.parent, (size_t)l->cout * sizeof(int32_t));
        memcpy(m->order[i], plan.order, (size_t)l->cout * sizeof(int32_t));
        memset(m->tied[i], 0, (size_t)l->cout * kw);
        if (stats)
            td_mst_layer_stats(&plan, (int64_t)l->cin * taps, &stats[i]);
        td_mst_plan_free(&plan);
    }
    m->trees_valid = 1;
    m->n_tied = 0;
    return TD_OK;
}

double td_bnt_reg(const td_bnt_model *m, const float *params, float *grad,
                  float lambda, int words)
{
    double r = 0;
    if (!m->trees_valid || lambda == 0)
        return 0;
    for (int i = 0; i < m->arch.n_blocks; i++) {
        const td_bnt_layer *l = &m->blocks[i];
        if (words)
            r += td_bnt_mst_reg_words(grad ? grad + l->w : NULL,
                                      params + l->w, m->parent[i],
                                      l->k * l->k, l->cin, l->cout, lambda);
        else
            r += td_bnt_mst_reg(grad ? grad + l->w : NULL, params + l->w,
                                m->parent[i], l->k * l->k * l->cin, l->cout,
                                lambda);
    }
    return r;
}

/* ------------------------------------------------------------ tying */

/* Calls fn(child, parent, pos) for every latent position of every tied
 * word, children in BFS order (rev: reversed). */
#define TIE_FOR_EACH(m, rev, BODY)                                            \
    for (int i_ = 0; i_ < (m)->arch.n_blocks; i_++) {                         \
        const td_bnt_layer *l_ = &(m)->blocks[i_];                            \
        int cw_ = td_bp_words(l_->cin), kw_ = l_->k * l_->k * cw_;            \
        size_t off_ = l_->w;                                                  \
        for (int j_ = 1; j_ < l_->cout; j_++) {                               \
            int c_ = (m)->order[i_][(rev) ? l_->cout - j_ : j_];              \
            int p_ = (m)->parent[i_][c_];                                     \
            const uint8_t *tw_ = (m)->tied[i_] + (size_t)c_ * kw_;            \
            for (int w_ = 0; w_ < kw_; w_++) {                                \
                int t_ = w_ / cw_, c0_ = (w_ % cw_) * 64;                     \
                int c1_ = c0_ + 64 < l_->cin ? c0_ + 64 : l_->cin;            \
                if (!tw_[w_] || p_ < 0)                                       \
                    continue;                                                 \
                for (int ci_ = c0_; ci_ < c1_; ci_++) {                       \
                    size_t at_ = off_ + ((size_t)t_ * l_->cin + ci_) *        \
                                            l_->cout;                         \
                    size_t ch_ = at_ + c_, pa_ = at_ + p_;                    \
                    BODY;                                                     \
                }                                                             \
            }                                                                 \
        }                                                                     \
    }

void td_bnt_tie_apply(const td_bnt_model *m, float *params)
{
    if (!m->trees_valid || !m->n_tied)
        return;
    TIE_FOR_EACH(m, 0, params[ch_] = params[pa_])
}

void td_bnt_tie_grad(const td_bnt_model *m, float *grad)
{
    if (!m->trees_valid || !m->n_tied)
        return;
    TIE_FOR_EACH(m, 1, (grad[pa_] += grad[ch_], grad[ch_] = 0))
}

void td_bnt_tie_select(td_bnt_model *m, float *params, double frac)
{
    long n = 0;
    if (!m->trees_valid)
        return;
    if (frac < 0)
        frac = 0;
    if (frac > 1)
        frac = 1;
    for (int i = 0; i < m->arch.n_blocks; i++) {
        const td_bnt_layer *l = &m->blocks[i];
        int cw = td_bp_words(l->cin), kw = l->k * l->k * cw;
        int want = (int)(frac * kw + 0.5);
        const float *w = params + l->w;
        memset(m->tied[i], 0, (size_t)l->cout * kw);
        for (int c = 0; c < l->cout; c++) {
            int p = m->parent[i][c];
            uint8_t *tw = m->tied[i] + (size_t)c * kw;
            if (p < 0)
                continue;
            /* take `want` times the word with the fewest differing bits,
             * lowest index first: kw is at most 25*8 words, so a
             * selection by repeated minimum is cheap enough */
            for (int k = 0; k < want; k++) {
                int best = -1, best_d = 0;
                for (int wd = 0; wd < kw; wd++) {
                    int t = wd / cw, c0 = (wd % cw) * 64, d = 0;
                    int c1 = c0 + 64 < l->cin ? c0 + 64 : l->cin;
                    if (tw[wd])
                        continue;
                    for (int ci = c0; ci < c1; ci++) {
                        const float *row =
                            w + ((size_t)t * l->cin + ci) * l->cout;
                        d += (row[c] < 0) != (row[p] < 0);
                    }
                    if (best < 0 || d < best_d) {
                        best = wd;
                        best_d = d;
                    }
                }
                tw[best] = 1;
                n++;
            }
        }
    }
    m->n_tied = n;
    td_bnt_tie_apply(m, params);
}

/* ------------------------------------------------------------ export */

void td_bnt_latent(const td_bnt_model *m, const float *params,
                   const float *stats, const char *const *labels, float mean,
                   float std, td_bnn_latent *out)
{
    const td_bnn_arch *a = &m->arch;
    memset(out, 0, sizeof *out);
    out->arch = *a;
    out->layout = TD_BNN_KKIO;
    out->stem_w = params + m->stem.w;
    out->stem_bn = (td_bnn_bn){params + m->stem.bn.gamma,
                               params + m->stem.bn.beta,
                               stats + m->stem.bn.mean,
                               stats + m->stem.bn.var, TD_BNT_BN_EPS};
    for (int i = 0; i < a->n_blocks; i++) {
        const td_bnt_layer *l = &m->blocks[i];
        out->block_w[i] = params + l->w;
        out->block_alpha[i] = NULL; /* mean |W_c|, as in training */
        /* tied words are zero mask words only against the parents they
         * were tied to */
        out->block_parent[i] = m->trees_valid && m->n_tied ? m->parent[i]
                                                           : NULL;
        out->block_bn[i] = (td_bnn_bn){params + l->bn.gamma,
                                       params + l->bn.beta,
                                       stats + l->bn.mean, stats + l->bn.var,
                                       TD_BNT_BN_EPS};
    }
    out->fc_w = params + m->fc_w;
    out->fc_b = params + m->fc_b;
    out->labels = labels;
    out->mean[0] = mean;
    out->std[0] = std;
}
