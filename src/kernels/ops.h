/* The backend op table: every op the model, losses, optimiser and samplers
 * need, as one struct of function pointers per backend (ggml-backend style).
 * The model code calls ops through this table and never knows which backend
 * runs. The CPU backend (kernels/cpu) is the reference for all others.
 *
 * Conventions
 * - float32, row-major, contiguous unless a leading dimension says otherwise.
 * - Linear layers use PyTorch's layout: weight (OC, C), bias (OC).
 * - Forward ops overwrite their outputs.
 * - Gradient contract: every backward op ADDS (+=) into its gradient outputs
 *   (dinp, dweight, dbias, ...). Callers zero gradients once per step. Any
 *   gradient output may be NULL when the caller does not need it.
 * - Shapes come last: B batch, T tokens, C channels, NH heads, N rows.
 * - adaLN vectors (shift, scale, gate) are slices of a (B, ldm) matrix:
 *   row b of a slice starts at ptr + b*ldm.
 * - Memory: every array an op reads or writes (floats and int indices alike)
 *   lives in the backend's memory, obtained from mem_alloc: host memory on
 *   the CPU, device memory on CUDA. Scalars are passed by value; scalar
 *   results (return values, cross-entropy's *correct) are host values, and
 *   an op returning one has finished its work when it returns.
 */
#ifndef REED_OPS_H
#define REED_OPS_H

#include <stddef.h>
#include <stdint.h>

