/* CPU backend: convolution, ReLU, global average pooling, cross-entropy —
 * the ops of the convolutional teacher and evaluator networks.
 *
 * Gradient contract (see ops.h): forward ops overwrite their outputs;
 * backward ops ADD (+=) into every gradient output, and any gradient output
 * may be NULL.
 *
 * Convolution is im2col + one OpenBLAS sgemm over the whole batch. The
 * column matrix is pixel-major: row r = (b, y, x) of col (B·Ho·Wo, C·K·K)
 * lists the receptive field in the order (c, i, j) of a flattened weight
 * row w(OC, C·K·K), so
 *     outT (B·Ho·Wo, OC) = col · wᵀ              (forward)
 *     dw   (OC, C·K·K)  += doutTᵀ · col          (backward)
 *     dcol (B·Ho·Wo, C·K·K) = doutT · w, then col2im into dinp
 * with outT/doutT the pixel-major transposes of out/dout (B, OC, Ho·Wo).
 * One large sgemm uses OpenBLAS's OpenMP pool; the gathers and scatters run
 * in our OpenMP loops over the batch (each sample touches only its own
 * slice of inp/dinp, so col2im needs no atomics).
 */
#include <float.h>
#include <math.h>
#include <stddef.h>

#include <cblas.h>
#include <omp.h>

#include "ops.h"
#include "cpu_internal.h"

/* Minimum work (elements) before a loop opens an OpenMP parallel region. */
#define CONV_OMP_MIN 4096

/* Geometry of one convolution call. */
typedef struct conv_geom {
    int B, C, H, W, OC, K, stride, pad;
    int Ho, Wo;
    size_t P;   /* Ho·Wo pixels per sample */
    size_t CKK; /* C·K·K, one column row */
} conv_geom;

static conv_geom conv_geom_make(int B, int C, int H, int W, int OC, int K,
                                int stride, int pad)
{
    conv_geom g = {B, C, H, W, OC, K, stride, pad, 0, 0, 0, 0};
    g.Ho = reed_conv2d_out_size(H, K, stride, pad);
    g.Wo = reed_conv2d_out_size(W, K, stride, pad);
    g.P = (size_t)g.Ho * g.Wo;
    g.CKK = (size_t)C * K * K;
    return g;
}

/* col (B·P, CKK) from inp (B,C,H,W); zero where the field hits padding. */
static void im2col(float *restrict col, const float *restrict inp,
                   const conv_geom *g)
{
    const int K = g->K;
#pragma omp parallel for if ((size_t)g->B * g->P * g->CKK >= CONV_OMP_MIN)
    for (int b = 0; b < g->B; b++) {
        const float *x = inp + (size_t)b * g->C * g->H * g->W; // (C,H,W)
        for (int oy = 0; oy < g->Ho; oy++) {
            for (int ox = 0; ox < g->Wo; ox++) {
                float *row = col + ((size_t)b * g->P + (size_t)oy * g->Wo + ox) * g->CKK;
                const int y0 = oy * g->stride - g->pad, x0 = ox * g->stride - g->pad;
                for (int c = 0; c < g->C; c++) {
                    const float *xc = x + (size_t)c * g->H * g->W;
                    for (int i = 0; i < K; i++) {
                        const int iy = y0 + i;
                        float *r = row + ((size_t)c * K + i) * K; // (K)
                        if (iy < 0 || iy >= g->H) {
                            for (int j = 0; j < K; j++)
                                r[j] = 0.0f;
                            continue;
                        }
                        const float *xr = xc + (size_t)iy * g->W;
                        for (int j = 0; j < K; j++) {
                            const int ix = x0 + j;
                            r[j] = (ix >= 0 && ix < g->W) ? xr[ix] : 0.0f;
                        }
                    }
                }
            }
        }
    }
}

/* dinp (B,C,H,W) += the scatter of dcol (B·P, CKK); the adjoint of im2col. */
static void col2im_add(float *restrict dinp, const float *restrict dcol,
                       const conv_geom *g)
{
    const int K = g->K;
#pragma omp parallel for if ((size_t)g->B * g->P * g->CKK >= CONV_OMP_MIN)
    for (int b = 0; b < g->B; b++) {
        float *dx = dinp + (size_t)b * g->C * g->H * g->W; // (C,H,W)
        for (int oy = 0; oy < g->Ho; oy++) {
            for (int ox = 0; ox < g->Wo; ox++) {
                const float *row = dcol + ((size_t)b * g->P + (size_t)oy * g->Wo + ox) * g->CKK;
                const int y0 = oy * g->stride - g->pad, x0 = ox * g->stride - g->pad;
                for (int c = 0; c < g->C; c++) {
                    float *dc = dx + (size_t)c * g->H * g->W;
                    for (int i = 0; i < K; i++) {
                        const int iy = y0 + i;
                        if (iy < 0 || iy >= g->H)
                            continue;
                        const float *r = row + ((size_t)c * K + i) * K; // (K)
                        float *dr = dc + (size_t)iy * g->W;
                        for (int j = 0; j < K; j++) {
                            const int ix = x0 + j;
                            if (ix >= 0 && ix < g->W)
                                dr[ix] += r[j];
                        }
                    }
                }
            }
        }
    }
}

