/* td_bnn: see td_bnn.h. */
#include "config.h"

#include "td_bnn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "td_bitpack.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TD_BNN_X86 1
#endif

int td_bconv_out(int in, int k, int stride, int pad)
{
    if (in < 1 || k < 1 || stride < 1 || pad < 0 || in + 2 * pad < k)
        return 0;
    return (in + 2 * pad - k) / stride + 1;
}

static size_t al8(size_t n) { return (n + 7) & ~(size_t)7; }

/* rows (n, kw) -> (ceil(n/8), kw, 8), missing channels zero. */
static void interleave8(const uint64_t *rows, int n, int kw, uint64_t *out)
{
    int blocks = (n + 7) / 8;
    memset(out, 0, (size_t)blocks * (size_t)kw * 8 * sizeof *out);
    for (int o = 0; o < n; o++)
        for (int i = 0; i < kw; i++)
            out[((size_t)(o / 8) * (size_t)kw + (size_t)i) * 8 +
                (size_t)(o % 8)] = rows[(size_t)o * (size_t)kw + (size_t)i];
}

static size_t il8_words(int n, int kw) { return (size_t)((n + 7) / 8) * (size_t)kw * 8; }

int td_bconv_has_simd(void);

static td_status build_exec(td_bnn_exec *x, const td_mst_plan *p,
                            const uint64_t *w, int kw, td_error *err)
{
    int cost = td_bconv_has_simd() ? TD_BNN_DELTA_COST_SIMD
                                   : TD_BNN_DELTA_COST;
    int c = p->cout, n_dense = 0, steps = 0;
    size_t ne = 0, o_dw, o_mask, o_wj, o_dch, o_child, o_par, o_2d, o_ptr,
           o_idx, total;
    unsigned char *m;
    int32_t e = 0;
    /* which channels go dense: the root and every child whose diff list
     * is not clearly cheaper than its row */
    for (int i = 0; i < c; i++) {
        int j = p->order[i];
        int32_t n = p->diff_ptr[j + 1] - p->diff_ptr[j];
        if (p->parent[j] < 0 || n * cost >= kw)
            n_dense++;
        else
            ne += (size_t)n;
    }
    steps = c - n_dense;
    o_dw = 0;
    o_mask = o_dw + (size_t)n_dense * (size_t)kw * 8 + il8_words(n_dense, kw) * 8;
    o_wj = o_mask + ne * 8;
    o_dch = o_wj + ne * 8;
    o_child = al8(o_dch + (size_t)n_dense * 4);
    o_par = al8(o_child + (size_t)steps * 4);
    o_2d = al8(o_par + (size_t)steps * 4);
    o_ptr = al8(o_2d + (size_t)steps * 4);
    o_idx = al8(o_ptr + ((size_t)steps + 1) * 4);
    total = al8(o_idx + ne * 4);
    m = malloc(total ? total : 1);
    if (!m)
        return td_error_set(err, TD_ENOMEM, "bconv: out of memory");
    x->mem = m;
    x->n_dense = n_dense;
    x->n_steps = steps;
    x->dense_w = (uint64_t *)(void *)(m + o_dw);
    x->dense_wv = x->dense_w + (size_t)n_dense * (size_t)kw;
    x->emask = (uint64_t *)(void *)(m + o_mask);
    x->ewj = (uint64_t *)(void *)(m + o_wj);
    x->dense_ch = (int32_t *)(void *)(m + o_dch);
    x->child = (int32_t *)(void *)(m + o_child);
    x->parent = (int32_t *)(void *)(m + o_par);
    x->two_d = (int32_t *)(void *)(m + o_2d);
    x->eptr = (int32_t *)(void *)(m + o_ptr);
    x->eidx = (uint32_t *)(void *)(m + o_idx);
    /* Dense channels first (any order), then delta steps in BFS order, so
     * every parent is done before its children; entries are contiguous in
     * step order and the forward streams through them once per pixel. */
    n_dense = steps = 0;
    for (int i = 0; i < c; i++) {
        int j = p->order[i];
        int32_t n = p->diff_ptr[j + 1] - p->diff_ptr[j], d = 0;
        if (p->parent[j] < 0 || n * cost >= kw) {
            x->dense_ch[n_dense] = j;
            memcpy(x->dense_w + (size_t)n_dense * (size_t)kw,
                   w + (size_t)j * (size_t)kw, (size_t)kw * 8);
            n_dense++;
            continue;
        }
        x->child[steps] = j;
        x->parent[steps] = p->parent[j];
        x->eptr[steps] = e;
        for (int32_t q = p->diff_ptr[j]; q < p->diff_ptr[j + 1]; q++) {
            x->eidx[e] = (uint32_t)p->diff_idx[q];
            x->emask[e] = p->diff_mask[q];
            x->ewj[e] = w[(size_t)j * (size_t)kw + (size_t)p->diff_idx[q]];
            d += __builtin_popcountll(p->diff_mask[q]);
            e++;
        }
        x->two_d[steps] = 2 * d;
        steps++;
    }
    x->eptr[steps] = e;
    interleave8(x->dense_w, n_dense, kw, x->dense_wv);
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
    l->wv = malloc(il8_words(cout, l->kw) * sizeof *l->wv);
    if (!l->tapsum || !l->wv) {
        td_bconv_release(l);
        return td_error_set(err, TD_ENOMEM, "bconv: out of memory");
    }
    interleave8(w, cout, l->kw, l->wv);
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
    free(l->wv);
    free(l->exec.mem);
    l->tapsum = NULL;
    l->wv = NULL;
    l->exec.mem = NULL;
    l->exec.n_steps = -1;
}

