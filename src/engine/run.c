/* A training run: data, sources, model, optimiser state and the step. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cuda/reed_cuda.h"
#include "rng.h"
#include "run_internal.h"

void run_log(reed_run *run, const char *fmt, ...) {
    if (!run->log) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    run->log(run->log_ud, msg);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int make_dir(const char *path, reed_error *err) {
    char tmp[REED_PATH_LEN];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(tmp, 0755);
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return reed_errorf(err, "%s: cannot create directory: %s", path, strerror(errno));
    return 0;
}

static int phase_index_of(reed_run *run, const char *name);

/* --- buffers ------------------------------------------------------------------------ */

void *run_dev_alloc(reed_run *run, size_t bytes) {
    if (run->n_dev_buffers == RUN_MAX_BUFFERS) return NULL;
    void *p = run->ops->mem_alloc(bytes);
    if (p) run->dev_buffers[run->n_dev_buffers++] = p;
    return p;
}

void *run_host_alloc(reed_run *run, size_t bytes) {
    if (run->n_host_buffers == RUN_MAX_BUFFERS) return NULL;
    void *p = calloc(bytes ? bytes : 1, 1);
    if (p) run->host_buffers[run->n_host_buffers++] = p;
    return p;
}

static void free_buffers(reed_run *run) {
    for (int i = 0; i < run->n_dev_buffers; i++) run->ops->mem_free(run->dev_buffers[i]);
    for (int i = 0; i < run->n_host_buffers; i++) free(run->host_buffers[i]);
    run->n_dev_buffers = run->n_host_buffers = 0;
}

/* --- opening ---------------------------------------------------------------------- */

/* The teacher's weights: data.teacher, or the shipped ones. */
static void teacher_path(const reed_config *cfg, char *out, size_t cap) {
    if (cfg->data.teacher[0]) snprintf(out, cap, "%s", cfg->data.teacher);
    else teacher_default_weights(out, cap);
}

static int load_teacher(reed_run *run, reed_error *err) {
    char path[REED_PATH_LEN + 64];
    int B = run->cfg.train.batch;
    teacher_path(&run->cfg, path, sizeof path);
    if (teacher_load(run->ops, &run->teacher, path, err)) return -1;
    run->has_teacher = 1; /* from here on, closing the run frees the teacher */
    if (teacher_acts_alloc(run->ops, &run->teacher_acts, &run->teacher, B, err)) return -1;
    size_t tokens = sizeof(float) * B * TEACHER_TOKENS * TEACHER_DIM;
    size_t global = sizeof(float) * B * TEACHER_DIM;
    run->teacher_tokens = run_dev_alloc(run, tokens);
    run->teacher_global = run_dev_alloc(run, global);
    if (!run->teacher_tokens || !run->teacher_global)
        return reed_errorf(err, "out of memory for the teacher's features");
    run_log(run, "teacher: %s (test accuracy %.2f%%)", path, 100.0 * run->teacher.test_accuracy);
    return 0;
}

static int load_sources(reed_run *run, reed_error *err) {
    int grid = run->cfg.model.image_size / run->cfg.model.patch;
    for (int k = 0; k < run->cfg.n_sources; k++) {
        const reed_source_config *c = &run->cfg.sources[k];
        if (c->from == REED_FROM_FILE) {
            if (source_load(&run->sources[k], c, run->data.N, grid * grid, err)) return -1;
            continue;
        }
        if (!run->has_teacher && load_teacher(run, err)) return -1;
        if (source_init_features(&run->sources[k], c, TEACHER_TOKENS, TEACHER_DIM, grid * grid,
                                 err))
            return -1;
    }
    return 0;
}

static int check_data_matches_model(const reed_run *run, reed_error *err) {
    const reed_model_config *mc = &run->cfg.model;
    const reed_dataset *d = &run->data;
    if (d->C != mc->in_channels || d->S != mc->image_size)
        return reed_errorf(err, "%s: images are %d×%d×%d but the model expects %d×%d×%d "
                           "(model.in_channels, model.image_size)", d->description, d->C,
                           d->S, d->S, mc->in_channels, mc->image_size, mc->image_size);
    if (d->num_classes > mc->num_classes)
        return reed_errorf(err, "%s: labels reach %d but model.num_classes is %d",
                           d->description, d->num_classes - 1, mc->num_classes);
    return 0;
}

