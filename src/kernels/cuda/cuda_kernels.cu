/* CUDA backend: our own kernels for the transformer ops that are not GEMMs —
 * normalisation, adaLN modulation and gates, activations, the attention
 * softmax, elementwise helpers, reductions, cosine similarity, AdamW (with
 * the parameters' EMA).
 *
 * Gradient contract (see ops.h): forward ops overwrite their outputs;
 * backward ops ADD (+=) into every gradient output, and any gradient output
 * may be NULL.
 *
 * Each kernel sits next to its launcher. Most are plain: grid-stride loops
 * for elementwise work (four floats a thread where aligned), one warp per
 * row for row reductions, and column sums with one thread per channel (and
 * per chunk of rows where the channels alone are too few). The LayerNorm
 * kernels, the largest of them on SiT-B/2, hold rows in registers and sum
 * the backward's columns in the same pass.
 * Reductions the CPU accumulates in double are accumulated in double here
 * too, except the LayerNorm rows' sums on the vectorized path (float, a
 * row of at most 1152 values: see there); all reductions are
 * deterministic (no atomics).
 * Aliasing: elementwise forward ops may run in place (each thread reads an
 * element before writing it), as on the CPU.
 */
#include <math.h>

#include <type_traits>

#include "cuda_internal.h"

/* ------------------------------------------------------------------------
 * Column sums: the reductions over tokens (dbias, dshift, dscale, dgate,
 * mean over tokens). For each group g < G (a sample, or one group of all
 * N rows) and channel c < C:
 *     s = Σ_{t<T} a[(g·T + t)·C + c] · (b ? b[(g·T + t)·C + c] : 1)
 * accumulated in double, then out[g·ldo + c] += s (COLSUM_ADD) or
 * out[g·ldo + c] = s / T (COLSUM_MEAN). A block covers 32 channels of one
 * group and one chunk of its T rows; its COLSUM_ROWS rows of threads split
 * the chunk, then one row of threads adds up the partial sums in a fixed
 * order. With few groups (a bias gradient: G = 1 over N = B·T rows) the
 * rows are split into chunks so that the grid fills the GPU: each block then
 * writes its chunk's sum to a scratch array, and a second kernel adds the
 * chunks of each channel in order (deterministic, like the one-pass case).
 * ---------------------------------------------------------------------- */

#define COLSUM_ROWS 16
#define COLSUM_MIN_CHUNK 128 /* rows: below this a chunk is not worth a block */
enum { COLSUM_ADD, COLSUM_MEAN };

/* Element i, in row n, of the second factor: b, or with mean and rstd (a
 * fused LayerNorm in front) the forward pass's xhat = (b − mean)·rstd. */
__device__ __forceinline__ float colsum_factor(const float *b,
                                               const float *mean,
                                               const float *rstd, size_t n,
                                               size_t i)
{
    return mean ? (b[i] - mean[n]) * rstd[n] : b[i];
}

__device__ __forceinline__ void colsum_store(float *out, int ldo, size_t g,
                                             int c, double s, int T, int mode)
{
    float *o = out + g * ldo + c;
    if (mode == COLSUM_ADD)
        *o += (float)s;
    else
        *o = (float)s / T;
}

__device__ __forceinline__ double as_double(float v) { return v; }
__device__ __forceinline__ double as_double(__nv_bfloat16 v) { return __bfloat162float(v); }

/* Block (channel block, g, chunk k): the sum over rows [k·L, (k+1)·L) ∩ [0, T)
 * of group g, stored to out (one chunk) or to partial[(g·chunks + k)·C + c].
 * a is fp32, or bf16 (a bias gradient from dout's bf16 values). */
template <typename TA>
__global__ void colsum_kernel(float *out, int ldo, double *partial,
                              const TA *a, const float *b,
                              const float *mean, const float *rstd, int T,
                              int C, int L, int mode)
{
    __shared__ double part[COLSUM_ROWS][32];
    const int c = blockIdx.x * 32 + threadIdx.x;
    const size_t g = blockIdx.y;
    const int t0 = blockIdx.z * L, t1 = T - t0 < L ? T : t0 + L;
    double acc = 0.0;
    if (c < C) {
        for (int t = t0 + threadIdx.y; t < t1; t += COLSUM_ROWS) {
            const size_t n = g * T + t, i = n * C + c;
            acc += b ? as_double(a[i]) * colsum_factor(b, mean, rstd, n, i)
                     : as_double(a[i]);
        }
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        double s = 0.0;
        for (int r = 0; r < COLSUM_ROWS; r++)
            s += part[r][threadIdx.x];
        if (partial)
            partial[(g * gridDim.z + blockIdx.z) * C + c] = s;
        else
            colsum_store(out, ldo, g, c, s, T, mode);
    }
}

/* The second pass: for each (g, c), the chunks' sums added in order. */
__global__ void colsum_chunks_kernel(float *out, int ldo, const double *partial,
                                     int G, int T, int C, int chunks, int mode)
{
    GRID_LOOP(i, (size_t)G * C)
    {
        const size_t g = i / C;
        const int c = (int)(i % C);
        double s = 0.0;
        for (int k = 0; k < chunks; k++)
            s += partial[(g * chunks + k) * C + c];
        colsum_store(out, ldo, g, c, s, T, mode);
    }
}

/* Chunks per group: enough blocks for about 4 per multiprocessor, each
 * chunk at least COLSUM_MIN_CHUNK rows. */
static int colsum_chunks(int G, int T, int C)
{
    const long blocks = (long)G * ((C + 31) / 32);
    const long want = 4L * g_cuda.sm_count;
    long chunks = (want + blocks - 1) / blocks;
    const long most = T / COLSUM_MIN_CHUNK;
    if (chunks > most)
        chunks = most;
    return chunks < 1 ? 1 : (int)chunks;
}

/* Scratch for n blocks' partial sums (kept for the process): the column
 * sums here, the LayerNorm and gated-add backwards below. One buffer for
 * all: the one stream orders each use after the last. */
static double *partial_scratch(size_t n)
{
    static void *buf;
    static size_t cap;
    return (double *)cuda_scratch(&buf, &cap, n * sizeof(double));
}

template <typename TA>
static void colsum_launch(float *out, int ldo, const TA *a, const float *b,
                          const float *mean, const float *rstd, int G, int T,
                          int C, int mode)
{
    if (G <= 0 || C <= 0)
        return;
    const int chunks = colsum_chunks(G, T, C);
    const int L = (T + chunks - 1) / chunks;
    double *partial = chunks > 1 ? partial_scratch((size_t)G * chunks * C) : NULL;
    dim3 grid((C + 31) / 32, G, chunks), block(32, COLSUM_ROWS);
    colsum_kernel<TA><<<grid, block, 0, g_cuda.stream>>>(out, ldo, partial, a, b,
                                                         mean, rstd, T, C, L, mode);
    LAUNCH_CHECK("colsum_kernel");
    if (partial) {
        const size_t n = (size_t)G * C;
        colsum_chunks_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
            out, ldo, partial, G, T, C, chunks, mode);
        LAUNCH_CHECK("colsum_chunks_kernel");
    }
}

static void colsum(float *out, int ldo, const float *a, const float *b, int G,
                   int T, int C, int mode)
{
    colsum_launch(out, ldo, a, b, NULL, NULL, G, T, C, mode);
}

/* dbias(OC) += Σ_n dout(N,OC), dout fp32 or bf16 */
void cuda_colsum_add(float *dbias, const float *dout, int N, int OC)
{
    colsum(dbias, 0, dout, NULL, 1, N, OC, COLSUM_ADD);
}

void cuda_colsum_add_bf16(float *dbias, const __nv_bfloat16 *dout, int N, int OC)
{
    colsum_launch(dbias, 0, dout, NULL, NULL, NULL, 1, N, OC, COLSUM_ADD);
}

/* ------------------------------------------------------------------------
 * Linear bias seed: out(N,OC) = bias broadcast over rows
 * ---------------------------------------------------------------------- */

__global__ void bias_seed_kernel(float *out, const float *bias, size_t n,
                                 int OC)
{
    GRID_LOOP(i, n)
        out[i] = bias[i % OC];
}

void cuda_linear_bias_seed(float *out, const float *bias, int N, int OC)
{
    const size_t n = (size_t)N * OC;
    if (!n)
        return;
    bias_seed_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(out, bias, n, OC);
    LAUNCH_CHECK("bias_seed_kernel");
}

