/* CUDA backend: start-up on device 0, memory, the GEMM wrappers, the
 * GEMM-built ops (linear, attention) and the op table.
 *
 * Gradient contract (see ops.h): forward ops overwrite their outputs;
 * backward ops ADD (+=) into every gradient output (beta = 1 in the GEMMs),
 * and any gradient output may be NULL.
 *
 * Every array is device memory from mem_alloc; every op is issued on the
 * one stream g_cuda.stream and returns without waiting, except the ops with
 * a host result, which wait for it.
 *
 * GEMMs: row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, so
 * gemm_rm calls cuBLAS with the operands swapped and keeps the CPU
 * backend's cblas_sgemm arguments otherwise: each GEMM below reads like its
 * CPU twin. Precision: CUBLAS_COMPUTE_32F_PEDANTIC (plain fp32 FMA, never
 * TF32 or emulation) by default; after reed_cuda_set_precision(1), bf16
 * tensor cores with fp32 accumulation and fp32 outputs, on bf16 copies of
 * the operands (see "bf16 operands" below).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "cuda_internal.h"
#include "reed_cuda.h"

cuda_state g_cuda;

/* ------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------- */

static void (*fatal_handler)(const char *msg);

extern "C" void reed_cuda_set_fatal_handler(void (*handler)(const char *msg))
{
    fatal_handler = handler;
}

void cuda_fatal(const char *call, const char *detail, const char *file,
                int line)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "CUDA backend: %s:%d: %s failed: %s", file, line,
             call, detail ? detail : "(no detail)");
    if (fatal_handler)
        fatal_handler(msg);
    else
        fprintf(stderr, "%s\n", msg);
    abort();
}

void cuda_launch_check(const char *what, const char *file, int line)
{
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && g_cuda.sync_debug)
        e = cudaStreamSynchronize(g_cuda.stream);
    if (e != cudaSuccess)
        cuda_fatal(what, cudaGetErrorString(e), file, line);
}

/* ------------------------------------------------------------------------
 * Transfers (allocation: cuda_memory.cu)
 * ---------------------------------------------------------------------- */

/* Host → device. Waits, so the caller may reuse its buffer at once. */
static void cuda_upload(void *dst, const void *host_src, size_t bytes)
{
    if (!bytes)
        return;
    cuda_view_overwrite(dst, bytes); // every view there is stale now
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice,
                               g_cuda.stream));
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
}

/* Device → host, after every op issued before it. */
static void cuda_download(void *host_dst, const void *src, size_t bytes)
{
    if (!bytes)
        return;
    cuda_view_need_range(src, bytes); // sole views there write back first
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost,
                               g_cuda.stream));
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
}

static void cuda_synchronize(void)
{
    cuda_zero_flush();
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
}

double cuda_read_double(const double *dev)
{
    double v = 0.0;
    cuda_download(&v, dev, sizeof v);
    return v;
}

/* ------------------------------------------------------------------------
 * GEMM
 * ---------------------------------------------------------------------- */

static cublasComputeType_t gemm_compute_type(void)
{
    return g_cuda.bf16 ? g_cuda.compute_bf16 : g_cuda.compute_fp32;
}

