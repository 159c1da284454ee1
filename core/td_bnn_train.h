/* td_bnn_train: a trainable binary CNN (the td_bnn_arch family of
 * td_bnn_model.h) with explicit forward and backward passes over plain
 * float arrays (td_train_layers.h), the MST regulariser, and the bridge to
 * td_bnn_export.
 *
 * Network: real stem conv -> BatchNorm -> sign; binary blocks: conv with
 * weights alpha_c * sign(W_c) (alpha_c = mean |W_c| per output channel,
 * recomputed every forward and treated as a constant in the backward, as
 * ReActNet does) -> BatchNorm -> sign (the last block keeps its BatchNorm
 * output real) -> global average pool -> real FC. Convolutions pad k/2.
 *
 * Straight-through estimators (clipped): an activation sign passes the
 * gradient where |x| <= 1; a binary weight passes dL/dW_eff where
 * |W| <= 1 (the gradient of sg(alpha sign W - clamp W) + clamp W).
 * sign(0) = +1 throughout, the convention of td_bnn (bit 1 = x < 0).
 *
 * Two-step schedule (ReActNet): `binw` = 0 runs step 1 (binary
 * activations, real latent weights in the blocks), `binw` = 1 step 2
 * (both binary). The exported model is always binary.
 *
 * MST regulariser (our formulation; the paper's could not be read, see
 * docs/BNN.md): for each binary layer the min-depth MST over the Hamming
 * distances of sign(W) rows (td_mst_build) gives each channel a parent;
 *   R = lambda * sum_layers sum_children sum_{k: sign W_ck != sign W_pk}
 *       (W_ck - sg(W_pk))^2
 * on the latent weights: a pull of each child toward its parent on exactly
 * the positions that cost bit-ops (d = the number of such k), the parent
 * held constant. (The unmasked ||W_c - W_p||^2 also pulls weights whose
 * bits already agree; on a short test it lost more accuracy for the same
 * bit-ops.) The trees are recomputed by td_bnt_refresh_trees, once per
 * epoch by the trainer.
 *
 * Parameters live in one slab of n_params floats, BatchNorm running
 * statistics in a second of n_stats floats (like td_tinynet_train), so the
 * trainer's optimisers, SAM, EMA and checkpoints work unchanged. Layouts:
 * activations NHWC; conv weights (k*k*Cin, Cout) rows (ky, kx, ci) (the
 * exporter's TD_BNN_KKIO); fc (C_last, classes).
 *
 * Memory: td_bnt_init allocates the slabs and the tree parents (owned,
 * td_bnt_free); td_bnt_ws_init one block per workspace (td_bnt_ws_free).
 * Thread: forward/backward read the model and write only their workspace;
 * td_bnt_refresh_trees writes the model's parents (call it between
 * steps, from one thread). */
#ifndef TD_BNN_TRAIN_H
#define TD_BNN_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "td_bnn_model.h"
#include "td_err.h"

#define TD_BNT_BN_EPS 1e-5f

typedef struct td_bnt_bn {
    size_t gamma, beta, mean, var; /* params, params, stats, stats */
    int c;
} td_bnt_bn;

typedef struct td_bnt_layer {
    int cin, cout, k, stride;
    int h_in, w_in, h_out, w_out;
    size_t w;           /* (k*k*cin, cout) in params */
    td_bnt_bn bn;
} td_bnt_layer;

typedef struct td_bnt_model {
    td_bnn_arch arch;
    td_bnt_layer stem;
    td_bnt_layer blocks[TD_BNN_MAX_BLOCKS];
    size_t fc_w, fc_b;  /* (C_last, classes), (classes) */
    size_t n_params, n_stats;
    float *params;      /* owned */
    float *stats;       /* owned */
    uint8_t *decay;     /* owned (n_params): 1 on the stem and fc weights;
                           binary latent weights are never decayed */
    int32_t *parent[TD_BNN_MAX_BLOCKS]; /* owned: MST parent per channel,
                                           -1 at the root (after refresh) */
    int32_t *order[TD_BNN_MAX_BLOCKS];  /* owned: BFS order of the tree,
                                           parents first (after refresh) */
    uint8_t *tied[TD_BNN_MAX_BLOCKS];   /* owned: (cout, kw) 1 where the
                                           child's word is tied to its
                                           parent's (--mst-tie) */
    int trees_valid;
    long n_tied;                        /* tied words over all blocks */
} td_bnt_model;

