/* The engine thread's session: the Lua state shared by the REPL, hooks and
 * Lua curricula; the loop that applies the UI's commands at step boundaries
 * and steps the run; publishing to the live state; commands.log and replay.
 *
 * commands.log, one record per line (appended, flushed after each record):
 *
 *   # ...                      a comment (the header explains the format)
 *   #config<TAB>TEXT           the resolved config the run started from
 *                              (written when a session starts at step 0)
 *   STEP<TAB>CHUNK             a REPL chunk that ran when STEP steps were
 *                              done, i.e. before update STEP (0-based, as in
 *                              metrics.jsonl)
 *   STEP<TAB>interrupted<TAB>CHUNK   the same, for a chunk that Ctrl-C stopped
 *
 * TEXT and CHUNK are escaped onto one line: backslash → \\, newline → \n,
 * CR → \r, tab → \t. Every chunk that compiled is recorded (key commands run
 * as their Lua equivalents: pause(), resume(), sample{}, save(), quit()),
 * reads included: a chunk may define the globals a later one uses, so
 * replaying only the state-changing ones would not be exact. */
#include "session.h"

#include "ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "formats.h"
#include "lua/lua_api.h"
#include "lua/lua_config.h"

enum {
    PREVIEW_POINTS = 2000,      /* at most this many points of the schedule ahead */
    IDLE_WAIT_MS = 100,         /* live_pop's wait while paused */
    CONFIG_TEXT_CAP = 1 << 16,
};

/* Replay: Lua calls get an instruction budget (in hook calls of 1000
 * instructions) so a chunk that was interrupted in the original run, or a
 * runaway hook, stops instead of hanging the replay. */
static const long REPLAY_BUDGET = 100000;          /* 1e8 instructions */
static const long REPLAY_INTERRUPTED_BUDGET = 1000; /* 1e6 instructions */

/* --- output: print and auto-print ------------------------------------------------------- */

void session_emit(reed_session *s, const char *text, size_t len) {
    if (s->out_len + len + 1 > s->out_cap) {
        size_t cap = 2 * (s->out_len + len + 1) + 256;
        char *p = realloc(s->out, cap);
        if (!p) return;
        s->out = p;
        s->out_cap = cap;
    }
    memcpy(s->out + s->out_len, text, len);
    s->out_len += len;
    s->out[s->out_len] = '\0';
}

void session_emitf(reed_session *s, const char *fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) session_emit(s, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* Sends the collected output to the log pane, one line per live_log. */
static void flush_output(reed_session *s) {
    const char *p = s->out;
    size_t left = s->out_len;
    while (left > 0) {
        const char *nl = memchr(p, '\n', left);
        size_t n = nl ? (size_t)(nl - p) : left;
        live_log(s->live, "%.*s", (int)n, p);
        p += n + (nl != NULL);
        left -= n + (nl != NULL);
    }
    s->out_len = 0;
    if (s->out) s->out[0] = '\0';
}

static void run_log_to_live(void *ud, const char *msg) {
    reed_session *s = ud;
    live_log(s->live, "%s", msg);
}

/* --- protected calls ---------------------------------------------------------------------- */

/* [msg] -> [msg + traceback] (lua.c's msghandler). */
static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int session_call(reed_session *s, int nargs, int nresults) {
    lua_State *L = s->L;
    int base = lua_gettop(L) - nargs;                 /* [f, args...] */
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);                              /* [h, f, args...] */
    if (s->depth++ == 0) {
        s->interrupted = 0;
        s->instr_left = s->instr_budget;
    }
    int status = lua_pcall(L, nargs, nresults, base); /* [h, results...] or [h, msg] */
    if (--s->depth == 0) {
        s->was_interrupted = s->interrupted;
        s->interrupted = 0;
        api_hook_reset(s);
    }
    lua_remove(L, base);
    return status;
}

/* --- publishing ------------------------------------------------------------------------------- */

