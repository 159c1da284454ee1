/* td_tinynet_train: a trainable TinyNet (the architecture of
 * td_tinynet_arch.h) with explicit forward and backward passes over the
 * layers of td_train_layers.h, and the writer of the model file tinyd
 * serves.
 *
 * Parameters (conv and linear weights, SE biases, BatchNorm gamma/beta)
 * live in one slab of n_params floats, BatchNorm running statistics in a
 * second slab of n_stats floats; offsets into them describe every tensor.
 * The forward and backward take the slabs as arguments so the same model
 * description runs the live weights, SAM's perturbed weights and MESA's
 * EMA teacher. Activations and gradients live in a td_tnt_ws, one per
 * thread, sized for a maximum batch.
 *
 * Layouts: activations NHWC; stem weight (3*3*in_ch, 32) rows (ky,kx,ci);
 * 1x1 convs and the classifier (in, out); depthwise (k,k,C); SE reduce
 * (C,R) + (R), expand (R,C) + (C). td_tnt_save writes timm's names and
 * PyTorch layouts (see docs/TRAINING.md "Output").
 *
 * Grey input: the model is trained with in_ch = 1. The file declares 3
 * input channels (the inference engine takes RGB) with the stem weight
 * divided by 3 on each channel, so an image whose grey value is repeated
 * on R, G and B gives exactly the trained result; metadata channels=1
 * records that the model was trained on grey images.
 *
 * Memory: td_tnt_init allocates the slabs (owned by the model, freed by
 * td_tnt_free); td_tnt_ws_init allocates one block per workspace.
 * Thread: a model is read-only during forward/backward; each thread uses
 * its own workspace. */
#ifndef TD_TINYNET_TRAIN_H
#define TD_TINYNET_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "td_err.h"
#include "td_tinynet_arch.h"
#include "td_train_layers.h"

/* A BatchNorm: gamma and beta are offsets into params, mean and var into
 * stats. */
typedef struct td_tnt_bn {
    size_t gamma, beta, mean, var;
    int c;
} td_tnt_bn;

typedef struct td_tnt_block {
    td_tn_block b;
    int h_in, w_in, h_out, w_out;
    size_t exp_w;           /* (cin, cmid); IR only */
    td_tnt_bn exp_bn;
    size_t dw_w;            /* (k, k, cmid) */
    td_tnt_bn dw_bn;
    size_t se_wr, se_br;    /* (cmid, cse), (cse) */
    size_t se_we, se_be;    /* (cse, cmid), (cmid) */
    size_t proj_w;          /* (cmid, cout) */
    td_tnt_bn proj_bn;
} td_tnt_block;

#define TD_TNT_MAX_BN (3 * TD_TN_MAX_BLOCKS + 2)

typedef struct td_tnt_model {
    td_tn_arch arch;
    int in_ch;              /* 1 for grey */
    int res;                /* square input side */
    int stem_h, stem_w;     /* after the stem */
    int final_h, final_w;   /* before the head */
    size_t stem_w_off;      /* (9*in_ch, stem) */
    td_tnt_bn stem_bn;
    td_tnt_block blocks[TD_TN_MAX_BLOCKS];
    size_t head_w;          /* (last cout, head) */
    td_tnt_bn head_bn;
    size_t fc_w, fc_b;      /* (head, classes), (classes) */
    size_t n_params, n_stats;
    float *params;          /* owned (n_params) */
    float *stats;           /* owned (n_stats): running means and vars */
    uint8_t *decay;         /* owned (n_params): 1 for conv/linear weights */
    int n_bn;               /* BatchNorms in forward order */
    td_tnt_bn bns[TD_TNT_MAX_BN];
} td_tnt_model;

/* Saved activations of conv -> BN (-> SiLU). */
typedef struct td_tnt_cba {
    float *conv, *bn, *act;        /* (M, C); act NULL without SiLU */
    float *mean, *rstd, *var;      /* (C): batch statistics */
} td_tnt_cba;

