/* CUDA backend: convolution, ReLU, global average pooling, cross-entropy —
 * the ops of the convolutional teacher and evaluator networks.
 *
 * Gradient contract (see ops.h): forward ops overwrite their outputs;
 * backward ops ADD (+=) into every gradient output (beta = 1 in cuDNN and
 * cuBLAS), and any gradient output may be NULL.
 *
 * Convolution runs through cuDNN's convolution API (NCHW float tensors,
 * cross-correlation) with the caller's scratch buffer as workspace: for
 * each shape, direction and precision we take the first algorithm in
 * cuDNN's heuristic order that fits the scratch buffer, preferring
 * deterministic ones; in fp32 mode only the algorithms that compute plain
 * products and sums (implicit GEMM, GEMM, direct — not FFT or Winograd)
 * and FMA math (no TF32). When cuDNN offers nothing (or the build has no
 * cuDNN, or reed_cuda_set_cudnn(0)), the CPU backend's method runs on the
 * GPU instead: im2col into scratch + one cuBLAS GEMM, with the same column
 * matrix layout as cpu_conv.c:
 *     col (C·K·K, B·Ho·Wo): row (c, i, j), column = output pixel (b, y, x)
 *     outT (OC, B·Ho·Wo) = w · col                   (forward)
 *     dw (OC, C·K·K)    += doutT · colᵀ              (backward)
 *     dcol = wᵀ · doutT, then col2im adds it into dinp
 * The bias gradient is always our own per-channel reduction (double).
 */
#include <math.h>
#include <string.h>

#include "cuda_internal.h"

/* Geometry of one convolution call. */
typedef struct conv_geom {
    int B, C, H, W, OC, K, stride, pad;
    int Ho, Wo;
    size_t P;   /* Ho·Wo pixels per sample */
    size_t CKK; /* C·K·K, one column row */
    size_t NP;  /* B·P, all output pixels */
} conv_geom;

static conv_geom conv_geom_make(int B, int C, int H, int W, int OC, int K,
                                int stride, int pad)
{
    conv_geom g = {B, C, H, W, OC, K, stride, pad, 0, 0, 0, 0, 0};
    g.Ho = reed_conv2d_out_size(H, K, stride, pad);
    g.Wo = reed_conv2d_out_size(W, K, stride, pad);
    g.P = (size_t)g.Ho * g.Wo;
    g.CKK = (size_t)C * K * K;
    g.NP = (size_t)B * g.P;
    return g;
}

/* ------------------------------------------------------------------------
 * Layout and bias kernels (both paths)
 * ---------------------------------------------------------------------- */

/* out (B,OC,P) += bias[o] */
__global__ void add_channel_bias_kernel(float *out, const float *bias, int OC,
                                        size_t P, size_t n)
{
    GRID_LOOP(i, n)
        out[i] += bias[i / P % OC];
}

/* dbias[o] += Σ_{b,p} dout[b, o, p] in double; one block per channel. */
__global__ void conv_dbias_kernel(float *dbias, const float *dout, int B,
                                  int OC, size_t P)
{
    const int o = blockIdx.x;
    const size_t n = (size_t)B * P;
    double acc = 0.0;
    for (size_t k = threadIdx.x; k < n; k += blockDim.x) {
        const size_t b = k / P, p = k % P;
        acc += dout[(b * OC + o) * P + p];
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0)
        dbias[o] += (float)acc;
}

/* out (B,OC,P) = outT (OC, B·P) + bias (or no bias) */
__global__ void pixels_to_nchw_kernel(float *out, const float *outT,
                                      const float *bias, conv_geom g, size_t n)
{
    GRID_LOOP(i, n) {
        const size_t p = i % g.P, bo = i / g.P;
        const int o = (int)(bo % g.OC);
        const size_t b = bo / g.OC;
        out[i] = outT[o * g.NP + b * g.P + p] + (bias ? bias[o] : 0.0f);
    }
}

