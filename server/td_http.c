/* td_http: MHD in external epoll mode, driven by a uv_poll and a uv_timer,
 * with suspend/resume around thread-pool work. */
#include "config.h"

#include "td_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

/* One per TCP connection, for the header deadline: libmicrohttpd's own
 * timeout counts only idle time, so a client trickling one header byte a
 * second (slow-loris) would hold its connection forever. */
typedef struct conn_track {
    struct MHD_Connection *conn;
    uint64_t waiting_since;  /* start of the wait for the next headers */
    int in_request;          /* headers are in; the request is under way */
    struct conn_track *prev, *next;
} conn_track;

struct td_http {
    uv_loop_t *loop;
    struct MHD_Daemon *daemon;
    uv_poll_t poll;
    uv_timer_t timer;
    int handles_open;
    td_http_handlers handlers;
    void *app;
    const td_log *log;
    uint64_t max_body;
    uint16_t port;
    int listen_fd;
    int quiesced;
    int stopped;
    unsigned in_flight;
    unsigned in_pool;
    int in_run;      /* inside MHD_run: a resume must not re-enter it */
    int run_again;
    int closed_in_run; /* a connection closed: run MHD once more */
    conn_track *conns; /* every open connection */
    uv_timer_t reaper; /* enforces header_timeout */
    uint64_t header_timeout_ns;
    /* Suspended requests, so td_http_stop can answer them. */
    td_request **suspended;
    size_t n_suspended, cap_suspended;
};

uint64_t td_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ the pump */

static void on_timer(uv_timer_t *t);

/* Let MHD do all pending work, then re-arm the timer from its timeout.
 * Called after every poll event, timer expiry and resume. */
static void http_run(td_http *h)
{
    MHD_UNSIGNED_LONG_LONG timeout;
    if (!h->daemon)
        return;
    if (h->in_run) {
        h->run_again = 1;
        return;
    }
    h->in_run = 1;
    do {
        h->run_again = 0;
        MHD_run(h->daemon);
    } while (h->run_again);
    h->in_run = 0;
    /* At its connection limit MHD takes the listen socket out of its epoll
     * set and puts it back only at the start of a run: after a close, run
     * again soon so a connection waiting in the backlog is accepted. */
    if (h->closed_in_run) {
        h->closed_in_run = 0;
        uv_timer_start(&h->timer, on_timer, 0, 0);
        return;
    }
    if (MHD_get_timeout(h->daemon, &timeout) == MHD_YES) {
        /* Cap the wait so a clock jump never stalls the daemon. */
        if (timeout > 60000)
            timeout = 60000;
        uv_timer_start(&h->timer, on_timer, timeout, 0);
    } else {
        uv_timer_stop(&h->timer);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    http_run(p->data);
}

static void on_timer(uv_timer_t *t) { http_run(t->data); }

/* ------------------------------------------------------------ responses */

void td_http_respond_owned(td_request *req, int status,
                           const char *content_type, char *body, size_t len)
{
    if (req->responded) {
        free(body);
        return;
    }
    free(req->resp_body);
    req->status = status;
    req->content_type = content_type;
    req->resp_body = body;
    req->resp_len = len;
    req->responded = 1;
}

void td_http_respond(td_request *req, int status, const char *content_type,
                     const char *body, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy) {
        td_http_respond_owned(req, 500, "application/json", NULL, 0);
        return;
    }
    memcpy(copy, body, len);
    copy[len] = '\0';
    td_http_respond_owned(req, status, content_type, copy, len);
}

void td_http_respond_error(td_request *req, int status, const char *fmt, ...)
{
    char msg[1024];
    json_t *obj;
    char *text;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    obj = json_pack("{s:s}", "error", msg);
    text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text) {
        td_http_respond(req, status, "application/json",
                        "{\"error\":\"out of memory\"}", 25);
        return;
    }
    td_http_respond_owned(req, status, "application/json", text,
                          strlen(text));
}

