/* td_config: defaults, config file and command-line flags, validated. */
#include "config.h"

#include "td_config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "td_file.h"

/* Config files are a few hundred bytes; anything huge is a mistake. */
#define CONFIG_FILE_MAX (1u << 20)
#define MAX_BODY_LIMIT ((uint64_t)1 << 40) /* 1024G */
#define SECONDS_MAX 86400u
#define THREADS_MAX 256u
#define CONNECTIONS_MAX 1000000u

typedef enum key_id {
    K_LISTEN,
    K_MODELS,
    K_STATE,
    K_THREADS,
    K_MAX_BODY,
    K_LOG_LEVEL,
    K_DRAIN_TIMEOUT,
    K_MAX_CONNECTIONS,
    K_CONNECTION_TIMEOUT,
    K_MAX_BATCH,
    K_BATCH_DELAY_US,
    K_MAX_IMAGES,
    K_MAX_IMAGE_PIXELS,
    K_TOKENS,
    K_PROTECT_READS,
    K_TLS_CERT,
    K_TLS_KEY,
    K_REQUEST_TIMEOUT,
    K_MAX_QUEUE,
    K_MAX_JOBS,
    K_MAX_CONNECTIONS_PER_IP,
    K_ORACLE_MODE,
    K_HEADER_TIMEOUT,
    K_MAX_GRAPH_NODES,
    K_MAX_GRAPH_BYTES,
    K_CONFIG,
    K_COUNT
} key_id;

/* Must match key_id order. */
const char *const td_config_keys[] = {
    "listen",          "models",          "state",
    "threads",         "max-body",        "log-level",
    "drain-timeout",   "max-connections", "connection-timeout",
    "max-batch",       "batch-delay-us",  "max-images",
    "max-image-pixels", "tokens",       "protect-reads",
    "tls-cert",        "tls-key",         "request-timeout",
    "max-queue",       "max-jobs",        "max-connections-per-ip",
    "oracle-mode",     "header-timeout",  "max-graph-nodes",
    "max-graph-bytes", "config",
    NULL};

static int lookup_key(const char *name, size_t len, key_id *id)
{
    unsigned i;
    for (i = 0; i < K_COUNT; i++) {
        if (strlen(td_config_keys[i]) == len &&
            memcmp(td_config_keys[i], name, len) == 0) {
            *id = (key_id)i;
            return 0;
        }
    }
    return -1;
}

static unsigned online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > (long)THREADS_MAX ? THREADS_MAX : (unsigned)n;
}

void td_config_defaults(td_config *c)
{
    const char *state = getenv("STATE_DIRECTORY");
    size_t state_len = state ? strcspn(state, ":") : 0;

    memset(c, 0, sizeof *c);
    strcpy(c->host, "127.0.0.1");
    c->port = 8080;
    strcpy(c->models_dir, "models");
    /* systemd sets STATE_DIRECTORY (colon-separated if StateDirectory= names
     * several); the first is ours. */
    if (state_len > 0 && state_len < sizeof c->state_dir)
        memcpy(c->state_dir, state, state_len);
    else
        strcpy(c->state_dir, "state");
    c->threads = online_cpus();
    c->max_body = (uint64_t)64 << 20;
    c->log_level = TD_LOG_INFO;
    c->drain_timeout_ms = 10000;
    c->max_connections = 1024;
    c->connection_timeout_s = 60;
    c->max_batch = 32;
    c->batch_delay_us = 2000;
    c->max_images = 64;
    c->max_image_pixels = 40000000;
    c->request_timeout_ms = 30000;
    c->max_queue = 1024;
    c->max_jobs = 16;
    c->max_connections_per_ip = 0;
    strcpy(c->oracle_mode, "labels");
    c->header_timeout_s = 30;
    c->max_graph_nodes = 30000000;
    c->max_graph_bytes = (uint64_t)2 << 30;
}

/* ---- value parsers: full-string checks, no sign, no overflow ---- */

