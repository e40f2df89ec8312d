// How fast one per-step product runs on this machine, for the benchmark that picks between
// fastlstm's own step GEMM and MKL's (python -m benchmarks.step_gemm): the product
// C [M, N] = A [M, K] op(W) + C of a time loop, W packed once, on the calling thread; A and W
// float32, bfloat16 or float16, C float32.
#pragma once

#include <cstdint>
#include <string>

namespace fastlstm::cpu {

// GFLOP/s (2 M N K per product) of products repeated for about `seconds`; how: "own"
// (step_gemm.h) or "blas" (MKL's packed GEMM, or the plain one where torch's BLAS lacks it;
// for bfloat16 and float16 MKL's cblas_gemm_*f32, which packs W in every call). trans: the
// forward's op(W) = W^T (W stored [N, K]); else the backward's W ([K, N]). dtype: "float32",
// "bfloat16" or "float16".
double step_gemm_gflops(int64_t M, int64_t N, int64_t K, bool trans, const std::string& how,
                        double seconds, const std::string& dtype);

}  // namespace fastlstm::cpu