/* ------------------------------------------------------------------------
 * LayerNorm (no affine), alone or fused with the adaLN modulate after it,
 * one warp per row:
 *   mean = Σx/C, var = Σ(x − mean)²/C (double), rstd = 1/sqrt(var + eps),
 *   xhat = (x − mean)·rstd,
 *   out = xhat, or fused: out = xhat·(1 + scale[b]) + shift[b], b = row/T.
 * Lane l holds the channels c0 + l + 32k, k < PL: a span of 32·PL channels.
 * The launchers pick PL by C (ln_per_lane) so that a row of up to
 * LN_MAX_SPAN channels (SiT-XL's 1152) lies in registers whole and is read
 * from memory once. Longer rows go through in spans of 32·LN_LONG_PL, read
 * twice; the spans' moments are merged exactly as in Chan et al.'s
 * parallel variance.
 * ---------------------------------------------------------------------- */

#define LN_MAX_SPAN (32 * 36)
#define LN_LONG_PL 16
#define LN_ROWS 32 /* the rows of a block of the vectorized kernels */

/* launch(PL) for rows of C channels, PL a compile-time constant
 * (std::integral_constant): 8, 16, 24 or 36 channels a lane for a row in
 * registers, LN_LONG_PL for longer rows. */
template <typename F> static void ln_per_lane(int C, F launch)
{
    if (C <= 32 * 8)
        launch(std::integral_constant<int, 8>());
    else if (C <= 32 * 16)
        launch(std::integral_constant<int, 16>());
    else if (C <= 32 * 24)
        launch(std::integral_constant<int, 24>());
    else if (C <= LN_MAX_SPAN)
        launch(std::integral_constant<int, 36>());
    else
        launch(std::integral_constant<int, LN_LONG_PL>());
}

/* v = the lane's elements of x in the span at c0, 0 past C. */
template <int PL>
__device__ __forceinline__ void ln_load(float *v, const float *x, int c0, int C)
{
#pragma unroll
    for (int k = 0; k < PL; k++) {
        const int i = c0 + lane_id() + 32 * k;
        v[k] = i < C ? x[i] : 0.0f;
    }
}

/* The mean and rstd of row x (C), as float; leaves the row's last span
 * in v. */
template <int PL>
__device__ __forceinline__ void ln_row_moments(float *v, const float *x, int C,
                                               float eps, float *mean, float *rstd)
{
    double n = 0.0, md = 0.0, m2 = 0.0; // count, mean, Σ(x − mean)² so far
    for (int c0 = 0; c0 < C; c0 += 32 * PL) {
        ln_load<PL>(v, x, c0, C);
        const double cn = C - c0 < 32 * PL ? C - c0 : 32 * PL;
        double sum = 0.0, sq = 0.0;
#pragma unroll
        for (int k = 0; k < PL; k++)
            sum += v[k]; // the zeros past C add nothing
        const double cm = warp_sum(sum) / cn;
#pragma unroll
        for (int k = 0; k < PL; k++)
            if (c0 + lane_id() + 32 * k < C)
                sq += (v[k] - cm) * (v[k] - cm);
        sq = warp_sum(sq);
        // Merge the span (cn, cm, sq) in; the first one is taken as is.
        const double delta = cm - md, tot = n + cn;
        md = n == 0.0 ? cm : md + delta * cn / tot;
        m2 += sq + delta * delta * n * cn / tot;
        n = tot;
    }
    *mean = (float)md;
    *rstd = (float)(1.0 / sqrt(m2 / C + eps));
}

/* shift and scale NULL: plain LayerNorm. o16 (unless NULL): out's bf16
 * view; out NULL: the view only (a sole view). */
template <int PL>
__global__ void ln_modulate_forward_kernel(float *out, __nv_bfloat16 *o16,
                                           float *mean, float *rstd,
                                           const float *inp,
                                           const float *shift,
                                           const float *scale, int ldm, int T,
                                           int N, int C, float eps)
{
    const size_t row = warp_row();
    if (row >= (size_t)N)
        return; // the whole warp: row depends on the warp only
    const float *x = inp + row * C; // (C)
    float *o = out ? out + row * C : NULL;
    const size_t ada = (row / T) * ldm; // this sample's shift and scale
    float v[PL], m, s;
    ln_row_moments<PL>(v, x, C, eps, &m, &s);
    for (int c0 = 0; c0 < C; c0 += 32 * PL) {
        if (C > 32 * PL) // one span: v holds it still
            ln_load<PL>(v, x, c0, C);
#pragma unroll
        for (int k = 0; k < PL; k++) {
            const int i = c0 + lane_id() + 32 * k;
            if (i >= C)
                break;
            const float xhat = (v[k] - m) * s;
            const float y = scale ? xhat * (1.0f + scale[ada + i]) + shift[ada + i] : xhat;
            if (o)
                o[i] = y;
            if (o16)
                o16[row * C + i] = __float2bfloat16(y);
        }
    }
    if (lane_id() == 0) {
        mean[row] = m;
        rstd[row] = s;
    }
}

/* ------------------------------------------------------------------------
 * The vectorized LayerNorm (and modulate) rows: C a multiple of 4 and at
 * most LN_MAX_SPAN, every array 16-byte aligned (bf16 views 8-byte). Lane l
 * holds the float4s l + 32j, j < V (V = PL/4 of ln_per_lane), so a row is
 * one set of 16-byte loads. Sums in float: per lane over its V·4 values,
 * then over the warp (a tree); the variance in a second pass over the
 * registers, Σ(x − mean)². Against the CPU's double these differ by float
 * rounding (about 1e-7 relative at C = 1152).
 * On SiT-B/2 (H200) the scalar kernels above, with their double sums and
 * 137 to 174 registers a thread, ran at 1.2 and 0.6 TB/s: this path keeps
 * fewer registers and more rows in flight.
 * ---------------------------------------------------------------------- */

__device__ __forceinline__ float4 f4_axpb(float4 x, float a, float b) // a·x + b
{
    return make_float4(a * x.x + b, a * x.y + b, a * x.z + b, a * x.w + b);
}
__device__ __forceinline__ float f4_sum(float4 v) { return (v.x + v.y) + (v.z + v.w); }
__device__ __forceinline__ float f4_dot(float4 a, float4 b)
{
    return (a.x * b.x + a.y * b.y) + (a.z * b.z + a.w * b.w);
}

/* The float4 j of lane l in a row of C4 float4s: l + 32j, or -1 past it. */
__device__ __forceinline__ int ln_vec(int j, int C4)
{
    const int i = lane_id() + 32 * j;
    return i < C4 ? i : -1;
}

