/* bench_train_step: times full REED training steps of the engine, the C
 * side of bench/train_step.py (same configs, same analytic FLOP count, same
 * JSON line).
 *
 *   bench_train_step --config tiny|small|sitS --threads N --steps S --warmup W
 *                    [--device cpu|cuda] [--data fashion-mnist|random]
 *
 * Input is 1x28x28 with 10 classes (Fashion-MNIST, the first 1024 images, or
 * random images when asked or when the dataset is not installed); two
 * alignment sources with random targets written as .npy into a temporary
 * directory: a token-level 7x7x64 target (49 tokens, resampled bilinearly to
 * 14x14 by the engine for patch 2) tapped after block `enc`, and a global
 * 64-d target tapped after block `text`. Every step is the engine's
 * reed_run_step: batch, forward, losses, backward, clipping, AdamW, EMA.
 *
 * Prints one JSON line:
 *   {"impl":"reed","config":..,"threads":..,"batch":..,"imgs_per_s":..,
 *    "ms_per_step":..,"peak_rss_mb":..,"flops_per_step":..,
 *    "rss_before_open_mb":..,"data":..,"steps":..,"warmup":..}
 * peak_rss_mb is ru_maxrss of the whole process. Exits 77 for --device cuda
 * (no CUDA backend yet), 2 on bad arguments, 1 on engine errors. */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "formats.h"
#include "reed.h"

enum { IMAGE = 28, CHANNELS = 1, CLASSES = 10 };
enum { TARGET_GRID = 7, TARGET_DIM = 64, GLOBAL_DIM = 64, N_EXAMPLES = 1024 };

static const char *const FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";

/* One benchmark configuration; the numbers match CONFIGS in train_step.py. */
typedef struct bench_config {
    const char *name;
    int hidden, depth, heads, patch, batch, enc, text, projector;
} bench_config;

static const bench_config CONFIGS[] = {
    {"tiny", 128, 4, 4, 4, 64, 2, 3, 256},
    {"small", 256, 8, 4, 2, 64, 4, 6, 512},
    {"sitS", 384, 12, 6, 2, 32, 4, 8, 2048},
};

typedef struct bench_args {
    const bench_config *cfg;
    int threads, steps, warmup;
    int cuda;
    int random_data; /* 1: random images instead of Fashion-MNIST */
} bench_args;

/* ------------------------------------------------------------------------
 * Arguments
 * ---------------------------------------------------------------------- */

static void usage(FILE *f) {
    fputs("usage: bench_train_step --config tiny|small|sitS --threads N --steps S "
          "--warmup W\n"
          "                        [--device cpu|cuda] [--data fashion-mnist|random]\n",
          f);
}

static const bench_config *find_config(const char *name) {
    for (size_t i = 0; i < sizeof CONFIGS / sizeof CONFIGS[0]; i++)
        if (strcmp(CONFIGS[i].name, name) == 0) return &CONFIGS[i];
    return NULL;
}

/* A whole-string integer >= lo; -1 when it is not one. */
static int parse_int(const char *s, int lo) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > 1000000) return -1;
    return (int)v;
}

/* Applies one "--key value" option; returns 0 or -1 with a message. */
static int apply_option(bench_args *a, const char *key, const char *val) {
    if (strcmp(key, "--config") == 0) {
        a->cfg = find_config(val);
        if (!a->cfg) fprintf(stderr, "bench_train_step: unknown config '%s'\n", val);
        return a->cfg ? 0 : -1;
    }
    int *num = strcmp(key, "--threads") == 0 ? &a->threads
             : strcmp(key, "--steps") == 0 ? &a->steps
             : strcmp(key, "--warmup") == 0 ? &a->warmup : NULL;
    if (num) {
        *num = parse_int(val, num == &a->steps ? 1 : 0);
        if (*num < 0) fprintf(stderr, "bench_train_step: bad %s '%s'\n", key, val);
        return *num < 0 ? -1 : 0;
    }
    if (strcmp(key, "--device") == 0 && (!strcmp(val, "cpu") || !strcmp(val, "cuda"))) {
        a->cuda = strcmp(val, "cuda") == 0;
        return 0;
    }
    if (strcmp(key, "--data") == 0 && (!strcmp(val, "fashion-mnist") || !strcmp(val, "random"))) {
        a->random_data = strcmp(val, "random") == 0;
        return 0;
    }
    fprintf(stderr, "bench_train_step: bad option %s %s\n", key, val);
    return -1;
}

