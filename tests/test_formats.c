/* Tests for the file formats in src/engine/formats.h: .npy, IDX(.gz),
 * safetensors and PNG. Every check prints one line; the program exits 0
 * when all pass and 1 otherwise.
 *
 * Helper modes used by tests/test_formats_python.sh:
 *   test_formats --write-st PATH        write a known safetensors file
 *   test_formats --read-st PATH [KEY..] print tensors (and metadata values)
 *   test_formats --read-npy PATH        print shape and sums of a .npy
 *   test_formats --write-npy DIR        write DIR/{m,s,e}.npy with npy_save
 */
#include "formats.h"
#include "check.h"

#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char tmp_dir[64];


static void tpath(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", tmp_dir, name);
}

/* Unlinks first: truncating a file in place makes ext4 flush it on close
 * (auto_da_alloc), which makes the mutation loops crawl. */
static void write_bytes(const char *path, const void *data, size_t len) {
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

static uint8_t *read_bytes(const char *path, size_t *len) {
    uint8_t *buf;
    reed_error err;
    if (read_file_all(path, &buf, len, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    return buf;
}

/* An expected failure: rc is -1 and the message names the path and, if
 * given, contains needle. */
static void expect_fail(int rc, const reed_error *err, const char *path,
                        const char *needle, const char *what) {
    bool ok = rc != 0 && strstr(err->msg, path) &&
              (!needle || strstr(err->msg, needle));
    check(ok, "%s -> error: %s", what, rc != 0 ? err->msg : "(succeeded)");
}

static void put_le(uint8_t *b, uint64_t v, int size) {
    for (int i = 0; i < size; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static void put_be(uint8_t *b, uint64_t v, int size) {
    for (int i = 0; i < size; i++)
        b[size - 1 - i] = (uint8_t)(v >> (8 * i));
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static bool same_floats(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (f32_bits(a[i]) != f32_bits(b[i]))
            return false;
    return true;
}

/* ---- .npy ---------------------------------------------------------------- */

/* Builds a .npy file: magic, version, header length, the dict padded with
 * spaces and '\n' to a multiple of 64, then data. */
static uint8_t *build_npy(int version, const char *dict, const uint8_t *data,
                          size_t dlen, size_t *len) {
    size_t pre = version == 1 ? 10 : 12;
    size_t hlen = ((pre + strlen(dict) + 1 + 63) / 64) * 64 - pre;
    uint8_t *buf = malloc(pre + hlen + dlen + 1);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)version;
    buf[7] = 0;
    put_le(buf + 8, hlen, version == 1 ? 2 : 4);
    memset(buf + pre, ' ', hlen);
    memcpy(buf + pre, dict, strlen(dict));
    buf[pre + hlen - 1] = '\n';
    if (dlen)
        memcpy(buf + pre + hlen, data, dlen);
    *len = pre + hlen + dlen;
    return buf;
}

static void write_npy(const char *path, int version, const char *dict,
                      const uint8_t *data, size_t dlen) {
    size_t len;
    uint8_t *buf = build_npy(version, dict, data, dlen, &len);
    write_bytes(path, buf, len);
    free(buf);
}

/* One dtype case: descr, element size, byte order, raw values, expected. */
typedef struct npy_case {
    const char *descr;
    int size;
    bool big;
    uint64_t raw[4];
    float want[4];
} npy_case;

static const npy_case npy_cases[] = {
    {"<f4", 4, false, {0x3fc00000, 0xc0100000, 0, 0x501502f9},
     {1.5f, -2.25f, 0.0f, 1e10f}},
    {">f4", 4, true, {0x3fc00000, 0xc0100000, 0, 0x501502f9},
     {1.5f, -2.25f, 0.0f, 1e10f}},
    {"<f2", 2, false, {0x3c00, 0xc000, 0x0001, 0x7bff},
     {1.0f, -2.0f, 5.9604645e-08f, 65504.0f}},
    {"|u1", 1, false, {0, 1, 128, 255}, {0, 1, 128, 255}},
    {"u1", 1, false, {7, 9, 200, 3}, {7, 9, 200, 3}},
    {"<i4", 4, false, {0xffffffff, 0, 0x7fffffff, 0x80000000},
     {-1.0f, 0.0f, 2147483647.0f, -2147483648.0f}},
    {">i4", 4, true, {0xfffffffe, 5, 0x7fffffff, 0x80000000},
     {-2.0f, 5.0f, 2147483647.0f, -2147483648.0f}},
    {"<i8", 8, false, {UINT64_MAX, 0, (uint64_t)1 << 40, (uint64_t)-(1LL << 40)},
     {-1.0f, 0.0f, 1099511627776.0f, -1099511627776.0f}},
    {">i8", 8, true, {UINT64_MAX - 2, 12, (uint64_t)1 << 40, 77},
     {-3.0f, 12.0f, 1099511627776.0f, 77.0f}},
};

static void test_npy_dtype(const npy_case *c, int version) {
    static const char *shapes[] = {"(2, 2)", "(4,)", "(1, 2, 2,)", "(4L,)"};
    char path[512], dict[256];
    uint8_t data[32];
    for (int i = 0; i < 4; i++) {
        if (c->big)
            put_be(data + i * c->size, c->raw[i], c->size);
        else
            put_le(data + i * c->size, c->raw[i], c->size);
    }
    const char *shape = shapes[(version + c->size) % 4];
    snprintf(dict, sizeof dict,
             "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
             c->descr, shape);
    tpath(path, sizeof path, "dtype.npy");
    write_npy(path, version, dict, data, (size_t)(4 * c->size));
    reed_array a;
    reed_error err;
    int rc = npy_load(path, &a, &err);
    bool ok = rc == 0 && a.size == 4 && same_floats(a.data, c->want, 4);
    check(ok, "npy v%d dtype %-3s shape %-10s -> %g %g %g %g%s%s", version,
          c->descr, shape, ok ? a.data[0] : 0, ok ? a.data[1] : 0,
          ok ? a.data[2] : 0, ok ? a.data[3] : 0, rc ? " " : "",
          rc ? err.msg : "");
    reed_array_free(&a);
}

static void test_npy_header_forms(void) {
    static const struct {
        const char *dict;
        int ndim;
        int64_t d0;
    } forms[] = {
        {"{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (1,)}", 1, 1},
        {"{'shape': (), 'fortran_order': False, 'descr': '<f4'}", 0, 0},
        {"{'fortran_order':False,'shape':(1,1,1,1,1,1,1,1),'descr':'<f4',}", 8,
         1},
    };
    char path[512];
    uint8_t data[4];
    put_le(data, f32_bits(6.5f), 4);
    tpath(path, sizeof path, "forms.npy");
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        write_npy(path, 1, forms[i].dict, data, 4);
        reed_array a;
        reed_error err;
        int rc = npy_load(path, &a, &err);
        bool ok = rc == 0 && a.ndim == forms[i].ndim && a.size == 1 &&
                  a.data[0] == 6.5f && (a.ndim == 0 || a.shape[0] == 1);
        check(ok, "npy header form %s -> ndim %d%s", forms[i].dict,
              rc ? -1 : a.ndim, rc ? err.msg : "");
        reed_array_free(&a);
    }
}

static void test_npy_roundtrip(void) {
    char path[512];
    tpath(path, sizeof path, "round.npy");
    float v[6] = {0.0f, -1.5f, 3.25f, 1e-30f, INFINITY, -0.0f};
    int64_t shapes[3][2] = {{2, 3}, {6, 0}, {0, 0}};
    int ndims[3] = {2, 1, 0};
    for (int s = 0; s < 3; s++) {
        reed_error err;
        reed_array a;
        int rc = npy_save(path, v, ndims[s], shapes[s], &err);
        size_t len = 0;
        uint8_t *bytes = rc == 0 ? read_bytes(path, &len) : NULL;
        size_t hdr_end = bytes ? 10 + (size_t)(bytes[8] | bytes[9] << 8) : 0;
        rc = rc ? rc : npy_load(path, &a, &err);
        int64_t want = s == 0 ? 6 : s == 1 ? 6 : 1;
        bool ok = rc == 0 && a.ndim == ndims[s] && a.size == want &&
                  same_floats(a.data, v, want) && hdr_end % 64 == 0 &&
                  bytes[6] == 1 && len == hdr_end + (size_t)want * 4;
        check(ok, "npy_save/npy_load round trip, ndim %d, %lld values, data "
              "at byte %zu%s%s", ndims[s], (long long)want, hdr_end,
              rc ? ": " : "", rc ? err.msg : "");
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        check(access(tmp, F_OK) != 0, "npy_save left no %s behind", tmp);
        free(bytes);
        if (rc == 0)
            reed_array_free(&a);
    }
}

static void npy_expect_fail(const char *name, int version, const char *dict,
                            size_t dlen, const char *needle, const char *what) {
    char path[512];
    uint8_t data[64] = {0};
    tpath(path, sizeof path, name);
    write_npy(path, version, dict, data, dlen);
    reed_array a;
    reed_error err;
    int rc = npy_load(path, &a, &err);
    expect_fail(rc, &err, path, needle, what);
    if (rc == 0)
        reed_array_free(&a);
    check(rc != 0 ? a.data == NULL : true, "%s leaves no data behind", what);
}

static void test_npy_errors(void) {
    const char *f4_2 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    npy_expect_fail("u2.npy", 1,
                    "{'descr': '<u2', 'fortran_order': False, 'shape': (2,), }",
                    4, "'<u2'", "npy dtype uint16");
    npy_expect_fail("c8.npy", 1,
                    "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }",
                    16, "'<c8'", "npy dtype complex64");
    npy_expect_fail("obj.npy", 1,
                    "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }",
                    16, "'|O'", "npy dtype object");
    npy_expect_fail("struct.npy", 1,
                    "{'descr': [('a', '<f4')], 'fortran_order': False, "
                    "'shape': (2,), }", 8, "structured", "npy structured dtype");
    npy_expect_fail("fortran.npy", 1,
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                    16, "fortran_order", "npy fortran_order True");
    npy_expect_fail("trunc.npy", 1, f4_2, 5,
                    "truncated: header says 8 bytes of data, file has 5",
                    "npy truncated data");
    npy_expect_fail("extra.npy", 1, f4_2, 12, "unexpected data",
                    "npy trailing data");
    npy_expect_fail("garbage1.npy", 1,
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 'x'), }",
                    8, "bad .npy header", "npy garbage shape");
    npy_expect_fail("garbage2.npy", 2, "{'descr' '<f4', 'fortran_order': False}",
                    8, "bad .npy header", "npy missing colon");
    npy_expect_fail("garbage3.npy", 3, "\x01\x02\x03 not a dict", 8,
                    "bad .npy header", "npy header not a dict");
    npy_expect_fail("garbage4.npy", 1, "{'descr': '<f4', 'shape': (2,), }", 8,
                    "missing 'fortran_order'", "npy header missing key");
    npy_expect_fail("garbage5.npy", 1,
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), "
                    "'extra': 1}", 8, "unexpected key", "npy header extra key");
    npy_expect_fail("neg.npy", 1,
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }",
                    8, "bad .npy header", "npy negative dimension");
    npy_expect_fail("huge.npy", 1,
                    "{'descr': '<f4', 'fortran_order': False, 'shape': "
                    "(4294967296, 4294967296, 4294967296), }", 8, "too large",
                    "npy shape overflow");
    npy_expect_fail("huge2.npy", 1,
                    "{'descr': '<f4', 'fortran_order': False, 'shape': "
                    "(99999999999999999999999,), }", 8, "too large",
                    "npy dimension overflow");
}

