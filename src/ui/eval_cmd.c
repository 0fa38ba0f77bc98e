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
#include "lua/lua_config.h"
#include "ops.h"
#include "quality.h"
#include "reed.h"

#define DATA_DIR "/usr/share/datasets/fashion-mnist"
enum { EVAL_BATCH = 500 };

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

static int parse_sampler(const char *name, reed_sampler *out) {
    int k = reed_name_index(reed_sampler_names, name);
    if (k < 0) return usage_fail("--sampler: expected euler, heun or sde, got \"%s\"", name);
    *out = (reed_sampler)k;
    return 0;
}

/* The checkpoint's sample settings with the command line's changes; the
 * default seed is 0, so that evaluations of different runs compare. */
static int eval_sample_config(const reed_config *cfg, const eval_args *a,
                              reed_sample_config *sc) {
    *sc = cfg->sample;
    if (a->steps > 0) sc->steps = a->steps;
    sc->seed = a->seed >= 0 ? (uint64_t)a->seed : 0;
    return a->sampler ? parse_sampler(a->sampler, &sc->sampler) : 0;
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
    reed_quality *q = NULL;
    reed_sample_config sc;
    reed_quality_result r;
    rc = 1;
    if (reed_checkpoint_config(argv[2], &text, ckpt, &err) ||
        reed_config_load_string(&cfg, text, ckpt, &err))
        goto fail;
    if ((rc = eval_sample_config(&cfg, &a, &sc)) != 0) goto done;
    rc = 1;
    if (reed_quality_open(&q, a.weights, a.data, &err) ||
        reed_run_open(&run, &cfg, text, NULL, &err) || reed_run_load(run, ckpt, &err) ||
        reed_quality_measure(q, run, &sc, a.n, &r, &err))
        goto fail;
    printf("eval %s: n %d, sampler %s, steps %d, cfg %g, seed %llu, %s weights\n", ckpt, a.n,
           reed_sampler_names[sc.sampler], sc.steps, sc.cfg, (unsigned long long)sc.seed,
           sc.ema ? "EMA" : "online");
    printf("FD %.4f (evaluator features, %d dims, vs the 10000 test images)\n", r.fd, EVAL_DIM);
    printf("class accuracy %.2f%% (%d/%d samples classified as their class)\n",
           100.0 * r.cond_acc, (int)lround(r.cond_acc * r.n), r.n);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "reed eval: %s\n", err.msg);
done:
    reed_run_close(run);
    reed_quality_close(q);
    free(text);
    return rc;
}
