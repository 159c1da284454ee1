/* Unit tests for the trainer: optimiser update rules, the cosine schedule,
 * SAM and EMA helpers, the IDX reader on good and corrupt files, the
 * augmented view, the model file round trip, and tinyd-train end to end
 * (a few epochs on a generated dataset: loss goes down, the file loads,
 * fixed seed gives identical bytes, --resume gives the same bytes as an
 * uninterrupted run, bad flags and a diverging run fail cleanly). */
#include "config.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "td_file.h"
#include "td_idx.h"
#include "td_optim.h"
#include "td_rng.h"
#include "td_arena.h"
#include "td_safetensors.h"
#include "td_tinynet.h"
#include "td_tinynet_train.h"
#include "train_fixture.h"

static char tmpdir[64];

static void make_tmpdir(void)
{
    tf_tmpdir_make(tmpdir, sizeof tmpdir, "train");
}

static void rm_tmpdir(void)
{
    tf_tmpdir_remove(tmpdir);
}

/* ------------------------------------------------------------ optimisers */

START_TEST(test_sgd_rules)
{
    /* two parameters, one exempt from weight decay; two steps of PyTorch's
     * SGD (momentum, dampening 0) written out independently in double */
    float theta[2] = {1.0f, -2.0f}, buf[2] = {0, 0};
    const float g1[2] = {0.5f, 0.25f}, g2[2] = {-0.1f, 0.3f};
    const uint8_t mask[2] = {1, 0};
    for (int nesterov = 0; nesterov <= 1; nesterov++) {
        double th[2] = {1.0, -2.0}, b[2] = {0, 0};
        const float *gs[2] = {g1, g2};
        td_sgd o = {0.1f, 0.9f, 0.01f, nesterov};
        theta[0] = 1.0f, theta[1] = -2.0f, buf[0] = buf[1] = 0;
        for (int s = 0; s < 2; s++) {
            td_sgd_step(&o, theta, gs[s], buf, mask, 2);
            for (int i = 0; i < 2; i++) {
                double g = gs[s][i] + (mask[i] ? 0.01 * th[i] : 0);
                b[i] = 0.9 * b[i] + g;
                th[i] -= 0.1 * (nesterov ? g + 0.9 * b[i] : b[i]);
                ck_assert_double_eq_tol(theta[i], th[i], 1e-6);
                ck_assert_double_eq_tol(buf[i], b[i], 1e-6);
            }
        }
    }
    /* by hand: plain SGD, one step: 1 - 0.1 * 0.5 = 0.95 */
    td_sgd plain = {0.1f, 0, 0, 0};
    float t1 = 1.0f, b1 = 0, gg = 0.5f;
    td_sgd_step(&plain, &t1, &gg, &b1, NULL, 1);
    ck_assert_float_eq_tol(t1, 0.95f, 1e-7);
    /* first Nesterov step with wd: g' = 0.5 + 0.01 = 0.51, buf = 0.51,
     * d = 0.51 + 0.9 * 0.51 = 0.969, theta = 1 - 0.0969 */
    td_sgd nes = {0.1f, 0.9f, 0.01f, 1};
    t1 = 1.0f, b1 = 0;
    td_sgd_step(&nes, &t1, &gg, &b1, NULL, 1);
    ck_assert_float_eq_tol(t1, 1.0f - 0.0969f, 1e-6);
}
END_TEST

START_TEST(test_adamw_rules)
{
    /* the first AdamW step moves each weight by lr * g / (|g| + eps'),
     * i.e. about lr against the gradient's sign, after the decoupled
     * decay theta *= 1 - lr * wd (masked) */
    float theta[3] = {1.0f, -1.0f, 0.5f}, m[3] = {0}, v[3] = {0};
    const float g[3] = {0.3f, -2.0f, 1e-3f};
    const uint8_t mask[3] = {1, 1, 0};
    td_adamw o = {0.01f, 0.9f, 0.999f, 1e-8f, 0.1f};
    td_adamw_step(&o, theta, g, m, v, mask, 3, 1);
    ck_assert_double_eq_tol(theta[0], 1.0 * (1 - 0.001) - 0.01, 1e-6);
    ck_assert_double_eq_tol(theta[1], -1.0 * (1 - 0.001) + 0.01, 1e-6);
    ck_assert_double_eq_tol(theta[2], 0.5 - 0.01 * 1e-3 / (1e-3 + 1e-8),
                            1e-6);
    /* second step against an independent double implementation */
    {
        double th = 1.0 * (1 - 0.001) - 0.01, mm = 0.1 * 0.3,
               vv = 0.001 * 0.09, g2 = -0.7;
        const float gs[3] = {-0.7f, 0, 0};
        th -= 0.01 * 0.1 * th;
        mm = 0.9 * mm + 0.1 * g2;
        vv = 0.999 * vv + 0.001 * g2 * g2;
        th -= 0.01 * (mm / (1 - 0.81)) / (sqrt(vv / (1 - 0.998001)) + 1e-8);
        td_adamw_step(&o, theta, gs, m, v, mask, 3, 2);
        ck_assert_double_eq_tol(theta[0], th, 1e-6);
    }
}
END_TEST

