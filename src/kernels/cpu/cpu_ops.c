/* CPU backend: OpenBLAS sgemm for every matmul, OpenMP loops for the rest.
 *
 * This is the reference backend; every other backend is checked against it.
 *
 * Gradient contract (see ops.h): forward ops overwrite their outputs;
 * backward ops ADD (+=) into every gradient output, and any gradient output
 * may be NULL when the caller does not need it.
 *
 * Threading: we link the OpenMP build of OpenBLAS, so an sgemm called outside
 * an `omp parallel` region uses the OpenMP pool, and one called inside a
 * region runs single-threaded in the calling thread. Attention exploits this:
 * it parallelises over (batch, head) and runs one small sgemm per thread.
 * Loops smaller than REED_OMP_MIN elements run serially (a parallel region
 * costs more than it saves there).
 *
 * Aliasing: `restrict` is only used where the contract forbids aliasing.
 * Elementwise forward ops (add, axpby, silu, modulate, gated_add) may be
 * called in place, so they do not use it; the compiler still vectorises them
 * behind a runtime overlap check.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "ops.h"
#include "philox.h"
#include "cpu_internal.h"

/* Minimum work (elements) before a loop opens an OpenMP parallel region. */
#define REED_OMP_MIN 4096
/* Channel block width for column reductions (dbias, dshift, ...). */
#define REED_CBLOCK 64

static int min_int(int a, int b) { return a < b ? a : b; }

/* ------------------------------------------------------------------------
 * Threads
 * ---------------------------------------------------------------------- */

void reed_cpu_set_threads(int n)
{
    if (n <= 0)
        n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int reed_cpu_threads(void) { return omp_get_max_threads(); }

/* ------------------------------------------------------------------------
 * Linear: out(N,OC) = inp(N,C) · w(OC,C)ᵀ + bias(OC)
 * ---------------------------------------------------------------------- */

static void cpu_linear_forward(float *restrict out, const float *restrict inp,
                               const float *restrict w,
                               const float *restrict bias, int N, int C,
                               int OC)
{
    // Seed out with the bias (or let beta = 0 ignore its old contents).
    float beta = 0.0f;
    if (bias) {
        beta = 1.0f;
#pragma omp parallel for if ((size_t)N * OC >= REED_OMP_MIN)
        for (int n = 0; n < N; n++) {
            float *o = out + (size_t)n * OC; // (OC)
            for (int j = 0; j < OC; j++)
                o[j] = bias[j];
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp,
                C, w, C, beta, out, OC);
}

/* dbias(OC) += Σ_n dout(N,OC), in channel blocks so the inner loop over a
 * block is contiguous and vectorises; accumulated in double. */
static void dbias_reduce(float *restrict dbias, const float *restrict dout,
                         int N, int OC)
{
    int nblocks = (OC + REED_CBLOCK - 1) / REED_CBLOCK;
#pragma omp parallel for if ((size_t)N * OC >= REED_OMP_MIN)
    for (int blk = 0; blk < nblocks; blk++) {
        int j0 = blk * REED_CBLOCK, j1 = min_int(OC, j0 + REED_CBLOCK);
        double acc[REED_CBLOCK] = {0};
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OC;
            for (int j = j0; j < j1; j++)
                acc[j - j0] += d[j];
        }
        for (int j = j0; j < j1; j++)
            dbias[j] += (float)acc[j - j0];
    }
}

static void cpu_linear_backward(float *restrict dinp, float *restrict dw,
                                float *restrict dbias,
                                const float *restrict dout,
                                const float *restrict inp,
                                const float *restrict w, int N, int C, int OC)
{
    // dinp(N,C) += dout(N,OC) · w(OC,C)
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f,
                    dout, OC, w, C, 1.0f, dinp, C);
    // dw(OC,C) += dout(N,OC)ᵀ · inp(N,C)
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f,
                    dout, OC, inp, C, 1.0f, dw, C);
    if (dbias)
        dbias_reduce(dbias, dout, N, OC);
}

/* ------------------------------------------------------------------------
 * LayerNorm (no affine): out = (x - mean)·rstd, rstd = 1/sqrt(var + eps)
 * ---------------------------------------------------------------------- */

