/* Unit tests for td_graph, td_graph_io and td_dijkstra. */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "td_dijkstra.h"
#include "td_graph.h"
#include "td_graph_io.h"
#include "td_test_roads.h"

/* Parse text with an explicit format and build an undirected graph. */
static td_status parse_build(const char *text, td_graph_format f,
                             td_graph *g, td_error *err)
{
    td_graph_read_opts o = {f, 0, 0, 0};
    td_edgelist el;
    td_status st = td_graph_parse(text, strlen(text), "t", &o, &el, err);
    if (st != TD_OK)
        return st;
    st = td_graph_build(&el, 0, g, err);
    td_edgelist_free(&el);
    return st;
}

static double edge_weight(const td_graph *g, uint32_t u, uint32_t v)
{
    for (uint64_t e = g->off[u]; e < g->off[u + 1]; e++)
        if (g->adj[e] == v)
            return g->w[e];
    return -1;
}

START_TEST(test_symmetrise_min_weight_and_self_loops)
{
    const char *gr = "c test\np sp 4 6\na 1 2 5\na 2 1 3\na 1 2 7\n"
                     "a 3 3 1\na 3 4 2.5\na 2 3 1\n";
    td_graph g;
    td_error err;
    ck_assert_int_eq(parse_build(gr, TD_GFMT_DIMACS, &g, &err), TD_OK);
    ck_assert_uint_eq(g.n, 4);
    ck_assert_uint_eq(td_graph_edges(&g), 3); /* {1,2} {2,3} {3,4} */
    ck_assert(edge_weight(&g, 0, 1) == 3 && edge_weight(&g, 1, 0) == 3);
    ck_assert(edge_weight(&g, 2, 3) == 2.5 && edge_weight(&g, 3, 2) == 2.5);
    ck_assert(edge_weight(&g, 2, 2) < 0); /* self-loop dropped */
    for (uint32_t v = 0; v < g.n; v++)
        for (uint64_t e = g.off[v] + 1; e < g.off[v + 1]; e++)
            ck_assert_uint_lt(g.adj[e - 1], g.adj[e]);
    ck_assert(g.w_min_pos == 1 && g.w_max == 3);
    td_graph_free(&g);
}
END_TEST

START_TEST(test_three_formats_agree)
{
    const char *gr = "p sp 3 2\na 1 2 4\na 2 3 6\n";
    const char *el = "# comment\n0 1 4\n\n% other comment\n1 2 6\n";
    const char *js = "{\"nodes\": 3, \"edges\": [[0, 1, 4], [1, 2, 6.0]]}";
    td_graph a, b, c;
    td_error err;
    ck_assert_int_eq(parse_build(gr, TD_GFMT_AUTO, &a, &err), TD_OK);
    ck_assert_int_eq(parse_build(el, TD_GFMT_AUTO, &b, &err), TD_OK);
    ck_assert_int_eq(parse_build(js, TD_GFMT_AUTO, &c, &err), TD_OK);
    ck_assert_uint_eq(a.n, 3);
    ck_assert_uint_eq(b.n, 3);
    ck_assert_uint_eq(c.n, 3);
    ck_assert_uint_eq(a.n_arcs, 4);
    ck_assert_mem_eq(a.adj, b.adj, 4 * sizeof *a.adj);
    ck_assert_mem_eq(a.adj, c.adj, 4 * sizeof *a.adj);
    ck_assert_mem_eq(a.w, b.w, 4 * sizeof *a.w);
    ck_assert_mem_eq(a.w, c.w, 4 * sizeof *a.w);
    td_graph_free(&a);
    td_graph_free(&b);
    td_graph_free(&c);
}
END_TEST

/* Each parser error class: the status and the line (or edge) named. */
static void expect_error(const char *text, td_graph_format f, td_status want,
                         const char *needle)
{
    td_graph_read_opts o = {f, 0, 0, 0};
    td_edgelist el;
    td_error err;
    td_status st = td_graph_parse(text, strlen(text), "in", &o, &el, &err);
    ck_assert_msg(st == want, "status %d want %d for <%s>: %s", st, want,
                  text, err.msg);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'",
                  err.msg, needle);
}

