/* The body shared by fuzz_graph_dimacs.c, fuzz_graph_edgelist.c and
 * fuzz_graph_json.c (they differ in the forced format, corpus and
 * dictionary): td_graph_parse under small limits, then td_graph_build of
 * whatever was accepted, undirected and directed.
 * Properties: no crash, no leak, no over-read (ASan/UBSan); a refusal
 * carries a message and leaves the edge list empty; an accepted edge list
 * respects the limits, holds only valid arcs (so td_graph_build never
 * refuses it), and every non-loop arc is in the built graph with at most
 * its weight; a plain input and the same bytes gzip-compressed parse to
 * the same result (gzip seeds reach the inflate path directly). */
#ifndef GRAPH_FUZZ_H
#define GRAPH_FUZZ_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "td_graph.h"
#include "td_graph_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                            \
    do {                                                                    \
        if (!(c))                                                           \
            __builtin_trap();                                               \
    } while (0)

/* Small enough that no input can make a large allocation: the CSR offsets
 * are 8 bytes a vertex, and a gzip bomb stops at max_bytes. */
#define FUZZ_GRAPH_MAX_NODES 4096
#define FUZZ_GRAPH_MAX_ARCS 4096
#define FUZZ_GRAPH_MAX_BYTES ((size_t)1 << 20)

/* Weight of arc u->v in g (row u), or -1 when absent; rows are sorted. */
static double fuzz_graph_arc(const td_graph *g, uint32_t u, uint32_t v)
{
    uint64_t lo = g->off[u], hi = g->off[u + 1];
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (g->adj[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < g->off[u + 1] && g->adj[lo] == v ? g->w[lo] : -1;
}

static void fuzz_graph_check_build(const td_edgelist *el, int directed)
{
    td_graph g;
    td_error err;
    size_t i;
    uint32_t v;
    CHECK(td_graph_build(el, directed, &g, &err) == TD_OK);
    CHECK(g.n == el->n && g.off[0] == 0 && g.off[g.n] == g.n_arcs);
    CHECK(directed || g.n_arcs % 2 == 0);
    CHECK(g.n_arcs <= (directed ? 1 : 2) * (uint64_t)el->m);
    for (v = 0; v < g.n; v++)
        for (uint64_t a = g.off[v]; a < g.off[v + 1]; a++) {
            CHECK(g.adj[a] < g.n && g.adj[a] != v);
            CHECK(a == g.off[v] || g.adj[a - 1] < g.adj[a]);
            CHECK(isfinite(g.w[a]) && g.w[a] >= 0);
            /* Undirected rows mirror each other with the same weight. */
            CHECK(directed || fuzz_graph_arc(&g, g.adj[a], v) == g.w[a]);
        }
    for (i = 0; i < el->m; i++) {
        double w;
        if (el->u[i] == el->v[i])
            continue;
        w = fuzz_graph_arc(&g, el->u[i], el->v[i]);
        CHECK(w >= 0 && w <= el->w[i]);
    }
    if (!directed && g.n > 0) {
        uint32_t *comp = malloc((size_t)g.n * sizeof *comp), count = 0;
        CHECK(comp);
        CHECK(td_graph_components(&g, comp, &count, &err) == TD_OK);
        CHECK(count >= 1 && count <= g.n);
        for (v = 0; v < g.n; v++)
            CHECK(comp[v] < count);
        free(comp);
    }
    td_graph_free(&g);
}

static td_status fuzz_graph_parse(const uint8_t *data, size_t size,
                                  td_graph_format fmt, td_edgelist *el,
                                  td_error *err)
{
    td_graph_read_opts o;
    td_status st;
    memset(&o, 0, sizeof o);
    o.format = fmt;
    o.max_nodes = FUZZ_GRAPH_MAX_NODES;
    o.max_arcs = FUZZ_GRAPH_MAX_ARCS;
    o.max_bytes = FUZZ_GRAPH_MAX_BYTES;
    st = td_graph_parse(data, size, "fuzz", &o, el, err);
    if (st != TD_OK) {
        CHECK(err->msg[0] && memchr(err->msg, '\0', sizeof err->msg));
        CHECK(el->m == 0 && el->u == NULL && el->v == NULL && el->w == NULL);
    }
    return st;
}

/* The same bytes gzip-compressed, malloc'd (NULL if zlib fails). */
static unsigned char *fuzz_gzip(const uint8_t *data, size_t size,
                                size_t *out_len)
{
    z_stream zs;
    unsigned char *out;
    size_t cap;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        return NULL;
    cap = deflateBound(&zs, (uLong)size) + 32; /* +32: the gzip wrapper */
    out = malloc(cap);
    CHECK(out);
    zs.next_in = (Bytef *)(uintptr_t)data;
    zs.avail_in = (uInt)size;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
        deflateEnd(&zs);
        free(out);
        return NULL;
    }
    *out_len = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

static int fuzz_graph_one(const uint8_t *data, size_t size,
                          td_graph_format fmt)
{
    td_edgelist el, el2;
    td_error err;
    td_status st;
    size_t i;
    int gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;

    st = fuzz_graph_parse(data, size, fmt, &el, &err);
    if (st == TD_OK) {
        CHECK(el.n <= FUZZ_GRAPH_MAX_NODES && el.m <= FUZZ_GRAPH_MAX_ARCS);
        CHECK(el.id_base == (fmt == TD_GFMT_DIMACS ? 1u : 0u));
        for (i = 0; i < el.m; i++)
            CHECK(el.u[i] < el.n && el.v[i] < el.n && isfinite(el.w[i]) &&
                  el.w[i] >= 0);
        fuzz_graph_check_build(&el, 0);
        fuzz_graph_check_build(&el, 1);
    }
    if (!gz && size <= FUZZ_GRAPH_MAX_BYTES) {
        size_t zlen = 0;
        unsigned char *z = fuzz_gzip(data, size, &zlen);
        td_error err2;
        CHECK(z);
        CHECK(fuzz_graph_parse(z, zlen, fmt, &el2, &err2) == st);
        free(z);
        if (st == TD_OK) {
            CHECK(el2.n == el.n && el2.m == el.m);
            CHECK(el.m == 0 ||
                  (memcmp(el.u, el2.u, el.m * sizeof *el.u) == 0 &&
                   memcmp(el.v, el2.v, el.m * sizeof *el.v) == 0 &&
                   memcmp(el.w, el2.w, el.m * sizeof *el.w) == 0));
        }
        td_edgelist_free(&el2);
    }
    td_edgelist_free(&el);
    return 0;
}

#endif
