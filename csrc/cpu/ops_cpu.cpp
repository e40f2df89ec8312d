// The CPU kernels of the fastlstm ops: checks, then csrc/layer_ops.h on CpuBackend.
// While the CUDA emulation is switched on (tests), CPU calls run the CUDA backend's kernels on
// the CPU instead (csrc/emulated/emulated_ops.h).
#include <torch/csrc/stable/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../checks.h"
#include "../layer_ops.h"
#include "../emulated/emulated_ops.h"
#include "backend.h"
#include "convert.h"
#include "fma_peak.h"
#include "isa.h"
#include "step_gemm.h"
#include "step_gemm_amx.h"
#include "step_gemm_timing.h"
#include "step_team.h"

namespace fastlstm::cpu {
namespace {

void check_cpu_dtype(const Tensor& input) {
  const auto t = input.scalar_type();
  FASTLSTM_CHECK_VALUE(t == kFloat || t == kDouble || t == kBFloat16 || t == kHalf,
                       "fastlstm: on the CPU, input must be float32, float64, bfloat16 or "
                       "float16, got ", text(t));
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer_forward_cpu(
    const Tensor& input, const Tensor& lengths, const Tensor& h0, const Tensor& c0,
    const std::vector<Tensor>& weights, bool has_biases, bool has_projections,
    bool bidirectional, bool padded_reserve) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  if (simt::emulated_cuda_enabled())
    return simt::emulated_layer_forward(d, input, lengths, h0, c0, weights, padded_reserve);
  check_cpu_dtype(input);
  return run_layer_forward<CpuBackend, true>(d, input, lengths, h0, c0, weights,
                                             padded_reserve);
}

std::tuple<Tensor, Tensor, Tensor> lstm_layer_inference_cpu(
    const Tensor& input, const Tensor& lengths, const Tensor& h0, const Tensor& c0,
    const std::vector<Tensor>& weights, bool has_biases, bool has_projections,
    bool bidirectional) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  if (simt::emulated_cuda_enabled()) {
    auto [output, h_n, c_n, reserve] =
        simt::emulated_layer_forward(d, input, lengths, h0, c0, weights, false);
    return {output, h_n, c_n};
  }
  check_cpu_dtype(input);
  return run_layer_inference<CpuBackend, true>(d, input, lengths, h0, c0, weights);
}

// grad_output [T, B, C] with a last dim of stride s2 != 1 (sum()'s gradient, expanded: every
// stride 0) copied dense on the calling thread, W: an unsigned integer of the element's width.
template <typename W>
void copy_dense(const Tensor& g, Tensor& out) {
  const int64_t B = g.size(1), C = g.size(2);
  const int64_t s0 = g.stride(0), s1 = g.stride(1), s2 = g.stride(2);
  const W* in = static_cast<const W*>(g.const_data_ptr());
  W* o = static_cast<W*>(out.mutable_data_ptr());
  for (int64_t r = 0; r < g.size(0) * B; ++r) {
    const W* row = in + (r / B) * s0 + (r % B) * s1;
    W* dst = o + r * C;
    if (s2 == 0) {
      std::fill(dst, dst + C, row[0]);
    } else {
      for (int64_t j = 0; j < C; ++j) dst[j] = row[j * s2];
    }
  }
}

// grad_output for a call that will run serially (contention.h): a last dim that is not
// contiguous is made dense here, on the calling thread. check_backward_args would do it with
// torch's copy, which opens an OpenMP region from 32 K values (it was a serial backward's one
// region left), and keeps doing it for every other call, as before: there torch's copy runs
// on both threads (docs/PERFORMANCE.md, busy machines).
std::optional<Tensor> dense_grad_output(const LayerDims& d, const std::optional<Tensor>& g) {
  const int64_t most_macs = layer_macs(d, d.T * d.B);  // every token valid: at most the call's
  if (!g.has_value() || !g->defined() || g->dim() != 3 || g->stride(2) == 1 ||
      g->numel() == 0 || g->device().type() != torch::stable::DeviceType::CPU ||
      !contended_serial(most_macs))
    return g;  // check_backward_args checks and copies the rest
  Tensor out = empty_like_device({g->size(0), g->size(1), g->size(2)}, g->scalar_type(), *g);
  switch (g->scalar_type()) {
    case kDouble: copy_dense<uint64_t>(*g, out); break;
    case kFloat: copy_dense<uint32_t>(*g, out); break;
    case kBFloat16:
    case kHalf: copy_dense<uint16_t>(*g, out); break;
    default: return g;  // check_backward_args names the dtype it expected
  }
  return out;
}

std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> lstm_layer_backward_cpu(
    const std::optional<Tensor>& grad_output, const std::optional<Tensor>& grad_h_n,
    const std::optional<Tensor>& grad_c_n, const Tensor& input, const Tensor& lengths,
    const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& weights,
    const Tensor& reserve, bool has_biases, bool has_projections, bool bidirectional,
    bool input_requires_grad) {
  const LayerDims d = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                       has_projections, bidirectional);
  const bool emulated = simt::emulated_cuda_enabled();
  if (!emulated) check_cpu_dtype(input);
  const BackwardGrads g = check_backward_args(
      d, input, emulated ? grad_output : dense_grad_output(d, grad_output), grad_h_n,
      grad_c_n, reserve);
  if (emulated)
    return simt::emulated_layer_backward(d, g, input, lengths, h0, c0, weights, reserve,
                                         input_requires_grad);
  return run_layer_backward<CpuBackend, true>(d, g, input, lengths, h0, c0, weights, reserve,
                                               input_requires_grad);
}

