/* Sample grid preview into a cell canvas (see preview.h). Pure: no curses. */
#include "preview.h"

#include <stdio.h>
#include <string.h>

typedef struct rgb { uint8_t r, g, b; } rgb;

/* Where the scaled image sits in the pixel area (1 px wide, 2 px per row). */
typedef struct fit {
    int ox, oy, dw, dh;      /* offset and size of the scaled image in pixels */
} fit;

static const char ascii_ramp[] = " .:-=+*#%@";

/* --- colours ------------------------------------------------------------------- */

static int cube_level(int v) { return v < 48 ? 0 : v < 115 ? 1 : (v - 35) / 40; }
static int cube_value(int i) { return i ? 55 + 40 * i : 0; }

static int dist2(int r, int g, int b, int r2, int g2, int b2) {
    return (r - r2) * (r - r2) + (g - g2) * (g - g2) + (b - b2) * (b - b2);
}

int preview_xterm256(uint8_t r, uint8_t g, uint8_t b) {
    int cr = cube_level(r), cg = cube_level(g), cb = cube_level(b);
    int cube = 16 + 36 * cr + 6 * cg + cb;
    int dc = dist2(r, g, b, cube_value(cr), cube_value(cg), cube_value(cb));
    int mean = (r + g + b) / 3;
    int gi = mean < 8 ? 0 : mean > 238 ? 23 : (mean - 8 + 5) / 10;   /* 232 + gi: 8 + 10·gi */
    int gv = 8 + 10 * gi;
    int dg = dist2(r, g, b, gv, gv, gv);
    return dg < dc ? 232 + gi : cube;
}

static uint32_t pack_rgb(rgb c) { return (uint32_t)c.r << 16 | (uint32_t)c.g << 8 | c.b; }

static int luma(rgb c) { return (299 * c.r + 587 * c.g + 114 * c.b) / 1000; }

/* --- sampling ------------------------------------------------------------------ */

/* Aspect-preserving fit of a w×h image into pw×ph pixels; rows start on a
 * cell boundary and the height is even so each cell holds two image rows. */
static fit fit_image(int w, int h, int pw, int ph) {
    fit f = { 0 };
    double s = (double)pw / w < (double)ph / h ? (double)pw / w : (double)ph / h;
    f.dw = (int)(w * s);
    f.dh = (int)(h * s);
    if (f.dw < 1) f.dw = 1;
    if (f.dh < 1) f.dh = 1;
    if (f.dh > 1) f.dh &= ~1;
    f.ox = (pw - f.dw) / 2;
    f.oy = ((ph - f.dh) / 2) & ~1;
    return f;
}

/* Box average of the source pixels under destination pixel (u, v): a single
 * source pixel (nearest) when enlarging. */
static rgb sample_box(const live_preview *pv, const fit *f, int u, int v) {
    int x0 = (int)((long)u * pv->width / f->dw), x1 = (int)((long)(u + 1) * pv->width / f->dw);
    int y0 = (int)((long)v * pv->height / f->dh), y1 = (int)((long)(v + 1) * pv->height / f->dh);
    if (x1 <= x0) x1 = x0 + 1;
    if (y1 <= y0) y1 = y0 + 1;
    long sum[3] = { 0, 0, 0 }, n = 0;
    int ch = pv->channels;
    for (int y = y0; y < y1 && y < pv->height; y++)
        for (int x = x0; x < x1 && x < pv->width; x++) {
            const uint8_t *p = pv->pixels + ((size_t)y * pv->width + x) * ch;
            for (int k = 0; k < 3; k++) sum[k] += p[ch >= 3 ? k : 0];
            n++;
        }
    if (!n) return (rgb){ 0, 0, 0 };
    return (rgb){ (uint8_t)(sum[0] / n), (uint8_t)(sum[1] / n), (uint8_t)(sum[2] / n) };
}

/* --- cells --------------------------------------------------------------------- */

static void put_cell(canvas_cell *cell, preview_mode mode, rgb top, rgb bottom) {
    if (mode == PREVIEW_ASCII) {
        int l = (luma(top) + luma(bottom)) / 2;
        canvas_set_cp(cell, (uint32_t)ascii_ramp[l * 10 / 256]);
        return;
    }
    canvas_set_cp(cell, 0x2580);   /* ▀: fg paints the top half, bg the bottom */
    if (mode == PREVIEW_TRUECOLOR) {
        cell->attr = CANVAS_ATTR_RGB;
        cell->fg_rgb = pack_rgb(top);
        cell->bg_rgb = pack_rgb(bottom);
    } else {
        cell->attr = CANVAS_ATTR_X256;
        cell->fg = (uint8_t)preview_xterm256(top.r, top.g, top.b);
        cell->bg = (uint8_t)preview_xterm256(bottom.r, bottom.g, bottom.b);
    }
}

static void draw_image(canvas *c, const live_preview *pv, preview_mode mode, int row0) {
    int rows = c->h - row0;
    if (rows <= 0 || c->w <= 0) return;
    fit f = fit_image(pv->width, pv->height, c->w, 2 * rows);
    for (int cy = 0; cy < rows; cy++) {
        int v = 2 * cy - f.oy;          /* image row of the cell's top half */
        if (v < 0 || v >= f.dh) continue;
        for (int u = 0; u < f.dw; u++) {
            rgb top = sample_box(pv, &f, u, v);
            rgb bottom = v + 1 < f.dh ? sample_box(pv, &f, u, v + 1) : (rgb){ 0, 0, 0 };
            put_cell(canvas_at(c, row0 + cy, f.ox + u), mode, top, bottom);
        }
    }
}

static void draw_caption(canvas *c, const live_preview *pv, uint8_t color) {
    char buf[160];
    snprintf(buf, sizeof buf, "sample @%d  %s %d steps  cfg %.3g  seed %llu%s", pv->step,
             pv->sampler[0] ? pv->sampler : "?", pv->steps, (double)pv->cfg,
             (unsigned long long)pv->seed, pv->ema ? "  ema" : "");
    canvas_puts(c, 0, 0, buf, -1, color, CANVAS_ATTR_BOLD);
}

void preview_render(canvas *c, const live_preview *pv, preview_mode mode,
                    uint8_t caption_color) {
    canvas_clear(c);
    if (!pv || pv->width <= 0 || pv->height <= 0 || !pv->pixels || pv->channels < 1) {
        canvas_puts(c, 0, 0, "sample: none yet (press s)", -1, caption_color, CANVAS_ATTR_BOLD);
        return;
    }
    draw_caption(c, pv, caption_color);
    draw_image(c, pv, mode, 1);
}
