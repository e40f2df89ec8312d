"""The native ops and their registrations: gradcheck (module and raw op), torch.library.opcheck
(schema, autograd registration, fake kernels, AOT dispatch), and torch.compile(fullgraph=True).
"""

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.library import opcheck

import fastlstm
from helpers import assert_close, make_pair, reference_forward

F64 = torch.float64
F32 = torch.float32
FWD = torch.ops.fastlstm.lstm_layer_forward.default
BWD = torch.ops.fastlstm.lstm_layer_backward.default
INF = torch.ops.fastlstm.lstm_layer_inference.default


def layer_args(T, B, I, H, *, proj=0, bidirectional=False, bias=True, lengths=None,
               dtype=F64, requires_grad=True, seed=0):
    """Arguments of lstm_layer_forward for one layer: (input, lengths, h0, c0, weights,
    has_biases, has_projections, bidirectional), weights in nn.LSTM's order."""
    gen = torch.Generator().manual_seed(seed)
    D = 2 if bidirectional else 1
    Hout = proj if proj else H

    def rnd(*shape, scale=1.0):
        t = (torch.rand(*shape, generator=gen, dtype=F64) * 2 - 1) * scale
        return t.to(dtype).requires_grad_(requires_grad)

    weights = []
    for _ in range(D):
        k = H ** -0.5
        weights += [rnd(4 * H, I, scale=k), rnd(4 * H, Hout, scale=k)]
        if bias:
            weights += [rnd(4 * H, scale=k), rnd(4 * H, scale=k)]
        if proj:
            weights.append(rnd(Hout, H, scale=k))
    lengths = torch.full((B,), T, dtype=torch.int64) if lengths is None else \
        torch.as_tensor(lengths)
    return (rnd(T, B, I), lengths, rnd(D, B, Hout), rnd(D, B, H), weights, bias, bool(proj),
            bidirectional)


# ---------------------------------------------------------------------------------------------
# gradcheck (float64).

GRADCHECK_CASES = [
    dict(T=4, B=3, I=2, H=3, lengths=[4, 0, 2]),
    dict(T=4, B=3, I=2, H=3, lengths=[2, 4, 0], bidirectional=True),
    dict(T=3, B=3, I=2, H=3, lengths=[0, 3, 1], bidirectional=True, proj=2),
    dict(T=3, B=2, I=2, H=3, lengths=[3, 1], proj=1, bias=False),
    dict(T=3, B=2, I=1, H=2, lengths=[0, 0], bidirectional=True),
    dict(T=1, B=2, I=2, H=2, lengths=[1, 0], bidirectional=True),
]


def _case_id(c):
    return "-".join(f"{k}{v}" for k, v in c.items() if k not in ("T", "B", "I"))


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=_case_id)
def test_gradcheck_op(case):
    case = dict(case)
    T, B, I, H = (case.pop(k) for k in ("T", "B", "I", "H"))
    x, lengths, h0, c0, weights, has_b, has_p, bi = layer_args(T, B, I, H, **case)

    def f(x, h0, c0, *weights):
        out, h_n, c_n, _ = FWD(x, lengths, h0, c0, list(weights), has_b, has_p, bi)
        return out, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *weights), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("cfg,lengths", [
    (dict(num_layers=2), [4, 0, 2]),
    (dict(num_layers=2, bidirectional=True), [1, 4, 0]),
    (dict(num_layers=2, bidirectional=True, proj_size=2, batch_first=True), [3, 0, 4]),
    (dict(num_layers=1, bidirectional=True, bias=False), [0, 2, 4]),
], ids=["uni2", "bi2", "bi2_proj_bf", "bi1_nobias"])
def test_gradcheck_module(cfg, lengths):
    T, B, I, H = 4, 3, 2, 3
    _, fast = make_pair(I, H, F64, seed=3, **cfg)
    names = [n for n, _ in fast.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in fast.parameters()]
    D = 2 if fast.bidirectional else 1
    hout = fast.proj_size or H
    gen = torch.Generator().manual_seed(0)
    shape = (B, T, I) if fast.batch_first else (T, B, I)
    x = torch.randn(*shape, generator=gen, dtype=F64, requires_grad=True)
    h0 = torch.randn(fast.num_layers * D, B, hout, generator=gen, dtype=F64, requires_grad=True)
    c0 = torch.randn(fast.num_layers * D, B, H, generator=gen, dtype=F64, requires_grad=True)
    lengths_t = torch.tensor(lengths)

    def f(x, h0, c0, *params):
        out, (h_n, c_n) = functional_call(fast, dict(zip(names, params)), (x, (h0, c0)),
                                          {"lengths": lengths_t})
        return out, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_would_catch_a_wrong_gradient():
    """Sanity of the tolerance above: a 1e-4 relative error in one gradient fails gradcheck."""
    x, lengths, h0, c0, weights, has_b, has_p, bi = layer_args(3, 2, 2, 2, lengths=[3, 1])

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            return g * (1 + 1e-4)

    def f(x, h0, c0, *weights):
        return FWD(Wrong.apply(x), lengths, h0, c0, list(weights), has_b, has_p, bi)[0]

    assert not torch.autograd.gradcheck(f, (x, h0, c0, *weights), eps=1e-6, atol=1e-7,
                                        rtol=1e-5, raise_exception=False)