// The test ops' sorted lengths [B] (int64, descending), checked with their directions and
// thread count.
IndexList sorted_lengths_for_test(const Tensor& sorted_lengths, int64_t directions,
                                  int64_t threads) {
  FASTLSTM_CHECK_VALUE(sorted_lengths.dim() == 1 && sorted_lengths.scalar_type() == kLong &&
                           sorted_lengths.device().type() == torch::stable::DeviceType::CPU,
                       "fastlstm: sorted_lengths must be a 1-D int64 CPU tensor");
  FASTLSTM_CHECK_VALUE(directions == 1 || directions == 2,
                       "fastlstm: directions must be 1 or 2, got ", directions);
  FASTLSTM_CHECK_VALUE(threads >= 1, "fastlstm: threads must be >= 1, got ", threads);
  const Tensor l = as_contiguous(sorted_lengths);
  const int64_t B = l.numel();
  IndexList length(cptr<int64_t>(l), cptr<int64_t>(l) + B);
  for (int64_t j = 0; j < B; ++j)
    FASTLSTM_CHECK_VALUE(length[j] >= 0 && (j == 0 || length[j] <= length[j - 1]),
                         "fastlstm: sorted_lengths must be >= 0 and descending");
  return length;
}

// Test op: the row groups (partition.h) for sorted lengths [B] (int64, descending) -> [G, 3]
// int64 rows (direction, first row, end row).
Tensor row_groups_for_test(const Tensor& sorted_lengths, int64_t directions, int64_t threads,
                           std::string partition, int64_t tile_rows) {
  const IndexList length = sorted_lengths_for_test(sorted_lengths, directions, threads);
  FASTLSTM_CHECK_VALUE(partition == "rows" || partition == "steps",
                       "fastlstm: partition must be 'rows' or 'steps', got '", partition, "'");
  FASTLSTM_CHECK_VALUE(tile_rows >= 0, "fastlstm: tile_rows must be >= 0, got ", tile_rows);
  const auto groups = plan_row_groups(length, directions, threads,
                                      partition == "rows" ? Partition::rows : Partition::steps,
                                      StepCost{tile_rows});
  Tensor out = empty_cpu({static_cast<int64_t>(groups.size()), 3}, kLong);
  int64_t* o = ptr<int64_t>(out);
  for (const RowGroup& g : groups) {
    *o++ = g.dir;
    *o++ = g.r0;
    *o++ = g.r1;
  }
  return out;
}