/* Saved activations of one layer. */
typedef struct td_bnt_acts {
    float *cols;          /* (M_out, k*k*cin) im2col of the input */
    float *weff;          /* (k*k*cin, cout) effective weights (blocks) */
    float *conv, *bn;     /* (M_out, cout) */
    float *act;           /* (M_out, cout) sign(bn); NULL for the last */
    float *mean, *rstd, *var; /* (cout) batch statistics */
} td_bnt_acts;

typedef struct td_bnt_ws {
    int max_batch, n, binw;
    float *mem;           /* owned: everything below */
    td_bnt_acts stem;
    td_bnt_acts blocks[TD_BNN_MAX_BLOCKS];
    float *pooled;        /* (N, C_last) */
    float *logits;        /* (N, classes) */
    float *grad;          /* (n_params): += by td_bnt_backward */
    float *g[2];          /* backward scratch, the largest activation */
    float *dcols;         /* (largest cols) */
    float *dweff;         /* (largest block weight) */
    float *dpooled;       /* (N, C_last) */
} td_bnt_ws;

/* Check that the arch can be trained here (pad = k/2 on every layer, the
 * sizes td_bnn_arch_parse accepts) and describe the slabs. Parameters
 * zero. TD_EINVAL naming the field on a bad arch. */
td_status td_bnt_init(td_bnt_model *m, const td_bnn_arch *a, td_error *err);
void td_bnt_free(td_bnt_model *m);
/* He-normal convs N(0, sqrt(2/fan_in)) (so a latent weight starts well
 * inside the STE window |W| <= 1), fc U(+-1/sqrt(C)), BatchNorm 1, 0,
 * running 0, 1. Deterministic in seed. */
void td_bnt_init_weights(td_bnt_model *m, uint64_t seed);

td_status td_bnt_ws_init(td_bnt_ws *ws, const td_bnt_model *m, int max_batch,
                         td_error *err);
void td_bnt_ws_free(td_bnt_ws *ws);

/* Forward n <= max_batch images. in: (N, in_h, in_w, in_ch) NHWC (for
 * in_ch = 1 the same as NCHW), normalised; result in ws->logits
 * (N, classes). train: batch statistics, else running `stats`. binw: 1
 * binary block weights (step 2 and inference), 0 real (step 1). */
void td_bnt_forward(const td_bnt_model *m, td_bnt_ws *ws, const float *params,
                    const float *stats, const float *in, int n, int train,
                    int binw);
/* Backward of the last training forward; dlogits (N, classes); parameter
 * gradients ADDED to ws->grad. */
void td_bnt_backward(const td_bnt_model *m, td_bnt_ws *ws,
                     const float *params, const float *dlogits);
/* Running statistics from the last training forward of nws workspaces
 * (means and unbiased variances averaged in workspace order). */
void td_bnt_update_running(const td_bnt_model *m, float *stats,
                           td_bnt_ws *const *ws, int nws, float momentum);

/* ---- the pieces, exposed for the gradient checks */

/* out (n) = sign(in) (0 -> +1). out may alias in. */
void td_bnt_sign_forward(float *out, const float *in, size_t n);
/* din = dout * [|in| <= 1] (clipped STE). din may alias dout. */
void td_bnt_sign_backward(float *din, const float *dout, const float *in,
                          size_t n);
/* w: (kk, cout) latent -> weff (kk, cout) = alpha_c * sign(w); alpha
 * (cout, may be NULL) gets mean |w_c| over the kk rows. */
