/* Config tests: defaults and presets, the Lua loader (presets, preset(),
 * relative paths), the round trip through reed_config_to_lua, --set, the
 * sandbox, and every error path with the text of its message. Prints one
 * line per check; exits 1 if any failed. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "lua/lua_config.h"
#include "check.h"

static char tmpdir[256];
static char srcdir[1024];


/* Writes text to tmpdir/name; returns the path (static buffer). */
static const char *write_file(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loading `text` (written as tmpdir/cfg.lua) fails with a message that
 * contains each of the given fragments (NULL-terminated). */
static void expect_load_error(const char *what, const char *text, ...) {
    reed_config cfg, before;
    reed_error err = {{0}};
    reed_config_defaults(&cfg);
    before = cfg;
    const char *path = write_file("cfg.lua", text);
    int rc = reed_config_load_file(&cfg, path, &err);
    int ok = rc == -1 && memcmp(&cfg, &before, sizeof cfg) == 0;
    va_list ap;
    va_start(ap, text);
    for (const char *frag; (frag = va_arg(ap, const char *));)
        ok = ok && strstr(err.msg, frag) != NULL;
    va_end(ap);
    check(ok, "%s -> \"%s\"", what, err.msg);
}

/* reed_config_set(assignment) fails with `frag` and leaves cfg unchanged. */
static void expect_set_error(reed_config *cfg, const char *assignment, const char *frag) {
    reed_config before;
    reed_error err = {{0}};
    memcpy(&before, cfg, sizeof before);
    int rc = reed_config_set(cfg, assignment, &err);
    check(rc == -1 && strstr(err.msg, frag) && memcmp(cfg, &before, sizeof before) == 0,
          "--set %s fails -> \"%s\"", assignment, err.msg);
}

static int set_ok(reed_config *cfg, const char *assignment) {
    reed_error err = {{0}};
    int rc = reed_config_set(cfg, assignment, &err);
    if (rc) printf("     (--set %s: %s)\n", assignment, err.msg);
    return rc == 0;
}

static int load_text(reed_config *cfg, const char *name, const char *text, reed_error *err) {
    return reed_config_load_file(cfg, write_file(name, text), err);
}

/* The source tree: $REED_SRC (ctest sets it), the working directory, or an
 * ancestor of the test binary (build/test_config, build/tests/test_config). */
static void find_srcdir(void) {
    char exe[1024], up1[1100], up2[1100];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    snprintf(up1, sizeof up1, "%s/../..", exe);
    snprintf(up2, sizeof up2, "%s/../../..", exe);
    const char *env = getenv("REED_SRC");
    const char *candidates[] = {env ? env : "", ".", up1, up2};
    struct stat st;
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/scripts/lua/presets/sit.lua", candidates[i]);
        if (candidates[i][0] && stat(p, &st) == 0 && realpath(candidates[i], srcdir)) {
            setenv("REED_SRC", srcdir, 1);
            return;
        }
    }
    fprintf(stderr, "cannot find scripts/lua/presets (set REED_SRC)\n");
    exit(1);
}

/* --- defaults, model presets, names -------------------------------------- */

