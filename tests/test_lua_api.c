/* The REPL's Lua API through the headless engine: every function with good
 * and bad arguments, pause/resume/step(n), set{} reaching the next step's
 * metrics, curriculum(fn) and the schedule preview, sample{} and the
 * preview, metrics(), on_step, interrupts of runaway chunks, the threaded
 * session loop driven through the live state, and reed_replay reproducing a
 * steered run's metrics.jsonl. Prints one line per check; exits 1 if any
 * failed. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "formats.h"
#include "live.h"
#include "lua/lua_config.h"
#include "lua/session.h"
#include "reed.h"
#include "check.h"

enum { N_EXAMPLES = 256, STEPS = 40 };

static char tmpdir[256];
static reed_config base_cfg;


static void die(const char *what, const reed_error *err) {
    fprintf(stderr, "test_lua_api: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

/* --- fixtures ------------------------------------------------------------------------------------ */

static void write_sources(void) {
    reed_error err = {{0}};
    size_t n_enc = (size_t)N_EXAMPLES * 49 * 16, n_text = (size_t)N_EXAMPLES * 24;
    float *enc = malloc(n_enc * sizeof *enc), *text = malloc(n_text * sizeof *text);
    uint32_t x = 12345;
    for (size_t i = 0; i < n_enc; i++) x = x * 1664525u + 1013904223u, enc[i] = (float)(x >> 8) / (1 << 24) - 0.5f;
    for (size_t i = 0; i < n_text; i++) x = x * 1664525u + 1013904223u, text[i] = (float)(x >> 8) / (1 << 24) - 0.5f;
    char path[512];
    snprintf(path, sizeof path, "%s/enc.npy", tmpdir);
    if (npy_save(path, enc, 3, (int64_t[]){N_EXAMPLES, 49, 16}, &err)) die("enc.npy", &err);
    snprintf(path, sizeof path, "%s/text.npy", tmpdir);
    if (npy_save(path, text, 2, (int64_t[]){N_EXAMPLES, 24}, &err)) die("text.npy", &err);
    free(enc);
    free(text);
}

/* The tiny REED config of tests/lib.sh's write_test_config. */
static void load_config(void) {
    char path[512], text[4096];
    reed_error err = {{0}};
    snprintf(text, sizeof text,
             "local c = preset \"reed\"\n"
             "c.name = \"luaapi\"\n"
             "c.model = { preset = \"custom\", hidden = 32, depth = 2, heads = 2, patch = 7,\n"
             "            in_channels = 1, image_size = 28, num_classes = 10 }\n"
             "c.data.limit = %d\n"
             "c.train.steps = %d\n"
             "c.train.batch = 8\n"
             "c.train.log_every = 1\n"
             "c.train.sample_every = 0\n"
             "c.train.ckpt_every = 0\n"
             "c.train.threads = 2\n"
             "c.curriculum.diffusion_start = 3\n"
             "c.curriculum.diffusion_warmup = 4\n"
             "c.curriculum.align_steps = 16\n"
             "c.sample.n = 4\n"
             "c.sample.steps = 4\n"
             "c.sources[1].from = \"file\"\n"
             "c.sources[1].file = \"enc.npy\"\n"
             "c.sources[1].projector_dim = 32\n"
             "c.sources[2].from = \"file\"\n"
             "c.sources[2].name = \"text\"\n"
             "c.sources[2].file = \"text.npy\"\n"
             "c.sources[2].depth = 2\n"
             "c.sources[2].projector_dim = 32\n"
             "return c\n",
             N_EXAMPLES, STEPS);
    snprintf(path, sizeof path, "%s/test.lua", tmpdir);
    FILE *f = fopen(path, "w");
    if (!f) die(path, NULL);
    fputs(text, f);
    fclose(f);
    if (reed_config_load_file(&base_cfg, path, &err)) die("config", &err);
}

static reed_run *open_run(const char *name) {
    char dir[512], *text = malloc(1 << 16);
    reed_error err = {{0}};
    reed_run *run;
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    if (reed_config_to_lua(&base_cfg, text, 1 << 16) < 0) die("config text", NULL);
    if (reed_run_open(&run, &base_cfg, text, dir, &err)) die("reed_run_open", &err);
    free(text);
    return run;
}

