"""GPU tests of the device-built schedule, CUDA-graph refusal and the TF32 decision. They skip,
with the reason, where no CUDA device is present (the same code runs under emulation in
tests/test_emulated_cuda.py)."""

import pytest
import torch
from torch import nn

import fastlstm
from helpers import reference_forward

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_device_schedule_needs_no_host_sync():
    lengths = torch.tensor([3, 0, 7, 3, 1, 7, 2], device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        order, sorted_lengths, active, offsets = torch.ops.fastlstm._device_schedule(lengths, 7)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu = [3, 0, 7, 3, 1, 7, 2]
    assert active.tolist() == [sum(1 for n in cpu if n > t) for t in range(7)]
    assert sorted_lengths.tolist() == sorted(cpu, reverse=True)
    assert [cpu[b] for b in order.tolist()] == sorted(cpu, reverse=True)
    assert offsets[-1].item() == sum(cpu)


def test_graph_capture_is_refused_with_the_reason():
    torch.manual_seed(0)
    lstm = fastlstm.LSTM(4, 8, device="cuda")
    x = torch.randn(5, 3, 4, device="cuda")
    h0 = torch.zeros(1, 3, 8, device="cuda")
    weights = [p.detach() for p in lstm.parameters()]
    lengths = torch.tensor([5, 2, 4])  # on the CPU: nothing to copy during capture
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        with pytest.raises(RuntimeError, match="cannot be captured in a CUDA graph"):
            with torch.cuda.graph(graph, stream=stream):
                torch.ops.fastlstm.lstm_layer_forward(x, lengths, h0, h0, weights, True, False,
                                                      False)


@pytest.mark.parametrize("api", ["allow_tf32", "fp32_precision"])
def test_tf32_setting_is_honoured_through_either_api(api):
    """TF32 comes from torch's cuBLAS handle, never from allowTF32CuBLAS (which throws once the
    newer fp32_precision API is used). Off: tight parity with cuDNN; on: TF32-sized error."""
    matmul = torch.backends.cuda.matmul
    if api == "fp32_precision" and not hasattr(matmul, "fp32_precision"):
        pytest.skip(f"torch {torch.__version__} has no torch.backends.cuda.matmul.fp32_precision")
    torch.manual_seed(0)
    ref = nn.LSTM(64, 64, device="cuda")
    fast = fastlstm.LSTM(64, 64, device="cuda")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(20, 8, 64, device="cuda")
    lengths = [20, 3, 17, 9, 1, 20, 12, 5]
    old = (matmul.fp32_precision if api == "fp32_precision" else matmul.allow_tf32,
           torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    try:
        errs = {}
        for on in (False, True):
            if api == "fp32_precision":
                matmul.fp32_precision = "tf32" if on else "ieee"
            else:
                matmul.allow_tf32 = on
            with torch.no_grad():
                want = reference_forward(ref, x, lengths)[0]
                got = fast(x, lengths=lengths)[0]
            errs[on] = (got - want).abs().max().item()
    finally:
        if api == "fp32_precision":
            matmul.fp32_precision = old[0]
        else:
            matmul.allow_tf32 = old[0]
        torch.backends.cudnn.allow_tf32 = old[1]
    print(f"max abs diff to cuDNN (TF32 off): TF32 off {errs[False]:.3g}, on {errs[True]:.3g}")
    assert errs[False] < 1e-5
    assert errs[True] < 5e-2


def _persistent_pair(monkeypatch, bidirectional=True):
    monkeypatch.setenv("FASTLSTM_CUDA_PATH", "persistent")
    torch.manual_seed(0)
    ref = nn.LSTM(8, 16, bidirectional=bidirectional, device="cuda")
    fast = fastlstm.LSTM(8, 16, bidirectional=bidirectional, device="cuda")
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def test_lengths_on_the_gpu_cost_no_host_sync(monkeypatch):
    """The persistent path with CUDA lengths builds its schedule on the device: a training step
    (forward and backward) runs under sync_debug_mode("error"), then matches cuDNN."""
    ref, fast = _persistent_pair(monkeypatch)
    lengths = [9, 0, 4, 9, 1, 6]
    x = torch.randn(9, 6, 8, device="cuda", requires_grad=True)
    lengths_gpu = torch.tensor(lengths, device="cuda")
    fast(x, lengths=lengths_gpu)[0].sum().backward()  # warm-up: cuBLAS handles, allocations
    x.grad = None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, (h, c) = fast(x, lengths=lengths_gpu)
        (out.sum() + h.sum() + c.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    xr = x.detach().clone().requires_grad_()
    want, want_h, want_c = reference_forward(ref, xr, lengths)
    (want.sum() + want_h.sum() + want_c.sum()).backward()
    torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(h, want_h, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-4, rtol=1e-3)


def test_graph_capture_and_replay_with_lengths_on_the_gpu(monkeypatch):
    """With no host sync, a forward and backward can be captured (make_graphed_callables) and
    replayed on new data, new lengths included (copied into the captured tensor)."""
    ref, fast = _persistent_pair(monkeypatch)
    T, B = 7, 5
    lengths_static = torch.tensor([7, 3, 0, 5, 1], device="cuda")

    def step(x):
        out, _ = fast(x, lengths=lengths_static)
        return out

    graphed = torch.cuda.make_graphed_callables(
        step, (torch.randn(T, B, 8, device="cuda", requires_grad=True),))
    for lengths in ([7, 3, 0, 5, 1], [2, 7, 7, 0, 4]):
        lengths_static.copy_(torch.tensor(lengths))
        x = torch.randn(T, B, 8, device="cuda", requires_grad=True)
        out = graphed(x)
        out.square().sum().backward()
        xr = x.detach().clone().requires_grad_()
        want = reference_forward(ref, xr, lengths)[0]
        want.square().sum().backward()
        torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(x.grad, xr.grad, atol=1e-4, rtol=1e-3)
