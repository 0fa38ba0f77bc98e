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

/* Per-step buffers of one batch, allocated once when the run opens. */
typedef struct run_batch {
    int *idx, *y;                 /* (B) */
    float *x, *noise, *x_t, *v, *v_pred, *dv; /* (B, C, S, S) */
    float *t, *u, *n, *drop;      /* (B) */
    float *pa, *ps, *pda, *pds;   /* (B) interpolant coefficients */
    float *target[REED_MAX_SOURCES], *dz[REED_MAX_SOURCES];
    float *sim_rows, *dsim;       /* (B·T) */
} run_batch;

struct reed_run {
    reed_config cfg;
    char *config_text;
    char dir[REED_PATH_LEN];
    const reed_ops *ops;
    sit_model model;
    /* parameters, gradients, AdamW moments and EMA: five blocks of n_params */
    float *params, *grads, *m, *v, *ema;
    sit_params p, g, pe;
    sit_acts acts;
    run_batch batch;
    reed_dataset data;
    reed_source sources[REED_MAX_SOURCES];
    /* the frozen teacher, when a source has from = "teacher" */
    int has_teacher;
    teacher_model teacher;
    teacher_acts teacher_acts;
    float *teacher_tokens, *teacher_global; /* (B, 49, 64), (B, 64) */
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

void run_log(reed_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends one metrics line (non-finite values as null). */
void metrics_write_jsonl(FILE *f, const reed_metrics *m);
int metrics_resume_at(reed_run *run, int step, reed_error *err);

#endif
