/* tinyd: serve small neural networks and graph-distance oracles over HTTP.
 *
 * main only turns flags into a td_config, prepares the process (thread
 * pool size, single-threaded BLAS, directories) and runs the server. */
#include "config.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "td_config.h"
#include "td_server.h"

/* mkdir -p: the state directory is ours to create. */
static int make_dirs(const char *path)
{
    char buf[4096];
    size_t i, n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char saved = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0750) != 0 && errno != EEXIST)
                return -1;
            buf[i] = saved;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    td_config cfg;
    td_config_action action;
    td_error err;
    td_server *srv;
    struct stat sb;
    char threads[16];
    int code;

    td_error_clear(&err);
    if (td_config_from_args(&cfg, argc, argv, &action, &err) != TD_OK) {
        fprintf(stderr, "tinyd: %s\nTry 'tinyd --help'.\n", err.msg);
        return 2;
    }
    if (action == TD_CONFIG_HELP) {
        td_config_usage(stdout, argv[0]);
        return 0;
    }
    if (action == TD_CONFIG_VERSION) {
        printf("tinyd %s\n", PACKAGE_VERSION);
        return 0;
    }
    if (stat(cfg.models_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "tinyd: the models directory %s does not exist\n",
                cfg.models_dir);
        return 2;
    }
    if (make_dirs(cfg.state_dir) != 0) {
        fprintf(stderr, "tinyd: cannot create the state directory %s: %s\n",
                cfg.state_dir, strerror(errno));
        return 2;
    }
    /* Parallelism comes from the libuv pool; BLAS inside a worker stays on
     * one thread so N workers never become N×M threads. --threads bounds
     * the forward passes of a model running at once; two more pool threads
     * parse requests, decode images and scan the repository meanwhile, so
     * a queue can form (and be bounded) while every worker computes. */
    snprintf(threads, sizeof threads, "%u", cfg.threads + 2);
    setenv("UV_THREADPOOL_SIZE", threads, 1);
    openblas_set_num_threads(1);

    srv = malloc(sizeof *srv);
    if (!srv) {
        fprintf(stderr, "tinyd: out of memory\n");
        return 1;
    }
    if (td_server_init(srv, &cfg, &err) != TD_OK) {
        fprintf(stderr, "tinyd: %s\n", err.msg);
        free(srv);
        return 1;
    }
    code = td_server_run(srv);
    td_server_free(srv);
    free(srv);
    return code;
}
