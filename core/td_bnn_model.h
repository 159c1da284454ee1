/* td_bnn_model: binary CNN model files (metadata kind "bnn"): the
 * architecture, loader with full validation, writer, exporter from latent
 * float weights, forward pass (dense or MST plan) and statistics.
 *
 * Architecture (docs/BNN.md): a real-valued k x k stem convolution on the
 * NCHW float input, its BatchNorm folded into a per-channel affine and a
 * sign (bit-packed); then binary conv blocks, each XOR-popcount conv
 * followed by a per-channel threshold (scale alpha, BatchNorm and the next
 * sign folded together); the last block's output stays real
 * (z = scale*y + bias), is averaged over space and fed to a real fully
 * connected classifier.
 *
 * File (safetensors; td_bnn_save writes, td_bnn_load checks):
 *   metadata kind "bnn"; "arch" (JSON, see td_bnn_arch); "labels" (JSON
 *   array, optional); "mean", "std" (JSON arrays of in_ch numbers);
 *   "bnn_stats" (JSON: per layer and total statistics; each layer's
 *   "depth" and "mst_distance" are checked against the plan at load).
 *   stem.weight F32 [C0, in_ch, k, k]; stem.scale, stem.bias F32 [C0]
 *   blocks.i.weight U64 [Cout, k*k*ceil(Cin/64)]  rows (ky, kx, word),
 *       bit 1 = -1, bits past Cin zero
 *   blocks.i.scale, blocks.i.bias F32 [Cout]   z = scale*y + bias
 *   blocks.i.thr I32 [Cout], blocks.i.tsign I8 [Cout]  bit = tsign*y < thr
 *   blocks.i.mst.order, blocks.i.mst.parent I32 [Cout]
 *   blocks.i.mst.diff_ptr I32 [Cout+1], blocks.i.mst.diff_idx I32 [E],
 *   blocks.i.mst.diff_mask U64 [E]        (td_mst.h)
 *   fc.weight F32 [classes, C_last], fc.bias F32 [classes]
 *
 * Ownership: a td_bnn_model owns everything it points to (one allocation
 * for the tensors and plans plus each layer's small derived tables);
 * release with td_bnn_free. It does not keep the td_st_file.
 * Thread: immutable after load; td_bnn_forward is reentrant given a
 * per-thread arena. Forward does not allocate. */
#ifndef TD_BNN_MODEL_H
#define TD_BNN_MODEL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "td_arena.h"
#include "td_bnn.h"
#include "td_bnn_slice.h"
#include "td_bnn_stem.h"
#include "td_err.h"
#include "td_mst.h"
#include "td_safetensors.h"

#define TD_BNN_MAX_BLOCKS 16
#define TD_BNN_MAX_IN_CH 4
#define TD_BNN_MAX_CHUNK 8 /* images per bit-sliced pass, at most */
/* Extra scratch the bit-sliced executor may need per worker (bytes);
 * beyond it a model keeps the XOR-popcount kernels (slice_note says so). */
#define TD_BNN_SLICE_MAX_SCRATCH (64 << 20)

typedef struct td_bnn_conv_spec {
    int cout, k, stride, pad;
} td_bnn_conv_spec;

/* The "arch" metadata: {"in_ch":1,"in_h":28,"in_w":28,
 *  "stem":{"cout":32,"k":3,"stride":1,"pad":1},
 *  "blocks":[{"cout":64,"k":3,"stride":2,"pad":1}, ...], "classes":10} */
typedef struct td_bnn_arch {
    int in_ch, in_h, in_w;
    td_bnn_conv_spec stem;
    int n_blocks;
    td_bnn_conv_spec blocks[TD_BNN_MAX_BLOCKS];
    int classes;
} td_bnn_arch;

typedef struct td_bnn_block {
    int cin, h_in, w_in, h_out, w_out;
    td_bnn_conv_spec spec;
    const uint64_t *w; /* (cout, kw) */
    const float *scale, *bias;
    const int32_t *thr;
    const int8_t *tsign;
    td_mst_plan plan;  /* arrays point into the model's allocation */
    td_bconv conv;     /* prepared with the plan */
    td_mst_stats stats;
} td_bnn_block;