START_TEST(test_cosine_schedule)
{
    /* warm-up: linear from base/warmup to base */
    ck_assert_float_eq_tol(td_lr_cosine(0.1f, 0, 0, 10, 110), 0.01f, 1e-7);
    ck_assert_float_eq_tol(td_lr_cosine(0.1f, 0, 9, 10, 110), 0.1f, 1e-7);
    /* then half a cosine from base to min */
    ck_assert_float_eq_tol(td_lr_cosine(0.1f, 0, 10, 10, 110), 0.1f, 1e-7);
    ck_assert_float_eq_tol(td_lr_cosine(0.1f, 0.02f, 60, 10, 110), 0.06f,
                           1e-6);
    ck_assert_float_eq_tol(td_lr_cosine(0.1f, 0, 35, 10, 110),
                           0.05 * (1 + cos(M_PI * 0.25)), 1e-6);
    ck_assert_float_eq_tol(td_lr_cosine(0.1f, 0.001f, 110, 10, 110), 0.001f,
                           1e-7);
    /* monotone after the warm-up */
    for (long s = 11; s < 110; s++)
        ck_assert(td_lr_cosine(0.1f, 0, s, 10, 110) <=
                  td_lr_cosine(0.1f, 0, s - 1, 10, 110));
}
END_TEST

START_TEST(test_sam_and_ema)
{
    float theta[3] = {1, 2, 3}, e[3];
    const float g[3] = {3, 0, 4}; /* ||g|| = 5 */
    double norm = td_sam_perturb(theta, e, g, 3, 0.05f);
    ck_assert_double_eq_tol(norm, 5.0, 1e-9);
    ck_assert_float_eq_tol(e[0], 0.03f, 1e-7);
    ck_assert_float_eq_tol(e[2], 0.04f, 1e-7);
    ck_assert_float_eq_tol(theta[0], 1.03f, 1e-6);
    ck_assert_float_eq(theta[1], 2.0f);
    td_sam_restore(theta, e, 3);
    ck_assert_float_eq_tol(theta[0], 1.0f, 1e-6);
    ck_assert_float_eq_tol(theta[2], 3.0f, 1e-6);
    float avg[2] = {1, 1};
    const float x[2] = {0, 2};
    td_ema_update(avg, x, 2, 0.9f);
    ck_assert_float_eq_tol(avg[0], 0.9f, 1e-7);
    ck_assert_float_eq_tol(avg[1], 1.1f, 1e-6);
}
END_TEST

/* ------------------------------------------------------------ IDX */

/* Write an IDX file: type byte, dims, n data bytes from data (then extra
 * trailing bytes); gz selects gzip. magic0 lets a test corrupt byte 0. */
static void write_idx(const char *path, int gz, int magic0, int type,
                      int ndim, const uint32_t *dims, const uint8_t *data,
                      size_t n, size_t extra)
{
    unsigned char head[4 + 4 * 4];
    size_t hl = 4;
    head[0] = (unsigned char)magic0;
    head[1] = 0;
    head[2] = (unsigned char)type;
    head[3] = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++) {
        head[hl++] = (unsigned char)(dims[i] >> 24);
        head[hl++] = (unsigned char)(dims[i] >> 16);
        head[hl++] = (unsigned char)(dims[i] >> 8);
        head[hl++] = (unsigned char)dims[i];
    }
    if (gz) {
        gzFile g = gzopen(path, "wb");
        ck_assert_ptr_nonnull(g);
        ck_assert_int_eq(gzwrite(g, head, (unsigned)hl), (int)hl);
        if (n)
            ck_assert_int_eq(gzwrite(g, data, (unsigned)n), (int)n);
        for (size_t i = 0; i < extra; i++)
            gzputc(g, 7);
        gzclose(g);
    } else {
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        fwrite(head, 1, hl, f);
        if (n)
            fwrite(data, 1, n, f);
        for (size_t i = 0; i < extra; i++)
            fputc(7, f);
        fclose(f);
    }
}

/* A small dataset whose classes are easy to tell apart: class c is a
 * bright horizontal bar at row 2 + 2c over a dim noisy background. */
