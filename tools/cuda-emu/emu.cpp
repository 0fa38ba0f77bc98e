#include "emu.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucontext.h>
#include <map>
#include <vector>

dim3 threadIdx, blockIdx, blockDim, gridDim;

/* ---------------- fibers ---------------- */
/* A fiber runs until it reaches a barrier (or ends); the scheduler then
 * releases the warps whose live lanes all wait at __syncwarp, else the
 * block when every live thread waits at __syncthreads. */
enum { RUNNING, AT_BLOCK_BARRIER, AT_WARP_BARRIER };
struct fiber { ucontext_t ctx; bool done; unsigned lin; int wait; };
static ucontext_t sched;
static fiber *cur;
static std::function<void()> *body;
static std::vector<fiber> fibers;
static std::vector<char *> stacks;
static double shfl_slot[1024];
static cudaError_t last_error = cudaSuccess;
static const size_t STACK = 256 * 1024;
long emu_launches, emu_threads;
unsigned char *emu_dyn_smem;

static void fiber_entry() { (*body)(); cur->done = true; swapcontext(&cur->ctx, &sched); }
static void wait_at(int barrier) { cur->wait = barrier; swapcontext(&cur->ctx, &sched); }
void __syncthreads() { wait_at(AT_BLOCK_BARRIER); }
void __syncwarp(unsigned mask)
{
    if (mask != 0xffffffffu) { fprintf(stderr, "emu: __syncwarp with a partial mask\n"); abort(); }
    wait_at(AT_WARP_BARRIER);
}
unsigned emu_lane(void) { return cur->lin % 32; }
double emu_shfl_xor(double v, int o)
{
    unsigned lin = cur->lin;
    shfl_slot[lin] = v;
    __syncwarp();
    unsigned lane = lin % 32;
    double r = shfl_slot[lin - lane + (lane ^ (unsigned)o)];
    __syncwarp();
    return r;
}

/* mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 with d as c: every
 * lane posts its fragments, then computes its four elements of d from all
 * of them (the layouts of the PTX ISA, "Matrix Fragments for mma.m16n8k16
 * with floating point type"; a register's low half holds the element with
 * the lower index). */
static unsigned mma_a[1024][4], mma_b[1024][2];

static float bf16_half(unsigned reg, int high)
{
    unsigned u = (high ? reg >> 16 : reg & 0xffffu) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void emu_mma_16816(float d[4], const unsigned a[4], const unsigned b[2])
{
    const unsigned lin = cur->lin, w0 = lin - lin % 32;
    memcpy(mma_a[lin], a, sizeof mma_a[lin]);
    memcpy(mma_b[lin], b, sizeof mma_b[lin]);
    __syncwarp();
    const unsigned lane = lin % 32, g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        const unsigned row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        double acc = d[i];
        for (unsigned k = 0; k < 16; k++) {
            // A(row, k): lane (row % 8)·4 + (k % 8)/2, register (row ≥ 8) + 2·(k ≥ 8)
            const unsigned al = w0 + (row % 8) * 4 + (k % 8) / 2;
            const float av = bf16_half(mma_a[al][(row >= 8) + 2 * (k >= 8)], k & 1);
            // B(k, col): lane col·4 + (k % 8)/2, register (k ≥ 8)
            const unsigned bl = w0 + col * 4 + (k % 8) / 2;
            const float bv = bf16_half(mma_b[bl][k >= 8], k & 1);
            acc += (double)av * bv;
        }
        d[i] = (float)acc;
    }
    __syncwarp();
}

/* ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i .. 8i + 7
 * post the addresses of the 8 rows (8 bf16 each) of matrix i; every lane
 * then reads its register i of matrix i: without trans, row lane/4,
 * columns 2·(lane%4) and + 1; with trans, rows 2·(lane%4) and + 1 of
 * column lane/4 (the lower index in the low half). */
static const unsigned short *ldsm_row[1024];

