/* The dashboard panels with ncurses (see widgets.h). Charts and the preview
 * are rendered into a cell canvas by chart.c/preview.c; this file turns
 * canvases into curses cells, owns the colour setup and draws the text
 * panels (status, phase summary, log, help). */
#ifndef _XOPEN_SOURCE_EXTENDED
#define _XOPEN_SOURCE_EXTENDED 1    /* ncurses wide-character API (cchar_t) */
#endif
#include "widgets.h"

#include <langinfo.h>
#include <math.h>
#include <ncurses.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

enum {
    PAIR_TABLE = 8192,          /* (fg, bg) → pair cache, open addressing */
    RGB_KEYS = 1 << 18,         /* 6 bits per channel */
    SLOT_FIRST = 16, SLOT_LAST = 231,   /* redefinable colours for the preview */
    MAX_BANDS = 64,
    MAX_PHASES = 8,
};

typedef enum { COLOR_MODE_NONE, COLOR_MODE_8, COLOR_MODE_256 } color_mode;

typedef struct pair_entry { int fg, bg, pair; } pair_entry;

struct ui_screen {
    ui_layout layout;
    WINDOW *bg;                         /* blank backdrop under the panels */
    WINDOW *win[UI_PANEL_COUNT];        /* none for UI_PANEL_INPUT (the caller's) */
    canvas cv;                          /* scratch for charts and the preview */
    color_mode colors;
    int direct_rgb;                     /* colour numbers are 0xRRGGBB (xterm-direct) */
    int palette_rgb;                    /* may redefine colours 16..231 for the preview */
    pair_entry pairs[PAIR_TABLE];
    int next_pair, max_pairs;
    short *rgb_slot;                    /* RGB_KEYS → colour number, -1 unset */
    int next_slot;
    uint64_t slots_version;             /* preview version the slots were made for */
    double *xs;                         /* scratch series */
    float *ys;
    size_t cap_x, cap_y;
};

/* --- colour scheme --------------------------------------------------------------- */

typedef struct scheme_entry {
    short fg256, bg256;                 /* -1: terminal default */
    short fg8, bg8;
    attr_t attr;                        /* added in every mode */
    attr_t mono;                        /* used instead of colours with none */
} scheme_entry;

static const scheme_entry scheme[UI_COLOR_COUNT] = {
    [UI_COLOR_DEFAULT] = { -1, -1, -1, -1, 0, 0 },
    [UI_COLOR_STATUS] = { 255, 236, COLOR_WHITE, COLOR_BLUE, 0, A_REVERSE },
    [UI_COLOR_STATUS_RUNNING] = { 10, 236, COLOR_GREEN, COLOR_BLUE, A_BOLD, A_BOLD },
    [UI_COLOR_STATUS_PAUSED] = { 11, 236, COLOR_YELLOW, COLOR_BLUE, A_BOLD, A_BOLD | A_BLINK },
    [UI_COLOR_STATUS_BUSY] = { 14, 236, COLOR_CYAN, COLOR_BLUE, A_BOLD, A_BOLD },
    [UI_COLOR_TITLE] = { 15, -1, COLOR_WHITE, -1, A_BOLD, A_BOLD },
    [UI_COLOR_TITLE_FOCUS] = { 0, 14, COLOR_BLACK, COLOR_CYAN, A_BOLD, A_REVERSE },
    [UI_COLOR_AXIS] = { 245, -1, COLOR_WHITE, -1, 0, A_DIM },
    [UI_COLOR_LOSS] = { 14, -1, COLOR_CYAN, -1, 0, 0 },
    [UI_COLOR_DENOISE] = { 13, -1, COLOR_MAGENTA, -1, 0, 0 },
    [UI_COLOR_W_DIFF] = { 12, -1, COLOR_BLUE, -1, 0, 0 },
    [UI_COLOR_W_ALIGN] = { 11, -1, COLOR_YELLOW, -1, 0, 0 },
    [UI_COLOR_NOW] = { 9, -1, COLOR_RED, -1, A_BOLD, A_BOLD },
    [UI_COLOR_EDGE] = { 244, -1, COLOR_WHITE, -1, 0, A_DIM },
    [UI_COLOR_SOURCE0 + 0] = { 10, -1, COLOR_GREEN, -1, 0, 0 },
    [UI_COLOR_SOURCE0 + 1] = { 11, -1, COLOR_YELLOW, -1, 0, 0 },
    [UI_COLOR_SOURCE0 + 2] = { 13, -1, COLOR_MAGENTA, -1, 0, 0 },
    [UI_COLOR_SOURCE0 + 3] = { 14, -1, COLOR_CYAN, -1, 0, 0 },
    [UI_COLOR_SOURCE0 + 4] = { 12, -1, COLOR_BLUE, -1, 0, 0 },
    [UI_COLOR_SOURCE0 + 5] = { 9, -1, COLOR_RED, -1, 0, 0 },
    [UI_COLOR_BAND0 + 0] = { -1, 234, -1, -1, 0, 0 },
    [UI_COLOR_BAND0 + 1] = { -1, 236, -1, -1, 0, 0 },
    [UI_COLOR_BAND0 + 2] = { -1, 235, -1, -1, 0, 0 },
    [UI_COLOR_BAND0 + 3] = { -1, 237, -1, -1, 0, 0 },
    [UI_COLOR_TABLE_HEADER] = { 250, -1, COLOR_WHITE, -1, A_UNDERLINE, A_UNDERLINE },
    [UI_COLOR_LOG] = { -1, -1, -1, -1, 0, 0 },
    [UI_COLOR_LOG_INPUT] = { 14, -1, COLOR_CYAN, -1, 0, A_BOLD },
    [UI_COLOR_LOG_ERROR] = { 9, -1, COLOR_RED, -1, A_BOLD, A_BOLD },
    [UI_COLOR_HELP] = { 255, 235, COLOR_WHITE, COLOR_BLUE, 0, 0 },
    [UI_COLOR_HELP_KEY] = { 11, 235, COLOR_YELLOW, COLOR_BLUE, A_BOLD, A_BOLD },
};

