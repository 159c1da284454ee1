/* td_optim: SGD, AdamW, cosine schedule, SAM and EMA helpers. */
#include "config.h"

#include "td_optim.h"

#include <math.h>

void td_sgd_step(const td_sgd *o, float *theta, const float *grad,
                 float *buf, const uint8_t *decay_mask, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        if (o->weight_decay != 0 && (!decay_mask || decay_mask[i]))
            g += o->weight_decay * theta[i];
        buf[i] = o->momentum * buf[i] + g;
        float d = o->nesterov ? g + o->momentum * buf[i] : buf[i];
        theta[i] -= o->lr * d;
    }
}

void td_adamw_step(const td_adamw *o, float *theta, const float *grad,
                   float *m, float *v, const uint8_t *decay_mask, size_t n,
                   long step)
{
    double bc1 = 1.0 - pow(o->beta1, (double)step);
    double bc2 = 1.0 - pow(o->beta2, (double)step);
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        if (o->weight_decay != 0 && (!decay_mask || decay_mask[i]))
            theta[i] -= o->lr * o->weight_decay * theta[i];
        m[i] = o->beta1 * m[i] + (1 - o->beta1) * g;
        v[i] = o->beta2 * v[i] + (1 - o->beta2) * g * g;
        double mh = m[i] / bc1, vh = v[i] / bc2;
        theta[i] -= (float)(o->lr * mh / (sqrt(vh) + o->eps));
    }
}

float td_lr_cosine(float base, float min, long step, long warmup, long total)
{
    if (step < warmup)
        return base * (float)(step + 1) / (float)warmup;
    if (total <= warmup || step >= total)
        return min;
    double t = (double)(step - warmup) / (double)(total - warmup);
    return (float)(min + (base - min) * 0.5 * (1.0 + cos(M_PI * t)));
}

double td_l2norm(const float *g, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)g[i] * g[i];
    return sqrt(s);
}

double td_sam_perturb(float *theta, float *e, const float *grad, size_t n,
                      float rho)
{
    double norm = td_l2norm(grad, n);
    double scale = rho / (norm + 1e-12);
    for (size_t i = 0; i < n; i++) {
        e[i] = (float)(grad[i] * scale);
        theta[i] += e[i];
    }
    return norm;
}

void td_sam_restore(float *theta, const float *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        theta[i] -= e[i];
}

void td_ema_update(float *avg, const float *x, size_t n, float decay)
{
    for (size_t i = 0; i < n; i++)
        avg[i] = decay * avg[i] + (1 - decay) * x[i];
}
