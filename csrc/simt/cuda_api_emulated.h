// The few CUDA runtime and cuBLAS calls that csrc/cuda's host code makes, served on the CPU
// with the same signatures and conventions, so that those call sites run unchanged under
// emulation. cublasGemmEx is column-major with cuBLAS's transposes and leading-dimension
// rules (a bad lda/ldb/ldc returns CUBLAS_STATUS_INVALID_VALUE, as cuBLAS does), so a GEMM call
// site with swapped operands or a wrong stride fails here as it would on the GPU.
// Included through csrc/simt/simt.h only when FASTLSTM_SIMT_EMULATE is defined.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastlstm::simt::cuda_api {

struct EmulatedStream {};
using cudaStream_t = EmulatedStream;

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };

// The occupancy and kernel-attribute calls the launch plans make, answered for the emulated
// device of simt::options(); each is counted, so that tests see how often the host code plans.
// Every emulated kernel has options().static_shared_bytes of static shared memory (a GPU
// kernel's __shared__ arrays), which a launch's dynamic shared memory must leave room for.
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributeNonPortableClusterSizeAllowed = 16,
};
struct cudaFuncAttributes {
  size_t sharedSizeBytes = 0;  // static shared memory per block
  int ptxVersion = 90;         // every emulated kernel may use clusters
};
struct cudaLaunchConfig_t {  // the part a cluster query reads (gridDim, blockDim are macros)
  size_t dynamicSmemBytes = 0;
};
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attributes, const void* func);
// A dynamic shared-memory limit above what the device leaves beside the kernel's static
// shared memory is refused, as the runtime does.
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attribute, int value);
// 1 where a block's dynamic + static shared memory fits the device, else 0 (the emulator runs
// every block at once, so occupancy never limits a grid beyond that).
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* func,
                                                          int threads, size_t dynamic_bytes);
// options().cluster_blocks where a block's shared memory fits, else 0.
cudaError_t cudaOccupancyMaxPotentialClusterSize(int* blocks, const void* func,
                                                 const cudaLaunchConfig_t* config);
// The calls above so far in this process: "attribute_queries" (cudaFuncGetAttributes),
// "attribute_sets", "occupancy_queries", "cluster_queries"; -1 for another name.
int64_t runtime_call_count(const char* name);

// dst rows of `width` bytes, `height` of them, `pitch` bytes apart, set to `value`.
cudaError_t cudaMemset2DAsync(void* dst, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t stream);

enum cublasStatus_t {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cudaDataType_t { CUDA_R_32F, CUDA_R_64F, CUDA_R_16F, CUDA_R_16BF };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_64F };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT = -1 };
enum cublasMath_t {
  CUBLAS_DEFAULT_MATH = 0,
  CUBLAS_TF32_TENSOR_OP_MATH = 3,
  CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION = 16
};

struct EmulatedBlas {
  cublasMath_t math_mode = CUBLAS_DEFAULT_MATH;
};
using cublasHandle_t = EmulatedBlas*;

cublasHandle_t emulated_blas_handle();
cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode);
const char* cublasGetStatusString(cublasStatus_t status);

// C = alpha op(A) op(B) + beta C, column-major; C is not read when beta == 0. Compute type
// CUBLAS_COMPUTE_32F_FAST_TF32 rounds the inputs to TF32 first, as tensor cores do.
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C,
                            cudaDataType_t Ctype, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo);

}  // namespace fastlstm::simt::cuda_api

namespace fastlstm::simt {
using namespace cuda_api;
}
using namespace fastlstm::simt::cuda_api;
