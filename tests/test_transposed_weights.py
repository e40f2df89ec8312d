"""w_ih and w_hh passed as transposed views (Keras's kernel layout) on the CPU.

fastlstm.keras hands the op kernel.T ([I, 4H] stored, seen as [4H, I]) and recurrent_kernel.T.
The CPU kernels read them in place, with transpose flags on every GEMM and packing, and return
their gradients in the same layout (csrc/layer_driver.h, weight_grad): no copy of the weights
on the way in, and none of their gradients on the way out (the gradient that reaches the
[I, 4H] tensor is contiguous). Judged by nn.LSTM over packed sequences with the same weights;
the fake backward must give the real gradient strides (opcheck).
"""

import pytest
import torch
from torch.func import functional_call
from torch.library import opcheck

from helpers import assert_close, make_pair, reference_forward

F64 = torch.float64
LENGTHS = [6, 0, 3, 6, 1]
T, I, H = 6, 5, 4


def _stored_transposed(name):
    return name.startswith("weight_ih") or name.startswith("weight_hh")


@pytest.mark.parametrize("grad", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("kwargs", [dict(), dict(bidirectional=True, num_layers=2),
                                    dict(bidirectional=True, proj_size=3),
                                    dict(bias=False)], ids=["uni", "bi2", "bi_proj", "nobias"])
def test_transposed_weights_match_nn_lstm(kwargs, dtype, grad):
    ref, fast = make_pair(I, H, dtype=dtype, **kwargs)
    # Leaves in Keras's layout: [in, 4H] stored, handed to the module as their .t() views.
    leaves = {n: (p.detach().t().contiguous() if _stored_transposed(n) else p.detach().clone())
              .requires_grad_(grad) for n, p in fast.named_parameters()}
    params = {n: leaf.t() if _stored_transposed(n) else leaf for n, leaf in leaves.items()}
    assert all(params[n].stride(0) == 1 for n in params if _stored_transposed(n))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, len(LENGTHS), I, generator=gen, dtype=dtype)
    with torch.set_grad_enabled(grad):
        out, (h_n, c_n) = functional_call(fast, params, (x,), {"lengths": torch.tensor(LENGTHS)})
    want, h_want, c_want = reference_forward(ref, x, LENGTHS)
    assert_close("output", out, want)
    assert_close("h_n", h_n, h_want)
    assert_close("c_n", c_n, c_want)
    if not grad:
        return
    g = [torch.randn(t.shape, generator=gen, dtype=dtype) for t in (out, h_n, c_n)]
    names = list(leaves)
    got = torch.autograd.grad((out, h_n, c_n), [leaves[n] for n in names], g)
    ref_params = dict(ref.named_parameters())
    expected = torch.autograd.grad((want, h_want, c_want), [ref_params[n] for n in names], g)
    for n, a, e in zip(names, got, expected):
        if _stored_transposed(n):
            assert a.is_contiguous(), (n, a.stride())   # no copy on the way to the leaf
            e = e.t()
        assert_close(n, a, e)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_transposed_weights_equal_contiguous_ones(dtype):
    """The same weights in either layout give the same results, the half types included
    (float32: within rounding, the GEMMs run with other transpose flags)."""
    _, fast = make_pair(I, H, dtype=F64, bidirectional=True)
    fast.to(dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, len(LENGTHS), I, generator=gen, dtype=F64).to(dtype)
    results = []
    for transposed in (False, True):
        leaves = {n: (p.detach().t().contiguous() if transposed and _stored_transposed(n)
                      else p.detach().clone()).requires_grad_() for n, p in fast.named_parameters()}
        params = {n: leaf.t() if transposed and _stored_transposed(n) else leaf
                  for n, leaf in leaves.items()}
        out, _ = functional_call(fast, params, (x,), {"lengths": torch.tensor(LENGTHS)})
        grads = torch.autograd.grad(out.float().square().sum(), list(leaves.values()))
        grads = [g.t() if transposed and _stored_transposed(n) else g
                 for n, g in zip(leaves, grads)]
        results.append([out, *grads])
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **tol)


def test_fake_backward_gives_transposed_weight_grads():
    """opcheck's test_faketensor compares the fake backward's gradient strides with the real
    ones, here for transposed w_ih and w_hh."""
    gen = torch.Generator().manual_seed(2)
    B = len(LENGTHS)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64)  # noqa: E731
    x, h0, c0 = r(T, B, I), r(2, B, H), r(2, B, H)
    weights = [r(I, 4 * H).t(), r(H, 4 * H).t(), r(4 * H), r(4 * H)] * 2
    lengths = torch.tensor(LENGTHS)
    out, h_n, c_n, reserve = torch.ops.fastlstm.lstm_layer_forward(
        x, lengths, h0, c0, weights, True, False, True)
    args = (torch.ones_like(out), None, None, x, lengths, h0, c0, weights, reserve, True, False,
            True, True)
    grads = torch.ops.fastlstm.lstm_layer_backward(*args)[3]
    assert [g.stride() for g in grads] == [w.stride() for w in weights]
    opcheck(torch.ops.fastlstm.lstm_layer_backward.default, args,
            test_utils=("test_faketensor",))
    opcheck(torch.ops.fastlstm._layer_backward_tensors.default,
            (torch.ones_like(out), None, None, x, lengths, h0, c0, reserve, True, False, True,
             True, *weights, None, None), test_utils=("test_faketensor",))
