/* Fréchet distance between Gaussians fitted to feature sets (FID-style):
 *   FD = |mu1 − mu2|² + tr(C1) + tr(C2) − 2·tr((C1^½ C2 C1^½)^½),
 * in double, with our own cyclic Jacobi symmetric eigensolver (no LAPACK).
 * Matrix square roots go through eigendecompositions with tiny negative
 * eigenvalues (round-off of rank-deficient covariances) clamped to 0. */
#ifndef REED_FRECHET_H
#define REED_FRECHET_H

#include "error.h"

/* mean (d) and unbiased covariance (d,d) of feats (n,d), accumulated in
 * double; needs n ≥ 2. */
int frechet_stats(const float *feats, int n, int d, double *mean, double *cov,
                  reed_error *err);

/* FD of two Gaussians (mu, cov as from frechet_stats); ≥ 0 (clamped). */
double frechet_distance(const double *mu1, const double *c1, const double *mu2,
                        const double *c2, int d);

/* Symmetric eigendecomposition by cyclic Jacobi: A (n,n) symmetric is
 * destroyed; w (n) receives eigenvalues ascending, V (n,n) row-major the
 * eigenvectors as COLUMNS (A = V diag(w) Vᵀ). Returns the sweeps used, or
 * -1 if it did not converge (or out of memory). */
int frechet_eigh(double *A, int n, double *w, double *V);

/* S = A^½ for symmetric positive semi-definite A (n,n) (A untouched);
 * negative eigenvalues clamp to 0. Returns 0 or -1. */
int frechet_sqrtm(const double *A, int n, double *S);

#endif