static void test_npy_bad_preamble(void) {
    char path[512];
    tpath(path, sizeof path, "pre.npy");
    reed_array a;
    reed_error err;
    size_t len;
    uint8_t *buf = build_npy(1, "{'descr': '<f4', 'fortran_order': False, "
                             "'shape': (2,), }", (const uint8_t *)"abcdefgh",
                             8, &len);
    buf[6] = 9;
    write_bytes(path, buf, len);
    expect_fail(npy_load(path, &a, &err), &err, path, "version 9",
                "npy format version 9");
    buf[6] = 1;
    put_le(buf + 8, 60000, 2);
    write_bytes(path, buf, len);
    expect_fail(npy_load(path, &a, &err), &err, path, "header length",
                "npy header length past the end");
    buf[0] = 'X';
    write_bytes(path, buf, len);
    expect_fail(npy_load(path, &a, &err), &err, path, "not a .npy file",
                "npy bad magic");
    write_bytes(path, buf, 3);
    expect_fail(npy_load(path, &a, &err), &err, path, "not a .npy file",
                "npy 3-byte file");
    free(buf);
    tpath(path, sizeof path, "missing.npy");
    expect_fail(npy_load(path, &a, &err), &err, path, "cannot open",
                "npy missing file");
}

/* Every truncation and many single-byte corruptions of a valid file must
 * load or fail cleanly (run under ASan to catch bad reads). */
