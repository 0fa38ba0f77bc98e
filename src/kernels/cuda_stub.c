/* The CUDA entry points in a build without the CUDA backend: there is no
 * CUDA op table, and the settings of reed_cuda.h do nothing. */
#include <stdio.h>

#include "ops.h"
#include "reed_cuda.h"

const reed_ops *reed_ops_cuda(char *why, size_t cap)
{
#ifdef REED_CUDA_DISABLED
    const char *reason = "it was configured with -DREED_CUDA=OFF";
#else
    const char *reason = "the CUDA toolkit was not found at configure time";
#endif
    if (why && cap)
        snprintf(why, cap, "this build has no CUDA backend (%s)", reason);
    return NULL;
}

int reed_cuda_absent(void) { return 1; }
void reed_cuda_set_precision(int bf16) { (void)bf16; }
int reed_cuda_precision(void) { return 0; }
int reed_cuda_set_cudnn(int on) { (void)on; return 0; }
long reed_cuda_conv_fallbacks(void) { return 0; }
void reed_cuda_set_attention(int mode) { (void)mode; }
void reed_cuda_set_flash(int forward, int backward) { (void)forward, (void)backward; }
void reed_cuda_flash_variant_calls(long *forward, long *backward) { *forward = *backward = 0; }
int reed_cuda_attention_path(int B, int T, int C, int NH)
{
    (void)B, (void)T, (void)C, (void)NH;
    return 0;
}
int reed_cuda_set_views(int on) { (void)on; return 0; }
long reed_cuda_view_hits(void) { return 0; }
int reed_cuda_set_view_sole(int on) { (void)on; return 0; }
void reed_cuda_view_sole_counts(long *made, long *materialized) { *made = *materialized = 0; }
long reed_cuda_lt_bgrad_calls(void) { return 0; }
long reed_cuda_lt_gelu_calls(void) { return 0; }
long reed_cuda_lt_bf16_out_calls(void) { return 0; }
long reed_cuda_view_proven(void) { return 0; }
long reed_cuda_copies_folded(void) { return 0; }
int reed_cuda_set_lazy_min(size_t bytes) { (void)bytes; return 0; }
void reed_cuda_lazy_bytes(size_t *requested, size_t *mapped) { *requested = *mapped = 0; }
void reed_cuda_lazy_buffer(const void *p, size_t *requested, size_t *mapped)
{
    (void)p;
    *requested = *mapped = 0;
}
void reed_cuda_set_fatal_handler(void (*handler)(const char *msg)) { (void)handler; }
void reed_cuda_profile_reset(void) {}
int reed_cuda_profile_report(FILE *f) { (void)f; return -1; }
