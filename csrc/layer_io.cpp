#include "layer_io.h"

#include "checks.h"

namespace fastlstm {

bool transposed_weight(const Tensor& w) {
  return w.dim() == 2 && w.size(0) > 1 && w.size(1) > 1 && w.stride(0) == 1 &&
         w.stride(1) == w.size(0);
}

LayerTensors prepare_layer_tensors(const Tensor& input, const Tensor& h0, const Tensor& c0,
                                   const std::vector<Tensor>& weights, bool transposed_weights,
                                   int64_t weights_per_dir) {
  LayerTensors in;
  in.input = input.stride(2) == 1 ? input : torch::stable::contiguous(input);
  in.h0 = as_contiguous(h0);
  in.c0 = as_contiguous(c0);
  in.weights.reserve(weights.size());
  for (size_t k = 0; k < weights.size(); ++k) {
    const bool w_ih_or_w_hh = static_cast<int64_t>(k) % weights_per_dir < 2;
    const Tensor& w = weights[k];
    in.weights.push_back(transposed_weights && w_ih_or_w_hh && transposed_weight(w)
                             ? w
                             : as_contiguous(w));
  }
  return in;
}

int64_t acc_size(const Tensor& input) {
  const auto t = input.scalar_type();
  return t == kHalf || t == kBFloat16 ? 4 : static_cast<int64_t>(input.element_size());
}

int64_t reserve_bytes(const LayerDims& d, int64_t rows, const Tensor& input) {
  return d.D * d.reserve_bytes_per_dir(rows, input.element_size(), acc_size(input));
}

Tensor allocate_reserve(const LayerDims& d, int64_t rows, const Tensor& input) {
  const int64_t t_size = input.element_size(), a_size = acc_size(input);
  const int64_t per_dir = d.reserve_bytes_per_dir(rows, t_size, a_size);
  Tensor reserve = empty_like_device({d.D * per_dir}, kByte, input);
  // The alignment padding after each direction's blocks is never written: zero it, so that
  // the reserve is deterministic.
  const int64_t used = d.reserve_used_bytes_per_dir(rows, t_size, a_size);
  for (int64_t dir = 0; dir < d.D; ++dir) {
    Tensor pad = narrowed(reserve, 0, dir * per_dir + used, per_dir - used);
    torch::stable::zero_(pad);
  }
  return reserve;
}

bool batch_major(const Tensor& input) {
  return input.dim() == 3 && input.stride(2) == 1 && input.stride(0) < input.stride(1);
}

Tensor empty_tb(int64_t T, int64_t B, int64_t C, ScalarType dtype, const Tensor& like) {
  if (!batch_major(like)) return empty_like_device({T, B, C}, dtype, like);
  return torch::stable::transpose(empty_like_device({B, T, C}, dtype, like), 0, 1);
}

ForwardOutputs allocate_forward_outputs(const LayerDims& d, const Tensor& input) {
  const auto dtype = input.scalar_type();
  return {empty_tb(d.T, d.B, d.D * d.Hout, dtype, input),
          empty_like_device({d.D, d.B, d.Hout}, dtype, input),
          empty_like_device({d.D, d.B, d.H}, dtype, input)};
}

BackwardGrads check_backward_args(const LayerDims& d, const Tensor& input,
                                  const std::optional<Tensor>& grad_output,
                                  const std::optional<Tensor>& grad_h_n,
                                  const std::optional<Tensor>& grad_c_n, const Tensor& reserve) {
  auto contiguous_or_undefined = [](const std::optional<Tensor>& g) {
    return g.has_value() && g->defined() ? as_contiguous(*g) : Tensor();
  };
  // grad_output keeps its strides where its last dim is contiguous (the driver gathers its rows
  // by element offsets, as it does the input's): a batch-first caller's transposed gradient
  // (fastlstm.keras, batch_first=True) costs no copy.
  const bool strided_ok = grad_output.has_value() && grad_output->defined() &&
                          grad_output->dim() == 3 && grad_output->stride(2) == 1;
  BackwardGrads g{strided_ok ? *grad_output : contiguous_or_undefined(grad_output),
                  contiguous_or_undefined(grad_h_n), contiguous_or_undefined(grad_c_n)};
  check_grad_arg(g.grad_output, "grad_output", {d.T, d.B, d.D * d.Hout}, input);
  check_grad_arg(g.grad_h_n, "grad_h_n", {d.D, d.B, d.Hout}, input);
  check_grad_arg(g.grad_c_n, "grad_c_n", {d.D, d.B, d.H}, input);
  FASTLSTM_CHECK_VALUE(reserve.dim() == 1 && reserve.scalar_type() == kByte &&
                           reserve.is_contiguous(),
                       "fastlstm: reserve must be the contiguous 1-D uint8 tensor the forward "
                       "returned, got ", text(reserve.sizes()), " of dtype ",
                       text(reserve.scalar_type()),
                       reserve.is_contiguous() ? "" : ", not contiguous");
  FASTLSTM_CHECK_VALUE(same_device(reserve, input),
                       "fastlstm: reserve must be on the input's device ", text(input.device()),
                       ", got ", text(reserve.device()));
  return g;
}

int64_t reserve_rows(const LayerDims& d, int64_t tokens, const Tensor& input,
                     const Tensor& reserve) {
  const auto bytes = [&](int64_t rows) { return reserve_bytes(d, rows, input); };
  if (reserve.numel() == bytes(tokens)) return tokens;
  FASTLSTM_CHECK_VALUE(reserve.numel() == bytes(d.T * d.B),
                       "fastlstm: reserve must be the uint8 [", bytes(tokens),
                       "] tensor the forward returned for these lengths (", tokens,
                       " valid tokens), or [", bytes(d.T * d.B), "] with padded_reserve, got ",
                       text(reserve.sizes()));
  return d.T * d.B;
}

BackwardOutputs allocate_backward_outputs(const LayerDims& d, const LayerTensors& in,
                                          bool input_requires_grad) {
  const auto dtype = in.input.scalar_type();
  BackwardOutputs out;
  out.grad_input = input_requires_grad ? empty_tb(d.T, d.B, d.I, dtype, in.input)
                                       : empty_like_device({0}, dtype, in.input);
  out.grad_h0 = empty_like_device({d.D, d.B, d.Hout}, dtype, in.input);
  out.grad_c0 = empty_like_device({d.D, d.B, d.H}, dtype, in.input);
  out.grad_weights.resize(in.weights.size());  // filled by layer_backward
  return out;
}

}  // namespace fastlstm