void td_http_add_header(td_request *req, const char *name, const char *fmt,
                        ...)
{
    va_list ap;
    if (req->n_hdrs >= TD_HTTP_MAX_HEADERS)
        return;
    va_start(ap, fmt);
    vsnprintf(req->hdr_value[req->n_hdrs], sizeof req->hdr_value[0], fmt, ap);
    va_end(ap);
    req->hdr_name[req->n_hdrs++] = name;
}

const char *td_http_header(const td_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *td_http_query(const td_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND,
                                       name);
}

/* Hand the prepared response to MHD. */
static enum MHD_Result send_response(td_request *req)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    int i;
    if (req->queued)
        return MHD_YES;
    resp = MHD_create_response_from_buffer(req->resp_len,
                                           req->resp_body ? req->resp_body
                                                          : (char *)"",
                                           req->resp_body
                                               ? MHD_RESPMEM_MUST_FREE
                                               : MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    req->resp_body = NULL; /* MHD owns it now */
    if (req->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                req->content_type);
    for (i = 0; i < req->n_hdrs; i++)
        MHD_add_response_header(resp, req->hdr_name[i], req->hdr_value[i]);
    ret = MHD_queue_response(req->conn, (unsigned)req->status, resp);
    MHD_destroy_response(resp);
    req->queued = 1;
    return ret;
}

/* ------------------------------------------------------------ suspension */

static void track_suspended(td_http *h, td_request *req)
{
    if (h->n_suspended == h->cap_suspended) {
        size_t cap = h->cap_suspended ? h->cap_suspended * 2 : 64;
        td_request **grown = realloc(h->suspended, cap * sizeof *grown);
        if (!grown)
            return; /* only td_http_stop's early answers rely on this */
        h->suspended = grown;
        h->cap_suspended = cap;
    }
    h->suspended[h->n_suspended++] = req;
}

static void untrack_suspended(td_http *h, td_request *req)
{
    size_t i;
    for (i = 0; i < h->n_suspended; i++) {
        if (h->suspended[i] == req) {
            h->suspended[i] = h->suspended[--h->n_suspended];
            return;
        }
    }
}

static void request_free(td_request *req)
{
    if (req->route_free)
        req->route_free(req->route_data);
    free(req->body);
    free(req->resp_body);
    free(req);
}

void td_http_suspend(td_request *req)
{
    if (req->suspended)
        return;
    MHD_suspend_connection(req->conn);
    req->suspended = 1;
    track_suspended(req->http, req);
}

void td_http_hold(td_request *req)
{
    req->holds++;
    req->http->in_pool++;
}

int td_http_release(td_request *req)
{
    req->http->in_pool--;
    if (--req->holds == 0 && req->abandoned) {
        request_free(req);
        return 0;
    }
    return !req->abandoned;
}

void td_http_resume(td_request *req)
{
    td_http *h = req->http;
    if (!req->responded)
        td_http_respond_error(req, 500, "the handler produced no response");
    if (req->suspended) {
        req->suspended = 0;
        untrack_suspended(h, req);
        MHD_resume_connection(req->conn);
    }
    http_run(h);
}

static void work_cb(uv_work_t *w)
{
    td_request *req = w->data;
    req->work_fn(req);
}

static void after_work_cb(uv_work_t *w, int status)
{
    td_request *req = w->data;
    (void)status;
    if (!td_http_release(req))
        return;
    if (!req->responded && req->done_fn)
        req->done_fn(req);
    /* done_fn may have handed the request on (it holds it, suspended). */
    if (req->responded || req->holds == 0)
        td_http_resume(req);
}