static size_t resident_bytes(void) {
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

static int last_phase(const reed_session *s) {
    return s->n_rows ? s->rows[s->n_rows - 1].phase : 0;
}

static void publish_status(reed_session *s, int running_command) {
    live_status st;
    memset(&st, 0, sizeof st);
    const reed_config *c = reed_run_config(s->run);
    const char *names[8];
    snprintf(st.run_name, sizeof st.run_name, "%s", c->name);
    snprintf(st.backend, sizeof st.backend, "%s", reed_run_device(s->run));
    st.step = reed_run_steps_done(s->run);
    st.total_steps = reed_run_total_steps(s->run);
    st.n_phases = reed_run_phase_names(s->run, names, 8);
    if (st.n_phases > 8) st.n_phases = 8;
    for (int i = 0; i < st.n_phases; i++)
        snprintf(st.phase_names[i], sizeof st.phase_names[i], "%s", names[i]);
    st.phase = last_phase(s);
    if (st.phase < st.n_phases) snprintf(st.phase_name, sizeof st.phase_name, "%s", names[st.phase]);
    st.paused = s->paused;
    st.running_command = running_command;
    st.its_per_s = s->its;
    st.active_seconds = reed_run_active_seconds(s->run);
    st.eta_seconds = s->its > 0 ? (st.total_steps - st.step) / s->its : -1;
    st.memory_bytes = resident_bytes();
    st.device_bytes = reed_run_device_memory(s->run);
    st.fd = s->has_fd ? s->fd : -1;
    st.n_sources = c->n_sources;
    for (int k = 0; k < c->n_sources; k++)
        snprintf(st.source_names[k], sizeof st.source_names[k], "%s", c->sources[k].name);
    live_status_set(s->live, &st);
}

/* The plan for the steps ahead (at most PREVIEW_POINTS evenly spaced). */
static void refresh_schedule(reed_session *s) {
    int first = reed_run_steps_done(s->run), ahead = reed_run_total_steps(s->run) - first;
    s->dirty = 0;
    if (ahead <= 0) {
        live_schedule_set(s->live, first, NULL, NULL, 0);
        return;
    }
    int stride = (ahead + PREVIEW_POINTS - 1) / PREVIEW_POINTS, n = (ahead + stride - 1) / stride;
    float *wd = malloc((size_t)n * sizeof *wd), *wa = malloc((size_t)n * sizeof *wa);
    int got = 0, phase;
    reed_error err = {{0}};
    while (wd && wa && got < n) {
        if (reed_run_weights_at(s->run, first + got * stride, &wd[got], &wa[got], &phase, &err)) {
            session_emitf(s, "schedule preview stops at step %d: %s\n", first + got * stride,
                          err.msg);
            break;
        }
        got++;
    }
    live_schedule_set_strided(s->live, first, stride, wd, wa, got);
    free(wd);
    free(wa);
}

/* Adds s to the list (a growable array of malloc'd strings). */
typedef struct name_list {
    char **items;
    size_t n, cap;
} name_list;

static void names_add(name_list *l, const char *prefix, const char *name) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 128;
        char **p = realloc(l->items, cap * sizeof *p);
        if (!p) return;
        l->items = p;
        l->cap = cap;
    }
    char *item = NULL;
    if (asprintf(&item, "%s%s", prefix, name) >= 0) l->items[l->n++] = item;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Global names, the fields of global tables ("math.floor") and the keys
 * set{} accepts. */
