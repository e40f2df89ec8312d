// Switches the CUDA emulation on and off for the fastlstm ops on CPU tensors, and sets the
// emulator's schedule seed and race checking (fastlstm/_simt.py wraps these for tests):
//   torch.ops.fastlstm._simt_emulate(enabled, seed, race_check)
//   torch.ops.fastlstm._simt_launch_count()   emulated kernel launches so far
// and declares the CUDA backend's device-built schedule as an op of its own, for tests:
//   torch.ops.fastlstm._device_schedule(lengths, T) -> (order, sorted_lengths, active, offsets)
// (CUDA tensors: the GPU kernels; CPU tensors: the same kernels under the emulator.)
#include <torch/library.h>

#include <atomic>

#include "emulated_ops.h"
#include "emulator.h"

namespace fastlstm::simt {
namespace {

std::atomic<bool> g_enabled{false};

void simt_emulate(bool enabled, int64_t seed, bool race_check) {
  TORCH_CHECK(seed >= 0, "fastlstm: _simt_emulate: seed must be >= 0, got ", seed);
  options().seed = static_cast<uint64_t>(seed);
  options().race_check = race_check;
  g_enabled = enabled;
}

int64_t simt_launch_count() { return launch_count(); }

}  // namespace

bool emulated_cuda_enabled() { return g_enabled.load(); }

}  // namespace fastlstm::simt

TORCH_LIBRARY_FRAGMENT(fastlstm, m) {
  m.def("_simt_emulate(bool enabled, int seed=0, bool race_check=True) -> ()",
        &fastlstm::simt::simt_emulate);
  m.def("_simt_launch_count() -> int", &fastlstm::simt::simt_launch_count);
  m.def("_device_schedule(Tensor lengths, int T) -> (Tensor order, Tensor sorted_lengths, "
        "Tensor active, Tensor offsets)");
}
