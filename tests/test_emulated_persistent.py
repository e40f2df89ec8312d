"""The persistent CUDA kernels (csrc/cuda/persistent.cuh: the whole time loop in one launch,
the recurrent weights resident in shared memory or read from global memory, one barrier per
step, two with proj_size; a cooperative grid with FASTLSTM_CUDA_PATH=persistent, a thread-block
cluster per direction with FASTLSTM_CUDA_PATH=cluster), run on the CPU through the emulator,
judged against nn.LSTM over packed input, under several schedule seeds with the shared-memory
race check on, the last seed of each test (or its one run) with weak global memory
(emulated_cuda(weak_memory=True), docs/EMULATOR.md "Weak memory"): per-block store buffers
and stale views, so that a missing fence in a barrier fails. Two tests keep strong memory to
save CI time: the bit-for-bit tie test and the TF32 test (what they check is not ordering)."""

import pytest
import torch

from fastlstm import _simt
from helpers import check_parity, make_pair
from helpers import upstream_grads
from test_emulated_cuda import _outputs_and_grads as outputs_and_grads
from test_emulated_cuda import check_half_within_twice_nn_lstm

pytestmark = pytest.mark.cuda_emulated

SEEDS = (0, 1, 2)
I = 3


def weak(seed, seeds=SEEDS):
    """Whether this schedule seed runs with weak global memory: the last of the test's seeds."""
    return seed == seeds[-1]


@pytest.fixture
def cuda_path(monkeypatch):
    def set_path(path):
        monkeypatch.setenv("FASTLSTM_CUDA_PATH", path)
    return set_path


def _data(layers, bi, H, lengths, dtype, seed, bf=False, proj=0):
    T, B = max(max(lengths), 1), len(lengths)
    gen = torch.Generator().manual_seed(200 + seed)
    x = torch.randn((B, T, I) if bf else (T, B, I), generator=gen, dtype=torch.float64).to(dtype)
    D = 2 if bi else 1
    hx = tuple(torch.randn(layers * D, B, size, generator=gen, dtype=torch.float64).to(dtype)
               for size in (proj or H, H))
    return x, hx


# (layers, bidirectional, H, proj_size, bias, batch_first, lengths): H from 5 to 40, so that
# blocks own 1 to 14 units and the dot products take several lanes' turns; with proj_size, some
# blocks own no output unit; lengths unsorted, with zeros.
GRID = [
    (1, False, 5, 0, True, False, [6, 2, 6, 0, 5, 1]),
    (1, True, 8, 0, True, False, [7, 0, 3, 7, 1]),
    (2, True, 6, 0, False, True, [4, 9, 0, 2, 9, 6, 1, 3, 8]),
    (2, False, 40, 0, True, False, [12, 3, 0, 11]),
    (1, True, 33, 0, True, False, [0, 0]),
    (1, False, 7, 3, True, False, [5, 0, 5, 2]),
    (2, True, 8, 5, True, True, [4, 9, 0, 2, 9, 6, 1]),
    (1, True, 37, 33, False, False, [3, 8, 0]),
]
# Where the weights live: shared memory (the emulated device has a Hopper SM's 227 KiB), or
# global memory (a device with no shared memory to spare beyond the blocks' scratch for the
# tensor-core products: "H above the resident limit").
PLACEMENT = {"resident": _simt.SHARED_BYTES, "global": _simt.MMA_SCRATCH_BYTES}


@pytest.mark.parametrize("placement", PLACEMENT)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layers,bi,H,proj,bias,bf,lengths", GRID)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_persistent_parity_with_nn_lstm(layers, bi, H, proj, bias, bf, lengths, dtype, seed,
                                        placement, cuda_path):
    ref, fast = make_pair(I, H, dtype, seed=seed, num_layers=layers, bidirectional=bi,
                          proj_size=proj, bias=bias, batch_first=bf)
    x, hx = _data(layers, bi, H, lengths, dtype, seed, bf, proj)
    cuda_path("persistent")
    with _simt.emulated_cuda(seed=seed, shared_bytes=PLACEMENT[placement],
                             weak_memory=weak(seed)):
        check_parity(ref, fast, x, lengths, hx=hx)


