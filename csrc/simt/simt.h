// The one portability header of the CUDA kernels in csrc/cuda/.
//
// A kernel has one body. nvcc builds it for the GPU; with FASTLSTM_SIMT_EMULATE defined, the
// host compiler builds the same body for the CPU, where every CUDA thread runs as a fiber
// (csrc/simt/emulator.h). Kernels and their host-side launch code use only what this header
// offers beyond plain CUDA C++:
//   simt::launch(kernel, grid, block, shared_bytes, args...)              <<<...>>> on the stream
//   simt::launch_cooperative(kernel, grid, block, shared_bytes, args...)  all blocks co-resident
//   simt::current_stream(), simt::blas_handle()                           torch's stream, cuBLAS
//   simt::dynamic_shared<T>()   the block's dynamic shared memory (race-checked when emulated)
//   simt::spin_pause()          inside spin-waits (a fiber must yield on the CPU)
//   simt::atomic_load(p)        a load of a flag or counter another block writes (relaxed: a
//                               volatile load; __threadfence after it for acquire)
//   simt::pinned_empty(n)       host int64 staging memory for uploads
//   FASTLSTM_CUDA_CHECK(call)   a CUDA runtime call that must succeed
//   simt::concurrently(n, f)    f(0..n-1) as independent work: one stream each on the GPU
//   simt::multiprocessor_count(), simt::max_dynamic_shared_bytes(kernel),
//   simt::resident_blocks_per_sm(kernel, threads, shared_bytes)   to size cooperative grids
//   simt::device_key()          what launch plans computed for the current device depend on
//   simt::mma_m16n8k16<T>(d, a, b), simt::pack_pair(lo, hi)   tensor cores (Half, BFloat16)
//   simt::load_pair(row, i), simt::store_pair(row, i, v)   two 16-bit elements as one word
//   simt::mma_m16n8k8_tf32(d, a, b), simt::tf32_bits(x)      tensor cores in TF32 (float)
//   simt::launch_clustered(kernel, grid, block, cluster_blocks, shared_bytes, args...),
//   simt::max_cluster_blocks(kernel, threads, shared_bytes), simt::cluster_sync()
//                               thread-block clusters (Hopper) and their barrier
//   simt::cluster_dynamic_shared<T>(rank)   another block's shared memory in the cluster (DSMEM)
//   FASTLSTM_UNROLL             #pragma unroll for nvcc (register arrays indexed by the loop)
// Everything else (__syncthreads, __shfl_*_sync, atomicAdd, __threadfence, threadIdx, ...)
// is spelled as in CUDA.
//
// The code of the two builds lives in two inline namespaces, gpu and emulated, so that both
// link into one library without clashing while call sites keep writing fastlstm::cuda::X.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "../torch_api.h"

#if defined(__CUDACC__)
#define FASTLSTM_UNROLL _Pragma("unroll")
#else
#define FASTLSTM_UNROLL
#endif

namespace fastlstm::simt {
// The device (and, under emulation, its emulated options) a kernel attribute or a launch plan
// was computed for: see device_key().
using DeviceKey = std::array<int64_t, 5>;
}  // namespace fastlstm::simt

#if defined(FASTLSTM_SIMT_EMULATE)

#include "cuda_api_emulated.h"
#include "emulator.h"

#define FASTLSTM_SIMT_TARGET emulated

namespace fastlstm::simt {
inline cudaStream_t current_stream() { return cudaStream_t{}; }
inline cublasHandle_t blas_handle() { return emulated_blas_handle(); }
inline Tensor pinned_empty(int64_t n) { return empty_cpu({n}, kLong); }
template <typename F>
void concurrently(int64_t n, const F& f) {
  for (int64_t i = 0; i < n; ++i) f(i);
}
// The emulated device of simt::options().
inline int multiprocessor_count() { return options().multiprocessors; }
inline size_t max_shared_bytes_per_block() {
  return static_cast<size_t>(options().shared_bytes_per_block);
}
inline namespace emulated {
// Every option a test may change between calls that a plan depends on: a changed emulated
// device is another device.
inline DeviceKey device_key() {
  const Options& o = options();
  return {o.multiprocessors, o.shared_bytes_per_block, o.cluster_blocks, o.static_shared_bytes,
          o.tf32 ? 1 : 0};
}
}  // namespace emulated
}  // namespace fastlstm::simt

