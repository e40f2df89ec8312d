#include "gemm.h"

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

extern "C" {
// Fortran BLAS, LP64. Weak: absent when libtorch_cpu's BLAS does not export them.
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
// MKL's CBLAS half-precision GEMMs with float accumulation (MKL_INT is int in LP64; MKL_BF16
// and MKL_F16 are uint16_t). Weak, like the above.
// MKL's thread-local thread count, C interface (mkl.h maps mkl_set_num_threads_local to it;
// the lowercase symbol is the Fortran one, by pointer). Returns the previous value, 0: global.
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
void cblas_gemm_bf16bf16f32(int, int, int, int, int, int, float, const uint16_t*, int,
                            const uint16_t*, int, float, float*, int) __attribute__((weak));
void cblas_gemm_f16f16f32(int, int, int, int, int, int, float, const uint16_t*, int,
                          const uint16_t*, int, float, float*, int) __attribute__((weak));
// MKL's packed float GEMM (CBLAS enums as int; the packed matrix as an opaque buffer). Weak.
size_t cblas_sgemm_pack_get_size(int, int, int, int) __attribute__((weak));
void cblas_sgemm_pack(int, int, int, int, int, int, float, const float*, int, float*)
    __attribute__((weak));
void cblas_sgemm_compute(int, int, int, int, int, int, const float*, int, const float*, int,
                         float, float*, int) __attribute__((weak));
}

namespace fastlstm::cpu {
namespace {

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

// GEMMs below this many multiply-adds run on the calling thread: a per-time-step GEMM that
// small gains little from MKL's threads, and every threaded call is an OpenMP fork/join whose
// workers spin between the steps, stealing the cores when other processes want them.
// FASTLSTM_SERIAL_GEMM_MACS overrides it (0: let MKL decide for every call).
double serial_gemm_macs() {
  static const double v = [] {
    const char* e = std::getenv("FASTLSTM_SERIAL_GEMM_MACS");
    return e ? std::atof(e) : double(1 << 23);
  }();
  return v;
}

// Runs f with MKL on one thread when the GEMM is small (see serial_gemm_macs).
template <typename F>
void with_blas_threads_for(int64_t M, int64_t N, int64_t K, F&& f) {
  if (double(M) * N * K >= serial_gemm_macs()) {
    f();
    return;
  }
  const int prev = blas_threads_here(1);  // no effect without MKL
  f();
  blas_threads_here(prev);
}

// Without the BLAS symbols (a torch built with another BLAS): torch's matmul on borrowed
// tensors, the operands converted to Acc, then C = alpha * op(A) op(B) + beta * C here.
Tensor matrix_view(const void* p, ScalarType dtype, int64_t rows, int64_t cols, int64_t ld,
                   bool trans) {
  // op(X) is [rows, cols]; X is stored row-major with leading dimension ld.
  const Sizes sizes{rows, cols}, strides = trans ? Sizes{1, ld} : Sizes{ld, 1};
  return torch::stable::from_blob(const_cast<void*>(p), sizes, strides,
                                  torch::stable::Device(torch::stable::DeviceType::CPU), dtype);
}

template <typename T, typename Acc>
void gemm_torch(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, Acc alpha,
                const T* A, int64_t lda, const T* B, int64_t ldb, Acc beta, Acc* C,
                int64_t ldc) {
  const Tensor a = to_dtype(matrix_view(A, dtype_of<T>(), M, K, lda, trans_a), dtype_of<Acc>());
  const Tensor b = to_dtype(matrix_view(B, dtype_of<T>(), K, N, ldb, trans_b), dtype_of<Acc>());
  const Tensor ab = as_contiguous(torch::stable::matmul(a, b));
  const Acc* p = cptr<Acc>(ab);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      Acc& c = C[i * ldc + j];
      c = alpha * p[i * N + j] + (beta == Acc(0) ? Acc(0) : beta * c);
    }
}

template <typename T, typename F>
bool gemm_blas(F* fn, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
               const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (fn == nullptr || !fits_int(M) || !fits_int(N) || !fits_int(K) || !fits_int(lda) ||
      !fits_int(ldb) || !fits_int(ldc))
    return false;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  with_blas_threads_for(M, N, K,
                        [&] { fn(&tb, &ta, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc); });
  return true;
}

}  // namespace

