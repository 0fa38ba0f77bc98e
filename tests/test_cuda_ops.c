/* The CUDA op table against the CPU op table (kernels/ops.h), op by op.
 *
 * Without a usable GPU (or in a build without CUDA) it prints why and exits
 * 77, which ctest reports as skipped.
 *
 * With a GPU, every op runs on both backends on the same seeded random
 * inputs (never zero), at the model's shapes (N = B·T with B = 4 and
 * T = 49 or 64, C = 96/128/384, OC = 3C, heads 2..6 of size 32..96,
 * attention T up to 256, the teacher's and evaluator's convolutions) and at
 * small odd ones. Metric: err = max|cpu − gpu| / max(max|cpu|, 1e-6).
 *  - Forward outputs on the GPU are poisoned with NaN first, so an element
 *    the op fails to write fails the check.
 *  - Gradient outputs start from the same random values on both sides,
 *    which checks the += contract; linear, conv, modulate, ln_modulate and
 *    gated_add are also run with some gradient outputs NULL (and AdamW
 *    with and without its EMA). adaLN vectors are slices of
 *    a wider (B, ldm) matrix and the whole matrix is compared, so writes
 *    outside the slice fail.
 *  - Scalar results (double) are compared by relative error.
 *  - fp32 mode: tolerance 1e-5 (the backends differ only in summation
 *    order and in 1-ulp differences of exp/tanh); double results 1e-9.
 *    bf16 mode (reed_cuda_set_precision(1)): the GEMM ops (linear,
 *    attention, conv) again at 1e-2 — bf16 keeps 8 bits of mantissa.
 *  - Convolutions run through cuDNN and through the im2col + cuBLAS path;
 *    bf16 attention in auto mode, then on the GEMM path and on the fused
 *    kernels (reed_cuda_set_attention).
 *  - The memory functions: zeroed allocation, upload/download/copy/zero
 *    round trips, the byte count.
 * Prints one line per check and then the worst error per op; exits 1 on
 * any failure.
 *
 * REED_CUDA_TEST_ON_CPU=1 runs the whole test with the CPU table standing in
 * for the GPU (a check of the test itself on machines without a GPU).
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ops.h"
#include "reed_cuda.h"

#define TOL 1e-5        /* fp32 parity */
#define TOL_BF16 1e-2   /* GEMM ops in bf16 mode */
#define TOL_DOUBLE 1e-9 /* scalar results accumulated in double on both sides */

static const reed_ops *cpu = &reed_ops_cpu;
static const reed_ops *gpu;  /* the CUDA table (or the CPU's, see above) */
static int on_gpu;           /* gpu is the real CUDA table */
static const char *mode = "fp32"; /* printed with every check */

/* ------------------------------------------------------------------------
 * RNG and buffers. Host buffers and device buffers of one test case are
 * registered and freed together by release().
 * ---------------------------------------------------------------------- */

#define TEST_RNG_SEED 0x5eedc0da1234ULL
#include "test_rng.h"

#define MAX_HELD 256
static void *host_held[MAX_HELD], *dev_held[MAX_HELD];
static int nhost, ndev;

static void *hold(void **list, int *n, void *p)
{
    if (*n == MAX_HELD) {
        fprintf(stderr, "test_cuda_ops: too many buffers in one case\n");
        exit(2);
    }
    list[(*n)++] = p;
    return p;
}

static void release(void)
{
    while (nhost)
        free(host_held[--nhost]);
    while (ndev)
        gpu->mem_free(dev_held[--ndev]);
}

static void *hmem(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test_cuda_ops: out of host memory\n");
        exit(2);
    }
    return hold(host_held, &nhost, p);
}

static float *hbuf(size_t n) { return hmem(n * sizeof(float)); }

static float *hrand(size_t n, float lo, float hi)
{
    float *p = hbuf(n);
    for (size_t i = 0; i < n; i++)
        p[i] = rng_float(lo, hi);
    return p;
}

/* Reserved (ops.h): on CUDA a buffer backed on first use once the test
 * makes every one so (test_lazy_memory), so each op below backs what it
 * touches. */
static void *dmem(size_t bytes)
{
    void *p = gpu->mem_reserve(bytes);
    if (!p) {
        fprintf(stderr, "test_cuda_ops: out of device memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return hold(dev_held, &ndev, p);
}

/* A device copy of n host floats (or ints: dup_bytes). */
static void *dup_bytes(const void *h, size_t bytes)
{
    void *d = dmem(bytes);
    gpu->upload(d, h, bytes);
    return d;
}
static float *dup(const float *h, size_t n)
{
    return h ? dup_bytes(h, n * sizeof(float)) : NULL;
}

/* A device buffer of n NaNs: a forward output. */
static float *dnan(size_t n)
{
    float *h = hbuf(n);
    for (size_t i = 0; i < n; i++)
        h[i] = NAN;
    return dup(h, n);
}

static float *download(const float *d, size_t n)
{
    float *h = hbuf(n);
    gpu->download(h, d, n * sizeof(float));
    return h;
}

/* ------------------------------------------------------------------------
 * Comparison and results
 * ---------------------------------------------------------------------- */

/* max|ref − got| / max(max|ref|, 1e-6); NaN or Inf anywhere gives +inf. */
static double norm_err(const float *ref, const float *got, size_t n)
{
    double diff = 0.0, mag = 1e-6;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)ref[i] - (double)got[i]);
        if (!isfinite(d) || !isfinite(ref[i]))
            return INFINITY;
        diff = d > diff ? d : diff;
        mag = fabs(ref[i]) > mag ? fabs(ref[i]) : mag;
    }
    return diff / mag;
}

/* The worst error per op over all checks, for the summary. */
typedef struct result {
    char op[40];
    double err, tol;
    int failed;
} result;

#define MAX_RESULTS 128
static result results[MAX_RESULTS];
static int nresults;

static void record(const char *op, double err, double tol)
{
    char name[40];
    snprintf(name, sizeof name, "%s%s", op, strcmp(mode, "fp32") ? " (bf16)" : "");
    result *r = NULL;
    for (int i = 0; i < nresults && !r; i++)
        if (!strcmp(results[i].op, name))
            r = &results[i];
    if (!r && nresults < MAX_RESULTS) {
        r = &results[nresults++];
        snprintf(r->op, sizeof r->op, "%s", name);
        r->err = 0.0;
        r->tol = tol;
    }
    if (!r)
        return;
    if (err > r->err || isnan(err)) { // the worst case and its tolerance
        r->err = err;
        r->tol = tol;
    }
    if (!(err <= tol))
        r->failed = 1;
}

/* One check: `what` of op (a printf format for the case) on both sides. */
static void report(const char *op, double err, double tol, const char *fmt,
                   va_list ap)
{
    char what[160];
    vsnprintf(what, sizeof what, fmt, ap);
    check(err <= tol, "%-31s %-4s %-48s err %.2e (tol %.0e)", op, mode, what,
          err, tol);
    record(op, err, tol);
}

/* Compares n floats: ref (host, from the CPU op) against dev (device). */
static void expect(const char *op, const float *ref, const float *dev, size_t n,
                   double tol, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void expect(const char *op, const float *ref, const float *dev, size_t n,
                   double tol, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report(op, norm_err(ref, download(dev, n), n), tol, fmt, ap);
    va_end(ap);
}

/* Compares two host scalars by relative error. */
static void expect_scalar(const char *op, double ref, double got, double tol,
                          const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void expect_scalar(const char *op, double ref, double got, double tol,
                          const char *fmt, ...)
{
    double err = fabs(ref - got) / fmax(fabs(ref), 1e-6);
    if (!isfinite(err))
        err = INFINITY;
    va_list ap;
    va_start(ap, fmt);
    report(op, err, tol, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------
 * Memory and the table
 * ---------------------------------------------------------------------- */

static int all_equal(const unsigned char *a, const unsigned char *b, size_t n)
{
    return memcmp(a, b, n) == 0;
}

static int all_zero(const unsigned char *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i])
            return 0;
    return 1;
}

static void test_memory(void)
{
    const size_t n = 1000003; // odd, not a multiple of anything
    size_t used0 = gpu->mem_used ? gpu->mem_used() : 0;
    unsigned char *p = gpu->mem_alloc(n), *q = gpu->mem_alloc(n);
    check(p && q, "memory: mem_alloc(%zu) twice", n);
    if (!p || !q)
        exit(1);
    if (gpu->mem_used)
        check(gpu->mem_used() - used0 == 2 * n, "memory: mem_used counts %zu bytes, want %zu",
              gpu->mem_used() - used0, 2 * n);
    unsigned char *h = hmem(n), *pattern = hmem(n);
    gpu->download(h, p, n);
    check(all_zero(h, n), "memory: mem_alloc zeroes");
    for (size_t i = 0; i < n; i++)
        pattern[i] = (unsigned char)(i * 7 + 1);
    gpu->upload(p, pattern, n);
    gpu->copy(q, p, n);
    memset(h, 0, n);
    gpu->download(h, q, n);
    check(all_equal(h, pattern, n), "memory: upload, copy, download round trip");
    gpu->zero(q + 100, 200);
    gpu->synchronize();
    gpu->download(h, q, n);
    check(all_zero(h + 100, 200) && all_equal(h, pattern, 100) &&
              all_equal(h + 300, pattern + 300, n - 300),
          "memory: zero of a sub-range");
    gpu->copy(q + 5, p + 1000, 333); // unaligned offsets
    gpu->download(h, q, n);
    check(all_equal(h + 5, pattern + 1000, 333) && all_equal(h, pattern, 5),
          "memory: copy between unaligned offsets");
    void *z = gpu->mem_alloc(0);
    check(z != NULL, "memory: mem_alloc(0) is not NULL");
    gpu->mem_free(z);
    gpu->mem_free(NULL);
    gpu->upload(p, pattern, 0);
    gpu->download(h, p, 0);
    gpu->copy(q, p, 0);
    gpu->zero(p, 0);
    gpu->mem_free(p);
    gpu->mem_free(q);
    if (gpu->mem_used)
        check(gpu->mem_used() == used0, "memory: mem_used back to %zu after mem_free (%zu)",
              used0, gpu->mem_used());
    release();
}

/* Many blocks of mixed sizes, freed and allocated again in a shuffled order
 * (the CUDA backend hands out blocks of shared slabs): every live block
 * keeps its own bytes, and a reused block comes back zeroed. */
static void test_memory_churn(void)
{
    enum { NB = 48, ROUNDS = 4 };
    unsigned char *blk[NB] = {0};
    size_t len[NB] = {0};
    unsigned char *h = hmem((size_t)3 << 20);
    int bad = 0, dirty = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < NB; i++) {
            if (blk[i] && rng_next() % 2 == 0)
                continue; // keep about half of the live blocks
            gpu->mem_free(blk[i]);
            len[i] = 1 + rng_next() % (i % 8 == 0 ? (size_t)3 << 20 : 5000);
            blk[i] = gpu->mem_alloc(len[i]);
            if (!blk[i])
                exit(1);
            gpu->download(h, blk[i], len[i]);
            dirty += !all_zero(h, len[i]);
            memset(h, (unsigned char)(i + 1), len[i]);
            gpu->upload(blk[i], h, len[i]);
        }
        for (int i = 0; i < NB; i++) {
            gpu->download(h, blk[i], len[i]);
            for (size_t k = 0; k < len[i]; k++)
                if (h[k] != (unsigned char)(i + 1)) {
                    bad++;
                    break;
                }
        }
    }
    check(bad == 0 && dirty == 0, "memory: %d blocks × %d rounds of churn: %d blocks overwritten, "
          "%d handed out unzeroed", NB, ROUNDS, bad, dirty);
    for (int i = 0; i < NB; i++)
        gpu->mem_free(blk[i]);
    release();
}

/* Buffers backed on first use (cuda_lazy.cu; from here on the test makes
 * every mem_reserve one, where the driver allows): a fresh buffer has
 * nothing mapped; the first op using a part of it maps the whole buffer,
 * zeroed; mem_used counts what is mapped; mem_free unmaps; mem_alloc's
 * buffers are never backed so. */
static void test_lazy_memory(void)
{
    if (!on_gpu || !reed_cuda_set_lazy_min(0)) {
        printf("lazy: buffers are not backed on first use here: not checked\n");
        return;
    }
    const size_t n = 1000003, used0 = gpu->mem_used();
    size_t req0, map0, req, map, r, m;
    reed_cuda_lazy_bytes(&req0, &map0);
    unsigned char *p = gpu->mem_reserve(n), *q = gpu->mem_reserve(n), *plain = gpu->mem_alloc(n);
    if (!p || !q || !plain)
        exit(1);
    reed_cuda_lazy_buffer(plain, &r, &m);
    check(r == 0, "lazy: mem_alloc's buffers are plain");
    gpu->mem_free(plain);
    reed_cuda_lazy_buffer(p, &r, &m);
    check(r == n && m == 0 && gpu->mem_used() == used0,
          "lazy: mem_reserve(%zu) maps nothing (%zu of %zu bytes mapped, mem_used +%zu)", n, m,
          r, gpu->mem_used() - used0);
    unsigned char *h = hmem(n), *pattern = hmem(n);
    memset(h, 1, n);
    gpu->download(h, p + 12345, 100); // a part: the whole buffer is mapped
    reed_cuda_lazy_buffer(p, &r, &m);
    gpu->download(h, p, n);
    check(all_zero(h, n) && m >= n && gpu->mem_used() == used0 + m,
          "lazy: the first use maps the whole buffer, zeroed (%zu bytes mapped, mem_used +%zu)",
          m, gpu->mem_used() - used0);
    for (size_t i = 0; i < n; i++)
        pattern[i] = (unsigned char)(i * 5 + 3);
    gpu->upload(q, pattern, n);
    gpu->copy(p, q, n);
    gpu->download(h, p, n);
    check(all_equal(h, pattern, n), "lazy: upload, copy, download round trip");
    gpu->mem_free(p);
    gpu->mem_free(q);
    reed_cuda_lazy_bytes(&req, &map);
    check(req == req0 && map == map0 && gpu->mem_used() == used0,
          "lazy: mem_free unmaps (%zu bytes asked for, %zu mapped; %zu and %zu before)", req,
          map, req0, map0);
    release();
}

/* Every slot of the table is set (the table is a name and then nothing but
 * function pointers). */
