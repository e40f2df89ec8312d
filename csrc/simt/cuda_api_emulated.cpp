// CPU versions of the CUDA runtime and cuBLAS calls declared in cuda_api_emulated.h.
#include "cuda_api_emulated.h"
#include "emulator.h"  // options().tf32

#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

namespace fastlstm::simt::cuda_api {
namespace {

using torch::headeronly::BFloat16;
using torch::headeronly::Half;

// Element i of a matrix of this type as Acc.
template <typename Acc>
Acc load(const void* p, cudaDataType_t type, int64_t i) {
  switch (type) {
    case CUDA_R_32F: return static_cast<Acc>(static_cast<const float*>(p)[i]);
    case CUDA_R_64F: return static_cast<Acc>(static_cast<const double*>(p)[i]);
    case CUDA_R_16F: return static_cast<Acc>(static_cast<float>(static_cast<const Half*>(p)[i]));
    case CUDA_R_16BF:
      return static_cast<Acc>(static_cast<float>(static_cast<const BFloat16*>(p)[i]));
  }
  return Acc(0);
}

template <typename Acc>
void store(void* p, cudaDataType_t type, int64_t i, Acc v) {
  switch (type) {
    case CUDA_R_32F: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case CUDA_R_64F: static_cast<double*>(p)[i] = static_cast<double>(v); break;
    case CUDA_R_16F: static_cast<Half*>(p)[i] = Half(static_cast<float>(v)); break;
    case CUDA_R_16BF:
      static_cast<BFloat16*>(p)[i] = BFloat16(static_cast<float>(v));
      break;
  }
}

// fp32 rounded to TF32 (10 explicit mantissa bits, round to nearest even).
float to_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
  std::memcpy(&x, &u, 4);
  return x;
}

// op(X) is rows x cols; X is stored column-major with leading dimension ld.
template <typename Acc>
std::vector<Acc> unpack(const void* X, cudaDataType_t type, cublasOperation_t op, int rows,
                        int cols, int ld, bool tf32) {
  std::vector<Acc> out(static_cast<size_t>(rows) * cols);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const int64_t at = op == CUBLAS_OP_N ? r + int64_t(c) * ld : c + int64_t(r) * ld;
      Acc v = load<Acc>(X, type, at);
      if constexpr (std::is_same_v<Acc, float>)
        if (tf32) v = to_tf32(v);
      out[static_cast<size_t>(r) * cols + c] = v;
    }
  return out;
}

template <typename Acc>
void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, Acc alpha,
          const void* A, cudaDataType_t at, int lda, const void* B, cudaDataType_t bt, int ldb,
          Acc beta, void* C, cudaDataType_t ct, int ldc, bool tf32) {
  const std::vector<Acc> a = unpack<Acc>(A, at, ta, m, k, lda, tf32);  // [m, k]
  const std::vector<Acc> b = unpack<Acc>(B, bt, tb, k, n, ldb, tf32);  // [k, n]
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      Acc acc = 0;
      for (int p = 0; p < k; ++p) acc += a[size_t(i) * k + p] * b[size_t(p) * n + j];
      const int64_t at_c = i + int64_t(j) * ldc;
      // beta == 0: C is not read (it may hold garbage, even NaN), as in cuBLAS.
      const Acc old = beta == Acc(0) ? Acc(0) : beta * load<Acc>(C, ct, at_c);
      store<Acc>(C, ct, at_c, alpha * acc + old);
    }
}

std::atomic<int64_t> g_attribute_queries{0}, g_attribute_sets{0}, g_occupancy_queries{0},
    g_cluster_queries{0};

