// The forward and backward of one LSTM layer (all directions), written once for every device.
//
// A Backend supplies the device primitives (GEMM, fused cell, row copies); this file owns the
// algorithm. Per direction, the forward projects every valid token with one GEMM, then a host
// time loop runs, on the active rows only, the recurrent GEMM and the fused cell. Rows that
// continue read the previous step's packed rows; rows that start (t = 0 forward, t = len-1 in
// reverse) read h0/c0. The backward runs the same loop in reverse order and leaves dgates for
// every valid token, so weight and input gradients are large GEMMs over all tokens.
//
// T is the tensor dtype; Acc the accumulation type (float for half/bfloat16, else T): gates
// and cell state are kept in Acc.
//
// Backend interface (every pointer is device memory; an index pointer of nullptr means r, an
// index < 0 "no row": copy_rows skips that destination row, or writes zeros for that source):
//   struct Context { Context(const Tensor& like); const int64_t* indices(const IndexList&); };
//   gemm<T, C>(ctx, trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc)   C = op(A)op(B) + beta C
//   loop_weight<T>(ctx, trans, N, K, W, ldw, max_rows, steps) -> LoopWeight<T>
//                                          op(W) for the GEMMs of a time loop of `steps` steps
//   input_weight<T>(ctx, N, K, W, ldw, max_rows, uses) -> LoopWeight<T>
//                                          W^T for an inference's `uses` chunk projections
//   gemm<T, C>(ctx, M, A, lda, loop_weight, beta, C, ldc)                 C = A op(W) + beta C
//   cell_forward<T, Acc>(ctx, rows, H, gates, bias, PrevCell, c_out, h_out)
//   cell_inference<T, Acc>(...)            as cell_forward; gates need not keep the activations
//   cell_backward<T, Acc>(ctx, rows, H, gates, c, PrevCell, dh, dc, dgates)
//   copy_rows<D, S>(ctx, n, C, dst, ldd, dst_idx, src, lds, src_idx)   dst[dst_idx[r]] = src[src_idx[r]]
//   zero_rows<T>(ctx, n, C, dst, ldd, idx)
//   add<Acc, T>(ctx, n, dst, src)                                          dst += src
//   combine_bias<T, Acc>(ctx, G, out, b_ih, b_hh)                          out = b_ih + b_hh (or 0)
//   kWeightGradWorkInLoop                  true: the backward's per-step loop (which must
//                                          then run: backward_recurrence false) gathers each
//                                          token's previous h and sums dgates, with
//   add_row_sums<T, Acc>(ctx, n, C, src, sum)              sum [C] += src [n, C] summed over n
//                                          (host memory); false: after the loop, a copy and
//   row_sum<T, Acc>(ctx, dgates) -> Tensor                 [G] Acc: dgates [N, G] summed over N
//   for_each_row_group<T>(d, schedule, f) f(dir, r0, r1) for every group of sorted rows whose
//                                        time loop runs on its own (csrc/cpu/partition.h);
//                                        a GPU runs one group per direction, [0, B)
//   forward_recurrence<T, Acc>(ctx, d, view, rec)    the whole forward time loop of every
//   backward_recurrence<T, Acc>(ctx, d, view, rec)   direction, or false to have the driver run
//                                                    its per-step loop (the default; only for
//                                                    a schedule on the host)
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <vector>

#include "group_sums.h"
#include "layer_io.h"
#include "loop_weight.h"
#include "lstm.h"
#include "once_per_direction.h"
#include "schedule.h"
#include "schedule_view.h"

