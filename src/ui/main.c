/* reed: the command line. `reed run` trains headless with a plain progress
 * line; `reed sample` draws a grid from a checkpoint. */
#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lua/lua_config.h"
#include "lua/session.h"
#include "reed.h"
#include "eval_cmd.h"
#include "teacher_cmd.h"
#include "workbench.h"

enum { MAX_SETS = 64, CONFIG_TEXT_CAP = 1 << 16 };

/* REED with the shipped teacher's targets. */
#define DEFAULT_PRESET "reed"

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f) {
    fputs("usage:\n"
          "  reed                      the workbench on the default preset\n"
          "  reed run CONFIG.lua [--set key=value]... [--run-dir DIR] [--steps N] [--headless]\n"
          "           [--device auto|cpu|cuda]\n"
          "  reed run [CONFIG.lua] --resume RUN_DIR|CHECKPOINT [--set key=value]... [--steps N]\n"
          "  reed sample CHECKPOINT|RUN_DIR [--n 16] [--steps 50] [--sampler euler|heun|sde]\n"
          "              [--cfg W] [--class C] [--seed S] [--online] [--out FILE.png]\n"
          "  reed replay RUN_DIR [--out DIR]\n"
          "  reed teacher train|features|eval [...]   (reed teacher --help)\n"
          "  reed eval CHECKPOINT|RUN_DIR [--n N] [--steps S] [--seed S]\n"
          "  reed evaluator train|eval [...]\n"
          "  reed --help | --version\n"
          "\n"
          "run      trains a SiT with representation guidance from a Lua config and\n"
          "         writes RUN_DIR/{config.lua,metrics.jsonl,checkpoints/,samples/}.\n"
          "         On a terminal it opens the workbench (charts, samples, a Lua REPL;\n"
          "         ? for keys, help() for the API); --headless or no terminal prints\n"
          "         progress lines, and Ctrl-C saves a checkpoint and exits.\n"
          "         Presets: scripts/lua/presets/ (sit, repa, reed). --device auto (the\n"
          "         default) trains on the GPU when this build has CUDA and a GPU is\n"
          "         usable, else on the CPU; cpu and cuda choose explicitly.\n"
          "sample   draws a sample grid (PNG) from a checkpoint, EMA weights by default.\n"
          "replay   reruns a steered run with the commands of its commands.log at the\n"
          "         same steps (into RUN_DIR-replay by default) and compares the metrics.\n",
          f);
}

static int fail(const char *what, const reed_error *err) {
    fprintf(stderr, "reed: %s%s%s\n", what ? what : "", what ? ": " : "", err->msg);
    return 1;
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "reed: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see reed --help)\n");
    return 2;
}

/* Parses a whole-string integer; -1 on error. */
static int parse_int(const char *s, long long *out) {
    char *end;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno || end == s || *end ? -1 : 0;
}

static void format_duration(char *buf, size_t cap, double s) {
    if (s < 0 || s > 1e7) snprintf(buf, cap, "?");
    else if (s >= 3600) snprintf(buf, cap, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
    else snprintf(buf, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
}

/* --- reed run ----------------------------------------------------------------------- */

typedef struct run_args {
    const char *config, *run_dir, *resume;
    int headless;
    int use_default;   /* bare `reed`: the default preset */
    const char *sets[MAX_SETS];
    int n_sets;
    long long steps;
} run_args;

static int parse_run_args(int argc, char **argv, int use_default, run_args *a) {
    memset(a, 0, sizeof *a);
    a->use_default = use_default;
    a->steps = -1;
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(arg, "--set") == 0 && has_value && a->n_sets < MAX_SETS) a->sets[a->n_sets++] = argv[++i];
        else if (strcmp(arg, "--run-dir") == 0 && has_value) a->run_dir = argv[++i];
        else if (strcmp(arg, "--resume") == 0 && has_value) a->resume = argv[++i];
        else if (strcmp(arg, "--headless") == 0) a->headless = 1;
        else if (strcmp(arg, "--device") == 0 && has_value && a->n_sets < MAX_SETS) {
            static char set[64]; /* one --device per command line; the last wins */
            snprintf(set, sizeof set, "train.device=%s", argv[++i]);
            a->sets[a->n_sets++] = set;
        }
        else if (strcmp(arg, "--steps") == 0 && has_value) {
            if (parse_int(argv[++i], &a->steps) || a->steps <= 0 || a->steps > 1000000000)
                return usage_error("--steps: expected a positive integer, got \"%s\"", argv[i]);
        } else if (arg[0] == '-') return usage_error("run: unknown or incomplete option \"%s\"", arg);
        else if (!a->config) a->config = arg;
        else return usage_error("run: unexpected argument \"%s\"", arg);
    }
    if (!a->config && !a->resume && !a->use_default) return usage_error("run: %s", "missing CONFIG.lua");
    return 0;
}