static void test_table(void)
{
    const size_t first = offsetof(reed_ops, mem_alloc);
    const size_t nslots = (sizeof(reed_ops) - first) / sizeof(void *);
    int missing = 0;
    for (size_t i = 0; i < nslots; i++) {
        void *slot;
        memcpy(&slot, (const char *)gpu + first + i * sizeof(void *), sizeof slot);
        missing += slot == NULL;
    }
    if (!on_gpu && !gpu->mem_used)
        missing--; // the CPU table does not count bytes (allowed by ops.h)
    check(missing == 0 && gpu->name, "table: %zu of %zu op slots are NULL", (size_t)missing,
          nslots);
}

/* ------------------------------------------------------------------------
 * Linear
 * ---------------------------------------------------------------------- */

/* Gradient outputs to pass: a mask of GRAD_* bits. */
enum { GRAD_A = 1, GRAD_B = 2, GRAD_C = 4, GRAD_ALL = 7 };

/* "grads a,b" for the gradients of mask k, named a, b, c (c may be NULL). */
static const char *grads(int k, const char *a, const char *b, const char *c)
{
    static char s[64];
    snprintf(s, sizeof s, "grads %s%s%s%s%s", k & GRAD_A ? a : "",
             (k & GRAD_A) && (k & (GRAD_B | GRAD_C)) ? "," : "", k & GRAD_B ? b : "",
             (k & GRAD_B) && (k & GRAD_C) ? "," : "", k & GRAD_C && c ? c : "");
    return s;
}

/* 1 when environment variable `name` is set to 0 (a switch turned off). */
static int env_off(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] == '0';
}

#ifdef REED_CUDA_EMU_TEST
/* Whether the emulator's bf16 linears must write their outputs as bf16
 * views alone (cuda_ops.cu's linear_forward_sole): bf16 operands, with a
 * bias, OC a multiple of 8, no switch off. */
static int want_bf16_out(double tol, int with_bias, int OC)
{
    const char *const switches[] = {"REED_CUDA_BF16_OPERANDS", "REED_CUDA_LT", "REED_CUDA_VIEWS",
                                    "REED_CUDA_VIEW_SOLE"};
    int on = tol == TOL_BF16 && with_bias && OC % 8 == 0;
    for (size_t i = 0; i < sizeof switches / sizeof *switches; i++)
        on &= !env_off(switches[i]);
    return on;
}
#endif

static void test_linear(int N, int C, int OC, int with_bias, double tol)
{
    const size_t ni = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    float *inp = hrand(ni, -1, 1), *w = hrand(nw, -1, 1);
    float *bias = with_bias ? hrand(OC, -1, 1) : NULL;
    float *out = hbuf(no), *d_out = dnan(no);
    float *d_inp = dup(inp, ni), *d_w = dup(w, nw);
    const long bf16_out0 = reed_cuda_lt_bf16_out_calls();
    cpu->linear_forward(out, inp, w, bias, N, C, OC);
    gpu->linear_forward(d_out, d_inp, d_w, dup(bias, OC), N, C, OC);
    expect("linear_forward", out, d_out, no, tol, "N=%d C=%d OC=%d%s", N, C, OC,
           with_bias ? "" : " no bias");
    if (with_bias) {
        // A bias only 4-byte aligned: CUDA's bias epilogue (cuBLASLt) wants
        // 16, so this takes the bias-seeded cuBLAS path.
        float *d_bias1 = (float *)dmem((OC + 1) * sizeof(float)) + 1, *d_out1 = dnan(no);
        gpu->upload(d_bias1, bias, OC * sizeof(float));
        gpu->linear_forward(d_out1, d_inp, d_w, d_bias1, N, C, OC);
        expect("linear_forward", out, d_out1, no, tol, "N=%d C=%d OC=%d bias at 4-byte alignment",
               N, C, OC);
    }
    // A first call on a buffer writes it in fp32 (probation), in every mode.
    const long bf16_out = reed_cuda_lt_bf16_out_calls() - bf16_out0;
    check(bf16_out == 0, "%-31s %-4s N=%d C=%d OC=%d: %ld outputs written as bf16 only, want 0",
          "linear_forward first call fp32", mode, N, C, OC, bf16_out);

    float *dout = hrand(no, -1, 1), *d_dout = dup(dout, no);
    const long bgrad0 = reed_cuda_lt_bgrad_calls();
    static const int masks[] = {GRAD_ALL, GRAD_A, GRAD_B, GRAD_C, GRAD_B | GRAD_C};
    for (size_t m = 0; m < sizeof masks / sizeof *masks; m++) {
        const int k = masks[m];
        float *dinp = hrand(ni, -1, 1), *dw = hrand(nw, -1, 1), *db = hrand(OC, -1, 1);
        float *g_dinp = dup(dinp, ni), *g_dw = dup(dw, nw), *g_db = dup(db, OC);
        cpu->linear_backward(k & GRAD_A ? dinp : NULL, k & GRAD_B ? dw : NULL,
                             k & GRAD_C ? db : NULL, dout, inp, w, N, C, OC);
        gpu->linear_backward(k & GRAD_A ? g_dinp : NULL, k & GRAD_B ? g_dw : NULL,
                             k & GRAD_C ? g_db : NULL, d_dout, d_inp, d_w, N, C, OC);
        // Gradients passed as NULL must stay as they were on both sides.
        const char *gs = grads(k, "dinp", "dw", "dbias");
        expect("linear_backward dinp", dinp, g_dinp, ni, tol, "N=%d C=%d OC=%d %s", N, C, OC, gs);
        expect("linear_backward dw", dw, g_dw, nw, tol, "N=%d C=%d OC=%d %s", N, C, OC, gs);
        expect("linear_backward dbias", db, g_db, OC, tol, "N=%d C=%d OC=%d %s", N, C, OC, gs);
    }
    // bf16 operands: dw with dbias twice above, where cuBLASLt takes the
    // epilogue. A GPU's cuBLASLt may offer no algorithm for it (the column
    // sum then does it): noted. The emulator's always has one: checked.
    const long bgrad = reed_cuda_lt_bgrad_calls() - bgrad0;
    printf("note linear_backward N=%d C=%d OC=%d: dbias from the dw GEMM's epilogue "
           "(cuBLASLt BGRADB) in %ld of the calls\n", N, C, OC, bgrad);
#ifdef REED_CUDA_EMU_TEST
    if (tol == TOL_BF16 && !env_off("REED_CUDA_BF16_OPERANDS") && !env_off("REED_CUDA_LT") &&
        !env_off("REED_CUDA_LT_BGRAD"))
        check(bgrad == 2, "%-31s %-4s N=%d C=%d OC=%d: %ld of 2 calls (emulator)",
              "linear_backward dbias via BGRADB", mode, N, C, OC, bgrad);
#endif
    release();
}

/* The MLP's linear + GELU pairs: the first layer C → F with its GELU
 * (linear_gelu_forward), then the second F → H's backward through the GELU
 * (linear_gelu_backward), against the CPU's. As in training, the backward
 * reads the device's own forward outputs, and two rounds with new inputs
 * and weights run on the same device buffers, the gradients dw and dbias
 * adding up over both. In the bf16 mode CUDA runs the GELU in cuBLASLt's
 * epilogues where the outputs may be sole views and F is a multiple of 8,
 * else the parts (the emulator, whose cuBLASLt always has the algorithms,
 * must take the epilogues: counted). off_between turns sole views off
 * between each forward and backward: the forward's epilogue, then the
 * backward's parts, which write pre's sole view back to fp32 (for good: the
 * second round takes the parts throughout). */
static void test_linear_gelu(int N, int C, int F, int H, double tol, int off_between)
{
    const size_t ni = (size_t)N * C, nf = (size_t)N * F, nh = (size_t)N * H;
    const size_t nw1 = (size_t)F * C, nw2 = (size_t)H * F;
    float *pre = hbuf(nf), *out = hbuf(nf), *dpre = hbuf(nf);
    float *dw = hrand(nw2, -1, 1), *db = hrand(H, -1, 1);
    float *d_inp = dnan(ni), *d_w1 = dnan(nw1), *d_b1 = dnan(F), *d_dout = dnan(nh), *d_w2 = dnan(nw2);
    float *d_pre = dnan(nf), *d_out = dnan(nf), *g_dpre = dnan(nf);
    float *g_dw = dup(dw, nw2), *g_db = dup(db, H);
    const char *sole = off_between ? ", sole views off for the backward" : "";
    const long gelu0 = reed_cuda_lt_gelu_calls();
    for (int round = 1; round <= 2; round++) {
        float *inp = hrand(ni, -1, 1), *w1 = hrand(nw1, -0.5f, 0.5f), *b1 = hrand(F, -1, 1);
        float *dout = hrand(nh, -1, 1), *w2 = hrand(nw2, -0.5f, 0.5f);
        cpu->linear_gelu_forward(out, pre, inp, w1, b1, N, C, F);
        cpu->linear_gelu_backward(dpre, dw, db, dout, out, pre, w2, N, F, H);
        gpu->upload(d_inp, inp, ni * sizeof(float));
        gpu->upload(d_w1, w1, nw1 * sizeof(float));
        gpu->upload(d_b1, b1, F * sizeof(float));
        gpu->upload(d_dout, dout, nh * sizeof(float));
        gpu->upload(d_w2, w2, nw2 * sizeof(float));
        gpu->linear_gelu_forward(d_out, d_pre, d_inp, d_w1, d_b1, N, C, F);
        if (off_between)
            reed_cuda_set_view_sole(0);
        gpu->linear_gelu_backward(g_dpre, g_dw, g_db, d_dout, d_out, d_pre, d_w2, N, F, H);
        if (off_between)
            reed_cuda_set_view_sole(1);
        // Round 1 reads back only dw and dbias: reading pre, out or dpre
        // would write their sole views back to fp32 for good.
        if (round == 2) {
            expect("linear_gelu_forward pre", pre, d_pre, nf, tol, "N=%d C=%d F=%d round 2", N, C, F);
            expect("linear_gelu_forward out", out, d_out, nf, tol, "N=%d C=%d F=%d round 2", N, C, F);
            expect("linear_gelu_backward dpre", dpre, g_dpre, nf, tol, "N=%d F=%d H=%d round 2%s", N,
                   F, H, sole);
        }
        expect("linear_gelu_backward dw", dw, g_dw, nw2, tol, "N=%d F=%d H=%d round %d%s", N, F, H,
               round, sole);
        expect("linear_gelu_backward dbias", db, g_db, H, tol, "N=%d F=%d H=%d round %d%s", N, F, H,
               round, sole);
    }
    const long fused = reed_cuda_lt_gelu_calls() - gelu0;
    printf("note linear_gelu N=%d C=%d F=%d H=%d%s: %ld of 4 GEMMs with the GELU in cuBLASLt's "
           "epilogue\n", N, C, F, H, sole, fused);
#ifdef REED_CUDA_EMU_TEST
    const char *const switches[] = {"REED_CUDA_BF16_OPERANDS", "REED_CUDA_LT", "REED_CUDA_LT_GELU",
                                    "REED_CUDA_VIEWS", "REED_CUDA_VIEW_SOLE"};
    int on = tol == TOL_BF16 && F % 8 == 0;
    for (size_t i = 0; i < sizeof switches / sizeof *switches; i++)
        on &= !env_off(switches[i]);
    const long want = !on ? 0 : off_between ? 1 : 4;
    check(fused == want, "%-31s %-4s N=%d C=%d F=%d H=%d%s: %ld GEMMs, want %ld (emulator)",
          "linear_gelu via GELU epilogues", mode, N, C, F, H, sole, fused, want);
#endif
    release();
}

/* ------------------------------------------------------------------------
 * LayerNorm, adaLN modulate, gated residual
 * ---------------------------------------------------------------------- */

static void test_layernorm(int N, int C, float eps)
{
    const size_t n = (size_t)N * C;
    float *inp = hrand(n, 1, 5); // mean ≈ 3: tests the moments' precision
    float *out = hbuf(n), *mean = hbuf(N), *rstd = hbuf(N);
    float *d_out = dnan(n), *d_mean = dnan(N), *d_rstd = dnan(N), *d_inp = dup(inp, n);
    cpu->layernorm_forward(out, mean, rstd, inp, N, C, eps);
    gpu->layernorm_forward(d_out, d_mean, d_rstd, d_inp, N, C, eps);
    expect("layernorm_forward out", out, d_out, n, TOL, "N=%d C=%d", N, C);
    expect("layernorm_forward mean", mean, d_mean, N, TOL, "N=%d C=%d", N, C);
    expect("layernorm_forward rstd", rstd, d_rstd, N, TOL, "N=%d C=%d", N, C);

    // Backward from the CPU's saved statistics on both sides.
    float *dout = hrand(n, -1, 1), *dinp = hrand(n, -1, 1), *g_dinp = dup(dinp, n);
    cpu->layernorm_backward(dinp, dout, inp, mean, rstd, N, C);
    gpu->layernorm_backward(g_dinp, dup(dout, n), d_inp, dup(mean, N), dup(rstd, N), N, C);
    expect("layernorm_backward", dinp, g_dinp, n, TOL, "N=%d C=%d", N, C);
    gpu->layernorm_backward(NULL, dup(dout, n), d_inp, dup(mean, N), dup(rstd, N), N, C);
    release();
}

/* The adaLN matrix (B, ldm) with ldm = 6C: shift, scale and gate are slices
 * at column offsets SHIFT, SCALE, GATE (times C). */
enum { ADALN_LDM = 6, SHIFT = 3, SCALE = 4, GATE = 5 };

static void test_modulate(int B, int T, int C)
{
    const size_t n = (size_t)B * T * C;
    const int ldm = ADALN_LDM * C;
    const size_t nm = (size_t)B * ldm;
    float *x = hrand(n, -2, 2), *mod = hrand(nm, -1, 1), *out = hbuf(n);
    float *d_x = dup(x, n), *d_mod = dup(mod, nm), *d_out = dnan(n);
    cpu->modulate_forward(out, x, mod + SHIFT * C, mod + SCALE * C, ldm, B, T, C);
    gpu->modulate_forward(d_out, d_x, d_mod + SHIFT * C, d_mod + SCALE * C, ldm, B, T, C);
    expect("modulate_forward", out, d_out, n, TOL, "B=%d T=%d C=%d", B, T, C);
    float *d_inplace = dup(x, n);
    gpu->modulate_forward(d_inplace, d_inplace, d_mod + SHIFT * C, d_mod + SCALE * C, ldm, B, T, C);
    expect("modulate_forward", out, d_inplace, n, TOL, "B=%d T=%d C=%d in place", B, T, C);

    float *dout = hrand(n, -1, 1), *d_dout = dup(dout, n);
    static const int masks[] = {GRAD_ALL, GRAD_A, GRAD_B | GRAD_C, GRAD_C};
    for (size_t m = 0; m < sizeof masks / sizeof *masks; m++) {
        const int k = masks[m];
        float *dx = hrand(n, -1, 1), *dmod = hrand(nm, -1, 1);
        float *g_dx = dup(dx, n), *g_dmod = dup(dmod, nm);
        cpu->modulate_backward(k & GRAD_A ? dx : NULL, k & GRAD_B ? dmod + SHIFT * C : NULL,
                               k & GRAD_C ? dmod + SCALE * C : NULL, dout, x,
                               mod + SCALE * C, ldm, B, T, C);
        gpu->modulate_backward(k & GRAD_A ? g_dx : NULL, k & GRAD_B ? g_dmod + SHIFT * C : NULL,
                               k & GRAD_C ? g_dmod + SCALE * C : NULL, d_dout, d_x,
                               d_mod + SCALE * C, ldm, B, T, C);
        const char *gs = grads(k, "dx", "dshift", "dscale");
        expect("modulate_backward dx", dx, g_dx, n, TOL, "B=%d T=%d C=%d %s", B, T, C, gs);
        expect("modulate_backward dshift,dscale", dmod, g_dmod, nm, TOL,
               "B=%d T=%d C=%d %s (all of adaLN)", B, T, C, gs);
    }
    release();
}

