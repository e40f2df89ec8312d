// csrc/cuda/ built for the CPU: the host compiler compiles the same kernel bodies, cuBLAS call
// sites and CudaBackend as nvcc does, with FASTLSTM_SIMT_EMULATE selecting the emulator
// (fastlstm::cuda::emulated::CudaBackend). Nothing here is a second copy of a kernel.
#define FASTLSTM_SIMT_EMULATE 1

#include "../cuda/device_schedule.cu"
#include "../cuda/gemm_cuda.cpp"
#include "../cuda/kernels_bf16.cu"
#include "../cuda/kernels_f16.cu"
#include "../cuda/kernels_f32.cu"
#include "../cuda/kernels_f64.cu"

#include <torch/library.h>

#include "../checks.h"
#include "../layer_ops.h"
#include "emulated_ops.h"

namespace fastlstm::simt {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> emulated_layer_forward(
    const LayerDims& d, const at::Tensor& input, const at::Tensor& lengths, const at::Tensor& h0,
    const at::Tensor& c0, at::TensorList weights) {
  return run_layer_forward<cuda::CudaBackend, true>(
      d, input, lengths, h0, c0, weights);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> emulated_layer_backward(
    const LayerDims& d, const BackwardGrads& g, const at::Tensor& input,
    const at::Tensor& lengths, const at::Tensor& h0, const at::Tensor& c0,
    at::TensorList weights, const at::Tensor& reserve, bool input_requires_grad) {
  return run_layer_backward<cuda::CudaBackend, true>(
      d, g, input, lengths, h0, c0, weights, reserve, input_requires_grad);
}

}  // namespace fastlstm::simt

TORCH_LIBRARY_IMPL(fastlstm, CPU, m) {
  m.impl("_device_schedule", [](const at::Tensor& lengths, int64_t T) {
    fastlstm::check_device_schedule_args(lengths, T);
    const auto s = fastlstm::cuda::device_schedule(lengths, T);
    return std::make_tuple(s.order, s.sorted_lengths, s.active, s.offsets);
  });
}
