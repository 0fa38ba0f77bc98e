/* Flash attention on mma.sync, for the bf16 mode on bf16 operands: the
 * forward and backward of the "flash" attention paths (cuda_attention.cu
 * chooses among the paths).
 *
 * A warp multiplies 16 rows at a time with mma.sync m16n8k16 (bf16
 * operands, fp32 accumulation), its operands and results in registers as
 * the PTX ISA lays them out ("Matrix Fragments for mma.m16n8k16"; g =
 * lane/4, t = lane%4):
 *   A (16×16): rows g, g+8; columns 2t, 2t+1 and 2t+8, 2t+9;
 *   B (16×8):  rows 2t, 2t+1 and 2t+8, 2t+9 of column g;
 *   C (16×8):  rows g, g+8; columns 2t, 2t+1.
 * Two C fragments side by side, packed to bf16, are one A fragment
 * (FlashAttention-2's arrangement): scores s and probabilities p never
 * leave registers. Shared memory holds bf16 tiles of 64 rows of q, k, v or
 * dout, rows padded by FL_PAD; fragments come out of them by ldmatrix
 * (four 8×8 matrices a warp-wide instruction, each row 16 bytes, the 8
 * rows of a matrix in 8 different bank quads), transposed (.trans) where a
 * product over tokens wants pairs of adjacent tokens as its B operand.
 * (The tiles were first read with 4-byte loads and kept transposed copies
 * written 2 bytes at a time; Nsight Compute then showed the three kernels
 * bound by L1/shared-memory throughput, 71 to 83% of peak, at SiT-B/2.)
 *
 * Units: s = q·k·log2(e)/sqrt(hs) (log2 units), p = exp2(s − lse2) with
 * lse2 = log2 Σ_j exp2(s_j) per query row; the natural-log gradient is
 * dS = p∘(dP − D), D_i = Σ_j p_ij·dP_ij, dP = dout·vᵀ.
 *
 * Forward, per (64 query rows, head, batch), 4 warps of 16 rows: key tiles
 * of 64 under the online softmax (running maximum m and sum l), out =
 * Σ p̃·v / l; then lse2 to `lse` and/or, in a second pass over the key
 * tiles, P (bf16) to `P` (the GEMM path's saved state, for its backward).
 * Backward, two kernels (deterministic, no atomics; each element of dqkv
 * read, added to and written by one thread):
 *  - per 64 query rows: D_i = Σ_j p_ij·dP_ij = dout_i·out_i (as
 *    FlashAttention-2), from the bf16 copy of out the forward left in att
 *    after lse where there is room (else a first pass over the key tiles
 *    sums p∘dP); then over the key tiles p and dP again,
 *    dS = p∘(dP − D), dq += dS·k/sqrt(hs); D goes to scratch;
 *  - per 64 keys, 4 warps of 16 keys: over the query tiles, sᵀ = k·qᵀ,
 *    pᵀ, dPᵀ = v·doutᵀ, dSᵀ; dv += pᵀ·dout, dk += dSᵀ·q/sqrt(hs).
 * Variants (head sizes up to 64; cuda_attention.cu times them and keeps
 * the fastest): forwards whose key tiles come in by cp.async, with 16 or
 * 32 query rows a warp; a key kernel that takes a query tile 32 queries at
 * a time (fewer registers); and that with the query and key kernels'
 * tiles by cp.async. Each gives the same values as the kernels above:
 * every accumulator gets the same products in the same order.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include <atomic>

#include "cuda_internal.h"
#include "reed_cuda.h"

typedef __nv_bfloat16 bf16;

#define FL_WARPS 4
#define FL_THREADS (32 * FL_WARPS)
#define FL_TILE 64 /* rows of a tile: 16 per warp, and keys per step */
#define FL_PAD 8
#define LOG2E 1.4426950408889634f

extern __shared__ __align__(16) unsigned char flash_smem[];

/* ------------------------------------------------------------------------
 * Fragments and tiles
 * ---------------------------------------------------------------------- */

/* d(16×8) += a(16×16)·b(16×8): one warp-wide mma.sync. The emulator
 * (tools/cuda-emu) runs no PTX and supplies the same product. */
__device__ __forceinline__ void mma_16816(float d[4], const unsigned a[4], const unsigned b[2])
{
#ifdef REED_CUDA_EMU
    emu_mma_16816(d, a, b);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}


__device__ __forceinline__ int lane_g(void) { return (threadIdx.x % 32) >> 2; }
__device__ __forceinline__ int lane_t(void) { return threadIdx.x & 3; }

/* Row stride (bf16) of a tile of hs-wide rows. */
#define LD_ROWS(HS) ((HS) + FL_PAD)

/* A tile's 16-byte chunks on their way from global to shared memory:
 * each thread fetches its N chunks of rows r0 .. r0 + FL_TILE − 1 of src
 * (hs bf16 each, row stride lds; zero past T) into registers, all loads in
 * flight at once, and later puts them into a tile (row r at r·LD_ROWS). */
template <int HS> struct tile_chunks {
    static constexpr int CH = HS / 8; // chunks per row
    static constexpr int N = FL_TILE * CH / FL_THREADS;
    static_assert(FL_TILE * CH % FL_THREADS == 0, "whole chunks per thread");
    uint4 v[N];

    /* Row r and chunk c of the thread's chunk j. */
    __device__ static void where(int j, int &r, int &c)
    {
        const int i = threadIdx.x + j * FL_THREADS;
        r = i / CH;
        c = i % CH;
    }
    __device__ void fetch(const bf16 *src, size_t lds, int r0, int T)
    {
#pragma unroll
        for (int j = 0; j < N; j++) {
            int r, c;
            where(j, r, c);
            v[j] = r0 + r < T ? *(const uint4 *)(src + (size_t)(r0 + r) * lds + 8 * c)
                              : uint4{0u, 0u, 0u, 0u};
        }
    }
    __device__ void put(bf16 *dst) const
    {
#pragma unroll
        for (int j = 0; j < N; j++) {
            int r, c;
            where(j, r, c);
            *(uint4 *)(dst + r * LD_ROWS(HS) + 8 * c) = v[j];
        }
    }
};

