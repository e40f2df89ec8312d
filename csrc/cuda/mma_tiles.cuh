// A block's small matrix product on tensor cores, for the persistent kernels in Half and
// BFloat16, and in float where TF32 is allowed: out(j, n) <- sum_k A(j, k) B(n, k) over
// j < rows, n < cols, k < K, in float, with fp32 accumulation. The warps of the block share
// the 16 x 8 output tiles; each warp walks K in steps of 16 with simt::mma_m16n8k16 (steps of 8
// with simt::mma_m16n8k8_tf32 for float), or a part of K where the tiles are fewer than the
// warps, so that every warp has work at small B. Edges (rows, cols or K not multiples of the
// tile) are padded with zeros in the fragments, never read from memory.
//   a_row(j):   row j of A (K contiguous values of T): a pointer, or shared memory's accessor
//   b_row(n):   row n of B (K contiguous values of T), likewise
// 16-bit operands are loaded in pairs (simt::load_pair): one 32-bit load per mma register where
// the pair is aligned and inside K. kAPadded / kBPadded: that operand's rows are in shared
// memory, 4-byte aligned and zero-padded from K up to K rounded up to the mma's k (a staged A,
// the cluster's exchange area, resident weights), so every register is one aligned 32-bit
// load with no K edge to test (no 16-bit shared-memory load in the kernel's SASS).
//   store(j, n, v): receives each finished output once
//
// staged_mma_products first copies A's rows (from global memory) into shared memory, as many at
// a time as the plan's stage holds (AStage), zero-padded, then multiplies them from there: each
// value of A crosses from L2 once per block and step, in coalesced 32-bit words, however many
// column tiles and warps read it.
#pragma once

#include <type_traits>

#include "../simt/simt.h"
#include "index_math.cuh"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

// Shared memory a block gives block_mma_products for its K split: 4 floats per thread.
__host__ __device__ constexpr int64_t mma_scratch_bytes(int64_t threads) {
  return threads * 4 * static_cast<int64_t>(sizeof(float));
}

// scratch: the block's mma_scratch_bytes of shared memory, as floats (16-byte aligned). Where
// the output tiles are fewer than the warps (few rows and columns: 1 tile at B <= 16 with 8
// gate columns), each tile's K is split between warps / tiles warps, which leave their partial
// fragments there; the first warp of each tile adds them up. The call then holds two
// __syncthreads, so every thread of the block must make it (the split depends only on rows,
// cols, K and the block's size, the same in every thread).
template <typename T, bool kAPadded = false, bool kBPadded = false, typename Scratch,
          typename ARow, typename BRow, typename Store>
__device__ __forceinline__ void block_mma_products(int64_t rows, int64_t cols, int64_t K,
                                                   Scratch scratch, const ARow& a_row,
                                                   const BRow& b_row, const Store& store) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int group = lane / 4, pos = lane % 4;
  const int64_t row_tiles = (rows + 15) / 16, col_tiles = (cols + 7) / 8;
  const T zero = T(0.0f);
  // 32-bit loop counters here and over k: with 64-bit ones nvcc computes the loops' trip counts
  // through its 64-bit division subroutine (the step, warps, is known only at run time).
  const int tiles = static_cast<int>(row_tiles * col_tiles), K32 = static_cast<int>(K);
  constexpr int kStep = std::is_same_v<T, float> ? 8 : 16;  // K per mma: TF32 k8, 16-bit k16
  // d += the tile's product over k in [k_begin, k_end) (multiples of kStep, or K).
  const auto tile_product = [&](int tile, int k_begin, int k_end, float (&d)[4]) {
    const int64_t r0 = div32(tile, col_tiles) * 16 + group, r1 = r0 + 8;
    const int64_t n = mod32(tile, col_tiles) * 8 + group;  // this lane's column of B
    const bool has0 = r0 < rows, has1 = r1 < rows;
    const auto a0 = a_row(has0 ? r0 : 0), a1 = a_row(has1 ? r1 : 0);
    // Past K: zero, from the padding where it is there, else without a load.
    const auto a_at = [&](bool has, const auto& a, int k) {
      return has && (kAPadded || k < K32) ? static_cast<T>(a[k]) : zero;
    };
    const auto bn = b_row(n < cols ? n : 0);
    const auto b_at = [&](int k) {
      return n < cols && (kBPadded || k < K32) ? static_cast<T>(bn[k]) : zero;
    };
    if constexpr (std::is_same_v<T, float>) {
      // TF32: K in steps of 8, each operand rounded to TF32.
      for (int k0 = k_begin; k0 < k_end; k0 += 8) {
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
        if constexpr (kAPadded) {
          return has ? simt::load_aligned_pair(a, k) : 0u;
        } else {
          if (has && k + 1 < K32) return simt::load_pair(a, k);
          return simt::pack_pair(a_at(has, a, k), a_at(has, a, k + 1));
        }
      };
      const auto b_pair = [&](int k) -> uint32_t {
        if constexpr (kBPadded) {
          return n < cols ? simt::load_aligned_pair(bn, k) : 0u;
        } else {
          if (n < cols && k + 1 < K32) return simt::load_pair(bn, k);
          return simt::pack_pair(b_at(k), b_at(k + 1));
        }
      };
      for (int k0 = k_begin; k0 < k_end; k0 += 16) {
        const int k = k0 + 2 * pos;
        const uint32_t a[4] = {a_pair(has0, a0, k), a_pair(has1, a1, k), a_pair(has0, a0, k + 8),
                               a_pair(has1, a1, k + 8)};
        const uint32_t bf[2] = {b_pair(k), b_pair(k + 8)};
        simt::mma_m16n8k16<T>(d, a, bf);
      }
    }
  };
  const auto finish = [&](int tile, const float (&d)[4]) {
    const int64_t r0 = div32(tile, col_tiles) * 16 + group, c0 = mod32(tile, col_tiles) * 8;
    for (int i = 0; i < 4; ++i) {
      const int64_t j = i < 2 ? r0 : r0 + 8, col = c0 + 2 * pos + (i & 1);
      if (j < rows && col < cols) store(j, col, d[i]);
    }
  };
  if (tiles == 0) return;  // a block with no columns (no output units of a projection)
  const int k_steps = (K32 + kStep - 1) / kStep;
  const int splits = tiles >= warps ? 1 : warps / tiles < k_steps ? warps / tiles : k_steps;
  if (splits <= 1) {
    for (int tile = warp; tile < tiles; tile += warps) {
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      tile_product(tile, 0, K32, d);
      finish(tile, d);
    }
    return;
  }
  // Warp w: tile w % tiles, K part w / tiles (the warps past tiles x splits idle).
  const int tile = warp % tiles, part = warp / tiles;
  const int per_part = (k_steps + splits - 1) / splits * kStep;
  float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (part < splits) {
    const int k_begin = part * per_part;
    tile_product(tile, k_begin, k_begin + per_part < K32 ? k_begin + per_part : K32, d);
    if (part > 0)
      for (int i = 0; i < 4; ++i) scratch[(warp * 32 + lane) * 4 + i] = d[i];
  }
  __syncthreads();
  if (part == 0) {
    for (int other = 1; other < splits; ++other)
      for (int i = 0; i < 4; ++i) d[i] += scratch[((other * tiles + tile) * 32 + lane) * 4 + i];
    finish(tile, d);
  }
  __syncthreads();  // the scratch is free for the next product
}