static void collect_names(reed_session *s, name_list *l) {
    lua_State *L = s->L;
    lua_pushglobaltable(L);                           /* [_G] */
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) { /* [_G, k, v] */
        if (lua_type(L, -2) != LUA_TSTRING) continue;
        const char *k = lua_tostring(L, -2);
        names_add(l, "", k);
        if (!lua_istable(L, -1) || strcmp(k, "_G") == 0) continue;
        char prefix[128];
        snprintf(prefix, sizeof prefix, "%s.", k);
        for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) /* [_G, k, v, k2, v2] */
            if (lua_type(L, -2) == LUA_TSTRING) names_add(l, prefix, lua_tostring(L, -2));
    }
    lua_pop(L, 1);                                    /* [] */
    static const char *const keys[] = {
        "proj_coeff", "warmup", "lr", "ema_decay", "weight_decay", "grad_clip", "steps",
        "curriculum.proj_coeff", "curriculum.diffusion_start", "curriculum.diffusion_warmup",
        "curriculum.diffusion_decay", "curriculum.align_decay", "curriculum.align_steps",
        "train.steps", "train.lr", "train.betas", "train.eps", "train.weight_decay",
        "train.grad_clip", "train.ema_decay", "train.log_every", "train.sample_every",
        "train.ckpt_every", "train.keep_ckpts", "sample.n", "sample.steps", "sample.sampler",
        "sample.cfg", "sample.cfg_interval", "sample.seed", "sample.ema", "sample.class",
        "model.class_dropout", NULL};
    for (int i = 0; keys[i]; i++) names_add(l, "", keys[i]);
    const reed_config *c = reed_run_config(s->run);
    for (int k = 0; k < c->n_sources; k++) {
        char prefix[REED_NAME_LEN + 16];
        snprintf(prefix, sizeof prefix, "sources.%s.", c->sources[k].name);
        names_add(l, prefix, "coeff");
        names_add(l, prefix, "weighting");
        names_add(l, prefix, "cutoff");
    }
}

static void refresh_completions(reed_session *s) {
    name_list l = {0};
    collect_names(s, &l);
    qsort(l.items, l.n, sizeof *l.items, compare_names);
    size_t len = 0;
    for (size_t i = 0; i < l.n; i++) len += strlen(l.items[i]) + 1;
    char *text = malloc(len + 1), *p = text;
    for (size_t i = 0; text && i < l.n; i++) {
        if (i > 0 && strcmp(l.items[i], l.items[i - 1]) == 0) continue; /* duplicates */
        p += sprintf(p, "%s\n", l.items[i]);
    }
    if (text) {
        *p = '\0';
        live_completions_set(s->live, text);
    }
    for (size_t i = 0; i < l.n; i++) free(l.items[i]);
    free(l.items);
    free(text);
}

/* After a command or a step that may have changed things. */
static void publish_after_change(reed_session *s) {
    if (s->dirty) refresh_schedule(s);
    flush_output(s);
    publish_status(s, 0);
}

/* --- commands.log ---------------------------------------------------------------------------- */

static void put_escaped(FILE *f, const char *text) {
    for (const char *p = text; *p; p++) {
        switch (*p) {
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default: fputc(*p, f);
        }
    }
}

/* In place: the inverse of put_escaped. */
static void unescape(char *s) {
    char *o = s;
    for (const char *p = s; *p; p++) {
        if (*p != '\\' || !p[1]) {
            *o++ = *p;
            continue;
        }
        p++;
        *o++ = *p == 'n' ? '\n' : *p == 'r' ? '\r' : *p == 't' ? '\t' : *p;
    }
    *o = '\0';
}

static void log_chunk(reed_session *s, int step, const char *chunk, int interrupted) {
    if (!s->cmdlog) return;
    fprintf(s->cmdlog, "%d\t%s", step, interrupted ? "interrupted\t" : "");
    put_escaped(s->cmdlog, chunk);
    fputc('\n', s->cmdlog);
    fflush(s->cmdlog);
}

/* Opens the log for appending; a new log of a run at step 0 gets the header
 * and the config the run starts from. */
