/* Terminal line charts rendered into a cell canvas, with no curses: the
 * widgets copy the canvas into a window, the tests inspect it directly.
 *
 * A chart is a title row, a y-axis label column, a plot area and (when tall
 * enough) an x-axis label row. Series are (x = step, y) pairs; y NaN/Inf is
 * a gap. Every point lands in a pixel column whose vertical span grows to
 * cover it (min/max decimation, so a one-step spike among a million steps
 * still reaches its pixel), and consecutive points are joined by a line, so
 * sparse series draw continuous lines too. Glyph modes (ux.md §3b):
 *
 *   braille   2×4 dots per cell, U+2800 + dot bits (needs a UTF-8 locale)
 *   block     1×2 per cell with ▀ ▄ █
 *   ascii     1×2 per cell with ' . | (and * where two series share a cell)
 *
 * Colours are opaque small indices chosen by the caller (the widgets pass
 * their semantic colour enum); 0 means the terminal default. */
#ifndef REED_UI_CHART_H
#define REED_UI_CHART_H

#include <stdint.h>

/* --- cell canvas -------------------------------------------------------------- */

enum {
    CANVAS_ATTR_DIM = 1 << 0,
    CANVAS_ATTR_BOLD = 1 << 1,
    CANVAS_ATTR_REVERSE = 1 << 2,
    CANVAS_ATTR_RGB = 1 << 3,   /* fg_rgb/bg_rgb hold 0xRRGGBB (preview, truecolor) */
    CANVAS_ATTR_X256 = 1 << 4,  /* fg/bg are xterm-256 colour numbers (preview) */
};

typedef struct canvas_cell {
    char glyph[5];              /* one UTF-8 character, NUL-terminated; "" = blank */
    uint8_t fg, bg;             /* colour indices (0 = default), see CANVAS_ATTR_X256 */
    uint8_t attr;               /* CANVAS_ATTR_* */
    uint32_t fg_rgb, bg_rgb;    /* with CANVAS_ATTR_RGB */
} canvas_cell;

typedef struct canvas {
    int w, h;
    canvas_cell *cells;         /* h rows of w cells, row-major; owned */
} canvas;

/* Allocates a blank w×h canvas (sizes < 1 give an empty one); 0 on success. */
int canvas_init(canvas *c, int w, int h);
void canvas_free(canvas *c);
/* Resizes (reallocating when it grows) and blanks. */
int canvas_resize(canvas *c, int w, int h);
void canvas_clear(canvas *c);
canvas_cell *canvas_at(canvas *c, int y, int x);   /* NULL outside */
/* Writes UTF-8 text from (y, x), one character per cell, clipped at the
 * right edge or after max_cells (< 0: no limit); control characters become
 * spaces. Returns the number of cells written. */
int canvas_puts(canvas *c, int y, int x, const char *s, int max_cells, uint8_t fg,
                uint8_t attr);
/* Sets a cell's glyph from a Unicode code point. */
void canvas_set_cp(canvas_cell *cell, uint32_t cp);
/* Number of UTF-8 characters in s (cells it takes). */
int utf8_len(const char *s);

/* --- charts -------------------------------------------------------------------- */

typedef enum { CHART_GLYPH_BRAILLE, CHART_GLYPH_BLOCK, CHART_GLYPH_ASCII } chart_glyphs;
typedef enum { CHART_SOLID, CHART_FAINT, CHART_DOTTED } chart_style;

typedef struct chart_series {
    const double *x;            /* n steps, ascending */
    const float *y;             /* n values; NaN/Inf = gap */
    int n;
    chart_style style;
    uint8_t color;
    const char *label;          /* shown in the title row's legend; NULL: not listed */
} chart_series;

typedef struct chart_band {     /* background span [x0, x1), e.g. a curriculum phase */
    double x0, x1;
    uint8_t color;              /* painted as the cells' background */
} chart_band;

typedef struct chart_spec {
    const char *title;          /* NULL: no title row */
    const char *note;           /* after the title in note_color (e.g. "NaN x3"), or NULL */
    uint8_t note_color;
    const chart_series *series;
    int n_series;               /* drawn in order: later series on top */
    double x0, x1;              /* x range; x1 <= x0 means auto from the data */
    int y_fixed;                /* 1: use [y_min, y_max]; 0: auto from visible data */
    float y_min, y_max;
    int log_y;                  /* true log10 scale; values <= 0 are clamped */
    const chart_band *bands;
    int n_bands;
    int band_edges;             /* mark band starts with a dotted vertical line */
    int show_now;               /* vertical 'now' marker at now_x */
    double now_x;
    uint8_t now_color, axis_color, title_color, edge_color;
    chart_glyphs glyphs;
} chart_spec;

/* Where things went, for the widgets and the tests. */
typedef struct chart_geom {
    int plot_y, plot_x, plot_h, plot_w;   /* plot area in cells */
    int sub_x, sub_y;                     /* pixels per cell */
    double x0, x1;                        /* x range used */
    double y0, y1;                        /* y range used (log10 units when log_y) */
    int clamped;                          /* values <= 0 clamped on a log scale */
} chart_geom;

/* Clears the canvas and draws the chart into it; fills *geom if not NULL. */
void chart_render(canvas *c, const chart_spec *spec, chart_geom *geom);

/* Debiased exponential moving average (TensorBoard / W&B "TWEMA"):
 * w = min(smoothing, 0.999); last = w·last + (1−w)·y; out = last / (1 − w^k)
 * after k finite values. Non-finite inputs are skipped (state unchanged) and
 * give NaN out, so the smoothed line has the same gaps. out may alias y. */
void ema_debiased(const float *y, int n, float smoothing, float *out);

/* %.3g into buf (at most cap-1 chars, at least "nan"/"inf" for those). */
void chart_fmt(char *buf, int cap, double v);

#endif
