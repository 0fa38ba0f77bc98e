/* Fréchet distance with a cyclic Jacobi eigensolver (see frechet.h). */
#include "frechet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int frechet_stats(const float *feats, int n, int d, double *mean, double *cov,
                  reed_error *err) {
    if (n < 2 || d < 1)
        return reed_errorf(err, "frechet: need at least 2 samples of dimension >= 1 "
                           "(got %d x %d)", n, d);
    memset(mean, 0, sizeof(double) * (size_t)d);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) mean[j] += feats[(size_t)i * d + j];
    for (int j = 0; j < d; j++) mean[j] /= n;
    double *row = malloc(sizeof(double) * (size_t)d);
    if (!row) return reed_errorf(err, "frechet: out of memory");
    memset(cov, 0, sizeof(double) * (size_t)d * d);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < d; j++) row[j] = (double)feats[(size_t)i * d + j] - mean[j];
        for (int j = 0; j < d; j++) {
            double r = row[j];
            double *c = cov + (size_t)j * d;
            for (int k = j; k < d; k++) c[k] += r * row[k];
        }
    }
    for (int j = 0; j < d; j++)
        for (int k = j; k < d; k++) {
            double v = cov[(size_t)j * d + k] / (n - 1);
            cov[(size_t)j * d + k] = v;
            cov[(size_t)k * d + j] = v;
        }
    free(row);
    return 0;
}

int frechet_eigh(double *A, int n, double *w, double *V) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) V[(size_t)i * n + j] = i == j;
    double total = 0.0;
    for (size_t i = 0; i < (size_t)n * n; i++) total += A[i] * A[i];
    int sweep, converged = 0;
    for (sweep = 1; sweep <= 100; sweep++) {
        double off = 0.0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) off += A[(size_t)p * n + q] * A[(size_t)p * n + q];
        if (off <= 1e-30 * total || off == 0.0) {
            converged = 1;
            break;
        }
        for (int p = 0; p < n - 1; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = A[(size_t)p * n + q];
                if (apq == 0.0) continue;
                double app = A[(size_t)p * n + p], aqq = A[(size_t)q * n + q];
                double theta = (aqq - app) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                // A ← Jᵀ A J with J the rotation in the (p, q) plane.
                for (int k = 0; k < n; k++) {
                    double akp = A[(size_t)k * n + p], akq = A[(size_t)k * n + q];
                    A[(size_t)k * n + p] = c * akp - s * akq;
                    A[(size_t)k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) {
                    double apk = A[(size_t)p * n + k], aqk = A[(size_t)q * n + k];
                    A[(size_t)p * n + k] = c * apk - s * aqk;
                    A[(size_t)q * n + k] = s * apk + c * aqk;
                }
                A[(size_t)p * n + q] = A[(size_t)q * n + p] = 0.0;
                for (int k = 0; k < n; k++) {
                    double vkp = V[(size_t)k * n + p], vkq = V[(size_t)k * n + q];
                    V[(size_t)k * n + p] = c * vkp - s * vkq;
                    V[(size_t)k * n + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < n; i++) w[i] = A[(size_t)i * n + i];
    // Sort ascending (selection sort; n is small), swapping V's columns.
    for (int i = 0; i < n - 1; i++) {
        int m = i;
        for (int j = i + 1; j < n; j++)
            if (w[j] < w[m]) m = j;
        if (m == i) continue;
        double t = w[i];
        w[i] = w[m];
        w[m] = t;
        for (int k = 0; k < n; k++) {
            t = V[(size_t)k * n + i];
            V[(size_t)k * n + i] = V[(size_t)k * n + m];
            V[(size_t)k * n + m] = t;
        }
    }
    return converged ? sweep : -1;
}

int frechet_sqrtm(const double *A, int n, double *S) {
    size_t nn = (size_t)n * n;
    double *B = malloc(sizeof(double) * nn), *V = malloc(sizeof(double) * nn),
           *w = malloc(sizeof(double) * (size_t)n);
    int rc = -1;
    if (B && V && w) {
        // Symmetrise against round-off before decomposing.
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                B[(size_t)i * n + j] = 0.5 * (A[(size_t)i * n + j] + A[(size_t)j * n + i]);
        if (frechet_eigh(B, n, w, V) >= 0) {
            for (int k = 0; k < n; k++) w[k] = w[k] > 0 ? sqrt(w[k]) : 0.0;
            for (int i = 0; i < n; i++)
                for (int j = i; j < n; j++) {
                    double s = 0.0;
                    for (int k = 0; k < n; k++)
                        s += V[(size_t)i * n + k] * w[k] * V[(size_t)j * n + k];
                    S[(size_t)i * n + j] = S[(size_t)j * n + i] = s;
                }
            rc = 0;
        }
    }
    free(B);
    free(V);
    free(w);
    return rc;
}

double frechet_distance(const double *mu1, const double *c1, const double *mu2,
                        const double *c2, int d) {
    size_t nn = (size_t)d * d;
    double *s1 = malloc(sizeof(double) * nn), *t = malloc(sizeof(double) * nn),
           *m = malloc(sizeof(double) * nn), *r = malloc(sizeof(double) * nn);
    double fd = NAN;
    if (s1 && t && m && r && frechet_sqrtm(c1, d, s1) == 0) {
        // m = s1 · c2 · s1 (symmetric PSD), then tr(m^½) = Σ sqrt(λ⁺).
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) {
                double s = 0.0;
                for (int k = 0; k < d; k++) s += s1[(size_t)i * d + k] * c2[(size_t)k * d + j];
                t[(size_t)i * d + j] = s;
            }
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) {
                double s = 0.0;
                for (int k = 0; k < d; k++) s += t[(size_t)i * d + k] * s1[(size_t)k * d + j];
                m[(size_t)i * d + j] = s;
            }
        for (int i = 0; i < d; i++)
            for (int j = i; j < d; j++)
                m[(size_t)i * d + j] = m[(size_t)j * d + i] =
                    0.5 * (m[(size_t)i * d + j] + m[(size_t)j * d + i]);
        double *w = malloc(sizeof(double) * (size_t)d);
        if (w && frechet_eigh(m, d, w, r) >= 0) {
            double tr_sqrt = 0.0, diff = 0.0, tr1 = 0.0, tr2 = 0.0;
            for (int k = 0; k < d; k++) tr_sqrt += w[k] > 0 ? sqrt(w[k]) : 0.0;
            for (int k = 0; k < d; k++) {
                diff += (mu1[k] - mu2[k]) * (mu1[k] - mu2[k]);
                tr1 += c1[(size_t)k * d + k];
                tr2 += c2[(size_t)k * d + k];
            }
            fd = diff + tr1 + tr2 - 2.0 * tr_sqrt;
            if (fd < 0) fd = 0.0;
        }
        free(w);
    }
    free(s1);
    free(t);
    free(m);
    free(r);
    return fd;
}
