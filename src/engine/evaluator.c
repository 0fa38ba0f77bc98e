/* The evaluator CNN (see evaluator.h): tensor table, forward, backward,
 * training, features, safetensors I/O. Gradient contract: backward adds. */
#include "evaluator.h"

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

static const int conv_cin[EVAL_CONVS] = {1, 16, 32};
static const int conv_cout[EVAL_CONVS] = {16, 32, 64};
static const int conv_k[EVAL_CONVS] = {5, 3, 3};
static const int conv_stride[EVAL_CONVS] = {2, 2, 1};
static const int conv_pad[EVAL_CONVS] = {2, 1, 1};

const char *evaluator_architecture(void) {
    return "conv1 5x5 1->16 s2 p2 relu; conv2 3x3 16->32 s2 p1 relu; "
           "conv3 3x3 32->64 s1 p1 relu; global avgpool (features 64); fc 64->10; "
           "input 1x28x28 in [-1,1] (pixel/127.5-1)";
}

static void add_tensor(evaluator_model *e, int i, const char *name, int ndim,
                       int d0, int d1, int d2, int d3) {
    teacher_tensor *x = &e->tensors[i];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->ndim = ndim;
    int shape[4] = {d0, d1, d2, d3};
    x->size = 1;
    for (int k = 0; k < ndim; k++) {
        x->shape[k] = shape[k];
        x->size *= (size_t)shape[k];
    }
    x->offset = e->n_params;
    e->n_params += x->size;
}

int evaluator_init(evaluator_model *e, reed_error *err) {
    memset(e, 0, sizeof *e);
    e->test_accuracy = -1.0;
    e->side[0] = EVAL_IMAGE;
    char name[32];
    for (int l = 0; l < EVAL_CONVS; l++) {
        e->cin[l] = conv_cin[l];
        e->cout[l] = conv_cout[l];
        e->k[l] = conv_k[l];
        e->stride[l] = conv_stride[l];
        e->pad[l] = conv_pad[l];
        e->side[l + 1] = reed_conv2d_out_size(e->side[l], e->k[l], e->stride[l], e->pad[l]);
        snprintf(name, sizeof name, "conv%d.weight", l + 1);
        add_tensor(e, 2 * l, name, 4, e->cout[l], e->cin[l], e->k[l], e->k[l]);
        snprintf(name, sizeof name, "conv%d.bias", l + 1);
        add_tensor(e, 2 * l + 1, name, 1, e->cout[l], 0, 0, 0);
    }
    add_tensor(e, 2 * EVAL_CONVS, "fc.weight", 2, EVAL_CLASSES, EVAL_DIM, 0, 0);
    add_tensor(e, 2 * EVAL_CONVS + 1, "fc.bias", 1, EVAL_CLASSES, 0, 0, 0);
    e->params = calloc(e->n_params, sizeof(float));
    return e->params ? 0 : reed_errorf(err, "evaluator: out of memory");
}

void evaluator_free(evaluator_model *e) {
    free(e->params);
    e->params = NULL;
}

static const float *tensor(const evaluator_model *e, const float *block, int i) {
    return block + e->tensors[i].offset;
}

