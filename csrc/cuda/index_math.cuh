// Index arithmetic of the persistent kernels. Their index values fit 32 bits (the plans
// refuse shapes where they would not: kMaxIndex in persistent.cuh), so quotients and
// remainders by run-time values are taken in 32 bits: nvcc's 64-bit division is a subroutine
// call at every use (its body holds I2F.U64.RP), the 32-bit one a few inline instructions.
// Loops whose step is known only at run time (blockDim.x, the warp count) count in 32 bits
// too: for a 64-bit counter nvcc computes the trip count through the same 64-bit division.
// scripts/sass_check.py (tests/test_sass.py) checks that no persistent kernel calls it.
#pragma once

#include <cstdint>

#include "../simt/simt.h"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

// In int (signed 32 bits), not uint32_t: the compiler may widen an unsigned 32-bit quotient
// that is used as a 64-bit value back into a 64-bit division (measured: a div.u64 in the PTX).
__host__ __device__ __forceinline__ int div32(int64_t a, int64_t b) {
  return static_cast<int>(a) / static_cast<int>(b);
}
__host__ __device__ __forceinline__ int mod32(int64_t a, int64_t b) {
  return static_cast<int>(a) % static_cast<int>(b);
}
__host__ __device__ __forceinline__ int ceil_div32(int64_t a, int64_t b) {
  return div32(a + b - 1, b);
}

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