// Test op: contention.h's stand-in for a thread descheduled before a call's join.
void delay_task_ends_checked(int64_t us) {
  FASTLSTM_CHECK_VALUE(us >= 0, "fastlstm: us must be >= 0, got ", us);
  delay_task_ends_for_test(us);
}

// Test op: the partition (partition.h, choose_partition) a float layer of H hidden units (Hout
// outputs) would take for these sorted lengths on `threads` threads and this L2 size.
std::string partition_choice_for_test(const Tensor& sorted_lengths, int64_t directions, int64_t H,
                                      int64_t Hout, int64_t threads, int64_t elem_bytes,
                                      int64_t l2_bytes) {
  LayerDims d;
  d.B = sorted_lengths.numel();
  d.H = H;
  d.Hout = Hout;
  d.D = directions;
  Schedule s;
  s.length = sorted_lengths_for_test(sorted_lengths, directions, threads);
  return choose_partition(d, s, threads, elem_bytes, l2_bytes) == Partition::steps ? "steps"
                                                                                  : "rows";
}
int64_t l2_bytes_for_test() { return l2_bytes_per_core(); }

// A step team of `helpers` helpers on a parallel loop, as the steps partition runs it: once every
// helper has joined (or 5 s have passed), leader(team) on the leader's thread, in the team's
// scope (test ops).
template <typename Leader>
void on_full_team(int64_t helpers, const Leader& leader) {
  StepTeam team(static_cast<int>(helpers));
  torch::stable::parallel_for(0, helpers + 1, 1, [&](int64_t i0, int64_t i1) {
    if (i0 == 0) {
      const StepTeamScope scope(&team);
      const auto start = std::chrono::steady_clock::now();
      while (team.size() < helpers + 1 &&
             std::chrono::steady_clock::now() - start < std::chrono::seconds(5))
        std::this_thread::yield();
      leader(team);
    } else if (i1 - i0 == 1) {
      team.serve();
    }
  });
}

// Test op: `jobs` jobs on a full step team (on_full_team). Returns how many jobs ran every one
// of helpers + 1 parts exactly once (jobs, when the team works).
int64_t step_team_selftest(int64_t helpers, int64_t jobs) {
  FASTLSTM_CHECK_VALUE(helpers >= 0 && helpers < 64, "fastlstm: helpers must be in [0, 64), got ",
                       helpers);
  int64_t good = 0;
  on_full_team(helpers, [&](StepTeam& team) {
    for (int64_t j = 0; j < jobs; ++j) {
      std::vector<std::atomic<int>> runs(static_cast<size_t>(helpers + 1));
      std::atomic<int> parts_seen{0};
      team.run([&](int part, int parts) {
        runs[static_cast<size_t>(part)].fetch_add(1);
        parts_seen.store(parts);
      });
      bool ok = parts_seen.load() == helpers + 1;
      for (int64_t p = 0; p <= helpers; ++p) ok = ok && runs[static_cast<size_t>(p)].load() == 1;
      good += ok ? 1 : 0;
    }
  });
  return good;
}
int64_t step_team_helped_count() { return StepTeam::helped_team_count(); }

