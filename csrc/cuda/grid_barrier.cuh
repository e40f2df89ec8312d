// A barrier across `blocks` blocks of a cooperative launch (every block resident; see
// simt::launch_cooperative): the whole grid, or one group of it such as the blocks of one
// direction. `counter` is a zeroed global unsigned that only this group's barrier touches.
// Each block adds 1 per barrier, so barrier number g (counting from 0) is complete when the
// counter reaches (g + 1) * blocks: no reset, hence no race between consecutive barriers.
#pragma once

#include "../simt/simt.h"

namespace fastlstm::cuda {
inline namespace FASTLSTM_SIMT_TARGET {

__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned blocks,
                                             unsigned& generation) {
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
    const unsigned target = (generation + 1) * blocks;
    __threadfence();  // release: this block's writes before the arrival
    atomicAdd(counter, 1u);
    while (simt::atomic_load(counter) < target) simt::spin_pause();
    __threadfence();  // acquire: the other blocks' writes after the wait
  }
  ++generation;
  __syncthreads();
}

}  // namespace FASTLSTM_SIMT_TARGET
}  // namespace fastlstm::cuda
