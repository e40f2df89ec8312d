// Persistent kernels: the whole time loop of a layer in one cooperative launch, W_hh resident in
// shared memory for every step, one barrier per step. Included by kernels_<dtype>.cu.
//
// Blocks are split between the directions (blocks [0, P) forward, [P, 2P) reverse); each
// direction has its own barrier counter, so the two never wait for each other. Block jb of a
// direction owns the hidden units [u0, u0 + nu): all four gates of them.
//
// Forward step t (the direction's order): every block reads h_{t-1} of the active rows (from the
// previous step's packed outputs, or h0 for rows that start here) from global memory, computes
// its units' gates (one warp per row and unit, lanes split the dot product over Hout, then a
// shuffle reduction), runs the cell, writes its slice of h_t, then the barrier.
// Backward step t (reverse order): phase A turns dh into the gate gradients of the block's
// units (elementwise), barrier, phase B computes dh_{t-1} for the block's units from every
// unit's gate gradients and the resident column slice of W_hh. One barrier per step.
//
// Rows join and leave by their own lengths: active(t) rows at step t, a prefix of the sorted
// batch, read on the device; nothing is computed past a sequence's end.
// Not served here (the driver's per-step loop runs instead): proj_size > 0, and shapes whose
// W_hh slice does not fit in one block's shared memory.
#pragma once

#include <cstdlib>
#include <cstring>

#include "../simt/simt.h"
#include "backend.h"
#include "grid_barrier.cuh"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

template <typename T, typename Acc>
struct PersistentDir {
  const T* w_hh;     // [4H, H]
  const Acc* bias;   // [4H] (forward)
  const T* h0;       // [B, H] sorted rows
  const Acc* c0;     // [B, H] sorted rows
  Acc* gates;        // [N, 4H] packed: forward x W_ih^T in, activated gates out
  Acc* cell;         // [N, H]
  T* out;            // [N, H]
  const T* dy;       // [N, H] or nullptr (backward)
  Acc* dh;           // [B, H] (backward) in: grad h_n; out: grad h0
  Acc* dc;           // [B, H] (backward) in: grad c_n; out: grad c0
  T* dgates;         // [N, 4H] (backward)
  unsigned* barrier; // zeroed, this direction's only
};

template <typename T, typename Acc>
struct PersistentArgs {
  PersistentDir<T, Acc> dir[2];
  const int64_t* active;   // [T] rows active at step t
  const int64_t* offsets;  // [T+1] first packed row of step t
  int64_t steps, H;  // steps: the padded T
  int blocks_per_dir;
};

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

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

