// How one layer's time loops are spread over torch's intra-op threads on the CPU.
//
// Two ways, chosen once per layer call:
//   rows   the layer's sorted rows are cut into contiguous groups, one per thread (directions
//          first, then groups within a direction). Each thread runs its group through every
//          step alone: no synchronisation with the other threads until the layer ends, so a
//          thread that the OS deschedules delays only its own rows.
//   steps  one group per direction (the whole batch); its thread leads a step team of the
//          threads left over (step_team.h), which split each step's float32 GEMM (W's columns)
//          and cell, meeting at every step with a barrier that blocks instead of spinning. It
//          reads each weight once per step per machine instead of once per thread, which pays
//          where a direction's W_hh does not fit one core's L2 and each thread would own only a
//          row or two: choose_partition takes it there; FASTLSTM_CPU_PARTITION=rows|steps forces
//          either.
// Groups are balanced by their cost (StepCost): a group of rows [a, b) (lengths sorted
// descending) runs a step for each t < length[a], on its rows still active at t, and each step
// costs kStepHalfRows half-rows beside its rows (the GEMM call and the weights' pass), plus a
// penalty where the step GEMM's last tile of rows is only partly full.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <vector>

#include "../lstm.h"
#include "../schedule.h"
#include "../torch_api.h"
#include "contention.h"
#include "step_gemm.h"

namespace fastlstm::cpu {

struct RowGroup {
  int64_t dir;     // direction: 0 forward, 1 reverse
  int64_t r0, r1;  // sorted rows [r0, r1)
};

enum class Partition { rows, steps };

// FASTLSTM_CPU_PARTITION=rows|steps forces one way (tests run both); read at every call.
inline const char* forced_partition() {
  const char* v = std::getenv("FASTLSTM_CPU_PARTITION");
  return v != nullptr && (std::strcmp(v, "rows") == 0 || std::strcmp(v, "steps") == 0) ? v
                                                                                        : nullptr;
}

// A step's cost beside its rows, in half-rows: 1.5 rows. With W_hh packed once per layer call
// for fastlstm's own step GEMM, one thread at H = 256 takes about 0.011 + 0.0054 M time units
// for a step of M rows (about 2 rows' worth per step), and each row also carries its cell and,
// in inference, its share of the input projection. Rows partition cuts, 2-core Xeon, 2 threads,
// T = 100, lengths uniform in [T/4, T], interleaved against the 4 rows charged before (medians
// of 15-21, nn.LSTM padded over fastlstm): uni B = 8 H = 256 inference 1.24x -> 1.39x (cut 2 +
// 6 rows -> 3 + 5; the threads' loops took 2.7 and 4.3 ms, now 3.4 and 3.5), B = 4 H = 512
// 1.71x -> 1.88x, B = 32 I = H = 64 1.47x -> 1.65x, training uni B = 32 H = 128 1.33x -> 1.57x,
// B = 8 H = 256 1.22x -> 1.38x; nearly full lengths level to 1.05x faster; AVX2-capped 5 of 6
// rows faster. 1 row (2 half-rows) measured level with 1.5, 2 rows slower.
constexpr int64_t kStepHalfRows = 3;

// The cost of one step of a group with n active rows, in half-rows (integers): `step`
// (kStepHalfRows) beside them, 2 per row, and where the step GEMM runs its rows in tiles of
// `tile` rows (partition_tile_rows: 8 on AVX-512, whose kernel's tiles hold 12; 6 on AVX2, 4
// portable), a partial last tile's extra: 1.5 rows for one of under tile / 2 rows, 0.5 for a
// larger one. Measured on the 2-core Xeon, one thread, H = 256 (python -m benchmarks.step_gemm):
// M rows cost as much as 8 floor(M / 8) + m full-tile rows plus 1.4, 1.2, 1.8, 0.2, 0.7, 0.35,
// 0.3 for m = M mod 8 = 1..7. Two groups of nearly full lengths at B = 32 were cut 15 + 17 rows
// without it (17 = 8 + 8 + 1), and 16 + 16 ran 1.05x faster (uni H = 256 inference).
struct StepCost {
  static constexpr int64_t step = kStepHalfRows;
  int64_t tile = 0;  // 0: every row costs alike
  int64_t partial(int64_t n) const {
    const int64_t m = tile > 0 ? n % tile : 0;
    return m == 0 ? 0 : (2 * m < tile ? 3 : 1);
  }
  int64_t operator()(int64_t n) const { return n == 0 ? 0 : step + 2 * n + partial(n); }
};

// The tile that StepCost charges partial tiles on: the step GEMM's, but at most 8 rows. AVX-512's
// tiles hold 12 rows since 2026-12-07, yet the cuts that tile 8 gives stayed faster: uni B = 32,
// lengths 90-100, inference, 16 + 16 rows against tile 12's 15 + 17 (8 + 7 and 12 + 5 rows),
// nn.LSTM padded over fastlstm 0.963-0.969 against 0.949-0.951 at H = 512 and 0.975-0.981
// against 0.958-0.959 at H = 256 (2 runs, 15 interleaved calls; training level).
inline int64_t partition_tile_rows() { return std::min<int64_t>(step_gemm_tile_rows(), 8); }

// What adding row b (lengths descending) to the group of rows [a, b) adds to its cost: that row
// is the (b - a + 1)-th active row of each of its length[b] steps, and no row of the group is
// active at a step where it is not.
inline int64_t added_row_cost(const StepCost& cost, const IndexList& length, int64_t a,
                              int64_t b) {
  return length[b] * (cost(b - a + 1) - cost(b - a));
}

// Cuts rows [0, B) into at most `groups` contiguous groups whose largest cost is as small as
// possible (binary search on that cost; greedy cuts are optimal for contiguous groups since a
// group's cost grows with b and shrinks with a: StepCost grows with its rows). Returns the cut
// points [0, ..., B].
inline std::vector<int64_t> balanced_cuts(const IndexList& length, int64_t groups,
                                          const StepCost& cost) {
  const int64_t B = static_cast<int64_t>(length.size());
  const auto cuts_for = [&](int64_t limit) {
    std::vector<int64_t> cuts{0};
    int64_t a = 0;
    while (a < B) {
      int64_t sum = added_row_cost(cost, length, a, a), b = a + 1;  // at least one row
      while (b < B && sum + added_row_cost(cost, length, a, b) <= limit)
        sum += added_row_cost(cost, length, a, b++);
      cuts.push_back(b);
      a = b;
    }
    return cuts;
  };
  int64_t lo = 0, hi = 0;
  for (int64_t b = 0; b < B; ++b) hi += added_row_cost(cost, length, 0, b);
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (static_cast<int64_t>(cuts_for(mid).size()) - 1 <= groups)
      hi = mid;
    else
      lo = mid + 1;
  }
  return cuts_for(hi);
}

