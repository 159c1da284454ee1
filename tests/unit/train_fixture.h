/* train_fixture: what the Check suites that drive models/tinyd-train
 * share: a scratch directory, a small synthetic IDX dataset, running the
 * trainer with its stderr appended to DIR/log, and reading files back.
 *
 * Every function fails the calling Check test (ck_assert) on an I/O error
 * rather than returning one. Strings returned are malloc'd; the caller
 * frees them. */
#ifndef TD_TRAIN_FIXTURE_H
#define TD_TRAIN_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

/* mkdtemp("/tmp/td_TAG_XXXXXX") into dir (cap bytes). */
void tf_tmpdir_make(char *dir, size_t cap, const char *tag);
/* rm -rf dir, unless TD_KEEP_TMP is set (then it says where it is). */
void tf_tmpdir_remove(const char *dir);

/* DIR/PREFIX-images-idx3-ubyte and -labels-idx1-ubyte, uncompressed: n
 * images of 28x28, class c a bright bar on rows 2+2c..3+2c (columns
 * 4..23) over dim noise, classes and noise drawn from seed. */
void tf_bar_dataset(const char *dir, const char *prefix, int n,
                    uint64_t seed);

/* Run TD_BUILDDIR/models/tinyd-train ARGS (a shell fragment); stderr is
 * appended to DIR/log, stdout too unless stdout_file names where it goes.
 * Returns the exit status, -1 when the trainer did not exit normally. */
int tf_run_train(const char *dir, const char *args, const char *stdout_file);

/* 1 when the two files have the same bytes. */
int tf_same_file(const char *a, const char *b);

/* DIR/log, NUL-terminated. */
char *tf_read_log(const char *dir);

#endif