START_TEST(test_parser_errors)
{
    expect_error("p sp 2 1\na 1 3 5\n", TD_GFMT_DIMACS, TD_EFORMAT,
                 "line 2: vertex id 3 out of range");
    expect_error("p sp 2 1\na 0 1 5\n", TD_GFMT_DIMACS, TD_EFORMAT,
                 "line 2: vertex id 0");
    expect_error("p sp 2 1\na 1 2 -5\n", TD_GFMT_DIMACS, TD_EFORMAT,
                 "line 2: negative weight");
    expect_error("p sp 2 1\nc x\na 1 2 nan\n", TD_GFMT_DIMACS, TD_EFORMAT,
                 "line 3: weight is not finite");
    expect_error("p sp 2 1\na 1 2 inf\n", TD_GFMT_DIMACS, TD_EFORMAT,
                 "not finite");
    expect_error("p sp 2 2\na 1 2 5\n", TD_GFMT_DIMACS, TD_EFORMAT,
                 "1 arcs read but line 1 declares 2");
    expect_error("p sp 2 1\na 1 2 5\na 2 1 5\n", TD_GFMT_DIMACS, TD_EFORMAT,
                 "line 3: more arcs than the 1 declared on line 1");
    expect_error("p sp 2 1\na 1 2\n", TD_GFMT_DIMACS, TD_EFORMAT,
                 "line 2: expected 'a TAIL HEAD WEIGHT'");
    expect_error("a 1 2 3\n", TD_GFMT_DIMACS, TD_EFORMAT,
                 "line 1: arc before the 'p sp' line");
    expect_error("p sp x y\n", TD_GFMT_DIMACS, TD_EFORMAT, "line 1");
    expect_error("c only\n", TD_GFMT_DIMACS, TD_EFORMAT, "no 'p sp");
    expect_error("p sp 2 1\nq 1 2 3\n", TD_GFMT_DIMACS, TD_EFORMAT,
                 "line 2: unexpected line");
    expect_error("0 1 2\n1 x 2\n", TD_GFMT_EDGELIST, TD_EFORMAT,
                 "line 2: expected 'U V [W]'");
    expect_error("0 1 2\n-1 0 2\n", TD_GFMT_EDGELIST, TD_EFORMAT, "line 2");
    expect_error("0 1 -2\n", TD_GFMT_EDGELIST, TD_EFORMAT,
                 "line 1: negative weight");
    expect_error("0 1 2 9\n", TD_GFMT_EDGELIST, TD_EFORMAT,
                 "line 1: malformed weight");
    expect_error("{\"nodes\": 2, \"edges\": [[0, 1, 1], [0, 2, 1]]}",
                 TD_GFMT_JSON, TD_EFORMAT, "edges[1]: vertex id 2 out of "
                 "range");
    expect_error("{\"nodes\": 2, \"edges\": [[0, 1, -1]]}", TD_GFMT_JSON,
                 TD_EFORMAT, "edges[0]: weight -1");
    expect_error("{\"nodes\": 2, \"edges\": [[0, \"a\"]]}", TD_GFMT_JSON,
                 TD_EFORMAT, "edges[0] must be");
    expect_error("{\"nodes\": 2, \"edges\": [[0, 1]", TD_GFMT_JSON,
                 TD_EFORMAT, "invalid JSON");
    expect_error("{\"edges\": []}", TD_GFMT_JSON, TD_EFORMAT, "\"nodes\"");
}
END_TEST

START_TEST(test_size_limits)
{
    td_graph_read_opts o = {TD_GFMT_AUTO, 10, 2, 0};
    td_edgelist el;
    td_error err;
    const char *big = "p sp 11 1\na 1 2 1\n";
    const char *many = "p sp 3 3\na 1 2 1\na 2 3 1\na 3 1 1\n";
    ck_assert_int_eq(td_graph_parse(big, strlen(big), "g.gr", &o, &el, &err),
                     TD_ETOOBIG);
    ck_assert_int_eq(td_graph_parse(many, strlen(many), "g.gr", &o, &el,
                                    &err), TD_ETOOBIG);
    ck_assert_int_eq(td_graph_parse("0 11 1\n", 7, "g.txt", &o, &el, &err),
                     TD_ETOOBIG);
    o.max_bytes = 5;
    ck_assert_int_eq(td_graph_parse(many, strlen(many), "g.gr", &o, &el,
                                    &err), TD_ETOOBIG);
}
END_TEST

