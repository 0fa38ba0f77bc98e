/* The REPL's Lua API over a live run (README "REPL"): pause, resume, step,
 * status, quit, set, curriculum, sample, save, metrics, on_step, print and
 * help, as globals and in the `reed` table. Everything runs on the engine
 * thread between steps; changes apply from the next step.
 *
 * Interrupts: a count hook checks the live interrupt flag every HOOK_EVERY
 * instructions; once set it raises "interrupted" and keeps firing on every
 * instruction until the outermost call returns, so a pcall in the script
 * cannot swallow it (redis' luaMaskCountHook). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "lua/lua_api.h"
#include "lua/lua_config.h"
#include "lua/lua_config_fields.h"

enum {
    HOOK_EVERY = 1000,   /* instructions between interrupt checks */
    SUMMARY_CAP = 480,   /* auto-print: characters per value */
    SUMMARY_ITEMS = 10,  /* table entries shown at the top level */
    NESTED_ITEMS = 4,    /* ... and inside a nested table */
    SORT_KEYS = 64,      /* string keys sorted for display */
    VALUE_CAP = 2048,    /* set{}: one "key=value" */
};

/* --- interrupts ---------------------------------------------------------------------------- */

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    reed_session *s = session_of(L);
    if (!s->interrupted) {
        int out_of_budget = s->instr_left >= 0 && --s->instr_left < 0;
        if (!out_of_budget && !live_interrupt_requested(s->live)) return;
        s->interrupted = 1;
        lua_sethook(L, interrupt_hook, LUA_MASKCOUNT, 1);
    }
    luaL_error(L, "interrupted");
}

void api_hook_reset(reed_session *s) { lua_sethook(s->L, interrupt_hook, LUA_MASKCOUNT, HOOK_EVERY); }

/* --- output and summaries --------------------------------------------------------------------- */

typedef struct sbuf {
    char text[SUMMARY_CAP + 8];
    size_t len;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->len >= SUMMARY_CAP) return;
    if (n > SUMMARY_CAP - b->len) {
        n = SUMMARY_CAP - b->len;
        memcpy(b->text + b->len, s, n);
        b->len = SUMMARY_CAP;
        memcpy(b->text + b->len, "...", 4);
        b->len += 3;
        return;
    }
    memcpy(b->text + b->len, s, n);
    b->len += n;
    b->text[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_number(sbuf *b, lua_State *L, int idx) {
    char num[64];
    if (lua_isinteger(L, idx)) snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, idx));
    else snprintf(num, sizeof num, "%.6g", (double)lua_tonumber(L, idx));
    sb_puts(b, num);
}

static void put_value(lua_State *L, int idx, sbuf *b, int depth);

static int compare_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int is_name(const char *s) {
    if (!*s || (*s >= '0' && *s <= '9')) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return 0;
    return 1;
}

/* {1, 2, k=v, ...}: the sequence, then string keys sorted (the first
 * SORT_KEYS of them), then a count of what was left out. */
static void put_table(lua_State *L, int t, sbuf *b, int depth) {
    if (depth >= 2) return sb_puts(b, "{...}");
    int max = depth == 0 ? SUMMARY_ITEMS : NESTED_ITEMS, shown = 0, others = 0, nk = 0;
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    const char *keys[SORT_KEYS];
    sb_puts(b, "{");
    for (lua_Integer i = 1; i <= n && shown < max; i++, shown++) {
        if (shown) sb_puts(b, ", ");
        lua_rawgeti(L, t, i);
        put_value(L, -1, b, depth + 1);
        lua_pop(L, 1);
    }
    for (lua_pushnil(L); lua_next(L, t); lua_pop(L, 1)) {
        if (lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 && lua_tointeger(L, -2) <= n) continue;
        if (lua_type(L, -2) == LUA_TSTRING && nk < SORT_KEYS) keys[nk++] = lua_tostring(L, -2);
        else others++;
    }
    qsort(keys, nk, sizeof *keys, compare_cstr);
    for (int i = 0; i < nk && shown < max; i++, shown++) {
        if (shown) sb_puts(b, ", ");
        if (is_name(keys[i])) sb_puts(b, keys[i]);
        else sb_puts(b, "[\""), sb_puts(b, keys[i]), sb_puts(b, "\"]");
        sb_puts(b, "=");
        lua_pushstring(L, keys[i]);
        lua_rawget(L, t);
        put_value(L, -1, b, depth + 1);
        lua_pop(L, 1);
    }
    long long left = (long long)n + nk + others - shown;
    if (left > 0) {
        char more[48];
        snprintf(more, sizeof more, "%s... %lld more", shown ? ", " : "", left);
        sb_puts(b, more);
    }
    sb_puts(b, "}");
}

/* One value: numbers with %.6g, strings raw at the top and quoted inside
 * tables, tables summarised (unless they have __tostring). */
