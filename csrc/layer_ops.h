// The body of every device's op entry, after that device's own checks (dtype on the CPU, the
// device guard on the GPU): schedule, contiguous inputs, outputs, dtype dispatch, then
// csrc/layer_driver.h on the device's Backend. The argument checks come first, in
// check_layer_args (csrc/checks.h), which every entry calls and passes the sizes on from.
#pragma once

#include <tuple>
#include <vector>

#include "layer_driver.h"
#include "layer_io.h"
#include "schedule.h"

namespace fastlstm {

// f(scalar_t{}) for the input's dtype: float and double, plus Half and BFloat16 if kHalfTypes.
// (Each device's entry has checked the dtype already, with a message of its own.)
template <bool kHalfTypes, typename F>
void dispatch_dtype(ScalarType dtype, F&& f) {
  switch (dtype) {
    case kFloat: return f(float{});
    case kDouble: return f(double{});
    case kHalf:
      if constexpr (kHalfTypes) return f(Half{});
      break;
    case kBFloat16:
      if constexpr (kHalfTypes) return f(BFloat16{});
      break;
    default: break;
  }
  FASTLSTM_CHECK_VALUE(false, "fastlstm: no kernel for dtype ", text(dtype));
}

// padded_reserve: a reserve of T * B rows rather than N (see lstm_layer_forward in ops.cpp).
template <typename Backend, bool kHalfTypes>
std::tuple<Tensor, Tensor, Tensor, Tensor> run_layer_forward(
    const LayerDims& d, const Tensor& input, const Tensor& lengths, const Tensor& h0,
    const Tensor& c0, const std::vector<Tensor>& weights, bool padded_reserve) {
  const Schedule s = schedule_from_lengths(lengths, d.T);
  const typename Backend::CallScope call(d, s);  // e.g. serial on a contended CPU
  LayerTensors in = prepare_layer_tensors(input, h0, c0, weights,
                                          Backend::kTransposedWeights, d.weights_per_dir());
  in.reserve_rows = padded_reserve ? d.T * d.B : s.total;
  in.reserve = allocate_reserve(d, in.reserve_rows, input);
  ForwardOutputs out = allocate_forward_outputs(d, in.input);
  dispatch_dtype<kHalfTypes>(input.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    layer_forward<Backend, T, acc_type_t<T>>(d, HostScheduleView<Backend>(s), in, out.output,
                                             out.h_n, out.c_n);
  });
  return {out.output, out.h_n, out.c_n, in.reserve};
}

// The forward without a reserve (no gradient needed): layer_inference.
template <typename Backend, bool kHalfTypes>
std::tuple<Tensor, Tensor, Tensor> run_layer_inference(
    const LayerDims& d, const Tensor& input, const Tensor& lengths, const Tensor& h0,
    const Tensor& c0, const std::vector<Tensor>& weights) {
  const Schedule s = schedule_from_lengths(lengths, d.T);
  const typename Backend::CallScope call(d, s);  // e.g. serial on a contended CPU
  LayerTensors in = prepare_layer_tensors(input, h0, c0, weights,
                                          Backend::kTransposedWeights, d.weights_per_dir());
  ForwardOutputs out = allocate_forward_outputs(d, in.input);
  dispatch_dtype<kHalfTypes>(input.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    layer_inference<Backend, T, acc_type_t<T>>(d, s, in, out.output, out.h_n, out.c_n);
  });
  return {out.output, out.h_n, out.c_n};
}

template <typename Backend, bool kHalfTypes>
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> run_layer_backward(
    const LayerDims& d, const BackwardGrads& g, const Tensor& input,
    const Tensor& lengths, const Tensor& h0, const Tensor& c0,
    const std::vector<Tensor>& weights, const Tensor& reserve, bool input_requires_grad) {
  const Schedule s = schedule_from_lengths(lengths, d.T);
  const typename Backend::CallScope call(d, s);  // e.g. serial on a contended CPU
  LayerTensors in = prepare_layer_tensors(input, h0, c0, weights,
                                          Backend::kTransposedWeights, d.weights_per_dir());
  in.reserve = reserve;
  in.reserve_rows = reserve_rows(d, s.total, input, reserve);
  BackwardOutputs out = allocate_backward_outputs(d, in, input_requires_grad);
  dispatch_dtype<kHalfTypes>(input.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    layer_backward<Backend, T, acc_type_t<T>>(d, HostScheduleView<Backend>(s), in,
                                              g.grad_output, g.grad_h_n,
                                                   g.grad_c_n, input_requires_grad,
                                                   out.grad_input, out.grad_h0, out.grad_c0,
                                                   out.grad_weights);
  });
  return {out.grad_input, out.grad_h0, out.grad_c0, out.grad_weights};
}

}  // namespace fastlstm
