"""torch.func and batched gradients, judged by nn.LSTM (run with torch.autograd, one example
or one cotangent at a time).

- grad, vjp, jacrev (also over PackedSequence input, enforce_sorted=False) give nn.LSTM's
  derivatives (they failed with "must override the setup_context staticmethod");
- vmap, vmap(grad) (per-example gradients) and torch.autograd.grad(is_grads_batched=True)
  work, through a loop batching rule (they failed with "Batching rule not implemented");
- forward mode gives nn.LSTM's tangents: torch.func.jvp, jacfwd, torch.autograd.forward_ad
  dual tensors, hessian (jacfwd over jacrev) and jacrev over jacfwd, vmap over jvp and over
  jacfwd (it raised; before that it returned zeros), with tangents on the input, h_0, c_0 and
  the weights (through functional_call), 1 and 2 layers, both directions, proj_size, with and
  without lengths (a zero length included);
- double backward through torch.func (grad of grad) gives nn.LSTM's second derivatives (it
  raised).

nn.LSTM cannot be run under torch.func's forward mode over packed input (pack_padded_sequence
has no forward-mode formula, and functorch's wrappers have no storage for the packed kernel),
so its tangents come from torch.autograd.forward_ad dual tensors and its second derivatives
from double backward, on a PackedSequence built as pack_padded_sequence(enforce_sorted=False)
builds it (_nn_lstm_packed).
"""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vjp, vmap
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from helpers import assert_close, make_pair, reference_forward

F64 = torch.float64
T, B, I, H = 5, 3, 3, 4
LENGTHS = [4, 5, 2]


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


# ---------------------------------------------------------------------------------------------
# Forward mode and second derivatives, judged by nn.LSTM over packed input. Tiny sizes: the
# tangents and the second derivatives come from fastlstm.reference (a Python loop over steps).

FT, FB, FI, FH = 4, 3, 2, 3
FLENGTHS = [4, 0, 2]  # with a zero length (left out of the nn.LSTM call, see _nn_lstm_packed)
FWD_CONFIGS = {"uni1": dict(num_layers=1), "bi1": dict(num_layers=1, bidirectional=True),
               "uni2": dict(num_layers=2),
               "bi2_proj": dict(num_layers=2, bidirectional=True, proj_size=2)}
OUTPUTS = ("output", "h_n", "c_n")


def _case(cfg, seed=0):
    """(nn.LSTM, fastlstm.LSTM, x, h0, c0, params): float64, random states."""
    ref, fast = make_pair(FI, FH, F64, **FWD_CONFIGS[cfg])
    states = fast.num_layers * (2 if fast.bidirectional else 1)
    x = _randn(FT, FB, FI, seed=seed)
    h0 = _randn(states, FB, fast.proj_size or FH, seed=seed + 1)
    c0 = _randn(states, FB, FH, seed=seed + 2)
    return ref, fast, x, h0, c0, {n: p.detach() for n, p in fast.named_parameters()}