#define FASTLSTM_CUDA_CHECK(expr)                                                       \
  do {                                                                                  \
    const cudaError_t fastlstm_err = (expr);                                            \
    FASTLSTM_CHECK(fastlstm_err == cudaSuccess, "fastlstm: emulated CUDA call failed: ", \
                   #expr);                                                              \
  } while (0)

#else  // the real GPU: nvcc for kernels, the host compiler for host code

#include <cublas_v2.h>
#include <cuda_runtime.h>
#if defined(__CUDACC__)
#include <cooperative_groups.h>  // cluster_dynamic_shared
#endif
#include <torch/csrc/inductor/aoti_torch/c/shim.h>  // the current CUDA stream, a stream guard
#include <torch/csrc/stable/c/shim.h>               // torch's cuBLAS handle, pool streams

#include <cstdlib>
#include <cstring>

#define FASTLSTM_SIMT_TARGET gpu

#define FASTLSTM_CUDA_CHECK(expr)                                                          \
  do {                                                                                     \
    const cudaError_t fastlstm_err = (expr);                                               \
    FASTLSTM_CHECK(fastlstm_err == cudaSuccess, "fastlstm: CUDA error: ",                  \
                   cudaGetErrorString(fastlstm_err), " (", #expr, ")");                    \
  } while (0)

namespace fastlstm::simt {

inline int current_device() {
  int device = 0;
  FASTLSTM_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}
// torch's current stream on the current device (set by the op's device guard).
inline cudaStream_t current_stream() {
  void* stream = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(current_device(), &stream));
  return static_cast<cudaStream_t>(stream);
}
// torch's cuBLAS handle for the current device, bound to the current stream; its math mode
// says whether torch allows TF32 for matmuls.
inline cublasHandle_t blas_handle() {
  void* handle = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(torch_get_current_cuda_blas_handle(&handle));
  return static_cast<cublasHandle_t>(handle);
}
inline Tensor pinned_empty(int64_t n) { return empty_cpu({n}, kLong, /*pinned=*/true); }

// A CUDA event without timing, destroyed with the object (after the work it marks, as CUDA
// defers the release).
class Event {
 public:
  Event() { FASTLSTM_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~Event() { cudaEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(cudaStream_t s) { FASTLSTM_CUDA_CHECK(cudaEventRecord(event_, s)); }
  void block(cudaStream_t s) { FASTLSTM_CUDA_CHECK(cudaStreamWaitEvent(s, event_, 0)); }

 private:
  cudaEvent_t event_ = nullptr;
};

// torch's current stream set to `stream` for the object's lifetime.
class StreamGuard {
 public:
  StreamGuard(cudaStream_t stream, int device) {
    STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_create_cuda_stream_guard(stream, device, &guard_));
  }
  ~StreamGuard() { aoti_torch_delete_cuda_stream_guard(guard_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  CUDAStreamGuardHandle guard_ = nullptr;
};

// f(0) on the current stream, f(1..n-1) each on a pool stream that first waits for the current
// one; the current stream then waits for all of them, so callers see plain stream order.
// FASTLSTM_CUDA_SERIAL_DIRECTIONS=1 runs them one after the other on the current stream.
template <typename F>
void concurrently(int64_t n, const F& f) {
  static const bool serial = [] {
    const char* v = std::getenv("FASTLSTM_CUDA_SERIAL_DIRECTIONS");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  if (n <= 1 || serial) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  const int device = current_device();
  const cudaStream_t main = current_stream();
  Event forked;
  forked.record(main);
  f(0);
  for (int64_t i = 1; i < n; ++i) {
    void* side = nullptr;
    STABLE_TORCH_ERROR_CODE_CHECK(torch_get_cuda_stream_from_pool(false, device, &side));
    forked.block(static_cast<cudaStream_t>(side));
    {
      const StreamGuard guard(static_cast<cudaStream_t>(side), device);
      f(i);
    }
    Event joined;
    joined.record(static_cast<cudaStream_t>(side));
    joined.block(main);
  }
}

inline int multiprocessor_count() {
  int v = 0;
  FASTLSTM_CUDA_CHECK(
      cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, current_device()));
  return v;
}
inline size_t max_shared_bytes_per_block() {
  int v = 0;
  FASTLSTM_CUDA_CHECK(
      cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, current_device()));
  return static_cast<size_t>(v);
}
inline namespace gpu {
inline DeviceKey device_key() { return {current_device(), 0, 0, 0, 0}; }
}  // namespace gpu

#if defined(__CUDACC__)
template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes,
            Args&&... args) {
  kernel<<<grid, block, shared_bytes, current_stream()>>>(std::forward<Args>(args)...);
  FASTLSTM_CUDA_CHECK(cudaGetLastError());
}

// Every block must be resident at once (grid barriers): the caller sizes the grid from the
// occupancy API, and the driver refuses a grid that does not fit instead of deadlocking.
template <typename... KernelArgs, typename... Args>
void launch_cooperative(void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                        size_t shared_bytes, Args&&... args) {
  void* ptrs[] = {const_cast<void*>(static_cast<const void*>(&args))...};
  FASTLSTM_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel), grid, block,
                                                  ptrs, shared_bytes, current_stream()));
}

