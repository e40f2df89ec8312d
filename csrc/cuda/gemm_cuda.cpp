// cuBLAS GEMMs of CudaBackend, on torch's handle (bound to the current stream), and the
// upload of the schedule's index lists. Under emulation (csrc/simt/) the same calls reach a
// CPU cuBLAS with the same conventions.
#include <climits>
#include <cstring>
#include <type_traits>

#include "../simt/simt.h"
#include "backend.h"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {
namespace {

template <typename T>
cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  if constexpr (std::is_same_v<T, double>) return CUDA_R_64F;
  if constexpr (std::is_same_v<T, Half>) return CUDA_R_16F;
  if constexpr (std::is_same_v<T, BFloat16>) return CUDA_R_16BF;
}

const char* cublas_error(cublasStatus_t s) { return cublasGetStatusString(s); }

// TF32 for fp32 GEMMs exactly when torch allows it for matmuls: torch sets that on its handle's
// math mode. (torch's allowTF32CuBLAS() throws once a user has set the newer
// torch.backends.cuda.matmul.fp32_precision.)
bool handle_allows_tf32(cublasHandle_t handle) {
  cublasMath_t mode = CUBLAS_DEFAULT_MATH;
  const int flags = static_cast<int>(CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  return cublasGetMathMode(handle, &mode) == CUBLAS_STATUS_SUCCESS &&
         (static_cast<int>(mode) & ~flags) == static_cast<int>(CUBLAS_TF32_TENSOR_OP_MATH);
}

}  // namespace

bool tf32_allowed() { return handle_allows_tf32(simt::blas_handle()); }

const int64_t* CudaBackend::Context::indices(const IndexList& v) {
  if (v.empty()) return nullptr;  // only ever used with n == 0 rows
  // Through pinned memory, so that the copy is asynchronous: a pageable upload would
  // synchronise the stream. The pinned block is not reused until the copy has finished.
  const Tensor host = simt::pinned_empty(static_cast<int64_t>(v.size()));
  std::memcpy(ptr<int64_t>(host), v.data(), v.size() * sizeof(int64_t));
  uploaded_.push_back(torch::stable::to(host, like_.device(), /*non_blocking=*/true));
  return cptr<int64_t>(uploaded_.back());
}

template <typename T, typename C>
void CudaBackend::gemm(Context&, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A,
                       int64_t lda, const T* B, int64_t ldb, C beta, C* Cp, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    // C = beta C. cuBLAS may leave C untouched here; every caller with K == 0 has beta == 0
    // (weight gradients over zero tokens), whose C is uninitialised.
    if (static_cast<double>(beta) == 0.0)
      FASTLSTM_CUDA_CHECK(cudaMemset2DAsync(Cp, ldc * sizeof(C), 0, N * sizeof(C), M,
                                            simt::current_stream()));
    else
      FASTLSTM_CHECK(static_cast<double>(beta) == 1.0,
                     "fastlstm: GEMM with K == 0 needs beta 0 or 1");
    return;
  }
  FASTLSTM_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX &&
                     ldb <= INT_MAX && ldc <= INT_MAX,
                 "fastlstm: GEMM dimensions exceed cuBLAS's 32-bit limit: M=", M, " N=", N,
                 " K=", K);
  cublasHandle_t handle = simt::blas_handle();
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasStatus_t status;
  if constexpr (std::is_same_v<T, double>) {
    const double alpha = 1.0, b = beta;
    status = cublasGemmEx(handle, opb, opa, int(N), int(M), int(K), &alpha, B, CUDA_R_64F, int(ldb),
                          A, CUDA_R_64F, int(lda), &b, Cp, CUDA_R_64F, int(ldc),
                          CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT);
  } else {
    const float alpha = 1.0f, b = static_cast<float>(beta);
    const cublasComputeType_t compute =
        std::is_same_v<T, float> && handle_allows_tf32(handle)
            ? CUBLAS_COMPUTE_32F_FAST_TF32
            : CUBLAS_COMPUTE_32F;
    status = cublasGemmEx(handle, opb, opa, int(N), int(M), int(K), &alpha, B, cuda_type<T>(),
                          int(ldb), A, cuda_type<T>(), int(lda), &b, Cp, cuda_type<C>(), int(ldc),
                          compute, CUBLAS_GEMM_DEFAULT);
  }
  FASTLSTM_CHECK(status == CUBLAS_STATUS_SUCCESS, "fastlstm: cublasGemmEx failed: ",
                 cublas_error(status), " (M=", M, " N=", N, " K=", K, ")");
}

#define FASTLSTM_GEMM(T, C)                                                                     \
  template void CudaBackend::gemm<T, C>(Context&, bool, bool, int64_t, int64_t, int64_t, const T*, \
                                        int64_t, const T*, int64_t, C, C*, int64_t);
FASTLSTM_GEMM(float, float)
FASTLSTM_GEMM(double, double)
FASTLSTM_GEMM(Half, float)
FASTLSTM_GEMM(Half, Half)
FASTLSTM_GEMM(BFloat16, float)
FASTLSTM_GEMM(BFloat16, BFloat16)

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
