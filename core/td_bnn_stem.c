/* td_bnn_stem: the binary network's real first convolution, direct (see
 * td_bnn_stem.h). */
#include "config.h"

#include "td_bnn_stem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TD_STEM_X86 1
#endif

static int has_avx512(void)
{
#ifdef TD_STEM_X86
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

#ifdef TD_STEM_X86
static int has_avx2_fma(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

void td_bnn_stem_release(td_bnn_stem *s)
{
    if (!s)
        return;
    free(s->px_src);
    free(s->tap_src);
    free(s->valid);
    s->px_src = NULL;
    s->tap_src = NULL;
    s->valid = NULL;
}

/* Input offset (ci, iy, ix) of tap t = (ky, kx, ci) at output (y, x), or
 * -1 in the padding. */
static int32_t tap_offset(const td_bnn_stem *s, int t, int y, int x)
{
    int ci = t % s->in_ch, kx = t / s->in_ch % s->k, ky = t / s->in_ch / s->k;
    int iy = y * s->stride - s->pad + ky, ix = x * s->stride - s->pad + kx;
    if (iy < 0 || iy >= s->in_h || ix < 0 || ix >= s->in_w)
        return -1;
    return (int32_t)(((int64_t)ci * s->in_h + iy) * s->in_w + ix);
}

td_status td_bnn_stem_prepare(td_bnn_stem *s, int in_ch, int in_h, int in_w,
                              int k, int stride, int pad, int cout,
                              const float *wt, const float *scale,
                              const float *bias, const td_bslice_layout *lay,
                              td_error *err)
{
    memset(s, 0, sizeof *s);
    s->in_ch = in_ch;
    s->in_h = in_h;
    s->in_w = in_w;
    s->k = k;
    s->stride = stride;
    s->pad = pad;
    s->cout = cout;
    s->ho = td_bconv_out(in_h, k, stride, pad);
    s->wo = td_bconv_out(in_w, k, stride, pad);
    s->wt = wt;
    s->scale = scale;
    s->bias = bias;
    if (s->ho <= 0 || s->wo <= 0)
        return td_error_set(err, TD_EINVAL, "bnn stem: no output");
    {
        int taps = k * k * in_ch;
        s->px_src = malloc((size_t)s->ho * (size_t)s->wo * (size_t)taps *
                           sizeof(int32_t));
        if (!s->px_src)
            return td_error_set(err, TD_ENOMEM, "bnn stem: out of memory");
        for (int y = 0; y < s->ho; y++)
            for (int x = 0; x < s->wo; x++)
                for (int t = 0; t < taps; t++)
                    s->px_src[((size_t)y * (size_t)s->wo + (size_t)x) *
                                  (size_t)taps + (size_t)t] =
                        tap_offset(s, t, y, x);
    }
    if (!lay)
        return TD_OK;
    {
        int taps = k * k * in_ch;
        int32_t *lane_of_px;
        size_t npx = (size_t)s->ho * (size_t)s->wo;
        if (lay->h != s->ho || lay->w != s->wo)
            return td_error_set(err, TD_EINVAL,
                                "bnn stem: layout is not the stem's output");
        s->lay = *lay;
        s->lanes = lay->lw * 64;
        s->tap_src = malloc((size_t)taps * (size_t)s->lanes * sizeof(int32_t));
        s->valid = calloc((size_t)lay->lw, sizeof(uint64_t));
        lane_of_px = malloc(npx * sizeof *lane_of_px);
        if (!s->tap_src || !s->valid || !lane_of_px) {
            free(lane_of_px);
            td_bnn_stem_release(s);
            return td_error_set(err, TD_ENOMEM, "bnn stem: out of memory");
        }
        for (size_t i = 0; i < (size_t)taps * (size_t)s->lanes; i++)
            s->tap_src[i] = -1;
        td_bslice_lane_table(lay, lane_of_px);
        for (int y = 0; y < s->ho; y++)
            for (int x = 0; x < s->wo; x++) {
                int32_t ln = lane_of_px[(size_t)y * (size_t)s->wo + (size_t)x];
                s->valid[ln / 64] |= 1ULL << (ln % 64);
                for (int t = 0; t < taps; t++)
                    s->tap_src[(size_t)t * (size_t)s->lanes + (size_t)ln] =
                        tap_offset(s, t, y, x);
            }
        free(lane_of_px);
    }
    return TD_OK;
}

/* ------------------------------------------------------------------- NHWC */

static void nhwc_portable(const td_bnn_stem *s, const float *in,
                          uint64_t *out)
{
    int taps = s->k * s->k * s->in_ch, cw = (s->cout + 63) / 64;
    float acc[64];
    for (int y = 0; y < s->ho; y++)
        for (int x = 0; x < s->wo; x++) {
            uint64_t *o = out + ((size_t)y * (size_t)s->wo + (size_t)x) *
                                    (size_t)cw;
            for (int c0 = 0; c0 < s->cout; c0 += 64) {
                int n = s->cout - c0 < 64 ? s->cout - c0 : 64;
                uint64_t word = 0;
                for (int c = 0; c < n; c++)
                    acc[c] = 0.0f;
                const int32_t *ps = s->px_src +
                                    ((size_t)y * (size_t)s->wo + (size_t)x) *
                                        (size_t)taps;
                for (int t = 0; t < taps; t++) {
                    int32_t src = ps[t];
                    float xv = src < 0 ? 0.0f : in[src];
                    const float *w = s->wt + (size_t)t * (size_t)s->cout + c0;
                    for (int c = 0; c < n; c++)
                        acc[c] = fmaf(xv, w[c], acc[c]);
                }
                for (int c = 0; c < n; c++) {
                    float z = s->scale[c0 + c] * acc[c];
                    word |= (uint64_t)(z + s->bias[c0 + c] < 0.0f) << c;
                }
                o[c0 / 64] = word;
            }
        }
}

#ifdef TD_STEM_X86
/* 16 channels per register, NV registers (one output word: NV <= 4) and
 * 4 pixels per pass: 4*NV independent FMA chains hide the FMA latency.
 * Inlined per NV so that the accumulators live in registers. */
__attribute__((target("avx512f"), always_inline)) static inline void
nhwc_word(const td_bnn_stem *s, const float *in, uint64_t *out, int c0,
          const int NV)
{
    int taps = s->k * s->k * s->in_ch, cw = (s->cout + 63) / 64;
    int npx = s->ho * s->wo;
    __mmask16 m[4];
    __m512 a[4], b[4];
    for (int q = 0; q < NV; q++) {
        int n = s->cout - c0 - 16 * q;
        m[q] = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
        a[q] = _mm512_maskz_loadu_ps(m[q], s->scale + c0 + 16 * q);
        b[q] = _mm512_maskz_loadu_ps(m[q], s->bias + c0 + 16 * q);
    }
    for (int p0 = 0; p0 < npx; p0 += 4) {
        const int32_t *ps[4];
        __m512 acc[4][4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            int p = p0 + i < npx ? p0 + i : p0; /* spare lanes redo p0 */
            ps[i] = s->px_src + (size_t)p * (size_t)taps;
#pragma GCC unroll 4
            for (int q = 0; q < NV; q++)
                acc[i][q] = _mm512_setzero_ps();
        }
        for (int t = 0; t < taps; t++) {
            const float *w = s->wt + (size_t)t * (size_t)s->cout + c0;
            __m512 wv[4];
#pragma GCC unroll 4
            for (int q = 0; q < NV; q++)
                wv[q] = _mm512_maskz_loadu_ps(m[q], w + 16 * q);
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                int32_t src = ps[i][t];
                __m512 xv = _mm512_set1_ps(src < 0 ? 0.0f : in[src]);
#pragma GCC unroll 4
                for (int q = 0; q < NV; q++)
                    acc[i][q] = _mm512_fmadd_ps(xv, wv[q], acc[i][q]);
            }
        }
        for (int i = 0; i < 4 && p0 + i < npx; i++) {
            uint64_t word = 0;
            for (int q = 0; q < NV; q++) {
                __m512 z = _mm512_add_ps(_mm512_mul_ps(a[q], acc[i][q]), b[q]);
                word |= (uint64_t)_mm512_mask_cmp_ps_mask(
                            m[q], z, _mm512_setzero_ps(), _CMP_LT_OQ)
                        << (16 * q);
            }
            out[(size_t)(p0 + i) * (size_t)cw + (size_t)(c0 / 64)] = word;
        }
    }
}

__attribute__((target("avx512f"))) static void
nhwc_avx512(const td_bnn_stem *s, const float *in, uint64_t *out)
{
    for (int c0 = 0; c0 < s->cout; c0 += 64) {
        int left = s->cout - c0;
        if (left > 48)
            nhwc_word(s, in, out, c0, 4);
        else if (left > 32)
            nhwc_word(s, in, out, c0, 3);
        else if (left > 16)
            nhwc_word(s, in, out, c0, 2);
        else
            nhwc_word(s, in, out, c0, 1);
    }
}
#endif

#ifdef TD_STEM_X86
/* AVX2 + FMA: 8 channels per register, 32 channels and 2 pixels per pass
 * (8 independent FMA chains). Tails through masked loads. */
__attribute__((target("avx2,fma"))) static void
nhwc_avx2(const td_bnn_stem *s, const float *in, uint64_t *out)
{
    int taps = s->k * s->k * s->in_ch, cw = (s->cout + 63) / 64;
    int npx = s->ho * s->wo;
    for (int c0 = 0; c0 < s->cout; c0 += 32) {
        __m256i m[4];
        __m256 a[4], b[4];
        for (int q = 0; q < 4; q++) {
            int n = s->cout - c0 - 8 * q;
            m[q] = _mm256_cmpgt_epi32(_mm256_set1_epi32(n < 0 ? 0 : n),
                                      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            a[q] = _mm256_maskload_ps(s->scale + c0 + 8 * q, m[q]);
            b[q] = _mm256_maskload_ps(s->bias + c0 + 8 * q, m[q]);
        }
        for (int p0 = 0; p0 < npx; p0 += 2) {
            int p1 = p0 + 1 < npx ? p0 + 1 : p0;
            const int32_t *ps0 = s->px_src + (size_t)p0 * (size_t)taps;
            const int32_t *ps1 = s->px_src + (size_t)p1 * (size_t)taps;
            __m256 acc0[4], acc1[4];
            for (int q = 0; q < 4; q++)
                acc0[q] = acc1[q] = _mm256_setzero_ps();
            for (int t = 0; t < taps; t++) {
                const float *w = s->wt + (size_t)t * (size_t)s->cout + c0;
                __m256 x0 = _mm256_set1_ps(ps0[t] < 0 ? 0.0f : in[ps0[t]]);
                __m256 x1 = _mm256_set1_ps(ps1[t] < 0 ? 0.0f : in[ps1[t]]);
                for (int q = 0; q < 4; q++) {
                    __m256 wv = _mm256_maskload_ps(w + 8 * q, m[q]);
                    acc0[q] = _mm256_fmadd_ps(x0, wv, acc0[q]);
                    acc1[q] = _mm256_fmadd_ps(x1, wv, acc1[q]);
                }
            }
            for (int i = 0; i < 2 && p0 + i < npx; i++) {
                uint64_t bits = 0, *o;
                for (int q = 0; q < 4; q++) {
                    __m256 z = _mm256_add_ps(
                        _mm256_mul_ps(a[q], i ? acc1[q] : acc0[q]), b[q]);
                    int mk = _mm256_movemask_ps(_mm256_and_ps(
                        _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ),
                        _mm256_castsi256_ps(m[q])));
                    bits |= (uint64_t)(unsigned)mk << (8 * q);
                }
                o = out + (size_t)(p0 + i) * (size_t)cw + (size_t)(c0 / 64);
                if (c0 % 64 == 0)
                    *o = bits;
                else
                    *o |= bits << 32;
            }
        }
    }
}
#endif

void td_bnn_stem_nhwc(const td_bnn_stem *s, int flags, const float *in,
                      uint64_t *out)
{
#ifdef TD_STEM_X86
    if (!(flags & TD_BNN_STEM_PORTABLE) && !(flags & TD_BNN_STEM_AVX2) &&
        has_avx512()) {
        nhwc_avx512(s, in, out);
        return;
    }
    if (!(flags & TD_BNN_STEM_PORTABLE) && has_avx2_fma()) {
        nhwc_avx2(s, in, out);
        return;
    }
#endif
    (void)flags;
    nhwc_portable(s, in, out);
}

/* ----------------------------------------------------------------- planar */

size_t td_bnn_stem_planar_scratch(const td_bnn_stem *s)
{
    return (size_t)s->k * (size_t)s->k * (size_t)s->in_ch * (size_t)s->lanes;
}

/* scratch: (taps, lanes) the input each tap reads at each lane */
static void gather_taps(const td_bnn_stem *s, const float *in, float *xt)
{
    size_t n = td_bnn_stem_planar_scratch(s);
    for (size_t i = 0; i < n; i++) {
        int32_t src = s->tap_src[i];
        xt[i] = src < 0 ? 0.0f : in[src];
    }
}

#ifdef TD_STEM_X86
/* The same, 16 lanes per masked gather (lanes is a multiple of 64). */
__attribute__((target("avx512f"))) static void
gather_taps_avx512(const td_bnn_stem *s, const float *in, float *xt)
{
    size_t n = td_bnn_stem_planar_scratch(s);
    for (size_t i = 0; i < n; i += 16) {
        __m512i idx = _mm512_loadu_si512((const void *)(s->tap_src + i));
        __mmask16 m = _mm512_cmpge_epi32_mask(idx, _mm512_setzero_si512());
        _mm512_storeu_ps(xt + i, _mm512_mask_i32gather_ps(
                                     _mm512_setzero_ps(), m, idx, in, 4));
    }
}
#endif

static void planar_portable(const td_bnn_stem *s, const float *xt,
                            uint64_t *out, size_t stride)
{
    int taps = s->k * s->k * s->in_ch;
    for (int c = 0; c < s->cout; c++) {
        uint64_t *o = out + (size_t)c * stride;
        for (int w = 0; w < s->lay.lw; w++) {
            uint64_t word = 0;
            for (int b = 0; b < 64; b++) {
                size_t ln = (size_t)w * 64 + (size_t)b;
                float acc = 0.0f, z;
                for (int t = 0; t < taps; t++)
                    acc = fmaf(xt[(size_t)t * (size_t)s->lanes + ln],
                               s->wt[(size_t)t * (size_t)s->cout + (size_t)c],
                               acc);
                z = s->scale[c] * acc;
                word |= (uint64_t)(z + s->bias[c] < 0.0f) << b;
            }
            o[w] = word & s->valid[w];
        }
    }
}

#ifdef TD_STEM_X86
/* 16 lanes per register; NW output words (4*NW registers, as many
 * independent FMA chains) per pass. Inlined per NW so that the
 * accumulators live in registers. */
__attribute__((target("avx512f"), always_inline)) static inline void
planar_words(const td_bnn_stem *s, const float *xt, uint64_t *o, int c,
             int w, const int NW)
{
    int taps = s->k * s->k * s->in_ch;
    __m512 a = _mm512_set1_ps(s->scale[c]), b = _mm512_set1_ps(s->bias[c]);
    __m512 acc[8];
#pragma GCC unroll 8
    for (int q = 0; q < 4 * NW; q++)
        acc[q] = _mm512_setzero_ps();
    for (int t = 0; t < taps; t++) {
        __m512 wv = _mm512_set1_ps(s->wt[(size_t)t * (size_t)s->cout + (size_t)c]);
        const float *x = xt + (size_t)t * (size_t)s->lanes + (size_t)w * 64;
#pragma GCC unroll 8
        for (int q = 0; q < 4 * NW; q++)
            acc[q] = _mm512_fmadd_ps(_mm512_loadu_ps(x + 16 * q), wv, acc[q]);
    }
#pragma GCC unroll 2
    for (int j = 0; j < NW; j++) {
        uint64_t word = 0;
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) {
            __m512 z = _mm512_add_ps(_mm512_mul_ps(a, acc[4 * j + q]), b);
            word |= (uint64_t)_mm512_cmp_ps_mask(z, _mm512_setzero_ps(),
                                                 _CMP_LT_OQ)
                    << (16 * q);
        }
        o[w + j] = word & s->valid[w + j];
    }
}