/* LayerNorm + modulate fused; rows longer than the kernel's register span
 * (512) take its chunked path. */
static void test_ln_modulate(int B, int T, int C)
{
    const size_t n = (size_t)B * T * C, N = (size_t)B * T;
    const int ldm = ADALN_LDM * C;
    const size_t nm = (size_t)B * ldm;
    float *inp = hrand(n, 1, 5), *mod = hrand(nm, -1, 1); // mean ≈ 3, as for layernorm
    float *out = hbuf(n), *mean = hbuf(N), *rstd = hbuf(N);
    float *d_inp = dup(inp, n), *d_mod = dup(mod, nm);
    float *d_out = dnan(n), *d_mean = dnan(N), *d_rstd = dnan(N);
    cpu->ln_modulate_forward(out, mean, rstd, inp, mod + SHIFT * C, mod + SCALE * C, ldm, B,
                             T, C, 1e-6f);
    gpu->ln_modulate_forward(d_out, d_mean, d_rstd, d_inp, d_mod + SHIFT * C,
                             d_mod + SCALE * C, ldm, B, T, C, 1e-6f);
    expect("ln_modulate_forward out", out, d_out, n, TOL, "B=%d T=%d C=%d", B, T, C);
    expect("ln_modulate_forward mean", mean, d_mean, N, TOL, "B=%d T=%d C=%d", B, T, C);
    expect("ln_modulate_forward rstd", rstd, d_rstd, N, TOL, "B=%d T=%d C=%d", B, T, C);

    // Backward from the CPU's saved statistics on both sides.
    float *dout = hrand(n, -1, 1), *d_dout = dup(dout, n);
    float *d_mean_c = dup(mean, N), *d_rstd_c = dup(rstd, N);
    static const int masks[] = {GRAD_ALL, GRAD_A, GRAD_B | GRAD_C, GRAD_C};
    for (size_t m = 0; m < sizeof masks / sizeof *masks; m++) {
        const int k = masks[m];
        float *dinp = hrand(n, -1, 1), *dmod = hrand(nm, -1, 1);
        float *g_dinp = dup(dinp, n), *g_dmod = dup(dmod, nm);
        cpu->ln_modulate_backward(k & GRAD_A ? dinp : NULL, k & GRAD_B ? dmod + SHIFT * C : NULL,
                                  k & GRAD_C ? dmod + SCALE * C : NULL, dout, inp, mean, rstd,
                                  mod + SCALE * C, ldm, B, T, C);
        gpu->ln_modulate_backward(k & GRAD_A ? g_dinp : NULL,
                                  k & GRAD_B ? g_dmod + SHIFT * C : NULL,
                                  k & GRAD_C ? g_dmod + SCALE * C : NULL, d_dout, d_inp,
                                  d_mean_c, d_rstd_c, d_mod + SCALE * C, ldm, B, T, C);
        const char *gs = grads(k, "dinp", "dshift", "dscale");
        expect("ln_modulate_backward dinp", dinp, g_dinp, n, TOL, "B=%d T=%d C=%d %s", B, T,
               C, gs);
        expect("ln_modulate_backward dshift,dscale", dmod, g_dmod, nm, TOL,
               "B=%d T=%d C=%d %s (all of adaLN)", B, T, C, gs);
    }
    release();
}

static void test_gated_add(int B, int T, int C)
{
    const size_t n = (size_t)B * T * C;
    const int ldm = ADALN_LDM * C;
    const size_t nm = (size_t)B * ldm;
    float *x = hrand(n, -2, 2), *y = hrand(n, -2, 2), *mod = hrand(nm, -1, 1);
    float *d_x = dup(x, n), *d_y = dup(y, n), *d_mod = dup(mod, nm);
    cpu->gated_add_forward(x, y, mod + GATE * C, ldm, B, T, C);
    gpu->gated_add_forward(d_x, d_y, d_mod + GATE * C, ldm, B, T, C);
    expect("gated_add_forward", x, d_x, n, TOL, "B=%d T=%d C=%d", B, T, C);

    float *dx = hrand(n, -1, 1), *d_dx = dup(dx, n);
    static const int masks[] = {GRAD_ALL, GRAD_A, GRAD_B};
    for (size_t m = 0; m < sizeof masks / sizeof *masks; m++) {
        const int k = masks[m];
        float *dy = hrand(n, -1, 1), *dmod = hrand(nm, -1, 1);
        float *g_dy = dup(dy, n), *g_dmod = dup(dmod, nm);
        cpu->gated_add_backward(k & GRAD_A ? dy : NULL, k & GRAD_B ? dmod + GATE * C : NULL,
                                dx, y, mod + GATE * C, ldm, B, T, C);
        gpu->gated_add_backward(k & GRAD_A ? g_dy : NULL, k & GRAD_B ? g_dmod + GATE * C : NULL,
                                d_dx, d_y, d_mod + GATE * C, ldm, B, T, C);
        const char *gs = grads(k, "dy", "dgate", NULL);
        expect("gated_add_backward dy", dy, g_dy, n, TOL, "B=%d T=%d C=%d %s", B, T, C, gs);
        expect("gated_add_backward dgate", dmod, g_dmod, nm, TOL,
               "B=%d T=%d C=%d %s (all of adaLN)", B, T, C, gs);
    }
    // dx is left unchanged
    expect("gated_add_backward dx kept", dx, d_dx, n, 0.0, "B=%d T=%d C=%d", B, T, C);
    release();
}

/* ------------------------------------------------------------------------
 * Pointwise ops: GELU, SiLU, ReLU
 * ---------------------------------------------------------------------- */

typedef void (*pointwise_fwd)(float *out, const float *inp, size_t n);
typedef void (*pointwise_bwd)(float *dinp, const float *dout, const float *x, size_t n);

static void test_pointwise(const char *fwd_name, const char *bwd_name,
                           pointwise_fwd cf, pointwise_fwd gf, pointwise_bwd cb,
                           pointwise_bwd gb, size_t n)
{
    float *x = hrand(n, -6, 6), *out = hbuf(n), *d_x = dup(x, n), *d_out = dnan(n);
    cf(out, x, n);
    gf(d_out, d_x, n);
    expect(fwd_name, out, d_out, n, TOL, "n=%zu", n);
    float *d_inplace = dup(x, n); // out may alias inp
    gf(d_inplace, d_inplace, n);
    expect(fwd_name, out, d_inplace, n, TOL, "n=%zu in place", n);
    float *dout = hrand(n, -1, 1), *dinp = hrand(n, -1, 1), *g_dinp = dup(dinp, n);
    cb(dinp, dout, x, n);
    gb(g_dinp, dup(dout, n), d_x, n);
    expect(bwd_name, dinp, g_dinp, n, TOL, "n=%zu", n);
    gb(NULL, dup(dout, n), d_x, n);
    release();
}

static void test_pointwise_all(size_t n)
{
    test_pointwise("gelu_forward", "gelu_backward", cpu->gelu_forward, gpu->gelu_forward,
                   cpu->gelu_backward, gpu->gelu_backward, n);
    test_pointwise("silu_forward", "silu_backward", cpu->silu_forward, gpu->silu_forward,
                   cpu->silu_backward, gpu->silu_backward, n);
    test_pointwise("relu_forward", "relu_backward", cpu->relu_forward, gpu->relu_forward,
                   cpu->relu_backward, gpu->relu_backward, n);
}

/* ------------------------------------------------------------------------
 * Attention
 * ---------------------------------------------------------------------- */

/* In fp32 mode att holds the probabilities on both sides: it is compared,
 * and the backward starts from the CPU's. In bf16 mode it holds the fused
 * path's row log-sum-exps or the GEMM path's bf16 probabilities: it is not
 * compared, and the backward starts from the GPU's own att. */
static void test_attention(int B, int T, int C, int NH, float amp, double tol)
{
    const size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    const size_t na = (size_t)B * NH * T * T;
    static const char *const paths[] = {"gemm", "gemm", "fused", "flash", "flash+gemm"};
    const int p = on_gpu ? reed_cuda_attention_path(B, T, C, NH) : 1;
    const int private_att = on_gpu && reed_cuda_precision() == 1;
    const char *path = paths[p >= 1 && p <= 4 ? p : 0];
    char fwd_name[40], bwd_name[40];
    snprintf(fwd_name, sizeof fwd_name, "attention_forward out%s%s", p > 1 ? ", " : "",
             p > 1 ? path : "");
    snprintf(bwd_name, sizeof bwd_name, "attention_backward%s%s", p > 1 ? ", " : "",
             p > 1 ? path : "");
    float *qkv = hrand(nq, -amp, amp), *out = hbuf(no), *att = hbuf(na);
    float *d_qkv = dup(qkv, nq), *d_out = dnan(no), *d_att = dnan(na);
    cpu->attention_forward(out, att, qkv, B, T, C, NH);
    gpu->attention_forward(d_out, d_att, d_qkv, B, T, C, NH);
    expect(fwd_name, out, d_out, no, tol, "B=%d T=%d C=%d NH=%d amp %g %s", B, T, C, NH, amp,
           path);
    if (!private_att)
        expect("attention_forward att", att, d_att, na, tol, "B=%d T=%d C=%d NH=%d amp %g %s",
               B, T, C, NH, amp, path);

    // The scratch starts as garbage (NaN on the GPU), which must not matter.
    float *dout = hrand(no, -1, 1), *dqkv = hrand(nq, -1, 1), *g_dqkv = dup(dqkv, nq);
    float *g_att = private_att ? d_att : dup(att, na);
    cpu->attention_backward(dqkv, hrand(na, -1, 1), dout, qkv, att, B, T, C, NH);
    gpu->attention_backward(g_dqkv, dnan(na), dup(dout, no), d_qkv, g_att, B, T, C, NH);
    expect(bwd_name, dqkv, g_dqkv, nq, tol, "B=%d T=%d C=%d NH=%d amp %g %s", B, T, C, NH, amp,
           path);
    gpu->attention_backward(NULL, dnan(na), dup(dout, no), d_qkv, g_att, B, T, C, NH);
    release();
}

/* The attention shapes: T = 16 .. 300 (196 = 14², 49 = 7²), head sizes 4
 * to 128, among them some the fused kernels or the flash path do not
 * cover.
 * REED_CUDA_TEST_LARGE=1 adds SiT-B/2's (12 heads of 64, T = 256): for a
 * real GPU, slow in the emulator. */
static void run_attention(double tol)
{
    const char *large = getenv("REED_CUDA_TEST_LARGE");
    test_attention(4, 16, 96, 2, 1.0f, tol);   // hs 48
    test_attention(4, 49, 96, 3, 1.0f, tol);   // hs 32
    test_attention(4, 64, 384, 6, 1.0f, tol);  // hs 64
    test_attention(2, 196, 128, 2, 1.0f, tol); // hs 64
    test_attention(2, 256, 192, 2, 1.0f, tol); // hs 96
    // hs 32, sharper softmax (logits ~ ±10). In bf16 mode the rounding of q
    // and k gives the logits an absolute error ~ 2⁻⁹·Σ|q_e·k_e|/sqrt(hs)
    // ≈ 1e-2, which the softmax passes on as a relative error of P: 3× the
    // tolerance there.
    test_attention(4, 64, 128, 4, 3.0f, tol > TOL ? 3 * tol : tol);
    test_attention(3, 5, 12, 3, 1.0f, tol);    // odd, T < 32, hs 4
    test_attention(1, 300, 32, 2, 1.0f, tol);  // T > 256, hs 16: not the fused path
    test_attention(2, 40, 256, 2, 1.0f, tol);  // hs 128: the flash path's largest
    test_attention(1, 300, 128, 2, 1.0f, tol); // T > 256, hs 64
    // T = 3: no room in att for the flash forward's bf16 copy of out, so
    // the flash backward sums D = Σ p∘dP in a first pass instead
    test_attention(2, 3, 64, 1, 1.0f, tol);
    if (large && large[0] == '1')
        test_attention(8, 256, 768, 12, 1.0f, tol);
}

/* bf16 mode: attention on each path (reed_cuda_set_attention: GEMM, fused,
 * flash, flash + GEMM; shapes a path does not cover take the GEMM path),
 * then in auto mode on a few shapes: the timed choice is a path, the same
 * at every ask, and correct. */
static void test_attention_paths(double tol)
{
    for (int m = 1; m <= 4; m++) {
        reed_cuda_set_attention(m);
        run_attention(tol);
    }
    reed_cuda_set_attention(0);
    static const int shapes[][4] = {{4, 16, 96, 2}, {2, 49, 96, 3}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const int *s = shapes[i];
        const int p1 = reed_cuda_attention_path(s[0], s[1], s[2], s[3]);
        const int p2 = reed_cuda_attention_path(s[0], s[1], s[2], s[3]);
        check(p1 >= 1 && p1 <= 4 && p1 == p2,
              "attention auto path B=%d T=%d C=%d NH=%d: %d, then %d", s[0], s[1], s[2], s[3],
              p1, p2);
        test_attention(s[0], s[1], s[2], s[3], 1.0f, tol);
    }
}

/* The qkv linear, the attention on its output, and the projection's
 * backward into the attention's, as in a SiT block, twice on the same
 * buffers (two steps). With bf16 operands the second round may write qkv
 * and the projection's input gradient as sole bf16 views alone, once the
 * first round showed only GEMMs and the attention read them (probation):
 * the gemm and flash paths read them through their views, the fused path
 * in fp32, which fails probation. On each path: out (both rounds) and
 * dqkv (round 2, a sole bf16 view on the gemm and flash paths) against
 * the CPU's chain, qkv and the gradient never read back. */
