// CUDA kernels (per-step and persistent) for Half tensors (accumulating in float).
#include "kernels.cuh"
#include "persistent.cuh"

namespace fastlstm::cuda {
FASTLSTM_INSTANTIATE_MIXED(Half, float)
FASTLSTM_INSTANTIATE_PERSISTENT(Half, float)
FASTLSTM_INSTANTIATE_COPY(Half, Half)
FASTLSTM_INSTANTIATE_ZERO(Half)
FASTLSTM_INSTANTIATE_COPY(float, Half)
FASTLSTM_INSTANTIATE_COPY(Half, float)
}  // namespace fastlstm::cuda