// Thread-block clusters (Hopper on): consecutive groups of cluster_blocks blocks are scheduled
// together and can meet at simt::cluster_sync(). The grid must divide into clusters.
template <typename... KernelArgs, typename... Args>
void launch_clustered(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, int cluster_blocks,
                      size_t shared_bytes, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = current_stream();
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = static_cast<unsigned>(cluster_blocks);
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  FASTLSTM_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

// Every thread of the calling thread's cluster arrives before any leaves; writes before it
// (shared or global) are visible to the cluster after it (release/acquire).
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;"
               ::: "memory");
#else
  __trap();  // launch_clustered is only used where max_cluster_blocks() > 0
#endif
}

template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char fastlstm_dynamic_shared[];
  return reinterpret_cast<T*>(fastlstm_dynamic_shared);
}

// Distributed shared memory (Hopper on): the dynamic shared memory of block `rank` of the
// calling thread's cluster, as a generic pointer. Accesses through it are ordered by
// cluster_sync; a block must not exit while others may still touch its memory.
template <typename T>
__device__ __forceinline__ T* cluster_dynamic_shared(unsigned rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return cooperative_groups::this_cluster().map_shared_rank(dynamic_shared<T>(), rank);
#else
  __trap();  // launch_clustered is only used where max_cluster_blocks() > 0
  return nullptr;
#endif
}

__device__ __forceinline__ void spin_pause() { __nanosleep(32); }

template <typename T>
__device__ __forceinline__ T atomic_load(const T* p) {
  return *reinterpret_cast<const volatile T*>(p);
}
#endif  // __CUDACC__

}  // namespace fastlstm::simt

#endif  // FASTLSTM_SIMT_EMULATE

// Kernel attributes and occupancy, for launch plans (both builds: the emulated runtime answers
// the same calls for its emulated device, and counts them).
namespace fastlstm::simt {
inline namespace FASTLSTM_SIMT_TARGET {

// Kernel attributes already set, per (kernel, attribute, device): an attribute stays set for
// the process, so each is set once, not on every plan.
struct AttributeRegistry {
  std::mutex mutex;
  std::map<std::tuple<const void*, int, DeviceKey>, bool> done;  // set()'s result
};
inline AttributeRegistry& attribute_registry() {
  static AttributeRegistry registry;
  return registry;
}
// set() the first time this (kernel, attribute) comes on the current device, else its result
// then. A set() that throws is not recorded.
template <typename Set>
bool set_once(const void* kernel, int attribute, const Set& set) {
  AttributeRegistry& r = attribute_registry();
  const auto key = std::make_tuple(kernel, attribute, device_key());
  const std::lock_guard<std::mutex> lock(r.mutex);
  const auto it = r.done.find(key);
  if (it != r.done.end()) return it->second;
  const bool ok = set();
  r.done.emplace(key, ok);
  return ok;
}

// The dynamic shared memory a block of `kernel` may ask for: the device's opt-in per block
// less the kernel's own static shared memory (the runtime refuses dynamic + static beyond
// the opt-in). Every plan compares against this figure, and allow_all_shared_memory sets it.
template <typename... KernelArgs>
size_t max_dynamic_shared_bytes(void (*kernel)(KernelArgs...)) {
  cudaFuncAttributes attributes = {};
  FASTLSTM_CUDA_CHECK(cudaFuncGetAttributes(&attributes, reinterpret_cast<const void*>(kernel)));
  const size_t optin = max_shared_bytes_per_block();
  return attributes.sharedSizeBytes < optin ? optin - attributes.sharedSizeBytes : 0;
}

// Lets `kernel` use max_dynamic_shared_bytes (past the 48 KiB default), once per device.
// Never lowered, so that no plan undoes what another thread's launch relies on; occupancy
// queries take their own byte count.
template <typename... KernelArgs>
void allow_all_shared_memory(void (*kernel)(KernelArgs...)) {
  const void* f = reinterpret_cast<const void*>(kernel);
  set_once(f, static_cast<int>(cudaFuncAttributeMaxDynamicSharedMemorySize), [&] {
    FASTLSTM_CUDA_CHECK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(max_dynamic_shared_bytes(kernel))));
    return true;
  });
}