static void test_qkv_attention(int B, int T, int C, int NH, double tol)
{
    static const char *const names[] = {"", "gemm", "fused", "flash", "flash+gemm"};
    const int N = B * T, C3 = 3 * C;
    const size_t ni = (size_t)N * C, nw = (size_t)C3 * C, nq = (size_t)N * C3;
    const size_t na = (size_t)B * NH * T * T, nwp = (size_t)C * C;
    float *inp = hrand(ni, -1, 1), *w = hrand(nw, -0.15f, 0.15f), *bias = hrand(C3, -0.3f, 0.3f);
    float *wp = hrand(nwp, -0.2f, 0.2f), *dproj = hrand(ni, -1, 1), *dwp = hbuf(nwp);
    float *qkv = hbuf(nq), *out = hbuf(ni), *att = hbuf(na), *dout = hbuf(ni), *dqkv = hbuf(nq);
    cpu->linear_forward(qkv, inp, w, bias, N, C, C3);
    cpu->attention_forward(out, att, qkv, B, T, C, NH);
    memset(dout, 0, ni * sizeof(float));
    cpu->linear_backward(dout, dwp, NULL, dproj, out, wp, N, C, C); // dwp: not checked
    memset(dqkv, 0, nq * sizeof(float));
    cpu->attention_backward(dqkv, hbuf(na), dout, qkv, att, B, T, C, NH);
    // Round 3: sole views off, a new input: the linear writes qkv in fp32,
    // and nothing may read the second round's sole view of it.
    float *inp3 = hrand(ni, -1, 1), *qkv3 = hbuf(nq), *out3 = hbuf(ni);
    cpu->linear_forward(qkv3, inp3, w, bias, N, C, C3);
    cpu->attention_forward(out3, att, qkv3, B, T, C, NH);
    for (int path = 1; path <= 4; path++) {
        reed_cuda_set_attention(path);
        const char *p = names[reed_cuda_attention_path(B, T, C, NH)];
        float *d_inp = dup(inp, ni), *d_w = dup(w, nw), *d_bias = dup(bias, C3);
        float *d_wp = dup(wp, nwp), *d_dproj = dup(dproj, ni), *d_dwp = dnan(nwp);
        float *d_qkv = dnan(nq), *d_out = dnan(ni), *d_att = dnan(na), *d_dout = dnan(ni);
        float *g_dqkv = dnan(nq), *scratch = dnan(na);
        const long bf16_out0 = reed_cuda_lt_bf16_out_calls(), proven0 = reed_cuda_view_proven();
        for (int round = 1; round <= 2; round++) {
            gpu->linear_forward(d_qkv, d_inp, d_w, d_bias, N, C, C3);
            gpu->attention_forward(d_out, d_att, d_qkv, B, T, C, NH);
            gpu->zero(d_dout, ni * sizeof(float));
            gpu->linear_backward(d_dout, d_dwp, NULL, d_dproj, d_out, d_wp, N, C, C);
            gpu->zero(g_dqkv, nq * sizeof(float));
            gpu->attention_backward(g_dqkv, scratch, d_dout, d_qkv, d_att, B, T, C, NH);
            expect("qkv linear → attention out", out, d_out, ni, tol,
                   "B=%d T=%d C=%d NH=%d %s round %d", B, T, C, NH, p, round);
            // Round 1 leaves dqkv unread: reading it would write its sole
            // view back for good, and round 2's backward must write one.
            if (round == 2)
                expect("qkv linear → attention dqkv", dqkv, g_dqkv, nq, tol,
                       "B=%d T=%d C=%d NH=%d %s round 2", B, T, C, NH, p);
        }
        const long bf16_out = reed_cuda_lt_bf16_out_calls() - bf16_out0;
        const long proven = reed_cuda_view_proven() - proven0;
        reed_cuda_set_view_sole(0);
        gpu->upload(d_inp, inp3, ni * sizeof(float));
        gpu->linear_forward(d_qkv, d_inp, d_w, d_bias, N, C, C3);
        gpu->attention_forward(d_out, d_att, d_qkv, B, T, C, NH);
        expect("qkv linear → attention out", out3, d_out, ni, tol,
               "B=%d T=%d C=%d NH=%d %s round 3, sole views off", B, T, C, NH, p);
        reed_cuda_set_view_sole(1);
        printf("note qkv linear → attention %s: %ld of 2 qkv outputs written as bf16 only; "
               "%ld sole views after probation\n", p, bf16_out, proven);
#ifdef REED_CUDA_EMU_TEST
        const int on = want_bf16_out(tol, 1, C3) && path != 2; // 2: fused
        check(bf16_out == on && proven == 2 * on,
              "%-31s %-4s B=%d T=%d C=%d %s: %ld and %ld, want %d and %d (emulator)",
              "qkv, dout bf16 after probation", mode, B, T, C, p, bf16_out, proven, on, 2 * on);
#endif
    }
    reed_cuda_set_attention(0);
    release();
}

/* The flash kernels' variants (reed_cuda_set_flash: forward 1 wide and 2
 * by cp.async, backward 1 the key kernel 32 queries a pass and 2 that by
 * cp.async) compute the same values as variants 0: out, and dqkv from
 * each variant's own forward, equal bitwise, and against the CPU; on
 * shapes with partial tiles (T past a multiple of 64 and of the wide
 * forward's 128) at head sizes 16, 32 and 64. */
static void test_flash_variants(double tol)
{
    // T = 3: no room for out's copy, so the backward's variant 2 takes the
    // plain query kernel
    static const int shapes[][4] = {{2, 16, 32, 2}, {2, 49, 96, 3}, {1, 150, 128, 2},
                                    {2, 200, 256, 4}, {1, 300, 32, 2}, {2, 3, 32, 2}};
    reed_cuda_set_attention(3); // flash
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const int B = shapes[i][0], T = shapes[i][1], C = shapes[i][2], NH = shapes[i][3];
        if (reed_cuda_attention_path(B, T, C, NH) != 3) { // it needs bf16 GEMM operands
            check(env_off("REED_CUDA_BF16_OPERANDS"),
                  "flash kernels: the flash path covers B=%d T=%d C=%d NH=%d only with bf16 "
                  "GEMM operands, which are %s", B, T, C, NH,
                  env_off("REED_CUDA_BF16_OPERANDS") ? "off: not checked" : "on");
            continue;
        }
        const size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
        const size_t na = (size_t)B * NH * T * T;
        float *qkv = hrand(nq, -1, 1), *dout = hrand(no, -1, 1), *dqkv0 = hrand(nq, -1, 1);
        float *out = hbuf(no), *att = hbuf(na), *dqkv = hbuf(nq);
        memcpy(dqkv, dqkv0, nq * sizeof(float));
        cpu->attention_forward(out, att, qkv, B, T, C, NH);
        cpu->attention_backward(dqkv, hbuf(na), dout, qkv, att, B, T, C, NH);
        const float *got[3][2]; // [run]: out, dqkv
        for (int v = 0; v < 3; v++) {
            reed_cuda_set_flash(v, v);
            float *d_qkv = dup(qkv, nq), *d_out = dnan(no), *d_att = dnan(na);
            float *g_dqkv = dup(dqkv0, nq);
            long before[2], after[2];
            reed_cuda_flash_variant_calls(&before[0], &before[1]);
            gpu->attention_forward(d_out, d_att, d_qkv, B, T, C, NH);
            gpu->attention_backward(g_dqkv, dnan(na), dup(dout, no), d_qkv, d_att, B, T, C, NH);
            reed_cuda_flash_variant_calls(&after[0], &after[1]);
            check(after[0] - before[0] == (v > 0) && after[1] - before[1] == (v > 0),
                  "flash kernels %d launched          B=%d T=%d C=%d NH=%d: variant kernels "
                  "%ld forward, %ld backward", v, B, T, C, NH, after[0] - before[0],
                  after[1] - before[1]);
            got[v][0] = download(d_out, no);
            got[v][1] = download(g_dqkv, nq);
            if (v == 0)
                continue;
            expect("attention_forward, flash kernels", out, d_out, no, tol,
                   "B=%d T=%d C=%d NH=%d fwd %d", B, T, C, NH, v);
            expect("attention_backward, flash kernels", dqkv, g_dqkv, nq, tol,
                   "B=%d T=%d C=%d NH=%d bwd %d", B, T, C, NH, v);
            const int same_out = !memcmp(got[0][0], got[v][0], no * sizeof(float));
            const int same_dqkv = !memcmp(got[0][1], got[v][1], nq * sizeof(float));
            check(same_out && same_dqkv,
                  "flash kernels %d = 0, bitwise      B=%d T=%d C=%d NH=%d: out %s, dqkv %s", v,
                  B, T, C, NH, same_out ? "same" : "DIFFERENT",
                  same_dqkv ? "same" : "DIFFERENT");
        }
        release();
    }
    reed_cuda_set_flash(-1, -1);
    reed_cuda_set_attention(0);
}

/* The flash forward leaves out as a sole bf16 view; a forward on another
 * path (fp32 out) on new inputs must not leave that view readable. */
static void test_attention_switch(int B, int T, int C, int NH, double tol)
{
    static const int others[] = {1, 2}; // gemm, fused
    const size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    const size_t na = (size_t)B * NH * T * T;
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        float *qkv1 = hrand(nq, -1, 1), *qkv2 = hrand(nq, -1, 1), *out = hbuf(no);
        float *att = hbuf(na), *d_out = dnan(no), *d_att = dnan(na);
        cpu->attention_forward(out, att, qkv2, B, T, C, NH);
        reed_cuda_set_attention(3); // flash
        gpu->attention_forward(d_out, d_att, dup(qkv1, nq), B, T, C, NH);
        reed_cuda_set_attention(others[i]);
        gpu->attention_forward(d_out, d_att, dup(qkv2, nq), B, T, C, NH);
        expect("attention_forward after flash", out, d_out, no, tol, "B=%d T=%d C=%d NH=%d path %d",
               B, T, C, NH, others[i]);
    }
    reed_cuda_set_attention(0);
    release();
}

/* linear_gelu_forward twice on the same buffers, new inputs the second
 * time, no backward between (as in sampling): the second out against the
 * CPU's (with REED_CUDA_LT_GELU=0 this takes the parts, whose first layer
 * must write pre in fp32 for the GELU kernel). */
static void test_linear_gelu_twice(int N, int C, int F, double tol)
{
    const size_t ni = (size_t)N * C, nf = (size_t)N * F, nw = (size_t)F * C;
    float *w = hrand(nw, -0.5f, 0.5f), *b = hrand(F, -1, 1), *pre = hbuf(nf), *out = hbuf(nf);
    float *d_w = dup(w, nw), *d_b = dup(b, F), *d_inp = dnan(ni), *d_pre = dnan(nf);
    float *d_out = dnan(nf), *inp = NULL;
    for (int round = 1; round <= 2; round++) {
        inp = hrand(ni, -1, 1);
        gpu->upload(d_inp, inp, ni * sizeof(float));
        gpu->linear_gelu_forward(d_out, d_pre, d_inp, d_w, d_b, N, C, F);
    }
    cpu->linear_gelu_forward(out, pre, inp, w, b, N, C, F);
    expect("linear_gelu_forward twice out", out, d_out, nf, tol, "N=%d C=%d F=%d round 2", N, C, F);
    release();
}

/* ------------------------------------------------------------------------
 * Elementwise helpers, reductions
 * ---------------------------------------------------------------------- */

static void test_elementwise(size_t n)
{
    float *a = hrand(n, -1, 1), *b = hrand(n, -1, 1), *out = hbuf(n);
    float *d_a = dup(a, n), *d_b = dup(b, n), *d_out = dnan(n);
    cpu->add(out, a, b, n);
    gpu->add(d_out, d_a, d_b, n);
    expect("add", out, d_out, n, TOL, "n=%zu", n);
    cpu->axpby(out, 0.3f, a, -1.7f, b, n);
    gpu->axpby(d_out, 0.3f, d_a, -1.7f, d_b, n);
    expect("axpby", out, d_out, n, TOL, "n=%zu", n);
    gpu->axpby(d_a, 0.3f, d_a, -1.7f, d_b, n); // in place
    expect("axpby", out, d_a, n, TOL, "n=%zu in place", n);
    gpu->upload(d_a, a, n * sizeof(float));
    cpu->accumulate(a, b, n);
    gpu->accumulate(d_a, d_b, n);
    expect("accumulate", a, d_a, n, TOL, "n=%zu", n);
    cpu->scale(a, -0.37f, n);
    gpu->scale(d_a, -0.37f, n);
    expect("scale", a, d_a, n, TOL, "n=%zu", n);
    expect_scalar("sum_squares", cpu->sum_squares(a, n), gpu->sum_squares(d_a, n),
                  TOL_DOUBLE, "n=%zu", n);
    release();
}

/* Always fp32 on CUDA, so held to TOL in the bf16 mode too. */
static void test_resample_tokens(int B, int T, int Ts, int D)
{
    const size_t nr = (size_t)T * Ts, ns = (size_t)B * Ts * D, no = (size_t)B * T * D;
    float *R = hrand(nr, 0, 1), *src = hrand(ns, -1, 1), *out = hbuf(no), *d_out = dnan(no);
    cpu->resample_tokens(out, R, src, B, T, Ts, D);
    gpu->resample_tokens(d_out, dup(R, nr), dup(src, ns), B, T, Ts, D);
    expect("resample_tokens", out, d_out, no, TOL, "B=%d T=%d Ts=%d D=%d", B, T, Ts, D);
    release();
}

static void test_mean_tokens(int B, int T, int C)
{
    const size_t n = (size_t)B * T * C, nb = (size_t)B * C;
    float *x = hrand(n, -1, 3), *out = hbuf(nb), *d_out = dnan(nb);
    cpu->mean_tokens_forward(out, x, B, T, C);
    gpu->mean_tokens_forward(d_out, dup(x, n), B, T, C);
    expect("mean_tokens_forward", out, d_out, nb, TOL, "B=%d T=%d C=%d", B, T, C);
    float *dout = hrand(nb, -1, 1), *dx = hrand(n, -1, 1), *g_dx = dup(dx, n);
    cpu->mean_tokens_backward(dx, dout, B, T, C);
    gpu->mean_tokens_backward(g_dx, dup(dout, nb), B, T, C);
    expect("mean_tokens_backward", dx, g_dx, n, TOL, "B=%d T=%d C=%d", B, T, C);
    release();
}

