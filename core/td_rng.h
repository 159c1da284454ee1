/* td_rng: the trainer's own deterministic random numbers (never rand()).
 *
 * splitmix64 (Steele, Lea, Flood 2014) as a tiny counter-based generator:
 * the state is one uint64 the caller owns, so a stream can be derived from
 * (seed, epoch, sample index) with td_rng_mix and every sample's
 * augmentation is the same whatever thread draws it.
 * Thread: no shared state; header-only. */
#ifndef TD_RNG_H
#define TD_RNG_H

#include <math.h>
#include <stdint.h>

static inline uint64_t td_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A well-mixed seed from a few integers. */
static inline uint64_t td_rng_mix(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t s = a;
    s = td_rng_next(&s) ^ b;
    s = td_rng_next(&s) ^ c;
    return td_rng_next(&s);
}

/* Uniform in [0, 1) with 24 bits. */
static inline float td_rng_float(uint64_t *s)
{
    return (float)(td_rng_next(s) >> 40) * (1.0f / 16777216.0f);
}

/* Uniform integer in [0, n), n >= 1 (the bias of a 64-bit modulo is
 * below 2^-40 for the n used here). */
static inline uint32_t td_rng_below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(td_rng_next(s) % n);
}

/* Standard normal (Box-Muller, one of the pair). */
static inline double td_rng_normal(uint64_t *s)
{
    double u1 = ((double)(td_rng_next(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(td_rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
