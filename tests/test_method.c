/* Tests for the REED method's pure pieces (src/engine/method.h, DESIGN.md §2),
 * the counter-based RNG (rng.h) and the grid resampling of representation
 * targets (data.h: grid_resample_matrix).
 *
 *  1. curriculum_at: λ_diff, λ_align and the phase at every boundary, against
 *     the DESIGN.md formulas written here in double.
 *  2. time_weight: every weighting at t = 0, 0.25, 0.5, 1.
 *  3. path_at / time_sample: end points, velocity coefficients against a
 *     central finite difference, lognormal time sampling.
 *  4. sampler_run: Euler/SDE on a point mass (exact), Euler O(1/N) and Heun
 *     O(1/N²) on dx/dt = x·cos t, Euler/Heun/SDE variance on Gaussian data,
 *     SDE determinism.
 *  5. cfg_combine.
 *  6. RNG: moments, determinism, prefix independence, Philox4x32-10 KATs.
 *  7. grid_resample_matrix against double reimplementations of PyTorch's
 *     bilinear (align_corners=False) and area (adaptive_avg_pool2d) modes.
 *  8. align_loss with the CPU ops: loss against a double reference, dz
 *     against central finite differences.
 *
 * Prints one line per check with the numbers it compared; exits 1 if any
 * check failed. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "data.h"
#include "method.h"
#include "ops.h"
#include "rng.h"
#include "check.h"

static const double PI = 3.14159265358979323846;

/* ------------------------------------------------------------------------
 * Check bookkeeping
 * ---------------------------------------------------------------------- */



/* |got − want| ≤ tol, printed with both numbers. */
static void check_near(const char *what, double got, double want, double tol) {
    double d = fabs(got - want);
    check(d <= tol, "%s: got %.9g want %.9g |diff| %.2e (tol %.1e)", what, got, want, d, tol);
}

static void section(const char *name) { printf("-- %s\n", name); }

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* A small deterministic generator for test inputs (splitmix64), independent
 * of the RNG under test. Uniform in [lo, hi). */