// Test op: C [M, N] = A [M, K] B [K, N] (float32, random) through CpuBackend::team_gemm on a
// step team of `helpers` helpers that have all joined (as step_team_selftest), against the same
// product on one thread. Returns the largest difference, or -1 where team_gemm did not split it
// over the whole team (on_full_team).
double team_gemm_selftest(int64_t helpers, int64_t M, int64_t N, int64_t K) {
  FASTLSTM_CHECK_VALUE(helpers >= 1 && helpers < 64, "fastlstm: helpers must be in [1, 64), got ",
                       helpers);
  FASTLSTM_CHECK_VALUE(M >= 1 && N >= 1 && K >= 1 && M * N * K >= CpuBackend::kTeamGemmMinMacs,
                       "fastlstm: M N K must be at least ", CpuBackend::kTeamGemmMinMacs,
                       ", got ", M, " x ", N, " x ", K);
  std::vector<float> A(M * K), B(K * N), want(M * N), got(M * N, 0.f);
  for (size_t i = 0; i < A.size(); ++i) A[i] = float((i * 7919) % 1000) / 500.f - 1.f;
  for (size_t i = 0; i < B.size(); ++i) B[i] = float((i * 104729) % 1000) / 500.f - 1.f;
  gemm_rm<float>(false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, want.data(), N);
  const int64_t before = CpuBackend::team_gemm_count().load();
  on_full_team(helpers, [&](StepTeam& team) {
    if (team.size() == helpers + 1)
      CpuBackend::team_gemm<float>(false, false, M, N, K, A.data(), K, B.data(), N, 0.f,
                                   got.data(), N);
  });
  if (CpuBackend::team_gemm_count().load() == before) return -1.0;
  double diff = 0;
  for (size_t i = 0; i < want.size(); ++i)
    diff = std::max(diff, static_cast<double>(std::abs(got[i] - want[i])));
  return diff;
}

int64_t team_gemm_count() { return CpuBackend::team_gemm_count().load(); }
int64_t team_gemm_alone_count() { return CpuBackend::team_gemm_alone_count().load(); }
int64_t packed_input_count() { return CpuBackend::packed_input_count().load(); }

int64_t last_row_groups() { return last_row_group_count().load(); }

double loop_seconds() { return static_cast<double>(loop_nanoseconds().load()) * 1e-9; }

double fma_peak(int64_t threads, double seconds) {
  FASTLSTM_CHECK_VALUE(threads >= 1, "fastlstm: threads must be >= 1, got ", threads);
  FASTLSTM_CHECK_VALUE(seconds > 0 && seconds <= 10,
                       "fastlstm: seconds must be in (0, 10], got ", seconds);
  return fma_peak_gflops(threads, seconds);
}

std::string cpu_isa() { return isa_name(isa()); }

std::string bf16_kernel_for_test() { return bf16_kernel_name(bf16_kernel()); }

// Test ops: convert.h's narrow (a contiguous float32 CPU tensor to bfloat16 or float16) and
// widen (a contiguous bfloat16 or float16 CPU tensor to float32).
Tensor narrow_for_test(const Tensor& x, const std::string& dtype) {
  FASTLSTM_CHECK_VALUE(x.scalar_type() == kFloat && x.is_contiguous() &&
                           x.device().type() == torch::stable::DeviceType::CPU,
                       "fastlstm: x must be a contiguous float32 CPU tensor, got ",
                       text(x.scalar_type()));
  FASTLSTM_CHECK_VALUE(dtype == "bfloat16" || dtype == "float16",
                       "fastlstm: dtype must be 'bfloat16' or 'float16', got '", dtype, "'");
  const int64_t n = x.numel();
  Tensor out = empty_cpu({n}, dtype == "bfloat16" ? kBFloat16 : kHalf);
  if (dtype == "bfloat16") narrow(cptr<float>(x), ptr<BFloat16>(out), n);
  else narrow(cptr<float>(x), ptr<Half>(out), n);
  return out;
}
Tensor widen_for_test(const Tensor& x) {
  FASTLSTM_CHECK_VALUE((x.scalar_type() == kBFloat16 || x.scalar_type() == kHalf) &&
                           x.is_contiguous() && x.device().type() == torch::stable::DeviceType::CPU,
                       "fastlstm: x must be a contiguous bfloat16 or float16 CPU tensor, got ",
                       text(x.scalar_type()));
  const int64_t n = x.numel();
  Tensor out = empty_cpu({n}, kFloat);
  if (x.scalar_type() == kBFloat16) widen(cptr<BFloat16>(x), ptr<float>(out), n);
  else widen(cptr<Half>(x), ptr<float>(out), n);
  return out;
}

