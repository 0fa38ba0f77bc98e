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

/* The larger of two errors, where a NaN (a NaN output) counts as infinite:
 * fmax() would drop it and let the check pass. */
static double max_err(double a, double b) __attribute__((unused));
static double max_err(double a, double b) {
    if (a != a || b != b) return 1.0 / 0.0;
    return a > b ? a : b;
}

#endif
