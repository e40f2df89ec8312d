#include "step_gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <torch/csrc/stable/ops.h>

#include "../torch_api.h"
#include "convert.h"
#include "fma_peak.h"
#include "step_gemm_amx.h"
#include "step_team.h"

namespace fastlstm::cpu {
namespace {

std::atomic<int64_t> g_step_gemms{0}, g_split_step_gemms{0};

// One tile: C [MR, cols] = A [MR, kc] panels [kc, P NR] + beta C, over P consecutive panels
// (panel_stride words apart), cols <= P NR; A's rows lda words apart. A word is a float, or for
// the bf16_pairs format a 32-bit pair of bfloat16 along k (so kc counts pairs there).
template <typename Word>
using TileFn = void (*)(int64_t kc, const Word* A, int64_t lda, const Word* panel,
                        int64_t panel_stride, float beta, float* C, int64_t ldc, int64_t cols);

// A variant: tile[MR][j] runs MR rows (1 <= MR <= mr) over kPanels[j] panels; panels_for[MR]
// is how many panels a tile of MR rows takes at once. Few rows take several panels, so that
// enough independent accumulators cover the FMA latency (at least 8 on the x86 variants).
// even_row_tiles: M rows that leave 1-3 over mr run as tiles of sizes at most one apart (13
// rows: 7 + 6, not 12 + 1).
constexpr int kPanels[3] = {1, 2, 4};
template <typename Word>
struct VariantOf {
  int64_t mr, nr;
  int64_t panels_for[13];
  TileFn<Word> tile[13][3];
  bool even_row_tiles = false;
};
using Variant = VariantOf<float>;

// Portable (any CPU; GCC vectorises the j loops with the baseline's SSE2): 4 rows x 16 columns.
template <int MR, int P>
void tile_portable(int64_t kc, const float* A, int64_t lda, const float* panel,
                   int64_t panel_stride, float beta, float* C, int64_t ldc, int64_t cols) {
  constexpr int NR = 16;
  float acc[MR][P * NR] = {};
  for (int64_t k = 0; k < kc; ++k)
    for (int p = 0; p < P; ++p) {
      const float* b = panel + p * panel_stride + k * NR;
      for (int i = 0; i < MR; ++i) {
        const float a = A[i * lda + k];
        for (int j = 0; j < NR; ++j) acc[i][p * NR + j] += a * b[j];
      }
    }
  for (int i = 0; i < MR; ++i)
    for (int64_t j = 0; j < cols; ++j)
      C[i * ldc + j] = beta == 0.f ? acc[i][j] : acc[i][j] + beta * C[i * ldc + j];
}

#if defined(__x86_64__)
// AVX2 + FMA: panels of 16 columns (two 8-wide vectors); 6 rows x 1 panel = 12 accumulators,
// with the 2 panel vectors and a broadcast in 15 of the 16 registers.
__attribute__((target("avx2,fma"))) inline __m256i lanes_below_avx2(int64_t n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(n, 0, 8))),
                            lane);
}

template <int MR, int P>
__attribute__((target("avx2,fma"))) void tile_avx2(int64_t kc, const float* A, int64_t lda,
                                                   const float* panel, int64_t panel_stride,
                                                   float beta, float* C, int64_t ldc,
                                                   int64_t cols) {
  constexpr int V = 2 * P;  // vectors a row
  __m256 acc[MR][V];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 12
    for (int v = 0; v < V; ++v) acc[i][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    // The panels' rows 8 steps ahead, towards L1 (as the AVX-512 tile).
#pragma GCC unroll 12
    for (int p = 0; p < P; ++p)
      _mm_prefetch(reinterpret_cast<const char*>(panel + p * panel_stride + (k + 8) * 16),
                   _MM_HINT_T0);
    __m256 b[V];
#pragma GCC unroll 12
    for (int v = 0; v < V; ++v)
      b[v] = _mm256_load_ps(panel + (v / 2) * panel_stride + k * 16 + (v % 2) * 8);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m256 a = _mm256_broadcast_ss(A + i * lda + k);
#pragma GCC unroll 12
      for (int v = 0; v < V; ++v) acc[i][v] = _mm256_fmadd_ps(a, b[v], acc[i][v]);
    }
  }
  const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 12
    for (int v = 0; v < V; ++v) {
      float* c = C + i * ldc + v * 8;
      if (cols >= V * 8) {
        if (beta != 0.f) acc[i][v] = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), acc[i][v]);
        _mm256_storeu_ps(c, acc[i][v]);
      } else if (cols > v * 8) {
        const __m256i m = lanes_below_avx2(cols - v * 8);
        if (beta != 0.f) acc[i][v] = _mm256_fmadd_ps(vb, _mm256_maskload_ps(c, m), acc[i][v]);
        _mm256_maskstore_ps(c, m, acc[i][v]);
      }
    }
}