void emu_ldmatrix_x4(unsigned r[4], const void *addr, int trans)
{
    const unsigned lin = cur->lin, w0 = lin - lin % 32, lane = lin % 32;
    ldsm_row[lin] = (const unsigned short *)addr;
    __syncwarp();
    for (unsigned i = 0; i < 4; i++) {
        const unsigned short *const *rows = &ldsm_row[w0 + 8 * i];
        unsigned lo, hi;
        if (trans) {
            lo = rows[2 * (lane % 4)][lane / 4];
            hi = rows[2 * (lane % 4) + 1][lane / 4];
        } else {
            lo = rows[lane / 4][2 * (lane % 4)];
            hi = rows[lane / 4][2 * (lane % 4) + 1];
        }
        r[i] = lo | hi << 16;
    }
    __syncwarp();
}

/* cp.async: each thread's copies queued with their group (-1 until
 * committed), made at the wait that covers them; the destination holds
 * garbage from the issue on, so a read of it by any thread before the
 * data lands (another warp still using a stage being refilled, say) sees
 * garbage. */
struct cp_copy { void *dst; const void *src; int bytes, group; };
static std::vector<cp_copy> cp_queue[1024];
static int cp_groups[1024]; /* groups committed by the thread */

void emu_cp_async16(void *dst, const void *src, int bytes)
{
    if ((uintptr_t)dst % 16 || (uintptr_t)src % 16) {
        fprintf(stderr, "emu: cp.async of 16 bytes at unaligned addresses %p <- %p\n", dst, src);
        abort();
    }
    memset(dst, 0xff, 16);
    cp_queue[cur->lin].push_back(cp_copy{dst, src, bytes, -1});
}

void emu_cp_async_commit(void)
{
    const unsigned lin = cur->lin;
    for (cp_copy &c : cp_queue[lin])
        if (c.group < 0) c.group = cp_groups[lin];
    cp_groups[lin]++;
}

void emu_cp_async_wait(int n)
{
    std::vector<cp_copy> &q = cp_queue[cur->lin];
    const int done_below = cp_groups[cur->lin] - n; // groups older than the n newest
    std::vector<cp_copy> left;
    for (const cp_copy &c : q) {
        if (c.group >= 0 && c.group < done_below) {
            if (c.bytes) memcpy(c.dst, c.src, 16);
            else memset(c.dst, 0, 16);
        } else {
            left.push_back(c);
        }
    }
    q.swap(left);
}

static void set_tid(unsigned lin)
{
    threadIdx.x = lin % blockDim.x;
    threadIdx.y = lin / blockDim.x % blockDim.y;
    threadIdx.z = lin / (blockDim.x * blockDim.y);
}

/* Releases the warps whose live lanes all wait at __syncwarp; else, when
 * every live thread waits at __syncthreads, the block. Returns false when
 * every thread has ended; aborts on a deadlock. */
static bool release_barriers(unsigned nt)
{
    bool live = false, released = false, all_block = true;
    for (unsigned w = 0; w < nt; w += 32) {
        unsigned end = w + 32 < nt ? w + 32 : nt, at_warp = 0, alive = 0;
        for (unsigned t = w; t < end; t++) {
            if (fibers[t].done) continue;
            alive++;
            at_warp += fibers[t].wait == AT_WARP_BARRIER;
            all_block &= fibers[t].wait == AT_BLOCK_BARRIER;
        }
        live |= alive > 0;
        if (alive && at_warp == alive) {
            for (unsigned t = w; t < end; t++) fibers[t].wait = RUNNING;
            released = true;
        }
    }
    if (!live || released) return live;
    if (!all_block) {
        fprintf(stderr, "emu: deadlock in block (%u,%u,%u): the lanes of a warp wait at different barriers\n",
                blockIdx.x, blockIdx.y, blockIdx.z);
        abort();
    }
    for (unsigned t = 0; t < nt; t++) fibers[t].wait = RUNNING;
    return true;
}

/* The order threads (and blocks) run in: EMU_ORDER=reverse runs them last
 * to first. A race (a thread reading what another writes with no barrier
 * between) reads the right value in one of the two orders only, so running
 * the tests in both shows it. */
static bool reverse_order(void)
{
    static int r = -1;
    if (r < 0) { const char *e = getenv("EMU_ORDER"); r = e && !strcmp(e, "reverse"); }
    return r;
}
static unsigned in_order(unsigned i, unsigned n) { return reverse_order() ? n - 1 - i : i; }

