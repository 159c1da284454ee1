/* td_metrics: HTTP request counters and latency histograms, rendered in
 * the Prometheus text format 0.0.4.
 *
 * Thread: loop thread only (requests complete on the loop), so plain
 * integers suffice. */
#ifndef TD_METRICS_H
#define TD_METRICS_H

#include <stdint.h>

#include "td_buf.h"
#include "td_router.h"

#define TD_METRICS_BUCKETS 14
#define TD_METRICS_MAX_CODES 256

typedef struct td_metrics {
    struct {
        uint16_t route, code;
        uint64_t count;
    } codes[TD_METRICS_MAX_CODES];
    int n_codes;
    uint64_t bucket[TD_ROUTE_COUNT][TD_METRICS_BUCKETS]; /* not cumulative */
    uint64_t count[TD_ROUTE_COUNT];
    double sum[TD_ROUTE_COUNT];
} td_metrics;

/* Upper bounds of the latency buckets, seconds (+Inf is implicit). */
extern const double td_metrics_bounds[TD_METRICS_BUCKETS];

void td_metrics_observe(td_metrics *m, td_route_id route, int code,
                        double seconds);
/* Append the HTTP families (requests_total, duration histogram). */
void td_metrics_render_http(const td_metrics *m, td_buf *b);
/* Append a label value escaped as the text format requires. */
void td_metrics_label(td_buf *b, const char *value);

#endif