// Blocks of `kernel` that fit on one SM at once with this much dynamic shared memory.
template <typename... KernelArgs>
int resident_blocks_per_sm(void (*kernel)(KernelArgs...), int threads, size_t shared_bytes) {
  allow_all_shared_memory(kernel);
  int blocks = 0;
  FASTLSTM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &blocks, reinterpret_cast<const void*>(kernel), threads, shared_bytes));
  return blocks;
}

// The largest cluster of `kernel` blocks the device can schedule with this much dynamic shared
// memory per block (non-portable sizes allowed: 16 on an H100); 0 where there are no clusters:
// a device before Hopper, a kernel whose code was not compiled for sm_90 or later (its
// cluster_sync would trap), or a query the device refuses.
template <typename... KernelArgs>
int max_cluster_blocks(void (*kernel)(KernelArgs...), int threads, size_t shared_bytes) {
  const void* f = reinterpret_cast<const void*>(kernel);
#if !defined(FASTLSTM_SIMT_EMULATE)
  int major = 0;
  FASTLSTM_CUDA_CHECK(
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, current_device()));
  if (major < 9) return 0;
  cudaFuncAttributes attributes = {};
  FASTLSTM_CUDA_CHECK(cudaFuncGetAttributes(&attributes, f));
  if (attributes.ptxVersion < 90) return 0;
#endif
  allow_all_shared_memory(kernel);
  const bool non_portable =
      set_once(f, static_cast<int>(cudaFuncAttributeNonPortableClusterSizeAllowed), [&] {
        return cudaFuncSetAttribute(f, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) ==
               cudaSuccess;
      });
  cudaLaunchConfig_t config = {};
#if !defined(FASTLSTM_SIMT_EMULATE)  // emulated: blockDim and gridDim are the kernels' macros
  config.gridDim = dim3(32);
  config.blockDim = dim3(static_cast<unsigned>(threads));
#endif
  config.dynamicSmemBytes = shared_bytes;
  int blocks = 0;
  if (!non_portable || cudaOccupancyMaxPotentialClusterSize(&blocks, f, &config) != cudaSuccess) {
#if !defined(FASTLSTM_SIMT_EMULATE)
    (void)cudaGetLastError();  // not sticky: clear it, and take the grid instead
#endif
    return 0;
  }
  return blocks;
}

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::simt

namespace fastlstm::simt {
// Descending sort of a 1-D int64 tensor on its device: (sorted keys, their indices). With
// stable = false equal keys may come out in any order, as on a GPU; under emulation they are
// then shuffled (from the schedule seed), so that the emulator is never kinder than the GPU to
// code that relies on an order the flag does not promise (torch's CPU sort keeps small inputs'
// ties in order whatever the flag says).
#if defined(FASTLSTM_SIMT_EMULATE)
std::pair<Tensor, Tensor> sort_descending(const Tensor& keys, bool stable);
#else
inline std::pair<Tensor, Tensor> sort_descending(const Tensor& keys, bool stable) {
  auto [sorted, order] = call_op<2>("aten::sort", "stable", keys, std::optional<bool>(stable),
                                    /*dim=*/int64_t{0}, /*descending=*/true);
  return {sorted, order};
}
#endif
}  // namespace fastlstm::simt

// Tensor cores, for kernels of Half or BFloat16 (both builds).
#if defined(FASTLSTM_SIMT_EMULATE) || defined(__CUDACC__)
#include <type_traits>

