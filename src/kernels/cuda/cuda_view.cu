/* bf16 views of GEMM inputs.
 *
 * In the bf16-operands mode every GEMM reads bf16 copies of its fp32
 * operands (cuda_ops.cu). Most inputs of a linear layer are the output of
 * the op just before it (ln_modulate → qkv and fc1, gelu → fc2, the
 * gradients from gelu_backward and gated_add_backward → the linear
 * backward); that op now writes the bf16 copy too, in the same pass: the
 * "view" of its output. And the view a linear layer's forward used (or
 * made) serves its backward again, whose dw = doutᵀ·inp copied inp once
 * more. On SiT-B/2 at batch 256 that removes about 2.3 GB of copy traffic
 * per block and step.
 *
 * Correctness rests on one rule: a view is used only while its buffer has
 * not been written since the view was made. Every op of the table is
 * wrapped: before it runs, each view whose buffer holds the address of one
 * of the op's non-const pointer arguments is dropped (an op of ops.h writes
 * exactly through its non-const pointers), and cuda_mem_free drops the
 * views of the block it frees. A write through a pointer to before a
 * view's buffer that runs on into it would go unseen; no caller writes
 * across buffers like that, and REED_CUDA_VIEW_CHECK=1 compares every view
 * with a fresh copy of its buffer before use and fails on a difference
 * (the GPU training tests run with it).
 *
 * Views have device memory of their own, one block per buffer, reused step
 * after step. When the device runs out of memory, cuda_mem_alloc gives the
 * views back (except those of the running op) and tries again.
 * REED_CUDA_VIEWS=0: no views; every GEMM copies its operands.
 * All of this runs on the thread that owns the backend (the engine's). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "cuda_internal.h"
#include "reed_cuda.h"

typedef struct view {
    const float *src;     /* the fp32 buffer */
    size_t n;             /* values of src the view holds; 0: not valid */
    __nv_bfloat16 *bf;    /* device memory, or NULL */
    size_t cap;           /* values bf has room for */
    unsigned long op;     /* the op that last made or used it */
} view;

static struct {
    int env_off;          /* REED_CUDA_VIEWS=0 */
    int on;               /* reed_cuda_set_views */
    int check;            /* REED_CUDA_VIEW_CHECK=1 */
    view *v;
    int nv, cap;
    unsigned long op;     /* ops started so far: the running op's number */
    long hits;            /* views used instead of a copy */
} views;

static int views_active(void) { return views.on && cuda_bf16_gemms(); }

static view *find(const float *src)
{
    for (int i = 0; i < views.nv; i++)
        if (views.v[i].src == src)
            return &views.v[i];
    return NULL;
}

static view *find_or_add(const float *src)
{
    view *v = find(src);
    if (v)
        return v;
    if (views.nv == views.cap) {
        const int cap = views.cap ? 2 * views.cap : 64;
        view *grown = (view *)realloc(views.v, (size_t)cap * sizeof *grown);
        if (!grown)
            return NULL;
        views.v = grown;
        views.cap = cap;
    }
    v = &views.v[views.nv++];
    memset(v, 0, sizeof *v);
    v->src = src;
    return v;
}

__nv_bfloat16 *cuda_view_out(const float *x, size_t n)
{
    if (!views_active() || !n)
        return NULL;
    view *v = find_or_add(x);
    if (!v)
        return NULL;
    v->n = 0;
    v->op = views.op; // the running op's: not given back below
    if (v->cap < n) {
        cuda_mem_free(v->bf);
        v->bf = NULL, v->cap = 0;
        // find_or_add's pointer stays valid: giving views back on a failed
        // allocation frees their memory but never moves the table.
        v->bf = (__nv_bfloat16 *)cuda_mem_alloc(n * sizeof(__nv_bfloat16));
        if (!v->bf)
            return NULL; // out of memory: the consumer copies
        v->cap = n;
    }
    v->n = n;
    return v->bf;
}

/* --- REED_CUDA_VIEW_CHECK --------------------------------------------------------- */

/* Per block: how many of v[i] differ from bf16(x[i]) (the first pass of a
 * two-pass sum). */
__global__ void view_diff_kernel(double *partial, const __nv_bfloat16 *v,
                                 const float *x, size_t n)
{
    double bad = 0.0;
    GRID_LOOP(i, n)
        bad += __bfloat16_as_ushort(v[i]) != __bfloat16_as_ushort(__float2bfloat16(x[i]));
    bad = block_sum(bad);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = bad;
}