typedef struct td_bnn_model {
    td_bnn_arch arch;
    int stem_h, stem_w;
    const float *stem_wt; /* (C0, in_ch, k, k) */
    const float *stem_scale, *stem_bias;
    float *stem_wt_t;     /* owned: (k, k, in_ch, C0), for the forward */
    td_bnn_block blocks[TD_BNN_MAX_BLOCKS];
    const float *fc_w, *fc_b;
    char **labels;        /* classes entries, or NULL */
    float mean[TD_BNN_MAX_IN_CH], std[TD_BNN_MAX_IN_CH];
    td_mst_stats total;   /* bit-ops per image */
    /* The bit-sliced form of every block (td_bnn_slice.h), with the MST
     * plans; images go through it slice_chunk at a time. */
    td_bslice slice[TD_BNN_MAX_BLOCKS];
    int slice_ok;         /* 0: this shape does not suit slicing (then
                             TD_BNN_SLICE runs the vertical plan) */
    char slice_note[600]; /* why not, when !slice_ok */
    int slice_chunk;      /* images per pass (<= TD_BNN_MAX_CHUNK) */
    uint8_t slice_pick[2][TD_BNN_MAX_CHUNK][TD_BNN_MAX_BLOCKS]; /* 1:
                             block runs bit-sliced in a pass of n+1 images
                             under TD_BNN_AUTO, with AVX2 [0] or AVX-512
                             [1] kernels (td_bnn_block_sliced) */
    td_bslice_layout slice_lay[TD_BNN_MAX_BLOCKS + 1]; /* [0]: the stem's
                             output, [i+1]: block i's */
    int32_t *slice_lane[TD_BNN_MAX_BLOCKS + 1]; /* owned: lane of each
                             pixel, raster order (for conversions) */
    td_bnn_stem stem;     /* the stem's kernels (and planar tables) */
    void *mem;            /* owned */
} td_bnn_model;

/* Parse and check an "arch" JSON string (every size positive, k odd or
 * not, pad < k, at most TD_BNN_MAX_BLOCKS blocks, Cout <= 4096). */
td_status td_bnn_arch_parse(const char *json, td_bnn_arch *a, td_error *err);
/* The JSON text (malloc'd, caller frees) or NULL on out-of-memory. */
char *td_bnn_arch_json(const td_bnn_arch *a);

/* Build from a validated safetensors file; every tensor is checked (name,
 * dtype, shape), packed padding bits must be zero, tsign in {-1,0,1}, the
 * plans pass td_mst_validate against the weights and the metadata's depth
 * and distance. Errors name the tensor. */
td_status td_bnn_load(td_bnn_model **out, const td_st_file *f,
                      td_error *err);
td_status td_bnn_open(td_bnn_model **out, const char *path, td_error *err);
void td_bnn_free(td_bnn_model *m);

/* Write the model atomically (td_st_writer). */
td_status td_bnn_save(const td_bnn_model *m, const char *path,
                      td_error *err);

/* BatchNorm parameters of one layer; all NULL means identity. */
typedef struct td_bnn_bn {
    const float *gamma, *beta, *mean, *var;
    float eps;
} td_bnn_bn;

/* Weight layouts the exporter accepts. OIHW is PyTorch's: conv
 * (Cout, Cin, k, k), fc (classes, C). KKIO is tinyd's trainer's
 * (td_train_layers.h): conv (k*k*Cin, Cout) with rows (ky, kx, ci), fc
 * (C, classes). */
typedef enum td_bnn_layout {
    TD_BNN_OIHW = 0,
    TD_BNN_KKIO = 1
} td_bnn_layout;

/* What a trainer has at the end: latent float weights and BatchNorm
 * parameters. Binary weights are sign(latent) (0 -> +1); alpha (per
 * output channel) defaults to mean |latent| of the channel. Shapes below
 * are for TD_BNN_OIHW; see td_bnn_layout for KKIO. */
