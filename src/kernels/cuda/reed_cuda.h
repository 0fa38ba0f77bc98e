/* Settings of the CUDA backend that the op table does not cover. Every
 * function here also exists in builds without CUDA (cuda_stub.c), where it
 * does nothing, so callers need no #ifdef. */
#ifndef REED_CUDA_H
#define REED_CUDA_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* GEMM precision of the CUDA backend, for every op issued afterwards:
 *   0 (the default): fp32 parity — cuBLAS in fp32 (CUBLAS_COMPUTE_32F, no
 *     TF32) and cuDNN restricted to FMA math;
 *   1: bf16 — cuBLAS GEMMs (linear, attention) on tensor cores with bf16
 *     inputs (copies of the fp32 operands; CUBLAS_COMPUTE_32F_FAST_16BF on
 *     the fp32 ones with REED_CUDA_BF16_OPERANDS=0) and fp32 accumulation,
 *     cuDNN convolutions with tensor-core math (TF32).
 * Storage, master weights, optimiser state and every non-GEMM op stay fp32
 * in both modes. */
void reed_cuda_set_precision(int bf16);
int reed_cuda_precision(void); /* the current mode: 0 or 1 */

/* After reed_ops_cuda returned NULL: 1 when the machine has no usable GPU
 * (none found, compute capability below 8.0, or a build without CUDA), 0
 * when a usable GPU is there and the backend failed to start on it. Tests
 * skip on the first and fail on the second. */
int reed_cuda_absent(void);

/* Convolutions through cuDNN (1, the default when the build has cuDNN) or
 * through our own im2col + cuBLAS path (0). Returns the path now in use
 * (0 when the build has no cuDNN or cuDNN failed to start, or before the
 * backend started). For tests and benchmarks. */
int reed_cuda_set_cudnn(int on);
/* How many convolution calls fell back from cuDNN to im2col + cuBLAS (no
 * cuDNN algorithm fitted the scratch buffer or supported the shape). */
long reed_cuda_conv_fallbacks(void);

/* Attention in bf16 mode takes one of four paths:
 *   1, GEMM: cuBLAS GEMMs around a stored probability matrix; always taken
 *     in fp32 mode and for shapes the others do not cover;
 *   2, fused: our wmma tensor-core kernels (cuda_attention.cu, no (T,T)
 *     matrix in device memory; T ≤ 256, head size a multiple of 16 up to
 *     128);
 *   3, flash: our mma.sync kernels (cuda_flash.cu: scores and
 *     probabilities in registers, FlashAttention-2's online softmax),
 *     forward and backward (bf16 operands only; head size 16, 32, 64, 96
 *     or 128);
 *   4, flash + GEMM: the flash forward, also writing the probability
 *     matrix, then the GEMM path's backward (as 3 covers).
 * Mode 0 (the default) is auto: the first time a shape (T, C, NH) is
 * seen, time forward + backward of every covering path on min(B, 256)
 * samples (32 where the buffers for 256 do not fit) and keep the fastest
 * (REED_CUDA_VERBOSE=1 prints the times to stderr); 1 to 4 force a path
 * where it covers the shape. The environment
 * variable REED_CUDA_ATTENTION=auto|gemm|fused|flash|flashgemm sets the
 * mode until this is called. The backward of a batch must run under the
 * mode and precision of its forward (att means different things on the
 * paths). */
void reed_cuda_set_attention(int mode);
/* The flash path's kernels: at head sizes up to 64 each direction has
 * three variants that compute the same values: forward 0 (16 query rows a
 * warp), 1 (32 rows a warp, k and v tiles by cp.async) and 2 (16 rows a
 * warp, cp.async); backward 0 (the key kernel 64 queries a pass), 1 (32
 * a pass, fewer registers) and 2 (as 1, the query and key kernels'
 * tiles by cp.async). In auto mode the timing above tries them and keeps
 * the fastest of each direction; a forced path takes 0 unless a variant
 * is forced. set_flash(forward, backward) forces one (0 to 2; -1 lets it
 * be timed), as do REED_CUDA_FLASH_FWD and REED_CUDA_FLASH_BWD (0 to 2)
 * until it is called. For tests and benchmarks. */
void reed_cuda_set_flash(int forward, int backward);
/* Launches so far of the variant kernels: forwards 1 and 2, key kernels
 * 1 and 2. For tests. */
void reed_cuda_flash_variant_calls(long *forward, long *backward);
/* The path attention takes for this shape now (1 to 4, as above); in
 * auto mode this may run the timing. 0 in a build without CUDA. For tests
 * and benchmarks. */
