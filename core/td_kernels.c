/* td_kernels: explicit 8-wide vector code for the per-channel loops.
 *
 * GCC 12 at -O2 vectorises only loops whose trip count is a known multiple
 * of the vector width, and nothing with a branch (the exp clamp), so the
 * hot loops are written with GNU C vector extensions instead of relying on
 * the auto-vectoriser. Channel counts that are not multiples of 8 take a
 * scalar tail that runs the same arithmetic. */
#include "config.h"

#if defined(__GNUC__) && !defined(__clang__)
/* -std=c11 makes GCC keep every a * b + c as two roundings; here fused
 * multiply-adds are wanted (the AVX2 clone then uses FMA: about 15% off a
 * TinyNet forward pass). Clang contracts by default. The tests compare with
 * tolerances, never bit-exactly against unfused arithmetic. */
#pragma GCC optimize("fp-contract=fast")
#endif

#include "td_kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Eight floats per operation. On x86-64 without -march this compiles to
 * pairs of SSE instructions; the hot functions are also cloned for
 * x86-64-v3 (AVX2) and the dynamic linker picks the clone for the CPU. */
typedef float v8f __attribute__((vector_size(32)));
#if defined(__GNUC__) && !defined(__clang__)
/* The vector helpers are all inlined: no 32-byte vector crosses an ABI
 * boundary, so GCC's note about AVX argument passing does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__ELF__) && !defined(__clang__) && \
    defined(__GNUC__) && __GNUC__ >= 11
#define HOT __attribute__((target_clones("default", "arch=x86-64-v3")))
#else
#define HOT
#endif
#define INLINE static inline __attribute__((always_inline))

INLINE v8f ld8(const float *p)
{
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE void st8(float *p, v8f v) { memcpy(p, &v, sizeof v); }

INLINE v8f splat8(float x) { return (v8f){x, x, x, x, x, x, x, x}; }

/* a where m is set, else b (m from a comparison: all ones or zero) */
INLINE v8f sel8(v8i m, v8f a, v8f b)
{
    return (v8f)((m & (v8i)a) | (~m & (v8i)b));
}

/* exp via 2^n * p(r): n = round(x / ln 2) by adding 1.5*2^23 (no float->int
 * conversion, so NaN never reaches undefined behaviour; NaN stays NaN),
 * r = x - n ln 2 in two steps (Cody-Waite), p the degree-6 Taylor
 * polynomial, whose error on |r| <= ln2/2 is below 1.3e-7 relative. */
INLINE v8f exp8(v8f x)
{
    const v8f lo = splat8(-87.0f), hi = splat8(88.0f);
    const v8f magic = splat8(12582912.0f); /* 1.5 * 2^23 */
    v8f t, n, r, p;
    v8u u;
    x = sel8(x < lo, lo, x);
    x = sel8(x > hi, hi, x);
    t = x * 1.44269504088896341f + magic;
    n = t - magic;
    u = ((v8u)t - 0x4B400000u + 127u) << 23; /* 2^n as float bits */
    r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    p = splat8(1.0f / 720.0f);
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * (v8f)u;
}

INLINE v8f silu8(v8f x) { return x / (1.0f + exp8(-x)); }

INLINE v8f sigmoid8(v8f x) { return 1.0f / (1.0f + exp8(-x)); }

/* Scalar versions through the same arithmetic, for channel tails. */
INLINE float exp1(float x) { return exp8(splat8(x))[0]; }
INLINE float silu1(float x) { return x / (1.0f + exp1(-x)); }
INLINE float sigmoid1(float x) { return 1.0f / (1.0f + exp1(-x)); }

float td_k_expf(float x) { return exp1(x); }

HOT void td_k_silu(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        st8(x + i, silu8(ld8(x + i)));
    for (; i < n; i++)
        x[i] = silu1(x[i]);
}

HOT void td_k_sigmoid(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        st8(x + i, sigmoid8(ld8(x + i)));
    for (; i < n; i++)
        x[i] = sigmoid1(x[i]);
}

/* The three variants are separate loops (not one loop with branches) so
 * every inner loop is straight-line vector code at -O2. */
