"""pytest-benchmark micro-benchmarks of fastlstm's ops and of one module step per contender, at
small sizes. CI runs them once each as smoke tests:

    pytest benchmarks --benchmark-disable        # once each, asserting the results
    pytest benchmarks/test_micro.py              # timed, with pytest-benchmark's table
"""

import pytest
import torch

import fastlstm  # noqa: F401  (registers torch.ops.fastlstm)
from benchmarks.contenders import CONTENDERS, build
from benchmarks.workloads import Workload

T, B, I, H = 32, 16, 32, 64
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _layer(device, bidirectional=True):
    """Arguments of lstm_layer_forward for one small layer, lengths 1..T."""
    g = torch.Generator().manual_seed(0)
    D = 2 if bidirectional else 1
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    x = torch.randn(T, B, I, generator=g).to(device)
    h0, c0 = (torch.zeros(D, B, H, device=device) for _ in range(2))
    weights = []
    for _ in range(D):
        weights += [torch.randn(shape, generator=g) * 0.1
                    for shape in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
    weights = [w.to(device) for w in weights]
    return x, lengths, h0, c0, weights


@pytest.mark.parametrize("device", DEVICES)
def test_forward_op(benchmark, device):
    x, lengths, h0, c0, weights = _layer(device)
    fwd = torch.ops.fastlstm.lstm_layer_forward

    def run():
        out = fwd(x, lengths, h0, c0, weights, True, False, True)
        _sync(device)
        return out

    out, h_n, c_n, _ = benchmark(run)
    assert out.shape == (T, B, 2 * H)
    short = int(lengths.argmin())
    assert out[int(lengths[short]):, short].abs().max() == 0  # nothing past a length
    assert torch.isfinite(out).all() and torch.isfinite(h_n).all() and torch.isfinite(c_n).all()


@pytest.mark.parametrize("device", DEVICES)
def test_backward_op(benchmark, device):
    x, lengths, h0, c0, weights = _layer(device)
    out, h_n, c_n, reserve = torch.ops.fastlstm.lstm_layer_forward(
        x, lengths, h0, c0, weights, True, False, True)
    grads = [torch.randn_like(t) for t in (out, h_n, c_n)]
    bwd = torch.ops.fastlstm.lstm_layer_backward

    def run():
        res = bwd(*grads, x, lengths, h0, c0, weights, reserve, True, False, True, True)
        _sync(device)
        return res

    grad_input, grad_h0, grad_c0, grad_weights = benchmark(run)
    assert grad_input.shape == x.shape
    assert [g.shape for g in grad_weights] == [w.shape for w in weights]
    short = int(lengths.argmin())
    assert grad_input[int(lengths[short]):, short].abs().max() == 0  # padding gets no gradient
    assert all(torch.isfinite(g).all() for g in [grad_input, grad_h0, grad_c0, *grad_weights])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_module_forward_backward(benchmark, device, contender):
    """One training step (forward, backward, gradients released) of each contender."""
    w = Workload(input_size=I, hidden_size=H, num_layers=2, bidirectional=True, batch=B,
                 max_len=T, lengths="sentence")
    lengths = w.draw_lengths(0)
    step = build(w, torch.device(device), lengths, True, buckets=4)[contender]

    def run():
        res = step()
        _sync(device)
        return res

    out, h_n, c_n = benchmark(run)
    assert out.shape == (int(lengths.max()), B, 2 * H)
    assert h_n.shape == c_n.shape == (4, B, H)
    assert torch.isfinite(out).all()
