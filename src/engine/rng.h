/* Counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
 * Every draw is a pure function of (seed, step, stream, index), so a run
 * reproduces from its seed, a resumed run draws exactly what the
 * uninterrupted one would have, and a GPU backend can compute element i
 * of any draw on its own thread. */
#ifndef REED_RNG_H
#define REED_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Independent streams of one run. */
typedef enum {
    REED_STREAM_INIT = 1,     /* parameter initialisation (step = tensor index) */
    REED_STREAM_SHUFFLE,      /* data order (step = epoch) */
    REED_STREAM_LABEL_DROP,   /* classifier-free label dropout */
    REED_STREAM_TIME,         /* t per example */
    REED_STREAM_NOISE,        /* ε per element */
    REED_STREAM_SAMPLE_NOISE, /* sampler start noise (step = 0: fixed per seed) */
    REED_STREAM_SDE,          /* Euler–Maruyama increments (step = sampler step) */
} reed_stream;

/* The raw generator: four 32-bit outputs for one 128-bit counter. */
void philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* Uniform floats in (0, 1): out[i] depends on (seed, step, stream, i). */
void rng_uniform(float *out, size_t n, uint64_t seed, uint64_t step, reed_stream stream);
/* Standard normal floats (Box–Muller on pairs of uniforms). */
void rng_normal(float *out, size_t n, uint64_t seed, uint64_t step, reed_stream stream);

#endif
