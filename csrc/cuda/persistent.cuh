// Persistent kernels: the whole time loop of a layer in one cooperative launch, the recurrent
// weights resident in shared memory for every step where they fit, one barrier per step (two
// with a projection). Included by kernels_<dtype>.cu.
//
// Blocks are split between the directions (blocks [0, P) forward, [P, 2P) reverse); each
// direction has its own barrier counter, so the two never wait for each other. Block jb of a
// direction owns the hidden units [u0, u0 + nu) (all four gates of them) and, with proj_size,
// the output units [p0, p0 + np) of the projection; without one, output units are hidden units.
//
// Forward step t (the direction's order): every block reads h_{t-1} of the active rows (from the
// previous step's packed outputs, or h0 for rows that start here) from global memory, computes
// its units' gates (one warp per item of up to 8 rows and one unit, lanes split the dot
// products over Hout, then one transposing shuffle reduction: warp_dot.cuh), runs the cells and
// writes its slice of h_t. With a projection that slice
// is the raw h (the reserve's hraw); after a barrier, each block projects every active row onto
// its output units. Then the step's barrier.
// Backward step t (reverse order): phase A turns dh into the gate gradients of the block's
// units, barrier, phase B computes dh_{t-1} for the block's output units from every unit's gate
// gradients and the resident column slice of W_hh. With a projection, phase A starts with the
// block's output units (dout = dh + dy, kept for dW_hr), a barrier, then per hidden unit the
// raw h's gradient dout W_hr[:, u] and the cell.
//
// Half and BFloat16 do those products on tensor cores instead: the step's rows times the
// block's gate columns (or output units) as m16n8k16 tiles shared by the block's warps, fp32
// accumulation (mma_tiles.cuh), then the cells, one thread per (row, unit); so does float, in
// TF32 (m16n8k8), where torch allows TF32 for matmuls. Otherwise float and double keep the FMA
// loops (fp32 as nn.LSTM computes it).
//
// Weights: resident in shared memory when the block's slices fit (plan_persistent), else read
// from global memory (L2) every step, the backward from transposed copies so that its column
// slices are contiguous rows: the same loops serve both, through Slice.
//
// Barriers: a cooperative grid, each direction's blocks meeting at a grid barrier of their own
// (an atomic counter in global memory), or on Hopper (FASTLSTM_CUDA_PATH=cluster) one
// thread-block cluster of up to 16 blocks per direction, meeting at the hardware's cluster
// barrier. The loops are the same; only step_barrier differs.
//
// Exchange: what a block reads of the others' results each step (forward h_{t-1}; backward the
// gate gradients, and dout with a projection) travels through global memory (L2), except on
// the cluster path with resident weights where the buffers fit: there every block stores its
// part straight into the shared memory of each block of its cluster (distributed shared
// memory), and the others read it from their own shared memory after the barrier.
//
// Rows join and leave by their own lengths: active(t) rows at step t, a prefix of the sorted
// batch, read on the device; nothing is computed past a sequence's end.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "../simt/simt.h"
#include "backend.h"
#include "grid_barrier.cuh"
#include "index_math.cuh"
#include "kernels.cuh"  // cell_forward_unit, cell_backward_unit, blocks_for
#include "mma_tiles.cuh"
#include "warp_dot.cuh"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

template <typename T, typename Acc>
struct PersistentDir {
  const T* w_hh;     // [4H, P] forward: row slices
  const T* w_hr;     // [P, H] forward: row slices; nullptr without projection
  const T* w_hh_t;   // [P, 4H] W_hh transposed: backward column slices when not resident
  const T* w_hr_t;   // [H, P] W_hr transposed, likewise (projection only)
  const Acc* bias;   // [4H] (forward)
  const T* h0;       // [B, P] sorted rows
  const Acc* c0;     // [B, H] sorted rows
  Acc* gates;        // [N, 4H] packed: forward x W_ih^T in, activated gates out
  Acc* cell;         // [N, H]
  T* out;            // [N, P]
  T* hraw;           // [N, H] the cell's h before the projection (projection only)
  const T* dy;       // [N, P] or nullptr (backward)
  Acc* dh;           // [B, P] (backward) in: grad h_n; out: grad h0
  Acc* dc;           // [B, H] (backward) in: grad c_n; out: grad c0
  T* dgates;         // [N, 4H] (backward)
  T* dout;           // [N, P] (backward, projection only) each step's total output gradient
  unsigned* barrier; // zeroed, this direction's only
};

template <typename T, typename Acc>
struct PersistentArgs {
  PersistentDir<T, Acc> dir[2];
  const int64_t* active;   // [T] rows active at step t
  const int64_t* offsets;  // [T+1] first packed row of step t
  int64_t steps, H, P;     // steps: the padded T; P: Hout (H without projection)
  int blocks_per_dir;
  bool resident;           // weights in shared memory (else read from global every step)
  bool cluster;            // each direction is one thread-block cluster (else a cooperative grid)
  // The cluster path: what the blocks read of each other's results every step (forward h_{t-1},
  // backward the gate gradients and dout) through distributed shared memory, in buffers of
  // exchange_rows = B rows from element exchange_origin of each block's dynamic shared memory
  // (after its weight slices; layouts in forward_steps and backward_steps); 0 rows: through
  // global memory.
  int64_t exchange_rows, exchange_origin;
  // Element (of float) of each block's dynamic shared memory where its mma_scratch_bytes start:
  // the tensor-core products' K split (mma_tiles.cuh), after the weights and exchange area.
  int64_t scratch_origin;
  // The stage of the tensor-core products' A rows read from global memory (mma_tiles.cuh,
  // staged_mma_products): stage_rows rows of stage_ld elements of T from element stage_origin
  // of the dynamic shared memory; 0 rows: A read from global memory as it is.
  int64_t stage_origin, stage_rows, stage_ld;
  bool tf32;  // float: the products on tensor cores in TF32 (torch allows TF32 for matmuls)
};

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// The step schedule of one direction at loop index `step`.
struct StepRows {
  int64_t t, rows, n_continuing, offset, prev_offset;
};
__device__ __forceinline__ StepRows step_rows(const int64_t* active, const int64_t* offsets,
                                              int64_t T, bool reverse, int64_t t) {
  const int64_t rows = active[t];
  const int64_t prev = reverse ? (t + 1 < T ? t + 1 : -1) : t - 1;
  const int64_t nc = prev < 0 ? 0 : min64(rows, active[prev]);
  return {t, rows, nc, offsets[t], prev < 0 ? 0 : offsets[prev]};
}

enum class Pass { kForward, kBackward };

// The leading dimension, in elements of elem_bytes, of a row of C values in shared memory:
// C rounded up to 32 bytes, plus 16, so that a row spans 4 (mod 8) of the 32 four-byte banks and
// the 8 rows a tensor-core fragment reads at once (one per lane group, 4 words each) fall on
// different banks.
__host__ __device__ __forceinline__ int64_t padded_ld(int64_t C, int64_t elem_bytes) {
  const int64_t per_32_bytes = 32 / elem_bytes;
  return (C + per_32_bytes - 1) / per_32_bytes * per_32_bytes + 16 / elem_bytes;
}

