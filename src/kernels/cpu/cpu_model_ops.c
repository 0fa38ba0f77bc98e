/* CPU ops for the model's plumbing: patches, position and time embeddings,
 * label lookup, interpolants and the velocity loss. See ops.h. */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

/* Index of pixel (c, row, col) of example b in (B, C, S, S). */
static inline size_t pixel(int b, int c, int row, int col, int C, int S) {
    return (((size_t)b * C + c) * S + row) * S + col;
}

void cpu_patchify(float *patches, const float *x, int B, int Cin, int S, int p) {
    int G = S / p, D = Cin * p * p;
    #pragma omp parallel for collapse(2) if ((size_t)B * G * G * D > 65536)
    for (int b = 0; b < B; b++)
        for (int gi = 0; gi < G; gi++)
            for (int gj = 0; gj < G; gj++) {
                float *row = patches + ((size_t)(b * G + gi) * G + gj) * D;
                for (int c = 0; c < Cin; c++)
                    for (int i = 0; i < p; i++)
                        for (int j = 0; j < p; j++)
                            row[(c * p + i) * p + j] = x[pixel(b, c, gi * p + i, gj * p + j, Cin, S)];
            }
}

/* Token (gi, gj) element (i, j, c) ↔ pixel (c, gi·p + i, gj·p + j). When
 * `to_image` is set, copy tokens → image; otherwise image → tokens. */
static void unpatchify_copy(float *img, float *tok, int B, int C, int S, int p,
                            int to_image) {
    int G = S / p, D = p * p * C;
    #pragma omp parallel for collapse(2) if ((size_t)B * S * S * C > 65536)
    for (int b = 0; b < B; b++)
        for (int gi = 0; gi < G; gi++)
            for (int gj = 0; gj < G; gj++) {
                float *row = tok + ((size_t)(b * G + gi) * G + gj) * D;
                for (int i = 0; i < p; i++)
                    for (int j = 0; j < p; j++)
                        for (int c = 0; c < C; c++) {
                            size_t at = pixel(b, c, gi * p + i, gj * p + j, C, S);
                            float *t = &row[(i * p + j) * C + c];
                            if (to_image) img[at] = *t; else *t = img[at];
                        }
            }
}

void cpu_unpatchify_forward(float *x, const float *tokens, int B, int Cout, int S, int p) {
    unpatchify_copy(x, (float *)tokens, B, Cout, S, p, 1);
}

void cpu_unpatchify_backward(float *dtokens, const float *dx, int B, int Cout, int S, int p) {
    unpatchify_copy((float *)dx, dtokens, B, Cout, S, p, 0);
}

void cpu_add_rows(float *x, const float *rows, int B, int T, int C) {
    size_t n = (size_t)T * C;
    for (int b = 0; b < B; b++) {
        float *xb = x + (size_t)b * n;
        for (size_t i = 0; i < n; i++) xb[i] += rows[i];
    }
}

void cpu_timestep_embedding(float *out, const float *t, int B, int dim) {
    int half = dim / 2;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < half; k++) {
            float freq = expf(-logf(10000.0f) * (float)k / (float)half);
            float arg = t[b] * freq;
            out[(size_t)b * dim + k] = cosf(arg);
            out[(size_t)b * dim + half + k] = sinf(arg);
        }
}

void cpu_embedding_forward(float *out, const float *table, const int *idx, int B, int C) {
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * C, table + (size_t)idx[b] * C, (size_t)C * sizeof(float));
}

void cpu_embedding_backward(float *dtable, const float *dout, const int *idx, int B, int C) {
    for (int b = 0; b < B; b++) {
        float *row = dtable + (size_t)idx[b] * C;
        const float *d = dout + (size_t)b * C;
        for (int c = 0; c < C; c++) row[c] += d[c];
    }
}

void cpu_interpolate(float *x_t, float *v, const float *x, const float *noise,
                     const float *a, const float *s, const float *da,
                     const float *ds, int B, size_t n) {
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * n;
        for (size_t i = 0; i < n; i++) {
            x_t[o + i] = a[b] * x[o + i] + s[b] * noise[o + i];
            v[o + i] = da[b] * x[o + i] + ds[b] * noise[o + i];
        }
    }
}

double cpu_mse_forward_backward(float *dpred, const float *pred,
                                const float *target, size_t n, float scale) {
    double sum = 0.0;
    float k = 2.0f * scale / (float)n;
    for (size_t i = 0; i < n; i++) {
        float d = pred[i] - target[i];
        sum += (double)d * d;
        dpred[i] = k * d;
    }
    return sum / (double)n;
}
