/* td_sharpness: SAM's sharpness measure on a trainable TinyNet.
 *
 *     R = L(theta + e) - L(theta),   e = rho * g / (||g||_2 + 1e-12),
 *     g = grad L(theta)
 *
 * (Foret et al., ICLR 2021, eq. 2-3; the measure the SAF paper plots per
 * epoch in its Fig. 4b with rho = 0.05, ../shared/research/bnn-saf.md
 * section 3.5). L is the mean plain softmax cross-entropy (no label
 * smoothing, no trajectory loss) over the given images, computed in chunks
 * of `chunk` images in training mode: BatchNorm normalises each chunk
 * with its own batch statistics, as during training and as SAM's own
 * perturbation sees the loss (the gradient of the evaluation-mode network
 * is not what the optimisers follow). The norm is global over all
 * trainable parameters, as SAM's. To first order R = rho * ||g||.
 *
 * The model is not changed (running statistics included): the perturbed
 * weights live in a scratch copy. The workspace's activations and
 * gradient buffer are overwritten.
 *
 * Memory: allocates n_params floats of scratch per call and frees them.
 * Thread: one call per workspace; the model is only read. */
#ifndef TD_SHARPNESS_H
#define TD_SHARPNESS_H

#include <stdint.h>

#include "td_err.h"
#include "td_tinynet_train.h"

typedef struct td_sharpness {
    double loss;           /* L(theta), mean over the images */
    double loss_perturbed; /* L(theta + e) */
    double sharpness;      /* R = loss_perturbed - loss */
    double grad_norm;      /* ||g||_2 */
    double rho;
    int n;
} td_sharpness;

/* in: (n, res, res, in_ch) NHWC, normalised; labels: (n).
 * chunk: 1 .. ws->max_batch images per forward. */
td_status td_sharpness_measure(const td_tnt_model *m, td_tnt_ws *ws,
                               const float *in, const uint8_t *labels, int n,
                               int chunk, double rho, td_sharpness *out,
                               td_error *err);

/* Mean plain cross-entropy of `params` over the n images, training-mode
 * BatchNorm per chunk, no gradient (the L of the measure, for tests). */
double td_sharpness_loss(const td_tnt_model *m, td_tnt_ws *ws,
                         const float *params, const float *in,
                         const uint8_t *labels, int n, int chunk);

#endif
