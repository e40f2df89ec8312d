// The CUDA primitives of csrc/layer_driver.h (the per-step path): cuBLAS GEMMs on torch's
// handle and current stream, a fused cell kernel per step, and row-copy kernels driven by the
// schedule's index lists. Definitions: gemm_cuda.cpp, kernels in *.cuh, instantiated per dtype
// in kernels_<dtype>.cu. Host code includes only this header, never the kernels.
//
// The same sources also build for the CPU under emulation (csrc/simt/): this header then
// declares fastlstm::cuda::emulated::CudaBackend instead of fastlstm::cuda::gpu::CudaBackend,
// and either is reached as fastlstm::cuda::CudaBackend.
#pragma once

#include <tuple>
#include <vector>

#include "../layer_io.h"
#include "../loop_weight.h"
#include "../lstm.h"
#include "../schedule.h"
#include "../schedule_view.h"
#include "../simt/simt.h"
#include "../torch_api.h"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

// The packed step schedule, built on the lengths' device with no host synchronisation
// (device_schedule.cuh): sequences sorted by length, descending and stable.
struct DeviceSchedule {
  Tensor order;           // [B] int64: batch index of sorted row j
  Tensor sorted_lengths;  // [B] int64: descending
  Tensor active;          // [T] int64: rows active at step t (a prefix of the sorted rows)
  Tensor offsets;         // [T+1] int64: first packed row of step t; offsets[T] = N
};
DeviceSchedule device_schedule(const Tensor& lengths, int64_t T);

// Whether torch allows TF32 for float32 matmuls now (its cuBLAS handle's math mode).
bool tf32_allowed();

struct CudaBackend {
  // Weights arrive contiguous (layer_io.h): the persistent kernels read W_hh row-major.
  static constexpr bool kTransposedWeights = false;
  // Alive for one layer call (csrc/layer_ops.h); nothing to set up on the GPU.
  struct CallScope {
    CallScope(const LayerDims&, const Schedule&) {}
  };

  // Uploads index lists to the device for the duration of one op call.
  class Context {
   public:
    explicit Context(const Tensor& like) : like_(like) {}
    const int64_t* indices(const IndexList& v);
    // A tensor on the op's device, for allocating others there.
    const Tensor& like() const { return like_; }

   private:
    Tensor like_;
    std::vector<Tensor> uploaded_;
  };

  // C [M, N] (row-major) = op(A) op(B) + beta C; T in {float, double, Half, BFloat16},
  // C either T or float (fp32 accumulation of half types).
  template <typename T, typename C>
  static void gemm(Context& ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A,
                   int64_t lda, const T* B, int64_t ldb, C beta, C* Cp, int64_t ldc);

  // op(W) for every step of a time loop: cuBLAS takes W as it is.
  template <typename T>
  static LoopWeight<T> loop_weight(Context&, bool trans, int64_t N, int64_t K, const T* w,
                                   int64_t ld, int64_t max_rows, int64_t /*steps*/) {
    return {w, trans, N, K, ld, max_rows, nullptr};
  }
  // op(W_ih) for an inference's chunked input projection: likewise as it is.
  template <typename T>
  static LoopWeight<T> input_weight(Context&, bool trans, int64_t N, int64_t K, const T* w,
                                    int64_t ld, int64_t max_rows, int64_t /*uses*/) {
    return {w, trans, N, K, ld, max_rows, nullptr};
  }
  template <typename T, typename C>
  static void gemm(Context& ctx, int64_t M, const T* A, int64_t lda, const LoopWeight<T>& w,
                   C beta, C* Cp, int64_t ldc) {
    gemm<T, C>(ctx, false, w.trans, M, w.N, w.K, A, lda, w.w, w.ld, beta, Cp, ldc);
  }

  template <typename T, typename Acc>
  static void cell_forward(Context& ctx, int64_t rows, int64_t H, Acc* gates, const Acc* bias,
                           PrevCell<Acc> c_prev, Acc* c_out, T* h_out);
  // Inference's cell: the forward's kernel (which also stores the activations over gates).
  template <typename T, typename Acc>
  static void cell_inference(Context& ctx, int64_t rows, int64_t H, Acc* gates, const Acc* bias,
                             PrevCell<Acc> c_prev, Acc* c_out, T* h_out) {
    cell_forward<T, Acc>(ctx, rows, H, gates, bias, c_prev, c_out, h_out);
  }

  template <typename T, typename Acc>
  static void cell_backward(Context& ctx, int64_t rows, int64_t H, const Acc* gates, const Acc* c,
                            PrevCell<Acc> c_prev, const Acc* dh, Acc* dc, T* dgates);

  template <typename D, typename S>
  static void copy_rows(Context& ctx, int64_t n, int64_t C, D* dst, int64_t ldd,
                        const int64_t* dst_idx, const S* src, int64_t lds,
                        const int64_t* src_idx);

  template <typename T>
  static void zero_rows(Context& ctx, int64_t n, int64_t C, T* dst, int64_t ldd,
                        const int64_t* idx);

  template <typename Acc, typename T>
  static void add(Context& ctx, int64_t n, Acc* dst, const T* src);