static int cmdlog_open(reed_session *s, const char *path, reed_error *err) {
    s->cmdlog = fopen(path, "a");
    if (!s->cmdlog) return reed_errorf(err, "%s: cannot open for appending", path);
    if (ftell(s->cmdlog) != 0 || reed_run_steps_done(s->run) != 0) return 0;
    char *text = malloc(CONFIG_TEXT_CAP);
    if (!text || reed_config_to_lua(reed_run_config(s->run), text, CONFIG_TEXT_CAP) < 0) {
        free(text);
        return reed_errorf(err, "%s: cannot serialise the config", path);
    }
    fputs("# reed commands.log: STEP<TAB>CHUNK per REPL chunk run when STEP steps were done\n"
          "# (STEP<TAB>interrupted<TAB>CHUNK if Ctrl-C stopped it); #config: the starting\n"
          "# config. Escapes: \\\\ \\n \\r \\t. `reed replay RUN_DIR` reruns the run.\n"
          "#config\t", s->cmdlog);
    put_escaped(s->cmdlog, text);
    fputc('\n', s->cmdlog);
    fflush(s->cmdlog);
    free(text);
    return 0;
}

/* --- REPL chunks ------------------------------------------------------------------------------- */

static int ends_with_semicolon(const char *chunk) {
    size_t n = strlen(chunk);
    while (n > 0 && strchr(" \t\r\n", chunk[n - 1])) n--;
    return n > 0 && chunk[n - 1] == ';';
}

/* [] -> [f] or [msg]: compiles `return <chunk>` (unless quiet), else the chunk. */
static int load_chunk(lua_State *L, const char *chunk, int quiet) {
    size_t n = strlen(chunk);
    if (!quiet) {
        char *ret = malloc(n + 8);
        if (ret) {
            memcpy(ret, "return ", 7);
            memcpy(ret + 7, chunk, n + 1);
            int status = luaL_loadbufferx(L, ret, n + 7, "=repl", "t");
            free(ret);
            if (status == LUA_OK) return LUA_OK;
            lua_pop(L, 1);
        }
    }
    return luaL_loadbufferx(L, chunk, n, "=repl", "t");
}

/* Compiles and runs a chunk; *compiled tells whether it got as far as running. */
static int exec_chunk(reed_session *s, const char *chunk, int *compiled) {
    lua_State *L = s->L;
    int top = lua_gettop(L), quiet = ends_with_semicolon(chunk);
    *compiled = 0;
    if (load_chunk(L, chunk, quiet) != LUA_OK) {      /* [msg] */
        session_emitf(s, "%s\n", reed_sandbox_error_message(L));
        lua_settop(L, top);
        return -1;
    }
    *compiled = 1;
    lua_pushcfunction(L, api_call_and_print);         /* [f, cp] */
    lua_insert(L, -2);                                /* [cp, f] */
    lua_pushboolean(L, !quiet);                       /* [cp, f, print?] */
    int status = session_call(s, 2, 0);               /* [] or [msg] */
    if (status != LUA_OK) session_emitf(s, "%s\n", reed_sandbox_error_message(L));
    lua_settop(L, top);
    return status == LUA_OK ? 0 : -1;
}

int reed_session_exec(reed_session *s, const char *chunk, char **output) {
    int step = reed_run_steps_done(s->run), compiled;
    publish_status(s, 1);
    s->was_interrupted = 0;
    int rc = exec_chunk(s, chunk ? chunk : "", &compiled);
    if (compiled) log_chunk(s, step, chunk, s->was_interrupted);
    refresh_completions(s);
    if (output) *output = strdup(s->out ? s->out : "");
    publish_after_change(s);
    return rc;
}

void reed_session_apply(reed_session *s, live_cmd *cmd) {
    const char *chunk = NULL;
    switch (cmd->kind) {
    case LIVE_CMD_LUA: chunk = cmd->text ? cmd->text : ""; break;
    case LIVE_CMD_TOGGLE_PAUSE: chunk = s->paused ? "resume()" : "pause()"; break;
    case LIVE_CMD_SAMPLE: chunk = "sample{}"; break;
    case LIVE_CMD_CHECKPOINT: chunk = "save()"; break;
    case LIVE_CMD_QUIT:
        chunk = "quit()";
        (void)live_interrupt_requested(s->live); /* meant for what ran before */
        break;
    case LIVE_CMD_INTERRUPT: chunk = s->paused ? NULL : "pause()"; break;
    }
    int step = reed_run_steps_done(s->run);
    if (chunk) reed_session_exec(s, chunk, NULL);
    live_applied_set(s->live, cmd->ticket, step);
    free(cmd->text);
    cmd->text = NULL;
}

