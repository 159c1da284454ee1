/* Unit tests for the daemon's utility modules: td_log, td_notify,
 * td_config. Logs go through real pipes, notifications through real AF_UNIX
 * datagram sockets, config files through real files. */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "td_config.h"
#include "td_err.h"
#include "td_file.h"
#include "td_log.h"
#include "td_notify.h"

static char tmpdir[64];

static void make_tmpdir(void)
{
    strcpy(tmpdir, "/tmp/td_srvutil_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

/* Read everything until EOF; the caller frees. */
static char *read_all(int fd, size_t *len_out)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    ck_assert_ptr_nonnull(buf);
    for (;;) {
        ssize_t r;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            ck_assert_ptr_nonnull(buf);
        }
        r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        ck_assert_int_ge(r, 0);
        if (r == 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
}

static size_t count_char(const char *s, size_t len, char ch)
{
    size_t i, n = 0;
    for (i = 0; i < len; i++)
        n += s[i] == ch;
    return n;
}

/* Length of "2026-11-25T19:21:20.123Z" */
#define TS_LEN 24

/* Assert a timestamp prefix has the documented shape and is close to now. */
static void check_timestamp(const char *line)
{
    struct tm tm;
    const char *end;
    time_t t;
    int i;
    for (i = 0; i < TS_LEN; i++) {
        char ch = line[i];
        if (i == 4 || i == 7)
            ck_assert_int_eq(ch, '-');
        else if (i == 10)
            ck_assert_int_eq(ch, 'T');
        else if (i == 13 || i == 16)
            ck_assert_int_eq(ch, ':');
        else if (i == 19)
            ck_assert_int_eq(ch, '.');
        else if (i == 23)
            ck_assert_int_eq(ch, 'Z');
        else
            ck_assert_msg(ch >= '0' && ch <= '9', "digit at %d in %.30s", i,
                          line);
    }
    memset(&tm, 0, sizeof tm);
    end = strptime(line, "%Y-%m-%dT%H:%M:%S", &tm);
    ck_assert_ptr_nonnull(end);
    t = timegm(&tm);
    ck_assert_int_le(labs((long)(t - time(NULL))), 5);
}

/* ------------------------------------------------------------ td_log */

START_TEST(test_log_level_parse_and_names)
{
    td_log_level l = TD_LOG_ERROR;
    td_error err;
    ck_assert_int_eq(td_log_level_parse("debug", &l, &err), TD_OK);
    ck_assert_int_eq(l, TD_LOG_DEBUG);
    ck_assert_int_eq(td_log_level_parse("INFO", &l, &err), TD_OK);
    ck_assert_int_eq(l, TD_LOG_INFO);
    ck_assert_int_eq(td_log_level_parse("warning", &l, &err), TD_OK);
    ck_assert_int_eq(l, TD_LOG_WARN);
    ck_assert_int_eq(td_log_level_parse("error", &l, &err), TD_OK);
    ck_assert_int_eq(l, TD_LOG_ERROR);
    ck_assert_int_eq(td_log_level_parse("loud", &l, &err), TD_EINVAL);
    ck_assert_str_eq(err.msg,
                     "expected error, warn, info or debug, got \"loud\"");
    ck_assert_int_eq(l, TD_LOG_ERROR); /* untouched on error */
    ck_assert_str_eq(td_log_level_name(TD_LOG_WARN), "warn");
    ck_assert_str_eq(td_log_level_name(TD_LOG_DEBUG), "debug");
    ck_assert_str_eq(td_log_level_name((td_log_level)42), "?");
}
END_TEST

START_TEST(test_log_line_format_and_escaping)
{
    int p[2];
    td_log lg;
    char *out, *line;
    size_t len;
    const char *expect_tail[] = {
        " info hello world\\nsecond\\tline\\r\\x01 end\\x7f caf\xc3\xa9\n",
        " error e=2\n", " warn w\n", " debug d\n"};
    unsigned i;

    unsetenv("JOURNAL_STREAM");
    ck_assert_int_eq(pipe(p), 0);
    td_log_init(&lg, TD_LOG_DEBUG, p[1]);
    ck_assert_int_eq(lg.journal, 0);
    TD_LOG_INFO(&lg, "hello %s\nsecond\tline\r\x01 end\x7f caf\xc3\xa9",
                "world");
    TD_LOG_ERR(&lg, "e=%d", 2);
    TD_LOG_WARN(&lg, "w");
    TD_LOG_DEBUG(&lg, "d");
    close(p[1]);
    out = read_all(p[0], &len);
    close(p[0]);

    ck_assert_uint_eq(count_char(out, len, '\n'), 4);
    line = out;
    for (i = 0; i < 4; i++) {
        char *nl = strchr(line, '\n');
        size_t tail_len = strlen(expect_tail[i]);
        ck_assert_ptr_nonnull(nl);
        check_timestamp(line);
        ck_assert_uint_eq((size_t)(nl + 1 - line), TS_LEN + tail_len);
        ck_assert_mem_eq(line + TS_LEN, expect_tail[i], tail_len);
        line = nl + 1;
    }
    free(out);
}
END_TEST

START_TEST(test_log_level_filter_keeps_errno)
{
    int p[2];
    td_log lg;
    char *out;
    size_t len;

    unsetenv("JOURNAL_STREAM");
    ck_assert_int_eq(pipe(p), 0);
    td_log_init(&lg, TD_LOG_WARN, p[1]);
    TD_LOG_DEBUG(&lg, "dropped debug");
    TD_LOG_INFO(&lg, "dropped info");
    errno = ENOENT;
    TD_LOG_WARN(&lg, "kept warn");
    ck_assert_int_eq(errno, ENOENT);
    TD_LOG_ERR(&lg, "kept error");
    close(p[1]);
    out = read_all(p[0], &len);
    close(p[0]);
    ck_assert_uint_eq(count_char(out, len, '\n'), 2);
    ck_assert_ptr_null(strstr(out, "dropped"));
    ck_assert_ptr_nonnull(strstr(out, " warn kept warn\n"));
    ck_assert_ptr_nonnull(strstr(out, " error kept error\n"));
    free(out);
}
END_TEST

START_TEST(test_log_truncates_long_lines)
{
    int p[2];
    td_log lg;
    char *msg, *out, *body;
    size_t len, body_len, i;

    unsetenv("JOURNAL_STREAM");
    /* "x" and 5000 two-byte characters: the cut, wherever the prefix puts
     * it, must not split one. */
    msg = malloc(10002);
    ck_assert_ptr_nonnull(msg);
    msg[0] = 'x';
    for (i = 0; i < 5000; i++) {
        msg[1 + 2 * i] = '\xc3';
        msg[2 + 2 * i] = '\xa9';
    }
    msg[10001] = '\0';
    ck_assert_int_eq(pipe(p), 0);
    td_log_init(&lg, TD_LOG_INFO, p[1]);
    TD_LOG_INFO(&lg, "%s", msg);
    /* 3000 newlines escape to 6000 bytes: the cut must not split "\n". */
    memset(msg, '\n', 3000);
    msg[3000] = '\0';
    TD_LOG_INFO(&lg, "%s", msg);
    close(p[1]);
    out = read_all(p[0], &len);
    close(p[0]);
    ck_assert_uint_eq(count_char(out, len, '\n'), 2);

    body = strchr(out, '\n') + 1; /* second line first, then the first */
    ck_assert_uint_le((size_t)(body - out), TD_LOG_LINE_MAX);
    ck_assert_uint_ge((size_t)(body - out), TD_LOG_LINE_MAX - 8);
    ck_assert_mem_eq(body - 4, "...\n", 4);
    body_len = (size_t)(body - 4 - (out + TS_LEN + 6)); /* after " info " */
    ck_assert_int_eq(out[TS_LEN + 6], 'x');
    ck_assert_uint_eq((body_len - 1) % 2, 0);
    ck_assert_mem_eq(body - 6, "\xc3\xa9", 2);

    ck_assert_uint_le(len - (size_t)(body - out), TD_LOG_LINE_MAX);
    ck_assert_mem_eq(out + len - 4, "...\n", 4);
    ck_assert_mem_eq(out + len - 6, "\\n", 2);
    body_len = len - 4 - (size_t)(body - out) - (TS_LEN + 6);
    ck_assert_uint_eq(body_len % 2, 0);
    free(out);
    free(msg);
}
END_TEST

enum { LOG_THREADS = 4, LOG_LINES = 100, LOG_PAYLOAD = 3000 };

struct log_thread_arg {
    const td_log *lg;
    char letter;
};

static void *log_thread(void *arg)
{
    const struct log_thread_arg *a = arg;
    char payload[LOG_PAYLOAD + 1];
    int i;
    memset(payload, a->letter, LOG_PAYLOAD);
    payload[LOG_PAYLOAD] = '\0';
    for (i = 0; i < LOG_LINES; i++)
        TD_LOG_INFO(a->lg, "%s", payload);
    return NULL;
}

START_TEST(test_log_threads_never_interleave)
{
    pthread_t th[LOG_THREADS];
    struct log_thread_arg args[LOG_THREADS];
    int p[2], t;
    td_log lg;
    char *out, *line;
    size_t len, lines = 0;
    unsigned per_letter[LOG_THREADS] = {0};

    unsetenv("JOURNAL_STREAM");
    ck_assert_int_eq(pipe(p), 0);
    td_log_init(&lg, TD_LOG_INFO, p[1]);
    for (t = 0; t < LOG_THREADS; t++) {
        args[t].lg = &lg;
        args[t].letter = (char)('A' + t);
        ck_assert_int_eq(pthread_create(&th[t], NULL, log_thread, &args[t]),
                         0);
    }
    /* Writers block on the full pipe until this thread reads; close the
     * write end only after they are done so read_all sees EOF. */
    {
        size_t cap = (size_t)LOG_THREADS * LOG_LINES * (LOG_PAYLOAD + 64);
        size_t want = (size_t)LOG_THREADS * LOG_LINES;
        out = malloc(cap + 1);
        ck_assert_ptr_nonnull(out);
        size_t got = 0;
        len = 0;
        while (got < want) {
            ssize_t r = read(p[0], out + len, cap - len);
            ck_assert_int_gt(r, 0);
            got += count_char(out + len, (size_t)r, '\n');
            len += (size_t)r;
        }
        out[len] = '\0';
    }
    for (t = 0; t < LOG_THREADS; t++)
        pthread_join(th[t], NULL);
    close(p[1]);
    close(p[0]);

    for (line = out; *line; lines++) {
        char *nl = strchr(line, '\n');
        const char *payload = line + TS_LEN + 6;
        size_t i;
        ck_assert_ptr_nonnull(nl);
        ck_assert_uint_eq((size_t)(nl - line), TS_LEN + 6 + LOG_PAYLOAD);
        ck_assert_mem_eq(line + TS_LEN, " info ", 6);
        ck_assert(payload[0] >= 'A' && payload[0] < 'A' + LOG_THREADS);
        for (i = 1; i < LOG_PAYLOAD; i++)
            ck_assert_int_eq(payload[i], payload[0]);
        per_letter[payload[0] - 'A']++;
        line = nl + 1;
    }
    ck_assert_uint_eq(lines, (size_t)LOG_THREADS * LOG_LINES);
    for (t = 0; t < LOG_THREADS; t++)
        ck_assert_uint_eq(per_letter[t], LOG_LINES);
    free(out);
}
END_TEST

START_TEST(test_log_journal_prefix)
{
    int p[2];
    td_log lg;
    struct stat st;
    char env[64], *out;
    size_t len;

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(fstat(p[1], &st), 0);
    /* A stream that is not ours: plain format. */
    snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", env, 1);
    td_log_init(&lg, TD_LOG_DEBUG, p[1]);
    ck_assert_int_eq(lg.journal, 0);
    setenv("JOURNAL_STREAM", "garbage", 1);
    td_log_init(&lg, TD_LOG_DEBUG, p[1]);
    ck_assert_int_eq(lg.journal, 0);

    snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", env, 1);
    td_log_init(&lg, TD_LOG_DEBUG, p[1]);
    ck_assert_int_eq(lg.journal, 1);
    TD_LOG_ERR(&lg, "disk\nfull");
    TD_LOG_WARN(&lg, "w");
    TD_LOG_INFO(&lg, "i %d", 3);
    TD_LOG_DEBUG(&lg, "d");
    close(p[1]);
    out = read_all(p[0], &len);
    close(p[0]);
    ck_assert_str_eq(out, "<3>disk\\nfull\n<4>w\n<6>i 3\n<7>d\n");
    free(out);
    unsetenv("JOURNAL_STREAM");
}
END_TEST

/* ------------------------------------------------------------ td_notify */

/* A receiving datagram socket bound to `path` (a filesystem path, or
 * "@name" for the abstract namespace), as systemd would create it. */
static int bind_receiver(const char *path)
{
    struct sockaddr_un sa;
    size_t len = strlen(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_uint_lt(len, sizeof sa.sun_path);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    ck_assert_int_eq(
        bind(fd, (struct sockaddr *)&sa,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                         (path[0] == '@' ? 0 : 1))),
        0);
    return fd;
}

/* Receive one datagram (waits at most 5 s) as a string. */
static void recv_msg(int fd, char *buf, size_t cap)
{
    struct timeval tv = {5, 0};
    ssize_t r;
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv),
                     0);
    r = recv(fd, buf, cap - 1, 0);
    ck_assert_int_gt(r, 0);
    buf[r] = '\0';
}