static void test_defaults(void) {
    reed_config cfg;
    reed_error err = {{0}};
    reed_config_defaults(&cfg);
    check(reed_config_validate(&cfg, &err) == 0, "defaults validate (%s)", err.msg);
    check(strcmp(cfg.name, "run") == 0 && strcmp(cfg.model.preset, "tiny") == 0 &&
              cfg.model.hidden == 128 && cfg.model.depth == 4 && cfg.model.patch == 4 &&
              cfg.train.steps == 600 && cfg.train.batch == 64 && cfg.train.lr == 2e-4f &&
              cfg.sample.class_label == -1 && cfg.sample.ema == 1 && cfg.n_sources == 0 &&
              cfg.model.class_dropout == 0.1f && cfg.curriculum.proj_coeff == 0.5f,
          "default values");
    reed_model_config m;
    check(reed_model_preset(&m, "small", &err) == 0 && m.hidden == 256 && m.depth == 8 &&
              m.patch == 2 && m.in_channels == 1 && m.num_classes == 10,
          "preset small");
    check(reed_model_preset(&m, "SiT-XL/2", &err) == 0 && m.hidden == 1152 && m.depth == 28 &&
              m.heads == 16 && m.patch == 2 && m.in_channels == 4 && m.image_size == 32 &&
              m.num_classes == 1000 && strcmp(m.preset, "SiT-XL/2") == 0,
          "preset SiT-XL/2");
    check(reed_model_preset(&m, "B/4", &err) == 0 && m.hidden == 768 && m.patch == 4,
          "preset B/4");
    check(reed_model_preset(&m, "B/3", &err) == -1 && strstr(err.msg, "unknown model preset"),
          "preset B/3 rejected -> \"%s\"", err.msg);
    check(strcmp(reed_resample_names[REED_RESAMPLE_AREA], "area") == 0 &&
              strcmp(reed_resample_names[REED_RESAMPLE_BILINEAR], "bilinear") == 0 &&
              strcmp(reed_weighting_names[REED_WEIGHT_CUTOFF], "cutoff") == 0 &&
              strcmp(reed_sampler_names[REED_SAMPLER_SDE], "sde") == 0,
          "enum names follow the enum values");
    check(reed_name_index(reed_decay_names, "cosine") == REED_DECAY_COSINE &&
              reed_name_index(reed_decay_names, "nope") == -1,
          "reed_name_index");
}

/* --- presets and preset() -------------------------------------------------- */

static void load_preset(const char *name, reed_config *cfg) {
    char path[1200];
    reed_error err = {{0}};
    snprintf(path, sizeof path, "%s/scripts/lua/presets/%s.lua", srcdir, name);
    int rc = reed_config_load_file(cfg, path, &err);
    check(rc == 0, "load preset %s.lua (%s)", name, rc ? err.msg : "ok");
}

static void test_presets(void) {
    reed_config cfg;
    load_preset("sit", &cfg);
    check(cfg.n_sources == 0 && strcmp(cfg.model.preset, "tiny") == 0 &&
              strcmp(cfg.name, "sit") == 0,
          "sit: no sources, model tiny");
    load_preset("repa", &cfg);
    check(cfg.n_sources == 1 && strcmp(cfg.sources[0].name, "enc") == 0 &&
              cfg.sources[0].kind == REED_SOURCE_TOKEN && cfg.sources[0].depth == 2 &&
              cfg.curriculum.proj_coeff == 0.5f && cfg.sources[0].from == REED_FROM_TEACHER &&
              cfg.sources[0].file[0] == '\0',
          "repa: one token source from the teacher");
    load_preset("reed", &cfg);
    check(cfg.n_sources == 2 && cfg.sources[1].kind == REED_SOURCE_GLOBAL &&
              cfg.sources[1].depth == 3 && cfg.curriculum.diffusion_start == 100 &&
              cfg.curriculum.diffusion_warmup == 100 &&
              cfg.curriculum.align_decay == REED_DECAY_COSINE &&
              cfg.curriculum.align_steps == cfg.train.steps,
          "reed: two sources at depths 2 and 3, curriculum");
}

