/* Checkpoints as safetensors. Model tensors carry the PyTorch SiT/REPA
 * names (plus pos_embed, a frozen parameter there); the EMA and AdamW
 * moments sit alongside as ema.NAME, optimizer.exp_avg.NAME and
 * optimizer.exp_avg_sq.NAME; step, data cursor and the resolved Lua config
 * go in __metadata__. Written atomically; the newest keep_ckpts are kept. */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run_internal.h"

enum { CKPT_GROUPS = 4 };
static const char *const group_prefix[CKPT_GROUPS] = {
    "", "ema.", "optimizer.exp_avg.", "optimizer.exp_avg_sq."};

static float *group_block(const reed_run *run, int g) {
    float *blocks[CKPT_GROUPS] = {run->params, run->ema, run->m, run->v};
    return blocks[g];
}

/* The state groups as host memory: the blocks themselves on a host-memory
 * backend, else a staging copy (*staging, caller frees) filled when
 * `download` is set. Returns -1 when out of memory. */
static int host_groups(const reed_run *run, float *host[CKPT_GROUPS], float **staging,
                       int download) {
    size_t n = run->model.n_params;
    *staging = NULL;
    if (run->ops->host_memory) {
        for (int g = 0; g < CKPT_GROUPS; g++) host[g] = group_block(run, g);
        return 0;
    }
    if (!(*staging = malloc(sizeof(float) * n * CKPT_GROUPS))) return -1;
    for (int g = 0; g < CKPT_GROUPS; g++) {
        host[g] = *staging + (size_t)g * n;
        if (download) run->ops->download(host[g], group_block(run, g), sizeof(float) * n);
    }
    return 0;
}

static void fill_tensor(st_tensor *t, char *name, size_t cap, const char *prefix,
                        const sit_tensor *src, const float *block) {
    snprintf(name, cap, "%s%s", prefix, src->name);
    t->name = name;
    t->ndim = src->ndim;
    for (int i = 0; i < src->ndim; i++) t->shape[i] = src->shape[i];
    t->data = block + src->offset;
}

/* Builds the tensor list: pos_embed (1, T, H), then each group. */
static st_tensor *checkpoint_tensors(const reed_run *run, float *const host[CKPT_GROUPS],
                                     int *count, char **names) {
    const sit_model *m = &run->model;
    int n = 1 + CKPT_GROUPS * m->n_tensors;
    st_tensor *ts = calloc((size_t)n, sizeof *ts);
    *names = calloc((size_t)n, 128);
    if (!ts || !*names) {
        free(ts);
        free(*names);
        return NULL;
    }
    ts[0] = (st_tensor){"pos_embed", 3, {1, m->tokens, m->cfg.hidden}, m->pos_embed};
    for (int g = 0; g < CKPT_GROUPS; g++)
        for (int i = 0; i < m->n_tensors; i++) {
            int at = 1 + g * m->n_tensors + i;
            fill_tensor(&ts[at], *names + (size_t)at * 128, 128, group_prefix[g],
                        &m->tensors[i], host[g]);
        }
    *count = n;
    return ts;
}

static int write_checkpoint(const reed_run *run, const char *path, reed_error *err) {
    int n;
    char *names;
    float *host[CKPT_GROUPS], *staging;
    if (host_groups(run, host, &staging, 1)) return reed_errorf(err, "%s: out of memory", path);
    st_tensor *ts = checkpoint_tensors(run, host, &n, &names);
    if (!ts) {
        free(staging);
        return reed_errorf(err, "%s: out of memory", path);
    }
    char step[32], epoch[32], pos[32], seed[32];
    snprintf(step, sizeof step, "%d", run->step);
    snprintf(epoch, sizeof epoch, "%" PRId64, run->cursor.epoch);
    snprintf(pos, sizeof pos, "%" PRId64, run->cursor.pos);
    snprintf(seed, sizeof seed, "%" PRIu64, run->cfg.train.seed);
    st_meta meta[] = {{"format", "reed-checkpoint"}, {"format_version", "1"},
                      {"reed_version", REED_VERSION}, {"step", step},
                      {"data_epoch", epoch}, {"data_pos", pos}, {"seed", seed},
                      {"config", run->config_text}};
    int rc = st_write(path, ts, n, meta, (int)(sizeof meta / sizeof *meta), err);
    free(ts);
    free(names);
    free(staging);
    return rc;
}

static int is_checkpoint_name(const char *name, int *step) {
    int len = 0;
    return sscanf(name, "step_%d.safetensors%n", step, &len) == 1 &&
           name[len] == '\0';
}

/* Steps of the checkpoints in dir, sorted ascending; returns the count. */
static int list_checkpoints(const char *dir, int *steps, int cap) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        int s;
        if (n < cap && is_checkpoint_name(e->d_name, &s)) steps[n++] = s;
    }
    if (d) closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && steps[j - 1] > steps[j]; j--) {
            int tmp = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = tmp;
        }
    return n;
}

