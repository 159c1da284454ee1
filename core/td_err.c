/* td_err: status names and error-message formatting. */
#include "config.h"

#include "td_err.h"

#include <stdio.h>
#include <string.h>

static const char *const status_desc[] = {
#define TD__DESC(name, http, desc) desc,
    TD_STATUS_MAP(TD__DESC)
#undef TD__DESC
};
static const char *const status_name[] = {
#define TD__NAME(name, http, desc) #name,
    TD_STATUS_MAP(TD__NAME)
#undef TD__NAME
};
static const int status_http[] = {
#define TD__HTTP(name, http, desc) http,
    TD_STATUS_MAP(TD__HTTP)
#undef TD__HTTP
};

const char *td_status_str(td_status st)
{
    return (unsigned)st < TD_STATUS_COUNT ? status_desc[st] : "unknown";
}

const char *td_status_name(td_status st)
{
    return (unsigned)st < TD_STATUS_COUNT ? status_name[st] : "EUNKNOWN";
}

int td_status_http(td_status st)
{
    return (unsigned)st < TD_STATUS_COUNT ? status_http[st] : 500;
}

td_status td_error_vset(td_error *err, td_status st, const char *fmt,
                        va_list ap)
{
    if (err) {
        err->status = st;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return st;
}

td_status td_error_set(td_error *err, td_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    td_error_vset(err, st, fmt, ap);
    va_end(ap);
    return st;
}

void td_error_prefix(td_error *err, const char *fmt, ...)
{
    char prefix[256], old[sizeof err->msg];
    int plen;
    va_list ap;
    if (!err)
        return;
    va_start(ap, fmt);
    plen = vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (plen < 0)
        return;
    if ((size_t)plen >= sizeof prefix)
        plen = (int)sizeof prefix - 1;
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    /* Truncation is fine: the message stays a readable prefix. */
    memcpy(err->msg, prefix, (size_t)plen);
    if ((size_t)plen + 2 < sizeof err->msg) {
        err->msg[plen] = ':';
        err->msg[plen + 1] = ' ';
        strncpy(err->msg + plen + 2, old, sizeof err->msg - (size_t)plen - 3);
        err->msg[sizeof err->msg - 1] = '\0';
    } else {
        err->msg[plen] = '\0';
    }
}

void td_error_clear(td_error *err)
{
    if (err) {
        err->status = TD_OK;
        err->msg[0] = '\0';
    }
}
