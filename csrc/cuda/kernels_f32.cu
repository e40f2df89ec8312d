// CUDA kernels (per-step and persistent) for float tensors (accumulating in float).
#include "kernels.cuh"
#include "persistent.cuh"

namespace fastlstm::cuda {
FASTLSTM_INSTANTIATE_MIXED(float, float)
FASTLSTM_INSTANTIATE_PERSISTENT(float, float)
FASTLSTM_INSTANTIATE_COPY(float, float)
FASTLSTM_INSTANTIATE_ZERO(float)
}  // namespace fastlstm::cuda
