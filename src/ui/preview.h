/* The latest sample grid drawn into a cell canvas (no curses): row 0 is a
 * caption (step, sampler, steps, cfg, seed, EMA), the rows below the image,
 * scaled to fit with its aspect ratio kept (box filter when shrinking,
 * nearest when growing) and centred.
 *
 *   PREVIEW_TRUECOLOR  '▀' with fg = top pixel, bg = bottom pixel, as 24-bit
 *                      colours (CANVAS_ATTR_RGB, fg_rgb/bg_rgb)
 *   PREVIEW_256        the same with xterm-256 colour numbers (CANVAS_ATTR_X256):
 *                      greys on 16, 232..255, 231; colours on the 6×6×6 cube
 *   PREVIEW_ASCII      one character per 1×2 pixels from " .:-=+*#%@" */
#ifndef REED_UI_PREVIEW_H
#define REED_UI_PREVIEW_H

#include <stdint.h>

#include "chart.h"
#include "live.h"

typedef enum { PREVIEW_TRUECOLOR, PREVIEW_256, PREVIEW_ASCII } preview_mode;

/* Clears c and draws pv into it (a "no sample yet" note when pv is NULL or
 * has no pixels). caption_color is the colour index for the caption row. */
void preview_render(canvas *c, const live_preview *pv, preview_mode mode,
                    uint8_t caption_color);

/* Nearest xterm-256 colour (16..255) to an RGB triple. */
int preview_xterm256(uint8_t r, uint8_t g, uint8_t b);

#endif
