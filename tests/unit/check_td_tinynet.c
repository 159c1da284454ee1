/* Unit tests for TinyNet: architecture rules and counts, kernels against
 * naive loops, the forward pass against PyTorch fixtures
 * (tests/fixtures/tinynet/gen_fixtures.py), loading, saving, bad files. */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "td_arena.h"
#include "td_gemm.h"
#include "td_kernels.h"
#include "td_safetensors.h"
#include "td_tinynet.h"
#include "td_tinynet_arch.h"

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state = 88172645463325252ull;

static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static void fill(float *p, size_t n, float scale)
{
    size_t i;
    for (i = 0; i < n; i++)
        p[i] = frand() * scale;
}

static double silu_ref(double x) { return x / (1.0 + exp(-x)); }

static void fixture_path(char *buf, size_t len, const char *name)
{
    const char *src = getenv("TD_SRCDIR");
    snprintf(buf, len, "%s/tests/fixtures/tinynet/%s", src ? src : ".",
             name);
}

static char tmpdir[64];

static void make_tmpdir(void)
{
    strcpy(tmpdir, "/tmp/td_tn_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

/* |got - want| <= 1e-4 * max|want| + 1e-4 per sample (row). */
static void assert_logits_close(const float *got, const float *want, int n,
                                int k)
{
    int i, j;
    for (i = 0; i < n; i++) {
        float mx = 0;
        for (j = 0; j < k; j++)
            mx = fabsf(want[i * k + j]) > mx ? fabsf(want[i * k + j]) : mx;
        for (j = 0; j < k; j++) {
            float e = fabsf(got[i * k + j] - want[i * k + j]);
            ck_assert_msg(e <= 1e-4f * mx + 1e-4f,
                          "sample %d logit %d: got %.7g want %.7g (err %.3g)",
                          i, j, got[i * k + j], want[i * k + j], e);
        }
    }
}

/* Run a model on an (n,3,h,w) input with an arena sized exactly. */
static void run(const td_tinynet *m, const float *in, int n, int h, int w,
                float *logits)
{
    td_arena a;
    td_error err;
    size_t need = td_tinynet_scratch_bytes(m, n, h, w);
    ck_assert_int_eq(td_arena_init(&a, need, &err), TD_OK);
    ck_assert_int_eq(td_tinynet_forward(m, &a, in, n, h, w, logits, &err),
                     TD_OK);
    ck_assert_uint_eq(a.used, 0);
    ck_assert_uint_le(a.high_water, need);
    td_arena_free(&a);
}

/* ------------------------------------------------------------ architecture */

START_TEST(test_make_divisible_and_depth)
{
    ck_assert_int_eq(td_tn_make_divisible(16 * 0.51, 8), 8);
    ck_assert_int_eq(td_tn_make_divisible(24 * 0.51, 8), 16);
    ck_assert_int_eq(td_tn_make_divisible(40 * 0.54, 8), 24);
    ck_assert_int_eq(td_tn_make_divisible(112 * 0.75, 8), 88);
    ck_assert_int_eq(td_tn_make_divisible(320 * 0.54, 8), 176);
    /* the 90% rule: 10 rounds to 8, which loses more than 10% -> 16 */
    ck_assert_int_eq(td_tn_make_divisible(10, 8), 16);
    ck_assert_int_eq(td_tn_make_divisible(11.9, 8), 16);
    ck_assert_int_eq(td_tn_make_divisible(3, 8), 8);   /* minimum */
    ck_assert_int_eq(td_tn_make_divisible(1280 * 0.51, 8), 656);
    /* depth: Python round() is round-half-even, floor of 1 */
    ck_assert_int_eq(td_tn_round_repeats(2, 1.25), 2);
    ck_assert_int_eq(td_tn_round_repeats(3, 0.5), 2);
    ck_assert_int_eq(td_tn_round_repeats(1, 0.4), 1);
    ck_assert_int_eq(td_tn_round_repeats(4, 0.695), 3);
    ck_assert_int_eq(td_tn_round_repeats(4, 1.2), 5);
    ck_assert_int_eq(td_tn_round_repeats(3, 0.6), 2);
}
END_TEST

START_TEST(test_presets_match_timm)
{
    /* parameter counts of timm's tinynet_a..e (exact), conv+fc MACs as
     * timm builds them (tinynet.md) and the paper's FLOPs */
    static const struct {
        const char *name;
        int res, blocks;
        int64_t params, macs;
        double paper_macs;
        int reps[7];
        int out[7];
    } want[] = {
        {"tinynet_a", 192, 19, 6187972, 336870000, 339e6,
         {1, 2, 2, 4, 4, 5, 1}, {16, 24, 40, 80, 112, 192, 320}},
        {"tinynet_b", 188, 16, 3730562, 200710000, 202e6,
         {1, 2, 2, 3, 3, 4, 1}, {16, 24, 32, 64, 88, 144, 240}},
        {"tinynet-c", 184, 15, 2457234, 99540000, 100e6,
         {1, 2, 2, 3, 3, 3, 1}, {8, 16, 24, 40, 64, 104, 176}},
        {"d", 152, 11, 2338446, 51580000, 52e6,
         {1, 1, 1, 2, 2, 3, 1}, {8, 16, 24, 40, 64, 104, 176}},
        {"tinynet_e", 106, 10, 2042972, 24360000, 24e6,
         {1, 1, 1, 2, 2, 2, 1}, {8, 16, 24, 40, 56, 96, 160}},
    };
    size_t i;
    for (i = 0; i < sizeof want / sizeof want[0]; i++) {
        td_tn_arch a;
        td_tn_counts c;
        td_error err;
        int s, b = 0;
        ck_assert_int_eq(td_tn_arch_preset(&a, want[i].name, 1000, &err),
                         TD_OK);
        ck_assert_int_eq(a.resolution, want[i].res);
        ck_assert_int_eq(a.n_blocks, want[i].blocks);
        ck_assert_int_eq(a.head, 1280);
        ck_assert_int_eq(a.stem, 32);
        for (s = 0; s < 7; s++) {
            ck_assert_int_eq(a.stage_repeats[s], want[i].reps[s]);
            ck_assert_int_eq(a.blocks[b].cout, want[i].out[s]);
            /* SE from the block input; mid = 6 * in for IR */
            ck_assert_int_eq(a.blocks[b].cse,
                             s == 0 ? 8 : a.blocks[b].cin / 4);
            b += a.stage_repeats[s];
        }
        td_tn_arch_count(&a, a.resolution, a.resolution, &c);
        ck_assert_int_eq(c.params, want[i].params);
        /* tinynet.md gives MACs to 0.01M */
        ck_assert(llabs(c.macs - want[i].macs) <= 5000);
        /* the paper's table (whole millions) within 1% or its rounding */
        ck_assert(fabs((double)c.macs - want[i].paper_macs) <=
                  fmax(0.01 * want[i].paper_macs, 0.5e6));
    }
}
END_TEST

START_TEST(test_custom_arch)
{
    td_tn_arch a;
    td_tn_counts c;
    td_error err;
    int i;
    /* (1, 1, 1) is EfficientNet-B0: timm's efficientnet_b0 has 5,288,548
     * parameters */
    ck_assert_int_eq(td_tn_arch_build(&a, 1, 1, 1, 0, 1000, &err), TD_OK);
    ck_assert_int_eq(a.resolution, 224);
    ck_assert_int_eq(a.n_blocks, 16);
    td_tn_arch_count(&a, 224, 224, &c);
    ck_assert_int_eq(c.params, 5288548);
    /* wider than B0: the head grows with w */
    ck_assert_int_eq(td_tn_arch_build(&a, 1, 1, 1.1, 0, 10, &err), TD_OK);
    ck_assert_int_eq(a.head, 1408);
    ck_assert_int_eq(a.blocks[0].cout, 16);  /* 17.6 -> 16 */
    /* residual iff stride 1 and in == out */
    ck_assert_int_eq(td_tn_arch_build(&a, 0.5, 0.8, 0.25, 33, 5, &err),
                     TD_OK);
    for (i = 0; i < a.n_blocks; i++)
        ck_assert_int_eq(a.blocks[i].residual,
                         a.blocks[i].stride == 1 &&
                             a.blocks[i].cin == a.blocks[i].cout);
    ck_assert_int_eq(a.resolution, 33);
    /* strides only on the first block of a stage */
    ck_assert_int_eq(a.blocks[1].stride, 2);
    ck_assert_int_eq(a.blocks[2].stride, 1);
    /* names */
    {
        char buf[TD_TN_NAME_MAX];
        td_tn_block_names nm = td_tn_names_for(&a.blocks[0]);
        ck_assert_str_eq(nm.dw_conv, "conv_dw");
        ck_assert_str_eq(nm.proj_conv, "conv_pw");
        ck_assert_ptr_null(nm.expand_conv);
        nm = td_tn_names_for(&a.blocks[1]);
        ck_assert_str_eq(nm.expand_conv, "conv_pw");
        ck_assert_str_eq(nm.proj_bn, "bn3");
        td_tn_block_name(buf, sizeof buf, &a.blocks[2], "se.conv_reduce",
                         "bias");
        ck_assert_str_eq(buf, "blocks.1.1.se.conv_reduce.bias");
    }
    /* out of range */
    ck_assert_int_eq(td_tn_arch_build(&a, 1, 0, 1, 0, 10, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "d = 0"));
    ck_assert_int_eq(td_tn_arch_build(&a, 1, 4.5, 1, 0, 10, &err), TD_EINVAL);
    ck_assert_int_eq(td_tn_arch_build(&a, 1, 4, 1, 0, 10, &err), TD_OK);
    ck_assert_int_eq(a.n_blocks, TD_TN_MAX_BLOCKS);
    ck_assert_int_eq(td_tn_arch_preset(&a, "tinynet_f", 10, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "tinynet_f"));
}
END_TEST

START_TEST(test_flops_budget)
{
    static const char *names[] = {"a", "b", "c", "d", "e"};
    size_t i;
    td_error err;
    td_tn_arch a, p;
    td_tn_counts c, cp;
    /* The budget of a preset gives back its r and d, and a w at least as
     * wide that still fits. */
    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(td_tn_arch_preset(&p, names[i], 1000, &err), TD_OK);
        td_tn_arch_count(&p, p.resolution, p.resolution, &cp);
        ck_assert_int_eq(td_tn_arch_for_flops(&a, (double)cp.macs, 1000,
                                              &err),
                         TD_OK);
        ck_assert(fabs(a.r - p.r) < 1e-9 && fabs(a.d - p.d) < 1e-9);
        ck_assert_int_eq(a.resolution, p.resolution);
        ck_assert(a.w >= p.w - 1e-9);
        td_tn_arch_count(&a, a.resolution, a.resolution, &c);
        ck_assert(c.macs <= cp.macs);
    }
    /* in between: fits, and uses the budget well (within 10%) */
    ck_assert_int_eq(td_tn_arch_for_flops(&a, 50e6, 1000, &err), TD_OK);
    td_tn_arch_count(&a, a.resolution, a.resolution, &c);
    ck_assert(c.macs <= 50000000 && c.macs > 45000000);
    ck_assert(a.r > 0.475 && a.r < 0.825);
    ck_assert_int_eq(a.resolution, (int)(224 * a.r));
    ck_assert_int_eq(td_tn_arch_for_flops(&a, 150e6, 10, &err), TD_OK);
    td_tn_arch_count(&a, a.resolution, a.resolution, &c);
    ck_assert(c.macs <= 150000000 && c.macs > 135000000);
    /* too small or too large */
    ck_assert_int_eq(td_tn_arch_for_flops(&a, 3e6, 1000, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "below the smallest"));
    ck_assert_int_eq(td_tn_arch_for_flops(&a, 5e9, 1000, &err), TD_EINVAL);
}
END_TEST

/* ------------------------------------------------------------ kernels */

START_TEST(test_expf_silu_accuracy)
{
    float x;
    float buf[37], orig[37];
    int i;
    for (x = -87.0f; x <= 88.0f; x += 0.0137f) {
        double want = exp((double)x);
        ck_assert_msg(fabs(td_k_expf(x) - want) <= 3e-7 * want,
                      "exp(%g) = %.9g, want %.9g", x, td_k_expf(x), want);
    }
    ck_assert(isnan(td_k_expf(NAN)));
    for (i = 0; i < 37; i++)
        buf[i] = -20.0f + 1.1f * (float)i;
    buf[5] = NAN;
    memcpy(orig, buf, sizeof buf);
    td_k_silu(buf, 37);
    for (i = 0; i < 37; i++) {
        double xi = orig[i];
        if (i == 5) {
            ck_assert(isnan(buf[i]));
            continue;
        }
        ck_assert_msg(fabs(buf[i] - silu_ref(xi)) <=
                          1e-6 * fabs(silu_ref(xi)) + 1e-30,
                      "silu(%g) = %.9g, want %.9g", xi, buf[i], silu_ref(xi));
    }
}
END_TEST

/* naive depthwise conv, (H,W,C) and (k,k,C) weights */
static void dw_ref(const float *in, int h, int w, int c, const float *wt,
                   const float *bias, int k, int s, float *out)
{
    int ho = td_tn_conv_out(h, k, s), wo = td_tn_conv_out(w, k, s);
    int oy, ox, ch, ky, kx;
    for (oy = 0; oy < ho; oy++)
        for (ox = 0; ox < wo; ox++)
            for (ch = 0; ch < c; ch++) {
                double acc = bias[ch];
                for (ky = 0; ky < k; ky++)
                    for (kx = 0; kx < k; kx++) {
                        int iy = oy * s - k / 2 + ky, ix = ox * s - k / 2 + kx;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                            continue;
                        acc += (double)in[(iy * w + ix) * c + ch] *
                               wt[(ky * k + kx) * c + ch];
                    }
                out[(oy * wo + ox) * c + ch] = (float)silu_ref(acc);
            }
}

START_TEST(test_depthwise_against_naive)
{
    static const int ks[] = {3, 5}, ss[] = {1, 2}, cs[] = {8, 37, 40, 72};
    static const int hs[] = {7, 1, 6}, ws[] = {9, 5, 2};
    size_t ki, si, ci, hi;
    for (ki = 0; ki < 2; ki++)
        for (si = 0; si < 2; si++)
            for (ci = 0; ci < 4; ci++)
                for (hi = 0; hi < 3; hi++) {
                    int k = ks[ki], s = ss[si], c = cs[ci], h = hs[hi],
                        w = ws[hi];
                    int ho = td_tn_conv_out(h, k, s), wo = td_tn_conv_out(w, k, s);
                    size_t nin = (size_t)h * w * c, nout = (size_t)ho * wo * c;
                    float *in = malloc(nin * 4), *wt = malloc((size_t)k * k * c * 4);
                    float *b = malloc(c * 4), *got = malloc(nout * 4);
                    float *want = malloc(nout * 4), *sum = malloc(c * 4);
                    size_t i;
                    int ch;
                    fill(in, nin, 2);
                    fill(wt, (size_t)k * k * c, 0.5f);
                    fill(b, c, 0.3f);
                    td_k_dwconv_silu(in, h, w, c, wt, b, k, s, got, sum);
                    dw_ref(in, h, w, c, wt, b, k, s, want);
                    for (i = 0; i < nout; i++)
                        ck_assert_msg(fabsf(got[i] - want[i]) <=
                                          1e-5f * (1 + fabsf(want[i])),
                                      "k%d s%d c%d %dx%d: [%zu] %g vs %g", k,
                                      s, c, h, w, i, got[i], want[i]);
                    for (ch = 0; ch < c; ch++) {
                        double acc = 0;
                        for (i = 0; i < (size_t)ho * wo; i++)
                            acc += want[i * c + ch];
                        ck_assert(fabs(sum[ch] - acc) <= 1e-4 * (1 + fabs(acc)));
                    }
                    free(in);
                    free(wt);
                    free(b);
                    free(got);
                    free(want);
                    free(sum);
                }
}
END_TEST

START_TEST(test_stem_conv_against_naive)
{
    /* im2col + sgemm against a direct NCHW conv, odd sizes, batch 2 */
    int n = 2, h = 11, w = 8, co = 32, k = 3, s = 2;
    int ho = td_tn_conv_out(h, k, s), wo = td_tn_conv_out(w, k, s);
    float *in = malloc((size_t)n * 3 * h * w * 4);
    float *wt = malloc((size_t)27 * co * 4); /* (ky,kx,ci) x co */
    float *cols = malloc((size_t)n * ho * wo * 27 * 4);
    float *out = malloc((size_t)n * ho * wo * co * 4);
    int img, oy, ox, o, ky, kx, ci;
    fill(in, (size_t)n * 3 * h * w, 1);
    fill(wt, 27 * (size_t)co, 1);
    td_k_im2col_nchw(in, n, 3, h, w, k, s, cols);
    td_sgemm(n * ho * wo, co, 27, cols, 27, wt, co, 0, out, co);
    for (img = 0; img < n; img++)
        for (oy = 0; oy < ho; oy++)
            for (ox = 0; ox < wo; ox++)
                for (o = 0; o < co; o++) {
                    double acc = 0;
                    for (ky = 0; ky < k; ky++)
                        for (kx = 0; kx < k; kx++)
                            for (ci = 0; ci < 3; ci++) {
                                int iy = oy * s - 1 + ky, ix = ox * s - 1 + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                    continue;
                                acc += (double)in[((img * 3 + ci) * h + iy) * w + ix] *
                                       wt[((ky * k + kx) * 3 + ci) * co + o];
                            }
                    ck_assert(fabs(out[(((size_t)img * ho + oy) * wo + ox) * co + o] -
                                   acc) <= 1e-5 * (1 + fabs(acc)));
                }
    free(in);
    free(wt);
    free(cols);
    free(out);
}
END_TEST

START_TEST(test_se_against_naive)
{
    int hw = 13, c = 44, r = 11, p, j, i;
    float *x = malloc((size_t)hw * c * 4), *x0 = malloc((size_t)hw * c * 4);
    float *wr = malloc((size_t)r * c * 4), *br = malloc(r * 4);
    float *we = malloc((size_t)r * c * 4), *be = malloc(c * 4);
    float *sum = calloc(c, 4), *tmp = malloc(td_k_se_tmp(c, r) * 4);
    double hid[11];
    fill(x, (size_t)hw * c, 2);
    memcpy(x0, x, (size_t)hw * c * 4);
    fill(wr, (size_t)r * c, 0.5f);
    fill(br, r, 0.5f);
    fill(we, (size_t)r * c, 0.5f);
    fill(be, c, 0.5f);
    for (p = 0; p < hw; p++)
        for (j = 0; j < c; j++)
            sum[j] += x[p * c + j];
    td_k_se(x, hw, c, sum, wr, br, we, be, r, tmp);
    for (i = 0; i < r; i++) {
        double acc = br[i];
        for (j = 0; j < c; j++)
            acc += (double)sum[j] / hw * wr[i * c + j];
        hid[i] = silu_ref(acc);
    }
    for (j = 0; j < c; j++) {
        double g = be[j];
        for (i = 0; i < r; i++)
            g += hid[i] * we[i * c + j];
        g = 1 / (1 + exp(-g));
        for (p = 0; p < hw; p++)
            ck_assert(fabs(x[p * c + j] - x0[p * c + j] * g) <=
                      1e-5 * (1 + fabs(x0[p * c + j])));
    }
    free(x);
    free(x0);
    free(wr);
    free(br);
    free(we);
    free(be);
    free(sum);
    free(tmp);
}
END_TEST

START_TEST(test_sgemm_all_paths)
{
    /* 1 and 2 rows go through sgemv, more through sgemm; beta 0 and 1 */
    static const int ms[] = {1, 2, 3, 17};
    int k = 37, n = 29;
    size_t mi;
    for (mi = 0; mi < 4; mi++) {
        int m = ms[mi], i, j, t;
        float *a = malloc((size_t)m * k * 4), *b = malloc((size_t)k * n * 4);
        float *c = malloc((size_t)m * n * 4), *c0 = malloc((size_t)m * n * 4);
        fill(a, (size_t)m * k, 1);
        fill(b, (size_t)k * n, 1);
        fill(c0, (size_t)m * n, 1);
        for (t = 0; t < 2; t++) {
            memcpy(c, c0, (size_t)m * n * 4);
            td_sgemm(m, n, k, a, k, b, n, (float)t, c, n);
            for (i = 0; i < m; i++)
                for (j = 0; j < n; j++) {
                    double acc = t ? c0[i * n + j] : 0;
                    int q;
                    for (q = 0; q < k; q++)
                        acc += (double)a[i * k + q] * b[q * n + j];
                    ck_assert(fabs(c[i * n + j] - acc) <= 1e-4 * (1 + fabs(acc)));
                }
        }
        free(a);
        free(b);
        free(c);
        free(c0);
    }
}
END_TEST

START_TEST(test_pool_softmax_bias)
{
    float x[2 * 3 * 4], pooled[2 * 4], b[4] = {1, -1, 0.5f, 0}, s[2 * 4];
    int i, j;
    for (i = 0; i < 24; i++)
        x[i] = (float)i;
    td_k_avgpool(x, 2, 3, 4, pooled);
    for (i = 0; i < 2; i++)
        for (j = 0; j < 4; j++)
            ck_assert(fabsf(pooled[i * 4 + j] - (float)(i * 12 + 4 + j)) < 1e-5f);
    memcpy(s, pooled, sizeof s);
    td_k_bias_act(s, 2, 4, b, 0, NULL);
    ck_assert(fabsf(s[1] - (pooled[1] - 1)) < 1e-6f);
    td_k_softmax(s, 2, 4);
    for (i = 0; i < 2; i++) {
        float t = 0;
        for (j = 0; j < 4; j++)
            t += s[i * 4 + j];
        ck_assert(fabsf(t - 1) < 1e-6f);
        ck_assert(s[i * 4 + 0] > s[i * 4 + 1]);
    }
}
END_TEST

/* ------------------------------------------------------------ fixtures */

typedef struct io_fixture {
    td_st_file f;
    const float *in, *want; /* copies, aligned */
    float *in_buf, *want_buf;
    int n, h, w, k;
} io_fixture;

static void io_load(io_fixture *io, const char *prefix)
{
    char path[4096], name[64];
    const td_st_tensor *t;
    td_error err;
    fixture_path(path, sizeof path, "tiny_io.safetensors");
    ck_assert_msg(td_st_open(&io->f, path, &err) == TD_OK, "%s", err.msg);
    snprintf(name, sizeof name, "%s_input", prefix);
    ck_assert_int_eq(td_st_expect(&io->f, name, TD_DT_F32, -1, NULL, &t, &err),
                     TD_OK);
    ck_assert_int_eq(t->ndim, 4);
    io->n = (int)t->shape[0];
    io->h = (int)t->shape[2];
    io->w = (int)t->shape[3];
    io->in_buf = malloc(t->nbytes);
    memcpy(io->in_buf, t->data, t->nbytes);
    snprintf(name, sizeof name, "%s_logits", prefix);
    ck_assert_int_eq(td_st_expect(&io->f, name, TD_DT_F32, -1, NULL, &t, &err),
                     TD_OK);
    io->k = (int)t->shape[1];
    io->want_buf = malloc(t->nbytes);
    memcpy(io->want_buf, t->data, t->nbytes);
    io->in = io->in_buf;
    io->want = io->want_buf;
}

static void io_free(io_fixture *io)
{
    free(io->in_buf);
    free(io->want_buf);
    td_st_close(&io->f);
}

START_TEST(test_timm_checkpoint_with_sidecar)
{
    char path[4096];
    td_tinynet *m;
    td_error err;
    io_fixture io;
    float *logits;
    td_blas_set_threads(1);
    io_load(&io, "timm");
    fixture_path(path, sizeof path, "tiny_timm.safetensors");
    ck_assert_msg(td_tinynet_load(&m, path, NULL, &err) == TD_OK, "%s",
                  err.msg);
    ck_assert_int_eq(m->arch.classes, 10); /* from classifier.weight */
    ck_assert_int_eq(m->arch.resolution, 40);
    ck_assert(fabs(m->arch.w - 0.15) < 1e-12);
    ck_assert_str_eq(m->interpolation, "bilinear");
    ck_assert(fabsf(m->crop_pct - 0.9f) < 1e-6f);
    ck_assert(fabsf(m->mean[0] - 0.485f) < 1e-6f); /* ImageNet default */
    ck_assert_ptr_nonnull(m->labels);
    ck_assert_str_eq(m->labels[9], "class9");
    ck_assert_int_eq(io.k, 10);
    logits = malloc((size_t)io.n * io.k * 4);
    run(m, io.in, io.n, io.h, io.w, logits); /* 37 x 45: odd, non-square */
    assert_logits_close(logits, io.want, io.n, io.k);
    free(logits);
    td_tinynet_free(m);
    io_free(&io);
}
END_TEST

START_TEST(test_our_format_and_save_roundtrip)
{
    char path[4096], out[128];
    td_tinynet *m, *m2;
    td_error err;
    io_fixture io;
    float *l1, *l2;
    int i;
    io_load(&io, "ours");
    fixture_path(path, sizeof path, "tiny_ours.safetensors");
    ck_assert_msg(td_tinynet_load(&m, path, NULL, &err) == TD_OK, "%s",
                  err.msg);
    ck_assert_int_eq(m->arch.classes, 5);
    ck_assert_str_eq(m->labels[2], "bird");
    ck_assert(fabsf(m->std[1] - 0.25f) < 1e-7f);
    l1 = malloc((size_t)io.n * io.k * 4);
    l2 = malloc((size_t)io.n * io.k * 4);
    run(m, io.in, io.n, io.h, io.w, l1);
    assert_logits_close(l1, io.want, io.n, io.k);
    /* batch of one gives the same answer as inside a batch */
    run(m, io.in + (size_t)3 * io.h * io.w, 1, io.h, io.w, l2);
    for (i = 0; i < io.k; i++)
        ck_assert(fabsf(l2[i] - l1[io.k + i]) <= 1e-5f * (1 + fabsf(l1[io.k + i])));
    /* save (folded) and load again: same logits, same metadata */
    make_tmpdir();
    snprintf(out, sizeof out, "%s/saved.safetensors", tmpdir);
    ck_assert_msg(td_tinynet_save(m, out, &err) == TD_OK, "%s", err.msg);
    ck_assert_msg(td_tinynet_load(&m2, out, NULL, &err) == TD_OK, "%s",
                  err.msg);
    ck_assert_int_eq(m2->arch.n_blocks, m->arch.n_blocks);
    ck_assert_str_eq(m2->labels[4], "ant");
    ck_assert(fabsf(m2->mean[0] - 0.5f) < 1e-7f);
    ck_assert_uint_eq(m2->n_weights, m->n_weights);
    ck_assert_int_eq(memcmp(m2->weights, m->weights, m->n_weights * 4), 0);
    run(m2, io.in, io.n, io.h, io.w, l2);
    ck_assert_int_eq(memcmp(l1, l2, (size_t)io.n * io.k * 4), 0);
    unlink(out);
    rmdir(tmpdir);
    free(l1);
    free(l2);
    td_tinynet_free(m);
    td_tinynet_free(m2);
    io_free(&io);
}
END_TEST

START_TEST(test_config_argument_and_missing_arch)
{
    char path[4096], copy[128];
    td_tinynet *m;
    td_error err;
    td_tn_config cfg;
    td_st_file f;
    td_st_writer *w;
    size_t i;
    /* a timm checkpoint without its sidecar: no architecture */
    fixture_path(path, sizeof path, "tiny_timm.safetensors");
    make_tmpdir();
    snprintf(copy, sizeof copy, "%s/timm.safetensors", tmpdir);
    ck_assert_int_eq(td_st_open(&f, path, &err), TD_OK);
    w = td_st_writer_new();
    for (i = 0; i < f.n_tensors; i++)
        ck_assert_int_eq(td_st_writer_add(w, f.tensors[i].name,
                                          f.tensors[i].dtype, f.tensors[i].ndim,
                                          f.tensors[i].shape, f.tensors[i].data,
                                          &err),
                         TD_OK);
    ck_assert_int_eq(td_st_writer_write(w, copy, &err), TD_OK);
    td_st_writer_free(w);
    td_st_close(&f);
    ck_assert_int_eq(td_tinynet_load(&m, copy, NULL, &err), TD_EINVAL);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(err.msg, "no architecture"));
    /* the architecture given by the caller */
    memset(&cfg, 0, sizeof cfg);
    cfg.r = 0.18;
    cfg.d = 0.5;
    cfg.w = 0.15;
    ck_assert_msg(td_tinynet_load(&m, copy, &cfg, &err) == TD_OK, "%s",
                  err.msg);
    ck_assert_int_eq(m->arch.resolution, 40);
    ck_assert_ptr_null(m->labels);
    td_tinynet_free(m);
    /* a wrong architecture: the first tensor that differs is named */
    cfg.w = 0.25;
    ck_assert_int_eq(td_tinynet_load(&m, copy, &cfg, &err), TD_EFORMAT);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(err.msg, "timm.safetensors"));
    ck_assert_ptr_nonnull(strstr(err.msg, "expected F32 ["));
    /* a preset name whose depth differs */
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.variant, sizeof cfg.variant, "tinynet_e");
    ck_assert_int_eq(td_tinynet_load(&m, copy, &cfg, &err), TD_EFORMAT);
    unlink(copy);
    rmdir(tmpdir);
}
END_TEST

