#include "schedule.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <cstring>
#include <numeric>

namespace fastlstm::cpu {

Schedule make_schedule(const at::Tensor& lengths, int64_t T) {
  Schedule s;
  s.T = T;
  s.B = lengths.numel();
  const int64_t* len = lengths.data_ptr<int64_t>();
  s.order.resize(s.B);
  std::iota(s.order.begin(), s.order.end(), 0);
  std::stable_sort(s.order.begin(), s.order.end(),
                   [&](int64_t a, int64_t b) { return len[a] > len[b]; });
  s.length.resize(s.B);
  for (int64_t j = 0; j < s.B; ++j) s.length[j] = len[s.order[j]];

  // batch_sizes[t] = #{b : len[b] > t}, by counting lengths then a suffix sum.
  std::vector<int64_t> count(T + 1, 0);
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
  return s;
}

namespace {

// Calls f(t, j, packed_row) for every valid token, split over ATen's threads by step.
template <typename F>
void for_each_token(const Schedule& s, const F& f) {
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s.B));
  at::parallel_for(0, s.T, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t j = 0; j < s.batch_sizes[t]; ++j) f(t, j, s.offsets[t] + j);
  });
}

}  // namespace

void gather_tokens(const Schedule& s, const at::Tensor& src, int64_t col0, at::Tensor& dst) {
  const int64_t C = dst.size(1);
  const int64_t es = src.element_size();
  const int64_t st = src.stride(0) * es, sb = src.stride(1) * es;
  const char* sp = static_cast<const char*>(src.const_data_ptr()) + col0 * es;
  char* dp = static_cast<char*>(dst.data_ptr());
  for_each_token(s, [&](int64_t t, int64_t j, int64_t row) {
    std::memcpy(dp + row * C * es, sp + t * st + s.order[j] * sb, C * es);
  });
}

void scatter_tokens(const Schedule& s, const at::Tensor& src, int64_t col0, at::Tensor& dst) {
  const int64_t C = src.size(1);
  const int64_t es = src.element_size();
  const int64_t st = dst.stride(0) * es, sb = dst.stride(1) * es;
  const char* sp = static_cast<const char*>(src.const_data_ptr());
  char* dp = static_cast<char*>(dst.data_ptr()) + col0 * es;
  for_each_token(s, [&](int64_t t, int64_t j, int64_t row) {
    std::memcpy(dp + t * st + s.order[j] * sb, sp + row * C * es, C * es);
  });
}

void zero_padding(const Schedule& s, at::Tensor& dst) {
  const int64_t es = dst.element_size();
  const int64_t row_bytes = dst.size(2) * es;
  char* dp = static_cast<char*>(dst.data_ptr());
  at::parallel_for(0, s.T, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t j = s.batch_sizes[t]; j < s.B; ++j)
        std::memset(dp + (t * s.B + s.order[j]) * row_bytes, 0, row_bytes);
  });
}

at::Tensor sort_rows(const Schedule& s, const at::Tensor& src) {
  at::Tensor dst = at::empty({s.B, src.size(1)}, src.options());
  const int64_t es = src.element_size(), row = src.size(1) * es, sb = src.stride(0) * es;
  const char* sp = static_cast<const char*>(src.const_data_ptr());
  char* dp = static_cast<char*>(dst.data_ptr());
  for (int64_t j = 0; j < s.B; ++j) std::memcpy(dp + j * row, sp + s.order[j] * sb, row);
  return dst;
}

at::Tensor unsort_rows(const Schedule& s, const at::Tensor& src) {
  at::Tensor dst = at::empty_like(src);
  const int64_t row = src.size(1) * src.element_size();
  const char* sp = static_cast<const char*>(src.const_data_ptr());
  char* dp = static_cast<char*>(dst.data_ptr());
  for (int64_t j = 0; j < s.B; ++j) std::memcpy(dp + s.order[j] * row, sp + j * row, row);
  return dst;
}

}  // namespace fastlstm::cpu
