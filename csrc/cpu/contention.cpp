#include "contention.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "gemm.h"

namespace fastlstm::cpu {
namespace {

constexpr int64_t kFirstWindowNs = 50'000'000;     // 50 ms
constexpr int64_t kLongestWindowNs = 1'600'000'000;  // 1.6 s
constexpr int64_t kMinLostNs = 300'000;            // 0.3 ms

std::atomic<int64_t> g_window_ns{0};  // length of the current (or last) window; 0: clean
std::atomic<int64_t> g_until_ns{0};   // steady-clock time at which the window closes
std::atomic<bool> g_suspect{false};   // clean, but the last parallel call was contended
std::atomic<int64_t> g_task_end_delay_us{0};

thread_local bool t_serial = false;

enum class Mode { automatic, off, on };
Mode mode() {
  const char* v = std::getenv("FASTLSTM_CPU_CONTENTION");
  if (v == nullptr) return Mode::automatic;
  if (std::strcmp(v, "off") == 0 || std::strcmp(v, "0") == 0) return Mode::off;
  if (std::strcmp(v, "on") == 0 || std::strcmp(v, "1") == 0) return Mode::on;
  return Mode::automatic;
}

void open_or_close(bool contended) {
  if (!contended) {
    g_suspect.store(false, std::memory_order_relaxed);
    g_window_ns.store(0, std::memory_order_relaxed);
    g_until_ns.store(0, std::memory_order_relaxed);
    return;
  }
  const int64_t last = g_window_ns.load(std::memory_order_relaxed);
  // From clean, a window opens on the second contended call in a row: one alone is as often a
  // hiccup of an idle machine (a process's first region starting its threads, a virtual CPU
  // waking from halt: 0.4-0.9 ms late on the 2-core Xeon VM), and the serial calls of a window
  // there ran bi B=8 H=128 inference 1.6x slower than parallel ones.
  if (last == 0 && !g_suspect.exchange(true, std::memory_order_relaxed)) return;
  const int64_t window = last == 0 ? kFirstWindowNs : std::min(2 * last, kLongestWindowNs);
  g_window_ns.store(window, std::memory_order_relaxed);
  g_until_ns.store(steady_ns() + window, std::memory_order_relaxed);
}

}  // namespace

bool contention_window_open() {
  return steady_ns() < g_until_ns.load(std::memory_order_relaxed);
}

bool contended_serial(int64_t macs) {
  switch (mode()) {
    case Mode::off: return false;
    case Mode::on: return macs < kContendedSerialMaxMacs;
    default: return macs < kContendedSerialMaxMacs && contention_window_open();
  }
}

void report_parallel_call(int64_t wall_ns, int64_t worst_lost_ns) {
  open_or_close(worst_lost_ns > std::max(kMinLostNs, wall_ns / 4));
}

int64_t contention_state() {
  if (g_window_ns.load(std::memory_order_relaxed) > 0) return 2;
  return g_suspect.load(std::memory_order_relaxed) ? 1 : 0;
}

void report_contention_for_test(bool contended) {
  if (contended) g_suspect.store(true, std::memory_order_relaxed);  // opens at once
  open_or_close(contended);
}

void delay_task_ends_for_test(int64_t us) { g_task_end_delay_us.store(us); }
int64_t task_end_delay_us() { return g_task_end_delay_us.load(std::memory_order_relaxed); }

int64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool serial_call() { return t_serial; }

SerialCallScope::SerialCallScope(bool serial) : serial_(serial) {
  if (!serial_) return;
  before_ = t_serial;
  t_serial = true;
  blas_before_ = blas_threads_here(1);
}

SerialCallScope::~SerialCallScope() {
  if (!serial_) return;
  blas_threads_here(blas_before_);
  t_serial = before_;
}

}  // namespace fastlstm::cpu
