/* td_oip: infer requests in, infer responses out (JSON and binary). */
#include "config.h"

#include "td_oip.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    td_dtype dt;
    const char *name;
} oip_names[] = {
    {TD_DT_BOOL, "BOOL"}, {TD_DT_U8, "UINT8"},   {TD_DT_I8, "INT8"},
    {TD_DT_U16, "UINT16"}, {TD_DT_I16, "INT16"}, {TD_DT_F16, "FP16"},
    {TD_DT_BF16, "BF16"}, {TD_DT_U32, "UINT32"}, {TD_DT_I32, "INT32"},
    {TD_DT_F32, "FP32"},  {TD_DT_U64, "UINT64"}, {TD_DT_I64, "INT64"},
    {TD_DT_F64, "FP64"},
};

const char *td_oip_dtype_name(td_dtype dt)
{
    size_t i;
    for (i = 0; i < sizeof oip_names / sizeof oip_names[0]; i++)
        if (oip_names[i].dt == dt)
            return oip_names[i].name;
    return "UNKNOWN";
}

td_dtype td_oip_dtype_parse(const char *s)
{
    size_t i;
    for (i = 0; s && i < sizeof oip_names / sizeof oip_names[0]; i++)
        if (strcmp(oip_names[i].name, s) == 0)
            return oip_names[i].dt;
    return TD_DT_COUNT;
}

void td_oip_request_free(td_oip_request *req)
{
    int i;
    free(req->id);
    for (i = 0; i < TD_OIP_MAX_TENSORS; i++)
        free(req->inputs[i].data);
    memset(req, 0, sizeof *req);
}

static void shape_str(const int64_t *shape, int ndim, char *out, size_t cap)
{
    size_t off = 0;
    int i;
    off += (size_t)snprintf(out, cap, "[");
    for (i = 0; i < ndim && off < cap; i++)
        off += (size_t)snprintf(out + off, cap - off, "%s%lld", i ? "," : "",
                                (long long)shape[i]);
    if (off < cap)
        snprintf(out + off, cap - off, "]");
}

/* Store one JSON value as element idx of a dtype buffer. */
static int store_value(json_t *v, td_dtype dt, void *buf, size_t idx)
{
    switch (dt) {
    case TD_DT_F32:
        if (!json_is_number(v))
            return -1;
        ((float *)buf)[idx] = (float)json_number_value(v);
        return 0;
    case TD_DT_F64:
        if (!json_is_number(v))
            return -1;
        ((double *)buf)[idx] = json_number_value(v);
        return 0;
    case TD_DT_I64:
        if (!json_is_integer(v))
            return -1;
        ((int64_t *)buf)[idx] = (int64_t)json_integer_value(v);
        return 0;
    case TD_DT_I32: {
        json_int_t x;
        if (!json_is_integer(v))
            return -1;
        x = json_integer_value(v);
        if (x < INT32_MIN || x > INT32_MAX)
            return -1;
        ((int32_t *)buf)[idx] = (int32_t)x;
        return 0;
    }
    case TD_DT_U8: {
        json_int_t x;
        if (!json_is_integer(v))
            return -1;
        x = json_integer_value(v);
        if (x < 0 || x > 255)
            return -1;
        ((uint8_t *)buf)[idx] = (uint8_t)x;
        return 0;
    }
    case TD_DT_BOOL:
        if (!json_is_boolean(v))
            return -1;
        ((uint8_t *)buf)[idx] = json_is_true(v) ? 1 : 0;
        return 0;
    default:
        return -2;
    }
}

static int json_dtype_ok(td_dtype dt)
{
    return dt == TD_DT_F32 || dt == TD_DT_F64 || dt == TD_DT_I64 ||
           dt == TD_DT_I32 || dt == TD_DT_U8 || dt == TD_DT_BOOL;
}

typedef struct flatten_ctx {
    td_dtype dt;
    void *buf;
    size_t expected, count;
    int bad;          /* 1: non-numeric, 2: too many */
    size_t bad_index;
} flatten_ctx;

