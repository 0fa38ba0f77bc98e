/* String helpers for the Lua modules: lexical paths and key lines. */
#include "lua_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

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
int reed_filepath_join(char *out, size_t cap, const char *dir, const char *path) {
    char tmp[2 * REED_PATH_LEN + 2];
    int n = (path[0] == '/' || !dir || !dir[0])
                ? snprintf(tmp, sizeof tmp, "%s", path)
                : snprintf(tmp, sizeof tmp, "%s/%s", dir, path);
    if (n < 0 || (size_t)n >= sizeof tmp) return -1;
    return path_clean(out, cap, tmp);
}

/* The directory part of a cleaned absolute path ("/a/b.lua" -> "/a"). */
void reed_filepath_dirname(char *path) {
    char *slash = strrchr(path, '/');
    if (!slash) strcpy(path, ".");
    else if (slash == path) path[1] = '\0';
    else *slash = '\0';
}

/* The absolute, cleaned form of path (relative to the working directory). */
int reed_filepath_absolute(char *out, size_t cap, const char *path) {
    char cwd[REED_PATH_LEN];
    if (path[0] == '/') return path_clean(out, cap, path);
    if (!getcwd(cwd, sizeof cwd)) return -1;
    return reed_filepath_join(out, cap, cwd, path);
}

/* --- source text: finding the line of a key ---------------------------------- */

int reed_is_ident(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
}

/* Whether `word = ` (not `==`) starts at s, with a word boundary before. */
static int assign_at(const char *line, const char *s, const char *word, size_t n) {
    if (strncmp(s, word, n) != 0) return 0;
    if (s > line && reed_is_ident((unsigned char)s[-1])) return 0;
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
        if (strncmp(s, "return", 6) == 0 && !reed_is_ident((unsigned char)s[6])) found = line;
        const char *end = strchr(l, '\n');
        if (!end) break;
        l = end + 1;
    }
    return found;
}

/* The line of a dotted key ("train.lr", "sources.2.depth"): each segment is
 * looked for at or after the line of the previous one; a list index k looks
 * for the k-th `name =`. Falls back to the `return` line; 0 if unknown. */
int reed_key_line(const char *text, const char *key) {
    if (!text) return 0;
    char seg[REED_KEY_LEN];
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
