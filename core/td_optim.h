/* td_optim: parameter updates and learning-rate schedules for tinyd-train.
 *
 * Every function works on flat float arrays (the model keeps all its
 * parameters in one slab), with an optional per-element weight-decay mask
 * (1: decay, 0: no decay; BatchNorm and biases are usually exempt). The
 * update rules follow PyTorch's torch.optim.SGD and torch.optim.AdamW so
 * hyper-parameters carry over; docs/TRAINING.md writes them out.
 *
 * SAM (Foret et al., ICLR 2021) is two helpers around the base step:
 * td_sam_perturb moves theta by e = rho * g / ||g|| and remembers e;
 * td_sam_restore moves it back before the base optimiser applies the
 * gradient taken at the perturbed point.
 *
 * Thread: reentrant; no allocation (state arrays belong to the caller). */
#ifndef TD_OPTIM_H
#define TD_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct td_sgd {
    float lr, momentum, weight_decay;
    int nesterov;
} td_sgd;

/* buf (n): momentum buffer, zero before the first step.
 *   g' = g + wd * theta (masked);  buf = momentum * buf + g';
 *   d = nesterov ? g' + momentum * buf : buf;  theta -= lr * d. */
void td_sgd_step(const td_sgd *o, float *theta, const float *grad,
                 float *buf, const uint8_t *decay_mask, size_t n);

typedef struct td_adamw {
    float lr, beta1, beta2, eps, weight_decay;
} td_adamw;

/* m, v (n): moments, zero before the first step; step is 1-based.
 *   theta -= lr * wd * theta (masked, decoupled);
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   theta -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps). */
void td_adamw_step(const td_adamw *o, float *theta, const float *grad,
                   float *m, float *v, const uint8_t *decay_mask, size_t n,
                   long step);

/* Cosine schedule with linear warm-up, per step (0-based):
 *   step < warmup: base * (step + 1) / warmup
 *   after: min + (base - min) * (1 + cos(pi * (step - warmup) /
 *          (total - warmup))) / 2. */
float td_lr_cosine(float base, float min, long step, long warmup, long total);

/* ||g||_2 over all n elements (accumulated in double). */
double td_l2norm(const float *g, size_t n);
/* e = rho * g / (||g|| + 1e-12); theta += e. Returns ||g||. */
double td_sam_perturb(float *theta, float *e, const float *grad, size_t n,
                      float rho);
/* theta -= e. */
void td_sam_restore(float *theta, const float *e, size_t n);

/* Exponential moving average: avg = decay * avg + (1 - decay) * x. */
void td_ema_update(float *avg, const float *x, size_t n, float decay);

#endif