static reed_session *new_session(reed_run *run, reed_live *lv) {
    char path[REED_PATH_LEN + 32];
    reed_error err = {{0}};
    reed_session *s;
    snprintf(path, sizeof path, "%s/commands.log", reed_run_dir(run));
    if (reed_session_new(&s, run, lv, path, &err)) die("reed_session_new", &err);
    return s;
}

/* Runs a chunk; checks its status and that the output contains `want`. */
static void expect(reed_session *s, const char *chunk, int want_rc, const char *want) {
    char *out = NULL;
    int rc = reed_session_exec(s, chunk, &out);
    int ok = rc == want_rc && out && (!want || strstr(out, want));
    char shown[200];
    snprintf(shown, sizeof shown, "%s", out ? out : "(null)");
    for (char *p = shown; *p; p++)
        if (*p == '\n') *p = '|';
    check(ok, "%-46s -> %s \"%s\"", chunk, rc ? "error" : "ok", shown);
    free(out);
}

static void ok_chunk(reed_session *s, const char *chunk, const char *want) { expect(s, chunk, 0, want); }
static void err_chunk(reed_session *s, const char *chunk, const char *want) { expect(s, chunk, -1, want); }

/* The output of a chunk that must succeed (caller frees). */
static char *run_chunk(reed_session *s, const char *chunk) {
    char *out = NULL;
    if (reed_session_exec(s, chunk, &out)) printf("     (%s failed: %s)\n", chunk, out);
    return out;
}

static double eval_number(reed_session *s, const char *expr) {
    char *out = run_chunk(s, expr);
    double v = out ? strtod(out, NULL) : -1e300;
    free(out);
    return v;
}

static int steps_until_paused(reed_session *s, int max) {
    int n = 0;
    while (!reed_session_paused(s) && n < max && reed_session_step(s) == 0) n++;
    return n;
}

