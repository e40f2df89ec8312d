// The emulator's ops for tests (one translation unit):
//   torch.ops.fastlstm._simt_emulate(enabled, seed, race_check, device_lengths,
//       multiprocessors, shared_bytes_per_block, cluster_blocks, tf32, debug_alloc,
//       static_shared_bytes, weak_memory)  route the CPU ops through the CUDA backend
//       under the emulator, with this schedule seed and race checking; device_lengths: lengths
//       count as GPU-resident (the no-sync path); the emulated device's SMs, shared memory and
//       largest thread-block cluster; tf32: its cuBLAS handle allows TF32 (as torch's does with
//       allow_tf32); static_shared_bytes: every emulated kernel's static shared memory;
//       weak_memory: per-block store buffers and stale views of global memory (emulator.cpp)
//   torch.ops.fastlstm._simt_launch_count()   emulated kernel launches so far
//   torch.ops.fastlstm._simt_counter(name)    "mma": emulated warp-level tensor-core products so
//       far; "cluster_barriers": completed cluster barriers; "dsmem": accesses to another block's
//       shared memory (distributed shared memory); "attribute_queries", "attribute_sets",
//       "occupancy_queries", "cluster_queries": the emulated runtime's cudaFuncGetAttributes,
//       cudaFuncSetAttribute, cudaOccupancyMaxActiveBlocksPerMultiprocessor and
//       cudaOccupancyMaxPotentialClusterSize calls (launch plans)
//   torch.ops.fastlstm._simt_selftest(name, x)  small kernels that show the emulator's checks
//       work, some deliberately broken; tests/test_simt.py expects those to be caught
// and declares the CUDA backend's device-built schedule as an op of its own, for tests:
//   torch.ops.fastlstm._device_schedule(lengths, T) -> (order, sorted_lengths, active, offsets)
// (CUDA tensors: the GPU kernels; CPU tensors: the same kernels under the emulator.)
#define FASTLSTM_SIMT_EMULATE 1

#include <torch/csrc/stable/library.h>

#include <atomic>
#include <cstring>
#include <string>

#include "../cuda/grid_barrier.cuh"
#include "../debug_alloc.h"
#include "emulated_ops.h"
#include "../simt/simt.h"

namespace fastlstm::simt {
namespace {

std::atomic<bool> g_enabled{false};

void simt_emulate(bool enabled, int64_t seed, bool race_check, bool device_lengths,
                  int64_t multiprocessors, int64_t shared_bytes_per_block,
                  int64_t cluster_blocks, bool tf32, bool debug_alloc,
                  int64_t static_shared_bytes, bool weak_memory) {
  FASTLSTM_CHECK_VALUE(seed >= 0, "fastlstm: _simt_emulate: seed must be >= 0, got ", seed);
  FASTLSTM_CHECK_VALUE(multiprocessors >= 1 && multiprocessors <= 1024,
                       "fastlstm: _simt_emulate: multiprocessors must be in [1, 1024], got ",
                       multiprocessors);
  FASTLSTM_CHECK_VALUE(shared_bytes_per_block >= 0,
                       "fastlstm: _simt_emulate: shared_bytes_per_block must be >= 0, got ",
                       shared_bytes_per_block);
  FASTLSTM_CHECK_VALUE(cluster_blocks >= 0 && cluster_blocks <= 16,
                       "fastlstm: _simt_emulate: cluster_blocks must be in [0, 16], got ",
                       cluster_blocks);
  FASTLSTM_CHECK_VALUE(static_shared_bytes >= 0,
                       "fastlstm: _simt_emulate: static_shared_bytes must be >= 0, got ",
                       static_shared_bytes);
  options().seed = static_cast<uint64_t>(seed);
  options().race_check = race_check;
  options().device_lengths = device_lengths;
  options().multiprocessors = static_cast<int>(multiprocessors);
  options().shared_bytes_per_block = shared_bytes_per_block;
  options().cluster_blocks = static_cast<int>(cluster_blocks);
  options().tf32 = tf32;
  options().static_shared_bytes = static_shared_bytes;
  options().weak_memory = enabled && weak_memory;
  debug_alloc::set_enabled(enabled && debug_alloc);
  g_enabled = enabled;
}

int64_t simt_launch_count() { return launch_count(); }
int64_t simt_counter(const std::string& name) {
  if (name == "mma") return mma_count();
  if (name == "dsmem") return dsmem_access_count();
  if (name == "shared_read_bytes") return shared_read_bytes();
  if (name == "shared_write_bytes") return shared_write_bytes();
  if (name == "shuffles") return shuffle_count();
  const int64_t calls = runtime_call_count(name.c_str());
  if (calls >= 0) return calls;
  FASTLSTM_CHECK_VALUE(name == "cluster_barriers", "fastlstm: _simt_counter: name must be one "
                       "of mma, cluster_barriers, dsmem, shared_read_bytes, shared_write_bytes, "
                       "shuffles, attribute_queries, attribute_sets, "
                       "occupancy_queries, cluster_queries; got '", name, "'");
  return cluster_barrier_count();
}

// out[0] = sum(x), one block of n threads, a shared-memory tree (n a power of two).
__global__ void block_sum(const float* x, float* out) {
  auto s = dynamic_shared<float>();
  const unsigned t = threadIdx.x;
  s[t] = x[t];
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (t < half) s[t] = s[t] + s[t + half];
    __syncthreads();
  }
  if (t == 0) out[0] = s[0];
}

// Broken on purpose: the first level reads neighbours' slots before the barrier.
__global__ void block_sum_missing_barrier(const float* x, float* out) {
  auto s = dynamic_shared<float>();
  const unsigned t = threadIdx.x;
  s[t] = x[t];
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (t < half) s[t] = s[t] + s[t + half];
    __syncthreads();
  }
  if (t == 0) out[0] = s[0];
}

