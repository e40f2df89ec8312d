// Fused LSTM cell kernels. float32 uses fast_math.h and is compiled three times (AVX-512, AVX2,
// baseline x86-64) with the best picked at run time; float64 uses libm, for gradcheck.
#include "cell.h"

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "fast_math.h"

namespace fastlstm::cpu {
namespace {

struct FloatMath {
  static FASTLSTM_INLINE float sigmoid(float x) { return fast::sigmoid(x); }
  static FASTLSTM_INLINE float tanh(float x) { return fast::tanh(x); }
};
struct DoubleMath {
  static double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
  static double tanh(double x) { return std::tanh(x); }
};

template <typename T, typename M>
FASTLSTM_INLINE void forward_rows(int64_t r0, int64_t r1, int64_t H, T* gates, const T* bias,
                                  PrevCell<T> c_prev, T* c_out, T* h_out) {
  for (int64_t j = r0; j < r1; ++j) {
    T* __restrict gi = gates + j * 4 * H;
    T* __restrict gf = gi + H;
    T* __restrict gg = gi + 2 * H;
    T* __restrict go = gi + 3 * H;
    const T* __restrict bi = bias;
    const T* __restrict bf = bias + H;
    const T* __restrict bg = bias + 2 * H;
    const T* __restrict bo = bias + 3 * H;
    const T* __restrict cp = c_prev.row(j, H);
    T* __restrict c = c_out + j * H;
    T* __restrict h = h_out + j * H;
#pragma GCC ivdep
    for (int64_t k = 0; k < H; ++k) {
      const T i = M::sigmoid(gi[k] + bi[k]);
      const T f = M::sigmoid(gf[k] + bf[k]);
      const T g = M::tanh(gg[k] + bg[k]);
      const T o = M::sigmoid(go[k] + bo[k]);
      const T cn = f * cp[k] + i * g;
      gi[k] = i;
      gf[k] = f;
      gg[k] = g;
      go[k] = o;
      c[k] = cn;
      h[k] = o * M::tanh(cn);
    }
  }
}

template <typename T, typename M>
FASTLSTM_INLINE void backward_rows(int64_t r0, int64_t r1, int64_t H, const T* gates, const T* cell,
                                   PrevCell<T> c_prev, const T* dh_in, T* dc_io, T* dgates) {
  const T one = 1;
  for (int64_t j = r0; j < r1; ++j) {
    const T* __restrict gi = gates + j * 4 * H;
    const T* __restrict gf = gi + H;
    const T* __restrict gg = gi + 2 * H;
    const T* __restrict go = gi + 3 * H;
    const T* __restrict c = cell + j * H;
    const T* __restrict cp = c_prev.row(j, H);
    const T* __restrict dh = dh_in + j * H;
    T* __restrict dc = dc_io + j * H;
    T* __restrict di = dgates + j * 4 * H;
    T* __restrict df = di + H;
    T* __restrict dg = di + 2 * H;
    T* __restrict dout = di + 3 * H;
#pragma GCC ivdep
    for (int64_t k = 0; k < H; ++k) {
      const T i = gi[k], f = gf[k], g = gg[k], o = go[k];
      const T tc = M::tanh(c[k]);
      const T dck = dc[k] + dh[k] * o * (one - tc * tc);
      di[k] = dck * g * i * (one - i);
      df[k] = dck * cp[k] * f * (one - f);
      dg[k] = dck * i * (one - g * g);
      dout[k] = dh[k] * tc * o * (one - o);
      dc[k] = dck * f;
    }
  }
}

// float32 variants per instruction set.
#define FASTLSTM_F32_VARIANT(SUFFIX, TARGET)                                                      \
  TARGET void forward_f32_##SUFFIX(int64_t r0, int64_t r1, int64_t H, float* g, const float* b, \
                                   PrevCell<float> cp, float* c, float* h) {                    \
    forward_rows<float, FloatMath>(r0, r1, H, g, b, cp, c, h);                                  \
  }                                                                                             \
  TARGET void backward_f32_##SUFFIX(int64_t r0, int64_t r1, int64_t H, const float* g,         \
                                    const float* c, PrevCell<float> cp, const float* dh,        \
                                    float* dc, float* dg) {                                     \
    backward_rows<float, FloatMath>(r0, r1, H, g, c, cp, dh, dc, dg);                           \
  }

#if defined(__x86_64__)
FASTLSTM_F32_VARIANT(avx512, __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))))
FASTLSTM_F32_VARIANT(avx2, __attribute__((target("avx2,fma"))))
#endif
FASTLSTM_F32_VARIANT(baseline, )

using ForwardF32 = decltype(&forward_f32_baseline);
using BackwardF32 = decltype(&backward_f32_baseline);
struct F32Kernels {
  ForwardF32 forward;
  BackwardF32 backward;
};

// FASTLSTM_CPU_ISA=baseline|avx2|avx512 caps the choice (tests run every variant).
F32Kernels pick_f32_kernels() {
  const char* cap = std::getenv("FASTLSTM_CPU_ISA");
  auto allowed = [&](const char* isa) { return cap == nullptr || std::strcmp(cap, isa) == 0; };
#if defined(__x86_64__)
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx512 && allowed("avx512")) return {forward_f32_avx512, backward_f32_avx512};
  if (avx2 && (allowed("avx2") || (cap && std::strcmp(cap, "avx512") == 0)))
    return {forward_f32_avx2, backward_f32_avx2};
#endif
  return {forward_f32_baseline, backward_f32_baseline};
}

const F32Kernels& f32_kernels() {
  static const F32Kernels k = pick_f32_kernels();
  return k;
}

// Rows per task so that each task touches about 16K gate values.
int64_t row_grain(int64_t H) { return std::max<int64_t>(1, 16384 / (4 * H)); }

}  // namespace

template <>
void cell_forward<float>(int64_t rows, int64_t H, float* gates, const float* bias,
                         PrevCell<float> c_prev, float* c_out, float* h_out) {
  const auto f = f32_kernels().forward;
  torch::stable::parallel_for(0, rows, row_grain(H), [&](int64_t r0, int64_t r1) {
    f(r0, r1, H, gates, bias, c_prev, c_out, h_out);
  });
}

template <>
void cell_forward<double>(int64_t rows, int64_t H, double* gates, const double* bias,
                          PrevCell<double> c_prev, double* c_out, double* h_out) {
  torch::stable::parallel_for(0, rows, row_grain(H), [&](int64_t r0, int64_t r1) {
    forward_rows<double, DoubleMath>(r0, r1, H, gates, bias, c_prev, c_out, h_out);
  });
}

template <>
void cell_backward<float>(int64_t rows, int64_t H, const float* gates, const float* c,
                          PrevCell<float> c_prev, const float* dh, float* dc, float* dgates) {
  const auto f = f32_kernels().backward;
  torch::stable::parallel_for(0, rows, row_grain(H), [&](int64_t r0, int64_t r1) {
    f(r0, r1, H, gates, c, c_prev, dh, dc, dgates);
  });
}

template <>
void cell_backward<double>(int64_t rows, int64_t H, const double* gates, const double* c,
                           PrevCell<double> c_prev, const double* dh, double* dc,
                           double* dgates) {
  torch::stable::parallel_for(0, rows, row_grain(H), [&](int64_t r0, int64_t r1) {
    backward_rows<double, DoubleMath>(r0, r1, H, gates, c, c_prev, dh, dc, dgates);
  });
}

}  // namespace fastlstm::cpu
