/* Unit tests for the bit-sliced executor (td_bnn_slice.h) and the direct
 * stem (td_bnn_stem.h): whole networks of random shapes give the same
 * logits, bit for bit, through the XOR-popcount kernels and through the
 * bit-sliced MST plan, the bit-sliced dense layers, and the portable C of
 * each, at batch sizes that fill vectors partly and across images. */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn_random.h"
#include "td_arena.h"
#include "td_bitpack.h"
#include "td_bnn_model.h"
#include "td_bnn_slice.h"
#include "td_bnn_stem.h"

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int rint_in(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }
static float rfl(void) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 4.0 - 2.0); }

/* A random member of the architecture family: every kernel size, stride
 * and padding the family allows at small sizes, channel counts across
 * 64-bit word boundaries. */
static void random_arch(char *buf, size_t n)
{
    int nb = rint_in(1, 4), len;
    int h = rint_in(5, 30), w = rint_in(5, 30);
    int k = rint_in(1, 5);
    len = snprintf(buf, n,
                   "{\"in_ch\":%d,\"in_h\":%d,\"in_w\":%d,\"stem\":{\"cout\":%d,"
                   "\"k\":%d,\"stride\":%d,\"pad\":%d},\"blocks\":[",
                   rint_in(1, 3), h, w, rint_in(1, 100), k, rint_in(1, 2),
                   rint_in(0, k - 1));
    for (int i = 0; i < nb; i++) {
        int kb = rint_in(1, 5);
        len += snprintf(buf + len, n - (size_t)len,
                        "%s{\"cout\":%d,\"k\":%d,\"stride\":%d,\"pad\":%d}",
                        i ? "," : "", rint_in(1, 150), kb, rint_in(1, 2),
                        rint_in(0, kb - 1));
    }
    snprintf(buf + len, n - (size_t)len, "],\"classes\":%d}", rint_in(2, 7));
}

/* Scratch starts as garbage, a different byte each call, so that any read
 * of scratch the executors did not write first changes the logits. */
static void forward(td_bnn_model *m, int flags, const float *in, int n,
                    float *out)
{
    static unsigned char fill = 0x5A;
    td_arena ar;
    td_error err;
    ck_assert_int_eq(td_arena_init(&ar, td_bnn_scratch_bytes(m), &err), TD_OK);
    memset(ar.base, fill, ar.cap);
    fill = (unsigned char)(fill * 37 + 11);
    ck_assert_msg(td_bnn_forward(m, flags, &ar, in, n, out, &err) == TD_OK,
                  "%s", err.msg);
    ck_assert_uint_eq(ar.used, 0);
    td_arena_free(&ar);
}

START_TEST(test_random_networks_bit_exact)
{
    static const int batches[] = {1, 2, 3, 8, 11, 17};
    int sliced = 0, trials = 0;
    rng_state = 2026;
    while (trials < 40) {
        char json[1024];
        td_bnn_arch arch;
        td_error err;
        bnn_random r;
        td_bnn_model *m;
        int flip = rint_in(-1, 6) * 2; /* -2: independent channels */
        random_arch(json, sizeof json);
        if (td_bnn_arch_parse(json, &arch, &err) != TD_OK)
            continue; /* a shape with no output: draw again */
        trials++;
        ck_assert_int_eq(bnn_random_latent(&r, &arch, rnd(), flip < 0 ? -1 : flip), 0);
        ck_assert_msg(td_bnn_from_latent(&m, &r.lat, &err) == TD_OK, "%s", err.msg);
        sliced += m->slice_ok;
        for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
            int n = batches[bi], cl = arch.classes;
            size_t img = (size_t)arch.in_ch * (size_t)arch.in_h * (size_t)arch.in_w;
            float *in = malloc((size_t)n * img * sizeof *in);
            float *ref = malloc((size_t)n * (size_t)cl * sizeof *ref);
            float *got = malloc((size_t)n * (size_t)cl * sizeof *got);
            static const int flags[] = {
                TD_BCONV_PLAN, TD_BNN_SLICE | TD_BCONV_PLAN,
                TD_BNN_SLICE | TD_BCONV_PLAN | TD_BCONV_PORTABLE,
                TD_BCONV_PORTABLE, TD_BNN_AUTO | TD_BCONV_PLAN,
                /* mixed passes: every conversion between the forms */
                TD_BNN_MIX_ODD | TD_BCONV_PLAN,
                TD_BNN_MIX_EVEN | TD_BCONV_PLAN,
                TD_BNN_MIX_EVEN | TD_BCONV_PORTABLE,
                /* what an AVX2-only machine runs */
                TD_BNN_SLICE | TD_BCONV_PLAN | TD_BNN_AVX2,
                TD_BNN_AUTO | TD_BCONV_PLAN | TD_BNN_AVX2,
                TD_BNN_MIX_ODD | TD_BNN_AVX2};
            for (size_t i = 0; i < (size_t)n * img; i++)
                in[i] = rfl();
            forward(m, 0, in, n, ref);
            for (size_t f = 0; f < sizeof flags / sizeof *flags; f++) {
                forward(m, flags[f], in, n, got);
                ck_assert_msg(memcmp(ref, got, (size_t)n * (size_t)cl * sizeof *got) == 0,
                              "%s batch %d flags %d: logits differ", json, n, flags[f]);
            }
            if (bi == 2 && m->slice_ok) {
                /* the bit-sliced dense layers, then back to the plans */
                ck_assert_int_eq(td_bnn_slice_rebuild(m, 0, &err), TD_OK);
                forward(m, TD_BNN_SLICE, in, n, got);
                ck_assert_msg(memcmp(ref, got, (size_t)n * (size_t)cl * sizeof *got) == 0,
                              "%s batch %d: sliced dense differs", json, n);
                ck_assert_int_eq(td_bnn_slice_rebuild(m, 1, &err), TD_OK);
            }
            free(in);
            free(ref);
            free(got);
        }
        td_bnn_free(m);
        bnn_random_free(&r);
    }
    /* most shapes slice; the rest run the XOR-popcount plan */
    printf("# random networks: %d of %d sliced\n", sliced, trials);
    ck_assert_int_ge(sliced, trials / 2);
}
END_TEST

