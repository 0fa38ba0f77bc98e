#include "method.h"

#include <math.h>
#include <string.h>

#include "rng.h"

static const double PI = 3.14159265358979323846;

path_coeffs path_at(reed_path_kind path, float t) {
    if (path == REED_PATH_COSINE) {
        double h = PI / 2.0;
        return (path_coeffs){(float)cos(h * t), (float)sin(h * t),
                             (float)(-h * sin(h * t)), (float)(h * cos(h * t))};
    }
    return (path_coeffs){1.0f - t, t, -1.0f, 1.0f};
}

/* lognormal: s = e^n, t = s/(1+s) on the linear path (a logit-normal t),
 * t = (2/π)·atan(s) on the cosine path (the same signal-to-noise ratio). */
float time_sample(reed_time_kind kind, reed_path_kind path, float u, float n) {
    if (kind == REED_TIME_UNIFORM) return u;
    double s = exp((double)n);
    if (path == REED_PATH_COSINE) return (float)(2.0 / PI * atan(s));
    return (float)(s / (1.0 + s));
}

/* --- curriculum ---------------------------------------------------------------- */

const char *const reed_phase_names[] = {"represent", "warmup", "joint", "diffusion", NULL};

/* λ_diff: 0 before s0, linear ramp over W steps, then constant, linear or
 * cosine decay to 0 at the last step. */
static float diffusion_weight(const reed_curriculum_config *c, int s, int total) {
    int s0 = c->diffusion_start, W = c->diffusion_warmup;
    if (s < s0) return 0.0f;
    if (s < s0 + W) return (float)(s - s0) / (float)W;
    int span = total - s0 - W;
    if (c->diffusion_decay == REED_DECAY_CONSTANT || span <= 0) return 1.0f;
    double frac = (double)(s - s0 - W) / span;
    if (frac > 1.0) frac = 1.0;
    if (c->diffusion_decay == REED_DECAY_LINEAR) return (float)(1.0 - frac);
    return (float)((1.0 + cos(PI * frac)) / 2.0);
}

/* λ_align: constant 1, linear max(0, 1 − s/R), cosine (1 + cos(π·min(s/R,1)))/2. */
static float align_weight(const reed_curriculum_config *c, int s) {
    if (c->align_decay == REED_DECAY_CONSTANT) return 1.0f;
    double frac = c->align_steps > 0 ? (double)s / c->align_steps : 1.0;
    if (frac > 1.0) frac = 1.0;
    if (c->align_decay == REED_DECAY_LINEAR) return (float)(1.0 - frac);
    return (float)((1.0 + cos(PI * frac)) / 2.0);
}

reed_weights curriculum_at(const reed_curriculum_config *c, int step,
                           int total_steps, int has_align) {
    reed_weights w = {diffusion_weight(c, step, total_steps),
                      has_align ? align_weight(c, step) : 0.0f, REED_PHASE_JOINT};
    if (step < c->diffusion_start) w.phase = REED_PHASE_REPRESENT;
    else if (step < c->diffusion_start + c->diffusion_warmup) w.phase = REED_PHASE_WARMUP;
    else if (!has_align || w.w_align == 0.0f) w.phase = REED_PHASE_DIFFUSION;
    return w;
}

float time_weight(reed_weighting w, float lo, float hi, float t) {
    switch (w) {
    case REED_WEIGHT_LINEAR: return 1.0f - t;
    case REED_WEIGHT_COSINE: return (float)((1.0 + cos(PI * t)) / 2.0);
    case REED_WEIGHT_SIGMOID: return (float)(1.0 / (1.0 + exp(10.0 * (t - 0.5))));
    case REED_WEIGHT_CUTOFF: return t >= lo && t <= hi ? 1.0f : 0.0f;
    case REED_WEIGHT_CONSTANT: break;
    }
    return 1.0f;
}

/* --- alignment ------------------------------------------------------------------- */

