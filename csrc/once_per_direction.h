// OncePerDirection: a value per direction of a layer call, made by the first row group to ask.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace fastlstm {

// Nanoseconds the calling thread has spent waiting in OncePerDirection::get for another
// group's value (the CPU's contention measure counts that wait as the call's own, not as time
// lost to other processes: csrc/cpu/contention.h).
inline int64_t& direction_wait_ns() {
  thread_local int64_t ns = 0;
  return ns;
}

// A value per direction, made once per layer call by the first of the direction's row groups
// to ask and shared by the others (on the CPU, groups of one direction run on several threads
// at once: each used to pack its own copy of the direction's weights). A group that asks while
// another is making it waits for it. (An atomic state and C++20's atomic wait, not
// std::call_once: that would export libstdc++ template symbols and need glibc 2.34.)
template <typename V>
class OncePerDirection {
 public:
  explicit OncePerDirection(int64_t D) : state_(new std::atomic<int>[D]), values_(D) {
    for (int64_t i = 0; i < D; ++i) state_[i].store(kUnmade, std::memory_order_relaxed);
  }
  template <typename Make>
  const V& get(int64_t dir, const Make& make) {
    std::atomic<int>& state = state_[dir];
    int seen = state.load(std::memory_order_acquire);
    while (seen != kMade) {
      if (seen == kUnmade &&
          state.compare_exchange_strong(seen, kMaking, std::memory_order_acquire)) {
        try {
          values_[dir] = make();
        } catch (...) {
          state.store(kUnmade, std::memory_order_release);  // another group may try again
          state.notify_all();
          throw;
        }
        state.store(kMade, std::memory_order_release);
        state.notify_all();
        break;
      }
      if (seen == kMaking) {
        const auto start = std::chrono::steady_clock::now();
        state.wait(kMaking, std::memory_order_acquire);
        direction_wait_ns() += std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now() - start)
                                   .count();
      }
      seen = state.load(std::memory_order_acquire);
    }
    return values_[dir];
  }

 private:
  static constexpr int kUnmade = 0, kMaking = 1, kMade = 2;
  std::unique_ptr<std::atomic<int>[]> state_;
  std::vector<V> values_;
};

}  // namespace fastlstm
