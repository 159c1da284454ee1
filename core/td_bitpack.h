/* td_bitpack: sign bits of activations and weights packed 64 to a word.
 *
 * Convention (the same as Larq Compute Engine's): bit 1 means -1, bit 0
 * means +1, so x < 0 packs to 1 and zero packs to +1 (sign(0) = +1). Bits
 * are packed along the innermost (channel) axis: channel c of a row lives
 * in word c/64, bit c%64. Bits past the last channel are 0 in activations
 * and weights alike, so they XOR to 0 and never count.
 *
 * A popcount over 64-bit words is the hot operation of a binary layer.
 * The build does not assume the POPCNT instruction (-O2, no -march), so
 * td_bp_has_popcnt() lets callers dispatch to a target("popcnt") clone.
 *
 * Thread: every function is reentrant; none allocates. */
#ifndef TD_BITPACK_H
#define TD_BITPACK_H

#include <stddef.h>
#include <stdint.h>

/* Words needed for c channels: ceil(c/64). */
static inline int td_bp_words(int c) { return (c + 63) / 64; }

/* in: (rows, c) floats; out: (rows, td_bp_words(c)) words, bit = x < 0. */
void td_bp_pack_rows(const float *in, size_t rows, int c, uint64_t *out);

/* The same with a per-channel affine map first: bit = a[ch]*x + b[ch] < 0
 * (the BatchNorm of a real-valued layer folded into its sign).
 * in: (rows, c); a, b: (c); out: (rows, td_bp_words(c)). */
void td_bp_pack_affine(const float *in, size_t rows, int c, const float *a,
                       const float *b, uint64_t *out);
/* The same without SIMD (what td_bp_pack_affine runs on CPUs without
 * AVX-512; public so tests compare the two). */
void td_bp_pack_affine_portable(const float *in, size_t rows, int c,
                                const float *a, const float *b,
                                uint64_t *out);

/* Value (+1 or -1) of channel ch in a packed row. */
static inline int td_bp_get(const uint64_t *row, int ch)
{
    return (row[ch >> 6] >> (ch & 63)) & 1u ? -1 : 1;
}

/* 1 when the CPU has POPCNT (checked once per call; cheap). */
int td_bp_has_popcnt(void);

/* Total popcount of n words (portable; used off the hot path). */
uint64_t td_bp_popcount(const uint64_t *w, size_t n);

#endif
