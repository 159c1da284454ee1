/* td_train_layers: forward/backward kernels of tinyd-train. */
#include "config.h"

/* The per-element loops here (SiLU, BatchNorm, depthwise) are the bulk of
 * a training step and only vectorise at -O2 with GCC's dynamic cost model
 * (the default "very cheap" one refuses loops that need a remainder), and
 * the clamps in fast_expf only if-convert without trapping math. Neither
 * changes results: no reassociation is allowed. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("vect-cost-model=dynamic", "no-trapping-math")
#endif

#include "td_train_layers.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void td_tl_gemm(int ta, int tb, int m, int n, int k, const float *a,
                const float *b, float beta, float *c)
{
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        if (beta == 0)
            memset(c, 0, (size_t)m * (size_t)n * sizeof *c);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a,
                ta ? m : k, b, tb ? k : n, beta, c, n);
}

/* ------------------------------------------------------------ linear */

void td_tl_linear_forward(float *out, const float *in, const float *w,
                          const float *b, int m, int ci, int co)
{
    /* in: (M,Ci), w: (Ci,Co), out: (M,Co) */
    td_tl_gemm(0, 0, m, co, ci, in, w, 0.0f, out);
    if (b)
        for (int i = 0; i < m; i++) {
            float *o = out + (size_t)i * co;
            for (int j = 0; j < co; j++)
                o[j] += b[j];
        }
}

void td_tl_linear_backward(float *din, float *dw, float *db,
                           const float *dout, const float *in,
                           const float *w, int m, int ci, int co)
{
    /* dout: (M,Co) */
    if (din)
        td_tl_gemm(0, 1, m, ci, co, dout, w, 0.0f, din);
    td_tl_gemm(1, 0, ci, co, m, in, dout, 1.0f, dw);
    if (db)
        for (int i = 0; i < m; i++) {
            const float *d = dout + (size_t)i * co;
            for (int j = 0; j < co; j++)
                db[j] += d[j];
        }
}

/* ------------------------------------------------------------ conv */

void td_tl_im2col(float *cols, const float *in, int n, int h, int w, int ci,
                  int k, int stride)
{
    int ho = td_tl_conv_out(h, k, stride), wo = td_tl_conv_out(w, k, stride);
    int pad = k / 2;
    size_t row = (size_t)k * k * ci;
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                float *c = cols + (((size_t)b * ho + oy) * wo + ox) * row;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * stride - pad + ky;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ox * stride - pad + kx;
                        float *dst = c + ((size_t)ky * k + kx) * ci;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                            memset(dst, 0, (size_t)ci * sizeof *dst);
                        else
                            memcpy(dst,
                                   in + (((size_t)b * h + iy) * w + ix) * ci,
                                   (size_t)ci * sizeof *dst);
                    }
                }
            }
}

void td_tl_col2im(float *din, const float *dcols, int n, int h, int w,
                  int ci, int k, int stride)
{
    int ho = td_tl_conv_out(h, k, stride), wo = td_tl_conv_out(w, k, stride);
    int pad = k / 2;
    size_t row = (size_t)k * k * ci;
    memset(din, 0, (size_t)n * h * w * ci * sizeof *din);
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                const float *c =
                    dcols + (((size_t)b * ho + oy) * wo + ox) * row;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * stride - pad + ky;
                    if (iy < 0 || iy >= h)
                        continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ox * stride - pad + kx;
                        if (ix < 0 || ix >= w)
                            continue;
                        const float *src = c + ((size_t)ky * k + kx) * ci;
                        float *dst =
                            din + (((size_t)b * h + iy) * w + ix) * ci;
                        for (int i = 0; i < ci; i++)
                            dst[i] += src[i];
                    }
                }
            }
}

void td_tl_conv_forward(float *out, float *cols, const float *in,
                        const float *w, int n, int h, int wd, int ci, int co,
                        int k, int stride)
{
    int m = n * td_tl_conv_out(h, k, stride) * td_tl_conv_out(wd, k, stride);
    td_tl_im2col(cols, in, n, h, wd, ci, k, stride);
    td_tl_linear_forward(out, cols, w, NULL, m, k * k * ci, co);
}

void td_tl_conv_backward(float *din, float *dw, float *dcols,
                         const float *dout, const float *cols,
                         const float *w, int n, int h, int wd, int ci, int co,
                         int k, int stride)
{
    int m = n * td_tl_conv_out(h, k, stride) * td_tl_conv_out(wd, k, stride);
    td_tl_linear_backward(din ? dcols : NULL, dw, NULL, dout, cols, w, m,
                          k * k * ci, co);
    if (din)
        td_tl_col2im(din, dcols, n, h, wd, ci, k, stride);
}

/* ------------------------------------------------------------ depthwise */