/* The mean and rstd of one row x (C). The moments are summed in double: a
 * float sum loses the mean's low bits when |mean| ≫ std. Two-pass (biased)
 * variance Σ (x - m)² / C. */
static void row_moments(const float *restrict x, int C, float eps,
                        float *mean, float *rstd)
{
    double sum = 0.0, var = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < C; i++)
        sum += x[i];
    const double md = sum / C;
#pragma omp simd reduction(+ : var)
    for (int i = 0; i < C; i++)
        var += (x[i] - md) * (x[i] - md);
    *mean = (float)md;
    *rstd = (float)(1.0 / sqrt(var / C + eps));
}

static void cpu_layernorm_forward(float *restrict out, float *restrict mean,
                                  float *restrict rstd,
                                  const float *restrict inp, int N, int C,
                                  float eps)
{
#pragma omp parallel for if ((size_t)N * C >= REED_OMP_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C; // (C)
        float *o = out + (size_t)n * C;
        float m, s;
        row_moments(x, C, eps, &m, &s);
        for (int i = 0; i < C; i++)
            o[i] = (x[i] - m) * s;
        mean[n] = m;
        rstd[n] = s;
    }
}

/* The gradient reaching x̂: dout, or dout·(1 + sc) behind a modulate. */
static inline float ln_grad_in(const float *restrict dout,
                               const float *restrict sc, int i)
{
    return sc ? dout[i] * (1.0f + sc[i]) : dout[i];
}

/* One row of the LayerNorm backward pass. With xhat = (x - m)·s and g the
 * gradient reaching xhat (ln_grad_in; sc NULL for a plain LayerNorm):
 * dx += s · (g - mean(g) - xhat · mean(g·xhat)). */
static inline void ln_backward_row(float *restrict dx,
                                   const float *restrict dout,
                                   const float *restrict x,
                                   const float *restrict sc, float m,
                                   float s, int C)
{
    float gsum = 0.0f, gxsum = 0.0f;
#pragma omp simd reduction(+ : gsum, gxsum)
    for (int i = 0; i < C; i++) {
        float g = ln_grad_in(dout, sc, i);
        gsum += g;
        gxsum += g * (x[i] - m) * s;
    }
    float gmean = gsum / C, gxmean = gxsum / C;
    for (int i = 0; i < C; i++) {
        float xhat = (x[i] - m) * s;
        dx[i] += s * (ln_grad_in(dout, sc, i) - gmean - xhat * gxmean);
    }
}

static void cpu_layernorm_backward(float *restrict dinp,
                                   const float *restrict dout,
                                   const float *restrict inp,
                                   const float *restrict mean,
                                   const float *restrict rstd, int N, int C)
{
    if (!dinp)
        return;
#pragma omp parallel for if ((size_t)N * C >= REED_OMP_MIN)
    for (int n = 0; n < N; n++) {
        size_t row = (size_t)n * C;
        ln_backward_row(dinp + row, dout + row, inp + row, NULL, mean[n],
                        rstd[n], C);
    }
}

/* ------------------------------------------------------------------------
 * adaLN modulate: out(B,T,C) = x·(1 + scale[b]) + shift[b]
 * ---------------------------------------------------------------------- */

static void cpu_modulate_forward(float *out, const float *x,
                                 const float *shift, const float *scale,
                                 int ldm, int B, int T, int C)
{
#pragma omp parallel for if ((size_t)B * T * C >= REED_OMP_MIN)
    for (int bt = 0; bt < B * T; bt++) {
        const float *sh = shift + (size_t)(bt / T) * ldm; // (C)
        const float *sc = scale + (size_t)(bt / T) * ldm; // (C)
        const float *xr = x + (size_t)bt * C;
        float *o = out + (size_t)bt * C;
        for (int c = 0; c < C; c++)
            o[c] = xr[c] * (1.0f + sc[c]) + sh[c];
    }
}

/* dshift[b] += Σ_t dout; dscale[b] += Σ_t dout·xhat, tiled over (b,
 * channel block) so each tile is owned by one thread. xhat = x, or, with
 * mean and rstd (a fused LayerNorm in front), xhat = (x - mean)·rstd per
 * row, the forward pass's float value. */
