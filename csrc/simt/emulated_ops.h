// The CUDA backend run on the CPU (csrc/simt/emulated_cuda_backend.cpp): while switched on,
// the CPU entries of the fastlstm ops send CPU tensors through the CUDA kernels, cuBLAS call
// sites and layer driver, under the emulator. Tests switch it on with
// torch.ops.fastlstm._simt_emulate (see fastlstm/_simt.py); it is off by default.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>
#include <vector>

#include "../layer_io.h"
#include "../lstm.h"

namespace fastlstm::simt {

bool emulated_cuda_enabled();

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> emulated_layer_forward(
    const LayerDims& d, const at::Tensor& input, const at::Tensor& lengths, const at::Tensor& h0,
    const at::Tensor& c0, at::TensorList weights);

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> emulated_layer_backward(
    const LayerDims& d, const BackwardGrads& g, const at::Tensor& input,
    const at::Tensor& lengths, const at::Tensor& h0, const at::Tensor& c0,
    at::TensorList weights, const at::Tensor& reserve, bool input_requires_grad);

}  // namespace fastlstm::simt
