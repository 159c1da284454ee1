/* Unit tests for td_bitpack, td_bnn kernels and td_mst plans: binary conv
 * against a float reference with zero padding, MST plans bit-exact with
 * the dense layer over random layers, plan validation. */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "td_bitpack.h"
#include "td_bnn.h"
#include "td_mst.h"

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* splitmix64: deterministic per test */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int rint_(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }
static float rfl(void) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2.0 - 1.0); }

/* Random weights as floats (cout, k, k, cin) and their packed rows; with
 * flip_pct >= 0 the channels are near-copies of a few prototypes (each
 * bit flipped with that percent probability). */
static void make_weights(int cin, int cout, int k, int flip_pct, float *wf,
                         uint64_t *rows)
{
    int taps = k * k, cw = td_bp_words(cin);
    int protos = 1 + cout / 8;
    for (int o = 0; o < cout; o++) {
        int p = o % protos;
        for (int t = 0; t < taps; t++)
            for (int c = 0; c < cin; c++) {
                size_t i = ((size_t)o * (size_t)taps + (size_t)t) * (size_t)cin + (size_t)c;
                if (flip_pct < 0 || o < protos) {
                    wf[i] = rfl();
                } else {
                    size_t pi = ((size_t)p * (size_t)taps + (size_t)t) * (size_t)cin + (size_t)c;
                    wf[i] = (int)(rnd() % 100) < flip_pct ? -wf[pi] : wf[pi];
                }
            }
        td_bp_pack_rows(wf + (size_t)o * (size_t)taps * (size_t)cin,
                        (size_t)taps, cin, rows + (size_t)o * (size_t)taps * (size_t)cw);
    }
}

static int sgn(float v) { return v < 0 ? -1 : 1; }

START_TEST(test_pack_convention)
{
    float x[70];
    uint64_t w[2];
    for (int i = 0; i < 70; i++)
        x[i] = (i % 3 == 0) ? -1.5f : (i % 3 == 1 ? 0.0f : 2.0f);
    td_bp_pack_rows(x, 1, 70, w);
    for (int i = 0; i < 70; i++)
        ck_assert_int_eq(td_bp_get(w, i), x[i] < 0 ? -1 : 1);
    ck_assert_uint_eq(w[1] >> 6, 0); /* padding bits stay 0 */
}
END_TEST

/* Binary conv, dense and planned, against sign(x) * sign(W) in float
 * with zero padding, over random geometry. */