static void modulate_reduce(float *dshift, float *dscale,
                            const float *restrict dout,
                            const float *restrict x,
                            const float *restrict mean,
                            const float *restrict rstd, int ldm, int B, int T,
                            int C)
{
    int nblocks = (C + REED_CBLOCK - 1) / REED_CBLOCK;
#pragma omp parallel for collapse(2) if ((size_t)B * T * C >= REED_OMP_MIN)
    for (int b = 0; b < B; b++) {
        for (int blk = 0; blk < nblocks; blk++) {
            int c0 = blk * REED_CBLOCK, c1 = min_int(C, c0 + REED_CBLOCK);
            float ash[REED_CBLOCK] = {0}, asc[REED_CBLOCK] = {0};
            for (int t = 0; t < T; t++) {
                size_t n = (size_t)b * T + t, row = n * C;
                // m = 0, s = 1 leave x exactly as it is
                float m = mean ? mean[n] : 0.0f, s = mean ? rstd[n] : 1.0f;
                for (int c = c0; c < c1; c++) {
                    ash[c - c0] += dout[row + c];
                    asc[c - c0] += dout[row + c] * ((x[row + c] - m) * s);
                }
            }
            for (int c = c0; c < c1; c++) {
                if (dshift)
                    dshift[(size_t)b * ldm + c] += ash[c - c0];
                if (dscale)
                    dscale[(size_t)b * ldm + c] += asc[c - c0];
            }
        }
    }
}

static void cpu_modulate_backward(float *dx, float *dshift, float *dscale,
                                  const float *dout, const float *x,
                                  const float *scale, int ldm, int B, int T,
                                  int C)
{
    // dx += dout·(1 + scale[b])
    if (dx) {
#pragma omp parallel for if ((size_t)B * T * C >= REED_OMP_MIN)
        for (int bt = 0; bt < B * T; bt++) {
            const float *sc = scale + (size_t)(bt / T) * ldm; // (C)
            const float *g = dout + (size_t)bt * C;
            float *d = dx + (size_t)bt * C;
            for (int c = 0; c < C; c++)
                d[c] += g[c] * (1.0f + sc[c]);
        }
    }
    if (dshift || dscale)
        modulate_reduce(dshift, dscale, dout, x, NULL, NULL, ldm, B, T, C);
}

/* ------------------------------------------------------------------------
 * LayerNorm + modulate fused: out = xhat·(1 + scale[b]) + shift[b] with
 * xhat = (x - mean)·rstd, in one pass over each row. The float expressions
 * are those of the two ops, so the results match their composition.
 * ---------------------------------------------------------------------- */

static void cpu_ln_modulate_forward(float *restrict out, float *restrict mean,
                                    float *restrict rstd,
                                    const float *restrict inp,
                                    const float *shift, const float *scale,
                                    int ldm, int B, int T, int C, float eps)
{
#pragma omp parallel for if ((size_t)B * T * C >= REED_OMP_MIN)
    for (int bt = 0; bt < B * T; bt++) {
        const float *sh = shift + (size_t)(bt / T) * ldm; // (C)
        const float *sc = scale + (size_t)(bt / T) * ldm; // (C)
        const float *x = inp + (size_t)bt * C;
        float *o = out + (size_t)bt * C;
        float m, s;
        row_moments(x, C, eps, &m, &s);
        for (int c = 0; c < C; c++)
            o[c] = ((x[c] - m) * s) * (1.0f + sc[c]) + sh[c];
        mean[bt] = m;
        rstd[bt] = s;
    }
}

static void cpu_ln_modulate_backward(float *dinp, float *dshift, float *dscale,
                                     const float *dout, const float *inp,
                                     const float *mean, const float *rstd,
                                     const float *scale, int ldm, int B, int T,
                                     int C)
{
    // dinp += LayerNorm backward of dout·(1 + scale[b])
    if (dinp) {
#pragma omp parallel for if ((size_t)B * T * C >= REED_OMP_MIN)
        for (int bt = 0; bt < B * T; bt++) {
            size_t row = (size_t)bt * C;
            ln_backward_row(dinp + row, dout + row, inp + row,
                            scale + (size_t)(bt / T) * ldm, mean[bt],
                            rstd[bt], C);
        }
    }
    if (dshift || dscale)
        modulate_reduce(dshift, dscale, dout, inp, mean, rstd, ldm, B, T, C);
}

