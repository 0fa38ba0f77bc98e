/* Lua configs: a sandboxed Lua 5.4 state runs the config chunk, and a
 * table-driven mapping ({key, type, offset} per section) copies the returned
 * table into a reed_config with strict checks. The same tables drive
 * `--set key=value` and the writer that serialises a config back to Lua.
 *
 * Everything that touches Lua values runs inside lua_pcall, so a memory error
 * or a script error never escapes to the panic handler; our own errors are
 * reported through apply_ctx (no longjmp over C state). */
#include "lua_config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

enum {
    MEM_LIMIT = 256 << 20,      /* bytes a config may allocate */
    HOOK_EVERY = 1000,          /* instructions between budget checks */
    HOOK_BUDGET = 100000,       /* checks: 1e8 instructions in all */
    MAX_NEST = 8,               /* config + nested preset() calls */
    KEY_LEN = 256,
};

/* --- field tables ------------------------------------------------------------ */

typedef enum {
    F_INT,      /* int */
    F_U64,      /* uint64_t */
    F_FLOAT,    /* float */
    F_BOOL,     /* int 0/1 from a Lua boolean */
    F_STR,      /* char[aux] */
    F_PATH,     /* char[aux], resolved against the config's directory */
    F_PRESET,   /* char[aux]: a model preset, applied before the other keys */
    F_ENUM,     /* int-sized enum named by names[] */
    F_PAIR,     /* two floats {a, b}: at off and at aux */
    F_SECTION,  /* nested struct described by sub[] */
    F_SOURCES,  /* the list of sources */
} field_type;

typedef struct field field;
struct field {
    const char *key;
    field_type type;
    size_t off;                 /* offset inside the section's struct */
    size_t aux;                 /* string capacity, or the pair's second offset */
    const char *const *names;   /* F_ENUM */
    const field *sub;           /* F_SECTION */
};

#define INT(s, k, m) {k, F_INT, offsetof(s, m), 0, NULL, NULL}
#define U64(s, k, m) {k, F_U64, offsetof(s, m), 0, NULL, NULL}
#define FLT(s, k, m) {k, F_FLOAT, offsetof(s, m), 0, NULL, NULL}
#define BOOL(s, k, m) {k, F_BOOL, offsetof(s, m), 0, NULL, NULL}
#define STR(s, k, m, t) {k, t, offsetof(s, m), sizeof(((s *)0)->m), NULL, NULL}
#define ENUM(s, k, m, n) {k, F_ENUM, offsetof(s, m), 0, n, NULL}
#define PAIR(s, k, a, b) {k, F_PAIR, offsetof(s, a), offsetof(s, b), NULL, NULL}
#define SECTION(k, m, sub) {k, F_SECTION, offsetof(reed_config, m), 0, NULL, sub}
#define END {NULL, F_INT, 0, 0, NULL, NULL}

static const field model_fields[] = {
    STR(reed_model_config, "preset", preset, F_PRESET),
    INT(reed_model_config, "hidden", hidden),
    INT(reed_model_config, "depth", depth),
    INT(reed_model_config, "heads", heads),
    INT(reed_model_config, "patch", patch),
    INT(reed_model_config, "in_channels", in_channels),
    INT(reed_model_config, "image_size", image_size),
    INT(reed_model_config, "num_classes", num_classes),
    INT(reed_model_config, "mlp_ratio", mlp_ratio),
    FLT(reed_model_config, "class_dropout", class_dropout),
    END,
};

static const field data_fields[] = {
    STR(reed_data_config, "dataset", dataset, F_STR),
    STR(reed_data_config, "dir", dir, F_PATH),
    STR(reed_data_config, "images", images, F_PATH),
    STR(reed_data_config, "labels", labels, F_PATH),
    INT(reed_data_config, "limit", limit),
    END,
};

