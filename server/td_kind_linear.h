/* td_kind_linear: a softmax-regression classifier, logits = x·Wᵀ + b.
 *
 * The smallest real servable: file metadata {"kind": "linear", "labels"?:
 * JSON array of strings}, tensors "weight" F32 (C,F) and "bias" F32 (C).
 * It exercises the whole serving path (repository, reload, OIP inference,
 * classification) without a large model. */
#ifndef TD_KIND_LINEAR_H
#define TD_KIND_LINEAR_H

#include "td_servable.h"

extern const td_servable_kind td_kind_linear;

#endif
