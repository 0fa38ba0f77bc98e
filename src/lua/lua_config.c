/* Lua configs: a sandboxed Lua 5.4 state runs the config chunk, and a
 * table-driven mapping ({key, type, offset} per section) copies the returned
 * table into a reed_config with strict checks. The same tables drive
 * `--set key=value` and the writer that serialises a config back to Lua.
 * This file loads, applies and sets; the state is in lua_sandbox.c, the
 * tables in lua_config_fields.c, the writer in lua_config_write.c and the
 * path and key-line helpers in lua_text.c.
 *
 * Everything that touches Lua values runs inside lua_pcall, so a memory error
 * or a script error never escapes to the panic handler; our own errors are
 * reported through apply_ctx (no longjmp over C state). */
#include "lua_config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "lua_config_fields.h"
#include "lua_sandbox.h"
#include "lua_text.h"

/* --- applying Lua values ----------------------------------------------------- */

typedef struct apply_ctx {
    reed_config *cfg;
    reed_error *err;
    const char *where;          /* file or chunk name; NULL for --set */
    const char *text;           /* the config's text for line lookup, or NULL */
    const char *base_dir;       /* relative paths resolve here */
    const char *set_value;      /* --set: the value's text */
    char key[REED_KEY_LEN];     /* dotted key being applied */
    int failed;
} apply_ctx;