# (layers, bidirectional, H, proj_size, lengths): up to 20 rows (two row tiles of 16), H up to
# 40 (K in three steps of 16, up to 28 gate columns a block), proj_size not a multiple of 8.
HALF_GRID = [
    (1, True, 40, 0, [9, 3, 0, 9, 7, 1, 9, 2, 5, 9, 8, 4, 9, 6, 0, 9, 3, 9, 1, 9]),
    (2, False, 24, 9, [6, 0, 6, 2, 5, 6, 1, 3, 6, 4, 6, 6, 0, 2, 6, 5, 6, 1]),
]


@pytest.mark.parametrize("placement", PLACEMENT)
@pytest.mark.parametrize("seed", (0, 1))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layers,bi,H,proj,lengths", HALF_GRID)
def test_half_precision_on_tensor_cores(layers, bi, H, proj, lengths, dtype, seed, placement,
                                        cuda_path):
    """fp16/bf16 multiply on tensor cores (emulated m16n8k16, fp32 accumulation): within 2x
    nn.LSTM's own error in that dtype, against float64."""
    cuda_path("persistent")
    before = _simt.mma_count()
    check_half_within_twice_nn_lstm(H, layers, bi, proj, dtype, seed, lengths,
                                    shared_bytes=PLACEMENT[placement],
                                    weak_memory=weak(seed, (0, 1)))
    assert _simt.mma_count() > before, "the tensor-core path did not run"


@pytest.mark.parametrize("placement", PLACEMENT)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layers,bi,H,proj,bias,bf,lengths", GRID)
def test_cluster_parity_with_nn_lstm(layers, bi, H, proj, bias, bf, lengths, seed, placement,
                                     cuda_path):
    """FASTLSTM_CUDA_PATH=cluster: each direction one thread-block cluster (the emulated
    device's largest holds 4 blocks, so blocks own up to 10 units), meeting at the cluster
    barrier instead of the grid barrier, the forward's h_{t-1} travelling through distributed
    shared memory (each block stores its units of h_t into every block of the cluster). Where
    the weights do not fit the cluster's shared memory ("global"), the grid path runs instead:
    no cluster barrier, no distributed shared memory."""
    ref, fast = make_pair(I, H, torch.float64, seed=seed, num_layers=layers, bidirectional=bi,
                          proj_size=proj, bias=bias, batch_first=bf)
    x, hx = _data(layers, bi, H, lengths, torch.float64, seed, bf, proj)
    cuda_path("cluster")
    before = _simt.cluster_barrier_count(), _simt.dsmem_access_count()
    with _simt.emulated_cuda(seed=seed, shared_bytes=PLACEMENT[placement],
                             weak_memory=weak(seed)):
        check_parity(ref, fast, x, lengths, hx=hx)
    on_clusters = max(lengths) > 0 and placement == "resident"
    assert (_simt.cluster_barrier_count() > before[0]) == on_clusters
    assert (_simt.dsmem_access_count() > before[1]) == on_clusters


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layers,bi,H,proj,lengths", HALF_GRID)
def test_cluster_half_precision_on_tensor_cores(layers, bi, H, proj, lengths, dtype, cuda_path):
    cuda_path("cluster")
    before = _simt.mma_count(), _simt.cluster_barrier_count()
    check_half_within_twice_nn_lstm(H, layers, bi, proj, dtype, 0, lengths, weak_memory=True)
    assert _simt.mma_count() > before[0] and _simt.cluster_barrier_count() > before[1]


def _outputs_and_grads(fast, x, hx, lengths, **emulation):
    fast.zero_grad()
    # Strong memory: these tests are about tie order and TF32, and weak memory would double
    # their time in CI; every other persistent and cluster test has a weak-memory run.
    with _simt.emulated_cuda(seed=1, **emulation):
        out, (h, c) = fast(x, hx, lengths=lengths)
        (out.sum() + h.sum() + c.sum()).backward()
    return [out, h, c] + [p.grad.clone() for p in fast.parameters()]


