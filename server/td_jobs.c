/* td_jobs: the build thread, job records, and recovery after a crash. */
#include "config.h"

#include "td_jobs.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "td_file.h"
#include "td_graph.h"
#include "td_graph_io.h"
#include "td_oracle.h"

static const char *const state_names[] = {"queued", "building", "ready",
                                          "failed", "cancelled"};

const char *td_job_state_name(td_job_state st)
{
    return (unsigned)st <= TD_JOB_CANCELLED ? state_names[st] : "unknown";
}

static int parse_state(const char *s)
{
    int i;
    for (i = 0; s && i <= TD_JOB_CANCELLED; i++)
        if (strcmp(s, state_names[i]) == 0)
            return i;
    return -1;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void job_free(td_job *job)
{
    free(job->error);
    free(job->body);
    free(job);
}

static void path_of(char *out, size_t cap, const char *dir, const char *id,
                    const char *suffix)
{
    snprintf(out, cap, "%s/%s%s", dir, id, suffix);
}

/* ------------------------------------------------------------ records */

/* Caller holds the lock (or owns the job exclusively). */
static json_t *job_json(const td_job *job)
{
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:f, s:f, s:s, s:I, s:I, s:I}", "id",
        job->id, "name", job->spec.name, "state",
        td_job_state_name(job->state), "format", job->spec.format, "mode",
        job->spec.mode, "eps", job->spec.eps, "progress", job->progress,
        "phase", job->phase, "submitted_ms", (json_int_t)job->submitted_ms,
        "nodes", (json_int_t)job->nodes, "edges", (json_int_t)job->edges);
    if (!o)
        return NULL;
    if (job->started_ms)
        json_object_set_new(o, "started_ms", json_integer(job->started_ms));
    if (job->finished_ms)
        json_object_set_new(o, "finished_ms",
                            json_integer(job->finished_ms));
    if (job->state == TD_JOB_READY) {
        json_object_set_new(o, "oracle_bytes",
                            json_integer((json_int_t)job->oracle_bytes));
        json_object_set_new(o, "build_seconds",
                            json_real(job->build_seconds));
        json_object_set_new(o, "model", json_string(job->spec.name));
    }
    json_object_set_new(o, "input_bytes",
                        json_integer((json_int_t)job->input_bytes));
    if (job->error)
        json_object_set_new(o, "error", json_string(job->error));
    return o;
}

/* Persist the job's record (atomically). Caller holds the lock. */
static void record_write(td_jobs *J, const td_job *job)
{
    char path[4300];
    json_t *o = job_json(job);
    char *text = o ? json_dumps(o, JSON_INDENT(1)) : NULL;
    td_error err;
    json_decref(o);
    if (!text)
        return;
    path_of(path, sizeof path, J->job_dir, job->id, ".json");
    if (td_file_write_atomic(path, text, strlen(text), &err) != TD_OK)
        TD_LOG_ERR(J->log, "job %s: cannot record its state: %s", job->id,
                   err.msg);
    free(text);
}

static td_job *record_read(const char *path)
{
    json_t *o = json_load_file(path, 0, NULL);
    td_job *job;
    const char *id, *name, *state, *format, *mode, *error, *phase;
    int st;
    if (!o)
        return NULL;
    id = json_string_value(json_object_get(o, "id"));
    name = json_string_value(json_object_get(o, "name"));
    state = json_string_value(json_object_get(o, "state"));
    format = json_string_value(json_object_get(o, "format"));
    mode = json_string_value(json_object_get(o, "mode"));
    error = json_string_value(json_object_get(o, "error"));
    phase = json_string_value(json_object_get(o, "phase"));
    st = parse_state(state);
    job = calloc(1, sizeof *job);
    if (!job || !id || !name || !format || !mode || st < 0 ||
        strlen(id) >= sizeof job->id) {
        free(job);
        json_decref(o);
        return NULL;
    }
    snprintf(job->id, sizeof job->id, "%s", id);
    snprintf(job->spec.name, sizeof job->spec.name, "%s", name);
    snprintf(job->spec.format, sizeof job->spec.format, "%s", format);
    snprintf(job->spec.mode, sizeof job->spec.mode, "%s", mode);
    snprintf(job->phase, sizeof job->phase, "%s", phase ? phase : "");
    job->spec.eps = json_number_value(json_object_get(o, "eps"));
    job->state = (td_job_state)st;
    job->progress = json_number_value(json_object_get(o, "progress"));
    job->submitted_ms =
        json_integer_value(json_object_get(o, "submitted_ms"));
    job->started_ms = json_integer_value(json_object_get(o, "started_ms"));
    job->finished_ms = json_integer_value(json_object_get(o, "finished_ms"));
    job->nodes = (uint64_t)json_integer_value(json_object_get(o, "nodes"));
    job->edges = (uint64_t)json_integer_value(json_object_get(o, "edges"));
    job->input_bytes =
        (uint64_t)json_integer_value(json_object_get(o, "input_bytes"));
    job->oracle_bytes =
        (uint64_t)json_integer_value(json_object_get(o, "oracle_bytes"));
    job->build_seconds =
        json_number_value(json_object_get(o, "build_seconds"));
    if (error)
        job->error = strdup(error);
    atomic_init(&job->cancel, 0);
    json_decref(o);
    return job;
}

