/* td_registry: scanning the repository on the pool, swapping on the loop. */
#include "config.h"

#include "td_registry.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SUFFIX ".safetensors"

/* ------------------------------------------------------------ models */

void td_model_ref(td_model *m) { atomic_fetch_add(&m->refs, 1); }

static void model_free(td_model *m)
{
    if (m->kind && m->impl)
        m->kind->unload(m->impl);
    td_st_close(&m->file);
    free(m->path);
    free(m);
}

void td_model_unref(td_model *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1)
        model_free(m);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Open, validate and build one model (pool thread). */
static td_status model_load(const char *path, const char *name,
                           const td_file_id *id, td_model **out,
                           td_error *err)
{
    td_model *m = calloc(1, sizeof *m);
    const char *kind_name;
    td_status st;
    *out = NULL;
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    atomic_init(&m->refs, 1);
    snprintf(m->name, sizeof m->name, "%s", name);
    m->id = *id;
    st = td_st_open(&m->file, path, err);
    if (st != TD_OK) {
        free(m->path);
        free(m);
        return st;
    }
    kind_name = td_st_meta_get(&m->file, "kind");
    if (!kind_name) {
        /* A timm TinyNet checkpoint exactly as downloaded carries no
         * "kind"; its tensor names say what it is (its sidecar gives the
         * architecture). */
        if (td_st_find(&m->file, "conv_stem.weight"))
            kind_name = "tinynet";
    }
    if (!kind_name) {
        st = td_error_set(err, TD_EFORMAT,
                          "metadata \"kind\" is missing: cannot tell what "
                          "this file serves");
        goto fail;
    }
    m->kind = td_kind_find(kind_name);
    if (!m->kind) {
        char known[256] = "";
        size_t i, off = 0;
        for (i = 0; td_kinds[i] && off < sizeof known; i++)
            off += (size_t)snprintf(known + off, sizeof known - off, "%s%s",
                                    i ? ", " : "", td_kinds[i]->kind);
        st = td_error_set(err, TD_EUNSUPPORTED,
                          "unknown kind \"%s\" (this daemon serves: %s)",
                          kind_name, known);
        goto fail;
    }
    st = m->kind->load(&m->file, path, &m->impl, err);
    if (st != TD_OK) {
        m->impl = NULL;
        goto fail;
    }
    m->loaded_at_ms = wall_ms();
    *out = m;
    return TD_OK;
fail:
    m->kind = NULL;
    model_free(m);
    return st;
}

/* ------------------------------------------------------------ names */