/* Copy tiny_ours with one tensor dropped, reshaped or added. */
static void write_broken(const char *out, const char *drop,
                         const char *reshape, int extra)
{
    char path[4096];
    td_st_file f;
    td_st_writer *w = td_st_writer_new();
    td_error err;
    size_t i;
    static float zeros[64];
    fixture_path(path, sizeof path, "tiny_ours.safetensors");
    ck_assert_int_eq(td_st_open(&f, path, &err), TD_OK);
    for (i = 0; i < f.n_tensors; i++) {
        const td_st_tensor *t = &f.tensors[i];
        int64_t shape[TD_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (drop && !strcmp(t->name, drop))
            continue;
        if (reshape && !strcmp(t->name, reshape)) { /* [a,b,..] -> [b,a,..] */
            shape[0] = t->shape[1];
            shape[1] = t->shape[0];
        }
        ck_assert_int_eq(td_st_writer_add(w, t->name, t->dtype, t->ndim,
                                          shape, t->data, &err),
                         TD_OK);
    }
    if (extra) {
        int64_t s[1] = {64};
        ck_assert_int_eq(td_st_writer_add(w, "blocks.6.1.conv_pw.weight",
                                          TD_DT_F32, 1, s, zeros, &err),
                         TD_OK);
    }
    for (i = 0; i < f.n_meta; i++)
        ck_assert_int_eq(td_st_writer_meta(w, f.meta[i].key, f.meta[i].value,
                                           &err),
                         TD_OK);
    ck_assert_int_eq(td_st_writer_write(w, out, &err), TD_OK);
    td_st_writer_free(w);
    td_st_close(&f);
}

START_TEST(test_bad_files_name_the_tensor)
{
    char out[128];
    td_tinynet *m;
    td_error err;
    make_tmpdir();
    snprintf(out, sizeof out, "%s/bad.safetensors", tmpdir);
    write_broken(out, "blocks.2.1.se.conv_expand.bias", NULL, 0);
    ck_assert_int_eq(td_tinynet_load(&m, out, NULL, &err), TD_EFORMAT);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(err.msg, "missing tensor \"blocks.2.1.se.conv_expand.bias\""),
                  "%s", err.msg);
    ck_assert_ptr_nonnull(strstr(err.msg, "bad.safetensors"));
    write_broken(out, "blocks.3.0.bn1.running_var", NULL, 0);
    ck_assert_int_eq(td_tinynet_load(&m, out, NULL, &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "blocks.3.0.bn1.running_var"));
    /* blocks.1.0.conv_pw is [48, 8, 1, 1] */
    write_broken(out, NULL, "blocks.1.0.conv_pw.weight", 0);
    ck_assert_int_eq(td_tinynet_load(&m, out, NULL, &err), TD_EFORMAT);
    ck_assert_msg(strstr(err.msg, "blocks.1.0.conv_pw.weight") &&
                      strstr(err.msg, "[48,8,1,1]") &&
                      strstr(err.msg, "[8,48,1,1]"),
                  "%s", err.msg);
    write_broken(out, NULL, NULL, 1);
    ck_assert_int_eq(td_tinynet_load(&m, out, NULL, &err), TD_EFORMAT);
    ck_assert_msg(strstr(err.msg, "unexpected tensor \"blocks.6.1.conv_pw.weight\""),
                  "%s", err.msg);
    unlink(out);
    /* not a safetensors file at all */
    {
        FILE *fp = fopen(out, "wb");
        fputs("garbage", fp);
        fclose(fp);
    }
    ck_assert_int_ne(td_tinynet_load(&m, out, NULL, &err), TD_OK);
    ck_assert_ptr_null(m);
    unlink(out);
    rmdir(tmpdir);
}
END_TEST

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    ck_assert_ptr_nonnull(fp);
    fputs(text, fp);
    ck_assert_int_eq(fclose(fp), 0);
}

