/* The command-line parts `reed teacher` and `reed evaluator` share (see
 * cnn_cmd.h). */
#include "cnn_cmd.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ops.h"

#define DATA_DIR "/usr/share/datasets/fashion-mnist"
enum { EVAL_BATCH = 500 };

/* --- options --------------------------------------------------------------------- */

typedef enum { OPT_TEXT, OPT_SPLIT, OPT_INT, OPT_LONG, OPT_LR } option_kind;

typedef struct option {
    const char *name;
    option_kind kind;
    long lo, hi;              /* OPT_INT, OPT_LONG */
    const char *expect;       /* the usage error's "expected ..." */
    size_t at;                /* the field: offsetof(cnn_args, ...) */
} option;

#define AT(field) offsetof(cnn_args, field)
static const option options[] = {
    {"--out", OPT_TEXT, 0, 0, NULL, AT(out)},
    {"--weights", OPT_TEXT, 0, 0, NULL, AT(weights)},
    {"--out-tokens", OPT_TEXT, 0, 0, NULL, AT(out_tokens)},
    {"--out-global", OPT_TEXT, 0, 0, NULL, AT(out_global)},
    {"--data", OPT_TEXT, 0, 0, NULL, AT(data)},
    {"--sampler", OPT_TEXT, 0, 0, NULL, AT(sampler)},
    {"--split", OPT_SPLIT, 0, 0, "train or test", AT(split)},
    {"--epochs", OPT_INT, 1, 1000, "1..1000", AT(epochs)},
    {"--batch", OPT_INT, 1, 4096, "1..4096", AT(batch)},
    {"--threads", OPT_INT, 0, 1024, "0..1024", AT(threads)},
    {"--limit", OPT_INT, 0, 1L << 30, "a count", AT(limit)},
    {"--n", OPT_INT, 2, 100000, "2..100000", AT(n)},
    {"--steps", OPT_INT, 1, 100000, "1..100000", AT(steps)},
    {"--seed", OPT_LONG, 0, 0x7fffffffL, "0..2^31-1", AT(seed)},
    {"--lr", OPT_LR, 0, 0, "a number in (0, 1)", AT(lr)},
};
#undef AT

int cnn_usage_fail(const cnn_tool *tool, const char *fmt, const char *arg) {
    fprintf(stderr, "%s: ", tool->prefix);
    fprintf(stderr, fmt, arg);
    fputs("\n", stderr);
    tool->usage(stderr);
    return 2;
}

/* Whether the space-separated list holds the word. */
static int listed(const char *list, const char *word) {
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return 1;
    return 0;
}

static const option *find_option(const cnn_tool *tool, const char *name) {
    for (size_t i = 0; i < sizeof options / sizeof *options; i++)
        if (!strcmp(options[i].name, name)) return listed(tool->options, name) ? &options[i] : NULL;
    return NULL;
}

