/* The teacher CNN: tensor table, initialisation, forward, backward,
 * training, evaluation, features, safetensors I/O (see teacher.h).
 * Gradient contract: teacher_backward adds (+=) into the gradient view. */
#include "teacher.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "data.h"
#include "formats.h"
#include "rng.h"

static const int conv_cin[TEACHER_CONVS] = {1, 16, 32, 64};
static const int conv_cout[TEACHER_CONVS] = {16, 32, 64, 64};
static const int conv_stride[TEACHER_CONVS] = {1, 2, 2, 1};
enum { KSIZE = 3, PAD = 1 };

const char *teacher_architecture(void) {
    return "conv1 3x3 1->16 s1 p1 relu; conv2 3x3 16->32 s2 p1 relu; "
           "conv3 3x3 32->64 s2 p1 relu; conv4 3x3 64->64 s1 p1 relu (tokens 7x7x64); "
           "global avgpool (global 64); fc 64->10; input 1x28x28 in [-1,1] "
           "(pixel/127.5-1)";
}

/* --- the tensor table ------------------------------------------------------------- */

static void add_tensor(teacher_model *t, int i, const char *name, int ndim,
                       int d0, int d1, int d2, int d3) {
    teacher_tensor *x = &t->tensors[i];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->ndim = ndim;
    int shape[4] = {d0, d1, d2, d3};
    x->size = 1;
    for (int k = 0; k < ndim; k++) {
        x->shape[k] = shape[k];
        x->size *= (size_t)shape[k];
    }
    x->offset = t->n_params;
    t->n_params += x->size;
}

int teacher_init(teacher_model *t, reed_error *err) {
    memset(t, 0, sizeof *t);
    t->test_accuracy = -1.0;
    t->side[0] = TEACHER_IMAGE;
    char name[32];
    for (int l = 0; l < TEACHER_CONVS; l++) {
        t->cin[l] = conv_cin[l];
        t->cout[l] = conv_cout[l];
        t->stride[l] = conv_stride[l];
        t->side[l + 1] = reed_conv2d_out_size(t->side[l], KSIZE, t->stride[l], PAD);
        snprintf(name, sizeof name, "conv%d.weight", l + 1);
        add_tensor(t, 2 * l, name, 4, t->cout[l], t->cin[l], KSIZE, KSIZE);
        snprintf(name, sizeof name, "conv%d.bias", l + 1);
        add_tensor(t, 2 * l + 1, name, 1, t->cout[l], 0, 0, 0);
    }
    add_tensor(t, 2 * TEACHER_CONVS, "fc.weight", 2, TEACHER_CLASSES, TEACHER_DIM, 0, 0);
    add_tensor(t, 2 * TEACHER_CONVS + 1, "fc.bias", 1, TEACHER_CLASSES, 0, 0, 0);
    t->params = calloc(t->n_params, sizeof(float));
    return t->params ? 0 : reed_errorf(err, "teacher: out of memory");
}

void teacher_free(teacher_model *t) {
    free(t->params);
    t->params = NULL;
}

void teacher_point(const teacher_model *t, teacher_params *view, float *block) {
    for (int l = 0; l < TEACHER_CONVS; l++) {
        view->conv_w[l] = block + t->tensors[2 * l].offset;
        view->conv_b[l] = block + t->tensors[2 * l + 1].offset;
    }
    view->fc_w = block + t->tensors[2 * TEACHER_CONVS].offset;
    view->fc_b = block + t->tensors[2 * TEACHER_CONVS + 1].offset;
}

/* He-uniform U(±sqrt(6/fan_in)) for the ReLU convolutions, Xavier-uniform
 * for the classifier, zero biases. */
void teacher_init_weights(const teacher_model *t, float *block, uint64_t seed) {
    for (int i = 0; i < TEACHER_TENSORS; i++) {
        const teacher_tensor *x = &t->tensors[i];
        float *w = block + x->offset;
        if (x->ndim == 1) {
            memset(w, 0, x->size * sizeof *w);
            continue;
        }
        double fan_out = x->shape[0], fan_in = (double)x->size / fan_out;
        double a = x->ndim == 4 ? sqrt(6.0 / fan_in) : sqrt(6.0 / (fan_in + fan_out));
        rng_uniform(w, x->size, seed, (uint64_t)i, REED_STREAM_INIT);
        for (size_t k = 0; k < x->size; k++) w[k] = (float)(a * (2.0 * w[k] - 1.0));
    }
}

