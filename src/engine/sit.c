/* SiT + projectors: the tensor table, initialisation, forward, backward.
 * Gradient contract: sit_backward adds (+=) into the gradient view. */
#include "sit.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

/* --- the tensor table -------------------------------------------------------- */

/* Visits every parameter tensor in PyTorch state_dict order (REPA's SiT:
 * x_embedder, t_embedder, y_embedder, blocks, projectors, final_layer). */
typedef void (*sit_visit_fn)(void *ctx, const char *name, int ndim,
                             const int *shape, float **slot);

static void visit(sit_visit_fn fn, void *ctx, float **slot, int ndim,
                  int d0, int d1, int d2, int d3, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));

static void visit(sit_visit_fn fn, void *ctx, float **slot, int ndim,
                  int d0, int d1, int d2, int d3, const char *fmt, ...) {
    char name[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int shape[4] = {d0, d1, d2, d3};
    fn(ctx, name, ndim, shape, slot);
}

static void walk_block(const sit_model *m, sit_block_params *b, int l,
                       sit_visit_fn fn, void *ctx) {
    int H = m->cfg.hidden, F = m->cfg.mlp_ratio * H;
    visit(fn, ctx, &b->qkv_w, 2, 3 * H, H, 0, 0, "blocks.%d.attn.qkv.weight", l);
    visit(fn, ctx, &b->qkv_b, 1, 3 * H, 0, 0, 0, "blocks.%d.attn.qkv.bias", l);
    visit(fn, ctx, &b->proj_w, 2, H, H, 0, 0, "blocks.%d.attn.proj.weight", l);
    visit(fn, ctx, &b->proj_b, 1, H, 0, 0, 0, "blocks.%d.attn.proj.bias", l);
    visit(fn, ctx, &b->fc1_w, 2, F, H, 0, 0, "blocks.%d.mlp.fc1.weight", l);
    visit(fn, ctx, &b->fc1_b, 1, F, 0, 0, 0, "blocks.%d.mlp.fc1.bias", l);
    visit(fn, ctx, &b->fc2_w, 2, H, F, 0, 0, "blocks.%d.mlp.fc2.weight", l);
    visit(fn, ctx, &b->fc2_b, 1, H, 0, 0, 0, "blocks.%d.mlp.fc2.bias", l);
    visit(fn, ctx, &b->ada_w, 2, 6 * H, H, 0, 0, "blocks.%d.adaLN_modulation.1.weight", l);
    visit(fn, ctx, &b->ada_b, 1, 6 * H, 0, 0, 0, "blocks.%d.adaLN_modulation.1.bias", l);
}

static void walk_projector(const sit_model *m, sit_projector_params *q, int k,
                           sit_visit_fn fn, void *ctx) {
    int H = m->cfg.hidden, P = m->sources[k].projector_dim, D = m->sources[k].dim;
    visit(fn, ctx, &q->w0, 2, P, H, 0, 0, "projectors.%d.0.weight", k);
    visit(fn, ctx, &q->b0, 1, P, 0, 0, 0, "projectors.%d.0.bias", k);
    visit(fn, ctx, &q->w2, 2, P, P, 0, 0, "projectors.%d.2.weight", k);
    visit(fn, ctx, &q->b2, 1, P, 0, 0, 0, "projectors.%d.2.bias", k);
    visit(fn, ctx, &q->w4, 2, D, P, 0, 0, "projectors.%d.4.weight", k);
    visit(fn, ctx, &q->b4, 1, D, 0, 0, 0, "projectors.%d.4.bias", k);
}

static void sit_walk(const sit_model *m, sit_params *v, sit_visit_fn fn, void *ctx) {
    const reed_model_config *c = &m->cfg;
    int H = c->hidden, p = c->patch;
    visit(fn, ctx, &v->xemb_w, 4, H, c->in_channels, p, p, "x_embedder.proj.weight");
    visit(fn, ctx, &v->xemb_b, 1, H, 0, 0, 0, "x_embedder.proj.bias");
    visit(fn, ctx, &v->t0_w, 2, H, SIT_FREQ_DIM, 0, 0, "t_embedder.mlp.0.weight");
    visit(fn, ctx, &v->t0_b, 1, H, 0, 0, 0, "t_embedder.mlp.0.bias");
    visit(fn, ctx, &v->t2_w, 2, H, H, 0, 0, "t_embedder.mlp.2.weight");
    visit(fn, ctx, &v->t2_b, 1, H, 0, 0, 0, "t_embedder.mlp.2.bias");
    visit(fn, ctx, &v->y_table, 2, c->num_classes + 1, H, 0, 0, "y_embedder.embedding_table.weight");
    for (int l = 0; l < c->depth; l++) walk_block(m, &v->blocks[l], l, fn, ctx);
    for (int k = 0; k < m->n_sources; k++) walk_projector(m, &v->proj[k], k, fn, ctx);
    visit(fn, ctx, &v->fin_w, 2, m->out_dim, H, 0, 0, "final_layer.linear.weight");
    visit(fn, ctx, &v->fin_b, 1, m->out_dim, 0, 0, 0, "final_layer.linear.bias");
    visit(fn, ctx, &v->fada_w, 2, 2 * H, H, 0, 0, "final_layer.adaLN_modulation.1.weight");
    visit(fn, ctx, &v->fada_b, 1, 2 * H, 0, 0, 0, "final_layer.adaLN_modulation.1.bias");
}

static void add_to_table(void *ctx, const char *name, int ndim, const int *shape,
                         float **slot) {
    (void)slot;
    sit_model *m = ctx;
    sit_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->size = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->size *= (size_t)shape[i];
    }
    t->offset = m->n_params;
    m->n_params += t->size;
}