/* Reports "where:line: key: detail" (or "--set key: detail"); returns -1. */
static int fail(apply_ctx *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(apply_ctx *a, const char *fmt, ...) {
    char detail[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    a->failed = 1;
    if (!a->where) return reed_errorf(a->err, "--set %s: %s", a->key, detail);
    int line = reed_key_line(a->text, a->key);
    if (line > 0) return reed_errorf(a->err, "%s:%d: %s: %s", a->where, line, a->key, detail);
    return reed_errorf(a->err, "%s: %s: %s", a->where, a->key, detail);
}

/* Appends ".seg" (or "seg" at the top) to the key; returns the old length. */
static size_t key_push(apply_ctx *a, const char *seg) {
    size_t len = strlen(a->key);
    snprintf(a->key + len, sizeof a->key - len, "%s%s", len ? "." : "", seg);
    return len;
}

static size_t key_push_index(apply_ctx *a, lua_Integer i) {
    char seg[32];
    snprintf(seg, sizeof seg, "%lld", (long long)i);
    return key_push(a, seg);
}

static void key_pop(apply_ctx *a, size_t len) { a->key[len] = '\0'; }

static int type_error(apply_ctx *a, lua_State *L, const char *expected) {
    return fail(a, "expected %s, got %s", expected, luaL_typename(L, -1));
}

/* "a, b, c": the allowed keys or names, for messages. */
static void list_keys(char *out, size_t cap, const field *fields,
                      const char *const *names) {
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; fields ? fields[i].key != NULL : names[i] != NULL; i++) {
        const char *s = fields ? fields[i].key : names[i];
        int n = snprintf(out + len, cap - len, "%s%s", i ? ", " : "", s);
        if (n < 0 || (size_t)n >= cap - len) return;
        len += (size_t)n;
    }
}

/* [v] -> [v]: the integer at the top (a float with an integral value counts). */
static int get_integer(apply_ctx *a, lua_State *L, lua_Integer *v) {
    int ok;
    if (lua_type(L, -1) != LUA_TNUMBER) return type_error(a, L, "an integer");
    *v = lua_tointegerx(L, -1, &ok);
    if (!ok) return fail(a, "expected an integer, got %.14g", (double)lua_tonumber(L, -1));
    return 0;
}

/* [v] -> [v]: the string at the top, which must fit in cap bytes. */
static int get_string(apply_ctx *a, lua_State *L, size_t cap, const char **s) {
    size_t n;
    if (lua_type(L, -1) != LUA_TSTRING) return type_error(a, L, "a string");
    *s = lua_tolstring(L, -1, &n);
    if (strlen(*s) != n) return fail(a, "the string contains a NUL byte");
    if (n >= cap) return fail(a, "the string is too long (%zu bytes, at most %zu)", n, cap - 1);
    return 0;
}

/* Copies s into a zero-filled buffer, so equal configs are equal bytes. */
static void set_string(char *dst, size_t cap, const char *s) {
    memset(dst, 0, cap);
    memcpy(dst, s, strlen(s));
}

static int apply_path(apply_ctx *a, lua_State *L, const field *f, char *dst) {
    const char *s;
    char path[REED_PATH_LEN];
    if (get_string(a, L, f->aux, &s)) return -1;
    if (!s[0]) {
        set_string(dst, f->aux, s);
        return 0;
    }
    if (reed_filepath_join(path, sizeof path, a->base_dir, s))
        return fail(a, "the path is too long once resolved against %s", a->base_dir);
    set_string(dst, f->aux, path);
    return 0;
}

/* model.preset: sets the shape fields of a preset; "custom" keeps them. */
static int apply_preset(apply_ctx *a, lua_State *L, const field *f, char *base) {
    const char *s;
    reed_error perr;
    if (get_string(a, L, f->aux, &s)) return -1;
    if (strcmp(s, "custom") != 0 &&
        reed_model_preset((reed_model_config *)(void *)base, s, &perr))
        return fail(a, "%s", perr.msg);
    set_string(base + f->off, f->aux, s);
    return 0;
}

static int apply_enum(apply_ctx *a, lua_State *L, const field *f, int *dst) {
    char names[256];
    if (lua_type(L, -1) != LUA_TSTRING) return type_error(a, L, "a string");
    int i = reed_name_index(f->names, lua_tostring(L, -1));
    if (i >= 0) {
        *dst = i;
        return 0;
    }
    list_keys(names, sizeof names, NULL, f->names);
    return fail(a, "unknown value '%s' (expected one of: %s)", lua_tostring(L, -1), names);
}

/* [{x, y}] -> [{x, y}]: a table of exactly two numbers. */
static int apply_pair(apply_ctx *a, lua_State *L, const field *f, char *base) {
    const char *what = "a table of two numbers {a, b}";
    if (!lua_istable(L, -1)) return type_error(a, L, what);
    lua_Integer count = 0;
    lua_pushnil(L);                                   /* [t, nil] */
    while (lua_next(L, -2)) {                         /* [t, k, v] */
        count++;
        lua_pop(L, 1);                                /* [t, k] */
    }
    if (count != 2 || lua_rawlen(L, -1) != 2) return fail(a, "expected %s", what);
    float v[2];
    for (int i = 0; i < 2; i++) {
        int t = lua_rawgeti(L, -1, i + 1);            /* [t, v_i] */
        v[i] = (float)lua_tonumber(L, -1);
        lua_pop(L, 1);                                /* [t] */
        if (t != LUA_TNUMBER) return fail(a, "expected %s", what);
    }
    memcpy(base + f->off, &v[0], sizeof(float));
    memcpy(base + f->aux, &v[1], sizeof(float));
    return 0;
}

/* Ints come from Lua integers and must fit in a C int. */
static int apply_int(apply_ctx *a, lua_State *L, int *dst) {
    lua_Integer v;
    if (get_integer(a, L, &v)) return -1;
    if (v < INT_MIN || v > INT_MAX) return fail(a, "%lld does not fit in an int", (long long)v);
    *dst = (int)v;
    return 0;
}

static int apply_section(apply_ctx *a, lua_State *L, const field *fields, char *base);
static int apply_sources(apply_ctx *a, lua_State *L);

/* [v] -> [v]: stores the value at the top of the stack into field f of base. */
static int apply_value(apply_ctx *a, lua_State *L, const field *f, char *base) {
    char *p = base + f->off;
    lua_Integer i;
    const char *s;
    switch (f->type) {
    case F_INT: return apply_int(a, L, (int *)(void *)p);
    case F_U64:
        if (get_integer(a, L, &i)) return -1;
        *(uint64_t *)(void *)p = (uint64_t)i; /* negative and hex wrap to 64 bits */
        return 0;
    case F_FLOAT:
        if (lua_type(L, -1) != LUA_TNUMBER) return type_error(a, L, "a number");
        *(float *)(void *)p = (float)lua_tonumber(L, -1);
        return 0;
    case F_BOOL:
        if (lua_type(L, -1) != LUA_TBOOLEAN) return type_error(a, L, "a boolean");
        *(int *)(void *)p = lua_toboolean(L, -1);
        return 0;
    case F_STR:
        if (get_string(a, L, f->aux, &s)) return -1;
        set_string(p, f->aux, s);
        return 0;
    case F_PATH: return apply_path(a, L, f, p);
    case F_PRESET: return apply_preset(a, L, f, base);
    case F_ENUM: return apply_enum(a, L, f, (int *)(void *)p);
    case F_PAIR: return apply_pair(a, L, f, base);
    case F_SECTION:
        if (!lua_istable(L, -1)) return type_error(a, L, "a table");
        return apply_section(a, L, f->sub, p);
    case F_SOURCES: return apply_sources(a, L);
    }
    return fail(a, "internal error: unknown field type");
}

/* [t] -> [t]: applies the keys of t named in fields; F_PRESET keys first so
 * that explicit shape fields override the preset. */
static int apply_section(apply_ctx *a, lua_State *L, const field *fields, char *base) {
    char keys[512];
    luaL_checkstack(L, 4, "config nesting");
    for (const field *f = fields; f->key; f++) {
        if (f->type != F_PRESET) continue;
        lua_pushstring(L, f->key);                    /* [t, k] */
        int present = lua_rawget(L, -2) != LUA_TNIL;  /* [t, v] */
        size_t len = key_push(a, f->key);
        int rc = present ? apply_value(a, L, f, base) : 0;
        key_pop(a, len);
        lua_pop(L, 1);                                /* [t] */
        if (rc) return -1;
    }
    lua_pushnil(L);                                   /* [t, nil] */
    while (lua_next(L, -2)) {                         /* [t, k, v] */
        int rc;
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pushvalue(L, -2);                     /* [t, k, v, k'] */
            rc = fail(a, "unexpected entry [%s] (expected key = value)",
                      luaL_tolstring(L, -1, NULL));   /* [t, k, v, k', s] */
            lua_pop(L, 4);                            /* [t] */
            return rc;
        }
        const char *k = lua_tostring(L, -2);
        const field *f = reed_config_find_field(fields, k);
        size_t len = key_push(a, k);
        if (!f) {
            list_keys(keys, sizeof keys, fields, NULL);
            rc = fail(a, "unknown key (expected one of: %s)", keys);
        } else {
            rc = f->type == F_PRESET ? 0 : apply_value(a, L, f, base);
        }
        key_pop(a, len);
        if (rc) {
            lua_pop(L, 2);                            /* [t] */
            return -1;
        }
        lua_pop(L, 1);                                /* [t, k] */
    }
    return 0;
}