static void prune_checkpoints(reed_run *run) {
    char dir[REED_PATH_LEN + 16], path[REED_PATH_LEN + 64];
    int steps[4096], keep = run->cfg.train.keep_ckpts;
    snprintf(dir, sizeof dir, "%s/checkpoints", run->dir);
    int n = list_checkpoints(dir, steps, 4096);
    for (int i = 0; keep > 0 && i < n - keep; i++) {
        snprintf(path, sizeof path, "%s/step_%08d.safetensors", dir, steps[i]);
        if (unlink(path) == 0) run_log(run, "removed old checkpoint %s", path);
    }
}

int reed_run_save(reed_run *run, const char *path, char *written, reed_error *err) {
    char auto_path[REED_PATH_LEN];
    if (!path) {
        snprintf(auto_path, sizeof auto_path, "%s/checkpoints/step_%08d.safetensors",
                 run->dir, run->step);
        path = auto_path;
    }
    if (write_checkpoint(run, path, err)) return -1;
    if (written) snprintf(written, REED_PATH_LEN, "%s", path);
    if (path == auto_path) prune_checkpoints(run);
    return 0;
}

/* --- loading ------------------------------------------------------------------------ */

static int copy_tensor(const st_file *f, const char *name, const sit_tensor *want,
                       float *dst, reed_error *err) {
    const st_tensor *t = st_find(f, name);
    if (!t) return reed_errorf(err, "%s: missing tensor %s (a checkpoint of another "
                               "config?)", st_path(f), name);
    int same = t->ndim == want->ndim;
    for (int i = 0; same && i < want->ndim; i++) same = t->shape[i] == want->shape[i];
    if (!same) {
        char have[96] = "", need[96] = "";
        for (int i = 0; i < t->ndim; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", i ? "," : "",
                     (long long)t->shape[i]);
        for (int i = 0; i < want->ndim; i++)
            snprintf(need + strlen(need), sizeof need - strlen(need), "%s%d", i ? "," : "",
                     want->shape[i]);
        return reed_errorf(err, "%s: tensor %s has shape (%s) but this config needs (%s): "
                           "the checkpoint is from another config", st_path(f), name, have, need);
    }
    memcpy(dst, t->data, want->size * sizeof(float));
    return 0;
}

static int meta_int(const st_file *f, const char *key, long long *out, reed_error *err) {
    const char *v = st_meta_get(f, key);
    char *end;
    if (v) *out = strtoll(v, &end, 10);
    if (!v || *end || end == v)
        return reed_errorf(err, "%s: metadata \"%s\" missing or not an integer "
                           "(not a reed checkpoint?)", st_path(f), key);
    return 0;
}

int reed_run_load(reed_run *run, const char *path, reed_error *err) {
    st_file *f = st_open(path, err);
    if (!f) return -1;
    long long step = 0, epoch = 0, pos = 0;
    int rc = meta_int(f, "step", &step, err) || meta_int(f, "data_epoch", &epoch, err) ||
             meta_int(f, "data_pos", &pos, err) ? -1 : 0;
    const sit_model *m = &run->model;
    float *host[CKPT_GROUPS], *staging = NULL;
    if (rc == 0 && host_groups(run, host, &staging, 0))
        rc = reed_errorf(err, "%s: out of memory", path);
    for (int g = 0; rc == 0 && g < CKPT_GROUPS; g++)
        for (int i = 0; rc == 0 && i < m->n_tensors; i++) {
            char name[160];
            snprintf(name, sizeof name, "%s%s", group_prefix[g], m->tensors[i].name);
            rc = copy_tensor(f, name, &m->tensors[i], host[g] + m->tensors[i].offset, err);
        }
    for (int g = 0; rc == 0 && staging && g < CKPT_GROUPS; g++)
        run->ops->upload(group_block(run, g), host[g], sizeof(float) * m->n_params);
    free(staging);
    if (rc == 0) {
        run->step = (int)step;
        run->cursor = (reed_cursor){epoch, pos};
        if (!run->sampling_only) rc = metrics_resume_at(run, run->step, err);
    }
    st_close(f);
    return rc;
}

/* A run directory resolves to its newest checkpoints/step_*.safetensors. */
static int resolve_checkpoint(const char *path, char *resolved, reed_error *err) {
    char dir[REED_PATH_LEN + 16];
    int steps[4096];
    snprintf(dir, sizeof dir, "%s/checkpoints", path);
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(resolved, REED_PATH_LEN, "%s", path);
        return 0;
    }
    closedir(d);
    int n = list_checkpoints(dir, steps, 4096);
    if (n == 0) return reed_errorf(err, "%s: no checkpoints in %s", path, dir);
    snprintf(resolved, REED_PATH_LEN, "%s/step_%08d.safetensors", dir, steps[n - 1]);
    return 0;
}

int reed_checkpoint_config(const char *path, char **config_text, char *resolved,
                           reed_error *err) {
    if (resolve_checkpoint(path, resolved, err)) return -1;
    st_file *f = st_open(resolved, err);
    if (!f) return -1;
    const char *text = st_meta_get(f, "config");
    if (!text) {
        st_close(f);
        return reed_errorf(err, "%s: no \"config\" in the metadata: not a reed checkpoint",
                           resolved);
    }
    *config_text = strdup(text);
    st_close(f);
    return *config_text ? 0 : reed_errorf(err, "out of memory");
}
