/* td_api: the HTTP endpoints, split by concern: td_api.c (OIP, health,
 * metrics) and td_api_graphs.c (graph submission). Loop thread only. */
#ifndef TD_API_H
#define TD_API_H

#include <jansson.h>

#include "td_batcher.h"
#include "td_graph_io.h"
#include "td_router.h"
#include "td_oracle.h"
#include "td_server.h"

/* Per-request state kept in req->route_data. */
typedef struct td_api_req {
    td_match match;
    td_infer_job *job;        /* inference: prepared on the pool, then
                                 handed to the batcher (which frees it) */
    td_model *model;          /* inference: the version serving when the
                                 headers arrived (one reference), so a swap
                                 during the upload cannot change it */
    size_t json_len;
    int64_t rows;             /* for metrics, once answered */
} td_api_req;

/* Serialise obj (stolen) as the response; 500 if obj is NULL. */
void td_api_respond_json(td_request *req, int status, json_t *obj);

void td_api_classify(td_server *s, td_request *req, td_api_req *a);
/* done_fn of a request prepared on the pool (parsed, or images decoded):
 * answer its error, or hand its job to the model's batcher. */
void td_api_submit_prepared(td_request *req);
/* READY, UNAVAILABLE (failed to load) or UNLOADED (on request). */
const char *td_api_entry_state(const td_entry *e);
void td_api_repo_index(td_server *s, td_request *req);
void td_api_repo_load(td_server *s, td_request *req, const char *name);
void td_api_repo_unload(td_server *s, td_request *req, const char *name);
void td_api_graph_submit(td_server *s, td_request *req);
void td_api_graph_list(td_server *s, td_request *req);
void td_api_graph_get(td_server *s, td_request *req, const char *id);
void td_api_graph_delete(td_server *s, td_request *req, const char *id);

#endif
