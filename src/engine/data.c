#include "data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rng.h"

/* --- datasets ------------------------------------------------------------------ */

static int load_fashion_mnist(reed_dataset *d, const reed_data_config *cfg,
                              reed_error *err) {
    struct stat st;
    if (stat(cfg->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return reed_errorf(err, "%s: dataset directory not found (Fashion-MNIST: "
                           "apt-get install dataset-fashion-mnist, or set data.dir)", cfg->dir);
    char path[REED_PATH_LEN + 64];
    reed_array img = {0}, lab = {0};
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", cfg->dir);
    if (idx_load(path, &img, err)) return -1;
    snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte.gz", cfg->dir);
    if (idx_load(path, &lab, err)) {
        reed_array_free(&img);
        return -1;
    }
    if (img.ndim != 3 || lab.ndim != 1 || img.shape[0] != lab.shape[0] ||
        img.shape[1] != img.shape[2]) {
        reed_array_free(&img);
        reed_array_free(&lab);
        return reed_errorf(err, "%s: images and labels do not match", cfg->dir);
    }
    d->N = (int)img.shape[0];
    d->C = 1;
    d->S = (int)img.shape[1];
    d->num_classes = 10;
    d->images = img.data; /* scaled below */
    for (int64_t i = 0; i < img.size; i++) d->images[i] = d->images[i] / 127.5f - 1.0f;
    d->labels = malloc(sizeof(int) * (size_t)d->N);
    for (int i = 0; d->labels && i < d->N; i++) d->labels[i] = (int)lab.data[i];
    reed_array_free(&lab);
    snprintf(d->description, sizeof d->description, "Fashion-MNIST train (%d images, %s)",
             d->N, cfg->dir);
    return d->labels ? 0 : reed_errorf(err, "out of memory");
}

static int load_npy_dataset(reed_dataset *d, const reed_data_config *cfg,
                            reed_error *err) {
    reed_array img = {0}, lab = {0};
    if (npy_load(cfg->images, &img, err)) return -1;
    if (img.ndim != 4 || img.shape[2] != img.shape[3]) {
        reed_array_free(&img);
        return reed_errorf(err, "%s: expected images of shape (N, C, H, W) with H = W, "
                           "got %d dims", cfg->images, img.ndim);
    }
    if (npy_load(cfg->labels, &lab, err)) {
        reed_array_free(&img);
        return -1;
    }
    int bad = lab.ndim != 1 || lab.shape[0] != img.shape[0];
    d->N = (int)img.shape[0];
    d->C = (int)img.shape[1];
    d->S = (int)img.shape[2];
    d->images = img.data;
    d->labels = malloc(sizeof(int) * (size_t)d->N);
    for (int i = 0; !bad && d->labels && i < d->N; i++) {
        d->labels[i] = (int)lab.data[i];
        if (d->labels[i] < 0 || lab.data[i] != d->labels[i]) bad = 2;
        if (d->labels[i] + 1 > d->num_classes) d->num_classes = d->labels[i] + 1;
    }
    reed_array_free(&lab);
    if (bad) return reed_errorf(err, bad == 2 ? "%s: labels must be non-negative integers"
                                : "%s: expected labels of shape (N) matching the images",
                                cfg->labels);
    snprintf(d->description, sizeof d->description, "%s (%d images)", cfg->images, d->N);
    return d->labels ? 0 : reed_errorf(err, "out of memory");
}

int dataset_load(reed_dataset *d, const reed_data_config *cfg, reed_error *err) {
    memset(d, 0, sizeof *d);
    d->perm_epoch = -1;
    int rc;
    if (strcmp(cfg->dataset, "fashion-mnist") == 0) rc = load_fashion_mnist(d, cfg, err);
    else if (strcmp(cfg->dataset, "npy") == 0) rc = load_npy_dataset(d, cfg, err);
    else rc = reed_errorf(err, "data.dataset: unknown dataset \"%s\" (fashion-mnist, npy)",
                          cfg->dataset);
    if (rc == 0 && cfg->limit > 0 && cfg->limit < d->N) d->N = cfg->limit;
    if (rc == 0) {
        d->perm = malloc(sizeof(int) * (size_t)d->N);
        d->shuffle_draws = malloc(sizeof(float) * (size_t)d->N);
        if (!d->perm || !d->shuffle_draws) rc = reed_errorf(err, "out of memory");
    }
    if (rc) dataset_free(d);
    return rc;
}

void dataset_free(reed_dataset *d) {
    free(d->images);
    free(d->labels);
    free(d->perm);
    free(d->shuffle_draws);
    memset(d, 0, sizeof *d);
}

/* Fisher–Yates with the epoch's uniform draws. */
static void shuffle_epoch(reed_dataset *d, uint64_t seed, int64_t epoch) {
    float *u = d->shuffle_draws;
    rng_uniform(u, (size_t)d->N, seed, (uint64_t)epoch, REED_STREAM_SHUFFLE);
    for (int i = 0; i < d->N; i++) d->perm[i] = i;
    for (int i = d->N - 1; i > 0; i--) {
        int j = (int)(u[i] * (float)(i + 1));
        if (j > i) j = i;
        int tmp = d->perm[i];
        d->perm[i] = d->perm[j];
        d->perm[j] = tmp;
    }
    d->perm_epoch = epoch;
}

void dataset_next_batch(reed_dataset *d, reed_cursor *cur, uint64_t seed,
                        int B, int *idx, float *x, int *y) {
    size_t img = (size_t)d->C * d->S * d->S;
    for (int b = 0; b < B; b++) {
        if (cur->pos >= d->N) {
            cur->epoch++;
            cur->pos = 0;
        }
        if (d->perm_epoch != cur->epoch) shuffle_epoch(d, seed, cur->epoch);
        int i = d->perm[cur->pos++];
        idx[b] = i;
        y[b] = d->labels[i];
        memcpy(x + b * img, d->images + (size_t)i * img, img * sizeof(float));
    }
}

/* --- representation sources ------------------------------------------------------ */

/* 1-D weights (g, gs): PyTorch's bilinear (align_corners=False: source
 * coordinate (i + ½)·gs/g − ½, clamped at 0) or area (mean over
 * [⌊i·gs/g⌋, ⌈(i+1)·gs/g⌉)). */
static void resample_1d(double *w, int gs, int g, reed_resample mode) {
    memset(w, 0, sizeof(double) * (size_t)g * gs);
    for (int i = 0; i < g; i++) {
        double *row = w + (size_t)i * gs;
        if (mode == REED_RESAMPLE_AREA) {
            int lo = (int)floor((double)i * gs / g), hi = (int)ceil((double)(i + 1) * gs / g);
            for (int j = lo; j < hi; j++) row[j] = 1.0 / (hi - lo);
            continue;
        }
        double src = ((double)i + 0.5) * gs / g - 0.5;
        if (src < 0) src = 0;
        int i0 = (int)floor(src), i1 = i0 + 1 < gs ? i0 + 1 : gs - 1;
        double frac = src - i0;
        row[i0] += 1.0 - frac;
        row[i1] += frac;
    }
}

float *grid_resample_matrix(int gs, int g, reed_resample mode) {
    double *w = malloc(sizeof(double) * (size_t)g * gs);
    float *R = malloc(sizeof(float) * (size_t)g * g * gs * gs);
    if (!w || !R) {
        free(w);
        free(R);
        return NULL;
    }
    resample_1d(w, gs, g, mode);
    /* separable: R[(r,c), (rs,cs)] = w[r, rs]·w[c, cs] */
    for (int r = 0; r < g; r++)
        for (int c = 0; c < g; c++)
            for (int rs = 0; rs < gs; rs++)
                for (int cs = 0; cs < gs; cs++)
                    R[((size_t)(r * g + c) * gs + rs) * gs + cs] =
                        (float)(w[(size_t)r * gs + rs] * w[(size_t)c * gs + cs]);
    free(w);
    return R;
}

static int perfect_square(int n) {
    int r = (int)lround(sqrt((double)n));
    return r * r == n ? r : 0;
}

static int check_source_shape(reed_source *s, int n_examples, int model_tokens,
                              reed_error *err) {
    const reed_source_config *c = &s->cfg;
    const reed_array *a = &s->data;
    int token = c->kind == REED_SOURCE_TOKEN;
    int want_dims = token ? 3 : 2;
    if (a->ndim != want_dims || a->shape[0] < n_examples)
        return reed_errorf(err, "%s: source \"%s\" (%s) expects shape %s with N >= %d, "
                           "got %d dims and N = %lld", c->file, c->name,
                           token ? "token-level" : "global", token ? "(N, T, D)" : "(N, D)",
                           n_examples, a->ndim, (long long)a->shape[0]);
    s->tokens_src = token ? (int)a->shape[1] : 1;
    s->tokens = token ? model_tokens : 1;
    s->dim = (int)a->shape[want_dims - 1];
    if (token && s->tokens_src != model_tokens && !perfect_square(s->tokens_src))
        return reed_errorf(err, "%s: source \"%s\" has T = %d tokens, which is not a square "
                           "grid and differs from the model's %d tokens", c->file, c->name,
                           s->tokens_src, model_tokens);
    return 0;
}

int source_load(reed_source *s, const reed_source_config *cfg, int n_examples,
                int model_tokens, reed_error *err) {
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    if (npy_load(cfg->file, &s->data, err))
        return reed_error_prefix(err, "source \"%s\"", cfg->name);
    if (check_source_shape(s, n_examples, model_tokens, err)) {
        source_free(s);
        return -1;
    }
    if (s->tokens != s->tokens_src) {
        s->resample = grid_resample_matrix(perfect_square(s->tokens_src),
                                           perfect_square(s->tokens), cfg->resample);
        if (!s->resample) {
            source_free(s);
            return reed_errorf(err, "source \"%s\": out of memory", cfg->name);
        }
    }
    return 0;
}

void source_free(reed_source *s) {
    reed_array_free(&s->data);
    free(s->resample);
    s->resample = NULL;
}

void source_gather(const reed_source *s, const int *idx, int B, float *out) {
    size_t row = (size_t)s->tokens_src * s->dim;
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * row, s->data.data + (size_t)idx[b] * row, row * sizeof(float));
}

/* A source fed by the teacher: tokens_src × dim features per example. */
int source_init_features(reed_source *s, const reed_source_config *cfg, int tokens_src,
                         int dim, int model_tokens, reed_error *err) {
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    int token = cfg->kind == REED_SOURCE_TOKEN;
    s->tokens_src = token ? tokens_src : 1;
    s->tokens = token ? model_tokens : 1;
    s->dim = dim;
    if (s->tokens == s->tokens_src) return 0;
    int gs = perfect_square(s->tokens_src), g = perfect_square(s->tokens);
    if (!gs || !g)
        return reed_errorf(err, "source \"%s\": cannot resample %d teacher tokens to the "
                           "model's %d", cfg->name, s->tokens_src, s->tokens);
    s->resample = grid_resample_matrix(gs, g, cfg->resample);
    return s->resample ? 0 : reed_errorf(err, "source \"%s\": out of memory", cfg->name);
}