static void make_dataset(const char *dir, const char *prefix, int n, int gz,
                         uint64_t seed)
{
    char path[256];
    uint32_t di[3] = {(uint32_t)n, 28, 28}, dl[1] = {(uint32_t)n};
    uint8_t *img = malloc((size_t)n * 784), *lab = malloc((size_t)n);
    ck_assert_ptr_nonnull(img);
    ck_assert_ptr_nonnull(lab);
    for (int i = 0; i < n; i++) {
        int c = (int)td_rng_below(&seed, 10);
        lab[i] = (uint8_t)c;
        for (int p = 0; p < 784; p++)
            img[(size_t)i * 784 + p] = (uint8_t)td_rng_below(&seed, 60);
        for (int y = 2 + 2 * c; y < 4 + 2 * c; y++)
            for (int x = 4; x < 24; x++)
                img[(size_t)i * 784 + y * 28 + x] = 250;
    }
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, prefix,
             gz ? ".gz" : "");
    write_idx(path, gz, 0, 8, 3, di, img, (size_t)n * 784, 0);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", dir, prefix,
             gz ? ".gz" : "");
    write_idx(path, gz, 0, 8, 1, dl, lab, (size_t)n, 0);
    free(img);
    free(lab);
}

START_TEST(test_idx_good_files)
{
    char path[256];
    uint8_t data[24];
    uint32_t dims[3] = {2, 3, 4};
    td_idx x;
    td_error err;
    make_tmpdir();
    for (int i = 0; i < 24; i++)
        data[i] = (uint8_t)(i * 7);
    for (int gz = 0; gz <= 1; gz++) {
        snprintf(path, sizeof path, "%s/a%d", tmpdir, gz);
        write_idx(path, gz, 0, 8, 3, dims, data, 24, 0);
        ck_assert_int_eq(td_idx_read(&x, path, &err), TD_OK);
        ck_assert_int_eq(x.ndim, 3);
        ck_assert_uint_eq(x.dims[0], 2);
        ck_assert_uint_eq(x.dims[2], 4);
        ck_assert_uint_eq(x.len, 24);
        ck_assert_mem_eq(x.data, data, 24);
        td_idx_free(&x);
    }
    /* a dataset directory, gzipped, read by prefix */
    td_dataset d;
    make_dataset(tmpdir, "train", 12, 1, 3);
    ck_assert_int_eq(td_dataset_load(&d, tmpdir, "train", 10, &err), TD_OK);
    ck_assert_int_eq(d.n, 12);
    ck_assert_int_eq(d.h, 28);
    ck_assert_int_eq(d.w, 28);
    /* the view at native size with no shift reproduces the pixels */
    float v[784];
    td_dataset_view(&d, 5, 0, 0, 0, 28, 28, 0.5f, 0.25f, v);
    for (int p = 0; p < 784; p += 37)
        ck_assert_float_eq_tol(v[p], (d.images[5 * 784 + p] / 255.0f - 0.5f) /
                                         0.25f,
                               1e-5);
    /* flip mirrors columns; a shift by (dx, dy) moves the content */
    float f[784];
    td_dataset_view(&d, 5, 0, 0, 1, 28, 28, 0, 1, f);
    td_dataset_view(&d, 5, 0, 0, 0, 28, 28, 0, 1, v);
    for (int y = 0; y < 28; y += 5)
        for (int xx = 0; xx < 28; xx += 3)
            ck_assert_float_eq_tol(f[y * 28 + xx], v[y * 28 + 27 - xx], 1e-6);
    td_dataset_view(&d, 5, 2, -1, 0, 28, 28, 0, 1, f);
    ck_assert_float_eq_tol(f[10 * 28 + 10], v[9 * 28 + 12], 1e-6);
    ck_assert_float_eq(f[0], 0); /* padding is black */
    /* resizing a constant region stays constant; 56 px doubles the bar */
    float big[56 * 56];
    td_dataset_view(&d, 5, 0, 0, 0, 56, 56, 0, 1, big);
    int c = d.labels[5], row = 2 * (2 + 2 * c) + 2; /* inside the bar */
    ck_assert_float_eq_tol(big[row * 56 + 28], 250 / 255.0f, 1e-5);
    td_dataset_free(&d);
    rm_tmpdir();
}
END_TEST

static void expect_idx_error(const char *path, td_status want,
                             const char *fragment)
{
    td_idx x;
    td_error err = {0};
    td_status st = td_idx_read(&x, path, &err);
    ck_assert_int_eq(st, want);
    ck_assert_msg(strstr(err.msg, fragment), "message \"%s\" lacks \"%s\"",
                  err.msg, fragment);
    ck_assert_ptr_null(x.data);
}