static uint64_t test_state = 0x2545f4914f6cdd1dULL;
static double test_uniform(double lo, double hi) {
    uint64_t z = (test_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return lo + (hi - lo) * (double)(z >> 11) / 9007199254740992.0;
}

/* ------------------------------------------------------------------------
 * 1. Curriculum
 * ---------------------------------------------------------------------- */

/* DESIGN.md §2, in double: λ_diff = 0 for s < s0, (s−s0)/W over the ramp,
 * then 1, or 1 − (s−s0−W)/(S−s0−W), or (1 + cos(π·(s−s0−W)/(S−s0−W)))/2. */
static double ref_diff_weight(int s0, int W, reed_decay decay, int S, int s) {
    if (s < s0) return 0.0;
    if (s < s0 + W) return (double)(s - s0) / W;
    double frac = (double)(s - s0 - W) / (double)(S - s0 - W);
    switch (decay) {
    case REED_DECAY_LINEAR: return 1.0 - frac;
    case REED_DECAY_COSINE: return (1.0 + cos(PI * frac)) / 2.0;
    case REED_DECAY_CONSTANT: break;
    }
    return 1.0;
}

/* λ_align: 1, max(0, 1 − s/R), (1 + cos(π·min(s/R, 1)))/2. */
static double ref_align_weight(reed_decay decay, int R, int s) {
    double frac = (double)s / R;
    switch (decay) {
    case REED_DECAY_LINEAR: return fmax(0.0, 1.0 - frac);
    case REED_DECAY_COSINE: return (1.0 + cos(PI * fmin(frac, 1.0))) / 2.0;
    case REED_DECAY_CONSTANT: break;
    }
    return 1.0;
}

static reed_curriculum_config curriculum(int s0, int W, reed_decay diff_decay,
                                         reed_decay align_decay, int R) {
    reed_curriculum_config c;
    memset(&c, 0, sizeof c);
    c.proj_coeff = 0.5f;
    c.diffusion_start = s0;
    c.diffusion_warmup = W;
    c.diffusion_decay = diff_decay;
    c.align_decay = align_decay;
    c.align_steps = R;
    return c;
}

/* λ_diff at step s against the reference; `want_literal` is the value the
 * formula gives at that boundary written out by hand (NAN: none). */
static void check_diff_at(const char *label, const reed_curriculum_config *c, int S,
                          int s, double want_literal) {
    reed_weights w = curriculum_at(c, s, S, 1);
    double want = ref_diff_weight(c->diffusion_start, c->diffusion_warmup,
                                  c->diffusion_decay, S, s);
    char what[160];
    snprintf(what, sizeof what, "lambda_diff %s (s0=%d W=%d S=%d decay=%s) at s=%d", label,
             c->diffusion_start, c->diffusion_warmup, S, reed_decay_names[c->diffusion_decay], s);
    check_near(what, w.w_diff, want, 1e-6);
    if (!isnan(want_literal))
        check(fabs(want - want_literal) < 1e-12, "  formula at s=%d gives %.12g, by hand %.12g",
              s, want, want_literal);
}

static void check_align_at(const reed_curriculum_config *c, int S, int s) {
    reed_weights w = curriculum_at(c, s, S, 1);
    double want = ref_align_weight(c->align_decay, c->align_steps, s);
    char what[128];
    snprintf(what, sizeof what, "lambda_align %s (R=%d) at s=%d",
             reed_decay_names[c->align_decay], c->align_steps, s);
    check_near(what, w.w_align, want, 1e-6);
}

static void check_phase_at(const reed_curriculum_config *c, int S, int s, int has_align,
                           reed_phase want) {
    reed_weights w = curriculum_at(c, s, S, has_align);
    check(w.phase == want, "phase at s=%d (s0=%d W=%d R=%d has_align=%d): got %d (%s) want %d (%s)",
          s, c->diffusion_start, c->diffusion_warmup, c->align_steps, has_align, (int)w.phase,
          (unsigned)w.phase < REED_PHASE_COUNT ? reed_phase_names[w.phase] : "?", (int)want,
          reed_phase_names[want]);
}

static void test_curriculum(void) {
    section("curriculum: lambda_diff");
    const int s0 = 100, W = 50, S = 1000; /* decay span S−s0−W = 850 */
    reed_curriculum_config c = curriculum(s0, W, REED_DECAY_CONSTANT, REED_DECAY_CONSTANT, 0);
    check_diff_at("before s0", &c, S, 0, 0.0);
    check_diff_at("before s0", &c, S, s0 - 1, 0.0);
    check_diff_at("ramp start", &c, S, s0, 0.0);
    check_diff_at("ramp middle", &c, S, s0 + W / 2, 0.5);
    check_diff_at("ramp end", &c, S, s0 + W - 1, (double)(W - 1) / W);
    check_diff_at("after ramp", &c, S, s0 + W, 1.0);
    check_diff_at("constant", &c, S, S - 1, 1.0);
    check_diff_at("constant", &c, S, S, 1.0);

    c.diffusion_decay = REED_DECAY_LINEAR;
    check_diff_at("linear decay start", &c, S, s0 + W, 1.0);
    check_diff_at("linear decay middle", &c, S, s0 + W + 425, 0.5);
    check_diff_at("linear decay S-1", &c, S, S - 1, 1.0 / 850.0);
    check_diff_at("linear decay S", &c, S, S, 0.0);
    check_diff_at("ramp unchanged by decay", &c, S, s0 + W / 2, 0.5);

    /* The REED code had an operator-precedence bug in this formula; at the
     * middle of the span it must be (1 + cos(π/2))/2 = 0.5. */
    c.diffusion_decay = REED_DECAY_COSINE;
    check_diff_at("cosine decay start", &c, S, s0 + W, 1.0);
    check_diff_at("cosine decay quarter", &c, S, s0 + W + 212, NAN);
    check_diff_at("cosine decay middle", &c, S, s0 + W + 425, 0.5);
    check_diff_at("cosine decay S-1", &c, S, S - 1, NAN);
    check_diff_at("cosine decay S", &c, S, S, 0.0);

    section("curriculum: lambda_diff edge cases");
    reed_curriculum_config e = curriculum(s0, 0, REED_DECAY_CONSTANT, REED_DECAY_CONSTANT, 0);
    check_diff_at("W=0 before s0", &e, S, s0 - 1, 0.0);
    check_diff_at("W=0 at s0", &e, S, s0, 1.0);
    e.diffusion_decay = REED_DECAY_LINEAR;
    check_diff_at("W=0 linear at s0", &e, S, s0, 1.0);
    check_diff_at("W=0 linear middle", &e, S, s0 + 450, 0.5);
    check_diff_at("W=0 linear S", &e, S, S, 0.0);
    e = curriculum(0, 0, REED_DECAY_CONSTANT, REED_DECAY_CONSTANT, 0);
    check_diff_at("s0=0 W=0 at 0", &e, S, 0, 1.0);
    e.diffusion_decay = REED_DECAY_COSINE;
    check_diff_at("s0=0 W=0 cosine at 0", &e, S, 0, 1.0);
    check_diff_at("s0=0 W=0 cosine middle", &e, S, 500, 0.5);
    e = curriculum(0, W, REED_DECAY_CONSTANT, REED_DECAY_CONSTANT, 0);
    check_diff_at("s0=0 ramp start", &e, S, 0, 0.0);
    check_diff_at("s0=0 ramp middle", &e, S, W / 2, 0.5);
    check_diff_at("s0=0 after ramp", &e, S, W, 1.0);

    section("curriculum: lambda_align");
    const int R = 200;
    reed_curriculum_config a = curriculum(0, 0, REED_DECAY_CONSTANT, REED_DECAY_CONSTANT, R);
    check_align_at(&a, S, 0);
    check_align_at(&a, S, R);
    check_align_at(&a, S, S);
    a.align_decay = REED_DECAY_LINEAR;
    check_align_at(&a, S, 0);
    check_align_at(&a, S, R / 2);
    check_align_at(&a, S, R);
    check_align_at(&a, S, R + 10);
    check_near("lambda_align linear at R/2, by hand", curriculum_at(&a, R / 2, S, 1).w_align, 0.5, 1e-7);
    check(curriculum_at(&a, R, S, 1).w_align == 0.0f, "lambda_align linear at R is exactly 0: got %.9g",
          curriculum_at(&a, R, S, 1).w_align);
    a.align_decay = REED_DECAY_COSINE;
    check_align_at(&a, S, 0);
    check_align_at(&a, S, R / 4);
    check_align_at(&a, S, R / 2);
    check_align_at(&a, S, R);
    check_align_at(&a, S, R + 10);
    check_near("lambda_align cosine at R/2, by hand", curriculum_at(&a, R / 2, S, 1).w_align, 0.5, 1e-7);
    check(curriculum_at(&a, R, S, 1).w_align == 0.0f, "lambda_align cosine at R is exactly 0: got %.9g",
          curriculum_at(&a, R, S, 1).w_align);
    check(curriculum_at(&a, 0, S, 0).w_align == 0.0f,
          "lambda_align is 0 without sources (has_align=0): got %.9g", curriculum_at(&a, 0, S, 0).w_align);

    section("curriculum: phases");
    check(REED_PHASE_REPRESENT == 0 && REED_PHASE_WARMUP == 1 && REED_PHASE_JOINT == 2 &&
              REED_PHASE_DIFFUSION == 3 && REED_PHASE_COUNT == 4,
          "phase indices: represent %d warmup %d joint %d diffusion %d count %d",
          REED_PHASE_REPRESENT, REED_PHASE_WARMUP, REED_PHASE_JOINT, REED_PHASE_DIFFUSION,
          REED_PHASE_COUNT);
    const char *want_names[] = {"represent", "warmup", "joint", "diffusion"};
    for (int i = 0; i < 4; i++)
        check(reed_phase_names[i] && strcmp(reed_phase_names[i], want_names[i]) == 0,
              "reed_phase_names[%d] = \"%s\", want \"%s\"", i,
              reed_phase_names[i] ? reed_phase_names[i] : "(null)", want_names[i]);
    check(reed_phase_names[4] == NULL, "reed_phase_names[4] is NULL");

    reed_curriculum_config p = curriculum(s0, W, REED_DECAY_CONSTANT, REED_DECAY_LINEAR, 400);
    check_phase_at(&p, S, 0, 1, REED_PHASE_REPRESENT);
    check_phase_at(&p, S, s0 - 1, 1, REED_PHASE_REPRESENT);
    check_phase_at(&p, S, s0, 1, REED_PHASE_WARMUP);
    check_phase_at(&p, S, s0 + W - 1, 1, REED_PHASE_WARMUP);
    check_phase_at(&p, S, s0 + W, 1, REED_PHASE_JOINT);
    check_phase_at(&p, S, 399, 1, REED_PHASE_JOINT);
    check_phase_at(&p, S, 400, 1, REED_PHASE_DIFFUSION); /* λ_align reached 0 */
    check_phase_at(&p, S, S - 1, 1, REED_PHASE_DIFFUSION);
    check_phase_at(&p, S, s0 + W, 0, REED_PHASE_DIFFUSION); /* no sources */
    check_phase_at(&p, S, S - 1, 0, REED_PHASE_DIFFUSION);
    p.align_decay = REED_DECAY_COSINE;
    check_phase_at(&p, S, 399, 1, REED_PHASE_JOINT);
    check_phase_at(&p, S, 400, 1, REED_PHASE_DIFFUSION);
    p.align_decay = REED_DECAY_CONSTANT;
    check_phase_at(&p, S, S - 1, 1, REED_PHASE_JOINT); /* constant λ_align never ends */
    reed_curriculum_config z = curriculum(0, 0, REED_DECAY_CONSTANT, REED_DECAY_CONSTANT, 0);
    check_phase_at(&z, S, 0, 1, REED_PHASE_JOINT); /* s0 = W = 0: joint from the start */
    check_phase_at(&z, S, 0, 0, REED_PHASE_DIFFUSION); /* plain SiT */
}

/* ------------------------------------------------------------------------
 * 2. Time weights
 * ---------------------------------------------------------------------- */

static double ref_time_weight(reed_weighting w, double lo, double hi, double t) {
    switch (w) {
    case REED_WEIGHT_LINEAR: return 1.0 - t;
    case REED_WEIGHT_COSINE: return (1.0 + cos(PI * t)) / 2.0;
    case REED_WEIGHT_SIGMOID: return 1.0 / (1.0 + exp(10.0 * (t - 0.5)));
    case REED_WEIGHT_CUTOFF: return (t >= lo && t <= hi) ? 1.0 : 0.0;
    case REED_WEIGHT_CONSTANT: break;
    }
    return 1.0;
}

static void test_time_weights(void) {
    section("time weights");
    const float ts[] = {0.0f, 0.25f, 0.5f, 1.0f};
    const float lo = 0.25f, hi = 0.5f;
    for (int w = REED_WEIGHT_CONSTANT; w <= REED_WEIGHT_CUTOFF; w++)
        for (int i = 0; i < 4; i++) {
            char what[96];
            snprintf(what, sizeof what, "time_weight %s [%g,%g] at t=%g", reed_weighting_names[w],
                     lo, hi, ts[i]);
            check_near(what, time_weight((reed_weighting)w, lo, hi, ts[i]),
                       ref_time_weight((reed_weighting)w, lo, hi, ts[i]), 1e-6);
        }
    /* A few values by hand. */
    check_near("sigmoid at 0.5 = 1/2", time_weight(REED_WEIGHT_SIGMOID, 0, 0, 0.5f), 0.5, 1e-7);
    check_near("sigmoid at 0 = 1/(1+e^-5)", time_weight(REED_WEIGHT_SIGMOID, 0, 0, 0.0f),
               0.9933071490757153, 1e-7);
    check_near("cosine at 0.5 = 1/2", time_weight(REED_WEIGHT_COSINE, 0, 0, 0.5f), 0.5, 1e-7);
    float below = nextafterf(lo, 0.0f), above = nextafterf(hi, 1.0f);
    check(time_weight(REED_WEIGHT_CUTOFF, lo, hi, below) == 0.0f &&
              time_weight(REED_WEIGHT_CUTOFF, lo, hi, above) == 0.0f,
          "cutoff [%g,%g] is 0 just outside: w(%.9g) = %g, w(%.9g) = %g", lo, hi, below,
          time_weight(REED_WEIGHT_CUTOFF, lo, hi, below), above,
          time_weight(REED_WEIGHT_CUTOFF, lo, hi, above));
}

/* ------------------------------------------------------------------------
 * 3. Interpolants and time sampling
 * ---------------------------------------------------------------------- */

static void test_paths(void) {
    section("interpolants");
    const float x[3] = {0.75f, -1.5f, 2.0f}, eps[3] = {-0.3f, 0.9f, 1.1f};
    for (int p = REED_PATH_LINEAR; p <= REED_PATH_COSINE; p++) {
        const char *name = reed_path_names[p];
        for (int end = 0; end <= 1; end++) {
            path_coeffs c = path_at((reed_path_kind)p, (float)end);
            double err = 0.0;
            for (int i = 0; i < 3; i++) {
                double xt = (double)c.a * x[i] + (double)c.s * eps[i];
                err = max_err(err, fabs(xt - (end ? eps[i] : x[i])));
            }
            check(err < 1e-6, "%s: x_t at t=%d is the %s: a=%.9g s=%.9g max|x_t - %s| %.2e", name,
                  end, end ? "noise" : "data", c.a, c.s, end ? "eps" : "x", err);
        }
        /* Coefficients against the formulas, velocity against a central
         * finite difference of path_at's own a(t), s(t). */
        const float tv[] = {0.1f, 0.25f, 0.5f, 0.75f, 0.9f};
        for (int k = 0; k < 5; k++) {
            double t = tv[k];
            double a_ref = p ? cos(PI * t / 2) : 1.0 - t, s_ref = p ? sin(PI * t / 2) : t;
            path_coeffs c = path_at((reed_path_kind)p, tv[k]);
            float tp = (float)(t + 1e-2), tm = (float)(t - 1e-2);
            path_coeffs cp = path_at((reed_path_kind)p, tp), cm = path_at((reed_path_kind)p, tm);
            double h2 = (double)tp - (double)tm;
            double fd_a = ((double)cp.a - cm.a) / h2, fd_s = ((double)cp.s - cm.s) / h2;
            double err = max_err(fabs(c.a - a_ref), fabs(c.s - s_ref));
            check(err < 1e-6, "%s: at t=%g a=%.9g (want %.9g) s=%.9g (want %.9g)", name, t, c.a,
                  a_ref, c.s, s_ref);
            double dv = max_err(fabs(c.da - fd_a), fabs(c.ds - fd_s));
            check(dv < 2e-4, "%s: at t=%g da=%.7g fd %.7g, ds=%.7g fd %.7g, max|diff| %.2e (tol 2e-4)",
                  name, t, c.da, fd_a, c.ds, fd_s, dv);
        }
    }

    section("time sampling");
    check(time_sample(REED_TIME_UNIFORM, REED_PATH_LINEAR, 0.3125f, 1.7f) == 0.3125f &&
              time_sample(REED_TIME_UNIFORM, REED_PATH_COSINE, 0.875f, -2.0f) == 0.875f,
          "uniform passes u through: %g %g",
          time_sample(REED_TIME_UNIFORM, REED_PATH_LINEAR, 0.3125f, 1.7f),
          time_sample(REED_TIME_UNIFORM, REED_PATH_COSINE, 0.875f, -2.0f));
    for (int p = REED_PATH_LINEAR; p <= REED_PATH_COSINE; p++) {
        const char *name = reed_path_names[p];
        char what[64];
        snprintf(what, sizeof what, "lognormal %s n=0", name);
        check_near(what, time_sample(REED_TIME_LOGNORMAL, (reed_path_kind)p, 0.9f, 0.0f), 0.5, 1e-7);
        double s = exp(1.0);
        snprintf(what, sizeof what, "lognormal %s n=1", name);
        check_near(what, time_sample(REED_TIME_LOGNORMAL, (reed_path_kind)p, 0.9f, 1.0f),
                   p ? 2.0 / PI * atan(s) : s / (1.0 + s), 1e-6);
        int monotone = 1, inside = 1;
        float prev = -1.0f;
        for (int k = -8; k <= 8; k++) {
            float t = time_sample(REED_TIME_LOGNORMAL, (reed_path_kind)p, 0.5f, 0.5f * k);
            monotone &= t > prev;
            inside &= t > 0.0f && t < 1.0f;
            prev = t;
        }
        check(monotone && inside,
              "lognormal %s strictly increasing in n over n = -4..4 step 0.5, inside (0,1): "
              "t(-4)=%.6g t(4)=%.6g", name,
              time_sample(REED_TIME_LOGNORMAL, (reed_path_kind)p, 0.5f, -4.0f),
              time_sample(REED_TIME_LOGNORMAL, (reed_path_kind)p, 0.5f, 4.0f));
    }
}

/* ------------------------------------------------------------------------
 * 4. Samplers
 * ---------------------------------------------------------------------- */

/* Point-mass data x0 on the linear path: x_t = (1−t)·x0 + t·ε gives
 * ε = (x_t − (1−t)x0)/t and v = ε − x0 = (x_t − x0)/t. Along the exact
 * trajectory v = ε − x0 is constant, so Euler is exact. */
typedef struct { const float *x0; size_t n; } point_mass;
static void point_mass_velocity(void *ctx, const float *x, float t, float *v) {
    const point_mass *pm = ctx;
    for (size_t i = 0; i < pm->n; i++) v[i] = (x[i] - pm->x0[i]) / t;
}

/* dx/dt = x·cos t: x(t) = x(1)·exp(sin t − sin 1). */
static int nonlinear_calls;
static void nonlinear_velocity(void *ctx, const float *x, float t, float *v) {
    size_t n = *(const size_t *)ctx;
    for (size_t i = 0; i < n; i++) v[i] = x[i] * (float)cos((double)t);
    nonlinear_calls++;
}

/* Gaussian data x0 ~ N(0, σ²), x_t = a(t)·x0 + s(t)·ε, v = a'·x0 + s'·ε:
 *   Var(x_t) = a²σ² + s²,  Cov(v, x_t) = a·a'·σ² + s·s'.
 * (v, x_t) are jointly Gaussian with mean 0, so
 *   E[v | x_t = x] = x·(a·a'·σ² + s·s')/(a²σ² + s²).
 * On the linear path (a = 1−t, s = t, a' = −1, s' = 1) this is
 *   E[v | x] = x·(t − (1−t)σ²)/((1−t)²σ² + t²).
 * The ODE dx/dt = E[v|x] carries N(0,1) at t=1 to N(0,σ²) at t=0 (it is
 * linear: x(0) = x(1)·σ exactly), and the SDE with the score derived from
 * the same velocity has the same marginals. */
typedef struct { size_t n; double var; reed_path_kind path; } gaussian_data;
static void gaussian_velocity(void *ctx, const float *x, float t, float *v) {
    const gaussian_data *g = ctx;
    double a, s, da, ds;
    if (g->path == REED_PATH_COSINE) {
        a = cos(PI * t / 2), s = sin(PI * t / 2), da = -PI / 2 * s, ds = PI / 2 * a;
    } else {
        a = 1.0 - t, s = t, da = -1.0, ds = 1.0;
    }
    double k = (a * da * g->var + s * ds) / (a * a * g->var + s * s);
    for (size_t i = 0; i < g->n; i++) v[i] = (float)(x[i] * k);
}

static void sample_stats(const float *x, size_t n, double *mean, double *var) {
    double m = 0.0, q = 0.0;
    for (size_t i = 0; i < n; i++) m += x[i];
    m /= (double)n;
    for (size_t i = 0; i < n; i++) q += (x[i] - m) * (x[i] - m);
    *mean = m;
    *var = q / (double)(n - 1);
}

static void run_sampler(reed_sampler kind, reed_path_kind path, int steps, uint64_t seed,
                        velocity_fn f, void *ctx, float *x, size_t n) {
    sampler_spec spec = {kind, steps, path, seed};
    float *scratch = xmalloc(3 * n * sizeof(float));
    sampler_run(&reed_ops_cpu, &spec, f, ctx, x, n, scratch);
    free(scratch);
}

static void test_point_mass(void) {
    enum { n = 8 };
    float x0[n], eps[n], x[n];
    for (int i = 0; i < n; i++) x0[i] = (float)test_uniform(-2, 2);
    rng_normal(eps, n, 7, 0, REED_STREAM_SAMPLE_NOISE);
    point_mass pm = {x0, n};
    /* Heun is left out: its last step evaluates v at t = 0, where this
     * field is 0/0. */
    const reed_sampler kinds[] = {REED_SAMPLER_EULER, REED_SAMPLER_SDE};
    const int steps[] = {1, 10, 37};
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < 3; s++) {
            memcpy(x, eps, sizeof x);
            run_sampler(kinds[k], REED_PATH_LINEAR, steps[s], 3, point_mass_velocity, &pm, x, n);
            double err = 0.0;
            for (int i = 0; i < n; i++) err = max_err(err, fabs((double)x[i] - x0[i]));
            check(err < 1e-5, "point mass, %s N=%d: max|x(0) - x0| = %.2e (tol 1e-5)",
                  reed_sampler_names[kinds[k]], steps[s], err);
        }
}

