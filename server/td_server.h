/* td_server: the daemon - one libuv loop owning the HTTP server, the
 * repository, signals, systemd notification and the watchdog.
 *
 * Lifecycle: td_server_init listens and starts the first repository scan;
 * READY=1 goes out when the scan is done. SIGHUP rescans (RELOADING=1,
 * then READY=1). SIGTERM/SIGINT stop accepting, let requests in flight
 * finish within the drain timeout, and make td_server_run return 0.
 *
 * Thread: loop thread only. There is no global state: everything hangs off
 * one td_server passed explicitly. */
#ifndef TD_SERVER_H
#define TD_SERVER_H

#include <uv.h>

#include "td_auth.h"
#include "td_batcher.h"
#include "td_scratch.h"

#include "td_config.h"
#include "td_http.h"
#include "td_jobs.h"
#include "td_log.h"
#include "td_metrics.h"
#include "td_notify.h"
#include "td_registry.h"

typedef struct td_server {
    uv_loop_t loop;
    td_config cfg;
    td_log log;
    td_notify notify;
    td_http *http;
    td_registry registry;
    td_metrics metrics;
    td_scratch_pool scratch;  /* one arena per pool thread */
    td_batcher batcher;
    td_jobs jobs;             /* graph submissions and oracle builds */
    td_auth auth;             /* bearer tokens (--tokens) */
    const char *cfg_oracle_mode; /* default mode for submitted graphs */
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t watchdog;
    uv_timer_t drain;
    int handles_open;
    int ready;          /* the first scan finished */
    int reloading;      /* a SIGHUP scan is running */
    int draining;
    int abandoned;      /* the drain timed out with work still running */
    uint64_t drain_deadline_ns;
    int64_t started_ms;
} td_server;

/* Everything up to listening and the first scan. On error nothing is left
 * open. */
td_status td_server_init(td_server *s, const td_config *cfg, td_error *err);
/* Run the loop until shutdown; returns the process exit code. */
int td_server_run(td_server *s);
void td_server_free(td_server *s);

/* The HTTP handlers (td_api.c). */
void td_api_on_headers(void *app, td_request *req);
void td_api_on_body(void *app, td_request *req);
void td_api_on_complete(void *app, td_request *req, int ok);

#endif
