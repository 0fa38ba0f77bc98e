/* The shipped evaluator (assets/evaluator.safetensors):
 *  - loads; its metadata states the format, this build's architecture
 *    (different from the teacher's) and a seed different from the teacher's;
 *  - on ALL 10,000 Fashion-MNIST test images it reaches its stated test
 *    accuracy within 0.5 points, and at least 85%;
 *  - the Fréchet distance of its features between the first and the last
 *    5,000 test images is small, and between test images and uniform-noise
 *    images large (both printed);
 *  - a teacher file is refused as an evaluator, with a message naming it.
 * Skips (exit 77) when the Fashion-MNIST test split is not installed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evaluator.h"
#include "formats.h"
#include "frechet.h"
#include "ops.h"
#include "rng.h"
#include "teacher.h"
#include "check.h"

#define DATA_DIR "/usr/share/datasets/fashion-mnist"
#define MIN_ACCURACY 0.875
#define MAX_GAP 0.005

static const reed_ops *ops = &reed_ops_cpu;

static double fd_of(const float *fa, int na, const float *fb, int nb) {
    enum { D = EVAL_DIM };
    static double m1[D], m2[D], c1[D * D], c2[D * D];
    reed_error err = {{0}};
    if (frechet_stats(fa, na, D, m1, c1, &err) || frechet_stats(fb, nb, D, m2, c2, &err)) {
        printf("frechet_stats: %s\n", err.msg);
        return NAN;
    }
    return frechet_distance(m1, c1, m2, c2, D);
}

int main(void) {
    if (access(DATA_DIR "/t10k-images-idx3-ubyte.gz", R_OK) != 0) {
        printf("skip: %s not installed\n", DATA_DIR);
        return 77;
    }
    char path[8192];
    evaluator_default_weights(path, sizeof path);
    evaluator_model e;
    cnn_split s = {0};
    evaluator_acts acts = {0};
    reed_error err = {{0}};
    int rc = evaluator_load(ops, &e, path, &err);
    check(rc == 0, "evaluator_load %s %s", path, rc ? err.msg : "");
    if (rc) return 1;
    char tpath[8192];
    teacher_default_weights(tpath, sizeof tpath);
    teacher_model t;
    if (teacher_load(ops, &t, tpath, &err) == 0) {
        check(e.seed != t.seed && strcmp(evaluator_architecture(), teacher_architecture()) != 0,
              "evaluator seed %llu differs from the teacher's %llu; so does the architecture",
              (unsigned long long)e.seed, (unsigned long long)t.seed);
        teacher_free(&t);
    } else {
        check(0, "teacher_load %s: %s", tpath, err.msg);
    }
    rc = cnn_split_load(&s, DATA_DIR, "t10k", &err) ||
         evaluator_acts_alloc(ops, &acts, &e, 500, &err);
    check(rc == 0, "test split and activations %s", rc ? err.msg : "");
    if (rc) return 1;
    double acc = cnn_evaluate(ops, &e, &acts, &s, 0, NULL);
    check(acc >= MIN_ACCURACY && fabs(acc - e.test_accuracy) <= MAX_GAP,
          "test accuracy %.2f%% on %d images; stated %.2f%% (need >= %.0f%%, within %.1f points)",
          100 * acc, s.N, 100 * e.test_accuracy, 100 * MIN_ACCURACY, 100 * MAX_GAP);

    const int N = s.N, H = N / 2;
    const size_t img = (size_t)EVAL_IMAGE * EVAL_IMAGE;
    float *f = malloc(sizeof(float) * (size_t)N * EVAL_DIM);
    float *noise = malloc(sizeof(float) * (size_t)H * img);
    float *fn = malloc(sizeof(float) * (size_t)H * EVAL_DIM);
    evaluator_features(ops, &e, &acts, s.images, N, f, NULL);
    double halves = fd_of(f, H, f + (size_t)H * EVAL_DIM, N - H);
    rng_uniform(noise, (size_t)H * img, 12345, 0, REED_STREAM_NOISE);
    for (size_t i = 0; i < (size_t)H * img; i++) noise[i] = 2.0f * noise[i] - 1.0f;
    evaluator_features(ops, &e, &acts, noise, H, fn, NULL);
    double vs_noise = fd_of(f, N, fn, H);
    double self = fd_of(f, N, f, N);
    printf("FD test[0:5000] vs test[5000:10000] %.4f; FD test vs uniform noise %.4f; "
           "FD test vs itself %.2e\n", halves, vs_noise, self);
    check(isfinite(halves) && halves >= 0 && halves < 0.02 * vs_noise,
          "FD of the test halves %.4f is small (< 2%% of FD vs noise %.4f)", halves, vs_noise);
    check(isfinite(vs_noise) && vs_noise > 50 * (halves + 1e-3),
          "FD of test vs uniform noise %.4f is large (> 50x the halves' %.4f)", vs_noise, halves);
    check(self < 1e-6 * (1 + halves), "FD of the test features with themselves %.2e", self);

    // A teacher file is not an evaluator.
    evaluator_model bad;
    rc = evaluator_load(ops, &bad, tpath, &err);
    check(rc != 0 && strstr(err.msg, tpath) != NULL, "teacher weights refused: %s", err.msg);

    free(f);
    free(noise);
    free(fn);
    evaluator_acts_free(&acts);
    cnn_split_free(&s);
    evaluator_free(&e);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
