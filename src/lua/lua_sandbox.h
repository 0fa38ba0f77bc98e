/* A sandboxed Lua 5.4 state for user text (configs now, a REPL later):
 * allocations capped at REED_SANDBOX_MEM_LIMIT bytes, a count hook that stops
 * a runaway script after about 1e8 instructions, the base library without
 * dofile/loadfile and with `load` forced to text mode, string, table and
 * math, plus preset(name), which returns the table of
 * scripts/lua/presets/<name>.lua (searched next to the file calling it, in
 * config_dir, $REED_PRESETS, $REED_SRC and the source tree of the running
 * executable). */
#ifndef REED_LUA_SANDBOX_H
#define REED_LUA_SANDBOX_H

#include <stddef.h>

#include <lua.h>

#include "config.h"

enum {
    REED_SANDBOX_MEM_LIMIT = 256 << 20, /* bytes a sandbox may allocate */
    REED_SANDBOX_MAX_NEST = 8,          /* config + nested preset() calls */
};

/* One sandbox's bookkeeping. The caller owns it, zeroes it and keeps it alive
 * until reed_sandbox_close; to run a file, set config_dir, depth = 1 and
 * loading[0] (the file's absolute path) before reed_sandbox_new. */
typedef struct reed_sandbox {
    size_t mem_used;
    long budget;                            /* hook calls left */
    const char *config_dir;                 /* NULL for strings and --set */
    int depth;                              /* files being loaded */
    char loading[REED_SANDBOX_MAX_NEST][REED_PATH_LEN];  /* their absolute paths */
} reed_sandbox;

/* A new sandboxed state using sb, or NULL with err filled. */
lua_State *reed_sandbox_new(reed_sandbox *sb, reed_error *err);

/* Closes a state from reed_sandbox_new (sb may be reused or dropped after). */
void reed_sandbox_close(lua_State *L);

/* The message of a Lua error at the top (any type, like lua.c). */
const char *reed_sandbox_error_message(lua_State *L);

#endif
