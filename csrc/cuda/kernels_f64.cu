// CUDA kernels of the layer driver for double tensors (accumulating in double).
#include "kernels.cuh"

namespace fastlstm::cuda {
FASTLSTM_INSTANTIATE_MIXED(double, double)
FASTLSTM_INSTANTIATE_COPY(double, double)
FASTLSTM_INSTANTIATE_ZERO(double)
}  // namespace fastlstm::cuda
