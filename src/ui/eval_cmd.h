/* reed eval CHECKPOINT|RUN_DIR [--n N] [--steps S] [--seed S] [--sampler K]
 * reed evaluator train|eval [--out PATH] [--weights PATH] ...
 * Sample quality with the evaluator network (DESIGN.md §4, issue 3). */
#ifndef REED_EVAL_CMD_H
#define REED_EVAL_CMD_H

/* argv[1] is "eval": FD and class accuracy of a checkpoint's samples. */
int eval_command(int argc, char **argv);
/* argv[1] is "evaluator": train or check the evaluator network. */
int evaluator_command(int argc, char **argv);

#endif
