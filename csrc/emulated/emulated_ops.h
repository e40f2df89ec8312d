// The CUDA backend run on the CPU (csrc/emulated/cuda_backend.cpp): while switched on,
// the CPU entries of the fastlstm ops send CPU tensors through the CUDA kernels, cuBLAS call
// sites and layer driver, under the emulator. Tests switch it on with
// torch.ops.fastlstm._simt_emulate (see fastlstm/_simt.py); it is off by default.
#pragma once

#include <tuple>
#include <vector>

#include "../layer_io.h"
#include "../lstm.h"
#include "../torch_api.h"

namespace fastlstm::simt {

bool emulated_cuda_enabled();

std::tuple<Tensor, Tensor, Tensor, Tensor> emulated_layer_forward(
    const LayerDims& d, const Tensor& input, const Tensor& lengths, const Tensor& h0,
    const Tensor& c0, const std::vector<Tensor>& weights, bool padded_reserve);

std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> emulated_layer_backward(
    const LayerDims& d, const BackwardGrads& g, const Tensor& input,
    const Tensor& lengths, const Tensor& h0, const Tensor& c0,
    const std::vector<Tensor>& weights, const Tensor& reserve, bool input_requires_grad);

}  // namespace fastlstm::simt