namespace fastlstm::simt {

// Whether the code being compiled can use mma_m16n8k16 (sm_80 on; always under emulation).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
inline constexpr bool kHasMma = false;
#else
inline constexpr bool kHasMma = true;
#endif

// Two 16-bit values packed into one 32-bit mma operand register, lo in the low half.
template <typename T>
__device__ __forceinline__ uint32_t pack_pair(T lo, T hi) {
  static_assert(std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>, "16-bit types only");
  return static_cast<uint32_t>(lo.x) | (static_cast<uint32_t>(hi.x) << 16);
}

// Elements i and i + 1 of a row of 16-bit values as one mma operand register, lo = element i:
// one 32-bit load where the pair is 4-byte aligned (rows padded to even lengths in shared
// memory always are), two 16-bit loads otherwise.
template <typename T>
__device__ __forceinline__ uint32_t load_pair(const T* row, int64_t i) {
  static_assert(sizeof(T) == 2, "pairs of 16-bit elements only");
  if ((reinterpret_cast<uintptr_t>(row + i) & 3u) == 0)
    return *reinterpret_cast<const uint32_t*>(row + i);
  return pack_pair(row[i], row[i + 1]);
}
template <typename T>
__device__ __forceinline__ uint32_t load_pair(T* row, int64_t i) {
  return load_pair(static_cast<const T*>(row), i);
}
// The same where the pair is known to be 4-byte aligned (rows of shared memory padded to even
// lengths): one 32-bit load, no test.
template <typename T>
__device__ __forceinline__ uint32_t load_aligned_pair(const T* row, int64_t i) {
  static_assert(sizeof(T) == 2, "pairs of 16-bit elements only");
  return *reinterpret_cast<const uint32_t*>(row + i);
}
template <typename T>
__device__ __forceinline__ uint32_t load_aligned_pair(T* row, int64_t i) {
  return load_aligned_pair(static_cast<const T*>(row), i);
}
// The pair v (lo = element i) stored at elements i and i + 1 of a row as one 32-bit store; i
// must be even and the row 4-byte aligned (rows padded to even lengths in shared memory).
template <typename T>
__device__ __forceinline__ void store_pair(T* row, int64_t i, uint32_t v) {
  static_assert(sizeof(T) == 2, "pairs of 16-bit elements only");
  *reinterpret_cast<uint32_t*>(row + i) = v;
}
#if defined(FASTLSTM_SIMT_EMULATE)
template <typename T>
uint32_t load_pair(const SharedArray<T>& row, int64_t i) {
  return row.pair(i);
}
template <typename T>
uint32_t load_aligned_pair(const SharedArray<T>& row, int64_t i) {
  return row.pair(i);  // the emulator refuses a misaligned one, as the GPU faults
}
template <typename T>
void store_pair(const SharedArray<T>& row, int64_t i, uint32_t v) {
  row.set_pair(i, v);
}
#endif

// d += A B for one warp: PTX mma.sync.aligned.m16n8k16.row.col.f32 with T inputs (every lane
// of the warp calls it). Fragments, with group = lane / 4 and pos = lane % 4:
//   a[r] holds A (16 x 16) row group + 8 * (r & 1), columns 2 * pos + 8 * (r >> 1) and the next;
//   b[r] holds B (16 x 8) rows 2 * pos + 8 * r and the next, column group;
//   d[i] is D (16 x 8) row group + 8 * (i >> 1), column 2 * pos + (i & 1).
// Under emulation the warp gathers the fragments and computes the same product.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
  static_assert(std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>, "16-bit types only");
#if defined(FASTLSTM_SIMT_EMULATE)
  warp_mma_m16n8k16(a, b, d, std::is_same_v<T, BFloat16>);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // no m16n8k16 before sm_80: kernels test kHasMma first
#else
  if constexpr (std::is_same_v<T, BFloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}

// The TF32 operand of a float: round to nearest (ties away), the low 13 bits cleared, as
// PTX cvt.rna.tf32.f32 gives it.
__device__ __forceinline__ uint32_t tf32_bits(float x) {
#if defined(FASTLSTM_SIMT_EMULATE)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & ~0x1fffu;  // inf, nan kept
  return u;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // kernels test kHasMma first
  return 0;
#else
  uint32_t u;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(u) : "f"(x));
  return u;
#endif
}

// d += A B for one warp in TF32 (fp32 accumulation): PTX mma.sync.aligned.m16n8k8.row.col
// .f32.tf32.tf32.f32, operands from tf32_bits. Fragments, with group = lane / 4 and
// pos = lane % 4:
//   a[r] holds A (16 x 8) row group + 8 * (r & 1), column pos + 4 * (r >> 1);
//   b[r] holds B (8 x 8) row pos + 4 * r, column group;
//   d[i] is D (16 x 8) row group + 8 * (i >> 1), column 2 * pos + (i & 1).
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4],
                                                 const uint32_t (&b)[2]) {
#if defined(FASTLSTM_SIMT_EMULATE)
  warp_mma_m16n8k8_tf32(a, b, d);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // kernels test kHasMma first
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

}  // namespace fastlstm::simt
#endif