/* ------------------------------------------------------------ building */

static void on_progress(void *ctx, double fraction, const char *phase)
{
    void **pair = ctx;
    td_jobs *J = pair[0];
    td_job *job = pair[1];
    pthread_mutex_lock(&J->lock);
    job->progress = fraction < 0 ? 0 : fraction > 1 ? 1 : fraction;
    if (phase)
        snprintf(job->phase, sizeof job->phase, "%s", phase);
    pthread_mutex_unlock(&J->lock);
}

/* Build one job. Runs on the build thread without the lock, except
 * where it publishes state. */
static void run_job(td_jobs *J, td_job *job)
{
    char graph_path[4400], oracle_path[4400];
    td_error err;
    td_status st = TD_OK;
    td_graph_read_opts ropts;
    td_edgelist el;
    td_graph g;
    td_oracle o;
    td_oracle_params p;
    void *ctx[2] = {J, job};
    char *body;
    size_t body_len;
    uint32_t id_base = 0;
    int fmt;

    td_error_clear(&err);
    memset(&g, 0, sizeof g);
    memset(&o, 0, sizeof o);
    td_edgelist_init(&el);
    path_of(graph_path, sizeof graph_path, J->graph_dir, job->id, ".graph");
    snprintf(oracle_path, sizeof oracle_path, "%s/%s.safetensors",
             J->oracle_dir, job->spec.name);

    pthread_mutex_lock(&J->lock);
    body = job->body;
    body_len = job->body_len;
    job->body = NULL;
    job->started_ms = wall_ms();
    snprintf(job->phase, sizeof job->phase, "storing the graph");
    record_write(J, job);
    pthread_mutex_unlock(&J->lock);

    /* 1. The upload is kept so a crash mid-build can be resumed. */
    if (body) {
        st = td_file_write_atomic(graph_path, body, body_len, &err);
        free(body);
        if (st != TD_OK)
            goto done;
    }
    /* 2. Parse. */
    on_progress(ctx, 0.0, "reading the graph");
    memset(&ropts, 0, sizeof ropts);
    /* Bounded memory: a small gzip body must not inflate to gigabytes,
     * nor a one-line edge list claim a billion vertices. */
    ropts.max_nodes = J->max_nodes;
    ropts.max_bytes = (size_t)J->max_bytes;
    fmt = td_graph_format_parse(job->spec.format);
    ropts.format = fmt < 0 ? TD_GFMT_AUTO : (td_graph_format)fmt;
    st = td_graph_read_file(graph_path, &ropts, &el, &err);
    if (st != TD_OK)
        goto done;
    st = td_graph_build(&el, 0, &g, &err);
    id_base = el.id_base;
    td_edgelist_free(&el);
    if (st != TD_OK)
        goto done;
    pthread_mutex_lock(&J->lock);
    job->nodes = g.n;
    job->edges = td_graph_edges(&g);
    pthread_mutex_unlock(&J->lock);
    /* 3. Build. */
    td_oracle_params_default(&p);
    p.mode = (td_oracle_mode)td_oracle_mode_parse(job->spec.mode);
    p.eps = job->spec.eps;
    p.progress = on_progress;
    p.progress_ctx = ctx;
    p.cancel = &job->cancel;
    st = td_oracle_build(&g, &p, &o, &err);
    if (st != TD_OK)
        goto done;
    o.id_base = id_base;
    /* 4. Publish by rename: a half-written oracle is never seen. */
    on_progress(ctx, 1.0, "saving");
    st = td_oracle_save(&o, oracle_path, &err);
    if (st == TD_OK) {
        pthread_mutex_lock(&J->lock);
        job->oracle_bytes = td_oracle_bytes(&o);
        job->build_seconds = o.stats.build_seconds;
        pthread_mutex_unlock(&J->lock);
    }
done:
    td_edgelist_free(&el);
    td_graph_free(&g);
    td_oracle_free(&o);
    pthread_mutex_lock(&J->lock);
    job->finished_ms = wall_ms();
    if (atomic_load(&job->cancel) && J->stop && !job->deleted) {
        /* Shutdown, not a user's cancel: build it again at next start. */
        job->state = TD_JOB_QUEUED;
        job->progress = 0;
        snprintf(job->phase, sizeof job->phase,
                 "interrupted by shutdown; resumes at next start");
    } else if (atomic_load(&job->cancel)) {
        job->state = TD_JOB_CANCELLED;
        snprintf(job->phase, sizeof job->phase, "cancelled");
        if (st == TD_OK)
            unlink(oracle_path);
    } else if (st == TD_OK) {
        job->state = TD_JOB_READY;
        job->progress = 1.0;
        snprintf(job->phase, sizeof job->phase, "done");
        J->changed = 1;
    } else {
        job->state = TD_JOB_FAILED;
        free(job->error);
        job->error = strdup(err.msg[0] ? err.msg : td_status_str(st));
        snprintf(job->phase, sizeof job->phase, "failed");
    }
    record_write(J, job);
    pthread_mutex_unlock(&J->lock);
    if (job->state == TD_JOB_READY)
        TD_LOG_INFO(J->log, "graph job %s: oracle %s ready (%llu nodes, "
                            "%.1f s)",
                    job->id, job->spec.name, (unsigned long long)job->nodes,
                    job->build_seconds);
    else
        TD_LOG_WARN(J->log, "graph job %s: %s%s%s", job->id,
                    td_job_state_name(job->state),
                    job->error ? ": " : "", job->error ? job->error : "");
}