START_TEST(test_idx_corrupt_files)
{
    char path[256];
    uint8_t data[24] = {0};
    uint32_t dims[3] = {2, 3, 4}, zero[1] = {0};
    make_tmpdir();
    for (int gz = 0; gz <= 1; gz++) {
        snprintf(path, sizeof path, "%s/bad_magic%d", tmpdir, gz);
        write_idx(path, gz, 0x1f, 8, 3, dims, data, 24, 0);
        expect_idx_error(path, TD_EFORMAT, "bad IDX magic");
        snprintf(path, sizeof path, "%s/float%d", tmpdir, gz);
        write_idx(path, gz, 0, 0x0d, 3, dims, data, 24, 0);
        expect_idx_error(path, TD_EUNSUPPORTED, "type 0x0d");
        snprintf(path, sizeof path, "%s/trunc%d", tmpdir, gz);
        write_idx(path, gz, 0, 8, 3, dims, data, 23, 0);
        expect_idx_error(path, TD_EFORMAT, "truncated");
        snprintf(path, sizeof path, "%s/trail%d", tmpdir, gz);
        write_idx(path, gz, 0, 8, 3, dims, data, 24, 3);
        expect_idx_error(path, TD_EFORMAT, "trailing bytes");
        snprintf(path, sizeof path, "%s/dims%d", tmpdir, gz);
        write_idx(path, gz, 0, 8, 3, dims, NULL, 0, 0); /* header cut */
        expect_idx_error(path, TD_EFORMAT, "truncated");
        snprintf(path, sizeof path, "%s/zero%d", tmpdir, gz);
        write_idx(path, gz, 0, 8, 1, zero, NULL, 0, 0);
        expect_idx_error(path, TD_EFORMAT, "zero or too large");
    }
    snprintf(path, sizeof path, "%s/empty", tmpdir);
    write_idx(path, 0, 0, 8, 0, dims, NULL, 0, 0);
    expect_idx_error(path, TD_EFORMAT, "dimension count 0");
    snprintf(path, sizeof path, "%s/missing", tmpdir);
    expect_idx_error(path, TD_ENOTFOUND, "cannot open");
    /* gzip stream cut in the middle */
    {
        char good[256];
        char *buf;
        size_t len;
        uint8_t big[5000];
        uint32_t bd[1] = {5000};
        for (int i = 0; i < 5000; i++)
            big[i] = (uint8_t)(i * 31 + (i >> 3));
        snprintf(good, sizeof good, "%s/big.gz", tmpdir);
        write_idx(good, 1, 0, 8, 1, bd, big, 5000, 0);
        ck_assert_int_eq(td_file_read(good, 1 << 20, &buf, &len, NULL), TD_OK);
        snprintf(path, sizeof path, "%s/cut.gz", tmpdir);
        ck_assert_int_eq(td_file_write_atomic(path, buf, len / 2, NULL),
                         TD_OK);
        free(buf);
        expect_idx_error(path, TD_EFORMAT, "truncated");
    }
    /* pairing: counts that differ, labels out of range, wrong ranks */
    {
        td_idx im, lb;
        td_dataset d;
        td_error err;
        uint32_t di[3] = {3, 2, 2}, dl[1] = {2};
        uint8_t pix[12] = {0}, lab[3] = {1, 2, 11};
        snprintf(path, sizeof path, "%s/im", tmpdir);
        write_idx(path, 0, 0, 8, 3, di, pix, 12, 0);
        char lpath[256];
        snprintf(lpath, sizeof lpath, "%s/lb", tmpdir);
        write_idx(lpath, 0, 0, 8, 1, dl, lab, 2, 0);
        ck_assert_int_eq(td_idx_read(&im, path, &err), TD_OK);
        ck_assert_int_eq(td_idx_read(&lb, lpath, &err), TD_OK);
        ck_assert_int_eq(td_dataset_from_idx(&d, &im, &lb, 10, &err),
                         TD_EFORMAT);
        ck_assert_str_eq(err.msg, "3 images but 2 labels");
        dl[0] = 3;
        write_idx(lpath, 0, 0, 8, 1, dl, lab, 3, 0);
        ck_assert_int_eq(td_idx_read(&im, path, &err), TD_OK);
        ck_assert_int_eq(td_idx_read(&lb, lpath, &err), TD_OK);
        ck_assert_int_eq(td_dataset_from_idx(&d, &im, &lb, 10, &err),
                         TD_EFORMAT);
        ck_assert_str_eq(err.msg, "label 2 is 11: must be < 10 classes");
        ck_assert_int_eq(td_idx_read(&im, lpath, &err), TD_OK);
        ck_assert_int_eq(td_idx_read(&lb, lpath, &err), TD_OK);
        ck_assert_int_eq(td_dataset_from_idx(&d, &im, &lb, 10, &err),
                         TD_EFORMAT);
        ck_assert(strstr(err.msg, "expected 3"));
        /* a missing labels file names the path */
        ck_assert_int_eq(td_dataset_load(&d, tmpdir, "nothing", 10, &err),
                         TD_ENOTFOUND);
        ck_assert(strstr(err.msg, "nothing-images-idx3-ubyte"));
    }
    rm_tmpdir();
}
END_TEST

