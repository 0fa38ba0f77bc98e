/* safetensors reader and writer.
 * https://github.com/huggingface/safetensors
 * Layout: u64 little-endian N, N bytes of JSON header, then the data area.
 * The header maps tensor names to {"dtype", "shape", "data_offsets":
 * [begin, end]} (offsets relative to the data area) and may hold a
 * "__metadata__" object of string values. The reader trusts nothing: its
 * small JSON parser bounds every read and nesting depth, and every size
 * and offset is checked against the file before use. */
#include "formats.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { JSON_MAX_DEPTH = 64 };
enum { ST_F32, ST_F16, ST_BF16 };

/* One tensor of an opened file; t.name and t.data are owned. */
typedef struct st_rec {
    st_tensor t;
    int dtype;
    bool have_dtype, have_shape, have_offsets;
    uint64_t begin, end;
} st_rec;

struct st_file {
    char *path;
    st_rec *recs;
    int n, cap;
    st_meta *meta; /* keys and values owned */
    int n_meta, meta_cap;
};

/* ---- little-endian helpers ------------------------------------------- */

static uint64_t load_le(const uint8_t *b, int size) {
    uint64_t v = 0;
    for (int i = 0; i < size; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static void store_le(uint8_t *b, uint64_t v, int size) {
    for (int i = 0; i < size; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

/* ---- JSON parsing ------------------------------------------------------ */

typedef struct jp {
    const char *s;
    size_t n, pos;
    const char *path;
    reed_error *err;
} jp;

__attribute__((format(printf, 2, 3))) static int jp_fail(jp *p,
                                                         const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    reed_errorf(p->err, "%s: bad safetensors header at byte %zu: %s", p->path,
                p->pos, what);
    return -1;
}

static void jp_ws(jp *p) {
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                             p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static bool jp_accept(jp *p, char c) {
    jp_ws(p);
    if (p->pos < p->n && p->s[p->pos] == c) {
        p->pos++;
        return true;
    }
    return false;
}

static int jp_hex4(jp *p, uint32_t *out) {
    if (p->n - p->pos < 4)
        return jp_fail(p, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos++];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return jp_fail(p, "bad hex digit in \\u escape");
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 0;
}

/* Decodes \uXXXX (with a following low surrogate if needed) to a code
 * point. */
static int jp_unicode(jp *p, uint32_t *cp) {
    if (jp_hex4(p, cp) != 0)
        return -1;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF)
        return jp_fail(p, "unpaired low surrogate");
    if (*cp < 0xD800 || *cp > 0xDBFF)
        return 0;
    uint32_t lo;
    if (p->n - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
        return jp_fail(p, "unpaired high surrogate");
    p->pos += 2;
    if (jp_hex4(p, &lo) != 0)
        return -1;
    if (lo < 0xDC00 || lo > 0xDFFF)
        return jp_fail(p, "bad low surrogate");
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    return 0;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* One escape sequence after the backslash; appends its UTF-8 to o. */
static int jp_escape(jp *p, char *o, size_t *olen) {
    if (p->pos >= p->n)
        return jp_fail(p, "unterminated string");
    char c = p->s[p->pos++];
    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
    const char *hit = c ? strchr(from, c) : NULL;
    if (hit) {
        o[(*olen)++] = to[hit - from];
        return 0;
    }
    if (c != 'u')
        return jp_fail(p, "bad escape '\\%c'", c);
    uint32_t cp;
    if (jp_unicode(p, &cp) != 0)
        return -1;
    if (cp == 0)
        return jp_fail(p, "\\u0000 is not allowed in strings");
    *olen += put_utf8(o + *olen, cp);
    return 0;
}

/* A JSON string, decoded into a new NUL-terminated buffer. Escapes never
 * decode longer than they are written, so the raw length bounds it. */
static int jp_string(jp *p, char **out) {
    jp_ws(p);
    if (p->pos >= p->n || p->s[p->pos] != '"')
        return jp_fail(p, "expected a string");
    size_t end = ++p->pos;
    while (end < p->n && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->n)
        return jp_fail(p, "unterminated string");
    char *o = malloc(end - p->pos + 1);
    if (!o)
        return jp_fail(p, "out of memory");
    size_t olen = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos++];
        int rc = 0;
        if (c == '\\')
            rc = jp_escape(p, o, &olen);
        else if (c < 0x20)
            rc = jp_fail(p, "control character in string");
        else
            o[olen++] = (char)c;
        if (rc != 0) {
            free(o);
            return -1;
        }
    }
    p->pos = end + 1;
    o[olen] = '\0';
    *out = o;
    return 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Validates a JSON number; *integral says whether it is a plain
 * non-negative integer (no sign, fraction or exponent). */
static int jp_number(jp *p, size_t *start, bool *integral) {
    jp_ws(p);
    *start = p->pos;
    *integral = true;
    if (p->pos < p->n && p->s[p->pos] == '-') {
        p->pos++;
        *integral = false;
    }
    if (p->pos >= p->n || !is_digit(p->s[p->pos]))
        return jp_fail(p, "expected a number");
    if (p->s[p->pos] == '0' && p->pos + 1 < p->n && is_digit(p->s[p->pos + 1]))
        return jp_fail(p, "leading zero in a number");
    while (p->pos < p->n && is_digit(p->s[p->pos]))
        p->pos++;
    if (p->pos < p->n && p->s[p->pos] == '.') {
        *integral = false;
        if (++p->pos >= p->n || !is_digit(p->s[p->pos]))
            return jp_fail(p, "bad fraction in a number");
        while (p->pos < p->n && is_digit(p->s[p->pos]))
            p->pos++;
    }
    if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        *integral = false;
        p->pos++;
        if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (p->pos >= p->n || !is_digit(p->s[p->pos]))
            return jp_fail(p, "bad exponent in a number");
        while (p->pos < p->n && is_digit(p->s[p->pos]))
            p->pos++;
    }
    return 0;
}

/* A non-negative integer that fits in int64. */
static int jp_uint(jp *p, uint64_t *out, const char *what) {
    size_t start;
    bool integral;
    if (jp_number(p, &start, &integral) != 0)
        return -1;
    if (!integral)
        return jp_fail(p, "%s must be a non-negative integer", what);
    uint64_t v = 0;
    for (size_t i = start; i < p->pos; i++) {
        uint64_t d = (uint64_t)(p->s[i] - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return jp_fail(p, "%s is too large", what);
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Object iteration, called after '{': 1 with *key set (the ':' consumed;
 * the caller frees it), 0 at the closing '}', -1 on error (*key NULL). */
static int jp_next_key(jp *p, bool *first, char **key) {
    bool was_first = *first;
    *first = false;
    *key = NULL;
    if (jp_accept(p, '}'))
        return 0;
    if (!was_first && !jp_accept(p, ','))
        return jp_fail(p, "expected ',' or '}'");
    if (jp_string(p, key) != 0)
        return -1;
    if (!jp_accept(p, ':')) {
        free(*key);
        *key = NULL;
        return jp_fail(p, "expected ':'");
    }
    return 1;
}

/* Array iteration, called after '[': 1 if an element follows, 0 at ']'. */
static int jp_next_elem(jp *p, bool *first) {
    bool was_first = *first;
    *first = false;
    if (jp_accept(p, ']'))
        return 0;
    if (!was_first && !jp_accept(p, ','))
        return jp_fail(p, "expected ',' or ']'");
    return 1;
}

static int jp_skip_value(jp *p, int depth);

static int jp_skip_container(jp *p, int depth, bool object) {
    if (depth >= JSON_MAX_DEPTH)
        return jp_fail(p, "nesting deeper than %d", JSON_MAX_DEPTH);
    bool first = true;
    for (;;) {
        int more;
        if (object) {
            char *key = NULL;
            more = jp_next_key(p, &first, &key);
            free(key);
        } else {
            more = jp_next_elem(p, &first);
        }
        if (more <= 0)
            return more;
        if (jp_skip_value(p, depth + 1) != 0)
            return -1;
    }
}

/* Skips any JSON value, validating it. */
static int jp_skip_value(jp *p, int depth) {
    jp_ws(p);
    if (p->pos >= p->n)
        return jp_fail(p, "unexpected end of header");
    char c = p->s[p->pos];
    if (c == '{' || c == '[') {
        p->pos++;
        return jp_skip_container(p, depth, c == '{');
    }
    if (c == '"') {
        char *s;
        if (jp_string(p, &s) != 0)
            return -1;
        free(s);
        return 0;
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t len = strlen(words[i]);
        if (p->n - p->pos >= len && memcmp(p->s + p->pos, words[i], len) == 0) {
            p->pos += len;
            return 0;
        }
    }
    size_t start;
    bool integral;
    return jp_number(p, &start, &integral);
}

/* ---- header semantics ---------------------------------------------------- */

static int parse_dtype(jp *p, st_rec *r) {
    char *s;
    if (jp_string(p, &s) != 0)
        return -1;
    int rc = 0;
    if (strcmp(s, "F32") == 0)
        r->dtype = ST_F32;
    else if (strcmp(s, "F16") == 0)
        r->dtype = ST_F16;
    else if (strcmp(s, "BF16") == 0)
        r->dtype = ST_BF16;
    else
        rc = reed_errorf(p->err, "%s: tensor '%s': unsupported dtype '%.40s' "
                         "(F32, F16 and BF16 only)", p->path, r->t.name, s);
    free(s);
    return rc;
}

static int parse_shape(jp *p, st_rec *r) {
    if (!jp_accept(p, '['))
        return jp_fail(p, "shape of '%s' must be an array", r->t.name);
    bool first = true;
    int more;
    r->t.ndim = 0;
    while ((more = jp_next_elem(p, &first)) == 1) {
        if (r->t.ndim == REED_MAX_DIMS)
            return reed_errorf(p->err, "%s: tensor '%s' has more than %d "
                               "dimensions", p->path, r->t.name,
                               REED_MAX_DIMS);
        uint64_t d;
        if (jp_uint(p, &d, "a dimension") != 0)
            return -1;
        r->t.shape[r->t.ndim++] = (int64_t)d;
    }
    return more;
}

static int parse_offsets(jp *p, st_rec *r) {
    if (!jp_accept(p, '['))
        return jp_fail(p, "data_offsets of '%s' must be an array", r->t.name);
    bool first = true;
    int more, count = 0;
    while ((more = jp_next_elem(p, &first)) == 1) {
        uint64_t v;
        if (count == 2)
            return jp_fail(p, "data_offsets of '%s' must have 2 entries",
                           r->t.name);
        if (jp_uint(p, &v, "a data offset") != 0)
            return -1;
        *(count++ == 0 ? &r->begin : &r->end) = v;
    }
    if (more == 0 && count != 2)
        return jp_fail(p, "data_offsets of '%s' must have 2 entries",
                       r->t.name);
    return more;
}

/* One field of a tensor entry; unknown fields are skipped. */
static int parse_tensor_field(jp *p, st_rec *r, const char *key) {
    bool *seen = strcmp(key, "dtype") == 0          ? &r->have_dtype
                 : strcmp(key, "shape") == 0        ? &r->have_shape
                 : strcmp(key, "data_offsets") == 0 ? &r->have_offsets
                                                    : NULL;
    if (!seen)
        return jp_skip_value(p, 2);
    if (*seen)
        return jp_fail(p, "duplicate '%s' in tensor '%s'", key, r->t.name);
    *seen = true;
    if (seen == &r->have_dtype)
        return parse_dtype(p, r);
    if (seen == &r->have_shape)
        return parse_shape(p, r);
    return parse_offsets(p, r);
}

static st_rec *add_rec(st_file *f) {
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 8;
        st_rec *grown = realloc(f->recs, (size_t)cap * sizeof *grown);
        if (!grown)
            return NULL;
        f->recs = grown;
        f->cap = cap;
    }
    st_rec *r = &f->recs[f->n++];
    memset(r, 0, sizeof *r);
    return r;
}

/* The value of a tensor entry; takes ownership of name. */
static int parse_tensor(jp *p, st_file *f, char *name) {
    st_rec *r = add_rec(f);
    if (!r) {
        free(name);
        return jp_fail(p, "out of memory");
    }
    r->t.name = name;
    if (!jp_accept(p, '{'))
        return jp_fail(p, "tensor '%s' must be an object", name);
    bool first = true;
    char *key;
    int more;
    while ((more = jp_next_key(p, &first, &key)) == 1) {
        int rc = parse_tensor_field(p, r, key);
        free(key);
        if (rc != 0)
            return -1;
    }
    if (more == 0 && !(r->have_dtype && r->have_shape && r->have_offsets))
        return reed_errorf(p->err, "%s: tensor '%s' lacks '%s'", p->path, name,
                           !r->have_dtype   ? "dtype"
                           : !r->have_shape ? "shape"
                                            : "data_offsets");
    return more;
}

static int add_meta(jp *p, st_file *f, char *key, char *value) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) {
            jp_fail(p, "duplicate metadata key '%s'", key);
            free(key);
            free(value);
            return -1;
        }
    if (f->n_meta == f->meta_cap) {
        int cap = f->meta_cap ? f->meta_cap * 2 : 8;
        st_meta *grown = realloc(f->meta, (size_t)cap * sizeof *grown);
        if (!grown) {
            free(key);
            free(value);
            return jp_fail(p, "out of memory");
        }
        f->meta = grown;
        f->meta_cap = cap;
    }
    f->meta[f->n_meta++] = (st_meta){key, value};
    return 0;
}

/* "__metadata__": {string: string}. */
static int parse_metadata(jp *p, st_file *f) {
    if (!jp_accept(p, '{'))
        return jp_fail(p, "__metadata__ must be an object");
    bool first = true;
    char *key;
    int more;
    while ((more = jp_next_key(p, &first, &key)) == 1) {
        char *value;
        jp_ws(p);
        if (p->pos < p->n && p->s[p->pos] != '"') {
            jp_fail(p, "metadata value for '%s' must be a string", key);
            free(key);
            return -1;
        }
        if (jp_string(p, &value) != 0) {
            free(key);
            return -1;
        }
        if (add_meta(p, f, key, value) != 0)
            return -1;
    }
    return more;
}

/* The whole header object; only whitespace may follow it. */
static int parse_header(jp *p, st_file *f) {
    if (!jp_accept(p, '{'))
        return jp_fail(p, "header must be a JSON object");
    bool first = true, seen_meta = false;
    char *key;
    int more;
    while ((more = jp_next_key(p, &first, &key)) == 1) {
        int rc;
        if (strcmp(key, "__metadata__") == 0) {
            free(key);
            if (seen_meta)
                return jp_fail(p, "duplicate __metadata__");
            seen_meta = true;
            rc = parse_metadata(p, f);
        } else {
            rc = parse_tensor(p, f, key);
        }
        if (rc != 0)
            return -1;
    }
    if (more != 0)
        return -1;
    jp_ws(p);
    if (p->pos != p->n)
        return jp_fail(p, "unexpected text after the header object");
    return 0;
}

/* ---- validation and loading ------------------------------------------- */

static int itemsize(int dtype) { return dtype == ST_F32 ? 4 : 2; }

/* Checks one tensor's element count and data range. */
static int check_rec(const char *path, const st_rec *r, uint64_t data_len,
                     reed_error *err) {
    uint64_t numel = 1;
    for (int i = 0; i < r->t.ndim; i++) {
        uint64_t d = (uint64_t)r->t.shape[i];
        if (d != 0 && numel > (uint64_t)INT64_MAX / 8 / d)
            return reed_errorf(err, "%s: tensor '%s': shape too large", path,
                               r->t.name);
        numel *= d;
    }
    uint64_t want = numel * (uint64_t)itemsize(r->dtype);
    if (r->end < r->begin)
        return reed_errorf(err, "%s: tensor '%s': data_offsets [%llu, %llu] "
                           "end before begin", path, r->t.name,
                           (unsigned long long)r->begin,
                           (unsigned long long)r->end);
    if (r->end - r->begin != want)
        return reed_errorf(err, "%s: tensor '%s': data_offsets span %llu bytes "
                           "but shape and dtype need %llu", path, r->t.name,
                           (unsigned long long)(r->end - r->begin),
                           (unsigned long long)want);
    if (r->end > data_len)
        return reed_errorf(err, "%s: tensor '%s': data_offsets [%llu, %llu] "
                           "past the end of the data (%llu bytes)", path,
                           r->t.name, (unsigned long long)r->begin,
                           (unsigned long long)r->end,
                           (unsigned long long)data_len);
    return 0;
}

static int cmp_rec_begin(const void *a, const void *b) {
    const st_rec *x = *(st_rec *const *)a, *y = *(st_rec *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_rec_name(const void *a, const void *b) {
    const st_rec *x = *(st_rec *const *)a, *y = *(st_rec *const *)b;
    return strcmp(x->t.name, y->t.name);
}

/* No two tensors share a name or overlap in the data area. */
static int check_disjoint(const char *path, st_file *f, reed_error *err) {
    if (f->n < 2)
        return 0;
    st_rec **order = malloc((size_t)f->n * sizeof *order);
    if (!order)
        return reed_errorf(err, "%s: out of memory", path);
    for (int i = 0; i < f->n; i++)
        order[i] = &f->recs[i];
    int rc = 0;
    qsort(order, (size_t)f->n, sizeof *order, cmp_rec_name);
    for (int i = 1; i < f->n && rc == 0; i++)
        if (strcmp(order[i - 1]->t.name, order[i]->t.name) == 0)
            rc = reed_errorf(err, "%s: duplicate tensor name '%s'", path,
                             order[i]->t.name);
    qsort(order, (size_t)f->n, sizeof *order, cmp_rec_begin);
    for (int i = 1; i < f->n && rc == 0; i++)
        if (order[i]->begin < order[i - 1]->end)
            rc = reed_errorf(err, "%s: tensors '%s' and '%s' overlap in the "
                             "data area", path, order[i - 1]->t.name,
                             order[i]->t.name);
    free(order);
    return rc;
}

/* Decodes a tensor's bytes into an owned float32 buffer. */
static int load_rec(const char *path, st_rec *r, const uint8_t *data,
                    reed_error *err) {
    size_t isz = (size_t)itemsize(r->dtype);
    size_t numel = (size_t)(r->end - r->begin) / isz;
    float *out = malloc(numel * sizeof(float) + 1);
    if (!out)
        return reed_errorf(err, "%s: out of memory", path);
    const uint8_t *src = data + r->begin;
    for (size_t i = 0; i < numel; i++) {
        uint64_t u = load_le(src + i * isz, (int)isz);
        if (r->dtype == ST_F16)
            out[i] = reed_f16_to_f32((uint16_t)u);
        else if (r->dtype == ST_BF16)
            out[i] = reed_bf16_to_f32((uint16_t)u);
        else {
            uint32_t bits = (uint32_t)u;
            memcpy(&out[i], &bits, sizeof bits);
        }
    }
    r->t.data = out;
    return 0;
}

static int open_from_bytes(st_file *f, const uint8_t *buf, size_t len,
                           reed_error *err) {
    const char *path = f->path;
    if (len < 8)
        return reed_errorf(err, "%s: truncated: %zu bytes, too short for a "
                           "safetensors file", path, len);
    uint64_t hlen = load_le(buf, 8);
    if (hlen > len - 8)
        return reed_errorf(err, "%s: header size %llu is larger than the file "
                           "(%zu bytes)", path, (unsigned long long)hlen, len);
    jp p = {(const char *)buf + 8, (size_t)hlen, 0, path, err};
    if (parse_header(&p, f) != 0)
        return -1;
    const uint8_t *data = buf + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;
    for (int i = 0; i < f->n; i++)
        if (check_rec(path, &f->recs[i], data_len, err) != 0)
            return -1;
    if (check_disjoint(path, f, err) != 0)
        return -1;
    for (int i = 0; i < f->n; i++)
        if (load_rec(path, &f->recs[i], data, err) != 0)
            return -1;
    return 0;
}

st_file *st_open(const char *path, reed_error *err) {
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        reed_errorf(err, "%s: out of memory", path);
        return NULL;
    }
    uint8_t *buf;
    size_t len;
    if (read_file_all(path, &buf, &len, err) != 0) {
        st_close(f);
        return NULL;
    }
    int rc = open_from_bytes(f, buf, len, err);
    free(buf);
    if (rc != 0) {
        st_close(f);
        return NULL;
    }
    return f;
}

void st_close(st_file *f) {
    if (!f)
        return;
    for (int i = 0; i < f->n; i++) {
        free((char *)f->recs[i].t.name);
        free((float *)f->recs[i].t.data);
    }
    for (int i = 0; i < f->n_meta; i++) {
        free((char *)f->meta[i].key);
        free((char *)f->meta[i].value);
    }
    free(f->recs);
    free(f->meta);
    free(f->path);
    free(f);
}

int st_count(const st_file *f) { return f->n; }

const st_tensor *st_at(const st_file *f, int i) {
    return i >= 0 && i < f->n ? &f->recs[i].t : NULL;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->recs[i].t.name, name) == 0)
            return &f->recs[i].t;
    return NULL;
}

const char *st_meta_get(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

const char *st_path(const st_file *f) { return f->path; }

/* ---- writing ------------------------------------------------------------- */

/* A growing byte buffer; `failed` latches allocation failure. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool failed;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *grown = realloc(b->s, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_str(b, tmp);
}

/* A JSON string literal: quotes, backslashes and control characters are
 * escaped; other bytes (UTF-8) pass through. */
static void sb_json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*c;
            sb_put(b, esc, 2);
        } else if (*c == '\n') {
            sb_str(b, "\\n");
        } else if (*c == '\t') {
            sb_str(b, "\\t");
        } else if (*c == '\r') {
            sb_str(b, "\\r");
        } else if (*c < 0x20 || *c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *c);
            sb_str(b, esc);
        } else {
            sb_put(b, (const char *)c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* Whether s is well-formed UTF-8 (the header must be). */
static bool utf8_valid(const char *s) {
    const unsigned char *c = (const unsigned char *)s;
    while (*c) {
        int extra = *c < 0x80 ? 0 : (*c & 0xE0) == 0xC0 ? 1
                                : (*c & 0xF0) == 0xE0   ? 2
                                : (*c & 0xF8) == 0xF0   ? 3
                                                        : -1;
        if (extra < 0 || (extra == 1 && *c < 0xC2) || (*c > 0xF4))
            return false;
        uint32_t cp = *c & (0x3F >> extra);
        for (int i = 1; i <= extra; i++) {
            if ((c[i] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (c[i] & 0x3F);
        }
        if ((extra == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        c += extra + 1;
    }
    return true;
}

/* Checks one tensor to be written; *nbytes is its data size. */
static int check_write_tensor(const char *path, const st_tensor *t,
                              uint64_t *nbytes, reed_error *err) {
    if (!t->name || !utf8_valid(t->name) || !strcmp(t->name, "__metadata__"))
        return reed_errorf(err, "%s: bad tensor name", path);
    if (t->ndim < 0 || t->ndim > REED_MAX_DIMS)
        return reed_errorf(err, "%s: tensor '%s': %d dimensions (0..%d)", path,
                           t->name, t->ndim, REED_MAX_DIMS);
    uint64_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0)
            return reed_errorf(err, "%s: tensor '%s': negative dimension",
                               path, t->name);
        if (t->shape[i] != 0 && numel > (uint64_t)INT64_MAX / 8 /
                                            (uint64_t)t->shape[i])
            return reed_errorf(err, "%s: tensor '%s': shape too large", path,
                               t->name);
        numel *= (uint64_t)t->shape[i];
    }
    if (numel > 0 && !t->data)
        return reed_errorf(err, "%s: tensor '%s' has no data", path, t->name);
    *nbytes = numel * 4;
    return 0;
}

static int check_write_args(const char *path, const st_tensor *tensors,
                            int n_tensors, const st_meta *meta, int n_meta,
                            reed_error *err) {
    if (n_tensors < 0 || n_meta < 0 || (n_tensors && !tensors) ||
        (n_meta && !meta))
        return reed_errorf(err, "%s: bad tensor or metadata list", path);
    for (int i = 0; i < n_meta; i++)
        if (!meta[i].key || !meta[i].value || !utf8_valid(meta[i].key) ||
            !utf8_valid(meta[i].value))
            return reed_errorf(err, "%s: metadata entry %d is not valid UTF-8 "
                               "text", path, i);
    for (int i = 0; i < n_tensors; i++)
        for (int j = 0; j < i; j++)
            if (tensors[i].name && tensors[j].name &&
                strcmp(tensors[i].name, tensors[j].name) == 0)
                return reed_errorf(err, "%s: duplicate tensor name '%s'", path,
                                   tensors[i].name);
    return 0;
}

/* The header JSON, padded with spaces to a multiple of 8 bytes; *data_len
 * is the size of the data area. */
static int build_header(const char *path, sbuf *b, const st_tensor *tensors,
                        int n_tensors, const st_meta *meta, int n_meta,
                        uint64_t *data_len, reed_error *err) {
    sb_put(b, "{", 1);
    if (n_meta > 0) {
        sb_str(b, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            sb_str(b, i ? "," : "");
            sb_json_string(b, meta[i].key);
            sb_put(b, ":", 1);
            sb_json_string(b, meta[i].value);
        }
        sb_put(b, "}", 1);
    }
    uint64_t offset = 0;
    for (int i = 0; i < n_tensors; i++) {
        const st_tensor *t = &tensors[i];
        uint64_t nbytes = 0;
        if (check_write_tensor(path, t, &nbytes, err) != 0)
            return -1;
        if (nbytes > (uint64_t)INT64_MAX - offset)
            return reed_errorf(err, "%s: tensors too large", path);
        sb_str(b, n_meta > 0 || i > 0 ? "," : "");
        sb_json_string(b, t->name);
        sb_str(b, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            sb_str(b, d ? "," : "");
            sb_u64(b, (uint64_t)t->shape[d]);
        }
        sb_str(b, "],\"data_offsets\":[");
        sb_u64(b, offset);
        sb_put(b, ",", 1);
        sb_u64(b, offset += nbytes);
        sb_str(b, "]}");
    }
    sb_put(b, "}", 1);
    while (!b->failed && b->len % 8 != 0)
        sb_put(b, " ", 1);
    *data_len = offset;
    if (b->failed) {
        reed_errorf(err, "%s: out of memory", path);
        return -1;
    }
    return 0;
}

int st_write(const char *path, const st_tensor *tensors, int n_tensors,
             const st_meta *meta, int n_meta, reed_error *err) {
    sbuf hdr = {0};
    uint64_t data_len = 0;
    if (check_write_args(path, tensors, n_tensors, meta, n_meta, err) != 0 ||
        build_header(path, &hdr, tensors, n_tensors, meta, n_meta, &data_len,
                     err) != 0) {
        free(hdr.s);
        return -1;
    }
    uint64_t total = 8 + (uint64_t)hdr.len + data_len;
    uint8_t *buf = total <= SIZE_MAX ? malloc((size_t)total) : NULL;
    if (!buf) {
        free(hdr.s);
        return reed_errorf(err, "%s: out of memory for %llu bytes", path,
                           (unsigned long long)total);
    }
    store_le(buf, hdr.len, 8);
    memcpy(buf + 8, hdr.s, hdr.len);
    uint8_t *dst = buf + 8 + hdr.len;
    for (int i = 0; i < n_tensors; i++) {
        size_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++)
            numel *= (size_t)tensors[i].shape[d];
        for (size_t k = 0; k < numel; k++, dst += 4) {
            uint32_t bits;
            memcpy(&bits, &tensors[i].data[k], sizeof bits);
            store_le(dst, bits, 4);
        }
    }
    int rc = write_file_atomic(path, buf, (size_t)total, err);
    free(buf);
    free(hdr.s);
    return rc;
}