// AVX-512: panels of 32 columns (two 16-wide vectors); up to 12 rows x 1 panel = 24
// accumulators, with the 2 panel vectors in 26 of the 32 registers. Tiles of 12 rows rather
// than 8 read W a third less often per FMA: one thread, N = 2048, K = 512 (H = 512, W from L3),
// 16 rows 151 GFLOP/s against 141, 32 rows 155 against 148, 12 rows 154 against 134; H = 256
// level or faster (24 rows 168 against 163; medians of 3, 2026-12-07).
// Each FMA takes its A value as an embedded broadcast: a step of k is 2 P loads and 2 P MR FMAs.
__attribute__((target("avx512f"))) inline __mmask16 lanes_below_avx512(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// The AVX-512 tiles' common parts: MR x V accumulators zeroed, the panels' rows 8 steps of k
// ahead prefetched towards L1 (a weight larger than L2 streams from L3), and C = acc + beta C
// stored under a mask of the tile's columns.
template <int MR, int V>
__attribute__((target("avx512f"))) inline void zero_tile(__m512 (&acc)[MR][V]) {
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 12
    for (int v = 0; v < V; ++v) acc[i][v] = _mm512_setzero_ps();
}
template <int V, typename Word>
__attribute__((target("avx512f"))) inline void prefetch_panels(const Word* panel,
                                                              int64_t panel_stride, int64_t k) {
#pragma GCC unroll 12
  for (int v = 0; v < V; ++v)
    _mm_prefetch(reinterpret_cast<const char*>(panel + (v / 2) * panel_stride + (k + 8) * 32 +
                                               (v % 2) * 16),
                 _MM_HINT_T0);
}
template <int MR, int V>
__attribute__((target("avx512f"))) inline void store_tile(__m512 (&acc)[MR][V], float beta,
                                                         float* C, int64_t ldc, int64_t cols) {
  const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 12
    for (int v = 0; v < V; ++v) {
      float* c = C + i * ldc + v * 16;
      const __mmask16 m = lanes_below_avx512(cols - v * 16);
      if (beta != 0.f) acc[i][v] = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c), acc[i][v]);
      _mm512_mask_storeu_ps(c, m, acc[i][v]);
    }
}

template <int MR, int P>
__attribute__((target("avx512f"))) void tile_avx512(int64_t kc, const float* A, int64_t lda,
                                                    const float* panel, int64_t panel_stride,
                                                    float beta, float* C, int64_t ldc,
                                                    int64_t cols) {
  constexpr int V = 2 * P;  // vectors a row
  __m512 acc[MR][V];
  zero_tile(acc);
  for (int64_t k = 0; k < kc; ++k) {
    prefetch_panels<V>(panel, panel_stride, k);
    __m512 b[V];
#pragma GCC unroll 12
    for (int v = 0; v < V; ++v)
      b[v] = _mm512_load_ps(panel + (v / 2) * panel_stride + k * 32 + (v % 2) * 16);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(A[i * lda + k]);
#pragma GCC unroll 12
      for (int v = 0; v < V; ++v) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
    }
  }
  store_tile(acc, beta, C, ldc, cols);
}

// AVX512_BF16 on bf16_pairs panels: the AVX-512 tile's shape (32 columns a panel, 8 rows), each
// k step a pair of k: one VDPBF16PS adds a_i(2kp) w(2kp) + a_i(2kp+1) w(2kp+1) to 16 columns'
// float sums (both products exact in float, as in VFMADD231PS; denormals flushed to zero).
template <int MR, int P>
__attribute__((target("avx512f,avx512bf16"))) void tile_avx512_bf16(
    int64_t kc, const uint32_t* A, int64_t lda, const uint32_t* panel, int64_t panel_stride,
    float beta, float* C, int64_t ldc, int64_t cols) {
  constexpr int V = 2 * P;  // vectors a row
  __m512 acc[MR][V];
  zero_tile(acc);
  for (int64_t k = 0; k < kc; ++k) {
    prefetch_panels<V>(panel, panel_stride, k);
    __m512bh b[V];
#pragma GCC unroll 12
    for (int v = 0; v < V; ++v)
      b[v] = (__m512bh)_mm512_load_si512(panel + (v / 2) * panel_stride + k * 32 + (v % 2) * 16);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A[i * lda + k]));
#pragma GCC unroll 12
      for (int v = 0; v < V; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
    }
  }
  store_tile(acc, beta, C, ldc, cols);
}
#endif

#define FASTLSTM_TILE_ROW(F, MR) {F<MR, 1>, F<MR, 2>, F<MR, 4>}
#define FASTLSTM_NO_TILES {nullptr, nullptr, nullptr}