typedef struct { float *block; size_t offset; } point_ctx;

static void point_slot(void *ctx, const char *name, int ndim, const int *shape,
                       float **slot) {
    (void)name;
    point_ctx *pc = ctx;
    size_t size = 1;
    for (int i = 0; i < ndim; i++) size *= (size_t)shape[i];
    *slot = pc->block + pc->offset;
    pc->offset += size;
}

void sit_point(const sit_model *m, sit_params *view, float *block) {
    memset(view, 0, sizeof *view);
    view->blocks = calloc((size_t)m->cfg.depth, sizeof *view->blocks);
    point_ctx pc = {block, 0};
    sit_walk(m, view, point_slot, &pc);
}

void sit_view_free(sit_params *view) {
    free(view->blocks);
    view->blocks = NULL;
}

/* MAE's 2-D sin-cos position embedding: the first half of the channels
 * encodes the column, the second half the row; each half is
 * [sin(pos·ω_k) | cos(pos·ω_k)], ω_k = 10000^(-k/(H/4)). */
static void fill_pos_embed(float *pos, int G, int H) {
    int quarter = H / 4;
    for (int r = 0; r < G; r++)
        for (int c = 0; c < G; c++) {
            float *row = pos + (size_t)(r * G + c) * H;
            for (int half = 0; half < 2; half++) {
                double coord = half == 0 ? c : r;
                for (int k = 0; k < quarter; k++) {
                    double omega = 1.0 / pow(10000.0, (double)k / quarter);
                    row[half * 2 * quarter + k] = (float)sin(coord * omega);
                    row[half * 2 * quarter + quarter + k] = (float)cos(coord * omega);
                }
            }
        }
}

int sit_init(sit_model *m, const reed_model_config *cfg, int n_sources,
             const sit_source *sources, reed_error *err) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    if (cfg->hidden % 4 || cfg->hidden % cfg->heads || cfg->image_size % cfg->patch)
        return reed_errorf(err, "model: hidden %d must be divisible by 4 and by heads %d, "
                           "image_size %d by patch %d", cfg->hidden, cfg->heads,
                           cfg->image_size, cfg->patch);
    m->n_sources = n_sources;
    memcpy(m->sources, sources, sizeof *sources * (size_t)n_sources);
    m->grid = cfg->image_size / cfg->patch;
    m->tokens = m->grid * m->grid;
    m->patch_dim = cfg->in_channels * cfg->patch * cfg->patch;
    m->out_dim = cfg->patch * cfg->patch * cfg->in_channels;
    sit_params dummy = {0};
    dummy.blocks = calloc((size_t)cfg->depth, sizeof *dummy.blocks);
    m->pos_embed = malloc(sizeof(float) * (size_t)m->tokens * cfg->hidden);
    if (!dummy.blocks || !m->pos_embed) {
        free(dummy.blocks);
        return reed_errorf(err, "model: out of memory");
    }
    sit_walk(m, &dummy, add_to_table, m);
    free(dummy.blocks);
    fill_pos_embed(m->pos_embed, m->grid, cfg->hidden);
    return 0;
}