// Sum over the 32 lanes of a warp; every lane gets the total.
template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc v) {
  for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// The direction of this block and the hidden units [u0, u0 + nu) it owns, U per block.
struct BlockUnits {
  int dir;
  int64_t U, u0, nu;
};
__device__ __forceinline__ BlockUnits block_units(int blocks_per_dir, int64_t H) {
  const int dir = static_cast<int>(blockIdx.x) / blocks_per_dir;
  const int64_t jb = static_cast<int>(blockIdx.x) % blocks_per_dir;
  const int64_t U = (H + blocks_per_dir - 1) / blocks_per_dir;
  const int64_t u0 = min64(H, jb * U);
  return {dir, U, u0, min64(H, u0 + U) - u0};
}

template <typename T, typename Acc>
__global__ void persistent_forward_kernel(PersistentArgs<T, Acc> a) {
  const BlockUnits b = block_units(a.blocks_per_dir, a.H);
  const PersistentDir<T, Acc>& p = a.dir[b.dir];
  const int dir = b.dir;
  const int64_t H = a.H, G = 4 * H, U = b.U, u0 = b.u0, nu = b.nu;

  // This block's rows of W_hh, resident for the whole sequence: w[(g * U + ul) * H + k].
  auto w = simt::dynamic_shared<T>();
  for (int64_t e = threadIdx.x; e < 4 * nu * H; e += blockDim.x) {
    const int64_t g = e / (nu * H), ul = e / H % nu, k = e % H;
    w[(g * U + ul) * H + k] = p.w_hh[(g * H + u0 + ul) * H + k];
  }
  __syncthreads();

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  unsigned generation = 0;
  for (int64_t step = 0; step < a.steps; ++step) {
    const StepRows s = step_rows(a.active, a.offsets, a.steps, dir == 1,
                                 dir == 1 ? a.steps - 1 - step : step);
    if (s.rows == 0) continue;  // the same for every block of the direction: no barrier
    for (int64_t item = warp; item < s.rows * nu; item += warps) {
      const int64_t j = item / nu, ul = item % nu, u = u0 + ul;
      const T* h_prev = j < s.n_continuing ? p.out + (s.prev_offset + j) * H : p.h0 + j * H;
      Acc acc[4] = {Acc(0), Acc(0), Acc(0), Acc(0)};
      for (int64_t k = lane; k < H; k += 32) {
        const Acc h = static_cast<Acc>(h_prev[k]);
        for (int g = 0; g < 4; ++g)
          acc[g] += h * static_cast<Acc>(static_cast<T>(w[(g * U + ul) * H + k]));
      }
      for (int g = 0; g < 4; ++g) acc[g] = warp_sum(acc[g]);
      if (lane == 0) {
        Acc* gp = p.gates + (s.offset + j) * G + u;
        for (int g = 0; g < 4; ++g) gp[g * H] += acc[g];
        const Acc c_prev =
            j < s.n_continuing ? p.cell[(s.prev_offset + j) * H + u] : p.c0[j * H + u];
        cell_forward_unit<T, Acc>(gp, H, p.bias + u, c_prev, p.cell + (s.offset + j) * H + u,
                                  p.out + (s.offset + j) * H + u);
      }
    }
    grid_barrier(p.barrier, static_cast<unsigned>(a.blocks_per_dir), generation);
  }
}

template <typename T, typename Acc>
__global__ void persistent_backward_kernel(PersistentArgs<T, Acc> a) {
  const BlockUnits b = block_units(a.blocks_per_dir, a.H);
  const PersistentDir<T, Acc>& p = a.dir[b.dir];
  const int dir = b.dir;
  const int64_t H = a.H, G = 4 * H, u0 = b.u0, nu = b.nu;

  // This block's columns of W_hh, resident: w[ul * G + r] = W_hh[r, u0 + ul].
  auto w = simt::dynamic_shared<T>();
  for (int64_t e = threadIdx.x; e < nu * G; e += blockDim.x) {
    const int64_t ul = e / G, r = e % G;
    w[ul * G + r] = p.w_hh[r * H + u0 + ul];
  }
  __syncthreads();

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  unsigned generation = 0;
  for (int64_t step = 0; step < a.steps; ++step) {
    // Reverse time of the direction: the forward direction's last step first.
    const StepRows s = step_rows(a.active, a.offsets, a.steps, dir == 1,
                                 dir == 1 ? step : a.steps - 1 - step);
    if (s.rows == 0) continue;
    // Phase A: gate gradients of this block's units, one thread per row and unit.
    for (int64_t item = threadIdx.x; item < s.rows * nu; item += blockDim.x) {
      const int64_t j = item / nu, u = u0 + item % nu, row = s.offset + j;
      Acc dh = p.dh[j * H + u];
      if (p.dy != nullptr) dh += static_cast<Acc>(p.dy[row * H + u]);
      const Acc c_prev =
          j < s.n_continuing ? p.cell[(s.prev_offset + j) * H + u] : p.c0[j * H + u];
      cell_backward_unit<T, Acc>(p.gates + row * G + u, H, p.cell[row * H + u], c_prev, dh,
                                 p.dc + j * H + u, p.dgates + row * G + u);
    }
    grid_barrier(p.barrier, static_cast<unsigned>(a.blocks_per_dir), generation);
    // Phase B: dh of every active row's previous h, this block's units, from all gate
    // gradients of the step (written by every block before the barrier).
    for (int64_t item = warp; item < s.rows * nu; item += warps) {
      const int64_t j = item / nu, ul = item % nu;
      const T* dg = p.dgates + (s.offset + j) * G;
      Acc acc = 0;
      for (int64_t r = lane; r < G; r += 32)
        acc += static_cast<Acc>(dg[r]) * static_cast<Acc>(static_cast<T>(w[ul * G + r]));
      acc = warp_sum(acc);
      if (lane == 0) p.dh[j * H + u0 + ul] = acc;
    }
    __syncthreads();  // phase A of the next step reads dh written by other warps of this block
  }
}

// How to launch the persistent kernels for a layer, or blocks_per_dir == 0 for the per-step path.
struct PersistentPlan {
  int blocks_per_dir = 0;
  int threads = 0;
  size_t shared_bytes = 0;
};

// FASTLSTM_CUDA_PATH=step|persistent|auto (default auto). Until a GPU run has measured the
// persistent kernels, auto keeps the per-step path; persistent takes them wherever the shape
// fits, and falls back to the per-step path elsewhere.
inline bool persistent_path_requested() {
  const char* v = std::getenv("FASTLSTM_CUDA_PATH");
  if (v == nullptr || std::strcmp(v, "auto") == 0 || std::strcmp(v, "step") == 0) return false;
  FASTLSTM_CHECK(std::strcmp(v, "persistent") == 0,
                 "fastlstm: FASTLSTM_CUDA_PATH must be one of step, persistent, auto; got '", v,
                 "'");
  return true;
}

template <typename Kernel>
PersistentPlan plan_persistent(const LayerDims& d, size_t elem_bytes, Kernel kernel) {
  PersistentPlan plan;
  if (!persistent_path_requested() || d.has_proj || d.H == 0) return plan;
#if defined(FASTLSTM_SIMT_EMULATE)
  constexpr int kThreads = 64;
#else
  constexpr int kThreads = 256;
#endif
  const int64_t sms = simt::multiprocessor_count();
  const int64_t per_dir = min64(d.H, sms / d.D);
  if (per_dir < 1) return plan;
  const int64_t units = (d.H + per_dir - 1) / per_dir;
  const size_t shared = static_cast<size_t>(4 * units * d.H) * elem_bytes;
  if (shared > simt::max_shared_bytes_per_block()) return plan;
  const int64_t resident = simt::resident_blocks_per_sm(kernel, kThreads, shared) * sms;
  if (resident < per_dir * d.D) return plan;  // a cooperative grid must be resident at once
  plan.blocks_per_dir = static_cast<int>(per_dir);
  plan.threads = kThreads;
  plan.shared_bytes = shared;
  return plan;
}

template <typename T, typename Acc, typename View>
PersistentArgs<T, Acc> persistent_args(CudaBackend::Context& ctx, const LayerDims& d,
                                       const View& s, const Recurrence<T, Acc>* rec,
                                       const Tensor& barriers, int blocks_per_dir) {
  PersistentArgs<T, Acc> a{};
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const Recurrence<T, Acc>& r = rec[dir];
    a.dir[dir] = {r.w_hh, r.bias,  r.h0,  r.c0,     r.r.gates, r.r.cell,
                  r.r.out, r.dy, r.dh, r.dc, r.dgates,
                  ptr<unsigned>(barriers) + dir};
  }
  a.active = s.active(ctx);
  a.offsets = s.offsets(ctx);
  a.steps = d.T;
  a.H = d.H;
  a.blocks_per_dir = blocks_per_dir;
  return a;
}

