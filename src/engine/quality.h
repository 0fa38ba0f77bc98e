/* Sample quality on Fashion-MNIST (issue 3): n class-balanced samples
 * (sample i has class i mod 10) at fixed seeds, scored by the evaluator
 * network — the Fréchet distance between its features of the samples and of
 * the 10,000 test images, and its accuracy on the samples' classes. Used by
 * `reed eval`, by the run's periodic evaluation (eval.every) and by
 * bench/method. */
#ifndef REED_QUALITY_H
#define REED_QUALITY_H

#include "error.h"
#include "reed.h"

typedef struct reed_quality reed_quality;

typedef struct reed_quality_result {
    int n;
    double fd;        /* Fréchet distance, evaluator features */
    double cond_acc;  /* fraction of samples the evaluator puts in their class */
} reed_quality_result;

/* Loads the evaluator (weights NULL: the shipped assets/evaluator.safetensors)
 * and the statistics of the test images in data_dir (Fashion-MNIST IDX). */
int reed_quality_open(reed_quality **q, const char *weights, const char *data_dir,
                      reed_error *err);
void reed_quality_close(reed_quality *q);

/* Draws n samples from the run with sc's sampler, steps, guidance and
 * weights (sc->n and sc->class_label are ignored), in chunks of at most
 * REED_QUALITY_CHUNK at seeds sc->seed, sc->seed + 1, ..., and scores them.
 * Samples are quantised to 8 bits, like the data. */
enum { REED_QUALITY_CHUNK = 500 };
int reed_quality_measure(reed_quality *q, reed_run *run, const reed_sample_config *sc,
                         int n, reed_quality_result *r, reed_error *err);

/* The evaluator's stated test accuracy (fraction) and its weights file. */
double reed_quality_evaluator_accuracy(const reed_quality *q);
const char *reed_quality_evaluator_path(const reed_quality *q);

#endif
