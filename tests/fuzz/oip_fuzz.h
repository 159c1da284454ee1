/* The body shared by fuzz_oip_json.c and fuzz_oip_binary.c: td_oip_parse
 * of an infer request against one of five fixed models (spec sets
 * covering batch and fixed dimensions, one to three inputs, every JSON
 * datatype and some binary-only ones), then td_oip_response on fake
 * outputs made from the parsed inputs.
 * Properties: no crash, no leak, no over-read (ASan/UBSan; the body sits
 * against a PROT_NONE page because jansson is not instrumented); a refusal
 * carries a message; an accepted request has every declared input with
 * its declared datatype and fixed dimensions, data of exactly shape x size
 * bytes and equal batches; the response is valid JSON listing exactly the
 * requested outputs with their shapes, FP32 and integer values read back
 * exactly (non-finite ones as null), and well-formed top-k strings. */
#ifndef OIP_FUZZ_H
#define OIP_FUZZ_H

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "td_oip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                            \
    do {                                                                    \
        if (!(c))                                                           \
            __builtin_trap();                                               \
    } while (0)

#define FUZZ_OIP_SETS 5
#define FUZZ_OIP_MAX_ELEMENTS 4096

typedef struct fuzz_oip_model {
    td_tensor_spec in[3], out[2];
    int n_in, n_out;
} fuzz_oip_model;

static const fuzz_oip_model fuzz_oip_models[FUZZ_OIP_SETS] = {
    /* A TinyNet-like classifier: one batched FP32 input. */
    {{{"x", TD_DT_F32, 2, {-1, 3}}},
     {{"y", TD_DT_F32, 2, {-1, 3}}, {"logits", TD_DT_F32, 2, {-1, 5}}},
     1, 2},
    /* A distance oracle: two INT64 id vectors. */
    {{{"source", TD_DT_I64, 1, {-1}}, {"target", TD_DT_I64, 1, {-1}}},
     {{"distance", TD_DT_F64, 1, {-1}}},
     2, 1},
    /* Free inner dimension, bytes and booleans. */
    {{{"image", TD_DT_U8, 3, {-1, -1, 3}}, {"mask", TD_DT_BOOL, 1, {-1}}},
     {{"score", TD_DT_F64, 2, {-1, 2}}, {"label", TD_DT_I32, 1, {-1}}},
     2, 2},
    /* FP64, a fixed (unbatched) INT32. */
    {{{"weight", TD_DT_F64, 1, {-1}}, {"table", TD_DT_I32, 2, {2, 2}}},
     {{"index", TD_DT_I64, 2, {-1, 4}}},
     2, 1},
    /* Binary only: FP16, UINT16, BF16. */
    {{{"half", TD_DT_F16, 2, {-1, 2}},
      {"count", TD_DT_U16, 1, {-1}},
      {"brain", TD_DT_BF16, 3, {-1, 1, 2}}},
     {{"index", TD_DT_I64, 2, {-1, 4}}},
     3, 1},
};

static const char *const fuzz_oip_labels[] = {"cat", "dog", "bird"};

