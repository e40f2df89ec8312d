// CUDA kernels (per-step and persistent) for BFloat16 tensors (accumulating in float).
#include "kernels.cuh"
#include "persistent.cuh"

namespace fastlstm::cuda {
FASTLSTM_INSTANTIATE_MIXED(BFloat16, float)
FASTLSTM_INSTANTIATE_PERSISTENT(BFloat16, float)
FASTLSTM_INSTANTIATE_COPY(BFloat16, BFloat16)
FASTLSTM_INSTANTIATE_ZERO(BFloat16)
FASTLSTM_INSTANTIATE_COPY(float, BFloat16)
FASTLSTM_INSTANTIATE_COPY(BFloat16, float)
}  // namespace fastlstm::cuda
