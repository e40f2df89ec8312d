// A block's small matrix product on tensor cores, for the persistent kernels in Half and
// BFloat16, and in float where TF32 is allowed: out(j, n) <- sum_k A(j, k) B(n, k) over
// j < rows, n < cols, k < K, in float, with fp32 accumulation. The warps of the block share
// the 16 x 8 output tiles; each warp walks K in steps of 16 with simt::mma_m16n8k16 (steps of 8
// with simt::mma_m16n8k8_tf32 for float). Edges (rows, cols or K not multiples of the tile) are
// padded with zeros in the fragments, never read from memory.
//   a_row(j):   row j of A (K contiguous values of T): a pointer, or shared memory's accessor
//   b_row(n):   row n of B (K contiguous values of T), likewise
// 16-bit operands are loaded in pairs (simt::load_pair): one 32-bit load per mma register where
// the pair is aligned and inside K.
//   store(j, n, v): receives each finished output once
#pragma once

#include <type_traits>

#include "../simt/simt.h"
#include "index_math.cuh"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

template <typename T, typename ARow, typename BRow, typename Store>
__device__ __forceinline__ void block_mma_products(int64_t rows, int64_t cols, int64_t K,
                                                   const ARow& a_row, const BRow& b_row,
                                                   const Store& store) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int group = lane / 4, pos = lane % 4;
  const int64_t row_tiles = (rows + 15) / 16, col_tiles = (cols + 7) / 8;
  const T zero = T(0.0f);
  // 32-bit loop counters here and over k: with 64-bit ones nvcc computes the loops' trip counts
  // through its 64-bit division subroutine (the step, warps, is known only at run time).
  const int tiles = static_cast<int>(row_tiles * col_tiles), K32 = static_cast<int>(K);
  for (int tile = warp; tile < tiles; tile += warps) {
    const int64_t r0 = div32(tile, col_tiles) * 16 + group, r1 = r0 + 8;
    const int64_t c0 = mod32(tile, col_tiles) * 8;
    const int64_t n = c0 + group;  // this lane's column of B
    const bool has0 = r0 < rows, has1 = r1 < rows;
    const auto a0 = a_row(has0 ? r0 : 0), a1 = a_row(has1 ? r1 : 0);
    const auto a_at = [&](bool has, const auto& a, int k) {
      return has && k < K32 ? static_cast<T>(a[k]) : zero;
    };
    const auto bn = b_row(n < cols ? n : 0);
    const auto b_at = [&](int k) { return n < cols && k < K32 ? static_cast<T>(bn[k]) : zero; };
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if constexpr (std::is_same_v<T, float>) {
      // TF32: K in steps of 8, each operand rounded to TF32.
      for (int k0 = 0; k0 < K32; k0 += 8) {
        const int k = k0 + pos;
        const uint32_t a[4] = {simt::tf32_bits(a_at(has0, a0, k)),
                               simt::tf32_bits(a_at(has1, a1, k)),
                               simt::tf32_bits(a_at(has0, a0, k + 4)),
                               simt::tf32_bits(a_at(has1, a1, k + 4))};
        const uint32_t bf[2] = {simt::tf32_bits(b_at(k)), simt::tf32_bits(b_at(k + 4))};
        simt::mma_m16n8k8_tf32(d, a, bf);
      }
    } else {
      // k is even: a pair inside K is one load, edges are padded with zeros element by element.
      const auto a_pair = [&](bool has, const auto& a, int k) -> uint32_t {
        if (has && k + 1 < K32) return simt::load_pair(a, k);
        return simt::pack_pair(a_at(has, a, k), a_at(has, a, k + 1));
      };
      const auto b_pair = [&](int k) -> uint32_t {
        if (n < cols && k + 1 < K32) return simt::load_pair(bn, k);
        return simt::pack_pair(b_at(k), b_at(k + 1));
      };
      for (int k0 = 0; k0 < K32; k0 += 16) {
        const int k = k0 + 2 * pos;
        const uint32_t a[4] = {a_pair(has0, a0, k), a_pair(has1, a1, k), a_pair(has0, a0, k + 8),
                               a_pair(has1, a1, k + 8)};
        const uint32_t bf[2] = {b_pair(k), b_pair(k + 8)};
        simt::mma_m16n8k16<T>(d, a, bf);
      }
    }
    for (int i = 0; i < 4; ++i) {
      const int64_t j = i < 2 ? r0 : r1, col = c0 + 2 * pos + (i & 1);
      if (j < rows && col < cols) store(j, col, d[i]);
    }
  }
}

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