/* --- activations ------------------------------------------------------------------- */

static size_t map_size(const teacher_model *t, int l, int B) { /* a[l] floats */
    return (size_t)B * t->cout[l] * t->side[l + 1] * t->side[l + 1];
}

static size_t conv_scratch(const teacher_model *t, int l, int B) {
    return reed_conv2d_scratch_floats(B, t->cin[l], t->side[l], t->side[l], t->cout[l],
                                      KSIZE, t->stride[l], PAD);
}

/* Carves the buffers from one block: pass 1 counts (base NULL), pass 2 points. */
static size_t carve(teacher_acts *a, const teacher_model *t, int B, int bwd, float *base) {
    size_t off = 0, scr = 0, big = 0;
#define TAKE(ptr, n) do { size_t n_ = (n); if (base) (ptr) = base + off; off += n_; } while (0)
    TAKE(a->x, (size_t)B * TEACHER_IMAGE * TEACHER_IMAGE);
    for (int l = 0; l < TEACHER_CONVS; l++) {
        TAKE(a->a[l], map_size(t, l, B));
        if (conv_scratch(t, l, B) > scr) scr = conv_scratch(t, l, B);
        if (map_size(t, l, B) > big) big = map_size(t, l, B);
    }
    TAKE(a->pool, (size_t)B * TEACHER_DIM);
    TAKE(a->logits, (size_t)B * TEACHER_CLASSES);
    TAKE(a->scratch, scr);
    if (bwd) {
        for (int l = 0; l < TEACHER_CONVS; l++) TAKE(a->d_a[l], map_size(t, l, B));
        TAKE(a->d_pre, big);
        TAKE(a->d_pool, (size_t)B * TEACHER_DIM);
        TAKE(a->d_logits, (size_t)B * TEACHER_CLASSES);
    }
#undef TAKE
    return off;
}

int teacher_acts_alloc(teacher_acts *a, const teacher_model *t, int B,
                       int for_backward, reed_error *err) {
    memset(a, 0, sizeof *a);
    a->B = B;
    size_t n = carve(a, t, B, for_backward, NULL);
    a->mem = malloc(n * sizeof(float));
    if (!a->mem)
        return reed_errorf(err, "teacher: out of memory for activations (%zu MB)",
                           n * sizeof(float) >> 20);
    carve(a, t, B, for_backward, a->mem);
    return 0;
}

void teacher_acts_free(teacher_acts *a) {
    free(a->mem);
    memset(a, 0, sizeof *a);
}

/* --- forward and backward ------------------------------------------------------ */

void teacher_forward(const reed_ops *ops, const teacher_model *t,
                     const teacher_params *p, teacher_acts *a, const float *x,
                     int B) {
    // Keep the input for the backward pass (conv1's dw needs it).
    if (x != a->x)
        memcpy(a->x, x, sizeof(float) * (size_t)B * TEACHER_IMAGE * TEACHER_IMAGE);
    const float *in = a->x;
    for (int l = 0; l < TEACHER_CONVS; l++) {
        int s = t->side[l];
        ops->conv2d_forward(a->a[l], in, p->conv_w[l], p->conv_b[l], B, t->cin[l], s, s,
                            t->cout[l], KSIZE, t->stride[l], PAD, a->scratch);
        ops->relu_forward(a->a[l], a->a[l], map_size(t, l, B));
        in = a->a[l];
    }
    ops->avgpool_global_forward(a->pool, a->a[3], B, TEACHER_DIM, TEACHER_GRID, TEACHER_GRID);
    ops->linear_forward(a->logits, a->pool, p->fc_w, p->fc_b, B, TEACHER_DIM,
                        TEACHER_CLASSES);
}

/* Walks the forward list backwards; conv l reads its input from a->a[l-1]
 * (a->x for conv1), gradients of the maps go through a->d_a and a->d_pre. */