/* The config of a run: a file, or the one stored in the checkpoint being
 * resumed; then --set overrides and --steps. */
static int resolve_config(const run_args *a, reed_config *cfg, char *ckpt, reed_error *err) {
    if (a->resume) {
        char *text;
        if (reed_checkpoint_config(a->resume, &text, ckpt, err)) return -1;
        int rc = reed_config_load_string(cfg, text, ckpt, err);
        free(text);
        if (rc) return -1;
    }
    if (a->config && reed_config_load_file(cfg, a->config, err)) return -1;
    if (!a->config && !a->resume &&
        reed_config_load_string(cfg, "return preset \"" DEFAULT_PRESET "\"", "default", err))
        return -1;
    for (int i = 0; i < a->n_sets; i++)
        if (reed_config_set(cfg, a->sets[i], err)) return -1;
    if (a->steps > 0) {
        char set[64];
        snprintf(set, sizeof set, "train.steps=%lld", a->steps);
        if (reed_config_set(cfg, set, err)) return -1;
    }
    return 0;
}

/* runs/NAME-YYYYmmdd-HHMMSS, or the run directory that holds the checkpoint. */
static void choose_run_dir(const run_args *a, const reed_config *cfg, const char *ckpt,
                           char *dir, size_t cap) {
    if (a->run_dir) {
        snprintf(dir, cap, "%s", a->run_dir);
    } else if (a->resume) {
        char tmp[REED_PATH_LEN];
        snprintf(tmp, sizeof tmp, "%s", ckpt);
        snprintf(dir, cap, "%s", dirname(dirname(tmp))); /* RUN/checkpoints/x → RUN */
    } else {
        char stamp[32];
        time_t now = time(NULL);
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime(&now));
        snprintf(dir, cap, "runs/%s-%s", cfg->name, stamp);
    }
}

/* sec_per_step: the average over this session's steps (pauses excluded). */
static void print_progress(const reed_run *run, const reed_metrics *m, double sec_per_step) {
    int total = reed_run_total_steps(run), done = m->step + 1;
    char eta[32];
    format_duration(eta, sizeof eta, (total - done) * sec_per_step);
    printf("step %5d/%d  %-9s  loss %.4f  denoise %.4f", done, total, m->phase, m->loss,
           m->loss_denoise);
    for (int k = 0; k < m->n_sources; k++) printf("  sim_%s %.3f", m->source_names[k], m->sim[k]);
    printf("  w %.2f/%.2f  |g| %.3f  %.1f it/s  %.0f img/s  ETA %s\n", m->w_diff, m->w_align,
           m->grad_norm, 1.0 / m->step_seconds, m->imgs_per_s, eta);
    fflush(stdout);
}

static void log_to_stdout(void *ud, const char *msg) {
    (void)ud;
    printf("%s\n", msg);
}

static int save_samples(reed_run *run, reed_error *err) {
    char path[REED_PATH_LEN + 64];
    snprintf(path, sizeof path, "%s/samples/step_%08d.png", reed_run_dir(run),
             reed_run_steps_done(run));
    if (reed_run_sample(run, &reed_run_config(run)->sample, path, NULL, err)) return -1;
    printf("samples: %s\n", path);
    return 0;
}

static int save_checkpoint(reed_run *run, reed_error *err) {
    char written[REED_PATH_LEN];
    if (reed_run_save(run, NULL, written, err)) return -1;
    printf("checkpoint: %s\n", written);
    return 0;
}

/* After step `done` (1-based count): periodic samples and checkpoints. */
static int periodic_outputs(reed_run *run, int done, reed_error *err) {
    const reed_train_config *tc = &reed_run_config(run)->train;
    int last = done == tc->steps;
    if ((tc->sample_every > 0 && done % tc->sample_every == 0) || last)
        if (save_samples(run, err)) return -1;
    if ((tc->ckpt_every > 0 && done % tc->ckpt_every == 0) || last)
        if (save_checkpoint(run, err)) return -1;
    return 0;
}

