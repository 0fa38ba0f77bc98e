/* Linear layers through cuBLASLt with the bias work in the GEMM's
 * epilogue:
 * - forward (CUBLASLT_EPILOGUE_BIAS): the bias is added as the output is
 *   written, where the plain cuBLAS path seeds the output with the bias
 *   and reads it back in a beta = 1 GEMM;
 * - backward, bf16 operands (CUBLASLT_EPILOGUE_BGRADB): the weight
 *   gradient's GEMM also sums dout over the tokens for the bias gradient,
 *   where the plain path reads dout (fp32) once more in a column sum;
 * - the MLP's GELU, bf16 operands, bf16 outputs (the linear_gelu ops):
 *   the first layer's GEMM adds the bias and writes both the pre-activation
 *   and its GELU (CUBLASLT_EPILOGUE_GELU_AUX_BIAS, the pre-activation as
 *   the "aux" matrix), and the second layer's input-gradient GEMM scales
 *   its product by gelu' of that aux (CUBLASLT_EPILOGUE_DGELU). The GELU
 *   passes over the (N, 4H) activations are gone: about 2 GB less traffic
 *   per block and step on SiT-B/2 at batch 256 (estimated). cuBLASLt
 *   documents its GELU as "GELU" without saying which form: the tanh form
 *   (the model's) and the erf form differ by under 1e-3, below the bf16
 *   rounding of the outputs, so the tests could not tell them apart.
 *
 * In cuBLASLt's column-major terms, with row-major out(N,OC), w(OC,C),
 * inp(N,C), dout(N,OC), dw(OC,C):
 * - forward: out is D(OC,N), leading dim OC; w is A stored (C,OC), used
 *   transposed; inp is B stored (C,N). D = op(A)·B + bias, the bias running
 *   along D's rows (OC of them), as the epilogue wants;
 * - weight gradient: dw is D(C,OC), leading dim C; inp is A stored (C,N);
 *   dout is B stored (OC,N), used transposed. D += A·op(B) over k = N
 *   tokens, and BGRADB writes bias[j] = Σ_k op(B)(k,j) = Σ_n dout(n,j), one
 *   per column of D (OC of them);
 * - input gradient (DGELU): dinp(N,C) is D(C,N), leading dim C; w is A
 *   stored (C,OC); dout is B stored (OC,N); D = A·B over k = OC. The aux
 *   matrix (the pre-activation) is laid out as D, as it is in the forward.
 *
 * A plan (descriptors and an algorithm) is made once per kind, shape and
 * precision and kept. Its algorithm is the heuristic's first; with
 * REED_CUDA_LT_TUNE=1 it is the fastest of the heuristic's first
 * LT_CANDIDATES, each timed on the plan's first call (lt_tune). On SiT-B/2
 * (H200) the timing kept another algorithm for most large shapes, up to
 * 10% faster alone (DGELU 0.498 against 0.554 ms), but the whole step
 * gained only 0.4% (2552 against 2543 img/s); and which algorithm wins
 * varies with timing noise, and with it the rounding of a run's GEMMs
 * from one run to the next, so the timing is left off by default.
 * The heuristic is asked for algorithms that need no more than 16-byte
 * alignment, so every call whose pointers are 16-byte aligned can use the
 * plan; other calls, shapes without an algorithm, and a failed matmul
 * (remembered per plan) take the cuBLAS path. REED_CUDA_LT=0 turns this file off, REED_CUDA_LT_BGRAD=0 only the
 * BGRADB backward, REED_CUDA_LT_GELU=0 only the GELU epilogues.
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
#define LT_CANDIDATES 8 /* the heuristic's algorithms a plan times */
#define LT_TUNE_REPS 3  /* timed runs of each, after one untimed */

enum { LT_FP32, LT_FAST_16BF, LT_BF16_OPERANDS };
enum { LT_FORWARD, LT_DW_BGRAD, LT_GELU, LT_DGELU, LT_FORWARD16 }; /* plan kinds */

/* What each kind's GEMM is (see the top of the file). D(m,n) = op(A)·op(B)
 * over k, with (m, n, k) from the linear layer's (N, C, OC) by lt_mnk. */