/* doutT (OC, B·P) = dout (B,OC,P) */
__global__ void nchw_to_pixels_kernel(float *doutT, const float *dout,
                                      conv_geom g, size_t n)
{
    GRID_LOOP(i, n) {
        const size_t p = i % g.P, bo = i / g.P;
        const int o = (int)(bo % g.OC);
        const size_t b = bo / g.OC;
        doutT[o * g.NP + b * g.P + p] = dout[i];
    }
}

/* ------------------------------------------------------------------------
 * im2col path
 * ---------------------------------------------------------------------- */

/* col (CKK, NP) from inp (B,C,H,W); zero where the field hits padding.
 * One thread per column element. */
__global__ void im2col_kernel(float *col, const float *inp, conv_geom g,
                              size_t n)
{
    const int K = g.K;
    GRID_LOOP(e, n) {
        const size_t r = e / g.NP, q = e % g.NP;
        const int c = (int)(r / (K * K)), i = (int)(r / K % K), j = (int)(r % K);
        const size_t b = q / g.P, pq = q % g.P;
        const int oy = (int)(pq / g.Wo), ox = (int)(pq % g.Wo);
        const int iy = oy * g.stride - g.pad + i, ix = ox * g.stride - g.pad + j;
        const bool in = iy >= 0 && iy < g.H && ix >= 0 && ix < g.W;
        col[e] = in ? inp[((b * g.C + c) * g.H + iy) * g.W + ix] : 0.0f;
    }
}

/* dinp (B,C,H,W) += the scatter of dcol (CKK, NP), the adjoint of im2col.
 * One thread per input element gathers every column entry that im2col
 * copied from it: (i, j) with iy = oy·stride − pad + i, likewise x. */
__global__ void col2im_add_kernel(float *dinp, const float *dcol, conv_geom g,
                                  size_t n)
{
    const int K = g.K, s = g.stride;
    GRID_LOOP(e, n) {
        const int ix = (int)(e % g.W), iy = (int)(e / g.W % g.H);
        const size_t bc = e / ((size_t)g.W * g.H);
        const int c = (int)(bc % g.C);
        const size_t b = bc / g.C;
        float sum = 0.0f;
        for (int i = 0; i < K; i++) {
            const int ty = iy + g.pad - i; // = oy·s
            if (ty < 0 || ty % s || ty / s >= g.Ho)
                continue;
            for (int j = 0; j < K; j++) {
                const int tx = ix + g.pad - j; // = ox·s
                if (tx < 0 || tx % s || tx / s >= g.Wo)
                    continue;
                const size_t row = ((size_t)c * K + i) * K + j;
                sum += dcol[row * g.NP + b * g.P + (size_t)(ty / s) * g.Wo + tx / s];
            }
        }
        dinp[e] += sum;
    }
}

static void im2col(float *col, const float *inp, const conv_geom *g)
{
    const size_t n = g->CKK * g->NP;
    im2col_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(col, inp, *g, n);
    LAUNCH_CHECK("im2col_kernel");
}

static void gemm_conv_forward(float *out, const float *inp, const float *w,
                              const float *bias, const conv_geom *g,
                              float *scratch)
{
    float *col = scratch;                // (CKK, NP)
    float *outT = scratch + g->NP * g->CKK; // (OC, NP)
    im2col(col, inp, g);
    gemm_rm(0, 0, g->OC, (int)g->NP, (int)g->CKK, 1.0f, w, (int)g->CKK, col,
            (int)g->NP, 0.0f, outT, (int)g->NP);
    const size_t n = g->NP * g->OC;
    pixels_to_nchw_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        out, outT, bias, *g, n);
    LAUNCH_CHECK("pixels_to_nchw_kernel");
}

