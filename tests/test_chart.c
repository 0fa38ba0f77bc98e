/* Tests for the terminal charts and the sample preview (src/ui/chart.h,
 * src/ui/preview.h), on a cell canvas, without a terminal.
 *
 *  1. min/max decimation: a one-sample spike among 10,000 survives in 40
 *     columns (its column has dots on the top plot row);
 *  2. NaN is a gap: the column of a NaN sample stays empty;
 *  3. a flat series draws one horizontal line (no division by zero);
 *  4. log scale: 1, 10, 100, 1000 land on evenly spaced pixel rows, and a
 *     non-positive value is clamped and reported in the title;
 *  5. dotted style leaves empty cells along the line;
 *  6. bands colour exactly their columns; band edges and the 'now' marker;
 *  7. ema_debiased: first output = first input, constant in → constant out,
 *     NaN passes through, against a double reimplementation;
 *  8. preview: a 2×2 checkerboard gives the expected half-block colours in
 *     truecolor and 256 modes; ASCII modes (chart and preview) emit only
 *     ASCII; the image keeps its aspect ratio.
 *  9. every canvas size from 1×1 to 24×9 in every glyph/preview mode,
 *     with NaN, negative, huge and out-of-range data: one character per cell,
 *     nothing outside the canvas (run under ASan/UBSan in the sanitizer build).
 *
 * Prints one line per check; exits 1 if any check failed. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chart.h"
#include "preview.h"
#include "check.h"



/* --- canvas helpers -------------------------------------------------------------- */

/* Decodes a cell's glyph to a code point (0 for blank/space). */
static unsigned cell_cp(const canvas_cell *cell) {
    const unsigned char *g = (const unsigned char *)cell->glyph;
    if (g[0] < 0x80) return g[0] == ' ' ? 0 : g[0];
    if (g[0] >= 0xE0) return (g[0] & 0x0F) << 12 | (g[1] & 0x3F) << 6 | (g[2] & 0x3F);
    return (g[0] & 0x1F) << 6 | (g[1] & 0x3F);
}

/* Braille dot bits of a plot cell (0 if not a braille glyph). */
static unsigned braille_bits(canvas *c, const chart_geom *g, int cy, int cx) {
    unsigned cp = cell_cp(canvas_at(c, g->plot_y + cy, g->plot_x + cx));
    return cp >= 0x2800 && cp <= 0x28FF ? cp - 0x2800 : 0;
}

static int column_empty(canvas *c, const chart_geom *g, int cx) {
    for (int cy = 0; cy < g->plot_h; cy++)
        if (braille_bits(c, g, cy, cx)) return 0;
    return 1;
}

/* Pixel rows (from the top) lit in plot cell column cx; returns a bitmask. */
static unsigned long long lit_rows(canvas *c, const chart_geom *g, int cx) {
    static const unsigned dot_row[8] = { 0, 1, 2, 0, 1, 2, 3, 3 };   /* bit → row in cell */
    unsigned long long rows = 0;
    for (int cy = 0; cy < g->plot_h; cy++) {
        unsigned bits = braille_bits(c, g, cy, cx);
        for (int b = 0; b < 8; b++)
            if (bits >> b & 1) rows |= 1ull << (cy * 4 + dot_row[b]);
    }
    return rows;
}

static int all_ascii(const canvas *c) {
    for (int i = 0; i < c->w * c->h; i++)
        for (const char *p = c->cells[i].glyph; *p; p++)
            if ((unsigned char)*p >= 0x80) return 0;
    return 1;
}

static void dump(const canvas *c) {
    for (int y = 0; y < c->h; y++) {
        printf("     |");
        for (int x = 0; x < c->w; x++) printf("%s", c->cells[y * c->w + x].glyph);
        printf("|\n");
    }
}

/* --- chart tests ------------------------------------------------------------------ */

/* Renders into a canvas sized so the plot area is plot_w columns wide. */
static void render_width(canvas *c, const chart_spec *spec, int plot_w, int h, chart_geom *g) {
    canvas_resize(c, plot_w + 16, h);
    chart_render(c, spec, g);
    canvas_resize(c, plot_w + g->plot_x, h);
    chart_render(c, spec, g);
}

static chart_spec spec_of(const chart_series *s, int n) {
    return (chart_spec){ .title = "t", .series = s, .n_series = n,
                         .glyphs = CHART_GLYPH_BRAILLE };
}

