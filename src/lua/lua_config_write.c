/* Writing a reed_config back out as a Lua chunk, driven by the same field
 * tables that read it (lua_config_fields.h). */
#include "lua_config.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lua_config_fields.h"

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
        write_fields(w, reed_config_source_fields, (const char *)&cfg->sources[i], indent + 4);
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
    write_fields(&w, reed_config_top_fields, (const char *)cfg, 2);
    put(&w, "}\n");
    if (!buf || w.len >= cap || w.len > INT_MAX) return -1;
    return (int)w.len;
}
