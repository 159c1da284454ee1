/* td_api_graphs: submitting graphs and following their oracle builds.
 *
 *   POST   /v1/graphs?name=&format=&mode=&eps=   202 + Location
 *   GET    /v1/graphs                            every job
 *   GET    /v1/graphs/{id}                       one job, with progress
 *   DELETE /v1/graphs/{id}                       cancel, or delete the oracle
 *
 * The built oracle is served as the model NAME (OIP infer with INT64
 * "source"/"target"). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "td_api.h"

static int valid_name(const char *s)
{
    size_t i, n = strlen(s);
    if (n == 0 || n > TD_NAME_MAX || s[0] == '.')
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

void td_api_graph_submit(td_server *s, td_request *req)
{
    td_job_spec spec;
    const char *name = td_http_query(req, "name");
    const char *format = td_http_query(req, "format");
    const char *mode = td_http_query(req, "mode");
    const char *eps = td_http_query(req, "eps");
    const td_job *job;
    td_error err;
    td_status st;
    char *end;

    memset(&spec, 0, sizeof spec);
    if (name) {
        if (!valid_name(name)) {
            td_http_respond_error(req, 400,
                                  "name \"%s\" must be 1 to %d characters "
                                  "of A-Z a-z 0-9 _ - . (not starting "
                                  "with a dot)",
                                  name, TD_NAME_MAX);
            return;
        }
        if (td_registry_find(&s->registry, name) ||
            td_jobs_name_taken(&s->jobs, name)) {
            td_http_respond_error(req, 409,
                                  "the name \"%s\" is already in use by a "
                                  "model or a graph job",
                                  name);
            return;
        }
        snprintf(spec.name, sizeof spec.name, "%s", name);
    }
    if (!format)
        format = "auto";
    if (td_graph_format_parse(format) < 0) {
        td_http_respond_error(req, 400,
                              "format \"%s\" is not one of auto, dimacs, "
                              "edgelist, json",
                              format);
        return;
    }
    snprintf(spec.format, sizeof spec.format, "%s", format);
    if (!mode)
        mode = s->cfg_oracle_mode;
    if (td_oracle_mode_parse(mode) < 0) {
        td_http_respond_error(req, 400,
                              "mode \"%s\" is not one of labels, treecover",
                              mode);
        return;
    }
    snprintf(spec.mode, sizeof spec.mode, "%s", mode);
    spec.eps = 0.1;
    if (eps) {
        spec.eps = strtod(eps, &end);
        if (end == eps || *end || !(spec.eps > 0) || spec.eps > 1) {
            td_http_respond_error(req, 400,
                                  "eps \"%s\" must be a number in (0, 1]",
                                  eps);
            return;
        }
    }
    if (req->body_len == 0) {
        td_http_respond_error(req, 400,
                              "the request body is empty: send the graph "
                              "(DIMACS .gr, an edge list or JSON, gzip or "
                              "not)");
        return;
    }
    st = td_jobs_submit(&s->jobs, &spec, req->body, req->body_len, &job,
                        &err);
    if (st != TD_OK) {
        if (st == TD_EBUSY)
            td_http_add_header(req, "Retry-After", "%d", 30);
        td_http_respond_error(req, td_status_http(st), "%s", err.msg);
        return;
    }
    /* The job owns the upload now. */
    req->body = NULL;
    req->body_len = 0;
    td_http_add_header(req, "Location", "/v1/graphs/%s", job->id);
    td_http_add_header(req, "Retry-After", "%d", 1);
    td_api_respond_json(req, 202, td_jobs_get_json(&s->jobs, job->id));
}

void td_api_graph_list(td_server *s, td_request *req)
{
    td_api_respond_json(req, 200, json_pack("{s:o*}", "graphs",
                                            td_jobs_list_json(&s->jobs)));
}

void td_api_graph_get(td_server *s, td_request *req, const char *id)
{
    json_t *o = td_jobs_get_json(&s->jobs, id);
    if (!o) {
        td_http_respond_error(req, 404, "unknown graph job \"%s\"", id);
        return;
    }
    td_api_respond_json(req, 200, o);
}

typedef struct delete_wait {
    td_request *req;
    char id[64];
} delete_wait;

/* The rescan after a delete is over: the oracle is no longer served and
 * its name can be submitted again. */
static void delete_done(void *arg)
{
    delete_wait *w = arg;
    if (td_http_release(w->req)) {
        td_api_respond_json(w->req, 200,
                            json_pack("{s:s, s:b}", "id", w->id, "deleted",
                                      1));
        td_http_resume(w->req);
    }
    free(w);
}

void td_api_graph_delete(td_server *s, td_request *req, const char *id)
{
    td_error err;
    delete_wait *w;
    td_status st = td_jobs_delete(&s->jobs, id, &err);
    if (st != TD_OK) {
        td_http_respond_error(req, td_status_http(st), "%s", err.msg);
        return;
    }
    /* Answer once the registry has dropped the oracle, so that a client
     * may reuse the name as soon as it has the 200 (no scans while
     * draining: answer at once then). */
    w = s->draining ? NULL : calloc(1, sizeof *w);
    if (w) {
        w->req = req;
        snprintf(w->id, sizeof w->id, "%s", id);
        td_http_hold(req);
        td_http_suspend(req);
        if (td_registry_scan_then(&s->registry, delete_done, w) == 0)
            return;
        free(w);
        td_http_release(req);
        td_api_respond_json(req, 200,
                            json_pack("{s:s, s:b}", "id", id, "deleted", 1));
        td_http_resume(req);
        return;
    }
    td_api_respond_json(req, 200,
                        json_pack("{s:s, s:b}", "id", id, "deleted", 1));
}
