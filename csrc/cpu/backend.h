// The CPU primitives of csrc/layer_driver.h: BLAS GEMMs, the vectorised fused cell, row copies
// spread over torch's intra-op threads. Both directions of a bidirectional layer run at once,
// one per thread; nested parallel loops and BLAS calls then run on their own thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "../loop_weight.h"
#include "../lstm.h"
#include "../schedule.h"
#include "../torch_api.h"
#include "cell.h"
#include "contention.h"
#include "convert.h"
#include "gemm.h"
#include "partition.h"
#include "step_gemm.h"
#include "step_gemm_amx.h"
#include "step_team.h"

namespace fastlstm::cpu {

struct CpuBackend {
  // w_ih and w_hh may arrive transposed (layer_io.h, transposed_weight): every GEMM and packing
  // of them takes a transpose flag, so Keras's kernel layout costs no copy.
  static constexpr bool kTransposedWeights = true;
  // Alive for one layer call (csrc/layer_ops.h): runs it serially where contention.h says so.
  struct CallScope {
    CallScope(const LayerDims& d, const Schedule& s)
        : serial(contended_serial(layer_macs(d, s))) {}
    SerialCallScope serial;
  };

  struct Context {
    explicit Context(const Tensor&) {}
    const int64_t* indices(const IndexList& v) { return v.data(); }
  };

  // bfloat16 / float16 (T != Acc): GEMMs accumulate in float (gemm_rm_acc); a GEMM whose
  // result is T (the forward's projection) goes through a float buffer. The cell computes in
  // float, then rounds h (forward) or dgates (backward) to T.
  template <typename T>
  static constexpr bool kLowp = std::is_same_v<T, BFloat16> || std::is_same_v<T, Half>;

