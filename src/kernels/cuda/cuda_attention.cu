/* Fused attention for the bf16 mode: a forward and a backward pass on
 * tensor cores (wmma bf16 16×16×16 products, fp32 accumulation) that never
 * write the (T,T) score matrix to global memory; the choice among them,
 * the GEMM path of cuda_ops.cu and the flash paths of cuda_flash.cu; and
 * the timing that makes the choice.
 *
 * Gradient contract (ops.h): the forward overwrites out (and its part of
 * att); the backward ADDS into dqkv, each element read, added to and written
 * back by one thread: deterministic, no atomics.
 *
 * Saved state. On the fused path att holds, instead of the probabilities,
 * the log-sum-exp of each row of scaled scores s = q·kᵀ/sqrt(hs):
 *   lse[(b·NH + h)·T + i] = log Σ_j exp(s_ij)      (the first B·NH·T floats)
 * and the backward recomputes P = exp(s − lse) from q and k. The forward and
 * the backward of a shape must therefore take the same path: both ask
 * attention_path(), which in auto mode caches its choice per shape.
 *
 * Tiling. T ≤ 256, so a block holds whole rows of scores and needs no
 * online softmax: one block per (tile of br rows, head, batch), 8 warps.
 * Operands are staged in shared memory as bf16, rows padded (+8 elements,
 * +4 for fp32 scores) against bank conflicts; Tp = T rounded up to 16:
 *   tile  (br, hs) bf16          the block's rows of q, do, k or v; in the
 *                                last product (the tile no longer needed)
 *                                the same bytes are the stage:
 *   stage (8 warps, 16×16) fp32  a warp's output tile on its way to global
 *   score (br, Tp) fp32          one buffer (forward) or two (backward); a
 *                                row pass rewrites a row as bf16 in place
 *                                (the row's first half) for the next product
 *   full  (Tp, hs) bf16          all T rows of k, v, q or do, zero past T
 * Two products, 16×16 output tiles split round-robin among the warps:
 *   scores_product  score = scale · tile · fullᵀ   (k runs over hs)
 *   output_product  out (+)= score_bf16 · full     (k runs over Tp)
 *
 * Forward, per query tile: S = q·kᵀ·sc; row softmax masked past T → lse,
 * P (bf16); full := v; out = P·v.
 * Backward, two kernels:
 *  - per query tile: S = q·kᵀ·sc; dP = do·vᵀ; per row i: P = exp(S − lse_i),
 *    D_i = Σ_j P_ij·dP_ij (saved in scratch for the second kernel),
 *    dS = P∘(dP − D_i)·sc; dq += dS·k.
 *  - per key tile (the transposed products): Sᵀ = k·qᵀ·sc; dPᵀ = v·doᵀ;
 *    Pᵀ, dSᵀ as above from lse and D; dv += Pᵀ·do; dk += dSᵀ·q.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>
#include <mma.h>

#include "cuda_internal.h"
#include "reed_cuda.h"

using namespace nvcuda;
typedef __nv_bfloat16 bf16;

enum { ATT_AUTO, ATT_PATH_GEMM, ATT_PATH_FUSED, ATT_PATH_FLASH, ATT_PATH_FLASH_GEMM,
       ATT_PATHS };

/* ------------------------------------------------------------------------
 * Tiling and shared memory
 * ---------------------------------------------------------------------- */

#define ATT_WARPS 8
#define ATT_THREADS (32 * ATT_WARPS)
#define ATT_MAX_T 256  /* a score row fits a warp: ATT_MAX_T / 32 values per lane */
#define ATT_MAX_HS 128
#define ROW_VALS (ATT_MAX_T / 32)
#define WM 16          /* the wmma tile edge */
#define PAD_H 8        /* bf16 padding of an operand row */
#define PAD_S 4        /* fp32 padding of a score row */

typedef wmma::fragment<wmma::accumulator, WM, WM, WM, float> frag_acc;
typedef wmma::fragment<wmma::matrix_a, WM, WM, WM, bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, WM, WM, WM, bf16, wmma::row_major> frag_b_row;
typedef wmma::fragment<wmma::matrix_b, WM, WM, WM, bf16, wmma::col_major> frag_b_col;

/* A shape as the kernels see it. */
typedef struct attn_dims {
    int T, Tp;   /* tokens; T rounded up to WM */
    int C, NH, hs;
    int br;      /* rows per block, a multiple of WM */
    int vec;     /* the fp32 inputs are 16-byte aligned: load float4 */
    float sc;    /* 1/sqrt(hs) */
} attn_dims;

__host__ __device__ static inline int ld_h(int hs) { return hs + PAD_H; }
__host__ __device__ static inline int ld_s(int Tp) { return Tp + PAD_S; }

/* Bytes of the tile / stage union. */
__host__ __device__ static inline size_t tile_bytes(int br, int hs)
{
    const size_t tile = (size_t)br * ld_h(hs) * sizeof(bf16);
    const size_t stage = (size_t)ATT_WARPS * WM * WM * sizeof(float);
    return tile > stage ? tile : stage;
}

/* Shared memory of a block with nscore score buffers, in the order
 * tile / stage, scores, full (each part starts 32-byte aligned, as wmma
 * wants: br and Tp are multiples of 16, ld_h of 8). */
__host__ __device__ static inline size_t smem_bytes(int br, int Tp, int hs,
                                                    int nscore)
{
    return tile_bytes(br, hs) + (size_t)nscore * br * ld_s(Tp) * sizeof(float) +
           (size_t)Tp * ld_h(hs) * sizeof(bf16);
}

extern __shared__ __align__(128) unsigned char smem_raw[];

typedef struct smem_parts {
    bf16 *tile;     /* (br, ld_h) */
    float *stage;   /* (ATT_WARPS, WM·WM): the tile's bytes */
    float *s0, *s1; /* (br, ld_s) each; s1 only with two score buffers */
    bf16 *full;     /* (Tp, ld_h) */
} smem_parts;