static void put_value(lua_State *L, int idx, sbuf *b, int depth) {
    idx = lua_absindex(L, idx);
    int type = lua_type(L, idx);
    if (type == LUA_TNUMBER) return sb_number(b, L, idx);
    if (type == LUA_TSTRING && depth > 0) {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        sb_puts(b, "\"");
        sb_put(b, s, n > 40 ? 40 : n);
        sb_puts(b, n > 40 ? "...\"" : "\"");
        return;
    }
    if (type == LUA_TTABLE && !luaL_getmetafield(L, idx, "__tostring")) return put_table(L, idx, b, depth);
    if (type == LUA_TTABLE) lua_pop(L, 1);            /* the metafield */
    size_t n;
    const char *s = luaL_tolstring(L, idx, &n);       /* [.., s] */
    sb_put(b, s, n);
    lua_pop(L, 1);
}

int api_call_and_print(lua_State *L) {
    int show = lua_toboolean(L, 2);
    lua_settop(L, 1);                                 /* [f] */
    lua_call(L, 0, LUA_MULTRET);                      /* [results...] */
    int n = lua_gettop(L);
    if (!show || n == 0) return 0;
    reed_session *s = session_of(L);
    for (int i = 1; i <= n; i++) {
        sbuf b = {.len = 0};
        b.text[0] = '\0';
        put_value(L, i, &b, 0);
        if (i > 1) session_emit(s, "\t", 1);
        session_emit(s, b.text, b.len);
    }
    session_emit(s, "\n", 1);
    return 0;
}

/* print(...): like Lua's, into the REPL pane. */
static int api_print(lua_State *L) {
    reed_session *s = session_of(L);
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *str = luaL_tolstring(L, i, &len);
        if (i > 1) session_emit(s, "\t", 1);
        session_emit(s, str, len);
        lua_pop(L, 1);
    }
    session_emit(s, "\n", 1);
    return 0;
}

/* --- run control ---------------------------------------------------------------------------- */

static int steps_left(const reed_session *s) {
    return reed_run_total_steps(s->run) - reed_run_steps_done(s->run);
}

static int api_pause(lua_State *L) {
    reed_session *s = session_of(L);
    session_set_paused(s, 1, NULL);
    session_emitf(s, "paused at step %d\n", reed_run_steps_done(s->run));
    return 0;
}

static int no_steps_left(lua_State *L, const char *fn) {
    reed_session *s = session_of(L);
    return luaL_error(L, "%s: the run has done all its %d steps (extend it with set{steps=N})",
                      fn, reed_run_total_steps(s->run));
}

static int api_resume(lua_State *L) {
    reed_session *s = session_of(L);
    if (steps_left(s) <= 0) return no_steps_left(L, "resume");
    s->budget = 0;
    session_set_paused(s, 0, NULL);
    session_emitf(s, "running from step %d\n", reed_run_steps_done(s->run));
    return 0;
}

/* step([n = 1]): runs n more steps, then pauses. */
static int api_step(lua_State *L) {
    reed_session *s = session_of(L);
    lua_Integer n = luaL_optinteger(L, 1, 1);
    if (n < 1) return luaL_error(L, "step: n must be a positive integer, got %I", n);
    if (steps_left(s) <= 0) return no_steps_left(L, "step");
    if (n > steps_left(s)) n = steps_left(s);
    s->budget = (int)n;
    s->paused = 0;
    session_emitf(s, "stepping %d: pauses at step %d\n", (int)n,
                  reed_run_steps_done(s->run) + (int)n);
    return 0;
}

static int api_quit(lua_State *L) {
    reed_session *s = session_of(L);
    s->quit = 1;
    session_emitf(s, "quitting at step %d (saving a checkpoint)\n", reed_run_steps_done(s->run));
    return 0;
}