static const field train_fields[] = {
    INT(reed_train_config, "steps", steps),
    INT(reed_train_config, "batch", batch),
    FLT(reed_train_config, "lr", lr),
    PAIR(reed_train_config, "betas", beta1, beta2),
    FLT(reed_train_config, "eps", eps),
    FLT(reed_train_config, "weight_decay", weight_decay),
    FLT(reed_train_config, "grad_clip", grad_clip),
    FLT(reed_train_config, "ema_decay", ema_decay),
    U64(reed_train_config, "seed", seed),
    INT(reed_train_config, "threads", threads),
    ENUM(reed_train_config, "path", path, reed_path_names),
    ENUM(reed_train_config, "time_sampling", time_sampling, reed_time_names),
    INT(reed_train_config, "log_every", log_every),
    INT(reed_train_config, "sample_every", sample_every),
    INT(reed_train_config, "ckpt_every", ckpt_every),
    INT(reed_train_config, "keep_ckpts", keep_ckpts),
    END,
};

static const field curriculum_fields[] = {
    FLT(reed_curriculum_config, "proj_coeff", proj_coeff),
    INT(reed_curriculum_config, "diffusion_start", diffusion_start),
    INT(reed_curriculum_config, "diffusion_warmup", diffusion_warmup),
    ENUM(reed_curriculum_config, "diffusion_decay", diffusion_decay, reed_decay_names),
    ENUM(reed_curriculum_config, "align_decay", align_decay, reed_decay_names),
    INT(reed_curriculum_config, "align_steps", align_steps),
    END,
};

static const field sample_fields[] = {
    INT(reed_sample_config, "n", n),
    INT(reed_sample_config, "steps", steps),
    ENUM(reed_sample_config, "sampler", sampler, reed_sampler_names),
    FLT(reed_sample_config, "cfg", cfg),
    PAIR(reed_sample_config, "cfg_interval", cfg_lo, cfg_hi),
    U64(reed_sample_config, "seed", seed),
    BOOL(reed_sample_config, "ema", ema),
    INT(reed_sample_config, "class", class_label),
    END,
};

static const field source_fields[] = {
    STR(reed_source_config, "name", name, F_STR),
    ENUM(reed_source_config, "kind", kind, reed_source_kind_names),
    STR(reed_source_config, "file", file, F_PATH),
    INT(reed_source_config, "depth", depth),
    FLT(reed_source_config, "coeff", coeff),
    ENUM(reed_source_config, "weighting", weighting, reed_weighting_names),
    PAIR(reed_source_config, "cutoff", cutoff_lo, cutoff_hi),
    INT(reed_source_config, "projector_dim", projector_dim),
    ENUM(reed_source_config, "resample", resample, reed_resample_names),
    END,
};

static const field top_fields[] = {
    STR(reed_config, "name", name, F_STR),
    SECTION("model", model, model_fields),
    SECTION("data", data, data_fields),
    SECTION("train", train, train_fields),
    SECTION("curriculum", curriculum, curriculum_fields),
    SECTION("sample", sample, sample_fields),
    {"sources", F_SOURCES, 0, 0, NULL, NULL},
    END,
};

_Static_assert(sizeof(reed_source_kind) == sizeof(int) &&
               sizeof(reed_weighting) == sizeof(int) &&
               sizeof(reed_resample) == sizeof(int) &&
               sizeof(reed_sampler) == sizeof(int) &&
               sizeof(reed_time_kind) == sizeof(int),
               "enum fields are read and written as int");

static const field *find_field(const field *fields, const char *key) {
    for (const field *f = fields; f->key; f++)
        if (strcmp(f->key, key) == 0) return f;
    return NULL;
}

/* A new source: required keys (name, file, depth) left empty/0 so that
 * validation asks for them. */
static void source_defaults(reed_source_config *s) {
    memset(s, 0, sizeof *s);
    s->kind = REED_SOURCE_TOKEN;
    s->coeff = 1.0f;
    s->weighting = REED_WEIGHT_CONSTANT;
    s->cutoff_lo = 0.0f;
    s->cutoff_hi = 1.0f;
    s->projector_dim = 256;
    s->resample = REED_RESAMPLE_AREA;
}

/* --- paths ------------------------------------------------------------------- */

/* Removes "." and ".." components of `in` lexically (no file system access).
 * Returns -1 if the result does not fit. */
