// The CUDA kernels of the fastlstm ops: checks, dtype dispatch, then csrc/layer_driver.h on
// CudaBackend (the per-step path), on torch's current stream.
//
// The step schedule is built on the host, so lengths on the GPU are copied to the host once
// per op call (a device-to-host synchronisation).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "../layer_driver.h"
#include "../layer_io.h"
#include "backend.h"

namespace fastlstm::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward_cuda(
    const at::Tensor& input, const at::Tensor& lengths, const at::Tensor& h0,
    const at::Tensor& c0, at::TensorList weights, bool has_biases, bool has_projections,
    bool bidirectional) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  const c10::cuda::CUDAGuard guard(input.device());
  const Schedule s = schedule_from_lengths(lengths, d.T);
  LayerTensors in = prepare_layer_tensors(input, h0, c0, weights);
  in.reserve = allocate_reserve(d, input);
  ForwardOutputs out = allocate_forward_outputs(d, input);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "fastlstm::lstm_layer_forward (CUDA)", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    layer_forward<CudaBackend, scalar_t, acc_t>(d, s, in, out.output, out.h_n, out.c_n);
  });
  return {out.output, out.h_n, out.c_n, in.reserve};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lstm_layer_backward_cuda(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_h_n,
    const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input, const at::Tensor& lengths,
    const at::Tensor& h0, const at::Tensor& c0, at::TensorList weights, const at::Tensor& reserve,
    bool has_biases, bool has_projections, bool bidirectional, bool input_requires_grad) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  const c10::cuda::CUDAGuard guard(input.device());
  const BackwardGrads g = check_backward_args(d, input, grad_output, grad_h_n, grad_c_n, reserve);
  const Schedule s = schedule_from_lengths(lengths, d.T);
  LayerTensors in = prepare_layer_tensors(input, h0, c0, weights);
  in.reserve = reserve;
  BackwardOutputs out = allocate_backward_outputs(d, in, input_requires_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "fastlstm::lstm_layer_backward (CUDA)", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    layer_backward<CudaBackend, scalar_t, acc_t>(d, s, in, g.grad_output, g.grad_h_n, g.grad_c_n,
                                                 input_requires_grad, out.grad_input,
                                                 out.grad_h0, out.grad_c0, out.grad_weights);
  });
  return {out.grad_input, out.grad_h0, out.grad_c0, out.grad_weights};
}

}  // namespace
}  // namespace fastlstm::cuda

TORCH_LIBRARY_IMPL(fastlstm, CUDA, m) {
  m.impl("lstm_layer_forward", &fastlstm::cuda::lstm_layer_forward_cuda);
  m.impl("lstm_layer_backward", &fastlstm::cuda::lstm_layer_backward_cuda);
}
