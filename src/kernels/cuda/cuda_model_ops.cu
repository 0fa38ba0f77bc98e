/* CUDA backend: the model's plumbing — patches, position and time
 * embeddings, label lookup, interpolants and the velocity loss. See ops.h;
 * each kernel mirrors its CPU twin in kernels/cpu/cpu_model_ops.c.
 *
 * Gradient contract: backward ops ADD (+=) into their gradient outputs,
 * except unpatchify_backward, which overwrites dtokens (as on the CPU).
 */
#include <math.h>
#include <stdlib.h>

#include "cuda_internal.h"
#include "philox.h"

/* Index of pixel (c, row, col) of example b in (B, C, S, S). */
__device__ __forceinline__ size_t pixel(int b, int c, int row, int col, int C,
                                        int S)
{
    return (((size_t)b * C + c) * S + row) * S + col;
}

/* ------------------------------------------------------------------------
 * Patches. Token (b, gi, gj) of the G×G grid (G = S/p) is row
 * (b·G + gi)·G + gj of the token matrix.
 * ---------------------------------------------------------------------- */

/* patches(B·G·G, Cin·p·p): element (c, i, j) of token (b, gi, gj) is pixel
 * (c, gi·p + i, gj·p + j); one thread per patch element. */
__global__ void patchify_kernel(float *patches, const float *x, int Cin, int S,
                                int p, size_t n)
{
    const int G = S / p, D = Cin * p * p;
    GRID_LOOP(e, n) {
        const size_t row = e / D;
        const int col = (int)(e % D);
        const int c = col / (p * p), i = (col / p) % p, j = col % p;
        const int gj = (int)(row % G), gi = (int)(row / G % G);
        const int b = (int)(row / ((size_t)G * G));
        patches[e] = x[pixel(b, c, gi * p + i, gj * p + j, Cin, S)];
    }
}

void cuda_patchify(float *patches, const float *x, int B, int Cin, int S, int p)
{
    const int G = S / p;
    const size_t n = (size_t)B * G * G * Cin * p * p;
    if (!n)
        return;
    patchify_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        patches, x, Cin, S, p, n);
    LAUNCH_CHECK("patchify_kernel");
}

/* SiT's unpatchify: element (i, j, c) of token (b, gi, gj), in a row of
 * p·p·C, is pixel (c, gi·p + i, gj·p + j). One thread per token element:
 * to_image copies token → pixel, otherwise pixel → token. */
__global__ void unpatchify_kernel(float *img, float *tok, int C, int S, int p,
                                  size_t n, int to_image)
{
    const int G = S / p, D = p * p * C;
    GRID_LOOP(e, n) {
        const size_t row = e / D;
        const int col = (int)(e % D);
        const int c = col % C, j = (col / C) % p, i = col / (C * p);
        const int gj = (int)(row % G), gi = (int)(row / G % G);
        const int b = (int)(row / ((size_t)G * G));
        const size_t at = pixel(b, c, gi * p + i, gj * p + j, C, S);
        if (to_image)
            img[at] = tok[e];
        else
            tok[e] = img[at];
    }
}

static void unpatchify(float *img, float *tok, int B, int C, int S, int p,
                       int to_image)
{
    const int G = S / p;
    const size_t n = (size_t)B * G * G * p * p * C;
    if (!n)
        return;
    unpatchify_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        img, tok, C, S, p, n, to_image);
    LAUNCH_CHECK("unpatchify_kernel");
}

void cuda_unpatchify_forward(float *x, const float *tokens, int B, int Cout,
                             int S, int p)
{
    unpatchify(x, (float *)tokens, B, Cout, S, p, 1);
}

void cuda_unpatchify_backward(float *dtokens, const float *dx, int B, int Cout,
                              int S, int p)
{
    unpatchify((float *)dx, dtokens, B, Cout, S, p, 0);
}

/* ------------------------------------------------------------------------
 * Position embedding: x(B,T,C) += rows(T,C) for every b
 * ---------------------------------------------------------------------- */