/* One tile, and two with all their loads in flight together. */
template <int HS>
__device__ void load_tile(bf16 *dst, const bf16 *src, size_t lds, int r0, int T)
{
    tile_chunks<HS> t;
    t.fetch(src, lds, r0, T);
    t.put(dst);
}
template <int HS>
__device__ void load_tiles(bf16 *dst1, const bf16 *src1, size_t lds1, bf16 *dst2,
                           const bf16 *src2, size_t lds2, int r0, int T)
{
    tile_chunks<HS> t1, t2;
    t1.fetch(src1, lds1, r0, T);
    t2.fetch(src2, lds2, r0, T);
    t1.put(dst1);
    t2.put(dst2);
}

/* cp.async: 16 bytes from global to shared memory without a stop in
 * registers, or 16 zero bytes where !valid (src, which must still be a
 * valid address, is not read); commit closes a group of them, and
 * wait<N> waits until at most N of this thread's groups are still in
 * flight. The emulator (tools/cuda-emu) makes each copy at the wait that
 * covers it and fills the destination with garbage until then, so a read
 * before that wait (by any thread) shows. */
__device__ __forceinline__ void cp_async16(bf16 *dst, const bf16 *src, bool valid)
{
#ifdef REED_CUDA_EMU
    emu_cp_async16(dst, src, valid ? 16 : 0);
#else
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
                 "r"(valid ? 16 : 0));