const Variant& variant(Isa isa) {
  static const Variant portable{
      4, 16, {0, 2, 1, 1, 1, 0, 0, 0, 0},
      {FASTLSTM_NO_TILES, FASTLSTM_TILE_ROW(tile_portable, 1), FASTLSTM_TILE_ROW(tile_portable, 2),
       FASTLSTM_TILE_ROW(tile_portable, 3), FASTLSTM_TILE_ROW(tile_portable, 4)}};
#if defined(__x86_64__)
  static const Variant avx2{
      6, 16, {0, 2, 2, 1, 1, 1, 1, 0, 0},
      {FASTLSTM_NO_TILES, FASTLSTM_TILE_ROW(tile_avx2, 1), FASTLSTM_TILE_ROW(tile_avx2, 2),
       FASTLSTM_TILE_ROW(tile_avx2, 3), FASTLSTM_TILE_ROW(tile_avx2, 4),
       FASTLSTM_TILE_ROW(tile_avx2, 5), FASTLSTM_TILE_ROW(tile_avx2, 6)}};
  static const Variant avx512{
      12, 32, {0, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1},
      {FASTLSTM_NO_TILES, FASTLSTM_TILE_ROW(tile_avx512, 1), FASTLSTM_TILE_ROW(tile_avx512, 2),
       FASTLSTM_TILE_ROW(tile_avx512, 3), FASTLSTM_TILE_ROW(tile_avx512, 4),
       FASTLSTM_TILE_ROW(tile_avx512, 5), FASTLSTM_TILE_ROW(tile_avx512, 6),
       FASTLSTM_TILE_ROW(tile_avx512, 7), FASTLSTM_TILE_ROW(tile_avx512, 8),
       FASTLSTM_TILE_ROW(tile_avx512, 9), FASTLSTM_TILE_ROW(tile_avx512, 10),
       FASTLSTM_TILE_ROW(tile_avx512, 11), FASTLSTM_TILE_ROW(tile_avx512, 12)},
      true};
  if (isa == Isa::avx512) return avx512;
  if (isa == Isa::avx2) return avx2;
#endif
  return portable;
}

}  // namespace

int64_t step_gemm_tile_rows() { return variant(isa()).mr; }

namespace {

// The bf16_pairs variant (AVX512_BF16; only reached where bf16_kernel() is pairs).
const VariantOf<uint32_t>& bf16_variant() {
#if defined(__x86_64__)
  static const VariantOf<uint32_t> v{
      8, 32, {0, 4, 4, 2, 2, 1, 1, 1, 1},
      {FASTLSTM_NO_TILES, FASTLSTM_TILE_ROW(tile_avx512_bf16, 1),
       FASTLSTM_TILE_ROW(tile_avx512_bf16, 2), FASTLSTM_TILE_ROW(tile_avx512_bf16, 3),
       FASTLSTM_TILE_ROW(tile_avx512_bf16, 4), FASTLSTM_TILE_ROW(tile_avx512_bf16, 5),
       FASTLSTM_TILE_ROW(tile_avx512_bf16, 6), FASTLSTM_TILE_ROW(tile_avx512_bf16, 7),
       FASTLSTM_TILE_ROW(tile_avx512_bf16, 8)},
      true};
#else
  static const VariantOf<uint32_t> v{1, 1, {}, {}};
#endif
  return v;
}

#undef FASTLSTM_TILE_ROW
#undef FASTLSTM_NO_TILES

// FASTLSTM_CPU_POISON_PACKS=1 (tests; read at every pack): packed weights start as 0xFF bytes
// (NaN in every float type) before the pack writes them, so that a padding left unwritten
// shows as NaN in the products instead of whatever the allocator handed back.
bool poison_packs() {
  const char* v = std::getenv("FASTLSTM_CPU_POISON_PACKS");
  return v != nullptr && std::strcmp(v, "0") != 0;
}

// K is taken in blocks of kc = 512 (a panel's block: kc x NR words), so that the products of
// H <= 512 (forward) run their K in one block: each further block stores and reloads the C tile
// and restarts the tile's loop. Blocks sized to half of L1 (kc = 192 on the Xeon's 48 KB) ran
// slower with 12-row tiles: one thread, GFLOP/s, kc 192 against 512, H = 256 16 rows 153-159
// against 166-169, H = 512 16 rows 148-153 against 157-158, the backward at H = 256 (K = 1024)
// 157-159 against 164-165; layers (3 alternating process pairs, nn.LSTM padded over fastlstm):
// uni I = 256 H = 512 B = 32 nearfull inference 0.91-0.98 against 1.01-1.05, uni H = 256
// nearfull 0.93-0.98 against 0.99. The panel block then streams from L2, which the tiles'
// prefetch covers. AVX2 (16-column panels) measured level. FASTLSTM_CPU_STEP_GEMM_KC overrides
// it (read once).
int64_t k_block() {
  static const char* forced = std::getenv("FASTLSTM_CPU_STEP_GEMM_KC");
  if (forced != nullptr) return std::max<int64_t>(1, std::atoll(forced));
  return 512;
}
// Panels a chunk of C's columns holds: the chunk's rows all run before the next chunk's, so
// each panel is read from memory once per K block however many rows there are.
constexpr int64_t kChunkPanels = 4;
constexpr int64_t kSplitWeightBytes = int64_t(1) << 20;
// bf16_pairs needs VDPBF16PS to multiply this much faster than VFMADD231PS (flops per second,
// measured once per process): on the Xeon it runs at half the FMA's rate (40 against 80
// GMAC/s on one core), where float panels are the faster bfloat16 kernel.
constexpr double kPairsMinGain = 1.25;

// n values of src as floats: src itself for float, else widened (exact) into buffer.
const float* as_floats(const float* src, int64_t, float*) { return src; }
template <typename T>
const float* as_floats(const T* src, int64_t n, float* buffer) {
  widen(src, buffer, n);
  return buffer;
}

#if defined(__x86_64__)
// dst[t ldd + i] = src[i lds + t] for i, t in [0, 16): a 16 x 16 float transpose in registers
// (unpack pairs, then pairs of pairs, then 128-bit lanes twice).
__attribute__((target("avx512f"))) void transpose16x16(const float* src, int64_t lds, float* dst,
                                                       int64_t ldd) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), e = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
  }
  for (int g = 0; g < 16; g += 8)
    for (int i = 0; i < 4; ++i) {
      t[g + i] = _mm512_shuffle_f32x4(r[g + i], r[g + i + 4], 0x88);
      t[g + i + 4] = _mm512_shuffle_f32x4(r[g + i], r[g + i + 4], 0xdd);
    }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ldd, r[i]);
}
#endif