static const char *fuzz_oip_guard(const uint8_t *data, size_t size)
{
    static unsigned char *region;
    static size_t cap;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (!region || size > cap) {
        size_t want = size ? (size + page - 1) / page * page : page;
        void *p;
        if (region)
            munmap(region, cap + page);
        p = mmap(NULL, want + page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(p != MAP_FAILED);
        CHECK(mprotect((unsigned char *)p + want, page, PROT_NONE) == 0);
        region = p;
        cap = want;
    }
    if (size)
        memcpy(region + cap - size, data, size);
    return (const char *)region + cap - size;
}

static size_t fuzz_oip_numel(const td_tensor *t)
{
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= (size_t)t->shape[d];
    return n;
}

static void fuzz_oip_check_request(const fuzz_oip_model *m,
                                   const td_oip_request *req)
{
    CHECK(req->n_inputs == m->n_in);
    CHECK(req->n_outputs >= 0 && req->n_outputs <= TD_OIP_MAX_TENSORS);
    for (int k = 0; k < m->n_in; k++) {
        const td_tensor *t = &req->inputs[k];
        const td_tensor_spec *s = &m->in[k];
        CHECK(strcmp(t->name, s->name) == 0 && t->dtype == s->dtype &&
              t->ndim == s->ndim && t->data);
        for (int d = 0; d < s->ndim; d++)
            CHECK(t->shape[d] >= 0 &&
                  (s->shape[d] < 0 || t->shape[d] == s->shape[d]));
        CHECK(fuzz_oip_numel(t) <= FUZZ_OIP_MAX_ELEMENTS);
        CHECK(t->nbytes == fuzz_oip_numel(t) * td_dtype_size(t->dtype));
        if (k > 0 && s->shape[0] < 0 && m->in[0].shape[0] < 0)
            CHECK(t->shape[0] == req->inputs[0].shape[0]);
    }
    for (int j = 0; j < req->n_outputs; j++) {
        int found = 0;
        for (int k = 0; k < m->n_out; k++)
            found |= strcmp(req->outputs[j].name, m->out[k].name) == 0;
        CHECK(found && req->outputs[j].classification >= 0 &&
              req->outputs[j].classification <= 100000);
    }
}

/* Outputs as an engine would give them: the batch of the first input,
 * free inner dimensions 3, bytes taken cyclically from the first input (so
 * floats may be NaN or infinite). */
static void fuzz_oip_fake_outputs(const fuzz_oip_model *m,
                                  const td_oip_request *req, td_tensor *outs)
{
    const td_tensor *src = &req->inputs[0];
    int64_t rows = src->shape[0];
    for (int k = 0; k < m->n_out; k++) {
        td_tensor *t = &outs[k];
        unsigned char *p;
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", m->out[k].name);
        t->dtype = m->out[k].dtype;
        t->ndim = m->out[k].ndim;
        for (int d = 0; d < t->ndim; d++)
            t->shape[d] = m->out[k].shape[d] >= 0 ? m->out[k].shape[d]
                          : d == 0               ? rows
                                                 : 3;
        t->nbytes = fuzz_oip_numel(t) * td_dtype_size(t->dtype);
        p = malloc(t->nbytes ? t->nbytes : 1);
        CHECK(p);
        for (size_t i = 0; i < t->nbytes; i++)
            p[i] = src->nbytes
                       ? ((const unsigned char *)src->data)[i % src->nbytes]
                       : 0;
        t->data = p;
    }
}

static void fuzz_oip_check_values(const td_tensor *t, json_t *data)
{
    size_t n = fuzz_oip_numel(t);
    CHECK(json_is_array(data) && json_array_size(data) == n);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(data, i);
        switch (t->dtype) {
        case TD_DT_F32: {
            float f;
            memcpy(&f, (const char *)t->data + i * 4, 4);
            if (isfinite(f))
                CHECK(json_is_number(v) && (float)json_number_value(v) == f);
            else
                CHECK(json_is_null(v));
            break;
        }
        case TD_DT_F64: {
            double x;
            memcpy(&x, (const char *)t->data + i * 8, 8);
            CHECK(isfinite(x) ? json_is_number(v) : json_is_null(v));
            break;
        }
        case TD_DT_I64: {
            int64_t x;
            memcpy(&x, (const char *)t->data + i * 8, 8);
            CHECK(json_is_integer(v) && json_integer_value(v) == x);
            break;
        }
        case TD_DT_I32: {
            int32_t x;
            memcpy(&x, (const char *)t->data + i * 4, 4);
            CHECK(json_is_integer(v) && json_integer_value(v) == x);
            break;
        }
        default:
            break;
        }
    }
}