static cublasOperation_t op_of(int t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

/* ------------------------------------------------------------------------
 * bf16 operands. In the bf16 mode a GEMM reads bf16 copies of its fp32
 * operands (rounded to nearest even, as FAST_16BF rounds them), made on the
 * stream just before it into a scratch slot; it accumulates in fp32 and
 * writes fp32. cuBLAS's FAST_16BF on the fp32 operands themselves ran 2.8
 * times slower on an H200 at SiT-B/2's linear shapes, 1.5 times with the
 * copies counted (bench_gemm_cuda). REED_CUDA_BF16_OPERANDS=0 goes back to
 * FAST_16BF. gemm_rm copies both operands per call; the linear backward
 * and attention's GEMM path copy each tensor once for all their GEMMs. The
 * linear layers and attention read an activation's bf16 view instead where
 * it has one (cuda_view.cu): written by the op that produced it, or kept
 * from the forward for the backward.
 * ---------------------------------------------------------------------- */

int cuda_bf16_gemms(void) { return g_cuda.bf16 && g_cuda.bf16_operands; }

/* Four elements per thread (one 16-byte load, one 8-byte store) where x is
 * 16-byte aligned; the last n % 4, or all n when x is not, one at a time. */
__global__ void to_bf16_kernel(__nv_bfloat16 *y, const float *x, size_t n,
                               size_t n4)
{
    GRID_LOOP(i, n4)
    {
        store_bf16x4(y, i, ((const float4 *)x)[i]);
    }
    GRID_LOOP(i, n - 4 * n4)
        y[4 * n4 + i] = __float2bfloat16(x[4 * n4 + i]);
}

__nv_bfloat16 *cuda_bf16_slot(int slot, size_t n)
{
    static void *buf[BF16_SLOTS];
    static size_t cap[BF16_SLOTS];
    return (__nv_bfloat16 *)cuda_scratch(&buf[slot], &cap[slot], n * sizeof(__nv_bfloat16));
}

void cuda_bf16_convert(__nv_bfloat16 *y, const float *x, size_t n)
{
    if (!n)
        return;
    const size_t n4 = (uintptr_t)x % 16 == 0 && (uintptr_t)y % 8 == 0 ? n / 4 : 0;
    const size_t work = n4 > n - 4 * n4 ? n4 : n - 4 * n4;
    to_bf16_kernel<<<grid_for(work, THREADS), THREADS, 0, g_cuda.stream>>>(y, x, n, n4);
    LAUNCH_CHECK("to_bf16_kernel");
}

const __nv_bfloat16 *cuda_bf16_copy(int slot, const float *x, size_t n)
{
    __nv_bfloat16 *y = cuda_bf16_slot(slot, n);
    cuda_bf16_convert(y, x, n);
    return y;
}

/* Elements spanned by a row-major matrix of rows × cols, leading dim ld. */
static size_t span(int rows, int cols, int ld)
{
    return rows > 0 && cols > 0 ? (size_t)(rows - 1) * ld + cols : 0;
}

/* gemm_rm on bf16 operands laid out as A and B, C in fp32 (Ct
 * CUDA_R_32F) or bf16 (CUDA_R_16BF). */
static void gemm_rm_16x(int ta, int tb, int M, int N, int K, float alpha,
                        const __nv_bfloat16 *A, int lda, const __nv_bfloat16 *B, int ldb,
                        float beta, void *C, cudaDataType Ct, int ldc)
{
    CUBLAS_CHECK(cublasGemmEx(g_cuda.cublas, op_of(tb), op_of(ta), N, M, K,
                              &alpha, B, CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda,
                              &beta, C, Ct, ldc, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

static void gemm_rm_16(int ta, int tb, int M, int N, int K, float alpha,
                       const __nv_bfloat16 *A, int lda, const __nv_bfloat16 *B,
                       int ldb, float beta, float *C, int ldc)
{
    gemm_rm_16x(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, CUDA_R_32F, ldc);
}

void gemm_rm(int ta, int tb, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (cuda_bf16_gemms()) {
        const __nv_bfloat16 *A16 =
            cuda_bf16_copy(BF16_A, A, ta ? span(K, M, lda) : span(M, K, lda));
        const __nv_bfloat16 *B16 =
            cuda_bf16_copy(BF16_B, B, tb ? span(N, K, ldb) : span(K, N, ldb));
        gemm_rm_16(ta, tb, M, N, K, alpha, A16, lda, B16, ldb, beta, C, ldc);
        return;
    }
    // Column-major Cᵀ(N,M) = op(B)ᵀ(N,K) · op(A)ᵀ(K,M).
    CUBLAS_CHECK(cublasGemmEx(g_cuda.cublas, op_of(tb), op_of(ta), N, M, K,
                              &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda,
                              &beta, C, CUDA_R_32F, ldc, gemm_compute_type(),
                              CUBLAS_GEMM_DEFAULT));
}

void gemm_rm_batched(int ta, int tb, int M, int N, int K, float alpha,
                     const float *A, int lda, long long sA, const float *B,
                     int ldb, long long sB, float beta, float *C, int ldc,
                     long long sC, int batch)
{
    if (M <= 0 || N <= 0 || batch <= 0)
        return;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        g_cuda.cublas, op_of(tb), op_of(ta), N, M, K, &alpha, B, CUDA_R_32F,
        ldb, sB, A, CUDA_R_32F, lda, sA, &beta, C, CUDA_R_32F, ldc, sC, batch,
        gemm_compute_type(), CUBLAS_GEMM_DEFAULT));
}

/* gemm_rm_batched on bf16 operands, C in fp32 (Ct CUDA_R_32F) or bf16
 * (CUDA_R_16BF). */
static void gemm_rm_batched_16x(int ta, int tb, int M, int N, int K, float alpha,
                                const __nv_bfloat16 *A, int lda, long long sA,
                                const __nv_bfloat16 *B, int ldb, long long sB, float beta,
                                void *C, cudaDataType Ct, int ldc, long long sC, int batch)
{
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        g_cuda.cublas, op_of(tb), op_of(ta), N, M, K, &alpha, B, CUDA_R_16BF,
        ldb, sB, A, CUDA_R_16BF, lda, sA, &beta, C, Ct, ldc, sC, batch,
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static void gemm_rm_batched_16(int ta, int tb, int M, int N, int K, float alpha,
                               const __nv_bfloat16 *A, int lda, long long sA,
                               const __nv_bfloat16 *B, int ldb, long long sB,
                               float beta, float *C, int ldc, long long sC,
                               int batch)
{
    gemm_rm_batched_16x(ta, tb, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, CUDA_R_32F, ldc,
                        sC, batch);
}

/* ------------------------------------------------------------------------
 * Linear: out(N,OC) = inp(N,C) · w(OC,C)ᵀ + bias(OC)
 * ---------------------------------------------------------------------- */

/* With bf16 operands, where out may be a sole bf16 view after probation
 * (cuda_view.cu; on SiT the qkv projection, which only the attention
 * reads, as bf16): the GEMM writes that view alone, the bias in its
 * epilogue. 0, or -1 with out's views dropped (the caller writes out in
 * fp32). */
static int linear_forward_sole(float *out, const float *inp, const float *w,
                               const float *bias, int N, int C, int OC)
{
    const size_t n = (size_t)N * OC;
    __nv_bfloat16 *o16 = bias && cuda_bf16_gemms() && OC % 8 == 0 ? cuda_view_sole_proven(out, n)
                                                                    : NULL;
    if (o16 && cuda_lt_linear16(o16, cuda_view_or_copy(BF16_A, inp, (size_t)N * C, 1),
                                cuda_bf16_copy(BF16_B, w, (size_t)OC * C), bias, N, C, OC) == 0) {
        cuda_lazy_unback(out, n * sizeof(float)); // its fp32 memory is not needed now
        return 0;
    }
    // out is written in fp32 now: its views (one made above, or an earlier
    // call's sole view, which the op's exemption left in place) go first.
    cuda_view_overwrite(out, n * sizeof(float));
    return -1;
}

/* out in fp32 (the linear op's path without sole views, and the
 * linear_gelu fallback's first layer, whose output the GELU kernel reads
 * in fp32 outside the op table's bookkeeping). */
static void linear_forward_fp32(float *out, const float *inp, const float *w,
                                const float *bias, int N, int C, int OC)
{
    // The bias in cuBLASLt's epilogue where it can; else seed out with the
    // bias and add the product onto it (beta = 1), or let beta = 0 ignore
    // out's old contents.
    if (bias && cuda_lt_linear_bias(out, inp, w, bias, N, C, OC) == 0)
        return;
    float beta = 0.0f;
    if (bias) {
        cuda_linear_bias_seed(out, bias, N, OC);
        beta = 1.0f;
    }
    if (cuda_bf16_gemms() && N > 0 && OC > 0) {
        // inp's view, or a copy kept as its view for the backward
        gemm_rm_16(0, 1, N, OC, C, 1.0f, cuda_view_or_copy(BF16_A, inp, (size_t)N * C, 1), C,
                   cuda_bf16_copy(BF16_B, w, (size_t)OC * C), C, beta, out, OC);
        return;
    }
    gemm_rm(0, 1, N, OC, C, 1.0f, inp, C, w, C, beta, out, OC);
}

static void cuda_linear_forward(float *out, const float *inp, const float *w,
                                const float *bias, int N, int C, int OC)
{
    if (linear_forward_sole(out, inp, w, bias, N, C, OC) != 0)
        linear_forward_fp32(out, inp, w, bias, N, C, OC);
}

/* bf16 operands: one bf16 copy of dout (or its view) for both GEMMs and the
 * bias gradient, which sums those bf16 values as PyTorch's autocast does:
 * in the dw GEMM's epilogue where cuBLASLt can, else in a pass of ours.
 * inp's view is usually the one its forward kept. (Making dout's copy in
 * the bias gradient's pass over fp32 dout was slower on an H200: 997
 * against 856 µs per call at SiT-B/2.) */
static void linear_backward_16(float *dinp, __nv_bfloat16 *dinp16, float *dw, float *dbias,
                               const float *dout, const float *inp, const float *w, int N,
                               int C, int OC, float bi)
{
    const __nv_bfloat16 *d16 = cuda_view_or_copy(BF16_A, dout, (size_t)N * OC, 0);
    const __nv_bfloat16 *w16 = dinp ? cuda_bf16_copy(BF16_B, w, (size_t)OC * C) : NULL;
    if (dinp16) // dinp's sole view alone (bi is 0)
        gemm_rm_16x(0, 0, N, C, OC, 1.0f, d16, OC, w16, C, 0.0f, dinp16, CUDA_R_16BF, C);
    else if (dinp)
        gemm_rm_16(0, 0, N, C, OC, 1.0f, d16, OC, w16, C, bi, dinp, C);
    if (dw) {
        const __nv_bfloat16 *i16 = cuda_view_or_copy(BF16_B, inp, (size_t)N * C, 0);
        if (dbias && cuda_lt_dw_bgrad(dw, dbias, d16, i16, N, C, OC) == 0)
            return;
        gemm_rm_16(1, 0, OC, C, N, 1.0f, d16, OC, i16, C, 1.0f, dw, C);
    }
    if (dbias)
        cuda_colsum_add_bf16(dbias, d16, N, OC);
}

/* The linear backward with dinp = bi·dinp + dout·w (bi 0: written; with
 * dinp16, bf16 operands and bi 0, only that sole view of dinp is). */
static void linear_backward_beta(float *dinp, __nv_bfloat16 *dinp16, float *dw, float *dbias,
                                 const float *dout, const float *inp, const float *w, int N,
                                 int C, int OC, float bi)
{
    if (cuda_bf16_gemms() && (dinp || dw || dbias)) {
        linear_backward_16(dinp, dinp16, dw, dbias, dout, inp, w, N, C, OC, bi);
        return;
    }
    // dinp(N,C) += dout(N,OC) · w(OC,C)
    if (dinp)
        gemm_rm(0, 0, N, C, OC, 1.0f, dout, OC, w, C, bi, dinp, C);
    // dw(OC,C) += dout(N,OC)ᵀ · inp(N,C)
    if (dw)
        gemm_rm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    // dbias(OC) += Σ_n dout(n, :)
    if (dbias)
        cuda_colsum_add(dbias, dout, N, OC);
}

static void cuda_linear_backward(float *dinp, float *dw, float *dbias,
                                 const float *dout, const float *inp,
                                 const float *w, int N, int C, int OC)
{
    // dinp freshly zeroed (cuda_zero.cu): written with beta = 0 instead,
    // as its sole bf16 view alone where it passed probation (cuda_view.cu:
    // a gradient only the attention backward reads, say; on SiT that one
    // shares its buffer with gradients the LayerNorm backward reads in
    // fp32, and fails); else added to, its sole view (if any) written back
    // first.
    const size_t n = (size_t)N * C;
    const float bi = cuda_zero_take(dinp, n * sizeof(float)) ? 0.0f : 1.0f;
    __nv_bfloat16 *dinp16 = NULL;
    if (dinp && bi == 0.0f && cuda_bf16_gemms())
        dinp16 = cuda_view_sole_proven(dinp, n);
    else if (dinp)
        cuda_view_need_range(dinp, n * sizeof(float));
    // Memory for dinp only where it is written in fp32 (cuda_lazy.cu).
    if (dinp16)
        cuda_lazy_unback(dinp, n * sizeof(float));
    else if (dinp)
        cuda_lazy_back(dinp, n * sizeof(float));
    linear_backward_beta(dinp, dinp16, dw, dbias, dout, inp, w, N, C, OC, bi);
}

/* ------------------------------------------------------------------------
 * The MLP's linear layers with the GELU between them (ops.h's linear_gelu
 * ops). With bf16 operands, where both outputs may be sole bf16 views
 * (cuda_view.cu), the GELU runs in cuBLASLt's epilogues (cuda_lt.cu): the
 * forward GEMM writes the views of pre and out, the backward's input-
 * gradient GEMM the view of dpre from pre's; no fp32 buffer of the three
 * is written. Elsewhere the parts run: the linear ops and the GELU kernels.
 * ---------------------------------------------------------------------- */

static int linear_gelu_fused(float *out, float *pre, const float *inp, const float *w,
                             const float *bias, int N, int C, int OC)
{
    const size_t n = (size_t)N * OC;
    if (!bias || !cuda_lt_gelu_on())
        return -1;
    __nv_bfloat16 *o16 = cuda_view_sole_only(out, n);
    __nv_bfloat16 *p16 = o16 ? cuda_view_sole_only(pre, n) : NULL;
    return p16 && cuda_lt_linear_gelu(o16, p16, cuda_view_or_copy(BF16_A, inp, (size_t)N * C, 1),
                                      cuda_bf16_copy(BF16_B, w, (size_t)OC * C), bias, N, C,
                                      OC) == 0 ? 0 : -1;
}

static void cuda_linear_gelu_forward(float *out, float *pre, const float *inp, const float *w,
                                     const float *bias, int N, int C, int OC)
{
    const size_t n = (size_t)N * OC;
    if (linear_gelu_fused(out, pre, inp, w, bias, N, C, OC) == 0)
        return;
    // The parts write pre and out anew: their sole views (unwritten ones
    // made above, or an earlier step's) go first.
    cuda_view_overwrite(out, n * sizeof(float));
    cuda_view_overwrite(pre, n * sizeof(float));
    linear_forward_fp32(pre, inp, w, bias, N, C, OC);
    cuda_gelu_forward(out, pre, n);
}

static int linear_dgelu_fused(float *dpre, const float *dout, const float *pre, const float *w,
                              int N, int C, int OC)
{
    const size_t n = (size_t)N * C;
    if (!cuda_lt_gelu_on())
        return -1;
    const __nv_bfloat16 *p16 = cuda_view_get(pre, n); // the forward's
    __nv_bfloat16 *d16 = p16 ? cuda_view_sole_only(dpre, n) : NULL;
    return d16 && cuda_lt_dgelu(d16, cuda_view_or_copy(BF16_A, dout, (size_t)N * OC, 0),
                                cuda_bf16_copy(BF16_B, w, (size_t)OC * C), p16, N, C, OC) == 0
               ? 0 : -1;
}

static void cuda_linear_gelu_backward(float *dpre, float *dw, float *dbias, const float *dout,
                                      const float *act, const float *pre, const float *w, int N,
                                      int C, int OC)
{
    if (dpre && linear_dgelu_fused(dpre, dout, pre, w, N, C, OC) != 0) {
        // dpre = dout·w, then scaled by gelu'(pre) in place; pre read in
        // fp32 (its sole view, if the forward left one, written back), and
        // dpre's sole views (made above, or an earlier step's) gone first.
        const size_t n = (size_t)N * C;
        cuda_view_need_range(pre, n * sizeof(float));
        cuda_view_overwrite(dpre, n * sizeof(float));
        linear_backward_beta(dpre, NULL, NULL, NULL, dout, act, w, N, C, OC, 0.0f);
        cuda_gelu_backward_write(dpre, dpre, pre, n);
    }
    linear_backward_beta(NULL, NULL, dw, dbias, dout, act, w, N, C, OC, 1.0f);
}

/* ------------------------------------------------------------------------
 * Attention, the GEMM path (fp32 mode, and bf16 mode when
 * cuda_attention.cu does not pick its fused kernels). For batch b and head
 * h, with C3 = 3C and hs = C/NH:
 *   q = qkv + b·T·C3 + h·hs    (T, hs), leading dim C3
 *   k = q + C, v = q + 2C      (T, hs), leading dim C3
 *   o = out + b·T·C + h·hs     (T, hs), leading dim C
 *   P = att + (b·NH + h)·T·T   (T, T)
 * For a fixed head every one of these is a constant stride away from batch
 * b to b+1 (T·C3, T·C, NH·T·T), so each GEMM runs as one strided batch over
 * b per head: NH cuBLAS calls per GEMM.
 *
 * On bf16 operands (cuda_bf16_gemms) qkv and dout are copied to bf16 once
 * per call (or read through their views), the scores go to a scratch
 * buffer, and att keeps P as bf16 (the first half of its bytes): the
 * softmax writes it, the backward reads it, and its softmax step writes dS
 * as bf16 for the last two GEMMs. A freshly zeroed dqkv is written as its
 * sole bf16 view where it may be one (the GEMMs' output in bf16).
 * ---------------------------------------------------------------------- */

/* The GEMM path's sizes: 3C, the head size, the score scale 1/sqrt(hs),
 * the batch strides of qkv, out and att, and the rows of scores B·NH·T. */
typedef struct attn_shape {
    int C3, hs;
    float sc;
    long long sq, so, sp;
    size_t rows;
} attn_shape;

static attn_shape attn_shape_of(int B, int T, int C, int NH)
{
    attn_shape a;
    a.C3 = 3 * C, a.hs = C / NH;
    a.sc = 1.0f / sqrtf((float)a.hs);
    a.sq = (long long)T * a.C3, a.so = (long long)T * C;
    a.sp = (long long)NH * T * T;
    a.rows = (size_t)B * NH * T;
    return a;
}

/* S(T,T) fp32 per (b, h): the forward's scores on bf16 operands. */
static float *attention_scores_scratch(size_t n)
{
    static void *buf;
    static size_t cap;
    return (float *)cuda_scratch(&buf, &cap, n * sizeof(float));
}

static void attention_forward_gemm16(float *out, float *att, const float *qkv,
                                     int B, int T, int C, int NH)
{
    const attn_shape a = attn_shape_of(B, T, C, NH);
    // kept as qkv's view for the backward
    const __nv_bfloat16 *qkv16 = cuda_view_or_copy(BF16_A, qkv, (size_t)B * T * a.C3, 1);
    float *S = attention_scores_scratch(a.rows * T);
    __nv_bfloat16 *P = (__nv_bfloat16 *)att;
    for (int h = 0; h < NH; h++) {
        const __nv_bfloat16 *q = qkv16 + (size_t)h * a.hs, *k = q + C;
        gemm_rm_batched_16(0, 1, T, T, a.hs, a.sc, q, a.C3, a.sq, k, a.C3, a.sq, 0.0f,
                           S + (size_t)h * T * T, T, a.sp, B);
    }
    cuda_softmax_rows_bf16(P, S, a.rows, T);
    for (int h = 0; h < NH; h++) {
        const __nv_bfloat16 *v = qkv16 + (size_t)h * a.hs + 2 * C;
        gemm_rm_batched_16(0, 0, T, a.hs, T, 1.0f, P + (size_t)h * T * T, T, a.sp,
                           v, a.C3, a.sq, 0.0f, out + (size_t)h * a.hs, C, a.so, B);
    }
}

/* Where the GEMM backward writes dqkv: a freshly zeroed dqkv (beta 0) as
 * its sole bf16 view where it may be one (the qkv linear's backward reads
 * only that), else dqkv itself. at(i): element i. */
typedef struct dqkv_out {
    void *p;
    cudaDataType type;
} dqkv_out;

static dqkv_out dqkv_target(float *dqkv, size_t n, float beta)
{
    __nv_bfloat16 *d16 = beta == 0.0f ? cuda_view_sole_only(dqkv, n) : NULL;
    if (!d16) // written in fp32 (cuda_lazy.cu)
        cuda_lazy_back(dqkv, n * sizeof(float));
    return d16 ? dqkv_out{d16, CUDA_R_16BF} : dqkv_out{dqkv, CUDA_R_32F};
}

static void *dqkv_at(const dqkv_out &d, size_t i)
{
    return (char *)d.p + i * (d.type == CUDA_R_16BF ? sizeof(__nv_bfloat16) : sizeof(float));
}

static void attention_backward_gemm16(float *dqkv, float *scratch,
                                      const float *dout, const float *qkv,
                                      const float *att, int B, int T, int C,
                                      int NH, float beta)
{
    const attn_shape a = attn_shape_of(B, T, C, NH);
    const __nv_bfloat16 *qkv16 = cuda_view_or_copy(BF16_A, qkv, (size_t)B * T * a.C3, 0);
    const __nv_bfloat16 *g16 = cuda_view_or_copy(BF16_B, dout, (size_t)B * T * C, 0);
    const __nv_bfloat16 *P = (const __nv_bfloat16 *)att;
    const dqkv_out d = dqkv_target(dqkv, (size_t)B * T * a.C3, beta);
    for (int h = 0; h < NH; h++) {
        const __nv_bfloat16 *v = qkv16 + (size_t)h * a.hs + 2 * C;
        const __nv_bfloat16 *g = g16 + (size_t)h * a.hs;
        // dP = dout·vᵀ; dv += Pᵀ·dout
        gemm_rm_batched_16(0, 1, T, T, a.hs, 1.0f, g, C, a.so, v, a.C3, a.sq, 0.0f,
                           scratch + (size_t)h * T * T, T, a.sp, B);
        gemm_rm_batched_16x(1, 0, T, a.hs, T, 1.0f, P + (size_t)h * T * T, T, a.sp, g, C, a.so,
                            beta, dqkv_at(d, (size_t)h * a.hs + 2 * C), d.type, a.C3, a.sq, B);
    }
    // dS = P∘(dP − rowsum(dP∘P)), as bf16 (slot C; slot B's dout is done)
    __nv_bfloat16 *dS = cuda_bf16_slot(BF16_C, a.rows * T);
    cuda_softmax_rows_backward_bf16(dS, scratch, P, a.rows, T);
    for (int h = 0; h < NH; h++) {
        const __nv_bfloat16 *q = qkv16 + (size_t)h * a.hs, *k = q + C;
        const __nv_bfloat16 *D = dS + (size_t)h * T * T;
        const size_t dq = (size_t)h * a.hs, dk = dq + C;
        // dq += dS·k·scale; dk += dSᵀ·q·scale
        gemm_rm_batched_16x(0, 0, T, a.hs, T, a.sc, D, T, a.sp, k, a.C3, a.sq, beta,
                            dqkv_at(d, dq), d.type, a.C3, a.sq, B);
        gemm_rm_batched_16x(1, 0, T, a.hs, T, a.sc, D, T, a.sp, q, a.C3, a.sq, beta,
                            dqkv_at(d, dk), d.type, a.C3, a.sq, B);
    }
}

/* The part of att (or the backward's scratch) this path uses, backed where
 * it is a buffer backed on first use (cuda_lazy.cu; the attention op leaves
 * that to its path): B·NH·T·T values, bf16 (P on bf16 operands) or fp32. */
static void back_scores(const float *x, int B, int T, int NH, size_t value_bytes)
{
    cuda_lazy_back(x, (size_t)B * NH * T * T * value_bytes);
}

void cuda_attention_forward_gemm(float *out, float *att, const float *qkv,
                                 int B, int T, int C, int NH)
{
    back_scores(att, B, T, NH, cuda_bf16_gemms() ? sizeof(__nv_bfloat16) : sizeof(float));
    if (cuda_bf16_gemms()) {
        attention_forward_gemm16(out, att, qkv, B, T, C, NH);
        return;
    }
    const attn_shape a = attn_shape_of(B, T, C, NH);
    for (int h = 0; h < NH; h++) {
        const float *q = qkv + (size_t)h * a.hs, *k = q + C;
        float *P = att + (size_t)h * T * T;
        // S = q·kᵀ / sqrt(hs)
        gemm_rm_batched(0, 1, T, T, a.hs, a.sc, q, a.C3, a.sq, k, a.C3, a.sq, 0.0f, P, T,
                        a.sp, B);
    }
    cuda_softmax_rows(att, a.rows, T);
    for (int h = 0; h < NH; h++) {
        const float *v = qkv + (size_t)h * a.hs + 2 * C;
        const float *P = att + (size_t)h * T * T;
        // o = P·v
        gemm_rm_batched(0, 0, T, a.hs, T, 1.0f, P, T, a.sp, v, a.C3, a.sq, 0.0f,
                        out + (size_t)h * a.hs, C, a.so, B);
    }
}

void cuda_attention_backward_gemm(float *dqkv, float *scratch,
                                  const float *dout, const float *qkv,
                                  const float *att, int B, int T, int C,
                                  int NH, float beta)
{
    if (!dqkv)
        return;
    back_scores(att, B, T, NH, cuda_bf16_gemms() ? sizeof(__nv_bfloat16) : sizeof(float));
    back_scores(scratch, B, T, NH, sizeof(float));
    if (cuda_bf16_gemms()) {
        attention_backward_gemm16(dqkv, scratch, dout, qkv, att, B, T, C, NH, beta);
        return;
    }
    const attn_shape a = attn_shape_of(B, T, C, NH);
    for (int h = 0; h < NH; h++) {
        const float *v = qkv + (size_t)h * a.hs + 2 * C;
        float *dv = dqkv + (size_t)h * a.hs + 2 * C;
        const float *g = dout + (size_t)h * a.hs;      // (T,hs) per batch
        const float *P = att + (size_t)h * T * T;    // (T,T)
        float *D = scratch + (size_t)h * T * T;      // (T,T)
        // dP = dout·vᵀ
        gemm_rm_batched(0, 1, T, T, a.hs, 1.0f, g, C, a.so, v, a.C3, a.sq, 0.0f, D, T,
                        a.sp, B);
        // dv += Pᵀ·dout
        gemm_rm_batched(1, 0, T, a.hs, T, 1.0f, P, T, a.sp, g, C, a.so, beta, dv, a.C3,
                        a.sq, B);
    }
    // dS = P∘(dP − rowsum(dP∘P)), in place in scratch
    cuda_softmax_rows_backward(scratch, att, a.rows, T);
    for (int h = 0; h < NH; h++) {
        const float *q = qkv + (size_t)h * a.hs, *k = q + C;
        float *dq = dqkv + (size_t)h * a.hs, *dk = dq + C;
        const float *D = scratch + (size_t)h * T * T;
        // dq += dS·k·scale; dk += dSᵀ·q·scale
        gemm_rm_batched(0, 0, T, a.hs, T, a.sc, D, T, a.sp, k, a.C3, a.sq, beta, dq, a.C3,
                        a.sq, B);
        gemm_rm_batched(1, 0, T, a.hs, T, a.sc, D, T, a.sp, q, a.C3, a.sq, beta, dk, a.C3,
                        a.sq, B);
    }
}

/* out[b](T,D) = R(T,Ts) · src[b](Ts,D): one strided batch, R shared
 * (stride 0). Always fp32: these are alignment targets, not activations. */
static void cuda_resample_tokens(float *out, const float *R, const float *src, int B,
                                 int T, int Ts, int D)
{
    const int bf16 = g_cuda.bf16;
    g_cuda.bf16 = 0;
    gemm_rm_batched(0, 0, T, D, Ts, 1.0f, R, Ts, 0, src, D, (long long)Ts * D, 0.0f, out,
                    D, (long long)T * D, B);
    g_cuda.bf16 = bf16;
}

/* ------------------------------------------------------------------------
 * The op table
 * ---------------------------------------------------------------------- */

/* Filled by name (not a designated initialiser, which C++ wants in the
 * declaration order of ops.h): a slot added to ops.h stays NULL here until
 * this backend implements it. */
static reed_ops cuda_ops_table;

static void cuda_table_fill(reed_ops *t)
{
    t->name = "cuda";
    t->host_memory = 0;                            // device memory: upload/download
    t->mem_alloc = cuda_mem_alloc;                 // arenas of cudaMalloc slabs, zeroed
    t->mem_reserve = cuda_mem_reserve;             // big ones backed on first use
    t->mem_free = cuda_mem_free;                   // back to the arena, no wait
    t->upload = cuda_upload;                       // waits
    t->download = cuda_download;                   // waits
    t->copy = cuda_copy_lazy;                      // deferred: cuda_zero.cu
    t->zero = cuda_zero_lazy;                      // deferred: cuda_zero.cu
    t->synchronize = cuda_synchronize;
    t->mem_used = cuda_mem_used;                   // bytes requested (not slab bytes) or mapped
    t->linear_forward = cuda_linear_forward;       // bias seed + cuBLAS GEMM
    t->linear_backward = cuda_linear_backward;     // 2 GEMM + column sum
    t->linear_gelu_forward = cuda_linear_gelu_forward;   // GELU_AUX_BIAS epilogue, or the parts
    t->linear_gelu_backward = cuda_linear_gelu_backward; // DGELU epilogue, or the parts
    t->layernorm_forward = cuda_layernorm_forward; // warp per row, row in registers
    t->layernorm_backward = cuda_layernorm_backward;
    t->modulate_forward = cuda_modulate_forward;   // x·(1+scale)+shift
    t->modulate_backward = cuda_modulate_backward; // + per-sample column sums
    t->ln_modulate_forward = cuda_ln_modulate_forward; // warp per row, row in registers
    t->ln_modulate_backward = cuda_ln_modulate_backward; // + column sums, xhat recomputed
    t->gated_add_forward = cuda_gated_add_forward; // x += gate·y
    t->gated_add_backward = cuda_gated_add_backward;
    t->gelu_forward = cuda_gelu_forward;           // tanh approximation
    t->gelu_backward = cuda_gelu_backward;
    t->silu_forward = cuda_silu_forward;           // x·σ(x), in place ok
    t->silu_backward = cuda_silu_backward;
    t->attention_forward = cuda_attention_forward; // bf16: fused wmma kernels or GEMMs (timed)
    t->attention_backward = cuda_attention_backward;
    t->add = cuda_add;                             // out = a + b
    t->accumulate = cuda_accumulate;               // acc += x
    t->scale = cuda_scale;                         // x *= s
    t->axpby = cuda_axpby;                         // out = a·x + b·y
    t->sum_squares = cuda_sum_squares;             // two-pass, double, waits
    t->mean_tokens_forward = cuda_mean_tokens_forward; // (B,T,C) → (B,C)
    t->mean_tokens_backward = cuda_mean_tokens_backward;
    t->resample_tokens = cuda_resample_tokens;     // strided-batch GEMM, fp32
    t->cosine_forward = cuda_cosine_forward;       // warp per row, double dots
    t->cosine_backward = cuda_cosine_backward;
    t->adamw_update = cuda_adamw_update;           // PyTorch AdamW (+ EMA), elementwise
    /* model plumbing: cuda_model_ops.cu */
    t->patchify = cuda_patchify;
    t->unpatchify_forward = cuda_unpatchify_forward;
    t->unpatchify_backward = cuda_unpatchify_backward;
    t->add_rows = cuda_add_rows;
    t->timestep_embedding = cuda_timestep_embedding; // host frequency table
    t->embedding_forward = cuda_embedding_forward;
    t->embedding_backward = cuda_embedding_backward; // serial over b per column
    t->interpolate = cuda_interpolate;
    t->mse_forward_backward = cuda_mse_forward_backward; // two-pass, double, waits
    /* convolutional networks: cuda_conv.cu */
    t->conv2d_forward = cuda_conv2d_forward;       // cuDNN, or im2col + GEMM
    t->conv2d_backward = cuda_conv2d_backward;
    t->relu_forward = cuda_relu_forward;
    t->relu_backward = cuda_relu_backward;
    t->avgpool_global_forward = cuda_avgpool_global_forward;
    t->avgpool_global_backward = cuda_avgpool_global_backward;
    t->cross_entropy_forward_backward = cuda_cross_entropy_forward_backward; // one block, waits
    t->normal_fill = cuda_normal_fill;             // Philox on the device (philox.h)
}

/* ------------------------------------------------------------------------
 * Start-up
 * ---------------------------------------------------------------------- */

/* Writes one value on the device and reads it back: proves that this
 * build's kernels (sm_80 / sm_90 code, compute_80 / compute_90 PTX) load on
 * the device. */
__global__ void probe_kernel(double *out) { out[0] = 42.0; }

static int cuda_probe(char *why, size_t cap)
{
    probe_kernel<<<1, 1, 0, g_cuda.stream>>>(g_cuda.red_result);
    cudaError_t e = cudaGetLastError();
    double v = 0.0;
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(&v, g_cuda.red_result, sizeof v,
                            cudaMemcpyDeviceToHost, g_cuda.stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(g_cuda.stream);
    if (e != cudaSuccess || v != 42.0) {
        snprintf(why, cap, "CUDA kernels do not run on device 0: %s",
                 e != cudaSuccess ? cudaGetErrorString(e) : "wrong result");
        return -1;
    }
    return 0;
}

/* `want` if cuBLAS accepts it for fp32 matrices in both GEMM entry points
 * (a 1×1×1 product on the reduction buffer), otherwise `fallback`. */
static cublasComputeType_t probe_compute_type(cublasComputeType_t want,
                                              cublasComputeType_t fallback)
{
    float *buf = (float *)g_cuda.red_partial;
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s = cublasGemmEx(g_cuda.cublas, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1,
                                    &one, buf, CUDA_R_32F, 1, buf, CUDA_R_32F, 1,
                                    &zero, buf + 1, CUDA_R_32F, 1, want,
                                    CUBLAS_GEMM_DEFAULT);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasGemmStridedBatchedEx(g_cuda.cublas, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1,
                                       1, &one, buf, CUDA_R_32F, 1, 1, buf,
                                       CUDA_R_32F, 1, 1, &zero, buf + 2, CUDA_R_32F,
                                       1, 1, 1, want, CUBLAS_GEMM_DEFAULT);
    return s == CUBLAS_STATUS_SUCCESS ? want : fallback;
}

/* Set when cuda_init fails for want of a usable device (reed_cuda_absent). */
static int init_absent;

/* The device, the stream, the library handles and the reduction buffers.
 * Returns 0, or -1 with the reason in why. */
static int cuda_init(char *why, size_t cap)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(why, cap, "no CUDA device: %s",
                 e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        (void)cudaGetLastError();
        init_absent = 1;
        return -1;
    }
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(0)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess) {
        snprintf(why, cap, "CUDA device 0: %s", cudaGetErrorString(e));
        return -1;
    }
    if (prop.major < 8) {
        snprintf(why, cap, "CUDA device 0 (%s) has compute capability %d.%d; "
                 "this build needs 8.0 or newer", prop.name, prop.major, prop.minor);
        init_absent = 1;
        return -1;
    }
    if ((e = cudaStreamCreateWithFlags(&g_cuda.stream, cudaStreamNonBlocking)) ||
        (e = cudaMalloc((void **)&g_cuda.red_partial, RED_MAX_BLOCKS * sizeof(double))) ||
        (e = cudaMalloc((void **)&g_cuda.red_result, 2 * sizeof(double)))) {
        snprintf(why, cap, "CUDA device 0 (%s): %s", prop.name, cudaGetErrorString(e));
        return -1;
    }
    const char *ops16 = getenv("REED_CUDA_BF16_OPERANDS");
    g_cuda.bf16_operands = !(ops16 && ops16[0] == '0');
    if (cudaDeviceGetAttribute(&g_cuda.sm_count, cudaDevAttrMultiProcessorCount, 0) ||
        g_cuda.sm_count < 1)
        g_cuda.sm_count = 1;
    cublasStatus_t bs = cublasCreate(&g_cuda.cublas);
    if (bs == CUBLAS_STATUS_SUCCESS)
        bs = cublasSetStream(g_cuda.cublas, g_cuda.stream);
    if (bs == CUBLAS_STATUS_SUCCESS)
        bs = cublasSetMathMode(g_cuda.cublas, CUBLAS_DEFAULT_MATH);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, cap, "cuBLAS on %s: %s", prop.name, cublasGetStatusString(bs));
        return -1;
    }
    // fp32: pedantic (never TF32 or emulation), else plain fp32 compute
    // (which under CUBLAS_DEFAULT_MATH never uses TF32 either); bf16: bf16
    // tensor cores, else fp32.
    CUDA_CHECK(cudaMemsetAsync(g_cuda.red_partial, 0, 4 * sizeof(float), g_cuda.stream));
    g_cuda.compute_fp32 = probe_compute_type(CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_COMPUTE_32F);
    g_cuda.compute_bf16 = probe_compute_type(CUBLAS_COMPUTE_32F_FAST_16BF, g_cuda.compute_fp32);
#if REED_CUDNN
    // Without a working cuDNN (a sub-library missing at run time, say) the
    // convolutions run as im2col + cuBLAS: not a reason to refuse the GPU.
    cudnnStatus_t ds = cudnnCreate(&g_cuda.cudnn);
    if (ds == CUDNN_STATUS_SUCCESS)
        ds = cudnnSetStream(g_cuda.cudnn, g_cuda.stream);
    g_cuda.cudnn_ok = ds == CUDNN_STATUS_SUCCESS;
    g_cuda.use_cudnn = g_cuda.cudnn_ok;
#endif
    const char *sync = getenv("REED_CUDA_SYNC");
    g_cuda.sync_debug = sync && sync[0] == '1';
    return cuda_probe(why, cap);
}

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_state; /* 0: not tried, 1: ready, -1: failed */
static char init_why[512];

