// A weight that every step of a time loop multiplies by: op(W) [K, N], W stored row-major with
// leading dimension ld, op transposing it when trans. A backend may also keep it packed for the
// loop (the CPU's float32 path: fastlstm's own panels, cpu/step_gemm.h, or MKL's packed GEMM;
// a per-step GEMM has few rows, so repacking W in every call costs about as much as the
// product itself).
#pragma once

#include <cstdint>
#include <memory>

namespace fastlstm {

template <typename T>
struct LoopWeight {
  const T* w = nullptr;
  bool trans = false;
  int64_t N = 0, K = 0, ld = 0;
  int64_t max_rows = 0;          // the most rows of a GEMM with packed (an M above: use w)
  std::shared_ptr<void> packed;  // op(W) in the backend's packed form, or empty: use w
  bool packed_own = false;       // packed holds the backend's own layout, not its BLAS's
};

}  // namespace fastlstm
