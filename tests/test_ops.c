/* Tests for the CPU backend op table (kernels/ops.h).
 *
 * For every op:
 *  - forward: the float op against a double-precision reference written
 *    here, on seeded random non-zero inputs, with output buffers poisoned
 *    with NaN first so an unwritten element fails. Metric:
 *        err = max|got - ref| / max(1, max|ref|)
 *    failing above 1e-5 (1e-6 for the pointwise gelu and silu; 1e-4 for
 *    attention with logits of several hundred, see FWD_TOL_BIG_LOGITS).
 *  - backward: the op's float gradients against central finite differences
 *    (step 1e-3, in double) of L = Σ out·R, R a fixed random tensor, using
 *    the double reference forward. Gradient buffers are pre-filled with 0.5
 *    to check the += contract, and each gradient output is also checked
 *    alone with the others NULL. Metric:
 *        err = max|(got - 0.5) - fd| / max|fd|       (fail above 1e-3)
 *    adaLN slices live in wider (B, ldm) matrices, so the check also proves
 *    nothing outside the slice is written.
 *  - The fused ops also against the ops they fuse: ln_modulate against
 *    layernorm then modulate, linear_gelu against linear and gelu (forward
 *    and backward, to float rounding: tolerance 1e-6), AdamW with EMA
 *    against AdamW then the EMA loop (bitwise).
 *  - linear_gelu_backward writes dpre rather than adding to it (ops.h): its
 *    check poisons dpre first and adds the prefill after.
 *  - AdamW (with EMA) over 3 steps against double references of PyTorch's
 *    formulas.
 * The suite runs with 2 and 1 threads, at small odd sizes (every gradient
 * element checked) and at sizes that take the OpenMP path (a random sample
 * of gradient elements checked). One line per op with the worst error over
 * all runs; exit status 1 on any failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "ops.h"

#define FWD_TOL 1e-5
#define FWD_TOL_POINTWISE 1e-6 /* gelu, silu: no reductions, ~1 ulp */
/* Attention with logits of several hundred: a float logit carries an
 * absolute error ~ ε·Σ|q_e·k_e|/sqrt(hs), which the softmax turns into a
 * relative error of the same size, so the bound is looser. */
#define FWD_TOL_BIG_LOGITS 1e-4
#define BIG_LOGITS_OP "attention(logits>88)"
/* A fused op against the ops it fuses: the same float expressions, so only
 * the order of a reduction may differ. */
#define FWD_TOL_UNFUSED 1e-6
#define UNFUSED_OP "ln_modulate=unfused"
#define GRAD_TOL 1e-3
#define FD_STEP 1e-3
#define PREFILL 0.5f
#define FD_ALL 4096  /* check every element of inputs up to this size */
#define FD_SAMPLE 48 /* otherwise this many random elements (+ first, last) */
#define MAX_IN 4

static const reed_ops *ops = &reed_ops_cpu;

/* ------------------------------------------------------------------------
 * RNG, buffers, results
 * ---------------------------------------------------------------------- */

#define TEST_RNG_SEED 0x5eed1234abcdULL
#include "test_rng.h"

/* Zeroed, so no path reads uninitialised memory (tests poison explicitly). */
static void *xmalloc(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static float *fbuf(size_t n) { return xmalloc(n * sizeof(float)); }
static double *dbuf(size_t n) { return xmalloc(n * sizeof(double)); }

static float *frand(size_t n, float lo, float hi)
{
    float *p = fbuf(n);
    for (size_t i = 0; i < n; i++)
        p[i] = rng_float(lo, hi);
    return p;
}

static void ffill(float *p, size_t n, float v)
{
    for (size_t i = 0; i < n; i++)
        p[i] = v;
}

static float *fnan(size_t n)
{
    float *p = fbuf(n);
    ffill(p, n, NAN);
    return p;
}

static float *fcopy(const float *src, size_t n)
{
    float *p = fbuf(n);
    memcpy(p, src, n * sizeof(float));
    return p;
}

static double *to_double(const float *src, size_t n)
{
    double *p = dbuf(n);
    for (size_t i = 0; i < n; i++)
        p[i] = src[i];
    return p;
}

/* max|got - ref| / max(1, max|ref|); NaN anywhere gives +inf. */
static double fwd_err(const float *got, const double *ref, size_t n)
{
    double diff = 0.0, mag = 1.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (isnan(d))
            return INFINITY;
        diff = d > diff ? d : diff;
        mag = fabs(ref[i]) > mag ? fabs(ref[i]) : mag;
    }
    return diff / mag;
}

typedef struct result {
    const char *op;
    double fwd, grad;
    int nfwd, ngrad, failed;
} result;

static result results[64];
static int nresults;
static const char *config_name = "";

static result *result_for(const char *op)
{
    for (int i = 0; i < nresults; i++)
        if (strcmp(results[i].op, op) == 0)
            return &results[i];
    results[nresults] = (result){.op = op};
    return &results[nresults++];
}

static double fwd_tol(const char *op)
{
    if (strcmp(op, BIG_LOGITS_OP) == 0)
        return FWD_TOL_BIG_LOGITS;
    const size_t len = strlen(op), suffix = strlen("=unfused");
    if (len > suffix && strcmp(op + len - suffix, "=unfused") == 0)
        return FWD_TOL_UNFUSED;
    int pointwise = strcmp(op, "gelu") == 0 || strcmp(op, "silu") == 0;
    return pointwise ? FWD_TOL_POINTWISE : FWD_TOL;
}

/* Record one error; what names the array checked ("out", "dw", ...). */
static void record(const char *op, const char *what, int is_grad, double err)
{
    result *r = result_for(op);
    double tol = is_grad ? GRAD_TOL : fwd_tol(op);
    int bad = !(err <= tol);
    // Keep the worst error; NaN counts as worst.
    double *worst = is_grad ? &r->grad : &r->fwd;
    int *count = is_grad ? &r->ngrad : &r->nfwd;
    if ((*count)++ == 0 || isnan(err) || err > *worst)
        *worst = err;
    if (bad) {
        r->failed = 1;
        printf("FAIL %-20s %-8s err %.3e (tol %.0e) [%s]\n", op, what, err,
               tol, config_name);
    }
}

static void check_fwd_arr(const char *op, const char *what, const float *got,
                          const double *ref, size_t n)
{
    record(op, what, 0, fwd_err(got, ref, n));
}

/* ------------------------------------------------------------------------
 * Finite-difference harness: a problem holds double inputs, a double
 * reference forward, and the loss weights R.
 * ---------------------------------------------------------------------- */

