// The packed time schedule of a batch: which rows are active at each step.
//
// Sequences are sorted by length, descending (stable), so that at step t the active
// sequences are the first batch_sizes[t] sorted rows, the layout of a PackedSequence.
// Packed row offsets[t] + j holds sorted sequence j at step t.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace fastlstm::cpu {

struct Schedule {
  int64_t T = 0, B = 0;
  int64_t total = 0;                 // N = sum(lengths): valid tokens
  std::vector<int64_t> order;        // [B] original batch index of sorted row j
  std::vector<int64_t> length;       // [B] length of sorted row j (descending)
  std::vector<int64_t> batch_sizes;  // [T] active rows at step t
  std::vector<int64_t> offsets;      // [T+1] first packed row of step t

  // Step that runs before step t in a direction's time order, or -1 at its start.
  int64_t prev_step(int64_t t, bool reverse) const { return reverse ? (t + 1 < T ? t + 1 : -1) : t - 1; }
  // Rows of step t that continue from prev_step(t); rows [n_continuing, batch_sizes[t]) start
  // from h0/c0 there (every row at t = 0 going forward; rows with len-1 == t going in reverse).
  int64_t n_continuing(int64_t t, bool reverse) const {
    const int64_t p = prev_step(t, reverse);
    return p < 0 ? 0 : std::min(batch_sizes[t], batch_sizes[p]);
  }
};

// lengths: CPU int64 [B], values already checked to lie in [0, T].
Schedule make_schedule(const at::Tensor& lengths, int64_t T);

// dst[N, C] (contiguous) <- src[t, order[j], col0 : col0 + C] for every valid token.
// src is [T, B, *] with any strides, the last one 1.
void gather_tokens(const Schedule& s, const at::Tensor& src, int64_t col0, at::Tensor& dst);

// dst[t, order[j], col0 : col0 + C] <- src[N, C]; dst [T, B, *] contiguous. Padding untouched.
void scatter_tokens(const Schedule& s, const at::Tensor& src, int64_t col0, at::Tensor& dst);

// dst[t, order[j], :] <- 0 for every padding position (t >= length). dst [T, B, *] contiguous.
void zero_padding(const Schedule& s, at::Tensor& dst);

// Rows in sorted order: dst[j] <- src[order[j]] for src [B, C] (any strides, last one 1).
at::Tensor sort_rows(const Schedule& s, const at::Tensor& src);
// Back to batch order: dst[order[j]] <- src[j]. src [B, C] contiguous.
at::Tensor unsort_rows(const Schedule& s, const at::Tensor& src);

}  // namespace fastlstm::cpu