__global__ void add_rows_kernel(float *x, const float *rows, size_t TC,
                                size_t n)
{
    GRID_LOOP(i, n)
        x[i] += rows[i % TC];
}

void cuda_add_rows(float *x, const float *rows, int B, int T, int C)
{
    const size_t TC = (size_t)T * C, n = (size_t)B * TC;
    if (!n)
        return;
    add_rows_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(x, rows, TC, n);
    LAUNCH_CHECK("add_rows_kernel");
}

/* ------------------------------------------------------------------------
 * Timestep embedding: out(B,dim) = [cos(t·f_k) | sin(t·f_k)],
 * f_k = 10000^(−k/nf), nf = dim/2.
 *
 * The frequencies are computed on the host with the CPU backend's very
 * expression (expf/logf in float) and cached on the device, so that the
 * arguments t·f_k match the CPU's bit for bit: with t up to 1000, one ulp
 * of f_k would move cos(t·f_k) by ~1e-4. cos and sin are evaluated in
 * double and rounded, which is what glibc's cosf/sinf return to within an
 * ulp.
 * ---------------------------------------------------------------------- */

static float *freq_dev;  /* (freq_cap) device */
static int freq_cap;     /* floats allocated */
static int freq_nf;    /* nf of the table now in freq_dev, 0: none */

static const float *timestep_freqs(int nf)
{
    if (nf == freq_nf)
        return freq_dev;
    if (nf > freq_cap) {
        CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream)); // freq_dev may be in use
        CUDA_CHECK(cudaFree(freq_dev));
        CUDA_CHECK(cudaMalloc((void **)&freq_dev, (size_t)nf * sizeof(float)));
        freq_cap = nf;
    }
    float *host = (float *)malloc((size_t)nf * sizeof(float));
    if (!host)
        cuda_fatal("malloc", "out of host memory", __FILE__, __LINE__);
    for (int k = 0; k < nf; k++)
        host[k] = expf(-logf(10000.0f) * (float)k / (float)nf);
    CUDA_CHECK(cudaMemcpyAsync(freq_dev, host, (size_t)nf * sizeof(float),
                               cudaMemcpyHostToDevice, g_cuda.stream));
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
    free(host);
    freq_nf = nf;
    return freq_dev;
}

/* One thread per (b, k), k < nf. */
__global__ void timestep_embedding_kernel(float *out, const float *t,
                                          const float *freq, int nf,
                                          size_t n)
{
    GRID_LOOP(e, n) {
        const size_t b = e / nf;
        const int k = (int)(e % nf);
        const float arg = t[b] * freq[k];
        out[b * 2 * nf + k] = (float)cos((double)arg);
        out[b * 2 * nf + nf + k] = (float)sin((double)arg);
    }
}

void cuda_timestep_embedding(float *out, const float *t, int B, int dim)
{
    const int nf = dim / 2;
    const size_t n = (size_t)B * nf;
    if (!n)
        return;
    const float *freq = timestep_freqs(nf);
    timestep_embedding_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        out, t, freq, nf, n);
    LAUNCH_CHECK("timestep_embedding_kernel");
}

/* ------------------------------------------------------------------------
 * Label embedding: out(B,C) = table[idx[b]]; dtable[idx[b]] += dout[b]
 * ---------------------------------------------------------------------- */

__global__ void embedding_forward_kernel(float *out, const float *table,
                                         const int *idx, int C, size_t n)
{
    GRID_LOOP(e, n) {
        const size_t b = e / C;
        out[e] = table[(size_t)idx[b] * C + e % C];
    }
}

void cuda_embedding_forward(float *out, const float *table, const int *idx,
                            int B, int C)
{
    const size_t n = (size_t)B * C;
    if (!n)
        return;
    embedding_forward_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        out, table, idx, C, n);
    LAUNCH_CHECK("embedding_forward_kernel");
}

/* One thread per channel walks the batch in order: labels repeat within a
 * batch, and this adds the rows of equal labels without atomics, in the
 * CPU's order. */
