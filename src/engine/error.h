/* Recoverable errors: a function that can fail on bad input returns -1 and
 * fills a reed_error with a message that names the file and the problem.
 * Nothing in the engine exits or prints on its own. */
#ifndef REED_ERROR_H
#define REED_ERROR_H

#include <stddef.h>

typedef struct reed_error {
    char msg[1024];
} reed_error;

/* Formats the message into err (if not NULL) and returns -1. */
int reed_errorf(reed_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message: "prefix: old message". Returns -1. */
int reed_error_prefix(reed_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
