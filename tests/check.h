/* Check bookkeeping shared by the C tests: check() prints one line per
 * check ("ok" or "FAIL" and what was compared) and counts failures. */
#ifndef REED_TEST_CHECK_H
#define REED_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>

static int checks, failures;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3), unused));
static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    checks++;
    failures += !ok;
}

#endif
