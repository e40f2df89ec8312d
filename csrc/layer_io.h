// What every device's op entry does around csrc/layer_driver.h: make the inputs contiguous,
// check the backward's extra arguments, and allocate outputs.
#pragma once

#include <optional>
#include <vector>

#include "lstm.h"
#include "torch_api.h"

namespace fastlstm {

// Tensors of one layer call: input [T, B, I] with input.stride(2) == 1; h0, c0 and weights
// contiguous; reserve uint8 of reserve_rows rows per block (LayerDims::reserve_bytes_per_dir).
struct LayerTensors {
  Tensor input, h0, c0, reserve;
  int64_t reserve_rows = 0;  // N, or T * B for a padded reserve
  std::vector<Tensor> weights;
};

// transposed_weights: a backend that reads w_ih and w_hh transposed in place (the CPU's)
// keeps a transposed_weight as it is; every other weight is made contiguous.
LayerTensors prepare_layer_tensors(const Tensor& input, const Tensor& h0,
                                   const Tensor& c0, const std::vector<Tensor>& weights,
                                   bool transposed_weights, int64_t weights_per_dir);

// Whether a 2-D weight is a transposed view of a contiguous tensor (strides (1, rows)), as
// Keras's kernel [I, 4H] is once turned into torch's [4H, I] by .T. fastlstm/_ops.py's fake
// backward gives such a weight's gradient the same layout on the CPU.
bool transposed_weight(const Tensor& w);

// Bytes of the accumulation type for this input: float for half/bfloat16, else the dtype.
int64_t acc_size(const Tensor& input);

// Bytes of the reserve with `rows` rows per block, every direction (LayerDims layout).
int64_t reserve_bytes(const LayerDims& d, int64_t rows, const Tensor& input);

// The reserve the forward returns for `rows` = N valid tokens, uninitialised but for its
// alignment padding.
Tensor allocate_reserve(const LayerDims& d, int64_t rows, const Tensor& input);

// Whether input [T, B, *] lies batch-major in memory (stride(2) == 1, stride(0) < stride(1)),
// as a batch-first caller's transposed view does. Strides only, no sizes: under torch.compile
// T may be a size the fake kernel cannot compare (the packed path's), and where T or B is 1
// both orders are the same memory anyway.
bool batch_major(const Tensor& input);

// A new dense [T, B, C] tensor on like's device, in like's memory order (batch_major): a
// batch-first caller's output.transpose(0, 1) is then contiguous, and costs the next layer
// (a Linear, say) no copy. fastlstm/_ops.py's fake kernels make the same choice.
Tensor empty_tb(int64_t T, int64_t B, int64_t C, ScalarType dtype, const Tensor& like);

struct ForwardOutputs {
  Tensor output;  // [T, B, D*Hout], in the input's memory order (empty_tb)
  Tensor h_n;     // [D, B, Hout]
  Tensor c_n;     // [D, B, H]
};

// input: LayerTensors::input.
ForwardOutputs allocate_forward_outputs(const LayerDims& d, const Tensor& input);

// Incoming gradients, or undefined where none flows: grad_h_n and grad_c_n contiguous,
// grad_output any strides with its last dim contiguous.
struct BackwardGrads {
  Tensor grad_output, grad_h_n, grad_c_n;
};

BackwardGrads check_backward_args(const LayerDims& d, const Tensor& input,
                                  const std::optional<Tensor>& grad_output,
                                  const std::optional<Tensor>& grad_h_n,
                                  const std::optional<Tensor>& grad_c_n,
                                  const Tensor& reserve);

// The rows of a reserve the forward returned for these lengths, N valid tokens: N, or T * B
// for a padded reserve. Any other size is an error. (check_backward_args has checked the rest.)
int64_t reserve_rows(const LayerDims& d, int64_t tokens, const Tensor& input,
                     const Tensor& reserve);

struct BackwardOutputs {
  Tensor grad_input;  // [T, B, I], or [0] when the input needs no gradient
  Tensor grad_h0, grad_c0;
  std::vector<Tensor> grad_weights;
};

BackwardOutputs allocate_backward_outputs(const LayerDims& d, const LayerTensors& in,
                                          bool input_requires_grad);

}  // namespace fastlstm