typedef struct dims {
    int N, C, OC, B, T, NH, ldm;
    int off_a, off_b; /* slice offsets inside (B, ldm) matrices */
    float eps;
} dims;

typedef struct problem problem;
typedef void (*ref_fn)(const problem *p, double *out);
typedef void (*bwd_fn)(problem *p, float *const *grads);

struct problem {
    dims d;
    ref_fn ref;
    int nin;
    size_t in_n[MAX_IN];
    float *fin[MAX_IN];  /* what the float op sees */
    double *din[MAX_IN]; /* double copies, perturbed by FD */
    size_t out_n;
    float *Rf;     /* (out_n) loss weights = dout for the backward op */
    double *R;     /* (out_n) */
    double *ref_out; /* (out_n) scratch for the reference forward */
    float *aux[3]; /* forward state saved for backward (mean, rstd, ...) */
};

static problem problem_new(dims d, ref_fn ref)
{
    problem p;
    memset(&p, 0, sizeof p);
    p.d = d;
    p.ref = ref;
    return p;
}

static int add_input(problem *p, size_t n, float lo, float hi)
{
    int k = p->nin++;
    p->in_n[k] = n;
    p->fin[k] = frand(n, lo, hi);
    p->din[k] = to_double(p->fin[k], n);
    return k;
}

static void set_output(problem *p, size_t n)
{
    p->out_n = n;
    p->Rf = frand(n, -1.0f, 1.0f);
    p->R = to_double(p->Rf, n);
    p->ref_out = dbuf(n);
}

static void problem_free(problem *p)
{
    for (int k = 0; k < p->nin; k++) {
        free(p->fin[k]);
        free(p->din[k]);
    }
    for (int k = 0; k < 3; k++)
        free(p->aux[k]);
    free(p->Rf);
    free(p->R);
    free(p->ref_out);
}

/* Compare the float forward output with the reference forward. */
static void check_fwd(problem *p, const char *op, const float *got)
{
    p->ref(p, p->ref_out);
    check_fwd_arr(op, "out", got, p->ref_out, p->out_n);
}

static double loss(const problem *p)
{
    p->ref(p, p->ref_out);
    double L = 0.0;
    for (size_t i = 0; i < p->out_n; i++)
        L += p->ref_out[i] * p->R[i];
    return L;
}

static double fd_at(problem *p, int k, size_t i)
{
    double x = p->din[k][i];
    p->din[k][i] = x + FD_STEP;
    double lp = loss(p);
    p->din[k][i] = x - FD_STEP;
    double lm = loss(p);
    p->din[k][i] = x;
    return (lp - lm) / (2.0 * FD_STEP);
}

/* max|(grad - PREFILL) - fd| / max|fd| over all (small) or sampled (large)
 * elements of input k. */
static double fd_check(problem *p, int k, const float *grad)
{
    size_t n = p->in_n[k];
    size_t count = n <= FD_ALL ? n : FD_SAMPLE + 2;
    double diff = 0.0, mag = 1e-6;
    for (size_t s = 0; s < count; s++) {
        size_t i = s;
        if (n > FD_ALL)
            i = s == 0 ? 0 : s == 1 ? n - 1 : (size_t)(rng_next() % n);
        double fd = fd_at(p, k, i);
        double d = fabs(((double)grad[i] - PREFILL) - fd);
        if (isnan(d))
            return INFINITY;
        diff = d > diff ? d : diff;
        mag = fabs(fd) > mag ? fabs(fd) : mag;
    }
    return diff / mag;
}

/* Run the backward op with every gradient output at once, then each one
 * alone (others NULL); gradient g corresponds to input input_of[g]. */
static void check_grads(problem *p, const char *op, int ngrads,
                        const int *input_of, const char *const *names,
                        bwd_fn bwd)
{
    float *bufs[MAX_IN], *grads[MAX_IN];
    for (int g = 0; g < ngrads; g++)
        bufs[g] = fbuf(p->in_n[input_of[g]]);
    for (int only = -1; only < (ngrads > 1 ? ngrads : 0); only++) {
        for (int g = 0; g < ngrads; g++) {
            ffill(bufs[g], p->in_n[input_of[g]], PREFILL);
            grads[g] = only < 0 || only == g ? bufs[g] : NULL;
        }
        bwd(p, grads);
        for (int g = 0; g < ngrads; g++)
            if (grads[g])
                record(op, names[g], 1, fd_check(p, input_of[g], grads[g]));
    }
    for (int g = 0; g < ngrads; g++)
        free(bufs[g]);
}

/* ------------------------------------------------------------------------
 * linear: out(N,OC) = inp(N,C)·w(OC,C)ᵀ + bias(OC)
 * ---------------------------------------------------------------------- */

static void ref_linear(const problem *p, double *out)
{
    const dims *d = &p->d;
    const double *x = p->din[0], *w = p->din[1], *b = p->din[2];
    for (int n = 0; n < d->N; n++)
        for (int o = 0; o < d->OC; o++) {
            double s = b ? b[o] : 0.0;
            for (int i = 0; i < d->C; i++)
                s += x[(size_t)n * d->C + i] * w[(size_t)o * d->C + i];
            out[(size_t)n * d->OC + o] = s;
        }
}

static void bwd_linear(problem *p, float *const *g)
{
    ops->linear_backward(g[0], g[1], g[2], p->Rf, p->fin[0], p->fin[1],
                         p->d.N, p->d.C, p->d.OC);
}

static void test_linear(dims d, int with_bias)
{
    const char *op = with_bias ? "linear" : "linear(no bias)";
    problem p = problem_new(d, ref_linear);
    add_input(&p, (size_t)d.N * d.C, -1, 1);  // inp (N,C)
    add_input(&p, (size_t)d.OC * d.C, -1, 1); // w (OC,C)
    if (with_bias)
        add_input(&p, (size_t)d.OC, -1, 1);   // bias (OC)
    set_output(&p, (size_t)d.N * d.OC);
    float *out = fnan(p.out_n);
    ops->linear_forward(out, p.fin[0], p.fin[1], with_bias ? p.fin[2] : NULL,
                        d.N, d.C, d.OC);
    check_fwd(&p, op, out);
    if (with_bias)
        check_grads(&p, op, 3, (const int[]){0, 1, 2},
                    (const char *const[]){"dinp", "dw", "dbias"}, bwd_linear);
    free(out);
    problem_free(&p);
}

/* ------------------------------------------------------------------------
 * layernorm (no affine)
 * ---------------------------------------------------------------------- */