/* Static __shared__ arrays are host statics: each is poisoned once per block,
 * when the block's first thread reaches its declaration. */
struct shared_array { void *p; long block; };
static std::vector<shared_array> shared_arrays;
static long block_serial;
static size_t shared_poisoned;

void emu_shared_fresh(void *p, size_t bytes)
{
    for (shared_array &a : shared_arrays)
        if (a.p == p) {
            if (a.block != block_serial) { memset(p, 0xff, bytes); a.block = block_serial; shared_poisoned++; }
            return;
        }
    shared_arrays.push_back({p, block_serial});
    memset(p, 0xff, bytes);
    shared_poisoned++;
}

static void run_block(unsigned nt, size_t smem)
{
    if (smem) memset(emu_dyn_smem, 0xff, smem); // garbage, as on a GPU
    block_serial++;
    for (unsigned t = 0; t < nt; t++) {
        fiber &f = fibers[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = stacks[t];
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_entry, 0);
        f.done = false;
        f.lin = t;
        f.wait = RUNNING;
        cp_queue[t].clear();
        cp_groups[t] = 0;
    }
    emu_threads += nt;
    do {
        for (unsigned i = 0; i < nt; i++) {
            const unsigned t = in_order(i, nt);
            if (fibers[t].done || fibers[t].wait != RUNNING) continue;
            cur = &fibers[t];
            set_tid(t);
            swapcontext(&sched, &cur->ctx);
        }
    } while (release_barriers(nt));
    for (unsigned t = 0; t < nt; t++)
        if (!cp_queue[t].empty()) {
            fprintf(stderr, "emu: thread %u ended with %zu cp.async copies never waited for\n", t,
                    cp_queue[t].size());
            abort();
        }
}

/* Per-kernel cudaFuncAttributeMaxDynamicSharedMemorySize. */
struct func_attr { const void *kernel; int max_dyn_smem; };
static std::vector<func_attr> func_attrs;
static const int SMEM_DEFAULT = 48 * 1024;

static int smem_optin(void)
{
    const char *e = getenv("EMU_SMEM_OPTIN");
    return e ? atoi(e) : 232448;
}

cudaError_t emu_func_set_attribute(const void *kernel, cudaFuncAttribute a, int v)
{
    if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || v < 0 || v > smem_optin())
        return cudaErrorInvalidValue;
    for (func_attr &f : func_attrs)
        if (f.kernel == kernel) { f.max_dyn_smem = v; return cudaSuccess; }
    func_attrs.push_back({kernel, v});
    return cudaSuccess;
}

static size_t max_dyn_smem(const void *kernel)
{
    for (const func_attr &f : func_attrs)
        if (f.kernel == kernel) return (size_t)f.max_dyn_smem;
    return SMEM_DEFAULT;
}

void emu_launch(dim3 grid, dim3 block, size_t smem, const void *kernel, std::function<void()> fn)
{
    unsigned nt = block.x * block.y * block.z;
    if (nt == 0 || nt > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u) {
        fprintf(stderr, "emu: bad launch grid (%u,%u,%u) block (%u,%u,%u)\n", grid.x, grid.y, grid.z,
                block.x, block.y, block.z);
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    if (smem > max_dyn_smem(kernel)) {
        fprintf(stderr, "emu: %zu bytes of dynamic shared memory, over the kernel's limit %zu\n", smem,
                max_dyn_smem(kernel));
        last_error = cudaErrorInvalidValue;
        return;
    }
    emu_launches++;
    body = &fn;
    gridDim = grid;
    blockDim = block;
    if (fibers.size() < nt) fibers.resize(nt);
    while (stacks.size() < nt) stacks.push_back((char *)malloc(STACK));
    void *dyn = nullptr;
    if (smem && posix_memalign(&dyn, 128, smem)) abort();
    emu_dyn_smem = (unsigned char *)dyn;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = dim3(in_order(x, grid.x), in_order(y, grid.y), in_order(z, grid.z));
                run_block(nt, smem);
            }
    free(dyn);
    emu_dyn_smem = nullptr;
}