namespace fastlstm {

template <typename T>
DirectionWeights<T> direction_weights(const LayerDims& d, const std::vector<Tensor>& weights,
                                      int64_t dir) {
  int64_t k = dir * d.weights_per_dir();
  DirectionWeights<T> w{};
  const Tensor& ih = weights[k++];
  const Tensor& hh = weights[k++];
  w.w_ih = cptr<T>(ih);
  w.w_hh = cptr<T>(hh);
  // (prepare_layer_tensors has made them contiguous unless the backend reads them transposed)
  w.ih_t = transposed_weight(ih);
  w.hh_t = transposed_weight(hh);
  w.ld_ih = w.ih_t ? 4 * d.H : d.I;
  w.ld_hh = w.hh_t ? 4 * d.H : d.Hout;
  if (d.has_biases) {
    w.b_ih = cptr<T>(weights[k++]);
    w.b_hh = cptr<T>(weights[k++]);
  }
  if (d.has_proj) w.w_hr = cptr<T>(weights[k++]);
  return w;
}

// The weights every step of one direction's time loop multiplies by (Backend::loop_weight):
// forward, gates += h_prev W_hh^T and, with a projection, out = h W_hr^T; backward,
// dh_prev = dgates W_hh and dh_raw = dout W_hr. At most B rows a step, in as many steps as
// the longest sequence has.
template <typename T>
struct StepWeights {
  LoopWeight<T> hh, hr;
};
template <typename Backend, typename T>
StepWeights<T> step_weights(typename Backend::Context& ctx, const LayerDims& d,
                            const Schedule& s, const DirectionWeights<T>& w, bool backward) {
  const int64_t steps = s.length.empty() ? 0 : s.length[0];  // lengths sorted descending
  // W [rows, cols] (stored row-major, or transposed: W^T row-major): the forward multiplies
  // by W^T, the backward by W.
  const auto op = [&](const T* W, int64_t rows, int64_t cols, bool stored_t) {
    const int64_t ld = stored_t ? rows : cols;
    return backward
        ? Backend::template loop_weight<T>(ctx, stored_t, cols, rows, W, ld, d.B, steps)
        : Backend::template loop_weight<T>(ctx, !stored_t, rows, cols, W, ld, d.B, steps);
  };
  StepWeights<T> sw;
  sw.hh = op(w.w_hh, 4 * d.H, d.Hout, w.hh_t);
  if (d.has_proj) sw.hr = op(w.w_hr, d.Hout, d.H, false);
  return sw;
}

// Rows of batch-order src [B, C] (contiguous, type S) in sorted order, as a new [B, C] tensor
// of type D: dst[j] = src[order[j]].
template <typename Backend, typename D, typename S>
Tensor sorted_rows(typename Backend::Context& ctx, const S* src, int64_t B, int64_t C,
                   const int64_t* order, const Tensor& like) {
  Tensor dst = empty_like_device({B, C}, dtype_of<D>(), like);
  Backend::template copy_rows<D, S>(ctx, B, C, ptr<D>(dst), C, nullptr, src, C, order);
  return dst;
}

// Direction dir's h0 [B, Hout] (type T) and c0 [B, H] (type Acc), rows in sorted order.
template <typename Backend, typename T>
Tensor sorted_h0(typename Backend::Context& ctx, const LayerDims& d, const LayerTensors& in,
                 const int64_t* order, int64_t dir) {
  return sorted_rows<Backend, T, T>(ctx, cptr<T>(in.h0) + dir * d.B * d.Hout, d.B, d.Hout, order,
                                    in.input);
}
template <typename Backend, typename T, typename Acc>
Tensor sorted_c0(typename Backend::Context& ctx, const LayerDims& d, const LayerTensors& in,
                 const int64_t* order, int64_t dir) {
  return sorted_rows<Backend, Acc, T>(ctx, cptr<T>(in.c0) + dir * d.B * d.H, d.B, d.H, order,
                                      in.input);
}

// b_ih + b_hh [4H] of one direction, type Acc (zeros without biases).
template <typename Backend, typename T, typename Acc>
Tensor combined_bias(typename Backend::Context& ctx, const LayerDims& d,
                     const DirectionWeights<T>& w, const Tensor& like) {
  Tensor bias = empty_like_device({4 * d.H}, dtype_of<Acc>(), like);
  Backend::template combine_bias<T, Acc>(ctx, 4 * d.H, ptr<Acc>(bias), w.b_ih, w.b_hh);
  return bias;
}

// Every valid token of input [T, B, I] (any strides, the last 1) in packed order: [rows, I].
template <typename Backend, typename T, typename View>
Tensor packed_input(typename Backend::Context& ctx, const View& s, const Tensor& input) {
  Tensor x = empty_like_device({s.rows(), input.size(2)}, dtype_of<T>(), input);
  Backend::template copy_rows<T, T>(
      ctx, s.rows(), input.size(2), ptr<T>(x), input.size(2), nullptr, cptr<T>(input), 1,
      s.token_offsets(ctx, input.stride(0), input.stride(1)));
  return x;
}

// View: HostScheduleView<Backend> or, on the GPU, cuda::DeviceScheduleView (schedule_view.h).
template <typename Backend, typename T, typename Acc, typename View>
void layer_forward(const LayerDims& d, const View& s, const LayerTensors& in,
                   Tensor& output, Tensor& h_n, Tensor& c_n) {
  typename Backend::Context ctx(in.input);
  const int64_t N = s.rows(), G = 4 * d.H, H = d.H, Ho = d.Hout, I = d.I, B = d.B;
  const int64_t* order = s.order(ctx);

  const Tensor x = packed_input<Backend, T>(ctx, s, in.input);
  void* reserve = in.reserve.mutable_data_ptr();
  std::vector<Tensor> h0s(d.D), c0s(d.D), bias(d.D);
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const auto w = direction_weights<T>(d, in.weights, dir);
    const auto r = reserve_blocks<T, Acc>(d, in.reserve_rows, reserve, dir);
    // Input projection of every valid token: one GEMM over all of them.
    Backend::template gemm<T, Acc>(ctx, false, !w.ih_t, N, G, I, cptr<T>(x), I, w.w_ih,
                                   w.ld_ih, 0, r.gates, G);
    h0s[dir] = sorted_h0<Backend, T>(ctx, d, in, order, dir);
    c0s[dir] = sorted_c0<Backend, T, Acc>(ctx, d, in, order, dir);
    bias[dir] = combined_bias<Backend, T, Acc>(ctx, d, w, in.input);
    // A padded reserve's rows past N are never read; zero them so that it is deterministic.
    const int64_t tail = in.reserve_rows - N;
    Backend::template zero_rows<Acc>(ctx, tail, H, r.cell + N * H, H, nullptr);
    Backend::template zero_rows<Acc>(ctx, tail, G, r.gates + N * G, G, nullptr);
    Backend::template zero_rows<T>(ctx, tail, Ho, r.out + N * Ho, Ho, nullptr);
    if (d.has_proj) Backend::template zero_rows<T>(ctx, tail, H, r.hraw + N * H, H, nullptr);
  }