void td_http_defer(td_request *req, td_work_fn work_fn, td_done_fn done_fn)
{
    int rc;
    req->work_fn = work_fn;
    req->done_fn = done_fn;
    req->work.data = req;
    /* after_work_cb cannot run before we return to the loop, so queueing
     * first and suspending second is safe, and a failure needs no undo. */
    rc = uv_queue_work(req->http->loop, &req->work, work_cb, after_work_cb);
    if (rc != 0) {
        td_http_respond_error(req, 503, "cannot queue work: %s",
                              uv_strerror(rc));
        return;
    }
    td_http_suspend(req);
    td_http_hold(req);
}

/* ------------------------------------------------------------ MHD hooks */

static conn_track *track_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}


static uint64_t parse_content_length(const char *s)
{
    char *end;
    unsigned long long v;
    if (!s)
        return UINT64_MAX;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s)
        return UINT64_MAX - 1; /* malformed: MHD rejects it anyway */
    return (uint64_t)v;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    td_http *h = cls;
    td_request *req = *con_cls;
    (void)version;

    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        req->http = h;
        req->app = h->app;
        req->conn = conn;
        req->method = method;
        req->url = url;
        req->start_ns = td_now_ns();
        req->route = -1;
        req->content_length = parse_content_length(MHD_lookup_connection_value(
            conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH));
        *con_cls = req;
        h->in_flight++;
        {
            conn_track *t = track_of(conn);
            if (t)
                t->in_request = 1;
        }
        /* Route first (so metrics know the route), then refuse an
         * oversized body before reading it; with Expect: 100-continue the
         * client never sends it. */
        h->handlers.on_headers(h->app, req);
        if (!req->responded && req->content_length != UINT64_MAX &&
            req->content_length > h->max_body)
            td_http_respond_error(req, 413,
                                  "request body of %llu bytes exceeds the "
                                  "limit of %llu bytes (--max-body)",
                                  (unsigned long long)req->content_length,
                                  (unsigned long long)h->max_body);
        if (req->responded)
            return send_response(req);
        return MHD_YES;
    }

    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (req->responded || req->body_too_big)
            return MHD_YES; /* drop what the client still sends */
        if (req->body_len + n > h->max_body) {
            req->body_too_big = 1;
            free(req->body);
            req->body = NULL;
            req->body_len = req->body_cap = 0;
            return MHD_YES;
        }
        if (req->body_len + n + 1 > req->body_cap) {
            size_t cap = req->body_cap ? req->body_cap : 4096;
            char *grown;
            if (req->content_length != UINT64_MAX &&
                req->content_length + 1 > cap)
                cap = (size_t)req->content_length + 1;
            while (cap < req->body_len + n + 1)
                cap *= 2;
            grown = realloc(req->body, cap);
            if (!grown)
                return MHD_NO;
            req->body = grown;
            req->body_cap = cap;
        }
        memcpy(req->body + req->body_len, upload, n);
        req->body_len += n;
        req->body[req->body_len] = '\0';
        return MHD_YES;
    }

    if (req->responded)
        return send_response(req);
    if (req->suspended || req->holds)
        return MHD_YES;
    if (req->body_too_big) {
        td_http_respond_error(req, 413,
                              "request body exceeds the limit of %llu bytes "
                              "(--max-body)",
                              (unsigned long long)h->max_body);
        return send_response(req);
    }
    if (!req->body) {
        req->body = calloc(1, 1);
        if (!req->body)
            return MHD_NO;
    }
    h->handlers.on_body(h->app, req);
    if (req->responded)
        return send_response(req);
    return MHD_YES; /* deferred: answered on resume */
}