static void test_npy_mutations(void) {
    char path[512];
    tpath(path, sizeof path, "mut.npy");
    uint8_t data[24] = {0};
    size_t len;
    uint8_t *good = build_npy(1, "{'descr': '<i4', 'fortran_order': False, "
                              "'shape': (2, 3), }", data, sizeof data, &len);
    int failed = 0, loaded = 0, bad_msg = 0;
    for (size_t cut = 0; cut <= len + 1; cut++) {
        for (int v = -1; v < 5; v++) {
            static const uint8_t vals[5] = {0, '(', ')', '\'', 0xff};
            uint8_t *m = malloc(len + 1);
            memcpy(m, good, len);
            size_t n = v < 0 ? (cut < len ? cut : len) : len;
            if (v >= 0 && cut < len)
                m[cut] = vals[v];
            write_bytes(path, m, n);
            free(m);
            reed_array a;
            reed_error err;
            if (npy_load(path, &a, &err) == 0) {
                loaded++;
                reed_array_free(&a);
            } else {
                failed++;
                bad_msg += strstr(err.msg, path) == NULL;
            }
        }
    }
    free(good);
    check(bad_msg == 0 && failed > 0, "npy truncations/corruptions: %d "
          "loaded, %d failed cleanly, %d messages without the path", loaded,
          failed, bad_msg);
}

/* ---- IDX ----------------------------------------------------------------- */

static void write_idx_gz(const char *path, const uint8_t *bytes, size_t len) {
    gzFile gz = gzopen(path, "wb");
    if (!gz || gzwrite(gz, bytes, (unsigned)len) != (int)len ||
        gzclose(gz) != Z_OK) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

static void test_idx_small(void) {
    uint8_t file[4 + 12 + 12] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3};
    for (int i = 0; i < 12; i++)
        file[16 + i] = (uint8_t)(i * 23);
    char path[512];
    for (int gz = 0; gz < 2; gz++) {
        tpath(path, sizeof path, gz ? "small.idx.gz" : "small.idx");
        if (gz)
            write_idx_gz(path, file, sizeof file);
        else
            write_bytes(path, file, sizeof file);
        reed_array a;
        reed_error err;
        int rc = idx_load(path, &a, &err);
        bool ok = rc == 0 && a.ndim == 3 && a.shape[0] == 2 &&
                  a.shape[1] == 2 && a.shape[2] == 3 && a.size == 12;
        for (int i = 0; ok && i < 12; i++)
            ok = a.data[i] == (float)(i * 23);
        check(ok, "idx %s (2,2,3) loads with the stored byte values%s%s",
              gz ? "gzip" : "plain", rc ? ": " : "", rc ? err.msg : "");
        if (rc == 0)
            reed_array_free(&a);
    }
}

static void idx_expect_fail(const char *name, const uint8_t *bytes,
                            size_t len, bool gz, const char *needle,
                            const char *what) {
    char path[512];
    tpath(path, sizeof path, name);
    if (gz)
        write_idx_gz(path, bytes, len);
    else
        write_bytes(path, bytes, len);
    reed_array a;
    reed_error err;
    int rc = idx_load(path, &a, &err);
    expect_fail(rc, &err, path, needle, what);
    if (rc == 0)
        reed_array_free(&a);
}

