// csrc/cuda/ built for the CPU: the host compiler compiles the same kernel bodies, cuBLAS call
// sites and CudaBackend as nvcc does, with FASTLSTM_SIMT_EMULATE selecting the emulator
// (fastlstm::cuda::emulated::CudaBackend). Nothing here is a second copy of a kernel.
#define FASTLSTM_SIMT_EMULATE 1

#include "../cuda/device_layer.cu"
#include "../cuda/device_schedule.cu"
#include "../cuda/gemm_cuda.cpp"
#include "../cuda/kernels_bf16.cu"
#include "../cuda/kernels_f16.cu"
#include "../cuda/kernels_f32.cu"
#include "../cuda/kernels_f64.cu"

#include <torch/csrc/stable/library.h>

#include "../checks.h"
#include "../debug_alloc.h"
#include "../layer_ops.h"
#include "emulated_ops.h"

namespace fastlstm::simt {

std::tuple<Tensor, Tensor, Tensor, Tensor> emulated_layer_forward(
    const LayerDims& d, const Tensor& input, const Tensor& lengths, const Tensor& h0,
    const Tensor& c0, const std::vector<Tensor>& weights, bool padded_reserve) {
  debug_alloc::OpScope scope("lstm_layer_forward");
  std::tuple<Tensor, Tensor, Tensor, Tensor> result;
  if (!(options().device_lengths &&
        cuda::device_layer_forward(d, input, lengths, h0, c0, weights, result)))
    result = run_layer_forward<cuda::CudaBackend, true>(
        d, input, lengths, h0, c0, weights, padded_reserve);
  scope.done();
  return result;
}

std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> emulated_layer_backward(
    const LayerDims& d, const BackwardGrads& g, const Tensor& input,
    const Tensor& lengths, const Tensor& h0, const Tensor& c0,
    const std::vector<Tensor>& weights, const Tensor& reserve, bool input_requires_grad) {
  debug_alloc::OpScope scope("lstm_layer_backward");
  std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> result;
  if (!(options().device_lengths &&
        cuda::device_layer_backward(d, g, input, lengths, h0, c0, weights, reserve,
                                    input_requires_grad, result)))
    result = run_layer_backward<cuda::CudaBackend, true>(
        d, g, input, lengths, h0, c0, weights, reserve, input_requires_grad);
  scope.done();
  return result;
}

}  // namespace fastlstm::simt

namespace fastlstm::simt {
namespace {

// _device_schedule on CPU tensors: csrc/cuda/device_schedule.cuh under the emulator.
std::tuple<Tensor, Tensor, Tensor, Tensor> device_schedule_emulated(const Tensor& lengths,
                                                                     int64_t T) {
  check_device_schedule_args(lengths, T);
  debug_alloc::OpScope scope("_device_schedule");
  const auto s = cuda::device_schedule(lengths, T);
  scope.done();
  return {s.order, s.sorted_lengths, s.active, s.offsets};
}

}  // namespace
}  // namespace fastlstm::simt

STABLE_TORCH_LIBRARY_IMPL(fastlstm, CPU, m) {
  m.impl("_device_schedule", TORCH_BOX(&fastlstm::simt::device_schedule_emulated));
}