static const struct lt_kind {
    cublasOperation_t ta, tb;
    cublasLtEpilogue_t epilogue;
    int bias_type;          /* cudaDataType_t of the bias vector, or -1: none */
    int aux;                /* an aux matrix laid out as D */
    cudaDataType_t d_type;  /* D's (and C's) element type */
    const char *what, *fallback;
} lt_kinds[] = { /* in the order of the kinds' enum */
    {CUBLAS_OP_T, CUBLAS_OP_N, CUBLASLT_EPILOGUE_BIAS, CUDA_R_32F, 0, CUDA_R_32F,
     "linear with the bias epilogue", "the bias-seeded cuBLAS GEMM"},
    {CUBLAS_OP_N, CUBLAS_OP_T, CUBLASLT_EPILOGUE_BGRADB, CUDA_R_32F, 0, CUDA_R_32F,
     "dw with the BGRADB epilogue", "the bias gradient in a column sum"},
    {CUBLAS_OP_T, CUBLAS_OP_N, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, CUDA_R_16BF, 1, CUDA_R_16BF,
     "linear with the GELU_AUX_BIAS epilogue", "the GEMM, then the GELU"},
    {CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DGELU, -1, 1, CUDA_R_16BF,
     "dinp with the DGELU epilogue", "the GEMM, then the GELU's backward"},
    {CUBLAS_OP_T, CUBLAS_OP_N, CUBLASLT_EPILOGUE_BIAS, CUDA_R_16BF, 0, CUDA_R_16BF,
     "linear to bf16 with the bias epilogue", "the fp32 output"},
};

static void lt_mnk(int kind, int N, int C, int OC, uint64_t mnk[3])
{
    const int fwd = kind == LT_FORWARD || kind == LT_GELU || kind == LT_FORWARD16;
    mnk[0] = (uint64_t)(fwd ? OC : C);
    mnk[1] = (uint64_t)(kind == LT_DW_BGRAD ? OC : N);
    mnk[2] = (uint64_t)(fwd ? C : kind == LT_DW_BGRAD ? N : OC);
}

typedef struct lt_plan {
    int kind, N, C, OC, mode;
    int ok; /* 1: use the plan; 0: this shape takes the cuBLAS path */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
    cublasLtMatmulAlgo_t cand[LT_CANDIDATES]; /* the heuristic's, best first */
    int ncand, tuned;
} lt_plan;