static short scheme_fg(const ui_screen *s, int c) {
    return s->colors == COLOR_MODE_256 ? scheme[c].fg256 : scheme[c].fg8;
}

static short scheme_bg(const ui_screen *s, int c) {
    return s->colors == COLOR_MODE_256 ? scheme[c].bg256 : scheme[c].bg8;
}

static void colors_init(ui_screen *s) {
    s->colors = COLOR_MODE_NONE;
    if (!has_colors() || start_color() == ERR) return;
    use_default_colors();
    s->colors = COLORS >= 256 ? COLOR_MODE_256 : COLORS >= 8 ? COLOR_MODE_8 : COLOR_MODE_NONE;
    s->direct_rgb = COLORS >= 0x1000000;
    s->palette_rgb = !s->direct_rgb && COLORS >= 256 && can_change_color();
    s->max_pairs = COLOR_PAIRS;
    s->next_pair = 1;
}

/* The pair for (fg, bg) colour numbers, allocated on first use; the cache
 * starts over when the terminal's pairs run out. */
static int pair_for(ui_screen *s, int fg, int bg) {
    if (s->colors == COLOR_MODE_NONE || (fg < 0 && bg < 0)) return 0;
    unsigned h = ((unsigned)fg * 2654435761u ^ (unsigned)bg * 40503u) % PAIR_TABLE;
    for (int probe = 0; probe < PAIR_TABLE; probe++, h = (h + 1) % PAIR_TABLE) {
        pair_entry *e = &s->pairs[h];
        if (e->pair && e->fg == fg && e->bg == bg) return e->pair;
        if (e->pair) continue;
        if (s->next_pair >= s->max_pairs || s->next_pair > PAIR_TABLE * 3 / 4) {
            memset(s->pairs, 0, sizeof s->pairs);
            s->next_pair = 1;
            return pair_for(s, fg, bg);
        }
        *e = (pair_entry){ fg, bg, s->next_pair++ };
        init_extended_pair(e->pair, fg, bg);
        return e->pair;
    }
    return 0;
}

/* A colour number showing 0xRRGGBB: itself on direct-colour terminals, a
 * redefined palette slot where allowed (while slots last: the table is only
 * reset between preview versions, never mid-frame), else the nearest
 * xterm-256 colour. */
static int rgb_color(ui_screen *s, uint32_t rgb) {
    int r = rgb >> 16 & 255, g = rgb >> 8 & 255, b = rgb & 255;
    if (s->direct_rgb) return (int)rgb;
    if (!s->palette_rgb || !s->rgb_slot) return preview_xterm256((uint8_t)r, (uint8_t)g, (uint8_t)b);
    int key = (r >> 2) << 12 | (g >> 2) << 6 | b >> 2;
    if (s->rgb_slot[key] >= 0) return s->rgb_slot[key];
    if (s->next_slot > SLOT_LAST) return preview_xterm256((uint8_t)r, (uint8_t)g, (uint8_t)b);
    int slot = s->next_slot++;
    init_extended_color(slot, r * 1000 / 255, g * 1000 / 255, b * 1000 / 255);
    s->rgb_slot[key] = (short)slot;
    return slot;
}

/* --- canvas → window ------------------------------------------------------------- */

static wchar_t utf8_decode(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    if (u[0] < 0x80) return u[0];
    if (u[0] >= 0xF0) return (wchar_t)((u[0] & 7) << 18 | (u[1] & 63) << 12 | (u[2] & 63) << 6 | (u[3] & 63));
    if (u[0] >= 0xE0) return (wchar_t)((u[0] & 15) << 12 | (u[1] & 63) << 6 | (u[2] & 63));
    if (u[0] >= 0xC0) return (wchar_t)((u[0] & 31) << 6 | (u[1] & 63));
    return L'?';
}

static attr_t canvas_attrs(const ui_screen *s, const canvas_cell *c) {
    attr_t a = 0;
    if (c->attr & CANVAS_ATTR_DIM) a |= A_DIM;
    if (c->attr & CANVAS_ATTR_BOLD) a |= A_BOLD;
    if (c->attr & CANVAS_ATTR_REVERSE) a |= A_REVERSE;
    if (!(c->attr & (CANVAS_ATTR_RGB | CANVAS_ATTR_X256)) && c->fg < UI_COLOR_COUNT)
        a |= s->colors == COLOR_MODE_NONE ? scheme[c->fg].mono : scheme[c->fg].attr;
    return a;
}

static int canvas_pair(ui_screen *s, const canvas_cell *c) {
    if (c->attr & CANVAS_ATTR_RGB)
        return pair_for(s, rgb_color(s, c->fg_rgb), rgb_color(s, c->bg_rgb));
    if (c->attr & CANVAS_ATTR_X256) return pair_for(s, c->fg, c->bg);
    int fg = c->fg < UI_COLOR_COUNT ? scheme_fg(s, c->fg) : -1;
    int bg = c->bg < UI_COLOR_COUNT ? scheme_bg(s, c->bg) : -1;
    return pair_for(s, fg, bg);
}