void teacher_backward(const reed_ops *ops, const teacher_model *t,
                      const teacher_params *p, const teacher_params *g,
                      teacher_acts *a, const float *dlogits, int B) {
    memset(a->d_pool, 0, sizeof(float) * (size_t)B * TEACHER_DIM);
    ops->linear_backward(a->d_pool, g->fc_w, g->fc_b, dlogits, a->pool, p->fc_w, B,
                         TEACHER_DIM, TEACHER_CLASSES);
    memset(a->d_a[3], 0, sizeof(float) * map_size(t, 3, B));
    ops->avgpool_global_backward(a->d_a[3], a->d_pool, B, TEACHER_DIM, TEACHER_GRID,
                                 TEACHER_GRID);
    for (int l = TEACHER_CONVS - 1; l >= 0; l--) {
        size_t n = map_size(t, l, B);
        memset(a->d_pre, 0, sizeof(float) * n);
        ops->relu_backward(a->d_pre, a->d_a[l], a->a[l], n);
        float *dinp = NULL;
        if (l > 0) {
            dinp = a->d_a[l - 1];
            memset(dinp, 0, sizeof(float) * map_size(t, l - 1, B));
        }
        int s = t->side[l];
        ops->conv2d_backward(dinp, g->conv_w[l], g->conv_b[l], a->d_pre,
                             l > 0 ? a->a[l - 1] : a->x, p->conv_w[l], B, t->cin[l], s, s,
                             t->cout[l], KSIZE, t->stride[l], PAD, a->scratch);
    }
}

void teacher_features(const reed_ops *ops, const teacher_model *t,
                      teacher_acts *a, const float *x, int B, float *tokens,
                      float *global) {
    teacher_params p;
    teacher_point(t, &p, t->params);
    teacher_forward(ops, t, &p, a, x, B);
    if (tokens) {
        // (B, D, T) → (B, T, D)
        for (int b = 0; b < B; b++)
            for (int c = 0; c < TEACHER_DIM; c++) {
                const float *src = a->a[3] + ((size_t)b * TEACHER_DIM + c) * TEACHER_TOKENS;
                float *dst = tokens + (size_t)b * TEACHER_TOKENS * TEACHER_DIM + c;
                for (int k = 0; k < TEACHER_TOKENS; k++) dst[(size_t)k * TEACHER_DIM] = src[k];
            }
    }
    if (global) memcpy(global, a->pool, sizeof(float) * (size_t)B * TEACHER_DIM);
}

/* --- data -------------------------------------------------------------------------- */

int teacher_split_load(teacher_split *s, const char *dir, const char *prefix,
                       reed_error *err) {
    memset(s, 0, sizeof *s);
    char path[4096];
    reed_array img = {0}, lab = {0};
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    if (idx_load(path, &img, err)) return -1;
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    if (idx_load(path, &lab, err)) {
        reed_array_free(&img);
        return -1;
    }
    if (img.ndim != 3 || img.shape[1] != TEACHER_IMAGE || img.shape[2] != TEACHER_IMAGE ||
        lab.ndim != 1 || lab.shape[0] != img.shape[0]) {
        reed_array_free(&img);
        reed_array_free(&lab);
        return reed_errorf(err, "%s/%s-*: expected (N,28,28) images and (N) labels", dir,
                           prefix);
    }
    s->N = (int)img.shape[0];
    s->images = img.data;
    for (int64_t i = 0; i < img.size; i++) s->images[i] = s->images[i] / 127.5f - 1.0f;
    s->labels = malloc(sizeof(int) * (size_t)s->N);
    if (!s->labels) {
        reed_array_free(&img);
        reed_array_free(&lab);
        return reed_errorf(err, "teacher: out of memory");
    }
    for (int i = 0; i < s->N; i++) {
        s->labels[i] = (int)lab.data[i];
        if (s->labels[i] < 0 || s->labels[i] >= TEACHER_CLASSES) {
            reed_array_free(&lab);
            teacher_split_free(s);
            return reed_errorf(err, "%s: label %d of example %d is not in 0..9", path,
                               (int)lab.data[i], i);
        }
    }
    reed_array_free(&lab);
    return 0;
}