/* Row-major walk of nested or flat data; depth bounded by the shape. */
static void flatten(json_t *v, flatten_ctx *c, int depth)
{
    size_t i;
    if (c->bad)
        return;
    if (json_is_array(v)) {
        if (depth > TD_ST_MAX_DIMS) {
            c->bad = 1;
            c->bad_index = c->count;
            return;
        }
        for (i = 0; i < json_array_size(v) && !c->bad; i++)
            flatten(json_array_get(v, i), c, depth + 1);
        return;
    }
    if (c->count >= c->expected) {
        c->bad = 2;
        return;
    }
    if (store_value(v, c->dt, c->buf, c->count) != 0) {
        c->bad = 1;
        c->bad_index = c->count;
        return;
    }
    c->count++;
}

/* Leaf values in nested data; arrays deeper than a tensor can be are
 * counted as one (invalid) leaf so flatten reports them. */
static size_t count_leaves(json_t *v, int depth)
{
    size_t i, n = 0;
    if (!json_is_array(v) || depth > TD_ST_MAX_DIMS)
        return 1;
    for (i = 0; i < json_array_size(v); i++)
        n += count_leaves(json_array_get(v, i), depth + 1);
    return n;
}

/* Parse, check and load one input object into t. */
static td_status parse_input(json_t *in, const td_tensor_spec *spec,
                             const td_oip_limits *limits, const char *bin,
                             size_t bin_len, size_t *bin_off, td_tensor *t,
                             td_error *err)
{
    json_t *shape = json_object_get(in, "shape");
    json_t *dtype = json_object_get(in, "datatype");
    json_t *data = json_object_get(in, "data");
    json_t *params = json_object_get(in, "parameters");
    json_t *bsize = params ? json_object_get(params, "binary_data_size")
                           : NULL;
    char want[96], got[96];
    size_t i, numel = 1, esize;
    td_dtype dt;

    if (!json_is_string(dtype))
        return td_error_set(err, TD_EINVAL,
                            "input \"%s\": \"datatype\" must be a string",
                            spec->name);
    dt = td_oip_dtype_parse(json_string_value(dtype));
    if (dt == TD_DT_COUNT)
        return td_error_set(err, TD_EINVAL,
                            "input \"%s\": unknown datatype \"%s\"",
                            spec->name, json_string_value(dtype));
    if (dt != spec->dtype)
        return td_error_set(err, TD_EINVAL,
                            "input \"%s\": datatype %s, expected %s",
                            spec->name, json_string_value(dtype),
                            td_oip_dtype_name(spec->dtype));
    shape_str(spec->shape, spec->ndim, want, sizeof want);
    if (!json_is_array(shape))
        return td_error_set(err, TD_EINVAL,
                            "input \"%s\": \"shape\" must be an array, "
                            "expected %s",
                            spec->name, want);
    if ((int)json_array_size(shape) != spec->ndim)
        return td_error_set(err, TD_EINVAL,
                            "input \"%s\": shape has %zu dimensions, expected "
                            "%d (%s)",
                            spec->name, json_array_size(shape), spec->ndim,
                            want);
    snprintf(t->name, sizeof t->name, "%s", spec->name);
    t->dtype = dt;
    t->ndim = spec->ndim;
    for (i = 0; i < json_array_size(shape); i++) {
        json_t *d = json_array_get(shape, i);
        json_int_t v;
        if (!json_is_integer(d) || (v = json_integer_value(d)) < 0)
            return td_error_set(err, TD_EINVAL,
                                "input \"%s\": shape[%zu] must be a "
                                "non-negative integer",
                                spec->name, i);
        t->shape[i] = (int64_t)v;
    }
    shape_str(t->shape, t->ndim, got, sizeof got);
    for (i = 0; i < (size_t)spec->ndim; i++)
        if (spec->shape[i] >= 0 && t->shape[i] != spec->shape[i])
            return td_error_set(err, TD_EINVAL,
                                "input \"%s\": shape %s, expected %s "
                                "(dimension %zu must be %lld)",
                                spec->name, got, want, i,
                                (long long)spec->shape[i]);
    if (limits && limits->max_batch > 0 && t->ndim > 0 &&
        t->shape[0] > limits->max_batch)
        return td_error_set(err, TD_ETOOBIG,
                            "input \"%s\": batch of %lld exceeds the limit "
                            "of %lld",
                            spec->name, (long long)t->shape[0],
                            (long long)limits->max_batch);
    for (i = 0; i < (size_t)t->ndim; i++) {
        if (t->shape[i] != 0 &&
            numel > (limits && limits->max_elements ? limits->max_elements
                                                    : TD_OIP_DEFAULT_MAX_ELEMENTS) /
                        (size_t)t->shape[i])
            return td_error_set(err, TD_ETOOBIG,
                                "input \"%s\": shape %s holds too many "
                                "values",
                                spec->name, got);
        numel *= (size_t)t->shape[i];
    }
    esize = td_dtype_size(dt);
    t->nbytes = numel * esize;
    /* Check the data's size against the shape before allocating, so a
     * small request cannot claim a huge tensor. */
    if (bsize) {
        json_int_t n;
        if (data)
            return td_error_set(err, TD_EINVAL,
                                "input \"%s\": has both \"data\" and "
                                "binary_data_size",
                                spec->name);
        if (!json_is_integer(bsize) || (n = json_integer_value(bsize)) < 0)
            return td_error_set(err, TD_EINVAL,
                                "input \"%s\": binary_data_size must be a "
                                "non-negative integer",
                                spec->name);
        if ((uint64_t)n != (uint64_t)t->nbytes)
            return td_error_set(err, TD_EINVAL,
                                "input \"%s\": binary_data_size is %lld "
                                "bytes, shape %s of %s needs %zu",
                                spec->name, (long long)n, got,
                                td_oip_dtype_name(dt), t->nbytes);
        if ((size_t)n > bin_len - *bin_off)
            return td_error_set(err, TD_EINVAL,
                                "input \"%s\": binary data truncated: %lld "
                                "bytes declared, %zu left in the body",
                                spec->name, (long long)n,
                                bin_len - *bin_off);
        t->data = malloc(t->nbytes ? t->nbytes : 1);
        if (!t->data)
            return td_error_set(err, TD_ENOMEM,
                                "out of memory for input \"%s\"", spec->name);
        memcpy(t->data, bin + *bin_off, (size_t)n);
        *bin_off += (size_t)n;
        return TD_OK;
    }
    if (!data)
        return td_error_set(err, TD_EINVAL,
                            "input \"%s\": no \"data\" (and no "
                            "binary_data_size)",
                            spec->name);
    if (!json_dtype_ok(dt))
        return td_error_set(err, TD_EUNSUPPORTED,
                            "input \"%s\": datatype %s is accepted only as "
                            "binary data",
                            spec->name, td_oip_dtype_name(dt));
    {
        size_t leaves = count_leaves(data, 0);
        flatten_ctx c = {dt, NULL, numel, 0, 0, 0};
        if (leaves != numel)
            return td_error_set(err, TD_EINVAL,
                                "input \"%s\": shape %s holds %zu values, "
                                "data has %zu",
                                spec->name, got, numel, leaves);
        t->data = malloc(t->nbytes ? t->nbytes : 1);
        if (!t->data)
            return td_error_set(err, TD_ENOMEM,
                                "out of memory for input \"%s\"", spec->name);
        c.buf = t->data;
        flatten(data, &c, 0);
        if (c.bad)
            return td_error_set(err, TD_EINVAL,
                                "input \"%s\": data[%zu] is not a valid %s "
                                "value",
                                spec->name, c.bad_index,
                                td_oip_dtype_name(dt));
    }
    return TD_OK;
}

