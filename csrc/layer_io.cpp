#include "layer_io.h"

#include <ATen/ops/empty.h>

#include "checks.h"

namespace fastlstm {

LayerTensors prepare_layer_tensors(const at::Tensor& input, const at::Tensor& h0,
                                   const at::Tensor& c0, at::TensorList weights) {
  LayerTensors in;
  in.input = input.stride(2) == 1 ? input : input.contiguous();
  in.h0 = h0.contiguous();
  in.c0 = c0.contiguous();
  in.weights.reserve(weights.size());
  for (const auto& w : weights) in.weights.push_back(w.contiguous());
  return in;
}

int64_t acc_size(const at::Tensor& input) {
  const auto t = input.scalar_type();
  return t == at::kHalf || t == at::kBFloat16 ? 4 : input.element_size();
}

at::Tensor allocate_reserve(const LayerDims& d, const at::Tensor& input) {
  const int64_t t_size = input.element_size(), a_size = acc_size(input);
  const int64_t per_dir = d.reserve_bytes_per_dir(t_size, a_size);
  at::Tensor reserve = at::empty({d.D * per_dir}, input.options().dtype(at::kByte));
  // The alignment padding after each direction's blocks is never written: zero it, so that
  // the reserve is deterministic.
  const int64_t used = d.reserve_used_bytes_per_dir(t_size, a_size);
  for (int64_t dir = 0; dir < d.D; ++dir) reserve.narrow(0, dir * per_dir + used, per_dir - used).zero_();
  return reserve;
}

ForwardOutputs allocate_forward_outputs(const LayerDims& d, const at::Tensor& input) {
  const auto opts = input.options();
  return {at::empty({d.T, d.B, d.D * d.Hout}, opts), at::empty({d.D, d.B, d.Hout}, opts),
          at::empty({d.D, d.B, d.H}, opts)};
}

BackwardGrads check_backward_args(const LayerDims& d, const at::Tensor& input,
                                  const std::optional<at::Tensor>& grad_output,
                                  const std::optional<at::Tensor>& grad_h_n,
                                  const std::optional<at::Tensor>& grad_c_n,
                                  const at::Tensor& reserve) {
  auto contiguous_or_undefined = [](const std::optional<at::Tensor>& g) {
    return g.has_value() && g->defined() ? g->contiguous() : at::Tensor();
  };
  BackwardGrads g{contiguous_or_undefined(grad_output), contiguous_or_undefined(grad_h_n),
                  contiguous_or_undefined(grad_c_n)};
  check_grad_arg(g.grad_output, "grad_output", {d.T, d.B, d.D * d.Hout}, input);
  check_grad_arg(g.grad_h_n, "grad_h_n", {d.D, d.B, d.Hout}, input);
  check_grad_arg(g.grad_c_n, "grad_c_n", {d.D, d.B, d.H}, input);
  const int64_t bytes = d.D * d.reserve_bytes_per_dir(input.element_size(), acc_size(input));
  TORCH_CHECK_VALUE(reserve.dim() == 1 && reserve.numel() == bytes &&
                        reserve.scalar_type() == at::kByte && reserve.is_contiguous(),
                    "fastlstm: reserve must be the contiguous 1-D uint8 [", bytes,
                    "] tensor the forward returned, got ", reserve.sizes(), " of dtype ",
                    reserve.scalar_type(), reserve.is_contiguous() ? "" : ", not contiguous");
  TORCH_CHECK_VALUE(reserve.device() == input.device(), "fastlstm: reserve must be on the input's device ",
                    input.device(), ", got ", reserve.device());
  return g;
}

BackwardOutputs allocate_backward_outputs(const LayerDims& d, const LayerTensors& in,
                                          bool input_requires_grad) {
  const auto opts = in.input.options();
  BackwardOutputs out;
  out.grad_input = input_requires_grad ? at::empty({d.T, d.B, d.I}, opts) : at::empty({0}, opts);
  out.grad_h0 = at::empty({d.D, d.B, d.Hout}, opts);
  out.grad_c0 = at::empty({d.D, d.B, d.H}, opts);
  out.grad_weights.resize(in.weights.size());  // filled by layer_backward
  return out;
}

}  // namespace fastlstm
