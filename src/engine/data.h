/* Training data and representation targets.
 * A dataset is N images (C, S, S) scaled to [-1, 1] with integer labels.
 * A source holds one representation target per example (row i belongs to
 * example i) and gathers them, resampled to the model's token grid, for a
 * batch. */
#ifndef REED_DATA_H
#define REED_DATA_H

#include <stdint.h>

#include "config.h"
#include "formats.h"

typedef struct reed_dataset {
    int N, C, S, num_classes;
    float *images;        /* (N, C, S, S) */
    int *labels;          /* (N) */
    char description[256];
    /* the current epoch's order */
    int *perm;
    int64_t perm_epoch;
    float *shuffle_draws;  /* (N) scratch for drawing a permutation */
} reed_dataset;

/* Position in the shuffled stream of examples; saved in checkpoints. */
typedef struct reed_cursor {
    int64_t epoch;
    int64_t pos;
} reed_cursor;

int dataset_load(reed_dataset *d, const reed_data_config *cfg, reed_error *err);
void dataset_free(reed_dataset *d);

/* Takes the next B examples of the epoch-wise shuffled order (epoch e is a
 * permutation drawn from (seed, e)), advancing the cursor. Writes their
 * indices, images (B, C, S, S) and labels. */
void dataset_next_batch(reed_dataset *d, reed_cursor *cur, uint64_t seed,
                        int B, int *idx, float *x, int *y);

typedef struct reed_source {
    reed_source_config cfg;
    reed_array data;      /* (N, T_src, D) or (N, D) */
    int tokens_src;       /* T_src (1 for global) */
    int tokens;           /* the model's T (1 for global) */
    int dim;              /* D */
    float *resample;      /* (tokens, tokens_src) or NULL when the grids match */
} reed_source;

/* Loads a source's .npy and checks it against the dataset (N examples) and
 * the model's token count; errors name the file and the expected shape. */
int source_load(reed_source *s, const reed_source_config *cfg, int n_examples,
                int model_tokens, reed_error *err);
void source_free(reed_source *s);

/* The rows of examples idx on the source's own grid: out (B, tokens_src, D),
 * or (B, D) for a global source (resampling to the model's grid is the
 * backend's resample_tokens). */
void source_gather(const reed_source *s, const int *idx, int B, float *out);

/* A source whose targets are computed per batch (the teacher's features:
 * tokens_src × dim per example) instead of read from a file. */
int source_init_features(reed_source *s, const reed_source_config *cfg, int tokens_src,
                         int dim, int model_tokens, reed_error *err);

/* Resampling weights from a gs×gs grid to a g×g grid: R (g², gs²), as
 * PyTorch's F.interpolate(mode="bilinear", align_corners=False) or
 * mode="area" (adaptive average pooling). */
float *grid_resample_matrix(int gs, int g, reed_resample mode);

#endif
