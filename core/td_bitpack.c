/* td_bitpack: see td_bitpack.h. */
#include "config.h"

#include "td_bitpack.h"

#include <string.h>

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

void td_bp_pack_affine(const float *in, size_t rows, int c, const float *a,
                       const float *b, uint64_t *out)
{
    int cw = td_bp_words(c);
    for (size_t r = 0; r < rows; r++) {
        const float *x = in + r * (size_t)c;
        uint64_t *o = out + r * (size_t)cw;
        memset(o, 0, (size_t)cw * sizeof *o);
        for (int ch = 0; ch < c; ch++)
            o[ch >> 6] |= (uint64_t)(a[ch] * x[ch] + b[ch] < 0.0f)
                          << (ch & 63);
    }
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
