/* td_cop: cop decompositions with shortest-path skeletons.
 *
 * The decomposition of oracle.md §1.1 (Andreae / AGG+14): repeatedly take a
 * connected pending component C ("domain"), pick a root x, grow a skeleton
 * of shortest paths of G[C] ("branches") from x, take the vertices within
 * `delta` of the skeleton in G[C] as a new supernode, and recurse on the
 * connected components of the rest. Every pending component remembers the
 * earlier supernodes it touches (its ancestor set A); with ancestor_branches
 * on, the skeleton gets one shortest path from x to each of them, which is
 * what makes this a cop decomposition (|A| <= r-2 on K_r-minor-free input).
 *
 * Root choice:
 *   TD_COP_BALANCED  x = the midpoint of a double-sweep diameter path of C,
 *                    and that path is an extra branch (oracle.md §2: shallow
 *                    hierarchies, used by the 1+eps label oracle).
 *   TD_COP_AGG       x = a vertex of C adjacent to the latest ancestor
 *                    (the AGG+14 rule; deep hierarchies).
 * The buffer rule of the paper's *buffered* decomposition is NOT implemented
 * (oracle.md marks it as not read from the paper).
 *
 * Branch vertices are stored in one array ("path vertices", pv): branch b is
 * pv[br_off[b] .. br_off[b+1]) in path order with pv_pos = distance along
 * the branch from its first vertex (a shortest path of G[dom], so pv_pos
 * differences are dom distances). Branches of a supernode are contiguous
 * and supernode/branch ids grow in creation order, so ancestors have
 * smaller ids than descendants.
 *
 * Thread: td_cop_build is single-threaded, reads g only; the result is
 * immutable afterwards. Memory: td_cop owns its arrays (td_cop_free). */
#ifndef TD_COP_H
#define TD_COP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "td_dijkstra.h"
#include "td_err.h"
#include "td_graph.h"

typedef enum td_cop_root { TD_COP_BALANCED = 0, TD_COP_AGG = 1 } td_cop_root;

/* Build progress: fraction in [0,1] and a phase name. */
typedef void (*td_progress_fn)(void *ctx, double fraction, const char *phase);

typedef struct td_cop_params {
    td_cop_root root;
    int ancestor_branches; /* 1: one branch to each adjacent ancestor */
    double delta;          /* supernode radius around the skeleton (0: none) */
} td_cop_params;

typedef struct td_cop {
    uint32_t n;            /* graph vertices */
    uint32_t n_sn;         /* supernodes */
    uint32_t n_br;         /* branches */
    uint64_t n_pv;         /* path-vertex entries (a vertex may repeat) */
    uint32_t *sn_of;       /* [n] supernode containing v */
    uint32_t *sn_parent;   /* [n_sn] TD_NONE for a component's root */
    uint32_t *sn_depth;    /* [n_sn] 0 for roots */
    uint32_t *sn_dom;      /* [n_sn] vertices in the domain */
    uint32_t *sn_br;       /* [n_sn+1] branches of s: sn_br[s]..sn_br[s+1] */
    uint64_t *br_off;      /* [n_br+1] */
    uint32_t *br_sn;       /* [n_br] owning supernode */
    uint32_t *pv_vertex;   /* [n_pv] */
    double *pv_pos;        /* [n_pv] */
    /* statistics */
    uint32_t max_depth;
    uint32_t max_ancestors;   /* max |A| seen */
    double mean_depth;        /* mean over vertices of depth(sn_of[v]) + 1 */
    double max_radius;        /* max over supernodes of the tube radius */
} td_cop;

/* Called once per new supernode s, before its domain is split: the domain
 * is exactly the vertices v with mark[v] == mark_val (listed in dom[0..k)).
 * The callback may run searches restricted to it with td_dijkstra_run.
 * Return non-OK to abort the build. */
typedef td_status (*td_cop_visit_fn)(void *ctx, const td_cop *cop,
                                     uint32_t s, const uint32_t *dom,
                                     uint32_t k, const uint32_t *mark,
                                     uint32_t mark_val, td_error *err);

/* Decompose g (undirected). ws must be sized for g->n; visit may be NULL.
 * progress/cancel may be NULL; a set cancel flag makes the build return
 * TD_EBUSY ("cancelled"). */
td_status td_cop_build(const td_graph *g, const td_cop_params *p,
                       td_dijkstra_ws *ws, td_cop_visit_fn visit, void *ctx,
                       td_progress_fn progress, void *progress_ctx,
                       const atomic_int *cancel, td_cop *out, td_error *err);
void td_cop_free(td_cop *c);

#endif