/* The lane's float4s of row x (C4 of them) into v, zeros past it. */
template <int V>
__device__ __forceinline__ void ln_vec_load(float4 *v, const float4 *x, int C4)
{
#pragma unroll
    for (int j = 0; j < V; j++) {
        const int i = ln_vec(j, C4);
        v[j] = i >= 0 ? x[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
}

/* The row in v (as ln_vec_load left it) to its xhat; its mean and rstd to
 * m and s. */
template <int V>
__device__ __forceinline__ void ln_vec_xhat(float4 *v, int C4, float eps, float *m, float *s)
{
    const float C = 4.0f * C4;
    float sum = 0.0f, sq = 0.0f;
#pragma unroll
    for (int j = 0; j < V; j++)
        sum += f4_sum(v[j]); // the zeros past C add nothing
    const float mean = warp_sum(sum) / C;
#pragma unroll
    for (int j = 0; j < V; j++) {
        v[j] = f4_axpb(v[j], 1.0f, -mean);
        if (ln_vec(j, C4) >= 0)
            sq += f4_dot(v[j], v[j]);
    }
    const float rstd = 1.0f / sqrtf(warp_sum(sq) / C + eps);
#pragma unroll
    for (int j = 0; j < V; j++)
        v[j] = f4_axpb(v[j], rstd, 0.0f);
    *m = mean;
    *s = rstd;
}

/* As ln_modulate_forward_kernel, on the vectorized rows. A block covers
 * LN_ROWS rows of one sample (T rows a sample; plain LayerNorm: one sample
 * of all rows) with the sample's 1 + scale and shift staged once in shared
 * memory; its warps take every ROW_WARPS-th row, each loading its next row
 * before it works on this one. The bounds hold C = 768 (V = 6) to 80
 * registers, six blocks an SM, without spilling. On B2 (N = 65536, an
 * H200) it runs at 76 us, 79% of DRAM bandwidth; one row a warp, with the
 * shift and scale read from global memory after the row's sums, took 108. */
template <int V>
__global__ void __launch_bounds__(ROW_THREADS, V > 6 ? 4 : 6)
    ln_vec_forward_kernel(float *out, __nv_bfloat16 *o16, float *mean, float *rstd,
                          const float *inp, const float *shift, const float *scale, int ldm,
                          int T, int C, int chunks, float eps)
{
    __shared__ float4 gain[32 * V], bias[32 * V]; // 1 + scale[b], shift[b]
    const int w = threadIdx.x / 32, C4 = C / 4;
    const size_t b = blockIdx.x / chunks;
    const int k = blockIdx.x % chunks;
    const int t1 = T - k * LN_ROWS < LN_ROWS ? T : (k + 1) * LN_ROWS;
    if (scale)
        for (int i = threadIdx.x; i < C4; i += blockDim.x) {
            gain[i] = f4_axpb(*(const float4 *)(scale + b * ldm + 4 * i), 1.0f, 1.0f);
            bias[i] = *(const float4 *)(shift + b * ldm + 4 * i);
        }
    __syncthreads();
    const float4 *x = (const float4 *)inp;
    float4 next[V];
    int t = k * LN_ROWS + w;
    if (t < t1)
        ln_vec_load<V>(next, x + (b * T + t) * C4, C4);
    for (; t < t1; t += ROW_WARPS) {
        const size_t row = b * T + t;
        float4 v[V];
#pragma unroll
        for (int j = 0; j < V; j++)
            v[j] = next[j];
        if (t + ROW_WARPS < t1)
            ln_vec_load<V>(next, x + (row + ROW_WARPS) * C4, C4);
        float m, s;
        ln_vec_xhat<V>(v, C4, eps, &m, &s);
#pragma unroll
        for (int j = 0; j < V; j++) {
            const int i = ln_vec(j, C4);
            if (i < 0)
                break;
            float4 y = v[j];
            if (scale) {
                const float4 g = gain[i], h = bias[i];
                y = make_float4(y.x * g.x + h.x, y.y * g.y + h.y, y.z * g.z + h.z,
                                y.w * g.w + h.w);
            }
            if (out)
                ((float4 *)out)[row * C4 + i] = y;
            if (o16)
                store_bf16x4(o16, row * C4 + i, y);
        }
        if (lane_id() == 0) {
            mean[row] = m;
            rstd[row] = s;
        }
    }
}

/* REED_CUDA_LN_VEC=0 keeps the scalar kernels (to time the two). */
static int ln_vec_on(void)
{
    static int on = -1;
    if (on < 0) {
        const char *env = getenv("REED_CUDA_LN_VEC");
        on = !(env && env[0] == '0');
    }
    return on;
}

/* Whether the vectorized rows apply (NULL pointers pass). */
static int ln_vec_ok(int C, int ldm, const void *a, const void *b, const void *c,
                     const void *d, const __nv_bfloat16 *o16)
{
    return C % 4 == 0 && C <= LN_MAX_SPAN && ldm % 4 == 0 && aligned16(a) &&
           aligned16(b) && aligned16(c) && aligned16(d) &&
           (uintptr_t)o16 % 8 == 0 && ln_vec_on();
}

template <int PL>
static void ln_forward_launch(float *out, __nv_bfloat16 *o16, float *mean,
                              float *rstd, const float *inp, const float *shift,
                              const float *scale, int ldm, int T, int N, int C,
                              float eps)
{
    if (ln_vec_ok(C, ldm, out, inp, shift, scale, o16)) {
        const int rows = scale ? T : N; // a sample's
        const int chunks = (rows + LN_ROWS - 1) / LN_ROWS;
        const int blocks = N / rows * chunks;
        ln_vec_forward_kernel<PL / 4><<<blocks, ROW_THREADS, 0, g_cuda.stream>>>(
            out, o16, mean, rstd, inp, shift, scale, ldm, rows, C, chunks, eps);
        LAUNCH_CHECK("ln_vec_forward_kernel");
        return;
    }
    ln_modulate_forward_kernel<PL><<<grid_rows(N), ROW_THREADS, 0, g_cuda.stream>>>(
        out, o16, mean, rstd, inp, shift, scale, ldm, T, N, C, eps);
    LAUNCH_CHECK("ln_modulate_forward_kernel");
}

static void ln_modulate_forward(float *out, float *mean, float *rstd,
                                const float *inp, const float *shift,
                                const float *scale, int ldm, int T, int N,
                                int C, float eps)
{
    if (N <= 0)
        return;
    int skip;
    __nv_bfloat16 *o16 = cuda_view_out_sole(out, (size_t)N * C, &skip);
    if (skip)
        out = NULL;
    ln_per_lane(C, [&](auto pl) {
        ln_forward_launch<decltype(pl)::value>(out, o16, mean, rstd, inp, shift, scale, ldm, T,
                                               N, C, eps);
    });
}

void cuda_layernorm_forward(float *out, float *mean, float *rstd,
                            const float *inp, int N, int C, float eps)
{
    ln_modulate_forward(out, mean, rstd, inp, NULL, NULL, 0, 1, N, C, eps);
}

void cuda_ln_modulate_forward(float *out, float *mean, float *rstd,
                              const float *inp, const float *shift,
                              const float *scale, int ldm, int B, int T, int C,
                              float eps)
{
    ln_modulate_forward(out, mean, rstd, inp, shift, scale, ldm, T, B * T, C,
                        eps);
}

/* The backward, for row x with g the gradient reaching xhat (dout, or
 * dout·(1 + scale[b]) behind a modulate):
 *   dx += rstd · (g − mean(g) − xhat · mean(g·xhat)),  means in double,
 *   dshift[b] += Σ_t dout,  dscale[b] += Σ_t dout·xhat.
 * A block covers LN_ROWS rows of one sample; its warps take every
 * ROW_WARPS-th row. Where the row lies in registers whole, each lane also
 * adds up its channels' dout and dout·xhat over the warp's rows; the block
 * then adds its warps' sums in order into `partial`, and
 * colsum_chunks_kernel adds the blocks of each sample in order: the column
 * sums cost no second pass over dout and inp, and stay deterministic.
 * Longer rows leave them to colsum. */

/* The lane's raw elements in the span at c0, 0 past C: g = dout, d = x − m. */
template <int PL>
__device__ __forceinline__ void ln_load_grads(float *g, float *d,
                                              const float *dout,
                                              const float *x, float m, int c0,
                                              int C)
{
#pragma unroll
    for (int k = 0; k < PL; k++) {
        const int i = c0 + lane_id() + 32 * k;
        g[k] = i < C ? dout[i] : 0.0f;
        d[k] = i < C ? x[i] - m : 0.0f;
    }
}

/* g = dout·(1 + sc) behind a modulate (sc NULL: as is). */
template <int PL>
__device__ __forceinline__ void ln_scale_grads(float *g, const float *sc,
                                               int c0, int C)
{
    if (!sc)
        return;
#pragma unroll
    for (int k = 0; k < PL; k++) {
        const int i = c0 + lane_id() + 32 * k;
        if (i < C)
            g[k] *= 1.0f + sc[i];
    }
}

/* One row: dx (unless NULL) as above; with acc (the row in one span),
 * acc[0][c] += dout and acc[1][c] += dout·xhat for the lane's channels c
 * (the warp's own slice of shared memory: no register per column). */
template <int PL>
__device__ void ln_backward_row(float *dx, const float *gr, const float *x,
                                const float *sc, float m, float s, int C,
                                float (*acc)[32 * PL])
{
    float g[PL], d[PL];
    double gsum = 0.0, gxsum = 0.0;
    for (int c0 = 0; c0 < C; c0 += 32 * PL) {
        ln_load_grads<PL>(g, d, gr, x, m, c0, C);
        if (acc) {
#pragma unroll
            for (int k = 0; k < PL; k++) {
                acc[0][lane_id() + 32 * k] += g[k];
                acc[1][lane_id() + 32 * k] += g[k] * d[k] * s;
            }
        }
        ln_scale_grads<PL>(g, sc, c0, C);
#pragma unroll
        for (int k = 0; k < PL; k++) {
            gsum += g[k];
            gxsum += g[k] * d[k] * s;
        }
    }
    if (!dx)
        return;
    const float gmean = (float)(warp_sum(gsum) / C);
    const float gxmean = (float)(warp_sum(gxsum) / C);
    for (int c0 = 0; c0 < C; c0 += 32 * PL) {
        if (C > 32 * PL) { // one span: g and d hold it still
            ln_load_grads<PL>(g, d, gr, x, m, c0, C);
            ln_scale_grads<PL>(g, sc, c0, C);
        }
#pragma unroll
        for (int k = 0; k < PL; k++) {
            const int i = c0 + lane_id() + 32 * k;
            if (i >= C)
                break;
            dx[i] += s * (g[k] - gmean - d[k] * s * gxmean);
        }
    }
}

/* out[c] = Σ_w acc[w][j][c] over the block's warps in order (j = 0 dshift's
 * sums, 1 dscale's). */
template <int PL>
__device__ void ln_block_colsum(float (*acc)[2][32 * PL], int j, double *out,
                                int C)
{
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        double s = 0.0;
        for (int w = 0; w < ROW_WARPS; w++)
            s += acc[w][j][c];
        out[c] = s;
    }
}

/* Block k of sample b = blockIdx.x / chunks, k = blockIdx.x mod chunks:
 * rows [k·LN_ROWS, (k+1)·LN_ROWS) ∩ [0, T). partial (with sums): dshift's
 * sums (B, chunks, C), then dscale's. */
template <int PL>
__global__ void ln_modulate_backward_kernel(float *dinp, double *partial,
                                            const float *dout,
                                            const float *inp,
                                            const float *mean,
                                            const float *rstd,
                                            const float *scale, int ldm, int T,
                                            int C, int chunks)
{
    __shared__ float acc[ROW_WARPS][2][32 * PL]; // each warp's column sums
    const int w = threadIdx.x / 32;
    const size_t b = blockIdx.x / chunks;
    const int k = blockIdx.x % chunks;
    const int t1 = T - k * LN_ROWS < LN_ROWS ? T : (k + 1) * LN_ROWS;
    const float *sc = scale ? scale + b * ldm : NULL;
    if (partial) // the warp's slice: each lane reads only what it zeroes
        for (int i = lane_id(); i < 32 * PL; i += 32)
            acc[w][0][i] = acc[w][1][i] = 0.0f;
    for (int t = k * LN_ROWS + w; t < t1; t += ROW_WARPS) {
        const size_t row = b * T + t;
        ln_backward_row<PL>(dinp ? dinp + row * C : NULL, dout + row * C,
                            inp + row * C, sc, mean[row], rstd[row], C,
                            partial ? acc[w] : NULL);
    }
    if (!partial)
        return; // the whole block: partial is the launch's
    __syncthreads();
    const size_t at = (size_t)blockIdx.x * C; // = (b·chunks + k)·C
    ln_block_colsum<PL>(acc, 0, partial + at, C);
    ln_block_colsum<PL>(acc, 1, partial + (size_t)gridDim.x * C + at, C);
}

/* As ln_modulate_backward_kernel, on the vectorized rows: each warp's
 * column sums in shared memory as float4s (acc), the gain 1 + scale[b]
 * staged once per block. A row's loads (dout, x and dinp's old value) are
 * all issued before any is used, so a row waits for memory once. On B2
 * (N = 65536, C = 768, an H200) Nsight Compute found the kernel that read
 * dinp after the row's sums stalled on loads 84% of its cycles, at 57% of
 * DRAM bandwidth and 296 us; this one runs at 82% and 206 us. What stays in
 * registers across the sums is xhat and dinp + rstd·g:
 *   dx = (dx + rstd·g) − rstd·mean(g) − xhat·rstd·mean(g·xhat).
 * The launch bounds hold C = 768 (V = 6) to 96 registers, five blocks an
 * SM, without spilling; V = 9 (C = 1152) needs about 150. */
template <int V>
__global__ void __launch_bounds__(ROW_THREADS, V > 6 ? 3 : 5)
    ln_vec_backward_kernel(float *dinp, double *partial, const float *dout, const float *inp,
                           const float *mean, const float *rstd, const float *scale, int ldm,
                           int T, int C, int chunks)
{
    __shared__ float4 acc[ROW_WARPS][2][32 * V]; // each warp's Σ dout, Σ dout·xhat
    __shared__ float4 gain[32 * V];               // 1 + scale[b]
    const int w = threadIdx.x / 32, C4 = C / 4;
    const size_t b = blockIdx.x / chunks;
    const int k = blockIdx.x % chunks;
    const int t1 = T - k * LN_ROWS < LN_ROWS ? T : (k + 1) * LN_ROWS;
    if (scale)
        for (int i = threadIdx.x; i < C4; i += blockDim.x)
            gain[i] = f4_axpb(*(const float4 *)(scale + b * ldm + 4 * i), 1.0f, 1.0f);
    if (partial)
        for (int i = lane_id(); i < C4; i += 32)
            acc[w][0][i] = acc[w][1][i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    __syncthreads();
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int t = k * LN_ROWS + w; t < t1; t += ROW_WARPS) {
        const size_t row = b * T + t;
        const float4 *x = (const float4 *)(inp + row * C), *gr = (const float4 *)(dout + row * C);
        float4 *dx = dinp ? (float4 *)(dinp + row * C) : NULL;
        float4 g[V], xh[V], d[V];
#pragma unroll
        for (int j = 0; j < V; j++) {
            const int i = ln_vec(j, C4);
            g[j] = i >= 0 ? gr[i] : zero;
            xh[j] = i >= 0 ? x[i] : zero;
            d[j] = i >= 0 && dx ? dx[i] : zero;
        }
        const float m = mean[row], s = rstd[row];
        float gsum = 0.0f, gxsum = 0.0f;
#pragma unroll
        for (int j = 0; j < V; j++) {
            const int i = ln_vec(j, C4);
            if (i < 0)
                break;
            xh[j] = f4_axpb(xh[j], s, -m * s);
            if (partial) {
                float4 &a0 = acc[w][0][i], &a1 = acc[w][1][i];
                a0 = make_float4(a0.x + g[j].x, a0.y + g[j].y, a0.z + g[j].z, a0.w + g[j].w);
                a1 = make_float4(a1.x + g[j].x * xh[j].x, a1.y + g[j].y * xh[j].y,
                                 a1.z + g[j].z * xh[j].z, a1.w + g[j].w * xh[j].w);
            }
            if (scale) {
                const float4 f = gain[i];
                g[j] = make_float4(g[j].x * f.x, g[j].y * f.y, g[j].z * f.z, g[j].w * f.w);
            }
            gsum += f4_sum(g[j]);
            gxsum += f4_dot(g[j], xh[j]);
            d[j] = make_float4(d[j].x + s * g[j].x, d[j].y + s * g[j].y, d[j].z + s * g[j].z,
                               d[j].w + s * g[j].w);
        }
        if (!dx)
            continue;
        const float sg = s * (warp_sum(gsum) / C), sgx = s * (warp_sum(gxsum) / C);
#pragma unroll
        for (int j = 0; j < V; j++) {
            const int i = ln_vec(j, C4);
            if (i < 0)
                break;
            dx[i] = make_float4(d[j].x - sg - xh[j].x * sgx, d[j].y - sg - xh[j].y * sgx,
                                d[j].z - sg - xh[j].z * sgx, d[j].w - sg - xh[j].w * sgx);
        }
    }
    if (!partial)
        return; // the whole block: partial is the launch's
    __syncthreads();
    // The warps' sums in order, per channel, into the block's partial rows.
    const size_t at = (size_t)blockIdx.x * C; // = (b·chunks + k)·C
    for (int i = threadIdx.x; i < C4; i += blockDim.x)
        for (int j = 0; j < 2; j++) {
            double sum[4] = {0.0, 0.0, 0.0, 0.0};
            for (int v = 0; v < ROW_WARPS; v++) {
                const float4 a = acc[v][j][i];
                sum[0] += a.x, sum[1] += a.y, sum[2] += a.z, sum[3] += a.w;
            }
            double *o = partial + (size_t)j * gridDim.x * C + at + 4 * i;
            o[0] = sum[0], o[1] = sum[1], o[2] = sum[2], o[3] = sum[3];
        }
}

template <int PL>
static void ln_backward_launch(float *dinp, double *partial, const float *dout,
                               const float *inp, const float *mean,
                               const float *rstd, const float *scale, int ldm,
                               int B, int T, int C, int chunks)
{
    if (ln_vec_ok(C, ldm, dinp, dout, inp, scale, NULL)) {
        ln_vec_backward_kernel<PL / 4><<<B * chunks, ROW_THREADS, 0, g_cuda.stream>>>(
            dinp, partial, dout, inp, mean, rstd, scale, ldm, T, C, chunks);
        LAUNCH_CHECK("ln_vec_backward_kernel");
        return;
    }
    ln_modulate_backward_kernel<PL><<<B * chunks, ROW_THREADS, 0, g_cuda.stream>>>(
        dinp, partial, dout, inp, mean, rstd, scale, ldm, T, C, chunks);
    LAUNCH_CHECK("ln_modulate_backward_kernel");
}

/* dinp (unless NULL) and, with partial, the blocks' column sums; then
 * dshift and dscale (unless NULL) from them. */
static void ln_backward_rows(float *dinp, float *dshift, float *dscale,
                             const float *dout, const float *inp,
                             const float *mean, const float *rstd,
                             const float *scale, int ldm, int B, int T, int C)
{
    const int chunks = (T + LN_ROWS - 1) / LN_ROWS;
    const size_t per_out = (size_t)B * chunks * C; // one output's block sums
    double *partial = dshift || dscale ? partial_scratch(2 * per_out) : NULL;
    ln_per_lane(C, [&](auto pl) {
        ln_backward_launch<decltype(pl)::value>(dinp, partial, dout, inp, mean, rstd, scale, ldm,
                                                B, T, C, chunks);
    });
    const size_t n = (size_t)B * C;
    if (dshift)
        colsum_chunks_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
            dshift, ldm, partial, B, T, C, chunks, COLSUM_ADD);
    if (dscale)
        colsum_chunks_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
            dscale, ldm, partial + per_out, B, T, C, chunks, COLSUM_ADD);
    LAUNCH_CHECK("colsum_chunks_kernel");
}

