/* The resolved configuration of a run: what a Lua config file produces and
 * what a checkpoint stores in its metadata. Plain data, no pointers, so it
 * can be copied, compared and edited between steps. */
#ifndef REED_CONFIG_H
#define REED_CONFIG_H

#include <stdint.h>

#include "error.h"

enum { REED_MAX_SOURCES = 8, REED_NAME_LEN = 64, REED_PATH_LEN = 1024 };

typedef enum { REED_PATH_LINEAR, REED_PATH_COSINE } reed_path_kind;
typedef enum { REED_TIME_UNIFORM, REED_TIME_LOGNORMAL } reed_time_kind;
typedef enum { REED_SOURCE_TOKEN, REED_SOURCE_GLOBAL } reed_source_kind;
typedef enum {
    REED_WEIGHT_CONSTANT, /* w(t) = 1 */
    REED_WEIGHT_LINEAR,   /* 1 - t */
    REED_WEIGHT_COSINE,   /* (1 + cos πt)/2 */
    REED_WEIGHT_SIGMOID,  /* 1/(1 + e^{10(t-0.5)}) */
    REED_WEIGHT_CUTOFF,   /* 1 on [cutoff_lo, cutoff_hi], else 0 */
} reed_weighting;
typedef enum { REED_DECAY_CONSTANT, REED_DECAY_LINEAR, REED_DECAY_COSINE } reed_decay;
typedef enum { REED_SAMPLER_EULER, REED_SAMPLER_HEUN, REED_SAMPLER_SDE } reed_sampler;
typedef enum { REED_RESAMPLE_AREA, REED_RESAMPLE_BILINEAR } reed_resample;
typedef enum {
    REED_DEVICE_AUTO,  /* CUDA when a GPU is usable, else the CPU (with a message) */
    REED_DEVICE_CPU,
    REED_DEVICE_CUDA,
} reed_device;
typedef enum {
    REED_PRECISION_FP32, /* fp32 everywhere (parity with the CPU) */
    REED_PRECISION_BF16, /* CUDA: bf16 tensor-core matmuls, fp32 master weights and state */
} reed_precision;
typedef enum {
    REED_FROM_FILE,    /* targets precomputed in an .npy file */
    REED_FROM_TEACHER, /* the frozen teacher's features of each batch */
} reed_source_from;

typedef struct reed_model_config {
    char preset[REED_NAME_LEN]; /* tiny, small, sitS, S/2, B/4, ... or custom */
    int hidden, depth, heads, patch;
    int in_channels, image_size, num_classes;
    int mlp_ratio;              /* 4 in SiT */
    float class_dropout;        /* label dropout p (null class = num_classes) */
} reed_model_config;

typedef struct reed_source_config {
    char name[REED_NAME_LEN];
    reed_source_kind kind;
    reed_source_from from;
    char file[REED_PATH_LEN];   /* .npy: (N,T,D) token-level or (N,D) global */
    int depth;                  /* tap: output of block `depth` (1-based) */
    float coeff;                /* c_k */
    reed_weighting weighting;
    float cutoff_lo, cutoff_hi;
    int projector_dim;          /* P */
    reed_resample resample;     /* when the target grid differs from the model's */
} reed_source_config;

typedef struct reed_curriculum_config {
    float proj_coeff;
    int diffusion_start;        /* s0: λ_diff = 0 before */
    int diffusion_warmup;       /* W: linear ramp length */
    reed_decay diffusion_decay; /* after the ramp: constant, linear or cosine to 0 at the last step */
    reed_decay align_decay;     /* λ_align: constant, linear or cosine over align_steps */
    int align_steps;            /* R */
} reed_curriculum_config;

typedef struct reed_data_config {
    char dataset[REED_NAME_LEN]; /* "fashion-mnist" or "npy" */
    char dir[REED_PATH_LEN];     /* fashion-mnist IDX directory */
    char images[REED_PATH_LEN];  /* npy: (N,C,H,W) */
    char labels[REED_PATH_LEN];  /* npy: (N) */
    int limit;                   /* use the first `limit` examples; 0 = all */
    char teacher[REED_PATH_LEN]; /* teacher weights for sources from = "teacher";
                                    "" = the shipped assets/teacher.safetensors */
} reed_data_config;

typedef struct reed_train_config {
    int steps, batch;
    float lr, beta1, beta2, eps, weight_decay, grad_clip, ema_decay;
    uint64_t seed;
    int threads;                 /* 0 = all cores */
    reed_device device;          /* fixed for the life of a run */
    reed_precision precision;    /* CUDA only; the CPU computes in fp32 */
    reed_path_kind path;
    reed_time_kind time_sampling;
    int log_every, sample_every, ckpt_every, keep_ckpts;
} reed_train_config;

typedef struct reed_sample_config {
    int n, steps;
    reed_sampler sampler;
    float cfg, cfg_lo, cfg_hi;   /* guidance w inside [cfg_lo, cfg_hi] of t */
    uint64_t seed;
    int ema;                     /* sample from EMA weights */
    int class_label;             /* -1: cycle through classes */
} reed_sample_config;

/* Periodic sample quality during training (issue 3): every `every` steps
 * (and at the last step) n class-balanced samples at a fixed seed are scored
 * by the evaluator; the results are the fd, fd_n and cond_acc metrics. The
 * sampler, guidance and EMA choice come from the sample section. */
typedef struct reed_eval_config {
    int every;                   /* 0 = off */
    int n, steps;
    uint64_t seed;
} reed_eval_config;

typedef struct reed_config {
    char name[REED_NAME_LEN];
    reed_model_config model;
    reed_data_config data;
    reed_train_config train;
    reed_curriculum_config curriculum;
    reed_sample_config sample;
    reed_eval_config eval;
    int n_sources;
    reed_source_config sources[REED_MAX_SOURCES];
} reed_config;

/* Fills cfg with the defaults (the `tiny` model, plain SiT, Fashion-MNIST). */
void reed_config_defaults(reed_config *cfg);
/* Sets the model fields of a named preset: tiny, small, sitS, and the
 * paper's S/2 S/4 S/8 B/2 ... XL/8 (also spelled SiT-XL/2). */
int reed_model_preset(reed_model_config *m, const char *name, reed_error *err);
/* Checks ranges and consistency (heads divide hidden, depths in range...). */
int reed_config_validate(const reed_config *cfg, reed_error *err);

/* Names of enum values, indexed by the value, for configs, metadata and
 * messages; each array ends with NULL. */
extern const char *const reed_path_names[];
extern const char *const reed_time_names[];
extern const char *const reed_source_kind_names[];
extern const char *const reed_weighting_names[];
extern const char *const reed_decay_names[];
extern const char *const reed_sampler_names[];
extern const char *const reed_resample_names[];
extern const char *const reed_source_from_names[];
extern const char *const reed_device_names[];
extern const char *const reed_precision_names[];
/* Index of s in a NULL-terminated name array; -1 when absent. */
int reed_name_index(const char *const *names, const char *s);

#endif