/* --- steps ------------------------------------------------------------------------------------- */

void session_set_paused(reed_session *s, int paused, const char *why) {
    if (paused) s->budget = 0;
    if (paused && !s->paused && why)
        session_emitf(s, "paused at step %d (%s)\n", reed_run_steps_done(s->run), why);
    s->paused = paused;
}

static void record_step(reed_session *s, const reed_metrics *m) {
    if (s->n_rows == s->cap_rows) {
        size_t cap = s->cap_rows ? 2 * s->cap_rows : 1024;
        session_row *r = realloc(s->rows, cap * sizeof *r);
        if (r) s->rows = r, s->cap_rows = cap;
    }
    session_row row = {m->step, m->phase_index, m->loss, m->loss_denoise, m->w_diff,
                       m->w_align, m->proj_coeff, m->grad_norm, m->lr, m->imgs_per_s,
                       {0}, {0}, m->fd_n, m->fd, m->cond_acc};
    live_point p = {m->step, m->phase_index, (float)m->loss, (float)m->loss_denoise,
                    (float)m->w_diff, (float)m->w_align, (float)m->grad_norm, (float)m->lr,
                    (float)m->imgs_per_s, {0}, {0}};
    for (int k = 0; k < m->n_sources; k++) {
        row.sim[k] = m->sim[k];
        row.loss_src[k] = m->loss_src[k];
        p.sim[k] = (float)m->sim[k];
        p.loss_src[k] = (float)m->loss_src[k];
    }
    if (s->n_rows < s->cap_rows) s->rows[s->n_rows++] = row;
    live_history_push(s->live, &p);
    double rate = m->step_seconds > 0 ? 1.0 / m->step_seconds : 0;
    s->its = s->its > 0 ? 0.9 * s->its + 0.1 * rate : rate;
    if (m->fd_n > 0) s->fd = m->fd, s->has_fd = 1;
}

/* After a step: samples every train.sample_every steps, checkpoints every
 * train.ckpt_every, both at the last step (as the headless CLI). */
static void periodic_outputs(reed_session *s) {
    const reed_train_config *tc = &reed_run_config(s->run)->train;
    int done = reed_run_steps_done(s->run), last = done == tc->steps;
    reed_error err = {{0}};
    char path[REED_PATH_LEN + 64];
    if ((tc->sample_every > 0 && done % tc->sample_every == 0) || last) {
        snprintf(path, sizeof path, "%s/samples/step_%08d.png", reed_run_dir(s->run), done);
        if (session_sample(s, &reed_run_config(s->run)->sample, path, &err))
            session_emitf(s, "samples: %s\n", err.msg);
        else session_emitf(s, "samples: %s\n", path);
    }
    if ((tc->ckpt_every > 0 && done % tc->ckpt_every == 0) || last) {
        if (reed_run_save(s->run, NULL, path, &err)) session_emitf(s, "checkpoint: %s\n", err.msg);
        else session_emitf(s, "checkpoint: %s\n", path);
    }
}

int reed_session_step(reed_session *s) {
    reed_metrics m;
    reed_error err = {{0}};
    if (reed_run_step(s->run, &m, &err)) {
        session_set_paused(s, 1, NULL);
        session_emitf(s, "paused: %s\n", err.msg);
        publish_after_change(s);
        return -1;
    }
    record_step(s, &m);
    if (s->budget > 0 && --s->budget == 0) session_set_paused(s, 1, "step(n) done");
    api_run_hooks(s);
    periodic_outputs(s);
    int done = reed_run_steps_done(s->run), total = reed_run_total_steps(s->run);
    if (done >= total && !s->paused)
        session_set_paused(s, 1, "the run is complete; set{steps=N} and resume() to go on");
    publish_after_change(s);
    return 0;
}

