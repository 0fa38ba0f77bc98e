/* Private to the CUDA backend: its state, the error checks, launch helpers,
 * the row-major GEMM wrappers and the ops each .cu file contributes to the
 * table in cuda_ops.cu.
 *
 * Every op runs on the backend's one stream (g_cuda.stream); kernels are
 * launched on it, cuBLAS and cuDNN are bound to it. Ops return without
 * waiting, except those with a host result (reductions, downloads), which
 * wait for the stream. */
#ifndef REED_CUDA_INTERNAL_H
#define REED_CUDA_INTERNAL_H

#include <stddef.h>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#if REED_CUDNN
#include <cudnn.h>
#endif

/* ops.h has no extern "C" block of its own. */
#include <stdint.h>
extern "C" {
#include "ops.h"
}

/* --- state ------------------------------------------------------------------ */

/* Blocks of the first pass of a two-pass reduction (one double partial each). */
#define RED_MAX_BLOCKS 1024
#define RED_THREADS 256

typedef struct cuda_state {
    cudaStream_t stream;
    cublasHandle_t cublas;
#if REED_CUDNN
    cudnnHandle_t cudnn;
#endif
    int bf16;            /* reed_cuda_set_precision */
    /* cuBLAS compute types of the two modes, as probed at start-up */
    cublasComputeType_t compute_fp32, compute_bf16;
    int cudnn_ok;        /* the cuDNN handle was created */
    int use_cudnn;       /* reed_cuda_set_cudnn (and cudnn_ok) */
    long conv_fallbacks; /* cuDNN → im2col fallbacks so far */
    int sync_debug;      /* REED_CUDA_SYNC=1: wait after every launch */
    int sm_count;        /* multiprocessors of device 0 */
    int bf16_operands;   /* bf16 mode: GEMMs on bf16 copies (REED_CUDA_BF16_OPERANDS) */
    double *red_partial; /* (RED_MAX_BLOCKS) device: first-pass partials */
    double *red_result;  /* (2) device: a reduction's results */
} cuda_state;

extern cuda_state g_cuda;

/* --- errors ----------------------------------------------------------------- */

/* Reports "file:line: call failed: detail" through the fatal handler, then
 * aborts. */
[[noreturn]] void cuda_fatal(const char *call, const char *detail,
                             const char *file, int line);