static void clear_notify_env(void)
{
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

START_TEST(test_notify_disabled_is_noop)
{
    td_notify n;
    td_error err;
    clear_notify_env();
    ck_assert_int_eq(td_notify_init(&n, &err), TD_OK);
    ck_assert_int_eq(td_notify_enabled(&n), 0);
    ck_assert_int_eq(n.fd, -1);
    ck_assert_uint_eq(n.watchdog_usec, 0);
    ck_assert_int_eq(td_notify_send(&n, "READY=1", &err), TD_OK);
    ck_assert_int_eq(td_notify_reloading(&n, &err), TD_OK);
    ck_assert_int_eq(td_notify_sendf(&n, &err, "STATUS=%d", 1), TD_OK);
    td_notify_close(&n);
    td_notify_close(&n);
    /* Empty means unset too. */
    setenv("NOTIFY_SOCKET", "", 1);
    ck_assert_int_eq(td_notify_init(&n, &err), TD_OK);
    ck_assert_int_eq(td_notify_enabled(&n), 0);
}
END_TEST

START_TEST(test_notify_path_socket)
{
    char path[128], buf[2048];
    td_notify n;
    td_error err;
    int rx;

    clear_notify_env();
    make_tmpdir();
    snprintf(path, sizeof path, "%s/notify.sock", tmpdir);
    rx = bind_receiver(path);
    setenv("NOTIFY_SOCKET", path, 1);
    ck_assert_int_eq(td_notify_init(&n, &err), TD_OK);
    ck_assert_int_eq(td_notify_enabled(&n), 1);
    ck_assert_uint_eq(n.watchdog_usec, 0);

    ck_assert_int_eq(
        td_notify_send(&n, "READY=1\nSTATUS=serving 3 models", &err), TD_OK);
    recv_msg(rx, buf, sizeof buf);
    ck_assert_str_eq(buf, "READY=1\nSTATUS=serving 3 models");
    ck_assert_int_eq(td_notify_sendf(&n, &err, "STATUS=%d models", 7), TD_OK);
    recv_msg(rx, buf, sizeof buf);
    ck_assert_str_eq(buf, "STATUS=7 models");
    ck_assert_int_eq(td_notify_send(&n, "", &err), TD_EINVAL);

    /* The receiver is gone: the send fails and says where it went. */
    close(rx);
    unlink(path);
    ck_assert_int_eq(td_notify_send(&n, "STOPPING=1", &err), TD_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    td_notify_close(&n);
    ck_assert_int_eq(td_notify_enabled(&n), 0);
    rmdir(tmpdir);
}
END_TEST

START_TEST(test_notify_abstract_socket)
{
    char name[108], buf[256];
    td_notify n;
    td_error err;
    struct timespec ts;
    int rx;

    clear_notify_env();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(name, sizeof name, "@tinyd-test-%ld-%ld", (long)getpid(),
             (long)ts.tv_nsec);
    rx = bind_receiver(name);
    setenv("NOTIFY_SOCKET", name, 1);
    ck_assert_int_eq(td_notify_init(&n, &err), TD_OK);
    ck_assert_int_eq(n.addr.sun_path[0], '\0');
    ck_assert_int_eq(td_notify_send(&n, "READY=1", &err), TD_OK);
    recv_msg(rx, buf, sizeof buf);
    ck_assert_str_eq(buf, "READY=1");
    td_notify_close(&n);
    close(rx);
}
END_TEST

START_TEST(test_notify_reloading_message)
{
    char path[128], buf[256];
    td_notify n;
    td_error err;
    struct timespec before, after;
    uint64_t b, a, v;
    const char *head = "RELOADING=1\nMONOTONIC_USEC=";
    char *end;
    int rx;

    clear_notify_env();
    make_tmpdir();
    snprintf(path, sizeof path, "%s/n.sock", tmpdir);
    rx = bind_receiver(path);
    setenv("NOTIFY_SOCKET", path, 1);
    ck_assert_int_eq(td_notify_init(&n, &err), TD_OK);
    clock_gettime(CLOCK_MONOTONIC, &before);
    ck_assert_int_eq(td_notify_reloading(&n, &err), TD_OK);
    clock_gettime(CLOCK_MONOTONIC, &after);
    recv_msg(rx, buf, sizeof buf);
    ck_assert_int_eq(strncmp(buf, head, strlen(head)), 0);
    ck_assert(buf[strlen(head)] >= '0' && buf[strlen(head)] <= '9');
    v = strtoull(buf + strlen(head), &end, 10);
    ck_assert_int_eq(*end, '\0');
    b = (uint64_t)before.tv_sec * 1000000u + (uint64_t)before.tv_nsec / 1000u;
    a = (uint64_t)after.tv_sec * 1000000u + (uint64_t)after.tv_nsec / 1000u;
    ck_assert_uint_ge(v, b);
    ck_assert_uint_le(v, a);
    td_notify_close(&n);
    close(rx);
    unlink(path);
    rmdir(tmpdir);
}
END_TEST

START_TEST(test_notify_env_validation_and_watchdog)
{
    td_notify n;
    td_error err;
    char pid[32], longpath[200];

    clear_notify_env();
    setenv("NOTIFY_SOCKET", "@tinyd-test-watchdog", 1);
    setenv("WATCHDOG_USEC", "30000000", 1);
    ck_assert_int_eq(td_notify_init(&n, &err), TD_OK);
    ck_assert_uint_eq(n.watchdog_usec, 30000000u);
    td_notify_close(&n);

    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_int_eq(td_notify_init(&n, &err), TD_OK);
    ck_assert_uint_eq(n.watchdog_usec, 30000000u);
    td_notify_close(&n);

    /* Meant for another process: no watchdog for us. */
    snprintf(pid, sizeof pid, "%ld", (long)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_int_eq(td_notify_init(&n, &err), TD_OK);
    ck_assert_uint_eq(n.watchdog_usec, 0);
    ck_assert_int_eq(td_notify_enabled(&n), 1);
    td_notify_close(&n);

    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "30s", 1);
    ck_assert_int_eq(td_notify_init(&n, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "WATCHDOG_USEC \"30s\""));
    ck_assert_int_eq(td_notify_enabled(&n), 0);
    setenv("WATCHDOG_USEC", "-5", 1);
    ck_assert_int_eq(td_notify_init(&n, &err), TD_EINVAL);
    unsetenv("WATCHDOG_USEC");

    setenv("NOTIFY_SOCKET", "run/notify", 1);
    ck_assert_int_eq(td_notify_init(&n, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "NOTIFY_SOCKET \"run/notify\""));
    ck_assert_int_eq(td_notify_enabled(&n), 0);
    ck_assert_int_eq(td_notify_send(&n, "READY=1", &err), TD_OK);

    memset(longpath, 'x', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    setenv("NOTIFY_SOCKET", longpath, 1);
    ck_assert_int_eq(td_notify_init(&n, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "longer than"));
    clear_notify_env();
}
END_TEST

/* ------------------------------------------------------------ td_config */

static unsigned expected_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (unsigned)n;
}

START_TEST(test_config_defaults)
{
    td_config c;
    unsetenv("STATE_DIRECTORY");
    memset(&c, 0xab, sizeof c);
    td_config_defaults(&c);
    ck_assert_str_eq(c.host, "127.0.0.1");
    ck_assert_uint_eq(c.port, 8080);
    ck_assert_str_eq(c.models_dir, "models");
    ck_assert_str_eq(c.state_dir, "state");
    ck_assert_uint_eq(c.threads, expected_default_threads());
    ck_assert_uint_eq(c.max_body, 64u << 20);
    ck_assert_int_eq(c.log_level, TD_LOG_INFO);
    ck_assert_uint_eq(c.drain_timeout_ms, 10000);
    ck_assert_uint_eq(c.max_connections, 1024);
    ck_assert_uint_eq(c.connection_timeout_s, 60);
    ck_assert_str_eq(c.config_path, "");

    setenv("STATE_DIRECTORY", "/var/lib/tinyd:/var/lib/other", 1);
    td_config_defaults(&c);
    ck_assert_str_eq(c.state_dir, "/var/lib/tinyd");
    setenv("STATE_DIRECTORY", "/var/lib/tinyd", 1);
    td_config_defaults(&c);
    ck_assert_str_eq(c.state_dir, "/var/lib/tinyd");
    unsetenv("STATE_DIRECTORY");
}
END_TEST

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

START_TEST(test_config_flags_both_forms)
{
    char *argv[] = {"tinyd",          "--listen",
                    "0.0.0.0:9000",   "--models=/srv/models",
                    "--threads",      "3",
                    "--max-body=2k",  "--log-level",
                    "debug",          "--drain-timeout=2.5",
                    "--max-connections", "10",
                    "--connection-timeout=0", "--state",
                    "/srv/state",     "--threads=5"};
    td_config c;
    td_config_action action = TD_CONFIG_HELP;
    td_error err;

    ck_assert_int_eq(td_config_from_args(&c, ARGC(argv), argv, &action, &err),
                     TD_OK);
    ck_assert_int_eq(action, TD_CONFIG_RUN);
    ck_assert_str_eq(c.host, "0.0.0.0");
    ck_assert_uint_eq(c.port, 9000);
    ck_assert_str_eq(c.models_dir, "/srv/models");
    ck_assert_str_eq(c.state_dir, "/srv/state");
    ck_assert_uint_eq(c.threads, 5); /* the later flag wins */
    ck_assert_uint_eq(c.max_body, 2048);
    ck_assert_int_eq(c.log_level, TD_LOG_DEBUG);
    ck_assert_uint_eq(c.drain_timeout_ms, 2500);
    ck_assert_uint_eq(c.max_connections, 10);
    ck_assert_uint_eq(c.connection_timeout_s, 0);
    ck_assert_str_eq(c.config_path, "");

    /* No flags at all: the defaults. */
    ck_assert_int_eq(td_config_from_args(&c, 1, argv, &action, &err), TD_OK);
    ck_assert_str_eq(c.host, "127.0.0.1");
    ck_assert_uint_eq(c.port, 8080);
}
END_TEST

START_TEST(test_config_help_version_usage)
{
    char *help[] = {"tinyd", "--threads", "abc", "-h"};
    char *help2[] = {"tinyd", "--help"};
    char *ver[] = {"tinyd", "-V"};
    char *ver2[] = {"tinyd", "--models", "m", "--version"};
    td_config c;
    td_config_action action;
    td_error err;
    char *text = NULL;
    size_t text_len = 0;
    FILE *mem;
    unsigned i;

    ck_assert_int_eq(td_config_from_args(&c, ARGC(help), help, &action, &err),
                     TD_OK);
    ck_assert_int_eq(action, TD_CONFIG_HELP);
    ck_assert_int_eq(
        td_config_from_args(&c, ARGC(help2), help2, &action, &err), TD_OK);
    ck_assert_int_eq(action, TD_CONFIG_HELP);
    ck_assert_int_eq(td_config_from_args(&c, ARGC(ver), ver, &action, &err),
                     TD_OK);
    ck_assert_int_eq(action, TD_CONFIG_VERSION);
    ck_assert_int_eq(td_config_from_args(&c, ARGC(ver2), ver2, &action, &err),
                     TD_OK);
    ck_assert_int_eq(action, TD_CONFIG_VERSION);

    mem = open_memstream(&text, &text_len);
    ck_assert_ptr_nonnull(mem);
    td_config_usage(mem, "tinyd");
    fclose(mem);
    ck_assert_int_eq(strncmp(text, "Usage: tinyd ", 13), 0);
    for (i = 0; td_config_keys[i]; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s ", td_config_keys[i]);
        ck_assert_msg(strstr(text, flag), "usage lacks %s", flag);
    }
    free(text);
}
END_TEST

/* td_config_set must fail with TD_EINVAL and exactly this message. */
static void expect_set_error(const char *key, const char *value,
                             const char *msg)
{
    td_config c;
    td_error err;
    td_config_defaults(&c);
    ck_assert_msg(td_config_set(&c, key, value, &err) == TD_EINVAL,
                  "%s = \"%s\" was accepted", key, value);
    ck_assert_str_eq(err.msg, msg);
}

/* td_config_set must fail with a message starting "KEY: " and quoting the
 * value. */
static void expect_set_bad(const char *key, const char *value)
{
    td_config c, before;
    td_error err;
    char head[64], quoted[128];
    td_config_defaults(&c);
    before = c;
    ck_assert_msg(td_config_set(&c, key, value, &err) == TD_EINVAL,
                  "%s = \"%s\" was accepted", key, value);
    snprintf(head, sizeof head, "%s: ", key);
    snprintf(quoted, sizeof quoted, "\"%s\"", value);
    ck_assert_msg(strncmp(err.msg, head, strlen(head)) == 0, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, quoted) != NULL, "%s", err.msg);
    ck_assert_msg(memcmp(&c, &before, sizeof c) == 0,
                  "%s = \"%s\" changed the config", key, value);
}

START_TEST(test_config_listen_forms)
{
    td_config c;
    td_error err;
    static const char *bad[] = {"::1:8080",  ":8080",      "[]:80",
                                "localhost", "localhost:", "host:65536",
                                "host:-1",   "host:+80",   "[::1]8080",
                                "[::1",      "ho st:80",   "host:80x",
                                "",          "h:99999999999999999999"};
    unsigned i;

    td_config_defaults(&c);
    ck_assert_int_eq(td_config_set(&c, "listen", "[::1]:8081", &err), TD_OK);
    ck_assert_str_eq(c.host, "::1");
    ck_assert_uint_eq(c.port, 8081);
    ck_assert_int_eq(td_config_set(&c, "listen", "[fe80::1%eth0]:0", &err),
                     TD_OK);
    ck_assert_str_eq(c.host, "fe80::1%eth0");
    ck_assert_uint_eq(c.port, 0);
    ck_assert_int_eq(td_config_set(&c, "listen", "localhost:65535", &err),
                     TD_OK);
    ck_assert_str_eq(c.host, "localhost");
    ck_assert_uint_eq(c.port, 65535);
    ck_assert_int_eq(td_config_set(&c, "listen", "[::]:80", &err), TD_OK);
    ck_assert_str_eq(c.host, "::");

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_set_bad("listen", bad[i]);
    expect_set_error("listen", "::1:8080",
                     "listen: an IPv6 address needs brackets, e.g. "
                     "[::1]:8080, got \"::1:8080\"");
    expect_set_error("listen", ":8080", "listen: empty host in \":8080\"");
}
END_TEST

START_TEST(test_config_sizes_and_overflow)
{
    td_config c;
    td_error err;
    static const struct {
        const char *text;
        uint64_t bytes;
    } good[] = {{"1", 1},
                {"65536", 65536},
                {"1k", 1024},
                {"1K", 1024},
                {"64M", (uint64_t)64 << 20},
                {"3g", (uint64_t)3 << 30},
                {"1024G", (uint64_t)1 << 40},
                {"1048576M", (uint64_t)1 << 40}};
    static const char *bad[] = {
        "0", "", "k", "12x", "-1", " 1", "1 ", "+1", "1.5M", "1kk", "1T",
        "1025G", "1099511627777",
        /* 2^34 G = 2^64: wraps to 0 if the multiply is unchecked */
        "17179869184G",
        /* (2^34 + 1) G wraps to exactly 1G, which would be "valid" */
        "17179869185G",
        /* beyond uint64_t: strtoull's ERANGE */
        "99999999999999999999", "18446744073709551616"};
    unsigned i;

    td_config_defaults(&c);
    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        ck_assert_int_eq(td_config_set(&c, "max-body", good[i].text, &err),
                         TD_OK);
        ck_assert_uint_eq(c.max_body, good[i].bytes);
    }
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_set_bad("max-body", bad[i]);
}
END_TEST

