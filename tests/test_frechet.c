/* The Fréchet distance and its Jacobi eigensolver (src/engine/frechet.h):
 *  - eigh reconstructs A = V Λ Vᵀ with orthonormal V on random symmetric
 *    matrices, a diagonal matrix and a matrix with repeated eigenvalues;
 *  - sqrtm squares back to A;
 *  - FD of a set with itself ≈ 0; of a set shifted by δ = |δ|²;
 *  - diagonal Gaussians: Σ (σ1 − σ2)² + |μ1 − μ2|²;
 *  - a 3×3 double-precision reference: commuting (co-diagonalisable)
 *    covariances C1 = Q diag(a) Qᵀ, C2 = Q diag(b) Qᵀ give
 *    FD = |Δμ|² + Σ (√a − √b)²; and a non-commuting 2×2 case against
 *    the closed form tr(C1)+tr(C2)−2·sqrt(tr(C1C2) + 2·sqrt(det(C1C2)));
 *  - rank-deficient covariances (n < d, duplicated columns): finite, ≥ 0,
 *    and ≈ 0 against themselves.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frechet.h"
#include "rng.h"
#include "check.h"

static double urand(uint64_t *s) { /* xorshift64*, uniform in [0, 1) */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (double)((*s * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static double nrand(uint64_t *s) {
    double u = urand(s), v = urand(s);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2.0 * M_PI * v);
}

/* Max |A − V diag(w) Vᵀ| and max |VᵀV − I|. */
static void eigh_errors(const double *A, const double *V, const double *w, int n,
                        double *rec, double *orth) {
    *rec = *orth = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0, o = 0.0;
            for (int k = 0; k < n; k++) {
                s += V[i * n + k] * w[k] * V[j * n + k];
                o += V[k * n + i] * V[k * n + j];
            }
            double e = fabs(s - A[i * n + j]), f = fabs(o - (i == j));
            *rec = max_err(*rec, e);
            *orth = max_err(*orth, f);
        }
}

static void test_eigh_random(int n, uint64_t seed) {
    double *A = malloc(sizeof(double) * n * n), *B = malloc(sizeof(double) * n * n),
           *V = malloc(sizeof(double) * n * n), *w = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) A[i * n + j] = A[j * n + i] = nrand(&seed);
    memcpy(B, A, sizeof(double) * n * n);
    int sweeps = frechet_eigh(B, n, w, V);
    double rec, orth;
    eigh_errors(A, V, w, n, &rec, &orth);
    int sorted = 1;
    for (int i = 1; i < n; i++) sorted &= w[i - 1] <= w[i];
    check(sweeps > 0 && rec < 1e-10 * n && orth < 1e-12 * n && sorted,
          "eigh random symmetric %dx%d: %d sweeps, |A - V L V^T| %.2e, |V^T V - I| %.2e, "
          "ascending %d", n, n, sweeps, rec, orth, sorted);
    free(A); free(B); free(V); free(w);
}