static void completed_cb(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode toe)
{
    td_http *h = cls;
    td_request *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    h->in_flight--;
    {
        conn_track *t = track_of(conn);
        if (t) {
            t->in_request = 0;
            t->waiting_since = td_now_ns();
        }
    }
    if (!req->responded)
        req->status = 499; /* closed by the client, nginx's convention */
    h->handlers.on_complete(h->app, req,
                            toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    if (req->suspended)
        untrack_suspended(h, req);
    if (req->holds) {
        req->abandoned = 1; /* the last td_http_release frees it */
        return;
    }
    request_free(req);
}

static void notify_connection(void *cls, struct MHD_Connection *conn,
                              void **socket_context,
                              enum MHD_ConnectionNotificationCode toe)
{
    td_http *h = cls;
    conn_track *t = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        t = calloc(1, sizeof *t);
        if (!t)
            return; /* untracked: only the header deadline is lost */
        t->conn = conn;
        t->waiting_since = td_now_ns();
        t->next = h->conns;
        if (h->conns)
            h->conns->prev = t;
        h->conns = t;
        *socket_context = t;
        return;
    }
    h->closed_in_run = 1;
    if (t) {
        if (t->prev)
            t->prev->next = t->next;
        else
            h->conns = t->next;
        if (t->next)
            t->next->prev = t->prev;
        free(t);
        *socket_context = NULL;
    }
}


/* Every second: shut down connections whose next request's headers have
 * not arrived within the deadline. MHD then sees the socket fail and
 * closes it; other connections are untouched. */
static void on_reaper(uv_timer_t *timer)
{
    td_http *h = timer->data;
    uint64_t now = td_now_ns();
    conn_track *t;
    for (t = h->conns; t; t = t->next) {
        if (!t->in_request && now - t->waiting_since > h->header_timeout_ns) {
            const union MHD_ConnectionInfo *info = MHD_get_connection_info(
                t->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
            if (info) {
                shutdown(info->connect_fd, SHUT_RDWR);
                t->waiting_since = now; /* once is enough */
            }
        }
    }
    http_run(h);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    td_http *h = cls;
    char msg[512];
    size_t n;
    vsnprintf(msg, sizeof msg, fmt, ap);
    n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    td_log_write(h->log, TD_LOG_WARN, "http: %s", msg);
}

/* ------------------------------------------------------------ lifecycle */

static td_status open_listen_socket(const td_http_options *opt, int *out,
                                    td_error *err)
{
    struct addrinfo hints, *res = NULL;
    char port[8];
    int fd, one = 1, rc;
    const char *host = opt->host;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (strcmp(host, "localhost") != 0)
        hints.ai_flags |= AI_NUMERICHOST;
    snprintf(port, sizeof port, "%u", (unsigned)opt->port);
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0)
        return td_error_set(err, TD_EINVAL, "cannot listen on %s:%u: %s",
                            host, (unsigned)opt->port, gai_strerror(rc));
    fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC |
                                    SOCK_NONBLOCK, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return td_error_set(err, TD_EIO, "socket: %s", strerror(errno));
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (res->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
        listen(fd, 511) != 0) {
        int saved = errno;
        close(fd);
        freeaddrinfo(res);
        return td_error_set(err, TD_EIO, "cannot listen on %s:%u: %s", host,
                            (unsigned)opt->port, strerror(saved));
    }
    freeaddrinfo(res);
    *out = fd;
    return TD_OK;
}

static uint16_t socket_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

