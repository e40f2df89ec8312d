// The CPU's float32 multiply-add peak, measured: a calibration loop of independent vector FMAs
// in the instruction set the kernels use (isa.h), so that benchmarks can say how close a
// kernel runs to the machine's limit on any machine.
#pragma once

#include <cstdint>

namespace fastlstm::cpu {

// float32 GFLOP/s (an FMA counts 2) of `threads` threads running the loop at once for about
// `seconds` (each thread's own rate summed), through torch's intra-op pool; `threads` is capped
// at the pool's size.
double fma_peak_gflops(int64_t threads, double seconds);

// GFLOP/s of the same loop through AVX512_BF16's VDPBF16PS on the calling thread (a bfloat16
// product and its sum count 2), or 0 where the CPU lacks it. step_gemm.cpp compares it with the
// FMA peak to choose its bfloat16 kernel.
double bf16_dot_gflops(double seconds);

}  // namespace fastlstm::cpu
