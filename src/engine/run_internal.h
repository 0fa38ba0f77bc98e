/* The run object, shared by run.c, sample.c and checkpoint.c. */
#ifndef REED_RUN_INTERNAL_H
#define REED_RUN_INTERNAL_H

#include <stdio.h>

#include "data.h"
#include "method.h"
#include "quality.h"
#include "reed.h"
#include "sit.h"
#include "teacher.h"

enum { RUN_MAX_PHASES = 16 };

enum { RUN_MAX_BUFFERS = 64 };

/* Per-step buffers of one batch, allocated once when the run opens. The
 * host draws the batch (examples, labels, times, and the rows of a source
 * too big for the backend); the
 * backend draws the noise and holds everything the model reads and writes. */
typedef struct run_batch {
    /* host memory */
    int *idx, *y;                 /* (B) */
    float *x;                     /* (B, C, S, S) */
    float *t, *u, *n, *drop;      /* (B) */
    float *coef;                  /* (4, B): interpolant a, s, a', s' */
    float *rows_host[REED_MAX_SOURCES]; /* a source's rows gathered on the host, or NULL */
    /* backend memory */
    int *y_dev, *idx_dev;
    float *x_dev, *noise_dev, *x_t, *v, *v_pred, *dv; /* (B, C, S, S) */
    float *t_dev, *coef_dev;      /* (B), (4, B) */
    float *target[REED_MAX_SOURCES], *dz[REED_MAX_SOURCES];
    align_scratch align;          /* (B·T) similarities, both sides */
} run_batch;

struct reed_run {
    reed_config cfg;
    char *config_text;
    char dir[REED_PATH_LEN];
    const reed_ops *ops;          /* the backend of train.device */
    char device_note[320];        /* why auto fell back to the CPU, or "" */
    sit_model model;
    /* parameters, gradients, AdamW moments and EMA: five blocks of n_params */
    float *params, *grads, *m, *v, *ema;
    sit_params p, g, pe;
    sit_acts acts;
    run_batch batch;
    reed_dataset data;
    reed_source sources[REED_MAX_SOURCES];
    /* per source, in backend memory (see place_sources): a file source's
     * whole array, or NULL (gathered on the host); the resampling matrix
     * (T, T_src) or NULL; the gathered rows (B, T_src, D) before resampling */
    const float *source_table[REED_MAX_SOURCES], *source_R[REED_MAX_SOURCES];
    float *source_rows[REED_MAX_SOURCES];
    /* the frozen teacher, when a source has from = "teacher" */
    int has_teacher;
    teacher_model teacher;
    teacher_acts teacher_acts;
    float *teacher_tokens, *teacher_global; /* (B, 49, 64), (B, 64) backend */
    /* buffers freed when the run closes (backend, host) */
    void *dev_buffers[RUN_MAX_BUFFERS], *host_buffers[RUN_MAX_BUFFERS];
    int n_dev_buffers, n_host_buffers;
    reed_cursor cursor;
    int sampling_only;            /* opened without a run directory */
    int step;                     /* steps done = index of the next step */
    double active_seconds;
    reed_quality *quality;      /* opened at the first evaluation (eval.every) */
    int eval_off;               /* set when an evaluation failed; the run goes on */
    FILE *metrics;
    reed_schedule_fn schedule;    /* NULL: the config's curriculum */
    void *schedule_ud;
    int n_phases;                 /* built-in + custom phase names */
    char phase_names[RUN_MAX_PHASES][32];
    reed_log_fn log;
    void *log_ud;
};

/* Zeroed buffers owned by the run until it closes; NULL when out of memory. */
void *run_dev_alloc(reed_run *run, size_t bytes);
void *run_host_alloc(reed_run *run, size_t bytes);

void run_log(reed_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends one metrics line (non-finite values as null). */
void metrics_write_jsonl(FILE *f, const reed_metrics *m);
int metrics_resume_at(reed_run *run, int step, reed_error *err);

#endif
