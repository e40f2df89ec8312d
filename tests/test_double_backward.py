"""Double backward (gradients of gradients) is not implemented: it must raise a clear
RuntimeError, never return zeros or None. First-order gradients taken with create_graph=True
must still be right (judged by nn.LSTM)."""

import pytest
import torch

from helpers import assert_close, make_pair, reference_forward

F64 = torch.float64
FWD = torch.ops.fastlstm.lstm_layer_forward.default
MESSAGE = r"fastlstm: double backward .* is not supported yet"


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


@pytest.mark.parametrize("cfg", [dict(num_layers=1), dict(num_layers=2, bidirectional=True,
                                                          proj_size=2)], ids=["uni1", "bi2_proj"])
def test_double_backward_raises_and_first_order_is_unchanged(cfg):
    T, B, I, H = 5, 3, 3, 4
    ref, fast = make_pair(I, H, F64, **cfg)
    D = 2 if fast.bidirectional else 1
    L = fast.num_layers
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, I, generator=gen, dtype=F64, requires_grad=True)
    hx = (torch.randn(L * D, B, fast.proj_size or H, generator=gen, dtype=F64,
                      requires_grad=True),
          torch.randn(L * D, B, H, generator=gen, dtype=F64, requires_grad=True))
    lengths = [5, 2, 4]

    expected = first_order(ref, x, hx, lengths, create_graph=False, fast=False)
    plain = first_order(fast, x, hx, lengths, create_graph=False, fast=True)
    with_graph = first_order(fast, x, hx, lengths, create_graph=True, fast=True)
    names = ["grad_input", "grad_h_0", "grad_c_0"] + \
        ["grad." + n for n, _ in fast.named_parameters()]
    for name, e, a, b in zip(names, expected, plain, with_graph):
        assert_close(name, a, e)
        assert_close(name + " (create_graph)", b, e)
        assert torch.equal(a, b), f"{name}: create_graph=True changed the first-order gradient"

    # Every first-order gradient carries the graph, and differentiating it raises.
    for name, g in zip(names, with_graph):
        assert g.requires_grad, f"{name} has no graph under create_graph=True"
    with pytest.raises(RuntimeError, match=MESSAGE):
        torch.autograd.grad(with_graph[0].pow(2).sum(), x)
    with pytest.raises(RuntimeError, match=MESSAGE):
        sum(g.pow(2).sum() for g in with_graph[3:]).backward()


def test_gradgradcheck_raises():
    _, fast = make_pair(2, 3, F64)
    x = torch.randn(4, 2, 2, dtype=F64, requires_grad=True)
    lengths = torch.tensor([4, 1])
    with pytest.raises(RuntimeError, match=MESSAGE):
        torch.autograd.gradgradcheck(lambda x: fast(x, lengths=lengths)[0], (x,))


def test_double_backward_through_the_raw_op_raises():
    gen = torch.Generator().manual_seed(0)
    T, B, I, H = 3, 2, 2, 3
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64, requires_grad=True)  # noqa: E731
    x, h0, c0 = r(T, B, I), r(1, B, H), r(1, B, H)
    weights = [r(4 * H, I), r(4 * H, H), r(4 * H), r(4 * H)]
    out, h_n, c_n, _ = FWD(x, torch.tensor([3, 2]), h0, c0, weights, True, False, False)
    (gw,) = torch.autograd.grad(out.sum() + h_n.sum(), [weights[1]], create_graph=True)
    assert gw.abs().sum() > 0
    with pytest.raises(RuntimeError, match=MESSAGE):
        torch.autograd.grad(gw.sum(), [weights[0]])
