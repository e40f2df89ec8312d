// CUDA kernels of CudaBackend: the fused LSTM cell (forward, backward) and row copies.
// One thread per element, 64-bit indexing throughout (B x T x 4H may exceed 2^31).
// Included only by the per-dtype translation units kernels_<dtype>.cu, which nvcc builds for
// the GPU and csrc/emulated/cuda_backend.cpp builds for the CPU.
#pragma once

#include "../simt/simt.h"
#include "backend.h"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

#if defined(FASTLSTM_SIMT_EMULATE)
// Emulated grids stay small: one warp per block and at most 3 blocks, so that the grid-stride
// loops below take several turns even on the tiny shapes of the tests.
constexpr int kThreads = 32;
constexpr int64_t kMaxBlocks = 3;
#else
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 32;
#endif

inline int64_t blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return b < kMaxBlocks ? b : kMaxBlocks;  // grid-stride loops cover the rest
}

template <typename Acc>
__device__ __forceinline__ Acc sigmoid_(Acc x) {
  return Acc(1) / (Acc(1) + exp(-x));
}

// One hidden unit of the cell, forward: g points at its gate i pre-activation (x W_ih^T +
// h W_hh^T, without bias) in a row of 4H, the other gates H apart; b at the unit's bias b_ih +
// b_hh, also H apart. Leaves the activated gates in g, returns through c_out and h_out.
// Shared by the per-step kernel below and the persistent kernels (persistent.cuh).
template <typename T, typename Acc>
__device__ __forceinline__ void cell_forward_unit(Acc* g, int64_t H, const Acc* b, Acc c_prev,
                                                  Acc* c_out, T* h_out) {
  const Acc i = sigmoid_<Acc>(g[0] + b[0]);
  const Acc f = sigmoid_<Acc>(g[H] + b[H]);
  const Acc gg = tanh(g[2 * H] + b[2 * H]);
  const Acc o = sigmoid_<Acc>(g[3 * H] + b[3 * H]);
  const Acc c = f * c_prev + i * gg;
  g[0] = i;
  g[H] = f;
  g[2 * H] = gg;
  g[3 * H] = o;
  *c_out = c;
  *h_out = static_cast<T>(o * tanh(c));
}

// The four gate gradients (i, f, g, o) of one unit.
template <typename T>
struct Gates4 {
  T v[4];
};

// One hidden unit of the cell, backward: g the activated gates (H apart), c its cell state,
// dh the gradient of its output h, dc (in/out) the gradient flowing into its cell state.
// Returns the gate gradients.
template <typename T, typename Acc>
__device__ __forceinline__ Gates4<T> cell_backward_values(const Acc* g, int64_t H, Acc c,
                                                          Acc c_prev, Acc dh, Acc* dc) {
  const Acc i = g[0], f = g[H], gg = g[2 * H], o = g[3 * H];
  const Acc tc = tanh(c);
  const Acc dce = *dc + dh * o * (Acc(1) - tc * tc);
  *dc = dce * f;
  return {{static_cast<T>(dce * gg * i * (Acc(1) - i)),
           static_cast<T>(dce * c_prev * f * (Acc(1) - f)),
           static_cast<T>(dce * i * (Acc(1) - gg * gg)),
           static_cast<T>(dh * tc * o * (Acc(1) - o))}};
}
// The same, writing the gate gradients to d (H apart).
template <typename T, typename Acc>
__device__ __forceinline__ void cell_backward_unit(const Acc* g, int64_t H, Acc c, Acc c_prev,
                                                   Acc dh, Acc* dc, T* d) {
  const Gates4<T> r = cell_backward_values<T, Acc>(g, H, c, c_prev, dh, dc);
  for (int k = 0; k < 4; ++k) d[k * H] = r.v[k];
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads)
cell_forward_kernel(int64_t rows, int64_t H, Acc* gates, const Acc* bias, PrevCell<Acc> c_prev,
                    Acc* c_out, T* h_out) {
  const int64_t n = rows * H;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e / H, k = e % H;
    cell_forward_unit<T, Acc>(gates + j * 4 * H + k, H, bias + k, c_prev.row(j, H)[k],
                              c_out + e, h_out + e);
  }
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads)
cell_backward_kernel(int64_t rows, int64_t H, const Acc* gates, const Acc* cell,
                     PrevCell<Acc> c_prev, const Acc* dh, Acc* dc, T* dgates) {
  const int64_t n = rows * H;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e / H, k = e % H;
    cell_backward_unit<T, Acc>(gates + j * 4 * H + k, H, cell[e], c_prev.row(j, H)[k], dh[e],
                               dc + e, dgates + j * 4 * H + k);
  }
}

