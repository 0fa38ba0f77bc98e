/* Test randomness shared by the op tests: splitmix64, with a per-file seed
 * (define TEST_RNG_SEED before including). Floats are never exactly zero,
 * so that a buffer left unwritten or zeroed cannot pass as a result. */
#ifndef REED_TEST_RNG_H
#define REED_TEST_RNG_H

#include <stdint.h>

static uint64_t rng_state = TEST_RNG_SEED;

static uint64_t rng_next(void) __attribute__((unused));
static uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi), never exactly zero. */
static float rng_float(float lo, float hi) __attribute__((unused));
static float rng_float(float lo, float hi) {
    for (;;) {
        float u = (float)(rng_next() >> 40) * (1.0f / 16777216.0f);
        float x = lo + (hi - lo) * u;
        if (x != 0.0f) return x;
    }
}

#endif