void cpu_conv2d_forward(float *out, const float *inp, const float *w,
                        const float *bias, int B, int C, int H, int W, int OC,
                        int K, int stride, int pad, float *scratch)
{
    const conv_geom g = conv_geom_make(B, C, H, W, OC, K, stride, pad);
    const size_t N = (size_t)B * g.P;
    float *col = scratch;            // (N, CKK)
    float *outT = scratch + N * g.CKK; // (N, OC)
    im2col(col, inp, &g);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, OC, (int)g.CKK,
                1.0f, col, (int)g.CKK, w, (int)g.CKK, 0.0f, outT, OC);
    // out(B,OC,P) = transpose of outT per sample, plus the bias.
#pragma omp parallel for collapse(2) if (N * OC >= CONV_OMP_MIN)
    for (int b = 0; b < B; b++) {
        for (int o = 0; o < OC; o++) {
            const float bo = bias ? bias[o] : 0.0f;
            const float *src = outT + (size_t)b * g.P * OC + o;
            float *dst = out + ((size_t)b * OC + o) * g.P;
            for (size_t p = 0; p < g.P; p++)
                dst[p] = src[p * OC] + bo;
        }
    }
}

void cpu_conv2d_backward(float *dinp, float *dw, float *dbias,
                         const float *dout, const float *inp, const float *w,
                         int B, int C, int H, int W, int OC, int K, int stride,
                         int pad, float *scratch)
{
    const conv_geom g = conv_geom_make(B, C, H, W, OC, K, stride, pad);
    const size_t N = (size_t)B * g.P;
    float *col = scratch;              // (N, CKK): col, then dcol
    float *doutT = scratch + N * g.CKK; // (N, OC)
    if (dbias) {
#pragma omp parallel for if (N * OC >= CONV_OMP_MIN)
        for (int o = 0; o < OC; o++) {
            double acc = 0.0;
            for (int b = 0; b < B; b++) {
                const float *d = dout + ((size_t)b * OC + o) * g.P;
                for (size_t p = 0; p < g.P; p++)
                    acc += d[p];
            }
            dbias[o] += (float)acc;
        }
    }
    if (!dw && !dinp)
        return;
#pragma omp parallel for collapse(2) if (N * OC >= CONV_OMP_MIN)
    for (int b = 0; b < B; b++) {
        for (int o = 0; o < OC; o++) {
            const float *src = dout + ((size_t)b * OC + o) * g.P;
            float *dst = doutT + (size_t)b * g.P * OC + o;
            for (size_t p = 0; p < g.P; p++)
                dst[p * OC] = src[p];
        }
    }
    if (dw) {
        im2col(col, inp, &g);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, (int)g.CKK,
                    (int)N, 1.0f, doutT, OC, col, (int)g.CKK, 1.0f, dw,
                    (int)g.CKK);
    }
    if (dinp) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N,
                    (int)g.CKK, OC, 1.0f, doutT, OC, w, (int)g.CKK, 0.0f, col,
                    (int)g.CKK);
        col2im_add(dinp, col, &g);
    }
}

/* ------------------------------------------------------------------------
 * ReLU
 * ---------------------------------------------------------------------- */

void cpu_relu_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel for simd if (n >= CONV_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void cpu_relu_backward(float *restrict dinp, const float *restrict dout,
                       const float *restrict x, size_t n)
{
    if (!dinp)
        return;
#pragma omp parallel for simd if (n >= CONV_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        dinp[i] += x[i] > 0.0f ? dout[i] : 0.0f;
}

/* ------------------------------------------------------------------------
 * Global average pooling (B,C,H,W) → (B,C)
 * ---------------------------------------------------------------------- */

void cpu_avgpool_global_forward(float *restrict out, const float *restrict inp,
                                int B, int C, int H, int W)
{
    const size_t HW = (size_t)H * W;
#pragma omp parallel for if ((size_t)B * C * HW >= CONV_OMP_MIN)
    for (int bc = 0; bc < B * C; bc++) {
        const float *x = inp + (size_t)bc * HW;
        double acc = 0.0;
        for (size_t i = 0; i < HW; i++)
            acc += x[i];
        out[bc] = (float)(acc / (double)HW);
    }
}

void cpu_avgpool_global_backward(float *restrict dinp,
                                 const float *restrict dout, int B, int C,
                                 int H, int W)
{
    if (!dinp)
        return;
    const size_t HW = (size_t)H * W;
    const float inv = 1.0f / (float)HW;
#pragma omp parallel for if ((size_t)B * C * HW >= CONV_OMP_MIN)
    for (int bc = 0; bc < B * C; bc++) {
        float *d = dinp + (size_t)bc * HW;
        const float g = dout[bc] * inv;
        for (size_t i = 0; i < HW; i++)
            d[i] += g;
    }
}

/* ------------------------------------------------------------------------
 * Softmax cross-entropy, mean over the batch
 * ---------------------------------------------------------------------- */

double cpu_cross_entropy_forward_backward(float *dlogits, int *correct,
                                          const float *logits,
                                          const int *labels, int B, int K,
                                          float scale)
{
    double loss = 0.0;
    int hits = 0;
#pragma omp parallel for reduction(+ : loss, hits) if ((size_t)B * K >= CONV_OMP_MIN)
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * K; // (K)
        int arg = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > z[arg])
                arg = k;
        const double mx = z[arg];
        double sum = 0.0;
        for (int k = 0; k < K; k++)
            sum += exp((double)z[k] - mx);
        const double lse = mx + log(sum);
        loss += lse - z[labels[b]];
        hits += arg == labels[b];
        if (dlogits) {
            float *d = dlogits + (size_t)b * K;
            const double s = (double)scale / B;
            for (int k = 0; k < K; k++)
                d[k] = (float)(s * (exp((double)z[k] - lse) - (k == labels[b])));
        }
    }
    if (correct)
        *correct = hits;
    return loss / B;
}