typedef struct reed_ops {
    const char *name;
    /* 1 when backend memory is host memory (the host may read and write it
     * directly, and upload/download are plain copies). */
    int host_memory;

    /* --- memory ---------------------------------------------------------- */
    /* Zeroed backend memory of `bytes` bytes, or NULL when out of memory. */
    void *(*mem_alloc)(size_t bytes);
    void (*mem_free)(void *p);                                   /* NULL ok */
    void (*upload)(void *dst, const void *host_src, size_t bytes);   /* host → backend */
    void (*download)(void *host_dst, const void *src, size_t bytes); /* backend → host */
    void (*copy)(void *dst, const void *src, size_t bytes);          /* backend → backend */
    void (*zero)(void *p, size_t bytes);
    /* Waits until every op issued so far has finished. */
    void (*synchronize)(void);
    /* Bytes currently held through mem_alloc (for the status line and
     * metrics); NULL where the backend does not count. */
    size_t (*mem_used)(void);
    /* As mem_alloc, for a big buffer the engine allocates once for a whole
     * run and may leave partly unused (the training activations): the
     * backend may map memory to it only when an op first uses it (the CUDA
     * backend: src/kernels/cuda/cuda_lazy.cu). Running out of memory then
     * stops the process at that op, with a message, instead of returning
     * NULL here; so the engine reserves only what the first training steps
     * use, never buffers it allocates mid-run (sampling, evaluation). */
    void *(*mem_reserve)(size_t bytes);

    /* out(N,OC) = inp(N,C) · w(OC,C)ᵀ + bias(OC); bias may be NULL. */
    void (*linear_forward)(float *out, const float *inp, const float *w,
                           const float *bias, int N, int C, int OC);
    /* dinp(N,C) += dout·w; dw(OC,C) += doutᵀ·inp; dbias(OC) += Σ_n dout. */
    void (*linear_backward)(float *dinp, float *dw, float *dbias,
                            const float *dout, const float *inp,
                            const float *w, int N, int C, int OC);
    /* A linear layer and the GELU after it (the MLP's first layer), in one
     * op so a backend may fuse them: pre(N,OC) = inp·wᵀ + bias, as
     * linear_forward; out = gelu(pre), as gelu_forward. */
    void (*linear_gelu_forward)(float *out, float *pre, const float *inp,
                                const float *w, const float *bias, int N,
                                int C, int OC);
    /* The backward of a linear layer whose input is act = gelu(pre) (the
     * MLP's second layer, and the GELU before it): dpre(N,C) = gelu'(pre)·
     * (dout·w), WRITTEN, not added to (the one exception to the gradient
     * contract: no caller has a second gradient path into pre); dw(OC,C)
     * += doutᵀ·act; dbias(OC) += Σ_n dout. */
    void (*linear_gelu_backward)(float *dpre, float *dw, float *dbias,
                                 const float *dout, const float *act,
                                 const float *pre, const float *w, int N,
                                 int C, int OC);

    /* LayerNorm without affine parameters over the last dim:
     * out = (inp - mean)·rstd, rstd = 1/sqrt(var + eps) (biased variance).
     * Saves mean(N) and rstd(N) for the backward pass. */
    void (*layernorm_forward)(float *out, float *mean, float *rstd,
                              const float *inp, int N, int C, float eps);
    void (*layernorm_backward)(float *dinp, const float *dout,
                               const float *inp, const float *mean,
                               const float *rstd, int N, int C);

    /* out(B,T,C) = x·(1 + scale[b]) + shift[b]. */
    void (*modulate_forward)(float *out, const float *x, const float *shift,
                             const float *scale, int ldm, int B, int T, int C);
    /* dx += dout·(1+scale); dshift += Σ_t dout; dscale += Σ_t dout·x. */
    void (*modulate_backward)(float *dx, float *dshift, float *dscale,
                              const float *dout, const float *x,
                              const float *scale, int ldm, int B, int T, int C);

    /* LayerNorm and modulate in one pass (the two ops above, fused):
     * out(B,T,C) = x̂·(1 + scale[b]) + shift[b], x̂ = (inp - mean)·rstd as
     * in layernorm_forward, which saves mean(B·T) and rstd(B·T) the same
     * way. x̂ itself is not stored. */
    void (*ln_modulate_forward)(float *out, float *mean, float *rstd,
                                const float *inp, const float *shift,
                                const float *scale, int ldm, int B, int T,
                                int C, float eps);
    /* With g = dout·(1 + scale[b]) and x̂ recomputed from inp, mean, rstd:
     * dinp += layernorm_backward of g; dshift += Σ_t dout;
     * dscale += Σ_t dout·x̂. */
    void (*ln_modulate_backward)(float *dinp, float *dshift, float *dscale,
                                 const float *dout, const float *inp,
                                 const float *mean, const float *rstd,
                                 const float *scale, int ldm, int B, int T,
                                 int C);

    /* Gated residual: x(B,T,C) += gate[b]·y. */
    void (*gated_add_forward)(float *x, const float *y, const float *gate,
                              int ldm, int B, int T, int C);
    /* Given dx (the residual gradient, left unchanged):
     * dy += gate[b]·dx; dgate += Σ_t dx·y. */
    void (*gated_add_backward)(float *dy, float *dgate, const float *dx,
                               const float *y, const float *gate,
                               int ldm, int B, int T, int C);

    /* GELU, tanh approximation (PyTorch approximate="tanh"), elementwise. */
    void (*gelu_forward)(float *out, const float *inp, size_t n);
    void (*gelu_backward)(float *dinp, const float *dout, const float *inp,
                          size_t n);
    /* SiLU x·sigmoid(x), elementwise. out may alias inp. */
    void (*silu_forward)(float *out, const float *inp, size_t n);
    void (*silu_backward)(float *dinp, const float *dout, const float *inp,
                          size_t n);

    /* Multi-head self-attention core (timm layout).
     * qkv(B,T,3C): q = qkv[..., 0:C], k = [C:2C], v = [2C:3C]; head h uses
     * channels h·hs .. (h+1)·hs of each, hs = C/NH.
     * out(B,T,C) = softmax(q·kᵀ/sqrt(hs))·v per head, heads concatenated.
     * att (B·NH·T·T floats) is backend-private state for the backward pass
     * (the CPU: the probabilities; the CUDA fused path: row log-sum-exps). */
    void (*attention_forward)(float *out, float *att, const float *qkv,
                              int B, int T, int C, int NH);
    /* dqkv(B,T,3C) += gradient; scratch holds B·NH·T·T floats. */
    void (*attention_backward)(float *dqkv, float *scratch, const float *dout,
                               const float *qkv, const float *att,
                               int B, int T, int C, int NH);

    /* Elementwise helpers over n floats. */
    void (*add)(float *out, const float *a, const float *b, size_t n); /* out = a + b */
    void (*accumulate)(float *acc, const float *x, size_t n);        /* acc += x */
    void (*scale)(float *x, float s, size_t n);                      /* x *= s */
    void (*axpby)(float *out, float a, const float *x, float b,
                  const float *y, size_t n);                         /* out = a·x + b·y */
    double (*sum_squares)(const float *x, size_t n);                 /* Σ x² in double */

    /* Mean over tokens: out(B,C) = (1/T) Σ_t x(B,T,C). */
    void (*mean_tokens_forward)(float *out, const float *x, int B, int T, int C);
    /* dx(B,T,C) += dout(B,C) / T. */
    void (*mean_tokens_backward)(float *dx, const float *dout, int B, int T, int C);

    /* Token resampling by a fixed matrix, for every b:
     * out(B,T,D)[b] = R(T,Ts) · src(B,Ts,D)[b] (the grid resampling of
     * representation targets: constants, so no backward). In fp32 on every
     * backend and precision. Overwrites out. */
    void (*resample_tokens)(float *out, const float *R, const float *src, int B,
                            int T, int Ts, int D);

    /* Cosine similarity per row with F.normalize semantics
     * (x / max(||x||, 1e-12)): sim(N) = <a/|a|, b/|b|>. */
    void (*cosine_forward)(float *sim, const float *a, const float *b,
                           int N, int D);
    /* da(N,D) += dsim[n]·∂sim/∂a (b is a constant target). */
    void (*cosine_backward)(float *da, const float *dsim, const float *a,
                            const float *b, int N, int D);

    /* --- model plumbing ------------------------------------------------- */
    /* patches(B·T, Cin·p·p) from x(B,Cin,S,S), T = (S/p)², tokens row-major
     * over the grid; a row lists channel, then patch row, then patch column
     * (the flattening of a Conv2d weight (H, Cin, p, p)). */
    void (*patchify)(float *patches, const float *x, int B, int Cin, int S,
                     int p);
    /* x(B,Cout,S,S) from tokens(B,T,p·p·Cout) ordered (patch row, patch
     * column, channel): SiT's unpatchify. Overwrites x. */
    void (*unpatchify_forward)(float *x, const float *tokens, int B, int Cout,
                               int S, int p);
    /* The inverse permutation: dtokens = gather of dx. Overwrites dtokens. */
    void (*unpatchify_backward)(float *dtokens, const float *dx, int B,
                                int Cout, int S, int p);
    /* x(B,T,C) += rows(T,C) for every b (position embedding). */
    void (*add_rows)(float *x, const float *rows, int B, int T, int C);
    /* out(B,dim) = [cos(t·f_k) | sin(t·f_k)], f_k = 10000^(-k/(dim/2)). */
    void (*timestep_embedding)(float *out, const float *t, int B, int dim);
    /* out(B,C) = table[idx[b]]; dtable[idx[b]] += dout[b]. */
    void (*embedding_forward)(float *out, const float *table, const int *idx,
                              int B, int C);
    void (*embedding_backward)(float *dtable, const float *dout,
                               const int *idx, int B, int C);
    /* Per-sample interpolant over n elements per sample:
     * x_t = a[b]·x + s[b]·noise, v = da[b]·x + ds[b]·noise. */
    void (*interpolate)(float *x_t, float *v, const float *x,
                        const float *noise, const float *a, const float *s,
                        const float *da, const float *ds, int B, size_t n);
    /* Returns mean((pred - target)²) over n and writes (overwrites)
     * dpred = scale·2·(pred - target)/n. */
    double (*mse_forward_backward)(float *dpred, const float *pred,
                                   const float *target, size_t n, float scale);

    /* One AdamW step (decoupled weight decay, bias-corrected, PyTorch's
     * formula) over n parameters; the gradient is multiplied by grad_scale
     * first (global-norm clipping). t is the 1-based step count. Unless ema
     * is NULL, the same pass then updates the parameters' moving average
     * from the new param: ema = ema_decay·ema + (1 - ema_decay)·param. */
    void (*adamw_update)(float *param, const float *grad, float *m, float *v,
                         size_t n, float lr, float beta1, float beta2,
                         float eps, float weight_decay, float grad_scale,
                         int t, float *ema, float ema_decay);

    /* --- convolutional networks (the teacher, the evaluator) ------------ */
    /* 2-D convolution, PyTorch's Conv2d (cross-correlation, zero padding,
     * square kernel, dilation 1, groups 1):
     *   out(B,OC,Ho,Wo) = Σ_{c,i,j} w(OC,C,K,K)[o,c,i,j] ·
     *                     inp(B,C,H,W)[b, c, y·stride − pad + i, x·stride − pad + j]
     *                     + bias(OC)[o],
     * Ho = reed_conv2d_out_size(H, K, stride, pad), likewise Wo; bias may be
     * NULL. scratch holds reed_conv2d_scratch_floats(...) floats (device
     * memory on a GPU backend); its contents on entry do not matter. */
    void (*conv2d_forward)(float *out, const float *inp, const float *w,
                           const float *bias, int B, int C, int H, int W,
                           int OC, int K, int stride, int pad, float *scratch);
    /* dinp(B,C,H,W) += ∂L/∂inp; dw(OC,C,K,K) += ∂L/∂w; dbias(OC) += Σ dout
     * over (b, y, x), from dout (B,OC,Ho,Wo). Any gradient may be NULL.
     * scratch as for the forward pass. */
    void (*conv2d_backward)(float *dinp, float *dw, float *dbias,
                            const float *dout, const float *inp,
                            const float *w, int B, int C, int H, int W,
                            int OC, int K, int stride, int pad,
                            float *scratch);
    /* ReLU max(x, 0), elementwise; out may alias inp. */
    void (*relu_forward)(float *out, const float *inp, size_t n);
    /* dinp += dout·[x > 0], x the forward input (or its output: same mask). */
    void (*relu_backward)(float *dinp, const float *dout, const float *x,
                          size_t n);
    /* Global average pooling: out(B,C) = mean over (H,W) of inp(B,C,H,W). */
    void (*avgpool_global_forward)(float *out, const float *inp, int B, int C,
                                   int H, int W);
    /* dinp(B,C,H,W) += dout(B,C) / (H·W). */
    void (*avgpool_global_backward)(float *dinp, const float *dout, int B,
                                    int C, int H, int W);
    /* Softmax cross-entropy over K classes, PyTorch's F.cross_entropy with
     * mean reduction: returns mean_b(logsumexp(logits_b) − logits_b[y_b])
     * (in double). Writes (overwrites) dlogits(B,K) =
     * scale·(softmax(logits) − onehot(y))/B unless dlogits is NULL; when
     * correct is not NULL, *correct = the number of rows whose argmax (the
     * first maximum) equals the label. Labels must lie in [0, K). */
    double (*cross_entropy_forward_backward)(float *dlogits, int *correct,
                                             const float *logits,
                                             const int *labels, int B, int K,
                                             float scale);

    /* --- random numbers ------------------------------------------------- */
    /* out(n) = the standard normal draw keyed by (seed, step, stream):
     * element i equals what engine/rng.h's rng_normal writes there, on every
     * backend (kernels/philox.h; a GPU backend may differ in the last bit
     * where its double log/cos/sin round differently). */
    void (*normal_fill)(float *out, size_t n, uint64_t seed, uint64_t step,
                        uint32_t stream);
} reed_ops;