static void test_preset_function(void) {
    reed_config cfg;
    reed_error err = {{0}};
    char want[512];
    int rc = load_text(&cfg, "mine.lua",
                       "local c = preset \"reed\"\nc.train.steps = 100\n"
                       "c.sources[1].from = \"file\"\n"
                       "c.sources[1].file = \"features/enc_tokens.npy\"\nreturn c\n", &err);
    snprintf(want, sizeof want, "%s/features/enc_tokens.npy", tmpdir);
    check(rc == 0 && cfg.train.steps == 100 && cfg.n_sources == 2 &&
              strcmp(cfg.sources[0].file, want) == 0,
          "preset \"reed\" from a config; files resolve next to the config (%s)",
          rc ? err.msg : cfg.sources[0].file);
    rc = load_text(&cfg, "reed.lua", "local c = preset 'reed'\nc.name = 'mine'\nreturn c\n",
                   &err);
    check(rc == 0 && strcmp(cfg.name, "mine") == 0 && cfg.n_sources == 2,
          "a config named reed.lua may call preset 'reed' (%s)", rc ? err.msg : "ok");
    write_file("local_base.lua", "return { train = { steps = 7 } }\n");
    rc = load_text(&cfg, "cfg.lua", "return preset 'local_base'\n", &err);
    check(rc == 0 && cfg.train.steps == 7, "preset() finds a preset next to the config (%s)",
          rc ? err.msg : "ok");
    expect_load_error("unknown preset", "local x = 1\nreturn preset 'nope'\n",
                      "cfg.lua:2: preset 'nope' not found", NULL);
    expect_load_error("bad preset name", "return preset '../x'\n", "cfg.lua:1: preset: bad name",
                      NULL);
}

/* --- a full config file ---------------------------------------------------- */

static const char full_config[] =
    "return {\n"
    "  name = \"reed-fmnist\",\n"
    "  model = { preset = \"tiny\", class_dropout = 0.2, depth = 6 },\n"
    "  data = { dataset = \"npy\", images = \"x.npy\", labels = \"../y.npy\", limit = 100 },\n"
    "  train = { steps = 50, batch = 8, lr = 3e-4, betas = {0.8, 0.95}, eps = 1e-7,\n"
    "            weight_decay = 0.01, grad_clip = 0, ema_decay = 0.99, seed = 42,\n"
    "            threads = 2, path = \"cosine\", time_sampling = \"lognormal\",\n"
    "            log_every = 1, sample_every = 0, ckpt_every = 25, keep_ckpts = 0 },\n"
    "  curriculum = { proj_coeff = 1, diffusion_start = 5, diffusion_warmup = 5,\n"
    "                 diffusion_decay = \"linear\", align_decay = \"linear\", align_steps = 20 },\n"
    "  sample = { n = 4, steps = 10, sampler = \"heun\", cfg = 2.5, cfg_interval = {0.1, 0.9},\n"
    "             seed = 7, ema = false, class = 3 },\n"
    "  sources = {\n"
    "    { name = \"dino\", kind = \"token\", file = \"/abs/feats.npy\", depth = 5, coeff = 0.5,\n"
    "      weighting = \"cutoff\", cutoff = {0.2, 0.8}, projector_dim = 64,\n"
    "      resample = \"bilinear\" },\n"
    "    { name = \"txt\", kind = \"global\", file = \"t.npy\", depth = 6, weighting = \"sigmoid\" },\n"
    "  },\n"
    "}\n";

static void test_full_config(reed_config *cfg) {
    reed_error err = {{0}};
    char want[512], up[256];
    int rc = load_text(cfg, "full.lua", full_config, &err);
    check(rc == 0, "full config loads (%s)", rc ? err.msg : "ok");
    snprintf(want, sizeof want, "%s/x.npy", tmpdir);
    snprintf(up, sizeof up, "%s", tmpdir);
    *strrchr(up, '/') = '\0';
    strcat(up, "/y.npy");
    check(cfg->model.depth == 6 && cfg->model.hidden == 128 && cfg->model.class_dropout == 0.2f &&
              strcmp(cfg->data.images, want) == 0 && strcmp(cfg->data.labels, up) == 0 &&
              cfg->train.beta1 == 0.8f && cfg->train.beta2 == 0.95f && cfg->train.seed == 42 &&
              cfg->train.path == REED_PATH_COSINE && cfg->sample.ema == 0 &&
              cfg->sample.class_label == 3 && cfg->sample.cfg_lo == 0.1f &&
              cfg->curriculum.diffusion_decay == REED_DECAY_LINEAR,
          "full config values (explicit depth overrides the preset; ../ resolved: %s)",
          cfg->data.labels);
    const reed_source_config *s = cfg->sources;
    check(cfg->n_sources == 2 && strcmp(s[0].file, "/abs/feats.npy") == 0 &&
              s[0].weighting == REED_WEIGHT_CUTOFF && s[0].cutoff_hi == 0.8f &&
              s[0].resample == REED_RESAMPLE_BILINEAR && s[1].kind == REED_SOURCE_GLOBAL &&
              s[1].coeff == 1.0f && s[1].projector_dim == 256 &&
              s[1].resample == REED_RESAMPLE_AREA,
          "sources (defaults fill keys a source leaves out)");
}