int reed_session_paused(const reed_session *s) { return s->paused; }
int reed_session_quit_requested(const reed_session *s) { return s->quit; }

int session_sample(reed_session *s, const reed_sample_config *sc, const char *png_path,
                   reed_error *err) {
    reed_grid g = {0, 0, 0, NULL};
    if (reed_run_sample(s->run, sc, png_path, &g, err)) return -1;
    live_preview pv;
    memset(&pv, 0, sizeof pv);
    pv.width = g.width;
    pv.height = g.height;
    pv.channels = g.channels;
    pv.pixels = g.pixels;
    pv.step = reed_run_steps_done(s->run);
    pv.steps = sc->steps;
    pv.n = sc->n;
    snprintf(pv.sampler, sizeof pv.sampler, "%s", reed_sampler_names[sc->sampler]);
    pv.cfg = sc->cfg;
    pv.seed = sc->seed;
    pv.ema = sc->ema;
    snprintf(pv.png_path, sizeof pv.png_path, "%s", png_path ? png_path : "");
    live_preview_set(s->live, &pv);
    free(g.pixels);
    return 0;
}

int session_reconfigure(reed_session *s, const reed_config *cfg, reed_error *err) {
    char *text = malloc(CONFIG_TEXT_CAP);
    if (!text) return reed_errorf(err, "out of memory");
    int rc = reed_config_to_lua(cfg, text, CONFIG_TEXT_CAP) < 0
                 ? reed_errorf(err, "the config is too large to serialise")
                 : reed_run_reconfigure(s->run, cfg, text, err);
    free(text);
    if (rc == 0) s->dirty = 1;
    return rc;
}

/* --- the loop ---------------------------------------------------------------------------------- */

static int can_step(const reed_session *s) {
    return !s->paused && reed_run_steps_done(s->run) < reed_run_total_steps(s->run);
}

static int save_on_quit(reed_session *s) {
    char written[REED_PATH_LEN];
    reed_error err = {{0}};
    int rc = reed_run_save(s->run, NULL, written, &err);
    if (rc) session_emitf(s, "quit: checkpoint failed: %s\n", err.msg);
    else session_emitf(s, "checkpoint: %s\n", written);
    flush_output(s);
    publish_status(s, 0);
    return rc;
}

int reed_session_run(reed_session *s) {
    live_cmd cmd;
    /* OpenMP's thread count is per thread: set it on this (engine) thread */
    reed_cpu_set_threads(reed_run_config(s->run)->train.threads);
    refresh_schedule(s);
    refresh_completions(s);
    publish_after_change(s);
    while (!s->quit) {
        /* Ctrl-C with no chunk running pauses (a running chunk took the
         * flag). With a chunk still queued the flag is left for it: Ctrl-C
         * pressed just after Enter means that chunk. */
        if (!live_queued(s->live) && live_interrupt_requested(s->live) && !s->paused)
            reed_session_exec(s, "pause()", NULL);
        if (!s->paused && !can_step(s)) {
            session_set_paused(s, 1, "no steps left");
            publish_after_change(s);
        }
        if (can_step(s)) {
            while (!s->quit && live_pop(s->live, &cmd, 0)) reed_session_apply(s, &cmd);
            if (!s->quit && can_step(s)) reed_session_step(s);
        } else if (live_pop(s->live, &cmd, IDLE_WAIT_MS)) {
            reed_session_apply(s, &cmd);
        }
    }
    return save_on_quit(s);
}

/* --- lifetime ------------------------------------------------------------------------------------- */