static void ref_layernorm_stats(const double *x, int C, double eps,
                                double *mean, double *rstd)
{
    double m = 0.0, v = 0.0;
    for (int i = 0; i < C; i++)
        m += x[i];
    m /= C;
    for (int i = 0; i < C; i++)
        v += (x[i] - m) * (x[i] - m);
    *mean = m;
    *rstd = 1.0 / sqrt(v / C + eps);
}

static void ref_layernorm(const problem *p, double *out)
{
    const dims *d = &p->d;
    for (int n = 0; n < d->N; n++) {
        const double *x = p->din[0] + (size_t)n * d->C;
        double m, s;
        ref_layernorm_stats(x, d->C, d->eps, &m, &s);
        for (int i = 0; i < d->C; i++)
            out[(size_t)n * d->C + i] = (x[i] - m) * s;
    }
}

static void bwd_layernorm(problem *p, float *const *g)
{
    ops->layernorm_backward(g[0], p->Rf, p->fin[0], p->aux[0], p->aux[1],
                            p->d.N, p->d.C);
}

static void test_layernorm(dims d)
{
    problem p = problem_new(d, ref_layernorm);
    add_input(&p, (size_t)d.N * d.C, -0.5f, 1.5f); // inp (N,C)
    set_output(&p, (size_t)d.N * d.C);
    float *out = fnan(p.out_n);
    p.aux[0] = fnan((size_t)d.N); // mean (N)
    p.aux[1] = fnan((size_t)d.N); // rstd (N)
    ops->layernorm_forward(out, p.aux[0], p.aux[1], p.fin[0], d.N, d.C, d.eps);
    check_fwd(&p, "layernorm", out);
    double *rm = dbuf((size_t)d.N), *rs = dbuf((size_t)d.N);
    for (int n = 0; n < d.N; n++)
        ref_layernorm_stats(p.din[0] + (size_t)n * d.C, d.C, d.eps, &rm[n],
                            &rs[n]);
    check_fwd_arr("layernorm", "mean", p.aux[0], rm, (size_t)d.N);
    check_fwd_arr("layernorm", "rstd", p.aux[1], rs, (size_t)d.N);
    check_grads(&p, "layernorm", 1, (const int[]){0},
                (const char *const[]){"dinp"}, bwd_layernorm);
    // A large common offset: a one-pass E[x²] - E[x]² variance fails here.
    for (size_t i = 0; i < p.in_n[0]; i++)
        p.din[0][i] = p.fin[0][i] += 20.0f;
    ffill(out, p.out_n, NAN);
    ops->layernorm_forward(out, p.aux[0], p.aux[1], p.fin[0], d.N, d.C, d.eps);
    check_fwd(&p, "layernorm", out);
    free(rm);
    free(rs);
    free(out);
    problem_free(&p);
}

/* ------------------------------------------------------------------------
 * modulate: out = x·(1 + scale[b]) + shift[b]; shift is the slice at off_a
 * of a (B, ldm) matrix, scale the slice at off_b of another.
 * ---------------------------------------------------------------------- */

static void ref_modulate(const problem *p, double *out)
{
    const dims *d = &p->d;
    for (int b = 0; b < d->B; b++)
        for (int t = 0; t < d->T; t++)
            for (int c = 0; c < d->C; c++) {
                size_t i = ((size_t)b * d->T + t) * d->C + c;
                double sh = p->din[1][(size_t)b * d->ldm + d->off_a + c];
                double sc = p->din[2][(size_t)b * d->ldm + d->off_b + c];
                out[i] = p->din[0][i] * (1.0 + sc) + sh;
            }
}

static void bwd_modulate(problem *p, float *const *g)
{
    const dims *d = &p->d;
    ops->modulate_backward(g[0], g[1] ? g[1] + d->off_a : NULL,
                           g[2] ? g[2] + d->off_b : NULL, p->Rf, p->fin[0],
                           p->fin[2] + d->off_b, d->ldm, d->B, d->T, d->C);
}

static void test_modulate(dims d)
{
    problem p = problem_new(d, ref_modulate);
    size_t n = (size_t)d.B * d.T * d.C;
    add_input(&p, n, -1, 1);                    // x (B,T,C)
    add_input(&p, (size_t)d.B * d.ldm, -1, 1); // shift matrix (B,ldm)
    add_input(&p, (size_t)d.B * d.ldm, -1, 1); // scale matrix (B,ldm)
    set_output(&p, n);
    float *out = fnan(n);
    const float *shift = p.fin[1] + d.off_a, *scale = p.fin[2] + d.off_b;
    ops->modulate_forward(out, p.fin[0], shift, scale, d.ldm, d.B, d.T, d.C);
    check_fwd(&p, "modulate", out);
    // In place: out aliases x.
    memcpy(out, p.fin[0], n * sizeof(float));
    ops->modulate_forward(out, out, shift, scale, d.ldm, d.B, d.T, d.C);
    check_fwd_arr("modulate", "inplace", out, p.ref_out, n);
    check_grads(&p, "modulate", 3, (const int[]){0, 1, 2},
                (const char *const[]){"dx", "dshift", "dscale"}, bwd_modulate);
    free(out);
    problem_free(&p);
}

/* ------------------------------------------------------------------------
 * ln_modulate: out = LN(x)·(1 + scale[b]) + shift[b], shift and scale the
 * slices at off_a and off_b of two (B, ldm) matrices, as in modulate.
 * ---------------------------------------------------------------------- */

static void ref_ln_modulate(const problem *p, double *out)
{
    const dims *d = &p->d;
    for (int n = 0; n < d->B * d->T; n++) {
        const double *x = p->din[0] + (size_t)n * d->C;
        const double *sh = p->din[1] + (size_t)(n / d->T) * d->ldm + d->off_a;
        const double *sc = p->din[2] + (size_t)(n / d->T) * d->ldm + d->off_b;
        double m, s;
        ref_layernorm_stats(x, d->C, d->eps, &m, &s);
        for (int c = 0; c < d->C; c++)
            out[(size_t)n * d->C + c] = (x[c] - m) * s * (1.0 + sc[c]) + sh[c];
    }
}

/* ln_modulate_backward from dout = R, gradients at the slices of g[1], g[2]. */
static void bwd_ln_modulate(problem *p, float *const *g)
{
    const dims *d = &p->d;
    ops->ln_modulate_backward(g[0], g[1] ? g[1] + d->off_a : NULL,
                              g[2] ? g[2] + d->off_b : NULL, p->Rf, p->fin[0],
                              p->aux[0], p->aux[1], p->fin[2] + d->off_b,
                              d->ldm, d->B, d->T, d->C);
}