static int parse_u64(const char *s, uint64_t *out)
{
    unsigned long long v;
    char *end;
    if (*s < '0' || *s > '9') /* strtoull would take " 1", "+1", "-1" */
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static td_status set_uint(unsigned *dst, const char *value, unsigned min,
                          unsigned max, td_error *err)
{
    uint64_t v;
    if (parse_u64(value, &v) != 0 || v < min || v > max)
        return td_error_set(err, TD_EINVAL,
                            "expected an integer from %u to %u, got \"%s\"",
                            min, max, value);
    *dst = (unsigned)v;
    return TD_OK;
}

/* Bytes with an optional k/M/G suffix (powers of 1024). */
static td_status set_size(uint64_t *dst, const char *value, td_error *err)
{
    size_t len = strlen(value), digits = len;
    unsigned shift = 0;
    char num[32];
    uint64_t v;

    if (len > 0) {
        switch (value[len - 1]) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: break;
        }
    }
    if (shift)
        digits--;
    if (digits == 0 || digits >= sizeof num)
        goto bad;
    memcpy(num, value, digits);
    num[digits] = '\0';
    if (parse_u64(num, &v) != 0 || v > (UINT64_MAX >> shift))
        goto bad;
    v <<= shift;
    if (v < 1 || v > MAX_BODY_LIMIT)
        goto bad;
    *dst = v;
    return TD_OK;
bad:
    return td_error_set(err, TD_EINVAL,
                        "expected a size from 1 to 1024G bytes (suffixes k, "
                        "M, G are powers of 1024), got \"%s\"",
                        value);
}

/* Decimal seconds ("10", "2.5", "0.125") to milliseconds, rounded. */
static td_status set_seconds_ms(unsigned *dst_ms, const char *value,
                                td_error *err)
{
    const char *p = value;
    uint64_t secs = 0, ms = 0;
    unsigned frac_digits = 0;

    if (*p < '0' || *p > '9')
        goto bad;
    for (; *p >= '0' && *p <= '9'; p++) {
        secs = secs * 10 + (uint64_t)(*p - '0');
        if (secs > SECONDS_MAX)
            goto bad;
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            goto bad;
        for (; *p >= '0' && *p <= '9'; p++, frac_digits++) {
            if (frac_digits < 3)
                ms = ms * 10 + (uint64_t)(*p - '0');
            else if (frac_digits == 3 && *p >= '5')
                ms++; /* round half up on the first dropped digit */
        }
    }
    if (*p != '\0')
        goto bad;
    for (; frac_digits < 3; frac_digits++)
        ms *= 10;
    ms += secs * 1000;
    if (ms > (uint64_t)SECONDS_MAX * 1000)
        goto bad;
    *dst_ms = (unsigned)ms;
    return TD_OK;
bad:
    return td_error_set(err, TD_EINVAL,
                        "expected seconds from 0 to %u (e.g. 10 or 2.5), "
                        "got \"%s\"",
                        SECONDS_MAX, value);
}

static td_status set_bool(int *dst, const char *value, td_error *err)
{
    if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1") ||
        !strcmp(value, "on")) {
        *dst = 1;
        return TD_OK;
    }
    if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0") ||
        !strcmp(value, "off")) {
        *dst = 0;
        return TD_OK;
    }
    return td_error_set(err, TD_EINVAL,
                        "expected yes or no (true/false, on/off, 1/0), got "
                        "\"%s\"",
                        value);
}

static td_status set_path(char *dst, size_t cap, const char *value,
                          const char *what, td_error *err)
{
    size_t len = strlen(value);
    if (len == 0)
        return td_error_set(err, TD_EINVAL, "expected a %s, got \"\"", what);
    if (len >= cap)
        return td_error_set(err, TD_EINVAL, "%s is longer than %zu bytes",
                            what, cap - 1);
    memcpy(dst, value, len + 1);
    return TD_OK;
}

/* HOST:PORT, [IPV6]:PORT. The host is checked for shape only; resolving it
 * is the listener's job. */