static double nonlinear_error(reed_sampler kind, int N) {
    size_t n = 3;
    const float x1[3] = {1.0f, -0.5f, 2.0f};
    float x[3];
    memcpy(x, x1, sizeof x);
    nonlinear_calls = 0;
    run_sampler(kind, REED_PATH_LINEAR, N, 0, nonlinear_velocity, &n, x, n);
    double err = 0.0;
    for (size_t i = 0; i < n; i++) err = max_err(err, fabs(x[i] - x1[i] * exp(-sin(1.0))));
    return err;
}

static void test_convergence(void) {
    const reed_sampler kinds[] = {REED_SAMPLER_EULER, REED_SAMPLER_HEUN};
    const double order_ratio[] = {2.0, 4.0};
    for (int k = 0; k < 2; k++) {
        double e16 = nonlinear_error(kinds[k], 16);
        int calls16 = nonlinear_calls;
        double e32 = nonlinear_error(kinds[k], 32), e64 = nonlinear_error(kinds[k], 64);
        const char *name = reed_sampler_names[kinds[k]];
        check(calls16 == 16 * (k + 1), "%s N=16 calls the velocity %d times (want %d)", name,
              calls16, 16 * (k + 1));
        double r1 = e16 / e32, r2 = e32 / e64, want = order_ratio[k];
        check(fabs(r1 / want - 1) < 0.15 && fabs(r2 / want - 1) < 0.15,
              "dx/dt = x cos t, %s: err N=16 %.3e, N=32 %.3e, N=64 %.3e; ratios %.3f %.3f "
              "(want %.0f +-15%%)", name, e16, e32, e64, r1, r2, want);
    }
}