/* scale NULL: plain LayerNorm (B = 1 group of T = N rows, no dshift or
 * dscale). */
static void ln_modulate_backward(float *dinp, float *dshift, float *dscale,
                                 const float *dout, const float *inp,
                                 const float *mean, const float *rstd,
                                 const float *scale, int ldm, int B, int T,
                                 int C)
{
    if (B <= 0 || T <= 0 || C <= 0)
        return;
    if (C <= LN_MAX_SPAN) { // the column sums in the same pass
        if (dinp || dshift || dscale)
            ln_backward_rows(dinp, dshift, dscale, dout, inp, mean, rstd,
                             scale, ldm, B, T, C);
        return;
    }
    if (dinp)
        ln_backward_rows(dinp, NULL, NULL, dout, inp, mean, rstd, scale, ldm,
                         B, T, C);
    // dshift[b] += Σ_t dout; dscale[b] += Σ_t dout·xhat (recomputed)
    if (dshift)
        colsum(dshift, ldm, dout, NULL, B, T, C, COLSUM_ADD);
    if (dscale)
        colsum_launch(dscale, ldm, dout, inp, mean, rstd, B, T, C, COLSUM_ADD);
}

void cuda_layernorm_backward(float *dinp, const float *dout, const float *inp,
                             const float *mean, const float *rstd, int N, int C)
{
    ln_modulate_backward(dinp, NULL, NULL, dout, inp, mean, rstd, NULL, 0, 1,
                         N, C);
}

