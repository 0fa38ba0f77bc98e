/* The teacher encoder for the default data (DESIGN.md §4): a small CNN
 * trained on Fashion-MNIST labels whose 7×7 feature map is a token-level
 * representation target (T = 49, D = 64) and whose pooled embedding a
 * global one (D = 64). Frozen during diffusion training.
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
 * All math goes through a reed_ops table. Gradient contract:
 * teacher_backward ADDS into the gradient block; callers zero it. */
#ifndef REED_TEACHER_H
#define REED_TEACHER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "ops.h"

enum {
    TEACHER_CONVS = 4,
    TEACHER_IMAGE = 28,      /* input side */
    TEACHER_CLASSES = 10,
    TEACHER_GRID = 7,        /* side of the token map */
    TEACHER_TOKENS = 49,     /* T = GRID² */
    TEACHER_DIM = 64,        /* D: token and global feature width */
    TEACHER_TENSORS = 2 * TEACHER_CONVS + 2,
};

#define TEACHER_FORMAT "reed-teacher"
#define TEACHER_DEFAULT_WEIGHTS "assets/teacher.safetensors"

/* One named parameter tensor of the block, in forward order. */
typedef struct teacher_tensor {
    char name[32];
    int ndim;
    int shape[4];
    size_t offset, size; /* in floats, within a parameter block */
} teacher_tensor;

typedef struct teacher_model {
    int cin[TEACHER_CONVS], cout[TEACHER_CONVS], stride[TEACHER_CONVS];
    int side[TEACHER_CONVS + 1]; /* side[l]: input side of conv l+1; side[4] = 7 */
    teacher_tensor tensors[TEACHER_TENSORS];
    size_t n_params;
    float *params;               /* (n_params), owned */
    /* what the weights file states (or training measured) */
    uint64_t seed;
    int epochs;
    double test_accuracy;        /* fraction in [0, 1]; < 0 if unknown */
    char training[192];          /* how it was trained (metadata), or "" */
} teacher_model;

/* Pointers into a block of n_params floats (parameters or gradients). */
typedef struct teacher_params {
    float *conv_w[TEACHER_CONVS]; /* (cout, cin, 3, 3) */
    float *conv_b[TEACHER_CONVS]; /* (cout) */
    float *fc_w, *fc_b;           /* (10, 64), (10) */
} teacher_params;

/* Activations of one forward pass at batch B (post-ReLU maps: the ReLU
 * mask is read from its output), plus backward buffers. */
typedef struct teacher_acts {
    int B;
    float *mem;
    float *x;                     /* (B,1,28,28) */
    float *a[TEACHER_CONVS];      /* (B,cout,s,s) after ReLU */
    float *pool;                  /* (B,64) */
    float *logits;                /* (B,10) */
    float *scratch;               /* conv scratch, the largest layer's */
    float *d_a[TEACHER_CONVS];    /* gradients of a[l] */
    float *d_pre;                 /* gradient before a ReLU, largest layer */
    float *d_pool, *d_logits;
} teacher_acts;

/* Builds the tensor table and allocates a zeroed parameter block. */
int teacher_init(teacher_model *t, reed_error *err);
void teacher_free(teacher_model *t);
/* The architecture in words (stored in the weights' metadata). */
const char *teacher_architecture(void);
void teacher_point(const teacher_model *t, teacher_params *view, float *block);
/* He-uniform convolutions, Xavier-uniform fc, zero biases, from (seed, INIT). */
void teacher_init_weights(const teacher_model *t, float *block, uint64_t seed);

int teacher_acts_alloc(teacher_acts *a, const teacher_model *t, int B,
                       int for_backward, reed_error *err);
void teacher_acts_free(teacher_acts *a);

/* Forward of B ≤ a->B images x (B,1,28,28) with parameters p; logits land
 * in a->logits, the token map in a->a[3], the embedding in a->pool. */
void teacher_forward(const reed_ops *ops, const teacher_model *t,
                     const teacher_params *p, teacher_acts *a, const float *x,
                     int B);
/* Backward from dlogits (B,10); adds into g. */
void teacher_backward(const reed_ops *ops, const teacher_model *t,
                      const teacher_params *p, const teacher_params *g,
                      teacher_acts *a, const float *dlogits, int B);

/* Features of B images with the model's own parameters: tokens (B,49,64)
 * (token = row·7 + col, channel-last) and global (B,64); either may be NULL. */
void teacher_features(const reed_ops *ops, const teacher_model *t,
                      teacher_acts *a, const float *x, int B, float *tokens,
                      float *global);

/* A labelled image split: images (N,1,28,28) in [-1, 1], labels (N). */
typedef struct teacher_split {
    int N;
    float *images;
    int *labels;
} teacher_split;

/* Loads DIR/{prefix}-images-idx3-ubyte.gz and -labels-idx1-ubyte.gz
 * (prefix "train" or "t10k"), scaled to [-1, 1]. */
int teacher_split_load(teacher_split *s, const char *dir, const char *prefix,
                       reed_error *err);
void teacher_split_free(teacher_split *s);

/* Accuracy (fraction) of the model on the first n examples of s (all if
 * n ≤ 0 or n > N), in batches of the acts' B. Also the mean loss if loss
 * is not NULL. */
double teacher_evaluate(const reed_ops *ops, const teacher_model *t,
                        teacher_acts *a, const teacher_split *s, int n,
                        double *loss);

typedef struct teacher_train_opts {
    const char *data_dir;   /* Fashion-MNIST IDX directory */
    int epochs, batch;
    uint64_t seed;
    float lr, weight_decay; /* peak lr (linear warm-up, cosine decay) */
    int warmup, log_every;
    int flip;               /* random horizontal flips (p = 0.5) */
    /* progress lines (no newline); NULL: silent */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
} teacher_train_opts;

void teacher_train_defaults(teacher_train_opts *o);
/* Trains t->params from scratch on the training split (AdamW from ops,
 * data order from the seed), evaluating on the test split after every
 * epoch; fills t->seed, epochs and test_accuracy (the last epoch's). */
int teacher_train(const reed_ops *ops, teacher_model *t,
                  const teacher_train_opts *o, reed_error *err);

/* safetensors with metadata format, architecture, seed, epochs,
 * test_accuracy, tokens "49x64", global "64". */
int teacher_save(const teacher_model *t, const char *path, reed_error *err);
/* The shipped weights: $REED_SRC/assets/teacher.safetensors when REED_SRC
 * is set, else ./assets/..., else next to the executable (<exe dir>/../assets,
 * <exe dir>/../../assets); the plain relative path when none exists. */
void teacher_default_weights(char *out, size_t cap);

/* Copies the named tensors of a table from an opened safetensors file into
 * params, checking every shape; errors name the file and the tensor. */
struct st_file;
int teacher_tensors_read(const struct st_file *f, const char *path,
                         const teacher_tensor *tensors, int n, float *params,
                         reed_error *err);

/* Initialises t and loads the weights; checks format, architecture and
 * every tensor's shape; errors name the file. */
int teacher_load(teacher_model *t, const char *path, reed_error *err);

#endif