/* The same backward as layernorm_backward ∘ modulate_backward, from
 * layernorm_forward's ln, mean and rstd, through a zeroed dln. */
static void bwd_unfused(problem *p, float *const *g, const float *ln,
                        const float *mean, const float *rstd)
{
    const dims *d = &p->d;
    size_t n = p->in_n[0];
    float *dln = fbuf(n);
    ops->modulate_backward(dln, g[1] + d->off_a, g[2] + d->off_b, p->Rf, ln,
                           p->fin[2] + d->off_b, d->ldm, d->B, d->T, d->C);
    ops->layernorm_backward(g[0], dln, p->fin[0], mean, rstd, d->B * d->T,
                            d->C);
    free(dln);
}

/* Fused against unfused, forward and backward, from gradient outputs that
 * start equal and non-zero. */
static void check_unfused(problem *p, const float *fused_out)
{
    const dims *d = &p->d;
    size_t n = p->in_n[0], nm = p->in_n[1];
    const float *shift = p->fin[1] + d->off_a, *scale = p->fin[2] + d->off_b;
    float *ln = fnan(n), *out = fnan(n);
    float *mean = fnan((size_t)d->B * d->T), *rstd = fnan((size_t)d->B * d->T);
    ops->layernorm_forward(ln, mean, rstd, p->fin[0], d->B * d->T, d->C, d->eps);
    ops->modulate_forward(out, ln, shift, scale, d->ldm, d->B, d->T, d->C);
    double *ref = to_double(out, n);
    check_fwd_arr(UNFUSED_OP, "out", fused_out, ref, n);
    float *fused[3] = {frand(n, -1, 1), frand(nm, -1, 1), frand(nm, -1, 1)};
    float *unfused[3] = {fcopy(fused[0], n), fcopy(fused[1], nm),
                         fcopy(fused[2], nm)};
    bwd_ln_modulate(p, fused);
    bwd_unfused(p, unfused, ln, mean, rstd);
    static const char *const names[] = {"dinp", "dshift", "dscale"};
    for (int k = 0; k < 3; k++) {
        size_t nk = k ? nm : n;
        double *r = to_double(unfused[k], nk);
        check_fwd_arr(UNFUSED_OP, names[k], fused[k], r, nk);
        free(r), free(fused[k]), free(unfused[k]);
    }
    free(ref), free(ln), free(out), free(mean), free(rstd);
}

static void test_ln_modulate(dims d)
{
    problem p = problem_new(d, ref_ln_modulate);
    size_t n = (size_t)d.B * d.T * d.C, N = (size_t)d.B * d.T;
    add_input(&p, n, -0.5f, 1.5f);              // inp (B,T,C)
    add_input(&p, (size_t)d.B * d.ldm, -1, 1); // shift matrix (B,ldm)
    add_input(&p, (size_t)d.B * d.ldm, -1, 1); // scale matrix (B,ldm)
    set_output(&p, n);
    float *out = fnan(n);
    p.aux[0] = fnan(N); // mean (B·T)
    p.aux[1] = fnan(N); // rstd (B·T)
    ops->ln_modulate_forward(out, p.aux[0], p.aux[1], p.fin[0],
                             p.fin[1] + d.off_a, p.fin[2] + d.off_b, d.ldm,
                             d.B, d.T, d.C, d.eps);
    check_fwd(&p, "ln_modulate", out);
    double *rm = dbuf(N), *rs = dbuf(N);
    for (size_t i = 0; i < N; i++)
        ref_layernorm_stats(p.din[0] + i * d.C, d.C, d.eps, &rm[i], &rs[i]);
    check_fwd_arr("ln_modulate", "mean", p.aux[0], rm, N);
    check_fwd_arr("ln_modulate", "rstd", p.aux[1], rs, N);
    check_grads(&p, "ln_modulate", 3, (const int[]){0, 1, 2},
                (const char *const[]){"dinp", "dshift", "dscale"},
                bwd_ln_modulate);
    check_unfused(&p, out);
    free(rm), free(rs), free(out);
    problem_free(&p);
}

/* ------------------------------------------------------------------------
 * gated_add: x += gate[b]·y, gate the slice at off_a of a (B, ldm) matrix.
 * As a function: out(x, y, gate) = x + gate·y, so dx = R (the residual
 * gradient) and the op must give dy and dgate.
 * ---------------------------------------------------------------------- */

static void ref_gated_add(const problem *p, double *out)
{
    const dims *d = &p->d;
    for (int b = 0; b < d->B; b++)
        for (int t = 0; t < d->T; t++)
            for (int c = 0; c < d->C; c++) {
                size_t i = ((size_t)b * d->T + t) * d->C + c;
                double g = p->din[2][(size_t)b * d->ldm + d->off_a + c];
                out[i] = p->din[0][i] + g * p->din[1][i];
            }
}

static void bwd_gated_add(problem *p, float *const *g)
{
    const dims *d = &p->d;
    ops->gated_add_backward(g[0], g[1] ? g[1] + d->off_a : NULL, p->Rf,
                            p->fin[1], p->fin[2] + d->off_a, d->ldm, d->B,
                            d->T, d->C);
}

static void test_gated_add(dims d)
{
    problem p = problem_new(d, ref_gated_add);
    size_t n = (size_t)d.B * d.T * d.C;
    add_input(&p, n, -1, 1);                    // x (B,T,C)
    add_input(&p, n, -1, 1);                    // y (B,T,C)
    add_input(&p, (size_t)d.B * d.ldm, -1, 1); // gate matrix (B,ldm)
    set_output(&p, n);
    float *x = fcopy(p.fin[0], n);
    ops->gated_add_forward(x, p.fin[1], p.fin[2] + d.off_a, d.ldm, d.B, d.T,
                           d.C);
    check_fwd(&p, "gated_add", x);
    float *rcopy = fcopy(p.Rf, n);
    check_grads(&p, "gated_add", 2, (const int[]){1, 2},
                (const char *const[]){"dy", "dgate"}, bwd_gated_add);
    // The residual gradient dx must be left unchanged.
    record("gated_add", "dx kept", 1,
           memcmp(rcopy, p.Rf, n * sizeof(float)) ? INFINITY : 0.0);
    free(rcopy);
    free(x);
    problem_free(&p);
}

/* ------------------------------------------------------------------------
 * gelu (tanh approximation) and silu, elementwise
 * ---------------------------------------------------------------------- */