// The exchange area of a block on the cluster path (PersistentArgs::exchange_rows = B rows),
// in elements of T: forward, h_{t-1} as rows of ld_h (P padded); backward, the gate gradients
// as rows of ld_g (4H padded), then (projection) dout as rows of ld_h from dout_at. Without a
// projection two buffers (h_buffer or g_buffer elements apart) alternate by step, with one a
// single buffer serves.
struct ExchangeLayout {
  int64_t ld_h, ld_g, h_buffer, g_buffer, dout_at, elements;
};
__host__ __device__ __forceinline__ ExchangeLayout exchange_layout(Pass pass, int64_t B,
                                                                   int64_t H, int64_t P,
                                                                   bool proj, int64_t elem_bytes) {
  ExchangeLayout x{};
  x.ld_h = padded_ld(P, elem_bytes);
  x.ld_g = padded_ld(4 * H, elem_bytes);
  x.h_buffer = B * x.ld_h;
  x.g_buffer = B * x.ld_g;
  const int64_t buffers = proj ? 1 : 2;
  x.dout_at = buffers * x.g_buffer;
  x.elements = pass == Pass::kForward ? buffers * x.h_buffer
                                      : x.dout_at + (proj ? x.h_buffer : 0);
  return x;
}

// Half and BFloat16 multiply on tensor cores (fp32 accumulation, mma_tiles.cuh) where the
// architecture has them (sm_80 on); float too, in TF32, where torch allows TF32 for matmuls
// (PersistentArgs::tf32), else with FMAs, as nn.LSTM computes it; double with FMAs.
template <typename T>
inline constexpr bool kTensorCores =
    simt::kHasMma && (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>);
template <typename T>
inline constexpr bool kAnyTensorCores =
    kTensorCores<T> || (simt::kHasMma && std::is_same_v<T, float>);
// The FMA loops are compiled for float and double only (Half and BFloat16 always take the
// tensor cores, where the architecture has them).
template <typename T>
inline constexpr bool kFmaLoops = !kTensorCores<T>;
template <typename T, typename Acc>
__device__ __forceinline__ bool on_tensor_cores(const PersistentArgs<T, Acc>& a) {
  if constexpr (kTensorCores<T>) return true;
  if constexpr (kAnyTensorCores<T>) return a.tf32;
  return false;
}

// The barrier between a direction's steps (and phases): its cluster's hardware barrier, or the
// grid barrier of its blocks. h_t and the gate gradients travel through global memory: the
// cluster barrier's release/acquire covers it for every thread of the cluster, and the grid
// barrier has fences of its own.
template <typename T, typename Acc>
__device__ __forceinline__ void step_barrier(const PersistentArgs<T, Acc>& a, unsigned* counter,
                                             unsigned& generation) {
  if (a.cluster) {
    simt::cluster_sync();
  } else {
    grid_barrier(counter, static_cast<unsigned>(a.blocks_per_dir), generation);
  }
}

// The direction of this block, the hidden units [u0, u0 + nu) it owns (U per block) and the
// output units [p0, p0 + np) (V per block; the same as the hidden ones without projection).
struct BlockUnits {
  int dir;
  int64_t U, u0, nu, V, p0, np;
};
__device__ __forceinline__ BlockUnits block_units(int blocks_per_dir, int64_t H, int64_t P) {
  const int dir = static_cast<int>(blockIdx.x) / blocks_per_dir;
  const int64_t jb = static_cast<int>(blockIdx.x) % blocks_per_dir;
  const int64_t U = ceil_div32(H, blocks_per_dir), V = ceil_div32(P, blocks_per_dir);
  const int64_t u0 = min64(H, jb * U), p0 = min64(P, jb * V);
  return {dir, U, u0, min64(H, u0 + U) - u0, V, p0, min64(P, p0 + V) - p0};
}

// Element (r, k) of a block's weight slice: w[origin + r * ld + k]. W is the block's shared
// memory (simt::dynamic_shared) or a global pointer, so one loop body serves both.
template <typename W>
struct Slice {
  W w;
  int64_t origin, ld;
  __device__ __forceinline__ auto operator()(int64_t r, int64_t k) const {
    return w[origin + r * ld + k];
  }
  // Row r as an array (a pointer, or shared memory's checked array under emulation).
  __device__ __forceinline__ auto row(int64_t r) const { return w + (origin + r * ld); }
};
template <typename W>
__device__ __forceinline__ Slice<W> slice(W w, int64_t origin, int64_t ld) {
  return Slice<W>{w, origin, ld};
}

// Copies rows [r0, r0 + n) x cols [0, C) of the row-major src (leading dimension lds) into
// shared memory at w[origin + r * ldw + col], r counted from r0: a block's weight slice, its
// rows padded (ldw = padded_ld) so that tensor-core fragments read them without bank conflicts,
// the padding zeroed so that they read whole pairs past C with no edge to test (mma_tiles.cuh).
template <typename T, typename W>
__device__ __forceinline__ void load_rows(W w, int64_t origin, int64_t ldw, const T* src,
                                          int64_t lds, int64_t r0, int64_t n, int64_t C) {
  for (int e = threadIdx.x; e < static_cast<int>(n * ldw); e += blockDim.x) {
    const int r = div32(e, ldw), col = mod32(e, ldw);
    w[origin + e] = col < C ? src[(r0 + r) * lds + col] : T(0.0f);
  }
}
// Likewise for columns [c0, c0 + n) of src (R rows): w[origin + c * ldw + r] = src[r, c0 + c].
template <typename T, typename W>
__device__ __forceinline__ void load_cols(W w, int64_t origin, int64_t ldw, const T* src,
                                          int64_t lds, int64_t c0, int64_t n, int64_t R) {
  for (int e = threadIdx.x; e < static_cast<int>(n * ldw); e += blockDim.x) {
    const int c = div32(e, ldw), r = mod32(e, ldw);
    w[origin + e] = r < R ? src[r * lds + c0 + c] : T(0.0f);
  }
}
// Zeroes elements [origin, origin + n) of the block's dynamic shared memory (as T): the cluster's
// exchange area, whose rows' padding the tensor-core products then read as zeros.
template <typename T>
__device__ __forceinline__ void zero_shared(int64_t origin, int64_t n) {
  auto w = simt::dynamic_shared<T>();
  for (int e = threadIdx.x; e < static_cast<int>(n); e += blockDim.x) w[origin + e] = T(0.0f);
}

// Whether a block's weight slice is resident (shared memory, rows zero-padded by load_rows or
// load_cols) rather than read from global memory: the kernels take it from the slice's type.
template <typename T, typename W>
inline constexpr bool kResidentSlice = !std::is_same_v<W, const T*>;