static struct {
    int state; /* 0: not started, 1: ready, -1: off */
    int bgrad; /* the backward's plans allowed (REED_CUDA_LT_BGRAD) */
    int gelu;  /* the GELU plans allowed (REED_CUDA_LT_GELU) */
    int tune;  /* time the candidates (REED_CUDA_LT_TUNE=1) */
    long bgrad_calls, gelu_calls, bf16_out_calls;
    void *bias_out; /* (bias_cap bytes) BGRADB's output, added into dbias */
    size_t bias_cap;
    void *bias16; /* (bias16_cap bytes) the GELU plan's bias in bf16 */
    size_t bias16_cap;
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
    env = getenv("REED_CUDA_LT_GELU");
    lt.gelu = !(env && env[0] == '0');
    env = getenv("REED_CUDA_LT_TUNE");
    lt.tune = env && env[0] == '1';
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

/* Sets descriptor attribute `a` of plan p to the value at v (size bytes). */
static int lt_set(lt_plan *p, cublasLtMatmulDescAttributes_t a, const void *v, size_t size)
{
    return cublasLtMatmulDescSetAttribute(p->desc, a, v, size) == CUBLAS_STATUS_SUCCESS;
}

/* The descriptors of the plan's GEMM (see the top of the file) and the
 * heuristic's algorithms (the first in p->algo); returns 0 when cuBLASLt
 * has none. */
static int lt_plan_make(lt_plan *p)
{
    const struct lt_kind *k = &lt_kinds[p->kind];
    const cublasComputeType_t compute = p->mode == LT_BF16_OPERANDS ? CUBLAS_COMPUTE_32F
                                        : p->mode == LT_FAST_16BF   ? g_cuda.compute_bf16
                                                                    : g_cuda.compute_fp32;
    const cudaDataType_t in = p->mode == LT_BF16_OPERANDS ? CUDA_R_16BF : CUDA_R_32F;
    uint64_t mnk[3];
    lt_mnk(p->kind, p->N, p->C, p->OC, mnk);
    const uint64_t m = mnk[0], n = mnk[1], kk = mnk[2];
    // A and B as stored (rows, cols), leading dim = rows
    const uint64_t ar = k->ta == CUBLAS_OP_N ? m : kk, ac = k->ta == CUBLAS_OP_N ? kk : m;
    const uint64_t br = k->tb == CUBLAS_OP_N ? kk : n, bc = k->tb == CUBLAS_OP_N ? n : kk;
    const int32_t bias_type = k->bias_type;
    const int64_t aux_ld = (int64_t)m;
    const uint32_t align = LT_ALIGN;
    const size_t ws = LT_WORKSPACE;
    // The heuristic reads the bias and aux pointers' values for their
    // alignment: show it ones that are 16-byte aligned and no more.
    const void *probe = (const char *)lt.workspace + LT_ALIGN;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t result[LT_CANDIDATES];
    int found = 0;
    int ok = cublasLtMatmulDescCreate(&p->desc, compute, CUDA_R_32F) == 0 &&
             lt_set(p, CUBLASLT_MATMUL_DESC_TRANSA, &k->ta, sizeof k->ta) &&
             lt_set(p, CUBLASLT_MATMUL_DESC_TRANSB, &k->tb, sizeof k->tb) &&
             lt_set(p, CUBLASLT_MATMUL_DESC_EPILOGUE, &k->epilogue, sizeof k->epilogue);
    if (ok && bias_type >= 0)
        ok = lt_set(p, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type) &&
             lt_set(p, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &probe, sizeof probe);
    if (ok && k->aux)
        ok = lt_set(p, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld) &&
             lt_set(p, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &probe, sizeof probe);
    ok = ok && cublasLtMatrixLayoutCreate(&p->a, in, ar, ac, (int64_t)ar) == 0 &&
         cublasLtMatrixLayoutCreate(&p->b, in, br, bc, (int64_t)br) == 0 &&
         cublasLtMatrixLayoutCreate(&p->d, k->d_type, m, n, (int64_t)m) == 0 &&
         cublasLtMatmulPreferenceCreate(&pref) == 0 &&
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                              sizeof ws) == 0;
    const cublasLtMatmulPreferenceAttributes_t aligns[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; ok && i < 4; i++)
        ok = cublasLtMatmulPreferenceSetAttribute(pref, aligns[i], &align, sizeof align) == 0;
    if (ok)
        ok = cublasLtMatmulAlgoGetHeuristic(lt.handle, p->desc, p->a, p->b, p->d, p->d, pref,
                                            lt.tune ? LT_CANDIDATES : 1, result, &found) == 0;
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    for (int i = 0; ok && i < found; i++)
        if (result[i].state == CUBLAS_STATUS_SUCCESS)
            p->cand[p->ncand++] = result[i].algo;
    if (p->ncand == 0)
        return 0;
    p->algo = p->cand[0];
    return 1;
}

static int lt_mode(void)
{
    return cuda_bf16_gemms() ? LT_BF16_OPERANDS : g_cuda.bf16 ? LT_FAST_16BF : LT_FP32;
}

/* REED_CUDA_VERBOSE=1: a line per new plan, saying which path it takes,
 * and per timing of a plan's algorithms. */
static int lt_verbose(void)
{
    const char *v = getenv("REED_CUDA_VERBOSE");
    return v && v[0] && strcmp(v, "0");
}

static void lt_report(const lt_plan *p)
{
    if (!lt_verbose())
        return;
    fprintf(stderr, "cuBLASLt %s N=%d C=%d OC=%d: %s%s\n", lt_kinds[p->kind].what, p->N, p->C,
            p->OC, p->ok ? "an algorithm found" : "no algorithm: ",
            p->ok ? "" : lt_kinds[p->kind].fallback);
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
    if (lt.state < 0 || (kind == LT_DW_BGRAD && !lt.bgrad) ||
        ((kind == LT_GELU || kind == LT_DGELU) && !lt.gelu))
        return NULL;
    lt_plan *p = lt_plan_for(kind, N, C, OC);
    return p && p->ok ? p : NULL;
}

/* D = op(A)·op(B) + beta·D through plan p with algorithm algo, the
 * epilogue's bias and aux pointers set to bias and aux (where its kind has
 * them). */