/* dw and/or dinp (either may be NULL) by im2col + GEMM. */
static void gemm_conv_backward(float *dinp, float *dw, const float *dout,
                               const float *inp, const float *w,
                               const conv_geom *g, float *scratch)
{
    float *col = scratch;                 // (CKK, NP): col, then dcol
    float *doutT = scratch + g->NP * g->CKK; // (OC, NP)
    const size_t n = g->NP * g->OC;
    nchw_to_pixels_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        doutT, dout, *g, n);
    LAUNCH_CHECK("nchw_to_pixels_kernel");
    if (dw) {
        im2col(col, inp, g);
        gemm_rm(0, 1, g->OC, (int)g->CKK, (int)g->NP, 1.0f, doutT, (int)g->NP,
                col, (int)g->NP, 1.0f, dw, (int)g->CKK);
    }
    if (dinp) {
        gemm_rm(1, 0, (int)g->CKK, (int)g->NP, g->OC, 1.0f, w, (int)g->CKK,
                doutT, (int)g->NP, 0.0f, col, (int)g->NP);
        const size_t ni = (size_t)g->B * g->C * g->H * g->W;
        col2im_add_kernel<<<grid_for(ni, THREADS), THREADS, 0, g_cuda.stream>>>(
            dinp, col, *g, ni);
        LAUNCH_CHECK("col2im_add_kernel");
    }
}

/* ------------------------------------------------------------------------
 * cuDNN path
 * ---------------------------------------------------------------------- */

#if REED_CUDNN

enum { DIR_FWD, DIR_BWD_DATA, DIR_BWD_FILTER };

typedef struct conv_descs {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
} conv_descs;

static void descs_free(conv_descs *d)
{
    if (d->x) CUDNN_CHECK(cudnnDestroyTensorDescriptor(d->x));
    if (d->y) CUDNN_CHECK(cudnnDestroyTensorDescriptor(d->y));
    if (d->w) CUDNN_CHECK(cudnnDestroyFilterDescriptor(d->w));
    if (d->conv) CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(d->conv));
}

/* Descriptors of g with the given math type; 0, or -1 when cuDNN refuses
 * them (the caller falls back). */
static int descs_make(conv_descs *d, const conv_geom *g, cudnnMathType_t math)
{
    memset(d, 0, sizeof *d);
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&d->w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d->conv));
    int n = 0, c = 0, h = 0, w = 0;
    if (cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                   g->B, g->C, g->H, g->W) ||
        cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                   g->B, g->OC, g->Ho, g->Wo) ||
        cudnnSetFilter4dDescriptor(d->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                   g->OC, g->C, g->K, g->K) ||
        cudnnSetConvolution2dDescriptor(d->conv, g->pad, g->pad, g->stride,
                                        g->stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                        CUDNN_DATA_FLOAT) ||
        cudnnSetConvolutionMathType(d->conv, math) ||
        cudnnGetConvolution2dForwardOutputDim(d->conv, d->x, d->w, &n, &c, &h, &w))
        return -1;
    // cuDNN must agree with ops.h on the output shape.
    return n == g->B && c == g->OC && h == g->Ho && w == g->Wo ? 0 : -1;
}

/* Algorithms that compute the plain sum of products, as the CPU does (fp32
 * parity mode excludes FFT and Winograd transforms). */
static bool exact_algo(int dir, int algo)
{
    switch (dir) {
    case DIR_FWD:
        return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM ||
               algo == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
    case DIR_BWD_DATA:
        return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 ||
               algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
    default:
        return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 ||
               algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ||
               algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
    }
}

/* One cuDNN heuristic result, whatever the direction. */
typedef struct algo_choice {
    int algo;
    cudnnStatus_t status;
    size_t memory;
    cudnnDeterminism_t determinism;
    cudnnMathType_t math;
} algo_choice;

/* The first usable result in cuDNN's order, deterministic ones first;
 * returns its index or -1. */
static int pick_algo(const algo_choice *r, int n, int dir, size_t ws)
{
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            if (r[i].status != CUDNN_STATUS_SUCCESS || r[i].memory > ws)
                continue;
            // Down-conversion of fp32 data would mean fp16 and its range.
            if (r[i].math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
                continue;
            if (!g_cuda.bf16 && (!exact_algo(dir, r[i].algo) ||
                                 (r[i].math != CUDNN_FMA_MATH &&
                                  r[i].math != CUDNN_DEFAULT_MATH)))
                continue;
            if (pass == 0 && r[i].determinism != CUDNN_DETERMINISTIC)
                continue;
            return i;
        }
    }
    return -1;
}

/* cuDNN's heuristic list for one direction, as algo_choice rows; returns
 * how many (0 when the query fails). */