// The block's scratch for block_mma_products (PersistentArgs::scratch_origin), as floats, and
// for warp_dot_items, as Acc (32 per warp: 128 or 256 of its 512 bytes per warp).
template <typename T, typename Acc>
__device__ __forceinline__ auto mma_scratch(const PersistentArgs<T, Acc>& a) {
  return simt::dynamic_shared<float>() + a.scratch_origin;
}
template <typename T, typename Acc>
__device__ __forceinline__ auto dot_scratch(const PersistentArgs<T, Acc>& a) {
  return simt::dynamic_shared<Acc>() +
         a.scratch_origin * static_cast<int64_t>(sizeof(float)) / static_cast<int64_t>(sizeof(Acc));
}

// The stage of the block's tensor-core products (PersistentArgs::stage_rows).
template <typename T, typename Acc>
__device__ __forceinline__ auto a_stage(const PersistentArgs<T, Acc>& a) {
  return AStage<decltype(simt::dynamic_shared<T>())>{simt::dynamic_shared<T>() + a.stage_origin,
                                                     a.stage_rows, a.stage_ld};
}

// A block's tensor-core product (mma_tiles.cuh) whose A rows are in this block's shared memory
// (kAShared: the cluster's exchange area, zero-padded) or in global memory (staged first where
// the plan has a stage); kBPadded: B's rows are the resident, zero-padded weight slices. Float
// (TF32) reads its operands where they are, with K's edges tested, and stages nothing: its
// kernels, which also hold the FMA loops, are at the register limit, and the padded and staged
// variants of the product made nvcc spill (STACK 432 in the sm_90 build).
template <bool kAShared, bool kBPadded, typename T, typename Acc, typename ARow, typename BRow,
          typename Store>
__device__ __forceinline__ void tensor_core_product(const PersistentArgs<T, Acc>& a, int64_t rows,
                                                    int64_t cols, int64_t K, const ARow& a_row,
                                                    const BRow& b_row, const Store& store) {
  if constexpr (std::is_same_v<T, float>) {
    block_mma_products<T>(rows, cols, K, mma_scratch(a), a_row, b_row, store);
  } else if constexpr (kAShared) {
    block_mma_products<T, true, kBPadded>(rows, cols, K, mma_scratch(a), a_row, b_row, store);
  } else {
    staged_mma_products<T, kBPadded>(rows, cols, K, mma_scratch(a), a_stage(a), a_row, b_row,
                                     store);
  }
}

// Element `at` of this block's exchange area (PersistentArgs::exchange_rows), as an array.
template <typename T, typename Acc>
__device__ __forceinline__ auto own_exchange(const PersistentArgs<T, Acc>& a, int64_t at) {
  return simt::dynamic_shared<T>() + (a.exchange_origin + at);
}
// v into element `at` of the exchange area of every block of this block's cluster, by the
// calling thread alone...
template <typename T, typename Acc>
__device__ __forceinline__ void publish_to_cluster(const PersistentArgs<T, Acc>& a, int64_t at,
                                                   T v) {
  for (int rank = 0; rank < a.blocks_per_dir; ++rank)
    simt::cluster_dynamic_shared<T>(rank)[a.exchange_origin + at] = v;
}
// ... or by the lanes of a warp, one block each (every lane calls it with the same at and v):
// one store instruction where one lane would issue a store per block.
template <typename T, typename Acc>
__device__ __forceinline__ void spread_to_cluster(const PersistentArgs<T, Acc>& a, int64_t at,
                                                  T v) {
  for (int rank = threadIdx.x % 32; rank < a.blocks_per_dir; rank += 32)
    simt::cluster_dynamic_shared<T>(rank)[a.exchange_origin + at] = v;
}
// The forward time loop of one block. Gate row (g, ul) of W_hh is gates_w(g * gate_rows + ul,
// k); output unit pl's row of W_hr is proj_w(pl, k). kExchange: h_{t-1} comes from this
// block's shared memory, where every block of the cluster stored its output units of h_{t-1}
// (distributed shared memory; the step's cluster barrier orders those stores before the reads),
// instead of from the previous step's outputs in global memory.
template <bool kExchange, typename T, typename Acc, typename W>
__device__ void forward_steps(const PersistentArgs<T, Acc>& a, const BlockUnits& b,
                              Slice<W> gates_w, int64_t gate_rows, Slice<W> proj_w) {
  const PersistentDir<T, Acc>& p = a.dir[b.dir];
  const int64_t H = a.H, P = a.P, G = 4 * H, nu = b.nu, u0 = b.u0;
  const bool proj = p.w_hr != nullptr;
  const int lane = threadIdx.x % 32;
  unsigned generation = 0;
  // The exchange area: h_{t-1} as rows of x.ld_h elements (exchange_layout), in two buffers that
  // swap after every step run, or in one with a projection.
  const ExchangeLayout x = exchange_layout(Pass::kForward, a.exchange_rows, H, P, proj, sizeof(T));
  int64_t cur = 0, next = proj ? 0 : x.h_buffer;
  for (int64_t step = 0; step < a.steps; ++step) {
    const StepRows s = step_rows(a.active, a.offsets, a.steps, b.dir == 1,
                                 b.dir == 1 ? a.steps - 1 - step : step);
    if (s.rows == 0) continue;  // the same for every block of the direction: no barrier
    if constexpr (kExchange) {
      if (s.n_continuing < s.rows) {  // rows that start at this step: h0 into the buffer
        auto buf = own_exchange(a, cur);
        const int end = static_cast<int>(s.rows * P);
        for (int e = static_cast<int>(s.n_continuing * P + threadIdx.x); e < end;
             e += blockDim.x)
          buf[div32(e, P) * x.ld_h + mod32(e, P)] = p.h0[e];
        __syncthreads();
      }
    }
    const auto h_prev = [&](int64_t j) {
      if constexpr (kExchange) {
        return own_exchange(a, cur + j * x.ld_h);
      } else {
        return j < s.n_continuing ? p.out + (s.prev_offset + j) * P : p.h0 + j * P;
      }
    };
    // Output unit q of row j's h_t, v, into the next step's buffer of every block: by this
    // thread, or spread over the lanes of its warp.
    const auto publish = [&](int64_t j, int64_t q, T v) {
      if constexpr (kExchange) publish_to_cluster(a, next + j * x.ld_h + q, v);
    };
    const auto publish_spread = [&](int64_t j, int64_t q, T v) {
      if constexpr (kExchange) spread_to_cluster(a, next + j * x.ld_h + q, v);
    };
    // The cell of row j, unit u, once its four gate pre-activations are summed; returns h.
    const auto cell = [&](int64_t j, int64_t u) {
      const Acc c_prev =
          j < s.n_continuing ? p.cell[(s.prev_offset + j) * H + u] : p.c0[j * H + u];
      T* h = proj ? p.hraw + (s.offset + j) * H + u : p.out + (s.offset + j) * P + u;
      cell_forward_unit<T, Acc>(p.gates + (s.offset + j) * G + u, H, p.bias + u, c_prev,
                                p.cell + (s.offset + j) * H + u, h);
      return *h;
    };
    if (on_tensor_cores(a)) {
      if constexpr (kAnyTensorCores<T>) {
        // Gate column n = g * nu + ul of the block: tensor-core tiles, then the cells.
        tensor_core_product<kExchange, kResidentSlice<T, W>>(
            a, s.rows, 4 * nu, P, h_prev,
            [&](int64_t n) { return gates_w.row(div32(n, nu) * gate_rows + mod32(n, nu)); },
            [&](int64_t j, int64_t n, float v) {
              p.gates[(s.offset + j) * G + div32(n, nu) * H + u0 + mod32(n, nu)] += v;
            });
        __syncthreads();
        for (int item = threadIdx.x; item < static_cast<int>(s.rows * nu); item += blockDim.x) {
          const int64_t j = div32(item, nu), u = u0 + mod32(item, nu);
          const T h = cell(j, u);
          if (!proj) publish(j, u, h);
        }
      }
    } else if constexpr (kFmaLoops<T>) {
      // FMAs (warp_dot.cuh): items of up to 8 rows times one unit's 4 gate rows. The lanes
      // holding a total add it to its gate, then lane r runs the cell of the item's row r.
      warp_dot_items<4, Acc, T>(
          s.rows, nu, P, h_prev,
          [&](int ul, int g) { return gates_w.row(g * gate_rows + ul); }, dot_scratch(a),
          [&](int j0, int n, int ul, const ItemTotal<Acc>& t) {
            const int64_t u = u0 + ul;
            if (t.leader && t.r < n) p.gates[(s.offset + j0 + t.r) * G + t.c * H + u] += t.total;
            __syncwarp();  // the gates, written by other lanes, before the cells read them
            T h{};
            if (lane < n) h = cell(j0 + lane, u);
            if constexpr (kExchange) {
              if (!proj)
                for (int r = 0; r < n; ++r) publish_spread(j0 + r, u, from_lane<T, Acc>(h, r));
            }
          });
    }
    if (proj) {
      // out = hraw W_hr^T for this block's output units, once every block's hraw is written.
      step_barrier(a, p.barrier, generation);
      const auto hraw = [&](int64_t j) { return p.hraw + (s.offset + j) * H; };
      const auto store = [&](int64_t j, int64_t pl, Acc v) {
        p.out[(s.offset + j) * P + b.p0 + pl] = static_cast<T>(v);
      };
      if (on_tensor_cores(a)) {
        if constexpr (kAnyTensorCores<T>) {
          const auto proj_row = [&](int64_t pl) { return proj_w.row(pl); };
          tensor_core_product<false, kResidentSlice<T, W>>(
              a, s.rows, b.np, H, hraw, proj_row, [&](int64_t j, int64_t pl, Acc v) {
                store(j, pl, v);
                publish(j, b.p0 + pl, static_cast<T>(v));
              });
        }
      } else if constexpr (kFmaLoops<T>) {
        warp_dot_items<1, Acc, T>(
            s.rows, b.np, H, hraw, [&](int pl, int) { return proj_w.row(pl); }, dot_scratch(a),
            [&](int j0, int n, int pl, const ItemTotal<Acc>& t) {
              if (t.leader && t.r < n) store(j0 + t.r, pl, t.total);
              if constexpr (kExchange) {
                for (int r = 0; r < n; ++r)
                  publish_spread(j0 + r, b.p0 + pl,
                                 static_cast<T>(from_lane<Acc, Acc>(t.total, t.lane_of(r))));
              }
            });
      }
    }
    step_barrier(a, p.barrier, generation);
    const int64_t swap = cur;  // the buffer just written holds h_t for the next step
    cur = next;
    next = swap;
  }
}

