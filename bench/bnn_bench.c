/* bnn_bench: one-thread latency of binary layers, dense against the MST
 * plan, and of the same shapes in fp32 (im2col + sgemm, OpenBLAS on one
 * thread).
 *
 * Part 1, single layers (k=3, stride 1, pad 1; one image): for random
 * weights and for near-copy channels (cout/8 prototypes, each bit of a
 * copy flipped with probability p: the Hamming structure MST-compression
 * targets), the median time of the dense XOR-popcount layer (the faster
 * of the two dense SIMD kernels, 8 channels or 8 pixels per instruction),
 * the MST plan,
 * and the fp32 convolution of the same shape (binary times include the
 * threshold to packed bits; fp32 includes im2col). Also the counted
 * bit-ops ratio (Cout*K)/(K + sum d) and the mask words the plan touches
 * per pixel against the dense layer's Cout*kw.
 * Part 2, the diff representation: children's corrections by the stored
 * word masks against bit-index lists (scalar), on 128-channel layers.
 * Part 3, the whole Fashion-MNIST family network (docs/BNN.md): dense,
 * plan, fp32 of the same shape, one image.
 *
 * Part 4 (--model FILE...): trained model files, at batch 1 and 16: the
 * dense binary layers, the MST plan, and the fp32 network of the same
 * shape (batched: one sgemm per layer over all images), per call.
 *
 * Medians of CPU time of the calling thread (the machine is shared; wall
 * time is printed too).
 * Usage: bnn_bench [seconds per figure, 0.2] [net: part 3 only]
 *        bnn_bench [seconds] [--avx2] --model FILE... (part 4 only;
 *        --avx2 measures what an AVX2-only machine runs) */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bnn_random.h"
#include "td_arena.h"
#include "td_bitpack.h"
#include "td_bnn.h"
#include "td_bnn_model.h"
#include "td_bnn_slice.h"
#include "td_gemm.h"
#include "td_kernels.h"
#include "td_mst.h"

static double secs = 0.2;
/* --avx2: what an AVX2-only machine runs (TD_BNN_AVX2): AVX2 bit-sliced
 * kernels and stem, scalar POPCNT XOR-popcount kernels */
static int avx2_mode;

static double now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef void (*bench_fn)(void *ctx);

