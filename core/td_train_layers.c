/* td_train_layers: forward/backward kernels of tinyd-train. */
#include "config.h"

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

void td_tl_bn_forward_train(float *out, float *mean, float *rstd,
                            float *var_unbiased, const float *in,
                            const float *gamma, const float *beta, int m,
                            int c, float eps)
{
    /* Two passes in double: the batch can be large and single-precision
     * E[x^2] - E[x]^2 cancels badly. */
    for (int j = 0; j < c; j++) {
        double s = 0;
        for (int i = 0; i < m; i++)
            s += in[(size_t)i * c + j];
        mean[j] = (float)(s / m);
    }
    for (int j = 0; j < c; j++) {
        double s = 0, mu = mean[j];
        for (int i = 0; i < m; i++) {
            double d = in[(size_t)i * c + j] - mu;
            s += d * d;
        }
        rstd[j] = (float)(1.0 / sqrt(s / m + eps));
        var_unbiased[j] = (float)(m > 1 ? s / (m - 1) : s);
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
    for (int j = 0; j < c; j++) {
        double sd = 0, sdx = 0;
        for (int i = 0; i < m; i++) {
            size_t at = (size_t)i * c + j;
            double xh = (in[at] - mean[j]) * rstd[j];
            sd += dout[at];
            sdx += dout[at] * xh;
        }
        dbeta[j] += (float)sd;
        dgamma[j] += (float)sdx;
        float md = (float)(sd / m), mdx = (float)(sdx / m);
        float g = gamma[j] * rstd[j];
        for (int i = 0; i < m; i++) {
            size_t at = (size_t)i * c + j;
            float xh = (in[at] - mean[j]) * rstd[j];
            din[at] = g * (dout[at] - md - xh * mdx);
        }
    }
}

/* ------------------------------------------------------------ SiLU */

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

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