typedef struct td_bnn_latent {
    td_bnn_arch arch;
    td_bnn_layout layout;
    const float *stem_w;                 /* (C0, in_ch, k, k) */
    const float *stem_b;                 /* (C0) or NULL */
    td_bnn_bn stem_bn;
    const float *block_w[TD_BNN_MAX_BLOCKS];     /* (Cout, Cin, k, k) */
    const float *block_alpha[TD_BNN_MAX_BLOCKS]; /* (Cout) or NULL */
    const int32_t *block_parent[TD_BNN_MAX_BLOCKS]; /* (Cout) the plan's
                                        tree, or NULL for td_mst_build's */
    td_bnn_bn block_bn[TD_BNN_MAX_BLOCKS];
    const float *fc_w, *fc_b;            /* (classes, C_last), (classes) */
    const char *const *labels;           /* classes strings or NULL */
    float mean[TD_BNN_MAX_IN_CH], std[TD_BNN_MAX_IN_CH];
} td_bnn_latent;

/* Pack, fold BatchNorm into scale/bias and thresholds, build every
 * layer's MST plan and statistics. */
td_status td_bnn_from_latent(td_bnn_model **out, const td_bnn_latent *src,
                             td_error *err);
/* from_latent + save: what the trainer calls. */
td_status td_bnn_export(const td_bnn_latent *src, const char *path,
                        td_error *err);

/* Forward flags. TD_BNN_SLICE: every block through the bit-sliced
 * executor (td_bnn_slice.h; it runs the MST plans unless rebuilt without
 * them). TD_BNN_AUTO: each block through the executor estimated faster
 * for the images in the pass (td_bnn_block_sliced); with TD_BCONV_PLAN the
 * XOR-popcount blocks run their plans. Both fall back to the XOR-popcount
 * kernels when the shape does not suit slicing (slice_ok = 0). */
#define TD_BNN_SLICE 8
#define TD_BNN_AUTO 16
/* For tests: blocks alternate between the executors (odd blocks
 * bit-sliced with _ODD, even ones with _EVEN), so that every conversion
 * between the two forms runs. */
#define TD_BNN_MIX_ODD 32
#define TD_BNN_MIX_EVEN 64
/* What an AVX2-only machine runs, even where AVX-512 exists (benchmarks,
 * tests): AVX2 bit-sliced kernels and stem, scalar POPCNT XOR kernels.
 * Same value as TD_BSLICE_AVX2. */
#define TD_BNN_AVX2 TD_BSLICE_AVX2

/* 1 when block i runs bit-sliced for a pass of nimg images under flags:
 * TD_BNN_SLICE, or TD_BNN_AUTO and the cheapest assignment of executors
 * to blocks for such a pass puts it there (a cost model from measured
 * per-operation times on this CPU family, counting the stem and each
 * change of form; docs/BNN.md). */
int td_bnn_block_sliced(const td_bnn_model *m, int i, int nimg, int flags);

/* Rebuild the bit-sliced blocks with (plan = 1) or without the MST plans
 * (every channel counted from its own row: the bit-sliced dense layers,
 * for comparison). td_bnn_load builds them with the plans. */
td_status td_bnn_slice_rebuild(td_bnn_model *m, int plan, td_error *err);

/* Arena bytes td_bnn_forward needs (independent of the batch). */
size_t td_bnn_scratch_bytes(const td_bnn_model *m);
/* in: (N, in_ch, in_h, in_w) NCHW float, normalised; logits:
 * (N, classes). flags: TD_BCONV_PLAN for the MST plans (else dense
 * binary layers), TD_BNN_SLICE for the bit-sliced executor,
 * TD_BCONV_PORTABLE for no SIMD; every combination gives the same logits
 * (the binary layers' integers are exact and the pooling sums them before
 * scaling). The arena is left as it was found. */
td_status td_bnn_forward(const td_bnn_model *m, int flags, td_arena *a,
                         const float *in, int n, float *logits,
                         td_error *err);

/* Statistics as JSON: {"layers":[{...}], "total":{...}}, a new reference
 * (NULL on out-of-memory). Per layer: cout, k_bits, depth, mst_distance,
 * bitops_dense, bitops_mst (per output pixel), bits_dense, bits_mst,
 * compression, mask_words; total: the same with bit-ops per image. */
json_t *td_bnn_stats_json(const td_bnn_model *m);
/* The same as a text table (for `tinyd-train info`), one line per layer
 * and a total line. */
void td_bnn_stats_fprint(const td_bnn_model *m, FILE *out);

#endif
