/* Kernels with the bugs the emulator's race checks are for; selftest.sh
 * runs them in both thread orders and expects each bug to show in the
 * order(s) said below. */
#include <stdio.h>
#include <string.h>

#include "cuda_runtime.h"

#define N 64

/* Each thread reads its left neighbour's value with no barrier between:
 * right in the forward order (the neighbour ran first), wrong in reverse. */
__global__ void left_neighbour(float *out)
{
    __shared__ float s[N];
    s[threadIdx.x] = (float)threadIdx.x;
    out[threadIdx.x] = threadIdx.x ? s[threadIdx.x - 1] : 0.0f;
}

/* The same with the barrier: right in both orders. */
__global__ void left_neighbour_synced(float *out)
{
    __shared__ float s[N];
    s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = threadIdx.x ? s[threadIdx.x - 1] : 0.0f;
}

/* Block 1 reads a slot of shared memory only block 0 writes: a value left
 * over from another block, which the poisoning turns into NaN. */
__global__ void leftover(float *out)
{
    __shared__ float s[N];
    if (blockIdx.x == 0)
        s[threadIdx.x] = 1.0f;
    __syncthreads();
    out[blockIdx.x * N + threadIdx.x] = s[threadIdx.x];
}

/* Values of out[1..N-1] that are not i - 1. */
static int wrong_neighbours(const float *out)
{
    int bad = 0;
    for (int t = 1; t < N; t++)
        bad += out[t] != (float)(t - 1);
    return bad;
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "";
    float *out;
    cudaMalloc((void **)&out, 2 * N * sizeof(float));
    int bad = 0;
    if (!strcmp(which, "race")) {
        left_neighbour<<<1, N>>>(out);
        bad = wrong_neighbours(out);
    } else if (!strcmp(which, "synced")) {
        left_neighbour_synced<<<1, N>>>(out);
        bad = wrong_neighbours(out);
    } else if (!strcmp(which, "leftover")) {
        leftover<<<2, N>>>(out);
        for (int i = 0; i < 2 * N; i++)
            bad += out[i] != 1.0f;
    } else {
        fprintf(stderr, "usage: races race|synced|leftover\n");
        return 2;
    }
    printf("%s: %d wrong\n", which, bad);
    return bad != 0;
}
