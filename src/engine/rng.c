#include "rng.h"

#include <math.h>

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

void philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
        uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* Block b of a draw: counter = (b, step lo, step hi, stream), key = seed. */
static void draw_block(uint64_t block, uint64_t seed, uint64_t step,
                       reed_stream stream, uint32_t out[4]) {
    uint32_t counter[4] = {(uint32_t)block, (uint32_t)step, (uint32_t)(step >> 32),
                           (uint32_t)stream ^ ((uint32_t)(block >> 32) << 8)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    philox4x32(counter, key, out);
}

/* Maps 32 random bits to (0, 1): never exactly 0 or 1. */
static inline float to_unit(uint32_t x) {
    return ((float)(x >> 9) + 0.5f) * (1.0f / 8388608.0f); /* exact: 23 bits */
}

void rng_uniform(float *out, size_t n, uint64_t seed, uint64_t step, reed_stream stream) {
    for (size_t b = 0; b * 4 < n; b++) {
        uint32_t r[4];
        draw_block(b, seed, step, stream, r);
        for (size_t j = 0; j < 4 && b * 4 + j < n; j++) out[b * 4 + j] = to_unit(r[j]);
    }
}

void rng_normal(float *out, size_t n, uint64_t seed, uint64_t step, reed_stream stream) {
    const double two_pi = 6.283185307179586;
    for (size_t b = 0; b * 4 < n; b++) {
        uint32_t r[4];
        draw_block(b, seed, step, stream, r);
        double z[4];
        for (int pair = 0; pair < 2; pair++) {
            double radius = sqrt(-2.0 * log((double)to_unit(r[2 * pair])));
            double angle = two_pi * to_unit(r[2 * pair + 1]);
            z[2 * pair] = radius * cos(angle);
            z[2 * pair + 1] = radius * sin(angle);
        }
        for (size_t j = 0; j < 4 && b * 4 + j < n; j++) out[b * 4 + j] = (float)z[j];
    }
}