#endif
}
__device__ __forceinline__ void cp_async_commit(void)
{
#ifdef REED_CUDA_EMU
    emu_cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait(void)
{
#ifdef REED_CUDA_EMU
    emu_cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

/* A tile's rows r0 .. r0 + FL_TILE − 1 of src (zero past T) on their way
 * into dst by cp.async, each thread's chunks as tile_chunks lays them out;
 * src itself (row 0, which exists) stands in for the rows past T. */
template <int HS>
__device__ void tile_async(bf16 *dst, const bf16 *src, size_t lds, int r0, int T)
{
#pragma unroll
    for (int j = 0; j < tile_chunks<HS>::N; j++) {
        int r, c;
        tile_chunks<HS>::where(j, r, c);
        const bool valid = r0 + r < T;
        cp_async16(dst + r * LD_ROWS(HS) + 8 * c,
                   valid ? src + (size_t)(r0 + r) * lds + 8 * c : src, valid);
    }
}

/* The start of a step of a loop over tiles in two stages: the next step's
 * tiles on their way (fetch_next, unless this is the last step), then
 * this step's waited for, and a barrier so every thread's part is in. */
template <typename F> __device__ __forceinline__ void stage_in(bool more, F fetch_next)
{
    if (more) {
        fetch_next();
        cp_async_commit();
        cp_async_wait<1>(); // every group but the newest: this step's
    } else {
        cp_async_wait<0>();
    }
    __syncthreads();
}

/* r[i] = the lane's fragment of 8×8 matrix i (bf16 pairs), lanes 8i to
 * 8i + 7 giving the addresses of its rows (16 bytes each, in shared
 * memory): ldmatrix .x4, or with TRANS its .trans (the matrices
 * transposed). The emulator (tools/cuda-emu) runs no PTX and supplies the
 * same loads. */
template <bool TRANS> __device__ __forceinline__ void ldsm_x4(unsigned r[4], const bf16 *row)
{
#ifdef REED_CUDA_EMU
    emu_ldmatrix_x4(r, row, TRANS);
#else
    const unsigned a = (unsigned)__cvta_generic_to_shared(row);
    if constexpr (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#endif
}

/* The A fragments of the warp's 16 rows (from row0) of a row tile: per
 * 16 columns, matrices rows 0–7 and 8–15 of columns 0–7, then of 8–15
 * (lane l gives row l % 16, columns from 8·(l / 16)). */
template <int HS>
__device__ __forceinline__ void load_a(unsigned (&fa)[HS / 16][4], const bf16 *tile, int row0)
{
    const int l = threadIdx.x % 32;
    const bf16 *r = tile + (row0 + l % 16) * LD_ROWS(HS) + 8 * (l / 16);
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++)
        ldsm_x4<false>(fa[kk], r + 16 * kk);
}

/* c[m](16 × NC) = a[m](16 × hs) · tileᵀ for the warp's M groups of 16
 * rows, tile a row tile (NC of its rows, from the pointer given, of hs):
 * c[m][n] holds columns 8n .. 8n + 7. The B fragment of rows 8n .. 8n+7
 * and 16 columns is two 8×8 matrices as stored; one ldmatrix takes them
 * for n and n + 1 (lane l gives row 8·(n + l / 16) + l % 8, columns from
 * 8·((l / 8) % 2)), and every group multiplies by them (with M = 2, half
 * the shared-memory reads a product). */
template <int HS, int NC, int M>
__device__ __forceinline__ void product_rows_m(float (&c)[M][NC / 8][4],
                                               const unsigned (&fa)[M][HS / 16][4],
                                               const bf16 *tile)
{
    const int l = threadIdx.x % 32;
    const bf16 *r = tile + (8 * (l / 16) + l % 8) * LD_ROWS(HS) + 8 * ((l / 8) % 2);
#pragma unroll
    for (int n = 0; n < NC / 8; n += 2) {
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                c[m][n][e] = c[m][n + 1][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HS / 16; kk++) {
            unsigned b[4];
            ldsm_x4<false>(b, r + 8 * n * LD_ROWS(HS) + 16 * kk);
#pragma unroll
            for (int m = 0; m < M; m++) {
                mma_16816(c[m][n], fa[m][kk], b);
                mma_16816(c[m][n + 1], fa[m][kk], b + 2);
            }
        }
    }
}

/* The one-group product (c(16 × NC), NC columns from 64 down). */
template <int HS, int NC = FL_TILE>
__device__ __forceinline__ void product_rows(float (&c)[NC / 8][4],
                                             const unsigned (&fa)[HS / 16][4], const bf16 *tile)
{
    product_rows_m<HS, NC, 1>(*reinterpret_cast<float(*)[1][NC / 8][4]>(&c),
                              *reinterpret_cast<const unsigned(*)[1][HS / 16][4]>(&fa), tile);
}

/* acc[m](16 × hs) += p[m](16 × NC) · x for the warp's M groups of 16 rows,
 * x a row tile (NC tokens, from the pointer given, of hs): p's C fragments,
 * packed to bf16, are the A fragments. The B fragment of tokens 16kt ..
 * 16kt+15 and columns 8n .. 8n+7 is two 8×8 matrices transposed; one
 * ldmatrix .trans takes them for n and n + 1 (lane l gives token 16kt +
 * l % 8 + 8·((l / 8) % 2), columns from 8·(n + l / 16)). */
template <int HS, int NC, int M>
__device__ __forceinline__ void accumulate_cols_m(float (&acc)[M][HS / 8][4],
                                                  const float (&p)[M][NC / 8][4], const bf16 *x)
{
    const int l = threadIdx.x % 32;
    const bf16 *r = x + (l % 8 + 8 * ((l / 8) % 2)) * LD_ROWS(HS) + 8 * (l / 16);
#pragma unroll
    for (int kt = 0; kt < NC / 16; kt++) {
        unsigned pa[M][4];
#pragma unroll
        for (int m = 0; m < M; m++) {
            pa[m][0] = bf16_pair(p[m][2 * kt][0], p[m][2 * kt][1]);
            pa[m][1] = bf16_pair(p[m][2 * kt][2], p[m][2 * kt][3]);
            pa[m][2] = bf16_pair(p[m][2 * kt + 1][0], p[m][2 * kt + 1][1]);
            pa[m][3] = bf16_pair(p[m][2 * kt + 1][2], p[m][2 * kt + 1][3]);
        }
#pragma unroll
        for (int n = 0; n < HS / 8; n += 2) {
            unsigned b[4];
            ldsm_x4<true>(b, r + 16 * kt * LD_ROWS(HS) + 8 * n);
#pragma unroll
            for (int m = 0; m < M; m++) {
                mma_16816(acc[m][n], pa[m], b);
                mma_16816(acc[m][n + 1], pa[m], b + 2);
            }
        }
    }
}

template <int HS, int NC = FL_TILE>
__device__ __forceinline__ void accumulate_cols(float (&acc)[HS / 8][4],
                                                const float (&p)[NC / 8][4], const bf16 *x)
{
    accumulate_cols_m<HS, NC, 1>(*reinterpret_cast<float(*)[1][HS / 8][4]>(&acc),
                                 *reinterpret_cast<const float(*)[1][NC / 8][4]>(&p), x);
}

/* Column j of fragment element e of c[n]: 8n + 2t + (e & 1); row: g + 8·(e ≥ 2). */
__device__ __forceinline__ int frag_col(int n, int e) { return 8 * n + 2 * lane_t() + (e & 1); }

/* rows(row0 + g + 8r, cols 2t, 2t+1 of each 8) of a (·, ld) fp32 matrix
 * (+)= scale·acc, rows past T left out; m16 (unless NULL), laid out as m,
 * gets the bf16 of the values written, and with keep 0 only m16 is written
 * (a sole view; add is 0 then). */
template <int HS>
__device__ void store_rows(float *m, bf16 *m16, size_t ld, const float (&acc)[HS / 8][4],
                           int row0, int T, float scale, int add, int keep = 1)
{
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = row0 + lane_g() + 8 * r;
        if (i >= T)
            continue;
        const size_t at = (size_t)i * ld + 2 * lane_t();
        float *row = m + at;
#pragma unroll
        for (int n = 0; n < HS / 8; n++) {
            float v[2];
#pragma unroll
            for (int e = 0; e < 2; e++) {
                v[e] = scale * acc[n][2 * r + e];
                v[e] = add ? row[8 * n + e] + v[e] : v[e];
                if (keep)
                    row[8 * n + e] = v[e];
            }
            if (m16) // two adjacent bf16: one 4-byte store (at and ld even)
                *(unsigned *)(m16 + at + 8 * n) = bf16_pair(v[0], v[1]);
        }
    }
}

/* Sum over the 4 lanes of a fragment row (lanes 4g .. 4g + 3). */
__device__ __forceinline__ float row_sum(float v)
{
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float row_max(float v)
{
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

typedef struct flash_args {
    const bf16 *qkv;    /* (B, T, 3C): qkv's bf16 view */
    const bf16 *dout;   /* (B, T, C), the backward's */
    float *out;         /* (B, T, C): forward; dqkv (B, T, 3C): backward */
    bf16 *out16;        /* out's or dqkv's bf16 view, or NULL */
    int keep;           /* 0: that view only, a sole one */
    float *lse;         /* (B, NH, T) lse2, or NULL (forward) */
    bf16 *P;            /* (B, NH, T, T), or NULL (forward) */
    float *D;           /* (B, NH, T): backward */
    bf16 *o16;          /* (B, T, C): out in bf16, kept in att for D; or NULL */
    int T, C, NH, add;  /* add: the backward adds into dqkv (else writes) */
    float sc, sc2;      /* 1/sqrt(hs), log2(e)/sqrt(hs) */
} flash_args;

/* This block's place: its tile (blockIdx.x: 64 query rows, or 64 keys),
 * head (blockIdx.y) and batch (blockIdx.z). */
typedef struct flash_place {
    const bf16 *q, *k, *v; /* the head's first row of q, k and v in qkv */
    size_t ld3;            /* qkv's row stride, 3C */
    size_t row;            /* b·T: the batch's first row of (B, T, ·) */
    size_t bh;             /* (b·NH + h)·T: the head's offset into (B, NH, T) */
    size_t col;            /* h·hs: the head's first column in (·, C) */
    int r0;                /* the tile's first row */
    int w16;               /* the warp's first row in the tile */
} flash_place;

template <int HS>
__device__ flash_place flash_where(const flash_args &a)
{
    const int h = blockIdx.y, b = blockIdx.z;
    flash_place p;
    p.ld3 = 3 * (size_t)a.C;
    p.row = (size_t)b * a.T;
    p.col = (size_t)h * HS;
    p.q = a.qkv + p.row * p.ld3 + p.col;
    p.k = p.q + a.C;
    p.v = p.q + 2 * a.C;
    p.bh = ((size_t)b * a.NH + h) * a.T;
    p.r0 = blockIdx.x * FL_TILE;
    p.w16 = 16 * (threadIdx.x / 32);
    return p;
}

/* s = c·sc2, −inf at columns (from col0) past T. */
template <int NC = FL_TILE>
__device__ __forceinline__ void scale_mask(float (&s)[NC / 8][4], float sc2, int col0, int T)
{
#pragma unroll
    for (int n = 0; n < NC / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            s[n][e] = col0 + frag_col(n, e) < T ? s[n][e] * sc2 : -INFINITY;
}

/* ------------------------------------------------------------------------
 * Forward
 * ---------------------------------------------------------------------- */

/* P's rows of the warp for the key tile at k0: exp2(s − lse2) as bf16,
 * rows and keys past T left out. */
__device__ __forceinline__ void store_p(bf16 *P, const float s[FL_TILE / 8][4],
                                        const float lse2[2], int row0, int k0, int T)
{
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = row0 + lane_g() + 8 * r;
        if (i >= T)
            continue;
        bf16 *p = P + (size_t)i * T;
#pragma unroll
        for (int n = 0; n < FL_TILE / 8; n++) {
            const int j = k0 + frag_col(n, 0);
            const float p0 = exp2f(s[n][2 * r] - lse2[r]), p1 = exp2f(s[n][2 * r + 1] - lse2[r]);
            if (j + 1 < T && !(T & 1)) { // the pair is 4-byte aligned
                *(unsigned *)(p + j) = bf16_pair(p0, p1);
            } else {
                if (j < T)
                    p[j] = __float2bfloat16(p0);
                if (j + 1 < T)
                    p[j + 1] = __float2bfloat16(p1);
            }
        }
    }
}

/* One key tile of the online softmax for the warp's 16 rows, g (r = 0)
 * and g + 8 (r = 1): the running maximum m and sum l updated, o rescaled,
 * s turned into p̃ = exp2(s − m). */
template <int HS>
__device__ __forceinline__ void online_softmax(float (&s)[FL_TILE / 8][4], float (&o)[HS / 8][4],
                                               float (&m)[2], float (&l)[2])
{
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float mx = m[r];
#pragma unroll
        for (int n = 0; n < FL_TILE / 8; n++)
            mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
        mx = row_max(mx);
        const float corr = exp2f(m[r] - mx); // 0 at the first tile
        m[r] = mx;
        l[r] *= corr;
#pragma unroll
        for (int n = 0; n < HS / 8; n++)
            o[n][2 * r] *= corr, o[n][2 * r + 1] *= corr;
#pragma unroll
        for (int n = 0; n < FL_TILE / 8; n++) {
            s[n][2 * r] = exp2f(s[n][2 * r] - mx);
            s[n][2 * r + 1] = exp2f(s[n][2 * r + 1] - mx);
            l[r] += s[n][2 * r] + s[n][2 * r + 1];
        }
    }
}

/* The end of the forward for the warp's 16 rows from row0: lse2 = m +
 * log2 l (to a.lse unless NULL), out = o / l (and its views and bf16
 * copy). */
template <int HS>
__device__ __forceinline__ void finish_rows(const flash_args &a, const flash_place &pl,
                                            float (&o)[HS / 8][4], const float (&m)[2],
                                            float (&l)[2], int row0, float (&lse2)[2])
{
    const int T = a.T;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] = row_sum(l[r]);
        lse2[r] = m[r] + log2f(l[r]);
        const int i = row0 + lane_g() + 8 * r;
        if (a.lse && lane_t() == 0 && i < T)
            a.lse[pl.bh + i] = lse2[r];
#pragma unroll
        for (int n = 0; n < HS / 8; n++)
            o[n][2 * r] /= l[r], o[n][2 * r + 1] /= l[r];
    }
    const size_t at = pl.row * a.C + pl.col;
    store_rows<HS>(a.out + at, a.out16 ? a.out16 + at : NULL, a.C, o, row0, T, 1.0f, 0, a.keep);
    if (a.o16) // only the bf16 copy (keep 0)
        store_rows<HS>(a.out + at, a.o16 + at, a.C, o, row0, T, 1.0f, 0, 0);
}

