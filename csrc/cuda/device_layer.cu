// The layer ops for lengths that live on the GPU: csrc/layer_driver.h on CudaBackend with a
// DeviceScheduleView, so that nothing is copied to the host and the call could be captured in
// a CUDA graph. The persistent kernels run both time loops (the per-step loop needs each step's
// row count on the host), so this takes a shape only where they do.
//
// The host does not know N = sum(lengths): buffers and GEMMs cover T * B packed rows, the rows
// from N on zero (their GEMM rows are wasted work, the price of not synchronising).
#include "../layer_driver.h"
#include "../layer_ops.h"
#include "backend.h"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

namespace {

template <typename F>
bool for_persistent_dtype(const LayerDims& d, ScalarType dtype, F&& f) {
  bool taken = false;
  dispatch_dtype<true>(dtype, [&](auto tag) {
    using T = decltype(tag);
    using Acc = acc_type_t<T>;
    if (CudaBackend::persistent_fits<T, Acc>(d)) {
      f(tag);
      taken = true;
    }
  });
  return taken;
}

}  // namespace

bool device_layer_forward(const LayerDims& d, const Tensor& input, const Tensor& lengths,
                          const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& weights,
                          std::tuple<Tensor, Tensor, Tensor, Tensor>& result) {
  return for_persistent_dtype(d, input.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const DeviceScheduleView view(lengths, d.T);
    LayerTensors in = prepare_layer_tensors(input, h0, c0, weights, CudaBackend::kTransposedWeights,
                                            d.weights_per_dir());
    in.reserve_rows = d.T * d.B;
    in.reserve = allocate_reserve(d, in.reserve_rows, input);
    torch::stable::zero_(in.reserve);  // rows past N are never written
    ForwardOutputs out = allocate_forward_outputs(d, in.input);
    layer_forward<CudaBackend, T, acc_type_t<T>>(d, view, in, out.output, out.h_n, out.c_n);
    result = {out.output, out.h_n, out.c_n, in.reserve};
  });
}

bool device_layer_backward(const LayerDims& d, const BackwardGrads& g, const Tensor& input,
                           const Tensor& lengths, const Tensor& h0, const Tensor& c0,
                           const std::vector<Tensor>& weights, const Tensor& reserve,
                           bool input_requires_grad,
                           std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>>& result) {
  return for_persistent_dtype(d, input.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = d.T * d.B;
    const int64_t bytes = reserve_bytes(d, rows, input);
    FASTLSTM_CHECK_VALUE(reserve.numel() == bytes,
                         "fastlstm: with lengths on the GPU, reserve must be the uint8 [", bytes,
                         "] tensor (T * B rows) the forward returned, got ",
                         text(reserve.sizes()));
    const DeviceScheduleView view(lengths, d.T);
    LayerTensors in = prepare_layer_tensors(input, h0, c0, weights, CudaBackend::kTransposedWeights,
                                            d.weights_per_dir());
    in.reserve = reserve;
    in.reserve_rows = rows;
    BackwardOutputs out = allocate_backward_outputs(d, in, input_requires_grad);
    layer_backward<CudaBackend, T, acc_type_t<T>>(d, view, in, g.grad_output, g.grad_h_n,
                                                  g.grad_c_n, input_requires_grad,
                                                  out.grad_input, out.grad_h0, out.grad_c0,
                                                  out.grad_weights);
    result = {out.grad_input, out.grad_h0, out.grad_c0, out.grad_weights};
  });
}

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