START_TEST(test_bconv_matches_float_reference)
{
    rng_state = 1234;
    for (int trial = 0; trial < 60; trial++) {
        int cin = rint_(1, 150), cout = rint_(1, 40), k = rint_(1, 5);
        int stride = rint_(1, 3), pad = rint_(0, k - 1);
        int n = rint_(1, 2), h = rint_(k, 9), w = rint_(k, 9);
        int ho = td_bconv_out(h, k, stride, pad), wo = td_bconv_out(w, k, stride, pad);
        int cw = td_bp_words(cin), kw = k * k * cw;
        float *wf = malloc((size_t)cout * (size_t)k * (size_t)k * (size_t)cin * sizeof *wf);
        uint64_t *rows = malloc((size_t)cout * (size_t)kw * 8);
        float *x = malloc((size_t)n * (size_t)h * (size_t)w * (size_t)cin * sizeof *x);
        uint64_t *xb = malloc((size_t)n * (size_t)h * (size_t)w * (size_t)cw * 8);
        int32_t *yd = malloc((size_t)n * (size_t)ho * (size_t)wo * (size_t)cout * 4);
        int32_t *yp = malloc((size_t)n * (size_t)ho * (size_t)wo * (size_t)cout * 4);
        td_bconv l;
        td_mst_plan plan;
        uint64_t *scr;
        ck_assert_int_gt(ho, 0);
        make_weights(cin, cout, k, trial % 2 ? 10 : -1, wf, rows);
        for (size_t i = 0; i < (size_t)n * (size_t)h * (size_t)w * (size_t)cin; i++)
            x[i] = rfl();
        td_bp_pack_rows(x, (size_t)n * (size_t)h * (size_t)w, cin, xb);
        ck_assert_int_eq(td_mst_build(rows, cout, kw, &plan, NULL), TD_OK);
        ck_assert_int_eq(td_bconv_prepare(&l, cin, cout, k, stride, pad, rows, &plan, NULL), TD_OK);
        scr = malloc(td_bconv_scratch_words(&l) * 8);
        td_bconv_forward(&l, 0, xb, n, h, w, yd, scr);
        td_bconv_forward(&l, 1, xb, n, h, w, yp, scr);
        for (int b = 0; b < n; b++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++)
                    for (int o = 0; o < cout; o++) {
                        float ref = 0; /* float conv of the signs, zero padding */
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                for (int c = 0; c < cin; c++) {
                                    float xv = 0;
                                    if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                                        xv = (float)sgn(x[(((size_t)b * (size_t)h + (size_t)iy) * (size_t)w + (size_t)ix) * (size_t)cin + (size_t)c]);
                                    ref += xv * (float)sgn(wf[(((size_t)o * (size_t)k + (size_t)ky) * (size_t)k + (size_t)kx) * (size_t)cin + (size_t)c]);
                                }
                            }
                        size_t yi = (((size_t)b * (size_t)ho + (size_t)oy) * (size_t)wo + (size_t)ox) * (size_t)cout + (size_t)o;
                        ck_assert_int_eq(yd[yi], (int32_t)ref);
                        ck_assert_int_eq(yp[yi], yd[yi]);
                    }
        td_bconv_release(&l);
        td_mst_plan_free(&plan);
        free(wf); free(rows); free(x); free(xb); free(yd); free(yp); free(scr);
    }
}
END_TEST

/* The property test proper: larger random layers (random sizes, strides,
 * paddings, random or near-copy weights), planned == dense exactly. */
START_TEST(test_plan_bit_exact_property)
{
    rng_state = 99;
    for (int trial = 0; trial < 40; trial++) {
        int cin = rint_(1, 300), cout = rint_(1, 130), k = rint_(1, 3) * 2 - 1;
        int stride = rint_(1, 2), pad = rint_(0, k - 1);
        int h = rint_(k, 12), w = rint_(k, 12), n = 1;
        int ho = td_bconv_out(h, k, stride, pad), wo = td_bconv_out(w, k, stride, pad);
        int cw = td_bp_words(cin), kw = k * k * cw;
        int flip = (int)(rnd() % 4) == 0 ? -1 : rint_(0, 30);
        size_t ny = (size_t)ho * (size_t)wo * (size_t)cout;
        float *wf = malloc((size_t)cout * (size_t)k * (size_t)k * (size_t)cin * sizeof *wf);
        uint64_t *rows = malloc((size_t)cout * (size_t)kw * 8);
        uint64_t *xb = malloc((size_t)h * (size_t)w * (size_t)cw * 8);
        int32_t *yd = malloc(ny * 4), *yp = malloc(ny * 4);
        td_bconv l;
        td_mst_plan plan;
        uint64_t *scr;
        td_error err;
        make_weights(cin, cout, k, flip, wf, rows);
        for (size_t i = 0; i < (size_t)h * (size_t)w; i++)
            for (int c = 0; c < cw; c++) {
                uint64_t v = rnd();
                if (c == cw - 1 && cin % 64)
                    v &= (1ull << (cin % 64)) - 1;
                xb[i * (size_t)cw + (size_t)c] = v;
            }
        ck_assert_int_eq(td_mst_build(rows, cout, kw, &plan, &err), TD_OK);
        ck_assert_int_eq(td_mst_validate(&plan, rows, "t", &err), TD_OK);
        ck_assert_int_eq(td_bconv_prepare(&l, cin, cout, k, stride, pad, rows, &plan, &err), TD_OK);
        scr = malloc(td_bconv_scratch_words(&l) * 8);
        td_bconv_forward(&l, 0, xb, n, h, w, yd, scr);
        td_bconv_forward(&l, 1, xb, n, h, w, yp, scr);
        ck_assert_int_eq(memcmp(yd, yp, ny * 4), 0);
        td_bconv_release(&l);
        td_mst_plan_free(&plan);
        free(wf); free(rows); free(xb); free(yd); free(yp); free(scr);
    }
}
END_TEST

