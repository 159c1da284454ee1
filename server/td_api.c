/* td_api: the HTTP endpoints - Open Inference Protocol v2 and /metrics.
 *
 * Cheap answers (health, metadata, metrics) are built on the loop thread;
 * inference (parsing, compute, serialising) runs on the pool. */
#include "config.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "td_api.h"
#include "td_batcher.h"
#include "td_buf.h"
#include "td_oip.h"
#include "td_router.h"
#include "td_server.h"

#define JSON_TYPE "application/json"

static void api_req_free(void *p)
{
    td_api_req *a = p;
    if (!a)
        return;
    td_infer_job_free(a->job);
    if (a->model)
        td_model_unref(a->model);
    free(a);
}

const char *td_api_entry_state(const td_entry *e)
{
    if (e->model)
        return "READY";
    return e->unloaded ? "UNLOADED" : "UNAVAILABLE";
}

void td_api_respond_json(td_request *req, int status, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(9))
                     : NULL;
    json_decref(obj);
    if (!text) {
        td_http_respond_error(req, 500, "out of memory");
        return;
    }
    td_http_respond_owned(req, status, JSON_TYPE, text, strlen(text));
}

/* A version segment must name the one version we serve. */
static int check_version(td_request *req, const td_match *m)
{
    if (m->version[0] && strcmp(m->version, "1") != 0) {
        td_http_respond_error(req, 404,
                              "model \"%s\" has no version \"%s\" (tinyd "
                              "serves version \"1\")",
                              m->name, m->version);
        return 0;
    }
    return 1;
}

static td_entry *find_entry(td_server *s, td_request *req, const td_match *m)
{
    td_entry *e = td_registry_find(&s->registry, m->name);
    if (!e) {
        td_http_respond_error(req, 404, "unknown model \"%s\"", m->name);
        return NULL;
    }
    return check_version(req, m) ? e : NULL;
}

/* ------------------------------------------------------------ metadata */

static void server_meta(td_request *req)
{
    td_api_respond_json(req, 200,
                 json_pack("{s:s, s:s, s:[s,s]}", "name", "tinyd", "version",
                           PACKAGE_VERSION, "extensions", "classification",
                           "binary_tensor_data"));
}

static json_t *specs_json(const td_tensor_spec *specs, int n)
{
    json_t *arr = json_array();
    int i, d;
    for (i = 0; arr && i < n; i++) {
        json_t *shape = json_array();
        for (d = 0; shape && d < specs[i].ndim; d++)
            json_array_append_new(shape, json_integer(specs[i].shape[d]));
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:o*}", "name", specs[i].name,
                           "datatype", td_oip_dtype_name(specs[i].dtype),
                           "shape", shape));
    }
    return arr;
}

static void model_meta(td_server *s, td_request *req, const td_match *m)
{
    td_entry *e = find_entry(s, req, m);
    const td_tensor_spec *in, *out;
    int n_in, n_out;
    json_t *obj;
    if (!e)
        return;
    if (!e->model) {
        td_http_respond_error(req, 503, "model \"%s\" is not available: %s",
                              e->name,
                              e->unloaded ? "unloaded on request"
                              : e->reason ? e->reason
                                          : "not loaded");
        return;
    }
    n_in = e->model->kind->inputs(e->model->impl, &in);
    n_out = e->model->kind->outputs(e->model->impl, &out);
    obj = json_pack("{s:s, s:[s], s:s, s:s, s:o*, s:o*}", "name", e->name,
                    "versions", "1", "platform", e->model->kind->platform,
                    "kind", e->model->kind->kind, "inputs",
                    specs_json(in, n_in), "outputs", specs_json(out, n_out));
    if (obj && e->model->kind->describe) {
        json_t *params = e->model->kind->describe(e->model->impl);
        if (params && e->model->kind->labels) {
            int n_labels = 0, k;
            const char *const *labels =
                e->model->kind->labels(e->model->impl, &n_labels);
            json_t *arr = labels ? json_array() : NULL;
            for (k = 0; arr && k < n_labels; k++)
                json_array_append_new(arr, json_string(labels[k]));
            if (arr)
                json_object_set_new(params, "labels", arr);
        }
        if (params)
            json_object_set_new(obj, "parameters", params);
    }
    if (obj && e->reason)
        json_object_set_new(obj, "reload_error", json_string(e->reason));
    td_api_respond_json(req, 200, obj);
}