static void test_gaussian(void) {
    const size_t n = 20000;
    const double sigma = 0.5;
    float *eps = xmalloc(n * sizeof(float)), *x = xmalloc(n * sizeof(float));
    float *x_again = xmalloc(n * sizeof(float));
    rng_normal(eps, n, 11, 0, REED_STREAM_SAMPLE_NOISE);
    double m0, v0;
    sample_stats(eps, n, &m0, &v0);
    check(fabs(v0 - 1.0) < 0.05, "start noise: %zu samples mean %.4f var %.4f", n, m0, v0);

    const reed_sampler kinds[] = {REED_SAMPLER_EULER, REED_SAMPLER_HEUN, REED_SAMPLER_SDE};
    /* The ODE maps x(1) to x(1)·σ, so var(x(0))/var(x(1)) = σ² up to the
     * discretisation error: O(1/N) for Euler, O(1/N²) for Heun. */
    const double ode_tol[] = {0.02, 1e-3, 0.0};
    for (int p = REED_PATH_LINEAR; p <= REED_PATH_COSINE; p++) {
        gaussian_data g = {n, sigma * sigma, (reed_path_kind)p};
        for (int k = 0; k < 3; k++) {
            memcpy(x, eps, n * sizeof(float));
            run_sampler(kinds[k], g.path, 200, 1234, gaussian_velocity, &g, x, n);
            double m, v;
            sample_stats(x, n, &m, &v);
            double rel = fabs(v / g.var - 1.0);
            check(rel < 0.05 && fabs(m) < 0.02,
                  "Gaussian data sigma=%.2f, %s path, %s N=200: mean %.4f var %.5f want %.5f, "
                  "rel err %.2f%% (tol 5%%)", sigma, reed_path_names[p],
                  reed_sampler_names[kinds[k]], m, v, g.var, 100 * rel);
            if (kinds[k] != REED_SAMPLER_SDE) {
                double ratio = v / v0, r = fabs(ratio / g.var - 1.0);
                check(r < ode_tol[k], "  %s ODE: var(x0)/var(x1) %.6f want sigma^2 %.6f, rel err %.2e "
                      "(tol %.0e)", reed_sampler_names[kinds[k]], ratio, g.var, r, ode_tol[k]);
            }
        }
    }

    /* SDE: the same seed reproduces, another seed differs. */
    gaussian_data g = {n, sigma * sigma, REED_PATH_LINEAR};
    memcpy(x, eps, n * sizeof(float));
    run_sampler(REED_SAMPLER_SDE, g.path, 50, 99, gaussian_velocity, &g, x, n);
    memcpy(x_again, eps, n * sizeof(float));
    run_sampler(REED_SAMPLER_SDE, g.path, 50, 99, gaussian_velocity, &g, x_again, n);
    check(memcmp(x, x_again, n * sizeof(float)) == 0, "SDE seed 99 twice: identical (x[0] %.7g %.7g)",
          x[0], x_again[0]);
    memcpy(x_again, eps, n * sizeof(float));
    run_sampler(REED_SAMPLER_SDE, g.path, 50, 100, gaussian_velocity, &g, x_again, n);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += x[i] != x_again[i];
    check(differ > n * 9 / 10, "SDE seed 99 vs 100: %zu of %zu samples differ", differ, n);
    free(eps);
    free(x);
    free(x_again);
}

