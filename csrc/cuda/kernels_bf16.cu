// CUDA kernels (per-step and persistent) for c10::BFloat16 tensors (accumulating in float).
#include "kernels.cuh"
#include "persistent.cuh"

namespace fastlstm::cuda {
FASTLSTM_INSTANTIATE_MIXED(c10::BFloat16, float)
FASTLSTM_INSTANTIATE_PERSISTENT(c10::BFloat16, float)
FASTLSTM_INSTANTIATE_COPY(c10::BFloat16, c10::BFloat16)
FASTLSTM_INSTANTIATE_ZERO(c10::BFloat16)
FASTLSTM_INSTANTIATE_COPY(float, c10::BFloat16)
FASTLSTM_INSTANTIATE_COPY(c10::BFloat16, float)
}  // namespace fastlstm::cuda