/* ------------------------------------------------------------------------
 * Gated residual: x(B,T,C) += gate[b]·y
 * ---------------------------------------------------------------------- */

static void cpu_gated_add_forward(float *x, const float *y, const float *gate,
                                  int ldm, int B, int T, int C)
{
#pragma omp parallel for if ((size_t)B * T * C >= REED_OMP_MIN)
    for (int bt = 0; bt < B * T; bt++) {
        const float *g = gate + (size_t)(bt / T) * ldm; // (C)
        const float *yr = y + (size_t)bt * C;
        float *xr = x + (size_t)bt * C;
        for (int c = 0; c < C; c++)
            xr[c] += g[c] * yr[c];
    }
}

/* dgate[b] += Σ_t dx·y, tiled over (b, channel block). */
static void gate_reduce(float *restrict dgate, const float *restrict dx,
                        const float *restrict y, int ldm, int B, int T, int C)
{
    int nblocks = (C + REED_CBLOCK - 1) / REED_CBLOCK;
#pragma omp parallel for collapse(2) if ((size_t)B * T * C >= REED_OMP_MIN)
    for (int b = 0; b < B; b++) {
        for (int blk = 0; blk < nblocks; blk++) {
            int c0 = blk * REED_CBLOCK, c1 = min_int(C, c0 + REED_CBLOCK);
            float acc[REED_CBLOCK] = {0};
            for (int t = 0; t < T; t++) {
                size_t row = ((size_t)b * T + t) * C;
                for (int c = c0; c < c1; c++)
                    acc[c - c0] += dx[row + c] * y[row + c];
            }
            for (int c = c0; c < c1; c++)
                dgate[(size_t)b * ldm + c] += acc[c - c0];
        }
    }
}

static void cpu_gated_add_backward(float *dy, float *dgate, const float *dx,
                                   const float *y, const float *gate, int ldm,
                                   int B, int T, int C)
{
    // dy += gate[b]·dx
    if (dy) {
#pragma omp parallel for if ((size_t)B * T * C >= REED_OMP_MIN)
        for (int bt = 0; bt < B * T; bt++) {
            const float *g = gate + (size_t)(bt / T) * ldm; // (C)
            const float *d = dx + (size_t)bt * C;
            float *o = dy + (size_t)bt * C;
            for (int c = 0; c < C; c++)
                o[c] += g[c] * d[c];
        }
    }
    if (dgate)
        gate_reduce(dgate, dx, y, ldm, B, T, C);
}

/* ------------------------------------------------------------------------
 * GELU (tanh approximation, as PyTorch approximate="tanh") and SiLU
 * ---------------------------------------------------------------------- */

/* e^x without libm, so that the loops below vectorise: Cody–Waite
 * reduction x = k·ln2 + r (|r| ≤ ln2/2) and Cephes' degree-6 polynomial
 * (relative error ~1e-7), then 2^k built in the exponent bits. x is clamped
 * to [-87.3, 88.3] so that 2^k stays a normal float. */
static inline float exp_approx(float x)
{
    x = x < -87.3f ? -87.3f : x > 88.3f ? 88.3f : x;
    float k = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } two_k = {.i = ((int32_t)k + 127) << 23};
    return p * two_k.f;
}

/* tanh u = 1 − 2/(e^{2u} + 1) */
static inline float tanh_approx(float u)
{
    return 1.0f - 2.0f / (exp_approx(2.0f * u) + 1.0f);
}

#define GELU_K 0.7978845608028654f /* sqrt(2/π) */
#define GELU_A 0.044715f

/* gelu(x) = 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³) */
static void cpu_gelu_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel for simd if (n >= REED_OMP_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + GELU_A * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanh_approx(u));
    }
}

