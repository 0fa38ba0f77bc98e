/* Line charts into a cell canvas (see chart.h). Pure: no curses. */
#include "chart.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- canvas ------------------------------------------------------------------- */

static void cell_blank(canvas_cell *cell) {
    memset(cell, 0, sizeof *cell);
    cell->glyph[0] = ' ';
}

int canvas_init(canvas *c, int w, int h) {
    c->w = c->h = 0;
    c->cells = NULL;
    return canvas_resize(c, w, h);
}

void canvas_free(canvas *c) {
    free(c->cells);
    c->cells = NULL;
    c->w = c->h = 0;
}

int canvas_resize(canvas *c, int w, int h) {
    if (w < 1 || h < 1) w = h = 0;
    size_t need = (size_t)w * (size_t)h, have = (size_t)c->w * (size_t)c->h;
    if (need > have || !c->cells) {
        canvas_cell *cells = realloc(c->cells, (need ? need : 1) * sizeof *cells);
        if (!cells) return -1;
        c->cells = cells;
    }
    c->w = w;
    c->h = h;
    canvas_clear(c);
    return 0;
}

void canvas_clear(canvas *c) {
    for (int i = 0; i < c->w * c->h; i++) cell_blank(&c->cells[i]);
}

canvas_cell *canvas_at(canvas *c, int y, int x) {
    if (y < 0 || x < 0 || y >= c->h || x >= c->w) return NULL;
    return &c->cells[(size_t)y * (size_t)c->w + (size_t)x];
}

void canvas_set_cp(canvas_cell *cell, uint32_t cp) {
    char *g = cell->glyph;
    if (cp < 0x80) {
        g[0] = (char)cp, g[1] = 0;
    } else if (cp < 0x800) {
        g[0] = (char)(0xC0 | cp >> 6), g[1] = (char)(0x80 | (cp & 0x3F)), g[2] = 0;
    } else if (cp < 0x10000) {
        g[0] = (char)(0xE0 | cp >> 12), g[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        g[2] = (char)(0x80 | (cp & 0x3F)), g[3] = 0;
    } else {
        g[0] = (char)(0xF0 | cp >> 18), g[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        g[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), g[3] = (char)(0x80 | (cp & 0x3F)), g[4] = 0;
    }
}

/* Length in bytes of the UTF-8 sequence starting with byte b (1 for junk). */
static int utf8_seq_len(unsigned char b) {
    if (b >= 0xF0 && b < 0xF8) return 4;
    if (b >= 0xE0) return b < 0xF0 ? 3 : 1;
    if (b >= 0xC0) return 2;
    return 1;
}

int utf8_len(const char *s) {
    int n = 0;
    while (*s) {
        int k = utf8_seq_len((unsigned char)*s);
        for (int i = 0; i < k && *s; i++) s++;
        n++;
    }
    return n;
}

int canvas_puts(canvas *c, int y, int x, const char *s, int max_cells, uint8_t fg,
                uint8_t attr) {
    int n = 0;
    while (s && *s && (max_cells < 0 || n < max_cells)) {
        int k = utf8_seq_len((unsigned char)*s);
        canvas_cell *cell = canvas_at(c, y, x + n);
        if (!cell) break;
        memset(cell->glyph, 0, sizeof cell->glyph);
        for (int i = 0; i < k && s[i]; i++) cell->glyph[i] = s[i];
        if ((unsigned char)cell->glyph[0] < 0x20 || cell->glyph[0] == 0x7F)
            cell->glyph[0] = ' ', cell->glyph[1] = 0;
        cell->fg = fg;
        cell->attr = attr;
        for (int i = 0; i < k && *s; i++) s++;
        n++;
    }
    return n;
}

/* --- formatting / smoothing ------------------------------------------------------ */

void chart_fmt(char *buf, int cap, double v) {
    if (cap <= 0) return;
    if (v == 0) v = 0;   /* no "-0" */
    snprintf(buf, (size_t)cap, "%.3g", v);
}

void ema_debiased(const float *y, int n, float smoothing, float *out) {
    double w = smoothing < 0 ? 0 : smoothing > 0.999f ? 0.999 : smoothing;
    double last = 0, debias = 0;
    for (int i = 0; i < n; i++) {
        float v = y[i];
        if (!isfinite(v)) {
            out[i] = NAN;
            continue;
        }
        last = last * w + (1 - w) * v;
        debias = debias * w + (1 - w);      /* = 1 − w^k */
        out[i] = (float)(last / debias);
    }
}

/* --- chart geometry and scaling ----------------------------------------------------- */

typedef struct scale {
    double x0, x1, y0, y1;
    int log_y;
    int px_w, px_h;      /* plot size in pixels */
    double kx;           /* pixel columns per x unit */
} scale;

static double y_transform(const scale *s, float v) {
    if (!s->log_y) return v;
    return v > 0 ? log10(v) : s->y0;   /* clamped to the bottom */
}

/* Auto x range: first and last finite x over all series. */
static void x_range(const chart_spec *spec, double *x0, double *x1) {
    *x0 = spec->x0, *x1 = spec->x1;
    if (spec->x1 > spec->x0) return;
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < spec->n_series; k++) {
        const chart_series *s = &spec->series[k];
        if (s->n <= 0) continue;
        if (s->x[0] < lo) lo = s->x[0];
        if (s->x[s->n - 1] > hi) hi = s->x[s->n - 1];
    }
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi <= lo) hi = lo + 1;     /* one point */
    *x0 = lo, *x1 = hi;
}