static int path_clean(char *out, size_t cap, const char *in) {
    size_t len = 0, root = in[0] == '/';
    int kept = 0; /* components that a ".." may remove */
    if (root) out[len++] = '/';
    for (const char *p = in; *p;) {
        while (*p == '/') p++;
        const char *s = p;
        while (*p && *p != '/') p++;
        size_t n = (size_t)(p - s);
        if (n == 0 || (n == 1 && s[0] == '.')) continue;
        if (n == 2 && s[0] == '.' && s[1] == '.' && (kept > 0 || root)) {
            if (kept == 0) continue; /* "/.." is "/" */
            while (len > root && out[len - 1] != '/') len--;
            if (len > root) len--;
            kept--;
            continue;
        }
        if (len + n + 2 > cap) return -1;
        if (len > root) out[len++] = '/';
        memcpy(out + len, s, n);
        len += n;
        kept += !(n == 2 && s[0] == '.' && s[1] == '.');
    }
    if (len == 0) out[len++] = '.';
    out[len] = '\0';
    return 0;
}

/* dir/path (or path alone when absolute or dir is empty), cleaned. */
static int path_join(char *out, size_t cap, const char *dir, const char *path) {
    char tmp[2 * REED_PATH_LEN + 2];
    int n = (path[0] == '/' || !dir || !dir[0])
                ? snprintf(tmp, sizeof tmp, "%s", path)
                : snprintf(tmp, sizeof tmp, "%s/%s", dir, path);
    if (n < 0 || (size_t)n >= sizeof tmp) return -1;
    return path_clean(out, cap, tmp);
}

/* The directory part of a cleaned absolute path ("/a/b.lua" -> "/a"). */
static void path_dirname(char *path) {
    char *slash = strrchr(path, '/');
    if (!slash) strcpy(path, ".");
    else if (slash == path) path[1] = '\0';
    else *slash = '\0';
}

/* The absolute, cleaned form of path (relative to the working directory). */
static int path_absolute(char *out, size_t cap, const char *path) {
    char cwd[REED_PATH_LEN];
    if (path[0] == '/') return path_clean(out, cap, path);
    if (!getcwd(cwd, sizeof cwd)) return -1;
    return path_join(out, cap, cwd, path);
}

/* --- source text: finding the line of a key ---------------------------------- */

static int is_ident(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
}

/* Whether `word = ` (not `==`) starts at s, with a word boundary before. */
static int assign_at(const char *line, const char *s, const char *word, size_t n) {
    if (strncmp(s, word, n) != 0) return 0;
    if (s > line && is_ident((unsigned char)s[-1])) return 0;
    const char *p = s + n;
    while (*p == ' ' || *p == '\t') p++;
    return p[0] == '=' && p[1] != '=';
}

/* The line (1-based) of the nth `word =` at or after line `from`, ignoring
 * text after `--`; 0 when there is none. Lua keeps no lines for table
 * constructor fields, so this is how messages point at a key. */
static int find_assign(const char *text, const char *word, int from, int nth) {
    size_t n = strlen(word);
    int line = 1;
    for (const char *l = text; *l; line++) {
        const char *end = strchr(l, '\n');
        if (!end) end = l + strlen(l);
        if (line >= from) {
            for (const char *s = l; s + n <= end; s++) {
                if (s[0] == '-' && s[1] == '-') break;
                if (assign_at(l, s, word, n) && --nth == 0) return line;
            }
        }
        l = *end ? end + 1 : end;
    }
    return 0;
}

/* The line of the last `return` at the start of a line; 0 if none. */
static int return_line(const char *text) {
    int line = 1, found = 0;
    for (const char *l = text; *l; line++) {
        const char *s = l + strspn(l, " \t");
        if (strncmp(s, "return", 6) == 0 && !is_ident((unsigned char)s[6])) found = line;
        const char *end = strchr(l, '\n');
        if (!end) break;
        l = end + 1;
    }
    return found;
}

/* The line of a dotted key ("train.lr", "sources.2.depth"): each segment is
 * looked for at or after the line of the previous one; a list index k looks
 * for the k-th `name =`. Falls back to the `return` line; 0 if unknown. */