/* tiny: rows 0 of a and 1 of b have norms below the 1e-12 clamp. */
static void test_cosine(int N, int D, int tiny)
{
    const size_t n = (size_t)N * D;
    float *a = hrand(n, -1, 1), *b = hrand(n, -1, 1);
    if (tiny) {
        for (int i = 0; i < D; i++) {
            a[i] *= 1e-14f;
            b[D + i] *= 1e-14f;
        }
    }
    float *sim = hbuf(N), *d_sim = dnan(N), *d_a = dup(a, n), *d_b = dup(b, n);
    cpu->cosine_forward(sim, a, b, N, D);
    gpu->cosine_forward(d_sim, d_a, d_b, N, D);
    expect("cosine_forward", sim, d_sim, N, TOL, "N=%d D=%d%s", N, D, tiny ? " tiny rows" : "");
    float *dsim = hrand(N, -1, 1), *da = hrand(n, -1, 1), *g_da = dup(da, n);
    cpu->cosine_backward(da, dsim, a, b, N, D);
    gpu->cosine_backward(g_da, dup(dsim, N), d_a, d_b, N, D);
    expect("cosine_backward", da, g_da, n, TOL, "N=%d D=%d%s", N, D, tiny ? " tiny rows" : "");
    release();
}

/* ------------------------------------------------------------------------
 * Model plumbing
 * ---------------------------------------------------------------------- */

static void test_patches(int B, int C, int S, int p)
{
    const int G = S / p;
    const size_t nx = (size_t)B * C * S * S, nt = (size_t)B * G * G * C * p * p;
    float *x = hrand(nx, -1, 1), *d_x = dup(x, nx);
    float *patches = hbuf(nt), *d_patches = dnan(nt);
    cpu->patchify(patches, x, B, C, S, p);
    gpu->patchify(d_patches, d_x, B, C, S, p);
    expect("patchify", patches, d_patches, nt, 0.0, "B=%d C=%d S=%d p=%d", B, C, S, p);

    float *tok = hrand(nt, -1, 1), *img = hbuf(nx), *d_img = dnan(nx);
    cpu->unpatchify_forward(img, tok, B, C, S, p);
    gpu->unpatchify_forward(d_img, dup(tok, nt), B, C, S, p);
    expect("unpatchify_forward", img, d_img, nx, 0.0, "B=%d C=%d S=%d p=%d", B, C, S, p);
    float *dtok = hbuf(nt), *d_dtok = dnan(nt);
    cpu->unpatchify_backward(dtok, x, B, C, S, p);
    gpu->unpatchify_backward(d_dtok, d_x, B, C, S, p);
    expect("unpatchify_backward", dtok, d_dtok, nt, 0.0, "B=%d C=%d S=%d p=%d", B, C, S, p);
    release();
}

static void test_add_rows(int B, int T, int C)
{
    const size_t n = (size_t)B * T * C;
    float *x = hrand(n, -1, 1), *rows = hrand((size_t)T * C, -1, 1), *d_x = dup(x, n);
    cpu->add_rows(x, rows, B, T, C);
    gpu->add_rows(d_x, dup(rows, (size_t)T * C), B, T, C);
    expect("add_rows", x, d_x, n, TOL, "B=%d T=%d C=%d", B, T, C);
    release();
}

static void test_timestep_embedding(int B, int dim, float tmax)
{
    const size_t n = (size_t)B * dim;
    float *t = hrand(B, 0, tmax), *out = hbuf(n), *d_out = dnan(n);
    cpu->timestep_embedding(out, t, B, dim);
    gpu->timestep_embedding(d_out, dup(t, B), B, dim);
    expect("timestep_embedding", out, d_out, n, TOL, "B=%d dim=%d t<%g", B, dim, tmax);
    release();
}

static void test_embedding(int B, int C, int rows)
{
    const size_t nt = (size_t)rows * C, no = (size_t)B * C;
    int *idx = hmem((size_t)B * sizeof(int));
    for (int b = 0; b < B; b++)
        idx[b] = (int)(rng_next() % (uint64_t)rows); // repeats when B > rows
    int *d_idx = dup_bytes(idx, (size_t)B * sizeof(int));
    float *table = hrand(nt, -1, 1), *out = hbuf(no), *d_out = dnan(no);
    cpu->embedding_forward(out, table, idx, B, C);
    gpu->embedding_forward(d_out, dup(table, nt), d_idx, B, C);
    expect("embedding_forward", out, d_out, no, TOL, "B=%d C=%d rows=%d", B, C, rows);
    float *dout = hrand(no, -1, 1), *dtable = hrand(nt, -1, 1), *g_dtable = dup(dtable, nt);
    cpu->embedding_backward(dtable, dout, idx, B, C);
    gpu->embedding_backward(g_dtable, dup(dout, no), d_idx, B, C);
    expect("embedding_backward", dtable, g_dtable, nt, TOL, "B=%d C=%d rows=%d", B, C, rows);
    release();
}

static void test_interpolate(int B, size_t n)
{
    const size_t nn = (size_t)B * n;
    float *x = hrand(nn, -1, 1), *noise = hrand(nn, -3, 3);
    float *a = hrand(B, 0, 1), *s = hrand(B, 0, 1), *da = hrand(B, -2, 2), *ds = hrand(B, -2, 2);
    float *x_t = hbuf(nn), *v = hbuf(nn), *d_xt = dnan(nn), *d_v = dnan(nn);
    cpu->interpolate(x_t, v, x, noise, a, s, da, ds, B, n);
    gpu->interpolate(d_xt, d_v, dup(x, nn), dup(noise, nn), dup(a, B), dup(s, B), dup(da, B),
                     dup(ds, B), B, n);
    expect("interpolate x_t", x_t, d_xt, nn, TOL, "B=%d n=%zu", B, n);
    expect("interpolate v", v, d_v, nn, TOL, "B=%d n=%zu", B, n);
    release();
}

static void test_mse(size_t n, float scale)
{
    float *pred = hrand(n, -2, 2), *target = hrand(n, -2, 2);
    float *dpred = hbuf(n), *d_dpred = dnan(n);
    double lc = cpu->mse_forward_backward(dpred, pred, target, n, scale);
    double lg = gpu->mse_forward_backward(d_dpred, dup(pred, n), dup(target, n), n, scale);
    expect_scalar("mse_forward_backward loss", lc, lg, TOL_DOUBLE, "n=%zu scale %g", n, scale);
    expect("mse_forward_backward dpred", dpred, d_dpred, n, TOL, "n=%zu scale %g", n, scale);
    release();
}

/* The same Philox draw on both backends: equal to the last bit except
 * where the device's double log/cos/sin round differently (rare). */
static void test_normal_fill(size_t n, uint64_t seed, uint64_t step)
{
    float *z = hbuf(n), *d_z = dnan(n);
    cpu->normal_fill(z, n, seed, step, 5);
    gpu->normal_fill(d_z, n, seed, step, 5);
    const float *got = download(d_z, n);
    size_t same = 0;
    for (size_t i = 0; i < n; i++)
        same += memcmp(&z[i], &got[i], sizeof(float)) == 0;
    check(same >= n - n / 10000, "normal_fill: %zu of %zu draws identical to the CPU's "
          "(n=%zu seed %llu step %llu)", same, n, n, (unsigned long long)seed,
          (unsigned long long)step);
    expect("normal_fill", z, d_z, n, TOL, "n=%zu", n);
    release();
}

/* ------------------------------------------------------------------------
 * Optimiser (with the EMA of the parameters)
 * ---------------------------------------------------------------------- */

/* Three steps, with the EMA (decay 0.1, 0.9, 0.999) or without (the EMA
 * buffer must then stay as it was). */
static void test_adamw(size_t n, int with_ema)
{
    static const float decay[3] = {0.1f, 0.9f, 0.999f};
    float *param = hrand(n, -1, 1), *m = hbuf(n), *v = hbuf(n), *ema = hrand(n, -1, 1);
    float *d_param = dup(param, n), *d_m = dup(m, n), *d_v = dup(v, n), *d_ema = dup(ema, n);
    const char *with = with_ema ? "with EMA" : "no EMA";
    for (int t = 1; t <= 3; t++) {
        float *grad = hrand(n, -1, 1);
        cpu->adamw_update(param, grad, m, v, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.7f, t,
                          with_ema ? ema : NULL, decay[t - 1]);
        gpu->adamw_update(d_param, dup(grad, n), d_m, d_v, n, 1e-3f, 0.9f, 0.999f, 1e-8f,
                          0.01f, 0.7f, t, with_ema ? d_ema : NULL, decay[t - 1]);
        expect("adamw_update param", param, d_param, n, TOL, "n=%zu step %d %s", n, t, with);
        expect("adamw_update m", m, d_m, n, TOL, "n=%zu step %d %s", n, t, with);
        expect("adamw_update v", v, d_v, n, TOL, "n=%zu step %d %s", n, t, with);
        expect("adamw_update ema", ema, d_ema, n, TOL, "n=%zu step %d %s", n, t, with);
    }
    release();
}

/* ------------------------------------------------------------------------
 * Convolutional networks
 * ---------------------------------------------------------------------- */

static void test_conv(int B, int C, int H, int W, int OC, int K, int stride,
                      int pad, int with_bias, double tol, const char *path)
{
    const int Ho = reed_conv2d_out_size(H, K, stride, pad);
    const int Wo = reed_conv2d_out_size(W, K, stride, pad);
    const size_t ni = (size_t)B * C * H * W, nw = (size_t)OC * C * K * K;
    const size_t no = (size_t)B * OC * Ho * Wo;
    const size_t ns = reed_conv2d_scratch_floats(B, C, H, W, OC, K, stride, pad);
    float *inp = hrand(ni, -1, 1), *w = hrand(nw, -0.5f, 0.5f);
    float *bias = with_bias ? hrand(OC, -1, 1) : NULL;
    float *out = hbuf(no), *d_out = dnan(no), *scratch = hrand(ns, -1, 1);
    float *d_inp = dup(inp, ni), *d_w = dup(w, nw), *d_scratch = dnan(ns);
    cpu->conv2d_forward(out, inp, w, bias, B, C, H, W, OC, K, stride, pad, scratch);
    gpu->conv2d_forward(d_out, d_inp, d_w, dup(bias, OC), B, C, H, W, OC, K, stride, pad,
                        d_scratch);
    char shape[96];
    snprintf(shape, sizeof shape, "B%d C%d %dx%d OC%d K%d s%d p%d%s %s", B, C, H, W, OC, K,
             stride, pad, with_bias ? "" : " no bias", path);
    expect("conv2d_forward", out, d_out, no, tol, "%s", shape);

    float *dout = hrand(no, -1, 1), *d_dout = dup(dout, no);
    static const int masks[] = {GRAD_ALL, GRAD_B | GRAD_C, GRAD_A, GRAD_B, GRAD_C};
    for (size_t m = 0; m < sizeof masks / sizeof *masks; m++) {
        const int k = masks[m];
        float *dinp = hrand(ni, -1, 1), *dw = hrand(nw, -1, 1), *db = hrand(OC, -1, 1);
        float *g_dinp = dup(dinp, ni), *g_dw = dup(dw, nw), *g_db = dup(db, OC);
        gpu->upload(d_scratch, hrand(ns, -1, 1), ns * sizeof(float)); // stale contents
        cpu->conv2d_backward(k & GRAD_A ? dinp : NULL, k & GRAD_B ? dw : NULL,
                             k & GRAD_C ? db : NULL, dout, inp, w, B, C, H, W, OC, K, stride,
                             pad, scratch);
        gpu->conv2d_backward(k & GRAD_A ? g_dinp : NULL, k & GRAD_B ? g_dw : NULL,
                             k & GRAD_C ? g_db : NULL, d_dout, d_inp, d_w, B, C, H, W, OC, K,
                             stride, pad, d_scratch);
        const char *gs = grads(k, "dinp", "dw", "dbias");
        expect("conv2d_backward dinp", dinp, g_dinp, ni, tol, "%s %s", shape, gs);
        expect("conv2d_backward dw", dw, g_dw, nw, tol, "%s %s", shape, gs);
        expect("conv2d_backward dbias", db, g_db, OC, tol, "%s %s", shape, gs);
    }
    release();
}

/* The teacher's and evaluator's layers, and an odd non-square case. */
static void test_conv_all(double tol, const char *path)
{
    test_conv(4, 1, 28, 28, 16, 5, 2, 2, 1, tol, path);
    test_conv(4, 16, 14, 14, 32, 3, 2, 1, 1, tol, path);
    test_conv(4, 32, 7, 7, 64, 3, 1, 1, 0, tol, path);
    test_conv(3, 5, 9, 11, 7, 3, 2, 0, 1, tol, path);
    test_conv(64, 16, 14, 14, 32, 3, 2, 1, 1, tol, path);
}

static void test_avgpool(int B, int C, int H, int W)
{
    const size_t n = (size_t)B * C * H * W, nb = (size_t)B * C;
    float *x = hrand(n, -1, 3), *out = hbuf(nb), *d_out = dnan(nb);
    cpu->avgpool_global_forward(out, x, B, C, H, W);
    gpu->avgpool_global_forward(d_out, dup(x, n), B, C, H, W);
    expect("avgpool_global_forward", out, d_out, nb, TOL, "B=%d C=%d %dx%d", B, C, H, W);
    float *dout = hrand(nb, -1, 1), *dinp = hrand(n, -1, 1), *g_dinp = dup(dinp, n);
    cpu->avgpool_global_backward(dinp, dout, B, C, H, W);
    gpu->avgpool_global_backward(g_dinp, dup(dout, nb), B, C, H, W);
    expect("avgpool_global_backward", dinp, g_dinp, n, TOL, "B=%d C=%d %dx%d", B, C, H, W);
    release();
}

