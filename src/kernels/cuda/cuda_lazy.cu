/* Device memory backed on first use (CUDA's virtual memory management).
 *
 * The engine allocates its activations up front, but on the bf16 path many
 * of them are never written in fp32: the ops producing them write only
 * their bf16 view (cuda_view.cu's sole views). On SiT-B/2 at batch 256
 * that is about 42 of the 60 GB of activations, by their sizes: each
 * block's LayerNorm outputs, qkv, the attention output, the MLP's
 * pre-activation and GELU, and the part of the attention's att the flash
 * path does not use. So a big allocation from the op table's mem_reserve
 * (lazy.min bytes or more) is only an address range here
 * (cuMemAddressReserve), and device memory is mapped to a part of it
 * (cuMemCreate, cuMemMap, then zeroed, as mem_reserve promises) when an op
 * first reads or writes that part in fp32:
 *   - cuda_view.cu's op wrapper backs the whole buffer each pointer
 *     argument points into, except the arguments an op backs itself;
 *   - those ops back what they touch in fp32: an output they write
 *     (cuda_view_out, cuda_view_out_sole when not sole, cuda_view_overwrite),
 *     an input they read (cuda_view_need_range, cuda_view_or_copy's copy),
 *     a sole view written back (materialize), and the attention's att and
 *     scratch (the part its path uses, cuda_attention.cu).
 * Memory once backed stays until the buffer is freed, but for a linear
 * layer's output that passes probation (cuda_view_sole_proven: written in
 * fp32 once, then found to need only its view; qkv on SiT): its memory is
 * given back then (cuda_lazy_unback, after waiting for the device once).
 * Running out of device memory while mapping stops the process with a
 * message (an op cannot fail half way), so the engine reserves this way
 * only its training activations, which the first steps map.
 *
 * A read or write of a part not backed is an illegal address on the GPU.
 * The emulator (tools/cuda-emu) maps these ranges PROT_NONE, so an access
 * the rules above miss faults there too; the tests make every buffer one
 * backed on first use (REED_CUDA_LAZY_MIN=0).
 *
 * The driver's entry points come through the runtime
 * (cudaGetDriverEntryPointByVersion), so the binary does not link libcuda.
 * Where the driver lacks them, or reserving a range fails, allocations are
 * plain (cuda_memory.cu). REED_CUDA_LAZY=0 turns it off; REED_CUDA_LAZY_MIN
 * (bytes, default 32 MiB) is the smallest allocation made this way. */
#include <stdio.h>
#include <stdlib.h>

#include <atomic>
#include <map>
#include <vector>

#include <cuda.h>

#include "cuda_internal.h"

#define LAZY_MIN_DEFAULT ((size_t)32 << 20)

typedef struct mapping {
    size_t offset, size; /* bytes of the range, from its base */
    CUmemGenericAllocationHandle handle;
} mapping;

typedef struct lazy_range {
    size_t reserved;          /* bytes of the address range (granules) */
    size_t requested;         /* bytes asked for */
    std::vector<bool> backed; /* per granule */
    size_t unbacked;          /* granules not backed: 0 makes backing free */
    std::vector<mapping> maps;
} lazy_range;

static struct {
    int state = -1; /* -1: not started; 0: off; 1: on */
    size_t min;     /* bytes: smaller allocations are plain */
    size_t granule; /* bytes: the driver's mapping granularity */
    CUmemAllocationProp prop;
    CUmemAccessDesc access;
    decltype(&cuMemAddressReserve) reserve;
    decltype(&cuMemAddressFree) address_free;
    decltype(&cuMemCreate) create;
    decltype(&cuMemRelease) release;
    decltype(&cuMemMap) map;
    decltype(&cuMemUnmap) unmap;
    decltype(&cuMemSetAccess) set_access;
    decltype(&cuMemGetAllocationGranularity) granularity;
    std::map<char *, lazy_range> ranges; /* by base address */
    std::atomic<size_t> backed{0};       /* bytes mapped */
    std::atomic<size_t> requested{0};    /* bytes asked for, all ranges */
} lazy;

