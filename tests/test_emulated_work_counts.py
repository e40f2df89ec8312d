"""What the persistent kernels cost per step, counted by the emulator (fastlstm._simt.
work_counts: bytes read from and written to shared memory, warp shuffles, mma instructions) and
pinned to the counts of the cost model (benchmarks/gpu_model.py, docs/GPU_COST_MODEL.md), which
follow the kernels' design rather than their code. A change that reads each weight once per row
again, doubles a reduction's shuffles or stops splitting K where warps would idle fails here, and
the model that predicts GPU times counts what the kernels do.

The design: a block owns a few hidden units (the forward: 4 gate rows of H weights each; the
backward: one column of W_hh, 4H weights, per unit). FMA loops (float without TF32) take items of
R rows, R the largest of 8, 4, 2, 1 that still gives each of the block's warps an item, and read an
item's weight rows once; where even items of one row are fewer than the warps, warps / items
warps share each item's K and add up through shared memory. Tensor-core products (bf16) take
16 x 8 tiles and split K the same way where the tiles are fewer than the warps. The emulated
block has 64 threads (2 warps); the emulated device 6 multiprocessors unless a test asks for
more."""

import importlib.util
import os
from dataclasses import replace

import pytest
import torch

from fastlstm import _simt
from helpers import make_pair

pytestmark = pytest.mark.cuda_emulated

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("gpu_model",
                                               os.path.join(ROOT, "benchmarks", "gpu_model.py"))
model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(model)

FLOAT, BF16 = 4, 2  # bytes
COUNTED = ("shared_read_bytes", "shared_write_bytes", "shuffles", "mma")


def _active_rows(lengths):
    return [sum(1 for n in lengths if n > t) for t in range(max(lengths))]


def expected(pass_, dtype, lengths, H, sms, stage=None):
    """The model's counts summed over a unidirectional layer's blocks and steps, plus the
    writes that load each block's resident weight slices, their rows padded (padded_ld): 4 gate
    rows of H per unit forward, a 4H column per unit backward."""
    device = replace(model.EMULATED, sms=sms)
    units = model.block_units(H, min(H, sms))
    total = dict.fromkeys(COUNTED, 0)
    for rows in _active_rows(lengths):
        for u in units:
            if u:
                w = model.step_products(pass_, dtype, rows, u, H, device, staged=stage != "0",
                                        stage_rows=int(stage or model.STAGE_ROWS))
                total["shared_read_bytes"] += w.shared_read
                total["shared_write_bytes"] += w.shared_write
                total["shuffles"] += w.shuffles
                total["mma"] += w.mma
    elem = {"float32": FLOAT, "bfloat16": BF16}[dtype]
    row = 4 * model.padded_ld(H, elem) if pass_ == "forward" else model.padded_ld(4 * H, elem)
    total["shared_write_bytes"] += sum(u * row * elem for u in units)
    return total


def _counted(fn):
    before = _simt.work_counts()
    fn()
    after = _simt.work_counts()
    return {k: after[k] - before[k] for k in COUNTED}


def _forward_and_backward(H, sms, lengths, dtype):
    _, fast = make_pair(3, H, getattr(torch, dtype))
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(max(lengths), len(lengths), 3, generator=gen).to(getattr(torch, dtype))
    x.requires_grad_(True)
    with _simt.emulated_cuda(seed=0, sms=sms):
        out = {}
        fwd = _counted(lambda: out.setdefault("y", fast(x, lengths=lengths)))
        y, (h, c) = out["y"]
        bwd = _counted(lambda: (y.float().sum() + h.float().sum() + c.float().sum()).backward())
    return fwd, bwd


