"""Lengths that live on the GPU: the layer ops build the whole schedule on the device
(csrc/cuda/device_schedule.cuh, DeviceScheduleView) and run both time loops in the persistent
kernels, with no device-to-host copy. Run here on the CPU through the emulator, which treats
lengths as GPU-resident under emulated_cuda(device_lengths=True), judged against nn.LSTM over
packed input under several schedule seeds with race checking on. (On a GPU, tests/test_cuda.py
proves the absence of host syncs with torch.cuda.set_sync_debug_mode("error").)"""

import pytest
import torch

from fastlstm import _simt
from helpers import check_parity, make_pair
from test_emulated_persistent import I, _data, weak

pytestmark = pytest.mark.cuda_emulated

FWD = torch.ops.fastlstm.lstm_layer_forward.default
BWD = torch.ops.fastlstm.lstm_layer_backward.default

# (layers, bidirectional, H, proj_size, bias, batch_first, lengths)
GRID = [
    (1, False, 5, 0, True, False, [6, 2, 6, 0, 5, 1]),
    (1, True, 8, 0, True, False, [7, 0, 3, 7, 1]),
    (2, True, 6, 0, False, True, [4, 9, 0, 2, 9, 6, 1, 3, 8]),
    (1, True, 33, 0, True, False, [0, 0]),
    (2, True, 8, 3, True, False, [5, 0, 2, 5, 1]),
]


@pytest.fixture(autouse=True)
def persistent_path(monkeypatch):
    monkeypatch.setenv("FASTLSTM_CUDA_PATH", "persistent")


@pytest.mark.parametrize("seed", (0, 1, 2))
@pytest.mark.parametrize("layers,bi,H,proj,bias,bf,lengths", GRID)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_device_schedule_parity_with_nn_lstm(layers, bi, H, proj, bias, bf, lengths, dtype,
                                             seed):
    ref, fast = make_pair(I, H, dtype, seed=seed, num_layers=layers, bidirectional=bi,
                          proj_size=proj, bias=bias, batch_first=bf)
    x, hx = _data(layers, bi, H, lengths, dtype, seed, bf, proj)
    with _simt.emulated_cuda(seed=seed, device_lengths=True, weak_memory=weak(seed)):
        check_parity(ref, fast, x, lengths, hx=hx)


@pytest.mark.parametrize("proj", [0, 3])
def test_device_schedule_on_thread_block_clusters(proj, monkeypatch):
    """FASTLSTM_CUDA_PATH=cluster takes GPU lengths the same way: no host schedule."""
    monkeypatch.setenv("FASTLSTM_CUDA_PATH", "cluster")
    lengths = [7, 0, 3, 7, 1]
    ref, fast = make_pair(I, 8, torch.float64, bidirectional=True, proj_size=proj)
    x, hx = _data(1, True, 8, lengths, torch.float64, 1, proj=proj)
    before = _simt.cluster_barrier_count()
    with _simt.emulated_cuda(seed=1, device_lengths=True, weak_memory=True):
        check_parity(ref, fast, x, lengths, hx=hx)
    assert _simt.cluster_barrier_count() > before


def _layer_args(T, lengths, H=6, D=2, P=0):
    g = torch.Generator().manual_seed(3)
    B = len(lengths)
    Hout = P or H
    shapes = [(4 * H, I), (4 * H, Hout), (4 * H,), (4 * H,)] + ([(P, H)] if P else [])
    weights = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes * D]
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    h0 = torch.randn(D, B, Hout, generator=g, dtype=torch.float64)
    c0 = torch.randn(D, B, H, generator=g, dtype=torch.float64)
    return x, torch.tensor(lengths), h0, c0, weights


# More than 16 equal lengths: torch's CPU sort keeps up to 16 ties in order even when asked for
# an unstable sort, so only a longer run of ties shows that the device sort is stable.
TIES = [8] * 9 + [3] + [8] * 9 + [0, 0] + [5] * 17


@pytest.mark.slow
@pytest.mark.parametrize("P,lengths", [(0, [8, 0, 3, 8, 1]), (4, [8, 0, 3, 8, 1]), (0, TIES)])
def test_device_schedule_matches_the_host_schedule_bit_for_bit(P, lengths):
    """The same persistent kernels on the two schedules: the host's (N packed rows) and the
    device's (T * B rows, the ones past N zero). Outputs, states and every gradient agree
    exactly, and the device reserve holds the host's rows followed by zeros."""
    T = 8
    x, lens, h0, c0, weights = _layer_args(T, lengths, P=P)
    proj = P > 0
    results = {}
    for device_lengths in (False, True):
        with _simt.emulated_cuda(seed=1, device_lengths=device_lengths, weak_memory=True):
            out, h_n, c_n, reserve = FWD(x, lens, h0, c0, weights, True, proj, True, True)
            g = torch.Generator().manual_seed(4)
            grads = [torch.randn(t.shape, generator=g, dtype=torch.float64)
                     for t in (out, h_n, c_n)]
            back = BWD(*grads, x, lens, h0, c0, weights, reserve, True, proj, True, True)
        results[device_lengths] = [out, h_n, c_n, reserve, *back[:3], *back[3]]
    for host, device in zip(results[False], results[True]):
        assert torch.equal(host, device)


def test_device_schedule_refuses_lengths_out_of_range():
    """Values cannot be checked on the host without a sync: an asynchronous device-side
    assertion (which the CPU raises at once, as the host schedule's check does: ValueError)
    names them; nothing reads out of bounds."""
    x, _, h0, c0, weights = _layer_args(5, [5, 2])
    for bad in ([6, 2], [5, -1]):
        with _simt.emulated_cuda(device_lengths=True):
            with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=5\]"):
                FWD(x, torch.tensor(bad), h0, c0, weights, True, False, True)


def test_device_schedule_refuses_a_reserve_of_other_rows():
    x, lens, h0, c0, weights = _layer_args(5, [5, 2])
    with _simt.emulated_cuda(device_lengths=False):
        out, h_n, c_n, compact = FWD(x, lens, h0, c0, weights, True, False, True)
    with _simt.emulated_cuda(device_lengths=True):
        with pytest.raises(ValueError, match=r"reserve.*T \* B rows"):
            BWD(torch.ones_like(out), None, None, x, lens, h0, c0, weights, compact, True, False,
                True, True)


def test_shapes_the_persistent_kernels_do_not_take_keep_the_host_schedule(monkeypatch):
    """A bidirectional layer on a one-SM device (no room for both directions' grids), or
    FASTLSTM_CUDA_PATH=step: the host schedule and per-step loop, as before, with the compact
    reserve."""
    ref, fast = make_pair(I, 6, torch.float64, proj_size=3, bidirectional=True)
    lengths = [4, 1, 0]
    x, hx = _data(1, True, 6, lengths, torch.float64, 0, proj=3)
    with _simt.emulated_cuda(device_lengths=True, sms=1):
        check_parity(ref, fast, x, lengths, hx=hx)
    xr, lens, h0, c0, weights = _layer_args(5, [5, 2])
    with _simt.emulated_cuda(device_lengths=True, sms=1):
        reserve = FWD(xr, lens, h0, c0, weights, True, False, True)[3]
    assert reserve.numel() == 2 * 2048  # N = 7 rows of (5H + H) float64: 2016 bytes, to 2048
    monkeypatch.setenv("FASTLSTM_CUDA_PATH", "step")
    with _simt.emulated_cuda(device_lengths=True):
        reserve = FWD(xr, lens, h0, c0, weights, True, False, True)[3]
    assert reserve.numel() == 2 * 2048
