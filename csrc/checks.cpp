// Argument checks of the fastlstm ops (csrc/checks.h). Every failure is a ValueError in
// Python (std::invalid_argument) whose message names the argument, what was expected and what
// was received. fastlstm's Python layer raises TypeError for dtype errors before an op runs.
#include "checks.h"

#include <string>

namespace fastlstm {
namespace {

void check_same_dtype_device(const Tensor& t, const std::string& name, const Tensor& input) {
  FASTLSTM_CHECK_VALUE(t.scalar_type() == input.scalar_type(), "fastlstm: ", name,
                       " must have the input's dtype ", text(input.scalar_type()), ", got ",
                       text(t.scalar_type()));
  FASTLSTM_CHECK_VALUE(same_device(t, input), "fastlstm: ", name,
                       " must be on the input's device ", text(input.device()), ", got ",
                       text(t.device()));
}

void check_shape(const Tensor& t, const std::string& name, const Sizes& expected) {
  FASTLSTM_CHECK_VALUE(same_sizes(t, expected), "fastlstm: ", name, " must have shape ",
                       text(expected), ", got ", text(t.sizes()));
}

}  // namespace

LayerDims check_layer_args(const Tensor& input, const Tensor& lengths, const Tensor& h0,
                           const Tensor& c0, const std::vector<Tensor>& weights, bool has_biases,
                           bool has_projections, bool bidirectional) {
  FASTLSTM_CHECK_VALUE(input.dim() == 3, "fastlstm: input must be 3-D [T, B, I], got ",
                       input.dim(), "-D with shape ", text(input.sizes()));
  FASTLSTM_CHECK_VALUE(is_floating(input.scalar_type()),
                       "fastlstm: input must be a floating-point tensor, got ",
                       text(input.scalar_type()));
  FASTLSTM_CHECK_VALUE(lengths.dim() == 1, "fastlstm: lengths must be 1-D [B], got ",
                       lengths.dim(), "-D with shape ", text(lengths.sizes()));
  FASTLSTM_CHECK_VALUE(is_integer(lengths.scalar_type()),
                       "fastlstm: lengths must be an integer tensor, got ",
                       text(lengths.scalar_type()));
  FASTLSTM_CHECK_VALUE(lengths.is_cpu() || same_device(lengths, input),
                       "fastlstm: lengths must be on the CPU or on the input's device ",
                       text(input.device()), ", got ", text(lengths.device()));

  LayerDims d;
  d.T = input.size(0);
  d.B = input.size(1);
  d.I = input.size(2);
  d.D = bidirectional ? 2 : 1;
  d.has_biases = has_biases;
  d.has_proj = has_projections;
  FASTLSTM_CHECK_VALUE(lengths.size(0) == d.B,
                       "fastlstm: lengths must have one entry per sequence (", d.B, "), got ",
                       lengths.size(0));
  FASTLSTM_CHECK_VALUE(static_cast<int64_t>(weights.size()) == d.D * d.weights_per_dir(),
                       "fastlstm: weights must hold ", d.D * d.weights_per_dir(),
                       " tensors (directions x [w_ih, w_hh", has_biases ? ", b_ih, b_hh" : "",
                       has_projections ? ", w_hr" : "", "]), got ", weights.size());
  FASTLSTM_CHECK_VALUE(h0.dim() == 3, "fastlstm: h0 must be 3-D [D, B, Hout], got ",
                       text(h0.sizes()));
  FASTLSTM_CHECK_VALUE(c0.dim() == 3, "fastlstm: c0 must be 3-D [D, B, H], got ",
                       text(c0.sizes()));
  const Tensor& w_hh0 = weights[1];
  FASTLSTM_CHECK_VALUE(w_hh0.dim() == 2 && w_hh0.size(0) % 4 == 0 && w_hh0.size(0) > 0,
                       "fastlstm: w_hh must be 2-D [4*H, Hout] with H > 0, got ",
                       text(w_hh0.sizes()));
  d.H = w_hh0.size(0) / 4;
  const Tensor& w_hr0 = weights[d.weights_per_dir() - 1];
  if (has_projections) {
    FASTLSTM_CHECK_VALUE(w_hr0.dim() == 2 && w_hr0.size(0) > 0,
                         "fastlstm: w_hr must be 2-D [Hout, H] with Hout > 0, got ",
                         text(w_hr0.sizes()));
  }
  d.Hout = has_projections ? w_hr0.size(0) : d.H;

  check_shape(h0, "h0", {d.D, d.B, d.Hout});
  check_shape(c0, "c0", {d.D, d.B, d.H});
  check_same_dtype_device(h0, "h0", input);
  check_same_dtype_device(c0, "c0", input);
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const std::string sfx = dir == 1 ? "_reverse" : "";
    int64_t k = dir * d.weights_per_dir();
    auto expect = [&](const char* name, const Sizes& shape) {
      const Tensor& w = weights[k++];
      check_shape(w, name + sfx, shape);
      check_same_dtype_device(w, name + sfx, input);
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

void check_lengths_cpu(const Tensor& lengths_cpu, int64_t T) {
  const int64_t* len = cptr<int64_t>(lengths_cpu);
  for (int64_t b = 0; b < lengths_cpu.numel(); ++b) {
    FASTLSTM_CHECK_VALUE(len[b] >= 0 && len[b] <= T, "fastlstm: lengths must lie in [0, T=", T,
                         "], got lengths[", b, "] = ", len[b]);
  }
}

void check_device_schedule_args(const Tensor& lengths, int64_t T) {
  FASTLSTM_CHECK_VALUE(lengths.dim() == 1, "fastlstm: lengths must be 1-D [B], got ",
                       lengths.dim(), "-D with shape ", text(lengths.sizes()));
  FASTLSTM_CHECK_VALUE(is_integer(lengths.scalar_type()),
                       "fastlstm: lengths must have an integer dtype, got ",
                       text(lengths.scalar_type()));
  FASTLSTM_CHECK_VALUE(T >= 0, "fastlstm: T must be >= 0, got ", T);
}

void check_grad_arg(const Tensor& grad, const char* name, const Sizes& expected,
                    const Tensor& like) {
  if (!grad.defined()) return;
  check_shape(grad, name, expected);
  check_same_dtype_device(grad, name, like);
}

}  // namespace fastlstm
