/* td_batcher: per-model queues, batch assembly, chunked execution. */
#include "config.h"

#include "td_batcher.h"

#include <stdlib.h>
#include <string.h>

typedef struct batch batch;

typedef struct chunk {
    uv_work_t work;
    batch *bt;
    int64_t r0, r1;                         /* rows of the batch */
    td_tensor inputs[TD_OIP_MAX_TENSORS];
    void *owned[TD_OIP_MAX_TENSORS];        /* copies made for this chunk */
    td_tensor outputs[TD_OIP_MAX_TENSORS];  /* data malloc'd by the kind */
    td_status status;
    td_error err;
} chunk;

struct batch {
    td_batcher *b;
    td_batch_queue *q;
    td_model *model;
    td_infer_job **jobs;
    int n_jobs;
    int64_t rows;
    int n_in, n_out;
    chunk *chunks;
    int n_chunks, chunks_left;
    uv_work_t write_work;
    uint64_t t_start, t_end;
};

void td_infer_job_free(td_infer_job *job)
{
    if (!job)
        return;
    td_oip_request_free(&job->oip);
    if (job->model)
        td_model_unref(job->model);
    free(job->resp);
    if (job->write_free)
        job->write_free(job->write_data);
    else
        free(job->write_data);
    free(job);
}

/* ------------------------------------------------------------ queues */

static void on_queue_timer(uv_timer_t *t);

static td_batch_queue *queue_get(td_batcher *b, const char *name)
{
    td_batch_queue *q;
    for (q = b->queues; q; q = q->next)
        if (strcmp(q->name, name) == 0)
            return q;
    q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    snprintf(q->name, sizeof q->name, "%s", name);
    q->max_batch = b->default_max_batch;
    q->max_delay_us = b->default_max_delay_us;
    uv_timer_init(b->loop, &q->timer);
    q->timer.data = b;
    q->next = b->queues;
    b->queues = q;
    return q;
}

const td_batch_queue *td_batcher_queue(const td_batcher *b, const char *name)
{
    const td_batch_queue *q;
    for (q = b->queues; q; q = q->next)
        if (strcmp(q->name, name) == 0)
            return q;
    return NULL;
}

void td_batcher_set_limits(td_batcher *b, const char *name, int max_batch,
                           uint64_t max_delay_us)
{
    td_batch_queue *q = queue_get(b, name);
    if (!q)
        return;
    q->max_batch = max_batch > 0 ? max_batch : 1;
    q->max_delay_us = max_delay_us;
}

/* Bytes of one row of a tensor (all dimensions after the first). */
static size_t row_bytes(const td_tensor *t)
{
    size_t n = td_dtype_size(t->dtype);
    int d;
    for (d = 1; d < t->ndim; d++)
        n *= (size_t)t->shape[d];
    return n;
}

/* Can job be merged into a batch started by first? Same model version and
 * the same trailing dimensions on every input. */