/* The paper's initialisation, drawn on the host; the EMA starts equal. */
static int init_weights(reed_run *run, reed_error *err) {
    size_t bytes = run->model.n_params * sizeof(float);
    float *w = malloc(bytes);
    if (!w) return reed_errorf(err, "cannot allocate %zu parameters", run->model.n_params);
    sit_init_weights(&run->model, w, run->cfg.train.seed);
    run->ops->upload(run->params, w, bytes);
    run->ops->upload(run->ema, w, bytes);
    free(w);
    return 0;
}

/* A sampling-only run has no data and no projectors (sampling never uses
 * them) and no training activations. */
static int build_model(reed_run *run, reed_error *err) {
    sit_source src[REED_MAX_SOURCES];
    int n_sources = run->sampling_only ? 0 : run->cfg.n_sources;
    for (int k = 0; k < n_sources; k++)
        src[k] = (sit_source){run->cfg.sources[k].kind, run->cfg.sources[k].depth,
                              run->sources[k].dim, run->cfg.sources[k].projector_dim};
    if (sit_init(&run->model, &run->cfg.model, n_sources, src, err)) return -1;
    size_t n = run->model.n_params;
    float **blocks[] = {&run->params, &run->grads, &run->m, &run->v, &run->ema};
    for (int i = 0; i < 5; i++) {
        *blocks[i] = run_dev_alloc(run, n * sizeof(float));
        if (!*blocks[i])
            return reed_errorf(err, "cannot allocate %zu parameters (%s)", n, run->ops->name);
    }
    sit_point(&run->model, &run->p, run->params);
    sit_point(&run->model, &run->g, run->grads);
    sit_point(&run->model, &run->pe, run->ema);
    if (init_weights(run, err)) return -1;
    if (run->sampling_only) return 0;
    return sit_acts_alloc(&run->acts, run->ops, &run->model, run->cfg.train.batch, 1, err);
}

#define HOST(p, count) ok = ok && ((p) = run_host_alloc(run, sizeof *(p) * (count)))
#define DEV(p, count) ok = ok && ((p) = run_dev_alloc(run, sizeof *(p) * (count)))

static int alloc_batch(reed_run *run, reed_error *err) {
    run_batch *b = &run->batch;
    int B = run->cfg.train.batch, T = run->model.tokens, ok = 1;
    size_t img = (size_t)B * run->data.C * run->data.S * run->data.S;
    HOST(b->idx, B); HOST(b->y, B); HOST(b->x, img);
    HOST(b->t, B); HOST(b->u, B); HOST(b->n, B); HOST(b->drop, B); HOST(b->coef, 4 * B);
    HOST(b->align.sim_host, B * T); HOST(b->align.dsim_host, B * T);
    DEV(b->y_dev, B); DEV(b->idx_dev, B); DEV(b->x_dev, img); DEV(b->noise_dev, img); DEV(b->x_t, img);
    DEV(b->v, img); DEV(b->v_pred, img); DEV(b->dv, img);
    DEV(b->t_dev, B); DEV(b->coef_dev, 4 * B);
    DEV(b->align.sim, B * T); DEV(b->align.dsim, B * T);
    for (int k = 0; k < run->cfg.n_sources; k++) {
        size_t n = (size_t)B * run->sources[k].tokens * run->sources[k].dim;
        DEV(b->target[k], n); DEV(b->dz[k], n);
    }
    return ok ? 0 : reed_errorf(err, "out of memory allocating batch buffers (%s)",
                                run->ops->name);
}

/* Bytes of a file source's array that may be placed on the backend:
 * REED_SOURCE_CAP_MB when set (tests use 0 to take the host path), else
 * 4 GiB on a GPU and no limit where backend memory is host memory (there
 * the array is used where it lies). */
static size_t source_cap(const reed_ops *ops) {
    const char *env = getenv("REED_SOURCE_CAP_MB");
    if (env && *env) return (size_t)strtoull(env, NULL, 10) << 20;
    return ops->host_memory ? SIZE_MAX : (size_t)4 << 30;
}

/* A copy of host data in backend memory (the data itself on a host-memory
 * backend), or NULL when out of memory. */