size_t td_bconv_scratch_words(const td_bconv *l)
{
    /* per pixel: the window, then the padded-tap list (int32 in words);
     * 8 pixels at once (SIMD): 8 windows, the 8-lane accumulators of
     * every channel, 8 padded-tap lists */
    size_t one = (size_t)l->kw + (size_t)l->k * (size_t)l->k;
    size_t eight = 8 * (size_t)l->kw + 8 * (size_t)l->cout +
                   4 * (size_t)l->k * (size_t)l->k;
    return one > eight ? one : eight;
}

/* The per-pixel kernels. Scalar bodies are written once and instantiated
 * with and without the POPCNT instruction (always_inline lets the builtin
 * expand with the caller's target); the AVX-512 VPOPCNTDQ dense kernel is
 * its own function. conv_body calls them through pointers, once per pixel
 * each, so it needs no target of its own. */
#define TD_AI static inline __attribute__((always_inline))

typedef void (*dense_fn)(const uint64_t *win, const uint64_t *w,
                         const uint64_t *wv, int n, int kw, int32_t kbits,
                         const int32_t *ch, int32_t *y);
typedef void (*steps_fn)(const uint64_t *win, const td_bnn_exec *x,
                         int32_t *y);

/* y[ch[o]] for the rows w (n, kw); ch NULL means y[o]. */
TD_AI void px_dense(const uint64_t *restrict win, const uint64_t *restrict w,
                    int n, int kw, int32_t kbits, const int32_t *ch,
                    int32_t *restrict y)
{
    int o = 0;
    /* four channels at a time: each window word is loaded once for four
     * independent popcount chains */
    for (; o + 4 <= n; o += 4) {
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
        y[ch ? ch[o] : o] = kbits - 2 * s0;
        y[ch ? ch[o + 1] : o + 1] = kbits - 2 * s1;
        y[ch ? ch[o + 2] : o + 2] = kbits - 2 * s2;
        y[ch ? ch[o + 3] : o + 3] = kbits - 2 * s3;
    }
    for (; o < n; o++) {
        const uint64_t *r = w + (size_t)o * (size_t)kw;
        int32_t s = 0;
        for (int i = 0; i < kw; i++)
            s += __builtin_popcountll(win[i] ^ r[i]);
        y[ch ? ch[o] : o] = kbits - 2 * s;
    }
}

/* The delta steps: y_child = y_parent + 2d - 4 popcount((a^w_child)&m). */
TD_AI void px_steps(const uint64_t *restrict win, const td_bnn_exec *x,
                    int32_t *restrict y)
{
    const int32_t *eptr = x->eptr;
    const uint32_t *eidx = x->eidx;
    const uint64_t *emask = x->emask, *ewj = x->ewj;
    for (int st = 0; st < x->n_steps; st++) {
        int32_t acc = 0;
        for (int32_t e = eptr[st]; e < eptr[st + 1]; e++)
            acc += __builtin_popcountll((win[eidx[e]] ^ ewj[e]) & emask[e]);
        y[x->child[st]] = y[x->parent[st]] + x->two_d[st] - 4 * acc;
    }
}

