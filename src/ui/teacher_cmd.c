/* reed teacher train|features|eval: the teacher encoder from the command line. */
#include "teacher_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn_cmd.h"
#include "formats.h"
#include "ops.h"
#include "teacher.h"

enum { FEATURE_BATCH = 500 };

static void teacher_usage(FILE *f) {
    fputs("usage:\n"
          "  reed teacher train [--out PATH] [--epochs N] [--seed S] [--lr LR]\n"
          "                     [--batch B] [--threads N] [--data DIR]\n"
          "  reed teacher features [--weights PATH] --out-tokens T.npy --out-global G.npy\n"
          "                        [--split train|test] [--limit N] [--threads N] [--data DIR]\n"
          "  reed teacher eval [--weights PATH] [--threads N] [--data DIR]\n"
          "\n"
          "train     trains the teacher CNN on Fashion-MNIST labels and writes its weights\n"
          "          (default " TEACHER_DEFAULT_WEIGHTS ", under $REED_SRC when set).\n"
          "features  writes token features (N, 49, 64) and global features (N, 64) as .npy.\n"
          "eval      the test accuracy on the 10,000 Fashion-MNIST test images.\n",
          f);
}

static const cnn_tool teacher_tool = {
    .prefix = "reed teacher",
    .usage = teacher_usage,
    .options = "--out --weights --out-tokens --out-global --split --data --epochs --batch "
               "--threads --limit --lr --seed",
    .arch = &teacher_arch,
    .train_defaults = teacher_train_defaults,
};

enum { TOKEN_ROW = TEACHER_TOKENS * TEACHER_DIM };

/* Features of the first N images of s into host tok (N,49,64) and glob
 * (N,64), a batch at a time through backend buffers. */
static int extract(const reed_ops *ops, const teacher_model *t, teacher_acts *acts,
                   const cnn_split *s, int N, float *tok, float *glob, reed_error *err) {
    const size_t img = (size_t)TEACHER_IMAGE * TEACHER_IMAGE;
    float *tok_dev = ops->mem_alloc(sizeof(float) * FEATURE_BATCH * TOKEN_ROW);
    float *glob_dev = ops->mem_alloc(sizeof(float) * FEATURE_BATCH * TEACHER_DIM);
    int rc = tok_dev && glob_dev ? 0 : reed_errorf(err, "out of memory (%s)", ops->name);
    for (int i = 0; rc == 0 && i < N; i += FEATURE_BATCH) {
        int B = N - i < FEATURE_BATCH ? N - i : FEATURE_BATCH;
        ops->upload(acts->x, s->images + (size_t)i * img, sizeof(float) * B * img);
        teacher_features(ops, t, acts, acts->x, B, tok_dev, glob_dev);
        ops->download(tok + (size_t)i * TOKEN_ROW, tok_dev, sizeof(float) * B * TOKEN_ROW);
        ops->download(glob + (size_t)i * TEACHER_DIM, glob_dev,
                      sizeof(float) * (size_t)B * TEACHER_DIM);
    }
    ops->mem_free(tok_dev);
    ops->mem_free(glob_dev);
    return rc;
}

static int cmd_features(const cnn_args *a) {
    if (!a->out_tokens || !a->out_global)
        return cnn_usage_fail(&teacher_tool, "features: %s",
                              "--out-tokens and --out-global are required");
    const reed_ops *ops = &reed_ops_cpu;
    teacher_model t = {0};
    cnn_split s = {0};
    teacher_acts acts = {0};
    reed_error err = {{0}};
    float *tok = NULL, *glob = NULL;
    int rc = 1;
    if (cnn_cmd_load(ops, &teacher_tool, a, &t, &err) ||
        cnn_split_load(&s, a->data, strcmp(a->split, "test") ? "train" : "t10k", &err) ||
        teacher_acts_alloc(ops, &acts, &t, FEATURE_BATCH, &err))
        goto fail;
    int N = a->limit > 0 && a->limit < s.N ? a->limit : s.N;
    tok = malloc(sizeof(float) * (size_t)N * TOKEN_ROW);
    glob = malloc(sizeof(float) * (size_t)N * TEACHER_DIM);
    if (!tok || !glob) {
        reed_errorf(&err, "out of memory for %d examples' features (try --limit)", N);
        goto fail;
    }
    const int64_t ts[3] = {N, TEACHER_TOKENS, TEACHER_DIM}, gs[2] = {N, TEACHER_DIM};
    if (extract(ops, &t, &acts, &s, N, tok, glob, &err) ||
        npy_save(a->out_tokens, tok, 3, ts, &err) || npy_save(a->out_global, glob, 2, gs, &err))
        goto fail;
    printf("teacher: features of %d %s images: %s (%d, %d, %d), %s (%d, %d)\n", N, a->split,
           a->out_tokens, N, TEACHER_TOKENS, TEACHER_DIM, a->out_global, N, TEACHER_DIM);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "reed teacher features: %s\n", err.msg);
done:
    free(tok);
    free(glob);
    teacher_acts_free(&acts);
    cnn_split_free(&s);
    teacher_free(&t);
    return rc;
}

int teacher_command(int argc, char **argv) {
    if (argc < 3 || !strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) {
        teacher_usage(argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    cnn_args a;
    int rc = cnn_parse_args(&teacher_tool, &a, argc, argv, 3);
    if (rc) return rc;
    reed_cpu_set_threads(a.threads);
    const char *sub = argv[2];
    if (!strcmp(sub, "train")) return cnn_cmd_train(&teacher_tool, &a);
    if (!strcmp(sub, "eval")) return cnn_cmd_eval(&teacher_tool, &a);
    if (!strcmp(sub, "features")) return cmd_features(&a);
    return cnn_usage_fail(&teacher_tool, "unknown subcommand \"%s\" (train, features, eval)",
                          sub);
}