  std::vector<Recurrence<T, Acc>> rec(d.D);
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const auto w = direction_weights<T>(d, in.weights, dir);
    rec[dir] = {w.w_hh, w.w_hr, cptr<Acc>(bias[dir]), cptr<T>(h0s[dir]), cptr<Acc>(c0s[dir]),
                reserve_blocks<T, Acc>(d, in.reserve_rows, reserve, dir), nullptr, nullptr,
                nullptr, nullptr, nullptr};
  }
  // The time loop, step by step: the default, unless the backend runs it whole.
  // One group of sorted rows [r0, r1) of one direction; per-row buffers (h0, c0) start at r0.
  OncePerDirection<StepWeights<T>> loop_weights(d.D);
  const auto per_step = [&](int64_t dir, int64_t r0, int64_t r1) {
    const Schedule& hs = *s.host();
    const bool reverse = dir == 1;
    const auto w = direction_weights<T>(d, in.weights, dir);
    const auto r = reserve_blocks<T, Acc>(d, in.reserve_rows, reserve, dir);
    const T* h0d = cptr<T>(h0s[dir]) + r0 * Ho;
    const Acc* c0d = cptr<Acc>(c0s[dir]) + r0 * H;
    const Acc* b = cptr<Acc>(bias[dir]);
    const StepWeights<T>& sw =
        loop_weights.get(dir, [&] { return step_weights<Backend, T>(ctx, d, hs, w, false); });
    for (int64_t k = 0; k < hs.T; ++k) {
      const auto [bs, off, nc, poff] = hs.group_step(reverse ? hs.T - 1 - k : k, reverse, r0, r1);
      if (bs == 0) continue;
      Acc* g = r.gates + off * G;
      // gates += h_prev W_hh^T; continuing and starting rows read different places.
      Backend::template gemm<T, Acc>(ctx, nc, r.out + poff * Ho, Ho, sw.hh, 1, g, G);
      Backend::template gemm<T, Acc>(ctx, bs - nc, h0d + nc * Ho, Ho, sw.hh, 1, g + nc * G, G);
      T* h = d.has_proj ? r.hraw + off * H : r.out + off * Ho;
      Backend::template cell_forward<T, Acc>(ctx, bs, H, g, b,
                                             PrevCell<Acc>{r.cell + poff * H, c0d, nc},
                                             r.cell + off * H, h);
      if (d.has_proj) Backend::template gemm<T, T>(ctx, bs, h, H, sw.hr, 0, r.out + off * Ho, Ho);
    }
  };
  if (!Backend::template forward_recurrence<T, Acc>(ctx, d, s, rec.data())) {
    FASTLSTM_CHECK(s.host() != nullptr, "fastlstm: internal error: no time loop for a "
                   "schedule built on the device");
    Backend::template for_each_row_group<T>(d, *s.host(), per_step);
  }

  // output [T, B, D Hout]: time- or batch-major (layer_io.h, empty_tb).
  s.zero_padding(ctx, ptr<T>(output), d.D * Ho, output.stride(0), output.stride(1));
  const RowPairs to_output = s.token_scatter(ctx, output.stride(0), output.stride(1));
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const auto r = reserve_blocks<T, Acc>(d, in.reserve_rows, reserve, dir);
    Backend::template copy_rows<T, T>(ctx, to_output.n, Ho, ptr<T>(output) + dir * Ho, 1,
                                      to_output.dst, r.out, Ho, to_output.src);
    // Final state: each sequence's own last step, or h0/c0 for an empty sequence.
    RowPairs o, st;
    s.final_rows(ctx, dir == 1, o, st);
    T* hn = ptr<T>(h_n) + dir * B * Ho;
    T* cn = ptr<T>(c_n) + dir * B * H;
    Backend::template copy_rows<T, T>(ctx, o.n, Ho, hn, Ho, o.dst, r.out, Ho, o.src);
    Backend::template copy_rows<T, Acc>(ctx, o.n, H, cn, H, o.dst, r.cell, H, o.src);
    Backend::template copy_rows<T, T>(ctx, st.n, Ho, hn, Ho, st.dst, cptr<T>(h0s[dir]), Ho,
                                      st.src);
    Backend::template copy_rows<T, Acc>(ctx, st.n, H, cn, H, st.dst, cptr<Acc>(c0s[dir]), H,
                                        st.src);
  }
}

