/* td_tinynet: a loaded TinyNet and its forward pass.
 *
 * A model is built from a safetensors file in one of two forms:
 *  - ours: `__metadata__` has kind=tinynet, r, d, w, resolution, classes and
 *    optionally labels (a JSON array), mean, std (JSON arrays of 3),
 *    interpolation, crop_pct and bn ("folded" when convolutions carry their
 *    BatchNorm as a bias, otherwise BatchNorm tensors follow timm's names);
 *  - a timm TinyNet checkpoint exactly as downloaded (timm's names, unfused
 *    BatchNorm with running statistics; num_batches_tracked is ignored),
 *    with the architecture in a sidecar NAME.json beside NAME.safetensors or
 *    given by the caller (td_tn_config).
 * BatchNorm is folded into the preceding convolution at load. Every tensor
 * is checked (name, dtype F32, shape, finite values) and every tensor in the
 * file must belong to the architecture; the model is returned only when all
 * weights are in place. See docs/TINYNET.md.
 *
 * Memory: all weights live in one allocation owned by the model; labels in
 * a second one. A forward pass allocates nothing: it takes its scratch from
 * a caller's td_arena sized with td_tinynet_scratch_bytes.
 * Thread: a loaded model is immutable; any number of threads may run
 * td_tinynet_forward at once, each with its own arena. BLAS threading is
 * the caller's choice (td_blas_set_threads in td_gemm.h). */
#ifndef TD_TINYNET_H
#define TD_TINYNET_H

#include <stddef.h>

#include "td_arena.h"
#include "td_err.h"
#include "td_safetensors.h"
#include "td_tinynet_arch.h"

/* Architecture and preprocessing given by the caller or a sidecar; zero
 * (or empty) fields are unset. variant is a preset name ("tinynet_e");
 * explicit r, d, w override it. */
typedef struct td_tn_config {
    char variant[16];
    double r, d, w;
    int resolution;
    int classes;           /* unset: rows of classifier.weight */
    float mean[3], std[3]; /* unset when std[0] == 0 */
    char interpolation[16];
    float crop_pct;
} td_tn_config;

/* Folded parameters of one block; pointers into td_tinynet.weights. */
typedef struct td_tn_layer {
    const float *exp_w;  /* IR: (cin, cmid); NULL in a DS block */
    const float *exp_b;  /* (cmid) */
    const float *dw_w;   /* (k, k, cmid) */
    const float *dw_b;   /* (cmid) */
    const float *se_rw;  /* (cse, cmid) */
    const float *se_rb;  /* (cse) */
    const float *se_ew;  /* (cse, cmid) */
    const float *se_eb;  /* (cmid) */
    const float *proj_w; /* (cmid, cout) */
    const float *proj_b; /* (cout) */
} td_tn_layer;

typedef struct td_tinynet {
    td_tn_arch arch;
    float *weights;        /* owned: every folded parameter */
    size_t n_weights;      /* floats in weights */
    const float *stem_w;   /* (3*3*3, stem), rows ordered (ky, kx, ci) */
    const float *stem_b;   /* (stem) */
    td_tn_layer layers[TD_TN_MAX_BLOCKS];
    const float *head_w;   /* (cin, head) */
    const float *head_b;   /* (head) */
    const float *fc_w;     /* (head, classes) */
    const float *fc_b;     /* (classes) */
    /* preprocessing the model was trained with (timm's eval transform) */
    float mean[3], std[3];
    char interpolation[16];
    float crop_pct;
    char **labels;         /* owned: `classes` strings, or NULL */
} td_tinynet;

/* Load `path`. cfg may be NULL; when given with an architecture it takes
 * precedence over the file's metadata and the sidecar. On error *out is
 * NULL and err names the file and the tensor or field at fault. */
td_status td_tinynet_load(td_tinynet **out, const char *path,
                          const td_tn_config *cfg, td_error *err);
/* The same from a file the caller already opened and validated (the
 * server's registry does); path is for messages and the sidecar. Weights
 * are copied out: f may be closed afterwards. */
td_status td_tinynet_from_st(td_tinynet **out, const td_st_file *f,
                             const char *path, const td_tn_config *cfg,
                             td_error *err);
/* A model with the architecture `a` and zero weights, for tests and
 * benchmarks (fill m->weights, e.g. with random numbers). */
td_status td_tinynet_new(td_tinynet **out, const td_tn_arch *a,
                         td_error *err);
void td_tinynet_free(td_tinynet *m);

/* Write the model in our format (folded BatchNorm, PyTorch layouts, the
 * metadata above), atomically. */
td_status td_tinynet_save(const td_tinynet *m, const char *path,
                          td_error *err);

/* Bytes of arena a forward pass of n images of h x w pixels needs;
 * SIZE_MAX for sizes td_tinynet_forward refuses. */
size_t td_tinynet_scratch_bytes(const td_tinynet *m, int n, int h, int w);

/* Logits for n images. in: (N, 3, H, W) NCHW, already normalised;
 * logits: (N, classes). Uses scratch from `scratch` and gives it back
 * before returning. Fails (ENOMEM) when the arena is too small and
 * (EINVAL) for bad sizes; never allocates. */
td_status td_tinynet_forward(const td_tinynet *m, td_arena *scratch,
                             const float *in, int n, int h, int w,
                             float *logits, td_error *err);

/* Sidecar path for a model file: NAME.safetensors -> NAME.json (any other
 * name gets .json appended). Writes into buf; returns 0 when it fit. */
int td_tinynet_sidecar_path(const char *path, char *buf, size_t len);

#endif