static const float *on_backend(reed_run *run, const float *host, size_t n) {
    if (run->ops->host_memory) return host;
    float *p = run_dev_alloc(run, n * sizeof(float));
    if (p) run->ops->upload(p, host, n * sizeof(float));
    return p;
}

/* Where each source's batch targets are made, on the backend but for one
 * case: a file source's rows are gathered from its whole array in backend
 * memory (on a GPU when it fits: uploaded once, here), the teacher's
 * features are computed there, and a grid that differs from the model's is
 * resampled there (resample_tokens). Only the rows of a file source too big
 * for the GPU are gathered on the host into rows_host and uploaded each
 * step. Runs after the model and batch buffers, which come first when
 * device memory is short. */
static int place_sources(reed_run *run, reed_error *err) {
    int B = run->cfg.train.batch;
    for (int k = 0; k < run->cfg.n_sources; k++) {
        const reed_source *src = &run->sources[k];
        size_t row = (size_t)src->tokens_src * src->dim, n = (size_t)src->data.size;
        if (src->resample &&
            !(run->source_R[k] = on_backend(run, src->resample, (size_t)src->tokens * src->tokens_src)))
            return reed_errorf(err, "out of memory for source \"%s\"", src->cfg.name);
        if (src->cfg.from != REED_FROM_FILE) continue;
        if (src->resample && !(run->source_rows[k] = run_dev_alloc(run, B * row * sizeof(float))))
            return reed_errorf(err, "out of memory for source \"%s\"", src->cfg.name);
        if (row <= INT_MAX && n * sizeof(float) <= source_cap(run->ops) &&
            (run->source_table[k] = on_backend(run, src->data.data, n))) {
            if (!run->ops->host_memory)
                run_log(run, "source \"%s\": %.0f MB of targets resident on the %s",
                        src->cfg.name, n * sizeof(float) / 1048576.0, run->ops->name);
        } else if (!(run->batch.rows_host[k] = run_host_alloc(run, B * row * sizeof(float)))) {
            return reed_errorf(err, "out of memory for source \"%s\"", src->cfg.name);
        }
    }
    return 0;
}

#undef HOST
#undef DEV