/* --- metrics rows ------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t off;
} row_columns[] = {
    {"loss", offsetof(session_row, loss)},
    {"loss_denoise", offsetof(session_row, loss_denoise)},
    {"w_diff", offsetof(session_row, w_diff)},
    {"w_align", offsetof(session_row, w_align)},
    {"proj_coeff", offsetof(session_row, proj_coeff)},
    {"grad_norm", offsetof(session_row, grad_norm)},
    {"lr", offsetof(session_row, lr)},
    {"imgs_per_s", offsetof(session_row, imgs_per_s)},
};
enum { N_COLUMNS = sizeof row_columns / sizeof row_columns[0] };

static double column(const session_row *r, size_t off) {
    double v;
    memcpy(&v, (const char *)r + off, sizeof v);
    return v;
}

static const char *phase_name(reed_session *s, int index) {
    const char *names[32];
    int n = reed_run_phase_names(s->run, names, 32);
    return index >= 0 && index < n && index < 32 ? names[index] : "?";
}

/* [] -> [t]: a row as {step=, phase=, loss=, ..., sim_NAME=, loss_NAME=}. */
static void push_row(lua_State *L, reed_session *s, const session_row *r) {
    const reed_config *c = reed_run_config(s->run);
    lua_createtable(L, 0, N_COLUMNS + 2 + 2 * c->n_sources);
    lua_pushinteger(L, r->step);
    lua_setfield(L, -2, "step");
    lua_pushstring(L, phase_name(s, r->phase));
    lua_setfield(L, -2, "phase");
    for (int i = 0; i < N_COLUMNS; i++) {
        lua_pushnumber(L, column(r, row_columns[i].off));
        lua_setfield(L, -2, row_columns[i].name);
    }
    for (int k = 0; k < c->n_sources; k++) {
        char key[REED_NAME_LEN + 8];
        snprintf(key, sizeof key, "sim_%s", c->sources[k].name);
        lua_pushnumber(L, r->sim[k]);
        lua_setfield(L, -2, key);
        snprintf(key, sizeof key, "loss_%s", c->sources[k].name);
        lua_pushnumber(L, r->loss_src[k]);
        lua_setfield(L, -2, key);
    }
    if (r->fd_n > 0) { /* an evaluation after this step */
        lua_pushnumber(L, r->fd);
        lua_setfield(L, -2, "fd");
        lua_pushinteger(L, r->fd_n);
        lua_setfield(L, -2, "fd_n");
        lua_pushnumber(L, r->cond_acc);
        lua_setfield(L, -2, "cond_acc");
    }
}

/* status() -> {step, total, phase, paused, budget, loss, ..., sims = {NAME = v}}. */
static int api_status(lua_State *L) {
    reed_session *s = session_of(L);
    const reed_config *c = reed_run_config(s->run);
    if (s->n_rows) push_row(L, s, &s->rows[s->n_rows - 1]);
    else lua_newtable(L);                             /* [t] */
    lua_pushinteger(L, reed_run_steps_done(s->run));
    lua_setfield(L, -2, "step");
    lua_pushinteger(L, reed_run_total_steps(s->run));
    lua_setfield(L, -2, "total");
    lua_pushboolean(L, s->paused);
    lua_setfield(L, -2, "paused");
    lua_pushinteger(L, s->budget);
    lua_setfield(L, -2, "budget");
    lua_pushnumber(L, c->train.lr);
    lua_setfield(L, -2, "lr");
    lua_pushnumber(L, s->its);
    lua_setfield(L, -2, "its_per_s");
    lua_pushnumber(L, reed_run_active_seconds(s->run));
    lua_setfield(L, -2, "active_seconds");
    lua_pushstring(L, c->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, reed_run_dir(s->run));
    lua_setfield(L, -2, "run_dir");
    lua_createtable(L, 0, c->n_sources);              /* [t, sims] */
    for (int k = 0; s->n_rows && k < c->n_sources; k++) {
        lua_pushnumber(L, s->rows[s->n_rows - 1].sim[k]);
        lua_setfield(L, -2, c->sources[k].name);
    }
    lua_setfield(L, -2, "sims");                      /* [t] */
    return 1;
}