static int key_line(const char *text, const char *key) {
    if (!text) return 0;
    char seg[KEY_LEN];
    int line = 1, found = 0;
    for (const char *p = key; *p;) {
        size_t n = strcspn(p, ".");
        if (n >= sizeof seg) return return_line(text);
        memcpy(seg, p, n);
        seg[n] = '\0';
        p += n + (p[n] == '.');
        int index = (int)strspn(seg, "0123456789") == (int)n ? atoi(seg) : 0;
        int l = index > 0 ? find_assign(text, "name", line, index)
                          : find_assign(text, seg, line, 1);
        found = l > 0;
        if (found) line = l;
    }
    return found ? line : return_line(text);
}

/* --- applying Lua values ----------------------------------------------------- */

typedef struct apply_ctx {
    reed_config *cfg;
    reed_error *err;
    const char *where;          /* file or chunk name; NULL for --set */
    const char *text;           /* the config's text for line lookup, or NULL */
    const char *base_dir;       /* relative paths resolve here */
    const char *set_value;      /* --set: the value's text */
    char key[KEY_LEN];          /* dotted key being applied */
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
    int line = key_line(a->text, a->key);
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
    if (path_join(path, sizeof path, a->base_dir, s))
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
        const field *f = find_field(fields, k);
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
    return apply_section(a, L, source_fields, (char *)s);
}

/* [t] -> [t]: replaces the list of sources. */
static int apply_sources(apply_ctx *a, lua_State *L) {
    lua_Integer n;
    if (!lua_istable(L, -1)) return type_error(a, L, "a list of source tables");
    if (check_source_list(a, L, &n)) return -1;
    for (lua_Integer i = 1; i <= n; i++) {
        reed_source_config *s = &a->cfg->sources[i - 1];
        source_defaults(s);
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

/* --- the sandbox ------------------------------------------------------------- */

typedef struct sandbox {
    size_t mem_used;
    long budget;                            /* hook calls left */
    const char *config_dir;                 /* NULL for strings and --set */
    int depth;                              /* files being loaded */
    char loading[MAX_NEST][REED_PATH_LEN];  /* their absolute paths */
} sandbox;

static sandbox *sandbox_of(lua_State *L) { return *(sandbox **)lua_getextraspace(L); }

/* A realloc that fails past MEM_LIMIT: a config cannot eat the machine. */
static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    sandbox *sb = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        sb->mem_used -= old;
        return NULL;
    }
    if (nsize > old && sb->mem_used - old + nsize > (size_t)MEM_LIMIT) return NULL;
    void *p = realloc(ptr, nsize);
    if (p) sb->mem_used = sb->mem_used - old + nsize;
    return p;
}

/* Count hook: a runaway config (`while true do end`) fails instead of
 * hanging. Once over budget it fires on every instruction, so a pcall in the
 * script cannot swallow the error for long. */
static void budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    sandbox *sb = sandbox_of(L);
    if (--sb->budget >= 0) return;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "config ran too long (over %d instructions)", HOOK_EVERY * HOOK_BUDGET);
}

/* load(chunk [, name [, mode [, env]]]) with mode forced to "t": no binary
 * chunks. Upvalue 1: the original load. */
static int text_only_load(lua_State *L) {
    int nargs = lua_gettop(L) >= 4 ? 4 : 3;           /* keep an explicit env */
    lua_settop(L, nargs);                             /* [chunk, name, mode(, env)] */
    lua_pushliteral(L, "t");
    lua_replace(L, 3);                                /* [chunk, name, "t"(, env)] */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);                                 /* [load, chunk, name, "t"(, env)] */
    lua_call(L, nargs, LUA_MULTRET);                  /* [results...] */
    return lua_gettop(L);
}

/* Raises "file:line: message" at the position of the Lua code that called
 * the running C function (level 1). */
static int raise_at_caller(lua_State *L, const char *fmt, ...) {
    va_list ap;
    luaL_where(L, 1);                                 /* [..., where] */
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);                     /* [..., where, msg] */
    va_end(ap);
    lua_concat(L, 2);                                 /* [..., where..msg] */
    return lua_error(L);
}

static int valid_preset_name(const char *s) {
    if (!s[0]) return 0;
    for (; *s; s++)
        if (!is_ident((unsigned char)*s) && *s != '-') return 0;
    return 1;
}

