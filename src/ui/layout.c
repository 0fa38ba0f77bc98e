/* Screen layout (see layout.h). Pure: no curses, no globals. */
#include "layout.h"

#include <string.h>

enum {
    FULL_ROWS = 24, FULL_COLS = 80,      /* every panel from here up */
    SUMMARY_MIN_COLS = 60,               /* right column with the summary only */
    SUMMARY_MIN_TOP = 10,
    CHARTS3_MIN_COLS = 30,               /* alignment + curriculum charts */
    CHARTS3_MIN_TOP = 9,
    LOG_MIN = 3, LOG_MAX = 20,
    HELP_MAX_W = 76, HELP_MAX_H = 15,
};

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static void set_rect(ui_layout *l, ui_panel p, int y, int x, int h, int w) {
    if (h <= 0 || w <= 0) return;
    l->r[p] = (ui_rect){ .y = y, .x = x, .h = h, .w = w, .visible = 1 };
}

/* Loss on top (half), alignment and curriculum below (a quarter each). */
static void layout_charts(ui_layout *l, int y, int h, int w, int three) {
    if (!three) {
        set_rect(l, UI_PANEL_LOSS, y, 0, h, w);
        return;
    }
    int loss_h = (h + 1) / 2;
    int align_h = (h - loss_h) / 2;
    set_rect(l, UI_PANEL_LOSS, y, 0, loss_h, w);
    set_rect(l, UI_PANEL_ALIGN, y + loss_h, 0, align_h, w);
    set_rect(l, UI_PANEL_CURRICULUM, y + loss_h + align_h, 0, h - loss_h - align_h, w);
}

/* The right column: preview over summary, or the summary alone. */
static void layout_right(ui_layout *l, int y, int x, int h, int w, int preview) {
    if (!preview) {
        set_rect(l, UI_PANEL_SUMMARY, y, x, h, w);
        return;
    }
    int summary_h = clampi(h * 2 / 5, 5, 14);
    set_rect(l, UI_PANEL_PREVIEW, y, x, h - summary_h, w);
    set_rect(l, UI_PANEL_SUMMARY, y + h - summary_h, x, summary_h, w);
}

/* Rows 1..rows-2: the dashboard above the log pane. */
static void layout_body(ui_layout *l, int rows, int cols) {
    int body_y = 1, body_h = rows - 2;
    int log_h = clampi((body_h + 2) / 4, LOG_MIN, LOG_MAX);
    int top_h = body_h - log_h;
    int three = top_h >= CHARTS3_MIN_TOP && cols >= CHARTS3_MIN_COLS;
    if (!three) {                       /* small: loss over log, log wins ties */
        log_h = body_h - body_h / 2;
        top_h = body_h - log_h;
    }
    int preview = rows >= FULL_ROWS && cols >= FULL_COLS;
    int right = preview || (three && top_h >= SUMMARY_MIN_TOP && cols >= SUMMARY_MIN_COLS);
    int right_w = 0;
    if (right)
        right_w = preview ? clampi(cols * 3 / 10, 26, 72) : clampi(cols * 3 / 10, 22, 48);
    int left_w = right ? cols - right_w - 1 : cols;   /* one blank column between */

    layout_charts(l, body_y, top_h, left_w, three);
    if (right) layout_right(l, body_y, left_w + 1, top_h, right_w, preview);
    set_rect(l, UI_PANEL_LOG, body_y + top_h, 0, log_h, cols);
}

static void layout_help(ui_layout *l, int rows, int cols) {
    int h = rows >= 3 ? rows - 2 : rows;
    if (h > HELP_MAX_H) h = HELP_MAX_H;
    int w = cols > 4 ? cols - 4 : cols;
    if (w > HELP_MAX_W) w = HELP_MAX_W;
    int top = rows >= 3 ? 1 : 0;
    set_rect(l, UI_PANEL_HELP, top + ((rows >= 3 ? rows - 2 : rows) - h) / 2, (cols - w) / 2, h, w);
}

void ui_layout_compute(ui_layout *out, int rows, int cols) {
    memset(out, 0, sizeof *out);
    out->rows = rows;
    out->cols = cols;
    if (rows <= 0 || cols <= 0) return;
    set_rect(out, UI_PANEL_INPUT, rows - 1, 0, 1, cols);     /* typing matters most */
    if (rows >= 2) set_rect(out, UI_PANEL_STATUS, 0, 0, 1, cols);
    if (rows >= 3) layout_body(out, rows, cols);
    layout_help(out, rows, cols);
}

const char *ui_panel_name(ui_panel p) {
    static const char *const names[UI_PANEL_COUNT] = {
        [UI_PANEL_STATUS] = "status",   [UI_PANEL_LOSS] = "loss",
        [UI_PANEL_ALIGN] = "alignment", [UI_PANEL_CURRICULUM] = "curriculum",
        [UI_PANEL_SUMMARY] = "summary", [UI_PANEL_PREVIEW] = "preview",
        [UI_PANEL_LOG] = "log",         [UI_PANEL_INPUT] = "input",
        [UI_PANEL_HELP] = "help",
    };
    return (unsigned)p < UI_PANEL_COUNT ? names[p] : "?";
}