static void check_view(const view *v, size_t n)
{
    const unsigned blocks = red_blocks(n);
    view_diff_kernel<<<blocks, RED_THREADS, 0, g_cuda.stream>>>(g_cuda.red_partial, v->bf,
                                                                v->src, n);
    LAUNCH_CHECK("view_diff_kernel");
    const double bad = cuda_finish_sum((int)blocks);
    if (bad != 0.0) {
        char msg[160];
        snprintf(msg, sizeof msg, "the bf16 view of buffer %p is stale: %.0f of %zu values differ",
                 (const void *)v->src, bad, n);
        cuda_fatal("REED_CUDA_VIEW_CHECK", msg, __FILE__, __LINE__);
    }
}

const __nv_bfloat16 *cuda_view_get(const float *x, size_t n)
{
    if (!views_active() || !n)
        return NULL;
    view *v = find(x);
    if (!v || v->n < n)
        return NULL;
    v->op = views.op;
    views.hits++;
    if (views.check)
        check_view(v, n);
    return v->bf;
}

const __nv_bfloat16 *cuda_view_or_copy(int slot, const float *x, size_t n, int keep)
{
    const __nv_bfloat16 *got = cuda_view_get(x, n);
    if (got)
        return got;
    __nv_bfloat16 *kept = keep ? cuda_view_out(x, n) : NULL;
    if (!kept)
        return cuda_bf16_copy(slot, x, n);
    cuda_bf16_convert(kept, x, n);
    return kept;
}

/* --- dropping views ------------------------------------------------------------ */

void cuda_view_written(const void *p)
{
    const char *c = (const char *)p;
    for (int i = 0; i < views.nv; i++) {
        view *v = &views.v[i];
        const char *s = (const char *)v->src;
        if (v->n && c >= s && c < s + v->n * sizeof(float))
            v->n = 0;
    }
}

void cuda_view_freed(const void *p, size_t bytes)
{
    const char *c = (const char *)p;
    for (int i = 0; i < views.nv;) {
        view *v = &views.v[i];
        const char *s = (const char *)v->src;
        if (s >= c && s < c + bytes) {
            __nv_bfloat16 *bf = v->bf;
            *v = views.v[--views.nv]; // the last entry moves here; look at it next
            cuda_mem_free(bf);
        } else {
            i++;
        }
    }
}

int cuda_view_release(void)
{
    int released = 0;
    for (int i = 0; i < views.nv; i++) {
        view *v = &views.v[i];
        if (v->bf && v->op != views.op) {
            cuda_mem_free(v->bf);
            v->bf = NULL, v->cap = 0, v->n = 0;
            released++;
        }
    }
    return released;
}

/* --- the table's one wrapper ------------------------------------------------------ */

/* An op writes through its non-const pointer arguments (host pointers
 * among them, download's destination say, match no view). */
template <typename T> static inline void note_write(T arg)
{
    if constexpr (std::is_pointer<T>::value &&
                  !std::is_const<typename std::remove_pointer<T>::type>::value)
        cuda_view_written((const void *)arg);
}

/* What every op of the table does first: flush a pending zero unless it
 * takes it itself (cuda_zero.cu), count itself, and drop the views of what
 * it writes. */
template <typename F, F reed_ops::*M> struct tracked;
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
struct tracked<R (*)(A...), M> {
    static R (*inner)(A...);
    static int flush_first;
    static R call(A... a)
    {
        if (flush_first)
            cuda_zero_flush();
        views.op++;
        const int written[] = {0, (note_write(a), 0)...};
        (void)written;
        return inner(a...);
    }
};
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
R (*tracked<R (*)(A...), M>::inner)(A...);
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
int tracked<R (*)(A...), M>::flush_first;

void cuda_ops_wrap(reed_ops *t)
{
    const char *env = getenv("REED_CUDA_VIEWS");
    views.env_off = env && env[0] == '0';
    views.on = !views.env_off;
    const char *check = getenv("REED_CUDA_VIEW_CHECK");
    views.check = check && check[0] == '1';
#define TRACK(slot)                                                           \
    if (t->slot) {                                                            \
        using W = tracked<decltype(t->slot), &reed_ops::slot>;                \
        W::inner = t->slot;                                                   \
        W::flush_first = !cuda_zero_consumer(#slot);                          \
        t->slot = W::call;                                                    \
    }
    REED_OP_SLOTS(TRACK)
#undef TRACK
}

extern "C" int reed_cuda_set_views(int on)
{
    views.on = on != 0 && !views.env_off;
    return views.on && g_cuda.bf16_operands;
}

extern "C" long reed_cuda_view_hits(void) { return views.hits; }
