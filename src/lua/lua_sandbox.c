/* The sandboxed Lua 5.4 state that configs (and presets) run in: an
 * allocator capped at REED_SANDBOX_MEM_LIMIT, an instruction budget, the base
 * library without dofile/loadfile and with a text-only load, string, table,
 * math, and preset(name). */
#include "lua_sandbox.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lua_text.h"

enum {
    HOOK_EVERY = 1000,          /* instructions between budget checks */
    HOOK_BUDGET = 100000,       /* checks: 1e8 instructions in all */
};

static reed_sandbox *sandbox_of(lua_State *L) { return *(reed_sandbox **)lua_getextraspace(L); }

/* A realloc that fails past REED_SANDBOX_MEM_LIMIT: a config cannot eat the machine. */
static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    reed_sandbox *sb = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        sb->mem_used -= old;
        return NULL;
    }
    if (nsize > old && sb->mem_used - old + nsize > (size_t)REED_SANDBOX_MEM_LIMIT) return NULL;
    void *p = realloc(ptr, nsize);
    if (p) sb->mem_used = sb->mem_used - old + nsize;
    return p;
}

/* Count hook: a runaway config (`while true do end`) fails instead of
 * hanging. Once over budget it fires on every instruction, so a pcall in the
 * script cannot swallow the error for long. */
static void budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    reed_sandbox *sb = sandbox_of(L);
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
        if (!reed_is_ident((unsigned char)*s) && *s != '-') return 0;
    return 1;
}

/* Adds dir/sub (cleaned) to dirs unless it is already there. */
static void add_dir(char dirs[][REED_PATH_LEN], int *n, const char *dir, const char *sub) {
    if (reed_filepath_join(dirs[*n], REED_PATH_LEN, dir, sub)) return;
    for (int i = 0; i < *n; i++)
        if (strcmp(dirs[i], dirs[*n]) == 0) return;
    (*n)++;
}

/* The directories preset() searches, in order; returns how many (<= 8). */
static int preset_dirs(const reed_sandbox *sb, char dirs[][REED_PATH_LEN]) {
    int n = 0;
    const char *env;
    char exe[REED_PATH_LEN];
    if (sb->depth > 0) { /* the file calling preset(): siblings first */
        snprintf(exe, sizeof exe, "%s", sb->loading[sb->depth - 1]);
        reed_filepath_dirname(exe);
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

static int is_loading(const reed_sandbox *sb, const char *path) {
    for (int i = 0; i < sb->depth; i++)
        if (strcmp(sb->loading[i], path) == 0) return 1;
    return 0;
}

/* Finds <dir>/<name>.lua in the preset directories, skipping files that are
 * being loaded (a user's reed.lua may call preset "reed"). On failure the
 * searched directories are left in `searched`. */
static int find_preset(const reed_sandbox *sb, const char *name, char *path,
                       char *searched, size_t cap) {
    char dirs[8][REED_PATH_LEN], file[REED_PATH_LEN + 8];
    struct stat st;
    int n = preset_dirs(sb, dirs);
    size_t len = 0;
    searched[0] = '\0';
    for (int i = 0; i < n; i++) {
        snprintf(file, sizeof file, "%s.lua", name);
        if (reed_filepath_join(path, REED_PATH_LEN, dirs[i], file)) continue;
        if (!is_loading(sb, path) && stat(path, &st) == 0 && S_ISREG(st.st_mode)) return 0;
        int w = snprintf(searched + len, cap - len, "%s%s", i ? ", " : "", dirs[i]);
        if (w > 0 && (size_t)w < cap - len) len += (size_t)w;
    }
    return -1;
}

/* preset(name) -> table: runs scripts/lua/presets/<name>.lua in this reed_sandbox
 * and returns the table it returns (a fresh one on every call). */
static int lua_preset(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    reed_sandbox *sb = sandbox_of(L);
    char path[REED_PATH_LEN], searched[2048];
    if (!valid_preset_name(name))
        return raise_at_caller(L, "preset: bad name '%s' (letters, digits, '_', '-')", name);
    if (find_preset(sb, name, path, searched, sizeof searched))
        return raise_at_caller(L, "preset '%s' not found (searched %s)", name, searched);
    if (sb->depth >= REED_SANDBOX_MAX_NEST)
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

lua_State *reed_sandbox_new(reed_sandbox *sb, reed_error *err) {
    lua_State *L = lua_newstate(limited_alloc, sb);
    if (!L) {
        reed_errorf(err, "cannot create a Lua state (out of memory)");
        return NULL;
    }
    *(reed_sandbox **)lua_getextraspace(L) = sb;
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

const char *reed_sandbox_error_message(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    if (msg) return msg;
    return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
}

void reed_sandbox_close(lua_State *L) { lua_close(L); }
