/* td_config: the daemon's settings from defaults, a config file and flags.
 *
 * Every setting has one name that is both its long flag (--max-body 64M or
 * --max-body=64M) and its key in the config file (max-body = 64M); see
 * docs/CONFIG.md. Precedence, lowest first: built-in defaults (some from the
 * environment), the file named by --config, then the flags in the order
 * given. Every value is validated; an error message names the flag, or the
 * file and line, and quotes the offending value.
 *
 * Thread: call from one thread at startup (reads the environment). The
 * struct holds everything by value; nothing to free. */
#ifndef TD_CONFIG_H
#define TD_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "td_err.h"
#include "td_log.h"

typedef enum td_config_action {
    TD_CONFIG_RUN,
    TD_CONFIG_HELP,   /* -h/--help: print td_config_usage, exit 0 */
    TD_CONFIG_VERSION /* -V/--version: print the version, exit 0 */
} td_config_action;

typedef struct td_config {
    /* --listen HOST:PORT. host is stored without IPv6 brackets ("::1" from
     * "[::1]:8080"); a name or literal for getaddrinfo. Default 127.0.0.1. */
    char host[256];
    uint16_t port;             /* default 8080; 0 = the kernel picks */
    char models_dir[4096];     /* --models DIR, default "models" */
    char state_dir[4096];      /* --state DIR, default $STATE_DIRECTORY
                                  (first entry) if set, else "state" */
    unsigned threads;          /* --threads N: libuv worker threads, 1..256,
                                  default online CPUs (clamped) */
    uint64_t max_body;         /* --max-body BYTES, k/M/G = 1024^1..3,
                                  1..1024G, default 64M */
    td_log_level log_level;    /* --log-level, default info */
    unsigned drain_timeout_ms; /* --drain-timeout SECONDS (fractional ok,
                                  rounded to ms, 0..86400), default 10 s */
    unsigned max_connections;  /* --max-connections N, 1..1000000, default
                                  1024 */
    unsigned connection_timeout_s; /* --connection-timeout SECONDS, 0..86400
                                      (0 = none), default 60 */
    unsigned max_batch;        /* --max-batch N: dynamic batching, rows
                                  per forward pass, 1..4096, default 32 */
    unsigned batch_delay_us;   /* --batch-delay-us US: longest a queued
                                  request waits while workers are busy,
                                  default 2000 */
    unsigned max_images;       /* --max-images N: images per :classify
                                  request, 1..4096, default 64 */
    uint64_t max_image_pixels; /* --max-image-pixels N: width x height,
                                  checked before decoding, default 40M */
    char tokens_path[4096];    /* --tokens FILE, "" = no auth */
    int protect_reads;         /* --protect-reads yes|no, default no */
    char tls_cert[4096];       /* --tls-cert FILE (PEM), "" = plain HTTP */
    char tls_key[4096];        /* --tls-key FILE (PEM) */
    unsigned request_timeout_ms; /* --request-timeout SECONDS, default 30 */
    unsigned max_queue;        /* --max-queue N rows per model, default 1024 */
    unsigned max_jobs;         /* --max-jobs N graph builds, default 16 */
    unsigned max_connections_per_ip; /* 0 = unlimited (default) */
    char oracle_mode[16];      /* --oracle-mode, default "labels" */
    unsigned max_graph_nodes;  /* --max-graph-nodes N, default 30M */
    uint64_t max_graph_bytes;  /* --max-graph-bytes: decompressed, 2G */
    unsigned header_timeout_s; /* --header-timeout SECONDS: headers must
                                  arrive within it (slow-loris), 0 = off,
                                  default 30 */
    char config_path[4096];    /* --config FILE, "" if none */
} td_config;

/* Names of every key (= long flag without "--"), NULL-terminated, in the
 * order docs/CONFIG.md and the usage text list them. */
extern const char *const td_config_keys[];

void td_config_defaults(td_config *c);

/* Set one key from its text value. Errors: TD_EINVAL with
 * "unknown key \"KEY\"" or "KEY: expected ..., got \"VALUE\"". Setting
 * "config" only records the path; td_config_from_args does the loading. */
td_status td_config_set(td_config *c, const char *key, const char *value,
                        td_error *err);

/* Apply a config file: "key = value" lines and blank lines; '#' starts a
 * comment at the start of a line or after a blank; a value may be put in
 * "double" or 'single' quotes (taken literally, no escapes). Errors name the
 * file and line: "tinyd.conf:7: unknown key \"lisen\"". Keys already
 * applied stay applied when a later line fails. */
td_status td_config_load_file(td_config *c, const char *path, td_error *err);

/* Defaults, then the --config file, then the other flags in order. On
 * -h/--help or -V/--version *action says so and nothing else is applied.
 * Errors name the flag: "--threads: expected an integer from 1 to 256,
 * got \"abc\"". */
td_status td_config_from_args(td_config *c, int argc, char *const argv[],
                              td_config_action *action, td_error *err);

/* The --help text. */
void td_config_usage(FILE *out, const char *argv0);

#endif
