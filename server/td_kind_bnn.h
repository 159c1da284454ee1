/* td_kind_bnn: binary CNNs with MST-compressed layers (kind "bnn",
 * core/td_bnn_model.h).
 *
 * Input "input" FP32 [N, in_ch, in_h, in_w] (normalised NCHW; [N,1,28,28]
 * for the Fashion-MNIST family); output "logits" FP32 [N, classes].
 * Inference runs the MST plans (bit-exact with the dense binary layers).
 * GET /v2/models/{name} reports "binary": true, "mst": true and the
 * per-layer and total statistics. :classify converts images to grayscale
 * when the model has one input channel. */
#ifndef TD_KIND_BNN_H
#define TD_KIND_BNN_H

#include "td_servable.h"

extern const td_servable_kind td_kind_bnn;

#endif
