/* metrics.jsonl: one JSON object per logged step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"

static void put_number(FILE *f, const char *key, double v) {
    if (isfinite(v)) fprintf(f, ",\"%s\":%.9g", key, v);
    else fprintf(f, ",\"%s\":null", key);
}

void metrics_write_jsonl(FILE *f, const reed_metrics *m) {
    fprintf(f, "{\"step\":%d,\"phase\":\"%s\"", m->step, m->phase);
    put_number(f, "loss", m->loss);
    put_number(f, "loss_denoise", m->loss_denoise);
    put_number(f, "w_diff", m->w_diff);
    put_number(f, "w_align", m->w_align);
    put_number(f, "proj_coeff", m->proj_coeff);
    put_number(f, "grad_norm", m->grad_norm);
    put_number(f, "lr", m->lr);
    put_number(f, "imgs_per_s", m->imgs_per_s);
    if (m->device_mb > 0) put_number(f, "device_mem_mb", m->device_mb);
    for (int k = 0; k < m->n_sources; k++) {
        char key[REED_NAME_LEN + 8];
        snprintf(key, sizeof key, "sim_%s", m->source_names[k]);
        put_number(f, key, m->sim[k]);
        snprintf(key, sizeof key, "loss_%s", m->source_names[k]);
        put_number(f, key, m->loss_src[k]);
    }
    if (m->fd_n > 0) {
        put_number(f, "fd", m->fd);
        fprintf(f, ",\"fd_n\":%d", m->fd_n);
        put_number(f, "cond_acc", m->cond_acc);
    }
    fputs("}\n", f);
}

/* On resume: drops the lines of steps at or after `step` (they were logged
 * after the checkpoint and will be logged again), rewriting the file
 * atomically, and reopens it for appending. */
int metrics_resume_at(reed_run *run, int step, reed_error *err) {
    char path[REED_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run->dir);
    if (run->metrics) fclose(run->metrics);
    run->metrics = NULL;
    FILE *in = fopen(path, "r");
    size_t cap = 1 << 16, len = 0;
    char *kept = malloc(cap), line[8192];
    int rc = kept ? 0 : reed_errorf(err, "out of memory");
    while (rc == 0 && in && fgets(line, sizeof line, in)) {
        int s;
        if (sscanf(line, "{\"step\":%d", &s) != 1 || s >= step) continue;
        size_t n = strlen(line);
        if (len + n + 1 > cap) {
            char *grown = realloc(kept, cap = 2 * (len + n + 1));
            if (!grown) rc = reed_errorf(err, "out of memory");
            else kept = grown;
        }
        if (rc == 0) memcpy(kept + len, line, n), len += n;
    }
    if (in) fclose(in);
    if (rc == 0) rc = write_file_atomic(path, kept, len, err);
    free(kept);
    if (rc == 0 && !(run->metrics = fopen(path, "a")))
        rc = reed_errorf(err, "%s: cannot open for appending", path);
    return rc;
}
