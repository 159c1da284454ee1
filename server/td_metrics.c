/* td_metrics: counters and histograms for /metrics. */
#include "config.h"

#include "td_metrics.h"

#include <string.h>

const double td_metrics_bounds[TD_METRICS_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   5.0,
};

void td_metrics_observe(td_metrics *m, td_route_id route, int code,
                        double seconds)
{
    int i;
    if ((unsigned)route >= TD_ROUTE_COUNT)
        route = TD_ROUTE_UNMATCHED;
    for (i = 0; i < m->n_codes; i++) {
        if (m->codes[i].route == route && m->codes[i].code == code) {
            m->codes[i].count++;
            break;
        }
    }
    if (i == m->n_codes && m->n_codes < TD_METRICS_MAX_CODES) {
        m->codes[i].route = (uint16_t)route;
        m->codes[i].code = (uint16_t)code;
        m->codes[i].count = 1;
        m->n_codes++;
    }
    for (i = 0; i < TD_METRICS_BUCKETS; i++)
        if (seconds <= td_metrics_bounds[i])
            break;
    if (i < TD_METRICS_BUCKETS)
        m->bucket[route][i]++;
    m->count[route]++;
    m->sum[route] += seconds;
}

void td_metrics_label(td_buf *b, const char *value)
{
    const char *p;
    for (p = value; *p; p++) {
        if (*p == '\\')
            td_buf_append(b, "\\\\", 2);
        else if (*p == '"')
            td_buf_append(b, "\\\"", 2);
        else if (*p == '\n')
            td_buf_append(b, "\\n", 2);
        else
            td_buf_append(b, p, 1);
    }
}

void td_metrics_render_http(const td_metrics *m, td_buf *b)
{
    int i, r, k;
    td_buf_printf(b, "# HELP tinyd_http_requests_total HTTP requests "
                     "answered, by route and status code.\n"
                     "# TYPE tinyd_http_requests_total counter\n");
    for (i = 0; i < m->n_codes; i++)
        td_buf_printf(b,
                      "tinyd_http_requests_total{route=\"%s\",code=\"%u\"} "
                      "%llu\n",
                      td_route_label((td_route_id)m->codes[i].route),
                      (unsigned)m->codes[i].code,
                      (unsigned long long)m->codes[i].count);
    td_buf_printf(b, "# HELP tinyd_http_request_duration_seconds Time from "
                     "the request's headers to its completion.\n"
                     "# TYPE tinyd_http_request_duration_seconds "
                     "histogram\n");
    for (r = 0; r < TD_ROUTE_COUNT; r++) {
        uint64_t cum = 0;
        const char *label = td_route_label((td_route_id)r);
        if (!m->count[r])
            continue;
        for (k = 0; k < TD_METRICS_BUCKETS; k++) {
            cum += m->bucket[r][k];
            td_buf_printf(b,
                          "tinyd_http_request_duration_seconds_bucket{route="
                          "\"%s\",le=\"%g\"} %llu\n",
                          label, td_metrics_bounds[k],
                          (unsigned long long)cum);
        }
        td_buf_printf(b,
                      "tinyd_http_request_duration_seconds_bucket{route=\"%s\","
                      "le=\"+Inf\"} %llu\n"
                      "tinyd_http_request_duration_seconds_sum{route=\"%s\"} "
                      "%.9g\n"
                      "tinyd_http_request_duration_seconds_count{route=\"%s\"} "
                      "%llu\n",
                      label, (unsigned long long)m->count[r], label, m->sum[r],
                      label, (unsigned long long)m->count[r]);
    }
}