/* Kruskal's MST weight, independently of td_mst's Prim. */
static int64_t kruskal_weight(const uint64_t *rows, int c, int kw)
{
    int64_t total = 0;
    int *uf = malloc((size_t)c * sizeof *uf), joined = 0;
    int64_t maxd = (int64_t)kw * 64;
    for (int i = 0; i < c; i++)
        uf[i] = i;
    for (int64_t d = 0; d <= maxd && joined < c - 1; d++)
        for (int i = 0; i < c; i++)
            for (int j = i + 1; j < c; j++) {
                if (td_mst_hamming(rows + (size_t)i * (size_t)kw, rows + (size_t)j * (size_t)kw, kw) != d)
                    continue;
                int a = i, b = j;
                while (uf[a] != a) a = uf[a];
                while (uf[b] != b) b = uf[b];
                if (a != b) {
                    uf[a] = b;
                    total += d;
                    joined++;
                }
            }
    free(uf);
    return total;
}

START_TEST(test_mst_minimum_weight_and_stats)
{
    rng_state = 7;
    for (int trial = 0; trial < 12; trial++) {
        int cout = rint_(2, 24), kw = rint_(1, 2);
        uint64_t *rows = malloc((size_t)cout * (size_t)kw * 8);
        td_mst_plan plan;
        td_mst_stats s;
        for (int i = 0; i < cout * kw; i++) /* few distinct distances: many ties */
            rows[i] = rnd() & rnd() & rnd() & 0xFFFull;
        ck_assert_int_eq(td_mst_build(rows, cout, kw, &plan, NULL), TD_OK);
        ck_assert_int_eq(plan.distance, kruskal_weight(rows, cout, kw));
        td_mst_layer_stats(&plan, (int64_t)kw * 64, &s);
        ck_assert_int_eq(s.bitops_dense, (int64_t)cout * kw * 64);
        ck_assert_int_eq(s.bitops_mst, (int64_t)kw * 64 + plan.distance);
        ck_assert_int_eq(s.depth, plan.depth);
        ck_assert_int_le(plan.depth, cout - 1);
        td_mst_plan_free(&plan);
        free(rows);
    }
}
END_TEST

/* Identical channels: a star of depth 1 from the lowest index wins. */
START_TEST(test_mst_copies_give_depth_one)
{
    uint64_t rows[8 * 2];
    td_mst_plan plan;
    for (int i = 0; i < 16; i++)
        rows[i] = 0x5555AAAA12345678ull + (uint64_t)(i & 1);
    ck_assert_int_eq(td_mst_build(rows, 8, 2, &plan, NULL), TD_OK);
    ck_assert_int_eq(plan.depth, 1);
    ck_assert_int_eq(plan.root, 0);
    ck_assert_int_eq(plan.distance, 0);
    ck_assert_int_eq(plan.n_diff, 0);
    td_mst_plan_free(&plan);
}
END_TEST