int reed_session_new(reed_session **out, reed_run *run, reed_live *live,
                     const char *commands_log, reed_error *err) {
    *out = NULL;
    reed_session *s = calloc(1, sizeof *s);
    if (!s) return reed_errorf(err, "out of memory");
    s->run = run;
    s->live = live ? live : live_new();
    s->own_live = live == NULL;
    s->schedule_ref = LUA_NOREF;
    s->instr_budget = -1;
    s->next_hook_id = 1;
    if (!s->live) {
        free(s);
        return reed_errorf(err, "cannot create the live state");
    }
    s->L = reed_sandbox_new(&s->sb, err);
    int rc = s->L ? 0 : -1;
    if (rc == 0) {
        lua_pushcfunction(s->L, api_open);
        if (lua_pcall(s->L, 0, 0, 0) != LUA_OK)
            rc = reed_errorf(err, "cannot open the Lua API: %s", lua_tostring(s->L, -1));
    }
    if (rc == 0) api_hook_reset(s);
    if (rc == 0 && commands_log) rc = cmdlog_open(s, commands_log, err);
    if (rc) {
        reed_session_free(s);
        return -1;
    }
    reed_run_set_log(run, run_log_to_live, s);
    s->paused = reed_run_steps_done(run) >= reed_run_total_steps(run);
    *out = s;
    return 0;
}

void reed_session_free(reed_session *s) {
    if (!s) return;
    if (s->schedule_ref != LUA_NOREF) reed_run_set_schedule(s->run, NULL, NULL);
    reed_run_set_log(s->run, NULL, NULL);
    if (s->L) reed_sandbox_close(s->L);
    if (s->cmdlog) fclose(s->cmdlog);
    free(s->out);
    free(s->rows);
    free(s->hooks);
    if (s->own_live) live_free(s->live);
    free(s);
}

int reed_lua_chunk_incomplete(const char *chunk) {
    lua_State *L = luaL_newstate();
    if (!L) return 0;
    size_t len = 0;
    int incomplete = 0;
    if (luaL_loadbufferx(L, chunk, strlen(chunk), "=repl", "t") == LUA_ERRSYNTAX) {
        const char *msg = lua_tolstring(L, -1, &len);
        incomplete = msg && len >= 5 && strcmp(msg + len - 5, "<eof>") == 0;
    }
    lua_close(L);
    return incomplete;
}

/* --- replay ------------------------------------------------------------------------------------------ */

typedef struct logged_chunk {
    int step, interrupted;
    char *chunk;                  /* points into the log's text */
} logged_chunk;

typedef struct command_log {
    char *text;                   /* the file, cut into lines in place */
    char *config;                 /* the first #config record, or NULL */
    logged_chunk *chunks;
    int n;
} command_log;

/* Parses one record line (in place); 0 if it is not a chunk record. */
static int parse_record(command_log *cl, char *line) {
    if (strncmp(line, "#config\t", 8) == 0) {
        if (!cl->config) unescape(cl->config = line + 8);
        return 0;
    }
    char *tab = strchr(line, '\t'), *end;
    if (line[0] == '#' || !tab) return 0;
    long step = strtol(line, &end, 10);
    if (end != tab || step < 0) return 0;
    logged_chunk *c = &cl->chunks[cl->n++];
    c->step = (int)step;
    c->chunk = tab + 1;
    c->interrupted = strncmp(c->chunk, "interrupted\t", 12) == 0;
    if (c->interrupted) c->chunk += 12;
    unescape(c->chunk);
    return 1;
}

static int read_command_log(const char *path, command_log *cl, reed_error *err) {
    size_t len, lines = 1;
    memset(cl, 0, sizeof *cl);
    if (access(path, F_OK) != 0) return 0; /* no commands: a plain rerun */
    if (read_file_all(path, (uint8_t **)&cl->text, &len, err)) return -1;
    char *t = realloc(cl->text, len + 1);
    if (!t) return reed_errorf(err, "out of memory");
    cl->text = t;
    t[len] = '\0';
    for (size_t i = 0; i < len; i++) lines += t[i] == '\n';
    cl->chunks = calloc(lines, sizeof *cl->chunks);
    if (!cl->chunks) return reed_errorf(err, "out of memory");
    for (char *line = t, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        parse_record(cl, line);
    }
    for (int i = 1; i < cl->n; i++)
        if (cl->chunks[i].step < cl->chunks[i - 1].step)
            return reed_errorf(err, "%s: the record of step %d comes after step %d", path,
                               cl->chunks[i].step, cl->chunks[i - 1].step);
    return 0;
}