/* Median (over 7 rounds of ~secs/7 each) of per-call CPU and wall ms. */
static void measure(bench_fn fn, void *ctx, double *cpu_ms, double *wall_ms)
{
    double c[7], w[7], t0, t1;
    int reps = 1;
    fn(ctx);
    t0 = now(CLOCK_MONOTONIC);
    fn(ctx);
    t1 = now(CLOCK_MONOTONIC) - t0;
    if (t1 > 0)
        reps = (int)(secs / 7 / t1) + 1;
    for (int r = 0; r < 7; r++) {
        double c0 = now(CLOCK_THREAD_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
        for (int i = 0; i < reps; i++)
            fn(ctx);
        c[r] = (now(CLOCK_THREAD_CPUTIME_ID) - c0) * 1e3 / reps;
        w[r] = (now(CLOCK_MONOTONIC) - w0) * 1e3 / reps;
    }
    qsort(c, 7, sizeof *c, cmpd);
    qsort(w, 7, sizeof *w, cmpd);
    *cpu_ms = c[3];
    *wall_ms = w[3];
}

static uint64_t rs = 12345;
static float frand(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

/* ------------------------------------------------------------ layers */

typedef struct layer_ctx {
    td_bconv l;
    int use_plan, h, w;
    uint64_t *in, *out, *scr;
    int32_t *y;
    int8_t *ts;
    int32_t *thr;
    /* fp32 */
    float *xf, *cols, *wf, *yf;
    int cin, cout, k;
} layer_ctx;

/* One bit-sliced layer (td_bnn_slice.h) on random planar input, n
 * images. */
typedef struct slice_ctx {
    td_bslice l;
    int n;
    uint64_t *in, *out, *scr;
} slice_ctx;

static void run_slice(void *p)
{
    slice_ctx *c = p;
    td_bslice_forward(&c->l, 0, c->in, td_bslice_stride(c->l.in.lw, c->n),
                      c->n, c->out, NULL, c->scr);
}

/* CPU ms per image of the bit-sliced layer at n images per call. */
static double slice_layer_ms(const td_bconv *conv, const td_mst_plan *plan,
                             int hw, int n, const int8_t *ts,
                             const int32_t *thr)
{
    int k[1] = {conv->k}, st[1] = {1}, pad[1] = {conv->pad};
    td_bslice_layout lay[2];
    slice_ctx c;
    size_t words;
    double ms, wall;
    if (!td_bslice_layouts(1, k, st, pad, hw, hw, lay, NULL) ||
        td_bslice_prepare(&c.l, conv, &lay[0], &lay[1], n, plan, ts, thr,
                          NULL) != TD_OK)
        return 0;
    c.n = n;
    words = (size_t)conv->cin * td_bslice_stride(lay[0].lw, n);
    c.in = calloc(words + 2 * TD_BSLICE_GUARD, 8);
    for (size_t i = 0; i < words; i++)
        c.in[TD_BSLICE_GUARD + i] =
            ((uint64_t)(frand() * 4e9) << 32) ^ (uint64_t)(frand() * 4e9);
    c.out = calloc((size_t)conv->cout * td_bslice_stride(lay[1].lw, n) +
                       TD_BSLICE_GUARD,
                   8);
    c.scr = aligned_alloc(64, (td_bslice_scratch_words(&c.l) * 8 + 63) / 64 * 64);
    c.in += TD_BSLICE_GUARD;
    measure(run_slice, &c, &ms, &wall);
    free(c.in - TD_BSLICE_GUARD);
    free(c.out);
    free(c.scr);
    td_bslice_release(&c.l);
    return ms / n;
}

static void run_binary(void *p)
{
    layer_ctx *c = p;
    td_bconv_forward(&c->l, c->use_plan, c->in, 1, c->h, c->w, c->y, c->scr);
    td_bnn_threshold(c->y, (size_t)c->h * (size_t)c->w, c->cout, c->ts,
                     c->thr, c->out);
}

/* NHWC im2col, k x k, stride 1, pad k/2: cols (H*W, k*k*cin). */
static void im2col(const float *x, int h, int w, int cin, int k, float *cols)
{
    int p = k / 2;
    for (int oy = 0; oy < h; oy++)
        for (int ox = 0; ox < w; ox++) {
            float *c = cols + ((size_t)oy * (size_t)w + (size_t)ox) *
                                  (size_t)(k * k * cin);
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++, c += cin) {
                    int iy = oy - p + ky, ix = ox - p + kx;
                    if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                        memset(c, 0, (size_t)cin * sizeof *c);
                    else
                        memcpy(c, x + ((size_t)iy * (size_t)w + (size_t)ix) *
                                          (size_t)cin,
                               (size_t)cin * sizeof *c);
                }
        }
}

static void run_fp32(void *p)
{
    layer_ctx *c = p;
    int kk = c->k * c->k * c->cin;
    im2col(c->xf, c->h, c->w, c->cin, c->k, c->cols);
    td_sgemm(c->h * c->w, c->cout, kk, c->cols, kk, c->wf, c->cout, 0.0f,
             c->yf, c->cout);
}

static void bench_layer(int cin, int cout, int hw, int flip)
{
    int k = 3, cw = td_bp_words(cin), kw = k * k * cw;
    size_t px = (size_t)hw * (size_t)hw;
    uint64_t *rows = calloc((size_t)cout * (size_t)kw, 8);
    int protos = cout / 8 > 0 ? cout / 8 : 1;
    layer_ctx c;
    td_mst_plan plan;
    td_mst_stats st;
    double dc, dw, pc, pw, fc, fw;
    memset(&c, 0, sizeof c);
    for (int o = 0; o < cout; o++)
        for (int t = 0; t < k * k; t++)
            for (int ci = 0; ci < cin; ci++) {
                size_t wi = (size_t)o * (size_t)kw + (size_t)t * (size_t)cw +
                            (size_t)(ci >> 6);
                int bit;
                if (flip < 0 || o < protos)
                    bit = frand() < 0;
                else {
                    size_t pi = (size_t)(o % protos) * (size_t)kw +
                                (size_t)t * (size_t)cw + (size_t)(ci >> 6);
                    bit = (int)((rows[pi] >> (ci & 63)) & 1);
                    if ((frand() + 1) * 50 < flip)
                        bit ^= 1;
                }
                rows[wi] |= (uint64_t)bit << (ci & 63);
            }
    td_mst_build(rows, cout, kw, &plan, NULL);
    td_mst_layer_stats(&plan, (int64_t)k * k * cin, &st);
    td_bconv_prepare(&c.l, cin, cout, k, 1, 1, rows, &plan, NULL);
    c.h = c.w = hw;
    c.cin = cin;
    c.cout = cout;
    c.k = k;
    c.in = malloc(px * (size_t)cw * 8);
    c.out = malloc(px * (size_t)td_bp_words(cout) * 8);
    c.y = malloc(px * (size_t)cout * 4);
    c.scr = malloc(td_bconv_scratch_words(&c.l) * 8);
    c.ts = malloc((size_t)cout);
    c.thr = calloc((size_t)cout, 4);
    for (size_t i = 0; i < px * (size_t)cw; i++)
        c.in[i] = ((uint64_t)(frand() * 4e9) << 32) ^ (uint64_t)(frand() * 4e9);
    if (cin % 64)
        for (size_t i = 0; i < px; i++)
            c.in[i * (size_t)cw + (size_t)cw - 1] &= (1ull << (cin % 64)) - 1;
    for (int o = 0; o < cout; o++)
        c.ts[o] = 1;
    c.xf = malloc(px * (size_t)cin * 4);
    c.cols = malloc(px * (size_t)(k * k * cin) * 4);
    c.wf = malloc((size_t)(k * k * cin) * (size_t)cout * 4);
    c.yf = malloc(px * (size_t)cout * 4);
    for (size_t i = 0; i < px * (size_t)cin; i++)
        c.xf[i] = frand();
    for (size_t i = 0; i < (size_t)(k * k * cin) * (size_t)cout; i++)
        c.wf[i] = frand();
    double xc, xw;
    c.use_plan = 0;
    measure(run_binary, &c, &dc, &dw);
    c.use_plan = TD_BCONV_CH8;
    measure(run_binary, &c, &xc, &xw);
    c.use_plan = TD_BCONV_PLAN;
    measure(run_binary, &c, &pc, &pw);
    measure(run_fp32, &c, &fc, &fw);
    char lab[16];
    if (flip < 0)
        snprintf(lab, sizeof lab, "rand");
    else
        snprintf(lab, sizeof lab, "%d%%", flip);
    if (xc < dc) { /* the dense baseline is the faster dense kernel */
        dc = xc;
        dw = xw;
    }
    {
        double s1 = slice_layer_ms(&c.l, &plan, hw, 1, c.ts, c.thr);
        double s16 = slice_layer_ms(&c.l, &plan, hw, 16, c.ts, c.thr);
        printf("%4d %4d %3dx%-3d %5s %7.2f %6lld/%-6lld %9.4f %9.4f %9.4f "
               "%9.4f %9.4f  %5.2fx %5.2fx %5.2fx %6.1fx   (wall %.4f %.4f "
               "%.4f)\n",
               cin, cout, hw, hw, lab, st.bitops_ratio,
               (long long)(plan.n_diff + kw), (long long)cout * kw, dc, pc,
               s1, s16, fc, dc / pc, dc / s1, dc / s16, fc / dc, dw, pw, fw);
    }
    td_bconv_release(&c.l);
    td_mst_plan_free(&plan);
    free(rows); free(c.in); free(c.out); free(c.y); free(c.scr); free(c.ts);
    free(c.thr); free(c.xf); free(c.cols); free(c.wf); free(c.yf);
}

/* ------------------------------------------------- diff representations */

/* Children's corrections over 256 random windows, scalar: the stored word
 * masks (one masked XOR-popcount per differing word) against bit-index
 * lists (one shift-and-test per differing bit). Sums are compared so the
 * two cannot silently differ. */
typedef struct rep_ctx {
    const td_mst_plan *p;
    const uint64_t *rows, *wins;
    int kw, nwin;
    uint32_t *bidx; /* (n_bits) word*64 + bit, per child in channel order */
    int32_t *bptr;  /* (cout + 1) */
    int64_t sum;
} rep_ctx;

__attribute__((target("popcnt"))) static void run_masks(void *v)
{
    rep_ctx *c = v;
    int64_t s = 0;
    for (int q = 0; q < c->nwin; q++) {
        const uint64_t *win = c->wins + (size_t)q * (size_t)c->kw;
        for (int j = 0; j < c->p->cout; j++) {
            const uint64_t *wj = c->rows + (size_t)j * (size_t)c->kw;
            for (int32_t e = c->p->diff_ptr[j]; e < c->p->diff_ptr[j + 1]; e++)
                s += __builtin_popcountll((win[c->p->diff_idx[e]] ^
                                           wj[c->p->diff_idx[e]]) &
                                          c->p->diff_mask[e]);
        }
    }
    c->sum = s;
}

static void run_bits(void *v)
{
    rep_ctx *c = v;
    int64_t s = 0;
    for (int q = 0; q < c->nwin; q++) {
        const uint64_t *win = c->wins + (size_t)q * (size_t)c->kw;
        for (int j = 0; j < c->p->cout; j++) {
            const uint64_t *wj = c->rows + (size_t)j * (size_t)c->kw;
            for (int32_t e = c->bptr[j]; e < c->bptr[j + 1]; e++) {
                uint32_t b = c->bidx[e];
                s += (int64_t)(((win[b >> 6] ^ wj[b >> 6]) >> (b & 63)) & 1);
            }
        }
    }
    c->sum = s;
}

static void bench_reps(int cin, int cout, int flip)
{
    int k = 3, cw = td_bp_words(cin), kw = k * k * cw, protos = cout / 8;
    uint64_t *rows = calloc((size_t)cout * (size_t)kw, 8);
    rep_ctx c;
    td_mst_plan plan;
    double mc, mw, bc, bw;
    int64_t s1;
    memset(&c, 0, sizeof c);
    for (int o = 0; o < cout; o++)
        for (int i = 0; i < kw * 64; i++) {
            int ci = i % 64 + (i / 64 % cw) * 64, bit;
            if (ci >= cin)
                continue;
            if (o < protos)
                bit = frand() < 0;
            else
                bit = (int)((rows[(size_t)(o % protos) * (size_t)kw +
                                  (size_t)(i / 64)] >> (i % 64)) & 1) ^
                      ((frand() + 1) * 50 < flip);
            rows[(size_t)o * (size_t)kw + (size_t)(i / 64)] |=
                (uint64_t)bit << (i % 64);
        }
    td_mst_build(rows, cout, kw, &plan, NULL);
    c.p = &plan;
    c.rows = rows;
    c.kw = kw;
    c.nwin = 256;
    c.wins = malloc((size_t)c.nwin * (size_t)kw * 8);
    for (size_t i = 0; i < (size_t)c.nwin * (size_t)kw; i++)
        ((uint64_t *)c.wins)[i] = ((uint64_t)(frand() * 4e9) << 32) ^
                                  (uint64_t)(frand() * 4e9);
    c.bptr = malloc(((size_t)cout + 1) * 4);
    c.bidx = malloc((size_t)plan.distance * 4 + 4);
    {
        int32_t e = 0;
        for (int j = 0; j < cout; j++) {
            c.bptr[j] = e;
            for (int32_t q = plan.diff_ptr[j]; q < plan.diff_ptr[j + 1]; q++)
                for (int b = 0; b < 64; b++)
                    if (plan.diff_mask[q] >> b & 1)
                        c.bidx[e++] = (uint32_t)plan.diff_idx[q] * 64u +
                                      (uint32_t)b;
        }
        c.bptr[cout] = e;
    }
    measure(run_masks, &c, &mc, &mw);
    s1 = c.sum;
    measure(run_bits, &c, &bc, &bw);
    printf("%4d %4d %4d%%  %8lld bits %6d words   masks %.4f ms  bits %.4f ms"
           "  bits/masks %.2fx%s\n",
           cin, cout, flip, (long long)plan.distance, (int)plan.n_diff, mc,
           bc, bc / mc, s1 == c.sum ? "" : "  MISMATCH");
    td_mst_plan_free(&plan);
    free(rows); free((void *)c.wins); free(c.bptr); free(c.bidx);
}

/* ------------------------------------------------------------ network */

typedef struct net_ctx {
    td_bnn_model *m;
    td_arena ar;
    float *in, *logits;
    int use_plan, n;
    /* fp32 twin */
    float *wts[TD_BNN_MAX_BLOCKS], *act[2], *cols;
} net_ctx;

static void run_net(void *p)
{
    net_ctx *c = p;
    td_bnn_forward(c->m, c->use_plan | (avx2_mode ? TD_BNN_AVX2 : 0), &c->ar,
                   c->in, c->n, c->logits, NULL);
}

/* The same network in fp32: stem, each block as im2col + sgemm with a
 * per-channel affine (its BatchNorm), sign as the activation, average
 * pool, classifier. Strides are handled by im2col on the strided grid. */
static void im2col_s(const float *x, int h, int w, int cin, int k, int s,
                     int p, float *cols, int ho, int wo)
{
    for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++) {
            float *c = cols + ((size_t)oy * (size_t)wo + (size_t)ox) *
                                  (size_t)(k * k * cin);
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++, c += cin) {
                    int iy = oy * s - p + ky, ix = ox * s - p + kx;
                    if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                        memset(c, 0, (size_t)cin * sizeof *c);
                    else
                        memcpy(c, x + ((size_t)iy * (size_t)w + (size_t)ix) *
                                          (size_t)cin,
                               (size_t)cin * sizeof *c);
                }
        }
}

