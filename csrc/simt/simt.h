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
//   simt::atomic_load(p)        an acquire load of a flag or counter another block writes
//   simt::pinned_empty(n)       host int64 staging memory for uploads
//   simt::concurrently(n, f)    f(0..n-1) as independent work: one stream each on the GPU
//   simt::multiprocessor_count(), simt::max_shared_bytes_per_block(),
//   simt::resident_blocks_per_sm(kernel, threads, shared_bytes)   to size cooperative grids
// Everything else (__syncthreads, __shfl_*_sync, atomicAdd, __threadfence, threadIdx, ...)
// is spelled as in CUDA.
//
// The code of the two builds lives in two inline namespaces, gpu and emulated, so that both
// link into one library without clashing while call sites keep writing fastlstm::cuda::X.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cstdint>
#include <utility>

#if defined(FASTLSTM_SIMT_EMULATE)

#include "cuda_api_emulated.h"
#include "emulator.h"

#define FASTLSTM_SIMT_TARGET emulated

namespace fastlstm::simt {
inline cudaStream_t current_stream() { return cudaStream_t{}; }
inline cublasHandle_t blas_handle() { return emulated_blas_handle(); }
inline at::Tensor pinned_empty(int64_t n) { return at::empty({n}, at::kLong); }
template <typename F>
void concurrently(int64_t n, const F& f) {
  for (int64_t i = 0; i < n; ++i) f(i);
}
// An emulated device: a few multiprocessors, so that cooperative grids stay small, with the
// shared memory of a Hopper SM.
inline int multiprocessor_count() { return 6; }
inline size_t max_shared_bytes_per_block() { return 227 * 1024; }
template <typename Kernel>
int resident_blocks_per_sm(Kernel, int, size_t) {
  return 1;
}
}  // namespace fastlstm::simt

#define C10_CUDA_CHECK(expr)                                                         \
  do {                                                                               \
    const cudaError_t fastlstm_err = (expr);                                         \
    TORCH_CHECK(fastlstm_err == cudaSuccess, "fastlstm: emulated CUDA call failed: ", \
                #expr);                                                              \
  } while (0)

#else  // the real GPU: nvcc for kernels, the host compiler for host code

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdlib>
#include <cstring>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#define FASTLSTM_SIMT_TARGET gpu

namespace fastlstm::simt {

inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream(); }
inline cublasHandle_t blas_handle() { return at::cuda::getCurrentCUDABlasHandle(); }
inline at::Tensor pinned_empty(int64_t n) {
  return at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
}

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
  const at::cuda::CUDAStream main = at::cuda::getCurrentCUDAStream();
  at::cuda::CUDAEvent forked;
  forked.record(main);
  f(0);
  for (int64_t i = 1; i < n; ++i) {
    const at::cuda::CUDAStream side = at::cuda::getStreamFromPool(false, main.device_index());
    forked.block(side);
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      f(i);
    }
    at::cuda::CUDAEvent joined;
    joined.record(side);
    joined.block(main);
  }
}

#if defined(__CUDACC__)
template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes,
            Args&&... args) {
  kernel<<<grid, block, shared_bytes, current_stream()>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Every block must be resident at once (grid barriers): the caller sizes the grid from the
// occupancy API, and the driver refuses a grid that does not fit instead of deadlocking.
template <typename... KernelArgs, typename... Args>
void launch_cooperative(void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                        size_t shared_bytes, Args&&... args) {
  void* ptrs[] = {const_cast<void*>(static_cast<const void*>(&args))...};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel), grid, block, ptrs,
                                             shared_bytes, current_stream()));
}

inline int multiprocessor_count() {
  return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}
inline size_t max_shared_bytes_per_block() {
  return at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
}
// Blocks of `kernel` that fit on one SM at once with this much dynamic shared memory (which
// the kernel is first allowed to use, past the 48 KiB default).
template <typename... KernelArgs>
int resident_blocks_per_sm(void (*kernel)(KernelArgs...), int threads, size_t shared_bytes) {
  C10_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(shared_bytes)));
  int blocks = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &blocks, reinterpret_cast<const void*>(kernel), threads, shared_bytes));
  return blocks;
}

template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char fastlstm_dynamic_shared[];
  return reinterpret_cast<T*>(fastlstm_dynamic_shared);
}

__device__ __forceinline__ void spin_pause() { __nanosleep(32); }

template <typename T>
__device__ __forceinline__ T atomic_load(const T* p) {
  return *reinterpret_cast<const volatile T*>(p);
}
#endif  // __CUDACC__

}  // namespace fastlstm::simt

#endif  // FASTLSTM_SIMT_EMULATE