static void model_ready(td_server *s, td_request *req, const td_match *m)
{
    td_entry *e = find_entry(s, req, m);
    int ok;
    if (!e)
        return;
    ok = e->model != NULL && !s->draining;
    td_api_respond_json(req, ok ? 200 : 503,
                 json_pack("{s:s, s:b}", "name", e->name, "ready", ok));
}

static void models_index(td_server *s, td_request *req)
{
    json_t *arr = json_array();
    size_t i;
    for (i = 0; arr && i < s->registry.n_entries; i++) {
        const td_entry *e = &s->registry.entries[i];
        json_t *o = json_pack("{s:s, s:s, s:s}", "name", e->name, "kind",
                              e->model ? e->model->kind->kind : "unknown",
                              "state", td_api_entry_state(e));
        if (o && e->reason)
            json_object_set_new(o, "reason", json_string(e->reason));
        json_array_append_new(arr, o);
    }
    td_api_respond_json(req, 200, json_pack("{s:o*}", "models", arr));
}

/* ------------------------------------------------------------ metrics */

typedef uint64_t (*queue_stat_fn)(const td_batch_queue *q);

static uint64_t stat_batches(const td_batch_queue *q)
{
    return q->stats.batches;
}
static uint64_t stat_queue_us(const td_batch_queue *q)
{
    return q->stats.queue_ns / 1000;
}
static uint64_t stat_compute_us(const td_batch_queue *q)
{
    return q->stats.compute_ns / 1000;
}

/* One counter family with a sample per model (0 before its first batch). */
static void queue_family(td_server *s, td_buf *b, const char *metric,
                         const char *help, queue_stat_fn stat)
{
    size_t i;
    td_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", metric, help,
                  metric);
    for (i = 0; i < s->registry.n_entries; i++) {
        const td_batch_queue *q =
            td_batcher_queue(&s->batcher, s->registry.entries[i].name);
        td_buf_printf(b, "%s{model=\"", metric);
        td_metrics_label(b, s->registry.entries[i].name);
        td_buf_printf(b, "\"} %llu\n",
                      q ? (unsigned long long)stat(q) : 0ull);
    }
}

/* Triton's exec count, queue and compute time, and a batch size
 * histogram, from the batcher's per-model queues. */
static void batch_metrics(td_server *s, td_buf *b)
{
    static const char *const le[9] = {"1", "2", "4", "8", "16", "32",
                                      "64", "128", "+Inf"};
    size_t i;
    int k;
    queue_family(s, b, "tinyd_inference_exec_count_total",
                 "Forward passes (a merged batch counts once).",
                 stat_batches);
    queue_family(s, b, "tinyd_inference_queue_duration_us_total",
                 "Microseconds requests waited for their batch.",
                 stat_queue_us);
    queue_family(s, b, "tinyd_inference_compute_duration_us_total",
                 "Microseconds of forward passes.", stat_compute_us);
    td_buf_printf(b, "# HELP tinyd_inference_batch_size Rows per forward "
                     "pass.\n"
                     "# TYPE tinyd_inference_batch_size histogram\n");
    for (i = 0; i < s->registry.n_entries; i++) {
        const td_batch_queue *q =
            td_batcher_queue(&s->batcher, s->registry.entries[i].name);
        uint64_t cum = 0;
        if (!q)
            continue;
        for (k = 0; k < 9; k++) {
            cum += q->stats.size_bucket[k];
            td_buf_printf(b, "tinyd_inference_batch_size_bucket{model=\"");
            td_metrics_label(b, q->name);
            td_buf_printf(b, "\",le=\"%s\"} %llu\n", le[k],
                          (unsigned long long)cum);
        }
        td_buf_printf(b, "tinyd_inference_batch_size_sum{model=\"");
        td_metrics_label(b, q->name);
        td_buf_printf(b, "\"} %llu\n", (unsigned long long)q->stats.rows);
        td_buf_printf(b, "tinyd_inference_batch_size_count{model=\"");
        td_metrics_label(b, q->name);
        td_buf_printf(b, "\"} %llu\n", (unsigned long long)q->stats.batches);
    }
}

