/* Tests for the convolutional-network ops of the CPU backend (ops.h):
 * conv2d, relu, global average pooling, cross-entropy.
 *
 *  - forward: the float op against a double-precision reference written
 *    here, outputs (and the conv scratch) poisoned with NaN first so an
 *    unwritten element fails. err = max|got − ref| / max(1, max|ref|),
 *    failing above 1e-5.
 *  - backward: the op's float gradients against central finite differences
 *    (step 1e-3, in double) of L = Σ out·R (R a fixed random tensor) through
 *    the double reference; gradient buffers pre-filled with 0.5 to check the
 *    += contract. err = max|(got − 0.5) − fd| / max|fd|, failing above 1e-3.
 *    conv2d also runs with each gradient alone (the others NULL) and must
 *    give the same result.
 *  - cross-entropy: loss and correct count against the reference, dlogits
 *    (overwritten: poisoned first) against finite differences of scale·loss.
 * Sizes: odd (B=2, C=3, 7×7, OC=4, K=3, stride 1 and 2, pad 0 and 1, plus
 * K=1, K=5 and a non-square input) with every gradient element checked, and
 * one size that takes the OpenMP path with a sample of elements checked;
 * everything runs with 2 threads and with 1. Prints the worst error per op;
 * exits 1 on any failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "ops.h"
#include "check.h"

#define FWD_TOL 1e-5
#define GRAD_TOL 1e-3
#define FD_STEP 1e-3
#define PREFILL 0.5f
#define FD_ALL 2048  /* check every element of tensors up to this size */
#define FD_SAMPLE 64 /* otherwise this many random elements (+ first, last) */

static const reed_ops *ops = &reed_ops_cpu;

/* --- RNG, buffers, worst errors -------------------------------------------- */

static uint64_t rng_state = 0xc0ffee1234ULL;

static uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL); // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi) with |x| ≥ 0.01 (keeps ReLU's kink out of FD's way). */
static float rng_float(float lo, float hi) {
    for (;;) {
        float u = (float)(rng_next() >> 40) * (1.0f / 16777216.0f);
        float x = lo + (hi - lo) * u;
        if (fabsf(x) >= 0.01f) return x;
    }
}

static float *frand(size_t n, float lo, float hi) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = rng_float(lo, hi);
    return p;
}

static float *ffill(size_t n, float v) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

static double *todouble(const float *x, size_t n) {
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

enum { OP_CONV_F, OP_CONV_B, OP_RELU_F, OP_RELU_B, OP_POOL_F, OP_POOL_B,
       OP_CE_F, OP_CE_B, OP_COUNT };
static const char *op_names[OP_COUNT] = {
    "conv2d_forward", "conv2d_backward", "relu_forward", "relu_backward",
    "avgpool_global_forward", "avgpool_global_backward",
    "cross_entropy (loss)", "cross_entropy (dlogits)"};
static double worst[OP_COUNT];
static int op_failed[OP_COUNT];

static void record(int op, double err, double tol, const char *what) {
    if (!(err <= tol)) { // NaN fails too
        if (!op_failed[op])
            printf("FAIL %s: %s err %.3g > %.1g\n", op_names[op], what, err, tol);
        op_failed[op] = 1;
    }
    if (!(err <= worst[op]) || isnan(err)) worst[op] = err;
}

/* max|got − ref| / max(1, max|ref|) */
static double fwd_err(const float *got, const double *ref, size_t n) {
    double e = 0.0, m = 1.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= e)) e = d; // NaN propagates
        if (fabs(ref[i]) > m) m = fabs(ref[i]);
    }
    return e / m;
}

/* --- double references ------------------------------------------------------- */

typedef struct conv_case { int B, C, H, W, OC, K, stride, pad; } conv_case;

static void conv_ref(double *out, const double *x, const double *w,
                     const double *bias, const conv_case *c) {
    int Ho = reed_conv2d_out_size(c->H, c->K, c->stride, c->pad);
    int Wo = reed_conv2d_out_size(c->W, c->K, c->stride, c->pad);
    for (int b = 0; b < c->B; b++)
        for (int o = 0; o < c->OC; o++)
            for (int y = 0; y < Ho; y++)
                for (int xo = 0; xo < Wo; xo++) {
                    double s = bias ? bias[o] : 0.0;
                    for (int ci = 0; ci < c->C; ci++)
                        for (int i = 0; i < c->K; i++)
                            for (int j = 0; j < c->K; j++) {
                                int iy = y * c->stride - c->pad + i;
                                int ix = xo * c->stride - c->pad + j;
                                if (iy < 0 || iy >= c->H || ix < 0 || ix >= c->W) continue;
                                s += w[((o * c->C + ci) * c->K + i) * c->K + j] *
                                     x[((size_t)(b * c->C + ci) * c->H + iy) * c->W + ix];
                            }
                    out[((size_t)(b * c->OC + o) * Ho + y) * Wo + xo] = s;
                }
}

