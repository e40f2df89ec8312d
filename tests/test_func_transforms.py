"""torch.func and batched gradients, judged by nn.LSTM (run with torch.autograd, one example
or one cotangent at a time).

- grad, vjp, jacrev (also over PackedSequence input, enforce_sorted=False) give nn.LSTM's
  derivatives (they failed with "must override the setup_context staticmethod");
- vmap, vmap(grad) (per-example gradients) and torch.autograd.grad(is_grads_batched=True)
  work, through a loop batching rule (they failed with "Batching rule not implemented");
- forward mode (jvp, jacfwd, forward_ad) raises a clear error (it returned zeros);
- double backward through torch.func (grad of grad) raises, never gives zeros.
"""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vjp, vmap
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from helpers import assert_close, make_pair

F64 = torch.float64
T, B, I, H = 5, 3, 3, 4
LENGTHS = [4, 5, 2]
FORWARD_MESSAGE = r"fastlstm: forward-mode AD .* is not supported"
DOUBLE_MESSAGE = r"fastlstm: double backward .* is not supported"


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _pair(**kwargs):
    return make_pair(I, H, F64, **{"num_layers": 2, "bidirectional": True, **kwargs})


def _weights(model):
    return _randn(T, B, model.hidden_size * 2, seed=5)


def _loss_of(model, params, x, w):
    """A scalar of the padded output, through the module with lengths (fastlstm) or through
    pack_padded_sequence (nn.LSTM)."""
    if isinstance(model, torch.nn.LSTM):
        packed = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
        out, (h_n, c_n) = functional_call(model, params, (packed,))
        out = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)[0]
    else:
        out, (h_n, c_n) = functional_call(model, params, (x,), {"lengths": LENGTHS})
    return (out * w).sum() + (h_n ** 2).sum() + c_n.sum()


def _autograd_grads(model, x, w):
    xr = x.clone().requires_grad_()
    params = dict(model.named_parameters())
    loss = _loss_of(model, params, xr, w)
    return torch.autograd.grad(loss, [xr, *params.values()])


def test_grad_and_vjp_match_nn_lstm():
    ref, fast = _pair(proj_size=2)
    x = _randn(T, B, I)
    w = _weights(fast)[..., :4]
    expected = _autograd_grads(ref, x, w)
    params = {n: p.detach() for n, p in fast.named_parameters()}
    g_x, g_p = grad(lambda x, p: _loss_of(fast, p, x, w), argnums=(0, 1))(x, params)
    assert_close("torch.func.grad input", g_x, expected[0])
    for (name, g), e in zip(g_p.items(), expected[1:]):
        assert_close("torch.func.grad " + name, g, e)
    loss, pullback = vjp(lambda x: _loss_of(fast, params, x, w), x)
    (v_x,) = pullback(torch.tensor(1.0, dtype=F64))
    assert_close("torch.func.vjp input", v_x, expected[0])


def test_jacrev_over_packed_sequence_matches_nn_lstm():
    ref, fast = _pair()
    x = _randn(T, B, I)
    packed = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)

    def out_of(model):
        def f(data):
            out, _ = model(PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                                          packed.unsorted_indices))
            return out.data
        return f

    jac = jacrev(out_of(fast))(packed.data)
    data = packed.data.clone().requires_grad_()
    out = out_of(ref)(data)
    assert jac.shape == (*out.shape, *data.shape)
    flat = out.reshape(-1)
    rows = [torch.autograd.grad(flat[k], data, retain_graph=True)[0] for k in range(flat.numel())]
    assert_close("jacrev over packed data", jac.reshape(flat.numel(), *data.shape),
                 torch.stack(rows))


def test_vmap_and_per_example_grads_match_nn_lstm():
    ref, fast = _pair()
    xs = _randn(3, T, B, I, seed=7)
    w = _weights(fast)
    params = {n: p.detach() for n, p in fast.named_parameters()}

    outs = vmap(lambda x: functional_call(fast, params, (x,), {"lengths": LENGTHS})[0])(xs)
    for k in range(xs.shape[0]):
        packed = pack_padded_sequence(xs[k], LENGTHS, enforce_sorted=False)
        expected = torch.nn.utils.rnn.pad_packed_sequence(ref(packed)[0], total_length=T)[0]
        assert_close(f"vmap output [{k}]", outs[k], expected)

    per_example = vmap(grad(lambda p, x: _loss_of(fast, p, x, w)), in_dims=(None, 0))(params,
                                                                                      xs)
    for k in range(xs.shape[0]):
        expected = _autograd_grads(ref, xs[k], w)[1:]
        for (name, g), e in zip(per_example.items(), expected):
            assert_close(f"vmap(grad) {name} [{k}]", g[k], e)


