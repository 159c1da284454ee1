/* td_err: status codes and the error struct every fallible function fills.
 *
 * A function that can fail returns a td_status and, when given a non-NULL
 * td_error, writes a human message that names what was wrong (a tensor, a
 * line, a field). Callers map the status to an HTTP code or an exit code.
 * Thread: any. No allocation. */
#ifndef TD_ERR_H
#define TD_ERR_H

#include <stdarg.h>

/* XX(NAME, http status, short description). Add new codes at the end. */
#define TD_STATUS_MAP(XX)                                   \
    XX(OK, 200, "ok")                                       \
    XX(EINVAL, 400, "invalid argument")                     \
    XX(ENOMEM, 500, "out of memory")                        \
    XX(EIO, 500, "input/output error")                      \
    XX(EFORMAT, 400, "malformed data")                      \
    XX(ENOTFOUND, 404, "not found")                         \
    XX(ETOOBIG, 413, "too large")                           \
    XX(EUNSUPPORTED, 400, "unsupported")                    \
    XX(EBUSY, 503, "busy")                                  \
    XX(EINTERNAL, 500, "internal error")                    \
    XX(ECONFLICT, 409, "conflict")                          \
    XX(ETIMEOUT, 504, "timed out")

typedef enum td_status {
#define TD__STATUS_ENUM(name, http, desc) TD_##name,
    TD_STATUS_MAP(TD__STATUS_ENUM)
#undef TD__STATUS_ENUM
    TD_STATUS_COUNT
} td_status;

typedef struct td_error {
    td_status status;
    char msg[512];
} td_error;

/* Short description of a status ("invalid argument"). Static storage. */
const char *td_status_str(td_status st);
/* Symbolic name ("EINVAL"). Static storage. */
const char *td_status_name(td_status st);
/* The HTTP status code a status maps to. */
int td_status_http(td_status st);

/* Fill err (if non-NULL) and return st, so callers can write
 * `return td_error_set(err, TD_EINVAL, "tensor %s ...", name);`. */
td_status td_error_set(td_error *err, td_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
td_status td_error_vset(td_error *err, td_status st, const char *fmt,
                        va_list ap);
/* Prefix the existing message with context: "loading x: <old msg>". */
void td_error_prefix(td_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void td_error_clear(td_error *err);

#endif