static int write_config_file(reed_run *run, reed_error *err) {
    char path[REED_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/config.lua", run->dir);
    return write_file_atomic(path, run->config_text, strlen(run->config_text), err);
}

static int open_parts(reed_run *run, reed_error *err) {
    char path[REED_PATH_LEN + 32];
    if (run->sampling_only) return build_model(run, err);
    if (make_dir(run->dir, err) || write_config_file(run, err)) return -1;
    snprintf(path, sizeof path, "%s/checkpoints", run->dir);
    if (make_dir(path, err)) return -1;
    snprintf(path, sizeof path, "%s/samples", run->dir);
    if (make_dir(path, err)) return -1;
    if (dataset_load(&run->data, &run->cfg.data, err) || check_data_matches_model(run, err) ||
        load_sources(run, err) || build_model(run, err) || alloc_batch(run, err) ||
        place_sources(run, err))
        return -1;
    snprintf(path, sizeof path, "%s/metrics.jsonl", run->dir);
    run->metrics = fopen(path, "a");
    if (!run->metrics) return reed_errorf(err, "%s: cannot open: %s", path, strerror(errno));
    return 0;
}

/* The backend of train.device: auto takes CUDA when a GPU is usable and
 * otherwise says in one line why it trains on the CPU. */
static int select_backend(reed_run *run, reed_error *err) {
    char why[256] = "";
    reed_device d = run->cfg.train.device;
    run->ops = &reed_ops_cpu;
    if (d == REED_DEVICE_CPU) return 0;
    const reed_ops *cuda = reed_ops_cuda(why, sizeof why);
    if (cuda) {
        run->ops = cuda;
        reed_cuda_set_precision(run->cfg.train.precision == REED_PRECISION_BF16);
        return 0;
    }
    if (d == REED_DEVICE_CUDA) return reed_errorf(err, "train.device = \"cuda\": %s", why);
    snprintf(run->device_note, sizeof run->device_note, "%s; using the CPU", why);
    return 0;
}

int reed_run_open(reed_run **out, const reed_config *cfg, const char *config_text,
                  const char *run_dir, reed_error *err) {
    *out = NULL;
    if (reed_config_validate(cfg, err)) return -1;
    reed_run *run = calloc(1, sizeof *run);
    if (!run) return reed_errorf(err, "out of memory");
    run->cfg = *cfg;
    run->ops = &reed_ops_cpu;
    for (int i = 0; i < REED_PHASE_COUNT; i++) phase_index_of(run, reed_phase_names[i]);
    run->config_text = strdup(config_text ? config_text : "");
    run->sampling_only = run_dir == NULL;
    snprintf(run->dir, sizeof run->dir, "%s", run_dir ? run_dir : "");
    reed_cpu_set_threads(cfg->train.threads);
    if (!run->config_text || select_backend(run, err) || open_parts(run, err)) {
        reed_run_close(run);
        return -1;
    }
    *out = run;
    return 0;
}

void reed_run_close(reed_run *run) {
    if (!run) return;
    if (run->metrics) fclose(run->metrics);
    reed_quality_close(run->quality);
    sit_acts_free(&run->acts, &run->model);
    sit_view_free(&run->p);
    sit_view_free(&run->g);
    sit_view_free(&run->pe);
    sit_free(&run->model);
    free_buffers(run);
    for (int k = 0; k < REED_MAX_SOURCES; k++) source_free(&run->sources[k]);
    dataset_free(&run->data);
    if (run->has_teacher) {
        teacher_acts_free(&run->teacher_acts);
        teacher_free(&run->teacher);
    }
    free(run->config_text);
    free(run);
}

void reed_run_set_log(reed_run *run, reed_log_fn fn, void *ud) {
    run->log = fn;
    run->log_ud = ud;
}

/* --- one step ---------------------------------------------------------------------- */

/* Draws the batch of step s on the host: examples, dropped labels, times.
 * Every draw is keyed by (seed, s); the noise is drawn on the backend. */
static void draw_batch(reed_run *run, int s) {
    const reed_train_config *tc = &run->cfg.train;
    run_batch *b = &run->batch;
    int B = tc->batch, null_class = run->cfg.model.num_classes;
    dataset_next_batch(&run->data, &run->cursor, tc->seed, B, b->idx, b->x, b->y);
    rng_uniform(b->drop, B, tc->seed, s, REED_STREAM_LABEL_DROP);
    rng_uniform(b->u, B, tc->seed, s, REED_STREAM_TIME);
    rng_normal(b->n, B, tc->seed, s, REED_STREAM_TIME);
    float *pa = b->coef, *ps = pa + B, *pda = ps + B, *pds = pda + B;
    for (int i = 0; i < B; i++) {
        if (b->drop[i] < run->cfg.model.class_dropout) b->y[i] = null_class;
        b->t[i] = time_sample(tc->time_sampling, tc->path, b->u[i], b->n[i]);
        path_coeffs c = path_at(tc->path, b->t[i]);
        pa[i] = c.a; ps[i] = c.s; pda[i] = c.da; pds[i] = c.ds;
    }
}

/* The batch's rows of source k on the source's own grid, in backend
 * memory: the teacher's features, or rows of the file's array, gathered on
 * the backend or (too big for it) on the host and uploaded, into the target
 * itself when no resampling follows. */
static const float *source_rows(reed_run *run, int k) {
    const reed_source *src = &run->sources[k];
    run_batch *b = &run->batch;
    int B = run->cfg.train.batch;
    size_t row = (size_t)src->tokens_src * src->dim;
    if (src->cfg.from != REED_FROM_FILE)
        return src->cfg.kind == REED_SOURCE_TOKEN ? run->teacher_tokens : run->teacher_global;
    float *rows = src->resample ? run->source_rows[k] : b->target[k];
    if (run->source_table[k]) {
        run->ops->embedding_forward(rows, run->source_table[k], b->idx_dev, B, (int)row);
    } else {
        source_gather(src, b->idx, B, b->rows_host[k]);
        run->ops->upload(rows, b->rows_host[k], B * row * sizeof(float));
    }
    return rows;
}

/* The alignment targets of the batch, in backend memory (see
 * place_sources). */
static void batch_targets(reed_run *run) {
    const reed_ops *ops = run->ops;
    run_batch *b = &run->batch;
    int B = run->cfg.train.batch;
    if (run->has_teacher)
        teacher_features(ops, &run->teacher, &run->teacher_acts, b->x_dev, B,
                         run->teacher_tokens, run->teacher_global);
    for (int k = 0; k < run->cfg.n_sources; k++) {
        const reed_source *src = &run->sources[k];
        size_t out = sizeof(float) * B * src->tokens * src->dim;
        const float *rows = source_rows(run, k);
        if (src->resample)
            ops->resample_tokens(b->target[k], run->source_R[k], rows, B, src->tokens,
                                 src->tokens_src, src->dim);
        else if (rows != b->target[k])
            ops->copy(b->target[k], rows, out);
    }
}

/* Draws the batch, moves it to the backend, builds x_t and the target
 * velocity there, and the alignment targets. */
static void prepare_batch(reed_run *run, int s) {
    const reed_ops *ops = run->ops;
    run_batch *b = &run->batch;
    int B = run->cfg.train.batch;
    size_t img = (size_t)run->data.C * run->data.S * run->data.S;
    draw_batch(run, s);
    ops->upload(b->x_dev, b->x, sizeof(float) * B * img);
    ops->normal_fill(b->noise_dev, B * img, run->cfg.train.seed, (uint64_t)s,
                     REED_STREAM_NOISE);
    ops->upload(b->y_dev, b->y, sizeof(int) * B);
    ops->upload(b->idx_dev, b->idx, sizeof(int) * B);
    ops->upload(b->t_dev, b->t, sizeof(float) * B);
    ops->upload(b->coef_dev, b->coef, sizeof(float) * 4 * B);
    const float *c = b->coef_dev;
    ops->interpolate(b->x_t, b->v, b->x_dev, b->noise_dev, c, c + B, c + 2 * B, c + 3 * B, B,
                     img);
    batch_targets(run);
}

/* Forward, losses and backward; fills the loss terms of m. */
static void forward_backward(reed_run *run, const reed_weights *w, reed_metrics *m) {
    const reed_config *c = &run->cfg;
    const reed_ops *ops = run->ops;
    run_batch *b = &run->batch;
    int B = c->train.batch;
    size_t n = (size_t)B * run->data.C * run->data.S * run->data.S;
    sit_forward(ops, &run->model, &run->p, &run->acts, b->x_t, b->t_dev, b->y_dev, b->v_pred,
                1);
    m->loss_denoise = ops->mse_forward_backward(b->dv, b->v_pred, b->v, n, w->w_diff);
    m->loss = w->w_diff * m->loss_denoise;
    float *dz[REED_MAX_SOURCES] = {0};
    for (int k = 0; k < c->n_sources; k++) {
        const reed_source *s = &run->sources[k];
        float coef = c->curriculum.proj_coeff * w->w_align * c->sources[k].coeff;
        dz[k] = coef != 0.0f ? b->dz[k] : NULL;
        align_result r = align_loss(ops, dz[k], &b->align, run->acts.proj[k].z, b->target[k],
                                    b->t, B, s->tokens, s->dim, &c->sources[k], coef);
        m->sim[k] = r.sim;
        m->loss_src[k] = r.loss;
        m->source_names[k] = c->sources[k].name;
        m->loss += coef * r.loss;
    }
    m->n_sources = c->n_sources;
    ops->zero(run->grads, run->model.n_params * sizeof(float));
    sit_backward(ops, &run->model, &run->p, &run->g, &run->acts, b->dv, dz);
}

/* Names the first non-finite loss term, or returns NULL. */
static const char *bad_term(const reed_metrics *m) {
    if (!isfinite(m->loss_denoise)) return "loss_denoise";
    for (int k = 0; k < m->n_sources; k++)
        if (!isfinite(m->loss_src[k])) return m->source_names[k];
    if (!isfinite(m->loss)) return "loss";
    if (!isfinite(m->grad_norm)) return "grad_norm";
    return NULL;
}

/* EMA warm-up (as diffusers' EMAModel): decay = min(ema_decay, (1+s)/(10+s)),
 * so that a short run's EMA is not dominated by the initial weights. */
static float ema_decay_at(const reed_train_config *tc, int s) {
    float warm = (1.0f + s) / (10.0f + s);
    return warm < tc->ema_decay ? warm : tc->ema_decay;
}

/* Global-norm clipping (PyTorch's clip_grad_norm_ factor), then AdamW and
 * the EMA in one pass. */
static void optimizer_step(reed_run *run, double grad_norm) {
    const reed_train_config *tc = &run->cfg.train;
    float scale = 1.0f;
    if (tc->grad_clip > 0 && grad_norm > tc->grad_clip)
        scale = (float)(tc->grad_clip / (grad_norm + 1e-6));
    run->ops->adamw_update(run->params, run->grads, run->m, run->v, run->model.n_params,
                           tc->lr, tc->beta1, tc->beta2, tc->eps, tc->weight_decay, scale,
                           run->step + 1, run->ema, ema_decay_at(tc, run->step));
}

/* --- schedules ------------------------------------------------------------------------ */

void reed_run_set_schedule(reed_run *run, reed_schedule_fn fn, void *ud) {
    run->schedule = fn;
    run->schedule_ud = ud;
}

/* Index of a phase name, registering a new custom one (the last slot is
 * shared by any names beyond the table). */
static int phase_index_of(reed_run *run, const char *name) {
    for (int i = 0; i < run->n_phases; i++)
        if (strcmp(run->phase_names[i], name) == 0) return i;
    if (run->n_phases == RUN_MAX_PHASES) return RUN_MAX_PHASES - 1;
    snprintf(run->phase_names[run->n_phases], sizeof run->phase_names[0], "%s", name);
    return run->n_phases++;
}

int reed_run_weights_at(reed_run *run, int step, float *w_diff, float *w_align,
                        int *phase_index, reed_error *err) {
    if (!run->schedule) {
        reed_weights w = curriculum_at(&run->cfg.curriculum, step, run->cfg.train.steps,
                                       run->cfg.n_sources > 0);
        *w_diff = w.w_diff;
        *w_align = w.w_align;
        *phase_index = (int)w.phase;
        return 0;
    }
    const char *phase = "custom";
    if (run->schedule(run->schedule_ud, step, run->cfg.train.steps, w_diff, w_align, &phase,
                      err))
        return -1;
    if (!isfinite(*w_diff) || !isfinite(*w_align))
        return reed_errorf(err, "schedule: non-finite weight at step %d", step);
    *phase_index = phase_index_of(run, phase ? phase : "custom");
    return 0;
}

int reed_run_phase_names(const reed_run *run, const char **names, int cap) {
    for (int i = 0; i < run->n_phases && i < cap; i++) names[i] = run->phase_names[i];
    return run->n_phases;
}

/* --- periodic evaluation ------------------------------------------------------------ */

static int eval_due(const reed_run *run) {
    int every = run->cfg.eval.every, done = run->step;
    return every > 0 && !run->eval_off && (done % every == 0 || done == run->cfg.train.steps);
}

/* Scores eval.n samples after the step just taken (fd, fd_n, cond_acc). A
 * failure is logged and turns evaluation off; it never stops the run. */
static void evaluate(reed_run *run, reed_metrics *m) {
    reed_error err = {{0}};
    reed_sample_config sc = run->cfg.sample;
    sc.steps = run->cfg.eval.steps;
    sc.seed = run->cfg.eval.seed;
    reed_quality_result r;
    if ((!run->quality && reed_quality_open(&run->quality, NULL, run->cfg.data.dir, &err)) ||
        reed_quality_measure(run->quality, run, &sc, run->cfg.eval.n, &r, &err)) {
        run_log(run, "eval: %s; periodic evaluation is off for this run", err.msg);
        run->eval_off = 1;
        return;
    }
    m->fd_n = r.n;
    m->fd = r.fd;
    m->cond_acc = r.cond_acc;
    run_log(run, "eval at step %d: FD %.3f, class accuracy %.1f%% (n %d, %d %s steps)",
            run->step, r.fd, 100.0 * r.cond_acc, r.n, sc.steps,
            reed_sampler_names[sc.sampler]);
}

/* --- one step, continued ----------------------------------------------------------------- */

int reed_run_step(reed_run *run, reed_metrics *m, reed_error *err) {
    if (run->sampling_only) return reed_errorf(err, "this run was opened for sampling only");
    double start = now_seconds();
    int s = run->step;
    float w_diff, w_align;
    int phase;
    if (reed_run_weights_at(run, s, &w_diff, &w_align, &phase, err)) return -1;
    reed_weights w = {w_diff, w_align, (reed_phase)phase};
    memset(m, 0, sizeof *m);
    m->step = s;
    m->phase = run->phase_names[phase];
    m->phase_index = phase;
    m->w_diff = w.w_diff;
    m->w_align = w.w_align;
    m->proj_coeff = run->cfg.curriculum.proj_coeff;
    m->lr = run->cfg.train.lr;
    reed_cursor saved = run->cursor;
    prepare_batch(run, s);
    forward_backward(run, &w, m);
    m->grad_norm = sqrt(run->ops->sum_squares(run->grads, run->model.n_params));
    const char *bad = bad_term(m);
    if (bad) {
        run->cursor = saved; /* the step did not happen */
        return reed_errorf(err, "step %d: non-finite %s (loss %g, loss_denoise %g, "
                           "grad_norm %g); no update applied", s, bad, m->loss,
                           m->loss_denoise, m->grad_norm);
    }
    optimizer_step(run, m->grad_norm);
    run->step++;
    m->step_seconds = now_seconds() - start;
    m->imgs_per_s = run->cfg.train.batch / m->step_seconds;
    run->active_seconds += m->step_seconds;
    m->device_mb = reed_run_device_memory(run) / 1048576.0;
    if (eval_due(run)) evaluate(run, m);
    metrics_write_jsonl(run->metrics, m); /* every step: the applied weights too */
    fflush(run->metrics);
    return 0;
}

/* --- accessors and live changes ------------------------------------------------------ */

int reed_run_steps_done(const reed_run *run) { return run->step; }
int reed_run_total_steps(const reed_run *run) { return run->cfg.train.steps; }
const reed_config *reed_run_config(const reed_run *run) { return &run->cfg; }
const char *reed_run_dir(const reed_run *run) { return run->dir; }
const char *reed_run_device(const reed_run *run) { return run->ops->name; }
const char *reed_run_device_note(const reed_run *run) { return run->device_note; }
size_t reed_run_device_memory(const reed_run *run) {
    return run->ops->mem_used ? run->ops->mem_used() : 0;
}
double reed_run_active_seconds(const reed_run *run) { return run->active_seconds; }

/* What must stay fixed for the run's tensors and data to remain valid. */
static int shape_fields_equal(const reed_config *a, const reed_config *b, reed_error *err) {
    reed_model_config ma = a->model, mb = b->model;
    ma.class_dropout = mb.class_dropout; /* label dropout may change live */
    if (memcmp(&ma, &mb, sizeof ma) != 0)
        return reed_errorf(err, "model fields cannot change in a running run");
    if (memcmp(&a->data, &b->data, sizeof a->data) != 0)
        return reed_errorf(err, "data fields cannot change in a running run");
    if (a->n_sources != b->n_sources)
        return reed_errorf(err, "sources cannot be added or removed in a running run");
    if (a->train.batch != b->train.batch || a->train.seed != b->train.seed ||
        a->train.device != b->train.device)
        return reed_errorf(err, "train.batch, train.seed and train.device cannot change in a "
                           "running run");
    for (int k = 0; k < a->n_sources; k++) {
        const reed_source_config *s = &a->sources[k], *t = &b->sources[k];
        if (strcmp(s->name, t->name) || strcmp(s->file, t->file) || s->kind != t->kind ||
            s->from != t->from ||
            s->depth != t->depth || s->projector_dim != t->projector_dim ||
            s->resample != t->resample)
            return reed_errorf(err, "source \"%s\": only coeff, weighting and cutoff can "
                               "change in a running run", s->name);
    }
    return 0;
}

int reed_run_reconfigure(reed_run *run, const reed_config *cfg,
                         const char *config_text, reed_error *err) {
    if (reed_config_validate(cfg, err) || shape_fields_equal(&run->cfg, cfg, err)) return -1;
    char *text = strdup(config_text ? config_text : "");
    if (!text) return reed_errorf(err, "out of memory");
    free(run->config_text);
    run->config_text = text;
    if (cfg->train.threads != run->cfg.train.threads) reed_cpu_set_threads(cfg->train.threads);
    run->cfg = *cfg;
    return write_config_file(run, err);
}
