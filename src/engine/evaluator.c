/* The evaluator CNN (see evaluator.h): its architecture, its defaults and
 * its features; the rest is cnn.c. */
#include "evaluator.h"

const cnn_arch evaluator_arch = {
    .name = "evaluator",
    .a_name = "an evaluator",
    .format = EVALUATOR_FORMAT,
    .description = "conv1 5x5 1->16 s2 p2 relu; conv2 3x3 16->32 s2 p1 relu; "
                   "conv3 3x3 32->64 s1 p1 relu; global avgpool (features 64); fc 64->10; "
                   "input 1x28x28 in [-1,1] (pixel/127.5-1)",
    .weights = EVALUATOR_DEFAULT_WEIGHTS,
    .n_convs = EVAL_CONVS,
    .conv = {{1, 16, 5, 2, 2}, {16, 32, 3, 2, 1}, {32, 64, 3, 1, 1}},
    .n_meta = 1,
    .meta = {{"features", "64"}},
};

const char *evaluator_architecture(void) { return evaluator_arch.description; }

void evaluator_train_defaults(cnn_train_opts *o) {
    cnn_train_defaults(o);
    o->seed = EVALUATOR_SEED;
    o->epochs = 4;
    o->batch = 128;
    o->log_every = 100;
}

int evaluator_load(const reed_ops *ops, evaluator_model *e, const char *path,
                   reed_error *err) {
    return cnn_load(ops, e, &evaluator_arch, path, err);
}

void evaluator_free(evaluator_model *e) { cnn_free(e); }

int evaluator_acts_alloc(const reed_ops *ops, evaluator_acts *a, const evaluator_model *e,
                         int B, reed_error *err) {
    return cnn_acts_alloc(ops, a, e, B, 0, err);
}

void evaluator_acts_free(evaluator_acts *a) { cnn_acts_free(a); }

void evaluator_features(const reed_ops *ops, const evaluator_model *e, evaluator_acts *a,
                        const float *x, int N, float *features, float *logits) {
    const size_t img = (size_t)EVAL_IMAGE * EVAL_IMAGE;
    for (int i = 0; i < N; i += a->B) {
        int B = N - i < a->B ? N - i : a->B;
        ops->upload(a->x, x + (size_t)i * img, sizeof(float) * B * img);
        cnn_forward(ops, e, a, a->x, B);
        if (features)
            ops->download(features + (size_t)i * EVAL_DIM, a->pool,
                          sizeof(float) * (size_t)B * EVAL_DIM);
        if (logits)
            ops->download(logits + (size_t)i * EVAL_CLASSES, a->logits,
                          sizeof(float) * (size_t)B * EVAL_CLASSES);
    }
}

void evaluator_default_weights(char *out, size_t cap) {
    cnn_default_weights(&evaluator_arch, out, cap);
}
