/* td_oracle: approximate distance oracles for weighted undirected graphs.
 *
 * Modes (chosen at build time, stored in the file):
 *   TD_ORACLE_LABELS     guaranteed 1+eps for EVERY pair: eps-cover portal
 *                        labels on a balanced cop hierarchy (oracle.md §2,
 *                        Thorup/Klein-style, on the shared td_cop code).
 *   TD_ORACLE_TREECOVER  the paper's route (oracle.md §1.2-1.4): shortcut
 *                        partitions per distance scale, cluster-portal
 *                        trees (at most max_trees per scale), query = min
 *                        over trees of an O(1) LCA distance. Its factor is
 *                        1 + 4 max(tau/L) (at most 1 + 0.8 eps) when no piece
 *                        was dropped and no weight is 0, else INFINITY (no
 *                        guarantee; measured stretch is reported instead).
 * Every answer is an upper bound d_hat >= d(u,v) (the length of a real
 * walk), reported with its guaranteed factor: d(u,v) <= d_hat <=
 * factor * d(u,v). "No path" (different components) is INFINITY.
 *
 * Thread: a built or loaded oracle is immutable; queries from any number of
 * threads are safe. td_oracle_query does not allocate; exact queries need a
 * per-thread td_dijkstra_ws sized for o->g.n.
 * Memory: td_oracle_free releases everything (an owned build, or the mmap
 * and any copies of a loaded file). */
#ifndef TD_ORACLE_H
#define TD_ORACLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "td_cop.h"
#include "td_dijkstra.h"
#include "td_err.h"
#include "td_graph.h"

typedef enum td_oracle_mode {
    TD_ORACLE_LABELS = 0,
    TD_ORACLE_TREECOVER = 1
} td_oracle_mode;

/* "labels" / "treecover"; NULL for an invalid mode. */
const char *td_oracle_mode_name(td_oracle_mode m);
/* Returns -1 when unknown. */
int td_oracle_mode_parse(const char *s);

typedef struct td_oracle_params {
    td_oracle_mode mode;
    double eps;               /* target stretch 1+eps, 0 < eps <= 1 */
    int ancestor_branches;    /* labels: cop branches to ancestors (0) */
    uint32_t max_trees;       /* treecover: trees kept per scale (0: 16) */
    td_progress_fn progress;  /* optional */
    void *progress_ctx;
    const atomic_int *cancel; /* optional; set -> build returns TD_EBUSY */
} td_oracle_params;

/* Defaults: labels, eps 0.1, no ancestor branches, 16 trees per scale. */
void td_oracle_params_default(td_oracle_params *p);

typedef struct td_oracle_stats {
    double build_seconds;
    uint32_t supernodes, branches, max_depth, max_ancestors;
    double mean_depth;             /* supernodes above a vertex, incl. own */
    uint64_t label_entries;        /* labels: total portal entries */
    uint32_t max_label;            /* labels: most entries of one vertex */
    uint64_t dijkstra_settled;     /* build work: vertices settled */
    uint32_t scales, trees;        /* treecover */
    uint64_t pieces, pieces_dropped, tree_vertices;
    double max_tau_over_L;         /* treecover: worst cluster reach / L */
    uint32_t max_cluster_hops;     /* treecover: measured 0-1 BFS maximum */
    double max_hops_ratio;         /* hops / ceil(d / (eps L)), worst */
} td_oracle_stats;

typedef struct td_oracle {
    td_oracle_mode mode;
    double eps;
    double factor;          /* guarantee reported with every answer */
    uint32_t id_base;       /* users' vertex numbering: 1 for DIMACS input,
                               0 otherwise (saved as metadata "id_base") */
    td_graph g;             /* the graph (for exact queries) */
    td_oracle_stats stats;
    /* decomposition (both modes) */
    uint32_t n_sn;
    const uint32_t *sn_of;     /* [n] supernode of each vertex */
    const uint32_t *sn_parent; /* [n_sn] TD_NONE for roots */
    const uint32_t *br_sn;     /* [n_br] supernode owning each branch */
    /* labels mode */
    uint64_t n_pv;
    uint32_t n_br;
    const uint64_t *br_off;    /* [n_br+1] */
    const uint32_t *pv_branch; /* [n_pv] */
    const double *pv_pos;      /* [n_pv] */
    const uint64_t *lab_off;   /* [n+1] */
    const uint32_t *lab_pv;    /* [entries] sorted per vertex */
    const float *lab_dist;     /* [entries] rounded up from exact */
    /* treecover mode: n_trees forests over V; tree t holds, per vertex,
     * its piece id (TD_NONE: not in this tree) and its first Euler index;
     * per tree, the Euler tour as preorder numbers, the depth of each
     * preorder number, and a sparse table over blocks of the tour. */
    uint32_t n_trees;
    const uint32_t *tc_piece;      /* [n_trees * n] */
    const uint32_t *tc_first;      /* [n_trees * n] */
    const uint64_t *tc_euler_off;  /* [n_trees + 1] */
    const uint32_t *tc_euler;      /* [tc_euler_off[n_trees]] */
    const uint64_t *tc_pdep_off;   /* [n_trees + 1] */
    const double *tc_pdep;         /* [tc_pdep_off[n_trees]] */
    const uint64_t *tc_sparse_off; /* [n_trees + 1] */
    const uint32_t *tc_sparse;     /* [tc_sparse_off[n_trees]] */
    /* ownership */
    void **blocks;             /* malloc'd arrays to free */
    size_t n_blocks;
    void *file;                /* td_st_file * when loaded */
    void (*close_file)(void *file);
} td_oracle;

/* Build an oracle for an undirected graph. The oracle copies the graph. */
td_status td_oracle_build(const td_graph *g, const td_oracle_params *p,
                          td_oracle *o, td_error *err);
void td_oracle_free(td_oracle *o);

/* Upper bound on d(u,v) with its factor (*factor may be NULL). INFINITY
 * when u and v are in different components. Errors name a bad id. */
td_status td_oracle_query(const td_oracle *o, uint32_t u, uint32_t v,
                          double *dist, double *factor, td_error *err);
/* Exact distance: bidirectional Dijkstra pruned by the oracle's bound. */
td_status td_oracle_query_exact(const td_oracle *o, td_dijkstra_ws *ws,
                                uint32_t u, uint32_t v, double *dist,
                                td_error *err);

/* A td_lower_bound_fn (ctx = the oracle): answer(x, target) / factor, a
 * lower bound on d(x, target) when the factor is finite (0 otherwise). */
double td_oracle_lower_bound(const void *oracle, uint32_t x, uint32_t target);

/* Bytes of the oracle's arrays (graph included). */
size_t td_oracle_bytes(const td_oracle *o);

/* Save as one safetensors file (metadata kind "oracle"), atomically. */
td_status td_oracle_save(const td_oracle *o, const char *path, td_error *err);
/* mmap a saved oracle read-only and validate every index it holds; arrays
 * are used in place (copied only if a foreign writer left them unaligned). */
td_status td_oracle_load(const char *path, td_oracle *o, td_error *err);

/* For the oracle's own modules (td_oracle_io.c, td_treecover.c): hand a
 * malloc'd block to o (freed by td_oracle_free; freed at once on error). */
td_status td_oracle_keep(td_oracle *o, void *block, td_error *err);

#endif