/* Σ out·R of the reference convolution. */
static double conv_loss(const double *x, const double *w, const double *bias,
                        const double *R, const conv_case *c, size_t nout) {
    double *out = malloc(sizeof(double) * nout);
    conv_ref(out, x, w, bias, c);
    double L = 0.0;
    for (size_t i = 0; i < nout; i++) L += out[i] * R[i];
    free(out);
    return L;
}

/* The elements to check in a tensor of n: all, or a sample. */
static size_t fd_pick(size_t n, size_t k) {
    if (n <= FD_ALL) return k;
    if (k == 0) return 0;
    if (k == 1) return n - 1;
    return (size_t)(rng_next() % n);
}

static size_t fd_count(size_t n) { return n <= FD_ALL ? n : FD_SAMPLE + 2; }

/* Central FD of conv_loss with respect to one tensor (`which` 0: x, 1: w,
 * 2: bias) against the float gradient g (pre-filled with PREFILL). */
static double conv_fd_err(const conv_case *c, double *x, double *w, double *bias,
                          const double *R, size_t nout, int which,
                          const float *g, size_t n) {
    double *t = which == 0 ? x : which == 1 ? w : bias;
    double e = 0.0, m = 0.0;
    for (size_t k = 0; k < fd_count(n); k++) {
        size_t i = fd_pick(n, k);
        double keep = t[i];
        t[i] = keep + FD_STEP;
        double lp = conv_loss(x, w, bias, R, c, nout);
        t[i] = keep - FD_STEP;
        double lm = conv_loss(x, w, bias, R, c, nout);
        t[i] = keep;
        double fd = (lp - lm) / (2 * FD_STEP);
        double d = fabs(((double)g[i] - PREFILL) - fd);
        if (!(d <= e)) e = d;
        if (fabs(fd) > m) m = fabs(fd);
    }
    return e / (m > 0 ? m : 1.0);
}

/* --- conv2d -------------------------------------------------------------------- */

static void test_conv(const conv_case *c) {
    char what[128];
    snprintf(what, sizeof what, "B%d C%d %dx%d OC%d K%d s%d p%d, %d threads", c->B,
             c->C, c->H, c->W, c->OC, c->K, c->stride, c->pad, omp_get_max_threads());
    int Ho = reed_conv2d_out_size(c->H, c->K, c->stride, c->pad);
    int Wo = reed_conv2d_out_size(c->W, c->K, c->stride, c->pad);
    size_t nx = (size_t)c->B * c->C * c->H * c->W;
    size_t nw = (size_t)c->OC * c->C * c->K * c->K;
    size_t nout = (size_t)c->B * c->OC * Ho * Wo;
    size_t nscr = reed_conv2d_scratch_floats(c->B, c->C, c->H, c->W, c->OC, c->K,
                                             c->stride, c->pad);
    float *x = frand(nx, -1, 1), *w = frand(nw, -1, 1), *bias = frand(c->OC, -1, 1);
    float *R = frand(nout, -1, 1);
    float *out = ffill(nout, NAN), *scr = ffill(nscr, NAN);
    double *xd = todouble(x, nx), *wd = todouble(w, nw), *bd = todouble(bias, c->OC);
    double *Rd = todouble(R, nout), *ref = malloc(sizeof(double) * nout);

    // forward, with and without bias
    for (int with_bias = 1; with_bias >= 0; with_bias--) {
        for (size_t i = 0; i < nout; i++) out[i] = NAN;
        for (size_t i = 0; i < nscr; i++) scr[i] = NAN;
        ops->conv2d_forward(out, x, w, with_bias ? bias : NULL, c->B, c->C, c->H, c->W,
                            c->OC, c->K, c->stride, c->pad, scr);
        conv_ref(ref, xd, wd, with_bias ? bd : NULL, c);
        record(OP_CONV_F, fwd_err(out, ref, nout), FWD_TOL, what);
    }

    // backward: all gradients at once, pre-filled, scratch poisoned
    float *dx = ffill(nx, PREFILL), *dw = ffill(nw, PREFILL), *db = ffill(c->OC, PREFILL);
    for (size_t i = 0; i < nscr; i++) scr[i] = NAN;
    ops->conv2d_backward(dx, dw, db, R, x, w, c->B, c->C, c->H, c->W, c->OC, c->K,
                         c->stride, c->pad, scr);
    record(OP_CONV_B, conv_fd_err(c, xd, wd, bd, Rd, nout, 0, dx, nx), GRAD_TOL, what);
    record(OP_CONV_B, conv_fd_err(c, xd, wd, bd, Rd, nout, 1, dw, nw), GRAD_TOL, what);
    record(OP_CONV_B, conv_fd_err(c, xd, wd, bd, Rd, nout, 2, db, c->OC), GRAD_TOL, what);

    // each gradient alone (the others NULL) must match the joint call
    float *alone[3] = {ffill(nx, PREFILL), ffill(nw, PREFILL), ffill(c->OC, PREFILL)};
    const float *joint[3] = {dx, dw, db};
    size_t sizes[3] = {nx, nw, (size_t)c->OC};
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < nscr; i++) scr[i] = NAN;
        ops->conv2d_backward(k == 0 ? alone[0] : NULL, k == 1 ? alone[1] : NULL,
                             k == 2 ? alone[2] : NULL, R, x, w, c->B, c->C, c->H,
                             c->W, c->OC, c->K, c->stride, c->pad, scr);
        double e = 0.0;
        for (size_t i = 0; i < sizes[k]; i++) {
            double d = fabs((double)alone[k][i] - joint[k][i]);
            if (!(d <= e)) e = d;
        }
        record(OP_CONV_B, e, 1e-6, what);
        free(alone[k]);
    }
    free(x); free(w); free(bias); free(R); free(out); free(scr);
    free(xd); free(wd); free(bd); free(Rd); free(ref);
    free(dx); free(dw); free(db);
}

