// fastlstm's own float32 GEMM for a time loop's per-step product, C [M, N] = A [M, K] op(W)
// [K, N] + beta C, with op(W) packed once per layer call into column panels that every step
// then streams through. It does not depend on the BLAS vendor: AVX-512, AVX2 + FMA and portable
// variants (isa.h; FASTLSTM_CPU_ISA caps the choice), the same code on Intel and AMD, where MKL
// picks slower code paths for a CPU that is not Intel's.
//
// Layout: panel p holds columns [p NR, p NR + NR) of op(W), row k of the panel (NR floats,
// 64-byte aligned) at panel + k NR; the last panel is zero-padded. NR is the variant's panel
// width (32 on AVX-512, 16 otherwise). Each tile of MR rows x NR columns accumulates in
// registers over all of K, so C is written once and A is read once per panel.
//
// bfloat16 and float16 loops (T = BFloat16 or Half, float accumulation) have their own entry,
// step_gemm_lowp, in one of three panel formats:
//   f32         (float16; bfloat16 with the float kernel): op(W) widened to float once per pack,
//               A's rows widened at every call, then the float32 tiles. Widening is exact, so
//               every format sums the exact products in float, like MKL's
//               cblas_gemm_bf16bf16f32.
//   bf16_pairs  (bfloat16, pairs kernel): row kp of a panel of 32 columns holds, per column,
//               the 32-bit pair (op(W)[2 kp], op(W)[2 kp + 1]); one VDPBF16PS (AVX512_BF16)
//               adds both products of a pair of A's values to a float accumulator.
//   bf16_amx    (bfloat16, amx kernel): the same pairs, K rounded up to 32 (zeros), for AMX
//               tiles (step_gemm_amx.h).
#pragma once

#include <cstdint>
#include <memory>

#include "../torch_api.h"
#include "isa.h"

namespace fastlstm::cpu {

enum class PanelFormat { f32, bf16_pairs, bf16_amx };

struct StepPanels {
  Isa isa;            // the variant the panels were packed for (their width)
  PanelFormat format = PanelFormat::f32;
  int64_t N = 0, K = 0, nr = 0;
  std::shared_ptr<float> data;  // ceil(N / nr) panels of K x nr floats (bf16_pairs and
                                // bf16_amx: ceil(K / 2) or round_up(K, 32) / 2 x nr pairs)
};

// op(W) [K, N] packed for step_gemm: op(W) = W^T when trans (W stored [N, K]), else W ([K, N]);
// ld: elements between W's rows as stored.
StepPanels pack_step_weight(bool trans, int64_t N, int64_t K, const float* w, int64_t ld);

// C [M, N] = A [M, K] op(W) + beta C (beta == 0: C's contents are ignored). Runs on the
// calling thread (the layer's threads each run their own rows, partition.h), or, in a step
// team (the steps partition, step_team.h) and for a W of at least 1 MB, on the team, each
// thread taking a share of W's columns.
void step_gemm(int64_t M, const float* A, int64_t lda, const StepPanels& w, float beta, float* C,
               int64_t ldc);

// The same for a bfloat16 or float16 loop, accumulating in float: W packed by
// pack_step_weight_lowp (format: see above), A [M, K] of T, C float.
template <typename T>
StepPanels pack_step_weight_lowp(bool trans, int64_t N, int64_t K, const T* w, int64_t ld);
template <typename T>
void step_gemm_lowp(int64_t M, const T* A, int64_t lda, const StepPanels& w, float beta, float* C,
                    int64_t ldc);
// The bfloat16 kernel of this process: amx where the CPU has AMX-BF16 (and Linux grants its
// tile state), else pairs where the CPU has AVX512_BF16 and VDPBF16PS measures at least 1.25x
// VFMADD231PS's flops on one thread (a few ms, once), else float. Only with the AVX-512
// variant in use (FASTLSTM_CPU_ISA=avx512 leaves out pairs and amx). FASTLSTM_CPU_BF16_KERNEL=
// amx|pairs|float forces one the CPU has (read at every call: tests run each).
enum class Bf16Kernel { floats, pairs, amx };
Bf16Kernel bf16_kernel();
const char* bf16_kernel_name(Bf16Kernel kernel);

// Rows of a full tile of this process's float32 step GEMM (its variant for isa()): 12 on
// AVX-512, 6 on AVX2, 4 portable. A product of M rows runs M / tile full tiles and one partial
// one (on AVX-512, 1-3 rows over make all its tiles even instead); the partition's cost model
// charges for it (partition.h, partition_tile_rows).
int64_t step_gemm_tile_rows();

// Which per-step GEMM the time loops use (FASTLSTM_CPU_STEP_GEMM, read at every layer call so
// that one process can A/B them): own (step_gemm, step_gemm_lowp), blas (MKL's packed GEMM where
// torch's BLAS has it, else the plain GEMM; MKL's bfloat16 / float16 GEMMs) or auto, the
// default: own on every CPU and in every dtype it serves. Measured on the
// Xeon (python -m benchmarks.step_gemm, one thread): own 85-100% of the FMA peak at H 64-256
// and 8-32 rows, level with MKL's packed GEMM (0.9-1.2x); at H = 512, where W (4 MB) streams
// from L3, 0.94-1.07x. Whole layers, own against blas: 0.94-1.07x.
enum class StepGemm { own, blas, automatic };
StepGemm step_gemm_choice();

// How many step_gemm calls ran so far in this process, and how many of them split W over
// threads (tests).
int64_t step_gemm_count();
int64_t split_step_gemm_count();

}  // namespace fastlstm::cpu
