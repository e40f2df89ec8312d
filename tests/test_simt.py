"""The CUDA emulator's own checks (csrc/simt/): correct kernels give torch's answer under every
schedule seed, and deliberately broken kernels are caught, by a race report or by a wrong value
under some seed, and a barrier that not every thread reaches fails instead of hanging."""

import pytest
import torch

from fastlstm import _simt
from helpers import round_to_tf32

pytestmark = pytest.mark.cuda_emulated

SEEDS = range(5)


def _x(n, seed=0):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [32, 64, 256])
def test_block_reduction_through_shared_memory(n, seed):
    x = _x(n, seed)
    got = _simt.selftest("block_sum", x, seed=seed)
    torch.testing.assert_close(got[0], x.sum(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_warp_shuffle_and_ballot(seed):
    x = _x(256, seed)
    torch.testing.assert_close(_simt.selftest("warp_sum", x, seed=seed)[0], x.sum(),
                               atol=1e-4, rtol=1e-5)
    assert _simt.selftest("ballot_count", x, seed=seed).item() == (x > 0).sum().item()


@pytest.mark.parametrize("weak_memory", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_cooperative_launch_with_grid_barrier(seed, weak_memory):
    x = _x(16 * 12, seed)  # 12 blocks of 16 threads, all resident, meeting at a grid barrier
    got = _simt.selftest("grid_sum", x, seed=seed, weak_memory=weak_memory)
    torch.testing.assert_close(got[0], x.sum(), atol=1e-4, rtol=1e-5)


def _exchanged(x, rounds=8):
    """What grid_exchange's blocks add up, in its order and float32 rounding: every block reads
    every block's value, scaled by 1..rounds (csrc/emulated/test_ops.cpp)."""
    acc = torch.zeros_like(x)
    for r in range(rounds):
        acc = acc + x * float(r + 1)
    return acc.repeat(x.numel())


@pytest.mark.parametrize("weak_memory", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_blocks_exchange_values_through_global_memory_at_grid_barriers(seed, weak_memory):
    """Six blocks exchange values through global memory over eight grid barriers (as the
    persistent kernels exchange h between steps): right with and without weak memory, since
    the barrier's fences release each block's stores and acquire the others'."""
    x = _x(6, seed)
    got = _simt.selftest("grid_exchange", x, seed=seed, weak_memory=weak_memory)
    torch.testing.assert_close(got, _exchanged(x), rtol=0, atol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kernel", ["grid_exchange_no_release", "grid_exchange_no_acquire"])
def test_grid_barrier_without_its_fence_is_caught_under_weak_memory(kernel, seed):
    """The same exchange, the grid barrier missing its release fence (before the arrival) or
    its acquire fence (after the wait), broken on purpose: it passes when every store is seen
    at once (the default emulation, where fibers share one memory), and gives stale values
    under weak memory (per-block store buffers and stale views, docs/EMULATOR.md), on every
    seed."""
    x = _x(6, seed)
    got = _simt.selftest(kernel, x, seed=seed)
    torch.testing.assert_close(got, _exchanged(x), rtol=0, atol=0)
    got = _simt.selftest(kernel, x, seed=seed, weak_memory=True)
    assert not torch.equal(got, _exchanged(x)), "a grid barrier without its fence passed"


def test_weak_memory_needs_the_debug_allocator():
    with pytest.raises(ValueError, match="debug_alloc"):
        with _simt.emulated_cuda(weak_memory=True, debug_alloc=False):
            pass


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kernel,dtype", [("mma_f16", torch.float16),
                                          ("mma_bf16", torch.bfloat16)])
def test_tensor_core_tile_is_a_matrix_product(kernel, dtype, seed):
    """One warp's m16n8k16 product, its fragments loaded as the PTX layout says: A B of the
    inputs rounded to the 16-bit type, accumulated in float32. Subnormal, zero and negative
    inputs included (float16's subnormals are decoded by hand under emulation)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(16, 16, generator=g)
    b = torch.randn(16, 8, generator=g)
    a[0, :4] = torch.tensor([0.0, -0.0, 3e-6, -5e-7])  # float16 subnormals
    x = torch.cat([a.flatten(), b.flatten()])
    got = _simt.selftest(kernel, x, seed=seed).view(16, 8)
    want = a.to(dtype).double() @ b.to(dtype).double()
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    # Every output depends on its own row and column: a permuted layout would not match.
    assert not torch.allclose(got, got.flip(0)) and not torch.allclose(got, got.flip(1))


@pytest.mark.parametrize("seed", SEEDS)
def test_tf32_tensor_core_tile_is_a_matrix_product(seed):
    """One warp's m16n8k8 TF32 product (float32 operands rounded to TF32, float32 sums), its
    fragments loaded as the PTX layout says."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(16, 8, generator=g), torch.randn(8, 8, generator=g)
    a[0, 0] = 1 + 2 ** -11  # a tie: rounds away from zero, to 1 + 2^-10
    got = _simt.selftest("mma_tf32", torch.cat([a.flatten(), b.flatten()]), seed=seed)
    want = round_to_tf32(a).double() @ round_to_tf32(b).double()
    torch.testing.assert_close(got.view(16, 8).double(), want, atol=1e-5, rtol=1e-5)
    exact = a.double() @ b.double()
    assert (got.view(16, 8).double() - exact).abs().max() > 1e-5  # TF32, not float32
    assert not torch.allclose(got.view(16, 8), got.view(16, 8).flip(0))


@pytest.mark.parametrize("weak_memory", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_thread_block_clusters_meet_at_their_barrier(seed, weak_memory):
    """Under weak memory too: the cluster barrier releases and acquires global memory."""
    x = _x(16 * 16, seed)  # 16 blocks of 16 threads in clusters of 4
    before = _simt.cluster_barrier_count()
    got = _simt.selftest("cluster_sum", x, seed=seed, weak_memory=weak_memory)
    torch.testing.assert_close(got[0], x.sum(), atol=1e-4, rtol=1e-5)
    assert _simt.cluster_barrier_count() - before == 4


def test_cluster_barrier_not_reached_by_every_block_fails_instead_of_hanging():
    with pytest.raises(RuntimeError, match="deadlocked.*48 of 64 threads wait at the cluster "
                                           "barrier"):
        _simt.selftest("cluster_barrier_skipped", _x(64))


@pytest.mark.parametrize("seed", SEEDS)
def test_distributed_shared_memory_reaches_the_next_block_of_the_cluster(seed):
    """Each block stores into the next block's shared memory (clusters of 4), then the
    cluster barrier: every block reads what its predecessor in the cluster stored."""
    x = _x(16 * 16, seed)  # 16 blocks of 16 threads
    before = _simt.dsmem_access_count()
    got = _simt.selftest("cluster_ring", x, seed=seed)
    want = x.view(4, 4, 16).roll(1, dims=1).flatten()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert _simt.dsmem_access_count() - before == 16 * 16  # every store is remote


def test_distributed_shared_memory_without_cluster_barrier_is_caught():
    """__syncthreads does not order another block's stores: a race report, and with the race
    check off, wrong values (or an exit before the stores are ordered) under some seed."""
    x = _x(64)
    with pytest.raises(RuntimeError, match="distributed shared-memory race on block .* no "
                                           "cluster barrier between them"):
        _simt.selftest("cluster_ring_unsynced", x)
    want = x.view(1, 4, 16).roll(1, dims=1).flatten()
    caught = 0
    for seed in range(8):
        try:
            got = _simt.selftest("cluster_ring_unsynced", x, seed=seed, race_check=False)
            caught += not torch.equal(got, want)
        except RuntimeError as e:
            assert "exited" in str(e)
            caught += 1
    assert caught, "every seed gave the right values"


def test_store_before_the_cluster_is_known_to_run_is_caught():
    """Another block's shared memory may be touched only after a cluster barrier has shown
    that every block of the cluster started: caught under every seed."""
    for seed in range(3):
        with pytest.raises(RuntimeError, match="before a cluster barrier showed that every "
                                               "block of the cluster has started"):
            _simt.selftest("cluster_store_before_start", _x(64), seed=seed)


def test_store_into_an_exited_block_is_caught_under_every_seed():
    """A store into another block's shared memory after the last cluster barrier: caught
    whether the emulated schedule runs it after that block exited, or before (the block then
    exits with an access not yet ordered by a cluster barrier)."""
    for seed in range(6):
        with pytest.raises(RuntimeError, match="after that block exited|exited while another "
                                               "block of its cluster accessed"):
            _simt.selftest("cluster_store_after_exit", _x(64), seed=seed)


def test_missing_barrier_is_reported_as_a_race():
    with pytest.raises(RuntimeError, match="shared-memory race in block 0 .* no __syncthreads"):
        _simt.selftest("block_sum_missing_barrier", _x(64))


def test_missing_barrier_gives_wrong_values_under_some_seed():
    """With the race check off, the random schedule alone exposes the bug."""
    x = _x(64)
    results = [_simt.selftest("block_sum_missing_barrier", x, seed=s, race_check=False).item()
               for s in range(8)]
    wrong = [r for r in results if not abs(r - x.sum().item()) <= 1e-4]  # NaN is wrong too
    assert wrong, f"every seed gave the right sum {x.sum().item()}: {results}"


def test_barrier_not_reached_by_every_thread_fails_instead_of_hanging():
    with pytest.raises(RuntimeError, match="deadlocked.*32 of 64 threads wait at __syncthreads"):
        _simt.selftest("divergent_barrier", _x(64))


def test_emulation_is_off_outside_the_context():
    """Outside emulated_cuda(), the CPU ops run the CPU backend: no emulated launch happens."""
    import fastlstm
    lstm = fastlstm.LSTM(2, 3)
    before = _simt.launch_count()
    lstm(torch.randn(4, 2, 2), lengths=[4, 2])
    assert _simt.launch_count() == before
    with _simt.emulated_cuda():
        lstm(torch.randn(4, 2, 2), lengths=[4, 2])
    assert _simt.launch_count() > before


def test_debug_allocator_reports_a_write_past_a_buffers_end():
    """A kernel storing one element past its buffer fails with a message (not a crash, not a
    silent corruption of whatever lies after it); the same copy within bounds passes."""
    x = torch.arange(64, dtype=torch.float32)
    assert torch.equal(_simt.selftest("write_within", x), x)
    with pytest.raises(RuntimeError, match=r"debug allocator\): a write past the end of a "
                                           r"buffer of shape \[63\].*0 bytes past its end"):
        _simt.selftest("write_past_end", x)


def test_debug_allocator_fills_fresh_buffers_with_nan():
    """Memory nobody wrote reads as NaN every time under emulation (so a reserve left
    unzeroed fails every run), and the switch turns it off."""
    x = torch.zeros(300)
    assert torch.isnan(_simt.selftest("fresh_buffer", x)).all()
    with _simt.emulated_cuda(debug_alloc=False):
        plain = torch.ops.fastlstm._simt_selftest("fresh_buffer", x)
    assert plain.shape == (300,)  # whatever the allocator held: nothing is promised


def test_paired_16_bit_loads_must_be_aligned():
    """simt::load_pair (two 16-bit mma operands in one 32-bit load): at an even element it
    returns both; at an odd one the emulator refuses it, as a GPU faults on a misaligned
    shared-memory access."""
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert _simt.selftest("shared_pair", x).item() == 1.0 + 1000.0 * 2.0
    with pytest.raises(RuntimeError, match=r"misaligned 4-byte shared-memory access at byte 2"):
        _simt.selftest("shared_pair_misaligned", x)
