/* bnn_mkrandom: write a random-weight BNN model file (kind "bnn") for tests
 * and benchmarks.
 *   bnn_mkrandom OUT [--arch JSON] [--seed N] [--flip PCT]
 * --flip PCT makes each block's channels near-copies of a few prototypes
 * (see bnn_random.h); the default (-1) draws independent channels. Prints
 * the model's statistics JSON. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn_random.h"
#include "td_bnn_model.h"

#define DEFAULT_ARCH                                                        \
    "{\"in_ch\":1,\"in_h\":28,\"in_w\":28,"                                 \
    "\"stem\":{\"cout\":32,\"k\":3,\"stride\":1,\"pad\":1},"                \
    "\"blocks\":[{\"cout\":64,\"k\":3,\"stride\":2,\"pad\":1},"             \
    "{\"cout\":64,\"k\":3,\"stride\":1,\"pad\":1},"                         \
    "{\"cout\":128,\"k\":3,\"stride\":2,\"pad\":1},"                        \
    "{\"cout\":128,\"k\":3,\"stride\":1,\"pad\":1}],\"classes\":10}"

int main(int argc, char **argv)
{
    const char *out = NULL, *arch_s = DEFAULT_ARCH;
    unsigned long long seed = 1;
    int flip = -1;
    td_bnn_arch arch;
    td_error err;
    bnn_random r;
    td_bnn_model *m;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--arch") && i + 1 < argc)
            arch_s = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--flip") && i + 1 < argc)
            flip = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !out)
            out = argv[i];
        else {
            fprintf(stderr, "usage: %s OUT [--arch JSON] [--seed N] "
                            "[--flip PCT]\n", argv[0]);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "usage: %s OUT [--arch JSON] [--seed N] [--flip PCT]\n",
                argv[0]);
        return 2;
    }
    if (td_bnn_arch_parse(arch_s, &arch, &err) != TD_OK) {
        fprintf(stderr, "bnn_mkrandom: %s\n", err.msg);
        return 1;
    }
    if (bnn_random_latent(&r, &arch, seed, flip)) {
        fprintf(stderr, "bnn_mkrandom: out of memory\n");
        return 1;
    }
    if (td_bnn_from_latent(&m, &r.lat, &err) != TD_OK ||
        td_bnn_save(m, out, &err) != TD_OK) {
        fprintf(stderr, "bnn_mkrandom: %s\n", err.msg);
        bnn_random_free(&r);
        return 1;
    }
    {
        json_t *s = td_bnn_stats_json(m);
        char *t = json_dumps(s, JSON_INDENT(1));
        if (t)
            puts(t);
        free(t);
        json_decref(s);
        td_bnn_stats_fprint(m, stderr);
    }
    td_bnn_free(m);
    bnn_random_free(&r);
    return 0;
}
