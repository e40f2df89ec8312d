// exp, sigmoid and tanh for float32 written so that GCC vectorises loops that call them:
// no branches (selects only), no libm calls. Cephes' single-precision polynomials; measured
// against float64 libm in tests/test_cell_math.py through the ops. NaN propagates.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastlstm::cpu::fast {

#define FASTLSTM_INLINE inline __attribute__((always_inline))

FASTLSTM_INLINE float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

FASTLSTM_INLINE float exp(float x) {
  // Clamp so that 2^n stays a normal float; comparisons keep NaN as NaN.
  float xc = x > 88.0f ? 88.0f : x;
  xc = xc < -87.0f ? -87.0f : xc;
  // n = round(x / ln 2) via the 1.5 * 2^23 trick (round-to-nearest, no SSE4.1 needed).
  const float shifter = 12582912.0f;
  const float n = (xc * 1.44269504088896341f + shifter) - shifter;
  const float r = xc - n * 0.693359375f - n * -2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  const float scale = bits_to_float((static_cast<int32_t>(n) + 127) << 23);
  const float y = p * scale;
  return x == x ? y : x;
}

FASTLSTM_INLINE float sigmoid(float x) { return 1.0f / (1.0f + fast::exp(-x)); }

FASTLSTM_INLINE float tanh(float x) {
  const float ax = x < 0.0f ? -x : x;
  // |x| < 0.625: odd polynomial, avoids the cancellation in 1 - 2/(e^2x + 1).
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float big_abs = 1.0f - 2.0f / (fast::exp(2.0f * ax) + 1.0f);
  const float big = x < 0.0f ? -big_abs : big_abs;
  return ax < 0.625f ? small : big;
}

}  // namespace fastlstm::cpu::fast