/* Oldest queued job, or NULL. Caller holds the lock. */
static td_job *next_queued(td_jobs *J)
{
    td_job *job, *found = NULL;
    for (job = J->jobs; job; job = job->next)
        if (job->state == TD_JOB_QUEUED)
            found = job; /* the list is newest first */
    return found;
}

static void *build_thread(void *arg)
{
    td_jobs *J = arg;
    pthread_mutex_lock(&J->lock);
    for (;;) {
        td_job *job;
        while (!J->stop && !(job = next_queued(J)))
            pthread_cond_wait(&J->cond, &J->lock);
        if (J->stop)
            break;
        job->state = TD_JOB_BUILDING;
        pthread_mutex_unlock(&J->lock);
        run_job(J, job);
        uv_async_send(&J->async);
        pthread_mutex_lock(&J->lock);
    }
    pthread_mutex_unlock(&J->lock);
    return NULL;
}

/* Loop thread: a build finished. Drop deleted jobs; rescan if needed. */
static void on_async(uv_async_t *a)
{
    td_jobs *J = a->data;
    td_job **link, *job;
    int changed;
    pthread_mutex_lock(&J->lock);
    changed = J->changed;
    J->changed = 0;
    link = &J->jobs;
    while ((job = *link) != NULL) {
        if (job->deleted && job->state != TD_JOB_BUILDING) {
            char path[4300];
            *link = job->next;
            path_of(path, sizeof path, J->job_dir, job->id, ".json");
            unlink(path);
            path_of(path, sizeof path, J->graph_dir, job->id, ".graph");
            unlink(path);
            job_free(job);
            continue;
        }
        link = &job->next;
    }
    pthread_mutex_unlock(&J->lock);
    if (changed && J->on_change)
        J->on_change(J->app);
}

/* ------------------------------------------------------------ API */

static int make_dir(const char *path)
{
    return mkdir(path, 0750) == 0 || errno == EEXIST ? 0 : -1;
}

static void new_id(char *out, size_t cap)
{
    unsigned char r[8];
    size_t i;
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        uint64_t t = (uint64_t)wall_ms() ^ ((uint64_t)getpid() << 32);
        memcpy(r, &t, sizeof r);
    }
    snprintf(out, cap, "g");
    for (i = 0; i < sizeof r; i++)
        snprintf(out + 1 + 2 * i, cap - 1 - 2 * i, "%02x", r[i]);
}