START_TEST(test_config_numbers)
{
    td_config c;
    td_error err;
    static const struct {
        const char *text;
        unsigned ms;
    } secs[] = {{"10", 10000},   {"0", 0},           {"2.5", 2500},
                {"0.125", 125},  {"0.0005", 1},      {"0.0004", 0},
                {"1.9996", 2000}, {"86400", 86400000}, {"007", 7000}};
    static const char *bad_threads[] = {"0", "257", "abc", "4x", "", "+4",
                                        "-1", " 4",
                                        /* 2^32 + 4: 4 if truncated */
                                        "4294967300"};
    static const char *bad_secs[] = {"86400.001", "86401", "1e3", ".5",
                                     "5.",        "inf",   "nan", "-1",
                                     "1,5",       "10s",   "",
                                     "99999999999999999999999"};
    unsigned i;

    td_config_defaults(&c);
    ck_assert_int_eq(td_config_set(&c, "threads", "256", &err), TD_OK);
    ck_assert_uint_eq(c.threads, 256);
    ck_assert_int_eq(td_config_set(&c, "threads", "1", &err), TD_OK);
    ck_assert_uint_eq(c.threads, 1);
    for (i = 0; i < sizeof bad_threads / sizeof bad_threads[0]; i++)
        expect_set_bad("threads", bad_threads[i]);
    expect_set_error("threads", "abc",
                     "threads: expected an integer from 1 to 256, got \"abc\"");

    for (i = 0; i < sizeof secs / sizeof secs[0]; i++) {
        ck_assert_int_eq(td_config_set(&c, "drain-timeout", secs[i].text, &err),
                         TD_OK);
        ck_assert_msg(c.drain_timeout_ms == secs[i].ms, "%s -> %u ms",
                      secs[i].text, c.drain_timeout_ms);
    }
    for (i = 0; i < sizeof bad_secs / sizeof bad_secs[0]; i++)
        expect_set_bad("drain-timeout", bad_secs[i]);

    ck_assert_int_eq(td_config_set(&c, "max-connections", "1000000", &err),
                     TD_OK);
    ck_assert_uint_eq(c.max_connections, 1000000);
    expect_set_bad("max-connections", "0");
    expect_set_bad("max-connections", "1000001");
    ck_assert_int_eq(td_config_set(&c, "connection-timeout", "86400", &err),
                     TD_OK);
    ck_assert_uint_eq(c.connection_timeout_s, 86400);
    expect_set_bad("connection-timeout", "86401");
    expect_set_bad("connection-timeout", "1.5");
    expect_set_bad("log-level", "loud");
    expect_set_bad("models", "");
    expect_set_bad("state", "");

    ck_assert_int_eq(td_config_set(&c, "lisen", "x", &err), TD_EINVAL);
    ck_assert_str_eq(err.msg, "unknown key \"lisen\"");
}
END_TEST

