// Schemas of the fastlstm ops and the argument checks every device shares.
// Devices register kernels with TORCH_LIBRARY_IMPL(fastlstm, CPU|CUDA, m).
#include <Python.h>

#include <torch/library.h>

#include <vector>

#include "checks.h"

namespace fastlstm {
namespace {

std::vector<int64_t> shape3(int64_t a, int64_t b, int64_t c) { return {a, b, c}; }

void check_same_dtype_device(const at::Tensor& t, const char* name, const at::Tensor& input) {
  TORCH_CHECK_TYPE(t.scalar_type() == input.scalar_type(), "fastlstm: ", name,
                   " must have the input's dtype ", input.scalar_type(), ", got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == input.device(), "fastlstm: ", name,
                    " must be on the input's device ", input.device(), ", got ", t.device());
}

void check_shape(const at::Tensor& t, const std::string& name, at::IntArrayRef expected) {
  TORCH_CHECK_VALUE(t.sizes() == expected, "fastlstm: ", name, " must have shape ", expected,
                    ", got ", t.sizes());
}

}  // namespace

LayerDims check_layer_args(const at::Tensor& input, const at::Tensor& lengths,
                           const at::Tensor& h0, const at::Tensor& c0,
                           at::TensorList weights, bool has_biases, bool has_projections,
                           bool bidirectional) {
  TORCH_CHECK_VALUE(input.dim() == 3, "fastlstm: input must be 3-D [T, B, I], got ",
                    input.dim(), "-D with shape ", input.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(input.scalar_type()),
                   "fastlstm: input must be a floating-point tensor, got ", input.scalar_type());
  TORCH_CHECK_VALUE(lengths.dim() == 1, "fastlstm: lengths must be 1-D [B], got ", lengths.dim(),
                    "-D with shape ", lengths.sizes());
  TORCH_CHECK_TYPE(at::isIntegralType(lengths.scalar_type(), /*includeBool=*/false),
                   "fastlstm: lengths must be an integer tensor, got ", lengths.scalar_type());
  TORCH_CHECK_VALUE(lengths.device().is_cpu() || lengths.device() == input.device(),
                    "fastlstm: lengths must be on the CPU or on the input's device ",
                    input.device(), ", got ", lengths.device());

  LayerDims d;
  d.T = input.size(0);
  d.B = input.size(1);
  d.I = input.size(2);
  d.D = bidirectional ? 2 : 1;
  d.has_biases = has_biases;
  d.has_proj = has_projections;
  TORCH_CHECK_VALUE(lengths.size(0) == d.B, "fastlstm: lengths must have one entry per sequence (",
                    d.B, "), got ", lengths.size(0));
  TORCH_CHECK_VALUE(static_cast<int64_t>(weights.size()) == d.D * d.weights_per_dir(),
                    "fastlstm: weights must hold ", d.D * d.weights_per_dir(),
                    " tensors (directions x [w_ih, w_hh", has_biases ? ", b_ih, b_hh" : "",
                    has_projections ? ", w_hr" : "", "]), got ", weights.size());
  TORCH_CHECK_VALUE(h0.dim() == 3, "fastlstm: h0 must be 3-D [D, B, Hout], got ", h0.sizes());
  TORCH_CHECK_VALUE(c0.dim() == 3, "fastlstm: c0 must be 3-D [D, B, H], got ", c0.sizes());
  const at::Tensor& w_hh0 = weights[1];
  TORCH_CHECK_VALUE(w_hh0.dim() == 2 && w_hh0.size(0) % 4 == 0 && w_hh0.size(0) > 0,
                    "fastlstm: w_hh must be 2-D [4*H, Hout] with H > 0, got ", w_hh0.sizes());
  d.H = w_hh0.size(0) / 4;
  const at::Tensor& w_hr0 = weights[d.weights_per_dir() - 1];
  if (has_projections) {
    TORCH_CHECK_VALUE(w_hr0.dim() == 2 && w_hr0.size(0) > 0,
                      "fastlstm: w_hr must be 2-D [Hout, H] with Hout > 0, got ", w_hr0.sizes());
  }
  d.Hout = has_projections ? w_hr0.size(0) : d.H;

  check_shape(h0, "h0", shape3(d.D, d.B, d.Hout));
  check_shape(c0, "c0", shape3(d.D, d.B, d.H));
  check_same_dtype_device(h0, "h0", input);
  check_same_dtype_device(c0, "c0", input);
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const std::string sfx = dir == 1 ? "_reverse" : "";
    int64_t k = dir * d.weights_per_dir();
    auto expect = [&](const char* name, std::vector<int64_t> shape) {
      const at::Tensor& w = weights[k++];
      check_shape(w, name + sfx, shape);
      check_same_dtype_device(w, (name + sfx).c_str(), input);
    };
    expect("w_ih", {4 * d.H, d.I});
    expect("w_hh", {4 * d.H, d.Hout});
    if (has_biases) {
      expect("b_ih", {4 * d.H});
      expect("b_hh", {4 * d.H});
    }
    if (has_projections) expect("w_hr", {d.Hout, d.H});
  }
  return d;
}

void check_lengths_cpu(const at::Tensor& lengths_cpu, int64_t T) {
  const int64_t* len = lengths_cpu.data_ptr<int64_t>();
  for (int64_t b = 0; b < lengths_cpu.numel(); ++b) {
    TORCH_CHECK_VALUE(len[b] >= 0 && len[b] <= T, "fastlstm: lengths must lie in [0, T=", T,
                      "], got lengths[", b, "] = ", len[b]);
  }
}

void check_device_schedule_args(const at::Tensor& lengths, int64_t T) {
  TORCH_CHECK_VALUE(lengths.dim() == 1, "fastlstm: lengths must be 1-D [B], got ",
                    lengths.dim(), "-D with shape ", lengths.sizes());
  TORCH_CHECK_VALUE(!at::isFloatingType(lengths.scalar_type()) &&
                        !at::isComplexType(lengths.scalar_type()) &&
                        lengths.scalar_type() != at::kBool,
                    "fastlstm: lengths must have an integer dtype, got ", lengths.scalar_type());
  TORCH_CHECK_VALUE(T >= 0, "fastlstm: T must be >= 0, got ", T);
}

void check_grad_arg(const at::Tensor& grad, const char* name, at::IntArrayRef expected,
                    const at::Tensor& like) {
  if (!grad.defined()) return;
  check_shape(grad, name, expected);
  check_same_dtype_device(grad, name, like);
}

}  // namespace fastlstm

TORCH_LIBRARY(fastlstm, m) {
  // One layer, all its directions. See csrc/lstm.h for every shape.
  m.def(
      "lstm_layer_forward(Tensor input, Tensor lengths, Tensor h0, Tensor c0, Tensor[] weights, "
      "bool has_biases, bool has_projections, bool bidirectional) "
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

// `import fastlstm._C` loads this library, which registers the ops above.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