static td_status set_listen(td_config *c, const char *value, td_error *err)
{
    const char *host, *port_str, *colon;
    size_t host_len, i;
    uint64_t port;

    if (value[0] == '[') {
        const char *close = strchr(value, ']');
        if (!close)
            return td_error_set(err, TD_EINVAL,
                                "missing \"]\" after the IPv6 address in "
                                "\"%s\"",
                                value);
        host = value + 1;
        host_len = (size_t)(close - host);
        if (close[1] != ':')
            return td_error_set(err, TD_EINVAL,
                                "expected [IPV6]:PORT, got \"%s\"", value);
        port_str = close + 2;
    } else {
        colon = strrchr(value, ':');
        if (!colon)
            return td_error_set(err, TD_EINVAL,
                                "expected HOST:PORT (IPv6 as [::1]:8080), "
                                "got \"%s\"",
                                value);
        host = value;
        host_len = (size_t)(colon - value);
        if (memchr(host, ':', host_len))
            return td_error_set(err, TD_EINVAL,
                                "an IPv6 address needs brackets, e.g. "
                                "[::1]:8080, got \"%s\"",
                                value);
        port_str = colon + 1;
    }
    if (host_len == 0)
        return td_error_set(err, TD_EINVAL, "empty host in \"%s\"", value);
    if (host_len >= sizeof c->host)
        return td_error_set(err, TD_EINVAL,
                            "host in \"%.64s...\" is longer than %zu bytes",
                            value, sizeof c->host - 1);
    for (i = 0; i < host_len; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (ch <= ' ' || ch == 0x7f || ch == '/' || ch == '[' || ch == ']')
            return td_error_set(err, TD_EINVAL,
                                "invalid character in host of \"%s\"", value);
    }
    if (parse_u64(port_str, &port) != 0 || port > 65535)
        return td_error_set(err, TD_EINVAL,
                            "expected a port from 0 to 65535 after the host, "
                            "got \"%s\"",
                            value);
    memcpy(c->host, host, host_len);
    c->host[host_len] = '\0';
    c->port = (uint16_t)port;
    return TD_OK;
}

/* Messages name the problem and value but not the key; callers prefix the
 * flag or file:line:key as the user wrote it. */
static td_status apply(td_config *c, key_id id, const char *value,
                       td_error *err)
{
    switch (id) {
    case K_LISTEN:
        return set_listen(c, value, err);
    case K_MODELS:
        return set_path(c->models_dir, sizeof c->models_dir, value,
                        "directory", err);
    case K_STATE:
        return set_path(c->state_dir, sizeof c->state_dir, value,
                        "directory", err);
    case K_THREADS:
        return set_uint(&c->threads, value, 1, THREADS_MAX, err);
    case K_MAX_BODY:
        return set_size(&c->max_body, value, err);
    case K_LOG_LEVEL:
        return td_log_level_parse(value, &c->log_level, err);
    case K_DRAIN_TIMEOUT:
        return set_seconds_ms(&c->drain_timeout_ms, value, err);
    case K_MAX_CONNECTIONS:
        return set_uint(&c->max_connections, value, 1, CONNECTIONS_MAX, err);
    case K_CONNECTION_TIMEOUT:
        return set_uint(&c->connection_timeout_s, value, 0, SECONDS_MAX, err);
    case K_MAX_BATCH:
        return set_uint(&c->max_batch, value, 1, 4096, err);
    case K_BATCH_DELAY_US:
        return set_uint(&c->batch_delay_us, value, 0, 10000000u, err);
    case K_MAX_IMAGES:
        return set_uint(&c->max_images, value, 1, 4096, err);
    case K_MAX_IMAGE_PIXELS: {
        uint64_t px;
        td_status st = set_size(&px, value, err);
        if (st == TD_OK && px > 1000000000u)
            st = td_error_set(err, TD_EINVAL,
                              "max-image-pixels: at most 1000000000");
        if (st == TD_OK)
            c->max_image_pixels = px;
        return st;
    }
    case K_TOKENS:
        return set_path(c->tokens_path, sizeof c->tokens_path, value,
                        "file name", err);
    case K_PROTECT_READS:
        return set_bool(&c->protect_reads, value, err);
    case K_TLS_CERT:
        return set_path(c->tls_cert, sizeof c->tls_cert, value, "file name",
                        err);
    case K_TLS_KEY:
        return set_path(c->tls_key, sizeof c->tls_key, value, "file name",
                        err);
    case K_REQUEST_TIMEOUT:
        return set_seconds_ms(&c->request_timeout_ms, value, err);
    case K_MAX_QUEUE:
        return set_uint(&c->max_queue, value, 1, 1000000u, err);
    case K_MAX_JOBS:
        return set_uint(&c->max_jobs, value, 1, 10000u, err);
    case K_MAX_CONNECTIONS_PER_IP:
        return set_uint(&c->max_connections_per_ip, value, 0,
                        CONNECTIONS_MAX, err);
    case K_ORACLE_MODE:
        if (strcmp(value, "labels") != 0 && strcmp(value, "treecover") != 0)
            return td_error_set(err, TD_EINVAL,
                                "oracle-mode: expected labels or treecover, "
                                "got \"%s\"",
                                value);
        snprintf(c->oracle_mode, sizeof c->oracle_mode, "%s", value);
        return TD_OK;
    case K_HEADER_TIMEOUT:
        return set_uint(&c->header_timeout_s, value, 0, SECONDS_MAX, err);
    case K_MAX_GRAPH_NODES:
        return set_uint(&c->max_graph_nodes, value, 1, 4000000000u, err);
    case K_MAX_GRAPH_BYTES:
        return set_size(&c->max_graph_bytes, value, err);
    case K_CONFIG:
        return set_path(c->config_path, sizeof c->config_path, value,
                        "file name", err);
    case K_COUNT:
        break;
    }
    return td_error_set(err, TD_EINTERNAL, "bad config key id %d", (int)id);
}

