/* td_oip: Open Inference Protocol v2 request parsing and response writing.
 *
 * Parses an infer request (JSON, or JSON followed by raw tensors under
 * Triton's binary tensor extension) into typed tensors checked against the
 * model's declared inputs: names, datatypes, ranks, fixed dimensions, and
 * that the data holds exactly as many values as the shape says. Every
 * error message names the input and what was wrong. Writes the response
 * JSON, including the classification extension (top-k "score:index:label"
 * strings).
 *
 * Thread: any; no shared state. */
#ifndef TD_OIP_H
#define TD_OIP_H

#include <stddef.h>

#include "td_err.h"
#include "td_servable.h"

#define TD_OIP_MAX_TENSORS 16
/* Values per input tensor when no limit is given (1 GiB of FP32). */
#define TD_OIP_DEFAULT_MAX_ELEMENTS ((size_t)1 << 28)

typedef struct td_oip_output_req {
    char name[64];
    int classification; /* top-k, 0 = raw values */
} td_oip_output_req;

typedef struct td_oip_request {
    char *id;                      /* owned, or NULL */
    td_tensor inputs[TD_OIP_MAX_TENSORS]; /* declared order; data owned */
    int n_inputs;
    td_oip_output_req outputs[TD_OIP_MAX_TENSORS];
    int n_outputs;                 /* 0: every declared output */
    td_infer_params params;        /* from the request's "parameters" */
} td_oip_request;

typedef struct td_oip_limits {
    size_t max_elements;  /* per input tensor */
    int64_t max_batch;    /* leading dimension, 0 = unlimited */
} td_oip_limits;

/* Parse body[0..len). json_len is the Inference-Header-Content-Length
 * (or len when the header is absent); the bytes after it are the binary
 * tensors. The caller frees req with td_oip_request_free, also on error. */
td_status td_oip_parse(const char *body, size_t len, size_t json_len,
                       const td_tensor_spec *in_specs, int n_in,
                       const td_tensor_spec *out_specs, int n_out,
                       const td_oip_limits *limits, td_oip_request *req,
                       td_error *err);
void td_oip_request_free(td_oip_request *req);

/* The response body (malloc'd, caller frees). outputs are all declared
 * outputs in order; only the requested ones are written. */
td_status td_oip_response(const char *model_name, const td_oip_request *req,
                          const td_tensor *outputs, int n_outputs,
                          const char *const *labels, int n_labels,
                          char **body, size_t *len, td_error *err);

/* OIP datatype names ("FP32") <-> td_dtype; TD_DT_COUNT when unknown. */
const char *td_oip_dtype_name(td_dtype dt);
td_dtype td_oip_dtype_parse(const char *s);

#endif
