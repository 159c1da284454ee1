/* td_router: maps a method and path to a route, table-driven.
 *
 * Patterns are written as paths with {name} and {version} placeholders;
 * a path that matches a pattern under another method is answered 405 with
 * the methods that would have matched. Thread: any; the table is const. */
#ifndef TD_ROUTER_H
#define TD_ROUTER_H

#include "td_registry.h"

/* X(ID, metric label). Add routes at the end of their group. */
#define TD_ROUTE_MAP(X)                  \
    X(SERVER_META, "server_metadata")    \
    X(HEALTH_LIVE, "health_live")        \
    X(HEALTH_READY, "health_ready")      \
    X(MODELS, "models")                  \
    X(MODEL_META, "model_metadata")      \
    X(MODEL_READY, "model_ready")        \
    X(MODEL_INFER, "model_infer")        \
    X(METRICS, "metrics")                \
    X(GRAPH_SUBMIT, "graph_submit")      \
    X(GRAPH_LIST, "graph_list")          \
    X(GRAPH_GET, "graph_get")            \
    X(GRAPH_DELETE, "graph_delete")      \
    X(CLASSIFY, "classify")              \
    X(REPO_INDEX, "repository_index")    \
    X(REPO_LOAD, "repository_load")      \
    X(REPO_UNLOAD, "repository_unload")  \
    X(UNMATCHED, "unmatched")

typedef enum td_route_id {
#define TD__ROUTE_ENUM(id, label) TD_ROUTE_##id,
    TD_ROUTE_MAP(TD__ROUTE_ENUM)
#undef TD__ROUTE_ENUM
    TD_ROUTE_COUNT
} td_route_id;

enum { TD_METHOD_GET = 1, TD_METHOD_POST = 2, TD_METHOD_DELETE = 4,
       TD_METHOD_PUT = 8 };

typedef struct td_match {
    td_route_id route;
    char name[TD_NAME_MAX + 1];  /* {name}, "" if none */
    char version[32];            /* {version}, "" if none */
    unsigned allowed;            /* with 405: TD_METHOD_* bits */
} td_match;

/* 200 with m filled, 404 (no pattern matches the path) or 405 (m->allowed
 * says which methods would). */
int td_route(const char *method, const char *path, td_match *m);
const char *td_route_label(td_route_id id);
/* "GET, POST" for an Allow header. */
void td_methods_str(unsigned allowed, char *out, size_t cap);

#endif