void cuda_ln_modulate_backward(float *dinp, float *dshift, float *dscale,
                               const float *dout, const float *inp,
                               const float *mean, const float *rstd,
                               const float *scale, int ldm, int B, int T,
                               int C)
{
    ln_modulate_backward(dinp, dshift, dscale, dout, inp, mean, rstd, scale,
                         ldm, B, T, C);
}

/* ------------------------------------------------------------------------
 * adaLN: element i of a (B,T,C) tensor is channel c = i mod C of sample
 * b = i / (T·C); its shift/scale/gate is vec[b·ldm + c].
 * ---------------------------------------------------------------------- */

__device__ __forceinline__ size_t adaln_index(size_t i, int T, int C, int ldm)
{
    const size_t b = i / ((size_t)T * C);
    return b * ldm + i % C;
}

/* out = x·(1 + scale[b]) + shift[b]; out may alias x. */
__global__ void modulate_forward_kernel(float *out, const float *x,
                                        const float *shift, const float *scale,
                                        int ldm, int T, int C, size_t n)
{
    GRID_LOOP(i, n) {
        const size_t v = adaln_index(i, T, C, ldm);
        out[i] = x[i] * (1.0f + scale[v]) + shift[v];
    }
}

void cuda_modulate_forward(float *out, const float *x, const float *shift,
                           const float *scale, int ldm, int B, int T, int C)
{
    const size_t n = (size_t)B * T * C;
    if (!n)
        return;
    modulate_forward_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        out, x, shift, scale, ldm, T, C, n);
    LAUNCH_CHECK("modulate_forward_kernel");
}

/* dx += dout·(1 + scale[b]) */
__global__ void modulate_dx_kernel(float *dx, const float *dout,
                                   const float *scale, int ldm, int T, int C,
                                   size_t n)
{
    GRID_LOOP(i, n)
        dx[i] += dout[i] * (1.0f + scale[adaln_index(i, T, C, ldm)]);
}

void cuda_modulate_backward(float *dx, float *dshift, float *dscale,
                            const float *dout, const float *x,
                            const float *scale, int ldm, int B, int T, int C)
{
    const size_t n = (size_t)B * T * C;
    if (!n)
        return;
    if (dx) {
        modulate_dx_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
            dx, dout, scale, ldm, T, C, n);
        LAUNCH_CHECK("modulate_dx_kernel");
    }
    // dshift[b] += Σ_t dout; dscale[b] += Σ_t dout·x
    if (dshift)
        colsum(dshift, ldm, dout, NULL, B, T, C, COLSUM_ADD);
    if (dscale)
        colsum(dscale, ldm, dout, x, B, T, C, COLSUM_ADD);
}

/* Four floats per thread (16-byte loads and stores, 8-byte bf16 stores)
 * where every array is aligned for it: the elementwise kernels below then
 * take n/4 vectors and the last n % 4 one at a time; else n4 is 0. */
static size_t vec4_count(size_t n, const float *a, const float *b,
                         const float *c, const __nv_bfloat16 *o16)
{
    const int ok = (uintptr_t)a % 16 == 0 && (uintptr_t)b % 16 == 0 &&
                   (uintptr_t)c % 16 == 0 && (uintptr_t)o16 % 8 == 0;
    return ok ? n / 4 : 0;
}

/* Threads for a kernel doing n4 vectors and then n − 4·n4 single values. */
static unsigned grid_vec4(size_t n, size_t n4)
{
    const size_t rest = n - 4 * n4;
    return grid_for(n4 > rest ? n4 : rest, THREADS);
}

/* Vector j of x = g·v elementwise (g: four factors, a gate's or a slope's),
 * plus vector j of xs when add; x16 (unless NULL) gets its bf16, and with
 * keep 0 only x16 is written (a sole view). */
__device__ __forceinline__ void store_scaled4(float *x, const float *xs, __nv_bfloat16 *x16,
                                             size_t j, const float *g, float4 v, int add,
                                             int keep)
{
    float4 r = make_float4(g[0] * v.x, g[1] * v.y, g[2] * v.z, g[3] * v.w);
    if (add) {
        const float4 o = ((const float4 *)xs)[j];
        r.x += o.x, r.y += o.y, r.z += o.z, r.w += o.w;
    }
    if (keep)
        ((float4 *)x)[j] = r;
    if (x16)
        store_bf16x4(x16, j, r);
}

/* x = xs + gate[b]·y (xs: x itself, or the source of a copy into x), or
 * x = gate[b]·y when add is 0; x16 (unless NULL) gets the bf16 of the new
 * x, and with keep 0 only x16 is written (a sole view; add is 0 then).
 * Vectors need C % 4 == 0 (a vector's four channels then share a sample). */
__global__ void gated_add_kernel(float *x, const float *xs, __nv_bfloat16 *x16,
                                 const float *y, const float *gate, int ldm, int T,
                                 int C, size_t n, size_t n4, int add, int keep)
{
    GRID_LOOP(j, n4) {
        const float *g = gate + adaln_index(4 * j, T, C, ldm);
        store_scaled4(x, xs, x16, j, g, ((const float4 *)y)[j], add, keep);
    }
    GRID_LOOP(k, n - 4 * n4) {
        const size_t i = 4 * n4 + k;
        float v = gate[adaln_index(i, T, C, ldm)] * y[i];
        v = add ? xs[i] + v : v;
        if (keep)
            x[i] = v;
        if (x16)
            x16[i] = __float2bfloat16(v);
    }
}

static void gated_add(float *x, const float *xs, __nv_bfloat16 *x16, const float *y,
                      const float *gate, int ldm, int T, int C, size_t n, int add,
                      int keep)
{
    const size_t n4 = C % 4 == 0 ? vec4_count(n, x, y, xs, x16) : 0;
    gated_add_kernel<<<grid_vec4(n, n4), THREADS, 0, g_cuda.stream>>>(
        x, xs, x16, y, gate, ldm, T, C, n, n4, add, keep);
    LAUNCH_CHECK("gated_add_kernel");
}

void cuda_gated_add_forward(float *x, const float *y, const float *gate,
                            int ldm, int B, int T, int C)
{
    const size_t n = (size_t)B * T * C;
    // x just copied from src (a lazy copy, cuda_zero.cu): x = src + gate·y
    const float *src = (const float *)cuda_copy_take(x, n * sizeof(float));
    if (n)
        gated_add(x, src ? src : x, NULL, y, gate, ldm, T, C, n, 1, 1);
}

