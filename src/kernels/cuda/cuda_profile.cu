/* Per-op profile of the CUDA backend, to see where a training step's time
 * goes (REED_CUDA_PROFILE=1, read by reed_ops_cuda at start-up).
 *
 * Profiling replaces every slot of the op table by a wrapper that brackets
 * the op's work on the stream with two CUDA events and also measures the
 * host time spent in the call (launch overhead, or a wait for ops with a
 * host result). Events are read back in batches, when the ring of pending
 * pairs is full or a report is asked for, so the stream is not serialised
 * op by op; a flush does wait for the stream, about once per RING ops.
 * Without the variable nothing here runs and the table is untouched. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <type_traits>

#include "cuda_internal.h"
#include "reed_cuda.h"

#define MAX_OPS 96
#define RING 4096

typedef struct op_stat {
    const char *name;
    long calls;
    double gpu_ms, host_ms;
} op_stat;

typedef struct pending {
    cudaEvent_t start, stop;
    int op;
} pending;

static struct {
    int on;
    reed_ops inner; /* the unwrapped table */
    op_stat ops[MAX_OPS];
    int nops;
    pending ring[RING];
    int nring;
} prof;

static double host_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Adds the GPU time of every pending pair to its op; waits for the last. */
static void flush(void)
{
    if (prof.nring == 0)
        return;
    CUDA_CHECK(cudaEventSynchronize(prof.ring[prof.nring - 1].stop));
    for (int i = 0; i < prof.nring; i++) {
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, prof.ring[i].start, prof.ring[i].stop));
        prof.ops[prof.ring[i].op].gpu_ms += ms;
    }
    prof.nring = 0;
}

static double begin(void)
{
    if (prof.nring == RING)
        flush();
    CUDA_CHECK(cudaEventRecord(prof.ring[prof.nring].start, g_cuda.stream));
    return host_ms();
}

static void end(int op, double t0)
{
    pending *p = &prof.ring[prof.nring++];
    CUDA_CHECK(cudaEventRecord(p->stop, g_cuda.stream));
    p->op = op;
    prof.ops[op].calls++;
    prof.ops[op].host_ms += host_ms() - t0;
}

/* The wrapper of slot M of the table, whose type is R (*)(A...): calls the
 * unwrapped op between begin() and end(). */
template <typename F, F reed_ops::*M> struct timed;
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
struct timed<R (*)(A...), M> {
    static int op;
    static R call(A... a)
    {
        const double t0 = begin();
        if constexpr (std::is_void_v<R>) {
            (prof.inner.*M)(a...);
            end(op, t0);
        } else {
            R r = (prof.inner.*M)(a...);
            end(op, t0);
            return r;
        }
    }
};
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
int timed<R (*)(A...), M>::op;

/* Wraps one slot (left NULL when the backend does not implement it). */
#define WRAP(slot)                                                            \
    do {                                                                      \
        if (t->slot && prof.nops < MAX_OPS) {                                 \
            using W = timed<decltype(t->slot), &reed_ops::slot>;              \
            W::op = prof.nops;                                                \
            prof.ops[prof.nops++].name = #slot;                               \
            t->slot = W::call;                                                \
        }                                                                     \
    } while (0)

#define WRAP_SLOT(slot) WRAP(slot);

void cuda_profile_wrap(reed_ops *t)
{
    const char *env = getenv("REED_CUDA_PROFILE");
    if (!env || env[0] != '1')
        return;
    for (int i = 0; i < RING; i++) {
        CUDA_CHECK(cudaEventCreate(&prof.ring[i].start));
        CUDA_CHECK(cudaEventCreate(&prof.ring[i].stop));
    }
    prof.inner = *t;
    prof.on = 1;
    REED_OP_SLOTS(WRAP_SLOT)
}

extern "C" void reed_cuda_profile_reset(void)
{
    if (!prof.on)
        return;
    flush();
    for (int i = 0; i < prof.nops; i++)
        prof.ops[i].calls = 0, prof.ops[i].gpu_ms = prof.ops[i].host_ms = 0.0;
}

static int by_gpu_time(const void *a, const void *b)
{
    const double x = ((const op_stat *)a)->gpu_ms, y = ((const op_stat *)b)->gpu_ms;
    return (x < y) - (x > y);
}

extern "C" int reed_cuda_profile_report(FILE *f)
{
    if (!prof.on)
        return -1;
    flush();
    op_stat sorted[MAX_OPS];
    double total = 0.0;
    for (int i = 0; i < prof.nops; i++)
        sorted[i] = prof.ops[i], total += prof.ops[i].gpu_ms;
    qsort(sorted, (size_t)prof.nops, sizeof *sorted, by_gpu_time);
    fprintf(f, "%-32s %8s %11s %9s %7s %11s\n", "op (REED_CUDA_PROFILE)", "calls",
            "GPU ms", "us/call", "share", "host ms");
    for (int i = 0; i < prof.nops && sorted[i].calls; i++)
        fprintf(f, "%-32s %8ld %11.2f %9.1f %6.1f%% %11.2f\n", sorted[i].name,
                sorted[i].calls, sorted[i].gpu_ms, 1e3 * sorted[i].gpu_ms / sorted[i].calls,
                total > 0 ? 100.0 * sorted[i].gpu_ms / total : 0.0, sorted[i].host_ms);
    fprintf(f, "%-32s %8s %11.2f\n", "total", "", total);
    return 0;
}