/* Adds dir/sub (cleaned) to dirs unless it is already there. */
static void add_dir(char dirs[][REED_PATH_LEN], int *n, const char *dir, const char *sub) {
    if (path_join(dirs[*n], REED_PATH_LEN, dir, sub)) return;
    for (int i = 0; i < *n; i++)
        if (strcmp(dirs[i], dirs[*n]) == 0) return;
    (*n)++;
}

/* The directories preset() searches, in order; returns how many (<= 8). */
static int preset_dirs(const sandbox *sb, char dirs[][REED_PATH_LEN]) {
    int n = 0;
    const char *env;
    char exe[REED_PATH_LEN];
    if (sb->depth > 0) { /* the file calling preset(): siblings first */
        snprintf(exe, sizeof exe, "%s", sb->loading[sb->depth - 1]);
        path_dirname(exe);
        add_dir(dirs, &n, exe, ".");
    }
    if (sb->config_dir) {
        add_dir(dirs, &n, sb->config_dir, ".");
        add_dir(dirs, &n, sb->config_dir, "scripts/lua/presets");
    }
    if ((env = getenv("REED_PRESETS")) && env[0]) add_dir(dirs, &n, NULL, env);
    if ((env = getenv("REED_SRC")) && env[0]) add_dir(dirs, &n, env, "scripts/lua/presets");
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) { /* build/reed and build/tests/x in a source tree */
        exe[len] = '\0';
        add_dir(dirs, &n, exe, "../../scripts/lua/presets");
        add_dir(dirs, &n, exe, "../../../scripts/lua/presets");
    }
    return n;
}

static int is_loading(const sandbox *sb, const char *path) {
    for (int i = 0; i < sb->depth; i++)
        if (strcmp(sb->loading[i], path) == 0) return 1;
    return 0;
}

/* Finds <dir>/<name>.lua in the preset directories, skipping files that are
 * being loaded (a user's reed.lua may call preset "reed"). On failure the
 * searched directories are left in `searched`. */
static int find_preset(const sandbox *sb, const char *name, char *path,
                       char *searched, size_t cap) {
    char dirs[8][REED_PATH_LEN], file[REED_PATH_LEN + 8];
    struct stat st;
    int n = preset_dirs(sb, dirs);
    size_t len = 0;
    searched[0] = '\0';
    for (int i = 0; i < n; i++) {
        snprintf(file, sizeof file, "%s.lua", name);
        if (path_join(path, REED_PATH_LEN, dirs[i], file)) continue;
        if (!is_loading(sb, path) && stat(path, &st) == 0 && S_ISREG(st.st_mode)) return 0;
        int w = snprintf(searched + len, cap - len, "%s%s", i ? ", " : "", dirs[i]);
        if (w > 0 && (size_t)w < cap - len) len += (size_t)w;
    }
    return -1;
}

/* preset(name) -> table: runs scripts/lua/presets/<name>.lua in this sandbox
 * and returns the table it returns (a fresh one on every call). */
static int lua_preset(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    sandbox *sb = sandbox_of(L);
    char path[REED_PATH_LEN], searched[2048];
    if (!valid_preset_name(name))
        return raise_at_caller(L, "preset: bad name '%s' (letters, digits, '_', '-')", name);
    if (find_preset(sb, name, path, searched, sizeof searched))
        return raise_at_caller(L, "preset '%s' not found (searched %s)", name, searched);
    if (sb->depth >= MAX_NEST)
        return raise_at_caller(L, "preset '%s': presets nested too deeply", name);
    if (luaL_loadfilex(L, path, "t") != LUA_OK) return lua_error(L); /* [name, f] */
    snprintf(sb->loading[sb->depth++], REED_PATH_LEN, "%s", path);
    int status = lua_pcall(L, 0, 1, 0);               /* [name, result] */
    sb->depth--;
    if (status != LUA_OK) return lua_error(L);
    if (!lua_istable(L, -1))
        return raise_at_caller(L, "preset '%s' (%s) returned %s, not a table", name,
                               path, luaL_typename(L, -1));
    return 1;
}

/* [] -> []: opens base (without dofile/loadfile, load text-only), string,
 * table and math; adds preset(). Runs protected (it allocates). */
