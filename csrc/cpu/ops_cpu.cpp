// The CPU kernels of the fastlstm ops: checks, dtype dispatch, then csrc/layer_driver.h on
// CpuBackend.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "../checks.h"
#include "../layer_driver.h"
#include "../layer_io.h"
#include "backend.h"

namespace fastlstm::cpu {
namespace {

void check_cpu_dtype(const at::Tensor& input) {
  TORCH_CHECK_TYPE(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
                   "fastlstm: on the CPU, input must be float32 or float64, got ",
                   input.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward_cpu(
    const at::Tensor& input, const at::Tensor& lengths, const at::Tensor& h0,
    const at::Tensor& c0, at::TensorList weights, bool has_biases, bool has_projections,
    bool bidirectional) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  check_cpu_dtype(input);
  const Schedule s = schedule_from_lengths(lengths, d.T);
  LayerTensors in = prepare_layer_tensors(input, h0, c0, weights);
  ForwardOutputs out = allocate_forward_outputs(d, input);
  in.reserve = allocate_reserve(d, input);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fastlstm::lstm_layer_forward (CPU)", [&] {
    layer_forward<CpuBackend, scalar_t, scalar_t>(d, s, in, out.output, out.h_n, out.c_n);
  });
  return {out.output, out.h_n, out.c_n, in.reserve};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lstm_layer_backward_cpu(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_h_n,
    const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input, const at::Tensor& lengths,
    const at::Tensor& h0, const at::Tensor& c0, at::TensorList weights, const at::Tensor& reserve,
    bool has_biases, bool has_projections, bool bidirectional, bool input_requires_grad) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  check_cpu_dtype(input);
  const BackwardGrads g = check_backward_args(d, input, grad_output, grad_h_n, grad_c_n, reserve);
  const Schedule s = schedule_from_lengths(lengths, d.T);
  LayerTensors in = prepare_layer_tensors(input, h0, c0, weights);
  in.reserve = reserve;
  BackwardOutputs out = allocate_backward_outputs(d, in, input_requires_grad);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fastlstm::lstm_layer_backward (CPU)", [&] {
    layer_backward<CpuBackend, scalar_t, scalar_t>(d, s, in, g.grad_output, g.grad_h_n,
                                                   g.grad_c_n, input_requires_grad,
                                                   out.grad_input, out.grad_h0, out.grad_c0,
                                                   out.grad_weights);
  });
  return {out.grad_input, out.grad_h0, out.grad_c0, out.grad_weights};
}

}  // namespace
}  // namespace fastlstm::cpu

TORCH_LIBRARY_IMPL(fastlstm, CPU, m) {
  m.impl("lstm_layer_forward", &fastlstm::cpu::lstm_layer_forward_cpu);
  m.impl("lstm_layer_backward", &fastlstm::cpu::lstm_layer_backward_cpu);
}
