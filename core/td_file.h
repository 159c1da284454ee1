/* td_file: crash-safe file writes and whole-file reads.
 *
 * Every file tinyd or tinyd-train writes goes through td_file_atomic_*: the
 * bytes go to a temporary file in the same directory, are fsynced, and the
 * temporary is renamed over the target, then the directory is fsynced. A
 * crash or a failed write (ENOSPC, EFBIG under RLIMIT_FSIZE) leaves the
 * previous file intact and no partial file under the target name.
 * Thread: any. */
#ifndef TD_FILE_H
#define TD_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "td_err.h"

typedef struct td_atomic_file {
    FILE *fp;         /* write through this */
    char *path;       /* owned: final path */
    char *tmp_path;   /* owned: temporary path beside it */
} td_atomic_file;

/* Open a temporary file beside `path`. On success write to f->fp and call
 * td_atomic_commit or td_atomic_abort exactly once. */
td_status td_atomic_open(td_atomic_file *f, const char *path, td_error *err);
/* Flush, fsync, rename over the target, fsync the directory. On any failure
 * the temporary is removed and the target is untouched. Frees f. */
td_status td_atomic_commit(td_atomic_file *f, td_error *err);
/* Remove the temporary and free f. */
void td_atomic_abort(td_atomic_file *f);

/* Write a whole buffer atomically. */
td_status td_file_write_atomic(const char *path, const void *buf, size_t len,
                               td_error *err);
/* Read a whole file into a malloc'd buffer (NUL-terminated for convenience;
 * *len excludes the NUL). The caller frees *out. Refuses files larger than
 * max_len bytes. */
td_status td_file_read(const char *path, size_t max_len, char **out,
                       size_t *len, td_error *err);

#endif
