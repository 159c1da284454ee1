/* tinyd-oracle: build, inspect and query distance oracles offline.
 *
 *   tinyd-oracle build GRAPH --out FILE [--format F] [--mode M] [--eps E]
 *   tinyd-oracle info FILE
 *   tinyd-oracle query FILE SOURCE TARGET [--exact]
 *
 * The same code the daemon runs for submitted graphs; `make models` uses
 * it to build the bundled oracle. Exit status: 0 ok, 1 failure, 2 usage. */
#include "config.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "td_dijkstra.h"
#include "td_graph.h"
#include "td_graph_io.h"
#include "td_oracle.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tinyd-oracle build GRAPH --out FILE [--format auto|dimacs|"
            "edgelist|json]\n"
            "                          [--mode labels|treecover] [--eps E]\n"
            "       tinyd-oracle info FILE\n"
            "       tinyd-oracle query FILE SOURCE TARGET [--exact]\n"
            "GRAPH may be gzipped. DIMACS vertices are numbered from 1, edge "
            "lists and JSON\nfrom 0; queries use the numbering of the file "
            "the oracle was built from.\n");
}

static void on_progress(void *ctx, double fraction, const char *phase)
{
    int *last = ctx;
    int pct = (int)(fraction * 100);
    if (pct != *last) {
        *last = pct;
        fprintf(stderr, "\r%3d%% %-40s", pct, phase ? phase : "");
        fflush(stderr);
    }
}

static int cmd_build(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *format = "auto", *mode = "labels";
    double eps = 0.1;
    td_graph_read_opts ropts;
    td_oracle_params p;
    td_edgelist el;
    td_graph g;
    td_oracle o;
    td_error err;
    int i, last = -1, fmt;
    uint32_t id_base;
    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            out = argv[++i];
        else if (strcmp(argv[i], "--format") == 0 && i + 1 < argc)
            format = argv[++i];
        else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc)
            mode = argv[++i];
        else if (strcmp(argv[i], "--eps") == 0 && i + 1 < argc) {
            char *end;
            eps = strtod(argv[++i], &end);
            if (*end || !(eps > 0) || eps > 1) {
                fprintf(stderr, "tinyd-oracle: --eps must be in (0, 1], got "
                                "\"%s\"\n",
                        argv[i]);
                return 2;
            }
        } else if (argv[i][0] != '-' && !in)
            in = argv[i];
        else {
            fprintf(stderr, "tinyd-oracle: unexpected argument \"%s\"\n",
                    argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!in || !out) {
        usage(stderr);
        return 2;
    }
    fmt = td_graph_format_parse(format);
    if (fmt < 0 || td_oracle_mode_parse(mode) < 0) {
        fprintf(stderr, "tinyd-oracle: unknown %s \"%s\"\n",
                fmt < 0 ? "format" : "mode", fmt < 0 ? format : mode);
        return 2;
    }
    memset(&ropts, 0, sizeof ropts);
    ropts.format = (td_graph_format)fmt;
    td_edgelist_init(&el);
    if (td_graph_read_file(in, &ropts, &el, &err) != TD_OK) {
        fprintf(stderr, "tinyd-oracle: %s\n", err.msg);
        td_edgelist_free(&el);
        return 1;
    }
    id_base = el.id_base;
    if (td_graph_build(&el, 0, &g, &err) != TD_OK) {
        fprintf(stderr, "tinyd-oracle: %s\n", err.msg);
        td_edgelist_free(&el);
        return 1;
    }
    td_edgelist_free(&el);
    td_oracle_params_default(&p);
    p.mode = (td_oracle_mode)td_oracle_mode_parse(mode);
    p.eps = eps;
    if (isatty(2)) {
        p.progress = on_progress;
        p.progress_ctx = &last;
    }
    if (td_oracle_build(&g, &p, &o, &err) != TD_OK) {
        fprintf(stderr, "\ntinyd-oracle: %s\n", err.msg);
        td_graph_free(&g);
        return 1;
    }
    o.id_base = id_base;
    if (isatty(2))
        fprintf(stderr, "\n");
    if (td_oracle_save(&o, out, &err) != TD_OK) {
        fprintf(stderr, "tinyd-oracle: %s\n", err.msg);
        td_oracle_free(&o);
        td_graph_free(&g);
        return 1;
    }
    printf("%s: %u nodes, %llu edges, mode %s, eps %g, %zu bytes, built in "
           "%.2f s\n",
           out, g.n, (unsigned long long)td_graph_edges(&g),
           td_oracle_mode_name(o.mode), o.eps, td_oracle_bytes(&o),
           o.stats.build_seconds);
    td_oracle_free(&o);
    td_graph_free(&g);
    return 0;
}