@pytest.mark.parametrize("proj", [0, 3])
def test_cluster_exchange_through_global_memory_gives_the_same_bits(proj, cuda_path,
                                                                    monkeypatch):
    """FASTLSTM_CUDA_DSMEM=0 (h_{t-1} from global memory, to measure what DSMEM brings), and a
    shared memory that holds the forward's weight slices and scratch but not the two [B, Hout]
    exchange buffers: the same
    products in the same order, so the same bits as through distributed shared memory."""
    lengths = [6, 0, 4, 6, 2]
    _, fast = make_pair(I, 8, torch.float64, bidirectional=True, proj_size=proj)
    x, hx = _data(1, True, 8, lengths, torch.float64, 0, proj=proj)
    cuda_path("cluster")
    before = _simt.dsmem_access_count()
    want = _outputs_and_grads(fast, x, hx, lengths)
    assert _simt.dsmem_access_count() > before
    P = proj or 8
    weights_bytes = _block_shared_bytes(8, P, proj, _simt.CLUSTER_BLOCKS, backward=False)
    # h_{t-1} as padded rows, two buffers without a projection
    exchange_bytes = (1 if proj else 2) * len(lengths) * _padded(P) * 8
    monkeypatch.setenv("FASTLSTM_CUDA_DSMEM", "0")
    runs = {"FASTLSTM_CUDA_DSMEM=0": {},
            "no room for the buffers": {"shared_bytes": weights_bytes + exchange_bytes - 8}}
    for name, emulation in runs.items():
        if name != "FASTLSTM_CUDA_DSMEM=0":
            monkeypatch.delenv("FASTLSTM_CUDA_DSMEM")
        before = _simt.dsmem_access_count(), _simt.cluster_barrier_count()
        got = _outputs_and_grads(fast, x, hx, lengths, **emulation)
        assert _simt.dsmem_access_count() == before[0], name
        assert _simt.cluster_barrier_count() > before[1], name
        for a, b in zip(want, got):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("proj", [0, 7])
def test_cluster_of_16_blocks_some_owning_no_units(proj, cuda_path):
    """Hopper's largest cluster, 16 blocks a direction, with H = 20: blocks 10-15 own no hidden
    unit (with proj_size 7, blocks 7-15 no output unit) yet join every barrier. Each pass
    exchanges through distributed shared memory: every value stored into the 15 other blocks,
    h (forward), the gate gradients and, with a projection, dout (backward) of every token."""
    H, blocks = 20, 16
    ref, fast = make_pair(I, H, torch.float64, seed=3, bidirectional=True, proj_size=proj)
    lengths = [7, 0, 4, 7, 2]
    x, hx = _data(1, True, H, lengths, torch.float64, 3, proj=proj)
    cuda_path("cluster")
    with _simt.emulated_cuda(seed=3, cluster_blocks=blocks, weak_memory=True):
        check_parity(ref, fast, x, lengths, hx=hx)
        before = _simt.dsmem_access_count()
        out, (h, c) = fast(x, hx, lengths=lengths)
        forward = _simt.dsmem_access_count() - before
        (out.sum() + h.sum() + c.sum()).backward()
        backward = _simt.dsmem_access_count() - before - forward
    tokens, P = sum(lengths) * 2, proj or H  # both directions
    assert forward == tokens * P * (blocks - 1)
    assert backward == tokens * (4 * H + (P if proj else 0)) * (blocks - 1)


# The stage of the tensor-core products' A rows (FASTLSTM_CUDA_STAGE; staged_mma_products in
# csrc/cuda/mma_tiles.cuh): 40 rows, bidirectional, H = 40 on 2 multiprocessors (one block a
# direction, all 40 units). "resident": the weights in shared memory beside the stage; "stage
# only": room for a stage of 16 rows of the backward's gate gradients (4H = 160, padded to 168)
# and the scratch, not for the weight slices, which stay in global memory.
STAGE_H, STAGE_LENGTHS = 40, [9, 3, 0, 9, 7, 1, 9, 2, 5, 9, 8, 4, 9, 6, 0, 9, 3, 2, 9, 9] * 2
STAGE_SHARED = {"resident": _simt.SHARED_BYTES,
                "stage only": _simt.MMA_SCRATCH_BYTES + 16 * 168 * 2}