/* The driver function called symbol, or NULL. */
static void *driver_entry(const char *symbol)
{
    void *fn = NULL;
    cudaDriverEntryPointQueryResult found;
    if (cudaGetDriverEntryPointByVersion(symbol, &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return fn;
}

template <typename F> static int entry(F *fn, const char *symbol)
{
    *fn = (F)driver_entry(symbol);
    return *fn != NULL;
}

static int find_entries(void)
{
    return entry(&lazy.reserve, "cuMemAddressReserve") &
           entry(&lazy.address_free, "cuMemAddressFree") & entry(&lazy.create, "cuMemCreate") &
           entry(&lazy.release, "cuMemRelease") & entry(&lazy.map, "cuMemMap") &
           entry(&lazy.unmap, "cuMemUnmap") & entry(&lazy.set_access, "cuMemSetAccess") &
           entry(&lazy.granularity, "cuMemGetAllocationGranularity");
}

/* On, where REED_CUDA_LAZY allows and the driver has what it needs. */
static int lazy_on(void)
{
    if (lazy.state >= 0)
        return lazy.state;
    lazy.state = 0;
    const char *env = getenv("REED_CUDA_LAZY");
    const char *min = getenv("REED_CUDA_LAZY_MIN");
    lazy.min = min ? (size_t)strtoull(min, NULL, 10) : LAZY_MIN_DEFAULT;
    int device = 0;
    if ((env && env[0] == '0') || cudaGetDevice(&device) != cudaSuccess || !find_entries()) {
        (void)cudaGetLastError(); // not sticky: clear it
        return 0;
    }
    lazy.prop = CUmemAllocationProp{};
    lazy.prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    lazy.prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    lazy.prop.location.id = device;
    lazy.access = CUmemAccessDesc{};
    lazy.access.location = lazy.prop.location;
    lazy.access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    if (lazy.granularity(&lazy.granule, &lazy.prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) !=
            CUDA_SUCCESS ||
        !lazy.granule)
        return 0;
    lazy.state = 1;
    return 1;
}

extern "C" int reed_cuda_set_lazy_min(size_t bytes)
{
    lazy_on();
    lazy.min = bytes;
    return lazy.state;
}

void *cuda_lazy_alloc(size_t bytes)
{
    if (!bytes || !lazy_on() || bytes < lazy.min || bytes > SIZE_MAX - lazy.granule)
        return NULL;
    const size_t granules = (bytes + lazy.granule - 1) / lazy.granule;
    CUdeviceptr base = 0;
    if (lazy.reserve(&base, granules * lazy.granule, 0, 0, 0) != CUDA_SUCCESS)
        return NULL; // the caller allocates it plainly
    lazy_range &r = lazy.ranges[(char *)base];
    r.reserved = granules * lazy.granule;
    r.requested = bytes;
    r.backed.assign(granules, false);
    r.unbacked = granules;
    lazy.requested += bytes;
    return (void *)base;
}

/* The range holding p, or end(). */
static std::map<char *, lazy_range>::iterator range_of(const void *p)
{
    auto it = lazy.ranges.upper_bound((char *)p);
    if (it == lazy.ranges.begin())
        return lazy.ranges.end();
    --it;
    return (const char *)p < it->first + it->second.reserved ? it : lazy.ranges.end();
}

static void check(CUresult e, const char *call)
{
    if (e != CUDA_SUCCESS) {
        char detail[64];
        snprintf(detail, sizeof detail, "driver error %d", (int)e);
        cuda_fatal(call, detail, __FILE__, __LINE__);
    }
}

size_t cuda_lazy_requested(const void *p)
{
    if (lazy.ranges.empty())
        return 0;
    auto it = range_of(p);
    return it != lazy.ranges.end() && it->first == (const char *)p ? it->second.requested : 0;
}

/* Unmaps mapping i of the range at base (the device is idle). */
static void unmap(char *base, lazy_range *r, size_t i)
{
    const mapping m = r->maps[i];
    check(lazy.unmap((CUdeviceptr)(base + m.offset), m.size), "cuMemUnmap");
    check(lazy.release(m.handle), "cuMemRelease");
    for (size_t g = m.offset / lazy.granule; g < (m.offset + m.size) / lazy.granule; g++)
        r->backed[g] = false;
    r->unbacked += m.size / lazy.granule;
    lazy.backed -= m.size;
    r->maps[i] = r->maps.back();
    r->maps.pop_back();
}

void cuda_lazy_unback(const void *p, size_t bytes)
{
    if (lazy.ranges.empty() || !bytes)
        return;
    auto it = range_of(p);
    if (it == lazy.ranges.end())
        return;
    lazy_range &r = it->second;
    const size_t from = (size_t)((const char *)p - it->first);
    size_t to = bytes < r.reserved - from ? from + bytes : r.reserved;
    if (to >= r.requested)
        to = r.reserved; // the last granule's tail is nobody's
    int synced = 0;
    for (size_t i = 0; i < r.maps.size();) {
        if (r.maps[i].offset >= from && r.maps[i].offset + r.maps[i].size <= to) {
            if (!synced++)
                CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream)); // ops queued may use it
            unmap(it->first, &r, i);
        } else {
            i++;
        }
    }
}