static int sandbox_open(lua_State *L) {
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);     /* [_G] */
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    lua_pop(L, 3);                                    /* [_G] */
    lua_pushnil(L);
    lua_setfield(L, -2, "dofile");
    lua_pushnil(L);
    lua_setfield(L, -2, "loadfile");
    lua_getfield(L, -1, "load");                      /* [_G, load] */
    lua_pushcclosure(L, text_only_load, 1);           /* [_G, text_only_load] */
    lua_setfield(L, -2, "load");                      /* [_G] */
    lua_pushcfunction(L, lua_preset);
    lua_setfield(L, -2, "preset");
    lua_pop(L, 1);                                    /* [] */
    return 0;
}

/* A new sandboxed state using sb, or NULL with err filled. */
static lua_State *sandbox_new(sandbox *sb, reed_error *err) {
    lua_State *L = lua_newstate(limited_alloc, sb);
    if (!L) {
        reed_errorf(err, "cannot create a Lua state (out of memory)");
        return NULL;
    }
    *(sandbox **)lua_getextraspace(L) = sb;
    sb->budget = HOOK_BUDGET;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
    lua_pushcfunction(L, sandbox_open);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        reed_errorf(err, "cannot open the Lua libraries: %s", lua_tostring(L, -1));
        lua_close(L);
        return NULL;
    }
    return L;
}

/* The message of a Lua error at the top (any type, like lua.c). */
static const char *error_message(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    if (msg) return msg;
    return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
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
                                    error_message(L));
        lua_pop(L, 1);
        return -1;
    }
    return a->failed ? -1 : 0;
}

/* [a, t] -> []: applies a config table returned by a chunk. */
static int apply_top(lua_State *L) {
    apply_ctx *a = lua_touserdata(L, 1);
    lua_settop(L, 2);
    apply_section(a, L, top_fields, (char *)a->cfg);
    return 0;
}

/* Validates; a message "key: ..." gets the file and the key's line. */
static int validate_at(const apply_ctx *a, const reed_config *cfg) {
    reed_error verr;
    char key[KEY_LEN];
    if (reed_config_validate(cfg, &verr) == 0) return 0;
    size_t n = strcspn(verr.msg, ":");
    snprintf(key, sizeof key, "%.*s", (int)(n < sizeof key ? n : sizeof key - 1), verr.msg);
    int line = key_line(a->text, key);
    if (line > 0) return reed_errorf(a->err, "%s:%d: %s", a->where, line, verr.msg);
    return reed_errorf(a->err, "%s: %s", a->where, verr.msg);
}

/* [chunk] -> []: runs a loaded chunk and applies the table it returns to a
 * copy of the defaults; commits to cfg only when everything succeeds. */
