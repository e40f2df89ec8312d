// GroupSums: per-group partial sums of a [C] vector, made by a layer's row groups on their own
// threads and added up afterwards in the order of the groups' first rows, so that the total
// does not depend on which group finished first (the same thread count gives the same bits).
#pragma once

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

namespace fastlstm {

template <typename Acc>
class GroupSums {
 public:
  // Group [r0, ...)'s partial sum, from the thread that made it.
  void add(int64_t r0, std::vector<Acc> partial) {
    const std::lock_guard<std::mutex> lock(mutex_);
    parts_.emplace_back(r0, std::move(partial));
  }

  // total [C] = the partial sums in order of r0 (zeros where no group added one).
  void total(int64_t C, Acc* total) {
    std::sort(parts_.begin(), parts_.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    std::fill(total, total + C, Acc(0));
    for (const auto& part : parts_)
      for (int64_t c = 0; c < C; ++c) total[c] += part.second[c];
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<int64_t, std::vector<Acc>>> parts_;
};

}  // namespace fastlstm
