/* The live state shared by the engine and UI threads (live.h): one mutex
 * guards everything but the interrupt flag; a condition variable wakes the
 * engine waiting in live_pop; a non-blocking self-pipe wakes the UI (one byte
 * per publish, dropped when the pipe is full: the UI drains and re-reads
 * everything anyway). */
#include "live.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { POP_SLICE_MS = 50 }; /* live_pop rechecks the interrupt flag this often */

struct reed_live {
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* signalled by live_push */
    int wake_r, wake_w;           /* the self-pipe, both ends non-blocking */
    volatile sig_atomic_t interrupt;

    live_cmd *queue;              /* FIFO ring: queue[(head + i) % cap] */
    size_t q_head, q_len, q_cap;
    int next_ticket, applied_ticket, applied_step;

    live_point *hist;             /* every published step, growable */
    size_t hist_len, hist_cap;

    live_status status;
    live_preview preview;         /* pixels owned here */

    char *log[LIVE_LOG_LINES];    /* ring of malloc'd lines */
    size_t log_head, log_len;

    int sched_first, sched_stride, sched_len;
    float *sched_diff, *sched_align;

    char *completions;
};

/* --- lifetime and wake-ups ------------------------------------------------------------ */

reed_live *live_new(void) {
    reed_live *lv = calloc(1, sizeof *lv);
    int fds[2];
    if (!lv) return NULL;
    if (pipe(fds) != 0) {
        free(lv);
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    lv->wake_r = fds[0];
    lv->wake_w = fds[1];
    pthread_mutex_init(&lv->mu, NULL);
    pthread_cond_init(&lv->cv, NULL);
    lv->next_ticket = 1;
    lv->sched_stride = 1;
    return lv;
}

void live_free(reed_live *lv) {
    if (!lv) return;
    for (size_t i = 0; i < lv->q_len; i++) free(lv->queue[(lv->q_head + i) % lv->q_cap].text);
    free(lv->queue);
    free(lv->hist);
    free(lv->preview.pixels);
    for (size_t i = 0; i < lv->log_len; i++) free(lv->log[(lv->log_head + i) % LIVE_LOG_LINES]);
    free(lv->sched_diff);
    free(lv->sched_align);
    free(lv->completions);
    close(lv->wake_r);
    close(lv->wake_w);
    pthread_cond_destroy(&lv->cv);
    pthread_mutex_destroy(&lv->mu);
    free(lv);
}

int live_wake_fd(const reed_live *lv) { return lv->wake_r; }

/* One byte on the pipe; a full pipe already means "wake up" (async-signal-safe). */
static void wake(reed_live *lv) {
    char b = 1;
    ssize_t rc = write(lv->wake_w, &b, 1);
    (void)rc;
}

void live_drain_wake(reed_live *lv) {
    char buf[256];
    while (read(lv->wake_r, buf, sizeof buf) > 0) {}
}

/* --- commands ------------------------------------------------------------------------------ */

static int queue_grow(reed_live *lv) {
    size_t cap = lv->q_cap ? 2 * lv->q_cap : 16;
    live_cmd *q = malloc(cap * sizeof *q);
    if (!q) return -1;
    for (size_t i = 0; i < lv->q_len; i++) q[i] = lv->queue[(lv->q_head + i) % lv->q_cap];
    free(lv->queue);
    lv->queue = q;
    lv->q_cap = cap;
    lv->q_head = 0;
    return 0;
}

int live_push(reed_live *lv, live_cmd cmd) {
    pthread_mutex_lock(&lv->mu);
    int ticket = lv->next_ticket++;
    if (cmd.kind == LIVE_CMD_INTERRUPT) {
        lv->interrupt = 1;
    } else if (lv->q_len == lv->q_cap && queue_grow(lv) != 0) {
        free(cmd.text);
        ticket = -1;
    } else {
        cmd.ticket = ticket;
        lv->queue[(lv->q_head + lv->q_len++) % lv->q_cap] = cmd;
    }
    pthread_cond_broadcast(&lv->cv);
    pthread_mutex_unlock(&lv->mu);
    return ticket;
}

void live_request_interrupt(reed_live *lv) {
    lv->interrupt = 1;
    wake(lv);
}

int live_interrupt_requested(reed_live *lv) {
    if (!lv->interrupt) return 0;
    lv->interrupt = 0;
    return 1;
}

/* An absolute CLOCK_REALTIME deadline ms from now (the condvar's clock). */
static struct timespec deadline_in(int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    return ts;
}

int live_pop(reed_live *lv, live_cmd *cmd, int timeout_ms) {
    int got = 0;
    pthread_mutex_lock(&lv->mu);
    /* wait in slices: a signal handler can set the flag but not signal cv */
    for (int left = timeout_ms; lv->q_len == 0 && left > 0 && !lv->interrupt;) {
        int slice = left < POP_SLICE_MS ? left : POP_SLICE_MS;
        struct timespec until = deadline_in(slice);
        pthread_cond_timedwait(&lv->cv, &lv->mu, &until);
        left -= slice;
    }
    if (lv->q_len > 0) {
        *cmd = lv->queue[lv->q_head];
        lv->q_head = (lv->q_head + 1) % lv->q_cap;
        lv->q_len--;
        got = 1;
    }
    pthread_mutex_unlock(&lv->mu);
    return got;
}

int live_queued(reed_live *lv) {
    pthread_mutex_lock(&lv->mu);
    int n = (int)lv->q_len;
    pthread_mutex_unlock(&lv->mu);
    return n;
}

void live_applied_set(reed_live *lv, int ticket, int step) {
    pthread_mutex_lock(&lv->mu);
    lv->applied_ticket = ticket;
    lv->applied_step = step;
    pthread_mutex_unlock(&lv->mu);
    wake(lv);
}

int live_applied_get(reed_live *lv, int *step) {
    pthread_mutex_lock(&lv->mu);
    int t = lv->applied_ticket;
    if (step) *step = lv->applied_step;
    pthread_mutex_unlock(&lv->mu);
    return t;
}

/* --- history and status ---------------------------------------------------------------------- */

void live_history_push(reed_live *lv, const live_point *p) {
    pthread_mutex_lock(&lv->mu);
    if (lv->hist_len == lv->hist_cap) {
        size_t cap = lv->hist_cap ? 2 * lv->hist_cap : 1024;
        live_point *h = realloc(lv->hist, cap * sizeof *h);
        if (h) lv->hist = h, lv->hist_cap = cap;
    }
    if (lv->hist_len < lv->hist_cap) lv->hist[lv->hist_len++] = *p;
    pthread_mutex_unlock(&lv->mu);
    wake(lv);
}

size_t live_history_count(reed_live *lv) {
    pthread_mutex_lock(&lv->mu);
    size_t n = lv->hist_len;
    pthread_mutex_unlock(&lv->mu);
    return n;
}

size_t live_history_copy(reed_live *lv, size_t from, size_t max, live_point *out) {
    pthread_mutex_lock(&lv->mu);
    size_t n = from < lv->hist_len ? lv->hist_len - from : 0;
    if (n > max) n = max;
    if (n) memcpy(out, lv->hist + from, n * sizeof *out);
    pthread_mutex_unlock(&lv->mu);
    return n;
}

void live_status_set(reed_live *lv, const live_status *st) {
    pthread_mutex_lock(&lv->mu);
    lv->status = *st;
    pthread_mutex_unlock(&lv->mu);
    wake(lv);
}

void live_status_get(reed_live *lv, live_status *out) {
    pthread_mutex_lock(&lv->mu);
    *out = lv->status;
    pthread_mutex_unlock(&lv->mu);
}

/* --- preview ------------------------------------------------------------------------------------ */

void live_preview_set(reed_live *lv, const live_preview *pv) {
    size_t n = (size_t)pv->width * pv->height * pv->channels;
    uint8_t *px = n && pv->pixels ? malloc(n) : NULL;
    if (px) memcpy(px, pv->pixels, n);
    pthread_mutex_lock(&lv->mu);
    uint64_t version = lv->preview.version + 1;
    free(lv->preview.pixels);
    lv->preview = *pv;
    lv->preview.pixels = px;
    if (!px) lv->preview.width = lv->preview.height = 0; /* out of memory: no grid */
    lv->preview.version = version;
    pthread_mutex_unlock(&lv->mu);
    wake(lv);
}

int live_preview_get(reed_live *lv, uint64_t *have_version, live_preview *out) {
    int copied = 0;
    pthread_mutex_lock(&lv->mu);
    if (lv->preview.version != *have_version) {
        size_t n = (size_t)lv->preview.width * lv->preview.height * lv->preview.channels;
        *out = lv->preview;
        out->pixels = n ? malloc(n) : NULL;
        if (out->pixels) memcpy(out->pixels, lv->preview.pixels, n);
        else out->width = out->height = 0;
        *have_version = lv->preview.version;
        copied = 1;
    }
    pthread_mutex_unlock(&lv->mu);
    return copied;
}

/* --- log --------------------------------------------------------------------------------------- */

void live_log(reed_live *lv, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *line = NULL;
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    pthread_mutex_lock(&lv->mu);
    if (lv->log_len == LIVE_LOG_LINES) { /* full: drop the oldest */
        free(lv->log[lv->log_head]);
        lv->log_head = (lv->log_head + 1) % LIVE_LOG_LINES;
        lv->log_len--;
    }
    lv->log[(lv->log_head + lv->log_len++) % LIVE_LOG_LINES] = line;
    pthread_mutex_unlock(&lv->mu);
    wake(lv);
}

char *live_log_pop(reed_live *lv) {
    char *line = NULL;
    pthread_mutex_lock(&lv->mu);
    if (lv->log_len) {
        line = lv->log[lv->log_head];
        lv->log_head = (lv->log_head + 1) % LIVE_LOG_LINES;
        lv->log_len--;
    }
    pthread_mutex_unlock(&lv->mu);
    return line;
}

/* --- schedule and completions ------------------------------------------------------------------------ */

void live_schedule_set_strided(reed_live *lv, int first, int stride, const float *w_diff,
                               const float *w_align, int n) {
    float *d = n > 0 ? malloc((size_t)n * sizeof *d) : NULL;
    float *a = n > 0 ? malloc((size_t)n * sizeof *a) : NULL;
    if (n > 0 && (!d || !a)) n = 0;
    if (n > 0) {
        memcpy(d, w_diff, (size_t)n * sizeof *d);
        memcpy(a, w_align, (size_t)n * sizeof *a);
    }
    pthread_mutex_lock(&lv->mu);
    free(lv->sched_diff);
    free(lv->sched_align);
    lv->sched_diff = d;
    lv->sched_align = a;
    lv->sched_first = first;
    lv->sched_stride = stride > 0 ? stride : 1;
    lv->sched_len = n > 0 ? n : 0;
    pthread_mutex_unlock(&lv->mu);
    wake(lv);
}

void live_schedule_set(reed_live *lv, int first, const float *w_diff, const float *w_align,
                       int n) {
    live_schedule_set_strided(lv, first, 1, w_diff, w_align, n);
}

int live_schedule_get_strided(reed_live *lv, int *first, int *stride, float *w_diff,
                              float *w_align, int cap) {
    pthread_mutex_lock(&lv->mu);
    int n = lv->sched_len, copy = n < cap ? n : cap;
    *first = lv->sched_first;
    if (stride) *stride = lv->sched_stride;
    if (copy > 0 && w_diff) memcpy(w_diff, lv->sched_diff, (size_t)copy * sizeof *w_diff);
    if (copy > 0 && w_align) memcpy(w_align, lv->sched_align, (size_t)copy * sizeof *w_align);
    pthread_mutex_unlock(&lv->mu);
    return n;
}

int live_schedule_get(reed_live *lv, int *first, float *w_diff, float *w_align, int cap) {
    return live_schedule_get_strided(lv, first, NULL, w_diff, w_align, cap);
}

void live_completions_set(reed_live *lv, const char *names) {
    char *copy = strdup(names ? names : "");
    pthread_mutex_lock(&lv->mu);
    if (copy) {
        free(lv->completions);
        lv->completions = copy;
    }
    pthread_mutex_unlock(&lv->mu);
}

char *live_completions_get(reed_live *lv) {
    pthread_mutex_lock(&lv->mu);
    char *copy = strdup(lv->completions ? lv->completions : "");
    pthread_mutex_unlock(&lv->mu);
    return copy;
}