template <int HS>
__device__ void forward_body(const flash_args &a)
{
    bf16 *qs = (bf16 *)flash_smem, *ks = qs + FL_TILE * LD_ROWS(HS);
    bf16 *vs = ks + FL_TILE * LD_ROWS(HS);
    const flash_place pl = flash_where<HS>(a);
    const int T = a.T, q0 = pl.r0, w16 = pl.w16;
    const size_t ld3 = pl.ld3;

    load_tile<HS>(qs, pl.q, ld3, q0, T);
    __syncthreads();
    unsigned qa[HS / 16][4];
    load_a<HS>(qa, qs, w16);

    float o[HS / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float s[FL_TILE / 8][4];
#pragma unroll
    for (int n = 0; n < HS / 8; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    for (int k0 = 0; k0 < T; k0 += FL_TILE) {
        __syncthreads(); // every warp is done with the previous k and v
        load_tiles<HS>(ks, pl.k, ld3, vs, pl.v, ld3, k0, T);
        __syncthreads();
        product_rows<HS>(s, qa, ks);
        scale_mask(s, a.sc2, k0, T);
        online_softmax<HS>(s, o, m, l);
        accumulate_cols<HS>(o, s, vs);
    }
    float lse2[2];
    finish_rows<HS>(a, pl, o, m, l, q0 + w16, lse2);
    if (!a.P)
        return;
    // Pass 2: the normalised P for the GEMM path's backward.
    bf16 *P = a.P + pl.bh * T;
    for (int k0 = 0; k0 < T; k0 += FL_TILE) {
        __syncthreads();
        load_tile<HS>(ks, pl.k, ld3, k0, T);
        __syncthreads();
        product_rows<HS>(s, qa, ks);
        scale_mask(s, a.sc2, k0, T);
        store_p(P, s, lse2, q0 + w16, k0, T);
    }
}

/* The forward (no P) with the key tiles coming in by cp.async into two
 * stages, the next one in flight while this one is used, and M groups of
 * 16 query rows a warp (64·M rows a block) that share every k and v
 * fragment read from shared memory: with M = 2 (the wide forward) half the
 * reads of forward_body a product (Nsight Compute found that one bound by
 * L1 and shared-memory throughput). Shared memory: q (64·M rows), then the
 * stages' k and v tiles. Each row's arithmetic is forward_body's, in the
 * same order. */
template <int HS, int M>
__device__ void forward_async_body(const flash_args &a)
{
    constexpr int TILE = FL_TILE * LD_ROWS(HS); // one tile of 64 rows, in bf16
    bf16 *qs = (bf16 *)flash_smem, *kv = qs + M * TILE;
    flash_place pl = flash_where<HS>(a);
    pl.r0 = blockIdx.x * M * FL_TILE;
    pl.w16 = 16 * M * (threadIdx.x / 32); // the warp's first row
    const int T = a.T, q0 = pl.r0, w0 = pl.w16;
    const size_t ld3 = pl.ld3;

    // q and the first key tile in one group, the next tile in the next.
#pragma unroll
    for (int g = 0; g < M; g++)
        tile_async<HS>(qs + g * TILE, pl.q, ld3, q0 + g * FL_TILE, T);
    tile_async<HS>(kv, pl.k, ld3, 0, T);
    tile_async<HS>(kv + TILE, pl.v, ld3, 0, T);
    cp_async_commit();

    unsigned qa[M][HS / 16][4];
    float o[M][HS / 8][4], m[M][2], l[M][2], s[M][FL_TILE / 8][4];
#pragma unroll
    for (int g = 0; g < M; g++) {
        m[g][0] = m[g][1] = -INFINITY;
        l[g][0] = l[g][1] = 0.0f;
#pragma unroll
        for (int n = 0; n < HS / 8; n++)
            o[g][n][0] = o[g][n][1] = o[g][n][2] = o[g][n][3] = 0.0f;
    }
    for (int k0 = 0, st = 0; k0 < T; k0 += FL_TILE, st ^= 1) {
        const bf16 *ks = kv + 2 * st * TILE, *vs = ks + TILE;
        stage_in(k0 + FL_TILE < T, [&] { // the next tile into the other stage
            bf16 *next = kv + 2 * (st ^ 1) * TILE;
            tile_async<HS>(next, pl.k, ld3, k0 + FL_TILE, T);
            tile_async<HS>(next + TILE, pl.v, ld3, k0 + FL_TILE, T);
        });
        if (k0 == 0) {
#pragma unroll
            for (int g = 0; g < M; g++)
                load_a<HS>(qa[g], qs, w0 + 16 * g);
        }
        product_rows_m<HS, FL_TILE, M>(s, qa, ks);
#pragma unroll
        for (int g = 0; g < M; g++) {
            scale_mask(s[g], a.sc2, k0, T);
            online_softmax<HS>(s[g], o[g], m[g], l[g]);
        }
        accumulate_cols_m<HS, FL_TILE, M>(o, s, vs);
        __syncthreads(); // every warp is done with this stage before it is refilled
    }
#pragma unroll
    for (int g = 0; g < M; g++) {
        float lse2[2];
        finish_rows<HS>(a, pl, o[g], m[g], l[g], q0 + w0 + 16 * g, lse2);
    }
}

/* ------------------------------------------------------------------------
 * Backward
 * ---------------------------------------------------------------------- */

/* Ds[r] = Σ_e dout(r, e)·o(r, e) for the tile's rows r (0 past T): dout the
 * tile in shared memory, o from global memory (row stride ldo). Two
 * threads a row, half the head each. */
template <int HS>
__device__ void row_dots(float *Ds, const bf16 *dout, const bf16 *o, size_t ldo, int r0, int T)
{
    static_assert(FL_THREADS == 2 * FL_TILE && HS % 16 == 0, "two threads a row, 16-byte halves");
    const int r = threadIdx.x / 2, e0 = (threadIdx.x % 2) * (HS / 2);
    float sum = 0.0f;
    if (r0 + r < T)
#pragma unroll
        for (int e = e0; e < e0 + HS / 2; e += 8) {
            const uint4 ov = *(const uint4 *)(o + (size_t)(r0 + r) * ldo + e);
            const bf16 *ob = (const bf16 *)&ov, *db = dout + r * LD_ROWS(HS) + e;
#pragma unroll
            for (int k = 0; k < 8; k++)
                sum += __bfloat162float(db[k]) * __bfloat162float(ob[k]);
        }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    if (threadIdx.x % 2 == 0)
        Ds[r] = sum;
}

/* The query kernel: D, then dq. Shared memory: two row tiles (q and dout,
 * then k and v) and the tile's D; with ASYNC (out's copy needed for D)
 * two more, the k and v tiles coming in by cp.async in two stages: the
 * first in the extra tiles while q and dout load, the second in q's and
 * dout's once those are in registers. */
template <int HS, bool ASYNC>
__device__ void backward_query_body(const flash_args &a)
{
    constexpr int TILE = FL_TILE * LD_ROWS(HS);
    bf16 *t0 = (bf16 *)flash_smem, *t1 = t0 + TILE, *t2 = t1 + TILE, *t3 = t2 + TILE;
    float *Ds = (float *)(ASYNC ? t3 + TILE : t2);
    const flash_place pl = flash_where<HS>(a);
    const int T = a.T, q0 = pl.r0, w16 = pl.w16;
    const size_t ld3 = pl.ld3;

    if constexpr (ASYNC) {
        tile_async<HS>(t2, pl.k, ld3, 0, T);
        tile_async<HS>(t3, pl.v, ld3, 0, T);
        cp_async_commit();
    }
    load_tiles<HS>(t0, pl.q, ld3, t1, a.dout + pl.row * a.C + pl.col, a.C, q0, T);
    __syncthreads();
    unsigned qa[HS / 16][4], da[HS / 16][4];
    load_a<HS>(qa, t0, w16);
    load_a<HS>(da, t1, w16);
    float lse2[2], D[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = q0 + w16 + lane_g() + 8 * r;
        lse2[r] = i < T ? a.lse[pl.bh + i] : 0.0f; // rows past T: zero inputs, dropped
    }

    float s[FL_TILE / 8][4], dp[FL_TILE / 8][4];
    if (a.o16) { // always with ASYNC (cuda_flash_backward)
        row_dots<HS>(Ds, t1, a.o16 + pl.row * a.C + pl.col, a.C, q0, T);
        __syncthreads(); // also: q and dout are out of t0 and t1 for good
        D[0] = Ds[w16 + lane_g()];
        D[1] = Ds[w16 + lane_g() + 8];
    }
    // Pass 1 (without out's copy): D_i = Σ_j p_ij·dP_ij (this lane's
    // columns, then the row's).
    for (int k0 = 0; k0 < T && !ASYNC && !a.o16; k0 += FL_TILE) {
        __syncthreads();
        load_tiles<HS>(t0, pl.k, ld3, t1, pl.v, ld3, k0, T);
        __syncthreads();
        product_rows<HS>(s, qa, t0);
        scale_mask(s, a.sc2, k0, T);
        product_rows<HS>(dp, da, t1);
#pragma unroll
        for (int n = 0; n < FL_TILE / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                D[e / 2] += exp2f(s[n][e] - lse2[e / 2]) * dp[n][e];
    }
    if (!a.o16) {
        D[0] = row_sum(D[0]);
        D[1] = row_sum(D[1]);
    }

    // Pass 2: dS = p∘(dP − D); dq += dS·k (scaled at the store).
    float dq[HS / 8][4];
#pragma unroll
    for (int n = 0; n < HS / 8; n++)
        dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
    for (int k0 = 0, st = 0; k0 < T; k0 += FL_TILE, st ^= 1) {
        const bf16 *kt = t0, *vt = t1;
        if constexpr (ASYNC) {
            kt = st ? t0 : t2, vt = st ? t1 : t3;
            stage_in(k0 + FL_TILE < T, [&] {
                tile_async<HS>(st ? t2 : t0, pl.k, ld3, k0 + FL_TILE, T);
                tile_async<HS>(st ? t3 : t1, pl.v, ld3, k0 + FL_TILE, T);
            });
        } else {
            __syncthreads();
            load_tiles<HS>(t0, pl.k, ld3, t1, pl.v, ld3, k0, T);
            __syncthreads();
        }
        product_rows<HS>(s, qa, kt);
        scale_mask(s, a.sc2, k0, T);
        product_rows<HS>(dp, da, vt);
#pragma unroll
        for (int n = 0; n < FL_TILE / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[n][e] = exp2f(s[n][e] - lse2[e / 2]) * (dp[n][e] - D[e / 2]);
        accumulate_cols<HS>(dq, s, kt);
        if constexpr (ASYNC)
            __syncthreads(); // every warp is done with this stage before it is refilled
    }
    const size_t at = pl.row * ld3 + pl.col; // dq's first element
    store_rows<HS>(a.out + at, a.out16 ? a.out16 + at : NULL, ld3, dq, q0 + w16, T, a.sc,
                   a.add, a.keep);
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = q0 + w16 + lane_g() + 8 * r;
        if (lane_t() == 0 && i < T)
            a.D[pl.bh + i] = D[r];
    }
}

/* The key kernel: dv and dk for 64 keys. Shared memory: two row tiles (k
 * and v, then q and dout), and lse2 and D of the query tile; with ASYNC
 * two more tiles, the q and dout tiles coming in by cp.async in two
 * stages (the first in the extra tiles while k and v load, the second in
 * k's and v's once those are in registers). Each query tile is taken NQ
 * queries at a time (64, or 32 to keep half the scores and dP in
 * registers: fewer registers, more blocks a multiprocessor); dk and dv
 * add the same products in the same order either way, so all give
 * identical results. */
template <int HS, int NQ, bool ASYNC>
__device__ void backward_key_body(const flash_args &a)
{
    static_assert(FL_TILE % NQ == 0 && NQ % 16 == 0, "whole passes of 16 queries");
    constexpr int TILE = FL_TILE * LD_ROWS(HS);
    bf16 *t0 = (bf16 *)flash_smem, *t1 = t0 + TILE, *t2 = t1 + TILE, *t3 = t2 + TILE;
    float *ls = (float *)(ASYNC ? t3 + TILE : t2), *ds = ls + FL_TILE; // lse2, D
    const flash_place pl = flash_where<HS>(a);
    const int T = a.T, k0 = pl.r0, w16 = pl.w16;
    const size_t ld3 = pl.ld3;
    const bf16 *dout = a.dout + pl.row * a.C + pl.col;

    if constexpr (ASYNC) {
        tile_async<HS>(t2, pl.q, ld3, 0, T);
        tile_async<HS>(t3, dout, a.C, 0, T);
        cp_async_commit();
    }
    load_tiles<HS>(t0, pl.k, ld3, t1, pl.v, ld3, k0, T);
    __syncthreads();
    unsigned ka[HS / 16][4], va[HS / 16][4];
    load_a<HS>(ka, t0, w16);
    load_a<HS>(va, t1, w16);
    if constexpr (ASYNC)
        __syncthreads(); // k and v are out of t0 and t1 for good

    float dk[HS / 8][4], dv[HS / 8][4], s[NQ / 8][4], dp[NQ / 8][4];
#pragma unroll
    for (int n = 0; n < HS / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            dk[n][e] = dv[n][e] = 0.0f;
    for (int q0 = 0, st = 0; q0 < T; q0 += FL_TILE, st ^= 1) {
        const bf16 *qt = t0, *dt = t1;
        if constexpr (!ASYNC) {
            __syncthreads();
            load_tiles<HS>(t0, pl.q, ld3, t1, dout, a.C, q0, T);
        }
        for (int j = threadIdx.x; j < FL_TILE; j += blockDim.x) {
            const int ok = q0 + j < T; // queries past T: p = 0 and D = 0
            ls[j] = ok ? a.lse[pl.bh + q0 + j] : 0.0f;
            ds[j] = ok ? a.D[pl.bh + q0 + j] : 0.0f;
        }
        if constexpr (ASYNC) {
            qt = st ? t0 : t2, dt = st ? t1 : t3;
            stage_in(q0 + FL_TILE < T, [&] {
                tile_async<HS>(st ? t2 : t0, pl.q, ld3, q0 + FL_TILE, T);
                tile_async<HS>(st ? t3 : t1, dout, a.C, q0 + FL_TILE, T);
            });
        } else {
            __syncthreads();
        }
#pragma unroll
        for (int j0 = 0; j0 < FL_TILE; j0 += NQ) {
            const bf16 *q = qt + j0 * LD_ROWS(HS), *d = dt + j0 * LD_ROWS(HS);
            product_rows<HS, NQ>(s, ka, q);  // sᵀ = k·qᵀ
            scale_mask<NQ>(s, a.sc2, q0 + j0, T);
            product_rows<HS, NQ>(dp, va, d); // dPᵀ = v·doutᵀ
#pragma unroll
            for (int n = 0; n < NQ / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int j = j0 + frag_col(n, e);
                    s[n][e] = exp2f(s[n][e] - ls[j]);      // pᵀ
                    dp[n][e] = s[n][e] * (dp[n][e] - ds[j]); // dSᵀ
                }
            accumulate_cols<HS, NQ>(dv, s, d);  // dv += pᵀ·dout
            accumulate_cols<HS, NQ>(dk, dp, q); // dk += dSᵀ·q (scaled at the store)
        }
        if constexpr (ASYNC)
            __syncthreads(); // every warp is done with this stage before it is refilled
    }
    const size_t dk_at = pl.row * ld3 + pl.col + a.C, dv_at = dk_at + a.C;
    bf16 *v16 = a.out16; // dqkv's view
    store_rows<HS>(a.out + dk_at, v16 ? v16 + dk_at : NULL, ld3, dk, k0 + w16, T, a.sc, a.add,
                   a.keep);
    store_rows<HS>(a.out + dv_at, v16 ? v16 + dv_at : NULL, ld3, dv, k0 + w16, T, 1.0f, a.add,
                   a.keep);
}

/* One kernel per body and head size (the fragment counts are compile-time),
 * with the blocks per multiprocessor each must reach (MIN_FQ for the forward
 * and query kernels): 4 caps them at 128 registers a thread, which at head
 * sizes up to 64 costs at most a few spilled bytes; larger heads would
 * spill much more and take no cap. Head sizes up to 64 also get the other
 * variants (cuda_flash_variants): the forwards by cp.async, wide (255
 * registers at head size 64 for sm_90, 16 bytes spilled; 2 blocks a
 * multiprocessor) and not (capped as the forward); the key kernels taking
 * 32 queries a pass, capped at 168 registers (3 blocks; the 64-query one
 * takes 240, so 2 blocks), one of them by cp.async with its query
 * kernel. */
#define FLASH_KERNELS(HS, MIN_FQ)                                                            \
    __global__ void __launch_bounds__(FL_THREADS, MIN_FQ) flash_forward_##HS(flash_args a)   \
    {                                                                                        \
        forward_body<HS>(a);                                                                 \
    }                                                                                        \
    __global__ void __launch_bounds__(FL_THREADS, MIN_FQ) flash_bwd_query_##HS(flash_args a) \
    {                                                                                        \
        backward_query_body<HS, false>(a);                                                   \
    }                                                                                        \
    __global__ void __launch_bounds__(FL_THREADS) flash_bwd_key_##HS(flash_args a)           \
    {                                                                                        \
        backward_key_body<HS, FL_TILE, false>(a);                                            \
    }
#define FLASH_VARIANTS(HS)                                                                   \
    __global__ void __launch_bounds__(FL_THREADS, 2) flash_forward_wide_##HS(flash_args a)   \
    {                                                                                        \
        forward_async_body<HS, 2>(a);                                                        \
    }                                                                                        \
    __global__ void __launch_bounds__(FL_THREADS, 4) flash_forward_async_##HS(flash_args a)  \
    {                                                                                        \
        forward_async_body<HS, 1>(a);                                                        \
    }                                                                                        \
    __global__ void __launch_bounds__(FL_THREADS, 3) flash_bwd_key_half_##HS(flash_args a)   \
    {                                                                                        \
        backward_key_body<HS, FL_TILE / 2, false>(a);                                        \
    }                                                                                        \
    __global__ void __launch_bounds__(FL_THREADS, 4) flash_bwd_query_async_##HS(flash_args a) \
    {                                                                                        \
        backward_query_body<HS, true>(a);                                                    \
    }                                                                                        \
    __global__ void __launch_bounds__(FL_THREADS, 3) flash_bwd_key_async_##HS(flash_args a)  \
    {                                                                                        \
        backward_key_body<HS, FL_TILE / 2, true>(a);                                         \
    }
FLASH_KERNELS(16, 4)
FLASH_KERNELS(32, 4)
FLASH_KERNELS(64, 4)
FLASH_KERNELS(96, 1)
FLASH_KERNELS(128, 1)
FLASH_VARIANTS(16)
FLASH_VARIANTS(32)
FLASH_VARIANTS(64)
#undef FLASH_KERNELS
#undef FLASH_VARIANTS

/* ------------------------------------------------------------------------
 * Launchers
 * ---------------------------------------------------------------------- */

/* The kernels of a head size: forward variants 0 to 2; the query kernel
 * and its cp.async form; key kernel variants 0 to 2. */
enum {
    K_FORWARD, K_FORWARD_WIDE, K_FORWARD_ASYNC,
    K_QUERY, K_QUERY_ASYNC,
    K_KEY, K_KEY_HALF, K_KEY_ASYNC,
    K_KINDS
};
typedef void (*flash_kernel)(flash_args);
#define HEAD_SIZES 5
static const int head_size[HEAD_SIZES] = {16, 32, 64, 96, 128};
#define WITH_VARIANTS(HS)                                                                 \
    {flash_forward_##HS,    flash_forward_wide_##HS,    flash_forward_async_##HS,         \
     flash_bwd_query_##HS,  flash_bwd_query_async_##HS,                                   \
     flash_bwd_key_##HS,    flash_bwd_key_half_##HS,    flash_bwd_key_async_##HS}
#define WITHOUT_VARIANTS(HS)                                                              \
    {flash_forward_##HS, NULL, NULL, flash_bwd_query_##HS, NULL, flash_bwd_key_##HS, NULL, NULL}
static const flash_kernel kernels[HEAD_SIZES][K_KINDS] = {
    WITH_VARIANTS(16),     WITH_VARIANTS(32),      WITH_VARIANTS(64),
    WITHOUT_VARIANTS(96),  WITHOUT_VARIANTS(128),
};
#undef WITH_VARIANTS
#undef WITHOUT_VARIANTS

/* The kernels' row for head size hs, or -1. */
static int head_index(int hs)
{
    for (int i = 0; i < HEAD_SIZES; i++)
        if (head_size[i] == hs)
            return i;
    return -1;
}

int cuda_flash_covers(int hs) { return head_index(hs) >= 0; }

int cuda_flash_variants(int hs)
{
    const int i = head_index(hs);
    return i < 0 ? 0 : kernels[i][K_FORWARD_WIDE] ? 3 : 1;
}

/* Shared memory of a kernel: row tiles, and floats (the query kernel's D,
 * the key kernel's lse2 and D of a query tile). */
static size_t smem_bytes(int kind, int hs)
{
    const size_t rows = (size_t)FL_TILE * (hs + FL_PAD) * sizeof(bf16);
    switch (kind) {
    case K_FORWARD:
        return 3 * rows;
    case K_FORWARD_WIDE: // q (two tiles), two stages of k and v
        return 6 * rows;
    case K_FORWARD_ASYNC:
        return 5 * rows;
    case K_QUERY:
        return 2 * rows + FL_TILE * sizeof(float);
    case K_QUERY_ASYNC: // and two stages of k and v
        return 4 * rows + FL_TILE * sizeof(float);
    case K_KEY_ASYNC: // two stages of q and dout
        return 4 * rows + 2 * FL_TILE * sizeof(float);
    default:
        return 2 * rows + 2 * FL_TILE * sizeof(float);
    }
}

static pthread_once_t smem_once = PTHREAD_ONCE_INIT;

/* Lets every kernel use the device's opt-in shared memory per block. */
static void smem_init(void)
{
    int max = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&max, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    for (int i = 0; i < HEAD_SIZES; i++)
        for (int k = 0; k < K_KINDS; k++)
            if (kernels[i][k])
                CUDA_CHECK(cudaFuncSetAttribute(kernels[i][k],
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, max));
}

/* Launches of forward variants 1 and 2, and of key kernel variants 1 and 2. */
static std::atomic<long> variant_calls[2];

static void launch(int kind, const flash_args &a, int B)
{
    pthread_once(&smem_once, smem_init);
    if (kind == K_FORWARD_WIDE || kind == K_FORWARD_ASYNC)
        variant_calls[0]++;
    else if (kind == K_KEY_HALF || kind == K_KEY_ASYNC)
        variant_calls[1]++;
    const int hs = a.C / a.NH, rows = kind == K_FORWARD_WIDE ? 2 * FL_TILE : FL_TILE;
    const flash_kernel k = kernels[head_index(hs)][kind];
    const dim3 grid((unsigned)((a.T + rows - 1) / rows), (unsigned)a.NH, (unsigned)B);
    k<<<grid, FL_THREADS, smem_bytes(kind, hs), g_cuda.stream>>>(a);
    LAUNCH_CHECK("flash attention kernel");
}

/* Where the forward keeps out's bf16 copy for the backward's D: in att
 * (B·NH·T·T floats), after lse's B·NH·T floats (rounded up to 16 bytes);
 * NULL where it does not fit (tiny T), att is not 16-byte aligned, or
 * there is no lse. */
static bf16 *out_copy(float *lse, int B, int T, int C, int NH)
{
    const size_t at = ((size_t)B * NH * T + 3) / 4 * 4, room = (size_t)B * NH * T * T;
    const size_t need = ((size_t)B * T * C + 1) / 2;
    // row_dots reads the copy 16 bytes at a time
    return lse && aligned16(lse) && at + need <= room ? (bf16 *)(lse + at) : NULL;
}

/* The parts of att the flash kernels use, backed where att is a buffer
 * backed on first use (cuda_lazy.cu): lse and out's copy, or P. */
static void back_att(const flash_args &a, int B)
{
    const size_t rows = (size_t)B * a.NH * a.T;
    if (a.lse)
        cuda_lazy_back(a.lse, rows * sizeof(float));
    if (a.o16)
        cuda_lazy_back(a.o16, (size_t)B * a.T * a.C * sizeof(bf16));
    if (a.P)
        cuda_lazy_back(a.P, rows * a.T * sizeof(bf16));
}

static flash_args args_for(const float *qkv, int B, int T, int C, int NH, int keep)
{
    flash_args a = {};
    a.qkv = cuda_view_or_copy(BF16_A, qkv, (size_t)B * T * 3 * C, keep);
    a.T = T, a.C = C, a.NH = NH;
    a.sc = 1.0f / sqrtf((float)(C / NH));
    a.sc2 = LOG2E * a.sc;
    return a;
}

void cuda_flash_forward(float *out, float *lse, __nv_bfloat16 *P, const float *qkv, int B,
                        int T, int C, int NH, int variant)
{
    flash_args a = args_for(qkv, B, T, C, NH, 1); // qkv's view kept for the backward
    a.out = out, a.lse = lse, a.P = P;
    a.o16 = out_copy(lse, B, T, C, NH);
    back_att(a, B);
    // out's view for the projection after it, a sole one where it may be
    int skip = 0;
    a.out16 = cuda_view_out_sole(out, (size_t)B * T * C, &skip);
    a.keep = !skip;
    static const int kind[3] = {K_FORWARD, K_FORWARD_WIDE, K_FORWARD_ASYNC};
    const int v = !P && variant < cuda_flash_variants(C / NH) ? variant : 0;
    launch(kind[v], a, B);
}

void cuda_flash_backward(float *dqkv, float *D, const float *dout, const float *qkv,
                         const float *lse, int B, int T, int C, int NH, int add, int variant)
{
    flash_args a = args_for(qkv, B, T, C, NH, 0);
    a.dout = cuda_view_or_copy(BF16_B, dout, (size_t)B * T * C, 0);
    a.out = dqkv, a.lse = (float *)lse, a.D = D, a.add = add;
    a.o16 = out_copy((float *)lse, B, T, C, NH);
    back_att(a, B);
    cuda_lazy_back(D, (size_t)B * NH * T * sizeof(float));
    // dqkv's view for the qkv linear's backward; only the view (a sole
    // one) where dqkv is written anew
    const size_t n = (size_t)B * T * 3 * C;
    int skip = 0;
    a.out16 = add ? cuda_view_out(dqkv, n) : cuda_view_out_sole(dqkv, n, &skip);
    a.keep = !skip;
    static const int key[3] = {K_KEY, K_KEY_HALF, K_KEY_ASYNC};
    const int v = variant < cuda_flash_variants(C / NH) ? variant : 0;
    // the cp.async query kernel takes D from out's copy only
    launch(v == 2 && a.o16 ? K_QUERY_ASYNC : K_QUERY, a, B);
    launch(key[v], a, B);
}

extern "C" void reed_cuda_flash_variant_calls(long *forward, long *backward)
{
    *forward = variant_calls[0].load();
    *backward = variant_calls[1].load();
}
