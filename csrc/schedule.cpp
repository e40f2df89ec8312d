#include "schedule.h"

#include <numeric>

#include "checks.h"

namespace fastlstm {

Schedule make_schedule(const Tensor& lengths, int64_t T) {
  Schedule s;
  s.T = T;
  s.B = lengths.numel();
  const int64_t* len = cptr<int64_t>(lengths);
  s.order.resize(s.B);
  std::iota(s.order.begin(), s.order.end(), 0);
  std::stable_sort(s.order.begin(), s.order.end(),
                   [&](int64_t a, int64_t b) { return len[a] > len[b]; });
  s.length.resize(s.B);
  for (int64_t j = 0; j < s.B; ++j) s.length[j] = len[s.order[j]];

  // batch_sizes[t] = #{b : len[b] > t}, by counting lengths then a suffix sum.
  IndexList count(T + 1, 0);
  for (int64_t j = 0; j < s.B; ++j) count[s.length[j]]++;
  s.batch_sizes.assign(T, 0);
  int64_t active = 0;
  for (int64_t t = T - 1; t >= 0; --t) {
    active += count[t + 1];
    s.batch_sizes[t] = active;
  }
  s.offsets.assign(T + 1, 0);
  for (int64_t t = 0; t < T; ++t) s.offsets[t + 1] = s.offsets[t] + s.batch_sizes[t];
  s.total = s.offsets[T];

  s.token_tb.resize(s.total);
  s.padding_tb.reserve(T * s.B - s.total);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < s.B; ++j) {
      const int64_t tb = t * s.B + s.order[j];
      if (j < s.batch_sizes[t])
        s.token_tb[s.offsets[t] + j] = tb;
      else
        s.padding_tb.push_back(tb);
    }
  }
  return s;
}

Schedule schedule_from_lengths(const Tensor& lengths, int64_t T) {
  const Tensor lengths_cpu =
      as_contiguous(torch::stable::to(lengths, kLong, std::nullopt,
                                      torch::stable::Device(torch::stable::DeviceType::CPU)));
  check_lengths_cpu(lengths_cpu, T);
  return make_schedule(lengths_cpu, T);
}

IndexList Schedule::token_offsets(int64_t stride_t, int64_t stride_b) const {
  IndexList out(total);
  for (int64_t r = 0; r < total; ++r) out[r] = (token_tb[r] / B) * stride_t + (token_tb[r] % B) * stride_b;
  return out;
}

void Schedule::previous_rows(bool reverse, RowMap& from_out, RowMap& from_start) const {
  for (int64_t t = 0; t < T; ++t) {
    const int64_t p = prev_step(t, reverse), nc = n_continuing(t, reverse);
    for (int64_t j = 0; j < batch_sizes[t]; ++j) {
      RowMap& m = j < nc ? from_out : from_start;
      m.dst.push_back(offsets[t] + j);
      m.src.push_back(j < nc ? offsets[p] + j : j);
    }
  }
}

void Schedule::final_rows(bool reverse, RowMap& from_out, RowMap& from_start) const {
  for (int64_t j = 0; j < B; ++j) {
    const int64_t len = length[j];
    RowMap& m = len > 0 ? from_out : from_start;
    m.dst.push_back(order[j]);
    m.src.push_back(len > 0 ? offsets[reverse ? 0 : len - 1] + j : j);
  }
}

}  // namespace fastlstm
