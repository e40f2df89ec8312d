// The step schedule built where the lengths are, with no device-to-host copy (milestone M0 of
// the persistent path): sort the lengths descending (stable, so ties keep batch order, as the
// host schedule in csrc/schedule.cpp does), then for every step t the active count, the number
// of lengths > t, by a binary search over the sorted lengths, and its exclusive prefix sum,
// the first packed row of each step. Only T, known from the input's shape, sizes anything.
// DeviceScheduleView then builds the driver's index lists from it, one thread per entry.
#pragma once

#include <stdexcept>
#include <string>

#include "../simt/simt.h"
#include "backend.h"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

// One thread per entry of the schedule's lists, grid-stride.
#if defined(FASTLSTM_SIMT_EMULATE)
constexpr unsigned kScheduleThreads = 32, kScheduleMaxBlocks = 3;
#else
constexpr unsigned kScheduleThreads = 256, kScheduleMaxBlocks = 4096;
#endif

template <typename Kernel, typename... Args>
void launch_over(int64_t n, Kernel kernel, Args... args) {
  if (n <= 0) return;
  const unsigned blocks = static_cast<unsigned>(
      std::min<int64_t>((n + kScheduleThreads - 1) / kScheduleThreads, kScheduleMaxBlocks));
  simt::launch(kernel, dim3(blocks), dim3(kScheduleThreads), 0, args...);
}

#define FASTLSTM_GRID_STRIDE(i, n)                                              \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

// active[t] = #{j : sorted[j] > t} for t < T; sorted is descending.
__global__ void active_counts_kernel(const int64_t* sorted, int64_t B, int64_t T,
                                     int64_t* active) {
  FASTLSTM_GRID_STRIDE(t, T) {
    int64_t lo = 0, hi = B;  // the first j with sorted[j] <= t lies in [lo, hi]
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (sorted[mid] > t) lo = mid + 1; else hi = mid;
    }
    active[t] = lo;
  }
}

#if defined(FASTLSTM_SIMT_EMULATE)
// Under emulation the schedule's tensors are on the CPU: check what every kernel that indexes
// with it relies on, so that a wrong count fails here with a message instead of sending a
// kernel past a buffer's end. lengths [B] (already in [0, T]), sorted/order [B], active [T],
// offsets [T + 1].
inline void check_emulated_schedule(const Tensor& lengths, const Tensor& sorted,
                                    const Tensor& order, const Tensor& active,
                                    const Tensor& offsets, int64_t T) {
  const int64_t B = lengths.numel();
  const int64_t *len = cptr<int64_t>(lengths), *srt = cptr<int64_t>(sorted);
  const int64_t *ord = cptr<int64_t>(order), *act = cptr<int64_t>(active);
  const int64_t* off = cptr<int64_t>(offsets);
  std::vector<char> seen(B, 0);
  for (int64_t j = 0; j < B; ++j) {
    FASTLSTM_CHECK(ord[j] >= 0 && ord[j] < B && !seen[ord[j]],
                   "fastlstm (emulated CUDA): device schedule: order is not a permutation of "
                   "[0, B=", B, "): order[", j, "] = ", ord[j]);
    seen[ord[j]] = 1;
    FASTLSTM_CHECK(srt[j] == len[ord[j]] && (j == 0 || srt[j] <= srt[j - 1]),
                   "fastlstm (emulated CUDA): device schedule: sorted_lengths[", j, "] = ",
                   srt[j], " is not lengths[order[", j, "]] = ", len[ord[j]],
                   " in descending order");
  }
  FASTLSTM_CHECK(off[0] == 0, "fastlstm (emulated CUDA): device schedule: offsets[0] = ",
                 off[0], ", expected 0");
  for (int64_t t = 0; t < T; ++t) {
    int64_t expected = 0;
    while (expected < B && srt[expected] > t) ++expected;
    FASTLSTM_CHECK(act[t] == expected, "fastlstm (emulated CUDA): device schedule: active[", t,
                   "] = ", act[t], ", expected ", expected, " (of B=", B, " rows)");
    FASTLSTM_CHECK(off[t + 1] == off[t] + act[t], "fastlstm (emulated CUDA): device schedule: "
                   "offsets[", t + 1, "] = ", off[t + 1], ", expected ", off[t] + act[t]);
  }
}
#endif

DeviceSchedule device_schedule(const Tensor& lengths, int64_t T) {
  const Tensor len = to_dtype(lengths, kLong);
  auto [sorted, order] = simt::sort_descending(len, /*stable=*/true);
  Tensor active = empty_like_device({T}, kLong, len);
  launch_over(T, active_counts_kernel, cptr<int64_t>(sorted), len.size(0), T,
              ptr<int64_t>(active));
  const Tensor steps = call_op<1>("aten::cumsum", "", active, /*dim=*/int64_t{0}, std::nullopt)[0];
  const Tensor offsets = call_op<1>("aten::cat", "",
                                    std::vector<Tensor>{zeros_like_device({1}, kLong, len), steps},
                                    /*dim=*/int64_t{0})[0];
#if defined(FASTLSTM_SIMT_EMULATE)
  check_emulated_schedule(len, sorted, order, active, offsets, T);
#endif
  return {order, sorted, active, offsets};
}

// out[b] = lengths[b] clamped to [0, T]; *ok = 0 if any was outside (ok starts at 1).
__global__ void clamp_lengths_kernel(const int64_t* lengths, int64_t B, int64_t T, int64_t* out,
                                     int64_t* ok) {
  FASTLSTM_GRID_STRIDE(b, B) {
    const int64_t v = lengths[b], c = v < 0 ? 0 : (v > T ? T : v);
    out[b] = c;
    if (c != v) *ok = 0;
  }
}