/* Layouts: every pixel has its own lane, inside its phase's words; a
 * chain whose strides multiply past 16, or whose scratch would be too
 * large, is refused with a reason, and the model then serves through the
 * XOR-popcount plan. */
START_TEST(test_layouts)
{
    int k[3] = {3, 3, 1}, st[3] = {2, 1, 2}, pad[3] = {1, 1, 0};
    td_bslice_layout lay[4];
    td_error err;
    ck_assert_int_eq(td_bslice_layouts(3, k, st, pad, 27, 19, lay, &err), 1);
    ck_assert_int_eq(lay[0].m, 4);
    ck_assert_int_eq(lay[1].m, 2);
    ck_assert_int_eq(lay[3].m, 1);
    for (int i = 0; i <= 3; i++) {
        int32_t *lane = malloc((size_t)lay[i].h * (size_t)lay[i].w * sizeof *lane);
        uint8_t *seen = calloc((size_t)lay[i].lw * 64, 1);
        ck_assert_int_eq(lay[i].pitch, lay[0].pitch); /* taps are shifts */
        td_bslice_lane_table(&lay[i], lane);
        for (int p = 0; p < lay[i].h * lay[i].w; p++) {
            int y = p / lay[i].w, x = p % lay[i].w;
            int f = (y % lay[i].m) * lay[i].m + x % lay[i].m;
            ck_assert_int_ge(lane[p], f * lay[i].pw * 64);
            ck_assert_int_lt(lane[p], (f + 1) * lay[i].pw * 64);
            ck_assert_int_eq(seen[lane[p]], 0);
            seen[lane[p]] = 1;
        }
        free(lane);
        free(seen);
    }
    {
        int k5[5] = {3, 3, 3, 3, 3}, s5[5] = {2, 2, 2, 2, 2}, p5[5] = {1, 1, 1, 1, 1};
        td_bslice_layout l5[6];
        ck_assert_int_eq(td_bslice_layouts(5, k5, s5, p5, 64, 64, l5, &err), 0);
        ck_assert_ptr_nonnull(strstr(err.msg, "strides multiply"));
    }
    {
        const char *json =
            "{\"in_ch\":1,\"in_h\":64,\"in_w\":64,\"stem\":{\"cout\":8,\"k\":3,"
            "\"stride\":1,\"pad\":1},\"blocks\":[{\"cout\":8,\"k\":3,\"stride\":2},"
            "{\"cout\":8,\"k\":3,\"stride\":2},{\"cout\":8,\"k\":3,\"stride\":2},"
            "{\"cout\":8,\"k\":3,\"stride\":2},{\"cout\":8,\"k\":3,\"stride\":2}],"
            "\"classes\":3}";
        td_bnn_arch arch;
        bnn_random r;
        td_bnn_model *m;
        float in[64 * 64], a[3], b[3];
        ck_assert_int_eq(td_bnn_arch_parse(json, &arch, &err), TD_OK);
        ck_assert_int_eq(bnn_random_latent(&r, &arch, 5, 2), 0);
        ck_assert_int_eq(td_bnn_from_latent(&m, &r.lat, &err), TD_OK);
        ck_assert_int_eq(m->slice_ok, 0);
        ck_assert_ptr_nonnull(strstr(m->slice_note, "strides multiply"));
        rng_state = 9;
        for (int i = 0; i < 64 * 64; i++)
            in[i] = rfl();
        forward(m, 0, in, 1, a);
        forward(m, TD_BNN_SLICE | TD_BCONV_PLAN, in, 1, b);
        ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
        td_bnn_free(m);
        bnn_random_free(&r);
    }
    {
        /* a large image: the bit-sliced scratch would pass its bound, so
         * the model keeps the XOR-popcount kernels and small scratch */
        const char *json =
            "{\"in_ch\":1,\"in_h\":200,\"in_w\":200,\"stem\":{\"cout\":1024,"
            "\"k\":3,\"stride\":1,\"pad\":1},\"blocks\":[{\"cout\":8,\"k\":3,"
            "\"stride\":1}],\"classes\":3}";
        td_bnn_arch arch;
        bnn_random r;
        td_bnn_model *m;
        ck_assert_int_eq(td_bnn_arch_parse(json, &arch, &err), TD_OK);
        ck_assert_int_eq(bnn_random_latent(&r, &arch, 6, 2), 0);
        ck_assert_int_eq(td_bnn_from_latent(&m, &r.lat, &err), TD_OK);
        ck_assert_int_eq(m->slice_ok, 0);
        ck_assert_msg(strstr(m->slice_note, "scratch") != NULL, "%s", m->slice_note);
        ck_assert_uint_lt(td_bnn_scratch_bytes(m), (size_t)TD_BNN_SLICE_MAX_SCRATCH);
        ck_assert_ptr_null(m->stem.tap_src);
        td_bnn_free(m);
        bnn_random_free(&r);
    }
}
END_TEST