void td_tl_dw_forward(float *out, const float *in, const float *w, int n,
                      int h, int wd, int c, int k, int stride)
{
    int ho = td_tl_conv_out(h, k, stride), wo = td_tl_conv_out(wd, k, stride);
    int pad = k / 2;
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                float *o = out + (((size_t)b * ho + oy) * wo + ox) * c;
                memset(o, 0, (size_t)c * sizeof *o);
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * stride - pad + ky;
                    if (iy < 0 || iy >= h)
                        continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ox * stride - pad + kx;
                        if (ix < 0 || ix >= wd)
                            continue;
                        const float *x =
                            in + (((size_t)b * h + iy) * wd + ix) * c;
                        const float *t = w + ((size_t)ky * k + kx) * c;
                        for (int i = 0; i < c; i++)
                            o[i] += x[i] * t[i];
                    }
                }
            }
}

void td_tl_dw_backward(float *din, float *dw, const float *dout,
                       const float *in, const float *w, int n, int h, int wd,
                       int c, int k, int stride)
{
    int ho = td_tl_conv_out(h, k, stride), wo = td_tl_conv_out(wd, k, stride);
    int pad = k / 2;
    if (din)
        memset(din, 0, (size_t)n * h * wd * c * sizeof *din);
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                const float *g = dout + (((size_t)b * ho + oy) * wo + ox) * c;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * stride - pad + ky;
                    if (iy < 0 || iy >= h)
                        continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ox * stride - pad + kx;
                        if (ix < 0 || ix >= wd)
                            continue;
                        size_t at = (((size_t)b * h + iy) * wd + ix) * c;
                        const float *x = in + at;
                        const float *t = w + ((size_t)ky * k + kx) * c;
                        float *dt = dw + ((size_t)ky * k + kx) * c;
                        for (int i = 0; i < c; i++)
                            dt[i] += x[i] * g[i];
                        if (din) {
                            float *dx = din + at;
                            for (int i = 0; i < c; i++)
                                dx[i] += t[i] * g[i];
                        }
                    }
                }
            }
}

/* ------------------------------------------------------------ BatchNorm */

/* Channels are processed in blocks of BN_BLOCK so the per-channel double
 * accumulators live on the stack, and rows are walked in memory order so
 * the inner loop over channels is contiguous (it vectorises). */
#define BN_BLOCK 1024

void td_tl_bn_forward_train(float *out, float *mean, float *rstd,
                            float *var_unbiased, const float *in,
                            const float *gamma, const float *beta, int m,
                            int c, float eps)
{
    /* Two passes in double: a large batch in single precision with
     * E[x^2] - E[x]^2 cancels badly. */
    double acc[BN_BLOCK];
    for (int j0 = 0; j0 < c; j0 += BN_BLOCK) {
        int nb = c - j0 < BN_BLOCK ? c - j0 : BN_BLOCK;
        for (int j = 0; j < nb; j++)
            acc[j] = 0;
        for (int i = 0; i < m; i++) {
            const float *x = in + (size_t)i * c + j0;
            for (int j = 0; j < nb; j++)
                acc[j] += x[j];
        }
        for (int j = 0; j < nb; j++) {
            mean[j0 + j] = (float)(acc[j] / m);
            acc[j] = 0;
        }
        for (int i = 0; i < m; i++) {
            const float *x = in + (size_t)i * c + j0;
            const float *mu = mean + j0;
            for (int j = 0; j < nb; j++) {
                double d = x[j] - mu[j];
                acc[j] += d * d;
            }
        }
        for (int j = 0; j < nb; j++) {
            rstd[j0 + j] = (float)(1.0 / sqrt(acc[j] / m + eps));
            var_unbiased[j0 + j] = (float)(m > 1 ? acc[j] / (m - 1) : acc[j]);
        }
    }
    for (int i = 0; i < m; i++) {
        const float *x = in + (size_t)i * c;
        float *y = out + (size_t)i * c;
        for (int j = 0; j < c; j++)
            y[j] = (x[j] - mean[j]) * rstd[j] * gamma[j] + beta[j];
    }
}

void td_tl_bn_forward_eval(float *out, const float *in, const float *gamma,
                           const float *beta, const float *run_mean,
                           const float *run_var, int m, int c, float eps)
{
    for (int i = 0; i < m; i++) {
        const float *x = in + (size_t)i * c;
        float *y = out + (size_t)i * c;
        for (int j = 0; j < c; j++)
            y[j] = (x[j] - run_mean[j]) / sqrtf(run_var[j] + eps) * gamma[j] +
                   beta[j];
    }
}

void td_tl_bn_running(float *run_mean, float *run_var, const float *mean,
                      const float *var_unbiased, int c, float momentum)
{
    for (int j = 0; j < c; j++) {
        run_mean[j] = (1 - momentum) * run_mean[j] + momentum * mean[j];
        run_var[j] = (1 - momentum) * run_var[j] + momentum * var_unbiased[j];
    }
}

