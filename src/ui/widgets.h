/* The workbench dashboard drawn with ncurses: status line, loss, alignment
 * and curriculum charts, per-phase summary, sample preview, log pane and the
 * help overlay. The REPL input line (the layout's UI_PANEL_INPUT row) belongs
 * to the caller's readline window.
 *
 * Sampling is separate from drawing: the caller copies what it needs out of
 * the live state into a ui_snapshot (live_history_copy, live_status_get,
 * live_schedule_get_strided, live_preview_get, its own log ring), and
 * ui_screen_draw only reads it. One frame:
 *
 *     ui_screen_draw(s, &snap, &view);   // werase/draw/wnoutrefresh per panel
 *     ... draw the input line, wnoutrefresh ...
 *     doupdate();
 *
 * On SIGWINCH (a flag) call ui_screen_resize(s, LINES, COLS) after
 * resizeterm/endwin+refresh: windows are rebuilt from ui_layout_compute.
 * Nothing here blocks or reads input. Requires initscr() (and setlocale()
 * before it) by the caller. */
#ifndef REED_UI_WIDGETS_H
#define REED_UI_WIDGETS_H

#include <stddef.h>

#include "chart.h"
#include "layout.h"
#include "live.h"
#include "preview.h"

/* What to draw: read-only for the duration of ui_screen_draw. */
typedef struct ui_snapshot {
    live_status status;              /* incl. phase_names[], source_names[] */
    const live_point *history;       /* metric history, ascending steps */
    size_t n_history;
    int sched_first, sched_n;        /* schedule ahead: entry i is step first + i·stride */
    int sched_stride;                /* live_schedule_get_strided; <= 1: every step */
    const float *sched_w_diff, *sched_w_align;
    const live_preview *preview;     /* NULL or width 0: none yet */
    const char *const *log_lines;    /* oldest first; the last ones are shown */
    size_t n_log;
} ui_snapshot;

typedef enum { UI_FOCUS_DASHBOARD, UI_FOCUS_REPL } ui_focus;

/* How to draw it: owned by the caller's key handling. */
typedef struct ui_view {
    int log_scale;                   /* loss chart on a true log10 axis */
    int zoom_steps;                  /* x window of the last N steps; 0 = all history */
    int show_help;                   /* help overlay */
    ui_focus focus;
    int log_scroll;                  /* log pane: wrapped rows scrolled back from the end */
    chart_glyphs glyphs;             /* see ui_default_glyphs() */
    float smoothing;                 /* EMA weight for the charts; <= 0: 0.9 */
} ui_view;

/* Semantic colours (htop ColorElements): the scheme table maps each to a
 * foreground/background/attribute for 256, 8 and no-colour terminals. */
typedef enum {
    UI_COLOR_DEFAULT,
    UI_COLOR_STATUS,            /* status line background */
    UI_COLOR_STATUS_RUNNING,
    UI_COLOR_STATUS_PAUSED,
    UI_COLOR_STATUS_BUSY,       /* a REPL command is running */
    UI_COLOR_TITLE,
    UI_COLOR_TITLE_FOCUS,
    UI_COLOR_AXIS,
    UI_COLOR_LOSS,
    UI_COLOR_DENOISE,
    UI_COLOR_W_DIFF,
    UI_COLOR_W_ALIGN,
    UI_COLOR_NOW,
    UI_COLOR_EDGE,
    UI_COLOR_SOURCE0,           /* ... one per source, cycling */
    UI_COLOR_SOURCE_LAST = UI_COLOR_SOURCE0 + 5,
    UI_COLOR_BAND0,             /* phase background bands, cycling */
    UI_COLOR_BAND_LAST = UI_COLOR_BAND0 + 3,
    UI_COLOR_TABLE_HEADER,
    UI_COLOR_LOG,
    UI_COLOR_LOG_INPUT,         /* echoed REPL lines ("> ...") */
    UI_COLOR_LOG_ERROR,         /* lines starting with "error" / "!" */
    UI_COLOR_HELP,
    UI_COLOR_HELP_KEY,
    UI_COLOR_COUNT
} ui_color;

typedef struct ui_screen ui_screen;

/* Sets up colours and builds the windows for the current LINES×COLS.
 * NULL when out of memory. */
ui_screen *ui_screen_new(void);
void ui_screen_free(ui_screen *s);                   /* before endwin() */
/* Rebuilds the windows for a new terminal size. */
void ui_screen_resize(ui_screen *s, int rows, int cols);
const ui_layout *ui_screen_layout(const ui_screen *s);
/* Draws every visible panel and wnoutrefresh()es it; the caller doupdate()s. */
void ui_screen_draw(ui_screen *s, const ui_snapshot *snap, const ui_view *view);

/* Braille when the locale's codeset is UTF-8 (and TERM is not "linux"),
 * ASCII otherwise. */
chart_glyphs ui_default_glyphs(void);

/* "2h03m", "4m05s", "12s" (buf >= 16); "--" for unknown or negative. */
void ui_format_duration(char *buf, size_t cap, double seconds);

#endif