static double gelu_d(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

static void ref_gelu(const problem *p, double *out)
{
    for (size_t i = 0; i < p->out_n; i++)
        out[i] = gelu_d(p->din[0][i]);
}

static void ref_silu(const problem *p, double *out)
{
    for (size_t i = 0; i < p->out_n; i++) {
        double x = p->din[0][i];
        out[i] = x / (1.0 + exp(-x));
    }
}

static void bwd_gelu(problem *p, float *const *g)
{
    ops->gelu_backward(g[0], p->Rf, p->fin[0], p->out_n);
}

static void bwd_silu(problem *p, float *const *g)
{
    ops->silu_backward(g[0], p->Rf, p->fin[0], p->out_n);
}

static void test_activation(size_t n, int is_gelu)
{
    const char *op = is_gelu ? "gelu" : "silu";
    problem p = problem_new((dims){0}, is_gelu ? ref_gelu : ref_silu);
    add_input(&p, n, -4, 4);
    set_output(&p, n);
    float *out = fnan(n);
    if (is_gelu)
        ops->gelu_forward(out, p.fin[0], n);
    else
        ops->silu_forward(out, p.fin[0], n);
    check_fwd(&p, op, out);
    if (!is_gelu) { // silu: out may alias inp
        memcpy(out, p.fin[0], n * sizeof(float));
        ops->silu_forward(out, out, n);
        check_fwd_arr(op, "inplace", out, p.ref_out, n);
    }
    check_grads(&p, op, 1, (const int[]){0}, (const char *const[]){"dinp"},
                is_gelu ? bwd_gelu : bwd_silu);
    free(out);
    problem_free(&p);
}

/* ------------------------------------------------------------------------
 * The MLP's pairs: linear_gelu_forward (pre = linear, out = gelu(pre)) and
 * linear_gelu_backward (the second layer's backward, act = gelu(pre),
 * through the GELU into dpre, which it writes rather than adds to)
 * ---------------------------------------------------------------------- */

/* The backward's function: out(N,OC) = gelu(pre(N,C))·w(OC,C)ᵀ + bias. */
static void ref_gelu_linear(const problem *p, double *out)
{
    const dims *d = &p->d;
    const double *pre = p->din[0], *w = p->din[1], *b = p->din[2];
    for (int n = 0; n < d->N; n++)
        for (int o = 0; o < d->OC; o++) {
            double s = b[o];
            for (int i = 0; i < d->C; i++)
                s += gelu_d(pre[(size_t)n * d->C + i]) * w[(size_t)o * d->C + i];
            out[(size_t)n * d->OC + o] = s;
        }
}

/* dpre is written, not added to (ops.h): poisoned before the op, and the
 * harness's prefill added after, which its += check takes off again. */
static void bwd_linear_gelu(problem *p, float *const *g)
{
    const dims *d = &p->d;
    const size_t n = p->in_n[0];
    float *act = fnan(n);
    ops->gelu_forward(act, p->fin[0], n);
    if (g[0])
        ffill(g[0], n, NAN);
    ops->linear_gelu_backward(g[0], g[1], g[2], p->Rf, act, p->fin[0], p->fin[1], d->N, d->C,
                              d->OC);
    for (size_t i = 0; g[0] && i < n; i++)
        g[0][i] += PREFILL;
    free(act);
}

/* The pairs against their parts (linear_forward, gelu_forward;
 * linear_backward and gelu_backward through zeroed buffers), to float
 * rounding (OpenBLAS may sum a beta = 0 product in another order). */
static void check_linear_gelu_parts(const dims *d, const float *x, const float *w,
                                    const float *b)
{
    const size_t n = (size_t)d->N * d->OC, nw = (size_t)d->OC * d->C;
    float *pre = fnan(n), *out = fnan(n), *pre2 = fnan(n), *out2 = fnan(n);
    ops->linear_gelu_forward(out, pre, x, w, b, d->N, d->C, d->OC);
    ops->linear_forward(pre2, x, w, b, d->N, d->C, d->OC);
    ops->gelu_forward(out2, pre2, n);
    // the second layer (N, OC) → (N, C): w as (C, OC) values
    float *dout = frand((size_t)d->N * d->C, -1, 1), *dpre = fnan(n), *dpre2 = fbuf(n);
    float *da = fbuf(n), *dw = frand(nw, -1, 1), *dw2 = fcopy(dw, nw);
    float *db = frand(d->C, -1, 1), *db2 = fcopy(db, d->C);
    ops->linear_gelu_backward(dpre, dw, db, dout, out, pre, w, d->N, d->OC, d->C);
    ops->linear_backward(da, dw2, db2, dout, out2, w, d->N, d->OC, d->C);
    ops->gelu_backward(dpre2, da, pre2, n);
    const struct { const char *what; const float *a, *b; size_t n; } pairs[] = {
        {"pre", pre, pre2, n}, {"out", out, out2, n}, {"dpre", dpre, dpre2, n},
        {"dw", dw, dw2, nw}, {"dbias", db, db2, (size_t)d->C}};
    for (size_t k = 0; k < sizeof pairs / sizeof *pairs; k++) {
        double *ref = to_double(pairs[k].b, pairs[k].n);
        check_fwd_arr("linear_gelu=unfused", pairs[k].what, pairs[k].a, ref, pairs[k].n);
        free(ref);
    }
    free(pre), free(out), free(pre2), free(out2), free(dout), free(dpre), free(dpre2);
    free(da), free(dw), free(dw2), free(db), free(db2);
}

static void test_linear_gelu(dims d)
{
    const char *op = "linear_gelu";
    // forward: pre against the linear's reference, out against its GELU
    problem f = problem_new(d, ref_linear);
    add_input(&f, (size_t)d.N * d.C, -1, 1);  // inp (N,C)
    add_input(&f, (size_t)d.OC * d.C, -1, 1); // w (OC,C)
    add_input(&f, (size_t)d.OC, -1, 1);       // bias (OC)
    set_output(&f, (size_t)d.N * d.OC);
    float *pre = fnan(f.out_n), *out = fnan(f.out_n);
    ops->linear_gelu_forward(out, pre, f.fin[0], f.fin[1], f.fin[2], d.N, d.C, d.OC);
    check_fwd_arr(op, "pre", pre, (f.ref(&f, f.ref_out), f.ref_out), f.out_n);
    for (size_t i = 0; i < f.out_n; i++)
        f.ref_out[i] = gelu_d(f.ref_out[i]);
    check_fwd_arr(op, "out", out, f.ref_out, f.out_n);
    check_linear_gelu_parts(&d, f.fin[0], f.fin[1], f.fin[2]);
    free(pre), free(out);
    problem_free(&f);

    // backward: dpre, dw and dbias against finite differences
    problem p = problem_new(d, ref_gelu_linear);
    add_input(&p, (size_t)d.N * d.C, -3, 3);  // pre (N,C)
    add_input(&p, (size_t)d.OC * d.C, -1, 1); // w (OC,C)
    add_input(&p, (size_t)d.OC, -1, 1);       // bias (OC)
    set_output(&p, (size_t)d.N * d.OC);
    check_grads(&p, op, 3, (const int[]){0, 1, 2}, (const char *const[]){"dpre", "dw", "dbias"},
                bwd_linear_gelu);
    problem_free(&p);
}

/* ------------------------------------------------------------------------
 * attention: qkv(B,T,3C) → out(B,T,C), att(B,NH,T,T)
 * ---------------------------------------------------------------------- */

/* Reference for one (b, h): P = softmax(q·kᵀ/sqrt(hs)), o = P·v. */
static void ref_attention_head(const double *qkv, double *out, double *att,
                               const dims *d, int b, int h)
{
    int C = d->C, C3 = 3 * C, T = d->T, hs = C / d->NH;
    const double *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;
    double *P = dbuf((size_t)T);
    for (int i = 0; i < T; i++) {
        double mx = -INFINITY, sum = 0.0;
        for (int j = 0; j < T; j++) {
            double s = 0.0;
            for (int e = 0; e < hs; e++)
                s += base[(size_t)i * C3 + e] * base[(size_t)j * C3 + C + e];
            P[j] = s / sqrt((double)hs);
            mx = P[j] > mx ? P[j] : mx;
        }
        for (int j = 0; j < T; j++)
            sum += (P[j] = exp(P[j] - mx));
        for (int j = 0; j < T; j++)
            P[j] /= sum;
        if (att)
            memcpy(att + (((size_t)b * d->NH + h) * T + i) * T, P,
                   (size_t)T * sizeof(double));
        for (int e = 0; e < hs; e++) {
            double o = 0.0;
            for (int j = 0; j < T; j++)
                o += P[j] * base[(size_t)j * C3 + 2 * C + e];
            out[((size_t)b * T + i) * C + (size_t)h * hs + e] = o;
        }
    }
    free(P);
}

/* max over (b, h, i, j) of |q_i·k_j| / sqrt(hs). */
static double max_abs_logit(const problem *p)
{
    const dims *d = &p->d;
    int C = d->C, C3 = 3 * C, hs = C / d->NH;
    double mx = 0.0;
    for (int b = 0; b < d->B; b++)
        for (int h = 0; h < d->NH; h++)
            for (int i = 0; i < d->T; i++)
                for (int j = 0; j < d->T; j++) {
                    const double *q = p->din[0] + ((size_t)b * d->T + i) * C3;
                    const double *k = p->din[0] + ((size_t)b * d->T + j) * C3;
                    double s = 0.0;
                    for (int e = h * hs; e < (h + 1) * hs; e++)
                        s += q[e] * k[C + e];
                    mx = fmax(mx, fabs(s) / sqrt((double)hs));
                }
    return mx;
}

static void ref_attention_full(const problem *p, double *out, double *att)
{
    for (int b = 0; b < p->d.B; b++)
        for (int h = 0; h < p->d.NH; h++)
            ref_attention_head(p->din[0], out, att, &p->d, b, h);
}

static void ref_attention(const problem *p, double *out)
{
    ref_attention_full(p, out, NULL);
}

static void bwd_attention(problem *p, float *const *g)
{
    const dims *d = &p->d;
    ops->attention_backward(g[0], p->aux[1], p->Rf, p->fin[0], p->aux[0],
                            d->B, d->T, d->C, d->NH);
}

static void test_attention(dims d)
{
    problem p = problem_new(d, ref_attention);
    size_t natt = (size_t)d.B * d.NH * d.T * d.T;
    add_input(&p, (size_t)d.B * d.T * 3 * d.C, -1.5f, 1.5f); // qkv (B,T,3C)
    set_output(&p, (size_t)d.B * d.T * d.C);
    float *out = fnan(p.out_n);
    p.aux[0] = fnan(natt); // att (B,NH,T,T)
    p.aux[1] = fnan(natt); // scratch
    ops->attention_forward(out, p.aux[0], p.fin[0], d.B, d.T, d.C, d.NH);
    check_fwd(&p, "attention", out);
    double *ratt = dbuf(natt);
    ref_attention_full(&p, p.ref_out, ratt);
    check_fwd_arr("attention", "att", p.aux[0], ratt, natt);
    check_grads(&p, "attention", 1, (const int[]){0},
                (const char *const[]){"dqkv"}, bwd_attention);
    // Large logits (max |q·k|/sqrt(hs) = 150 > 88) overflow expf unless the
    // softmax subtracts the row max. Logits scale with the square of qkv.
    float big = (float)sqrt(150.0 / max_abs_logit(&p));
    for (size_t i = 0; i < p.in_n[0]; i++)
        p.din[0][i] = p.fin[0][i] *= big;
    ffill(out, p.out_n, NAN);
    ops->attention_forward(out, p.aux[0], p.fin[0], d.B, d.T, d.C, d.NH);
    ref_attention_full(&p, p.ref_out, ratt);
    check_fwd_arr(BIG_LOGITS_OP, "out", out, p.ref_out, p.out_n);
    check_fwd_arr(BIG_LOGITS_OP, "att", p.aux[0], ratt, natt);
    free(ratt);
    free(out);
    problem_free(&p);
}

/* ------------------------------------------------------------------------
 * mean_tokens: out(B,C) = (1/T) Σ_t x(B,T,C)
 * ---------------------------------------------------------------------- */

static void ref_mean_tokens(const problem *p, double *out)
{
    const dims *d = &p->d;
    for (int b = 0; b < d->B; b++)
        for (int c = 0; c < d->C; c++) {
            double s = 0.0;
            for (int t = 0; t < d->T; t++)
                s += p->din[0][((size_t)b * d->T + t) * d->C + c];
            out[(size_t)b * d->C + c] = s / d->T;
        }
}

static void bwd_mean_tokens(problem *p, float *const *g)
{
    ops->mean_tokens_backward(g[0], p->Rf, p->d.B, p->d.T, p->d.C);
}

static void test_mean_tokens(dims d)
{
    problem p = problem_new(d, ref_mean_tokens);
    add_input(&p, (size_t)d.B * d.T * d.C, -1, 1); // x (B,T,C)
    set_output(&p, (size_t)d.B * d.C);
    float *out = fnan(p.out_n);
    ops->mean_tokens_forward(out, p.fin[0], d.B, d.T, d.C);
    check_fwd(&p, "mean_tokens", out);
    check_grads(&p, "mean_tokens", 1, (const int[]){0},
                (const char *const[]){"dx"}, bwd_mean_tokens);
    free(out);
    problem_free(&p);
}

/* ------------------------------------------------------------------------
 * resample_tokens: out[b](T,C) = R(T,Ts)·src[b](Ts,C), Ts = T/2 + 1
 * (forward only: the targets it resamples are constants)
 * ---------------------------------------------------------------------- */

static int source_tokens(const dims *d) { return d->T / 2 + 1; }

static void ref_resample_tokens(const problem *p, double *out)
{
    const dims *d = &p->d;
    const int Ts = source_tokens(d);
    for (int b = 0; b < d->B; b++)
        for (int t = 0; t < d->T; t++)
            for (int c = 0; c < d->C; c++) {
                double s = 0.0;
                for (int j = 0; j < Ts; j++)
                    s += p->din[0][(size_t)t * Ts + j] *
                         p->din[1][((size_t)b * Ts + j) * d->C + c];
                out[((size_t)b * d->T + t) * d->C + c] = s;
            }
}

static void test_resample_tokens(dims d)
{
    const int Ts = source_tokens(&d);
    problem p = problem_new(d, ref_resample_tokens);
    add_input(&p, (size_t)d.T * Ts, 0, 1);         // R (T,Ts)
    add_input(&p, (size_t)d.B * Ts * d.C, -1, 1); // src (B,Ts,C)
    set_output(&p, (size_t)d.B * d.T * d.C);
    float *out = fnan(p.out_n);
    ops->resample_tokens(out, p.fin[0], p.fin[1], d.B, d.T, Ts, d.C);
    check_fwd(&p, "resample_tokens", out);
    free(out);
    problem_free(&p);
}

/* ------------------------------------------------------------------------
 * cosine: sim(N) = <a/max(|a|,1e-12), b/max(|b|,1e-12)>, rows of length C
 * ---------------------------------------------------------------------- */

static void ref_cosine(const problem *p, double *out)
{
    int D = p->d.C;
    for (int n = 0; n < p->d.N; n++) {
        const double *a = p->din[0] + (size_t)n * D;
        const double *b = p->din[1] + (size_t)n * D;
        double aa = 0.0, bb = 0.0, ab = 0.0;
        for (int i = 0; i < D; i++) {
            aa += a[i] * a[i];
            bb += b[i] * b[i];
            ab += a[i] * b[i];
        }
        out[n] = ab / (fmax(sqrt(aa), 1e-12) * fmax(sqrt(bb), 1e-12));
    }
}

static void bwd_cosine(problem *p, float *const *g)
{
    ops->cosine_backward(g[0], p->Rf, p->fin[0], p->fin[1], p->d.N, p->d.C);
}

static void test_cosine(dims d)
{
    problem p = problem_new(d, ref_cosine);
    add_input(&p, (size_t)d.N * d.C, -1, 1); // a (N,D)
    add_input(&p, (size_t)d.N * d.C, -1, 1); // b (N,D)
    set_output(&p, (size_t)d.N);
    float *sim = fnan(p.out_n);
    ops->cosine_forward(sim, p.fin[0], p.fin[1], d.N, d.C);
    check_fwd(&p, "cosine", sim);
    check_grads(&p, "cosine", 1, (const int[]){0},
                (const char *const[]){"da"}, bwd_cosine);
    // A zero row: F.normalize gives 0, not NaN.
    for (int i = 0; i < d.C; i++)
        p.fin[0][i] = (float)(p.din[0][i] = 0.0);
    ffill(sim, p.out_n, NAN);
    ops->cosine_forward(sim, p.fin[0], p.fin[1], d.N, d.C);
    check_fwd(&p, "cosine", sim);
    free(sim);
    problem_free(&p);
}

/* ------------------------------------------------------------------------
 * Elementwise helpers (forward only)
 * ---------------------------------------------------------------------- */

static void test_elementwise(size_t n)
{
    float *a = frand(n, -2, 2), *b = frand(n, -2, 2), *out = fnan(n);
    double *ref = dbuf(n);
    const float s = 0.37f, t = -1.25f;

    ops->add(out, a, b, n);
    for (size_t i = 0; i < n; i++)
        ref[i] = (double)a[i] + b[i];
    check_fwd_arr("add", "out", out, ref, n);
    memcpy(out, a, n * sizeof(float)); // in place: out aliases a
    ops->add(out, out, b, n);
    check_fwd_arr("add", "inplace", out, ref, n);

    memcpy(out, a, n * sizeof(float));
    ops->accumulate(out, b, n);
    check_fwd_arr("accumulate", "acc", out, ref, n);

    memcpy(out, a, n * sizeof(float));
    ops->scale(out, s, n);
    for (size_t i = 0; i < n; i++)
        ref[i] = (double)a[i] * s;
    check_fwd_arr("scale", "x", out, ref, n);

    ffill(out, n, NAN);
    ops->axpby(out, s, a, t, b, n);
    for (size_t i = 0; i < n; i++)
        ref[i] = (double)s * a[i] + (double)t * b[i];
    check_fwd_arr("axpby", "out", out, ref, n);
    memcpy(out, a, n * sizeof(float)); // in place: out aliases x
    ops->axpby(out, s, out, t, b, n);
    check_fwd_arr("axpby", "inplace", out, ref, n);

    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (double)a[i] * a[i];
    double got = ops->sum_squares(a, n);
    record("sum_squares", "sum", 0, fabs(got - ss) / fmax(1.0, ss));

    free(a);
    free(b);
    free(out);
    free(ref);
}

/* ------------------------------------------------------------------------
 * AdamW (3 steps), with and without EMA, against double references
 * ---------------------------------------------------------------------- */

typedef struct adamw_hp {
    double lr, b1, b2, eps, wd, gs;
} adamw_hp;

/* PyTorch AdamW, one step at 1-based step t, in double. */
static void ref_adamw(double *p, const double *grad, double *m, double *v,
                      size_t n, adamw_hp h, int t)
{
    double bc1 = 1.0 - pow(h.b1, t), bc2 = 1.0 - pow(h.b2, t);
    for (size_t i = 0; i < n; i++) {
        double g = grad[i] * h.gs;
        p[i] -= h.lr * h.wd * p[i];
        m[i] = h.b1 * m[i] + (1.0 - h.b1) * g;
        v[i] = h.b2 * v[i] + (1.0 - h.b2) * g * g;
        p[i] -= h.lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + h.eps);
    }
}

