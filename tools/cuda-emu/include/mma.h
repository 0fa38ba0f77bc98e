/* The emulator's nvcuda::wmma, 16×16×16 tiles only (bf16 or fp32 operands,
 * fp32 accumulators). A fragment holds the whole tile as float in logical
 * row-major order (a: M×K, b: K×N, accumulator: M×N), so num_elements is
 * 256 and per-element loops over a fragment stay correct. Each element of
 * an accumulator belongs to one lane (element e to lane e % 32): mma_sync
 * computes, and store_matrix_sync writes, only the lane's own elements, so
 * reading a stored tile from another lane without __syncwarp in between
 * reads stale data, as it may on a GPU. Loads read the whole tile. Pointers
 * must be 32-byte aligned and ldm a multiple of 16 bytes, as CUDA asks. */
#pragma once
#include <stdio.h>
#include <stdlib.h>

#include <type_traits>

#include "cuda_bf16.h"
#include "emu.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulator has 16x16x16 tiles only");
    enum { num_elements = 256 };
    float x[num_elements];
};

inline float emu_elem(float v) { return v; }
inline float emu_elem(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> inline void emu_check_tile(const T *p, unsigned ldm, const char *what)
{
    if ((uintptr_t)p % 32 || (ldm * sizeof(T)) % 16) {
        fprintf(stderr, "emu: wmma %s: pointer %p (must be 32-byte aligned), ldm %u (must be a multiple of %zu)\n",
                what, (const void *)p, ldm, 16 / sizeof(T));
        abort();
    }
}

/* Element (r, c) of a tile stored at p with leading dimension ldm. */
template <class T> inline float emu_at(const T *p, unsigned ldm, int r, int c, bool col)
{
    return emu_elem(col ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c]);
}

template <class Use, class T, class L>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm)
{
    emu_check_tile(p, ldm, "load_matrix_sync");
    const bool col = std::is_same<L, col_major>::value;
    for (int e = 0; e < 256; e++)
        f.x[e] = emu_at(p, ldm, e / 16, e % 16, col);
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm,
                             layout_t layout)
{
    emu_check_tile(p, ldm, "load_matrix_sync");
    for (int e = 0; e < 256; e++)
        f.x[e] = emu_at(p, ldm, e / 16, e % 16, layout == mem_col_major);
}

inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm,
                              layout_t layout)
{
    emu_check_tile(p, ldm, "store_matrix_sync");
    for (int e = (int)emu_lane(); e < 256; e += 32) {
        const int r = e / 16, c = e % 16;
        (layout == mem_col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c]) = f.x[e];
    }
}

template <class Use, class T, class L> inline void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, float v)
{
    for (int e = 0; e < 256; e++)
        f.x[e] = v;
}

/* d = a·b + c on this lane's elements (d may be c). */
template <class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const fragment<matrix_a, 16, 16, 16, T, LA> &a,
                     const fragment<matrix_b, 16, 16, 16, T, LB> &b,
                     const fragment<accumulator, 16, 16, 16, float> &c)
{
    for (int e = (int)emu_lane(); e < 256; e += 32) {
        const int r = e / 16, col = e % 16;
        float s = 0.0f;
        for (int k = 0; k < 16; k++)
            s += a.x[r * 16 + k] * b.x[k * 16 + col];
        d.x[e] = s + c.x[e];
    }
}

} // namespace wmma
} // namespace nvcuda