/* [t] -> [t]: t must be a list (keys 1..n) of at most REED_MAX_SOURCES. */
static int check_source_list(apply_ctx *a, lua_State *L, lua_Integer *n) {
    *n = (lua_Integer)lua_rawlen(L, -1);
    lua_pushnil(L);                                   /* [t, nil] */
    while (lua_next(L, -2)) {                         /* [t, k, v] */
        lua_pop(L, 1);                                /* [t, k] */
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 ||
            lua_tointeger(L, -1) > *n) {
            int rc = fail(a, "expected a list of source tables, found key '%s'",
                          luaL_tolstring(L, -1, NULL)); /* [t, k, s] */
            lua_pop(L, 2);                            /* [t] */
            return rc;
        }
    }
    if (*n > REED_MAX_SOURCES)
        return fail(a, "%lld sources, at most %d", (long long)*n, REED_MAX_SOURCES);
    return 0;
}

/* [t] -> [t]: one source table into s (whose current values are kept for
 * keys that t does not name). */
static int apply_source(apply_ctx *a, lua_State *L, reed_source_config *s) {
    if (!lua_istable(L, -1)) return type_error(a, L, "a source table");
    return apply_section(a, L, reed_config_source_fields, (char *)s);
}

/* [t] -> [t]: replaces the list of sources. */
static int apply_sources(apply_ctx *a, lua_State *L) {
    lua_Integer n;
    if (!lua_istable(L, -1)) return type_error(a, L, "a list of source tables");
    if (check_source_list(a, L, &n)) return -1;
    for (lua_Integer i = 1; i <= n; i++) {
        reed_source_config *s = &a->cfg->sources[i - 1];
        reed_config_source_defaults(s);
        lua_rawgeti(L, -1, i);                        /* [t, t[i]] */
        size_t len = key_push_index(a, i);
        int rc = apply_source(a, L, s);
        key_pop(a, len);
        lua_pop(L, 1);                                /* [t] */
        if (rc) return -1;
    }
    for (lua_Integer i = n; i < REED_MAX_SOURCES; i++) /* unused slots stay zero */
        memset(&a->cfg->sources[i], 0, sizeof a->cfg->sources[i]);
    a->cfg->n_sources = (int)n;
    return 0;
}

