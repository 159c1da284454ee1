/* td_bnn_stem: the real-valued first convolution of a binary network
 * (td_bnn_model.h), computed directly and folded with its affine and sign
 * into bits.
 *
 * Arithmetic (every path gives the same bits): for each output pixel and
 * channel, acc = 0, then acc = fma(x_t, w_t, acc) over the taps t in
 * (ky, kx, ci) order, a padded tap reading x = 0; then bit =
 * (scale*acc + bias < 0), multiply then add, as td_bp_pack_affine.
 *
 * Two outputs: channel-packed NHWC words for the XOR-popcount kernels, or
 * planar streams in a td_bslice_layout for the bit-sliced executor. The
 * planar form vectorises over lanes (16 pixels per AVX-512 instruction, 8
 * per AVX2) from a per-tap copy of the input laid out like the lanes.
 *
 * Ownership: td_bnn_stem_prepare allocates the offset tables (released by
 * td_bnn_stem_release); weights, scale and bias are not owned. Thread:
 * immutable after prepare; calls are reentrant with their own scratch. */
#ifndef TD_BNN_STEM_H
#define TD_BNN_STEM_H

#include <stddef.h>
#include <stdint.h>

#include "td_bnn_slice.h"
#include "td_err.h"

typedef struct td_bnn_stem {
    int in_ch, in_h, in_w, k, stride, pad, cout;
    int ho, wo;
    const float *wt;            /* (k*k*in_ch, cout), taps (ky, kx, ci) */
    const float *scale, *bias;  /* (cout) */
    int32_t *px_src;            /* (ho*wo, taps): input offset, -1 = 0 */
    /* planar output (when lay.lw > 0) */
    td_bslice_layout lay;
    int lanes;                  /* lay.lw * 64 */
    int32_t *tap_src;           /* (taps, lanes): input offset, -1 = 0 */
    uint64_t *valid;            /* (lay.lw): lanes that are pixels */
} td_bnn_stem;

/* Geometry and weights (not owned); lay: the planar layout, or NULL for
 * the NHWC output only. */
td_status td_bnn_stem_prepare(td_bnn_stem *s, int in_ch, int in_h, int in_w,
                              int k, int stride, int pad, int cout,
                              const float *wt, const float *scale,
                              const float *bias, const td_bslice_layout *lay,
                              td_error *err);
void td_bnn_stem_release(td_bnn_stem *s);

/* Flags: no SIMD (same value as TD_BCONV_PORTABLE); AVX2 + FMA even where
 * AVX-512 exists (same value as TD_BSLICE_AVX2). Same bits either way. */
#define TD_BNN_STEM_PORTABLE TD_BCONV_PORTABLE
#define TD_BNN_STEM_AVX2 TD_BSLICE_AVX2

/* in: (in_ch, in_h, in_w) NCHW floats; out: (ho*wo, ceil(cout/64)). */
void td_bnn_stem_nhwc(const td_bnn_stem *s, int flags, const float *in,
                      uint64_t *out);

/* Floats of scratch td_bnn_stem_planar needs. */
size_t td_bnn_stem_planar_scratch(const td_bnn_stem *s);
/* in: one image NCHW; out: cout rows `stride` words apart, lay.lw words
 * written to each (lanes that are not pixels are 0). */
void td_bnn_stem_planar(const td_bnn_stem *s, int flags, const float *in,
                        uint64_t *out, size_t stride, float *scratch);

#endif
