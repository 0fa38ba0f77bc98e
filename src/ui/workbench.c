/* The UI thread: terminal, keys, the REPL input line (GNU readline in
 * callback mode, drawn by us: ulfalizer/readline-and-ncurses), and the
 * redraw loop. It never waits for a step: it polls stdin and the engine's
 * wake-up pipe, and redraws from copies of the live state at most ~15 times
 * a second. */
#define _XOPEN_SOURCE_EXTENDED 1
#include "workbench.h"

#include <locale.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include <ncurses.h>
#include <readline/history.h>
#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>

#include "cuda/reed_cuda.h"
#include "live.h"
#include "lua/session.h"
#include "widgets.h"

enum { MAX_LOG_LINES = 5000, FRAME_MS = 66, CHUNK_CAP = 1 << 16, SCHED_CAP = 4096 };

/* The UI's copies of the live state; the history grows by appending. */
typedef struct ui_copies {
    live_point *history;
    size_t n_history, cap_history;
    float sched_diff[SCHED_CAP], sched_align[SCHED_CAP];
    int sched_first, sched_stride, sched_n;
    live_preview preview;
    uint64_t preview_version;
} ui_copies;

typedef struct workbench {
    reed_run *run;
    reed_live *live;
    reed_session *session;
    pthread_t engine;
    atomic_int engine_done;
    ui_screen *screen;
    ui_copies copies;
    ui_view view;
    WINDOW *input;            /* the REPL line (no keypad: readline sees raw bytes) */
    char *log[MAX_LOG_LINES]; /* the pane's scrollback, oldest first */
    int n_log;
    char chunk[CHUNK_CAP];    /* a multi-line chunk being typed */
    size_t chunk_len;
    lua_State *syntax;        /* a bare state, only to tell complete chunks */
    int key;                  /* the byte readline reads next */
    int key_ready;
    int quit_asked;           /* a second Ctrl-C asks before quitting */
    int dirty;
    char history_path[1024];
} workbench;

static workbench *wb_active; /* readline's callbacks take no user data */
static volatile sig_atomic_t got_sigint, got_sigterm, got_sigwinch;

/* --- the log pane ---------------------------------------------------------------- */

static void log_add(workbench *wb, const char *line) {
    if (wb->n_log == MAX_LOG_LINES) {
        free(wb->log[0]);
        memmove(wb->log, wb->log + 1, sizeof wb->log[0] * (MAX_LOG_LINES - 1));
        wb->n_log--;
    }
    wb->log[wb->n_log++] = strdup(line);
    wb->dirty = 1;
}