static void test_idx_errors(void) {
    const uint8_t zip[8] = {'P', 'K', 3, 4, 0, 0, 0, 0};
    idx_expect_fail("zip.idx", zip, sizeof zip, false,
                    "not an IDX file (magic 0x504b0304)", "idx wrong magic");
    const uint8_t f32[8] = {0, 0, 0x0d, 1, 0, 0, 0, 0};
    idx_expect_fail("float.idx", f32, sizeof f32, false, "data type 0x0d",
                    "idx float data type");
    const uint8_t trunc[4 + 4 + 5] = {0, 0, 8, 1, 0, 0, 0, 10, 1, 2, 3, 4, 5};
    idx_expect_fail("trunc.idx", trunc, sizeof trunc, false,
                    "truncated: header says 10 bytes of data, file has 5",
                    "idx truncated data");
    idx_expect_fail("trunc.idx.gz", trunc, sizeof trunc, true,
                    "truncated: header says 10 bytes of data, file has 5",
                    "idx.gz truncated data");
    idx_expect_fail("dims.idx", trunc, 6, false, "ends inside the dimensions",
                    "idx truncated dimensions");
    idx_expect_fail("short.idx", trunc, 2, false, "not an IDX file",
                    "idx 2-byte file");
    const uint8_t extra[4 + 4 + 3] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3};
    idx_expect_fail("extra.idx", extra, sizeof extra, false, "unexpected data",
                    "idx trailing data");
    const uint8_t nd0[4] = {0, 0, 8, 0};
    idx_expect_fail("nd0.idx", nd0, sizeof nd0, false, "0 dimensions",
                    "idx zero dimensions");
    const uint8_t huge[4 + 12] = {0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    idx_expect_fail("huge.idx", huge, sizeof huge, false, "too large",
                    "idx shape overflow");
    const uint8_t big[4 + 8] = {0, 0, 8, 2, 0, 1, 0, 0, 0, 1, 0, 0};
    idx_expect_fail("big.idx", big, sizeof big, false,
                    "header says 4294967296 bytes of data, file has 0",
                    "idx 4 GiB claimed, nothing stored");
    char path[512];
    tpath(path, sizeof path, "nope.idx");
    reed_array a;
    reed_error err;
    expect_fail(idx_load(path, &a, &err), &err, path, "cannot open",
                "idx missing file");
}

/* A gzip file cut in half: an error, whatever zlib calls it. */
static void test_idx_cut_gzip(void) {
    uint8_t file[8 + 4000] = {0, 0, 8, 1, 0, 0, 0x0f, 0xa0};
    for (int i = 0; i < 4000; i++)
        file[8 + i] = (uint8_t)((i * 2654435761u) >> 24);
    char path[512];
    tpath(path, sizeof path, "cut.idx.gz");
    write_idx_gz(path, file, sizeof file);
    size_t len;
    uint8_t *gz = read_bytes(path, &len);
    write_bytes(path, gz, len / 2);
    free(gz);
    reed_array a;
    reed_error err;
    int rc = idx_load(path, &a, &err);
    expect_fail(rc, &err, path, NULL, "idx.gz cut in half");
    if (rc == 0)
        reed_array_free(&a);
}

static void test_idx_fashion_file(const char *dir, const char *name,
                                  int64_t n, bool images) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    reed_array a;
    reed_error err;
    if (idx_load(path, &a, &err) != 0) {
        check(false, "fashion-mnist %s: %s", name, err.msg);
        return;
    }
    bool shape_ok = images ? a.ndim == 3 && a.shape[0] == n &&
                                 a.shape[1] == 28 && a.shape[2] == 28
                           : a.ndim == 1 && a.shape[0] == n;
    int64_t counts[10] = {0}, out_of_range = 0;
    float lo = 255, hi = 0;
    for (int64_t i = 0; i < a.size; i++) {
        float v = a.data[i];
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
        if (!images && v >= 0 && v <= 9 && v == floorf(v))
            counts[(int)v]++;
        else if (!images)
            out_of_range++;
    }
    check(shape_ok, "fashion-mnist %s: ndim %d shape (%lld%s) values "
          "%g..%g", name, a.ndim, (long long)a.shape[0],
          images ? ", 28, 28" : "", lo, hi);
    if (!images) {
        bool balanced = true;
        for (int c = 0; c < 10; c++)
            balanced = balanced && counts[c] == n / 10;
        check(out_of_range == 0 && balanced, "fashion-mnist %s: labels all "
              "in 0..9, %lld per class", name, (long long)counts[0]);
    } else {
        check(lo == 0 && hi == 255, "fashion-mnist %s: pixels span 0..255",
              name);
    }
    reed_array_free(&a);
}

static void test_idx_fashion(void) {
    const char *dir = "/usr/share/datasets/fashion-mnist";
    struct stat st;
    if (stat(dir, &st) != 0) { /* a dependency of the project, not optional */
        check(0, "fashion-mnist: %s not found (scripts/install-deps.sh installs it)", dir);
        return;
    }
    test_idx_fashion_file(dir, "train-images-idx3-ubyte.gz", 60000, true);
    test_idx_fashion_file(dir, "train-labels-idx1-ubyte.gz", 60000, false);
    test_idx_fashion_file(dir, "t10k-images-idx3-ubyte.gz", 10000, true);
    test_idx_fashion_file(dir, "t10k-labels-idx1-ubyte.gz", 10000, false);
}

/* ---- safetensors ------------------------------------------------------- */

