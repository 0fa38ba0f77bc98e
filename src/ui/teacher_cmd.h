/* `reed teacher ...`: train, evaluate and extract features of the teacher
 * encoder (engine/teacher.h). */
#ifndef REED_TEACHER_CMD_H
#define REED_TEACHER_CMD_H

/* argv[0] is "reed" (or any program name), argv[1] "teacher", argv[2] the
 * subcommand: train, features or eval. Returns the process exit status
 * (0 ok, 1 failure, 2 usage error). */
int teacher_command(int argc, char **argv);

#endif
