/* td_scaling: (r, d, w) for a multiply-add budget, by two rules, at any
 * base resolution.
 *
 * TinyNet's "tiny formula" (Han et al., NeurIPS 2020) and EfficientNet's
 * compound scaling (Tan and Le, ICML 2019: d = alpha^phi, w = beta^phi,
 * r = gamma^phi with alpha = 1.2, beta = 1.1, gamma = 1.15) run backwards,
 * phi < 0, which the TinyNet paper calls the "inverse giant formula" and
 * compares against (TinyNet-E 59.9% against EfficientNet-B^-4 56.7% at 24M
 * FLOPs; ../shared/research/bnn-saf.md section 4.3). Both rules start from
 * EfficientNet-B0 and count MACs exactly, layer by layer
 * (td_tn_arch_count), at the resolution they choose: int(base_res * r).
 *
 * base_res is the resolution at which r = 1 (224 for ImageNet). A smaller
 * base lets the same rules size a network for small images (Fashion-MNIST
 * is 28 px): the tiny formula then reads its r and d curves at the budget
 * ratio c = macs / MACs(B0 at base_res), the same c the paper uses at 224.
 * At base_res 224 the tiny rule is exactly td_tn_arch_for_flops.
 *
 * Thread: pure functions; any thread. No allocation. */
#ifndef TD_SCALING_H
#define TD_SCALING_H

#include "td_err.h"
#include "td_tinynet_arch.h"

#define TD_SCALING_ALPHA 1.2  /* depth, EfficientNet section 3.3 */
#define TD_SCALING_BETA 1.1   /* width */
#define TD_SCALING_GAMMA 1.15 /* resolution */

typedef enum td_scaling_rule {
    TD_SCALING_TINY,     /* TinyNet: r, d from the budget, w fills it */
    TD_SCALING_COMPOUND  /* EfficientNet: one phi for all three */
} td_scaling_rule;

/* Parse "tiny" or "compound". */
td_status td_scaling_parse(const char *name, td_scaling_rule *out,
                           td_error *err);
const char *td_scaling_name(td_scaling_rule rule);

/* Exact MACs of (r, d, w) at int(base_res * r) pixels and `classes`, or
 * -1 when that architecture cannot be built. */
int64_t td_scaling_macs(double r, double d, double w, int base_res,
                        int classes);

/* The largest network of `rule` whose exact MAC count at its own
 * resolution int(base_res * r) stays within `macs`.
 *  tiny:     r, d from td_tn_arch_for_flops's curves at c = macs /
 *            MACs(B0 at base_res), w the largest multiple of 0.001 that
 *            fits.
 *  compound: phi the largest multiple of 0.001 such that (r, d, w) =
 *            (gamma^phi, alpha^phi, beta^phi), each rounded to 3 decimals,
 *            fits.
 * *phi (may be NULL) gets phi for compound and 0 for tiny. EINVAL when the
 * budget is outside 1e5 .. 2 x B0 or below the rule's smallest network. */
td_status td_scaling_for_flops(td_tn_arch *a, td_scaling_rule rule,
                               double macs, int base_res, int classes,
                               double *phi, td_error *err);

#endif
