/* Lazy zeroing: the zero op defers its memset until an op needs it, and
 * the backward op that would add into the freshly zeroed gradient buffer
 * writes it instead (cuda_internal.h says how). The engine zeroes each
 * activation gradient before the op that accumulates into it; on SiT-B/2
 * at batch 256 those memsets are about 3 GB of writes per block, and the
 * beta = 1 GEMMs after them read the zeros back.
 *
 * One buffer is pending at a time. Every op of the table but the consumers
 * is wrapped so that it flushes first (a memset on the stream, in order),
 * as are mem_free and synchronize; the consumers call cuda_zero_take at
 * their start, which flushes unless their output is the pending buffer.
 * All of this runs on the thread that owns the backend (the engine's). */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

static struct {
    int off;    /* REED_CUDA_LAZY_ZERO=0 */
    void *p;    /* the pending buffer, or NULL */
    size_t bytes;
} lazy;

void cuda_zero_flush(void)
{
    if (!lazy.p)
        return;
    CUDA_CHECK(cudaMemsetAsync(lazy.p, 0, lazy.bytes, g_cuda.stream));
    lazy.p = NULL;
}

void cuda_zero_lazy(void *p, size_t bytes)
{
    cuda_zero_flush();
    if (!bytes)
        return;
    if (lazy.off) {
        CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, g_cuda.stream));
        return;
    }
    lazy.p = p;
    lazy.bytes = bytes;
}

int cuda_zero_take(const void *p, size_t bytes)
{
    if (lazy.p && lazy.p == p && lazy.bytes == bytes) {
        lazy.p = NULL;
        return 1;
    }
    cuda_zero_flush();
    return 0;
}

/* The wrapper of one slot: flush, then the op. */
template <typename F, F reed_ops::*M> struct flushed;
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
struct flushed<R (*)(A...), M> {
    static R (*inner)(A...);
    static R call(A... a)
    {
        cuda_zero_flush();
        return inner(a...);
    }
};
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
R (*flushed<R (*)(A...), M>::inner)(A...);

#define FLUSH_FIRST(slot)                                                     \
    do {                                                                      \
        if (t->slot) {                                                        \
            using W = flushed<decltype(t->slot), &reed_ops::slot>;            \
            W::inner = t->slot;                                               \
            t->slot = W::call;                                                \
        }                                                                     \
    } while (0);

/* The consumers take the pending buffer themselves. */
static int is_consumer(const char *slot)
{
    static const char *const names[] = {"zero",          "linear_backward",
                                        "gelu_backward", "silu_backward",
                                        "gated_add_backward", "attention_backward"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(slot, names[i]) == 0)
            return 1;
    return 0;
}

void cuda_zero_wrap(reed_ops *t)
{
    const char *env = getenv("REED_CUDA_LAZY_ZERO");
    lazy.off = env && env[0] == '0';
    if (lazy.off)
        return;
#define WRAP_UNLESS_CONSUMER(slot)                                            \
    if (!is_consumer(#slot))                                                  \
        FLUSH_FIRST(slot)
    REED_OP_SLOTS(WRAP_UNLESS_CONSUMER)
#undef WRAP_UNLESS_CONSUMER
    FLUSH_FIRST(mem_free)
    FLUSH_FIRST(synchronize)
}
