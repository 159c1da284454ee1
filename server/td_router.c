/* td_router: the route table and a small segment matcher. */
#include "config.h"

#include "td_router.h"

#include <stdio.h>
#include <string.h>

typedef struct route_pattern {
    unsigned method;
    const char *pattern;
    td_route_id route;
} route_pattern;

static const route_pattern routes[] = {
    {TD_METHOD_GET, "/v2", TD_ROUTE_SERVER_META},
    {TD_METHOD_GET, "/v2/health/live", TD_ROUTE_HEALTH_LIVE},
    {TD_METHOD_GET, "/v2/health/ready", TD_ROUTE_HEALTH_READY},
    {TD_METHOD_GET, "/v2/models", TD_ROUTE_MODELS},
    {TD_METHOD_GET, "/v2/models/{name}", TD_ROUTE_MODEL_META},
    {TD_METHOD_GET, "/v2/models/{name}/versions/{version}",
     TD_ROUTE_MODEL_META},
    {TD_METHOD_GET, "/v2/models/{name}/ready", TD_ROUTE_MODEL_READY},
    {TD_METHOD_GET, "/v2/models/{name}/versions/{version}/ready",
     TD_ROUTE_MODEL_READY},
    {TD_METHOD_POST, "/v2/models/{name}/infer", TD_ROUTE_MODEL_INFER},
    {TD_METHOD_POST, "/v2/models/{name}/versions/{version}/infer",
     TD_ROUTE_MODEL_INFER},
    {TD_METHOD_GET, "/metrics", TD_ROUTE_METRICS},
    {TD_METHOD_POST, "/v1/models/{name}:classify", TD_ROUTE_CLASSIFY},
    {TD_METHOD_POST, "/v2/repository/index", TD_ROUTE_REPO_INDEX},
    {TD_METHOD_POST, "/v2/repository/models/{name}/load", TD_ROUTE_REPO_LOAD},
    {TD_METHOD_POST, "/v2/repository/models/{name}/unload",
     TD_ROUTE_REPO_UNLOAD},
    {TD_METHOD_POST, "/v1/graphs", TD_ROUTE_GRAPH_SUBMIT},
    {TD_METHOD_GET, "/v1/graphs", TD_ROUTE_GRAPH_LIST},
    {TD_METHOD_GET, "/v1/graphs/{name}", TD_ROUTE_GRAPH_GET},
    {TD_METHOD_DELETE, "/v1/graphs/{name}", TD_ROUTE_GRAPH_DELETE},
};

static const char *const route_labels[] = {
#define TD__ROUTE_LABEL(id, label) label,
    TD_ROUTE_MAP(TD__ROUTE_LABEL)
#undef TD__ROUTE_LABEL
};

const char *td_route_label(td_route_id id)
{
    return (unsigned)id < TD_ROUTE_COUNT ? route_labels[id] : "unmatched";
}

static unsigned method_bit(const char *m)
{
    if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
        return TD_METHOD_GET;
    if (strcmp(m, "POST") == 0)
        return TD_METHOD_POST;
    if (strcmp(m, "DELETE") == 0)
        return TD_METHOD_DELETE;
    if (strcmp(m, "PUT") == 0)
        return TD_METHOD_PUT;
    return 0;
}

/* Match path against pattern segment by segment; fill captures. */
static int match(const char *pattern, const char *path, td_match *m)
{
    const char *p = pattern, *s = path;
    m->name[0] = m->version[0] = '\0';
    for (;;) {
        const char *pe, *se;
        size_t plen, slen;
        if (*p == '\0' || *s == '\0')
            return *p == '\0' && (*s == '\0' || (s[0] == '/' && !s[1]));
        if (*p != '/' || *s != '/')
            return 0;
        p++;
        s++;
        pe = strchr(p, '/');
        se = strchr(s, '/');
        plen = pe ? (size_t)(pe - p) : strlen(p);
        slen = se ? (size_t)(se - s) : strlen(s);
        if (slen == 0)
            return 0;
        if (plen >= 6 && strncmp(p, "{name}", 6) == 0) {
            /* "{name}:verb": the name is what precedes the suffix. */
            size_t suffix = plen - 6, nlen;
            if (slen <= suffix ||
                strncmp(s + slen - suffix, p + 6, suffix) != 0)
                return 0;
            nlen = slen - suffix;
            if (nlen > TD_NAME_MAX)
                return 0;
            memcpy(m->name, s, nlen);
            m->name[nlen] = '\0';
        } else if (plen == 9 && strncmp(p, "{version}", 9) == 0) {
            if (slen >= sizeof m->version)
                return 0;
            memcpy(m->version, s, slen);
            m->version[slen] = '\0';
        } else if (plen != slen || strncmp(p, s, plen) != 0) {
            return 0;
        }
        p += plen;
        s += slen;
    }
}

int td_route(const char *method, const char *path, td_match *m)
{
    unsigned want = method_bit(method);
    size_t i;
    td_match tmp;
    memset(m, 0, sizeof *m);
    m->route = TD_ROUTE_UNMATCHED;
    for (i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (!match(routes[i].pattern, path, &tmp))
            continue;
        if (routes[i].method & want) {
            tmp.route = routes[i].route;
            tmp.allowed = 0;
            *m = tmp;
            return 200;
        }
        m->allowed |= routes[i].method;
        m->route = routes[i].route;
    }
    return m->allowed ? 405 : 404;
}

void td_methods_str(unsigned allowed, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = '\0';
    if ((allowed & TD_METHOD_GET) && off < cap)
        off += (size_t)snprintf(out + off, cap - off, "%sGET, HEAD",
                                off ? ", " : "");
    if ((allowed & TD_METHOD_POST) && off < cap)
        off += (size_t)snprintf(out + off, cap - off, "%sPOST",
                                off ? ", " : "");
    if ((allowed & TD_METHOD_PUT) && off < cap)
        off += (size_t)snprintf(out + off, cap - off, "%sPUT",
                                off ? ", " : "");
    if ((allowed & TD_METHOD_DELETE) && off < cap)
        snprintf(out + off, cap - off, "%sDELETE", off ? ", " : "");
}