HOT void td_k_bias_act(float *restrict x, size_t rows, int c,
                       const float *restrict bias, int silu,
                       float *restrict chan_sum)
{
    size_t p;
    int j;
    if (chan_sum)
        memset(chan_sum, 0, (size_t)c * sizeof *chan_sum);
    for (p = 0; p < rows; p++) {
        float *restrict row = x + p * (size_t)c;
        if (!silu) {
            for (j = 0; j + 8 <= c; j += 8)
                st8(row + j, ld8(row + j) + ld8(bias + j));
            for (; j < c; j++)
                row[j] += bias[j];
        } else if (!chan_sum) {
            for (j = 0; j + 8 <= c; j += 8)
                st8(row + j, silu8(ld8(row + j) + ld8(bias + j)));
            for (; j < c; j++)
                row[j] = silu1(row[j] + bias[j]);
        } else {
            for (j = 0; j + 8 <= c; j += 8) {
                v8f v = silu8(ld8(row + j) + ld8(bias + j));
                st8(row + j, v);
                st8(chan_sum + j, ld8(chan_sum + j) + v);
            }
            for (; j < c; j++) {
                row[j] = silu1(row[j] + bias[j]);
                chan_sum[j] += row[j];
            }
        }
    }
}

void td_k_im2col_nchw(const float *restrict in, int n, int cin, int h, int w,
                      int k, int stride, float *restrict cols)
{
    int pad = k / 2;
    int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    size_t kc = (size_t)k * k * cin;
    int img, oy, ox, ky, kx, ci;
    for (img = 0; img < n; img++) {
        const float *src = in + (size_t)img * cin * h * w;
        for (oy = 0; oy < ho; oy++)
            for (ox = 0; ox < wo; ox++) {
                float *col = cols + (((size_t)img * ho + oy) * wo + ox) * kc;
                for (ky = 0; ky < k; ky++) {
                    int iy = oy * stride - pad + ky;
                    for (kx = 0; kx < k; kx++) {
                        int ix = ox * stride - pad + kx;
                        float *dst = col + ((size_t)ky * k + kx) * cin;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) {
                            for (ci = 0; ci < cin; ci++)
                                dst[ci] = 0;
                            continue;
                        }
                        for (ci = 0; ci < cin; ci++)
                            dst[ci] = src[((size_t)ci * h + iy) * w + ix];
                    }
                }
            }
    }
}

/* One output pixel, channels [cb, cb + 32) or [cb, cb + 8): the valid taps
 * accumulate in named vector registers (written out, not as an array, so
 * they stay in registers at -O2), then bias and silu. */
INLINE void dw_tile4(const float *restrict in, size_t rowstride, int c,
                     const float *restrict wt, const float *restrict bias,
                     int k, int iy0, int ix0, int ky0, int ky1, int kx0,
                     int kx1, int cb, float *restrict o)
{
    v8f a0 = ld8(bias + cb), a1 = ld8(bias + cb + 8),
        a2 = ld8(bias + cb + 16), a3 = ld8(bias + cb + 24);
    int ky, kx;
    for (ky = ky0; ky < ky1; ky++) {
        const float *ip = in + (size_t)(iy0 + ky) * rowstride +
                          (size_t)(ix0 + kx0) * c + cb;
        const float *wp = wt + ((size_t)ky * k + kx0) * c + cb;
        for (kx = kx0; kx < kx1; kx++, ip += c, wp += c) {
            a0 += ld8(ip) * ld8(wp);
            a1 += ld8(ip + 8) * ld8(wp + 8);
            a2 += ld8(ip + 16) * ld8(wp + 16);
            a3 += ld8(ip + 24) * ld8(wp + 24);
        }
    }
    st8(o + cb, silu8(a0));
    st8(o + cb + 8, silu8(a1));
    st8(o + cb + 16, silu8(a2));
    st8(o + cb + 24, silu8(a3));
}

INLINE void dw_tile1(const float *restrict in, size_t rowstride, int c,
                     const float *restrict wt, const float *restrict bias,
                     int k, int iy0, int ix0, int ky0, int ky1, int kx0,
                     int kx1, int cb, float *restrict o)
{
    v8f a0 = ld8(bias + cb);
    int ky, kx;
    for (ky = ky0; ky < ky1; ky++) {
        const float *ip = in + (size_t)(iy0 + ky) * rowstride +
                          (size_t)(ix0 + kx0) * c + cb;
        const float *wp = wt + ((size_t)ky * k + kx0) * c + cb;
        for (kx = kx0; kx < kx1; kx++, ip += c, wp += c)
            a0 += ld8(ip) * ld8(wp);
    }
    st8(o + cb, silu8(a0));
}

