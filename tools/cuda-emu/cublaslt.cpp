/* cuBLASLt for the emulator (include/cublasLt.h): the matmul is the
 * emulator's cublasGemmEx (fp32 operands, rounded to bf16 under FAST_16BF,
 * or bf16 ones), into fp32 D or, for bf16 D, an fp32 matrix rounded to
 * bf16 at the end; then the epilogue:
 * - BIAS adds one bias element per row of D;
 * - BGRADB writes bias[j] = Σ_k op(B)(k, j), one per column of D;
 * - GELU_AUX_BIAS adds the bias, writes that to the aux matrix (in D's
 *   type) and its GELU (tanh approximation) to D;
 * - DGELU multiplies D by gelu'(aux).
 * The bias must be in D's type, the aux matrix's leading dim a multiple of
 * 8 and no less than D's rows, as the real library wants. Descriptors are
 * never freed but for preferences: the backend keeps its plans for good. */
#include "cublasLt.h"
#include "cuda_bf16.h"
#include <stdio.h>
#include <math.h>
#include <string.h>
#include <vector>

struct emu_lt { int unused; };
struct emu_lt_desc {
    cublasComputeType_t compute;
    cublasOperation_t ta, tb;
    int epilogue;
    const void *bias;
    int32_t bias_type;
    const void *aux;
    int64_t aux_ld;
};
struct emu_lt_layout { cudaDataType_t type; uint64_t rows, cols; int64_t ld; };
struct emu_lt_pref { int unused; };

static cublasStatus_t set(void *field, size_t field_size, const void *buf, size_t size)
{
    if (size != field_size) {
        fprintf(stderr, "emu: cublasLt attribute of %zu bytes, want %zu\n", size, field_size);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    memcpy(field, buf, size);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) { *h = new emu_lt(); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) { delete h; return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t ct, cudaDataType_t)
{
    *d = new emu_lt_desc{ct, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, NULL, -1, NULL, 0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a,
                                              const void *buf, size_t size)
{
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return set(&d->ta, sizeof d->ta, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB: return set(&d->tb, sizeof d->tb, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return set(&d->epilogue, sizeof d->epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return set(&d->bias, sizeof d->bias, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return set(&d->bias_type, sizeof d->bias_type, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return set(&d->aux, sizeof d->aux, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return set(&d->aux_ld, sizeof d->aux_ld, buf, size);
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld)
{
    *l = new emu_lt_layout{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    *p = new emu_lt_pref();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { delete p; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                    const void *, size_t)
{
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int *returned)
{
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    // Two algorithms (the same one) where more are asked for, so that a
    // caller's timing of candidates runs here too.
    *returned = requested < 2 ? requested : 2;
    for (int i = 0; i < *returned; i++) {
        memset(&results[i], 0, sizeof results[i]);
        results[i].state = CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_SUCCESS;
}

static float load(const void *p, cudaDataType_t t, size_t i)
{
    return t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}

static void store(void *p, cudaDataType_t t, size_t i, float v)
{
    if (t == CUDA_R_16BF)
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v);
    else
        ((float *)p)[i] = v;
}

/* gelu(x) = 0.5·x·(1 + tanh u), u = √(2/π)·(x + 0.044715·x³), and its slope. */
static double gelu(double x)
{
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
static double gelu_slope(double x)
{
    const double th = tanh(0.7978845608028654 * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);
}

static bool has_bias(int e) { return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_BGRADB || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }
static bool has_aux(int e) { return e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DGELU; }

/* BGRADB: bias[j] = Σ_k op(B)(k, j). */
static void bgradb(const emu_lt_desc *d, cudaDataType_t bias_type, const void *B, const emu_lt_layout *Bl,
                   int n, int k)
{
    for (int j = 0; j < n; j++) {
        double sum = 0.0;
        for (int kk = 0; kk < k; kk++)
            sum += load(B, Bl->type, d->tb == CUBLAS_OP_N ? kk + (size_t)j * Bl->ld : j + (size_t)kk * Bl->ld);
        store((void *)d->bias, bias_type, j, (float)sum);
    }
}

/* D(m,n) = alpha·op(A)·op(B) + beta·C (+ bias along the rows), column-major. */
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t Al, const void *B, cublasLtMatrixLayout_t Bl,
                              const void *beta, const void *C, cublasLtMatrixLayout_t, void *D,
                              cublasLtMatrixLayout_t Dl, const cublasLtMatmulAlgo_t *, void *, size_t,
                              cudaStream_t)
{
    const int m = (int)Dl->rows, n = (int)Dl->cols;
    const int k = (int)(d->ta == CUBLAS_OP_N ? Al->cols : Al->rows);
    const int kb = (int)(d->tb == CUBLAS_OP_N ? Bl->rows : Bl->cols);
    const cudaDataType_t bias_type = d->bias_type < 0 ? Dl->type : (cudaDataType_t)d->bias_type;
    const bool bad_bias = has_bias(d->epilogue) && (!d->bias || bias_type != Dl->type);
    const bool bad_aux = has_aux(d->epilogue) && (!d->aux || d->aux_ld < m || d->aux_ld % 8);
    const float b = *(const float *)beta;
    if (k != kb || C != D || bad_bias || bad_aux || (Dl->type == CUDA_R_16BF && b != 0.0f)) {
        fprintf(stderr, "emu: cublasLtMatmul: k %d vs %d, C %s D, bias %p (type %d, D's %d), aux %p ld %lld, "
                "beta %g\n", k, kb, C == D ? "==" : "!=", d->bias, (int)bias_type, (int)Dl->type, d->aux,
                (long long)d->aux_ld, b);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    // The product in fp32: D itself, or a matrix rounded into bf16 D below.
    const bool d16 = Dl->type == CUDA_R_16BF;
    std::vector<float> tmp(d16 ? (size_t)m * n : 0);
    float *acc = d16 ? tmp.data() : (float *)D;
    const int ld = d16 ? m : (int)Dl->ld;
    cublasStatus_t s = cublasGemmEx(NULL, d->ta, d->tb, m, n, k, alpha, A, Al->type, (int)Al->ld, B,
                                    Bl->type, (int)Bl->ld, beta, acc, CUDA_R_32F, ld, d->compute,
                                    CUBLAS_GEMM_DEFAULT);
    if (s) return s;
    if (d->epilogue == CUBLASLT_EPILOGUE_BGRADB) bgradb(d, bias_type, B, Bl, n, k);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float x = acc[i + (size_t)j * ld];
            const size_t at = i + (size_t)j * d->aux_ld;
            if (has_bias(d->epilogue) && d->epilogue != CUBLASLT_EPILOGUE_BGRADB) x += load(d->bias, bias_type, i);
            if (d->epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
                store((void *)d->aux, Dl->type, at, x);
                x = (float)gelu(x);
            }
            if (d->epilogue == CUBLASLT_EPILOGUE_DGELU) x = (float)(x * gelu_slope(load(d->aux, Dl->type, at)));
            store(D, Dl->type, i + (size_t)j * Dl->ld, x);
        }
    return CUBLAS_STATUS_SUCCESS;
}