static int job_cmp_newest_first(const void *a, const void *b)
{
    const td_job *x = *(td_job *const *)a, *y = *(td_job *const *)b;
    return (x->submitted_ms < y->submitted_ms) -
           (x->submitted_ms > y->submitted_ms);
}

/* Read every record; unfinished jobs are queued again. */
static void load_records(td_jobs *J)
{
    DIR *d = opendir(J->job_dir);
    struct dirent *de;
    td_job **all = NULL;
    size_t n = 0, cap = 0, i;
    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        char path[4300];
        td_job *job;
        if (de->d_name[0] == '.' || len < 6 ||
            strcmp(de->d_name + len - 5, ".json") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", J->job_dir, de->d_name);
        job = record_read(path);
        if (!job) {
            TD_LOG_WARN(J->log, "ignoring unreadable job record %s", path);
            continue;
        }
        if (job->state == TD_JOB_QUEUED || job->state == TD_JOB_BUILDING) {
            TD_LOG_INFO(J->log, "graph job %s was %s when tinyd stopped; "
                                "building it again",
                        job->id, td_job_state_name(job->state));
            job->state = TD_JOB_QUEUED;
            job->progress = 0;
            snprintf(job->phase, sizeof job->phase, "queued (resumed)");
        }
        if (n == cap) {
            td_job **grown;
            cap = cap ? cap * 2 : 16;
            grown = realloc(all, cap * sizeof *grown);
            if (!grown) {
                job_free(job);
                break;
            }
            all = grown;
        }
        all[n++] = job;
    }
    closedir(d);
    if (n > 0)
        qsort(all, n, sizeof *all, job_cmp_newest_first);
    for (i = n; i > 0; i--) {
        all[i - 1]->next = J->jobs;
        J->jobs = all[i - 1];
    }
    free(all);
}

td_status td_jobs_init(td_jobs *J, uv_loop_t *loop, const char *state_dir,
                       unsigned max_queued, const td_log *log,
                       void (*on_change)(void *app), void *app,
                       td_error *err)
{
    memset(J, 0, sizeof *J);
    J->loop = loop;
    J->log = log;
    J->max_queued = max_queued ? max_queued : 1;
    J->on_change = on_change;
    J->app = app;
    snprintf(J->graph_dir, sizeof J->graph_dir, "%s/graphs", state_dir);
    snprintf(J->oracle_dir, sizeof J->oracle_dir, "%s/oracles", state_dir);
    snprintf(J->job_dir, sizeof J->job_dir, "%s/jobs", state_dir);
    if (make_dir(J->graph_dir) || make_dir(J->oracle_dir) ||
        make_dir(J->job_dir))
        return td_error_set(err, TD_EIO,
                            "cannot create the state directories under %s: "
                            "%s",
                            state_dir, strerror(errno));
    pthread_mutex_init(&J->lock, NULL);
    pthread_cond_init(&J->cond, NULL);
    uv_async_init(loop, &J->async, on_async);
    J->async.data = J;
    load_records(J);
    if (pthread_create(&J->thread, NULL, build_thread, J) != 0) {
        uv_close((uv_handle_t *)&J->async, NULL);
        return td_error_set(err, TD_EIO, "cannot start the build thread");
    }
    J->thread_started = 1;
    return TD_OK;
}

int td_jobs_name_taken(td_jobs *J, const char *name)
{
    td_job *job;
    int taken = 0;
    pthread_mutex_lock(&J->lock);
    for (job = J->jobs; job; job = job->next)
        if (!job->deleted && job->state != TD_JOB_FAILED &&
            job->state != TD_JOB_CANCELLED &&
            strcmp(job->spec.name, name) == 0)
            taken = 1;
    pthread_mutex_unlock(&J->lock);
    return taken;
}

