/* What `reed teacher` and `reed evaluator` (and `reed eval`'s options) share
 * on the command line: option parsing, usage errors, `train` and `eval`
 * (engine/cnn.h). */
#ifndef REED_CNN_CMD_H
#define REED_CNN_CMD_H

#include <stdio.h>

#include "cnn.h"

/* One command's face: how it names itself and what it accepts. */
typedef struct cnn_tool {
    const char *prefix;            /* usage errors: "reed teacher: ..." */
    void (*usage)(FILE *f);
    const char *options;           /* accepted options, space-separated */
    const cnn_arch *arch;          /* the network of `train` and `eval` */
    void (*train_defaults)(cnn_train_opts *o);
} cnn_tool;

/* Every option any of the commands takes; 0 / NULL when not given, except
 * as noted. */
typedef struct cnn_args {
    const char *out, *weights, *data, *split, *sampler, *out_tokens, *out_global;
    int epochs, batch, threads, limit, n, steps;
    long seed;                     /* -1 when not given */
    double lr;
    /* defaults: data the Fashion-MNIST directory, split "train", n 1000 */
} cnn_args;

/* Prints "PREFIX: " fmt (with arg) and the usage to stderr; returns 2. */
int cnn_usage_fail(const cnn_tool *tool, const char *fmt, const char *arg);
/* Parses argv[first..] as --option value pairs the tool accepts into a
 * (defaults first). Returns 0, or 2 after a usage error. */
int cnn_parse_args(const cnn_tool *tool, cnn_args *a, int argc, char **argv, int first);

/* `train`: trains the tool's network (the tool's defaults, changed by
 * --epochs, --seed, --lr, --batch, --data), writes it to --out or the
 * shipped file's place under $REED_SRC (or ./), and says where. Returns
 * the exit status. */
int cnn_cmd_train(const cnn_tool *tool, const cnn_args *a);
/* `eval`: the accuracy of --weights (or the shipped weights) on the
 * Fashion-MNIST test split, next to the accuracy they state. */
int cnn_cmd_eval(const cnn_tool *tool, const cnn_args *a);
/* Loads --weights, or the shipped weights, onto ops' backend. */
int cnn_cmd_load(const reed_ops *ops, const cnn_tool *tool, const cnn_args *a, cnn_model *m,
                 reed_error *err);

#endif