/* Collects the live log into one string (appended to *all, caller frees). */
static void drain_log(reed_live *lv, char **all, size_t *len) {
    for (char *line; (line = live_log_pop(lv));) {
        size_t n = strlen(line);
        char *p = realloc(*all, *len + n + 2);
        if (p) {
            memcpy(p + *len, line, n);
            p[*len + n] = '\n';
            p[*len + n + 1] = '\0';
            *all = p;
            *len += n + 1;
        }
        free(line);
    }
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && st.st_size > 0;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- interrupts from another thread -------------------------------------------------------------- */

static void *interrupt_later(void *lv) {
    sleep_ms(100);
    live_request_interrupt(lv);
    return NULL;
}

static void test_interrupts(reed_session *s, reed_live *lv) {
    const char *loops[] = {"while true do end",
                           "while true do pcall(function() while true do end end) end",
                           "local t = {} for i = 1, 1e12 do t[i % 10] = i end"};
    for (int i = 0; i < 3; i++) {
        pthread_t th;
        pthread_create(&th, NULL, interrupt_later, lv);
        err_chunk(s, loops[i], "interrupted");
        pthread_join(th, NULL);
    }
    ok_chunk(s, "return 40 + 2", "42");
    check(!live_interrupt_requested(lv), "the interrupt flag was consumed by the hook");
}

/* --- the API, synchronously ---------------------------------------------------------------------- */

static void test_repl_basics(reed_session *s, reed_live *lv) {
    ok_chunk(s, "1 + 1", "2\n");
    ok_chunk(s, "0.1", "0.1\n");
    ok_chunk(s, "{1, 2, x = 3, name = 'a'}", "{1, 2, name=\"a\", x=3}");
    ok_chunk(s, "(function() local t = {} for i = 1, 100 do t[i] = i end return t end)()",
             "... 90 more}");
    ok_chunk(s, "x = 5", NULL);
    ok_chunk(s, "x", "5");
    char *out = run_chunk(s, "status();");
    check(out && out[0] == '\0', "';' suppresses auto-print (\"%s\")", out ? out : "");
    free(out);
    ok_chunk(s, "print('hello', 1, nil)", "hello\t1\tnil\n");
    ok_chunk(s, "for i = 1, 2 do\n  print(i)\nend", "1\n2\n");
    err_chunk(s, "error('boom')", "boom");
    err_chunk(s, "error('boom')", "stack traceback");
    err_chunk(s, "local function f() error('deep') end f()", "in local 'f'");
    err_chunk(s, "x = = 1", "repl:1:");
    err_chunk(s, "error({})", "error object is a table");
    char *line, found = 0;
    reed_session_exec(s, "print('to the pane')", NULL);
    while ((line = live_log_pop(lv))) found |= strcmp(line, "to the pane") == 0, free(line);
    check(found, "print() output reaches live_log");
    check(reed_lua_chunk_incomplete("for i = 1, 2 do") && reed_lua_chunk_incomplete("x = {") &&
          !reed_lua_chunk_incomplete("x = 1") && !reed_lua_chunk_incomplete("x = = 1"),
          "reed_lua_chunk_incomplete: <eof> errors continue, others do not");
    ok_chunk(s, "help()", "on_step(every, fn)");
    ok_chunk(s, "help('set')", "proj_coeff");
    err_chunk(s, "help('nope')", "no function 'nope'");
    ok_chunk(s, "reed.status == status", "true");
}

static void test_pause_step(reed_session *s) {
    ok_chunk(s, "status().step", "0\n");
    ok_chunk(s, "status().paused", "false");
    ok_chunk(s, "pause()", "paused at step 0");
    check(reed_session_paused(s), "pause() pauses");
    ok_chunk(s, "resume()", "running from step 0");
    check(!reed_session_paused(s), "resume() resumes");
    ok_chunk(s, "step(3)", "pauses at step 3");
    int n = steps_until_paused(s, 100);
    check(n == 3, "step(3) stepped exactly %d", n);
    ok_chunk(s, "status().step", "3\n");
    ok_chunk(s, "status().total", "40\n");
    err_chunk(s, "step(0)", "positive integer");
    err_chunk(s, "step('x')", "number expected");
    err_chunk(s, "step(1.5)", "number has no integer representation");
    ok_chunk(s, "step()", "pauses at step 4");
    check(steps_until_paused(s, 100) == 1, "step() steps once");
}

static void test_set(reed_session *s, reed_run *run) {
    reed_config before = *reed_run_config(run);
    err_chunk(s, "set{nope = 1}", "unknown key");
    err_chunk(s, "set{lr = 'fast'}", "train.lr");
    err_chunk(s, "set{proj_coeff = -1}", "curriculum.proj_coeff");
    err_chunk(s, "set{batch = 16}", "cannot change");
    err_chunk(s, "set{lr = print}", "expected a number, string, boolean or list");
    err_chunk(s, "set(5)", "table expected");
    err_chunk(s, "set{[1] = 2}", "keys must be names");
    err_chunk(s, "set{lr = 1e-4, nope = 2}", "unknown key");
    check(memcmp(&before, reed_run_config(run), sizeof before) == 0,
          "failed set{} calls changed nothing");
    ok_chunk(s, "set{lr = 1e-4, warmup = 5, ema_decay = 0.99}", "train.lr=");
    ok_chunk(s, "set{['sources.enc.coeff'] = 0.5, sources = {text = {coeff = 0.25}}}", NULL);
    ok_chunk(s, "set{train = {grad_clip = 2, betas = {0.8, 0.95}}}", NULL);
    ok_chunk(s, "set{align_decay = 'linear', align_steps = 30}", NULL);
    const reed_config *c = reed_run_config(run);
    check(c->train.lr == 1e-4f && c->curriculum.diffusion_warmup == 5 &&
          c->train.ema_decay == 0.99f && c->sources[0].coeff == 0.5f &&
          c->sources[1].coeff == 0.25f && c->train.grad_clip == 2.0f && c->train.beta1 == 0.8f &&
          c->train.beta2 == 0.95f && c->curriculum.align_decay == REED_DECAY_LINEAR &&
          c->curriculum.align_steps == 30,
          "set{} reached the run's config (lr %g, warmup %d, ema %g, coeffs %g/%g)",
          c->train.lr, c->curriculum.diffusion_warmup, c->train.ema_decay, c->sources[0].coeff,
          c->sources[1].coeff);
    ok_chunk(s, "set{proj_coeff = 0}", "curriculum.proj_coeff=0");
    ok_chunk(s, "step(1)", NULL);
    steps_until_paused(s, 10);
    ok_chunk(s, "metrics('proj_coeff', 1)[1]", "0\n");
    ok_chunk(s, "metrics('lr', 1)[1]", "0.0001");
    ok_chunk(s, "set{proj_coeff = 0.5}", NULL);
}

static void test_curriculum(reed_session *s, reed_live *lv, reed_run *run) {
    float wd[64], wa[64];
    int first, stride;
    err_chunk(s, "curriculum(5)", "expected a table");
    err_chunk(s, "curriculum(function() return 'a' end)", "expected w_diff, w_align");
    err_chunk(s, "curriculum(function() error('no schedule') end)", "no schedule");
    err_chunk(s, "curriculum{nope = 1}", "unknown key");
    ok_chunk(s, "curriculum(function(step, total) return 0.5, 0.25, 'mine' end)", "mine");
    int n = live_schedule_get_strided(lv, &first, &stride, wd, wa, 64);
    int all = n == STEPS - reed_run_steps_done(run) && stride == 1;
    for (int i = 0; i < n && i < 64; i++) all = all && wd[i] == 0.5f && wa[i] == 0.25f;
    check(all, "the schedule preview shows the Lua curriculum (%d points from step %d)", n, first);
    ok_chunk(s, "step(1)", NULL);
    steps_until_paused(s, 10);
    ok_chunk(s, "metrics('w_diff', 1)[1], metrics('w_align', 1)[1], metrics('phase', 1)[1]",
             "0.5\t0.25\tmine");
    ok_chunk(s, "curriculum(nil)", "config's");
    live_schedule_get(lv, &first, wd, wa, 64);
    float w_diff, w_align;
    int phase;
    reed_error err = {{0}};
    reed_run_weights_at(run, first, &w_diff, &w_align, &phase, &err);
    check(wd[0] == w_diff && wa[0] == w_align && !(wd[0] == 0.5f && wa[0] == 0.25f),
          "curriculum(nil) restores the config's schedule in the preview (%g, %g)", wd[0], wa[0]);
    ok_chunk(s, "curriculum{proj_coeff = 0.3}", "curriculum.proj_coeff=0.3");
    check(reed_run_config(run)->curriculum.proj_coeff == 0.3f, "curriculum{} sets fields");
    /* an error inside the function at a later step pauses the run with the message */
    ok_chunk(s, "local s0 = status().step\n"
                "curriculum(function(s) if s > s0 then error('bad step ' .. s) end return 1, 0 end)",
             NULL);
    ok_chunk(s, "resume()", NULL);
    int done = steps_until_paused(s, 10);
    char *log = NULL;
    size_t len = 0;
    drain_log(lv, &log, &len);
    check(done == 1 && reed_session_paused(s) && log && strstr(log, "bad step"),
          "an error in the curriculum function pauses the run after %d step(s) with its message",
          done);
    free(log);
    /* a non-finite loss pauses the run and names the term */
    ok_chunk(s, "curriculum(function() return 3e38, 3e38 end)", NULL);
    ok_chunk(s, "step(2)", NULL);
    int before = reed_run_steps_done(run);
    steps_until_paused(s, 10);
    log = NULL, len = 0;
    drain_log(lv, &log, &len);
    check(reed_run_steps_done(run) == before && reed_session_paused(s) && log &&
          strstr(log, "non-finite") && strstr(log, "step"),
          "a non-finite loss pauses the run: %s", log ? strstr(log, "paused") : "");
    free(log);
    ok_chunk(s, "curriculum(nil)", NULL);
}

static void test_sample_save(reed_session *s, reed_live *lv, reed_run *run) {
    err_chunk(s, "sample{sampler = 'bogus'}", "expected \"euler\"");
    err_chunk(s, "sample{n = 0}", "outside 1..1024");
    err_chunk(s, "sample{n = 'x'}", "expected an integer");
    err_chunk(s, "sample{foo = 1}", "unknown option 'foo'");
    err_chunk(s, "sample{class = 10}", "outside -1..9");
    err_chunk(s, "sample{ema = 1}", "boolean expected");
    err_chunk(s, "sample(3)", "table expected");
    uint64_t version = 0;
    live_preview pv;
    if (live_preview_get(lv, &version, &pv)) free(pv.pixels);
    char *path = run_chunk(s, "sample{n = 4, steps = 2, sampler = 'heun', cfg = 1.5, class = 3, seed = 7, ema = false}");
    if (path) path[strcspn(path, "\n")] = '\0';
    uint64_t v2 = version;
    int got = live_preview_get(lv, &v2, &pv);
    check(path && file_exists(path) && strstr(path, "repl_step_"), "sample{} wrote %s", path);
    check(got && v2 == version + 1 && pv.width > 0 && pv.pixels && pv.n == 4 && pv.steps == 2 &&
          strcmp(pv.sampler, "heun") == 0 && !pv.ema && pv.seed == 7,
          "sample{} published the preview (version %llu -> %llu, %dx%d)",
          (unsigned long long)version, (unsigned long long)v2, pv.width, pv.height);
    if (got) free(pv.pixels);
    free(path);
    path = run_chunk(s, "save()");
    if (path) path[strcspn(path, "\n")] = '\0';
    check(path && file_exists(path), "save() wrote %s", path);
    free(path);
    char want[600];
    snprintf(want, sizeof want, "%s/mine.safetensors", reed_run_dir(run));
    char chunk[700];
    snprintf(chunk, sizeof chunk, "save('%s')", want);
    ok_chunk(s, chunk, want);
    check(file_exists(want), "save(path) wrote the file");
    err_chunk(s, "save('/nonexistent/dir/x.safetensors')", "save:");
}

/* The metrics of step `step` in run_dir/metrics.jsonl, field `key`. */
static double jsonl_value(const char *run_dir, int step, const char *key) {
    char path[600], line[8192], pat[80];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    snprintf(pat, sizeof pat, "\"%s\":", key);
    FILE *f = fopen(path, "r");
    double v = -1e300;
    int st;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "{\"step\":%d", &st) == 1 && st == step && strstr(line, pat))
            v = strtod(strstr(line, pat) + strlen(pat), NULL);
    if (f) fclose(f);
    return v;
}