/* --- loading configs --------------------------------------------------------- */

/* Runs fn(a, value) protected (value: a stack index, or 0 for nil); our own
 * failures are in a->err already, Lua's (out of memory) are added here. */
static int call_apply(apply_ctx *a, lua_State *L, lua_CFunction fn, int value) {
    lua_pushcfunction(L, fn);                         /* [..., fn] */
    lua_pushlightuserdata(L, a);                      /* [..., fn, a] */
    if (value) lua_pushvalue(L, value);               /* [..., fn, a, v] */
    else lua_pushnil(L);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {            /* [..., (msg)] */
        if (!a->failed) reed_errorf(a->err, "%s: %s", a->where ? a->where : "--set",
                                    reed_sandbox_error_message(L));
        lua_pop(L, 1);
        return -1;
    }
    return a->failed ? -1 : 0;
}

/* [a, t] -> []: applies a config table returned by a chunk. */
static int apply_top(lua_State *L) {
    apply_ctx *a = lua_touserdata(L, 1);
    lua_settop(L, 2);
    apply_section(a, L, reed_config_top_fields, (char *)a->cfg);
    return 0;
}

/* Validates; a message "key: ..." gets the file and the key's line. */
static int validate_at(const apply_ctx *a, const reed_config *cfg) {
    reed_error verr;
    char key[REED_KEY_LEN];
    if (reed_config_validate(cfg, &verr) == 0) return 0;
    size_t n = strcspn(verr.msg, ":");
    snprintf(key, sizeof key, "%.*s", (int)(n < sizeof key ? n : sizeof key - 1), verr.msg);
    int line = reed_key_line(a->text, key);
    if (line > 0) return reed_errorf(a->err, "%s:%d: %s", a->where, line, verr.msg);
    return reed_errorf(a->err, "%s: %s", a->where, verr.msg);
}

/* [chunk] -> []: runs a loaded chunk and applies the table it returns to a
 * copy of the defaults; commits to cfg only when everything succeeds. */
