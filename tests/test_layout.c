/* Tests for the screen layout (src/ui/layout.h) over many terminal sizes:
 * every size from 10×3 to 200×60, then coarser steps up to 300×100.
 *
 *  - visible rectangles have positive sizes and lie inside the screen;
 *  - invisible ones are all zeros;
 *  - no two visible panels overlap (the help overlay excepted), and the help
 *    overlay never covers the status line or the input line;
 *  - status (row 0) and REPL input (last row) are always visible from 3 rows;
 *  - the loss chart and the log pane survive at every size with >= 4 rows;
 *  - degradation order: preview goes first, then summary, then the
 *    alignment/curriculum charts (a panel never shows while one that should
 *    outlive it is hidden);
 *  - 80×24 shows every panel;
 *  - growing the terminal never shrinks the loss chart.
 *
 * Prints the first failures and a summary; exits 1 if any check failed. */
#include <stdio.h>

#include "layout.h"

static long checks, failures;

static void fail(int rows, int cols, const char *what, int p, int q) {
    failures++;
    if (failures <= 20)
        fprintf(stderr, "FAIL %d×%d (cols×rows): %s [%s%s%s]\n", cols, rows, what, ui_panel_name((ui_panel)p), q >= 0 ? " / " : "",
                q >= 0 ? ui_panel_name((ui_panel)q) : "");
}

static void check(int ok, int rows, int cols, const char *what, int p, int q) {
    checks++;
    if (!ok) fail(rows, cols, what, p, q);
}

static int overlap(const ui_rect *a, const ui_rect *b) {
    return a->x < b->x + b->w && b->x < a->x + a->w && a->y < b->y + b->h && b->y < a->y + a->h;
}

static void check_bounds(const ui_layout *l, int rows, int cols) {
    for (int p = 0; p < UI_PANEL_COUNT; p++) {
        const ui_rect *r = &l->r[p];
        if (!r->visible) {
            check(r->x == 0 && r->y == 0 && r->w == 0 && r->h == 0, rows, cols,
                  "invisible rect not zeroed", p, -1);
            continue;
        }
        check(r->w >= 1 && r->h >= 1, rows, cols, "non-positive size", p, -1);
        check(r->x >= 0 && r->y >= 0 && r->x + r->w <= cols && r->y + r->h <= rows, rows,
              cols, "off screen", p, -1);
    }
}

static void check_overlap(const ui_layout *l, int rows, int cols) {
    for (int p = 0; p < UI_PANEL_COUNT; p++) {
        if (!l->r[p].visible || p == UI_PANEL_HELP) continue;
        for (int q = p + 1; q < UI_PANEL_COUNT; q++) {
            if (!l->r[q].visible || q == UI_PANEL_HELP) continue;
            check(!overlap(&l->r[p], &l->r[q]), rows, cols, "overlap", p, q);
        }
    }
    const ui_rect *h = &l->r[UI_PANEL_HELP];
    if (h->visible && rows >= 3) {
        check(!overlap(h, &l->r[UI_PANEL_STATUS]), rows, cols, "help covers", UI_PANEL_HELP,
              UI_PANEL_STATUS);
        check(!overlap(h, &l->r[UI_PANEL_INPUT]), rows, cols, "help covers", UI_PANEL_HELP,
              UI_PANEL_INPUT);
    }
}

/* A panel p that is shown implies that every panel that outlives it is shown. */
static void check_order(const ui_layout *l, int rows, int cols) {
    static const int order[] = { UI_PANEL_PREVIEW, UI_PANEL_SUMMARY, UI_PANEL_ALIGN,
                                 UI_PANEL_LOSS };
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            if (l->r[order[i]].visible)
                check(l->r[order[j]].visible, rows, cols, "shown while a later panel is hidden",
                      order[i], order[j]);
    check(l->r[UI_PANEL_ALIGN].visible == l->r[UI_PANEL_CURRICULUM].visible, rows, cols,
          "alignment and curriculum charts go together", UI_PANEL_ALIGN, UI_PANEL_CURRICULUM);
}

