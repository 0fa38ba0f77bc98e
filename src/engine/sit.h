/* The SiT backbone with REPA/REED projectors: parameters, activations,
 * forward and backward (DESIGN.md §2). All math goes through a reed_ops
 * table, so the same code runs on every backend.
 *
 * Gradient contract: sit_backward ADDS into the gradient block; the caller
 * zeroes it once per step. */
#ifndef REED_SIT_H
#define REED_SIT_H

#include <stddef.h>

#include "config.h"
#include "ops.h"

enum { SIT_FREQ_DIM = 256, SIT_MAX_TENSORS = 512 };

/* A model's view of one source: what its projector maps to. */
typedef struct sit_source {
    reed_source_kind kind;
    int depth;          /* tap after block `depth` (1-based) */
    int dim;            /* D_k */
    int projector_dim;  /* P */
} sit_source;

typedef struct sit_block_params {
    float *qkv_w, *qkv_b;   /* (3H, H), (3H) */
    float *proj_w, *proj_b; /* (H, H), (H) */
    float *fc1_w, *fc1_b;   /* (4H, H), (4H) */
    float *fc2_w, *fc2_b;   /* (H, 4H), (H) */
    float *ada_w, *ada_b;   /* (6H, H), (6H) */
} sit_block_params;

typedef struct sit_projector_params {
    float *w0, *b0;         /* (P, H), (P) */
    float *w2, *b2;         /* (P, P), (P) */
    float *w4, *b4;         /* (D, P), (D) */
} sit_projector_params;

/* Pointers into one contiguous block (parameters, or gradients, or EMA...). */
typedef struct sit_params {
    float *xemb_w, *xemb_b; /* (H, Cin, p, p), (H) */
    float *t0_w, *t0_b;     /* (H, 256), (H) */
    float *t2_w, *t2_b;     /* (H, H), (H) */
    float *y_table;         /* (classes + 1, H) */
    sit_block_params *blocks;            /* [depth] */
    sit_projector_params proj[REED_MAX_SOURCES];
    float *fin_w, *fin_b;   /* (p·p·Cout, H), (p·p·Cout) */
    float *fada_w, *fada_b; /* (2H, H), (2H) */
} sit_params;

/* One named parameter tensor, in PyTorch state_dict order. */
typedef struct sit_tensor {
    char name[96];
    int ndim;
    int shape[4];
    size_t offset, size;    /* in floats, within a parameter block */
} sit_tensor;

typedef struct sit_model {
    reed_model_config cfg;
    int n_sources;
    sit_source sources[REED_MAX_SOURCES];
    int grid, tokens;       /* G = image/patch, T = G² */
    int patch_dim;          /* Cin·p·p */
    int out_dim;            /* p·p·Cout */
    float *pos_embed;       /* (T, H), fixed */
    int n_tensors;
    sit_tensor tensors[SIT_MAX_TENSORS];
    size_t n_params;        /* floats in one parameter block */
} sit_model;

/* Activations of one forward pass at batch B, kept for the backward pass. */
typedef struct sit_block_acts {
    float *ada;             /* (B, 6H) shift1 scale1 gate1 shift2 scale2 gate2 */
    float *mean1, *rstd1, *mod1;         /* (B·T), (B·T), (B,T,H): modulate(LN(x_in)) */
    float *qkv, *att, *atty, *attproj;   /* (B,T,3H), (B,NH,T,T), (B,T,H), (B,T,H) */
    float *mean2, *rstd2, *mod2;         /* the same for LN(mid) */
    float *fc1, *gelu, *fc2;             /* (B,T,4H), (B,T,4H), (B,T,H) */
    float *mid;                          /* (B,T,H) residual after attention */
} sit_block_acts;

typedef struct sit_projector_acts {
    float *in;              /* (N, H): the pooled tap for global sources */
    float *h0, *s0, *h2, *s2, *z; /* (N,P), (N,P), (N,P), (N,P), (N,D) */
} sit_projector_acts;

/* Every buffer here is backend memory (from ops->mem_alloc). */
typedef struct sit_acts {
    const reed_ops *ops;    /* the backend that owns the buffers */
    int B;
    void **bufs;            /* every buffer below but labels and pos_embed */
    int n_bufs;
    int *labels;            /* (B) the labels of the last forward pass */
    float *pos_embed;       /* (T, H): the model's, uploaded */
    float *patches;         /* (B·T, Cin·p·p) */
    float *tfreq, *th, *ths, *temb, *c, *silu_c; /* (B,256), then (B,H) each */
    float **resid;          /* [depth+1] (B,T,H): resid[0] embeds, resid[l] after block l */
    sit_block_acts *blocks;
    float *meanf, *rstdf, *modf, *fada; /* final layer */
    float *out;             /* (B, T, p·p·Cout) */
    sit_projector_acts proj[REED_MAX_SOURCES];
    /* backward scratch */
    float *d_resid, *d_mod, *d_mlp, *d_qkv, *d_att, *d_small; /* d_mlp: (B,T,F) */
    float *d_atty; /* (B,T,H): the attention output's gradient, read only by the
                    * attention backward (so the CUDA backend may keep it bf16) */
    float *d_ada, *d_c, *d_cond, *d_th, *d_proj_n, *d_proj_p, *d_proj_p2, *d_out;
    /* (B, max projector dim): the global sources' projector gradients, apart
     * from the token sources' (d_proj_p, d_proj_p2) so that no gradient
     * written over part of a buffer meets the bf16 view of a longer one
     * (the CUDA backend would write that view back to fp32) */
    float *d_gproj_p, *d_gproj_p2;
} sit_acts;

/* Builds the tensor table for a config and its sources. */
int sit_init(sit_model *m, const reed_model_config *cfg, int n_sources,
             const sit_source *sources, reed_error *err);
void sit_free(sit_model *m);

/* Points a sit_params view at a block of m->n_params floats. */
void sit_point(const sit_model *m, sit_params *view, float *block);
void sit_view_free(sit_params *view);

/* The paper's initialisation into `block` (host memory), drawn from
 * (seed, INIT stream). */
void sit_init_weights(const sit_model *m, float *block, uint64_t seed);

/* Activations for batch B in the backend's memory (all arguments of
 * sit_forward/sit_backward are backend memory too). */
int sit_acts_alloc(sit_acts *a, const reed_ops *ops, const sit_model *m, int B,
                   int for_backward, reed_error *err);
void sit_acts_free(sit_acts *a, const sit_model *m);

/* Forward. x_t (B, Cin, S, S), t (B), y (B) integer labels (num_classes =
 * null). Writes v (B, Cout, S, S) and, when with_projectors, each source's
 * projection in a->proj[k].z. */
void sit_forward(const reed_ops *ops, const sit_model *m, const sit_params *p,
                 sit_acts *a, const float *x_t, const float *t, const int *y,
                 float *v, int with_projectors);

/* Backward from dv (B, Cout, S, S) and dz[k] (the gradient of each source's
 * projection; NULL entries skipped). Adds into g. */
void sit_backward(const reed_ops *ops, const sit_model *m, const sit_params *p,
                  const sit_params *g, sit_acts *a, const float *dv,
                  float *const *dz);

#endif
