/* td_servable: the interface every kind of servable thing implements.
 *
 * A servable is a safetensors file in the repository whose metadata "kind"
 * names one of the kinds in td_kinds (td_kinds.c). The registry opens and
 * validates the file, then calls kind->load on a pool thread; the returned
 * implementation may point into the mapped file, which the registry keeps
 * mapped for as long as the implementation lives.
 *
 * Inference is tensors in, tensors out: the OIP layer checks the inputs
 * against kind->inputs (datatype, rank, fixed dimensions) before calling
 * kind->infer on a pool thread, so engines see only well-formed tensors.
 *
 * Thread contract: load, infer and unload run on pool threads or the loop
 * thread; an implementation is immutable after load, so infer may run
 * concurrently on several threads. */
#ifndef TD_SERVABLE_H
#define TD_SERVABLE_H

#include <jansson.h>
#include <stdint.h>

#include "td_arena.h"
#include "td_err.h"
#include "td_image.h"
#include "td_safetensors.h"

typedef struct td_tensor {
    char name[64];
    td_dtype dtype;
    int ndim;
    int64_t shape[TD_ST_MAX_DIMS];
    void *data;      /* owned by whoever filled the tensor; see below */
    size_t nbytes;
} td_tensor;

/* Request-level options (OIP "parameters") that reach the engine.
 * Requests are batched together only when these are equal. */
typedef struct td_infer_params {
    int exact;   /* oracles: exact distances instead of (1+eps) bounds */
} td_infer_params;

/* A declared input or output; shape -1 means any size (the batch). */
typedef struct td_tensor_spec {
    const char *name;
    td_dtype dtype;
    int ndim;
    int64_t shape[TD_ST_MAX_DIMS];
} td_tensor_spec;

/* Most kinds take one input and give one output. Such a kind keeps a
 * td_io_pair as the FIRST member of its implementation and uses the two
 * accessors below for `inputs` and `outputs`. */
typedef struct td_io_pair {
    td_tensor_spec in;
    td_tensor_spec out;
} td_io_pair;
int td_io_pair_inputs(const void *impl, const td_tensor_spec **specs);
int td_io_pair_outputs(const void *impl, const td_tensor_spec **specs);

/* Classifiers answer logits: make outputs[0] an FP32 (rows, classes)
 * tensor named "logits" and return its data (malloc'd, owned by the
 * tensor), or NULL with err set. On a later failure the kind frees it. */
float *td_logits_alloc(td_tensor *out, int64_t rows, int64_t classes,
                       td_error *err);

typedef struct td_servable_kind {
    const char *kind;     /* the metadata "kind" value */
    const char *platform; /* OIP model metadata "platform" */
    /* Build the implementation from a validated file. path is for
     * messages and sidecars. */
    td_status (*load)(const td_st_file *f, const char *path, void **impl,
                      td_error *err);
    void (*unload)(void *impl);
    /* The declared inputs and outputs; pointers live as long as impl. */
    int (*inputs)(const void *impl, const td_tensor_spec **specs);
    int (*outputs)(const void *impl, const td_tensor_spec **specs);
    /* Kind-specific facts for GET /v2/models/{name} ("parameters"): a new
     * reference the caller owns, or NULL. */
    json_t *(*describe)(const void *impl);
    /* Class labels (NULL if none) and their count, for the classification
     * extension. */
    const char *const *(*labels)(const void *impl, int *n);
    /* Fill outputs[i] (one per declared output, in order) with malloc'd
     * data the caller frees. inputs follow the declared order; every input
     * and output has the batch as its leading dimension. scratch is this
     * worker's arena, reset before the call, at least scratch_bytes(rows)
     * large. */
    td_status (*infer)(const void *impl, const td_tensor *inputs,
                       const td_infer_params *params, td_tensor *outputs,
                       td_arena *scratch, td_error *err);
    /* Image classifiers: how an image becomes the first input (timm's eval
     * transform). NULL for kinds that do not take images. */
    void (*image_transform)(const void *impl, td_image_transform *tf);
    /* Scratch bytes a batch of `rows` needs (NULL: none). */
    size_t (*scratch_bytes)(const void *impl, const td_infer_params *params,
                            int64_t rows);
} td_servable_kind;

/* NULL-terminated table of every kind this daemon serves. */
extern const td_servable_kind *const td_kinds[];
const td_servable_kind *td_kind_find(const char *kind);

#endif
