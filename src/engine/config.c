/* Defaults, model presets, enum names and validation of the resolved config.
 * Every message from reed_config_validate starts with the dotted key it is
 * about ("train.lr: ..."), so the Lua loader can point at the line. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Order matches the enum values in config.h. */
const char *const reed_path_names[] = {"linear", "cosine", NULL};
const char *const reed_time_names[] = {"uniform", "lognormal", NULL};
const char *const reed_source_kind_names[] = {"token", "global", NULL};
const char *const reed_weighting_names[] = {"constant", "linear", "cosine",
                                            "sigmoid", "cutoff", NULL};
const char *const reed_decay_names[] = {"constant", "linear", "cosine", NULL};
const char *const reed_sampler_names[] = {"euler", "heun", "sde", NULL};
const char *const reed_resample_names[] = {"area", "bilinear", NULL};
const char *const reed_source_from_names[] = {"file", "teacher", NULL};
const char *const reed_device_names[] = {"auto", "cpu", "cuda", NULL};
const char *const reed_precision_names[] = {"fp32", "bf16", NULL};

_Static_assert(REED_RESAMPLE_AREA == 0 && REED_RESAMPLE_BILINEAR == 1,
               "reed_resample_names follows the enum order");
_Static_assert(REED_WEIGHT_CUTOFF == 4 && REED_SAMPLER_SDE == 2,
               "name arrays follow the enum order");

int reed_name_index(const char *const *names, const char *s) {
    if (!names || !s) return -1;
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0) return i;
    return -1;
}

/* --- defaults ------------------------------------------------------------ */

/* Copies a string and zeroes the rest of the buffer, so that equal configs
 * compare equal byte for byte. */
static void copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strnlen(src, cap - 1);
    memset(dst, 0, cap);
    memcpy(dst, src, n);
}

static void train_defaults(reed_train_config *t) {
    t->steps = 600;
    t->batch = 64;
    t->lr = 2e-4f;
    t->beta1 = 0.9f;
    t->beta2 = 0.999f;
    t->eps = 1e-8f;
    t->weight_decay = 0.0f;
    t->grad_clip = 1.0f;
    t->ema_decay = 0.999f;
    t->seed = 0;
    t->threads = 0;
    t->device = REED_DEVICE_AUTO;
    t->precision = REED_PRECISION_FP32;
    t->path = REED_PATH_LINEAR;
    t->time_sampling = REED_TIME_UNIFORM;
    t->log_every = 10;
    t->sample_every = 200;
    t->ckpt_every = 200;
    t->keep_ckpts = 3;
}

static void sample_defaults(reed_sample_config *s) {
    s->n = 16;
    s->steps = 50;
    s->sampler = REED_SAMPLER_EULER;
    s->cfg = 1.0f;
    s->cfg_lo = 0.0f;
    s->cfg_hi = 1.0f;
    s->seed = 0;
    s->ema = 1;
    s->class_label = -1;
}

void reed_config_defaults(reed_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    copy_str(cfg->name, sizeof cfg->name, "run");
    reed_model_preset(&cfg->model, "tiny", NULL);
    cfg->model.class_dropout = 0.1f;
    copy_str(cfg->data.dataset, sizeof cfg->data.dataset, "fashion-mnist");
    copy_str(cfg->data.dir, sizeof cfg->data.dir,
             "/usr/share/datasets/fashion-mnist");
    cfg->data.limit = 0;
    train_defaults(&cfg->train);
    cfg->curriculum.proj_coeff = 0.5f;
    cfg->curriculum.diffusion_start = 0;
    cfg->curriculum.diffusion_warmup = 0;
    cfg->curriculum.diffusion_decay = REED_DECAY_CONSTANT;
    cfg->curriculum.align_decay = REED_DECAY_CONSTANT;
    cfg->curriculum.align_steps = 0;
    sample_defaults(&cfg->sample);
    cfg->eval = (reed_eval_config){.every = 0, .n = 200, .steps = 20, .seed = 0};
    cfg->n_sources = 0;
}

/* --- model presets ----------------------------------------------------------- */

typedef struct model_shape {
    const char *name;
    int hidden, depth, heads;
} model_shape;