/* Returns 0 to run, 1 after --help, 2 on bad arguments. */
static int parse_args(bench_args *a, int argc, char **argv) {
    *a = (bench_args){.cfg = &CONFIGS[0], .threads = 1, .steps = 20, .warmup = 3};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 1;
        }
        if (i + 1 >= argc || apply_option(a, argv[i], argv[i + 1])) {
            if (i + 1 >= argc) fprintf(stderr, "bench_train_step: %s needs a value\n", argv[i]);
            usage(stderr);
            return 2;
        }
        i++;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * FLOPs: the analytic count of bench/train_step.py (analytic_flops), i.e.
 * 2·M·N·K for every forward matmul including QKᵀ and AV, times 3 for
 * forward + backward. Elementwise ops, norms and the optimiser are not
 * counted.
 * ---------------------------------------------------------------------- */

static int64_t mm(int64_t m, int64_t n, int64_t k) { return 2 * m * n * k; }

/* A projector h -> P -> P -> out applied to `rows` rows. */
static int64_t projector_flops(int64_t rows, int64_t h, int64_t P, int64_t out) {
    return mm(rows, P, h) + mm(rows, P, P) + mm(rows, out, P);
}

static int64_t analytic_flops(const bench_config *c) {
    int64_t B = c->batch, h = c->hidden, p = c->patch, P = c->projector;
    int64_t T = (IMAGE / p) * (IMAGE / p);
    int64_t f = mm(B * T, h, CHANNELS * p * p);            /* patch embedding */
    f += mm(B, h, 256) + mm(B, h, h);                        /* timestep MLP */
    int64_t per_block = mm(B, 6 * h, h)                      /* adaLN modulation */
                        + mm(B * T, 3 * h, h)                /* qkv */
                        + 2 * mm(B * T, T, h)                /* QKᵀ and AV */
                        + mm(B * T, h, h)                    /* attention output */
                        + mm(B * T, 4 * h, h) + mm(B * T, h, 4 * h); /* MLP */
    f += c->depth * per_block;
    f += mm(B, 2 * h, h) + mm(B * T, p * p * CHANNELS, h);   /* final layer */
    f += projector_flops(B * T, h, P, TARGET_DIM) + projector_flops(B, h, P, GLOBAL_DIM);
    return 3 * f;
}

/* ------------------------------------------------------------------------
 * Temporary data: random targets (and images) as .npy
 * ---------------------------------------------------------------------- */

/* splitmix64: a small self-contained generator for the random targets. */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): 24 random bits, never 0. */
static double next_unit(uint64_t *s) {
    return ((double)(next_u64(s) >> 40) + 0.5) / 16777216.0;
}

/* Standard normals by Box–Muller. */
static void fill_normal(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed;
    const double two_pi = 6.283185307179586;
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(next_unit(&s))), a = two_pi * next_unit(&s);
        x[i] = (float)(r * cos(a));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(a));
    }
}

/* Writes a (shape) array of standard normals to dir/name. */
static int save_random_npy(const char *dir, const char *name, int ndim,
                           const int64_t *shape, uint64_t seed, char *path,
                           reed_error *err) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *x = malloc(n * sizeof(float));
    if (!x) return reed_errorf(err, "out of memory for %s", name);
    fill_normal(x, n, seed);
    snprintf(path, REED_PATH_LEN, "%s/%s", dir, name);
    int rc = npy_save(path, x, ndim, shape, err);
    free(x);
    return rc;
}

