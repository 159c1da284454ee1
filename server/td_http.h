/* td_http: libmicrohttpd inside the libuv loop.
 *
 * MHD runs in external epoll mode: one uv_poll watches MHD's epoll
 * descriptor and one uv_timer is armed from MHD_get_timeout, so the libuv
 * loop owns all I/O. A request whose answer needs CPU work is suspended,
 * its work runs on the libuv thread pool (td_http_defer), and the response
 * is queued on the loop thread when the work is done. The loop never
 * computes.
 *
 * Request bodies are capped: a Content-Length over the limit is answered
 * 413 before the body is read; a chunked body is counted as it arrives,
 * dropped once past the limit, and answered 413.
 *
 * Thread contract: every function here is loop-thread only, except that a
 * deferred work function runs on a pool thread and may touch only its own
 * request (never MHD or libuv). */
#ifndef TD_HTTP_H
#define TD_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "td_err.h"
#include "td_log.h"

struct MHD_Connection;
struct MHD_Daemon;
typedef struct td_http td_http;
typedef struct td_request td_request;

typedef void (*td_work_fn)(td_request *req);  /* pool thread */
typedef void (*td_done_fn)(td_request *req);  /* loop thread, must respond */

#define TD_HTTP_MAX_HEADERS 4

struct td_request {
    td_http *http;
    void *app;            /* the app pointer given to td_http_start */
    struct MHD_Connection *conn;
    const char *method;   /* MHD's storage, valid for the request */
    const char *url;      /* path without the query string */
    char *body;           /* owned, NUL-terminated, body_len bytes */
    size_t body_len;
    size_t body_cap;
    uint64_t content_length; /* UINT64_MAX when absent (chunked) */
    int body_too_big;
    uint64_t start_ns;
    int route;            /* set by the router, for metrics */
    void *route_data;     /* handler-owned; freed by route_free */
    void (*route_free)(void *);

    /* Response, set by td_http_respond*; sent when the handler returns or
     * when a deferred request resumes. */
    int status;
    char *resp_body;      /* owned until handed to MHD */
    size_t resp_len;
    const char *content_type;
    const char *hdr_name[TD_HTTP_MAX_HEADERS];
    char hdr_value[TD_HTTP_MAX_HEADERS][96];
    int n_hdrs;
    int responded;        /* a response is ready */
    int queued;           /* handed to MHD */

    /* Deferred work. */
    uv_work_t work;
    td_work_fn work_fn;
    td_done_fn done_fn;
    int suspended;
    int holds;            /* asynchronous work referring to this request */
    int abandoned;        /* the connection went away while held */
};

typedef struct td_http_handlers {
    /* Called once the headers are in; may respond at once (404, 405, 413).
     * If it does not, the body is read and on_body is called. */
    void (*on_headers)(void *app, td_request *req);
    /* Called when the whole body is in: respond, or td_http_defer. */
    void (*on_body)(void *app, td_request *req);
    /* Called after the response was sent (or the connection died), with
     * req->status and req->start_ns, for metrics and access logs. */
    void (*on_complete)(void *app, td_request *req, int ok);
} td_http_handlers;

typedef struct td_http_options {
    const char *host;            /* numeric IPv4/IPv6 or "localhost" */
    uint16_t port;               /* 0: the kernel picks */
    int listen_fd;               /* >= 0: use this socket (LISTEN_FDS) */
    uint64_t max_body;           /* bytes */
    unsigned max_connections;
    unsigned max_connections_per_ip;  /* 0 = unlimited */
    unsigned connection_timeout_s;
    unsigned header_timeout_s;        /* a request's headers must arrive
                                         within this (slow-loris); 0 = off */
    const char *tls_cert_pem;         /* NULL: plain HTTP */
    const char *tls_key_pem;
} td_http_options;

/* Start listening. The returned server is owned by the caller and freed by
 * td_http_close after td_http_stop. */
td_status td_http_start(uv_loop_t *loop, const td_http_options *opt,
                        const td_http_handlers *handlers, void *app,
                        const td_log *log, td_http **out, td_error *err);
uint16_t td_http_port(const td_http *h);
/* Stop accepting new connections; requests in flight continue. */
void td_http_quiesce(td_http *h);
/* Requests between their headers and their completion. */
unsigned td_http_in_flight(const td_http *h);
/* Requests held by asynchronous work now. */
unsigned td_http_in_pool(const td_http *h);
/* Answer every suspended request with 503 and stop MHD. Call once the
 * drain is over; in_pool work is left to finish into the void. */
void td_http_stop(td_http *h);
/* Close the libuv handles; free h in their close callbacks. */
void td_http_close(td_http *h);

/* Responses. body is copied. Headers: name must be a string literal. */
void td_http_respond(td_request *req, int status, const char *content_type,
                     const char *body, size_t len);
/* Takes ownership of body (malloc'd). */
void td_http_respond_owned(td_request *req, int status,
                           const char *content_type, char *body, size_t len);
/* {"error": "<formatted message>"} */
void td_http_respond_error(td_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void td_http_add_header(td_request *req, const char *name, const char *fmt,
                        ...) __attribute__((format(printf, 3, 4)));
/* A request header, or NULL. */
const char *td_http_header(const td_request *req, const char *name);
/* A query-string argument, or NULL. */
const char *td_http_query(const td_request *req, const char *name);

/* Suspend the connection and run work_fn on the thread pool, then done_fn
 * on the loop thread, which must respond. */
void td_http_defer(td_request *req, td_work_fn work_fn, td_done_fn done_fn);

/* The primitives under td_http_defer, for work that serves several
 * requests at once (the dynamic batcher):
 * - td_http_suspend: answer later; the connection waits.
 * - td_http_hold / td_http_release: asynchronous work refers to req; while
 *   held, req is not freed even if the server stops and answers it.
 *   td_http_release returns 0 when req was abandoned (and now freed): the
 *   caller must not touch it again.
 * - td_http_resume: req has responded (td_http_respond*); send it. */
void td_http_suspend(td_request *req);
void td_http_hold(td_request *req);
int td_http_release(td_request *req);
void td_http_resume(td_request *req);

uint64_t td_now_ns(void);

#endif