template <typename T, typename Acc>
__global__ void persistent_forward_kernel(PersistentArgs<T, Acc> a) {
  const BlockUnits b = block_units(a.blocks_per_dir, a.H, a.P);
  const PersistentDir<T, Acc>& p = a.dir[b.dir];
  const int64_t H = a.H, P = a.P;
  if (!a.resident) {
    forward_steps<false>(a, b, slice(p.w_hh, b.u0 * P, P), H, slice(p.w_hr, b.p0 * H, H));
    return;
  }
  // Resident, rows padded (padded_ld): gate g's rows of the block's units at (g * U + ul) *
  // ldP, then the projection's rows of its output units at 4 * U * ldP + pl * ldH.
  const int64_t ldP = padded_ld(P, sizeof(T)), ldH = padded_ld(H, sizeof(T));
  const int64_t proj_at = 4 * b.U * ldP;
  auto w = simt::dynamic_shared<T>();
  for (int g = 0; g < 4; ++g)
    load_rows(w, g * b.U * ldP, ldP, p.w_hh, P, g * H + b.u0, b.nu, P);
  if (p.w_hr != nullptr) load_rows(w, proj_at, ldH, p.w_hr, H, b.p0, b.np, H);
  if (a.exchange_rows > 0) {
    zero_shared<T>(a.exchange_origin,
                   exchange_layout(Pass::kForward, a.exchange_rows, H, P, p.w_hr != nullptr,
                                   sizeof(T)).elements);
    // Also shows that every block of the cluster runs before any stores into another's memory.
    simt::cluster_sync();
    forward_steps<true>(a, b, slice(w, 0, ldP), b.U, slice(w, proj_at, ldH));
  } else {
    __syncthreads();
    forward_steps<false>(a, b, slice(w, 0, ldP), b.U, slice(w, proj_at, ldH));
  }
}

