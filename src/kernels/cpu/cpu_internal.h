/* CPU implementations shared between the files of the CPU backend. */
#ifndef REED_CPU_INTERNAL_H
#define REED_CPU_INTERNAL_H

#include <stddef.h>

void cpu_patchify(float *patches, const float *x, int B, int Cin, int S, int p);
void cpu_unpatchify_forward(float *x, const float *tokens, int B, int Cout, int S, int p);
void cpu_unpatchify_backward(float *dtokens, const float *dx, int B, int Cout, int S, int p);
void cpu_add_rows(float *x, const float *rows, int B, int T, int C);
void cpu_timestep_embedding(float *out, const float *t, int B, int dim);
void cpu_embedding_forward(float *out, const float *table, const int *idx, int B, int C);
void cpu_embedding_backward(float *dtable, const float *dout, const int *idx, int B, int C);
void cpu_interpolate(float *x_t, float *v, const float *x, const float *noise,
                     const float *a, const float *s, const float *da,
                     const float *ds, int B, size_t n);
double cpu_mse_forward_backward(float *dpred, const float *pred,
                                const float *target, size_t n, float scale);

/* cpu_conv.c: the convolutional-network ops (see ops.h for the contracts). */
void cpu_conv2d_forward(float *out, const float *inp, const float *w,
                        const float *bias, int B, int C, int H, int W, int OC,
                        int K, int stride, int pad, float *scratch);
void cpu_conv2d_backward(float *dinp, float *dw, float *dbias,
                         const float *dout, const float *inp, const float *w,
                         int B, int C, int H, int W, int OC, int K, int stride,
                         int pad, float *scratch);
void cpu_relu_forward(float *out, const float *inp, size_t n);
void cpu_relu_backward(float *dinp, const float *dout, const float *x, size_t n);
void cpu_avgpool_global_forward(float *out, const float *inp, int B, int C,
                                int H, int W);
void cpu_avgpool_global_backward(float *dinp, const float *dout, int B, int C,
                                 int H, int W);
double cpu_cross_entropy_forward_backward(float *dlogits, int *correct,
                                          const float *logits,
                                          const int *labels, int B, int K,
                                          float scale);

#endif