static void metrics(td_server *s, td_request *req)
{
    td_buf b;
    size_t i, ready = 0, failed = 0, len;
    char *text;
    td_buf_init(&b);
    td_metrics_render_http(&s->metrics, &b);
    td_buf_printf(&b,
                  "# HELP tinyd_http_requests_in_flight Requests between "
                  "their headers and their completion.\n"
                  "# TYPE tinyd_http_requests_in_flight gauge\n"
                  "tinyd_http_requests_in_flight %u\n",
                  td_http_in_flight(s->http));
    for (i = 0; i < s->registry.n_entries; i++) {
        if (s->registry.entries[i].model)
            ready++;
        else
            failed++;
    }
    td_buf_printf(&b,
                  "# HELP tinyd_models Servable things in the repository, "
                  "by state.\n"
                  "# TYPE tinyd_models gauge\n"
                  "tinyd_models{state=\"READY\"} %zu\n"
                  "tinyd_models{state=\"UNAVAILABLE\"} %zu\n"
                  "# HELP tinyd_reloads_total Repository scans, by result (failed: the "
                  "directory could not be read).\n"
                  "# TYPE tinyd_reloads_total counter\n"
                  "tinyd_reloads_total{result=\"ok\"} %llu\n"
                  "tinyd_reloads_total{result=\"failed\"} %llu\n"
                  "# HELP tinyd_model_load_failures_total Files that failed "
                  "to load (new or changed).\n"
                  "# TYPE tinyd_model_load_failures_total counter\n"
                  "tinyd_model_load_failures_total %llu\n",
                  ready, failed,
                  (unsigned long long)s->registry.reloads_ok,
                  (unsigned long long)s->registry.reloads_failed,
                  (unsigned long long)s->registry.load_failures);
#define MODEL_FAMILY(metric, help, type, field)                               \
    do {                                                                      \
        td_buf_printf(&b, "# HELP " metric " " help "\n# TYPE " metric       \
                          " " type "\n");                                     \
        for (i = 0; i < s->registry.n_entries; i++) {                        \
            td_buf_printf(&b, metric "{model=\"");                            \
            td_metrics_label(&b, s->registry.entries[i].name);                \
            td_buf_printf(&b, "\"} %llu\n",                                   \
                          (unsigned long long)s->registry.entries[i].field);  \
        }                                                                     \
    } while (0)
    MODEL_FAMILY("tinyd_inference_request_success_total",
                 "Inference requests that succeeded.", "counter", success);
    MODEL_FAMILY("tinyd_inference_request_failure_total",
                 "Inference requests that failed.", "counter", failure);
    MODEL_FAMILY("tinyd_inference_count_total",
                 "Inferences performed (a batch of n counts n).", "counter",
                 inferences);
#undef MODEL_FAMILY
    batch_metrics(s, &b);
    {
        unsigned counts[5];
        int k;
        td_jobs_counts(&s->jobs, counts);
        td_buf_printf(&b, "# HELP tinyd_graph_jobs Graph build jobs, by "
                          "state.\n# TYPE tinyd_graph_jobs gauge\n");
        for (k = 0; k < 5; k++)
            td_buf_printf(&b, "tinyd_graph_jobs{state=\"%s\"} %u\n",
                          td_job_state_name((td_job_state)k), counts[k]);
    }
    text = td_buf_take(&b, &len);
    if (!text) {
        td_http_respond_error(req, 500, "out of memory");
        return;
    }
    td_http_respond_owned(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                          text, len);
}

/* ------------------------------------------------------------ inference */

/* Pool thread: the OIP response for one job's output rows. */
static td_status oip_write(td_infer_job *job, const td_tensor *outputs,
                           int n_outputs, td_error *err)
{
    const td_servable_kind *k = job->model->kind;
    const char *const *labels = NULL;
    int n_labels = 0;
    if (k->labels)
        labels = k->labels(job->model->impl, &n_labels);
    return td_oip_response(job->model->name, &job->oip, outputs, n_outputs,
                           labels, n_labels, &job->resp, &job->resp_len,
                           err);
}

