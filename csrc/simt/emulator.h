// Runs CUDA kernels on the CPU: every CUDA thread of every block of a launch is a fiber on the
// calling OS thread, so all blocks are resident at once (as a cooperative launch needs).
// Included through csrc/simt/simt.h only when FASTLSTM_SIMT_EMULATE is defined.
//
// What it checks, beyond running the code:
//   - Random schedules: the next fiber to run is drawn with a seeded generator, at launch, at
//     every barrier and warp exchange, and (sometimes) at shared-memory accesses, so a missing
//     barrier shows up as a wrong value under some seed instead of passing by luck.
//   - Shared-memory races: between two barriers of a block, a byte written by one thread and
//     read or written by another is reported (the launch then fails with the first report).
//     A block's shared memory reached from another block of its cluster (distributed shared
//     memory) is ordered only by a cluster barrier, and must not be touched before a cluster
//     barrier has shown that every block of the cluster started, nor after that block exited.
//   - Barrier misuse: a __syncthreads or warp exchange that not every thread reaches fails the
//     launch instead of hanging; so does a spin-wait that never ends.
//   - Weak global memory (Options::weak_memory, off by default; cooperative and clustered
//     launches): each block's stores to global memory sit in a per-block store buffer, seen
//     by other blocks only after a release (__threadfence, the cluster barrier, or at random
//     points), and a block's plain loads may see stale values until it acquires
//     (__threadfence, the cluster barrier, random points).
//     See "Weak memory" in docs/EMULATOR.md for what is modelled and what is not.
// What it cannot show: speed, occupancy, and the memory model beyond that mode.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <math.h>

// Device math as host math (float and double overloads in the global namespace).
using std::exp;
using std::tanh;

namespace fastlstm::simt {

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct ThreadIndex {
  uint3 thread, block;
  dim3 block_dim, grid_dim;
};

// Options of the emulator, process-wide (tests set them through torch.ops.fastlstm).
struct Options {
  uint64_t seed = 0;        // schedule seed
  bool race_check = true;   // shared-memory race checking
  bool preempt = true;      // also switch fibers at random shared-memory accesses
  bool device_lengths = false;  // layer ops: lengths count as GPU-resident (no-sync path)
  // The emulated device: a few multiprocessors, so that cooperative grids stay small, with the
  // shared memory of a Hopper SM unless a test asks for less.
  int multiprocessors = 6;
  int64_t shared_bytes_per_block = 227 * 1024;
  int cluster_blocks = 4;  // the largest thread-block cluster; 0: no clusters (before Hopper)
  bool tf32 = false;       // the emulated cuBLAS handle allows TF32 (torch's allow_tf32)
  // Every kernel's static shared memory (a GPU kernel's __shared__ arrays): a launch's dynamic
  // shared memory must fit beside it in shared_bytes_per_block.
  int64_t static_shared_bytes = 0;
  // Weak global memory: the debug allocator's buffers (csrc/debug_alloc.h, the ops' outputs
  // and workspaces) get per-block store buffers and per-block stale views (emulator.cpp).
  bool weak_memory = false;
};
Options& options();
int64_t launch_count();   // launches run so far, for tests to see that emulated code ran
int64_t mma_count();      // warp-level tensor-core products (warp_mma_m16n8k16) so far
int64_t cluster_barrier_count();  // completed cluster barriers (cluster_sync) so far
int64_t dsmem_access_count();     // accesses to another block's shared memory so far
int64_t shared_read_bytes();      // bytes read from shared memory so far (every block's)
int64_t shared_write_bytes();     // bytes written to shared memory so far
int64_t shuffle_count();          // warp-level shuffles (__shfl_*_sync) so far

// Runs body() as every thread of a grid; throws std::runtime_error on a race, a deadlock or a
// barrier that not every thread reached. shared_bytes of dynamic shared memory per block.
// cluster_blocks: consecutive blocks form thread-block clusters of this size (cluster_sync).
// co_resident: the blocks may wait for each other (a cooperative or clustered launch); only
// such launches get weak memory (Options::weak_memory).
void run_grid(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body,
              int cluster_blocks = 1, bool co_resident = false);

// --- what kernels call (through the CUDA spellings below) --------------------------------
const ThreadIndex& current_index();
void syncthreads();
void cluster_sync();  // barrier.cluster: every thread of the calling thread's cluster
void syncwarp();
uint64_t warp_exchange(uint64_t value, int src_lane);  // value of src_lane's call
void spin_pause();
// d += A B over one warp, as PTX mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: every lane
// passes its fragments (see simt::mma_m16n8k16); f16 or bf16 pairs, low half first.
void warp_mma_m16n8k16(const uint32_t a[4], const uint32_t b[2], float d[4], bool bf16);
// d += A B over one warp, as PTX mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: fp32 bit
// patterns of which the tensor core reads the TF32 part (see simt::mma_m16n8k8_tf32).
void warp_mma_m16n8k8_tf32(const uint32_t a[4], const uint32_t b[2], float d[4]);
int current_block();                    // the calling thread's block (launch-wide index)
int cluster_block(int rank);            // block `rank` of the calling thread's cluster
void* shared_base(int block);           // that block's dynamic shared memory
// An access to block `block`'s dynamic shared memory: bounds, races, distributed-shared-memory
// rules (csrc/simt/emulator.cpp).
void record_shared_access(int block, const void* p, size_t bytes, bool write);

template <typename T>
T shuffle(T v, int src_lane) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "warp shuffles move at most 8 bytes");
  uint64_t in = 0;
  std::memcpy(&in, &v, sizeof(T));
  const uint64_t out = warp_exchange(in, src_lane);
  T r;
  std::memcpy(&r, &out, sizeof(T));
  return r;
}