static int run_chunk(lua_State *L, apply_ctx *a, reed_config *cfg) {
    reed_config tmp;
    if (lua_pcall(L, 0, 1, 0) != LUA_OK)              /* [result] or [msg] */
        return reed_errorf(a->err, "%s", reed_sandbox_error_message(L));
    if (!lua_istable(L, -1))
        return reed_errorf(a->err, "%s: the config must return a table, got %s",
                           a->where, luaL_typename(L, -1));
    reed_config_defaults(&tmp);
    a->cfg = &tmp;
    if (call_apply(a, L, apply_top, lua_gettop(L))) return -1;
    if (validate_at(a, &tmp)) return -1;
    memcpy(cfg, &tmp, sizeof tmp);
    return 0;
}

/* The whole file as a NUL-terminated string (for line lookup), or NULL. */
static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (len < cap - 1 || cap >= (size_t)REED_SANDBOX_MEM_LIMIT) break;
        char *grown = realloc(buf, cap *= 2);
        if (!grown) free(buf);
        buf = grown;
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

int reed_config_load_file(reed_config *cfg, const char *path, reed_error *err) {
    static reed_sandbox sb_zero;
    reed_sandbox sb = sb_zero;
    char dir[REED_PATH_LEN];
    if (!path || reed_filepath_absolute(sb.loading[0], REED_PATH_LEN, path))
        return reed_errorf(err, "%s: bad config path", path ? path : "(null)");
    snprintf(dir, sizeof dir, "%s", sb.loading[0]);
    reed_filepath_dirname(dir);
    sb.depth = 1;
    sb.config_dir = dir;
    lua_State *L = reed_sandbox_new(&sb, err);
    if (!L) return -1;
    char *text = read_text(path);
    apply_ctx a = {.err = err, .where = path, .text = text, .base_dir = dir};
    int rc = luaL_loadfilex(L, path, "t") == LUA_OK
                 ? run_chunk(L, &a, cfg)
                 : reed_errorf(err, "%s", reed_sandbox_error_message(L));
    reed_sandbox_close(L);
    free(text);
    return rc;
}

int reed_config_load_string(reed_config *cfg, const char *text, const char *chunkname,
                            reed_error *err) {
    static reed_sandbox sb_zero;
    reed_sandbox sb = sb_zero;
    char cwd[REED_PATH_LEN], name[REED_PATH_LEN];
    if (!text) return reed_errorf(err, "%s: no config text", chunkname ? chunkname : "config");
    if (!chunkname) chunkname = "config";
    if (!getcwd(cwd, sizeof cwd))
        return reed_errorf(err, "%s: cannot get the working directory: %s", chunkname,
                           strerror(errno));
    lua_State *L = reed_sandbox_new(&sb, err);
    if (!L) return -1;
    snprintf(name, sizeof name, "=%s", chunkname);
    apply_ctx a = {.err = err, .where = chunkname, .text = text, .base_dir = cwd};
    int rc = luaL_loadbufferx(L, text, strlen(text), name, "t") == LUA_OK
                 ? run_chunk(L, &a, cfg)
                 : reed_errorf(err, "%s", reed_sandbox_error_message(L));
    reed_sandbox_close(L);
    return rc;
}

/* --- --set key=value --------------------------------------------------------- */

static int unknown_key(apply_ctx *a, const field *fields) {
    char keys[512];
    list_keys(keys, sizeof keys, fields, NULL);
    return fail(a, "unknown key (expected one of: %s)", keys);
}

/* Splits "a.b.c" into at most max non-empty segments; -1 otherwise. */
static int split_key(const char *key, char segs[][REED_KEY_LEN], int max) {
    int n = 0;
    for (const char *p = key;; n++) {
        size_t len = strcspn(p, ".");
        if (n == max || len == 0 || len >= REED_KEY_LEN) return -1;
        memcpy(segs[n], p, len);
        segs[n][len] = '\0';
        if (!p[len]) return n + 1;
        p += len + 1;
    }
}

/* The 0-based slot of "3" or "dino" in the sources; n_sources names the slot
 * of a new source ("sources.<n+1>"). -1 (reported) when there is none. */
