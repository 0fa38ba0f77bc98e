/* Small CNN classifiers (see cnn.h): tensor table, initialisation, forward,
 * backward, evaluation, training, safetensors I/O.
 * Gradient contract: cnn_backward adds (+=) into the gradient block. */
#include "cnn.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "data.h"
#include "rng.h"

enum { EVAL_BATCH = 500 }; /* test-split batch during training */

static const size_t IMG = (size_t)CNN_IMAGE * CNN_IMAGE; /* floats per image */

/* --- the tensor table ------------------------------------------------------------- */

static void add_tensor(cnn_model *m, const char *name, int ndim, int d0, int d1, int d2,
                       int d3) {
    cnn_tensor *x = &m->tensors[m->n_tensors++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->ndim = ndim;
    int shape[4] = {d0, d1, d2, d3};
    x->size = 1;
    for (int k = 0; k < ndim; k++) {
        x->shape[k] = shape[k];
        x->size *= (size_t)shape[k];
    }
    x->offset = m->n_params;
    m->n_params += x->size;
}

int cnn_init(const reed_ops *ops, cnn_model *m, const cnn_arch *arch, reed_error *err) {
    memset(m, 0, sizeof *m);
    m->arch = arch;
    m->ops = ops;
    m->test_accuracy = -1.0;
    m->side[0] = CNN_IMAGE;
    char name[32];
    for (int l = 0; l < arch->n_convs; l++) {
        const cnn_conv *c = &arch->conv[l];
        m->side[l + 1] = reed_conv2d_out_size(m->side[l], c->k, c->stride, c->pad);
        snprintf(name, sizeof name, "conv%d.weight", l + 1);
        add_tensor(m, name, 4, c->cout, c->cin, c->k, c->k);
        snprintf(name, sizeof name, "conv%d.bias", l + 1);
        add_tensor(m, name, 1, c->cout, 0, 0, 0);
    }
    m->dim = arch->conv[arch->n_convs - 1].cout;
    add_tensor(m, "fc.weight", 2, CNN_CLASSES, m->dim, 0, 0);
    add_tensor(m, "fc.bias", 1, CNN_CLASSES, 0, 0, 0);
    m->params = ops->mem_alloc(m->n_params * sizeof(float));
    return m->params ? 0 : reed_errorf(err, "%s: out of memory (%s)", arch->name, ops->name);
}

void cnn_free(cnn_model *m) {
    if (m->ops) m->ops->mem_free(m->params);
    m->params = NULL;
}

/* Tensor i of a parameter-shaped block: conv l's weight is 2l, its bias
 * 2l + 1; the classifier's weight and bias follow the convolutions. */
static float *at(const cnn_model *m, float *block, int i) {
    return block + m->tensors[i].offset;
}

/* He-uniform U(±sqrt(6/fan_in)) for the ReLU convolutions, Xavier-uniform
 * for the classifier, zero biases; tensor i draws from (seed, i, INIT).
 * Drawn on the host, then uploaded. */
static int init_weights(cnn_model *m, uint64_t seed, reed_error *err) {
    float *block = malloc(m->n_params * sizeof *block);
    if (!block) return reed_errorf(err, "%s: out of memory", m->arch->name);
    for (int i = 0; i < m->n_tensors; i++) {
        const cnn_tensor *x = &m->tensors[i];
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
    m->ops->upload(m->params, block, m->n_params * sizeof *block);
    free(block);
    return 0;
}

/* --- activations ------------------------------------------------------------------- */

static size_t map_size(const cnn_model *m, int l, int B) { /* a[l] floats */
    return (size_t)B * m->arch->conv[l].cout * m->side[l + 1] * m->side[l + 1];
}

static size_t conv_scratch(const cnn_model *m, int l, int B) {
    const cnn_conv *c = &m->arch->conv[l];
    return reed_conv2d_scratch_floats(B, c->cin, m->side[l], m->side[l], c->cout, c->k,
                                      c->stride, c->pad);
}

/* Carves the float buffers from one block: pass 1 counts (base NULL), pass 2
 * points. */
static size_t carve(cnn_acts *a, const cnn_model *m, int B, int bwd, float *base) {
    const int L = m->arch->n_convs;
    size_t off = 0, scr = 0, big = 0;
#define TAKE(ptr, n) do { size_t n_ = (n); if (base) (ptr) = base + off; off += n_; } while (0)
    TAKE(a->x, (size_t)B * IMG);
    for (int l = 0; l < L; l++) {
        TAKE(a->a[l], map_size(m, l, B));
        if (conv_scratch(m, l, B) > scr) scr = conv_scratch(m, l, B);
        if (map_size(m, l, B) > big) big = map_size(m, l, B);
    }
    TAKE(a->pool, (size_t)B * m->dim);
    TAKE(a->logits, (size_t)B * CNN_CLASSES);
    TAKE(a->scratch, scr);
    if (bwd) {
        for (int l = 0; l < L; l++) TAKE(a->d_a[l], map_size(m, l, B));
        TAKE(a->d_pre, big);
        TAKE(a->d_pool, (size_t)B * m->dim);
        TAKE(a->d_logits, (size_t)B * CNN_CLASSES);
    }
#undef TAKE
    return off;
}

int cnn_acts_alloc(const reed_ops *ops, cnn_acts *a, const cnn_model *m, int B,
                   int for_backward, reed_error *err) {
    memset(a, 0, sizeof *a);
    if (ops != m->ops)
        return reed_errorf(err, "%s: activations on %s for weights on %s", m->arch->name,
                           ops->name, m->ops ? m->ops->name : "(none)");
    a->ops = ops;
    a->B = B;
    size_t n = carve(a, m, B, for_backward, NULL);
    a->mem = ops->mem_alloc(n * sizeof(float));
    a->labels = ops->mem_alloc((size_t)B * sizeof(int));
    if (!a->mem || !a->labels) {
        cnn_acts_free(a);
        return reed_errorf(err, "%s: out of memory for activations (%zu MB, %s)",
                           m->arch->name, n * sizeof(float) >> 20, ops->name);
    }
    carve(a, m, B, for_backward, a->mem);
    return 0;
}

void cnn_acts_free(cnn_acts *a) {
    if (a->ops) {
        a->ops->mem_free(a->mem);
        a->ops->mem_free(a->labels);
    }
    memset(a, 0, sizeof *a);
}

/* --- forward and backward ------------------------------------------------------ */

void cnn_forward(const reed_ops *ops, const cnn_model *m, cnn_acts *a, const float *x,
                 int B) {
    const int L = m->arch->n_convs, g = m->side[L];
    // Keep the input for the backward pass (conv1's dw needs it).
    if (x != a->x) ops->copy(a->x, x, sizeof(float) * (size_t)B * IMG);
    const float *in = a->x;
    for (int l = 0; l < L; l++) {
        const cnn_conv *c = &m->arch->conv[l];
        int s = m->side[l];
        ops->conv2d_forward(a->a[l], in, at(m, m->params, 2 * l), at(m, m->params, 2 * l + 1),
                            B, c->cin, s, s, c->cout, c->k, c->stride, c->pad, a->scratch);
        ops->relu_forward(a->a[l], a->a[l], map_size(m, l, B));
        in = a->a[l];
    }
    ops->avgpool_global_forward(a->pool, a->a[L - 1], B, m->dim, g, g);
    ops->linear_forward(a->logits, a->pool, at(m, m->params, 2 * L),
                        at(m, m->params, 2 * L + 1), B, m->dim, CNN_CLASSES);
}

/* Walks the forward list backwards; conv l reads its input from a->a[l-1]
 * (a->x for conv1), gradients of the maps go through a->d_a and a->d_pre. */
void cnn_backward(const reed_ops *ops, const cnn_model *m, float *grads, cnn_acts *a,
                  const float *dlogits, int B) {
    const int L = m->arch->n_convs, g = m->side[L];
    ops->zero(a->d_pool, sizeof(float) * (size_t)B * m->dim);
    ops->linear_backward(a->d_pool, at(m, grads, 2 * L), at(m, grads, 2 * L + 1), dlogits,
                         a->pool, at(m, m->params, 2 * L), B, m->dim, CNN_CLASSES);
    ops->zero(a->d_a[L - 1], sizeof(float) * map_size(m, L - 1, B));
    ops->avgpool_global_backward(a->d_a[L - 1], a->d_pool, B, m->dim, g, g);
    for (int l = L - 1; l >= 0; l--) {
        const cnn_conv *c = &m->arch->conv[l];
        size_t n = map_size(m, l, B);
        ops->zero(a->d_pre, sizeof(float) * n);
        ops->relu_backward(a->d_pre, a->d_a[l], a->a[l], n);
        float *dinp = NULL;
        if (l > 0) {
            dinp = a->d_a[l - 1];
            ops->zero(dinp, sizeof(float) * map_size(m, l - 1, B));
        }
        int s = m->side[l];
        ops->conv2d_backward(dinp, at(m, grads, 2 * l), at(m, grads, 2 * l + 1), a->d_pre,
                             l > 0 ? a->a[l - 1] : a->x, at(m, m->params, 2 * l), B, c->cin,
                             s, s, c->cout, c->k, c->stride, c->pad, a->scratch);
    }
}

/* --- data and evaluation ------------------------------------------------------- */

int cnn_split_load(cnn_split *s, const char *dir, const char *prefix, reed_error *err) {
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
    if (img.ndim != 3 || img.shape[1] != CNN_IMAGE || img.shape[2] != CNN_IMAGE ||
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
    int bad = -1;
    for (int i = 0; s->labels && i < s->N && bad < 0; i++) {
        s->labels[i] = (int)lab.data[i];
        if (s->labels[i] < 0 || s->labels[i] >= CNN_CLASSES) bad = i;
    }
    int rc = !s->labels ? reed_errorf(err, "%s: out of memory", path)
             : bad >= 0 ? reed_errorf(err, "%s: label %d of example %d is not in 0..9", path,
                                      (int)lab.data[bad], bad)
                        : 0;
    reed_array_free(&lab);
    if (rc) cnn_split_free(s);
    return rc;
}

void cnn_split_free(cnn_split *s) {
    free(s->images);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

double cnn_evaluate(const reed_ops *ops, const cnn_model *m, cnn_acts *a, const cnn_split *s,
                    int n, double *loss) {
    if (n <= 0 || n > s->N) n = s->N;
    long hits = 0;
    double lsum = 0.0;
    for (int i = 0; i < n; i += a->B) {
        int B = n - i < a->B ? n - i : a->B, h = 0;
        ops->upload(a->x, s->images + (size_t)i * IMG, sizeof(float) * B * IMG);
        ops->upload(a->labels, s->labels + i, sizeof(int) * B);
        cnn_forward(ops, m, a, a->x, B);
        lsum += B * ops->cross_entropy_forward_backward(NULL, &h, a->logits, a->labels, B,
                                                        CNN_CLASSES, 1.0f);
        hits += h;
    }
    if (loss) *loss = n ? lsum / n : 0.0;
    return n ? (double)hits / n : 0.0;
}

/* --- training ---------------------------------------------------------------------- */

void cnn_train_defaults(cnn_train_opts *o) {
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
 * drawn from (seed, step); the classifiers use no noise, so they borrow the
 * NOISE stream for these draws. */
static void flip_batch(float *x, float *u, int B, uint64_t seed, int step) {
    rng_uniform(u, (size_t)B, seed, (uint64_t)step, REED_STREAM_NOISE);
    for (int b = 0; b < B; b++) {
        if (u[b] >= 0.5f) continue;
        float *img = x + (size_t)b * IMG;
        for (int r = 0; r < CNN_IMAGE; r++) {
            float *row = img + r * CNN_IMAGE;
            for (int c = 0; c < CNN_IMAGE / 2; c++) {
                float tmp = row[c];
                row[c] = row[CNN_IMAGE - 1 - c];
                row[CNN_IMAGE - 1 - c] = tmp;
            }
        }
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void say(const cnn_train_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(const cnn_train_opts *o, const char *fmt, ...) {
    if (!o->log) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    o->log(o->log_ctx, line);
}

/* Linear warm-up to the peak, then cosine decay to 0 at the last step. */
static float lr_at(const cnn_train_opts *o, int step, int total) {
    if (step < o->warmup) return o->lr * (float)(step + 1) / (float)o->warmup;
    double u = (double)(step - o->warmup) / (double)(total - o->warmup > 1 ? total - o->warmup : 1);
    return (float)(o->lr * 0.5 * (1.0 + cos(M_PI * (u < 1 ? u : 1))));
}

typedef struct train_state {
    reed_dataset train;           /* host */
    cnn_split test;               /* host */
    cnn_acts acts, eval_acts;     /* backend */
    float *grads, *adam_m, *adam_v; /* backend: one block of 3 × n_params */
    int *idx, *labels;            /* host (B): the batch */
    float *x, *draws;             /* host (B,1,28,28), (B) flip draws */
    /* since the last progress line */
    double t0, tlog, lsum;
    long hits, seen;
} train_state;

static void train_state_free(train_state *s, const reed_ops *ops) {
    dataset_free(&s->train);
    cnn_split_free(&s->test);
    cnn_acts_free(&s->acts);
    cnn_acts_free(&s->eval_acts);
    ops->mem_free(s->grads);
    free(s->idx);
    free(s->labels);
    free(s->x);
    free(s->draws);
}

static int train_state_init(train_state *s, const reed_ops *ops, const cnn_model *m,
                            const cnn_train_opts *o, reed_error *err) {
    memset(s, 0, sizeof *s);
    reed_data_config dc;
    memset(&dc, 0, sizeof dc);
    snprintf(dc.dataset, sizeof dc.dataset, "fashion-mnist");
    snprintf(dc.dir, sizeof dc.dir, "%s", o->data_dir);
    if (dataset_load(&s->train, &dc, err)) return -1;
    if (s->train.C != 1 || s->train.S != CNN_IMAGE)
        return reed_errorf(err, "%s: expected 1x28x28 images", o->data_dir);
    if (cnn_split_load(&s->test, o->data_dir, "t10k", err) ||
        cnn_acts_alloc(ops, &s->acts, m, o->batch, 1, err) ||
        cnn_acts_alloc(ops, &s->eval_acts, m, EVAL_BATCH, 0, err))
        return -1;
    const size_t n = m->n_params, B = (size_t)o->batch;
    s->grads = ops->mem_alloc(3 * n * sizeof(float)); // zeroed: AdamW's moments start at 0
    s->idx = malloc(sizeof(int) * B);
    s->labels = malloc(sizeof(int) * B);
    s->x = malloc(sizeof(float) * B * IMG);
    s->draws = malloc(sizeof(float) * B);
    if (!s->grads || !s->idx || !s->labels || !s->x || !s->draws)
        return reed_errorf(err, "%s: out of memory", m->arch->name);
    s->adam_m = s->grads + n;
    s->adam_v = s->grads + 2 * n;
    return 0;
}

/* One AdamW step on the next batch of the shuffled training split. */
static void train_step(const reed_ops *ops, cnn_model *m, train_state *s,
                       const cnn_train_opts *o, reed_cursor *cur, int step, int total) {
    const int B = o->batch;
    dataset_next_batch(&s->train, cur, o->seed, B, s->idx, s->x, s->labels);
    if (o->flip) flip_batch(s->x, s->draws, B, o->seed, step);
    ops->upload(s->acts.x, s->x, sizeof(float) * B * IMG);
    ops->upload(s->acts.labels, s->labels, sizeof(int) * B);
    cnn_forward(ops, m, &s->acts, s->acts.x, B);
    int h = 0;
    s->lsum += B * ops->cross_entropy_forward_backward(s->acts.d_logits, &h, s->acts.logits,
                                                       s->acts.labels, B, CNN_CLASSES, 1.0f);
    s->hits += h;
    s->seen += B;
    ops->zero(s->grads, sizeof(float) * m->n_params);
    cnn_backward(ops, m, s->grads, &s->acts, s->acts.d_logits, B);
    ops->adamw_update(m->params, s->grads, s->adam_m, s->adam_v, m->n_params,
                      lr_at(o, step, total), 0.9f, 0.999f, 1e-8f, o->weight_decay, 1.0f,
                      step + 1, NULL, 0.0f);
}

static void log_steps(const cnn_train_opts *o, train_state *s, int epoch, int step,
                      int total) {
    double tn = now_s();
    say(o, "epoch %d/%d  step %5d/%d  loss %.4f  train acc %5.2f%%  %6.0f img/s", epoch + 1,
        o->epochs, step + 1, total, s->lsum / s->seen, 100.0 * s->hits / s->seen,
        s->seen / (tn - s->tlog));
    s->tlog = tn;
    s->lsum = 0.0;
    s->hits = s->seen = 0;
}

static void end_epoch(const reed_ops *ops, cnn_model *m, const cnn_train_opts *o,
                      train_state *s, int epoch) {
    double loss, acc = cnn_evaluate(ops, m, &s->eval_acts, &s->test, 0, &loss);
    m->test_accuracy = acc;
    say(o, "epoch %d/%d  test acc %.2f%% (loss %.4f) on %d test images  elapsed %.0fs",
        epoch + 1, o->epochs, 100.0 * acc, loss, s->test.N, now_s() - s->t0);
    s->tlog = now_s();
}

int cnn_train(const reed_ops *ops, cnn_model *m, const cnn_train_opts *o, reed_error *err) {
    if (o->epochs < 1 || o->batch < 1)
        return reed_errorf(err, "%s train: epochs and batch must be positive", m->arch->name);
    train_state s;
    if (train_state_init(&s, ops, m, o, err) || init_weights(m, o->seed, err)) {
        train_state_free(&s, ops);
        return -1;
    }
    const int B = o->batch, per_epoch = (s.train.N + B - 1) / B, total = per_epoch * o->epochs;
    reed_cursor cur = {0, 0};
    say(o, "%s: %zu parameters; %d training images, %d test images; "
        "%d epochs x %d steps, batch %d, seed %llu, %d threads", m->arch->name, m->n_params,
        s.train.N, s.test.N, o->epochs, per_epoch, B, (unsigned long long)o->seed,
        reed_cpu_threads());
    s.t0 = s.tlog = now_s();
    for (int step = 0; step < total; step++) {
        train_step(ops, m, &s, o, &cur, step, total);
        int epoch = step / per_epoch, in_epoch = step % per_epoch + 1;
        if (o->log_every > 0 && ((step + 1) % o->log_every == 0 || in_epoch == per_epoch))
            log_steps(o, &s, epoch, step, total);
        if (in_epoch == per_epoch) end_epoch(ops, m, o, &s, epoch);
    }
    m->seed = o->seed;
    m->epochs = o->epochs;
    snprintf(m->training, sizeof m->training,
             "AdamW lr %g (warm-up %d, cosine to 0) wd %g, batch %d, %d epochs, %s, "
             "cross-entropy on Fashion-MNIST train labels", (double)o->lr, o->warmup,
             (double)o->weight_decay, B, o->epochs,
             o->flip ? "random horizontal flips" : "no augmentation");
    train_state_free(&s, ops);
    return 0;
}

/* --- safetensors ------------------------------------------------------------------ */

int cnn_save(const cnn_model *m, const char *path, reed_error *err) {
    const cnn_arch *ar = m->arch;
    float *host = malloc(m->n_params * sizeof *host);
    if (!host) return reed_errorf(err, "%s: out of memory", path);
    m->ops->download(host, m->params, m->n_params * sizeof *host);
    st_tensor ts[CNN_MAX_TENSORS];
    for (int i = 0; i < m->n_tensors; i++) {
        const cnn_tensor *x = &m->tensors[i];
        ts[i].name = x->name;
        ts[i].ndim = x->ndim;
        for (int k = 0; k < x->ndim; k++) ts[i].shape[k] = x->shape[k];
        ts[i].data = host + x->offset;
    }
    char seed[32], epochs[32], acc[32], classes[16];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)m->seed);
    snprintf(epochs, sizeof epochs, "%d", m->epochs);
    snprintf(acc, sizeof acc, "%.4f", m->test_accuracy);
    snprintf(classes, sizeof classes, "%d", CNN_CLASSES);
    st_meta meta[8 + CNN_MAX_META] = {
        {"format", ar->format},
        {"architecture", ar->description},
        {"seed", seed},
        {"epochs", epochs},
        {"test_accuracy", acc},
        {"test_split", "fashion-mnist t10k (10000 images)"},
    };
    int n = 6;
    for (int i = 0; i < ar->n_meta; i++) meta[n++] = ar->meta[i];
    meta[n++] = (st_meta){"classes", classes};
    if (m->training[0]) meta[n++] = (st_meta){"training", m->training};
    int rc = st_write(path, ts, m->n_tensors, meta, n, err);
    free(host);
    return rc;
}

static int load_meta(cnn_model *m, const st_file *f, const char *path, reed_error *err) {
    const cnn_arch *ar = m->arch;
    const char *fmt = st_meta_get(f, "format"), *arch = st_meta_get(f, "architecture");
    if (!fmt || strcmp(fmt, ar->format) != 0)
        return reed_errorf(err, "%s: not %s file (metadata format is \"%s\", expected \"%s\")",
                           path, ar->a_name, fmt ? fmt : "(none)", ar->format);
    if (!arch || strcmp(arch, ar->description) != 0)
        return reed_errorf(err, "%s: %s architecture \"%s\" differs from this build's \"%s\"",
                           path, ar->name, arch ? arch : "(none)", ar->description);
    const char *acc = st_meta_get(f, "test_accuracy"), *seed = st_meta_get(f, "seed");
    const char *epochs = st_meta_get(f, "epochs"), *training = st_meta_get(f, "training");
    m->test_accuracy = acc ? strtod(acc, NULL) : -1.0;
    m->seed = seed ? strtoull(seed, NULL, 10) : 0;
    m->epochs = epochs ? atoi(epochs) : 0;
    snprintf(m->training, sizeof m->training, "%s", training ? training : "");
    return 0;
}

/* Uploads every tensor of the table from the file, checking its shape. */
static int load_tensors(cnn_model *m, const st_file *f, const char *path, reed_error *err) {
    for (int i = 0; i < m->n_tensors; i++) {
        const cnn_tensor *x = &m->tensors[i];
        const st_tensor *s = st_find(f, x->name);
        int ok = s && s->ndim == x->ndim;
        for (int k = 0; ok && k < x->ndim; k++) ok = s->shape[k] == x->shape[k];
        if (!ok)
            return reed_errorf(err, "%s: tensor %s is %s (expected %d dims: %d %d %d %d)",
                               path, x->name, s ? "of the wrong shape" : "missing", x->ndim,
                               x->shape[0], x->shape[1], x->shape[2], x->shape[3]);
        m->ops->upload(m->params + x->offset, s->data, x->size * sizeof(float));
    }
    return 0;
}

int cnn_load(const reed_ops *ops, cnn_model *m, const cnn_arch *arch, const char *path,
             reed_error *err) {
    if (cnn_init(ops, m, arch, err)) return -1;
    st_file *f = st_open(path, err);
    int rc = f ? load_meta(m, f, path, err) : -1;
    if (rc == 0) rc = load_tensors(m, f, path, err);
    st_close(f);
    if (rc) cnn_free(m);
    return rc;
}

void cnn_default_weights(const cnn_arch *arch, char *out, size_t cap) {
    reed_asset_path(arch->weights, out, cap);
}
