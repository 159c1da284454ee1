/* td_notify: the systemd readiness protocol (sd_notify) without libsystemd.
 *
 * systemd passes $NOTIFY_SOCKET, an AF_UNIX datagram socket given as a path
 * ("/run/systemd/notify") or as an abstract name ("@..."). Each state change
 * is one datagram of newline-separated KEY=VALUE pairs: "READY=1",
 * "RELOADING=1", "STOPPING=1", "STATUS=...", "WATCHDOG=1". When the
 * variable is unset the daemon is not under systemd and every send is a
 * successful no-op, so callers never branch on it.
 *
 * $WATCHDOG_USEC (honoured only if $WATCHDOG_PID is unset or is our pid)
 * says how often systemd expects "WATCHDOG=1"; ping at half that interval.
 *
 * Thread: init and close from one thread; sends may come from any thread at
 * once (each datagram is delivered whole). No allocation. */
#ifndef TD_NOTIFY_H
#define TD_NOTIFY_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "td_err.h"

typedef struct td_notify {
    int fd;                  /* -1 when disabled */
    struct sockaddr_un addr; /* abstract names have sun_path[0] == '\0' */
    socklen_t addr_len;
    uint64_t watchdog_usec;  /* 0 = no watchdog */
} td_notify;

/* Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. An unset or empty
 * NOTIFY_SOCKET leaves n disabled and returns TD_OK. A malformed variable is
 * TD_EINVAL naming it; n is then disabled (safe to send to and close). */
td_status td_notify_init(td_notify *n, td_error *err);

/* 1 when messages go somewhere. */
int td_notify_enabled(const td_notify *n);

/* Send one datagram, e.g. "READY=1\nSTATUS=serving 3 models". TD_OK and
 * nothing sent when disabled; TD_EIO if the socket refuses it. */
td_status td_notify_send(td_notify *n, const char *msg, td_error *err);

/* printf-style td_notify_send (at most 1024 bytes after formatting). */
td_status td_notify_sendf(td_notify *n, td_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "RELOADING=1\nMONOTONIC_USEC=<CLOCK_MONOTONIC in microseconds>", which
 * systemd >= 253 needs to match the following READY=1 to this reload. */
td_status td_notify_reloading(td_notify *n, td_error *err);

/* Close the socket; n is disabled afterwards. Safe to call twice. */
void td_notify_close(td_notify *n);

#endif