/* Small presets for 28x28 single-channel data (Fashion-MNIST). */
static const struct {
    const char *name;
    int hidden, depth, heads, patch;
} small_presets[] = {
    {"tiny", 128, 4, 4, 4},
    {"small", 256, 8, 4, 2},
    {"sitS", 384, 12, 6, 2},
};

/* The paper's SiT sizes, on 32x32x4 latents (256 px images), 1000 classes. */
static const model_shape paper_sizes[] = {
    {"S", 384, 12, 6},
    {"B", 768, 12, 12},
    {"L", 1024, 24, 16},
    {"XL", 1152, 28, 16},
};

static void set_shape(reed_model_config *m, const char *name, int hidden,
                      int depth, int heads, int patch) {
    copy_str(m->preset, sizeof m->preset, name);
    m->hidden = hidden;
    m->depth = depth;
    m->heads = heads;
    m->patch = patch;
    m->mlp_ratio = 4;
}

/* The patch of a paper preset: exactly "2", "4" or "8"; 0 otherwise. */
static int preset_patch(const char *s) {
    if ((s[0] == '2' || s[0] == '4' || s[0] == '8') && s[1] == '\0')
        return s[0] - '0';
    return 0;
}

/* "S/2", "SiT-XL/4": size and patch of a paper preset; 0 when not one. */
static int paper_preset(reed_model_config *m, const char *name) {
    const char *s = strncmp(name, "SiT-", 4) == 0 ? name + 4 : name;
    const char *slash = strchr(s, '/');
    if (!slash) return 0;
    int patch = preset_patch(slash + 1);
    if (patch == 0) return 0;
    size_t n = (size_t)(slash - s);
    for (size_t i = 0; i < sizeof paper_sizes / sizeof paper_sizes[0]; i++) {
        const model_shape *p = &paper_sizes[i];
        if (strlen(p->name) != n || strncmp(p->name, s, n) != 0) continue;
        set_shape(m, name, p->hidden, p->depth, p->heads, patch);
        m->in_channels = 4;
        m->image_size = 32;
        m->num_classes = 1000;
        return 1;
    }
    return 0;
}

int reed_model_preset(reed_model_config *m, const char *name, reed_error *err) {
    if (!name) return reed_errorf(err, "no model preset name");
    for (size_t i = 0; i < sizeof small_presets / sizeof small_presets[0]; i++) {
        if (strcmp(small_presets[i].name, name) != 0) continue;
        set_shape(m, name, small_presets[i].hidden, small_presets[i].depth,
                  small_presets[i].heads, small_presets[i].patch);
        m->in_channels = 1;
        m->image_size = 28;
        m->num_classes = 10;
        return 0;
    }
    if (strlen(name) < sizeof m->preset && paper_preset(m, name)) return 0;
    return reed_errorf(err,
                       "unknown model preset '%s' (expected tiny, small, sitS, "
                       "or S, B, L, XL with patch 2, 4 or 8, e.g. S/2, "
                       "SiT-XL/2)", name);
}

/* --- validation -------------------------------------------------------------- */

/* The allowed range of a numeric field. */
typedef enum {
    RANGE_POS,       /* > 0 */
    RANGE_NONNEG,    /* >= 0 */
    RANGE_UNIT_OPEN, /* [0, 1) */
    RANGE_UNIT,      /* [0, 1] */
} range_kind;

static const char *const range_text[] = {"> 0", ">= 0", "in [0, 1)", "in [0, 1]"};

static int in_range(double v, range_kind r) {
    switch (r) {
    case RANGE_POS: return v > 0;
    case RANGE_NONNEG: return v >= 0;
    case RANGE_UNIT_OPEN: return v >= 0 && v < 1;
    case RANGE_UNIT: return v >= 0 && v <= 1;
    }
    return 0;
}

/* A field of reed_config (offset into the whole struct) and its range. */
typedef struct range_rule {
    const char *key;
    size_t off;
    range_kind range;
} range_rule;

#define RULE(key, member, range) {key, offsetof(reed_config, member), range}

