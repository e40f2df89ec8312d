// exp, sigmoid and tanh for float32 and float64 written so that GCC vectorises loops that call
// them: no branches (selects only), no libm calls. float32: Cephes' single-precision exp
// polynomial, which tanh evaluates once (see there); float64: a degree-13 Taylor polynomial for
// exp and Cephes' double rational for tanh near 0, within a few ulp of libm. Measured in
// tests/test_cell_math.py through the ops (float32 against nn.LSTM in float64, float64 against
// nn.LSTM in float64). NaN propagates.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastlstm::cpu::fast {

#define FASTLSTM_INLINE inline __attribute__((always_inline))

// The value whose bits are v's (std::bit_cast, which C++17 builds lack).
template <typename To, typename From>
FASTLSTM_INLINE To bits_as(From v) {
  static_assert(sizeof(To) == sizeof(From));
  To t;
  std::memcpy(&t, &v, sizeof t);
  return t;
}

// e^x = 2^n e^r for x in [-87, 88] (so that 2^n is a normal float): 2^n, and e^r - 1 from
// Cephes' polynomial summed without its leading 1 (|r| <= ln(2) / 2). NaN gives NaN e^r - 1.
struct ExpParts {
  float em1;    // e^r - 1
  float scale;  // 2^n
};

FASTLSTM_INLINE ExpParts exp_parts(float x) {
  // n = round(x / ln 2) via the 1.5 * 2^23 trick (round-to-nearest, no SSE4.1 needed).
  const float shifter = 12582912.0f;
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  const float r = x - n * 0.693359375f - n * -2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return {p * z + r, bits_as<float>((static_cast<int32_t>(n) + 127) << 23)};
}

FASTLSTM_INLINE float exp(float x) {
  // Clamp so that 2^n stays a normal float; comparisons keep NaN as NaN.
  float xc = x > 88.0f ? 88.0f : x;
  xc = xc < -87.0f ? -87.0f : xc;
  // NaN needs no select of its own: it passes the clamps, so e^r - 1 is NaN and so is the
  // product (whatever bits the NaN n gives 2^n). A select cost two of the cell's ~170 vector
  // operations per exp, five exps a unit: 1.09x on the AVX-512 cell without it.
  const ExpParts e = exp_parts(xc);
  return (e.em1 + 1.0f) * e.scale;
}

FASTLSTM_INLINE float sigmoid(float x) { return 1.0f / (1.0f + fast::exp(-x)); }

// tanh from one exp-like evaluation, e^y with y = -2|x| (the float64 tanh below evaluates a
// polynomial for small |x| and an exp, both, then selects):
//   |x| < 0.55:  tanh|x| = -expm1(y) / (1 + e^y), expm1 = 2^n (e^r - 1) + (2^n - 1) with
//                e^r - 1 = r + r^2 P(r) summed without its leading 1, so no 1 - e^y cancels
//                (relative error a few ulp down to the smallest floats);
//   else:        tanh|x| = 1 - 2 e^y / (1 + e^y), the small term's error scaled down.
// One division serves both. Max abs error 8.0e-8 over [-20, 20] (the polynomial-and-exp form:
// 7.1e-8), and the AVX-512 cell 1.13x faster (2.16 against 2.45 ns a unit, 2-core Xeon).
FASTLSTM_INLINE float tanh(float x) {
  const float ax = x < 0.0f ? -x : x;
  float y = -2.0f * ax;
  y = y < -87.0f ? -87.0f : y;  // tanh is 1 in float long before; NaN passes
  const ExpParts e = exp_parts(y);
  const float ey = e.em1 * e.scale + e.scale;  // e^y, in (0, 1]
  const float inv = 1.0f / (1.0f + ey);
  const float near0 = -(e.em1 * e.scale + (e.scale - 1.0f)) * inv;  // -expm1(y) / (1 + e^y)
  const float far = 1.0f - 2.0f * ey * inv;
  return __builtin_copysignf(ax < 0.55f ? near0 : far, x);
}

FASTLSTM_INLINE double exp(double x) {
  // Clamp to where e^x over- or underflows anyway (comparisons keep NaN as NaN); 2^n is applied
  // as two factors, so that overflow gives inf and underflow denormals then 0, as libm does.
  double xc = x > 710.0 ? 710.0 : x;
  xc = xc < -746.0 ? -746.0 : xc;
  // n = round(x / ln 2): adding 1.5 * 2^52 rounds to an integer, which then sits in the low
  // bits of the sum's representation (integer arithmetic on 64-bit lanes, no conversion).
  const double shifter = 6755399441055744.0;
  const double s = xc * 1.4426950408889634074 + shifter;
  const double n = s - shifter;
  const int64_t ni = bits_as<int64_t>(s) - bits_as<int64_t>(shifter);
  // r = x - n ln 2 in two parts (Cephes' C1 has few bits, so n * C1 is exact): |r| <= 0.35.
  const double r = (xc - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6;
  // e^r = sum r^k / k!, k <= 13: the first term left out is below 4e-18 for |r| <= 0.35.
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t n1 = ni >> 1, n2 = ni - n1;  // each in [-538, 512]: 2^n1, 2^n2 are normal
  const double y = p * bits_as<double>((n1 + 1023) << 52) * bits_as<double>((n2 + 1023) << 52);
  return x == x ? y : x;
}

FASTLSTM_INLINE double sigmoid(double x) { return 1.0 / (1.0 + fast::exp(-x)); }

FASTLSTM_INLINE double tanh(double x) {
  const double ax = x < 0.0 ? -x : x;
  // |x| < 0.625: x + x^3 P(x^2) / Q(x^2) (Cephes), avoids the cancellation in 1 - 2/(e^2x + 1).
  const double z = x * x;
  const double num = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z -
                     1.61468768441708447952e3;
  const double den = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z +
                     4.84406305325125486048e3;
  const double small = x + x * z * (num / den);
  const double big_abs = 1.0 - 2.0 / (fast::exp(2.0 * ax) + 1.0);
  const double big = x < 0.0 ? -big_abs : big_abs;
  return ax < 0.625 ? small : big;
}

}  // namespace fastlstm::cpu::fast