// Warp shuffles: each warp reduces its 32 values, lane 0 adds them to out[0].
__global__ void warp_sum(const float* x, float* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = x[i];
  for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
  if (threadIdx.x % 32 == 0) atomicAdd(out, v);
}

// out[0] = number of positive x, through warp ballots.
__global__ void ballot_count(const float* x, float* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned bits = __ballot_sync(0xffffffffu, x[i] > 0.0f);
  if (threadIdx.x % 32 == 0) atomicAdd(out, static_cast<float>(__builtin_popcount(bits)));
}

// Cooperative: every block writes its partial sum, a grid barrier, then block 0 adds them.
// work[0] is the barrier counter, work[1 + b] block b's partial.
__global__ void grid_sum(const float* x, float* out, unsigned* counter, float* partial) {
  unsigned generation = 0;
  if (threadIdx.x == 0) {
    float acc = 0;
    for (unsigned k = 0; k < blockDim.x; ++k) acc += x[blockIdx.x * blockDim.x + k];
    partial[blockIdx.x] = acc;
  }
  cuda::grid_barrier(counter, gridDim.x, generation);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    float acc = 0;
    for (unsigned b = 0; b < gridDim.x; ++b) acc += partial[b];
    out[0] = acc;
  }
}

// cuda::grid_barrier (csrc/cuda/grid_barrier.cuh) with its release or its acquire fence
// removed when kRelease or kAcquire is false: broken on purpose, for the weak-memory mode.
template <bool kRelease, bool kAcquire>
__device__ void grid_barrier_variant(unsigned* counter, unsigned blocks, unsigned& generation) {
  if (kRelease && kAcquire) return cuda::grid_barrier(counter, blocks, generation);
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned target = (generation + 1) * blocks;
    if (kRelease) __threadfence();
    atomicAdd(counter, 1u);
    while (simt::atomic_load(counter) < target) simt::spin_pause();
    if (kAcquire) __threadfence();
  }
  ++generation;
  __syncthreads();
}