template <typename T>
void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
             int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta * C; BLAS may not touch C at all here.
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  bool done;
  if constexpr (std::is_same_v<T, float>)
    done = gemm_blas(sgemm_, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    done = gemm_blas(dgemm_, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (!done) gemm_torch<T, T>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
void gemm_rm_acc(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A,
                 int64_t lda, const T* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  auto fn = std::is_same_v<T, BFloat16> ? cblas_gemm_bf16bf16f32 : cblas_gemm_f16f16f32;
  if (fn != nullptr && fits_int(M) && fits_int(N) && fits_int(K) && fits_int(lda) &&
      fits_int(ldb) && fits_int(ldc)) {
    constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
    with_blas_threads_for(M, N, K, [&] {
      fn(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, static_cast<int>(M),
       static_cast<int>(N), static_cast<int>(K), 1.f, reinterpret_cast<const uint16_t*>(A),
       static_cast<int>(lda), reinterpret_cast<const uint16_t*>(B), static_cast<int>(ldb), beta,
         C, static_cast<int>(ldc));
    });
    return;
  }
  gemm_torch<T, float>(trans_a, trans_b, M, N, K, 1.f, A, lda, B, ldb, beta, C, ldc);
}

namespace {
constexpr int kCblasRowMajor = 101, kCblasNoTrans = 111, kCblasTrans = 112, kCblasPacked = 151,
              kCblasBMatrix = 162;

std::atomic<int64_t> g_packed_gemms{0};

bool packed_gemm_wanted() {
  if (!packed_gemm_available()) return false;
  const char* e = std::getenv("FASTLSTM_CPU_PACKED_GEMM");
  return e == nullptr || std::strcmp(e, "0") != 0;
}
}  // namespace

int blas_threads_here(int threads) {
  return MKL_Set_Num_Threads_Local != nullptr ? MKL_Set_Num_Threads_Local(threads) : 0;
}

bool packed_gemm_available() {
  return cblas_sgemm_pack_get_size != nullptr && cblas_sgemm_pack != nullptr &&
         cblas_sgemm_compute != nullptr;
}

std::shared_ptr<void> pack_b_f32(bool trans_b, int64_t max_rows, int64_t N, int64_t K,
                                 const float* B, int64_t ldb) {
  if (max_rows <= 0 || N <= 0 || K <= 0 || !fits_int(max_rows) || !fits_int(N) ||
      !fits_int(K) || !fits_int(ldb) || !packed_gemm_wanted())
    return nullptr;
  const int m = static_cast<int>(max_rows), n = static_cast<int>(N), k = static_cast<int>(K);
  const size_t bytes = cblas_sgemm_pack_get_size(kCblasBMatrix, m, n, k);
  // 64-byte aligned, as MKL's packed kernels prefer.
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (p == nullptr) return nullptr;
  std::shared_ptr<void> packed(p, std::free);
  // With the thread count the computes will have (MKL's advice for packed GEMMs).
  with_blas_threads_for(max_rows, N, K, [&] {
    cblas_sgemm_pack(kCblasRowMajor, kCblasBMatrix, trans_b ? kCblasTrans : kCblasNoTrans, m, n,
                     k, 1.f, B, static_cast<int>(ldb), static_cast<float*>(p));
  });
  return packed;
}

bool gemm_packed_f32(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                     const void* packed_b, float beta, float* C, int64_t ldc) {
  if (!fits_int(M) || !fits_int(lda) || !fits_int(ldc)) return false;
  if (M == 0) return true;
  g_packed_gemms.fetch_add(1, std::memory_order_relaxed);
  with_blas_threads_for(M, N, K, [&] {
    cblas_sgemm_compute(kCblasRowMajor, kCblasNoTrans, kCblasPacked, static_cast<int>(M),
                        static_cast<int>(N), static_cast<int>(K), A, static_cast<int>(lda),
                        static_cast<const float*>(packed_b), static_cast<int>(N), beta, C,
                        static_cast<int>(ldc));
  });
  return true;
}

int64_t packed_gemm_count() { return g_packed_gemms.load(); }

template void gemm_rm_acc<BFloat16>(bool, bool, int64_t, int64_t, int64_t, const BFloat16*,
                                    int64_t, const BFloat16*, int64_t, float, float*, int64_t);
template void gemm_rm_acc<Half>(bool, bool, int64_t, int64_t, int64_t, const Half*, int64_t,
                                const Half*, int64_t, float, float*, int64_t);

template void gemm_rm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                             const float*, int64_t, float, float*, int64_t);
template void gemm_rm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                              int64_t, const double*, int64_t, double, double*, int64_t);

}  // namespace fastlstm::cpu