#define CUDA_CHECK(call)                                                      \
    do {                                                                      \
        cudaError_t e_ = (call);                                              \
        if (e_ != cudaSuccess)                                                \
            cuda_fatal(#call, cudaGetErrorString(e_), __FILE__, __LINE__);    \
    } while (0)

#define CUBLAS_CHECK(call)                                                    \
    do {                                                                      \
        cublasStatus_t s_ = (call);                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                      \
            cuda_fatal(#call, cublasGetStatusString(s_), __FILE__, __LINE__); \
    } while (0)

#if REED_CUDNN
#define CUDNN_CHECK(call)                                                     \
    do {                                                                      \
        cudnnStatus_t s_ = (call);                                            \
        if (s_ != CUDNN_STATUS_SUCCESS)                                       \
            cuda_fatal(#call, cudnnGetErrorString(s_), __FILE__, __LINE__);   \
    } while (0)
#endif

/* After every kernel launch: a bad launch configuration fails here; with
 * REED_CUDA_SYNC=1 an error inside the kernel fails here too. */
void cuda_launch_check(const char *what, const char *file, int line);
#define LAUNCH_CHECK(what) cuda_launch_check(what, __FILE__, __LINE__)

/* --- launch helpers ---------------------------------------------------------- */

#define THREADS 256

/* Blocks for a grid-stride loop over n elements with `threads` per block
 * (capped: the loop covers the rest). n must be > 0. */
static inline unsigned grid_for(size_t n, int threads)
{
    size_t blocks = (n + (size_t)threads - 1) / (size_t)threads;
    const size_t cap = (size_t)1 << 20;
    return (unsigned)(blocks < cap ? blocks : cap);
}

/* Whether p is 16-byte aligned (for float4 and uint4 accesses). */
static inline int aligned16(const void *p) { return (uintptr_t)p % 16 == 0; }

/* Blocks for one warp per row over `rows` rows, ROW_WARPS warps (of 32
 * threads) per block. rows must be > 0. */
#define ROW_WARPS 4
#define ROW_THREADS (32 * ROW_WARPS)
static inline unsigned grid_rows(size_t rows)
{
    return (unsigned)((rows + ROW_WARPS - 1) / ROW_WARPS);
}

/* --- device reductions --------------------------------------------------------- */

#ifdef __CUDACC__
/* Sum (max) over the 32 lanes of a warp; every lane gets the result. */
__device__ __forceinline__ double warp_sum(double v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum of v over the block (blockDim.x a multiple of 32, at most 1024);
 * the result is valid in thread 0. Every thread of the block must call it;
 * it may be called several times in a row. */
__device__ __forceinline__ double block_sum(double v)
{
    __shared__ double part[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads(); // a previous call may still be reading part[]
    v = warp_sum(v);
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0;
    if (warp == 0)
        v = warp_sum(v);
    return v;
}

/* Row handled by this warp in a one-warp-per-row kernel (ROW_WARPS warps
 * per block), and the lane within the warp. */
__device__ __forceinline__ size_t warp_row(void)
{
    return (size_t)blockIdx.x * ROW_WARPS + threadIdx.x / 32;
}
__device__ __forceinline__ int lane_id(void) { return threadIdx.x % 32; }

/* y[4j .. 4j+3] = bf16 of v (rounded to nearest even), one 8-byte store:
 * y must be 8-byte aligned. */
__device__ __forceinline__ unsigned bf16_pair(float lo, float hi)
{
    return __bfloat16_as_ushort(__float2bfloat16(lo)) |
           (unsigned)__bfloat16_as_ushort(__float2bfloat16(hi)) << 16;
}
__device__ __forceinline__ void store_bf16x4(__nv_bfloat16 *y, size_t j, float4 v)
{
    uint2 o;
    o.x = bf16_pair(v.x, v.y);
    o.y = bf16_pair(v.z, v.w);
    ((uint2 *)y)[j] = o;
}

/* Grid-stride loop over [0, n). */
#define GRID_LOOP(i, n)                                                       \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);   \
         i += (size_t)gridDim.x * blockDim.x)
#endif

/* --- GEMM in row-major terms (cuda_ops.cu) ------------------------------------ */

/* C(M,N) = alpha·op(A)·op(B) + beta·C, all row-major with leading dims
 * lda/ldb/ldc, op = transpose when ta/tb is set: the meaning of
 * cblas_sgemm(CblasRowMajor, ...). Precision as set by
 * reed_cuda_set_precision. */
void gemm_rm(int ta, int tb, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* `batch` such products, the i-th on A + i·sA, B + i·sB, C + i·sC. */
void gemm_rm_batched(int ta, int tb, int M, int N, int K, float alpha,
                     const float *A, int lda, long long sA, const float *B,
                     int ldb, long long sB, float beta, float *C, int ldc,
                     long long sC, int batch);

/* out(N,OC) = inp(N,C)·w(OC,C)ᵀ + bias(OC) by cuBLASLt with the bias in
 * the epilogue (cuda_lt.cu). Returns 0, or -1 without touching out when
 * that path does not apply (pointers not 16-byte aligned, no algorithm for
 * the shape, REED_CUDA_LT=0): the caller then takes the cuBLAS path. */
int cuda_lt_linear_bias(float *out, const float *inp, const float *w,
                        const float *bias, int N, int C, int OC);

/* bf16 operands: dw(OC,C) += dout(N,OC)ᵀ·inp(N,C) and dbias(OC) += Σ_n
 * dout(n,:), the sum in the GEMM's epilogue (cuda_lt.cu). Returns 0, or
 * -1 without touching dw or dbias when that path does not apply (as above,
 * or REED_CUDA_LT_BGRAD=0). */
int cuda_lt_dw_bgrad(float *dw, float *dbias, const __nv_bfloat16 *dout16,
                     const __nv_bfloat16 *inp16, int N, int C, int OC);

/* The MLP's GELU in cuBLASLt's epilogues, bf16 operands and outputs
 * (cuda_lt.cu; REED_CUDA_LT_GELU=0 turns them off). cuda_lt_gelu_on: 1
 * where they may run (bf16 operands, cuBLASLt started, not turned off).
 * cuda_lt_linear_gelu: pre16(N,OC) = inp16·w16ᵀ + bias (bias rounded to
 * bf16) and out16 = gelu of that pre-activation before its rounding, both
 * bf16. cuda_lt_dgelu:
 * dpre16(N,C) = gelu'(pre16)·(dout16(N,OC)·w16(OC,C)), bf16. Each returns 0,
 * or -1 without touching its outputs where it does not apply (C or OC not
 * a multiple of 8, pointers not 16-byte aligned, no algorithm). */
int cuda_lt_gelu_on(void);
int cuda_lt_linear_gelu(__nv_bfloat16 *out16, __nv_bfloat16 *pre16, const __nv_bfloat16 *inp16,
                        const __nv_bfloat16 *w16, const float *bias, int N, int C, int OC);
int cuda_lt_dgelu(__nv_bfloat16 *dpre16, const __nv_bfloat16 *dout16, const __nv_bfloat16 *w16,
                  const __nv_bfloat16 *pre16, int N, int C, int OC);

/* out16(N,OC) = inp16·w16ᵀ + bias (bias rounded to bf16), bf16 operands
 * and output, the bias in the epilogue: a linear layer writing only its
 * output's sole bf16 view (cuda_lt.cu). 0, or -1 without touching out16
 * (as above: OC not a multiple of 8, alignment, no algorithm). */
int cuda_lt_linear16(__nv_bfloat16 *out16, const __nv_bfloat16 *inp16,
                     const __nv_bfloat16 *w16, const float *bias, int N, int C, int OC);

/* Device memory in arenas (cuda_memory.cu): see ops.h's mem_alloc,
 * mem_free, mem_used and mem_reserve; mem_reserve may hand out a buffer
 * backed on first use (cuda_lazy.cu). cuda_mem_free_own: cuda_mem_free for
 * the backend's own buffers, which the zero op never has pending (no
 * flush). cuda_mem_trim gives the arenas' free slabs back to the device. */
void *cuda_mem_alloc(size_t bytes);
void *cuda_mem_reserve(size_t bytes);
void cuda_mem_free(void *p);
void cuda_mem_free_own(void *p);
size_t cuda_mem_used(void);
void cuda_mem_trim(void);

/* Buffers backed on first use (cuda_lazy.cu). cuda_lazy_alloc: an address
 * range of `bytes` with nothing mapped, or NULL (too small, turned off, or
 * unsupported: allocate plainly). Before an op reads or writes a part of
 * one in fp32, that part must be backed: cuda_lazy_back backs the bytes
 * [p, p + bytes) (clipped to the range), cuda_lazy_back_buffer the whole
 * buffer p points into; both do nothing outside such buffers.
 * cuda_lazy_unback gives back the memory mapped within [p, p + bytes)
 * (after waiting for the device): for values kept elsewhere from now on.
 * cuda_lazy_backed: whether [p, p + bytes) is backed (1 outside them).
 * cuda_lazy_requested: the bytes asked for the buffer at p, 0 for any
 * other pointer; cuda_lazy_free frees it (1), or returns 0.
 * cuda_lazy_mapped: the bytes mapped now. */
void *cuda_lazy_alloc(size_t bytes);
void cuda_lazy_back(const void *p, size_t bytes);
void cuda_lazy_back_buffer(const void *p);
void cuda_lazy_unback(const void *p, size_t bytes);
int cuda_lazy_backed(const void *p, size_t bytes);
size_t cuda_lazy_requested(const void *p);
int cuda_lazy_free(void *p);
size_t cuda_lazy_mapped(void);

/* A scratch buffer of at least `bytes`, grown through the arena as needed
 * (*p, *cap: the caller's static buffer and its size). No wait: the one
 * stream orders the old buffer's last use before the new one's first. */
void *cuda_scratch(void **p, size_t *cap, size_t bytes);

/* --- bf16 operands (cuda_ops.cu) --------------------------------------------- */

/* 1 when the GEMMs run on bf16 copies of their operands: the bf16 mode,
 * unless REED_CUDA_BF16_OPERANDS=0 (then FAST_16BF on the fp32 operands). */
int cuda_bf16_gemms(void);
/* Scratch slot `slot` with room for n bf16 values; valid until the slot's
 * next use. cuda_bf16_copy: the bf16 copy of x (n floats), made on the
 * stream into the slot. */
enum { BF16_A, BF16_B, BF16_C, BF16_SLOTS };
__nv_bfloat16 *cuda_bf16_slot(int slot, size_t n);
const __nv_bfloat16 *cuda_bf16_copy(int slot, const float *x, size_t n);
/* y(n) = bf16 of x(n), on the stream. */
void cuda_bf16_convert(__nv_bfloat16 *y, const float *x, size_t n);

/* --- bf16 views (cuda_view.cu) ------------------------------------------------ */

/* The bf16 "view" of an fp32 buffer: its bf16 copy, written by the op that
 * wrote the buffer, valid until an op writes the buffer again (cuda_view.cu
 * says how that is tracked). Only while the GEMMs run on bf16 operands
 * (cuda_bf16_gemms) and views are on. The calls below that lead to an fp32
 * read or write of x (or p) back it first (cuda_lazy.cu).
 * cuda_view_out: for an op writing x(n) (after reading it, or not): where to
 * write x's view in the same pass, or NULL (views off, or no device memory
 * for it).
 * cuda_view_get: x's view when it covers at least n values, else NULL.
 * cuda_view_or_copy: the view, else a copy of x: kept as x's view when keep
 * is set (for a later op reading x again: the linear backward), else in
 * scratch slot `slot` as cuda_bf16_copy. */
__nv_bfloat16 *cuda_view_out(const float *x, size_t n);
const __nv_bfloat16 *cuda_view_get(const float *x, size_t n);
const __nv_bfloat16 *cuda_view_or_copy(int slot, const float *x, size_t n, int keep);
/* Sole views (cuda_view.cu): cuda_view_out_sole is cuda_view_out for an op
 * that overwrites x(n) without reading it and may skip writing x itself;
 * *skip says whether to (the view is then the only copy of x's values
 * until they are needed). cuda_view_need: the
 * values of the sole view whose buffer holds address p (if any) written
 * back to fp32, for a read of the buffer. cuda_view_overwrite: an op is
 * about to write [p, p + bytes): a sole view there is dropped, after
 * writing back what the write leaves. cuda_view_zeroed: the same for the
 * zero op, which leaves the memory unbacked (its memset may never come:
 * cuda_zero.cu). */
__nv_bfloat16 *cuda_view_out_sole(const float *x, size_t n, int *skip);
/* A new sole view of x(n) for an op that overwrites x without reading it
 * and writes only the view. NULL where x may not have one (views or sole
 * views off, x under the size floor or once read back: x's views are left
 * as they were), or where there is no device memory for it (x's views are
 * dropped then: the op is about to overwrite x anyway). */
__nv_bfloat16 *cuda_view_sole_only(const float *x, size_t n);
/* cuda_view_sole_only for an output that must first pass probation: NULL
 * on a first call for x (the op writes x in fp32) and wherever an op read
 * x in fp32 since the last call (x is then never sole); the view after a
 * call with no such read between. */
__nv_bfloat16 *cuda_view_sole_proven(const float *x, size_t n);
void cuda_view_need(const void *p);
void cuda_view_need_range(const void *p, size_t bytes); /* every one there */
void cuda_view_overwrite(const void *p, size_t bytes);
void cuda_view_zeroed(const void *p, size_t bytes);
/* Drops the views of the buffer holding address p (an op writes it). */
void cuda_view_written(const void *p);
/* Drops the views of buffers starting in [p, p + bytes) (a freed block). */
void cuda_view_freed(const void *p, size_t bytes);
/* Gives back the device memory of every view the running op does not use;
 * returns how many (cuda_mem_alloc, when the device is out of memory). */
int cuda_view_release(void);
/* Wraps every op of t in what each op does first: flush a pending zero
 * unless it takes it itself (cuda_zero.cu), and drop the bf16 views of what
 * it writes. REED_CUDA_VIEWS=0 turns views off for good. */
void cuda_ops_wrap(reed_ops *t);

/* Host value of a device reduction result; waits for the stream. */
double cuda_read_double(const double *dev);

/* Two-pass reductions: a first pass of red_blocks(n) blocks of RED_THREADS
 * threads writes one double per block to g_cuda.red_partial; then
 * cuda_finish_sum adds the first nparts partials in a fixed order and
 * returns the sum (waits for the stream). */
static inline unsigned red_blocks(size_t n)
{
    unsigned b = grid_for(n, RED_THREADS);
    return b < RED_MAX_BLOCKS ? b : RED_MAX_BLOCKS;
}
double cuda_finish_sum(int nparts);

/* With REED_CUDA_PROFILE=1 (or 2: the linear ops by shape too), wraps
 * every op of the table t in a timer (cuda_profile.cu); otherwise leaves
 * it as it is. */
void cuda_profile_wrap(reed_ops *t);

/* Every slot of ops.h but the five memory-management ones (mem_alloc,
 * mem_free, synchronize, mem_used, mem_reserve), for wrappers of the whole table
 * (cuda_profile.cu, cuda_zero.cu, cuda_view.cu). */
#define REED_OP_SLOTS(X)                                                     \
    X(upload) X(download) X(copy) X(zero)                                     \
    X(linear_forward) X(linear_backward)                                      \
    X(linear_gelu_forward) X(linear_gelu_backward)                            \
    X(layernorm_forward) X(layernorm_backward)                                \
    X(modulate_forward) X(modulate_backward)                                  \
    X(ln_modulate_forward) X(ln_modulate_backward)                            \
    X(gated_add_forward) X(gated_add_backward)                                \
    X(gelu_forward) X(gelu_backward) X(silu_forward) X(silu_backward)         \
    X(attention_forward) X(attention_backward)                                \
    X(add) X(accumulate) X(scale) X(axpby) X(sum_squares)                     \
    X(mean_tokens_forward) X(mean_tokens_backward) X(resample_tokens)         \
    X(cosine_forward) X(cosine_backward)                                      \
    X(patchify) X(unpatchify_forward) X(unpatchify_backward)                  \
    X(add_rows) X(timestep_embedding)                                         \
    X(embedding_forward) X(embedding_backward)                                \
    X(interpolate) X(mse_forward_backward) X(adamw_update)                    \
    X(conv2d_forward) X(conv2d_backward) X(relu_forward) X(relu_backward)     \
    X(avgpool_global_forward) X(avgpool_global_backward)                      \
    X(cross_entropy_forward_backward) X(normal_fill)

#define REED_COUNT_SLOT(slot) +1
/* A slot added to ops.h but not to the list above fails here. */
static_assert(sizeof(reed_ops) - offsetof(reed_ops, mem_alloc) ==
                  (5 REED_OP_SLOTS(REED_COUNT_SLOT)) * sizeof(void (*)(void)),
              "REED_OP_SLOTS must list every op slot of ops.h");

/* --- lazy zeroing (cuda_zero.cu) ------------------------------------------------ */

/* The zero op defers its memset: the buffer is "pending". The backward ops
 * that add into a gradient buffer ask cuda_zero_take first: when their
 * output is exactly the pending buffer they write it (beta = 0, or "="
 * instead of "+=") and the memset never happens. Every other op, and any
 * op whose output is not the pending buffer, flushes the memset first, so
 * no op ever sees the buffer unzeroed. REED_CUDA_LAZY_ZERO=0: plain memsets. */
void cuda_zero_lazy(void *p, size_t bytes);
void cuda_zero_flush(void);
/* 1 when [p, p + bytes) is the pending buffer (which is then no longer
 * pending: the caller writes all of it); else flushes and returns 0. */
int cuda_zero_take(const void *p, size_t bytes);
/* The copy op, lazy the same way: cuda_copy_take returns the source when
 * [p, p + bytes) is the pending copy's destination (the caller then writes
 * all of it from the source), else flushes and returns NULL. */
void cuda_copy_lazy(void *dst, const void *src, size_t bytes);
const void *cuda_copy_take(const void *p, size_t bytes);
/* 1 for the ops that take the pending write themselves (zero, copy,
 * linear_backward, gelu_backward, silu_backward, gated_add_backward,
 * attention_backward; gated_add_forward a copy); every other op flushes
 * first (cuda_ops_wrap). */
int cuda_zero_consumer(const char *slot);
/* Reads REED_CUDA_LAZY_ZERO. */
void cuda_zero_init(void);

/* --- ops (see ops.h for each contract) ----------------------------------------- */

/* cuda_kernels.cu: transformer ops, elementwise helpers, optimiser */
void cuda_linear_bias_seed(float *out, const float *bias, int N, int OC);
void cuda_colsum_add(float *dbias, const float *dout, int N, int OC);
void cuda_colsum_add_bf16(float *dbias, const __nv_bfloat16 *dout, int N, int OC);
void cuda_layernorm_forward(float *out, float *mean, float *rstd,
                            const float *inp, int N, int C, float eps);
void cuda_layernorm_backward(float *dinp, const float *dout, const float *inp,
                             const float *mean, const float *rstd, int N, int C);
void cuda_modulate_forward(float *out, const float *x, const float *shift,
                           const float *scale, int ldm, int B, int T, int C);
void cuda_modulate_backward(float *dx, float *dshift, float *dscale,
                            const float *dout, const float *x,
                            const float *scale, int ldm, int B, int T, int C);
void cuda_ln_modulate_forward(float *out, float *mean, float *rstd,
                              const float *inp, const float *shift,
                              const float *scale, int ldm, int B, int T, int C,
                              float eps);
void cuda_ln_modulate_backward(float *dinp, float *dshift, float *dscale,
                               const float *dout, const float *inp,
                               const float *mean, const float *rstd,
                               const float *scale, int ldm, int B, int T,
                               int C);
void cuda_gated_add_forward(float *x, const float *y, const float *gate,
                            int ldm, int B, int T, int C);
void cuda_gated_add_backward(float *dy, float *dgate, const float *dx,
                             const float *y, const float *gate, int ldm,
                             int B, int T, int C);
void cuda_gelu_forward(float *out, const float *inp, size_t n);
void cuda_gelu_backward(float *dinp, const float *dout, const float *inp,
                        size_t n);
/* dinp = gelu'(inp)·dout, written (dinp may be dout itself). */
void cuda_gelu_backward_write(float *dinp, const float *dout, const float *inp, size_t n);
void cuda_silu_forward(float *out, const float *inp, size_t n);
void cuda_silu_backward(float *dinp, const float *dout, const float *inp,
                        size_t n);
void cuda_softmax_rows(float *S, size_t rows, int T);
void cuda_softmax_rows_backward(float *D, const float *P, size_t rows, int T);
void cuda_softmax_rows_bf16(__nv_bfloat16 *P, const float *S, size_t rows, int T);
void cuda_softmax_rows_backward_bf16(__nv_bfloat16 *dS, const float *dP,
                                     const __nv_bfloat16 *P, size_t rows, int T);
void cuda_add(float *out, const float *a, const float *b, size_t n);
void cuda_accumulate(float *acc, const float *x, size_t n);
void cuda_scale(float *x, float s, size_t n);
void cuda_axpby(float *out, float a, const float *x, float b, const float *y,
                size_t n);
double cuda_sum_squares(const float *x, size_t n);
void cuda_mean_tokens_forward(float *out, const float *x, int B, int T, int C);
void cuda_mean_tokens_backward(float *dx, const float *dout, int B, int T,
                               int C);
void cuda_cosine_forward(float *sim, const float *a, const float *b, int N,
                         int D);
void cuda_cosine_backward(float *da, const float *dsim, const float *a,
                          const float *b, int N, int D);
void cuda_adamw_update(float *param, const float *grad, float *m, float *v,
                       size_t n, float lr, float beta1, float beta2, float eps,
                       float weight_decay, float grad_scale, int t, float *ema,
                       float ema_decay);

/* cuda_model_ops.cu: the model's plumbing */
void cuda_patchify(float *patches, const float *x, int B, int Cin, int S,
                   int p);
void cuda_unpatchify_forward(float *x, const float *tokens, int B, int Cout,
                             int S, int p);
void cuda_unpatchify_backward(float *dtokens, const float *dx, int B, int Cout,
                              int S, int p);
void cuda_add_rows(float *x, const float *rows, int B, int T, int C);
void cuda_timestep_embedding(float *out, const float *t, int B, int dim);
void cuda_embedding_forward(float *out, const float *table, const int *idx,
                            int B, int C);
void cuda_embedding_backward(float *dtable, const float *dout, const int *idx,
                             int B, int C);
void cuda_interpolate(float *x_t, float *v, const float *x, const float *noise,
                      const float *a, const float *s, const float *da,
                      const float *ds, int B, size_t n);
double cuda_mse_forward_backward(float *dpred, const float *pred,
                                 const float *target, size_t n, float scale);
void cuda_normal_fill(float *out, size_t n, uint64_t seed, uint64_t step,
                      uint32_t stream);

/* cuda_conv.cu: the convolutional networks' ops */
void cuda_conv2d_forward(float *out, const float *inp, const float *w,
                         const float *bias, int B, int C, int H, int W, int OC,
                         int K, int stride, int pad, float *scratch);
void cuda_conv2d_backward(float *dinp, float *dw, float *dbias,
                          const float *dout, const float *inp, const float *w,
                          int B, int C, int H, int W, int OC, int K, int stride,
                          int pad, float *scratch);
void cuda_relu_forward(float *out, const float *inp, size_t n);
void cuda_relu_backward(float *dinp, const float *dout, const float *x,
                        size_t n);
void cuda_avgpool_global_forward(float *out, const float *inp, int B, int C,
                                 int H, int W);
void cuda_avgpool_global_backward(float *dinp, const float *dout, int B, int C,
                                  int H, int W);
double cuda_cross_entropy_forward_backward(float *dlogits, int *correct,
                                           const float *logits,
                                           const int *labels, int B, int K,
                                           float scale);

/* cuda_attention.cu: attention, the fused kernels (bf16 mode) or the GEMM
 * path below, chosen per shape (reed_cuda_set_attention) */
void cuda_attention_forward(float *out, float *att, const float *qkv, int B,
                            int T, int C, int NH);
void cuda_attention_backward(float *dqkv, float *scratch, const float *dout,
                             const float *qkv, const float *att, int B, int T,
                             int C, int NH);
/* cuda_flash.cu: flash attention on mma.sync (bf16 operands), head sizes 16,
 * 32, 64, 96 and 128 (covers). The forward writes out, and lse (B·NH·T floats:
 * each row's log2 Σ exp2 of its scores in log2 units) unless NULL, and P
 * (B·NH·T·T bf16: the probabilities, as the GEMM path keeps them) unless
 * NULL. The backward adds the gradient into dqkv, or writes it when add is
 * 0, from the forward's lse; D (B·NH·T floats) is scratch. Each direction
 * has kernel variants that compute the same values (variants: how many a
 * head size has, 3 or 1; 0 where not covered): the forward's 1 (32 query
 * rows a warp, key tiles by cp.async) and 2 (16 rows a warp, cp.async),
 * without P only; the backward's 1 (the key kernel 32 queries a pass) and
 * 2 (the same by cp.async, with the query kernel by cp.async). */
int cuda_flash_covers(int hs);
int cuda_flash_variants(int hs);
void cuda_flash_forward(float *out, float *lse, __nv_bfloat16 *P, const float *qkv, int B,
                        int T, int C, int NH, int variant);
void cuda_flash_backward(float *dqkv, float *D, const float *dout, const float *qkv,
                         const float *lse, int B, int T, int C, int NH, int add, int variant);
/* cuda_ops.cu: the GEMM path, att holding the probabilities */
void cuda_attention_forward_gemm(float *out, float *att, const float *qkv,
                                 int B, int T, int C, int NH);
void cuda_attention_backward_gemm(float *dqkv, float *scratch,
                                  const float *dout, const float *qkv,
                                  const float *att, int B, int T, int C,
                                  int NH, float beta);

#endif