void sit_free(sit_model *m) {
    free(m->pos_embed);
    m->pos_embed = NULL;
}

/* --- initialisation ------------------------------------------------------------ */

/* SiT's initialize_weights: Xavier-uniform Linear (and patch-conv) weights,
 * zero biases, N(0, 0.02) for the label table and timestep MLP, zero for
 * every adaLN modulation and for the final linear (adaLN-Zero). */
static void init_tensor(const sit_tensor *t, float *w, uint64_t seed, int index) {
    size_t n = t->size;
    int is_zero = t->ndim == 1 || strstr(t->name, "adaLN_modulation") ||
                  strncmp(t->name, "final_layer.linear", 18) == 0;
    if (is_zero) {
        memset(w, 0, n * sizeof *w);
    } else if (strstr(t->name, "y_embedder") || strstr(t->name, "t_embedder")) {
        rng_normal(w, n, seed, (uint64_t)index, REED_STREAM_INIT);
        for (size_t i = 0; i < n; i++) w[i] *= 0.02f;
    } else {
        double fan_out = t->shape[0], fan_in = (double)n / fan_out;
        float a = (float)sqrt(6.0 / (fan_in + fan_out));
        rng_uniform(w, n, seed, (uint64_t)index, REED_STREAM_INIT);
        for (size_t i = 0; i < n; i++) w[i] = a * (2.0f * w[i] - 1.0f);
    }
}

void sit_init_weights(const sit_model *m, float *block, uint64_t seed) {
    for (int i = 0; i < m->n_tensors; i++)
        init_tensor(&m->tensors[i], block + m->tensors[i].offset, seed, i);
}

/* --- activations ------------------------------------------------------------------ */

/* Each named buffer is an allocation of its own. The training activations
 * are reserved (ops.h's mem_reserve: the CUDA backend maps device memory to
 * a big one only when an op first uses it in fp32, and on the bf16 path
 * many are never used so); the others, allocated mid-run for sampling, are
 * plain, so that running out of memory stays an error the engine reports.
 * A first pass (no alloc) counts the buffers and their bytes, a second
 * allocates them: the same code runs twice, so the two never disagree. */
typedef struct {
    void *(*alloc)(size_t bytes); /* NULL in the counting pass */
    void **bufs;         /* the second pass's allocations, n so far */
    int n;
    size_t bytes;        /* asked for, in the counting pass */
    int failed;          /* an allocation failed */
} carver;

static float *carve(carver *cv, size_t n) {
    if (!cv->alloc) {
        cv->n++;
        cv->bytes += n * sizeof(float);
        return NULL;
    }
    float *p = cv->failed ? NULL : cv->alloc(n * sizeof(float));
    if (p) cv->bufs[cv->n++] = p;
    else cv->failed = 1;
    return p;
}

static void carve_block(carver *cv, sit_block_acts *b, size_t BT, int B, int H,
                        int F, int NH, int T) {
    b->ada = carve(cv, (size_t)B * 6 * H);
    b->mean1 = carve(cv, BT);
    b->rstd1 = carve(cv, BT);
    b->mod1 = carve(cv, BT * H);
    b->qkv = carve(cv, BT * 3 * H);
    b->att = carve(cv, (size_t)B * NH * T * T);
    b->atty = carve(cv, BT * H);
    b->attproj = carve(cv, BT * H);
    b->mid = carve(cv, BT * H);
    b->mean2 = carve(cv, BT);
    b->rstd2 = carve(cv, BT);
    b->mod2 = carve(cv, BT * H);
    b->fc1 = carve(cv, BT * F);
    b->gelu = carve(cv, BT * F);
    b->fc2 = carve(cv, BT * H);
}