/* --- round trip ------------------------------------------------------------ */

static void round_trip(const char *what, const reed_config *cfg) {
    static char buf[65536], again[65536];
    reed_config back;
    reed_error err = {{0}};
    memset(&back, 0, sizeof back);
    int n = reed_config_to_lua(cfg, buf, sizeof buf);
    int rc = n > 0 ? reed_config_load_string(&back, buf, "config.lua", &err) : -1;
    int m = rc == 0 ? reed_config_to_lua(&back, again, sizeof again) : -1;
    check(n > 0 && rc == 0 && memcmp(cfg, &back, sizeof back) == 0 && m == n &&
              strcmp(buf, again) == 0,
          "round trip %s (%d bytes%s%s)", what, n, rc ? ": " : "", rc ? err.msg : "");
}

static void test_round_trip(reed_config *full) {
    reed_config cfg;
    memset(&cfg, 0, sizeof cfg);
    reed_config_defaults(&cfg);
    round_trip("defaults", &cfg);
    round_trip("full config", full);
    load_preset("reed", &cfg);
    round_trip("reed preset", &cfg);
    /* Awkward values: odd floats, a 64-bit seed, -0, quotes in paths. */
    full->train.lr = 1.0f / 3.0f;
    full->train.eps = 1.17549435e-38f;
    full->train.weight_decay = -0.0f;
    full->train.seed = 0xfedcba9876543210ull;
    full->sample.seed = UINT64_MAX;
    full->curriculum.proj_coeff = 123456789.0f;
    memset(full->data.dir, 0, sizeof full->data.dir); /* configs keep strings zero-padded */
    memset(full->sources[0].file, 0, sizeof full->sources[0].file);
    memset(full->model.preset, 0, sizeof full->model.preset);
    snprintf(full->data.dir, sizeof full->data.dir, "/tmp/we\"ird\\dir\n\t%s", "x");
    snprintf(full->sources[0].file, sizeof full->sources[0].file, "/t/caf\xc3\xa9.npy");
    snprintf(full->model.preset, sizeof full->model.preset, "custom");
    full->model.hidden = 96;
    round_trip("awkward values", full);
    char small[64];
    check(reed_config_to_lua(full, small, sizeof small) == -1, "to_lua reports a short buffer");
    const char *rel = "return { data = { dir = 'rel/dir' } }";
    char cwd[512], want[600];
    int rc = reed_config_load_string(&cfg, rel, "rel", NULL);
    snprintf(want, sizeof want, "%s/rel/dir", getcwd(cwd, sizeof cwd) ? cwd : "?");
    check(rc == 0 && strcmp(cfg.data.dir, want) == 0,
          "load_string resolves against the working directory (%s)", cfg.data.dir);
}

/* --- --set ------------------------------------------------------------------ */