static void test_metrics(reed_session *s, reed_run *run) {
    ok_chunk(s, "step(3)", NULL);
    steps_until_paused(s, 10);
    int done = reed_run_steps_done(run);
    ok_chunk(s, "#metrics('loss', 3)", "3\n");
    ok_chunk(s, "#metrics('loss', 0)", "0\n");
    ok_chunk(s, "#metrics('step') == status().step", "true");
    int ok = 1;
    for (int k = 1; k <= 3; k++) {
        char expr[128];
        int step = done - 4 + k;
        snprintf(expr, sizeof expr, "string.format('%%.17g', metrics('loss', 3)[%d])", k);
        double lua = eval_number(s, expr), file = jsonl_value(reed_run_dir(run), step, "loss");
        snprintf(expr, sizeof expr, "string.format('%%.17g', metrics('sim_enc', 3)[%d])", k);
        double sim = eval_number(s, expr), fsim = jsonl_value(reed_run_dir(run), step, "sim_enc");
        ok = ok && fabs(lua - file) <= 1e-6 * fabs(file) + 1e-9 && fabs(sim - fsim) <= 1e-6;
    }
    check(ok, "metrics('loss'/'sim_enc', 3) equal metrics.jsonl's last three steps");
    ok_chunk(s, "metrics('step', 1)[1] == status().step - 1", "true");
    ok_chunk(s, "type(metrics('loss_text')[1])", "number");
    err_chunk(s, "metrics('nope')", "unknown metric 'nope'");
    err_chunk(s, "metrics('loss', -1)", "last must be >= 0");
    err_chunk(s, "metrics()", "string expected");
    ok_chunk(s, "status().loss == metrics('loss', 1)[1]", "true");
    ok_chunk(s, "status().sims.enc == metrics('sim_enc', 1)[1]", "true");

    /* fd and cond_acc: one value per evaluation, none before the first. */
    ok_chunk(s, "#metrics('fd'), #metrics('cond_acc')", "0\t0\n");
    ok_chunk(s, "set{['eval.every'] = 1, ['eval.n'] = 10, ['eval.steps'] = 2}", NULL);
    ok_chunk(s, "step(2)", NULL);
    steps_until_paused(s, 10);
    ok_chunk(s, "#metrics('fd'), #metrics('fd', 1), #metrics('cond_acc')", "2\t1\t2\n");
    ok_chunk(s, "metrics('fd', 1)[1] == status().fd and metrics('fd')[2] > 0", "true");
    ok_chunk(s, "set{['eval.every'] = 0}", NULL);
}