/* First index with x >= x (series x ascending). */
static int lower_bound(const chart_series *s, double x) {
    int lo = 0, hi = s->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (s->x[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Min/max of finite values with x inside the range (log10 of the positive
 * ones on a log scale; log is monotonic, so it is applied to the result);
 * counts log-clamped values. */
static int y_extent(const chart_spec *spec, double x0, double x1, double *lo, double *hi,
                    int *clamped) {
    float mn = INFINITY, mx = -INFINITY;
    *clamped = 0;
    for (int k = 0; k < spec->n_series; k++) {
        const chart_series *s = &spec->series[k];
        for (int i = lower_bound(s, x0); i < s->n && s->x[i] <= x1; i++) {
            float v = s->y[i];
            if (!isfinite(v)) continue;
            if (spec->log_y && v <= 0) {
                (*clamped)++;
                continue;
            }
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
    }
    if (!(mn <= mx)) return 0;
    *lo = spec->log_y ? log10(mn) : mn;
    *hi = spec->log_y ? log10(mx) : mx;
    return 1;
}

/* y range: fixed or auto, never empty (a flat series gets padding). */
static void y_range(const chart_spec *spec, double x0, double x1, double *y0, double *y1,
                    int *clamped) {
    double lo = 0, hi = 1;
    int found = y_extent(spec, x0, x1, &lo, &hi, clamped);
    if (spec->y_fixed) {
        int ok_lo = !spec->log_y || spec->y_min > 0, ok_hi = !spec->log_y || spec->y_max > 0;
        if (ok_lo) lo = spec->log_y ? log10(spec->y_min) : spec->y_min;
        if (ok_hi) hi = spec->log_y ? log10(spec->y_max) : spec->y_max;
        found = found || (ok_lo && ok_hi);
    }
    if (!found) lo = 0, hi = 1;
    if (!(hi > lo)) {                  /* flat: pad around the value */
        double pad = spec->log_y ? 0.5 : (fabs(lo) > 1e-12 ? fabs(lo) * 0.05 : 1.0);
        lo -= pad, hi += pad;
    }
    *y0 = lo, *y1 = hi;
}

/* Label text for the y value at transformed coordinate t. */
static void y_label(char *buf, int cap, const scale *s, double t) {
    chart_fmt(buf, cap, s->log_y ? pow(10, t) : t);
}

/* y-axis labels: the top and bottom rows (exact ends of the range) and,
 * when tall enough, the middle row (the value at its centre). */
typedef struct y_labels {
    int n, row[3];
    char text[3][32];
} y_labels;

static void make_y_labels(y_labels *l, const scale *s, int plot_h, int sub_y) {
    l->n = 0;
    int rows[3] = { 0, plot_h - 1, plot_h >= 5 ? plot_h / 2 : -1 };
    for (int i = 0; i < 3 && plot_h > 0; i++) {
        if (rows[i] < 0 || (i == 1 && rows[1] == 0)) continue;
        double top_px = rows[i] * sub_y + (sub_y - 1) / 2.0;
        double frac = i == 0 ? 1 : i == 1 ? 0 : 1 - top_px / (plot_h * sub_y - 1);
        l->row[l->n] = rows[i];
        y_label(l->text[l->n], sizeof l->text[0], s, s->y0 + frac * (s->y1 - s->y0));
        l->n++;
    }
}

/* Decides rows/columns for title, labels and plot. */
static void layout_chart(const canvas *c, const chart_spec *spec, scale *s, chart_geom *g,
                         y_labels *labels) {
    int title = spec->title && c->h >= 2;
    int plot_h = c->h - title;
    int x_axis = plot_h >= 6;
    plot_h -= x_axis;
    if (plot_h < 0) plot_h = 0;
    g->sub_x = spec->glyphs == CHART_GLYPH_BRAILLE ? 2 : 1;
    g->sub_y = spec->glyphs == CHART_GLYPH_BRAILLE ? 4 : 2;
    make_y_labels(labels, s, plot_h, g->sub_y);
    int label_w = 0;
    for (int i = 0; i < labels->n; i++)
        if ((int)strlen(labels->text[i]) + 1 > label_w) label_w = (int)strlen(labels->text[i]) + 1;
    if (label_w > c->w / 3) label_w = 0;    /* narrow: the plot matters more */
    g->plot_y = title;
    g->plot_x = label_w;
    g->plot_h = plot_h;
    g->plot_w = c->w - label_w > 0 ? c->w - label_w : 0;
    s->px_w = g->plot_w * g->sub_x;
    s->px_h = g->plot_h * g->sub_y;
    s->kx = s->px_w / (s->x1 - s->x0);
}

/* --- rasterising -------------------------------------------------------------------- */

typedef struct raster {
    int cw, ch;              /* plot size in cells */
    int sub_x, sub_y;
    uint8_t *mask;           /* this series' dot bits per cell */
    int dotted;
} raster;

static const uint8_t braille_bit[4][2] = {   /* [row][col], ISO/TR 11548-1 */
    { 0x01, 0x08 }, { 0x02, 0x10 }, { 0x04, 0x20 }, { 0x40, 0x80 },
};

/* Pixel (px, py) with py counted from the bottom. */
static void raster_set(raster *r, int px, int py) {
    int top = r->ch * r->sub_y - 1 - py;
    if (px < 0 || top < 0 || px >= r->cw * r->sub_x || top >= r->ch * r->sub_y) return;
    int cx = px / r->sub_x, cy = top / r->sub_y, dx = px % r->sub_x, dy = top % r->sub_y;
    uint8_t bit = r->sub_x == 2 ? braille_bit[dy][dx] : (uint8_t)(dy == 0 ? 1 : 2);
    r->mask[cy * r->cw + cx] |= bit;
}

/* Fills pixel column px from fy_a to fy_b (pixel units from the bottom). */
static void raster_span(raster *r, int px, double fy_a, double fy_b) {
    if (px < 0 || px >= r->cw * r->sub_x) return;
    if (r->dotted && px % (2 * r->sub_x) >= r->sub_x) return;
    int max_py = r->ch * r->sub_y - 1;
    double lo = fy_a < fy_b ? fy_a : fy_b, hi = fy_a < fy_b ? fy_b : fy_a;
    int a = (int)lround(lo < 0 ? 0 : lo > max_py ? max_py : lo);
    int b = (int)lround(hi < 0 ? 0 : hi > max_py ? max_py : hi);
    for (int py = a; py <= b; py++) raster_set(r, px, py);
}

/* Joins two points (column, pixel y); columns may lie outside the plot. */
static void raster_segment(raster *r, int c0, double y0, int c1, double y1) {
    if (c0 == c1) {
        raster_span(r, c0, y0, y1);
        return;
    }
    if (c1 < c0) {
        int tc = c0; c0 = c1; c1 = tc;
        double ty = y0; y0 = y1; y1 = ty;
    }
    int last = r->cw * r->sub_x - 1;
    int from = c0 < 0 ? 0 : c0, to = c1 > last ? last : c1;
    double slope = (y1 - y0) / (c1 - c0);
    for (int c = from; c <= to; c++) {
        double a = c - 0.5 < c0 ? c0 : c - 0.5, b = c + 0.5 > c1 ? c1 : c + 0.5;
        raster_span(r, c, y0 + slope * (a - c0), y0 + slope * (b - c0));
    }
}

/* Pixel column of x: -1 left of the range, px_w right of it. */
static int px_column(const scale *s, double x) {
    double u = (x - s->x0) * s->kx;
    if (!(u >= 0)) return -1;                     /* also NaN */
    if (u >= s->px_w) return x == s->x1 ? s->px_w - 1 : s->px_w;  /* x1 is in the last column */
    return (int)u;
}

static double px_row(const scale *s, float v) {
    return (y_transform(s, v) - s->y0) / (s->y1 - s->y0) * (s->px_h - 1);
}

/* Min/max decimation: the points of one pixel column, in order. */
typedef struct column_acc {
    int c, active;
    float lo, hi, last;
} column_acc;

static void column_flush(raster *r, const scale *s, const column_acc *a) {
    if (a->active) raster_span(r, a->c, px_row(s, a->lo), px_row(s, a->hi));
}

/* Each pixel column spans the min..max of its points (so no spike is lost),
 * and the last point of a column is joined to the first of the next, so
 * sparse series draw continuous lines. A non-finite y breaks the line. Only
 * points in the visible range (and one either side) are visited. */
static void raster_series(raster *r, const scale *s, const chart_series *ser) {
    column_acc a = { 0 };
    int start = lower_bound(ser, s->x0), end = lower_bound(ser, s->x1);
    start = start > 0 ? start - 1 : 0;
    end = end < ser->n ? end + 1 : ser->n;
    for (int i = start; i < end; i++) {
        float v = ser->y[i];
        if (!isfinite(v)) {
            column_flush(r, s, &a);
            a.active = 0;                               /* a gap */
            continue;
        }
        int c = px_column(s, ser->x[i]);
        if (a.active && c == a.c) {
            a.lo = v < a.lo ? v : a.lo;
            a.hi = v > a.hi ? v : a.hi;
            a.last = v;
            continue;
        }
        column_flush(r, s, &a);
        if (a.active) raster_segment(r, a.c, px_row(s, a.last), c, px_row(s, v));
        a = (column_acc){ .c = c, .active = 1, .lo = v, .hi = v, .last = v };
    }
    column_flush(r, s, &a);
}

/* --- cells ---------------------------------------------------------------------- */

typedef struct plot_cells {
    uint8_t *bits, *hits;   /* union of dot bits, number of series per cell */
} plot_cells;

static void merge_series(canvas *c, const chart_geom *g, const raster *r, plot_cells *pc,
                         const chart_series *ser) {
    for (int cy = 0; cy < r->ch; cy++)
        for (int cx = 0; cx < r->cw; cx++) {
            uint8_t m = r->mask[cy * r->cw + cx];
            if (!m) continue;
            pc->bits[cy * r->cw + cx] |= m;
            if (ser->style != CHART_FAINT) pc->hits[cy * r->cw + cx]++;   /* crossings of main lines */
            canvas_cell *cell = canvas_at(c, g->plot_y + cy, g->plot_x + cx);
            cell->fg = ser->color;
            cell->attr = ser->style == CHART_FAINT ? CANVAS_ATTR_DIM : 0;
        }
}

static void glyph_from_bits(canvas_cell *cell, chart_glyphs mode, uint8_t bits, int hits) {
    static const uint32_t blocks[4] = { ' ', 0x2580, 0x2584, 0x2588 };   /* ▀ ▄ █ */
    static const char ascii[4] = { ' ', '\'', '.', '|' };
    if (mode == CHART_GLYPH_BRAILLE) canvas_set_cp(cell, 0x2800u + bits);
    else if (mode == CHART_GLYPH_BLOCK) canvas_set_cp(cell, blocks[bits & 3]);
    else canvas_set_cp(cell, hits > 1 ? '*' : (uint32_t)ascii[bits & 3]);
}

/* Plot cell column containing x, or -1 outside the range. */
static int cell_column(const chart_geom *g, double x) {
    if (x < g->x0 || x > g->x1 || g->plot_w <= 0) return -1;
    int cx = (int)floor((x - g->x0) / (g->x1 - g->x0) * g->plot_w);
    return cx >= g->plot_w ? g->plot_w - 1 : cx;
}

static void paint_bands(canvas *c, const chart_spec *spec, const chart_geom *g) {
    for (int cx = 0; cx < g->plot_w; cx++) {
        double xc = g->x0 + (cx + 0.5) * (g->x1 - g->x0) / g->plot_w;
        for (int b = 0; b < spec->n_bands; b++) {
            if (xc < spec->bands[b].x0 || xc >= spec->bands[b].x1) continue;
            for (int cy = 0; cy < g->plot_h; cy++)
                canvas_at(c, g->plot_y + cy, g->plot_x + cx)->bg = spec->bands[b].color;
        }
    }
}

/* A vertical marker through the empty cells of one plot column. */
static void marker_column(canvas *c, const chart_geom *g, const plot_cells *pc, int cx,
                          uint32_t cp, uint8_t color) {
    if (cx < 0) return;
    for (int cy = 0; cy < g->plot_h; cy++) {
        if (pc->bits[cy * g->plot_w + cx]) continue;
        canvas_cell *cell = canvas_at(c, g->plot_y + cy, g->plot_x + cx);
        canvas_set_cp(cell, cp);
        cell->fg = color;
        cell->attr = 0;
    }
}

static void finish_cells(canvas *c, const chart_spec *spec, const chart_geom *g,
                         const plot_cells *pc) {
    for (int cy = 0; cy < g->plot_h; cy++)
        for (int cx = 0; cx < g->plot_w; cx++) {
            uint8_t bits = pc->bits[cy * g->plot_w + cx];
            if (bits)
                glyph_from_bits(canvas_at(c, g->plot_y + cy, g->plot_x + cx), spec->glyphs,
                                bits, pc->hits[cy * g->plot_w + cx]);
        }
    int ascii = spec->glyphs == CHART_GLYPH_ASCII;
    for (int b = 0; spec->band_edges && b < spec->n_bands; b++)
        if (spec->bands[b].x0 > g->x0)
            marker_column(c, g, pc, cell_column(g, spec->bands[b].x0), ascii ? ':' : 0x250A,
                          spec->edge_color);                                      /* ┊ */
    if (spec->show_now)
        marker_column(c, g, pc, cell_column(g, spec->now_x), ascii ? '|' : 0x2502,
                      spec->now_color);                                           /* │ */
}

/* --- labels --------------------------------------------------------------------- */

static void draw_title(canvas *c, const chart_spec *spec, const chart_geom *g) {
    if (g->plot_y == 0) return;
    int x = canvas_puts(c, 0, 0, spec->title, -1, spec->title_color, CANVAS_ATTR_BOLD);
    x += canvas_puts(c, 0, x, spec->note, -1, spec->note_color, CANVAS_ATTR_BOLD);
    char note[48] = "";
    if (spec->log_y && g->clamped)
        snprintf(note, sizeof note, " [log10, %d <=0 clamped]", g->clamped);
    else if (spec->log_y)
        snprintf(note, sizeof note, " [log10]");
    x += canvas_puts(c, 0, x, note, -1, spec->axis_color, 0);
    for (int k = 0; k < spec->n_series; k++) {
        const chart_series *s = &spec->series[k];
        if (!s->label) continue;
        x += canvas_puts(c, 0, x, "  ", -1, 0, 0);
        x += canvas_puts(c, 0, x, s->label, -1, s->color, 0);
    }
}

static void draw_y_labels(canvas *c, const chart_spec *spec, const chart_geom *g,
                          const y_labels *l) {
    if (g->plot_x == 0) return;
    for (int i = 0; i < l->n; i++) {
        int len = (int)strlen(l->text[i]);
        canvas_puts(c, g->plot_y + l->row[i], g->plot_x - 1 - len, l->text[i], -1,
                    spec->axis_color, 0);
    }
}

static void draw_x_labels(canvas *c, const chart_spec *spec, const chart_geom *g) {
    int row = g->plot_y + g->plot_h;
    if (row >= c->h || g->plot_w < 8) return;
    char a[32], b[32];
    snprintf(a, sizeof a, "%.0f", g->x0);
    snprintf(b, sizeof b, "%.0f", g->x1);
    canvas_puts(c, row, g->plot_x, a, -1, spec->axis_color, 0);
    int bx = g->plot_x + g->plot_w - (int)strlen(b);
    if (bx > g->plot_x + (int)strlen(a)) canvas_puts(c, row, bx, b, -1, spec->axis_color, 0);
}

/* --- entry point ------------------------------------------------------------------ */

void chart_render(canvas *c, const chart_spec *spec, chart_geom *geom) {
    chart_geom g = { 0 };
    scale s = { .log_y = spec->log_y };
    canvas_clear(c);
    x_range(spec, &s.x0, &s.x1);
    y_range(spec, s.x0, s.x1, &s.y0, &s.y1, &g.clamped);
    y_labels labels;
    layout_chart(c, spec, &s, &g, &labels);
    g.x0 = s.x0, g.x1 = s.x1, g.y0 = s.y0, g.y1 = s.y1;
    if (geom) *geom = g;
    draw_title(c, spec, &g);
    if (g.plot_w <= 0 || g.plot_h <= 0) return;

    size_t ncell = (size_t)g.plot_w * (size_t)g.plot_h;
    uint8_t *buf = calloc(3 * ncell, 1);
    if (!buf) return;
    plot_cells pc = { .bits = buf, .hits = buf + ncell };
    raster r = { .cw = g.plot_w, .ch = g.plot_h, .sub_x = g.sub_x, .sub_y = g.sub_y,
                 .mask = buf + 2 * ncell };
    paint_bands(c, spec, &g);
    for (int k = 0; k < spec->n_series; k++) {
        memset(r.mask, 0, ncell);
        r.dotted = spec->series[k].style == CHART_DOTTED;
        raster_series(&r, &s, &spec->series[k]);
        merge_series(c, &g, &r, &pc, &spec->series[k]);
    }
    finish_cells(c, spec, &g, &pc);
    draw_y_labels(c, spec, &g, &labels);
    draw_x_labels(c, spec, &g);
    free(buf);
}
