/* td_api_classify: POST /v1/models/{name}:classify - images in, labels out.
 *
 * The body is either one raw image (Content-Type image/jpeg or image/png)
 * or JSON {"instances": [{"b64": "..."}, ...], "top_k": k}. Every image is
 * probed before anything is decoded: too many images or too many pixels
 * is 413, a corrupt header 400. Decoding and the model's eval transform
 * (resize, centre crop, normalise) run on the pool; the batch then joins
 * the model's dynamic batcher like any infer request. The answer is
 * {"model_name", "predictions": [[{"label", "index", "probability"}, ...]
 * per image]} with softmax probabilities, most likely first. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "td_api.h"
#include "td_base64.h"
#include "td_batcher.h"
#include "td_image.h"

#define MAX_TOP_K 1000

typedef struct classify_req {
    int top_k;
    int n_images;
    unsigned char **bytes;   /* owned: each image's encoded bytes */
    size_t *lens;
    int raw;                 /* 1: bytes[0] aliases req->body */
} classify_req;

static void classify_req_free(void *p)
{
    classify_req *c = p;
    int i;
    if (!c)
        return;
    for (i = 0; i < c->n_images; i++)
        if (!(c->raw && i == 0))
            free(c->bytes[i]);
    free(c->bytes);
    free(c->lens);
    free(c);
}

/* Pool thread: softmax + top-k of each row. */
static td_status classify_write(td_infer_job *job, const td_tensor *outputs,
                                int n_outputs, td_error *err)
{
    const classify_req *c = job->write_data;
    const td_servable_kind *k = job->model->kind;
    const float *logits = outputs[0].data;
    int64_t rows = outputs[0].shape[0], classes = outputs[0].shape[1], r;
    const char *const *labels = NULL;
    int n_labels = 0, top = c->top_k < classes ? c->top_k : (int)classes;
    json_t *preds = json_array(), *root;
    int *order = malloc((size_t)classes * sizeof *order);
    double *prob = malloc((size_t)classes * sizeof *prob);
    (void)n_outputs;
    if (k->labels)
        labels = k->labels(job->model->impl, &n_labels);
    if (!preds || !order || !prob) {
        free(order);
        free(prob);
        json_decref(preds);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    for (r = 0; r < rows; r++) {
        const float *z = logits + r * classes;
        double mx = -INFINITY, sum = 0;
        json_t *row = json_array();
        int64_t j;
        int t;
        for (j = 0; j < classes; j++)
            if (z[j] > mx)
                mx = z[j];
        for (j = 0; j < classes; j++) {
            prob[j] = isfinite(mx) ? exp((double)z[j] - mx) : 0;
            sum += prob[j];
            order[j] = (int)j;
        }
        for (t = 0; t < top; t++) {
            int best = t, q;
            for (q = t + 1; q < classes; q++)
                if (prob[order[q]] > prob[order[best]])
                    best = q;
            q = order[t];
            order[t] = order[best];
            order[best] = q;
            q = order[t];
            json_array_append_new(
                row, json_pack("{s:s, s:i, s:f}", "label",
                               labels && q < n_labels ? labels[q] : "",
                               "index", q, "probability",
                               sum > 0 ? prob[q] / sum : 0.0));
        }
        json_array_append_new(preds, row);
    }
    free(order);
    free(prob);
    root = json_pack("{s:s, s:s, s:o}", "model_name", job->model->name,
                     "model_version", "1", "predictions", preds);
    job->resp = root ? json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(7))
                     : NULL;
    json_decref(root);
    if (!job->resp)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    job->resp_len = strlen(job->resp);
    return TD_OK;
}

