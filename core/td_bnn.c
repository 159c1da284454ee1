/* td_bnn: see td_bnn.h. */
#include "config.h"

#include "td_bnn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "td_bitpack.h"

int td_bconv_out(int in, int k, int stride, int pad)
{
    if (in < 1 || k < 1 || stride < 1 || pad < 0 || in + 2 * pad < k)
        return 0;
    return (in + 2 * pad - k) / stride + 1;
}

static size_t al8(size_t n) { return (n + 7) & ~(size_t)7; }

static td_status build_exec(td_bnn_exec *x, const td_mst_plan *p,
                            const uint64_t *w, int kw, td_error *err)
{
    int steps = p->cout - 1;
    size_t ne = (size_t)p->n_diff, o_mask, o_wj, o_child, o_par, o_2d, o_ptr,
           o_idx, total;
    unsigned char *m;
    int32_t e = 0;
    o_mask = 0;
    o_wj = o_mask + ne * 8;
    o_child = o_wj + ne * 8;
    o_par = al8(o_child + (size_t)steps * 4);
    o_2d = al8(o_par + (size_t)steps * 4);
    o_ptr = al8(o_2d + (size_t)steps * 4);
    o_idx = al8(o_ptr + ((size_t)steps + 1) * 4);
    total = al8(o_idx + ne * 4);
    m = malloc(total ? total : 1);
    if (!m)
        return td_error_set(err, TD_ENOMEM, "bconv: out of memory");
    x->mem = m;
    x->n_steps = steps;
    x->root = p->order[0];
    x->emask = (uint64_t *)(void *)(m + o_mask);
    x->ewj = (uint64_t *)(void *)(m + o_wj);
    x->child = (int32_t *)(void *)(m + o_child);
    x->parent = (int32_t *)(void *)(m + o_par);
    x->two_d = (int32_t *)(void *)(m + o_2d);
    x->eptr = (int32_t *)(void *)(m + o_ptr);
    x->eidx = (uint32_t *)(void *)(m + o_idx);
    /* Steps in BFS order, entries contiguous in step order: the forward
     * streams through both arrays once per pixel. */
    for (int s = 0; s < steps; s++) {
        int j = p->order[s + 1];
        int32_t d = 0;
        x->child[s] = j;
        x->parent[s] = p->parent[j];
        x->eptr[s] = e;
        for (int32_t q = p->diff_ptr[j]; q < p->diff_ptr[j + 1]; q++) {
            x->eidx[e] = (uint32_t)p->diff_idx[q];
            x->emask[e] = p->diff_mask[q];
            x->ewj[e] = w[(size_t)j * (size_t)kw + (size_t)p->diff_idx[q]];
            d += __builtin_popcountll(p->diff_mask[q]);
            e++;
        }
        x->two_d[s] = 2 * d;
    }
    x->eptr[steps] = e;
    return TD_OK;
}

td_status td_bconv_prepare(td_bconv *l, int cin, int cout, int k, int stride,
                           int pad, const uint64_t *w,
                           const td_mst_plan *plan, td_error *err)
{
    memset(l, 0, sizeof *l);
    l->exec.n_steps = -1;
    if (cin < 1 || cout < 1 || k < 1 || stride < 1 || pad < 0 || pad >= k)
        return td_error_set(err, TD_EINVAL,
                            "bconv: bad geometry cin=%d cout=%d k=%d "
                            "stride=%d pad=%d", cin, cout, k, stride, pad);
    l->cin = cin;
    l->cout = cout;
    l->k = k;
    l->stride = stride;
    l->pad = pad;
    l->cw = td_bp_words(cin);
    l->kw = k * k * l->cw;
    l->w = w;
    if (plan && (plan->cout != cout || plan->kw != l->kw))
        return td_error_set(err, TD_EINVAL,
                            "bconv: plan is for %d rows of %d words, layer "
                            "has %d of %d", plan->cout, plan->kw, cout,
                            l->kw);
    l->tapsum = malloc((size_t)k * (size_t)k * (size_t)cout * sizeof(int32_t));
    if (!l->tapsum)
        return td_error_set(err, TD_ENOMEM, "bconv: out of memory");
    for (int t = 0; t < k * k; t++)
        for (int o = 0; o < cout; o++) {
            const uint64_t *r =
                w + (size_t)o * (size_t)l->kw + (size_t)t * (size_t)l->cw;
            l->tapsum[(size_t)t * (size_t)cout + (size_t)o] =
                cin - 2 * (int32_t)td_bp_popcount(r, (size_t)l->cw);
        }
    if (plan) {
        td_status st = build_exec(&l->exec, plan, w, l->kw, err);
        if (st != TD_OK) {
            td_bconv_release(l);
            return st;
        }
    }
    return TD_OK;
}