static void put_cell(WINDOW *w, int y, int x, wchar_t ch, attr_t a, int pair) {
    wchar_t str[2] = { ch, 0 };
    cchar_t cc;
    setcchar(&cc, str, a, 0, &pair);
    mvwadd_wch(w, y, x, &cc);
}

static void draw_canvas(ui_screen *s, WINDOW *w, const canvas *cv) {
    for (int y = 0; y < cv->h; y++)
        for (int x = 0; x < cv->w; x++) {
            const canvas_cell *c = &cv->cells[y * cv->w + x];
            put_cell(w, y, x, c->glyph[0] ? utf8_decode(c->glyph) : L' ', canvas_attrs(s, c),
                     canvas_pair(s, c));
        }
}

/* Text in a semantic colour, clipped to the window's width. */
static void put_text(ui_screen *s, WINDOW *w, int y, int x, ui_color c, const char *text) {
    int maxx = getmaxx(w);
    if (x >= maxx || y >= getmaxy(w)) return;
    attr_t a = s->colors == COLOR_MODE_NONE ? scheme[c].mono : scheme[c].attr;
    wattr_set(w, a, 0, &(int){ pair_for(s, scheme_fg(s, c), scheme_bg(s, c)) });
    mvwaddnstr(w, y, x, text, maxx - x);
    wattr_set(w, 0, 0, &(int){ 0 });
}

static void fill_row(ui_screen *s, WINDOW *w, int y, ui_color c) {
    attr_t a = s->colors == COLOR_MODE_NONE ? scheme[c].mono : scheme[c].attr;
    wattr_set(w, a, 0, &(int){ pair_for(s, scheme_fg(s, c), scheme_bg(s, c)) });
    mvwhline(w, y, 0, ' ', getmaxx(w));
    wattr_set(w, 0, 0, &(int){ 0 });
}

/* --- screen lifecycle ---------------------------------------------------------------- */

static void windows_free(ui_screen *s) {
    for (int p = 0; p < UI_PANEL_COUNT; p++)
        if (s->win[p]) delwin(s->win[p]), s->win[p] = NULL;
    if (s->bg) delwin(s->bg), s->bg = NULL;
}

void ui_screen_resize(ui_screen *s, int rows, int cols) {
    windows_free(s);
    ui_layout_compute(&s->layout, rows, cols);
    if (rows > 1 && cols > 0) s->bg = newwin(rows - 1, cols, 0, 0);   /* all but the input row */
    for (int p = 0; p < UI_PANEL_COUNT; p++) {
        const ui_rect *r = &s->layout.r[p];
        if (p == UI_PANEL_INPUT || !r->visible) continue;
        s->win[p] = newwin(r->h, r->w, r->y, r->x);
    }
}

ui_screen *ui_screen_new(void) {
    ui_screen *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    colors_init(s);
    if (s->palette_rgb) {
        s->rgb_slot = malloc(RGB_KEYS * sizeof *s->rgb_slot);
        for (int i = 0; s->rgb_slot && i < RGB_KEYS; i++) s->rgb_slot[i] = -1;
        s->next_slot = SLOT_FIRST;
    }
    canvas_init(&s->cv, 1, 1);
    ui_screen_resize(s, LINES, COLS);
    return s;
}

void ui_screen_free(ui_screen *s) {
    if (!s) return;
    windows_free(s);
    canvas_free(&s->cv);
    free(s->rgb_slot);
    free(s->xs);
    free(s->ys);
    free(s);
}

const ui_layout *ui_screen_layout(const ui_screen *s) { return &s->layout; }

/* Scratch: xs for n doubles, ys for k arrays of n floats. */
static int scratch(ui_screen *s, size_t n, size_t k) {
    if (n > s->cap_x) {
        double *x = realloc(s->xs, n * sizeof *x);
        if (!x) return -1;
        s->xs = x, s->cap_x = n;
    }
    if (n * k > s->cap_y) {
        float *y = realloc(s->ys, n * k * sizeof *y);
        if (!y) return -1;
        s->ys = y, s->cap_y = n * k;
    }
    return 0;
}

/* --- formatting ------------------------------------------------------------------------ */

void ui_format_duration(char *buf, size_t cap, double sec) {
    if (!(sec >= 0) || sec > 1e9) {
        snprintf(buf, cap, "--");
        return;
    }
    long t = (long)(sec + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, cap, "%lds", t);
}

static void format_bytes(char *buf, size_t cap, size_t bytes) {
    double v = (double)bytes;
    const char *unit = "B";
    if (v >= 1 << 30) v /= 1 << 30, unit = "G";
    else if (v >= 1 << 20) v /= 1 << 20, unit = "M";
    else if (v >= 1 << 10) v /= 1 << 10, unit = "K";
    snprintf(buf, cap, v < 10 && *unit != 'B' ? "%.1f%s" : "%.0f%s", v, unit);
}

/* A number in at most width characters: %.3g, then fewer digits. */
static void fmt_fit(char *buf, int width, double v) {
    static const char *const fmts[] = { "%.3g", "%.2g", "%.1g", "%.0e" };
    if (!isfinite(v)) {
        snprintf(buf, 8, isnan(v) ? "nan" : "inf");
        return;
    }
    for (int i = 0; i < 4; i++) {
        snprintf(buf, 32, fmts[i], v);
        if ((int)strlen(buf) <= width) return;
    }
}

chart_glyphs ui_default_glyphs(void) {
    const char *cs = nl_langinfo(CODESET), *term = getenv("TERM");
    if (!cs || strcmp(cs, "UTF-8") != 0) return CHART_GLYPH_ASCII;
    if (term && strcmp(term, "linux") == 0) return CHART_GLYPH_BLOCK;  /* console fonts lack braille */
    return CHART_GLYPH_BRAILLE;
}

