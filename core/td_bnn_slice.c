/* td_bnn_slice: bit-sliced binary conv layers (see td_bnn_slice.h). */
#include "config.h"

#include "td_bnn_slice.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TD_BSLICE_X86 1
#endif


int td_bslice_words(int64_t words)
{
    if (words <= 1)
        return 1;
    if (words <= 2)
        return 2;
    if (words <= 4)
        return 4;
    return (int)((words + 7) / 8 * 8);
}

size_t td_bslice_stride(int lw, int nimg)
{
    /* even, so that a 2-word vector never reads past a row; rows of
     * 8-word multiples stay aligned to cache lines */
    size_t t = (size_t)lw * (size_t)nimg;
    return t + (t & 1);
}

int td_bslice_has_simd(void)
{
#ifdef TD_BSLICE_X86
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

int td_bslice_has_avx2(void)
{
#ifdef TD_BSLICE_X86
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

int td_bslice_level(int flags)
{
    if (flags & TD_BSLICE_PORTABLE)
        return 0;
    if (td_bslice_has_simd() && !(flags & TD_BSLICE_AVX2))
        return 2;
    return td_bslice_has_avx2() ? 1 : 0;
}

/* ------------------------------------------------------------ bit helpers */

/* 64 bits of s starting at bit `bit` (s must have the next word too; bit
 * may be negative when the caller keeps guard words before s). */
static inline uint64_t get64(const uint64_t *s, int64_t bit)
{
    int64_t w = bit >> 6; /* arithmetic: floor */
    int r = (int)(bit & 63);
    /* branch-free: the second shift is split so that r = 0 shifts by 64
     * in two legal steps */
    return (s[w] >> r) | ((s[w + 1] << 1) << (63 - r));
}

/* Sum over the lanes in vm of a bit-sliced count: plane j weighs 2^j.
 * planes: nq planes, `stride` words apart. With POPCNT where the CPU has
 * it (a target clone: the build assumes only x86-64). */
static int64_t plane_sum_c(const uint64_t *planes, size_t stride, int nq,
                           uint64_t vm)
{
    int64_t sum = 0;
    for (int j = 0; j < nq; j++)
        sum += (int64_t)__builtin_popcountll(planes[(size_t)j * stride] & vm)
               << j;
    return sum;
}

#ifdef TD_BSLICE_X86
__attribute__((target("popcnt"))) static int64_t
plane_sum_popcnt(const uint64_t *planes, size_t stride, int nq, uint64_t vm)
{
    int64_t sum = 0;
    for (int j = 0; j < nq; j++)
        sum += (int64_t)__builtin_popcountll(planes[(size_t)j * stride] & vm)
               << j;
    return sum;
}
#endif

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* Words between table rows for T words of lanes: a power of two, so that
 * a row's offset is a shift, at least 2 (a 2-word vector reads 2), and
 * rows of 8 or more words stay aligned to cache lines. */
static size_t table_stride(int lw, int nimg)
{
    size_t t = (size_t)lw * (size_t)nimg, rs = 2;
    while (rs < t)
        rs *= 2;
    return rs;
}

/* ---------------------------------------------------------------- layouts */

static int64_t lane_of(const td_bslice_layout *L, int y, int x)
{
    int f = (y % L->m) * L->m + x % L->m;
    return (int64_t)f * L->pw * 64 + (int64_t)(L->mt + y / L->m) * L->pitch +
           x / L->m;
}

int td_bslice_layouts(int n, const int *k, const int *stride, const int *pad,
                      int h, int w, td_bslice_layout *lay, td_error *err)
{
    int64_t m = 1, mt[TD_BSLICE_MAX_LAYERS + 1], mb[TD_BSLICE_MAX_LAYERS + 1];
    int64_t pitch = 1;
    if (n < 1 || n > TD_BSLICE_MAX_LAYERS) {
        td_error_set(err, TD_EINVAL, "bnn slice: %d layers", n);
        return 0;
    }
    memset(lay, 0, (size_t)(n + 1) * sizeof *lay);
    lay[n].m = 1;
    for (int i = n - 1; i >= 0; i--) {
        m *= stride[i];
        if (m > 16) {
            td_error_set(err, TD_EINVAL,
                         "bnn slice: strides multiply to %lld (> 16)",
                         (long long)m);
            return 0;
        }
        lay[i].m = (int)m;
    }
    lay[0].h = h;
    lay[0].w = w;
    for (int i = 0; i < n; i++) {
        lay[i + 1].h = td_bconv_out(lay[i].h, k[i], stride[i], pad[i]);
        lay[i + 1].w = td_bconv_out(lay[i].w, k[i], stride[i], pad[i]);
        if (lay[i + 1].h <= 0 || lay[i + 1].w <= 0) {
            td_error_set(err, TD_EINVAL, "bnn slice: layer %d has no output",
                         i);
            return 0;
        }
    }
    for (int i = 0; i <= n; i++) {
        lay[i].hs = (lay[i].h + lay[i].m - 1) / lay[i].m;
        lay[i].ws = (lay[i].w + lay[i].m - 1) / lay[i].m;
    }
    /* margins: what layer i (reading lay[i]) needs around each sub-grid.
     * Output phase f' = (py', px'), tap ky: input row
     * m_in*(Y' + q) + r with q = floor((s*py' + ky - p) / m_in). */
    for (int i = 0; i <= n; i++) {
        int64_t need_x = 0;
        mt[i] = mb[i] = 0;
        if (i < n) {
            int64_t emin = -pad[i];
            int64_t emax = (int64_t)stride[i] * (lay[i + 1].m - 1) + k[i] -
                           1 - pad[i];
            int64_t qmin = floor_div(emin, lay[i].m);
            int64_t qmax = floor_div(emax, lay[i].m);
            mt[i] = max64(0, -qmin);
            mb[i] = max64(0, lay[i + 1].hs - 1 + qmax - (lay[i].hs - 1));
            need_x = max64(max64(0, -qmin),
                           lay[i + 1].ws - 1 + qmax - (lay[i].ws - 1));
        }
        pitch = max64(pitch, lay[i].ws + need_x);
    }
    for (int i = 0; i <= n; i++) {
        /* each sub-grid is followed by max(mt, mb) zero rows: they are
         * the bottom margin of this phase and the top margin of the next
         * (a sub-grid's row -1 is the previous phase's last row) */
        int64_t rows = lay[i].hs + max64(mt[i], mb[i]);
        int64_t pw = (rows * pitch + 63) / 64;
        int64_t words = (int64_t)lay[i].m * lay[i].m * pw;
        if (words > (1 << 16)) {
            td_error_set(err, TD_EINVAL,
                         "bnn slice: %lld words per image stream (max %d)",
                         (long long)words, 1 << 16);
            return 0;
        }
        lay[i].pitch = (int)pitch;
        lay[i].mt = 0;
        lay[i].pw = (int)pw;
        lay[i].lw = td_bslice_words(words);
    }
    return 1;
}

/* ---------------------------------------------------------------- prepare */

void td_bslice_release(td_bslice *l)
{
    if (l)
        free(l->mem);
    if (l)
        memset(l, 0, sizeof *l);
}

static int bit_length(int64_t v)
{
    int n = 0;
    while (v > 0) {
        n++;
        v >>= 1;
    }
    return n;
}

td_status td_bslice_prepare(td_bslice *l, const td_bconv *conv,
                            const td_bslice_layout *in,
                            const td_bslice_layout *out, int max_img,
                            const td_mst_plan *plan, const int8_t *tsign,
                            const int32_t *thr, td_error *err)
{
    int k = conv->k, s = conv->stride, kk = k * k, cout = conv->cout;
    int cin = conv->cin, cw = conv->cw, kw = conv->kw;
    int mo2 = out->m * out->m;
    int64_t kb = (int64_t)cin * kk, maxq = 0, rows_total = 0;
    int64_t min_off = 0, max_end = 0;
    td_status st = TD_OK;
    int32_t *len = NULL, *lneg = NULL, *par = NULL;
    int64_t *dpath = NULL, *qmax = NULL;
    int32_t *corr = NULL;
    memset(l, 0, sizeof *l);
    l->cin = cin;
    l->cout = cout;
    l->k = k;
    l->stride = s;
    l->pad = conv->pad;
    l->in = *in;
    l->out = *out;
    l->kbits = (int)kb;
    l->last = thr == NULL;
    l->max_img = max_img < 1 ? 1 : max_img;
    l->rs = table_stride(out->lw, l->max_img);
    if (out->m * s != in->m || in->pitch != out->pitch ||
        out->h != td_bconv_out(in->h, k, s, conv->pad) ||
        out->w != td_bconv_out(in->w, k, s, conv->pad))
        return td_error_set(err, TD_EINVAL,
                            "bnn slice: layouts do not chain");
    if (((uint64_t)kb + 1) * (uint64_t)l->rs >= ((uint64_t)1 << 31))
        return td_error_set(err, TD_EINVAL, "bnn slice: table too large");

    len = calloc((size_t)cout, sizeof *len);
    lneg = calloc((size_t)cout, sizeof *lneg);
    par = calloc((size_t)cout, sizeof *par);
    dpath = calloc((size_t)cout, sizeof *dpath);
    qmax = calloc((size_t)cout, sizeof *qmax);
    corr = calloc((size_t)cout, sizeof *corr);
    if (!len || !lneg || !par || !dpath || !qmax || !corr) {
        st = td_error_set(err, TD_ENOMEM, "bnn slice: out of memory");
        goto done;
    }
    /* each channel: from its parent when the diff list is shorter than
     * the row (less 32: the lists' padding). Its rows split by the
     * channel's weight bit: w = 0 adds a_k, w = 1 adds NOT a_k; each part
     * is padded to 16 with the zero row, which in the NOT part adds 1 per
     * pad (folded into D, below). */
    for (int i = 0; i < cout; i++) {
        int o = plan ? plan->order[i] : i;
        int p = plan ? plan->parent[o] : -1;
        const uint64_t *wo = conv->w + (size_t)o * (size_t)kw;
        int64_t d = 0, nneg = 0, npos;
        if (p >= 0)
            for (int32_t e = plan->diff_ptr[o]; e < plan->diff_ptr[o + 1]; e++)
                d += __builtin_popcountll(plan->diff_mask[e]);
        if (p >= 0 && d + 32 >= kb)
            p = -1;
        par[o] = p;
        if (p < 0) {
            for (int q = 0; q < kw; q++)
                nneg += __builtin_popcountll(wo[q]);
            npos = kb - nneg;
        } else {
            for (int32_t e = plan->diff_ptr[o]; e < plan->diff_ptr[o + 1]; e++)
                nneg += __builtin_popcountll(plan->diff_mask[e] &
                                             wo[plan->diff_idx[e]]);
            npos = d - nneg;
        }
        len[o] = (int32_t)((npos + 15) / 16 * 16);
        lneg[o] = (int32_t)((nneg + 15) / 16 * 16);
        {
            int64_t pad_neg = lneg[o] - nneg;
            if (p < 0) {
                dpath[o] = pad_neg;
                qmax[o] = kb + pad_neg;
            } else {
                dpath[o] = dpath[p] + d + 2 * pad_neg;
                qmax[o] = qmax[p] + 2 * (d + pad_neg);
            }
        }
        if (qmax[o] > maxq)
            maxq = qmax[o];
        rows_total += len[o] + lneg[o];
    }
    l->nq = bit_length(maxq + 1);
    if (l->nq < 9) /* the tile kernel keeps planes b..b+7 in registers */
        l->nq = 9;
    if (l->nq > TD_BSLICE_MAX_PLANES) {
        st = td_error_set(err, TD_EINVAL,
                          "bnn slice: counts need %d bit planes (max %d)",
                          l->nq, TD_BSLICE_MAX_PLANES);
        goto done;
    }
    l->n_rows = rows_total;
    l->pwc = out->lw > 8 ? out->lw : 8;

    /* one allocation for everything the layer owns */
    {
        size_t n_cpl = l->last ? 0
                               : (size_t)cout * (size_t)l->nq * (size_t)l->pwc;
        size_t bytes = (size_t)kk * (size_t)mo2 * sizeof(int32_t) +
                       4 * (size_t)cout * sizeof(int32_t) + sizeof(int32_t) +
                       (size_t)rows_total * sizeof(uint32_t) + (size_t)cout;
        size_t off_words;
        char *c;
        bytes = (bytes + 63) / 64 * 64;
        off_words = bytes / 8;
        bytes += (n_cpl + (size_t)l->pwc + (size_t)cout) * 8;
        l->mem = calloc(1, bytes);
        if (!l->mem) {
            st = td_error_set(err, TD_ENOMEM, "bnn slice: out of memory");
            goto done;
        }
        c = l->mem;
        l->src_off = (int32_t *)(void *)c;
        c += (size_t)kk * (size_t)mo2 * sizeof(int32_t);
        l->ch = (int32_t *)(void *)c;
        c += (size_t)cout * sizeof(int32_t);
        l->par = (int32_t *)(void *)c;
        c += (size_t)cout * sizeof(int32_t);
        l->eptr = (int32_t *)(void *)c;
        c += ((size_t)cout + 1) * sizeof(int32_t);
        l->eneg = (int32_t *)(void *)c;
        c += (size_t)cout * sizeof(int32_t);
        l->erow = (uint32_t *)(void *)c;
        c += (size_t)rows_total * sizeof(uint32_t);
        l->inv = (uint8_t *)c;
        l->cpl = n_cpl ? (uint64_t *)l->mem + off_words : NULL;
        l->valid = (uint64_t *)l->mem + off_words + n_cpl;
        l->ybase = (int64_t *)(void *)(l->valid + l->pwc);
    }
    /* where each tap of each output phase reads the input stream */
    for (int t = 0; t < kk; t++)
        for (int f = 0; f < mo2; f++) {
            int64_t ey = (int64_t)s * (f / out->m) + t / k - conv->pad;
            int64_t ex = (int64_t)s * (f % out->m) + t % k - conv->pad;
            int64_t qy = floor_div(ey, in->m), qx = floor_div(ex, in->m);
            int64_t fs = (ey - qy * in->m) * in->m + (ex - qx * in->m);
            int64_t off = fs * in->pw * 64 +
                          (in->mt - out->mt + qy) * in->pitch + qx;
            l->src_off[t * mo2 + f] = (int32_t)off;
            if (off < min_off)
                min_off = off;
            if (off + 64 * (int64_t)out->pw + 64 > max_end)
                max_end = off + 64 * (int64_t)out->pw + 64;
        }
    if (min_off < -64 * (int64_t)(TD_BSLICE_GUARD - 1) ||
        max_end > 64 * ((int64_t)in->lw + TD_BSLICE_GUARD - 1)) {
        st = td_error_set(err, TD_EINVAL,
                          "bnn slice: taps read too far outside the stream");
        goto done;
    }
    /* the row lists: rows k = t*cin + c, the w = 0 part then the w = 1
     * part, each padded with the zero row K */
    {
        int32_t pos = 0;
        for (int i = 0; i < cout; i++) {
            int o = plan ? plan->order[i] : i;
            int p = par[o];
            const uint64_t *wo = conv->w + (size_t)o * (size_t)kw;
            l->ch[i] = o;
            l->par[i] = p;
            l->eptr[i] = pos;
            for (int sign = 0; sign < 2; sign++) {
                int32_t n = 0, want = sign ? lneg[o] : len[o];
                uint32_t *dst = l->erow + pos;
                if (sign)
                    l->eneg[i] = pos;
                if (p < 0) {
                    for (int t = 0; t < kk; t++)
                        for (int c = 0; c < cin; c++)
                            if ((int)(wo[t * cw + c / 64] >> (c % 64) & 1) ==
                                sign)
                                dst[n++] = (uint32_t)(t * cin + c);
                } else {
                    for (int32_t e = plan->diff_ptr[o];
                         e < plan->diff_ptr[o + 1]; e++) {
                        int wi = plan->diff_idx[e], t = wi / cw, qw = wi % cw;
                        uint64_t msk = plan->diff_mask[e] &
                                       (sign ? wo[wi] : ~wo[wi]);
                        while (msk) {
                            int c = qw * 64 + __builtin_ctzll(msk);
                            msk &= msk - 1;
                            dst[n++] = (uint32_t)(t * cin + c);
                        }
                    }
                }
                while (n < want)
                    dst[n++] = (uint32_t)kb; /* the zero row */
                pos += n;
            }
        }
        l->eptr[cout] = pos;
    }
    /* per lane: pixel or not; thresholds, or the sums' constant part */
    {
        int64_t img_lanes = 64 * (int64_t)out->lw;
        int64_t c_top = ((int64_t)1 << l->nq) - 1;
        for (int o = 0; o < cout; o++) {
            int8_t sg = tsign ? tsign[o] : 0;
            int32_t th = thr ? thr[o] : 0;
            l->inv[o] = (uint8_t)(sg > 0 || (sg == 0 && 0 < th));
        }
        for (int64_t ln = 0; ln < 64 * (int64_t)l->pwc; ln++) {
            int64_t li = ln % img_lanes, span = li / (64 * (int64_t)out->pw);
            int64_t rem = li % (64 * (int64_t)out->pw);
            int64_t yy = rem / out->pitch - out->mt, xx = rem % out->pitch;
            int y = (int)(yy * out->m + span / out->m);
            int x = (int)(xx * out->m + span % out->m);
            int pixel = span < mo2 && yy >= 0 && yy < out->hs &&
                        xx < out->ws && y < out->h && x < out->w;
            if (!pixel) {
                /* no pixel: Q >= 2^nq - 1 or Q < 0 never holds, bit 0 */
                for (int o = 0; !l->last && o < cout; o++)
                    for (int j = 0; l->inv[o] && j < l->nq; j++)
                        l->cpl[((size_t)o * (size_t)l->nq + (size_t)j) *
                                   (size_t)l->pwc + (size_t)(ln / 64)] |=
                            1ULL << (ln % 64);
                continue;
            }
            l->valid[ln / 64] |= 1ULL << (ln % 64);
            for (int o = 0; o < cout; o++)
                corr[o] = 0;
            for (int t = 0; t < kk; t++) {
                int iy = y * s - conv->pad + t / k;
                int ix = x * s - conv->pad + t % k;
                if (iy >= 0 && iy < in->h && ix >= 0 && ix < in->w)
                    continue;
                for (int o = 0; o < cout; o++)
                    corr[o] += conv->tapsum[(size_t)t * (size_t)cout +
                                            (size_t)o];
            }
            for (int o = 0; o < cout; o++) {
                int64_t base = kb + 2 * dpath[o] - corr[o], c;
                if (l->last) {
                    if (ln < img_lanes)
                        l->ybase[o] += base;
                    continue;
                }
                if (tsign[o] > 0)
                    c = floor_div(base - thr[o], 2) + 1;
                else if (tsign[o] < 0)
                    c = -floor_div(-(thr[o] + base), 2); /* ceil */
                else
                    c = 0;
                if (c < 0)
                    c = 0;
                if (c > c_top)
                    c = c_top;
                for (int j = 0; j < l->nq; j++)
                    if (c >> j & 1)
                        l->cpl[((size_t)o * (size_t)l->nq + (size_t)j) *
                                   (size_t)l->pwc + (size_t)(ln / 64)] |=
                            1ULL << (ln % 64);
            }
        }
    }
done:
    free(len);
    free(lneg);
    free(par);
    free(dpath);
    free(qmax);
    free(corr);
    if (st != TD_OK)
        td_bslice_release(l);
    return st;
}

size_t td_bslice_scratch_words(const td_bslice *l)
{
    return ((size_t)l->kbits + 1) * l->rs +
           (size_t)l->cout * (size_t)l->nq * 8 +
           (size_t)l->max_img * (size_t)l->cout;
}

/* ---------------------------------------------------------- tile kernels */

/* The five ternary functions the tile kernel uses, for plain words. */
#define TL64_0x96(a, b, c) ((a) ^ (b) ^ (c))                 /* parity */
#define TL64_0xE8(a, b, c) (((a) & (b)) | ((c) & ((a) ^ (b)))) /* majority */
#define TL64_0x71(a, b, c) (((a) & ~(b)) | (~(c) & ((a) ^ ~(b)))) /* maj(a,~b,~c) */
#define TL64_0x8E(a, b, c) ((~(a) & (b)) | (~((a) ^ (b)) & (c))) /* borrow */
#define TL64_0x55(a, b, c) (~(c))                              /* NOT */

#define SL_NAME tile_u64
#define SL_ATTR
#define SL_V uint64_t
#define SL_W 1
#define SL_LD(p) (*(p))
#define SL_ST(p, v) (*(p) = (v))
#define SL_TL(a, b, c, imm) TL64_##imm(a, b, c)
#define SL_AND(a, b) ((a) & (b))
#define SL_XOR(a, b) ((a) ^ (b))
#define SL_ZERO 0
#define SL_ANY(v) ((v) != 0)
#include "td_bnn_slice_tile.h"

#ifdef TD_BSLICE_X86
#define SL_ATTR __attribute__((target("avx512f,avx512vl")))
#define SL_NAME tile_x2
#define SL_V __m128i
#define SL_W 2
#define SL_LD(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define SL_ST(p, v) _mm_storeu_si128((__m128i *)(void *)(p), v)
#define SL_TL(a, b, c, imm) _mm_ternarylogic_epi64(a, b, c, imm)
#define SL_AND(a, b) _mm_and_si128(a, b)
#define SL_XOR(a, b) _mm_xor_si128(a, b)
#define SL_ZERO _mm_setzero_si128()
#define SL_ANY(v) (!_mm_testz_si128(v, v))
#include "td_bnn_slice_tile.h"

#define SL_ATTR __attribute__((target("avx512f,avx512vl")))
#define SL_NAME tile_x4
#define SL_V __m256i
#define SL_W 4
#define SL_LD(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define SL_ST(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define SL_TL(a, b, c, imm) _mm256_ternarylogic_epi64(a, b, c, imm)
#define SL_AND(a, b) _mm256_and_si256(a, b)
#define SL_XOR(a, b) _mm256_xor_si256(a, b)
#define SL_ZERO _mm256_setzero_si256()
#define SL_ANY(v) (!_mm256_testz_si256(v, v))
#include "td_bnn_slice_tile.h"

#define SL_ATTR __attribute__((target("avx512f,avx512vl")))
#define SL_NAME tile_x8
#define SL_V __m512i
#define SL_W 8
#define SL_LD(p) _mm512_loadu_si512((const void *)(p))
#define SL_ST(p, v) _mm512_storeu_si512((void *)(p), v)
#define SL_TL(a, b, c, imm) _mm512_ternarylogic_epi64(a, b, c, imm)
#define SL_AND(a, b) _mm512_and_si512(a, b)
#define SL_XOR(a, b) _mm512_xor_si512(a, b)
#define SL_ZERO _mm512_setzero_si512()
#define SL_ANY(v) (_mm512_test_epi64_mask(v, v) != 0)
#include "td_bnn_slice_tile.h"

/* AVX2 (no ternary logic): the five functions the kernel uses, built from
 * AND, OR, XOR, ANDNOT. */
#define A2_ONES _mm256_set1_epi64x(-1)
#define A2_0x96(a, b, c) _mm256_xor_si256(_mm256_xor_si256(a, b), c)
#define A2_0xE8(a, b, c)                                                      \
    _mm256_or_si256(_mm256_and_si256(a, b),                                   \
                    _mm256_and_si256(c, _mm256_xor_si256(a, b)))
#define A2_0x71(a, b, c)                                                      \
    _mm256_or_si256(_mm256_andnot_si256(b, a),                                \
                    _mm256_andnot_si256(                                      \
                        _mm256_or_si256(c, _mm256_xor_si256(a, b)), A2_ONES))
#define A2_0x8E(a, b, c)                                                      \
    _mm256_or_si256(_mm256_andnot_si256(a, b),                                \
                    _mm256_andnot_si256(_mm256_xor_si256(a, b), c))
#define A2_0x55(a, b, c) _mm256_xor_si256(c, A2_ONES)
#define SL_ATTR __attribute__((target("avx2")))
#define SL_NAME tile_a4
#define SL_V __m256i
#define SL_W 4
#define SL_LD(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define SL_ST(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define SL_TL(a, b, c, imm) A2_##imm(a, b, c)
#define SL_AND(a, b) _mm256_and_si256(a, b)
#define SL_XOR(a, b) _mm256_xor_si256(a, b)
#define SL_ZERO _mm256_setzero_si256()
#define SL_ANY(v) (!_mm256_testz_si256(v, v))
#include "td_bnn_slice_tile.h"

/* SSE2 (x86-64's baseline) for 2-word tiles, the same functions. */
#define S2_ONES _mm_set1_epi64x(-1)
#define S2_0x96(a, b, c) _mm_xor_si128(_mm_xor_si128(a, b), c)
#define S2_0xE8(a, b, c)                                                      \
    _mm_or_si128(_mm_and_si128(a, b), _mm_and_si128(c, _mm_xor_si128(a, b)))
#define S2_0x71(a, b, c)                                                      \
    _mm_or_si128(_mm_andnot_si128(b, a),                                      \
                 _mm_andnot_si128(_mm_or_si128(c, _mm_xor_si128(a, b)),       \
                                  S2_ONES))
#define S2_0x8E(a, b, c)                                                      \
    _mm_or_si128(_mm_andnot_si128(a, b),                                      \
                 _mm_andnot_si128(_mm_xor_si128(a, b), c))
#define S2_0x55(a, b, c) _mm_xor_si128(c, S2_ONES)
#define SL_ATTR
#define SL_NAME tile_s2
#define SL_V __m128i
#define SL_W 2
#define SL_LD(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define SL_ST(p, v) _mm_storeu_si128((__m128i *)(void *)(p), v)
#define SL_TL(a, b, c, imm) S2_##imm(a, b, c)
#define SL_AND(a, b) _mm_and_si128(a, b)
#define SL_XOR(a, b) _mm_xor_si128(a, b)
#define SL_ZERO _mm_setzero_si128()
#define SL_ANY(v)                                                             \
    (_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_setzero_si128())) != 0xFFFF)
