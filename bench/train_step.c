/* bench_train_step: times full REED training steps of the engine, the C
 * side of bench/train_step.py (same configs, same analytic FLOP count, same
 * JSON line).
 *
 *   bench_train_step --config tiny|small|sitS|B2 --threads N --steps S --warmup W
 *                    [--device cpu|cuda] [--precision fp32|bf16] [--batch B]
 *                    [--data fashion-mnist|random]
 *
 * tiny, small, sitS: input is 1x28x28 with 10 classes (Fashion-MNIST, the
 * first 1024 images, or random images when asked or when the dataset is not
 * installed); two alignment sources with random targets written as .npy into
 * a temporary directory: a token-level 7x7x64 target (49 tokens, resampled
 * bilinearly to 14x14 by the engine for patch 2) tapped after block `enc`,
 * and a global 64-d target tapped after block `text`.
 *
 * B2: SiT-B/2 (hidden 768, depth 12, 12 heads, patch 2) on 4x32x32 inputs
 * (the shape of SD-VAE latents of 256x256 images), 1000 classes, batch 256;
 * always random data (normal "latents", random labels), as .npy (images
 * (N,4,32,32) float32, labels (N) int64); a token-level 256x768 target
 * (16x16 tokens, the model's own grid) after block 4 and a global 1024-d
 * target after block 8, projector_dim 2048 (REPA's). Only N = 256 examples
 * (one batch): the token targets alone are 256x256x768 floats = 201 MB.
 *
 * --device selects train.device (default cpu); --device cuda exits 77 when
 * no GPU is usable (the engine's reed_run_open says why). --precision sets
 * train.precision (default fp32; the CPU backend always computes in fp32).
 * --batch overrides the config's batch (the FLOP count follows it).
 * Every step is the engine's reed_run_step: batch, forward, losses,
 * backward, clipping, AdamW, EMA; on CUDA the device is synchronised around
 * the timed steps.
 *
 * Prints one JSON line:
 *   {"impl":"reed","config":..,"threads":..,"batch":..,"imgs_per_s":..,
 *    "ms_per_step":..,"peak_rss_mb":..,"flops_per_step":..,
 *    "rss_before_open_mb":..,"data":..,"steps":..,"warmup":..,
 *    "device":"cpu"|"cuda","precision":"fp32"|"bf16","backend_mb":..}
 * peak_rss_mb is ru_maxrss of the whole process; backend_mb the memory the
 * backend holds after the timed steps (its mem_used: device memory on
 * CUDA, where a buffer backed on first use counts what is mapped to it;
 * -1 where the backend does not count). Exits 77 for --device cuda
 * without a usable GPU, 2 on bad arguments, 1 on engine errors. */
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
#include "ops.h"
#include "reed.h"
#include "reed_cuda.h"

static const char *const FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";

/* One benchmark configuration; the numbers match CONFIGS in train_step.py.
 * image/channels/classes: the input; tok_grid x tok_grid tokens of tok_dim
 * and a glob_dim vector: the targets; n_examples: rows of data and targets. */
typedef struct bench_config {
    const char *name, *preset;
    int hidden, depth, heads, patch, batch, enc, text, projector;
    int image, channels, classes, tok_grid, tok_dim, glob_dim, n_examples;
} bench_config;

static const bench_config CONFIGS[] = {
    {"tiny", "tiny", 128, 4, 4, 4, 64, 2, 3, 256, 28, 1, 10, 7, 64, 64, 1024},
    {"small", "small", 256, 8, 4, 2, 64, 4, 6, 512, 28, 1, 10, 7, 64, 64, 1024},
    {"sitS", "sitS", 384, 12, 6, 2, 32, 4, 8, 2048, 28, 1, 10, 7, 64, 64, 1024},
    {"B2", "B/2", 768, 12, 12, 2, 256, 4, 8, 2048, 32, 4, 1000, 16, 768, 1024, 256},
};

typedef struct bench_args {
    const bench_config *cfg;
    int threads, steps, warmup;
    int batch;       /* the config's, or --batch */
    int cuda;
    int bf16;        /* --precision bf16 */
    int random_data; /* 1: random images instead of Fashion-MNIST */
} bench_args;

/* ------------------------------------------------------------------------
 * Arguments
 * ---------------------------------------------------------------------- */

