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
 * Sole views. Where the fp32 buffer itself would be read by nothing but
 * GEMMs (which read the view), its producer may skip writing it: the view
 * is then "sole", the only copy of the values. Before each op, every
 * pointer argument that points into a sole view's buffer makes the view
 * write its values back to fp32 first ("materialize", rounded to bf16:
 * the precision the GEMMs saw), except the arguments an op reads through
 * views (linear's inp, its backward's dout and inp, the linear_gelu ops'
 * inputs) or overwrites whole itself (zero, and the producers' outputs).
 * On SiT-B/2 the producers are ln_modulate and gelu forward, and
 * gelu_backward, gated_add_backward and the attention backward (flash and
 * GEMM paths) on a freshly zeroed gradient; nothing reads their fp32 output in a training step,
 * which saves about 2.4 GB of writes per block and step. The linear_gelu
 * ops' GEMMs write sole views themselves (cuda_view_sole_only): the MLP's
 * pre-activation, its GELU, and the gradient through the GELU; where the
 * backward runs its parts instead, it writes pre's view back to read it.
 * So does a linear forward with a bias (cuBLASLt, bf16 D), but only for an
 * output that passed probation (cuda_view_sole_proven): written in fp32 by
 * one call, and read by no op in fp32 before the next call (on SiT the qkv
 * projection, which only the attention reads through its view; not on the
 * fused attention path, which reads qkv in fp32, nor the outputs going
 * into the gated residual). So a linear output is never rounded to bf16
 * for an fp32 reader, not even once. The linear backward treats a freshly
 * zeroed input gradient the same way (on SiT the projection's would pass,
 * read only by the attention backward, but it shares its buffer with the
 * gradients the LayerNorm backward reads in fp32). The flash forward
 * writes the attention output's view, which only the projection after it
 * reads.
 * Like the write rule above, this assumes an op reads
 * through a pointer only within the buffer it points into (the engine
 * carves its buffers out of one block, and each op argument is one of
 * them). A zero or a producer's write that covers a part of a sole view
 * writes back the rest first. REED_CUDA_VIEW_SOLE=0 turns sole views off.
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
#include <utility>

#include "cuda_internal.h"
#include "reed_cuda.h"

typedef struct view {
    const float *src;     /* the fp32 buffer */
    size_t n;             /* values of src the view holds; 0: not valid */
    __nv_bfloat16 *bf;    /* device memory, or NULL */
    size_t cap;           /* values bf has room for */
    unsigned long op;     /* the op that last made or used it */
    int sole;             /* src's values not written: bf is their only copy */
    int read_back;        /* a sole view of src was read back: never sole again */
    size_t probe_n;       /* values of src on probation (cuda_view_sole_proven) */
    int probe_read;       /* an op read them in fp32 while on probation */
    int proven;           /* probation passed: sole from now on (until read back) */
} view;

static struct {
    int env_off;          /* REED_CUDA_VIEWS=0 */
    int on;               /* reed_cuda_set_views */
    int check;            /* REED_CUDA_VIEW_CHECK=1 */
    int sole_off;         /* REED_CUDA_VIEW_SOLE=0, or reed_cuda_set_view_sole(0) */
    size_t sole_min;      /* values: smaller outputs are not made sole */
    int nsole;            /* sole views now */
    int nprobe;           /* buffers on probation now */
    long sole_made, materialized; /* counts so far */
    long proven;          /* sole views made after probation (counted) */
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

/* --- sole views ------------------------------------------------------------------ */

/* Outputs of fewer values (REED_CUDA_VIEW_SOLE_MIN, default 2^18) are
 * written in fp32 too: too small to matter, and the small ones the engine
 * has (the conditioning's gradients) have readers other than GEMMs. */
#define SOLE_MIN_DEFAULT ((size_t)1 << 18)

__global__ void from_bf16_kernel(float *y, const __nv_bfloat16 *x, size_t n)
{
    GRID_LOOP(i, n)
        y[i] = __bfloat162float(x[i]);
}

static void unsole(view *v)
{
    v->sole = 0;
    views.nsole--;
}

/* A sole view writes its values to its buffer and stays, a true copy now.
 * reader: for an op that reads them, after which the buffer is never made
 * sole again (its producer's output has a reader other than GEMMs). */
static void materialize(view *v, int reader)
{
    if (v->n) {
        cuda_lazy_back(v->src, v->n * sizeof(float));
        from_bf16_kernel<<<grid_for(v->n, THREADS), THREADS, 0, g_cuda.stream>>>(
            (float *)v->src, v->bf, v->n);
        LAUNCH_CHECK("from_bf16_kernel");
    }
    unsole(v);
    v->read_back |= reader;
    views.materialized++;
}

/* Views overlapping [p, p + bytes). */
static int overlaps(const view *v, const char *a, const char *b)
{
    const char *s = (const char *)v->src;
    return v->n && s < b && s + v->n * sizeof(float) > a;
}

/* An op reads [a, b) in fp32: the buffers on probation there fail it. */
static void probe_reads(const char *a, const char *b)
{
    for (int i = 0; views.nprobe && i < views.nv; i++) {
        view *v = &views.v[i];
        const char *s = (const char *)v->src;
        if (v->probe_n && s < b && s + v->probe_n * sizeof(float) > a)
            v->probe_read = 1;
    }
}

void cuda_view_need(const void *p)
{
    probe_reads((const char *)p, (const char *)p + 1);
    for (int i = 0; views.nsole && i < views.nv; i++) {
        view *v = &views.v[i];
        const char *s = (const char *)v->src, *c = (const char *)p;
        if (v->sole && c >= s && c < s + v->n * sizeof(float)) {
            materialize(v, 1);
            return;
        }
    }
}

/* The sole views in [p, p + bytes) write back (a GEMM operand's copy is
 * about to read the buffer: no fp32 reader, so no probation fails). */
static void need_range_for_copy(const void *p, size_t bytes)
{
    const char *a = (const char *)p;
    for (int i = 0; views.nsole && i < views.nv; i++)
        if (views.v[i].sole && overlaps(&views.v[i], a, a + bytes))
            materialize(&views.v[i], 1);
}

void cuda_view_need_range(const void *p, size_t bytes)
{
    cuda_lazy_back(p, bytes);
    probe_reads((const char *)p, (const char *)p + bytes);
    need_range_for_copy(p, bytes);
}

/* An op is about to write [p, p + bytes): every view overlapping that is
 * dropped. A sole one writes back its values first when the op reads them
 * (read: it adds to them, or copies them) or a part of them outlives the
 * write. */
static void overwritten(const void *p, size_t bytes, int read)
{
    const char *a = (const char *)p, *b = a + bytes;
    for (int i = 0; i < views.nv; i++) {
        view *v = &views.v[i];
        if (!overlaps(v, a, b))
            continue;
        const char *s = (const char *)v->src, *e = s + v->n * sizeof(float);
        if (v->sole && (read || s < a || e > b))
            materialize(v, read);
        else if (v->sole)
            unsole(v);
        v->n = 0;
    }
}

void cuda_view_overwrite(const void *p, size_t bytes)
{
    cuda_lazy_back(p, bytes);
    overwritten(p, bytes, 0);
}

void cuda_view_zeroed(const void *p, size_t bytes) { overwritten(p, bytes, 0); }

/* x's view for an op writing x(n); read: the op reads x's old values. */
static view *view_out(const float *x, size_t n, int read)
{
    if (!views_active() || !n)
        return NULL;
    overwritten(x, n * sizeof(float), read); // x's old view and any other there
    view *v = find_or_add(x);
    if (!v)
        return NULL;
    v->op = views.op; // the running op's: not given back below
    if (v->cap < n) {
        cuda_mem_free_own(v->bf);
        v->bf = NULL, v->cap = 0;
        // find_or_add's pointer stays valid: giving views back on a failed
        // allocation frees their memory but never moves the table.
        v->bf = (__nv_bfloat16 *)cuda_mem_alloc(n * sizeof(__nv_bfloat16));
        if (!v->bf)
            return NULL; // out of memory: the consumer copies
        v->cap = n;
    }
    v->n = n;
    return v;
}

__nv_bfloat16 *cuda_view_out(const float *x, size_t n)
{
    cuda_lazy_back(x, n * sizeof(float)); // written in fp32 too
    view *v = view_out(x, n, 1);
    return v ? v->bf : NULL;
}

/* Whether an output of n values whose view is v (or NULL: none yet) may
 * be made sole. */
static int may_be_sole(const view *v, size_t n)
{
    return !views.sole_off && !(v && v->read_back) && n >= views.sole_min;
}

__nv_bfloat16 *cuda_view_out_sole(const float *x, size_t n, int *skip)
{
    view *v = view_out(x, n, 0);
    *skip = v && may_be_sole(v, n);
    if (*skip) {
        v->sole = 1;
        views.nsole++;
        views.sole_made++;
    } else {
        cuda_lazy_back(x, n * sizeof(float)); // written in fp32
    }
    return v ? v->bf : NULL;
}

__nv_bfloat16 *cuda_view_sole_only(const float *x, size_t n)
{
    if (!views_active() || !n || !may_be_sole(find(x), n))
        return NULL;
    int skip;
    __nv_bfloat16 *bf = cuda_view_out_sole(x, n, &skip);
    return bf && skip ? bf : NULL;
}

/* Probation: the first call for x starts it (NULL: write x in fp32); an
 * fp32 read of x before the next call fails it for good (read_back); a
 * next call with none passes it, and from then on x's view is sole. */
__nv_bfloat16 *cuda_view_sole_proven(const float *x, size_t n)
{
    if (!views_active() || !n || !may_be_sole(find(x), n))
        return NULL;
    view *v = find_or_add(x);
    if (!v)
        return NULL;
    if (!v->proven && v->probe_n != n) { // new, or another size: (re)start
        views.nprobe += !v->probe_n;
        v->probe_n = n;
        v->probe_read = 0;
        return NULL;
    }
    if (v->probe_n) { // the second call: passed or failed, probation ends
        v->probe_n = 0;
        views.nprobe--;
        v->proven = !v->probe_read;
        v->read_back |= v->probe_read;
        if (!v->proven)
            return NULL;
    }
    __nv_bfloat16 *bf = cuda_view_sole_only(x, n);
    views.proven += bf != NULL;
    return bf;
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
    if (views.check && !v->sole) // a sole view has nothing to compare with
        check_view(v, n);
    return v->bf;
}

const __nv_bfloat16 *cuda_view_or_copy(int slot, const float *x, size_t n, int keep)
{
    const __nv_bfloat16 *got = cuda_view_get(x, n);
    if (got)
        return got;
    cuda_lazy_back(x, n * sizeof(float)); // the copy reads x in fp32
    need_range_for_copy(x, n * sizeof(float)); // sole views this read covers
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
        // A sole view here belongs to an argument the op overwrites itself
        // (cuda_view_overwrite, cuda_view_out); any other was materialized.
        if (v->n && !v->sole && c >= s && c < s + v->n * sizeof(float))
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
            if (v->sole)
                unsole(v); // the values go with the block
            views.nprobe -= v->probe_n != 0;
            __nv_bfloat16 *bf = v->bf;
            *v = views.v[--views.nv]; // the last entry moves here; look at it next
            cuda_mem_free_own(bf);
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
        // A sole view of a buffer with no memory mapped (cuda_lazy.cu)
        // stays: writing it back would take more memory than it gives.
        if (v->bf && v->op != views.op &&
            !(v->sole && !cuda_lazy_backed(v->src, v->n * sizeof(float)))) {
            if (v->sole)
                materialize(v, 0); // before its memory goes
            cuda_mem_free_own(v->bf);
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

/* An op may read through a pointer argument: a sole view there writes its
 * values back first, unless the argument is exempt. */
template <typename T> static inline void note_read(T arg, int exempt)
{
    if constexpr (std::is_pointer<T>::value)
        if (!exempt)
            cuda_view_need((const void *)arg);
}

/* What an op's pointer arguments (bit i: the i-th) let the wrapper skip.
 * exempt: those a sole view may stay behind, read through views or
 * overwritten by the op itself, which handles them (cuda_view_out and
 * cuda_view_out_sole for what it writes, cuda_view_need_range where it
 * reads fp32 or adds, cuda_view_overwrite and cuda_view_zeroed).
 * self_backed: those the op backs itself where they are buffers backed on
 * first use (cuda_lazy.cu): the outputs it may write as sole views alone
 * (the activations' backward and gated_add_backward among them: their
 * gradient is written anew as a sole view, or backed by cuda_view_out),
 * the inputs it reads through views, and the attention's att and scratch,
 * of which its path uses a part; their fp32 use goes through the calls
 * that back it (those above, cuda_view_or_copy's copy, materialize, the
 * zero op's memset, the explicit cuda_lazy_back of the attention paths and
 * the linear backward). The wrapper backs the whole buffer of every other
 * pointer argument. */
typedef struct arg_rules {
    unsigned exempt, self_backed;
} arg_rules;

static arg_rules op_args(const char *slot)
{
#define A(i) (1u << (i))
    static const struct {
        const char *slot;
        arg_rules args;
    } table[] = {
        // slot                   exempt                     self_backed
        {"linear_forward",       {A(0) | A(1),               A(0) | A(1)}}, // out, inp
        {"linear_backward",      {A(0) | A(3) | A(4),        A(0) | A(3) | A(4)}}, // dinp;
                                                                     // dout, inp
        {"linear_gelu_forward",  {A(0) | A(1) | A(2),        A(0) | A(1) | A(2)}}, // out,
                                                                     // pre; inp
        {"linear_gelu_backward", {A(0) | A(3) | A(4) | A(5), A(0) | A(3) | A(4) | A(5)}},
                                                     // dpre; dout, act, pre
        {"attention_forward",    {A(0) | A(2),               A(0) | A(1) | A(2)}}, // out,
                                                                     // att; qkv
        {"attention_backward",   {A(2) | A(3),               A(0) | A(1) | A(2) | A(3) | A(4)}},
                                                     // dqkv, scratch; dout, qkv, att
        {"zero",                 {A(0),                      A(0)}}, // p
        {"upload",               {A(0),                      0}},    // dst
        {"download",             {A(1),                      0}},    // src
        {"copy",                 {A(0) | A(1),               0}},    // dst, src
        {"ln_modulate_forward",  {A(0),                      A(0)}}, // out
        {"layernorm_forward",    {A(0),                      A(0)}}, // out
        {"gelu_forward",         {A(0),                      A(0)}}, // out
        {"silu_forward",         {A(0),                      A(0)}}, // out
        {"gelu_backward",        {0,                         A(0)}}, // dinp
        {"silu_backward",        {0,                         A(0)}}, // dinp
        {"gated_add_backward",   {0,                         A(0)}}, // dy
    };
#undef A
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (strcmp(slot, table[i].slot) == 0)
            return table[i].args;
    return arg_rules{0, 0};
}

/* An op reads or writes through a pointer argument in fp32 unless it backs
 * the argument itself: its whole buffer is backed first. */
template <typename T> static inline void note_use(T arg, int self_backed)
{
    if constexpr (std::is_pointer<T>::value)
        if (!self_backed)
            cuda_lazy_back_buffer((const void *)arg);
}

/* What every op of the table does first: flush a pending zero unless it
 * takes it itself (cuda_zero.cu), count itself, materialize the sole views
 * it may read, and drop the views of what it writes. */
template <typename F, F reed_ops::*M> struct tracked;
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
struct tracked<R (*)(A...), M> {
    static R (*inner)(A...);
    static int flush_first;
    static arg_rules rules;
    // Exemptions hold only while the GEMMs read views.
    template <size_t... I> static void need(std::index_sequence<I...>, A... a)
    {
        const unsigned ex = views_active() ? rules.exempt : 0;
        const int read[] = {0, (note_read(a, (ex >> I) & 1), 0)...};
        (void)read;
    }
    template <size_t... I> static void back(std::index_sequence<I...>, A... a)
    {
        const unsigned self = views_active() ? rules.self_backed : 0;
        const int used[] = {0, (note_use(a, (self >> I) & 1), 0)...};
        (void)used;
    }
    static R call(A... a)
    {
        if (flush_first)
            cuda_zero_flush();
        views.op++;
        back(std::index_sequence_for<A...>{}, a...);
        if (views.nsole || views.nprobe)
            need(std::index_sequence_for<A...>{}, a...);
        const int written[] = {0, (note_write(a), 0)...};
        (void)written;
        return inner(a...);
    }
};
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
R (*tracked<R (*)(A...), M>::inner)(A...);
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
int tracked<R (*)(A...), M>::flush_first;
template <typename R, typename... A, R (*reed_ops::*M)(A...)>
arg_rules tracked<R (*)(A...), M>::rules;

void cuda_ops_wrap(reed_ops *t)
{
    const char *env = getenv("REED_CUDA_VIEWS");
    views.env_off = env && env[0] == '0';
    views.on = !views.env_off;
    const char *check = getenv("REED_CUDA_VIEW_CHECK");
    views.check = check && check[0] == '1';
    const char *sole = getenv("REED_CUDA_VIEW_SOLE");
    views.sole_off = sole && sole[0] == '0';
    const char *sole_min = getenv("REED_CUDA_VIEW_SOLE_MIN");
    views.sole_min = sole_min ? (size_t)strtoull(sole_min, NULL, 10) : SOLE_MIN_DEFAULT;
#define TRACK(slot)                                                           \
    if (t->slot) {                                                            \
        using W = tracked<decltype(t->slot), &reed_ops::slot>;                \
        W::inner = t->slot;                                                   \
        W::flush_first = !cuda_zero_consumer(#slot);                          \
        W::rules = op_args(#slot);                                            \
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

extern "C" long reed_cuda_view_proven(void) { return views.proven; }

extern "C" int reed_cuda_set_view_sole(int on)
{
    const char *env = getenv("REED_CUDA_VIEW_SOLE");
    views.sole_off = !on || (env && env[0] == '0');
    return !views.sole_off;
}

extern "C" void reed_cuda_view_sole_counts(long *made, long *materialized)
{
    *made = views.sole_made;
    *materialized = views.materialized;
}