__device__ static smem_parts smem_carve(const attn_dims &d, int nscore)
{
    const size_t score = (size_t)d.br * ld_s(d.Tp);
    smem_parts p;
    p.tile = (bf16 *)smem_raw;
    p.stage = (float *)smem_raw;
    p.s0 = (float *)(smem_raw + tile_bytes(d.br, d.hs));
    p.s1 = nscore > 1 ? p.s0 + score : NULL;
    p.full = (bf16 *)(p.s0 + nscore * score);
    return p;
}

/* The block's place: batch b, head h, rows r0 .. r0 + valid − 1 of its tile
 * (valid ≤ br, fewer in the last tile), rounded up to `rows` (a multiple of
 * WM): the rows the block computes; rows past valid are zero inputs and
 * their results are dropped. */
typedef struct block_rows {
    int b, h, r0, valid, rows;
} block_rows;

__device__ static block_rows block_place(const attn_dims &d)
{
    block_rows p;
    p.b = blockIdx.z;
    p.h = blockIdx.y;
    p.r0 = blockIdx.x * d.br;
    p.valid = d.T - p.r0 < d.br ? d.T - p.r0 : d.br;
    p.rows = (p.valid + WM - 1) / WM * WM;
    return p;
}

/* Head h of example b in the operands: q, k, v (T, hs) with leading dim
 * ld3 = 3C inside qkv, g (T, hs) with leading dim C inside dout, and bh, the
 * first of the head's T rows in lse and D. */
typedef struct head_slices {
    const float *q, *k, *v, *g;
    size_t ld3, bh;
} head_slices;

__device__ static head_slices head_of(const float *qkv, const float *dout,
                                      const block_rows &p, const attn_dims &d)
{
    head_slices s;
    s.ld3 = 3 * (size_t)d.C;
    s.bh = ((size_t)p.b * d.NH + p.h) * d.T;
    s.q = qkv + (size_t)p.b * d.T * s.ld3 + p.h * d.hs;
    s.k = s.q + d.C;
    s.v = s.q + 2 * d.C;
    s.g = dout ? dout + (size_t)p.b * d.T * d.C + p.h * d.hs : NULL;
    return s;
}

/* ------------------------------------------------------------------------
 * Block-wide building blocks
 * ---------------------------------------------------------------------- */

/* Four floats from p: one float4 load when p is 16-byte aligned. */
__device__ __forceinline__ float4 load4(const float *p, int aligned)
{
    if (aligned)
        return *(const float4 *)p;
    float4 x = {p[0], p[1], p[2], p[3]};
    return x;
}

/* x as four bf16 at dst (8-byte aligned), one store. */
__device__ __forceinline__ void store_bf16x4(bf16 *dst, float4 x)
{
    uint2 u;
    u.x = __bfloat16_as_ushort(__float2bfloat16(x.x)) |
          (unsigned)__bfloat16_as_ushort(__float2bfloat16(x.y)) << 16;
    u.y = __bfloat16_as_ushort(__float2bfloat16(x.z)) |
          (unsigned)__bfloat16_as_ushort(__float2bfloat16(x.w)) << 16;
    *(uint2 *)dst = u;
}

/* dst(rows, hs) bf16 (leading dim ld_h) ← src rows 0 .. valid − 1 (fp32,
 * leading dim ld), zero from valid to rows. Every thread of the block, four
 * columns at a time (hs is a multiple of 16). */
__device__ static void load_rows(bf16 *dst, const float *src, size_t ld,
                                 int valid, int rows, const attn_dims &d)
{
    const int per_row = d.hs / 4, ldh = ld_h(d.hs);
    for (int e = threadIdx.x; e < rows * per_row; e += blockDim.x) {
        const int r = e / per_row, c = (e - r * per_row) * 4;
        float4 x = {0.0f, 0.0f, 0.0f, 0.0f};
        if (r < valid)
            x = load4(src + (size_t)r * ld + c, d.vec);
        store_bf16x4(dst + r * ldh + c, x);
    }
}

/* S(rows, Tp) fp32 (leading dim ld_s) = scale · A(rows, hs) · F(Tp, hs)ᵀ,
 * A and F bf16 with leading dim ld_h. */
__device__ static void scores_product(float *S, const bf16 *A, const bf16 *F,
                                      int rows, float scale, const attn_dims &d)
{
    const int ldh = ld_h(d.hs), lds = ld_s(d.Tp), cols = d.Tp / WM;
    const int ntiles = rows / WM * cols;
    for (int t = threadIdx.x / 32; t < ntiles; t += ATT_WARPS) {
        const int r0 = t / cols * WM, c0 = t % cols * WM;
        frag_acc acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k = 0; k < d.hs; k += WM) {
            frag_a a;
            frag_b_col b; // Fᵀ(k.., c0..) is F(c0.., k..) read column-major
            wmma::load_matrix_sync(a, A + r0 * ldh + k, ldh);
            wmma::load_matrix_sync(b, F + c0 * ldh + k, ldh);
            wmma::mma_sync(acc, a, b, acc);
        }
        for (int i = 0; i < acc.num_elements; i++)
            acc.x[i] *= scale;
        wmma::store_matrix_sync(S + r0 * lds + c0, acc, lds, wmma::mem_row_major);
    }
}

/* A warp's 16×16 tile to global rows 0 .. rows − 1 (at most 16) of dst
 * (leading dim ld), through the warp's staging tile: dst = tile, or
 * dst += tile when add. */
__device__ static void store_tile(float *dst, size_t ld, int rows, int add,
                                  const frag_acc &acc, float *stage)
{
    wmma::store_matrix_sync(stage, acc, WM, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane_id(); e < WM * WM; e += 32) {
        const int r = e / WM, c = e % WM;
        if (r < rows) {
            float *p = dst + (size_t)r * ld + c;
            *p = add ? *p + stage[e] : stage[e];
        }
    }
    __syncwarp(); // the stage is reused by the warp's next tile
}