// Dynamic shared memory of one block as an array whose element accesses are checked.
template <typename T>
class SharedRef {
 public:
  SharedRef(T* p, int block) : p_(p), block_(block) {}
  operator T() const {
    record_shared_access(block_, p_, sizeof(T), false);
    return *p_;
  }
  SharedRef& operator=(T v) {
    record_shared_access(block_, p_, sizeof(T), true);
    *p_ = v;
    return *this;
  }
  SharedRef& operator=(const SharedRef& o) { return *this = static_cast<T>(o); }
  SharedRef& operator+=(T v) { return *this = static_cast<T>(*this) + v; }
  SharedRef& operator-=(T v) { return *this = static_cast<T>(*this) - v; }
  SharedRef& operator*=(T v) { return *this = static_cast<T>(*this) * v; }

 private:
  T* p_;
  int block_;
};

template <typename T>
class SharedArray {
 public:
  SharedArray(T* base, int block) : base_(base), block_(block) {}
  SharedRef<T> operator[](int64_t i) const { return SharedRef<T>(base_ + i, block_); }
  SharedArray operator+(int64_t i) const { return SharedArray(base_ + i, block_); }
  // Elements i and i + 1 as one 4-byte access (simt::load_pair), checked as such.
  uint32_t pair(int64_t i) const {
    static_assert(sizeof(T) == 2, "pairs of 16-bit elements only");
    record_shared_access(block_, base_ + i, 4, false);
    uint32_t v;
    std::memcpy(&v, base_ + i, 4);
    return v;
  }
  // Elements i and i + 1 stored as one 4-byte access (simt::store_pair), checked as such.
  void set_pair(int64_t i, uint32_t v) const {
    static_assert(sizeof(T) == 2, "pairs of 16-bit elements only");
    record_shared_access(block_, base_ + i, 4, true);
    std::memcpy(base_ + i, &v, 4);
  }

 private:
  T* base_;
  int block_;  // whose shared memory: accesses are checked against its bounds only
};

template <typename T>
SharedArray<T> dynamic_shared() {
  const int block = current_block();
  return SharedArray<T>(static_cast<T*>(shared_base(block)), block);
}

// Distributed shared memory: the dynamic shared memory of block `rank` of the calling thread's
// cluster, race-checked like the block's own (only a cluster barrier orders accesses from
// another block).
template <typename T>
SharedArray<T> cluster_dynamic_shared(int rank) {
  const int block = cluster_block(rank);
  return SharedArray<T>(static_cast<T*>(shared_base(block)), block);
}

