#include "step_gemm_amx.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#if defined(__x86_64__) && defined(__linux__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define FASTLSTM_AMX 1
#else
#define FASTLSTM_AMX 0
#endif

#include "../torch_api.h"
#include "isa.h"

namespace fastlstm::cpu {

#if FASTLSTM_AMX
namespace {

constexpr long kArchReqXcompPerm = 0x1023;  // asm/prctl.h
constexpr long kXfeatureXtiledata = 18;

// LDTILECFG's 64-byte operand (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Every tile used is 64 bytes wide: tmm0-tmm3 the sums (`rows` rows x 16 floats) of columns
// [0, 16), [16, 32) of a chunk's first panel and of its second; tmm4 A (`rows` rows x 16
// pairs); tmm5 and tmm6 B (16 pair rows x 16 columns). rows (1 to 16) is a block's rows of A and
// C: a step with fewer than 16 active rows multiplies only those (TDPBF16PS's time follows the
// rows of A), and its sums go straight into C.
TileConfig config_for(int rows) {
  TileConfig config;
  for (int t = 0; t < 7; ++t) {
    config.rows[t] = static_cast<uint8_t>(t < 5 ? rows : 16);
    config.colsb[t] = 64;
  }
  return config;
}

thread_local int t_holds = 0;             // AmxTileHold depth on this thread
thread_local bool t_tiles_used = false;   // since this thread last released them
std::atomic<int64_t> g_config_loads{0};   // tests

// Configures the tiles for `rows` unless they already are (read back: another kernel on this
// thread may have configured or released them since).
__attribute__((target("amx-tile,amx-bf16"))) void configure(int rows) {
  t_tiles_used = true;
  const TileConfig want = config_for(rows);
  TileConfig now;
  _tile_storeconfig(&now);
  // GCC's tile intrinsics tell the compiler they touch 8 bytes of the config, which lets it
  // drop the other stores or loads: barriers keep them.
  asm volatile("" : : "r"(&now) : "memory");
  if (std::memcmp(&now, &want, sizeof want) == 0) return;
  asm volatile("" : : "r"(&want) : "memory");
  _tile_loadconfig(&want);
  g_config_loads.fetch_add(1, std::memory_order_relaxed);
}

// dst [the configured rows, ldd floats apart] (+)= as many rows of A times one chunk: panels p0
// and p1 (p1 null: one panel, dst's columns [32, 64) untouched), over Kpp pairs of k.
// accumulate: dst's values are loaded into the sums first (C += A op(W)), else the sums start at
// zero.
__attribute__((target("amx-tile,amx-bf16"))) void chunk_product(const uint32_t* A, int64_t lda,
                                                                const uint32_t* p0,
                                                                const uint32_t* p1, int64_t Kpp,
                                                                float* dst, int64_t ldd,
                                                                bool accumulate) {
  const int64_t stride = ldd * static_cast<int64_t>(sizeof(float));
  if (accumulate) {
    _tile_loadd(0, dst, stride);
    _tile_loadd(1, dst + 16, stride);
    if (p1 != nullptr) {
      _tile_loadd(2, dst + 32, stride);
      _tile_loadd(3, dst + 48, stride);
    }
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t k = 0; k < Kpp; k += 16) {
    _tile_loadd(4, A + k, lda * 4);
    _tile_loadd(5, p0 + k * 32, 128);
    _tile_loadd(6, p0 + k * 32 + 16, 128);
    _tile_dpbf16ps(0, 4, 5);
    _tile_dpbf16ps(1, 4, 6);
    if (p1 != nullptr) {
      _tile_loadd(5, p1 + k * 32, 128);
      _tile_loadd(6, p1 + k * 32 + 16, 128);
      _tile_dpbf16ps(2, 4, 5);
      _tile_dpbf16ps(3, 4, 6);
    }
  }
  _tile_stored(0, dst, stride);
  _tile_stored(1, dst + 16, stride);
  if (p1 != nullptr) {
    _tile_stored(2, dst + 32, stride);
    _tile_stored(3, dst + 48, stride);
  }
}

__attribute__((target("amx-tile"))) void release_tiles() {
  _tile_release();
  t_tiles_used = false;
}

}  // namespace

bool amx_bf16_usable() {
  static const bool usable = cpu_has_amx_bf16() &&
                             syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return usable;
}

void amx_bf16_chunks(int64_t M, const uint32_t* A, int64_t lda, const uint32_t* panels,
                     int64_t Kpp, int64_t N, float beta, float* C, int64_t ldc, int64_t c0,
                     int64_t c1) {
  FASTLSTM_CHECK(amx_bf16_usable(), "fastlstm: the AMX step GEMM needs AMX-BF16");
  alignas(64) float out[16 * 64];
  const int64_t panel_words = Kpp * 32, panel_count = (N + 31) / 32;
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t q = 2 * c, n0 = q * 32;
    const bool two = q + 1 < panel_count;
    const uint32_t* p0 = panels + q * panel_words;
    const int64_t cols = std::min<int64_t>(two ? 64 : 32, N - n0);
    for (int64_t r0 = 0; r0 < M; r0 += 16) {
      const uint32_t* p1 = two ? p0 + panel_words : nullptr;
      const int64_t rows = std::min<int64_t>(16, M - r0);
      // Read back at every chunk: measured faster than once a call (4 of 4 process pairs,
      // bfloat16 uni H = 256 B = 32 inference, loops 3.55-3.76 ms against 3.63-3.93).
      configure(static_cast<int>(rows));
      float* c_tile = C + r0 * ldc + n0;
      // A whole tile of C (its rows, every column of the chunk) is summed in place when beta is
      // 0 or 1 (the time loops' two cases); else through `out`.
      if (cols == (two ? 64 : 32) && (beta == 0.f || beta == 1.f)) {
        chunk_product(A + r0 * lda, lda, p0, p1, Kpp, c_tile, ldc, beta == 1.f);
        continue;
      }
      chunk_product(A + r0 * lda, lda, p0, p1, Kpp, out, 64, false);
      for (int64_t i = 0; i < rows; ++i) {
        float* row = c_tile + i * ldc;
        const float* sum = out + i * 64;
        if (beta == 0.f) {
          std::memcpy(row, sum, cols * sizeof(float));
        } else {
          for (int64_t j = 0; j < cols; ++j) row[j] = sum[j] + beta * row[j];
        }
      }
    }
  }
  // The tile state is large: not kept across the thread's other work.
  if (t_holds == 0) release_tiles();
}

AmxTileHold::AmxTileHold() { ++t_holds; }

AmxTileHold::~AmxTileHold() {
  if (--t_holds == 0 && t_tiles_used) release_tiles();
}

int64_t amx_tile_config_loads() { return g_config_loads.load(); }

#else

bool amx_bf16_usable() { return false; }

void amx_bf16_chunks(int64_t, const uint32_t*, int64_t, const uint32_t*, int64_t, int64_t, float,
                     float*, int64_t, int64_t, int64_t) {
  FASTLSTM_CHECK(false, "fastlstm: the AMX step GEMM needs an x86-64 Linux build");
}

AmxTileHold::AmxTileHold() = default;
AmxTileHold::~AmxTileHold() = default;
int64_t amx_tile_config_loads() { return 0; }

#endif

}  // namespace fastlstm::cpu