/* The number of steps the original run did: its last metrics line + 1. */
static int final_step(const char *run_dir, int *final, reed_error *err) {
    char path[REED_PATH_LEN + 32], line[8192];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    FILE *f = fopen(path, "r");
    if (!f) return reed_errorf(err, "%s: cannot open", path);
    *final = 0;
    for (int step; fgets(line, sizeof line, f);)
        if (sscanf(line, "{\"step\":%d", &step) == 1 && step + 1 > *final) *final = step + 1;
    fclose(f);
    return 0;
}

/* Opens the run to replay into from the starting config. */
static int open_replay_run(const char *run_dir, const command_log *cl, const char *out_dir,
                           reed_run **run, reed_error *err) {
    char path[REED_PATH_LEN + 32];
    char *file_text = NULL, *text = malloc(CONFIG_TEXT_CAP);
    reed_config *cfg = malloc(sizeof *cfg);
    size_t len;
    int rc = text && cfg ? 0 : reed_errorf(err, "out of memory");
    snprintf(path, sizeof path, "%s/config.lua", run_dir);
    if (rc == 0 && !cl->config) {
        rc = read_file_all(path, (uint8_t **)&file_text, &len, err);
        char *t = rc == 0 ? realloc(file_text, len + 1) : NULL;
        if (t) file_text = t, t[len] = '\0';
        else if (rc == 0) rc = reed_errorf(err, "out of memory");
    }
    if (rc == 0)
        rc = reed_config_load_string(cfg, cl->config ? cl->config : file_text, path, err);
    if (rc == 0 && reed_config_to_lua(cfg, text, CONFIG_TEXT_CAP) < 0)
        rc = reed_errorf(err, "the config is too large to serialise");
    if (rc == 0) rc = reed_run_open(run, cfg, text, out_dir, err);
    free(file_text);
    free(text);
    free(cfg);
    return rc;
}

/* Steps the replay session to `final`, running each chunk before its step. */
static int replay_steps(reed_session *s, const command_log *cl, int final, reed_error *err) {
    for (int i = 0;;) {
        int done = reed_run_steps_done(s->run);
        for (; i < cl->n && cl->chunks[i].step <= done; i++) {
            if (cl->chunks[i].step < done)
                return reed_errorf(err, "replay: a chunk of step %d was not reached "
                                   "(the run is at step %d)", cl->chunks[i].step, done);
            s->instr_budget = cl->chunks[i].interrupted ? REPLAY_INTERRUPTED_BUDGET : REPLAY_BUDGET;
            reed_session_exec(s, cl->chunks[i].chunk, NULL);
            s->instr_budget = REPLAY_BUDGET;
        }
        if (done >= final) return 0;
        if (reed_session_step(s))
            return reed_errorf(err, "replay: step %d failed where the original run went on", done);
    }
}

int reed_replay(const char *run_dir, const char *out_dir, reed_error *err) {
    char path[REED_PATH_LEN + 32];
    command_log cl;
    reed_run *run = NULL;
    reed_session *s = NULL;
    int final = 0;
    snprintf(path, sizeof path, "%s/commands.log", run_dir);
    int rc = read_command_log(path, &cl, err);
    if (rc == 0) rc = final_step(run_dir, &final, err);
    if (rc == 0) rc = open_replay_run(run_dir, &cl, out_dir, &run, err);
    snprintf(path, sizeof path, "%s/commands.log", out_dir);
    if (rc == 0) rc = reed_session_new(&s, run, NULL, path, err);
    if (rc == 0) {
        s->replaying = 1;
        s->instr_budget = REPLAY_BUDGET;
        rc = replay_steps(s, &cl, final, err);
    }
    reed_session_free(s);
    reed_run_close(run);
    free(cl.text);
    free(cl.chunks);
    return rc;
}