def test_is_grads_batched_matches_nn_lstm():
    ref, fast = _pair(proj_size=2)
    x = _randn(T, B, I)
    cotangents = _randn(4, T, B, 4, seed=3)
    results = []
    for model in (ref, fast):
        xr = x.clone().requires_grad_()
        if model is ref:
            packed = pack_padded_sequence(xr, LENGTHS, enforce_sorted=False)
            out = torch.nn.utils.rnn.pad_packed_sequence(model(packed)[0], total_length=T)[0]
            results.append([
                torch.autograd.grad(out, [xr, model.weight_hh_l1], v, retain_graph=True)
                for v in cotangents])
        else:
            out = model(xr, lengths=LENGTHS)[0]
            results.append(torch.autograd.grad(out, [xr, model.weight_hh_l1], cotangents,
                                               is_grads_batched=True))
    expected, (g_x, g_w) = results
    for k in range(cotangents.shape[0]):
        assert_close(f"is_grads_batched input [{k}]", g_x[k], expected[k][0])
        assert_close(f"is_grads_batched weight_hh_l1 [{k}]", g_w[k], expected[k][1])


def test_forward_mode_raises_never_zeros():
    _, fast = _pair()
    x = _randn(T, B, I)
    params = {n: p.detach() for n, p in fast.named_parameters()}

    def f(x):
        return functional_call(fast, params, (x,), {"lengths": LENGTHS})[0]

    with pytest.raises(RuntimeError, match=FORWARD_MESSAGE):
        jvp(f, (x,), (torch.ones_like(x),))
    with pytest.raises(RuntimeError, match=FORWARD_MESSAGE):
        jacfwd(f)(x)
    with pytest.raises(RuntimeError, match=FORWARD_MESSAGE):
        with fwAD.dual_level():
            f(fwAD.make_dual(x, torch.ones_like(x)))


def test_grad_of_grad_raises():
    _, fast = _pair()
    x = _randn(T, B, I)
    params = {n: p.detach() for n, p in fast.named_parameters()}

    def f(x):
        return functional_call(fast, params, (x,), {"lengths": LENGTHS})[0].pow(2).sum()

    with pytest.raises(RuntimeError, match=DOUBLE_MESSAGE):
        grad(lambda x: grad(f)(x).sum())(x)


def test_opcheck_layer_backward_tensors():
    """The Tensor-returns backward op used under is_grads_batched: fake kernel and schema."""
    gen = torch.Generator().manual_seed(0)
    T, B, I, H = 3, 2, 2, 3
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64)  # noqa: E731
    x, h0, c0 = r(T, B, I), r(2, B, H), r(2, B, H)
    weights = [r(4 * H, I), r(4 * H, H), r(4 * H), r(4 * H)] * 2
    lengths = torch.tensor([3, 1])
    out, h_n, c_n, reserve = torch.ops.fastlstm.lstm_layer_forward(
        x, lengths, h0, c0, weights, True, False, True)
    args = (torch.ones_like(out), None, torch.ones_like(c_n), x, lengths, h0, c0, reserve,
            True, False, True, True, *weights, None, None)
    expected = torch.ops.fastlstm.lstm_layer_backward(
        torch.ones_like(out), None, torch.ones_like(c_n), x, lengths, h0, c0, weights, reserve,
        True, False, True, True)
    got = torch.ops.fastlstm._layer_backward_tensors(*args)
    assert len(got) == 13
    for a, e in zip(got, [*expected[:3], *expected[3]]):
        assert torch.equal(a, e)
    assert all(t.numel() == 0 for t in got[11:])
    torch.library.opcheck(torch.ops.fastlstm._layer_backward_tensors.default, args,
                          test_utils=("test_schema", "test_faketensor"))
