// The bfloat16 step GEMM on AMX tiles (Intel's Advanced Matrix Extensions: eight 1 KB tile
// registers and TDPBF16PS, a 16 x 16 float tile += a 16 x 32 bfloat16 tile times a 32 x 16 one,
// 8192 multiply-adds an instruction). Used by step_gemm.cpp for the bf16_amx panel format.
//
// Operands, as step_gemm.cpp prepares them:
//   A       rows of bfloat16 pairs along k (32-bit words), lda words apart, M rows rounded up
//           to a multiple of 16 and K (in pairs) to a multiple of 16, all padding zero;
//   panels  bf16_pairs panels of 32 columns (step_gemm.h), K in pairs likewise rounded up to a
//           multiple of 16 (Kpp), zero-padded;
//   C       M x N floats, ldc apart; C = A op(W) + beta C.
#pragma once

#include <cstdint>

namespace fastlstm::cpu {

// Whether this process can use AMX-BF16: the CPU has AMX-TILE and AMX-BF16, and Linux granted
// the process the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, asked once).
bool amx_bf16_usable();

// Columns [64 c0, 64 c1) of C (chunks of two panels) over all rows, on the calling thread.
void amx_bf16_chunks(int64_t M, const uint32_t* A, int64_t lda, const uint32_t* panels,
                     int64_t Kpp, int64_t N, float beta, float* C, int64_t ldc, int64_t c0,
                     int64_t c1);

}  // namespace fastlstm::cpu
