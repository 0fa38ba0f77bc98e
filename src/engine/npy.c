/* NumPy .npy reader (format versions 1-3) and float32 writer (version 1).
 * https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
 * The file is "\x93NUMPY", major, minor, a little-endian header length
 * (u16 for version 1, u32 for 2 and 3), a Python dict literal padded with
 * spaces and a newline, then the raw array data. */
#include "formats.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* What the header dict says. */
typedef struct npy_header {
    char descr[16];
    bool have_descr, have_fortran, have_shape;
    bool fortran_order;
    int ndim;
    int64_t shape[REED_MAX_DIMS];
} npy_header;

/* A cursor over the header text; errors name the file and the offset. */
typedef struct npy_parser {
    const char *s;
    size_t n, pos;
    const char *path;
    reed_error *err;
} npy_parser;

/* A supported element type: kind 'f', 'u' or 'i', size in bytes, order. */
typedef struct npy_dtype {
    char kind;
    int size;
    bool big_endian;
} npy_dtype;

static int parse_fail(npy_parser *p, const char *what) {
    return reed_errorf(p->err, "%s: bad .npy header at offset %zu: %s",
                       p->path, p->pos, what);
}

static void skip_ws(npy_parser *p) {
    while (p->pos < p->n && isspace((unsigned char)p->s[p->pos]))
        p->pos++;
}

/* Consumes c (after whitespace) if it is next; returns whether it was. */
static bool accept(npy_parser *p, char c) {
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == c) {
        p->pos++;
        return true;
    }
    return false;
}

/* A quoted Python string without escapes, copied into out (NUL-ended). */
static int parse_str(npy_parser *p, char *out, size_t cap) {
    skip_ws(p);
    if (p->pos >= p->n || (p->s[p->pos] != '\'' && p->s[p->pos] != '"'))
        return parse_fail(p, "expected a quoted string");
    char quote = p->s[p->pos++];
    size_t start = p->pos;
    while (p->pos < p->n && p->s[p->pos] != quote) {
        if (p->s[p->pos] == '\\')
            return parse_fail(p, "escapes in strings are not supported");
        p->pos++;
    }
    if (p->pos >= p->n)
        return parse_fail(p, "unterminated string");
    size_t len = p->pos - start;
    p->pos++;
    if (len >= cap)
        return parse_fail(p, "string too long");
    memcpy(out, p->s + start, len);
    out[len] = '\0';
    return 0;
}

/* True or False. */
static int parse_bool(npy_parser *p, bool *out) {
    skip_ws(p);
    const char *rest = p->s + p->pos;
    size_t left = p->n - p->pos;
    if (left >= 4 && memcmp(rest, "True", 4) == 0) {
        *out = true;
        p->pos += 4;
    } else if (left >= 5 && memcmp(rest, "False", 5) == 0) {
        *out = false;
        p->pos += 5;
    } else {
        return parse_fail(p, "expected True or False");
    }
    return 0;
}

/* A non-negative decimal integer (Python 2 numpy may add an 'L'). */
static int parse_dim(npy_parser *p, int64_t *out) {
    skip_ws(p);
    if (p->pos >= p->n || !isdigit((unsigned char)p->s[p->pos]))
        return parse_fail(p, "expected a non-negative integer dimension");
    int64_t v = 0;
    while (p->pos < p->n && isdigit((unsigned char)p->s[p->pos])) {
        int d = p->s[p->pos++] - '0';
        if (v > (INT64_MAX - d) / 10)
            return parse_fail(p, "dimension too large");
        v = v * 10 + d;
    }
    if (p->pos < p->n && p->s[p->pos] == 'L')
        p->pos++;
    *out = v;
    return 0;
}

/* A tuple of dimensions: (), (3,), (2, 3) or (2, 3,). */
static int parse_shape(npy_parser *p, npy_header *h) {
    if (!accept(p, '('))
        return parse_fail(p, "expected '(' to start the shape");
    h->ndim = 0;
    while (!accept(p, ')')) {
        if (h->ndim == REED_MAX_DIMS)
            return parse_fail(p, "too many dimensions (at most 8)");
        if (parse_dim(p, &h->shape[h->ndim]) != 0)
            return -1;
        h->ndim++;
        if (!accept(p, ',')) {
            if (!accept(p, ')'))
                return parse_fail(p, "expected ',' or ')' in the shape");
            break;
        }
    }
    return 0;
}

/* One "key: value" entry of the dict. */
static int parse_entry(npy_parser *p, npy_header *h) {
    char key[32];
    if (parse_str(p, key, sizeof key) != 0)
        return -1;
    if (!accept(p, ':'))
        return parse_fail(p, "expected ':' after a key");
    if (strcmp(key, "descr") == 0) {
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == '[')
            return reed_errorf(p->err, "%s: unsupported dtype: structured "
                               "arrays are not supported", p->path);
        h->have_descr = true;
        return parse_str(p, h->descr, sizeof h->descr);
    }
    if (strcmp(key, "fortran_order") == 0) {
        h->have_fortran = true;
        return parse_bool(p, &h->fortran_order);
    }
    if (strcmp(key, "shape") == 0) {
        h->have_shape = true;
        return parse_shape(p, h);
    }
    return reed_errorf(p->err, "%s: bad .npy header: unexpected key '%s'",
                       p->path, key);
}

