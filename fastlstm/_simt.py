"""The CUDA emulation, for tests: while `emulated_cuda()` is active, fastlstm's ops on CPU
tensors run the CUDA backend (csrc/cuda/: kernels, cuBLAS call sites, layer driver) on the CPU,
every CUDA thread a fiber, in a schedule drawn from `seed`, with shared-memory race checking.
See csrc/simt/emulator.h. It never speeds anything up; it exists so that CI runs the CUDA code.
"""

import contextlib

import torch

from . import _ops  # noqa: F401  (loads the library and its ops)


SMS = 6                       # the emulated device's multiprocessors, by default
SHARED_BYTES = 227 * 1024      # its shared memory per block (a Hopper SM's), by default
CLUSTER_BLOCKS = 4             # its largest thread-block cluster, by default
# What each persistent block keeps in shared memory beside its weights: 4 floats per thread of
# its 64 (under emulation) for the tensor-core products' K split (csrc/cuda/mma_tiles.cuh).
MMA_SCRATCH_BYTES = 64 * 4 * 4


@contextlib.contextmanager
def emulated_cuda(seed: int = 0, race_check: bool = True, device_lengths: bool = False,
                  sms: int = SMS, shared_bytes: int = SHARED_BYTES,
                  cluster_blocks: int = CLUSTER_BLOCKS, tf32: bool = False,
                  debug_alloc: bool = True, static_shared_bytes: int = 0,
                  weak_memory: bool = False):
    """device_lengths: the layer ops treat lengths as GPU-resident and build the schedule on the
    (emulated) device, as they do for CUDA lengths where the persistent kernels take the shape.
    sms, shared_bytes, cluster_blocks: the emulated device's multiprocessors, shared memory per
    block and largest thread-block cluster (0: none, as before Hopper), which size the
    persistent kernels' grids or clusters and decide whether their weights are resident.
    tf32: the emulated cuBLAS handle allows TF32, as torch's does when
    torch.backends.cuda.matmul.allow_tf32 is set (float32 GEMMs and the persistent kernels'
    float32 products then run in TF32).
    debug_alloc: every buffer the ops allocate starts as 0xFF bytes (NaN, or -1 in integers)
    and carries a guard tail, checked after every launch (csrc/debug_alloc.h): reading memory
    nobody wrote gives NaN every time, and writing past a buffer's end fails with a message.
    static_shared_bytes: every emulated kernel's static shared memory (a GPU kernel's __shared__
    arrays), which a launch's dynamic shared memory must leave room for within shared_bytes
    (the emulator refuses a launch that does not, as the runtime does).
    weak_memory: global memory is weak (docs/EMULATOR.md, "Weak memory"): each block's stores
    to the ops' buffers wait in a per-block store buffer until a release (__threadfence, the
    cluster barrier, or a random flush), and a block's loads may see stale values until it
    acquires. Needs debug_alloc (its buffers are the modelled memory)."""
    if weak_memory and not debug_alloc:
        raise ValueError("emulated_cuda: weak_memory models the debug allocator's buffers; "
                         "it needs debug_alloc=True")
    torch.ops.fastlstm._simt_emulate(True, seed, race_check, device_lengths, sms, shared_bytes,
                                     cluster_blocks, tf32, debug_alloc, static_shared_bytes,
                                     weak_memory)
    try:
        yield
    finally:
        torch.ops.fastlstm._simt_emulate(False, 0, True, False, SMS, SHARED_BYTES, CLUSTER_BLOCKS,
                                         False, False, 0, False)


def launch_count() -> int:
    """Emulated kernel launches so far in this process."""
    return torch.ops.fastlstm._simt_launch_count()


def mma_count() -> int:
    """Emulated warp-level tensor-core products (m16n8k16) so far in this process."""
    return torch.ops.fastlstm._simt_counter("mma")


def cluster_barrier_count() -> int:
    """Completed emulated thread-block cluster barriers so far in this process."""
    return torch.ops.fastlstm._simt_counter("cluster_barriers")


def dsmem_access_count() -> int:
    """Emulated accesses to another block's shared memory (distributed shared memory) so far."""
    return torch.ops.fastlstm._simt_counter("dsmem")


WORK_COUNTERS = ("shared_read_bytes", "shared_write_bytes", "shuffles", "mma", "dsmem",
                 "cluster_barriers")


def work_counts() -> dict:
    """What emulated kernels have done so far in this process: bytes read from and written to
    shared memory (every block's), warp-level shuffles, warp-level tensor-core products,
    accesses to another block's shared memory, completed cluster barriers. Take the difference
    of two calls around the work to count."""
    return {name: torch.ops.fastlstm._simt_counter(name) for name in WORK_COUNTERS}


PLAN_QUERIES = ("attribute_queries", "attribute_sets", "occupancy_queries", "cluster_queries")


def plan_query_counts() -> dict:
    """The emulated runtime's calls that launch plans make, so far in this process:
    cudaFuncGetAttributes, cudaFuncSetAttribute, cudaOccupancyMaxActiveBlocksPerMultiprocessor,
    cudaOccupancyMaxPotentialClusterSize."""
    return {name: torch.ops.fastlstm._simt_counter(name) for name in PLAN_QUERIES}


def selftest(kernel: str, x: torch.Tensor, seed: int = 0, race_check: bool = True,
             weak_memory: bool = False):
    """Runs one of the emulator's self-test kernels (csrc/emulated/test_ops.cpp) over x."""
    with emulated_cuda(seed, race_check, weak_memory=weak_memory):
        return torch.ops.fastlstm._simt_selftest(kernel, x)