static const range_rule int_rules[] = {
    RULE("model.hidden", model.hidden, RANGE_POS),
    RULE("model.depth", model.depth, RANGE_POS),
    RULE("model.heads", model.heads, RANGE_POS),
    RULE("model.patch", model.patch, RANGE_POS),
    RULE("model.in_channels", model.in_channels, RANGE_POS),
    RULE("model.image_size", model.image_size, RANGE_POS),
    RULE("model.num_classes", model.num_classes, RANGE_POS),
    RULE("model.mlp_ratio", model.mlp_ratio, RANGE_POS),
    RULE("data.limit", data.limit, RANGE_NONNEG),
    RULE("train.steps", train.steps, RANGE_POS),
    RULE("train.batch", train.batch, RANGE_POS),
    RULE("train.threads", train.threads, RANGE_NONNEG),
    RULE("train.log_every", train.log_every, RANGE_POS),
    RULE("train.sample_every", train.sample_every, RANGE_NONNEG),
    RULE("train.ckpt_every", train.ckpt_every, RANGE_NONNEG),
    RULE("train.keep_ckpts", train.keep_ckpts, RANGE_NONNEG),
    RULE("curriculum.diffusion_start", curriculum.diffusion_start, RANGE_NONNEG),
    RULE("curriculum.diffusion_warmup", curriculum.diffusion_warmup, RANGE_NONNEG),
    RULE("curriculum.align_steps", curriculum.align_steps, RANGE_NONNEG),
    RULE("sample.n", sample.n, RANGE_POS),
    RULE("sample.steps", sample.steps, RANGE_POS),
    RULE("eval.every", eval.every, RANGE_NONNEG),
    RULE("eval.n", eval.n, RANGE_POS),
    RULE("eval.steps", eval.steps, RANGE_POS),
};

static const range_rule float_rules[] = {
    RULE("model.class_dropout", model.class_dropout, RANGE_UNIT_OPEN),
    RULE("train.lr", train.lr, RANGE_POS),
    RULE("train.betas", train.beta1, RANGE_UNIT_OPEN),
    RULE("train.betas", train.beta2, RANGE_UNIT_OPEN),
    RULE("train.eps", train.eps, RANGE_POS),
    RULE("train.weight_decay", train.weight_decay, RANGE_NONNEG),
    RULE("train.grad_clip", train.grad_clip, RANGE_NONNEG),
    RULE("train.ema_decay", train.ema_decay, RANGE_UNIT_OPEN),
    RULE("curriculum.proj_coeff", curriculum.proj_coeff, RANGE_NONNEG),
    RULE("sample.cfg", sample.cfg, RANGE_NONNEG),
    RULE("sample.cfg_interval", sample.cfg_lo, RANGE_UNIT),
    RULE("sample.cfg_interval", sample.cfg_hi, RANGE_UNIT),
};

/* An enum field and its names (the value must index the array). */
typedef struct enum_rule {
    const char *key;
    size_t off;
    const char *const *names;
} enum_rule;

static const enum_rule enum_rules[] = {
    {"train.path", offsetof(reed_config, train.path), reed_path_names},
    {"train.time_sampling", offsetof(reed_config, train.time_sampling), reed_time_names},
    {"curriculum.diffusion_decay", offsetof(reed_config, curriculum.diffusion_decay),
     reed_decay_names},
    {"curriculum.align_decay", offsetof(reed_config, curriculum.align_decay),
     reed_decay_names},
    {"sample.sampler", offsetof(reed_config, sample.sampler), reed_sampler_names},
    {"train.device", offsetof(reed_config, train.device), reed_device_names},
    {"train.precision", offsetof(reed_config, train.precision), reed_precision_names},
};

_Static_assert(sizeof(reed_path_kind) == sizeof(int) && sizeof(reed_decay) == sizeof(int),
               "enums are stored as int");

static int name_count(const char *const *names) {
    int n = 0;
    while (names[n]) n++;
    return n;
}