align_result align_loss(const reed_ops *ops, float *dz, const align_scratch *s,
                        const float *z, const float *target, const float *t,
                        int B, int T, int D, const reed_source_config *src,
                        float coef) {
    align_result r = {0.0, 0.0};
    size_t rows = (size_t)B * T;
    ops->cosine_forward(s->sim, z, target, B * T, D);
    ops->download(s->sim_host, s->sim, rows * sizeof(float));
    for (int b = 0; b < B; b++) {
        double sim_b = 0.0;
        for (int i = 0; i < T; i++) sim_b += s->sim_host[b * T + i];
        sim_b /= T;
        float w = time_weight(src->weighting, src->cutoff_lo, src->cutoff_hi, t[b]);
        r.sim += sim_b / B;
        r.loss -= w * sim_b / B;
        /* ∂(coef·loss)/∂sim_row = −coef·w(t_b)/(B·T) */
        for (int i = 0; i < T; i++) s->dsim_host[b * T + i] = -coef * w / (float)(B * T);
    }
    if (dz) {
        ops->upload(s->dsim, s->dsim_host, rows * sizeof(float));
        ops->zero(dz, sizeof(float) * rows * D);
        ops->cosine_backward(dz, s->dsim, z, target, B * T, D);
    }
    return r;
}

/* --- samplers ---------------------------------------------------------------------- */

void cfg_combine(const reed_ops *ops, float *v_c, const float *v_u, size_t n, float w,
                 float lo, float hi, float t) {
    if (t < lo || t > hi) return;
    ops->axpby(v_c, w, v_c, 1.0f - w, v_u, n);
}

/* The SDE's drift at (x, t): from x_t = a·x0 + s·ε and v = a'·x0 + s'·ε,
 * ε = (a·v − a'·x)/(a·s' − a'·s) and the score is −ε/s. With diffusion
 * coefficient g² = 2t, the reverse-time drift is v − ½·g²·score = v + t·ε/s,
 * that is (1 + t·a/(det·s))·v − (t·a'/(det·s))·x. */
static void sde_drift(const reed_ops *ops, float *drift, const float *x, const float *v,
                      size_t n, reed_path_kind path, float t) {
    path_coeffs c = path_at(path, t);
    float k = t / ((c.a * c.ds - c.da * c.s) * c.s);
    ops->axpby(drift, 1.0f + k * c.a, v, -k * c.da, x, n);
}

void sampler_run(const reed_ops *ops, const sampler_spec *spec, velocity_fn velocity,
                 void *ctx, float *x, size_t n, float *scratch) {
    float *v = scratch, *v2 = scratch + n, *x2 = scratch + 2 * n;
    int N = spec->steps;
    for (int i = 0; i < N; i++) {
        float t = 1.0f - (float)i / N, t_next = 1.0f - (float)(i + 1) / N;
        float dt = t_next - t; /* negative: we integrate towards t = 0 */
        velocity(ctx, x, t, v);
        if (spec->kind == REED_SAMPLER_HEUN) {
            /* x += dt·(v + v2)/2 with v2 the velocity at the Euler point */
            ops->axpby(x2, 1.0f, x, dt, v, n);
            velocity(ctx, x2, t_next, v2);
            ops->axpby(v, 0.5f, v, 0.5f, v2, n);
            ops->axpby(x, 1.0f, x, dt, v, n);
        } else if (spec->kind == REED_SAMPLER_SDE && i < N - 1) {
            /* Euler–Maruyama: x += drift·dt + sqrt(2t·|dt|)·z; last step deterministic */
            sde_drift(ops, v2, x, v, n, spec->path, t);
            ops->normal_fill(x2, n, spec->seed, (uint64_t)i, REED_STREAM_SDE);
            ops->axpby(x, 1.0f, x, dt, v2, n);
            ops->axpby(x, 1.0f, x, sqrtf(2.0f * t * -dt), x2, n);
        } else {
            ops->axpby(x, 1.0f, x, dt, v, n); /* Euler */
        }
    }
}