void td_bnt_binarize(float *weff, float *alpha, const float *w, int kk,
                     int cout);
/* dw (kk, cout) += dweff * [|w| <= 1] (alpha constant). */
void td_bnt_binarize_backward(float *dw, const float *dweff, const float *w,
                              int kk, int cout);
/* Regulariser of one layer: w (kk, cout), parent (cout). Returns
 * lambda * sum over children c and rows k where sign(w_kc) differs from
 * sign(w_k,parent) of (w_kc - w_k,parent)^2 (in double) and, when dw is
 * non-NULL, ADDS 2 lambda (w_kc - w_k,parent) there to dw. */
double td_bnt_mst_reg(float *dw, const float *w, const int32_t *parent,
                      int kk, int cout, float lambda);

/* The word-group variant (--mst-words): the CPU plan's cost is the
 * 64-bit words where child and parent differ, so the pull is a group
 * lasso over each (child, tap, 64-channel word): lambda * sum of
 * sqrt(sum over that word's differing positions of (w_kc - w_kp)^2).
 * w: (taps*cin, cout) rows (tap, ci). Returns R; ADDS its gradient
 * lambda (w_kc - w_kp) / norm to dw (when non-NULL). */
double td_bnt_mst_reg_words(float *dw, const float *w, const int32_t *parent,
                            int taps, int cin, int cout, float lambda);

/* Rebuild every block's tree from sign(params) (td_mst_build over packed
 * rows) into m->parent; stats (may be NULL) gets the per-layer depth and
 * distance (n_blocks entries). */
td_status td_bnt_refresh_trees(td_bnt_model *m, const float *params,
                               td_mst_stats *stats, td_error *err);
/* The regulariser over all blocks at params (words: the word-group
 * variant); ADDS its gradient to grad (may be NULL). Needs refreshed trees
 * (returns 0 otherwise). */
double td_bnt_reg(const td_bnt_model *m, const float *params, float *grad,
                  float lambda, int words);

/* ---- word tying (ours, --mst-tie; docs/BNN.md "Word tying")
 *
 * The CPU plan's cost of a child is its NONZERO 64-bit mask words (the
 * (tap, 64-channel group) words of the exported row), so only words where
 * child and parent agree on every bit save time. Tying makes such words:
 * td_bnt_tie_select picks, for every child of the current trees, the
 * round(frac * kw) words where it differs from its parent in the fewest
 * bits (ties: lower word index) and ties them; td_bnt_tie_apply copies the
 * parent's latent weights into the child's tied words (in BFS order, so a
 * chain of ties copies from its top), which makes those mask words exactly
 * zero. A tied position is one shared parameter: td_bnt_tie_grad adds the
 * child's gradient there to the parent's (in reverse BFS order, so a
 * chain's gradients reach its top) and zeroes the child's.
 * Word w of a row of a layer with cin inputs and cw = ceil(cin/64) words
 * per tap covers latent rows t*cin + 64*(w%cw) ... (tap t = w / cw).
 * td_bnt_refresh_trees clears the ties (they name the old parents).
 * While ties are set, td_bnt_latent gives the exporter these trees, so the
 * exported plan keeps the tied words' zero masks. */

/* Select and apply the ties at params (needs refreshed trees; frac in
 * [0, 1]). Sets m->tied and m->n_tied; writes params. */
void td_bnt_tie_select(td_bnt_model *m, float *params, double frac);
/* params: child tied words = parent's (BFS order). */
void td_bnt_tie_apply(const td_bnt_model *m, float *params);
/* grad: parent += child, child = 0 on tied positions (reverse BFS). */
void td_bnt_tie_grad(const td_bnt_model *m, float *grad);

/* Fill a td_bnn_latent (KKIO) pointing into params/stats, for
 * td_bnn_export / td_bnn_from_latent. labels may be NULL. */
void td_bnt_latent(const td_bnt_model *m, const float *params,
                   const float *stats, const char *const *labels, float mean,
                   float std, td_bnn_latent *out);

#endif
