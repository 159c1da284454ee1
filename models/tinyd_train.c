/* tinyd-train: train a TinyNet or a binary network (--bnn, --preset
 * bnn_fmnist, --arch-json; td_bnn_train.h) on Fashion-MNIST (or MNIST) with
 * SAF, MESA, SAM or plain SGD/AdamW, and write the model file tinyd serves.
 * `tinyd-train eval MODEL` measures either kind of file; `tinyd-train info
 * MODEL` prints a binary model's MST statistics.
 *
 * One process, T worker threads (default 2): each step splits the batch
 * into T contiguous parts, every thread runs forward and backward on its
 * part into its own gradient buffer, and the main thread sums the buffers
 * in thread order and applies the optimiser. BatchNorm statistics are
 * per part (as data-parallel training without SyncBN), so results depend
 * on the thread count but never on timing: for a fixed seed and --threads
 * two runs write identical bytes. Augmentation randomness is drawn per
 * (seed, epoch, sample), the shuffle per (seed, epoch), so --resume from a
 * checkpoint continues exactly where an uninterrupted run would be.
 *
 * docs/TRAINING.md describes the flags, the optimisers and the files. */
#include "config.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "td_arena.h"
#include "td_bnn_model.h"
#include "td_bnn_train.h"
#include "td_file.h"
#include "td_idx.h"
#include "td_optim.h"
#include "td_rng.h"
#include "td_safetensors.h"
#include "td_scaling.h"
#include "td_sharpness.h"
#include "td_tinynet_arch.h"
#include "td_tinynet_train.h"
#include "td_train_layers.h"

#define MAX_THREADS 8
#define CLASSES 10
#define PATH_LEN 1024

/* ------------------------------------------------------------ config */

typedef struct config {
    char preset[32];
    double r, d, w, flops;
    int res;
    char opt[8];          /* saf | sgd | sam | mesa */
    char base[8];         /* sgd | adamw: the update rule under all four */
    int epochs, batch, threads;
    double lr, min_lr, wd, momentum, smoothing, warmup;
    int nesterov;
    uint64_t seed;
    char out[PATH_LEN], report[PATH_LEN], checkpoint[PATH_LEN];
    char data[PATH_LEN];
    int resume, quiet;
    double rho;                          /* SAM */
    double saf_tau, saf_lambda;          /* SAF and MESA */
    int saf_minus, saf_start;            /* E~, E_start */
    double mesa_decay, mesa_lambda;
    int pad, flip;
    int train_limit, test_limit;
    double bn_momentum;
    int stop_after;       /* testing aid: exit 3 after N epochs, as if killed */
    char scaling[12];     /* --flops rule: tiny | compound */
    int base_res;         /* resolution at r = 1 for --flops (224) */
    int sharp_n;          /* images for the per-epoch sharpness (0: off) */
    double sharp_rho;     /* its radius (SAF Fig. 4b: 0.05) */
    /* binary networks */
    int bnn;
    char arch_json[4096]; /* JSON text, or empty for the preset */
    int bnn_step1;        /* epochs of ReActNet step 1; -1: epochs / 3 */
    double mst_lambda;
    int mst_words;        /* the word-group variant of the regulariser */
    double mst_tie;       /* word tying (ours): fraction of each child's
                             words tied to its parent at the end of the
                             ramp; 0 off */
    double mst_tie_ramp;  /* the fraction of the run over which it grows */
    int mst_tie_every;    /* re-select the ties every N steps; 0: 8 times
                             per epoch */
    char init[PATH_LEN];  /* checkpoint whose weights start the run */
    int base_given, out_given;
} config;

static void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->opt, sizeof c->opt, "saf");
    snprintf(c->base, sizeof c->base, "sgd");
    c->epochs = 10;
    c->batch = 128;
    c->threads = 2;
    c->lr = -1; /* per base: 0.1 for SGD, 2e-3 for AdamW */
    c->wd = -1; /* per base: 1e-4 for SGD, 0.05 for AdamW */
    c->momentum = 0.9;
    c->nesterov = 1;
    c->smoothing = 0.1;
    c->warmup = 1;
    c->seed = 1;
    snprintf(c->out, sizeof c->out, "tinynet.safetensors");
    snprintf(c->data, sizeof c->data, "/usr/share/datasets/fashion-mnist");
    c->rho = 0.05;
    c->saf_tau = 5;
    c->saf_lambda = -1; /* 0.3 for SAF, 0.8 for MESA (paper §4.1) */
    c->saf_minus = 3;
    c->saf_start = 5;
    c->mesa_decay = 0.9998;
    c->pad = 2;
    c->flip = 1;
    c->bn_momentum = 0.1;
    snprintf(c->scaling, sizeof c->scaling, "tiny");
    c->base_res = 224;
    c->sharp_n = 1024;
    c->sharp_rho = 0.05;
    c->bnn_step1 = -1;
    c->mst_tie_ramp = 0.5;
}

/* The binary presets: "bnn_fmnist" is the shape docs/BNN.md measures,
 * "bnn_small" half its widths (what our CPU budget trains). */
static const char *bnn_preset_json(const char *name)
{
    if (!strcmp(name, "bnn_fmnist"))
        return "{\"in_ch\":1,\"in_h\":28,\"in_w\":28,"
               "\"stem\":{\"cout\":32,\"k\":3,\"stride\":1,\"pad\":1},"
               "\"blocks\":[{\"cout\":64,\"k\":3,\"stride\":2,\"pad\":1},"
               "{\"cout\":64,\"k\":3,\"stride\":1,\"pad\":1},"
               "{\"cout\":128,\"k\":3,\"stride\":2,\"pad\":1},"
               "{\"cout\":128,\"k\":3,\"stride\":1,\"pad\":1}],"
               "\"classes\":10}";
    if (!strcmp(name, "bnn_small"))
        return "{\"in_ch\":1,\"in_h\":28,\"in_w\":28,"
               "\"stem\":{\"cout\":16,\"k\":3,\"stride\":1,\"pad\":1},"
               "\"blocks\":[{\"cout\":32,\"k\":3,\"stride\":2,\"pad\":1},"
               "{\"cout\":32,\"k\":3,\"stride\":1,\"pad\":1},"
               "{\"cout\":64,\"k\":3,\"stride\":2,\"pad\":1},"
               "{\"cout\":64,\"k\":3,\"stride\":1,\"pad\":1}],"
               "\"classes\":10}";
    return NULL;
}

static int parse_int(const char *v, int lo, int hi, int *out)
{
    char *end;
    long x;
    errno = 0;
    x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return -1;
    *out = (int)x;
    return 0;
}

static int parse_num(const char *v, double lo, double hi, double *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !(x >= lo && x <= hi))
        return -1;
    *out = x;
    return 0;
}

/* "24M", "1.5G", "300000" */
static int parse_flops(const char *v, double *out)
{
    char *end;
    double x = strtod(v, &end), mul = 1;
    if (end == v)
        return -1;
    if (*end == 'k' || *end == 'K')
        mul = 1e3, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1e6, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1e9, end++;
    if (*end || !(x > 0))
        return -1;
    *out = x * mul;
    return 0;
}