static void test_set_good(reed_config *cfg) {
    char cwd[512], want[600];
    reed_config_defaults(cfg);
    check(set_ok(cfg, "train.lr=3e-4") && cfg->train.lr == 3e-4f, "--set train.lr=3e-4");
    check(set_ok(cfg, " train.steps = 1000 ") && cfg->train.steps == 1000, "--set with blanks");
    check(set_ok(cfg, "model.hidden=96") && set_ok(cfg, "model.preset=small") &&
              cfg->model.hidden == 256 && cfg->model.depth == 8 && cfg->model.patch == 2,
          "--set model.preset=small resets the shape");
    check(set_ok(cfg, "model.preset=B/4") && cfg->model.hidden == 768 &&
              set_ok(cfg, "model.preset=tiny"),
          "--set model.preset=B/4 (a plain string)");
    check(set_ok(cfg, "curriculum.align_steps=300") &&
              set_ok(cfg, "curriculum.align_decay=cosine") &&
              cfg->curriculum.align_decay == REED_DECAY_COSINE,
          "--set curriculum.align_decay=cosine");
    check(set_ok(cfg, "train.betas={0.9,0.95}") && cfg->train.beta2 == 0.95f,
          "--set train.betas={0.9,0.95}");
    check(set_ok(cfg, "sample.cfg_interval={0.1, 0.9}") && cfg->sample.cfg_lo == 0.1f &&
              cfg->sample.cfg_hi == 0.9f,
          "--set sample.cfg_interval={0.1, 0.9}");
    check(set_ok(cfg, "sample.ema=false") && cfg->sample.ema == 0, "--set sample.ema=false");
    check(set_ok(cfg, "name=\"quoted\"") && strcmp(cfg->name, "quoted") == 0 &&
              set_ok(cfg, "name=plain") && strcmp(cfg->name, "plain") == 0 &&
              set_ok(cfg, "name=1e3") && strcmp(cfg->name, "1e3") == 0,
          "--set name, quoted, plain and numeric text");
    check(set_ok(cfg, "train={batch=16, seed=0xffffffffffffffff}") && cfg->train.batch == 16 &&
              cfg->train.seed == UINT64_MAX && cfg->train.steps == 1000,
          "--set train={...} merges into the section");
    check(set_ok(cfg, "data.dir=some/dir") && getcwd(cwd, sizeof cwd) &&
              snprintf(want, sizeof want, "%s/some/dir", cwd) > 0 &&
              strcmp(cfg->data.dir, want) == 0,
          "--set data.dir resolves against the working directory (%s)", cfg->data.dir);
    check(set_ok(cfg, "sources.1={name='dino', file='/f.npy', depth=2}") && cfg->n_sources == 1 &&
              set_ok(cfg, "sources.2={name='txt', kind='global', file='/g.npy', depth=3}") &&
              cfg->n_sources == 2,
          "--set sources.<n+1>={...} adds sources");
    check(set_ok(cfg, "sources.1.coeff=0.5") && cfg->sources[0].coeff == 0.5f,
          "--set sources.1.coeff=0.5");
    check(set_ok(cfg, "sources.txt.coeff=0.25") && cfg->sources[1].coeff == 0.25f,
          "--set sources.txt.coeff=0.25 (by name)");
    check(set_ok(cfg, "sources.dino=nil") && cfg->n_sources == 1 &&
              strcmp(cfg->sources[0].name, "txt") == 0,
          "--set sources.dino=nil removes a source");
    check(set_ok(cfg, "sources={}") && cfg->n_sources == 0, "--set sources={} clears them");
}

static void test_set_bad(reed_config *cfg) {
    expect_set_error(cfg, "train.lr=abc", "--set train.lr: expected a number, got string");
    expect_set_error(cfg, "train.foo=1", "--set train.foo: unknown key (expected one of: steps");
    expect_set_error(cfg, "trian.lr=1", "--set trian.lr: unknown key");
    expect_set_error(cfg, "train.steps=1.5", "--set train.steps: expected an integer, got 1.5");
    expect_set_error(cfg, "train.path=spiral",
                     "--set train.path: unknown value 'spiral' (expected one of: linear, cosine)");
    expect_set_error(cfg, "model.heads=5", "--set model.heads: 5 does not divide model.hidden 128");
    expect_set_error(cfg, "model.hidden=90",
                     "--set model.hidden: model.heads: 4 does not divide model.hidden 90");
    expect_set_error(cfg, "model.preset=huge", "--set model.preset: unknown model preset 'huge'");
    expect_set_error(cfg, "sources.3.coeff=1", "--set sources.3.coeff: no source 3");
    expect_set_error(cfg, "sources.nope.coeff=1", "--set sources.nope.coeff: no source named 'nope'");
    expect_set_error(cfg, "sources.1.coeff=1", "--set sources.1.coeff: no source 1 yet");
    expect_set_error(cfg, "sources.1={name='a'}", "--set sources.1: sources.1.file: must name an .npy file");
    expect_set_error(cfg, "train.betas={0.9}", "--set train.betas: expected a table of two numbers");
    expect_set_error(cfg, "sample.ema=1", "--set sample.ema: expected a boolean, got number");
    expect_set_error(cfg, "noequals", "--set noequals: expected key=value");
    expect_set_error(cfg, "=3", "expected key=value");
    expect_set_error(cfg, "train.lr=(function() while true do end end)()",
                     "--set train.lr: expected a number, got string");
}