static void log_addf(workbench *wb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_addf(workbench *wb, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_add(wb, line);
}

/* Engine messages may hold several lines. */
static void drain_engine_log(workbench *wb) {
    for (char *msg; (msg = live_log_pop(wb->live));) {
        for (char *line = strtok(msg, "\n"); line; line = strtok(NULL, "\n")) log_add(wb, line);
        free(msg);
    }
}

/* --- commands --------------------------------------------------------------------- */

static void push_simple(workbench *wb, live_cmd_kind kind) {
    live_push(wb->live, (live_cmd){kind, NULL, 0});
}

/* Lua's own test for an unfinished chunk: a syntax error at <eof>
 * (lua.c incomplete()); "return <chunk>" is tried too, for expressions. */
static int chunk_incomplete(workbench *wb, const char *text) {
    int status = luaL_loadbuffer(wb->syntax, text, strlen(text), "=stdin");
    int incomplete = 0;
    if (status == LUA_ERRSYNTAX) {
        size_t len;
        const char *msg = lua_tolstring(wb->syntax, -1, &len);
        incomplete = len >= 5 && strcmp(msg + len - 5, "<eof>") == 0;
    }
    lua_settop(wb->syntax, 0);
    return incomplete;
}

static void submit_chunk(workbench *wb) {
    live_status st;
    live_status_get(wb->live, &st);
    int ticket = live_push(wb->live, (live_cmd){LIVE_CMD_LUA, strdup(wb->chunk), 0});
    if (st.paused)
        log_addf(wb, "  [%d] runs now (paused at step %d)", ticket, st.step);
    else
        log_addf(wb, "  [%d] queued → step %d", ticket, st.step + 1);
    wb->chunk_len = 0;
    wb->chunk[0] = '\0';
}

/* readline's line handler: collects lines until the chunk is complete. */
static void on_line(char *line) {
    workbench *wb = wb_active;
    if (!line) { /* Ctrl-D on an empty line */
        log_add(wb, "(Ctrl-D) type quit() or press q in the dashboard to quit");
        return;
    }
    if (*line) {
        add_history(line);
        append_history(1, wb->history_path);
    }
    log_addf(wb, "%s%s", wb->chunk_len ? ">> " : "> ", line);
    size_t n = strlen(line);
    if (wb->chunk_len + n + 2 < CHUNK_CAP) {
        if (wb->chunk_len) wb->chunk[wb->chunk_len++] = '\n';
        memcpy(wb->chunk + wb->chunk_len, line, n + 1);
        wb->chunk_len += n;
    }
    free(line);
    if (wb->chunk_len == 0) return;
    if (chunk_incomplete(wb, wb->chunk)) {
        rl_set_prompt(">> ");
        return;
    }
    rl_set_prompt("> ");
    submit_chunk(wb);
}

/* --- readline in callback mode ------------------------------------------------------ */

static int rl_getc_from_key(FILE *f) {
    (void)f;
    wb_active->key_ready = 0;
    return wb_active->key;
}

static int rl_input_avail(void) { return wb_active->key_ready; }

/* Draws prompt + line and places the cursor; readline does not export the
 * cursor column, so it is measured with wcwidth over the text before it. */
static void rl_draw_input(void) {
    workbench *wb = wb_active;
    if (!wb->input) return;
    werase(wb->input);
    int cols = getmaxx(wb->input);
    const char *prompt = rl_display_prompt ? rl_display_prompt : "";
    char before[4096];
    snprintf(before, sizeof before, "%s%.*s", prompt, rl_point, rl_line_buffer);
    wchar_t wide[4096];
    size_t n = mbstowcs(wide, before, 4096);
    int col = n == (size_t)-1 ? (int)strlen(before) : wcswidth(wide, n);
    int shift = col >= cols ? col - cols + 1 : 0; /* keep the cursor in view */
    char line[8192];
    snprintf(line, sizeof line, "%s%s", prompt, rl_line_buffer);
    mvwaddnstr(wb->input, 0, 0, line + (shift < (int)strlen(line) ? shift : 0), -1);
    wmove(wb->input, 0, col - shift < cols ? col - shift : cols - 1);
    wnoutrefresh(wb->input);
}

/* Completion over the names the engine publishes (API functions, config
 * fields), matched on the word before the cursor. */
static char *complete_name(const char *text, int state) {
    static char *names;
    static char *cursor;
    if (state == 0) {
        free(names);
        names = live_completions_get(wb_active->live);
        cursor = names;
    }
    size_t len = strlen(text);
    while (cursor && *cursor) {
        char *end = strchr(cursor, '\n');
        size_t n = end ? (size_t)(end - cursor) : strlen(cursor);
        char *name = cursor;
        cursor = end ? end + 1 : cursor + n;
        if (n >= len && strncmp(name, text, len) == 0) return strndup(name, n);
    }
    return NULL;
}

static char **complete(const char *text, int start, int end) {
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1;
    return rl_completion_matches(text, complete_name);
}

/* Completion lists go to the log pane, never to the terminal directly. */
static void show_matches(char **matches, int n, int max_len) {
    (void)max_len;
    char line[1024] = "";
    for (int i = 1; i <= n && strlen(line) < 900; i++) {
        strcat(line, matches[i]);
        strcat(line, "  ");
    }
    log_add(wb_active, line);
}

static void readline_init(workbench *wb) {
    rl_catch_signals = 0;
    rl_catch_sigwinch = 0;
    rl_change_environment = 0;
    rl_prep_term_function = NULL;
    rl_deprep_term_function = NULL;
    rl_getc_function = rl_getc_from_key;
    rl_input_available_hook = rl_input_avail;
    rl_redisplay_function = rl_draw_input;
    rl_attempted_completion_function = complete;
    rl_completion_display_matches_hook = show_matches;
    rl_completion_query_items = -1;
    rl_completer_word_break_characters = " \t\n\"'()[]{},;=+-*/^%<>~#";
    rl_variable_bind("page-completions", "off");
    const char *home = getenv("HOME");
    snprintf(wb->history_path, sizeof wb->history_path, "%s/.reed_history", home ? home : ".");
    using_history();
    read_history(wb->history_path);
    rl_callback_handler_install("> ", on_line);
}

/* --- keys ------------------------------------------------------------------------------ */

/* q, SIGTERM, SIGHUP, a terminal gone: save a checkpoint and quit. A
 * running chunk is interrupted first: the quit would wait behind it. */
static void request_quit(workbench *wb, const char *msg) {
    live_status st;
    live_status_get(wb->live, &st);
    if (st.running_command) live_request_interrupt(wb->live);
    push_simple(wb, LIVE_CMD_QUIT);
    log_add(wb, msg);
}

/* Dashboard keys; returns 1 when the key was one. */
static int dashboard_key(workbench *wb, int c) {
    switch (c) {
    case ' ': push_simple(wb, LIVE_CMD_TOGGLE_PAUSE); break;
    case 's': push_simple(wb, LIVE_CMD_SAMPLE); log_add(wb, "sampling…"); break;
    case 'c': push_simple(wb, LIVE_CMD_CHECKPOINT); break;
    case 'q': request_quit(wb, "saving a checkpoint and quitting…"); break;
    case 'l': wb->view.log_scale = !wb->view.log_scale; break;
    case '+': wb->view.zoom_steps = wb->view.zoom_steps ? wb->view.zoom_steps / 2 : 512; break;
    case '-': wb->view.zoom_steps *= 2; break;
    case '0': wb->view.zoom_steps = 0; break;
    case '?': wb->view.show_help = !wb->view.show_help; break;
    case KEY_PPAGE: wb->view.log_scroll += 10; break;
    case KEY_NPAGE: wb->view.log_scroll = wb->view.log_scroll > 10 ? wb->view.log_scroll - 10 : 0; break;
    default: return 0;
    }
    if (wb->view.zoom_steps < 0 || wb->view.zoom_steps > (1 << 30)) wb->view.zoom_steps = 0;
    wb->dirty = 1;
    return 1;
}

/* Ctrl-C: interrupts running Lua, else pauses; pressed again while paused
 * with nothing running, it asks before quitting. */
static void on_ctrl_c(workbench *wb) {
    live_status st;
    live_status_get(wb->live, &st);
    if (st.paused && !st.running_command) {
        wb->quit_asked = 1;
        log_add(wb, "paused. press q to save a checkpoint and quit, any other key to stay");
        return;
    }
    // One request sets the flag once: a second set after a running chunk
    // had already taken the first would pause the run once the chunk ended.
    push_simple(wb, LIVE_CMD_INTERRUPT);
}

static void feed_readline(workbench *wb, int c) {
    wb->key = c;
    wb->key_ready = 1;
    rl_callback_read_char();
}

static void on_key(workbench *wb, int c) {
    if (c == 3) {
        on_ctrl_c(wb);
        return;
    }
    if (wb->quit_asked) {
        wb->quit_asked = 0;
        if (c == 'q') dashboard_key(wb, 'q');
        else log_add(wb, "staying");
        return;
    }
    int line_empty = rl_end == 0 && wb->chunk_len == 0;
    if (wb->view.focus == UI_FOCUS_DASHBOARD) {
        if (c == '\t' || c == 27 || c == '\n' || c == '\r' || c == ':')
            wb->view.focus = UI_FOCUS_REPL;
        else dashboard_key(wb, c);
        wb->dirty = 1;
        return;
    }
    if (line_empty && c == '\t') {
        wb->view.focus = UI_FOCUS_DASHBOARD;
        wb->dirty = 1;
        return;
    }
    /* keys that cannot start a Lua statement act on an empty REPL line too */
    if (line_empty && strchr(" ?+-0", c) && dashboard_key(wb, c)) return;
    if (c == KEY_PPAGE || c == KEY_NPAGE) {
        dashboard_key(wb, c);
        return;
    }
    feed_readline(wb, c);
}

/* --- drawing ---------------------------------------------------------------------------- */

/* Appends the new history points; refreshes schedule and preview. */
static void refresh_copies(workbench *wb) {
    ui_copies *c = &wb->copies;
    size_t total = live_history_count(wb->live);
    if (total > c->cap_history) {
        size_t cap = total * 2 + 1024;
        live_point *grown = realloc(c->history, cap * sizeof *grown);
        if (!grown) return;
        c->history = grown;
        c->cap_history = cap;
    }
    if (total > c->n_history)
        c->n_history += live_history_copy(wb->live, c->n_history, total - c->n_history,
                                          c->history + c->n_history);
    c->sched_n = live_schedule_get_strided(wb->live, &c->sched_first, &c->sched_stride,
                                           c->sched_diff, c->sched_align, SCHED_CAP);
    live_preview fresh;
    if (live_preview_get(wb->live, &c->preview_version, &fresh)) {
        free(c->preview.pixels);
        c->preview = fresh;
    }
}

static void draw(workbench *wb) {
    ui_copies *c = &wb->copies;
    refresh_copies(wb);
    ui_snapshot snap = {0};
    live_status_get(wb->live, &snap.status);
    snap.history = c->history;
    snap.n_history = c->n_history;
    snap.sched_first = c->sched_first;
    snap.sched_n = c->sched_n < SCHED_CAP ? c->sched_n : SCHED_CAP;
    snap.sched_stride = c->sched_stride;
    snap.sched_w_diff = c->sched_diff;
    snap.sched_w_align = c->sched_align;
    snap.preview = c->preview.width ? &c->preview : NULL;
    snap.log_lines = (const char *const *)wb->log;
    snap.n_log = (size_t)wb->n_log;
    ui_screen_draw(wb->screen, &snap, &wb->view);
    rl_draw_input();
    doupdate();
    wb->dirty = 0;
}

static void relayout(workbench *wb) {
    int rows, cols;
    getmaxyx(stdscr, rows, cols);
    ui_screen_resize(wb->screen, rows, cols);
    ui_rect r = ui_screen_layout(wb->screen)->r[UI_PANEL_INPUT];
    if (wb->input) delwin(wb->input);
    wb->input = newwin(r.h > 0 ? r.h : 1, r.w > 0 ? r.w : 1, r.y, r.x);
    nodelay(wb->input, TRUE);
    rl_set_screen_size(1, r.w > 0 ? r.w : 1);
    /* repaint everything: a smaller screen must not keep pieces of the old one */
    werase(stdscr);
    wnoutrefresh(stdscr);
    clearok(curscr, TRUE);
    wb->dirty = 1;
}

/* --- signals and the terminal ---------------------------------------------------------- */

static void on_sigint(int sig) { (void)sig; got_sigint = 1; }
static void on_sigterm(int sig) { (void)sig; got_sigterm = 1; }
static void on_sigwinch(int sig) { (void)sig; got_sigwinch = 1; }

/* A crash must not leave the terminal in raw mode. */
static void on_crash(int sig) {
    endwin();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void restore_terminal(void) {
    if (!isendwin()) endwin();
}

/* A CUDA error aborts the process: restore the screen first so that the
 * message stays readable. */
static void on_cuda_fatal(const char *msg) {
    restore_terminal();
    fprintf(stderr, "reed: %s\n", msg);
}

static void install_signals(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_sigterm;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    int crashes[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof crashes / sizeof *crashes; i++) signal(crashes[i], on_crash);
    atexit(restore_terminal);
    reed_cuda_set_fatal_handler(on_cuda_fatal);
}

static void terminal_init(workbench *wb) {
    setlocale(LC_ALL, "");
    initscr();
    raw(); /* Ctrl-C arrives as a key; signals from outside still work */
    noecho();
    nonl();
    set_escdelay(25);
    keypad(stdscr, FALSE);
    curs_set(1);
    wb->screen = ui_screen_new();
    wb->view.glyphs = ui_default_glyphs();
    relayout(wb);
    /* Our own resize handling: with keypad off (readline reads the raw
     * keys) ncurses did not hand the loop a KEY_RESIZE, and the old layout
     * went on being drawn into the resized terminal. */
    struct sigaction sa = {0};
    sa.sa_handler = on_sigwinch;
    sigaction(SIGWINCH, &sa, NULL);
}

/* --- the loop ---------------------------------------------------------------------------- */

static void *engine_main(void *arg) {
    workbench *wb = arg;
    reed_session_run(wb->session);
    atomic_store(&wb->engine_done, 1);
    return NULL;
}

static void handle_signals(workbench *wb) {
    if (got_sigint) {
        got_sigint = 0;
        on_ctrl_c(wb);
    }
    if (got_sigterm) {
        got_sigterm = 0;
        request_quit(wb, "terminated: saving a checkpoint and quitting…");
    }
    if (got_sigwinch) {
        got_sigwinch = 0;
        struct winsize ws;
        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0)
            resizeterm(ws.ws_row, ws.ws_col);
        relayout(wb);
    }
}

/* Typed keys echo at once (readline has redrawn the input window); the
 * dashboard waits for the next frame. */
static void read_keys(workbench *wb) {
    int typed = 0;
    for (int c; (c = wgetch(wb->input)) != ERR; typed = 1) {
        if (c == KEY_RESIZE) relayout(wb);
        else on_key(wb, c);
    }
    if (typed) doupdate();
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Once the terminal has hung up (an SSH connection dropped, a tmux server
 * killed) the loop quits like SIGHUP does, stops reading and drawing (both
 * would fail at once, every time round), and only waits for the engine. */
static void ui_loop(workbench *wb) {
    double last_draw = 0;
    int tty_gone = 0;
    while (!atomic_load(&wb->engine_done)) {
        struct pollfd fds[2] = {{live_wake_fd(wb->live), POLLIN, 0},
                                {tty_gone ? -1 : STDIN_FILENO, POLLIN, 0}};
        poll(fds, 2, FRAME_MS);
        handle_signals(wb);
        if (fds[0].revents & POLLIN) {
            live_drain_wake(wb->live);
            wb->dirty = 1;
        }
        if (!tty_gone && (fds[1].revents & (POLLHUP | POLLERR | POLLNVAL))) {
            tty_gone = 1;
            request_quit(wb, "the terminal went away: saving a checkpoint and quitting…");
        }
        drain_engine_log(wb);
        if (tty_gone) continue;
        read_keys(wb);
        if (wb->dirty && now_ms() - last_draw >= FRAME_MS) {
            draw(wb);
            last_draw = now_ms();
        }
    }
}

static void workbench_free(workbench *wb) {
    rl_callback_handler_remove();
    if (wb->input) delwin(wb->input);
    if (wb->screen) ui_screen_free(wb->screen);
    restore_terminal();
    free(wb->copies.history);
    free(wb->copies.preview.pixels);
    for (int i = 0; i < wb->n_log; i++) free(wb->log[i]);
    if (wb->syntax) lua_close(wb->syntax);
    if (wb->session) reed_session_free(wb->session);
    if (wb->live) live_free(wb->live);
}

int workbench_main(reed_run *run) {
    static workbench wb;
    reed_error err = {{0}};
    char log_path[REED_PATH_LEN + 32];
    snprintf(log_path, sizeof log_path, "%s/commands.log", reed_run_dir(run));
    wb.run = run;
    wb.live = live_new();
    wb.syntax = luaL_newstate();
    wb.view.focus = UI_FOCUS_REPL;
    if (!wb.live || !wb.syntax || reed_session_new(&wb.session, run, wb.live, log_path, &err)) {
        fprintf(stderr, "reed: cannot start the workbench: %s\n", err.msg[0] ? err.msg : "out of memory");
        workbench_free(&wb);
        return 1;
    }
    wb_active = &wb;
    install_signals();
    terminal_init(&wb);
    readline_init(&wb);
    log_add(&wb, "REED workbench: training starts. Type help() for the Lua API, ? for keys.");
    if (reed_run_device_note(run)[0]) log_addf(&wb, "device: %s", reed_run_device_note(run));
    pthread_create(&wb.engine, NULL, engine_main, &wb);
    ui_loop(&wb);
    pthread_join(wb.engine, NULL);
    drain_engine_log(&wb);
    workbench_free(&wb);
    printf("workbench closed at step %d; run directory %s\n", reed_run_steps_done(run),
           reed_run_dir(run));
    return 0;
}