// Whole 16 x 16 blocks of a float32 panel of 32 columns from W stored [N, K] (trans), k in
// [0, k_end) with k_end a multiple of 16, by register transposes on AVX-512 (2.3x faster than
// the element loop below for 1 MB, 102 against 45 us, 2-core Xeon; a pack per layer call is
// 17% of a 20-step call at B = 1, H = 256). Returns k_end, or 0 where it does not apply.
template <typename S>
int64_t pack_trans_blocks(const StepPanels& s, const S* w, int64_t ld, int64_t n0, int64_t cols,
                          float* dst) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<S, float>) {
    if (s.isa != Isa::avx512 || s.nr != 32 || cols != 32) return 0;
    const int64_t k_end = s.K / 16 * 16;
    for (int64_t k0 = 0; k0 < k_end; k0 += 16)
      for (int64_t h = 0; h < 32; h += 16)
        transpose16x16(w + (n0 + h) * ld + k0, ld, dst + k0 * 32 + h, 32);
    return k_end;
  }
#endif
  (void)s, (void)w, (void)ld, (void)n0, (void)cols, (void)dst;
  return 0;
}

// op(W) of float, bfloat16 or float16 as float32 panels (see step_gemm.h). The half types are
// widened straight into the panels, 64 values at a time: no widened copy of W (at H = 512 that
// was 4 MB beside the panels while packing).
template <typename S>
StepPanels pack_float_panels(bool trans, int64_t N, int64_t K, const S* w, int64_t ld) {
  StepPanels s;
  s.isa = isa();
  s.N = N;
  s.K = K;
  s.nr = variant(s.isa).nr;
  const int64_t nr = s.nr, panels = (N + nr - 1) / nr;
  const size_t bytes = std::max<size_t>(64, (panels * K * nr * sizeof(float) + 63) / 64 * 64);
  s.data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)), std::free);
  FASTLSTM_CHECK(s.data != nullptr, "fastlstm: could not allocate ", bytes,
              " bytes for a packed weight");
  if (poison_packs()) std::memset(s.data.get(), 0xFF, bytes);
  constexpr int64_t kBlock = 64;
  float buffer[kBlock];
  for (int64_t p = 0; p < panels; ++p) {
    float* dst = s.data.get() + p * K * nr;
    const int64_t n0 = p * nr, cols = std::min(nr, N - n0);
    if (trans) {
      // op(W)[k][n] = w[n ld + k]: blocks of 64 k, so the panel's block stays in L1 while
      // the panel's rows of W are read along k (after the register transposes' k, if any).
      for (int64_t k0 = pack_trans_blocks(s, w, ld, n0, cols, dst); k0 < K; k0 += kBlock) {
        const int64_t k1 = std::min(K, k0 + kBlock);
        for (int64_t j = 0; j < nr; ++j) {
          if (j >= cols) {
            for (int64_t k = k0; k < k1; ++k) dst[k * nr + j] = 0.f;
            continue;
          }
          const float* src = as_floats(w + (n0 + j) * ld + k0, k1 - k0, buffer);
          for (int64_t k = k0; k < k1; ++k) dst[k * nr + j] = src[k - k0];
        }
      }
    } else {
      for (int64_t k = 0; k < K; ++k) {
        const S* row = w + k * ld + n0;
        if constexpr (std::is_same_v<S, float>) {
          std::memcpy(dst + k * nr, row, cols * sizeof(float));
        } else {
          widen(row, dst + k * nr, cols);
        }
        std::fill(dst + k * nr + cols, dst + (k + 1) * nr, 0.f);
      }
    }
  }
  return s;
}

}  // namespace