td_status td_config_set(td_config *c, const char *key, const char *value,
                        td_error *err)
{
    key_id id;
    td_status st;
    if (lookup_key(key, strlen(key), &id) != 0)
        return td_error_set(err, TD_EINVAL, "unknown key \"%s\"", key);
    st = apply(c, id, value, err);
    if (st != TD_OK)
        td_error_prefix(err, "%s", key);
    return st;
}

/* ---- config file ---- */

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Trim [*s, *s+*len) of spaces and tabs on both ends. */
static void trim(char **s, size_t *len)
{
    while (*len > 0 && is_blank(**s)) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && is_blank((*s)[*len - 1]))
        (*len)--;
}

static td_status load_line(td_config *c, const char *path, unsigned lineno,
                           char *line, size_t len, td_error *err)
{
    char *eq, *key, *value;
    size_t key_len, value_len;
    key_id id;
    td_status st;

    trim(&line, &len);
    if (len == 0 || line[0] == '#')
        return TD_OK;
    line[len] = '\0';
    eq = memchr(line, '=', len);
    if (!eq)
        return td_error_set(err, TD_EINVAL,
                            "%s:%u: expected \"key = value\", got \"%s\"",
                            path, lineno, line);
    key = line;
    key_len = (size_t)(eq - line);
    trim(&key, &key_len);
    if (key_len == 0)
        return td_error_set(err, TD_EINVAL, "%s:%u: missing key before \"=\"",
                            path, lineno);
    key[key_len] = '\0';
    if (lookup_key(key, key_len, &id) != 0)
        return td_error_set(err, TD_EINVAL, "%s:%u: unknown key \"%s\"", path,
                            lineno, key);
    if (id == K_CONFIG)
        return td_error_set(err, TD_EINVAL,
                            "%s:%u: \"config\" can only be given on the "
                            "command line",
                            path, lineno);

    value = eq + 1;
    value_len = len - (size_t)(value - line);
    trim(&value, &value_len);
    if (value_len > 0 && (value[0] == '"' || value[0] == '\'')) {
        /* Quoted: taken literally up to the matching quote, so it may hold
         * '#' or surrounding spaces; only a comment may follow. */
        char *close = memchr(value + 1, value[0], value_len - 1);
        char *rest;
        size_t rest_len;
        if (!close)
            return td_error_set(err, TD_EINVAL,
                                "%s:%u: %s: unterminated quote in %s", path,
                                lineno, key, value);
        rest = close + 1;
        rest_len = value_len - (size_t)(rest - value);
        trim(&rest, &rest_len);
        if (rest_len > 0 && rest[0] != '#')
            return td_error_set(err, TD_EINVAL,
                                "%s:%u: %s: unexpected text after the closing "
                                "quote: %s",
                                path, lineno, key, rest);
        value++;
        value_len = (size_t)(close - value);
    } else {
        /* Unquoted: a '#' after a blank (or first) starts a comment. */
        size_t k;
        for (k = 0; k < value_len; k++) {
            if (value[k] == '#' && (k == 0 || is_blank(value[k - 1]))) {
                value_len = k;
                break;
            }
        }
        trim(&value, &value_len);
    }
    value[value_len] = '\0';

    st = apply(c, id, value, err);
    if (st != TD_OK)
        td_error_prefix(err, "%s:%u: %s", path, lineno, key);
    return st;
}

