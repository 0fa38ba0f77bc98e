/* The REED method's pure pieces (DESIGN.md §2): interpolants, time
 * sampling, the curriculum, per-sample time weights, the alignment loss and
 * the samplers. No state: every function is testable on its own. */
#ifndef REED_METHOD_H
#define REED_METHOD_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ops.h"

/* --- interpolants ---------------------------------------------------------
 * x_t = a(t)·x + s(t)·ε and the target velocity v = a'(t)·x + s'(t)·ε.
 * linear: a = 1−t, s = t; cosine: a = cos(πt/2), s = sin(πt/2). */
typedef struct path_coeffs { float a, s, da, ds; } path_coeffs;
path_coeffs path_at(reed_path_kind path, float t);

/* Maps a uniform u ∈ (0,1) and a normal n to a training time t. */
float time_sample(reed_time_kind kind, reed_path_kind path, float u, float n);

/* --- curriculum ----------------------------------------------------------- */
typedef enum {
    REED_PHASE_REPRESENT, /* λ_diff = 0: alignment only */
    REED_PHASE_WARMUP,    /* λ_diff ramps up */
    REED_PHASE_JOINT,     /* both losses on */
    REED_PHASE_DIFFUSION, /* alignment finished (or no sources) */
    REED_PHASE_COUNT
} reed_phase;
extern const char *const reed_phase_names[];

typedef struct reed_weights {
    float w_diff, w_align;
    reed_phase phase;
} reed_weights;

/* The weights applied at step s (0-based) of a run of total_steps steps.
 * has_align: whether the run has any alignment source. */
reed_weights curriculum_at(const reed_curriculum_config *c, int step,
                           int total_steps, int has_align);

/* w_k(t) of a source. */
float time_weight(reed_weighting w, float lo, float hi, float t);

/* --- alignment loss ---------------------------------------------------------
 * One source over a batch: z (B·T, D) projections, target (B·T, D), T = 1
 * for a global source. sim_b = mean over tokens of cos(z, target);
 * loss = −mean_b w(t_b)·sim_b; sim = mean_b sim_b. When dz is not NULL it
 * receives (overwritten) coef·∂loss/∂z. z, target and dz are backend
 * memory, t (B) host memory. The per-row similarities go to the host, which
 * averages and weights them and sends their gradient back. */
typedef struct align_result { double loss, sim; } align_result;
typedef struct align_scratch {
    float *sim, *dsim;            /* (B·T) backend memory */
    float *sim_host, *dsim_host;  /* (B·T) host memory (may equal the above on the CPU) */
} align_scratch;
align_result align_loss(const reed_ops *ops, float *dz, const align_scratch *s,
                        const float *z, const float *target, const float *t,
                        int B, int T, int D, const reed_source_config *src,
                        float coef);

/* --- samplers ---------------------------------------------------------------
 * Integrates from t = 1 (noise) to t = 0 (data) over `steps` uniform steps.
 * velocity(ctx, x, t, v): the (guided) model velocity for the whole batch. */
typedef void (*velocity_fn)(void *ctx, const float *x, float t, float *v);

typedef struct sampler_spec {
    reed_sampler kind;
    int steps;
    reed_path_kind path;
    uint64_t seed;          /* for the SDE increments */
} sampler_spec;

/* x: (n) floats in: the start noise, out: the sample. scratch: 3·n floats.
 * x, scratch and the velocity's arrays are backend memory. The SDE
 * sampler's increments are the backend's normal_fill draws keyed by
 * (seed, step, SDE), the same on every backend. */
void sampler_run(const reed_ops *ops, const sampler_spec *spec,
                 velocity_fn velocity, void *ctx, float *x, size_t n,
                 float *scratch);

/* Classifier-free guidance: v = w·v_c + (1 − w)·v_u (= v_u + w·(v_c − v_u))
 * when t ∈ [lo, hi], otherwise v_c. Writes into v_c (backend memory). */
void cfg_combine(const reed_ops *ops, float *v_c, const float *v_u, size_t n,
                 float w, float lo, float hi, float t);

#endif