#define MAX_ALGOS 16
static int query_algos(const conv_descs *d, int dir, algo_choice *out)
{
    int n = 0;
    cudnnStatus_t s;
    if (dir == DIR_FWD) {
        cudnnConvolutionFwdAlgoPerf_t perf[MAX_ALGOS];
        s = cudnnGetConvolutionForwardAlgorithm_v7(g_cuda.cudnn, d->x, d->w, d->conv,
                                                   d->y, MAX_ALGOS, &n, perf);
        for (int i = 0; s == CUDNN_STATUS_SUCCESS && i < n; i++)
            out[i] = {(int)perf[i].algo, perf[i].status, perf[i].memory,
                      perf[i].determinism, perf[i].mathType};
    } else if (dir == DIR_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[MAX_ALGOS];
        s = cudnnGetConvolutionBackwardDataAlgorithm_v7(g_cuda.cudnn, d->w, d->y,
                                                        d->conv, d->x, MAX_ALGOS,
                                                        &n, perf);
        for (int i = 0; s == CUDNN_STATUS_SUCCESS && i < n; i++)
            out[i] = {(int)perf[i].algo, perf[i].status, perf[i].memory,
                      perf[i].determinism, perf[i].mathType};
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[MAX_ALGOS];
        s = cudnnGetConvolutionBackwardFilterAlgorithm_v7(g_cuda.cudnn, d->x, d->y,
                                                          d->conv, d->w, MAX_ALGOS,
                                                          &n, perf);
        for (int i = 0; s == CUDNN_STATUS_SUCCESS && i < n; i++)
            out[i] = {(int)perf[i].algo, perf[i].status, perf[i].memory,
                      perf[i].determinism, perf[i].mathType};
    }
    return s == CUDNN_STATUS_SUCCESS ? n : 0;
}

/* Workspace bytes of `algo` with the descriptors' current math type, or
 * SIZE_MAX when cuDNN refuses. */
static size_t algo_workspace(const conv_descs *d, int dir, int algo)
{
    size_t bytes = 0;
    cudnnStatus_t s;
    if (dir == DIR_FWD)
        s = cudnnGetConvolutionForwardWorkspaceSize(
            g_cuda.cudnn, d->x, d->w, d->conv, d->y, (cudnnConvolutionFwdAlgo_t)algo, &bytes);
    else if (dir == DIR_BWD_DATA)
        s = cudnnGetConvolutionBackwardDataWorkspaceSize(
            g_cuda.cudnn, d->w, d->y, d->conv, d->x, (cudnnConvolutionBwdDataAlgo_t)algo, &bytes);
    else
        s = cudnnGetConvolutionBackwardFilterWorkspaceSize(
            g_cuda.cudnn, d->x, d->y, d->conv, d->w, (cudnnConvolutionBwdFilterAlgo_t)algo, &bytes);
    return s == CUDNN_STATUS_SUCCESS ? bytes : SIZE_MAX;
}

/* The algorithm chosen per (shape, direction, precision): a small cache
 * with round-robin replacement, so the heuristics run once per layer. */
typedef struct algo_entry {
    int key[10];
    int usable; /* 0: cuDNN has nothing for it, use im2col */
    int algo;
    cudnnMathType_t math;
} algo_entry;

#define ALGO_CACHE 32
static algo_entry algo_cache[ALGO_CACHE];
static int algo_cache_used, algo_cache_next;

static algo_entry *cache_find(const int *key)
{
    for (int i = 0; i < algo_cache_used; i++)
        if (!memcmp(algo_cache[i].key, key, sizeof algo_cache[i].key))
            return &algo_cache[i];
    return NULL;
}

static algo_entry *cache_add(const int *key)
{
    algo_entry *e = &algo_cache[algo_cache_next];
    algo_cache_next = (algo_cache_next + 1) % ALGO_CACHE;
    if (algo_cache_used < ALGO_CACHE)
        algo_cache_used++;
    memset(e, 0, sizeof *e);
    memcpy(e->key, key, sizeof e->key);
    return e;
}

