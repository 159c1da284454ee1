/* Gradient checks for td_train_layers and the whole trainable TinyNet.
 *
 * Each check builds a scalar L = sum_i r_i * y_i (r fixed random weights on
 * the layer output y), runs the analytic backward with dy = r, and compares
 * every input and parameter gradient with a central finite difference
 * (L(x + h) - L(x - h)) / 2h, L accumulated in double.
 *
 * Tolerance: the layers run in float32. With h = 1e-2 the truncation error
 * of the central difference is O(h^2 * f''') ~ 1e-4 for these smooth
 * functions at O(1) inputs, and float rounding of y contributes about
 * 6e-8 * sum|r_i y_i| / h ~ 1e-4. Linear layers (conv, depthwise, linear)
 * have no truncation error at all. So |analytic - numeric| <= 1e-3 +
 * 1e-2 * |numeric| holds with a wide margin when the backward is right,
 * while a wrong term (a missing mean subtraction, a transposed index) is
 * off by O(1). */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "td_rng.h"
#include "td_tinynet_train.h"
#include "td_train_layers.h"

#define H_STEP 1e-2f
#define ATOL 1e-3
#define RTOL 1e-2

static uint64_t rng_state;

static float *randv(size_t n, float scale)
{
    float *p = malloc(n * sizeof *p);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = scale * (2 * td_rng_float(&rng_state) - 1);
    return p;
}

static float *zerov(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    return p;
}

static double dotd(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* A layer under test: forward writes y from the current inputs. */
typedef void (*fwd_fn)(void *ctx);
typedef struct probe {
    fwd_fn fwd;
    void *ctx;
    const float *y, *r;
    size_t ny;
} probe;

static double loss(const probe *p)
{
    p->fwd(p->ctx);
    return dotd(p->y, p->r, p->ny);
}

/* Compare grad (n) with finite differences of loss in x (n). */
static void check_grad_tol(const probe *p, float *x, const float *grad,
                           size_t n, const char *what, float h, double atol,
                           double rtol)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + h;
        double lp = loss(p);
        x[i] = keep - h;
        double lm = loss(p);
        x[i] = keep;
        double num = (lp - lm) / (2.0 * h);
        double diff = fabs(num - grad[i]);
        double allowed = atol + rtol * fabs(num);
        if (diff / allowed > worst)
            worst = diff / allowed;
        ck_assert_msg(diff <= allowed,
                      "%s[%zu]: analytic %.6g numeric %.6g", what, i,
                      (double)grad[i], num);
    }
    (void)worst;
    p->fwd(p->ctx); /* leave the outputs of the unperturbed inputs */
}

static void check_grad(const probe *p, float *x, const float *grad, size_t n,
                       const char *what)
{
    check_grad_tol(p, x, grad, n, what, H_STEP, ATOL, RTOL);
}

/* ---- linear */
struct lin {
    float *x, *w, *b, *y;
    int m, ci, co;
};
static void lin_fwd(void *c)
{
    struct lin *l = c;
    td_tl_linear_forward(l->y, l->x, l->w, l->b, l->m, l->ci, l->co);
}
START_TEST(test_linear_grad)
{
    struct lin l = {0};
    l.m = 5, l.ci = 4, l.co = 3;
    l.x = randv(20, 1), l.w = randv(12, 1), l.b = randv(3, 1);
    l.y = zerov(15);
    float *r = randv(15, 1), *dx = zerov(20), *dw = zerov(12),
          *db = zerov(3);
    probe p = {lin_fwd, &l, l.y, r, 15};
    lin_fwd(&l);
    td_tl_linear_backward(dx, dw, db, r, l.x, l.w, l.m, l.ci, l.co);
    check_grad(&p, l.x, dx, 20, "linear dx");
    check_grad(&p, l.w, dw, 12, "linear dw");
    check_grad(&p, l.b, db, 3, "linear db");
    /* weight gradients accumulate */
    td_tl_linear_backward(NULL, dw, db, r, l.x, l.w, l.m, l.ci, l.co);
    float *dw1 = zerov(12), *db1 = zerov(3);
    td_tl_linear_backward(NULL, dw1, db1, r, l.x, l.w, l.m, l.ci, l.co);
    for (int i = 0; i < 12; i++)
        ck_assert_float_eq_tol(dw[i], 2 * dw1[i], 1e-5);
    free(l.x), free(l.w), free(l.b), free(l.y), free(r), free(dx), free(dw),
        free(db), free(dw1), free(db1);
}
END_TEST

