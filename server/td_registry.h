/* td_registry: the repository of servable things and its hot swap.
 *
 * The repository is a directory; each non-hidden NAME.safetensors file is
 * one servable called NAME. A scan (at start, on SIGHUP) runs on the thread
 * pool: it stats every file, loads the new and changed ones, and hands the
 * results back to the loop thread, which swaps them in. A model is
 * reference counted: a request holds a reference for as long as it runs,
 * so a swap or removal never fails a request in flight; the old version is
 * freed when its last request finishes. A file that fails to load leaves
 * the previous version serving and is reported as the entry's reason.
 *
 * Thread contract: the registry itself (entries, scanning state) is
 * loop-thread only. td_model_ref/unref are atomic and may be called from
 * any thread; a td_model is immutable while referenced. */
#ifndef TD_REGISTRY_H
#define TD_REGISTRY_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "td_err.h"
#include "td_log.h"
#include "td_safetensors.h"
#include "td_servable.h"

#define TD_NAME_MAX 128

/* What identifies one version of a file on disk. */
typedef struct td_file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns;
} td_file_id;

typedef struct td_model {
    atomic_int refs;
    char name[TD_NAME_MAX + 1];
    char *path;                   /* owned */
    td_file_id id;
    td_st_file file;              /* mapped while the model lives */
    const td_servable_kind *kind;
    void *impl;                   /* owned by kind */
    int64_t loaded_at_ms;         /* wall clock */
} td_model;

void td_model_ref(td_model *m);
void td_model_unref(td_model *m); /* frees at zero */

typedef struct td_entry {
    char name[TD_NAME_MAX + 1];
    td_model *model;   /* the version serving, or NULL; one reference */
    char *reason;      /* owned: why the last load failed, or NULL */
    int unloaded;      /* unloaded on request: scans leave it unloaded
                          until a load request */
    uint64_t force_gen;/* a load request: the scan generation from which
                          the file is read again (0: none pending) */
    td_file_id tried;  /* the file version last attempted */
    /* Triton-style counters (loop thread). */
    uint64_t success, failure, inferences;
} td_entry;

typedef void (*td_registry_done_fn)(void *app, int changed, int failed);
typedef void (*td_registry_wait_fn)(void *arg);

typedef struct td_registry_waiter {
    uint64_t gen;            /* the first scan generation that satisfies it */
    td_registry_wait_fn fn;
    void *arg;
} td_registry_waiter;

#define TD_REGISTRY_MAX_DIRS 4

typedef struct td_registry {
    uv_loop_t *loop;
    const td_log *log;
    char *dirs[TD_REGISTRY_MAX_DIRS]; /* owned; earlier dirs win on names */
    int n_dirs;
    td_entry *entries;      /* owned, sorted by name */
    size_t n_entries;
    int scanning;
    int rescan_requested;
    int scanned_once;
    uint64_t reloads_ok, reloads_failed; /* scans; failed = dir unreadable */
    uint64_t load_failures;              /* files that failed to load */
    td_registry_done_fn on_done;
    void *app;
    uint64_t gen_started;    /* scans started so far */
    td_registry_waiter *waiters;
    size_t n_waiters, cap_waiters;
} td_registry;

/* dirs: the repository first (--models), then directories the daemon
 * fills itself (oracles built from submitted graphs). A name found in an
 * earlier directory hides the same name in a later one. */
td_status td_registry_init(td_registry *r, uv_loop_t *loop,
                           const char *const *dirs, int n_dirs,
                           const td_log *log, td_registry_done_fn on_done,
                           void *app, td_error *err);
/* Start a scan on the pool; a scan requested while one runs is queued. */
void td_registry_scan(td_registry *r);
/* Scan, and call fn(arg) on the loop thread once a scan that started after
 * this call has finished (Triton's synchronous load). Returns -1 on
 * out-of-memory (fn will not be called). */
int td_registry_scan_then(td_registry *r, td_registry_wait_fn fn, void *arg);
/* Explicit model control. unload drops the serving version (requests in
 * flight finish on it) and keeps the name unloaded across rescans; load
 * clears that and forces the file to be read again at the next scan.
 * Both return TD_ENOTFOUND for an unknown name (load: the caller scans
 * first). */
td_status td_registry_unload(td_registry *r, const char *name,
                             td_error *err);
void td_registry_mark_load(td_registry *r, const char *name);

/* The entry called name, or NULL. */
td_entry *td_registry_find(td_registry *r, const char *name);
/* A reference to the serving model called name (NULL if none or failed);
 * the caller drops it with td_model_unref. */
td_model *td_registry_acquire(td_registry *r, const char *name);
/* Unload everything (shutdown). */
void td_registry_free(td_registry *r);

/* Exposed for tests: whether a file name is a servable one, and its name. */
int td_registry_servable_name(const char *file, char *name, size_t cap);

#endif
