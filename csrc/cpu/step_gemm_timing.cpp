#include "step_gemm_timing.h"

#include <chrono>
#include <memory>
#include <type_traits>
#include <vector>

#include "../torch_api.h"
#include "backend.h"
#include "gemm.h"
#include "step_gemm.h"

namespace fastlstm::cpu {

namespace {

template <typename T>
double gflops_of(int64_t M, int64_t N, int64_t K, bool trans, bool own, double seconds) {
  // Values of either sign near 1/sqrt(K), so that the sums stay finite however long it runs.
  std::vector<T> a(M * K), w(N * K);
  std::vector<float> c(M * N, 0.f);
  for (size_t i = 0; i < a.size(); ++i) a[i] = T(float(int(i * 7919 % 17) - 8) / 64.f);
  for (size_t i = 0; i < w.size(); ++i) w[i] = T(float(int(i * 104729 % 19) - 9) / 64.f);
  // The weight packed as a time loop packs it, own or MKL's (where torch's BLAS has no packed
  // GEMM, none: the plain one), and each product through the loops' own dispatch.
  const int64_t ld = trans ? K : N;
  LoopWeight<T> lw{w.data(), trans, N, K, ld, M, nullptr};
  if (own) {
    if constexpr (std::is_same_v<T, float>)
      lw.packed = std::make_shared<StepPanels>(pack_step_weight(trans, N, K, w.data(), ld));
    else
      lw.packed = std::make_shared<StepPanels>(pack_step_weight_lowp(trans, N, K, w.data(), ld));
    lw.packed_own = true;
  } else if constexpr (std::is_same_v<T, float>) {
    lw.packed = pack_b_f32(trans, M, N, K, w.data(), ld);
  }
  CpuBackend::Context ctx{Tensor()};
  const auto product = [&] {
    CpuBackend::gemm<T, float>(ctx, M, a.data(), K, lw, 0.5f, c.data(), N);
  };
  using Clock = std::chrono::steady_clock;
  product();  // warm the caches
  int64_t reps = 0, batch = 1;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    for (int64_t r = 0; r < batch; ++r) product();
    reps += batch;
    batch = std::min<int64_t>(batch * 2, 1024);
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < seconds);
  return 2.0 * double(M) * N * K * double(reps) / elapsed / 1e9;
}

}  // namespace

double step_gemm_gflops(int64_t M, int64_t N, int64_t K, bool trans, const std::string& how,
                        double seconds, const std::string& dtype) {
  FASTLSTM_CHECK_VALUE(M >= 1 && N >= 1 && K >= 1, "fastlstm: M, N and K must be >= 1, got ",
                       M, ", ", N, ", ", K);
  FASTLSTM_CHECK_VALUE(how == "own" || how == "blas",
                       "fastlstm: how must be 'own' or 'blas', got '", how, "'");
  FASTLSTM_CHECK_VALUE(seconds > 0 && seconds <= 10,
                       "fastlstm: seconds must be in (0, 10], got ", seconds);
  FASTLSTM_CHECK_VALUE(dtype == "float32" || dtype == "bfloat16" || dtype == "float16",
                       "fastlstm: dtype must be 'float32', 'bfloat16' or 'float16', got '", dtype,
                       "'");
  const bool own = how == "own";
  if (dtype == "bfloat16") return gflops_of<BFloat16>(M, N, K, trans, own, seconds);
  if (dtype == "float16") return gflops_of<Half>(M, N, K, trans, own, seconds);
  return gflops_of<float>(M, N, K, trans, own, seconds);
}

}  // namespace fastlstm::cpu