/* Pool thread: decode every image and build the (N,C,H,W) input. */
static void classify_prepare(td_request *req)
{
    td_server *s = req->app;
    td_api_req *a = req->route_data;
    td_infer_job *job = a->job;
    classify_req *c = job->write_data;
    td_image_transform tf;
    td_image_limits lim = {TD_IMAGE_DEFAULT_MAX_SIDE,
                           TD_IMAGE_DEFAULT_MAX_SIDE,
                           s->cfg.max_image_pixels};
    td_tensor *t = &job->oip.inputs[0];
    size_t per_image;
    int i;
    td_error_clear(&job->err);
    job->model->kind->image_transform(job->model->impl, &tf);
    per_image = (size_t)td_image_transform_channels(&tf) * (size_t)tf.out_h *
                (size_t)tf.out_w;
    snprintf(t->name, sizeof t->name, "input");
    t->dtype = TD_DT_F32;
    t->ndim = 4;
    t->shape[0] = c->n_images;
    t->shape[1] = td_image_transform_channels(&tf);
    t->shape[2] = tf.out_h;
    t->shape[3] = tf.out_w;
    t->nbytes = per_image * (size_t)c->n_images * sizeof(float);
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    if (!t->data) {
        job->status = td_error_set(&job->err, TD_ENOMEM, "out of memory");
        return;
    }
    job->oip.n_inputs = 1;
    job->rows = c->n_images;
    for (i = 0; i < c->n_images; i++) {
        td_image img;
        td_arena *scratch;
        job->status = td_image_decode(c->bytes[i], c->lens[i], &lim, &img,
                                      &job->err);
        if (job->status != TD_OK) {
            td_error_prefix(&job->err, "image %d", i);
            return;
        }
        scratch = td_scratch_borrow(&s->scratch,
                                    td_image_preprocess_scratch(
                                        &tf, img.width, img.height));
        if (!scratch) {
            td_image_free(&img);
            job->status = td_error_set(&job->err, TD_ENOMEM,
                                       "out of memory preprocessing image %d",
                                       i);
            return;
        }
        job->status = td_image_preprocess(
            &img, &tf, (float *)t->data + (size_t)i * per_image, scratch,
            &job->err);
        td_scratch_return(&s->scratch, scratch);
        td_image_free(&img);
        if (job->status != TD_OK) {
            td_error_prefix(&job->err, "image %d", i);
            return;
        }
    }
    job->status = TD_OK;
    /* The encoded images are not needed past this point. */
    for (i = 0; i < c->n_images; i++) {
        if (!(c->raw && i == 0))
            free(c->bytes[i]);
        c->bytes[i] = NULL;
    }
}

/* Loop thread: probe one image's header against the limits. */
static int probe_image(td_server *s, td_request *req, int i,
                       const unsigned char *bytes, size_t len)
{
    td_image_format fmt;
    int w, h;
    td_error err;
    td_image_limits lim = {TD_IMAGE_DEFAULT_MAX_SIDE,
                           TD_IMAGE_DEFAULT_MAX_SIDE,
                           s->cfg.max_image_pixels};
    if (td_image_probe(bytes, len, &fmt, &w, &h, &err) != TD_OK) {
        td_http_respond_error(req, 400, "image %d: %s", i, err.msg);
        return -1;
    }
    if (td_image_check_limits(w, h, &lim, &err) != TD_OK) {
        td_http_respond_error(req, 413, "image %d: %s", i, err.msg);
        return -1;
    }
    return 0;
}

static int parse_top_k(td_request *req, json_t *v, const char *qs, int *k)
{
    char *end;
    long x;
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > MAX_TOP_K) {
            td_http_respond_error(req, 400,
                                  "\"top_k\" must be an integer from 1 to "
                                  "%d",
                                  MAX_TOP_K);
            return -1;
        }
        *k = (int)json_integer_value(v);
        return 0;
    }
    if (qs) {
        x = strtol(qs, &end, 10);
        if (end == qs || *end || x < 1 || x > MAX_TOP_K) {
            td_http_respond_error(req, 400,
                                  "top_k \"%s\" must be an integer from 1 "
                                  "to %d",
                                  qs, MAX_TOP_K);
            return -1;
        }
        *k = (int)x;
    }
    return 0;
}

