/* Internal to session.c and lua_api.c: the session object and the glue
 * between the REPL's Lua API (lua_api.c) and the session loop (session.c). */
#ifndef REED_LUA_API_H
#define REED_LUA_API_H

#include <stdio.h>

#include <lua.h>

#include "live.h"
#include "lua_sandbox.h"
#include "reed.h"
#include "session.h"

/* One step's metrics as the session keeps them (for metrics() and hooks). */
typedef struct session_row {
    int step, phase;
    double loss, loss_denoise, w_diff, w_align, proj_coeff, grad_norm, lr, imgs_per_s;
    double sim[REED_MAX_SOURCES], loss_src[REED_MAX_SOURCES];
    int fd_n;                     /* > 0 on steps with an evaluation (eval.every) */
    double fd, cond_acc;
} session_row;

typedef struct session_hook {
    int id, every, ref;           /* ref: the function in the registry */
} session_hook;

struct reed_session {
    reed_sandbox sb;     /* first member: the state's extra space points at sb, hence at us */
    lua_State *L;
    reed_run *run;
    reed_live *live;
    int own_live;
    FILE *cmdlog;        /* commands.log, or NULL */

    int paused, quit;
    int budget;          /* steps left of step(n); 0: none pending */
    int depth;           /* nested session_call()s */
    int interrupted;     /* the running call was interrupted: raise on every instruction */
    int was_interrupted; /* the last top-level call was */
    long instr_budget;   /* hook calls allowed per top-level call; < 0: unlimited */
    long instr_left;
    int replaying;       /* reed_replay: REPL sample{}/save() write nothing */
    int dirty;           /* the schedule ahead may have changed */

    char *out;           /* what print/auto-print wrote since the last flush */
    size_t out_len, out_cap;

    session_row *rows;   /* this session's steps */
    size_t n_rows, cap_rows;

    session_hook *hooks;
    int n_hooks, cap_hooks, next_hook_id;

    int schedule_ref;    /* curriculum(fn): the function, or LUA_NOREF */
    char phase_buf[32];
    int n_samples;       /* REPL sample{} calls (file names) */
    double its;          /* smoothed steps per second */
    double fd;           /* the latest evaluation's Fréchet distance (eval.every) */
    int has_fd;
};

static inline reed_session *session_of(lua_State *L) {
    return (reed_session *)*(reed_sandbox **)lua_getextraspace(L);
}

/* --- lua_api.c ------------------------------------------------------------------- */
/* [] -> []: registers the API (globals and the `reed` table); protected. */
int api_open(lua_State *L);
/* Back to the normal interrupt-checking count hook. */
void api_hook_reset(reed_session *s);
/* Runs the on_step hooks due after this step (steps done = s's run). */
void api_run_hooks(reed_session *s);
/* [f, show] -> []: calls f(); when show is true, prints its results with
 * short summaries (the REPL's auto-print). Run it through session_call. */
int api_call_and_print(lua_State *L);

/* --- session.c, for the API ----------------------------------------------------- */
/* [f, args...] -> [results...] or [message with traceback]: lua_pcall with a
 * traceback handler, counting depth, resetting interrupts at the outermost. */
int session_call(reed_session *s, int nargs, int nresults);
void session_emit(reed_session *s, const char *text, size_t len);
void session_emitf(reed_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Applies a whole new config to the run (reed_run_reconfigure). */
int session_reconfigure(reed_session *s, const reed_config *cfg, reed_error *err);
/* Draws a grid, writes it to png_path and publishes the preview. */
int session_sample(reed_session *s, const reed_sample_config *sc, const char *png_path,
                   reed_error *err);
void session_set_paused(reed_session *s, int paused, const char *why);

#endif