td_status td_oip_parse(const char *body, size_t len, size_t json_len,
                       const td_tensor_spec *in_specs, int n_in,
                       const td_tensor_spec *out_specs, int n_out,
                       const td_oip_limits *limits, td_oip_request *req,
                       td_error *err)
{
    json_error_t jerr;
    json_t *root, *inputs, *outputs, *id;
    size_t i, bin_off = 0;
    int k, seen[TD_OIP_MAX_TENSORS] = {0};
    td_status st = TD_OK;

    memset(req, 0, sizeof *req);
    if (json_len > len)
        return td_error_set(err, TD_EINVAL,
                            "Inference-Header-Content-Length %zu exceeds the "
                            "body of %zu bytes",
                            json_len, len);
    root = json_loadb(body, json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return td_error_set(err, TD_EFORMAT,
                            "malformed JSON at line %d, column %d: %s",
                            jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return td_error_set(err, TD_EINVAL,
                            "the request must be a JSON object");
    }
    id = json_object_get(root, "id");
    if (id && json_is_string(id))
        req->id = strdup(json_string_value(id));
    {
        json_t *params = json_object_get(root, "parameters");
        json_t *exact = params ? json_object_get(params, "exact") : NULL;
        if (params && !json_is_object(params)) {
            st = td_error_set(err, TD_EINVAL,
                              "\"parameters\" must be an object");
            goto out;
        }
        if (exact && !json_is_boolean(exact)) {
            st = td_error_set(err, TD_EINVAL,
                              "parameters.exact must be true or false");
            goto out;
        }
        req->params.exact = exact && json_is_true(exact);
    }
    inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs)) {
        st = td_error_set(err, TD_EINVAL,
                          "the request has no \"inputs\" array");
        goto out;
    }
    if (json_array_size(inputs) == 0) {
        st = td_error_set(err, TD_EINVAL,
                          "\"inputs\" is empty; the model expects %d input%s "
                          "(first: \"%s\")",
                          n_in, n_in == 1 ? "" : "s", in_specs[0].name);
        goto out;
    }
    for (i = 0; i < json_array_size(inputs); i++) {
        json_t *in = json_array_get(inputs, i);
        json_t *name = json_object_get(in, "name");
        int found = -1;
        if (!json_is_object(in) || !json_is_string(name)) {
            st = td_error_set(err, TD_EINVAL,
                              "inputs[%zu] must be an object with a string "
                              "\"name\"",
                              i);
            goto out;
        }
        for (k = 0; k < n_in; k++)
            if (strcmp(in_specs[k].name, json_string_value(name)) == 0)
                found = k;
        if (found < 0) {
            char names[256] = "";
            size_t off = 0;
            for (k = 0; k < n_in && off < sizeof names; k++)
                off += (size_t)snprintf(names + off, sizeof names - off,
                                        "%s\"%s\"", k ? ", " : "",
                                        in_specs[k].name);
            st = td_error_set(err, TD_EINVAL,
                              "unknown input \"%s\"; the model's inputs are "
                              "%s",
                              json_string_value(name), names);
            goto out;
        }
        if (seen[found]) {
            st = td_error_set(err, TD_EINVAL, "input \"%s\" given twice",
                              in_specs[found].name);
            goto out;
        }
        seen[found] = 1;
        /* Binary tensors follow in the order the inputs are listed. */
        st = parse_input(in, &in_specs[found], limits, body + json_len,
                         len - json_len, &bin_off, &req->inputs[found], err);
        if (st != TD_OK)
            goto out;
    }
    for (k = 0; k < n_in; k++) {
        if (!seen[k]) {
            st = td_error_set(err, TD_EINVAL, "missing input \"%s\"",
                              in_specs[k].name);
            goto out;
        }
    }
    req->n_inputs = n_in;
    if (bin_off != len - json_len) {
        st = td_error_set(err, TD_EINVAL,
                          "%zu bytes of binary data after the JSON header "
                          "belong to no input",
                          len - json_len - bin_off);
        goto out;
    }
    /* For several inputs with a batch dimension, batches must agree. */
    for (k = 1; k < n_in; k++) {
        if (in_specs[k].ndim > 0 && in_specs[0].ndim > 0 &&
            in_specs[k].shape[0] < 0 && in_specs[0].shape[0] < 0 &&
            req->inputs[k].shape[0] != req->inputs[0].shape[0]) {
            st = td_error_set(err, TD_EINVAL,
                              "inputs \"%s\" and \"%s\" have different "
                              "batch sizes (%lld and %lld)",
                              in_specs[0].name, in_specs[k].name,
                              (long long)req->inputs[0].shape[0],
                              (long long)req->inputs[k].shape[0]);
            goto out;
        }
    }
    outputs = json_object_get(root, "outputs");
    if (outputs && !json_is_array(outputs)) {
        st = td_error_set(err, TD_EINVAL, "\"outputs\" must be an array");
        goto out;
    }
    for (i = 0; outputs && i < json_array_size(outputs); i++) {
        json_t *o = json_array_get(outputs, i);
        json_t *name = json_object_get(o, "name");
        json_t *params = json_object_get(o, "parameters");
        json_t *cls = params ? json_object_get(params, "classification")
                             : NULL;
        int found = -1;
        if (!json_is_string(name)) {
            st = td_error_set(err, TD_EINVAL,
                              "outputs[%zu] needs a string \"name\"", i);
            goto out;
        }
        for (k = 0; k < n_out; k++)
            if (strcmp(out_specs[k].name, json_string_value(name)) == 0)
                found = k;
        if (found < 0 || req->n_outputs >= TD_OIP_MAX_TENSORS) {
            st = td_error_set(err, TD_EINVAL,
                              "unknown output \"%s\"; the model's first "
                              "output is \"%s\"",
                              json_string_value(name), out_specs[0].name);
            goto out;
        }
        snprintf(req->outputs[req->n_outputs].name, 64, "%s",
                 out_specs[found].name);
        if (cls) {
            if (!json_is_integer(cls) || json_integer_value(cls) < 1 ||
                json_integer_value(cls) > 100000) {
                st = td_error_set(err, TD_EINVAL,
                                  "output \"%s\": parameters.classification "
                                  "must be a positive integer",
                                  out_specs[found].name);
                goto out;
            }
            req->outputs[req->n_outputs].classification =
                (int)json_integer_value(cls);
        }
        req->n_outputs++;
    }