void td_bconv_release(td_bconv *l)
{
    if (!l)
        return;
    free(l->tapsum);
    free(l->exec.mem);
    l->tapsum = NULL;
    l->exec.mem = NULL;
    l->exec.n_steps = -1;
}

size_t td_bconv_scratch_words(const td_bconv *l)
{
    /* the window, then the padded-tap list (as int32 pairs in words) */
    return (size_t)l->kw + (size_t)l->k * (size_t)l->k;
}

/* The per-pixel kernels, written once and instantiated with and without
 * the POPCNT instruction (always_inline lets the builtin expand with the
 * caller's target). */
#define TD_AI static inline __attribute__((always_inline))

TD_AI void px_dense(const uint64_t *restrict win, const uint64_t *restrict w,
                    int cout, int kw, int32_t kbits, int32_t *restrict y)
{
    int o = 0;
    /* four channels at a time: each window word is loaded once for four
     * independent popcount chains */
    for (; o + 4 <= cout; o += 4) {
        const uint64_t *r0 = w + (size_t)o * (size_t)kw, *r1 = r0 + kw,
                       *r2 = r1 + kw, *r3 = r2 + kw;
        int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (int i = 0; i < kw; i++) {
            uint64_t a = win[i];
            s0 += __builtin_popcountll(a ^ r0[i]);
            s1 += __builtin_popcountll(a ^ r1[i]);
            s2 += __builtin_popcountll(a ^ r2[i]);
            s3 += __builtin_popcountll(a ^ r3[i]);
        }
        y[o] = kbits - 2 * s0;
        y[o + 1] = kbits - 2 * s1;
        y[o + 2] = kbits - 2 * s2;
        y[o + 3] = kbits - 2 * s3;
    }
    for (; o < cout; o++) {
        const uint64_t *r = w + (size_t)o * (size_t)kw;
        int32_t s = 0;
        for (int i = 0; i < kw; i++)
            s += __builtin_popcountll(win[i] ^ r[i]);
        y[o] = kbits - 2 * s;
    }
}

TD_AI void px_plan(const uint64_t *restrict win, const uint64_t *restrict w,
                   int kw, int32_t kbits, const td_bnn_exec *x,
                   int32_t *restrict y)
{
    const uint64_t *r = w + (size_t)x->root * (size_t)kw;
    const int32_t *eptr = x->eptr;
    const uint32_t *eidx = x->eidx;
    const uint64_t *emask = x->emask, *ewj = x->ewj;
    int32_t s = 0;
    for (int i = 0; i < kw; i++)
        s += __builtin_popcountll(win[i] ^ r[i]);
    y[x->root] = kbits - 2 * s;
    for (int st = 0; st < x->n_steps; st++) {
        int32_t acc = 0;
        for (int32_t e = eptr[st]; e < eptr[st + 1]; e++)
            acc += __builtin_popcountll((win[eidx[e]] ^ ewj[e]) & emask[e]);
        y[x->child[st]] = y[x->parent[st]] + x->two_d[st] - 4 * acc;
    }
}