/* Random images in [-1, 1] and labels 0..9, for --data random. */
static int save_random_dataset(const char *dir, reed_data_config *d, reed_error *err) {
    const int64_t img_shape[4] = {N_EXAMPLES, CHANNELS, IMAGE, IMAGE};
    const int64_t lab_shape[1] = {N_EXAMPLES};
    if (save_random_npy(dir, "images.npy", 4, img_shape, 3, d->images, err)) return -1;
    float labels[N_EXAMPLES];
    for (int i = 0; i < N_EXAMPLES; i++) labels[i] = (float)(i % CLASSES);
    snprintf(d->labels, sizeof d->labels, "%s/labels.npy", dir);
    snprintf(d->dataset, sizeof d->dataset, "npy");
    return npy_save(d->labels, labels, 1, lab_shape, err);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf dir (depth first, not following links). */
static void remove_tree(const char *dir) {
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "bench_train_step: could not remove %s completely\n", dir);
}

/* ------------------------------------------------------------------------
 * Configuration
 * ---------------------------------------------------------------------- */

static void add_source(reed_config *cfg, const char *name, reed_source_kind kind,
                       const char *file, int depth, int projector) {
    reed_source_config *s = &cfg->sources[cfg->n_sources++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->file, sizeof s->file, "%s", file);
    s->kind = kind;
    s->depth = depth;
    s->coeff = 1.0f;
    s->weighting = REED_WEIGHT_CONSTANT;
    s->cutoff_lo = 0.0f;
    s->cutoff_hi = 1.0f;
    s->projector_dim = projector;
    s->resample = REED_RESAMPLE_BILINEAR; /* F.interpolate(bilinear) in train_step.py */
}

/* The settings of train_step.py: linear path, w_diff = w_align = 1,
 * proj_coeff 0.5, AdamW lr 1e-4 (0.9, 0.999) eps 1e-8 wd 0, clip 1,
 * EMA 0.999, label dropout 0.1. No logging, sampling or checkpoints. */
static int build_config(reed_config *cfg, const bench_args *a, reed_error *err) {
    const bench_config *c = a->cfg;
    reed_config_defaults(cfg);
    snprintf(cfg->name, sizeof cfg->name, "bench_%s", c->name);
    if (reed_model_preset(&cfg->model, c->name, err)) return -1;
    cfg->model.hidden = c->hidden;
    cfg->model.depth = c->depth;
    cfg->model.heads = c->heads;
    cfg->model.patch = c->patch;
    cfg->model.class_dropout = 0.1f;
    cfg->data.limit = N_EXAMPLES;
    reed_train_config *t = &cfg->train;
    t->steps = a->warmup + a->steps;
    t->batch = c->batch;
    t->threads = a->threads;
    t->lr = 1e-4f;
    t->beta1 = 0.9f;
    t->beta2 = 0.999f;
    t->eps = 1e-8f;
    t->weight_decay = 0.0f;
    t->grad_clip = 1.0f;
    t->ema_decay = 0.999f;
    t->path = REED_PATH_LINEAR;
    t->time_sampling = REED_TIME_UNIFORM;
    t->log_every = 1 << 30;
    t->sample_every = 0;
    t->ckpt_every = 0;
    cfg->curriculum = (reed_curriculum_config){.proj_coeff = 0.5f,
                                               .diffusion_decay = REED_DECAY_CONSTANT,
                                               .align_decay = REED_DECAY_CONSTANT};
    return 0;
}

/* Writes the targets (and, if asked, the images) into dir and points cfg at
 * them; falls back to random images when Fashion-MNIST is not installed. */
