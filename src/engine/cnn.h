/* Small sequential CNN classifiers of Fashion-MNIST: the shared part of the
 * teacher (teacher.h) and the evaluator (evaluator.h).
 *
 *   x (B,1,28,28) in [-1, 1]          (pixel/127.5 − 1, as the diffusion data)
 *   conv l: k×k cin→cout, stride, pad + ReLU, for l = 1..n_convs
 *   global average pool               (B,dim)   dim = the last conv's cout
 *   fc dim→10                         (B,10)    logits
 *
 * A network is described by a cnn_arch (its convolutions, the file format
 * name and the metadata naming its outputs); a cnn_model holds its weights.
 * All math goes through a reed_ops table. Gradient contract: cnn_backward
 * ADDS (+=) into the gradient block; callers zero it.
 *
 * Memory: parameters, activations (incl. the cross-entropy labels) and
 * training state live in the memory of the backend (ops) they were
 * allocated with, obtained from ops->mem_alloc; the model and the
 * activations remember that backend and free through it. Splits (images,
 * labels), file contents and everything a caller passes as "host" are
 * ordinary host memory; the functions below upload and download as needed.
 * On the CPU both are the same memory. */
#ifndef REED_CNN_H
#define REED_CNN_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "formats.h"
#include "ops.h"

enum {
    CNN_IMAGE = 28,   /* input side; one channel */
    CNN_CLASSES = 10,
    CNN_MAX_CONVS = 6,
    CNN_MAX_TENSORS = 2 * CNN_MAX_CONVS + 2,
    CNN_MAX_META = 2,
};

/* One convolution (PyTorch Conv2d, square kernel) followed by a ReLU. */
typedef struct cnn_conv {
    int cin, cout, k, stride, pad;
} cnn_conv;

typedef struct cnn_arch {
    const char *name;        /* "teacher": messages, "reed teacher train: ..." */
    const char *a_name;      /* "a teacher": "...: not a teacher file" */
    const char *format;      /* metadata "format" */
    const char *description; /* metadata "architecture"; a file must match it */
    const char *weights;     /* the shipped weights, "assets/teacher.safetensors" */
    int n_convs;
    cnn_conv conv[CNN_MAX_CONVS];
    int n_meta;              /* metadata naming the feature outputs, written */
    st_meta meta[CNN_MAX_META]; /* after "test_split" (e.g. tokens "49x64") */
} cnn_arch;

/* One named parameter tensor, in forward order: conv1.weight (cout,cin,k,k),
 * conv1.bias (cout), ..., fc.weight (10,dim), fc.bias (10). */
typedef struct cnn_tensor {
    char name[32];
    int ndim;
    int shape[4];
    size_t offset, size;     /* in floats, within a parameter block */
} cnn_tensor;

typedef struct cnn_model {
    const cnn_arch *arch;
    const reed_ops *ops;               /* the backend holding params */
    int side[CNN_MAX_CONVS + 1];       /* side[l]: input side of conv l+1; */
                                       /* side[n_convs]: the last map's */
    int dim;                           /* channels of the last map = pooled width */
    int n_tensors;
    cnn_tensor tensors[CNN_MAX_TENSORS];
    size_t n_params;
    float *params;                     /* (n_params) backend memory, owned */
    /* what the weights file states (or training measured) */
    uint64_t seed;
    int epochs;
    double test_accuracy;              /* fraction in [0, 1]; < 0 if unknown */
    char training[192];                /* how it was trained (metadata), or "" */
} cnn_model;

/* Activations of one forward pass at batch B, plus backward buffers; all
 * backend memory. a[l] holds conv l+1's map after the ReLU (the ReLU mask is
 * read from its output). */
typedef struct cnn_acts {
    const reed_ops *ops;               /* the backend of every buffer below */
    int B;
    float *mem;                        /* the float buffers' block, owned */
    int *labels;                       /* (B) cross-entropy labels, owned */
    float *x;                          /* (B,1,28,28) kept for conv1's backward */
    float *a[CNN_MAX_CONVS];           /* (B,cout,s,s) after ReLU */
    float *pool;                       /* (B,dim) */
    float *logits;                     /* (B,10) */
    float *scratch;                    /* conv scratch, the largest layer's */
    /* only when allocated for the backward pass: */
    float *d_a[CNN_MAX_CONVS];         /* gradients of a[l] */
    float *d_pre;                      /* gradient before a ReLU, largest layer */
    float *d_pool, *d_logits;
} cnn_acts;

