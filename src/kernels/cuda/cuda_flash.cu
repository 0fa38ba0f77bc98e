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
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include "cuda_internal.h"

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

/* c(16 × FL_TILE) = a(16 × hs) · tileᵀ, tile a row tile (FL_TILE rows of
 * hs): c[n] holds columns 8n .. 8n + 7. The B fragment of rows 8n .. 8n+7
 * and 16 columns is two 8×8 matrices as stored; one ldmatrix takes them
 * for n and n + 1 (lane l gives row 8·(n + l / 16) + l % 8, columns from
 * 8·((l / 8) % 2)). */
template <int HS>
__device__ __forceinline__ void product_rows(float c[FL_TILE / 8][4],
                                             const unsigned (&fa)[HS / 16][4], const bf16 *tile)
{
    const int l = threadIdx.x % 32;
    const bf16 *r = tile + (8 * (l / 16) + l % 8) * LD_ROWS(HS) + 8 * ((l / 8) % 2);
#pragma unroll
    for (int n = 0; n < FL_TILE / 8; n += 2) {
        c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.0f;
        c[n + 1][0] = c[n + 1][1] = c[n + 1][2] = c[n + 1][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HS / 16; kk++) {
            unsigned b[4];
            ldsm_x4<false>(b, r + 8 * n * LD_ROWS(HS) + 16 * kk);
            mma_16816(c[n], fa[kk], b);
            mma_16816(c[n + 1], fa[kk], b + 2);
        }
    }
}

/* acc(16 × hs) += p(16 × FL_TILE) · x, x a row tile (FL_TILE tokens of
 * hs): p's C fragments, packed to bf16, are the A fragments. The B
 * fragment of tokens 16kt .. 16kt+15 and columns 8n .. 8n+7 is two 8×8
 * matrices transposed; one ldmatrix .trans takes them for n and n + 1
 * (lane l gives token 16kt + l % 8 + 8·((l / 8) % 2), columns from
 * 8·(n + l / 16)). */
template <int HS>
__device__ __forceinline__ void accumulate_cols(float (&acc)[HS / 8][4],
                                                const float p[FL_TILE / 8][4], const bf16 *x)
{
    const int l = threadIdx.x % 32;
    const bf16 *r = x + (l % 8 + 8 * ((l / 8) % 2)) * LD_ROWS(HS) + 8 * (l / 16);
#pragma unroll
    for (int kt = 0; kt < FL_TILE / 16; kt++) {
        const unsigned pa[4] = {bf16_pair(p[2 * kt][0], p[2 * kt][1]),
                                bf16_pair(p[2 * kt][2], p[2 * kt][3]),
                                bf16_pair(p[2 * kt + 1][0], p[2 * kt + 1][1]),
                                bf16_pair(p[2 * kt + 1][2], p[2 * kt + 1][3])};
#pragma unroll
        for (int n = 0; n < HS / 8; n += 2) {
            unsigned b[4];
            ldsm_x4<true>(b, r + 16 * kt * LD_ROWS(HS) + 8 * n);
            mma_16816(acc[n], pa, b);
            mma_16816(acc[n + 1], pa, b + 2);
        }
    }
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
__device__ __forceinline__ void scale_mask(float s[FL_TILE / 8][4], float sc2, int col0, int T)
{
#pragma unroll
    for (int n = 0; n < FL_TILE / 8; n++)
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
        // The online softmax, rows g (r = 0) and g + 8 (r = 1).
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
        accumulate_cols<HS>(o, s, vs);
    }
    float lse2[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] = row_sum(l[r]);
        lse2[r] = m[r] + log2f(l[r]);
        const int i = q0 + w16 + lane_g() + 8 * r;
        if (a.lse && lane_t() == 0 && i < T)
            a.lse[pl.bh + i] = lse2[r];
#pragma unroll
        for (int n = 0; n < HS / 8; n++)
            o[n][2 * r] /= l[r], o[n][2 * r + 1] /= l[r];
    }
    const size_t at = pl.row * a.C + pl.col;
    store_rows<HS>(a.out + at, a.out16 ? a.out16 + at : NULL, a.C, o, q0 + w16, T, 1.0f, 0,
                   a.keep);
    if (a.o16) // only the bf16 copy (keep 0)
        store_rows<HS>(a.out + at, a.o16 + at, a.C, o, q0 + w16, T, 1.0f, 0, 0);
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
 * then k and v) and the tile's D. */