/* ------------------------------------------------------------ model file */

START_TEST(test_model_file_round_trip)
{
    td_tn_arch a;
    td_tnt_model m, back;
    td_error err;
    char path[256];
    float mean, std;
    const char *extra[] = {"optimizer", "saf", NULL};
    td_tnt_meta meta = {td_fashion_mnist_labels, 0.286f, 0.353f, extra};
    make_tmpdir();
    ck_assert_int_eq(td_tn_arch_build(&a, 0.1, 0.4, 0.2, 24, 10, &err),
                     TD_OK);
    ck_assert_int_eq(td_tnt_init(&m, &a, 1, 24, &err), TD_OK);
    td_tnt_init_weights(&m, 11);
    for (size_t i = 0; i < m.n_stats; i++)
        m.stats[i] += 0.01f * (float)(i % 7);
    snprintf(path, sizeof path, "%s/m.safetensors", tmpdir);
    ck_assert_int_eq(td_tnt_save(&m, &meta, path, &err), TD_OK);
    /* what the inference engine reads: timm names, PyTorch layouts */
    td_st_file f;
    ck_assert_int_eq(td_st_open(&f, path, &err), TD_OK);
    ck_assert_int_eq(td_st_expect_meta(&f, "kind", "tinynet", &err), TD_OK);
    ck_assert_str_eq(td_st_meta_get(&f, "channels"), "1");
    ck_assert_str_eq(td_st_meta_get(&f, "resolution"), "24");
    ck_assert_str_eq(td_st_meta_get(&f, "classes"), "10");
    ck_assert_str_eq(td_st_meta_get(&f, "optimizer"), "saf");
    {
        json_error_t je;
        json_t *labels = json_loads(td_st_meta_get(&f, "labels"), 0, &je);
        ck_assert_ptr_nonnull(labels);
        ck_assert_int_eq(json_array_size(labels), 10);
        ck_assert_str_eq(json_string_value(json_array_get(labels, 9)),
                         "Ankle boot");
        json_decref(labels);
        json_t *ms = json_loads(td_st_meta_get(&f, "std"), 0, &je);
        ck_assert_int_eq(json_array_size(ms), 3);
        ck_assert_double_eq_tol(json_number_value(json_array_get(ms, 2)),
                                0.353, 1e-6);
        json_decref(ms);
    }
    int64_t stem[4] = {32, 3, 3, 3}, fc[2] = {10, 1280};
    const td_st_tensor *t;
    ck_assert_int_eq(td_st_expect(&f, "conv_stem.weight", TD_DT_F32, 4, stem,
                                  &t, &err),
                     TD_OK);
    {
        /* stem (ky,kx,1,co) spread over RGB: [co][ch][ky][kx] = w / 3 */
        float v;
        memcpy(&v, (const char *)t->data + 4 * (((5 * 3 + 2) * 3 + 1) * 3 + 2),
               4);
        ck_assert_float_eq_tol(v, m.params[m.stem_w_off + (1 * 3 + 2) * 32 + 5] /
                                      3,
                               1e-7);
    }
    ck_assert_int_eq(td_st_expect(&f, "classifier.weight", TD_DT_F32, 2, fc,
                                  &t, &err),
                     TD_OK);
    {
        float v;
        memcpy(&v, (const char *)t->data + 4 * (3 * 1280 + 100), 4);
        ck_assert_float_eq(v, m.params[m.fc_w + 100 * 10 + 3]);
    }
    ck_assert_ptr_nonnull(td_st_find(&f, "blocks.0.0.conv_dw.weight"));
    ck_assert_ptr_nonnull(td_st_find(&f, "blocks.0.0.se.conv_reduce.bias"));
    ck_assert_ptr_nonnull(td_st_find(&f, "blocks.1.0.conv_pwl.weight"));
    ck_assert_ptr_nonnull(td_st_find(&f, "blocks.1.0.bn3.running_var"));
    ck_assert_ptr_nonnull(td_st_find(&f, "bn2.running_mean"));
    td_st_close(&f);
    /* and back */
    ck_assert_int_eq(td_tnt_load(&back, path, &mean, &std, &err), TD_OK);
    ck_assert_float_eq_tol(mean, 0.286f, 1e-6);
    ck_assert_float_eq_tol(std, 0.353f, 1e-6);
    ck_assert_uint_eq(back.n_params, m.n_params);
    ck_assert_int_eq(back.in_ch, 1);
    {
        double worst = 0; /* one assertion: Check's are slow per call */
        for (size_t i = 0; i < m.n_params; i++)
            worst = fmax(worst, fabs((double)back.params[i] - m.params[i]));
        ck_assert_double_le(worst, 1e-6);
    }
    ck_assert_mem_eq(back.stats, m.stats, m.n_stats * sizeof(float));
    td_tnt_free(&back);
    /* the inference engine reads the same file and computes the same
     * logits from the grey input repeated on R, G and B */
    {
        td_tinynet *eng;
        td_tnt_ws ws;
        td_arena ar;
        enum { N = 3, R = 24 };
        uint64_t s = 99;
        float grey[N * R * R], rgb[N * 3 * R * R], lg[N * 10];
        ck_assert_int_eq(td_tinynet_load(&eng, path, NULL, &err), TD_OK);
        ck_assert_int_eq(eng->arch.resolution, 24);
        ck_assert_str_eq(eng->labels[4], "Coat");
        ck_assert_float_eq_tol(eng->mean[1], 0.286f, 1e-6);
        for (int i = 0; i < N * R * R; i++)
            grey[i] = 2 * td_rng_float(&s) - 1;
        for (int i = 0; i < N; i++)
            for (int c = 0; c < 3; c++)
                memcpy(rgb + ((size_t)i * 3 + c) * R * R, grey + i * R * R,
                       R * R * sizeof(float));
        ck_assert_int_eq(
            td_arena_init(&ar, td_tinynet_scratch_bytes(eng, N, R, R), &err),
            TD_OK);
        ck_assert_int_eq(td_tinynet_forward(eng, &ar, rgb, N, R, R, lg, &err),
                         TD_OK);
        ck_assert_int_eq(td_tnt_ws_init(&ws, &m, N, &err), TD_OK);
        td_tnt_forward(&m, &ws, m.params, m.stats, grey, N, 0);
        for (int i = 0; i < N; i++) {
            float mx = 0;
            for (int k = 0; k < 10; k++)
                mx = fmaxf(mx, fabsf(ws.logits[i * 10 + k]));
            /* docs/tinynet.md: the engine's approximate exp allows 2e-4 */
            for (int k = 0; k < 10; k++)
                ck_assert_float_eq_tol(lg[i * 10 + k], ws.logits[i * 10 + k],
                                       2e-4f * mx);
        }
        td_tnt_ws_free(&ws);
        td_arena_free(&ar);
        td_tinynet_free(eng);
    }
    td_tnt_free(&m);
    rm_tmpdir();
}
END_TEST