/* He-uniform convolutions, Xavier-uniform fc, zero biases. */
static void init_weights(const evaluator_model *e, float *block, uint64_t seed) {
    for (int i = 0; i < EVAL_TENSORS; i++) {
        const teacher_tensor *x = &e->tensors[i];
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

static size_t map_size(const evaluator_model *e, int l, int B) {
    return (size_t)B * e->cout[l] * e->side[l + 1] * e->side[l + 1];
}

static size_t conv_scratch(const evaluator_model *e, int l, int B) {
    return reed_conv2d_scratch_floats(B, e->cin[l], e->side[l], e->side[l], e->cout[l],
                                      e->k[l], e->stride[l], e->pad[l]);
}

static size_t carve(evaluator_acts *a, const evaluator_model *e, int B, int bwd, float *base) {
    size_t off = 0, scr = 0, big = 0;
#define TAKE(ptr, n) do { size_t n_ = (n); if (base) (ptr) = base + off; off += n_; } while (0)
    TAKE(a->x, (size_t)B * EVAL_IMAGE * EVAL_IMAGE);
    for (int l = 0; l < EVAL_CONVS; l++) {
        TAKE(a->a[l], map_size(e, l, B));
        if (conv_scratch(e, l, B) > scr) scr = conv_scratch(e, l, B);
        if (map_size(e, l, B) > big) big = map_size(e, l, B);
    }
    TAKE(a->pool, (size_t)B * EVAL_DIM);
    TAKE(a->logits, (size_t)B * EVAL_CLASSES);
    TAKE(a->scratch, scr);
    if (bwd) {
        for (int l = 0; l < EVAL_CONVS; l++) TAKE(a->d_a[l], map_size(e, l, B));
        TAKE(a->d_pre, big);
        TAKE(a->d_pool, (size_t)B * EVAL_DIM);
        TAKE(a->d_logits, (size_t)B * EVAL_CLASSES);
    }
#undef TAKE
    return off;
}

int evaluator_acts_alloc(evaluator_acts *a, const evaluator_model *e, int B,
                         int for_backward, reed_error *err) {
    memset(a, 0, sizeof *a);
    a->B = B;
    size_t n = carve(a, e, B, for_backward, NULL);
    a->mem = malloc(n * sizeof(float));
    if (!a->mem) return reed_errorf(err, "evaluator: out of memory for activations");
    carve(a, e, B, for_backward, a->mem);
    return 0;
}

void evaluator_acts_free(evaluator_acts *a) {
    free(a->mem);
    memset(a, 0, sizeof *a);
}

void evaluator_forward(const reed_ops *ops, const evaluator_model *e,
                       const float *params, evaluator_acts *a, const float *x,
                       int B) {
    if (x != a->x) memcpy(a->x, x, sizeof(float) * (size_t)B * EVAL_IMAGE * EVAL_IMAGE);
    const float *in = a->x;
    for (int l = 0; l < EVAL_CONVS; l++) {
        int s = e->side[l];
        ops->conv2d_forward(a->a[l], in, tensor(e, params, 2 * l), tensor(e, params, 2 * l + 1),
                            B, e->cin[l], s, s, e->cout[l], e->k[l], e->stride[l], e->pad[l],
                            a->scratch);
        ops->relu_forward(a->a[l], a->a[l], map_size(e, l, B));
        in = a->a[l];
    }
    ops->avgpool_global_forward(a->pool, a->a[EVAL_CONVS - 1], B, EVAL_DIM, EVAL_GRID, EVAL_GRID);
    ops->linear_forward(a->logits, a->pool, tensor(e, params, 2 * EVAL_CONVS),
                        tensor(e, params, 2 * EVAL_CONVS + 1), B, EVAL_DIM, EVAL_CLASSES);
}

void evaluator_backward(const reed_ops *ops, const evaluator_model *e,
                        const float *params, float *grads, evaluator_acts *a,
                        const float *dlogits, int B) {
    const int last = EVAL_CONVS - 1;
    memset(a->d_pool, 0, sizeof(float) * (size_t)B * EVAL_DIM);
    ops->linear_backward(a->d_pool, grads + e->tensors[2 * EVAL_CONVS].offset,
                         grads + e->tensors[2 * EVAL_CONVS + 1].offset, dlogits, a->pool,
                         tensor(e, params, 2 * EVAL_CONVS), B, EVAL_DIM, EVAL_CLASSES);
    memset(a->d_a[last], 0, sizeof(float) * map_size(e, last, B));
    ops->avgpool_global_backward(a->d_a[last], a->d_pool, B, EVAL_DIM, EVAL_GRID, EVAL_GRID);
    for (int l = last; l >= 0; l--) {
        size_t n = map_size(e, l, B);
        memset(a->d_pre, 0, sizeof(float) * n);
        ops->relu_backward(a->d_pre, a->d_a[l], a->a[l], n);
        float *dinp = NULL;
        if (l > 0) {
            dinp = a->d_a[l - 1];
            memset(dinp, 0, sizeof(float) * map_size(e, l - 1, B));
        }
        int s = e->side[l];
        ops->conv2d_backward(dinp, grads + e->tensors[2 * l].offset,
                             grads + e->tensors[2 * l + 1].offset, a->d_pre,
                             l > 0 ? a->a[l - 1] : a->x, tensor(e, params, 2 * l), B,
                             e->cin[l], s, s, e->cout[l], e->k[l], e->stride[l], e->pad[l],
                             a->scratch);
    }
}

void evaluator_features(const reed_ops *ops, const evaluator_model *e,
                        evaluator_acts *a, const float *x, int N,
                        float *features, float *logits) {
    const size_t img = (size_t)EVAL_IMAGE * EVAL_IMAGE;
    for (int i = 0; i < N; i += a->B) {
        int B = N - i < a->B ? N - i : a->B;
        evaluator_forward(ops, e, e->params, a, x + (size_t)i * img, B);
        if (features)
            memcpy(features + (size_t)i * EVAL_DIM, a->pool, sizeof(float) * (size_t)B * EVAL_DIM);
        if (logits)
            memcpy(logits + (size_t)i * EVAL_CLASSES, a->logits,
                   sizeof(float) * (size_t)B * EVAL_CLASSES);
    }
}

double evaluator_evaluate(const reed_ops *ops, const evaluator_model *e,
                          evaluator_acts *a, const teacher_split *s, int n) {
    if (n <= 0 || n > s->N) n = s->N;
    const size_t img = (size_t)EVAL_IMAGE * EVAL_IMAGE;
    long hits = 0;
    for (int i = 0; i < n; i += a->B) {
        int B = n - i < a->B ? n - i : a->B, h = 0;
        evaluator_forward(ops, e, e->params, a, s->images + (size_t)i * img, B);
        ops->cross_entropy_forward_backward(NULL, &h, a->logits, s->labels + i, B,
                                            EVAL_CLASSES, 1.0f);
        hits += h;
    }
    return n ? (double)hits / n : 0.0;
}

/* --- training ---------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void say(const teacher_train_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(const teacher_train_opts *o, const char *fmt, ...) {
    if (!o->log) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    o->log(o->log_ctx, line);
}

static float lr_at(const teacher_train_opts *o, int step, int total) {
    if (step < o->warmup) return o->lr * (float)(step + 1) / (float)o->warmup;
    double u = (double)(step - o->warmup) / (double)(total - o->warmup > 1 ? total - o->warmup : 1);
    return (float)(o->lr * 0.5 * (1.0 + cos(M_PI * (u < 1 ? u : 1))));
}

int evaluator_train(const reed_ops *ops, evaluator_model *e,
                    const teacher_train_opts *o, reed_error *err) {
    if (o->epochs < 1 || o->batch < 1)
        return reed_errorf(err, "evaluator train: epochs and batch must be positive");
    reed_dataset train;
    teacher_split test;
    evaluator_acts acts, eacts;
    memset(&train, 0, sizeof train);
    memset(&test, 0, sizeof test);
    memset(&acts, 0, sizeof acts);
    memset(&eacts, 0, sizeof eacts);
    float *grads = NULL, *m = NULL, *v = NULL;
    int *idx = NULL, *labels = NULL, rc = -1;
    reed_data_config dc;
    memset(&dc, 0, sizeof dc);
    snprintf(dc.dataset, sizeof dc.dataset, "fashion-mnist");
    snprintf(dc.dir, sizeof dc.dir, "%s", o->data_dir);
    if (dataset_load(&train, &dc, err)) goto done;
    if (train.C != 1 || train.S != EVAL_IMAGE) {
        reed_errorf(err, "%s: expected 1x28x28 images", o->data_dir);
        goto done;
    }
    if (teacher_split_load(&test, o->data_dir, "t10k", err) ||
        evaluator_acts_alloc(&acts, e, o->batch, 1, err) ||
        evaluator_acts_alloc(&eacts, e, 500, 0, err))
        goto done;
    grads = calloc(e->n_params, sizeof(float));
    m = calloc(e->n_params, sizeof(float));
    v = calloc(e->n_params, sizeof(float));
    idx = malloc(sizeof(int) * (size_t)o->batch);
    labels = malloc(sizeof(int) * (size_t)o->batch);
    if (!grads || !m || !v || !idx || !labels) {
        reed_errorf(err, "evaluator: out of memory");
        goto done;
    }
    init_weights(e, e->params, o->seed);
    const int B = o->batch, per_epoch = (train.N + B - 1) / B, total = per_epoch * o->epochs;
    reed_cursor cur = {0, 0};
    say(o, "evaluator: %zu parameters; %d epochs x %d steps, batch %d, seed %llu, %d threads",
        e->n_params, o->epochs, per_epoch, B, (unsigned long long)o->seed, reed_cpu_threads());
    double t0 = now_s(), lsum = 0.0;
    long hits = 0, seen = 0;
    for (int step = 0; step < total; step++) {
        dataset_next_batch(&train, &cur, o->seed, B, idx, acts.x, labels);
        evaluator_forward(ops, e, e->params, &acts, acts.x, B);
        int h = 0;
        lsum += B * ops->cross_entropy_forward_backward(acts.d_logits, &h, acts.logits, labels,
                                                        B, EVAL_CLASSES, 1.0f);
        hits += h;
        seen += B;
        memset(grads, 0, sizeof(float) * e->n_params);
        evaluator_backward(ops, e, e->params, grads, &acts, acts.d_logits, B);
        ops->adamw_update(e->params, grads, m, v, e->n_params, lr_at(o, step, total), 0.9f,
                          0.999f, 1e-8f, o->weight_decay, 1.0f, step + 1);
        int epoch = step / per_epoch, in_epoch = step % per_epoch + 1;
        if (o->log_every > 0 && ((step + 1) % o->log_every == 0 || in_epoch == per_epoch)) {
            say(o, "epoch %d/%d  step %5d/%d  loss %.4f  train acc %5.2f%%  elapsed %.0fs",
                epoch + 1, o->epochs, step + 1, total, lsum / seen, 100.0 * hits / seen,
                now_s() - t0);
            lsum = 0.0;
            hits = seen = 0;
        }
        if (in_epoch == per_epoch) {
            e->test_accuracy = evaluator_evaluate(ops, e, &eacts, &test, 0);
            say(o, "epoch %d/%d  test acc %.2f%%  elapsed %.0fs", epoch + 1, o->epochs,
                100.0 * e->test_accuracy, now_s() - t0);
        }
    }
    e->seed = o->seed;
    e->epochs = o->epochs;
    snprintf(e->training, sizeof e->training,
             "AdamW lr %g (warm-up %d, cosine to 0) wd %g, batch %d, %d epochs, "
             "no augmentation, cross-entropy on Fashion-MNIST train labels",
             (double)o->lr, o->warmup, (double)o->weight_decay, B, o->epochs);
    rc = 0;
done:
    dataset_free(&train);
    teacher_split_free(&test);
    evaluator_acts_free(&acts);
    evaluator_acts_free(&eacts);
    free(grads);
    free(m);
    free(v);
    free(idx);
    free(labels);
    return rc;
}

/* --- safetensors ------------------------------------------------------------------ */

int evaluator_save(const evaluator_model *e, const char *path, reed_error *err) {
    st_tensor ts[EVAL_TENSORS];
    for (int i = 0; i < EVAL_TENSORS; i++) {
        const teacher_tensor *x = &e->tensors[i];
        ts[i].name = x->name;
        ts[i].ndim = x->ndim;
        for (int k = 0; k < x->ndim; k++) ts[i].shape[k] = x->shape[k];
        ts[i].data = e->params + x->offset;
    }
    char seed[32], epochs[32], acc[32], feats[16], classes[16];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)e->seed);
    snprintf(epochs, sizeof epochs, "%d", e->epochs);
    snprintf(acc, sizeof acc, "%.4f", e->test_accuracy);
    snprintf(feats, sizeof feats, "%d", EVAL_DIM);
    snprintf(classes, sizeof classes, "%d", EVAL_CLASSES);
    const st_meta meta[] = {
        {"format", EVALUATOR_FORMAT},
        {"architecture", evaluator_architecture()},
        {"seed", seed},
        {"epochs", epochs},
        {"test_accuracy", acc},
        {"test_split", "fashion-mnist t10k (10000 images)"},
        {"features", feats},
        {"classes", classes},
        {"training", e->training},
    };
    int n_meta = (int)(sizeof meta / sizeof meta[0]) - (e->training[0] ? 0 : 1);
    return st_write(path, ts, EVAL_TENSORS, meta, n_meta, err);
}