static int train_loop(reed_run *run) {
    reed_error err = {{0}};
    reed_metrics m;
    const reed_config *cfg = reed_run_config(run);
    int first = reed_run_steps_done(run);
    double start_seconds = reed_run_active_seconds(run);
    while (reed_run_steps_done(run) < cfg->train.steps) {
        if (interrupted) {
            printf("\ninterrupted at step %d\n", reed_run_steps_done(run));
            if (save_checkpoint(run, &err)) return fail("saving checkpoint", &err);
            printf("resume with: reed run --resume %s\n", reed_run_dir(run));
            return 130;
        }
        if (reed_run_step(run, &m, &err)) {
            fail(NULL, &err);
            if (save_checkpoint(run, &err) == 0)
                printf("the last good state is saved; the run stopped\n");
            return 1;
        }
        int done = reed_run_steps_done(run);
        int every = cfg->train.log_every > 0 ? cfg->train.log_every : 1;
        if (m.step % every == 0 || done == cfg->train.steps) print_progress(run, &m, (reed_run_active_seconds(run) - start_seconds) / (done - first));
        if (periodic_outputs(run, done, &err)) return fail(NULL, &err);
    }
    printf("done: %d steps in %.1f s of training; run directory %s\n", cfg->train.steps,
           reed_run_active_seconds(run), reed_run_dir(run));
    return 0;
}

static int cmd_run(int argc, char **argv, int use_default) {
    run_args a;
    int rc = parse_run_args(argc, argv, use_default, &a);
    if (rc) return rc;
    static reed_config cfg;
    reed_error err = {{0}};
    char ckpt[REED_PATH_LEN] = "", dir[REED_PATH_LEN];
    if (resolve_config(&a, &cfg, ckpt, &err)) return fail(NULL, &err);
    char *text = malloc(CONFIG_TEXT_CAP);
    if (!text || reed_config_to_lua(&cfg, text, CONFIG_TEXT_CAP) < 0) {
        free(text);
        return fail(NULL, &(reed_error){"the config is too large to serialise"});
    }
    choose_run_dir(&a, &cfg, ckpt, dir, sizeof dir);
    reed_run *run;
    rc = reed_run_open(&run, &cfg, text, dir, &err);
    free(text);
    if (rc) return fail(NULL, &err);
    reed_run_set_log(run, log_to_stdout, NULL);
    if (a.resume && reed_run_load(run, ckpt, &err)) {
        reed_run_close(run);
        return fail("resume", &err);
    }
    printf("run %s: %s, %d steps, batch %d, %s%s%s\n", cfg.name, cfg.model.preset,
           cfg.train.steps, cfg.train.batch, reed_run_device(run),
           a.resume ? ", resumed from " : "", a.resume ? ckpt : "");
    if (reed_run_device_note(run)[0]) printf("device: %s\n", reed_run_device_note(run));
    printf("run directory: %s\n", dir);
    if (!a.headless && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO)) {
        rc = workbench_main(run);
        reed_run_close(run);
        return rc;
    }
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    /* A hang-up (the SSH connection dropped) saves a checkpoint too, unless
     * the run was started to outlive it (nohup: SIGHUP already ignored). */
    struct sigaction hup;
    if (sigaction(SIGHUP, NULL, &hup) == 0 && hup.sa_handler != SIG_IGN) signal(SIGHUP, on_sigint);
    rc = train_loop(run);
    reed_run_close(run);
    return rc;
}

/* --- reed sample ---------------------------------------------------------------------- */

static int parse_sample_option(reed_sample_config *sc, const char *opt, const char *val,
                               const char **out) {
    long long n;
    char *end;
    if (strcmp(opt, "--out") == 0) *out = val;
    else if (strcmp(opt, "--sampler") == 0) {
        int k = reed_name_index(reed_sampler_names, val);
        if (k < 0) return usage_error("--sampler: expected euler, heun or sde, got \"%s\"", val);
        sc->sampler = (reed_sampler)k;
    } else if (strcmp(opt, "--cfg") == 0) {
        sc->cfg = strtof(val, &end);
        if (end == val || *end) return usage_error("--cfg: expected a number, got \"%s\"", val);
    } else if (parse_int(val, &n)) {
        return usage_error("expected an integer, got \"%s\"", val);
    } else if (strcmp(opt, "--n") == 0 && n > 0 && n <= 1024) sc->n = (int)n;
    else if (strcmp(opt, "--steps") == 0 && n > 0 && n <= 100000) sc->steps = (int)n;
    else if (strcmp(opt, "--class") == 0 && n >= -1) sc->class_label = (int)n;
    else if (strcmp(opt, "--seed") == 0 && n >= 0) sc->seed = (uint64_t)n;
    else return usage_error("sample: unknown option or value out of range: %s", opt);
    return 0;
}