static size_t max_projector_dim(const sit_model *m) {
    size_t pmax = 1;
    for (int k = 0; k < m->n_sources; k++) {
        if ((size_t)m->sources[k].projector_dim > pmax) pmax = m->sources[k].projector_dim;
        if ((size_t)m->sources[k].dim > pmax) pmax = m->sources[k].dim;
    }
    return pmax;
}

static void carve_all(carver *cv, sit_acts *a, const sit_model *m, int B, int bwd) {
    int H = m->cfg.hidden, T = m->tokens, NH = m->cfg.heads;
    int F = m->cfg.mlp_ratio * H;
    size_t BT = (size_t)B * T;
    a->patches = carve(cv, BT * m->patch_dim);
    a->tfreq = carve(cv, (size_t)B * SIT_FREQ_DIM);
    a->th = carve(cv, (size_t)B * H);
    a->ths = carve(cv, (size_t)B * H);
    a->temb = carve(cv, (size_t)B * H);
    a->c = carve(cv, (size_t)B * H);
    a->silu_c = carve(cv, (size_t)B * H);
    for (int l = 0; l <= m->cfg.depth; l++) a->resid[l] = carve(cv, BT * H);
    for (int l = 0; l < m->cfg.depth; l++) carve_block(cv, &a->blocks[l], BT, B, H, F, NH, T);
    a->meanf = carve(cv, BT);
    a->rstdf = carve(cv, BT);
    a->modf = carve(cv, BT * H);
    a->fada = carve(cv, (size_t)B * 2 * H);
    a->out = carve(cv, BT * m->out_dim);
    for (int k = 0; k < m->n_sources; k++) {
        const sit_source *s = &m->sources[k];
        size_t N = s->kind == REED_SOURCE_TOKEN ? BT : (size_t)B;
        sit_projector_acts *pa = &a->proj[k];
        pa->in = s->kind == REED_SOURCE_GLOBAL ? carve(cv, (size_t)B * H) : NULL;
        pa->h0 = carve(cv, N * s->projector_dim);
        pa->s0 = carve(cv, N * s->projector_dim);
        pa->h2 = carve(cv, N * s->projector_dim);
        pa->s2 = carve(cv, N * s->projector_dim);
        pa->z = carve(cv, N * s->dim);
    }
    if (!bwd) return;
    size_t pmax = max_projector_dim(m);
    a->d_resid = carve(cv, BT * H);
    a->d_mod = carve(cv, BT * H);
    a->d_atty = carve(cv, BT * H);
    a->d_small = carve(cv, BT * H);
    a->d_mlp = carve(cv, BT * F);
    a->d_qkv = carve(cv, BT * 3 * H);
    a->d_att = carve(cv, (size_t)B * NH * T * T);
    a->d_ada = carve(cv, (size_t)B * 6 * H);
    a->d_c = carve(cv, (size_t)B * H);
    a->d_cond = carve(cv, (size_t)B * H);
    a->d_th = carve(cv, (size_t)B * H);
    a->d_proj_n = carve(cv, BT * H);
    a->d_proj_p = carve(cv, BT * pmax);
    a->d_proj_p2 = carve(cv, BT * pmax);
    a->d_gproj_p = carve(cv, (size_t)B * pmax);
    a->d_gproj_p2 = carve(cv, (size_t)B * pmax);
    a->d_out = carve(cv, BT * m->out_dim);
}