# ---------------------------------------------------------------------------------------------
# The raw op against nn.LSTM.


@pytest.mark.parametrize("bidirectional,proj,bias", [(False, 0, True), (True, 2, True),
                                                      (True, 0, False)])
def test_op_matches_nn_lstm(bidirectional, proj, bias):
    """One layer through the op: h0/c0/h_n/c_n as [D, B, *], weights in nn.LSTM's order,
    output [T, B, D*Hout]; nn.LSTM (packed) is the judge."""
    T, B, I, H = 5, 4, 3, 4
    lengths = [5, 0, 2, 4]
    ref, _ = make_pair(I, H, F64, bidirectional=bidirectional, proj_size=proj, bias=bias)
    x, _, h0, c0, _, _, _, _ = layer_args(T, B, I, H, proj=proj, bidirectional=bidirectional,
                                          requires_grad=False)
    weights = [p.detach() for p in ref.parameters()]
    out, h_n, c_n, _ = FWD(x, torch.tensor(lengths), h0, c0, weights, bias, bool(proj),
                           bidirectional)
    with torch.no_grad():
        e_out, e_h, e_c = reference_forward(ref, x, lengths, (h0, c0))
    assert_close("op output", out, e_out)
    assert_close("op h_n", h_n, e_h)
    assert_close("op c_n", c_n, e_c)


# ---------------------------------------------------------------------------------------------
# opcheck.

OPCHECK_CASES = {
    "uni": dict(T=4, B=3, I=2, H=3),
    "uni_len0": dict(T=4, B=3, I=2, H=3, lengths=[2, 0, 4]),
    "bi_len0": dict(T=4, B=3, I=2, H=3, bidirectional=True, lengths=[0, 4, 1]),
    "bi_proj": dict(T=3, B=2, I=3, H=4, bidirectional=True, proj=2, lengths=[3, 1]),
    "uni_proj_nobias": dict(T=3, B=2, I=3, H=4, proj=3, bias=False, lengths=[1, 3]),
    "bi_nobias_all0": dict(T=3, B=2, I=2, H=2, bidirectional=True, bias=False, lengths=[0, 0]),
    "bi_f32_int32_lengths": dict(T=5, B=3, I=4, H=3, bidirectional=True, dtype=F32,
                                 lengths=torch.tensor([5, 0, 3], dtype=torch.int32)),
}


def _opcheck(op, args):
    result = opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result
    assert set(result) >= {"test_schema", "test_autograd_registration", "test_faketensor",
                           "test_aot_dispatch_dynamic"}


@pytest.mark.parametrize("name", list(OPCHECK_CASES))
def test_opcheck_forward(name):
    case = dict(OPCHECK_CASES[name])
    T, B, I, H = (case.pop(k) for k in ("T", "B", "I", "H"))
    _opcheck(FWD, layer_args(T, B, I, H, **case))


def test_opcheck_forward_non_contiguous_input():
    x, *rest = layer_args(4, 3, 2, 3, bidirectional=True, lengths=[4, 0, 2])
    x_nc = x.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    assert not x_nc.is_contiguous()
    _opcheck(FWD, (x_nc, *rest))


@pytest.mark.parametrize("name", list(OPCHECK_CASES))
def test_forward_is_deterministic(name):
    """Every output, the reserve included, is a function of the arguments only: no
    uninitialized bytes (which also make opcheck's eager-vs-AOT comparison fail). Between
    calls the freed outputs are filled with garbage, which the allocator hands out again."""
    case = dict(OPCHECK_CASES[name])
    T, B, I, H = (case.pop(k) for k in ("T", "B", "I", "H"))
    args = layer_args(T, B, I, H, requires_grad=False, **case)
    first = [t.clone() for t in FWD(*args)]
    for fill in (0x00, 0xAB, 0xFF, 0x11):
        out = FWD(*args)
        out[3].fill_(fill)
        for t in out[:3]:
            t.fill_(float("nan"))
        del out
        again = FWD(*args)
        for what, a, b in zip(("output", "h_n", "c_n", "reserve"), first, again):
            assert torch.equal(a, b), f"{what} differs between identical calls"