static void test_eigh_known(void) {
    // A diagonal matrix: eigenvalues are its diagonal, sorted.
    double D[9] = {3, 0, 0, 0, -1, 0, 0, 0, 2}, Dc[9], V[9], w[3];
    memcpy(Dc, D, sizeof D);
    int sw = frechet_eigh(Dc, 3, w, V);
    check(sw > 0 && w[0] == -1 && w[1] == 2 && w[2] == 3,
          "eigh diagonal diag(3,-1,2): eigenvalues %g %g %g (expected -1 2 3)", w[0], w[1], w[2]);
    // Repeated eigenvalues: A = 2I + 3·u·uᵀ with |u| = 1 has {2, 2, 5}.
    const double u[3] = {1 / sqrt(3.0), 1 / sqrt(3.0), 1 / sqrt(3.0)};
    double A[9], Ac[9], rec, orth;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) A[i * 3 + j] = 2.0 * (i == j) + 3.0 * u[i] * u[j];
    memcpy(Ac, A, sizeof A);
    sw = frechet_eigh(Ac, 3, w, V);
    eigh_errors(A, V, w, 3, &rec, &orth);
    check(sw > 0 && fabs(w[0] - 2) < 1e-12 && fabs(w[1] - 2) < 1e-12 && fabs(w[2] - 5) < 1e-12 &&
              rec < 1e-12 && orth < 1e-12,
          "eigh repeated eigenvalues 2I + 3uu^T: %.15g %.15g %.15g (expected 2 2 5), "
          "reconstruction %.1e, orthogonality %.1e", w[0], w[1], w[2], rec, orth);
    // A known 2×2: [[2,1],[1,2]] has 1 and 3 with eigenvectors (1,∓1)/√2.
    double T[4] = {2, 1, 1, 2}, V2[4], w2[2];
    sw = frechet_eigh(T, 2, w2, V2);
    check(sw > 0 && fabs(w2[0] - 1) < 1e-14 && fabs(w2[1] - 3) < 1e-14 &&
              fabs(fabs(V2[0]) - 1 / sqrt(2.0)) < 1e-14 && fabs(V2[0] + V2[2]) < 1e-14,
          "eigh [[2,1],[1,2]]: eigenvalues %.15g %.15g, first eigenvector (%.6f, %.6f)", w2[0],
          w2[1], V2[0], V2[2]);
}

static void test_sqrtm(void) {
    uint64_t s = 7;
    enum { N = 12 };
    double G[N * N], A[N * N], S[N * N];
    for (int i = 0; i < N * N; i++) G[i] = nrand(&s);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double v = 0;
            for (int k = 0; k < N; k++) v += G[i * N + k] * G[j * N + k];
            A[i * N + j] = v;
        }
    int rc = frechet_sqrtm(A, N, S);
    double e = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double v = 0;
            for (int k = 0; k < N; k++) v += S[i * N + k] * S[k * N + j];
            e = max_err(e, fabs(v - A[i * N + j]));
        }
    check(rc == 0 && e < 1e-9, "sqrtm of a 12x12 SPD matrix: |S S - A| %.2e", e);
}

/* feats (n,d) of Gaussian draws with per-dimension mean mu and std sigma. */
static float *gaussian_set(int n, int d, const double *mu, const double *sigma, uint64_t seed) {
    float *f = malloc(sizeof(float) * n * d);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) f[i * d + j] = (float)(mu[j] + sigma[j] * nrand(&seed));
    return f;
}

static void test_fd_sets(void) {
    enum { N = 2000, D = 16 };
    double mu[D], sig[D], m1[D], m2[D], c1[D * D], c2[D * D];
    reed_error err = {{0}};
    uint64_t s = 11;
    for (int j = 0; j < D; j++) {
        mu[j] = nrand(&s);
        sig[j] = 0.5 + urand(&s);
    }
    float *a = gaussian_set(N, D, mu, sig, 3);
    // Correlate the dimensions a little so the covariance is not diagonal.
    for (int i = 0; i < N; i++)
        for (int j = 1; j < D; j++) a[i * D + j] += 0.5f * a[i * D + j - 1];
    int rc = frechet_stats(a, N, D, m1, c1, &err);
    double tr = 0;
    for (int j = 0; j < D; j++) tr += c1[j * D + j];
    double self = frechet_distance(m1, c1, m1, c1, D);
    check(rc == 0 && self >= 0 && self < 1e-6 * tr,
          "FD of a set with itself: %.3e (tr C %.3f; need < 1e-6 tr)", self, tr);

    // Shift by δ: covariance unchanged, FD = |δ|².
    double delta2 = 0;
    float *b = malloc(sizeof(float) * N * D);
    for (int j = 0; j < D; j++) delta2 += (0.1 * (j + 1)) * (0.1 * (j + 1));
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++) b[i * D + j] = a[i * D + j] + 0.1f * (j + 1);
    frechet_stats(b, N, D, m2, c2, &err);
    double fd = frechet_distance(m1, c1, m2, c2, D);
    check(fabs(fd - delta2) < 1e-4 * delta2 + 1e-6,
          "FD of a set shifted by delta: %.9f, closed form |delta|^2 %.9f", fd, delta2);

    // Symmetry.
    double fd_ba = frechet_distance(m2, c2, m1, c1, D);
    check(fabs(fd - fd_ba) < 1e-8 * (1 + fd), "FD symmetric: %.10f vs %.10f", fd, fd_ba);
    free(a);
    free(b);

    // Gaussians with diagonal covariances (exact statistics, no sampling).
    double mu1[D], mu2[D], C1[D * D] = {0}, C2[D * D] = {0}, expect = 0;
    for (int j = 0; j < D; j++) {
        mu1[j] = nrand(&s);
        mu2[j] = nrand(&s);
        double s1 = 0.2 + urand(&s), s2 = 0.2 + urand(&s);
        C1[j * D + j] = s1 * s1;
        C2[j * D + j] = s2 * s2;
        expect += (s1 - s2) * (s1 - s2) + (mu1[j] - mu2[j]) * (mu1[j] - mu2[j]);
    }
    fd = frechet_distance(mu1, C1, mu2, C2, D);
    check(fabs(fd - expect) < 1e-10 * (1 + expect),
          "FD of diagonal Gaussians: %.12f, closed form sum (s1-s2)^2 + |mu1-mu2|^2 %.12f", fd,
          expect);
}