static int check_ranges(const reed_config *cfg, reed_error *err) {
    const char *base = (const char *)cfg;
    for (size_t i = 0; i < sizeof int_rules / sizeof int_rules[0]; i++) {
        const range_rule *r = &int_rules[i];
        int v;
        memcpy(&v, base + r->off, sizeof v);
        if (!in_range(v, r->range))
            return reed_errorf(err, "%s: %d must be %s", r->key, v, range_text[r->range]);
    }
    for (size_t i = 0; i < sizeof float_rules / sizeof float_rules[0]; i++) {
        const range_rule *r = &float_rules[i];
        float v;
        memcpy(&v, base + r->off, sizeof v);
        if (!isfinite(v) || !in_range(v, r->range))
            return reed_errorf(err, "%s: %g must be %s", r->key, v, range_text[r->range]);
    }
    for (size_t i = 0; i < sizeof enum_rules / sizeof enum_rules[0]; i++) {
        const enum_rule *r = &enum_rules[i];
        int v;
        memcpy(&v, base + r->off, sizeof v);
        if (v < 0 || v >= name_count(r->names))
            return reed_errorf(err, "%s: invalid value %d", r->key, v);
    }
    return 0;
}

/* Run names become directory names: [A-Za-z0-9_.-], not starting with '.'. */
static int check_run_name(const char *name, reed_error *err) {
    if (!name[0]) return reed_errorf(err, "name: must not be empty");
    if (name[0] == '.') return reed_errorf(err, "name: '%s' must not start with '.'", name);
    for (const char *p = name; *p; p++) {
        int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                 (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.';
        if (!ok)
            return reed_errorf(err, "name: '%s' may only contain letters, digits, "
                               "'_', '-' and '.'", name);
    }
    return 0;
}

static int check_model(const reed_model_config *m, reed_error *err) {
    if (m->hidden % m->heads != 0)
        return reed_errorf(err, "model.heads: %d does not divide model.hidden %d",
                           m->heads, m->hidden);
    if (m->hidden % 4 != 0)
        return reed_errorf(err, "model.hidden: %d is not divisible by 4 (the 2-D "
                           "sin-cos position embedding needs it)", m->hidden);
    if (m->image_size % m->patch != 0)
        return reed_errorf(err, "model.patch: %d does not divide model.image_size %d",
                           m->patch, m->image_size);
    return 0;
}

static int check_data(const reed_data_config *d, reed_error *err) {
    if (strcmp(d->dataset, "fashion-mnist") == 0) {
        if (!d->dir[0]) return reed_errorf(err, "data.dir: must not be empty");
        return 0;
    }
    if (strcmp(d->dataset, "npy") == 0) {
        if (!d->images[0])
            return reed_errorf(err, "data.images: must name an .npy file when "
                               "data.dataset is \"npy\"");
        return 0;
    }
    return reed_errorf(err, "data.dataset: unknown dataset '%s' (expected one of: "
                       "fashion-mnist, npy)", d->dataset);
}

static int check_schedules(const reed_config *cfg, reed_error *err) {
    const reed_curriculum_config *c = &cfg->curriculum;
    if (c->align_decay != REED_DECAY_CONSTANT && c->align_steps <= 0)
        return reed_errorf(err, "curriculum.align_steps: must be > 0 when "
                           "curriculum.align_decay is %s",
                           reed_decay_names[c->align_decay]);
    if (c->diffusion_decay != REED_DECAY_CONSTANT &&
        (long)c->diffusion_start + c->diffusion_warmup >= cfg->train.steps)
        return reed_errorf(err, "curriculum.diffusion_decay: %s decay needs "
                           "diffusion_start + diffusion_warmup (%ld) < train.steps (%d)",
                           reed_decay_names[c->diffusion_decay],
                           (long)c->diffusion_start + c->diffusion_warmup,
                           cfg->train.steps);
    const reed_sample_config *s = &cfg->sample;
    if (s->cfg_lo > s->cfg_hi)
        return reed_errorf(err, "sample.cfg_interval: lower end %g is above the "
                           "upper end %g", s->cfg_lo, s->cfg_hi);
    if (s->class_label < -1 || s->class_label >= cfg->model.num_classes)
        return reed_errorf(err, "sample.class: %d must be -1 (cycle) or in 0..%d",
                           s->class_label, cfg->model.num_classes - 1);
    return 0;
}

/* Source names key metrics and Lua tables: non-empty [A-Za-z0-9_]. */
static int valid_source_name(const char *s) {
    if (!s[0]) return 0;
    for (; *s; s++) {
        int ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                 (*s >= '0' && *s <= '9') || *s == '_';
        if (!ok) return 0;
    }
    return 1;
}

static int check_source_values(const reed_source_config *s, int i, int depth,
                               reed_error *err) {
    if (!valid_source_name(s->name))
        return reed_errorf(err, "sources.%d.name: '%s' must be non-empty and made "
                           "of letters, digits and '_'", i, s->name);
    if (s->from == REED_FROM_FILE && !s->file[0])
        return reed_errorf(err, "sources.%d.file: must name an .npy file (or set from = "
                           "\"teacher\")", i);
    if ((int)s->kind < 0 || s->kind > REED_SOURCE_GLOBAL)
        return reed_errorf(err, "sources.%d.kind: invalid value %d", i, (int)s->kind);
    if ((int)s->weighting < 0 || s->weighting > REED_WEIGHT_CUTOFF)
        return reed_errorf(err, "sources.%d.weighting: invalid value %d", i,
                           (int)s->weighting);
    if ((int)s->resample < 0 || s->resample > REED_RESAMPLE_BILINEAR)
        return reed_errorf(err, "sources.%d.resample: invalid value %d", i,
                           (int)s->resample);
    if (s->depth < 1 || s->depth > depth)
        return reed_errorf(err, "sources.%d.depth: %d is outside 1..model.depth (%d)",
                           i, s->depth, depth);
    if (!isfinite(s->coeff) || s->coeff < 0)
        return reed_errorf(err, "sources.%d.coeff: %g must be >= 0", i, s->coeff);
    if (!(s->cutoff_lo >= 0 && s->cutoff_lo < s->cutoff_hi && s->cutoff_hi <= 1))
        return reed_errorf(err, "sources.%d.cutoff: {%g, %g} must satisfy "
                           "0 <= lo < hi <= 1", i, s->cutoff_lo, s->cutoff_hi);
    if (s->projector_dim <= 0)
        return reed_errorf(err, "sources.%d.projector_dim: %d must be > 0", i,
                           s->projector_dim);
    return 0;
}

static int check_sources(const reed_config *cfg, reed_error *err) {
    if (cfg->n_sources < 0 || cfg->n_sources > REED_MAX_SOURCES)
        return reed_errorf(err, "sources: %d sources (at most %d)", cfg->n_sources,
                           REED_MAX_SOURCES);
    for (int i = 0; i < cfg->n_sources; i++) {
        const reed_source_config *s = &cfg->sources[i];
        if (check_source_values(s, i + 1, cfg->model.depth, err)) return -1;
        for (int j = 0; j < i; j++)
            if (strcmp(cfg->sources[j].name, s->name) == 0)
                return reed_errorf(err, "sources.%d.name: '%s' is already the name "
                                   "of sources.%d", i + 1, s->name, j + 1);
    }
    return 0;
}

/* The evaluator scores 1×28×28 images against the Fashion-MNIST test set. */
static int check_eval(const reed_config *cfg, reed_error *err) {
    const reed_eval_config *e = &cfg->eval;
    if (e->n < 2 || e->n > 10000)
        return reed_errorf(err, "eval.n: %d must be in 2..10000", e->n);
    if (e->every == 0) return 0;
    if (cfg->model.in_channels != 1 || cfg->model.image_size != 28 ||
        strcmp(cfg->data.dataset, "fashion-mnist") != 0)
        return reed_errorf(err, "eval.every: the evaluator scores 1x28x28 Fashion-MNIST "
                           "samples (this run: %s, %dx%dx%d); set eval.every = 0",
                           cfg->data.dataset, cfg->model.in_channels,
                           cfg->model.image_size, cfg->model.image_size);
    return 0;
}

int reed_config_validate(const reed_config *cfg, reed_error *err) {
    if (check_run_name(cfg->name, err)) return -1;
    if (check_ranges(cfg, err)) return -1;
    if (check_model(&cfg->model, err)) return -1;
    if (check_data(&cfg->data, err)) return -1;
    if (check_schedules(cfg, err)) return -1;
    if (check_eval(cfg, err)) return -1;
    return check_sources(cfg, err);
}