/* The file that --write-st writes and the round trip reads. */
static const float st_weight[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
static const float st_bias[3] = {0.25f, -0.5f, 1e-3f};
static const float st_scalar[1] = {42.0f};
static const st_meta st_known_meta[] = {
    {"step", "100"},
    {"note", "quote \" backslash \\ newline \n tab \t ctrl \x01 utf8 \xc3\xa9 "
             "\xe2\x9c\x93"},
};

static int write_known_st(const char *path, reed_error *err) {
    st_tensor t[4] = {
        {"weight", 2, {2, 3}, st_weight},
        {"bias", 1, {3}, st_bias},
        {"scalar", 0, {0}, st_scalar},
        {"empty", 2, {0, 4}, NULL},
    };
    return st_write(path, t, 4, st_known_meta, 2, err);
}

static bool tensor_is(const st_tensor *t, const char *name, int ndim,
                      const int64_t *shape, const float *data, int64_t n) {
    if (!t || strcmp(t->name, name) != 0 || t->ndim != ndim || !t->data)
        return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i])
            return false;
    return same_floats(t->data, data, n);
}

static void test_st_roundtrip(void) {
    char path[512];
    tpath(path, sizeof path, "known.safetensors");
    reed_error err;
    int rc = write_known_st(path, &err);
    check(rc == 0, "st_write 4 tensors + 2 metadata%s%s", rc ? ": " : "",
          rc ? err.msg : "");
    size_t len;
    uint8_t *bytes = read_bytes(path, &len);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)bytes[i] << (8 * i);
    check(hlen % 8 == 0 && len == 8 + hlen + 40 &&
              memcmp(bytes + 8, "{\"__metadata__\":{", 17) == 0,
          "st header: %llu bytes (multiple of 8), __metadata__ first, data "
          "packed (%zu bytes total)", (unsigned long long)hlen, len);
    free(bytes);
    st_file *f = st_open(path, &err);
    check(f != NULL, "st_open of the written file%s%s", f ? "" : ": ",
          f ? "" : err.msg);
    if (!f)
        return;
    static const int64_t s_w[2] = {2, 3}, s_b[1] = {3}, s_e[2] = {0, 4};
    check(st_count(f) == 4 &&
              tensor_is(st_at(f, 0), "weight", 2, s_w, st_weight, 6) &&
              tensor_is(st_at(f, 1), "bias", 1, s_b, st_bias, 3) &&
              tensor_is(st_at(f, 2), "scalar", 0, NULL, st_scalar, 1) &&
              tensor_is(st_at(f, 3), "empty", 2, s_e, NULL, 0),
          "st tensors in order with exact shapes and values");
    check(st_find(f, "bias") == st_at(f, 1) && !st_find(f, "nope") &&
              !st_at(f, 4) && !st_at(f, -1),
          "st_find / st_at bounds");
    const char *note = st_meta_get(f, "note");
    check(note && strcmp(note, st_known_meta[1].value) == 0 &&
              strcmp(st_meta_get(f, "step"), "100") == 0 &&
              !st_meta_get(f, "missing") && strcmp(st_path(f), path) == 0,
          "st metadata with escapes and UTF-8 survives; st_path");
    st_close(f);
}

/* Writes u64 header length, header, data. */
static void write_st_raw(const char *path, const char *header,
                         const uint8_t *data, size_t dlen) {
    size_t hlen = strlen(header);
    uint8_t *buf = malloc(8 + hlen + dlen + 1);
    put_le(buf, hlen, 8);
    memcpy(buf + 8, header, hlen);
    if (dlen)
        memcpy(buf + 8 + hlen, data, dlen);
    write_bytes(path, buf, 8 + hlen + dlen);
    free(buf);
}

static void test_st_half(void) {
    char path[512];
    tpath(path, sizeof path, "half.safetensors");
    uint8_t data[14];
    const uint16_t f16[3] = {0x3c00, 0xc100, 0x0400}; /* 1, -2.5, 2^-14 */
    const uint16_t bf16[4] = {0x3f80, 0xc020, 0x4049, 0x7f80}; /* 1,-2.5,~pi,inf */
    for (int i = 0; i < 3; i++)
        put_le(data + 2 * i, f16[i], 2);
    for (int i = 0; i < 4; i++)
        put_le(data + 6 + 2 * i, bf16[i], 2);
    write_st_raw(path,
                 "{\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                 " \"b\" : {\"data_offsets\":[6,14],\"shape\":[2,2],"
                 "\"dtype\":\"BF16\",\"extra\":[1,{\"x\":null}]}}  ",
                 data, sizeof data);
    reed_error err;
    st_file *f = st_open(path, &err);
    const float want_h[3] = {1.0f, -2.5f, 6.1035156e-05f};
    const float want_b[4] = {1.0f, -2.5f, 3.140625f, INFINITY};
    static const int64_t s_h[1] = {3}, s_b[2] = {2, 2};
    check(f && tensor_is(st_find(f, "h"), "h", 1, s_h, want_h, 3) &&
              tensor_is(st_find(f, "b"), "b", 2, s_b, want_b, 4),
          "st F16 and BF16 tensors convert to float32 (unknown fields "
          "skipped)%s%s", f ? "" : ": ", f ? "" : err.msg);
    st_close(f);
}

static void st_expect_fail(const char *header, const uint8_t *data,
                           size_t dlen, const char *needle, const char *what) {
    char path[512];
    tpath(path, sizeof path, "bad.safetensors");
    write_st_raw(path, header, data, dlen);
    reed_error err;
    st_file *f = st_open(path, &err);
    expect_fail(f ? 0 : -1, &err, path, needle, what);
    st_close(f);
}