td_status td_config_load_file(td_config *c, const char *path, td_error *err)
{
    char *buf, *line;
    size_t len;
    unsigned lineno = 0;
    td_status st;

    st = td_file_read(path, CONFIG_FILE_MAX, &buf, &len, err);
    if (st != TD_OK) {
        td_error_prefix(err, "config file");
        return st;
    }
    if (strlen(buf) != len) {
        free(buf);
        return td_error_set(err, TD_EINVAL, "%s: contains a NUL byte", path);
    }
    for (line = buf; *line;) {
        size_t line_len = strcspn(line, "\n");
        char *next = line + line_len;
        int more = *next == '\n';
        lineno++;
        if (line_len > 0 && line[line_len - 1] == '\r')
            line_len--;
        /* load_line may write NULs up to line[line_len]. */
        st = load_line(c, path, lineno, line, line_len, err);
        if (st != TD_OK || !more)
            break;
        line = next + 1;
    }
    free(buf);
    return st;
}

/* ---- command line ---- */

typedef enum arg_kind { ARG_KEY, ARG_HELP, ARG_VERSION } arg_kind;

/* Decode argv[*i] (and its value argument), advancing *i past both. On
 * ARG_KEY, *flag and *flag_len give the flag as written, for messages. */
static td_status next_arg(int argc, char *const argv[], int *i,
                          arg_kind *kind, key_id *id, const char **value,
                          const char **flag, int *flag_len, td_error *err)
{
    const char *arg = argv[*i], *name, *eq;
    size_t name_len;

    (*i)++;
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
        *kind = ARG_HELP;
        return TD_OK;
    }
    if (strcmp(arg, "-V") == 0 || strcmp(arg, "--version") == 0) {
        *kind = ARG_VERSION;
        return TD_OK;
    }
    if (arg[0] != '-')
        return td_error_set(err, TD_EINVAL,
                            "unexpected argument \"%s\" (options are "
                            "--name value; see --help)",
                            arg);
    if (arg[1] != '-')
        return td_error_set(err, TD_EINVAL, "unknown option \"%s\"", arg);
    name = arg + 2;
    eq = strchr(arg, '=');
    name_len = eq ? (size_t)(eq - name) : strlen(name);
    *flag = arg;
    *flag_len = (int)(eq ? (size_t)(eq - arg) : strlen(arg));
    if (lookup_key(name, name_len, id) != 0)
        return td_error_set(err, TD_EINVAL, "unknown option \"%.*s\"",
                            *flag_len, arg);
    *kind = ARG_KEY;
    if (eq) {
        *value = eq + 1;
        return TD_OK;
    }
    if (*i >= argc || strncmp(argv[*i], "--", 2) == 0)
        return td_error_set(err, TD_EINVAL, "%s: missing value", arg);
    *value = argv[(*i)++];
    return TD_OK;
}

td_status td_config_from_args(td_config *c, int argc, char *const argv[],
                              td_config_action *action, td_error *err)
{
    const char *value = NULL, *flag = NULL, *config = NULL;
    int i, flag_len = 0;
    arg_kind kind;
    key_id id = K_COUNT;
    td_status st;

    td_config_defaults(c);
    *action = TD_CONFIG_RUN;

    /* Pass 1: syntax, --help/--version, and which config file. */
    for (i = 1; i < argc;) {
        st = next_arg(argc, argv, &i, &kind, &id, &value, &flag, &flag_len,
                      err);
        if (st != TD_OK)
            return st;
        if (kind == ARG_HELP || kind == ARG_VERSION) {
            *action = kind == ARG_HELP ? TD_CONFIG_HELP : TD_CONFIG_VERSION;
            return TD_OK;
        }
        if (id == K_CONFIG) {
            if (config)
                return td_error_set(err, TD_EINVAL,
                                    "--config: given more than once");
            config = value;
        }
    }
    if (config) {
        st = apply(c, K_CONFIG, config, err);
        if (st != TD_OK) {
            td_error_prefix(err, "--config");
            return st;
        }
        st = td_config_load_file(c, c->config_path, err);
        if (st != TD_OK)
            return st;
    }

    /* Pass 2: the flags, in order, over the file's values. */
    for (i = 1; i < argc;) {
        st = next_arg(argc, argv, &i, &kind, &id, &value, &flag, &flag_len,
                      err);
        if (st != TD_OK)
            return st;
        if (id == K_CONFIG)
            continue;
        st = apply(c, id, value, err);
        if (st != TD_OK) {
            td_error_prefix(err, "%.*s", flag_len, flag);
            return st;
        }
    }
    return TD_OK;
}

