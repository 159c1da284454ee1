/* td_bnn: binary convolution and fully connected layers by XOR+popcount,
 * dense or through an MST plan (td_mst.h), and the sign/threshold glue.
 *
 * Activations are bit-packed along channels (td_bitpack.h: bit 1 = -1),
 * NHWC: (N, H, W, cw) words with cw = ceil(Cin/64). Weights are rows of
 * kw = k*k*cw words in (ky, kx, word) order, one row per output channel,
 * so a window gathered tap by tap lines up with a row word for word.
 *
 * Output. The layers produce integer dot products y (int32), exactly
 * sum over the window of x*w with x, w in {-1,+1}.
 *
 * Padding (exact, like a float convolution of sign(x) with sign(W) and
 * zero padding). A padded tap contributes 0: y counts only valid taps,
 * y = sum over valid taps of (Cin - 2 popcount(a XOR w)). Kernels gather
 * the window with padded taps as zero words (read as +1), compute the
 * full-window y' (the MST identity holds for any input, so the plan
 * works on y' unchanged), then subtract, for each padded tap t, that tap's
 * weight sum S[t][o] = Cin - 2 popcount(w_o at t). Interior pixels need no
 * correction.
 *
 * Threshold. After a binary layer, scale alpha, BatchNorm and sign fold
 * into one integer compare per channel (exporter: td_bnn_model.h):
 * bit = (s*y < t) with s in {+1, -1, 0}.
 *
 * Thread: a prepared td_bconv is immutable; forward calls are reentrant
 * with their own scratch. td_bconv_prepare allocates what the layer owns
 * (released by td_bconv_release); forwards never allocate. */
#ifndef TD_BNN_H
#define TD_BNN_H

#include <stddef.h>
#include <stdint.h>

#include "td_err.h"
#include "td_mst.h"

/* A plan in execution form (built from a td_mst_plan). Channels whose
 * diff list would cost more than their row (entries * cost >= kw words,
 * cost = TD_BNN_DELTA_COST, or TD_BNN_DELTA_COST_SIMD for the 8-pixel
 * SIMD kernel) are computed densely with the root; the
 * rest are delta steps in BFS order. Either way the result is the same
 * integer. The costs are measured (bench/bnn_bench, docs/BNN.md). */
#ifndef TD_BNN_DELTA_COST
#define TD_BNN_DELTA_COST 2
#endif
#ifndef TD_BNN_DELTA_COST_SIMD
#define TD_BNN_DELTA_COST_SIMD 2
#endif
typedef struct td_bnn_exec {
    int n_dense;        /* root + children cheaper to compute densely */
    int32_t *dense_ch;  /* (n_dense) */
    uint64_t *dense_w;  /* (n_dense, kw) their rows, contiguous */
    uint64_t *dense_wv; /* the same rows 8-channel interleaved (SIMD) */
    int n_steps;        /* delta steps; -1 when there is no plan */
    int32_t *child;     /* (n_steps) */
    int32_t *parent;    /* (n_steps) */
    int32_t *two_d;     /* (n_steps) 2*d(child, parent) */
    int32_t *eptr;      /* (n_steps + 1) entry ranges */
    uint32_t *eidx;     /* (n_entries) word index in the window */
    uint64_t *emask;    /* (n_entries) differing bits */
    uint64_t *ewj;      /* (n_entries) the child's weight word */
    void *mem;
} td_bnn_exec;

typedef struct td_bconv {
    int cin, cout, k, stride, pad;
    int cw;              /* words per input pixel */
    int kw;              /* k*k*cw words per weight row */
    const uint64_t *w;   /* (cout, k, k, cw), not owned */
    int32_t *tapsum;     /* (k*k, cout) owned: Cin - 2 popcount per tap */
    uint64_t *wv;        /* owned: rows 8-channel interleaved,
                            (ceil(cout/8), kw, 8), zero-padded (SIMD) */
    td_bnn_exec exec;    /* owned; n_steps < 0 when there is no plan */
} td_bconv;

/* Output size of a convolution along one axis; <= 0 when invalid. */
int td_bconv_out(int in, int k, int stride, int pad);

/* Fill geometry, point at weights w (cout rows of k*k*cw words, must
 * outlive l), compute the tap sums, and build the execution form of
 * `plan` when non-NULL (plan rows must be these weights). */
td_status td_bconv_prepare(td_bconv *l, int cin, int cout, int k, int stride,
                           int pad, const uint64_t *w,
                           const td_mst_plan *plan, td_error *err);
void td_bconv_release(td_bconv *l);

/* 64-bit words of scratch a forward call needs. */
size_t td_bconv_scratch_words(const td_bconv *l);

/* Forward flags. PLAN: through the MST plan (ignored without one);
 * otherwise dense. PORTABLE: no SIMD even where the CPU has it (tests
 * compare every path). With AVX-512 VPOPCNTDQ, dense rows and delta steps
 * run 8 output pixels per instruction; otherwise scalar POPCNT (target
 * clone, runtime check), else portable C. */
#define TD_BCONV_PLAN 1
#define TD_BCONV_PORTABLE 2
/* Dense through the 8-channel SIMD kernel (for comparison; the default
 * SIMD kernel, dense or planned, runs 8 output pixels per instruction,
 * which measured faster). */
#define TD_BCONV_CH8 4

/* in: (N, H, W, cw) packed; y: (N, Ho, Wo, cout) int32 dot products.
 * flags: TD_BCONV_*; scratch: td_bconv_scratch_words(l) words. */
void td_bconv_forward(const td_bconv *l, int flags, const uint64_t *in,
                      int n, int h, int w, int32_t *y, uint64_t *scratch);

/* 1 when the AVX-512 VPOPCNTDQ path is available on this CPU. */
int td_bconv_has_simd(void);

/* Binary fully connected: a 1x1 convolution over one pixel.
 * in: (N, cw) packed; y: (N, cout). l prepared with k = 1, stride 1,
 * pad 0. */
void td_bfc_forward(const td_bconv *l, int flags, const uint64_t *in,
                    int n, int32_t *y, uint64_t *scratch);

/* Fold to bits: out bit of (row, o) = (s[o]*y[row,o] < t[o]).
 * y: (rows, cout); s: (cout) in {-1,0,1}; t: (cout);
 * out: (rows, td_bp_words(cout)). */
void td_bnn_threshold(const int32_t *y, size_t rows, int cout,
                      const int8_t *s, const int32_t *t, uint64_t *out);
/* The same without SIMD (public so tests compare the two). */
void td_bnn_threshold_portable(const int32_t *y, size_t rows, int cout,
                               const int8_t *s, const int32_t *t,
                               uint64_t *out);

/* The threshold form of "bit = m*y + b < 0" for integer y with |y| <= K:
 * sets *s and *t so that (s*y < t) is the same predicate for every
 * integer y in [-K, K]. */
void td_bnn_fold_threshold(double m, double b, int64_t k_bits, int8_t *s,
                           int32_t *t);

#endif