// Bytes of Acc gates that layer_inference projects per input GEMM: FASTLSTM_INFERENCE_CHUNK_KIB
// KiB, default 256. Larger chunks mean fewer, larger GEMMs but more memory per layer.
inline int64_t inference_chunk_bytes() {
  static const int64_t bytes = [] {
    const char* v = std::getenv("FASTLSTM_INFERENCE_CHUNK_KIB");
    const int64_t kib = v != nullptr ? std::atoll(v) : 256;
    return std::max<int64_t>(1, kib) * 1024;
  }();
  return bytes;
}

// Rows of the packed input projected per GEMM in layer_inference: inference_chunk_bytes of Acc
// gates, but at least one step's rows, and at least 128 rows (a GEMM of fewer rows runs well
// below the BLAS's speed; at H = 512 that is 1 MiB of gates).
template <typename Acc>
int64_t inference_chunk_rows(const LayerDims& d) {
  constexpr int64_t kMinRows = 128;
  return std::max({d.B, kMinRows, inference_chunk_bytes() / (4 * d.H * int64_t(sizeof(Acc)))});
}

// The forward without a reserve, for when no gradient is needed. Same results as
// layer_forward, but every buffer is sized by the N valid tokens or by one step:
//   per direction: packed outputs [N, Hout] (the recurrent input of the next step, scattered
//   to `output` at the end); gates and gathered inputs for a chunk of consecutive steps
//   (inference_chunk_rows); two cell-state rows [B, H] (previous and current step); the final
//   cell state of each sequence [B, H], copied out at its last step.
// Padding positions of `output` are zeroed, nothing else is written twice.
template <typename Backend, typename T, typename Acc>
void layer_inference(const LayerDims& d, const Schedule& s, const LayerTensors& in,
                     Tensor& output, Tensor& h_n, Tensor& c_n) {
  typename Backend::Context ctx(in.input);
  const int64_t N = s.total, G = 4 * d.H, H = d.H, Ho = d.Hout, I = d.I, B = d.B;
  const int64_t* order = ctx.indices(s.order);
  const IndexList token_offsets = s.token_offsets(in.input.stride(0), in.input.stride(1));
  const int64_t* token_in = ctx.indices(token_offsets);
  const int64_t chunk = inference_chunk_rows<Acc>(d);

  std::vector<Tensor> h0s(d.D), c0s(d.D), bias(d.D), outs(d.D), cfin(d.D);
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const auto w = direction_weights<T>(d, in.weights, dir);
    h0s[dir] = sorted_h0<Backend, T>(ctx, d, in, order, dir);
    c0s[dir] = sorted_c0<Backend, T, Acc>(ctx, d, in, order, dir);
    // Final cell state per sorted row; rows of length 0 keep c0.
    cfin[dir] = sorted_c0<Backend, T, Acc>(ctx, d, in, order, dir);
    bias[dir] = combined_bias<Backend, T, Acc>(ctx, d, w, in.input);
    outs[dir] = empty_like_device({N, Ho}, dtype_of<T>(), in.input);
  }

  // One group of sorted rows [r0, r1) of one direction (the whole batch on a GPU). Its
  // per-row buffers (two steps of cell state, the raw h of a projection) hold its rows only.
  OncePerDirection<StepWeights<T>> loop_weights(d.D);
  OncePerDirection<LoopWeight<T>> input_weights(d.D);
  Backend::template for_each_row_group<T>(d, s, [&](int64_t dir, int64_t r0, int64_t r1) {
    const bool reverse = dir == 1;
    const int64_t gB = r1 - r0;
    // Whole: the group's rows of consecutive steps are consecutive packed rows.
    const bool whole = r0 == 0 && (s.T == 0 || r1 >= s.batch_sizes[0]);
    const auto group_rows = [&](int64_t t) {
      return std::clamp<int64_t>(std::min(r1, s.batch_sizes[t]) - r0, 0, gB);
    };
    const auto w = direction_weights<T>(d, in.weights, dir);
    const T* h0d = cptr<T>(h0s[dir]) + r0 * Ho;
    const Acc* c0d = cptr<Acc>(c0s[dir]) + r0 * H;
    const Acc* b = cptr<Acc>(bias[dir]);
    T* out = ptr<T>(outs[dir]);
    Acc* cf = ptr<Acc>(cfin[dir]) + r0 * H;
    const int64_t rows = std::min(chunk, std::max<int64_t>(N, 1));
    Tensor gbuf = empty_like_device({rows, G}, dtype_of<Acc>(), in.input);
    Tensor xbuf = empty_like_device({rows, I}, dtype_of<T>(), in.input);
    Tensor cbuf = empty_like_device({2, gB, H}, dtype_of<Acc>(), in.input);
    Tensor hraw = d.has_proj ? empty_like_device({gB, H}, dtype_of<T>(), in.input) : Tensor();
    Acc* g0 = ptr<Acc>(gbuf);
    T* x = ptr<T>(xbuf);
    Acc* c_steps = ptr<Acc>(cbuf);
    T* h_raw = d.has_proj ? ptr<T>(hraw) : nullptr;
    // op(W_ih) for the chunks' projections (a backend may pack it once for all of them).
    const int64_t chunks = (N + rows - 1) / std::max<int64_t>(rows, 1);  // at most, all groups
    const auto input_weight = [&]() -> const LoopWeight<T>& {
      return input_weights.get(dir, [&] {
        return Backend::template input_weight<T>(ctx, !w.ih_t, G, I, w.w_ih, w.ld_ih, rows,
                                                 chunks);
      });
    };
    // The direction's later groups pack W_ih first while its first packs W_hh: else they wait
    // for both packs in turn (2.8-3.0 ms of a 46 ms call at uni I = H = 512 B = 32 on the 2-core
    // Xeon, idle).
    if (r0 > 0) input_weight();
    const StepWeights<T>& sw =
        loop_weights.get(dir, [&] { return step_weights<Backend, T>(ctx, d, s, w, false); });
    const LoopWeight<T>& ih = input_weight();
    int64_t tlo = 1, thi = 0;                  // steps [tlo, thi] projected into gbuf
    std::vector<int64_t> at(s.T, 0);           // gbuf row of step t's first row there
    IndexList gather;                          // element offsets of a group's chunk rows
    for (int64_t k = 0; k < s.T; ++k) {
      const int64_t t = reverse ? s.T - 1 - k : k;
      const auto [bs, off, nc, poff] = s.group_step(t, reverse, r0, r1);
      if (bs == 0) continue;
      if (t < tlo || t > thi) {
        // Project the next steps in this direction's order, as many as fit in the chunk.
        int64_t last = t, n = bs;
        for (;;) {
          const int64_t nt = reverse ? last - 1 : last + 1;
          if (nt < 0 || nt >= s.T || n + group_rows(nt) > rows) break;
          n += group_rows(nt);
          last = nt;
        }
        tlo = std::min(t, last);
        thi = std::max(t, last);
        const int64_t* src = token_in + s.offsets[tlo];
        if (whole) {
          for (int64_t u = tlo; u <= thi; ++u) at[u] = s.offsets[u] - s.offsets[tlo];
        } else {
          gather.clear();
          for (int64_t u = tlo; u <= thi; ++u) {
            at[u] = static_cast<int64_t>(gather.size());
            for (int64_t j = 0; j < group_rows(u); ++j)
              gather.push_back(token_offsets[s.offsets[u] + r0 + j]);
          }
          src = ctx.indices(gather);
        }
        Backend::template copy_rows<T, T>(ctx, n, I, x, I, nullptr, cptr<T>(in.input), 1, src);
        Backend::template gemm<T, Acc>(ctx, n, x, I, ih, 0, g0, G);
      }
      Acc* g = g0 + at[t] * G;
      Backend::template gemm<T, Acc>(ctx, nc, out + poff * Ho, Ho, sw.hh, 1, g, G);
      Backend::template gemm<T, Acc>(ctx, bs - nc, h0d + nc * Ho, Ho, sw.hh, 1, g + nc * G, G);
      Acc* c_prev = c_steps + ((k + 1) & 1) * gB * H;
      Acc* c_cur = c_steps + (k & 1) * gB * H;
      T* h = d.has_proj ? h_raw : out + off * Ho;
      Backend::template cell_inference<T, Acc>(ctx, bs, H, g, b, PrevCell<Acc>{c_prev, c0d, nc},
                                               c_cur, h);
      if (d.has_proj) Backend::template gemm<T, T>(ctx, bs, h, H, sw.hr, 0, out + off * Ho, Ho);
      // Rows whose sequence ends at this step keep their cell state.
      const int64_t ends_from = reverse ? (t == 0 ? 0 : s.batch_sizes[t])
                                        : (t + 1 < s.T ? s.batch_sizes[t + 1] : 0);
      const int64_t first_end = std::clamp<int64_t>(ends_from - r0, 0, bs);
      if (first_end < bs)
        Backend::template copy_rows<Acc, Acc>(ctx, bs - first_end, H, cf + first_end * H, H,
                                              nullptr, c_cur + first_end * H, H, nullptr);
    }
  });

  // output [T, B, D Hout]: time- or batch-major (layer_io.h, empty_tb), written as
  // layer_forward writes it.
  const HostScheduleView<Backend> view(s);
  view.zero_padding(ctx, ptr<T>(output), d.D * Ho, output.stride(0), output.stride(1));
  const RowPairs to_output = view.token_scatter(ctx, output.stride(0), output.stride(1));
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const T* out = cptr<T>(outs[dir]);
    Backend::template copy_rows<T, T>(ctx, to_output.n, Ho, ptr<T>(output) + dir * Ho, 1,
                                      to_output.dst, out, Ho, to_output.src);
    RowMap from_out, from_start;
    s.final_rows(dir == 1, from_out, from_start);
    T* hn = ptr<T>(h_n) + dir * B * Ho;
    Backend::template copy_rows<T, T>(ctx, from_out.size(), Ho, hn, Ho,
                                      ctx.indices(from_out.dst), out, Ho,
                                      ctx.indices(from_out.src));
    Backend::template copy_rows<T, T>(ctx, from_start.size(), Ho, hn, Ho,
                                      ctx.indices(from_start.dst), cptr<T>(h0s[dir]),
                                      Ho, ctx.indices(from_start.src));
    Backend::template copy_rows<T, Acc>(ctx, B, H, ptr<T>(c_n) + dir * B * H, H, order,
                                        cptr<Acc>(cfin[dir]), H, nullptr);
  }
}