/* td_config_from_args on argv must fail with TD_EINVAL and exactly msg. */
static void expect_args_error(int argc, char *argv[], const char *msg)
{
    td_config c;
    td_config_action action;
    td_error err;
    ck_assert_int_eq(td_config_from_args(&c, argc, argv, &action, &err),
                     TD_EINVAL);
    ck_assert_str_eq(err.msg, msg);
}

START_TEST(test_config_bad_flags)
{
    char *a1[] = {"tinyd", "--threads", "abc"};
    char *a2[] = {"tinyd", "--threads=abc"};
    char *a3[] = {"tinyd", "--lisen", "x"};
    char *a4[] = {"tinyd", "--lisen=127.0.0.1:80"};
    char *a5[] = {"tinyd", "serve"};
    char *a6[] = {"tinyd", "-x"};
    char *a7[] = {"tinyd", "-"};
    char *a8[] = {"tinyd", "--models"};
    char *a9[] = {"tinyd", "--threads", "--models", "m"};
    char *a10[] = {"tinyd", "--config", "a.conf", "--config=b.conf"};
    char *a11[] = {"tinyd", "--config="};
    char *a12[] = {"tinyd", "--max-body", "17179869185G"};
    char *a13[] = {"tinyd", "--listen", "::1:80"};
    char *a14[] = {"tinyd", "--"};

    expect_args_error(ARGC(a1), a1,
                      "--threads: expected an integer from 1 to 256, got "
                      "\"abc\"");
    expect_args_error(ARGC(a2), a2,
                      "--threads: expected an integer from 1 to 256, got "
                      "\"abc\"");
    expect_args_error(ARGC(a3), a3, "unknown option \"--lisen\"");
    expect_args_error(ARGC(a4), a4, "unknown option \"--lisen\"");
    expect_args_error(ARGC(a5), a5,
                      "unexpected argument \"serve\" (options are --name "
                      "value; see --help)");
    expect_args_error(ARGC(a6), a6, "unknown option \"-x\"");
    expect_args_error(ARGC(a7), a7, "unknown option \"-\"");
    expect_args_error(ARGC(a8), a8, "--models: missing value");
    expect_args_error(ARGC(a9), a9, "--threads: missing value");
    expect_args_error(ARGC(a10), a10, "--config: given more than once");
    expect_args_error(ARGC(a11), a11, "--config: expected a file name, got \"\"");
    expect_args_error(ARGC(a12), a12,
                      "--max-body: expected a size from 1 to 1024G bytes "
                      "(suffixes k, M, G are powers of 1024), got "
                      "\"17179869185G\"");
    expect_args_error(ARGC(a13), a13,
                      "--listen: an IPv6 address needs brackets, e.g. "
                      "[::1]:8080, got \"::1:80\"");
    expect_args_error(ARGC(a14), a14, "unknown option \"--\"");
}
END_TEST

