"""The CUDA backend run on the CPU (csrc/simt/): the same kernels, cuBLAS call sites and layer
driver that the GPU runs, every CUDA thread a fiber, under several random schedules with the
shared-memory race check on. nn.LSTM over packed input is the judge, as everywhere.

Also: the emulator's own checks bite (tests/test_simt.py covers its self-test kernels).
"""

import pytest
import torch
from torch import nn

import fastlstm
from fastlstm import _simt
from helpers import check_parity, make_pair, reference_forward, upstream_grads

pytestmark = pytest.mark.cuda_emulated

SEEDS = (0, 1, 2)

# (layers, bidirectional, proj_size, bias, batch_first, lengths): B from 1 to 9, T up to 20,
# lengths unsorted and with zeros.
GRID = [
    (1, False, 0, True, False, [5]),
    (1, True, 0, True, False, [7, 0, 3, 7, 1]),
    (2, True, 0, True, True, [4, 9, 0, 2, 9, 6, 1, 3, 8]),
    (2, False, 3, True, False, [20, 11, 0, 17]),
    (1, True, 3, False, True, [6, 2, 6, 0, 5, 1]),
    (2, True, 2, True, False, [0, 0, 0]),
]
I, H = 3, 6


def _run_emulated(seed, fn, **emulation):
    launches = _simt.launch_count()
    with _simt.emulated_cuda(seed=seed, **emulation):
        result = fn()
    assert _simt.launch_count() > launches, "the emulated CUDA kernels did not run"
    return result


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layers,bi,proj,bias,bf,lengths", GRID)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_with_nn_lstm(layers, bi, proj, bias, bf, lengths, dtype, seed):
    ref, fast = make_pair(I, H, dtype, seed=seed, num_layers=layers, bidirectional=bi,
                          proj_size=proj, bias=bias, batch_first=bf)
    T, B = max(max(lengths), 1), len(lengths)
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.randn((B, T, I) if bf else (T, B, I), generator=gen, dtype=torch.float64).to(dtype)
    D = 2 if bi else 1
    Hout = proj or H
    hx = (torch.randn(layers * D, B, Hout, generator=gen, dtype=torch.float64).to(dtype),
          torch.randn(layers * D, B, H, generator=gen, dtype=torch.float64).to(dtype))
    _run_emulated(seed, lambda: check_parity(ref, fast, x, lengths, hx=hx))


def _outputs_and_grads(model, x, lengths, hx, grads, fast):
    x = x.detach().clone().requires_grad_()
    hx = tuple(t.detach().clone().requires_grad_() for t in hx)
    model.zero_grad(set_to_none=True)
    if fast:
        out, (h_n, c_n) = model(x, hx, lengths=lengths)
    else:
        out, h_n, c_n = reference_forward(model, x, lengths, hx)
    loss = sum((t.float() * g.float()).sum() for t, g in zip((out, h_n, c_n), grads))
    loss.backward()
    result = {"output": out, "h_n": h_n, "c_n": c_n, "grad_input": x.grad,
              "grad_h_0": hx[0].grad, "grad_c_0": hx[1].grad}
    result.update({"grad." + n: p.grad for n, p in model.named_parameters()})
    return {k: v.double() for k, v in result.items()}


def check_half_within_twice_nn_lstm(H, layers, bi, proj, dtype, seed, lengths, **emulation):
    """fp16/bf16 through the emulated CUDA backend: every output and gradient's error against a
    float64 nn.LSTM is at most 2x what nn.LSTM itself makes in that dtype (plus a floor for
    values where both are tiny); padding outputs are exactly 0."""
    T, B = max(lengths), len(lengths)
    ref64, fast = make_pair(I, H, torch.float64, seed=seed, num_layers=layers, bidirectional=bi,
                            proj_size=proj)
    ref_low = nn.LSTM(I, H, num_layers=layers, bidirectional=bi, proj_size=proj).to(dtype)
    ref_low.load_state_dict(ref64.state_dict())
    fast = fast.to(dtype)
    gen = torch.Generator().manual_seed(7 + seed)
    D = 2 if bi else 1
    # Inputs exactly representable in the low dtype, so every run sees the same numbers.
    x = torch.randn(T, B, I, generator=gen, dtype=torch.float64).to(dtype).double()
    hx = tuple(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).double()
               for s in ((layers * D, B, proj or H), (layers * D, B, H)))
    grads = upstream_grads([(T, B, D * (proj or H)), hx[0].shape, hx[1].shape], dtype, seed)
    exact = _outputs_and_grads(ref64, x, lengths, hx, grads, fast=False)
    nn_low = _outputs_and_grads(ref_low, x.to(dtype), lengths, tuple(t.to(dtype) for t in hx),
                                grads, fast=False)
    fast_low = _run_emulated(seed, lambda: _outputs_and_grads(
        fast, x.to(dtype), lengths, tuple(t.to(dtype) for t in hx), grads, fast=True),
        **emulation)
    floor = {torch.float16: 5e-4, torch.bfloat16: 4e-3}[dtype]
    for name, want in exact.items():
        nn_err = (nn_low[name] - want).abs().max().item()
        fast_err = (fast_low[name] - want).abs().max().item()
        scale = max(1.0, want.abs().max().item())
        print(f"{name}: fastlstm err {fast_err:.3g}, nn.LSTM err {nn_err:.3g}")
        assert fast_err <= 2 * nn_err + floor * scale, (name, fast_err, nn_err)
    pad = torch.tensor([[t >= n for n in lengths] for t in range(T)])
    assert torch.all(fast_low["output"][pad] == 0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layers,bi,proj", [(1, True, 0), (2, False, 3), (2, True, 0)])
@pytest.mark.parametrize("path", ["step", "persistent"])
def test_half_precision_error_within_twice_nn_lstm(layers, bi, proj, dtype, seed, path,
                                                   monkeypatch):
    """fp16/bf16 (fp32 accumulation, fp32 cell) on both CUDA paths (the persistent one on
    tensor cores)."""
    monkeypatch.setenv("FASTLSTM_CUDA_PATH", path)
    check_half_within_twice_nn_lstm(H, layers, bi, proj, dtype, seed, [7, 0, 3, 7, 1, 5],
                                    weak_memory=path == "persistent" and seed == SEEDS[-1])


@pytest.mark.parametrize("seed", SEEDS)
def test_schedules_agree_with_cpu_backend(seed):
    """Outputs of the emulated CUDA backend equal the CPU backend's in float64 to rounding, and
    do not depend on the schedule seed (the per-step kernels are free of races)."""
    torch.manual_seed(0)
    lstm = fastlstm.LSTM(I, H, num_layers=2, bidirectional=True).double()
    x = torch.randn(9, 4, I, dtype=torch.float64)
    lengths = [9, 2, 0, 5]
    cpu_out, (cpu_h, cpu_c) = lstm(x, lengths=lengths)
    emu_out, (emu_h, emu_c) = _run_emulated(seed, lambda: lstm(x, lengths=lengths))
    for a, b in ((emu_out, cpu_out), (emu_h, cpu_h), (emu_c, cpu_c)):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=1e-13)