#include "td_bnn_slice_tile.h"
#endif

/* ---------------------------------------------------------------- forward */

void td_bslice_forward(const td_bslice *l, int flags, const uint64_t *in,
                       size_t in_stride, int nimg, uint64_t *out,
                       int64_t *ysum, uint64_t *scratch)
{
    size_t T = (size_t)nimg * (size_t)l->out.lw;
    size_t rs = table_stride(l->out.lw, nimg);
    int rshift = __builtin_ctzll(rs);
    size_t os = td_bslice_stride(l->out.lw, nimg);
    size_t nrow = (size_t)l->kbits;
    int mo2 = l->out.m * l->out.m, pw = l->out.pw, kk = l->k * l->k;
    uint64_t *tab = scratch;
    uint64_t *qs = tab + (nrow + 1) * rs;
    int64_t *acc = (int64_t *)(void *)(qs + (size_t)l->cout * (size_t)l->nq * 8);
    int level = td_bslice_level(flags);
#ifdef TD_BSLICE_X86
    int popcnt = __builtin_cpu_supports("popcnt");
#endif
    /* the table: row k = t*cin + c is a_k; each output phase f of tap t
     * is the input stream from bit src_off[t][f]. Rows are written whole,
     * image after image, so each cache line is filled once. */
    for (int t = 0; t < kk; t++) {
        const int32_t *so = l->src_off + (size_t)t * (size_t)mo2;
        for (int f = 0; f < mo2; f++) {
            /* one phase span of every row of tap t: the word and shift are
             * the same for every channel and image */
            int64_t w0 = so[f] >> 6; /* floor */
            int r = so[f] & 63;
            for (int c = 0; c < l->cin; c++) {
                const uint64_t *src = in + (size_t)c * in_stride;
                uint64_t *dst = tab + ((size_t)t * (size_t)l->cin + (size_t)c) * rs +
                                (size_t)f * (size_t)pw;
                for (int i = 0; i < nimg; i++) {
                    const uint64_t *sw = src + (size_t)i * (size_t)l->in.lw + w0;
                    uint64_t *dw = dst + (size_t)i * (size_t)l->out.lw;
                    for (int j = 0; j < pw; j++)
                        dw[j] = (sw[j] >> r) | ((sw[j + 1] << 1) << (63 - r));
                }
            }
        }
        if (l->out.lw > mo2 * pw) /* words past the phases */
            for (int c = 0; c < l->cin; c++)
                for (int i = 0; i < nimg; i++)
                    memset(tab + ((size_t)t * (size_t)l->cin + (size_t)c) * rs +
                               (size_t)i * (size_t)l->out.lw +
                               (size_t)mo2 * (size_t)pw,
                           0, (size_t)(l->out.lw - mo2 * pw) * 8);
    }
    /* (a 2-word vector may read column T: only lanes that are dropped) */
    memset(tab + nrow * rs, 0, rs * 8);
    if (l->last)
        memset(acc, 0, (size_t)nimg * (size_t)l->cout * sizeof *acc);
    for (size_t g = 0; g < T;) {
        size_t w = 1;
#ifdef TD_BSLICE_X86
        if (level == 2) {
            if (T - g >= 8) {
                tile_x8(l, tab, rshift, g, qs, out, os);
                w = 8;
            } else if (T - g >= 4) {
                tile_x4(l, tab, rshift, g, qs, out, os);
                w = 4;
            } else {
                tile_x2(l, tab, rshift, g, qs, out, os);
                w = 2;
            }
        } else if (level == 1) {
            if (T - g >= 4) {
                tile_a4(l, tab, rshift, g, qs, out, os);
                w = 4;
            } else {
                tile_s2(l, tab, rshift, g, qs, out, os);
                w = 2;
            }
        } else
#endif
            tile_u64(l, tab, rshift, g, qs, out, os);
        (void)level;
        if (l->last) {
            /* sum of Q over each image's pixels: plane j weighs 2^j */
            for (size_t gw = g; gw < g + w && gw < T; gw++) {
                size_t img = gw / (size_t)l->out.lw;
                uint64_t vm = l->valid[gw % (size_t)l->pwc];
                if (!vm)
                    continue;
                for (int o = 0; o < l->cout; o++) {
                    const uint64_t *pl =
                        qs + (size_t)o * (size_t)l->nq * w + (gw - g);
                    acc[img * (size_t)l->cout + (size_t)o] +=
#ifdef TD_BSLICE_X86
                        popcnt ? plane_sum_popcnt(pl, w, l->nq, vm) :
#endif
                               plane_sum_c(pl, w, l->nq, vm);
                }
            }
        }
        g += w;
    }
    if (l->last) {
        for (int i = 0; i < nimg; i++)
            for (int o = 0; o < l->cout; o++)
                ysum[(size_t)i * (size_t)l->cout + (size_t)o] =
                    l->ybase[o] -
                    2 * acc[(size_t)i * (size_t)l->cout + (size_t)o];
    } else {
        /* The next layer reads a little before each image's stream, where
         * it expects zeros: the previous image's last lanes (pixels never
         * reach them), the guard, or the row's spare column (os > T), which
         * a 2-word vector may have filled with junk: clear it. And the
         * guard words after the last row. */
        if (os > T)
            for (size_t o = 0; o < (size_t)l->cout; o++)
                out[o * os + T] = 0;
        memset(out + (size_t)l->cout * os, 0, TD_BSLICE_GUARD * 8);
    }
}