td_status td_http_start(uv_loop_t *loop, const td_http_options *opt,
                        const td_http_handlers *handlers, void *app,
                        const td_log *log, td_http **out, td_error *err)
{
    td_http *h;
    const union MHD_DaemonInfo *info;
    int fd = opt->listen_fd;
    td_status st;
    *out = NULL;
    if (fd < 0) {
        st = open_listen_socket(opt, &fd, err);
        if (st != TD_OK)
            return st;
    }
    h = calloc(1, sizeof *h);
    if (!h) {
        close(fd);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    h->loop = loop;
    h->handlers = *handlers;
    h->app = app;
    h->log = log;
    h->max_body = opt->max_body;
    h->listen_fd = fd;
    h->port = socket_port(fd);
    {
        struct MHD_OptionItem tls[3] = {
            {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)opt->tls_cert_pem},
            {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)opt->tls_key_pem},
            {MHD_OPTION_END, 0, NULL}};
        unsigned flags =
            MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
        if (opt->tls_cert_pem)
            flags |= MHD_USE_TLS;
        else
            tls[0].option = MHD_OPTION_END;
        h->daemon = MHD_start_daemon(
            flags, 0, NULL, NULL, access_cb, h, MHD_OPTION_EXTERNAL_LOGGER,
            mhd_logger, h, MHD_OPTION_LISTEN_SOCKET, fd,
            MHD_OPTION_NOTIFY_COMPLETED, completed_cb, h,
            MHD_OPTION_NOTIFY_CONNECTION, notify_connection, h,
            MHD_OPTION_CONNECTION_LIMIT, opt->max_connections,
            MHD_OPTION_PER_IP_CONNECTION_LIMIT, opt->max_connections_per_ip,
            MHD_OPTION_CONNECTION_TIMEOUT, opt->connection_timeout_s,
            MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    }
    if (!h->daemon) {
        close(fd);
        free(h);
        return td_error_set(err, TD_EIO,
                            "libmicrohttpd failed to start%s",
                            opt->tls_cert_pem
                                ? " (is the TLS certificate and key a valid "
                                  "PEM pair?)"
                                : "");
    }
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info || uv_poll_init(loop, &h->poll, info->epoll_fd) != 0 ||
        uv_timer_init(loop, &h->timer) != 0) {
        MHD_stop_daemon(h->daemon);
        close(fd);
        free(h);
        return td_error_set(err, TD_EIO, "cannot watch the HTTP epoll fd");
    }
    h->poll.data = h;
    h->timer.data = h;
    h->handles_open = 2;
    uv_poll_start(&h->poll, UV_READABLE, on_poll);
    h->header_timeout_ns = (uint64_t)opt->header_timeout_s * 1000000000u;
    if (uv_timer_init(loop, &h->reaper) == 0) {
        h->reaper.data = h;
        h->handles_open++;
        if (opt->header_timeout_s)
            uv_timer_start(&h->reaper, on_reaper, 1000, 1000);
    }
    http_run(h);
    *out = h;
    return TD_OK;
}

uint16_t td_http_port(const td_http *h) { return h->port; }
unsigned td_http_in_flight(const td_http *h) { return h->in_flight; }
unsigned td_http_in_pool(const td_http *h) { return h->in_pool; }

void td_http_quiesce(td_http *h)
{
    int fd;
    if (h->quiesced || !h->daemon)
        return;
    h->quiesced = 1;
    fd = MHD_quiesce_daemon(h->daemon);
    if (fd >= 0)
        close(fd);
    http_run(h);
}

void td_http_stop(td_http *h)
{
    uint64_t until;
    if (h->stopped)
        return;
    h->stopped = 1;
    td_http_quiesce(h);
    /* MHD forbids stopping with suspended connections: answer them. Their
     * pool work finishes into the void (abandoned). */
    while (h->n_suspended) {
        td_request *req = h->suspended[--h->n_suspended];
        req->suspended = 0;
        td_http_respond_error(req, 503, "server is shutting down");
        MHD_resume_connection(req->conn);
    }
    until = td_now_ns() + 500u * 1000000u;
    while (h->in_flight > 0 && td_now_ns() < until) {
        MHD_run(h->daemon);
        usleep(2000);
    }
    uv_poll_stop(&h->poll);
    uv_timer_stop(&h->timer);
    uv_timer_stop(&h->reaper);
    MHD_stop_daemon(h->daemon);
    h->daemon = NULL;
}

static void on_handle_closed(uv_handle_t *handle)
{
    td_http *h = handle->data;
    if (--h->handles_open == 0) {
        free(h->suspended);
        free(h);
    }
}

void td_http_close(td_http *h)
{
    if (!h)
        return;
    if (!h->stopped)
        td_http_stop(h);
    uv_close((uv_handle_t *)&h->poll, on_handle_closed);
    uv_close((uv_handle_t *)&h->timer, on_handle_closed);
    uv_close((uv_handle_t *)&h->reaper, on_handle_closed);
}
