#include "step_team.h"

#include <thread>

#include "../cpu_relax.h"

namespace fastlstm::cpu {
namespace {

thread_local StepTeam* t_team = nullptr;
std::atomic<int64_t> g_helped_teams{0};

// Waits until done(a's value) and returns that value: spins for up to StepTeam::kSpin, then
// blocks until a changes (and checks again).
template <typename V, typename Done>
V wait_for(const std::atomic<V>& a, const Done& done) {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0;; ++i) {
    const V v = a.load(std::memory_order_acquire);
    if (done(v)) return v;
    if ((i & 31) == 31 && std::chrono::steady_clock::now() - start > StepTeam::kSpin) break;
    cpu_relax();
  }
  for (;;) {
    const V v = a.load(std::memory_order_acquire);
    if (done(v)) return v;
    a.wait(v, std::memory_order_acquire);
  }
}

}  // namespace

void StepTeam::serve() {
  // The epoch before joining: a job whose split counts this helper is published after the
  // leader saw the join, so after this read, and no later job can start before it is done.
  uint32_t seen = epoch_.load(std::memory_order_acquire);
  const int part = 1 + joined_.fetch_add(1, std::memory_order_acq_rel);
  for (;;) {
    if (stop_.load(std::memory_order_acquire)) return;
    seen = wait_for(epoch_, [seen](uint32_t v) { return v != seen; });
    if (stop_.load(std::memory_order_acquire)) return;
    if (part < parts_) {
      job_(context_, part, parts_);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
    }
  }
}

void StepTeam::finish() {
  if (joined_.load(std::memory_order_acquire) > 0) g_helped_teams.fetch_add(1);
  stop_.store(true, std::memory_order_release);
  epoch_.fetch_add(1, std::memory_order_release);
  epoch_.notify_all();
}

void StepTeam::run_erased(const void* context, Job job) {
  if (!waited_) {
    waited_ = true;
    const auto start = std::chrono::steady_clock::now();
    while (joined_.load(std::memory_order_acquire) < expected_ &&
           std::chrono::steady_clock::now() - start < kJoinWait)
      std::this_thread::yield();
  }
  const int parts = 1 + joined_.load(std::memory_order_acquire);
  if (parts == 1) {
    job(context, 0, 1);
    return;
  }
  context_ = context;
  job_ = job;
  parts_ = parts;
  pending_.store(parts - 1, std::memory_order_relaxed);
  epoch_.fetch_add(1, std::memory_order_release);  // publishes the job, parts_ and pending_
  epoch_.notify_all();
  job(context, 0, parts);
  wait_for(pending_, [](int v) { return v == 0; });
}

int64_t StepTeam::helped_team_count() { return g_helped_teams.load(); }

StepTeam* current_step_team() { return t_team; }

StepTeamScope::StepTeamScope(StepTeam* team) : team_(team), before_(t_team) { t_team = team; }
StepTeamScope::~StepTeamScope() {
  t_team = before_;
  if (team_ != nullptr) team_->finish();
}

}  // namespace fastlstm::cpu