/* gelu'(x) = 0.5·(1 + tanh u) + 0.5·x·(1 - tanh² u)·√(2/π)·(1 + 3·0.044715·x²) */
static inline float gelu_slope(float x)
{
    float u = GELU_K * (x + GELU_A * x * x * x);
    float th = tanh_approx(u);
    float du = GELU_K * (1.0f + 3.0f * GELU_A * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
}

static void cpu_gelu_backward(float *restrict dinp, const float *restrict dout,
                              const float *restrict inp, size_t n)
{
    if (!dinp)
        return;
#pragma omp parallel for simd if (n >= REED_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        dinp[i] += gelu_slope(inp[i]) * dout[i];
}

/* The MLP's pairs of ops, one after the other (ops.h): no fusion to gain
 * on the CPU beyond the backward's dpre, which holds dout·w before it is
 * scaled in place (no buffer in between). */
static void cpu_linear_gelu_forward(float *out, float *pre, const float *inp,
                                    const float *w, const float *bias, int N,
                                    int C, int OC)
{
    cpu_linear_forward(pre, inp, w, bias, N, C, OC);
    cpu_gelu_forward(out, pre, (size_t)N * OC);
}

static void cpu_linear_gelu_backward(float *restrict dpre, float *dw,
                                     float *dbias, const float *dout,
                                     const float *act,
                                     const float *restrict pre,
                                     const float *w, int N, int C, int OC)
{
    if (dpre) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f,
                    dout, OC, w, C, 0.0f, dpre, C);
        const size_t n = (size_t)N * C;
#pragma omp parallel for simd if (n >= REED_OMP_MIN)
        for (size_t i = 0; i < n; i++)
            dpre[i] *= gelu_slope(pre[i]);
    }
    cpu_linear_backward(NULL, dw, dbias, dout, act, w, N, C, OC);
}

/* silu(x) = x·σ(x); out may alias inp (each element reads before writing). */
static void cpu_silu_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel for simd if (n >= REED_OMP_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = x / (1.0f + exp_approx(-x));
    }
}

/* silu'(x) = σ(x)·(1 + x·(1 - σ(x))) */
static void cpu_silu_backward(float *restrict dinp, const float *restrict dout,
                              const float *restrict inp, size_t n)
{
    if (!dinp)
        return;
#pragma omp parallel for simd if (n >= REED_OMP_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float s = 1.0f / (1.0f + exp_approx(-x));
        dinp[i] += dout[i] * s * (1.0f + x * (1.0f - s));
    }
}

/* ------------------------------------------------------------------------
 * Attention. For batch b and head h, with C3 = 3C and hs = C/NH:
 *   q = qkv + b·T·C3 + h·hs    (T, hs), leading dim C3
 *   k = q + C, v = q + 2C      (T, hs), leading dim C3
 *   o = out + b·T·C + h·hs     (T, hs), leading dim C
 *   P = att + (b·NH + h)·T·T   (T, T)
 * ---------------------------------------------------------------------- */

/* In-place numerically stable softmax over each of the T rows of S (T,T). */
static void softmax_rows(float *restrict S, int T)
{
    for (int i = 0; i < T; i++) {
        float *row = S + (size_t)i * T;
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int j = 1; j < T; j++)
            mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < T; j++) {
            row[j] = exp_approx(row[j] - mx);
            sum += row[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < T; j++)
            row[j] *= inv;
    }
}

static void cpu_attention_forward(float *out, float *att, const float *qkv,
                                  int B, int T, int C, int NH)
{
    const int C3 = 3 * C, hs = C / NH;
    const float sc = 1.0f / sqrtf((float)hs);
    // One (b, h) per iteration; each thread's sgemm runs single-threaded.
#pragma omp parallel for if (B * NH > 1)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs; // (T,hs)
        const float *k = q + C;
        const float *v = q + 2 * C;
        float *P = att + (size_t)bh * T * T; // (T,T)
        float *o = out + (size_t)b * T * C + (size_t)h * hs; // (T,hs)
        // S = q·kᵀ / sqrt(hs)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, sc, q,
                    C3, k, C3, 0.0f, P, T);
        softmax_rows(P, T);
        // o = P·v
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f,
                    P, T, v, C3, 0.0f, o, C);
    }
}

/* Softmax backward in place: dS = P∘(dP − rowsum(dP∘P)), D (T,T) holds dP
 * on entry and dS on exit. */
static void softmax_rows_backward(float *restrict D, const float *restrict P,
                                  int T)
{
    for (int i = 0; i < T; i++) {
        float *d = D + (size_t)i * T;
        const float *p = P + (size_t)i * T;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < T; j++)
            dot += d[j] * p[j];
        for (int j = 0; j < T; j++)
            d[j] = p[j] * (d[j] - dot);
    }
}