/* Pool thread: parse and check the request against the model. */
static void infer_parse(td_request *req)
{
    td_api_req *a = req->route_data;
    td_infer_job *job = a->job;
    const td_servable_kind *k = job->model->kind;
    const td_tensor_spec *in, *out;
    int n_in = k->inputs(job->model->impl, &in);
    int n_out = k->outputs(job->model->impl, &out);
    td_oip_limits limits = {TD_OIP_DEFAULT_MAX_ELEMENTS, 0};
    td_error_clear(&job->err);
    job->status = td_oip_parse(req->body, req->body_len, a->json_len, in,
                               n_in, out, n_out, &limits, &job->oip,
                               &job->err);
    if (job->status == TD_OK) {
        job->rows = job->oip.inputs[0].ndim > 0 ? job->oip.inputs[0].shape[0]
                                                : 1;
        if (job->rows == 0)
            job->status = td_error_set(&job->err, TD_EINVAL,
                                       "input \"%s\": the batch is empty "
                                       "(shape[0] is 0)",
                                       in[0].name);
    }
}

/* Loop thread: a bad request is answered now; a good one is batched. */
void td_api_submit_prepared(td_request *req)
{
    td_server *s = req->app;
    td_api_req *a = req->route_data;
    td_infer_job *job = a->job;
    if (job->status != TD_OK) {
        td_http_respond_error(req, td_status_http(job->status), "%s",
                              job->err.msg);
        return;
    }
    a->job = NULL;
    a->rows = job->rows;
    td_batcher_submit(&s->batcher, job);
}

static void infer_start(td_server *s, td_request *req, td_api_req *a)
{
    td_entry *e = find_entry(s, req, &a->match);
    const char *hlen;
    if (!e)
        return;
    if (!e->model && !a->model) {
        td_http_respond_error(req, 503, "model \"%s\" is not available: %s",
                              e->name,
                              e->unloaded ? "unloaded on request"
                              : e->reason ? e->reason
                                          : "not loaded");
        return;
    }
    a->json_len = req->body_len;
    hlen = td_http_header(req, "Inference-Header-Content-Length");
    if (hlen) {
        char *end;
        unsigned long long v = strtoull(hlen, &end, 10);
        if (end == hlen || *end || v > req->body_len) {
            td_http_respond_error(req, 400,
                                  "Inference-Header-Content-Length \"%s\" is "
                                  "not a length within the body of %zu "
                                  "bytes",
                                  hlen, req->body_len);
            return;
        }
        a->json_len = (size_t)v;
    }
    a->job = calloc(1, sizeof *a->job);
    if (!a->job) {
        td_http_respond_error(req, 500, "out of memory");
        return;
    }
    a->job->req = req;
    a->job->model = a->model ? a->model : e->model;
    td_model_ref(a->job->model);
    a->job->write = oip_write;
    td_http_defer(req, infer_parse, td_api_submit_prepared);
}

/* ------------------------------------------------------------ dispatch */

void td_api_on_headers(void *app, td_request *req)
{
    td_server *s = app;
    td_api_req *a;
    int code;
    a = calloc(1, sizeof *a);
    if (!a) {
        td_http_respond_error(req, 500, "out of memory");
        return;
    }
    req->route_data = a;
    req->route_free = api_req_free;
    code = td_route(req->method, req->url, &a->match);
    req->route = a->match.route;
    if (code == 404) {
        td_http_respond_error(req, 404, "no such endpoint: %s %s",
                              req->method, req->url);
        return;
    }
    if (code == 405) {
        char allow[64];
        td_methods_str(a->match.allowed, allow, sizeof allow);
        td_http_add_header(req, "Allow", "%s", allow);
        td_http_respond_error(req, 405, "method %s is not allowed on %s "
                                        "(allowed: %s)",
                              req->method, req->url, allow);
        return;
    }
    /* Tokens guard every endpoint that changes state, checked before the
     * body is read; with --protect-reads, every endpoint but health. */
    {
        td_route_id r = a->match.route;
        int writes = r == TD_ROUTE_GRAPH_SUBMIT || r == TD_ROUTE_GRAPH_DELETE ||
                     r == TD_ROUTE_REPO_LOAD || r == TD_ROUTE_REPO_UNLOAD;
        int health = r == TD_ROUTE_HEALTH_LIVE || r == TD_ROUTE_HEALTH_READY;
        if (writes || (s->cfg.protect_reads && !health)) {
            int verdict = td_auth_check(&s->auth,
                                        td_http_header(req, "Authorization"));
            if (verdict == 401) {
                td_http_add_header(req, "WWW-Authenticate",
                                   "Bearer realm=\"tinyd\"");
                td_http_respond_error(req, 401,
                                      "this endpoint needs a bearer token "
                                      "(Authorization: Bearer TOKEN)");
                return;
            }
            if (verdict == 403) {
                td_http_respond_error(req, 403,
                                      "the bearer token is not valid");
                return;
            }
        }
    }
    /* A request that arrives after SIGTERM (on a kept-alive connection)
     * is not in flight: refuse it and close the connection. Health and
     * metrics still answer (ready says false). */
    if (s->draining && a->match.route != TD_ROUTE_HEALTH_LIVE &&
        a->match.route != TD_ROUTE_HEALTH_READY &&
        a->match.route != TD_ROUTE_METRICS) {
        td_http_add_header(req, "Connection", "close");
        td_http_respond_error(req, 503, "server is draining (shutting down)");
        return;
    }
    /* Unknown models are refused before their body is read; a known one
     * is pinned now: the request runs on the version serving when it
     * began, whatever a reload does during its upload. */
    if (a->match.route == TD_ROUTE_MODEL_INFER ||
        a->match.route == TD_ROUTE_CLASSIFY) {
        if (!td_registry_find(&s->registry, a->match.name)) {
            td_http_respond_error(req, 404, "unknown model \"%s\"",
                                  a->match.name);
            return;
        }
        a->model = td_registry_acquire(&s->registry, a->match.name);
    }
}

