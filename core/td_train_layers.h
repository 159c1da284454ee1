/* td_train_layers: forward and backward passes of the layers tinyd-train
 * needs, over plain float arrays, in the manner of llm.c.
 *
 * Activations are NHWC: a batch is a (M, C) row-major matrix with
 * M = N*H*W, so a 1x1 convolution or a fully connected layer is one sgemm
 * and every per-channel operation runs over contiguous channels. Weights
 * use the layouts that make the forward pass one sgemm (in, out); the
 * model writer transposes them to PyTorch's layouts.
 *
 * Backward functions ACCUMULATE (+=) into weight gradients, so a caller
 * zeroes them once per step, and OVERWRITE input gradients (din) unless
 * the comment says otherwise. din may be NULL when the input needs no
 * gradient (the network input).
 *
 * Thread: every function is reentrant and allocates nothing; scratch is
 * passed in. Buffers must not overlap unless a comment allows it. */
#ifndef TD_TRAIN_LAYERS_H
#define TD_TRAIN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* ---- matrix products (the trainer's only BLAS calls) */

/* c(m,n) = op(a) . op(b) + beta * c, row-major, op = transpose when ta/tb.
 * a is (m,k) or (k,m) when transposed; b is (k,n) or (n,k). */
void td_tl_gemm(int ta, int tb, int m, int n, int k, const float *a,
                const float *b, float beta, float *c);

/* ---- linear: fully connected layer and 1x1 convolution */

/* out(M,Co) = in(M,Ci) . w(Ci,Co) + b(Co); b may be NULL. */
void td_tl_linear_forward(float *out, const float *in, const float *w,
                          const float *b, int m, int ci, int co);
/* din(M,Ci) = dout . w^T; dw(Ci,Co) += in^T . dout; db(Co) += sum of dout
 * over rows (db may be NULL). */
void td_tl_linear_backward(float *din, float *dw, float *db,
                           const float *dout, const float *in,
                           const float *w, int m, int ci, int co);

/* ---- k x k convolution, symmetric padding k/2, via im2col + sgemm */

/* Output side for an input side, kernel k and stride s (PyTorch rule). */
static inline int td_tl_conv_out(int in, int k, int stride)
{
    return (in + 2 * (k / 2) - k) / stride + 1;
}
/* in: (N,H,W,Ci) -> cols: (N*Ho*Wo, k*k*Ci), columns ordered (ky,kx,ci),
 * zero where the padding reaches outside the image. */
void td_tl_im2col(float *cols, const float *in, int n, int h, int w, int ci,
                  int k, int stride);
/* The adjoint of im2col: din(N,H,W,Ci) = sum of dcols into the pixels each
 * column entry came from (din is overwritten). */
void td_tl_col2im(float *din, const float *dcols, int n, int h, int w,
                  int ci, int k, int stride);
/* out: (N,Ho,Wo,Co) = conv(in (N,H,W,Ci), w (k*k*Ci, Co)); cols is scratch
 * of N*Ho*Wo*k*k*Ci floats and keeps the im2col of in for the backward. */
void td_tl_conv_forward(float *out, float *cols, const float *in,
                        const float *w, int n, int h, int wd, int ci, int co,
                        int k, int stride);
/* dw += cols^T . dout; din (N,H,W,Ci) when non-NULL, using dcols
 * (same size as cols) as scratch. */
void td_tl_conv_backward(float *din, float *dw, float *dcols,
                         const float *dout, const float *cols,
                         const float *w, int n, int h, int wd, int ci, int co,
                         int k, int stride);

/* ---- depthwise k x k convolution, symmetric padding k/2, no bias */

/* in: (N,H,W,C), w: (k,k,C) -> out: (N,Ho,Wo,C) */
void td_tl_dw_forward(float *out, const float *in, const float *w, int n,
                      int h, int wd, int c, int k, int stride);
/* din (N,H,W,C) overwritten (when non-NULL); dw (k,k,C) += */
void td_tl_dw_backward(float *din, float *dw, const float *dout,
                       const float *in, const float *w, int n, int h, int wd,
                       int c, int k, int stride);

/* ---- BatchNorm over the rows of (M, C) */