int sit_acts_alloc(sit_acts *a, const reed_ops *ops, const sit_model *m, int B,
                   int for_backward, reed_error *err) {
    memset(a, 0, sizeof *a);
    a->ops = ops;
    a->B = B;
    a->resid = calloc((size_t)m->cfg.depth + 1, sizeof *a->resid);
    a->blocks = calloc((size_t)m->cfg.depth, sizeof *a->blocks);
    carver count = {0};
    if (a->resid && a->blocks) carve_all(&count, a, m, B, for_backward);
    size_t pos = (size_t)m->tokens * m->cfg.hidden;
    a->labels = ops->mem_alloc((size_t)B * sizeof *a->labels);
    a->pos_embed = ops->mem_alloc(pos * sizeof(float));
    a->bufs = calloc((size_t)count.n + 1, sizeof *a->bufs);
    carver cv = {for_backward ? ops->mem_reserve : ops->mem_alloc, a->bufs, 0, 0,
                 !(a->labels && a->pos_embed && a->resid && a->blocks && a->bufs)};
    if (!cv.failed) carve_all(&cv, a, m, B, for_backward);
    a->n_bufs = cv.n;
    if (cv.failed) {
        sit_acts_free(a, m);
        return reed_errorf(err, "model: cannot allocate %.1f MiB of activations for batch %d "
                           "(%s)", count.bytes / (double)(1 << 20), B, ops->name);
    }
    ops->upload(a->pos_embed, m->pos_embed, pos * sizeof(float));
    return 0;
}

void sit_acts_free(sit_acts *a, const sit_model *m) {
    (void)m;
    if (a->ops) {
        for (int i = 0; i < a->n_bufs; i++) a->ops->mem_free(a->bufs[i]);
        a->ops->mem_free(a->labels);
        a->ops->mem_free(a->pos_embed);
    }
    free(a->bufs);
    free(a->resid);
    free(a->blocks);
    memset(a, 0, sizeof *a);
}

/* --- forward ------------------------------------------------------------------------ */

/* c = MLP(freq(t)) + table[y]; silu_c feeds every adaLN. */
static void conditioning_forward(const reed_ops *ops, const sit_model *m,
                                 const sit_params *p, sit_acts *a,
                                 const float *t, const int *y) {
    int B = a->B, H = m->cfg.hidden;
    ops->timestep_embedding(a->tfreq, t, B, SIT_FREQ_DIM);
    ops->linear_forward(a->th, a->tfreq, p->t0_w, p->t0_b, B, SIT_FREQ_DIM, H);
    ops->silu_forward(a->ths, a->th, (size_t)B * H);
    ops->linear_forward(a->temb, a->ths, p->t2_w, p->t2_b, B, H, H);
    ops->embedding_forward(a->c, p->y_table, y, B, H);
    ops->accumulate(a->c, a->temb, (size_t)B * H);
    ops->silu_forward(a->silu_c, a->c, (size_t)B * H);
}

static void block_forward(const reed_ops *ops, const sit_model *m,
                          const sit_block_params *p, sit_block_acts *b,
                          const float *silu_c, const float *x_in, float *x_out,
                          int B) {
    int H = m->cfg.hidden, T = m->tokens, NH = m->cfg.heads;
    int F = m->cfg.mlp_ratio * H, ldm = 6 * H, BT = B * T;
    size_t n = (size_t)BT * H;
    const float *shift1 = b->ada, *scale1 = b->ada + H, *gate1 = b->ada + 2 * H;
    const float *shift2 = b->ada + 3 * H, *scale2 = b->ada + 4 * H, *gate2 = b->ada + 5 * H;
    ops->linear_forward(b->ada, silu_c, p->ada_w, p->ada_b, B, H, 6 * H);
    /* x_mid = x_in + gate1 · Attn(modulate(LN(x_in), shift1, scale1)) */
    ops->ln_modulate_forward(b->mod1, b->mean1, b->rstd1, x_in, shift1, scale1, ldm, B, T, H,
                             1e-6f);
    ops->linear_forward(b->qkv, b->mod1, p->qkv_w, p->qkv_b, BT, H, 3 * H);
    ops->attention_forward(b->atty, b->att, b->qkv, B, T, H, NH);
    ops->linear_forward(b->attproj, b->atty, p->proj_w, p->proj_b, BT, H, H);
    ops->copy(b->mid, x_in, n * sizeof(float));
    ops->gated_add_forward(b->mid, b->attproj, gate1, ldm, B, T, H);
    /* x_out = x_mid + gate2 · MLP(modulate(LN(x_mid), shift2, scale2)) */
    ops->ln_modulate_forward(b->mod2, b->mean2, b->rstd2, b->mid, shift2, scale2, ldm, B, T, H,
                             1e-6f);
    ops->linear_gelu_forward(b->gelu, b->fc1, b->mod2, p->fc1_w, p->fc1_b, BT, H, F);
    ops->linear_forward(b->fc2, b->gelu, p->fc2_w, p->fc2_b, BT, F, H);
    ops->copy(x_out, b->mid, n * sizeof(float));
    ops->gated_add_forward(x_out, b->fc2, gate2, ldm, B, T, H);
}