void td_api_on_body(void *app, td_request *req)
{
    td_server *s = app;
    td_api_req *a = req->route_data;
    switch (a->match.route) {
    case TD_ROUTE_SERVER_META:
        server_meta(req);
        break;
    case TD_ROUTE_HEALTH_LIVE:
        td_api_respond_json(req, 200, json_pack("{s:b}", "live", 1));
        break;
    case TD_ROUTE_HEALTH_READY: {
        int ok = s->ready && !s->draining;
        td_api_respond_json(req, ok ? 200 : 503, json_pack("{s:b}", "ready", ok));
        break;
    }
    case TD_ROUTE_MODELS:
        models_index(s, req);
        break;
    case TD_ROUTE_MODEL_META:
        model_meta(s, req, &a->match);
        break;
    case TD_ROUTE_MODEL_READY:
        model_ready(s, req, &a->match);
        break;
    case TD_ROUTE_MODEL_INFER:
        infer_start(s, req, a);
        break;
    case TD_ROUTE_METRICS:
        metrics(s, req);
        break;
    case TD_ROUTE_CLASSIFY:
        td_api_classify(s, req, a);
        break;
    case TD_ROUTE_GRAPH_SUBMIT:
        td_api_graph_submit(s, req);
        break;
    case TD_ROUTE_REPO_INDEX:
        td_api_repo_index(s, req);
        break;
    case TD_ROUTE_REPO_LOAD:
        td_api_repo_load(s, req, a->match.name);
        break;
    case TD_ROUTE_REPO_UNLOAD:
        td_api_repo_unload(s, req, a->match.name);
        break;
    case TD_ROUTE_GRAPH_LIST:
        td_api_graph_list(s, req);
        break;
    case TD_ROUTE_GRAPH_GET:
        td_api_graph_get(s, req, a->match.name);
        break;
    case TD_ROUTE_GRAPH_DELETE:
        td_api_graph_delete(s, req, a->match.name);
        break;
    default:
        td_http_respond_error(req, 404, "no such endpoint: %s %s",
                              req->method, req->url);
    }
}

void td_api_on_complete(void *app, td_request *req, int ok)
{
    td_server *s = app;
    td_api_req *a = req->route_data;
    double secs = (double)(td_now_ns() - req->start_ns) / 1e9;
    td_metrics_observe(&s->metrics, (td_route_id)req->route, req->status,
                       secs);
    if (a && (a->match.route == TD_ROUTE_MODEL_INFER ||
              a->match.route == TD_ROUTE_CLASSIFY)) {
        td_entry *e = td_registry_find(&s->registry, a->match.name);
        if (e) {
            if (req->status == 200) {
                e->success++;
                e->inferences += (uint64_t)a->rows;
            } else if (req->status != 404) {
                e->failure++;
            }
        }
    }
    TD_LOG_DEBUG(&s->log, "%s %s %d %.3f ms%s", req->method, req->url,
                 req->status, secs * 1e3, ok ? "" : " (connection closed)");
}