/* Descriptors set up for direction `dir`, with the algorithm to run and its
 * workspace fitting ws bytes; -1 when cuDNN cannot do it (descriptors
 * already freed). */
static int cudnn_prepare(conv_descs *d, const conv_geom *g, int dir, size_t ws,
                         int *algo)
{
    const int key[10] = {g->B, g->C, g->H, g->W, g->OC, g->K, g->stride, g->pad,
                         g_cuda.bf16, dir};
    const cudnnMathType_t query_math = g_cuda.bf16 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    if (descs_make(d, g, query_math)) {
        descs_free(d);
        return -1;
    }
    algo_entry *e = cache_find(key);
    if (!e) {
        e = cache_add(key);
        algo_choice r[MAX_ALGOS];
        const int i = pick_algo(r, query_algos(d, dir, r), dir, ws);
        if (i >= 0) {
            e->usable = 1;
            e->algo = r[i].algo;
            e->math = g_cuda.bf16 ? r[i].math : CUDNN_FMA_MATH;
        }
    }
    if (e->usable && (cudnnSetConvolutionMathType(d->conv, e->math) ||
                      algo_workspace(d, dir, e->algo) > ws))
        e->usable = 0;
    if (!e->usable) {
        descs_free(d);
        return -1;
    }
    *algo = e->algo;
    return 0;
}

/* A cuDNN convolution call's status: 0 on success, -1 when cuDNN does not
 * support the case after all (the caller falls back and the shape is not
 * tried again); any other failure is fatal. */
static int cudnn_status(cudnnStatus_t s, const conv_geom *g, int dir,
                        const char *call)
{
    if (s == CUDNN_STATUS_SUCCESS)
        return 0;
    if (s >= CUDNN_STATUS_NOT_SUPPORTED && s < CUDNN_STATUS_INTERNAL_ERROR) {
        const int key[10] = {g->B, g->C, g->H, g->W, g->OC, g->K, g->stride,
                             g->pad, g_cuda.bf16, dir};
        algo_entry *e = cache_find(key);
        if (e)
            e->usable = 0;
        return -1;
    }
    cuda_fatal(call, cudnnGetErrorString(s), __FILE__, __LINE__);
}

/* out = conv(inp, w) (no bias); 0, or -1 to fall back. */
static int cudnn_forward(float *out, const float *inp, const float *w,
                         const conv_geom *g, float *scratch, size_t ws)
{
    conv_descs d;
    int algo;
    if (cudnn_prepare(&d, g, DIR_FWD, ws, &algo))
        return -1;
    const float one = 1.0f, zero = 0.0f;
    cudnnStatus_t s = cudnnConvolutionForward(
        g_cuda.cudnn, &one, d.x, inp, d.w, w, d.conv,
        (cudnnConvolutionFwdAlgo_t)algo, scratch, ws, &zero, d.y, out);
    descs_free(&d);
    return cudnn_status(s, g, DIR_FWD, "cudnnConvolutionForward");
}

/* dinp += ∂L/∂inp; 0, or -1 to fall back. */
static int cudnn_backward_data(float *dinp, const float *dout, const float *w,
                               const conv_geom *g, float *scratch, size_t ws)
{
    conv_descs d;
    int algo;
    if (cudnn_prepare(&d, g, DIR_BWD_DATA, ws, &algo))
        return -1;
    const float one = 1.0f;
    cudnnStatus_t s = cudnnConvolutionBackwardData(
        g_cuda.cudnn, &one, d.w, w, d.y, dout, d.conv,
        (cudnnConvolutionBwdDataAlgo_t)algo, scratch, ws, &one, d.x, dinp);
    descs_free(&d);
    return cudnn_status(s, g, DIR_BWD_DATA, "cudnnConvolutionBackwardData");
}