static void test_spike(void) {
    enum { N = 10000, SPIKE = 5000 };
    double *x = malloc(N * sizeof *x);
    float *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) x[i] = i, y[i] = 1.0f + 0.01f * (float)sin(i * 0.1);
    y[SPIKE] = 100;
    chart_series s = { .x = x, .y = y, .n = N };
    chart_spec spec = spec_of(&s, 1);
    spec.title = NULL;
    canvas c;
    chart_geom g;
    canvas_init(&c, 1, 1);
    render_width(&c, &spec, 40, 5, &g);
    int cx = (int)floor((SPIKE - g.x0) / (g.x1 - g.x0) * g.plot_w);
    check(g.plot_w == 40, "spike: plot is %d columns wide (labels %d)", g.plot_w, g.plot_x);
    check(braille_bits(&c, &g, 0, cx) != 0, "spike: column %d has dots on the top row", cx);
    int others = 0;
    for (int i = 0; i < g.plot_w; i++) others += i != cx && braille_bits(&c, &g, 0, i);
    check(others == 0, "spike: only its column reaches the top row (%d others)", others);
    canvas_free(&c);
    free(x), free(y);
}

static void test_nan_gap(void) {
    double x[40];
    float y[40];
    for (int i = 0; i < 40; i++) x[i] = i, y[i] = (float)(i % 7);
    y[20] = NAN;
    chart_series s = { .x = x, .y = y, .n = 40 };
    chart_spec spec = spec_of(&s, 1);
    spec.x0 = 0, spec.x1 = 40;   /* cell column c covers x in [c, c+1) */
    canvas c;
    chart_geom g;
    canvas_init(&c, 1, 1);
    render_width(&c, &spec, 40, 6, &g);
    check(g.plot_w == 40, "nan: plot 40 wide (%d)", g.plot_w);
    check(column_empty(&c, &g, 20), "nan: column 20 is empty");
    check(!column_empty(&c, &g, 19) && !column_empty(&c, &g, 21),
          "nan: its neighbours are drawn");
    y[20] = INFINITY;
    chart_render(&c, &spec, &g);
    check(column_empty(&c, &g, 20) && isfinite(g.y1), "inf: a gap too, range finite (%g)",
          g.y1);
    canvas_free(&c);
}

static void test_flat(void) {
    double x[50];
    float y[50];
    for (int i = 0; i < 50; i++) x[i] = i, y[i] = 0.25f;
    chart_series s = { .x = x, .y = y, .n = 50 };
    chart_spec spec = spec_of(&s, 1);
    canvas c;
    chart_geom g;
    canvas_init(&c, 40, 6);
    chart_render(&c, &spec, &g);
    unsigned long long rows0 = lit_rows(&c, &g, 0);
    int same = rows0 != 0 && (rows0 & (rows0 - 1)) == 0;   /* exactly one pixel row */
    for (int cx = 1; cx < g.plot_w; cx++) same = same && lit_rows(&c, &g, cx) == rows0;
    check(same && isfinite(g.y0) && isfinite(g.y1) && g.y1 > g.y0,
          "flat: one horizontal line, range [%g, %g]", g.y0, g.y1);
    /* all-zero, single point and empty series are fine as well */
    y[0] = 0;
    s.n = 1;
    chart_render(&c, &spec, &g);
    check(isfinite(g.y0) && g.y1 > g.y0 && g.x1 > g.x0, "one point: ranges [%g,%g] [%g,%g]",
          g.x0, g.x1, g.y0, g.y1);
    s.n = 0;
    chart_render(&c, &spec, &g);
    check(g.y1 > g.y0, "empty series: range [%g, %g]", g.y0, g.y1);
    canvas_free(&c);
}

static void test_log(void) {
    double x[7] = { 0, 1, 2, 3, 4, 5, 6 };
    float y[7] = { 1, NAN, 10, NAN, 100, NAN, 1000 };   /* isolated points */
    chart_series s = { .x = x, .y = y, .n = 7 };
    chart_spec spec = spec_of(&s, 1);
    spec.log_y = 1;
    spec.x0 = 0, spec.x1 = 7;
    canvas c;
    chart_geom g;
    canvas_init(&c, 30, 5);   /* title + 4 plot rows = 16 pixel rows */
    chart_render(&c, &spec, &g);
    int row[4], k = 0;
    for (int i = 0; i < 7; i += 2) {
        int cx = (int)floor((x[i] - g.x0) / (g.x1 - g.x0) * g.plot_w);
        unsigned long long r = lit_rows(&c, &g, cx);
        row[k++] = r ? __builtin_ctzll(r) : -1;
    }
    check(g.plot_h == 4 && row[0] - row[1] == row[1] - row[2] && row[1] - row[2] ==
          row[2] - row[3] && row[0] > row[3],
          "log: 1, 10, 100, 1000 on rows %d %d %d %d (evenly spaced)", row[0], row[1], row[2],
          row[3]);
    y[1] = 0;   /* non-positive: clamped and said so */
    y[3] = -5;
    chart_render(&c, &spec, &g);
    char title[64] = "";
    for (int i = 0; i < c.w; i++) strcat(title, canvas_at(&c, 0, i)->glyph);
    check(g.clamped == 2 && strstr(title, "log10") && strstr(title, "2 <=0 clamped"),
          "log: clamped count in the title: \"%s\"", title);
    canvas_free(&c);
}

