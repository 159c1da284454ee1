/* td_file: atomic writes (temporary, fsync, rename, fsync dir) and reads. */
#include "config.h"

#include "td_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void atomic_free(td_atomic_file *f)
{
    free(f->path);
    free(f->tmp_path);
    f->path = f->tmp_path = NULL;
    f->fp = NULL;
}

td_status td_atomic_open(td_atomic_file *f, const char *path, td_error *err)
{
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    size_t n = strlen(path) + 32;
    int fd;
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    f->tmp_path = malloc(n);
    if (!f->path || !f->tmp_path) {
        atomic_free(f);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    /* Same directory (rename must not cross file systems); a leading dot
     * keeps the temporary out of repository scans, which skip hidden
     * files. */
    snprintf(f->tmp_path, n, "%.*s.%s.tmp.XXXXXX", (int)dir_len, path,
             path + dir_len);
    fd = mkstemp(f->tmp_path);
    if (fd < 0) {
        td_status st = td_error_set(err, TD_EIO,
                                    "cannot create a temporary file for %s: %s",
                                    path, strerror(errno));
        atomic_free(f);
        return st;
    }
    fchmod(fd, 0644);
    f->fp = fdopen(fd, "wb");
    if (!f->fp) {
        close(fd);
        unlink(f->tmp_path);
        atomic_free(f);
        return td_error_set(err, TD_EIO, "fdopen failed for %s", path);
    }
    return TD_OK;
}

void td_atomic_abort(td_atomic_file *f)
{
    if (f->fp)
        fclose(f->fp);
    if (f->tmp_path)
        unlink(f->tmp_path);
    atomic_free(f);
}

static void fsync_dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    int fd;
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path + 1), path);
    fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

td_status td_atomic_commit(td_atomic_file *f, td_error *err)
{
    int failed = 0, saved = 0;
    if (fflush(f->fp) != 0 || ferror(f->fp)) {
        failed = 1;
        saved = errno;
    } else if (fsync(fileno(f->fp)) != 0) {
        failed = 1;
        saved = errno;
    }
    if (fclose(f->fp) != 0 && !failed) {
        failed = 1;
        saved = errno;
    }
    f->fp = NULL;
    if (!failed && rename(f->tmp_path, f->path) != 0) {
        failed = 1;
        saved = errno;
    }
    if (failed) {
        td_status st = td_error_set(err, TD_EIO, "writing %s failed: %s",
                                    f->path,
                                    saved ? strerror(saved) : "write error");
        unlink(f->tmp_path);
        atomic_free(f);
        return st;
    }
    fsync_dir_of(f->path);
    atomic_free(f);
    return TD_OK;
}

td_status td_file_write_atomic(const char *path, const void *buf, size_t len,
                               td_error *err)
{
    td_atomic_file f;
    td_status st = td_atomic_open(&f, path, err);
    if (st != TD_OK)
        return st;
    if (len && fwrite(buf, 1, len, f.fp) != len) {
        int saved = errno;
        td_atomic_abort(&f);
        return td_error_set(err, TD_EIO, "writing %s failed: %s", path,
                            strerror(saved));
    }
    return td_atomic_commit(&f, err);
}

td_status td_file_read(const char *path, size_t max_len, char **out,
                       size_t *len, td_error *err)
{
    FILE *fp = fopen(path, "rb");
    struct stat sb;
    char *buf;
    size_t got;
    *out = NULL;
    *len = 0;
    if (!fp)
        return td_error_set(err, errno == ENOENT ? TD_ENOTFOUND : TD_EIO,
                            "cannot open %s: %s", path, strerror(errno));
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return td_error_set(err, TD_EIO, "%s is not a regular file", path);
    }
    if ((size_t)sb.st_size > max_len) {
        fclose(fp);
        return td_error_set(err, TD_ETOOBIG,
                            "%s is %lld bytes, more than the limit of %zu",
                            path, (long long)sb.st_size, max_len);
    }
    buf = malloc((size_t)sb.st_size + 1);
    if (!buf) {
        fclose(fp);
        return td_error_set(err, TD_ENOMEM, "out of memory reading %s", path);
    }
    got = fread(buf, 1, (size_t)sb.st_size, fp);
    if (ferror(fp)) {
        fclose(fp);
        free(buf);
        return td_error_set(err, TD_EIO, "reading %s failed", path);
    }
    fclose(fp);
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return TD_OK;
}