static int run_chunk(lua_State *L, apply_ctx *a, reed_config *cfg) {
    reed_config tmp;
    if (lua_pcall(L, 0, 1, 0) != LUA_OK)              /* [result] or [msg] */
        return reed_errorf(a->err, "%s", error_message(L));
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
        if (len < cap - 1 || cap >= (size_t)MEM_LIMIT) break;
        char *grown = realloc(buf, cap *= 2);
        if (!grown) free(buf);
        buf = grown;
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

int reed_config_load_file(reed_config *cfg, const char *path, reed_error *err) {
    static sandbox sb_zero;
    sandbox sb = sb_zero;
    char dir[REED_PATH_LEN];
    if (!path || path_absolute(sb.loading[0], REED_PATH_LEN, path))
        return reed_errorf(err, "%s: bad config path", path ? path : "(null)");
    snprintf(dir, sizeof dir, "%s", sb.loading[0]);
    path_dirname(dir);
    sb.depth = 1;
    sb.config_dir = dir;
    lua_State *L = sandbox_new(&sb, err);
    if (!L) return -1;
    char *text = read_text(path);
    apply_ctx a = {.err = err, .where = path, .text = text, .base_dir = dir};
    int rc = luaL_loadfilex(L, path, "t") == LUA_OK
                 ? run_chunk(L, &a, cfg)
                 : reed_errorf(err, "%s", error_message(L));
    lua_close(L);
    free(text);
    return rc;
}

int reed_config_load_string(reed_config *cfg, const char *text, const char *chunkname,
                            reed_error *err) {
    static sandbox sb_zero;
    sandbox sb = sb_zero;
    char cwd[REED_PATH_LEN], name[REED_PATH_LEN];
    if (!text) return reed_errorf(err, "%s: no config text", chunkname ? chunkname : "config");
    if (!chunkname) chunkname = "config";
    if (!getcwd(cwd, sizeof cwd))
        return reed_errorf(err, "%s: cannot get the working directory: %s", chunkname,
                           strerror(errno));
    lua_State *L = sandbox_new(&sb, err);
    if (!L) return -1;
    snprintf(name, sizeof name, "=%s", chunkname);
    apply_ctx a = {.err = err, .where = chunkname, .text = text, .base_dir = cwd};
    int rc = luaL_loadbufferx(L, text, strlen(text), name, "t") == LUA_OK
                 ? run_chunk(L, &a, cfg)
                 : reed_errorf(err, "%s", error_message(L));
    lua_close(L);
    return rc;
}

/* --- --set key=value --------------------------------------------------------- */

static int unknown_key(apply_ctx *a, const field *fields) {
    char keys[512];
    list_keys(keys, sizeof keys, fields, NULL);
    return fail(a, "unknown key (expected one of: %s)", keys);
}

/* Splits "a.b.c" into at most max non-empty segments; -1 otherwise. */
static int split_key(const char *key, char segs[][KEY_LEN], int max) {
    int n = 0;
    for (const char *p = key;; n++) {
        size_t len = strcspn(p, ".");
        if (n == max || len == 0 || len >= KEY_LEN) return -1;
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
static int set_source(apply_ctx *a, lua_State *L, char segs[][KEY_LEN], int n) {
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
        if (is_new) source_defaults(&c->sources[slot]);
        if (apply_source(a, L, &c->sources[slot])) return -1;
        c->n_sources += is_new;
        return 0;
    }
    if (is_new)
        return fail(a, "no source %s yet; add it whole, e.g. sources.%s={name=..., "
                    "file=..., depth=...}", segs[0], segs[0]);
    const field *f = find_field(source_fields, segs[1]);
    if (!f) return unknown_key(a, source_fields);
    set_text_for_strings(a, L, f);
    return apply_value(a, L, f, (char *)&c->sources[slot]);
}

/* [v] -> [v]: applies the value to the dotted key in a->key. */
static int set_key(apply_ctx *a, lua_State *L) {
    char segs[3][KEY_LEN];
    int n = split_key(a->key, segs, 3);
    const field *f = n > 0 ? find_field(top_fields, segs[0]) : NULL;
    if (!f) return unknown_key(a, top_fields);
    if (f->type == F_SOURCES) return set_source(a, L, segs + 1, n - 1);
    if (n == 1) {
        set_text_for_strings(a, L, f);
        return apply_value(a, L, f, (char *)a->cfg);
    }
    const field *g = f->type == F_SECTION && n == 2 ? find_field(f->sub, segs[1]) : NULL;
    if (!g) return unknown_key(a, f->type == F_SECTION ? f->sub : top_fields);
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
    static sandbox sb_zero;
    sandbox sb = sb_zero;
    char cwd[REED_PATH_LEN];
    reed_config tmp;
    if (!getcwd(cwd, sizeof cwd))
        return reed_errorf(err, "--set %s: cannot get the working directory: %s", key,
                           strerror(errno));
    lua_State *L = sandbox_new(&sb, err);
    if (!L) return -1;
    memcpy(&tmp, cfg, sizeof tmp);
    apply_ctx a = {.cfg = &tmp, .err = err, .base_dir = cwd, .set_value = value};
    snprintf(a.key, sizeof a.key, "%s", key);
    int rc = call_apply(&a, L, set_protected, 0);
    lua_close(L);
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
    else if (!key[0] || strlen(key) >= KEY_LEN)
        rc = reed_errorf(err, "--set %s: expected key=value with a dotted key", assignment);
    else rc = set_in_sandbox(cfg, key, value, err);
    free(key);
    free(value);
    return rc;
}

/* --- writing a config as Lua ------------------------------------------------- */

typedef struct writer {
    char *buf;
    size_t cap, len;    /* len counts everything, even what did not fit */
} writer;

static void put(writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(writer *w, const char *fmt, ...) {
    size_t room = w->buf && w->len < w->cap ? w->cap - w->len : 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(room ? w->buf + w->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) w->len += (size_t)n;
}

/* A Lua string literal: quotes, backslashes and control bytes escaped. */
static void put_quoted(writer *w, const char *s) {
    put(w, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') put(w, "\\%c", *p);
        else if (*p == '\n') put(w, "\\n");
        else if (*p < 0x20 || *p == 0x7f) put(w, "\\%03d", *p);
        else put(w, "%c", *p);
    }
    put(w, "\"");
}

/* %.9g reads back as the same float; ".0" keeps a float (and -0.0) a float
 * in Lua; non-finite values as expressions. */
static void put_float(writer *w, float v) {
    char s[32];
    if (isnan(v)) {
        put(w, "(0/0)");
        return;
    }
    if (isinf(v)) {
        put(w, v > 0 ? "(1/0)" : "(-1/0)");
        return;
    }
    snprintf(s, sizeof s, "%.9g", (double)v);
    put(w, "%s%s", s, strpbrk(s, ".e") ? "" : ".0");
}

static void write_fields(writer *w, const field *fields, const char *base, int indent);

static int name_count(const char *const *names) {
    int n = 0;
    while (names[n]) n++;
    return n;
}

static void write_sources(writer *w, const reed_config *cfg, int indent) {
    put(w, "{\n");
    for (int i = 0; i < cfg->n_sources && i < REED_MAX_SOURCES; i++) {
        put(w, "%*s{\n", indent + 2, "");
        write_fields(w, source_fields, (const char *)&cfg->sources[i], indent + 4);
        put(w, "%*s},\n", indent + 2, "");
    }
    put(w, "%*s}", indent, "");
}

static void write_value(writer *w, const field *f, const char *base, int indent) {
    const char *p = base + f->off;
    int i;
    float a, b;
    uint64_t u;
    switch (f->type) {
    case F_INT: memcpy(&i, p, sizeof i); put(w, "%d", i); break;
    case F_BOOL: memcpy(&i, p, sizeof i); put(w, "%s", i ? "true" : "false"); break;
    case F_FLOAT: memcpy(&a, p, sizeof a); put_float(w, a); break;
    case F_U64: /* Lua integers are signed: hex wraps the top half around */
        memcpy(&u, p, sizeof u);
        if (u <= INT64_MAX) put(w, "%" PRIu64, u);
        else put(w, "0x%" PRIx64, u);
        break;
    case F_STR: case F_PATH: case F_PRESET: put_quoted(w, p); break;
    case F_ENUM:
        memcpy(&i, p, sizeof i);
        if (i >= 0 && i < name_count(f->names)) {
            put_quoted(w, f->names[i]);
            break;
        }
        put(w, "%d", i); /* not a valid value: reading it back fails */
        break;
    case F_PAIR:
        memcpy(&a, p, sizeof a);
        memcpy(&b, base + f->aux, sizeof b);
        put(w, "{ ");
        put_float(w, a);
        put(w, ", ");
        put_float(w, b);
        put(w, " }");
        break;
    case F_SECTION:
        put(w, "{\n");
        write_fields(w, f->sub, p, indent + 2);
        put(w, "%*s}", indent, "");
        break;
    case F_SOURCES: write_sources(w, (const reed_config *)(const void *)base, indent); break;
    }
}

static void write_fields(writer *w, const field *fields, const char *base, int indent) {
    for (const field *f = fields; f->key; f++) {
        put(w, "%*s%s = ", indent, "", f->key);
        write_value(w, f, base, indent);
        put(w, ",\n");
    }
}

int reed_config_to_lua(const reed_config *cfg, char *buf, size_t cap) {
    writer w = {buf, cap, 0};
    put(&w, "-- reed config (resolved: every field explicit)\nreturn {\n");
    write_fields(&w, top_fields, (const char *)cfg, 2);
    put(&w, "}\n");
    if (!buf || w.len >= cap || w.len > INT_MAX) return -1;
    return (int)w.len;
}
