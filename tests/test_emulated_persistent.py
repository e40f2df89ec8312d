"""The persistent CUDA kernels (csrc/cuda/persistent.cuh: the whole time loop in one
cooperative launch, W_hh resident in shared memory, one grid barrier per step), run on the CPU
through the emulator with FASTLSTM_CUDA_PATH=persistent, judged against nn.LSTM over packed
input, under several schedule seeds with the shared-memory race check on."""

import pytest
import torch

from fastlstm import _simt
from helpers import check_parity, make_pair

pytestmark = pytest.mark.cuda_emulated

SEEDS = (0, 1, 2)
I = 3


@pytest.fixture
def cuda_path(monkeypatch):
    def set_path(path):
        monkeypatch.setenv("FASTLSTM_CUDA_PATH", path)
    return set_path


def _data(layers, bi, H, lengths, dtype, seed, bf=False):
    T, B = max(max(lengths), 1), len(lengths)
    gen = torch.Generator().manual_seed(200 + seed)
    x = torch.randn((B, T, I) if bf else (T, B, I), generator=gen, dtype=torch.float64).to(dtype)
    D = 2 if bi else 1
    hx = tuple(torch.randn(layers * D, B, H, generator=gen, dtype=torch.float64).to(dtype)
               for _ in range(2))
    return x, hx


# (layers, bidirectional, H, bias, batch_first, lengths): H from 5 to 40, so that blocks own
# 1 to 14 units and the dot products take several lanes' turns; lengths unsorted, with zeros.
GRID = [
    (1, False, 5, True, False, [6, 2, 6, 0, 5, 1]),
    (1, True, 8, True, False, [7, 0, 3, 7, 1]),
    (2, True, 6, False, True, [4, 9, 0, 2, 9, 6, 1, 3, 8]),
    (2, False, 40, True, False, [12, 3, 0, 11]),
    (1, True, 33, True, False, [0, 0]),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layers,bi,H,bias,bf,lengths", GRID)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_persistent_parity_with_nn_lstm(layers, bi, H, bias, bf, lengths, dtype, seed,
                                        cuda_path):
    ref, fast = make_pair(I, H, dtype, seed=seed, num_layers=layers, bidirectional=bi,
                          bias=bias, batch_first=bf)
    x, hx = _data(layers, bi, H, lengths, dtype, seed, bf)
    cuda_path("persistent")
    with _simt.emulated_cuda(seed=seed):
        check_parity(ref, fast, x, lengths, hx=hx)


def test_persistent_path_runs_the_loop_in_one_launch(cuda_path):
    """Forward+backward of a 1-layer bidirectional LSTM over 20 steps: the per-step path
    launches kernels for every step (a cell kernel forward; an add and a cell kernel backward,
    per direction), the persistent path one forward and one backward launch per layer; the
    launches around the loop (gathers, bias, scatters) are the same for both."""
    lengths = [20, 3, 0, 17, 9]
    _, fast = make_pair(I, 8, torch.float64, bidirectional=True)
    x, hx = _data(1, True, 8, lengths, torch.float64, 0)
    counts = {}
    for path in ("step", "persistent"):
        cuda_path(path)
        before = _simt.launch_count()
        with _simt.emulated_cuda(seed=0):
            out, (h, c) = fast(x, hx, lengths=lengths)
            (out.sum() + h.sum() + c.sum()).backward()
        counts[path] = _simt.launch_count() - before
    print(counts)
    active_steps = 2 * 20  # every step has an active row, in each of the 2 directions
    assert counts["step"] - counts["persistent"] == 3 * active_steps - 2


def test_unknown_path_is_refused(cuda_path):
    _, fast = make_pair(I, 4, torch.float64)
    cuda_path("fastest")
    with _simt.emulated_cuda():
        with pytest.raises(RuntimeError, match="FASTLSTM_CUDA_PATH must be one of step, "
                                               "persistent, auto; got 'fastest'"):
            fast(torch.randn(3, 2, I, dtype=torch.float64), lengths=[3, 1])


def test_projection_falls_back_to_the_per_step_path(cuda_path):
    """proj_size is not served persistently yet: the per-step path runs it, still correct."""
    ref, fast = make_pair(I, 6, torch.float64, proj_size=2, bidirectional=True)
    x, hx = _data(1, True, 6, [4, 0, 2], torch.float64, 0)
    hx = (hx[0][..., :2].contiguous(), hx[1])
    cuda_path("persistent")
    with _simt.emulated_cuda(seed=1):
        check_parity(ref, fast, x, [4, 0, 2], hx=hx)
