/* Linear layers through cuBLASLt with the bias work in the GEMM's
 * epilogue:
 * - forward (CUBLASLT_EPILOGUE_BIAS): the bias is added as the output is
 *   written, where the plain cuBLAS path seeds the output with the bias
 *   and reads it back in a beta = 1 GEMM;
 * - backward, bf16 operands (CUBLASLT_EPILOGUE_BGRADB): the weight
 *   gradient's GEMM also sums dout over the tokens for the bias gradient,
 *   where the plain path reads dout (fp32) once more in a column sum.
 *
 * In cuBLASLt's column-major terms, with row-major out(N,OC), w(OC,C),
 * inp(N,C), dout(N,OC), dw(OC,C):
 * - forward: out is D(OC,N), leading dim OC; w is A stored (C,OC), used
 *   transposed; inp is B stored (C,N). D = op(A)·B + bias, the bias running
 *   along D's rows (OC of them), as the epilogue wants;
 * - weight gradient: dw is D(C,OC), leading dim C; inp is A stored (C,N);
 *   dout is B stored (OC,N), used transposed. D += A·op(B) over k = N
 *   tokens, and BGRADB writes bias[j] = Σ_k op(B)(k,j) = Σ_n dout(n,j), one
 *   per column of D (OC of them).
 *
 * A plan (descriptors and the heuristic's algorithm) is made once per kind,
 * shape and precision and kept. The heuristic is asked for algorithms that
 * need no more than 16-byte alignment, so every call whose pointers are
 * 16-byte aligned can use the plan; other calls, shapes without an
 * algorithm, and a failed matmul (remembered per plan) take the cuBLAS
 * path. REED_CUDA_LT=0 turns this file off, REED_CUDA_LT_BGRAD=0 only the
 * backward.
 *
 * Modes: fp32 (pedantic), bf16 on fp32 operands (FAST_16BF), and bf16
 * operands (cuda_bf16_gemms: w and inp copied to bf16 first, fp32 compute
 * and output, the bias fp32). The backward is for bf16 operands only. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>

#include "cuda_internal.h"

#define LT_PLANS 256
#define LT_ALIGN 16
#define LT_WORKSPACE ((size_t)32 << 20)

enum { LT_FP32, LT_FAST_16BF, LT_BF16_OPERANDS };
enum { LT_FORWARD, LT_DW_BGRAD }; /* plan kinds */

typedef struct lt_plan {
    int kind, N, C, OC, mode;
    int ok; /* 1: use the plan; 0: this shape takes the cuBLAS path */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

static struct {
    int state; /* 0: not started, 1: ready, -1: off */
    int bgrad; /* the backward's plans allowed (REED_CUDA_LT_BGRAD) */
    long bgrad_calls;
    void *bias_out; /* (bias_cap bytes) BGRADB's output, added into dbias */
    size_t bias_cap;
    cublasLtHandle_t handle;
    void *workspace;
    lt_plan plans[LT_PLANS];
    int nplans;
} lt;

static int lt_start(void)
{
    const char *env = getenv("REED_CUDA_LT");
    if (env && env[0] == '0')
        return -1;
    env = getenv("REED_CUDA_LT_BGRAD");
    lt.bgrad = !(env && env[0] == '0');
    if (cublasLtCreate(&lt.handle) != CUBLAS_STATUS_SUCCESS)
        return -1;
    if (cudaMalloc(&lt.workspace, LT_WORKSPACE) != cudaSuccess) {
        (void)cudaGetLastError();
        cublasLtDestroy(lt.handle);
        return -1;
    }
    return 1;
}

static int aligned(const void *p) { return (uintptr_t)p % LT_ALIGN == 0; }

/* The descriptors of the plan's GEMM (see the top of the file) and the
 * heuristic's first algorithm; returns 0 when cuBLASLt has none. */
static int lt_plan_make(lt_plan *p)
{
    const int fwd = p->kind == LT_FORWARD;
    const cublasComputeType_t compute = p->mode == LT_BF16_OPERANDS ? CUBLAS_COMPUTE_32F
                                        : p->mode == LT_FAST_16BF   ? g_cuda.compute_bf16
                                                                    : g_cuda.compute_fp32;
    const cudaDataType_t in = p->mode == LT_BF16_OPERANDS ? CUDA_R_16BF : CUDA_R_32F;
    const cublasOperation_t ta = fwd ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = fwd ? CUBLAS_OP_N : CUBLAS_OP_T;
    const cublasLtEpilogue_t epilogue = fwd ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_BGRADB;
    // A, B and D as (rows, cols, leading dim)
    const uint64_t a[3] = {(uint64_t)p->C, (uint64_t)(fwd ? p->OC : p->N), (uint64_t)p->C};
    const uint64_t b[3] = {(uint64_t)(fwd ? p->C : p->OC), (uint64_t)p->N,
                           (uint64_t)(fwd ? p->C : p->OC)};
    const uint64_t d[3] = {(uint64_t)(fwd ? p->OC : p->C), (uint64_t)(fwd ? p->N : p->OC),
                           (uint64_t)(fwd ? p->OC : p->C)};
    const int32_t bias_type = CUDA_R_32F;
    const uint32_t align = LT_ALIGN;
    const size_t ws = LT_WORKSPACE;
    // The heuristic reads the bias pointer's value for its alignment: show
    // it one that is 16-byte aligned and no more.
    const void *bias_probe = (const char *)lt.workspace + LT_ALIGN;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    int ok = cublasLtMatmulDescCreate(&p->desc, compute, CUDA_R_32F) == 0 &&
             cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == 0 &&
             cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) == 0 &&
             cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                            sizeof epilogue) == 0 &&
             cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                            &bias_type, sizeof bias_type) == 0 &&
             cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                            &bias_probe, sizeof bias_probe) == 0 &&
             cublasLtMatrixLayoutCreate(&p->a, in, a[0], a[1], a[2]) == 0 &&
             cublasLtMatrixLayoutCreate(&p->b, in, b[0], b[1], b[2]) == 0 &&
             cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, d[0], d[1], d[2]) == 0 &&
             cublasLtMatmulPreferenceCreate(&pref) == 0 &&
             cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws, sizeof ws) == 0;
    const cublasLtMatmulPreferenceAttributes_t aligns[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; ok && i < 4; i++)
        ok = cublasLtMatmulPreferenceSetAttribute(pref, aligns[i], &align, sizeof align) == 0;
    if (ok)
        ok = cublasLtMatmulAlgoGetHeuristic(lt.handle, p->desc, p->a, p->b, p->d, p->d, pref, 1,
                                            &result, &found) == 0 &&
             found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (ok)
        p->algo = result.algo;
    return ok;
}