static void test_dotted(void) {
    double x[100];
    float y[100];
    for (int i = 0; i < 100; i++) x[i] = i, y[i] = 0.5f;
    chart_series s = { .x = x, .y = y, .n = 100, .style = CHART_DOTTED };
    chart_spec spec = spec_of(&s, 1);
    spec.y_fixed = 1, spec.y_min = 0, spec.y_max = 1;
    canvas c;
    chart_geom g;
    canvas_init(&c, 40, 4);
    int empty = 0, drawn = 0;
    for (int mode = 0; mode < 2; mode++) {
        spec.glyphs = mode ? CHART_GLYPH_ASCII : CHART_GLYPH_BRAILLE;
        chart_render(&c, &spec, &g);
        empty = drawn = 0;
        for (int cx = 0; cx < g.plot_w; cx++) {
            int any = 0;
            for (int cy = 0; cy < g.plot_h; cy++)
                any |= cell_cp(canvas_at(&c, g.plot_y + cy, g.plot_x + cx)) != 0;
            any ? drawn++ : empty++;
        }
        check(empty >= g.plot_w / 3 && drawn >= g.plot_w / 3,
              "dotted (%s): %d columns drawn, %d gaps", mode ? "ascii" : "braille", drawn,
              empty);
    }
    canvas_free(&c);
}

static void test_bands(void) {
    double x[2] = { 0, 100 };
    float y[2] = { 0, 1 };
    chart_series s = { .x = x, .y = y, .n = 2, .color = 9 };
    chart_band bands[2] = { { 0, 25, 3 }, { 25, 100, 4 } };
    chart_spec spec = spec_of(&s, 1);
    spec.x0 = 0, spec.x1 = 100;
    spec.bands = bands, spec.n_bands = 2, spec.band_edges = 1, spec.edge_color = 7;
    spec.show_now = 1, spec.now_x = 50, spec.now_color = 8;
    canvas c;
    chart_geom g;
    canvas_init(&c, 1, 1);
    render_width(&c, &spec, 40, 6, &g);   /* 2.5 steps per column */
    int bad = 0;
    for (int cx = 0; cx < g.plot_w; cx++) {
        int want = cx < 10 ? 3 : 4;
        for (int cy = 0; cy < g.plot_h; cy++)
            bad += canvas_at(&c, g.plot_y + cy, g.plot_x + cx)->bg != want;
    }
    check(g.plot_w == 40 && bad == 0, "bands: columns 0-9 colour 3, 10-39 colour 4 (%d wrong)",
          bad);
    check(g.plot_x > 0 && canvas_at(&c, g.plot_y, g.plot_x - 1)->bg == 0,
          "bands: labels keep the default background");
    canvas_cell *edge = canvas_at(&c, g.plot_y + g.plot_h - 1, g.plot_x + 10);
    check(cell_cp(edge) == 0x250A && edge->fg == 7, "bands: edge marker at column 10 (U+%04X)",
          cell_cp(edge));
    canvas_cell *now = canvas_at(&c, g.plot_y + g.plot_h - 1, g.plot_x + 20);
    check(cell_cp(now) == 0x2502 && now->fg == 8, "now marker at column 20 (U+%04X)",
          cell_cp(now));
    canvas_cell *line = canvas_at(&c, g.plot_y, g.plot_x + g.plot_w - 1);
    check(line->fg == 9 && braille_bits(&c, &g, 0, g.plot_w - 1), "series colour on its cells");
    canvas_free(&c);
}