/* gated_add_backward in one pass over dx (where C % 4 == 0 and the arrays
 * are 16-byte aligned): dy (+)= gate[b]·dx as gated_add_kernel (dy16,
 * keep), and with partial the column sums Σ_t dx·y over block k's rows of
 * sample b into partial[(b·chunks + k)·C + c], which colsum_chunks_kernel
 * adds up in order. A block is 32 × GA_PHASES threads over GA_ROWS rows:
 * x a float4 of channels (a stripe of 128 a block), y a phase of the rows;
 * the phases' sums are added in order, in double. */
#define GA_PHASES 8
#define GA_ROWS 64
__global__ void gated_add_backward_kernel(float *dy, __nv_bfloat16 *dy16, double *partial,
                                          const float *dx, const float *y, const float *gate,
                                          int ldm, int T, int C, int chunks, int add, int keep)
{
    __shared__ float4 part[GA_PHASES][32];
    const int c4 = blockIdx.x * 32 + threadIdx.x; // the float4 in a row
    const size_t b = blockIdx.y / chunks;
    const int k = blockIdx.y % chunks;
    const int t1 = T - k * GA_ROWS < GA_ROWS ? T : (k + 1) * GA_ROWS;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (4 * c4 < C) {
        const float4 g = *(const float4 *)(gate + b * ldm + 4 * c4);
        for (int t = k * GA_ROWS + threadIdx.y; t < t1; t += GA_PHASES) {
            const size_t j = (b * T + t) * (C / 4) + c4;
            const float4 d = ((const float4 *)dx)[j], yv = ((const float4 *)y)[j];
            acc.x += d.x * yv.x, acc.y += d.y * yv.y, acc.z += d.z * yv.z, acc.w += d.w * yv.w;
            if (dy)
                store_scaled4(dy, dy, dy16, j, &g.x, d, add, keep);
        }
    }
    if (!partial)
        return; // the whole block: partial is the launch's
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y != 0 || 4 * c4 >= C)
        return;
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    for (int r = 0; r < GA_PHASES; r++) {
        const float4 p = part[r][threadIdx.x];
        s[0] += p.x, s[1] += p.y, s[2] += p.z, s[3] += p.w;
    }
    double *o = partial + (size_t)blockIdx.y * C + 4 * c4;
    o[0] = s[0], o[1] = s[1], o[2] = s[2], o[3] = s[3];
}

/* The one-pass gated_add_backward where it applies; 0, or -1 to take the
 * two passes. */
static int gated_add_backward_fused(float *dy, __nv_bfloat16 *dy16, float *dgate,
                                    const float *dx, const float *y, const float *gate,
                                    int ldm, int B, int T, int C, int add, int keep)
{
    const int chunks = (T + GA_ROWS - 1) / GA_ROWS;
    const int aligned = C % 4 == 0 && ldm % 4 == 0 && (uintptr_t)dy % 16 == 0 &&
                        (uintptr_t)dx % 16 == 0 && (uintptr_t)y % 16 == 0 &&
                        (uintptr_t)gate % 16 == 0 && (uintptr_t)dy16 % 8 == 0;
    if (!aligned || (long)B * chunks > 65535 || !dgate)
        return -1;
    const size_t n = (size_t)B * C;
    double *partial = partial_scratch(n * chunks);
    const dim3 grid((unsigned)((C / 4 + 31) / 32), (unsigned)(B * chunks)), block(32, GA_PHASES);
    gated_add_backward_kernel<<<grid, block, 0, g_cuda.stream>>>(dy, dy16, partial, dx, y, gate,
                                                                 ldm, T, C, chunks, add, keep);
    LAUNCH_CHECK("gated_add_backward_kernel");
    colsum_chunks_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        dgate, ldm, partial, B, T, C, chunks, COLSUM_ADD);
    LAUNCH_CHECK("colsum_chunks_kernel");
    return 0;
}

void cuda_gated_add_backward(float *dy, float *dgate, const float *dx,
                             const float *y, const float *gate, int ldm,
                             int B, int T, int C)
{
    const size_t n = (size_t)B * T * C;
    // dy freshly zeroed (cuda_zero.cu): written instead of added to.
    const int add = !cuda_zero_take(dy, n * sizeof(float));
    if (!n)
        return;
    // dy's view for the linear backward that reads it next (only the view,
    // a sole one, where dy is written anew)
    int skip = 0;
    __nv_bfloat16 *dy16 = !dy ? NULL : add ? cuda_view_out(dy, n) : cuda_view_out_sole(dy, n, &skip);
    if (gated_add_backward_fused(dy, dy16, dgate, dx, y, gate, ldm, B, T, C, add, !skip) == 0)
        return;
    // Two passes: dy += gate[b]·dx, the forward kernel with (x, y) = (dy,
    // dx); then dgate[b] += Σ_t dx·y
    if (dy)
        gated_add(dy, dy, dy16, dx, gate, ldm, T, C, n, add, !skip);
    if (dgate)
        colsum(dgate, ldm, dx, y, B, T, C, COLSUM_ADD);
}

/* ------------------------------------------------------------------------
 * GELU (tanh approximation, PyTorch approximate="tanh") and SiLU, with the
 * bf16 view of the output for the linear layer that reads it next
 * ---------------------------------------------------------------------- */

#define GELU_K 0.7978845608028654f /* sqrt(2/π) */
#define GELU_A 0.044715f
enum { ACT_GELU, ACT_SILU };

/* gelu(x) = 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³);
 * silu(x) = x·σ(x) = x / (1 + e^{−x}) */
__device__ __forceinline__ float act_value(float x, int act)
{
    if (act == ACT_SILU)
        return x / (1.0f + expf(-x));
    const float u = GELU_K * (x + GELU_A * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}

/* gelu'(x) = 0.5·(1 + tanh u) + 0.5·x·(1 − tanh² u)·√(2/π)·(1 + 3·0.044715·x²);
 * silu'(x) = σ(x)·(1 + x·(1 − σ(x))) */
__device__ __forceinline__ float act_slope(float x, int act)
{
    if (act == ACT_SILU) {
        const float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f + x * (1.0f - s));
    }
    const float u = GELU_K * (x + GELU_A * x * x * x);
    const float th = tanhf(u);
    const float du = GELU_K * (1.0f + 3.0f * GELU_A * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
}

/* out = act(inp) (out may alias inp); o16 (unless NULL) = its bf16, and
 * with keep 0 only o16 is written (a sole view). */
__global__ void act_forward_kernel(float *out, __nv_bfloat16 *o16,
                                   const float *inp, size_t n, size_t n4, int act,
                                   int keep)
{
    GRID_LOOP(j, n4) {
        float4 v = ((const float4 *)inp)[j];
        v.x = act_value(v.x, act), v.y = act_value(v.y, act);
        v.z = act_value(v.z, act), v.w = act_value(v.w, act);
        if (keep)
            ((float4 *)out)[j] = v;
        if (o16)
            store_bf16x4(o16, j, v);
    }
    GRID_LOOP(k, n - 4 * n4) {
        const size_t i = 4 * n4 + k;
        const float v = act_value(inp[i], act);
        if (keep)
            out[i] = v;
        if (o16)
            o16[i] = __float2bfloat16(v);
    }
}

/* dinp += act'(inp)·dout, or = when add is 0; o16 and keep as above, of
 * dinp. */
__global__ void act_backward_kernel(float *dinp, __nv_bfloat16 *o16,
                                    const float *dout, const float *inp,
                                    size_t n, size_t n4, int act, int add, int keep)
{
    GRID_LOOP(j, n4) {
        const float4 x = ((const float4 *)inp)[j];
        const float s[4] = {act_slope(x.x, act), act_slope(x.y, act), act_slope(x.z, act),
                            act_slope(x.w, act)};
        store_scaled4(dinp, dinp, o16, j, s, ((const float4 *)dout)[j], add, keep);
    }
    GRID_LOOP(k, n - 4 * n4) {
        const size_t i = 4 * n4 + k;
        float v = act_slope(inp[i], act) * dout[i];
        v = add ? dinp[i] + v : v;
        if (keep)
            dinp[i] = v;
        if (o16)
            o16[i] = __float2bfloat16(v);
    }
}

static void act_forward(float *out, const float *inp, size_t n, int act)
{
    if (!n)
        return;
    int skip;
    __nv_bfloat16 *o16 = cuda_view_out_sole(out, n, &skip);
    const size_t n4 = vec4_count(n, out, inp, NULL, o16);
    act_forward_kernel<<<grid_vec4(n, n4), THREADS, 0, g_cuda.stream>>>(out, o16, inp, n, n4,
                                                                        act, !skip);
    LAUNCH_CHECK("act_forward_kernel");
}

/* dinp += act'(inp)·dout, or = with add 0; dinp may be dout itself. */
static void act_backward_into(float *dinp, const float *dout, const float *inp, size_t n, int act,
                              int add)
{
    // Written anew: only the view, a sole one, where views allow.
    int skip = 0;
    __nv_bfloat16 *o16 = add ? cuda_view_out(dinp, n) : cuda_view_out_sole(dinp, n, &skip);
    const size_t n4 = vec4_count(n, dinp, dout, inp, o16);
    act_backward_kernel<<<grid_vec4(n, n4), THREADS, 0, g_cuda.stream>>>(dinp, o16, dout, inp,
                                                                         n, n4, act, add, !skip);
    LAUNCH_CHECK("act_backward_kernel");
}

static void act_backward(float *dinp, const float *dout, const float *inp,
                         size_t n, int act)
{
    // dinp freshly zeroed (cuda_zero.cu): written instead of added to.
    const int add = !cuda_zero_take(dinp, n * sizeof(float));
    if (dinp && n)
        act_backward_into(dinp, dout, inp, n, act, add);
}

void cuda_gelu_forward(float *out, const float *inp, size_t n)
{
    act_forward(out, inp, n, ACT_GELU);
}

void cuda_gelu_backward(float *dinp, const float *dout, const float *inp,
                        size_t n)
{
    act_backward(dinp, dout, inp, n, ACT_GELU);
}

void cuda_gelu_backward_write(float *dinp, const float *dout, const float *inp, size_t n)
{
    if (n)
        act_backward_into(dinp, dout, inp, n, ACT_GELU, 0);
}

void cuda_silu_forward(float *out, const float *inp, size_t n)
{
    act_forward(out, inp, n, ACT_SILU);
}

void cuda_silu_backward(float *dinp, const float *dout, const float *inp,
                        size_t n)
{
    act_backward(dinp, dout, inp, n, ACT_SILU);
}

/* ------------------------------------------------------------------------
 * Attention softmax, one warp per row of T logits (the 1/sqrt(hs) scale is
 * already in the GEMM's alpha).
 * ---------------------------------------------------------------------- */

/* In place: row = exp(row − max) / Σ exp(row − max). */
__global__ void softmax_rows_kernel(float *S, size_t rows, int T)
{
    const size_t row = warp_row();
    const int lane = lane_id();
    if (row >= rows)
        return;
    float *r = S + row * T; // (T)
    float mx = -INFINITY;
    for (int j = lane; j < T; j += 32)
        mx = fmaxf(mx, r[j]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < T; j += 32) {
        const float e = expf(r[j] - mx);
        r[j] = e;
        sum += e;
    }
    const float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < T; j += 32)
        r[j] *= inv;
}

