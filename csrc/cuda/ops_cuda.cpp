// The CUDA kernels of the fastlstm ops: checks, the device guard, then csrc/layer_ops.h on
// CudaBackend, on torch's current stream.
//
// Lengths on the GPU, where the persistent kernels take the shape: the schedule is built on
// the device (device_layer.cu), with no host sync. Otherwise the step schedule is built on the
// host, so lengths on the GPU are copied to the host once per op call (a synchronisation), and
// a call during CUDA-graph capture is refused, with the reason.
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>

#include "../checks.h"
#include "../layer_ops.h"
#include "backend.h"

namespace fastlstm::cuda {
namespace {

void refuse_graph_capture(const char* op) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  FASTLSTM_CUDA_CHECK(cudaStreamIsCapturing(simt::current_stream(), &status));
  FASTLSTM_CHECK(status == cudaStreamCaptureStatusNone, "fastlstm: ", op,
                 " cannot be captured in a CUDA graph yet: it builds its step schedule on the "
                 "host (a device-to-host copy of the lengths and host-driven launches). Run it "
                 "outside torch.cuda.graph / CUDA-graph trees, e.g. "
                 "torch.compile(mode=\"default\") rather than mode=\"reduce-overhead\".");
}

using DeviceGuard = torch::stable::accelerator::DeviceGuard;

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer_forward_cuda(
    const Tensor& input, const Tensor& lengths, const Tensor& h0, const Tensor& c0,
    const std::vector<Tensor>& weights, bool has_biases, bool has_projections,
    bool bidirectional, bool padded_reserve) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  const DeviceGuard guard(input.get_device_index());
  std::tuple<Tensor, Tensor, Tensor, Tensor> result;
  if (lengths.is_cuda() && device_layer_forward(d, input, lengths, h0, c0, weights, result))
    return result;
  refuse_graph_capture("lstm_layer_forward");
  return run_layer_forward<CudaBackend, true>(d, input, lengths, h0, c0, weights,
                                              padded_reserve);
}

std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> lstm_layer_backward_cuda(
    const std::optional<Tensor>& grad_output, const std::optional<Tensor>& grad_h_n,
    const std::optional<Tensor>& grad_c_n, const Tensor& input, const Tensor& lengths,
    const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& weights,
    const Tensor& reserve, bool has_biases, bool has_projections, bool bidirectional,
    bool input_requires_grad) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  const DeviceGuard guard(input.get_device_index());
  const BackwardGrads g = check_backward_args(d, input, grad_output, grad_h_n, grad_c_n, reserve);
  std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> result;
  if (lengths.is_cuda() && device_layer_backward(d, g, input, lengths, h0, c0, weights, reserve,
                                                 input_requires_grad, result))
    return result;
  refuse_graph_capture("lstm_layer_backward");
  return run_layer_backward<CudaBackend, true>(d, g, input, lengths, h0, c0, weights, reserve,
                                               input_requires_grad);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> device_schedule_cuda(const Tensor& lengths,
                                                                 int64_t T) {
  check_device_schedule_args(lengths, T);
  const DeviceGuard guard(lengths.get_device_index());
  const DeviceSchedule s = device_schedule(lengths, T);
  return {s.order, s.sorted_lengths, s.active, s.offsets};
}

}  // namespace
}  // namespace fastlstm::cuda

STABLE_TORCH_LIBRARY_IMPL(fastlstm, CUDA, m) {
  m.impl("lstm_layer_forward", TORCH_BOX(&fastlstm::cuda::lstm_layer_forward_cuda));
  m.impl("lstm_layer_backward", TORCH_BOX(&fastlstm::cuda::lstm_layer_backward_cuda));
  m.impl("_device_schedule", TORCH_BOX(&fastlstm::cuda::device_schedule_cuda));
}