static void dense_generic(const uint64_t *win, const uint64_t *w,
                          const uint64_t *wv, int n, int kw, int32_t kbits,
                          const int32_t *ch, int32_t *y)
{
    (void)wv;
    px_dense(win, w, n, kw, kbits, ch, y);
}

static void steps_generic(const uint64_t *win, const td_bnn_exec *x,
                          int32_t *y)
{
    px_steps(win, x, y);
}

#ifdef TD_BNN_X86
__attribute__((target("popcnt"))) static void
dense_popcnt(const uint64_t *win, const uint64_t *w, const uint64_t *wv,
             int n, int kw, int32_t kbits, const int32_t *ch, int32_t *y)
{
    (void)wv;
    px_dense(win, w, n, kw, kbits, ch, y);
}

__attribute__((target("popcnt"))) static void
steps_popcnt(const uint64_t *win, const td_bnn_exec *x, int32_t *y)
{
    px_steps(win, x, y);
}

/* 8 channels per instruction: wv is (blocks, kw, 8); each window word is
 * broadcast, XORed with 8 channels' words, counted by VPOPCNTQ. Two
 * blocks at a time for two independent accumulator chains. */
__attribute__((target("avx512f,avx512vpopcntdq"))) static void
dense_avx512(const uint64_t *win, const uint64_t *w, const uint64_t *wv,
             int n, int kw, int32_t kbits, const int32_t *ch, int32_t *y)
{
    int blocks = (n + 7) / 8, b = 0;
    int64_t t[16];
    (void)w;
    for (; b < blocks; b += 2) {
        int two = b + 1 < blocks;
        const uint64_t *p0 = wv + (size_t)b * (size_t)kw * 8;
        const uint64_t *p1 = two ? p0 + (size_t)kw * 8 : p0;
        __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
        for (int i = 0; i < kw; i++) {
            __m512i x = _mm512_set1_epi64((long long)win[i]);
            a0 = _mm512_add_epi64(
                a0, _mm512_popcnt_epi64(_mm512_xor_si512(
                        x, _mm512_loadu_si512((const void *)(p0 + i * 8)))));
            a1 = _mm512_add_epi64(
                a1, _mm512_popcnt_epi64(_mm512_xor_si512(
                        x, _mm512_loadu_si512((const void *)(p1 + i * 8)))));
        }
        _mm512_storeu_si512((void *)t, a0);
        _mm512_storeu_si512((void *)(t + 8), a1);
        for (int l = 0; l < (two ? 16 : 8); l++) {
            int o = b * 8 + l;
            if (o < n)
                y[ch ? ch[o] : o] = kbits - 2 * (int32_t)t[l];
        }
    }
}
#endif

/* r[c] holds channel c of 8 pixels; afterwards r[p] holds pixel p's 8
 * channels (unpack 32, unpack 64, swap 128-bit halves). */
__attribute__((target("avx512f,avx512vpopcntdq"))) static inline void
transpose8x8_epi32(__m256i r[8])
{
    __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    __m256i t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    __m256i t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    __m256i t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    __m256i t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2);
    __m256i u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3);
    __m256i u3 = _mm256_unpackhi_epi64(t1, t3);
    __m256i u4 = _mm256_unpacklo_epi64(t4, t6);
    __m256i u5 = _mm256_unpackhi_epi64(t4, t6);
    __m256i u6 = _mm256_unpacklo_epi64(t5, t7);
    __m256i u7 = _mm256_unpackhi_epi64(t5, t7);
    r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

/* Eight output pixels per instruction, for the plan: windows stored
 * (kw, 8) so that word i of all 8 pixels is one vector; the dense rows
 * XOR a broadcast weight word, and, unlike channel interleaving, a delta
 * entry is just as wide: one gather-free load, XOR, AND, VPOPCNTQ for 8
 * pixels. So a child costs its mask words against kw for a dense row, the
 * same ratio as the counted bit-ops at word granularity.
 * rows (n_rows, kw) with channels ch (NULL: 0..n_rows-1); x: delta steps
 * or NULL. y: (N, Ho, Wo, cout). */
