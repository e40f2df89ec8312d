// What every device's op entry does around csrc/layer_driver.h: make the inputs contiguous,
// check the backward's extra arguments, and allocate outputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "lstm.h"

namespace fastlstm {

// Tensors of one layer call: input [T, B, I] with input.stride(2) == 1; h0, c0 and weights
// contiguous; reserve uint8 (see LayerDims::reserve_bytes_per_dir).
struct LayerTensors {
  at::Tensor input, h0, c0, reserve;
  std::vector<at::Tensor> weights;
};

LayerTensors prepare_layer_tensors(const at::Tensor& input, const at::Tensor& h0,
                                   const at::Tensor& c0, at::TensorList weights);

// Bytes of the accumulation type for this input: float for half/bfloat16, else the dtype.
int64_t acc_size(const at::Tensor& input);

// The reserve the forward returns, uninitialised but for its alignment padding.
at::Tensor allocate_reserve(const LayerDims& d, const at::Tensor& input);

struct ForwardOutputs {
  at::Tensor output;  // [T, B, D*Hout]
  at::Tensor h_n;     // [D, B, Hout]
  at::Tensor c_n;     // [D, B, H]
};

ForwardOutputs allocate_forward_outputs(const LayerDims& d, const at::Tensor& input);

// Incoming gradients, contiguous, or undefined where none flows.
struct BackwardGrads {
  at::Tensor grad_output, grad_h_n, grad_c_n;
};

BackwardGrads check_backward_args(const LayerDims& d, const at::Tensor& input,
                                  const std::optional<at::Tensor>& grad_output,
                                  const std::optional<at::Tensor>& grad_h_n,
                                  const std::optional<at::Tensor>& grad_c_n,
                                  const at::Tensor& reserve);

struct BackwardOutputs {
  at::Tensor grad_input;  // [T, B, I], or [0] when the input needs no gradient
  at::Tensor grad_h0, grad_c0;
  std::vector<at::Tensor> grad_weights;
};

BackwardOutputs allocate_backward_outputs(const LayerDims& d, const LayerTensors& in,
                                          bool input_requires_grad);

}  // namespace fastlstm