static void test_st_errors(void) {
    uint8_t z[64] = {0};
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[100],"
                   "\"data_offsets\":[0,400]}}", z, 8, "past the end",
                   "st offsets beyond the data");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                   z, 16, "overlap", "st overlapping tensors");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                   z, 16, "span 8 bytes but shape and dtype need 12",
                   "st offsets short for the shape");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}",
                   z, 16, "end before begin", "st offsets reversed");
    st_expect_fail("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                   z, 8, "unsupported dtype 'F64'", "st dtype F64");
    st_expect_fail("{\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                   z, 8, "unsupported dtype 'I32'", "st dtype I32");
    st_expect_fail("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}",
                   z, 8, "expected a string", "st dtype not a string");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                   z, 8, "duplicate tensor name 'a'", "st duplicate names");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
                   z, 8, "non-negative integer", "st negative dimension");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
                   z, 8, "non-negative integer", "st fractional dimension");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],"
                   "\"data_offsets\":[0,4]}}", z, 8, "too large",
                   "st dimension overflow");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                   "\"data_offsets\":[0,0]}}", z, 8, "shape too large",
                   "st element count overflow");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                   "\"data_offsets\":[0,4]}}", z, 8, "more than 8 dimensions",
                   "st too many dimensions");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
                   z, 8, "2 entries", "st three data offsets");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
                   z, 8, "2 entries", "st one data offset");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", z, 8,
                   "lacks 'data_offsets'", "st missing data_offsets");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\"}}", z, 8,
                   "duplicate 'dtype'", "st duplicate field");
    st_expect_fail("{\"a\":[1,2]}", z, 8, "must be an object",
                   "st tensor entry not an object");
    st_expect_fail("{\"__metadata__\":{\"k\":1}}", z, 0, "must be a string",
                   "st metadata value not a string");
    st_expect_fail("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", z, 0,
                   "duplicate metadata key", "st duplicate metadata key");
    st_expect_fail("{} x", z, 0, "after the header", "st trailing garbage");
    st_expect_fail("[]", z, 0, "JSON object", "st header is an array");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}",
                   z, 8, "expected ',' or '}'", "st unterminated object");
    st_expect_fail("{\"a\\q\":{}}", z, 0, "bad escape", "st bad escape");
    st_expect_fail("{\"\\ud800x\":{}}", z, 0, "surrogate",
                   "st unpaired surrogate");
    st_expect_fail("{\"a\nb\":{}}", z, 0, "control character",
                   "st raw newline in a string");
    st_expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}",
                   z, 8, "leading zero", "st number with a leading zero");
}

/* Escapes in names decode to UTF-8 (\u00e9 and a surrogate pair). */
static void test_st_escapes(void) {
    char path[512];
    tpath(path, sizeof path, "esc.safetensors");
    uint8_t data[4];
    put_le(data, f32_bits(2.0f), 4);
    write_st_raw(path, "{\"caf\\u00e9\\ud83d\\ude00\\n\\\"\":{\"dtype\":\"F32\","
                 "\"shape\":[],\"data_offsets\":[0,4]}}", data, 4);
    reed_error err;
    st_file *f = st_open(path, &err);
    const st_tensor *t = f ? st_at(f, 0) : NULL;
    check(t && strcmp(t->name, "caf\xc3\xa9\xf0\x9f\x98\x80\n\"") == 0 &&
              t->ndim == 0 && t->data[0] == 2.0f,
          "st name escapes decode to UTF-8%s%s", f ? "" : ": ",
          f ? "" : err.msg);
    st_close(f);
}

/* Deep nesting in an unknown field must not blow the stack. */
static void test_st_deep(void) {
    size_t depth = 100000;
    char *h = malloc(2 * depth + 64);
    size_t n = (size_t)sprintf(h, "{\"a\":{\"x\":");
    memset(h + n, '[', depth);
    memset(h + n + depth, ']', depth);
    strcpy(h + n + 2 * depth, "}}");
    st_expect_fail(h, NULL, 0, "nesting deeper", "st 100000-deep nesting");
    free(h);
}

static void test_st_file_level(void) {
    char path[512];
    tpath(path, sizeof path, "known.safetensors");
    size_t len;
    uint8_t *good = read_bytes(path, &len);
    reed_error err;
    st_file *f;
    tpath(path, sizeof path, "cut.safetensors");
    write_bytes(path, good, len - 4);
    f = st_open(path, &err);
    expect_fail(f ? 0 : -1, &err, path, "past the end", "st truncated data");
    st_close(f);
    write_bytes(path, good, 5);
    f = st_open(path, &err);
    expect_fail(f ? 0 : -1, &err, path, "truncated", "st 5-byte file");
    st_close(f);
    write_bytes(path, good, 40);
    f = st_open(path, &err);
    expect_fail(f ? 0 : -1, &err, path, "larger than the file",
                "st truncated header");
    st_close(f);
    uint8_t big[16];
    memcpy(big, good, 16);
    put_le(big, UINT64_MAX, 8);
    write_bytes(path, big, 16);
    f = st_open(path, &err);
    expect_fail(f ? 0 : -1, &err, path, "header size 18446744073709551615",
                "st header size 2^64-1");
    st_close(f);
    uint8_t junk[256];
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 24);
    write_bytes(path, junk, sizeof junk);
    f = st_open(path, &err);
    expect_fail(f ? 0 : -1, &err, path, NULL, "st random garbage bytes");
    st_close(f);
    put_le(junk, 200, 8);
    write_bytes(path, junk, sizeof junk);
    f = st_open(path, &err);
    expect_fail(f ? 0 : -1, &err, path, "bad safetensors header",
                "st garbage header with a sane size");
    st_close(f);
    free(good);
}