// dW [G, K] = dgates^T [G, N] · X [N, K], type T. Stored transposed (the weight was: a
// Keras kernel), it is computed as dW^T = X^T · dgates into [K, G] and returned as its
// transposed view, so that autograd hands the caller's [K, G] tensor a contiguous gradient.
template <typename Backend, typename T, typename Acc>
Tensor weight_grad(typename Backend::Context& ctx, bool stored_t, int64_t G, int64_t K,
                   int64_t N, const T* dgates, const T* X, const Tensor& like) {
  if (!stored_t) {
    Tensor dw = empty_like_device({G, K}, dtype_of<Acc>(), like);
    Backend::template gemm<T, Acc>(ctx, true, false, G, K, N, dgates, G, X, K, 0, ptr<Acc>(dw), K);
    return to_dtype(dw, dtype_of<T>());
  }
  Tensor dw_t = empty_like_device({K, G}, dtype_of<Acc>(), like);
  Backend::template gemm<T, Acc>(ctx, true, false, K, G, N, X, K, dgates, G, 0, ptr<Acc>(dw_t), G);
  return torch::stable::transpose(to_dtype(dw_t, dtype_of<T>()), 0, 1);
}

// grad_* may be undefined (no gradient flows into that output). Outputs preallocated:
// grad_input [T, B, I] (when input_requires_grad), grad_h0, grad_c0, grad_weights like weights.
template <typename Backend, typename T, typename Acc, typename View>
void layer_backward(const LayerDims& d, const View& s, const LayerTensors& in,
                    const Tensor& grad_output, const Tensor& grad_h_n,
                    const Tensor& grad_c_n, bool input_requires_grad, Tensor& grad_input,
                    Tensor& grad_h0, Tensor& grad_c0,
                    std::vector<Tensor>& grad_weights) {
  typename Backend::Context ctx(in.input);
  const int64_t N = s.rows(), G = 4 * d.H, H = d.H, Ho = d.Hout, I = d.I, B = d.B;
  const int64_t* order = s.order(ctx);
  void* reserve = const_cast<void*>(in.reserve.const_data_ptr());  // read only

  // Per direction: dgates [N, 4H]; dout [N, Hout] (projection only: each step's total output
  // gradient); dh [B, Hout], dc [B, H] per sorted row, the gradient flowing into the row's
  // previous state. A row's entry is last written at its first step, so it ends as grad h0/c0
  // (and a zero-length row keeps grad h_n/c_n, as h_n = h0 there).
  std::vector<Tensor> dgates(d.D), dout(d.D), dh(d.D), dc(d.D), dy(d.D), h0s(d.D), c0s(d.D);
  const int64_t* dy_rows = nullptr;  // element offset of each packed row in grad_output
  for (int64_t dir = 0; dir < d.D; ++dir) {
    // Zero where the recurrence may not write every row (N unknown to the host): the weight
    // gradients sum over all rows (dW_hh over dgates, dW_hr over dout).
    const auto alloc = s.host() != nullptr ? empty_like_device : zeros_like_device;
    dgates[dir] = alloc({N, G}, dtype_of<T>(), in.input);
    if (d.has_proj) dout[dir] = alloc({N, Ho}, dtype_of<T>(), in.input);
    dh[dir] = zeros_like_device({B, Ho}, dtype_of<Acc>(), in.input);
    dc[dir] = zeros_like_device({B, H}, dtype_of<Acc>(), in.input);
    if (grad_h_n.defined())
      Backend::template copy_rows<Acc, T>(ctx, B, Ho, ptr<Acc>(dh[dir]), Ho, nullptr,
                                          cptr<T>(grad_h_n) + dir * B * Ho, Ho, order);
    if (grad_c_n.defined())
      Backend::template copy_rows<Acc, T>(ctx, B, H, ptr<Acc>(dc[dir]), H, nullptr,
                                          cptr<T>(grad_c_n) + dir * B * H, H, order);
    h0s[dir] = sorted_h0<Backend, T>(ctx, d, in, order, dir);
    c0s[dir] = sorted_c0<Backend, T, Acc>(ctx, d, in, order, dir);
    if (grad_output.defined()) {
      // (grad_output [T, B, D Hout], any strides with the last dim contiguous: its rows are
      // gathered by element offsets)
      if (dy_rows == nullptr)
        dy_rows = s.token_offsets(ctx, grad_output.stride(0), grad_output.stride(1));
      dy[dir] = empty_like_device({N, Ho}, dtype_of<T>(), in.input);
      Backend::template copy_rows<T, T>(ctx, N, Ho, ptr<T>(dy[dir]), Ho, nullptr,
                                        cptr<T>(grad_output) + dir * Ho, 1, dy_rows);
    }
  }

  // dW_hh's right operand, each token's previous h [N, Hout] (its previous step's output, or
  // h0), and the bias gradient's per-group sums: made in the per-step loop where the backend
  // does that work there (kWeightGradWorkInLoop), else after the time loop.
  constexpr bool kInLoop = Backend::kWeightGradWorkInLoop;
  std::vector<Tensor> h_prev(d.D);
  std::vector<GroupSums<Acc>> bias_sums(kInLoop ? d.D : 0);
  if constexpr (kInLoop)
    for (int64_t dir = 0; dir < d.D; ++dir)
      h_prev[dir] = empty_like_device({N, Ho}, dtype_of<T>(), in.input);

  std::vector<Recurrence<T, Acc>> rec(d.D);
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const auto w = direction_weights<T>(d, in.weights, dir);
    rec[dir] = {w.w_hh, w.w_hr, nullptr, cptr<T>(h0s[dir]), cptr<Acc>(c0s[dir]),
                reserve_blocks<T, Acc>(d, in.reserve_rows, reserve, dir),
                dy[dir].defined() ? cptr<T>(dy[dir]) : nullptr, ptr<Acc>(dh[dir]),
                ptr<Acc>(dc[dir]), ptr<T>(dgates[dir]),
                d.has_proj ? ptr<T>(dout[dir]) : nullptr};
  }
  // The time loop, step by step: the default, unless the backend runs it whole.
  // One group of sorted rows [r0, r1) of one direction; per-row buffers (dh, dc, c0) start at
  // r0.
  OncePerDirection<StepWeights<T>> loop_weights(d.D);
  const auto per_step = [&](int64_t dir, int64_t r0, int64_t r1) {
    const Schedule& hs = *s.host();
    const bool reverse = dir == 1;
    const auto w = direction_weights<T>(d, in.weights, dir);
    const auto r = reserve_blocks<T, Acc>(d, in.reserve_rows, reserve, dir);
    Acc* dhp = ptr<Acc>(dh[dir]) + r0 * Ho;
    Acc* dcp = ptr<Acc>(dc[dir]) + r0 * H;
    T* dg = ptr<T>(dgates[dir]);
    const T* dyp = dy[dir].defined() ? cptr<T>(dy[dir]) : nullptr;
    const Acc* c0d = cptr<Acc>(c0s[dir]) + r0 * H;
    const T* h0d = cptr<T>(h0s[dir]) + r0 * Ho;
    std::vector<Acc> bias_sum(kInLoop && d.has_biases ? G : 0, Acc(0));  // this group's
    Tensor dhraw =
        d.has_proj ? empty_like_device({r1 - r0, H}, dtype_of<Acc>(), in.input) : Tensor();
    Acc* dh_raw = d.has_proj ? ptr<Acc>(dhraw) : nullptr;
    T* dout_p = d.has_proj ? ptr<T>(dout[dir]) : nullptr;
    const StepWeights<T>& sw =
        loop_weights.get(dir, [&] { return step_weights<Backend, T>(ctx, d, hs, w, true); });
    for (int64_t k = hs.T - 1; k >= 0; --k) {
      const auto [bs, off, nc, poff] = hs.group_step(reverse ? hs.T - 1 - k : k, reverse, r0, r1);
      if (bs == 0) continue;
      // Total gradient of this step's output: from the layer output and from step t+1.
      if (dyp != nullptr) Backend::template add<Acc, T>(ctx, bs * Ho, dhp, dyp + off * Ho);
      const Acc* dh_cell = dhp;
      if (d.has_proj) {
        T* dot = dout_p + off * Ho;
        Backend::template copy_rows<T, Acc>(ctx, bs, Ho, dot, Ho, nullptr, dhp, Ho, nullptr);
        Backend::template gemm<T, Acc>(ctx, bs, dot, Ho, sw.hr, 0, dh_raw, H);
        dh_cell = dh_raw;
      }
      Backend::template cell_backward<T, Acc>(ctx, bs, H, r.gates + off * G, r.cell + off * H,
                                              PrevCell<Acc>{r.cell + poff * H, c0d, nc}, dh_cell,
                                              dcp, dg + off * G);
      // Gradient into each active row's previous h.
      Backend::template gemm<T, Acc>(ctx, bs, dg + off * G, G, sw.hh, 0, dhp, Ho);
      if constexpr (kInLoop) {
        if (d.has_biases)
          Backend::template add_row_sums<T, Acc>(ctx, bs, G, dg + off * G, bias_sum.data());
        // The rows' previous h, as the forward's step read it.
        T* hp = ptr<T>(h_prev[dir]) + off * Ho;
        Backend::template copy_rows<T, T>(ctx, nc, Ho, hp, Ho, nullptr, r.out + poff * Ho, Ho,
                                          nullptr);
        Backend::template copy_rows<T, T>(ctx, bs - nc, Ho, hp + nc * Ho, Ho, nullptr,
                                          h0d + nc * Ho, Ho, nullptr);
      }
    }
    if constexpr (kInLoop)
      if (d.has_biases) bias_sums[dir].add(r0, std::move(bias_sum));
  };
  const bool whole = Backend::template backward_recurrence<T, Acc>(ctx, d, s, rec.data());
  FASTLSTM_CHECK(!(whole && kInLoop), "fastlstm: internal error: a backend that runs the "
                 "backward's time loop whole must make h_prev and the bias gradient after it");
  if (!whole) {
    FASTLSTM_CHECK(s.host() != nullptr, "fastlstm: internal error: no time loop for a "
                   "schedule built on the device");
    Backend::template for_each_row_group<T>(d, *s.host(), per_step);
  }

  const Tensor x = packed_input<Backend, T>(ctx, s, in.input);
  Tensor dx =
      input_requires_grad ? empty_like_device({N, I}, dtype_of<Acc>(), in.input) : Tensor();
  for (int64_t dir = 0; dir < d.D; ++dir) {
    const auto w = direction_weights<T>(d, in.weights, dir);
    const auto r = reserve_blocks<T, Acc>(d, in.reserve_rows, reserve, dir);
    const T* dg = cptr<T>(dgates[dir]);
    int64_t k = dir * d.weights_per_dir();
    grad_weights[k++] = weight_grad<Backend, T, Acc>(ctx, w.ih_t, G, I, N, dg, cptr<T>(x),
                                                     in.input);
    // dW_hh pairs each token's dgates with its h_prev: the previous step's output or h0.
    Tensor hp = std::move(h_prev[dir]);
    if constexpr (!kInLoop) {
      hp = empty_like_device({N, Ho}, dtype_of<T>(), in.input);
      RowPairs o, st;
      s.previous_rows(ctx, dir == 1, o, st);
      Backend::template copy_rows<T, T>(ctx, o.n, Ho, ptr<T>(hp), Ho, o.dst, r.out, Ho, o.src);
      Backend::template copy_rows<T, T>(ctx, st.n, Ho, ptr<T>(hp), Ho, st.dst,
                                        cptr<T>(h0s[dir]), Ho, st.src);
    }
    grad_weights[k++] = weight_grad<Backend, T, Acc>(ctx, w.hh_t, G, Ho, N, dg, cptr<T>(hp),
                                                     in.input);
    if (d.has_biases) {
      Tensor sum;
      if constexpr (kInLoop) {
        sum = empty_like_device({G}, dtype_of<Acc>(), in.input);
        bias_sums[dir].total(G, ptr<Acc>(sum));
      } else {
        sum = Backend::template row_sum<T, Acc>(ctx, dgates[dir]);
      }
      Tensor db = to_dtype(sum, dtype_of<T>());
      grad_weights[k++] = db;
      grad_weights[k++] = torch::stable::clone(db);
    }
    if (d.has_proj) {
      Tensor dw_hr = empty_like_device({Ho, H}, dtype_of<Acc>(), in.input);
      Backend::template gemm<T, Acc>(ctx, true, false, Ho, H, N, cptr<T>(dout[dir]), Ho,
                                     r.hraw, H, 0, ptr<Acc>(dw_hr), H);
      grad_weights[k++] = to_dtype(dw_hr, dtype_of<T>());
    }
    if (input_requires_grad)
      Backend::template gemm<T, Acc>(ctx, false, w.ih_t, N, I, G, dg, G, w.w_ih, w.ld_ih,
                                     dir == 0 ? 0 : 1, ptr<Acc>(dx), I);
    Backend::template copy_rows<T, Acc>(ctx, B, Ho, ptr<T>(grad_h0) + dir * B * Ho, Ho,
                                        order, cptr<Acc>(dh[dir]), Ho, nullptr);
    Backend::template copy_rows<T, Acc>(ctx, B, H, ptr<T>(grad_c0) + dir * B * H, H, order,
                                        cptr<Acc>(dc[dir]), H, nullptr);
  }
  if (input_requires_grad) {
    // grad_input [T, B, I]: in the input's memory order (layer_io.h, empty_tb).
    const int64_t st = grad_input.stride(0), sb = grad_input.stride(1);
    s.zero_padding(ctx, ptr<T>(grad_input), I, st, sb);
    const RowPairs to_grad_input = s.token_scatter(ctx, st, sb);
    Backend::template copy_rows<T, Acc>(ctx, to_grad_input.n, I, ptr<T>(grad_input), 1,
                                        to_grad_input.dst, cptr<Acc>(dx), I, to_grad_input.src);
  }
}

}  // namespace fastlstm