// The groups of a layer with D directions over the sorted lengths (descending), for `threads`
// threads. Rows of length 0 join no group (they run no step).
inline std::vector<RowGroup> plan_row_groups(const IndexList& length, int64_t D, int64_t threads,
                                             Partition how, const StepCost& cost) {
  int64_t active = 0;
  while (active < static_cast<int64_t>(length.size()) && length[active] > 0) ++active;
  const int64_t per_dir =
      how == Partition::rows ? std::clamp<int64_t>(threads / D, 1, std::max<int64_t>(active, 1))
                             : 1;
  std::vector<RowGroup> groups;
  if (per_dir == 1) {
    for (int64_t dir = 0; dir < D; ++dir) groups.push_back({dir, 0, active});
    return groups;
  }
  const IndexList lens(length.begin(), length.begin() + active);
  const std::vector<int64_t> cuts = balanced_cuts(lens, per_dir, cost);
  for (int64_t dir = 0; dir < D; ++dir)
    for (size_t k = 0; k + 1 < cuts.size(); ++k) groups.push_back({dir, cuts[k], cuts[k + 1]});
  return groups;
}

// One core's L2 cache in bytes (sysconf where the C library says, else 1 MiB).
inline int64_t l2_bytes_per_core() {
  static const int64_t bytes = [] {
#if defined(_SC_LEVEL2_CACHE_SIZE)
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (v > 0) return static_cast<int64_t>(v);
#endif
    return int64_t{1} << 20;
  }();
  return bytes;
}

// Active rows per thread of a direction up to which the steps partition is the default.
constexpr int64_t kStepsRowsPerThread = 2;

