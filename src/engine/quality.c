/* Sample quality: evaluator features, Fréchet distance, class accuracy. */
#include "quality.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"
#include "frechet.h"
#include "ops.h"

enum { EVAL_BATCH = 500 };

struct reed_quality {
    evaluator_model e;
    evaluator_acts acts;
    char path[REED_PATH_LEN + 64];
    double *mu_test, *cov_test;   /* (D), (D,D) of the test images' features */
    double *mu, *cov;             /* the samples' */
};

static int test_statistics(reed_quality *q, const char *data_dir, reed_error *err) {
    cnn_split test = {0};
    float *f = NULL;
    int rc = cnn_split_load(&test, data_dir, "t10k", err);
    if (rc == 0 && !(f = malloc(sizeof(float) * (size_t)test.N * EVAL_DIM)))
        rc = reed_errorf(err, "out of memory");
    if (rc == 0) {
        evaluator_features(&reed_ops_cpu, &q->e, &q->acts, test.images, test.N, f, NULL);
        rc = frechet_stats(f, test.N, EVAL_DIM, q->mu_test, q->cov_test, err);
    }
    free(f);
    cnn_split_free(&test);
    return rc;
}

int reed_quality_open(reed_quality **out, const char *weights, const char *data_dir,
                      reed_error *err) {
    *out = NULL;
    reed_quality *q = calloc(1, sizeof *q);
    if (!q) return reed_errorf(err, "out of memory");
    if (weights) snprintf(q->path, sizeof q->path, "%s", weights);
    else evaluator_default_weights(q->path, sizeof q->path);
    const size_t D = EVAL_DIM;
    q->mu_test = malloc(sizeof(double) * D);
    q->mu = malloc(sizeof(double) * D);
    q->cov_test = malloc(sizeof(double) * D * D);
    q->cov = malloc(sizeof(double) * D * D);
    int rc = q->mu_test && q->mu && q->cov_test && q->cov ? 0
                                                          : reed_errorf(err, "out of memory");
    if (rc == 0) rc = evaluator_load(&reed_ops_cpu, &q->e, q->path, err);
    if (rc == 0) rc = evaluator_acts_alloc(&reed_ops_cpu, &q->acts, &q->e, EVAL_BATCH, err);
    if (rc == 0) rc = test_statistics(q, data_dir, err);
    if (rc) {
        reed_quality_close(q);
        return -1;
    }
    *out = q;
    return 0;
}

void reed_quality_close(reed_quality *q) {
    if (!q) return;
    evaluator_acts_free(&q->acts);
    evaluator_free(&q->e);
    free(q->mu_test); free(q->cov_test); free(q->mu); free(q->cov);
    free(q);
}

double reed_quality_evaluator_accuracy(const reed_quality *q) { return q->e.test_accuracy; }
const char *reed_quality_evaluator_path(const reed_quality *q) { return q->path; }

/* Byte quantisation as in a PNG: b = round(clamp((x+1)·127.5)), x = b/127.5 − 1. */
static void quantise(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float b = (x[i] + 1.0f) * 127.5f;
        b = b < 0 ? 0 : b > 255 ? 255 : b;
        x[i] = rintf(b) / 127.5f - 1.0f;
    }
}

static int argmax(const float *l, int k) {
    int best = 0;
    for (int j = 1; j < k; j++)
        if (l[j] > l[best]) best = j;
    return best;
}

/* Chunks hold a multiple of 10 samples, so sample i keeps class i mod 10. */
static int draw_all(reed_run *run, const reed_sample_config *sc, int n, float *x,
                    reed_error *err) {
    const size_t img = (size_t)EVAL_IMAGE * EVAL_IMAGE;
    for (int i = 0, c = 0; i < n; i += REED_QUALITY_CHUNK, c++) {
        reed_sample_config chunk = *sc;
        chunk.n = n - i < REED_QUALITY_CHUNK ? n - i : REED_QUALITY_CHUNK;
        chunk.class_label = -1;
        chunk.seed = sc->seed + (uint64_t)c;
        if (reed_run_sample_images(run, &chunk, x + (size_t)i * img, err)) return -1;
    }
    quantise(x, (size_t)n * img);
    return 0;
}

int reed_quality_measure(reed_quality *q, reed_run *run, const reed_sample_config *sc,
                         int n, reed_quality_result *r, reed_error *err) {
    const reed_config *cfg = reed_run_config(run);
    if (cfg->model.in_channels != 1 || cfg->model.image_size != EVAL_IMAGE ||
        cfg->model.num_classes != EVAL_CLASSES)
        return reed_errorf(err, "the evaluator scores 1x28x28 samples of 10 classes "
                           "(this model: %dx%dx%d, %d classes)", cfg->model.in_channels,
                           cfg->model.image_size, cfg->model.image_size,
                           cfg->model.num_classes);
    if (n < 2) return reed_errorf(err, "quality: n must be at least 2 (got %d)", n);
    float *x = malloc(sizeof(float) * (size_t)n * EVAL_IMAGE * EVAL_IMAGE);
    float *f = malloc(sizeof(float) * (size_t)n * EVAL_DIM);
    float *logits = malloc(sizeof(float) * (size_t)n * EVAL_CLASSES);
    int rc = x && f && logits ? 0 : reed_errorf(err, "out of memory for %d samples", n);
    if (rc == 0) rc = draw_all(run, sc, n, x, err);
    if (rc == 0) {
        evaluator_features(&reed_ops_cpu, &q->e, &q->acts, x, n, f, logits);
        rc = frechet_stats(f, n, EVAL_DIM, q->mu, q->cov, err);
    }
    if (rc == 0) {
        int hits = 0;
        for (int i = 0; i < n; i++)
            hits += argmax(logits + (size_t)i * EVAL_CLASSES, EVAL_CLASSES) == i % EVAL_CLASSES;
        r->n = n;
        r->fd = frechet_distance(q->mu, q->cov, q->mu_test, q->cov_test, EVAL_DIM);
        r->cond_acc = (double)hits / n;
    }
    free(x); free(f); free(logits);
    return rc;
}