/* dst(valid, hs) (leading dim ld) = or += A(rows, Tp) · F(Tp, hs): A bf16
 * with leading dim lda, F bf16 with leading dim ld_h. */
__device__ static void output_product(float *dst, size_t ld, int valid, int add,
                                      const bf16 *A, int lda, const bf16 *F,
                                      const attn_dims &d, float *stage)
{
    const int ldh = ld_h(d.hs), cols = d.hs / WM;
    const int ntiles = (valid + WM - 1) / WM * cols;
    float *my_stage = stage + threadIdx.x / 32 * WM * WM;
    for (int t = threadIdx.x / 32; t < ntiles; t += ATT_WARPS) {
        const int r0 = t / cols * WM, c0 = t % cols * WM;
        frag_acc acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k = 0; k < d.Tp; k += WM) {
            frag_a a;
            frag_b_row b;
            wmma::load_matrix_sync(a, A + r0 * lda + k, lda);
            wmma::load_matrix_sync(b, F + k * ldh + c0, ldh);
            wmma::mma_sync(acc, a, b, acc);
        }
        store_tile(dst + (size_t)r0 * ld + c0, ld, valid - r0, add, acc, my_stage);
    }
}

/* ------------------------------------------------------------------------
 * Row passes: one warp per score row, a lane holding the row's columns
 * lane, lane + 32, ... in registers; the row is then rewritten in place as
 * bf16 (leading dim 2·ld_s in bf16 elements) for the next product.
 * ---------------------------------------------------------------------- */

/* After every lane has read its values of row: row[0 .. Tp) as bf16 ←
 * v·mul. */
__device__ __forceinline__ void row_to_bf16(float *row, const float *v,
                                            float mul, int Tp)
{
    __syncwarp();
    bf16 *out = (bf16 *)row;
#pragma unroll
    for (int k = 0; k < ROW_VALS; k++) {
        const int j = lane_id() + 32 * k;
        if (j < Tp)
            out[j] = __float2bfloat16(v[k] * mul);
    }
}

/* Forward: rows 0 .. rows − 1 of S (scaled scores) → P = softmax over the
 * first T columns (0 past T), as bf16 in place; lse[r] for r < valid. */
__device__ static void softmax_rows(float *S, float *lse, int valid, int rows,
                                    const attn_dims &d)
{
    const int lane = lane_id();
    for (int r = threadIdx.x / 32; r < rows; r += ATT_WARPS) {
        float *row = S + (size_t)r * ld_s(d.Tp);
        float v[ROW_VALS], mx = -INFINITY, sum = 0.0f;
#pragma unroll
        for (int k = 0; k < ROW_VALS; k++) {
            const int j = lane + 32 * k;
            v[k] = j < d.T ? row[j] : -INFINITY;
            mx = fmaxf(mx, v[k]);
        }
        mx = warp_max(mx);
#pragma unroll
        for (int k = 0; k < ROW_VALS; k++) {
            v[k] = lane + 32 * k < d.T ? expf(v[k] - mx) : 0.0f;
            sum += v[k];
        }
        sum = warp_sum(sum);
        row_to_bf16(row, v, 1.0f / sum, d.Tp);
        if (lane == 0 && r < valid)
            lse[r] = mx + logf(sum);
    }
}

/* Backward, query rows: S (scaled scores) and dP = do·vᵀ, rows 0 .. rows − 1.
 * For a row i < valid: P = exp(S − lse_i) over the first T columns,
 * D_i = Σ_j P·dP (saved), dS = P∘(dP − D_i)·sc, as bf16 in place of dP;
 * rows past valid get dS = 0. */
__device__ static void dscore_rows(const float *S, float *dP, const float *lse,
                                   float *D, int valid, int rows,
                                   const attn_dims &d)
{
    const int lane = lane_id();
    for (int r = threadIdx.x / 32; r < rows; r += ATT_WARPS) {
        const float *srow = S + (size_t)r * ld_s(d.Tp);
        float *grow = dP + (size_t)r * ld_s(d.Tp);
        const float l = r < valid ? lse[r] : 0.0f;
        float p[ROW_VALS], g[ROW_VALS], dot = 0.0f;
#pragma unroll
        for (int k = 0; k < ROW_VALS; k++) {
            const int j = lane + 32 * k;
            const bool in = r < valid && j < d.T;
            p[k] = in ? expf(srow[j] - l) : 0.0f;
            g[k] = in ? grow[j] : 0.0f;
            dot += p[k] * g[k];
        }
        dot = warp_sum(dot);
#pragma unroll
        for (int k = 0; k < ROW_VALS; k++)
            g[k] = p[k] * (g[k] - dot);
        row_to_bf16(grow, g, d.sc, d.Tp);
        if (lane == 0 && r < valid)
            D[r] = dot;
    }
}

/* Backward, key rows: Sᵀ (scaled scores) and dPᵀ = v·doᵀ, rows 0 .. rows − 1,
 * columns the queries i. For i < T: Pᵀ = exp(Sᵀ − lse_i),
 * dSᵀ = Pᵀ∘(dPᵀ − D_i)·sc; both as bf16 in place (0 past T). */
__device__ static void dscore_cols(float *St, float *dPt, const float *lse,
                                   const float *D, int rows, const attn_dims &d)
{
    const int lane = lane_id();
    for (int r = threadIdx.x / 32; r < rows; r += ATT_WARPS) {
        float *srow = St + (size_t)r * ld_s(d.Tp);
        float *grow = dPt + (size_t)r * ld_s(d.Tp);
        float p[ROW_VALS], g[ROW_VALS];
#pragma unroll
        for (int k = 0; k < ROW_VALS; k++) {
            const int i = lane + 32 * k;
            p[k] = i < d.T ? expf(srow[i] - lse[i]) : 0.0f;
            g[k] = i < d.T ? p[k] * (grow[i] - D[i]) : 0.0f;
        }
        row_to_bf16(srow, p, 1.0f, d.Tp);
        row_to_bf16(grow, g, d.sc, d.Tp);
    }
}