/* --- status line ------------------------------------------------------------------------ */

typedef struct status_field {
    char text[96];
    ui_color color;
    int priority;                       /* lower is dropped first */
} status_field;

static int status_fields(const live_status *st, status_field *f) {
    int n = 0;
    char a[32], b[32];
    const char *state = st->running_command ? "LUA" : st->paused ? "PAUSED" : "RUNNING";
    ui_color sc = st->running_command ? UI_COLOR_STATUS_BUSY
                  : st->paused ? UI_COLOR_STATUS_PAUSED : UI_COLOR_STATUS_RUNNING;
    f[n++] = (status_field){ "", sc, 9 };
    snprintf(f[n - 1].text, sizeof f[0].text, " %s ", state);
    f[n++] = (status_field){ "", UI_COLOR_STATUS, 5 };
    snprintf(f[n - 1].text, sizeof f[0].text, "%s", st->run_name[0] ? st->run_name : "reed");
    f[n++] = (status_field){ "", UI_COLOR_STATUS, 2 };
    snprintf(f[n - 1].text, sizeof f[0].text, "%s", st->backend[0] ? st->backend : "cpu");
    f[n++] = (status_field){ "", UI_COLOR_STATUS, 8 };
    snprintf(f[n - 1].text, sizeof f[0].text, "step %d/%d", st->step, st->total_steps);
    f[n++] = (status_field){ "", UI_COLOR_STATUS, 7 };
    snprintf(f[n - 1].text, sizeof f[0].text, "phase %d/%d %s", st->phase + 1,
             st->n_phases > 0 ? st->n_phases : 1, st->phase_name);
    f[n++] = (status_field){ "", UI_COLOR_STATUS, 6 };
    snprintf(f[n - 1].text, sizeof f[0].text, "%.3git/s", st->its_per_s);
    ui_format_duration(a, sizeof a, st->eta_seconds);
    f[n++] = (status_field){ "", UI_COLOR_STATUS, 6 };
    snprintf(f[n - 1].text, sizeof f[0].text, "ETA %s", a);
    format_bytes(b, sizeof b, st->memory_bytes);
    f[n++] = (status_field){ "", UI_COLOR_STATUS, 3 };
    snprintf(f[n - 1].text, sizeof f[0].text, "mem %s", b);
    if (st->device_bytes > 0) {
        format_bytes(b, sizeof b, st->device_bytes);
        f[n++] = (status_field){ "", UI_COLOR_STATUS, 3 };
        snprintf(f[n - 1].text, sizeof f[0].text, "gpu %s", b);
    }
    if (st->fd >= 0) {
        f[n++] = (status_field){ "", UI_COLOR_STATUS, 4 };
        snprintf(f[n - 1].text, sizeof f[0].text, "FD %.1f", st->fd);
    }
    ui_format_duration(a, sizeof a, st->active_seconds);
    f[n++] = (status_field){ "", UI_COLOR_STATUS, 1 };
    snprintf(f[n - 1].text, sizeof f[0].text, "active %s", a);
    return n;
}

static int status_width(const status_field *f, const int *keep, int n, int sep) {
    int len = 0;
    for (int i = 0; i < n; i++) len += keep[i] ? (int)strlen(f[i].text) + sep : 0;
    return len - sep;
}

/* Fits the fields into width: single spaces, then a shorter run name, then
 * dropping the least important fields. Returns the separator width. */
static int status_fit(status_field *f, int *keep, int n, int width) {
    for (int i = 0; i < n; i++) keep[i] = 1;
    if (status_width(f, keep, n, 2) <= width) return 2;
    int over = status_width(f, keep, n, 1) - width, name_len = (int)strlen(f[1].text);
    if (over > 0 && name_len > 8) {                 /* f[1] is the run name */
        int cut = name_len - over < 8 ? 8 : name_len - over;
        f[1].text[cut - 1] = '~', f[1].text[cut] = 0;
    }
    for (int min_pri = 1; min_pri <= 9 && status_width(f, keep, n, 1) > width; min_pri++)
        for (int i = 0; i < n; i++) keep[i] = f[i].priority >= min_pri;
    return 1;
}

static void draw_status(ui_screen *s, WINDOW *w, const live_status *st) {
    status_field f[16];
    int keep[12], n = status_fields(st, f), sep = status_fit(f, keep, n, getmaxx(w));
    fill_row(s, w, 0, UI_COLOR_STATUS);
    int x = 0;
    for (int i = 0; i < n; i++) {
        if (!keep[i]) continue;
        put_text(s, w, 0, x, f[i].color, f[i].text);
        x += (int)strlen(f[i].text) + sep;
    }
}

/* --- charts ------------------------------------------------------------------------------ */

static int phase_of(const live_point *p) {
    return p->phase < 0 ? 0 : p->phase >= MAX_PHASES ? MAX_PHASES - 1 : p->phase;
}

/* One band per run of equal phases in the history. */
static int phase_bands(const ui_snapshot *snap, chart_band *bands) {
    int n = 0;
    for (size_t i = 0; i < snap->n_history && n < MAX_BANDS; i++) {
        const live_point *p = &snap->history[i];
        double end = i + 1 < snap->n_history ? snap->history[i + 1].step : p->step + 1;
        if (n && bands[n - 1].color == UI_COLOR_BAND0 + phase_of(p) % 4 && i &&
            phase_of(&snap->history[i - 1]) == phase_of(p)) {
            bands[n - 1].x1 = end;
            continue;
        }
        bands[n++] = (chart_band){ p->step, end, (uint8_t)(UI_COLOR_BAND0 + phase_of(p) % 4) };
    }
    return n;
}