@pytest.mark.parametrize("shared", STAGE_SHARED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_staged_tensor_core_products(dtype, shared, cuda_path, monkeypatch):
    """Every stage size (none; 16 rows: three turns a step at 40 rows; the default 64) within
    2x nn.LSTM's error; and the staged runs copy every active row of each product into shared
    memory: at least tokens x (H + 4H) elements a direction more writes than without a stage
    (forward K = H, backward K = 4H, each row zero-padded to a multiple of 16)."""
    cuda_path("persistent")
    tokens, D, elem = sum(STAGE_LENGTHS), 2, 2
    writes = {}
    for stage in ("0", "16", "64"):
        monkeypatch.setenv("FASTLSTM_CUDA_STAGE", stage)
        before = _simt.work_counts()["shared_write_bytes"]
        check_half_within_twice_nn_lstm(STAGE_H, 1, True, 0, dtype, 0, STAGE_LENGTHS, sms=2,
                                        shared_bytes=STAGE_SHARED[shared],
                                        weak_memory=stage == "16")
        writes[stage] = _simt.work_counts()["shared_write_bytes"] - before
    staged_rows = D * tokens * 5 * STAGE_H * elem
    assert writes["16"] - writes["0"] >= staged_rows, writes
    assert writes["64"] - writes["0"] >= staged_rows, writes


def test_stage_setting_must_be_a_number(cuda_path, monkeypatch):
    cuda_path("persistent")
    monkeypatch.setenv("FASTLSTM_CUDA_STAGE", "lots")
    fast = make_pair(I, 8, torch.bfloat16)[1]
    with _simt.emulated_cuda():
        with pytest.raises(RuntimeError, match="FASTLSTM_CUDA_STAGE must be a number of rows"):
            fast(torch.randn(3, 2, I).to(torch.bfloat16), lengths=[3, 1])


@pytest.mark.slow
@pytest.mark.parametrize("path", ["persistent", "cluster"])
@pytest.mark.parametrize("proj", [0, 5])
def test_float32_on_tf32_tensor_cores_where_tf32_is_allowed(path, proj, cuda_path):
    """With TF32 allowed for matmuls (torch's allow_tf32, here the emulated cuBLAS handle's
    TF32 mode), float32 products run on tensor cores in TF32 (m16n8k8): every output and
    gradient within TF32's error of a float64 nn.LSTM. Without it, FMAs only, float32's error."""
    H = 24
    lengths = [9, 3, 0, 9, 7, 1, 9, 2, 5, 9, 8, 4, 9, 6, 0, 9, 3]  # 17 rows: two row tiles
    T, B, D, P = max(lengths), len(lengths), 2, proj or H
    ref64, fast = make_pair(I, H, torch.float64, seed=4, bidirectional=True, proj_size=proj)
    fast = fast.float()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(T, B, I, generator=gen, dtype=torch.float64).float().double()
    hx = tuple(torch.randn(s, generator=gen, dtype=torch.float64).float().double()
               for s in ((D, B, P), (D, B, H)))
    grads = upstream_grads([(T, B, D * P), hx[0].shape, hx[1].shape], torch.float32, 4)
    exact = outputs_and_grads(ref64, x, lengths, hx, grads, fast=False)
    cuda_path(path)
    errors = {}
    for tf32 in (False, True):
        before = _simt.mma_count()
        with _simt.emulated_cuda(seed=4, tf32=tf32):  # strong memory: see _outputs_and_grads
            got = outputs_and_grads(fast, x.float(), lengths, tuple(t.float() for t in hx),
                                    grads, fast=True)
        assert (_simt.mma_count() > before) == tf32
        errors[tf32] = {k: ((got[k] - want).abs().max().item(),
                            max(1.0, want.abs().max().item())) for k, want in exact.items()}
    for name, (err, scale) in errors[True].items():
        print(f"{name}: TF32 {err:.3g}, FMA {errors[False][name][0]:.3g}")
        assert err <= 1e-2 * scale, (name, err)
        assert errors[False][name][0] <= 1e-4 * scale, name
    assert max(e for e, _ in errors[True].values()) > 10 * max(e for e, _ in errors[False].values())


def test_cluster_path_without_clusters_takes_the_grid(cuda_path):
    """A device without thread-block clusters (before Hopper): the cooperative grid instead."""
    ref, fast = make_pair(I, 8, torch.float64, bidirectional=True)
    lengths = [5, 0, 3, 5, 1]
    x, hx = _data(1, True, 8, lengths, torch.float64, 0)
    cuda_path("cluster")
    before = _simt.cluster_barrier_count()
    with _simt.emulated_cuda(seed=2, cluster_blocks=0, weak_memory=True):
        check_parity(ref, fast, x, lengths, hx=hx)
    assert _simt.cluster_barrier_count() == before
    launches = {}
    for path in ("persistent", "cluster"):
        cuda_path(path)
        launches[path] = _launches(_train_step(fast, x, hx, lengths), cluster_blocks=0)
    assert launches["persistent"] == launches["cluster"]


@pytest.mark.parametrize("sms", [1, 2, 3])
@pytest.mark.parametrize("proj", [0, 4])
def test_few_multiprocessors(sms, proj, cuda_path):
    """One block per direction (sms 2, bidirectional) owns every unit; with one SM a
    bidirectional layer has no room for both directions' grids and takes the per-step path."""
    ref, fast = make_pair(I, 9, torch.float64, seed=sms, bidirectional=True, proj_size=proj)
    lengths = [5, 0, 3, 5, 1]
    x, hx = _data(1, True, 9, lengths, torch.float64, sms, proj=proj)
    cuda_path("persistent")
    with _simt.emulated_cuda(seed=sms, sms=sms, weak_memory=True):
        check_parity(ref, fast, x, lengths, hx=hx)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("proj", [0, 5])
def test_one_unit_per_block_splits_k_between_the_warps(dtype, proj, cuda_path):
    """H = 66 on 66 multiprocessors: every block owns one unit, so a step of one row is one item
    (or one tensor-core tile) for the block's two warps, which split its K (66, or 264 in the
    backward) and add up through shared memory (warp_dot.cuh, mma_tiles.cuh). Against nn.LSTM,
    within twice its own error in bf16."""
    H, lengths = 66, [4, 1, 2]  # 3 rows, 2, then 1 (the split)
    cuda_path("persistent")
    if dtype == torch.bfloat16:
        before = _simt.mma_count()
        check_half_within_twice_nn_lstm(H, 1, False, proj, dtype, 0, lengths, sms=H)
        assert _simt.mma_count() > before, "the tensor-core path did not run"
        return
    ref, fast = make_pair(I, H, dtype, proj_size=proj)
    x, hx = _data(1, False, H, lengths, dtype, 0, proj=proj)
    with _simt.emulated_cuda(seed=3, sms=H, weak_memory=True):
        check_parity(ref, fast, x, lengths, hx=hx)


def _launches(fn, **emulation):
    before = _simt.launch_count()
    with _simt.emulated_cuda(seed=0, weak_memory=True, **emulation):
        fn()
    return _simt.launch_count() - before


def _train_step(fast, x, hx, lengths):
    def run():
        out, (h, c) = fast(x, hx, lengths=lengths)
        (out.sum() + h.sum() + c.sum()).backward()
    return run


@pytest.mark.parametrize("proj", [0, 3])
def test_persistent_path_runs_the_loop_in_one_launch(proj, cuda_path):
    """Forward+backward of a 1-layer bidirectional LSTM over 20 steps: the per-step path
    launches kernels for every step (a cell kernel forward; an add and a cell kernel backward,
    per direction; with proj_size also a copy backward), the persistent path one forward and one
    backward launch per layer; the launches around the loop (gathers, bias, scatters) are the
    same for both."""
    lengths = [20, 3, 0, 17, 9]
    _, fast = make_pair(I, 8, torch.float64, bidirectional=True, proj_size=proj)
    x, hx = _data(1, True, 8, lengths, torch.float64, 0, proj=proj)
    counts = {}
    for path in ("step", "persistent"):
        cuda_path(path)
        counts[path] = _launches(_train_step(fast, x, hx, lengths))
    print(counts)
    active_steps = 2 * 20  # every step has an active row, in each of the 2 directions
    per_step = 4 if proj else 3
    assert counts["step"] - counts["persistent"] == per_step * active_steps - 2


@pytest.mark.parametrize("proj", [0, 3])
def test_weights_from_global_memory_when_shared_memory_is_short(proj, cuda_path):
    """Without the shared memory for its weight slices, the backward reads W_hh (and W_hr)
    transposed from global memory: one transpose launch per matrix and direction more than the
    resident run, and the same results to rounding."""
    lengths = [6, 0, 4, 6]
    _, fast = make_pair(I, 8, torch.float64, bidirectional=True, proj_size=proj)
    x, hx = _data(1, True, 8, lengths, torch.float64, 0, proj=proj)
    cuda_path("persistent")
    counts, results = {}, {}
    for name, shared in PLACEMENT.items():
        fast.zero_grad()
        with _simt.emulated_cuda(seed=0, shared_bytes=shared, weak_memory=True):
            before = _simt.launch_count()
            out, (h, c) = fast(x, hx, lengths=lengths)
            (out.sum() + h.sum() + c.sum()).backward()
            counts[name] = _simt.launch_count() - before
        results[name] = [out, h, c] + [p.grad.clone() for p in fast.parameters()]
    assert counts["global"] - counts["resident"] == 2 * (2 if proj else 1)
    for a, b in zip(results["resident"], results["global"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _padded(C):
    """A float64 row of C values in shared memory: C rounded up to 32 bytes plus 16 bytes, so
    that rows start 4 (mod 8) four-byte banks apart (csrc/cuda/persistent.cuh, padded_ld)."""
    return -(-C // 4) * 4 + 2


def _slice_elements(H, P, proj, blocks, backward):
    """Elements of one block's float64 weight slices (csrc/cuda/persistent.cuh,
    slice_elements): rows of W_hh and W_hr (forward) or columns (backward), padded."""
    U, V = -(-H // blocks), -(-P // blocks)
    if backward:
        return V * _padded(4 * H) + (U * _padded(P) if proj else 0)
    return 4 * U * _padded(P) + (V * _padded(H) if proj else 0)


def _block_shared_bytes(H, P, proj, blocks, backward):
    """Shared memory of one block of a float64 layer with its weights resident: the slices,
    then the scratch (its start 16-byte aligned; the slices' rows are multiples of 16 bytes)."""
    return 8 * _slice_elements(H, P, proj, blocks, backward) + _simt.MMA_SCRATCH_BYTES


@pytest.mark.parametrize("sms,H,proj", [(6, 8, 3), (6, 7, 6), (16, 16, 2)])
def test_forward_and_backward_place_their_weights_independently(sms, H, proj, cuda_path):
    """A shared-memory size between the forward's and the backward's needs: one pass resident,
    the other from global memory (the emulator refuses a launch asking for more shared memory
    than the device has; a backward from global memory makes two transposed copies), both
    correct."""
    blocks = sms  # unidirectional, H >= SMs: one block per SM
    fwd = _block_shared_bytes(H, proj, proj, blocks, backward=False)
    bwd = _block_shared_bytes(H, proj, proj, blocks, backward=True)
    assert fwd != bwd
    limit = (fwd + bwd) // 2
    ref, fast = make_pair(I, H, torch.float64, proj_size=proj)
    lengths = [5, 0, 3, 5]
    x, hx = _data(1, False, H, lengths, torch.float64, 0, proj=proj)
    cuda_path("persistent")
    with _simt.emulated_cuda(seed=1, sms=sms, shared_bytes=limit, weak_memory=True):
        check_parity(ref, fast, x, lengths, hx=hx)
    full = _launches(_train_step(fast, x, hx, lengths), sms=sms)
    short = _launches(_train_step(fast, x, hx, lengths), sms=sms, shared_bytes=limit)
    assert short - full == (2 if fwd < bwd else 0)


def test_launch_beyond_the_devices_shared_memory_is_refused():
    with pytest.raises(RuntimeError, match="1024 bytes of dynamic shared memory per block "
                                           "asked for, the emulated device has 512"):
        with _simt.emulated_cuda(shared_bytes=512):
            torch.ops.fastlstm._simt_selftest("block_sum", torch.ones(256))


def test_unknown_path_is_refused(cuda_path):
    _, fast = make_pair(I, 4, torch.float64)
    cuda_path("fastest")
    with _simt.emulated_cuda():
        with pytest.raises(RuntimeError, match="FASTLSTM_CUDA_PATH must be one of step, "
                                               "persistent, cluster, auto; got 'fastest'"):
            fast(torch.randn(3, 2, I, dtype=torch.float64), lengths=[3, 1])