/* Three AdamW steps; with_ema: with the EMA at decay[t-1], also checked
 * bitwise against AdamW without EMA followed by the EMA as its own loop. */
static void test_adamw(size_t n, int with_ema)
{
    const adamw_hp h = {1e-2, 0.9, 0.999, 1e-8, 0.1, 0.7};
    const float decay[3] = {0.1f, 0.9f, 0.9999f};
    const char *op = with_ema ? "adamw_update+ema" : "adamw_update";
    float *p = frand(n, -1, 1), *m = fbuf(n), *v = fbuf(n), *e = frand(n, -1, 1);
    float *p2 = fcopy(p, n), *m2 = fbuf(n), *v2 = fbuf(n), *e2 = fcopy(e, n);
    double *rp = to_double(p, n), *rm = dbuf(n), *rv = dbuf(n), *re = to_double(e, n);
    for (int t = 1; t <= 3; t++) {
        float *g = frand(n, -1, 1), d = decay[t - 1];
        double *rg = to_double(g, n);
        ops->adamw_update(p, g, m, v, n, (float)h.lr, (float)h.b1,
                          (float)h.b2, (float)h.eps, (float)h.wd, (float)h.gs,
                          t, with_ema ? e : NULL, d);
        ref_adamw(rp, rg, rm, rv, n, h, t);
        check_fwd_arr(op, "param", p, rp, n);
        check_fwd_arr(op, "m", m, rm, n);
        check_fwd_arr(op, "v", v, rv, n);
        // The unfused sequence: AdamW, then ema = d·ema + (1 - d)·param.
        ops->adamw_update(p2, g, m2, v2, n, (float)h.lr, (float)h.b1,
                          (float)h.b2, (float)h.eps, (float)h.wd, (float)h.gs,
                          t, NULL, 0.0f);
        const float w = 1.0f - d;
        for (size_t i = 0; with_ema && i < n; i++) {
            e2[i] = d * e2[i] + w * p2[i];
            re[i] = (double)d * re[i] + (1.0 - (double)d) * rp[i];
        }
        check_fwd_arr(op, "ema", e, re, n); // without EMA: left as it was
        // Fused against unfused (without EMA both runs are the same call).
        int same = !memcmp(p, p2, n * sizeof *p) && !memcmp(m, m2, n * sizeof *m) &&
                   !memcmp(v, v2, n * sizeof *v) && !memcmp(e, e2, n * sizeof *e);
        if (with_ema) record(op, "bitwise", 0, same ? 0.0 : INFINITY);
        free(g);
        free(rg);
    }
    free(p), free(m), free(v), free(e), free(p2), free(m2), free(v2), free(e2);
    free(rp), free(rm), free(rv), free(re);
}