StepPanels pack_step_weight(bool trans, int64_t N, int64_t K, const float* w, int64_t ld) {
  return pack_float_panels(trans, N, K, w, ld);
}

namespace {

// run_chunks(c0, c1) over a product's column chunks [0, chunks), counted in g_step_gemms. In a
// step team (the steps partition), a weight of at least kSplitWeightBytes is split by chunks
// over the team, each thread streaming its own share of W (half of a 4 MB W_hh fits one L2);
// else the calling thread runs them all.
template <typename RunChunks>
void run_chunks_on_team(int64_t chunks, int64_t weight_bytes, const RunChunks& run_chunks) {
  g_step_gemms.fetch_add(1, std::memory_order_relaxed);
  StepTeam* team = current_step_team();
  if (team != nullptr && team->size() > 1 && weight_bytes >= kSplitWeightBytes && chunks > 1) {
    g_split_step_gemms.fetch_add(1, std::memory_order_relaxed);
    team->split(chunks, run_chunks);
  } else {
    run_chunks(0, chunks);
  }
}

// C [M, N] = A [M, Kw words] panels + beta C through variant v's tiles (the body of step_gemm
// and step_gemm_lowp once A is in words).
template <typename Word>
void run_tiles(const VariantOf<Word>& v, int64_t M, const Word* A, int64_t lda, const Word* panels,
               int64_t Kw, int64_t N, float beta, float* C, int64_t ldc) {
  const int64_t nr = v.nr, K = Kw, panel_count = (N + nr - 1) / nr, stride = K * nr;
  const int64_t kc = k_block();
  // Chunks [c0, c1) of kChunkPanels panels each: every K block, every row block. Every other
  // call on a thread walks W backwards (K blocks and chunks in reverse): a W larger than L2
  // then starts each step on the part the previous step read last, still in L2, instead of
  // the part least recently read, which an LRU-like cache has evicted first (a forward walk
  // over a W slightly larger than L2 misses on every line).
  const int64_t chunks = (panel_count + kChunkPanels - 1) / kChunkPanels;
  const int64_t kblocks = std::max<int64_t>(1, (K + kc - 1) / kc);  // K = 0: one pass, C = beta C
  thread_local uint32_t t_calls = 0;
  const bool backwards = (t_calls++ & 1) != 0;
  // Row tiles: as few as mr allows. Where mr leaves 1-3 rows over, a variant with
  // even_row_tiles makes their sizes at most one apart: on the Xeon's AVX-512 a 1-row tile
  // runs at about half the FMA rate (one W load an FMA), and one thread's H = 256 products
  // (N = 4H, K = H) took 13 rows at 155 GFLOP/s against 149, 15 at 155 against 142, 26 at 164
  // against 157 (medians of 3; at H = 512 13-14 rows lost up to 7%, 25-27 gained 2-3%). On
  // AVX2 (mr 6) and the portable tiles even tiles were slower.
  const int64_t row_tiles = (M + v.mr - 1) / v.mr, over = M % v.mr;
  const bool even = v.even_row_tiles && M > v.mr && over != 0 && over <= 3;
  const auto row_tile_rows = [&](int64_t tile) {
    if (!even) return std::min(v.mr, M - tile * v.mr);
    return M / row_tiles + (tile < M % row_tiles ? 1 : 0);
  };
  const auto run_chunks = [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < kblocks; ++i) {
      const int64_t k0 = (backwards ? kblocks - 1 - i : i) * kc;
      const int64_t kn = std::min(kc, K - k0);
      const float b = i == 0 ? beta : 1.f;  // later K blocks add to the first's sums
      for (int64_t j = c0; j < c1; ++j) {
        const int64_t q0 = (backwards ? c1 - 1 - (j - c0) : j) * kChunkPanels;
        const int64_t q1 = std::min(panel_count, q0 + kChunkPanels);
        for (int64_t tile = 0, r0 = 0; tile < row_tiles; r0 += row_tile_rows(tile++)) {
          const int64_t rows = row_tile_rows(tile);
          for (int64_t q = q0; q < q1;) {
            int t = 2;  // the widest tile that fits the rows' choice and the panels left
            while (kPanels[t] > std::min(v.panels_for[rows], q1 - q)) --t;
            v.tile[rows][t](kn, A + r0 * lda + k0, lda, panels + q * stride + k0 * nr, stride, b,
                            C + r0 * ldc + q * nr, ldc, std::min(kPanels[t] * nr, N - q * nr));
            q += kPanels[t];
          }
        }
      }
    }
  };
  run_chunks_on_team(chunks, N * K * int64_t(sizeof(Word)), run_chunks);
}

