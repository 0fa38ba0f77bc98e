/* IDX reader (the MNIST file format), plain or gzip-compressed.
 * Layout: magic 0x00 0x00 TYPE NDIM, NDIM big-endian u32 dimensions, then
 * the data. Only TYPE 0x08 (unsigned byte) is supported. */
#include "formats.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum { IDX_CHUNK = 1 << 20 };

/* Reads up to len bytes; returns the count (short only at end of file) or
 * -1 with err filled. */
static int64_t gz_read_upto(gzFile gz, const char *path, uint8_t *buf,
                            size_t len, reed_error *err) {
    size_t got = 0;
    while (got < len) {
        size_t want = len - got < IDX_CHUNK ? len - got : IDX_CHUNK;
        int n = gzread(gz, buf + got, (unsigned)want);
        if (n < 0) {
            int code;
            const char *msg = gzerror(gz, &code);
            return reed_errorf(err, "%s: read failed: %s", path,
                               code == Z_ERRNO ? strerror(errno) : msg);
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (int64_t)got;
}

/* Reads and checks the magic and dimensions; fills out's shape and size. */
static int read_idx_header(gzFile gz, const char *path, reed_array *out,
                           reed_error *err) {
    uint8_t magic[4];
    int64_t n = gz_read_upto(gz, path, magic, 4, err);
    if (n < 0)
        return -1;
    uint32_t m = n == 4 ? (uint32_t)magic[0] << 24 | (uint32_t)magic[1] << 16 |
                              (uint32_t)magic[2] << 8 | magic[3]
                        : 0;
    if (n < 4 || magic[0] != 0 || magic[1] != 0)
        return reed_errorf(err, "%s: not an IDX file (magic 0x%08x)", path, m);
    if (magic[2] != 0x08)
        return reed_errorf(err, "%s: unsupported IDX data type 0x%02x in magic "
                           "0x%08x (only 0x08, unsigned byte)", path, magic[2],
                           m);
    int ndim = magic[3];
    if (ndim < 1 || ndim > REED_MAX_DIMS)
        return reed_errorf(err, "%s: IDX file has %d dimensions (1..%d "
                           "supported)", path, ndim, REED_MAX_DIMS);
    uint8_t dims[4 * REED_MAX_DIMS] = {0};
    n = gz_read_upto(gz, path, dims, (size_t)ndim * 4, err);
    if (n < 0)
        return -1;
    if (n < ndim * 4)
        return reed_errorf(err, "%s: truncated: IDX header ends inside the "
                           "dimensions", path);
    out->ndim = ndim;
    out->size = 1;
    for (int i = 0; i < ndim; i++) {
        const uint8_t *d = dims + 4 * i;
        out->shape[i] = (int64_t)((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 |
                                  (uint32_t)d[2] << 8 | d[3]);
        if (out->shape[i] != 0 && out->size > INT64_MAX / 8 / out->shape[i])
            return reed_errorf(err, "%s: IDX shape too large", path);
        out->size *= out->shape[i];
    }
    return 0;
}

/* Reads exactly `want` data bytes without trusting `want` for the
 * allocation: the buffer grows only as data actually arrives. */
static int read_idx_data(gzFile gz, const char *path, uint64_t want,
                         uint8_t **data, reed_error *err) {
    if (want >= SIZE_MAX / 2)
        return reed_errorf(err, "%s: IDX shape too large", path);
    size_t cap = want < IDX_CHUNK ? (size_t)want + 1 : IDX_CHUNK;
    size_t got = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        int64_t n = gz_read_upto(gz, path, buf + got, cap - got, err);
        if (n < 0) {
            free(buf);
            return -1;
        }
        got += (size_t)n;
        if (got < cap || got > want)
            break; /* end of file, or one byte past the expected data */
        size_t next = cap * 2 < want + 1 ? cap * 2 : (size_t)want + 1;
        uint8_t *grown = realloc(buf, next);
        if (!grown)
            free(buf);
        buf = grown;
        cap = next;
    }
    if (!buf)
        return reed_errorf(err, "%s: out of memory", path);
    if (got != want) {
        free(buf);
        if (got > want)
            return reed_errorf(err, "%s: unexpected data after the %llu bytes "
                               "the IDX header describes", path,
                               (unsigned long long)want);
        return reed_errorf(err, "%s: truncated: header says %llu bytes of "
                           "data, file has %zu", path,
                           (unsigned long long)want, got);
    }
    *data = buf;
    return 0;
}

int idx_load(const char *path, reed_array *out, reed_error *err) {
    memset(out, 0, sizeof *out);
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return reed_errorf(err, "%s: cannot open: %s", path,
                           errno ? strerror(errno) : "out of memory");
    uint8_t *bytes = NULL;
    int rc = read_idx_header(gz, path, out, err);
    if (rc == 0 && (uint64_t)out->size > SIZE_MAX / sizeof(float) - 1)
        rc = reed_errorf(err, "%s: IDX shape too large", path);
    if (rc == 0)
        rc = read_idx_data(gz, path, (uint64_t)out->size, &bytes, err);
    gzclose(gz);
    if (rc == 0 && !(out->data = malloc((size_t)out->size * sizeof(float) + 1)))
        rc = reed_errorf(err, "%s: out of memory", path);
    if (rc == 0)
        for (int64_t i = 0; i < out->size; i++)
            out->data[i] = (float)bytes[i];
    free(bytes);
    if (rc != 0)
        reed_array_free(out);
    return rc;
}