template <int HS>
__device__ void backward_query_body(const flash_args &a)
{
    bf16 *t0 = (bf16 *)flash_smem, *t1 = t0 + FL_TILE * LD_ROWS(HS);
    float *Ds = (float *)(t1 + FL_TILE * LD_ROWS(HS));
    const flash_place pl = flash_where<HS>(a);
    const int T = a.T, q0 = pl.r0, w16 = pl.w16;
    const size_t ld3 = pl.ld3;

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
    if (a.o16) {
        row_dots<HS>(Ds, t1, a.o16 + pl.row * a.C + pl.col, a.C, q0, T);
        __syncthreads();
        D[0] = Ds[w16 + lane_g()];
        D[1] = Ds[w16 + lane_g() + 8];
    }
    // Pass 1 (without out's copy): D_i = Σ_j p_ij·dP_ij (this lane's
    // columns, then the row's).
    for (int k0 = 0; k0 < T && !a.o16; k0 += FL_TILE) {
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
    for (int k0 = 0; k0 < T; k0 += FL_TILE) {
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
                s[n][e] = exp2f(s[n][e] - lse2[e / 2]) * (dp[n][e] - D[e / 2]);
        accumulate_cols<HS>(dq, s, t0); // t0: k
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
 * and v, then q and dout), and lse2 and D of the query tile. */
template <int HS>
__device__ void backward_key_body(const flash_args &a)
{
    bf16 *t0 = (bf16 *)flash_smem, *t1 = t0 + FL_TILE * LD_ROWS(HS);
    float *lse_s = (float *)(t1 + FL_TILE * LD_ROWS(HS)), *D_s = lse_s + FL_TILE;
    const flash_place pl = flash_where<HS>(a);
    const int T = a.T, k0 = pl.r0, w16 = pl.w16;
    const size_t ld3 = pl.ld3;
    const bf16 *dout = a.dout + pl.row * a.C + pl.col;

    load_tiles<HS>(t0, pl.k, ld3, t1, pl.v, ld3, k0, T);
    __syncthreads();
    unsigned ka[HS / 16][4], va[HS / 16][4];
    load_a<HS>(ka, t0, w16);
    load_a<HS>(va, t1, w16);

    float dk[HS / 8][4], dv[HS / 8][4], s[FL_TILE / 8][4], dp[FL_TILE / 8][4];
#pragma unroll
    for (int n = 0; n < HS / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            dk[n][e] = dv[n][e] = 0.0f;
    for (int q0 = 0; q0 < T; q0 += FL_TILE) {
        __syncthreads();
        load_tiles<HS>(t0, pl.q, ld3, t1, dout, a.C, q0, T);
        for (int j = threadIdx.x; j < FL_TILE; j += blockDim.x) {
            const int ok = q0 + j < T; // queries past T: p = 0 and D = 0
            lse_s[j] = ok ? a.lse[pl.bh + q0 + j] : 0.0f;
            D_s[j] = ok ? a.D[pl.bh + q0 + j] : 0.0f;
        }
        __syncthreads();
        product_rows<HS>(s, ka, t0);  // sᵀ = k·qᵀ
        scale_mask(s, a.sc2, q0, T);
        product_rows<HS>(dp, va, t1); // dPᵀ = v·doutᵀ
#pragma unroll
        for (int n = 0; n < FL_TILE / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int j = frag_col(n, e);
                s[n][e] = exp2f(s[n][e] - lse_s[j]);  // pᵀ
                dp[n][e] = s[n][e] * (dp[n][e] - D_s[j]); // dSᵀ
            }
        accumulate_cols<HS>(dv, s, t1);  // dv += pᵀ·dout
        accumulate_cols<HS>(dk, dp, t0); // dk += dSᵀ·q (scaled at the store)
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
 * spill much more and take no cap. */
#define FLASH_KERNELS(HS, MIN_FQ)                                                            \
    __global__ void __launch_bounds__(FL_THREADS, MIN_FQ) flash_forward_##HS(flash_args a)   \
    {                                                                                        \
        forward_body<HS>(a);                                                                 \
    }                                                                                        \
    __global__ void __launch_bounds__(FL_THREADS, MIN_FQ) flash_bwd_query_##HS(flash_args a) \
    {                                                                                        \
        backward_query_body<HS>(a);                                                          \
    }                                                                                        \
    __global__ void __launch_bounds__(FL_THREADS) flash_bwd_key_##HS(flash_args a)           \
    {                                                                                        \
        backward_key_body<HS>(a);                                                            \
    }
FLASH_KERNELS(16, 4)
FLASH_KERNELS(32, 4)
FLASH_KERNELS(64, 4)
FLASH_KERNELS(96, 1)
FLASH_KERNELS(128, 1)
#undef FLASH_KERNELS

/* ------------------------------------------------------------------------
 * Launchers
 * ---------------------------------------------------------------------- */

enum { K_FORWARD, K_QUERY, K_KEY, K_KINDS };
typedef void (*flash_kernel)(flash_args);
#define HEAD_SIZES 5
static const int head_size[HEAD_SIZES] = {16, 32, 64, 96, 128};
static const flash_kernel kernels[HEAD_SIZES][K_KINDS] = {
    {flash_forward_16, flash_bwd_query_16, flash_bwd_key_16},
    {flash_forward_32, flash_bwd_query_32, flash_bwd_key_32},
    {flash_forward_64, flash_bwd_query_64, flash_bwd_key_64},
    {flash_forward_96, flash_bwd_query_96, flash_bwd_key_96},
    {flash_forward_128, flash_bwd_query_128, flash_bwd_key_128},
};

/* The kernels' row for head size hs, or -1. */
static int head_index(int hs)
{
    for (int i = 0; i < HEAD_SIZES; i++)
        if (head_size[i] == hs)
            return i;
    return -1;
}

int cuda_flash_covers(int hs) { return head_index(hs) >= 0; }

/* Shared memory of a kernel: row tiles, and floats (the query kernel's D,
 * the key kernel's lse2 and D of a query tile). */
static size_t smem_bytes(int kind, int hs)
{
    const size_t rows = (size_t)FL_TILE * (hs + FL_PAD) * sizeof(bf16);
    return kind == K_FORWARD ? 3 * rows
           : kind == K_QUERY ? 2 * rows + FL_TILE * sizeof(float)
                             : 2 * rows + 2 * FL_TILE * sizeof(float);
}

static pthread_once_t smem_once = PTHREAD_ONCE_INIT;

/* Lets every kernel use the device's opt-in shared memory per block. */
static void smem_init(void)
{
    int max = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&max, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    for (int i = 0; i < HEAD_SIZES; i++)
        for (int k = 0; k < K_KINDS; k++)
            CUDA_CHECK(cudaFuncSetAttribute(kernels[i][k],
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, max));
}

static void launch(int kind, const flash_args &a, int B)
{
    pthread_once(&smem_once, smem_init);
    const int hs = a.C / a.NH;
    const flash_kernel k = kernels[head_index(hs)][kind];
    const dim3 grid((unsigned)((a.T + FL_TILE - 1) / FL_TILE), (unsigned)a.NH, (unsigned)B);
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
                        int T, int C, int NH)
{
    flash_args a = args_for(qkv, B, T, C, NH, 1); // qkv's view kept for the backward
    a.out = out, a.lse = lse, a.P = P;
    a.o16 = out_copy(lse, B, T, C, NH);
    // out's view for the projection after it, a sole one where it may be
    int skip = 0;
    a.out16 = cuda_view_out_sole(out, (size_t)B * T * C, &skip);
    a.keep = !skip;
    launch(K_FORWARD, a, B);
}

void cuda_flash_backward(float *dqkv, float *D, const float *dout, const float *qkv,
                         const float *lse, int B, int T, int C, int NH, int add)
{
    flash_args a = args_for(qkv, B, T, C, NH, 0);
    a.dout = cuda_view_or_copy(BF16_B, dout, (size_t)B * T * C, 0);
    a.out = dqkv, a.lse = (float *)lse, a.D = D, a.add = add;
    a.o16 = out_copy((float *)lse, B, T, C, NH);
    // dqkv's view for the qkv linear's backward; only the view (a sole
    // one) where dqkv is written anew
    const size_t n = (size_t)B * T * 3 * C;
    int skip = 0;
    a.out16 = add ? cuda_view_out(dqkv, n) : cuda_view_out_sole(dqkv, n, &skip);
    a.keep = !skip;
    launch(K_QUERY, a, B);
    launch(K_KEY, a, B);
}