static int parse_long(const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

/* Stores v in the option's field; -1 when v is not a valid value. */
static int set_option(const option *o, cnn_args *a, const char *v) {
    char *field = (char *)a + o->at;
    long x;
    char *end;
    switch (o->kind) {
    case OPT_SPLIT:
        if (strcmp(v, "train") && strcmp(v, "test")) return -1;
        /* fall through */
    case OPT_TEXT:
        *(const char **)field = v;
        return 0;
    case OPT_INT:
    case OPT_LONG:
        if (parse_long(v, o->lo, o->hi, &x)) return -1;
        if (o->kind == OPT_INT) *(int *)field = (int)x;
        else *(long *)field = x;
        return 0;
    case OPT_LR: {
        double lr = strtod(v, &end);
        if (end == v || *end || !(lr > 0 && lr < 1)) return -1;
        *(double *)field = lr;
        return 0;
    }
    }
    return -1;
}

int cnn_parse_args(const cnn_tool *tool, cnn_args *a, int argc, char **argv, int first) {
    memset(a, 0, sizeof *a);
    a->data = DATA_DIR;
    a->split = "train";
    a->n = 1000;
    a->seed = -1;
    for (int i = first; i < argc; i++) {
        const char *name = argv[i];
        if (name[0] != '-') return cnn_usage_fail(tool, "unexpected argument \"%s\"", name);
        if (i + 1 >= argc) return cnn_usage_fail(tool, "%s: missing value", name);
        const char *v = argv[++i];
        const option *o = find_option(tool, name);
        if (!o) return cnn_usage_fail(tool, "unknown option \"%s\"", name);
        if (set_option(o, a, v)) {
            char fmt[128]; // our own name and words, then the user's value
            snprintf(fmt, sizeof fmt, "%s: expected %s, got \"%%s\"", o->name, o->expect);
            return cnn_usage_fail(tool, fmt, v);
        }
    }
    return 0;
}

/* --- train and eval ---------------------------------------------------------------- */

static void print_line(void *ctx, const char *line) {
    (void)ctx;
    printf("%s\n", line);
    fflush(stdout);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Where `train` writes by default: $REED_SRC/REL or ./REL, REL the shipped
 * file (e.g. assets/teacher.safetensors); makes REL's directory. */
static void default_out(const char *rel, char *out, size_t cap) {
    const char *src = getenv("REED_SRC");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s%s", src && *src ? src : "", src && *src ? "/" : "", rel);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        mkdir(dir, 0755); // may exist; st_write reports real failures
        *slash = '/';
    }
    snprintf(out, cap, "%s", dir);
}

int cnn_cmd_train(const cnn_tool *tool, const cnn_args *a) {
    const reed_ops *ops = &reed_ops_cpu;
    cnn_model m = {0};
    reed_error err = {{0}};
    char out[8192];
    if (a->out) snprintf(out, sizeof out, "%s", a->out);
    else default_out(tool->arch->weights, out, sizeof out);
    cnn_train_opts o;
    tool->train_defaults(&o);
    o.data_dir = a->data;
    if (a->epochs > 0) o.epochs = a->epochs;
    if (a->seed >= 0) o.seed = (uint64_t)a->seed;
    if (a->lr > 0) o.lr = (float)a->lr;
    if (a->batch > 0) o.batch = a->batch;
    o.log = print_line;
    double t0 = now_s();
    int rc = cnn_init(ops, &m, tool->arch, &err) || cnn_train(ops, &m, &o, &err);
    double seconds = now_s() - t0;
    if (rc == 0) rc = cnn_save(&m, out, &err);
    if (rc) fprintf(stderr, "reed %s train: %s\n", tool->arch->name, err.msg);
    else
        printf("%s: test accuracy %.2f%% after %d epochs in %.0fs; wrote %s\n",
               tool->arch->name, 100.0 * m.test_accuracy, m.epochs, seconds, out);
    cnn_free(&m);
    return rc ? 1 : 0;
}

int cnn_cmd_load(const reed_ops *ops, const cnn_tool *tool, const cnn_args *a, cnn_model *m,
                 reed_error *err) {
    char path[8192];
    if (a->weights) snprintf(path, sizeof path, "%s", a->weights);
    else cnn_default_weights(tool->arch, path, sizeof path);
    return cnn_load(ops, m, tool->arch, path, err);
}

int cnn_cmd_eval(const cnn_tool *tool, const cnn_args *a) {
    const reed_ops *ops = &reed_ops_cpu;
    cnn_model m = {0};
    cnn_split s = {0};
    cnn_acts acts = {0};
    reed_error err = {{0}};
    int rc = cnn_cmd_load(ops, tool, a, &m, &err) ||
             cnn_split_load(&s, a->data, "t10k", &err) ||
             cnn_acts_alloc(ops, &acts, &m, EVAL_BATCH, 0, &err);
    if (rc) {
        fprintf(stderr, "reed %s eval: %s\n", tool->arch->name, err.msg);
    } else {
        double loss, acc = cnn_evaluate(ops, &m, &acts, &s, 0, &loss);
        printf("%s: test accuracy %.2f%% (loss %.4f) on %d test images; stated %.2f%%\n",
               tool->arch->name, 100.0 * acc, loss, s.N, 100.0 * m.test_accuracy);
    }
    cnn_acts_free(&acts);
    cnn_split_free(&s);
    cnn_free(&m);
    return rc;
}
