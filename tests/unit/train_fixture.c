#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "td_file.h"
#include "td_rng.h"
#include "train_fixture.h"

void tf_tmpdir_make(char *dir, size_t cap, const char *tag)
{
    snprintf(dir, cap, "/tmp/td_%s_XXXXXX", tag);
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

void tf_tmpdir_remove(const char *dir)
{
    char cmd[512];
    if (getenv("TD_KEEP_TMP")) { /* for debugging a failure */
        fprintf(stderr, "kept %s\n", dir);
        return;
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void tf_bar_dataset(const char *dir, const char *prefix, int n, uint64_t seed)
{
    char path[512];
    size_t ni = 16 + (size_t)n * 784, nl = 8 + (size_t)n;
    uint8_t *img = calloc(ni, 1), *lab = calloc(nl, 1);
    ck_assert_ptr_nonnull(img);
    ck_assert_ptr_nonnull(lab);
    put_be32(img, 0x803);
    put_be32(img + 4, (uint32_t)n);
    put_be32(img + 8, 28);
    put_be32(img + 12, 28);
    put_be32(lab, 0x801);
    put_be32(lab + 4, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        int c = (int)td_rng_below(&seed, 10);
        uint8_t *im = img + 16 + (size_t)i * 784;
        lab[8 + i] = (uint8_t)c;
        for (int p = 0; p < 784; p++)
            im[p] = (uint8_t)td_rng_below(&seed, 60);
        for (int y = 2 + 2 * c; y < 4 + 2 * c; y++)
            for (int x = 4; x < 24; x++)
                im[y * 28 + x] = 250;
    }
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    ck_assert_int_eq(td_file_write_atomic(path, img, ni, NULL), TD_OK);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    ck_assert_int_eq(td_file_write_atomic(path, lab, nl, NULL), TD_OK);
    free(img);
    free(lab);
}

int tf_run_train(const char *dir, const char *args, const char *stdout_file)
{
    size_t cap = strlen(args) + 1024;
    char *cmd = malloc(cap);
    const char *b = getenv("TD_BUILDDIR");
    ck_assert_ptr_nonnull(cmd);
    if (stdout_file)
        snprintf(cmd, cap, "'%s/models/tinyd-train' %s >'%s' 2>>'%s/log'",
                 b ? b : ".", args, stdout_file, dir);
    else
        snprintf(cmd, cap, "'%s/models/tinyd-train' %s >>'%s/log' 2>&1",
                 b ? b : ".", args, dir);
    int rc = system(cmd);
    free(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

int tf_same_file(const char *a, const char *b)
{
    char *x, *y;
    size_t lx, ly;
    int same;
    ck_assert_int_eq(td_file_read(a, 1 << 26, &x, &lx, NULL), TD_OK);
    ck_assert_int_eq(td_file_read(b, 1 << 26, &y, &ly, NULL), TD_OK);
    same = lx == ly && !memcmp(x, y, lx);
    free(x);
    free(y);
    return same;
}

char *tf_read_log(const char *dir)
{
    char p[512], *log;
    size_t len;
    snprintf(p, sizeof p, "%s/log", dir);
    ck_assert_int_eq(td_file_read(p, 1 << 22, &log, &len, NULL), TD_OK);
    return log;
}