static cublasStatus_t lt_matmul(lt_plan *p, const cublasLtMatmulAlgo_t *algo, const void *a,
                                const void *b, float beta, void *out, const void *bias,
                                const void *aux)
{
    const float one = 1.0f;
    const struct lt_kind *k = &lt_kinds[p->kind];
    int ok = (k->bias_type < 0 || lt_set(p, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias)) &&
             (!k->aux || lt_set(p, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
    if (!ok)
        return CUBLAS_STATUS_INVALID_VALUE;
    return cublasLtMatmul(lt.handle, p->desc, &one, a, p->a, b, p->b, &beta, out, p->d, out, p->d,
                          algo, lt.workspace, LT_WORKSPACE, g_cuda.stream);
}

/* Milliseconds of one run of algo (the mean of LT_TUNE_REPS after an
 * untimed one), or -1 where it fails. */
static float lt_time(lt_plan *p, const cublasLtMatmulAlgo_t *algo, const void *a, const void *b,
                     float beta, void *out, const void *bias, const void *aux,
                     cudaEvent_t ev[2])
{
    if (lt_matmul(p, algo, a, b, beta, out, bias, aux) != CUBLAS_STATUS_SUCCESS)
        return -1.0f;
    CUDA_CHECK(cudaEventRecord(ev[0], g_cuda.stream));
    for (int r = 0; r < LT_TUNE_REPS; r++)
        if (lt_matmul(p, algo, a, b, beta, out, bias, aux) != CUBLAS_STATUS_SUCCESS)
            return -1.0f;
    CUDA_CHECK(cudaEventRecord(ev[1], g_cuda.stream));
    CUDA_CHECK(cudaEventSynchronize(ev[1]));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, ev[0], ev[1]));
    return ms / LT_TUNE_REPS;
}

/* Times the plan's candidates on the first call's operands (a, b, and the
 * bias or aux its epilogue reads) and keeps the fastest in p->algo. Each
 * writes into scratch: D, and the bias (BGRADB) or aux (GELU_AUX_BIAS) its
 * epilogue writes, so the call's own outputs are untouched. Where the
 * scratch does not fit, the heuristic's first stays. */