td_status td_jobs_submit(td_jobs *J, const td_job_spec *spec, char *body,
                         size_t len, const td_job **out, td_error *err)
{
    td_job *job, *it;
    unsigned pending = 0;
    pthread_mutex_lock(&J->lock);
    for (it = J->jobs; it; it = it->next)
        if (it->state == TD_JOB_QUEUED || it->state == TD_JOB_BUILDING)
            pending++;
    if (pending >= J->max_queued) {
        pthread_mutex_unlock(&J->lock);
        return td_error_set(err, TD_EBUSY,
                            "%u graph builds are already queued or running "
                            "(the limit); try again later",
                            pending);
    }
    job = calloc(1, sizeof *job);
    if (!job) {
        pthread_mutex_unlock(&J->lock);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    new_id(job->id, sizeof job->id);
    if (spec->name[0])
        job->spec = *spec;
    else {
        job->spec = *spec;
        snprintf(job->spec.name, sizeof job->spec.name, "graph-%s", job->id);
    }
    job->state = TD_JOB_QUEUED;
    snprintf(job->phase, sizeof job->phase, "queued");
    job->submitted_ms = wall_ms();
    job->body = body;
    job->body_len = len;
    job->input_bytes = len;
    atomic_init(&job->cancel, 0);
    job->next = J->jobs;
    J->jobs = job;
    record_write(J, job);
    pthread_cond_signal(&J->cond);
    pthread_mutex_unlock(&J->lock);
    *out = job;
    TD_LOG_INFO(J->log, "graph job %s: queued (oracle %s, %zu bytes, mode "
                        "%s, eps %g)",
                job->id, job->spec.name, len, job->spec.mode,
                job->spec.eps);
    return TD_OK;
}

static td_job *find_locked(td_jobs *J, const char *id)
{
    td_job *job;
    for (job = J->jobs; job; job = job->next)
        if (!job->deleted && strcmp(job->id, id) == 0)
            return job;
    return NULL;
}

json_t *td_jobs_get_json(td_jobs *J, const char *id)
{
    json_t *o = NULL;
    td_job *job;
    pthread_mutex_lock(&J->lock);
    job = find_locked(J, id);
    if (job)
        o = job_json(job);
    pthread_mutex_unlock(&J->lock);
    return o;
}

json_t *td_jobs_list_json(td_jobs *J)
{
    json_t *arr = json_array();
    td_job *job;
    pthread_mutex_lock(&J->lock);
    for (job = J->jobs; arr && job; job = job->next)
        if (!job->deleted)
            json_array_append_new(arr, job_json(job));
    pthread_mutex_unlock(&J->lock);
    return arr;
}

td_status td_jobs_delete(td_jobs *J, const char *id, td_error *err)
{
    td_job *job;
    pthread_mutex_lock(&J->lock);
    job = find_locked(J, id);
    if (!job) {
        pthread_mutex_unlock(&J->lock);
        return td_error_set(err, TD_ENOTFOUND, "unknown graph job \"%s\"",
                            id);
    }
    job->deleted = 1;
    if (job->state == TD_JOB_BUILDING) {
        atomic_store(&job->cancel, 1); /* the build stops at its next check */
    } else {
        if (job->state == TD_JOB_READY) {
            char path[4400];
            snprintf(path, sizeof path, "%s/%s.safetensors", J->oracle_dir,
                     job->spec.name);
            unlink(path);
            J->changed = 1;
        }
        job->state = job->state == TD_JOB_QUEUED ? TD_JOB_CANCELLED
                                                 : job->state;
    }
    pthread_mutex_unlock(&J->lock);
    TD_LOG_INFO(J->log, "graph job %s: deleted", id);
    uv_async_send(&J->async);
    return TD_OK;
}

void td_jobs_counts(td_jobs *J, unsigned counts[5])
{
    td_job *job;
    memset(counts, 0, 5 * sizeof counts[0]);
    pthread_mutex_lock(&J->lock);
    for (job = J->jobs; job; job = job->next)
        if (!job->deleted && (unsigned)job->state <= TD_JOB_CANCELLED)
            counts[job->state]++;
    pthread_mutex_unlock(&J->lock);
}

void td_jobs_stop(td_jobs *J)
{
    td_job *job;
    if (!J->thread_started)
        return;
    pthread_mutex_lock(&J->lock);
    J->stop = 1;
    /* A build in progress is abandoned; its record still says
     * "building", so the next start builds it again. */
    for (job = J->jobs; job; job = job->next)
        if (job->state == TD_JOB_BUILDING)
            atomic_store(&job->cancel, 1);
    pthread_cond_signal(&J->cond);
    pthread_mutex_unlock(&J->lock);
    pthread_join(J->thread, NULL);
    J->thread_started = 0;
}

void td_jobs_close(td_jobs *J)
{
    td_job *job, *next;
    uv_close((uv_handle_t *)&J->async, NULL);
    for (job = J->jobs; job; job = next) {
        next = job->next;
        job_free(job);
    }
    J->jobs = NULL;
    pthread_mutex_destroy(&J->lock);
    pthread_cond_destroy(&J->cond);
}
