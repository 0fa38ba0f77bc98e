/* The evaluator network (DESIGN.md §4, issue 3): a second Fashion-MNIST
 * classifier (cnn.h) of a different architecture and seed than the teacher,
 * used only to measure samples (Fréchet distance of its features, accuracy
 * on class-conditional samples), never as an alignment target.
 *
 *   x (B,1,28,28) in [-1, 1]  (pixel/127.5 − 1)
 *   conv1 5×5 1→16  s2 p2 + ReLU   (B,16,14,14)
 *   conv2 3×3 16→32 s2 p1 + ReLU   (B,32,7,7)
 *   conv3 3×3 32→64 s1 p1 + ReLU   (B,64,7,7)
 *   global average pool            (B,64)  → features
 *   fc 64→10                       (B,10)  logits
 *
 * Training, evaluation and saving are cnn_train, cnn_evaluate and cnn_save;
 * the weights and activations live in backend memory (cnn.h). */
#ifndef REED_EVALUATOR_H
#define REED_EVALUATOR_H

#include <stddef.h>

#include "cnn.h"
#include "error.h"
#include "ops.h"

enum {
    EVAL_CONVS = 3,
    EVAL_IMAGE = CNN_IMAGE,
    EVAL_CLASSES = CNN_CLASSES,
    EVAL_DIM = 64,          /* feature width */
};

#define EVALUATOR_FORMAT "reed-evaluator"
#define EVALUATOR_DEFAULT_WEIGHTS "assets/evaluator.safetensors"
#define EVALUATOR_SEED 1

typedef cnn_model evaluator_model;
typedef cnn_acts evaluator_acts;

extern const cnn_arch evaluator_arch;

const char *evaluator_architecture(void);
/* The evaluator's training settings: cnn_train_defaults with seed
 * EVALUATOR_SEED, 4 epochs of batch 128, a progress line every 100 steps. */
void evaluator_train_defaults(cnn_train_opts *o);

/* Loads evaluator weights onto ops' backend (cnn_load). */
int evaluator_load(const reed_ops *ops, evaluator_model *e, const char *path,
                   reed_error *err);
void evaluator_free(evaluator_model *e);
/* Forward activations for batches of up to B (cnn_acts_alloc). */
int evaluator_acts_alloc(const reed_ops *ops, evaluator_acts *a, const evaluator_model *e,
                         int B, reed_error *err);
void evaluator_acts_free(evaluator_acts *a);

/* Features (N,64) and/or logits (N,10) of N images x (N,1,28,28), in batches
 * of a->B; either output may be NULL. x, features and logits are HOST
 * memory: each batch is uploaded into a->x and its results downloaded. */
void evaluator_features(const reed_ops *ops, const evaluator_model *e, evaluator_acts *a,
                        const float *x, int N, float *features, float *logits);

/* $REED_SRC/assets/evaluator.safetensors when REED_SRC is set, else
 * ./assets/..., else next to the executable; else the relative path. */
void evaluator_default_weights(char *out, size_t cap);

#endif