static int mergeable(const td_infer_job *first, const td_infer_job *job)
{
    int k, d;
    if (job->model != first->model ||
        memcmp(&job->oip.params, &first->oip.params, sizeof job->oip.params))
        return 0;
    for (k = 0; k < first->oip.n_inputs; k++) {
        const td_tensor *a = &first->oip.inputs[k], *c = &job->oip.inputs[k];
        if (a->ndim != c->ndim || a->dtype != c->dtype)
            return 0;
        for (d = 1; d < a->ndim; d++)
            if (a->shape[d] != c->shape[d])
                return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ execution */

/* Point t at rows [r0, r1) of the batch, copying only when the rows span
 * several jobs. Pool thread. */
static int gather_rows(batch *bt, int k, int64_t r0, int64_t r1,
                       td_tensor *t, void **owned)
{
    int64_t base = 0;
    int j;
    const td_tensor *proto = &bt->jobs[0]->oip.inputs[k];
    size_t rb = row_bytes(proto);
    *t = *proto;
    t->shape[0] = r1 - r0;
    t->nbytes = rb * (size_t)(r1 - r0);
    *owned = NULL;
    for (j = 0; j < bt->n_jobs; j++) {
        const td_tensor *src = &bt->jobs[j]->oip.inputs[k];
        int64_t n = bt->jobs[j]->rows;
        if (r0 >= base && r1 <= base + n) {
            t->data = (char *)src->data + (size_t)(r0 - base) * rb;
            return 0;
        }
        base += n;
    }
    t->data = *owned = malloc(t->nbytes ? t->nbytes : 1);
    if (!t->data)
        return -1;
    base = 0;
    for (j = 0; j < bt->n_jobs; j++) {
        const td_tensor *src = &bt->jobs[j]->oip.inputs[k];
        int64_t n = bt->jobs[j]->rows;
        int64_t lo = r0 > base ? r0 : base;
        int64_t hi = r1 < base + n ? r1 : base + n;
        if (lo < hi)
            memcpy((char *)t->data + (size_t)(lo - r0) * rb,
                   (const char *)src->data + (size_t)(lo - base) * rb,
                   (size_t)(hi - lo) * rb);
        base += n;
    }
    return 0;
}

static void chunk_work(uv_work_t *w)
{
    chunk *c = w->data;
    batch *bt = c->bt;
    const td_servable_kind *kind = bt->model->kind;
    const td_infer_params *params = &bt->jobs[0]->oip.params;
    size_t need = kind->scratch_bytes
                      ? kind->scratch_bytes(bt->model->impl, params,
                                            c->r1 - c->r0)
                      : 0;
    td_arena *scratch;
    int k;
    td_error_clear(&c->err);
    for (k = 0; k < bt->n_in; k++) {
        if (gather_rows(bt, k, c->r0, c->r1, &c->inputs[k], &c->owned[k])) {
            c->status = td_error_set(&c->err, TD_ENOMEM,
                                     "out of memory assembling a batch");
            return;
        }
    }
    scratch = td_scratch_borrow(bt->b->scratch, need);
    if (!scratch) {
        c->status = td_error_set(&c->err, TD_ENOMEM,
                                 "out of memory for %zu bytes of scratch",
                                 need);
        return;
    }
    c->status = kind->infer(bt->model->impl, c->inputs, params, c->outputs,
                            scratch, &c->err);
    td_scratch_return(bt->b->scratch, scratch);
    if (c->status != TD_OK)
        memset(c->outputs, 0, sizeof c->outputs);
}

/* Rows [r0, r1) of output k across the chunks, as one tensor. */
static int slice_output(batch *bt, int k, int64_t r0, int64_t r1,
                        td_tensor *t, void **owned)
{
    int i;
    const td_tensor *proto = &bt->chunks[0].outputs[k];
    size_t rb = row_bytes(proto);
    *t = *proto;
    t->shape[0] = r1 - r0;
    t->nbytes = rb * (size_t)(r1 - r0);
    *owned = NULL;
    for (i = 0; i < bt->n_chunks; i++) {
        const chunk *c = &bt->chunks[i];
        if (r0 >= c->r0 && r1 <= c->r1) {
            t->data = (char *)c->outputs[k].data + (size_t)(r0 - c->r0) * rb;
            return 0;
        }
    }
    t->data = *owned = malloc(t->nbytes ? t->nbytes : 1);
    if (!t->data)
        return -1;
    for (i = 0; i < bt->n_chunks; i++) {
        const chunk *c = &bt->chunks[i];
        int64_t lo = r0 > c->r0 ? r0 : c->r0;
        int64_t hi = r1 < c->r1 ? r1 : c->r1;
        if (lo < hi)
            memcpy((char *)t->data + (size_t)(lo - r0) * rb,
                   (const char *)c->outputs[k].data +
                       (size_t)(lo - c->r0) * rb,
                   (size_t)(hi - lo) * rb);
    }
    return 0;
}

/* Pool thread: write every job's response from its rows. */
static void write_work(uv_work_t *w)
{
    batch *bt = w->data;
    const chunk *failed = NULL;
    int64_t base = 0;
    int i, j, k;
    for (i = 0; i < bt->n_chunks; i++)
        if (bt->chunks[i].status != TD_OK && !failed)
            failed = &bt->chunks[i];
    for (j = 0; j < bt->n_jobs; j++) {
        td_infer_job *job = bt->jobs[j];
        td_tensor outs[TD_OIP_MAX_TENSORS];
        void *owned[TD_OIP_MAX_TENSORS] = {0};
        td_error_clear(&job->err);
        if (failed) {
            job->status = failed->status;
            job->err = failed->err;
        } else {
            job->status = TD_OK;
            for (k = 0; k < bt->n_out && job->status == TD_OK; k++)
                if (slice_output(bt, k, base, base + job->rows, &outs[k],
                                 &owned[k]))
                    job->status = td_error_set(&job->err, TD_ENOMEM,
                                               "out of memory");
            if (job->status == TD_OK)
                job->status = job->write(job, outs, bt->n_out, &job->err);
            for (k = 0; k < bt->n_out; k++)
                free(owned[k]);
        }
        base += job->rows;
    }
}

static void dispatch(td_batcher *b, td_batch_queue *q);
static void maybe_dispatch(td_batcher *b, td_batch_queue *q);
static void arm_timer(td_batcher *b, td_batch_queue *q);

static void batch_free(batch *bt)
{
    int i, k;
    for (i = 0; i < bt->n_chunks; i++) {
        for (k = 0; k < TD_OIP_MAX_TENSORS; k++) {
            free(bt->chunks[i].owned[k]);
            free(bt->chunks[i].outputs[k].data);
        }
    }
    free(bt->chunks);
    free(bt->jobs);
    free(bt);
}

/* Loop thread: answer every job of the batch. */
static void write_after(uv_work_t *w, int status)
{
    batch *bt = w->data;
    td_batch_queue *q = bt->q;
    td_batcher *b = bt->b;
    uint64_t now = td_now_ns();
    int j, bucket;
    (void)status;
    q->stats.batches++;
    q->stats.rows += (uint64_t)bt->rows;
    for (bucket = 0; bucket < 8 && bt->rows > (int64_t)1 << bucket; bucket++)
        ;
    q->stats.size_bucket[bucket]++;
    q->stats.compute_ns += bt->t_end - bt->t_start;
    for (j = 0; j < bt->n_jobs; j++) {
        td_infer_job *job = bt->jobs[j];
        td_request *req = job->req;
        job->t_done = now;
        q->stats.queue_ns += job->t_started - job->t_queued;
        if (td_http_release(req)) {
            if (job->status == TD_OK) {
                td_http_respond_owned(req, 200,
                                      job->resp_type ? job->resp_type
                                                     : "application/json",
                                      job->resp, job->resp_len);
                job->resp = NULL;
            } else {
                td_http_respond_error(req, td_status_http(job->status), "%s",
                                      job->err.msg);
            }
            td_http_resume(req);
        }
        td_infer_job_free(job);
    }
    batch_free(bt);
    b->batches_running--;
    q->running--;
    /* A worker is free again: what queued meanwhile may go now. */
    maybe_dispatch(b, q);
}

static void chunk_after(uv_work_t *w, int status)
{
    chunk *c = w->data;
    batch *bt = c->bt;
    (void)status;
    if (--bt->chunks_left > 0)
        return;
    bt->t_end = td_now_ns();
    bt->write_work.data = bt;
    if (uv_queue_work(bt->b->loop, &bt->write_work, write_work,
                      write_after) != 0) {
        /* Unreachable with a live loop; answer rather than hang. */
        int j;
        for (j = 0; j < bt->n_jobs; j++) {
            bt->jobs[j]->status = TD_EINTERNAL;
            snprintf(bt->jobs[j]->err.msg, sizeof bt->jobs[j]->err.msg,
                     "cannot queue work");
        }
        write_after(&bt->write_work, 0);
    }
}

/* Take jobs off q into one batch and start its chunks. */
static void dispatch(td_batcher *b, td_batch_queue *q)
{
    batch *bt;
    td_infer_job *first, **link, *job;
    int64_t per, extra, r;
    int i, n_chunks;
    if (!q->head)
        return;
    bt = calloc(1, sizeof *bt);
    if (bt)
        bt->jobs = calloc((size_t)q->n_jobs, sizeof *bt->jobs);
    if (!bt || !bt->jobs) {
        free(bt);
        return; /* retried by the next submission or timer */
    }
    bt->b = b;
    bt->q = q;
    first = q->head;
    bt->model = first->model;
    bt->n_in = first->oip.n_inputs;
    bt->n_out = first->model->kind->outputs(first->model->impl,
                                            &(const td_tensor_spec *){NULL});
    /* Jobs past their deadline are answered 504 instead of computed. */
    if (b->deadline_ns) {
        uint64_t now = td_now_ns();
        link = &q->head;
        while ((job = *link) != NULL) {
            if (now - job->req->start_ns > b->deadline_ns) {
                *link = job->next;
                q->rows -= job->rows;
                q->n_jobs--;
                if (td_http_release(job->req)) {
                    td_http_respond_error(
                        job->req, 504,
                        "deadline of %llu ms passed before the request could "
                        "run (--request-timeout)",
                        (unsigned long long)(b->deadline_ns / 1000000u));
                    td_http_resume(job->req);
                }
                td_infer_job_free(job);
                continue;
            }
            link = &job->next;
        }
        q->tail = NULL;
        for (job = q->head; job; job = job->next)
            q->tail = job;
        if (!q->head) {
            free(bt->jobs);
            free(bt);
            return;
        }
        first = q->head;
        bt->model = first->model;
        bt->n_in = first->oip.n_inputs;
        bt->n_out = first->model->kind->outputs(
            first->model->impl, &(const td_tensor_spec *){NULL});
    }
    /* Take the first job, then every later mergeable job that still fits;
     * others keep their place in the queue. */
    link = &q->head;
    while ((job = *link) != NULL) {
        if (bt->n_jobs > 0 &&
            (!mergeable(first, job) || bt->rows + job->rows > q->max_batch)) {
            link = &job->next;
            continue;
        }
        *link = job->next;
        job->next = NULL;
        bt->jobs[bt->n_jobs++] = job;
        bt->rows += job->rows;
        q->rows -= job->rows;
        q->n_jobs--;
        if (bt->rows >= q->max_batch)
            break;
    }
    q->tail = NULL;
    for (job = q->head; job; job = job->next)
        q->tail = job;

    /* Split across the workers, never below min_chunk_rows per chunk. */
    n_chunks = (int)(bt->rows / (b->min_chunk_rows ? b->min_chunk_rows : 1));
    if (n_chunks > (int)b->workers)
        n_chunks = (int)b->workers;
    if (n_chunks < 1)
        n_chunks = 1;
    bt->chunks = calloc((size_t)n_chunks, sizeof *bt->chunks);
    if (!bt->chunks)
        n_chunks = 0;
    bt->n_chunks = bt->chunks_left = n_chunks;
    bt->t_start = td_now_ns();
    for (i = 0; i < bt->n_jobs; i++)
        bt->jobs[i]->t_started = bt->t_start;
    b->batches_running++;
    q->running++;
    if (n_chunks == 0) {
        bt->t_end = bt->t_start;
        /* Out of memory: fail the jobs through the normal answer path. */
        bt->chunks_left = 0;
        for (i = 0; i < bt->n_jobs; i++) {
            bt->jobs[i]->status = TD_ENOMEM;
            snprintf(bt->jobs[i]->err.msg, sizeof bt->jobs[i]->err.msg,
                     "out of memory");
        }
        write_after(&bt->write_work, 0);
        return;
    }
    per = bt->rows / n_chunks;
    extra = bt->rows % n_chunks;
    r = 0;
    for (i = 0; i < n_chunks; i++) {
        chunk *c = &bt->chunks[i];
        c->bt = bt;
        c->r0 = r;
        r += per + (i < extra ? 1 : 0);
        c->r1 = r;
        c->work.data = c;
        if (uv_queue_work(b->loop, &c->work, chunk_work, chunk_after) != 0) {
            c->status = td_error_set(&c->err, TD_EINTERNAL,
                                     "cannot queue work");
            chunk_after(&c->work, 0);
        }
    }
}

/* The batching policy. At most `workers` batches of a model run at once.
 * An idle model dispatches at once (no added latency); while some of its
 * batches run and a worker is still free, a partial batch waits at most
 * max_delay_us to fill; while every worker is busy, requests queue (up to
 * max_queue_rows) and leave as soon as one frees. */
static void maybe_dispatch(td_batcher *b, td_batch_queue *q)
{
    while (q->head && q->running < (int)b->workers) {
        uint64_t waited = td_now_ns() - q->head->t_queued;
        if (q->running == 0 || q->rows >= q->max_batch || b->closing ||
            waited >= q->max_delay_us * 1000u) {
            int before = q->n_jobs;
            dispatch(b, q);
            if (q->n_jobs == before)
                break; /* out of memory: the next event retries */
        } else {
            break;
        }
    }
    arm_timer(b, q);
}

static void arm_timer(td_batcher *b, td_batch_queue *q)
{
    uint64_t now = td_now_ns(), due, wait_ms;
    /* Only a partial batch waiting beside a free worker needs a wake-up;
     * otherwise a finishing batch is the event that dispatches. */
    if (!q->head || q->running >= (int)b->workers) {
        uv_timer_stop(&q->timer);
        return;
    }
    due = q->head->t_queued + q->max_delay_us * 1000u;
    /* libuv timers tick in milliseconds; round up so the delay is at
     * least what was asked for, and never 0 for a non-zero delay. */
    wait_ms = due > now ? (due - now + 999999u) / 1000000u : 0;
    uv_timer_start(&q->timer, on_queue_timer, wait_ms, 0);
}

static void on_queue_timer(uv_timer_t *t)
{
    td_batcher *b = t->data;
    td_batch_queue *q = (td_batch_queue *)((char *)t -
                                           offsetof(td_batch_queue, timer));
    maybe_dispatch(b, q);
}

/* ------------------------------------------------------------ API */

void td_batcher_init(td_batcher *b, uv_loop_t *loop, td_scratch_pool *scratch,
                     unsigned workers, int max_batch, uint64_t max_delay_us)
{
    memset(b, 0, sizeof *b);
    b->loop = loop;
    b->scratch = scratch;
    b->workers = workers ? workers : 1;
    b->min_chunk_rows = 4;
    b->default_max_batch = max_batch > 0 ? max_batch : 1;
    b->default_max_delay_us = max_delay_us;
}

void td_batcher_submit(td_batcher *b, td_infer_job *job)
{
    td_batch_queue *q = queue_get(b, job->model->name);
    if (!q) {
        td_http_respond_error(job->req, 500, "out of memory");
        td_http_resume(job->req);
        td_infer_job_free(job);
        return;
    }
    if (b->max_queue_rows &&
        (uint64_t)(q->rows + job->rows) > b->max_queue_rows && q->rows > 0) {
        /* Bounded memory under overload: refuse rather than queue. */
        td_http_add_header(job->req, "Retry-After", "1");
        td_http_respond_error(job->req, 503,
                              "model \"%s\" has %lld rows queued, the limit "
                              "is %llu (--max-queue); retry later",
                              q->name, (long long)q->rows,
                              (unsigned long long)b->max_queue_rows);
        td_http_resume(job->req);
        td_infer_job_free(job);
        return;
    }
    td_http_hold(job->req);
    td_http_suspend(job->req);
    job->t_queued = td_now_ns();
    job->next = NULL;
    if (q->tail)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    q->rows += job->rows;
    q->n_jobs++;
    maybe_dispatch(b, q);
}

void td_batcher_flush(td_batcher *b)
{
    td_batch_queue *q;
    b->closing = 1;
    for (q = b->queues; q; q = q->next) {
        maybe_dispatch(b, q);
        uv_timer_stop(&q->timer);
    }
}


static void on_timer_closed(uv_handle_t *h)
{
    td_batch_queue *q = (td_batch_queue *)((char *)h -
                                           offsetof(td_batch_queue, timer));
    free(q);
}

void td_batcher_prune(td_batcher *b, int (*keep)(void *arg, const char *name),
                      void *arg)
{
    td_batch_queue **link = &b->queues, *q;
    while ((q = *link) != NULL) {
        if (!q->head && q->running == 0 && !keep(arg, q->name)) {
            *link = q->next;
            uv_timer_stop(&q->timer);
            uv_close((uv_handle_t *)&q->timer, on_timer_closed);
            continue;
        }
        link = &q->next;
    }
}

void td_batcher_close(td_batcher *b)
{
    td_batch_queue *q = b->queues, *next;
    while (q) {
        next = q->next;
        uv_close((uv_handle_t *)&q->timer, on_timer_closed);
        q = next;
    }
    b->queues = NULL;
}