extern "C" const reed_ops *reed_ops_cuda(char *why, size_t cap)
{
    pthread_mutex_lock(&init_lock);
    if (init_state == 0) {
        init_state = cuda_init(init_why, sizeof init_why) == 0 ? 1 : -1;
        if (init_state > 0) {
            cuda_table_fill(&cuda_ops_table);
            cuda_zero_init();
            cuda_ops_wrap(&cuda_ops_table);
            cuda_profile_wrap(&cuda_ops_table); // only with REED_CUDA_PROFILE=1
        }
    }
    const int state = init_state;
    pthread_mutex_unlock(&init_lock);
    if (state < 0) {
        if (why && cap)
            snprintf(why, cap, "%s", init_why);
        return NULL;
    }
    return &cuda_ops_table;
}

/* ------------------------------------------------------------------------
 * Settings (reed_cuda.h)
 * ---------------------------------------------------------------------- */

extern "C" void reed_cuda_set_precision(int bf16) { g_cuda.bf16 = bf16 != 0; }

extern "C" int reed_cuda_precision(void) { return g_cuda.bf16; }

extern "C" int reed_cuda_absent(void) { return init_absent; }

extern "C" int reed_cuda_set_cudnn(int on)
{
#if REED_CUDNN
    g_cuda.use_cudnn = on != 0 && g_cuda.cudnn_ok;
#else
    (void)on;
#endif
    return g_cuda.use_cudnn;
}

extern "C" long reed_cuda_conv_fallbacks(void) { return g_cuda.conv_fallbacks; }
