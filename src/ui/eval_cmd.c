/* reed eval / reed evaluator (see eval_cmd.h). */
#include "eval_cmd.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "config.h"
#include "evaluator.h"
#include "frechet.h"
#include "lua/lua_config.h"
#include "ops.h"
#include "reed.h"

#define DATA_DIR "/usr/share/datasets/fashion-mnist"
enum { EVAL_BATCH = 500, SAMPLE_CHUNK = 1000, PAD = 2 };

static void usage(FILE *f) {
    fputs("usage:\n"
          "  reed eval CHECKPOINT|RUN_DIR [--n N] [--steps S] [--seed S] [--sampler K]\n"
          "            [--weights PATH] [--threads N] [--data DIR]\n"
          "  reed evaluator train [--out PATH] [--epochs N] [--seed S] [--threads N] [--data DIR]\n"
          "  reed evaluator eval [--weights PATH] [--threads N] [--data DIR]\n"
          "\n"
          "eval       draws N class-balanced samples (sample i has class i % 10; default\n"
          "           N 1000, the checkpoint's sampler and steps, seed 0) and reports the\n"
          "           Frechet distance between evaluator features of the samples and of\n"
          "           the 10,000 Fashion-MNIST test images, and the evaluator's accuracy\n"
          "           on the samples' classes.\n"
          "evaluator  trains (default " EVALUATOR_DEFAULT_WEIGHTS ") or checks the evaluator.\n",
          f);
}

static int usage_fail(const char *fmt, const char *arg) {
    fprintf(stderr, "reed eval: ");
    fprintf(stderr, fmt, arg);
    fputs("\n", stderr);
    usage(stderr);
    return 2;
}