static void test_samplers(void) {
    section("samplers");
    test_point_mass();
    test_convergence();
    test_gaussian();
}

/* ------------------------------------------------------------------------
 * 5. Classifier-free guidance
 * ---------------------------------------------------------------------- */

static double cfg_error(float w, float lo, float hi, float t, int inside) {
    enum { n = 5 };
    const float vc[n] = {1.0f, -2.0f, 0.5f, 3.0f, -0.25f}, vu[n] = {0.5f, 1.0f, -1.5f, 3.0f, 2.0f};
    float v[n];
    memcpy(v, vc, sizeof v);
    cfg_combine(&reed_ops_cpu, v, vu, n, w, lo, hi, t);
    double err = 0.0;
    for (int i = 0; i < n; i++) {
        double want = inside ? (double)vu[i] + (double)w * ((double)vc[i] - vu[i]) : vc[i];
        err = max_err(err, fabs(v[i] - want));
    }
    return err;
}

static void test_cfg(void) {
    section("classifier-free guidance");
    const float lo = 0.25f, hi = 0.75f;
    const float ts[] = {0.0f, 0.2f, 0.25f, 0.5f, 0.75f, 0.8f, 1.0f};
    for (int i = 0; i < 7; i++) {
        int inside = ts[i] >= lo && ts[i] <= hi;
        double err = cfg_error(4.0f, lo, hi, ts[i], inside);
        check(err < 1e-6, "cfg w=4 [%g,%g] at t=%g: %s, max|diff| %.2e", lo, hi, ts[i],
              inside ? "v_u + w(v_c - v_u)" : "v_c unchanged", err);
    }
    double e1 = cfg_error(1.0f, 0.0f, 1.0f, 0.5f, 0), e0 = cfg_error(0.0f, 0.0f, 1.0f, 0.5f, 1);
    /* w = 0: v_u + 0·(v_c − v_u) is v_u exactly. */
    check(e1 < 1e-6, "cfg w=1 returns v_c: max|diff| %.2e", e1);
    check(e0 == 0.0, "cfg w=0 returns v_u: max|diff| %.2e", e0);
}