__attribute__((target("avx512f,avx512vpopcntdq"))) static void
conv_px8(const td_bconv *l, const uint64_t *rows, int n_rows,
         const int32_t *ch, const td_bnn_exec *x, const uint64_t *in, int n,
         int h, int w, int32_t *y, uint64_t *scratch)
{
    int k = l->k, cw = l->cw, kw = l->kw, cout = l->cout, kk = k * k;
    int ho = td_bconv_out(h, k, l->stride, l->pad);
    int wo = td_bconv_out(w, k, l->stride, l->pad);
    size_t npix = (size_t)n * (size_t)ho * (size_t)wo;
    size_t plane = (size_t)ho * (size_t)wo;
    uint64_t *winv = scratch;
    int64_t *yv = (int64_t *)(void *)(scratch + 8 * (size_t)kw);
    int32_t *bad = (int32_t *)(void *)(yv + 8 * (size_t)cout);
    int nbad[8];
    const __m512i kb = _mm512_set1_epi64(k * k * l->cin);
    for (size_t p0 = 0; p0 < npix; p0 += 8) {
        int np = npix - p0 < 8 ? (int)(npix - p0) : 8;
        /* Gather the 8 windows: one masked 8-lane gather per window
         * word; lanes whose tap falls in the padding read nothing (0). */
        int64_t base[8], iy0[8], ix0[8];
        for (int ln = 0; ln < 8; ln++) {
            size_t p = p0 + (size_t)(ln < np ? ln : 0); /* spare lanes
                                                           repeat pixel 0 */
            size_t b = p / plane, rem = p % plane;
            int oy = (int)(rem / (size_t)wo), ox = (int)(rem % (size_t)wo);
            iy0[ln] = oy * l->stride - l->pad;
            ix0[ln] = ox * l->stride - l->pad;
            base[ln] = (((int64_t)b * h + iy0[ln]) * w + ix0[ln]) * cw;
            nbad[ln] = 0;
        }
        __m512i basev = _mm512_loadu_si512((const void *)base);
        __m512i iyv = _mm512_loadu_si512((const void *)iy0);
        __m512i ixv = _mm512_loadu_si512((const void *)ix0);
        for (int ky = 0; ky < k; ky++) {
            __m512i ry = _mm512_add_epi64(iyv, _mm512_set1_epi64(ky));
            __mmask8 my = _mm512_cmpge_epi64_mask(ry, _mm512_setzero_si512()) &
                          _mm512_cmplt_epi64_mask(ry, _mm512_set1_epi64(h));
            for (int kx = 0; kx < k; kx++) {
                __m512i rx = _mm512_add_epi64(ixv, _mm512_set1_epi64(kx));
                __mmask8 m =
                    my &
                    _mm512_cmpge_epi64_mask(rx, _mm512_setzero_si512()) &
                    _mm512_cmplt_epi64_mask(rx, _mm512_set1_epi64(w));
                int t = ky * k + kx;
                __m512i idx = _mm512_add_epi64(
                    basev, _mm512_set1_epi64(((int64_t)ky * w + kx) * cw));
                for (int q = 0; q < cw; q++)
                    _mm512_storeu_si512(
                        (void *)(winv + ((size_t)t * (size_t)cw + (size_t)q) * 8),
                        _mm512_mask_i64gather_epi64(
                            _mm512_setzero_si512(), m,
                            _mm512_add_epi64(idx, _mm512_set1_epi64(q)),
                            (const void *)in, 8));
                if (m != 0xFF)
                    for (int ln = 0; ln < np; ln++)
                        if (!(m >> ln & 1))
                            bad[ln * kk + nbad[ln]++] = t;
            }
        }
        /* dense rows, two at a time for two accumulator chains */
        int j = 0;
        for (; j + 2 <= n_rows; j += 2) {
            const uint64_t *r0 = rows + (size_t)j * (size_t)kw, *r1 = r0 + kw;
            __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
            for (int i = 0; i < kw; i++) {
                __m512i v = _mm512_loadu_si512((const void *)(winv + i * 8));
                a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_xor_si512(
                                              v, _mm512_set1_epi64((long long)r0[i]))));
                a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(_mm512_xor_si512(
                                              v, _mm512_set1_epi64((long long)r1[i]))));
            }
            _mm512_storeu_si512((void *)(yv + (size_t)(ch ? ch[j] : j) * 8),
                                _mm512_sub_epi64(kb, _mm512_slli_epi64(a0, 1)));
            _mm512_storeu_si512(
                (void *)(yv + (size_t)(ch ? ch[j + 1] : j + 1) * 8),
                _mm512_sub_epi64(kb, _mm512_slli_epi64(a1, 1)));
        }
        for (; j < n_rows; j++) {
            const uint64_t *r0 = rows + (size_t)j * (size_t)kw;
            __m512i a0 = _mm512_setzero_si512();
            for (int i = 0; i < kw; i++)
                a0 = _mm512_add_epi64(
                    a0, _mm512_popcnt_epi64(_mm512_xor_si512(
                            _mm512_loadu_si512((const void *)(winv + i * 8)),
                            _mm512_set1_epi64((long long)r0[i]))));
            _mm512_storeu_si512((void *)(yv + (size_t)(ch ? ch[j] : j) * 8),
                                _mm512_sub_epi64(kb, _mm512_slli_epi64(a0, 1)));
        }
        /* delta steps: y_child = y_parent + 2d - 4 popcount((a^w)&m) */
        for (int st = 0; x && st < x->n_steps; st++) {
            __m512i acc = _mm512_setzero_si512();
            for (int32_t e = x->eptr[st]; e < x->eptr[st + 1]; e++)
                acc = _mm512_add_epi64(
                    acc,
                    _mm512_popcnt_epi64(_mm512_and_si512(
                        _mm512_xor_si512(
                            _mm512_loadu_si512(
                                (const void *)(winv + (size_t)x->eidx[e] * 8)),
                            _mm512_set1_epi64((long long)x->ewj[e])),
                        _mm512_set1_epi64((long long)x->emask[e]))));
            __m512i par = _mm512_loadu_si512(
                (const void *)(yv + (size_t)x->parent[st] * 8));
            _mm512_storeu_si512(
                (void *)(yv + (size_t)x->child[st] * 8),
                _mm512_sub_epi64(
                    _mm512_add_epi64(par, _mm512_set1_epi64(x->two_d[st])),
                    _mm512_slli_epi64(acc, 2)));
        }
        /* (cout, 8 pixels) int64 -> each pixel's (cout) int32: 8x8
         * blocks narrowed and transposed in registers, then the padded
         * taps' weight sums subtracted 16 channels at a time. */
        int32_t *y0 = y + p0 * (size_t)cout;
        int o = 0;
        for (; o + 8 <= cout; o += 8) {
            __m256i r[8];
            for (int c = 0; c < 8; c++)
                r[c] = _mm512_cvtepi64_epi32(_mm512_loadu_si512(
                    (const void *)(yv + (size_t)(o + c) * 8)));
            transpose8x8_epi32(r);
            for (int ln = 0; ln < np; ln++)
                _mm256_storeu_si256(
                    (__m256i *)(void *)(y0 + (size_t)ln * (size_t)cout + o),
                    r[ln]);
        }
        for (int ln = 0; ln < np; ln++) {
            int32_t *yo = y0 + (size_t)ln * (size_t)cout;
            for (int c = o; c < cout; c++)
                yo[c] = (int32_t)yv[(size_t)c * 8 + (size_t)ln];
            for (int t = 0; t < nbad[ln]; t++) {
                const int32_t *ts =
                    l->tapsum + (size_t)bad[ln * kk + t] * (size_t)cout;
                int c = 0;
                for (; c + 16 <= cout; c += 16)
                    _mm512_storeu_si512(
                        (void *)(yo + c),
                        _mm512_sub_epi32(
                            _mm512_loadu_si512((const void *)(yo + c)),
                            _mm512_loadu_si512((const void *)(ts + c))));
                for (; c < cout; c++)
                    yo[c] -= ts[c];
            }
        }
    }
}

