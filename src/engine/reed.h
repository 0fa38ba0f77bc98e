/* The engine's public API: a training run that can be stepped, paused
 * (simply by not stepping), reconfigured between steps, sampled and saved.
 * Metrics of every step are returned to the caller and appended to
 * RUN_DIR/metrics.jsonl. No terminal, Lua or readline in here. */
#ifndef REED_H
#define REED_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"

typedef struct reed_run reed_run;

typedef struct reed_metrics {
    int step;                 /* 0-based index of the update just applied */
    const char *phase;        /* curriculum phase name */
    int phase_index;
    double loss, loss_denoise;
    double w_diff, w_align, proj_coeff;
    double grad_norm;         /* before clipping */
    double lr, imgs_per_s, step_seconds;
    int n_sources;
    const char *source_names[REED_MAX_SOURCES];
    double sim[REED_MAX_SOURCES];      /* mean cosine, higher is better */
    double loss_src[REED_MAX_SOURCES]; /* −mean_b w(t)·sim_b */
    int fd_n;                 /* samples scored after this step; 0 = no evaluation */
    double fd, cond_acc;      /* Fréchet distance, evaluator accuracy on the classes */
    double device_mb;         /* backend (GPU) memory in use, MiB; 0 on the CPU */
} reed_metrics;

/* Receives engine messages (warnings, what was saved). */
typedef void (*reed_log_fn)(void *ud, const char *msg);

/* Starts a run in run_dir (created if needed): loads the data and sources,
 * initialises the model from cfg->train.seed, writes run_dir/config.lua
 * (config_text: the resolved config as Lua, kept in checkpoints).
 * run_dir NULL opens a sampling-only run: no data, sources or projectors;
 * load a checkpoint into it and call reed_run_sample. */
int reed_run_open(reed_run **out, const reed_config *cfg, const char *config_text,
                  const char *run_dir, reed_error *err);
void reed_run_close(reed_run *run);
void reed_run_set_log(reed_run *run, reed_log_fn fn, void *ud);

/* Runs one training step. On a non-finite loss or gradient it applies no
 * update and returns -1 with a message naming the step and the term. */
int reed_run_step(reed_run *run, reed_metrics *m, reed_error *err);

int reed_run_steps_done(const reed_run *run);   /* = index of the next step */
int reed_run_total_steps(const reed_run *run);
const reed_config *reed_run_config(const reed_run *run);
const char *reed_run_dir(const reed_run *run);
double reed_run_active_seconds(const reed_run *run); /* time spent in steps */
const char *reed_run_device(const reed_run *run);   /* the backend: "cpu", "cuda" */
/* Why train.device = "auto" trains on the CPU (one line), or "". */
const char *reed_run_device_note(const reed_run *run);
/* Bytes of backend memory the process holds (GPU); 0 on the CPU. */
size_t reed_run_device_memory(const reed_run *run);

/* Replaces the configuration between steps. Only what can change live may
 * differ (curriculum, optimiser hyper-parameters, source coefficients and
 * weightings, total steps, logging, sampling); anything else is an error
 * and the run keeps its old config. */
int reed_run_reconfigure(reed_run *run, const reed_config *cfg,
                         const char *config_text, reed_error *err);

/* A sample grid as 8-bit pixels: the samples tiled with a 2-pixel border,
 * grey (channels 1) or RGB (3). pixels is malloc'd; free with free(). */
typedef struct reed_grid {
    int width, height, channels;
    uint8_t *pixels;
} reed_grid;

/* Draws a sample grid with the given settings and writes it as PNG
 * (png_path may be NULL); when grid is not NULL it also receives the pixels. */
int reed_run_sample(reed_run *run, const reed_sample_config *sc,
                    const char *png_path, reed_grid *grid, reed_error *err);

/* Draws sc->n (≤ 1024) samples into x (n, C, S, S), unclamped model output
 * (data scale [-1, 1]); sample i has class sc->class_label, or i mod
 * num_classes when it is -1. */
int reed_run_sample_images(reed_run *run, const reed_sample_config *sc, float *x,
                           reed_error *err);

/* A schedule that replaces the config's curriculum (the Lua curriculum()
 * call): fills the weights and a phase name for step s of total. Returns 0,
 * or -1 with a message in err (the step then fails and applies nothing).
 * Called on the thread that steps the run. */
typedef int (*reed_schedule_fn)(void *ud, int step, int total, float *w_diff,
                                float *w_align, const char **phase, reed_error *err);
/* fn NULL restores the config's curriculum. */
void reed_run_set_schedule(reed_run *run, reed_schedule_fn fn, void *ud);

/* The weights and phase the run would apply at step s (the preview of the
 * schedule ahead). phase_index indexes reed_run_phase_names. */
int reed_run_weights_at(reed_run *run, int step, float *w_diff, float *w_align,
                        int *phase_index, reed_error *err);
/* The phase names seen so far: the built-in four, then custom ones in the
 * order a schedule first used them. Returns the count. */
int reed_run_phase_names(const reed_run *run, const char **names, int cap);

/* Saves a checkpoint. path NULL: RUN_DIR/checkpoints/step_NNNNNNNN.safetensors,
 * then removes all but the newest train.keep_ckpts. The path written is
 * copied into written (if not NULL, REED_PATH_LEN bytes). */
int reed_run_save(reed_run *run, const char *path, char *written, reed_error *err);

/* Loads model, EMA, optimiser moments, step and data cursor from a
 * checkpoint into an opened run whose config has the same shapes. */
int reed_run_load(reed_run *run, const char *path, reed_error *err);

/* The Lua config text stored in a checkpoint (malloc'd, caller frees).
 * path may be a checkpoint file or a run directory (its newest checkpoint);
 * resolved receives the checkpoint file used (REED_PATH_LEN bytes). */
int reed_checkpoint_config(const char *path, char **config_text, char *resolved,
                           reed_error *err);

#endif