# float32 (FMAs). H = 12: 6 blocks of 2 units; H = 6: 6 blocks of 1 unit, where 1 to 4 rows
# take items of 1 or 2 rows so that both warps work; H = 40: 6 blocks of 7 units, the last 5;
# H = 20 on 20 multiprocessors: blocks of 1 unit, where a step of one row splits the backward's
# K = 80 between both warps.
# bfloat16 (tensor cores). H = 24 on 12 multiprocessors: blocks of 2 units (8 gate columns, one
# column tile); steps of more than 16 rows have two row tiles, one per warp, steps of 16 or fewer
# one, whose K (24 forward, 96 backward) both warps share.
# bfloat16 with FASTLSTM_CUDA_STAGE=0: A read from global memory, so only the weights' reads
# and writes remain in shared memory; with a stage of 16 rows, the steps of 21 and 18 rows stage
# theirs in two turns, each a product of its own (one tile: K split between the warps). H = 21:
# K odd, each row's last pair half padding.
@pytest.mark.parametrize("dtype,H,sms,lengths,stage", [
    ("float32", 12, 6, [16, 16, 12, 9, 9, 5, 3, 1], None),
    ("float32", 6, 6, [9, 7, 4, 4, 3, 2, 1], None),
    ("float32", 40, 6, [5, 5, 2], None),
    ("float32", 20, 20, [6, 3, 1], None),
    ("bfloat16", 24, 12, [9] * 4 + [6] * 14 + [2] * 2, None),
    ("bfloat16", 24, 12, [9] * 4 + [6] * 14 + [2] * 2, "0"),
    ("bfloat16", 20, 10, [7] * 18 + [3] * 3, "16"),
    ("bfloat16", 21, 7, [5] * 17 + [2], None),
])
def test_kernels_do_the_work_the_cost_model_counts(dtype, H, sms, lengths, stage, monkeypatch):
    monkeypatch.setenv("FASTLSTM_CUDA_PATH", "persistent")
    if stage is not None:
        monkeypatch.setenv("FASTLSTM_CUDA_STAGE", stage)
    fwd, bwd = _forward_and_backward(H, sms, lengths, dtype)
    for counted, pass_ in ((fwd, "forward"), (bwd, "backward")):
        want = expected(pass_, dtype, lengths, H, sms, stage)
        assert counted == {k: want[k] for k in counted}, pass_
    if dtype == "float32":
        assert fwd["mma"] == bwd["mma"] == 0  # float without TF32: FMAs only
    else:
        assert fwd["shuffles"] == bwd["shuffles"] == 0


def test_the_model_predicts_the_targets_shapes():
    """The model's figures for the issue's targets: every one within its target, each made of
    a throughput bound, a path and a barrier that are all positive."""
    for (dtype, H, B, D), target in model.TARGETS.items():
        p = model.predict_step_us("forward", dtype, B, H, D)
        assert 0 < p["throughput_us"] and 0 < p["path_us"] and 0 < p["barrier_us"]
        assert p["us"] == pytest.approx(p["throughput_us"] + p["path_us"] + p["barrier_us"])
        assert p["us"] <= target, (dtype, H, B, D, p)


def test_the_backward_of_large_batches_is_bound_by_l2():
    """Every block reads all 4H gate gradients of every active row from L2 at every step of the
    backward: at B = 64 that share of the L2's bandwidth, not shared memory or the tensor
    cores, bounds the step, and the term is the A rows' bytes at a 132nd of 5120 B per clock."""
    for dtype, elem in (("bfloat16", BF16), ("float32", FLOAT)):
        p = model.predict_step_us("backward", dtype, 64, 512, 2)
        assert p["bound"] == "l2", (dtype, p)
        l2_cycles = 64 * 4 * 512 * elem / (model.H100.l2_bytes_per_clk / model.H100.sms)
        assert p["throughput_us"] == pytest.approx(l2_cycles / (model.H100.clock_ghz * 1e3))
        assert model.H100.l2_bytes_per_clk == pytest.approx(5120, rel=1e-3)
    # The forward's h_{t-1} is a quarter of that: shared memory bounds it there.
    assert model.predict_step_us("forward", "bfloat16", 64, 512, 2)["bound"] == "shared"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_products_with_a_projection_all_run_on_tensor_cores(dtype, monkeypatch):
    """With proj_size, the backward's dout W_hr (the raw h's gradient) also takes the tensor
    cores in 16-bit: no FMA loop, so no shuffle, in either pass."""
    monkeypatch.setenv("FASTLSTM_CUDA_PATH", "persistent")
    fast = make_pair(3, 24, dtype, proj_size=9)[1]
    x = torch.randn(7, 4, 3).to(dtype).requires_grad_(True)
    with _simt.emulated_cuda(seed=0):
        out = {}
        fwd = _counted(lambda: out.setdefault("y", fast(x, lengths=[7, 5, 3, 1])))
        y, (h, c) = out["y"]
        bwd = _counted(lambda: (y.float().sum() + h.float().sum() + c.float().sum()).backward())
    assert fwd["mma"] > 0 and bwd["mma"] > 0
    assert fwd["shuffles"] == bwd["shuffles"] == 0