static void run_fp32_net(void *p)
{
    net_ctx *c = p;
    const td_bnn_model *m = c->m;
    const td_bnn_arch *a = &m->arch;
    float *x = c->act[0], *y = c->act[1], pooled[4096], logits[1024];
    int h = m->stem_h, w = m->stem_w, cin = a->stem.cout, n = c->n;
    size_t in_px = (size_t)a->in_h * (size_t)a->in_w;
    /* the stem as im2col + sgemm like every fp32 layer here (the binary
     * network's own stem is a direct kernel, td_bnn_stem.h); a batch is
     * one sgemm per layer over the stacked windows of all images */
    for (int i = 0; i < n; i++)
        im2col_s(c->in + (size_t)i * in_px, a->in_h, a->in_w, 1, a->stem.k,
                 a->stem.stride, a->stem.pad,
                 c->cols + (size_t)i * (size_t)(h * w) *
                               (size_t)(a->stem.k * a->stem.k),
                 h, w);
    td_sgemm(n * h * w, cin, a->stem.k * a->stem.k, c->cols,
             a->stem.k * a->stem.k, c->wts[TD_BNN_MAX_BLOCKS - 1], cin, 0.0f,
             x, cin);
    for (int i = 0; i < a->n_blocks; i++) {
        const td_bnn_block *b = &m->blocks[i];
        int kk = b->spec.k * b->spec.k * cin, co = b->spec.cout;
        size_t po = (size_t)b->h_out * (size_t)b->w_out;
        for (int j = 0; j < n; j++)
            im2col_s(x + (size_t)j * (size_t)(h * w) * (size_t)cin, h, w,
                     cin, b->spec.k, b->spec.stride, b->spec.pad,
                     c->cols + (size_t)j * po * (size_t)kk, b->h_out,
                     b->w_out);
        td_sgemm(n * b->h_out * b->w_out, co, kk, c->cols, kk, c->wts[i], co,
                 0.0f, y, co);
        for (size_t q = 0; q < (size_t)n * po; q++)
            for (int o = 0; o < co; o++) {
                float v = b->scale[o] * y[q * (size_t)co + (size_t)o] +
                          b->bias[o];
                y[q * (size_t)co + (size_t)o] =
                    i + 1 < a->n_blocks ? (v < 0 ? -1.0f : 1.0f) : v;
            }
        h = b->h_out;
        w = b->w_out;
        cin = co;
        float *t = x;
        x = y;
        y = t;
    }
    for (int j = 0; j < n; j++) {
        td_k_avgpool(x + (size_t)j * (size_t)(h * w) * (size_t)cin, 1, h * w,
                     cin, pooled);
        for (int q = 0; q < a->classes; q++)
            logits[q] = m->fc_b[q] +
                        td_k_dot(m->fc_w + (size_t)q * (size_t)cin, pooled,
                                 cin);
        c->logits[j] = logits[0];
    }
}