/* ------------------------------------------------------------ end to end */

static int run(const char *args)
{
    return tf_run_train(tmpdir, args, NULL);
}

static int same_file(const char *a, const char *b)
{
    return tf_same_file(a, b);
}

/* --pad 0: a vertical shift would move one class's bar onto another's */
#define TINY "--r 0.1 --d 0.3 --w 0.1 --res 16 --batch 16 --lr 0.05 " \
             "--pad 0 --quiet --threads 2"

START_TEST(test_end_to_end)
{
    char args[1024], p1[256], p2[256], rep[256];
    make_tmpdir();
    make_dataset(tmpdir, "train", 96, 1, 1);
    make_dataset(tmpdir, "t10k", 40, 0, 2);
    /* SAF with the trajectory loss on from epoch 3 (E~ = 1) */
    snprintf(args, sizeof args,
             TINY " --epochs 4 --opt saf --saf-minus 1 --saf-start 2 "
                  "--data %s --out %s/a.safetensors",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 0);
    snprintf(rep, sizeof rep, "%s/a.report.json", tmpdir);
    {
        json_error_t je;
        json_t *r = json_load_file(rep, 0, &je), *ep;
        ck_assert_ptr_nonnull(r);
        ep = json_object_get(r, "epochs");
        ck_assert_int_eq(json_array_size(ep), 4);
        double l1 = json_number_value(
            json_object_get(json_array_get(ep, 0), "loss"));
        /* cross-entropy part only: from epoch 3 the loss includes KL */
        double l4 = json_number_value(
                        json_object_get(json_array_get(ep, 3), "loss")) -
                    json_number_value(
                        json_object_get(json_array_get(ep, 3), "kl"));
        double kl2 = json_number_value(
            json_object_get(json_array_get(ep, 1), "kl"));
        double kl3 = json_number_value(
            json_object_get(json_array_get(ep, 2), "kl"));
        ck_assert_msg(l4 < l1, "loss did not decrease: %g -> %g", l1, l4);
        ck_assert_double_eq(kl2, 0);      /* not yet active */
        ck_assert_double_gt(kl3, 0);      /* active from epoch 3 */
        ck_assert_double_gt(json_number_value(json_object_get(
                                json_array_get(ep, 3), "images_per_s")),
                            0);
        json_decref(r);
    }
    /* the model file loads, and eval runs on it */
    {
        td_tnt_model m;
        td_error err;
        snprintf(p1, sizeof p1, "%s/a.safetensors", tmpdir);
        ck_assert_int_eq(td_tnt_load(&m, p1, NULL, NULL, &err), TD_OK);
        ck_assert_int_eq(m.res, 16);
        td_tnt_free(&m);
        snprintf(args, sizeof args, "eval %s --data %s", p1, tmpdir);
        ck_assert_int_eq(run(args), 0);
    }
    /* the same seed gives the same bytes */
    snprintf(args, sizeof args,
             TINY " --epochs 4 --opt saf --saf-minus 1 --saf-start 2 "
                  "--data %s --out %s/b.safetensors",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 0);
    snprintf(p2, sizeof p2, "%s/b.safetensors", tmpdir);
    ck_assert(same_file(p1, p2));
    /* killed after epoch 2, resumed: the same bytes as uninterrupted */
    snprintf(args, sizeof args,
             TINY " --epochs 4 --opt saf --saf-minus 1 --saf-start 2 "
                  "--data %s --out %s/c.safetensors --stop-after 2",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 3);
    snprintf(args, sizeof args,
             TINY " --epochs 4 --opt saf --saf-minus 1 --saf-start 2 "
                  "--data %s --out %s/c.safetensors --resume",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 0);
    snprintf(p2, sizeof p2, "%s/c.safetensors", tmpdir);
    ck_assert(same_file(p1, p2));
    /* a different seed gives different weights */
    snprintf(args, sizeof args,
             TINY " --epochs 1 --seed 9 --data %s --out %s/d.safetensors",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 0);
    snprintf(p2, sizeof p2, "%s/d.safetensors", tmpdir);
    ck_assert(!same_file(p1, p2));
    rm_tmpdir();
}
END_TEST

