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
// Outside an AmxTileHold the tiles are configured at the start and released at the end of
// every call; inside one they stay configured between calls.
void amx_bf16_chunks(int64_t M, const uint32_t* A, int64_t lda, const uint32_t* panels,
                     int64_t Kpp, int64_t N, float beta, float* C, int64_t ldc, int64_t c0,
                     int64_t c1);

// Keeps the calling thread's tiles configured between amx_bf16_chunks calls while alive (a row
// group's time loop: a call a step), and releases them at its end. LDTILECFG costs about 60 ns
// alone but stalls the pipeline; at every step it took 5.5% of a bfloat16 inference's samples
// (uni H = 256, B = 32, 2-core Xeon). Every chunk still reads the configuration back
// (STTILECFG, about 6 ns) and loads its own where other code on this thread left another or
// released the tiles (torch's BLAS does, between the inference's chunks of steps). Nests; does
// nothing where no AMX kernel ran (docs/PERFORMANCE.md, bfloat16).
class AmxTileHold {
 public:
  AmxTileHold();
  ~AmxTileHold();
  AmxTileHold(const AmxTileHold&) = delete;
  AmxTileHold& operator=(const AmxTileHold&) = delete;
};

// How many tile configurations this process loaded so far (tests).
int64_t amx_tile_config_loads();

}  // namespace fastlstm::cpu
