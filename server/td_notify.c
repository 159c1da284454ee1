/* td_notify: sd_notify datagrams over AF_UNIX, written from sd_notify(3). */
#include "config.h"

#include "td_notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void set_disabled(td_notify *n)
{
    memset(n, 0, sizeof *n);
    n->fd = -1;
}

/* Decimal digits only, no sign, no overflow. */
static int parse_u64(const char *s, uint64_t *out)
{
    unsigned long long v;
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static td_status read_watchdog(td_notify *n, td_error *err)
{
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    uint64_t v;

    if (!usec || !*usec)
        return TD_OK;
    if (pid && *pid) {
        /* The watchdog was meant for another process (e.g. our parent). */
        if (parse_u64(pid, &v) != 0)
            return td_error_set(err, TD_EINVAL,
                                "WATCHDOG_PID \"%s\": expected a process id",
                                pid);
        if (v != (uint64_t)getpid())
            return TD_OK;
    }
    if (parse_u64(usec, &v) != 0)
        return td_error_set(err, TD_EINVAL,
                            "WATCHDOG_USEC \"%s\": expected microseconds as "
                            "a decimal integer",
                            usec);
    n->watchdog_usec = v;
    return TD_OK;
}

td_status td_notify_init(td_notify *n, td_error *err)
{
    const char *path = getenv("NOTIFY_SOCKET");
    size_t len;
    td_status st;

    set_disabled(n);
    if (!path || !*path)
        return TD_OK;
    if (path[0] != '/' && path[0] != '@')
        return td_error_set(err, TD_EINVAL,
                            "NOTIFY_SOCKET \"%s\": expected an absolute path "
                            "or an @abstract name",
                            path);
    len = strlen(path);
    /* A path socket needs its NUL inside sun_path; an abstract name does
     * not, but systemd never makes one that long, so one rule serves. */
    if (len >= sizeof n->addr.sun_path)
        return td_error_set(err, TD_EINVAL,
                            "NOTIFY_SOCKET \"%s\": longer than %zu bytes",
                            path, sizeof n->addr.sun_path - 1);

    n->addr.sun_family = AF_UNIX;
    memcpy(n->addr.sun_path, path, len);
    if (path[0] == '@')
        n->addr.sun_path[0] = '\0';
    /* The length counts the name exactly: for an abstract socket every byte
     * of sun_path up to it is part of the name, NULs included. */
    n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);

    st = read_watchdog(n, err);
    if (st != TD_OK) {
        set_disabled(n);
        return st;
    }

    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (n->fd < 0) {
        int e = errno;
        set_disabled(n);
        return td_error_set(err, TD_EIO, "NOTIFY_SOCKET: socket: %s",
                            strerror(e));
    }
    return TD_OK;
}

int td_notify_enabled(const td_notify *n)
{
    return n && n->fd >= 0;
}

td_status td_notify_send(td_notify *n, const char *msg, td_error *err)
{
    size_t len;
    ssize_t w;

    if (!td_notify_enabled(n))
        return TD_OK;
    len = strlen(msg);
    if (len == 0)
        return td_error_set(err, TD_EINVAL, "sd_notify: empty message");
    /* sendto rather than connect at init: the socket may be re-created by
     * systemd (daemon-reexec) and each datagram finds it afresh. */
    do {
        w = sendto(n->fd, msg, len, MSG_NOSIGNAL,
                   (const struct sockaddr *)&n->addr, n->addr_len);
    } while (w < 0 && errno == EINTR);
    if (w < 0)
        return td_error_set(err, TD_EIO, "sd_notify to %s%s: %s",
                            n->addr.sun_path[0] ? "" : "@",
                            n->addr.sun_path[0] ? n->addr.sun_path
                                                : n->addr.sun_path + 1,
                            strerror(errno));
    if ((size_t)w != len)
        return td_error_set(err, TD_EIO, "sd_notify: short send (%zd of %zu)",
                            w, len);
    return TD_OK;
}

td_status td_notify_sendf(td_notify *n, td_error *err, const char *fmt, ...)
{
    char msg[1025];
    va_list ap;
    int len;

    if (!td_notify_enabled(n))
        return TD_OK;
    va_start(ap, fmt);
    len = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= sizeof msg)
        return td_error_set(err, TD_EINVAL,
                            "sd_notify: message longer than %zu bytes",
                            sizeof msg - 1);
    return td_notify_send(n, msg, err);
}

td_status td_notify_reloading(td_notify *n, td_error *err)
{
    struct timespec ts;
    uint64_t usec;

    if (!td_notify_enabled(n))
        return TD_OK;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return td_error_set(err, TD_EINTERNAL, "clock_gettime: %s",
                            strerror(errno));
    usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    return td_notify_sendf(n, err, "RELOADING=1\nMONOTONIC_USEC=%llu",
                           (unsigned long long)usec);
}

void td_notify_close(td_notify *n)
{
    if (n->fd >= 0)
        close(n->fd);
    set_disabled(n);
}