// The backward time loop of one block. Output unit pl's column of W_hh is hh_cols(pl, r);
// hidden unit ul's column of W_hr is hr_cols(ul, k). kExchange: what the blocks read of each
// other's results (the gate gradients, with a projection also dout) comes from this block's
// shared memory, where every block of the cluster stored its part (distributed shared memory)
// before the barrier, instead of from global memory.
template <bool kExchange, typename T, typename Acc, typename W>
__device__ void backward_steps(const PersistentArgs<T, Acc>& a, const BlockUnits& b,
                               Slice<W> hh_cols, Slice<W> hr_cols) {
  const PersistentDir<T, Acc>& p = a.dir[b.dir];
  const int64_t H = a.H, P = a.P, G = 4 * H, u0 = b.u0, nu = b.nu, p0 = b.p0, np = b.np;
  const bool proj = p.w_hr != nullptr;
  const int lane = threadIdx.x % 32;
  unsigned generation = 0;
  // The exchange area (exchange_layout): the gate gradients as rows of ld_g elements, in two
  // buffers that swap after every step run (without a projection a block may start the next
  // step's phase A while others still read this step's), or in one with a projection (its
  // extra barrier orders them); then dout as rows of ld_h, rewritten only after the step's
  // last barrier, when every block has read it.
  const ExchangeLayout x = exchange_layout(Pass::kBackward, a.exchange_rows, H, P, proj, sizeof(T));
  int64_t dgates_at = 0, dgates_next = proj ? 0 : x.g_buffer;
  const int64_t dout_at = x.dout_at;
  for (int64_t step = 0; step < a.steps; ++step) {
    // Reverse time of the direction: the forward direction's last step first.
    const StepRows s = step_rows(a.active, a.offsets, a.steps, b.dir == 1,
                                 b.dir == 1 ? step : a.steps - 1 - step);
    if (s.rows == 0) continue;
    // The cell backward of row j, unit u, given the gradient dh of its h: the gate gradients
    // into the reserve's dgates, and returned.
    const auto cell = [&](int64_t j, int64_t u, Acc dh) {
      const int64_t row = s.offset + j;
      const Acc c_prev =
          j < s.n_continuing ? p.cell[(s.prev_offset + j) * H + u] : p.c0[j * H + u];
      const Gates4<T> d = cell_backward_values<T, Acc>(
          p.gates + row * G + u, H, p.cell[row * H + u], c_prev, dh, p.dc + j * H + u);
      for (int g = 0; g < 4; ++g) p.dgates[row * G + g * H + u] = d.v[g];
      return d;
    };
    const auto dgates_of = [&](int64_t j, int g, int64_t u) {
      return dgates_at + j * x.ld_g + g * H + u;
    };
    if (!proj) {
      // Phase A: gate gradients of this block's units, one thread per row and unit.
      for (int item = threadIdx.x; item < static_cast<int>(s.rows * nu); item += blockDim.x) {
        const int64_t j = div32(item, nu), u = u0 + mod32(item, nu);
        Acc dh = p.dh[j * H + u];
        if (p.dy != nullptr) dh += static_cast<Acc>(p.dy[(s.offset + j) * H + u]);
        const Gates4<T> d = cell(j, u, dh);
        if constexpr (kExchange)
          for (int g = 0; g < 4; ++g) publish_to_cluster(a, dgates_of(j, g, u), d.v[g]);
      }
    } else {
      // Phase A, projection: the step's total output gradient of the block's output units...
      for (int item = threadIdx.x; item < static_cast<int>(s.rows * np); item += blockDim.x) {
        const int64_t j = div32(item, np), q = p0 + mod32(item, np), row = s.offset + j;
        Acc dh = p.dh[j * P + q];
        if (p.dy != nullptr) dh += static_cast<Acc>(p.dy[row * P + q]);
        p.dout[row * P + q] = static_cast<T>(dh);
        if constexpr (kExchange)
          publish_to_cluster(a, dout_at + j * x.ld_h + q, static_cast<T>(dh));
      }
      step_barrier(a, p.barrier, generation);
      // ... then per hidden unit the raw h's gradient dout W_hr[:, u], and the cell.
      const auto dout_row = [&](int64_t j) {
        if constexpr (kExchange) {
          return own_exchange(a, dout_at + j * x.ld_h);
        } else {
          return static_cast<const T*>(p.dout + (s.offset + j) * P);
        }
      };
      if (on_tensor_cores(a)) {
        if constexpr (kAnyTensorCores<T>) {
          // Tensor-core tiles of rows x the block's units; each finished output goes straight
          // into its cell, in the thread that holds it.
          tensor_core_product<kExchange, kResidentSlice<T, W>>(
              a, s.rows, nu, P, dout_row, [&](int64_t ul) { return hr_cols.row(ul); },
              [&](int64_t j, int64_t ul, float dh) {
                const Gates4<T> d = cell(j, u0 + ul, dh);
                if constexpr (kExchange)
                  for (int g = 0; g < 4; ++g)
                    publish_to_cluster(a, dgates_of(j, g, u0 + ul), d.v[g]);
              });
        }
      } else if constexpr (kFmaLoops<T>) {
        // Items of up to 8 rows (warp_dot.cuh); lane r runs the cell of the item's row r.
        warp_dot_items<1, Acc, T>(
            s.rows, nu, P, dout_row, [&](int ul, int) { return hr_cols.row(ul); },
            dot_scratch(a), [&](int j0, int n, int ul, const ItemTotal<Acc>& t) {
              const int64_t u = u0 + ul;
              Gates4<T> d{};
              const Acc dh = from_lane<Acc, Acc>(t.total, t.lane_of(lane < n ? lane : 0));
              if (lane < n) d = cell(j0 + lane, u, dh);
              if constexpr (kExchange) {
                for (int r = 0; r < n; ++r)
                  for (int g = 0; g < 4; ++g)
                    spread_to_cluster(a, dgates_of(j0 + r, g, u), from_lane<T, Acc>(d.v[g], r));
              }
            });
      }
    }
    step_barrier(a, p.barrier, generation);
    // Phase B: dh of every active row's previous h, this block's output units, from all gate
    // gradients of the step (written by every block before the barrier).
    const auto dgates = [&](int64_t j) {
      if constexpr (kExchange) {
        return own_exchange(a, dgates_at + j * x.ld_g);
      } else {
        return p.dgates + (s.offset + j) * G;
      }
    };
    if (on_tensor_cores(a)) {
      if constexpr (kAnyTensorCores<T>) {
        const auto hh_row = [&](int64_t pl) { return hh_cols.row(pl); };
        tensor_core_product<kExchange, kResidentSlice<T, W>>(
            a, s.rows, np, G, dgates, hh_row,
            [&](int64_t j, int64_t pl, float v) { p.dh[j * P + p0 + pl] = v; });
      }
    } else if constexpr (kFmaLoops<T>) {
      // FMAs: items of up to 8 rows times one output unit's column (warp_dot.cuh).
      warp_dot_items<1, Acc, T>(
          s.rows, np, G, dgates, [&](int pl, int) { return hh_cols.row(pl); }, dot_scratch(a),
          [&](int j0, int n, int pl, const ItemTotal<Acc>& t) {
            if (t.leader && t.r < n) p.dh[(j0 + t.r) * P + p0 + pl] = t.total;
          });
    }
    __syncthreads();  // phase A of the next step reads dh written by other warps of this block
    const int64_t swap = dgates_at;
    dgates_at = dgates_next;
    dgates_next = swap;
  }
}

template <typename T, typename Acc>
__global__ void persistent_backward_kernel(PersistentArgs<T, Acc> a) {
  const BlockUnits b = block_units(a.blocks_per_dir, a.H, a.P);
  const PersistentDir<T, Acc>& p = a.dir[b.dir];
  const int64_t H = a.H, P = a.P, G = 4 * H;
  if (!a.resident) {
    backward_steps<false>(a, b, slice(p.w_hh_t, b.p0 * G, G), slice(p.w_hr_t, b.u0 * P, P));
    return;
  }
  // Resident, rows padded (padded_ld): the W_hh columns of the block's output units at
  // pl * ldG, then the W_hr columns of its hidden units at V * ldG + ul * ldP.
  const int64_t ldG = padded_ld(G, sizeof(T)), ldP = padded_ld(P, sizeof(T));
  const int64_t hr_at = b.V * ldG;
  auto w = simt::dynamic_shared<T>();
  load_cols(w, 0, ldG, p.w_hh, P, b.p0, b.np, G);
  if (p.w_hr != nullptr) load_cols(w, hr_at, ldP, p.w_hr, H, b.u0, b.nu, P);
  if (a.exchange_rows > 0) {
    zero_shared<T>(a.exchange_origin,
                   exchange_layout(Pass::kBackward, a.exchange_rows, H, P, p.w_hr != nullptr,
                                   sizeof(T)).elements);
    simt::cluster_sync();  // as in the forward: every block of the cluster runs
    backward_steps<true>(a, b, slice(w, 0, ldG), slice(w, hr_at, ldP));
  } else {
    __syncthreads();
    backward_steps<false>(a, b, slice(w, 0, ldG), slice(w, hr_at, ldP));
  }
}