static void test_ascii_chart(void) {
    double x[300];
    float y[300], y2[300];
    for (int i = 0; i < 300; i++) x[i] = i, y[i] = (float)sin(i * 0.05), y2[i] = -y[i];
    chart_series s[2] = { { .x = x, .y = y, .n = 300 }, { .x = x, .y = y2, .n = 300 } };
    chart_band band = { 0, 150, 2 };
    chart_spec spec = spec_of(s, 2);
    spec.glyphs = CHART_GLYPH_ASCII;
    spec.bands = &band, spec.n_bands = 1, spec.band_edges = 1;
    spec.show_now = 1, spec.now_x = 200, spec.log_y = 1;
    canvas c;
    canvas_init(&c, 60, 10);
    chart_render(&c, &spec, NULL);
    int star = 0;
    for (int i = 0; i < c.w * c.h; i++) star |= c.cells[i].glyph[0] == '*';
    check(all_ascii(&c) && star, "ascii chart: only ASCII, '*' where series cross");
    spec.glyphs = CHART_GLYPH_BLOCK;
    spec.log_y = 0;
    chart_render(&c, &spec, NULL);
    dump(&c);
    canvas_free(&c);
}

/* --- EMA -------------------------------------------------------------------------- */

static void ema_ref(const float *y, int n, double smoothing, double *out) {
    double w = fmin(smoothing, 0.999), last = 0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(y[i])) {
            out[i] = NAN;
            continue;
        }
        last = last * w + (1 - w) * y[i];
        k++;
        out[i] = last / (1 - pow(w, k));
    }
}

static void test_ema(void) {
    enum { N = 500 };
    float y[N], out[N];
    double ref[N];
    for (int i = 0; i < N; i++) y[i] = 2.0f + (float)sin(i * 0.3) + 0.001f * i;
    y[7] = NAN;
    y[100] = INFINITY;
    ema_debiased(y, N, 0.9f, out);
    check(out[0] == y[0], "ema: first output %g = first input %g", out[0], y[0]);
    check(isnan(out[7]) && isnan(out[100]) && isfinite(out[8]), "ema: non-finite pass through");
    double worst = 0;
    float smooth[3] = { 0.0f, 0.6f, 0.9999f };
    for (int k = 0; k < 3; k++) {
        ema_debiased(y, N, smooth[k], out);
        ema_ref(y, N, smooth[k], ref);
        for (int i = 0; i < N; i++)
            if (isfinite(ref[i])) worst = max_err(worst, fabs(out[i] - ref[i]) / fabs(ref[i]));
    }
    check(worst < 1e-5, "ema: vs double reference, worst rel err %.2e", worst);
    for (int i = 0; i < N; i++) y[i] = 0.7f;
    ema_debiased(y, N, 0.99f, out);
    double dev = 0;
    for (int i = 0; i < N; i++) dev = max_err(dev, fabs(out[i] - 0.7));
    check(dev < 1e-6, "ema: constant in, constant out (max dev %.2e)", dev);
    ema_debiased(y, N, 0.9f, y);   /* in place */
    check(fabsf(y[N - 1] - 0.7f) < 1e-6f, "ema: in place");
}

/* --- preview -------------------------------------------------------------------------- */

