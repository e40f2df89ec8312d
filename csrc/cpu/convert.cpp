#include "convert.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "fast_math.h"
#include "isa.h"

namespace fastlstm::cpu {
namespace {

#if defined(__x86_64__)
bool use_f16c() {
  static const bool use = isa() != Isa::baseline && __builtin_cpu_supports("f16c");
  return use;
}

__attribute__((target("avx,f16c"))) void widen_f16c(const Half* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                  reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i].x);
}

__attribute__((target("avx,f16c"))) void narrow_f16c(const float* src, Half* dst, int64_t n) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), kRound));
  for (; i < n; ++i) dst[i].x = _cvtss_sh(src[i], kRound);
}
#endif

}  // namespace

template <>
void widen<BFloat16>(const BFloat16* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = fast::bits_as<float>(uint32_t{src[i].x} << 16);
}

template <>
void narrow<BFloat16>(const float* src, BFloat16* dst, int64_t n) {
  // c10::detail::round_to_nearest_even, branch-free.
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = fast::bits_as<uint32_t>(src[i]);
    const uint32_t rounded = (u + ((u >> 16) & 1) + 0x7FFFu) >> 16;
    dst[i].x = static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
  }
}

template <>
void widen<Half>(const Half* src, float* dst, int64_t n) {
#if defined(__x86_64__)
  if (use_f16c()) return widen_f16c(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

template <>
void narrow<Half>(const float* src, Half* dst, int64_t n) {
#if defined(__x86_64__)
  if (use_f16c()) return narrow_f16c(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = Half(src[i]);
}

}  // namespace fastlstm::cpu