// dst [C, R] = src [R, C] transposed: the global copies the backward reads when not resident.
template <typename T>
__global__ void transpose_kernel(int64_t R, int64_t C, const T* src, T* dst) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < R * C;
       e += int64_t(gridDim.x) * blockDim.x)
    dst[(e % C) * R + e / C] = src[e];
}

#if defined(FASTLSTM_SIMT_EMULATE)
constexpr int kPersistentThreads = 64;
#else
constexpr int kPersistentThreads = 256;
#endif

// How to launch the persistent kernels for a layer, or blocks_per_dir == 0 for the per-step path.
struct PersistentPlan {
  int blocks_per_dir = 0;
  int threads = 0;
  bool resident = false;  // weights in shared memory
  bool cluster = false;   // one thread-block cluster per direction
  int64_t exchange_rows = 0;  // h through distributed shared memory (PersistentArgs)
  int64_t exchange_origin = 0;
  int64_t scratch_origin = 0;  // in floats (PersistentArgs::scratch_origin)
  int64_t stage_origin = 0, stage_rows = 0, stage_ld = 0;  // PersistentArgs::stage_rows
  size_t shared_bytes = 0;     // weights, exchange area, stage, then the scratch
};

// Where a block's scratch for the K split (mma_tiles.cuh, warp_dot.cuh) starts after `used`
// bytes of shared memory: 16-byte aligned.
inline size_t mma_scratch_at(size_t used) { return (used + 15) / 16 * 16; }
// Bytes of shared memory a block needs beside `used` for the scratch.
inline size_t with_mma_scratch(size_t used) {
  return mma_scratch_at(used) + static_cast<size_t>(mma_scratch_bytes(kPersistentThreads));
}
// Sets the plan's scratch_origin and shared_bytes for a scratch after `used` bytes.
inline void add_mma_scratch(PersistentPlan& plan, size_t used) {
  plan.scratch_origin = static_cast<int64_t>(mma_scratch_at(used) / sizeof(float));
  plan.shared_bytes = with_mma_scratch(used);
}

// FASTLSTM_CUDA_STAGE: the most A rows a block stages in shared memory at a time for its
// tensor-core products (rounded down to a multiple of 16; default 64), or 0 for none: A read
// from global memory where it is (to measure what the stage brings).
constexpr int64_t kDefaultStageRows = 64;
inline int64_t stage_rows_wanted() {
  const char* v = std::getenv("FASTLSTM_CUDA_STAGE");
  if (v == nullptr || *v == '\0') return kDefaultStageRows;
  char* end = nullptr;
  const long long rows = std::strtoll(v, &end, 10);
  FASTLSTM_CHECK(*end == '\0' && rows >= 0, "fastlstm: FASTLSTM_CUDA_STAGE must be a number of "
                 "rows (0: no stage); got '", v, "'");
  return rows / 16 * 16;
}

// The widest A row of a pass's tensor-core products: forward h_{t-1} (P values) and, with a
// projection, the raw h (H); backward the gate gradients (4H) and, with a projection, dout (P).
inline int64_t widest_a_row(const LayerDims& d, Pass pass) {
  const int64_t main = pass == Pass::kForward ? d.Hout : 4 * d.H;
  const int64_t other = pass == Pass::kForward ? d.H : d.Hout;
  return d.has_proj ? std::max(main, other) : main;
}

// The plan's stage and scratch after `used` bytes: the most rows (a multiple of 16, at most
// `wanted`) whose stage still fits(bytes in all, the scratch included), or none where wanted
// is 0 or not even 16 rows fit. The stage comes after everything that makes a plan resident,
// so it never costs a plan its weights.
template <typename Fits>
void add_stage_and_scratch(PersistentPlan& plan, size_t used, const LayerDims& d, Pass pass,
                           size_t elem_bytes, int64_t wanted, const Fits& fits) {
  const int64_t ld = padded_ld(widest_a_row(d, pass), static_cast<int64_t>(elem_bytes));
  const size_t at = (used + 15) / 16 * 16;
  for (int64_t rows = wanted; rows >= 16; rows -= 16) {
    const size_t end = at + static_cast<size_t>(rows * ld) * elem_bytes;
    if (fits(with_mma_scratch(end))) {
      plan.stage_origin = static_cast<int64_t>(at / elem_bytes);
      plan.stage_rows = rows;
      plan.stage_ld = ld;
      used = end;
      break;
    }
  }
  add_mma_scratch(plan, used);
}

// FASTLSTM_CUDA_PATH=step|persistent|cluster|auto (default auto). Until a GPU run has measured
// the persistent kernels, auto keeps the per-step path. persistent takes them, with a grid
// barrier, wherever the shape fits, and falls back to the per-step path elsewhere; cluster
// runs each direction as one thread-block cluster with the hardware's cluster barrier (Hopper
// on, up to 16 blocks a direction), falling back to persistent.
enum class CudaPath { kStep, kPersistent, kCluster };
inline CudaPath requested_cuda_path() {
  const char* v = std::getenv("FASTLSTM_CUDA_PATH");
  if (v == nullptr || std::strcmp(v, "auto") == 0 || std::strcmp(v, "step") == 0)
    return CudaPath::kStep;
  if (std::strcmp(v, "cluster") == 0) return CudaPath::kCluster;
  FASTLSTM_CHECK(std::strcmp(v, "persistent") == 0, "fastlstm: FASTLSTM_CUDA_PATH must be one "
                 "of step, persistent, cluster, auto; got '", v, "'");
  return CudaPath::kPersistent;
}