/* ---- conv (im2col) */
struct conv {
    float *x, *w, *y, *cols;
    int n, h, wd, ci, co, k, s;
};
static void conv_fwd(void *c)
{
    struct conv *v = c;
    td_tl_conv_forward(v->y, v->cols, v->x, v->w, v->n, v->h, v->wd, v->ci,
                       v->co, v->k, v->s);
}
static void run_conv(int n, int h, int wd, int ci, int co, int k, int s)
{
    struct conv v = {0};
    int ho = td_tl_conv_out(h, k, s), wo = td_tl_conv_out(wd, k, s);
    size_t nx = (size_t)n * h * wd * ci, nw = (size_t)k * k * ci * co;
    size_t ny = (size_t)n * ho * wo * co, nc = (size_t)n * ho * wo * k * k * ci;
    v = (struct conv){randv(nx, 1), randv(nw, 1), zerov(ny), zerov(nc),
                      n, h, wd, ci, co, k, s};
    float *r = randv(ny, 1), *dx = zerov(nx), *dw = zerov(nw),
          *dcols = zerov(nc);
    probe p = {conv_fwd, &v, v.y, r, ny};
    conv_fwd(&v);
    td_tl_conv_backward(dx, dw, dcols, r, v.cols, v.w, n, h, wd, ci, co, k,
                        s);
    check_grad(&p, v.x, dx, nx, "conv dx");
    check_grad(&p, v.w, dw, nw, "conv dw");
    free(v.x), free(v.w), free(v.y), free(v.cols), free(r), free(dx),
        free(dw), free(dcols);
}
START_TEST(test_conv_grad)
{
    run_conv(2, 5, 4, 2, 3, 3, 2); /* odd, non-square, stride 2 */
    run_conv(1, 4, 4, 1, 2, 3, 1);
}
END_TEST

/* A hand-computed case: 3x3 all-ones kernel over a 3x3 image at stride 1
 * sums each pixel's in-image neighbourhood. */
START_TEST(test_conv_known_values)
{
    float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[9], y[9], cols[81];
    for (int i = 0; i < 9; i++)
        w[i] = 1;
    td_tl_conv_forward(y, cols, x, w, 1, 3, 3, 1, 1, 3, 1);
    ck_assert_float_eq(y[0], 1 + 2 + 4 + 5);
    ck_assert_float_eq(y[4], 45);
    ck_assert_float_eq(y[8], 5 + 6 + 8 + 9);
    td_tl_conv_forward(y, cols, x, w, 1, 3, 3, 1, 1, 3, 2); /* 2x2 out */
    ck_assert_float_eq(y[0], 12);
    ck_assert_float_eq(y[1], 2 + 3 + 5 + 6);
    ck_assert_float_eq(y[3], 5 + 6 + 8 + 9);
}
END_TEST