TD_AI void conv_body(const td_bconv *l, int use_plan, const uint64_t *in,
                     int n, int h, int w, int32_t *y, uint64_t *scratch)
{
    int k = l->k, cw = l->cw, kw = l->kw, cout = l->cout;
    int ho = td_bconv_out(h, k, l->stride, l->pad);
    int wo = td_bconv_out(w, k, l->stride, l->pad);
    int32_t kbits = k * k * l->cin;
    uint64_t *win = scratch;
    int32_t *bad = (int32_t *)(void *)(scratch + kw);
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                int nbad = 0;
                int32_t *yo = y + (((size_t)b * (size_t)ho + (size_t)oy) *
                                       (size_t)wo + (size_t)ox) * (size_t)cout;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * l->stride - l->pad + ky;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ox * l->stride - l->pad + kx;
                        uint64_t *dst = win + (size_t)(ky * k + kx) *
                                                  (size_t)cw;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) {
                            for (int q = 0; q < cw; q++)
                                dst[q] = 0;
                            bad[nbad++] = ky * k + kx;
                        } else {
                            /* a word loop, not memcpy: cw is 1..8 */
                            const uint64_t *src =
                                in + (((size_t)b * (size_t)h + (size_t)iy) *
                                          (size_t)w + (size_t)ix) *
                                         (size_t)cw;
                            for (int q = 0; q < cw; q++)
                                dst[q] = src[q];
                        }
                    }
                }
                if (use_plan)
                    px_plan(win, l->w, kw, kbits, &l->exec, yo);
                else
                    px_dense(win, l->w, cout, kw, kbits, yo);
                for (int t = 0; t < nbad; t++) {
                    const int32_t *ts =
                        l->tapsum + (size_t)bad[t] * (size_t)cout;
                    for (int o = 0; o < cout; o++)
                        yo[o] -= ts[o];
                }
            }
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("popcnt"))) static void
conv_popcnt(const td_bconv *l, int use_plan, const uint64_t *in, int n, int h,
            int w, int32_t *y, uint64_t *scratch)
{
    conv_body(l, use_plan, in, n, h, w, y, scratch);
}
#endif

static void conv_generic(const td_bconv *l, int use_plan, const uint64_t *in,
                         int n, int h, int w, int32_t *y, uint64_t *scratch)
{
    conv_body(l, use_plan, in, n, h, w, y, scratch);
}

void td_bconv_forward(const td_bconv *l, int use_plan, const uint64_t *in,
                      int n, int h, int w, int32_t *y, uint64_t *scratch)
{
    if (use_plan && l->exec.n_steps < 0)
        use_plan = 0;
#if defined(__x86_64__) || defined(__i386__)
    if (td_bp_has_popcnt()) {
        conv_popcnt(l, use_plan, in, n, h, w, y, scratch);
        return;
    }
#endif
    conv_generic(l, use_plan, in, n, h, w, y, scratch);
}

void td_bfc_forward(const td_bconv *l, int use_plan, const uint64_t *in,
                    int n, int32_t *y, uint64_t *scratch)
{
    td_bconv_forward(l, use_plan, in, n, 1, 1, y, scratch);
}

void td_bnn_threshold(const int32_t *y, size_t rows, int cout,
                      const int8_t *s, const int32_t *t, uint64_t *out)
{
    int cw = td_bp_words(cout);
    for (size_t r = 0; r < rows; r++) {
        const int32_t *yr = y + r * (size_t)cout;
        uint64_t *o = out + r * (size_t)cw;
        memset(o, 0, (size_t)cw * sizeof *o);
        for (int c = 0; c < cout; c++)
            o[c >> 6] |= (uint64_t)(s[c] * yr[c] < t[c]) << (c & 63);
    }
}

void td_bnn_fold_threshold(double m, double b, int64_t k_bits, int8_t *s,
                           int32_t *t)
{
    double q, lim = (double)k_bits + 1;
    if (m == 0 || !isfinite(m) || !isfinite(b / m)) {
        *s = 0;
        *t = b < 0 ? 1 : 0;
        return;
    }
    q = -b / m;                  /* the crossing point m*y + b = 0 */
    if (m > 0) {                 /* bit iff y < q iff y < ceil(q) */
        *s = 1;
        q = ceil(q);
    } else {                     /* bit iff y > q iff -y < ceil(-q) */
        *s = -1;
        q = ceil(-q);
    }
    if (q > lim)
        q = lim;
    if (q < -lim)
        q = -lim;
    *t = (int32_t)q;
}