/* dw += ∂L/∂w; 0, or -1 to fall back. */
static int cudnn_backward_filter(float *dw, const float *dout,
                                 const float *inp, const conv_geom *g,
                                 float *scratch, size_t ws)
{
    conv_descs d;
    int algo;
    if (cudnn_prepare(&d, g, DIR_BWD_FILTER, ws, &algo))
        return -1;
    const float one = 1.0f;
    cudnnStatus_t s = cudnnConvolutionBackwardFilter(
        g_cuda.cudnn, &one, d.x, inp, d.y, dout, d.conv,
        (cudnnConvolutionBwdFilterAlgo_t)algo, scratch, ws, &one, d.w, dw);
    descs_free(&d);
    return cudnn_status(s, g, DIR_BWD_FILTER, "cudnnConvolutionBackwardFilter");
}

#endif /* REED_CUDNN */

/* ------------------------------------------------------------------------
 * The convolution ops
 * ---------------------------------------------------------------------- */

/* Whether the cuDNN path is tried at all. */
static int cudnn_on(void)
{
#if REED_CUDNN
    return g_cuda.use_cudnn;
#else
    return 0;
#endif
}

void cuda_conv2d_forward(float *out, const float *inp, const float *w,
                         const float *bias, int B, int C, int H, int W, int OC,
                         int K, int stride, int pad, float *scratch)
{
    const conv_geom g = conv_geom_make(B, C, H, W, OC, K, stride, pad);
    if (g.NP == 0 || OC <= 0)
        return;
#if REED_CUDNN
    const size_t ws = reed_conv2d_scratch_floats(B, C, H, W, OC, K, stride, pad) *
                      sizeof(float);
    if (cudnn_on()) {
        if (cudnn_forward(out, inp, w, &g, scratch, ws) == 0) {
            if (bias) {
                const size_t n = g.NP * OC;
                add_channel_bias_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
                    out, bias, OC, g.P, n);
                LAUNCH_CHECK("add_channel_bias_kernel");
            }
            return;
        }
        g_cuda.conv_fallbacks++;
    }
#endif
    gemm_conv_forward(out, inp, w, bias, &g, scratch);
}

void cuda_conv2d_backward(float *dinp, float *dw, float *dbias,
                          const float *dout, const float *inp, const float *w,
                          int B, int C, int H, int W, int OC, int K, int stride,
                          int pad, float *scratch)
{
    const conv_geom g = conv_geom_make(B, C, H, W, OC, K, stride, pad);
    if (g.NP == 0 || OC <= 0)
        return;
    if (dbias) {
        conv_dbias_kernel<<<OC, RED_THREADS, 0, g_cuda.stream>>>(dbias, dout, B, OC, g.P);
        LAUNCH_CHECK("conv_dbias_kernel");
    }
#if REED_CUDNN
    const size_t ws = reed_conv2d_scratch_floats(B, C, H, W, OC, K, stride, pad) *
                      sizeof(float);
    if (cudnn_on()) {
        // What cuDNN does is done; the rest falls through to im2col.
        if (dw && cudnn_backward_filter(dw, dout, inp, &g, scratch, ws) == 0)
            dw = NULL;
        if (dinp && cudnn_backward_data(dinp, dout, w, &g, scratch, ws) == 0)
            dinp = NULL;
        if (dw || dinp)
            g_cuda.conv_fallbacks++;
    }
#endif
    if (dw || dinp)
        gemm_conv_backward(dinp, dw, dout, inp, w, &g, scratch);
}

/* ------------------------------------------------------------------------
 * ReLU
 * ---------------------------------------------------------------------- */

__global__ void relu_forward_kernel(float *out, const float *inp, size_t n)
{
    GRID_LOOP(i, n)
        out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

/* dinp += dout·[x > 0] */
__global__ void relu_backward_kernel(float *dinp, const float *dout,
                                     const float *x, size_t n)
{
    GRID_LOOP(i, n)
        dinp[i] += x[i] > 0.0f ? dout[i] : 0.0f;
}

void cuda_relu_forward(float *out, const float *inp, size_t n)
{
    if (!n)
        return;
    relu_forward_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(out, inp, n);
    LAUNCH_CHECK("relu_forward_kernel");
}

void cuda_relu_backward(float *dinp, const float *dout, const float *x,
                        size_t n)
{
    if (!dinp || !n)
        return;
    relu_backward_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        dinp, dout, x, n);
    LAUNCH_CHECK("relu_backward_kernel");
}