/* ------------------------------------------------------- NHWC to planar */

/* 8x8 bit matrix transpose: bit 8i+j <-> bit 8j+i. */
static inline uint64_t transpose8(uint64_t x)
{
    uint64_t t;
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAULL;
    x = x ^ t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCULL;
    x = x ^ t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ULL;
    x = x ^ t ^ (t << 28);
    return x;
}

void td_bslice_lane_table(const td_bslice_layout *lay, int32_t *lane)
{
    for (int y = 0; y < lay->h; y++)
        for (int x = 0; x < lay->w; x++)
            lane[(size_t)y * (size_t)lay->w + (size_t)x] =
                (int32_t)lane_of(lay, y, x);
}

void td_bslice_from_nhwc(const uint64_t *in, int c,
                         const td_bslice_layout *lay, const int32_t *lane,
                         uint64_t *out, size_t stride, uint64_t *lanes)
{
    int cw = (c + 63) / 64;
    int px = lay->lw * 64;
    size_t npix = (size_t)lay->h * (size_t)lay->w;
    /* pixel words to their lanes (other lanes zero), then transpose */
    memset(lanes, 0, (size_t)px * (size_t)cw * 8);
    if (cw == 1)
        for (size_t p = 0; p < npix; p++)
            lanes[lane[p]] = in[p];
    else
        for (size_t p = 0; p < npix; p++)
            memcpy(lanes + (size_t)lane[p] * (size_t)cw,
                   in + p * (size_t)cw, (size_t)cw * 8);
    for (int ch = 0; ch < c; ch++)
        memset(out + (size_t)ch * stride, 0, (size_t)lay->lw * 8);
    for (int p0 = 0; p0 < px; p0 += 8)
        for (int c0 = 0; c0 < c; c0 += 8) {
            uint64_t x = 0;
            for (int i = 0; i < 8; i++)
                x |= (lanes[(size_t)(p0 + i) * (size_t)cw + (size_t)(c0 / 64)] >>
                          (c0 % 64) & 0xFF)
                     << (8 * i);
            if (!x)
                continue;
            x = transpose8(x);
            for (int j = 0; j < 8 && c0 + j < c; j++)
                out[(size_t)(c0 + j) * stride + (size_t)(p0 / 64)] |=
                    (x >> (8 * j) & 0xFF) << (p0 % 64);
        }
}