/* --- relu and pooling --------------------------------------------------------- */

static void test_relu(size_t n) {
    char what[64];
    snprintf(what, sizeof what, "n=%zu, %d threads", n, omp_get_max_threads());
    float *x = frand(n, -1, 1), *out = ffill(n, NAN), *R = frand(n, -1, 1);
    double *ref = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) ref[i] = x[i] > 0 ? x[i] : 0.0;
    ops->relu_forward(out, x, n);
    record(OP_RELU_F, fwd_err(out, ref, n), FWD_TOL, what);
    // in place
    float *y = malloc(sizeof(float) * n);
    memcpy(y, x, sizeof(float) * n);
    ops->relu_forward(y, y, n);
    record(OP_RELU_F, fwd_err(y, ref, n), FWD_TOL, "in place");
    // backward vs FD of Σ relu(x)·R (|x| ≥ 0.01 > FD_STEP: no kink crossed)
    float *dx = ffill(n, PREFILL);
    ops->relu_backward(dx, R, x, n);
    double e = 0.0, m = 0.0;
    for (size_t k = 0; k < fd_count(n); k++) {
        size_t i = fd_pick(n, k);
        double xp = (double)x[i] + FD_STEP, xm = (double)x[i] - FD_STEP;
        double fd = ((xp > 0 ? xp : 0) - (xm > 0 ? xm : 0)) * R[i] / (2 * FD_STEP);
        double d = fabs((dx[i] - PREFILL) - fd);
        if (!(d <= e)) e = d;
        if (fabs(fd) > m) m = fabs(fd);
    }
    record(OP_RELU_B, e / (m > 0 ? m : 1), GRAD_TOL, what);
    free(x); free(out); free(R); free(ref); free(y); free(dx);
}

static void test_pool(int B, int C, int H, int W) {
    char what[64];
    snprintf(what, sizeof what, "B%d C%d %dx%d, %d threads", B, C, H, W,
             omp_get_max_threads());
    size_t n = (size_t)B * C * H * W, HW = (size_t)H * W;
    float *x = frand(n, -1, 1), *out = ffill((size_t)B * C, NAN);
    float *R = frand((size_t)B * C, -1, 1);
    double *ref = malloc(sizeof(double) * B * C);
    for (int bc = 0; bc < B * C; bc++) {
        double s = 0;
        for (size_t i = 0; i < HW; i++) s += x[(size_t)bc * HW + i];
        ref[bc] = s / HW;
    }
    ops->avgpool_global_forward(out, x, B, C, H, W);
    record(OP_POOL_F, fwd_err(out, ref, (size_t)B * C), FWD_TOL, what);
    // L = Σ_bc R·mean is linear in x: the central FD is R[bc]/(H·W) exactly
    float *dx = ffill(n, PREFILL);
    ops->avgpool_global_backward(dx, R, B, C, H, W);
    double e = 0.0, m = 0.0;
    for (size_t k = 0; k < fd_count(n); k++) {
        size_t i = fd_pick(n, k);
        double fd = (double)R[i / HW] / (double)HW;
        double d = fabs((dx[i] - PREFILL) - fd);
        if (!(d <= e)) e = d;
        if (fabs(fd) > m) m = fabs(fd);
    }
    record(OP_POOL_B, e / (m > 0 ? m : 1), GRAD_TOL, what);
    free(x); free(out); free(R); free(ref); free(dx);
}

