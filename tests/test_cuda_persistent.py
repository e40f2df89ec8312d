"""GPU tests of the persistent kernels (FASTLSTM_CUDA_PATH=persistent and cluster, the latter
with and without distributed shared memory): parity with cuDNN over packed input, half
precision within 2x nn.LSTM's own error, gradcheck in float64, and shapes large enough that
the cooperative grid spans the GPU (sized from the occupancy API). They skip,
with the reason, where no CUDA device is present; tests/test_emulated_persistent.py runs the
same kernels on the CPU in every CI run."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

import fastlstm
from helpers import reference_forward, round_to_tf32

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEV = "cuda"


# The grid-barrier kernels, and (Hopper on; elsewhere they fall back to the grid) one
# thread-block cluster per direction, exchanging h and the gate gradients through distributed
# shared memory where they fit, or through global memory (cluster-global: FASTLSTM_CUDA_DSMEM=0).
@pytest.fixture(autouse=True, params=["persistent", "cluster", "cluster-global"])
def persistent_path_tf32_off(request, monkeypatch):
    monkeypatch.setenv("FASTLSTM_CUDA_PATH", request.param.removesuffix("-global"))
    if request.param == "cluster-global":
        monkeypatch.setenv("FASTLSTM_CUDA_DSMEM", "0")
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _run(model, x, lengths, hx, grads, fast):
    x = x.detach().clone().requires_grad_()
    hx = tuple(t.detach().clone().requires_grad_() for t in hx)
    model.zero_grad(set_to_none=True)
    if fast:
        out, (h, c) = model(x, hx, lengths=torch.tensor(lengths, device=DEV))
    else:
        out, h, c = reference_forward(model, x, lengths, hx)
    sum((t.float() * g.float()).sum() for t, g in zip((out, h, c), grads)).backward()
    res = {"out": out, "h_n": h, "c_n": c, "x": x.grad, "h0": hx[0].grad, "c0": hx[1].grad}
    res.update({n: p.grad for n, p in model.named_parameters()})
    return {k: v.double() for k, v in res.items()}


def _case(I, H, layers, bi, lengths, dtype, seed=0, proj=0):
    torch.manual_seed(seed)
    ref = nn.LSTM(I, H, layers, bidirectional=bi, proj_size=proj, device=DEV,
                  dtype=torch.float64)
    D = 2 if bi else 1
    T, B = max(lengths), len(lengths)
    gen = torch.Generator(device=DEV).manual_seed(seed + 1)
    x = torch.randn(T, B, I, device=DEV, dtype=torch.float64, generator=gen).to(dtype)
    hx = tuple(torch.randn(layers * D, B, size, device=DEV, dtype=torch.float64,
                           generator=gen).to(dtype) for size in (proj or H, H))
    grads = [torch.randn(s, device=DEV, generator=gen).to(dtype)
             for s in ((T, B, D * (proj or H)), (layers * D, B, proj or H), (layers * D, B, H))]
    return ref, x, hx, grads


@pytest.mark.parametrize("I,H,proj,layers,bi,lengths", [
    (5, 16, 0, 1, False, [13, 0, 4, 13, 1, 9]),
    (8, 32, 0, 2, True, [20, 7, 0, 20, 3]),
    (64, 256, 0, 1, True, [50, 1, 33, 0, 50, 12, 49, 2]),   # spans ~all SMs
    (128, 512, 0, 2, False, [40, 17, 40, 1]),
    (8, 32, 8, 2, True, [20, 7, 0, 20, 3]),                  # projection: two barriers a step
    # A 16-block cluster with H = 20: blocks 10-15 own no hidden unit, 7-15 no output unit.
    (5, 20, 7, 1, True, [9, 0, 4, 9, 2]),
    (64, 512, 128, 1, False, [30, 2, 0, 30, 11]),
    # Weight slices beyond shared memory on an H100/H200 (132 SMs: 16 units a block, 256 KiB
    # of fp32 W_hh): read from global memory every step.
    (32, 1024, 0, 1, True, [12, 3, 0, 12]),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_persistent_parity_with_cudnn(I, H, proj, layers, bi, lengths, dtype):
    ref64, x, hx, grads = _case(I, H, layers, bi, lengths, dtype, proj=proj)
    ref = nn.LSTM(I, H, layers, bidirectional=bi, proj_size=proj, device=DEV, dtype=dtype)
    ref.load_state_dict(ref64.state_dict())
    fast = fastlstm.LSTM(I, H, layers, bidirectional=bi, proj_size=proj, device=DEV,
                         dtype=dtype)
    fast.load_state_dict(ref64.state_dict())
    want = _run(ref, x, lengths, hx, grads, fast=False)
    got = _run(fast, x, lengths, hx, grads, fast=True)
    tol = dict(atol=2e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    for k in want:
        scale = max(1.0, want[k].abs().max().item()) if k not in ("out", "h_n", "c_n") else 1.0
        torch.testing.assert_close(got[k], want[k], atol=tol["atol"] * scale, rtol=tol["rtol"],
                                   msg=lambda m: f"{k}: {m}")
    pad = torch.tensor([[t >= n for n in lengths] for t in range(max(lengths))], device=DEV)
    assert torch.all(got["out"][pad] == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("H,bi", [(64, True), (256, False)])
def test_persistent_half_within_twice_nn_lstm(H, bi, dtype):
    lengths = [30, 4, 0, 30, 17, 1]
    ref64, x, hx, grads = _case(H, H, 1, bi, lengths, dtype)
    x64, hx64 = x.double(), tuple(t.double() for t in hx)
    exact = _run(ref64, x64, lengths, hx64, grads, fast=False)
    ref_low = nn.LSTM(H, H, 1, bidirectional=bi, device=DEV, dtype=dtype)
    ref_low.load_state_dict(ref64.state_dict())
    fast = fastlstm.LSTM(H, H, 1, bidirectional=bi, device=DEV, dtype=dtype)
    fast.load_state_dict(ref64.state_dict())
    try:
        nn_low = _run(ref_low, x, lengths, hx, grads, fast=False)
    except RuntimeError as e:  # cuDNN before 9.13 has no bfloat16 RNN (see test_cuda.py)
        assert dtype == torch.bfloat16, e
        nn_low = _run(ref_low.float(), x.float(), lengths, tuple(t.float() for t in hx),
                      grads, fast=False)
    got = _run(fast, x, lengths, hx, grads, fast=True)
    floor = {torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    for k, want in exact.items():
        nn_err = (nn_low[k] - want).abs().max().item()
        err = (got[k] - want).abs().max().item()
        print(f"{k}: fastlstm {err:.3g} nn.LSTM {nn_err:.3g}")
        assert err <= 2 * nn_err + floor * max(1.0, want.abs().max().item()), (k, err, nn_err)


def test_persistent_float32_in_tf32_where_allowed():
    """torch.backends.cuda.matmul.allow_tf32: the float32 recurrence on tensor cores in TF32
    (m16n8k8), within TF32's error of float64, and far from float32's. x and W_ih hold TF32
    values, so that the input projection (a cuBLAS GEMM, TF32 too) is exact either way and the
    outputs' error comes from the recurrence."""
    lengths = [30, 4, 0, 30, 17, 1]
    ref64, x, hx, grads = _case(64, 64, 1, True, lengths, torch.float32)
    with torch.no_grad():
        for name, p in ref64.named_parameters():
            if name.startswith("weight_ih"):
                p.copy_(round_to_tf32(p).double())
    x = round_to_tf32(x)
    fast = fastlstm.LSTM(64, 64, 1, bidirectional=True, device=DEV, dtype=torch.float32)
    fast.load_state_dict(ref64.state_dict())
    exact = _run(ref64, x.double(), lengths, tuple(t.double() for t in hx), grads, fast=False)
    errors = {}
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32  # the fixture restores it
        got = _run(fast, x, lengths, hx, grads, fast=True)
        errors[tf32] = {k: (got[k] - want).abs().max().item() for k, want in exact.items()}
    for k, want in exact.items():
        assert errors[True][k] <= 1e-2 * max(1.0, want.abs().max().item()), (k, errors[True][k])
    assert errors[True]["out"] > 10 * errors[False]["out"], (errors[True]["out"],
                                                             errors[False]["out"])


def test_persistent_gradcheck_float64():
    """Input, h0, c0 and every weight, through the persistent forward and backward."""
    m = fastlstm.LSTM(3, 6, bidirectional=True, device=DEV, dtype=torch.float64)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    gen = torch.Generator(device=DEV).manual_seed(0)
    r = lambda *s: torch.randn(*s, device=DEV, dtype=torch.float64, generator=gen,  # noqa: E731
                               requires_grad=True)
    x, h0, c0 = r(5, 3, 3), r(2, 3, 6), r(2, 3, 6)
    lengths = torch.tensor([5, 0, 2], device=DEV)

    def f(x, h0, c0, *params):
        out, (h_n, c_n) = functional_call(m, dict(zip(names, params)), (x, (h0, c0)),
                                          {"lengths": lengths})
        return out, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)