// Test op: a [M, K] op(w) + beta c through step_gemm, w packed by pack_step_weight (op(w) = w^T
// [K, N] when trans, w [N, K]; else w [K, N]); a and w bfloat16 or float16 go through
// step_gemm_lowp and pack_step_weight_lowp. CPU matrices whose rows are contiguous (any row
// stride); c [M, N] float32 is copied, not written; the result is float32.
Tensor step_gemm_for_test(const Tensor& a, const Tensor& w, bool trans, double beta,
                          const Tensor& c) {
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"a", &a}, {"w", &w},
                                {"c", &c}})
    FASTLSTM_CHECK_VALUE(t->dim() == 2 && t->device().type() == torch::stable::DeviceType::CPU &&
                             (t->size(1) <= 1 || t->stride(1) == 1),
                         "fastlstm: ", name, " must be a 2-D CPU matrix with contiguous rows, "
                         "got ", t->dim(), "-D");
  const ScalarType type = a.scalar_type();
  FASTLSTM_CHECK_VALUE(type == kFloat || type == kBFloat16 || type == kHalf,
                       "fastlstm: a must be float32, bfloat16 or float16, got ", text(type));
  FASTLSTM_CHECK_VALUE(w.scalar_type() == type, "fastlstm: w must be ", text(type),
                       " like a, got ", text(w.scalar_type()));
  FASTLSTM_CHECK_VALUE(c.scalar_type() == kFloat, "fastlstm: c must be float32, got ",
                       text(c.scalar_type()));
  const int64_t M = a.size(0), K = a.size(1), N = trans ? w.size(0) : w.size(1);
  FASTLSTM_CHECK_VALUE((trans ? w.size(1) : w.size(0)) == K, "fastlstm: op(w) must have ", K,
                       " rows (a's columns), got ", trans ? w.size(1) : w.size(0));
  FASTLSTM_CHECK_VALUE(c.size(0) == M && c.size(1) == N, "fastlstm: c must be [", M, ", ", N,
                       "], got [", c.size(0), ", ", c.size(1), "]");
  Tensor out = empty_cpu({M, N}, kFloat);
  for (int64_t i = 0; i < M; ++i)
    std::memcpy(ptr<float>(out) + i * N, cptr<float>(c) + i * c.stride(0), N * sizeof(float));
  const auto run = [&](auto zero) {
    using T = decltype(zero);
    if constexpr (std::is_same_v<T, float>) {
      const StepPanels panels = pack_step_weight(trans, N, K, cptr<float>(w), w.stride(0));
      step_gemm(M, cptr<float>(a), a.stride(0), panels, static_cast<float>(beta),
                ptr<float>(out), N);
    } else {
      const StepPanels panels = pack_step_weight_lowp(trans, N, K, cptr<T>(w), w.stride(0));
      step_gemm_lowp(M, cptr<T>(a), a.stride(0), panels, static_cast<float>(beta),
                     ptr<float>(out), N);
    }
  };
  if (type == kFloat) run(0.f);
  else if (type == kBFloat16) run(BFloat16());
  else run(Half());
  return out;
}

}  // namespace
}  // namespace fastlstm::cpu