static void cpu_attention_backward(float *dqkv, float *scratch,
                                   const float *dout, const float *qkv,
                                   const float *att, int B, int T, int C,
                                   int NH)
{
    if (!dqkv)
        return;
    const int C3 = 3 * C, hs = C / NH;
    const float sc = 1.0f / sqrtf((float)hs);
#pragma omp parallel for if (B * NH > 1)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        size_t qoff = (size_t)b * T * C3 + (size_t)h * hs;
        const float *q = qkv + qoff, *k = q + C, *v = q + 2 * C; // (T,hs)
        float *dq = dqkv + qoff, *dk = dq + C, *dv = dq + 2 * C; // (T,hs)
        const float *P = att + (size_t)bh * T * T;               // (T,T)
        float *D = scratch + (size_t)bh * T * T;                 // (T,T)
        const float *g = dout + (size_t)b * T * C + (size_t)h * hs; // (T,hs)
        // dP = dout·vᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, g,
                    C, v, C3, 0.0f, D, T);
        // dv += Pᵀ·dout
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, P,
                    T, g, C, 1.0f, dv, C3);
        softmax_rows_backward(D, P, T);
        // dq += dS·k·scale; dk += dSᵀ·q·scale
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, sc, D,
                    T, k, C3, 1.0f, dq, C3);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, sc, D, T,
                    q, C3, 1.0f, dk, C3);
    }
}

/* ------------------------------------------------------------------------
 * Elementwise helpers
 * ---------------------------------------------------------------------- */

static void cpu_add(float *out, const float *a, const float *b, size_t n)
{
#pragma omp parallel for if (n >= REED_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

static void cpu_accumulate(float *acc, const float *x, size_t n)
{
#pragma omp parallel for if (n >= REED_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        acc[i] += x[i];
}

static void cpu_scale(float *x, float s, size_t n)
{
#pragma omp parallel for if (n >= REED_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
}

static void cpu_axpby(float *out, float a, const float *x, float b,
                      const float *y, size_t n)
{
#pragma omp parallel for if (n >= REED_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        out[i] = a * x[i] + b * y[i];
}

static double cpu_sum_squares(const float *x, size_t n)
{
    double sum = 0.0;
#pragma omp parallel for simd reduction(+ : sum) if (n >= REED_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        sum += (double)x[i] * x[i];
    return sum;
}

/* ------------------------------------------------------------------------
 * Mean over tokens: out(B,C) = (1/T) Σ_t x(B,T,C)
 * ---------------------------------------------------------------------- */

static void cpu_mean_tokens_forward(float *restrict out,
                                    const float *restrict x, int B, int T,
                                    int C)
{
    int nblocks = (C + REED_CBLOCK - 1) / REED_CBLOCK;
#pragma omp parallel for collapse(2) if ((size_t)B * T * C >= REED_OMP_MIN)
    for (int b = 0; b < B; b++) {
        for (int blk = 0; blk < nblocks; blk++) {
            int c0 = blk * REED_CBLOCK, c1 = min_int(C, c0 + REED_CBLOCK);
            float acc[REED_CBLOCK] = {0};
            for (int t = 0; t < T; t++) {
                const float *xr = x + ((size_t)b * T + t) * C; // (C)
                for (int c = c0; c < c1; c++)
                    acc[c - c0] += xr[c];
            }
            for (int c = c0; c < c1; c++)
                out[(size_t)b * C + c] = acc[c - c0] / T;
        }
    }
}

/* out[b](T,D) = R(T,Ts) · src[b](Ts,D): one sgemm per example. */
static void cpu_resample_tokens(float *out, const float *R, const float *src, int B, int T,
                                int Ts, int D)
{
    for (int b = 0; b < B; b++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, Ts, 1.0f, R, Ts,
                    src + (size_t)b * Ts * D, D, 0.0f, out + (size_t)b * T * D, D);
}

static void cpu_mean_tokens_backward(float *restrict dx,
                                     const float *restrict dout, int B, int T,
                                     int C)
{
    if (!dx)
        return;
    const float inv = 1.0f / T;
#pragma omp parallel for if ((size_t)B * T * C >= REED_OMP_MIN)
    for (int bt = 0; bt < B * T; bt++) {
        const float *g = dout + (size_t)(bt / T) * C; // (C)
        float *d = dx + (size_t)bt * C;
        for (int c = 0; c < C; c++)
            d[c] += g[c] * inv;
    }
}

/* ------------------------------------------------------------------------
 * Cosine similarity with F.normalize semantics: â = a / max(|a|, 1e-12),
 * sim = <â, b̂>. Row dot products accumulate in double.
 * ---------------------------------------------------------------------- */

#define COS_EPS 1e-12

static double row_dot(const float *restrict a, const float *restrict b,
                      int D)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < D; i++)
        s += (double)a[i] * b[i];
    return s;
}