int td_registry_servable_name(const char *file, char *name, size_t cap)
{
    size_t n = strlen(file), suffix = strlen(SUFFIX), i;
    if (file[0] == '.' || n <= suffix || n - suffix > TD_NAME_MAX ||
        strcmp(file + n - suffix, SUFFIX) != 0 || n - suffix >= cap)
        return 0;
    for (i = 0; i < n - suffix; i++) {
        char c = file[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return 0;
    }
    memcpy(name, file, n - suffix);
    name[n - suffix] = '\0';
    return 1;
}

static int file_id_eq(const td_file_id *a, const td_file_id *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns;
}

/* ------------------------------------------------------------ scan job */

enum { ITEM_UNCHANGED, ITEM_LOADED, ITEM_FAILED };

typedef struct scan_item {
    char name[TD_NAME_MAX + 1];
    td_file_id id;
    int action;
    td_model *model;  /* ITEM_LOADED: one reference */
    char *error;      /* ITEM_FAILED: owned */
} scan_item;

typedef struct scan_known {
    char name[TD_NAME_MAX + 1];
    td_file_id tried;
    int unloaded;
} scan_known;

typedef struct scan_job {
    uv_work_t work;
    td_registry *r;
    char *dirs[TD_REGISTRY_MAX_DIRS];
    int n_dirs;
    scan_known *known;
    size_t n_known;
    scan_item *items;
    size_t n_items, cap_items;
    char *dir_error;
    uint64_t gen;
} scan_job;

static int item_cmp(const void *a, const void *b)
{
    return strcmp(((const scan_item *)a)->name, ((const scan_item *)b)->name);
}

static const scan_known *known_find(const scan_job *job, const char *name)
{
    size_t i;
    for (i = 0; i < job->n_known; i++)
        if (strcmp(job->known[i].name, name) == 0)
            return &job->known[i];
    return NULL;
}

static int item_seen(const scan_job *job, const char *name)
{
    size_t i;
    for (i = 0; i < job->n_items; i++)
        if (strcmp(job->items[i].name, name) == 0)
            return 1;
    return 0;
}

static void scan_dir(scan_job *job, const char *dir, int required)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    if (!d) {
        if (required || errno != ENOENT) {
            char msg[600];
            snprintf(msg, sizeof msg, "cannot read the repository %s: %s",
                     dir, strerror(errno));
            free(job->dir_error);
            job->dir_error = strdup(msg);
        }
        return;
    }
    while ((de = readdir(d)) != NULL) {
        char name[TD_NAME_MAX + 1], path[4096 + 256];
        struct stat sb;
        scan_item *it;
        const scan_known *k;
        if (!td_registry_servable_name(de->d_name, name, sizeof name)) {
            size_t n = strlen(de->d_name);
            /* Tell the operator why a model file is not served. */
            if (de->d_name[0] != '.' && n > 12 &&
                strcmp(de->d_name + n - 12, ".safetensors") == 0)
                TD_LOG_WARN(job->r->log,
                            "skipping %s/%s: a model name must be 1 to %d "
                            "characters of A-Z a-z 0-9 _ - .",
                            dir, de->d_name, TD_NAME_MAX);
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (item_seen(job, name)) {
            TD_LOG_WARN(job->r->log,
                        "%s: the name \"%s\" is already served from an "
                        "earlier directory; ignoring this file",
                        path, name);
            continue;
        }
        if (job->n_items == job->cap_items) {
            size_t cap = job->cap_items ? job->cap_items * 2 : 16;
            scan_item *grown = realloc(job->items, cap * sizeof *grown);
            if (!grown)
                break;
            job->items = grown;
            job->cap_items = cap;
        }
        it = &job->items[job->n_items++];
        memset(it, 0, sizeof *it);
        snprintf(it->name, sizeof it->name, "%s", name);
        it->id.dev = sb.st_dev;
        it->id.ino = sb.st_ino;
        it->id.size = sb.st_size;
        it->id.mtime_ns =
            (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
        k = known_find(job, name);
        if (k && (k->unloaded || file_id_eq(&k->tried, &it->id))) {
            it->action = ITEM_UNCHANGED;
        } else {
            td_error err;
            td_error_clear(&err);
            if (model_load(path, name, &it->id, &it->model, &err) == TD_OK) {
                it->action = ITEM_LOADED;
            } else {
                it->action = ITEM_FAILED;
                it->error = strdup(err.msg[0] ? err.msg : "load failed");
            }
        }
    }
    closedir(d);
}

static void scan_work(uv_work_t *w)
{
    scan_job *job = w->data;
    int i;
    /* The repository itself must be readable; the daemon's own
     * directories may not exist yet. */
    for (i = 0; i < job->n_dirs; i++)
        scan_dir(job, job->dirs[i], i == 0);
    if (job->n_items > 1)
        qsort(job->items, job->n_items, sizeof *job->items, item_cmp);
}

static void scan_job_free(scan_job *job)
{
    size_t i;
    for (i = 0; i < job->n_items; i++) {
        if (job->items[i].model)
            td_model_unref(job->items[i].model);
        free(job->items[i].error);
    }
    free(job->items);
    free(job->known);
    for (i = 0; i < (size_t)job->n_dirs; i++)
        free(job->dirs[i]);
    free(job->dir_error);
    free(job);
}

static void entry_clear(td_entry *e)
{
    if (e->model)
        td_model_unref(e->model);
    free(e->reason);
    e->model = NULL;
    e->reason = NULL;
}

static void scan_after(uv_work_t *w, int status);

static void scan_start(td_registry *r)
{
    scan_job *job = calloc(1, sizeof *job);
    size_t i;
    int oom = !job;
    for (i = 0; !oom && i < (size_t)r->n_dirs; i++) {
        job->dirs[i] = strdup(r->dirs[i]);
        job->n_dirs++;
        oom = !job->dirs[i];
    }
    if (!oom)
        oom = !(job->known = calloc(r->n_entries + 1, sizeof *job->known));
    if (oom) {
        if (job)
            scan_job_free(job);
        TD_LOG_ERR(r->log, "repository scan: out of memory");
        return;
    }
    job->r = r;
    job->n_known = r->n_entries;
    job->gen = ++r->gen_started;
    for (i = 0; i < r->n_entries; i++) {
        const td_entry *e = &r->entries[i];
        snprintf(job->known[i].name, sizeof job->known[i].name, "%s",
                 e->name);
        job->known[i].tried = e->tried;
        /* A load request reads the file again, changed or not. */
        if (e->force_gen && e->force_gen <= job->gen)
            memset(&job->known[i].tried, 0, sizeof job->known[i].tried);
        job->known[i].unloaded = e->unloaded;
    }
    job->work.data = job;
    r->scanning = 1;
    if (uv_queue_work(r->loop, &job->work, scan_work, scan_after) != 0) {
        r->scanning = 0;
        scan_job_free(job);
        TD_LOG_ERR(r->log, "repository scan: cannot queue work");
    }
}

/* Loop thread: merge the scan's findings into the entries. */
static void scan_after(uv_work_t *w, int status)
{
    scan_job *job = w->data;
    td_registry *r = job->r;
    td_entry *next;
    size_t i, j;
    int changed = 0, failed = 0;
    (void)status;
    r->scanning = 0;
    if (job->dir_error) {
        TD_LOG_ERR(r->log, "%s; keeping the %zu models already loaded",
                   job->dir_error, r->n_entries);
        r->reloads_failed++;
        failed = 1;
        goto done;
    }
    next = calloc(job->n_items + 1, sizeof *next);
    if (!next) {
        TD_LOG_ERR(r->log, "repository scan: out of memory");
        failed = 1;
        goto done;
    }
    for (i = 0; i < job->n_items; i++) {
        scan_item *it = &job->items[i];
        td_entry *old = td_registry_find(r, it->name);
        td_entry *e = &next[i];
        if (old) {
            *e = *old; /* moves the model reference and reason */
            old->model = NULL;
            old->reason = NULL;
        } else {
            snprintf(e->name, sizeof e->name, "%s", it->name);
        }
        /* A scan that started before a load request must not mark the
         * file as tried (the next scan reads it), nor serve a model that
         * was unloaded meanwhile. */
        if (!e->unloaded && (e->force_gen == 0 || job->gen >= e->force_gen)) {
            e->tried = it->id;
            e->force_gen = 0;
        }
        if (it->action == ITEM_LOADED && e->unloaded) {
            td_model_unref(it->model);
            it->model = NULL;
        } else if (it->action == ITEM_LOADED) {
            if (e->model)
                td_model_unref(e->model);
            e->model = it->model;
            it->model = NULL;
            free(e->reason);
            e->reason = NULL;
            changed++;
            TD_LOG_INFO(r->log, "model %s: %s (kind %s)", e->name,
                        old ? "reloaded" : "loaded", e->model->kind->kind);
        } else if (it->action == ITEM_FAILED) {
            free(e->reason);
            e->reason = it->error;
            it->error = NULL;
            failed++;
            if (e->model)
                TD_LOG_ERR(r->log,
                           "model %s: reload failed, the previous version "
                           "keeps serving: %s",
                           e->name, e->reason);
            else
                TD_LOG_ERR(r->log, "model %s: load failed: %s", e->name,
                           e->reason);
        }
    }
    /* Entries whose file is gone are unloaded; requests holding a
     * reference finish on it. */
    for (j = 0; j < r->n_entries; j++) {
        /* Entries that moved to `next` were emptied above. */
        if (r->entries[j].model || r->entries[j].reason) {
            TD_LOG_INFO(r->log, "model %s: removed from the repository",
                        r->entries[j].name);
            changed++;
        }
        entry_clear(&r->entries[j]);
    }
    free(r->entries);
    r->entries = next;
    r->n_entries = job->n_items;
    r->reloads_ok++;
    r->load_failures += (uint64_t)failed;
done:
    {
        uint64_t gen = job->gen;
        size_t kept = 0, k;
        scan_job_free(job);
        r->scanned_once = 1;
        if (r->on_done)
            r->on_done(r->app, changed, failed);
        /* Waiters whose scan has now run. Take them off the list before
         * calling them: a callback may add waiters. */
        td_registry_waiter *due = malloc((r->n_waiters + 1) * sizeof *due);
        size_t n_due = 0;
        for (k = 0; k < r->n_waiters; k++) {
            if (r->waiters[k].gen <= gen && due)
                due[n_due++] = r->waiters[k];
            else
                r->waiters[kept++] = r->waiters[k];
        }
        r->n_waiters = kept;
        for (k = 0; k < n_due; k++)
            due[k].fn(due[k].arg);
        free(due);
    }
    if (r->rescan_requested) {
        r->rescan_requested = 0;
        scan_start(r);
    }
}

/* ------------------------------------------------------------ API */

td_status td_registry_init(td_registry *r, uv_loop_t *loop,
                           const char *const *dirs, int n_dirs,
                           const td_log *log, td_registry_done_fn on_done,
                           void *app, td_error *err)
{
    int i;
    memset(r, 0, sizeof *r);
    r->loop = loop;
    r->log = log;
    r->on_done = on_done;
    r->app = app;
    if (n_dirs < 1 || n_dirs > TD_REGISTRY_MAX_DIRS)
        return td_error_set(err, TD_EINVAL, "bad repository directory count");
    for (i = 0; i < n_dirs; i++) {
        r->dirs[i] = strdup(dirs[i]);
        if (!r->dirs[i]) {
            td_registry_free(r);
            return td_error_set(err, TD_ENOMEM, "out of memory");
        }
        r->n_dirs++;
    }
    return TD_OK;
}

void td_registry_scan(td_registry *r)
{
    if (r->scanning) {
        r->rescan_requested = 1;
        return;
    }
    scan_start(r);
}

int td_registry_scan_then(td_registry *r, td_registry_wait_fn fn, void *arg)
{
    if (r->n_waiters == r->cap_waiters) {
        size_t cap = r->cap_waiters ? r->cap_waiters * 2 : 8;
        td_registry_waiter *grown = realloc(r->waiters, cap * sizeof *grown);
        if (!grown)
            return -1;
        r->waiters = grown;
        r->cap_waiters = cap;
    }
    r->waiters[r->n_waiters].gen = r->gen_started + 1;
    r->waiters[r->n_waiters].fn = fn;
    r->waiters[r->n_waiters].arg = arg;
    r->n_waiters++;
    td_registry_scan(r);
    return 0;
}

td_status td_registry_unload(td_registry *r, const char *name,
                             td_error *err)
{
    td_entry *e = td_registry_find(r, name);
    if (!e)
        return td_error_set(err, TD_ENOTFOUND, "unknown model \"%s\"", name);
    e->unloaded = 1;
    if (e->model) {
        td_model_unref(e->model);
        e->model = NULL;
    }
    free(e->reason);
    e->reason = NULL;
    TD_LOG_INFO(r->log, "model %s: unloaded on request", name);
    return TD_OK;
}

void td_registry_mark_load(td_registry *r, const char *name)
{
    td_entry *e = td_registry_find(r, name);
    if (!e)
        return;
    e->unloaded = 0;
    e->force_gen = r->gen_started + 1; /* the next scan reads it again */
}

td_entry *td_registry_find(td_registry *r, const char *name)
{
    size_t lo = 0, hi = r->n_entries;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(r->entries[mid].name, name);
        if (c == 0)
            return &r->entries[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

td_model *td_registry_acquire(td_registry *r, const char *name)
{
    td_entry *e = td_registry_find(r, name);
    if (!e || !e->model)
        return NULL;
    td_model_ref(e->model);
    return e->model;
}

void td_registry_free(td_registry *r)
{
    size_t e;
    int i;
    for (e = 0; e < r->n_entries; e++)
        entry_clear(&r->entries[e]);
    free(r->entries);
    free(r->waiters);
    for (i = 0; i < r->n_dirs; i++)
        free(r->dirs[i]);
    memset(r, 0, sizeof *r);
}