static void test_on_step(reed_session *s, reed_live *lv, reed_run *run) {
    err_chunk(s, "on_step(0, print)", "every must be >= 1");
    err_chunk(s, "on_step(2, 5)", "function expected");
    err_chunk(s, "on_step('x', print)", "number expected");
    ok_chunk(s, "hits = {}; id = on_step(2, function(step, m) hits[#hits + 1] = step; "
                "assert(m.step == step - 1 and m.loss) end); return id", "1");
    int start = reed_run_steps_done(run);
    ok_chunk(s, "step(6)", NULL);
    steps_until_paused(s, 10);
    char want[64];
    int first = start + 1 + (start + 1) % 2;
    snprintf(want, sizeof want, "{%d, %d, %d}", first, first + 2, first + 4);
    ok_chunk(s, "hits", want);
    ok_chunk(s, "on_step(id)", "true");
    ok_chunk(s, "on_step(id)", "false");
    ok_chunk(s, "step(2)", NULL);
    steps_until_paused(s, 10);
    ok_chunk(s, "#hits", "3\n");
    /* an error inside a hook is reported, removes the hook, and the run goes on */
    ok_chunk(s, "on_step(1, function() error('hook boom') end)", NULL);
    ok_chunk(s, "step(2)", NULL);
    int before = reed_run_steps_done(run);
    int n = steps_until_paused(s, 10);
    char *log = NULL;
    size_t len = 0;
    drain_log(lv, &log, &len);
    check(n == 2 && reed_run_steps_done(run) == before + 2 && log && strstr(log, "hook boom") &&
          strstr(log, "removed"), "an error in on_step's fn is reported and the run goes on");
    free(log);
    /* a runaway hook is interrupted too */
    ok_chunk(s, "on_step(1, function() while true do end end)", NULL);
    ok_chunk(s, "step(1)", NULL);
    pthread_t th;
    pthread_create(&th, NULL, interrupt_later, lv);
    n = steps_until_paused(s, 10);
    pthread_join(th, NULL);
    log = NULL, len = 0;
    drain_log(lv, &log, &len);
    check(n == 1 && log && strstr(log, "interrupted"), "a runaway on_step fn is interrupted");
    free(log);
}