// Weak memory (Options::weak_memory), see emulator.cpp. fence(): __threadfence, a release and
// an acquire of the calling block. Atomics act on the coherent memory (the GPU's L2):
// weak_atomic_read gives the coherent value of [p, p + bytes) (after publishing the calling
// block's own pending stores to those bytes), weak_atomic_write stores one there; both return
// false where p is not modelled memory (then the access is a plain one).
void fence();
bool weak_atomic_read(const void* p, size_t bytes, void* out);
bool weak_atomic_write(void* p, size_t bytes, const void* value);

// A relaxed atomic load (as the GPU build's volatile load): the coherent value, no acquire.
template <typename T>
T atomic_load(const T* p) {
  T v;
  if (weak_atomic_read(p, sizeof(T), &v)) return v;
  return *p;
}

// A relaxed atomic read-modify-write: *p = f(old), returns old.
template <typename T, typename F>
T atomic_rmw(T* p, F f) {
  T old;
  if (weak_atomic_read(p, sizeof(T), &old)) {
    const T v = f(old);
    weak_atomic_write(p, sizeof(T), &v);
    return old;
  }
  old = *p;
  *p = f(old);
  return old;
}

// The launch wrappers of csrc/simt/simt.h: every thread of the grid runs kernel(args...).
// All blocks are resident at once, so a cooperative launch is an ordinary one here.
template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes,
            Args&&... args) {
  run_grid(grid, block, shared_bytes, [&] { kernel(args...); });
}
template <typename... KernelArgs, typename... Args>
void launch_cooperative(void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                        size_t shared_bytes, Args&&... args) {
  run_grid(grid, block, shared_bytes, [&] { kernel(args...); }, 1, /*co_resident=*/true);
}
template <typename... KernelArgs, typename... Args>
void launch_clustered(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, int cluster_blocks,
                      size_t shared_bytes, Args&&... args) {
  run_grid(grid, block, shared_bytes, [&] { kernel(args...); }, cluster_blocks,
           /*co_resident=*/true);
}

}  // namespace fastlstm::simt

// --- CUDA spellings ---------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define threadIdx (::fastlstm::simt::current_index().thread)
#define blockIdx (::fastlstm::simt::current_index().block)
#define blockDim (::fastlstm::simt::current_index().block_dim)
#define gridDim (::fastlstm::simt::current_index().grid_dim)
constexpr int warpSize = 32;

using fastlstm::simt::dim3;

inline void __syncthreads() { fastlstm::simt::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { fastlstm::simt::syncwarp(); }
// A release and an acquire at GPU scope; does something only under weak_memory.
inline void __threadfence() { fastlstm::simt::fence(); }

inline int fastlstm_lane() {
  const auto& i = fastlstm::simt::current_index();
  return static_cast<int>((i.thread.x + i.block_dim.x * (i.thread.y + i.block_dim.y * i.thread.z)) %
                          32);
}

template <typename T>
T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
  const int lane = fastlstm_lane();
  return fastlstm::simt::shuffle(v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
  const int lane = fastlstm_lane();
  const int src = lane ^ lane_mask;
  return fastlstm::simt::shuffle(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <typename T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = fastlstm_lane();
  const int src = lane + static_cast<int>(delta);
  return fastlstm::simt::shuffle(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
inline unsigned __ballot_sync(unsigned, int predicate) {
  unsigned bits = 0;
  const unsigned mine = predicate ? 1u << fastlstm_lane() : 0u;
  for (int src = 0; src < 32; ++src) bits |= fastlstm::simt::shuffle(mine, src);
  return bits;
}

// One OS thread runs every fiber and fibers switch only at the calls above, so a plain
// read-modify-write is atomic here. Relaxed, as in CUDA (no fence); under weak_memory they act
// on the coherent memory.
template <typename T>
T atomicAdd(T* p, T v) {
  return fastlstm::simt::atomic_rmw(p, [v](T old) { return old + v; });
}
template <typename T>
T atomicMax(T* p, T v) {
  return fastlstm::simt::atomic_rmw(p, [v](T old) { return v > old ? v : old; });
}
template <typename T>
T atomicExch(T* p, T v) {
  return fastlstm::simt::atomic_rmw(p, [v](T) { return v; });
}
