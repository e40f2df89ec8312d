// The packed time schedule of a batch, built on the host: which rows are active at each step,
// and the row index lists that move data between the padded and the packed layouts.
//
// Sequences are sorted by length, descending (stable), so that at step t the active
// sequences are the first batch_sizes[t] sorted rows, the layout of a PackedSequence.
// Packed row offsets[t] + j holds sorted sequence j at step t.
#pragma once

#include <algorithm>
#include <vector>

#include "torch_api.h"

namespace fastlstm {

using IndexList = std::vector<int64_t>;

// Pairs of row indices: copy row src[k] of one buffer to row dst[k] of another.
struct RowMap {
  IndexList dst, src;
  int64_t size() const { return static_cast<int64_t>(dst.size()); }
};

struct Schedule {
  int64_t T = 0, B = 0;
  int64_t total = 0;                 // N = sum(lengths): valid tokens
  IndexList order;                   // [B] original batch index of sorted row j
  IndexList length;                  // [B] length of sorted row j (descending)
  IndexList batch_sizes;             // [T] active rows at step t
  IndexList offsets;                 // [T+1] first packed row of step t
  IndexList token_tb;                // [N] t*B + b (b in batch order) of packed row r
  IndexList padding_tb;              // [T*B - N] t*B + b of every padding position

  // Step that runs before step t in a direction's time order, or -1 at its start.
  int64_t prev_step(int64_t t, bool reverse) const {
    return reverse ? (t + 1 < T ? t + 1 : -1) : t - 1;
  }
  // Rows of step t that continue from prev_step(t); rows [n_continuing, batch_sizes[t]) start
  // from h0/c0 there (every row at t = 0 going forward; rows with len-1 == t going in reverse).
  int64_t n_continuing(int64_t t, bool reverse) const {
    const int64_t p = prev_step(t, reverse);
    return p < 0 ? 0 : std::min(batch_sizes[t], batch_sizes[p]);
  }

  // What the time loop needs at step t: the active rows, where they start in the packed
  // layout, and where the rows that continue keep their previous state.
  struct Step {
    int64_t rows;          // batch_sizes[t]
    int64_t offset;        // offsets[t]
    int64_t n_continuing;  // n_continuing(t, reverse)
    int64_t prev_offset;   // offsets[prev_step(t)], or 0 at the direction's start
  };
  Step step(int64_t t, bool reverse) const {
    const int64_t p = prev_step(t, reverse);
    return {batch_sizes[t], offsets[t], n_continuing(t, reverse), p < 0 ? 0 : offsets[p]};
  }
  // The part of step t that sorted rows [r0, r1) run (one thread's group of rows): the same
  // fields, with its row j at sorted row r0 + j. rows is 0 where none of them is active.
  Step group_step(int64_t t, bool reverse, int64_t r0, int64_t r1) const {
    const Step s = step(t, reverse);
    const int64_t rows = std::clamp<int64_t>(std::min(r1, s.rows) - r0, 0, r1 - r0);
    const int64_t nc = std::clamp<int64_t>(s.n_continuing - r0, 0, rows);
    return {rows, s.offset + r0, nc, s.prev_offset + r0};
  }

  // Element offsets of every valid token's row in a [T, B, *] tensor with these strides.
  IndexList token_offsets(int64_t stride_t, int64_t stride_b) const;
  // Scatters into a [T, B, *] tensor with these strides, its rows in the order of its memory.
  // Batch-major (stride_t < stride_b, a batch-first caller's layout): sequence by sequence, so
  // that consecutive rows land next to each other, not T rows apart (row by row in packed
  // order, each write went to another page: the bidirectional forward took 0.2-0.8 ms longer
  // batch-major at B = 32, T = 64, H = 128, 2-core Xeon; in memory order, level).
  //   token_scatter: every valid token, packed row src[k] -> element offset dst[k];
  //   padding_offsets: the element offset of every padding position (t >= its length).
  RowMap token_scatter(int64_t stride_t, int64_t stride_b) const;
  IndexList padding_offsets(int64_t stride_t, int64_t stride_b) const;
  // Packed rows -> the rows their h_prev comes from: `from_out` indexes the direction's packed
  // outputs, `from_start` indexes the sorted h0 rows.
  void previous_rows(bool reverse, RowMap& from_out, RowMap& from_start) const;
  // Batch rows b -> the packed row of their last step (`from_out`), or their sorted h0 row
  // when the length is 0 (`from_start`).
  void final_rows(bool reverse, RowMap& from_out, RowMap& from_start) const;
};

// lengths: CPU int64 [B], values already checked to lie in [0, T].
Schedule make_schedule(const Tensor& lengths, int64_t T);

// lengths: integer [B] on any device (a GPU tensor is copied to the host, a synchronisation).
// Checks every value lies in [0, T], then builds the schedule.
Schedule schedule_from_lengths(const Tensor& lengths, int64_t T);

}  // namespace fastlstm
