/* CPU backend: convolution, ReLU, global average pooling, cross-entropy —
 * the ops of the convolutional teacher and evaluator networks.
 *
 * Gradient contract (see ops.h): forward ops overwrite their outputs;
 * backward ops ADD (+=) into every gradient output, and any gradient output
 * may be NULL.
 *
 * Convolution is im2col + one OpenBLAS sgemm over the whole batch. The
 * column matrix col (C·K·K, B·Ho·Wo) has one row per weight column (c, i, j)
 * of the flattened w (OC, C·K·K) and one column per output pixel (b, y, x):
 *     outT (OC, B·Ho·Wo) = w · col                 (forward)
 *     dw   (OC, C·K·K)  += doutT · colᵀ            (backward)
 *     dcol (C·K·K, B·Ho·Wo) = wᵀ · doutT, then col2im into dinp
 * outT/doutT differ from out/dout (B, OC, Ho·Wo) only in the order of the
 * two outer dimensions, so converting is a copy of contiguous rows. The
 * large sgemms use OpenBLAS's OpenMP pool; im2col/col2im run in our OpenMP
 * loops over (sample, channel) — each touches only its own input plane, so
 * col2im needs no atomics.
 */
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

/* col (CKK, B·P) from inp (B,C,H,W); zero where the field hits padding. */
static void im2col(float *restrict col, const float *restrict inp,
                   const conv_geom *g)
{
    const int K = g->K, s = g->stride;
    const size_t NP = (size_t)g->B * g->P;
#pragma omp parallel for collapse(2) if (NP * g->CKK >= CONV_OMP_MIN)
    for (int b = 0; b < g->B; b++) {
        for (int c = 0; c < g->C; c++) {
            const float *xc = inp + ((size_t)b * g->C + c) * g->H * g->W; // (H,W)
            for (int i = 0; i < K; i++) {
                for (int j = 0; j < K; j++) {
                    float *dst = col + (((size_t)c * K + i) * K + j) * NP + (size_t)b * g->P;
                    for (int oy = 0; oy < g->Ho; oy++) {
                        float *d = dst + (size_t)oy * g->Wo; // (Wo)
                        const int iy = oy * s - g->pad + i;
                        if (iy < 0 || iy >= g->H) {
                            for (int ox = 0; ox < g->Wo; ox++)
                                d[ox] = 0.0f;
                            continue;
                        }
                        const float *xr = xc + (size_t)iy * g->W;
                        for (int ox = 0; ox < g->Wo; ox++) {
                            const int ix = ox * s - g->pad + j;
                            d[ox] = (ix >= 0 && ix < g->W) ? xr[ix] : 0.0f;
                        }
                    }
                }
            }
        }
    }
}

/* dinp (B,C,H,W) += the scatter of dcol (CKK, B·P); the adjoint of im2col. */
static void col2im_add(float *restrict dinp, const float *restrict dcol,
                       const conv_geom *g)
{
    const int K = g->K, s = g->stride;
    const size_t NP = (size_t)g->B * g->P;
#pragma omp parallel for collapse(2) if (NP * g->CKK >= CONV_OMP_MIN)
    for (int b = 0; b < g->B; b++) {
        for (int c = 0; c < g->C; c++) {
            float *dc = dinp + ((size_t)b * g->C + c) * g->H * g->W; // (H,W)
            for (int i = 0; i < K; i++) {
                for (int j = 0; j < K; j++) {
                    const float *src = dcol + (((size_t)c * K + i) * K + j) * NP + (size_t)b * g->P;
                    for (int oy = 0; oy < g->Ho; oy++) {
                        const int iy = oy * s - g->pad + i;
                        if (iy < 0 || iy >= g->H)
                            continue;
                        const float *r = src + (size_t)oy * g->Wo; // (Wo)
                        float *dr = dc + (size_t)iy * g->W;
                        for (int ox = 0; ox < g->Wo; ox++) {
                            const int ix = ox * s - g->pad + j;
                            if (ix >= 0 && ix < g->W)
                                dr[ix] += r[ox];
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
    const size_t NP = (size_t)B * g.P;
    float *col = scratch;              // (CKK, NP)
    float *outT = scratch + NP * g.CKK; // (OC, NP)
    im2col(col, inp, &g);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, (int)NP,
                (int)g.CKK, 1.0f, w, (int)g.CKK, col, (int)NP, 0.0f, outT,
                (int)NP);
    // out(b, o, :) = outT(o, b·P : (b+1)·P) + bias(o)
#pragma omp parallel for collapse(2) if (NP * OC >= CONV_OMP_MIN)
    for (int b = 0; b < B; b++) {
        for (int o = 0; o < OC; o++) {
            const float bo = bias ? bias[o] : 0.0f;
            const float *src = outT + (size_t)o * NP + (size_t)b * g.P;
            float *dst = out + ((size_t)b * OC + o) * g.P;
            for (size_t p = 0; p < g.P; p++)
                dst[p] = src[p] + bo;
        }
    }
}

void cpu_conv2d_backward(float *dinp, float *dw, float *dbias,
                         const float *dout, const float *inp, const float *w,
                         int B, int C, int H, int W, int OC, int K, int stride,
                         int pad, float *scratch)
{
    const conv_geom g = conv_geom_make(B, C, H, W, OC, K, stride, pad);
    const size_t NP = (size_t)B * g.P;
    float *col = scratch;               // (CKK, NP): col, then dcol
    float *doutT = scratch + NP * g.CKK; // (OC, NP)
    if (dbias) {
#pragma omp parallel for if (NP * OC >= CONV_OMP_MIN)
        for (int o = 0; o < OC; o++) {
            double acc = 0.0;
            for (int b = 0; b < B; b++) {
                const float *d = dout + ((size_t)b * OC + o) * g.P;
                float part = 0.0f;
                for (size_t p = 0; p < g.P; p++)
                    part += d[p];
                acc += part;
            }
            dbias[o] += (float)acc;
        }
    }
    if (!dw && !dinp)
        return;
#pragma omp parallel for collapse(2) if (NP * OC >= CONV_OMP_MIN)
    for (int b = 0; b < B; b++) {
        for (int o = 0; o < OC; o++) {
            const float *src = dout + ((size_t)b * OC + o) * g.P;
            float *dst = doutT + (size_t)o * NP + (size_t)b * g.P;
            for (size_t p = 0; p < g.P; p++)
                dst[p] = src[p];
        }
    }
    if (dw) {
        im2col(col, inp, &g);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, (int)g.CKK,
                    (int)NP, 1.0f, doutT, (int)NP, col, (int)NP, 1.0f, dw,
                    (int)g.CKK);
    }
    if (dinp) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g.CKK,
                    (int)NP, OC, 1.0f, w, (int)g.CKK, doutT, (int)NP, 0.0f, col,
                    (int)NP);
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