int evaluator_load(evaluator_model *e, const char *path, reed_error *err) {
    if (evaluator_init(e, err)) return -1;
    st_file *f = st_open(path, err);
    if (!f) {
        evaluator_free(e);
        return -1;
    }
    int rc = 0;
    const char *fmt = st_meta_get(f, "format"), *arch = st_meta_get(f, "architecture");
    if (!fmt || strcmp(fmt, EVALUATOR_FORMAT) != 0)
        rc = reed_errorf(err, "%s: not an evaluator file (metadata format is \"%s\", "
                         "expected \"%s\")", path, fmt ? fmt : "(none)", EVALUATOR_FORMAT);
    else if (!arch || strcmp(arch, evaluator_architecture()) != 0)
        rc = reed_errorf(err, "%s: evaluator architecture \"%s\" differs from this build's "
                         "\"%s\"", path, arch ? arch : "(none)", evaluator_architecture());
    if (rc == 0) {
        const char *acc = st_meta_get(f, "test_accuracy"), *seed = st_meta_get(f, "seed");
        const char *epochs = st_meta_get(f, "epochs"), *tr = st_meta_get(f, "training");
        e->test_accuracy = acc ? strtod(acc, NULL) : -1.0;
        e->seed = seed ? strtoull(seed, NULL, 10) : 0;
        e->epochs = epochs ? atoi(epochs) : 0;
        snprintf(e->training, sizeof e->training, "%s", tr ? tr : "");
    }
    if (rc == 0) rc = teacher_tensors_read(f, path, e->tensors, EVAL_TENSORS, e->params, err);
    st_close(f);
    if (rc) evaluator_free(e);
    return rc;
}

void evaluator_default_weights(char *out, size_t cap) {
    reed_asset_path(EVALUATOR_DEFAULT_WEIGHTS, out, cap);
}