/* Output size of a convolution along one axis: (n + 2·pad − K)/stride + 1. */
static inline int reed_conv2d_out_size(int n, int K, int stride, int pad)
{
    return (n + 2 * pad - K) / stride + 1;
}

/* Floats of scratch that conv2d_forward/backward need on every backend:
 * the im2col matrix (B·Ho·Wo, C·K·K) and a pixel-major output (B·Ho·Wo, OC). */
static inline size_t reed_conv2d_scratch_floats(int B, int C, int H, int W,
                                                int OC, int K, int stride,
                                                int pad)
{
    size_t pixels = (size_t)B * reed_conv2d_out_size(H, K, stride, pad) *
                    reed_conv2d_out_size(W, K, stride, pad);
    return pixels * ((size_t)C * K * K + (size_t)OC);
}

/* The CPU backend (OpenBLAS sgemm + our OpenMP loops). */
extern const reed_ops reed_ops_cpu;

/* The CUDA backend on device 0, initialised on first use, or NULL with the
 * reason in why (no GPU, no driver, or a build without CUDA). */
const reed_ops *reed_ops_cuda(char *why, size_t cap);

/* Threads used by the CPU backend (OpenMP and OpenBLAS); n <= 0 means all. */
void reed_cpu_set_threads(int n);
int reed_cpu_threads(void);

#endif