// A's rows in a thread's buffer of words, rows ld words apart (ld: the row length, plus 16 where
// that is a multiple of 1024 words; see step_gemm). The buffer lives until the thread's next
// call.
template <typename Word>
Word* a_buffer(int64_t M, int64_t row_words, int64_t& ld) {
  thread_local std::vector<Word> buffer;
  ld = row_words % 1024 == 0 ? row_words + 16 : row_words;
  buffer.resize(static_cast<size_t>(std::max<int64_t>(1, M * ld)));
  return buffer.data();
}

}  // namespace

void step_gemm(int64_t M, const float* A, int64_t lda, const StepPanels& w, float beta, float* C,
               int64_t ldc) {
  if (M <= 0 || w.N <= 0) return;
  FASTLSTM_CHECK(w.format == PanelFormat::f32, "fastlstm: step_gemm needs float panels");
  // Rows a multiple of 4 KB apart (the backward's dgates at H = 256: 4H floats) all fall in
  // one set of L1, and a tile's rows evict each other: such an A is copied with its rows
  // 64 bytes further apart (a copy of M K floats, against M N K multiply-adds).
  if (lda % 1024 == 0 && M > 1) {
    int64_t ld = 0;
    float* copy = a_buffer<float>(M, w.K, ld);
    for (int64_t i = 0; i < M; ++i) std::memcpy(copy + i * ld, A + i * lda, w.K * sizeof(float));
    A = copy;
    lda = ld;
  }
  run_tiles(variant(w.isa), M, A, lda, w.data.get(), w.K, w.N, beta, C, ldc);
}

Bf16Kernel bf16_kernel() {
#if defined(__x86_64__)
  static const bool avx512 = [] {
    const char* cap = std::getenv("FASTLSTM_CPU_ISA");
    return isa() == Isa::avx512 && !(cap != nullptr && std::strcmp(cap, "avx512") == 0);
  }();
  if (!avx512) return Bf16Kernel::floats;
  const bool pairs_possible = __builtin_cpu_supports("avx512bf16");
  if (const char* forced = std::getenv("FASTLSTM_CPU_BF16_KERNEL")) {
    if (std::strcmp(forced, "amx") == 0 && amx_bf16_usable()) return Bf16Kernel::amx;
    if (std::strcmp(forced, "pairs") == 0 && pairs_possible) return Bf16Kernel::pairs;
    if (std::strcmp(forced, "float") == 0) return Bf16Kernel::floats;
  }
  if (amx_bf16_usable()) return Bf16Kernel::amx;
  static const bool pairs_pay = pairs_possible && [] {
    // Best of 3 runs of 1 ms each, one thread: VDPBF16PS against VFMADD231PS.
    double pairs = 0, fma = 0;
    for (int run = 0; run < 3; ++run) {
      pairs = std::max(pairs, bf16_dot_gflops(1e-3));
      fma = std::max(fma, fma_peak_gflops(1, 1e-3));
    }
    return pairs >= kPairsMinGain * fma;
  }();
  return pairs_pay ? Bf16Kernel::pairs : Bf16Kernel::floats;
#else
  return Bf16Kernel::floats;
#endif
}

const char* bf16_kernel_name(Bf16Kernel k) {
  switch (k) {
    case Bf16Kernel::amx: return "amx";
    case Bf16Kernel::pairs: return "pairs";
    default: return "float";
  }
}

namespace {
constexpr int64_t kAmxPairs = 16;  // an AMX tile's k extent in pairs (32 bfloat16)

int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }
// K values as pairs along k, rounded up to a multiple of `multiple` pairs.
int64_t pairs_of(int64_t K, int64_t multiple) { return round_up((K + 1) / 2, multiple); }

