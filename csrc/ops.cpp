// Schemas of the fastlstm ops, and the Python module whose import loads this library.
// Devices register kernels with STABLE_TORCH_LIBRARY_IMPL(fastlstm, CPU|CUDA, m).
#include <Python.h>

#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(fastlstm, m) {
  // One layer, all its directions. See csrc/lstm.h for every shape. The reserve holds one row
  // per valid token, or with padded_reserve one per padded position (T * B): a size that does
  // not depend on the values of lengths, which a torch.compile graph needs.
  m.def(
      "lstm_layer_forward(Tensor input, Tensor lengths, Tensor h0, Tensor c0, Tensor[] weights, "
      "bool has_biases, bool has_projections, bool bidirectional, bool padded_reserve=False) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor reserve)");
  // lstm_layer_forward without the reserve, for when no gradient is needed: every buffer is
  // sized by the valid tokens. No autograd formula; fastlstm.functional picks it.
  m.def(
      "lstm_layer_inference(Tensor input, Tensor lengths, Tensor h0, Tensor c0, "
      "Tensor[] weights, bool has_biases, bool has_projections, bool bidirectional) "
      "-> (Tensor output, Tensor h_n, Tensor c_n)");
  // grad_input is [T, B, I] when input_requires_grad, else an empty [0] tensor.
  m.def(
      "lstm_layer_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor? grad_c_n, "
      "Tensor input, Tensor lengths, Tensor h0, Tensor c0, Tensor[] weights, Tensor reserve, "
      "bool has_biases, bool has_projections, bool bidirectional, bool input_requires_grad) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor[] grad_weights)");
}

// `import fastlstm._C` loads this library, which registers the ops above. (The Python limited
// API: the same file serves every CPython from 3.10 on.)
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