void td_api_classify(td_server *s, td_request *req, td_api_req *a)
{
    td_entry *e = td_registry_find(&s->registry, a->match.name);
    const char *ctype = td_http_header(req, "Content-Type");
    classify_req *c;
    int i;
    if (!e) {
        td_http_respond_error(req, 404, "unknown model \"%s\"",
                              a->match.name);
        return;
    }
    if (!a->model) {
        td_http_respond_error(req, 503, "model \"%s\" is not available: %s",
                              e->name, e->reason ? e->reason : "not loaded");
        return;
    }
    if (!a->model->kind->image_transform) {
        td_http_respond_error(req, 400,
                              "model \"%s\" (kind %s) does not classify "
                              "images; use /v2/models/%s/infer",
                              e->name, a->model->kind->kind, e->name);
        return;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        td_http_respond_error(req, 500, "out of memory");
        return;
    }
    c->top_k = 5;
    if (ctype && (strncmp(ctype, "image/jpeg", 10) == 0 ||
                  strncmp(ctype, "image/png", 9) == 0)) {
        c->raw = 1;
        c->n_images = 1;
        c->bytes = calloc(1, sizeof *c->bytes);
        c->lens = calloc(1, sizeof *c->lens);
        if (!c->bytes || !c->lens) {
            classify_req_free(c);
            td_http_respond_error(req, 500, "out of memory");
            return;
        }
        c->bytes[0] = (unsigned char *)req->body;
        c->lens[0] = req->body_len;
        if (parse_top_k(req, NULL, td_http_query(req, "top_k"), &c->top_k) ||
            probe_image(s, req, 0, c->bytes[0], c->lens[0])) {
            classify_req_free(c);
            return;
        }
    } else {
        json_error_t jerr;
        json_t *root = json_loadb(req->body, req->body_len,
                                  JSON_REJECT_DUPLICATES, &jerr);
        json_t *inst = root ? json_object_get(root, "instances") : NULL;
        size_t n;
        if (!root) {
            classify_req_free(c);
            td_http_respond_error(req, 400,
                                  "malformed JSON at line %d, column %d: %s",
                                  jerr.line, jerr.column, jerr.text);
            return;
        }
        if (!json_is_array(inst)) {
            json_decref(root);
            classify_req_free(c);
            td_http_respond_error(req, 400,
                                  "the request needs an \"instances\" array "
                                  "of {\"b64\": \"...\"} images (or send one "
                                  "image with Content-Type image/jpeg or "
                                  "image/png)");
            return;
        }
        n = json_array_size(inst);
        if (n == 0) {
            json_decref(root);
            classify_req_free(c);
            td_http_respond_error(req, 400, "\"instances\" is empty");
            return;
        }
        if (n > s->cfg.max_images) {
            json_decref(root);
            classify_req_free(c);
            td_http_respond_error(req, 413,
                                  "%zu images in one request, more than the "
                                  "limit of %u",
                                  n, s->cfg.max_images);
            return;
        }
        if (parse_top_k(req, json_object_get(root, "top_k"),
                        td_http_query(req, "top_k"), &c->top_k)) {
            json_decref(root);
            classify_req_free(c);
            return;
        }
        c->bytes = calloc(n, sizeof *c->bytes);
        c->lens = calloc(n, sizeof *c->lens);
        if (!c->bytes || !c->lens) {
            json_decref(root);
            classify_req_free(c);
            td_http_respond_error(req, 500, "out of memory");
            return;
        }
        for (i = 0; i < (int)n; i++) {
            json_t *it = json_array_get(inst, (size_t)i);
            json_t *b64 = json_is_object(it) ? json_object_get(it, "b64")
                                             : it;
            const char *text = json_string_value(b64);
            size_t len = json_string_length(b64), bad = 0;
            long got;
            if (!json_is_string(b64)) {
                json_decref(root);
                classify_req_free(c);
                td_http_respond_error(req, 400,
                                      "instances[%d] must be {\"b64\": "
                                      "\"<base64 JPEG or PNG>\"}",
                                      i);
                return;
            }
            c->bytes[i] = malloc(len / 4 * 3 + 4);
            c->n_images = i + 1;
            if (!c->bytes[i]) {
                json_decref(root);
                classify_req_free(c);
                td_http_respond_error(req, 500, "out of memory");
                return;
            }
            got = td_base64_decode(text, len, c->bytes[i], &bad);
            if (got < 0) {
                json_decref(root);
                classify_req_free(c);
                td_http_respond_error(req, 400,
                                      "instances[%d].b64 is not base64 "
                                      "(character %zu)",
                                      i, bad);
                return;
            }
            c->lens[i] = (size_t)got;
            if (probe_image(s, req, i, c->bytes[i], c->lens[i])) {
                json_decref(root);
                classify_req_free(c);
                return;
            }
        }
        json_decref(root);
    }
    a->job = calloc(1, sizeof *a->job);
    if (!a->job) {
        classify_req_free(c);
        td_http_respond_error(req, 500, "out of memory");
        return;
    }
    a->job->req = req;
    a->job->model = a->model;
    td_model_ref(a->model);
    a->job->write = classify_write;
    a->job->write_data = c;
    a->job->write_free = classify_req_free;
    td_http_defer(req, classify_prepare, td_api_submit_prepared);
}
