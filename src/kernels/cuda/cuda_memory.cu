/* Device memory of the CUDA backend: plain cudaMalloc, in arenas.
 *
 * Memory comes from the device in slabs (SLAB_MIN bytes, or one slab of its
 * own for a bigger request) and is handed out as 256-byte-aligned blocks by
 * best fit; mem_free returns a block to the free list, merged with free
 * neighbours of the same slab. Every op runs on the backend's one stream, so
 * a freed block may be handed out again at once: its next user (the zeroing
 * memset first) is queued on the stream after every op that used it before.
 * Slabs go back to the device only when a cudaMalloc fails: then every
 * wholly free slab is released and the cudaMalloc tried once more. When
 * that fails too, the bf16 views (a cache, cuda_view.cu) are given back and
 * the whole allocation tried again. Freeing a block drops the views of the
 * buffers in it.
 *
 * REED_CUDA_ARENA=0 gives every block a cudaMalloc of its own, freed at
 * mem_free (for memory checkers, which see a slab as one allocation).
 * The op table's mem_reserve hands out big buffers backed on first use
 * instead (cuda_lazy.cu), where the driver allows.
 * The byte count (mem_used) is what callers asked for, not slab sizes,
 * plus the memory mapped to those buffers. */
#include <stdint.h>
#include <stdlib.h>

#include <atomic>
#include <iterator>
#include <map>
#include <mutex>

#include "cuda_internal.h"

#define BLOCK_ALIGN ((size_t)256)
#define SLAB_MIN ((size_t)64 << 20)

typedef struct block {
    size_t size;      /* bytes of the block (a multiple of BLOCK_ALIGN) */
    size_t requested; /* bytes asked for; 0 while free */
    char *slab;       /* base of the slab it belongs to */
    bool free;
} block;

static struct {
    std::mutex lock;
    int use_arena = -1;                      /* -1: not read yet */
    std::map<char *, block> blocks;          /* every block, by address */
    std::multimap<size_t, char *> free_list; /* free blocks, by size */
    std::map<char *, size_t> slabs;          /* base → bytes */
    std::atomic<size_t> used{0};
} mem;

static void free_list_remove(char *addr, size_t size)
{
    auto range = mem.free_list.equal_range(size);
    for (auto it = range.first; it != range.second; ++it)
        if (it->second == addr) {
            mem.free_list.erase(it);
            return;
        }
}

static void add_free(char *addr, size_t size, char *slab)
{
    mem.blocks[addr] = block{size, 0, slab, true};
    mem.free_list.emplace(size, addr);
}

/* cudaMalloc, or NULL when the device is out of memory (a sticky error
 * stays fatal). */
static char *device_malloc(size_t bytes)
{
    char *p = NULL;
    cudaError_t e = cudaMalloc((void **)&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); // not sticky: clear it
        return NULL;
    }
    CUDA_CHECK(e);
    return p;
}

/* Gives every slab with nothing allocated back to the device. */
static void release_free_slabs(void)
{
    for (auto it = mem.slabs.begin(); it != mem.slabs.end();) {
        auto b = mem.blocks.find(it->first);
        if (b->second.free && b->second.size == it->second) {
            free_list_remove(b->first, b->second.size);
            mem.blocks.erase(b);
            CUDA_CHECK(cudaFree(it->first));
            it = mem.slabs.erase(it);
        } else {
            ++it;
        }
    }
}

/* A new slab holding at least size bytes, as one free block. */
static int add_slab(size_t size)
{
    const size_t bytes = size > SLAB_MIN ? size : SLAB_MIN;
    char *base = device_malloc(bytes);
    if (!base) {
        release_free_slabs();
        base = device_malloc(bytes);
    }
    if (!base)
        return -1;
    mem.slabs[base] = bytes;
    add_free(base, bytes, base);
    return 0;
}

/* The best-fitting free block of at least size bytes, split so that the
 * rest stays free; NULL when none is free. */
static char *take_block(size_t size, size_t requested)
{
    auto fit = mem.free_list.lower_bound(size);
    if (fit == mem.free_list.end())
        return NULL;
    char *addr = fit->second;
    mem.free_list.erase(fit);
    block *b = &mem.blocks[addr]; // stays valid: map insertions move nothing
    if (b->size - size >= BLOCK_ALIGN) {
        add_free(addr + size, b->size - size, b->slab);
        b->size = size;
    }
    b->free = false;
    b->requested = requested;
    return addr;
}

