// CPU forward of one LSTM layer (all directions) on the packed schedule.
//
// Per direction: one GEMM projects every valid token, then a time loop runs, for the active
// rows only, the recurrent GEMM and the fused cell. Rows that continue read the previous
// step's packed rows; rows that start (t = 0 forward, t = len-1 in reverse) read h0/c0.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>

#include <cstring>

#include "../checks.h"
#include "cell.h"
#include "gemm.h"
#include "layer_common.h"
#include "schedule.h"

namespace fastlstm::cpu {

void check_cpu_dtype(const at::Tensor& input) {
  TORCH_CHECK_TYPE(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
                   "fastlstm: on the CPU, input must be float32 or float64, got ",
                   input.scalar_type());
}

std::vector<at::Tensor> contiguous_all(at::TensorList ts) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const auto& t : ts) out.push_back(t.contiguous());
  return out;
}

namespace {

// Recurrence of one direction. gates already hold x W_ih^T for every valid token.
template <typename T>
void recur_direction(const LayerDims& d, const Schedule& s, bool reverse,
                     const DirectionWeights<T>& w, const T* bias, const T* h0s, const T* c0s,
                     const ReserveBlocks<T>& r) {
  const int64_t H = d.H, G = 4 * d.H, Ho = d.Hout;
  for (int64_t k = 0; k < s.T; ++k) {
    const int64_t t = reverse ? s.T - 1 - k : k;
    const int64_t bs = s.batch_sizes[t];
    if (bs == 0) continue;
    const int64_t off = s.offsets[t];
    const int64_t p = s.prev_step(t, reverse);
    const int64_t nc = s.n_continuing(t, reverse);
    const int64_t poff = p < 0 ? 0 : s.offsets[p];
    T* g = r.gates + off * G;
    // gates[rows] += h_prev[rows] W_hh^T; continuing rows and starting rows read different places.
    gemm_rm<T>(false, true, nc, G, Ho, 1, r.out + poff * Ho, Ho, w.w_hh, Ho, 1, g, G);
    gemm_rm<T>(false, true, bs - nc, G, Ho, 1, h0s + nc * Ho, Ho, w.w_hh, Ho, 1, g + nc * G, G);
    T* h = d.has_proj ? r.hraw + off * H : r.out + off * Ho;
    cell_forward<T>(bs, H, g, bias, PrevCell<T>{r.cell + poff * H, c0s, nc}, r.cell + off * H, h);
    if (d.has_proj) gemm_rm<T>(false, true, bs, Ho, H, 1, h, H, w.w_hr, H, 0, r.out + off * Ho, Ho);
  }
}

template <typename T>
void forward_impl(const LayerDims& d, const Schedule& s, const at::Tensor& input,
                  const at::Tensor& h0, const at::Tensor& c0, const std::vector<at::Tensor>& weights,
                  at::Tensor& output, at::Tensor& h_n, at::Tensor& c_n, at::Tensor& reserve) {
  const int64_t N = s.total, G = 4 * d.H, H = d.H, Ho = d.Hout, rows = d.T * d.B;
  at::Tensor x = at::empty({N, d.I}, input.options());
  gather_tokens(s, input, 0, x);

  std::vector<at::Tensor> h0s(d.D), c0s(d.D), bias(d.D);
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const auto w = direction_weights<T>(d, weights, dir);
    const auto r = reserve_blocks<T>(d, reserve.data_ptr<T>(), dir);
    // Input projection of every valid token: one GEMM over all of them.
    gemm_rm<T>(false, true, N, G, d.I, 1, x.const_data_ptr<T>(), d.I, w.w_ih, d.I, 0, r.gates, G);
    h0s[dir] = sort_rows(s, h0.select(0, dir));
    c0s[dir] = sort_rows(s, c0.select(0, dir));
    bias[dir] = at::zeros({G}, input.options());
    if (d.has_biases) {
      T* b = bias[dir].data_ptr<T>();
      for (int64_t k = 0; k < G; ++k) b[k] = w.b_ih[k] + w.b_hh[k];
    }
    // Rows past N are never read; zero them so that the reserve is deterministic.
    const int64_t tail = rows - N;
    if (tail > 0) {
      std::memset(r.gates + N * G, 0, tail * G * sizeof(T));
      std::memset(r.cell + N * H, 0, tail * H * sizeof(T));
      std::memset(r.out + N * Ho, 0, tail * Ho * sizeof(T));
      if (d.has_proj) std::memset(r.hraw + N * H, 0, tail * H * sizeof(T));
    }
  }

  for_each_direction(d.D, [&](int64_t dir) {
    recur_direction<T>(d, s, /*reverse=*/dir == 1, direction_weights<T>(d, weights, dir),
                       bias[dir].const_data_ptr<T>(), h0s[dir].const_data_ptr<T>(),
                       c0s[dir].const_data_ptr<T>(),
                       reserve_blocks<T>(d, reserve.data_ptr<T>(), dir));
  });

  for (int64_t dir = 0; dir < d.D; ++dir) {
    const auto r = reserve_blocks<T>(d, reserve.data_ptr<T>(), dir);
    at::Tensor out_packed = at::from_blob(r.out, {N, Ho}, input.options());
    scatter_tokens(s, out_packed, dir * Ho, output);
    // Final state: each sequence's own last step (t = len-1 forward, t = 0 in reverse).
    T* hn = h_n.data_ptr<T>() + dir * d.B * Ho;
    T* cn = c_n.data_ptr<T>() + dir * d.B * H;
    for (int64_t j = 0; j < s.B; ++j) {
      const int64_t b = s.order[j], len = s.length[j];
      const T* hsrc = h0s[dir].const_data_ptr<T>() + j * Ho;
      const T* csrc = c0s[dir].const_data_ptr<T>() + j * H;
      if (len > 0) {
        const int64_t row = s.offsets[dir == 1 ? 0 : len - 1] + j;
        hsrc = r.out + row * Ho;
        csrc = r.cell + row * H;
      }
      std::memcpy(hn + b * Ho, hsrc, Ho * sizeof(T));
      std::memcpy(cn + b * H, csrc, H * sizeof(T));
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_forward_cpu(
    const at::Tensor& input_, const at::Tensor& lengths_, const at::Tensor& h0_,
    const at::Tensor& c0_, at::TensorList weights_, bool has_biases, bool has_projections,
    bool bidirectional) {
  const LayerDims d = check_layer_args(input_, lengths_, h0_, c0_, weights_, has_biases,
                                       has_projections, bidirectional);
  check_cpu_dtype(input_);
  const at::Tensor lengths = lengths_.to(at::kLong).contiguous();
  check_lengths_cpu(lengths, d.T);
  const Schedule s = make_schedule(lengths, d.T);
  const at::Tensor input = input_.stride(2) == 1 ? input_ : input_.contiguous();
  const at::Tensor h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const std::vector<at::Tensor> weights = contiguous_all(weights_);

  at::Tensor output = at::empty({d.T, d.B, d.D * d.Hout}, input.options());
  at::Tensor h_n = at::empty({d.D, d.B, d.Hout}, input.options());
  at::Tensor c_n = at::empty({d.D, d.B, d.H}, input.options());
  at::Tensor reserve = at::empty({d.D * d.reserve_per_dir()}, input.options());
  zero_padding(s, output);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fastlstm::lstm_layer_forward (CPU)", [&] {
    forward_impl<scalar_t>(d, s, input, h0, c0, weights, output, h_n, c_n, reserve);
  });
  return {output, h_n, c_n, reserve};
}

}  // namespace fastlstm::cpu