/* The binary layers alone (no stem, pool or classifier), n images per
 * call, on random input bits: the XOR-popcount layers (flags, with the
 * threshold to packed bits) or the bit-sliced ones (td_bnn_slice.h), in
 * chunks of the model's slice_chunk images as td_bnn_forward runs them. */
typedef struct layers_ctx {
    td_bnn_model *m;
    int n, flags, sliced, only; /* only: one block, or -1 for all */
    uint64_t *in[TD_BNN_MAX_BLOCKS], *out, *scr;
    int32_t *y;
    int64_t *ysum;
} layers_ctx;

static void run_layers(void *p)
{
    layers_ctx *c = p;
    const td_bnn_model *m = c->m;
    int h = m->stem_h, w = m->stem_w;
    for (int i = 0; i < m->arch.n_blocks; i++) {
        const td_bnn_block *b = &m->blocks[i];
        if (c->only >= 0 && i != c->only) {
            h = b->h_out;
            w = b->w_out;
            continue;
        }
        if (c->sliced) {
            const td_bslice *l = &m->slice[i];
            for (int i0 = 0; i0 < c->n; i0 += m->slice_chunk) {
                int nb = c->n - i0 < m->slice_chunk ? c->n - i0
                                                   : m->slice_chunk;
                td_bslice_forward(l, avx2_mode ? TD_BSLICE_AVX2 : 0, c->in[i],
                                  td_bslice_stride(l->in.lw, m->slice_chunk),
                                  nb, c->out, c->ysum, c->scr);
            }
        } else {
            size_t po = (size_t)b->h_out * (size_t)b->w_out * (size_t)c->n;
            td_bconv_forward(&b->conv,
                             c->flags | (avx2_mode ? TD_BCONV_PORTABLE : 0),
                             c->in[i], c->n, h, w, c->y, c->scr);
            if (i + 1 < m->arch.n_blocks)
                td_bnn_threshold(c->y, po, b->spec.cout, b->tsign, b->thr,
                                 c->out);
        }
        h = b->h_out;
        w = b->w_out;
    }
}