/* metrics(name[, last]) -> array of the last `last` values (default all). */
static int api_metrics(lua_State *L) {
    reed_session *s = session_of(L);
    const char *name = luaL_checkstring(L, 1);
    lua_Integer last = luaL_optinteger(L, 2, (lua_Integer)s->n_rows);
    if (last < 0) return luaL_error(L, "metrics: last must be >= 0, got %I", last);
    const reed_config *c = reed_run_config(s->run);
    int col = -1, src = -1, is_sim = 0;
    for (int i = 0; i < N_COLUMNS; i++)
        if (strcmp(name, row_columns[i].name) == 0) col = i;
    for (int k = 0; k < c->n_sources; k++) {
        if (strncmp(name, "sim_", 4) == 0 && strcmp(name + 4, c->sources[k].name) == 0) src = k, is_sim = 1;
        if (strncmp(name, "loss_", 5) == 0 && strcmp(name + 5, c->sources[k].name) == 0) src = k;
    }
    int is_step = strcmp(name, "step") == 0, is_phase = strcmp(name, "phase") == 0;
    int is_fd = strcmp(name, "fd") == 0, is_acc = strcmp(name, "cond_acc") == 0;
    if (col < 0 && src < 0 && !is_step && !is_phase && !is_fd && !is_acc)
        return luaL_error(L, "metrics: unknown metric '%s' (expected step, phase, loss, "
                          "loss_denoise, w_diff, w_align, proj_coeff, grad_norm, lr, "
                          "imgs_per_s, fd, cond_acc, sim_NAME or loss_NAME for a source "
                          "NAME)", name);
    size_t from = (size_t)last < s->n_rows ? s->n_rows - (size_t)last : 0;
    lua_Integer n = 0;
    lua_createtable(L, (int)(s->n_rows - from), 0);
    for (size_t i = from; i < s->n_rows; i++) {
        const session_row *r = &s->rows[i];
        if ((is_fd || is_acc) && r->fd_n <= 0) continue; /* one value per evaluation */
        if (is_step) lua_pushinteger(L, r->step);
        else if (is_phase) lua_pushstring(L, phase_name(s, r->phase));
        else if (is_fd || is_acc) lua_pushnumber(L, is_fd ? r->fd : r->cond_acc);
        else if (src >= 0) lua_pushnumber(L, is_sim ? r->sim[src] : r->loss_src[src]);
        else lua_pushnumber(L, column(r, row_columns[col].off));
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* --- set{} ------------------------------------------------------------------------------------------ */

/* A bare key names a field of the first section that has it. */
static void resolve_key(const char *k, char *out, size_t cap) {
    static const char *const sections[] = {"curriculum", "train", "sample", "model", NULL};
    if (strchr(k, '.') || reed_config_find_field(reed_config_top_fields, k)) {
        snprintf(out, cap, "%s", k);
        return;
    }
    if (strcmp(k, "warmup") == 0) {
        snprintf(out, cap, "curriculum.diffusion_warmup");
        return;
    }
    for (int i = 0; sections[i]; i++) {
        const field *sec = reed_config_find_field(reed_config_top_fields, sections[i]);
        if (sec && reed_config_find_field(sec->sub, k)) {
            snprintf(out, cap, "%s.%s", sections[i], k);
            return;
        }
    }
    snprintf(out, cap, "%s", k);
}

/* Appends a Lua literal for the scalar at idx to out; -1 for other types. */
static int put_literal(lua_State *L, int idx, char *out, size_t cap) {
    size_t len = strlen(out), n;
    int type = lua_type(L, idx);
    if (type == LUA_TNUMBER && lua_isinteger(L, idx))
        snprintf(out + len, cap - len, "%lld", (long long)lua_tointeger(L, idx));
    else if (type == LUA_TNUMBER) { /* the shortest of %.15g and %.17g that reads back exactly */
        double v = (double)lua_tonumber(L, idx);
        snprintf(out + len, cap - len, "%.15g", v);
        if (strtod(out + len, NULL) != v) snprintf(out + len, cap - len, "%.17g", v);
    }
    else if (type == LUA_TBOOLEAN) snprintf(out + len, cap - len, "%s", lua_toboolean(L, idx) ? "true" : "false");
    else if (type == LUA_TSTRING) {
        const char *s = lua_tolstring(L, idx, &n);
        char *o = out + len, *end = out + cap - 3;
        *o++ = '"';
        for (size_t i = 0; i < n && o < end; i++) {
            unsigned char ch = (unsigned char)s[i];
            if (ch == '"' || ch == '\\') *o++ = '\\', *o++ = (char)ch;
            else if (ch < 32) o += snprintf(o, (size_t)(end - o), "\\%03d", ch);
            else *o++ = (char)ch;
            if (o > end) o = end;
        }
        *o++ = '"';
        *o = '\0';
    } else return -1;
    return 0;
}

/* [.., v] -> [.., v]: "key=<literal>" for a scalar or a list of scalars. */
static void push_assignment(lua_State *L, const char *key) {
    char text[VALUE_CAP];
    int v = lua_gettop(L), bad = 0;
    snprintf(text, sizeof text, "%s=", key);
    if (lua_type(L, v) == LUA_TTABLE) {
        strcat(text, "{");
        lua_Integer n = (lua_Integer)lua_rawlen(L, v);
        for (lua_Integer i = 1; i <= n && !bad; i++) {
            if (i > 1) strcat(text, ", ");
            lua_rawgeti(L, v, i);
            bad = put_literal(L, -1, text, sizeof text - 2);
            lua_pop(L, 1);
        }
        strcat(text, "}");
    } else bad = put_literal(L, v, text, sizeof text);
    if (bad || strlen(text) >= sizeof text - 4)
        luaL_error(L, "set: %s: expected a number, string, boolean or list, got %s", key,
                   luaL_typename(L, v));
    lua_pushstring(L, text);
}

/* A table with a string key is a section ({train = {lr = ...}}), not a list. */
static int is_record(lua_State *L, int t) {
    lua_pushnil(L);
    if (!lua_next(L, t)) return 0;
    int rec = lua_type(L, -2) == LUA_TSTRING;
    lua_pop(L, 2);
    return rec;
}

/* [..] -> [..]: appends "key=value" strings for table t to the list at `list`
 * (nested tables become dotted keys). prefix "" resolves bare keys. */
static void flatten(lua_State *L, int t, int list, const char *prefix) {
    for (lua_pushnil(L); lua_next(L, t); lua_pop(L, 1)) { /* [.., k, v] */
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "set: keys must be names (got a %s key%s%s)", luaL_typename(L, -2),
                       prefix[0] ? " in " : "", prefix);
        char key[REED_PATH_LEN];
        const char *k = lua_tostring(L, -2);
        if (prefix[0]) snprintf(key, sizeof key, "%s.%s", prefix, k);
        else resolve_key(k, key, sizeof key);
        if (strlen(key) > 200) luaL_error(L, "set: key too long");
        int v = lua_gettop(L);
        if (lua_istable(L, v) && is_record(L, v)) {
            flatten(L, v, list, key);
        } else {
            push_assignment(L, key);                  /* [.., k, v, "key=value"] */
            lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
        }
    }
}

/* Applies the assignments to a copy of the run's config, in sorted order,
 * retrying failed ones while others succeed (cross-field checks such as
 * align_decay with align_steps), then reconfigures the run. */
static int apply_assignments(reed_session *s, const char **items, int n, reed_error *err) {
    if (n <= 0) return 0;
    reed_config *cfg = malloc(sizeof *cfg);
    char *done = calloc((size_t)n, 1);
    int left = n, progress = 1, rc = 0;
    if (!cfg || !done) rc = reed_errorf(err, "out of memory");
    if (rc == 0) *cfg = *reed_run_config(s->run);
    while (rc == 0 && left > 0 && progress) {
        progress = 0;
        err->msg[0] = '\0';
        for (int i = 0; i < n; i++) {
            reed_error e;
            if (done[i]) continue;
            if (reed_config_set(cfg, items[i], &e) == 0) done[i] = 1, left--, progress = 1;
            else if (!err->msg[0]) *err = e;
        }
    }
    if (rc == 0 && left > 0) rc = -1;
    if (rc == 0) rc = session_reconfigure(s, cfg, err);
    free(cfg);
    free(done);
    return rc;
}

/* "--set key: msg" (reed_config_set's wording) -> "set: key: msg". */
static const char *set_message(const reed_error *err) {
    return strncmp(err->msg, "--set ", 6) == 0 ? err->msg + 6 : err->msg;
}

/* [opts] -> []: the body of set{} and curriculum{} (prefix "curriculum"). */
static int set_from_table(lua_State *L, int t, const char *prefix, const char *fn) {
    reed_session *s = session_of(L);
    lua_newtable(L);                                  /* [.., list] */
    int list = lua_gettop(L);
    flatten(L, t, list, prefix);
    int n = (int)lua_rawlen(L, list);
    if (n == 0) return 0;
    const char **items = malloc((size_t)n * sizeof *items);
    if (!items) return luaL_error(L, "%s: out of memory", fn);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, list, i + 1);
        items[i] = lua_tostring(L, -1);               /* anchored in list */
        lua_pop(L, 1);
    }
    qsort(items, n, sizeof *items, compare_cstr);
    reed_error err = {{0}};
    int rc = apply_assignments(s, items, n, &err);
    if (rc == 0) {
        session_emitf(s, "%s from step %d:", fn, reed_run_steps_done(s->run));
        for (int i = 0; i < n; i++) session_emitf(s, " %s", items[i]);
        session_emit(s, "\n", 1);
    }
    free(items);
    if (rc) return luaL_error(L, "%s: %s", fn, set_message(&err));
    return 0;
}