/* Copy a fixture's tensors with new metadata (NULL: none). */
static void copy_with_meta(const char *fixture, const char *out,
                           const char *const *kv)
{
    char path[4096];
    td_st_file f;
    td_st_writer *w = td_st_writer_new();
    td_error err;
    size_t i;
    fixture_path(path, sizeof path, fixture);
    ck_assert_int_eq(td_st_open(&f, path, &err), TD_OK);
    for (i = 0; i < f.n_tensors; i++)
        ck_assert_int_eq(td_st_writer_add(w, f.tensors[i].name,
                                          f.tensors[i].dtype, f.tensors[i].ndim,
                                          f.tensors[i].shape, f.tensors[i].data,
                                          &err),
                         TD_OK);
    for (; kv && kv[0]; kv += 2)
        ck_assert_int_eq(td_st_writer_meta(w, kv[0], kv[1], &err), TD_OK);
    ck_assert_int_eq(td_st_writer_write(w, out, &err), TD_OK);
    td_st_writer_free(w);
    td_st_close(&f);
}

START_TEST(test_bad_metadata_and_sidecars)
{
    char out[128], side[160];
    td_tinynet *m;
    td_error err;
    static const char *const wrong_kind[] = {"kind", "linear", NULL};
    static const char *const few_labels[] = {
        "kind", "tinynet", "r", "0.15", "d", "0.8", "w", "0.1",
        "labels", "[\"a\",\"b\"]", NULL};
    static const char *const bad_num[] = {"kind", "tinynet", "r", "0.15",
                                          "d", "abc", "w", "0.1", NULL};
    static const char *const folded[] = {"kind", "tinynet", "bn", "folded",
                                         "r", "0.15", "d", "0.8", "w", "0.1",
                                         NULL};
    make_tmpdir();
    snprintf(out, sizeof out, "%s/m.safetensors", tmpdir);
    snprintf(side, sizeof side, "%s/m.json", tmpdir);
    copy_with_meta("tiny_ours.safetensors", out, wrong_kind);
    ck_assert_int_eq(td_tinynet_load(&m, out, NULL, &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "\"kind\""));
    copy_with_meta("tiny_ours.safetensors", out, few_labels);
    ck_assert_int_eq(td_tinynet_load(&m, out, NULL, &err), TD_EFORMAT);
    ck_assert_msg(strstr(err.msg, "2 entries") && strstr(err.msg, "5 classes"),
                  "%s", err.msg);
    copy_with_meta("tiny_ours.safetensors", out, bad_num);
    ck_assert_int_eq(td_tinynet_load(&m, out, NULL, &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "\"d\""));
    /* claims folded BN but has BN tensors and no conv biases */
    copy_with_meta("tiny_ours.safetensors", out, folded);
    ck_assert_int_eq(td_tinynet_load(&m, out, NULL, &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing tensor \"conv_stem.bias\""));
    /* a timm checkpoint with a broken or wrong sidecar */
    copy_with_meta("tiny_timm.safetensors", out, NULL);
    write_text(side, "{\"r\": 0.18, \"d\": 0.5,");
    ck_assert_int_eq(td_tinynet_load(&m, out, NULL, &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "m.json"));
    write_text(side, "{\"variant\": \"tinynet_q\"}");
    ck_assert_int_eq(td_tinynet_load(&m, out, NULL, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "tinynet_q"));
    write_text(side, "{\"r\": 0.18, \"d\": 0.5, \"w\": 0.15, "
                     "\"mean\": [0.1, 0.2]}");
    ck_assert_int_eq(td_tinynet_load(&m, out, NULL, &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "\"mean\""));
    write_text(side, "{\"r\": 0.18, \"d\": 0.5, \"w\": 0.15, "
                     "\"mean\": [0.1, 0.2, 0.3], \"std\": [1, 2, 3]}");
    ck_assert_msg(td_tinynet_load(&m, out, NULL, &err) == TD_OK, "%s",
                  err.msg);
    ck_assert(fabsf(m->std[2] - 3.0f) < 1e-7f);
    ck_assert_str_eq(m->interpolation, "bicubic");
    td_tinynet_free(m);
    unlink(side);
    unlink(out);
    rmdir(tmpdir);
}
END_TEST

