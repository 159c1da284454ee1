#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "td_sharpness.h"

/* Sum of the chunks' plain cross-entropy at `params`; with backward, the
 * gradient of the mean is ADDED to ws->grad. */
static double pass(const td_tnt_model *m, td_tnt_ws *ws, const float *params,
                   const float *in, const uint8_t *labels, int n, int chunk,
                   float *dlogits, int backward)
{
    size_t img = (size_t)m->res * m->res * m->in_ch;
    int k = m->arch.classes;
    double sum = 0;
    for (int s = 0; s < n; s += chunk) {
        int c = n - s < chunk ? n - s : chunk;
        td_tnt_forward(m, ws, params, m->stats, in + (size_t)s * img, c, 1);
        sum += td_tl_xent(dlogits, ws->logits, labels + s, c, k, 0.0f,
                          1.0f / (float)n, NULL);
        if (backward)
            td_tnt_backward(m, ws, params, dlogits);
    }
    return sum;
}

double td_sharpness_loss(const td_tnt_model *m, td_tnt_ws *ws,
                         const float *params, const float *in,
                         const uint8_t *labels, int n, int chunk)
{
    float *dl = malloc((size_t)chunk * m->arch.classes * sizeof(float));
    double sum;
    if (!dl || n <= 0) {
        free(dl);
        return NAN;
    }
    sum = pass(m, ws, params, in, labels, n, chunk, dl, 0);
    free(dl);
    return sum / n;
}

td_status td_sharpness_measure(const td_tnt_model *m, td_tnt_ws *ws,
                               const float *in, const uint8_t *labels, int n,
                               int chunk, double rho, td_sharpness *out,
                               td_error *err)
{
    float *dl, *pert;
    double norm2 = 0, scale;
    size_t np = m->n_params;
    if (n <= 0 || chunk <= 0 || chunk > ws->max_batch)
        return td_error_set(err, TD_EINVAL,
                            "sharpness: %d images in chunks of %d (workspace "
                            "holds %d)",
                            n, chunk, ws->max_batch);
    if (!(rho >= 0))
        return td_error_set(err, TD_EINVAL, "sharpness: rho %g", rho);
    dl = malloc((size_t)chunk * m->arch.classes * sizeof(float));
    pert = malloc(np * sizeof(float));
    if (!dl || !pert) {
        free(dl);
        free(pert);
        return td_error_set(err, TD_ENOMEM, "sharpness: scratch");
    }
    memset(ws->grad, 0, np * sizeof(float));
    out->loss = pass(m, ws, m->params, in, labels, n, chunk, dl, 1) / n;
    for (size_t i = 0; i < np; i++)
        norm2 += (double)ws->grad[i] * ws->grad[i];
    out->grad_norm = sqrt(norm2);
    scale = rho / (out->grad_norm + 1e-12);
    for (size_t i = 0; i < np; i++)
        pert[i] = m->params[i] + (float)(scale * ws->grad[i]);
    out->loss_perturbed = pass(m, ws, pert, in, labels, n, chunk, dl, 0) / n;
    out->sharpness = out->loss_perturbed - out->loss;
    out->rho = rho;
    out->n = n;
    free(dl);
    free(pert);
    return TD_OK;
}