static unsigned char *gzip_bytes(const char *text, size_t *len)
{
    z_stream zs;
    size_t cap = strlen(text) + 128;
    unsigned char *out = malloc(cap);
    memset(&zs, 0, sizeof zs);
    ck_assert_int_eq(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8,
                                  Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (Bytef *)(uintptr_t)text;
    zs.avail_in = (uInt)strlen(text);
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    ck_assert_int_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *len = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

START_TEST(test_gzip_detected_by_magic)
{
    const char *js = "{\"nodes\": 3, \"edges\": [[0, 1, 4], [1, 2, 6]]}";
    size_t len;
    unsigned char *gz = gzip_bytes(js, &len);
    td_edgelist el;
    td_error err;
    ck_assert_uint_eq(gz[0], 0x1f);
    ck_assert_int_eq(td_graph_parse(gz, len, "upload", NULL, &el, &err),
                     TD_OK);
    ck_assert_uint_eq(el.n, 3);
    ck_assert_uint_eq(el.m, 2);
    ck_assert(el.w[1] == 6);
    td_edgelist_free(&el);
    /* Truncated gzip is an error, not a short graph. */
    ck_assert_int_eq(td_graph_parse(gz, len / 2, "upload", NULL, &el, &err),
                     TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "gzip"));
    /* A decompression bomb is stopped by max_bytes. */
    td_graph_read_opts o = {TD_GFMT_AUTO, 0, 0, 20};
    ck_assert_int_eq(td_graph_parse(gz, len, "upload", &o, &el, &err),
                     TD_ETOOBIG);
    free(gz);
}
END_TEST

START_TEST(test_coords_file)
{
    char dir[] = "/tmp/td_graph_XXXXXX", path[128];
    double *x, *y;
    td_error err;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/g.co", dir);
    FILE *fp = fopen(path, "w");
    fputs("c coords\np aux sp co 3\nv 1 10 20\nv 3 -5 7.5\n", fp);
    fclose(fp);
    ck_assert_int_eq(td_graph_read_coords(path, 3, &x, &y, &err), TD_OK);
    ck_assert(x[0] == 10 && y[0] == 20 && isnan(x[1]) && y[2] == 7.5);
    free(x);
    free(y);
    ck_assert_int_eq(td_graph_read_coords(path, 2, &x, &y, &err),
                     TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "line 4"));
    unlink(path);
    rmdir(dir);
}
END_TEST

/* Random graph with a few components; exact distances by Floyd-Warshall. */
static void random_graph(uint32_t n, uint32_t m, unsigned seed, td_graph *g)
{
    td_edgelist el;
    td_error err;
    td_edgelist_init(&el);
    el.n = n;
    srand(seed);
    for (uint32_t i = 0; i < m; i++) {
        uint32_t u = (uint32_t)rand() % n, v = (uint32_t)rand() % n;
        /* Keep vertices n-3.. isolated-ish: only edges among themselves. */
        if ((u >= n - 3) != (v >= n - 3))
            continue;
        ck_assert_int_eq(td_edgelist_push(&el, u, v, 1 + rand() % 20, &err),
                         TD_OK);
    }
    ck_assert_int_eq(td_graph_build(&el, 0, g, &err), TD_OK);
    td_edgelist_free(&el);
}

/* A valid lower bound for td_bidijkstra_lb: true distance / 1.5. */
static const double *lb_matrix;
static uint32_t lb_n;
static double lb_from_matrix(const void *ctx, uint32_t v, uint32_t t)
{
    (void)ctx;
    return lb_matrix[v * lb_n + t] / 1.5;
}

START_TEST(test_dijkstra_matches_floyd_warshall)
{
    const uint32_t n = 60;
    td_graph g;
    td_dijkstra_ws ws;
    td_error err;
    double *D = malloc(n * n * sizeof *D);
    random_graph(n, 110, 7, &g);
    for (uint32_t i = 0; i < n * n; i++)
        D[i] = (i / n == i % n) ? 0 : INFINITY;
    for (uint32_t v = 0; v < n; v++)
        for (uint64_t e = g.off[v]; e < g.off[v + 1]; e++)
            D[v * n + g.adj[e]] = fmin(D[v * n + g.adj[e]], g.w[e]);
    for (uint32_t k = 0; k < n; k++)
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < n; j++)
                if (D[i * n + k] + D[k * n + j] < D[i * n + j])
                    D[i * n + j] = D[i * n + k] + D[k * n + j];
    ck_assert_int_eq(td_dijkstra_ws_init(&ws, n, &err), TD_OK);
    for (uint32_t s = 0; s < n; s++) {
        td_dijkstra_run(&g, &ws, &s, NULL, 1, INFINITY, NULL, 0);
        for (uint32_t t = 0; t < n; t++)
            ck_assert_msg(td_dijkstra_dist(&ws, t) == D[s * n + t],
                          "s %u t %u", s, t);
        for (uint32_t t = 0; t < n; t++) {
            double d = D[s * n + t];
            ck_assert(td_dijkstra_pair(&g, &ws, s, t) == d);
            ck_assert(td_bidijkstra(&g, &ws, s, t, INFINITY) == d);
            /* A bound that is a real walk length keeps the answer exact;
             * a bound below d is returned as is (documented min). */
            if (isfinite(d)) {
                lb_matrix = D;
                lb_n = n;
                ck_assert(td_bidijkstra_lb(&g, &ws, s, t, d * 1.5 + 1,
                                           lb_from_matrix, NULL) == d);
                ck_assert(td_bidijkstra(&g, &ws, s, t, d) == d);
                ck_assert(td_bidijkstra(&g, &ws, s, t, d * 1.5 + 1) == d);
                if (d > 0)
                    ck_assert(td_bidijkstra(&g, &ws, s, t, d / 2) == d / 2);
            }
        }
    }
    /* Limited multi-source search with a filter. */
    uint32_t *mark = calloc(n, sizeof *mark), src[2] = {0, 1};
    mark[5] = 1;
    td_dijkstra_run(&g, &ws, src, NULL, 2, 10, mark, 0);
    ck_assert(isinf(td_dijkstra_dist(&ws, 5)));
    for (uint32_t i = 0; i < ws.side[0].n_settled; i++)
        ck_assert(ws.side[0].dist[ws.side[0].settled[i]] <= 10);
    free(mark);
    free(D);
    td_dijkstra_ws_free(&ws);
    td_graph_free(&g);
}
END_TEST