/* Every truncation and single-byte corruptions of the known file load or
 * fail cleanly. */
static void test_st_mutations(const char *seed) {
    char path[512];
    tpath(path, sizeof path, seed);
    size_t len;
    uint8_t *good = read_bytes(path, &len);
    tpath(path, sizeof path, "mut.safetensors");
    static const uint8_t vals[] = {0, '"', '\\', '{', '}', '[', ']', ',', ':',
                                   '9', '-', 0xff};
    int loaded = 0, failed = 0, bad_msg = 0;
    uint8_t *m = malloc(len);
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t v = 0; v <= sizeof vals; v++) {
            memcpy(m, good, len);
            size_t n = v == sizeof vals ? pos : len;
            if (v < sizeof vals)
                m[pos] = vals[v];
            write_bytes(path, m, n);
            reed_error err;
            st_file *f = st_open(path, &err);
            if (f) {
                loaded++;
                for (int i = 0; i < st_count(f); i++)
                    (void)st_at(f, i)->name[0];
                st_close(f);
            } else {
                failed++;
                bad_msg += strstr(err.msg, path) == NULL;
            }
        }
    }
    free(m);
    free(good);
    check(bad_msg == 0 && failed > 0, "st truncations/corruptions of %s: %d "
          "loaded, %d failed cleanly, %d messages without the path", seed,
          loaded, failed, bad_msg);
}

static void test_st_write_errors(void) {
    char path[512];
    tpath(path, sizeof path, "werr.safetensors");
    reed_error err;
    float v[2] = {1, 2};
    st_tensor dup[2] = {{"a", 1, {1}, v}, {"a", 1, {1}, v + 1}};
    expect_fail(st_write(path, dup, 2, NULL, 0, &err), &err, path,
                "duplicate", "st_write duplicate names");
    st_tensor neg[1] = {{"a", 1, {-1}, v}};
    expect_fail(st_write(path, neg, 1, NULL, 0, &err), &err, path,
                "negative", "st_write negative dimension");
    st_meta bad[1] = {{"k", "\xff\xfe"}};
    expect_fail(st_write(path, neg, 0, bad, 1, &err), &err, path, "UTF-8",
                "st_write invalid UTF-8 metadata");
    check(access(path, F_OK) != 0, "failed st_write created no file");
    int rc = st_write(path, NULL, 0, NULL, 0, &err);
    st_file *f = rc == 0 ? st_open(path, &err) : NULL;
    check(f && st_count(f) == 0, "st_write/st_open with no tensors");
    st_close(f);
}

/* ---- PNG ------------------------------------------------------------------- */

/* Finds "tEXt" + key NUL value in the file bytes and checks its CRC and
 * that it comes before IEND. */
static bool find_text_chunk(const uint8_t *b, size_t len, const char *key,
                            const char *value) {
    size_t klen = strlen(key), vlen = strlen(value);
    for (size_t i = 4; i + 8 + klen + 1 + vlen + 4 <= len; i++) {
        if (memcmp(b + i, "tEXt", 4) != 0 || memcmp(b + i + 4, key, klen + 1))
            continue;
        uint32_t clen = (uint32_t)b[i - 4] << 24 | (uint32_t)b[i - 3] << 16 |
                        (uint32_t)b[i - 2] << 8 | b[i - 1];
        if (clen != klen + 1 + vlen || memcmp(b + i + 4 + klen + 1, value, vlen))
            continue;
        const uint8_t *c = b + i + 4 + clen;
        uint32_t crc = (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 |
                       (uint32_t)c[2] << 8 | c[3];
        bool crc_ok = crc == (uint32_t)crc32(crc32(0, Z_NULL, 0), b + i,
                                             4 + clen);
        bool before_iend = memcmp(b + len - 8, "IEND", 4) == 0 && i < len - 8;
        return crc_ok && before_iend;
    }
    return false;
}

static void test_png_one(int w, int h, int channels) {
    char path[512];
    tpath(path, sizeof path, channels == 1 ? "grey.png" : "rgb.png");
    size_t n = (size_t)w * (size_t)h * (size_t)channels;
    uint8_t *px = malloc(n);
    for (size_t i = 0; i < n; i++)
        px[i] = (uint8_t)(i * 37 + 11);
    const st_meta text[2] = {{"Software", "REED Workbench"},
                             {"Comment", "step 100; loss 0.5"}};
    reed_error err;
    int rc = png_write(path, px, w, h, channels, text, 2, &err);
    check(rc == 0, "png_write %dx%d %s%s%s", w, h, channels == 1 ? "grey" : "RGB",
          rc ? ": " : "", rc ? err.msg : "");
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    bool ok = png_image_begin_read_from_file(&img, path);
    uint8_t *back = malloc(n);
    if (ok) {
        img.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
        ok = img.width == (png_uint_32)w && img.height == (png_uint_32)h &&
             png_image_finish_read(&img, NULL, back, 0, NULL);
    }
    check(ok && memcmp(px, back, n) == 0,
          "libpng reads it back with identical pixels%s%s", ok ? "" : ": ",
          ok ? "" : img.message);
    png_image_free(&img);
    size_t len;
    uint8_t *bytes = read_bytes(path, &len);
    check(find_text_chunk(bytes, len, "Software", "REED Workbench") &&
              find_text_chunk(bytes, len, "Comment", "step 100; loss 0.5"),
          "tEXt chunks present before IEND with valid CRCs");
    free(bytes);
    free(back);
    free(px);
}

static void test_png_errors(void) {
    char path[512];
    tpath(path, sizeof path, "bad.png");
    uint8_t px[12] = {0};
    reed_error err;
    const st_meta bad_key[1] = {{" lead", "x"}};
    expect_fail(png_write(path, px, 2, 2, 1, bad_key, 1, &err), &err, path,
                "keyword", "png bad tEXt keyword");
    expect_fail(png_write(path, px, 2, 2, 2, NULL, 0, &err), &err, path,
                "channels", "png 2 channels");
    expect_fail(png_write(path, px, 0, 2, 1, NULL, 0, &err), &err, path,
                "size", "png zero width");
    tpath(path, sizeof path, "no/such/dir.png");
    expect_fail(png_write(path, px, 2, 2, 1, NULL, 0, &err), &err, path,
                "cannot create", "png into a missing directory");
}

/* ---- helper modes for the Python cross-check ---------------------------- */

static void print_array(const char *prefix, int ndim, const int64_t *shape,
                        const float *data) {
    int64_t n = 1;
    printf("%s\t", prefix);
    for (int i = 0; i < ndim; i++) {
        printf("%s%lld", i ? "," : "", (long long)shape[i]);
        n *= shape[i];
    }
    double sum = 0, wsum = 0;
    for (int64_t i = 0; i < n; i++) {
        sum += data[i];
        wsum += (double)data[i] * (double)(i + 1);
    }
    printf("\t%.17g\t%.17g\n", sum, wsum);
}

static int mode_read_st(int argc, char **argv) {
    reed_error err;
    st_file *f = st_open(argv[2], &err);
    if (!f) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        char prefix[600];
        snprintf(prefix, sizeof prefix, "tensor\t%s", t->name);
        print_array(prefix, t->ndim, t->shape, t->data);
    }
    for (int i = 3; i < argc; i++) {
        const char *v = st_meta_get(f, argv[i]);
        printf("meta\t%s\t", argv[i]);
        for (const char *c = v; c && *c; c++)
            printf("%02x", (unsigned char)*c);
        printf("%s\n", v ? "" : "NULL");
    }
    st_close(f);
    return 0;
}