out:
    json_decref(root);
    return st;
}

/* ------------------------------------------------------------ response */

static json_t *value_json(const td_tensor *t, size_t i)
{
    double v;
    switch (t->dtype) {
    case TD_DT_F32:
        v = ((const float *)t->data)[i];
        break;
    case TD_DT_F64:
        v = ((const double *)t->data)[i];
        break;
    case TD_DT_I64:
        return json_integer(((const int64_t *)t->data)[i]);
    case TD_DT_I32:
        return json_integer(((const int32_t *)t->data)[i]);
    case TD_DT_U8:
        return json_integer(((const uint8_t *)t->data)[i]);
    case TD_DT_BOOL:
        return json_boolean(((const uint8_t *)t->data)[i]);
    default:
        return json_null();
    }
    /* JSON has no NaN or infinity: they are written as null. */
    return isfinite(v) ? json_real(v) : json_null();
}

static double value_double(const td_tensor *t, size_t i)
{
    switch (t->dtype) {
    case TD_DT_F32:
        return ((const float *)t->data)[i];
    case TD_DT_F64:
        return ((const double *)t->data)[i];
    case TD_DT_I64:
        return (double)((const int64_t *)t->data)[i];
    case TD_DT_I32:
        return ((const int32_t *)t->data)[i];
    default:
        return 0;
    }
}

