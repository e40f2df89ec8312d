// The persistent kernels' FMA products (float without TF32, and double), one warp per item:
// an item is R rows of activations x (R = 8, 4, 2 or 1) times C weight rows w (C = 4: a hidden
// unit's four gate rows; C = 1: one output unit), the lanes splitting the reduction length K.
//
// Each lane keeps R x C partial sums, so a weight value it loads from shared memory serves R
// rows, and an activation C weight rows. One transposing reduction then gives every total
// with R C - 1 + 5 - log2(R C) shuffles (16 for 4 x 4), where summing each total over the
// warp on its own would take 5 per total (80).
//
// R is chosen per step (rows_per_item): the largest that still gives every warp of the block
// an item, so that few rows do not leave warps idle.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../simt/simt.h"
#include "index_math.cuh"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

template <int N>
inline constexpr int kLog2 = N <= 1 ? 0 : 1 + kLog2<N / 2>;

// After warp_spread_sum<N>, lane l holds total number spread_index<N>(l); the lanes of one
// total are 32 / N consecutive ones, the first of them its leader.
template <int N>
__host__ __device__ __forceinline__ int spread_index(int lane) {
  return lane >> (5 - kLog2<N>);
}
template <int N>
__host__ __device__ __forceinline__ int spread_lane(int index) {
  return index << (5 - kLog2<N>);
}

// Stage `Stage` of warp_spread_sum and the ones after it: lanes `mask` apart pair up, the lower
// lane keeps the lower half of the values, the upper one the upper half, each adding its
// partner's. A template per stage, so that every index into v is a constant and v stays in
// registers (a loop over the stages left v in local memory: STL/LDL in the SASS).
template <int Stage, int N, typename Acc>
__device__ __forceinline__ void spread_stages(Acc (&v)[N], int lane) {
  if constexpr (Stage < kLog2<N>) {
    constexpr int half = N >> (Stage + 1), mask = 16 >> Stage;
    const bool upper = (lane & mask) != 0;
    FASTLSTM_UNROLL
    for (int i = 0; i < half; ++i) {
      const Acc send = upper ? v[i] : v[i + half];
      const Acc keep = upper ? v[i + half] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
    }
    spread_stages<Stage + 1>(v, lane);
  }
}

// v[i] summed over the warp's 32 lanes for i < N (a power of two, at most 32), returned in the
// lanes spread_index<N> names: log2 N halving stages, then plain butterflies over the lanes
// left (N - 1 + 5 - log2 N shuffles in all).
template <int N, typename Acc>
__device__ __forceinline__ Acc warp_spread_sum(Acc (&v)[N]) {
  static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0, "N: a power of two, at most 32");
  spread_stages<0>(v, static_cast<int>(threadIdx.x % 32));
  Acc total = v[0];
  for (int mask = 16 >> kLog2<N>; mask > 0; mask /= 2)
    total += __shfl_xor_sync(0xffffffffu, total, mask);
  return total;
}

// The R rows (or weight rows) of an item as arrays: pointers, or shared memory's accessor
// under emulation (which has no default constructor, hence the pack expansion).
template <typename X, int R>
struct RowArrays {
  X row[R];
};
template <int R, typename RowOf, int... I>
__device__ __forceinline__ auto row_arrays(const RowOf& row_of, int n,
                                           std::integer_sequence<int, I...>) {
  return RowArrays<decltype(row_of(0)), R>{{row_of(I < n ? I : 0)...}};
}

// This lane's share of an item: total number (r, c) of the R x C, and whether it writes it.
template <typename Acc>
struct ItemTotal {
  Acc total;
  int r, c;
  bool leader;
  int per_row, shift;  // C, and 5 - log2(R C)
  // The leader lane of total (r, c), for a shuffle that hands it to every lane.
  __device__ __forceinline__ int lane_of(int row, int col = 0) const {
    return (row * per_row + col) << shift;
  }
};

// sum_k x_row(r)[k] * w_row(c)[k] over k in [k_begin, k_end), for r < n (<= R) and c < C, in
// the lanes that spread_index<R C> names (number r * C + c). Rows r >= n are neither read nor
// summed.
template <int R, int C, typename Acc, typename T, typename XRow, typename WRow>
__device__ __forceinline__ ItemTotal<Acc> warp_rows_dot(const XRow& x_row, int n,
                                                        const WRow& w_row, int k_begin,
                                                        int k_end) {
  constexpr int N = R * C;
  const int lane = threadIdx.x % 32;
  const auto x = row_arrays<R>(x_row, n, std::make_integer_sequence<int, R>{});
  const auto w = row_arrays<C>(w_row, C, std::make_integer_sequence<int, C>{});
  Acc v[N];
  FASTLSTM_UNROLL
  for (int i = 0; i < N; ++i) v[i] = Acc(0);
  for (int k = k_begin + lane; k < k_end; k += 32) {
    Acc wk[C];
    FASTLSTM_UNROLL
    for (int c = 0; c < C; ++c) wk[c] = static_cast<Acc>(static_cast<T>(w.row[c][k]));
    FASTLSTM_UNROLL
    for (int r = 0; r < R; ++r) {
      if (r < n) {  // the same in every lane
        const Acc xk = static_cast<Acc>(static_cast<T>(x.row[r][k]));
        FASTLSTM_UNROLL
        for (int c = 0; c < C; ++c) v[r * C + c] += xk * wk[c];
      }
    }
  }
  const Acc total = warp_spread_sum<N>(v);
  const int i = spread_index<N>(lane);
  return {total, i / C, i % C, spread_lane<N>(i) == lane, C, 5 - kLog2<N>};
}