// A block's dynamic shared memory plus the kernel's static part, against the device's.
bool shared_fits(size_t dynamic_bytes) {
  const Options& o = fastlstm::simt::options();
  return static_cast<int64_t>(dynamic_bytes) + o.static_shared_bytes <= o.shared_bytes_per_block;
}

}  // namespace

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attributes, const void* func) {
  ++g_attribute_queries;
  if (attributes == nullptr || func == nullptr) return cudaErrorInvalidValue;
  *attributes = cudaFuncAttributes{};
  attributes->sharedSizeBytes = static_cast<size_t>(fastlstm::simt::options().static_shared_bytes);
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attribute, int value) {
  ++g_attribute_sets;
  if (func == nullptr || value < 0) return cudaErrorInvalidValue;
  if (attribute == cudaFuncAttributeMaxDynamicSharedMemorySize && !shared_fits(size_t(value)))
    return cudaErrorInvalidValue;
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* func, int,
                                                          size_t dynamic_bytes) {
  ++g_occupancy_queries;
  if (blocks == nullptr || func == nullptr) return cudaErrorInvalidValue;
  *blocks = shared_fits(dynamic_bytes) ? 1 : 0;
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxPotentialClusterSize(int* blocks, const void* func,
                                                 const cudaLaunchConfig_t* config) {
  ++g_cluster_queries;
  if (blocks == nullptr || func == nullptr || config == nullptr) return cudaErrorInvalidValue;
  *blocks = shared_fits(config->dynamicSmemBytes) ? fastlstm::simt::options().cluster_blocks : 0;
  return cudaSuccess;
}

int64_t runtime_call_count(const char* name) {
  const std::string n = name;
  if (n == "attribute_queries") return g_attribute_queries.load();
  if (n == "attribute_sets") return g_attribute_sets.load();
  if (n == "occupancy_queries") return g_occupancy_queries.load();
  if (n == "cluster_queries") return g_cluster_queries.load();
  return -1;
}

cudaError_t cudaMemset2DAsync(void* dst, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t) {
  if (width > pitch && height > 1) return cudaErrorInvalidValue;
  for (size_t r = 0; r < height; ++r)
    std::memset(static_cast<char*>(dst) + r * pitch, value, width);
  return cudaSuccess;
}

cublasHandle_t emulated_blas_handle() {
  thread_local EmulatedBlas handle;
  return &handle;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  if (handle == nullptr || mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  // torch sets TF32 on its handle when matmuls may use it; the emulator's option stands in.
  *mode = fastlstm::simt::options().tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : handle->math_mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "unknown cuBLAS status";
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C,
                            cudaDataType_t Ctype, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
  // cuBLAS's argument rules: the leading dimensions must cover the stored rows.
  const int a_rows = transa == CUBLAS_OP_N ? m : k;
  const int b_rows = transb == CUBLAS_OP_N ? k : n;
  if (handle == nullptr || m < 0 || n < 0 || k < 0 || lda < std::max(1, a_rows) ||
      ldb < std::max(1, b_rows) || ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (Atype != Btype) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (compute == CUBLAS_COMPUTE_64F) {
    if (Atype != CUDA_R_64F || Ctype != CUDA_R_64F) return CUBLAS_STATUS_NOT_SUPPORTED;
    gemm<double>(transa, transb, m, n, k, *static_cast<const double*>(alpha), A, Atype, lda, B,
                 Btype, ldb, *static_cast<const double*>(beta), C, Ctype, ldc, false);
  } else {
    if (Atype == CUDA_R_64F || Ctype == CUDA_R_64F) return CUBLAS_STATUS_NOT_SUPPORTED;
    // Half inputs give half or float C; float inputs give float C.
    if (Atype == CUDA_R_32F && Ctype != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (Atype != CUDA_R_32F && Ctype != Atype && Ctype != CUDA_R_32F)
      return CUBLAS_STATUS_NOT_SUPPORTED;
    gemm<float>(transa, transb, m, n, k, *static_cast<const float*>(alpha), A, Atype, lda, B,
                Btype, ldb, *static_cast<const float*>(beta), C, Ctype, ldc,
                compute == CUBLAS_COMPUTE_32F_FAST_TF32 && Atype == CUDA_R_32F);
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace fastlstm::simt::cuda_api
