// CUDA kernels (per-step and persistent) for double tensors (accumulating in double).
#include "kernels.cuh"
#include "persistent.cuh"

namespace fastlstm::cuda {
FASTLSTM_INSTANTIATE_MIXED(double, double)
FASTLSTM_INSTANTIATE_PERSISTENT(double, double)
FASTLSTM_INSTANTIATE_COPY(double, double)
FASTLSTM_INSTANTIATE_ZERO(double)
}  // namespace fastlstm::cuda
