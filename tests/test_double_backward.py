"""Double backward (gradients of gradients) through fastlstm.LSTM, judged by nn.LSTM.

A create_graph=True backward recomputes each layer with fastlstm.reference (differentiable
plain PyTorch) and differentiates that, so second derivatives exist; a plain backward is the
native op as before. Checked here: first-order gradients with create_graph=True equal the
plain ones (to rounding) and nn.LSTM's; second-order gradients equal nn.LSTM's; gradgradcheck
passes in float64 with and without lengths, 1 and 2 layers, both directions. The raw backward
op itself still has no derivative: differentiating it directly raises, never gives zeros.
"""

import pytest
import torch
from torch.func import functional_call

from helpers import assert_close, make_pair, reference_forward

F64 = torch.float64
FWD = torch.ops.fastlstm.lstm_layer_forward.default
MESSAGE = r"fastlstm: double backward .* is not supported"

CONFIGS = [dict(num_layers=1), dict(num_layers=2, bidirectional=True, proj_size=2)]
IDS = ["uni1", "bi2_proj"]


def first_order(model, x, hx, lengths, create_graph, fast):
    """Gradients of a fixed random projection of (output, h_n, c_n) w.r.t. x, h_0, c_0 and
    every parameter."""
    if fast:
        out, (h_n, c_n) = model(x, hx, lengths=lengths)
    else:
        out, h_n, c_n = reference_forward(model, x, lengths, hx)
    gen = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=F64)).sum()
               for t in (out, h_n, c_n))
    wrt = [x, *hx, *model.parameters()]
    return torch.autograd.grad(loss, wrt, create_graph=create_graph)


def _case(cfg):
    T, B, I, H = 5, 3, 3, 4
    ref, fast = make_pair(I, H, F64, **cfg)
    D = 2 if fast.bidirectional else 1
    L = fast.num_layers
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, I, generator=gen, dtype=F64, requires_grad=True)
    hx = (torch.randn(L * D, B, fast.proj_size or H, generator=gen, dtype=F64,
                      requires_grad=True),
          torch.randn(L * D, B, H, generator=gen, dtype=F64, requires_grad=True))
    return ref, fast, x, hx, [5, 2, 4]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_double_backward_matches_nn_lstm(cfg):
    ref, fast, x, hx, lengths = _case(cfg)
    names = ["grad_input", "grad_h_0", "grad_c_0"] + \
        ["grad." + n for n, _ in fast.named_parameters()]
    expected = first_order(ref, x, hx, lengths, create_graph=True, fast=False)
    plain = first_order(fast, x, hx, lengths, create_graph=False, fast=True)
    with_graph = first_order(fast, x, hx, lengths, create_graph=True, fast=True)
    for name, e, a, b in zip(names, expected, plain, with_graph):
        assert_close(name, a, e)
        assert_close(name + " (create_graph)", b, e)
        assert b.requires_grad, f"{name} has no graph under create_graph=True"

    # Second order: d/d(everything) of sum(g^2) over the first-order gradients.
    wrt_ref = [x, *hx, *ref.parameters()]
    wrt_fast = [x, *hx, *fast.parameters()]
    e2 = torch.autograd.grad(sum((g ** 2).sum() for g in expected), wrt_ref)
    a2 = torch.autograd.grad(sum((g ** 2).sum() for g in with_graph), wrt_fast)
    for name, e, a in zip(names, e2, a2):
        assert e.abs().max() > 0
        assert_close("second order " + name, a, e)


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("cfg", [dict(num_layers=1), dict(num_layers=2),
                                 dict(num_layers=1, bidirectional=True),
                                 dict(num_layers=2, bidirectional=True)],
                         ids=["uni1", "uni2", "bi1", "bi2"])
def test_gradgradcheck(cfg, with_lengths):
    _, fast = make_pair(2, 2, F64, **cfg)
    D = 2 if fast.bidirectional else 1
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 2, generator=gen, dtype=F64, requires_grad=True)
    h0 = torch.randn(fast.num_layers * D, 2, 2, generator=gen, dtype=F64, requires_grad=True)
    c0 = torch.randn(fast.num_layers * D, 2, 2, generator=gen, dtype=F64, requires_grad=True)
    names = [n for n, _ in fast.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in fast.parameters()]
    lengths = torch.tensor([3, 1]) if with_lengths else None

    def f(x, h0, c0, *ps):
        out, (h_n, c_n) = functional_call(fast, dict(zip(names, ps)), (x, (h0, c0)),
                                          {"lengths": lengths})
        return out, h_n, c_n

    # fast_mode: random projections of the Jacobians (bi2 takes 30 s without it).
    assert torch.autograd.gradgradcheck(f, (x, h0, c0, *params), fast_mode=True)


def test_double_backward_through_the_raw_op_raises():
    """lstm_layer_backward, called directly and recorded, has no derivative: raises."""
    gen = torch.Generator().manual_seed(0)
    T, B, I, H = 3, 2, 2, 3
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64, requires_grad=True)  # noqa: E731
    x, h0, c0 = r(T, B, I), r(1, B, H), r(1, B, H)
    weights = [r(4 * H, I), r(4 * H, H), r(4 * H), r(4 * H)]
    out, h_n, c_n, reserve = FWD(x, torch.tensor([3, 2]), h0, c0, weights, True, False, False)
    gw = torch.ops.fastlstm.lstm_layer_backward(
        torch.ones_like(out), None, None, x, torch.tensor([3, 2]), h0, c0, weights, reserve,
        True, False, False, True)[3][1]
    assert gw.requires_grad and gw.abs().sum() > 0
    with pytest.raises(RuntimeError, match=MESSAGE):
        torch.autograd.grad(gw.sum(), [weights[0]])
