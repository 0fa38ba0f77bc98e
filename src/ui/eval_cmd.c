/* reed eval / reed evaluator (see eval_cmd.h). */
#include "eval_cmd.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn_cmd.h"
#include "config.h"
#include "evaluator.h"
#include "lua/lua_config.h"
#include "ops.h"
#include "quality.h"
#include "reed.h"

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

/* `reed eval` and `reed evaluator` take the same options. */
static const cnn_tool evaluator_tool = {
    .prefix = "reed eval",
    .usage = usage,
    .options = "--out --weights --data --sampler --n --steps --epochs --threads --seed",
    .arch = &evaluator_arch,
    .train_defaults = evaluator_train_defaults,
};

static int usage_fail(const char *fmt, const char *arg) {
    return cnn_usage_fail(&evaluator_tool, fmt, arg);
}

int evaluator_command(int argc, char **argv) {
    if (argc < 3 || !strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) {
        usage(argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    cnn_args a;
    int rc = cnn_parse_args(&evaluator_tool, &a, argc, argv, 3);
    if (rc) return rc;
    reed_cpu_set_threads(a.threads);
    if (!strcmp(argv[2], "train")) return cnn_cmd_train(&evaluator_tool, &a);
    if (!strcmp(argv[2], "eval")) return cnn_cmd_eval(&evaluator_tool, &a);
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
static int eval_sample_config(const reed_config *cfg, const cnn_args *a,
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
    cnn_args a;
    int rc = cnn_parse_args(&evaluator_tool, &a, argc, argv, 3);
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