static void test_preview(void) {
    uint8_t px[4] = { 255, 0, 0, 255 };   /* 2×2 checkerboard, grey */
    live_preview pv = { .width = 2, .height = 2, .channels = 1, .pixels = px, .step = 300,
                        .steps = 50, .cfg = 1.5f, .seed = 42, .ema = 1 };
    strcpy(pv.sampler, "heun");
    canvas c;
    canvas_init(&c, 2, 2);   /* caption row + one image row: 2×2 pixels, scale 1 */
    preview_render(&c, &pv, PREVIEW_TRUECOLOR, 5);
    canvas_cell *a = canvas_at(&c, 1, 0), *b = canvas_at(&c, 1, 1);
    check(cell_cp(a) == 0x2580 && (a->attr & CANVAS_ATTR_RGB) && a->fg_rgb == 0xFFFFFF &&
              a->bg_rgb == 0 && b->fg_rgb == 0 && b->bg_rgb == 0xFFFFFF,
          "preview truecolor: ▀ fg/bg %06X/%06X and %06X/%06X", a->fg_rgb, a->bg_rgb,
          b->fg_rgb, b->bg_rgb);
    preview_render(&c, &pv, PREVIEW_256, 5);
    check((a->attr & CANVAS_ATTR_X256) && a->fg == 231 && a->bg == 16 && b->fg == 16 &&
              b->bg == 231,
          "preview 256: fg/bg %d/%d and %d/%d", a->fg, a->bg, b->fg, b->bg);
    check(preview_xterm256(128, 128, 128) == 244 && preview_xterm256(255, 0, 0) == 196 &&
              preview_xterm256(0, 0, 255) == 21,
          "xterm256: grey 128 → %d, red → %d, blue → %d", preview_xterm256(128, 128, 128),
          preview_xterm256(255, 0, 0), preview_xterm256(0, 0, 255));
    canvas_resize(&c, 60, 6);
    preview_render(&c, &pv, PREVIEW_TRUECOLOR, 5);
    char cap[80] = "";
    for (int i = 0; i < 60; i++) strcat(cap, canvas_at(&c, 0, i)->glyph);
    check(strstr(cap, "@300") && strstr(cap, "heun 50") && strstr(cap, "cfg 1.5") &&
              strstr(cap, "seed 42") && strstr(cap, "ema"),
          "preview caption: \"%s\"", cap);
    int img_cols = 0;   /* 2×2 image in 60×(5 rows = 10 px): 10×10 px, centred */
    for (int x = 0; x < c.w; x++) img_cols += cell_cp(canvas_at(&c, 3, x)) == 0x2580;
    check(img_cols == 10 && cell_cp(canvas_at(&c, 3, 25)) == 0x2580,
          "preview keeps the aspect ratio: %d columns for 10 pixel rows", img_cols);
    preview_render(&c, &pv, PREVIEW_ASCII, 5);
    check(all_ascii(&c) && canvas_at(&c, 1, 25)->glyph[0] == '@' &&
              canvas_at(&c, 1, 34)->glyph[0] == ' ',
          "preview ascii: only ASCII, white '@' black ' ' ('%s' '%s')",
          canvas_at(&c, 1, 25)->glyph, canvas_at(&c, 1, 34)->glyph);
    preview_render(&c, NULL, PREVIEW_256, 5);
    check(strncmp(canvas_at(&c, 0, 0)->glyph, "s", 1) == 0, "preview: none yet note");
    canvas_free(&c);
}

/* One valid UTF-8 character (or blank) per cell. */
static int cells_valid(const canvas *c) {
    for (int i = 0; i < c->w * c->h; i++) {
        const char *g = c->cells[i].glyph;
        if (g[0] && utf8_len(g) != 1) return 0;
    }
    return 1;
}

static void test_sizes(void) {
    enum { N = 200 };
    double x[N];
    float y[N];
    for (int i = 0; i < N; i++) x[i] = i * 3.0, y[i] = (float)(i % 13 - 4) * (i % 50 ? 1.f : 1e30f);
    y[17] = NAN, y[40] = -INFINITY;
    uint8_t px[3 * 30 * 17];
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (uint8_t)(i * 37);
    live_preview pv = { .width = 30, .height = 17, .channels = 3, .pixels = px };
    chart_series s[2] = { { .x = x, .y = y, .n = N }, { .x = x, .y = y, .n = N, .style = CHART_DOTTED } };
    chart_band band = { 100, 400, 2 };
    canvas c;
    canvas_init(&c, 1, 1);
    int bad = 0, runs = 0;
    for (int w = 1; w <= 24; w++)
        for (int h = 1; h <= 9; h++)
            for (int mode = 0; mode < 3; mode++)
                for (int variant = 0; variant < 4; variant++) {
                    chart_spec spec = spec_of(s, 2);
                    spec.glyphs = (chart_glyphs)mode;
                    spec.log_y = variant & 1;
                    if (variant & 2) spec.x0 = 250, spec.x1 = 900, spec.y_fixed = 1, spec.y_min = -1, spec.y_max = 2;
                    spec.bands = &band, spec.n_bands = 1, spec.band_edges = 1;
                    spec.show_now = 1, spec.now_x = 300;
                    canvas_resize(&c, w, h);
                    chart_render(&c, &spec, NULL);
                    bad += !cells_valid(&c);
                    preview_render(&c, &pv, (preview_mode)mode, 1);
                    bad += !cells_valid(&c) || (mode == PREVIEW_ASCII && !all_ascii(&c));
                    runs += 2;
                }
    check(bad == 0, "sizes: %d renders from 1x1 to 24x9, %d with bad cells", runs, bad);
    canvas_free(&c);
}

int main(void) {
    test_spike();
    test_nan_gap();
    test_flat();
    test_log();
    test_dotted();
    test_bands();
    test_ascii_chart();
    test_ema();
    test_preview();
    test_sizes();
    printf("%s: %d checks, %d failures\n", failures ? "FAIL" : "ok", checks, failures);
    return failures ? 1 : 0;
}