static void test_quit(reed_session *s) {
    check(!reed_session_quit_requested(s), "no quit yet");
    ok_chunk(s, "quit()", "quitting");
    check(reed_session_quit_requested(s), "quit() asks the loop to stop");
}

static void test_api(void) {
    printf("-- the API, synchronously\n");
    reed_live *lv = live_new();
    reed_run *run = open_run("api");
    reed_session *s = new_session(run, lv);
    test_repl_basics(s, lv);
    test_interrupts(s, lv);
    test_pause_step(s);
    test_set(s, run);
    test_curriculum(s, lv, run);
    test_sample_save(s, lv, run);
    test_metrics(s, run);
    test_on_step(s, lv, run);
    char *names = live_completions_get(lv);
    check(names && strstr(names, "\ncurriculum\n") && strstr(names, "\nsources.enc.coeff\n") &&
          strstr(names, "\nmath.floor\n") && strstr(names, "\nhits\n"),
          "completions list API functions, set{} keys, library fields and user globals");
    free(names);
    test_quit(s);
    reed_session_free(s);
    reed_run_close(run);
    live_free(lv);
}

/* --- the threaded loop ---------------------------------------------------------------------------- */

typedef struct loop_ctx {
    reed_session *s;
    int rc;
} loop_ctx;

static void *loop_thread(void *p) {
    loop_ctx *c = p;
    c->rc = reed_session_run(c->s);
    return NULL;
}

static char *tlog;
static size_t tlog_len;

/* Waits (up to 60 s) until the status says paused at `step` (or any step
 * when step < 0), collecting log lines. */
static int wait_paused(reed_live *lv, int step) {
    live_status st;
    for (int i = 0; i < 12000; i++) {
        drain_log(lv, &tlog, &tlog_len);
        live_status_get(lv, &st);
        if (st.paused && !st.running_command && (step < 0 || st.step == step)) return 1;
        sleep_ms(5);
    }
    return 0;
}

static int push_lua(reed_live *lv, const char *chunk) {
    return live_push(lv, (live_cmd){LIVE_CMD_LUA, strdup(chunk), 0});
}

static int wait_applied(reed_live *lv, int ticket) {
    for (int i = 0; i < 12000; i++) {
        if (live_applied_get(lv, NULL) >= ticket) return 1;
        sleep_ms(5);
    }
    return 0;
}