static int cmd_info(int argc, char **argv)
{
    td_oracle o;
    td_error err;
    if (argc != 1) {
        usage(stderr);
        return 2;
    }
    if (td_oracle_load(argv[0], &o, &err) != TD_OK) {
        fprintf(stderr, "tinyd-oracle: %s\n", err.msg);
        return 1;
    }
    printf("file       %s\nmode       %s\neps        %g\nfactor     %g\n"
           "nodes      %u (numbered from %u)\nedges      %llu\n"
           "bytes      %zu\nbuild      %.2f s\n",
           argv[0], td_oracle_mode_name(o.mode), o.eps, o.factor, o.g.n,
           o.id_base, (unsigned long long)td_graph_edges(&o.g),
           td_oracle_bytes(&o), o.stats.build_seconds);
    td_oracle_free(&o);
    return 0;
}

static int parse_id(const char *s, long long *out)
{
    char *end;
    *out = strtoll(s, &end, 10);
    return *s && !*end ? 0 : -1;
}

static int cmd_query(int argc, char **argv)
{
    td_oracle o;
    td_error err;
    long long s, t;
    int exact = argc == 4 && strcmp(argv[3], "--exact") == 0;
    double dist, factor = 1;
    td_status st;
    if ((argc != 3 && !exact) || parse_id(argv[1], &s) || parse_id(argv[2], &t)) {
        usage(stderr);
        return 2;
    }
    if (td_oracle_load(argv[0], &o, &err) != TD_OK) {
        fprintf(stderr, "tinyd-oracle: %s\n", err.msg);
        return 1;
    }
    s -= o.id_base;
    t -= o.id_base;
    if (s < 0 || t < 0 || s >= (long long)o.g.n || t >= (long long)o.g.n) {
        fprintf(stderr, "tinyd-oracle: ids run from %u to %llu\n", o.id_base,
                (unsigned long long)o.g.n + o.id_base - 1);
        td_oracle_free(&o);
        return 1;
    }
    if (exact) {
        td_dijkstra_ws ws;
        st = td_dijkstra_ws_init(&ws, o.g.n, &err);
        if (st == TD_OK) {
            st = td_oracle_query_exact(&o, &ws, (uint32_t)s, (uint32_t)t,
                                       &dist, &err);
            td_dijkstra_ws_free(&ws);
        }
    } else {
        st = td_oracle_query(&o, (uint32_t)s, (uint32_t)t, &dist, &factor,
                             &err);
    }
    td_oracle_free(&o);
    if (st != TD_OK) {
        fprintf(stderr, "tinyd-oracle: %s\n", err.msg);
        return 1;
    }
    if (isinf(dist))
        printf("no path\n");
    else
        printf("%.17g (within x%g)\n", dist, factor);
    return 0;
}

int main(int argc, char **argv)
{
    /* Past RLIMIT_FSIZE, fail the write with EFBIG and say so (the previous
     * output stays) instead of dying silently of SIGXFSZ. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "build") == 0)
        return cmd_build(argc - 2, argv + 2);
    if (strcmp(argv[1], "info") == 0)
        return cmd_info(argc - 2, argv + 2);
    if (strcmp(argv[1], "query") == 0)
        return cmd_query(argc - 2, argv + 2);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "tinyd-oracle: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
