// Shapes of one LSTM layer as the fastlstm ops see it, shared by the CPU and CUDA code.
//
// Every op works on one layer, all of its directions at once. Tensors at the op boundary:
//   input    [T, B, I]        padded, time-major (any strides; the last dim contiguous is fastest)
//   lengths  [B]    int64     per-sequence lengths, 0 <= len <= T, any order
//   h0       [D, B, Hout]     c0 [D, B, H]
//   weights  per direction: w_ih [4H, I], w_hh [4H, Hout], (b_ih [4H], b_hh [4H]), (w_hr [Hout, H])
//   output   [T, B, D*Hout]   exactly 0 past each length
//   h_n      [D, B, Hout]     c_n [D, B, H]   taken at each sequence's own last step
//   reserve  uint8 [D * reserve_bytes_per_dir(N)]  what backward needs (N = sum(lengths));
//                              layout below, opaque to Python
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FASTLSTM_HOST_DEVICE __host__ __device__
#else
#define FASTLSTM_HOST_DEVICE
#endif

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

  // Reserve of one direction, in bytes: four row blocks of `rows` = N = sum(lengths) rows
  // each, one per valid token, in packed order (time-major, batch sorted by length,
  // descending). acc is the accumulation type (float for half/bfloat16, else T):
  //   cell  [N, H]    acc  c_t
  //   gates [N, 4H]   acc  activated i, f, g, o
  //   out   [N, Hout] T    the direction's output h_t (after projection)
  //   hraw  [N, H]    T    h_t before projection (only when has_proj)
  // Sized by valid tokens, not T*B, so that a padded batch costs no reserve for its padding,
  // and rounded up to 64 bytes so that every block stays aligned. A padded reserve (the
  // forward's padded_reserve, for torch.compile graphs, whose shapes cannot depend on the
  // values of lengths) has rows = T*B, its rows past N zero. fastlstm/_ops.py mirrors this.
  int64_t reserve_used_bytes_per_dir(int64_t rows, int64_t t_size, int64_t acc_size) const {
    return rows * (5 * H * acc_size + (Hout + (has_proj ? H : 0)) * t_size);
  }
  int64_t reserve_bytes_per_dir(int64_t rows, int64_t t_size, int64_t acc_size) const {
    return (reserve_used_bytes_per_dir(rows, t_size, acc_size) + 63) / 64 * 64;
  }
};

// Where each active row's previous cell state lives at a step: rows j < n_continuing read
// continuing + j*H (the previous step's packed rows), the others start + j*H (c0, sorted).
template <typename Acc>
struct PrevCell {
  const Acc* continuing;
  const Acc* start;
  int64_t n_continuing;
  FASTLSTM_HOST_DEVICE const Acc* row(int64_t j, int64_t H) const {
    return j < n_continuing ? continuing + j * H : start + j * H;
  }
};

// Pointers to one direction's weights (see weights_per_dir for the order).
template <typename T>
struct DirectionWeights {
  const T* w_ih;  // [4H, I]
  const T* w_hh;  // [4H, Hout]
  const T* b_ih;  // [4H] or nullptr
  const T* b_hh;  // [4H] or nullptr
  const T* w_hr;  // [Hout, H] or nullptr
  // w_ih, w_hh stored transposed, W^T row-major ([I, 4H], [Hout, 4H]): a transposed view the
  // caller passed (layer_io.h, transposed_weight; Keras's kernel layout), read in place, with
  // its gradient returned in the same layout. ld_*: the row stride of what is stored.
  bool ih_t = false, hh_t = false;
  int64_t ld_ih = 0, ld_hh = 0;
};

// Row blocks of one direction's reserve (layout in LayerDims::reserve_bytes_per_dir).
template <typename T, typename Acc>
struct ReserveBlocks {
  Acc* cell;   // [N, H]
  Acc* gates;  // [N, 4H]
  T* out;      // [N, Hout]
  T* hraw;     // [N, H] or nullptr
};

// What the time loop of one direction works on, for a backend that runs the loop whole
// (forward_recurrence / backward_recurrence): rows are packed, in schedule order.
template <typename T, typename Acc>
struct Recurrence {
  const T* w_hh;     // [4H, Hout]
  const T* w_hr;     // [Hout, H] or nullptr (no projection)
  const Acc* bias;   // [4H] b_ih + b_hh, or zeros (forward only)
  const T* h0;       // [B, Hout] sorted rows
  const Acc* c0;     // [B, H] sorted rows
  ReserveBlocks<T, Acc> r;
  // Backward only:
  const T* dy;       // [N, Hout] the layer output's gradient, packed, or nullptr
  Acc* dh;           // [B, Hout] in: grad h_n per sorted row; out: grad h0
  Acc* dc;           // [B, H]    in: grad c_n; out: grad c0
  T* dgates;         // [N, 4H] out
  T* dout;           // [N, Hout] out, projection only: each step's total output gradient
};

// rows: N, the valid tokens the reserve was sized for.
template <typename T, typename Acc>
ReserveBlocks<T, Acc> reserve_blocks(const LayerDims& d, int64_t rows, void* reserve,
                                     int64_t dir) {
  char* base = static_cast<char*>(reserve) +
               dir * d.reserve_bytes_per_dir(rows, sizeof(T), sizeof(Acc));
  ReserveBlocks<T, Acc> r{};
  r.cell = reinterpret_cast<Acc*>(base);
  r.gates = r.cell + rows * d.H;
  r.out = reinterpret_cast<T*>(r.gates + rows * 4 * d.H);
  r.hraw = d.has_proj ? r.out + rows * d.Hout : nullptr;
  return r;
}

}  // namespace fastlstm