START_TEST(test_mst_validate_refuses_bad_plans)
{
    uint64_t rows[6];
    td_mst_plan plan;
    td_error err;
    rng_state = 5;
    for (int i = 0; i < 6; i++)
        rows[i] = rnd();
    ck_assert_int_eq(td_mst_build(rows, 6, 1, &plan, NULL), TD_OK);
    {
        int32_t keep = plan.order[3];
        plan.order[3] = 6;
        ck_assert_int_eq(td_mst_validate(&plan, rows, "b0", &err), TD_EFORMAT);
        ck_assert_ptr_nonnull(strstr(err.msg, "b0.order"));
        plan.order[3] = keep;
    }
    {
        int c = plan.order[5], keep = plan.parent[c];
        plan.parent[c] = 9;
        ck_assert_int_eq(td_mst_validate(&plan, rows, "b0", &err), TD_EFORMAT);
        ck_assert_ptr_nonnull(strstr(err.msg, "out of range"));
        /* a cycle: the root's child points at the last vertex */
        plan.parent[c] = keep;
        int r = plan.order[0], a = plan.order[1];
        int32_t pr = plan.parent[r];
        plan.parent[r] = a;
        ck_assert_int_eq(td_mst_validate(&plan, rows, "b0", &err), TD_EFORMAT);
        ck_assert_ptr_nonnull(strstr(err.msg, "b0.parent"));
        plan.parent[r] = pr;
    }
    plan.depth += 1;
    ck_assert_int_eq(td_mst_validate(&plan, rows, "b0", &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "depth"));
    plan.depth -= 1;
    if (plan.n_diff > 0) {
        plan.diff_mask[0] ^= 1;
        ck_assert_int_eq(td_mst_validate(&plan, rows, "b0", &err), TD_EFORMAT);
        ck_assert_ptr_nonnull(strstr(err.msg, "diff"));
        plan.diff_mask[0] ^= 1;
    }
    ck_assert_int_eq(td_mst_validate(&plan, rows, "b0", &err), TD_OK);
    td_mst_plan_free(&plan);
}
END_TEST

START_TEST(test_fold_threshold_equals_affine_sign)
{
    const double ms[] = {0.37, -1.25, 0.0, 2.0, -0.5};
    const double bs[] = {3.1, -4.0, -0.2, 6.0, 0.75};
    for (int i = 0; i < 5; i++) {
        int8_t s;
        int32_t t;
        td_bnn_fold_threshold(ms[i], bs[i], 20, &s, &t);
        for (int32_t y = -20; y <= 20; y++) {
            int32_t yy = y;
            uint64_t bit;
            td_bnn_threshold(&yy, 1, 1, &s, &t, &bit);
            ck_assert_int_eq((int)bit, ms[i] * y + bs[i] < 0);
        }
    }
}
END_TEST

START_TEST(test_bfc_is_dot_product)
{
    rng_state = 11;
    int cin = 200, cout = 9, cw = td_bp_words(cin);
    float wf[9 * 200], x[200];
    uint64_t rows[9 * 4], xb[4], scr[8];
    int32_t y[9];
    td_bconv l;
    make_weights(cin, cout, 1, -1, wf, rows);
    for (int c = 0; c < cin; c++)
        x[c] = rfl();
    td_bp_pack_rows(x, 1, cin, xb);
    ck_assert_int_eq(td_bconv_prepare(&l, cin, cout, 1, 1, 0, rows, NULL, NULL), TD_OK);
    ck_assert_uint_le(td_bconv_scratch_words(&l), 8);
    td_bfc_forward(&l, 1, xb, 1, y, scr); /* no plan: falls back to dense */
    for (int o = 0; o < cout; o++) {
        int ref = 0;
        for (int c = 0; c < cin; c++)
            ref += sgn(x[c]) * sgn(wf[o * cin + c]);
        ck_assert_int_eq(y[o], ref);
    }
    (void)cw;
    td_bconv_release(&l);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("td_bnn");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_pack_convention);
    tcase_add_test(tc, test_bconv_matches_float_reference);
    tcase_add_test(tc, test_plan_bit_exact_property);
    tcase_add_test(tc, test_mst_minimum_weight_and_stats);
    tcase_add_test(tc, test_mst_copies_give_depth_one);
    tcase_add_test(tc, test_mst_validate_refuses_bad_plans);
    tcase_add_test(tc, test_fold_threshold_equals_affine_sign);
    tcase_add_test(tc, test_bfc_is_dot_product);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
