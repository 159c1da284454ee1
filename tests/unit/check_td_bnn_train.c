/* Unit tests for the binary-network trainer (td_bnn_train) and its CLI.
 *
 * Gradient checks: each new backward against a central finite difference
 * of the function its straight-through estimator defines. The sign's STE
 * is the gradient of clamp(x, -1, 1); the binary weight's is the gradient
 * of sg(alpha sign W - clamp W) + clamp W, so the finite difference
 * perturbs clamp(W) with the binary part held at its unperturbed value.
 * Points within 2h of the kinks at +-1 are skipped (the derivative jumps
 * there). The regulariser is a quadratic on the positions where the
 * child's bit differs from its parent's.
 *
 * Then: a tiny network trains a few steps, exports through td_bnn_export,
 * loads with td_bnn_open, and td_bnn_forward (dense and MST plan) gives the
 * trainer's eval logits and predictions; the trees the trainer builds are
 * the ones the exporter stores. Finally tinyd-train end to end on a
 * generated IDX dataset: loss falls, fixed seed gives identical bytes,
 * --resume gives the bytes of an uninterrupted run, --init fine-tunes, eval
 * and info work, and bad arch / lambda / files are refused. */
#include "config.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "td_arena.h"
#include "td_bnn_model.h"
#include "td_bnn_train.h"
#include "train_fixture.h"
#include "td_file.h"
#include "td_optim.h"
#include "td_rng.h"
#include "td_train_layers.h"

#define H 1e-2f

static uint64_t rng_state = 777;

static float *randv(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = scale * (2 * td_rng_float(&rng_state) - 1);
    return p;
}

static float *zerov(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    return p;
}