// The steps partition by default where it measured faster (docs/PERFORMANCE.md, 2-core Xeon,
// H = 512, B = 2 and 4: 1.35-1.80x idle, 1.05-1.12x beside 2 busy processes, 0.75-1.08x beside
// one): float32 with fastlstm's own step GEMM (which splits W's columns), one direction's W_hh
// larger than a core's L2 (under the rows partition every thread streams all of it from L3 at
// every step; under steps each streams its share), at least 2 threads per direction, and at
// most kStepsRowsPerThread active rows per thread (beyond, each pass of W serves enough rows,
// and the rows partition's input projection runs on every thread). Else rows.
inline Partition choose_partition(const LayerDims& d, const Schedule& s, int64_t threads,
                                  int64_t elem_bytes, int64_t l2_bytes = l2_bytes_per_core()) {
  if (const char* forced = forced_partition()) {
    return std::strcmp(forced, "rows") == 0 ? Partition::rows : Partition::steps;
  }
  const int64_t active = static_cast<int64_t>(
      std::count_if(s.length.begin(), s.length.end(), [](int64_t n) { return n > 0; }));
  const int64_t per_dir = threads / d.D;
  const int64_t w_hh_bytes = 4 * d.H * d.Hout * elem_bytes;
  const bool steps = elem_bytes == 4 && step_gemm_choice() != StepGemm::blas && per_dir >= 2 &&
                     w_hh_bytes > l2_bytes && active <= kStepsRowsPerThread * per_dir;
  return steps ? Partition::steps : Partition::rows;
}

// How many groups the last CPU layer call ran (for tests: _cpu_last_row_groups).
inline std::atomic<int64_t>& last_row_group_count() {
  static std::atomic<int64_t> count{0};
  return count;
}
// Wall time of every CPU layer call's time loops so far in this process, in nanoseconds (for
// the benchmark's roofline: _cpu_loop_seconds).
inline std::atomic<int64_t>& loop_nanoseconds() {
  static std::atomic<int64_t> ns{0};
  return ns;
}

// A layer of fewer multiply-adds than this (its forward's) runs on the calling thread alone:
// there a parallel region saves a few µs at best, and beside busy processes it costs
// milliseconds, as every call waits for a descheduled thread (2-core Xeon beside a test suite,
// 300 calls of 1.5 K-1.3 M multiply-adds: 0.18-0.22 ms median and p90 on one thread, 0.22-0.27
// ms median and 1.1-8.6 ms p90 on two). A forced partition (FASTLSTM_CPU_PARTITION) keeps
// torch's thread count.
constexpr int64_t kParallelMinMacs = int64_t(1) << 22;
inline int64_t layer_macs(const LayerDims& d, int64_t tokens) {
  return tokens * d.D * 4 * d.H * (d.I + d.Hout);
}
inline int64_t layer_macs(const LayerDims& d, const Schedule& s) { return layer_macs(d, s.total); }

// The threads a layer call spreads its groups over: torch's intra-op thread count, or 1 for a
// small layer (kParallelMinMacs) and for a serial call (contention.h).
inline int64_t layer_threads(const LayerDims& d, const Schedule& s) {
  if (serial_call()) return 1;
  const int64_t threads = std::max<int64_t>(1, torch::stable::get_num_threads());
  return forced_partition() == nullptr && layer_macs(d, s) < kParallelMinMacs ? 1 : threads;
}

// The groups this layer call runs on `threads` threads (layer_threads), and how they were cut.
inline std::vector<RowGroup> layer_row_groups(const LayerDims& d, const Schedule& s,
                                              int64_t threads, int64_t elem_bytes,
                                              Partition* how = nullptr) {
  const Partition chosen = choose_partition(d, s, threads, elem_bytes);
  if (how != nullptr) *how = chosen;
  // Tiles of rows where the float32 loops take fastlstm's own step GEMM.
  const bool own_tiles = elem_bytes == 4 && step_gemm_choice() != StepGemm::blas;
  const StepCost cost{own_tiles ? partition_tile_rows() : 0};
  std::vector<RowGroup> groups = plan_row_groups(s.length, d.D, threads, chosen, cost);
  last_row_group_count() = static_cast<int64_t>(groups.size());
  return groups;
}

}  // namespace fastlstm::cpu