void td_bslice_to_nhwc(const uint64_t *in, size_t stride, int c,
                       const td_bslice_layout *lay, const int32_t *lane,
                       uint64_t *out, uint64_t *lanes)
{
    int cw = (c + 63) / 64;
    int px = lay->lw * 64;
    size_t npix = (size_t)lay->h * (size_t)lay->w;
    /* transpose to one channel-packed word per lane, then gather the
     * pixels' lanes */
    memset(lanes, 0, (size_t)px * (size_t)cw * 8);
    for (int p0 = 0; p0 < px; p0 += 8)
        for (int c0 = 0; c0 < c; c0 += 8) {
            uint64_t x = 0;
            for (int j = 0; j < 8 && c0 + j < c; j++)
                x |= (in[(size_t)(c0 + j) * stride + (size_t)(p0 / 64)] >>
                          (p0 % 64) & 0xFF)
                     << (8 * j);
            if (!x)
                continue;
            x = transpose8(x);
            for (int i = 0; i < 8; i++)
                lanes[(size_t)(p0 + i) * (size_t)cw + (size_t)(c0 / 64)] |=
                    (x >> (8 * i) & 0xFF) << (c0 % 64);
        }
    if (cw == 1)
        for (size_t p = 0; p < npix; p++)
            out[p] = lanes[lane[p]];
    else
        for (size_t p = 0; p < npix; p++)
            memcpy(out + p * (size_t)cw, lanes + (size_t)lane[p] * (size_t)cw,
                   (size_t)cw * 8);
}
