/* The live state a running workbench shares between its two threads
 * (DESIGN.md §3): the engine thread steps the run and owns the Lua state;
 * the UI thread owns the terminal and never blocks on a step.
 *
 *   UI → engine   commands (Lua lines, key actions), queued and applied at
 *                 step boundaries (at once while paused);
 *   engine → UI   metric history, status, log lines, the schedule ahead,
 *                 the latest sample grid, completion names; published under
 *                 a mutex, with a wake-up byte on a pipe the UI polls.
 *
 * Every function here is thread-safe. Readers copy out what they need. */
#ifndef REED_LIVE_H
#define REED_LIVE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "reed.h"

/* One step of metric history (what the charts and summaries draw). */
typedef struct live_point {
    int step;
    int phase;                 /* index into the run's phase names */
    float loss, loss_denoise, w_diff, w_align, grad_norm, lr, imgs_per_s;
    float sim[REED_MAX_SOURCES];
    float loss_src[REED_MAX_SOURCES];
} live_point;

/* The run at a glance (the status line). */
typedef struct live_status {
    char run_name[REED_NAME_LEN];
    char backend[16];
    int step, total_steps;     /* steps done, steps in the run */
    int phase;
    char phase_name[32];
    int paused;
    int running_command;       /* a REPL chunk is executing on the engine */
    double its_per_s;          /* smoothed, pauses excluded */
    double eta_seconds;        /* on active time */
    double active_seconds;
    size_t memory_bytes;       /* resident set */
    size_t device_bytes;       /* backend memory in use (GPU); 0 on the CPU */
    double fd;                 /* latest evaluation's Fréchet distance; < 0: none */
    int n_sources;
    char source_names[REED_MAX_SOURCES][REED_NAME_LEN];
    char phase_names[8][32];   /* names of phases 0..n_phases-1 */
    int n_phases;
} live_status;

/* The latest sample grid, as 8-bit pixels (grey or RGB), with its settings. */
typedef struct live_preview {
    int width, height, channels; /* 0 width: none yet */
    uint8_t *pixels;             /* owned by the live state; copied out by readers */
    int step, steps, n;
    char sampler[16];
    float cfg;
    uint64_t seed;
    int ema;
    char png_path[REED_PATH_LEN];
    uint64_t version;            /* increments with every new grid */
} live_preview;

/* What the UI asks for. Lua lines run in the engine's Lua state. */
typedef enum {
    LIVE_CMD_LUA,         /* text: a complete Lua chunk from the REPL */
    LIVE_CMD_TOGGLE_PAUSE,
    LIVE_CMD_SAMPLE,      /* with the config's sample settings */
    LIVE_CMD_CHECKPOINT,
    LIVE_CMD_QUIT,        /* checkpoint, then stop */
    LIVE_CMD_INTERRUPT,   /* Ctrl-C: interrupt running Lua, else pause */
} live_cmd_kind;

typedef struct live_cmd {
    live_cmd_kind kind;
    char *text;           /* LIVE_CMD_LUA: owned by the queue once pushed */
    int ticket;           /* assigned by live_push */
} live_cmd;

typedef struct reed_live reed_live;

enum { LIVE_LOG_LINES = 2000 };

reed_live *live_new(void);
void live_free(reed_live *lv);
/* The read end of the wake-up pipe: readable when something was published. */
int live_wake_fd(const reed_live *lv);
void live_drain_wake(reed_live *lv);

/* --- UI thread -------------------------------------------------------------- */
/* Queues a command; returns its ticket (for "queued → step N" messages).
 * Takes ownership of cmd.text. LIVE_CMD_INTERRUPT is not queued: it sets the
 * interrupt flag at once (the engine cannot pop while a chunk runs). Returns
 * -1 (and frees cmd.text) when out of memory. */
int live_push(reed_live *lv, live_cmd cmd);
/* Interrupt flag polled by the Lua hook and long C calls (async-signal-safe
 * to set: a sig_atomic_t). */
void live_request_interrupt(reed_live *lv);

size_t live_history_count(reed_live *lv);
/* Copies points [from, from+max) into out; returns how many. */
size_t live_history_copy(reed_live *lv, size_t from, size_t max, live_point *out);
void live_status_get(reed_live *lv, live_status *out);
/* Copies the preview if its version differs from *have_version; the caller
 * frees out->pixels. Returns 1 when copied. */
int live_preview_get(reed_live *lv, uint64_t *have_version, live_preview *out);
/* Pops the next log line (malloc'd, caller frees) or NULL. The log keeps the
 * newest LIVE_LOG_LINES lines; older unread ones are dropped. */
char *live_log_pop(reed_live *lv);
/* The schedule: applied weights so far come from the history; this is the
 * plan for steps [first, first+n). Copies up to cap entries; returns n. */
int live_schedule_get(reed_live *lv, int *first, float *w_diff, float *w_align,
                      int cap);
/* The same with the spacing of the points: entry i is step first + i·stride
 * (stride > 1 for long runs, whose plan is thinned to at most ~2000 points). */
int live_schedule_get_strided(reed_live *lv, int *first, int *stride, float *w_diff,
                              float *w_align, int cap);
/* Names for REPL completion, '\n'-separated (malloc'd), refreshed by the
 * engine after each command. */
char *live_completions_get(reed_live *lv);
/* The ticket of the last command the engine applied (0: none yet) and the
 * step it applied at (if step is not NULL): "queued" until then. */
int live_applied_get(reed_live *lv, int *step);

/* --- engine thread ------------------------------------------------------------ */
/* Waits up to timeout_ms for a command (0: poll). Returns 1 with *cmd filled
 * (the caller frees cmd->text), 0 when none or as soon as the interrupt flag
 * is set (the flag is left set). */
int live_pop(reed_live *lv, live_cmd *cmd, int timeout_ms);
int live_interrupt_requested(reed_live *lv);  /* and clears it */
int live_queued(reed_live *lv);               /* commands waiting to be popped */
void live_history_push(reed_live *lv, const live_point *p);
void live_status_set(reed_live *lv, const live_status *st);
void live_preview_set(reed_live *lv, const live_preview *pv); /* copies pixels */
void live_log(reed_live *lv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void live_schedule_set(reed_live *lv, int first, const float *w_diff,
                       const float *w_align, int n);
void live_schedule_set_strided(reed_live *lv, int first, int stride, const float *w_diff,
                               const float *w_align, int n);
void live_applied_set(reed_live *lv, int ticket, int step);
void live_completions_set(reed_live *lv, const char *names);

#endif