static void layers_init(layers_ctx *c, td_bnn_model *m, int n, int sliced,
                        int flags)
{
    size_t maxout = 0, maxscr = 0, maxy = 0;
    int h = m->stem_h, w = m->stem_w;
    memset(c, 0, sizeof *c);
    c->m = m;
    c->n = n;
    c->sliced = sliced;
    c->flags = flags;
    for (int i = 0; i < m->arch.n_blocks; i++) {
        const td_bnn_block *b = &m->blocks[i];
        size_t words, g = TD_BSLICE_GUARD;
        if (sliced) {
            const td_bslice *l = &m->slice[i];
            words = (size_t)l->cin * td_bslice_stride(l->in.lw, m->slice_chunk);
            if ((size_t)l->cout * td_bslice_stride(l->out.lw, m->slice_chunk) > maxout)
                maxout = (size_t)l->cout * td_bslice_stride(l->out.lw, m->slice_chunk);
            if (td_bslice_scratch_words(l) > maxscr)
                maxscr = td_bslice_scratch_words(l);
        } else {
            size_t po = (size_t)b->h_out * (size_t)b->w_out * (size_t)n;
            words = (size_t)n * (size_t)h * (size_t)w * (size_t)td_bp_words(b->cin);
            if (po * (size_t)td_bp_words(b->spec.cout) > maxout)
                maxout = po * (size_t)td_bp_words(b->spec.cout);
            if (po * (size_t)b->spec.cout > maxy)
                maxy = po * (size_t)b->spec.cout;
            if (td_bconv_scratch_words(&b->conv) > maxscr)
                maxscr = td_bconv_scratch_words(&b->conv);
            g = 0;
        }
        c->in[i] = calloc(words + 2 * g + 8, 8);
        for (size_t q = 0; q < words; q++) {
            uint64_t v = ((uint64_t)(frand() * 4e9f) << 32) ^
                         (uint64_t)(frand() * 4e9f);
            /* padding bits past Cin stay zero in packed activations */
            if (!sliced && b->cin % 64)
                v &= q % (size_t)td_bp_words(b->cin) ==
                             (size_t)td_bp_words(b->cin) - 1
                         ? (1ULL << (b->cin % 64)) - 1
                         : ~0ULL;
            c->in[i][g + q] = v;
        }
        c->in[i] += g;
        h = b->h_out;
        w = b->w_out;
    }
    c->out = calloc(maxout + 2 * TD_BSLICE_GUARD + 8, 8);
    c->scr = aligned_alloc(64, (maxscr * 8 + 63) / 64 * 64);
    c->y = malloc((maxy + 1) * 4);
    c->ysum = malloc((size_t)(n + 8) * 4096 * 8);
}

