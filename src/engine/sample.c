/* Sample grids: the sampler driven by the model (with classifier-free
 * guidance), written as a PNG with its settings in a text chunk. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "run_internal.h"

/* The model as a velocity field for the sampler. Arrays are backend memory
 * unless marked host. */
typedef struct guided_model {
    const reed_ops *ops;
    const sit_model *model;
    const sit_params *params;
    sit_acts *acts;           /* batch n, or 2n when guiding */
    const reed_sample_config *sc;
    int n;
    int *labels;              /* (2n): classes, then the null class */
    float *x2, *t2, *v2;      /* (2n·img), (2n), (2n·img) */
    float *t_host;            /* (2n) host */
    size_t img;
} guided_model;

static int guiding(const reed_sample_config *sc) { return sc->cfg != 1.0f; }

/* v(x, t) for the batch; with guidance the conditional and unconditional
 * halves run as one batch of 2n and are combined inside [cfg_lo, cfg_hi]. */
static void guided_velocity(void *ctx, const float *x, float t, float *v) {
    guided_model *g = ctx;
    const reed_ops *ops = g->ops;
    int n = g->n, rows = guiding(g->sc) ? 2 * n : n;
    size_t len = (size_t)n * g->img;
    ops->copy(g->x2, x, len * sizeof(float));
    if (rows > n) ops->copy(g->x2 + len, x, len * sizeof(float));
    for (int i = 0; i < rows; i++) g->t_host[i] = t;
    ops->upload(g->t2, g->t_host, (size_t)rows * sizeof(float));
    sit_forward(ops, g->model, g->params, g->acts, g->x2, g->t2, g->labels, g->v2, 0);
    ops->copy(v, g->v2, len * sizeof(float));
    if (rows > n)
        cfg_combine(ops, v, g->v2 + len, len, g->sc->cfg, g->sc->cfg_lo, g->sc->cfg_hi, t);
}

/* Maps [-1, 1] to bytes and tiles n images in a near-square grid with a
 * 2-pixel border. Images with other than 1 or 3 channels show channel 0. */
static uint8_t *tile_grid(const float *x, int n, int C, int S, int *w, int *h, int *ch) {
    int cols = (int)ceil(sqrt((double)n)), rows = (n + cols - 1) / cols, pad = 2;
    *ch = C == 3 ? 3 : 1;
    *w = cols * (S + pad) + pad;
    *h = rows * (S + pad) + pad;
    uint8_t *px = calloc((size_t)*w * *h * *ch, 1);
    for (int i = 0; px && i < n; i++) {
        int ox = pad + (i % cols) * (S + pad), oy = pad + (i / cols) * (S + pad);
        for (int c = 0; c < *ch; c++)
            for (int r = 0; r < S; r++)
                for (int q = 0; q < S; q++) {
                    float val = x[(((size_t)i * C + c) * S + r) * S + q];
                    float b = (val + 1.0f) * 127.5f;
                    b = b < 0 ? 0 : b > 255 ? 255 : b;
                    px[((size_t)(oy + r) * *w + ox + q) * *ch + c] = (uint8_t)lrintf(b);
                }
    }
    return px;
}

static int write_png(const reed_run *run, const reed_sample_config *sc, const uint8_t *px,
                     int w, int h, int ch, const char *path, reed_error *err);

static int write_grid(const reed_run *run, const reed_sample_config *sc, const float *x,
                      const char *path, reed_grid *grid, reed_error *err) {
    int w, h, ch;
    uint8_t *px = tile_grid(x, sc->n, run->cfg.model.in_channels, run->cfg.model.image_size,
                             &w, &h, &ch);
    if (!px) return reed_errorf(err, "out of memory");
    int rc = path ? write_png(run, sc, px, w, h, ch, path, err) : 0;
    if (rc == 0 && grid) *grid = (reed_grid){w, h, ch, px};
    else free(px);
    return rc;
}

static int write_png(const reed_run *run, const reed_sample_config *sc, const uint8_t *px,
                     int w, int h, int ch, const char *path, reed_error *err) {
    char step[32], steps[32], cfg[32], seed[32];
    snprintf(step, sizeof step, "%d", run->step);
    snprintf(steps, sizeof steps, "%d", sc->steps);
    snprintf(cfg, sizeof cfg, "%g [%g, %g]", sc->cfg, sc->cfg_lo, sc->cfg_hi);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)sc->seed);
    st_meta text[] = {{"step", step}, {"sampler", reed_sampler_names[sc->sampler]},
                      {"steps", steps}, {"cfg", cfg}, {"seed", seed},
                      {"weights", sc->ema ? "ema" : "online"}, {"Software", "reed " REED_VERSION}};
    return png_write(path, px, w, h, ch, text, (int)(sizeof text / sizeof *text), err);
}

