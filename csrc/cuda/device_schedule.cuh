// The step schedule built where the lengths are, with no device-to-host copy (milestone M0 of
// the persistent path): sort the lengths descending (stable, so ties keep batch order, as the
// host schedule in csrc/schedule.cpp does), then for every step t the active count, the number
// of lengths > t, by a binary search over the sorted lengths, and its exclusive prefix sum,
// the first packed row of each step. Only T, known from the input's shape, sizes anything.
#pragma once

#include "../simt/simt.h"
#include "backend.h"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

// active[t] = #{j : sorted[j] > t} for t < T; sorted is descending.
__global__ void active_counts_kernel(const int64_t* sorted, int64_t B, int64_t T,
                                     int64_t* active) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < T;
       t += int64_t(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = B;  // the first j with sorted[j] <= t lies in [lo, hi]
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (sorted[mid] > t) lo = mid + 1; else hi = mid;
    }
    active[t] = lo;
  }
}

DeviceSchedule device_schedule(const Tensor& lengths, int64_t T) {
  const Tensor len = to_dtype(lengths, kLong);
  auto [sorted, order] = call_op<2>("aten::sort", "stable", len, std::optional<bool>(true),
                                    /*dim=*/int64_t{0}, /*descending=*/true);
  Tensor active = empty_like_device({T}, kLong, len);
  if (T > 0) {
#if defined(FASTLSTM_SIMT_EMULATE)
    constexpr unsigned kThreads = 32, kMaxBlocks = 3;
#else
    constexpr unsigned kThreads = 256, kMaxBlocks = 1024;
#endif
    const unsigned blocks =
        static_cast<unsigned>(std::min<int64_t>((T + kThreads - 1) / kThreads, kMaxBlocks));
    simt::launch(active_counts_kernel, dim3(blocks), dim3(kThreads), 0,
                 cptr<int64_t>(sorted), len.size(0), T, ptr<int64_t>(active));
  }
  const Tensor steps = call_op<1>("aten::cumsum", "", active, /*dim=*/int64_t{0}, std::nullopt)[0];
  const Tensor offsets = call_op<1>("aten::cat", "",
                                    std::vector<Tensor>{zeros_like_device({1}, kLong, len), steps},
                                    /*dim=*/int64_t{0})[0];
  return {order, sorted, active, offsets};
}

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
