// Row-major GEMM on raw pointers for the CPU recurrence: C[M,N] = alpha*op(A)*op(B) + beta*C.
//
// The per-step GEMMs are small (B x 4H x H), so per-call overhead matters: when the BLAS that
// libtorch_cpu carries exports the Fortran sgemm_/dgemm_ (MKL in the x86 wheels), call it
// directly; otherwise torch's matmul on borrowed tensors.
#pragma once

#include <cstdint>
#include <memory>

#include "../torch_api.h"

namespace fastlstm::cpu {

// lda/ldb/ldc: elements between consecutive rows as stored. beta == 0 ignores C's contents.
template <typename T>
void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
             int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// bfloat16 / float16 operands, float32 accumulation and result: C (float) = alpha op(A) op(B)
// + beta C. MKL's cblas_gemm_bf16bf16f32 / cblas_gemm_f16f16f32 when libtorch_cpu exports
// them (AMX / AVX512-BF16 kernels where the CPU has them); otherwise torch's matmul on float
// copies of the operands.
template <typename T>
void gemm_rm_acc(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A,
                 int64_t lda, const T* B, int64_t ldb, float beta, float* C, int64_t ldc);

// float32 B in MKL's packed layout, for many GEMMs C = A op(B) of at most max_rows rows:
// op(B) [K, N]. Empty where libtorch_cpu's BLAS has no packed GEMM, or where
// FASTLSTM_CPU_PACKED_GEMM=0 (read at every call: for A/B timing in one process).
std::shared_ptr<void> pack_b_f32(bool trans_b, int64_t max_rows, int64_t N, int64_t K,
                                 const float* B, int64_t ldb);
// C [M, N] = A [M, K] op(B) + beta C, with B from pack_b_f32 (M <= its max_rows); false (and
// nothing done) where a dimension exceeds the BLAS's int.
bool gemm_packed_f32(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                     const void* packed_b, float beta, float* C, int64_t ldc);

// Whether libtorch_cpu's BLAS has the packed float GEMM (MKL's cblas_sgemm_pack/compute), and
// how many GEMMs ran through gemm_packed_f32 so far in this process (both for tests).
bool packed_gemm_available();
// Sets the BLAS's thread count for the calling thread (MKL's local setting; 0: back to the
// global count) and returns the previous local setting; 0 and no effect without MKL.
int blas_threads_here(int threads);
int64_t packed_gemm_count();

}  // namespace fastlstm::cpu
