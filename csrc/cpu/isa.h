// The x86 instruction set the CPU kernels use (cell.cpp, step_gemm.cpp, fma_peak.cpp): the best
// of AVX-512, AVX2 + FMA and baseline x86-64 that this CPU has, chosen once per process.
// FASTLSTM_CPU_ISA=baseline|avx2|avx512 caps the choice (tests run every variant).
#pragma once

namespace fastlstm::cpu {

enum class Isa { baseline, avx2, avx512 };

Isa isa();
const char* isa_name(Isa isa);

// Whether the CPU has AMX's bfloat16 tile multiply (CPUID leaf 7: AMX-BF16 and AMX-TILE), which
// MKL's bfloat16 GEMM uses.
bool cpu_has_amx_bf16();

}  // namespace fastlstm::cpu