static void test_reference_3x3(void) {
    // Commuting covariances: C1 = Q diag(a) Qᵀ, C2 = Q diag(b) Qᵀ with an
    // orthonormal Q (a rotation about (1,1,1) composed with one about z).
    // Then (C1^½ C2 C1^½)^½ = Q diag(√(ab)) Qᵀ and
    // FD = |Δμ|² + Σ (√a − √b)², computed here in plain double arithmetic.
    const double a[3] = {4.0, 1.0, 0.25}, b[3] = {1.0, 9.0, 0.25};
    const double ct = cos(0.7), st = sin(0.7), cz = cos(-1.3), sz = sin(-1.3);
    double R1[9] = {cz, -sz, 0, sz, cz, 0, 0, 0, 1}, R2[9], Q[9];
    // Rodrigues' rotation about k = (1,1,1)/√3 by 0.7.
    const double k = 1 / sqrt(3.0), K[9] = {0, -k, k, k, 0, -k, -k, k, 0};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double kk = 0;
            for (int m = 0; m < 3; m++) kk += K[i * 3 + m] * K[m * 3 + j];
            R2[i * 3 + j] = (i == j) + st * K[i * 3 + j] + (1 - ct) * kk;
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double v = 0;
            for (int m = 0; m < 3; m++) v += R2[i * 3 + m] * R1[m * 3 + j];
            Q[i * 3 + j] = v;
        }
    double C1[9], C2[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double v1 = 0, v2 = 0;
            for (int m = 0; m < 3; m++) {
                v1 += Q[i * 3 + m] * a[m] * Q[j * 3 + m];
                v2 += Q[i * 3 + m] * b[m] * Q[j * 3 + m];
            }
            C1[i * 3 + j] = v1;
            C2[i * 3 + j] = v2;
        }
    const double mu1[3] = {0.5, -1.0, 2.0}, mu2[3] = {1.5, -1.0, 0.0};
    double expect = 1.0 + 0.0 + 4.0; // |Δμ|²
    for (int m = 0; m < 3; m++) expect += (sqrt(a[m]) - sqrt(b[m])) * (sqrt(a[m]) - sqrt(b[m]));
    double fd = frechet_distance(mu1, C1, mu2, C2, 3);
    check(fabs(fd - expect) < 1e-12 * expect,
          "FD 3x3 commuting covariances: %.15f, reference %.15f (= 5 + 1 + 4 + 0)", fd, expect);

    // Non-commuting 2×2: for 2×2 PSD M, tr(√M) = sqrt(tr M + 2 sqrt(det M)),
    // and tr/det of C1^½ C2 C1^½ equal those of C1·C2.
    const double P[4] = {2.0, 0.6, 0.6, 1.0}, Qm[4] = {0.5, -0.3, -0.3, 3.0};
    const double z[2] = {0, 0};
    double trpq = P[0] * Qm[0] + P[1] * Qm[2] + P[2] * Qm[1] + P[3] * Qm[3];
    double det = (P[0] * P[3] - P[1] * P[2]) * (Qm[0] * Qm[3] - Qm[1] * Qm[2]);
    double ref2 = P[0] + P[3] + Qm[0] + Qm[3] - 2.0 * sqrt(trpq + 2.0 * sqrt(det));
    fd = frechet_distance(z, P, z, Qm, 2);
    check(fabs(fd - ref2) < 1e-12 * (1 + ref2),
          "FD 2x2 non-commuting covariances: %.15f, closed form %.15f", fd, ref2);
}

