/* td_api_repository: Triton's model repository extension.
 *
 *   POST /v2/repository/index               every model with its state
 *   POST /v2/repository/models/{name}/load  (re)load now; answers when done
 *   POST /v2/repository/models/{name}/unload
 *
 * Load and unload change state, so they need a token when --tokens is set.
 * A load rescans the repository and answers once that scan is over: 200
 * when the model serves, 400 with the reason when its file failed (the
 * previous version, if any, keeps serving), 404 when no such file exists.
 * An unloaded model stays unloaded across SIGHUP until it is loaded again;
 * requests already running on it finish. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "td_api.h"

void td_api_repo_index(td_server *s, td_request *req)
{
    json_t *arr = json_array();
    json_t *body = NULL, *ready = NULL;
    size_t i;
    if (req->body_len) {
        json_error_t jerr;
        body = json_loadb(req->body, req->body_len, 0, &jerr);
        if (!body || !json_is_object(body)) {
            json_decref(body);
            json_decref(arr);
            td_http_respond_error(req, 400,
                                  "the body must be a JSON object such as "
                                  "{\"ready\": true}");
            return;
        }
        ready = json_object_get(body, "ready");
    }
    for (i = 0; arr && i < s->registry.n_entries; i++) {
        const td_entry *e = &s->registry.entries[i];
        json_t *o;
        if (json_is_true(ready) && !e->model)
            continue;
        o = json_pack("{s:s, s:s, s:s}", "name", e->name, "version", "1",
                      "state", td_api_entry_state(e));
        if (o && e->reason)
            json_object_set_new(o, "reason", json_string(e->reason));
        json_array_append_new(arr, o);
    }
    json_decref(body);
    td_api_respond_json(req, 200, arr);
}

typedef struct load_wait {
    td_server *s;
    td_request *req;
    char name[TD_NAME_MAX + 1];
} load_wait;

/* The scan that follows the load request is over. */
static void load_done(void *arg)
{
    load_wait *w = arg;
    td_server *s = w->s;
    td_request *req = w->req;
    td_entry *e = td_registry_find(&s->registry, w->name);
    if (td_http_release(req)) {
        if (!e)
            td_http_respond_error(req, 404,
                                  "no file for model \"%s\" in the "
                                  "repository",
                                  w->name);
        else if (e->reason)
            td_http_respond_error(req, 400, "model \"%s\" failed to load: %s",
                                  w->name, e->reason);
        else if (!e->model)
            td_http_respond_error(req, 400, "model \"%s\" is not loaded",
                                  w->name);
        else
            td_api_respond_json(req, 200,
                                json_pack("{s:s, s:s}", "name", w->name,
                                          "state", "READY"));
        td_http_resume(req);
    }
    free(w);
}

void td_api_repo_load(td_server *s, td_request *req, const char *name)
{
    load_wait *w = calloc(1, sizeof *w);
    if (!w) {
        td_http_respond_error(req, 500, "out of memory");
        return;
    }
    w->s = s;
    w->req = req;
    snprintf(w->name, sizeof w->name, "%s", name);
    td_registry_mark_load(&s->registry, name);
    td_http_hold(req);
    td_http_suspend(req);
    if (td_registry_scan_then(&s->registry, load_done, w) != 0) {
        td_http_release(req);
        free(w);
        td_http_respond_error(req, 500, "out of memory");
        td_http_resume(req);
    }
}

void td_api_repo_unload(td_server *s, td_request *req, const char *name)
{
    td_error err;
    if (td_registry_unload(&s->registry, name, &err) != TD_OK) {
        td_http_respond_error(req, td_status_http(err.status), "%s", err.msg);
        return;
    }
    td_api_respond_json(req, 200,
                        json_pack("{s:s, s:s}", "name", name, "state",
                                  "UNLOADED"));
}