/* The visible step window: the last zoom_steps, or all history. */
static void step_window(const ui_snapshot *snap, const ui_view *view, double *x0, double *x1) {
    double last = snap->n_history ? snap->history[snap->n_history - 1].step : snap->status.step;
    double first = snap->n_history ? snap->history[0].step : 0;
    *x1 = last;
    *x0 = view->zoom_steps > 0 && last - view->zoom_steps > first ? last - view->zoom_steps
                                                                  : first;
    if (*x1 <= *x0) *x1 = *x0 + 1;
}

static float smoothing_of(const ui_view *view) {
    return view->smoothing > 0 ? view->smoothing : 0.9f;
}

static chart_spec base_spec(const ui_view *view, const char *title) {
    return (chart_spec){ .title = title, .glyphs = view->glyphs, .axis_color = UI_COLOR_AXIS,
                         .title_color = UI_COLOR_TITLE, .now_color = UI_COLOR_NOW,
                         .edge_color = UI_COLOR_EDGE, .band_edges = 1 };
}

static void render_chart(ui_screen *s, WINDOW *w, const chart_spec *spec) {
    canvas_resize(&s->cv, getmaxx(w), getmaxy(w));
    chart_render(&s->cv, spec, NULL);
    draw_canvas(s, w, &s->cv);
}

/* Fills ys[0..n) with a history field and ys[n..2n) with its debiased EMA. */
static void series_pair(const ui_snapshot *snap, size_t off, float *ys, float smoothing) {
    size_t n = snap->n_history;
    for (size_t i = 0; i < n; i++)
        ys[i] = *(const float *)((const char *)&snap->history[i] + off);
    ema_debiased(ys, (int)n, smoothing, ys + n);
}

static void nan_note(const ui_snapshot *snap, char *buf, size_t cap) {
    int count = 0, at = 0;
    for (size_t i = 0; i < snap->n_history; i++)
        if (!isfinite(snap->history[i].loss)) count++, at = snap->history[i].step;
    if (count) snprintf(buf, cap, "  NaN x%d (last @%d)", count, at);
}

static void draw_loss(ui_screen *s, WINDOW *w, const ui_snapshot *snap, const ui_view *view) {
    size_t n = snap->n_history;
    char title[96] = "loss", note[48] = "";
    if (scratch(s, n + 1, 4) != 0) return;
    for (size_t i = 0; i < n; i++) s->xs[i] = snap->history[i].step;
    float sm = smoothing_of(view), *total = s->ys, *den = s->ys + 2 * n;
    series_pair(snap, offsetof(live_point, loss), total, sm);
    series_pair(snap, offsetof(live_point, loss_denoise), den, sm);
    nan_note(snap, note, sizeof note);
    if (view->zoom_steps > 0) snprintf(title, sizeof title, "loss, last %d steps", view->zoom_steps);
    chart_series ser[4] = {
        { s->xs, total, (int)n, CHART_FAINT, UI_COLOR_LOSS, NULL },
        { s->xs, den, (int)n, CHART_FAINT, UI_COLOR_DENOISE, NULL },
        { s->xs, den + n, (int)n, CHART_SOLID, UI_COLOR_DENOISE, "denoise" },
        { s->xs, total + n, (int)n, CHART_SOLID, UI_COLOR_LOSS, "total" },
    };
    chart_band bands[MAX_BANDS];
    chart_spec spec = base_spec(view, title);
    spec.series = ser, spec.n_series = 4, spec.log_y = view->log_scale;
    spec.note = note, spec.note_color = UI_COLOR_LOG_ERROR;
    spec.bands = bands, spec.n_bands = phase_bands(snap, bands);
    step_window(snap, view, &spec.x0, &spec.x1);
    render_chart(s, w, &spec);
}

static void draw_align(ui_screen *s, WINDOW *w, const ui_snapshot *snap, const ui_view *view) {
    int ns = snap->status.n_sources < REED_MAX_SOURCES ? snap->status.n_sources : REED_MAX_SOURCES;
    size_t n = snap->n_history;
    if (ns <= 0) {
        put_text(s, w, 0, 0, UI_COLOR_TITLE, "similarity (cosine, higher is better)");
        put_text(s, w, getmaxy(w) > 1 ? 1 : 0, 0, UI_COLOR_AXIS,
                 "no representation sources: plain SiT");
        return;
    }
    if (scratch(s, n + 1, 2 * (size_t)ns) != 0) return;
    for (size_t i = 0; i < n; i++) s->xs[i] = snap->history[i].step;
    chart_series ser[2 * REED_MAX_SOURCES];
    for (int k = 0; k < ns; k++) {
        float *y = s->ys + 2 * (size_t)k * n;
        series_pair(snap, offsetof(live_point, sim) + (size_t)k * sizeof(float), y, smoothing_of(view));
        uint8_t c = (uint8_t)(UI_COLOR_SOURCE0 + k % (UI_COLOR_SOURCE_LAST - UI_COLOR_SOURCE0 + 1));
        ser[k] = (chart_series){ s->xs, y, (int)n, CHART_FAINT, c, NULL };
        ser[ns + k] = (chart_series){ s->xs, y + n, (int)n, CHART_SOLID, c, snap->status.source_names[k] };
    }
    chart_band bands[MAX_BANDS];
    chart_spec spec = base_spec(view, "similarity (cosine, higher is better)");
    spec.series = ser, spec.n_series = 2 * ns;
    spec.bands = bands, spec.n_bands = phase_bands(snap, bands);
    step_window(snap, view, &spec.x0, &spec.x1);
    render_chart(s, w, &spec);
}

