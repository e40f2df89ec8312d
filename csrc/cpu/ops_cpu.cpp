// The CPU kernels of the fastlstm ops: checks, then csrc/layer_ops.h on CpuBackend.
// While the CUDA emulation is switched on (tests), CPU calls run the CUDA backend's kernels on
// the CPU instead (csrc/emulated/emulated_ops.h).
#include <torch/csrc/stable/library.h>

#include "../checks.h"
#include "../layer_ops.h"
#include "../emulated/emulated_ops.h"
#include "backend.h"

namespace fastlstm::cpu {
namespace {

void check_cpu_dtype(const Tensor& input) {
  const auto t = input.scalar_type();
  FASTLSTM_CHECK_VALUE(t == kFloat || t == kDouble || t == kBFloat16 || t == kHalf,
                       "fastlstm: on the CPU, input must be float32, float64, bfloat16 or "
                       "float16, got ", text(t));
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer_forward_cpu(
    const Tensor& input, const Tensor& lengths, const Tensor& h0, const Tensor& c0,
    const std::vector<Tensor>& weights, bool has_biases, bool has_projections,
    bool bidirectional, bool padded_reserve) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  if (simt::emulated_cuda_enabled())
    return simt::emulated_layer_forward(d, input, lengths, h0, c0, weights, padded_reserve);
  check_cpu_dtype(input);
  return run_layer_forward<CpuBackend, true>(d, input, lengths, h0, c0, weights,
                                             padded_reserve);
}

std::tuple<Tensor, Tensor, Tensor> lstm_layer_inference_cpu(
    const Tensor& input, const Tensor& lengths, const Tensor& h0, const Tensor& c0,
    const std::vector<Tensor>& weights, bool has_biases, bool has_projections,
    bool bidirectional) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  if (simt::emulated_cuda_enabled()) {
    auto [output, h_n, c_n, reserve] =
        simt::emulated_layer_forward(d, input, lengths, h0, c0, weights, false);
    return {output, h_n, c_n};
  }
  check_cpu_dtype(input);
  return run_layer_inference<CpuBackend, true>(d, input, lengths, h0, c0, weights);
}

std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> lstm_layer_backward_cpu(
    const std::optional<Tensor>& grad_output, const std::optional<Tensor>& grad_h_n,
    const std::optional<Tensor>& grad_c_n, const Tensor& input, const Tensor& lengths,
    const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& weights,
    const Tensor& reserve, bool has_biases, bool has_projections, bool bidirectional,
    bool input_requires_grad) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  if (!simt::emulated_cuda_enabled()) check_cpu_dtype(input);
  const BackwardGrads g = check_backward_args(d, input, grad_output, grad_h_n, grad_c_n, reserve);
  if (simt::emulated_cuda_enabled())
    return simt::emulated_layer_backward(d, g, input, lengths, h0, c0, weights, reserve,
                                         input_requires_grad);
  return run_layer_backward<CpuBackend, true>(d, g, input, lengths, h0, c0, weights, reserve,
                                               input_requires_grad);
}

}  // namespace
}  // namespace fastlstm::cpu

// For tests: torch.ops.fastlstm._cpu_packed_gemm_available(), whether torch's BLAS has the packed
// GEMM that cpu::loop_weight uses, and _cpu_packed_gemm_count(), the per-step GEMMs that
// multiplied by a weight packed once per time loop so far in this process.
STABLE_TORCH_LIBRARY_FRAGMENT(fastlstm, m) {
  m.def("_cpu_packed_gemm_available() -> bool");
  m.def("_cpu_packed_gemm_count() -> int");
}
STABLE_TORCH_LIBRARY_IMPL(fastlstm, CompositeExplicitAutograd, m) {
  m.impl("_cpu_packed_gemm_available", TORCH_BOX(&fastlstm::cpu::packed_gemm_available));
  m.impl("_cpu_packed_gemm_count", TORCH_BOX(&fastlstm::cpu::packed_gemm_count));
}

STABLE_TORCH_LIBRARY_IMPL(fastlstm, CPU, m) {
  m.impl("lstm_layer_forward", TORCH_BOX(&fastlstm::cpu::lstm_layer_forward_cpu));
  m.impl("lstm_layer_backward", TORCH_BOX(&fastlstm::cpu::lstm_layer_backward_cpu));
  m.impl("lstm_layer_inference", TORCH_BOX(&fastlstm::cpu::lstm_layer_inference_cpu));
}