template <typename D, typename S>
__global__ void __launch_bounds__(kThreads)
copy_rows_kernel(int64_t n, int64_t C, D* dst, int64_t ldd, const int64_t* dst_idx, const S* src,
                 int64_t lds, const int64_t* src_idx) {
  const int64_t total = n * C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / C, col = e % C;
    const int64_t di = dst_idx ? dst_idx[r] : r, si = src_idx ? src_idx[r] : r;
    // An index < 0 is "no row" (schedule_view.h): skip that destination, or write zeros.
    if (di >= 0) dst[di * ldd + col] = si >= 0 ? static_cast<D>(src[si * lds + col]) : D(0);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
zero_rows_kernel(int64_t n, int64_t C, T* dst, int64_t ldd, const int64_t* idx) {
  const int64_t total = n * C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / C, col = e % C;
    dst[(idx ? idx[r] : r) * ldd + col] = T(0);
  }
}

template <typename Acc, typename T>
__global__ void __launch_bounds__(kThreads) add_kernel(int64_t n, Acc* dst, const T* src) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x)
    dst[e] += static_cast<Acc>(src[e]);
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads)
combine_bias_kernel(int64_t G, Acc* out, const T* b_ih, const T* b_hh) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < G;
       k += int64_t(gridDim.x) * blockDim.x)
    out[k] = b_ih ? static_cast<Acc>(b_ih[k]) + static_cast<Acc>(b_hh[k]) : Acc(0);
}

#define FASTLSTM_LAUNCH(kernel, n, ...)                                                   \
  do {                                                                                   \
    if ((n) > 0)                                                                         \
      simt::launch(kernel, dim3(unsigned(blocks_for(n))), dim3(kThreads), 0, __VA_ARGS__); \
  } while (0)

template <typename T, typename Acc>
void CudaBackend::cell_forward(Context&, int64_t rows, int64_t H, Acc* gates, const Acc* bias,
                               PrevCell<Acc> c_prev, Acc* c_out, T* h_out) {
  FASTLSTM_LAUNCH((cell_forward_kernel<T, Acc>), rows * H, rows, H, gates, bias, c_prev, c_out,
                  h_out);
}

template <typename T, typename Acc>
void CudaBackend::cell_backward(Context&, int64_t rows, int64_t H, const Acc* gates, const Acc* c,
                                PrevCell<Acc> c_prev, const Acc* dh, Acc* dc, T* dgates) {
  FASTLSTM_LAUNCH((cell_backward_kernel<T, Acc>), rows * H, rows, H, gates, c, c_prev, dh, dc,
                  dgates);
}

template <typename D, typename S>
void CudaBackend::copy_rows(Context&, int64_t n, int64_t C, D* dst, int64_t ldd,
                            const int64_t* dst_idx, const S* src, int64_t lds,
                            const int64_t* src_idx) {
  FASTLSTM_LAUNCH((copy_rows_kernel<D, S>), n * C, n, C, dst, ldd, dst_idx, src, lds, src_idx);
}

template <typename T>
void CudaBackend::zero_rows(Context&, int64_t n, int64_t C, T* dst, int64_t ldd,
                            const int64_t* idx) {
  FASTLSTM_LAUNCH((zero_rows_kernel<T>), n * C, n, C, dst, ldd, idx);
}

template <typename Acc, typename T>
void CudaBackend::add(Context&, int64_t n, Acc* dst, const T* src) {
  FASTLSTM_LAUNCH((add_kernel<Acc, T>), n, n, dst, src);
}

template <typename T, typename Acc>
void CudaBackend::combine_bias(Context&, int64_t G, Acc* out, const T* b_ih, const T* b_hh) {
  FASTLSTM_LAUNCH((combine_bias_kernel<T, Acc>), G, G, out, b_ih, b_hh);
}

// Everything the layer driver needs for tensor dtype T (accumulating in Acc).
#define FASTLSTM_INSTANTIATE_MIXED(T, Acc)                                                      \
  template void CudaBackend::cell_forward<T, Acc>(CudaBackend::Context&, int64_t, int64_t,      \
                                                  Acc*, const Acc*, PrevCell<Acc>, Acc*, T*);   \
  template void CudaBackend::cell_backward<T, Acc>(CudaBackend::Context&, int64_t, int64_t,     \
                                                   const Acc*, const Acc*, PrevCell<Acc>,       \
                                                   const Acc*, Acc*, T*);                       \
  template void CudaBackend::add<Acc, T>(CudaBackend::Context&, int64_t, Acc*, const T*);       \
  template void CudaBackend::combine_bias<T, Acc>(CudaBackend::Context&, int64_t, Acc*,         \
                                                  const T*, const T*);

#define FASTLSTM_INSTANTIATE_COPY(D, S)                                                   \
  template void CudaBackend::copy_rows<D, S>(CudaBackend::Context&, int64_t, int64_t, D*, \
                                             int64_t, const int64_t*, const S*, int64_t,  \
                                             const int64_t*);

#define FASTLSTM_INSTANTIATE_ZERO(T) \
  template void CudaBackend::zero_rows<T>(CudaBackend::Context&, int64_t, int64_t, T*, int64_t, \
                                          const int64_t*);

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