/* Applied weights (solid, from the history) and the plan ahead (dotted). */
static void draw_curriculum(ui_screen *s, WINDOW *w, const ui_snapshot *snap,
                            const ui_view *view) {
    size_t n = snap->n_history, m = snap->sched_n > 0 ? (size_t)snap->sched_n : 0;
    if (scratch(s, n + m + 1, 2) != 0) return;
    float *wd = s->ys, *wa = s->ys + n, vmax = 1;
    double *xs_ahead = s->xs + n;
    for (size_t i = 0; i < n; i++) {
        s->xs[i] = snap->history[i].step;
        wd[i] = snap->history[i].w_diff, wa[i] = snap->history[i].w_align;
        vmax = fmaxf(vmax, fmaxf(wd[i], wa[i]));
    }
    double stride = snap->sched_stride > 1 ? snap->sched_stride : 1;
    for (size_t i = 0; i < m; i++) {
        xs_ahead[i] = snap->sched_first + stride * (double)i;
        vmax = fmaxf(vmax, fmaxf(snap->sched_w_diff[i], snap->sched_w_align[i]));
    }
    chart_series ser[4] = {
        { xs_ahead, snap->sched_w_diff, (int)m, CHART_DOTTED, UI_COLOR_W_DIFF, NULL },
        { xs_ahead, snap->sched_w_align, (int)m, CHART_DOTTED, UI_COLOR_W_ALIGN, NULL },
        { s->xs, wd, (int)n, CHART_SOLID, UI_COLOR_W_DIFF, "w_diff" },
        { s->xs, wa, (int)n, CHART_SOLID, UI_COLOR_W_ALIGN, "w_align" },
    };
    chart_band bands[MAX_BANDS];
    chart_spec spec = base_spec(view, "curriculum (dotted: ahead)");
    spec.series = ser, spec.n_series = 4;
    spec.y_fixed = 1, spec.y_min = 0, spec.y_max = isfinite(vmax) ? vmax : 1;
    spec.bands = bands, spec.n_bands = phase_bands(snap, bands);
    spec.show_now = 1, spec.now_x = snap->status.step;
    double now = snap->status.step, x0, x1;
    step_window(snap, view, &x0, &x1);
    double end = fmax(fmax(snap->status.total_steps, m ? xs_ahead[m - 1] : 0), x1);
    spec.x0 = view->zoom_steps > 0 ? now - view->zoom_steps : fmin(x0, snap->sched_first);
    spec.x1 = view->zoom_steps > 0 ? now + view->zoom_steps : end;
    render_chart(s, w, &spec);
}

/* --- phase summary ---------------------------------------------------------------------- */

typedef struct phase_stats {
    int steps, n_loss, n_sim[REED_MAX_SOURCES];
    double sum_loss, sum_sim[REED_MAX_SOURCES];
    float last_loss, last_sim[REED_MAX_SOURCES];
} phase_stats;

static void phase_stats_compute(const ui_snapshot *snap, int ns, phase_stats *ps) {
    memset(ps, 0, MAX_PHASES * sizeof *ps);
    for (int p = 0; p < MAX_PHASES; p++) {
        ps[p].last_loss = NAN;
        for (int k = 0; k < REED_MAX_SOURCES; k++) ps[p].last_sim[k] = NAN;
    }
    for (size_t i = 0; i < snap->n_history; i++) {
        const live_point *pt = &snap->history[i];
        phase_stats *p = &ps[phase_of(pt)];
        p->steps++;
        if (isfinite(pt->loss)) p->sum_loss += pt->loss, p->n_loss++;
        p->last_loss = pt->loss;
        for (int k = 0; k < ns; k++) {
            if (isfinite(pt->sim[k])) p->sum_sim[k] += pt->sim[k], p->n_sim[k]++;
            p->last_sim[k] = pt->sim[k];
        }
    }
}

enum { COL_NUM = 6 };   /* 5 characters and a space */

/* Columns after name and steps: loss mean/last, then sim mean/last per source. */
static int summary_columns(int width, int name_w, int ns) {
    int avail = width - name_w - COL_NUM, cols = avail / COL_NUM;
    int max_cols = 2 + 2 * ns;
    return cols < 0 ? 0 : cols > max_cols ? max_cols : cols;
}

static void summary_header(ui_screen *s, WINDOW *w, int y, int name_w, int ncol,
                           const live_status *st) {
    char buf[32];
    put_text(s, w, y, 0, UI_COLOR_TABLE_HEADER, "phase");
    put_text(s, w, y, name_w, UI_COLOR_TABLE_HEADER, "steps");
    for (int c = 0; c < ncol; c++) {
        if (c == 0) snprintf(buf, sizeof buf, "loss");
        else if (c % 2 == 1) snprintf(buf, sizeof buf, "last");
        else snprintf(buf, sizeof buf, "%.5s", st->source_names[c / 2 - 1]);
        put_text(s, w, y, name_w + COL_NUM * (c + 1), UI_COLOR_TABLE_HEADER, buf);
    }
}