void cuda_softmax_rows(float *S, size_t rows, int T)
{
    if (!rows || T <= 0)
        return;
    softmax_rows_kernel<<<grid_rows(rows), ROW_THREADS, 0, g_cuda.stream>>>(S, rows, T);
    LAUNCH_CHECK("softmax_rows_kernel");
}

/* In place: D holds dP on entry, dS = P∘(dP − rowsum(dP∘P)) on exit. */
__global__ void softmax_rows_backward_kernel(float *D, const float *P,
                                             size_t rows, int T)
{
    const size_t row = warp_row();
    const int lane = lane_id();
    if (row >= rows)
        return;
    float *d = D + row * T;
    const float *p = P + row * T;
    float dot = 0.0f;
    for (int j = lane; j < T; j += 32)
        dot += d[j] * p[j];
    dot = warp_sum(dot);
    for (int j = lane; j < T; j += 32)
        d[j] = p[j] * (d[j] - dot);
}

void cuda_softmax_rows_backward(float *D, const float *P, size_t rows, int T)
{
    if (!rows || T <= 0)
        return;
    softmax_rows_backward_kernel<<<grid_rows(rows), ROW_THREADS, 0, g_cuda.stream>>>(
        D, P, rows, T);
    LAUNCH_CHECK("softmax_rows_backward_kernel");
}

/* The same two with bf16 probabilities (the GEMM path on bf16 operands):
 * P = softmax(S) rounded to bf16; dS = P∘(dP − rowsum(dP∘P)) rounded to
 * bf16, from dP (fp32) and P. A row of up to SOFTMAX_REG_T logits is held
 * in registers (lane l has elements l, l + 32, ...), so each input is read
 * once; longer rows are read once per pass. */
#define SOFTMAX_REG_T 256
#define SOFTMAX_VALS (SOFTMAX_REG_T / 32)

__global__ void softmax_rows_bf16_kernel(__nv_bfloat16 *P, const float *S,
                                         size_t rows, int T)
{
    const size_t row = warp_row();
    const int lane = lane_id();
    if (row >= rows)
        return;
    const float *r = S + row * T; // (T)
    __nv_bfloat16 *p = P + row * T;
    float mx = -INFINITY, sum = 0.0f;
    if (T <= SOFTMAX_REG_T) {
        float v[SOFTMAX_VALS];
#pragma unroll
        for (int k = 0; k < SOFTMAX_VALS; k++) {
            const int j = lane + 32 * k;
            v[k] = j < T ? r[j] : -INFINITY;
            mx = fmaxf(mx, v[k]);
        }
        mx = warp_max(mx);
#pragma unroll
        for (int k = 0; k < SOFTMAX_VALS; k++) {
            v[k] = expf(v[k] - mx); // 0 past T
            sum += v[k];
        }
        const float inv = 1.0f / warp_sum(sum);
#pragma unroll
        for (int k = 0; k < SOFTMAX_VALS; k++) {
            const int j = lane + 32 * k;
            if (j < T)
                p[j] = __float2bfloat16(v[k] * inv);
        }
        return;
    }
    for (int j = lane; j < T; j += 32)
        mx = fmaxf(mx, r[j]);
    mx = warp_max(mx);
    for (int j = lane; j < T; j += 32)
        sum += expf(r[j] - mx);
    const float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < T; j += 32)
        p[j] = __float2bfloat16(expf(r[j] - mx) * inv);
}

void cuda_softmax_rows_bf16(__nv_bfloat16 *P, const float *S, size_t rows, int T)
{
    if (!rows || T <= 0)
        return;
    softmax_rows_bf16_kernel<<<grid_rows(rows), ROW_THREADS, 0, g_cuda.stream>>>(P, S, rows, T);
    LAUNCH_CHECK("softmax_rows_bf16_kernel");
}

__global__ void softmax_rows_backward_bf16_kernel(__nv_bfloat16 *dS,
                                                  const float *dP,
                                                  const __nv_bfloat16 *P,
                                                  size_t rows, int T)
{
    const size_t row = warp_row();
    const int lane = lane_id();
    if (row >= rows)
        return;
    const float *d = dP + row * T;
    const __nv_bfloat16 *p = P + row * T;
    __nv_bfloat16 *o = dS + row * T;
    float dot = 0.0f;
    if (T <= SOFTMAX_REG_T) {
        float dv[SOFTMAX_VALS], pv[SOFTMAX_VALS];
#pragma unroll
        for (int k = 0; k < SOFTMAX_VALS; k++) {
            const int j = lane + 32 * k;
            dv[k] = j < T ? d[j] : 0.0f;
            pv[k] = j < T ? __bfloat162float(p[j]) : 0.0f;
            dot += dv[k] * pv[k];
        }
        dot = warp_sum(dot);
#pragma unroll
        for (int k = 0; k < SOFTMAX_VALS; k++) {
            const int j = lane + 32 * k;
            if (j < T)
                o[j] = __float2bfloat16(pv[k] * (dv[k] - dot));
        }
        return;
    }
    for (int j = lane; j < T; j += 32)
        dot += d[j] * __bfloat162float(p[j]);
    dot = warp_sum(dot);
    for (int j = lane; j < T; j += 32)
        o[j] = __float2bfloat16(__bfloat162float(p[j]) * (d[j] - dot));
}

void cuda_softmax_rows_backward_bf16(__nv_bfloat16 *dS, const float *dP,
                                     const __nv_bfloat16 *P, size_t rows, int T)
{
    if (!rows || T <= 0)
        return;
    softmax_rows_backward_bf16_kernel<<<grid_rows(rows), ROW_THREADS, 0, g_cuda.stream>>>(
        dS, dP, P, rows, T);
    LAUNCH_CHECK("softmax_rows_backward_bf16_kernel");
}

/* ------------------------------------------------------------------------
 * Elementwise helpers
 * ---------------------------------------------------------------------- */

/* out = a·x + b·y */
__global__ void axpby_kernel(float *out, float a, const float *x, float b,
                             const float *y, size_t n)
{
    GRID_LOOP(i, n)
        out[i] = a * x[i] + b * y[i];
}