static void usage(FILE *f) {
    fputs("usage: bench_train_step --config tiny|small|sitS|B2 --threads N --steps S "
          "--warmup W\n"
          "                        [--device cpu|cuda] [--precision fp32|bf16] [--batch B]\n"
          "                        [--data fashion-mnist|random]\n",
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
             : strcmp(key, "--warmup") == 0 ? &a->warmup
             : strcmp(key, "--batch") == 0 ? &a->batch : NULL;
    if (num) {
        *num = parse_int(val, num == &a->steps || num == &a->batch ? 1 : 0);
        if (*num < 0) fprintf(stderr, "bench_train_step: bad %s '%s'\n", key, val);
        return *num < 0 ? -1 : 0;
    }
    if (strcmp(key, "--device") == 0 && (!strcmp(val, "cpu") || !strcmp(val, "cuda"))) {
        a->cuda = strcmp(val, "cuda") == 0;
        return 0;
    }
    if (strcmp(key, "--precision") == 0 && (!strcmp(val, "fp32") || !strcmp(val, "bf16"))) {
        a->bf16 = strcmp(val, "bf16") == 0;
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
    int batch_set = 0;
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
        batch_set |= strcmp(argv[i], "--batch") == 0;
        i++;
    }
    if (!batch_set) a->batch = a->cfg->batch;
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

static int64_t analytic_flops(const bench_config *c, int batch) {
    int64_t B = batch, h = c->hidden, p = c->patch, P = c->projector;
    int64_t T = (c->image / p) * (c->image / p);
    int64_t f = mm(B * T, h, c->channels * p * p);         /* patch embedding */
    f += mm(B, h, 256) + mm(B, h, h);                        /* timestep MLP */
    int64_t per_block = mm(B, 6 * h, h)                      /* adaLN modulation */
                        + mm(B * T, 3 * h, h)                /* qkv */
                        + 2 * mm(B * T, T, h)                /* QKᵀ and AV */
                        + mm(B * T, h, h)                    /* attention output */
                        + mm(B * T, 4 * h, h) + mm(B * T, h, 4 * h); /* MLP */
    f += c->depth * per_block;
    f += mm(B, 2 * h, h) + mm(B * T, p * p * c->channels, h); /* final layer */
    f += projector_flops(B * T, h, P, c->tok_dim) + projector_flops(B, h, P, c->glob_dim);
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

/* Writes n int64 values as a 1-D .npy file (format 1.0, '<i8'). */
static int save_int64_npy(const char *path, const int64_t *v, int64_t n, reed_error *err) {
    char header[128];
    int len = snprintf(header, sizeof header,
                       "{'descr': '<i8', 'fortran_order': False, 'shape': (%lld,), }",
                       (long long)n);
    while ((10 + len + 1) % 64) header[len++] = ' '; /* pad: data 64-byte aligned */
    header[len++] = '\n';
    FILE *f = fopen(path, "wb");
    if (!f) return reed_errorf(err, "%s: cannot create: %s", path, strerror(errno));
    const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                   (unsigned char)(len & 0xff), (unsigned char)(len >> 8)};
    int ok = fwrite(pre, 1, sizeof pre, f) == sizeof pre &&
             fwrite(header, 1, (size_t)len, f) == (size_t)len;
    for (int64_t i = 0; ok && i < n; i++) {
        unsigned char b[8];
        for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)v[i] >> (8 * k));
        ok = fwrite(b, 1, sizeof b, f) == sizeof b;
    }
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : reed_errorf(err, "%s: write failed", path);
}

/* Random images (standard normal) and int64 labels, for --data random and
 * for configs whose input is not Fashion-MNIST's: labels i mod classes for
 * the 28x28 configs, uniform random classes otherwise (B2). */
