// CUDA kernels of the layer driver for float tensors (accumulating in float).
#include "kernels.cuh"

namespace fastlstm::cuda {
FASTLSTM_INSTANTIATE_MIXED(float, float)
FASTLSTM_INSTANTIATE_COPY(float, float)
FASTLSTM_INSTANTIATE_ZERO(float)
}  // namespace fastlstm::cuda