int td_bconv_has_simd(void)
{
#ifdef TD_BNN_X86
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vpopcntdq");
#else
    return 0;
#endif
}

static void conv_body(const td_bconv *l, int use_plan, const uint64_t *in,
                      int n, int h, int w, int32_t *y, uint64_t *scratch,
                      dense_fn dense, steps_fn steps)
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
                if (use_plan) {
                    dense(win, l->exec.dense_w, l->exec.dense_wv,
                          l->exec.n_dense, kw, kbits, l->exec.dense_ch, yo);
                    steps(win, &l->exec, yo);
                } else {
                    dense(win, l->w, l->wv, cout, kw, kbits, NULL, yo);
                }
                for (int t = 0; t < nbad; t++) {
                    const int32_t *ts =
                        l->tapsum + (size_t)bad[t] * (size_t)cout;
                    for (int o = 0; o < cout; o++)
                        yo[o] -= ts[o];
                }
            }
}

void td_bconv_forward(const td_bconv *l, int flags, const uint64_t *in,
                      int n, int h, int w, int32_t *y, uint64_t *scratch)
{
    int use_plan = (flags & TD_BCONV_PLAN) && l->exec.n_steps >= 0;
    dense_fn dense = dense_generic;
    steps_fn steps = steps_generic;
#ifdef TD_BNN_X86
    if (td_bp_has_popcnt()) {
        dense = dense_popcnt;
        steps = steps_popcnt;
    }
    if (!(flags & TD_BCONV_PORTABLE) && td_bconv_has_simd()) {
        if (use_plan) {
            conv_px8(l, l->exec.dense_w, l->exec.n_dense, l->exec.dense_ch,
                     &l->exec, in, n, h, w, y, scratch);
            return;
        }
        if (!(flags & TD_BCONV_CH8)) {
            conv_px8(l, l->w, l->cout, NULL, NULL, in, n, h, w, y, scratch);
            return;
        }
        dense = dense_avx512;
    }
#endif
    conv_body(l, use_plan, in, n, h, w, y, scratch, dense, steps);
}