@pytest.mark.parametrize("name", list(OPCHECK_CASES))
def test_opcheck_inference(name):
    """The reserve-free op (no autograd formula: its arguments need no gradient)."""
    case = dict(OPCHECK_CASES[name])
    T, B, I, H = (case.pop(k) for k in ("T", "B", "I", "H"))
    _opcheck(INF, layer_args(T, B, I, H, requires_grad=False, **case))


def test_opcheck_inference_non_contiguous_input():
    x, *rest = layer_args(4, 3, 2, 3, bidirectional=True, lengths=[4, 0, 2], requires_grad=False)
    x_nc = x.transpose(0, 1).contiguous().transpose(0, 1)
    assert not x_nc.is_contiguous()
    _opcheck(INF, (x_nc, *rest))


@pytest.mark.parametrize("partition", ["rows", "steps"])
@pytest.mark.parametrize("name", list(OPCHECK_CASES))
def test_inference_is_deterministic(name, partition, monkeypatch):
    """As test_forward_is_deterministic, for lstm_layer_inference: the padding is written.

    Against the training forward: bit for bit where each direction runs as one group of rows
    ("steps"). Split into groups ("rows", csrc/cpu/partition.h), the inference projects each
    group's inputs in GEMMs of fewer rows than the forward's one GEMM over all tokens, and
    MKL's results depend on a GEMM's row count when it is small: equal within rounding there.
    """
    monkeypatch.setenv("FASTLSTM_CPU_PARTITION", partition)
    case = dict(OPCHECK_CASES[name])
    T, B, I, H = (case.pop(k) for k in ("T", "B", "I", "H"))
    args = layer_args(T, B, I, H, requires_grad=False, **case)
    first = [t.clone() for t in INF(*args)]
    expected = FWD(*args)[:3]
    for what, a, e in zip(("output", "h_n", "c_n"), first, expected):
        if partition == "steps":
            assert torch.equal(a, e), f"{what}: inference differs from the forward"
        else:
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12 if a.dtype == torch.float64
                                       else 1e-6, msg=f"{what}: inference differs")
    for _ in range(3):
        out = INF(*args)
        for t in out:
            t.fill_(float("nan"))
        del out
        again = INF(*args)
        for what, a, b in zip(("output", "h_n", "c_n"), first, again):
            assert torch.equal(a, b), f"{what} differs between identical calls"


BACKWARD_GRADS = {  # which incoming gradients are given, and input_requires_grad
    "all": (True, True, True, True),
    "no_grad_output": (False, True, True, True),
    "only_grad_output": (True, False, False, True),
    "no_input_grad": (True, True, False, False),
}


@pytest.mark.parametrize("grads", list(BACKWARD_GRADS))
@pytest.mark.parametrize("name", ["uni_len0", "bi_proj", "bi_nobias_all0", "bi_f32_int32_lengths"])
def test_opcheck_backward(name, grads):
    case = dict(OPCHECK_CASES[name])
    T, B, I, H = (case.pop(k) for k in ("T", "B", "I", "H"))
    args = layer_args(T, B, I, H, requires_grad=False, **case)
    x, lengths, h0, c0, weights, has_b, has_p, bi = args
    out, h_n, c_n, reserve = FWD(*args)
    g_out, g_h, g_c, input_grad = BACKWARD_GRADS[grads]
    gen = torch.Generator().manual_seed(1)

    def maybe(t, on):
        return torch.randn(t.shape, generator=gen, dtype=F64).to(t.dtype) if on else None

    bargs = (maybe(out, g_out), maybe(h_n, g_h), maybe(c_n, g_c), x, lengths, h0, c0, weights,
             reserve, has_b, has_p, bi, input_grad)
    _opcheck(BWD, bargs)
    grad_input, grad_h0, grad_c0, grad_weights = BWD(*bargs)
    assert grad_input.shape == (x.shape if input_grad else (0,))
    assert grad_h0.shape == h0.shape and grad_c0.shape == c0.shape
    assert [g.shape for g in grad_weights] == [w.shape for w in weights]


# ---------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True).