/* Builds the tensor table of arch and allocates a zeroed parameter block on
 * ops' backend. */
int cnn_init(const reed_ops *ops, cnn_model *m, const cnn_arch *arch, reed_error *err);
/* Frees the parameters; a zeroed model is fine. */
void cnn_free(cnn_model *m);

/* cnn_init, then the weights of a safetensors file: checks the metadata's
 * format and architecture and every tensor's shape, reads seed, epochs,
 * test_accuracy and training; errors name the file. */
int cnn_load(const reed_ops *ops, cnn_model *m, const cnn_arch *arch, const char *path,
             reed_error *err);
/* safetensors with metadata format, architecture, seed, epochs,
 * test_accuracy, test_split, the arch's output metadata, classes, training. */
int cnn_save(const cnn_model *m, const char *path, reed_error *err);
/* The arch's shipped weights, resolved by reed_asset_path. */
void cnn_default_weights(const cnn_arch *arch, char *out, size_t cap);

/* Activations on ops' backend, which must be the model's. */
int cnn_acts_alloc(const reed_ops *ops, cnn_acts *a, const cnn_model *m, int B,
                   int for_backward, reed_error *err);
void cnn_acts_free(cnn_acts *a);   /* a zeroed one is fine */

/* Forward of B ≤ a->B images x (B,1,28,28), backend memory (a->x itself is
 * fine), with the model's parameters: a->a[], a->pool, a->logits. */
void cnn_forward(const reed_ops *ops, const cnn_model *m, cnn_acts *a, const float *x,
                 int B);
/* Backward from dlogits (B,10) (backend memory) after cnn_forward; adds
 * into grads, a block of n_params floats laid out like params. */
void cnn_backward(const reed_ops *ops, const cnn_model *m, float *grads, cnn_acts *a,
                  const float *dlogits, int B);

/* A labelled image split in host memory: images (N,1,28,28) in [-1, 1],
 * labels (N) in 0..9. */
typedef struct cnn_split {
    int N;
    float *images;
    int *labels;
} cnn_split;

/* Loads DIR/{prefix}-images-idx3-ubyte.gz and -labels-idx1-ubyte.gz
 * (prefix "train" or "t10k"), scaled to [-1, 1]. */
int cnn_split_load(cnn_split *s, const char *dir, const char *prefix, reed_error *err);
void cnn_split_free(cnn_split *s);

/* Accuracy (fraction) of the model on the first n examples of s (all if
 * n ≤ 0 or n > N), in batches of the acts' B; also the mean loss when loss
 * is not NULL. */
double cnn_evaluate(const reed_ops *ops, const cnn_model *m, cnn_acts *a, const cnn_split *s,
                    int n, double *loss);

typedef struct cnn_train_opts {
    const char *data_dir;   /* Fashion-MNIST IDX directory */
    int epochs, batch;
    uint64_t seed;
    float lr, weight_decay; /* peak lr (linear warm-up, cosine decay to 0) */
    int warmup, log_every;
    int flip;               /* random horizontal flips (p = 0.5) */
    /* progress lines (no newline); NULL: silent */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
} cnn_train_opts;

/* The teacher's settings: 6 epochs of batch 64, seed 0, AdamW lr 3e-3
 * (warm-up 100 steps) wd 1e-4, a progress line every 50 steps, no flips. */
void cnn_train_defaults(cnn_train_opts *o);
/* Trains m->params from scratch on the training split (AdamW from ops,
 * data order and initialisation from the seed), evaluating on the test
 * split after every epoch; fills m->seed, epochs, test_accuracy (the last
 * epoch's) and training. */
int cnn_train(const reed_ops *ops, cnn_model *m, const cnn_train_opts *o, reed_error *err);

#endif