/* ---- depthwise */
struct dw {
    float *x, *w, *y;
    int n, h, wd, c, k, s;
};
static void dw_fwd(void *c)
{
    struct dw *v = c;
    td_tl_dw_forward(v->y, v->x, v->w, v->n, v->h, v->wd, v->c, v->k, v->s);
}
static void run_dw(int n, int h, int wd, int c, int k, int s)
{
    int ho = td_tl_conv_out(h, k, s), wo = td_tl_conv_out(wd, k, s);
    size_t nx = (size_t)n * h * wd * c, nw = (size_t)k * k * c;
    size_t ny = (size_t)n * ho * wo * c;
    struct dw v = {randv(nx, 1), randv(nw, 1), zerov(ny), n, h, wd, c, k, s};
    float *r = randv(ny, 1), *dx = zerov(nx), *dw = zerov(nw);
    probe p = {dw_fwd, &v, v.y, r, ny};
    dw_fwd(&v);
    td_tl_dw_backward(dx, dw, r, v.x, v.w, n, h, wd, c, k, s);
    check_grad(&p, v.x, dx, nx, "dw dx");
    check_grad(&p, v.w, dw, nw, "dw dw");
    free(v.x), free(v.w), free(v.y), free(r), free(dx), free(dw);
}
START_TEST(test_depthwise_grad)
{
    run_dw(2, 5, 6, 3, 3, 2);
    run_dw(1, 7, 5, 2, 5, 1);
    run_dw(1, 7, 7, 2, 5, 2);
}
END_TEST

/* ---- BatchNorm (training) */
struct bn {
    float *x, *g, *b, *y, *mean, *rstd, *var;
    int m, c;
};
static void bn_fwd(void *c)
{
    struct bn *v = c;
    td_tl_bn_forward_train(v->y, v->mean, v->rstd, v->var, v->x, v->g, v->b,
                           v->m, v->c, 1e-5f);
}
START_TEST(test_batchnorm_grad)
{
    int m = 6, c = 3;
    struct bn v = {randv(18, 2), randv(3, 1), randv(3, 1), zerov(18),
                   zerov(3),     zerov(3),    zerov(3),    m, c};
    float *r = randv(18, 1), *dx = zerov(18), *dg = zerov(3), *db = zerov(3);
    probe p = {bn_fwd, &v, v.y, r, 18};
    bn_fwd(&v);
    /* the batch statistics themselves */
    for (int j = 0; j < c; j++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < m; i++)
            s += v.x[i * c + j];
        s /= m;
        for (int i = 0; i < m; i++)
            s2 += (v.x[i * c + j] - s) * (v.x[i * c + j] - s);
        ck_assert_double_eq_tol(v.mean[j], s, 1e-6);
        ck_assert_double_eq_tol(v.var[j], s2 / (m - 1), 1e-5);
        ck_assert_double_eq_tol(v.rstd[j], 1 / sqrt(s2 / m + 1e-5), 1e-4);
    }
    td_tl_bn_backward(dx, dg, db, r, v.x, v.mean, v.rstd, v.g, m, c);
    check_grad(&p, v.x, dx, 18, "bn dx");
    check_grad(&p, v.g, dg, 3, "bn dgamma");
    check_grad(&p, v.b, db, 3, "bn dbeta");
    /* running statistics: PyTorch's momentum convention */
    float rm[3] = {1, 1, 1}, rv[3] = {2, 2, 2};
    td_tl_bn_running(rm, rv, v.mean, v.var, 3, 0.1f);
    for (int j = 0; j < 3; j++) {
        ck_assert_float_eq_tol(rm[j], 0.9f + 0.1f * v.mean[j], 1e-6);
        ck_assert_float_eq_tol(rv[j], 1.8f + 0.1f * v.var[j], 1e-6);
    }
    /* eval with running stats equal to the batch's biased stats = train */
    float y2[18], bv[3];
    for (int j = 0; j < 3; j++)
        bv[j] = 1 / (v.rstd[j] * v.rstd[j]) - 1e-5f;
    td_tl_bn_forward_eval(y2, v.x, v.g, v.b, v.mean, bv, m, c, 1e-5f);
    for (int i = 0; i < 18; i++)
        ck_assert_float_eq_tol(y2[i], v.y[i], 1e-4);
    free(v.x), free(v.g), free(v.b), free(v.y), free(v.mean), free(v.rstd),
        free(v.var), free(r), free(dx), free(dg), free(db);
}
END_TEST