/* Host labels for the 2n rows: the class (fixed or cycling), then null. */
static int *sample_labels(const reed_run *run, const reed_sample_config *sc, int rows) {
    int *y = malloc(sizeof(int) * rows), classes = run->cfg.model.num_classes;
    for (int i = 0; y && i < rows; i++)
        y[i] = i >= sc->n ? classes : sc->class_label >= 0 ? sc->class_label : i % classes;
    return y;
}

/* Draws the samples into x (host memory): noise from (seed, SAMPLE_NOISE)
 * and the sampler, both on the run's backend. */
static int sample_into(reed_run *run, const reed_sample_config *sc, guided_model *g,
                       float *x, reed_error *err) {
    const reed_ops *ops = run->ops;
    int n = sc->n, rows = guiding(sc) ? 2 * n : n;
    size_t img = g->img, len = (size_t)n * img;
    float *xd = ops->mem_alloc(sizeof(float) * len);
    float *scratch = ops->mem_alloc(sizeof(float) * 3 * len);
    int *labels = sample_labels(run, sc, rows);
    g->labels = ops->mem_alloc(sizeof(int) * rows);
    g->x2 = ops->mem_alloc(sizeof(float) * rows * img);
    g->v2 = ops->mem_alloc(sizeof(float) * rows * img);
    g->t2 = ops->mem_alloc(sizeof(float) * rows);
    g->t_host = malloc(sizeof(float) * rows);
    int ok = xd && scratch && labels && g->labels && g->x2 && g->v2 && g->t2 && g->t_host;
    int rc = -1;
    if (ok && sit_acts_alloc(g->acts, ops, &run->model, rows, 0, err) == 0) {
        ops->upload(g->labels, labels, sizeof(int) * rows);
        ops->normal_fill(xd, len, sc->seed, 0, REED_STREAM_SAMPLE_NOISE);
        sampler_spec spec = {sc->sampler, sc->steps, run->cfg.train.path, sc->seed};
        sampler_run(ops, &spec, guided_velocity, g, xd, len, scratch);
        ops->download(x, xd, sizeof(float) * len);
        sit_acts_free(g->acts, &run->model);
        rc = 0;
    } else if (!err || !err->msg[0]) {
        reed_errorf(err, "out of memory for sampling %d images", n);
    }
    ops->mem_free(xd); ops->mem_free(scratch); ops->mem_free(g->labels);
    ops->mem_free(g->x2); ops->mem_free(g->v2); ops->mem_free(g->t2);
    free(g->t_host); free(labels);
    return rc;
}

static int check_sample_config(const reed_run *run, const reed_sample_config *sc,
                               reed_error *err) {
    if (sc->n <= 0 || sc->n > 1024 || sc->steps <= 0)
        return reed_errorf(err, "sample: n must be in 1..1024 and steps positive");
    if (sc->class_label >= run->cfg.model.num_classes)
        return reed_errorf(err, "sample: class %d out of range 0..%d", sc->class_label,
                           run->cfg.model.num_classes - 1);
    return 0;
}

int reed_run_sample_images(reed_run *run, const reed_sample_config *sc, float *x,
                           reed_error *err) {
    if (check_sample_config(run, sc, err)) return -1;
    sit_acts acts;
    guided_model g = {run->ops, &run->model, sc->ema ? &run->pe : &run->p, &acts, sc,
                      sc->n, NULL, NULL, NULL, NULL, NULL,
                      (size_t)run->cfg.model.in_channels * run->cfg.model.image_size *
                          run->cfg.model.image_size};
    if (err) err->msg[0] = '\0';
    return sample_into(run, sc, &g, x, err);
}

int reed_run_sample(reed_run *run, const reed_sample_config *sc, const char *png_path,
                    reed_grid *grid, reed_error *err) {
    if (check_sample_config(run, sc, err)) return -1;
    size_t img = (size_t)run->cfg.model.in_channels * run->cfg.model.image_size *
                 run->cfg.model.image_size;
    float *x = malloc(sizeof(float) * sc->n * img);
    if (!x) return reed_errorf(err, "out of memory");
    int rc = reed_run_sample_images(run, sc, x, err);
    if (rc == 0) rc = write_grid(run, sc, x, png_path, grid, err);
    free(x);
    return rc;
}