// Blocks exchange values through global memory, round after round, as the persistent kernels
// exchange h between steps: in round r block b's thread 0 writes slot[r % 2][b] = x[b] * (r + 1);
// a grid barrier; then thread t < gridDim.x of every block adds slot[r % 2][t] to its sum.
// out[b * gridDim.x + t] = x[t] * rounds * (rounds + 1) / 2 when every read saw that round's
// value. Two slot sets: round r + 2 overwrites a set only after round r + 1's barrier.
template <bool kRelease, bool kAcquire>
__global__ void grid_exchange(const float* x, float* out, unsigned* counter, float* slots,
                              int rounds) {
  unsigned generation = 0;
  const unsigned blocks = gridDim.x, t = threadIdx.x;
  float acc = 0;
  for (int r = 0; r < rounds; ++r) {
    float* slot = slots + (r % 2) * blocks;
    if (t == 0) slot[blockIdx.x] = x[blockIdx.x] * static_cast<float>(r + 1);
    grid_barrier_variant<kRelease, kAcquire>(counter, blocks, generation);
    if (t < blocks) acc += slot[t];
  }
  if (t < blocks) out[blockIdx.x * blocks + t] = acc;
}

// Thread-block clusters of 4 blocks: every block writes its partial sum, the cluster barrier,
// then each cluster's first block adds its cluster's partials to out[0].
__global__ void cluster_sum(const float* x, float* out, float* partial) {
  if (threadIdx.x == 0) {
    float acc = 0;
    for (unsigned k = 0; k < blockDim.x; ++k) acc += x[blockIdx.x * blockDim.x + k];
    partial[blockIdx.x] = acc;
  }
  cluster_sync();
  if (blockIdx.x % 4 == 0 && threadIdx.x == 0) {
    float acc = 0;
    for (unsigned b = blockIdx.x; b < blockIdx.x + 4; ++b) acc += partial[b];
    atomicAdd(out, acc);
  }
}

// Broken on purpose: the last block of each cluster leaves before the cluster barrier.
__global__ void cluster_barrier_skipped(const float* x, float* out, float* partial) {
  if (blockIdx.x % 4 == 3) return;
  cluster_sync();
  if (threadIdx.x == 0) out[0] = x[0] + partial[0];
}

// Distributed shared memory, in clusters of 4 blocks: a cluster barrier (every block of the
// cluster has started), each thread stores its value into the shared memory of the next block
// of its cluster (rank + 1, wrapping), the cluster barrier, then each thread writes what the
// previous block stored for it: out = x rotated by one block within each cluster. Broken on
// purpose as kNoStartBarrier (the first barrier missing: the next block may not have started)
// and kSyncthreads (__syncthreads instead of the second, which orders nothing across blocks).
enum class Ring { kCorrect, kNoStartBarrier, kSyncthreads };
template <Ring kRing>
__global__ void cluster_ring(const float* x, float* out) {
  const unsigned t = threadIdx.x, rank = blockIdx.x % 4, i = blockIdx.x * blockDim.x + t;
  if (kRing != Ring::kNoStartBarrier) cluster_sync();
  cluster_dynamic_shared<float>((rank + 1) % 4)[t] = x[i];
  if (kRing == Ring::kSyncthreads) {
    __syncthreads();
  } else {
    cluster_sync();
  }
  out[i] = dynamic_shared<float>()[t];
}

// Broken on purpose: a store into the next block's shared memory after the last cluster
// barrier, when that block may already have exited.
__global__ void cluster_store_after_exit(const float* x, float* out) {
  const unsigned t = threadIdx.x, rank = blockIdx.x % 4, i = blockIdx.x * blockDim.x + t;
  cluster_sync();
  out[i] = x[i];
  cluster_dynamic_shared<float>((rank + 1) % 4)[t] = x[i];
}

// Broken on purpose: odd threads leave before a barrier the others wait at.
__global__ void divergent_barrier(const float* x, float* out) {
  if (threadIdx.x % 2 == 1) return;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = x[0];
}

// One tensor-core product on one warp: x holds A [16, 16] then B [16, 8] (row-major, rounded
// to T); out [16, 8] = A B, through the documented fragment layout (simt::mma_m16n8k16).
template <typename T>
__global__ void mma_tile(const float* x, float* out) {
  const int lane = static_cast<int>(threadIdx.x), group = lane / 4, pos = lane % 4;
  const float* A = x;
  const float* B = x + 16 * 16;
  uint32_t a[4], b[2];
  for (int r = 0; r < 4; ++r) {
    const int row = group + 8 * (r & 1), col = 2 * pos + 8 * (r >> 1);
    a[r] = pack_pair(T(A[row * 16 + col]), T(A[row * 16 + col + 1]));
  }
  for (int r = 0; r < 2; ++r) {
    const int k = 2 * pos + 8 * r;
    b[r] = pack_pair(T(B[k * 8 + group]), T(B[(k + 1) * 8 + group]));
  }
  float d[4] = {0, 0, 0, 0};
  mma_m16n8k16<T>(d, a, b);
  for (int i = 0; i < 4; ++i) out[(group + 8 * (i >> 1)) * 8 + 2 * pos + (i & 1)] = d[i];
}