/* Rows 0 and 1 hold a tie for the maximum (the first one counts). */
static void test_cross_entropy(int B, int K, float scale)
{
    const size_t n = (size_t)B * K;
    float *z = hrand(n, -5, 5);
    int *y = hmem((size_t)B * sizeof(int));
    for (int b = 0; b < B; b++)
        y[b] = (int)(rng_next() % (uint64_t)K);
    if (K >= 3 && B >= 2) {
        z[0] = z[2] = 9.0f; // row 0: maxima at 0 and 2, label 2: a miss
        y[0] = 2;
        z[K + 1] = z[K + 2] = 9.0f; // row 1: maxima at 1 and 2, label 1: a hit
        y[1] = 1;
    }
    float *d_z = dup(z, n);
    int *d_y = dup_bytes(y, (size_t)B * sizeof(int));
    float *dz = hbuf(n), *d_dz = dnan(n);
    int hits_c = -1, hits_g = -2;
    double lc = cpu->cross_entropy_forward_backward(dz, &hits_c, z, y, B, K, scale);
    double lg = gpu->cross_entropy_forward_backward(d_dz, &hits_g, d_z, d_y, B, K, scale);
    expect_scalar("cross_entropy loss", lc, lg, TOL_DOUBLE, "B=%d K=%d scale %g", B, K, scale);
    expect("cross_entropy dlogits", dz, d_dz, n, TOL, "B=%d K=%d scale %g", B, K, scale);
    check(hits_c == hits_g, "%-30s %-5s B=%d K=%d: %d hits, CPU %d", "cross_entropy correct",
          mode, B, K, hits_g, hits_c);
    // Without dlogits and without correct.
    lg = gpu->cross_entropy_forward_backward(NULL, NULL, d_z, d_y, B, K, scale);
    expect_scalar("cross_entropy loss", lc, lg, TOL_DOUBLE, "B=%d K=%d no dlogits, no correct",
                  B, K);
    release();
}

/* ------------------------------------------------------------------------
 * The zero op, then an op that adds into the zeroed buffer. The CUDA
 * backend defers the memset (cuda_zero.cu): linear_backward, gelu_backward,
 * silu_backward, gated_add_backward and attention_backward write a freshly
 * zeroed output instead of adding into it, and every other op sees the
 * zeros. Outputs start as NaN, so an element the writing path misses fails.
 * Every input is uploaded before the zero: an upload is an op, and would
 * flush it.
 * ---------------------------------------------------------------------- */

/* The copy op is deferred the same way (cuda_zero.cu): gated_add_forward
 * on exactly the copied buffer reads the copy's source instead; any other
 * op sees the copy done. */
static void test_copy_consumer(int B, int T, int C)
{
    const size_t n = (size_t)B * T * C, nb = n * sizeof(float);
    const int ldm = 2 * C;
    float *x = hrand(n, -1, 1), *y = hrand(n, -1, 1), *gate = hrand((size_t)B * ldm, -1, 1);
    float *d_x = dup(x, n), *d_y = dup(y, n), *d_gate = dup(gate, (size_t)B * ldm);
    float *ref = hbuf(n);
    memcpy(ref, x, nb);
    cpu->gated_add_forward(ref, y, gate + C, ldm, B, T, C);

    float *g = dnan(n);
    const long folded0 = reed_cuda_copies_folded();
    gpu->copy(g, d_x, nb);
    gpu->gated_add_forward(g, d_y, d_gate + C, ldm, B, T, C);
    expect("copy, gated_add_forward", ref, g, n, TOL, "B=%d T=%d C=%d", B, T, C);
    if (on_gpu && !env_off("REED_CUDA_LAZY_ZERO"))
        check(reed_cuda_copies_folded() == folded0 + 1, "%-31s %-4s the copy was folded into the add",
              "copy, gated_add_forward", mode);
    expect("copy, gated_add_forward: source kept", x, d_x, n, 0.0, "B=%d T=%d C=%d", B, T, C);
    // The copy is not the gated add's buffer: done first, both stand.
    float *g2 = dup(x, n);
    g = dnan(n);
    gpu->copy(g, d_y, nb);
    gpu->gated_add_forward(g2, d_y, d_gate + C, ldm, B, T, C);
    expect("copy, gated_add_forward elsewhere: the copy", y, g, n, 0.0, "n=%zu", n);
    expect("copy, gated_add_forward elsewhere: the add", ref, g2, n, TOL, "B=%d T=%d C=%d", B,
           T, C);
    if (on_gpu && !env_off("REED_CUDA_LAZY_ZERO"))
        check(reed_cuda_copies_folded() == folded0 + 1, "%-31s %-4s that copy was not folded",
              "copy, gated_add_forward elsewhere", mode);
    g = dnan(n);
    gpu->copy(g, d_x, nb);
    expect("copy, download", x, g, n, 0.0, "n=%zu", n);
}

/* gated_add_backward into a freshly zeroed dy (a sole view in bf16). */
static void test_zero_gated_add(int B, int T, int C, double etol)
{
    const size_t n = (size_t)B * T * C;
    const int ldm = 3 * C;
    float *dx = hrand(n, -1, 1), *y = hrand(n, -1, 1), *gate = hrand((size_t)B * ldm, -1, 1);
    float *dg = hrand((size_t)B * ldm, -1, 1), *g_dg = dup(dg, (size_t)B * ldm);
    float *d_dx = dup(dx, n), *d_y = dup(y, n), *d_gate = dup(gate, (size_t)B * ldm);
    float *ref = hbuf(n), *g = dnan(n);
    cpu->gated_add_backward(ref, dg, dx, y, gate, ldm, B, T, C);
    gpu->zero(g, n * sizeof(float));
    gpu->gated_add_backward(g, g_dg, d_dx, d_y, d_gate, ldm, B, T, C);
    expect("zero, gated_add_backward dy", ref, g, n, etol, "B=%d T=%d C=%d", B, T, C);
    expect("zero, gated_add_backward dgate", dg, g_dg, (size_t)B * ldm, TOL, "B=%d T=%d C=%d",
           B, T, C);
}

/* tol: the GEMM ops'; etol: the elementwise ones' (bf16 where they write
 * a sole view, whose values read back are bf16). */
static void test_zero_consumers(double tol, double etol)
{
    const int B = 2, T = 49, C = 32, OC = 48, NH = 2, N = B * T;
    const size_t n = (size_t)N * C, no = (size_t)N * OC, nb = n * sizeof(float);
    float *dout = hrand(no, -1, 1), *inp = hrand(n, -1, 1), *w = hrand((size_t)OC * C, -1, 1);
    float *d_dout = dup(dout, no), *d_inp = dup(inp, n), *d_w = dup(w, (size_t)OC * C);

    // linear_backward: dinp = dout·w
    float *ref = hbuf(n), *g = dnan(n);
    cpu->linear_backward(ref, NULL, NULL, dout, inp, w, N, C, OC);
    gpu->zero(g, nb);
    gpu->linear_backward(g, NULL, NULL, d_dout, d_inp, d_w, N, C, OC);
    expect("zero, linear_backward dinp", ref, g, n, tol, "N=%d C=%d OC=%d", N, C, OC);

    // gelu_backward over all of the buffer, then over its first half only
    // (not the pending buffer: the zero is done first, the rest stays 0)
    ref = hbuf(n), g = dnan(n);
    cpu->gelu_backward(ref, dout, inp, n);
    gpu->zero(g, nb);
    gpu->gelu_backward(g, d_dout, d_inp, n);
    expect("zero, gelu_backward", ref, g, n, etol, "n=%zu", n);
    ref = hbuf(n), g = dnan(n);
    cpu->gelu_backward(ref, dout, inp, n / 2);
    gpu->zero(g, nb);
    gpu->gelu_backward(g, d_dout, d_inp, n / 2);
    expect("zero, gelu_backward half", ref, g, n, TOL, "n=%zu of %zu", n / 2, n);
    ref = hbuf(n), g = dnan(n);
    cpu->silu_backward(ref, dout, inp, n);
    gpu->zero(g, nb);
    gpu->silu_backward(g, d_dout, d_inp, n);
    expect("zero, silu_backward", ref, g, n, etol, "n=%zu", n);

    // gated_add_backward: dy = gate·dx; dgate still added to
    const int ldm = 3 * C;
    float *gate = hrand((size_t)B * ldm, -1, 1), *dg = hrand((size_t)B * ldm, -1, 1);
    float *d_gate = dup(gate, (size_t)B * ldm), *g_dg = dup(dg, (size_t)B * ldm);
    ref = hbuf(n), g = dnan(n);
    cpu->gated_add_backward(ref, dg, dout, inp, gate, ldm, B, T, C);
    gpu->zero(g, nb);
    gpu->gated_add_backward(g, g_dg, d_dout, d_inp, d_gate, ldm, B, T, C);
    expect("zero, gated_add_backward dy", ref, g, n, etol, "B=%d T=%d C=%d", B, T, C);
    expect("zero, gated_add_backward dgate", dg, g_dg, (size_t)B * ldm, TOL, "B=%d T=%d C=%d",
           B, T, C);
    test_zero_gated_add(B, 130, C, etol); // 3 blocks of rows in the one-pass kernel

    // attention_backward from the GPU's own forward state
    const size_t nq = 3 * n, na = (size_t)B * NH * T * T;
    float *qkv = hrand(nq, -1, 1), *att = hbuf(na), *out = hbuf(n);
    float *d_qkv = dup(qkv, nq), *d_att = dnan(na), *d_out = dnan(n), *scratch = dnan(na);
    cpu->attention_forward(out, att, qkv, B, T, C, NH);
    gpu->attention_forward(d_out, d_att, d_qkv, B, T, C, NH);
    float *dattn = hrand(n, -1, 1), *d_dattn = dup(dattn, n);
    ref = hbuf(nq), g = dnan(nq);
    cpu->attention_backward(ref, hbuf(na), dattn, qkv, att, B, T, C, NH);
    gpu->zero(g, nq * sizeof(float));
    gpu->attention_backward(g, scratch, d_dattn, d_qkv, d_att, B, T, C, NH);
    expect("zero, attention_backward", ref, g, nq, tol, "B=%d T=%d C=%d NH=%d", B, T, C, NH);

    // Other ops see the zeros: a download, an accumulate, a second zero, a
    // consumer writing another buffer.
    float *zeros = hbuf(n);
    g = dnan(n);
    gpu->zero(g, nb);
    expect("zero, download", zeros, g, n, 0.0, "n=%zu", n);
    g = dnan(n);
    gpu->zero(g, nb);
    gpu->accumulate(g, d_inp, n);
    expect("zero, accumulate", inp, g, n, 0.0, "n=%zu", n);
    float *g2 = dnan(n);
    g = dnan(n);
    gpu->zero(g, nb);
    gpu->zero(g2, nb);
    expect("zero, zero: the first", zeros, g, n, 0.0, "n=%zu", n);
    expect("zero, zero: the second", zeros, g2, n, 0.0, "n=%zu", n);
    g = dnan(n), g2 = dup(inp, n);
    gpu->zero(g, nb);
    gpu->linear_backward(g2, NULL, NULL, d_dout, d_inp, d_w, N, C, OC);
    expect("zero, consumer of another", zeros, g, n, 0.0, "n=%zu", n);
    test_copy_consumer(B, T, C);
    release();
}

/* ------------------------------------------------------------------------
 * bf16 views (bf16 mode on bf16 operands, cuda_view.cu): the ops that
 * write a linear layer's input (ln_modulate, gelu, silu, their backward,
 * gated_add_backward) write its bf16 copy too, and the linear backward
 * reads the copy its forward used. A view must give exactly what a fresh
 * copy gives: the block's chain of ops runs with views on and off, every
 * output must match bitwise, and the view counter must show that views
 * were read. A buffer written after its view was made (by an upload, a
 * copy, a zero, an op, a write into its middle, a free and a new
 * allocation) must not be read through the stale view: checked against
 * the CPU.
 * ---------------------------------------------------------------------- */

/* The host inputs of one chain. */
typedef struct chain_in {
    int B, T, C, F, N;
    float *x, *ada, *w1, *b1, *w2, *b2, *gate, *dx, *dh2;
} chain_in;

#define CHAIN_OUTS 17

/* A SiT block's pattern on the GPU: each linear layer reads the output of
 * the op just before it, forward and backward (9 operands with a view).
 * out[k] gets the k-th result, downloaded; len[k] its size. */
/* x rounded to the nearest bf16 (ties to even), as __float2bfloat16. */
static float bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

static void run_chain(const chain_in *in, float **out, size_t *len)
{
    const int B = in->B, T = in->T, C = in->C, F = in->F, N = in->N;
    const size_t nc = (size_t)N * C, nf = (size_t)N * F, nw = (size_t)F * C;
    float *x = dup(in->x, nc), *ada = dup(in->ada, (size_t)B * 2 * C);
    float *w1 = dup(in->w1, nw), *b1 = dup(in->b1, F), *w2 = dup(in->w2, nw);
    float *b2 = dup(in->b2, C), *gate = dup(in->gate, (size_t)B * C), *dx = dup(in->dx, nc);
    float *dh2 = dup(in->dh2, nf);
    float *mod = dnan(nc), *mean = dnan(N), *rstd = dnan(N), *h = dnan(nf), *g = dnan(nf);
    float *o = dnan(nc), *sl = dnan(nf), *o2 = dnan(nc), *dy = dnan(nc), *dg = dnan(nf);
    float *dh = dnan(nf), *dmod = dnan(nc), *dgate = dup(in->gate, (size_t)B * C);
    float *dw2 = dup(in->w2, nw), *db2 = dup(in->b2, C), *dw1 = dup(in->w1, nw);
    float *db1 = dup(in->b1, F), *dw1b = dup(in->w1, nw);

    gpu->ln_modulate_forward(mod, mean, rstd, x, ada, ada + C, 2 * C, B, T, C, 1e-6f);
    gpu->linear_forward(h, mod, w1, b1, N, C, F); // bias: cuBLASLt's epilogue
    gpu->gelu_forward(g, h, nf);
    gpu->linear_forward(o, g, w2, NULL, N, F, C); // no bias: cuBLAS
    gpu->silu_forward(sl, h, nf);
    gpu->linear_forward(o2, sl, w2, b2, N, F, C);
    gpu->zero(dy, nc * sizeof(float));
    gpu->gated_add_backward(dy, dgate, dx, o, gate, C, B, T, C);
    gpu->zero(dg, nf * sizeof(float));
    gpu->linear_backward(dg, dw2, db2, dy, g, w2, N, F, C); // g: the forward's view
    gpu->zero(dh, nf * sizeof(float));
    gpu->gelu_backward(dh, dg, h, nf);
    gpu->zero(dmod, nc * sizeof(float));
    gpu->linear_backward(dmod, dw1, db1, dh, mod, w1, N, C, F);
    gpu->silu_backward(dh2, dg, h, nf); // adds: dh2 is not freshly zeroed
    gpu->linear_backward(NULL, dw1b, NULL, dh2, mod, w1, N, C, F);

    const float *res[CHAIN_OUTS] = {mod, h, g, o, sl, o2, dy, dgate, dg, dw2, db2, dh, dmod,
                                    dw1, db1, dh2, dw1b};
    const size_t n[CHAIN_OUTS] = {nc, nf, nf, nc, nf, nc, nc, (size_t)B * C, nf, nw, C, nf, nc,
                                  nw, F, nf, nw};
    for (int k = 0; k < CHAIN_OUTS; k++) {
        out[k] = download(res[k], n[k]);
        len[k] = n[k];
    }
}

