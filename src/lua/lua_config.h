/* Lua 5.4 configs: load a config file (or the text of a saved one) in a
 * sandbox, apply `--set key=value` overrides, and write a resolved config
 * back out as Lua. Each function leaves *cfg untouched when it fails.
 *
 * A config file returns a table with the sections name, model, data, train,
 * curriculum, sample and sources (see README "Config schema"); unknown keys
 * and wrong types are errors that name the file, the line and the dotted key,
 * e.g. "myrun.lua:12: train.lr: expected a number, got string". Relative
 * paths (data.dir, data.images, data.labels, sources[i].file) resolve against
 * the config file's directory and are stored absolute. The sandbox has the
 * base library without dofile/loadfile (load takes text only), string, table
 * and math, plus preset(name), which returns the table of
 * scripts/lua/presets/<name>.lua. */
#ifndef REED_LUA_CONFIG_H
#define REED_LUA_CONFIG_H

#include <stddef.h>

#include "config.h"

/* Loads a config file: starts from reed_config_defaults, applies the table
 * the file returns, then validates. Returns 0, or -1 with err filled. */
int reed_config_load_file(reed_config *cfg, const char *path, reed_error *err);

/* The same for config text (e.g. a run's saved config.lua); chunkname names
 * it in messages. Relative paths resolve against the working directory. */
int reed_config_load_string(reed_config *cfg, const char *text,
                            const char *chunkname, reed_error *err);

/* Applies one `key=value` override to cfg (dotted keys such as train.lr,
 * sources.1.coeff or sources.dino.coeff), then validates. The value is read
 * as a Lua expression (number, boolean, string, table) and otherwise taken as
 * a plain string; `sources.<k>=nil` removes a source and
 * `sources.<n+1>={...}` adds one. Relative paths resolve against the working
 * directory. */
int reed_config_set(reed_config *cfg, const char *assignment, reed_error *err);

/* Writes cfg as a Lua chunk `return { ... }` with every field explicit, so
 * that reed_config_load_string reads back the same struct. Returns the length
 * written (without the NUL), or -1 if it does not fit in cap bytes. */
int reed_config_to_lua(const reed_config *cfg, char *buf, size_t cap);

#endif