int cuda_lazy_free(void *p)
{
    if (lazy.ranges.empty())
        return 0;
    auto it = range_of(p);
    if (it == lazy.ranges.end() || it->first != (char *)p)
        return 0;
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream)); // ops still queued may use it
    lazy_range &r = it->second;
    while (!r.maps.empty())
        unmap(it->first, &r, r.maps.size() - 1);
    check(lazy.address_free((CUdeviceptr)it->first, r.reserved), "cuMemAddressFree");
    lazy.requested -= r.requested;
    lazy.ranges.erase(it);
    return 1;
}

/* Device memory for size bytes, or 0 when the device is out of it: the bf16
 * views (a cache) and the arenas' free slabs are given back first. Giving
 * them back maps nothing (cuda_view_release keeps the sole views of
 * buffers not backed, and frees without flushing a pending zero); a call
 * from within it anyway finds the device out of memory. */
static int create(CUmemGenericAllocationHandle *h, size_t size)
{
    static int releasing;
    CUresult e = lazy.create(h, size, &lazy.prop, 0);
    if (e == CUDA_ERROR_OUT_OF_MEMORY && !releasing) {
        releasing = 1;
        cuda_view_release();
        cuda_mem_trim();
        releasing = 0;
        e = lazy.create(h, size, &lazy.prop, 0);
    }
    if (e == CUDA_ERROR_OUT_OF_MEMORY)
        return 0;
    check(e, "cuMemCreate");
    return 1;
}

/* Maps zeroed device memory to granules [g, g + n) of r at base. Out of
 * device memory, the process stops here with a message: an op is under
 * way and cannot fail (ops.h's mem_reserve says so). */
static void back_granules(char *base, lazy_range *r, size_t g, size_t n)
{
    const size_t offset = g * lazy.granule, size = n * lazy.granule;
    CUmemGenericAllocationHandle h;
    if (!create(&h, size)) {
        char detail[160];
        snprintf(detail, sizeof detail,
                 "out of device memory for %.1f MiB of a buffer first used now, with %.1f MiB "
                 "held; a smaller batch needs less",
                 size / 1048576.0, cuda_mem_used() / 1048576.0);
        cuda_fatal("cuMemCreate", detail, __FILE__, __LINE__);
    }
    CUdeviceptr at = (CUdeviceptr)(base + offset);
    check(lazy.map(at, size, 0, h, 0), "cuMemMap");
    check(lazy.set_access(at, size, &lazy.access, 1), "cuMemSetAccess");
    r->maps.push_back(mapping{offset, size, h});
    for (size_t i = g; i < g + n; i++)
        r->backed[i] = true;
    r->unbacked -= n;
    lazy.backed += size;
    CUDA_CHECK(cudaMemsetAsync(base + offset, 0, size, g_cuda.stream));
}

void cuda_lazy_back(const void *p, size_t bytes)
{
    if (lazy.ranges.empty() || !bytes)
        return;
    auto it = range_of(p);
    if (it == lazy.ranges.end() || !it->second.unbacked)
        return;
    lazy_range &r = it->second;
    const size_t from = (size_t)((const char *)p - it->first);
    const size_t to = bytes < r.reserved - from ? from + bytes : r.reserved;
    const size_t g_end = (to + lazy.granule - 1) / lazy.granule;
    for (size_t g = from / lazy.granule; g < g_end;) {
        size_t n = 0;
        while (g + n < g_end && !r.backed[g + n])
            n++;
        if (n)
            back_granules(it->first, &r, g, n);
        g += n ? n : 1;
    }
}

void cuda_lazy_back_buffer(const void *p)
{
    if (lazy.ranges.empty())
        return;
    auto it = range_of(p);
    if (it != lazy.ranges.end())
        cuda_lazy_back(it->first, it->second.requested);
}

int cuda_lazy_backed(const void *p, size_t bytes)
{
    if (lazy.ranges.empty() || !bytes)
        return 1;
    auto it = range_of(p);
    if (it == lazy.ranges.end())
        return 1;
    const lazy_range &r = it->second;
    const size_t from = (size_t)((const char *)p - it->first);
    const size_t to = bytes < r.reserved - from ? from + bytes : r.reserved;
    for (size_t g = from / lazy.granule; g * lazy.granule < to; g++)
        if (!r.backed[g])
            return 0;
    return 1;
}

size_t cuda_lazy_mapped(void) { return lazy.backed.load(); }

extern "C" void reed_cuda_lazy_bytes(size_t *requested, size_t *mapped)
{
    *requested = lazy.requested.load();
    *mapped = lazy.backed.load();
}

extern "C" void reed_cuda_lazy_buffer(const void *p, size_t *requested, size_t *mapped)
{
    *requested = *mapped = 0;
    auto it = range_of(p);
    if (it == lazy.ranges.end())
        return;
    *requested = it->second.requested;
    for (const mapping &m : it->second.maps)
        *mapped += m.size;
}