/* ---------------- runtime ---------------- */
const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emu error"; }
cudaError_t cudaGetLastError(void) { cudaError_t e = last_error; last_error = cudaSuccess; return e; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { *s = (cudaStream_t)0x1234; return cudaSuccess; }
cudaError_t cudaMalloc(void **p, size_t bytes)
{
    if (bytes > ((size_t)1 << 34)) return cudaErrorMemoryAllocation;
    *p = malloc(bytes ? bytes : 1);
    memset(*p, 0xff, bytes); // garbage (NaN as floats)
    if (((uintptr_t)*p) % 16) { fprintf(stderr, "emu: misaligned malloc\n"); abort(); }
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t) { memset(p, v, bytes); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t bytes, cudaMemcpyKind, cudaStream_t)
{
    memmove(d, s, bytes);
    return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int *n) { *n = getenv("EMU_NO_DEVICE") ? 0 : 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int)
{
    snprintf(p->name, sizeof p->name, "emulated H100");
    p->major = 9;
    p->minor = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int)
{
    switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = 132; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *v = smem_optin() + 1024; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = smem_optin(); return cudaSuccess;
    }
    return cudaErrorInvalidValue;
}
struct emu_event { struct timespec t; };
cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = new emu_event(); return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) { clock_gettime(CLOCK_MONOTONIC, &e->t); return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)((b->t.tv_sec - a->t.tv_sec) * 1e3 + (b->t.tv_nsec - a->t.tv_nsec) * 1e-6);
    return cudaSuccess;
}
void emu_check_range(const void *, size_t, const char *) {}

/* ---------------- the driver's virtual memory management ---------------- */
/* A reserved range is mmap'ed PROT_NONE; cuMemSetAccess makes a mapped part
 * readable and writable (filled with garbage, as fresh device memory is)
 * and cuMemUnmap takes that back. The granule is a page, so an access
 * just past the part mapped faults too. A mapping must lie in a reserved
 * range and overlap no other, as the driver requires. EMU_VMM=0: no driver
 * entry points (the backend then allocates plainly). EMU_VMM_LIMIT=bytes:
 * cuMemCreate runs out of memory beyond that many bytes in all. */
#include <sys/mman.h>
#include <unistd.h>
#include "cuda.h"

static std::map<CUdeviceptr, CUmemGenericAllocationHandle> emu_mapped; // base of a mapping → handle
static std::map<CUmemGenericAllocationHandle, size_t> emu_handles;      // handle → bytes
static std::map<CUdeviceptr, size_t> emu_reserved;                      // base → bytes
static CUmemGenericAllocationHandle emu_next_handle = 1;
static size_t emu_created; // bytes of the live handles

static size_t page(void) { return (size_t)sysconf(_SC_PAGESIZE); }

CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t, CUdeviceptr, unsigned long long)
{
    void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED || size % page())
        return CUDA_ERROR_INVALID_VALUE;
    *ptr = (CUdeviceptr)p;
    emu_reserved[*ptr] = size;
    return CUDA_SUCCESS;
}
CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
    for (auto &m : emu_mapped)
        if (m.first >= ptr && m.first < ptr + size) {
            fprintf(stderr, "emu: cuMemAddressFree of a range still mapped\n");
            abort();
        }
    if (!emu_reserved.count(ptr) || emu_reserved[ptr] != size)
        return CUDA_ERROR_INVALID_VALUE;
    emu_reserved.erase(ptr);
    return munmap((void *)ptr, size) == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *,
                     unsigned long long)
{
    if (!size || size % page())
        return CUDA_ERROR_INVALID_VALUE;
    const char *limit = getenv("EMU_VMM_LIMIT");
    if (limit && emu_created + size > strtoull(limit, NULL, 10))
        return CUDA_ERROR_OUT_OF_MEMORY;
    *h = emu_next_handle++;
    emu_handles[*h] = size;
    emu_created += size;
    return CUDA_SUCCESS;
}
CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
    for (auto &m : emu_mapped)
        if (m.second == h) {
            fprintf(stderr, "emu: cuMemRelease of a handle still mapped\n");
            abort();
        }
    auto it = emu_handles.find(h);
    if (it == emu_handles.end())
        return CUDA_ERROR_INVALID_VALUE;
    emu_created -= it->second;
    emu_handles.erase(it);
    return CUDA_SUCCESS;
}
CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle h,
                  unsigned long long)
{
    auto it = emu_handles.find(h);
    if (it == emu_handles.end() || offset || size != it->second || ptr % page())
        return CUDA_ERROR_INVALID_VALUE;
    auto r = emu_reserved.upper_bound(ptr);
    if (r == emu_reserved.begin() || (--r, ptr + size > r->first + r->second))
        return CUDA_ERROR_INVALID_VALUE; // not within one reserved range
    for (const auto &m : emu_mapped)
        if (m.first < ptr + size && ptr < m.first + emu_handles[m.second])
            return CUDA_ERROR_INVALID_VALUE; // overlaps a mapping
    emu_mapped[ptr] = h;
    return CUDA_SUCCESS;
}
CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    auto it = emu_mapped.find(ptr);
    if (it == emu_mapped.end() || emu_handles[it->second] != size)
        return CUDA_ERROR_INVALID_VALUE;
    emu_mapped.erase(it);
    mprotect((void *)ptr, size, PROT_NONE);
    madvise((void *)ptr, size, MADV_DONTNEED);
    return CUDA_SUCCESS;
}
CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *, size_t)
{
    auto it = emu_mapped.find(ptr);
    if (it == emu_mapped.end() || emu_handles[it->second] != size)
        return CUDA_ERROR_INVALID_VALUE;
    if (mprotect((void *)ptr, size, PROT_READ | PROT_WRITE) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    memset((void *)ptr, 0xff, size); // garbage (NaN as floats)
    return CUDA_SUCCESS;
}
CUresult cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *,
                                       CUmemAllocationGranularity_flags)
{
    *g = page();
    return CUDA_SUCCESS;
}
cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **fn, unsigned,
                                             unsigned long long,
                                             cudaDriverEntryPointQueryResult *status)
{
    static const struct { const char *name; void *fn; } table[] = {
        {"cuMemAddressReserve", (void *)cuMemAddressReserve},
        {"cuMemAddressFree", (void *)cuMemAddressFree},
        {"cuMemCreate", (void *)cuMemCreate},
        {"cuMemRelease", (void *)cuMemRelease},
        {"cuMemMap", (void *)cuMemMap},
        {"cuMemUnmap", (void *)cuMemUnmap},
        {"cuMemSetAccess", (void *)cuMemSetAccess},
        {"cuMemGetAllocationGranularity", (void *)cuMemGetAllocationGranularity},
    };
    const char *off = getenv("EMU_VMM");
    for (const auto &e : table)
        if (strcmp(symbol, e.name) == 0 && !(off && off[0] == '0')) {
            *fn = e.fn;
            *status = cudaDriverEntryPointSuccess;
            return cudaSuccess;
        }
    *fn = NULL;
    *status = cudaDriverEntryPointSymbolNotFound;
    return cudaSuccess;
}

/* ---------------- cuBLAS ---------------- */
static int bf16_mode_seen, bf16_operands_seen;
const char *cublasGetStatusString(cublasStatus_t s) { return s ? "CUBLAS_STATUS_INVALID_VALUE" : "ok"; }
cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = (cublasHandle_t)0x99; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }

static float to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* Element i of an operand of type t (fp32, or bf16 widened exactly). */
static float operand(const void *p, cudaDataType t, size_t i)
{
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static cublasStatus_t gemm1(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                            const void *A, cudaDataType At, int lda, const void *B, cudaDataType Bt, int ldb,
                            float beta, void *C, cudaDataType Ct, int ldc, cublasComputeType_t ct)
{
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    // C in fp32, or in bf16 on bf16 operands (as cuBLAS: A, B, C 16BF, compute 32F)
    if (Ct != CUDA_R_32F && !(Ct == CUDA_R_16BF && At == CUDA_R_16BF)) {
        fprintf(stderr, "emu: cublas output type %d with operand type %d\n", Ct, At);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    // bf16 operands go with plain fp32 compute; FAST_16BF with fp32 ones.
    if (At != Bt || (At == CUDA_R_16BF && ct != CUBLAS_COMPUTE_32F)) {
        fprintf(stderr, "emu: cublas operand types %d, %d with compute type %d\n", At, Bt, ct);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (At == CUDA_R_16BF) bf16_operands_seen = 1;
    int arows = ta == CUBLAS_OP_N ? m : k, brows = tb == CUBLAS_OP_N ? k : n;
    if (lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) || ldc < (m > 1 ? m : 1)) {
        fprintf(stderr, "emu: cublas bad ld: ta %d tb %d m %d n %d k %d lda %d ldb %d ldc %d\n", ta, tb, m, n,
                k, lda, ldb, ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    bool bf = ct == CUBLAS_COMPUTE_32F_FAST_16BF;
    if (bf) bf16_mode_seen = 1;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double acc = 0.0;
            for (int l = 0; l < k; l++) {
                float a = operand(A, At, ta == CUBLAS_OP_N ? i + (size_t)l * lda : l + (size_t)i * lda);
                float b = operand(B, Bt, tb == CUBLAS_OP_N ? l + (size_t)j * ldb : j + (size_t)l * ldb);
                if (bf) { a = to_bf16(a); b = to_bf16(b); }
                acc += (double)a * b;
            }
            const size_t at = i + (size_t)j * ldc;
            const float old = beta == 0.0f ? 0.0f : operand(C, Ct, at);
            const float v = beta == 0.0f ? (float)(alpha * acc) : (float)(alpha * acc + beta * (double)old);
            if (Ct == CUDA_R_16BF) { // rounded to nearest even, stored as bf16 bits
                const float r = to_bf16(v);
                uint32_t u;
                memcpy(&u, &r, 4);
                ((uint16_t *)C)[at] = (uint16_t)(u >> 16);
            } else {
                ((float *)C)[at] = v;
            }
        }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType At, int lda, const void *B,
                            cudaDataType Bt, int ldb, const void *beta, void *C, cudaDataType Ct, int ldc,
                            cublasComputeType_t ct, cublasGemmAlgo_t)
{
    return gemm1(ta, tb, m, n, k, *(const float *)alpha, A, At, lda, B, Bt, ldb, *(const float *)beta,
                 C, Ct, ldc, ct);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *A, cudaDataType At, int lda,
                                          long long sA, const void *B, cudaDataType Bt, int ldb, long long sB,
                                          const void *beta, void *C, cudaDataType Ct, int ldc, long long sC,
                                          int batch, cublasComputeType_t ct, cublasGemmAlgo_t)
{
    const size_t asz = At == CUDA_R_16BF ? 2 : 4, bsz = Bt == CUDA_R_16BF ? 2 : 4;
    const size_t csz = Ct == CUDA_R_16BF ? 2 : 4;
    for (int i = 0; i < batch; i++) {
        cublasStatus_t s = gemm1(ta, tb, m, n, k, *(const float *)alpha, (const char *)A + i * sA * asz, At, lda,
                                 (const char *)B + i * sB * bsz, Bt, ldb, *(const float *)beta,
                                 (char *)C + i * sC * csz, Ct, ldc, ct);
        if (s) return s;
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* ---------------- cuDNN ---------------- */
struct emu_tdesc { int n, c, h, w, set; };
struct emu_cdesc { int pad_h, pad_w, u, v, dh, dw, set; cudnnMathType_t math; };
long emu_cudnn_calls;
const char *cudnnGetErrorString(cudnnStatus_t s) { return s ? "CUDNN_STATUS_emu_error" : "ok"; }
cudnnStatus_t cudnnCreate(cudnnHandle_t *h) { *h = (cudnnHandle_t)0x77; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnSetStream(cudnnHandle_t, cudaStream_t) { return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) { *d = new emu_tdesc(); return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) { delete d; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) { *d = new emu_tdesc(); return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) { delete d; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) { *d = new emu_cdesc(); return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) { delete d; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t, cudnnDataType_t, int n, int c, int h, int w)
{ if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM; *d = {n, c, h, w, 1}; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t, cudnnTensorFormat_t, int k, int c, int h, int w)
{ if (k <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM; *d = {k, c, h, w, 1}; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int ph, int pw, int u, int v, int dh, int dw, cudnnConvolutionMode_t m, cudnnDataType_t)
{ if (m != CUDNN_CROSS_CORRELATION || u <= 0 || v <= 0 || dh != 1 || dw != 1) return CUDNN_STATUS_BAD_PARAM;
  d->pad_h = ph; d->pad_w = pw; d->u = u; d->v = v; d->dh = dh; d->dw = dw; d->set = 1; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) { d->math = m; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w, int *n, int *ch, int *h, int *wd)
{
    if (x->c != w->c) return CUDNN_STATUS_BAD_PARAM;
    *n = x->n; *ch = w->n;
    *h = 1 + (x->h + 2 * c->pad_h - w->h) / c->u;
    *wd = 1 + (x->w + 2 * c->pad_w - w->w) / c->v;
    return CUDNN_STATUS_SUCCESS;
}
static const size_t EMU_WS = 4096; /* workspace the emulated algorithm wants */
template <class P, class A> static void fill_perf(P *p, int *n, A good, A fft, cudnnMathType_t m)
{
    // FFT first (never fits), then one usable algorithm
    p[0] = {}; p[0].algo = fft; p[0].status = CUDNN_STATUS_SUCCESS; p[0].memory = (size_t)1 << 40;
    p[0].determinism = CUDNN_DETERMINISTIC; p[0].mathType = m;
    p[1] = {}; p[1].algo = good; p[1].status = CUDNN_STATUS_SUCCESS; p[1].memory = EMU_WS;
    p[1].determinism = CUDNN_DETERMINISTIC; p[1].mathType = m;
    *n = 2;
}
cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t, cudnnTensorDescriptor_t, cudnnFilterDescriptor_t, cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t, int req, int *n, cudnnConvolutionFwdAlgoPerf_t *p)
{ if (req < 2) return CUDNN_STATUS_BAD_PARAM; fill_perf(p, n, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_FFT, c->math); return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t, cudnnFilterDescriptor_t, cudnnTensorDescriptor_t, cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t, int req, int *n, cudnnConvolutionBwdDataAlgoPerf_t *p)
{ if (req < 2) return CUDNN_STATUS_BAD_PARAM; fill_perf(p, n, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT, c->math); return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t, cudnnTensorDescriptor_t, cudnnTensorDescriptor_t, cudnnConvolutionDescriptor_t c, cudnnFilterDescriptor_t, int req, int *n, cudnnConvolutionBwdFilterAlgoPerf_t *p)
{ if (req < 2) return CUDNN_STATUS_BAD_PARAM; fill_perf(p, n, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT, c->math); return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t, cudnnTensorDescriptor_t, cudnnFilterDescriptor_t, cudnnConvolutionDescriptor_t, cudnnTensorDescriptor_t, cudnnConvolutionFwdAlgo_t, size_t *b) { *b = EMU_WS; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t, cudnnFilterDescriptor_t, cudnnTensorDescriptor_t, cudnnConvolutionDescriptor_t, cudnnTensorDescriptor_t, cudnnConvolutionBwdDataAlgo_t, size_t *b) { *b = EMU_WS; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t, cudnnTensorDescriptor_t, cudnnTensorDescriptor_t, cudnnConvolutionDescriptor_t, cudnnFilterDescriptor_t, cudnnConvolutionBwdFilterAlgo_t, size_t *b) { *b = EMU_WS; return CUDNN_STATUS_SUCCESS; }

/* Visits every (b, o, y, x, c, i, j) with its input element (or none when in padding). */
template <class F> static void conv_visit(emu_tdesc *x, emu_tdesc *w, emu_cdesc *c, F f)
{
    int Ho = 1 + (x->h + 2 * c->pad_h - w->h) / c->u, Wo = 1 + (x->w + 2 * c->pad_w - w->w) / c->v;
    for (int b = 0; b < x->n; b++)
        for (int o = 0; o < w->n; o++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++)
                    for (int ch = 0; ch < x->c; ch++)
                        for (int i = 0; i < w->h; i++)
                            for (int j = 0; j < w->w; j++) {
                                int iy = oy * c->u - c->pad_h + i, ix = ox * c->v - c->pad_w + j;
                                if (iy < 0 || iy >= x->h || ix < 0 || ix >= x->w) continue;
                                size_t xi = (((size_t)b * x->c + ch) * x->h + iy) * x->w + ix;
                                size_t wi = (((size_t)o * w->c + ch) * w->h + i) * w->w + j;
                                size_t yi = (((size_t)b * w->n + o) * Ho + oy) * Wo + ox;
                                f(xi, wi, yi);
                            }
}
static void blend(float *dst, const std::vector<double> &acc, float alpha, float beta)
{
    for (size_t i = 0; i < acc.size(); i++)
        dst[i] = beta == 0.0f ? (float)(alpha * acc[i]) : (float)(alpha * acc[i] + beta * (double)dst[i]);
}
static cudnnStatus_t ws_check(void *ws, size_t wsb)
{
    if (wsb < EMU_WS || !ws) return CUDNN_STATUS_BAD_PARAM;
    memset(ws, 0xab, EMU_WS); // the workspace is scribbled on
    emu_cudnn_calls++;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t, const void *alpha, cudnnTensorDescriptor_t xd, const void *x, cudnnFilterDescriptor_t wd, const void *w, cudnnConvolutionDescriptor_t cd, cudnnConvolutionFwdAlgo_t, void *ws, size_t wsb, const void *beta, cudnnTensorDescriptor_t yd, void *y)
{
    if (ws_check(ws, wsb)) return CUDNN_STATUS_BAD_PARAM;
    std::vector<double> acc((size_t)yd->n * yd->c * yd->h * yd->w, 0.0);
    conv_visit(xd, wd, cd, [&](size_t xi, size_t wi, size_t yi) { acc[yi] += (double)((const float *)x)[xi] * ((const float *)w)[wi]; });
    blend((float *)y, acc, *(const float *)alpha, *(const float *)beta);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t, const void *alpha, cudnnFilterDescriptor_t wd, const void *w, cudnnTensorDescriptor_t dyd, const void *dy, cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdDataAlgo_t, void *ws, size_t wsb, const void *beta, cudnnTensorDescriptor_t dxd, void *dx)
{
    if (ws_check(ws, wsb)) return CUDNN_STATUS_BAD_PARAM;
    (void)dyd;
    std::vector<double> acc((size_t)dxd->n * dxd->c * dxd->h * dxd->w, 0.0);
    conv_visit(dxd, wd, cd, [&](size_t xi, size_t wi, size_t yi) { acc[xi] += (double)((const float *)dy)[yi] * ((const float *)w)[wi]; });
    blend((float *)dx, acc, *(const float *)alpha, *(const float *)beta);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t, const void *alpha, cudnnTensorDescriptor_t xd, const void *x, cudnnTensorDescriptor_t dyd, const void *dy, cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdFilterAlgo_t, void *ws, size_t wsb, const void *beta, cudnnFilterDescriptor_t dwd, void *dw)
{
    if (ws_check(ws, wsb)) return CUDNN_STATUS_BAD_PARAM;
    (void)dyd;
    std::vector<double> acc((size_t)dwd->n * dwd->c * dwd->h * dwd->w, 0.0);
    conv_visit(xd, dwd, cd, [&](size_t xi, size_t wi, size_t yi) { acc[wi] += (double)((const float *)dy)[yi] * ((const float *)x)[xi]; });
    blend((float *)dw, acc, *(const float *)alpha, *(const float *)beta);
    return CUDNN_STATUS_SUCCESS;
}

__attribute__((destructor)) static void emu_stats()
{
    fprintf(stderr, "emu: %ld launches, %ld threads (%s order), %zu static shared arrays poisoned, %ld cuDNN "
            "calls, FAST_16BF GEMMs seen: %d, bf16-operand GEMMs seen: %d\n", emu_launches, emu_threads,
            reverse_order() ? "reverse" : "forward", shared_poisoned, emu_cudnn_calls, bf16_mode_seen,
            bf16_operands_seen);
}