#if defined(__x86_64__)
// Rows n0 .. n0 + 31 of W [N, K] (ld apart), pairs kp0 .. kp0 + 15 of each, into a panel's rows
// kp0 .. kp0 + 15 (32 words each): two 16 x 16 transposes of 32-bit words in registers, so
// that both the loads (64 bytes of a row) and the stores (64 bytes of a panel row) are whole
// vectors. Stages 1-2 transpose 4 x 4 blocks within each 128-bit lane (after them, register
// 4g + m holds in lane L column 4L + m of rows 4g .. 4g + 3); stages 3-4 transpose the lanes.
__attribute__((target("avx512f"))) void pack_pairs_block(const BFloat16* w, int64_t ld,
                                                         int64_t n0, int64_t kp0,
                                                         uint32_t* panel_row) {
  for (int half = 0; half < 2; ++half) {
    __m512i r[16], t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
      r[i] = _mm512_loadu_si512(w + (n0 + 16 * half + i) * ld + 2 * kp0);
#pragma GCC unroll 12
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      r[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
      r[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
      r[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
      r[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
#pragma GCC unroll 4
    for (int m = 0; m < 4; ++m) {
      const __m512i u0 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0x44);
      const __m512i u1 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0xEE);
      const __m512i u2 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0x44);
      const __m512i u3 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0xEE);
      // column 4L + m of the 16 rows is panel row kp0 + 4L + m, columns 16 half ..
      uint32_t* dst = panel_row + 16 * half;
      _mm512_storeu_si512(dst + (m) * 32, _mm512_shuffle_i32x4(u0, u2, 0x88));
      _mm512_storeu_si512(dst + (4 + m) * 32, _mm512_shuffle_i32x4(u0, u2, 0xDD));
      _mm512_storeu_si512(dst + (8 + m) * 32, _mm512_shuffle_i32x4(u1, u3, 0x88));
      _mm512_storeu_si512(dst + (12 + m) * 32, _mm512_shuffle_i32x4(u1, u3, 0xDD));
    }
  }
}
#endif

// op(W) as bf16_pairs panels of 32 columns (step_gemm.h), K in pairs rounded up to a multiple
// of pairs_multiple (zeros: zero pairs add nothing).
StepPanels pack_bf16_pairs(bool trans, int64_t N, int64_t K, const BFloat16* w, int64_t ld,
                           PanelFormat format, int64_t pairs_multiple) {
  StepPanels s;
  s.isa = Isa::avx512;
  s.format = format;
  s.N = N;
  s.K = K;
  s.nr = 32;
  const int64_t nr = s.nr, panels = (N + nr - 1) / nr, Kp = pairs_of(K, pairs_multiple);
  const size_t bytes = std::max<size_t>(64, (panels * Kp * nr * 4 + 63) / 64 * 64);
  s.data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)), std::free);
  FASTLSTM_CHECK(s.data != nullptr, "fastlstm: could not allocate ", bytes,
                 " bytes for a packed weight");
  // Zeros first where no value of W goes (the pairs past K in every panel, the columns past N
  // in the last), then each column n of op(W) in turn, read along k: with trans (W [N, K], as
  // W_hh), row n of W, whose consecutive pairs are its 32-bit words; else column n of W [K, N].
  // A column's word kp goes to panel n / 32, row kp, column n % 32 (a pack of every layer call:
  // at B = 8, bfloat16, H = 256, a scalar loop over (panel, kp, column) that read W across rows
  // took 8% of inference, and a memset of the whole buffer first about 2%).
  auto* words = reinterpret_cast<uint32_t*>(s.data.get());
  if (poison_packs()) std::memset(words, 0xFF, bytes);
  const int64_t full_pairs = K / 2;  // pairs with both halves inside K
  const int64_t written_pairs = (K + 1) / 2;  // an odd K's last pair: (W[K - 1], 0)
  for (int64_t p = 0; p < panels; ++p)
    std::memset(words + (p * Kp + written_pairs) * nr, 0, (Kp - written_pairs) * nr * 4);
  // (Columns past N never reach C, but left as they were they could hold denormals, which
  // slow the multiplies on some CPUs.)
  if (const int64_t tail = N % nr; tail != 0)
    for (int64_t kp = 0; kp < written_pairs; ++kp)
      std::memset(words + ((panels - 1) * Kp + kp) * nr + tail, 0, (nr - tail) * 4);
  // W [N, K] (the time loops' W_hh and W_ih): whole blocks of 32 rows x 16 pairs transposed in
  // registers (pack_pairs_block; this function runs only where the CPU has AVX-512), the rest
  // of each row below, a word at a time.
  int64_t block_pairs = 0;
#if defined(__x86_64__)
  if (trans) {
    block_pairs = full_pairs / 16 * 16;
    for (int64_t p = 0; p < N / nr; ++p)
      for (int64_t kp0 = 0; kp0 < block_pairs; kp0 += 16)
        pack_pairs_block(w, ld, p * nr, kp0, words + (p * Kp + kp0) * nr);
  }
#endif
  for (int64_t n = 0; n < N; ++n) {
    uint32_t* dst = words + (n / nr) * Kp * nr + n % nr;
    if (trans) {
      const uint16_t* row = reinterpret_cast<const uint16_t*>(w + n * ld);
      const int64_t first = n < N / nr * nr ? block_pairs : 0;  // rows of whole panels: done
      for (int64_t kp = first; kp < full_pairs; ++kp)
        dst[kp * nr] = uint32_t(row[2 * kp]) | uint32_t(row[2 * kp + 1]) << 16;
      if (K % 2 != 0) dst[full_pairs * nr] = row[K - 1];
    } else {
      const uint16_t* col = reinterpret_cast<const uint16_t*>(w + n);
      for (int64_t kp = 0; kp < full_pairs; ++kp)
        dst[kp * nr] = uint32_t(col[2 * kp * ld]) | uint32_t(col[(2 * kp + 1) * ld]) << 16;
      if (K % 2 != 0) dst[full_pairs * nr] = col[(K - 1) * ld];
    }
  }
  return s;
}