// For tests: torch.ops.fastlstm._cpu_packed_gemm_available(), whether torch's BLAS has the packed
// GEMM that cpu::loop_weight uses, and _cpu_packed_gemm_count(), the per-step GEMMs that
// multiplied by a weight packed once per time loop so far in this process;
// _cpu_row_groups(sorted_lengths, directions, threads, partition, tile_rows), the groups of
// rows a layer runs on its own threads (csrc/cpu/partition.h; tile_rows: its StepCost's tile),
// _cpu_step_gemm_tile_rows(), the float32 step GEMM's tile here, and _cpu_last_row_groups(),
// how many the last CPU layer call ran; _cpu_partition_choice(...) and _cpu_l2_bytes(), the
// partition a layer would take and the L2 size it is judged by;
// _cpu_step_team_selftest(helpers, jobs) and _cpu_step_team_helped_count(), a step team's jobs
// and how many teams had a helper join (step_team.h); _cpu_team_gemm_count() and
// _cpu_team_gemm_alone_count(), how many GEMMs a step team split, and ran on its leader alone
// for want of a helper (backend.h's team_gemm);
// _cpu_team_gemm_selftest(helpers, M, N, K), one such split against the same GEMM unsplit.
// For the benchmark's roofline: _cpu_loop_seconds(), the wall time of all CPU layer calls'
// time loops so far; _cpu_fma_peak_gflops(threads, seconds), the float32 FMA
// peak measured on that many threads (fma_peak.h); _cpu_isa(), the instruction set in use;
// _cpu_step_gemm(a, w, trans, beta, c), one product through fastlstm's own per-step GEMM
// (step_gemm.h; bfloat16 and float16 through step_gemm_lowp), _cpu_bf16_kernel(), the
// bfloat16 kernel it takes here (amx, pairs or float), _cpu_amx_tile_config_loads(), how many
// AMX tile configurations were loaded so far (step_gemm_amx.h), _cpu_narrow(x, dtype) and
// _cpu_widen(x), the half types' row conversions (convert.h), _cpu_packed_input_count(), how
// many inference input weights were packed once for their chunks (CpuBackend::input_weight: the
// own step GEMM's panels; MKL's packed layout in float32 with FASTLSTM_CPU_STEP_GEMM=blas),
// _cpu_step_gemm_count() and
// _cpu_split_step_gemm_count(), how many of those
// ran so far in this process and how many split W over threads (steps partition), and
// _cpu_step_gemm_gflops(M, N, K, trans, how, seconds, dtype), one per-step product's speed with
// W packed once, own or MKL's, in float32, bfloat16 or float16 (step_gemm_timing.h);
// _cpu_contention_window_open() and _cpu_report_contention(contended), contention.h's window,
// _cpu_contention_state(), clean (0), one contended call (1) or a window (2), and
// _cpu_delay_task_ends(us), its stand-in for a thread descheduled before a call's join.
STABLE_TORCH_LIBRARY_FRAGMENT(fastlstm, m) {
  m.def("_cpu_packed_gemm_available() -> bool");
  m.def("_cpu_packed_gemm_count() -> int");
  m.def("_cpu_row_groups(Tensor sorted_lengths, int directions, int threads, str partition, "
        "int tile_rows=0) -> Tensor");
  m.def("_cpu_step_gemm_tile_rows() -> int");
  m.def("_cpu_last_row_groups() -> int");
  m.def("_cpu_contention_window_open() -> bool");
  m.def("_cpu_report_contention(bool contended) -> ()");
  m.def("_cpu_delay_task_ends(int us) -> ()");
  m.def("_cpu_contention_state() -> int");
  m.def("_cpu_partition_choice(Tensor sorted_lengths, int directions, int H, int Hout, "
        "int threads, int elem_bytes, int l2_bytes) -> str");
  m.def("_cpu_l2_bytes() -> int");
  m.def("_cpu_step_team_selftest(int helpers, int jobs) -> int");
  m.def("_cpu_step_team_helped_count() -> int");
  m.def("_cpu_team_gemm_count() -> int");
  m.def("_cpu_team_gemm_alone_count() -> int");
  m.def("_cpu_team_gemm_selftest(int helpers, int M, int N, int K) -> float");
  m.def("_cpu_loop_seconds() -> float");
  m.def("_cpu_fma_peak_gflops(int threads, float seconds) -> float");
  m.def("_cpu_isa() -> str");
  m.def("_cpu_step_gemm(Tensor a, Tensor w, bool trans, float beta, Tensor c) -> Tensor");
  m.def("_cpu_step_gemm_count() -> int");
  m.def("_cpu_bf16_kernel() -> str");
  m.def("_cpu_amx_tile_config_loads() -> int");
  m.def("_cpu_packed_input_count() -> int");
  m.def("_cpu_narrow(Tensor x, str dtype) -> Tensor");
  m.def("_cpu_widen(Tensor x) -> Tensor");
  m.def("_cpu_split_step_gemm_count() -> int");
  m.def("_cpu_step_gemm_gflops(int M, int N, int K, bool trans, str how, float seconds, "
        "str dtype=\"float32\") "
        "-> float");
}
STABLE_TORCH_LIBRARY_IMPL(fastlstm, CompositeExplicitAutograd, m) {
  m.impl("_cpu_packed_gemm_available", TORCH_BOX(&fastlstm::cpu::packed_gemm_available));
  m.impl("_cpu_packed_gemm_count", TORCH_BOX(&fastlstm::cpu::packed_gemm_count));
  m.impl("_cpu_row_groups", TORCH_BOX(&fastlstm::cpu::row_groups_for_test));
  m.impl("_cpu_step_gemm_tile_rows", TORCH_BOX(&fastlstm::cpu::step_gemm_tile_rows));
  m.impl("_cpu_last_row_groups", TORCH_BOX(&fastlstm::cpu::last_row_groups));
  m.impl("_cpu_contention_window_open", TORCH_BOX(&fastlstm::cpu::contention_window_open));
  m.impl("_cpu_report_contention", TORCH_BOX(&fastlstm::cpu::report_contention_for_test));
  m.impl("_cpu_delay_task_ends", TORCH_BOX(&fastlstm::cpu::delay_task_ends_checked));
  m.impl("_cpu_contention_state", TORCH_BOX(&fastlstm::cpu::contention_state));
  m.impl("_cpu_partition_choice", TORCH_BOX(&fastlstm::cpu::partition_choice_for_test));
  m.impl("_cpu_l2_bytes", TORCH_BOX(&fastlstm::cpu::l2_bytes_for_test));
  m.impl("_cpu_step_team_selftest", TORCH_BOX(&fastlstm::cpu::step_team_selftest));
  m.impl("_cpu_step_team_helped_count", TORCH_BOX(&fastlstm::cpu::step_team_helped_count));
  m.impl("_cpu_team_gemm_count", TORCH_BOX(&fastlstm::cpu::team_gemm_count));
  m.impl("_cpu_team_gemm_alone_count", TORCH_BOX(&fastlstm::cpu::team_gemm_alone_count));
  m.impl("_cpu_team_gemm_selftest", TORCH_BOX(&fastlstm::cpu::team_gemm_selftest));
  m.impl("_cpu_loop_seconds", TORCH_BOX(&fastlstm::cpu::loop_seconds));
  m.impl("_cpu_fma_peak_gflops", TORCH_BOX(&fastlstm::cpu::fma_peak));
  m.impl("_cpu_isa", TORCH_BOX(&fastlstm::cpu::cpu_isa));
  m.impl("_cpu_step_gemm", TORCH_BOX(&fastlstm::cpu::step_gemm_for_test));
  m.impl("_cpu_step_gemm_count", TORCH_BOX(&fastlstm::cpu::step_gemm_count));
  m.impl("_cpu_bf16_kernel", TORCH_BOX(&fastlstm::cpu::bf16_kernel_for_test));
  m.impl("_cpu_amx_tile_config_loads", TORCH_BOX(&fastlstm::cpu::amx_tile_config_loads));
  m.impl("_cpu_packed_input_count", TORCH_BOX(&fastlstm::cpu::packed_input_count));
  m.impl("_cpu_narrow", TORCH_BOX(&fastlstm::cpu::narrow_for_test));
  m.impl("_cpu_widen", TORCH_BOX(&fastlstm::cpu::widen_for_test));
  m.impl("_cpu_split_step_gemm_count", TORCH_BOX(&fastlstm::cpu::split_step_gemm_count));
  m.impl("_cpu_step_gemm_gflops", TORCH_BOX(&fastlstm::cpu::step_gemm_gflops));
}

STABLE_TORCH_LIBRARY_IMPL(fastlstm, CPU, m) {
  m.impl("lstm_layer_forward", TORCH_BOX(&fastlstm::cpu::lstm_layer_forward_cpu));
  m.impl("lstm_layer_backward", TORCH_BOX(&fastlstm::cpu::lstm_layer_backward_cpu));
  m.impl("lstm_layer_inference", TORCH_BOX(&fastlstm::cpu::lstm_layer_inference_cpu));
}