/* ------------------------------------------------------------------------
 * Kernels. Grid (row tiles, NH, B), ATT_THREADS threads. For batch b and
 * head h: q, k, v = qkv + b·T·3C + h·hs + (0, C, 2C), (T, hs) with leading
 * dim 3C; do = dout + b·T·C + h·hs, leading dim C; lse and D at
 * (b·NH + h)·T.
 * ---------------------------------------------------------------------- */

__global__ void __launch_bounds__(ATT_THREADS)
attn_forward_kernel(float *out, float *lse, const float *qkv, attn_dims d)
{
    const block_rows p = block_place(d);
    const smem_parts sm = smem_carve(d, 1);
    const head_slices hd = head_of(qkv, NULL, p, d);
    const size_t ld3 = hd.ld3, bh = hd.bh;
    const float *q = hd.q, *k = hd.k, *v = hd.v;

    load_rows(sm.tile, q + p.r0 * ld3, ld3, p.valid, p.rows, d);
    load_rows(sm.full, k, ld3, d.T, d.Tp, d);
    __syncthreads();
    scores_product(sm.s0, sm.tile, sm.full, p.rows, d.sc, d);
    __syncthreads();
    load_rows(sm.full, v, ld3, d.T, d.Tp, d);
    softmax_rows(sm.s0, lse + bh + p.r0, p.valid, p.rows, d);
    __syncthreads();
    output_product(out + ((size_t)p.b * d.T + p.r0) * d.C + p.h * d.hs, d.C,
                   p.valid, 0, (const bf16 *)sm.s0, 2 * ld_s(d.Tp), sm.full, d,
                   sm.stage);
}

/* dq, and D for attn_backward_key_kernel. */
__global__ void __launch_bounds__(ATT_THREADS)
attn_backward_query_kernel(float *dqkv, float *Dsave, const float *dout,
                           const float *qkv, const float *lse, attn_dims d)
{
    const block_rows p = block_place(d);
    const smem_parts sm = smem_carve(d, 2);
    const head_slices hd = head_of(qkv, dout, p, d);
    const size_t ld3 = hd.ld3, bh = hd.bh;
    const float *q = hd.q, *k = hd.k, *v = hd.v, *g = hd.g;

    load_rows(sm.tile, q + p.r0 * ld3, ld3, p.valid, p.rows, d);
    load_rows(sm.full, k, ld3, d.T, d.Tp, d);
    __syncthreads();
    scores_product(sm.s0, sm.tile, sm.full, p.rows, d.sc, d); // S
    __syncthreads();
    load_rows(sm.tile, g + p.r0 * (size_t)d.C, d.C, p.valid, p.rows, d);
    load_rows(sm.full, v, ld3, d.T, d.Tp, d);
    __syncthreads();
    scores_product(sm.s1, sm.tile, sm.full, p.rows, 1.0f, d); // dP
    __syncthreads();
    load_rows(sm.full, k, ld3, d.T, d.Tp, d); // for dq; the row pass reads no operand
    dscore_rows(sm.s0, sm.s1, lse + bh + p.r0, Dsave + bh + p.r0, p.valid,
                p.rows, d);
    __syncthreads();
    output_product(dqkv + ((size_t)p.b * d.T + p.r0) * ld3 + p.h * d.hs, ld3,
                   p.valid, 1, (const bf16 *)sm.s1, 2 * ld_s(d.Tp), sm.full, d,
                   sm.stage);
}

/* dk and dv, from lse and D. */
__global__ void __launch_bounds__(ATT_THREADS)
attn_backward_key_kernel(float *dqkv, const float *dout, const float *qkv,
                         const float *lse, const float *D, attn_dims d)
{
    const block_rows p = block_place(d);
    const smem_parts sm = smem_carve(d, 2);
    const head_slices hd = head_of(qkv, dout, p, d);
    const size_t ld3 = hd.ld3, bh = hd.bh;
    const float *q = hd.q, *k = hd.k, *v = hd.v, *g = hd.g;
    float *dk = dqkv + ((size_t)p.b * d.T + p.r0) * ld3 + d.C + p.h * d.hs;
    float *dv = dk + d.C;

    load_rows(sm.tile, k + p.r0 * ld3, ld3, p.valid, p.rows, d);
    load_rows(sm.full, q, ld3, d.T, d.Tp, d);
    __syncthreads();
    scores_product(sm.s0, sm.tile, sm.full, p.rows, d.sc, d); // Sᵀ
    __syncthreads();
    load_rows(sm.tile, v + p.r0 * ld3, ld3, p.valid, p.rows, d);
    load_rows(sm.full, g, d.C, d.T, d.Tp, d);
    __syncthreads();
    scores_product(sm.s1, sm.tile, sm.full, p.rows, 1.0f, d); // dPᵀ
    __syncthreads();
    dscore_cols(sm.s0, sm.s1, lse + bh, D + bh, p.rows, d);
    __syncthreads();
    output_product(dv, ld3, p.valid, 1, (const bf16 *)sm.s0, 2 * ld_s(d.Tp),
                   sm.full, d, sm.stage); // Pᵀ·do
    __syncthreads();
    load_rows(sm.full, q, ld3, d.T, d.Tp, d);
    __syncthreads();
    output_product(dk, ld3, p.valid, 1, (const bf16 *)sm.s1, 2 * ld_s(d.Tp),
                   sm.full, d, sm.stage); // dSᵀ·q
}

