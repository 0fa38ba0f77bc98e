/* Lazy zeroing: the zero op defers its memset until an op needs it, and
 * the backward op that would add into the freshly zeroed gradient buffer
 * writes it instead (cuda_internal.h says how). The engine zeroes each
 * activation gradient before the op that accumulates into it; on SiT-B/2
 * at batch 256 those memsets are about 3 GB of writes per block, and the
 * beta = 1 GEMMs after them read the zeros back.
 *
 * One buffer is pending at a time. Every op of the table but the consumers
 * flushes first (a memset on the stream, in order: the one wrapper of every
 * op, cuda_view.cu's), as do mem_free and synchronize; the consumers call
 * cuda_zero_take at their start, which flushes unless their output is the
 * pending buffer.
 * The copy op is lazy the same way, for one consumer: the engine copies the
 * residual stream (x_in to mid, mid to x_out) right before adding the gated
 * branch into the copy, and gated_add_forward on exactly the pending copy
 * reads the source instead (x = src + gate·y in one pass: the copy's 2 ×
 * 200 MB of traffic per call on SiT-B/2 at batch 256 never happens).
 * One write, a zero or a copy, is pending at a time.
 * All of this runs on the thread that owns the backend (the engine's). */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "reed_cuda.h"

static struct {
    int off;         /* REED_CUDA_LAZY_ZERO=0 */
    void *p;         /* the pending buffer, or NULL */
    const void *src; /* a pending copy's source; NULL: a pending zero */
    size_t bytes;
    long folded;     /* copies taken by their consumer so far */
} lazy;

void cuda_zero_flush(void)
{
    if (!lazy.p)
        return;
    cuda_lazy_back(lazy.p, lazy.bytes); // the zero op leaves it to the memset
    if (lazy.src)
        CUDA_CHECK(cudaMemcpyAsync(lazy.p, lazy.src, lazy.bytes, cudaMemcpyDeviceToDevice,
                                   g_cuda.stream));
    else
        CUDA_CHECK(cudaMemsetAsync(lazy.p, 0, lazy.bytes, g_cuda.stream));
    lazy.p = NULL;
}

void cuda_zero_lazy(void *p, size_t bytes)
{
    cuda_zero_flush();
    if (!bytes)
        return;
    cuda_view_zeroed(p, bytes); // a sole view there is overwritten too
    if (lazy.off) {
        cuda_lazy_back(p, bytes);
        CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, g_cuda.stream));
        return;
    }
    lazy.p = p;
    lazy.src = NULL;
    lazy.bytes = bytes;
}

void cuda_copy_lazy(void *dst, const void *src, size_t bytes)
{
    cuda_zero_flush();
    if (!bytes || dst == src)
        return;
    // Sole views (cuda_view.cu) in the source write back first; the views
    // in the destination are stale once the copy is done.
    cuda_view_need_range(src, bytes);
    cuda_view_overwrite(dst, bytes);
    if (lazy.off) {
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g_cuda.stream));
        return;
    }
    lazy.p = dst;
    lazy.src = src;
    lazy.bytes = bytes;
}

int cuda_zero_take(const void *p, size_t bytes)
{
    if (lazy.p && !lazy.src && lazy.p == p && lazy.bytes == bytes) {
        lazy.p = NULL;
        return 1;
    }
    cuda_zero_flush();
    return 0;
}

const void *cuda_copy_take(const void *p, size_t bytes)
{
    if (lazy.p && lazy.src && lazy.p == p && lazy.bytes == bytes) {
        lazy.p = NULL;
        lazy.folded++;
        return lazy.src;
    }
    cuda_zero_flush();
    return NULL;
}

/* The ops that take the pending buffer themselves (cuda_zero_take). */
int cuda_zero_consumer(const char *slot)
{
    static const char *const names[] = {"zero",          "copy",
                                        "linear_backward", "gelu_backward",
                                        "silu_backward", "gated_add_backward",
                                        "attention_backward", "gated_add_forward"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(slot, names[i]) == 0)
            return 1;
    return 0;
}

void cuda_zero_init(void)
{
    const char *env = getenv("REED_CUDA_LAZY_ZERO");
    lazy.off = env && env[0] == '0';
}

extern "C" long reed_cuda_copies_folded(void) { return lazy.folded; }