int reed_cuda_attention_path(int B, int T, int C, int NH);

/* bf16 views (bf16 mode on bf16 operands): the ops that write a linear
 * layer's input also write its bf16 copy, and a linear layer's backward
 * reuses the copy its forward read, instead of each GEMM copying its
 * operands (cuda_view.cu). On by default; REED_CUDA_VIEWS=0 in the
 * environment at start-up turns them off for good, and
 * REED_CUDA_VIEW_CHECK=1 compares every view with a fresh copy before use.
 * set_views(0|1) turns them off or on again and returns 1 when the bf16
 * mode will use them (0 after set_views(0), or when REED_CUDA_VIEWS=0 or
 * REED_CUDA_BF16_OPERANDS=0 was set); view_hits counts the GEMM operands
 * read from a view so far. For tests and benchmarks. */
int reed_cuda_set_views(int on);
long reed_cuda_view_hits(void);

/* Sole views (REED_CUDA_VIEW_SOLE, cuda_view.cu): producers that skip
 * writing an fp32 output nothing but GEMMs reads. set_view_sole(0|1) turns
 * them off or on again (returns 1 when on); view_sole_counts: sole views
 * made so far, and how many of them had to write their values back to
 * fp32 for a reader. For tests and benchmarks. */
int reed_cuda_set_view_sole(int on);
void reed_cuda_view_sole_counts(long *made, long *materialized);

/* Buffers backed on first use (cuda_lazy.cu): the table's mem_reserve gives
 * an allocation of REED_CUDA_LAZY_MIN bytes or more (default 32 MiB) an
 * address range only, and device memory is mapped to a part of it when an
 * op first reads or writes that part in fp32; on the bf16 path the outputs
 * written only as bf16 views never are. REED_CUDA_LAZY=0 turns it off.
 * set_lazy_min sets that size for allocations from now on and returns 1
 * where buffers are backed on first use (the driver supports it), else 0;
 * lazy_bytes: the bytes asked for such buffers now, and the bytes mapped
 * to them (whole granules of the driver's, typically 2 MiB). For tests
 * and benchmarks. */
int reed_cuda_set_lazy_min(size_t bytes);
void reed_cuda_lazy_bytes(size_t *requested, size_t *mapped);
/* The same for the one buffer p points into (0 and 0 where it is not one
 * backed on first use). */
void reed_cuda_lazy_buffer(const void *p, size_t *requested, size_t *mapped);

/* Copies folded into the op after them (the lazy copy, cuda_zero.cu) so
 * far. For tests. */
long reed_cuda_copies_folded(void);

/* Linear backwards so far whose bias gradient came from the weight
 * gradient GEMM's cuBLASLt epilogue (BGRADB) instead of a column sum. For
 * tests and benchmarks. */
long reed_cuda_lt_bgrad_calls(void);

/* GEMMs so far that ran the MLP's GELU in their cuBLASLt epilogue
 * (GELU_AUX_BIAS forward, DGELU backward; cuda_lt.cu). For tests and
 * benchmarks. */
long reed_cuda_lt_gelu_calls(void);

/* Linear forwards so far that wrote only their output's sole bf16 view
 * (cuBLASLt, bf16 D; cuda_ops.cu's linear_forward_sole). For tests and
 * benchmarks. */
long reed_cuda_lt_bf16_out_calls(void);

/* Sole views made for outputs that first passed probation (cuda_view.cu:
 * linear forward outputs and fresh input gradients read only as bf16).
 * For tests. */
long reed_cuda_view_proven(void);

/* A CUDA, cuBLAS or cuDNN call failed (a bug or a sticky device error):
 * the backend calls this handler with a one-line message naming the call
 * and its file:line, then abort()s. The default prints to stderr; a UI that
 * owns the terminal installs one that restores the screen first. NULL
 * restores the default. */
void reed_cuda_set_fatal_handler(void (*handler)(const char *msg));

/* The per-op profile (REED_CUDA_PROFILE=1 in the environment when the
 * backend starts): GPU time and host time per op of the table; with
 * REED_CUDA_PROFILE=2 also the linear ops by shape, with TFLOP/s. reset
 * forgets what was measured so far (after warm-up steps, say); report
 * prints a table sorted by GPU time and returns 0, or returns -1 and
 * prints nothing when profiling is off. */
void reed_cuda_profile_reset(void);
int reed_cuda_profile_report(FILE *f);

#ifdef __cplusplus
}
#endif

#endif