static void test_views_chain(int B, int T, int C, int F)
{
    chain_in in = {B, T, C, F, B * T, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    const size_t nc = (size_t)in.N * C, nf = (size_t)in.N * F, nw = (size_t)F * C;
    in.x = hrand(nc, -2, 2), in.ada = hrand((size_t)B * 2 * C, -1, 1);
    in.w1 = hrand(nw, -1, 1), in.b1 = hrand(F, -1, 1), in.w2 = hrand(nw, -1, 1);
    in.b2 = hrand(C, -1, 1), in.gate = hrand((size_t)B * C, -1, 1);
    in.dx = hrand(nc, -1, 1), in.dh2 = hrand(nf, -1, 1);
    float *with[CHAIN_OUTS], *plain[CHAIN_OUTS], *without[CHAIN_OUTS];
    size_t len[CHAIN_OUTS];

    // Views on, sole views too: the producers of mod, gelu, silu, and of dy
    // and dh where the lazy zero lets them write those anew, write only
    // their views, which the downloads at the end write back.
    long made0, mat0, made, mat;
    reed_cuda_view_sole_counts(&made0, &mat0);
    const long hits0 = reed_cuda_view_hits();
    run_chain(&in, with, len);
    const long hits = reed_cuda_view_hits() - hits0;
    reed_cuda_view_sole_counts(&made, &mat);
    check(hits == 9, "%-31s %-4s %-48s %ld views read (9 expected)", "views: operands read", mode,
          "", hits);
    const int sole = reed_cuda_set_view_sole(1);
    // Written back: for the downloads only (the bias gradients read the
    // bf16 copies).
    const int lazy = !env_off("REED_CUDA_LAZY_ZERO"), want = lazy ? 5 : 3;
    if (sole)
        check(made - made0 == want && mat - mat0 == want,
              "%-31s %-4s %ld sole views made, %ld written back (%d and %d expected)",
              "views: sole", mode, made - made0, mat - mat0, want, want);
    else
        printf("sole views: off (REED_CUDA_VIEW_SOLE=0); not checked\n");
    reed_cuda_set_view_sole(0);
    run_chain(&in, plain, len);
    reed_cuda_set_view_sole(1);
    reed_cuda_set_views(0);
    run_chain(&in, without, len);
    check(reed_cuda_view_hits() - hits0 == 2 * hits, "%-31s %-4s views off: no view read "
          "(%ld views read over the three runs, %ld expected)", "views: off", mode,
          reed_cuda_view_hits() - hits0, 2 * hits);
    reed_cuda_set_views(1);
    static const char *const names[CHAIN_OUTS] = {
        "mod", "h", "gelu", "o", "silu", "o2", "dy", "dgate", "dgelu", "dw2", "db2",
        "dh", "dmod", "dw1", "db1", "dh2 (+=)", "dw1 (2nd)"};
    const int sole_out[CHAIN_OUTS] = {[0] = 1, [2] = 1, [4] = 1, [6] = lazy, [11] = lazy};
    for (int k = 0; k < CHAIN_OUTS; k++) {
        int same = memcmp(plain[k], without[k], len[k] * sizeof(float)) == 0;
        check(same, "%-31s %-4s %-10s B=%d T=%d C=%d F=%d: views on = off, bitwise",
              "views: chain", mode, names[k], B, T, C, F);
        record("views: chain, on = off", same ? 0.0 : INFINITY, 0.0);
        // Sole: the values the GEMMs read, bf16; every other output as is.
        for (size_t i = 0; i < len[k] && same; i++)
            same = with[k][i] == (sole && sole_out[k] ? bf16_round(without[k][i]) : without[k][i]);
        check(same, "%-31s %-4s %-10s B=%d T=%d C=%d F=%d: %s", "views: chain, sole views", mode,
              names[k], B, T, C, F,
              sole && sole_out[k] ? "the bf16 of views off's" : "views off's, bitwise");
    }
    release();
}

/* Bytes mapped to the buffer backed on first use that p points into. */
static size_t mapped(const void *p)
{
    size_t r, m;
    reed_cuda_lazy_buffer(p, &r, &m);
    return m;
}

/* bf16 mode, buffers backed on first use: an output written as a sole view
 * alone (cuda_view.cu) maps nothing. LayerNorm + modulate's, read by a
 * linear layer through its view; the flash attention's out, and of att
 * only the parts the flash kernels use (row sums and out's copy). Reading
 * such an output in fp32 maps it, and the view writes its values back. */
static void test_lazy_sole(void)
{
    if (!reed_cuda_set_lazy_min(0) || !reed_cuda_set_view_sole(1) || !reed_cuda_set_views(1)) {
        printf("lazy: no buffers backed on first use, or no sole views: not checked\n");
        return;
    }
    const int B = 2, T = 16, C = 64, OC = 48, N = B * T;
    const size_t n = (size_t)N * C, no = (size_t)N * OC;
    float *x = hrand(n, -2, 2), *ada = hrand((size_t)B * 2 * C, -1, 1);
    float *w = hrand((size_t)OC * C, -1, 1), *bias = hrand(OC, -1, 1);
    float *d_x = dup(x, n), *d_ada = dup(ada, (size_t)B * 2 * C);
    float *d_w = dup(w, (size_t)OC * C), *d_bias = dup(bias, OC);
    float *mean = dnan(N), *rstd = dnan(N);
    float *mod = dmem(n * sizeof(float)), *y = dmem(no * sizeof(float));
    gpu->ln_modulate_forward(mod, mean, rstd, d_x, d_ada, d_ada + C, 2 * C, B, T, C, 1e-6f);
    gpu->linear_forward(y, mod, d_w, d_bias, N, C, OC); // on probation: y in fp32
    check(mapped(mod) == 0 && mapped(y) >= no * sizeof(float),
          "lazy: a sole view's buffer stays unmapped (ln_modulate's out: %zu bytes mapped; "
          "the linear's out, in fp32: %zu)", mapped(mod), mapped(y));
    float *ref = hbuf(n), *hmean = hbuf(N), *hrstd = hbuf(N);
    cpu->ln_modulate_forward(ref, hmean, hrstd, x, ada, ada + C, 2 * C, B, T, C, 1e-6f);
    expect("lazy: sole view read back", ref, mod, n, TOL_BF16, "B=%d T=%d C=%d", B, T, C);
    check(mapped(mod) >= n * sizeof(float), "lazy: the read in fp32 maps the buffer (%zu bytes)",
          mapped(mod));

    // Gradients written anew (zeroed first) by an activation's backward
    // and by gated_add_backward: sole views, their buffers unmapped until
    // read in fp32.
    // dgate, like the gate, at a stride of 2C a sample (ldm)
    float *dout = hrand(n, -1, 1), *d_dout = dup(dout, n), *dgate = hbuf((size_t)B * 2 * C);
    float *d_dgate = dup(dgate, (size_t)B * 2 * C);
    float *g_silu = dmem(n * sizeof(float)), *g_gate = dmem(n * sizeof(float));
    gpu->zero(g_silu, n * sizeof(float));
    gpu->silu_backward(g_silu, d_dout, d_x, n);
    gpu->zero(g_gate, n * sizeof(float));
    gpu->gated_add_backward(g_gate, d_dgate, d_dout, d_x, d_ada + C, 2 * C, B, T, C);
    check(mapped(g_silu) == 0 && mapped(g_gate) == 0,
          "lazy: gradients written as sole views stay unmapped (silu_backward's: %zu bytes "
          "mapped; gated_add_backward's: %zu)", mapped(g_silu), mapped(g_gate));
    float *ref_silu = hbuf(n), *ref_gate = hbuf(n);
    cpu->silu_backward(ref_silu, dout, x, n);
    cpu->gated_add_backward(ref_gate, dgate, dout, x, ada + C, 2 * C, B, T, C);
    expect("lazy: silu_backward sole view", ref_silu, g_silu, n, TOL_BF16,
           "B=%d T=%d C=%d", B, T, C);
    expect("lazy: gated_add_bwd sole view", ref_gate, g_gate, n, TOL_BF16,
           "B=%d T=%d C=%d", B, T, C);

    // The flash forward: out as a sole view, att used in part.
    const int NH = 4, Ta = 128, Ba = 16, Ca = 64; // head size 16; att 4 MiB
    const size_t nq = (size_t)Ba * Ta * 3 * Ca, nao = (size_t)Ba * Ta * Ca;
    const size_t natt = (size_t)Ba * NH * Ta * Ta * sizeof(float);
    reed_cuda_set_attention(3);
    if (reed_cuda_attention_path(Ba, Ta, Ca, NH) == 3) {
        float *qkv = hrand(nq, -1, 1), *out = hbuf(nao), *att = hbuf(natt / sizeof(float));
        float *d_qkv = dup(qkv, nq), *d_out = dmem(nao * sizeof(float)), *d_att = dmem(natt);
        gpu->attention_forward(d_out, d_att, d_qkv, Ba, Ta, Ca, NH);
        const size_t m_out = mapped(d_out), m_att = mapped(d_att);
        check(m_out == 0 && m_att > 0 && m_att < natt,
              "lazy: flash attention maps %zu of att's %zu bytes and none of out's (%zu)",
              m_att, natt, m_out);
        cpu->attention_forward(out, att, qkv, Ba, Ta, Ca, NH);
        expect("lazy: flash out read back", out, d_out, nao, TOL_BF16,
               "B=%d T=%d C=%d NH=%d", Ba, Ta, Ca, NH);
    } else {
        printf("lazy: the flash path does not cover B=%d T=%d C=%d NH=%d: not checked\n", Ba,
               Ta, Ca, NH);
    }
    reed_cuda_set_attention(0);
    release();
}

/* CPU reference of linear_forward on x(N,C) against the GPU's on d_x. */
static void expect_linear_forward(const char *what, const float *x, const float *d_x,
                                  const float *w, const float *d_w, const float *bias,
                                  const float *d_bias, int N, int C, int OC)
{
    float *ref = hbuf((size_t)N * OC), *got = dnan((size_t)N * OC);
    cpu->linear_forward(ref, x, w, bias, N, C, OC);
    gpu->linear_forward(got, d_x, d_w, d_bias, N, C, OC);
    expect("views: stale view not read", ref, got, (size_t)N * OC, TOL_BF16, "%s", what);
}

static void test_views_stale(void)
{
    const int B = 2, T = 8, C = 32, OC = 24, N = B * T;
    const size_t n = (size_t)N * C, nw = (size_t)OC * C;
    float *x = hrand(n, -2, 2), *ada = hrand((size_t)B * 2 * C, -1, 1);
    float *w = hrand(nw, -1, 1), *bias = hrand(OC, -1, 1), *other = hrand(n, -1, 1);
    float *d_x = dup(x, n), *d_ada = dup(ada, (size_t)B * 2 * C), *d_w = dup(w, nw);
    float *d_bias = dup(bias, OC), *d_other = dup(other, n);
    float *mod = dnan(n), *mean = dnan(N), *rstd = dnan(N);
    float *h = hbuf(n); // host copy of what mod holds now

    // Each case: ln_modulate_forward makes mod's view, a write changes mod,
    // and the linear layer must read the new contents.
#define FRESH_VIEW()                                                          \
    gpu->ln_modulate_forward(mod, mean, rstd, d_x, d_ada, d_ada + C, 2 * C, B, T, C, 1e-6f)
    // The control: with no write between, the linear layer reads the view.
    FRESH_VIEW();
    const long hits0 = reed_cuda_view_hits();
    gpu->download(h, mod, n * sizeof(float));
    expect_linear_forward("no write after the view", h, mod, w, d_w, bias, d_bias, N, C, OC);
    check(reed_cuda_view_hits() == hits0 + 1, "%-31s %-4s the control read the view",
          "views: stale view not read", mode);

    FRESH_VIEW();
    gpu->upload(mod, other, n * sizeof(float));
    expect_linear_forward("upload after the view", other, mod, w, d_w, bias, d_bias, N, C, OC);

    FRESH_VIEW();
    gpu->copy(mod, d_other, n * sizeof(float));
    expect_linear_forward("copy after the view", other, mod, w, d_w, bias, d_bias, N, C, OC);

    FRESH_VIEW();
    gpu->zero(mod, n * sizeof(float));
    expect_linear_forward("zero after the view", hbuf(n), mod, w, d_w, bias, d_bias, N, C, OC);

    FRESH_VIEW();
    gpu->download(h, mod, n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        h[i] *= 3.0f;
    gpu->scale(mod, 3.0f, n); // an op writing mod in place
    expect_linear_forward("scale after the view", h, mod, w, d_w, bias, d_bias, N, C, OC);

    FRESH_VIEW();
    gpu->download(h, mod, n * sizeof(float));
    memcpy(h + 5 * C + 3, other, 7 * sizeof(float));
    gpu->upload(mod + 5 * C + 3, other, 7 * sizeof(float)); // into its middle
    expect_linear_forward("upload into its middle", h, mod, w, d_w, bias, d_bias, N, C, OC);

    // The view the forward kept, then a write before the backward.
    float *gw = hrand(nw, -1, 1), *g_gw = dup(gw, nw), *dout = hrand((size_t)N * OC, -1, 1);
    float *d_dout = dup(dout, (size_t)N * OC);
    float *d_in = dup(x, n), *out = dnan((size_t)N * OC);
    gpu->linear_forward(out, d_in, d_w, d_bias, N, C, OC); // keeps d_in's view
    gpu->accumulate(d_in, d_other, n);
    float *sum = hbuf(n);
    for (size_t i = 0; i < n; i++)
        sum[i] = x[i] + other[i];
    cpu->linear_backward(NULL, gw, NULL, dout, sum, w, N, C, OC);
    gpu->linear_backward(NULL, g_gw, NULL, d_dout, d_in, d_w, N, C, OC);
    expect("views: stale view not read", gw, g_gw, nw, TOL_BF16, "accumulate between forward "
           "and backward");

    // A freed buffer's view: the next block from the arena (zeroed by
    // mem_alloc, written by no op) must not be read through it.
    float *block = gpu->mem_alloc(n * sizeof(float));
    gpu->upload(block, x, n * sizeof(float));
    gpu->linear_forward(out, block, d_w, d_bias, N, C, OC); // block's view, kept
    gpu->mem_free(block);
    float *again = dmem(n * sizeof(float));
    if (again == block)
        expect_linear_forward("a new block where a freed one was", hbuf(n), again, w, d_w,
                              bias, d_bias, N, C, OC);
    else // REED_CUDA_ARENA=0, say: the case does not arise
        printf("note: the arena gave a new block elsewhere; the freed-block case not run\n");
#undef FRESH_VIEW
    release();
}

/* The flash backward writes dqkv's view for the qkv linear's backward,
 * which reads it as dout: one view hit, and the same dw and dbias as with
 * views off. Once adding into dqkv, once writing a freshly zeroed one. */
static void test_views_attention(void)
{
    const int B = 2, T = 40, C = 64, NH = 2, N = B * T;
    const size_t nq = (size_t)N * 3 * C, no = (size_t)N * C, nw = (size_t)3 * C * C;
    float *d_qkv = dup(hrand(nq, -1, 1), nq), *d_dout = dup(hrand(no, -1, 1), no);
    float *d_x = dup(hrand(no, -1, 1), no), *d_w = dup(hrand(nw, -1, 1), nw);
    float *d_att = dnan((size_t)B * NH * T * T), *dqkv0 = hrand(nq, -1, 1);
    reed_cuda_set_attention(3); // flash
    gpu->attention_forward(dnan(no), d_att, d_qkv, B, T, C, NH);
    for (int fresh = 0; fresh < 2; fresh++) {
        float *got[2][3]; // [views on, off][dw, dbias, dqkv]
        long hits[2];
        for (int off = 0; off < 2; off++) {
            reed_cuda_set_views(!off);
            float *d_dqkv = dup(dqkv0, nq), *dw = dnan(nw), *db = dnan(3 * C);
            gpu->zero(dw, nw * sizeof(float));
            gpu->zero(db, 3 * C * sizeof(float));
            if (fresh)
                gpu->zero(d_dqkv, nq * sizeof(float));
            gpu->attention_backward(d_dqkv, dnan((size_t)B * NH * T * T), d_dout, d_qkv, d_att, B,
                                    T, C, NH);
            const long h0 = reed_cuda_view_hits();
            gpu->linear_backward(NULL, dw, db, d_dqkv, d_x, d_w, N, C, 3 * C);
            hits[off] = reed_cuda_view_hits() - h0;
            got[off][0] = hbuf(nw), got[off][1] = hbuf(3 * C);
            gpu->download(got[off][0], dw, nw * sizeof(float));
            gpu->download(got[off][1], db, 3 * C * sizeof(float));
            got[off][2] = download(d_dqkv, nq); // a sole view, written back, when fresh
        }
        reed_cuda_set_views(1);
        const char *how = fresh ? "dqkv zeroed" : "dqkv added to";
        check(hits[0] == 1 && hits[1] == 0, "%-31s %-4s %-14s dout read from the view: %ld, off: %ld",
              "views: flash dqkv", mode, how, hits[0], hits[1]);
        const int same = memcmp(got[0][0], got[1][0], nw * sizeof(float)) == 0 &&
                         memcmp(got[0][1], got[1][1], 3 * C * sizeof(float)) == 0;
        check(same, "%-31s %-4s %-14s dw, dbias: views on = off, bitwise", "views: flash dqkv", mode,
              how);
        size_t bad = 0;
        for (size_t i = 0; i < nq; i++) {
            const float off = got[1][2][i];
            bad += got[0][2][i] != off && got[0][2][i] != bf16_round(off);
        }
        check(bad == 0, "%-31s %-4s %-14s dqkv: views off's, or its bf16 (%zu of %zu differ)",
              "views: flash dqkv", mode, how, bad, nq);
    }
    reed_cuda_set_attention(0);
    release();
}

/* Compares n values with the bf16 of ref's (bitwise): a sole view's values
 * written back. */
static void expect_bf16_of(const char *what, const float *got, const float *ref, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += got[i] != bf16_round(ref[i]);
    check(bad == 0, "%-31s %-4s %-40s %zu of %zu values differ", "views: sole, written back", mode,
          what, bad, n);
}

static void expect_zeros(const char *what, const float *got, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += got[i] != 0.0f;
    check(bad == 0, "%-31s %-4s %-40s %zu of %zu values not 0", "views: sole, overwritten", mode,
          what, bad, n);
}

/* Sole views in a buffer written around them: a zero covering one drops
 * it; a zero or a producer covering a part of one writes back the rest. */
static void test_views_sole(void)
{
    if (!reed_cuda_set_view_sole(1)) {
        printf("sole views: off (REED_CUDA_VIEW_SOLE=0); not checked\n");
        return;
    }
    const int B = 2, T = 8, C = 32, N = B * T, off = 8;
    const size_t n = (size_t)N * C, half = n / 2;
    float *d_x = dup(hrand(n, -2, 2), n), *d_ada = dup(hrand((size_t)B * 2 * C, -1, 1), 2 * B * C);
    float *d_y = dup(hrand(half, -2, 2), half), *mean = dnan(N), *rstd = dnan(N);
    float *big = dnan(n + 2 * off), *mod = big + off; // mod inside a larger buffer
#define LN_INTO(out)                                                          \
    gpu->ln_modulate_forward(out, mean, rstd, d_x, d_ada, d_ada + C, 2 * C, B, T, C, 1e-6f)
    // The references: the fp32 values, sole views off.
    reed_cuda_set_view_sole(0);
    float *d_ref = dnan(n), *d_gref = dnan(half);
    LN_INTO(d_ref);
    gpu->gelu_forward(d_gref, d_y, half);
    float *ref = download(d_ref, n), *gref = download(d_gref, half);
    reed_cuda_set_view_sole(1);

    LN_INTO(mod); // sole
    gpu->zero(big, (n + 2 * off) * sizeof(float));
    expect_zeros("a zero over the whole buffer", download(big, n + 2 * off), n + 2 * off);

    LN_INTO(mod);
    gpu->zero(big, (off + half) * sizeof(float)); // mod's first half
    float *got = download(mod, n);
    expect_zeros("a zero over its first half", got, half);
    expect_bf16_of("the second half kept", got + half, ref + half, half);

    // A producer over its second half: a buffer of its own from then on,
    // read as such (an op reads within the buffer its pointer is in).
    LN_INTO(mod);
    gpu->gelu_forward(mod + half, d_y, half);
    expect_bf16_of("a producer over its second half: first", download(mod, half), ref, half);
    expect_bf16_of("a producer over its second half: second", download(mod + half, half), gref,
                   half);
#undef LN_INTO
    release();
}

static void test_views(void)
{
    if (!reed_cuda_set_views(1)) {
        printf("bf16 views: off (REED_CUDA_VIEWS=0 or REED_CUDA_BF16_OPERANDS=0); not checked\n");
        return;
    }
    test_views_chain(2, 16, 32, 64);
    test_views_chain(1, 5, 7, 9); // odd sizes: the one-value paths
    test_views_stale();
    test_views_attention();
    test_views_sole();
}

/* ------------------------------------------------------------------------
 * Suites
 * ---------------------------------------------------------------------- */

/* The linear layers, at tolerance tol (fp32 or bf16 mode); attention has
 * run_attention. */
static void run_gemm_ops(double tol)
{
    test_linear(196, 96, 288, 1, tol);   // B=4, T=49, C=96, qkv
    test_linear(256, 384, 1152, 1, tol); // B=4, T=64, C=384, qkv
    test_linear(256, 128, 128, 0, tol);
    test_linear(7, 5, 3, 1, tol);
    test_linear(1000, 40, 72, 1, tol); // dbias over 1000 rows: the chunked column sum
    test_linear_gelu(196, 96, 384, 96, tol, 0); // B=4, T=49, C=96, the MLP
    test_linear_gelu(64, 32, 128, 32, tol, 0);
    test_linear_gelu(37, 24, 20, 12, tol, 0);   // F not a multiple of 8: the parts
}

static void run_other_ops(void)
{
    test_layernorm(196, 96, 1e-6f);
    test_layernorm(256, 384, 1e-6f);
    test_layernorm(5, 1000, 1e-5f);
    test_layernorm(3, 2000, 1e-5f); // longer than a row in registers: spans of 512
    test_modulate(4, 49, 96);
    test_modulate(2, 5, 7);
    test_ln_modulate(4, 49, 96);
    test_ln_modulate(4, 64, 384);
    test_ln_modulate(2, 5, 7);
    // A row in registers, 24 or 36 channels a lane; the backward's blocks
    // of 32 rows each sum their columns (the last block of a sample partial)
    test_ln_modulate(2, 3, 768);   // SiT-B
    test_ln_modulate(3, 70, 768);  // 3 blocks a sample
    test_ln_modulate(2, 33, 1024); // SiT-L
    test_ln_modulate(2, 3, 1152);  // SiT-XL
    test_ln_modulate(2, 3, 1500);  // spans of 512, column sums by colsum
    test_gated_add(4, 64, 384);
    test_gated_add(3, 130, 200); // backward in one pass: 3 blocks of rows, a part stripe
    test_gated_add(2, 5, 7);     // C % 4 ≠ 0: two passes
    test_pointwise_all((size_t)196 * 384);
    test_pointwise_all(1001);
    test_elementwise(100003);
    test_elementwise(((size_t)1 << 20) + 7);
    test_mean_tokens(4, 49, 96);
    test_mean_tokens(64, 64, 384);
    test_mean_tokens(1, 600, 40); // the chunked column sum, mean mode
    test_resample_tokens(4, 196, 49, 64);
    test_resample_tokens(3, 5, 7, 3);
    test_cosine(196, 384, 0);
    test_cosine(4, 384, 1);
    test_patches(4, 1, 28, 4);
    test_patches(2, 3, 32, 4);
    test_patches(3, 4, 32, 2);
    test_add_rows(4, 49, 96);
    test_timestep_embedding(64, 256, 1.0f);
    test_timestep_embedding(16, 256, 1000.0f);
    test_timestep_embedding(5, 64, 1.0f);
    test_embedding(64, 96, 11);
    test_embedding(64, 384, 1001);
    test_interpolate(4, 784);
    test_mse(4 * 784, 1.0f);
    test_mse(((size_t)1 << 20) + 3, 0.37f);
    test_normal_fill(((size_t)1 << 20) + 3, 42, 7);
    test_normal_fill(5, (uint64_t)1 << 40, (uint64_t)1 << 33);
    test_adamw(100003, 0);
    test_adamw(100003, 1);
    test_avgpool(4, 64, 7, 7);
    test_avgpool(2, 3, 28, 28);
    test_cross_entropy(64, 10, 1.0f);
    test_cross_entropy(257, 10, 0.5f);
    test_cross_entropy(100, 1000, 1.0f);
}

static void summary(void)
{
    printf("\n%-40s %10s %8s\n", "op", "worst err", "tol");
    for (int i = 0; i < nresults; i++)
        printf("%-40s %10.2e %8.0e  %s\n", results[i].op, results[i].err, results[i].tol,
               results[i].failed ? "FAIL" : "ok");
    printf("test_cuda_ops: %d checks, %d failed%s\n", checks, failures,
           on_gpu ? "" : " (the CPU table standing in for the GPU)");
}

int main(void)
{
    char why[512] = "";
    const char *self = getenv("REED_CUDA_TEST_ON_CPU");
    // Sole views for outputs of any size: the tests' are small. The GEMM
    // algorithms timed (cuda_lt.cu's lt_tune, off by default), so that the
    // algorithms it keeps are checked too.
    setenv("REED_CUDA_VIEW_SOLE_MIN", "0", 0);
    setenv("REED_CUDA_LT_TUNE", "1", 0);
    gpu = reed_ops_cuda(why, sizeof why);
    // Reserved buffers plain for the arena's tests, then every one backed
    // on first use (where the driver allows) for the rest.
    reed_cuda_set_lazy_min(SIZE_MAX);
    on_gpu = gpu != NULL;
    if (!gpu) {
        if (!reed_cuda_absent()) { // a GPU is there: the backend must start
            printf("FAIL test_cuda_ops: the CUDA backend did not start: %s\n", why);
            return 1;
        }
        if (!(self && self[0] == '1')) {
            printf("test_cuda_ops: skipped: %s\n", why);
            return 77;
        }
        printf("test_cuda_ops: no GPU (%s); checking the test with the CPU table\n", why);
        gpu = &reed_ops_cpu;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_table();
    test_memory();
    test_memory_churn();
    test_lazy_memory();

    run_gemm_ops(TOL);
    run_attention(TOL);
    run_other_ops();
    test_zero_consumers(TOL, TOL);
    const int cudnn = on_gpu && reed_cuda_set_cudnn(1);
    test_conv_all(TOL, cudnn ? "cudnn" : "im2col");
    if (cudnn) {
        reed_cuda_set_cudnn(0);
        test_conv_all(TOL, "im2col");
        reed_cuda_set_cudnn(1);
    }

    if (on_gpu) {
        reed_cuda_set_precision(1);
        mode = "bf16";
        run_gemm_ops(TOL_BF16);
        // Sole views off: the writes themselves, exact; then on.
        reed_cuda_set_view_sole(0);
        test_zero_consumers(TOL_BF16, TOL);
        reed_cuda_set_view_sole(1);
        test_zero_consumers(TOL_BF16, TOL_BF16);
        test_views();
        test_linear_gelu(64, 32, 128, 32, TOL_BF16, 1);
        test_resample_tokens(4, 196, 49, 64); // fp32 in the bf16 mode too
        test_attention_paths(TOL_BF16);
        test_qkv_attention(2, 64, 128, 2, TOL_BF16);
        test_attention_switch(2, 64, 128, 2, TOL_BF16);
        test_flash_variants(TOL_BF16);
        test_linear_gelu_twice(64, 32, 128, TOL_BF16);
        test_lazy_sole();
        test_conv_all(TOL_BF16, cudnn ? "cudnn" : "im2col");
        if (cudnn) {
            reed_cuda_set_cudnn(0);
            test_conv_all(TOL_BF16, "im2col");
            reed_cuda_set_cudnn(1);
        }
        reed_cuda_set_precision(0);
        mode = "fp32";
        if (cudnn)
            printf("cuDNN path: %ld convolution calls fell back to im2col + cuBLAS "
                   "(0 means every cuDNN case above ran on cuDNN)\n",
                   reed_cuda_conv_fallbacks());
        else
            printf("cuDNN path: not available (a build without cuDNN, or cuDNN did not "
                   "start); convolutions ran as im2col + cuBLAS\n");
    }
    /* With REED_CUDA_PROFILE=1 or 2 every op above ran through the
     * profiler's wrappers: the same checks then cover them too. */
    if (on_gpu && reed_cuda_profile_report(stdout) == 0)
        printf("(REED_CUDA_PROFILE: the ops above ran through the profiler)\n");
    summary();
    return failures ? 1 : 0;
}