static int lt_mode(void)
{
    return cuda_bf16_gemms() ? LT_BF16_OPERANDS : g_cuda.bf16 ? LT_FAST_16BF : LT_FP32;
}

/* REED_CUDA_VERBOSE=1: one line per new plan, saying which path it takes. */
static void lt_report(const lt_plan *p)
{
    const char *v = getenv("REED_CUDA_VERBOSE");
    if (!v || !v[0] || !strcmp(v, "0"))
        return;
    fprintf(stderr, "cuBLASLt %s N=%d C=%d OC=%d: %s\n",
            p->kind == LT_FORWARD ? "linear with the bias epilogue" : "dw with the BGRADB epilogue",
            p->N, p->C, p->OC,
            p->ok ? "an algorithm found"
                  : p->kind == LT_FORWARD ? "no algorithm: the bias-seeded cuBLAS GEMM"
                                          : "no algorithm: the bias gradient in a column sum");
}

static lt_plan *lt_plan_for(int kind, int N, int C, int OC)
{
    const int mode = lt_mode();
    for (int i = 0; i < lt.nplans; i++) {
        lt_plan *p = &lt.plans[i];
        if (p->kind == kind && p->N == N && p->C == C && p->OC == OC && p->mode == mode)
            return p;
    }
    if (lt.nplans == LT_PLANS)
        return NULL;
    lt_plan *p = &lt.plans[lt.nplans++];
    *p = lt_plan{};
    p->kind = kind, p->N = N, p->C = C, p->OC = OC, p->mode = mode;
    p->ok = lt_plan_make(p);
    lt_report(p);
    return p;
}

/* The plan for this call, or NULL: take the cuBLAS path. */
static lt_plan *lt_usable(int kind, int N, int C, int OC)
{
    if (lt.state == 0)
        lt.state = lt_start();
    if (lt.state < 0 || (kind == LT_DW_BGRAD && !lt.bgrad))
        return NULL;
    lt_plan *p = lt_plan_for(kind, N, C, OC);
    return p && p->ok ? p : NULL;
}

/* D = alpha·op(A)·op(B) + beta·D through plan p, its epilogue's bias
 * pointer set to bias; 0, or -1 (remembered) when cuBLASLt refuses. */
static int lt_run(lt_plan *p, const void *a, const void *b, float beta, float *out,
                  const float *bias)
{
    const float one = 1.0f;
    cublasStatus_t s = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                      &bias, sizeof bias);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmul(lt.handle, p->desc, &one, a, p->a, b, p->b, &beta, out, p->d, out,
                           p->d, &p->algo, lt.workspace, LT_WORKSPACE, g_cuda.stream);
    if (s != CUBLAS_STATUS_SUCCESS) {
        p->ok = 0; // a configuration cuBLASLt refuses: not worth a fatal error
        return -1;
    }
    return 0;
}

int cuda_lt_linear_bias(float *out, const float *inp, const float *w,
                        const float *bias, int N, int C, int OC)
{
    if (!aligned(out) || !aligned(inp) || !aligned(w) || !aligned(bias))
        return -1;
    lt_plan *p = lt_usable(LT_FORWARD, N, C, OC);
    if (!p)
        return -1;
    const void *a = w, *b = inp;
    if (p->mode == LT_BF16_OPERANDS) {
        a = cuda_bf16_copy(BF16_B, w, (size_t)OC * C);
        b = cuda_view_or_copy(BF16_A, inp, (size_t)N * C, 1); // kept for the backward
    }
    return lt_run(p, a, b, 0.0f, out, bias);
}

int cuda_lt_dw_bgrad(float *dw, float *dbias, const __nv_bfloat16 *dout16,
                     const __nv_bfloat16 *inp16, int N, int C, int OC)
{
    if (!cuda_bf16_gemms() || !aligned(dw) || !aligned(dout16) || !aligned(inp16))
        return -1;
    lt_plan *p = lt_usable(LT_DW_BGRAD, N, C, OC);
    if (!p)
        return -1;
    // BGRADB overwrites its bias vector: a scratch one, added into dbias.
    float *sums = (float *)cuda_scratch(&lt.bias_out, &lt.bias_cap, (size_t)OC * sizeof(float));
    if (lt_run(p, inp16, dout16, 1.0f, dw, sums) != 0)
        return -1;
    cuda_accumulate(dbias, sums, (size_t)OC);
    lt.bgrad_calls++;
    return 0;
}

extern "C" long reed_cuda_lt_bgrad_calls(void) { return lt.bgrad_calls; }