__global__ void embedding_backward_kernel(float *dtable, const float *dout,
                                          const int *idx, int B, int C)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C)
        return;
    for (int b = 0; b < B; b++)
        dtable[(size_t)idx[b] * C + c] += dout[(size_t)b * C + c];
}

void cuda_embedding_backward(float *dtable, const float *dout, const int *idx,
                             int B, int C)
{
    if (!dtable || B <= 0 || C <= 0)
        return;
    embedding_backward_kernel<<<(C + THREADS - 1) / THREADS, THREADS, 0, g_cuda.stream>>>(
        dtable, dout, idx, B, C);
    LAUNCH_CHECK("embedding_backward_kernel");
}

/* ------------------------------------------------------------------------
 * Interpolant: x_t = a[b]·x + s[b]·noise, v = da[b]·x + ds[b]·noise over
 * n elements per sample.
 * ---------------------------------------------------------------------- */

__global__ void interpolate_kernel(float *x_t, float *v, const float *x,
                                   const float *noise, const float *a,
                                   const float *s, const float *da,
                                   const float *ds, size_t n, size_t total)
{
    GRID_LOOP(i, total) {
        const size_t b = i / n;
        x_t[i] = a[b] * x[i] + s[b] * noise[i];
        v[i] = da[b] * x[i] + ds[b] * noise[i];
    }
}

void cuda_interpolate(float *x_t, float *v, const float *x, const float *noise,
                      const float *a, const float *s, const float *da,
                      const float *ds, int B, size_t n)
{
    const size_t total = (size_t)B * n;
    if (!total)
        return;
    interpolate_kernel<<<grid_for(total, THREADS), THREADS, 0, g_cuda.stream>>>(
        x_t, v, x, noise, a, s, da, ds, n, total);
    LAUNCH_CHECK("interpolate_kernel");
}

/* ------------------------------------------------------------------------
 * Velocity loss: returns mean((pred − target)²) (double sums, two passes)
 * and writes dpred = k·(pred − target), k = 2·scale/n (in float, as the CPU).
 * ---------------------------------------------------------------------- */

__global__ void mse_partial_kernel(double *partial, float *dpred,
                                   const float *pred, const float *target,
                                   size_t n, float k)
{
    double acc = 0.0;
    GRID_LOOP(i, n) {
        const float d = pred[i] - target[i];
        acc += (double)d * d;
        dpred[i] = k * d;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = acc;
}

double cuda_mse_forward_backward(float *dpred, const float *pred,
                                 const float *target, size_t n, float scale)
{
    if (!n)
        return NAN; // the CPU computes 0/0
    const float k = 2.0f * scale / (float)n;
    const unsigned blocks = red_blocks(n);
    mse_partial_kernel<<<blocks, RED_THREADS, 0, g_cuda.stream>>>(
        g_cuda.red_partial, dpred, pred, target, n, k);
    LAUNCH_CHECK("mse_partial_kernel");
    return cuda_finish_sum((int)blocks) / (double)n;
}

/* ------------------------------------------------------------------------
 * Random numbers: the CPU's Philox draw (philox.h), one thread per block of
 * four normals, so a seed gives the same noise on both backends.
 * ---------------------------------------------------------------------- */

__global__ void normal_fill_kernel(float *out, size_t n, uint64_t seed,
                                   uint64_t step, uint32_t stream)
{
    GRID_LOOP(b, (n + 3) / 4) {
        float z[4];
        philox_normal4(b, seed, step, stream, z);
        for (size_t j = 0; j < 4 && b * 4 + j < n; j++)
            out[b * 4 + j] = z[j];
    }
}

void cuda_normal_fill(float *out, size_t n, uint64_t seed, uint64_t step,
                      uint32_t stream)
{
    if (n == 0)
        return;
    normal_fill_kernel<<<grid_for((n + 3) / 4, THREADS), THREADS, 0,
                         g_cuda.stream>>>(out, n, seed, step, stream);
    LAUNCH_CHECK("normal_fill_kernel");
}