/* --- cross-entropy --------------------------------------------------------------- */

static double ce_ref(const double *z, const int *y, int B, int K, int *hits) {
    double L = 0.0;
    int h = 0;
    for (int b = 0; b < B; b++) {
        const double *r = z + (size_t)b * K;
        int arg = 0;
        for (int k = 1; k < K; k++) if (r[k] > r[arg]) arg = k;
        double s = 0.0;
        for (int k = 0; k < K; k++) s += exp(r[k] - r[arg]);
        L += r[arg] + log(s) - r[y[b]];
        h += arg == y[b];
    }
    if (hits) *hits = h;
    return L / B;
}

static void test_ce(int B, int K, float spread, float scale) {
    char what[96];
    snprintf(what, sizeof what, "B%d K%d logits ±%g scale %g, %d threads", B, K,
             (double)spread, (double)scale, omp_get_max_threads());
    size_t n = (size_t)B * K;
    float *z = frand(n, -spread, spread), *dz = ffill(n, NAN);
    int *y = malloc(sizeof(int) * B);
    for (int b = 0; b < B; b++) y[b] = (int)(rng_next() % (uint64_t)K);
    double *zd = todouble(z, n);
    int hits = -1, ref_hits = -2;
    double loss = ops->cross_entropy_forward_backward(dz, &hits, z, y, B, K, scale);
    double ref = ce_ref(zd, y, B, K, &ref_hits);
    record(OP_CE_F, fabs(loss - ref) / fmax(1.0, fabs(ref)), FWD_TOL, what);
    record(OP_CE_F, hits == ref_hits ? 0.0 : 1.0, 0.0, "correct count");
    double loss2 = ops->cross_entropy_forward_backward(NULL, NULL, z, y, B, K, scale);
    record(OP_CE_F, fabs(loss2 - loss), 0.0, "dlogits NULL, correct NULL");
    double e = 0.0, m = 0.0;
    for (size_t k = 0; k < fd_count(n); k++) {
        size_t i = fd_pick(n, k);
        double keep = zd[i];
        zd[i] = keep + FD_STEP;
        double lp = ce_ref(zd, y, B, K, NULL);
        zd[i] = keep - FD_STEP;
        double lm = ce_ref(zd, y, B, K, NULL);
        zd[i] = keep;
        double fd = scale * (lp - lm) / (2 * FD_STEP);
        double d = fabs((double)dz[i] - fd); // overwritten: no prefill
        if (!(d <= e)) e = d;
        if (fabs(fd) > m) m = fabs(fd);
    }
    record(OP_CE_B, e / (m > 0 ? m : 1), GRAD_TOL, what);
    free(z); free(dz); free(y); free(zd);
}

/* --- main ----------------------------------------------------------------------------- */

static void run_all(void) {
    static const conv_case cases[] = {
        {2, 3, 7, 7, 4, 3, 1, 0}, {2, 3, 7, 7, 4, 3, 1, 1},
        {2, 3, 7, 7, 4, 3, 2, 0}, {2, 3, 7, 7, 4, 3, 2, 1},
        {2, 3, 7, 6, 4, 3, 2, 1}, {1, 2, 5, 5, 3, 1, 1, 0},
        {2, 2, 9, 8, 3, 5, 2, 2}, {1, 1, 28, 28, 4, 3, 1, 1},
        {4, 8, 12, 12, 16, 3, 1, 1}, // OpenMP path, sampled FD
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_conv(&cases[i]);
    test_relu(37);
    test_relu(20000);
    test_pool(2, 3, 7, 7);
    test_pool(2, 3, 7, 6);
    test_pool(16, 64, 7, 7);
    test_ce(5, 10, 3.0f, 1.0f);
    test_ce(7, 3, 40.0f, 0.7f); // large logits: stable softmax
    test_ce(300, 10, 5.0f, 2.0f);
}

int main(void) {
    int threads[2] = {2, 1};
    for (int t = 0; t < 2; t++) {
        reed_cpu_set_threads(threads[t]);
        run_all();
    }
    for (int op = 0; op < OP_COUNT; op++)
        check(!op_failed[op], "%-26s worst err %.3g", op_names[op], worst[op]);
    printf("%d/%d ops ok\n", checks - failures, checks);
    return failures ? 1 : 0;
}