  template <typename T, typename Acc>
  static void combine_bias(Context& ctx, int64_t G, Acc* out, const T* b_ih, const T* b_hh);

  // The backward's weight-gradient preparations (the previous h of every token, the bias
  // gradient) run after its time loop, as a copy and torch's sum, not in it (layer_driver.h):
  // a GPU step is latency-bound, and in the loop they would be two more launches a step.
  static constexpr bool kWeightGradWorkInLoop = false;

  // The sum of dgates' rows [N, G] (type T), as a [G] tensor of type Acc: torch's sum.
  template <typename T, typename Acc>
  static Tensor row_sum(Context&, const Tensor& dgates) {
    const Sizes rows_dim{0};
    return torch::stable::sum(dgates, torch::headeronly::IntHeaderOnlyArrayRef(rows_dim),
                              /*keepdim=*/false, dtype_of<Acc>());
  }

  // The whole time loop of every direction in one cooperative launch (persistent.cuh), when
  // FASTLSTM_CUDA_PATH asks for it and the shape fits; false: the driver's per-step loop.
  // View: HostScheduleView<CudaBackend> or DeviceScheduleView.
  template <typename T, typename Acc, typename View>
  static bool forward_recurrence(Context& ctx, const LayerDims& d, const View& s,
                                 const Recurrence<T, Acc>* rec);
  template <typename T, typename Acc, typename View>
  static bool backward_recurrence(Context& ctx, const LayerDims& d, const View& s,
                                  const Recurrence<T, Acc>* rec);
  // Whether forward_recurrence and backward_recurrence both take this shape.
  template <typename T, typename Acc>
  static bool persistent_fits(const LayerDims& d);

  // The directions are independent: on the GPU each runs on a stream of its own, joined back
  // into the current stream (under emulation, one after the other). Each runs every row: the
  // GPU spreads a step's rows over its blocks.
  template <typename T, typename F>
  static void for_each_row_group(const LayerDims& d, const Schedule&, const F& f) {
    simt::concurrently(d.D, [&](int64_t dir) { f(dir, int64_t{0}, d.B); });
  }
};

// The schedule built on the GPU from lengths that live there (device_schedule.cuh), in the
// layout of HostScheduleView (schedule_view.h) but with T * B packed rows, since the host does
// not know N: rows from N on are "no row" in every index list. Nothing here copies to the host.
class DeviceScheduleView {
 public:
  using Context = CudaBackend::Context;
  // lengths [B], any integer dtype, on the op's device. Values outside [0, T] cannot be checked
  // on the host without a sync: they are clamped (so nothing reads out of bounds) and fail an
  // asynchronous device-side assertion, as torch's own device-side index checks do.
  DeviceScheduleView(const Tensor& lengths, int64_t T);

  int64_t rows() const { return T_ * B_; }
  bool has_tokens() const { return rows() > 0; }
  const Schedule* host() const { return nullptr; }

  const int64_t* order(Context&) const { return cptr<int64_t>(s_.order); }
  const int64_t* active(Context&) const { return cptr<int64_t>(s_.active); }
  const int64_t* offsets(Context&) const { return cptr<int64_t>(s_.offsets); }
  const int64_t* token_offsets(Context& ctx, int64_t stride_t, int64_t stride_b) const;
  // Packed row r -> token_offsets[r] (T * B pairs, those past N "no row"): a GPU scatter
  // writes whole rows per warp in either order.
  RowPairs token_scatter(Context& ctx, int64_t stride_t, int64_t stride_b) const {
    return {T_ * B_, token_offsets(ctx, stride_t, stride_b), nullptr};
  }
  // Every row: the valid ones are written afterwards. dst is a dense [T, B, C] tensor, time-
  // or batch-major (layer_io.h, empty_tb), so its T * B rows of C are its whole memory
  // whatever the order.
  template <typename T>
  void zero_padding(Context& ctx, T* dst, int64_t C, int64_t, int64_t) const {
    CudaBackend::zero_rows<T>(ctx, T_ * B_, C, dst, C, nullptr);
  }
  void final_rows(Context& ctx, bool reverse, RowPairs& from_out, RowPairs& from_start) const;
  void previous_rows(Context& ctx, bool reverse, RowPairs& from_out, RowPairs& from_start) const;

 private:
  int64_t T_, B_;
  DeviceSchedule s_;
  mutable std::vector<Tensor> lists_;  // index lists handed out, alive as long as the view
};

// The layer ops with lengths on the GPU, through DeviceScheduleView: no host sync. They take a
// shape only where the persistent kernels run both time loops (FASTLSTM_CUDA_PATH=persistent
// and the shape fits); otherwise they return false and do nothing. The reserve has T * B rows.
bool device_layer_forward(const LayerDims& d, const Tensor& input, const Tensor& lengths,
                          const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& weights,
                          std::tuple<Tensor, Tensor, Tensor, Tensor>& result);
bool device_layer_backward(const LayerDims& d, const BackwardGrads& g, const Tensor& input,
                           const Tensor& lengths, const Tensor& h0, const Tensor& c0,
                           const std::vector<Tensor>& weights, const Tensor& reserve,
                           bool input_requires_grad,
                           std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>>& result);

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