// One TF32 tensor-core product on one warp: x holds A [16, 8] then B [8, 8] (row-major, float);
// out [16, 8] = A B in TF32 (simt::tf32_bits rounding), through the documented fragment layout.
__global__ void mma_tf32_tile(const float* x, float* out) {
  const int lane = static_cast<int>(threadIdx.x), group = lane / 4, pos = lane % 4;
  const float* A = x;
  const float* B = x + 16 * 8;
  uint32_t a[4], b[2];
  for (int r = 0; r < 4; ++r) a[r] = tf32_bits(A[(group + 8 * (r & 1)) * 8 + pos + 4 * (r >> 1)]);
  for (int r = 0; r < 2; ++r) b[r] = tf32_bits(B[(pos + 4 * r) * 8 + group]);
  float d[4] = {0, 0, 0, 0};
  mma_m16n8k8_tf32(d, a, b);
  for (int i = 0; i < 4; ++i) out[(group + 8 * (i >> 1)) * 8 + 2 * pos + (i & 1)] = d[i];
}

// x[0..4) into shared memory as Half, then out[0] = the 32-bit pair of elements `at` and
// at + 1 (simt::load_pair): at = 0 is aligned, at = 1 is not, and must fail as on a GPU.
__global__ void shared_pair(const float* x, int64_t at, float* out) {
  auto s = dynamic_shared<Half>();
  if (threadIdx.x < 4) s[threadIdx.x] = Half(x[threadIdx.x]);
  __syncthreads();
  if (threadIdx.x == 0) {
    const uint32_t v = load_pair(s, at);
    Half lo, hi;
    std::memcpy(&lo, &v, 2);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + 2, 2);
    out[0] = static_cast<float>(lo) + 1000.0f * static_cast<float>(hi);
  }
}

// out[i] = x[i] for every thread i < n: into a buffer of n - 1 elements, the last store lands
// just past its end, which the debug allocator's guard must report (write_past_end).
__global__ void copy_into(const float* x, int64_t n, float* out) {
  const int64_t i = threadIdx.x;
  if (i < n) out[i] = x[i];
}

// The emulated device sort (simt::sort_descending) of int64 keys, with the schedule seed of
// the last _simt_emulate call: stable=false must shuffle ties.
std::tuple<Tensor, Tensor> simt_sort_descending(const Tensor& keys, bool stable) {
  FASTLSTM_CHECK_VALUE(keys.dim() == 1 && keys.scalar_type() == kLong,
                       "fastlstm: _simt_sort_descending: keys must be a 1-D int64 tensor, got ",
                       keys.dim(), "-D");
  auto [sorted, order] = sort_descending(keys, stable);
  return {sorted, order};
}