// FASTLSTM_CUDA_DSMEM=0: the cluster path exchanges h (forward) and the gate gradients
// (backward) through global memory, as the grid path does, instead of distributed shared
// memory (to measure what DSMEM brings).
inline bool dsmem_exchange_enabled() {
  const char* v = std::getenv("FASTLSTM_CUDA_DSMEM");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

// Elements of T in one block's weight slices (see the kernels' "Resident" layouts, rows
// padded_ld), for blocks_per_dir blocks per direction.
inline int64_t slice_elements(const LayerDims& d, Pass pass, int64_t blocks_per_dir,
                              int64_t elem_bytes) {
  const int64_t U = ceil_div(d.H, blocks_per_dir), V = ceil_div(d.Hout, blocks_per_dir);
  const int64_t proj = d.has_proj ? 1 : 0;
  const int64_t ldP = padded_ld(d.Hout, elem_bytes), ldH = padded_ld(d.H, elem_bytes);
  return pass == Pass::kForward ? 4 * U * ldP + proj * V * ldH
                                : V * padded_ld(4 * d.H, elem_bytes) + proj * U * ldP;
}

constexpr int64_t kMaxClusterBlocks = 16;  // Hopper's largest (non-portable) cluster

// One cluster of up to 16 blocks per direction (at most H), the weights resident in their
// shared memory; or no plan where the device has no clusters or the slices do not fit there.
// Then compute_plan takes the grid path, whose blocks (one per SM, not 16 a direction) hold
// smaller slices: streaming the weights from L2 into 16 SMs every step would be slower than
// keeping them resident over the whole grid (by construction, until a GPU measures both).
template <typename... KernelArgs>
PersistentPlan plan_cluster(const LayerDims& d, Pass pass, size_t elem_bytes, int64_t stage_rows,
                            void (*kernel)(KernelArgs...)) {
  PersistentPlan plan;
  const int64_t per_dir = min64(d.H, min64(kMaxClusterBlocks, simt::max_cluster_blocks(
                                                                  kernel, kPersistentThreads, 0)));
  if (per_dir < 1) return plan;
  const size_t limit = simt::max_dynamic_shared_bytes(kernel);  // beside its static part
  const size_t shared =
      static_cast<size_t>(slice_elements(d, pass, per_dir, elem_bytes)) * elem_bytes;
  plan.resident = with_mma_scratch(shared) <= limit &&
                  simt::max_cluster_blocks(kernel, kPersistentThreads,
                                           with_mma_scratch(shared)) >= per_dir;
  if (!plan.resident) return PersistentPlan{};
  size_t used = shared;
  // What the blocks exchange every step through distributed shared memory, where it fits
  // beside the resident weights: the forward's h_{t-1}, the backward's gate gradients and,
  // with a projection, dout (exchange_layout).
  const size_t exchange =
      static_cast<size_t>(
          exchange_layout(pass, d.B, d.H, d.Hout, d.has_proj, elem_bytes).elements) *
      elem_bytes;
  const size_t with_exchange = with_mma_scratch(shared + exchange);
  if (dsmem_exchange_enabled() && with_exchange <= limit &&
      simt::max_cluster_blocks(kernel, kPersistentThreads, with_exchange) >= per_dir) {
    plan.exchange_rows = d.B;
    plan.exchange_origin = static_cast<int64_t>(shared / elem_bytes);
    used = shared + exchange;
  }
  plan.blocks_per_dir = static_cast<int>(per_dir);
  plan.threads = kPersistentThreads;
  add_stage_and_scratch(plan, used, d, pass, elem_bytes, stage_rows, [&](size_t bytes) {
                          return bytes <= limit && simt::max_cluster_blocks(
                                                       kernel, kPersistentThreads, bytes) >= per_dir;
                        });
  plan.cluster = true;
  return plan;
}

// One block per SM (at most H per direction), the weights resident in shared memory where the
// slices fit and the blocks stay co-resident, else read from global memory.
template <typename... KernelArgs>
PersistentPlan compute_plan(const LayerDims& d, Pass pass, size_t elem_bytes, CudaPath path,
                            int64_t stage_rows, void (*kernel)(KernelArgs...)) {
  PersistentPlan plan;
  if (path == CudaPath::kCluster) {
    plan = plan_cluster(d, pass, elem_bytes, stage_rows, kernel);
    if (plan.blocks_per_dir > 0) return plan;
  }
  const int64_t sms = simt::multiprocessor_count();
  const int64_t per_dir = min64(d.H, sms / d.D);
  if (per_dir < 1) return plan;
  const int64_t blocks = per_dir * d.D;
  const size_t shared =
      static_cast<size_t>(slice_elements(d, pass, per_dir, elem_bytes)) * elem_bytes;
  // A cooperative grid must be resident at once (the scratch comes after the weights, or
  // alone where they stay in global memory).
  if (with_mma_scratch(shared) <= simt::max_dynamic_shared_bytes(kernel) &&
      simt::resident_blocks_per_sm(kernel, kPersistentThreads, with_mma_scratch(shared)) * sms >=
          blocks) {
    plan.resident = true;
  } else if (simt::resident_blocks_per_sm(kernel, kPersistentThreads, with_mma_scratch(0)) *
                 sms < blocks) {
    return plan;
  }
  plan.blocks_per_dir = static_cast<int>(per_dir);
  plan.threads = kPersistentThreads;
  add_stage_and_scratch(plan, plan.resident ? shared : 0, d, pass, elem_bytes, stage_rows,
                        [&](size_t bytes) {
                          return bytes <= simt::max_dynamic_shared_bytes(kernel) &&
                                 simt::resident_blocks_per_sm(kernel, kPersistentThreads, bytes) *
                                         sms >= blocks;
                        });
  return plan;
}

// Plans computed so far. A plan queries occupancy (and, the first time per kernel and device,
// sets the kernel's shared-memory limit), and every layer op needs three (persistent_fits, then
// each pass's launch): each is computed once per (kernel: pass, T, Acc; the dims it reads;
// FASTLSTM_CUDA_PATH; FASTLSTM_CUDA_DSMEM; FASTLSTM_CUDA_STAGE; the device, or the emulated
// device's options).
using PlanKey = std::tuple<const void*, int64_t, int64_t, int64_t, int64_t, bool, int, bool,
                           int64_t, simt::DeviceKey>;
struct PlanCache {
  std::mutex mutex;
  std::map<PlanKey, PersistentPlan> plans;
};
inline PlanCache& plan_cache() {
  static PlanCache cache;
  return cache;
}
constexpr size_t kMaxCachedPlans = 4096;  // a bound for a process that sees endless shapes

// The kernels take quotients of index values in 32 bits (index_math.cuh): a step's rows times
// the widest row (4H gates, or P outputs) and a weight matrix (4H x max(H, P)) stay below
// 2^31, or the shape keeps the per-step path.
constexpr int64_t kMaxIndex = (int64_t{1} << 31) - 1;
inline bool indices_fit_32_bits(const LayerDims& d) {
  const int64_t widest = std::max<int64_t>(4 * d.H, d.Hout);
  return d.B <= kMaxIndex / widest && std::max<int64_t>(d.H, d.Hout) <= kMaxIndex / (4 * d.H);
}

template <typename... KernelArgs>
PersistentPlan plan_persistent(const LayerDims& d, Pass pass, size_t elem_bytes,
                               void (*kernel)(KernelArgs...)) {
  const CudaPath path = requested_cuda_path();
  if (path == CudaPath::kStep || d.H == 0 || !indices_fit_32_bits(d)) return PersistentPlan{};
  const bool cluster = path == CudaPath::kCluster;
  // A stage for the 16-bit kernels' tensor-core products (float and double stage nothing:
  // tensor_core_product).
  const int64_t stage_rows = elem_bytes == 2 ? stage_rows_wanted() : 0;
  // B sizes only the cluster path's exchange buffers; elem_bytes follows from the kernel.
  const PlanKey key{reinterpret_cast<const void*>(kernel), cluster ? d.B : 0, d.H, d.Hout, d.D,
                    d.has_proj, static_cast<int>(path), cluster && dsmem_exchange_enabled(),
                    stage_rows, simt::device_key()};
  PlanCache& cache = plan_cache();
  {
    const std::lock_guard<std::mutex> lock(cache.mutex);
    const auto it = cache.plans.find(key);
    if (it != cache.plans.end()) return it->second;
  }
  // Computed unlocked (two threads may both compute a new key; both get the same plan).
  const PersistentPlan plan = compute_plan(d, pass, elem_bytes, path, stage_rows, kernel);
  const std::lock_guard<std::mutex> lock(cache.mutex);
  if (cache.plans.size() >= kMaxCachedPlans) cache.plans.clear();
  cache.plans.emplace(key, plan);
  return plan;
}

template <typename T, typename Acc, typename View>
PersistentArgs<T, Acc> persistent_args(CudaBackend::Context& ctx, const LayerDims& d,
                                       const View& s, const Recurrence<T, Acc>* rec,
                                       const Tensor& barriers, const PersistentPlan& plan) {
  PersistentArgs<T, Acc> a{};
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const Recurrence<T, Acc>& r = rec[dir];
    a.dir[dir] = {r.w_hh, r.w_hr, nullptr, nullptr, r.bias,  r.h0,     r.c0,  r.r.gates,
                  r.r.cell, r.r.out, r.r.hraw, r.dy, r.dh, r.dc, r.dgates, r.dout,
                  plan.cluster ? nullptr : ptr<unsigned>(barriers) + dir};
  }
  a.active = s.active(ctx);
  a.offsets = s.offsets(ctx);
  a.steps = d.T;
  a.H = d.H;
  a.P = d.Hout;
  a.blocks_per_dir = plan.blocks_per_dir;
  a.resident = plan.resident;
  a.cluster = plan.cluster;
  a.exchange_rows = plan.exchange_rows;
  a.exchange_origin = plan.exchange_origin;
  a.scratch_origin = plan.scratch_origin;
  a.stage_origin = plan.stage_origin;
  a.stage_rows = plan.stage_rows;
  a.stage_ld = plan.stage_ld;
  a.tf32 = std::is_same_v<T, float> && tf32_allowed();
  return a;
}

