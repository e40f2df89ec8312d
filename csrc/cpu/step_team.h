// A team of threads for the CPU's steps partition (partition.h): the thread that runs a group's
// time loop (the leader) and the helpers that serve it, all of them threads of the layer's one
// parallel region, which split each step's work (the float32 step GEMM's columns, the cell's
// rows) and meet when it is done.
//
// Why not torch's parallel_for at every step: its OpenMP barrier spins while it waits, so
// beside a busy process a descheduled partner makes every step wait out a scheduler time
// slice (measured on the 2-core Xeon: 122-149 ms against 40-52 ms for the rows partition).
// Here a waiting thread spins for at most kSpin, then blocks in the kernel (C++20 atomic wait:
// a futex on Linux), giving its core to whoever needs it; a descheduled partner then costs a
// wake-up, not a time slice of spinning. And the helpers are the region's own threads, not
// extra ones competing with them for the cores.
//
// Membership is dynamic: a job is split over the leader and the helpers that have joined by
// then (the first job waits up to kJoinWait for them), so a helper that starts late, or never
// (a region with fewer threads than asked for), cannot hold the leader up for longer.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <utility>

namespace fastlstm::cpu {

// [begin, end) of part `part` of `parts` over n items.
inline std::pair<int64_t, int64_t> team_share(int64_t n, int part, int parts) {
  return {n * part / parts, n * (part + 1) / parts};
}

class StepTeam {
 public:
  // How long a waiting thread spins before it blocks.
  static constexpr std::chrono::microseconds kSpin{20};

  // How long the first job waits for the helpers to join (they may start late; one that never
  // comes then costs this once per layer call).
  static constexpr std::chrono::microseconds kJoinWait{1000};

  // helpers: how many the leader's region was asked for.
  explicit StepTeam(int helpers) : expected_(helpers) {}
  StepTeam(const StepTeam&) = delete;
  StepTeam& operator=(const StepTeam&) = delete;

  // The leader and the helpers that have joined so far.
  int size() const { return 1 + joined_.load(std::memory_order_acquire); }

  // A helper: joins the team and runs its parts of the leader's jobs until finish().
  void serve();
  // The leader, when its time loop is done: the helpers leave serve().
  void finish();

  // The leader: f(part, parts) on itself (part 0) and every helper that has joined; returns
  // once every part is done. An exception from any part (the first one) is rethrown here then,
  // never on a helper, whose leader waits for it. Never called from inside f.
  template <typename F>
  void run(const F& f) {
    struct Call {
      const F& f;
      std::exception_ptr error;
      std::atomic<bool> failed{false};
    } call{f};
    run_erased(&call, [](const void* p, int part, int parts) {
      auto& c = *static_cast<Call*>(const_cast<void*>(p));
      try {
        c.f(part, parts);
      } catch (...) {
        if (!c.failed.exchange(true)) c.error = std::current_exception();
      }
    });
    if (call.error) std::rethrow_exception(call.error);
  }

  // The leader: f(begin, end) over [0, n), one non-empty share (team_share) for itself and
  // each helper that has joined; as run.
  template <typename F>
  void split(int64_t n, const F& f) {
    run([&](int part, int parts) {
      const auto [begin, end] = team_share(n, part, parts);
      if (begin < end) f(begin, end);
    });
  }

  // How many teams of this process have had a helper join (tests).
  static int64_t helped_team_count();

 private:
  using Job = void (*)(const void*, int, int);
  void run_erased(const void* context, Job job);

  std::atomic<int> joined_{0};      // helpers that have joined
  std::atomic<uint32_t> epoch_{0};  // bumped once per shared job, and once by finish()
  std::atomic<int> pending_{0};     // helpers still running the current job
  std::atomic<bool> stop_{false};
  const int expected_;
  bool waited_ = false;  // the first job has waited for the helpers
  // The current job, published by epoch_'s release.
  const void* context_ = nullptr;
  Job job_ = nullptr;
  int parts_ = 1;
};

// The team whose time loop this thread leads, or nullptr.
StepTeam* current_step_team();

// Makes `team` (led by the calling thread) its current team while alive (nullptr: none), and
// finishes it at the end, so that its helpers leave even when the time loop throws.
class StepTeamScope {
 public:
  explicit StepTeamScope(StepTeam* team);
  ~StepTeamScope();
  StepTeamScope(const StepTeamScope&) = delete;
  StepTeamScope& operator=(const StepTeamScope&) = delete;

 private:
  StepTeam* team_;
  StepTeam* before_;
};

}  // namespace fastlstm::cpu