/* The whole dict; only whitespace may follow it. */
static int parse_header(const char *path, const char *text, size_t n,
                        npy_header *h, reed_error *err) {
    npy_parser p = {text, n, 0, path, err};
    memset(h, 0, sizeof *h);
    if (!accept(&p, '{'))
        return parse_fail(&p, "expected '{'");
    while (!accept(&p, '}')) {
        if (parse_entry(&p, h) != 0)
            return -1;
        if (!accept(&p, ',')) {
            if (!accept(&p, '}'))
                return parse_fail(&p, "expected ',' or '}'");
            break;
        }
    }
    skip_ws(&p);
    if (p.pos != n)
        return parse_fail(&p, "unexpected text after the dict");
    if (!h->have_descr || !h->have_fortran || !h->have_shape)
        return reed_errorf(err, "%s: bad .npy header: missing '%s'", path,
                           !h->have_descr     ? "descr"
                           : !h->have_fortran ? "fortran_order"
                                              : "shape");
    return 0;
}

/* Maps a descr string to a supported dtype. */
static int parse_dtype(const char *path, const char *descr, npy_dtype *dt,
                       reed_error *err) {
    static const struct {
        const char *name;
        npy_dtype dt;
    } table[] = {
        {"<f4", {'f', 4, false}}, {">f4", {'f', 4, true}},
        {"<f8", {'f', 8, false}}, {">f8", {'f', 8, true}},
        {"<f2", {'f', 2, false}}, {">f2", {'f', 2, true}},
        {"|u1", {'u', 1, false}}, {"u1", {'u', 1, false}},
        {"<u1", {'u', 1, false}}, {">u1", {'u', 1, false}},
        {"<i4", {'i', 4, false}}, {">i4", {'i', 4, true}},
        {"<i8", {'i', 8, false}}, {">i8", {'i', 8, true}},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(descr, table[i].name) == 0) {
            *dt = table[i].dt;
            return 0;
        }
    }
    return reed_errorf(err, "%s: unsupported dtype '%s' (supported: float32, "
                       "float64, float16, uint8, int32, int64)", path, descr);
}

/* Reads an unsigned integer of `size` bytes in the given byte order. */
static uint64_t load_uint(const uint8_t *b, int size, bool big) {
    uint64_t v = 0;
    for (int i = 0; i < size; i++)
        v |= (uint64_t)b[big ? size - 1 - i : i] << (8 * i);
    return v;
}