static void summary_row(ui_screen *s, WINDOW *w, int y, int name_w, int ncol,
                        const char *name, const phase_stats *p, int current) {
    char buf[32];
    snprintf(buf, sizeof buf, "%s%.*s", current ? ">" : " ", name_w - 2, name);
    put_text(s, w, y, 0, current ? UI_COLOR_TITLE : UI_COLOR_DEFAULT, buf);
    if (p->steps > 99999) snprintf(buf, sizeof buf, "%4dk", p->steps / 1000);
    else snprintf(buf, sizeof buf, "%5d", p->steps);
    put_text(s, w, y, name_w, UI_COLOR_DEFAULT, p->steps ? buf : "    -");
    for (int c = 0; c < ncol; c++) {
        int k = c / 2 - 1, mean = c % 2 == 0;
        double v = c < 2 ? (mean ? (p->n_loss ? p->sum_loss / p->n_loss : NAN) : p->last_loss)
                         : (mean ? (p->n_sim[k] ? p->sum_sim[k] / p->n_sim[k] : NAN)
                                 : p->last_sim[k]);
        if (p->steps == 0) snprintf(buf, sizeof buf, "    -");
        else fmt_fit(buf, COL_NUM - 1, v);
        put_text(s, w, y, name_w + COL_NUM * (c + 1), c < 2 ? UI_COLOR_LOSS :
                 (ui_color)(UI_COLOR_SOURCE0 + k % (UI_COLOR_SOURCE_LAST - UI_COLOR_SOURCE0 + 1)), buf);
    }
}

static void draw_summary(ui_screen *s, WINDOW *w, const ui_snapshot *snap) {
    const live_status *st = &snap->status;
    int ns = st->n_sources < REED_MAX_SOURCES ? st->n_sources : REED_MAX_SOURCES;
    int np = st->n_phases > 0 ? (st->n_phases < MAX_PHASES ? st->n_phases : MAX_PHASES) : 1;
    phase_stats ps[MAX_PHASES];
    phase_stats_compute(snap, ns, ps);
    for (int p = np; p < MAX_PHASES; p++) if (ps[p].steps) np = p + 1;   /* unnamed phases seen */
    int name_w = 3;
    for (int p = 0; p < np; p++) {
        int len = (int)strnlen(st->phase_names[p], sizeof st->phase_names[p]) + 2;
        name_w = len > name_w ? len : name_w;
    }
    name_w = name_w > 10 ? 10 : name_w < 7 ? 7 : name_w;
    int ncol = summary_columns(getmaxx(w), name_w, ns);
    put_text(s, w, 0, 0, UI_COLOR_TITLE, "per phase");
    summary_header(s, w, 1, name_w, ncol, st);
    for (int p = 0; p < np && p + 2 < getmaxy(w); p++)
        summary_row(s, w, p + 2, name_w, ncol, st->phase_names[p][0] ? st->phase_names[p] : "?",
                    &ps[p], p == st->phase);
}

/* --- preview ------------------------------------------------------------------------------ */

/* Half-blocks need a pair per (top, bottom) colour combination in view. */
static preview_mode preview_mode_of(const ui_screen *s, const ui_view *view) {
    if (view->glyphs == CHART_GLYPH_ASCII || s->colors != COLOR_MODE_256 || s->max_pairs < 1024)
        return PREVIEW_ASCII;
    return s->direct_rgb || s->palette_rgb ? PREVIEW_TRUECOLOR : PREVIEW_256;
}

/* A new grid gets fresh palette slots if the last one used them all. */
static void slots_for_preview(ui_screen *s, const live_preview *pv) {
    if (!s->rgb_slot || !pv || pv->version == s->slots_version) return;
    s->slots_version = pv->version;
    if (s->next_slot <= SLOT_LAST) return;
    for (int i = 0; i < RGB_KEYS; i++) s->rgb_slot[i] = -1;
    s->next_slot = SLOT_FIRST;
}

static void draw_preview(ui_screen *s, WINDOW *w, const ui_snapshot *snap,
                         const ui_view *view) {
    slots_for_preview(s, snap->preview);
    canvas_resize(&s->cv, getmaxx(w), getmaxy(w));
    preview_render(&s->cv, snap->preview, preview_mode_of(s, view), UI_COLOR_TITLE);
    draw_canvas(s, w, &s->cv);
}

/* --- log pane -------------------------------------------------------------------------------- */

/* Rows a line takes when wrapped to width (at least one). */
static int wrapped_rows(const char *line, int width) {
    int n = utf8_len(line);
    return n <= width ? 1 : (n + width - 1) / width;
}

/* Byte offset of the cell-th character. */
static size_t utf8_offset(const char *s, int cell) {
    const char *p = s;
    for (int i = 0; i < cell && *p; i++) {
        p++;
        while ((*p & 0xC0) == 0x80) p++;
    }
    return (size_t)(p - s);
}

static ui_color log_color(const char *line) {
    if (strncmp(line, "> ", 2) == 0 || strncmp(line, ">> ", 3) == 0) return UI_COLOR_LOG_INPUT;
    if (strncmp(line, "error", 5) == 0 || line[0] == '!' || strstr(line, "Error"))
        return UI_COLOR_LOG_ERROR;
    return UI_COLOR_LOG;
}

/* Draws rows [skip, skip+avail) of one wrapped line at *y, advancing *y. */
static void log_line(ui_screen *s, WINDOW *w, const char *line, int skip, int avail, int *y) {
    int width = getmaxx(w), rows = wrapped_rows(line, width);
    ui_color c = log_color(line);
    char buf[1024];
    for (int r = skip; r < rows && avail > 0; r++, avail--) {
        size_t a = utf8_offset(line, r * width), b = utf8_offset(line, (r + 1) * width);
        size_t len = b - a < sizeof buf - 1 ? b - a : sizeof buf - 1;
        memcpy(buf, line + a, len);
        buf[len] = 0;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)buf[i] < 0x20) buf[i] = ' ';
        put_text(s, w, (*y)++, 0, c, buf);
    }
}