/* Top-k of each row of a (N, C) tensor as Triton's "score:index:label". */
static json_t *classification_json(const td_tensor *t, int k,
                                   const char *const *labels, int n_labels,
                                   json_t *shape)
{
    size_t rows = t->ndim >= 2 ? (size_t)t->shape[0] : 1;
    size_t cols = t->ndim >= 1 ? (size_t)t->shape[t->ndim - 1] : 1;
    size_t r, j, kk = (size_t)k < cols ? (size_t)k : cols;
    json_t *data = json_array();
    int *idx = malloc((cols ? cols : 1) * sizeof *idx);
    if (!data || !idx) {
        free(idx);
        json_decref(data);
        return NULL;
    }
    for (r = 0; r < rows; r++) {
        size_t base = r * cols;
        /* Partial selection sort: k is small. NaN sorts last. */
        for (j = 0; j < cols; j++)
            idx[j] = (int)j;
        for (j = 0; j < kk; j++) {
            size_t best = j, m;
            for (m = j + 1; m < cols; m++) {
                double a = value_double(t, base + (size_t)idx[m]);
                double b = value_double(t, base + (size_t)idx[best]);
                if ((a > b) || (isnan(b) && !isnan(a)))
                    best = m;
            }
            if (best != j) {
                int tmp = idx[j];
                idx[j] = idx[best];
                idx[best] = tmp;
            }
        }
        for (j = 0; j < kk; j++) {
            char s[512];
            int c = idx[j];
            double v = value_double(t, base + (size_t)c);
            if (labels && c < n_labels)
                snprintf(s, sizeof s, "%.6g:%d:%s", v, c, labels[c]);
            else
                snprintf(s, sizeof s, "%.6g:%d", v, c);
            json_array_append_new(data, json_string(s));
        }
    }
    free(idx);
    json_array_append_new(shape, json_integer((json_int_t)rows));
    json_array_append_new(shape, json_integer((json_int_t)kk));
    return data;
}