static float load_elem(const uint8_t *b, const npy_dtype *dt) {
    uint64_t u = load_uint(b, dt->size, dt->big_endian);
    switch (dt->kind) {
    case 'u':
        return (float)u;
    case 'i':
        return dt->size == 4 ? (float)(int32_t)(uint32_t)u : (float)(int64_t)u;
    default:
        if (dt->size == 2)
            return reed_f16_to_f32((uint16_t)u);
        if (dt->size == 8) {
            double d;
            memcpy(&d, &u, sizeof d);
            return (float)d;
        }
        uint32_t bits = (uint32_t)u;
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
}

/* Locates the header text: *hstart, *hlen within the file bytes. */
static int parse_preamble(const char *path, const uint8_t *buf, size_t len,
                          size_t *hstart, size_t *hlen, reed_error *err) {
    if (len < 10 || memcmp(buf, npy_magic, sizeof npy_magic) != 0)
        return reed_errorf(err, "%s: not a .npy file (bad magic)", path);
    int major = buf[6];
    if (major == 1) {
        *hstart = 10;
        *hlen = (size_t)load_uint(buf + 8, 2, false);
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return reed_errorf(err, "%s: truncated .npy preamble", path);
        *hstart = 12;
        *hlen = (size_t)load_uint(buf + 8, 4, false);
    } else {
        return reed_errorf(err, "%s: unsupported .npy format version %d.%d",
                           path, major, buf[7]);
    }
    if (*hlen > len - *hstart)
        return reed_errorf(err, "%s: truncated: header length %zu runs past "
                           "the end of the file (%zu bytes)", path, *hlen, len);
    return 0;
}

/* Checks the shape, fills out's shape and size; *nbytes = data size. */
static int plan_array(const char *path, const npy_header *h,
                      const npy_dtype *dt, reed_array *out, uint64_t *nbytes,
                      reed_error *err) {
    int64_t size = 1;
    for (int i = 0; i < h->ndim; i++) {
        if (h->shape[i] != 0 && size > INT64_MAX / 8 / h->shape[i])
            return reed_errorf(err, "%s: shape too large", path);
        size *= h->shape[i];
        out->shape[i] = h->shape[i];
    }
    out->ndim = h->ndim;
    out->size = size;
    *nbytes = (uint64_t)size * (uint64_t)dt->size;
    return 0;
}

static int load_from_bytes(const char *path, const uint8_t *buf, size_t len,
                           reed_array *out, reed_error *err) {
    size_t hstart = 0, hlen = 0;
    npy_header h;
    npy_dtype dt = {0};
    uint64_t nbytes = 0;
    if (parse_preamble(path, buf, len, &hstart, &hlen, err) != 0 ||
        parse_header(path, (const char *)buf + hstart, hlen, &h, err) != 0 ||
        parse_dtype(path, h.descr, &dt, err) != 0)
        return -1;
    if (h.fortran_order)
        return reed_errorf(err, "%s: fortran_order arrays are not supported; "
                           "save with np.ascontiguousarray first", path);
    if (plan_array(path, &h, &dt, out, &nbytes, err) != 0)
        return -1;
    size_t avail = len - hstart - hlen;
    if (nbytes > avail)
        return reed_errorf(err, "%s: truncated: header says %llu bytes of "
                           "data, file has %zu", path,
                           (unsigned long long)nbytes, avail);
    if (nbytes < avail)
        return reed_errorf(err, "%s: %zu bytes of unexpected data after the "
                           "%llu bytes the header describes", path,
                           avail - (size_t)nbytes, (unsigned long long)nbytes);
    if ((uint64_t)out->size > SIZE_MAX / sizeof(float) - 1 ||
        !(out->data = malloc((size_t)out->size * sizeof(float) + 1)))
        return reed_errorf(err, "%s: out of memory", path);
    const uint8_t *src = buf + hstart + hlen;
    for (int64_t i = 0; i < out->size; i++)
        out->data[i] = load_elem(src + (size_t)i * (size_t)dt.size, &dt);
    return 0;
}

int npy_load(const char *path, reed_array *out, reed_error *err) {
    memset(out, 0, sizeof *out);
    uint8_t *buf;
    size_t len;
    if (read_file_all(path, &buf, &len, err) != 0)
        return -1;
    int rc = load_from_bytes(path, buf, len, out, err);
    free(buf);
    if (rc != 0)
        reed_array_free(out);
    return rc;
}

/* Formats the version 1 header dict, padded so the data starts at a
 * multiple of 64 bytes. Returns its length or -1. */
static int format_header(char *hdr, size_t cap, int ndim,
                         const int64_t *shape) {
    size_t n = (size_t)snprintf(hdr, cap,
                                "{'descr': '<f4', 'fortran_order': False, "
                                "'shape': (");
    for (int i = 0; i < ndim; i++)
        n += (size_t)snprintf(hdr + n, cap - n, "%lld,%s",
                              (long long)shape[i], i + 1 < ndim ? " " : "");
    n += (size_t)snprintf(hdr + n, cap - n, "), }");
    size_t total = ((10 + n + 1 + 63) / 64) * 64; /* +1 for the '\n' */
    if (total - 10 > cap)
        return -1;
    memset(hdr + n, ' ', total - 10 - n);
    hdr[total - 10 - 1] = '\n';
    return (int)(total - 10);
}

static int check_shape(const char *path, int ndim, const int64_t *shape,
                       int64_t *size, reed_error *err) {
    if (ndim < 0 || ndim > REED_MAX_DIMS)
        return reed_errorf(err, "%s: cannot save %d dimensions (0..%d)", path,
                           ndim, REED_MAX_DIMS);
    *size = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return reed_errorf(err, "%s: negative dimension %lld", path,
                               (long long)shape[i]);
        if (shape[i] != 0 && *size > INT64_MAX / 4 / shape[i])
            return reed_errorf(err, "%s: shape too large", path);
        *size *= shape[i];
    }
    return 0;
}

int npy_save(const char *path, const float *data, int ndim,
             const int64_t *shape, reed_error *err) {
    int64_t size = 0;
    char hdr[512];
    if (check_shape(path, ndim, shape, &size, err) != 0)
        return -1;
    int hlen = format_header(hdr, sizeof hdr, ndim, shape);
    if (hlen < 0)
        return reed_errorf(err, "%s: header too long", path);
    size_t total = 10 + (size_t)hlen + (size_t)size * 4;
    uint8_t *buf = malloc(total);
    if (!buf)
        return reed_errorf(err, "%s: out of memory for %zu bytes", path, total);
    memcpy(buf, npy_magic, sizeof npy_magic);
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (uint8_t)(hlen & 0xff);
    buf[9] = (uint8_t)(hlen >> 8);
    memcpy(buf + 10, hdr, (size_t)hlen);
    uint8_t *dst = buf + 10 + hlen;
    for (int64_t i = 0; i < size; i++) {
        uint32_t bits;
        memcpy(&bits, &data[i], sizeof bits);
        for (int b = 0; b < 4; b++)
            *dst++ = (uint8_t)(bits >> (8 * b));
    }
    int rc = write_file_atomic(path, buf, total, err);
    free(buf);
    return rc;
}
