#include "fma_peak.h"

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "isa.h"

namespace fastlstm::cpu {
namespace {

using Clock = std::chrono::steady_clock;

// Independent accumulators: enough to cover the FMA latency (4-5 cycles) on two FMA ports.
constexpr int kChains = 12;
constexpr int64_t kItersPerCheck = 1 << 16;

// Runs the loop until `seconds` pass; returns flops per second. Each variant: kChains
// accumulators of its vector width, each updated acc = acc * m + a every iteration.
#define FASTLSTM_FMA_LOOP(NAME, TARGET, VEC, LANES, SET1, FMADD, STORE)                      \
  TARGET double NAME(double seconds) {                                                      \
    VEC acc[kChains];                                                                       \
    for (int k = 0; k < kChains; ++k) acc[k] = SET1(0.001f * k);                            \
    const VEC m = SET1(0.999999f), a = SET1(1e-7f);                                         \
    int64_t iters = 0;                                                                      \
    const auto start = Clock::now();                                                        \
    double elapsed = 0;                                                                     \
    do {                                                                                    \
      for (int64_t i = 0; i < kItersPerCheck; ++i)                                          \
        for (int k = 0; k < kChains; ++k) acc[k] = FMADD(acc[k], m, a);                     \
      iters += kItersPerCheck;                                                              \
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();                \
    } while (elapsed < seconds);                                                            \
    alignas(64) float lanes[LANES];                                                         \
    float sum = 0;                                                                          \
    for (int k = 0; k < kChains; ++k) {                                                     \
      STORE(lanes, acc[k]);                                                                 \
      for (int l = 0; l < (LANES); ++l) sum += lanes[l];                                    \
    }                                                                                       \
    volatile float sink = sum; /* keeps the loop */                                         \
    (void)sink;                                                                             \
    return 2.0 * (LANES) * kChains * double(iters) / elapsed;                               \
  }

#if defined(__x86_64__)
FASTLSTM_FMA_LOOP(run_avx512, __attribute__((target("avx512f"))), __m512, 16, _mm512_set1_ps,
                  _mm512_fmadd_ps, _mm512_store_ps)
FASTLSTM_FMA_LOOP(run_avx2, __attribute__((target("avx2,fma"))), __m256, 8, _mm256_set1_ps,
                  _mm256_fmadd_ps, _mm256_store_ps)
#endif
#undef FASTLSTM_FMA_LOOP

// Baseline: a multiply and an add per element (no FMA in x86-64's baseline), 4 lanes.
double run_baseline(double seconds) {
  float acc[kChains][4];
  for (int k = 0; k < kChains; ++k)
    for (int l = 0; l < 4; ++l) acc[k][l] = 0.001f * k;
  const float m = 0.999999f, a = 1e-7f;
  int64_t iters = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    for (int64_t i = 0; i < kItersPerCheck; ++i)
      for (int k = 0; k < kChains; ++k)
        for (int l = 0; l < 4; ++l) acc[k][l] = acc[k][l] * m + a;
    iters += kItersPerCheck;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < seconds);
  float sum = 0;
  for (int k = 0; k < kChains; ++k)
    for (int l = 0; l < 4; ++l) sum += acc[k][l];
  volatile float sink = sum;
  (void)sink;
  return 2.0 * 4 * kChains * double(iters) / elapsed;
}

#if defined(__x86_64__)
// The same loop through VDPBF16PS (AVX512_BF16): each instruction adds 32 products of bfloat16
// pairs to 16 float sums. Its operands are pairs of 1.0 and 2^-20 (no NaN or denormal halves).
__attribute__((target("avx512f,avx512bf16"))) double run_bf16_dot(double seconds) {
  __m512 acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = _mm512_set1_ps(0.001f * k);
  const __m512bh m = (__m512bh)_mm512_set1_epi32(0x3F803F80);
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x35803580);
  int64_t iters = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    for (int64_t i = 0; i < kItersPerCheck; ++i)
      for (int k = 0; k < kChains; ++k) acc[k] = _mm512_dpbf16_ps(acc[k], m, a);
    iters += kItersPerCheck;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < seconds);
  alignas(64) float lanes[16];
  float sum = 0;
  for (int k = 0; k < kChains; ++k) {
    _mm512_store_ps(lanes, acc[k]);
    for (int l = 0; l < 16; ++l) sum += lanes[l];
  }
  volatile float sink = sum;
  (void)sink;
  return 2.0 * 32 * kChains * double(iters) / elapsed;
}
#endif

double run_one(double seconds) {
#if defined(__x86_64__)
  switch (isa()) {
    case Isa::avx512: return run_avx512(seconds);
    case Isa::avx2: return run_avx2(seconds);
    default: break;
  }
#endif
  return run_baseline(seconds);
}

}  // namespace

double bf16_dot_gflops(double seconds) {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16"))
    return run_bf16_dot(seconds) / 1e9;
#endif
  return 0.0;
}

double fma_peak_gflops(int64_t threads, double seconds) {
  // At most one calibration loop per pool thread: more would share threads and count twice.
  threads = std::clamp<int64_t>(threads, 1, std::max<int64_t>(1, torch::stable::get_num_threads()));
  std::vector<double> rates(threads, 0.0);
  if (threads == 1) {
    rates[0] = run_one(seconds);
  } else {
    torch::stable::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) rates[t] = run_one(seconds);
    });
  }
  double total = 0;
  for (double r : rates) total += r;
  return total / 1e9;
}

}  // namespace fastlstm::cpu
