/* td_server: start-up, signals, reload, drain and the watchdog. */
#include "config.h"

#include "td_server.h"

#include "td_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void send_ready(td_server *s)
{
    size_t i, n_ready = 0;
    td_error err;
    for (i = 0; i < s->registry.n_entries; i++)
        if (s->registry.entries[i].model)
            n_ready++;
    if (td_notify_sendf(&s->notify, &err, "READY=1\nSTATUS=serving %zu of "
                                          "%zu models",
                        n_ready, s->registry.n_entries) != TD_OK)
        TD_LOG_WARN(&s->log, "sd_notify: %s", err.msg);
}

static int registry_has(void *arg, const char *name)
{
    return td_registry_find(arg, name) != NULL;
}

/* The registry finished a scan. */
static void on_scan_done(void *app, int changed, int failed)
{
    td_server *s = app;
    size_t i, n_ready = 0;
    td_batcher_prune(&s->batcher, registry_has, &s->registry);
    for (i = 0; i < s->registry.n_entries; i++)
        if (s->registry.entries[i].model)
            n_ready++;
    if (!s->ready) {
        s->ready = 1;
        TD_LOG_INFO(&s->log, "ready: %zu of %zu models loaded from %s",
                    n_ready, s->registry.n_entries, s->cfg.models_dir);
    } else {
        TD_LOG_INFO(&s->log,
                    "reload done: %d changed, %d failed; serving %zu of %zu "
                    "models",
                    changed, failed, n_ready, s->registry.n_entries);
    }
    s->reloading = 0;
    if (!s->draining)
        send_ready(s);
}

/* A graph job produced or removed an oracle: rescan. */
static void on_oracles_changed(void *app)
{
    td_server *s = app;
    if (!s->draining)
        td_registry_scan(&s->registry);
}

static void on_watchdog(uv_timer_t *t)
{
    td_server *s = t->data;
    td_notify_send(&s->notify, "WATCHDOG=1", NULL);
}

static void on_handle_closed(uv_handle_t *h)
{
    td_server *s = h->data;
    s->handles_open--;
}

static void close_handle(td_server *s, uv_handle_t *h)
{
    if (!uv_is_closing(h)) {
        h->data = s;
        uv_close(h, on_handle_closed);
    }
}

/* The drain is over (or timed out): stop HTTP and let the loop end. */
static void finish_shutdown(td_server *s)
{
    unsigned left = td_http_in_flight(s->http);
    unsigned computing = td_http_in_pool(s->http);
    if (left)
        TD_LOG_WARN(&s->log,
                    "drain timeout: answering %u unfinished requests with "
                    "503",
                    left);
    td_http_stop(s->http);
    td_http_close(s->http);
    s->http = NULL;
    uv_timer_stop(&s->drain);
    close_handle(s, (uv_handle_t *)&s->drain);
    close_handle(s, (uv_handle_t *)&s->watchdog);
    close_handle(s, (uv_handle_t *)&s->sig_term);
    close_handle(s, (uv_handle_t *)&s->sig_int);
    close_handle(s, (uv_handle_t *)&s->sig_hup);
    td_batcher_close(&s->batcher);
    td_jobs_stop(&s->jobs);
    td_jobs_close(&s->jobs);
    /* Requests abandoned at the drain timeout may still be computing: they
     * must not keep the process alive. Anything else (a rescan) ends by
     * itself, and the loop returns once it has. */
    if (computing) {
        s->abandoned = 1;
        uv_stop(&s->loop);
    }
    TD_LOG_INFO(&s->log, "stopped");
}

static void on_drain_tick(uv_timer_t *t)
{
    td_server *s = t->data;
    if (td_http_in_flight(s->http) == 0 || td_now_ns() >= s->drain_deadline_ns)
        finish_shutdown(s);
}

