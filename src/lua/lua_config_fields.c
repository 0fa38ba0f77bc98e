/* The config field tables: {key, type, offset} per section of reed_config. */
#include "lua_config_fields.h"

#include <string.h>

#define INT(s, k, m) {k, F_INT, offsetof(s, m), 0, NULL, NULL}
#define U64(s, k, m) {k, F_U64, offsetof(s, m), 0, NULL, NULL}
#define FLT(s, k, m) {k, F_FLOAT, offsetof(s, m), 0, NULL, NULL}
#define BOOL(s, k, m) {k, F_BOOL, offsetof(s, m), 0, NULL, NULL}
#define STR(s, k, m, t) {k, t, offsetof(s, m), sizeof(((s *)0)->m), NULL, NULL}
#define ENUM(s, k, m, n) {k, F_ENUM, offsetof(s, m), 0, n, NULL}
#define PAIR(s, k, a, b) {k, F_PAIR, offsetof(s, a), offsetof(s, b), NULL, NULL}
#define SECTION(k, m, sub) {k, F_SECTION, offsetof(reed_config, m), 0, NULL, sub}
#define END {NULL, F_INT, 0, 0, NULL, NULL}

static const field model_fields[] = {
    STR(reed_model_config, "preset", preset, F_PRESET),
    INT(reed_model_config, "hidden", hidden),
    INT(reed_model_config, "depth", depth),
    INT(reed_model_config, "heads", heads),
    INT(reed_model_config, "patch", patch),
    INT(reed_model_config, "in_channels", in_channels),
    INT(reed_model_config, "image_size", image_size),
    INT(reed_model_config, "num_classes", num_classes),
    INT(reed_model_config, "mlp_ratio", mlp_ratio),
    FLT(reed_model_config, "class_dropout", class_dropout),
    END,
};

static const field data_fields[] = {
    STR(reed_data_config, "dataset", dataset, F_STR),
    STR(reed_data_config, "dir", dir, F_PATH),
    STR(reed_data_config, "images", images, F_PATH),
    STR(reed_data_config, "labels", labels, F_PATH),
    INT(reed_data_config, "limit", limit),
    STR(reed_data_config, "teacher", teacher, F_PATH),
    END,
};

static const field train_fields[] = {
    INT(reed_train_config, "steps", steps),
    INT(reed_train_config, "batch", batch),
    FLT(reed_train_config, "lr", lr),
    PAIR(reed_train_config, "betas", beta1, beta2),
    FLT(reed_train_config, "eps", eps),
    FLT(reed_train_config, "weight_decay", weight_decay),
    FLT(reed_train_config, "grad_clip", grad_clip),
    FLT(reed_train_config, "ema_decay", ema_decay),
    U64(reed_train_config, "seed", seed),
    INT(reed_train_config, "threads", threads),
    ENUM(reed_train_config, "device", device, reed_device_names),
    ENUM(reed_train_config, "precision", precision, reed_precision_names),
    ENUM(reed_train_config, "path", path, reed_path_names),
    ENUM(reed_train_config, "time_sampling", time_sampling, reed_time_names),
    INT(reed_train_config, "log_every", log_every),
    INT(reed_train_config, "sample_every", sample_every),
    INT(reed_train_config, "ckpt_every", ckpt_every),
    INT(reed_train_config, "keep_ckpts", keep_ckpts),
    END,
};

static const field curriculum_fields[] = {
    FLT(reed_curriculum_config, "proj_coeff", proj_coeff),
    INT(reed_curriculum_config, "diffusion_start", diffusion_start),
    INT(reed_curriculum_config, "diffusion_warmup", diffusion_warmup),
    ENUM(reed_curriculum_config, "diffusion_decay", diffusion_decay, reed_decay_names),
    ENUM(reed_curriculum_config, "align_decay", align_decay, reed_decay_names),
    INT(reed_curriculum_config, "align_steps", align_steps),
    END,
};

static const field sample_fields[] = {
    INT(reed_sample_config, "n", n),
    INT(reed_sample_config, "steps", steps),
    ENUM(reed_sample_config, "sampler", sampler, reed_sampler_names),
    FLT(reed_sample_config, "cfg", cfg),
    PAIR(reed_sample_config, "cfg_interval", cfg_lo, cfg_hi),
    U64(reed_sample_config, "seed", seed),
    BOOL(reed_sample_config, "ema", ema),
    INT(reed_sample_config, "class", class_label),
    END,
};

static const field eval_fields[] = {
    INT(reed_eval_config, "every", every),
    INT(reed_eval_config, "n", n),
    INT(reed_eval_config, "steps", steps),
    U64(reed_eval_config, "seed", seed),
    END,
};

const field reed_config_source_fields[] = {
    STR(reed_source_config, "name", name, F_STR),
    ENUM(reed_source_config, "kind", kind, reed_source_kind_names),
    ENUM(reed_source_config, "from", from, reed_source_from_names),
    STR(reed_source_config, "file", file, F_PATH),
    INT(reed_source_config, "depth", depth),
    FLT(reed_source_config, "coeff", coeff),
    ENUM(reed_source_config, "weighting", weighting, reed_weighting_names),
    PAIR(reed_source_config, "cutoff", cutoff_lo, cutoff_hi),
    INT(reed_source_config, "projector_dim", projector_dim),
    ENUM(reed_source_config, "resample", resample, reed_resample_names),
    END,
};

const field reed_config_top_fields[] = {
    STR(reed_config, "name", name, F_STR),
    SECTION("model", model, model_fields),
    SECTION("data", data, data_fields),
    SECTION("train", train, train_fields),
    SECTION("curriculum", curriculum, curriculum_fields),
    SECTION("sample", sample, sample_fields),
    SECTION("eval", eval, eval_fields),
    {"sources", F_SOURCES, 0, 0, NULL, NULL},
    END,
};

_Static_assert(sizeof(reed_source_kind) == sizeof(int) &&
               sizeof(reed_weighting) == sizeof(int) &&
               sizeof(reed_resample) == sizeof(int) &&
               sizeof(reed_source_from) == sizeof(int) &&
               sizeof(reed_sampler) == sizeof(int) &&
               sizeof(reed_time_kind) == sizeof(int) &&
               sizeof(reed_device) == sizeof(int) &&
               sizeof(reed_precision) == sizeof(int),
               "enum fields are read and written as int");

const field *reed_config_find_field(const field *fields, const char *key) {
    for (const field *f = fields; f->key; f++)
        if (strcmp(f->key, key) == 0) return f;
    return NULL;
}

void reed_config_source_defaults(reed_source_config *s) {
    memset(s, 0, sizeof *s);
    s->kind = REED_SOURCE_TOKEN;
    s->coeff = 1.0f;
    s->weighting = REED_WEIGHT_CONSTANT;
    s->cutoff_lo = 0.0f;
    s->cutoff_hi = 1.0f;
    s->projector_dim = 256;
    s->resample = REED_RESAMPLE_AREA;
}