  template <typename T, typename C>
  static void gemm(Context&, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A,
                   int64_t lda, const T* B, int64_t ldb, C beta, C* Cp, int64_t ldc) {
    if constexpr (!kLowp<T>) {
      static_assert(std::is_same_v<T, C>, "float32/64 accumulate in the tensor dtype");
      if (team_gemm<T>(ta, tb, M, N, K, A, lda, B, ldb, beta, Cp, ldc)) return;
      gemm_rm<T>(ta, tb, M, N, K, T(1), A, lda, B, ldb, beta, Cp, ldc);
    } else if constexpr (std::is_same_v<C, float>) {
      gemm_rm_acc<T>(ta, tb, M, N, K, A, lda, B, ldb, beta, Cp, ldc);
    } else {
      static_assert(std::is_same_v<T, C>);
      if (M == 0 || N == 0) return;
      std::vector<float> acc(M * N);
      if (float(beta) != 0.f)
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) acc[i * N + j] = float(Cp[i * ldc + j]);
      gemm_rm_acc<T>(ta, tb, M, N, K, A, lda, B, ldb, float(beta), acc.data(), N);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) Cp[i * ldc + j] = C(acc[i * N + j]);
    }
  }

  // Inside a step team's time loop (the steps partition), a GEMM of at least kTeamGemmMinMacs
  // multiply-adds (layer_inference's input projection of a chunk of steps) is split over the
  // team by C's longer side, so that the helpers do not idle while the leader runs it alone
  // (BLAS calls inside the layer's parallel region run on one thread). It is a team job like
  // any other: the loop's first job waits up to StepTeam::kJoinWait for helpers that start
  // late, and the first chunk's projection comes before the first step. Measured on the 2-core
  // Xeon, H = 512, I = 256, B = 32: see docs/PERFORMANCE.md. Returns false where it did not
  // run (no team, or too small).
  static constexpr int64_t kTeamGemmMinMacs = int64_t(1) << 20;
  // How many GEMMs team_gemm split over two or more threads so far in this process, and how
  // many it ran on the leader alone, no helper having joined (tests: _cpu_team_gemm_count,
  // _cpu_team_gemm_alone_count).
  static std::atomic<int64_t>& team_gemm_count() {
    static std::atomic<int64_t> count{0};
    return count;
  }
  static std::atomic<int64_t>& team_gemm_alone_count() {
    static std::atomic<int64_t> count{0};
    return count;
  }
  template <typename T>
  static bool team_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A,
                        int64_t lda, const T* B, int64_t ldb, T beta, T* Cp, int64_t ldc) {
    StepTeam* team = current_step_team();
    if (team == nullptr || M * N * K < kTeamGemmMinMacs) return false;
    constexpr int64_t kAlign = 16;  // shares of whole 64-byte lines of C (float32)
    const bool by_cols = N >= M;
    const int64_t blocks = ((by_cols ? N : M) + kAlign - 1) / kAlign;
    int used_parts = 1;
    team->run([&](int part, int parts) {
      if (part == 0) used_parts = parts;
      const auto [b0, b1] = team_share(blocks, part, parts);
      if (b0 >= b1) return;
      const int64_t i0 = b0 * kAlign, i1 = std::min(by_cols ? N : M, b1 * kAlign);
      if (by_cols)
        gemm_rm<T>(ta, tb, M, i1 - i0, K, T(1), A, lda, tb ? B + i0 * ldb : B + i0, ldb, beta,
                   Cp + i0, ldc);
      else
        gemm_rm<T>(ta, tb, i1 - i0, N, K, T(1), ta ? A + i0 : A + i0 * lda, lda, B, ldb, beta,
                   Cp + i0 * ldc, ldc);
    });
    (used_parts > 1 ? team_gemm_count() : team_gemm_alone_count())
        .fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  // op(W) for every step of a time loop (GEMMs of at most max_rows rows). float32 W is packed
  // once per call: into fastlstm's own panels (step_gemm.h, any CPU) or for MKL's packed GEMM,
  // where torch's BLAS has it and the loop repays the packing. Measured on a Xeon for MKL: 8
  // steps gain 1.1x, 4 lose up to 1.5x at H = 512; weights under 4H x H at H = 64 gain nothing
  // measurable (within +-10% at H = 16 and 32), and MKL's packed buffer takes ~8 MB of address
  // space whatever the size.
  static constexpr int64_t kPackedGemmMinSteps = 8;
  static constexpr int64_t kPackedGemmMinElements = 4 * 64 * 64;
  static constexpr int64_t kOwnGemmMinSteps = 2;
  template <typename T>
  static LoopWeight<T> loop_weight(Context&, bool trans, int64_t N, int64_t K, const T* w,
                                   int64_t ld, int64_t max_rows, int64_t steps) {
    LoopWeight<T> lw{w, trans, N, K, ld, max_rows, nullptr};
    if constexpr (kLowp<T>) {
      if (use_own_lowp_step_gemm<T>(N, K, steps)) pack_own(lw);
    } else if constexpr (std::is_same_v<T, float>) {
      if (use_own_step_gemm(N, K, steps))
        pack_own(lw);
      else if (steps >= kPackedGemmMinSteps && N * K >= kPackedGemmMinElements)
        lw.packed = pack_b_f32(trans, max_rows, N, K, w, ld);
    }
    return lw;
  }

  // lw's op(W) packed for fastlstm's own step GEMM: step_gemm's float panels, or
  // step_gemm_lowp's for the half types.
  template <typename T>
  static void pack_own(LoopWeight<T>& lw) {
    StepPanels panels;
    if constexpr (kLowp<T>)
      panels = pack_step_weight_lowp(lw.trans, lw.N, lw.K, lw.w, lw.ld);
    else
      panels = pack_step_weight(lw.trans, lw.N, lw.K, lw.w, lw.ld);
    lw.packed = std::make_shared<StepPanels>(std::move(panels));
    lw.packed_own = true;
  }

  // op(W_ih) = W^T [K, N] (trans; else W stored transposed) for an inference's chunked input
  // projection, `uses` GEMMs of at most max_rows rows, packed once (per direction: the driver
  // shares it between row groups) when there are at least kPackedInputMinUses chunks, for the
  // own step GEMM (step_gemm.h) in every dtype it serves. MKL's GEMMs repack W in every call,
  // and MKL picks its kernels by CPU vendor. With FASTLSTM_CPU_STEP_GEMM=blas, float32 takes
  // MKL's packed GEMM instead, where MKL has it and no step team splits the chunks (team_gemm).
  // Else as it is, as in float64.
  // Measured on the 2-core Xeon, inference, interleaved in one process:
  //   bfloat16 and float16, I = 256, T = 100, nearfull lengths, against as it is
  //   (FASTLSTM_CPU_PACKED_INPUT=0, read at every call), medians of 21-31: 12 chunks (B = 32,
  //   H = 128 and 256) 1.03-1.11x; 3 chunks (B = 8, H = 256) 0.90-0.99x, not repaid.
  //   float32, own panels against MKL's packed GEMM, medians of 31: level to 1.04x faster on
  //   six rows (uni B = 32 H = 256 and 512 nearfull, B = 8 and 16 H = 128, bi B = 32 H = 128);
  //   with MKL held to AVX2 (MKL_ENABLE_INSTRUCTIONS=AVX2, the kernels MKL can give a CPU
  //   that is not Intel's) 1.08-1.24x, where MKL's projection had cost nn.LSTM padded's lead
  //   at B = 32 H = 256 (0.82x, now 1.01x). In a step team against team_gemm: level, 1.11x
  //   with MKL held to AVX2 (B = 4, I = H = 512, T = 500). One product alone (one thread,
  //   M = 64-128, N = 512-2048, K = 128-512): own 0.96-1.06x of MKL's packed GEMM, 1.56-1.59x
  //   with MKL held to AVX2.
  static constexpr int64_t kPackedInputMinUses = 4;
  template <typename T>
  static LoopWeight<T> input_weight(Context&, bool trans, int64_t N, int64_t K, const T* w,
                                    int64_t ld, int64_t max_rows, int64_t uses) {
    LoopWeight<T> lw{w, trans, N, K, ld, max_rows, nullptr};
    const char* off = std::getenv("FASTLSTM_CPU_PACKED_INPUT");
    if (uses < kPackedInputMinUses || (off != nullptr && std::strcmp(off, "0") == 0)) return lw;
    if constexpr (kLowp<T>) {
      if (use_own_lowp_step_gemm<T>(N, K, uses)) pack_own(lw);
    } else if constexpr (std::is_same_v<T, float>) {
      if (use_own_step_gemm(N, K, uses))
        pack_own(lw);
      else if (current_step_team() == nullptr)
        lw.packed = pack_b_f32(trans, max_rows, N, K, w, ld);
    }
    if (lw.packed) packed_input_count().fetch_add(1, std::memory_order_relaxed);
    return lw;
  }
  // How many input weights input_weight packed so far in this process (tests:
  // _cpu_packed_input_count).
  static std::atomic<int64_t>& packed_input_count() {
    static std::atomic<int64_t> count{0};
    return count;
  }

  // Whether a float32 time loop's weight goes through step_gemm (FASTLSTM_CPU_STEP_GEMM; auto:
  // always, see step_gemm.h). A one-step loop keeps the plain GEMM: nothing repays the packing.
  static bool use_own_step_gemm(int64_t N, int64_t K, int64_t steps) {
    return steps >= kOwnGemmMinSteps && N > 0 && K > 0 &&
           step_gemm_choice() != StepGemm::blas;
  }

  // The same for a bfloat16 or float16 loop (step_gemm_lowp; FASTLSTM_CPU_STEP_GEMM=blas takes
  // MKL's bfloat16 / float16 GEMMs instead). Measured on the 2-core Xeon, I = 256, T = 100,
  // against MKL's GEMM (which repacks W at every step, on AMX tiles for bfloat16):
  // docs/PERFORMANCE.md#bfloat16-and-float16-on-the-cpu.
  template <typename T>
  static bool use_own_lowp_step_gemm(int64_t N, int64_t K, int64_t steps) {
    return steps >= kOwnGemmMinSteps && N > 0 && K > 0 && step_gemm_choice() != StepGemm::blas;
  }

  // C [M, N] = A op(W) + beta C, through W's packed form when it has one.
  template <typename T, typename C>
  static void gemm(Context& ctx, int64_t M, const T* A, int64_t lda, const LoopWeight<T>& w,
                   C beta, C* Cp, int64_t ldc) {
    if constexpr (std::is_same_v<T, float> && std::is_same_v<C, float>) {
      if (w.packed && w.packed_own) {
        step_gemm(M, A, lda, *static_cast<const StepPanels*>(w.packed.get()), beta, Cp, ldc);
        return;
      }
      if (w.packed && M <= w.max_rows &&
          gemm_packed_f32(M, w.N, w.K, A, lda, w.packed.get(), beta, Cp, ldc))
        return;
    } else if constexpr (kLowp<T> && std::is_same_v<C, float>) {
      if (w.packed && w.packed_own) {
        step_gemm_lowp(M, A, lda, *static_cast<const StepPanels*>(w.packed.get()), beta, Cp,
                       ldc);
        return;
      }
    }
    gemm<T, C>(ctx, false, w.trans, M, w.N, w.K, A, lda, w.w, w.ld, beta, Cp, ldc);
  }

  template <typename T, typename Acc>
  static void cell_forward(Context&, int64_t rows, int64_t H, Acc* gates, const Acc* bias,
                           PrevCell<Acc> c_prev, Acc* c_out, T* h_out, bool keep_gates = true) {
    if constexpr (std::is_same_v<T, Acc>) {
      cpu::cell_forward<T>(rows, H, gates, bias, c_prev, c_out, h_out, keep_gates);
    } else {
      float* h = lowp_buffer(rows * H);  // h in float, then rounded to T
      cpu::cell_forward<Acc>(rows, H, gates, bias, c_prev, c_out, h, keep_gates);
      narrow(h, h_out, rows * H);
    }
  }

  // cell_forward for inference: the activations need not replace the pre-activations.
  template <typename T, typename Acc>
  static void cell_inference(Context& ctx, int64_t rows, int64_t H, Acc* gates, const Acc* bias,
                             PrevCell<Acc> c_prev, Acc* c_out, T* h_out) {
    cell_forward<T, Acc>(ctx, rows, H, gates, bias, c_prev, c_out, h_out, false);
  }

  template <typename T, typename Acc>
  static void cell_backward(Context&, int64_t rows, int64_t H, const Acc* gates, const Acc* c,
                            PrevCell<Acc> c_prev, const Acc* dh, Acc* dc, T* dgates) {
    if constexpr (std::is_same_v<T, Acc>) {
      cpu::cell_backward<T>(rows, H, gates, c, c_prev, dh, dc, dgates);
    } else {
      float* dg = lowp_buffer(rows * 4 * H);  // dgates in float, then rounded to T
      cpu::cell_backward<Acc>(rows, H, gates, c, c_prev, dh, dc, dg);
      narrow(dg, dgates, rows * 4 * H);
    }
  }

  // The calling thread's float buffer of at least n values for the half types' cell (kept
  // between steps: no allocation per step).
  static float* lowp_buffer(int64_t n) {
    thread_local std::vector<float> buffer;
    if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(static_cast<size_t>(n));
    return buffer.data();
  }

  // f(r0, r1) over [0, n) on torch's threads, or on the calling thread inside a step team's
  // time loop (no OpenMP region there: step_team.h) and in a serial call (contention.h).
  template <typename F>
  static void rows_loop(int64_t n, int64_t grain, const F& f) {
    if (current_step_team() != nullptr || serial_call()) {
      if (n > 0) f(0, n);
    } else {
      torch::stable::parallel_for(0, n, grain, f);
    }
  }

  // Rows per task of a row copy of C values per row: a region only for copies of at least
  // about 4 MB (float). Copies run at memory speed, so threads gain little below that, and
  // every region is a meeting that beside busy processes can cost a scheduler time slice.
  static int64_t copy_grain(int64_t C) {
    return std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, C));
  }

  template <typename D, typename S>
  static void copy_rows(Context&, int64_t n, int64_t C, D* dst, int64_t ldd,
                        const int64_t* dst_idx, const S* src, int64_t lds,
                        const int64_t* src_idx) {
    const int64_t grain = copy_grain(C);
    rows_loop(n, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t di = dst_idx ? dst_idx[r] : r, si = src_idx ? src_idx[r] : r;
        if (di < 0) continue;  // no row (schedule_view.h)
        if (si < 0) {
          std::memset(dst + di * ldd, 0, C * sizeof(D));
          continue;
        }
        if constexpr (std::is_same_v<D, S>) {
          std::memcpy(dst + di * ldd, src + si * lds, C * sizeof(D));
        } else {
          D* d = dst + di * ldd;
          const S* x = src + si * lds;
          for (int64_t k = 0; k < C; ++k) d[k] = static_cast<D>(static_cast<float>(x[k]));
        }
      }
    });
  }

  template <typename T>
  static void zero_rows(Context&, int64_t n, int64_t C, T* dst, int64_t ldd, const int64_t* idx) {
    const int64_t grain = copy_grain(C);
    rows_loop(n, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) std::memset(dst + (idx ? idx[r] : r) * ldd, 0, C * sizeof(T));
    });
  }

  template <typename Acc, typename T>
  static void add(Context&, int64_t n, Acc* dst, const T* src) {
    for (int64_t i = 0; i < n; ++i) dst[i] += static_cast<Acc>(src[i]);
  }

  // The backward's time loop also does the two weight-gradient preparations that would each
  // be another pass over memory after it (layer_driver.h): each group gathers its tokens'
  // previous h (dW_hh's operand) and sums its dgates (the bias gradient, add_row_sums) while
  // its thread has them in cache.
  static constexpr bool kWeightGradWorkInLoop = true;

  // sum [C] += the n rows of src [n, C] (type T, contiguous), on the calling thread: the rows
  // are summed first, 256 columns at a time, then added, so that a time loop's rounding error
  // grows with its rows per step plus its steps, not with their product.
  template <typename T, typename Acc>
  static void add_row_sums(Context&, int64_t n, int64_t C, const T* src, Acc* sum) {
    constexpr int64_t kCols = 256;
    Acc partial[kCols];
    for (int64_t c0 = 0; c0 < C; c0 += kCols) {
      const int64_t cols = std::min(kCols, C - c0);
      std::fill(partial, partial + cols, Acc(0));
      for (int64_t r = 0; r < n; ++r) {
        const T* row = src + r * C + c0;
        for (int64_t c = 0; c < cols; ++c) partial[c] += static_cast<Acc>(row[c]);
      }
      for (int64_t c = 0; c < cols; ++c) sum[c0 + c] += partial[c];
    }
  }

  template <typename T, typename Acc>
  static void combine_bias(Context&, int64_t G, Acc* out, const T* b_ih, const T* b_hh) {
    for (int64_t k = 0; k < G; ++k) out[k] = b_ih ? Acc(b_ih[k]) + Acc(b_hh[k]) : Acc(0);
  }

  // The CPU always runs the driver's per-step loop.
  template <typename T, typename Acc, typename View>
  static bool forward_recurrence(Context&, const LayerDims&, const View&,
                                 const Recurrence<T, Acc>*) {
    return false;
  }
  template <typename T, typename Acc, typename View>
  static bool backward_recurrence(Context&, const LayerDims&, const View&,
                                  const Recurrence<T, Acc>*) {
    return false;
  }

  // The rows partition: one task per group in one parallel region of torch's threads. The
  // call measures the time its threads lost to other processes (contention.h): each task's late
  // start and its wall time less its own CPU time (waits in the call spin, so they are CPU
  // time), and the region's end after the last task's (a thread descheduled in the join).
  template <typename F>
  static void run_row_groups_in_parallel(const std::vector<RowGroup>& groups, const F& f) {
    const int64_t n = static_cast<int64_t>(groups.size());
    const int64_t start = steady_ns();
    std::atomic<int64_t> worst_lost{0}, last_end{start};
    const auto raise = [](std::atomic<int64_t>& a, int64_t v) {
      int64_t seen = a.load(std::memory_order_relaxed);
      while (v > seen && !a.compare_exchange_weak(seen, v)) {
      }
    };
    torch::stable::parallel_for(0, n, 1, [&](int64_t i0, int64_t i1) {
      const int64_t begun = steady_ns(), cpu = thread_cpu_ns();
      for (int64_t k = i0; k < i1; ++k) f(groups[k].dir, groups[k].r0, groups[k].r1);
      const int64_t end = steady_ns(), used = thread_cpu_ns() - cpu;
      raise(worst_lost, (begun - start) + std::max<int64_t>(0, end - begun - used));
      raise(last_end, end);
      if (const int64_t us = task_end_delay_us())
        std::this_thread::sleep_for(std::chrono::microseconds(us));
    });
    const int64_t end = steady_ns();
    report_parallel_call(end - start, std::max(worst_lost.load(), end - last_end.load()));
  }

  // The steps partition: one task per group and per helper of its step team (the threads left
  // over) in one parallel region of torch's threads.
  template <typename F>
  static void run_step_teams_in_parallel(const std::vector<RowGroup>& groups, int64_t threads,
                                         const F& f) {
    const int64_t n = static_cast<int64_t>(groups.size());
    const int64_t members = std::max<int64_t>(1, threads / n);  // a leader and its helpers
    std::vector<std::unique_ptr<StepTeam>> teams;
    for (int64_t k = 0; k < n; ++k)
      teams.push_back(std::make_unique<StepTeam>(static_cast<int>(members - 1)));
    // Task i: member i % members of group i / members; member 0 runs the group's time loop.
    torch::stable::parallel_for(0, n * members, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t k = i / members;
        StepTeam* team = teams[k].get();
        if (i % members == 0) {
          const StepTeamScope scope(team);  // and finishes it, even if f throws
          f(groups[k].dir, groups[k].r0, groups[k].r1);
        } else if (i1 - i0 == 1) {
          // A helper only where this thread has nothing else to run (else it would wait for
          // a leader that may be this very thread, later).
          team->serve();
        }
      }
    });
  }

  // The layer's groups of rows (partition.h), one per thread (all on the calling thread for a
  // small layer: layer_threads); within a group every nested
  // parallel loop and BLAS call runs on that group's thread. Under the steps partition each
  // group's thread leads a step team (step_team.h) of the threads left over, which splits the
  // float32 step GEMM's columns and the cell's rows at every step.
  template <typename T, typename F>
  static void for_each_row_group(const LayerDims& d, const Schedule& s, const F& f) {
    Partition how = Partition::rows;
    const int64_t threads = layer_threads(d, s);
    const std::vector<RowGroup> groups = layer_row_groups(d, s, threads, sizeof(T), &how);
    // A group's time loop keeps its thread's AMX tiles configured from step to step.
    const auto loop = [&f](int64_t dir, int64_t r0, int64_t r1) {
      const AmxTileHold hold;
      f(dir, r0, r1);
    };
    const auto start = std::chrono::steady_clock::now();
    if (threads == 1) {
      for (const RowGroup& g : groups) loop(g.dir, g.r0, g.r1);  // a small layer: no region
    } else if (how == Partition::rows) {
      run_row_groups_in_parallel(groups, loop);
    } else {
      run_step_teams_in_parallel(groups, threads, loop);
    }
    loop_nanoseconds() += std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now() - start)
                              .count();
  }
};

}  // namespace fastlstm::cpu