/* ------------------------------------------------------------------------
 * Global average pooling (B,C,H,W) → (B,C); one warp per (b, c), double.
 * ---------------------------------------------------------------------- */

__global__ void avgpool_forward_kernel(float *out, const float *inp,
                                       size_t rows, size_t HW)
{
    const size_t row = warp_row();
    if (row >= rows)
        return;
    const float *x = inp + row * HW;
    double acc = 0.0;
    for (size_t i = lane_id(); i < HW; i += 32)
        acc += x[i];
    acc = warp_sum(acc);
    if (lane_id() == 0)
        out[row] = (float)(acc / (double)HW);
}

/* dinp += dout[b, c]·inv, inv = 1/(H·W) */
__global__ void avgpool_backward_kernel(float *dinp, const float *dout,
                                        float inv, size_t HW, size_t n)
{
    GRID_LOOP(i, n)
        dinp[i] += dout[i / HW] * inv;
}

void cuda_avgpool_global_forward(float *out, const float *inp, int B, int C,
                                 int H, int W)
{
    const size_t rows = (size_t)B * C, HW = (size_t)H * W;
    if (!rows)
        return;
    avgpool_forward_kernel<<<grid_rows(rows), ROW_THREADS, 0, g_cuda.stream>>>(
        out, inp, rows, HW);
    LAUNCH_CHECK("avgpool_forward_kernel");
}

void cuda_avgpool_global_backward(float *dinp, const float *dout, int B, int C,
                                  int H, int W)
{
    const size_t HW = (size_t)H * W, n = (size_t)B * C * HW;
    if (!dinp || !n)
        return;
    avgpool_backward_kernel<<<grid_for(n, THREADS), THREADS, 0, g_cuda.stream>>>(
        dinp, dout, 1.0f / (float)HW, HW, n);
    LAUNCH_CHECK("avgpool_backward_kernel");
}

/* ------------------------------------------------------------------------
 * Softmax cross-entropy, mean over the batch. One block: each thread takes
 * rows b ≡ threadIdx.x (mod blockDim.x), in double as the CPU does; the
 * loss sum and the hit count are block sums into red_result[0..1].
 * ---------------------------------------------------------------------- */

__global__ void cross_entropy_kernel(double *result, float *dlogits,
                                     const float *logits, const int *labels,
                                     int B, int K, double s)
{
    double loss = 0.0, hits = 0.0;
    for (int b = threadIdx.x; b < B; b += blockDim.x) {
        const float *z = logits + (size_t)b * K; // (K)
        const int y = labels[b];
        int arg = 0; // the first maximum
        for (int k = 1; k < K; k++)
            if (z[k] > z[arg])
                arg = k;
        const double mx = z[arg];
        double sum = 0.0;
        for (int k = 0; k < K; k++)
            sum += exp((double)z[k] - mx);
        const double lse = mx + log(sum);
        loss += lse - z[y];
        hits += arg == y;
        if (dlogits) {
            float *d = dlogits + (size_t)b * K;
            for (int k = 0; k < K; k++)
                d[k] = (float)(s * (exp((double)z[k] - lse) - (k == y)));
        }
    }
    loss = block_sum(loss);
    hits = block_sum(hits);
    if (threadIdx.x == 0) {
        result[0] = loss;
        result[1] = hits;
    }
}

double cuda_cross_entropy_forward_backward(float *dlogits, int *correct,
                                           const float *logits,
                                           const int *labels, int B, int K,
                                           float scale)
{
    if (B <= 0) {
        if (correct)
            *correct = 0;
        return NAN; // the CPU computes 0/0
    }
    cross_entropy_kernel<<<1, RED_THREADS, 0, g_cuda.stream>>>(
        g_cuda.red_result, dlogits, logits, labels, B, K, (double)scale / B);
    LAUNCH_CHECK("cross_entropy_kernel");
    double r[2];
    CUDA_CHECK(cudaMemcpyAsync(r, g_cuda.red_result, sizeof r,
                               cudaMemcpyDeviceToHost, g_cuda.stream));
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
    if (correct)
        *correct = (int)r[1];
    return r[0] / B;
}
