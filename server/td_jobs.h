/* td_jobs: background oracle builds from graphs users submit.
 *
 * POST /v1/graphs hands a graph (bytes as uploaded) to td_jobs_submit. A
 * dedicated build thread (not the libuv pool, so inference keeps every
 * pool thread while a large graph builds) then:
 *   1. stores the upload under STATE/graphs/ID.graph (atomically),
 *   2. parses it, builds the oracle with progress reports,
 *   3. saves STATE/oracles/NAME.safetensors atomically,
 * and records each state change in STATE/jobs/ID.json (atomically). The
 * loop is told through a uv_async and rescans the repository, so the
 * oracle appears in /v2/models. A daemon killed mid-build finds the job
 * "queued" or "building" on restart and builds it again from the stored
 * graph; nothing half-written is ever served (oracles appear only by
 * rename). A bounded queue refuses work past --max-jobs with 503.
 *
 * Thread contract: td_jobs_* are called on the loop thread; the build
 * thread shares jobs with it under `lock`. */
#ifndef TD_JOBS_H
#define TD_JOBS_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "td_err.h"
#include "td_log.h"
#include "td_registry.h"

typedef enum td_job_state {
    TD_JOB_QUEUED,
    TD_JOB_BUILDING,
    TD_JOB_READY,
    TD_JOB_FAILED,
    TD_JOB_CANCELLED
} td_job_state;

typedef struct td_job_spec {
    char name[TD_NAME_MAX + 1];  /* the oracle's servable name */
    char format[16];             /* "auto", "dimacs", "edgelist", "json" */
    char mode[16];               /* "labels" or "treecover" */
    double eps;
} td_job_spec;

typedef struct td_job {
    char id[24];
    td_job_spec spec;
    td_job_state state;
    char *error;                 /* owned; set when failed */
    char phase[64];
    double progress;             /* 0..1 */
    int64_t submitted_ms, started_ms, finished_ms;
    uint64_t nodes, edges, oracle_bytes, input_bytes;
    double build_seconds;
    char *body;                  /* owned until stored by the build thread */
    size_t body_len;
    atomic_int cancel;
    int deleted;                 /* DELETE arrived while building */
    struct td_job *next;
} td_job;

typedef struct td_jobs {
    uv_loop_t *loop;
    const td_log *log;
    uv_async_t async;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    td_job *jobs;                /* newest first */
    unsigned max_queued;
    uint64_t max_nodes;          /* graph limits (0: the reader's own) */
    uint64_t max_bytes;
    int stop;
    int changed;                 /* an oracle appeared or went: rescan */
    char graph_dir[4200], oracle_dir[4200], job_dir[4200];
    void (*on_change)(void *app);/* loop thread: rescan the repository */
    void *app;
} td_jobs;

td_status td_jobs_init(td_jobs *J, uv_loop_t *loop, const char *state_dir,
                       unsigned max_queued, const td_log *log,
                       void (*on_change)(void *app), void *app,
                       td_error *err);
/* Queue a build. body (malloc'd) becomes the job's; on error the caller
 * keeps it. The name must be unused by jobs (the caller checks servables). */
td_status td_jobs_submit(td_jobs *J, const td_job_spec *spec, char *body,
                         size_t len, const td_job **out, td_error *err);
/* A JSON snapshot of one job or all of them (new references). NULL if
 * the id is unknown. */
json_t *td_jobs_get_json(td_jobs *J, const char *id);
json_t *td_jobs_list_json(td_jobs *J);
/* Whether any job (not cancelled or failed) uses this oracle name. */
int td_jobs_name_taken(td_jobs *J, const char *name);
/* Cancel a queued or building job, or delete a finished one and its
 * oracle. TD_ENOTFOUND for an unknown id. */
td_status td_jobs_delete(td_jobs *J, const char *id, td_error *err);
/* Stop the build thread (cancelling a build in progress) and join it. */
void td_jobs_stop(td_jobs *J);
void td_jobs_close(td_jobs *J);  /* after stop: the async handle */
const char *td_job_state_name(td_job_state st);
/* Jobs waiting or building, for metrics. */
void td_jobs_counts(td_jobs *J, unsigned counts[5]);

#endif