td_status td_oip_response(const char *model_name, const td_oip_request *req,
                          const td_tensor *outputs, int n_outputs,
                          const char *const *labels, int n_labels,
                          char **body, size_t *len, td_error *err)
{
    json_t *root = json_object(), *outs = json_array();
    int i, j;
    *body = NULL;
    *len = 0;
    if (!root || !outs) {
        json_decref(root);
        json_decref(outs);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    json_object_set_new(root, "model_name", json_string(model_name));
    json_object_set_new(root, "model_version", json_string("1"));
    if (req->id)
        json_object_set_new(root, "id", json_string(req->id));
    json_object_set_new(root, "outputs", outs);
    for (i = 0; i < n_outputs; i++) {
        const td_tensor *t = &outputs[i];
        int cls = 0, wanted = req->n_outputs == 0;
        json_t *o, *shape, *data;
        size_t n = 1, e;
        for (j = 0; j < req->n_outputs; j++) {
            if (strcmp(req->outputs[j].name, t->name) == 0) {
                wanted = 1;
                cls = req->outputs[j].classification;
            }
        }
        if (!wanted)
            continue;
        o = json_object();
        shape = json_array();
        if (!o || !shape) {
            json_decref(o);
            json_decref(shape);
            goto oom;
        }
        json_object_set_new(o, "name", json_string(t->name));
        if (cls) {
            data = classification_json(t, cls, labels, n_labels, shape);
            json_object_set_new(o, "datatype", json_string("BYTES"));
        } else {
            for (j = 0; j < t->ndim; j++) {
                json_array_append_new(shape, json_integer(t->shape[j]));
                n *= (size_t)t->shape[j];
            }
            data = json_array();
            for (e = 0; data && e < n; e++)
                json_array_append_new(data, value_json(t, e));
            json_object_set_new(o, "datatype",
                                json_string(td_oip_dtype_name(t->dtype)));
        }
        json_object_set_new(o, "shape", shape);
        if (!data) {
            json_decref(o);
            goto oom;
        }
        json_object_set_new(o, "data", data);
        json_array_append_new(outs, o);
    }
    *body = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(root);
    if (!*body)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    *len = strlen(*body);
    return TD_OK;
oom:
    json_decref(root);
    return td_error_set(err, TD_ENOMEM, "out of memory");
}
