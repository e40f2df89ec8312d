// OncePerDirection: a value per direction of a layer call, made by the first row group to ask.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "cpu_relax.h"

namespace fastlstm {

// A value per direction, made once per layer call by the first of the direction's row groups
// to ask and shared by the others (on the CPU, groups of one direction run on several threads
// at once: each used to pack its own copy of the direction's weights). A group that asks while
// another is making it waits for it spinning, never asleep: the making is short (packing a
// direction's weights: 0.05-0.2 ms at H=128), and beside busy processes a waiter asleep in the
// kernel waited 1.7-4.9 ms for it (uni B=8 H=128 inference on the 2-core Xeon, whose whole
// call takes 1.3 ms idle). A spinning wait is CPU time too, so the contention measure
// (csrc/cpu/contention.h) sees any time the waiter is descheduled as lost. (An atomic state,
// not std::call_once: that would export libstdc++ template symbols and need glibc 2.34.)
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
          throw;
        }
        state.store(kMade, std::memory_order_release);
        break;
      }
      // A failed exchange left the state it found in `seen`.
      if (seen == kMaking) seen = wait_while_making(state);
    }
    return values_[dir];
  }

 private:
  static constexpr int kUnmade = 0, kMaking = 1, kMade = 2;
  // A weight pack takes 0.05-0.2 ms at H=128 and about 3 ms at H=512 (2-core Xeon).
  static constexpr std::chrono::milliseconds kSpin{5};

  // Spins until `state` leaves kMaking and returns what it became. After kSpin, yields each
  // turn: the maker may be waiting for this very core (more threads than cores). Not sooner:
  // beside a busy process a yield hands it a time slice.
  static int wait_while_making(const std::atomic<int>& state) {
    const auto start = std::chrono::steady_clock::now();
    bool yielding = false;
    int seen;
    for (int turn = 1; (seen = state.load(std::memory_order_acquire)) == kMaking; ++turn) {
      if (!yielding && turn % 64 == 0) yielding = std::chrono::steady_clock::now() - start > kSpin;
      if (yielding) {
        std::this_thread::yield();
      } else {
        cpu_relax();
      }
    }
    return seen;
  }

  std::unique_ptr<std::atomic<int>[]> state_;
  std::vector<V> values_;
};

}  // namespace fastlstm