/* z = Linear(SiLU(Linear(SiLU(Linear(h))))) on N rows. */
static void projector_forward(const reed_ops *ops, const sit_model *m, int k,
                              const sit_projector_params *q, sit_projector_acts *pa,
                              const float *tap, int B) {
    const sit_source *s = &m->sources[k];
    int H = m->cfg.hidden, P = s->projector_dim, N = B;
    const float *in = tap;
    if (s->kind == REED_SOURCE_GLOBAL) {
        ops->mean_tokens_forward(pa->in, tap, B, m->tokens, H);
        in = pa->in;
    } else {
        N = B * m->tokens;
    }
    ops->linear_forward(pa->h0, in, q->w0, q->b0, N, H, P);
    ops->silu_forward(pa->s0, pa->h0, (size_t)N * P);
    ops->linear_forward(pa->h2, pa->s0, q->w2, q->b2, N, P, P);
    ops->silu_forward(pa->s2, pa->h2, (size_t)N * P);
    ops->linear_forward(pa->z, pa->s2, q->w4, q->b4, N, P, s->dim);
}

static void final_forward(const reed_ops *ops, const sit_model *m,
                          const sit_params *p, sit_acts *a, float *v) {
    int B = a->B, H = m->cfg.hidden, T = m->tokens, BT = B * T;
    const reed_model_config *c = &m->cfg;
    ops->linear_forward(a->fada, a->silu_c, p->fada_w, p->fada_b, B, H, 2 * H);
    ops->ln_modulate_forward(a->modf, a->meanf, a->rstdf, a->resid[c->depth], a->fada,
                             a->fada + H, 2 * H, B, T, H, 1e-6f);
    ops->linear_forward(a->out, a->modf, p->fin_w, p->fin_b, BT, H, m->out_dim);
    ops->unpatchify_forward(v, a->out, B, c->in_channels, c->image_size, c->patch);
}

void sit_forward(const reed_ops *ops, const sit_model *m, const sit_params *p,
                 sit_acts *a, const float *x_t, const float *t, const int *y,
                 float *v, int with_projectors) {
    const reed_model_config *c = &m->cfg;
    int B = a->B, H = c->hidden, T = m->tokens;
    ops->copy(a->labels, y, (size_t)B * sizeof *y);
    ops->patchify(a->patches, x_t, B, c->in_channels, c->image_size, c->patch);
    ops->linear_forward(a->resid[0], a->patches, p->xemb_w, p->xemb_b, B * T,
                        m->patch_dim, H);
    ops->add_rows(a->resid[0], a->pos_embed, B, T, H);
    conditioning_forward(ops, m, p, a, t, y);
    for (int l = 0; l < c->depth; l++)
        block_forward(ops, m, &p->blocks[l], &a->blocks[l], a->silu_c,
                      a->resid[l], a->resid[l + 1], B);
    for (int k = 0; with_projectors && k < m->n_sources; k++)
        projector_forward(ops, m, k, &p->proj[k], &a->proj[k],
                          a->resid[m->sources[k].depth], B);
    final_forward(ops, m, p, a, v);
}

/* --- backward ------------------------------------------------------------------------ */