/* Top-k strings "score:index[:label]": k per row, distinct indices. */
static void fuzz_oip_check_topk(const td_tensor *t, int k, json_t *o)
{
    json_t *shape = json_object_get(o, "shape");
    json_t *data = json_object_get(o, "data");
    size_t rows = t->ndim >= 2 ? (size_t)t->shape[0] : 1;
    size_t cols = t->ndim >= 1 ? (size_t)t->shape[t->ndim - 1] : 1;
    size_t kk = (size_t)k < cols ? (size_t)k : cols;
    CHECK(json_is_array(shape) && json_array_size(shape) == 2);
    CHECK(json_integer_value(json_array_get(shape, 0)) == (json_int_t)rows);
    CHECK(json_integer_value(json_array_get(shape, 1)) == (json_int_t)kk);
    CHECK(json_is_array(data) && json_array_size(data) == rows * kk);
    unsigned char *seen = malloc(cols ? cols : 1);
    CHECK(seen);
    for (size_t r = 0; r < rows; r++) {
        memset(seen, 0, cols);
        for (size_t j = 0; j < kk; j++) {
            const char *s = json_string_value(json_array_get(data, r * kk + j));
            const char *c1 = s ? strchr(s, ':') : NULL;
            char *end;
            long idx;
            CHECK(c1);
            idx = strtol(c1 + 1, &end, 10);
            CHECK(idx >= 0 && (size_t)idx < cols && !seen[idx]);
            seen[idx] = 1;
            if (idx < 3)
                CHECK(*end == ':' && strcmp(end + 1, fuzz_oip_labels[idx]) == 0);
            else
                CHECK(*end == '\0');
        }
    }
    free(seen);
}

static void fuzz_oip_check_response(const fuzz_oip_model *m,
                                    const td_oip_request *req,
                                    const td_tensor *outs)
{
    char *body;
    size_t len, n_written = 0, pos = 0;
    td_error err;
    json_t *root, *arr;
    json_error_t je;
    CHECK(td_oip_response("fuzz", req, outs, m->n_out, fuzz_oip_labels, 3,
                          &body, &len, &err) == TD_OK);
    CHECK(body && strlen(body) == len);
    root = json_loadb(body, len, 0, &je);
    CHECK(root && json_is_object(root));
    CHECK(strcmp(json_string_value(json_object_get(root, "model_name")),
                 "fuzz") == 0);
    if (req->id)
        CHECK(strcmp(json_string_value(json_object_get(root, "id")),
                     req->id) == 0);
    arr = json_object_get(root, "outputs");
    CHECK(json_is_array(arr));
    for (int k = 0; k < m->n_out; k++) {
        int wanted = req->n_outputs == 0, cls = 0;
        json_t *o, *shape;
        for (int j = 0; j < req->n_outputs; j++)
            if (strcmp(req->outputs[j].name, m->out[k].name) == 0) {
                wanted = 1;
                cls = req->outputs[j].classification; /* the last wins */
            }
        if (!wanted)
            continue;
        n_written++;
        o = json_array_get(arr, pos++);
        CHECK(o && strcmp(json_string_value(json_object_get(o, "name")),
                          m->out[k].name) == 0);
        if (cls) {
            fuzz_oip_check_topk(&outs[k], cls, o);
            continue;
        }
        shape = json_object_get(o, "shape");
        CHECK(json_is_array(shape) &&
              json_array_size(shape) == (size_t)outs[k].ndim);
        for (int d = 0; d < outs[k].ndim; d++)
            CHECK(json_integer_value(json_array_get(shape, (size_t)d)) ==
                  outs[k].shape[d]);
        fuzz_oip_check_values(&outs[k], json_object_get(o, "data"));
    }
    CHECK(json_array_size(arr) == n_written);
    json_decref(root);
    free(body);
}

/* Parse body[0..len) (JSON header json_len) against model `set`. */
static int fuzz_oip_one(const uint8_t *data, size_t len, size_t json_len,
                        unsigned set, int64_t max_batch)
{
    const fuzz_oip_model *m = &fuzz_oip_models[set % FUZZ_OIP_SETS];
    const td_oip_limits lim = {FUZZ_OIP_MAX_ELEMENTS, max_batch};
    const char *body = fuzz_oip_guard(data, len);
    td_oip_request req;
    td_tensor outs[2];
    td_error err;
    td_status st;

    st = td_oip_parse(body, len, json_len, m->in, m->n_in, m->out, m->n_out,
                      &lim, &req, &err);
    if (st != TD_OK) {
        CHECK(err.msg[0] && memchr(err.msg, '\0', sizeof err.msg));
        td_oip_request_free(&req);
        return 0;
    }
    fuzz_oip_check_request(m, &req);
    if (max_batch > 0)
        CHECK(req.inputs[0].shape[0] <= max_batch);
    fuzz_oip_fake_outputs(m, &req, outs);
    fuzz_oip_check_response(m, &req, outs);
    for (int k = 0; k < m->n_out; k++)
        free(outs[k].data);
    td_oip_request_free(&req);
    return 0;
}

#endif
