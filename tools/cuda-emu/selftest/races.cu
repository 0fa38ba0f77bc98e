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

/* Double buffering by cp.async (as the wide flash forward): TILES tiles of
 * N floats from in, the next one in flight while this one is read, the
 * copies by threads 0..N/4-1 (16 bytes each). Thread t sums element
 * (t + 1) % N of every tile. Without the barrier at the end of an
 * iteration (synced 0), a thread that runs ahead refills the stage its
 * neighbours have still to read: the emulator's garbage at the issue shows
 * it in the forward order. */
#define TILES 4
__global__ void stages(float *out, const float *in, int synced)
{
    __align__(16) __shared__ float st[2][N]; // (alignas first, for the emulator's static)
    const int t = threadIdx.x, copier = t < N / 4;
    float sum = 0.0f;
    if (copier)
        emu_cp_async16(&st[0][4 * t], in + 4 * t, 16);
    emu_cp_async_commit();
    for (int k = 0; k < TILES; k++) {
        if (k + 1 < TILES) {
            if (copier)
                emu_cp_async16(&st[(k + 1) % 2][4 * t], in + (k + 1) * N + 4 * t, 16);
            emu_cp_async_commit();
            emu_cp_async_wait(1);
        } else {
            emu_cp_async_wait(0);
        }
        __syncthreads();
        sum += st[k % 2][(t + 1) % N];
        if (synced)
            __syncthreads();
    }
    out[t] = sum;
}

static int wrong_stage_sums(const float *out, const float *in)
{
    int bad = 0;
    for (int t = 0; t < N; t++) {
        float want = 0.0f;
        for (int k = 0; k < TILES; k++)
            want += in[k * N + (t + 1) % N];
        bad += out[t] != want;
    }
    return bad;
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
    } else if (!strcmp(which, "stage") || !strcmp(which, "stage_synced")) {
        float *in;
        cudaMalloc((void **)&in, TILES * N * sizeof(float));
        for (int i = 0; i < TILES * N; i++)
            in[i] = (float)(i % 7); // host memory in the emulator
        stages<<<1, N>>>(out, in, !strcmp(which, "stage_synced"));
        bad = wrong_stage_sums(out, in);
    } else {
        fprintf(stderr, "usage: races race|synced|leftover|stage|stage_synced\n");
        return 2;
    }
    printf("%s: %d wrong\n", which, bad);
    return bad != 0;
}
