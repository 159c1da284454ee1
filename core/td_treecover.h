/* td_treecover: the paper-style oracle mode (oracle.md §1.2-1.4).
 *
 * Per distance scale L: a cop decomposition with radius delta = eps*L/10,
 * its shortcut partition (skeleton segments of length delta, every vertex
 * joining the segment of its nearest skeleton vertex), one cluster-portal
 * piece per cluster (shortest-path tree from the segment's middle vertex,
 * limited to L + 2*rho + delta inside the domain), pieces coloured greedily
 * into vertex-disjoint trees, at most max_trees trees per scale (the rest
 * are dropped and counted). Query: minimum over trees holding both
 * vertices in one piece of dep[u] + dep[v] - 2 dep[lca], LCA by Euler tour
 * and sparse-table RMQ in O(1).
 *
 * Thread: build single-threaded; queries read-only. Memory: arrays are
 * handed to the td_oracle (td_oracle_keep). */
#ifndef TD_TREECOVER_H
#define TD_TREECOVER_H

#include "td_oracle.h"

td_status td_treecover_build(td_oracle *o, const td_graph *g,
                             const td_oracle_params *p, td_error *err);
double td_treecover_query(const td_oracle *o, uint32_t u, uint32_t v);
size_t td_treecover_bytes(const td_oracle *o);

#endif
