/* bnn_random: random-weight BNN models for tests and benchmarks.
 *
 * Latent weights uniform in [-1, 1]; with flip_pct >= 0 each block's
 * channels are near-copies of cout/8 (at least 1) prototype channels,
 * each latent sign flipped with probability flip_pct/100 (the Hamming
 * structure MST-compression is for); flip_pct < 0 gives independent
 * channels. BatchNorm statistics are drawn so that thresholds land inside
 * the accumulator's typical range (bits are not all equal).
 * Owns: bnn_random_free releases what bnn_random_latent allocated. */
#ifndef BNN_RANDOM_H
#define BNN_RANDOM_H

#include <stdint.h>

#include "td_bnn_model.h"

typedef struct bnn_random {
    td_bnn_latent lat;
    float *mem[4 + 6 * TD_BNN_MAX_BLOCKS + 4];
    int n_mem;
    char *labels[64];
} bnn_random;

/* Fill r->lat for arch with seed; 0 on success, -1 on out-of-memory. */
int bnn_random_latent(bnn_random *r, const td_bnn_arch *arch, uint64_t seed,
                      int flip_pct);
void bnn_random_free(bnn_random *r);

#endif