/* ------------------------------------------------------------------------
 * Launchers and the shapes the fused kernels cover
 * ---------------------------------------------------------------------- */

/* The device's shared memory limits (device 0) and REED_CUDA_ATTENTION_ROWS,
 * read once; the kernels may then use up to the per-block opt-in limit. */
static struct {
    int per_block, per_sm, want_rows;
} dev_smem;
static pthread_once_t dev_smem_once = PTHREAD_ONCE_INIT;

static void dev_smem_init(void)
{
    CUDA_CHECK(cudaDeviceGetAttribute(&dev_smem.per_block,
                                      cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    CUDA_CHECK(cudaDeviceGetAttribute(&dev_smem.per_sm,
                                      cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0));
    const int max = dev_smem.per_block;
    const cudaFuncAttribute a = cudaFuncAttributeMaxDynamicSharedMemorySize;
    CUDA_CHECK(cudaFuncSetAttribute(attn_forward_kernel, a, max));
    CUDA_CHECK(cudaFuncSetAttribute(attn_backward_query_kernel, a, max));
    CUDA_CHECK(cudaFuncSetAttribute(attn_backward_key_kernel, a, max));
    const char *rows = getenv("REED_CUDA_ATTENTION_ROWS");
    dev_smem.want_rows = rows ? atoi(rows) : 0;
}

/* Rows per block with nscore score buffers, from 64, 32, 16 (at most Tp):
 * REED_CUDA_ATTENTION_ROWS when it fits (for tuning on a GPU); else 64 or
 * 32 when two blocks then share an SM (the runtime keeps 1 KB per block);
 * else the largest that fits a block at all; 0 if none fits. */
static int pick_rows(int Tp, int hs, int nscore)
{
    static const int choice[] = {64, 32, 16};
    const int want = dev_smem.want_rows;
    int fits = 0;
    for (int i = 0; i < 3; i++) {
        const int br = choice[i];
        const size_t bytes = smem_bytes(br, Tp, hs, nscore);
        if (br > Tp || bytes > (size_t)dev_smem.per_block)
            continue;
        if (br == want ||
            (!want && br >= 32 && 2 * (bytes + 1024) <= (size_t)dev_smem.per_sm))
            return br;
        if (!fits)
            fits = br;
    }
    return fits;
}

typedef struct attn_plan {
    attn_dims fwd, bwd;
    int flash[2]; /* the flash kernels' variants, forward and backward */
} attn_plan;

/* The fused kernels' dims for a shape, or 0 when they do not cover it:
 * head size a multiple of 16 up to ATT_MAX_HS, 1 ≤ T ≤ ATT_MAX_T, and the
 * shared memory fits. */
static int fused_plan(int T, int C, int NH, attn_plan *plan)
{
    if (NH <= 0 || C % NH || T < 1 || T > ATT_MAX_T)
        return 0;
    const int hs = C / NH;
    if (hs % WM || hs > ATT_MAX_HS)
        return 0;
    pthread_once(&dev_smem_once, dev_smem_init);
    attn_dims d;
    d.T = T;
    d.Tp = (T + WM - 1) / WM * WM;
    d.C = C;
    d.NH = NH;
    d.hs = hs;
    d.br = 0;
    d.vec = 0;
    d.sc = 1.0f / sqrtf((float)hs); // as the GEMM path and the CPU
    plan->fwd = plan->bwd = d;
    plan->fwd.br = pick_rows(d.Tp, hs, 1);
    plan->bwd.br = pick_rows(d.Tp, hs, 2);
    return plan->fwd.br && plan->bwd.br;
}


static dim3 attn_grid(const attn_dims &d, int B)
{
    return dim3((unsigned)((d.T + d.br - 1) / d.br), (unsigned)d.NH, (unsigned)B);
}

/* The fused kernels read qkv (and dout) in fp32: a sole view of it (the
 * qkv linear's bf16 output, the projection's input gradient) is written
 * back first; the other paths read the views. */
static void need_fp32(const float *x, size_t n)
{
    cuda_view_need_range(x, n * sizeof(float));
}

static void fused_forward(float *out, float *lse, const float *qkv, int B,
                          attn_dims d)
{
    need_fp32(qkv, (size_t)B * d.T * 3 * d.C);
    cuda_lazy_back(lse, (size_t)B * d.NH * d.T * sizeof(float)); // att's part it uses
    d.vec = aligned16(qkv); // then every row start is (C, hs multiples of 16)
    const size_t smem = smem_bytes(d.br, d.Tp, d.hs, 1);
    attn_forward_kernel<<<attn_grid(d, B), ATT_THREADS, smem, g_cuda.stream>>>(
        out, lse, qkv, d);
    LAUNCH_CHECK("attn_forward_kernel");
}

/* D (B·NH·T floats) goes to scratch. */
static void fused_backward(float *dqkv, float *scratch, const float *dout,
                           const float *qkv, const float *lse, int B,
                           attn_dims d)
{
    need_fp32(qkv, (size_t)B * d.T * 3 * d.C);
    need_fp32(dout, (size_t)B * d.T * d.C);
    cuda_lazy_back(lse, (size_t)B * d.NH * d.T * sizeof(float));
    cuda_lazy_back(scratch, (size_t)B * d.NH * d.T * sizeof(float));
    d.vec = aligned16(qkv) && aligned16(dout);
    const size_t smem = smem_bytes(d.br, d.Tp, d.hs, 2);
    attn_backward_query_kernel<<<attn_grid(d, B), ATT_THREADS, smem,
                                 g_cuda.stream>>>(dqkv, scratch, dout, qkv, lse, d);
    LAUNCH_CHECK("attn_backward_query_kernel");
    attn_backward_key_kernel<<<attn_grid(d, B), ATT_THREADS, smem,
                               g_cuda.stream>>>(dqkv, dout, qkv, lse, scratch, d);
    LAUNCH_CHECK("attn_backward_key_kernel");
}

/* ------------------------------------------------------------------------
 * The choice of path: GEMM (cuda_ops.cu, att = P), fused (the wmma kernels
 * above, att = row log-sum-exps), flash (cuda_flash.cu's forward and
 * backward, att = row log2-sum-exp2s) or flash+GEMM (cuda_flash.cu's
 * forward writing P, then the GEMM path's backward); the flash paths only
 * on bf16 operands. In auto mode
 * the first call for a shape (T, C, NH) times forward + backward of each
 * path that covers it on min(B, TUNE_BATCH) samples of random data (or
 * TUNE_BATCH_SMALL where those buffers do not fit) and caches the fastest; the cache never evicts (a full cache gives the first
 * covering path of flash, fused, GEMM without timing), so a shape keeps
 * its path.
 * ---------------------------------------------------------------------- */

/* The batch the paths are timed at: SiT-B/2's 256, since the order of the
 * paths changes with it (on an H200 at batch 32 flash+GEMM timed faster
 * than GEMM, while whole steps at batch 256 ran faster on GEMM). */
#define TUNE_BATCH 256
#define TUNE_BATCH_SMALL 32
#define TUNE_REPS 3
#define TUNE_SLOTS 64

static int mode_set = -1; /* reed_cuda_set_attention; -1: REED_CUDA_ATTENTION */

/* REED_CUDA_ATTENTION=auto|gemm|fused|flash|flashgemm (read once), unless
 * reed_cuda_set_attention was called. */
static int attention_mode(void)
{
    static int from_env = -1;
    if (mode_set >= 0)
        return mode_set;
    if (from_env < 0) {
        const char *s = getenv("REED_CUDA_ATTENTION");
        from_env = s && !strcmp(s, "gemm")        ? ATT_PATH_GEMM
                   : s && !strcmp(s, "fused")     ? ATT_PATH_FUSED
                   : s && !strcmp(s, "flash")     ? ATT_PATH_FLASH
                   : s && !strcmp(s, "flashgemm") ? ATT_PATH_FLASH_GEMM
                                                  : ATT_AUTO;
    }
    return from_env;
}

/* x[i] = a hash of (i, seed) in [−1, 1): the timing's inputs. */
__global__ void attn_fill_kernel(float *x, size_t n, uint32_t seed)
{
    GRID_LOOP(i, n) {
        uint32_t u = (uint32_t)i * 2654435761u ^ seed;
        u ^= u >> 15;
        u *= 0x2c1b3c6du;
        u ^= u >> 12;
        u *= 0x297a2d39u;
        u ^= u >> 15;
        x[i] = (float)(u >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

/* The timing's device buffers, one allocation (owned by base). */
typedef struct tune_bufs {
    float *base, *qkv, *dqkv, *out, *dout, *att, *scratch;
} tune_bufs;

/* 0, or -1 when the device memory is short. */
static int tune_alloc(tune_bufs *t, int B, int T, int C, int NH)
{
    const size_t nq = ((size_t)B * T * 3 * C + 63) & ~(size_t)63;
    const size_t no = ((size_t)B * T * C + 63) & ~(size_t)63;
    const size_t na = ((size_t)B * NH * T * T + 63) & ~(size_t)63;
    const size_t n = 2 * (nq + no + na);
    // From the arena: out of memory, it gives the bf16 views back first,
    // and freeing the block drops the views the timed paths keep of qkv.
    t->base = (float *)cuda_mem_alloc(n * sizeof(float));
    if (!t->base)
        return -1;
    t->qkv = t->base;
    t->dqkv = t->qkv + nq;
    t->out = t->dqkv + nq;
    t->dout = t->out + no;
    t->att = t->dout + no;
    t->scratch = t->att + na;
    attn_fill_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(t->base, n, 7u);
    LAUNCH_CHECK("attn_fill_kernel");
    return 0;
}

/* One forward of the path (the ops' code below, on the timing's buffers). */
static void path_forward(int path, float *out, float *att, const float *qkv, int B, int T, int C,
                         int NH, const attn_plan *plan)
{
    if (path == ATT_PATH_FUSED)
        fused_forward(out, att, qkv, B, plan->fwd);
    else if (path == ATT_PATH_FLASH)
        cuda_flash_forward(out, att, NULL, qkv, B, T, C, NH, plan->flash[0]);
    else if (path == ATT_PATH_FLASH_GEMM)
        cuda_flash_forward(out, NULL, (bf16 *)att, qkv, B, T, C, NH, 0);
    else
        cuda_attention_forward_gemm(out, att, qkv, B, T, C, NH);
}

static void run_forward(int path, const tune_bufs *t, int B, int T, int C, int NH,
                        const attn_plan *plan)
{
    path_forward(path, t->out, t->att, t->qkv, B, T, C, NH, plan);
}

static void run_backward(int path, const tune_bufs *t, int B, int T, int C, int NH,
                         const attn_plan *plan)
{
    if (path == ATT_PATH_FUSED)
        fused_backward(t->dqkv, t->scratch, t->dout, t->qkv, t->att, B, plan->bwd);
    else if (path == ATT_PATH_FLASH)
        cuda_flash_backward(t->dqkv, t->scratch, t->dout, t->qkv, t->att, B, T, C, NH, 1,
                            plan->flash[1]);
    else
        cuda_attention_backward_gemm(t->dqkv, t->scratch, t->dout, t->qkv, t->att, B, T, C,
                                     NH, 1.0f);
}

/* Milliseconds of the path's forward (ms[0]) and backward (ms[1]), each
 * the mean of TUNE_REPS after a warm-up. */
static void time_path(int path, const tune_bufs *t, int B, int T, int C, int NH,
                      const attn_plan *plan, float ms[2])
{
    cudaEvent_t ev[3];
    for (int i = 0; i < 3; i++)
        CUDA_CHECK(cudaEventCreate(&ev[i]));
    ms[0] = ms[1] = 0.0f;
    for (int rep = 0; rep <= TUNE_REPS; rep++) {
        CUDA_CHECK(cudaEventRecord(ev[0], g_cuda.stream));
        run_forward(path, t, B, T, C, NH, plan);
        CUDA_CHECK(cudaEventRecord(ev[1], g_cuda.stream));
        run_backward(path, t, B, T, C, NH, plan);
        CUDA_CHECK(cudaEventRecord(ev[2], g_cuda.stream));
        CUDA_CHECK(cudaEventSynchronize(ev[2]));
        for (int i = 0; i < 2 && rep > 0; i++) { // rep 0: the warm-up
            float part = 0.0f;
            CUDA_CHECK(cudaEventElapsedTime(&part, ev[i], ev[i + 1]));
            ms[i] += part / TUNE_REPS;
        }
    }
    for (int i = 0; i < 3; i++)
        CUDA_CHECK(cudaEventDestroy(ev[i]));
}

/* The paths that cover a shape (a bit per path), and the default when
 * nothing is timed: flash, else fused, else GEMM. */
#define PATH_BIT(p) (1 << (p))
static int first_path(int covered)
{
    return covered & PATH_BIT(ATT_PATH_FLASH)   ? ATT_PATH_FLASH
           : covered & PATH_BIT(ATT_PATH_FUSED) ? ATT_PATH_FUSED
                                                : ATT_PATH_GEMM;
}

#define FLASH_VARIANTS_MAX 3 /* each way */
static int flash_set[2] = {-1, -1}; /* reed_cuda_set_flash; -1: auto */

/* The flash kernels' variant forced for a direction (0 forward, 1
 * backward): reed_cuda_set_flash's, else REED_CUDA_FLASH_FWD or
 * REED_CUDA_FLASH_BWD (0 to 2), read once; -1 when timed. */
static int flash_forced(int dir)
{
    static int from_env[2] = {-2, -2};
    if (flash_set[dir] >= 0)
        return flash_set[dir];
    if (from_env[dir] == -2) {
        const char *s = getenv(dir ? "REED_CUDA_FLASH_BWD" : "REED_CUDA_FLASH_FWD");
        from_env[dir] = s && s[0] >= '0' && s[0] <= '2' && !s[1] ? s[0] - '0' : -1;
    }
    return from_env[dir];
}

/* The flash path's variants without timing: forced, else 0. */
static void flash_default(attn_plan *plan)
{
    for (int dir = 0; dir < 2; dir++) {
        const int v = flash_forced(dir);
        plan->flash[dir] = v > 0 ? v : 0;
    }
}

/* Times the flash path with each kernel variant (ms[v]) and keeps in plan
 * the fastest of each direction, whatever is forced now (attention_path
 * applies that), so the cache holds what the timing found; ms_best gets
 * the times of those kept. */
static void time_flash(const tune_bufs *t, int B, int T, int C, int NH, attn_plan *plan,
                       float ms[FLASH_VARIANTS_MAX][2], float ms_best[2])
{
    const int nv = cuda_flash_variants(C / NH);
    for (int v = 0; v < nv; v++) {
        plan->flash[0] = plan->flash[1] = v;
        time_path(ATT_PATH_FLASH, t, B, T, C, NH, plan, ms[v]);
    }
    for (int dir = 0; dir < 2; dir++) {
        int best = 0;
        for (int v = 1; v < nv; v++)
            if (ms[v][dir] < ms[best][dir])
                best = v;
        plan->flash[dir] = best;
        ms_best[dir] = ms[best][dir];
    }
}

static void print_timing(int T, int C, int NH, int B, int covered, float ms[ATT_PATHS][2],
                         float msv[FLASH_VARIANTS_MAX][2], const attn_plan *plan, int best)
{
    static const char *const names[ATT_PATHS] = {"", "GEMM", "fused", "flash", "flash+GEMM"};
    fprintf(stderr, "CUDA attention T=%d C=%d NH=%d (batch %d, forward + backward):", T, C, NH,
            B);
    for (int p = ATT_PATH_GEMM; p < ATT_PATHS; p++)
        if (covered & PATH_BIT(p))
            fprintf(stderr, " %s %.3f + %.3f ms,", names[p], ms[p][0], ms[p][1]);
    fprintf(stderr, " keeps %s", names[best]);
    const int nv = cuda_flash_variants(C / NH);
    if (covered & PATH_BIT(ATT_PATH_FLASH) && nv > 1) {
        fprintf(stderr, " (flash kernels:");
        for (int v = 0; v < nv; v++)
            fprintf(stderr, " %d: %.3f + %.3f ms,", v, msv[v][0], msv[v][1]);
        fprintf(stderr, " keeps %d + %d)", plan->flash[0], plan->flash[1]);
    }
    fputc('\n', stderr);
}

/* The fastest covering path for the shape (and, for flash, its kernels in
 * plan); first_path when the timing buffers do not fit. */
static int autotune(int B, int T, int C, int NH, attn_plan *plan, int covered)
{
    int Bt = B < TUNE_BATCH ? B : TUNE_BATCH;
    tune_bufs t;
    if (tune_alloc(&t, Bt, T, C, NH)) {
        Bt = B < TUNE_BATCH_SMALL ? B : TUNE_BATCH_SMALL;
        if (tune_alloc(&t, Bt, T, C, NH)) {
            plan->flash[0] = plan->flash[1] = 0; // cached: not what is forced now
            return first_path(covered);
        }
    }
    float ms[ATT_PATHS][2] = {{0}}, msv[FLASH_VARIANTS_MAX][2] = {{0}};
    int best = ATT_PATH_GEMM;
    for (int p = ATT_PATH_GEMM; p < ATT_PATHS; p++) {
        if (!(covered & PATH_BIT(p)))
            continue;
        if (p == ATT_PATH_FLASH)
            time_flash(&t, Bt, T, C, NH, plan, msv, ms[p]);
        else
            time_path(p, &t, Bt, T, C, NH, plan, ms[p]);
        if (ms[p][0] + ms[p][1] < ms[best][0] + ms[best][1])
            best = p;
    }
    cuda_mem_free(t.base);
    const char *v = getenv("REED_CUDA_VERBOSE");
    if (v && v[0] && strcmp(v, "0"))
        print_timing(T, C, NH, Bt, covered, ms, msv, plan, best);
    return best;
}

static struct {
    int T, C, NH, path, flash[2];
} tuned[TUNE_SLOTS];
static int ntuned;
static pthread_mutex_t tune_lock = PTHREAD_MUTEX_INITIALIZER;

static int tuned_path(int B, int T, int C, int NH, attn_plan *plan, int covered)
{
    pthread_mutex_lock(&tune_lock);
    int path = 0;
    for (int i = 0; i < ntuned && !path; i++)
        if (tuned[i].T == T && tuned[i].C == C && tuned[i].NH == NH) {
            path = tuned[i].path;
            plan->flash[0] = tuned[i].flash[0];
            plan->flash[1] = tuned[i].flash[1];
        }
    if (!path && ntuned == TUNE_SLOTS) {
        path = first_path(covered);
    } else if (!path) {
        path = autotune(B, T, C, NH, plan, covered);
        tuned[ntuned].T = T;
        tuned[ntuned].C = C;
        tuned[ntuned].NH = NH;
        tuned[ntuned].flash[0] = plan->flash[0];
        tuned[ntuned].flash[1] = plan->flash[1];
        tuned[ntuned++].path = path;
    }
    pthread_mutex_unlock(&tune_lock);
    return path;
}

/* The path of a shape under the current precision and mode (a path forced
 * by the mode but not covering the shape gives GEMM), with the fused
 * kernels' dims in plan when it is the fused one. */
static int attention_path(int B, int T, int C, int NH, attn_plan *plan)
{
    flash_default(plan);
    if (!g_cuda.bf16 || !g_cuda.cublas || B <= 0 || B > 65535 || T < 1 || NH <= 0 || C % NH)
        return ATT_PATH_GEMM; // fp32 mode, backend not started, or a shape the grids can't take
    int covered = PATH_BIT(ATT_PATH_GEMM);
    if (fused_plan(T, C, NH, plan))
        covered |= PATH_BIT(ATT_PATH_FUSED);
    if (cuda_bf16_gemms() && cuda_flash_covers(C / NH))
        covered |= PATH_BIT(ATT_PATH_FLASH) | PATH_BIT(ATT_PATH_FLASH_GEMM);
    const int mode = attention_mode();
    if (mode != ATT_AUTO)
        return covered & PATH_BIT(mode) ? mode : ATT_PATH_GEMM;
    if (covered == PATH_BIT(ATT_PATH_GEMM))
        return ATT_PATH_GEMM;
    const int path = tuned_path(B, T, C, NH, plan, covered);
    for (int dir = 0; dir < 2; dir++) // a variant forced since the timing
        if (flash_forced(dir) >= 0)
            plan->flash[dir] = flash_forced(dir);
    return path;
}

/* ------------------------------------------------------------------------
 * The ops (ops.h) and the settings (reed_cuda.h)
 * ---------------------------------------------------------------------- */

void cuda_attention_forward(float *out, float *att, const float *qkv, int B,
                            int T, int C, int NH)
{
    attn_plan plan;
    const int path = attention_path(B, T, C, NH, &plan);
    // The fused and GEMM paths write out in fp32: its views (a sole one of
    // an earlier flash forward among them, which the op's exemption left)
    // go first. The flash path replaces them itself.
    if (path != ATT_PATH_FLASH && path != ATT_PATH_FLASH_GEMM)
        cuda_view_overwrite(out, (size_t)B * T * C * sizeof(float));
    path_forward(path, out, att, qkv, B, T, C, NH, &plan);
}

void cuda_attention_backward(float *dqkv, float *scratch, const float *dout,
                             const float *qkv, const float *att, int B, int T,
                             int C, int NH)
{
    if (!dqkv) {
        cuda_zero_flush();
        return;
    }
    attn_plan plan;
    const int path = attention_path(B, T, C, NH, &plan);
    if (path == ATT_PATH_FUSED) {
        cuda_zero_flush(); // the fused kernels add into dqkv
        cuda_lazy_back(dqkv, (size_t)B * T * 3 * C * sizeof(float));
        fused_backward(dqkv, scratch, dout, qkv, att, B, plan.bwd);
        return;
    }
    // The flash and GEMM backwards write every element of a freshly zeroed
    // dqkv instead of adding to it.
    const size_t bytes = (size_t)B * T * 3 * C * sizeof(float);
    const int add = !cuda_zero_take(dqkv, bytes);
    if (path == ATT_PATH_FLASH)
        cuda_flash_backward(dqkv, scratch, dout, qkv, att, B, T, C, NH, add, plan.flash[1]);
    else
        cuda_attention_backward_gemm(dqkv, scratch, dout, qkv, att, B, T, C, NH,
                                     add ? 1.0f : 0.0f);
}

extern "C" void reed_cuda_set_attention(int mode)
{
    mode_set = mode > ATT_AUTO && mode < ATT_PATHS ? mode : ATT_AUTO;
}

extern "C" void reed_cuda_set_flash(int forward, int backward)
{
    flash_set[0] = forward >= 0 && forward < FLASH_VARIANTS_MAX ? forward : -1;
    flash_set[1] = backward >= 0 && backward < FLASH_VARIANTS_MAX ? backward : -1;
}

extern "C" int reed_cuda_attention_path(int B, int T, int C, int NH)
{
    attn_plan plan;
    return attention_path(B, T, C, NH, &plan);
}
