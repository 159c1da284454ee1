/* td_log: one escaped line per event, written with a single write(2). */
#include "config.h"

#include "td_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* sd-daemon(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
static const char level_prio[] = {'3', '4', '6', '7'};

const char *td_log_level_name(td_log_level l)
{
    return (unsigned)l <= TD_LOG_DEBUG ? level_names[l] : "?";
}

td_status td_log_level_parse(const char *s, td_log_level *out, td_error *err)
{
    unsigned i;
    for (i = 0; i <= TD_LOG_DEBUG; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (td_log_level)i;
            return TD_OK;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = TD_LOG_WARN;
        return TD_OK;
    }
    return td_error_set(err, TD_EINVAL,
                        "expected error, warn, info or debug, got \"%s\"", s);
}

/* JOURNAL_STREAM is "DEV:INO" of the stream systemd connected; it is only
 * ours if fd is that very stream (it may have been redirected since). */
static int is_journal_stream(int fd)
{
    const char *env = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    char *end;
    struct stat st;

    if (!env || !*env || fstat(fd, &st) != 0)
        return 0;
    errno = 0;
    dev = strtoull(env, &end, 10);
    if (end == env || *end != ':' || errno)
        return 0;
    env = end + 1;
    ino = strtoull(env, &end, 10);
    if (end == env || *end != '\0' || errno)
        return 0;
    return dev == (unsigned long long)st.st_dev &&
           ino == (unsigned long long)st.st_ino;
}

void td_log_init(td_log *lg, td_log_level level, int fd)
{
    lg->level = level;
    lg->fd = fd;
    lg->journal = fd >= 0 && is_journal_stream(fd);
}

/* Length of the UTF-8 sequence a lead byte starts (1 for anything else). */
static size_t utf8_seq_len(unsigned char b)
{
    if (b >= 0xF0)
        return 4;
    if (b >= 0xE0)
        return 3;
    if (b >= 0xC0)
        return 2;
    return 1;
}

/* Drop a UTF-8 sequence cut short at line[n], so truncation never leaves
 * half a character before the "...". Returns the new length. */
static size_t trim_partial_utf8(const char *line, size_t start, size_t n)
{
    size_t k = n;
    while (k > start && ((unsigned char)line[k - 1] & 0xC0) == 0x80)
        k--;
    if (k > start && (unsigned char)line[k - 1] >= 0xC0 &&
        n - (k - 1) < utf8_seq_len((unsigned char)line[k - 1]))
        return k - 1;
    return n;
}

static size_t write_prefix(const td_log *lg, td_log_level lvl, char *line,
                           size_t cap)
{
    struct timespec ts;
    struct tm tm;
    size_t n;
    int len;

    if (lg->journal) {
        line[0] = '<';
        line[1] = level_prio[lvl];
        line[2] = '>';
        return 3;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    len = snprintf(line + n, cap - n, ".%03ldZ %s ", ts.tv_nsec / 1000000L,
                   level_names[lvl]);
    return n + (len > 0 ? (size_t)len : 0);
}

void td_log_write(const td_log *lg, td_log_level lvl, const char *fmt, ...)
{
    /* Room kept at the end of the line for "...\n". */
    enum { RESERVE = 4 };
    char msg[TD_LOG_LINE_MAX];
    char line[TD_LOG_LINE_MAX];
    int saved_errno = errno;
    size_t n, start, left;
    const char *p;
    int len, truncated;
    va_list ap;

    if (!lg || lg->fd < 0 || (unsigned)lvl > TD_LOG_DEBUG ||
        (unsigned)lvl > (unsigned)lg->level)
        return;

    va_start(ap, fmt);
    len = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (len < 0) {
        snprintf(msg, sizeof msg, "(unformattable message \"%s\")", fmt);
        len = 0;
    }
    truncated = (size_t)len >= sizeof msg;

    start = n = write_prefix(lg, lvl, line, sizeof line);
    for (p = msg; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        char esc[5];
        size_t elen = 2;
        esc[0] = '\\';
        if (ch == '\n')
            esc[1] = 'n';
        else if (ch == '\r')
            esc[1] = 'r';
        else if (ch == '\t')
            esc[1] = 't';
        else if (ch < 0x20 || ch == 0x7f)
            elen = (size_t)snprintf(esc, sizeof esc, "\\x%02x", ch);
        else {
            esc[0] = (char)ch;
            elen = 1;
        }
        if (n + elen > sizeof line - RESERVE) {
            truncated = 1;
            break;
        }
        memcpy(line + n, esc, elen);
        n += elen;
    }
    if (truncated) {
        n = trim_partial_utf8(line, start, n);
        memcpy(line + n, "...", 3);
        n += 3;
    }
    line[n++] = '\n';

    /* One write normally; the loop only matters for a partial write to a
     * file or a signal, where the rest still has to follow. */
    for (p = line, left = n; left > 0;) {
        ssize_t w = write(lg->fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    errno = saved_errno;
}