START_TEST(test_forward_scratch_and_nan)
{
    td_tn_arch a;
    td_tinynet *m;
    td_error err;
    td_arena ar;
    float in[2 * 3 * 21 * 17], logits[2 * 7];
    size_t need;
    int i;
    ck_assert_int_eq(td_tn_arch_build(&a, 0.1, 0.3, 0.1, 21, 7, &err), TD_OK);
    ck_assert_int_eq(td_tinynet_new(&m, &a, &err), TD_OK);
    fill(m->weights, m->n_weights, 0.1f);
    fill(in, sizeof in / 4, 1);
    need = td_tinynet_scratch_bytes(m, 2, 21, 17);
    /* one byte short of a 64-byte block: refused, nothing written */
    ck_assert_int_eq(td_arena_init(&ar, need - 64, &err), TD_OK);
    ck_assert_int_eq(td_tinynet_forward(m, &ar, in, 2, 21, 17, logits, &err),
                     TD_ENOMEM);
    ck_assert_ptr_nonnull(strstr(err.msg, "scratch"));
    ck_assert_uint_eq(ar.used, 0);
    td_arena_free(&ar);
    ck_assert_int_eq(td_arena_init(&ar, need, &err), TD_OK);
    ck_assert_int_eq(td_tinynet_forward(m, &ar, in, 0, 21, 17, logits, &err),
                     TD_EINVAL);
    ck_assert_int_eq(td_tinynet_forward(m, &ar, in, 2, 21, 9000, logits,
                                        &err),
                     TD_EINVAL);
    ck_assert_int_eq(td_tinynet_forward(m, &ar, in, 65536, 8192, 8192, logits,
                                        &err),
                     TD_EINVAL);
    ck_assert_uint_eq(td_tinynet_scratch_bytes(m, 65536, 8192, 8192),
                      SIZE_MAX);
    /* NaN in: answered (NaN out), no crash */
    in[5] = NAN;
    ck_assert_int_eq(td_tinynet_forward(m, &ar, in, 2, 21, 17, logits, &err),
                     TD_OK);
    for (i = 0; i < 7; i++)
        ck_assert(isnan(logits[i]));
    td_arena_free(&ar);
    td_tinynet_free(m);
}
END_TEST

