/* File formats: NumPy .npy, IDX(.gz), safetensors, PNG.
 * Every reader validates what it reads and reports bad input through
 * reed_error with the file name and the problem; none of them crash or
 * exit on malformed files. */
#ifndef REED_FORMATS_H
#define REED_FORMATS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

enum { REED_MAX_DIMS = 8 };

/* An n-dimensional float32 array owned by the caller (free with
 * reed_array_free). Readers convert their stored dtype to float32. */
typedef struct reed_array {
    int ndim;
    int64_t shape[REED_MAX_DIMS];
    int64_t size;   /* product of shape */
    float *data;
} reed_array;

void reed_array_free(reed_array *a);

/* --- .npy ---------------------------------------------------------------
 * Format versions 1, 2 and 3; dtypes float32, float16, uint8, int32, int64
 * in either byte order; C order only (fortran_order True is an error). */
int npy_load(const char *path, reed_array *out, reed_error *err);
/* Writes a float32 C-order .npy (version 1). */
int npy_save(const char *path, const float *data, int ndim,
             const int64_t *shape, reed_error *err);

/* --- IDX (MNIST-style) ---------------------------------------------------
 * Plain or gzip-compressed (zlib's gzread reads both). Unsigned-byte data
 * only (magic 0x00000803 images, 0x00000801 labels, any ndim). Values are
 * converted to float as stored (0..255). */
int idx_load(const char *path, reed_array *out, reed_error *err);

/* --- safetensors -----------------------------------------------------------
 * https://github.com/huggingface/safetensors: u64 little-endian header size,
 * a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str:
 * str}}, then the data. We write F32; we read F32, F16 and BF16 (converted
 * to float32). */
typedef struct st_tensor {
    const char *name;
    int ndim;
    int64_t shape[REED_MAX_DIMS];
    const float *data;   /* float32, size = product of shape */
} st_tensor;

typedef struct st_meta {
    const char *key;
    const char *value;
} st_meta;

/* Writes atomically: PATH.tmp, fsync, rename over PATH, fsync the directory.
 * Tensors are written in the given order; metadata may be NULL/0. */
int st_write(const char *path, const st_tensor *tensors, int n_tensors,
             const st_meta *meta, int n_meta, reed_error *err);

typedef struct st_file st_file; /* an opened, validated safetensors file */

/* Reads and validates the whole file (header JSON, dtypes, shapes, offsets
 * inside the file and non-overlapping). NULL on error. */
st_file *st_open(const char *path, reed_error *err);
void st_close(st_file *f);
int st_count(const st_file *f);
/* The i-th tensor in header order, or the tensor named `name` (NULL if
 * absent). Returned data stays valid until st_close. */
const st_tensor *st_at(const st_file *f, int i);
const st_tensor *st_find(const st_file *f, const char *name);
/* A metadata value, or NULL. */
const char *st_meta_get(const st_file *f, const char *key);
const char *st_path(const st_file *f);

/* --- PNG ---------------------------------------------------------------------
 * 8-bit grey (channels 1) or RGB (channels 3), rows top to bottom, written
 * with libpng's simplified API; the text pairs go into tEXt chunks placed
 * before IEND. Written atomically like checkpoints. */
int png_write(const char *path, const uint8_t *pixels, int width, int height,
              int channels, const st_meta *text, int n_text, reed_error *err);

/* --- small helpers shared by the writers --------------------------------- */
/* Writes len bytes to PATH.tmp, fsyncs, renames over PATH. */
/* A shipped file (e.g. "assets/teacher.safetensors"): $REED_SRC/REL when
 * REED_SRC is set, else ./REL, else next to the executable (<exe dir>/../REL,
 * <exe dir>/../../REL); REL itself when none exists. */
void reed_asset_path(const char *rel, char *out, size_t cap);

int write_file_atomic(const char *path, const void *data, size_t len,
                      reed_error *err);
/* Reads a whole regular file into a malloc'd buffer (*data, *len); the
 * caller frees *data. An empty file gives a non-NULL buffer and len 0. */
int read_file_all(const char *path, uint8_t **data, size_t *len,
                  reed_error *err);
/* IEEE 754 half precision / bfloat16 bit patterns to float. */
float reed_f16_to_f32(uint16_t h);
float reed_bf16_to_f32(uint16_t h);

#endif
