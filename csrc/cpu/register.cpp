// Binds the CPU kernels to the fastlstm op schemas (csrc/ops.cpp).
#include <torch/library.h>

#include "layer_common.h"

TORCH_LIBRARY_IMPL(fastlstm, CPU, m) {
  m.impl("lstm_layer_forward", &fastlstm::cpu::lstm_layer_forward_cpu);
  m.impl("lstm_layer_backward", &fastlstm::cpu::lstm_layer_backward_cpu);
}
