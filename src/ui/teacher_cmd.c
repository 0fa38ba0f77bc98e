/* reed teacher train|features|eval: the teacher encoder from the command line. */
#include "teacher_cmd.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "formats.h"
#include "ops.h"
#include "teacher.h"

#define DATA_DIR "/usr/share/datasets/fashion-mnist"
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

static int usage_fail(const char *fmt, const char *arg) {
    fprintf(stderr, "reed teacher: ");
    fprintf(stderr, fmt, arg);
    fputs("\n", stderr);
    teacher_usage(stderr);
    return 2;
}

/* Where `train` writes by default: $REED_SRC/assets/... or ./assets/... */
static void default_out(char *out, size_t cap) {
    const char *src = getenv("REED_SRC");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%sassets", src && *src ? src : "", src && *src ? "/" : "");
    mkdir(dir, 0755); // may exist; st_write reports real failures
    snprintf(out, cap, "%s/teacher.safetensors", dir);
}

typedef struct teacher_args {
    const char *out, *weights, *out_tokens, *out_global, *split, *data;
    int epochs, threads, limit, batch;
    unsigned long long seed;
    double lr;
} teacher_args;

static int parse_int(const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

static int parse_args(teacher_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->epochs = 6;
    a->split = "train";
    a->data = DATA_DIR;
    for (int i = 3; i < argc; i++) {
        const char *o = argv[i];
        if (o[0] != '-') return usage_fail("unexpected argument \"%s\"", o);
        if (i + 1 >= argc) return usage_fail("%s: missing value", o);
        const char *v = argv[++i];
        long x;
        if (!strcmp(o, "--out")) a->out = v;
        else if (!strcmp(o, "--weights")) a->weights = v;
        else if (!strcmp(o, "--out-tokens")) a->out_tokens = v;
        else if (!strcmp(o, "--out-global")) a->out_global = v;
        else if (!strcmp(o, "--data")) a->data = v;
        else if (!strcmp(o, "--split")) {
            if (strcmp(v, "train") && strcmp(v, "test"))
                return usage_fail("--split: expected train or test, got \"%s\"", v);
            a->split = v;
        } else if (!strcmp(o, "--epochs")) {
            if (parse_int(v, 1, 1000, &x)) return usage_fail("--epochs: expected 1..1000, got \"%s\"", v);
            a->epochs = (int)x;
        } else if (!strcmp(o, "--batch")) {
            if (parse_int(v, 1, 4096, &x)) return usage_fail("--batch: expected 1..4096, got \"%s\"", v);
            a->batch = (int)x;
        } else if (!strcmp(o, "--threads")) {
            if (parse_int(v, 0, 1024, &x)) return usage_fail("--threads: expected 0..1024, got \"%s\"", v);
            a->threads = (int)x;
        } else if (!strcmp(o, "--limit")) {
            if (parse_int(v, 0, 1 << 30, &x)) return usage_fail("--limit: expected a count, got \"%s\"", v);
            a->limit = (int)x;
        } else if (!strcmp(o, "--lr")) {
            char *end;
            a->lr = strtod(v, &end);
            if (end == v || *end || !(a->lr > 0 && a->lr < 1))
                return usage_fail("--lr: expected a number in (0, 1), got \"%s\"", v);
        } else if (!strcmp(o, "--seed")) {
            if (parse_int(v, 0, 0x7fffffffL, &x)) return usage_fail("--seed: expected 0..2^31-1, got \"%s\"", v);
            a->seed = (unsigned long long)x;
        } else return usage_fail("unknown option \"%s\"", o);
    }
    return 0;
}

static void print_line(void *ctx, const char *line) {
    (void)ctx;
    printf("%s\n", line);
    fflush(stdout);
}

static int cmd_train(const teacher_args *a) {
    teacher_model t;
    reed_error err = {{0}};
    char out[8192];
    if (a->out) snprintf(out, sizeof out, "%s", a->out);
    else default_out(out, sizeof out);
    if (teacher_init(&t, &err)) goto fail;
    teacher_train_opts o;
    teacher_train_defaults(&o);
    o.data_dir = a->data;
    o.epochs = a->epochs;
    o.seed = a->seed;
    if (a->lr > 0) o.lr = (float)a->lr;
    if (a->batch > 0) o.batch = a->batch;
    o.log = print_line;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (teacher_train(&reed_ops_cpu, &t, &o, &err)) goto fail;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (teacher_save(&t, out, &err)) goto fail;
    printf("teacher: test accuracy %.2f%% after %d epochs in %.0fs; wrote %s\n",
           100.0 * t.test_accuracy, t.epochs,
           (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9, out);
    teacher_free(&t);
    return 0;
fail:
    fprintf(stderr, "reed teacher train: %s\n", err.msg);
    teacher_free(&t);
    return 1;
}

static int load_weights(teacher_model *t, const teacher_args *a, reed_error *err) {
    char path[8192];
    if (a->weights) snprintf(path, sizeof path, "%s", a->weights);
    else teacher_default_weights(path, sizeof path);
    return teacher_load(t, path, err);
}

static int cmd_eval(const teacher_args *a) {
    teacher_model t = {0};
    teacher_split s = {0};
    teacher_acts acts = {0};
    reed_error err = {{0}};
    int rc = 1;
    if (load_weights(&t, a, &err) || teacher_split_load(&s, a->data, "t10k", &err) ||
        teacher_acts_alloc(&acts, &t, FEATURE_BATCH, 0, &err)) {
        fprintf(stderr, "reed teacher eval: %s\n", err.msg);
        goto done;
    }
    double loss, acc = teacher_evaluate(&reed_ops_cpu, &t, &acts, &s, 0, &loss);
    printf("teacher: test accuracy %.2f%% (loss %.4f) on %d test images; "
           "stated %.2f%%\n", 100.0 * acc, loss, s.N, 100.0 * t.test_accuracy);
    rc = 0;
done:
    teacher_acts_free(&acts);
    teacher_split_free(&s);
    teacher_free(&t);
    return rc;
}

static int cmd_features(const teacher_args *a) {
    if (!a->out_tokens || !a->out_global)
        return usage_fail("features: %s", "--out-tokens and --out-global are required");
    teacher_model t = {0};
    teacher_split s = {0};
    teacher_acts acts = {0};
    reed_error err = {{0}};
    float *tok = NULL, *glob = NULL;
    int rc = 1;
    if (load_weights(&t, a, &err) ||
        teacher_split_load(&s, a->data, strcmp(a->split, "test") ? "train" : "t10k", &err) ||
        teacher_acts_alloc(&acts, &t, FEATURE_BATCH, 0, &err))
        goto fail;
    int N = a->limit > 0 && a->limit < s.N ? a->limit : s.N;
    tok = malloc(sizeof(float) * (size_t)N * TEACHER_TOKENS * TEACHER_DIM);
    glob = malloc(sizeof(float) * (size_t)N * TEACHER_DIM);
    if (!tok || !glob) {
        reed_errorf(&err, "out of memory for %d examples' features (try --limit)", N);
        goto fail;
    }
    const size_t img = (size_t)TEACHER_IMAGE * TEACHER_IMAGE;
    for (int i = 0; i < N; i += FEATURE_BATCH) {
        int B = N - i < FEATURE_BATCH ? N - i : FEATURE_BATCH;
        teacher_features(&reed_ops_cpu, &t, &acts, s.images + (size_t)i * img, B,
                         tok + (size_t)i * TEACHER_TOKENS * TEACHER_DIM,
                         glob + (size_t)i * TEACHER_DIM);
    }
    const int64_t ts[3] = {N, TEACHER_TOKENS, TEACHER_DIM}, gs[2] = {N, TEACHER_DIM};
    if (npy_save(a->out_tokens, tok, 3, ts, &err) || npy_save(a->out_global, glob, 2, gs, &err))
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
    teacher_split_free(&s);
    teacher_free(&t);
    return rc;
}

int teacher_command(int argc, char **argv) {
    if (argc < 3 || !strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) {
        teacher_usage(argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    teacher_args a;
    int rc = parse_args(&a, argc, argv);
    if (rc) return rc;
    reed_cpu_set_threads(a.threads);
    const char *sub = argv[2];
    if (!strcmp(sub, "train")) return cmd_train(&a);
    if (!strcmp(sub, "eval")) return cmd_eval(&a);
    if (!strcmp(sub, "features")) return cmd_features(&a);
    return usage_fail("unknown subcommand \"%s\" (train, features, eval)", sub);
}
