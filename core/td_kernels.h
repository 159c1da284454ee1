/* td_kernels: NHWC fp32 building blocks of a MobileNet-style CNN forward pass.
 *
 * Activations are row-major (N,H,W,C): a batch of images is a (N*H*W, C)
 * matrix, so a 1x1 convolution is one sgemm (td_gemm.h) and every
 * per-channel operation runs over contiguous channels, which the compiler
 * vectorises. BatchNorm never appears here: it is folded into the preceding
 * convolution's weights and bias when a model loads.
 *
 * The activations use td_k_expf, a polynomial exp that vectorises and is
 * within 2 ulp of expf over the clamped range [-87, 88] (NaN stays NaN).
 *
 * Thread: every function is reentrant; none allocates. Buffers passed as
 * `restrict` must not overlap. */
#ifndef TD_KERNELS_H
#define TD_KERNELS_H

#include <stddef.h>

/* Depthwise weights are stored (k, k, C): tap-major so each tap's weights
 * are contiguous over channels, like the activations. */

/* exp(x) for x clamped to [-87, 88]; scalar entry point of the vector code. */
float td_k_expf(float x);

/* x = silu(x) = x * sigmoid(x), elementwise. x: (n) */
void td_k_silu(float *x, size_t n);
/* x = sigmoid(x), elementwise. x: (n) */
void td_k_sigmoid(float *x, size_t n);

/* x(rows, c) += bias(c) per row; then silu when `silu` is non-zero.
 * When chan_sum is non-NULL it receives the per-channel sum over the rows
 * of the result (for a following global average pool). */
void td_k_bias_act(float *restrict x, size_t rows, int c,
                   const float *restrict bias, int silu,
                   float *restrict chan_sum);

/* The stem's im2col straight from the NCHW request tensor:
 * in: (N, cin, H, W) NCHW; cols: (N*Ho*Wo, k*k*cin) with columns ordered
 * (ky, kx, ci); zero where the symmetric k/2 padding reaches outside. */
void td_k_im2col_nchw(const float *restrict in, int n, int cin, int h, int w,
                      int k, int stride, float *restrict cols);

/* Depthwise k x k convolution, symmetric padding k/2, plus bias, then silu.
 * in: (H, W, C) one image; wt: (k, k, C); bias: (C); out: (Ho, Wo, C) with
 * Ho = (H + 2(k/2) - k)/stride + 1. chan_sum, when non-NULL, gets the sum
 * over Ho*Wo of out per channel (C). Any k >= 1, stride >= 1. */
void td_k_dwconv_silu(const float *restrict in, int h, int w, int c,
                      const float *restrict wt, const float *restrict bias,
                      int k, int stride, float *restrict out,
                      float *restrict chan_sum);

/* Squeeze-excitation on one image: gate = sigmoid(we . silu(wr . mean + br)
 * + be), x *= gate per channel.
 * x: (HW, C) in/out; chan_sum: (C) sum of x over HW; wr: (R, C) reduce
 * weights; br: (R); we: (R, C) expand weights (transposed from PyTorch's
 * [C, R, 1, 1]); be: (C); tmp: scratch of td_k_se_tmp(C, R) floats. */
void td_k_se(float *restrict x, int hw, int c, const float *restrict chan_sum,
             const float *restrict wr, const float *restrict br,
             const float *restrict we, const float *restrict be, int r,
             float *restrict tmp);
size_t td_k_se_tmp(int c, int r);

/* y += x elementwise. y, x: (n) */
void td_k_add(float *restrict y, const float *restrict x, size_t n);

/* Mean over the spatial axis. in: (N, HW, C); out: (N, C) */
void td_k_avgpool(const float *restrict in, int n, int hw, int c,
                  float *restrict out);

/* Row-wise softmax in place, max-subtracted. x: (N, K) */
void td_k_softmax(float *x, int n, int k);

/* Dot product with a fixed summation order (8 interleaved partial sums), so
 * it vectorises without -ffast-math. a, b: (n) */
float td_k_dot(const float *restrict a, const float *restrict b, int n);

#endif
