/* Settings of the CUDA backend that the op table does not cover. Every
 * function here also exists in builds without CUDA (cuda_stub.c), where it
 * does nothing, so callers need no #ifdef. */
#ifndef REED_CUDA_H
#define REED_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

/* GEMM precision of the CUDA backend, for every op issued afterwards:
 *   0 (the default): fp32 parity — cuBLAS in fp32 (CUBLAS_COMPUTE_32F, no
 *     TF32) and cuDNN restricted to FMA math;
 *   1: bf16 — cuBLAS GEMMs (linear, attention) on tensor cores with bf16
 *     inputs and fp32 accumulation (CUBLAS_COMPUTE_32F_FAST_16BF), cuDNN
 *     convolutions with tensor-core math (TF32).
 * Storage, master weights, optimiser state and every non-GEMM op stay fp32
 * in both modes. */
void reed_cuda_set_precision(int bf16);
int reed_cuda_precision(void); /* the current mode: 0 or 1 */

/* Convolutions through cuDNN (1, the default when the build has cuDNN) or
 * through our own im2col + cuBLAS path (0). Returns the path now in use
 * (0 when the build has no cuDNN or cuDNN failed to start, or before the
 * backend started). For tests and benchmarks. */
int reed_cuda_set_cudnn(int on);
/* How many convolution calls fell back from cuDNN to im2col + cuBLAS (no
 * cuDNN algorithm fitted the scratch buffer or supported the shape). */
long reed_cuda_conv_fallbacks(void);

/* A CUDA, cuBLAS or cuDNN call failed (a bug or a sticky device error):
 * the backend calls this handler with a one-line message naming the call
 * and its file:line, then abort()s. The default prints to stderr; a UI that
 * owns the terminal installs one that restores the screen first. NULL
 * restores the default. */
void reed_cuda_set_fatal_handler(void (*handler)(const char *msg));

#ifdef __cplusplus
}
#endif

#endif