/* The stem's two outputs carry the same bits: AVX-512, AVX2, portable. */
START_TEST(test_stem_outputs_agree)
{
    rng_state = 77;
    for (int trial = 0; trial < 30; trial++) {
        int in_ch = rint_in(1, 4), h = rint_in(3, 40), w = rint_in(3, 40);
        int k = rint_in(1, 7), s = rint_in(1, 3), pad = rint_in(0, k - 1);
        int cout = rint_in(1, 130), taps = k * k * in_ch, cw = (cout + 63) / 64;
        int kb[1] = {1}, sb[1] = {1}, pb[1] = {0};
        td_bslice_layout lay[2];
        td_bnn_stem st;
        td_error err;
        float *wt, *sc, *bi, *in, *scratch;
        uint64_t *nh[3], *pl[3];
        int32_t *lane;
        int ho = td_bconv_out(h, k, s, pad), wo = td_bconv_out(w, k, s, pad);
        if (ho <= 0 || wo <= 0) {
            trial--;
            continue;
        }
        /* a one-layer chain gives the stem output's layout (m = 1) */
        ck_assert_int_eq(td_bslice_layouts(1, kb, sb, pb, ho, wo, lay, &err), 1);
        wt = malloc((size_t)taps * (size_t)cout * sizeof *wt);
        sc = malloc((size_t)cout * sizeof *sc);
        bi = malloc((size_t)cout * sizeof *bi);
        in = malloc((size_t)in_ch * (size_t)h * (size_t)w * sizeof *in);
        for (int i = 0; i < taps * cout; i++)
            wt[i] = rfl();
        for (int i = 0; i < cout; i++) {
            sc[i] = rfl();
            bi[i] = rfl();
        }
        for (int i = 0; i < in_ch * h * w; i++)
            in[i] = rfl();
        ck_assert_int_eq(td_bnn_stem_prepare(&st, in_ch, h, w, k, s, pad, cout, wt, sc, bi, &lay[0], &err), TD_OK);
        scratch = malloc(td_bnn_stem_planar_scratch(&st) * sizeof *scratch);
        lane = malloc((size_t)ho * (size_t)wo * sizeof *lane);
        td_bslice_lane_table(&lay[0], lane);
        for (int f = 0; f < 3; f++) {
            int fl = f == 1 ? TD_BNN_STEM_PORTABLE : f == 2 ? TD_BNN_STEM_AVX2 : 0;
            nh[f] = malloc((size_t)ho * (size_t)wo * (size_t)cw * 8);
            pl[f] = malloc((size_t)cout * (size_t)lay[0].lw * 8);
            td_bnn_stem_nhwc(&st, fl, in, nh[f]);
            td_bnn_stem_planar(&st, fl, in, pl[f], (size_t)lay[0].lw, scratch);
        }
        for (int f = 1; f < 3; f++) {
            ck_assert_int_eq(memcmp(nh[0], nh[f], (size_t)ho * (size_t)wo * (size_t)cw * 8), 0);
            ck_assert_int_eq(memcmp(pl[0], pl[f], (size_t)cout * (size_t)lay[0].lw * 8), 0);
        }
        for (int p = 0; p < ho * wo; p++)
            for (int c = 0; c < cout; c++) {
                int a = (int)(nh[0][(size_t)p * (size_t)cw + (size_t)(c / 64)] >> (c % 64) & 1);
                int b = (int)(pl[0][(size_t)c * (size_t)lay[0].lw + (size_t)(lane[p] / 64)] >>
                              (lane[p] % 64) & 1);
                ck_assert_int_eq(a, b);
            }
        for (int f = 0; f < 3; f++) {
            free(nh[f]);
            free(pl[f]);
        }
        td_bnn_stem_release(&st);
        free(wt); free(sc); free(bi); free(in); free(scratch); free(lane);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("td_bnn_slice");
    TCase *tc = tcase_create("slice");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_layouts);
    tcase_add_test(tc, test_stem_outputs_agree);
    tcase_add_test(tc, test_random_networks_bit_exact);
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
