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

namespace {
// t*B + b positions -> element offsets t * stride_t + b * stride_b.
IndexList element_offsets(const IndexList& tb, int64_t B, int64_t stride_t, int64_t stride_b) {
  IndexList out(tb.size());
  for (size_t r = 0; r < tb.size(); ++r) out[r] = (tb[r] / B) * stride_t + (tb[r] % B) * stride_b;
  return out;
}

// [B] sorted row of batch row b (the inverse of order).
IndexList sorted_row_of(const IndexList& order) {
  IndexList rank(order.size());
  for (size_t j = 0; j < order.size(); ++j) rank[order[j]] = static_cast<int64_t>(j);
  return rank;
}
}  // namespace

IndexList Schedule::token_offsets(int64_t stride_t, int64_t stride_b) const {
  return element_offsets(token_tb, B, stride_t, stride_b);
}

RowMap Schedule::token_scatter(int64_t stride_t, int64_t stride_b) const {
  RowMap m;
  if (stride_t >= stride_b) {  // time-major: packed order is memory order
    m.dst = token_offsets(stride_t, stride_b);
    m.src.resize(total);
    for (int64_t r = 0; r < total; ++r) m.src[r] = r;
    return m;
  }
  m.dst.reserve(total);
  m.src.reserve(total);
  const IndexList rank = sorted_row_of(order);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t j = rank[b];
    for (int64_t t = 0; t < length[j]; ++t) {
      m.dst.push_back(t * stride_t + b * stride_b);
      m.src.push_back(offsets[t] + j);  // packed row of sorted row j at step t
    }
  }
  return m;
}

IndexList Schedule::padding_offsets(int64_t stride_t, int64_t stride_b) const {
  if (stride_t >= stride_b) return element_offsets(padding_tb, B, stride_t, stride_b);
  IndexList out;
  out.reserve(T * B - total);
  const IndexList rank = sorted_row_of(order);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = length[rank[b]]; t < T; ++t) out.push_back(t * stride_t + b * stride_b);
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
