/* tinynet_bench: forward-pass speed of TinyNet-A..E with random weights.
 *
 * For each variant at its default resolution and 1000 classes:
 *   b1/1t   latency of one image, one thread (median ms), and the median
 *           CPU time of the forward thread: on a shared machine other load
 *           stretches wall time, CPU time much less
 *   b16/1t  one batch of 16 on one thread (median ms)
 *   b32/2t  two threads, each with its own arena, each running batches of
 *           32 at once; throughput in images/s (median over rounds)
 * with the GFLOP/s each achieves (2 x multiply-adds of td_tn_arch_count).
 * OpenBLAS runs single-threaded (td_blas_set_threads(1)); parallelism comes
 * from our threads, as in the daemon.
 *
 * Usage: tinynet_bench [variants (default abcde)] [seconds per figure, 0.5]
 *
 * tinynet_bench --serve: one measurement per line of standard input, for
 * bench/tinynet_compare.py, which interleaves it with the references:
 *   in:  VARIANT BATCH THREADS SECONDS MIN_ROUNDS   e.g. "e 32 2 0.5 3"
 *   out: ok WALL_MS CPU_MS ROUNDS  (median ms per batch; the sum over
 *        workers of each one's median thread CPU ms) or "error MESSAGE"
 * BATCH images are split evenly over THREADS workers, as the daemon splits
 * a large batch, so WALL_MS is the time of the whole batch.
 *
 * tinynet_bench --save VARIANT PATH: write the variant with these random
 * weights as a model file in our format (for bench/http_infer.sh). */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "td_arena.h"
#include "td_gemm.h"
#include "td_tinynet.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static void fill(const float *p, size_t n, double fan_in, float bias)
{
    float *q = (float *)p; /* the model's own slab, not yet shared */
    float a = (float)sqrt(3.0 / fan_in);
    size_t i;
    for (i = 0; i < n; i++)
        q[i] = bias ? bias * frand() : a * frand();
}

/* Weights scaled by fan-in so activations stay finite (and normal)
 * through depth: the timing of a forward pass over infinities or
 * denormals would say nothing. */