/* From dz (N, D) back to the tap: adds into d_tap (B,T,H). */
static void projector_backward(const reed_ops *ops, const sit_model *m, int k,
                               const sit_projector_params *q,
                               const sit_projector_params *g,
                               sit_projector_acts *pa, sit_acts *a,
                               const float *tap, const float *dz, float *d_tap) {
    const sit_source *s = &m->sources[k];
    int B = a->B, H = m->cfg.hidden, P = s->projector_dim;
    int global = s->kind == REED_SOURCE_GLOBAL;
    int N = global ? B : B * m->tokens;
    const float *in = global ? pa->in : tap;
    float *dp = global ? a->d_gproj_p : a->d_proj_p, *dp2 = global ? a->d_gproj_p2 : a->d_proj_p2;
    size_t np = (size_t)N * P;
    ops->zero(dp, np * sizeof(float));
    ops->linear_backward(dp, g->w4, g->b4, dz, pa->s2, q->w4, N, P, s->dim);
    ops->zero(dp2, np * sizeof(float));
    ops->silu_backward(dp2, dp, pa->h2, np);
    ops->zero(dp, np * sizeof(float));
    ops->linear_backward(dp, g->w2, g->b2, dp2, pa->s0, q->w2, N, P, P);
    ops->zero(dp2, np * sizeof(float));
    ops->silu_backward(dp2, dp, pa->h0, np);
    if (!global) {
        ops->linear_backward(d_tap, g->w0, g->b0, dp2, in, q->w0, N, H, P);
        return;
    }
    ops->zero(a->d_proj_n, (size_t)B * H * sizeof(float));
    ops->linear_backward(a->d_proj_n, g->w0, g->b0, dp2, in, q->w0, N, H, P);
    ops->mean_tokens_backward(d_tap, a->d_proj_n, B, m->tokens, H);
}

/* d_resid holds dL/dx_out on entry and dL/dx_in on exit; d_ada and d_c
 * collect the conditioning gradient. */
static void block_backward(const reed_ops *ops, const sit_model *m,
                           const sit_block_params *p, const sit_block_params *g,
                           sit_block_acts *b, sit_acts *a, const float *x_in) {
    int B = a->B, H = m->cfg.hidden, T = m->tokens, NH = m->cfg.heads;
    int F = m->cfg.mlp_ratio * H, ldm = 6 * H, BT = B * T;
    size_t n = (size_t)BT * H;
    float *dshift1 = a->d_ada, *dscale1 = a->d_ada + H, *dgate1 = a->d_ada + 2 * H;
    float *dshift2 = a->d_ada + 3 * H, *dscale2 = a->d_ada + 4 * H, *dgate2 = a->d_ada + 5 * H;
    ops->zero(a->d_ada, (size_t)B * 6 * H * sizeof(float));
    /* MLP branch: x_out = mid + gate2·fc2 */
    ops->zero(a->d_small, n * sizeof(float));
    ops->gated_add_backward(a->d_small, dgate2, a->d_resid, b->fc2, b->ada + 5 * H, ldm, B, T, H);
    ops->linear_gelu_backward(a->d_mlp, g->fc2_w, g->fc2_b, a->d_small, b->gelu, b->fc1, p->fc2_w,
                              BT, F, H); // d_mlp = dL/dfc1, written
    ops->zero(a->d_mod, n * sizeof(float));
    ops->linear_backward(a->d_mod, g->fc1_w, g->fc1_b, a->d_mlp, b->mod2, p->fc1_w, BT, H, F);
    ops->ln_modulate_backward(a->d_resid, dshift2, dscale2, a->d_mod, b->mid, b->mean2, b->rstd2,
                              b->ada + 4 * H, ldm, B, T, H);
    /* attention branch: mid = x_in + gate1·attproj */
    ops->zero(a->d_small, n * sizeof(float));
    ops->gated_add_backward(a->d_small, dgate1, a->d_resid, b->attproj, b->ada + 2 * H, ldm, B, T, H);
    ops->zero(a->d_atty, n * sizeof(float));
    ops->linear_backward(a->d_atty, g->proj_w, g->proj_b, a->d_small, b->atty, p->proj_w, BT, H, H);
    ops->zero(a->d_qkv, n * 3 * sizeof(float));
    ops->attention_backward(a->d_qkv, a->d_att, a->d_atty, b->qkv, b->att, B, T, H, NH);
    ops->zero(a->d_mod, n * sizeof(float));
    ops->linear_backward(a->d_mod, g->qkv_w, g->qkv_b, a->d_qkv, b->mod1, p->qkv_w, BT, H, 3 * H);
    ops->ln_modulate_backward(a->d_resid, dshift1, dscale1, a->d_mod, x_in, b->mean1, b->rstd1,
                              b->ada + H, ldm, B, T, H);
    /* adaLN: ada = Linear(silu_c) */
    ops->linear_backward(a->d_c, g->ada_w, g->ada_b, a->d_ada, a->silu_c, p->ada_w, B, H, 6 * H);
}