// Where a block stages the A rows of its tensor-core products (the plan's stage): up to `rows`
// rows (a multiple of 16) of ld elements of T from `at`, in shared memory; rows == 0: no stage,
// the products read A where it is.
template <typename S>
struct AStage {
  S at;
  int64_t rows, ld;
};

// Rows [r0, r0 + n) of A (K values each) into the stage's first n rows, each zero-padded up to K
// rounded up to the mma's k: 32-bit words for 16-bit T (consecutive threads, consecutive words
// of a row: coalesced), elements for float.
template <typename T, typename S, typename ARow>
__device__ __forceinline__ void stage_a_rows(const AStage<S>& stage, const ARow& a_row,
                                             int64_t r0, int64_t n, int64_t K) {
  constexpr int kStep = std::is_same_v<T, float> ? 8 : 16;
  const int K32 = static_cast<int>(K), padded = (K32 + kStep - 1) / kStep * kStep;
  if constexpr (sizeof(T) == 2) {
    const int words = padded / 2, count = static_cast<int>(n) * words;
    for (int e = threadIdx.x; e < count; e += blockDim.x) {
      const int j = div32(e, words), k = 2 * mod32(e, words);
      const auto a = a_row(r0 + j);
      uint32_t v = 0;
      if (k + 1 < K32) {
        v = simt::load_pair(a, k);
      } else if (k < K32) {
        v = simt::pack_pair(static_cast<T>(a[k]), T(0.0f));
      }
      simt::store_pair(stage.at + j * stage.ld, k, v);
    }
  } else {
    const int count = static_cast<int>(n) * padded;
    for (int e = threadIdx.x; e < count; e += blockDim.x) {
      const int j = div32(e, padded), k = mod32(e, padded);
      stage.at[j * stage.ld + k] = k < K32 ? static_cast<T>(a_row(r0 + j)[k]) : T(0.0f);
    }
  }
}

// block_mma_products with A's rows (in global memory) staged in shared memory first, stage.rows
// of them at a time; without a stage, straight from global memory. Every thread of the block
// must make the call (it holds __syncthreads), as block_mma_products.
template <typename T, bool kBPadded, typename Scratch, typename S, typename ARow, typename BRow,
          typename Store>
__device__ __forceinline__ void staged_mma_products(int64_t rows, int64_t cols, int64_t K,
                                                    Scratch scratch, const AStage<S>& stage,
                                                    const ARow& a_row, const BRow& b_row,
                                                    const Store& store) {
  if (stage.rows == 0) {
    block_mma_products<T, false, kBPadded>(rows, cols, K, scratch, a_row, b_row, store);
    return;
  }
  if (cols == 0) return;  // a block with no columns: nothing to stage (the same in every thread)
  for (int64_t r0 = 0; r0 < rows; r0 += stage.rows) {
    const int64_t n = rows - r0 < stage.rows ? rows - r0 : stage.rows;
    stage_a_rows<T>(stage, a_row, r0, n, K);
    __syncthreads();
    block_mma_products<T, true, kBPadded>(
        n, cols, K, scratch, [&](int64_t j) { return stage.at + j * stage.ld; }, b_row,
        [&](int64_t j, int64_t c, float v) { store(r0 + j, c, v); });
    __syncthreads();  // every warp is done with the stage before the next rows overwrite it
  }
}

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
