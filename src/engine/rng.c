/* The engine's draws on the host; the arithmetic lives in kernels/philox.h,
 * shared with the CUDA backend. */
#include "rng.h"

#include "philox.h"

void philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    philox4x32_10(counter, key, out);
}

/* Writes the n elements of a draw, four per Philox block. */
static void draw(float *out, size_t n, uint64_t seed, uint64_t step, reed_stream stream,
                 void (*block4)(uint64_t, uint64_t, uint64_t, uint32_t, float[4])) {
    for (size_t b = 0; b * 4 < n; b++) {
        float z[4];
        block4(b, seed, step, (uint32_t)stream, z);
        for (size_t j = 0; j < 4 && b * 4 + j < n; j++) out[b * 4 + j] = z[j];
    }
}

void rng_uniform(float *out, size_t n, uint64_t seed, uint64_t step, reed_stream stream) {
    draw(out, n, seed, step, stream, philox_uniform4);
}

void rng_normal(float *out, size_t n, uint64_t seed, uint64_t step, reed_stream stream) {
    draw(out, n, seed, step, stream, philox_normal4);
}