static void final_backward(const reed_ops *ops, const sit_model *m,
                           const sit_params *p, const sit_params *g,
                           sit_acts *a, const float *dv) {
    const reed_model_config *c = &m->cfg;
    int B = a->B, H = c->hidden, T = m->tokens, BT = B * T;
    size_t n = (size_t)BT * H;
    ops->unpatchify_backward(a->d_out, dv, B, c->in_channels, c->image_size, c->patch);
    ops->zero(a->d_mod, n * sizeof(float));
    ops->linear_backward(a->d_mod, g->fin_w, g->fin_b, a->d_out, a->modf, p->fin_w, BT, H, m->out_dim);
    ops->zero(a->d_ada, (size_t)B * 2 * H * sizeof(float));
    ops->zero(a->d_resid, n * sizeof(float));
    ops->ln_modulate_backward(a->d_resid, a->d_ada, a->d_ada + H, a->d_mod, a->resid[c->depth],
                              a->meanf, a->rstdf, a->fada + H, 2 * H, B, T, H);
    ops->linear_backward(a->d_c, g->fada_w, g->fada_b, a->d_ada, a->silu_c, p->fada_w, B, H, 2 * H);
}

/* d_c (gradient of silu_c on entry) → timestep MLP, label table. */
static void conditioning_backward(const reed_ops *ops, const sit_model *m,
                                  const sit_params *p, const sit_params *g,
                                  sit_acts *a, const int *y) {
    int B = a->B, H = m->cfg.hidden;
    size_t n = (size_t)B * H;
    // dc and dth have buffers of their own rather than prefixes of d_small
    // and d_mlp: a backend may hold those buffers' last contents in another
    // form (CUDA's sole bf16 views), which zeroing a part of one would make
    // it convert back whole.
    float *dc = a->d_cond, *dths = a->d_mod, *dth = a->d_th;
    ops->zero(dc, n * sizeof(float));
    ops->silu_backward(dc, a->d_c, a->c, n);
    ops->embedding_backward(g->y_table, dc, y, B, H);
    ops->zero(dths, n * sizeof(float));
    ops->linear_backward(dths, g->t2_w, g->t2_b, dc, a->ths, p->t2_w, B, H, H);
    ops->zero(dth, n * sizeof(float));
    ops->silu_backward(dth, dths, a->th, n);
    ops->linear_backward(NULL, g->t0_w, g->t0_b, dth, a->tfreq, p->t0_w, B, SIT_FREQ_DIM, H);
}

void sit_backward(const reed_ops *ops, const sit_model *m, const sit_params *p,
                  const sit_params *g, sit_acts *a, const float *dv,
                  float *const *dz) {
    const reed_model_config *c = &m->cfg;
    int B = a->B, H = c->hidden, T = m->tokens;
    ops->zero(a->d_c, (size_t)B * H * sizeof(float));
    final_backward(ops, m, p, g, a, dv);
    for (int l = c->depth; l >= 1; l--) {
        for (int k = 0; k < m->n_sources; k++)
            if (dz && dz[k] && m->sources[k].depth == l)
                projector_backward(ops, m, k, &p->proj[k], &g->proj[k], &a->proj[k],
                                   a, a->resid[l], dz[k], a->d_resid);
        block_backward(ops, m, &p->blocks[l - 1], &g->blocks[l - 1],
                       &a->blocks[l - 1], a, a->resid[l - 1]);
    }
    /* resid[0] = patches·W + b + pos */
    ops->linear_backward(NULL, g->xemb_w, g->xemb_b, a->d_resid, a->patches, p->xemb_w,
                         B * T, m->patch_dim, H);
    conditioning_backward(ops, m, p, g, a, a->labels);
}