/* --- file errors -------------------------------------------------------------- */

static void test_load_errors(void) {
    expect_load_error("unknown top-level key", "return {\n  name = 'x',\n  trian = {},\n}\n",
                      "cfg.lua:3: trian: unknown key (expected one of: name, model", NULL);
    expect_load_error("unknown key in train",
                      "return {\n  train = {\n    steps = 5,\n    lr_max = 1,\n  },\n}\n",
                      "cfg.lua:4: train.lr_max: unknown key (expected one of: steps, batch", NULL);
    expect_load_error("unknown key in a source",
                      "return {\n  sources = {\n    { name = 'a', file = 'f', depth = 1 },\n"
                      "    { name = 'b', file = 'g',\n      colour = 'red' },\n  },\n}\n",
                      "cfg.lua:5: sources.2.colour: unknown key", NULL);
    expect_load_error("wrong type",
                      "-- lr = 1 in a comment does not count\nreturn {\n  train = {\n"
                      "    lr = \"fast\",\n  },\n}\n",
                      "cfg.lua:4: train.lr: expected a number, got string", NULL);
    expect_load_error("section of the wrong type", "return { model = 'tiny' }\n",
                      "cfg.lua:1: model: expected a table, got string", NULL);
    expect_load_error("key set outside the table",
                      "local c = { train = {} }\nc.train.lr = true\nreturn c\n",
                      "cfg.lua:2: train.lr: expected a number, got boolean", NULL);
    expect_load_error("list entry in a section", "return { train = { 5 } }\n",
                      "train: unexpected entry [1]", NULL);
    expect_load_error("syntax error", "return {\n  name = 'x'\n  model = {},\n}\n",
                      "cfg.lua:3:", "'}' expected", NULL);
    expect_load_error("runtime error", "local t = nil\nreturn t.x\n",
                      "cfg.lua:2: attempt to index a nil value", NULL);
    expect_load_error("error() with a table", "error({})\n", "error object is a table", NULL);
    expect_load_error("non-table result", "return 42\n",
                      "cfg.lua: the config must return a table, got number", NULL);
    expect_load_error("nothing returned", "local x = 1\n",
                      "the config must return a table, got nil", NULL);
    expect_load_error("bad enum value", "return { train = { path = 'spiral' } }\n",
                      "cfg.lua:1: train.path: unknown value 'spiral' (expected one of: linear, cosine)",
                      NULL);
    expect_load_error("bad source enum", "return { sources = { { resample = 'cubic' } } }\n",
                      "sources.1.resample: unknown value 'cubic' (expected one of: area, bilinear)",
                      NULL);
    expect_load_error("non-integer", "return { train = { steps = 10.5 } }\n",
                      "train.steps: expected an integer, got 10.5", NULL);
    expect_load_error("pair of the wrong shape", "return { train = { betas = { 0.9, 'x' } } }\n",
                      "train.betas: expected a table of two numbers", NULL);
    expect_load_error("sources not a list", "return { sources = { a = {} } }\n",
                      "sources: expected a list of source tables, found key 'a'", NULL);
    expect_load_error("too many sources",
                      "local s = {}\nfor i = 1, 9 do s[i] = {} end\nreturn { sources = s }\n",
                      "sources: 9 sources, at most 8", NULL);
    expect_load_error("string too long", "return { name = string.rep('x', 100) }\n",
                      "name: the string is too long (100 bytes, at most 63)", NULL);
    expect_load_error("bad model preset", "return { model = { preset = 'huge' } }\n",
                      "model.preset: unknown model preset 'huge'", NULL);
    char missing[400];
    snprintf(missing, sizeof missing, "%s/does-not-exist.lua", tmpdir);
    reed_error err = {{0}};
    reed_config cfg;
    check(reed_config_load_file(&cfg, missing, &err) == -1 && strstr(err.msg, "cannot open") &&
              strstr(err.msg, "does-not-exist.lua"),
          "missing file -> \"%s\"", err.msg);
}