static void init_weights(td_tinynet *m)
{
    const td_tn_arch *a = &m->arch;
    int i, cin;
    fill(m->stem_w, 27 * (size_t)a->stem, 27, 0);
    fill(m->stem_b, (size_t)a->stem, 1, 0.1f);
    for (i = 0; i < a->n_blocks; i++) {
        const td_tn_block *b = &a->blocks[i];
        const td_tn_layer *l = &m->layers[i];
        if (l->exp_w) {
            fill(l->exp_w, (size_t)b->cin * b->cmid, b->cin, 0);
            fill(l->exp_b, (size_t)b->cmid, 1, 0.1f);
        }
        fill(l->dw_w, (size_t)b->k * b->k * b->cmid, b->k * b->k, 0);
        fill(l->dw_b, (size_t)b->cmid, 1, 0.1f);
        fill(l->se_rw, (size_t)b->cse * b->cmid, b->cmid, 0);
        fill(l->se_rb, (size_t)b->cse, 1, 0.1f);
        fill(l->se_ew, (size_t)b->cse * b->cmid, b->cse, 0);
        fill(l->se_eb, (size_t)b->cmid, 1, 0.1f);
        fill(l->proj_w, (size_t)b->cmid * b->cout, b->cmid, 0);
        fill(l->proj_b, (size_t)b->cout, 1, 0.1f);
    }
    cin = a->blocks[a->n_blocks - 1].cout;
    fill(m->head_w, (size_t)cin * a->head, cin, 0);
    fill(m->head_b, (size_t)a->head, 1, 0.1f);
    fill(m->fc_w, (size_t)a->head * a->classes, a->head, 0);
    fill(m->fc_b, (size_t)a->classes, 1, 0.1f);
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct worker {
    const td_tinynet *m;
    td_arena arena;
    float *in, *logits;
    int n, res, rounds;
    pthread_barrier_t *start;
    double *times; /* per round, seconds */
    double *cpu;   /* per round, thread CPU seconds */
    td_status st;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    td_error err;
    int r;
    for (r = 0; r < w->rounds; r++) {
        double t0, c0;
        pthread_barrier_wait(w->start);
        t0 = now();
        c0 = cpu_now();
        w->st = td_tinynet_forward(w->m, &w->arena, w->in, w->n, w->res,
                                   w->res, w->logits, &err);
        w->cpu[r] = cpu_now() - c0;
        w->times[r] = now() - t0;
        if (w->st != TD_OK) {
            fprintf(stderr, "forward: %s\n", err.msg);
            return NULL;
        }
    }
    return NULL;
}

static int worker_init(worker *w, const td_tinynet *m, int n, int rounds)
{
    size_t nin = (size_t)n * 3 * m->arch.resolution * m->arch.resolution, i;
    td_error err;
    memset(w, 0, sizeof *w);
    w->m = m;
    w->n = n;
    w->res = m->arch.resolution;
    w->rounds = rounds;
    w->in = malloc(nin * sizeof *w->in);
    w->logits = malloc((size_t)n * m->arch.classes * sizeof *w->logits);
    w->times = calloc((size_t)rounds, sizeof *w->times);
    w->cpu = calloc((size_t)rounds, sizeof *w->cpu);
    if (!w->in || !w->logits || !w->times || !w->cpu ||
        td_arena_init(&w->arena,
                      td_tinynet_scratch_bytes(m, n, w->res, w->res),
                      &err) != TD_OK)
        return -1;
    for (i = 0; i < nin; i++)
        w->in[i] = frand();
    return 0;
}

static void worker_free(worker *w)
{
    free(w->in);
    free(w->logits);
    free(w->times);
    free(w->cpu);
    td_arena_free(&w->arena);
}

/* Median seconds per round of `threads` workers each running batches of
 * n together, rounds chosen to fill about `budget` seconds; *cpu (if
 * given) gets the median thread CPU time of one worker's forward. */
static double measure(const td_tinynet *m, int n, int threads, double budget,
                      int min_rounds, double *cpu, int *rounds_out)
{
    worker w[2];
    pthread_t th[2];
    pthread_barrier_t start;
    double probe, *all, med;
    int rounds, r, t;
    /* one untimed warm-up round decides the count */
    if (worker_init(&w[0], m, n, 2) != 0)
        return -1;
    pthread_barrier_init(&start, NULL, 1);
    w[0].start = &start;
    worker_main(&w[0]);
    probe = w[0].times[1];
    worker_free(&w[0]);
    pthread_barrier_destroy(&start);
    rounds = (int)(budget / (probe > 1e-6 ? probe : 1e-6));
    rounds = rounds < min_rounds ? min_rounds : rounds > 500 ? 500 : rounds;
    if (rounds_out)
        *rounds_out = rounds;
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (t = 0; t < threads; t++) {
        if (worker_init(&w[t], m, n, rounds) != 0)
            return -1;
        w[t].start = &start;
    }
    for (t = 0; t < threads; t++)
        pthread_create(&th[t], NULL, worker_main, &w[t]);
    for (t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
    all = calloc((size_t)rounds, sizeof *all);
    for (r = 0; r < rounds; r++) { /* a round ends when its slowest does */
        all[r] = 0;
        for (t = 0; t < threads; t++)
            if (w[t].times[r] > all[r])
                all[r] = w[t].times[r];
    }
    med = median(all, rounds);
    if (cpu) { /* sum over workers of each one's median thread CPU time */
        *cpu = 0;
        for (t = 0; t < threads; t++)
            *cpu += median(w[t].cpu, rounds);
    }
    free(all);
    for (t = 0; t < threads; t++)
        worker_free(&w[t]);
    pthread_barrier_destroy(&start);
    return med;
}

static td_tinynet *model_of(td_tinynet **cache, char v, td_error *err)
{
    char name[16];
    td_tn_arch a;
    if (v < 'a' || v > 'e') {
        td_error_set(err, TD_EINVAL, "unknown variant '%c' (a..e)", v);
        return NULL;
    }
    if (cache[v - 'a'])
        return cache[v - 'a'];
    snprintf(name, sizeof name, "tinynet_%c", v);
    if (td_tn_arch_preset(&a, name, 1000, err) != TD_OK ||
        td_tinynet_new(&cache[v - 'a'], &a, err) != TD_OK)
        return NULL;
    init_weights(cache[v - 'a']);
    return cache[v - 'a'];
}

static int serve(void)
{
    td_tinynet *cache[5] = {0};
    char line[256];
    int i;
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        char v;
        int n, threads, min_rounds, rounds = 0;
        double budget, wall, cpu = 0;
        td_error err;
        td_tinynet *m;
        if (sscanf(line, " %c %d %d %lf %d", &v, &n, &threads, &budget,
                   &min_rounds) != 5 ||
            n < 1 || threads < 1 || threads > 2 || n % threads ||
            min_rounds < 1) {
            printf("error bad request (VARIANT BATCH THREADS SECONDS "
                   "MIN_ROUNDS; THREADS 1 or 2 dividing BATCH)\n");
            continue;
        }
        if (!(m = model_of(cache, v, &err))) {
            printf("error %s\n", err.msg);
            continue;
        }
        wall = measure(m, n / threads, threads, budget, min_rounds, &cpu,
                       &rounds);
        if (wall < 0)
            printf("error forward failed or out of memory\n");
        else
            printf("ok %.4f %.4f %d\n", wall * 1e3, cpu * 1e3, rounds);
    }
    for (i = 0; i < 5; i++)
        td_tinynet_free(cache[i]);
    return 0;
}

int main(int argc, char **argv)
{
    const char *variants = argc > 1 ? argv[1] : "abcde";
    double budget = argc > 2 ? atof(argv[2]) : 0.5;
    const char *v;
    td_blas_set_threads(1);
    if (argc > 1 && strcmp(argv[1], "--serve") == 0)
        return serve();
    if (argc > 1 && strcmp(argv[1], "--save") == 0) {
        td_tinynet *cache[5] = {0};
        td_error err;
        td_tinynet *m;
        int i, rc = 0;
        if (argc != 4 || strlen(argv[2]) != 1) {
            fprintf(stderr, "usage: tinynet_bench --save a..e PATH\n");
            return 2;
        }
        if (!(m = model_of(cache, argv[2][0], &err)) ||
            td_tinynet_save(m, argv[3], &err) != TD_OK) {
            fprintf(stderr, "tinynet_bench: %s\n", err.msg);
            rc = 1;
        }
        for (i = 0; i < 5; i++)
            td_tinynet_free(cache[i]);
        return rc;
    }
    printf("TinyNet forward, random weights, 1000 classes, OpenBLAS 1 thread "
           "per worker; medians\n");
    printf("%-9s %4s %8s | %9s %7s %7s | %9s %7s | %9s %9s %7s\n",
           "variant", "res", "MMACs", "b1/1t ms", "GFLOP/s", "cpu ms",
           "b16/1t ms", "GFLOP/s", "b32/2t ms", "img/s", "GFLOP/s");
    for (v = variants; *v; v++) {
        char name[16];
        td_tn_arch a;
        td_tn_counts c;
        td_tinynet *m;
        td_error err;
        double t1, t1cpu, t16, t32, gf;
        snprintf(name, sizeof name, "tinynet_%c", *v);
        if (td_tn_arch_preset(&a, name, 1000, &err) != TD_OK ||
            td_tinynet_new(&m, &a, &err) != TD_OK) {
            fprintf(stderr, "%s: %s\n", name, err.msg);
            return 1;
        }
        init_weights(m);
        td_tn_arch_count(&a, a.resolution, a.resolution, &c);
        gf = 2.0 * (double)c.macs / 1e9;
        t1 = measure(m, 1, 1, budget, 5, &t1cpu, NULL);
        t16 = measure(m, 16, 1, budget, 5, NULL, NULL);
        t32 = measure(m, 32, 2, budget, 5, NULL, NULL);
        if (t1 < 0 || t16 < 0 || t32 < 0) {
            fprintf(stderr, "%s: out of memory\n", name);
            return 1;
        }
        printf("%-9s %4d %8.2f | %9.3f %7.1f %7.3f | %9.2f %7.1f | %9.1f "
               "%9.1f %7.1f\n",
               name, a.resolution, (double)c.macs / 1e6, t1 * 1e3, gf / t1,
               t1cpu * 1e3, t16 * 1e3, 16 * gf / t16, t32 * 1e3, 64 / t32,
               64 * gf / t32);
        fflush(stdout);
        td_tinynet_free(m);
    }
    return 0;
}