static void begin_shutdown(td_server *s, const char *why)
{
    if (s->draining) {
        TD_LOG_WARN(&s->log, "%s again: stopping now", why);
        s->drain_deadline_ns = 0;
        on_drain_tick(&s->drain);
        return;
    }
    s->draining = 1;
    td_notify_send(&s->notify, "STOPPING=1", NULL);
    TD_LOG_INFO(&s->log,
                "%s: no longer accepting; draining %u requests in flight "
                "(at most %u ms)",
                why, td_http_in_flight(s->http), s->cfg.drain_timeout_ms);
    td_http_quiesce(s->http);
    s->drain_deadline_ns =
        td_now_ns() + (uint64_t)s->cfg.drain_timeout_ms * 1000000u;
    uv_timer_start(&s->drain, on_drain_tick, 0, 10);
}

static void on_signal(uv_signal_t *h, int signum)
{
    td_server *s = h->data;
    if (signum == SIGHUP) {
        td_error err;
        if (s->draining)
            return;
        TD_LOG_INFO(&s->log, "SIGHUP: rescanning %s", s->cfg.models_dir);
        if (s->cfg.tokens_path[0]) {
            if (td_auth_load(&s->auth, s->cfg.tokens_path, &err) != TD_OK)
                TD_LOG_ERR(&s->log,
                           "tokens not reloaded, the previous ones stay: %s",
                           err.msg);
            else
                TD_LOG_INFO(&s->log, "tokens reloaded: %d", s->auth.n);
        }
        if (td_notify_reloading(&s->notify, &err) != TD_OK)
            TD_LOG_WARN(&s->log, "sd_notify: %s", err.msg);
        s->reloading = 1;
        td_registry_scan(&s->registry);
        return;
    }
    begin_shutdown(s, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* systemd socket activation: the first passed descriptor, or -1. */
static int activated_socket(void)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    int fd = 3;
    if (!pid || !fds || atol(pid) != (long)getpid() || atoi(fds) < 1)
        return -1;
    /* Ours alone: children must not inherit it. */
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return fd;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

td_status td_server_init(td_server *s, const td_config *cfg, td_error *err)
{
    td_http_options hopt;
    td_http_handlers handlers = {td_api_on_headers, td_api_on_body,
                                 td_api_on_complete};
    td_status st;
    char *tls_cert = NULL, *tls_key = NULL;
    int rc;

    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->started_ms = wall_ms();
    td_log_init(&s->log, cfg->log_level, 2);
    rc = uv_loop_init(&s->loop);
    if (rc != 0)
        return td_error_set(err, TD_EIO, "uv_loop_init: %s", uv_strerror(rc));
    st = td_notify_init(&s->notify, err);
    if (st != TD_OK)
        goto fail_loop;
    {
        char oracles[4096 + 16];
        const char *dirs[2];
        snprintf(oracles, sizeof oracles, "%s/oracles", cfg->state_dir);
        dirs[0] = cfg->models_dir;
        dirs[1] = oracles;
        st = td_registry_init(&s->registry, &s->loop, dirs, 2, &s->log,
                              on_scan_done, s, err);
    }
    if (st != TD_OK)
        goto fail_notify;
    /* A pool thread borrows at most one arena at a time (the pool has
     * --threads + 2 threads; see main.c). */
    if (td_scratch_init(&s->scratch, (int)cfg->threads + 2) != 0) {
        st = td_error_set(err, TD_ENOMEM, "out of memory");
        goto fail_registry_only;
    }
    td_batcher_init(&s->batcher, &s->loop, &s->scratch, cfg->threads,
                    (int)cfg->max_batch, cfg->batch_delay_us);
    s->cfg_oracle_mode = s->cfg.oracle_mode;
    s->batcher.max_queue_rows = cfg->max_queue;
    s->batcher.deadline_ns = (uint64_t)cfg->request_timeout_ms * 1000000u;
    if (cfg->tokens_path[0]) {
        st = td_auth_load(&s->auth, cfg->tokens_path, err);
        if (st != TD_OK)
            goto fail_batcher_only;
    }
    st = td_jobs_init(&s->jobs, &s->loop, cfg->state_dir, cfg->max_jobs,
                      &s->log, on_oracles_changed, s, err);
    if (st != TD_OK)
        goto fail_batcher;
    s->jobs.max_nodes = cfg->max_graph_nodes;
    s->jobs.max_bytes = cfg->max_graph_bytes;

    memset(&hopt, 0, sizeof hopt);
    hopt.host = cfg->host;
    hopt.port = cfg->port;
    hopt.listen_fd = activated_socket();
    hopt.max_connections_per_ip = cfg->max_connections_per_ip;
    if (cfg->tls_cert[0] || cfg->tls_key[0]) {
        size_t len;
        if (!cfg->tls_cert[0] || !cfg->tls_key[0]) {
            st = td_error_set(err, TD_EINVAL,
                              "--tls-cert and --tls-key go together");
            goto fail_registry;
        }
        if ((st = td_file_read(cfg->tls_cert, 1 << 20, &tls_cert, &len,
                               err)) != TD_OK ||
            (st = td_file_read(cfg->tls_key, 1 << 20, &tls_key, &len,
                               err)) != TD_OK)
            goto fail_registry;
        hopt.tls_cert_pem = tls_cert;
        hopt.tls_key_pem = tls_key;
    }
    hopt.max_body = cfg->max_body;
    hopt.max_connections = cfg->max_connections;
    hopt.connection_timeout_s = cfg->connection_timeout_s;
    hopt.header_timeout_s = cfg->header_timeout_s;
    st = td_http_start(&s->loop, &hopt, &handlers, s, &s->log, &s->http, err);
    /* MHD keeps its own copies of the PEM data. */
    if (tls_key)
        memset(tls_key, 0, strlen(tls_key));
    free(tls_cert);
    free(tls_key);
    tls_cert = tls_key = NULL;
    if (st != TD_OK)
        goto fail_registry;

    uv_signal_init(&s->loop, &s->sig_term);
    uv_signal_init(&s->loop, &s->sig_int);
    uv_signal_init(&s->loop, &s->sig_hup);
    uv_timer_init(&s->loop, &s->watchdog);
    uv_timer_init(&s->loop, &s->drain);
    s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
    s->watchdog.data = s->drain.data = s;
    s->handles_open = 5;
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    uv_signal_start(&s->sig_hup, on_signal, SIGHUP);
    if (s->notify.watchdog_usec) {
        /* Half the interval, from the loop itself: a stuck loop misses it. */
        uint64_t ms = s->notify.watchdog_usec / 2000;
        uv_timer_start(&s->watchdog, on_watchdog, 0, ms ? ms : 1);
    }
    signal(SIGPIPE, SIG_IGN);
    /* Past RLIMIT_FSIZE a write must fail with EFBIG (the atomic writer
     * then keeps the previous file and the job reports it), not kill the
     * daemon with SIGXFSZ's default action. */
    signal(SIGXFSZ, SIG_IGN);
    TD_LOG_INFO(&s->log, "listening on %s://%s%s%s:%u (models %s, state %s)",
                cfg->tls_cert[0] ? "https" : "http",
                strchr(cfg->host, ':') ? "[" : "", cfg->host,
                strchr(cfg->host, ':') ? "]" : "",
                (unsigned)td_http_port(s->http), cfg->models_dir,
                cfg->state_dir);
    td_registry_scan(&s->registry);
    return TD_OK;

fail_registry:
    free(tls_cert);
    free(tls_key);
    td_jobs_stop(&s->jobs);
    td_jobs_close(&s->jobs);
fail_batcher:
    td_auth_free(&s->auth);
fail_batcher_only:
    td_batcher_close(&s->batcher);
    td_scratch_free(&s->scratch);
fail_registry_only:
    td_registry_free(&s->registry);
fail_notify:
    td_notify_close(&s->notify);
fail_loop:
    uv_loop_close(&s->loop);
    return st;
}

int td_server_run(td_server *s)
{
    uv_run(&s->loop, UV_RUN_DEFAULT);
    /* Let close callbacks run. */
    while (s->handles_open > 0 && uv_run(&s->loop, UV_RUN_NOWAIT))
        ;
    return 0;
}

void td_server_free(td_server *s)
{
    /* Work abandoned at the drain timeout may still use the arenas and the
     * models; the process exits right after, so leave them. */
    td_auth_free(&s->auth);
    if (!s->abandoned && !s->registry.scanning) {
        td_scratch_free(&s->scratch);
        td_registry_free(&s->registry);
        uv_loop_close(&s->loop);
    }
    td_notify_close(&s->notify);
}