static void cpu_cosine_forward(float *restrict sim, const float *restrict a,
                               const float *restrict b, int N, int D)
{
#pragma omp parallel for if ((size_t)N * D >= REED_OMP_MIN)
    for (int n = 0; n < N; n++) {
        const float *ar = a + (size_t)n * D, *br = b + (size_t)n * D; // (D)
        double na = fmax(sqrt(row_dot(ar, ar, D)), COS_EPS);
        double nb = fmax(sqrt(row_dot(br, br, D)), COS_EPS);
        sim[n] = (float)(row_dot(ar, br, D) / (na * nb));
    }
}

/* With b̂ = b / max(|b|, eps):
 *   |a| > eps:  ∂sim/∂a = (b̂ − â·<â, b̂>) / |a|,  â = a/|a|
 *   |a| ≤ eps:  â = a/eps is linear in a, so ∂sim/∂a = b̂ / eps. */
static void cpu_cosine_backward(float *restrict da, const float *restrict dsim,
                                const float *restrict a,
                                const float *restrict b, int N, int D)
{
    if (!da)
        return;
#pragma omp parallel for if ((size_t)N * D >= REED_OMP_MIN)
    for (int n = 0; n < N; n++) {
        const float *ar = a + (size_t)n * D, *br = b + (size_t)n * D; // (D)
        float *dr = da + (size_t)n * D;
        double la = sqrt(row_dot(ar, ar, D));
        double nb = fmax(sqrt(row_dot(br, br, D)), COS_EPS);
        double na = fmax(la, COS_EPS);
        double s = row_dot(ar, br, D) / (na * nb); // <â, b̂>
        // Projection removed only when the norm is not clamped.
        double proj = la > COS_EPS ? s / na : 0.0;
        double cb = dsim[n] / (na * nb), ca = dsim[n] * proj / na;
        for (int i = 0; i < D; i++)
            dr[i] += (float)(cb * br[i] - ca * ar[i]);
    }
}

/* ------------------------------------------------------------------------
 * Optimiser (with the EMA of the parameters)
 * ---------------------------------------------------------------------- */

/* PyTorch AdamW, with g = grad·grad_scale:
 *   p -= lr·wd·p;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
 *   p -= lr · (m/(1-β1^t)) / (sqrt(v/(1-β2^t)) + eps)
 * then, with ema, the moving average of the new p:
 *   ema = ema_decay·ema + (1 - ema_decay)·p */
static void cpu_adamw_update(float *restrict param, const float *restrict grad,
                             float *restrict m, float *restrict v, size_t n,
                             float lr, float beta1, float beta2, float eps,
                             float weight_decay, float grad_scale, int t,
                             float *restrict ema, float ema_decay)
{
    const float bc1 = (float)(1.0 - pow(beta1, t));
    const float bc2 = (float)(1.0 - pow(beta2, t));
    const float decay = 1.0f - lr * weight_decay;
    const float ema_w = 1.0f - ema_decay;
#pragma omp parallel for if (n >= REED_OMP_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float update = (mi / bc1) / (sqrtf(vi / bc2) + eps);
        float p = param[i] * decay - lr * update;
        param[i] = p;
        if (ema)
            ema[i] = ema_decay * ema[i] + ema_w * p;
    }
}

/* ------------------------------------------------------------------------
 * The op table
 * ---------------------------------------------------------------------- */

/* --- memory: plain host memory ------------------------------------------------ */

static void *cpu_mem_alloc(size_t bytes) { return calloc(bytes ? bytes : 1, 1); }
static void cpu_mem_free(void *p) { free(p); }
static void cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
}
static void cpu_zero(void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
}
static void cpu_synchronize(void) {}

/* --- random numbers -------------------------------------------------------------- */

