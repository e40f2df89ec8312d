// Shapes of one LSTM layer as the fastlstm ops see it, shared by the CPU and CUDA code.
//
// Every op works on one layer, all of its directions at once. Tensors at the op boundary:
//   input    [T, B, I]        padded, time-major (any strides; the last dim contiguous is fastest)
//   lengths  [B]    int64     per-sequence lengths, 0 <= len <= T, any order
//   h0       [D, B, Hout]     c0 [D, B, H]
//   weights  per direction: w_ih [4H, I], w_hh [4H, Hout], (b_ih [4H], b_hh [4H]), (w_hr [Hout, H])
//   output   [T, B, D*Hout]   exactly 0 past each length
//   h_n      [D, B, Hout]     c_n [D, B, H]   taken at each sequence's own last step
//   reserve  [D * reserve_per_dir]  what backward needs; layout below, opaque to Python
#pragma once

#include <cstdint>

namespace fastlstm {

struct LayerDims {
  int64_t T = 0;     // padded time steps
  int64_t B = 0;     // batch size
  int64_t I = 0;     // input features
  int64_t H = 0;     // hidden (cell) size
  int64_t Hout = 0;  // output size: proj_size when projecting, else H
  int64_t D = 1;     // directions: 1 or 2
  bool has_biases = true;
  bool has_proj = false;

  // Tensors per direction in `weights`, in nn.LSTM's order: w_ih, w_hh, [b_ih, b_hh], [w_hr].
  int64_t weights_per_dir() const { return 2 + (has_biases ? 2 : 0) + (has_proj ? 1 : 0); }

  // Reserve of one direction: four row blocks of T*B rows each, holding valid tokens in packed
  // order (time-major, batch sorted by length, descending) in their first N = sum(lengths) rows:
  //   gates [T*B, 4H]  activated i, f, g, o
  //   cell  [T*B, H]   c_t
  //   out   [T*B, Hout] the direction's output h_t (after projection)
  //   hraw  [T*B, H]   h_t before projection (only when has_proj)
  // Sized by T*B, not N, so that shapes never depend on the values of lengths.
  // fastlstm/_ops.py mirrors this formula in the fake (meta) implementation.
  int64_t reserve_row_width() const { return 4 * H + H + Hout + (has_proj ? H : 0); }
  int64_t reserve_per_dir() const { return T * B * reserve_row_width(); }
};

}  // namespace fastlstm
