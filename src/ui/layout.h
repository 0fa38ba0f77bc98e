/* The workbench screen layout: a pure function from the terminal size to one
 * rectangle per panel, so the UI can rebuild its windows on resize and the
 * tests can check every size without a terminal (nvtop's
 * compute_sizes_from_layout).
 *
 *   row 0          status line
 *   rows 1..       charts (loss, alignment, curriculum) on the left,
 *                  sample preview over the phase summary on the right
 *   below          log / REPL scrollback, full width
 *   last row       REPL input line (drawn by the caller's readline window)
 *
 * From 80×24 up every panel is shown and the charts take the extra room.
 * Smaller terminals drop the preview, then the summary, then the alignment
 * and curriculum charts; status, loss chart, log and input stay as long as
 * there are rows for them. Rectangles never overlap (except the help
 * overlay, which sits on top of the others) and never leave the screen. */
#ifndef REED_UI_LAYOUT_H
#define REED_UI_LAYOUT_H

typedef enum {
    UI_PANEL_STATUS,
    UI_PANEL_LOSS,
    UI_PANEL_ALIGN,
    UI_PANEL_CURRICULUM,
    UI_PANEL_SUMMARY,
    UI_PANEL_PREVIEW,
    UI_PANEL_LOG,
    UI_PANEL_INPUT,
    UI_PANEL_HELP,       /* centered overlay, drawn on top when asked for */
    UI_PANEL_COUNT
} ui_panel;

typedef struct ui_rect {
    int y, x, h, w;      /* top-left corner and size in cells; h, w >= 1 when visible */
    int visible;         /* 0: no room for this panel at this size (y, x, h, w all 0) */
} ui_rect;

typedef struct ui_layout {
    int rows, cols;
    ui_rect r[UI_PANEL_COUNT];
} ui_layout;

/* Fills out for a rows×cols terminal; any size is valid (<= 0 shows nothing). */
void ui_layout_compute(ui_layout *out, int rows, int cols);

/* "status", "loss", ... for messages and tests. */
const char *ui_panel_name(ui_panel p);

#endif
