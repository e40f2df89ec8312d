// CUDA kernels of the layer driver for c10::BFloat16 tensors (accumulating in float).
#include "kernels.cuh"

namespace fastlstm::cuda {
FASTLSTM_INSTANTIATE_MIXED(c10::BFloat16, float)
FASTLSTM_INSTANTIATE_COPY(c10::BFloat16, c10::BFloat16)
FASTLSTM_INSTANTIATE_ZERO(c10::BFloat16)
FASTLSTM_INSTANTIATE_COPY(float, c10::BFloat16)
FASTLSTM_INSTANTIATE_COPY(c10::BFloat16, float)
}  // namespace fastlstm::cuda