def _random_like(x, h0, c0, params, seed):
    """Random tangents for (x, h0, c0, params)."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda t: torch.randn(t.shape, generator=gen, dtype=F64)  # noqa: E731
    return r(x), r(h0), r(c0), {n: r(p) for n, p in params.items()}


def _fast_lstm(fast, params, x, h0, c0, lengths):
    kwargs = {} if lengths is None else {"lengths": lengths}
    out, (h_n, c_n) = functional_call(fast, params, (x, (h0, c0)), kwargs)
    return out, h_n, c_n


def _nn_lstm_packed(ref, params, x, h0, c0, lengths):
    """nn.LSTM over the PackedSequence that pack_padded_sequence(x, lengths,
    enforce_sorted=False) gives (the same rows in the same order, the same sorted and unsorted
    indices), padded back to [T, B, *] with zeros. Built with index_select / index_copy, which
    have forward-mode formulas (pack_padded_sequence and pad_packed_sequence do not). A
    zero-length sequence, which nn.LSTM rejects, is left out of the call: output 0,
    h_n, c_n = h_0, c_0. lengths=None: every sequence has T steps."""
    steps, batch = x.shape[:2]
    lengths = [steps] * batch if lengths is None else lengths
    kept = torch.tensor([b for b, n in enumerate(lengths) if n > 0])
    n = len(kept)
    # Which row of x[:, kept] viewed as [T * n, I] each packed row is.
    layout = pack_padded_sequence(torch.arange(steps * n, dtype=F64).view(steps, n, 1),
                                  [lengths[b] for b in kept], enforce_sorted=False)
    rows = layout.data[:, 0].long()
    data = x.index_select(1, kept).reshape(steps * n, -1).index_select(0, rows)
    packed = PackedSequence(data, layout.batch_sizes, layout.sorted_indices,
                            layout.unsorted_indices)
    out, (h_n, c_n) = functional_call(ref, params, (packed, (h0.index_select(1, kept),
                                                              c0.index_select(1, kept))))
    out = out.data.new_zeros(steps * n, out.data.shape[1]).index_copy(0, rows, out.data)
    out = out.new_zeros(steps, batch, out.shape[1]).index_copy(1, kept, out.view(steps, n, -1))
    return out, h0.index_copy(1, kept, h_n), c0.index_copy(1, kept, c_n)


def _forward_ad(fn, primals, tangents):
    """fn(x, h0, c0, params)'s values and tangents through torch.autograd.forward_ad dual
    tensors; a None tangent (or a parameter missing from the tangents' dict) leaves its
    primal a plain tensor."""
    x, h0, c0, params = primals
    dx, dh0, dc0, dparams = tangents
    with fwAD.dual_level():
        def dual(p, t):
            return p if t is None else fwAD.make_dual(p, t)
        outs = fn(dual(x, dx), dual(h0, dh0), dual(c0, dc0),
                  {n: dual(p, (dparams or {}).get(n)) for n, p in params.items()})
        unpacked = [fwAD.unpack_dual(o) for o in outs]
        values = [u.primal.clone() for u in unpacked]
        d_values = [torch.zeros_like(u.primal) if u.tangent is None else u.tangent.clone()
                    for u in unpacked]
    return values, d_values


def _nn_forward_ad(ref, primals, tangents, lengths):
    return _forward_ad(lambda x, h0, c0, p: _nn_lstm_packed(ref, p, x, h0, c0, lengths),
                       primals, tangents)


def _nn_jacobian(ref, primals, lengths, wrt):
    """nn.LSTM's Jacobian of cat(output, h_n, c_n).flatten() w.r.t. primals[wrt] (an index
    into (x, h0, c0), or a parameter name), one forward-mode column per entry."""
    x, h0, c0, params = primals
    target = params[wrt] if isinstance(wrt, str) else primals[wrt]
    columns = []
    for k in range(target.numel()):
        one_hot = torch.zeros(target.numel(), dtype=F64)
        one_hot[k] = 1
        one_hot = one_hot.view(target.shape)
        tangents = [None, None, None, {wrt: one_hot} if isinstance(wrt, str) else None]
        if not isinstance(wrt, str):
            tangents[wrt] = one_hot
        _, d_values = _nn_forward_ad(ref, primals, tangents, lengths)
        columns.append(torch.cat([d.reshape(-1) for d in d_values]))
    return torch.stack(columns, 1).view(-1, *target.shape)


def _flat(outs):
    return torch.cat([o.reshape(-1) for o in outs])


def _assert_zero_past_end(d_output, lengths):
    for b, n in enumerate(lengths):
        assert torch.equal(d_output[n:, b], torch.zeros_like(d_output[n:, b])), \
            f"tangent of the output not exactly 0 past sequence {b}'s end"


def test_nn_lstm_packed_judge_is_pack_padded_sequence():
    """_nn_lstm_packed (the forward-mode judge) gives nn.LSTM's results over
    pack_padded_sequence / pad_packed_sequence exactly (helpers.reference_forward)."""
    ref, _, x, h0, c0, params = _case("bi2_proj")
    expected = reference_forward(ref, x, FLENGTHS, (h0, c0))
    for name, a, e in zip(OUTPUTS, _nn_lstm_packed(ref, params, x, h0, c0, FLENGTHS),
                          expected):
        assert torch.equal(a, e), name


@pytest.mark.parametrize("lengths", [FLENGTHS, None], ids=["lengths", "no_lengths"])
@pytest.mark.parametrize("cfg", list(FWD_CONFIGS))
def test_jvp_matches_nn_lstm(cfg, lengths):
    """torch.func.jvp with tangents on the input, h_0, c_0 and every weight."""
    ref, fast, x, h0, c0, params = _case(cfg)
    primals = (x, h0, c0, params)
    tangents = _random_like(*primals, seed=10)
    values, d_values = jvp(lambda x, h0, c0, p: _fast_lstm(fast, p, x, h0, c0, lengths),
                           primals, tangents)
    expected, d_expected = _nn_forward_ad(ref, primals, tangents, lengths)
    for name, a, e, da, de in zip(OUTPUTS, values, expected, d_values, d_expected):
        assert_close(name, a, e)
        assert de.abs().max() > 0
        assert_close("jvp tangent of " + name, da, de)
    _assert_zero_past_end(d_values[0], lengths or [FT] * FB)


@pytest.mark.parametrize("cfg,lengths", [("uni1", None), ("bi2_proj", FLENGTHS)],
                         ids=["uni1-no_lengths", "bi2_proj-lengths"])
def test_forward_ad_dual_tensors_match_nn_lstm(cfg, lengths):
    """torch.autograd.forward_ad: tangents on everything, then on one weight only (the other
    inputs plain tensors)."""
    ref, fast, x, h0, c0, params = _case(cfg)
    primals = (x, h0, c0, params)
    every = _random_like(*primals, seed=11)
    last = list(params)[-1]
    for tangents in (every, (None, None, None, {last: every[3][last]})):
        values, d_values = _forward_ad(
            lambda x, h0, c0, p: _fast_lstm(fast, p, x, h0, c0, lengths), primals, tangents)
        expected, d_expected = _nn_forward_ad(ref, primals, tangents, lengths)
        assert d_expected[0].abs().max() > 0
        for name, a, e, da, de in zip(OUTPUTS, values, expected, d_values, d_expected):
            assert_close(name, a, e)
            assert_close("forward_ad tangent of " + name, da, de)
        _assert_zero_past_end(d_values[0], lengths or [FT] * FB)


def test_jacfwd_matches_nn_lstm():
    """jacfwd w.r.t. the input, h_0, c_0 and two weights (a layer-0 one, a layer-1 one)."""
    ref, fast, x, h0, c0, params = _case("bi2_proj")
    chosen = ["weight_hr_l0_reverse", "weight_ih_l1"]
    fixed = {n: p for n, p in params.items() if n not in chosen}

    def f(x, h0, c0, p):
        return _flat(_fast_lstm(fast, {**fixed, **p}, x, h0, c0, FLENGTHS))

    jac = jacfwd(f, argnums=(0, 1, 2, 3))(x, h0, c0, {n: params[n] for n in chosen})
    primals = (x, h0, c0, params)
    for k, name in enumerate(("input", "h_0", "c_0")):
        assert_close("jacfwd w.r.t. " + name, jac[k], _nn_jacobian(ref, primals, FLENGTHS, k))
    for name in chosen:
        assert_close("jacfwd w.r.t. " + name, jac[3][name],
                     _nn_jacobian(ref, primals, FLENGTHS, name))


def _scalar_loss(out, h_n, c_n):
    # Fixed weights, not random ones: this runs under vmap (jacfwd), which refuses randomness.
    w = torch.arange(out.numel(), dtype=F64).view(out.shape).cos()
    return (out * w).sum() + (h_n ** 2).sum() + (c_n ** 3).sum()


@pytest.mark.parametrize("cfg,lengths", [("uni1", None), ("bi2_proj", FLENGTHS)],
                         ids=["uni1-no_lengths", "bi2_proj-lengths"])
def test_hessian_matches_nn_lstm(cfg, lengths):
    """Second derivatives of a scalar of (output, h_n, c_n) w.r.t. the input, h_0, c_0 and a
    weight together (one flat vector z): hessian (jacfwd over jacrev), jacfwd over jacfwd
    (forward over forward, where the layer is fastlstm.reference: jacfwd(jacfwd) gave wrong
    values through LayerForward), a Hessian-vector product by forward_ad dual tensors over
    torch.autograd.grad(create_graph=True), and on one layer jacrev over jacfwd (it runs the
    native backward once per row: 3 s more on two)."""
    ref, fast, x, h0, c0, params = _case(cfg)
    weight = "weight_hh_l1_reverse" if "weight_hh_l1_reverse" in params else "weight_hh_l0"
    parts = (x, h0, c0, params[weight])
    z = _flat(parts)

    def loss(run, model):
        def f(z):
            x, h0, c0, w = [p.view(t.shape) for p, t in
                            zip(z.split([t.numel() for t in parts]), parts)]
            return _scalar_loss(*run(model, {**params, weight: w}, x, h0, c0, lengths))
        return f

    f_fast = loss(_fast_lstm, fast)
    hess = hessian(f_fast)(z)
    fwd_fwd = jacfwd(jacfwd(f_fast))(z)
    rev_fwd = jacrev(jacfwd(f_fast))(z) if fast.num_layers == 1 else None
    v = _randn(z.numel(), seed=17)
    with fwAD.dual_level():
        zd = fwAD.make_dual(z.clone().requires_grad_(), v)
        g = torch.autograd.grad(f_fast(zd), zd, create_graph=True)[0]
        hvp = fwAD.unpack_dual(g).tangent

    zr = z.clone().requires_grad_()
    g = torch.autograd.grad(loss(_nn_lstm_packed, ref)(zr), zr, create_graph=True)[0]
    expected = torch.stack([torch.autograd.grad(g[k], zr, retain_graph=True)[0]
                            for k in range(z.numel())])
    assert expected.abs().max() > 0
    assert_close("hessian", hess, expected)
    assert_close("jacfwd(jacfwd)", fwd_fwd, expected)
    assert_close("Hessian-vector product by forward_ad", hvp, expected @ v)
    if rev_fwd is not None:
        assert_close("jacrev(jacfwd)", rev_fwd, expected)


def test_grad_of_grad_matches_nn_lstm():
    """torch.func.grad of a function of torch.func.grad: the second derivatives w.r.t. the
    input, h_0, c_0 and every weight."""
    ref, fast, x, h0, c0, params = _case("bi2_proj")

    def outer(run, model):
        def first(x, h0, c0, p):
            return _scalar_loss(*run(model, p, x, h0, c0, FLENGTHS))

        def f(x, h0, c0, p):
            g_x, g_h0, g_c0, g_p = grad(first, argnums=(0, 1, 2, 3))(x, h0, c0, p)
            return (g_x ** 2).sum() + (g_h0 ** 2).sum() + (g_c0 ** 2).sum() + \
                sum((g ** 2).sum() for g in g_p.values())
        return f

    got = grad(outer(_fast_lstm, fast), argnums=(0, 1, 2, 3))(x, h0, c0, params)

    leaves = [t.clone().requires_grad_() for t in (x, h0, c0, *params.values())]
    p = dict(zip(params, leaves[3:]))
    first = torch.autograd.grad(_scalar_loss(*_nn_lstm_packed(ref, p, *leaves[:3], FLENGTHS)),
                                leaves, create_graph=True)
    expected = torch.autograd.grad(sum((g ** 2).sum() for g in first), leaves)
    for name, a, e in zip(("input", "h_0", "c_0"), got[:3], expected[:3]):
        assert e.abs().max() > 0
        assert_close("grad(grad) " + name, a, e)
    for (name, a), e in zip(got[3].items(), expected[3:]):
        assert_close("grad." + name + " (grad of grad)", a, e)


def test_vmap_over_jvp_and_jacfwd_matches_nn_lstm():
    """Per-example tangents and Jacobians: vmap over jvp and over jacfwd."""
    ref, fast, _, h0, c0, params = _case("bi1")
    xs = _randn(2, FT, FB, FI, seed=13)
    dxs = _randn(2, FT, FB, FI, seed=14)

    def f(x):
        return _flat(_fast_lstm(fast, params, x, h0, c0, FLENGTHS))

    d_values = vmap(lambda x, dx: jvp(f, (x,), (dx,))[1])(xs, dxs)
    jacs = vmap(jacfwd(f))(xs)
    for k in range(xs.shape[0]):
        primals = (xs[k], h0, c0, params)
        _, d_expected = _nn_forward_ad(ref, primals, (dxs[k], None, None, None), FLENGTHS)
        assert_close(f"vmap(jvp) [{k}]", d_values[k], _flat(d_expected))
        assert_close(f"vmap(jacfwd) [{k}]", jacs[k], _nn_jacobian(ref, primals, FLENGTHS, 0))


def test_jvp_over_packed_sequence_matches_nn_lstm():
    """jvp through fastlstm.LSTM called on a PackedSequence (tangent on its data and h_0)."""
    ref, fast, x, h0, c0, _ = _case("bi2_proj")
    packed = pack_padded_sequence(x, [3, 4, 1], enforce_sorted=False)

    def run(model):
        def f(data, h0):
            out, (h_n, c_n) = model(PackedSequence(data, packed.batch_sizes,
                                                   packed.sorted_indices,
                                                   packed.unsorted_indices), (h0, c0))
            return out.data, h_n, c_n
        return f

    d_data, d_h0 = _randn(*packed.data.shape, seed=15), _randn(*h0.shape, seed=16)
    values, d_values = jvp(run(fast), (packed.data, h0), (d_data, d_h0))
    with fwAD.dual_level():
        outs = run(ref)(fwAD.make_dual(packed.data, d_data), fwAD.make_dual(h0, d_h0))
        expected = [fwAD.unpack_dual(o) for o in outs]
        for name, a, da, e in zip(OUTPUTS, values, d_values, expected):
            assert_close(name, a, e.primal)
            assert e.tangent.abs().max() > 0
            assert_close("jvp tangent of " + name, da, e.tangent)