static void layers_free(layers_ctx *c)
{
    for (int i = 0; i < c->m->arch.n_blocks; i++)
        free(c->in[i] - (c->sliced ? TD_BSLICE_GUARD : 0));
    free(c->out); free(c->scr); free(c->y); free(c->ysum);
}

/* Median CPU ms per call of the binary layers, block by block (per[]),
 * summed: mode 0 XOR-popcount dense (the faster dense kernel), 1 bit-sliced
 * plans, 2 bit-sliced dense (every channel from its own row), 3
 * XOR-popcount plans. */
static double layers_ms(td_bnn_model *m, int n, int mode, double *per)
{
    layers_ctx c;
    double ms, wall, ms2, sum = 0;
    td_error err;
    if (mode == 2 && td_bnn_slice_rebuild(m, 0, &err) != TD_OK) {
        fprintf(stderr, "bnn_bench: %s\n", err.msg);
        exit(1);
    }
    layers_init(&c, m, n, mode == 1 || mode == 2,
                mode == 3 ? TD_BCONV_PLAN : 0);
    for (int i = 0; i < m->arch.n_blocks; i++) {
        c.only = i;
        measure(run_layers, &c, &ms, &wall);
        if (mode == 0) { /* the 8-channel dense kernel too; the faster */
            c.flags = TD_BCONV_CH8;
            measure(run_layers, &c, &ms2, &wall);
            c.flags = 0;
            if (ms2 < ms)
                ms = ms2;
        }
        if (per)
            per[i] = ms;
        sum += ms;
    }
    ms = sum;
    layers_free(&c);
    if (mode == 2 && td_bnn_slice_rebuild(m, 1, &err) != TD_OK) {
        fprintf(stderr, "bnn_bench: %s\n", err.msg);
        exit(1);
    }
    return ms;
}

/* Times of model m at batch n: dense (the faster dense kernel), plan,
 * fp32 of the same shape. Prints one block; returns nothing. */
