/* td_bitpack: see td_bitpack.h. */
#include "config.h"

#include "td_bitpack.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

void td_bp_pack_rows(const float *in, size_t rows, int c, uint64_t *out)
{
    int cw = td_bp_words(c);
    for (size_t r = 0; r < rows; r++) {
        const float *x = in + r * (size_t)c;
        uint64_t *o = out + r * (size_t)cw;
        memset(o, 0, (size_t)cw * sizeof *o);
        for (int ch = 0; ch < c; ch++)
            o[ch >> 6] |= (uint64_t)(x[ch] < 0.0f) << (ch & 63);
    }
}

/* Words are built in a register, 64 channels at a time (a bit-by-bit
 * read-modify-write of memory stalls on store forwarding). */
void td_bp_pack_affine_portable(const float *in, size_t rows, int c,
                                const float *a, const float *b, uint64_t *out)
{
    int cw = td_bp_words(c);
    for (size_t r = 0; r < rows; r++) {
        const float *x = in + r * (size_t)c;
        uint64_t *o = out + r * (size_t)cw;
        for (int wi = 0; wi < cw; wi++) {
            uint64_t word = 0;
            int base = wi * 64, n = c - base < 64 ? c - base : 64;
            for (int j = 0; j < n; j++)
                word |= (uint64_t)(a[base + j] * x[base + j] + b[base + j] <
                                   0.0f)
                        << j;
            o[wi] = word;
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* 16 channels per compare; the tail through a masked load. a*x + b is
 * evaluated as a multiply then an add (not fused), as the C path does, so
 * both give the same bits. */
__attribute__((target("avx512f"))) static void
pack_affine_avx512(const float *in, size_t rows, int c, const float *a,
                   const float *b, uint64_t *out)
{
    int cw = td_bp_words(c);
    for (size_t r = 0; r < rows; r++) {
        const float *x = in + r * (size_t)c;
        uint64_t *o = out + r * (size_t)cw;
        for (int wi = 0; wi < cw; wi++) {
            uint64_t word = 0;
            for (int q = 0; q < 4; q++) {
                int base = wi * 64 + q * 16, n = c - base;
                __mmask16 m;
                __m512 v;
                if (n <= 0)
                    break;
                m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
                v = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + base),
                                  _mm512_maskz_loadu_ps(m, x + base)),
                    _mm512_maskz_loadu_ps(m, b + base));
                word |= (uint64_t)_mm512_mask_cmp_ps_mask(
                            m, v, _mm512_setzero_ps(), _CMP_LT_OQ)
                        << (q * 16);
            }
            o[wi] = word;
        }
    }
}
#endif

void td_bp_pack_affine(const float *in, size_t rows, int c, const float *a,
                       const float *b, uint64_t *out)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx512f")) {
        pack_affine_avx512(in, rows, c, a, b, out);
        return;
    }
#endif
    td_bp_pack_affine_portable(in, rows, c, a, b, out);
}

int td_bp_has_popcnt(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("popcnt");
#else
    return 0;
#endif
}

uint64_t td_bp_popcount(const uint64_t *w, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += (uint64_t)__builtin_popcountll(w[i]);
    return s;
}
