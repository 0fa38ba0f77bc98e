/* The teacher CNN (see teacher.h): its architecture and its features; the
 * rest is cnn.c. */
#include "teacher.h"

const cnn_arch teacher_arch = {
    .name = "teacher",
    .a_name = "a teacher",
    .format = TEACHER_FORMAT,
    .description = "conv1 3x3 1->16 s1 p1 relu; conv2 3x3 16->32 s2 p1 relu; "
                   "conv3 3x3 32->64 s2 p1 relu; conv4 3x3 64->64 s1 p1 relu (tokens 7x7x64); "
                   "global avgpool (global 64); fc 64->10; input 1x28x28 in [-1,1] "
                   "(pixel/127.5-1)",
    .weights = TEACHER_DEFAULT_WEIGHTS,
    .n_convs = TEACHER_CONVS,
    .conv = {{1, 16, 3, 1, 1}, {16, 32, 3, 2, 1}, {32, 64, 3, 2, 1}, {64, 64, 3, 1, 1}},
    .n_meta = 2,
    .meta = {{"tokens", "49x64"}, {"global", "64"}},
};

const char *teacher_architecture(void) { return teacher_arch.description; }

void teacher_train_defaults(cnn_train_opts *o) { cnn_train_defaults(o); }

int teacher_load(const reed_ops *ops, teacher_model *t, const char *path, reed_error *err) {
    return cnn_load(ops, t, &teacher_arch, path, err);
}

void teacher_free(teacher_model *t) { cnn_free(t); }

int teacher_acts_alloc(const reed_ops *ops, teacher_acts *a, const teacher_model *t, int B,
                       reed_error *err) {
    return cnn_acts_alloc(ops, a, t, B, 0, err);
}

void teacher_acts_free(teacher_acts *a) { cnn_acts_free(a); }

void teacher_features(const reed_ops *ops, const teacher_model *t, teacher_acts *a,
                      const float *x, int B, float *tokens, float *global) {
    cnn_forward(ops, t, a, x, B);
    // (B, D, 7, 7) → (B, 49, D): patchify with p = 1 is that transpose.
    if (tokens)
        ops->patchify(tokens, a->a[TEACHER_CONVS - 1], B, TEACHER_DIM, TEACHER_GRID, 1);
    if (global) ops->copy(global, a->pool, sizeof(float) * (size_t)B * TEACHER_DIM);
}

void teacher_default_weights(char *out, size_t cap) {
    cnn_default_weights(&teacher_arch, out, cap);
}