static void net_measure(td_bnn_model *m, const char *label, int n,
                        int table)
{
    net_ctx c;
    const td_bnn_arch arch = m->arch;
    double dc, dw, pc, pw, fc, fw, sc, sw, ac, aw;
    size_t maxact = 0, maxcols = 0, in_n;
    memset(&c, 0, sizeof c);
    c.m = m;
    c.n = n;
    in_n = (size_t)n * (size_t)arch.in_h * (size_t)arch.in_w;
    td_arena_init(&c.ar, td_bnn_scratch_bytes(c.m), NULL);
    c.in = malloc(in_n * 4);
    c.logits = malloc((size_t)n * (size_t)arch.classes * 4);
    for (size_t i = 0; i < in_n; i++)
        c.in[i] = frand() * 2;
    {
        int cin = arch.stem.cout;
        maxact = (size_t)c.m->stem_h * (size_t)c.m->stem_w * (size_t)cin;
        maxcols = (size_t)c.m->stem_h * (size_t)c.m->stem_w *
                  (size_t)(arch.stem.k * arch.stem.k);
        c.wts[TD_BNN_MAX_BLOCKS - 1] =
            malloc((size_t)(arch.stem.k * arch.stem.k) * (size_t)cin * 4);
        for (int q = 0; q < arch.stem.k * arch.stem.k * cin; q++)
            c.wts[TD_BNN_MAX_BLOCKS - 1][q] = frand();
        for (int i = 0; i < arch.n_blocks; i++) {
            const td_bnn_block *b = &c.m->blocks[i];
            size_t kk = (size_t)(b->spec.k * b->spec.k * cin);
            size_t po = (size_t)b->h_out * (size_t)b->w_out;
            c.wts[i] = malloc(kk * (size_t)b->spec.cout * 4);
            for (size_t q = 0; q < kk * (size_t)b->spec.cout; q++)
                c.wts[i][q] = frand();
            if (po * (size_t)b->spec.cout > maxact)
                maxact = po * (size_t)b->spec.cout;
            if (po * kk > maxcols)
                maxcols = po * kk;
            cin = b->spec.cout;
        }
    }
    c.act[0] = malloc(maxact * 4 * (size_t)n);
    c.act[1] = malloc(maxact * 4 * (size_t)n);
    c.cols = malloc(maxcols * 4 * (size_t)n);
    double xc, xw;
    c.use_plan = 0;
    measure(run_net, &c, &dc, &dw);
    c.use_plan = TD_BCONV_CH8;
    measure(run_net, &c, &xc, &xw);
    c.use_plan = TD_BCONV_PLAN;
    measure(run_net, &c, &pc, &pw);
    c.use_plan = TD_BCONV_PLAN | TD_BNN_SLICE;
    measure(run_net, &c, &sc, &sw);
    c.use_plan = TD_BCONV_PLAN | TD_BNN_AUTO; /* what the daemon runs */
    measure(run_net, &c, &ac, &aw);
    measure(run_fp32_net, &c, &fc, &fw);
    if (!table)
        printf("%-22s dense kernels: 8-pixel %.4f ms, 8-channel %.4f ms\n",
               "", dc, xc);
    if (xc < dc) { /* the dense baseline is the faster dense kernel */
        dc = xc;
        dw = xw;
    }
    if (table) {
        /* the binary layers alone; "auto" sums, block by block, the
         * executor td_bnn_block_sliced picks for a pass of min(n, chunk)
         * images (the conversions between forms are in the network
         * times, not here) */
        double sp[TD_BNN_MAX_BLOCKS], xp[TD_BNN_MAX_BLOCKS];
        double ld = layers_ms(m, n, 0, NULL), lp = 0, lsd = 0, la = 0;
        double lx = layers_ms(m, n, 3, xp);
        int nb = m->slice_chunk > 0 && n > m->slice_chunk ? m->slice_chunk : n;
        char pick[TD_BNN_MAX_BLOCKS + 1];
        if (m->slice_ok) {
            lp = layers_ms(m, n, 1, sp);
            lsd = layers_ms(m, n, 2, NULL);
        }
        for (int i = 0; i < arch.n_blocks; i++) {
            int sl = td_bnn_block_sliced(
                m, i, nb, TD_BNN_AUTO | (avx2_mode ? TD_BNN_AVX2 : 0));
            pick[i] = sl ? 'S' : 'X';
            la += sl ? sp[i] : xp[i];
        }
        pick[arch.n_blocks] = 0;
        (void)lx;
        printf("%-28s %3d %6.2fx | %8.4f %8.4f %8.4f %8.4f %-5s %6.2fx | "
               "%8.4f %8.4f %8.4f %8.4f %8.3f %6.2fx %6.1fx  (wall %.4f "
               "%.4f %.4f)\n",
               label, n, m->total.bitops_ratio, ld, lsd, lp, la, pick,
               la > 0 ? ld / la : 0, dc, pc, sc, ac, fc, dc / ac, fc / ac,
               dw, aw, fw);
        goto done;
    }
    printf("%-22s bitops/img dense %lld mst %lld (%.2fx)\n", label,
           (long long)c.m->total.bitops_dense,
           (long long)c.m->total.bitops_mst, c.m->total.bitops_ratio);
    printf("  dense %.4f ms  plan %.4f ms  sliced plan %.4f ms  auto %.4f "
           "ms  fp32 %.4f ms   speed-up over dense: plan %.2fx  sliced "
           "%.2fx  auto %.2fx  fp32/auto %.1fx  (wall %.4f %.4f %.4f %.4f)\n",
           dc, pc, sc, ac, fc, dc / pc, dc / sc, dc / ac, fc / ac, dw, pw,
           sw, fw);
done:
    for (int i = 0; i < TD_BNN_MAX_BLOCKS; i++)
        free(c.wts[i]);
    free(c.act[0]); free(c.act[1]); free(c.cols); free(c.in); free(c.logits);
    td_arena_free(&c.ar);
}

static void bench_net(const char *arch_json, int flip, const char *label)
{
    td_bnn_arch arch;
    bnn_random r;
    td_bnn_model *m = NULL;
    td_error err;
    if (td_bnn_arch_parse(arch_json, &arch, &err) != TD_OK ||
        bnn_random_latent(&r, &arch, 7, flip) ||
        td_bnn_from_latent(&m, &r.lat, &err) != TD_OK) {
        fprintf(stderr, "bnn_bench: %s\n", err.msg);
        exit(1);
    }
    net_measure(m, label, 1, 0);
    td_bnn_free(m);
    bnn_random_free(&r);
}