__global__ void add_kernel(float *out, const float *a, const float *b, size_t n)
{
    GRID_LOOP(i, n)
        out[i] = a[i] + b[i];
}

__global__ void scale_kernel(float *x, float s, size_t n)
{
    GRID_LOOP(i, n)
        x[i] *= s;
}

void cuda_add(float *out, const float *a, const float *b, size_t n)
{
    if (!n)
        return;
    add_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(out, a, b, n);
    LAUNCH_CHECK("add_kernel");
}

/* acc += x */
void cuda_accumulate(float *acc, const float *x, size_t n)
{
    cuda_add(acc, acc, x, n);
}

void cuda_scale(float *x, float s, size_t n)
{
    if (!n)
        return;
    scale_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(x, s, n);
    LAUNCH_CHECK("scale_kernel");
}

void cuda_axpby(float *out, float a, const float *x, float b, const float *y,
                size_t n)
{
    if (!n)
        return;
    axpby_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(out, a, x, b, y, n);
    LAUNCH_CHECK("axpby_kernel");
}

/* ------------------------------------------------------------------------
 * Σ x² in double: each block writes a partial sum, then one block adds the
 * partials in a fixed order (deterministic).
 * ---------------------------------------------------------------------- */

__global__ void sumsq_partial_kernel(double *partial, const float *x, size_t n)
{
    double acc = 0.0;
    GRID_LOOP(i, n)
        acc += (double)x[i] * x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = acc;
}

/* result[0] = Σ partial[0 .. nparts); one block. */
__global__ void sum_partials_kernel(double *result, const double *partial,
                                    int nparts)
{
    double acc = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x)
        acc += partial[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0)
        result[0] = acc;
}

double cuda_finish_sum(int nparts)
{
    sum_partials_kernel<<<1, RED_THREADS, 0, g_cuda.stream>>>(
        g_cuda.red_result, g_cuda.red_partial, nparts);
    LAUNCH_CHECK("sum_partials_kernel");
    return cuda_read_double(g_cuda.red_result);
}

double cuda_sum_squares(const float *x, size_t n)
{
    if (!n)
        return 0.0;
    const unsigned blocks = red_blocks(n);
    sumsq_partial_kernel<<<blocks, RED_THREADS, 0, g_cuda.stream>>>(
        g_cuda.red_partial, x, n);
    LAUNCH_CHECK("sumsq_partial_kernel");
    return cuda_finish_sum((int)blocks);
}

/* ------------------------------------------------------------------------
 * Mean over tokens: out(B,C) = (1/T) Σ_t x(B,T,C)
 * ---------------------------------------------------------------------- */

void cuda_mean_tokens_forward(float *out, const float *x, int B, int T, int C)
{
    colsum(out, C, x, NULL, B, T, C, COLSUM_MEAN);
}

/* dx(B,T,C) += dout(B,C)·inv, inv = 1/T */
__global__ void mean_tokens_backward_kernel(float *dx, const float *dout,
                                            float inv, int T, int C, size_t n)
{
    GRID_LOOP(i, n)
        dx[i] += dout[adaln_index(i, T, C, C)] * inv;
}

void cuda_mean_tokens_backward(float *dx, const float *dout, int B, int T,
                               int C)
{
    const size_t n = (size_t)B * T * C;
    if (!dx || !n)
        return;
    mean_tokens_backward_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        dx, dout, 1.0f / T, T, C, n);
    LAUNCH_CHECK("mean_tokens_backward_kernel");
}

/* ------------------------------------------------------------------------
 * Cosine similarity with F.normalize semantics: â = a / max(|a|, 1e-12),
 * sim = <â, b̂>. One warp per row; dot products in double.
 * ---------------------------------------------------------------------- */

#define COS_EPS 1e-12

/* The warp's sums <a,a>, <b,b>, <a,b> over one row of D. */
__device__ void row_dots(const float *a, const float *b, int D, double *aa,
                         double *bb, double *ab)
{
    double saa = 0.0, sbb = 0.0, sab = 0.0;
    for (int i = lane_id(); i < D; i += 32) {
        const double x = a[i], y = b[i];
        saa += x * x;
        sbb += y * y;
        sab += x * y;
    }
    *aa = warp_sum(saa);
    *bb = warp_sum(sbb);
    *ab = warp_sum(sab);
}

__global__ void cosine_forward_kernel(float *sim, const float *a,
                                      const float *b, int N, int D)
{
    const size_t row = warp_row();
    if (row >= (size_t)N)
        return;
    double aa, bb, ab;
    row_dots(a + row * D, b + row * D, D, &aa, &bb, &ab);
    const double na = fmax(sqrt(aa), COS_EPS), nb = fmax(sqrt(bb), COS_EPS);
    if (lane_id() == 0)
        sim[row] = (float)(ab / (na * nb));
}

/* With b̂ = b / max(|b|, eps):
 *   |a| > eps:  ∂sim/∂a = (b̂ − â·<â, b̂>) / |a|,  â = a/|a|
 *   |a| ≤ eps:  â = a/eps is linear in a, so ∂sim/∂a = b̂ / eps. */
__global__ void cosine_backward_kernel(float *da, const float *dsim,
                                       const float *a, const float *b, int N,
                                       int D)
{
    const size_t row = warp_row();
    if (row >= (size_t)N)
        return;
    const float *ar = a + row * D, *br = b + row * D; // (D)
    float *dr = da + row * D;
    double aa, bb, ab;
    row_dots(ar, br, D, &aa, &bb, &ab);
    const double la = sqrt(aa);
    const double nb = fmax(sqrt(bb), COS_EPS), na = fmax(la, COS_EPS);
    const double s = ab / (na * nb); // <â, b̂>
    // Projection removed only when the norm is not clamped.
    const double proj = la > COS_EPS ? s / na : 0.0;
    const double cb = dsim[row] / (na * nb), ca = dsim[row] * proj / na;
    for (int i = lane_id(); i < D; i += 32)
        dr[i] += (float)(cb * br[i] - ca * ar[i]);
}

void cuda_cosine_forward(float *sim, const float *a, const float *b, int N,
                         int D)
{
    if (N <= 0)
        return;
    cosine_forward_kernel<<<grid_rows(N), ROW_THREADS, 0, g_cuda.stream>>>(sim, a, b, N, D);
    LAUNCH_CHECK("cosine_forward_kernel");
}

void cuda_cosine_backward(float *da, const float *dsim, const float *a,
                          const float *b, int N, int D)
{
    if (!da || N <= 0)
        return;
    cosine_backward_kernel<<<grid_rows(N), ROW_THREADS, 0, g_cuda.stream>>>(
        da, dsim, a, b, N, D);
    LAUNCH_CHECK("cosine_backward_kernel");
}

/* ------------------------------------------------------------------------
 * Optimiser (with the EMA of the parameters)
 * ---------------------------------------------------------------------- */

/* PyTorch AdamW, with g = grad·grad_scale:
 *   p -= lr·wd·p;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
 *   p -= lr · (m/(1-β1^t)) / (sqrt(v/(1-β2^t)) + eps)
 * then, with ema, the moving average of the new p:
 *   ema = ema_decay·ema + ema_w·p,  ema_w = 1 − ema_decay.
 * bc1, bc2, decay = 1 − lr·wd and ema_w come from the host, computed as the
 * CPU backend computes them. */
__global__ void adamw_kernel(float *param, const float *grad, float *m,
                             float *v, size_t n, float lr, float beta1,
                             float beta2, float eps, float decay,
                             float grad_scale, float bc1, float bc2,
                             float *ema, float ema_decay, float ema_w)
{
    GRID_LOOP(i, n) {
        const float g = grad[i] * grad_scale;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float update = (mi / bc1) / (sqrtf(vi / bc2) + eps);
        const float p = param[i] * decay - lr * update;
        param[i] = p;
        if (ema)
            ema[i] = ema_decay * ema[i] + ema_w * p;
    }
}

void cuda_adamw_update(float *param, const float *grad, float *m, float *v,
                       size_t n, float lr, float beta1, float beta2, float eps,
                       float weight_decay, float grad_scale, int t, float *ema,
                       float ema_decay)
{
    if (!n)
        return;
    const float bc1 = (float)(1.0 - pow(beta1, t));
    const float bc2 = (float)(1.0 - pow(beta2, t));
    const float decay = 1.0f - lr * weight_decay;
    adamw_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        param, grad, m, v, n, lr, beta1, beta2, eps, decay, grad_scale, bc1, bc2,
        ema, ema_decay, 1.0f - ema_decay);
    LAUNCH_CHECK("adamw_kernel");
}