// Rows per item: the largest of 8, 4, 2, 1 that gives each of the block's warps an item.
__device__ __forceinline__ int rows_per_item(int64_t rows, int64_t cols, int warps) {
  for (int R = 8; R > 1; R /= 2)
    if (ceil_div32(rows, R) * cols >= warps) return R;
  return 1;
}

// Runs the items of rows [0, rows) x cols [0, cols) over the block's warps, each through
// warp_rows_dot<R, C>; use(j0, n, col, t) then sees, in every lane of the warp, the item's
// first row j0, its row count n and column col, and this lane's total t.
//   x_row(j): row j of the activations (K values); w_row(col, c): weight row c of column col.
//   scratch: shared memory for 32 values of Acc per warp (the persistent kernels' mma scratch).
// Where even items of one row leave warps idle (a step with 1 or 2 rows at most units), each
// item's K is split between warps / items warps, at least 64 values (two turns of the lanes)
// each; the warps of the later parts leave their totals in the scratch and the item's first
// warp adds them up. The call then holds two __syncthreads, so every thread of the block must
// make it (the split depends only on rows, cols, K and the block's size).
template <int C, typename Acc, typename T, typename XRow, typename WRow, typename Scratch,
          typename Use>
__device__ __forceinline__ void warp_dot_items(int64_t rows, int64_t cols, int64_t K,
                                               const XRow& x_row, const WRow& w_row,
                                               Scratch scratch, const Use& use) {
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int K32 = static_cast<int>(K);
  const auto run = [&](auto rows_const) {
    constexpr int R = decltype(rows_const)::value;
    const int items = ceil_div32(rows, R) * static_cast<int>(cols);
    const auto item_total = [&](int item, int k_begin, int k_end, auto&& then) {
      const int j0 = div32(item, cols) * R, col = mod32(item, cols);
      const int n = static_cast<int>(rows) - j0 < R ? static_cast<int>(rows) - j0 : R;
      ItemTotal<Acc> t = warp_rows_dot<R, C, Acc, T>(
          [&](int r) { return x_row(j0 + r); }, n, [&](int c) { return w_row(col, c); },
          k_begin, k_end);
      then(j0, n, col, t);
    };
    int splits = 1;
    if constexpr (R == 1) {
      const int by_k = ceil_div32(K, 64);
      if (items > 0 && items < warps) splits = warps / items < by_k ? warps / items : by_k;
    }
    if (splits <= 1) {
      for (int item = warp; item < items; item += warps) item_total(item, 0, K32, use);
      return;
    }
    // Warp w: item w % items, K part w / items (the warps past items x splits idle).
    const int item = warp % items, part = warp / items;
    const int per_part = ceil_div32(ceil_div32(K, 32), splits) * 32;
    const int k_begin = part * per_part;
    const int k_end = k_begin + per_part < K32 ? k_begin + per_part : K32;
    const int index = spread_index<R * C>(lane);
    if (part > 0 && part < splits) {
      item_total(item, k_begin, k_end, [&](int, int, int, const ItemTotal<Acc>& t) {
        if (t.leader) scratch[warp * 32 + index] = t.total;
      });
    }
    __syncthreads();
    if (part == 0) {
      item_total(item, k_begin, k_end, [&](int j0, int n, int col, ItemTotal<Acc>& t) {
        for (int other = 1; other < splits; ++other)
          t.total += scratch[(other * items + item) * 32 + index];
        use(j0, n, col, t);
      });
    }
    __syncthreads();  // the scratch is free for the next product
  };
  const int R = rows_per_item(rows, cols, warps);
  if (R == 8) {
    run(std::integral_constant<int, 8>{});
  } else if (R == 4) {
    run(std::integral_constant<int, 4>{});
  } else if (R == 2) {
    run(std::integral_constant<int, 2>{});
  } else {
    run(std::integral_constant<int, 1>{});
  }
}

// Lane `src`'s v in every lane (through Acc: float and double have shuffles).
template <typename T, typename Acc>
__device__ __forceinline__ T from_lane(T v, int src) {
  return static_cast<T>(__shfl_sync(0xffffffffu, static_cast<Acc>(v), src));
}

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