HOT void td_k_dwconv_silu(const float *restrict in, int h, int w, int c,
                          const float *restrict wt, const float *restrict bias,
                          int k, int stride, float *restrict out,
                          float *restrict chan_sum)
{
    int pad = k / 2;
    int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    int oy, ox, ky, kx, cb, j;
    size_t rowstride = (size_t)w * c;
    if (chan_sum)
        memset(chan_sum, 0, (size_t)c * sizeof *chan_sum);
    for (oy = 0; oy < ho; oy++) {
        int iy0 = oy * stride - pad;
        int ky0 = iy0 < 0 ? -iy0 : 0;
        int ky1 = h - iy0 < k ? h - iy0 : k;
        for (ox = 0; ox < wo; ox++) {
            int ix0 = ox * stride - pad;
            int kx0 = ix0 < 0 ? -ix0 : 0;
            int kx1 = w - ix0 < k ? w - ix0 : k;
            float *restrict o = out + ((size_t)oy * wo + ox) * c;
            for (cb = 0; cb + 32 <= c; cb += 32)
                dw_tile4(in, rowstride, c, wt, bias, k, iy0, ix0, ky0, ky1,
                         kx0, kx1, cb, o);
            for (; cb + 8 <= c; cb += 8)
                dw_tile1(in, rowstride, c, wt, bias, k, iy0, ix0, ky0, ky1,
                         kx0, kx1, cb, o);
            for (; cb < c; cb++) { /* channel tail */
                float acc = bias[cb];
                for (ky = ky0; ky < ky1; ky++)
                    for (kx = kx0; kx < kx1; kx++)
                        acc += in[(size_t)(iy0 + ky) * rowstride +
                                  (size_t)(ix0 + kx) * c + cb] *
                               wt[((size_t)ky * k + kx) * c + cb];
                o[cb] = silu1(acc);
            }
            if (chan_sum) {
                for (j = 0; j + 8 <= c; j += 8)
                    st8(chan_sum + j, ld8(chan_sum + j) + ld8(o + j));
                for (; j < c; j++)
                    chan_sum[j] += o[j];
            }
        }
    }
}

float td_k_dot(const float *restrict a, const float *restrict b, int n)
{
    v8f part = splat8(0);
    float s;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        part += ld8(a + i) * ld8(b + i);
    s = ((part[0] + part[4]) + (part[1] + part[5])) +
        ((part[2] + part[6]) + (part[3] + part[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

size_t td_k_se_tmp(int c, int r) { return (size_t)2 * c + (size_t)r; }

/* y[j] = y[j] * s + x[j] * t over n: the axpy-like shapes SE needs. */
INLINE void scale_add(float *restrict y, float s, const float *restrict x,
                      float t, int n)
{
    int j = 0;
    for (; j + 8 <= n; j += 8)
        st8(y + j, ld8(y + j) * s + ld8(x + j) * t);
    for (; j < n; j++)
        y[j] = y[j] * s + x[j] * t;
}

HOT void td_k_se(float *restrict x, int hw, int c,
                 const float *restrict chan_sum, const float *restrict wr,
                 const float *restrict br, const float *restrict we,
                 const float *restrict be, int r, float *restrict tmp)
{
    float *restrict mean = tmp, *restrict gate = tmp + c,
                    *restrict hid = tmp + 2 * (size_t)c;
    float inv = 1.0f / (float)hw;
    int i, j;
    size_t p;
    for (j = 0; j < c; j++)
        mean[j] = chan_sum[j] * inv;
    for (i = 0; i < r; i++)
        hid[i] = silu1(br[i] + td_k_dot(mean, wr + (size_t)i * c, c));
    memcpy(gate, be, (size_t)c * sizeof *gate);
    for (i = 0; i < r; i++)
        scale_add(gate, 1.0f, we + (size_t)i * c, hid[i], c);
    td_k_sigmoid(gate, (size_t)c);
    for (p = 0; p < (size_t)hw; p++) {
        float *restrict row = x + p * (size_t)c;
        for (j = 0; j + 8 <= c; j += 8)
            st8(row + j, ld8(row + j) * ld8(gate + j));
        for (; j < c; j++)
            row[j] *= gate[j];
    }
}

HOT void td_k_add(float *restrict y, const float *restrict x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        st8(y + i, ld8(y + i) + ld8(x + i));
    for (; i < n; i++)
        y[i] += x[i];
}

void td_k_avgpool(const float *restrict in, int n, int hw, int c,
                  float *restrict out)
{
    int img, p;
    float inv = 1.0f / (float)hw;
    for (img = 0; img < n; img++) {
        float *restrict o = out + (size_t)img * c;
        const float *src = in + (size_t)img * hw * c;
        memset(o, 0, (size_t)c * sizeof *o);
        for (p = 0; p < hw; p++)
            scale_add(o, 1.0f, src + (size_t)p * c, 1.0f, c);
        for (p = 0; p < c; p++)
            o[p] *= inv;
    }
}

void td_k_softmax(float *x, int n, int k)
{
    int i, j;
    for (i = 0; i < n; i++) {
        float *row = x + (size_t)i * k, mx = row[0], sum = 0;
        for (j = 1; j < k; j++)
            mx = row[j] > mx ? row[j] : mx;
        for (j = 0; j < k; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        for (j = 0; j < k; j++)
            row[j] /= sum;
    }
}