/* set{key = value, ...}: validated; applies from the next step. */
static int api_set(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    return set_from_table(L, 1, "", "set");
}

/* --- curriculum(tbl | fn | nil) ------------------------------------------------------------------------ */

/* Calls the schedule function `ref`: fn(step, total) -> w_diff, w_align[, phase]. */
static int schedule_eval(reed_session *s, int ref, int step, int total, float *w_diff,
                         float *w_align, const char **phase, reed_error *err) {
    lua_State *L = s->L;
    int top = lua_gettop(L), rc = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);           /* [fn] */
    lua_pushinteger(L, step);
    lua_pushinteger(L, total);                        /* [fn, step, total] */
    if (session_call(s, 2, 3) != LUA_OK) {            /* [w_diff, w_align, phase] or [msg] */
        rc = reed_errorf(err, "curriculum function: %s", reed_sandbox_error_message(L));
    } else if (lua_type(L, top + 1) != LUA_TNUMBER || lua_type(L, top + 2) != LUA_TNUMBER) {
        rc = reed_errorf(err, "curriculum function at step %d: expected w_diff, w_align[, "
                         "phase], got %s, %s", step, luaL_typename(L, top + 1),
                         luaL_typename(L, top + 2));
    } else {
        *w_diff = (float)lua_tonumber(L, top + 1);
        *w_align = (float)lua_tonumber(L, top + 2);
        *phase = "custom";
        if (lua_type(L, top + 3) == LUA_TSTRING) {
            snprintf(s->phase_buf, sizeof s->phase_buf, "%s", lua_tostring(L, top + 3));
            *phase = s->phase_buf;
        }
    }
    lua_settop(L, top);
    return rc;
}

