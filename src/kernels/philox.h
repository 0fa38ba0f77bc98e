/* Counter-based random numbers (Philox4x32-10, Salmon et al. 2011), shared
 * by the host (engine/rng.c, the CPU backend) and the CUDA kernels, so that
 * one seed draws the same numbers on every backend.
 *
 * A draw of n numbers keyed by (seed, step, stream) is cut into blocks of
 * four: block b feeds the counter (b, step lo, step hi, stream) and the key
 * (seed lo, seed hi) through Philox and turns its four 32-bit outputs into
 * four floats. Element i of the draw is output i % 4 of block i / 4, so any
 * thread can compute any element on its own. */
#ifndef REED_PHILOX_H
#define REED_PHILOX_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define PHILOX_FN static inline __host__ __device__
#else
#define PHILOX_FN static inline
#endif

PHILOX_FN uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

/* The raw generator: ten rounds on a 128-bit counter under a 64-bit key. */
PHILOX_FN void philox4x32_10(const uint32_t counter[4], const uint32_t key[2],
                             uint32_t out[4])
{
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = philox_mulhilo(0xD2511F53u, c0, &hi0);
        uint32_t lo1 = philox_mulhilo(0xCD9E8D57u, c2, &hi1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Block b of the draw keyed by (seed, step, stream). Blocks beyond 2³² fold
 * their high bits into the stream word. */
PHILOX_FN void philox_block(uint64_t block, uint64_t seed, uint64_t step,
                            uint32_t stream, uint32_t out[4])
{
    uint32_t counter[4] = {(uint32_t)block, (uint32_t)step,
                           (uint32_t)(step >> 32),
                           stream ^ ((uint32_t)(block >> 32) << 8)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    philox4x32_10(counter, key, out);
}

/* 32 random bits to a float in (0, 1), never exactly 0 or 1: the top 23 bits
 * plus one half, times 2⁻²³ (exact in float). */
PHILOX_FN float philox_unit(uint32_t x)
{
    return ((float)(x >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

/* Four uniforms in (0, 1) of block b. */
PHILOX_FN void philox_uniform4(uint64_t block, uint64_t seed, uint64_t step,
                               uint32_t stream, float out[4])
{
    uint32_t r[4];
    philox_block(block, seed, step, stream, r);
    for (int j = 0; j < 4; j++)
        out[j] = philox_unit(r[j]);
}

/* Four standard normals of block b: Box–Muller on the pairs (r0, r1) and
 * (r2, r3), z = sqrt(−2 ln u)·(cos, sin)(2π v), in double and rounded once
 * to float, so that backends agree to the last bit wherever their double
 * log/cos/sin round alike. */
PHILOX_FN void philox_normal4(uint64_t block, uint64_t seed, uint64_t step,
                              uint32_t stream, float out[4])
{
    const double two_pi = 6.283185307179586;
    uint32_t r[4];
    philox_block(block, seed, step, stream, r);
    for (int pair = 0; pair < 2; pair++) {
        double radius = sqrt(-2.0 * log((double)philox_unit(r[2 * pair])));
        double angle = two_pi * philox_unit(r[2 * pair + 1]);
        out[2 * pair] = (float)(radius * cos(angle));
        out[2 * pair + 1] = (float)(radius * sin(angle));
    }
}

#endif