// The step t and sorted row j of packed row p, or false when p >= N = offsets[T]. Steps with
// no rows lie past every valid one (active counts fall with t), so the last t with
// offsets[t] <= p is the step of p.
__device__ __forceinline__ bool packed_step(const int64_t* offsets, int64_t T, int64_t p,
                                            int64_t& t, int64_t& j) {
  if (p >= offsets[T]) return false;
  int64_t lo = 0, hi = T - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= p) lo = mid; else hi = mid - 1;
  }
  t = lo;
  j = p - offsets[lo];
  return true;
}

// out[p] = t * stride_t + order[j] * stride_b for packed row p (step t, sorted row j), else -1.
__global__ void token_offsets_kernel(const int64_t* offsets, const int64_t* order, int64_t T,
                                     int64_t B, int64_t stride_t, int64_t stride_b,
                                     int64_t* out) {
  FASTLSTM_GRID_STRIDE(p, T * B) {
    int64_t t, j;
    out[p] = packed_step(offsets, T, p, t, j) ? t * stride_t + order[j] * stride_b : -1;
  }
}

// Per sorted row j: out[0..4) rows of [4, B] = from_out (dst, src), from_start (dst, src).
__global__ void final_rows_kernel(const int64_t* sorted, const int64_t* order,
                                  const int64_t* offsets, int64_t B, bool reverse,
                                  int64_t* out) {
  FASTLSTM_GRID_STRIDE(j, B) {
    const int64_t len = sorted[j];
    out[j] = len > 0 ? order[j] : -1;
    out[B + j] = len > 0 ? offsets[reverse ? 0 : len - 1] + j : -1;
    out[2 * B + j] = len > 0 ? -1 : order[j];
    out[3 * B + j] = j;
  }
}

// Per packed row p: out[0..4) rows of [4, T*B] = from_out (dst, src), from_start (dst, src).
// Rows past N take zeros (from_start with source -1).
__global__ void previous_rows_kernel(const int64_t* active, const int64_t* offsets, int64_t T,
                                     int64_t B, bool reverse, int64_t* out) {
  const int64_t n = T * B;
  FASTLSTM_GRID_STRIDE(p, n) {
    int64_t t = 0, j = 0;
    const bool valid = packed_step(offsets, T, p, t, j);
    const int64_t prev = reverse ? (t + 1 < T ? t + 1 : -1) : t - 1;
    const int64_t nc = !valid || prev < 0 ? 0 : (active[t] < active[prev] ? active[t]
                                                                          : active[prev]);
    const bool continues = j < nc;
    out[p] = continues ? p : -1;
    out[n + p] = continues ? offsets[prev] + j : -1;
    out[2 * n + p] = continues ? -1 : p;
    out[3 * n + p] = valid ? (continues ? -1 : j) : -1;
  }
}

DeviceScheduleView::DeviceScheduleView(const Tensor& lengths, int64_t T)
    : T_(T), B_(lengths.size(0)) {
  const Tensor len = to_dtype(lengths, kLong);
  Tensor clamped = empty_like_device({B_}, kLong, len);
  Tensor ok = empty_like_device({1}, kLong, len);
  torch::stable::fill_(ok, 1.0);
  launch_over(B_, clamp_lengths_kernel, cptr<int64_t>(len), B_, T, ptr<int64_t>(clamped),
              ptr<int64_t>(ok));
  const std::string message = std::string("fastlstm: lengths must lie in [0, T=") +
                              std::to_string(T) +
                              "] (checked on the device: the lengths are a GPU tensor)";
  try {
    call_op<0>("aten::_assert_async", "msg", ok, message);
  } catch (const std::runtime_error&) {
    // Only a CPU tensor (the emulator) fails here, at once; torch 2.11's shim drops the
    // message on the way, so the error is raised again with it.
    FASTLSTM_CHECK_VALUE(false, message);
  }
  s_ = device_schedule(clamped, T);
}

const int64_t* DeviceScheduleView::token_offsets(Context&, int64_t stride_t,
                                                 int64_t stride_b) const {
  Tensor out = empty_like_device({T_ * B_}, kLong, s_.order);
  launch_over(T_ * B_, token_offsets_kernel, cptr<int64_t>(s_.offsets), cptr<int64_t>(s_.order),
              T_, B_, stride_t, stride_b, ptr<int64_t>(out));
  lists_.push_back(out);
  return cptr<int64_t>(out);
}

void DeviceScheduleView::final_rows(Context&, bool reverse, RowPairs& from_out,
                                    RowPairs& from_start) const {
  Tensor out = empty_like_device({4 * B_}, kLong, s_.order);
  launch_over(B_, final_rows_kernel, cptr<int64_t>(s_.sorted_lengths), cptr<int64_t>(s_.order),
              cptr<int64_t>(s_.offsets), B_, reverse, ptr<int64_t>(out));
  lists_.push_back(out);
  const int64_t* o = cptr<int64_t>(out);
  from_out = {B_, o, o + B_};
  from_start = {B_, o + 2 * B_, o + 3 * B_};
}

void DeviceScheduleView::previous_rows(Context&, bool reverse, RowPairs& from_out,
                                       RowPairs& from_start) const {
  const int64_t n = T_ * B_;
  Tensor out = empty_like_device({4 * n}, kLong, s_.order);
  launch_over(n, previous_rows_kernel, cptr<int64_t>(s_.active), cptr<int64_t>(s_.offsets), T_,
              B_, reverse, ptr<int64_t>(out));
  lists_.push_back(out);
  const int64_t* o = cptr<int64_t>(out);
  from_out = {n, o, o + n};
  from_start = {n, o + 2 * n, o + 3 * n};
}

#undef FASTLSTM_GRID_STRIDE

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