Tensor simt_selftest(const std::string& kernel, const Tensor& x_in) {
  FASTLSTM_CHECK_VALUE(x_in.scalar_type() == kFloat && x_in.dim() == 1 && x_in.is_cpu(),
                       "fastlstm: _simt_selftest: x must be a 1-D float32 CPU tensor, got ",
                       text(x_in.scalar_type()), " ", text(x_in.sizes()), " on ",
                       text(x_in.device()));
  const Tensor x = as_contiguous(x_in);
  const int64_t n = x.numel();
  const bool mma = kernel == "mma_f16" || kernel == "mma_bf16" || kernel == "mma_tf32";
  const bool ring = kernel == "cluster_ring" || kernel == "cluster_ring_unsynced" ||
                    kernel == "cluster_store_before_start" ||
                    kernel == "cluster_store_after_exit";
  const bool exchange = kernel == "grid_exchange" || kernel == "grid_exchange_no_release" ||
                        kernel == "grid_exchange_no_acquire";
  Tensor out = zeros_like_device({mma ? 16 * 8 : ring ? n : exchange ? n * n : 1}, kFloat, x);
  const float* xp = cptr<float>(x);
  float* op = ptr<float>(out);
  const unsigned threads = static_cast<unsigned>(n);
  if (kernel == "block_sum" || kernel == "block_sum_missing_barrier") {
    FASTLSTM_CHECK_VALUE(n >= 1 && n <= 1024 && (n & (n - 1)) == 0, "fastlstm: ", kernel,
                         ": x must have a power-of-two size up to 1024, got ", n);
    launch(kernel == "block_sum" ? block_sum : block_sum_missing_barrier, dim3(1), dim3(threads),
           n * sizeof(float), xp, op);
  } else if (kernel == "warp_sum" || kernel == "ballot_count") {
    FASTLSTM_CHECK_VALUE(n >= 64 && n % 64 == 0 && n <= 4096, "fastlstm: ", kernel,
                         ": x must have a size that is a multiple of 64, up to 4096, got ", n);
    launch(kernel == "warp_sum" ? warp_sum : ballot_count, dim3(unsigned(n / 64)), dim3(64), 0,
           xp, op);
  } else if (kernel == "grid_sum") {
    FASTLSTM_CHECK_VALUE(n >= 16 && n % 16 == 0 && n <= 1024, "fastlstm: grid_sum: x must "
                         "have a size that is a multiple of 16, up to 1024, got ", n);
    const unsigned blocks = static_cast<unsigned>(n / 16);
    Tensor counter = zeros_like_device({1}, kInt, x);
    Tensor partial = zeros_like_device({blocks}, kFloat, x);
    launch_cooperative(grid_sum, dim3(blocks), dim3(16), 0, xp, op, ptr<unsigned>(counter),
                       ptr<float>(partial));
  } else if (exchange) {
    // n blocks of 32 threads, 8 rounds.
    FASTLSTM_CHECK_VALUE(n >= 2 && n <= 32, "fastlstm: ", kernel, ": x must have 2 to 32 "
                         "values (one per block), got ", n);
    const auto k = kernel == "grid_exchange"            ? grid_exchange<true, true>
                   : kernel == "grid_exchange_no_release" ? grid_exchange<false, true>
                                                          : grid_exchange<true, false>;
    Tensor counter = zeros_like_device({1}, kInt, x);
    Tensor slots = zeros_like_device({2 * n}, kFloat, x);
    launch_cooperative(k, dim3(unsigned(n)), dim3(32), 0, xp, op, ptr<unsigned>(counter),
                       ptr<float>(slots), 8);
  } else if (kernel == "mma_tf32") {
    FASTLSTM_CHECK_VALUE(n == 16 * 8 + 8 * 8, "fastlstm: ", kernel, ": x must hold A [16, 8] "
                         "and B [8, 8], 192 values, got ", n);
    launch(mma_tf32_tile, dim3(1), dim3(32), 0, xp, op);
  } else if (mma) {
    FASTLSTM_CHECK_VALUE(n == 16 * 16 + 16 * 8, "fastlstm: ", kernel, ": x must hold A [16, 16] "
                         "and B [16, 8], 384 values, got ", n);
    launch(kernel == "mma_f16" ? mma_tile<Half> : mma_tile<BFloat16>, dim3(1), dim3(32), 0, xp,
           op);
  } else if (kernel == "cluster_sum" || kernel == "cluster_barrier_skipped") {
    FASTLSTM_CHECK_VALUE(n >= 64 && n % 64 == 0 && n <= 1024, "fastlstm: ", kernel, ": x must "
                         "have a size that is a multiple of 64, up to 1024, got ", n);
    const unsigned blocks = static_cast<unsigned>(n / 16);  // clusters of 4 blocks of 16
    Tensor partial = zeros_like_device({blocks}, kFloat, x);
    launch_clustered(kernel == "cluster_sum" ? cluster_sum : cluster_barrier_skipped,
                     dim3(blocks), dim3(16), 4, 0, xp, op, ptr<float>(partial));
  } else if (ring) {
    FASTLSTM_CHECK_VALUE(n >= 64 && n % 64 == 0 && n <= 1024, "fastlstm: ", kernel, ": x must "
                         "have a size that is a multiple of 64, up to 1024, got ", n);
    const auto k = kernel == "cluster_ring"                 ? cluster_ring<Ring::kCorrect>
                   : kernel == "cluster_ring_unsynced"      ? cluster_ring<Ring::kSyncthreads>
                   : kernel == "cluster_store_before_start" ? cluster_ring<Ring::kNoStartBarrier>
                                                            : cluster_store_after_exit;
    launch_clustered(k, dim3(unsigned(n / 16)), dim3(16), 4, 16 * sizeof(float), xp, op);
  } else if (kernel == "divergent_barrier") {
    launch(divergent_barrier, dim3(1), dim3(threads), 0, xp, op);
  } else if (kernel == "write_within" || kernel == "write_past_end") {
    // The debug allocator: a copy into a buffer of n (or n - 1) elements.
    FASTLSTM_CHECK_VALUE(n >= 2 && n <= 1024, "fastlstm: ", kernel, ": x must have 2 to 1024 "
                         "values, got ", n);
    Tensor dst = empty_like_device({kernel == "write_within" ? n : n - 1}, kFloat, x);
    launch(copy_into, dim3(1), dim3(threads), 0, xp, n, ptr<float>(dst));
    return dst;
  } else if (kernel == "shared_pair" || kernel == "shared_pair_misaligned") {
    FASTLSTM_CHECK_VALUE(n == 4, "fastlstm: ", kernel, ": x must have 4 values, got ", n);
    launch(shared_pair, dim3(1), dim3(32), 4 * sizeof(Half), xp,
           int64_t{kernel == "shared_pair" ? 0 : 1}, op);
  } else if (kernel == "fresh_buffer") {
    return empty_like_device({n}, kFloat, x);  // what a kernel reads where nobody wrote
  } else {
    FASTLSTM_CHECK_VALUE(false, "fastlstm: _simt_selftest: kernel must be one of block_sum, "
                         "block_sum_missing_barrier, warp_sum, ballot_count, grid_sum, "
                         "grid_exchange, grid_exchange_no_release, grid_exchange_no_acquire, "
                         "mma_f16, mma_bf16, mma_tf32, cluster_sum, cluster_barrier_skipped, cluster_ring, "
                         "cluster_ring_unsynced, cluster_store_before_start, cluster_store_after_exit, "
                         "divergent_barrier, write_within, write_past_end, fresh_buffer, "
                         "shared_pair, shared_pair_misaligned; "
                         "got '", kernel, "'");
  }
  return out;
}

}  // namespace