/* One Philox block (four normals) per iteration; blocks are independent. */
static void cpu_normal_fill(float *out, size_t n, uint64_t seed, uint64_t step,
                            uint32_t stream)
{
    const size_t blocks = (n + 3) / 4;
#pragma omp parallel for if (n >= REED_OMP_MIN)
    for (size_t b = 0; b < blocks; b++) {
        float z[4];
        philox_normal4(b, seed, step, stream, z);
        for (size_t j = 0; j < 4 && b * 4 + j < n; j++)
            out[b * 4 + j] = z[j];
    }
}

const reed_ops reed_ops_cpu = {
    .name = "cpu",
    .host_memory = 1,
    .mem_alloc = cpu_mem_alloc,
    .mem_reserve = cpu_mem_alloc,               // host memory is mapped on first use anyway
    .mem_free = cpu_mem_free,
    .upload = cpu_copy,                         // one address space
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
    .linear_forward = cpu_linear_forward,       // sgemm (+ bias seed)
    .linear_backward = cpu_linear_backward,     // 2 sgemm + column sum
    .linear_gelu_forward = cpu_linear_gelu_forward,
    .linear_gelu_backward = cpu_linear_gelu_backward,
    .layernorm_forward = cpu_layernorm_forward, // two-pass, per row
    .layernorm_backward = cpu_layernorm_backward,
    .modulate_forward = cpu_modulate_forward,   // x·(1+scale)+shift
    .modulate_backward = cpu_modulate_backward,
    .ln_modulate_forward = cpu_ln_modulate_forward, // both in one pass per row
    .ln_modulate_backward = cpu_ln_modulate_backward,
    .gated_add_forward = cpu_gated_add_forward, // x += gate·y
    .gated_add_backward = cpu_gated_add_backward,
    .gelu_forward = cpu_gelu_forward,           // tanh approximation
    .gelu_backward = cpu_gelu_backward,
    .silu_forward = cpu_silu_forward,           // x·σ(x), in place ok
    .silu_backward = cpu_silu_backward,
    .attention_forward = cpu_attention_forward, // per (b,h) sgemm, no mask
    .attention_backward = cpu_attention_backward,
    .add = cpu_add,                             // out = a + b
    .accumulate = cpu_accumulate,               // acc += x
    .scale = cpu_scale,                         // x *= s
    .axpby = cpu_axpby,                         // out = a·x + b·y
    .sum_squares = cpu_sum_squares,             // Σ x², double
    .mean_tokens_forward = cpu_mean_tokens_forward, // (B,T,C) → (B,C)
    .mean_tokens_backward = cpu_mean_tokens_backward,
    .resample_tokens = cpu_resample_tokens,             // sgemm per example
    .cosine_forward = cpu_cosine_forward,       // F.normalize semantics
    .cosine_backward = cpu_cosine_backward,     // b is a constant target
    .adamw_update = cpu_adamw_update,           // PyTorch AdamW (+ EMA)
    /* model plumbing: cpu_model_ops.c */
    .patchify = cpu_patchify,                   // conv-weight order (c, i, j)
    .unpatchify_forward = cpu_unpatchify_forward, // SiT order (i, j, c)
    .unpatchify_backward = cpu_unpatchify_backward,
    .add_rows = cpu_add_rows,                   // + position embedding
    .timestep_embedding = cpu_timestep_embedding, // [cos | sin], 10000
    .embedding_forward = cpu_embedding_forward, // label table lookup
    .embedding_backward = cpu_embedding_backward,
    .interpolate = cpu_interpolate,             // x_t and target v
    .mse_forward_backward = cpu_mse_forward_backward, // velocity loss
    /* convolutional networks: cpu_conv.c */
    .conv2d_forward = cpu_conv2d_forward,       // im2col + one sgemm
    .conv2d_backward = cpu_conv2d_backward,     // 2 sgemm + col2im
    .relu_forward = cpu_relu_forward,           // max(x, 0), in place ok
    .relu_backward = cpu_relu_backward,
    .avgpool_global_forward = cpu_avgpool_global_forward, // (B,C,H,W) → (B,C)
    .avgpool_global_backward = cpu_avgpool_global_backward,
    .cross_entropy_forward_backward = cpu_cross_entropy_forward_backward, // mean loss, dlogits, hits
    .normal_fill = cpu_normal_fill,                    // Philox blocks over threads
};
