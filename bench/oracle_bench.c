/* oracle_bench: build time, size, query latency and stretch of the distance
 * oracles on real graphs, next to Dijkstra and bidirectional Dijkstra.
 *
 *   bench/oracle_bench [--eps 0.25,0.1] [--modes labels,treecover]
 *                      [--pairs 2000] [--queries 100000] [--trees 16]
 *                      [--ancestor-branches 0|1]
 *                      [--seed 1] GRAPH...
 *
 * For each graph (any td_graph_io format) and each mode/eps: build seconds,
 * peak RSS, oracle bytes and bytes per vertex, label entries per vertex,
 * hierarchy depth; oracle query median/p99 ns over --queries random pairs
 * (one thread, timer overhead included, about 20 ns); stretch max/p99/mean
 * over --pairs random connected pairs against exact bidirectional Dijkstra;
 * exact=true (Dijkstra pruned by the oracle's bound) latency. Dijkstra and
 * bidirectional Dijkstra latencies are measured once per graph on the same
 * pairs. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "td_dijkstra.h"
#include "td_graph.h"
#include "td_graph_io.h"
#include "td_oracle.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t rng = 1;
static uint32_t rnd(uint32_t n)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)((rng >> 33) % n);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, size_t n, double p)
{
    if (!n)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static void progress(void *ctx, double f, const char *phase)
{
    int *last = ctx;
    int pc = (int)(f * 100);
    if (pc / 10 != *last / 10 || f >= 1) {
        fprintf(stderr, "\r  build %3d%% %-14s", pc, phase);
        *last = pc;
    }
    if (f >= 1)
        fprintf(stderr, "\n");
}

int main(int argc, char **argv)
{
    const char *eps_list = "0.25,0.1", *modes = "labels";
    uint32_t pairs = 2000, queries = 100000, trees = 16;
    int anc = -1; /* -1: the oracle's default */
    int first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        if (first + 1 >= argc)
            break;
        if (strcmp(argv[first], "--eps") == 0)
            eps_list = argv[++first];
        else if (strcmp(argv[first], "--modes") == 0)
            modes = argv[++first];
        else if (strcmp(argv[first], "--pairs") == 0)
            pairs = (uint32_t)atol(argv[++first]);
        else if (strcmp(argv[first], "--ancestor-branches") == 0)
            anc = atoi(argv[++first]);
        else if (strcmp(argv[first], "--trees") == 0)
            trees = (uint32_t)atol(argv[++first]);
        else if (strcmp(argv[first], "--queries") == 0)
            queries = (uint32_t)atol(argv[++first]);
        else if (strcmp(argv[first], "--seed") == 0)
            rng = (uint64_t)atoll(argv[++first]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[first]);
            return 2;
        }
    }
    if (first >= argc) {
        fprintf(stderr, "usage: %s [--eps 0.25,0.1] [--modes labels] "
                "[--pairs N] [--queries N] [--trees K] [--seed S] "
                "GRAPH...\n", argv[0]);
        return 2;
    }
    for (int gi = first; gi < argc; gi++) {
        td_edgelist el;
        td_graph g;
        td_error err;
        td_dijkstra_ws ws;
        double t0 = now();
        if (td_graph_read_file(argv[gi], NULL, &el, &err) != TD_OK ||
            td_graph_build(&el, 0, &g, &err) != TD_OK) {
            fprintf(stderr, "%s: %s\n", argv[gi], err.msg);
            return 1;
        }
        td_edgelist_free(&el);
        double t_load = now() - t0;
        printf("\n== %s: %u vertices, %llu edges, loaded in %.2f s\n",
               argv[gi], (unsigned)g.n, (unsigned long long)td_graph_edges(&g),
               t_load);
        if (td_dijkstra_ws_init(&ws, g.n, &err) != TD_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        /* Fixed random pairs with their exact distances. */
        uint32_t *pu = malloc(pairs * sizeof *pu), *pv = malloc(pairs * 4);
        double *pd = malloc(pairs * sizeof *pd);
        double *lat = malloc((queries > pairs ? queries : pairs) * 8);
        double *lat2 = malloc(pairs * sizeof *lat2);
        for (uint32_t k = 0; k < pairs; k++) {
            pu[k] = rnd(g.n);
            pv[k] = rnd(g.n);
            double a = now();
            pd[k] = td_bidijkstra(&g, &ws, pu[k], pv[k], INFINITY);
            lat[k] = (now() - a) * 1e9;
        }
        uint32_t nd = pairs < 300 ? pairs : 300;
        for (uint32_t k = 0; k < nd; k++) {
            double a = now();
            double d = td_dijkstra_pair(&g, &ws, pu[k], pv[k]);
            lat2[k] = (now() - a) * 1e9;
            if (d != pd[k]) {
                fprintf(stderr, "dijkstra disagrees on %u-%u\n", pu[k],
                        pv[k]);
                return 1;
            }
        }
        printf("dijkstra        median %10.0f ns  p99 %10.0f ns  (%u pairs)\n",
               pct(lat2, nd, 0.5), pct(lat2, nd, 0.99), nd);
        printf("bidijkstra      median %10.0f ns  p99 %10.0f ns  (%u pairs)\n",
               pct(lat, pairs, 0.5), pct(lat, pairs, 0.99), pairs);
        fflush(stdout);

        char mbuf[256], ebuf[256];
        snprintf(mbuf, sizeof mbuf, "%s", modes);
        for (char *ms = strtok(mbuf, ","); ms; ms = strtok(NULL, ",")) {
            int mode = td_oracle_mode_parse(ms);
            if (mode < 0) {
                fprintf(stderr, "unknown mode %s\n", ms);
                return 2;
            }
            snprintf(ebuf, sizeof ebuf, "%s", eps_list);
            char *save = NULL;
            for (char *es = strtok_r(ebuf, ",", &save); es;
                 es = strtok_r(NULL, ",", &save)) {
                td_oracle_params p;
                td_oracle o;
                int last = -100;
                td_oracle_params_default(&p);
                p.mode = (td_oracle_mode)mode;
                p.eps = atof(es);
                p.max_trees = trees;
                if (anc >= 0)
                    p.ancestor_branches = anc;
                p.progress = progress;
                p.progress_ctx = &last;
                double cpu0 = cpu_seconds();
                if (td_oracle_build(&g, &p, &o, &err) != TD_OK) {
                    fprintf(stderr, "build %s eps %s: %s\n", ms, es, err.msg);
                    continue;
                }
                double cpu = cpu_seconds() - cpu0;
                size_t bytes = td_oracle_bytes(&o);
                size_t gbytes = td_graph_bytes(&g);
                printf("%-9s eps %-5s build %7.2f s (CPU %.2f s)  peak RSS "
                       "%7.0f MiB  oracle %8.1f MiB (%6.0f B/vertex, %6.0f "
                       "without the graph)\n", ms, es, o.stats.build_seconds,
                       cpu,
                       peak_rss_mib(), (double)bytes / 1048576.0,
                       (double)bytes / g.n, (double)(bytes - gbytes) / g.n);
                if (o.mode == TD_ORACLE_LABELS)
                    printf("          factor %.4f  supernodes %u  branches %u "
                           " depth max %u mean %.1f  max|A| %u  "
                           "entries/vertex %.1f (max %u)  settled %.3g\n",
                           o.factor, o.stats.supernodes, o.stats.branches,
                           o.stats.max_depth, o.stats.mean_depth,
                           o.stats.max_ancestors,
                           (double)o.stats.label_entries / g.n,
                           o.stats.max_label,
                           (double)o.stats.dijkstra_settled);
                else
                    printf("          factor %.4f  scales %u  trees %u  "
                           "tree vertices/vertex %.1f  pieces %llu dropped "
                           "%llu  max tau/L %.4f  top-scale hops max %u "
                           "(ratio to ceil(d/eps L) %.1f)  settled %.3g\n",
                           o.factor, o.stats.scales, o.stats.trees,
                           (double)o.stats.tree_vertices / g.n,
                           (unsigned long long)o.stats.pieces,
                           (unsigned long long)o.stats.pieces_dropped,
                           o.stats.max_tau_over_L, o.stats.max_cluster_hops,
                           o.stats.max_hops_ratio,
                           (double)o.stats.dijkstra_settled);
                /* Latency of the approximate query. */
                double sink = 0;
                for (uint32_t k = 0; k < queries; k++) {
                    uint32_t u = rnd(g.n), v = rnd(g.n);
                    double a = now(), d;
                    td_oracle_query(&o, u, v, &d, NULL, &err);
                    lat[k] = (now() - a) * 1e9;
                    sink += isfinite(d) ? d : 0;
                }
                double q50 = pct(lat, queries, 0.5);
                double q99 = pct(lat, queries, 0.99);
                /* Stretch against exact distances; exact=true latency. */
                double *st = malloc(pairs * sizeof *st), mean = 0;
                uint32_t ns = 0, bad = 0;
                for (uint32_t k = 0; k < pairs; k++) {
                    double d, ex;
                    td_oracle_query(&o, pu[k], pv[k], &d, NULL, &err);
                    double a = now();
                    td_oracle_query_exact(&o, &ws, pu[k], pv[k], &ex, &err);
                    lat2[k] = (now() - a) * 1e9;
                    if (ex != pd[k] && !(isinf(ex) && isinf(pd[k])))
                        bad++;
                    if (d < pd[k])
                        bad++;
                    if (pd[k] > 0 && isfinite(pd[k])) {
                        st[ns] = d / pd[k];
                        mean += st[ns++];
                    }
                }
                double smax = ns ? pct(st, ns, 1.0) : NAN;
                printf("          query median %6.0f ns  p99 %6.0f ns   "
                       "stretch max %.4f p99 %.4f mean %.4f (%u pairs)  "
                       "exact=true median %8.0f ns%s\n", q50, q99, smax,
                       pct(st, ns, 0.99), ns ? mean / ns : NAN, ns,
                       pct(lat2, pairs, 0.5),
                       bad ? "  ERRORS: wrong answers" : "");
                if (sink < 0)
                    printf("(sink)\n");
                free(st);
                td_oracle_free(&o);
                fflush(stdout);
            }
        }
        free(pu);
        free(pv);
        free(pd);
        free(lat);
        free(lat2);
        td_dijkstra_ws_free(&ws);
        td_graph_free(&g);
    }
    return 0;
}