static int sample_checkpoint(const char *path, int argc, char **argv, int first) {
    static reed_config cfg;
    reed_error err = {{0}};
    char ckpt[REED_PATH_LEN], *text;
    if (reed_checkpoint_config(path, &text, ckpt, &err)) return fail(NULL, &err);
    int rc = reed_config_load_string(&cfg, text, ckpt, &err);
    if (rc) {
        free(text);
        return fail(NULL, &err);
    }
    reed_sample_config sc = cfg.sample;
    const char *out = "samples.png";
    for (int i = first; i < argc && rc == 0; i++) {
        if (strcmp(argv[i], "--online") == 0) sc.ema = 0;
        else if (i + 1 < argc && strncmp(argv[i], "--", 2) == 0) {
            rc = parse_sample_option(&sc, argv[i], argv[i + 1], &out);
            i++;
        } else rc = usage_error("sample: unexpected argument \"%s\"", argv[i]);
    }
    reed_run *run = NULL;
    if (rc == 0 && (reed_run_open(&run, &cfg, text, NULL, &err) || reed_run_load(run, ckpt, &err) ||
                    reed_run_sample(run, &sc, out, NULL, &err)))
        rc = fail(NULL, &err);
    if (rc == 0)
        printf("wrote %s: %d samples, %s, %d steps, cfg %g, seed %llu, %s weights, step %d\n", out,
               sc.n, reed_sampler_names[sc.sampler], sc.steps, sc.cfg,
               (unsigned long long)sc.seed, sc.ema ? "EMA" : "online", reed_run_steps_done(run));
    reed_run_close(run);
    free(text);
    return rc;
}

static int cmd_sample(int argc, char **argv) {
    if (argc < 3 || argv[2][0] == '-') return usage_error("sample: %s", "missing CHECKPOINT");
    return sample_checkpoint(argv[2], argc, argv, 3);
}

/* --- reed replay ------------------------------------------------------------------------ */

/* A metrics line without its timing field (imgs_per_s varies run to run). */
static void strip_timing(char *line) {
    char *at = strstr(line, ",\"imgs_per_s\":");
    if (!at) return;
    char *end = strpbrk(at + 1, ",}");
    if (end) memmove(at, end, strlen(end) + 1);
}

/* Counts the lines of two metrics files that differ (timing aside); -1 if
 * either cannot be read. */
static long metrics_differences(const char *a_path, const char *b_path, long *lines) {
    FILE *a = fopen(a_path, "r"), *b = fopen(b_path, "r");
    long diff = 0;
    *lines = 0;
    char la[8192], lb[8192];
    while (a && b) {
        char *ra = fgets(la, sizeof la, a), *rb = fgets(lb, sizeof lb, b);
        if (!ra && !rb) break;
        (*lines)++;
        if (!ra || !rb) { diff++; continue; }
        strip_timing(la);
        strip_timing(lb);
        diff += strcmp(la, lb) != 0;
    }
    if (a) fclose(a);
    if (b) fclose(b);
    return a && b ? diff : -1;
}

static int cmd_replay(int argc, char **argv) {
    if (argc < 3 || argv[2][0] == '-') return usage_error("replay: %s", "missing RUN_DIR");
    char out[REED_PATH_LEN];
    snprintf(out, sizeof out, "%s-replay", argv[2]);
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) snprintf(out, sizeof out, "%s", argv[++i]);
        else return usage_error("replay: unexpected argument \"%s\"", argv[i]);
    }
    reed_error err = {{0}};
    if (reed_replay(argv[2], out, &err)) return fail("replay", &err);
    char a[REED_PATH_LEN + 32], b[REED_PATH_LEN + 32];
    snprintf(a, sizeof a, "%s/metrics.jsonl", argv[2]);
    snprintf(b, sizeof b, "%s/metrics.jsonl", out);
    long lines, diff = metrics_differences(a, b, &lines);
    printf("replayed into %s: %ld metrics lines, %ld differ (imgs_per_s aside)\n", out, lines, diff);
    return diff == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 2) return cmd_run(argc, argv, 1); /* the default preset */
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("reed %s\n", REED_VERSION);
        return 0;
    }
    if (strcmp(cmd, "run") == 0) return cmd_run(argc, argv, 0);
    if (strcmp(cmd, "sample") == 0) return cmd_sample(argc, argv);
    if (strcmp(cmd, "replay") == 0) return cmd_replay(argc, argv);
    if (strcmp(cmd, "teacher") == 0) return teacher_command(argc, argv);
    if (strcmp(cmd, "eval") == 0) return eval_command(argc, argv);
    if (strcmp(cmd, "evaluator") == 0) return evaluator_command(argc, argv);
    return usage_error("unknown command \"%s\"", cmd);
}
