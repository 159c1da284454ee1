/* td_log: the daemon's event log, one line per event on a file descriptor.
 *
 * On a terminal or a file a line reads
 *     2026-11-25T19:21:20.123Z info message
 * (UTC, millisecond precision). When stderr is connected to journald (the
 * JOURNAL_STREAM variable names the same device:inode as the fd) the line
 * instead starts with the sd-daemon priority prefix, "<6>message", and has no
 * timestamp because the journal records its own.
 *
 * Newlines, tabs and other control characters inside a message are escaped
 * (\n, \t, \xHH) so an event is always exactly one line, and a line is at
 * most TD_LOG_LINE_MAX bytes: longer messages end in "...". Each line goes
 * out in one write(2) of at most PIPE_BUF bytes, so lines written
 * concurrently by several threads never interleave.
 *
 * Thread: td_log_init before any thread logs; after that td_log_write may be
 * called from any thread at once (the struct is only read). errno is
 * preserved across td_log_write. No allocation. */
#ifndef TD_LOG_H
#define TD_LOG_H

#include "td_err.h"

/* Upper bound of one line including its newline; equal to Linux PIPE_BUF. */
#define TD_LOG_LINE_MAX 4096

typedef enum td_log_level {
    TD_LOG_ERROR,
    TD_LOG_WARN,
    TD_LOG_INFO,
    TD_LOG_DEBUG
} td_log_level;

typedef struct td_log {
    td_log_level level; /* events above this level are dropped */
    int fd;             /* where lines go, normally 2 */
    int journal;        /* 1: fd is a journald stream, use <N> prefixes */
} td_log;

/* Set the level and fd; journal is detected from $JOURNAL_STREAM. */
void td_log_init(td_log *lg, td_log_level level, int fd);

/* Parse "error", "warn" (or "warning"), "info", "debug", any case. */
td_status td_log_level_parse(const char *s, td_log_level *out, td_error *err);

/* "error", "warn", "info", "debug"; "?" for anything else. Static storage. */
const char *td_log_level_name(td_log_level l);

/* Write one event if lvl <= lg->level. Write errors are ignored: there is
 * nowhere left to report them. */
void td_log_write(const td_log *lg, td_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TD_LOG_ERR(lg, ...) td_log_write((lg), TD_LOG_ERROR, __VA_ARGS__)
#define TD_LOG_WARN(lg, ...) td_log_write((lg), TD_LOG_WARN, __VA_ARGS__)
#define TD_LOG_INFO(lg, ...) td_log_write((lg), TD_LOG_INFO, __VA_ARGS__)
#define TD_LOG_DEBUG(lg, ...) td_log_write((lg), TD_LOG_DEBUG, __VA_ARGS__)

#endif
