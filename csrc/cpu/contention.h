// Layer calls on a CPU whose cores other processes want (data-loader workers, other jobs).
//
// Why: a parallel call meets its threads at least at its end, and libgomp's waiting threads
// spin for milliseconds before they sleep. Beside busy processes a thread that the OS has
// descheduled holds the call up while its partner spins on the core it needs: on the 2-core
// Xeon beside 2 busy processes, uni B=8 H=128 T=100 inference took 7-14 ms on torch's 2
// threads against 1.6-2.0 on one (1.3 idle on two). Larger calls gain more from the second
// thread and lose less to the meeting, and there two threads stay faster (docs/PERFORMANCE.md).
//
// So each parallel call measures the time its threads lost (late start, wall time less their
// own CPU time, or a late end of the region after its last task). Two calls in a row that lost
// much open a window (50 ms, doubled while it recurs, up to 1.6 s) in which the layer calls of
// under kContendedSerialMaxMacs run on the calling thread alone: their groups in turn, nested
// loops inline, MKL on one thread. The first call after the window runs parallel again and so
// measures again; a clean parallel call closes the window. Idle, calls rarely lose time, and
// one such call alone opens nothing.
//
// FASTLSTM_CPU_CONTENTION (read at every call): auto (default); off, never serial; on, always
// treated as contended (tests).
#pragma once

#include <cstdint>

namespace fastlstm::cpu {

// The largest layer call (its forward's multiply-adds: layer_macs) that a contended window
// runs on one thread. Measured on the 2-core Xeon beside 1 and 2 busy processes (T = 100,
// I = H; medians of 9 interleaved, one thread against two): uni B=8 H=128 (65 M) inference
// 1.6-1.9 ms against 4.0-10.8, training 5.4-10.5 against 11-57; uni B=32 H=128 (260 M)
// training 18.8-40.2 against 30.7-62.5; uni B=32 H=256 (1.04 G) inference 18.8-38.2 against
// 19.1-24.4 (two threads ahead beside 2 busy).
constexpr int64_t kContendedSerialMaxMacs = int64_t(1) << 29;

// Whether a layer call of `macs` multiply-adds should run on the calling thread alone now.
bool contended_serial(int64_t macs);

// A parallel layer call's verdict: whether one of its threads lost more than a quarter of the
// call's wall time, and at least 0.3 ms, to late start or descheduling. `worst_lost_ns`: the
// most any thread lost.
void report_parallel_call(int64_t wall_ns, int64_t worst_lost_ns);

// Whether a contended window is open (tests), and a way to open or close one (tests).
bool contention_window_open();
void report_contention_for_test(bool contended);

// Tests: 0 clean, 1 clean after one contended parallel call, 2 a window opened since the last
// clean call (open or expired).
int64_t contention_state();

// Tests: every task of a parallel layer call sleeps `us` microseconds after its own measured
// end, as a thread descheduled before the call's join would (0, the default: never).
void delay_task_ends_for_test(int64_t us);
int64_t task_end_delay_us();

// CPU time of the calling thread, and the steady clock, in nanoseconds.
int64_t thread_cpu_ns();
int64_t steady_ns();

// Whether the calling thread is running a layer call serially (SerialCallScope): its layer
// runs one group at a time and its nested parallel loops inline.
bool serial_call();

// Makes the calling thread's layer call serial while alive, when `serial`: groups in turn,
// nested loops inline, MKL on one thread.
class SerialCallScope {
 public:
  explicit SerialCallScope(bool serial);
  ~SerialCallScope();
  SerialCallScope(const SerialCallScope&) = delete;
  SerialCallScope& operator=(const SerialCallScope&) = delete;

 private:
  bool serial_, before_ = false;
  int blas_before_ = 0;
};

}  // namespace fastlstm::cpu
