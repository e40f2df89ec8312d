// Rows of bfloat16 / float16 widened to float, and float narrowed back, as the CPU's half-type
// loops do at every step (step_gemm_lowp's A, the cell's h and dgates). Bit for bit torch's
// conversions (round to nearest even; a NaN stays a NaN), but vectorised: F16C for float16
// (every AVX2 CPU; FASTLSTM_CPU_ISA=baseline leaves it out), integer arithmetic that the
// compiler vectorises for bfloat16. c10's scalar float16 conversion without F16C is a dozen
// operations an element, which made the widening cost as much as a small step's product.
#pragma once

#include <cstdint>

#include "../torch_api.h"

namespace fastlstm::cpu {

// dst[i] = float(src[i]) for i < n (exact).
template <typename T>
void widen(const T* src, float* dst, int64_t n);

// dst[i] = T(src[i]) for i < n.
template <typename T>
void narrow(const float* src, T* dst, int64_t n);

}  // namespace fastlstm::cpu