static int parse_long(const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

typedef struct eval_args {
    const char *out, *weights, *data, *sampler;
    int n, steps, threads, epochs;
    long seed;
} eval_args;

static int parse_args(eval_args *a, int argc, char **argv, int first) {
    memset(a, 0, sizeof *a);
    a->n = 1000;
    a->seed = -1;
    a->epochs = 4;
    a->data = DATA_DIR;
    for (int i = first; i < argc; i++) {
        const char *o = argv[i];
        if (o[0] != '-') return usage_fail("unexpected argument \"%s\"", o);
        if (i + 1 >= argc) return usage_fail("%s: missing value", o);
        const char *v = argv[++i];
        long x;
        if (!strcmp(o, "--out")) a->out = v;
        else if (!strcmp(o, "--weights")) a->weights = v;
        else if (!strcmp(o, "--data")) a->data = v;
        else if (!strcmp(o, "--sampler")) a->sampler = v;
        else if (!strcmp(o, "--n")) {
            if (parse_long(v, 2, 100000, &x)) return usage_fail("--n: expected 2..100000, got \"%s\"", v);
            a->n = (int)x;
        } else if (!strcmp(o, "--steps")) {
            if (parse_long(v, 1, 100000, &x)) return usage_fail("--steps: expected 1..100000, got \"%s\"", v);
            a->steps = (int)x;
        } else if (!strcmp(o, "--epochs")) {
            if (parse_long(v, 1, 1000, &x)) return usage_fail("--epochs: expected 1..1000, got \"%s\"", v);
            a->epochs = (int)x;
        } else if (!strcmp(o, "--threads")) {
            if (parse_long(v, 0, 1024, &x)) return usage_fail("--threads: expected 0..1024, got \"%s\"", v);
            a->threads = (int)x;
        } else if (!strcmp(o, "--seed")) {
            if (parse_long(v, 0, 0x7fffffffL, &x)) return usage_fail("--seed: expected 0..2^31-1, got \"%s\"", v);
            a->seed = x;
        } else return usage_fail("unknown option \"%s\"", o);
    }
    return 0;
}

static void print_line(void *ctx, const char *line) {
    (void)ctx;
    printf("%s\n", line);
    fflush(stdout);
}

static void default_out(char *out, size_t cap) {
    const char *src = getenv("REED_SRC");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%sassets", src && *src ? src : "", src && *src ? "/" : "");
    mkdir(dir, 0755); // may exist; st_write reports real failures
    snprintf(out, cap, "%s/evaluator.safetensors", dir);
}

static int load_evaluator(evaluator_model *e, const eval_args *a, reed_error *err) {
    char path[8192];
    if (a->weights) snprintf(path, sizeof path, "%s", a->weights);
    else evaluator_default_weights(path, sizeof path);
    return evaluator_load(e, path, err);
}

static int cmd_train(const eval_args *a) {
    evaluator_model e;
    reed_error err = {{0}};
    char out[8192];
    if (a->out) snprintf(out, sizeof out, "%s", a->out);
    else default_out(out, sizeof out);
    teacher_train_opts o;
    teacher_train_defaults(&o);
    o.data_dir = a->data;
    o.epochs = a->epochs;
    o.seed = a->seed >= 0 ? (uint64_t)a->seed : EVALUATOR_SEED;
    o.log = print_line;
    o.log_every = 100;
    o.batch = 128;
    if (evaluator_init(&e, &err) || evaluator_train(&reed_ops_cpu, &e, &o, &err) ||
        evaluator_save(&e, out, &err)) {
        fprintf(stderr, "reed evaluator train: %s\n", err.msg);
        evaluator_free(&e);
        return 1;
    }
    printf("evaluator: test accuracy %.2f%% after %d epochs; wrote %s\n",
           100.0 * e.test_accuracy, e.epochs, out);
    evaluator_free(&e);
    return 0;
}

static int cmd_check(const eval_args *a) {
    evaluator_model e = {0};
    teacher_split s = {0};
    evaluator_acts acts = {0};
    reed_error err = {{0}};
    int rc = 1;
    if (load_evaluator(&e, a, &err) || teacher_split_load(&s, a->data, "t10k", &err) ||
        evaluator_acts_alloc(&acts, &e, EVAL_BATCH, 0, &err)) {
        fprintf(stderr, "reed evaluator eval: %s\n", err.msg);
        goto done;
    }
    double acc = evaluator_evaluate(&reed_ops_cpu, &e, &acts, &s, 0);
    printf("evaluator: test accuracy %.2f%% on %d test images; stated %.2f%%\n", 100.0 * acc,
           s.N, 100.0 * e.test_accuracy);
    rc = 0;
done:
    evaluator_acts_free(&acts);
    teacher_split_free(&s);
    evaluator_free(&e);
    return rc;
}

int evaluator_command(int argc, char **argv) {
    if (argc < 3 || !strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) {
        usage(argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    eval_args a;
    int rc = parse_args(&a, argc, argv, 3);
    if (rc) return rc;
    reed_cpu_set_threads(a.threads);
    if (!strcmp(argv[2], "train")) return cmd_train(&a);
    if (!strcmp(argv[2], "eval")) return cmd_check(&a);
    return usage_fail("unknown evaluator subcommand \"%s\" (train, eval)", argv[2]);
}

/* Samples n images (n ≤ 1024) into x (n,1,28,28) in [-1,1]: draws the grid,
 * then untiles it (2-pixel border, ceil(sqrt(n)) columns; bytes b map to
 * b/127.5 − 1, so samples carry 8-bit quantisation like the data). */
static int draw(reed_run *run, const reed_sample_config *sc, float *x, reed_error *err) {
    reed_grid g = {0};
    if (reed_run_sample(run, sc, NULL, &g, err)) return -1;
    const int S = EVAL_IMAGE, n = sc->n, cols = (int)ceil(sqrt((double)n));
    for (int i = 0; i < n; i++) {
        int ox = PAD + (i % cols) * (S + PAD), oy = PAD + (i / cols) * (S + PAD);
        for (int r = 0; r < S; r++)
            for (int q = 0; q < S; q++)
                x[((size_t)i * S + r) * S + q] =
                    g.pixels[((size_t)(oy + r) * g.width + ox + q) * g.channels] / 127.5f - 1.0f;
    }
    free(g.pixels);
    return 0;
}

static int argmax10(const float *l) {
    int k = 0;
    for (int j = 1; j < EVAL_CLASSES; j++)
        if (l[j] > l[k]) k = j;
    return k;
}

int eval_command(int argc, char **argv) {
    if (argc < 3 || !strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) {
        usage(argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    if (argv[2][0] == '-') return usage_fail("%s", "missing CHECKPOINT");
    eval_args a;
    int rc = parse_args(&a, argc, argv, 3);
    if (rc) return rc;
    reed_cpu_set_threads(a.threads);
    static reed_config cfg;
    reed_error err = {{0}};
    char ckpt[REED_PATH_LEN], *text = NULL;
    reed_run *run = NULL;
    evaluator_model e = {0};
    evaluator_acts acts = {0};
    teacher_split test = {0};
    float *x = NULL, *fs = NULL, *ft = NULL, *logits = NULL;
    double *mu1 = NULL, *c1 = NULL, *mu2 = NULL, *c2 = NULL;
    rc = 1;
    if (reed_checkpoint_config(argv[2], &text, ckpt, &err) ||
        reed_config_load_string(&cfg, text, ckpt, &err))
        goto fail;
    if (cfg.model.in_channels != 1 || cfg.model.image_size != EVAL_IMAGE) {
        reed_errorf(&err, "%s: the evaluator needs 1x28x28 samples (model is %dx%dx%d)", ckpt,
                    cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size);
        goto fail;
    }
    reed_sample_config sc = cfg.sample;
    sc.class_label = -1;
    if (a.steps > 0) sc.steps = a.steps;
    if (a.seed >= 0) sc.seed = (uint64_t)a.seed;
    else sc.seed = 0;
    if (a.sampler) {
        int k = reed_name_index(reed_sampler_names, a.sampler);
        if (k < 0) {
            rc = usage_fail("--sampler: expected euler, heun or sde, got \"%s\"", a.sampler);
            goto done;
        }
        sc.sampler = (reed_sampler)k;
    }
    if (load_evaluator(&e, &a, &err) || teacher_split_load(&test, a.data, "t10k", &err) ||
        evaluator_acts_alloc(&acts, &e, EVAL_BATCH, 0, &err) ||
        reed_run_open(&run, &cfg, text, NULL, &err) || reed_run_load(run, ckpt, &err))
        goto fail;
    const int N = a.n, D = EVAL_DIM;
    const size_t img = (size_t)EVAL_IMAGE * EVAL_IMAGE;
    x = malloc(sizeof(float) * (size_t)N * img);
    fs = malloc(sizeof(float) * (size_t)N * D);
    ft = malloc(sizeof(float) * (size_t)test.N * D);
    logits = malloc(sizeof(float) * (size_t)N * EVAL_CLASSES);
    mu1 = malloc(sizeof(double) * D);
    mu2 = malloc(sizeof(double) * D);
    c1 = malloc(sizeof(double) * D * D);
    c2 = malloc(sizeof(double) * D * D);
    if (!x || !fs || !ft || !logits || !mu1 || !mu2 || !c1 || !c2) {
        reed_errorf(&err, "out of memory");
        goto fail;
    }
    // Chunks of SAMPLE_CHUNK (a multiple of 10, so sample i keeps class
    // i % 10) at seeds seed, seed+1, ...
    uint64_t seed0 = sc.seed;
    for (int i = 0, c = 0; i < N; i += SAMPLE_CHUNK, c++) {
        reed_sample_config chunk = sc;
        chunk.n = N - i < SAMPLE_CHUNK ? N - i : SAMPLE_CHUNK;
        chunk.seed = seed0 + (uint64_t)c;
        if (draw(run, &chunk, x + (size_t)i * img, &err)) goto fail;
    }
    evaluator_features(&reed_ops_cpu, &e, &acts, x, N, fs, logits);
    evaluator_features(&reed_ops_cpu, &e, &acts, test.images, test.N, ft, NULL);
    if (frechet_stats(fs, N, D, mu1, c1, &err) || frechet_stats(ft, test.N, D, mu2, c2, &err))
        goto fail;
    double fd = frechet_distance(mu1, c1, mu2, c2, D);
    int hits = 0;
    for (int i = 0; i < N; i++) hits += argmax10(logits + (size_t)i * EVAL_CLASSES) == i % 10;
    printf("eval %s: n %d, sampler %s, steps %d, cfg %g, seed %llu, %s weights\n", ckpt, N,
           reed_sampler_names[sc.sampler], sc.steps, sc.cfg, (unsigned long long)seed0,
           sc.ema ? "EMA" : "online");
    printf("FD %.4f (evaluator features, %d dims, vs %d test images)\n", fd, D, test.N);
    printf("class accuracy %.2f%% (%d/%d samples classified as their class)\n",
           100.0 * hits / N, hits, N);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "reed eval: %s\n", err.msg);
done:
    reed_run_close(run);
    free(text);
    free(x); free(fs); free(ft); free(logits);
    free(mu1); free(mu2); free(c1); free(c2);
    evaluator_acts_free(&acts);
    teacher_split_free(&test);
    evaluator_free(&e);
    return rc;
}
