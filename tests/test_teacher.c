/* The shipped teacher weights (assets/teacher.safetensors):
 *  - load, and their metadata states the format, the architecture of this
 *    build, seed, epochs, test accuracy and the feature shapes;
 *  - evaluated here on ALL 10,000 Fashion-MNIST test images, they reach at
 *    least 90% and within 0.5 points of the stated accuracy;
 *  - features have the documented shapes and layout (tokens (B,49,64) with
 *    token = row·7 + col, channel-last; global (B,64) = their mean);
 *  - a truncated file, a garbage file and a safetensors file that is not a
 *    teacher fail with a message naming the file.
 * Skips (exit 77) when the Fashion-MNIST test split is not installed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "formats.h"
#include "ops.h"
#include "teacher.h"
#include "check.h"

#define DATA_DIR "/usr/share/datasets/fashion-mnist"
#define MIN_ACCURACY 0.90
#define MAX_GAP 0.005

static const reed_ops *ops = &reed_ops_cpu;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void check_metadata(const char *path) {
    reed_error err = {{0}};
    st_file *f = st_open(path, &err);
    check(f != NULL, "st_open %s %s", path, f ? "" : err.msg);
    if (!f) return;
    const char *v;
    v = st_meta_get(f, "format");
    check(v && !strcmp(v, TEACHER_FORMAT), "metadata format = %s", v ? v : "(none)");
    v = st_meta_get(f, "architecture");
    check(v && !strcmp(v, teacher_architecture()), "metadata architecture = %s",
          v ? v : "(none)");
    v = st_meta_get(f, "seed");
    check(v && *v, "metadata seed = %s", v ? v : "(none)");
    v = st_meta_get(f, "epochs");
    check(v && atoi(v) >= 1, "metadata epochs = %s", v ? v : "(none)");
    v = st_meta_get(f, "test_accuracy");
    check(v && strtod(v, NULL) > 0 && strtod(v, NULL) <= 1, "metadata test_accuracy = %s",
          v ? v : "(none)");
    v = st_meta_get(f, "tokens");
    check(v && !strcmp(v, "49x64"), "metadata tokens = %s", v ? v : "(none)");
    v = st_meta_get(f, "global");
    check(v && !strcmp(v, "64"), "metadata global = %s", v ? v : "(none)");
    st_close(f);
}

static void check_accuracy(const teacher_model *t) {
    cnn_split s;
    teacher_acts a;
    reed_error err = {{0}};
    if (cnn_split_load(&s, DATA_DIR, "t10k", &err)) {
        printf("skip: %s\n", err.msg);
        exit(77);
    }
    int ok = teacher_acts_alloc(ops, &a, t, 500, &err) == 0;
    check(ok, "activations for batch 500 %s", ok ? "" : err.msg);
    if (!ok) return;
    double t0 = now_s(), loss;
    double acc = cnn_evaluate(ops, t, &a, &s, 0, &loss);
    printf("evaluated on all %d test images (not a subset) in %.1fs: accuracy %.2f%%, "
           "loss %.4f; stated %.2f%%\n", s.N, now_s() - t0, 100 * acc, loss,
           100 * t->test_accuracy);
    check(s.N == 10000, "test split has %d images", s.N);
    check(acc >= MIN_ACCURACY, "test accuracy %.2f%% >= %.0f%%", 100 * acc,
          100 * MIN_ACCURACY);
    check(fabs(acc - t->test_accuracy) <= MAX_GAP,
          "measured %.2f%% within 0.5 points of the stated %.2f%%", 100 * acc,
          100 * t->test_accuracy);

    // features of 3 images: layout and consistency with the pooled embedding;
    // inputs and outputs in backend memory, the map downloaded to compare
    enum { NB = 3, NT = NB * TEACHER_TOKENS * TEACHER_DIM, NG = NB * TEACHER_DIM };
    float *tok = malloc(sizeof(float) * NT), *map = malloc(sizeof(float) * NT);
    float *glob = malloc(sizeof(float) * NG);
    float *x_dev = ops->mem_alloc(sizeof(float) * NB * TEACHER_IMAGE * TEACHER_IMAGE);
    float *tok_dev = ops->mem_alloc(sizeof(float) * NT);
    float *glob_dev = ops->mem_alloc(sizeof(float) * NG);
    for (int i = 0; i < NT; i++) tok[i] = NAN;
    for (int i = 0; i < NG; i++) glob[i] = NAN;
    ops->upload(tok_dev, tok, sizeof(float) * NT);
    ops->upload(glob_dev, glob, sizeof(float) * NG);
    ops->upload(x_dev, s.images, sizeof(float) * NB * TEACHER_IMAGE * TEACHER_IMAGE);
    teacher_features(ops, t, &a, x_dev, NB, tok_dev, glob_dev);
    ops->download(tok, tok_dev, sizeof(float) * NT);
    ops->download(glob, glob_dev, sizeof(float) * NG);
    ops->download(map, a.a[TEACHER_CONVS - 1], sizeof(float) * NT);
    check(TEACHER_TOKENS == 49 && TEACHER_DIM == 64 && TEACHER_GRID * TEACHER_GRID == 49,
          "feature shapes tokens (B, %d, %d), global (B, %d)", TEACHER_TOKENS, TEACHER_DIM,
          TEACHER_DIM);
    double layout = 0, mean_err = 0;
    int nonzero = 0;
    for (int b = 0; b < NB; b++)
        for (int c = 0; c < TEACHER_DIM; c++) {
            double m = 0;
            for (int k = 0; k < TEACHER_TOKENS; k++) {
                float v = tok[((size_t)b * TEACHER_TOKENS + k) * TEACHER_DIM + c];
                float w = map[((size_t)b * TEACHER_DIM + c) * TEACHER_TOKENS + k];
                layout = fmax(layout, isfinite(v) ? fabs(v - w) : INFINITY);
                m += v;
                nonzero += v != 0;
            }
            double g = glob[b * TEACHER_DIM + c];
            mean_err = fmax(mean_err, isfinite(g) ? fabs(m / TEACHER_TOKENS - g) : INFINITY);
        }
    check(layout == 0, "tokens are the 7x7 map, channel-last (max diff %.3g)", layout);
    check(mean_err < 1e-5, "global = mean of the tokens (max diff %.3g)", mean_err);
    check(nonzero > 0, "features are not all zero (%d non-zero token values)", nonzero);
    free(tok);
    free(map);
    free(glob);
    ops->mem_free(x_dev);
    ops->mem_free(tok_dev);
    ops->mem_free(glob_dev);
    teacher_acts_free(&a);
    cnn_split_free(&s);
}

/* teacher_load must fail on PATH with a message that names it. */
static void expect_fail(const char *path, const char *what) {
    teacher_model t;
    reed_error err = {{0}};
    int rc = teacher_load(ops, &t, path, &err);
    check(rc != 0 && strstr(err.msg, path) != NULL, "%s: rejected naming the file (%s)",
          what, err.msg);
    if (rc == 0) teacher_free(&t);
}