static void log_header(ui_screen *s, WINDOW *w, const ui_view *view, int scrolled) {
    char buf[96];
    wattr_set(w, A_DIM, 0, &(int){ 0 });
    mvwhline(w, 0, 0, view->glyphs == CHART_GLYPH_ASCII ? '-' : ACS_HLINE, getmaxx(w));
    wattr_set(w, 0, 0, &(int){ 0 });
    snprintf(buf, sizeof buf, " log / lua ");
    put_text(s, w, 0, 2, view->focus == UI_FOCUS_REPL ? UI_COLOR_TITLE_FOCUS : UI_COLOR_TITLE, buf);
    if (scrolled > 0) {
        snprintf(buf, sizeof buf, " [scrolled %d] ", scrolled);
        put_text(s, w, 0, 14, UI_COLOR_STATUS_PAUSED, buf);
    }
}

static void draw_log(ui_screen *s, WINDOW *w, const ui_snapshot *snap, const ui_view *view) {
    int header = getmaxy(w) >= 4, rows = getmaxy(w) - header, width = getmaxx(w);
    /* walk back from the newest line until rows + scroll wrapped rows are covered */
    int want = rows + (view->log_scroll > 0 ? view->log_scroll : 0), have = 0;
    size_t first = snap->n_log;
    while (first > 0 && have < want) have += wrapped_rows(snap->log_lines[--first], width);
    int scrolled = view->log_scroll < have - rows ? view->log_scroll : have - rows;
    if (scrolled < 0) scrolled = 0;
    if (header) log_header(s, w, view, scrolled);
    int skip = have - rows - scrolled, y = header;      /* wrapped rows above the view */
    for (size_t i = first; i < snap->n_log && y < getmaxy(w); i++) {
        int r = wrapped_rows(snap->log_lines[i], width);
        if (skip >= r) {
            skip -= r;
            continue;
        }
        log_line(s, w, snap->log_lines[i], skip, getmaxy(w) - y, &y);
        skip = 0;
    }
}

/* --- help overlay ---------------------------------------------------------------------------- */

static const char *const help_keys[][2] = {
    { "space", "pause / resume" },       { "s", "sample now" },
    { "c", "checkpoint" },               { "l", "loss log scale" },
    { "+ -", "zoom the step axis" },     { "0", "all history" },
    { "Tab", "focus dashboard / REPL" }, { "?", "this help" },
    { "q", "quit (checkpoint first)" },
};

static const char *const help_lua[][2] = {
    { "pause()  resume()", "" },            { "step(n)", "n steps, then pause" },
    { "status()", "the run at a glance" },  { "quit()", "checkpoint and stop" },
    { "set{key=value, ...}", "config" },    { "curriculum(t|fn)", "weights ahead" },
    { "sample{...}", "n steps cfg seed" },  { "save([path])", "checkpoint" },
    { "metrics(name[,last])", "history" },  { "on_step(every, fn)", "callback" },
    { "help()", "this list" },
};

static void help_list(ui_screen *s, WINDOW *w, int y, int x, int key_w, const char *const (*rows)[2],
                      int n, int max_y) {
    for (int i = 0; i < n && y + i < max_y; i++) {
        put_text(s, w, y + i, x, UI_COLOR_HELP_KEY, rows[i][0]);
        put_text(s, w, y + i, x + key_w, UI_COLOR_HELP, rows[i][1]);
    }
}

static void draw_help(ui_screen *s, WINDOW *w, int ascii) {
    int h = getmaxy(w), wd = getmaxx(w), nk = sizeof help_keys / sizeof help_keys[0];
    int nl = sizeof help_lua / sizeof help_lua[0];
    for (int y = 0; y < h; y++) fill_row(s, w, y, UI_COLOR_HELP);
    if (h >= 3 && wd >= 3 && ascii) wborder(w, '|', '|', '-', '-', '+', '+', '+', '+');
    else if (h >= 3 && wd >= 3) box(w, 0, 0);
    put_text(s, w, 0, 2, UI_COLOR_HELP_KEY, " help: keys and Lua (? closes) ");
    int two_col = wd >= 72, y = 2, max_y = h - 1;
    put_text(s, w, 1, 2, UI_COLOR_TITLE, "keys");
    help_list(s, w, y, 2, 7, help_keys, nk, max_y);
    int lx = two_col ? 34 : 2, ly = two_col ? 1 : y + nk + 1;
    put_text(s, w, ly, lx, UI_COLOR_TITLE, "lua (REPL)");
    help_list(s, w, ly + 1, lx, 22, help_lua, nl, max_y);
}

/* --- frame ------------------------------------------------------------------------------------- */

static void panel_done(WINDOW *w) { wnoutrefresh(w); }

void ui_screen_draw(ui_screen *s, const ui_snapshot *snap, const ui_view *view) {
    if (s->bg) werase(s->bg), wnoutrefresh(s->bg);
    for (int p = 0; p < UI_PANEL_COUNT; p++) {
        WINDOW *w = s->win[p];
        if (!w || (p == UI_PANEL_HELP && !view->show_help)) continue;
        werase(w);
        switch ((ui_panel)p) {
        case UI_PANEL_STATUS: draw_status(s, w, &snap->status); break;
        case UI_PANEL_LOSS: draw_loss(s, w, snap, view); break;
        case UI_PANEL_ALIGN: draw_align(s, w, snap, view); break;
        case UI_PANEL_CURRICULUM: draw_curriculum(s, w, snap, view); break;
        case UI_PANEL_SUMMARY: draw_summary(s, w, snap); break;
        case UI_PANEL_PREVIEW: draw_preview(s, w, snap, view); break;
        case UI_PANEL_LOG: draw_log(s, w, snap, view); break;
        case UI_PANEL_HELP: draw_help(s, w, view->glyphs == CHART_GLYPH_ASCII); break;
        default: break;
        }
        panel_done(w);
    }
}
