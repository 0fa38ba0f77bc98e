/* PNG writer: libpng's simplified API encodes the image into memory, then
 * tEXt chunks (keyword NUL text, CRC-32 over type and data) are spliced in
 * just before IEND and the result is written atomically. */
#include "formats.h"

#include <png.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static void put_be32(uint8_t *b, uint32_t v) {
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 |
           b[3];
}

/* PNG keywords: 1-79 Latin-1 printable characters, no leading, trailing
 * or doubled spaces. Text: any Latin-1 except NUL (guaranteed by C). */
static bool keyword_ok(const char *k) {
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if ((c < 32 || (c > 126 && c < 161)) || (c == ' ' && k[i + 1] == ' '))
            return false;
    }
    return true;
}

/* Offset of the IEND chunk in an encoded PNG, found by walking chunks. */
static int find_iend(const uint8_t *png, size_t len, size_t *at) {
    size_t pos = 8;
    while (pos <= len && len - pos >= 12) {
        uint32_t clen = get_be32(png + pos);
        if (memcmp(png + pos + 4, "IEND", 4) == 0) {
            *at = pos;
            return 0;
        }
        if (clen > len - pos - 12)
            return -1;
        pos += 12 + (size_t)clen;
    }
    return -1;
}

/* Bytes all the tEXt chunks take. */
static size_t text_chunks_size(const st_meta *text, int n_text) {
    size_t total = 0;
    for (int i = 0; i < n_text; i++)
        total += 12 + strlen(text[i].key) + 1 + strlen(text[i].value);
    return total;
}

/* Writes one tEXt chunk at dst; returns its size. */
static size_t put_text_chunk(uint8_t *dst, const st_meta *t) {
    size_t klen = strlen(t->key), vlen = strlen(t->value);
    size_t dlen = klen + 1 + vlen;
    put_be32(dst, (uint32_t)dlen);
    memcpy(dst + 4, "tEXt", 4);
    memcpy(dst + 8, t->key, klen + 1);
    memcpy(dst + 8 + klen + 1, t->value, vlen);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, dst + 4, (uInt)(4 + dlen));
    put_be32(dst + 8 + dlen, (uint32_t)crc);
    return 12 + dlen;
}

/* Encodes pixels with libpng into a malloc'd buffer. */
static int encode_png(const char *path, const uint8_t *pixels, int width,
                      int height, int channels, uint8_t **out, size_t *len,
                      reed_error *err) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)width;
    img.height = (png_uint_32)height;
    img.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&img, NULL, &size, 0, pixels, 0, NULL))
        return reed_errorf(err, "%s: PNG encoding failed: %s", path,
                           img.message);
    uint8_t *buf = malloc(size);
    if (!buf)
        return reed_errorf(err, "%s: out of memory", path);
    if (!png_image_write_to_memory(&img, buf, &size, 0, pixels, 0, NULL)) {
        free(buf);
        return reed_errorf(err, "%s: PNG encoding failed: %s", path,
                           img.message);
    }
    *out = buf;
    *len = size;
    return 0;
}

static int check_png_args(const char *path, const uint8_t *pixels, int width,
                          int height, int channels, const st_meta *text,
                          int n_text, reed_error *err) {
    if (width <= 0 || height <= 0 || width > 1 << 20 || height > 1 << 20 ||
        (uint64_t)width * (uint64_t)height > (uint64_t)1 << 30)
        return reed_errorf(err, "%s: bad image size %dx%d", path, width,
                           height);
    if (!pixels)
        return reed_errorf(err, "%s: no pixels", path);
    if (channels != 1 && channels != 3)
        return reed_errorf(err, "%s: %d channels (1 or 3 supported)", path,
                           channels);
    if (n_text < 0 || (n_text > 0 && !text))
        return reed_errorf(err, "%s: bad text list", path);
    for (int i = 0; i < n_text; i++) {
        if (!text[i].key || !text[i].value || !keyword_ok(text[i].key))
            return reed_errorf(err, "%s: bad PNG text keyword '%s' (1-79 "
                               "printable Latin-1 characters)", path,
                               text[i].key ? text[i].key : "(null)");
        if (strlen(text[i].value) > (1u << 30))
            return reed_errorf(err, "%s: PNG text too long", path);
    }
    return 0;
}

int png_write(const char *path, const uint8_t *pixels, int width, int height,
              int channels, const st_meta *text, int n_text, reed_error *err) {
    uint8_t *png = NULL, *out = NULL;
    size_t len = 0, iend = 0;
    if (check_png_args(path, pixels, width, height, channels, text, n_text,
                       err) ||
        encode_png(path, pixels, width, height, channels, &png, &len, err))
        return -1;
    if (find_iend(png, len, &iend) != 0) {
        free(png);
        return reed_errorf(err, "%s: encoded PNG has no IEND chunk", path);
    }
    size_t extra = text_chunks_size(text, n_text);
    out = malloc(len + extra);
    if (!out) {
        free(png);
        return reed_errorf(err, "%s: out of memory", path);
    }
    memcpy(out, png, iend);
    size_t pos = iend;
    for (int i = 0; i < n_text; i++)
        pos += put_text_chunk(out + pos, &text[i]);
    memcpy(out + pos, png + iend, len - iend);
    free(png);
    int rc = write_file_atomic(path, out, len + extra, err);
    free(out);
    return rc;
}