static void test_validate_errors(void) {
    expect_load_error("heads do not divide hidden",
                      "return {\n  model = {\n    heads = 5,\n  },\n}\n",
                      "cfg.lua:3: model.heads: 5 does not divide model.hidden 128", NULL);
    expect_load_error("hidden not divisible by 4", "return { model = { hidden = 126, heads = 2 } }\n",
                      "model.hidden: 126 is not divisible by 4", NULL);
    expect_load_error("patch does not divide image_size", "return { model = { patch = 3 } }\n",
                      "model.patch: 3 does not divide model.image_size 28", NULL);
    expect_load_error("source depth out of range",
                      "return { sources = {\n  { name = 'a', file = 'f', depth = 9 } } }\n",
                      "cfg.lua:2: sources.1.depth: 9 is outside 1..model.depth (4)", NULL);
    expect_load_error("duplicate source names",
                      "return { sources = { { name = 'a', file = 'f', depth = 1 },\n"
                      "  { name = 'a', file = 'g', depth = 2 } } }\n",
                      "sources.2.name: 'a' is already the name of sources.1", NULL);
    expect_load_error("bad source name",
                      "return { sources = { { name = 'a-b', file = 'f', depth = 1 } } }\n",
                      "sources.1.name: 'a-b' must be non-empty", NULL);
    expect_load_error("empty source file", "return { sources = { { name = 'a', depth = 1 } } }\n",
                      "sources.1.file: must name an .npy file", NULL);
    expect_load_error("missing source depth", "return { sources = { { name = 'a', file = 'f' } } }\n",
                      "sources.1.depth: 0 is outside 1..model.depth (4)", NULL);
    expect_load_error("negative coeff",
                      "return { sources = { { name = 'a', file = 'f', depth = 1, coeff = -1 } } }\n",
                      "sources.1.coeff: -1 must be >= 0", NULL);
    expect_load_error("empty cutoff",
                      "return { sources = { { name = 'a', file = 'f', depth = 1, cutoff = {0.5, 0.5} } } }\n",
                      "sources.1.cutoff: {0.5, 0.5} must satisfy 0 <= lo < hi <= 1", NULL);
    expect_load_error("projector_dim", "return { sources = { { name = 'a', file = 'f', depth = 1,\n"
                      "  projector_dim = 0 } } }\n",
                      "cfg.lua:2: sources.1.projector_dim: 0 must be > 0", NULL);
    expect_load_error("lr = 0", "return { train = { lr = 0 } }\n", "train.lr: 0 must be > 0", NULL);
    expect_load_error("steps = 0", "return { train = { steps = 0 } }\n", "train.steps: 0 must be > 0",
                      NULL);
    expect_load_error("batch = -1", "return { train = { batch = -1 } }\n",
                      "train.batch: -1 must be > 0", NULL);
    expect_load_error("beta2 = 1", "return { train = { betas = { 0.9, 1 } } }\n",
                      "train.betas: 1 must be in [0, 1)", NULL);
    expect_load_error("ema_decay = 1", "return { train = { ema_decay = 1 } }\n",
                      "train.ema_decay: 1 must be in [0, 1)", NULL);
    expect_load_error("class_dropout = 1", "return { model = { class_dropout = 1 } }\n",
                      "model.class_dropout: 1 must be in [0, 1)", NULL);
    expect_load_error("align_steps needed", "return { curriculum = { align_decay = 'cosine' } }\n",
                      "curriculum.align_steps: must be > 0 when curriculum.align_decay is cosine",
                      NULL);
    expect_load_error("cfg interval reversed", "return { sample = { cfg_interval = { 0.8, 0.2 } } }\n",
                      "sample.cfg_interval: lower end 0.8 is above the upper end 0.2", NULL);
    expect_load_error("sample steps = 0", "return { sample = { steps = 0 } }\n",
                      "sample.steps: 0 must be > 0", NULL);
    expect_load_error("sample class out of range", "return { sample = { class = 10 } }\n",
                      "sample.class: 10 must be -1 (cycle) or in 0..9", NULL);
    expect_load_error("eval n = 1", "return { eval = { n = 1 } }\n",
                      "eval.n: 1 must be in 2..10000", NULL);
    expect_load_error("eval every < 0", "return { eval = { every = -5 } }\n",
                      "eval.every: -5 must be >= 0", NULL);
    expect_load_error("eval on npy data",
                      "return { data = { dataset = 'npy', images = 'x.npy' }, eval = { every = 10 } }\n",
                      "eval.every: the evaluator scores 1x28x28 Fashion-MNIST", NULL);
    expect_load_error("unknown device", "return { train = { device = 'tpu' } }\n",
                      "train.device", "tpu", NULL);
    expect_load_error("unknown precision", "return { train = { precision = 'fp16' } }\n",
                      "train.precision", "fp16", NULL);
    expect_load_error("NaN lr", "return { train = { lr = 0/0 } }\n", "train.lr:", "must be > 0",
                      NULL);
    expect_load_error("unknown dataset", "return { data = { dataset = 'cifar' } }\n",
                      "data.dataset: unknown dataset 'cifar'", NULL);
}

