"""What the persistent kernels' FMA loops (float without TF32; csrc/cuda/warp_dot.cuh) cost per
step, counted by the emulator (fastlstm._simt.work_counts): bytes read from shared memory and
warp shuffles, pinned to the formulas below so that a change that reads each weight once per row
again, or doubles the reduction's shuffles, fails here.

The formulas follow the kernels' design, not their code: a block owns nu hidden units (the
forward: 4 gate rows of P weights each; the backward: nu columns of W_hh, 4H weights each), and
an item of R rows reads its weight rows once from shared memory, with R the largest of 4, 2, 1
that still gives each of the block's warps an item. Where even items of one row are fewer than
the warps, warps / items warps share each item's K (at least 64 values each) and add up their
totals through shared memory. The emulated block has 64 threads (2 warps), the emulated device
6 multiprocessors unless a test asks for more."""

import math

import pytest
import torch

from fastlstm import _simt
from helpers import make_pair

pytestmark = pytest.mark.cuda_emulated

WARPS = 2   # kPersistentThreads / 32 under emulation
SMS = _simt.SMS
FLOAT = 4   # bytes


def _block_units(H, sms=SMS):
    """Hidden units of each block of a unidirectional layer (csrc/cuda/persistent.cuh,
    block_units): min(H, sms) blocks of ceil(H / blocks) units, the last ones fewer or none."""
    blocks = min(H, sms)
    U = -(-H // blocks)
    return [max(0, min(H, (jb + 1) * U) - min(H, jb * U)) for jb in range(blocks)]


def _rows_per_item(rows, units):
    for R in (4, 2):
        if -(-rows // R) * units >= WARPS:
            return R
    return 1


def _spread_shuffles(N):
    """Shuffles of one transposing reduction of N totals over 32 lanes."""
    return N - 1 + 5 - int(math.log2(N))


def _active_rows(lengths):
    return [sum(1 for n in lengths if n > t) for t in range(max(lengths))]


def _dot_items(rows, units, K, C):
    """Shared-memory bytes read and written and shuffles of one step's items in one block:
    rows x units, each C weight rows of K values (csrc/cuda/warp_dot.cuh)."""
    R = _rows_per_item(rows, units)
    items = -(-rows // R) * units
    splits = 1
    if R == 1 and 0 < items < WARPS:
        splits = min(WARPS // items, -(-K // 64))
    N = R * C
    reads = items * C * K * FLOAT                    # each weight row once per item
    shuffles = items * splits * _spread_shuffles(N)  # one reduction per part
    # the later parts' totals: one lane each writes, every lane of the first part reads
    writes = items * (splits - 1) * N * FLOAT
    reads += items * (splits - 1) * 32 * FLOAT
    return reads, writes, shuffles


def _expected(lengths, H, sms, K, C, slice_bytes):
    reads = writes = shuffles = 0
    for rows in _active_rows(lengths):
        for units in _block_units(H, sms):
            if units:
                r, w, sh = _dot_items(rows, units, K, C)
                reads, writes, shuffles = reads + r, writes + w, shuffles + sh
    writes += sum(slice_bytes(units) for units in _block_units(H, sms))  # the resident slices
    return reads, writes, shuffles


def expected_forward(lengths, H, sms):
    """Shared-memory bytes read, written and shuffles of the forward kernel (no projection):
    items of rows times one unit's 4 gate rows of H weights."""
    return _expected(lengths, H, sms, H, 4, lambda units: 4 * units * H * FLOAT)


def expected_backward(lengths, H, sms):
    """The same for the backward kernel (no projection): phase B's items of rows times one
    column of W_hh (4H weights); phase A's cells read no shared memory."""
    return _expected(lengths, H, sms, 4 * H, 1, lambda units: units * 4 * H * FLOAT)


def _counted(fn):
    before = _simt.work_counts()
    fn()
    after = _simt.work_counts()
    return {k: after[k] - before[k] for k in after}


# H = 12: 6 blocks of 2 units; H = 6: 6 blocks of 1 unit, where 1 to 4 rows take items of 1 or
# 2 rows (R = 1, 2) so that both warps work; H = 40: 6 blocks of 7 units, the last 5; H = 20 on
# 20 multiprocessors: blocks of 1 unit, where a step of one row splits the backward's K = 80
# between both warps.
@pytest.mark.parametrize("H,sms,lengths", [(12, SMS, [16, 16, 12, 9, 9, 5, 3, 1]),
                                           (6, SMS, [9, 7, 4, 4, 3, 2, 1]),
                                           (40, SMS, [5, 5, 2]),
                                           (20, 20, [6, 3, 1])])
def test_fma_loops_read_each_weight_once_per_item_of_rows(H, sms, lengths, monkeypatch):
    monkeypatch.setenv("FASTLSTM_CUDA_PATH", "persistent")
    I = 3
    _, fast = make_pair(I, H, torch.float32)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(max(lengths), len(lengths), I, generator=gen, requires_grad=True)
    with _simt.emulated_cuda(seed=0, sms=sms):
        out = {}
        fwd = _counted(lambda: out.setdefault("y", fast(x, lengths=lengths)))
        y, (h, c) = out["y"]
        bwd = _counted(lambda: (y.sum() + h.sum() + c.sum()).backward())
    counted = ("shared_read_bytes", "shared_write_bytes", "shuffles")
    assert tuple(fwd[k] for k in counted) == expected_forward(lengths, H, sms)
    assert tuple(bwd[k] for k in counted) == expected_backward(lengths, H, sms)
    assert fwd["mma"] == bwd["mma"] == 0  # float without TF32: FMAs only



def _expected_mma(lengths, sms, K, slice_bytes):
    """mma instructions and shared-memory bytes written by one pass on tensor cores (bf16,
    k16), every block owning at most 8 columns (one column tile): each step's product
    takes ceil(K / 16) mma per row tile; where one row tile leaves the second warp idle, the
    two warps split K and the second leaves its 16x8 fragments (32 lanes x 4 floats) in the
    scratch. Writes: the resident slices, then the scratch."""
    mma = scratch = 0
    k_steps = -(-K // 16)
    for rows in _active_rows(lengths):
        tiles = -(-rows // 16)
        mma += sms * tiles * k_steps
        if tiles < WARPS and k_steps > 1:
            scratch += sms * 32 * 4 * FLOAT
    return mma, sms * slice_bytes + scratch


def test_tensor_core_products_split_k_where_one_tile_would_leave_warps_idle(monkeypatch):
    """bf16, H = 24 over 12 blocks of 2 units (8 gate columns: one column tile): steps with
    more than 16 rows have two row tiles, one per warp; steps with 16 or fewer have one, and
    both warps take half of its K (forward K = 24, backward K = 96)."""
    monkeypatch.setenv("FASTLSTM_CUDA_PATH", "persistent")
    H, sms, BF16 = 24, 12, 2
    lengths = [9] * 4 + [6] * 14 + [2] * 2
    _, fast = make_pair(3, H, torch.bfloat16)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(max(lengths), len(lengths), 3, generator=gen).to(torch.bfloat16)
    x.requires_grad_(True)
    with _simt.emulated_cuda(seed=0, sms=sms):
        out = {}
        fwd = _counted(lambda: out.setdefault("y", fast(x, lengths=lengths)))
        y, (h, c) = out["y"]
        bwd = _counted(lambda: (y.float().sum() + h.float().sum() + c.float().sum()).backward())
    units = 2
    assert (fwd["mma"], fwd["shared_write_bytes"]) == \
        _expected_mma(lengths, sms, H, 4 * units * H * BF16)
    assert (bwd["mma"], bwd["shared_write_bytes"]) == \
        _expected_mma(lengths, sms, 4 * H, units * 4 * H * BF16)