void td_tl_bn_backward(float *din, float *dgamma, float *dbeta,
                       const float *dout, const float *in, const float *mean,
                       const float *rstd, const float *gamma, int m, int c)
{
    /* With xh = (x - mean) * rstd:
     * dx = gamma * rstd * (dy - mean(dy) - xh * mean(dy * xh)). */
    double sd[BN_BLOCK], sdx[BN_BLOCK];
    float md[BN_BLOCK], mdx[BN_BLOCK], g[BN_BLOCK];
    for (int j0 = 0; j0 < c; j0 += BN_BLOCK) {
        int nb = c - j0 < BN_BLOCK ? c - j0 : BN_BLOCK;
        const float *mu = mean + j0, *rs = rstd + j0;
        for (int j = 0; j < nb; j++)
            sd[j] = sdx[j] = 0;
        for (int i = 0; i < m; i++) {
            const float *x = in + (size_t)i * c + j0;
            const float *dy = dout + (size_t)i * c + j0;
            for (int j = 0; j < nb; j++) {
                sd[j] += dy[j];
                sdx[j] += dy[j] * ((x[j] - mu[j]) * rs[j]);
            }
        }
        for (int j = 0; j < nb; j++) {
            dbeta[j0 + j] += (float)sd[j];
            dgamma[j0 + j] += (float)sdx[j];
            md[j] = (float)(sd[j] / m);
            mdx[j] = (float)(sdx[j] / m);
            g[j] = gamma[j0 + j] * rs[j];
        }
        for (int i = 0; i < m; i++) {
            const float *x = in + (size_t)i * c + j0;
            const float *dy = dout + (size_t)i * c + j0;
            float *dx = din + (size_t)i * c + j0;
            for (int j = 0; j < nb; j++) {
                float xh = (x[j] - mu[j]) * rs[j];
                dx[j] = g[j] * (dy[j] - md[j] - xh * mdx[j]);
            }
        }
    }
}

/* ------------------------------------------------------------ SiLU */

/* exp(x) for the activations: Cody-Waite reduction x = n ln2 + r, a
 * degree-6 polynomial for e^r on |r| <= ln2/2, and 2^n built in the
 * exponent bits. Relative error below 2.5e-7 on [-87, 88] (x is clamped
 * there); unlike libm's expf it vectorises, and the SiLU layers were a
 * quarter of a training step with expf. */