void td_config_usage(FILE *out, const char *argv0)
{
    td_config d;
    td_config_defaults(&d);
    fprintf(out,
            "Usage: %s [OPTION]...\n"
            "Serve TinyNet models and graph-distance oracles over HTTP "
            "(Open Inference Protocol v2).\n"
            "\n"
            "  --listen HOST:PORT       address to listen on "
            "(default 127.0.0.1:8080);\n"
            "                           IPv6 as [::1]:8080, port 0 = any "
            "free port\n"
            "  --models DIR             repository of NAME.safetensors "
            "files (default models)\n"
            "  --state DIR              directory for state files "
            "(default $STATE_DIRECTORY,\n"
            "                           else state; now %s)\n"
            "  --threads N              worker threads, 1 to %u "
            "(default: online CPUs, %u here)\n"
            "  --max-body BYTES         largest request body, suffixes "
            "k M G = 1024^n (default 64M)\n"
            "  --log-level LEVEL        error, warn, info or debug "
            "(default info)\n"
            "  --drain-timeout SECONDS  how long shutdown waits for "
            "requests in flight (default 10)\n"
            "  --max-connections N      simultaneous connections "
            "(default 1024)\n"
            "  --connection-timeout SECONDS\n"
            "                           close idle connections after "
            "this long, 0 = never (default 60)\n"
            "  --max-batch N            rows one forward pass may merge "
            "from concurrent\n"
            "                           requests (default 32, 1..4096)\n"
            "  --batch-delay-us US      longest a request waits for a batch "
            "to fill\n"
            "                           while the workers are busy "
            "(default 2000)\n"
            "  --max-images N           images in one :classify request "
            "(default 64)\n"
            "  --max-image-pixels N     width x height of one image, "
            "checked before\n"
            "                           decoding (default 40000000)\n"
            "  --tokens FILE            bearer tokens (one per line) that "
            "guard every\n"
            "                           endpoint changing state; reread on "
            "SIGHUP\n"
            "  --protect-reads yes|no   require a token for reads too "
            "(health excepted)\n"
            "  --tls-cert FILE, --tls-key FILE\n"
            "                           serve HTTPS with this PEM "
            "certificate and key\n"
            "  --request-timeout SECONDS  a request not answered by then "
            "is 504 (default 30)\n"
            "  --max-queue N            rows queued per model before 503 "
            "(default 1024)\n"
            "  --max-jobs N             graph builds queued or running "
            "before 503 (default 16)\n"
            "  --max-connections-per-ip N  0 = unlimited (default)\n"
            "  --oracle-mode labels|treecover  default mode for submitted "
            "graphs\n"
            "  --max-graph-nodes N      vertices in a submitted graph "
            "(default 30000000)\n"
            "  --max-graph-bytes BYTES  a submitted graph, decompressed "
            "(default 2G)\n"
            "  --header-timeout SECONDS a request's headers must arrive "
            "within this\n"
            "                           (slow clients are dropped), 0 = "
            "off (default 30)\n"
            "  --config FILE            read settings from FILE first; "
            "flags override it\n"
            "  -h, --help               show this help and exit\n"
            "  -V, --version            show the version and exit\n"
            "\n"
            "Every option may be written --name=value. In the config file "
            "each line is\n"
            "\"name = value\" with the same names (all but config); see "
            "docs/CONFIG.md.\n"
            "SIGHUP rescans the repository; SIGTERM or SIGINT drains and "
            "exits.\n",
            argv0, d.state_dir, THREADS_MAX, d.threads);
}
