/* String helpers shared by the Lua modules (lua_sandbox.c, lua_config.c):
 * file paths handled lexically, identifier characters, and finding the line
 * of a dotted config key in a config's source text. No Lua here. */
#ifndef REED_LUA_TEXT_H
#define REED_LUA_TEXT_H

#include <stddef.h>

enum { REED_KEY_LEN = 256 };    /* a dotted config key, with its NUL */

/* dir/path (or path alone when absolute or dir is empty), cleaned of "."
 * and ".." components. Returns -1 if the result does not fit in cap. */
int reed_filepath_join(char *out, size_t cap, const char *dir, const char *path);

/* The directory part of a cleaned absolute path ("/a/b.lua" -> "/a"). */
void reed_filepath_dirname(char *path);

/* The absolute, cleaned form of path (relative to the working directory).
 * Returns -1 if it does not fit or the working directory is unknown. */
int reed_filepath_absolute(char *out, size_t cap, const char *path);

/* Whether c may appear in a Lua name: [A-Za-z0-9_]. */
int reed_is_ident(int c);

/* The line (1-based) of a dotted key ("train.lr", "sources.2.depth") in a
 * config's text, the `return` line when the key is not found, 0 if unknown
 * (or text is NULL). */
int reed_key_line(const char *text, const char *key);

#endif