static void test_rank_deficient(void) {
    enum { D = 32 };
    reed_error err = {{0}};
    double m1[D], m2[D], c1[D * D], c2[D * D], mu[D], sig[D];
    for (int j = 0; j < D; j++) {
        mu[j] = 0.1 * j;
        sig[j] = 1.0;
    }
    // n < d: rank ≤ n − 1.
    float *a = gaussian_set(10, D, mu, sig, 5), *b = gaussian_set(12, D, mu, sig, 6);
    int rc = frechet_stats(a, 10, D, m1, c1, &err) | frechet_stats(b, 12, D, m2, c2, &err);
    double fd = frechet_distance(m1, c1, m2, c2, D), self = frechet_distance(m1, c1, m1, c1, D);
    double tr = 0;
    for (int j = 0; j < D; j++) tr += c1[j * D + j];
    check(rc == 0 && isfinite(fd) && fd >= 0 && isfinite(self) && self < 1e-6 * tr,
          "rank-deficient (n < d: 10 and 12 samples of 32 dims): FD %.6f finite >= 0, "
          "self %.3e", fd, self);
    free(a);
    free(b);
    // Duplicated columns: column j+16 = column j (rank ≤ 16).
    float *c = gaussian_set(500, D, mu, sig, 8), *e = gaussian_set(500, D, mu, sig, 9);
    for (int i = 0; i < 500; i++)
        for (int j = 0; j < D / 2; j++) {
            c[i * D + j + D / 2] = c[i * D + j];
            e[i * D + j + D / 2] = e[i * D + j];
        }
    frechet_stats(c, 500, D, m1, c1, &err);
    frechet_stats(e, 500, D, m2, c2, &err);
    fd = frechet_distance(m1, c1, m2, c2, D);
    self = frechet_distance(m1, c1, m1, c1, D);
    tr = 0;
    for (int j = 0; j < D; j++) tr += c1[j * D + j];
    check(isfinite(fd) && fd >= 0 && self < 1e-6 * tr,
          "rank-deficient (duplicated columns, rank 16 of 32): FD %.6f finite >= 0, self %.3e",
          fd, self);
    free(c);
    free(e);
    // A constant set: zero covariance.
    float k[4 * 3] = {1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3};
    double km[3], kc[9], zm[3] = {0, 0, 0}, zc[9] = {0};
    frechet_stats(k, 4, 3, km, kc, &err);
    fd = frechet_distance(km, kc, zm, zc, 3);
    check(fabs(fd - 14.0) < 1e-12, "zero covariances: FD %.15f = |mu|^2 = 14", fd);
    rc = frechet_stats(k, 1, 3, km, kc, &err);
    check(rc != 0, "frechet_stats with n = 1 fails: %s", err.msg);
}

int main(void) {
    test_eigh_known();
    test_eigh_random(5, 1);
    test_eigh_random(64, 2);
    test_eigh_random(128, 3);
    test_sqrtm();
    test_fd_sets();
    test_reference_3x3();
    test_rank_deficient();
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