static inline float fast_expf(float x)
{
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    /* round to nearest with the 1.5 * 2^23 trick (vectorises on SSE2,
     * unlike roundf) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        int32_t i;
        float f;
    } u;
    u.i = ((int32_t)n + 127) << 23;
    return p * u.f;
}

static inline float sigmoidf(float x) { return 1.0f / (1.0f + fast_expf(-x)); }

void td_tl_silu_forward(float *out, const float *in, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = in[i] * sigmoidf(in[i]);
}

void td_tl_silu_backward(float *din, const float *dout, const float *in,
                         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float s = sigmoidf(in[i]);
        din[i] = dout[i] * s * (1 + in[i] * (1 - s));
    }
}

/* ------------------------------------------------------------ pool */

void td_tl_gap_forward(float *out, const float *in, int n, int hw, int c)
{
    for (int b = 0; b < n; b++) {
        float *o = out + (size_t)b * c;
        memset(o, 0, (size_t)c * sizeof *o);
        for (int p = 0; p < hw; p++) {
            const float *x = in + ((size_t)b * hw + p) * c;
            for (int j = 0; j < c; j++)
                o[j] += x[j];
        }
        for (int j = 0; j < c; j++)
            o[j] /= (float)hw;
    }
}

void td_tl_gap_backward(float *din, const float *dout, int n, int hw, int c)
{
    for (int b = 0; b < n; b++)
        for (int p = 0; p < hw; p++) {
            float *d = din + ((size_t)b * hw + p) * c;
            for (int j = 0; j < c; j++)
                d[j] = dout[(size_t)b * c + j] / (float)hw;
        }
}

/* ------------------------------------------------------------ SE */

void td_tl_se_forward(float *out, const td_tl_se_saved *s, const float *in,
                      const float *wr, const float *br, const float *we,
                      const float *be, int n, int hw, int c, int r)
{
    td_tl_gap_forward(s->pooled, in, n, hw, c);
    td_tl_linear_forward(s->r_pre, s->pooled, wr, br, n, c, r);
    td_tl_silu_forward(s->r_act, s->r_pre, (size_t)n * r);
    td_tl_linear_forward(s->gate, s->r_act, we, be, n, r, c);
    for (size_t i = 0; i < (size_t)n * c; i++)
        s->gate[i] = sigmoidf(s->gate[i]);
    for (int b = 0; b < n; b++) {
        const float *g = s->gate + (size_t)b * c;
        for (int p = 0; p < hw; p++) {
            size_t at = ((size_t)b * hw + p) * c;
            for (int j = 0; j < c; j++)
                out[at + j] = in[at + j] * g[j];
        }
    }
}

size_t td_tl_se_scratch(int n, int c, int r)
{
    return 2 * (size_t)n * c + (size_t)n * r;
}

void td_tl_se_backward(float *din, float *dwr, float *dbr, float *dwe,
                       float *dbe, const float *dout, const float *in,
                       const td_tl_se_saved *s, const float *wr,
                       const float *we, int n, int hw, int c, int r,
                       float *scratch)
{
    float *dg = scratch;                  /* (N,C) gate, then its pre-act */
    float *dpool = dg + (size_t)n * c;    /* (N,C) */
    float *dr = dpool + (size_t)n * c;    /* (N,R) */
    memset(dg, 0, (size_t)n * c * sizeof *dg);
    for (int b = 0; b < n; b++) {
        float *d = dg + (size_t)b * c;
        for (int p = 0; p < hw; p++) {
            size_t at = ((size_t)b * hw + p) * c;
            for (int j = 0; j < c; j++)
                d[j] += dout[at + j] * in[at + j];
        }
    }
    for (size_t i = 0; i < (size_t)n * c; i++)
        dg[i] *= s->gate[i] * (1 - s->gate[i]);
    td_tl_linear_backward(dr, dwe, dbe, dg, s->r_act, we, n, r, c);
    td_tl_silu_backward(dr, dr, s->r_pre, (size_t)n * r);
    td_tl_linear_backward(dpool, dwr, dbr, dr, s->pooled, wr, n, c, r);
    for (int b = 0; b < n; b++) {
        const float *g = s->gate + (size_t)b * c;
        const float *dp = dpool + (size_t)b * c;
        for (int p = 0; p < hw; p++) {
            size_t at = ((size_t)b * hw + p) * c;
            for (int j = 0; j < c; j++)
                din[at + j] = dout[at + j] * g[j] + dp[j] / (float)hw;
        }
    }
}

/* ------------------------------------------------------------ losses */

/* p(K) = softmax(z / t) in double; returns log of the normaliser so that
 * log p_j = z_j / t - lse. */
static double softmax_t(double *p, const float *z, int k, double t)
{
    double mx = z[0] / t, s = 0;
    for (int j = 1; j < k; j++)
        if (z[j] / t > mx)
            mx = z[j] / t;
    for (int j = 0; j < k; j++) {
        p[j] = exp(z[j] / t - mx);
        s += p[j];
    }
    for (int j = 0; j < k; j++)
        p[j] /= s;
    return mx + log(s);
}

#define TD_TL_MAX_K 4096

double td_tl_xent(float *dlogits, const float *logits, const uint8_t *labels,
                  int n, int k, float eps, float grad_scale, int *correct)
{
    double p[TD_TL_MAX_K], total = 0;
    int ok = 0;
    if (k > TD_TL_MAX_K)
        k = TD_TL_MAX_K;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        double lse = softmax_t(p, z, k, 1.0), loss = 0;
        int y = labels[i], arg = 0;
        for (int j = 0; j < k; j++) {
            double q = (j == y ? 1.0 - eps : 0.0) + eps / k;
            loss -= q * (z[j] - lse);
            if (dlogits)
                dlogits[(size_t)i * k + j] = (float)(grad_scale * (p[j] - q));
            if (z[j] > z[arg])
                arg = j;
        }
        ok += arg == y;
        total += loss;
    }
    if (correct)
        *correct = ok;
    return total;
}

double td_tl_kl_distill(float *dlogits, const float *logits,
                        const float *past, int n, int k, float tau,
                        float weight, float grad_scale)
{
    double p[TD_TL_MAX_K], q[TD_TL_MAX_K], total = 0;
    if (k > TD_TL_MAX_K)
        k = TD_TL_MAX_K;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k, *zp = past + (size_t)i * k;
        double lse = softmax_t(p, z, k, tau);
        double lsep = softmax_t(q, zp, k, tau), kl = 0;
        for (int j = 0; j < k; j++)
            if (q[j] > 0)
                kl += q[j] * ((zp[j] / tau - lsep) - (z[j] / tau - lse));
        total += (double)weight * tau * tau * kl;
        /* d/dz_j of tau^2 KL = tau * (p_j - q_j) */
        if (dlogits)
            for (int j = 0; j < k; j++)
                dlogits[(size_t)i * k + j] +=
                    (float)(grad_scale * weight * tau * (p[j] - q[j]));
    }
    return total;
}