// [C, R] = src [R, C] transposed, on the op's device.
template <typename T>
Tensor transposed(CudaBackend::Context& ctx, const T* src, int64_t R, int64_t C) {
  Tensor t = empty_like_device({C, R}, dtype_of<T>(), ctx.like());
  if (R * C > 0)
    simt::launch(transpose_kernel<T>, dim3(unsigned(blocks_for(R * C))), dim3(kThreads), 0, R, C,
                 src, ptr<T>(t));
  return t;
}

// One cooperative launch of `kernel` over every direction, if the plan takes this shape.
template <typename T, typename Acc, typename View>
bool run_persistent(void (*kernel)(PersistentArgs<T, Acc>), Pass pass,
                    CudaBackend::Context& ctx, const LayerDims& d, const View& s,
                    const Recurrence<T, Acc>* rec) {
  const PersistentPlan plan = plan_persistent(d, pass, sizeof(T), kernel);
  if (plan.blocks_per_dir == 0) return false;
  if (!s.has_tokens()) return true;
  simt::allow_all_shared_memory(kernel);  // set by the plan on this device (a lookup here)
  // The grid barriers' counters (a cluster's barrier is the hardware's).
  const Tensor barriers = zeros_like_device({plan.cluster ? 0 : d.D}, kInt, ctx.like());
  PersistentArgs<T, Acc> args = persistent_args(ctx, d, s, rec, barriers, plan);
  std::vector<Tensor> copies;  // alive until the launch is queued (the stream orders the rest)
  if (pass == Pass::kBackward && !plan.resident) {
    for (int64_t dir = 0; dir < d.D; ++dir) {
      PersistentDir<T, Acc>& p = args.dir[dir];
      copies.push_back(transposed(ctx, p.w_hh, 4 * d.H, d.Hout));
      p.w_hh_t = cptr<T>(copies.back());
      if (d.has_proj) {
        copies.push_back(transposed(ctx, p.w_hr, d.Hout, d.H));
        p.w_hr_t = cptr<T>(copies.back());
      }
    }
  }
  const dim3 grid(unsigned(plan.blocks_per_dir * d.D)), block(plan.threads);
  if (plan.cluster)
    simt::launch_clustered(kernel, grid, block, plan.blocks_per_dir, plan.shared_bytes, args);
  else
    simt::launch_cooperative(kernel, grid, block, plan.shared_bytes, args);
  return true;
}

template <typename T, typename Acc, typename View>
bool CudaBackend::forward_recurrence(Context& ctx, const LayerDims& d, const View& s,
                                     const Recurrence<T, Acc>* rec) {
  return run_persistent(persistent_forward_kernel<T, Acc>, Pass::kForward, ctx, d, s, rec);
}

template <typename T, typename Acc, typename View>
bool CudaBackend::backward_recurrence(Context& ctx, const LayerDims& d, const View& s,
                                      const Recurrence<T, Acc>* rec) {
  return run_persistent(persistent_backward_kernel<T, Acc>, Pass::kBackward, ctx, d, s, rec);
}

template <typename T, typename Acc>
bool CudaBackend::persistent_fits(const LayerDims& d) {
  return plan_persistent(d, Pass::kForward, sizeof(T), persistent_forward_kernel<T, Acc>)
                 .blocks_per_dir > 0 &&
         plan_persistent(d, Pass::kBackward, sizeof(T), persistent_backward_kernel<T, Acc>)
                 .blocks_per_dir > 0;
}

#define FASTLSTM_INSTANTIATE_PERSISTENT_VIEW(T, Acc, View)                                  \
  template bool CudaBackend::forward_recurrence<T, Acc, View>(                              \
      CudaBackend::Context&, const LayerDims&, const View&, const Recurrence<T, Acc>*);     \
  template bool CudaBackend::backward_recurrence<T, Acc, View>(                             \
      CudaBackend::Context&, const LayerDims&, const View&, const Recurrence<T, Acc>*);
#define FASTLSTM_INSTANTIATE_PERSISTENT(T, Acc)                                   \
  FASTLSTM_INSTANTIATE_PERSISTENT_VIEW(T, Acc, HostScheduleView<CudaBackend>)     \
  FASTLSTM_INSTANTIATE_PERSISTENT_VIEW(T, Acc, DeviceScheduleView)                \
  template bool CudaBackend::persistent_fits<T, Acc>(const LayerDims&);

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