void td_bfc_forward(const td_bconv *l, int flags, const uint64_t *in,
                    int n, int32_t *y, uint64_t *scratch)
{
    td_bconv_forward(l, flags, in, n, 1, 1, y, scratch);
}

void td_bnn_threshold_portable(const int32_t *y, size_t rows, int cout,
                               const int8_t *s, const int32_t *t,
                               uint64_t *out)
{
    int cw = td_bp_words(cout);
    for (size_t r = 0; r < rows; r++) {
        const int32_t *yr = y + r * (size_t)cout;
        uint64_t *o = out + r * (size_t)cw;
        for (int wi = 0; wi < cw; wi++) {
            uint64_t word = 0; /* built in a register, stored once */
            int base = wi * 64, n = cout - base < 64 ? cout - base : 64;
            for (int j = 0; j < n; j++)
                word |= (uint64_t)(s[base + j] * yr[base + j] < t[base + j])
                        << j;
            o[wi] = word;
        }
    }
}

#ifdef TD_BNN_X86
/* 16 channels per compare (s*y < t); the tail through masked loads. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
threshold_avx512(const int32_t *y, size_t rows, int cout, const int8_t *s,
                 const int32_t *t, uint64_t *out)
{
    int cw = td_bp_words(cout);
    for (size_t r = 0; r < rows; r++) {
        const int32_t *yr = y + r * (size_t)cout;
        uint64_t *o = out + r * (size_t)cw;
        for (int wi = 0; wi < cw; wi++) {
            uint64_t word = 0;
            for (int q = 0; q < 4; q++) {
                int base = wi * 64 + q * 16, n = cout - base;
                __mmask16 m;
                __m512i sv, v;
                if (n <= 0)
                    break;
                m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
                sv = _mm512_cvtepi8_epi32(
                    _mm_maskz_loadu_epi8(m, (const void *)(s + base)));
                v = _mm512_mullo_epi32(
                    sv, _mm512_maskz_loadu_epi32(m, (const void *)(yr + base)));
                word |= (uint64_t)_mm512_mask_cmplt_epi32_mask(
                            m, v,
                            _mm512_maskz_loadu_epi32(m, (const void *)(t + base)))
                        << (q * 16);
            }
            o[wi] = word;
        }
    }
}
#endif

void td_bnn_threshold(const int32_t *y, size_t rows, int cout,
                      const int8_t *s, const int32_t *t, uint64_t *out)
{
#ifdef TD_BNN_X86
    if (__builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl")) {
        threshold_avx512(y, rows, cout, s, t, out);
        return;
    }
#endif
    td_bnn_threshold_portable(y, rows, cout, s, t, out);
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