/* Part 4: trained model files at batch 1 and 16. */
static int bench_files(int nfiles, char **files)
{
    printf("Part 4: model files. CPU ms per call of `batch` images.\n"
           "  binary layers alone: XOR-popcount dense | bit-sliced dense | "
           "bit-sliced MST plan | MST plan, each block on the executor "
           "TD_BNN_AUTO picks (S bit-sliced, X XOR-popcount) | dense/auto\n"
           "  whole network: XOR-popcount dense | XOR-popcount plan | "
           "bit-sliced plan | auto (the daemon's) | fp32 | dense/auto | "
           "fp32/auto\n");
    printf("%-28s %3s %7s | %8s %8s %8s %8s %-5s %7s | %8s %8s %8s %8s %8s "
           "%7s %6s\n",
           "model", "b", "bitops", "dense", "sl_dense", "sl_plan", "auto",
           "pick", "d/a", "dense", "xp_plan", "sl_plan", "auto", "fp32",
           "d/a", "f/a");
    for (int i = 0; i < nfiles; i++) {
        td_bnn_model *m = NULL;
        td_error err;
        const char *base = strrchr(files[i], '/');
        if (td_bnn_open(&m, files[i], &err) != TD_OK) {
            fprintf(stderr, "bnn_bench: %s: %s\n", files[i], err.msg);
            return 1;
        }
        base = base ? base + 1 : files[i];
        if (!m->slice_ok)
            printf("# %s: not sliced (%s)\n", base, m->slice_note);
        net_measure(m, base, 1, 1);
        net_measure(m, base, 16, 1);
        td_bnn_free(m);
    }
    return 0;
}

#define FMNIST_ARCH                                                         \
    "{\"in_ch\":1,\"in_h\":28,\"in_w\":28,"                                 \
    "\"stem\":{\"cout\":32,\"k\":3,\"stride\":1,\"pad\":1},"                \
    "\"blocks\":[{\"cout\":64,\"k\":3,\"stride\":2,\"pad\":1},"             \
    "{\"cout\":64,\"k\":3,\"stride\":1,\"pad\":1},"                         \
    "{\"cout\":128,\"k\":3,\"stride\":2,\"pad\":1},"                        \
    "{\"cout\":128,\"k\":3,\"stride\":1,\"pad\":1}],\"classes\":10}"
#define WIDE_ARCH                                                           \
    "{\"in_ch\":1,\"in_h\":28,\"in_w\":28,"                                 \
    "\"stem\":{\"cout\":64,\"k\":3,\"stride\":1,\"pad\":1},"                \
    "\"blocks\":[{\"cout\":128,\"k\":3,\"stride\":2,\"pad\":1},"            \
    "{\"cout\":128,\"k\":3,\"stride\":1,\"pad\":1},"                        \
    "{\"cout\":256,\"k\":3,\"stride\":2,\"pad\":1},"                        \
    "{\"cout\":256,\"k\":3,\"stride\":1,\"pad\":1}],\"classes\":10}"

int main(int argc, char **argv)
{
    static const int shapes[][3] = {{64, 64, 14}, {128, 128, 14},
                                    {256, 256, 7}};
    static const int flips[] = {-1, 20, 5, 1, 0};
    if (argc > 1)
        secs = atof(argv[1]);
    td_blas_set_threads(1);
    if (argc > 3 && !strcmp(argv[2], "--avx2")) {
        avx2_mode = 1;
        argv++;
        argc--;
        printf("bnn_bench --avx2: as an AVX2-only machine runs (AVX2 "
               "bit-sliced kernels and stem; scalar POPCNT XOR kernels)\n");
    }
    if (argc > 3 && !strcmp(argv[2], "--model")) {
        printf("bnn_bench: one thread, medians of CPU ms per call (a call "
               "is `batch` images); popcnt %s\n",
               td_bp_has_popcnt() ? "yes" : "no");
        return bench_files(argc - 3, argv + 3);
    }
    printf("bnn_bench: one thread, medians of CPU ms per call; popcnt %s\n",
           td_bp_has_popcnt() ? "yes" : "no");
    printf("Part 1: one 3x3 layer (stride 1, pad 1), one image; flip = %% "
           "of bits flipped in near-copy channels\n");
    printf(" cin cout  HxW   flip  bitops  words plan/dense   dense_ms   "
           "plan_ms  sl_b1_ms sl_b16_ms   fp32_ms  d/plan d/sl1 d/sl16 "
           "fp32/dense\n  (sl: the bit-sliced plan, per image at batch 1 "
           "and 16)\n");
    for (size_t s = 0; argc < 3 && s < sizeof shapes / sizeof *shapes; s++)
        for (size_t f = 0; f < sizeof flips / sizeof *flips; f++) {
            bench_layer(shapes[s][0], shapes[s][1], shapes[s][2], flips[f]);
        }
    if (argc < 3)
        printf("\nPart 2: children's corrections, 256 windows, scalar: word masks "
           "(stored) vs bit-index lists\n");
    for (int f = 0; argc < 3 && f < 4; f++) {
        static const int fl[] = {20, 5, 1, 0};
        bench_reps(128, 128, fl[f]);
    }
    printf("\nPart 3: whole network, one image\n");
    bench_net(FMNIST_ARCH, -1, "fmnist random");
    bench_net(FMNIST_ARCH, 5, "fmnist near-copy 5%");
    bench_net(FMNIST_ARCH, 1, "fmnist near-copy 1%");
    bench_net(FMNIST_ARCH, 0, "fmnist exact copies");
    bench_net(WIDE_ARCH, -1, "wide random");
    bench_net(WIDE_ARCH, 1, "wide near-copy 1%");
    bench_net(WIDE_ARCH, 0, "wide exact copies");
    return 0;
}