/* ------------------------------------------------------------------------
 * 6. RNG
 * ---------------------------------------------------------------------- */

static void check_philox(const uint32_t ctr[4], const uint32_t key[2], const uint32_t want[4]) {
    uint32_t out[4];
    philox4x32(ctr, key, out);
    check(memcmp(out, want, sizeof out) == 0,
          "Philox4x32-10 KAT ctr {%08x %08x %08x %08x} key {%08x %08x}: got {%08x %08x %08x %08x} "
          "want {%08x %08x %08x %08x}", ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1], out[0],
          out[1], out[2], out[3], want[0], want[1], want[2], want[3]);
}

static void test_rng(void) {
    section("rng");
    /* Known answers from Random123's kat_vectors (Salmon et al. 2011). */
    const uint32_t c0[4] = {0, 0, 0, 0}, k0[2] = {0, 0};
    const uint32_t w0[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
    const uint32_t c1[4] = {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                   k1[2] = {0xffffffff, 0xffffffff};
    const uint32_t w1[4] = {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd};
    const uint32_t c2[4] = {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
                   k2[2] = {0xa4093822, 0x299f31d0};
    const uint32_t w2[4] = {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1};
    check_philox(c0, k0, w0);
    check_philox(c1, k1, w1);
    check_philox(c2, k2, w2);

    const size_t n = 1000000;
    float *u = xmalloc(n * sizeof(float));
    rng_uniform(u, n, 42, 0, REED_STREAM_NOISE);
    float lo = 1.0f, hi = 0.0f;
    for (size_t i = 0; i < n; i++) {
        lo = fminf(lo, u[i]);
        hi = fmaxf(hi, u[i]);
    }
    double m, v;
    sample_stats(u, n, &m, &v);
    check(lo > 0.0f && hi < 1.0f, "uniform 1e6 draws in (0,1): min %.9g max %.9g", lo, hi);
    check(fabs(m - 0.5) < 1.5e-3, "uniform mean %.6f want 0.5 (tol 1.5e-3)", m);
    check(fabs(v - 1.0 / 12) < 5e-4, "uniform var %.6f want %.6f (tol 5e-4)", v, 1.0 / 12);

    rng_normal(u, n, 42, 0, REED_STREAM_NOISE);
    sample_stats(u, n, &m, &v);
    check(fabs(m) < 5e-3, "normal mean %.6f want 0 (tol 5e-3)", m);
    check(fabs(v - 1.0) < 1e-2, "normal var %.6f want 1 (tol 1e-2)", v);

    /* The backend's draw (threaded, n not a multiple of 4) is the same draw. */
    float *nf = xmalloc((n - 3) * sizeof(float));
    rng_normal(u, n - 3, 42, 9, REED_STREAM_NOISE);
    reed_ops_cpu.normal_fill(nf, n - 3, 42, 9, REED_STREAM_NOISE);
    check(memcmp(u, nf, (n - 3) * sizeof(float)) == 0,
          "cpu normal_fill equals rng_normal bit for bit over %zu draws", n - 3);
    free(nf);
    free(u);

    /* Determinism and independence of (seed, step, stream). */
    float a[1000], b[1000], c[10];
    for (int normal = 0; normal <= 1; normal++) {
        void (*draw)(float *, size_t, uint64_t, uint64_t, reed_stream) =
            normal ? rng_normal : rng_uniform;
        const char *name = normal ? "rng_normal" : "rng_uniform";
        draw(a, 1000, 5, 17, REED_STREAM_TIME);
        draw(b, 1000, 5, 17, REED_STREAM_TIME);
        check(memcmp(a, b, sizeof a) == 0, "%s: same (seed, step, stream) identical", name);
        draw(b, 1000, 5, 18, REED_STREAM_TIME);
        check(memcmp(a, b, 10 * sizeof(float)) != 0, "%s: step 17 vs 18 differ (%.7g vs %.7g)",
              name, a[0], b[0]);
        draw(b, 1000, 5, 17, REED_STREAM_NOISE);
        check(memcmp(a, b, 10 * sizeof(float)) != 0, "%s: stream TIME vs NOISE differ (%.7g vs %.7g)",
              name, a[0], b[0]);
        draw(b, 1000, 6, 17, REED_STREAM_TIME);
        check(memcmp(a, b, 10 * sizeof(float)) != 0, "%s: seed 5 vs 6 differ (%.7g vs %.7g)", name,
              a[0], b[0]);
        draw(c, 10, 5, 17, REED_STREAM_TIME);
        check(memcmp(a, c, sizeof c) == 0, "%s: first 10 of n=1000 equal n=10", name);
        draw(c, 7, 5, 17, REED_STREAM_TIME);
        check(memcmp(a, c, 7 * sizeof(float)) == 0, "%s: first 7 of n=1000 equal n=7", name);
    }

    /* The (0,1) promise at its edge: 32 random bits map to (0,1) and never
     * round to 1.0f. About one draw in 2^24 has its top 24 bits all set;
     * 2^27 draws (128 steps × 2^20) see about 8 of them. */
    const size_t chunk = 1u << 20;
    float *w = xmalloc(chunk * sizeof(float));
    size_t ones = 0, zeros = 0;
    float top = 0.0f;
    for (uint64_t step = 0; step < 128; step++) {
        rng_uniform(w, chunk, 2024, step, REED_STREAM_SHUFFLE);
        for (size_t i = 0; i < chunk; i++) {
            ones += w[i] >= 1.0f;
            zeros += w[i] <= 0.0f;
            if (w[i] < 1.0f) top = fmaxf(top, w[i]);
        }
    }
    check(ones == 0 && zeros == 0,
          "uniform over 2^27 draws never 0 or 1: %zu draws == 1.0f, %zu == 0.0f (largest < 1: %.9g)",
          ones, zeros, top);
    free(w);
}

/* ------------------------------------------------------------------------
 * 7. Grid resampling
 * ---------------------------------------------------------------------- */

/* PyTorch F.interpolate(mode="bilinear", align_corners=False) on one
 * channel, as in aten/src/ATen/native/UpSample.h: source index
 * (dst + ½)·in/out − ½ clamped at 0, neighbour h1p = (h1 < in−1). */
static double bilinear_src(int dst, int in, int out) {
    double s = ((double)dst + 0.5) * in / out - 0.5;
    return s < 0.0 ? 0.0 : s;
}

static void ref_bilinear(double *out, const double *in, int gs, int g) {
    for (int r = 0; r < g; r++)
        for (int c = 0; c < g; c++) {
            double sy = bilinear_src(r, gs, g), sx = bilinear_src(c, gs, g);
            int y = (int)sy, x = (int)sx;
            int yp = y < gs - 1 ? 1 : 0, xp = x < gs - 1 ? 1 : 0;
            double ly = sy - y, lx = sx - x;
            out[r * g + c] = (1 - ly) * ((1 - lx) * in[y * gs + x] + lx * in[y * gs + x + xp]) +
                             ly * ((1 - lx) * in[(y + yp) * gs + x] + lx * in[(y + yp) * gs + x + xp]);
        }
}

/* adaptive_avg_pool2d: output cell i averages input [⌊i·in/out⌋, ⌈(i+1)·in/out⌉)
 * in integer arithmetic (aten/src/ATen/native/AdaptiveAveragePooling.cpp). */
static void ref_area(double *out, const double *in, int gs, int g) {
    for (int r = 0; r < g; r++)
        for (int c = 0; c < g; c++) {
            int y0 = r * gs / g, y1 = ((r + 1) * gs + g - 1) / g;
            int x0 = c * gs / g, x1 = ((c + 1) * gs + g - 1) / g;
            double sum = 0.0;
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++) sum += in[y * gs + x];
            out[r * g + c] = sum / ((y1 - y0) * (x1 - x0));
        }
}

static void apply_matrix(double *out, const float *R, const double *in, int g, int gs) {
    for (int i = 0; i < g * g; i++) {
        double s = 0.0;
        for (int j = 0; j < gs * gs; j++) s += (double)R[(size_t)i * gs * gs + j] * in[j];
        out[i] = s;
    }
}

static void check_resample(int gs, int g, reed_resample mode) {
    const char *name = reed_resample_names[mode];
    float *R = grid_resample_matrix(gs, g, mode);
    if (!R) {
        check(0, "grid_resample_matrix(%d, %d, %s) returned NULL", gs, g, name);
        return;
    }
    int ns = gs * gs, nd = g * g;
    double *e = xmalloc(sizeof(double) * ns), *col = xmalloc(sizeof(double) * nd);
    double err = 0.0, row_err = 0.0;
    /* Column j of the reference matrix is the reference applied to e_j. */
    for (int j = 0; j < ns; j++) {
        memset(e, 0, sizeof(double) * ns);
        e[j] = 1.0;
        (mode == REED_RESAMPLE_AREA ? ref_area : ref_bilinear)(col, e, gs, g);
        for (int i = 0; i < nd; i++) err = max_err(err, fabs(R[(size_t)i * ns + j] - col[i]));
    }
    for (int i = 0; i < nd; i++) {
        double s = 0.0;
        for (int j = 0; j < ns; j++) s += R[(size_t)i * ns + j];
        row_err = max_err(row_err, fabs(s - 1.0));
    }
    check(err < 1e-7, "resample %s %d->%d: max|R - ref| %.2e (tol 1e-7)", name, gs, g, err);
    check(row_err < 1e-6, "resample %s %d->%d: max|row sum - 1| %.2e", name, gs, g, row_err);
    if (gs == g) {
        double id = 0.0;
        for (int i = 0; i < nd; i++)
            for (int j = 0; j < ns; j++) id = max_err(id, fabs(R[(size_t)i * ns + j] - (i == j)));
        check(id == 0.0, "resample %s %d->%d is the identity: max|R - I| %.2e", name, gs, g, id);
    }
    free(e);
    free(col);
    free(R);
}

static void test_resample(void) {
    section("grid resampling");
    const int sizes[][2] = {{7, 14}, {14, 7}, {7, 7}, {4, 6}, {6, 4}, {16, 7}};
    for (int k = 0; k < 6; k++) {
        check_resample(sizes[k][0], sizes[k][1], REED_RESAMPLE_BILINEAR);
        check_resample(sizes[k][0], sizes[k][1], REED_RESAMPLE_AREA);
    }

    /* Extra cross-check against PyTorch itself (torch 2.x), produced once by:
     *   python3 -c "
     *   import torch, torch.nn.functional as F
     *   x = torch.tensor([[(k*k % 7) + 0.1*k for k in range(16)]], dtype=torch.float64).reshape(1,1,4,4)
     *   for m in ['bilinear','area']:
     *       kw = {'align_corners': False} if m=='bilinear' else {}
     *       y = F.interpolate(x, size=(6,6), mode=m, **kw).flatten().tolist()
     *       print(m, ', '.join('%.17g' % v for v in y))
     *   " */
    static const double torch_bilinear[36] = {
        0, 0.54999999999999993, 1.6166666666666663, 3.6833333333333336, 3.25,
        2.2999999999999998, 1.1999999999999997, 1.9999999999999996, 2.8166666666666664,
        2.8833333333333333, 2.1999999999999997, 1.5, 2.3000000000000003, 3.4333333333333327,
        4.1111111111111107, 2.2888888888888892, 1.4666666666666666, 1.0999999999999996,
        1.9000000000000001, 3.3666666666666667, 4.4888888888888889, 3.1111111111111112,
        2.7333333333333334, 2.7000000000000002, 3.5, 3.5499999999999994, 3.3666666666666671,
        2.4333333333333336, 2.5, 2.7999999999999998, 5.2000000000000002, 3.75,
        2.1499999999999999, 1.55, 1.9500000000000002, 2.4999999999999996};
    static const double torch_area[36] = {
        0, 0.55000000000000004, 1.1000000000000001, 4.2000000000000002, 3.25,
        2.2999999999999998, 1.2, 2, 2.7999999999999998, 2.9000000000000004, 2.1999999999999997,
        1.5, 2.3999999999999999, 3.4500000000000002, 4.5, 1.6000000000000001,
        1.1500000000000001, 0.70000000000000007, 1.8, 3.3500000000000001, 4.9000000000000004, 3,
        3.0499999999999998, 3.1000000000000001, 3.5, 3.5499999999999998, 3.6000000000000001,
        2.2000000000000002, 2.5, 2.7999999999999998, 5.2000000000000002, 3.75,
        2.2999999999999998, 1.4000000000000001, 1.9500000000000002, 2.5};
    double in[16], out[36];
    for (int k = 0; k < 16; k++) in[k] = (k * k % 7) + 0.1 * k;
    for (int mode = REED_RESAMPLE_AREA; mode <= REED_RESAMPLE_BILINEAR; mode++) {
        const double *want = mode == REED_RESAMPLE_AREA ? torch_area : torch_bilinear;
        float *R = grid_resample_matrix(4, 6, (reed_resample)mode);
        if (!R) {
            check(0, "grid_resample_matrix(4, 6) returned NULL");
            continue;
        }
        apply_matrix(out, R, in, 6, 4);
        double err = 0.0;
        for (int i = 0; i < 36; i++) err = max_err(err, fabs(out[i] - want[i]));
        check(err < 1e-6, "resample %s 4->6 vs torch F.interpolate output: max|diff| %.2e (tol 1e-6)",
              reed_resample_names[mode], err);
        free(R);
    }
}

/* ------------------------------------------------------------------------
 * 8. Alignment loss
 * ---------------------------------------------------------------------- */

/* −mean_b w(t_b)·mean_t cos(z_bt, target_bt) in double (F.normalize's
 * 1e-12 clamp never binds for these inputs). */
static double ref_align_loss(const double *z, const float *target, const float *t, int B, int T,
                             int D, const reed_source_config *src, double *sim) {
    double loss = 0.0, sim_sum = 0.0;
    for (int b = 0; b < B; b++) {
        double sb = 0.0;
        for (int i = 0; i < T; i++) {
            const double *zr = z + ((size_t)b * T + i) * D;
            const float *tr = target + ((size_t)b * T + i) * D;
            double zz = 0, tt = 0, zt = 0;
            for (int d = 0; d < D; d++) {
                zz += zr[d] * zr[d];
                tt += (double)tr[d] * tr[d];
                zt += zr[d] * tr[d];
            }
            sb += zt / (sqrt(zz) * sqrt(tt));
        }
        sb /= T;
        sim_sum += sb;
        loss -= ref_time_weight(src->weighting, src->cutoff_lo, src->cutoff_hi, t[b]) * sb;
    }
    if (sim) *sim = sim_sum / B;
    return loss / B;
}

static void check_align(const char *label, reed_source_kind kind, reed_weighting weighting,
                        int B, int T, int D, const float *t) {
    reed_source_config src;
    memset(&src, 0, sizeof src);
    snprintf(src.name, sizeof src.name, "%s", label);
    src.kind = kind;
    src.weighting = weighting;
    src.cutoff_lo = 0.3f;
    src.cutoff_hi = 0.7f;
    src.coeff = 1.0f;
    const float coef = 0.7f;
    size_t n = (size_t)B * T * D;
    float *z = xmalloc(n * sizeof(float)), *target = xmalloc(n * sizeof(float));
    float *dz = xmalloc(n * sizeof(float));
    float *sim_rows = xmalloc((size_t)B * T * sizeof(float)), *dsim = xmalloc((size_t)B * T * sizeof(float));
    double *zd = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        z[i] = (float)test_uniform(-1, 1);
        target[i] = (float)test_uniform(-1, 1);
        zd[i] = z[i];
        dz[i] = NAN; /* align_loss overwrites dz */
    }
    align_scratch as = {sim_rows, dsim, sim_rows, dsim}; /* CPU: host = backend memory */
    align_result r = align_loss(&reed_ops_cpu, dz, &as, z, target, t, B, T, D, &src, coef);
    double ref_sim;
    double ref = ref_align_loss(zd, target, t, B, T, D, &src, &ref_sim);
    check(fabs(r.loss - ref) < 1e-6, "align_loss %s (B=%d T=%d D=%d %s): loss %.9f ref %.9f |diff| %.2e",
          label, B, T, D, reed_weighting_names[weighting], r.loss, ref, fabs(r.loss - ref));
    check(fabs(r.sim - ref_sim) < 1e-6, "align_loss %s: sim %.9f ref %.9f |diff| %.2e", label, r.sim,
          ref_sim, fabs(r.sim - ref_sim));

    /* dz against central differences of coef·loss (reference, in double). */
    const double h = 1e-5;
    double err = 0.0, scale = 0.0;
    int nan_left = 0;
    for (size_t i = 0; i < n; i++) {
        double keep = zd[i];
        zd[i] = keep + h;
        double lp = ref_align_loss(zd, target, t, B, T, D, &src, NULL);
        zd[i] = keep - h;
        double lm = ref_align_loss(zd, target, t, B, T, D, &src, NULL);
        zd[i] = keep;
        double fd = coef * (lp - lm) / (2 * h);
        nan_left += isnan(dz[i]);
        err = max_err(err, fabs(dz[i] - fd));
        scale = fmax(scale, fabs(fd));
    }
    check(!nan_left && err <= 1e-4 * scale,
          "align_loss %s: dz vs finite differences of coef*loss (coef %.2f): max|diff| %.2e, "
          "max|fd| %.2e, rel %.2e (tol 1e-4)%s", label, coef, err, scale, err / scale,
          nan_left ? ", some dz left unwritten" : "");
    free(z);
    free(target);
    free(dz);
    free(sim_rows);
    free(dsim);
    free(zd);
}

static void test_align_loss(void) {
    section("alignment loss");
    const float t_token[3] = {0.1f, 0.5f, 0.85f};
    const float t_global[4] = {0.2f, 0.3f, 0.6f, 0.9f}; /* cutoff [0.3,0.7] keeps two */
    check_align("token", REED_SOURCE_TOKEN, REED_WEIGHT_SIGMOID, 3, 5, 7, t_token);
    check_align("token-const", REED_SOURCE_TOKEN, REED_WEIGHT_CONSTANT, 3, 5, 7, t_token);
    check_align("global", REED_SOURCE_GLOBAL, REED_WEIGHT_CUTOFF, 4, 1, 6, t_global);
    check_align("global-linear", REED_SOURCE_GLOBAL, REED_WEIGHT_LINEAR, 4, 1, 6, t_global);
}

int main(void) {
    test_curriculum();
    test_time_weights();
    test_paths();
    test_samplers();
    test_cfg();
    test_rng();
    test_resample();
    test_align_loss();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
