// CPU backward of one LSTM layer (all directions).
//
// Per direction, the recurrence runs in reverse processing order on the active rows and
// yields dgates for every valid token; then weight and input gradients are large GEMMs over
// all tokens. dh/dc hold, per sorted row, the gradient flowing into the row's previous state;
// a row's entry is last written at its first step, so at the end it is the gradient of h0/c0
// (and a zero-length row keeps grad h_n/c_n, as h_n = h0 there).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>

#include <cstring>

#include "../checks.h"
#include "cell.h"
#include "gemm.h"
#include "layer_common.h"
#include "schedule.h"

namespace fastlstm::cpu {
namespace {

template <typename T>
struct DirectionGrads {
  at::Tensor dgates;  // [N, 4H] gradient of gate pre-activations
  at::Tensor dout;    // [N, Hout] total gradient of each step's output (projection only)
  at::Tensor dh;      // [B, Hout] sorted rows; ends as grad h0
  at::Tensor dc;      // [B, H]    sorted rows; ends as grad c0
};

template <typename T>
void recur_direction_backward(const LayerDims& d, const Schedule& s, bool reverse,
                              const DirectionWeights<T>& w, const ReserveBlocks<T>& r,
                              const T* c0s, const T* dy, DirectionGrads<T>& gr) {
  const int64_t H = d.H, G = 4 * d.H, Ho = d.Hout;
  T* dh = gr.dh.template data_ptr<T>();
  T* dc = gr.dc.template data_ptr<T>();
  T* dgates = gr.dgates.template data_ptr<T>();
  at::Tensor dhraw_buf = d.has_proj ? at::empty({s.B, H}, gr.dh.options()) : at::Tensor();
  for (int64_t k = s.T - 1; k >= 0; --k) {
    const int64_t t = reverse ? s.T - 1 - k : k;
    const int64_t bs = s.batch_sizes[t];
    if (bs == 0) continue;
    const int64_t off = s.offsets[t];
    const int64_t p = s.prev_step(t, reverse);
    const int64_t nc = s.n_continuing(t, reverse);
    const int64_t poff = p < 0 ? 0 : s.offsets[p];
    // Total gradient of this step's output: from the layer output and from step t+1.
    if (dy != nullptr) {
      const T* dyt = dy + off * Ho;
      for (int64_t i = 0; i < bs * Ho; ++i) dh[i] += dyt[i];
    }
    const T* dh_cell = dh;
    if (d.has_proj) {
      std::memcpy(gr.dout.template data_ptr<T>() + off * Ho, dh, bs * Ho * sizeof(T));
      T* dhraw = dhraw_buf.data_ptr<T>();
      gemm_rm<T>(false, false, bs, H, Ho, 1, dh, Ho, w.w_hr, H, 0, dhraw, H);
      dh_cell = dhraw;
    }
    cell_backward<T>(bs, H, r.gates + off * G, r.cell + off * H,
                     PrevCell<T>{r.cell + poff * H, c0s, nc}, dh_cell, dc, dgates + off * G);
    // Gradient into each active row's previous h.
    gemm_rm<T>(false, false, bs, Ho, G, 1, dgates + off * G, G, w.w_hh, Ho, 0, dh, Ho);
  }
}

// Packed h_prev of every valid token, the right operand of dW_hh.
template <typename T>
at::Tensor previous_outputs(const LayerDims& d, const Schedule& s, bool reverse,
                            const ReserveBlocks<T>& r, const T* h0s, const at::TensorOptions& o) {
  const int64_t Ho = d.Hout;
  at::Tensor hp = at::empty({s.total, Ho}, o);
  T* dst = hp.data_ptr<T>();
  at::parallel_for(0, s.T, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bs = s.batch_sizes[t], off = s.offsets[t];
      const int64_t p = s.prev_step(t, reverse), nc = s.n_continuing(t, reverse);
      if (nc > 0) std::memcpy(dst + off * Ho, r.out + s.offsets[p] * Ho, nc * Ho * sizeof(T));
      if (bs > nc) std::memcpy(dst + (off + nc) * Ho, h0s + nc * Ho, (bs - nc) * Ho * sizeof(T));
    }
  });
  return hp;
}

