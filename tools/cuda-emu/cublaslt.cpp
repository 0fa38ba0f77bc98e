/* cuBLASLt for the emulator (include/cublasLt.h): the matmul is the
 * emulator's cublasGemmEx (fp32 operands, rounded to bf16 under FAST_16BF,
 * or bf16 ones) and then the epilogue: BIAS adds one bias element per row
 * of D; BGRADB writes bias[j] = Σ_k op(B)(k, j), one per column of D. Descriptors are never
 * freed but for preferences: the backend keeps its plans for good. */
#include "cublasLt.h"
#include "cuda_bf16.h"
#include <stdio.h>
#include <string.h>

struct emu_lt { int unused; };
struct emu_lt_desc {
    cublasComputeType_t compute;
    cublasOperation_t ta, tb;
    int epilogue;
    const float *bias;
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
    *d = new emu_lt_desc{ct, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, NULL};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a,
                                              const void *buf, size_t size)
{
    int32_t type;
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return set(&d->ta, sizeof d->ta, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB: return set(&d->tb, sizeof d->tb, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return set(&d->epilogue, sizeof d->epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return set(&d->bias, sizeof d->bias, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
        return set(&type, sizeof type, buf, size) || type != CUDA_R_32F ? CUBLAS_STATUS_INVALID_VALUE
                                                                         : CUBLAS_STATUS_SUCCESS;
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
    memset(&results[0], 0, sizeof results[0]);
    results[0].state = CUBLAS_STATUS_SUCCESS;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
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
    const int bias_epilogue = d->epilogue == CUBLASLT_EPILOGUE_BIAS || d->epilogue == CUBLASLT_EPILOGUE_BGRADB;
    if (k != kb || C != D || (bias_epilogue && !d->bias)) {
        fprintf(stderr, "emu: cublasLtMatmul: k %d vs %d, C %s D, bias %p\n", k, kb,
                C == D ? "==" : "!=", (const void *)d->bias);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    cublasStatus_t s = cublasGemmEx(NULL, d->ta, d->tb, m, n, k, alpha, A, Al->type, (int)Al->ld, B,
                                    Bl->type, (int)Bl->ld, beta, D, Dl->type, (int)Dl->ld, d->compute,
                                    CUBLAS_GEMM_DEFAULT);
    if (s) return s;
    if (d->epilogue == CUBLASLT_EPILOGUE_BGRADB) {
        float *grad = (float *)d->bias;
        for (int j = 0; j < n; j++) {
            double sum = 0.0;
            for (int kk = 0; kk < k; kk++) {
                const size_t at = d->tb == CUBLAS_OP_N ? kk + (size_t)j * Bl->ld : j + (size_t)kk * Bl->ld;
                sum += Bl->type == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)B)[at])
                                               : ((const float *)B)[at];
            }
            grad[j] = (float)sum;
        }
        return CUBLAS_STATUS_SUCCESS;
    }
    if (d->epilogue != CUBLASLT_EPILOGUE_BIAS) return s;
    float *out = (float *)D;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) out[i + (size_t)j * Dl->ld] += d->bias[i];
    return CUBLAS_STATUS_SUCCESS;
}
