/* Unit tests for the foundation modules: td_err, td_arena, td_file. */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "td_arena.h"
#include "td_err.h"
#include "td_file.h"

START_TEST(test_error_set_and_prefix)
{
    td_error err;
    td_status st = td_error_set(&err, TD_EINVAL, "tensor %s has %d dims", "w",
                                3);
    ck_assert_int_eq(st, TD_EINVAL);
    ck_assert_str_eq(err.msg, "tensor w has 3 dims");
    td_error_prefix(&err, "loading %s", "m.safetensors");
    ck_assert_str_eq(err.msg, "loading m.safetensors: tensor w has 3 dims");
    ck_assert_int_eq(td_status_http(TD_ENOTFOUND), 404);
    ck_assert_int_eq(td_status_http(TD_ETOOBIG), 413);
    ck_assert_str_eq(td_status_name(TD_EFORMAT), "EFORMAT");
    ck_assert_str_eq(td_status_str((td_status)999), "unknown");
    ck_assert_int_eq(td_error_set(NULL, TD_EIO, "ignored"), TD_EIO);
}
END_TEST

START_TEST(test_arena_alignment_and_exhaustion)
{
    td_arena a;
    void *p, *q;
    size_t mark;
    ck_assert_int_eq(td_arena_init(&a, 1000, NULL), TD_OK);
    ck_assert_uint_eq(a.cap, 1024);
    p = td_arena_alloc(&a, 3);
    q = td_arena_alloc(&a, 100);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(q);
    ck_assert_uint_eq((uintptr_t)p % TD_ARENA_ALIGN, 0);
    ck_assert_uint_eq((uintptr_t)q % TD_ARENA_ALIGN, 0);
    ck_assert_uint_eq(a.used, 64 + 128);
    mark = td_arena_mark(&a);
    ck_assert_ptr_nonnull(td_arena_alloc(&a, 512));
    ck_assert_ptr_null(td_arena_alloc(&a, 512)); /* exhausted */
    td_arena_release(&a, mark);
    ck_assert_uint_eq(a.used, mark);
    ck_assert_uint_eq(a.high_water, 64 + 128 + 512);
    td_arena_reset(&a);
    ck_assert_uint_eq(a.used, 0);
    ck_assert_ptr_null(td_arena_alloc(&a, SIZE_MAX));
    td_arena_free(&a);
}
END_TEST

static char tmpdir[64];

static void make_tmpdir(void)
{
    strcpy(tmpdir, "/tmp/td_core_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

START_TEST(test_file_atomic_write_and_read)
{
    char path[128], *buf;
    size_t len;
    td_error err;
    make_tmpdir();
    snprintf(path, sizeof path, "%s/f.bin", tmpdir);
    ck_assert_int_eq(td_file_write_atomic(path, "hello", 5, &err), TD_OK);
    ck_assert_int_eq(td_file_write_atomic(path, "world!", 6, &err), TD_OK);
    ck_assert_int_eq(td_file_read(path, 100, &buf, &len, &err), TD_OK);
    ck_assert_uint_eq(len, 6);
    ck_assert_str_eq(buf, "world!");
    free(buf);
    ck_assert_int_eq(td_file_read(path, 3, &buf, &len, &err), TD_ETOOBIG);
    ck_assert_ptr_null(buf);
    unlink(path);
    ck_assert_int_eq(td_file_read(path, 100, &buf, &len, &err), TD_ENOTFOUND);
    rmdir(tmpdir);
}
END_TEST

START_TEST(test_file_atomic_abort_leaves_previous)
{
    char path[128], *buf;
    size_t len;
    td_atomic_file f;
    td_error err;
    make_tmpdir();
    snprintf(path, sizeof path, "%s/keep.txt", tmpdir);
    ck_assert_int_eq(td_file_write_atomic(path, "old", 3, &err), TD_OK);
    ck_assert_int_eq(td_atomic_open(&f, path, &err), TD_OK);
    fputs("partial new cont", f.fp);
    td_atomic_abort(&f);
    ck_assert_int_eq(td_file_read(path, 100, &buf, &len, &err), TD_OK);
    ck_assert_str_eq(buf, "old");
    free(buf);
    /* A directory that does not exist: clear error, nothing written. */
    ck_assert_int_eq(td_file_write_atomic("/nonexistent-dir/x", "a", 1, &err),
                     TD_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent-dir/x"));
    unlink(path);
    rmdir(tmpdir);
}
END_TEST

static Suite *core_suite(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("foundation");
    tcase_add_test(tc, test_error_set_and_prefix);
    tcase_add_test(tc, test_arena_alignment_and_exhaustion);
    tcase_add_test(tc, test_file_atomic_write_and_read);
    tcase_add_test(tc, test_file_atomic_abort_leaves_previous);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(core_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