template <typename T>
void backward_impl(const LayerDims& d, const Schedule& s, const at::Tensor& grad_output,
                   const at::Tensor& grad_h_n, const at::Tensor& grad_c_n, const at::Tensor& input,
                   const at::Tensor& h0, const at::Tensor& c0,
                   const std::vector<at::Tensor>& weights, const at::Tensor& reserve,
                   bool input_requires_grad, at::Tensor& grad_input, at::Tensor& grad_h0,
                   at::Tensor& grad_c0, std::vector<at::Tensor>& grad_weights) {
  const int64_t N = s.total, G = 4 * d.H, H = d.H, Ho = d.Hout, I = d.I;
  const auto opts = input.options();
  T* res = const_cast<T*>(reserve.const_data_ptr<T>());  // read only
  std::vector<DirectionGrads<T>> gr(d.D);
  std::vector<at::Tensor> c0s(d.D), h0s(d.D), dy(d.D);
  for (int64_t dir = 0; dir < d.D; ++dir) {
    gr[dir].dgates = at::empty({N, G}, opts);
    if (d.has_proj) gr[dir].dout = at::empty({N, Ho}, opts);
    gr[dir].dh = grad_h_n.defined() ? sort_rows(s, grad_h_n.select(0, dir)) : at::zeros({s.B, Ho}, opts);
    gr[dir].dc = grad_c_n.defined() ? sort_rows(s, grad_c_n.select(0, dir)) : at::zeros({s.B, H}, opts);
    c0s[dir] = sort_rows(s, c0.select(0, dir));
    h0s[dir] = sort_rows(s, h0.select(0, dir));
    if (grad_output.defined()) {
      dy[dir] = at::empty({N, Ho}, opts);
      gather_tokens(s, grad_output, dir * Ho, dy[dir]);
    }
  }

  for_each_direction(d.D, [&](int64_t dir) {
    recur_direction_backward<T>(d, s, dir == 1, direction_weights<T>(d, weights, dir),
                                reserve_blocks<T>(d, res, dir), c0s[dir].const_data_ptr<T>(),
                                dy[dir].defined() ? dy[dir].const_data_ptr<T>() : nullptr, gr[dir]);
  });

  at::Tensor x = at::empty({N, I}, opts);
  gather_tokens(s, input, 0, x);
  at::Tensor dx = input_requires_grad ? at::empty({N, I}, opts) : at::Tensor();
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const auto w = direction_weights<T>(d, weights, dir);
    const auto r = reserve_blocks<T>(d, res, dir);
    const T* dg = gr[dir].dgates.template const_data_ptr<T>();
    int64_t k = dir * d.weights_per_dir();
    at::Tensor& dw_ih = grad_weights[k++];
    at::Tensor& dw_hh = grad_weights[k++];
    gemm_rm<T>(true, false, G, I, N, 1, dg, G, x.const_data_ptr<T>(), I, 0, dw_ih.data_ptr<T>(), I);
    const at::Tensor hp = previous_outputs<T>(d, s, dir == 1, r, h0s[dir].const_data_ptr<T>(), opts);
    gemm_rm<T>(true, false, G, Ho, N, 1, dg, G, hp.const_data_ptr<T>(), Ho, 0, dw_hh.data_ptr<T>(), Ho);
    if (d.has_biases) {
      at::Tensor db = at::sum(gr[dir].dgates, 0);
      grad_weights[k++] = db;
      grad_weights[k++] = db.clone();
    }
    if (d.has_proj) {
      gemm_rm<T>(true, false, Ho, H, N, 1, gr[dir].dout.template const_data_ptr<T>(), Ho, r.hraw, H,
                 0, grad_weights[k++].data_ptr<T>(), H);
    }
    if (input_requires_grad)
      gemm_rm<T>(false, false, N, I, G, 1, dg, G, w.w_ih, I, dir == 0 ? 0 : 1, dx.data_ptr<T>(), I);
    std::memcpy(grad_h0.data_ptr<T>() + dir * s.B * Ho, unsort_rows(s, gr[dir].dh).template const_data_ptr<T>(),
                s.B * Ho * sizeof(T));
    std::memcpy(grad_c0.data_ptr<T>() + dir * s.B * H, unsort_rows(s, gr[dir].dc).template const_data_ptr<T>(),
                s.B * H * sizeof(T));
  }
  if (input_requires_grad) {
    zero_padding(s, grad_input);
    scatter_tokens(s, dx, 0, grad_input);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lstm_layer_backward_cpu(
    const std::optional<at::Tensor>& grad_output_, const std::optional<at::Tensor>& grad_h_n_,
    const std::optional<at::Tensor>& grad_c_n_, const at::Tensor& input_,
    const at::Tensor& lengths_, const at::Tensor& h0_, const at::Tensor& c0_,
    at::TensorList weights_, const at::Tensor& reserve, bool has_biases, bool has_projections,
    bool bidirectional, bool input_requires_grad) {
  const LayerDims d = check_layer_args(input_, lengths_, h0_, c0_, weights_, has_biases,
                                       has_projections, bidirectional);
  check_cpu_dtype(input_);
  const at::Tensor lengths = lengths_.to(at::kLong).contiguous();
  check_lengths_cpu(lengths, d.T);
  auto grad_or_undefined = [](const std::optional<at::Tensor>& g) {
    return g.has_value() && g->defined() ? g->contiguous() : at::Tensor();
  };
  const at::Tensor grad_output = grad_or_undefined(grad_output_);
  const at::Tensor grad_h_n = grad_or_undefined(grad_h_n_);
  const at::Tensor grad_c_n = grad_or_undefined(grad_c_n_);
  check_grad_arg(grad_output, "grad_output", {d.T, d.B, d.D * d.Hout}, input_);
  check_grad_arg(grad_h_n, "grad_h_n", {d.D, d.B, d.Hout}, input_);
  check_grad_arg(grad_c_n, "grad_c_n", {d.D, d.B, d.H}, input_);
  TORCH_CHECK_VALUE(reserve.dim() == 1 && reserve.numel() == d.D * d.reserve_per_dir() &&
                        reserve.scalar_type() == input_.scalar_type() && reserve.is_contiguous(),
                    "fastlstm: reserve must be the contiguous 1-D [", d.D * d.reserve_per_dir(),
                    "] tensor the forward returned, got ", reserve.sizes(), " ", reserve.scalar_type());

  const Schedule s = make_schedule(lengths, d.T);
  const at::Tensor input = input_.stride(2) == 1 ? input_ : input_.contiguous();
  const at::Tensor h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const std::vector<at::Tensor> weights = contiguous_all(weights_);

  at::Tensor grad_input = input_requires_grad ? at::empty({d.T, d.B, d.I}, input.options())
                                              : at::empty({0}, input.options());
  at::Tensor grad_h0 = at::empty({d.D, d.B, d.Hout}, input.options());
  at::Tensor grad_c0 = at::empty({d.D, d.B, d.H}, input.options());
  std::vector<at::Tensor> grad_weights;
  for (const auto& w : weights) grad_weights.push_back(at::empty_like(w));
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fastlstm::lstm_layer_backward (CPU)", [&] {
    backward_impl<scalar_t>(d, s, grad_output, grad_h_n, grad_c_n, input, h0, c0, weights, reserve,
                            input_requires_grad, grad_input, grad_h0, grad_c0, grad_weights);
  });
  return {grad_input, grad_h0, grad_c0, grad_weights};
}

}  // namespace fastlstm::cpu
