/* td_graph_io: read graphs from files or memory buffers into a td_edgelist.
 *
 * Formats (each may be gzip-compressed; detected by the 1f 8b magic bytes):
 *   DIMACS .gr  "c ..." comments, one "p sp N M" line, then M lines
 *               "a U V W" with 1-based ids 1..N. The arc count must match M.
 *   edge list   one "U V [W]" per line, 0-based ids, W defaults to 1; lines
 *               starting with '#' or '%' and blank lines are ignored. The
 *               vertex count is the largest id + 1.
 *   JSON        {"nodes": N, "edges": [[U, V, W], ...]} with 0-based ids;
 *               W may be omitted (1) and may be real.
 * The format is taken from the options, else from the file name (.gr, .json,
 * .txt/.el/.edges), else sniffed: '{' means JSON, a first line starting with
 * 'c ' or 'p ' means DIMACS, anything else an edge list.
 * Errors name the line (JSON: the edge index): ids out of range, negative or
 * non-finite weights, arc counts not matching the header, malformed lines.
 * Arcs are returned as read; td_graph_build symmetrises them.
 *
 * DIMACS coordinates (.co, "p aux sp co N", "v ID X Y") are read by
 * td_graph_read_coords into caller-freed arrays.
 *
 * Thread: any; no shared state. The caller owns the returned edge list. */
#ifndef TD_GRAPH_IO_H
#define TD_GRAPH_IO_H

#include <stddef.h>
#include <stdint.h>

#include "td_err.h"
#include "td_graph.h"

typedef enum td_graph_format {
    TD_GFMT_AUTO = 0,
    TD_GFMT_DIMACS,
    TD_GFMT_EDGELIST,
    TD_GFMT_JSON
} td_graph_format;

typedef struct td_graph_read_opts {
    td_graph_format format;
    uint64_t max_nodes;  /* 0: TD_GRAPH_MAX_NODES; more -> TD_ETOOBIG */
    uint64_t max_arcs;   /* 0: no limit; more -> TD_ETOOBIG */
    size_t max_bytes;    /* 0: 4 GiB; limit on (decompressed) input bytes */
} td_graph_read_opts;

/* "dimacs", "edgelist", "json", "auto"; NULL for unknown values. */
const char *td_graph_format_name(td_graph_format f);
/* Parse a name as above; returns -1 when unknown. */
int td_graph_format_parse(const char *s);

/* Parse a buffer (possibly gzip). opts may be NULL. name (may be NULL) is
 * used for format detection and error messages. */
td_status td_graph_parse(const void *buf, size_t len, const char *name,
                         const td_graph_read_opts *opts, td_edgelist *out,
                         td_error *err);
/* Read a file and parse it. */
td_status td_graph_read_file(const char *path, const td_graph_read_opts *opts,
                             td_edgelist *out, td_error *err);

/* Read DIMACS coordinates for an n-vertex graph: *x and *y get n doubles
 * each (malloc'd, caller frees); vertices without a "v" line are NaN. */
td_status td_graph_read_coords(const char *path, uint32_t n, double **x,
                               double **y, td_error *err);

/* Inflate a gzip buffer into a malloc'd one (NUL-terminated; *out_len
 * excludes it), refusing output beyond max_bytes. */
td_status td_gunzip(const void *buf, size_t len, size_t max_bytes, char **out,
                    size_t *out_len, td_error *err);

#endif