static void test_threaded(void) {
    printf("-- the session loop in its own thread\n");
    reed_live *lv = live_new();
    reed_run *run = open_run("threaded");
    reed_session *s = new_session(run, lv);
    loop_ctx ctx = {s, -1};
    push_lua(lv, "pause()"); /* applied before the first step */
    pthread_t th;
    pthread_create(&th, NULL, loop_thread, &ctx);
    check(wait_paused(lv, 0), "the loop applies a queued pause() before the first step");
    int t = push_lua(lv, "step(5)");
    check(t > 0 && wait_applied(lv, t), "live_applied_get reports the ticket of step(5)");
    check(wait_paused(lv, 5), "step(5) in the loop steps exactly 5 and pauses");
    check(live_history_count(lv) == 5, "5 history points published (%zu)", live_history_count(lv));
    live_point pts[8];
    size_t n = live_history_copy(lv, 0, 8, pts);
    check(n == 5 && pts[0].step == 0 && pts[4].step == 4, "history copies steps 0..4");
    live_status st;
    live_status_get(lv, &st);
    check(st.total_steps == STEPS && st.memory_bytes > 0 && st.its_per_s > 0 && st.n_sources == 2 &&
          strcmp(st.source_names[0], "enc") == 0 && strcmp(st.run_name, "luaapi") == 0,
          "status: total %d, memory %zu, %.1f it/s, ETA %.1f s", st.total_steps, st.memory_bytes,
          st.its_per_s, st.eta_seconds);
    /* a runaway chunk sent from the UI is interrupted; the session goes on */
    push_lua(lv, "while true do end");
    sleep_ms(150);
    live_push(lv, (live_cmd){LIVE_CMD_INTERRUPT, NULL, 0});
    t = push_lua(lv, "set{proj_coeff = 0.25}");
    check(wait_applied(lv, t) && wait_paused(lv, 5), "set{} applies after the interrupted chunk");
    drain_log(lv, &tlog, &tlog_len);
    check(tlog && strstr(tlog, "interrupted"), "the runaway chunk was interrupted");
    /* toggle runs, Ctrl-C with nothing running pauses */
    live_push(lv, (live_cmd){LIVE_CMD_TOGGLE_PAUSE, NULL, 0});
    for (int i = 0; i < 12000 && (live_status_get(lv, &st), st.step < 8); i++) sleep_ms(5);
    live_request_interrupt(lv);
    check(wait_paused(lv, -1), "Ctrl-C (the interrupt flag) with nothing running pauses");
    live_status_get(lv, &st);
    int at = st.step;
    sleep_ms(200);
    live_status_get(lv, &st);
    check(st.step == at && st.step >= 8, "paused at step %d stays there", at);
    uint64_t version = 0;
    live_preview pv;
    if (live_preview_get(lv, &version, &pv)) free(pv.pixels);
    t = live_push(lv, (live_cmd){LIVE_CMD_SAMPLE, NULL, 0});
    wait_applied(lv, t);
    int got = live_preview_get(lv, &version, &pv);
    check(got && pv.width > 0 && pv.step == at, "LIVE_CMD_SAMPLE publishes a preview");
    if (got) free(pv.pixels);
    t = push_lua(lv, "on_step(2, function(step) set{lr = 1e-4 * step} end) step(4)");
    check(wait_paused(lv, at + 4), "on_step + step(4) from the UI");
    live_push(lv, (live_cmd){LIVE_CMD_QUIT, NULL, 0});
    pthread_join(th, NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/checkpoints/step_%08d.safetensors", reed_run_dir(run), at + 4);
    check(ctx.rc == 0 && file_exists(path), "LIVE_CMD_QUIT saves %s and ends the loop", path);
    reed_session_free(s);
    reed_run_close(run);
    drain_log(lv, &tlog, &tlog_len);
    live_free(lv);
    free(tlog);
}

/* --- replay ----------------------------------------------------------------------------------------------- */

/* A metrics line without its imgs_per_s field. */
static void strip_speed(char *line) {
    char *p = strstr(line, ",\"imgs_per_s\":");
    if (!p) return;
    char *end = strpbrk(p + 1, ",}");
    if (end) memmove(p, end, strlen(end) + 1);
}

static int compare_metrics(const char *a_dir, const char *b_dir, int *lines) {
    char pa[600], pb[600], la[8192], lb[8192];
    snprintf(pa, sizeof pa, "%s/metrics.jsonl", a_dir);
    snprintf(pb, sizeof pb, "%s/metrics.jsonl", b_dir);
    FILE *fa = fopen(pa, "r"), *fb = fopen(pb, "r");
    int same = fa && fb;
    *lines = 0;
    while (same) {
        char *ra = fgets(la, sizeof la, fa), *rb = fgets(lb, sizeof lb, fb);
        if (!ra || !rb) {
            same = !ra && !rb;
            break;
        }
        strip_speed(la);
        strip_speed(lb);
        if (strcmp(la, lb) != 0) {
            printf("     differ:\n     %s     %s", la, lb);
            same = 0;
        }
        (*lines)++;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static void test_replay(void) {
    printf("-- replay\n");
    reed_live *lv = live_new();
    reed_run *run = open_run("steered");
    reed_session *s = new_session(run, lv);
    char dir[600], out[600];
    snprintf(dir, sizeof dir, "%s", reed_run_dir(run));
    reed_session_exec(s, "step(3)", NULL);
    steps_until_paused(s, 100);
    reed_session_exec(s, "set{proj_coeff = 0.2, lr = 3e-4}", NULL);
    reed_session_exec(s, "step(4)", NULL);
    steps_until_paused(s, 100);
    reed_session_exec(s, "function sched(step, total)\n  return math.min(1, step / 10), 0.5, 'ramp'\nend", NULL);
    reed_session_exec(s, "curriculum(sched)", NULL);
    reed_session_exec(s, "step(5)", NULL);
    steps_until_paused(s, 100);
    reed_session_exec(s, "pause()", NULL);
    reed_session_exec(s, "on_step(3, function(step) if step == 18 then set{lr = 1e-4} end end)", NULL);
    reed_session_exec(s, "sample{n = 2, steps = 2}", NULL);
    reed_session_exec(s, "step(4)", NULL);
    steps_until_paused(s, 100);
    reed_session_exec(s, "curriculum(nil); set{['sources.enc.coeff'] = 0.5, warmup = 2}", NULL);
    reed_session_exec(s, "set{nope = 1}", NULL); /* an error: replayed as an error */
    reed_session_exec(s, "resume()", NULL);
    steps_until_paused(s, 100);
    check(reed_run_steps_done(run) == STEPS, "the steered run finished (%d steps)",
          reed_run_steps_done(run));
    reed_session_free(s);
    reed_run_close(run);
    live_free(lv);

    reed_error err = {{0}};
    snprintf(out, sizeof out, "%s/replayed", tmpdir);
    int rc = reed_replay(dir, out, &err);
    check(rc == 0, "reed_replay %s -> %s%s%s", dir, out, rc ? ": " : "", rc ? err.msg : "");
    int lines = 0, same = rc == 0 && compare_metrics(dir, out, &lines);
    check(same && lines == STEPS,
          "the replay reproduces metrics.jsonl (%d lines, imgs_per_s aside)", lines);
    /* the threaded run, steered at whatever steps the timing gave */
    snprintf(dir, sizeof dir, "%s/threaded", tmpdir);
    snprintf(out, sizeof out, "%s/threaded-replayed", tmpdir);
    rc = reed_replay(dir, out, &err);
    same = rc == 0 && compare_metrics(dir, out, &lines);
    check(same && lines > 8,
          "the replay of the threaded run reproduces its %d metrics lines%s%s", lines,
          rc ? ": " : "", rc ? err.msg : "");
    /* negative control: without its set{} line the replay must differ */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/tampered' && cp '%s/steered/metrics.jsonl' '%s/tampered/' && "
             "grep -v 'proj_coeff = 0.2' '%s/steered/commands.log' > '%s/tampered/commands.log'",
             tmpdir, tmpdir, tmpdir, tmpdir, tmpdir);
    snprintf(dir, sizeof dir, "%s/steered", tmpdir);
    snprintf(out, sizeof out, "%s/tampered-replayed", tmpdir);
    char tampered[600];
    snprintf(tampered, sizeof tampered, "%s/tampered", tmpdir);
    rc = system(cmd) == 0 ? reed_replay(tampered, out, &err) : -1;
    printf("     (the next mismatch is expected)\n");
    same = rc == 0 && compare_metrics(dir, out, &lines);
    check(rc == 0 && !same, "a replay without the set{proj_coeff = 0.2} line diverges (at line %d)",
          lines);
    check(reed_replay("/nonexistent", out, &err) == -1 && strstr(err.msg, "nonexistent"),
          "replay of a missing run fails: %s", err.msg);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/reed-lua-api.XXXXXX");
    if (!mkdtemp(tmpdir)) die("mkdtemp", NULL);
    write_sources();
    load_config();
    test_api();
    test_threaded();
    test_replay();
    printf("%d/%d checks passed\n", checks - failures, checks);
    if (failures == 0 && !getenv("REED_KEEP_TMP")) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    } else {
        printf("files kept in %s\n", tmpdir);
    }
    return failures ? 1 : 0;
}
