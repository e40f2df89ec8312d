// Pieces the CPU forward and backward of a layer share: weight and reserve pointers per
// direction, and the op entry points that csrc/cpu/register.cpp binds.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>
#include <vector>

#include "../lstm.h"

namespace fastlstm::cpu {

template <typename T>
struct DirectionWeights {
  const T* w_ih;  // [4H, I]
  const T* w_hh;  // [4H, Hout]
  const T* b_ih;  // [4H] or nullptr
  const T* b_hh;  // [4H] or nullptr
  const T* w_hr;  // [Hout, H] or nullptr
};

// weights: contiguous, in nn.LSTM's order (see LayerDims::weights_per_dir).
template <typename T>
DirectionWeights<T> direction_weights(const LayerDims& d, const std::vector<at::Tensor>& weights,
                                      int64_t dir) {
  int64_t k = dir * d.weights_per_dir();
  DirectionWeights<T> w{};
  w.w_ih = weights[k++].const_data_ptr<T>();
  w.w_hh = weights[k++].const_data_ptr<T>();
  if (d.has_biases) {
    w.b_ih = weights[k++].const_data_ptr<T>();
    w.b_hh = weights[k++].const_data_ptr<T>();
  }
  if (d.has_proj) w.w_hr = weights[k++].const_data_ptr<T>();
  return w;
}

// Row blocks of one direction's reserve (layout in LayerDims::reserve_row_width).
template <typename T>
struct ReserveBlocks {
  T* gates;  // [T*B, 4H]
  T* cell;   // [T*B, H]
  T* out;    // [T*B, Hout]
  T* hraw;   // [T*B, H] or nullptr
};

template <typename T>
ReserveBlocks<T> reserve_blocks(const LayerDims& d, T* reserve, int64_t dir) {
  const int64_t rows = d.T * d.B;
  T* base = reserve + dir * d.reserve_per_dir();
  ReserveBlocks<T> r{};
  r.gates = base;
  r.cell = r.gates + rows * 4 * d.H;
  r.out = r.cell + rows * d.H;
  r.hraw = d.has_proj ? r.out + rows * d.Hout : nullptr;
  return r;
}

std::vector<at::Tensor> contiguous_all(at::TensorList ts);

// The CPU kernels run float32 and float64.
void check_cpu_dtype(const at::Tensor& input);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward_cpu(
    const at::Tensor& input, const at::Tensor& lengths, const at::Tensor& h0,
    const at::Tensor& c0, at::TensorList weights, bool has_biases, bool has_projections,
    bool bidirectional);

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lstm_layer_backward_cpu(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_h_n,
    const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input, const at::Tensor& lengths,
    const at::Tensor& h0, const at::Tensor& c0, at::TensorList weights, const at::Tensor& reserve,
    bool has_biases, bool has_projections, bool bidirectional, bool input_requires_grad);

// Runs f(dir) for every direction; both directions of a bidirectional layer run at once,
// one per thread, since their recurrences are independent.
template <typename F>
void for_each_direction(int64_t D, const F& f);

}  // namespace fastlstm::cpu

#include <ATen/Parallel.h>

template <typename F>
void fastlstm::cpu::for_each_direction(int64_t D, const F& f) {
  at::parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
    for (int64_t dir = d0; dir < d1; ++dir) f(dir);
  });
}
