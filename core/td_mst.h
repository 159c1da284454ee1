/* td_mst: MST-compression of a binary layer (Vo et al., ICCV 2023):
 * the spanning tree over output channels, its execution plan and its
 * statistics.
 *
 * Graph. The vertices are the Cout output channels of one binary layer;
 * each is its whole packed weight row (K = Cin*k*k bits, kw words). The
 * graph is complete with edge weight d_ij = popcount(w_i XOR w_j), the
 * Hamming distance.
 *
 * Identity (exact, any real input). With x_k the input values a layer's
 * window reads (x_k = +-1 for binary activations, 0 for zero padding) and
 * y_i = sum_k x_k w_ik, let D_ij = {k : w_ik != w_jk}, d_ij = |D_ij|. On
 * D_ij, w_jk = -w_ik, so
 *     y_j = y_i - sum_{k in D} x_k w_ik + sum_{k in D} x_k w_jk
 *         = y_i + 2 * sum_{k in D_ij} x_k w_jk.
 * For binary x_k in bits (bit 1 = -1): x_k w_jk = 1 - 2 (a_k XOR b_jk), so
 *     y_j = y_i + 2 d_ij - 4 popcount((a XOR w_j) AND m_ij),
 * m_ij = w_i XOR w_j. A child costs d_ij bit-ops (mask words touched:
 * the popcount of the mask's nonzero words) instead of K.
 *
 * Tree. Every spanning tree of minimum total weight (an MST) gives the
 * least total bit-ops K + sum d. Among MSTs we want a shallow one (depth
 * is the dependency chain). td_mst_build runs dense Prim once per
 * candidate root; the frontier edge is chosen by the key
 * (d, depth(parent) + 1, vertex index), smallest first, so every choice is
 * a minimum-weight crossing edge (the result is a true MST) and equal
 * weights go to the shallower attachment. The root whose tree has the
 * least height wins, ties to the lowest index. This is a heuristic: the
 * height is the least found over all roots with this tie rule, NOT a
 * proven minimum over all MSTs. (The paper's own construction could not
 * be read; see docs/BNN.md.) Cost O(Cout^2 * kw + Cout^3).
 *
 * Plan. order: a BFS order from the root (children by ascending index),
 * so each parent precedes its children; parent: the tree parent, -1 at
 * the root; diff lists in CSR by channel: for child j the word indices
 * diff_idx[diff_ptr[j] .. diff_ptr[j+1]) of the row where w_j and its
 * parent differ and the XOR masks diff_mask there (the root's list is
 * empty). Word masks rather than bit-index lists: a child's work is one
 * masked XOR-popcount per differing word, never more than a list of bit
 * indices needs (one operation per bit) and much less when bits cluster.
 *
 * Ownership: a td_mst_plan owns its arrays (one allocation, `mem`);
 * release with td_mst_plan_free. Thread: reentrant; plans are immutable
 * after build. */
#ifndef TD_MST_H
#define TD_MST_H

#include <stddef.h>
#include <stdint.h>

#include "td_err.h"

typedef struct td_mst_plan {
    int cout;
    int kw;              /* words per weight row */
    int root;
    int depth;           /* height of the tree: root 0 */
    int64_t distance;    /* sum of d over tree edges */
    int32_t *order;      /* (cout) BFS order, order[0] = root */
    int32_t *parent;     /* (cout) -1 at the root */
    int32_t *diff_ptr;   /* (cout + 1) CSR offsets by channel */
    int32_t *diff_idx;   /* (n_diff) word index in the row */
    uint64_t *diff_mask; /* (n_diff) w_child XOR w_parent at that word */
    int32_t n_diff;
    void *mem;           /* owned */
} td_mst_plan;

/* Statistics of one layer, or totals (depth = max over layers). */
typedef struct td_mst_stats {
    int64_t cout;
    int64_t k_bits;       /* K = Cin*k*k (the total's is the sum over
                             layers) */
    int depth;
    int64_t distance;     /* total MST distance sum d */
    int64_t bitops_dense; /* Cout*K per output pixel */
    int64_t bitops_mst;   /* K + sum d per output pixel */
    int64_t bits_dense;   /* Cout*K weight bits */
    int64_t bits_mst;     /* K + sum over children of min(d*ceil(log2 K), K):
                             root row plus each child as a list of
                             differing positions or, when shorter, its row
                             (our encoding; the paper's is unknown) */
    int64_t mask_words;   /* nonzero 64-bit mask words over all children:
                             the CPU plan's per-pixel work for children */
    double compression;   /* bits_dense / bits_mst */
    double bitops_ratio;  /* bitops_dense / bitops_mst */
} td_mst_stats;

/* Build the plan for rows: (cout, kw) packed weight rows, cout >= 1.
 * TD_EINVAL on bad sizes (cout > 4096), TD_ENOMEM. */
td_status td_mst_build(const uint64_t *rows, int cout, int kw,
                       td_mst_plan *plan, td_error *err);

/* The plan for a GIVEN tree (parent per channel, -1 at the one root):
 * used when a trainer tied words to these parents (td_bnn_train's word
 * tying), where a fresh minimum tree could pick other parents and lose
 * the zero mask words. Any spanning tree is exact; depth and distance
 * are this tree's. TD_EINVAL when parent is not a tree. */
td_status td_mst_build_tree(const uint64_t *rows, int cout, int kw,
                            const int32_t *parent, td_mst_plan *plan,
                            td_error *err);

/* Allocate an empty plan with room for n_diff entries (for loaders). */
td_status td_mst_plan_alloc(td_mst_plan *plan, int cout, int kw,
                            int32_t n_diff, td_error *err);
void td_mst_plan_free(td_mst_plan *plan);

/* Check a plan (e.g. read from a file) against its rows: order a
 * permutation with the root first, parents in range and before their
 * children in the order (so no cycle), exactly one root, depth equal to
 * the tree's height, distance equal to the sum of d, diff lists exactly
 * the nonzero words of w_child XOR w_parent in ascending order. `what`
 * prefixes the tensor names in messages ("blocks.0.mst"). TD_EFORMAT. */
td_status td_mst_validate(const td_mst_plan *plan, const uint64_t *rows,
                          const char *what, td_error *err);

/* Hamming distance of two rows of kw words. */
int64_t td_mst_hamming(const uint64_t *a, const uint64_t *b, int kw);

/* Statistics of a layer with K = k_bits. */
void td_mst_layer_stats(const td_mst_plan *plan, int64_t k_bits,
                        td_mst_stats *s);
/* Add a layer into a running total (start from a zeroed struct). A
 * layer's bit-ops are per output pixel; the total's are per image, so
 * they are multiplied by the layer's `pixels` (Ho*Wo). */
void td_mst_stats_add(td_mst_stats *total, const td_mst_stats *layer,
                      int64_t pixels);

#endif