/* --- the sandbox ------------------------------------------------------------- */

static void sandbox_expect(const char *what, const char *expr) {
    char text[512];
    reed_config cfg;
    reed_error err = {{0}};
    snprintf(text, sizeof text, "return { name = (%s) and 'yes' or 'no' }\n", expr);
    int rc = load_text(&cfg, "sandbox.lua", text, &err);
    check(rc == 0 && strcmp(cfg.name, "yes") == 0, "sandbox: %s (%s)", what,
          rc ? err.msg : cfg.name);
}

static void test_sandbox(void) {
    const char *absent[] = {"io", "os", "package", "debug", "dofile", "loadfile", "require",
                            "coroutine", "utf8"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        char expr[64];
        snprintf(expr, sizeof expr, "%s == nil", absent[i]);
        sandbox_expect(expr, expr);
    }
    sandbox_expect("string, table, math are there",
                   "string.format and table.concat and math.floor and pairs and pcall");
    sandbox_expect("load of text works", "load('return 1 + 1')() == 2");
    sandbox_expect("load keeps an explicit env", "load('return x', 't', 't', { x = 5 })() == 5");
    sandbox_expect("load of a binary chunk fails",
                   "select(2, load(string.dump(function() end))):find('binary') ~= nil");
    sandbox_expect("load of a binary chunk fails even with mode 'b'",
                   "load(string.dump(function() end), 'x', 'b') == nil");
    expect_load_error("runaway script is stopped", "while true do end\n", "config ran too long",
                      NULL);
    expect_load_error("pcall cannot swallow the stop",
                      "while true do pcall(function() while true do end end) end\n",
                      "config ran too long", NULL);
    expect_load_error("memory is limited", "local s = string.rep('x', 1 << 30)\nreturn {}\n",
                      "not enough memory", NULL);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/reed_test_config.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    find_srcdir();
    if (chdir(tmpdir) != 0) { /* relative --set paths resolve here */
        perror(tmpdir);
        return 1;
    }
    reed_config full, cfg;
    memset(&full, 0, sizeof full);
    test_defaults();
    test_presets();
    test_preset_function();
    test_full_config(&full);
    test_round_trip(&full);
    test_set_good(&cfg);
    reed_config_defaults(&cfg);
    test_set_bad(&cfg);
    test_load_errors();
    test_validate_errors();
    test_sandbox();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    printf("%d/%d checks passed\n", checks - failures, checks);
    return failures ? 1 : 0;
}