// One cooperative launch of `kernel` over every direction, if the plan takes this shape.
template <typename T, typename Acc, typename View>
bool run_persistent(void (*kernel)(PersistentArgs<T, Acc>), CudaBackend::Context& ctx,
                    const LayerDims& d, const View& s, const Recurrence<T, Acc>* rec) {
  const PersistentPlan plan = plan_persistent(d, sizeof(T), kernel);
  if (plan.blocks_per_dir == 0) return false;
  if (!s.has_tokens()) return true;
  const Tensor barriers = zeros_like_device({d.D}, kInt, ctx.like());
  simt::launch_cooperative(kernel, dim3(unsigned(plan.blocks_per_dir * d.D)), dim3(plan.threads),
                           plan.shared_bytes,
                           persistent_args(ctx, d, s, rec, barriers, plan.blocks_per_dir));
  return true;
}

template <typename T, typename Acc, typename View>
bool CudaBackend::forward_recurrence(Context& ctx, const LayerDims& d, const View& s,
                                     const Recurrence<T, Acc>* rec) {
  return run_persistent(persistent_forward_kernel<T, Acc>, ctx, d, s, rec);
}

template <typename T, typename Acc, typename View>
bool CudaBackend::backward_recurrence(Context& ctx, const LayerDims& d, const View& s,
                                      const Recurrence<T, Acc>* rec) {
  return run_persistent(persistent_backward_kernel<T, Acc>, ctx, d, s, rec);
}

template <typename T, typename Acc>
bool CudaBackend::persistent_fits(const LayerDims& d) {
  return plan_persistent(d, sizeof(T), persistent_forward_kernel<T, Acc>).blocks_per_dir > 0 &&
         plan_persistent(d, sizeof(T), persistent_backward_kernel<T, Acc>).blocks_per_dir > 0;
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
