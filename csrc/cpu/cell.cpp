// Fused LSTM cell kernels. float32 and float64 use fast_math.h (vectorised exp, sigmoid, tanh)
// and are compiled three times each (AVX-512, AVX2, baseline x86-64), the best picked at run
// time.
#include "cell.h"

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <type_traits>

#include "contention.h"
#include "fast_math.h"
#include "isa.h"
#include "step_team.h"

namespace fastlstm::cpu {
namespace {

struct FloatMath {
  static FASTLSTM_INLINE float sigmoid(float x) { return fast::sigmoid(x); }
  static FASTLSTM_INLINE float tanh(float x) { return fast::tanh(x); }
};
struct DoubleMath {
  static FASTLSTM_INLINE double sigmoid(double x) { return fast::sigmoid(x); }
  static FASTLSTM_INLINE double tanh(double x) { return fast::tanh(x); }
};

// kKeepGates: store the activations over the pre-activations (training's backward reads them);
// inference leaves gates as they came, 4 stores a unit fewer.
template <typename T, typename M, bool kKeepGates>
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
      if constexpr (kKeepGates) {
        gi[k] = i;
        gf[k] = f;
        gg[k] = g;
        go[k] = o;
      }
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

// float32 and float64 variants per instruction set.
#define FASTLSTM_CELL_VARIANT(T, M, NAME, TARGET)                                                 \
  TARGET void forward_##NAME(int64_t r0, int64_t r1, int64_t H, T* g, const T* b,             \
                             PrevCell<T> cp, T* c, T* h) {                                    \
    forward_rows<T, M, true>(r0, r1, H, g, b, cp, c, h);                                      \
  }                                                                                           \
  TARGET void inference_##NAME(int64_t r0, int64_t r1, int64_t H, T* g, const T* b,           \
                               PrevCell<T> cp, T* c, T* h) {                                  \
    forward_rows<T, M, false>(r0, r1, H, g, b, cp, c, h);                                     \
  }                                                                                           \
  TARGET void backward_##NAME(int64_t r0, int64_t r1, int64_t H, const T* g, const T* c,      \
                              PrevCell<T> cp, const T* dh, T* dc, T* dg) {                    \
    backward_rows<T, M>(r0, r1, H, g, c, cp, dh, dc, dg);                                     \
  }
#define FASTLSTM_CELL_VARIANTS(SUFFIX, TARGET)                   \
  FASTLSTM_CELL_VARIANT(float, FloatMath, f32_##SUFFIX, TARGET)  \
  FASTLSTM_CELL_VARIANT(double, DoubleMath, f64_##SUFFIX, TARGET)

#if defined(__x86_64__)
FASTLSTM_CELL_VARIANTS(avx512, __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))))
FASTLSTM_CELL_VARIANTS(avx2, __attribute__((target("avx2,fma"))))
#endif
FASTLSTM_CELL_VARIANTS(baseline, )

template <typename T>
struct CellKernels {
  void (*forward)(int64_t, int64_t, int64_t, T*, const T*, PrevCell<T>, T*, T*);
  void (*inference)(int64_t, int64_t, int64_t, T*, const T*, PrevCell<T>, T*, T*);
  void (*backward)(int64_t, int64_t, int64_t, const T*, const T*, PrevCell<T>, const T*, T*, T*);
};

template <typename T>
CellKernels<T> cell_kernels() {
#define FASTLSTM_KERNELS(NAME) {forward_##NAME, inference_##NAME, backward_##NAME}
#define FASTLSTM_PICK(PREFIX)                                     \
  switch (isa()) {                                                \
    case Isa::avx512: return FASTLSTM_KERNELS(PREFIX##_avx512);   \
    case Isa::avx2: return FASTLSTM_KERNELS(PREFIX##_avx2);       \
    default: return FASTLSTM_KERNELS(PREFIX##_baseline);          \
  }
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>) {
    FASTLSTM_PICK(f32)
  } else {
    FASTLSTM_PICK(f64)
  }
#else
  if constexpr (std::is_same_v<T, float>)
    return FASTLSTM_KERNELS(f32_baseline);
  else
    return FASTLSTM_KERNELS(f64_baseline);
#endif
#undef FASTLSTM_PICK
#undef FASTLSTM_KERNELS
}

// Rows per task so that each task touches about 16K gate values.
int64_t row_grain(int64_t H) { return std::max<int64_t>(1, 16384 / (4 * H)); }

// f(r0, r1) over rows [0, rows): on torch's threads, or in a step team (the steps partition)
// on the team's where every member gets a task's worth of rows, else on the calling thread
// (no OpenMP region inside a team's time loop: its barrier spins, step_team.h); on the calling
// thread in a serial call too (contention.h).
template <typename F>
void for_rows(int64_t rows, int64_t H, const F& f) {
  const int64_t grain = row_grain(H);
  if (StepTeam* team = current_step_team()) {
    if (team->size() > 1 && rows >= grain * team->size()) {
      team->split(rows, f);
    } else {
      f(0, rows);
    }
    return;
  }
  if (serial_call()) {  // contention.h
    if (rows > 0) f(0, rows);
    return;
  }
  torch::stable::parallel_for(0, rows, grain, f);
}

}  // namespace

template <typename T>
void cell_forward(int64_t rows, int64_t H, T* gates, const T* bias, PrevCell<T> c_prev, T* c_out,
                  T* h_out, bool keep_gates) {
  const auto f = keep_gates ? cell_kernels<T>().forward : cell_kernels<T>().inference;
  for_rows(rows, H, [&](int64_t r0, int64_t r1) { f(r0, r1, H, gates, bias, c_prev, c_out, h_out); });
}

template <typename T>
void cell_backward(int64_t rows, int64_t H, const T* gates, const T* c, PrevCell<T> c_prev,
                   const T* dh, T* dc, T* dgates) {
  const auto f = cell_kernels<T>().backward;
  for_rows(rows, H, [&](int64_t r0, int64_t r1) { f(r0, r1, H, gates, c, c_prev, dh, dc, dgates); });
}

template void cell_forward<float>(int64_t, int64_t, float*, const float*, PrevCell<float>,
                                  float*, float*, bool);
template void cell_forward<double>(int64_t, int64_t, double*, const double*, PrevCell<double>,
                                   double*, double*, bool);
template void cell_backward<float>(int64_t, int64_t, const float*, const float*,
                                   PrevCell<float>, const float*, float*, float*);
template void cell_backward<double>(int64_t, int64_t, const double*, const double*,
                                    PrevCell<double>, const double*, double*, double*);

}  // namespace fastlstm::cpu