/* The run's reed_schedule_fn while curriculum(fn) is in force. */
static int lua_schedule(void *ud, int step, int total, float *w_diff, float *w_align,
                        const char **phase, reed_error *err) {
    reed_session *s = ud;
    return schedule_eval(s, s->schedule_ref, step, total, w_diff, w_align, phase, err);
}

static void drop_schedule(reed_session *s) {
    if (s->schedule_ref == LUA_NOREF) return;
    luaL_unref(s->L, LUA_REGISTRYINDEX, s->schedule_ref);
    s->schedule_ref = LUA_NOREF;
    reed_run_set_schedule(s->run, NULL, NULL);
    s->dirty = 1;
}

/* [fn] -> []: checks fn on the next step, then makes it the run's schedule. */
static int set_schedule_function(lua_State *L, reed_session *s) {
    int total = reed_run_total_steps(s->run), step = reed_run_steps_done(s->run);
    if (step >= total) step = total > 0 ? total - 1 : 0;
    lua_pushvalue(L, 1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    float wd, wa;
    const char *phase;
    reed_error err = {{0}};
    if (schedule_eval(s, ref, step, total, &wd, &wa, &phase, &err)) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        if (s->interrupted) return luaL_error(L, "interrupted");
        return luaL_error(L, "%s", err.msg);
    }
    drop_schedule(s);
    s->schedule_ref = ref;
    reed_run_set_schedule(s->run, lua_schedule, s);
    s->dirty = 1;
    session_emitf(s, "curriculum: a Lua function from step %d (step %d: w_diff %.4g, "
                  "w_align %.4g, %s)\n", reed_run_steps_done(s->run), step, wd, wa, phase);
    return 0;
}

static int api_curriculum(lua_State *L) {
    reed_session *s = session_of(L);
    int type = lua_type(L, 1);
    lua_settop(L, 1);
    if (type == LUA_TFUNCTION) return set_schedule_function(L, s);
    if (type == LUA_TTABLE) {
        set_from_table(L, 1, "curriculum", "curriculum");
        drop_schedule(s);
        return 0;
    }
    if (type != LUA_TNIL)
        return luaL_error(L, "curriculum: expected a table of curriculum fields, a "
                          "function(step, total) or nil, got %s", luaL_typename(L, 1));
    drop_schedule(s);
    s->dirty = 1;
    session_emitf(s, "curriculum: the config's from step %d\n", reed_run_steps_done(s->run));
    return 0;
}

/* --- sample{}, save() ------------------------------------------------------------------------------------ */

static lua_Integer int_option(lua_State *L, const char *key, lua_Integer lo, lua_Integer hi) {
    if (!lua_isinteger(L, -1))
        luaL_error(L, "sample: %s: expected an integer, got %s", key, luaL_typename(L, -1));
    lua_Integer v = lua_tointeger(L, -1);
    if (v < lo || v > hi) luaL_error(L, "sample: %s: %I is outside %I..%I", key, v, lo, hi);
    return v;
}

/* [opts] -> [opts]: reads one option (the pair on top) into sc. */
static void sample_option(lua_State *L, reed_sample_config *sc, int classes) {
    const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (strcmp(key, "n") == 0) sc->n = (int)int_option(L, key, 1, 1024);
    else if (strcmp(key, "steps") == 0) sc->steps = (int)int_option(L, key, 1, 100000);
    else if (strcmp(key, "class") == 0) sc->class_label = (int)int_option(L, key, -1, classes - 1);
    else if (strcmp(key, "seed") == 0) sc->seed = (uint64_t)int_option(L, key, 0, LUA_MAXINTEGER);
    else if (strcmp(key, "cfg") == 0) sc->cfg = (float)luaL_checknumber(L, -1);
    else if (strcmp(key, "ema") == 0) {
        luaL_checktype(L, -1, LUA_TBOOLEAN);
        sc->ema = lua_toboolean(L, -1);
    } else if (strcmp(key, "sampler") == 0) {
        int k = reed_name_index(reed_sampler_names, lua_tostring(L, -1));
        if (lua_type(L, -1) != LUA_TSTRING || k < 0)
            luaL_error(L, "sample: sampler: expected \"euler\", \"heun\" or \"sde\", got %s",
                       lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1));
        sc->sampler = (reed_sampler)k;
    } else {
        luaL_error(L, "sample: unknown option '%s' (expected n, steps, sampler, cfg, class, "
                   "seed, ema)", key);
    }
}