START_TEST(test_other_optimisers_run)
{
    char args[1024];
    make_tmpdir();
    make_dataset(tmpdir, "train", 64, 0, 4);
    make_dataset(tmpdir, "t10k", 20, 0, 5);
    const char *opts[] = {"--opt sgd", "--opt sam", "--opt mesa --saf-start 0",
                          "--opt sgd --base adamw --lr 0.003",
                          "--opt saf --threads 1"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        snprintf(args, sizeof args,
                 TINY " --epochs 2 %s --data %s --out %s/o%zu.safetensors",
                 opts[i], tmpdir, tmpdir, i);
        ck_assert_msg(run(args) == 0, "%s failed", opts[i]);
    }
    rm_tmpdir();
}
END_TEST

START_TEST(test_bad_input_fails_cleanly)
{
    char args[1024], path[256];
    struct stat st;
    make_tmpdir();
    ck_assert_int_eq(run("--epochs 0"), 2);
    ck_assert_int_eq(run("--opt adam"), 2);
    ck_assert_int_eq(run("--bogus 1"), 2);
    ck_assert_int_eq(run("--batch"), 2);
    ck_assert_int_eq(run("--preset tinynet_z --data /nonexistent"), 1);
    ck_assert_int_eq(run("eval"), 2);
    snprintf(args, sizeof args, "--data %s/none --out %s/x.safetensors",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 1);
    /* a config file with a bad line names the line */
    snprintf(path, sizeof path, "%s/c.conf", tmpdir);
    ck_assert_int_eq(td_file_write_atomic(path, "epochs = 2\nlr 3\n", 16,
                                          NULL),
                     TD_OK);
    snprintf(args, sizeof args, "--config %s", path);
    ck_assert_int_eq(run(args), 2);
    /* a diverging run stops with a message and writes no model */
    make_dataset(tmpdir, "train", 64, 0, 4);
    make_dataset(tmpdir, "t10k", 20, 0, 5);
    snprintf(args, sizeof args,
             TINY " --epochs 2 --lr 1e6 --warmup 0 --data %s "
                  "--out %s/nan.safetensors",
             tmpdir, tmpdir);
    ck_assert_int_eq(run(args), 1);
    snprintf(path, sizeof path, "%s/nan.safetensors", tmpdir);
    ck_assert_int_ne(stat(path, &st), 0);
    /* a divergence in epoch 2 keeps epoch 1's checkpoint, which resumes */
    {
        char ck[256], *before, *after;
        size_t lb, la;
        td_st_file f;
        td_error e;
        snprintf(ck, sizeof ck, "%s/late.ckpt", tmpdir);
        snprintf(args, sizeof args,
                 "--epochs 2 --data %s --checkpoint %s "
                 "--out %s/late.safetensors",
                 tmpdir, ck, tmpdir);
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "TD_TRAIN_FAULT_NAN_EPOCH=2 '%s/models/"
                 "tinyd-train' " TINY " %s >>'%s/log' 2>&1",
                 getenv("TD_BUILDDIR") ? getenv("TD_BUILDDIR") : ".", args,
                 tmpdir);
        int rc = system(cmd);
        ck_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
        /* the model of epoch 1 was written; it stays as it is too */
        snprintf(path, sizeof path, "%s/late.safetensors", tmpdir);
        char *mbefore, *mafter;
        size_t mlb, mla;
        ck_assert_int_eq(td_file_read(path, 1 << 26, &mbefore, &mlb, NULL),
                         TD_OK);
        ck_assert_int_eq(td_file_read(ck, 1 << 26, &before, &lb, NULL),
                         TD_OK);
        ck_assert_int_eq(td_st_open(&f, ck, &e), TD_OK);
        ck_assert_int_eq(td_st_expect_meta(&f, "epochs_done", "1", &e), TD_OK);
        td_st_close(&f);
        /* a second divergent attempt from the checkpoint leaves it as it was */
        snprintf(cmd, sizeof cmd, "TD_TRAIN_FAULT_NAN_EPOCH=2 '%s/models/"
                 "tinyd-train' " TINY " %s --resume >>'%s/log' 2>&1",
                 getenv("TD_BUILDDIR") ? getenv("TD_BUILDDIR") : ".", args,
                 tmpdir);
        rc = system(cmd);
        ck_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
        ck_assert_int_eq(td_file_read(ck, 1 << 26, &after, &la, NULL), TD_OK);
        ck_assert_uint_eq(la, lb);
        ck_assert_mem_eq(after, before, lb);
        ck_assert_int_eq(td_file_read(path, 1 << 26, &mafter, &mla, NULL),
                         TD_OK);
        ck_assert_uint_eq(mla, mlb);
        ck_assert_mem_eq(mafter, mbefore, mlb);
        free(before);
        free(after);
        free(mbefore);
        free(mafter);
        snprintf(cmd, sizeof cmd, TINY " %s --resume", args);
        ck_assert_int_eq(run(cmd), 0);
        ck_assert_int_eq(td_st_open(&f, path, &e), TD_OK);
        td_st_close(&f);
    }
    /* a write that fails (file size limit, EFBIG) leaves the previous
     * model intact */
    {
        char keep[256], *before, *after;
        size_t lb, la;
        snprintf(args, sizeof args,
                 TINY " --epochs 1 --data %s --out %s/w.safetensors", tmpdir,
                 tmpdir);
        ck_assert_int_eq(run(args), 0);
        snprintf(keep, sizeof keep, "%s/w.safetensors", tmpdir);
        ck_assert_int_eq(td_file_read(keep, 1 << 26, &before, &lb, NULL),
                         TD_OK);
        ck_assert_uint_gt(lb, 60 * 1024);
        snprintf(args, sizeof args,
                 "sh -c \"trap '' XFSZ; ulimit -f 100; exec '%s/models/"
                 "tinyd-train' " TINY " --epochs 1 --seed 5 --data %s "
                 "--out %s/w.safetensors\" >>'%s/log' 2>&1",
                 getenv("TD_BUILDDIR") ? getenv("TD_BUILDDIR") : ".", tmpdir,
                 tmpdir, tmpdir);
        int rc = system(args);
        ck_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
        ck_assert_int_eq(td_file_read(keep, 1 << 26, &after, &la, NULL),
                         TD_OK);
        ck_assert_uint_eq(la, lb);
        ck_assert_mem_eq(after, before, lb);
        free(before);
        free(after);
    }
    {
        char logp[256], *log;
        size_t len;
        snprintf(logp, sizeof logp, "%s/log", tmpdir);
        ck_assert_int_eq(td_file_read(logp, 1 << 20, &log, &len, NULL), TD_OK);
        ck_assert_ptr_nonnull(strstr(log, "unknown option --bogus"));
        ck_assert_ptr_nonnull(strstr(log, "c.conf:2: expected key = value"));
        ck_assert_ptr_nonnull(strstr(log, "stopping; the last good"));
        free(log);
    }
    rm_tmpdir();
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("td_train");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120); /* slow under ASan on a busy machine */
    tcase_add_test(tc, test_sgd_rules);
    tcase_add_test(tc, test_adamw_rules);
    tcase_add_test(tc, test_cosine_schedule);
    tcase_add_test(tc, test_sam_and_ema);
    tcase_add_test(tc, test_idx_good_files);
    tcase_add_test(tc, test_idx_corrupt_files);
    tcase_add_test(tc, test_model_file_round_trip);
    suite_add_tcase(s, tc);
    TCase *e2e = tcase_create("end_to_end");
    tcase_set_timeout(e2e, 120);
    tcase_add_test(e2e, test_end_to_end);
    tcase_add_test(e2e, test_other_optimisers_run);
    tcase_add_test(e2e, test_bad_input_fails_cleanly);
    suite_add_tcase(s, e2e);
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