static int save_random_dataset(const char *dir, const bench_config *c, reed_data_config *d,
                               reed_error *err) {
    const int64_t N = c->n_examples;
    const int64_t img_shape[4] = {N, c->channels, c->image, c->image};
    if (save_random_npy(dir, "images.npy", 4, img_shape, 3, d->images, err)) return -1;
    int64_t *labels = malloc((size_t)N * sizeof *labels);
    if (!labels) return reed_errorf(err, "out of memory for the labels");
    uint64_t s = 4;
    for (int64_t i = 0; i < N; i++)
        labels[i] = c->image == 28 ? i % c->classes : (int64_t)(next_u64(&s) % (uint64_t)c->classes);
    snprintf(d->labels, sizeof d->labels, "%s/labels.npy", dir);
    snprintf(d->dataset, sizeof d->dataset, "npy");
    int rc = save_int64_npy(d->labels, labels, N, err);
    free(labels);
    return rc;
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
    if (reed_model_preset(&cfg->model, c->preset, err)) return -1;
    cfg->model.hidden = c->hidden;
    cfg->model.depth = c->depth;
    cfg->model.heads = c->heads;
    cfg->model.patch = c->patch;
    cfg->model.in_channels = c->channels;
    cfg->model.image_size = c->image;
    cfg->model.num_classes = c->classes;
    cfg->model.class_dropout = 0.1f;
    cfg->data.limit = c->n_examples;
    reed_train_config *t = &cfg->train;
    t->steps = a->warmup + a->steps;
    t->batch = a->batch;
    t->threads = a->threads;
    t->device = a->cuda ? REED_DEVICE_CUDA : REED_DEVICE_CPU;
    t->precision = a->bf16 ? REED_PRECISION_BF16 : REED_PRECISION_FP32;
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
    const bench_config *c = a->cfg;
    char tok[REED_PATH_LEN], glob[REED_PATH_LEN];
    const int64_t tok_shape[3] = {c->n_examples, c->tok_grid * c->tok_grid, c->tok_dim};
    const int64_t glob_shape[2] = {c->n_examples, c->glob_dim};
    if (save_random_npy(dir, "tok.npy", 3, tok_shape, 1, tok, err) ||
        save_random_npy(dir, "glob.npy", 2, glob_shape, 2, glob, err))
        return -1;
    add_source(cfg, "tok", REED_SOURCE_TOKEN, tok, c->enc, c->projector);
    add_source(cfg, "glob", REED_SOURCE_GLOBAL, glob, c->text, c->projector);
    if (c->channels != 1 || c->image != 28) { /* B2: latents, always random */
        *data_name = "random";
        return save_random_dataset(dir, c, &cfg->data, err);
    }
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
    return save_random_dataset(dir, c, &cfg->data, err);
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

/* Waits for the GPU: reed_run_step returns once the loss and the gradient
 * norm are on the host, but the optimiser's kernels may still be running. */
static void sync_device(const char *device) {
    if (strcmp(device, "cuda") != 0) return;
    char why[256];
    const reed_ops *ops = reed_ops_cuda(why, sizeof why); /* the run's, initialised */
    if (ops && ops->synchronize) ops->synchronize();
}

/* MiB the backend holds through mem_alloc, or -1 where it does not count. */
static double backend_mb(const char *device) {
    char why[256];
    const reed_ops *ops = strcmp(device, "cuda") == 0 ? reed_ops_cuda(why, sizeof why)
                                                      : &reed_ops_cpu;
    return ops && ops->mem_used ? ops->mem_used() / 1048576.0 : -1.0;
}

/* The CUDA backend's bf16 shortcuts, counted (reed_cuda.h). */
typedef struct cuda_counts {
    long view_hits, sole_made, sole_back, bgrad, gelu, bf16_out;
} cuda_counts;

static cuda_counts cuda_counts_now(void) {
    cuda_counts c;
    c.view_hits = reed_cuda_view_hits();
    reed_cuda_view_sole_counts(&c.sole_made, &c.sole_back);
    c.bgrad = reed_cuda_lt_bgrad_calls();
    c.gelu = reed_cuda_lt_gelu_calls();
    c.bf16_out = reed_cuda_lt_bf16_out_calls();
    return c;
}

/* Per timed step, on stderr: how often each shortcut was taken. */
static void print_cuda_counts(cuda_counts c0, int steps) {
    const cuda_counts c = cuda_counts_now();
    const double s = steps > 0 ? steps : 1;
    fprintf(stderr, "per step: %.0f GEMM operands read from bf16 views, %.0f sole views made "
            "(%.0f written back to fp32), %.0f bias gradients in the dw GEMM's epilogue, "
            "%.0f GEMMs with the GELU in their epilogue, %.0f linear outputs written as bf16 "
            "only\n",
            (c.view_hits - c0.view_hits) / s, (c.sole_made - c0.sole_made) / s,
            (c.sole_back - c0.sole_back) / s, (c.bgrad - c0.bgrad) / s, (c.gelu - c0.gelu) / s,
            (c.bf16_out - c0.bf16_out) / s);
}

/* Opens the run in dir, warms up and times; fills *elapsed, *mb (backend_mb
 * after the steps) and device (the backend's name). *open_failed tells a
 * failed reed_run_open from a failed step. */
static int bench_in_dir(const bench_args *a, const char *dir, double *elapsed, double *mb,
                        const char **data_name, char *device, size_t device_cap,
                        int *open_failed, reed_error *err) {
    static reed_config cfg; /* ~20 KB of paths: keep it off the stack */
    *open_failed = 0;
    if (build_config(&cfg, a, err) || prepare_data(&cfg, a, dir, data_name, err)) return -1;
    char run_dir[REED_PATH_LEN];
    snprintf(run_dir, sizeof run_dir, "%s/run", dir);
    reed_run *run;
    if (reed_run_open(&run, &cfg, "-- bench_train_step\n", run_dir, err)) {
        *open_failed = 1;
        return -1;
    }
    snprintf(device, device_cap, "%s", reed_run_device(run));
    reed_run_set_log(run, log_to_stderr, NULL);
    int rc = run_steps(run, a->warmup, err);
    sync_device(device);
    reed_cuda_profile_reset();
    const cuda_counts c0 = cuda_counts_now();
    double t0 = now_seconds();
    if (rc == 0) rc = run_steps(run, a->steps, err);
    sync_device(device);
    *elapsed = now_seconds() - t0;
    if (strcmp(device, "cuda") == 0) print_cuda_counts(c0, a->steps);
    *mb = backend_mb(device);
    if (rc == 0 && reed_cuda_profile_report(stderr) == 0)
        fprintf(stderr, "(the profile covers the %d timed steps; its events and reads "
                "slow them down)\n", a->steps);
    reed_run_close(run);
    return rc;
}

static void print_result(const bench_args *a, double elapsed, double mb, double rss_before,
                         const char *data_name, const char *device) {
    const bench_config *c = a->cfg;
    printf("{\"impl\":\"reed\",\"config\":\"%s\",\"threads\":%d,\"batch\":%d,"
           "\"imgs_per_s\":%.3f,\"ms_per_step\":%.3f,\"peak_rss_mb\":%.1f,"
           "\"flops_per_step\":%lld,\"rss_before_open_mb\":%.1f,\"data\":\"%s\","
           "\"steps\":%d,\"warmup\":%d,\"device\":\"%s\",\"precision\":\"%s\","
           "\"backend_mb\":%.1f}\n",
           c->name, a->threads, a->batch, (double)a->batch * a->steps / elapsed,
           1000.0 * elapsed / a->steps, peak_rss_mb(),
           (long long)analytic_flops(c, a->batch), rss_before, data_name, a->steps,
           a->warmup, device, a->bf16 ? "bf16" : "fp32", mb);
}

int main(int argc, char **argv) {
    bench_args a;
    int rc = parse_args(&a, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    double rss_before = peak_rss_mb();
    char dir[] = "/tmp/reed_bench_XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "bench_train_step: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    reed_error err = {{0}};
    double elapsed = 0.0, mb = -1.0;
    const char *data_name = "";
    char device[32] = "";
    int open_failed = 0;
    rc = bench_in_dir(&a, dir, &elapsed, &mb, &data_name, device, sizeof device, &open_failed,
                      &err);
    remove_tree(dir);
    if (rc) {
        fprintf(stderr, "bench_train_step: %s\n", err.msg);
        /* reed_run_open refuses train.device = "cuda" without a usable GPU
         * with a message that starts with the field's name. */
        if (a.cuda && open_failed && strncmp(err.msg, "train.device", 12) == 0) {
            fprintf(stderr, "bench_train_step: no usable GPU; skipped (exit 77)\n");
            return 77;
        }
        return 1;
    }
    print_result(&a, elapsed, mb, rss_before, data_name, device);
    return 0;
}