START_TEST(test_rome99_counts_and_published_distance)
{
    char dirbuf[512], path[600];
    td_edgelist el;
    td_graph und, dir;
    td_dijkstra_ws ws;
    td_error err;
    snprintf(path, sizeof path, "%s/rome99.gr",
             roads_dir(dirbuf, sizeof dirbuf));
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "# SKIP rome99: %s not found (set TD_ROADS_DIR)\n",
                path);
        return;
    }
    ck_assert_int_eq(td_graph_read_file(path, NULL, &el, &err), TD_OK);
    ck_assert_uint_eq(el.n, 3353);
    ck_assert_uint_eq(el.m, 8870);
    ck_assert_int_eq(td_graph_build(&el, 0, &und, &err), TD_OK);
    ck_assert_int_eq(td_graph_build(&el, 1, &dir, &err), TD_OK);
    td_edgelist_free(&el);
    ck_assert_uint_eq(td_graph_edges(&und), 4831); /* README figure */
    uint32_t *comp = malloc(und.n * sizeof *comp), nc;
    ck_assert_int_eq(td_graph_components(&und, comp, &nc, &err), TD_OK);
    ck_assert_uint_eq(nc, 1);
    free(comp);
    ck_assert_int_eq(td_dijkstra_ws_init(&ws, und.n, &err), TD_OK);
    /* Published directed distance 47 -> 3117 (1-based ids). */
    ck_assert(td_dijkstra_pair(&dir, &ws, 46, 3116) == 36042);
    /* Undirected can only be shorter; both searches agree. */
    double d = td_dijkstra_pair(&und, &ws, 46, 3116);
    ck_assert(d <= 36042);
    ck_assert(td_bidijkstra(&und, &ws, 46, 3116, INFINITY) == d);
    td_dijkstra_ws_free(&ws);
    td_graph_free(&und);
    td_graph_free(&dir);
}
END_TEST

START_TEST(test_luxembourg_gzip_and_coords)
{
    char dirbuf[512], path[600], co[600];
    td_edgelist el;
    td_graph g;
    td_error err;
    double *x, *y;
    const char *dir = roads_dir(dirbuf, sizeof dirbuf);
    snprintf(path, sizeof path, "%s/luxembourg.gr.gz", dir);
    snprintf(co, sizeof co, "%s/luxembourg.co.gz", dir);
    if (access(path, R_OK) != 0 || access(co, R_OK) != 0) {
        fprintf(stderr, "# SKIP luxembourg: %s not found\n", path);
        return;
    }
    ck_assert_int_eq(td_graph_read_file(path, NULL, &el, &err), TD_OK);
    ck_assert_uint_eq(el.n, 114599);
    ck_assert_uint_eq(el.m, 239332);
    ck_assert_int_eq(td_graph_build(&el, 0, &g, &err), TD_OK);
    td_edgelist_free(&el);
    ck_assert_uint_eq(td_graph_edges(&g), 119666); /* README figure */
    ck_assert_int_eq(td_graph_read_coords(co, g.n, &x, &y, &err), TD_OK);
    for (uint32_t v = 0; v < g.n; v++)
        ck_assert(isfinite(x[v]) && isfinite(y[v]));
    free(x);
    free(y);
    td_graph_free(&g);
}
END_TEST

static Suite *graph_suite(void)
{
    Suite *s = suite_create("graph");
    TCase *tc = tcase_create("graph");
    tcase_add_test(tc, test_symmetrise_min_weight_and_self_loops);
    tcase_add_test(tc, test_three_formats_agree);
    tcase_add_test(tc, test_parser_errors);
    tcase_add_test(tc, test_size_limits);
    tcase_add_test(tc, test_gzip_detected_by_magic);
    tcase_add_test(tc, test_coords_file);
    tcase_add_test(tc, test_dijkstra_matches_floyd_warshall);
    tcase_add_test(tc, test_rome99_counts_and_published_distance);
    tcase_add_test(tc, test_luxembourg_gzip_and_coords);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(graph_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