/* ------------------------------------------------------------------------
 * Driver
 * ---------------------------------------------------------------------- */

static void run_suite(dims d)
{
    size_t n = (size_t)d.N * d.C + 3; // odd elementwise length
    test_linear(d, 1);
    test_linear(d, 0);
    test_linear_gelu(d);
    test_layernorm(d);
    test_modulate(d);
    test_ln_modulate(d);
    test_gated_add(d);
    test_activation(n, 1);
    test_activation(n, 0);
    test_attention(d);
    test_mean_tokens(d);
    test_resample_tokens(d);
    test_cosine(d);
    test_elementwise(n);
    test_adamw(n, 0);
    test_adamw(n, 1);
}

static dims make_dims(int N, int C, int OC, int B, int T, int NH)
{
    // adaLN matrices are (B, 6C) with slices at odd-looking offsets.
    return (dims){.N = N, .C = C, .OC = OC, .B = B, .T = T, .NH = NH,
                  .ldm = 6 * C, .off_a = C, .off_b = 4 * C, .eps = 1e-6f};
}

static int check_threads(void)
{
    reed_cpu_set_threads(0);
    int all = reed_cpu_threads();
    printf("threads: reed_cpu_set_threads(0) -> %d (procs %d)\n", all,
           omp_get_num_procs());
    return all == omp_get_num_procs();
}

