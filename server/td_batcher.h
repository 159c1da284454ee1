/* td_batcher: dynamic batching and batch splitting for inference.
 *
 * Requests for one model that arrive within max_delay_us of the first are
 * merged into one forward pass of up to max_batch rows, as Triton's
 * dynamic batcher does. A batch is then split into chunks across the pool
 * threads (each chunk on one thread with single-threaded BLAS), so one
 * large request also uses every core. When every chunk is done, the
 * per-request responses are written on the pool and the requests resumed.
 *
 * A job whose parsing failed never reaches the batcher. A job holds a
 * reference to the model version it was parsed against; a batch only
 * merges jobs of the same version, so a reload mid-queue is harmless.
 *
 * Thread contract: td_batcher_* are loop-thread only. */
#ifndef TD_BATCHER_H
#define TD_BATCHER_H

#include <stdint.h>
#include <uv.h>

#include "td_http.h"
#include "td_oip.h"
#include "td_registry.h"
#include "td_scratch.h"

typedef struct td_infer_job td_infer_job;

/* Writes the job's response body from its output rows (pool thread). */
typedef td_status (*td_job_write_fn)(td_infer_job *job,
                                     const td_tensor *outputs, int n_outputs,
                                     td_error *err);

struct td_infer_job {
    td_request *req;          /* held while the job is queued or running */
    td_model *model;          /* one reference */
    td_oip_request oip;       /* parsed inputs (rows = shape[0]) */
    int64_t rows;
    td_job_write_fn write;    /* builds resp from this job's output rows */
    void *write_data;         /* for write (e.g. top-k of :classify) */
    void (*write_free)(void *);/* frees write_data (NULL: free()) */
    td_status status;
    td_error err;
    char *resp;               /* owned until responded */
    size_t resp_len;
    const char *resp_type;
    uint64_t t_queued, t_started, t_done; /* td_now_ns */
    td_infer_job *next;
};

typedef struct td_batch_stats {
    uint64_t batches;             /* forward passes (exec count) */
    uint64_t rows;                /* rows computed */
    uint64_t size_bucket[9];      /* batch rows <= 1,2,4,...,128, more */
    uint64_t queue_ns, compute_ns;
} td_batch_stats;

typedef struct td_batch_queue {
    char name[TD_NAME_MAX + 1];
    td_infer_job *head, *tail;
    int64_t rows;
    int n_jobs;
    int max_batch;              /* rows per forward pass */
    uint64_t max_delay_us;
    uv_timer_t timer;
    int running;                /* batches of this queue in flight */
    td_batch_stats stats;
    struct td_batch_queue *next;
} td_batch_queue;

typedef struct td_batcher {
    uv_loop_t *loop;
    td_scratch_pool *scratch;
    unsigned workers;           /* chunks a batch may split into */
    int64_t min_chunk_rows;     /* do not split below this */
    int default_max_batch;
    uint64_t default_max_delay_us;
    td_batch_queue *queues;     /* one per model name, created on demand */
    unsigned batches_running;
    int closing;
    uint64_t max_queue_rows;    /* per model; past it 503 + Retry-After */
    uint64_t deadline_ns;       /* a job older than this when its batch
                                   forms is answered 504, not computed */
} td_batcher;

void td_batcher_init(td_batcher *b, uv_loop_t *loop, td_scratch_pool *scratch,
                     unsigned workers, int max_batch, uint64_t max_delay_us);
/* Queue a parsed job (holds job->req until done). The batcher answers the
 * request and frees the job. */
void td_batcher_submit(td_batcher *b, td_infer_job *job);
/* The queue of a model (NULL if none yet), for metrics. */
const td_batch_queue *td_batcher_queue(const td_batcher *b, const char *name);
void td_batcher_set_limits(td_batcher *b, const char *name, int max_batch,
                           uint64_t max_delay_us);
/* Drop the idle queues of models for which keep(arg, name) is false (a
 * model removed from the repository), so names that come and go (graph
 * oracles) do not accumulate. */
void td_batcher_prune(td_batcher *b, int (*keep)(void *arg, const char *name),
                      void *arg);
/* Dispatch everything queued now (shutdown) and stop the timers. */
void td_batcher_flush(td_batcher *b);
void td_batcher_close(td_batcher *b);
void td_infer_job_free(td_infer_job *job);

#endif
