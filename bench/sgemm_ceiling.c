/* bench_sgemm_ceiling: the machine's practical float32 matmul ceiling with
 * the engine's BLAS (OpenBLAS) and threading, for judging how much of it a
 * training step achieves.
 *
 *   bench_sgemm_ceiling [--threads N] [--n 2048] [--reps 5]
 *
 * Times C = A·B for square N×N matrices (one untimed warm-up call, then the
 * best of `reps` calls) and prints one JSON line:
 *   {"impl":"sgemm","threads":N,"gflops":..,"n":..,"reps":..,"ms_best":..}
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "ops.h"

typedef struct sgemm_args {
    int threads, n, reps;
} sgemm_args;

static void usage(FILE *f) {
    fputs("usage: bench_sgemm_ceiling [--threads N] [--n 2048] [--reps 5]\n", f);
}

/* A whole-string integer in [lo, hi]; -1 when it is not one. */
static int parse_int(const char *s, int lo, int hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    return (int)v;
}

/* Returns 0 to run, 1 after --help, 2 on bad arguments. */
static int parse_args(sgemm_args *a, int argc, char **argv) {
    *a = (sgemm_args){.threads = 1, .n = 2048, .reps = 5};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 1;
        }
        int *field = !strcmp(argv[i], "--threads") ? &a->threads
                   : !strcmp(argv[i], "--n") ? &a->n
                   : !strcmp(argv[i], "--reps") ? &a->reps : NULL;
        if (!field || i + 1 >= argc || (*field = parse_int(argv[i + 1], 1, 65536)) < 0) {
            fprintf(stderr, "bench_sgemm_ceiling: bad argument near '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
        i++;
    }
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Deterministic values in [-1, 1) so the timing does not depend on denormals. */
static void fill(float *x, size_t count, unsigned seed) {
    unsigned s = seed;
    for (size_t i = 0; i < count; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
    }
}

/* The fastest of reps calls, in seconds (after one warm-up call). */
static double best_sgemm_seconds(const float *A, const float *B, float *C, int n, int reps) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n,
                0.0f, C, n);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n,
                    0.0f, C, n);
        double dt = now_seconds() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

int main(int argc, char **argv) {
    sgemm_args a;
    int rc = parse_args(&a, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    reed_cpu_set_threads(a.threads); /* OpenMP and OpenBLAS, as the engine does */
    size_t count = (size_t)a.n * (size_t)a.n;
    float *A = malloc(count * sizeof(float)), *B = malloc(count * sizeof(float));
    float *C = malloc(count * sizeof(float));
    if (!A || !B || !C) {
        fprintf(stderr, "bench_sgemm_ceiling: out of memory for n = %d\n", a.n);
        free(A); free(B); free(C);
        return 1;
    }
    fill(A, count, 1);
    fill(B, count, 2);
    double best = best_sgemm_seconds(A, B, C, a.n, a.reps);
    double flops = 2.0 * (double)a.n * a.n * a.n;
    printf("{\"impl\":\"sgemm\",\"threads\":%d,\"gflops\":%.2f,\"n\":%d,\"reps\":%d,"
           "\"ms_best\":%.3f}\n", a.threads, flops / best * 1e-9, a.n, a.reps, 1e3 * best);
    free(A); free(B); free(C);
    return 0;
}