static int prepare_data(reed_config *cfg, const bench_args *a, const char *dir,
                        const char **data_name, reed_error *err) {
    char tok[REED_PATH_LEN], glob[REED_PATH_LEN];
    const int64_t tok_shape[3] = {N_EXAMPLES, TARGET_GRID * TARGET_GRID, TARGET_DIM};
    const int64_t glob_shape[2] = {N_EXAMPLES, GLOBAL_DIM};
    if (save_random_npy(dir, "tok.npy", 3, tok_shape, 1, tok, err) ||
        save_random_npy(dir, "glob.npy", 2, glob_shape, 2, glob, err))
        return -1;
    add_source(cfg, "tok", REED_SOURCE_TOKEN, tok, a->cfg->enc, a->cfg->projector);
    add_source(cfg, "glob", REED_SOURCE_GLOBAL, glob, a->cfg->text, a->cfg->projector);
    struct stat st;
    int have_fmnist = stat(FASHION_MNIST_DIR, &st) == 0 && S_ISDIR(st.st_mode);
    if (!a->random_data && have_fmnist) {
        snprintf(cfg->data.dir, sizeof cfg->data.dir, "%s", FASHION_MNIST_DIR);
        *data_name = "fashion-mnist";
        return 0;
    }
    if (!a->random_data)
        fprintf(stderr, "bench_train_step: %s not found; using random images\n",
                FASHION_MNIST_DIR);
    *data_name = "random";
    return save_random_dataset(dir, &cfg->data, err);
}

/* ------------------------------------------------------------------------
 * Timing
 * ---------------------------------------------------------------------- */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

static void log_to_stderr(void *ud, const char *msg) {
    (void)ud;
    fprintf(stderr, "reed: %s\n", msg);
}

/* Runs n steps; returns 0 or -1 with err set. */
static int run_steps(reed_run *run, int n, reed_error *err) {
    reed_metrics m;
    for (int i = 0; i < n; i++)
        if (reed_run_step(run, &m, err)) return -1;
    return 0;
}

/* Opens the run in dir, warms up and times; fills *elapsed. */
static int bench_in_dir(const bench_args *a, const char *dir, double *elapsed,
                        const char **data_name, reed_error *err) {
    static reed_config cfg; /* ~20 KB of paths: keep it off the stack */
    if (build_config(&cfg, a, err) || prepare_data(&cfg, a, dir, data_name, err)) return -1;
    char run_dir[REED_PATH_LEN];
    snprintf(run_dir, sizeof run_dir, "%s/run", dir);
    reed_run *run;
    if (reed_run_open(&run, &cfg, "-- bench_train_step\n", run_dir, err)) return -1;
    reed_run_set_log(run, log_to_stderr, NULL);
    int rc = run_steps(run, a->warmup, err);
    double t0 = now_seconds();
    if (rc == 0) rc = run_steps(run, a->steps, err);
    *elapsed = now_seconds() - t0;
    reed_run_close(run);
    return rc;
}

static void print_result(const bench_args *a, double elapsed, double rss_before,
                         const char *data_name) {
    const bench_config *c = a->cfg;
    printf("{\"impl\":\"reed\",\"config\":\"%s\",\"threads\":%d,\"batch\":%d,"
           "\"imgs_per_s\":%.3f,\"ms_per_step\":%.3f,\"peak_rss_mb\":%.1f,"
           "\"flops_per_step\":%lld,\"rss_before_open_mb\":%.1f,\"data\":\"%s\","
           "\"steps\":%d,\"warmup\":%d}\n",
           c->name, a->threads, c->batch, (double)c->batch * a->steps / elapsed,
           1000.0 * elapsed / a->steps, peak_rss_mb(), (long long)analytic_flops(c),
           rss_before, data_name, a->steps, a->warmup);
}

int main(int argc, char **argv) {
    bench_args a;
    int rc = parse_args(&a, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (a.cuda) {
        printf("bench_train_step: the CUDA backend is not built yet (CPU only)\n");
        return 77;
    }
    double rss_before = peak_rss_mb();
    char dir[] = "/tmp/reed_bench_XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "bench_train_step: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    reed_error err = {{0}};
    double elapsed = 0.0;
    const char *data_name = "";
    rc = bench_in_dir(&a, dir, &elapsed, &data_name, &err);
    remove_tree(dir);
    if (rc) {
        fprintf(stderr, "bench_train_step: %s\n", err.msg);
        return 1;
    }
    print_result(&a, elapsed, rss_before, data_name);
    return 0;
}