static int copy_str(char *dst, size_t len, const char *v)
{
    if (strlen(v) >= len)
        return -1;
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int load_config_file(config *c, const char *path, td_error *err);

/* Apply one setting; key without the leading "--". Returns 0, or -1 with
 * err filled. has_value: whether v is meaningful (flags like --resume). */
static int apply(config *c, const char *key, const char *v, td_error *err)
{
    int bad = 0;
    if (!strcmp(key, "preset")) {
        bad = copy_str(c->preset, sizeof c->preset, v);
        if (!bad && bnn_preset_json(v))
            c->bnn = 1;
    } else if (!strcmp(key, "bnn"))
        bad = parse_int(v, 0, 1, &c->bnn);
    else if (!strcmp(key, "arch-json")) {
        /* inline JSON, or a file holding it */
        if (v[0] == '{')
            bad = copy_str(c->arch_json, sizeof c->arch_json, v);
        else {
            char *text;
            size_t len;
            if (td_file_read(v, sizeof c->arch_json - 1, &text, &len, err) !=
                TD_OK) {
                td_error_prefix(err, "--arch-json");
                return -1;
            }
            bad = copy_str(c->arch_json, sizeof c->arch_json, text);
            free(text);
        }
        if (!bad)
            c->bnn = 1;
    } else if (!strcmp(key, "bnn-step1"))
        bad = parse_int(v, 0, 100000, &c->bnn_step1);
    else if (!strcmp(key, "mst-lambda")) {
        bad = parse_num(v, -1e30, 1e30, &c->mst_lambda);
        if (!bad && c->mst_lambda < 0) {
            td_error_set(err, TD_EINVAL,
                         "--mst-lambda %s: must be >= 0 (0 turns the MST "
                         "regulariser off)",
                         v);
            return -1;
        }
    } else if (!strcmp(key, "mst-words"))
        bad = parse_int(v, 0, 1, &c->mst_words);
    else if (!strcmp(key, "mst-tie"))
        bad = parse_num(v, 0, 1, &c->mst_tie);
    else if (!strcmp(key, "mst-tie-ramp"))
        bad = parse_num(v, 0, 1, &c->mst_tie_ramp);
    else if (!strcmp(key, "mst-tie-every"))
        bad = parse_int(v, 0, 1000000, &c->mst_tie_every);
    else if (!strcmp(key, "init"))
        bad = copy_str(c->init, sizeof c->init, v);
    else if (!strcmp(key, "r"))
        bad = parse_num(v, 0.01, 4, &c->r);
    else if (!strcmp(key, "d"))
        bad = parse_num(v, 0.01, 4, &c->d);
    else if (!strcmp(key, "w"))
        bad = parse_num(v, 0.01, 4, &c->w);
    else if (!strcmp(key, "flops"))
        bad = parse_flops(v, &c->flops);
    else if (!strcmp(key, "res"))
        bad = parse_int(v, 8, 1024, &c->res);
    else if (!strcmp(key, "opt")) {
        bad = strcmp(v, "saf") && strcmp(v, "sgd") && strcmp(v, "sam") &&
              strcmp(v, "mesa");
        if (!bad)
            copy_str(c->opt, sizeof c->opt, v);
    } else if (!strcmp(key, "base")) {
        bad = strcmp(v, "sgd") && strcmp(v, "adamw");
        if (!bad)
            copy_str(c->base, sizeof c->base, v);
        c->base_given = 1;
    } else if (!strcmp(key, "epochs"))
        bad = parse_int(v, 1, 100000, &c->epochs);
    else if (!strcmp(key, "batch"))
        bad = parse_int(v, 1, 65536, &c->batch);
    else if (!strcmp(key, "threads"))
        bad = parse_int(v, 1, MAX_THREADS, &c->threads);
    else if (!strcmp(key, "lr"))
        bad = parse_num(v, 0, 1e30, &c->lr);
    else if (!strcmp(key, "min-lr"))
        bad = parse_num(v, 0, 100, &c->min_lr);
    else if (!strcmp(key, "wd"))
        bad = parse_num(v, 0, 10, &c->wd);
    else if (!strcmp(key, "momentum"))
        bad = parse_num(v, 0, 0.9999, &c->momentum);
    else if (!strcmp(key, "nesterov"))
        bad = parse_int(v, 0, 1, &c->nesterov);
    else if (!strcmp(key, "smoothing"))
        bad = parse_num(v, 0, 0.99, &c->smoothing);
    else if (!strcmp(key, "warmup"))
        bad = parse_num(v, 0, 1000, &c->warmup);
    else if (!strcmp(key, "seed")) {
        int s;
        bad = parse_int(v, 0, 2147483647, &s);
        c->seed = (uint64_t)s;
    } else if (!strcmp(key, "out")) {
        bad = copy_str(c->out, sizeof c->out, v);
        c->out_given = 1;
    } else if (!strcmp(key, "report"))
        bad = copy_str(c->report, sizeof c->report, v);
    else if (!strcmp(key, "checkpoint"))
        bad = copy_str(c->checkpoint, sizeof c->checkpoint, v);
    else if (!strcmp(key, "data"))
        bad = copy_str(c->data, sizeof c->data, v);
    else if (!strcmp(key, "rho"))
        bad = parse_num(v, 0, 10, &c->rho);
    else if (!strcmp(key, "saf-tau"))
        bad = parse_num(v, 0.01, 100, &c->saf_tau);
    else if (!strcmp(key, "saf-lambda"))
        bad = parse_num(v, 0, 100, &c->saf_lambda);
    else if (!strcmp(key, "saf-minus"))
        bad = parse_int(v, 1, 100, &c->saf_minus);
    else if (!strcmp(key, "saf-start"))
        bad = parse_int(v, 0, 100000, &c->saf_start);
    else if (!strcmp(key, "mesa-decay"))
        bad = parse_num(v, 0, 1, &c->mesa_decay);
    else if (!strcmp(key, "pad"))
        bad = parse_int(v, 0, 16, &c->pad);
    else if (!strcmp(key, "flip"))
        bad = parse_int(v, 0, 1, &c->flip);
    else if (!strcmp(key, "train-limit"))
        bad = parse_int(v, 1, 1 << 30, &c->train_limit);
    else if (!strcmp(key, "test-limit"))
        bad = parse_int(v, 1, 1 << 30, &c->test_limit);
    else if (!strcmp(key, "stop-after"))
        bad = parse_int(v, 1, 100000, &c->stop_after);
    else if (!strcmp(key, "bn-momentum"))
        bad = parse_num(v, 0, 1, &c->bn_momentum);
    else if (!strcmp(key, "resume"))
        bad = parse_int(v, 0, 1, &c->resume);
    else if (!strcmp(key, "quiet"))
        bad = parse_int(v, 0, 1, &c->quiet);
    else if (!strcmp(key, "config"))
        return load_config_file(c, v, err);
    else if (!strcmp(key, "scaling")) {
        bad = strcmp(v, "tiny") && strcmp(v, "compound");
        if (!bad)
            copy_str(c->scaling, sizeof c->scaling, v);
    } else if (!strcmp(key, "base-res"))
        bad = parse_int(v, 8, 1024, &c->base_res);
    else if (!strcmp(key, "sharpness"))
        bad = parse_int(v, 0, 1 << 30, &c->sharp_n);
    else if (!strcmp(key, "sharpness-rho"))
        bad = parse_num(v, 0, 10, &c->sharp_rho);
    else {
        td_error_set(err, TD_EINVAL, "unknown option --%s", key);
        return -1;
    }
    if (bad) {
        td_error_set(err, TD_EINVAL, "--%s %s: bad value", key, v);
        return -1;
    }
    return 0;
}

static int config_depth;

/* key = value lines; '#' starts a comment; boolean flags take 0/1. */
static int load_config_file(config *c, const char *path, td_error *err)
{
    char *text, *line, *save = NULL;
    size_t len;
    int lineno = 0, rc = 0;
    if (config_depth > 4) {
        td_error_set(err, TD_EINVAL, "%s: config files nest too deep", path);
        return -1;
    }
    if (td_file_read(path, 1 << 20, &text, &len, err) != TD_OK)
        return -1;
    config_depth++;
    for (line = strtok_r(text, "\n", &save); line && !rc;
         line = strtok_r(NULL, "\n", &save)) {
        char *hash = strchr(line, '#'), *eq, *k, *v, *e;
        lineno++;
        if (hash)
            *hash = 0;
        for (k = line; *k == ' ' || *k == '\t'; k++)
            ;
        if (!*k || *k == '\r')
            continue;
        eq = strchr(k, '=');
        if (!eq) {
            td_error_set(err, TD_EINVAL, "%s:%d: expected key = value", path,
                         lineno);
            rc = -1;
            break;
        }
        for (e = eq; e > k && (e[-1] == ' ' || e[-1] == '\t'); e--)
            ;
        *e = 0;
        for (v = eq + 1; *v == ' ' || *v == '\t'; v++)
            ;
        for (e = v + strlen(v); e > v && (e[-1] == ' ' || e[-1] == '\t' ||
                                          e[-1] == '\r');
             e--)
            ;
        *e = 0;
        if (!strncmp(k, "--", 2))
            k += 2;
        if (apply(c, k, v, err)) {
            td_error_prefix(err, "%s:%d", path, lineno);
            rc = -1;
        }
    }
    config_depth--;
    free(text);
    return rc;
}

/* ------------------------------------------------------------ training */

typedef struct trainer trainer;

typedef struct worker {
    trainer *tr;
    int t;
    td_tnt_ws ws;
    td_bnt_ws bws;       /* the binary network's, with --bnn */
    float *x;            /* (part, res, res, 1) inputs of this step */
    float *dlogits;      /* (part, classes) */
    float *teacher;      /* (part, classes) MESA teacher logits */
    float *past;         /* (part, classes) SAF logits from E~ epochs ago */
    uint8_t *lab;        /* (part) labels */
    int i0, i1;          /* part of the batch */
    /* results of the last pass */
    double loss, kl;
    int correct;
} worker;

struct trainer {
    config cfg;
    td_tn_arch arch;
    td_tnt_model m;
    /* the network, whichever it is: P, S and decay point into m or bm */
    int bnn, res, classes;
    td_bnt_model bm;
    float *P, *S;
    uint8_t *decay;
    size_t np, ns;
    double reg_sum;      /* MST regulariser summed over this epoch's steps */
    td_mst_stats last_total; /* of the last exported binary model */
    double export_acc;   /* its test accuracy (td_bnn_forward, plan) */
    td_dataset train, test;
    float mean, std;
    int nt;
    worker w[MAX_THREADS];
    /* optimiser state */
    float *buf, *buf2;   /* momentum or AdamW m, v (n_params) */
    float *sam_e;        /* SAM perturbation */
    float *theta_eval;   /* params the pass uses (live or perturbed) */
    float *ema_p, *ema_s;/* MESA teacher */
    float *saf;          /* (E~+1, N, classes) logit ring */
    int *order;          /* (N) shuffled indices of this epoch */
    int *batch_idx;      /* (batch) dataset indices of this step */
    long step, steps_per_epoch, total_steps;
    int epoch;           /* 0-based, the epoch being trained */
    /* pass settings */
    const float *pass_params;
    int pass_train, pass_record, pass_kl, pass_teacher, pass_backward;
    float lr;
    json_t *history;     /* array of per-epoch objects */
    float *sharp_x;      /* (sharp_n, res, res, 1) clean training views */
    int sharp_n;
    double phi;          /* compound scaling's phi under --flops */
};

/* ReActNet's step 2 (binary weights) from epoch bnn_step1 on. */
static int bnn_binw(const trainer *tr)
{
    return tr->epoch >= tr->cfg.bnn_step1;
}

static void net_forward(trainer *tr, worker *w, const float *P,
                        const float *S, int n, int train)
{
    if (tr->bnn)
        td_bnt_forward(&tr->bm, &w->bws, P, S, w->x, n, train, bnn_binw(tr));
    else
        td_tnt_forward(&tr->m, &w->ws, P, S, w->x, n, train);
}

static float *net_logits(const trainer *tr, worker *w)
{
    return tr->bnn ? w->bws.logits : w->ws.logits;
}

static float *net_grad(const trainer *tr, worker *w)
{
    return tr->bnn ? w->bws.grad : w->ws.grad;
}

static int saf_slot(const trainer *tr, int epoch)
{
    return epoch % (tr->cfg.saf_minus + 1);
}

/* Fill w->x with the augmented views of this thread's samples. */
static void make_inputs(worker *w, int augment)
{
    trainer *tr = w->tr;
    int res = tr->res;
    for (int i = w->i0; i < w->i1; i++) {
        int idx = tr->batch_idx[i], dx = 0, dy = 0, flip = 0;
        if (augment) {
            uint64_t s = td_rng_mix(tr->cfg.seed, (uint64_t)tr->epoch + 1,
                                    (uint64_t)idx);
            int span = 2 * tr->cfg.pad + 1;
            dx = (int)td_rng_below(&s, (uint32_t)span) - tr->cfg.pad;
            dy = (int)td_rng_below(&s, (uint32_t)span) - tr->cfg.pad;
            flip = tr->cfg.flip && (td_rng_next(&s) >> 63);
        }
        td_dataset_view(augment ? &tr->train : &tr->test, idx, dx, dy, flip,
                        res, res, tr->mean, tr->std,
                        w->x + (size_t)(i - w->i0) * res * res);
    }
}

static void *worker_pass(void *arg)
{
    worker *w = arg;
    trainer *tr = w->tr;
    int n = w->i1 - w->i0, k = tr->classes;
    float scale = 1.0f / (float)tr->cfg.batch;
    float *logits = net_logits(tr, w);
    const uint8_t *labels = tr->train.labels;
    uint8_t *lab = w->lab;
    w->loss = w->kl = 0;
    w->correct = 0;
    if (n <= 0)
        return NULL;
    for (int i = 0; i < n; i++)
        lab[i] = labels[tr->batch_idx[w->i0 + i]];
    if (tr->pass_teacher) { /* MESA: EMA model, eval mode, no gradient */
        net_forward(tr, w, tr->ema_p, tr->ema_s, n, 0);
        memcpy(w->teacher, logits, (size_t)n * k * sizeof(float));
    }
    net_forward(tr, w, tr->pass_params, tr->S, n, 1);
    w->loss = td_tl_xent(w->dlogits, logits, lab, n, k,
                         (float)tr->cfg.smoothing, scale, &w->correct);
    if (tr->pass_record) { /* SAF: this epoch's logits, by dataset index */
        float *slot = tr->saf + (size_t)saf_slot(tr, tr->epoch) *
                                    tr->train.n * k;
        for (int i = 0; i < n; i++)
            memcpy(slot + (size_t)tr->batch_idx[w->i0 + i] * k,
                   logits + (size_t)i * k, (size_t)k * sizeof(float));
    }
    if (tr->pass_kl) {
        const float *target = w->teacher;
        if (!strcmp(tr->cfg.opt, "saf")) {
            const float *slot =
                tr->saf + (size_t)saf_slot(tr, tr->epoch - tr->cfg.saf_minus) *
                              tr->train.n * k;
            for (int i = 0; i < n; i++)
                memcpy(w->past + (size_t)i * k,
                       slot + (size_t)tr->batch_idx[w->i0 + i] * k,
                       (size_t)k * sizeof(float));
            target = w->past;
        }
        w->kl = td_tl_kl_distill(w->dlogits, logits, target, n, k,
                                 (float)tr->cfg.saf_tau,
                                 (float)tr->cfg.saf_lambda, scale);
    }
    if (tr->pass_backward) {
        memset(net_grad(tr, w), 0, tr->np * sizeof(float));
        if (tr->bnn)
            td_bnt_backward(&tr->bm, &w->bws, tr->pass_params, w->dlogits);
        else
            td_tnt_backward(&tr->m, &w->ws, tr->pass_params, w->dlogits);
    }
    return NULL;
}

/* Run one pass on every worker; thread 0 runs on the caller. */
static int run_workers(trainer *tr, void *(*fn)(void *))
{
    pthread_t th[MAX_THREADS];
    int started = 0, rc = 0;
    for (int t = 1; t < tr->nt; t++) {
        if (pthread_create(&th[t], NULL, fn, &tr->w[t])) {
            rc = -1;
            break;
        }
        started = t;
    }
    if (rc) { /* run the rest inline: same result, just slower */
        for (int t = started + 1; t < tr->nt; t++)
            fn(&tr->w[t]);
    }
    fn(&tr->w[0]);
    for (int t = 1; t <= started; t++)
        pthread_join(th[t], NULL);
    return 0;
}

static void *worker_inputs(void *arg)
{
    make_inputs(arg, 1);
    return NULL;
}

/* Sum the per-thread gradients into worker 0's buffer, in thread order. */
static float *reduce_grads(trainer *tr)
{
    float *g = net_grad(tr, &tr->w[0]);
    for (int t = 1; t < tr->nt; t++) {
        const float *o = net_grad(tr, &tr->w[t]);
        if (tr->w[t].i1 <= tr->w[t].i0)
            continue;
        for (size_t i = 0; i < tr->np; i++)
            g[i] += o[i];
    }
    return g;
}

/* The first step of the current ReActNet step (binary networks restart the
 * learning-rate schedule and Adam's moments there); 0 for TinyNet. */
static long bnn_stage_start(const trainer *tr)
{
    if (!tr->bnn || !bnn_binw(tr))
        return 0;
    return (long)tr->cfg.bnn_step1 * tr->steps_per_epoch;
}

static long bnn_stage_steps(const trainer *tr)
{
    if (!tr->bnn)
        return tr->total_steps;
    return (long)(bnn_binw(tr) ? tr->cfg.epochs - tr->cfg.bnn_step1
                               : tr->cfg.bnn_step1) *
           tr->steps_per_epoch;
}

static void apply_update(trainer *tr, const float *g)
{
    const config *c = &tr->cfg;
    if (!strcmp(c->base, "adamw")) {
        td_adamw o = {tr->lr, 0.9f, 0.999f, 1e-8f, (float)c->wd};
        td_adamw_step(&o, tr->P, g, tr->buf, tr->buf2, tr->decay, tr->np,
                      tr->step + 1 - bnn_stage_start(tr));
    } else {
        td_sgd o = {tr->lr, (float)c->momentum, (float)c->wd, c->nesterov};
        td_sgd_step(&o, tr->P, g, tr->buf, tr->decay, tr->np);
    }
}

static void update_running(trainer *tr)
{
    td_tnt_ws *ws_list[MAX_THREADS];
    td_bnt_ws *bws_list[MAX_THREADS];
    int k = 0;
    for (int t = 0; t < tr->nt; t++)
        if (tr->w[t].i1 > tr->w[t].i0) {
            ws_list[k] = &tr->w[t].ws;
            bws_list[k++] = &tr->w[t].bws;
        }
    if (tr->bnn)
        td_bnt_update_running(&tr->bm, tr->S, bws_list, k,
                              (float)tr->cfg.bn_momentum);
    else
        td_tnt_update_running(&tr->m, tr->S, ws_list, k,
                              (float)tr->cfg.bn_momentum);
}

/* Word tying's schedule: the fraction of each child's words tied at this
 * step grows linearly from 0 to --mst-tie over the first --mst-tie-ramp of
 * the run's steps, then stays. */
static double tie_fraction(const trainer *tr)
{
    double ramp = tr->cfg.mst_tie_ramp * (double)tr->total_steps, x;
    x = ramp > 0 ? (double)tr->step / ramp : 1.0;
    return tr->cfg.mst_tie * (x < 1 ? x : 1);
}

/* One optimisation step on batch_idx; returns loss sums and correct. */
static void train_step(trainer *tr, double *loss, double *kl, int *correct)
{
    const config *c = &tr->cfg;
    int e1 = tr->epoch + 1; /* 1-based, as the paper counts */
    int saf = !strcmp(c->opt, "saf"), mesa = !strcmp(c->opt, "mesa");
    int sam = !strcmp(c->opt, "sam");
    float *g;
    tr->lr = td_lr_cosine((float)c->lr, (float)c->min_lr,
                          tr->step - bnn_stage_start(tr),
                          (long)(c->warmup * tr->steps_per_epoch),
                          bnn_stage_steps(tr));
    run_workers(tr, worker_inputs);
    tr->pass_params = tr->P;
    tr->pass_train = 1;
    tr->pass_backward = 1;
    tr->pass_record = saf;
    /* SAF: the epoch E~ back must have been recorded (e > E~) and the
     * paper starts the loss after E_start epochs. MESA: after E_start. */
    tr->pass_kl = (saf && e1 > c->saf_start && tr->epoch >= c->saf_minus) ||
                  (mesa && e1 > c->saf_start);
    tr->pass_teacher = mesa && tr->pass_kl;
    run_workers(tr, worker_pass);
    *loss = *kl = 0;
    *correct = 0;
    for (int t = 0; t < tr->nt; t++) {
        *loss += tr->w[t].loss;
        *kl += tr->w[t].kl;
        *correct += tr->w[t].correct;
    }
    update_running(tr);
    g = reduce_grads(tr);
    if (sam) {
        /* ascend to theta + e, take the gradient there with the running
         * statistics left as the first pass set them, come back */
        td_sam_perturb(tr->P, tr->sam_e, g, tr->np, (float)c->rho);
        tr->pass_record = tr->pass_kl = tr->pass_teacher = 0;
        run_workers(tr, worker_pass);
        g = reduce_grads(tr);
        td_sam_restore(tr->P, tr->sam_e, tr->np);
    }
    if (tr->bnn && c->mst_lambda > 0) /* pull children toward parents */
        tr->reg_sum += td_bnt_reg(&tr->bm, tr->P, g, (float)c->mst_lambda,
                                  c->mst_words);
    if (tr->bnn && c->mst_tie > 0) /* a tied word is one shared weight */
        td_bnt_tie_grad(&tr->bm, g);
    apply_update(tr, g);
    if (tr->bnn && c->mst_tie > 0)
        td_bnt_tie_apply(&tr->bm, tr->P);
    if (mesa) {
        td_ema_update(tr->ema_p, tr->P, tr->np, (float)c->mesa_decay);
        td_ema_update(tr->ema_s, tr->S, tr->ns, (float)c->mesa_decay);
    }
    tr->step++;
}

/* ---- evaluation on the test set */

/* The network evaluate() runs: a TinyNet, a trainable binary network, or
 * a binary model file (td_bnn_forward with the MST plans). */
typedef struct eval_net {
    const td_tnt_model *tm;
    const td_bnt_model *bm;
    const float *P, *S;     /* tm or bm's parameters */
    int binw;               /* bm: binary block weights */
    const td_bnn_model *fm;
    int res, classes;
} eval_net;

/* Per-thread state: one of the workspaces, or an arena and logits. */
typedef struct eval_ws {
    td_tnt_ws *tws;
    td_bnt_ws *bws;
    td_arena *arena;
    float *logits;          /* (chunk, classes) for fm */
} eval_ws;

typedef struct eval_job {
    const eval_net *net;
    eval_ws ws;
    const td_dataset *d;
    float mean, std, *x;
    int i0, i1, chunk, correct;
} eval_job;

static void *eval_worker(void *arg)
{
    eval_job *j = arg;
    const eval_net *net = j->net;
    int res = net->res, k = net->classes;
    j->correct = 0;
    for (int s = j->i0; s < j->i1; s += j->chunk) {
        int n = j->i1 - s < j->chunk ? j->i1 - s : j->chunk;
        const float *logits;
        for (int i = 0; i < n; i++)
            td_dataset_view(j->d, s + i, 0, 0, 0, res, res, j->mean, j->std,
                            j->x + (size_t)i * res * res);
        if (net->fm) {
            td_error err = {0};
            if (td_bnn_forward(net->fm, TD_BCONV_PLAN | TD_BNN_AUTO, j->ws.arena, j->x, n,
                               j->ws.logits, &err) != TD_OK) {
                fprintf(stderr, "tinyd-train: %s\n", err.msg);
                j->correct = -1;
                return NULL;
            }
            logits = j->ws.logits;
        } else if (net->bm) {
            td_bnt_forward(net->bm, j->ws.bws, net->P, net->S, j->x, n, 0,
                           net->binw);
            logits = j->ws.bws->logits;
        } else {
            td_tnt_forward(net->tm, j->ws.tws, net->P, net->S, j->x, n, 0);
            logits = j->ws.tws->logits;
        }
        for (int i = 0; i < n; i++) {
            const float *z = logits + (size_t)i * k;
            int arg_max = 0;
            for (int c = 1; c < k; c++)
                if (z[c] > z[arg_max])
                    arg_max = c;
            j->correct += arg_max == j->d->labels[s + i];
        }
    }
    return NULL;
}

/* Accuracy of net on the first n images of d, with nt threads using the
 * given per-thread state (each sized for `chunk` images) and input
 * buffers; -1 when a forward pass failed. */
static double evaluate(const eval_net *net, const td_dataset *d, int n,
                       float mean, float std, int nt, const eval_ws *ws,
                       float **x, int chunk)
{
    eval_job j[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    int correct = 0, created[MAX_THREADS] = {0}, failed = 0;
    for (int t = 0; t < nt; t++) {
        j[t] = (eval_job){net,        ws[t],          d,     mean, std, x[t],
                          n * t / nt, n * (t + 1) / nt, chunk, 0};
    }
    for (int t = 1; t < nt; t++)
        created[t] = !pthread_create(&th[t], NULL, eval_worker, &j[t]);
    for (int t = 1; t < nt; t++)
        if (!created[t])
            eval_worker(&j[t]);
    eval_worker(&j[0]);
    for (int t = 1; t < nt; t++)
        if (created[t])
            pthread_join(th[t], NULL);
    for (int t = 0; t < nt; t++) {
        failed |= j[t].correct < 0;
        correct += j[t].correct;
    }
    if (failed)
        return -1;
    return n ? (double)correct / n : 0;
}

/* ------------------------------------------------------------ files */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (all threads): on a shared machine the
 * wall clock says more about the neighbours than about the trainer. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Parameters and multiply-accumulates per image of the binary network (the
 * binary layers' MACs are XNOR bit-ops at inference). */
static void bnn_counts(const td_bnt_model *m, td_tn_counts *cnt)
{
    memset(cnt, 0, sizeof *cnt);
    cnt->params = (int64_t)m->n_params;
    for (int i = -1; i < m->arch.n_blocks; i++) {
        const td_bnt_layer *l = i < 0 ? &m->stem : &m->blocks[i];
        cnt->macs += (int64_t)l->h_out * l->w_out * l->k * l->k * l->cin *
                     l->cout;
    }
    cnt->macs += (int64_t)m->blocks[m->arch.n_blocks - 1].cout *
                 m->arch.classes;
}

static void net_counts(const trainer *tr, td_tn_counts *cnt)
{
    if (tr->bnn)
        bnn_counts(&tr->bm, cnt);
    else
        td_tn_arch_count(&tr->arch, tr->res, tr->res, cnt);
}

static json_t *config_json(const trainer *tr)
{
    const config *c = &tr->cfg;
    td_tn_counts cnt;
    json_t *o;
    net_counts(tr, &cnt);
    o = json_pack(
        "{s:f, s:f, s:f, s:i, s:s, s:s, s:i, s:i, s:i, s:f, s:f, s:f, s:f, "
        "s:i, s:f, s:f, s:I, s:f, s:f, s:f, s:i, s:i, s:f, s:i, s:i, s:I, "
        "s:I, s:I, s:I, s:s}",
        "r", tr->arch.r, "d", tr->arch.d, "w", tr->arch.w, "resolution",
        tr->res, "opt", c->opt, "base", c->base, "epochs", c->epochs,
        "batch", c->batch, "threads", c->threads, "lr", c->lr, "min_lr",
        c->min_lr, "wd", c->wd, "momentum", c->momentum, "nesterov",
        c->nesterov, "smoothing", c->smoothing, "warmup_epochs", c->warmup,
        "seed", (json_int_t)c->seed, "rho", c->rho, "saf_tau", c->saf_tau,
        "saf_lambda", c->saf_lambda, "saf_minus", c->saf_minus, "saf_start",
        c->saf_start, "mesa_decay", c->mesa_decay, "pad", c->pad, "flip",
        c->flip, "train_images", (json_int_t)tr->train.n, "test_images",
        (json_int_t)tr->test.n, "params", (json_int_t)cnt.params, "macs",
        (json_int_t)cnt.macs, "data", c->data);
    if (o && tr->bnn) {
        char *aj = td_bnn_arch_json(&tr->bm.arch);
        json_error_t je;
        json_object_set_new(o, "bnn_arch", aj ? json_loads(aj, 0, &je)
                                               : json_null());
        free(aj);
        json_object_set_new(o, "bnn_step1", json_integer(c->bnn_step1));
        json_object_set_new(o, "mst_lambda", json_real(c->mst_lambda));
        json_object_set_new(o, "mst_words", json_integer(c->mst_words));
        if (c->mst_tie > 0) {
            json_object_set_new(o, "mst_tie", json_real(c->mst_tie));
            json_object_set_new(o, "mst_tie_ramp", json_real(c->mst_tie_ramp));
            json_object_set_new(o, "mst_tie_every",
                                json_integer(c->mst_tie_every));
        }
        json_object_set_new(o, "init", json_string(c->init));
    }
    return o;
}

/* ---- safexp: sharpness per epoch and the --flops scaling rules
 * (docs/TRAINING.md "The papers' claims at our scale") */

/* --flops: the tiny formula or compound scaling, at --base-res. */
static td_status solve_flops(const config *c, td_tn_arch *a, double *phi,
                             td_error *err)
{
    td_scaling_rule rule;
    if (td_scaling_parse(c->scaling, &rule, err) != TD_OK)
        return TD_EINVAL;
    return td_scaling_for_flops(a, rule, c->flops, c->base_res, CLASSES, phi,
                                err);
}

static void add_scaling_json(json_t *cfg, const trainer *tr)
{
    const config *c = &tr->cfg;
    if (!cfg)
        return;
    if (c->flops > 0) {
        json_object_set_new(cfg, "flops_budget", json_real(c->flops));
        json_object_set_new(cfg, "scaling", json_string(c->scaling));
        json_object_set_new(cfg, "base_res", json_integer(c->base_res));
        json_object_set_new(cfg, "phi", json_real(tr->phi));
    }
    json_object_set_new(cfg, "sharpness_images", json_integer(tr->sharp_n));
    json_object_set_new(cfg, "sharpness_rho", json_real(c->sharp_rho));
}

/* Clean (unaugmented) views of the first n training images, the fixed
 * subset the sharpness is measured on every epoch. */
static float *sharp_views(const td_dataset *d, int n, int res, float mean,
                          float std)
{
    size_t img = (size_t)res * res;
    float *x = malloc((size_t)n * img * sizeof(float));
    if (!x)
        return NULL;
    for (int i = 0; i < n; i++)
        td_dataset_view(d, i, 0, 0, 0, res, res, mean, std, x + i * img);
    return x;
}

static int sharp_prepare(trainer *tr, td_error *err)
{
    int n = tr->cfg.sharp_n < tr->train.n ? tr->cfg.sharp_n : tr->train.n;
    if (n <= 0 || tr->cfg.bnn) /* TinyNet only: td_sharpness drives td_tnt */
        return 0;
    tr->sharp_x = sharp_views(&tr->train, n, tr->m.res, tr->mean, tr->std);
    if (!tr->sharp_x) {
        td_error_set(err, TD_ENOMEM, "sharpness images");
        return -1;
    }
    tr->sharp_n = n;
    return 0;
}

/* Measure R after an epoch (outside the timed part) into its report
 * object. Chunks of one worker's part: the ghost-batch size of training. */
static int sharp_epoch(trainer *tr, json_t *ep, td_error *err)
{
    td_sharpness s;
    double t0 = now_s();
    if (!tr->sharp_n || !ep)
        return 0;
    if (td_sharpness_measure(&tr->m, &tr->w[0].ws, tr->sharp_x,
                             tr->train.labels, tr->sharp_n,
                             tr->w[0].ws.max_batch, tr->cfg.sharp_rho, &s,
                             err) != TD_OK)
        return -1;
    json_object_set_new(ep, "sharpness", json_real(s.sharpness));
    json_object_set_new(ep, "sharpness_loss", json_real(s.loss));
    json_object_set_new(ep, "sharpness_grad_norm", json_real(s.grad_norm));
    json_object_set_new(ep, "sharpness_seconds", json_real(now_s() - t0));
    if (!tr->cfg.quiet)
        fprintf(stderr,
                "  sharpness R = %.5f (L %.4f, |g| %.4f, rho %g, %d images)\n",
                s.sharpness, s.loss, s.grad_norm, s.rho, s.n);
    return 0;
}

static void dataset_truncate(td_dataset *d, int limit);

/* tinyd-train sharpness MODEL: the same measure on a saved model. */
static int sharpness_main(const char *path, const config *c)
{
    td_tnt_model m;
    td_dataset train;
    td_tnt_ws ws;
    td_error err = {0};
    td_sharpness s;
    float mean, std, *x = NULL;
    int chunk = (c->batch + c->threads - 1) / c->threads, n, rc = 1;
    memset(&ws, 0, sizeof ws);
    if (td_tnt_load(&m, path, &mean, &std, &err) != TD_OK) {
        fprintf(stderr, "tinyd-train sharpness: %s\n", err.msg);
        return 1;
    }
    if (td_dataset_load(&train, c->data, "train", CLASSES, &err) != TD_OK) {
        fprintf(stderr, "tinyd-train sharpness: %s\n", err.msg);
        td_tnt_free(&m);
        return 1;
    }
    dataset_truncate(&train, c->train_limit);
    n = c->sharp_n < train.n ? c->sharp_n : train.n;
    openblas_set_num_threads(1);
    if (n <= 0)
        td_error_set(&err, TD_EINVAL, "--sharpness %d: no images", n);
    else if (!(x = sharp_views(&train, n, m.res, mean, std)))
        td_error_set(&err, TD_ENOMEM, "sharpness images");
    if (!x || td_tnt_ws_init(&ws, &m, chunk, &err) != TD_OK ||
        td_sharpness_measure(&m, &ws, x, train.labels, n, chunk, c->sharp_rho,
                             &s, &err) != TD_OK) {
        fprintf(stderr, "tinyd-train sharpness: %s\n", err.msg);
        goto out;
    }
    printf("{\"model\": \"%s\", \"sharpness\": %.6g, \"loss\": %.6g, "
           "\"loss_perturbed\": %.6g, \"grad_norm\": %.6g, \"rho\": %g, "
           "\"images\": %d, \"chunk\": %d}\n",
           path, s.sharpness, s.loss, s.loss_perturbed, s.grad_norm, s.rho,
           s.n, chunk);
    rc = 0;
out:
    td_tnt_ws_free(&ws);
    free(x);
    td_dataset_free(&train);
    td_tnt_free(&m);
    return rc;
}

static int build_arch(trainer *tr, td_error *err);

/* tinyd-train arch [model flags]: what would be trained, without data. */
static int arch_main(const config *c)
{
    trainer *tr = calloc(1, sizeof *tr);
    td_error err = {0};
    td_tn_counts cnt;
    if (!tr)
        return 1;
    tr->cfg = *c;
    if (build_arch(tr, &err)) {
        fprintf(stderr, "tinyd-train arch: %s\n", err.msg);
        free(tr);
        return 2;
    }
    td_tn_arch_count(&tr->arch, tr->cfg.res, tr->cfg.res, &cnt);
    printf("{\"r\": %g, \"d\": %g, \"w\": %g, \"resolution\": %d, "
           "\"blocks\": %d, \"repeats\": [%d,%d,%d,%d,%d,%d,%d], "
           "\"macs\": %lld, \"params\": %lld",
           tr->arch.r, tr->arch.d, tr->arch.w, tr->cfg.res, tr->arch.n_blocks,
           tr->arch.stage_repeats[0], tr->arch.stage_repeats[1],
           tr->arch.stage_repeats[2], tr->arch.stage_repeats[3],
           tr->arch.stage_repeats[4], tr->arch.stage_repeats[5],
           tr->arch.stage_repeats[6], (long long)cnt.macs,
           (long long)cnt.params);
    if (c->flops > 0)
        printf(", \"scaling\": \"%s\", \"base_res\": %d, \"phi\": %g, "
               "\"budget\": %.0f, \"budget_used\": %.4f",
               c->scaling, c->base_res, tr->phi, c->flops,
               (double)cnt.macs / c->flops);
    printf("}\n");
    free(tr);
    return 0;
}

static int write_report(trainer *tr, td_error *err)
{
    json_t *cfg = config_json(tr);
    json_t *root;
    add_scaling_json(cfg, tr);
    root = json_pack("{s:o, s:O}", "config", cfg, "epochs", tr->history);
    char *txt = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    int rc = 0;
    json_decref(root);
    if (!txt) {
        td_error_set(err, TD_ENOMEM, "report");
        return -1;
    }
    if (td_file_write_atomic(tr->cfg.report, txt, strlen(txt), err) != TD_OK)
        rc = -1;
    free(txt);
    return rc;
}

/* The fields a checkpoint must agree on to be resumed. */
static void fingerprint(const trainer *tr, char *buf, size_t len)
{
    const config *c = &tr->cfg;
    if (tr->bnn) {
        char *aj = td_bnn_arch_json(&tr->bm.arch);
        snprintf(buf, len,
                 "bnn=%s step1=%d mst_lambda=%.10g/%d opt=%s base=%s epochs=%d "
                 "batch=%d threads=%d lr=%.10g wd=%.10g seed=%llu n=%d "
                 "init=%s",
                 aj ? aj : "?", c->bnn_step1, c->mst_lambda, c->mst_words,
                 c->opt, c->base,
                 c->epochs, c->batch, c->threads, c->lr, c->wd,
                 (unsigned long long)c->seed, tr->train.n, c->init);
        free(aj);
        if (c->mst_tie > 0) {
            size_t at = strlen(buf);
            snprintf(buf + at, len - at, " tie=%.10g/%.10g/%d", c->mst_tie,
                     c->mst_tie_ramp, c->mst_tie_every);
        }
        return;
    }
    snprintf(buf, len,
             "r=%.10g d=%.10g w=%.10g res=%d opt=%s base=%s epochs=%d "
             "batch=%d threads=%d lr=%.10g wd=%.10g seed=%llu n=%d",
             tr->arch.r, tr->arch.d, tr->arch.w, tr->res, c->opt, c->base,
             c->epochs, c->batch, c->threads, c->lr, c->wd,
             (unsigned long long)c->seed, tr->train.n);
}

static int save_checkpoint(trainer *tr, td_error *err)
{
    td_st_writer *w = td_st_writer_new();
    char fp[2048], num[32], *hist;
    int64_t sp[1] = {(int64_t)tr->np}, ss[1] = {(int64_t)tr->ns};
    td_status st = w ? TD_OK : td_error_set(err, TD_ENOMEM, "checkpoint");
    fingerprint(tr, fp, sizeof fp);
    if (st == TD_OK)
        st = td_st_writer_add(w, "params", TD_DT_F32, 1, sp, tr->P, err);
    if (st == TD_OK)
        st = td_st_writer_add(w, "stats", TD_DT_F32, 1, ss, tr->S, err);
    if (st == TD_OK)
        st = td_st_writer_add(w, "opt.buf", TD_DT_F32, 1, sp, tr->buf, err);
    if (st == TD_OK && tr->buf2)
        st = td_st_writer_add(w, "opt.buf2", TD_DT_F32, 1, sp, tr->buf2, err);
    if (st == TD_OK && tr->ema_p)
        st = td_st_writer_add(w, "ema.params", TD_DT_F32, 1, sp, tr->ema_p,
                              err);
    if (st == TD_OK && tr->ema_s)
        st = td_st_writer_add(w, "ema.stats", TD_DT_F32, 1, ss, tr->ema_s,
                              err);
    if (st == TD_OK && tr->saf) {
        int64_t sh[3] = {tr->cfg.saf_minus + 1, tr->train.n,
                         tr->classes};
        st = td_st_writer_add(w, "saf.logits", TD_DT_F32, 3, sh, tr->saf,
                              err);
    }
    if (st == TD_OK)
        st = td_st_writer_meta(w, "kind", "tinyd-train-checkpoint", err);
    if (st == TD_OK)
        st = td_st_writer_meta(w, "fingerprint", fp, err);
    if (st == TD_OK && tr->bnn) { /* what --init checks */
        char *aj = td_bnn_arch_json(&tr->bm.arch);
        st = aj ? td_st_writer_meta(w, "bnn_arch", aj, err)
                : td_error_set(err, TD_ENOMEM, "checkpoint");
        free(aj);
    }
    snprintf(num, sizeof num, "%d", tr->epoch + 1);
    if (st == TD_OK)
        st = td_st_writer_meta(w, "epochs_done", num, err);
    snprintf(num, sizeof num, "%ld", tr->step);
    if (st == TD_OK)
        st = td_st_writer_meta(w, "step", num, err);
    hist = json_dumps(tr->history, JSON_COMPACT);
    if (st == TD_OK)
        st = hist ? td_st_writer_meta(w, "history", hist, err)
                  : td_error_set(err, TD_ENOMEM, "history");
    free(hist);
    if (st == TD_OK)
        st = td_st_writer_write(w, tr->cfg.checkpoint, err);
    td_st_writer_free(w);
    return st == TD_OK ? 0 : -1;
}

static int load_into(const td_st_file *f, const char *name, float *dst,
                     size_t n, td_error *err)
{
    const td_st_tensor *t;
    if (td_st_expect(f, name, TD_DT_F32, -1, NULL, &t, err) != TD_OK)
        return -1;
    if (t->numel != n) {
        td_error_set(err, TD_EFORMAT, "tensor %s: %zu values, expected %zu",
                     name, t->numel, n);
        return -1;
    }
    memcpy(dst, t->data, n * sizeof(float));
    return 0;
}

/* Returns the number of epochs done, or -1. */
static int load_checkpoint(trainer *tr, td_error *err)
{
    td_st_file f;
    char fp[2048];
    const char *v;
    int done = -1;
    json_error_t je;
    if (td_st_open(&f, tr->cfg.checkpoint, err) != TD_OK)
        return -1;
    fingerprint(tr, fp, sizeof fp);
    if (td_st_expect_meta(&f, "kind", "tinyd-train-checkpoint", err) != TD_OK)
        goto out;
    v = td_st_meta_get(&f, "fingerprint");
    if (!v || strcmp(v, fp)) {
        td_error_set(err, TD_ECONFLICT,
                     "checkpoint is for another run: it has \"%s\", this run "
                     "is \"%s\"",
                     v ? v : "(none)", fp);
        goto out;
    }
    if (load_into(&f, "params", tr->P, tr->np, err) ||
        load_into(&f, "stats", tr->S, tr->ns, err) ||
        load_into(&f, "opt.buf", tr->buf, tr->np, err) ||
        (tr->buf2 && load_into(&f, "opt.buf2", tr->buf2, tr->np, err)) ||
        (tr->ema_p && load_into(&f, "ema.params", tr->ema_p, tr->np, err)) ||
        (tr->ema_s && load_into(&f, "ema.stats", tr->ema_s, tr->ns, err)) ||
        (tr->saf && load_into(&f, "saf.logits", tr->saf,
                              (size_t)(tr->cfg.saf_minus + 1) * tr->train.n *
                                  tr->classes,
                              err)))
        goto out;
    v = td_st_meta_get(&f, "step");
    tr->step = v ? strtol(v, NULL, 10) : 0;
    v = td_st_meta_get(&f, "history");
    json_decref(tr->history);
    tr->history = v ? json_loads(v, 0, &je) : json_array();
    if (!tr->history)
        tr->history = json_array();
    v = td_st_meta_get(&f, "epochs_done");
    done = v ? atoi(v) : -1;
    if (done < 0 || done > tr->cfg.epochs) {
        td_error_set(err, TD_EFORMAT, "checkpoint: bad epochs_done");
        done = -1;
    }
out:
    td_st_close(&f);
    return done;
}

/* --init: the weights and running statistics of another binary run's
 * checkpoint (same arch), e.g. to fine-tune a trained network with the MST
 * regulariser. Optimiser state starts fresh. */
static int load_init(trainer *tr, td_error *err)
{
    td_st_file f;
    const char *v;
    char *aj;
    int rc = -1;
    if (td_st_open(&f, tr->cfg.init, err) != TD_OK) {
        td_error_prefix(err, "--init");
        return -1;
    }
    aj = td_bnn_arch_json(&tr->bm.arch);
    v = td_st_meta_get(&f, "bnn_arch");
    if (td_st_expect_meta(&f, "kind", "tinyd-train-checkpoint", err) !=
        TD_OK) {
        td_error_prefix(err, "--init %s", tr->cfg.init);
        goto out;
    }
    if (!v || !aj || strcmp(v, aj)) {
        td_error_set(err, TD_ECONFLICT,
                     "--init %s: a checkpoint of another architecture (%s); "
                     "this run is %s",
                     tr->cfg.init, v ? v : "not a binary network",
                     aj ? aj : "?");
        goto out;
    }
    if (load_into(&f, "params", tr->P, tr->np, err) ||
        load_into(&f, "stats", tr->S, tr->ns, err)) {
        td_error_prefix(err, "--init %s", tr->cfg.init);
        goto out;
    }
    rc = 0;
out:
    free(aj);
    td_st_close(&f);
    return rc;
}

/* Export the binary network (td_bnn_export: sign, BatchNorm folded,
 * MST plans and statistics), then load the file back and measure it with
 * the inference engine, so the report shows both accuracies. */
static int save_bnn(trainer *tr, td_error *err)
{
    td_bnn_latent lat;
    td_bnn_model *fm = NULL;
    td_arena ar[MAX_THREADS];
    float *x[MAX_THREADS] = {0}, *lg[MAX_THREADS] = {0};
    eval_ws ews[MAX_THREADS];
    eval_net net;
    int chunk = 64, rc = -1, nt = tr->nt, made = 0;
    memset(ar, 0, sizeof ar);
    td_bnt_latent(&tr->bm, tr->P, tr->S, td_fashion_mnist_labels, tr->mean,
                  tr->std, &lat);
    if (td_bnn_export(&lat, tr->cfg.out, err) != TD_OK ||
        td_bnn_open(&fm, tr->cfg.out, err) != TD_OK)
        return -1;
    tr->last_total = fm->total;
    memset(&net, 0, sizeof net);
    net.fm = fm;
    net.res = tr->res;
    net.classes = tr->classes;
    for (int t = 0; t < nt; t++, made++) {
        x[t] = malloc((size_t)chunk * tr->res * tr->res * sizeof(float));
        lg[t] = malloc((size_t)chunk * tr->classes * sizeof(float));
        if (!x[t] || !lg[t] ||
            td_arena_init(&ar[t], td_bnn_scratch_bytes(fm) + 4096, err) !=
                TD_OK) {
            made++;
            td_error_set(err, TD_ENOMEM, "export check");
            goto out;
        }
        ews[t] = (eval_ws){NULL, NULL, &ar[t], lg[t]};
    }
    tr->export_acc = evaluate(&net, &tr->test, tr->test.n, tr->mean, tr->std,
                              nt, ews, x, chunk);
    rc = tr->export_acc < 0 ? -1 : 0;
    if (rc)
        td_error_set(err, TD_EINVAL, "%s: the exported model failed",
                     tr->cfg.out);
out:
    for (int t = 0; t < made; t++) {
        td_arena_free(&ar[t]);
        free(x[t]);
        free(lg[t]);
    }
    td_bnn_free(fm);
    return rc;
}

static int save_model(trainer *tr, double test_acc, td_error *err)
{
    char acc[32], ep[32], params[32], macs[32];
    td_tn_counts cnt;
    if (tr->bnn)
        return save_bnn(tr, err);
    td_tn_arch_count(&tr->arch, tr->res, tr->res, &cnt);
    snprintf(acc, sizeof acc, "%.4f", test_acc);
    snprintf(ep, sizeof ep, "%d", tr->epoch + 1);
    snprintf(params, sizeof params, "%lld", (long long)cnt.params);
    snprintf(macs, sizeof macs, "%lld", (long long)cnt.macs);
    const char *extra[] = {"trainer",       "tinyd-train",
                           "optimizer",     tr->cfg.opt,
                           "dataset",       tr->cfg.data,
                           "epochs",        ep,
                           "test_accuracy", acc,
                           "params",        params,
                           "macs",          macs,
                           NULL};
    td_tnt_meta meta = {td_fashion_mnist_labels, tr->mean, tr->std, extra};
    return td_tnt_save(&tr->m, &meta, tr->cfg.out, err) == TD_OK ? 0 : -1;
}

/* ------------------------------------------------------------ progress */

static void fmt_time(char *buf, size_t len, double s)
{
    long t = s < 0 ? 0 : (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

static void progress(const trainer *tr, long done, double loss, double acc,
                     double ips, double eta, int tty)
{
    char e[32];
    fmt_time(e, sizeof e, eta);
    if (tty) {
        int width = 24, fill = (int)(width * done / tr->steps_per_epoch);
        char bar[32];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
        bar[width] = 0;
        fprintf(stderr,
                "\repoch %d/%d [%s] %3d%% loss %.4f acc %5.2f%% %6.0f img/s "
                "ETA %s   ",
                tr->epoch + 1, tr->cfg.epochs, bar,
                (int)(100 * done / tr->steps_per_epoch), loss, 100 * acc, ips,
                e);
    } else
        fprintf(stderr,
                "epoch %d/%d step %ld/%ld loss %.4f acc %.2f%% %.0f img/s "
                "ETA %s\n",
                tr->epoch + 1, tr->cfg.epochs, done, tr->steps_per_epoch,
                loss, 100 * acc, ips, e);
    fflush(stderr);
}

/* ------------------------------------------------------------ main paths */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: tinyd-train [--preset NAME | --r R --d D --w W | --flops "
            "BUDGET] [options]\n"
            "       tinyd-train --bnn | --preset bnn_fmnist|bnn_small | "
            "--arch-json JSON|FILE [options]\n"
            "       tinyd-train eval MODEL [--data DIR] [--threads N]\n"
            "       tinyd-train info MODEL    (a binary model's MST "
            "statistics)\n"
            "model:    --preset tinynet_a..e | --r --d --w | --flops 24M; "
            "--res PX\n"
            "training: --opt saf|sgd|sam|mesa --base sgd|adamw --epochs N "
            "--batch N --lr X --min-lr X\n"
            "          --wd X --momentum X --nesterov 0|1 --smoothing X "
            "--warmup EPOCHS --seed N --threads N\n"
            "SAF/MESA: --saf-tau 5 --saf-lambda 0.3|0.8 --saf-minus 3 "
            "--saf-start 5 --mesa-decay 0.9998\n"
            "SAM:      --rho 0.05\n"
            "binary:   --bnn-step1 EPOCHS (real weights first; default "
            "epochs/3) --mst-lambda X (>= 0) --mst-words 0|1\n"
            "          --mst-tie FRAC (0..1, word tying) --mst-tie-ramp "
            "FRAC (0.5) --mst-tie-every STEPS\n"
            "          --init CHECKPOINT (start from a binary run's "
            "weights)\n"
            "data:     --data DIR (IDX files) --pad 2 --flip 0|1 "
            "--train-limit N --test-limit N\n"
            "files:    --out FILE --report FILE --checkpoint FILE --resume "
            "--config FILE --quiet\n"
            "--flops:  --scaling tiny|compound --base-res 224\n"
            "measure:  --sharpness 1024 (images; 0: off) --sharpness-rho 0.05\n"
            "       tinyd-train sharpness MODEL [--data DIR] [--sharpness N] "
            "[--sharpness-rho X] [--batch N --threads N]\n"
            "       tinyd-train arch [model flags]   (print the architecture)\n");
}

static void free_trainer(trainer *tr)
{
    for (int t = 0; t < MAX_THREADS; t++) {
        td_tnt_ws_free(&tr->w[t].ws);
        td_bnt_ws_free(&tr->w[t].bws);
        free(tr->w[t].x);
        free(tr->w[t].dlogits);
        free(tr->w[t].teacher);
        free(tr->w[t].past);
        free(tr->w[t].lab);
    }
    free(tr->buf);
    free(tr->buf2);
    free(tr->sam_e);
    free(tr->ema_p);
    free(tr->ema_s);
    free(tr->saf);
    free(tr->order);
    free(tr->batch_idx);
    free(tr->sharp_x);
    json_decref(tr->history);
    td_tnt_free(&tr->m);
    td_bnt_free(&tr->bm);
    td_dataset_free(&tr->train);
    td_dataset_free(&tr->test);
}

static void dataset_truncate(td_dataset *d, int limit)
{
    if (limit > 0 && limit < d->n)
        d->n = limit;
}

/* Grey mean and std of the training images, in [0, 1] units. */
static void pixel_stats(const td_dataset *d, float *mean, float *std)
{
    double s = 0, s2 = 0;
    size_t n = (size_t)d->n * d->h * d->w;
    for (size_t i = 0; i < n; i++) {
        double v = d->images[i] / 255.0;
        s += v;
        s2 += v * v;
    }
    *mean = (float)(s / n);
    *std = (float)sqrt(s2 / n - (s / n) * (s / n));
    if (!(*std > 1e-6f))
        *std = 1;
}

/* The binary network's arch: --arch-json, or a bnn_* preset (default
 * bnn_fmnist). TinyNet-only flags are refused rather than ignored. */
static int build_bnn_arch(trainer *tr, td_error *err)
{
    config *c = &tr->cfg;
    const char *json = c->arch_json[0] ? c->arch_json
                       : c->preset[0]  ? bnn_preset_json(c->preset)
                                       : bnn_preset_json("bnn_fmnist");
    td_bnn_arch a;
    if (!json)
        return td_error_set(err, TD_EINVAL,
                            "--preset %s: not a binary network (bnn_fmnist, "
                            "bnn_small)",
                            c->preset),
               -1;
    if (c->arch_json[0] && c->preset[0])
        return td_error_set(err, TD_EINVAL,
                            "--arch-json and --preset: give one of them"),
               -1;
    if (c->flops > 0 || c->r > 0 || c->d > 0 || c->w > 0 || c->res > 0)
        return td_error_set(err, TD_EINVAL,
                            "--flops, --r/--d/--w and --res are TinyNet "
                            "options; a binary network's shape is its arch"),
               -1;
    if (td_bnn_arch_parse(json, &a, err) != TD_OK) {
        td_error_prefix(err, "--arch-json");
        return -1;
    }
    if (a.in_h != a.in_w)
        return td_error_set(err, TD_EINVAL,
                            "--arch-json: in_h %d and in_w %d differ; the "
                            "trainer's images are square",
                            a.in_h, a.in_w),
               -1;
    if (a.classes != CLASSES)
        return td_error_set(err, TD_EINVAL,
                            "--arch-json: classes is %d; the data have %d",
                            a.classes, CLASSES),
               -1;
    if (td_bnt_init(&tr->bm, &a, err) != TD_OK) {
        td_error_prefix(err, "--arch-json");
        return -1;
    }
    c->res = a.in_h;
    if (c->bnn_step1 < 0)
        c->bnn_step1 = c->init[0] ? 0 : c->epochs / 3;
    if (c->bnn_step1 >= c->epochs)
        return td_error_set(err, TD_EINVAL,
                            "--bnn-step1 %d: must be below --epochs %d (step "
                            "2, binary weights, must run)",
                            c->bnn_step1, c->epochs),
               -1;
    return 0;
}

static int build_arch(trainer *tr, td_error *err)
{
    config *c = &tr->cfg;
    td_status st;
    if (c->bnn)
        return build_bnn_arch(tr, err);
    if (c->init[0] || c->mst_lambda > 0 || c->mst_tie > 0)
        return td_error_set(err, TD_EINVAL,
                            "--init, --mst-lambda and --mst-tie are for "
                            "binary networks (--bnn)"),
               -1;
    if (c->flops > 0)
        st = solve_flops(c, &tr->arch, &tr->phi, err);
    else if (c->preset[0])
        st = td_tn_arch_preset(&tr->arch, c->preset, CLASSES, err);
    else if (c->r > 0 || c->d > 0 || c->w > 0) {
        if (!(c->r > 0 && c->d > 0 && c->w > 0))
            return td_error_set(err, TD_EINVAL,
                                "--r, --d and --w go together"),
                   -1;
        st = td_tn_arch_build(&tr->arch, c->r, c->d, c->w, 0, CLASSES, err);
    } else /* default: TinyNet-E's shape, trained at 32 px */
        st = td_tn_arch_preset(&tr->arch, "tinynet_e", CLASSES, err);
    if (st != TD_OK)
        return -1;
    if (c->res <= 0)
        c->res = (c->preset[0] || c->flops > 0 || c->r > 0)
                     ? tr->arch.resolution
                     : 32;
    tr->arch.resolution = c->res;
    return 0;
}

/* out + suffix, with out's ".safetensors" dropped (so the report and the
 * checkpoint are never mistaken for a model or its sidecar). */
static int derive_path(char *dst, size_t len, const char *out,
                       const char *suffix)
{
    size_t n = strlen(out), ext = strlen(".safetensors");
    if (n > ext && !strcmp(out + n - ext, ".safetensors"))
        n -= ext;
    if (n + strlen(suffix) + 1 > len)
        return -1;
    memcpy(dst, out, n);
    memcpy(dst + n, suffix, strlen(suffix) + 1);
    return 0;
}

static int train_main(config *c)
{
    trainer *tr = calloc(1, sizeof *tr);
    td_error err = {0};
    int rc = 1, start_epoch = 0, tty = isatty(2);
    int saf, mesa, sam, part;
    double t_run = now_s();
    if (!tr) {
        fprintf(stderr, "tinyd-train: out of memory\n");
        return 1;
    }
    tr->cfg = *c;
    c = &tr->cfg;
    saf = !strcmp(c->opt, "saf");
    mesa = !strcmp(c->opt, "mesa");
    sam = !strcmp(c->opt, "sam");
    if (c->bnn && !c->base_given) /* ReActNet trains with Adam */
        snprintf(c->base, sizeof c->base, "adamw");
    if (c->bnn && !c->out_given)
        snprintf(c->out, sizeof c->out, "bnn.safetensors");
    if (c->lr < 0)
        c->lr = !strcmp(c->base, "adamw") ? 2e-3 : 0.1;
    if (c->wd < 0) /* a binary network decays only its stem and fc */
        c->wd = c->bnn ? 1e-4 : !strcmp(c->base, "adamw") ? 0.05 : 1e-4;
    if (c->saf_lambda < 0)
        c->saf_lambda = mesa ? 0.8 : 0.3;
    if ((!c->report[0] &&
         derive_path(c->report, sizeof c->report, c->out, ".report.json")) ||
        (!c->checkpoint[0] &&
         derive_path(c->checkpoint, sizeof c->checkpoint, c->out, ".ckpt"))) {
        td_error_set(&err, TD_EINVAL, "--out %s: path too long", c->out);
        goto fail;
    }
    if (build_arch(tr, &err))
        goto fail;
    if (td_dataset_load(&tr->train, c->data, "train", CLASSES, &err) !=
            TD_OK ||
        td_dataset_load(&tr->test, c->data, "t10k", CLASSES, &err) != TD_OK)
        goto fail;
    dataset_truncate(&tr->train, c->train_limit);
    dataset_truncate(&tr->test, c->test_limit);
    if (c->batch > tr->train.n) {
        td_error_set(&err, TD_EINVAL, "--batch %d: more than the %d training "
                     "images", c->batch, tr->train.n);
        goto fail;
    }
    pixel_stats(&tr->train, &tr->mean, &tr->std);
    tr->bnn = c->bnn;
    tr->res = c->res;
    tr->classes = CLASSES;
    if (tr->bnn) {
        td_bnt_init_weights(&tr->bm, c->seed);
        tr->P = tr->bm.params;
        tr->S = tr->bm.stats;
        tr->decay = tr->bm.decay;
        tr->np = tr->bm.n_params;
        tr->ns = tr->bm.n_stats;
        if (c->init[0] && load_init(tr, &err))
            goto fail;
    } else {
        if (td_tnt_init(&tr->m, &tr->arch, 1, c->res, &err) != TD_OK)
            goto fail;
        td_tnt_init_weights(&tr->m, c->seed);
        tr->P = tr->m.params;
        tr->S = tr->m.stats;
        tr->decay = tr->m.decay;
        tr->np = tr->m.n_params;
        tr->ns = tr->m.n_stats;
    }
    tr->nt = c->threads < c->batch ? c->threads : c->batch;
    part = (c->batch + tr->nt - 1) / tr->nt;
    for (int t = 0; t < tr->nt; t++) {
        worker *w = &tr->w[t];
        size_t k = (size_t)part * CLASSES;
        w->tr = tr;
        w->t = t;
        w->i0 = c->batch * t / tr->nt;
        w->i1 = c->batch * (t + 1) / tr->nt;
        if ((tr->bnn ? td_bnt_ws_init(&w->bws, &tr->bm, part, &err)
                     : td_tnt_ws_init(&w->ws, &tr->m, part, &err)) != TD_OK)
            goto fail;
        w->x = malloc((size_t)part * c->res * c->res * sizeof(float));
        w->dlogits = malloc(k * sizeof(float));
        w->teacher = malloc(k * sizeof(float));
        w->past = malloc(k * sizeof(float));
        w->lab = malloc((size_t)part);
        if (!w->x || !w->dlogits || !w->teacher || !w->past || !w->lab) {
            td_error_set(&err, TD_ENOMEM, "worker buffers");
            goto fail;
        }
    }
    tr->buf = calloc(tr->np, sizeof(float));
    if (!strcmp(c->base, "adamw"))
        tr->buf2 = calloc(tr->np, sizeof(float));
    if (sam)
        tr->sam_e = calloc(tr->np, sizeof(float));
    if (mesa) {
        tr->ema_p = malloc(tr->np * sizeof(float));
        tr->ema_s = malloc(tr->ns * sizeof(float));
        if (tr->ema_p && tr->ema_s) {
            memcpy(tr->ema_p, tr->P, tr->np * sizeof(float));
            memcpy(tr->ema_s, tr->S, tr->ns * sizeof(float));
        }
    }
    if (saf)
        tr->saf = calloc((size_t)(c->saf_minus + 1) * tr->train.n * CLASSES,
                         sizeof(float));
    tr->order = malloc((size_t)tr->train.n * sizeof(int));
    tr->batch_idx = malloc((size_t)c->batch * sizeof(int));
    tr->history = json_array();
    if (!tr->buf || (!strcmp(c->base, "adamw") && !tr->buf2) ||
        (sam && !tr->sam_e) || (mesa && (!tr->ema_p || !tr->ema_s)) ||
        (saf && !tr->saf) || !tr->order || !tr->batch_idx || !tr->history) {
        td_error_set(&err, TD_ENOMEM, "optimiser state");
        goto fail;
    }
    if (sharp_prepare(tr, &err))
        goto fail;
    tr->steps_per_epoch = tr->train.n / c->batch; /* drop the last part */
    tr->total_steps = tr->steps_per_epoch * c->epochs;
    if (c->resume) {
        if (access(c->checkpoint, F_OK) == 0) {
            start_epoch = load_checkpoint(tr, &err);
            if (start_epoch < 0)
                goto fail;
            fprintf(stderr, "tinyd-train: resuming %s after epoch %d\n",
                    c->checkpoint, start_epoch);
        } else
            fprintf(stderr, "tinyd-train: no checkpoint %s, starting fresh\n",
                    c->checkpoint);
    }
    if (tr->bnn) {
        td_tn_counts cnt;
        bnn_counts(&tr->bm, &cnt);
        if (!c->quiet)
            fprintf(stderr,
                    "tinyd-train: binary network, %d blocks at %dx%d, "
                    "%.3fM params, %.2fM MACs (binary blocks: bit-ops); "
                    "step 1 (real weights) %d epochs, step 2 (binary) %d; "
                    "MST lambda %g; %s (%s), %ld steps per epoch, batch %d, "
                    "%d threads\n",
                    tr->bm.arch.n_blocks, c->res, c->res, cnt.params / 1e6,
                    cnt.macs / 1e6, c->bnn_step1, c->epochs - c->bnn_step1,
                    c->mst_lambda, c->opt, c->base, tr->steps_per_epoch,
                    c->batch, tr->nt);
    } else {
        td_tn_counts cnt;
        td_tn_arch_count(&tr->arch, c->res, c->res, &cnt);
        if (!c->quiet)
            fprintf(stderr,
                    "tinyd-train: TinyNet r=%g d=%g w=%g at %dx%d: %d blocks, "
                    "%.3fM params, %.2fM MACs; %s (%s), %d epochs of %ld "
                    "steps, batch %d, %d threads\n",
                    tr->arch.r, tr->arch.d, tr->arch.w, c->res, c->res,
                    tr->arch.n_blocks, cnt.params / 1e6, cnt.macs / 1e6,
                    c->opt, c->base, c->epochs, tr->steps_per_epoch, c->batch,
                    tr->nt);
    }
    openblas_set_num_threads(1); /* parallelism comes from our workers */

    /* evaluation buffers reuse the worker workspaces (sized `part`) */
    eval_ws ews[MAX_THREADS];
    float *eval_x[MAX_THREADS];
    eval_net enet;
    memset(&enet, 0, sizeof enet);
    enet.tm = tr->bnn ? NULL : &tr->m;
    enet.bm = tr->bnn ? &tr->bm : NULL;
    enet.P = tr->P;
    enet.S = tr->S;
    enet.res = tr->res;
    enet.classes = tr->classes;
    for (int t = 0; t < tr->nt; t++) {
        ews[t] = (eval_ws){&tr->w[t].ws, &tr->w[t].bws, NULL, NULL};
        eval_x[t] = tr->w[t].x;
    }

    /* TD_TRAIN_FAULT_NAN_EPOCH=N makes the loss of epoch N not finite, so
     * tests can check that a divergence late in a run keeps the last good
     * checkpoint (a real divergence cannot be placed on demand). */
    const char *fault = getenv("TD_TRAIN_FAULT_NAN_EPOCH");
    int nan_at_epoch = fault ? atoi(fault) : 0;
    long tie_every = c->mst_tie_every > 0 ? c->mst_tie_every
                                          : (tr->steps_per_epoch + 7) / 8;
    if (tie_every < 1)
        tie_every = 1;
    for (tr->epoch = start_epoch; tr->epoch < c->epochs; tr->epoch++) {
        uint64_t s = td_rng_mix(c->seed, (uint64_t)tr->epoch + 1, 0x5417);
        double t0 = now_s(), c0 = cpu_s(), loss_sum = 0, kl_sum = 0;
        double last_print = t0;
        long seen = 0;
        int correct = 0;
        if (tr->bnn && tr->epoch == c->bnn_step1 && c->bnn_step1 > 0) {
            /* ReActNet step 2 starts with a fresh optimiser */
            memset(tr->buf, 0, tr->np * sizeof(float));
            if (tr->buf2)
                memset(tr->buf2, 0, tr->np * sizeof(float));
        }
        tr->reg_sum = 0;
        /* with ties the trees are built once, at the run's first epoch:
         * a rebuilt tree names other parents, and re-tying to them undid
         * the adaptation (measured, docs/BNN.md "Word tying") */
        if (tr->bnn &&
            ((c->mst_lambda > 0 && c->mst_tie == 0) ||
             (c->mst_tie > 0 && tr->epoch == start_epoch)) &&
            td_bnt_refresh_trees(&tr->bm, tr->P, NULL, &err) != TD_OK)
            goto fail;
        for (int i = 0; i < tr->train.n; i++)
            tr->order[i] = i;
        for (int i = tr->train.n - 1; i > 0; i--) {
            int j = (int)td_rng_below(&s, (uint32_t)i + 1), x = tr->order[i];
            tr->order[i] = tr->order[j];
            tr->order[j] = x;
        }
        for (long b = 0; b < tr->steps_per_epoch; b++) {
            double loss, kl, t;
            int cor;
            memcpy(tr->batch_idx, tr->order + b * c->batch,
                   (size_t)c->batch * sizeof(int));
            if (tr->bnn && c->mst_tie > 0 && b % tie_every == 0)
                td_bnt_tie_select(&tr->bm, tr->P, tie_fraction(tr));
            train_step(tr, &loss, &kl, &cor);
            if (nan_at_epoch == tr->epoch + 1)
                loss = NAN; /* fault injection, see docs/TRAINING.md */
            if (!isfinite(loss) || !isfinite(kl)) {
                if (tty)
                    fputc('\n', stderr);
                fprintf(stderr,
                        "tinyd-train: loss is %g at epoch %d step %ld: "
                        "stopping; the last good checkpoint (%s) and model "
                        "are untouched. Try a lower --lr.\n",
                        loss + kl, tr->epoch + 1, b + 1, c->checkpoint);
                goto out_fail;
            }
            loss_sum += loss + kl;
            kl_sum += kl;
            correct += cor;
            seen += c->batch;
            t = now_s();
            if (!c->quiet &&
                ((tty && t - last_print > 0.2) ||
                 (!tty && (b + 1) % (tr->steps_per_epoch / 5 + 1) == 0) ||
                 b + 1 == tr->steps_per_epoch)) {
                double ips = seen / (t - t0);
                double left = (double)(tr->steps_per_epoch - b - 1) *
                                  c->batch / ips +
                              (double)(c->epochs - tr->epoch - 1) *
                                  tr->steps_per_epoch * c->batch / ips;
                progress(tr, b + 1, loss_sum / seen, (double)correct / seen,
                         ips, left, tty);
                last_print = t;
            }
        }
        double train_s = now_s() - t0, train_cpu = cpu_s() - c0;
        enet.binw = tr->bnn ? bnn_binw(tr) : 0;
        double test_acc = evaluate(&enet, &tr->test, tr->test.n, tr->mean,
                                   tr->std, tr->nt, ews, eval_x, part);
        double secs = now_s() - t0;
        if (tty && !c->quiet)
            fputc('\n', stderr);
        json_array_append_new(
            tr->history,
            json_pack("{s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, "
                      "s:f}",
                      "epoch", tr->epoch + 1, "loss", loss_sum / seen,
                      "kl", kl_sum / seen, "train_accuracy",
                      (double)correct / seen, "test_accuracy", test_acc,
                      "seconds", secs, "train_seconds", train_s,
                      "train_cpu_seconds", train_cpu, "images_per_s",
                      seen / train_s, "images_per_cpu_s", seen / train_cpu,
                      "lr", tr->lr));
        if (sharp_epoch(tr, json_array_get(tr->history,
                                           json_array_size(tr->history) - 1),
                        &err))
            goto fail;
        if (!c->quiet)
            fprintf(stderr,
                    "epoch %d/%d: loss %.4f train %.2f%% test %.2f%% "
                    "%.1f s %.0f img/s (%.0f per CPU second)\n",
                    tr->epoch + 1, c->epochs, loss_sum / seen,
                    100.0 * correct / seen, 100 * test_acc, secs,
                    seen / train_s, seen / train_cpu);
        if (save_model(tr, test_acc, &err))
            goto fail;
        if (tr->bnn) {
            json_t *h = json_array_get(tr->history,
                                       json_array_size(tr->history) - 1);
            json_object_set_new(h, "step", json_integer(bnn_binw(tr) + 1));
            json_object_set_new(h, "mst_reg",
                                json_real(tr->reg_sum / tr->steps_per_epoch));
            json_object_set_new(h, "export_test_accuracy",
                                json_real(tr->export_acc));
            json_object_set_new(h, "bitops_ratio",
                                json_real(tr->last_total.bitops_ratio));
            json_object_set_new(h, "mst_depth",
                                json_integer(tr->last_total.depth));
            json_object_set_new(h, "mst_distance",
                                json_integer(tr->last_total.distance));
            json_object_set_new(h, "mask_words",
                                json_integer(tr->last_total.mask_words));
            if (c->mst_tie > 0)
                json_object_set_new(h, "tied_words",
                                    json_integer(tr->bm.n_tied));
            if (!c->quiet)
                fprintf(stderr,
                        "  step %d: exported %s: test %.2f%% (td_bnn_forward, "
                        "MST plan), bit-ops dense/MST %.2fx, MST regulariser "
                        "%.4g\n",
                        bnn_binw(tr) + 1, c->out, 100 * tr->export_acc,
                        tr->last_total.bitops_ratio,
                        tr->reg_sum / tr->steps_per_epoch);
        }
        if (save_checkpoint(tr, &err) || write_report(tr, &err))
            goto fail;
        if (c->stop_after && tr->epoch + 1 == c->stop_after &&
            tr->epoch + 1 < c->epochs) {
            fprintf(stderr, "tinyd-train: stopping after epoch %d as asked\n",
                    tr->epoch + 1);
            rc = 3;
            goto out;
        }
    }
    if (!c->quiet)
        fprintf(stderr, "tinyd-train: wrote %s (report %s) in %.1f s\n",
                c->out, c->report, now_s() - t_run);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "tinyd-train: %s\n", err.msg[0] ? err.msg : "failed");
out_fail:
    rc = 1;
out:
    free_trainer(tr);
    free(tr);
    return rc;
}

/* The "kind" metadata of a model file, copied into kind (empty when the
 * file has none); -1 with err on an unreadable file. */
static int model_kind(const char *path, char *kind, size_t len, td_error *err)
{
    td_st_file f;
    const char *v;
    if (td_st_open(&f, path, err) != TD_OK)
        return -1;
    v = td_st_meta_get(&f, "kind");
    snprintf(kind, len, "%s", v ? v : "");
    td_st_close(&f);
    return 0;
}

/* Test accuracy of a binary model file through the inference engine,
 * with the MST plans and with the dense binary layers. */
static int eval_bnn_main(const char *path, const config *c)
{
    td_bnn_model *fm = NULL;
    td_dataset test;
    td_error err = {0};
    td_arena ar[MAX_THREADS];
    eval_ws ews[MAX_THREADS];
    float *x[MAX_THREADS] = {0}, *lg[MAX_THREADS] = {0};
    int nt = c->threads, chunk = 64, rc = 1;
    eval_net net;
    memset(ar, 0, sizeof ar);
    memset(&test, 0, sizeof test);
    if (td_bnn_open(&fm, path, &err) != TD_OK) {
        fprintf(stderr, "tinyd-train eval: %s: %s\n", path, err.msg);
        return 1;
    }
    if (fm->arch.in_ch != 1 || fm->arch.in_h != fm->arch.in_w ||
        fm->arch.classes != CLASSES) {
        fprintf(stderr,
                "tinyd-train eval: %s: the test set is grey, square and has "
                "%d classes; this model is not for it\n",
                path, CLASSES);
        td_bnn_free(fm);
        return 1;
    }
    if (td_dataset_load(&test, c->data, "t10k", CLASSES, &err) != TD_OK) {
        fprintf(stderr, "tinyd-train eval: %s\n", err.msg);
        td_bnn_free(fm);
        return 1;
    }
    dataset_truncate(&test, c->test_limit);
    memset(&net, 0, sizeof net);
    net.fm = fm;
    net.res = fm->arch.in_h;
    net.classes = CLASSES;
    for (int t = 0; t < nt; t++) {
        x[t] = malloc((size_t)chunk * net.res * net.res * sizeof(float));
        lg[t] = malloc((size_t)chunk * CLASSES * sizeof(float));
        if (!x[t] || !lg[t] ||
            td_arena_init(&ar[t], td_bnn_scratch_bytes(fm) + 4096, &err) !=
                TD_OK) {
            fprintf(stderr, "tinyd-train eval: %s\n",
                    err.msg[0] ? err.msg : "out of memory");
            goto out;
        }
        ews[t] = (eval_ws){NULL, NULL, &ar[t], lg[t]};
    }
    {
        double t0 = now_s();
        double acc = evaluate(&net, &test, test.n, fm->mean[0], fm->std[0],
                              nt, ews, x, chunk);
        double dt = now_s() - t0;
        if (acc < 0)
            goto out;
        printf("%s: test accuracy %.4f (%d images, %.1f s, %.0f img/s; "
               "binary network, MST plan)\n",
               path, acc, test.n, dt, test.n / dt);
    }
    rc = 0;
out:
    for (int t = 0; t < nt; t++) {
        td_arena_free(&ar[t]);
        free(x[t]);
        free(lg[t]);
    }
    td_dataset_free(&test);
    td_bnn_free(fm);
    return rc;
}

/* `tinyd-train info MODEL`: a binary model's architecture and its
 * per-layer and total MST statistics. */
static int info_main(const char *path)
{
    td_bnn_model *fm = NULL;
    td_error err = {0};
    char kind[64], *aj;
    if (model_kind(path, kind, sizeof kind, &err)) {
        fprintf(stderr, "tinyd-train info: %s\n", err.msg);
        return 1;
    }
    if (strcmp(kind, "bnn")) {
        fprintf(stderr,
                "tinyd-train info: %s: kind \"%s\": info describes binary "
                "networks (kind \"bnn\")\n",
                path, kind);
        return 1;
    }
    if (td_bnn_open(&fm, path, &err) != TD_OK) {
        fprintf(stderr, "tinyd-train info: %s: %s\n", path, err.msg);
        return 1;
    }
    aj = td_bnn_arch_json(&fm->arch);
    printf("%s: binary network, MST-compressed\narch %s\n", path,
           aj ? aj : "?");
    free(aj);
    td_bnn_stats_fprint(fm, stdout);
    td_bnn_free(fm);
    return 0;
}

static int eval_main(const char *path, const config *c)
{
    td_tnt_model m;
    td_dataset test;
    td_error err = {0};
    td_tnt_ws ws[MAX_THREADS];
    eval_ws ews[MAX_THREADS];
    eval_net net;
    float *x[MAX_THREADS] = {0}, mean, std;
    int nt = c->threads, chunk = 64, rc = 1;
    char kind[64];
    memset(ws, 0, sizeof ws);
    if (model_kind(path, kind, sizeof kind, &err)) {
        fprintf(stderr, "tinyd-train eval: %s\n", err.msg);
        return 1;
    }
    if (!strcmp(kind, "bnn"))
        return eval_bnn_main(path, c);
    if (td_tnt_load(&m, path, &mean, &std, &err) != TD_OK) {
        fprintf(stderr, "tinyd-train eval: %s\n", err.msg);
        return 1;
    }
    if (td_dataset_load(&test, c->data, "t10k", CLASSES, &err) != TD_OK) {
        fprintf(stderr, "tinyd-train eval: %s\n", err.msg);
        td_tnt_free(&m);
        return 1;
    }
    dataset_truncate(&test, c->test_limit);
    openblas_set_num_threads(1);
    for (int t = 0; t < nt; t++) {
        x[t] = malloc((size_t)chunk * m.res * m.res * sizeof(float));
        if (!x[t] || td_tnt_ws_init(&ws[t], &m, chunk, &err) != TD_OK) {
            fprintf(stderr, "tinyd-train eval: %s\n",
                    err.msg[0] ? err.msg : "out of memory");
            goto out;
        }
    }
    double t0 = now_s();
    memset(&net, 0, sizeof net);
    net.tm = &m;
    net.P = m.params;
    net.S = m.stats;
    net.res = m.res;
    net.classes = m.arch.classes;
    for (int t = 0; t < nt; t++)
        ews[t] = (eval_ws){&ws[t], NULL, NULL, NULL};
    double acc = evaluate(&net, &test, test.n, mean, std, nt, ews, x, chunk);
    double dt = now_s() - t0;
    printf("%s: test accuracy %.4f (%d images, %.1f s, %.0f img/s)\n", path,
           acc, test.n, dt, test.n / dt);
    rc = 0;
out:
    for (int t = 0; t < nt; t++) {
        td_tnt_ws_free(&ws[t]);
        free(x[t]);
    }
    td_dataset_free(&test);
    td_tnt_free(&m);
    return rc;
}

int main(int argc, char **argv)
{
    config c;
    td_error err = {0};
    const char *eval_path = NULL, *sharp_path = NULL;
    int i = 1, arch_only = 0;
    /* A write past RLIMIT_FSIZE must fail with EFBIG (reported, the
     * previous file kept) instead of killing us with SIGXFSZ. */
    signal(SIGXFSZ, SIG_IGN);
    config_defaults(&c);
    if (argc > 1 && !strcmp(argv[1], "info")) {
        if (argc != 3 || argv[2][0] == '-') {
            fprintf(stderr, "usage: tinyd-train info MODEL\n");
            return 2;
        }
        return info_main(argv[2]);
    }
    if (argc > 1 && !strcmp(argv[1], "eval")) {
        if (argc < 3 || argv[2][0] == '-') {
            fprintf(stderr, "tinyd-train eval: which MODEL?\n");
            usage(stderr);
            return 2;
        }
        eval_path = argv[2];
        i = 3;
    } else if (argc > 1 && !strcmp(argv[1], "sharpness")) {
        if (argc < 3 || argv[2][0] == '-') {
            fprintf(stderr, "tinyd-train sharpness: which MODEL?\n");
            usage(stderr);
            return 2;
        }
        sharp_path = argv[2];
        i = 3;
    } else if (argc > 1 && !strcmp(argv[1], "arch")) {
        arch_only = 1;
        i = 2;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (strncmp(a, "--", 2) || !a[2]) {
            fprintf(stderr, "tinyd-train: unexpected argument \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
        a += 2;
        if (!strcmp(a, "resume") || !strcmp(a, "quiet") ||
            !strcmp(a, "bnn")) {
            apply(&c, a, "1", &err);
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tinyd-train: --%s needs a value\n", a);
            return 2;
        }
        if (apply(&c, a, argv[++i], &err)) {
            fprintf(stderr, "tinyd-train: %s\n", err.msg);
            usage(stderr);
            return 2;
        }
    }
    if (eval_path)
        return eval_main(eval_path, &c);
    if (sharp_path)
        return sharpness_main(sharp_path, &c);
    if (arch_only)
        return arch_main(&c);
    return train_main(&c);
}
