/* The teacher encoder for the default data (DESIGN.md §4): a small CNN
 * (cnn.h) trained on Fashion-MNIST labels whose 7×7 feature map is a
 * token-level representation target (T = 49, D = 64) and whose pooled
 * embedding a global one (D = 64). Frozen during diffusion training.
 *
 *   x (B,1,28,28) in [-1, 1]  (pixel/127.5 − 1, as the diffusion data)
 *   conv1 3×3 1→16  s1 p1 + ReLU   (B,16,28,28)
 *   conv2 3×3 16→32 s2 p1 + ReLU   (B,32,14,14)
 *   conv3 3×3 32→64 s2 p1 + ReLU   (B,64,7,7)
 *   conv4 3×3 64→64 s1 p1 + ReLU   (B,64,7,7)    → tokens (B,49,64)
 * (3.7 M multiply-adds per image, half of a 32/32/64/64-channel stack with
 * the work at 14×14, so training fits a few minutes on a shared 2-core
 * machine; the last layer at 7×7 gives each token a 17×17 receptive field.)
 *   global average pool            (B,64)        → global (B,64)
 *   fc 64→10                       (B,10) logits
 *
 * Training, evaluation and saving are cnn_train, cnn_evaluate and cnn_save;
 * the weights, activations and features live in backend memory (cnn.h). */
#ifndef REED_TEACHER_H
#define REED_TEACHER_H

#include <stddef.h>

#include "cnn.h"
#include "error.h"
#include "ops.h"

enum {
    TEACHER_CONVS = 4,
    TEACHER_IMAGE = CNN_IMAGE,      /* input side */
    TEACHER_CLASSES = CNN_CLASSES,
    TEACHER_GRID = 7,               /* side of the token map */
    TEACHER_TOKENS = 49,            /* T = GRID² */
    TEACHER_DIM = 64,               /* D: token and global feature width */
};

#define TEACHER_FORMAT "reed-teacher"
#define TEACHER_DEFAULT_WEIGHTS "assets/teacher.safetensors"

typedef cnn_model teacher_model;
typedef cnn_acts teacher_acts;   /* a[TEACHER_CONVS - 1] is the (B,64,7,7) map */

extern const cnn_arch teacher_arch;

/* The architecture in words (the weights' metadata "architecture"). */
const char *teacher_architecture(void);
/* The teacher's training settings (cnn_train_defaults). */
void teacher_train_defaults(cnn_train_opts *o);

/* Loads teacher weights onto ops' backend (cnn_load: format, architecture
 * and every shape checked; errors name the file). */
int teacher_load(const reed_ops *ops, teacher_model *t, const char *path, reed_error *err);
void teacher_free(teacher_model *t);
/* Forward activations for batches of up to B (cnn_acts_alloc). */
int teacher_acts_alloc(const reed_ops *ops, teacher_acts *a, const teacher_model *t, int B,
                       reed_error *err);
void teacher_acts_free(teacher_acts *a);

/* Features of B ≤ a->B images with the model's own parameters, all in
 * backend memory: x (B,1,28,28) (a->x itself is fine), tokens (B,49,64)
 * (token = row·7 + col, channel-last) and global (B,64); either output may
 * be NULL. */
void teacher_features(const reed_ops *ops, const teacher_model *t, teacher_acts *a,
                      const float *x, int B, float *tokens, float *global);

/* The shipped weights: $REED_SRC/assets/teacher.safetensors when REED_SRC
 * is set, else ./assets/..., else next to the executable (<exe dir>/../assets,
 * <exe dir>/../../assets); the plain relative path when none exists. */
void teacher_default_weights(char *out, size_t cap);

#endif