int main(void)
{
    static const struct { const char *name; int N, C, OC, B, T, NH; } cfgs[] = {
        {"small NH=2", 7, 12, 10, 3, 5, 2},
        {"small NH=3", 7, 12, 10, 3, 5, 3},
        {"large", 300, 96, 80, 4, 49, 3},
    };
    static const int threads[] = {2, 1};
    int failed = !check_threads();

    for (size_t ti = 0; ti < sizeof threads / sizeof *threads; ti++) {
        reed_cpu_set_threads(threads[ti]);
        if (reed_cpu_threads() != threads[ti]) {
            printf("FAIL reed_cpu_threads() = %d, want %d\n",
                   reed_cpu_threads(), threads[ti]);
            failed = 1;
        }
        for (size_t ci = 0; ci < sizeof cfgs / sizeof *cfgs; ci++) {
            static char name[64];
            snprintf(name, sizeof name, "%s, %d threads", cfgs[ci].name,
                     threads[ti]);
            config_name = name;
            run_suite(make_dims(cfgs[ci].N, cfgs[ci].C, cfgs[ci].OC,
                                cfgs[ci].B, cfgs[ci].T, cfgs[ci].NH));
        }
    }

    printf("fwd err = max|d|/max(1,|ref|), tol %.0e (gelu/silu %.0e, %s "
           "%.0e); grad err vs FD = max|d|/max|fd|, tol %.0e\n", FWD_TOL,
           FWD_TOL_POINTWISE, BIG_LOGITS_OP, FWD_TOL_BIG_LOGITS, GRAD_TOL);
    printf("%-22s %12s %12s\n", "op", "fwd err", "grad err");
    for (int i = 0; i < nresults; i++) {
        const result *r = &results[i];
        char g[32] = "-";
        if (r->ngrad)
            snprintf(g, sizeof g, "%.3e", r->grad);
        printf("%-22s %12.3e %12s   %s\n", r->op, r->fwd, g,
               r->failed ? "FAIL" : "ok");
        failed |= r->failed;
    }
    printf("%s\n", failed ? "test_ops: FAILED" : "test_ops: all passed");
    return failed ? 1 : 0;
}
