/* The field tables shared by lua_config.c (applying tables, --set) and
 * lua_config_write.c (the writer): one {key, type, offset} entry per config
 * key, a section's table ending with an entry whose key is NULL. Internal to
 * the lua_config modules. */
#ifndef REED_LUA_CONFIG_FIELDS_H
#define REED_LUA_CONFIG_FIELDS_H

#include <stddef.h>

#include "config.h"

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

/* The top-level keys (name, model, ..., sources) of a reed_config. */
extern const field reed_config_top_fields[];

/* The keys of one reed_source_config. */
extern const field reed_config_source_fields[];

/* The entry of fields named key, or NULL. */
const field *reed_config_find_field(const field *fields, const char *key);

/* A new source: required keys (name, file, depth) left empty/0 so that
 * validation asks for them. */
void reed_config_source_defaults(reed_source_config *s);

#endif
