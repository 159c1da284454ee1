/* Replays a fuzz target's committed corpus without libFuzzer, so plain
 * `make check` (gcc, optionally ASan) runs every seed and every past crash
 * through LLVMFuzzerTestOneInput. Prints TAP, one line per input.
 * Usage: replay_NAME [FILE|DIR]...; with no arguments it reads
 * $TD_SRCDIR/tests/fuzz/corpus/NAME (NAME is FUZZ_NAME at build time). */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "td_err.h"
#include "td_file.h"

#ifndef FUZZ_NAME
#error "compile with -DFUZZ_NAME='\"name\"'"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int n_run, n_bad;

static void run_file(const char *path)
{
    char *buf;
    size_t len;
    td_error err;
    if (td_file_read(path, (size_t)64 << 20, &buf, &len, &err) != TD_OK) {
        printf("not ok %d - %s: %s\n", ++n_run, path, err.msg);
        n_bad++;
        return;
    }
    /* A crash or trap ends the program: the TAP driver reports it. */
    LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
    free(buf);
    printf("ok %d - %s\n", ++n_run, path);
}

static void run_path(const char *path)
{
    struct stat sb;
    struct dirent **names;
    int n, i;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        run_file(path);
        return;
    }
    n = scandir(path, &names, NULL, alphasort);
    if (n < 0) {
        printf("not ok %d - cannot list %s\n", ++n_run, path);
        n_bad++;
        return;
    }
    for (i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            size_t sz = strlen(path) + strlen(names[i]->d_name) + 2;
            char *p = malloc(sz);
            if (p) {
                snprintf(p, sz, "%s/%s", path, names[i]->d_name);
                run_file(p);
                free(p);
            }
        }
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    int i;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1) {
        for (i = 1; i < argc; i++)
            run_path(argv[i]);
    } else {
        const char *src = getenv("TD_SRCDIR");
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", src ? src : ".",
                 FUZZ_NAME);
        run_path(dir);
    }
    if (n_run == 0) {
        printf("not ok 1 - no inputs found\n");
        n_run = n_bad = 1;
    }
    printf("1..%d\n", n_run);
    return n_bad ? EXIT_FAILURE : EXIT_SUCCESS;
}