/* sample{n=, steps=, sampler=, cfg=, class=, seed=, ema=} -> png path. */
static int api_sample(lua_State *L) {
    reed_session *s = session_of(L);
    const reed_config *c = reed_run_config(s->run);
    reed_sample_config sc = c->sample;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
        for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) sample_option(L, &sc, c->model.num_classes);
    }
    char path[REED_PATH_LEN + 64];
    snprintf(path, sizeof path, "%s/samples/repl_step_%08d_%d.png", reed_run_dir(s->run),
             reed_run_steps_done(s->run), ++s->n_samples);
    reed_error err = {{0}};
    if (!s->replaying && session_sample(s, &sc, path, &err))
        return luaL_error(L, "sample: %s", err.msg);
    lua_pushstring(L, path);
    return 1;
}

/* save([path]) -> the checkpoint written. */
static int api_save(lua_State *L) {
    reed_session *s = session_of(L);
    const char *path = luaL_optstring(L, 1, NULL);
    char written[REED_PATH_LEN];
    reed_error err = {{0}};
    if (s->replaying) {
        lua_pushstring(L, path ? path : "(not saved during a replay)");
        return 1;
    }
    if (reed_run_save(s->run, path, written, &err)) return luaL_error(L, "save: %s", err.msg);
    lua_pushstring(L, written);
    return 1;
}

/* --- on_step ---------------------------------------------------------------------------------------------- */

static int find_hook(const reed_session *s, int id) {
    for (int i = 0; i < s->n_hooks; i++)
        if (s->hooks[i].id == id) return i;
    return -1;
}

static void remove_hook(reed_session *s, int i) {
    luaL_unref(s->L, LUA_REGISTRYINDEX, s->hooks[i].ref);
    memmove(&s->hooks[i], &s->hooks[i + 1], (s->n_hooks - i - 1) * sizeof *s->hooks);
    s->n_hooks--;
}

/* on_step(every, fn) -> id; on_step(id) removes hook id (-> true if it existed). */
static int api_on_step(lua_State *L) {
    reed_session *s = session_of(L);
    if (lua_gettop(L) == 1) {
        int i = find_hook(s, (int)luaL_checkinteger(L, 1));
        if (i >= 0) remove_hook(s, i);
        lua_pushboolean(L, i >= 0);
        return 1;
    }
    lua_Integer every = luaL_checkinteger(L, 1);
    if (every < 1 || every > 1000000000) return luaL_error(L, "on_step: every must be >= 1, got %I", every);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (s->n_hooks == s->cap_hooks) {
        int cap = s->cap_hooks ? 2 * s->cap_hooks : 8;
        session_hook *h = realloc(s->hooks, (size_t)cap * sizeof *h);
        if (!h) return luaL_error(L, "on_step: out of memory");
        s->hooks = h;
        s->cap_hooks = cap;
    }
    lua_pushvalue(L, 2);
    session_hook hook = {s->next_hook_id++, (int)every, luaL_ref(L, LUA_REGISTRYINDEX)};
    s->hooks[s->n_hooks++] = hook;
    lua_pushinteger(L, hook.id);
    return 1;
}

/* [fn, step] -> []: fn(step, row) with the latest row (built protected). */
static int call_hook(lua_State *L) {
    reed_session *s = session_of(L);
    push_row(L, s, &s->rows[s->n_rows - 1]);          /* [fn, step, row] */
    lua_call(L, 2, 0);
    return 0;
}

void api_run_hooks(reed_session *s) {
    int done = reed_run_steps_done(s->run), n = s->n_hooks;
    if (n == 0 || s->n_rows == 0) return;
    int *ids = malloc((size_t)n * sizeof *ids);               /* hooks may add or remove hooks */
    for (int i = 0; ids && i < n; i++) ids[i] = s->hooks[i].id;
    for (int j = 0; ids && j < n; j++) {
        int i = find_hook(s, ids[j]);
        if (i < 0 || done % s->hooks[i].every != 0) continue;
        lua_pushcfunction(s->L, call_hook);
        lua_rawgeti(s->L, LUA_REGISTRYINDEX, s->hooks[i].ref);
        lua_pushinteger(s->L, done);                  /* [call_hook, fn, step] */
        if (session_call(s, 2, 0) == LUA_OK) continue;
        session_emitf(s, "on_step hook %d (every %d) failed at step %d and was removed: %s\n",
                      ids[j], s->hooks[i].every, done, reed_sandbox_error_message(s->L));
        lua_pop(s->L, 1);
        if ((i = find_hook(s, ids[j])) >= 0) remove_hook(s, i);
    }
    free(ids);
}

/* --- help -------------------------------------------------------------------------------------------------- */