/* ---- SiLU and global average pool */
struct ew {
    float *x, *y;
    int n, hw, c, which;
};
static void ew_fwd(void *c)
{
    struct ew *v = c;
    if (v->which == 0)
        td_tl_silu_forward(v->y, v->x, (size_t)v->n);
    else
        td_tl_gap_forward(v->y, v->x, v->n, v->hw, v->c);
}
START_TEST(test_silu_and_pool_grad)
{
    struct ew s = {randv(16, 4), zerov(16), 16, 0, 0, 0};
    float *r = randv(16, 1), *dx = zerov(16);
    probe p = {ew_fwd, &s, s.y, r, 16};
    ew_fwd(&s);
    ck_assert_float_eq_tol(s.y[0], s.x[0] / (1 + expf(-s.x[0])), 1e-6);
    td_tl_silu_backward(dx, r, s.x, 16);
    check_grad(&p, s.x, dx, 16, "silu dx");
    struct ew g = {randv(24, 1), zerov(6), 2, 4, 3, 1};
    float *dx2 = zerov(24);
    probe p2 = {ew_fwd, &g, g.y, r, 6};
    ew_fwd(&g);
    td_tl_gap_backward(dx2, r, 2, 4, 3);
    check_grad(&p2, g.x, dx2, 24, "gap dx");
    free(s.x), free(s.y), free(r), free(dx), free(g.x), free(g.y), free(dx2);
}
END_TEST

/* ---- squeeze-excitation */
struct se {
    float *x, *wr, *br, *we, *be, *y;
    td_tl_se_saved s;
    int n, hw, c, r;
};
static void se_fwd(void *c)
{
    struct se *v = c;
    td_tl_se_forward(v->y, &v->s, v->x, v->wr, v->br, v->we, v->be, v->n,
                     v->hw, v->c, v->r);
}
START_TEST(test_se_grad)
{
    int n = 2, hw = 5, c = 4, r = 2;
    size_t nx = (size_t)n * hw * c;
    struct se v = {randv(nx, 2), randv(8, 1), randv(2, 1), randv(8, 1),
                   randv(4, 1),  zerov(nx),   {zerov(8), zerov(4), zerov(4),
                                               zerov(8)},
                   n,            hw,          c, r};
    float *rr = randv(nx, 1), *dx = zerov(nx), *dwr = zerov(8),
          *dbr = zerov(2), *dwe = zerov(8), *dbe = zerov(4),
          *scr = zerov(td_tl_se_scratch(n, c, r));
    probe p = {se_fwd, &v, v.y, rr, nx};
    se_fwd(&v);
    td_tl_se_backward(dx, dwr, dbr, dwe, dbe, rr, v.x, &v.s, v.wr, v.we, n,
                      hw, c, r, scr);
    check_grad(&p, v.x, dx, nx, "se dx");
    check_grad(&p, v.wr, dwr, 8, "se dwr");
    check_grad(&p, v.br, dbr, 2, "se dbr");
    check_grad(&p, v.we, dwe, 8, "se dwe");
    check_grad(&p, v.be, dbe, 4, "se dbe");
    free(v.x), free(v.wr), free(v.br), free(v.we), free(v.be), free(v.y),
        free(v.s.pooled), free(v.s.r_pre), free(v.s.r_act), free(v.s.gate),
        free(rr), free(dx), free(dwr), free(dbr), free(dwe), free(dbe),
        free(scr);
}
END_TEST