void teacher_split_free(teacher_split *s) {
    free(s->images);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

double teacher_evaluate(const reed_ops *ops, const teacher_model *t,
                        teacher_acts *a, const teacher_split *s, int n,
                        double *loss) {
    if (n <= 0 || n > s->N) n = s->N;
    teacher_params p;
    teacher_point(t, &p, t->params);
    const size_t img = (size_t)TEACHER_IMAGE * TEACHER_IMAGE;
    long hits = 0;
    double lsum = 0.0;
    for (int i = 0; i < n; i += a->B) {
        int B = n - i < a->B ? n - i : a->B, h = 0;
        teacher_forward(ops, t, &p, a, s->images + (size_t)i * img, B);
        lsum += B * ops->cross_entropy_forward_backward(NULL, &h, a->logits,
                                                        s->labels + i, B,
                                                        TEACHER_CLASSES, 1.0f);
        hits += h;
    }
    if (loss) *loss = n ? lsum / n : 0.0;
    return n ? (double)hits / n : 0.0;
}

/* --- training ---------------------------------------------------------------------- */

void teacher_train_defaults(teacher_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->data_dir = "/usr/share/datasets/fashion-mnist";
    o->epochs = 6;
    o->batch = 64;
    o->seed = 0;
    o->lr = 3e-3f;
    o->weight_decay = 1e-4f;
    o->warmup = 100;
    o->log_every = 50;
    o->flip = 0;
}

/* Mirrors each image of x (B,1,28,28) left-right with probability 0.5,
 * drawn from (seed, step); the teacher uses no noise, so it borrows the
 * NOISE stream for these draws. */
static void flip_batch(float *x, float *u, int B, uint64_t seed, int step) {
    rng_uniform(u, (size_t)B, seed, (uint64_t)step, REED_STREAM_NOISE);
    for (int b = 0; b < B; b++) {
        if (u[b] >= 0.5f) continue;
        float *img = x + (size_t)b * TEACHER_IMAGE * TEACHER_IMAGE;
        for (int r = 0; r < TEACHER_IMAGE; r++) {
            float *row = img + r * TEACHER_IMAGE;
            for (int c = 0; c < TEACHER_IMAGE / 2; c++) {
                float tmp = row[c];
                row[c] = row[TEACHER_IMAGE - 1 - c];
                row[TEACHER_IMAGE - 1 - c] = tmp;
            }
        }
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void logf_(const teacher_train_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void logf_(const teacher_train_opts *o, const char *fmt, ...) {
    if (!o->log) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    o->log(o->log_ctx, line);
}

/* Linear warm-up to the peak, then cosine decay to 0 at the last step. */
static float lr_at(const teacher_train_opts *o, int step, int total) {
    if (step < o->warmup) return o->lr * (float)(step + 1) / (float)o->warmup;
    double u = (double)(step - o->warmup) / (double)(total - o->warmup > 1 ? total - o->warmup : 1);
    return (float)(o->lr * 0.5 * (1.0 + cos(M_PI * (u < 1 ? u : 1))));
}

typedef struct train_state {
    reed_dataset train;
    teacher_split test;
    teacher_acts acts, eval_acts;
    float *grads, *m, *v;
    int *idx, *labels;
    float *draws;          /* (B) flip draws */
} train_state;

static void train_state_free(train_state *s) {
    dataset_free(&s->train);
    teacher_split_free(&s->test);
    teacher_acts_free(&s->acts);
    teacher_acts_free(&s->eval_acts);
    free(s->grads);
    free(s->m);
    free(s->v);
    free(s->idx);
    free(s->labels);
    free(s->draws);
}

static int train_state_init(train_state *s, const teacher_model *t,
                            const teacher_train_opts *o, reed_error *err) {
    memset(s, 0, sizeof *s);
    reed_data_config dc;
    memset(&dc, 0, sizeof dc);
    snprintf(dc.dataset, sizeof dc.dataset, "fashion-mnist");
    snprintf(dc.dir, sizeof dc.dir, "%s", o->data_dir);
    if (dataset_load(&s->train, &dc, err)) return -1;
    if (s->train.C != 1 || s->train.S != TEACHER_IMAGE)
        return reed_errorf(err, "%s: expected 1x28x28 images", o->data_dir);
    if (teacher_split_load(&s->test, o->data_dir, "t10k", err)) return -1;
    if (teacher_acts_alloc(&s->acts, t, o->batch, 1, err) ||
        teacher_acts_alloc(&s->eval_acts, t, 500, 0, err))
        return -1;
    s->grads = calloc(t->n_params, sizeof(float));
    s->m = calloc(t->n_params, sizeof(float));
    s->v = calloc(t->n_params, sizeof(float));
    s->idx = malloc(sizeof(int) * (size_t)o->batch);
    s->labels = malloc(sizeof(int) * (size_t)o->batch);
    s->draws = malloc(sizeof(float) * (size_t)o->batch);
    if (!s->grads || !s->m || !s->v || !s->idx || !s->labels || !s->draws)
        return reed_errorf(err, "teacher: out of memory");
    return 0;
}

int teacher_train(const reed_ops *ops, teacher_model *t,
                  const teacher_train_opts *o, reed_error *err) {
    train_state s;
    if (o->epochs < 1 || o->batch < 1)
        return reed_errorf(err, "teacher train: epochs and batch must be positive");
    if (train_state_init(&s, t, o, err)) {
        train_state_free(&s);
        return -1;
    }
    teacher_init_weights(t, t->params, o->seed);
    teacher_params p, g;
    teacher_point(t, &p, t->params);
    teacher_point(t, &g, s.grads);
    const int B = o->batch, steps_per_epoch = (s.train.N + B - 1) / B;
    const int total = steps_per_epoch * o->epochs;
    reed_cursor cur = {0, 0};
    logf_(o, "teacher: %zu parameters; %d training images, %d test images; "
          "%d epochs x %d steps, batch %d, seed %llu, %d threads",
          t->n_params, s.train.N, s.test.N, o->epochs, steps_per_epoch, B,
          (unsigned long long)o->seed, reed_cpu_threads());
    double t0 = now_s(), tlog = t0, lsum = 0.0;
    long hits = 0, seen = 0;
    for (int step = 0; step < total; step++) {
        dataset_next_batch(&s.train, &cur, o->seed, B, s.idx, s.acts.x, s.labels);
        if (o->flip) flip_batch(s.acts.x, s.draws, B, o->seed, step);
        teacher_forward(ops, t, &p, &s.acts, s.acts.x, B);
        int h = 0;
        lsum += B * ops->cross_entropy_forward_backward(s.acts.d_logits, &h,
                                                        s.acts.logits, s.labels, B,
                                                        TEACHER_CLASSES, 1.0f);
        hits += h;
        seen += B;
        memset(s.grads, 0, sizeof(float) * t->n_params);
        teacher_backward(ops, t, &p, &g, &s.acts, s.acts.d_logits, B);
        ops->adamw_update(t->params, s.grads, s.m, s.v, t->n_params, lr_at(o, step, total),
                          0.9f, 0.999f, 1e-8f, o->weight_decay, 1.0f, step + 1);
        int epoch = step / steps_per_epoch, in_epoch = step % steps_per_epoch + 1;
        if (o->log_every > 0 && ((step + 1) % o->log_every == 0 || in_epoch == steps_per_epoch)) {
            double tn = now_s();
            logf_(o, "epoch %d/%d  step %5d/%d  loss %.4f  train acc %5.2f%%  %6.0f img/s",
                  epoch + 1, o->epochs, step + 1, total, lsum / seen, 100.0 * hits / seen,
                  seen / (tn - tlog));
            tlog = tn;
            lsum = 0.0;
            hits = seen = 0;
        }
        if (in_epoch == steps_per_epoch) {
            double loss, acc = teacher_evaluate(ops, t, &s.eval_acts, &s.test, 0, &loss);
            t->test_accuracy = acc;
            logf_(o, "epoch %d/%d  test acc %.2f%% (loss %.4f) on %d test images  "
                  "elapsed %.0fs", epoch + 1, o->epochs, 100.0 * acc, loss, s.test.N,
                  now_s() - t0);
            tlog = now_s();
        }
    }
    t->seed = o->seed;
    t->epochs = o->epochs;
    snprintf(t->training, sizeof t->training,
             "AdamW lr %g (warm-up %d, cosine to 0) wd %g, batch %d, %d epochs, %s, "
             "cross-entropy on Fashion-MNIST train labels", (double)o->lr, o->warmup,
             (double)o->weight_decay, B, o->epochs,
             o->flip ? "random horizontal flips" : "no augmentation");
    train_state_free(&s);
    return 0;
}

/* --- safetensors ------------------------------------------------------------------ */

int teacher_save(const teacher_model *t, const char *path, reed_error *err) {
    st_tensor ts[TEACHER_TENSORS];
    for (int i = 0; i < TEACHER_TENSORS; i++) {
        const teacher_tensor *x = &t->tensors[i];
        ts[i].name = x->name;
        ts[i].ndim = x->ndim;
        for (int k = 0; k < x->ndim; k++) ts[i].shape[k] = x->shape[k];
        ts[i].data = t->params + x->offset;
    }
    char seed[32], epochs[32], acc[32], tokens[32], global[32], classes[16];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)t->seed);
    snprintf(epochs, sizeof epochs, "%d", t->epochs);
    snprintf(acc, sizeof acc, "%.4f", t->test_accuracy);
    snprintf(tokens, sizeof tokens, "%dx%d", TEACHER_TOKENS, TEACHER_DIM);
    snprintf(global, sizeof global, "%d", TEACHER_DIM);
    snprintf(classes, sizeof classes, "%d", TEACHER_CLASSES);
    const st_meta meta[] = {
        {"format", TEACHER_FORMAT},
        {"architecture", teacher_architecture()},
        {"seed", seed},
        {"epochs", epochs},
        {"test_accuracy", acc},
        {"test_split", "fashion-mnist t10k (10000 images)"},
        {"tokens", tokens},
        {"global", global},
        {"classes", classes},
        {"training", t->training},
    };
    int n_meta = (int)(sizeof meta / sizeof meta[0]) - (t->training[0] ? 0 : 1);
    return st_write(path, ts, TEACHER_TENSORS, meta, n_meta, err);
}

static int load_meta(teacher_model *t, const st_file *f, const char *path,
                     reed_error *err) {
    const char *fmt = st_meta_get(f, "format"), *arch = st_meta_get(f, "architecture");
    if (!fmt || strcmp(fmt, TEACHER_FORMAT) != 0)
        return reed_errorf(err, "%s: not a teacher file (metadata format is \"%s\", "
                           "expected \"%s\")", path, fmt ? fmt : "(none)", TEACHER_FORMAT);
    if (!arch || strcmp(arch, teacher_architecture()) != 0)
        return reed_errorf(err, "%s: teacher architecture \"%s\" differs from this "
                           "build's \"%s\"", path, arch ? arch : "(none)",
                           teacher_architecture());
    const char *acc = st_meta_get(f, "test_accuracy"), *seed = st_meta_get(f, "seed");
    const char *epochs = st_meta_get(f, "epochs");
    t->test_accuracy = acc ? strtod(acc, NULL) : -1.0;
    t->seed = seed ? strtoull(seed, NULL, 10) : 0;
    t->epochs = epochs ? atoi(epochs) : 0;
    const char *training = st_meta_get(f, "training");
    snprintf(t->training, sizeof t->training, "%s", training ? training : "");
    return 0;
}

int teacher_tensors_read(const st_file *f, const char *path, const teacher_tensor *tensors,
                         int n, float *params, reed_error *err) {
    for (int i = 0; i < n; i++) {
        const teacher_tensor *x = &tensors[i];
        const st_tensor *s = st_find(f, x->name);
        int ok = s && s->ndim == x->ndim;
        for (int k = 0; ok && k < x->ndim; k++) ok = s->shape[k] == x->shape[k];
        if (!ok)
            return reed_errorf(err, "%s: tensor %s is %s (expected %d dims: %d %d %d %d)",
                               path, x->name, s ? "of the wrong shape" : "missing", x->ndim,
                               x->shape[0], x->shape[1], x->shape[2], x->shape[3]);
        memcpy(params + x->offset, s->data, x->size * sizeof(float));
    }
    return 0;
}

int teacher_load(teacher_model *t, const char *path, reed_error *err) {
    if (teacher_init(t, err)) return -1;
    st_file *f = st_open(path, err);
    if (!f) {
        teacher_free(t);
        return -1;
    }
    int rc = load_meta(t, f, path, err);
    if (rc == 0)
        rc = teacher_tensors_read(f, path, t->tensors, TEACHER_TENSORS, t->params, err);
    st_close(f);
    if (rc) teacher_free(t);
    return rc;
}

void teacher_default_weights(char *out, size_t cap) {
    reed_asset_path(TEACHER_DEFAULT_WEIGHTS, out, cap);
}
