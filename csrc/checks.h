// Argument checks shared by every device's implementation of the fastlstm ops.
// Each failure names the argument, what was expected and what was received.
#pragma once

#include <vector>

#include "lstm.h"
#include "torch_api.h"

namespace fastlstm {

// Checks shapes, dtypes and devices of a layer op's arguments and returns the layer's sizes.
// Length *values* are checked by each device (check_lengths_cpu here), since reading them
// on a GPU would cost a device-to-host copy.
LayerDims check_layer_args(const Tensor& input, const Tensor& lengths,
                           const Tensor& h0, const Tensor& c0,
                           const std::vector<Tensor>& weights, bool has_biases, bool has_projections,
                           bool bidirectional);

// Checks every 0 <= lengths[b] <= T on a CPU int64 tensor.
void check_lengths_cpu(const Tensor& lengths_cpu, int64_t T);

// Checks an optional incoming gradient: undefined, or exactly `expected` in shape, dtype, device.
void check_grad_arg(const Tensor& grad, const char* name, const Sizes& expected,
                    const Tensor& like);

// Checks the arguments of _device_schedule: lengths a 1-D integer tensor, T >= 0. (Values are
// not read: that would cost the device-to-host copy the device schedule exists to avoid.)
void check_device_schedule_args(const Tensor& lengths, int64_t T);

}  // namespace fastlstm