/* ---- losses: here the probe's "output" is the loss itself */
struct lossctx {
    float *z, *past;
    uint8_t *lab;
    int n, k, which;
    float eps, tau, lambda;
    float out;
};
static void loss_fwd(void *c)
{
    struct lossctx *v = c;
    if (v->which == 0)
        v->out = (float)td_tl_xent(NULL, v->z, v->lab, v->n, v->k, v->eps,
                                   1.0f, NULL);
    else
        v->out = (float)td_tl_kl_distill(NULL, v->z, v->past, v->n, v->k,
                                         v->tau, v->lambda, 1.0f);
}
START_TEST(test_xent_grad_and_values)
{
    uint8_t lab[3] = {0, 2, 1};
    float one = 1;
    struct lossctx v = {randv(12, 3), NULL, lab, 3, 4, 0, 0.1f, 0, 0, 0};
    float *dz = zerov(12);
    probe p = {loss_fwd, &v, &v.out, &one, 1};
    int correct;
    double l = td_tl_xent(dz, v.z, lab, 3, 4, 0.1f, 1.0f, &correct);
    check_grad(&p, v.z, dz, 12, "xent dz");
    /* independent value: -sum q log softmax */
    double want = 0;
    int ok = 0;
    for (int i = 0; i < 3; i++) {
        double mx = -1e30, s = 0;
        int arg = 0;
        for (int j = 0; j < 4; j++)
            if (v.z[i * 4 + j] > mx)
                mx = v.z[i * 4 + j], arg = j;
        for (int j = 0; j < 4; j++)
            s += exp(v.z[i * 4 + j] - mx);
        for (int j = 0; j < 4; j++) {
            double q = 0.1 / 4 + (j == lab[i] ? 0.9 : 0);
            want -= q * (v.z[i * 4 + j] - mx - log(s));
        }
        ok += arg == lab[i];
    }
    ck_assert_double_eq_tol(l, want, 1e-6);
    ck_assert_int_eq(correct, ok);
    /* uniform logits: loss = log K whatever the smoothing */
    float zu[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    ck_assert_double_eq_tol(td_tl_xent(NULL, zu, lab, 1, 4, 0.3f, 1, NULL),
                            log(4.0), 1e-12);
    free(v.z), free(dz);
}
END_TEST

START_TEST(test_kl_distill_grad_and_values)
{
    float one = 1;
    struct lossctx v = {randv(15, 3), randv(15, 3), NULL, 3, 5, 1,
                        0,            5.0f,         0.3f, 0};
    float *dz = zerov(15);
    probe p = {loss_fwd, &v, &v.out, &one, 1};
    double l = td_tl_kl_distill(dz, v.z, v.past, 3, 5, 5.0f, 0.3f, 1.0f);
    check_grad(&p, v.z, dz, 15, "kl dz");
    /* value from the definition lambda * tau^2 * sum q log(q / p) */
    double want = 0;
    for (int i = 0; i < 3; i++) {
        double sp = 0, sq = 0, kl = 0;
        for (int j = 0; j < 5; j++) {
            sp += exp(v.z[i * 5 + j] / 5.0);
            sq += exp(v.past[i * 5 + j] / 5.0);
        }
        for (int j = 0; j < 5; j++) {
            double pj = exp(v.z[i * 5 + j] / 5.0) / sp;
            double qj = exp(v.past[i * 5 + j] / 5.0) / sq;
            kl += qj * log(qj / pj);
        }
        want += 0.3 * 25 * kl;
    }
    ck_assert_double_eq_tol(l, want, 1e-6);
    /* zero when the past equals the present, and its gradient too */
    memset(dz, 0, 15 * sizeof *dz);
    ck_assert_double_eq_tol(
        td_tl_kl_distill(dz, v.z, v.z, 3, 5, 5.0f, 0.3f, 1.0f), 0, 1e-9);
    for (int i = 0; i < 15; i++)
        ck_assert_float_eq_tol(dz[i], 0, 1e-7);
    free(v.z), free(v.past), free(dz);
}
END_TEST

/* ---- the whole network: td_tnt_forward/backward wiring */
struct net {
    td_tnt_model *m;
    td_tnt_ws *ws;
    float *x;
    uint8_t *lab;
    int n;
    float out;
};
static void net_fwd(void *c)
{
    struct net *v = c;
    td_tnt_forward(v->m, v->ws, v->m->params, v->m->stats, v->x, v->n, 1);
    v->out = (float)td_tl_xent(NULL, v->ws->logits, v->lab, v->n,
                               v->m->arch.classes, 0.1f, 1.0f, NULL);
}
START_TEST(test_network_grad)
{
    td_tn_arch a;
    td_tnt_model m;
    td_tnt_ws ws;
    td_error err;
    enum { N = 8, RES = 32 };
    uint8_t lab[N] = {1, 0, 2, 1, 0, 1, 2, 2};
    float one = 1;
    /* w=0.1, d=0.5: a DS block, IR blocks with stride 1 and 2, kernels 3
     * and 5, and residual blocks; 32 px keeps the first stages above 1x1
     * so BatchNorm sees more than N rows there. */
    ck_assert_int_eq(td_tn_arch_build(&a, 0.1, 0.5, 0.1, RES, 3, &err),
                     TD_OK);
    int residuals = 0;
    for (int i = 0; i < a.n_blocks; i++)
        residuals += a.blocks[i].residual;
    ck_assert_int_gt(residuals, 0);
    ck_assert_int_eq(td_tnt_init(&m, &a, 1, RES, &err), TD_OK);
    td_tnt_init_weights(&m, 7);
    ck_assert_int_eq(td_tnt_ws_init(&ws, &m, N, &err), TD_OK);
    struct net v = {&m, &ws, randv(N * RES * RES, 1), lab, N, 0};
    float *dl = zerov(N * 3);
    net_fwd(&v);
    td_tl_xent(dl, ws.logits, lab, N, 3, 0.1f, 1.0f, NULL);
    memset(ws.grad, 0, m.n_params * sizeof *ws.grad);
    td_tnt_backward(&m, &ws, m.params, dl);
    float *g = zerov(m.n_params);
    memcpy(g, ws.grad, m.n_params * sizeof *g);
    probe p = {net_fwd, &v, &v.out, &one, 1};
    /* Through ~30 float32 BatchNorms the loss carries a relative rounding
     * noise of about 1e-6 (L ~ 30 here), i.e. ~0.03 absolute in a
     * difference quotient with h = 1e-3, and a BatchNorm whose batch
     * variance is near eps is steep enough for O(h) curvature to show at
     * the percent level. Measured agreement is within 3%; a wiring error
     * (wrong buffer, missing residual or SE path) is off by O(1). */
    for (int t = 0; t < 30; t++) {
        size_t i = td_rng_below(&rng_state, (uint32_t)m.n_params);
        check_grad_tol(&p, m.params + i, g + i, 1, "network param", 1e-3f,
                       5e-2, 5e-2);
    }
    {
        const td_tnt_block *b0 = &m.blocks[0], *bl = &m.blocks[a.n_blocks - 1];
        size_t at[] = {m.stem_w_off,  m.stem_bn.gamma, b0->dw_w,
                       b0->se_wr,     b0->se_be,       b0->proj_w,
                       m.blocks[1].exp_w, bl->proj_bn.beta, m.head_w,
                       m.head_bn.gamma,   m.fc_w,           m.fc_b};
        for (size_t t = 0; t < sizeof at / sizeof at[0]; t++)
            check_grad_tol(&p, m.params + at[t], g + at[t], 2,
                           "network tensor", 1e-3f, 5e-2, 5e-2);
    }
    free(g), free(dl), free(v.x);
    td_tnt_ws_free(&ws);
    td_tnt_free(&m);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("td_train_layers");
    TCase *tc = tcase_create("grad");
    tcase_set_timeout(tc, 300); /* the network check is slow under ASan */
    tcase_add_test(tc, test_linear_grad);
    tcase_add_test(tc, test_conv_grad);
    tcase_add_test(tc, test_conv_known_values);
    tcase_add_test(tc, test_depthwise_grad);
    tcase_add_test(tc, test_batchnorm_grad);
    tcase_add_test(tc, test_silu_and_pool_grad);
    tcase_add_test(tc, test_se_grad);
    tcase_add_test(tc, test_xent_grad_and_values);
    tcase_add_test(tc, test_kl_distill_grad_and_values);
    tcase_add_test(tc, test_network_grad);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    rng_state = 12345;
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