static int source_slot(apply_ctx *a, const char *seg) {
    const reed_config *c = a->cfg;
    if (seg[strspn(seg, "0123456789")] == '\0') {
        long k = strtol(seg, NULL, 10);
        if (k >= 1 && k <= c->n_sources + 1 && k <= REED_MAX_SOURCES) return (int)(k - 1);
        return fail(a, "no source %s (there are %d; at most %d)", seg, c->n_sources,
                    REED_MAX_SOURCES);
    }
    for (int i = 0; i < c->n_sources; i++)
        if (strcmp(c->sources[i].name, seg) == 0) return i;
    return fail(a, "no source named '%s'", seg);
}

static void remove_source(reed_config *c, int slot) {
    memmove(&c->sources[slot], &c->sources[slot + 1],
            (size_t)(c->n_sources - slot - 1) * sizeof c->sources[0]);
    c->n_sources--;
    memset(&c->sources[c->n_sources], 0, sizeof c->sources[0]);
}

/* [v] -> [v]: `--set name=2024` gives a string field the text as typed,
 * not the number it parses as. */
static void set_text_for_strings(apply_ctx *a, lua_State *L, const field *f) {
    int stringy = f->type == F_STR || f->type == F_PATH || f->type == F_PRESET ||
                  f->type == F_ENUM;
    if (stringy && lua_type(L, -1) == LUA_TNUMBER) {
        lua_pop(L, 1);                                /* [] */
        lua_pushstring(L, a->set_value);              /* [text] */
    }
}

/* [v] -> [v]: sources (the list), sources.<k> (a table merged into source k,
 * a new one when k = n+1, or nil to remove it), sources.<k>.<field>. */
static int set_source(apply_ctx *a, lua_State *L, char segs[][REED_KEY_LEN], int n) {
    reed_config *c = a->cfg;
    if (n == 0) return apply_sources(a, L);
    int slot = source_slot(a, segs[0]);
    if (slot < 0) return -1;
    int is_new = slot == c->n_sources;
    if (n == 1 && lua_isnil(L, -1)) {
        if (is_new) return fail(a, "no source %s to remove", segs[0]);
        remove_source(c, slot);
        return 0;
    }
    if (n == 1) {
        if (is_new) reed_config_source_defaults(&c->sources[slot]);
        if (apply_source(a, L, &c->sources[slot])) return -1;
        c->n_sources += is_new;
        return 0;
    }
    if (is_new)
        return fail(a, "no source %s yet; add it whole, e.g. sources.%s={name=..., "
                    "file=..., depth=...}", segs[0], segs[0]);
    const field *f = reed_config_find_field(reed_config_source_fields, segs[1]);
    if (!f) return unknown_key(a, reed_config_source_fields);
    set_text_for_strings(a, L, f);
    return apply_value(a, L, f, (char *)&c->sources[slot]);
}

/* [v] -> [v]: applies the value to the dotted key in a->key. */
static int set_key(apply_ctx *a, lua_State *L) {
    char segs[3][REED_KEY_LEN];
    int n = split_key(a->key, segs, 3);
    const field *f = n > 0 ? reed_config_find_field(reed_config_top_fields, segs[0]) : NULL;
    if (!f) return unknown_key(a, reed_config_top_fields);
    if (f->type == F_SOURCES) return set_source(a, L, segs + 1, n - 1);
    if (n == 1) {
        set_text_for_strings(a, L, f);
        return apply_value(a, L, f, (char *)a->cfg);
    }
    const field *g =
        f->type == F_SECTION && n == 2 ? reed_config_find_field(f->sub, segs[1]) : NULL;
    if (!g) return unknown_key(a, f->type == F_SECTION ? f->sub : reed_config_top_fields);
    set_text_for_strings(a, L, g);
    return apply_value(a, L, g, (char *)a->cfg + f->off);
}