typedef struct td_tnt_bacts {
    const float *in;               /* block input (previous output) */
    td_tnt_cba exp, dw, proj;
    td_tl_se_saved se;
    float *se_out;                 /* (M_out, cmid) */
    float *out;                    /* proj.bn, or its sum with in */
} td_tnt_bacts;

typedef struct td_tnt_ws {
    int max_batch, n;              /* capacity and the last forward's N */
    float *mem;                    /* owned: everything below */
    float *cols;                   /* stem im2col */
    td_tnt_cba stem;
    td_tnt_bacts blocks[TD_TN_MAX_BLOCKS];
    td_tnt_cba head;
    float *pooled;                 /* (N, head) */
    float *logits;                 /* (N, classes) */
    float *grad;                   /* (n_params): += by td_tnt_backward */
    float *g[3];                   /* backward scratch, max activation */
    float *dpooled;                /* (N, head) */
    float *se_scratch;
    td_tnt_cba *cba[TD_TNT_MAX_BN]; /* same order as model->bns */
} td_tnt_ws;

/* Describe and allocate a model for arch `a`, `in_ch` input channels and
 * a square input of `res` pixels; parameters zero. */
td_status td_tnt_init(td_tnt_model *m, const td_tn_arch *a, int in_ch,
                      int res, td_error *err);
void td_tnt_free(td_tnt_model *m);
/* timm's EfficientNet initialisation (_init_weight_goog): convs
 * N(0, sqrt(2 / fan_out)), fan_out = k*k*out/groups; the classifier
 * U(-1/sqrt(classes), 1/sqrt(classes)); biases 0; BatchNorm 1, 0;
 * running mean 0, var 1. Deterministic in seed. */
void td_tnt_init_weights(td_tnt_model *m, uint64_t seed);

td_status td_tnt_ws_init(td_tnt_ws *ws, const td_tnt_model *m, int max_batch,
                         td_error *err);
void td_tnt_ws_free(td_tnt_ws *ws);

/* Forward n <= max_batch images. in: (N, res, res, in_ch) NHWC, already
 * normalised; result in ws->logits (N, classes). train: BatchNorm uses
 * batch statistics (kept in ws for td_tnt_update_running), otherwise the
 * running statistics `stats`. */
void td_tnt_forward(const td_tnt_model *m, td_tnt_ws *ws,
                    const float *params, const float *stats, const float *in,
                    int n, int train);
/* Backward of the last (training) forward: dlogits (N, classes) is the
 * gradient of the loss; parameter gradients are ADDED to ws->grad. */
void td_tnt_backward(const td_tnt_model *m, td_tnt_ws *ws,
                     const float *params, const float *dlogits);
/* Running statistics from the last training forward of nws workspaces:
 * the per-workspace batch means and unbiased variances are averaged in
 * workspace order (deterministic), then blended with `momentum`. */
void td_tnt_update_running(const td_tnt_model *m, float *stats,
                           td_tnt_ws *const *ws, int nws, float momentum);

/* What the model file says beyond the architecture. */
typedef struct td_tnt_meta {
    const char *const *labels;     /* classes names, or NULL */
    float mean, std;               /* input normalisation (grey) */
    const char *const *extra;      /* NULL-terminated key, value pairs */
} td_tnt_meta;

/* Write the servable model (kind "tinynet"): timm names, PyTorch layouts,
 * unfolded BatchNorm with running statistics, atomically. */
td_status td_tnt_save(const td_tnt_model *m, const td_tnt_meta *meta,
                      const char *path, td_error *err);
/* Read back a file td_tnt_save wrote (for `tinyd-train eval` and tests):
 * builds the architecture from the metadata and fills params and stats.
 * mean/std (may be NULL) get the normalisation. */
td_status td_tnt_load(td_tnt_model *m, const char *path, float *mean,
                      float *std, td_error *err);

#endif
