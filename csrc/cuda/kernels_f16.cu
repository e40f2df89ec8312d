// CUDA kernels (per-step and persistent) for c10::Half tensors (accumulating in float).
#include "kernels.cuh"
#include "persistent.cuh"

namespace fastlstm::cuda {
FASTLSTM_INSTANTIATE_MIXED(c10::Half, float)
FASTLSTM_INSTANTIATE_PERSISTENT(c10::Half, float)
FASTLSTM_INSTANTIATE_COPY(c10::Half, c10::Half)
FASTLSTM_INSTANTIATE_ZERO(c10::Half)
FASTLSTM_INSTANTIATE_COPY(float, c10::Half)
FASTLSTM_INSTANTIATE_COPY(c10::Half, float)
}  // namespace fastlstm::cuda