/* [] -> [v]: the value of `--set key=value`: a Lua expression evaluated with
 * no globals (numbers, booleans, quoted strings, tables); anything that does
 * not compile, fails or yields nil (unless it is `nil`) is the text itself. */
static void push_set_value(lua_State *L, const char *text) {
    int top = lua_gettop(L);
    size_t n;
    const char *src = lua_pushfstring(L, "return %s", text); /* [src] */
    n = strlen(src);
    if (luaL_loadbufferx(L, src, n, "=--set", "t") == LUA_OK) { /* [src, f] */
        lua_newtable(L);                              /* [src, f, {}] */
        lua_setupvalue(L, -2, 1);                     /* [src, f]: _ENV = {} */
        if (lua_pcall(L, 0, 1, 0) == LUA_OK &&        /* [src, v] */
            (!lua_isnil(L, -1) || strcmp(text, "nil") == 0)) {
            lua_remove(L, top + 1);                   /* [v] */
            return;
        }
    }
    lua_settop(L, top);                               /* [] */
    lua_pushstring(L, text);                          /* [text] */
}

/* [a, nil] -> []: parses a->set_value and applies it to a->key. */
static int set_protected(lua_State *L) {
    apply_ctx *a = lua_touserdata(L, 1);
    lua_settop(L, 1);                                 /* [a] */
    push_set_value(L, a->set_value);                  /* [a, v] */
    set_key(a, L);
    return 0;
}

/* Validation after --set: "--set key: message", naming the set key too when
 * the message is about another one. */
static int validate_set(const apply_ctx *a, const reed_config *cfg, const char *key) {
    reed_error verr;
    if (reed_config_validate(cfg, &verr) == 0) return 0;
    size_t n = strlen(key);
    if (strncmp(verr.msg, key, n) == 0 && verr.msg[n] == ':')
        return reed_errorf(a->err, "--set %s", verr.msg);
    return reed_errorf(a->err, "--set %s: %s", key, verr.msg);
}

/* s without leading and trailing blanks, as a new string (caller frees). */
static char *trimmed(const char *s, size_t n) {
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n')) n--;
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return out;
}

static int set_in_sandbox(reed_config *cfg, const char *key, const char *value,
                          reed_error *err) {
    static reed_sandbox sb_zero;
    reed_sandbox sb = sb_zero;
    char cwd[REED_PATH_LEN];
    reed_config tmp;
    if (!getcwd(cwd, sizeof cwd))
        return reed_errorf(err, "--set %s: cannot get the working directory: %s", key,
                           strerror(errno));
    lua_State *L = reed_sandbox_new(&sb, err);
    if (!L) return -1;
    memcpy(&tmp, cfg, sizeof tmp);
    apply_ctx a = {.cfg = &tmp, .err = err, .base_dir = cwd, .set_value = value};
    snprintf(a.key, sizeof a.key, "%s", key);
    int rc = call_apply(&a, L, set_protected, 0);
    reed_sandbox_close(L);
    if (rc == 0) rc = validate_set(&a, &tmp, key);
    if (rc == 0) memcpy(cfg, &tmp, sizeof tmp);
    return rc;
}

int reed_config_set(reed_config *cfg, const char *assignment, reed_error *err) {
    const char *eq = assignment ? strchr(assignment, '=') : NULL;
    if (!eq)
        return reed_errorf(err, "--set %s: expected key=value",
                           assignment ? assignment : "(null)");
    char *key = trimmed(assignment, (size_t)(eq - assignment));
    char *value = trimmed(eq + 1, strlen(eq + 1));
    int rc;
    if (!key || !value) rc = reed_errorf(err, "--set: out of memory");
    else if (!key[0] || strlen(key) >= REED_KEY_LEN)
        rc = reed_errorf(err, "--set %s: expected key=value with a dotted key", assignment);
    else rc = set_in_sandbox(cfg, key, value, err);
    free(key);
    free(value);
    return rc;
}