static double dotd(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static float clampf(float x)
{
    return x < -1 ? -1 : x > 1 ? 1 : x;
}

static int near_kink(float x)
{
    return fabsf(fabsf(x) - 1.0f) < 2 * H;
}

static void expect_close(double analytic, double numeric, const char *what,
                         size_t i)
{
    double allowed = 1e-3 + 1e-2 * fabs(numeric);
    ck_assert_msg(fabs(analytic - numeric) <= allowed,
                  "%s[%zu]: analytic %.6g numeric %.6g", what, i, analytic,
                  numeric);
}

/* ------------------------------------------------------------ sign STE */

START_TEST(test_sign_ste_grad)
{
    size_t n = 400, checked = 0;
    float *x = randv(n, 1.6f), *r = randv(n, 1), *y = zerov(n),
          *dx = zerov(n);
    x[0] = 0; /* sign(0) = +1, the convention of td_bnn */
    x[1] = -0.0f;
    td_bnt_sign_forward(y, x, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_float_eq(y[i], x[i] < 0 ? -1.0f : 1.0f);
    ck_assert_float_eq(y[0], 1.0f);
    ck_assert_float_eq(y[1], 1.0f);
    td_bnt_sign_backward(dx, r, x, n);
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        double lp, lm;
        if (near_kink(keep))
            continue;
        lp = r[i] * clampf(keep + H);
        lm = r[i] * clampf(keep - H);
        expect_close(dx[i], (lp - lm) / (2 * H), "sign dx", i);
        checked++;
    }
    /* both sides of the window were exercised */
    ck_assert_uint_gt(checked, n / 2);
    {
        int zero = 0, pass = 0;
        for (size_t i = 0; i < n; i++) {
            zero += fabsf(x[i]) > 1 && dx[i] == 0;
            pass += fabsf(x[i]) <= 1 && dx[i] == r[i];
        }
        ck_assert_int_gt(zero, 20);
        ck_assert_int_gt(pass, 100);
    }
    /* din may alias dout */
    memcpy(dx, r, n * sizeof *dx);
    td_bnt_sign_backward(dx, dx, x, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_float_eq(dx[i], fabsf(x[i]) <= 1 ? r[i] : 0.0f);
    free(x);
    free(r);
    free(y);
    free(dx);
}
END_TEST

/* ------------------------------------------------------------ binary conv */

struct bconv {
    float *x, *w, *w0, *wbin0, *weff, *cols, *y;
    int n, h, wd, ci, co, k, s;
};

/* y = conv(x, sg(alpha sign W0 - clamp W0) + clamp W): the function whose
 * gradient in W the STE is (it equals alpha sign W0 at W = W0). */
static void bconv_fwd(struct bconv *b)
{
    size_t nw = (size_t)b->k * b->k * b->ci * b->co;
    for (size_t i = 0; i < nw; i++)
        b->weff[i] = b->wbin0[i] - clampf(b->w0[i]) + clampf(b->w[i]);
    td_tl_conv_forward(b->y, b->cols, b->x, b->weff, b->n, b->h, b->wd,
                       b->ci, b->co, b->k, b->s);
}

START_TEST(test_binary_conv_grad)
{
    static const int shapes[][7] = {
        /* n, h, w, ci, co, k, stride */
        {2, 5, 5, 3, 4, 3, 1},
        {1, 6, 7, 5, 3, 3, 2},
        {2, 4, 4, 2, 6, 1, 1},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        struct bconv b = {0};
        const int *sp = shapes[t];
        b.n = sp[0];
        b.h = sp[1];
        b.wd = sp[2];
        b.ci = sp[3];
        b.co = sp[4];
        b.k = sp[5];
        b.s = sp[6];
        int ho = td_tl_conv_out(b.h, b.k, b.s), wo = td_tl_conv_out(b.wd, b.k,
                                                                   b.s);
        int kk = b.k * b.k * b.ci;
        size_t nx = (size_t)b.n * b.h * b.wd * b.ci, nw = (size_t)kk * b.co;
        size_t ny = (size_t)b.n * ho * wo * b.co, checked = 0;
        float *alpha = zerov((size_t)b.co), *r, *dweff, *dw, *dx, *dcols;
        b.x = randv(nx, 1);
        for (size_t i = 0; i < nx; i++) /* binary inputs, as in a block */
            b.x[i] = b.x[i] < 0 ? -1.0f : 1.0f;
        b.w = randv(nw, 1.4f);
        b.w0 = malloc(nw * sizeof(float));
        memcpy(b.w0, b.w, nw * sizeof(float));
        b.wbin0 = zerov(nw);
        b.weff = zerov(nw);
        b.cols = zerov((size_t)b.n * ho * wo * kk);
        b.y = zerov(ny);
        r = randv(ny, 1);
        dweff = zerov(nw);
        dw = zerov(nw);
        dx = zerov(nx);
        dcols = zerov((size_t)b.n * ho * wo * kk);
        td_bnt_binarize(b.wbin0, alpha, b.w, kk, b.co);
        /* the binarised weights: +-mean|W_c| */
        for (int c = 0; c < b.co; c++) {
            double s = 0;
            for (int q = 0; q < kk; q++)
                s += fabsf(b.w[(size_t)q * b.co + c]);
            ck_assert_float_eq_tol(alpha[c], (float)(s / kk), 1e-6f);
            for (int q = 0; q < kk; q++) {
                size_t at = (size_t)q * b.co + c;
                ck_assert_float_eq(b.wbin0[at],
                                   b.w[at] < 0 ? -alpha[c] : alpha[c]);
            }
        }
        bconv_fwd(&b);
        td_tl_conv_backward(dx, dweff, dcols, r, b.cols, b.weff, b.n, b.h,
                            b.wd, b.ci, b.co, b.k, b.s);
        td_bnt_binarize_backward(dw, dweff, b.w, kk, b.co);
        for (size_t i = 0; i < nw; i++) {
            float keep = b.w[i];
            double lp, lm;
            if (near_kink(keep))
                continue;
            b.w[i] = keep + H;
            bconv_fwd(&b);
            lp = dotd(b.y, r, ny);
            b.w[i] = keep - H;
            bconv_fwd(&b);
            lm = dotd(b.y, r, ny);
            b.w[i] = keep;
            expect_close(dw[i], (lp - lm) / (2 * H), "binary conv dW", i);
            if (fabsf(keep) > 1)
                ck_assert_float_eq(dw[i], 0.0f);
            checked++;
        }
        ck_assert_uint_gt(checked, nw / 2);
        for (size_t i = 0; i < nx; i++) {
            float keep = b.x[i];
            double lp, lm;
            b.x[i] = keep + H;
            bconv_fwd(&b);
            lp = dotd(b.y, r, ny);
            b.x[i] = keep - H;
            bconv_fwd(&b);
            lm = dotd(b.y, r, ny);
            b.x[i] = keep;
            expect_close(dx[i], (lp - lm) / (2 * H), "binary conv dx", i);
        }
        free(alpha);
        free(r);
        free(dweff);
        free(dw);
        free(dx);
        free(dcols);
        free(b.x);
        free(b.w);
        free(b.w0);
        free(b.wbin0);
        free(b.weff);
        free(b.cols);
        free(b.y);
    }
}
END_TEST

/* ------------------------------------------------------------ regulariser */

START_TEST(test_mst_reg_grad)
{
    int kk = 7, co = 6;
    int32_t parent[6] = {2, 2, -1, 1, 1, 0}; /* root 2 */
    size_t nw = (size_t)kk * co;
    float *w = randv(nw, 1.5f), *dw = zerov(nw), lambda = 0.37f;
    double r = td_bnt_mst_reg(dw, w, parent, kk, co, lambda), direct = 0;
    for (int q = 0; q < kk; q++)
        for (int c = 0; c < co; c++)
            if (parent[c] >= 0 &&
                (w[q * co + c] < 0) != (w[q * co + parent[c]] < 0)) {
                double d = w[q * co + c] - w[q * co + parent[c]];
                direct += d * d;
            }
    ck_assert_double_eq_tol(r, lambda * direct, 1e-5);
    ck_assert_double_eq_tol(td_bnt_mst_reg(NULL, w, parent, kk, co, lambda),
                            r, 1e-9);
    /* the parent is held constant (stop-gradient): FD in the child only */
    for (size_t i = 0; i < nw; i++) {
        int c = (int)(i % (size_t)co);
        float keep = w[i];
        double lp = 0, lm = 0;
        int32_t solo[6];
        if (fabsf(keep) < 2 * H) /* the step would flip the bit */
            continue;
        /* R restricted to the edge where c is the child */
        for (int j = 0; j < co; j++)
            solo[j] = -1;
        solo[c] = parent[c];
        w[i] = keep + H;
        lp = td_bnt_mst_reg(NULL, w, solo, kk, co, lambda);
        w[i] = keep - H;
        lm = td_bnt_mst_reg(NULL, w, solo, kk, co, lambda);
        w[i] = keep;
        expect_close(dw[i], (lp - lm) / (2 * H), "mst reg dW", i);
        if (parent[c] < 0 || (keep < 0) == (w[i - c + parent[c]] < 0))
            ck_assert_float_eq(dw[i], 0.0f);
        else
            ck_assert_float_ne(dw[i], 0.0f);
    }
    /* identical child and parent: no pull */
    for (int q = 0; q < kk; q++)
        w[q * co + 5] = w[q * co + 0];
    memset(dw, 0, nw * sizeof *dw);
    td_bnt_mst_reg(dw, w, parent, kk, co, lambda);
    for (int q = 0; q < kk; q++)
        ck_assert_float_eq(dw[q * co + 5], 0.0f);
    free(w);
    free(dw);
}
END_TEST

START_TEST(test_mst_reg_words_grad)
{
    /* 2 taps x 70 channels: words of 64 and 6 channels */
    int taps = 2, cin = 70, co = 4, kk = taps * cin;
    int32_t parent[4] = {-1, 0, 0, 2};
    size_t nw = (size_t)kk * co;
    float *w = randv(nw, 1.5f), *dw = zerov(nw), lambda = 0.21f;
    double r = td_bnt_mst_reg_words(dw, w, parent, taps, cin, co, lambda);
    double direct = 0;
    size_t checked = 0;
    for (int c = 1; c < co; c++)
        for (int t = 0; t < taps; t++)
            for (int c0 = 0; c0 < cin; c0 += 64) {
                double ss = 0;
                for (int ci = c0; ci < cin && ci < c0 + 64; ci++) {
                    size_t at = ((size_t)t * cin + ci) * co;
                    if ((w[at + c] < 0) != (w[at + parent[c]] < 0))
                        ss += pow(w[at + c] - w[at + parent[c]], 2);
                }
                direct += sqrt(ss);
            }
    ck_assert_double_eq_tol(r, lambda * direct, 1e-4);
    for (size_t i = 0; i < nw; i++) {
        int c = (int)(i % (size_t)co);
        float keep = w[i];
        int32_t solo[4] = {-1, -1, -1, -1};
        double lp, lm;
        if (fabsf(keep) < 2 * H)
            continue;
        solo[c] = parent[c];
        w[i] = keep + H;
        lp = td_bnt_mst_reg_words(NULL, w, solo, taps, cin, co, lambda);
        w[i] = keep - H;
        lm = td_bnt_mst_reg_words(NULL, w, solo, taps, cin, co, lambda);
        w[i] = keep;
        expect_close(dw[i], (lp - lm) / (2 * H), "mst word reg dW", i);
        checked++;
    }
    ck_assert_uint_gt(checked, nw / 2);
    free(w);
    free(dw);
}
END_TEST

/* ------------------------------------------------------------ train/export */

static const char *TINY_ARCH =
    "{\"in_ch\":1,\"in_h\":12,\"in_w\":12,"
    "\"stem\":{\"cout\":8,\"k\":3,\"stride\":1},"
    "\"blocks\":[{\"cout\":16,\"k\":3,\"stride\":2},"
    "{\"cout\":24,\"k\":3,\"stride\":1},{\"cout\":16,\"k\":1,\"stride\":1}],"
    "\"classes\":10}";

START_TEST(test_train_export_matches)
{
    td_bnn_arch a;
    td_bnt_model m;
    td_bnt_ws ws;
    td_error err = {0};
    int n = 16, steps = 12, k = 10;
    float *x = randv((size_t)n * 144, 1.5f), *dlog = zerov((size_t)n * k);
    float *mom = NULL, *vel = NULL, *evl = zerov((size_t)n * k);
    uint8_t lab[16];
    td_mst_stats st[TD_BNN_MAX_BLOCKS];
    char path[] = "/tmp/td_bnt_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    for (int i = 0; i < n; i++)
        lab[i] = (uint8_t)(i % k);
    ck_assert_int_eq(td_bnn_arch_parse(TINY_ARCH, &a, &err), TD_OK);
    ck_assert_int_eq(td_bnt_init(&m, &a, &err), TD_OK);
    td_bnt_init_weights(&m, 3);
    ck_assert_int_eq(td_bnt_ws_init(&ws, &m, n, &err), TD_OK);
    mom = zerov(m.n_params);
    vel = zerov(m.n_params);
    double first = 0, last = 0;
    for (int s = 0; s < steps; s++) {
        td_adamw o = {3e-3f, 0.9f, 0.999f, 1e-8f, 0};
        int binw = s >= 4; /* step 1, then step 2 */
        double l;
        td_bnt_ws *list[1] = {&ws};
        if (s % 4 == 0)
            ck_assert_int_eq(td_bnt_refresh_trees(&m, m.params, NULL, &err),
                             TD_OK);
        td_bnt_forward(&m, &ws, m.params, m.stats, x, n, 1, binw);
        l = td_tl_xent(dlog, ws.logits, lab, n, k, 0, 1.0f / n, NULL);
        if (s == 4)
            first = l;
        last = l;
        memset(ws.grad, 0, m.n_params * sizeof(float));
        td_bnt_backward(&m, &ws, m.params, dlog);
        td_bnt_reg(&m, m.params, ws.grad, 1e-3f, s % 2);
        td_bnt_update_running(&m, m.stats, list, 1, 0.3f);
        td_adamw_step(&o, m.params, ws.grad, mom, vel, m.decay, m.n_params,
                      s + 1);
    }
    ck_assert_msg(last < first, "loss %g -> %g", first, last);
    /* the trainer's eval */
    td_bnt_forward(&m, &ws, m.params, m.stats, x, n, 0, 1);
    memcpy(evl, ws.logits, (size_t)n * k * sizeof(float));
    ck_assert_int_eq(td_bnt_refresh_trees(&m, m.params, st, &err), TD_OK);
    {
        td_bnn_latent lat;
        td_bnn_model *fm = NULL;
        td_arena ar;
        float lg[2][16 * 10];
        float mean = 0, sd = 1;
        td_bnt_latent(&m, m.params, m.stats, NULL, mean, sd, &lat);
        ck_assert_int_eq(td_bnn_export(&lat, path, &err), TD_OK);
        ck_assert_msg(td_bnn_open(&fm, path, &err) == TD_OK, "%s", err.msg);
        ck_assert_int_eq(td_arena_init(&ar, td_bnn_scratch_bytes(fm) + 4096,
                                       &err),
                         TD_OK);
        /* the exporter's trees are the trainer's */
        for (int i = 0; i < a.n_blocks; i++) {
            ck_assert_int_eq(fm->blocks[i].stats.depth, st[i].depth);
            ck_assert_int_eq(fm->blocks[i].stats.distance, st[i].distance);
            for (int c = 0; c < a.blocks[i].cout; c++)
                ck_assert_int_eq(fm->blocks[i].plan.parent[c],
                                 m.parent[i][c]);
        }
        for (int p = 0; p < 2; p++)
            ck_assert_msg(td_bnn_forward(fm, p ? TD_BCONV_PLAN : 0, &ar, x, n,
                                         lg[p], &err) == TD_OK,
                          "%s", err.msg);
        for (int i = 0; i < n; i++) {
            int am_t = 0, am_d = 0, am_p = 0;
            float mx = 1e-3f;
            for (int c = 0; c < k; c++)
                mx = fmaxf(mx, fabsf(evl[i * k + c]));
            for (int c = 0; c < k; c++) {
                /* plan and dense: bit-exact binary layers */
                ck_assert_float_eq(lg[0][i * k + c], lg[1][i * k + c]);
                ck_assert_float_eq_tol(lg[1][i * k + c], evl[i * k + c],
                                       1e-4f * mx + 1e-5f);
                if (evl[i * k + c] > evl[i * k + am_t])
                    am_t = c;
                if (lg[0][i * k + c] > lg[0][i * k + am_d])
                    am_d = c;
                if (lg[1][i * k + c] > lg[1][i * k + am_p])
                    am_p = c;
            }
            ck_assert_int_eq(am_t, am_d);
            ck_assert_int_eq(am_t, am_p);
        }
        td_arena_free(&ar);
        td_bnn_free(fm);
    }
    unlink(path);
    free(x);
    free(dlog);
    free(evl);
    free(mom);
    free(vel);
    td_bnt_ws_free(&ws);
    td_bnt_free(&m);
}
END_TEST

START_TEST(test_bad_arch_refused)
{
    td_bnn_arch a;
    td_bnt_model m;
    td_error err = {0};
    ck_assert_int_eq(
        td_bnn_arch_parse("{\"in_ch\":1,\"in_h\":12,\"in_w\":12,"
                          "\"stem\":{\"cout\":8,\"k\":3,\"stride\":1,"
                          "\"pad\":0},\"blocks\":[{\"cout\":8,\"k\":3,\"stride\":1}],"
                          "\"classes\":10}",
                          &a, &err),
        TD_OK);
    ck_assert_int_eq(td_bnt_init(&m, &a, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "stem.pad"));
    ck_assert_int_eq(
        td_bnn_arch_parse("{\"in_ch\":3,\"in_h\":12,\"in_w\":12,"
                          "\"stem\":{\"cout\":8,\"k\":3,\"stride\":1},"
                          "\"blocks\":[{\"cout\":8,\"k\":3,\"stride\":1}],"
                          "\"classes\":10}",
                          &a, &err),
        TD_OK);
    ck_assert_int_eq(td_bnt_init(&m, &a, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "in_ch"));
}
END_TEST

/* ------------------------------------------------------------ CLI */

static char tmpdir[64];

static void make_dataset(const char *prefix, int n, uint64_t seed)
{
    tf_bar_dataset(tmpdir, prefix, n, seed);
}

static int run(const char *args)
{
    return tf_run_train(tmpdir, args, NULL);
}

static int same_file(const char *a, const char *b)
{
    return tf_same_file(a, b);
}

static char *read_log(void)
{
    return tf_read_log(tmpdir);
}

#define ARCH_SMALL                                                          \
    "'{\"in_ch\":1,\"in_h\":28,\"in_w\":28,"                               \
    "\"stem\":{\"cout\":8,\"k\":3,\"stride\":2},"                           \
    "\"blocks\":[{\"cout\":16,\"k\":3,\"stride\":2},{\"cout\":16,\"k\":3,"  \
    "\"stride\":1}],\"classes\":10}'"
#define BTINY "--arch-json " ARCH_SMALL " --batch 16 --pad 0 --quiet " \
              "--threads 2 --saf-minus 1 --saf-start 2"

START_TEST(test_cli_end_to_end)
{
    char args[2048], p1[256], p2[256];
    tf_tmpdir_make(tmpdir, sizeof tmpdir, "bnt");
    make_dataset("train", 128, 1);
    make_dataset("t10k", 48, 2);
    snprintf(args, sizeof args,
             BTINY " --epochs 4 --bnn-step1 1 --mst-lambda 0.01 --data %s "
                   "--out %s/a.safetensors",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 0);
    snprintf(p1, sizeof p1, "%s/a.report.json", tmpdir);
    {
        json_error_t je;
        json_t *r = json_load_file(p1, 0, &je), *ep, *e4;
        ck_assert_ptr_nonnull(r);
        ep = json_object_get(r, "epochs");
        ck_assert_int_eq(json_array_size(ep), 4);
        e4 = json_array_get(ep, 3);
        ck_assert_double_lt(
            json_number_value(json_object_get(e4, "loss")) -
                json_number_value(json_object_get(e4, "kl")),
            json_number_value(
                json_object_get(json_array_get(ep, 0), "loss")));
        ck_assert_int_eq(json_integer_value(json_object_get(
                             json_array_get(ep, 0), "step")),
                         1);
        ck_assert_int_eq(json_integer_value(json_object_get(e4, "step")), 2);
        ck_assert_double_gt(json_number_value(json_object_get(e4, "mst_reg")),
                            0);
        ck_assert_double_gt(
            json_number_value(json_object_get(e4, "bitops_ratio")), 1);
        /* the exported file measures what the trainer measured */
        ck_assert_double_eq_tol(
            json_number_value(json_object_get(e4, "export_test_accuracy")),
            json_number_value(json_object_get(e4, "test_accuracy")), 0.021);
        json_decref(r);
    }
    snprintf(p1, sizeof p1, "%s/a.safetensors", tmpdir);
    {
        td_bnn_model *fm = NULL;
        td_error err;
        ck_assert_msg(td_bnn_open(&fm, p1, &err) == TD_OK, "%s", err.msg);
        td_bnn_free(fm);
    }
    snprintf(args, sizeof args, "eval %s --data %s --threads 1", p1, tmpdir);
    ck_assert_int_eq(run(args), 0);
    snprintf(args, sizeof args, "info %s", p1);
    ck_assert_int_eq(run(args), 0);
    /* the same seed gives the same bytes */
    snprintf(args, sizeof args,
             BTINY " --epochs 4 --bnn-step1 1 --mst-lambda 0.01 --data %s "
                   "--out %s/b.safetensors",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 0);
    snprintf(p2, sizeof p2, "%s/b.safetensors", tmpdir);
    ck_assert(same_file(p1, p2));
    /* stopped after epoch 2 (in step 2), resumed: the same bytes */
    snprintf(args, sizeof args,
             BTINY " --epochs 4 --bnn-step1 1 --mst-lambda 0.01 --data %s "
                   "--out %s/c.safetensors --stop-after 2",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 3);
    snprintf(args, sizeof args,
             BTINY " --epochs 4 --bnn-step1 1 --mst-lambda 0.01 --data %s "
                   "--out %s/c.safetensors --resume",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 0);
    snprintf(p2, sizeof p2, "%s/c.safetensors", tmpdir);
    ck_assert(same_file(p1, p2));
    /* fine-tune from a's checkpoint with a strong pull: fewer bit-ops */
    snprintf(args, sizeof args,
             BTINY " --epochs 2 --mst-lambda 5 --warmup 0 --init %s/a.ckpt "
                   "--data %s --out %s/f.safetensors",
             tmpdir, tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 0);
    {
        td_bnn_model *fa = NULL, *ff = NULL;
        td_error err;
        snprintf(p2, sizeof p2, "%s/f.safetensors", tmpdir);
        ck_assert_int_eq(td_bnn_open(&fa, p1, &err), TD_OK);
        ck_assert_int_eq(td_bnn_open(&ff, p2, &err), TD_OK);
        ck_assert_msg(ff->total.bitops_mst < fa->total.bitops_mst,
                      "bit-ops %lld -> %lld",
                      (long long)fa->total.bitops_mst,
                      (long long)ff->total.bitops_mst);
        td_bnn_free(fa);
        td_bnn_free(ff);
    }
    /* word tying from a's checkpoint: every word tied (no ramp) leaves no
     * mask word in the exported plan; half the words, twice, gives the
     * same bytes and fewer mask words than a */
    snprintf(args, sizeof args,
             BTINY " --epochs 1 --mst-tie 1 --mst-tie-ramp 0 --warmup 0 "
                   "--init %s/a.ckpt --data %s --out %s/t1.safetensors",
             tmpdir, tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 0);
    for (int rep = 0; rep < 2; rep++) {
        snprintf(args, sizeof args,
                 BTINY " --epochs 2 --mst-tie 0.5 --mst-tie-every 3 "
                       "--warmup 0 --init %s/a.ckpt --data %s "
                       "--out %s/t%d.safetensors",
                 tmpdir, tmpdir, tmpdir, 2 + rep);
        ck_assert_int_eq(run(args), 0);
    }
    {
        td_bnn_model *fa = NULL, *f1 = NULL, *f2 = NULL;
        td_error err;
        char p3[256];
        snprintf(p2, sizeof p2, "%s/t2.safetensors", tmpdir);
        snprintf(p3, sizeof p3, "%s/t3.safetensors", tmpdir);
        ck_assert(same_file(p2, p3));
        snprintf(p3, sizeof p3, "%s/t1.safetensors", tmpdir);
        ck_assert_int_eq(td_bnn_open(&fa, p1, &err), TD_OK);
        ck_assert_msg(td_bnn_open(&f1, p3, &err) == TD_OK, "%s", err.msg);
        ck_assert_msg(td_bnn_open(&f2, p2, &err) == TD_OK, "%s", err.msg);
        ck_assert_int_eq(f1->total.mask_words, 0);
        ck_assert_msg(f2->total.mask_words < fa->total.mask_words,
                      "mask words %lld -> %lld",
                      (long long)fa->total.mask_words,
                      (long long)f2->total.mask_words);
        td_bnn_free(fa);
        td_bnn_free(f1);
        td_bnn_free(f2);
    }
    /* SGD, SAM and MESA run on binary networks too */
    {
        const char *opts[] = {"--opt sgd --base sgd --lr 0.05",
                              "--opt sam", "--opt mesa --saf-start 0"};
        for (size_t i = 0; i < 3; i++) {
            snprintf(args, sizeof args,
                     BTINY " --epochs 2 --bnn-step1 1 %s --data %s "
                           "--out %s/o%zu.safetensors",
                     opts[i], tmpdir, tmpdir, i);
            ck_assert_msg(run(args) == 0, "%s failed", opts[i]);
        }
    }
    /* bad input: a clear message and a non-zero exit */
    snprintf(args, sizeof args,
             BTINY " --epochs 2 --mst-lambda -1 --data %s", tmpdir);
    ck_assert_int_eq(run(args), 2);
    snprintf(args, sizeof args,
             "--arch-json '{\"in_ch\":1,\"in_h\":28,\"in_w\":28,\"stem\":"
             "{\"cout\":8,\"k\":3,\"stride\":1,\"pad\":0},\"blocks\":[{\"cout\":8,\"stride\":1,"
             "\"k\":3}],\"classes\":10}' --epochs 1 --data %s --out "
             "%s/x.safetensors",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 1);
    snprintf(args, sizeof args,
             "--arch-json '{\"in_ch\":1,\"stem\":{}}' --epochs 1 --data %s "
             "--out %s/x.safetensors",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 1);
    snprintf(args, sizeof args,
             BTINY " --epochs 2 --bnn-step1 2 --data %s --out "
                   "%s/x.safetensors",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 1);
    snprintf(args, sizeof args,
             "--preset bnn_fmnist --res 32 --epochs 1 --data %s", tmpdir);
    ck_assert_int_eq(run(args), 1);
    snprintf(args, sizeof args,
             "--preset bnn_small --epochs 1 --init %s/none.ckpt --data %s "
             "--out %s/x.safetensors",
             tmpdir, tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 1);
    snprintf(args, sizeof args,
             "--preset bnn_small --epochs 1 --init %s/a.ckpt --data %s "
             "--out %s/x.safetensors",
             tmpdir, tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 1); /* another arch */
    snprintf(args, sizeof args, "--mst-lambda 0.1 --epochs 1 --data %s",
             tmpdir);
    ck_assert_int_eq(run(args), 1); /* TinyNet has no MST */
    snprintf(args, sizeof args, "info %s/none.safetensors", tmpdir);
    ck_assert_int_eq(run(args), 1);
    snprintf(args, sizeof args, "info %s/log", tmpdir);
    ck_assert_int_eq(run(args), 1);
    snprintf(args, sizeof args, "eval %s/log --data %s", tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 1);
    ck_assert_int_eq(run("info"), 2);
    {
        char *log = read_log();
        ck_assert_ptr_nonnull(strstr(log, "--mst-lambda -1: must be >= 0"));
        ck_assert_ptr_nonnull(strstr(log, "stem.pad is 0"));
        ck_assert_ptr_nonnull(strstr(log, "--bnn-step1 2: must be below"));
        ck_assert_ptr_nonnull(strstr(log, "TinyNet options"));
        ck_assert_ptr_nonnull(strstr(log, "a checkpoint of another arch"));
        ck_assert_ptr_nonnull(strstr(log, "for binary networks"));
        ck_assert_ptr_nonnull(strstr(log, "bitops_dense"));
        ck_assert_ptr_nonnull(strstr(log, "binary network, MST plan"));
        free(log);
    }
    tf_tmpdir_remove(tmpdir);
}
END_TEST

/* Word tying (--mst-tie): a 70-channel stem makes block 0's rows two words
 * per tap (64 + 6 channels), so the word <-> latent-row mapping is checked
 * across a word boundary. */
static const char *TIE_ARCH =
    "{\"in_ch\":1,\"in_h\":10,\"in_w\":10,"
    "\"stem\":{\"cout\":70,\"k\":3,\"stride\":1},"
    "\"blocks\":[{\"cout\":20,\"k\":3,\"stride\":1},"
    "{\"cout\":12,\"k\":1,\"stride\":1}],"
    "\"classes\":10}";

/* Train `steps` tied steps from seed 5 (ties re-selected at frac each 3
 * steps, as the trainer does); the model is left in m. */
static void tie_train(td_bnt_model *m, double frac, int steps)
{
    td_bnn_arch a;
    td_bnt_ws ws;
    td_error err = {0};
    int n = 8, k = 10;
    uint64_t keep = rng_state;
    float *x, *dlog = zerov((size_t)n * k), *mom, *vel;
    uint8_t lab[8];
    rng_state = 4242; /* the same inputs on every call */
    x = randv((size_t)n * 100, 1.5f);
    rng_state = keep;
    for (int i = 0; i < n; i++)
        lab[i] = (uint8_t)(i % k);
    ck_assert_int_eq(td_bnn_arch_parse(TIE_ARCH, &a, &err), TD_OK);
    ck_assert_int_eq(td_bnt_init(m, &a, &err), TD_OK);
    td_bnt_init_weights(m, 5);
    ck_assert_int_eq(td_bnt_ws_init(&ws, m, n, &err), TD_OK);
    mom = zerov(m->n_params);
    vel = zerov(m->n_params);
    ck_assert_int_eq(td_bnt_refresh_trees(m, m->params, NULL, &err), TD_OK);
    for (int s = 0; s < steps; s++) {
        td_adamw o = {3e-3f, 0.9f, 0.999f, 1e-8f, 0};
        td_bnt_ws *list[1] = {&ws};
        if (s % 3 == 0)
            td_bnt_tie_select(m, m->params, frac);
        td_bnt_forward(m, &ws, m->params, m->stats, x, n, 1, 1);
        td_tl_xent(dlog, ws.logits, lab, n, k, 0, 1.0f / n, NULL);
        memset(ws.grad, 0, m->n_params * sizeof(float));
        td_bnt_backward(m, &ws, m->params, dlog);
        td_bnt_tie_grad(m, ws.grad);
        td_bnt_update_running(m, m->stats, list, 1, 0.3f);
        td_adamw_step(&o, m->params, ws.grad, mom, vel, m->decay,
                      m->n_params, s + 1);
        td_bnt_tie_apply(m, m->params);
    }
    free(x);
    free(dlog);
    free(mom);
    free(vel);
    td_bnt_ws_free(&ws);
}

/* Export m and open the file; the caller frees. */
static td_bnn_model *tie_export(const td_bnt_model *m)
{
    td_bnn_latent lat;
    td_bnn_model *fm = NULL;
    td_error err = {0};
    char path[] = "/tmp/td_bnt_tie_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    td_bnt_latent(m, m->params, m->stats, NULL, 0, 1, &lat);
    ck_assert_msg(td_bnn_export(&lat, path, &err) == TD_OK, "%s", err.msg);
    ck_assert_msg(td_bnn_open(&fm, path, &err) == TD_OK, "%s", err.msg);
    unlink(path);
    return fm;
}

START_TEST(test_tie_zero_mask_words)
{
    td_bnt_model m, m2, m0;
    td_bnn_model *fm, *fm0;
    int matched = 0;
    /* untied reference: the same training without ties */
    tie_train(&m0, 0, 9);
    ck_assert_int_eq(m0.n_tied, 0);
    fm0 = tie_export(&m0);
    tie_train(&m, 0.5, 9);
    /* each child ties round(0.5 kw) words: 9 taps x 2 words in block 0,
     * 9 x 1 in block 1 (20 channels): 19 children x 9 + 11 x 1 */
    ck_assert_int_eq(m.n_tied, 19 * 9 + 11 * 1);
    /* deterministic: the same run again gives the same weights */
    tie_train(&m2, 0.5, 9);
    ck_assert_int_eq(memcmp(m.params, m2.params,
                            m.n_params * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(m.stats, m2.stats, m.n_stats * sizeof(float)),
                     0);
    fm = tie_export(&m);
    for (int i = 0; i < m.arch.n_blocks; i++) {
        const td_bnt_layer *l = &m.blocks[i];
        const td_mst_plan *pl = &fm->blocks[i].plan;
        int kw = l->k * l->k * ((l->cin + 63) / 64);
        ck_assert_int_eq(pl->kw, kw);
        for (int c = 0; c < l->cout; c++) {
            const uint8_t *tw = m.tied[i] + (size_t)c * kw;
            if (pl->parent[c] != m.parent[i][c] || pl->parent[c] < 0)
                continue;
            matched++;
            /* a tied word never appears in the child's diff list */
            for (int e = pl->diff_ptr[c]; e < pl->diff_ptr[c + 1]; e++)
                ck_assert_msg(!tw[pl->diff_idx[e]],
                              "block %d channel %d: tied word %d has mask "
                              "%llx",
                              i, c, pl->diff_idx[e],
                              (unsigned long long)pl->diff_mask[e]);
        }
    }
    ck_assert_int_gt(matched, (19 + 11) / 2);
    /* and the plan's work drops: at least a third fewer mask words */
    ck_assert_msg(3 * fm->total.mask_words <= 2 * fm0->total.mask_words,
                  "mask words %lld tied, %lld untied",
                  (long long)fm->total.mask_words,
                  (long long)fm0->total.mask_words);
    td_bnn_free(fm);
    td_bnt_free(&m);
    td_bnt_free(&m2);
    /* every word tied: each child is an exact copy, whatever tree the
     * exporter builds, so no mask word is left */
    tie_train(&m, 1.0, 4);
    fm = tie_export(&m);
    ck_assert_int_eq(fm->total.mask_words, 0);
    td_bnn_free(fm);
    td_bnn_free(fm0);
    td_bnt_free(&m);
    td_bnt_free(&m0);
}
END_TEST

/* td_bnt_tie_grad: a tied position is one shared weight, so the gradient
 * total is kept, moved up to the top of each chain, children zeroed. */
START_TEST(test_tie_grad_shared)
{
    td_bnt_model m;
    td_bnn_arch a;
    td_error err = {0};
    float *g, *g0;
    double s0 = 0, s1 = 0, *want;
    ck_assert_int_eq(td_bnn_arch_parse(TIE_ARCH, &a, &err), TD_OK);
    ck_assert_int_eq(td_bnt_init(&m, &a, &err), TD_OK);
    td_bnt_init_weights(&m, 9);
    ck_assert_int_eq(td_bnt_refresh_trees(&m, m.params, NULL, &err), TD_OK);
    td_bnt_tie_select(&m, m.params, 0.7);
    ck_assert_int_gt(m.n_tied, 0);
    g = randv(m.n_params, 1.0f);
    g0 = malloc(m.n_params * sizeof(float));
    want = calloc(m.n_params, sizeof(double));
    memcpy(g0, g, m.n_params * sizeof(float));
    td_bnt_tie_grad(&m, g);
    for (size_t i = 0; i < m.n_params; i++) {
        s0 += g0[i];
        s1 += g[i];
    }
    ck_assert_double_eq_tol(s0, s1, 1e-3);
    /* independently: every position's gradient goes to the top of its
     * chain of ties (follow the parents while the word is tied) */
    for (size_t i = 0; i < m.n_params; i++)
        want[i] = g0[i];
    for (int i = 0; i < m.arch.n_blocks; i++) {
        const td_bnt_layer *l = &m.blocks[i];
        int cw = (l->cin + 63) / 64, kw = l->k * l->k * cw;
        for (int c = 0; c < l->cout; c++)
            for (int w = 0; w < kw; w++) {
                int t = w / cw, c0 = (w % cw) * 64, top = c;
                int c1 = c0 + 64 < l->cin ? c0 + 64 : l->cin;
                while (m.tied[i][(size_t)top * kw + w])
                    top = m.parent[i][top];
                if (top == c)
                    continue;
                for (int ci = c0; ci < c1; ci++) {
                    size_t at = l->w + ((size_t)t * l->cin + ci) * l->cout;
                    want[at + top] += g0[at + c];
                    want[at + c] -= g0[at + c];
                    /* and the weights agree after selection */
                    ck_assert_float_eq(m.params[at + c], m.params[at + top]);
                }
            }
    }
    for (size_t i = 0; i < m.n_params; i++)
        ck_assert_double_eq_tol(g[i], want[i], 1e-4);
    free(want);
    free(g);
    free(g0);
    td_bnt_free(&m);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("td_bnn_train");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300); /* the CLI runs are slow under ASan */
    tcase_add_test(tc, test_sign_ste_grad);
    tcase_add_test(tc, test_binary_conv_grad);
    tcase_add_test(tc, test_mst_reg_grad);
    tcase_add_test(tc, test_mst_reg_words_grad);
    tcase_add_test(tc, test_train_export_matches);
    tcase_add_test(tc, test_tie_zero_mask_words);
    tcase_add_test(tc, test_tie_grad_shared);
    tcase_add_test(tc, test_bad_arch_refused);
    tcase_add_test(tc, test_cli_end_to_end);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