static const struct {
    const char *name, *text;
} help_texts[] = {
    {"pause", "pause()  stop stepping after the current step"},
    {"resume", "resume()  go on stepping (to the end of the run)"},
    {"step", "step([n=1])  run n more steps, then pause"},
    {"status", "status() -> table  step (done), total, paused, budget (steps left of step(n)),\n"
               "  phase, loss, loss_denoise, w_diff, w_align, proj_coeff, grad_norm, lr,\n"
               "  sims = {NAME = similarity}, sim_NAME, loss_NAME, its_per_s, name, run_dir"},
    {"quit", "quit()  save a checkpoint and stop the engine"},
    {"set", "set{key = value, ...}  change curriculum/optimiser/sampling fields from the\n"
            "  next step, validated (an error changes nothing). Keys: dotted config keys\n"
            "  (\"train.lr\", [\"sources.enc.coeff\"]), nested tables\n"
            "  (train = {lr = 1e-4}, sources = {enc = {coeff = 0.5}}), or bare names looked up\n"
            "  in curriculum, train, sample, model: proj_coeff, diffusion_start,\n"
            "  diffusion_warmup (alias warmup), diffusion_decay, align_decay, align_steps,\n"
            "  lr, betas, eps, weight_decay, grad_clip, ema_decay, steps (= train.steps),\n"
            "  log_every, sample_every, ckpt_every, keep_ckpts, class_dropout, ...\n"
            "  Model shapes, data, batch, seed and the list of sources cannot change."},
    {"curriculum", "curriculum(tbl | fn | nil)  replace the schedule from the next step:\n"
                   "  a table of curriculum fields (as set{curriculum = tbl});\n"
                   "  fn(step, total) -> w_diff, w_align[, phase_name] (step 0-based; an\n"
                   "  error inside it pauses the run); nil: back to the config's curriculum"},
    {"sample", "sample{n=, steps=, sampler=\"euler\"|\"heun\"|\"sde\", cfg=, class=, seed=, ema=}\n"
               "  -> path  draw a grid (defaults: the config's sample section), show it in\n"
               "  the preview and write RUN_DIR/samples/repl_step_STEP_K.png"},
    {"save", "save([path]) -> path  write a checkpoint (default RUN_DIR/checkpoints/)"},
    {"metrics", "metrics(name[, last]) -> array  the last `last` values (default all) of a\n"
                "  metric of this session: step (0-based), phase, loss, loss_denoise, w_diff,\n"
                "  w_align, proj_coeff, grad_norm, lr, imgs_per_s, sim_NAME, loss_NAME;\n"
                "  fd and cond_acc have one value per evaluation (eval.every) among them"},
    {"on_step", "on_step(every, fn) -> id  call fn(step, metrics) after every `every`-th step\n"
                "  (step = steps done; metrics = that step's row as in metrics.jsonl); an error\n"
                "  removes the hook. on_step(id) removes hook id"},
    {"print", "print(...)  write to the REPL pane"},
    {"help", "help([name])  this text, or one function's"},
};
enum { N_HELP = sizeof help_texts / sizeof help_texts[0] };

static int api_help(lua_State *L) {
    reed_session *s = session_of(L);
    const char *name = luaL_optstring(L, 1, NULL);
    if (name) {
        for (int i = 0; i < N_HELP; i++)
            if (strcmp(name, help_texts[i].name) == 0) {
                session_emitf(s, "%s\n", help_texts[i].text);
                return 0;
            }
        return luaL_error(L, "help: no function '%s' (try help())", name);
    }
    session_emitf(s, "REPL: Lua 5.4 on the engine thread; commands apply at step boundaries.\n"
                     "A line is tried as `return <line>` first; end it with ';' to print nothing.\n");
    for (int i = 0; i < N_HELP; i++) session_emitf(s, "%s\n", help_texts[i].text);
    return 0;
}

/* --- registration -------------------------------------------------------------------------------------------- */

static const luaL_Reg api_funcs[] = {
    {"pause", api_pause},     {"resume", api_resume},   {"step", api_step},
    {"status", api_status},   {"quit", api_quit},       {"set", api_set},
    {"curriculum", api_curriculum}, {"sample", api_sample}, {"save", api_save},
    {"metrics", api_metrics}, {"on_step", api_on_step}, {"print", api_print},
    {"help", api_help},       {NULL, NULL},
};

int api_open(lua_State *L) {
    luaL_newlib(L, api_funcs);                        /* [reed] */
    lua_pushglobaltable(L);                           /* [reed, _G] */
    for (const luaL_Reg *r = api_funcs; r->name; r++) {
        lua_getfield(L, -2, r->name);
        lua_setfield(L, -2, r->name);                 /* _G[name] = reed[name] */
    }
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "reed");                      /* _G.reed = reed */
    lua_getfield(L, -1, "math");                      /* [reed, _G, math] */
    lua_getfield(L, -1, "randomseed");
    lua_pushinteger(L, 0);
    lua_call(L, 1, 0);                                /* the same random numbers in a replay */
    lua_pop(L, 3);                                    /* [] */
    return 0;
}