class Net(nn.Module):
    """Linear -> fastlstm.LSTM(lengths=...) -> Linear."""

    def __init__(self, dtype=F64, **lstm_kwargs):
        super().__init__()
        self.inp = nn.Linear(3, 4, dtype=dtype)
        self.lstm = fastlstm.LSTM(4, 5, dtype=dtype, **lstm_kwargs)
        D = 2 if self.lstm.bidirectional else 1
        self.out = nn.Linear(D * (self.lstm.proj_size or 5), 3, dtype=dtype)

    def forward(self, x, lengths):
        y, (h, c) = self.lstm(torch.tanh(self.inp(x)), lengths=lengths)
        return self.out(y), h, c


def _run_net(net, x, lengths):
    x = x.clone().requires_grad_()
    net.zero_grad(set_to_none=True)
    y, h, c = net(x, lengths)
    gen = torch.Generator().manual_seed(2)
    g = [torch.randn(t.shape, generator=gen, dtype=F64).to(t.dtype) for t in (y, h, c)]
    ((y * g[0]).sum() + (h * g[1]).sum() + (c * g[2]).sum()).backward()
    return [y, h, c, x.grad] + [p.grad.clone() for p in net.parameters()]


def _compare_compiled(net, compiled, x, lengths):
    expected = _run_net(net, x, lengths)
    actual = _run_net(compiled, x, lengths)
    names = ["y", "h_n", "c_n", "grad_x"] + ["grad." + n for n, _ in net.named_parameters()]
    for name, a, e in zip(names, actual, expected):
        assert_close("compiled " + name, a, e)


LENGTH_VALUES = [[6, 0, 3, 2], [1, 6, 6, 0]]


@pytest.mark.parametrize("lengths_form", ["tensor", "list"])
@pytest.mark.parametrize("cfg", [
    dict(num_layers=2, bidirectional=True, proj_size=2),
    dict(num_layers=2, batch_first=True, dropout=0.0),
], ids=["bi2_proj", "uni2_bf"])
def test_compile_aot_eager(cfg, lengths_form):
    from torch._dynamo.testing import CompileCounterWithBackend
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = Net(**cfg)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(net, backend=counter, fullgraph=True)
    gen = torch.Generator().manual_seed(0)
    shape = (4, 6, 3) if cfg.get("batch_first") else (6, 4, 3)
    x = torch.randn(*shape, generator=gen, dtype=F64)
    for values in LENGTH_VALUES:
        lengths = torch.tensor(values) if lengths_form == "tensor" else list(values)
        _compare_compiled(net, compiled, x, lengths)
    assert counter.frame_count >= 1
    if lengths_form == "tensor":
        # New length values in a tensor of the same shape must not need a new graph.
        assert counter.frame_count == 1, counter.frame_count


def test_compile_aot_eager_judged_by_nn_lstm():
    """The compiled module alone, against nn.LSTM (packed)."""
    torch._dynamo.reset()
    ref, fast = make_pair(3, 4, F64, num_layers=2, bidirectional=True)
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 3, generator=gen, dtype=F64)
    lengths = [5, 0, 2]
    out, (h_n, c_n) = compiled(x, lengths=torch.tensor(lengths))
    with torch.no_grad():
        e_out, e_h, e_c = reference_forward(ref, x, lengths)
    assert_close("compiled output", out, e_out)
    assert_close("compiled h_n", h_n, e_h)
    assert_close("compiled c_n", c_n, e_c)


@pytest.mark.slow
def test_compile_inductor():
    """Default backend (inductor; compiles the Linear layers with gcc, ~20 s cold on 2 cores)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = Net(num_layers=2, bidirectional=True, proj_size=2)
    compiled = torch.compile(net, fullgraph=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 3, generator=gen, dtype=F64)
    for values in LENGTH_VALUES:
        _compare_compiled(net, compiled, x, torch.tensor(values))


def test_compile_inference_fullgraph():
    """Under no_grad the compiled graph holds the reserve-free op, and agrees with eager."""
    from torch._dynamo.testing import CompileCounterWithBackend
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = Net(num_layers=2, bidirectional=True, proj_size=2)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(net, backend=counter, fullgraph=True)
    x = torch.randn(6, 4, 3, dtype=F64)
    lengths = torch.tensor([6, 0, 3, 2])
    with torch.no_grad():
        expected = net(x, lengths)
        actual = compiled(x, lengths)
    for name, a, e in zip(("y", "h_n", "c_n"), actual, expected):
        assert_close("compiled no_grad " + name, a, e)
    graph_ops = {str(n.target) for g in counter.graphs for n in g.graph.nodes
                 if n.op == "call_function"}
    assert any("lstm_layer_inference" in t for t in graph_ops), graph_ops
    assert not any("lstm_layer_forward" in t for t in graph_ops), graph_ops
