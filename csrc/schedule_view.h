// Where the layer driver (csrc/layer_driver.h) reads its schedule: HostScheduleView serves a
// Schedule built on the host (csrc/schedule.h), its index lists uploaded per call;
// cuda::DeviceScheduleView (csrc/cuda/device_schedule.cuh) builds the same lists on the GPU from
// lengths that live there, with no device-to-host copy. Either way the driver sees device
// pointers and row counts only.
//
// Packed layout: packed row offsets[t] + j holds sorted sequence j at step t; buffers hold
// rows() packed rows: N = sum(lengths) on the host, or T * B on the device (where N is not
// known to the host; rows from N on are zero). An index list entry < 0 means "no row": copy_rows
// then skips that destination row, or writes zeros for that source row.
#pragma once

#include <deque>

#include "schedule.h"

namespace fastlstm {

// Row pairs for Backend::copy_rows: dst[k] <- src[k] for k < n (device pointers).
struct RowPairs {
  int64_t n = 0;
  const int64_t* dst = nullptr;
  const int64_t* src = nullptr;
};

template <typename Backend>
class HostScheduleView {
 public:
  using Context = typename Backend::Context;
  explicit HostScheduleView(const Schedule& s) : s_(s) {}

  int64_t rows() const { return s_.total; }
  bool has_tokens() const { return s_.total > 0; }
  // The schedule itself, for the driver's per-step loop (nullptr on the device).
  const Schedule* host() const { return &s_; }

  const int64_t* order(Context& ctx) const { return ctx.indices(s_.order); }
  const int64_t* active(Context& ctx) const { return ctx.indices(s_.batch_sizes); }
  const int64_t* offsets(Context& ctx) const { return ctx.indices(s_.offsets); }
  // [rows()] element offset of each packed row in a [T, B, *] tensor with these strides.
  const int64_t* token_offsets(Context& ctx, int64_t stride_t, int64_t stride_b) const {
    return ctx.indices(keep(s_.token_offsets(stride_t, stride_b)));
  }
  // Every valid token's packed row -> its row of a [T, B, *] tensor with these strides
  // (element offsets), in the order of that tensor's memory (Schedule::token_scatter).
  RowPairs token_scatter(Context& ctx, int64_t stride_t, int64_t stride_b) const {
    RowMap m = s_.token_scatter(stride_t, stride_b);
    return upload(ctx, m);
  }
  // Zeroes the padding rows of a [T, B, C] tensor with these strides (its last dim
  // contiguous), before valid rows land.
  template <typename T>
  void zero_padding(Context& ctx, T* dst, int64_t C, int64_t stride_t, int64_t stride_b) const {
    Backend::template zero_rows<T>(ctx, static_cast<int64_t>(s_.padding_tb.size()), C, dst, 1,
                                   ctx.indices(keep(s_.padding_offsets(stride_t, stride_b))));
  }
  // Batch row <- the packed row of its last step (from_out), or its sorted h0 row when its
  // length is 0 (from_start).
  void final_rows(Context& ctx, bool reverse, RowPairs& from_out, RowPairs& from_start) const {
    RowMap o, st;
    s_.final_rows(reverse, o, st);
    from_out = upload(ctx, o);
    from_start = upload(ctx, st);
  }
  // Packed row <- the packed row of its previous step (from_out), or its sorted h0 row where
  // it starts (from_start).
  void previous_rows(Context& ctx, bool reverse, RowPairs& from_out, RowPairs& from_start) const {
    RowMap o, st;
    s_.previous_rows(reverse, o, st);
    from_out = upload(ctx, o);
    from_start = upload(ctx, st);
  }

 private:
  // A list built here, kept as long as the view: a backend may hand out its memory itself
  // (the CPU's indices() does) rather than a copy.
  const IndexList& keep(IndexList v) const { return lists_.emplace_back(std::move(v)); }
  RowPairs upload(Context& ctx, RowMap& m) const {
    return {m.size(), ctx.indices(keep(std::move(m.dst))), ctx.indices(keep(std::move(m.src)))};
  }
  const Schedule& s_;
  mutable std::deque<IndexList> lists_;
};

}  // namespace fastlstm
