/* td_kind_tinynet: TinyNet classifiers (our files and timm checkpoints).
 *
 * Input "input" FP32 [N, 3, R, R] (normalised NCHW, R the model's
 * resolution); output "logits" FP32 [N, classes]. Images reach it through
 * :classify, which applies the model's own eval transform. */
#ifndef TD_KIND_TINYNET_H
#define TD_KIND_TINYNET_H

#include "td_servable.h"

extern const td_servable_kind td_kind_tinynet;

#endif