/* Training: normalise with the batch statistics. Writes the batch mean and
 * 1/sqrt(var + eps) (C each, kept for the backward) and the unbiased batch
 * variance (C) for the running-statistics update (td_tl_bn_running).
 * out may alias in. */
void td_tl_bn_forward_train(float *out, float *mean, float *rstd,
                            float *var_unbiased, const float *in,
                            const float *gamma, const float *beta, int m,
                            int c, float eps);
/* Evaluation: normalise with running statistics. out may alias in. */
void td_tl_bn_forward_eval(float *out, const float *in, const float *gamma,
                           const float *beta, const float *run_mean,
                           const float *run_var, int m, int c, float eps);
/* running = (1 - momentum) * running + momentum * batch (PyTorch). */
void td_tl_bn_running(float *run_mean, float *run_var, const float *mean,
                      const float *var_unbiased, int c, float momentum);
/* din (M,C) overwritten; dgamma, dbeta (C) +=. `in` is the forward input. */
void td_tl_bn_backward(float *din, float *dgamma, float *dbeta,
                       const float *dout, const float *in, const float *mean,
                       const float *rstd, const float *gamma, int m, int c);

/* ---- SiLU: x * sigmoid(x) */

/* out (n) = silu(in); out may alias in. */
void td_tl_silu_forward(float *out, const float *in, size_t n);
/* din = dout * silu'(in); din may alias dout. */
void td_tl_silu_backward(float *din, const float *dout, const float *in,
                         size_t n);

/* ---- global average pool */

/* in: (N, HW, C) -> out: (N, C) */
void td_tl_gap_forward(float *out, const float *in, int n, int hw, int c);
/* din (N,HW,C) = dout (N,C) / HW, broadcast */
void td_tl_gap_backward(float *din, const float *dout, int n, int hw, int c);

/* ---- squeeze-excitation, the EfficientNet kind:
 * s = mean_hw(x); r = silu(s . wr + br); g = sigmoid(r . we + be);
 * out = x * g per channel.  Weights: wr (C,R), br (R), we (R,C), be (C). */
typedef struct td_tl_se_saved {
    float *pooled; /* (N, C) */
    float *r_pre;  /* (N, R) reduce output before SiLU */
    float *r_act;  /* (N, R) */
    float *gate;   /* (N, C) */
} td_tl_se_saved;
/* in: (N,HW,C) -> out: (N,HW,C); out may alias in only when the caller
 * does not need `in` for the backward. */
void td_tl_se_forward(float *out, const td_tl_se_saved *s, const float *in,
                      const float *wr, const float *br, const float *we,
                      const float *be, int n, int hw, int c, int r);
/* Scratch floats the backward needs. */
size_t td_tl_se_scratch(int n, int c, int r);
/* din (N,HW,C) overwritten; weight gradients +=. in is the forward input. */
void td_tl_se_backward(float *din, float *dwr, float *dbr, float *dwe,
                       float *dbe, const float *dout, const float *in,
                       const td_tl_se_saved *s, const float *wr,
                       const float *we, int n, int hw, int c, int r,
                       float *scratch);

/* ---- losses on logits (N, K), K <= 4096 classes (per-sample scratch is
 * on the stack) */

/* Softmax cross-entropy against labels smoothed to (1-eps) on the label
 * and eps/K everywhere (timm/PyTorch label_smoothing). Returns the SUM of
 * the per-sample losses; dlogits (N,K) = grad_scale * (softmax - target),
 * i.e. the gradient of grad_scale * sum. correct (may be NULL) gets the
 * number of samples whose arg-max is the label. */
double td_tl_xent(float *dlogits, const float *logits, const uint8_t *labels,
                  int n, int k, float eps, float grad_scale, int *correct);

/* The SAF/MESA trajectory loss: weight * tau^2 * KL(softmax(past/tau) ||
 * softmax(logits/tau)) per sample. Returns the SUM over samples; ADDS
 * grad_scale times its gradient to dlogits (N,K) when dlogits is
 * non-NULL. past: (N,K) logits of the teacher (earlier epoch or EMA). */
double td_tl_kl_distill(float *dlogits, const float *logits,
                        const float *past, int n, int k, float tau,
                        float weight, float grad_scale);

#endif
