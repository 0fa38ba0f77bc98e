/* The evaluator network (DESIGN.md §4, issue 3): a second Fashion-MNIST
 * classifier of a different architecture and seed than the teacher, used
 * only to measure samples (Fréchet distance of its features, accuracy on
 * class-conditional samples), never as an alignment target.
 *
 *   x (B,1,28,28) in [-1, 1]  (pixel/127.5 − 1)
 *   conv1 5×5 1→16  s2 p2 + ReLU   (B,16,14,14)
 *   conv2 3×3 16→32 s2 p1 + ReLU   (B,32,7,7)
 *   conv3 3×3 32→64 s1 p1 + ReLU   (B,64,7,7)
 *   global average pool            (B,64)  → features
 *   fc 64→10                       (B,10)  logits
 *
 * All math goes through a reed_ops table; evaluator_backward ADDS into the
 * gradient block. Test images come from teacher_split_load. */
#ifndef REED_EVALUATOR_H
#define REED_EVALUATOR_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "ops.h"
#include "teacher.h"

enum {
    EVAL_CONVS = 3,
    EVAL_IMAGE = 28,
    EVAL_CLASSES = 10,
    EVAL_GRID = 7,
    EVAL_DIM = 64,          /* feature width */
    EVAL_TENSORS = 2 * EVAL_CONVS + 2,
};

#define EVALUATOR_FORMAT "reed-evaluator"
#define EVALUATOR_DEFAULT_WEIGHTS "assets/evaluator.safetensors"
#define EVALUATOR_SEED 1

typedef struct evaluator_model {
    int cin[EVAL_CONVS], cout[EVAL_CONVS], k[EVAL_CONVS], stride[EVAL_CONVS],
        pad[EVAL_CONVS];
    int side[EVAL_CONVS + 1];
    teacher_tensor tensors[EVAL_TENSORS];
    size_t n_params;
    float *params;          /* owned */
    uint64_t seed;
    int epochs;
    double test_accuracy;   /* fraction; < 0 if unknown */
    char training[192];
} evaluator_model;

typedef struct evaluator_acts {
    int B;
    float *mem;
    float *x, *a[EVAL_CONVS], *pool, *logits, *scratch;
    float *d_a[EVAL_CONVS], *d_pre, *d_pool, *d_logits;
} evaluator_acts;

int evaluator_init(evaluator_model *e, reed_error *err);
void evaluator_free(evaluator_model *e);
const char *evaluator_architecture(void);
int evaluator_acts_alloc(evaluator_acts *a, const evaluator_model *e, int B,
                         int for_backward, reed_error *err);
void evaluator_acts_free(evaluator_acts *a);

/* Forward of B ≤ a->B images with parameters `params` (a block of
 * n_params floats); logits in a->logits, features in a->pool. */
void evaluator_forward(const reed_ops *ops, const evaluator_model *e,
                       const float *params, evaluator_acts *a, const float *x,
                       int B);
/* Backward from dlogits (B,10); adds into grads. */
void evaluator_backward(const reed_ops *ops, const evaluator_model *e,
                        const float *params, float *grads, evaluator_acts *a,
                        const float *dlogits, int B);

/* Features (N,64) and/or logits (N,10) of N images, in batches of a->B;
 * either output may be NULL. */
void evaluator_features(const reed_ops *ops, const evaluator_model *e,
                        evaluator_acts *a, const float *x, int N,
                        float *features, float *logits);
/* Accuracy (fraction) on the first n (all if n ≤ 0) examples of s. */
double evaluator_evaluate(const reed_ops *ops, const evaluator_model *e,
                          evaluator_acts *a, const teacher_split *s, int n);

/* Trains from scratch with teacher_train_opts (data_dir, epochs, batch,
 * seed, lr, weight_decay, warmup, log); fills seed, epochs, test_accuracy. */
int evaluator_train(const reed_ops *ops, evaluator_model *e,
                    const teacher_train_opts *o, reed_error *err);

int evaluator_save(const evaluator_model *e, const char *path, reed_error *err);
int evaluator_load(evaluator_model *e, const char *path, reed_error *err);
/* $REED_SRC/assets/evaluator.safetensors when REED_SRC is set, else
 * ./assets/..., else next to the executable; else the relative path. */
void evaluator_default_weights(char *out, size_t cap);

#endif