static void write_text(const char *path, const char *text)
{
    td_error err;
    ck_assert_int_eq(td_file_write_atomic(path, text, strlen(text), &err),
                     TD_OK);
}

START_TEST(test_config_file_and_precedence)
{
    char path[128];
    td_config c;
    td_config_action action;
    td_error err;
    char *argv[] = {"tinyd", "--threads", "7", NULL, NULL, "--listen=[::]:1"};

    make_tmpdir();
    snprintf(path, sizeof path, "%s/tinyd.conf", tmpdir);
    write_text(path,
               "# tinyd test config\n"
               "\n"
               "   # indented comment\n"
               "listen = 0.0.0.0:9\n"
               "threads = 2\n"
               "models = \"/srv/my models #1\"   # quoted, keeps the '#'\n"
               "state='/st'\n"
               "max-body = 1M # one mebibyte\n"
               "log-level\t=\twarn\r\n"
               "drain-timeout = 1.25\r\n"
               "max-connections = 5\n"
               "connection-timeout = 30"); /* no final newline */
    argv[3] = "--config";
    argv[4] = path;

    /* The file alone. */
    td_config_defaults(&c);
    ck_assert_int_eq(td_config_load_file(&c, path, &err), TD_OK);
    ck_assert_str_eq(c.host, "0.0.0.0");
    ck_assert_uint_eq(c.port, 9);
    ck_assert_uint_eq(c.threads, 2);
    ck_assert_str_eq(c.models_dir, "/srv/my models #1");
    ck_assert_str_eq(c.state_dir, "/st");
    ck_assert_uint_eq(c.max_body, 1u << 20);
    ck_assert_int_eq(c.log_level, TD_LOG_WARN);
    ck_assert_uint_eq(c.drain_timeout_ms, 1250);
    ck_assert_uint_eq(c.max_connections, 5);
    ck_assert_uint_eq(c.connection_timeout_s, 30);

    /* Flags beat the file even when they come before --config. */
    ck_assert_int_eq(td_config_from_args(&c, ARGC(argv), argv, &action, &err),
                     TD_OK);
    ck_assert_int_eq(action, TD_CONFIG_RUN);
    ck_assert_uint_eq(c.threads, 7);
    ck_assert_str_eq(c.host, "::");
    ck_assert_uint_eq(c.port, 1);
    ck_assert_str_eq(c.models_dir, "/srv/my models #1"); /* from the file */
    ck_assert_uint_eq(c.max_connections, 5);
    ck_assert_str_eq(c.config_path, path);

    /* --config=FILE form. */
    {
        char eqarg[160];
        char *argv2[] = {"tinyd", eqarg, "--max-connections", "6"};
        snprintf(eqarg, sizeof eqarg, "--config=%s", path);
        ck_assert_int_eq(
            td_config_from_args(&c, ARGC(argv2), argv2, &action, &err), TD_OK);
        ck_assert_uint_eq(c.threads, 2);
        ck_assert_uint_eq(c.max_connections, 6);
    }
    unlink(path);
    rmdir(tmpdir);
}
END_TEST