static void check_bad_files(const char *good) {
    char path[256];
    reed_error err = {{0}};
    uint8_t *data = NULL;
    size_t len = 0;
    if (read_file_all(good, &data, &len, &err)) return;
    snprintf(path, sizeof path, "/tmp/reed_test_teacher_%d.safetensors", (int)getpid());
    // truncated: the first half of the real file
    write_file_atomic(path, data, len / 2, &err);
    expect_fail(path, "truncated teacher file");
    // garbage: bytes that are no safetensors
    for (size_t i = 0; i < len; i++) data[i] = (uint8_t)(i * 131u + 7u);
    write_file_atomic(path, data, len, &err);
    expect_fail(path, "garbage teacher file");
    // a valid safetensors file that is not a teacher
    float w[4] = {1, 2, 3, 4};
    st_tensor ts = {"weight", 1, {4}, w};
    st_meta meta = {"format", "something-else"};
    st_write(path, &ts, 1, &meta, 1, &err);
    expect_fail(path, "safetensors file of another format");
    unlink(path);
    free(data);
}

int main(void) {
    reed_cpu_set_threads(0);
    char path[4096];
    const char *src = getenv("REED_SRC");
    snprintf(path, sizeof path, "%s%s%s", src && *src ? src : "", src && *src ? "/" : "",
             TEACHER_DEFAULT_WEIGHTS);
    teacher_model t;
    reed_error err = {{0}};
    int ok = teacher_load(ops, &t, path, &err) == 0;
    check(ok, "load %s %s", path, ok ? "" : err.msg);
    if (!ok) return 1;
    check(t.n_params < 1000000 / 4, "%zu parameters (< 1 MB as float32)", t.n_params);
    check_metadata(path);
    check_accuracy(&t);
    check_bad_files(path);
    teacher_free(&t);
    printf("%d/%d checks ok\n", checks - failures, checks);
    return failures ? 1 : 0;
}