bool emulated_cuda_enabled() { return g_enabled.load(); }

}  // namespace fastlstm::simt

STABLE_TORCH_LIBRARY_FRAGMENT(fastlstm, m) {
  m.def("_simt_emulate(bool enabled, int seed=0, bool race_check=True, "
        "bool device_lengths=False, int multiprocessors=6, "
        "int shared_bytes_per_block=232448, int cluster_blocks=4, bool tf32=False, "
        "bool debug_alloc=True, int static_shared_bytes=0, bool weak_memory=False) -> ()");
  m.def("_simt_launch_count() -> int");
  m.def("_simt_counter(str name) -> int");
  m.def("_simt_selftest(str kernel, Tensor x) -> Tensor");
  m.def("_simt_sort_descending(Tensor keys, bool stable) -> (Tensor sorted, Tensor order)");
  m.def("_device_schedule(Tensor lengths, int T) -> (Tensor order, Tensor sorted_lengths, "
        "Tensor active, Tensor offsets)");
}

// The ops without tensor arguments dispatch to CompositeExplicitAutograd (no device to pick).
STABLE_TORCH_LIBRARY_IMPL(fastlstm, CompositeExplicitAutograd, m) {
  m.impl("_simt_emulate", TORCH_BOX(&fastlstm::simt::simt_emulate));
  m.impl("_simt_launch_count", TORCH_BOX(&fastlstm::simt::simt_launch_count));
  m.impl("_simt_counter", TORCH_BOX(&fastlstm::simt::simt_counter));
}

STABLE_TORCH_LIBRARY_IMPL(fastlstm, CPU, m) {
  m.impl("_simt_selftest", TORCH_BOX(&fastlstm::simt::simt_selftest));
  m.impl("_simt_sort_descending", TORCH_BOX(&fastlstm::simt::simt_sort_descending));
}
