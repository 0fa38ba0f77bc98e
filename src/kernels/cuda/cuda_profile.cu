/* Per-op profile of the CUDA backend, to see where a training step's time
 * goes (REED_CUDA_PROFILE=1, read by reed_ops_cuda at start-up).
 *
 * Profiling replaces every slot of the op table by a wrapper that brackets
 * the op's work on the stream with two CUDA events and also measures the
 * host time spent in the call (launch overhead, or a wait for ops with a
 * host result). Events are read back in batches, when the ring of pending
 * pairs is full or a report is asked for, so the stream is not serialised
 * op by op; a flush does wait for the stream, about once per RING ops.
 * REED_CUDA_PROFILE=2 also splits the linear ops by shape (their last three
 * arguments, N, C and OC) and gives each shape's rate, to see which GEMMs
 * fall short of cuBLAS's ceiling (bench_gemm_cuda).
 * Without the variable nothing here runs and the table is untouched. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tuple>
#include <type_traits>

#include "cuda_internal.h"
#include "reed_cuda.h"

#define MAX_OPS 96
#define MAX_SHAPES 160
#define RING 4096

/* An op, or with REED_CUDA_PROFILE=2 one shape of a linear op: N, C, OC,
 * and the GEMMs of N·C·OC multiply-adds a call runs (one a forward; a
 * backward's for dinp and dw, those not NULL). */
typedef struct op_stat {
    const char *name;
    long calls;
    double gpu_ms, host_ms;
    int N, C, OC, gemms;
} op_stat;

typedef struct pending {
    cudaEvent_t start, stop;
    int op, shape; /* shape: the op's shape entry, or op */
} pending;

static struct {
    int on;
    reed_ops inner; /* the unwrapped table */
    op_stat ops[MAX_OPS + MAX_SHAPES]; /* the ops, then the shapes */
    int nops, nshapes, by_shape;
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
        if (prof.ring[i].shape != prof.ring[i].op)
            prof.ops[prof.ring[i].shape].gpu_ms += ms;
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

static void end(int op, int shape, double t0)
{
    pending *p = &prof.ring[prof.nring++];
    CUDA_CHECK(cudaEventRecord(p->stop, g_cuda.stream));
    p->op = op, p->shape = shape;
    const double ms = host_ms() - t0;
    prof.ops[op].calls++;
    prof.ops[op].host_ms += ms;
    if (shape != op)
        prof.ops[shape].calls++, prof.ops[shape].host_ms += ms;
}

/* The entry of the linear op's shape, made on its first call; the op's
 * own entry where the shapes are full. */
static int shape_entry(int op, int N, int C, int OC, int gemms)
{
    op_stat *s = prof.ops + MAX_OPS;
    for (int i = 0; i < prof.nshapes; i++)
        if (s[i].name == prof.ops[op].name && s[i].N == N && s[i].C == C && s[i].OC == OC &&
            s[i].gemms == gemms)
            return MAX_OPS + i;
    if (prof.nshapes == MAX_SHAPES)
        return op;
    s[prof.nshapes] = op_stat{prof.ops[op].name, 0, 0.0, 0.0, N, C, OC, gemms};
    return MAX_OPS + prof.nshapes++;
}

/* The entry a call also counts in: its shape's, for a linear op (two output
 * pointers first, N, C, OC last) under REED_CUDA_PROFILE=2; else the op's. */
template <typename... A> static int entry_of(int op, A... a)
{
    using L = std::tuple<A...>;
    constexpr size_t n = sizeof...(A);
    if constexpr (n >= 5) {
        if constexpr (std::is_pointer_v<std::tuple_element_t<0, L>> &&
                      std::is_pointer_v<std::tuple_element_t<1, L>> &&
                      std::is_same_v<std::tuple_element_t<n - 3, L>, int> &&
                      std::is_same_v<std::tuple_element_t<n - 2, L>, int> &&
                      std::is_same_v<std::tuple_element_t<n - 1, L>, int>) {
            const char *name = prof.ops[op].name;
            if (!prof.by_shape || strncmp(name, "linear", 6) != 0)
                return op;
            const L t(a...);
            const int gemms = strstr(name, "backward")
                                  ? (std::get<0>(t) != NULL) + (std::get<1>(t) != NULL)
                                  : 1;
            return shape_entry(op, std::get<n - 3>(t), std::get<n - 2>(t), std::get<n - 1>(t),
                               gemms);
        }
    }
    return op;
}

/* The wrapper of slot M of the table, whose type is R (*)(A...): calls the
 * unwrapped op between begin() and end(). */
template <typename F, F reed_ops::*M> struct timed;
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
struct timed<R (*)(A...), M> {
    static int op;
    static R call(A... a)
    {
        const int e = entry_of(op, a...);
        const double t0 = begin();
        if constexpr (std::is_void_v<R>) {
            (prof.inner.*M)(a...);
            end(op, e, t0);
        } else {
            R r = (prof.inner.*M)(a...);
            end(op, e, t0);
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
    if (!env || (env[0] != '1' && env[0] != '2'))
        return;
    prof.by_shape = env[0] == '2';
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
    for (int i = 0; i < MAX_OPS + prof.nshapes; i++)
        prof.ops[i].calls = 0, prof.ops[i].gpu_ms = prof.ops[i].host_ms = 0.0;
}

static int by_gpu_time(const void *a, const void *b)
{
    const double x = ((const op_stat *)a)->gpu_ms, y = ((const op_stat *)b)->gpu_ms;
    return (x < y) - (x > y);
}

/* The linear ops by shape, sorted by GPU time, with their rate. */
static void report_shapes(FILE *f)
{
    op_stat sorted[MAX_SHAPES];
    int n = 0;
    for (int i = 0; i < prof.nshapes; i++)
        if (prof.ops[MAX_OPS + i].calls)
            sorted[n++] = prof.ops[MAX_OPS + i];
    qsort(sorted, (size_t)n, sizeof *sorted, by_gpu_time);
    fprintf(f, "%-21s %6s %5s %5s %5s %6s %9s %9s %8s\n", "linear op by shape", "N", "C",
            "OC", "GEMMs", "calls", "GPU ms", "us/call", "TFLOP/s");
    for (int i = 0; i < n; i++) {
        const op_stat *s = &sorted[i];
        const double flops = 2.0 * s->N * s->C * s->OC * s->gemms * s->calls;
        fprintf(f, "%-21s %6d %5d %5d %5d %6ld %9.2f %9.1f %8.1f\n", s->name, s->N, s->C,
                s->OC, s->gemms, s->calls, s->gpu_ms, 1e3 * s->gpu_ms / s->calls,
                s->gpu_ms > 0 ? flops / (s->gpu_ms * 1e9) : 0.0);
    }
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
    if (prof.by_shape)
        report_shapes(f);
    return 0;
}