/* Load `text` as a config file; it must fail with "PATH:" + tail. */
static void expect_file_error(const char *text, const char *tail)
{
    char path[128], want[512];
    td_config c;
    td_error err;
    snprintf(path, sizeof path, "%s/bad.conf", tmpdir);
    write_text(path, text);
    td_config_defaults(&c);
    ck_assert_int_eq(td_config_load_file(&c, path, &err), TD_EINVAL);
    snprintf(want, sizeof want, "%s:%s", path, tail);
    ck_assert_str_eq(err.msg, want);
    unlink(path);
}

START_TEST(test_config_file_errors)
{
    char path[128], arg[160];
    td_config c;
    td_config_action action;
    td_error err;
    char *argv[] = {"tinyd", arg};

    make_tmpdir();
    expect_file_error("# tinyd\n\nlisten = 127.0.0.1:80\nthreads = 2\n\n"
                      "# next line is wrong\nlisen = 0.0.0.0:80\n",
                      "7: unknown key \"lisen\"");
    expect_file_error("threads 4\n", "1: expected \"key = value\", got "
                                     "\"threads 4\"");
    expect_file_error("threads = abc\n",
                      "1: threads: expected an integer from 1 to 256, got "
                      "\"abc\"");
    expect_file_error("max-body = 4 # four\nthreads = 4 #x\nthreads = 4#x\n",
                      "3: threads: expected an integer from 1 to 256, got "
                      "\"4#x\"");
    expect_file_error(" = 4\n", "1: missing key before \"=\"");
    expect_file_error("models = \"/x\n",
                      "1: models: unterminated quote in \"/x");
    expect_file_error("models = '/x' y\n",
                      "1: models: unexpected text after the closing quote: y");
    expect_file_error("config = other.conf\n",
                      "1: \"config\" can only be given on the command line");
    expect_file_error("listen = \n", "1: listen: expected HOST:PORT (IPv6 as "
                                     "[::1]:8080), got \"\"");

    /* The error reaches the caller of td_config_from_args unchanged. */
    snprintf(path, sizeof path, "%s/bad.conf", tmpdir);
    write_text(path, "threads = 2\nlog-level = chatty\n");
    snprintf(arg, sizeof arg, "--config=%s", path);
    ck_assert_int_eq(td_config_from_args(&c, ARGC(argv), argv, &action, &err),
                     TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, ":2: log-level: expected error"));
    ck_assert_int_eq(strncmp(err.msg, path, strlen(path)), 0);

    /* A NUL byte in the file. */
    ck_assert_int_eq(td_file_write_atomic(path, "threads = 2\0\n", 13, &err),
                     TD_OK);
    td_config_defaults(&c);
    ck_assert_int_eq(td_config_load_file(&c, path, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "NUL byte"));
    unlink(path);

    /* A missing file. */
    ck_assert_int_eq(td_config_load_file(&c, path, &err), TD_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    ck_assert_int_eq(td_config_from_args(&c, ARGC(argv), argv, &action, &err),
                     TD_ENOTFOUND);
    rmdir(tmpdir);
}
END_TEST