static void check_always(const ui_layout *l, int rows, int cols) {
    const ui_rect *s = &l->r[UI_PANEL_STATUS], *in = &l->r[UI_PANEL_INPUT];
    if (rows >= 3) {
        check(s->visible && s->y == 0 && s->h == 1 && s->w == cols, rows, cols,
              "status line on row 0", UI_PANEL_STATUS, -1);
        check(in->visible && in->y == rows - 1 && in->h == 1 && in->w == cols, rows, cols,
              "input on the bottom row", UI_PANEL_INPUT, -1);
        check(l->r[UI_PANEL_LOG].visible, rows, cols, "log pane", UI_PANEL_LOG, -1);
    }
    if (rows >= 4)
        check(l->r[UI_PANEL_LOSS].visible, rows, cols, "loss chart", UI_PANEL_LOSS, -1);
    if (rows >= 24 && cols >= 80)
        for (int p = 0; p < UI_PANEL_COUNT; p++)
            check(l->r[p].visible, rows, cols, "every panel from 80x24", p, -1);
}

static void check_size(int rows, int cols) {
    ui_layout l;
    ui_layout_compute(&l, rows, cols);
    check(l.rows == rows && l.cols == cols, rows, cols, "size recorded", 0, -1);
    check_bounds(&l, rows, cols);
    check_overlap(&l, rows, cols);
    check_order(&l, rows, cols);
    check_always(&l, rows, cols);
}

/* More rows never make the loss chart shorter; more columns never narrower. */
static void check_monotone(void) {
    for (int cols = 80; cols <= 300; cols += 7)
        for (int rows = 24; rows < 100; rows++) {
            ui_layout a, b;
            ui_layout_compute(&a, rows, cols);
            ui_layout_compute(&b, rows + 1, cols);
            check(b.r[UI_PANEL_LOSS].h >= a.r[UI_PANEL_LOSS].h, rows, cols,
                  "loss chart shrinks as rows grow", UI_PANEL_LOSS, -1);
            ui_layout_compute(&b, rows, cols + 1);
            check(b.r[UI_PANEL_LOSS].w >= a.r[UI_PANEL_LOSS].w, rows, cols,
                  "loss chart narrows as cols grow", UI_PANEL_LOSS, -1);
        }
}

static void print_layout(int rows, int cols) {
    ui_layout l;
    ui_layout_compute(&l, rows, cols);
    printf("%d×%d:", cols, rows);
    for (int p = 0; p < UI_PANEL_COUNT; p++)
        if (l.r[p].visible)
            printf(" %s=%d,%d %dx%d", ui_panel_name((ui_panel)p), l.r[p].y, l.r[p].x, l.r[p].w,
                   l.r[p].h);
    printf("\n");
}

int main(void) {
    for (int rows = 3; rows <= 60; rows++)
        for (int cols = 10; cols <= 200; cols++) check_size(rows, cols);
    for (int rows = 3; rows <= 100; rows += (rows < 60 ? 1 : 3))
        for (int cols = 200; cols <= 300; cols += 5) check_size(rows, cols);
    for (int rows = 60; rows <= 100; rows += 2)
        for (int cols = 10; cols <= 200; cols += 3) check_size(rows, cols);
    for (int rows = -1; rows < 3; rows++)          /* degenerate sizes stay valid */
        for (int cols = -1; cols <= 20; cols++) check_size(rows, cols);
    check_size(5, 20);
    check_monotone();

    print_layout(24, 80);
    print_layout(50, 160);
    print_layout(20, 70);
    print_layout(14, 40);
    print_layout(5, 20);
    printf("%s: %ld checks, %ld failures\n", failures ? "FAIL" : "ok", checks, failures);
    return failures ? 1 : 0;
}
