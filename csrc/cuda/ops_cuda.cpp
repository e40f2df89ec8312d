// The CUDA kernels of the fastlstm ops: checks, the device guard, then csrc/layer_ops.h on
// CudaBackend (the per-step path), on torch's current stream.
//
// The step schedule is built on the host, so lengths on the GPU are copied to the host once
// per op call (a device-to-host synchronisation). For the same reason a call cannot be
// captured in a CUDA graph: it is refused during capture, with the reason.
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "../layer_ops.h"
#include "backend.h"

namespace fastlstm::cuda {
namespace {

void refuse_graph_capture(const char* op) {
  TORCH_CHECK(c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None,
              "fastlstm: ", op, " cannot be captured in a CUDA graph yet: it builds its step "
              "schedule on the host (a device-to-host copy of the lengths and host-driven "
              "launches). Run it outside torch.cuda.graph / CUDA-graph trees, e.g. "
              "torch.compile(mode=\"default\") rather than mode=\"reduce-overhead\".");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward_cuda(
    const at::Tensor& input, const at::Tensor& lengths, const at::Tensor& h0,
    const at::Tensor& c0, at::TensorList weights, bool has_biases, bool has_projections,
    bool bidirectional) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  const c10::cuda::CUDAGuard guard(input.device());
  refuse_graph_capture("lstm_layer_forward");
  return run_layer_forward<CudaBackend, true>(d, input, lengths, h0, c0, weights);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lstm_layer_backward_cuda(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_h_n,
    const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input, const at::Tensor& lengths,
    const at::Tensor& h0, const at::Tensor& c0, at::TensorList weights, const at::Tensor& reserve,
    bool has_biases, bool has_projections, bool bidirectional, bool input_requires_grad) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  const c10::cuda::CUDAGuard guard(input.device());
  refuse_graph_capture("lstm_layer_backward");
  const BackwardGrads g = check_backward_args(d, input, grad_output, grad_h_n, grad_c_n, reserve);
  return run_layer_backward<CudaBackend, true>(d, g, input, lengths, h0, c0, weights, reserve,
                                               input_requires_grad);
}

}  // namespace
}  // namespace fastlstm::cuda

TORCH_LIBRARY_IMPL(fastlstm, CUDA, m) {
  m.impl("lstm_layer_forward", &fastlstm::cuda::lstm_layer_forward_cuda);
  m.impl("lstm_layer_backward", &fastlstm::cuda::lstm_layer_backward_cuda);
  m.impl("_device_schedule", [](const at::Tensor& lengths, int64_t T) {
    fastlstm::check_device_schedule_args(lengths, T);
    const c10::cuda::CUDAGuard guard(lengths.device());
    const auto s = fastlstm::cuda::device_schedule(lengths, T);
    return std::make_tuple(s.order, s.sorted_lengths, s.active, s.offsets);
  });
}
