"""bfloat16/float16: the cell state and its gradient are carried in float32, on every path.

The README promises "float32 cell state and sums" for the half types. The usual half tests
(error at most 2x nn.LSTM's own in that dtype) cannot tell a float32 cell state from one
rounded to the half type at every step, so this probe makes the difference large:

- every weight is 0 and the forget gate's bias is 30, so f = sigmoid(30) = 1.0 in float32 and
  c_t = c_{t-1} + i * g exactly, with i * g = 1/8 of the half type's ulp at 1.0;
- c_0 = 1.0, so after T = 96 steps a float32 cell state holds 1 + 12 ulp, while one rounded to
  the half type at every step never leaves 1.0 (each increment is below half an ulp);
- in the backward, grad c_n = 1 and each step's grad output adds 1/8 ulp to dc through
  o * (1 - tanh(c)^2), so grad c_0 is 1 + ~12 ulp in float32 and 1.0 if dc is rounded.

The judge is nn.LSTM in float64 with the same (half-representable) parameters; fastlstm's
c_n and grad c_0 must be within 1 ulp of the half type of it.
"""

import pytest
import torch
from torch import nn

import fastlstm
from fastlstm import _simt
from helpers import reference_forward

T, B, I, H = 96, 2, 3, 4
LENGTHS = [T, T - 5]
HALF_TYPES = [torch.bfloat16, torch.float16]


def _ulp_at_one(dtype):
    return torch.finfo(dtype).eps


def _probe_pair(dtype):
    """(nn.LSTM float64, fastlstm.LSTM in dtype) with the probe's parameters."""
    eighth = _ulp_at_one(dtype) / 8
    ref = nn.LSTM(I, H, dtype=torch.float64)
    with torch.no_grad():
        for p in ref.parameters():
            p.zero_()
        # gate order i, f, g, o; biases split over b_ih and b_hh as a user's would be
        ref.bias_ih_l0[H:2 * H] = 30.0                 # f = 1.0
        ref.bias_ih_l0[2 * H:3 * H] = 2 * eighth       # g = tanh(2 * eighth) ~ 2 * eighth
        # i = o = sigmoid(0) = 1/2, so i * g ~ eighth
    fast = fastlstm.LSTM(I, H, dtype=dtype)
    fast.load_state_dict({k: v.to(dtype) for k, v in ref.state_dict().items()})
    # the float64 judge runs on exactly the half-representable values
    ref.load_state_dict({k: v.double() for k, v in fast.state_dict().items()})
    return ref, fast


def _grad_scale_for_dc(dtype):
    """Each step's grad output, such that dc gains ~1/8 ulp per step through
    o * (1 - tanh(c)^2), with o = 1/2 and c ~ 1.05 (1 - tanh^2 ~ 0.39)."""
    return _ulp_at_one(dtype) / 8 / (0.5 * 0.39)


def _run(model, x, hx, dtype, fast):
    x = x.clone().requires_grad_()
    hx = tuple(t.clone().requires_grad_() for t in hx)
    if fast:
        out, (h_n, c_n) = model(x, hx, lengths=LENGTHS)
    else:
        out, h_n, c_n = reference_forward(model, x, LENGTHS, hx)
    g_out = torch.full_like(out, _grad_scale_for_dc(dtype))
    g_c = torch.ones_like(c_n)
    torch.autograd.backward([out, c_n], [g_out, g_c])
    return c_n.double(), hx[1].grad.double()


def _check(dtype, fast_run=None):
    ref, fast = _probe_pair(dtype)
    x = torch.randn(T, B, I, dtype=torch.float64)
    hx = (torch.zeros(1, B, H, dtype=torch.float64), torch.ones(1, B, H, dtype=torch.float64))
    c_ref, gc0_ref = _run(ref, x, hx, dtype, fast=False)
    run = fast_run or (lambda f: f())
    c_fast, gc0_fast = run(lambda: _run(fast, x.to(dtype), tuple(t.to(dtype) for t in hx),
                                        dtype, fast=True))
    ulp = _ulp_at_one(dtype)
    # the probe itself: a float32 cell moves many ulps away from 1.0 (rounding would not)
    assert (c_ref - 1).min() > 10 * ulp and (gc0_ref - 1).min() > 10 * ulp
    assert (c_fast - c_ref).abs().max() <= ulp, \
        f"c_n {c_fast.flatten().tolist()} vs float64 nn.LSTM {c_ref.flatten().tolist()}: " \
        f"the cell state was not carried in float32"
    assert (gc0_fast - gc0_ref).abs().max() <= ulp, \
        f"grad c_0 {gc0_fast.flatten().tolist()} vs float64 nn.LSTM " \
        f"{gc0_ref.flatten().tolist()}: the cell-state gradient was not carried in float32"


@pytest.mark.parametrize("dtype", HALF_TYPES)
def test_cpu_cell_state_is_float32(dtype):
    _check(dtype)


@pytest.mark.cuda_emulated
@pytest.mark.parametrize("path", ["step", "persistent", "cluster"])
@pytest.mark.parametrize("dtype", HALF_TYPES)
def test_emulated_cuda_cell_state_is_float32(dtype, path, monkeypatch):
    if path != "step":
        monkeypatch.setenv("FASTLSTM_CUDA_PATH", path)

    def emulated(fn):
        launches = _simt.launch_count()
        with _simt.emulated_cuda(seed=1, weak_memory=path != "step"):
            result = fn()
        assert _simt.launch_count() > launches, "the emulated CUDA kernels did not run"
        return result
    _check(dtype, emulated)