static Suite *tinynet_suite(void)
{
    Suite *s = suite_create("tinynet");
    TCase *ta = tcase_create("arch");
    TCase *tk = tcase_create("kernels");
    TCase *tm = tcase_create("model");
    tcase_add_test(ta, test_make_divisible_and_depth);
    tcase_add_test(ta, test_presets_match_timm);
    tcase_add_test(ta, test_custom_arch);
    tcase_add_test(ta, test_flops_budget);
    tcase_add_test(tk, test_expf_silu_accuracy);
    tcase_add_test(tk, test_depthwise_against_naive);
    tcase_add_test(tk, test_stem_conv_against_naive);
    tcase_add_test(tk, test_se_against_naive);
    tcase_add_test(tk, test_sgemm_all_paths);
    tcase_add_test(tk, test_pool_softmax_bias);
    tcase_add_test(tm, test_timm_checkpoint_with_sidecar);
    tcase_add_test(tm, test_our_format_and_save_roundtrip);
    tcase_add_test(tm, test_config_argument_and_missing_arch);
    tcase_add_test(tm, test_bad_files_name_the_tensor);
    tcase_add_test(tm, test_bad_metadata_and_sidecars);
    tcase_add_test(tm, test_forward_scratch_and_nan);
    suite_add_tcase(s, ta);
    suite_add_tcase(s, tk);
    suite_add_tcase(s, tm);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(tinynet_suite());
    int failed;
    td_blas_set_threads(1);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