/* The shipped example config parses, and docs/CONFIG.md documents every
 * key, so neither can drift from the code unnoticed. */
START_TEST(test_config_shipped_example_and_docs)
{
    const char *src = getenv("TD_SRCDIR");
    char path[4096], *doc;
    size_t len;
    td_config c;
    td_error err;
    unsigned i;

    if (!src)
        src = ".";
    snprintf(path, sizeof path, "%s/systemd/tinyd.conf", src);
    td_config_defaults(&c);
    ck_assert_msg(td_config_load_file(&c, path, &err) == TD_OK, "%s",
                  err.msg);

    snprintf(path, sizeof path, "%s/docs/CONFIG.md", src);
    ck_assert_int_eq(td_file_read(path, 1 << 20, &doc, &len, &err), TD_OK);
    for (i = 0; td_config_keys[i]; i++) {
        char key[64];
        snprintf(key, sizeof key, "`%s`", td_config_keys[i]);
        ck_assert_msg(strstr(doc, key), "docs/CONFIG.md lacks %s", key);
    }
    free(doc);
}
END_TEST

static Suite *server_util_suite(void)
{
    Suite *s = suite_create("server_util");
    TCase *log = tcase_create("log");
    TCase *notify = tcase_create("notify");
    TCase *config = tcase_create("config");

    tcase_add_test(log, test_log_level_parse_and_names);
    tcase_add_test(log, test_log_line_format_and_escaping);
    tcase_add_test(log, test_log_level_filter_keeps_errno);
    tcase_add_test(log, test_log_truncates_long_lines);
    tcase_add_test(log, test_log_threads_never_interleave);
    tcase_add_test(log, test_log_journal_prefix);
    suite_add_tcase(s, log);

    tcase_add_test(notify, test_notify_disabled_is_noop);
    tcase_add_test(notify, test_notify_path_socket);
    tcase_add_test(notify, test_notify_abstract_socket);
    tcase_add_test(notify, test_notify_reloading_message);
    tcase_add_test(notify, test_notify_env_validation_and_watchdog);
    suite_add_tcase(s, notify);

    tcase_add_test(config, test_config_defaults);
    tcase_add_test(config, test_config_flags_both_forms);
    tcase_add_test(config, test_config_help_version_usage);
    tcase_add_test(config, test_config_listen_forms);
    tcase_add_test(config, test_config_sizes_and_overflow);
    tcase_add_test(config, test_config_numbers);
    tcase_add_test(config, test_config_bad_flags);
    tcase_add_test(config, test_config_file_and_precedence);
    tcase_add_test(config, test_config_file_errors);
    tcase_add_test(config, test_config_shipped_example_and_docs);
    suite_add_tcase(s, config);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(server_util_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