__attribute__((target("avx512f"))) static void
planar_avx512(const td_bnn_stem *s, const float *xt, uint64_t *out,
              size_t stride)
{
    for (int c = 0; c < s->cout; c++) {
        uint64_t *o = out + (size_t)c * stride;
        int w = 0;
        for (; w + 2 <= s->lay.lw; w += 2)
            planar_words(s, xt, o, c, w, 2);
        if (w < s->lay.lw)
            planar_words(s, xt, o, c, w, 1);
    }
}
#endif

#ifdef TD_STEM_X86
/* AVX2 + FMA: 8 lanes per register, one output word (8 registers) per
 * pass. */
__attribute__((target("avx2,fma"))) static void
planar_avx2(const td_bnn_stem *s, const float *xt, uint64_t *out,
            size_t stride)
{
    int taps = s->k * s->k * s->in_ch;
    for (int c = 0; c < s->cout; c++) {
        uint64_t *o = out + (size_t)c * stride;
        __m256 a = _mm256_set1_ps(s->scale[c]), b = _mm256_set1_ps(s->bias[c]);
        for (int w = 0; w < s->lay.lw; w++) {
            __m256 acc[8];
            uint64_t word = 0;
            for (int q = 0; q < 8; q++)
                acc[q] = _mm256_setzero_ps();
            for (int t = 0; t < taps; t++) {
                __m256 wv = _mm256_set1_ps(
                    s->wt[(size_t)t * (size_t)s->cout + (size_t)c]);
                const float *x = xt + (size_t)t * (size_t)s->lanes +
                                 (size_t)w * 64;
                for (int q = 0; q < 8; q++)
                    acc[q] = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8 * q), wv,
                                             acc[q]);
            }
            for (int q = 0; q < 8; q++) {
                __m256 z = _mm256_add_ps(_mm256_mul_ps(a, acc[q]), b);
                word |= (uint64_t)(unsigned)_mm256_movemask_ps(
                            _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ))
                        << (8 * q);
            }
            o[w] = word & s->valid[w];
        }
    }
}
#endif

void td_bnn_stem_planar(const td_bnn_stem *s, int flags, const float *in,
                        uint64_t *out, size_t stride, float *scratch)
{
#ifdef TD_STEM_X86
    if (!(flags & TD_BNN_STEM_PORTABLE) && !(flags & TD_BNN_STEM_AVX2) &&
        has_avx512()) {
        gather_taps_avx512(s, in, scratch);
        planar_avx512(s, scratch, out, stride);
        return;
    }
#endif
    gather_taps(s, in, scratch);
#ifdef TD_STEM_X86
    if (!(flags & TD_BNN_STEM_PORTABLE) && has_avx2_fma()) {
        planar_avx2(s, scratch, out, stride);
        return;
    }
#endif
    (void)flags;
    planar_portable(s, scratch, out, stride);
}
