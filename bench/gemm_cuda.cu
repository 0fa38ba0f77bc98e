/* bench/gemm_cuda.cu — the GEMM ceiling on this GPU at the shapes of a
 * SiT linear layer, for the choice of operand storage in the bf16 mode.
 *
 * For each shape (N tokens, C inputs, OC outputs) it times the three GEMMs
 * of one linear layer (forward, dinp, dw) with cuBLAS in three ways:
 *   fp32·fast16bf  fp32 operands and output, CUBLAS_COMPUTE_32F_FAST_16BF
 *                  (what the engine's bf16 mode does today)
 *   bf16→fp32      bf16 operands, fp32 output, CUBLAS_COMPUTE_32F
 *   bf16→bf16      bf16 operands and output
 * and the fp32 → bf16 conversion of the two operands of each GEMM, and
 * prints ms and TFLOP/s, the sum over the shapes, and the ratio of each
 * way (conversions included for the bf16 ones) to the first.
 *
 *   bench_gemm_cuda [N] [reps]     (default N = 65536: SiT-B/2, batch 256)
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(x)                                                              \
    do {                                                                      \
        if ((x) != 0) {                                                       \
            fprintf(stderr, "%s:%d: %s failed\n", __FILE__, __LINE__, #x);    \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

enum { WAY_FP32, WAY_BF16_F32, WAY_BF16_BF16, WAYS };
static const char *way_name[WAYS] = {"fp32·fast16bf", "bf16→fp32", "bf16→bf16"};

__global__ void fill_kernel(float *x, size_t n, unsigned seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        x[i] = (h & 0xffff) / 65536.0f - 0.5f;
    }
}

__global__ void to_bf16_kernel(__nv_bfloat16 *y, const float *x, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(x[i]);
}

static cublasHandle_t handle;
static cudaEvent_t ev0, ev1;

/* Row-major C(M,N) = op(A)(M,K)·op(B)(K,N) in the given way, as the engine
 * calls it (operands swapped for column-major cuBLAS). */
static void gemm(int way, int ta, int tb, int M, int N, int K, const void *A,
                 int lda, const void *B, int ldb, void *C, int ldc)
{
    const float one = 1.0f, zero = 0.0f;
    cudaDataType_t tin = way == WAY_FP32 ? CUDA_R_32F : CUDA_R_16BF;
    cudaDataType_t tout = way == WAY_BF16_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t ct =
        way == WAY_FP32 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
    CHECK(cublasGemmEx(handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                       ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &one, B, tin,
                       ldb, A, tin, lda, &zero, C, tout, ldc, ct,
                       CUBLAS_GEMM_DEFAULT));
}

typedef struct {
    const char *name;
    int ta, tb, M, N, K;
    const float *A, *B; /* fp32 operands */
    size_t nA, nB, nC;
    int lda, ldb, ldc;
} gemm_case;

static float time_ms(void (*fn)(const gemm_case *, int, void *), const gemm_case *g,
                     int way, void *ctx, int reps)
{
    fn(g, way, ctx); // warm-up (and heuristics)
    CHECK(cudaEventRecord(ev0));
    for (int r = 0; r < reps; r++)
        fn(g, way, ctx);
    CHECK(cudaEventRecord(ev1));
    CHECK(cudaEventSynchronize(ev1));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, ev0, ev1));
    return ms / reps;
}

typedef struct {
    __nv_bfloat16 *A16, *B16;
    void *C;
} buffers;

static void run_gemm(const gemm_case *g, int way, void *ctx)
{
    buffers *b = (buffers *)ctx;
    const void *A = way == WAY_FP32 ? (const void *)g->A : b->A16;
    const void *B = way == WAY_FP32 ? (const void *)g->B : b->B16;
    gemm(way, g->ta, g->tb, g->M, g->N, g->K, A, g->lda, B, g->ldb, b->C, g->ldc);
}