/* Marks the allocated block it free and merges it with free neighbours of
 * the same slab. */
static void give_block(std::map<char *, block>::iterator it)
{
    it->second.free = true;
    it->second.requested = 0;
    auto next = std::next(it);
    if (next != mem.blocks.end() && next->second.free && next->second.slab == it->second.slab) {
        free_list_remove(next->first, next->second.size);
        it->second.size += next->second.size;
        mem.blocks.erase(next);
    }
    if (it != mem.blocks.begin()) {
        auto prev = std::prev(it);
        if (prev->second.free && prev->second.slab == it->second.slab) {
            free_list_remove(prev->first, prev->second.size);
            prev->second.size += it->second.size;
            mem.blocks.erase(it);
            it = prev;
        }
    }
    mem.free_list.emplace(it->second.size, it->first);
}

static int arena_on(void)
{
    if (mem.use_arena < 0) {
        const char *env = getenv("REED_CUDA_ARENA");
        mem.use_arena = !(env && env[0] == '0');
    }
    return mem.use_arena;
}

/* A zeroed block of `bytes` (size rounded up), or NULL when the device is out
 * of memory. */
static char *alloc_block(size_t size, size_t bytes)
{
    char *p = NULL;
    {
        std::lock_guard<std::mutex> hold(mem.lock);
        if (!arena_on()) {
            if ((p = device_malloc(size)))
                mem.blocks[p] = block{size, bytes, p, false};
        } else {
            p = take_block(size, bytes);
            if (!p && add_slab(size) == 0)
                p = take_block(size, bytes);
        }
    }
    if (p)
        CUDA_CHECK(cudaMemsetAsync(p, 0, size, g_cuda.stream));
    return p;
}

void *cuda_mem_alloc(size_t bytes)
{
    if (bytes > SIZE_MAX - BLOCK_ALIGN)
        return NULL;
    const size_t size = (bytes + BLOCK_ALIGN - 1) / BLOCK_ALIGN * BLOCK_ALIGN + BLOCK_ALIGN * !bytes;
    char *p = alloc_block(size, bytes);
    // The bf16 views (cuda_view.cu) are a cache: out of memory, give them
    // back and try once more.
    if (!p && cuda_view_release() > 0)
        p = alloc_block(size, bytes);
    if (!p)
        return NULL;
    mem.used += bytes;
    return p;
}

void *cuda_mem_reserve(size_t bytes)
{
    void *p = cuda_lazy_alloc(bytes);
    return p ? p : cuda_mem_alloc(bytes);
}

void cuda_mem_trim(void)
{
    std::lock_guard<std::mutex> hold(mem.lock);
    if (arena_on())
        release_free_slabs();
}

/* Bytes asked for the block at p (locked). */
static size_t block_bytes(const char *p)
{
    std::lock_guard<std::mutex> hold(mem.lock);
    auto it = mem.blocks.find((char *)p);
    if (it == mem.blocks.end() || it->second.free)
        cuda_fatal("mem_free", "not a block of mem_alloc, or freed twice", __FILE__, __LINE__);
    return it->second.requested;
}

void cuda_mem_free(void *ptr)
{
    if (!ptr)
        return;
    cuda_zero_flush(); // a pending zero may be this block's
    cuda_mem_free_own(ptr);
}

void cuda_mem_free_own(void *ptr)
{
    if (!ptr)
        return;
    char *p = (char *)ptr;
    const size_t lazy_bytes = cuda_lazy_requested(p);
    if (lazy_bytes) {
        cuda_view_freed(p, lazy_bytes);
        cuda_lazy_free(p);
        return;
    }
    cuda_view_freed(p, block_bytes(p));
    std::lock_guard<std::mutex> hold(mem.lock);
    auto it = mem.blocks.find(p);
    mem.used -= it->second.requested;
    if (arena_on()) {
        give_block(it);
        return;
    }
    mem.blocks.erase(it);
    CUDA_CHECK(cudaFree(p)); // waits for the device
}

size_t cuda_mem_used(void) { return mem.used.load() + cuda_lazy_mapped(); }

void *cuda_scratch(void **p, size_t *cap, size_t bytes)
{
    if (bytes > *cap) {
        cuda_mem_free(*p);
        *cap = 0;
        if (!(*p = cuda_mem_alloc(bytes)))
            cuda_fatal("cuda_scratch", "out of device memory", __FILE__, __LINE__);
        *cap = bytes;
    }
    return *p;
}