static void lt_tune(lt_plan *p, const void *a, const void *b, float beta, const void *bias,
                    const void *aux)
{
    p->tuned = 1;
    if (p->ncand < 2)
        return;
    const struct lt_kind *k = &lt_kinds[p->kind];
    uint64_t mnk[3];
    lt_mnk(p->kind, p->N, p->C, p->OC, mnk);
    // aux has D's type and layout; BGRADB's bias is one float per column
    const size_t d_bytes = (mnk[0] * mnk[1] * (k->d_type == CUDA_R_16BF ? 2 : 4) + 255) & ~255ull;
    const int writes_bias = k->epilogue == CUBLASLT_EPILOGUE_BGRADB;
    const int writes_aux = k->epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    const size_t extra = writes_aux ? d_bytes : writes_bias ? mnk[1] * sizeof(float) : 0;
    char *scratch = NULL;
    if (cudaMalloc((void **)&scratch, d_bytes + extra) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    CUDA_CHECK(cudaMemsetAsync(scratch, 0, d_bytes + extra, g_cuda.stream));
    const void *eb = writes_bias ? scratch + d_bytes : bias;
    const void *ea = writes_aux ? scratch + d_bytes : aux;
    cudaEvent_t ev[2];
    CUDA_CHECK(cudaEventCreate(&ev[0]));
    CUDA_CHECK(cudaEventCreate(&ev[1]));
    float ms[LT_CANDIDATES];
    int best = 0;
    for (int i = 0; i < p->ncand; i++) {
        ms[i] = lt_time(p, &p->cand[i], a, b, beta, scratch, eb, ea, ev);
        if (ms[i] >= 0.0f && (ms[best] < 0.0f || ms[i] < ms[best]))
            best = i;
    }
    CUDA_CHECK(cudaEventDestroy(ev[0]));
    CUDA_CHECK(cudaEventDestroy(ev[1]));
    CUDA_CHECK(cudaFree(scratch));
    p->algo = p->cand[best];
    if (lt_verbose())
        fprintf(stderr, "cuBLASLt %s N=%d C=%d OC=%d: keeps algorithm %d of %d, %.3f ms "
                "(the heuristic's first: %.3f; -1: failed)\n", k->what, p->N, p->C, p->OC,
                best + 1, p->ncand, ms[best], ms[0]);
}

/* D = op(A)·op(B) + beta·D through plan p (see lt_matmul), timing its
 * candidates first on its first call; 0, or -1 (remembered) when cuBLASLt
 * refuses. */
static int lt_run(lt_plan *p, const void *a, const void *b, float beta, void *out,
                  const void *bias, const void *aux)
{
    if (!p->tuned)
        lt_tune(p, a, b, beta, bias, aux);
    const cublasStatus_t s = lt_matmul(p, &p->algo, a, b, beta, out, bias, aux);
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
    return lt_run(p, a, b, 0.0f, out, bias, NULL);
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
    if (lt_run(p, inp16, dout16, 1.0f, dw, sums, NULL) != 0)
        return -1;
    cuda_accumulate(dbias, sums, (size_t)OC);
    lt.bgrad_calls++;
    return 0;
}

/* The bias in bf16 for a bf16 D (cuBLASLt wants D's type): rounded as
 * PyTorch's autocast rounds it. */
static const __nv_bfloat16 *lt_bias16(const float *bias, int OC)
{
    __nv_bfloat16 *b16 = (__nv_bfloat16 *)cuda_scratch(&lt.bias16, &lt.bias16_cap,
                                                       (size_t)OC * sizeof(__nv_bfloat16));
    cuda_bf16_convert(b16, bias, (size_t)OC);
    return b16;
}

int cuda_lt_gelu_on(void)
{
    if (lt.state == 0)
        lt.state = lt_start();
    return lt.state > 0 && lt.gelu && cuda_bf16_gemms();
}

/* A forward kind with a bf16 D (LT_GELU: pre16 its aux; LT_FORWARD16:
 * pre16 NULL), the bias rounded to bf16: 0, or -1 where it does not apply. */
static int lt_forward16(int kind, __nv_bfloat16 *out16, __nv_bfloat16 *pre16,
                        const __nv_bfloat16 *inp16, const __nv_bfloat16 *w16, const float *bias,
                        int N, int C, int OC)
{
    if (!cuda_bf16_gemms() || OC % 8 || !aligned(out16) || !aligned(pre16) || !aligned(inp16) ||
        !aligned(w16))
        return -1;
    lt_plan *p = lt_usable(kind, N, C, OC);
    return p && lt_run(p, w16, inp16, 0.0f, out16, lt_bias16(bias, OC), pre16) == 0 ? 0 : -1;
}

int cuda_lt_linear_gelu(__nv_bfloat16 *out16, __nv_bfloat16 *pre16, const __nv_bfloat16 *inp16,
                        const __nv_bfloat16 *w16, const float *bias, int N, int C, int OC)
{
    if (!cuda_lt_gelu_on() || lt_forward16(LT_GELU, out16, pre16, inp16, w16, bias, N, C, OC))
        return -1;
    lt.gelu_calls++;
    return 0;
}

int cuda_lt_linear16(__nv_bfloat16 *out16, const __nv_bfloat16 *inp16,
                     const __nv_bfloat16 *w16, const float *bias, int N, int C, int OC)
{
    if (lt_forward16(LT_FORWARD16, out16, NULL, inp16, w16, bias, N, C, OC))
        return -1;
    lt.bf16_out_calls++;
    return 0;
}

int cuda_lt_dgelu(__nv_bfloat16 *dpre16, const __nv_bfloat16 *dout16, const __nv_bfloat16 *w16,
                  const __nv_bfloat16 *pre16, int N, int C, int OC)
{
    if (!cuda_lt_gelu_on() || C % 8 || !aligned(dpre16) || !aligned(dout16) || !aligned(w16) ||
        !aligned(pre16))
        return -1;
    lt_plan *p = lt_usable(LT_DGELU, N, C, OC);
    if (!p || lt_run(p, w16, dout16, 0.0f, dpre16, NULL, pre16) != 0)
        return -1;
    lt.gelu_calls++;
    return 0;
}

extern "C" long reed_cuda_lt_bgrad_calls(void) { return lt.bgrad_calls; }

extern "C" long reed_cuda_lt_gelu_calls(void) { return lt.gelu_calls; }

extern "C" long reed_cuda_lt_bf16_out_calls(void) { return lt.bf16_out_calls; }