static void run_convert(const gemm_case *g, int way, void *ctx)
{
    (void)way;
    buffers *b = (buffers *)ctx;
    to_bf16_kernel<<<1024, 256>>>(b->A16, g->A, g->nA);
    to_bf16_kernel<<<1024, 256>>>(b->B16, g->B, g->nB);
}

static float *device_random(size_t n, unsigned seed)
{
    float *p;
    CHECK(cudaMalloc((void **)&p, n * sizeof(float)));
    fill_kernel<<<1024, 256>>>(p, n, seed);
    return p;
}

int main(int argc, char **argv)
{
    const int N = argc > 1 ? atoi(argv[1]) : 65536;
    const int reps = argc > 2 ? atoi(argv[2]) : 10;
    static const int shapes[][2] = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}};
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) {
        fprintf(stderr, "bench_gemm_cuda: no CUDA device\n");
        return 77;
    }
    CHECK(cublasCreate(&handle));
    CHECK(cudaEventCreate(&ev0));
    CHECK(cudaEventCreate(&ev1));
    const size_t most = (size_t)N * 3072;
    float *x = device_random(most, 1), *dy = device_random(most, 2),
          *w = device_random(3072 * 3072, 3);
    buffers b;
    CHECK(cudaMalloc((void **)&b.A16, most * 2));
    CHECK(cudaMalloc((void **)&b.B16, most * 2));
    CHECK(cudaMalloc(&b.C, most * 4));

    double total[WAYS + 1] = {0}, flops_total = 0;
    printf("N=%d tokens; ms per GEMM (TFLOP/s); conv = fp32→bf16 of both operands\n", N);
    printf("%-26s %16s %16s %16s %9s\n", "GEMM", way_name[0], way_name[1], way_name[2], "conv");
    for (int s = 0; s < 4; s++) {
        const int C = shapes[s][0], OC = shapes[s][1];
        char nm[3][48];
        snprintf(nm[0], 48, "fwd  %d→%d", C, OC);
        snprintf(nm[1], 48, "dinp %d→%d", C, OC);
        snprintf(nm[2], 48, "dw   %d→%d", C, OC);
        gemm_case cases[3] = {
            // out(N,OC) = x(N,C)·w(OC,C)ᵀ
            {nm[0], 0, 1, N, OC, C, x, w, (size_t)N * C, (size_t)OC * C, (size_t)N * OC, C, C, OC},
            // dinp(N,C) = dy(N,OC)·w(OC,C)
            {nm[1], 0, 0, N, C, OC, dy, w, (size_t)N * OC, (size_t)OC * C, (size_t)N * C, OC, C, C},
            // dw(OC,C) = dy(N,OC)ᵀ·x(N,C)
            {nm[2], 1, 0, OC, C, N, dy, x, (size_t)N * OC, (size_t)N * C, (size_t)OC * C, OC, C, C},
        };
        for (int k = 0; k < 3; k++) {
            const gemm_case *g = &cases[k];
            const double flops = 2.0 * g->M * g->N * g->K;
            flops_total += flops;
            run_convert(g, 0, &b);
            printf("%-26s", g->name);
            for (int way = 0; way < WAYS; way++) {
                float ms = time_ms(run_gemm, g, way, &b, reps);
                total[way] += ms;
                printf(" %7.3f (%5.0f)", ms, flops / ms / 1e9);
            }
            float conv = time_ms(run_convert, g, 0, &b, reps);
            total[WAYS] += conv;
            printf(" %9.3f\n", conv);
        }
    }
    CHECK(cudaGetLastError());
    printf("%-26s", "total");
    for (int way = 0; way < WAYS; way++)
        printf(" %7.3f (%5.0f)", total[way], flops_total / total[way] / 1e9);
    printf(" %9.3f\n", total[WAYS]);
    printf("ratio to %s: bf16→fp32 %.2f (%.2f with conversions), bf16→bf16 %.2f (%.2f)\n",
           way_name[0], total[0] / total[1], total[0] / (total[1] + total[WAYS]),
           total[0] / total[2], total[0] / (total[2] + total[WAYS]));
    return 0;
}
