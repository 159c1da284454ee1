/* td_api: the HTTP endpoints, split by concern: td_api.c (OIP, health,
 * metrics) and td_api_graphs.c (graph submission). Loop thread only. */
#ifndef TD_API_H
#define TD_API_H

#include <jansson.h>

#include "td_graph_io.h"
#include "td_oracle.h"
#include "td_server.h"

/* Serialise obj (stolen) as the response; 500 if obj is NULL. */
void td_api_respond_json(td_request *req, int status, json_t *obj);

void td_api_graph_submit(td_server *s, td_request *req);
void td_api_graph_list(td_server *s, td_request *req);
void td_api_graph_get(td_server *s, td_request *req, const char *id);
void td_api_graph_delete(td_server *s, td_request *req, const char *id);

#endif