def _host_schedule(lengths, T):
    """The packed schedule as PackedSequence defines it: sorted descending (stable), active
    rows per step, their offsets."""
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])  # Python's sort is stable
    active = [sum(1 for n in lengths if n > t) for t in range(T)]
    offsets = [0]
    for a in active:
        offsets.append(offsets[-1] + a)
    return order, [lengths[b] for b in order], active, offsets


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("lengths,T", [([3, 0, 7, 3, 1, 7, 2], 7), ([0, 0], 4), ([5], 5),
                                       ([4, 9, 0, 2, 9, 6, 1, 3, 8], 12), ([], 3), ([2, 2], 0),
                                       # ties beyond 16 (torch's CPU sort keeps up to 16 in
                                       # order whatever its stable flag says)
                                       ([5] * 9 + [2] + [5] * 10 + [0] * 3 + [3] * 17, 6)])
def test_device_schedule_matches_packed_layout(lengths, T, seed):
    """The schedule the CUDA backend builds on the device (no host copy of the lengths), run
    through the emulator, equals the packed layout: what pack_padded_sequence gives."""
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    with _simt.emulated_cuda(seed=seed):
        order, sorted_lengths, active, offsets = torch.ops.fastlstm._device_schedule(lengths_t, T)
    want = _host_schedule(lengths, T)
    assert order.tolist() == want[0]
    assert sorted_lengths.tolist() == want[1]
    assert active.tolist() == want[2]
    assert offsets.tolist() == want[3]
    if lengths and T and min(lengths) > 0 and max(lengths) == T:
        packed = nn.utils.rnn.pack_padded_sequence(torch.zeros(T, len(lengths), 1), lengths_t,
                                                   enforce_sorted=False)
        assert active.tolist() == packed.batch_sizes.tolist()


@pytest.mark.parametrize("n", [3, 17, 40])
def test_emulated_unstable_sort_shuffles_ties(n):
    """simt::sort_descending: stable=True is torch's stable sort; stable=False, as a GPU may,
    leaves equal keys in an order it does not promise, and the emulator then shuffles them
    (per seed), so that code relying on tie order fails under emulation, not only on a GPU."""
    keys = torch.tensor([4] * n + [9, 1] + [4] * 3 + [9] * n, dtype=torch.int64)
    want_sorted, want_order = torch.sort(keys, stable=True, descending=True)
    orders = []
    for seed in SEEDS:
        with _simt.emulated_cuda(seed=seed):
            stable_sorted, stable_order = torch.ops.fastlstm._simt_sort_descending(keys, True)
            sorted_keys, order = torch.ops.fastlstm._simt_sort_descending(keys, False)
        assert torch.equal(stable_sorted, want_sorted) and torch.equal(stable_order, want_order)
        assert torch.equal(sorted_keys, want_sorted)
        assert torch.equal(keys[order], want_sorted)
        assert sorted(order.tolist()) == list(range(len(keys)))
        orders.append(order.tolist())
    assert any(o != want_order.tolist() for o in orders), "ties were never shuffled"
    assert len({tuple(o) for o in orders}) > 1, "the shuffle does not follow the seed"


def test_device_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="lengths must be 1-D"):
        torch.ops.fastlstm._device_schedule(torch.zeros(2, 2, dtype=torch.int64), 3)
    with pytest.raises(ValueError, match="integer dtype"):
        torch.ops.fastlstm._device_schedule(torch.zeros(2), 3)
    with pytest.raises(ValueError, match="T must be >= 0"):
        torch.ops.fastlstm._device_schedule(torch.zeros(2, dtype=torch.int64), -1)