// A's M rows as pairs along k in a thread's buffer, rows ld words apart, rows_multiple
// rows (zero past M) and pairs_multiple pairs (zero past K) in each: a copy of M K values,
// against M N K multiply-adds, which also aligns the pairs whatever lda is.
template <typename T>
uint32_t* a_pairs(int64_t M, const T* A, int64_t lda, int64_t K, int64_t rows_multiple,
                  int64_t pairs_multiple, int64_t& ld) {
  const int64_t Mp = round_up(M, rows_multiple), Kp = pairs_of(K, pairs_multiple);
  uint32_t* pairs = a_buffer<uint32_t>(Mp, Kp, ld);
  for (int64_t i = 0; i < Mp; ++i) {
    auto* row = reinterpret_cast<uint16_t*>(pairs + i * ld);
    const int64_t copied = i < M ? K : 0;
    if (copied > 0) std::memcpy(row, A + i * lda, copied * sizeof(T));
    std::fill(row + copied, row + 2 * Kp, uint16_t{0});
  }
  return pairs;
}
}  // namespace

template <typename T>
StepPanels pack_step_weight_lowp(bool trans, int64_t N, int64_t K, const T* w, int64_t ld) {
  if constexpr (std::is_same_v<T, BFloat16>) {
    switch (bf16_kernel()) {
      case Bf16Kernel::amx:
        return pack_bf16_pairs(trans, N, K, w, ld, PanelFormat::bf16_amx, kAmxPairs);
      case Bf16Kernel::pairs:
        return pack_bf16_pairs(trans, N, K, w, ld, PanelFormat::bf16_pairs, 1);
      default: break;
    }
  }
  return pack_float_panels(trans, N, K, w, ld);  // widened to float (exact)
}

template <typename T>
void step_gemm_lowp(int64_t M, const T* A, int64_t lda, const StepPanels& w, float beta, float* C,
                    int64_t ldc) {
  if (M <= 0 || w.N <= 0) return;
  int64_t ld = 0;
  const auto* panels = reinterpret_cast<const uint32_t*>(w.data.get());
  switch (w.format) {
    case PanelFormat::f32: {
      float* wide = a_buffer<float>(M, w.K, ld);
      for (int64_t i = 0; i < M; ++i) widen(A + i * lda, wide + i * ld, w.K);
      run_tiles(variant(w.isa), M, wide, ld, w.data.get(), w.K, w.N, beta, C, ldc);
      return;
    }
    case PanelFormat::bf16_pairs: {
      const uint32_t* pairs = a_pairs(M, A, lda, w.K, 1, 1, ld);
      run_tiles(bf16_variant(), M, pairs, ld, panels, pairs_of(w.K, 1), w.N, beta, C, ldc);
      return;
    }
    case PanelFormat::bf16_amx: {
      // Rows in tiles of 16, k in tiles of 16 pairs; chunks of 2 panels (64 columns), split
      // over the step team as run_tiles splits its chunks.
      const uint32_t* pairs = a_pairs(M, A, lda, w.K, 16, kAmxPairs, ld);
      const int64_t Kpp = pairs_of(w.K, kAmxPairs);
      run_chunks_on_team((w.N + 63) / 64, w.N * Kpp * 4, [&](int64_t c0, int64_t c1) {
        amx_bf16_chunks(M, pairs, ld, panels, Kpp, w.N, beta, C, ldc, c0, c1);
      });
      return;
    }
  }
}

template StepPanels pack_step_weight_lowp<BFloat16>(bool, int64_t, int64_t, const BFloat16*,
                                                    int64_t);
template StepPanels pack_step_weight_lowp<Half>(bool, int64_t, int64_t, const Half*, int64_t);
template void step_gemm_lowp<BFloat16>(int64_t, const BFloat16*, int64_t, const StepPanels&, float,
                                       float*, int64_t);
template void step_gemm_lowp<Half>(int64_t, const Half*, int64_t, const StepPanels&, float,
                                   float*, int64_t);

StepGemm step_gemm_choice() {
  const char* e = std::getenv("FASTLSTM_CPU_STEP_GEMM");
  if (e != nullptr && std::strcmp(e, "own") == 0) return StepGemm::own;
  if (e != nullptr && std::strcmp(e, "blas") == 0) return StepGemm::blas;
  return StepGemm::automatic;
}

int64_t step_gemm_count() { return g_step_gemms.load(); }
int64_t split_step_gemm_count() { return g_split_step_gemms.load(); }

}  // namespace fastlstm::cpu