static int mode_read_npy(const char *path) {
    reed_array a;
    reed_error err;
    if (npy_load(path, &a, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    print_array("npy", a.ndim, a.shape, a.data);
    reed_array_free(&a);
    return 0;
}

/* Writes DIR/m.npy (2,3), DIR/s.npy (scalar) and DIR/e.npy (0,5). */
static int mode_write_npy(const char *dir) {
    static const float m[6] = {-1.5f, 0.0f, 2.25f, 1e-20f, 3e20f, -0.0f};
    static const float sc[1] = {7.5f};
    static const int64_t s_m[2] = {2, 3}, s_e[2] = {0, 5};
    static const struct {
        const char *name;
        const float *data;
        int ndim;
        const int64_t *shape;
    } files[3] = {{"m.npy", m, 2, s_m}, {"s.npy", sc, 0, NULL},
                  {"e.npy", NULL, 2, s_e}};
    for (int i = 0; i < 3; i++) {
        char path[600];
        reed_error err;
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        if (npy_save(path, files[i].data, files[i].ndim, files[i].shape,
                     &err) != 0) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
    }
    return 0;
}

static int helper_mode(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--write-st") == 0) {
        reed_error err;
        if (write_known_st(argv[2], &err) != 0) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "--read-st") == 0)
        return mode_read_st(argc, argv);
    if (argc == 3 && strcmp(argv[1], "--read-npy") == 0)
        return mode_read_npy(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--write-npy") == 0)
        return mode_write_npy(argv[2]);
    fprintf(stderr, "usage: %s [--write-st PATH | --read-st PATH [KEY...] | "
            "--read-npy PATH | --write-npy DIR]\n", argv[0]);
    return 2;
}

/* ---- main ---------------------------------------------------------------- */

static void remove_tmp_dir(void) {
    DIR *d = opendir(tmp_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[600];
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", tmp_dir, e->d_name);
            unlink(path);
        }
    }
    if (d)
        closedir(d);
    rmdir(tmp_dir);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1)
        return helper_mode(argc, argv);
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/reed_formats_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 2;
    }
    for (size_t i = 0; i < sizeof npy_cases / sizeof npy_cases[0]; i++)
        for (int version = 1; version <= 3; version++)
            test_npy_dtype(&npy_cases[i], version);
    test_npy_header_forms();
    test_npy_roundtrip();
    test_npy_errors();
    test_npy_bad_preamble();
    test_npy_mutations();
    test_idx_small();
    test_idx_errors();
    test_idx_cut_gzip();
    test_idx_fashion();
    test_st_roundtrip();
    test_st_half();
    test_st_errors();
    test_st_escapes();
    test_st_deep();
    test_st_file_level();
    test_st_mutations("known.safetensors");
    test_st_mutations("half.safetensors");
    test_st_write_errors();
    test_png_one(5, 3, 1);
    test_png_one(4, 7, 3);
    test_png_errors();
    remove_tmp_dir();
    printf("%d passed, %d failed\n", (checks - failures), failures);
    return failures ? 1 : 0;
}
