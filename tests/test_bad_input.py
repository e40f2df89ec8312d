"""Bad input to fastlstm.LSTM and to the raw ops torch.ops.fastlstm.lstm_layer_{forward,backward}.

Every case must raise a specific Python exception (ValueError / TypeError; NotImplementedError and
friends are RuntimeError subclasses and would not pass) whose message names the argument and
shows what was expected and what was received. Never a crash, a hang or a silent wrong answer.

Cases that can kill the interpreter are in test_no_crash.py (run in a child process).
"""

import re

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastlstm

T, B, I, H = 5, 2, 3, 4
LSTM_FWD = torch.ops.fastlstm.lstm_layer_forward
LSTM_BWD = torch.ops.fastlstm.lstm_layer_backward
HAS_CUDA = torch.cuda.is_available()


def expect(exc_type, *patterns):
    """Checker: raises exactly exc_type (or a subclass), message matches every regex."""
    def check(fn):
        with pytest.raises(exc_type) as info:
            fn()
        msg = str(info.value)
        for p in patterns:
            assert re.search(p, msg), f"message {msg!r} does not match {p!r}"
        return msg
    return check


# --------------------------------------------------------------------------------------------
# fastlstm.LSTM
# --------------------------------------------------------------------------------------------

def _model(**kw):
    torch.manual_seed(0)
    return fastlstm.LSTM(I, H, **kw)


def _x():
    return torch.randn(T, B, I)


def _hx(h_shape=(1, B, H), c_shape=(1, B, H), **kw):
    return (torch.zeros(h_shape, **kw), torch.zeros(c_shape, **kw))


def _packed():
    return pack_padded_sequence(_x(), [5, 3])


MODULE_CASES = [
    # ---- lengths values
    pytest.param(lambda m: m(_x(), lengths=[6, 3]),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"lengths\[0\] = 6"),
                 id="length>T"),
    pytest.param(lambda m: m(_x(), lengths=[5, -1]),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"lengths\[1\] = -1"),
                 id="negative-length"),
    pytest.param(lambda m: m(_x(), lengths=torch.tensor([5, 6])),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"lengths\[1\] = 6"),
                 id="length>T-tensor"),
    pytest.param(lambda m: m(_x(), lengths=torch.tensor([-3, 2], dtype=torch.int32)),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"lengths\[0\] = -3"),
                 id="negative-length-int32-tensor"),
    pytest.param(lambda m: m(torch.randn(0, B, I), lengths=[1, 0]),
                 expect(ValueError, r"lengths", r"\[0, T=0\]", r"lengths\[0\] = 1"),
                 id="length>T-with-T=0"),
    pytest.param(lambda m: m(torch.randn(T, I), lengths=[6]),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"= 6"),
                 id="length>T-unbatched"),
    # ---- lengths count
    pytest.param(lambda m: m(_x(), lengths=[5]),
                 expect(ValueError, r"lengths", r"one entry per sequence \(2\)", r"got 1"),
                 id="too-few-lengths"),
    pytest.param(lambda m: m(_x(), lengths=torch.tensor([5, 3, 1])),
                 expect(ValueError, r"lengths", r"\(2\)", r"got 3"),
                 id="too-many-lengths-tensor"),
    pytest.param(lambda m: m(_x(), lengths=[]),
                 expect(ValueError, r"lengths", r"\(2\)", r"got 0"),
                 id="empty-lengths"),
    pytest.param(lambda m: m(torch.randn(T, I), lengths=[5, 3]),
                 expect(ValueError, r"lengths", r"\(1\)", r"got 2"),
                 id="two-lengths-unbatched"),
    pytest.param(lambda m: m(torch.randn(T, 0, I), lengths=[1]),
                 expect(ValueError, r"lengths", r"\(0\)", r"got 1"),
                 id="lengths-for-empty-batch"),
    # ---- lengths type / dtype / rank
    pytest.param(lambda m: m(_x(), lengths=[5.0, 3.0]),
                 expect(TypeError, r"lengths", r"integers", r"5\.0", r"float"),
                 id="float-lengths"),
    pytest.param(lambda m: m(_x(), lengths=[5, 2.5]),
                 expect(TypeError, r"lengths", r"integers", r"lengths\[1\] = 2\.5"),
                 id="one-float-length"),
    pytest.param(lambda m: m(_x(), lengths=[True, False]),
                 expect(TypeError, r"lengths", r"integers", r"True", r"bool"),
                 id="bool-lengths"),
    pytest.param(lambda m: m(_x(), lengths=torch.tensor([5.0, 3.0])),
                 expect(TypeError, r"lengths", r"integers", r"torch\.float32"),
                 id="float-tensor-lengths"),
    pytest.param(lambda m: m(_x(), lengths=torch.tensor([True, True])),
                 expect(TypeError, r"lengths", r"integers", r"torch\.bool"),
                 id="bool-tensor-lengths"),
    pytest.param(lambda m: m(_x(), lengths=torch.tensor([5, 3], dtype=torch.complex64)),
                 expect(TypeError, r"lengths", r"integers", r"torch\.complex64"),
                 id="complex-tensor-lengths"),
    pytest.param(lambda m: m(_x(), lengths=["5", "3"]),
                 expect(TypeError, r"lengths", r"integers", r"'5'", r"str"),
                 id="string-lengths"),
    pytest.param(lambda m: m(_x(), lengths="53"),
                 expect(TypeError, r"lengths", r"list, tuple or integer tensor", r"got str"),
                 id="lengths-a-string"),
    pytest.param(lambda m: m(_x(), lengths=5),
                 expect(TypeError, r"lengths", r"list, tuple or integer tensor", r"got int"),
                 id="lengths-an-int"),
    pytest.param(lambda m: m(_x(), lengths={5, 3}),
                 expect(TypeError, r"lengths", r"got set"),
                 id="lengths-a-set"),
    pytest.param(lambda m: m(_x(), lengths=[[5], [3]]),
                 expect(TypeError, r"lengths", r"integers", r"\[5\]", r"list"),
                 id="nested-lengths"),
    pytest.param(lambda m: m(_x(), lengths=torch.tensor([[5, 3]])),
                 expect(ValueError, r"lengths", r"1-D", r"\(1, 2\)"),
                 id="2d-lengths"),
    pytest.param(lambda m: m(_x(), lengths=torch.tensor(5)),
                 expect(ValueError, r"lengths", r"1-D", r"shape \(\)"),
                 id="0d-lengths"),
    # Unbatched input turns non-tensor lengths into a list first: an int must still give a
    # message about `lengths`, not Python's "'int' object is not iterable".
    pytest.param(lambda m: m(torch.randn(T, I), lengths=5),
                 expect(TypeError, r"lengths", r"int"),
                 id="lengths-an-int-unbatched"),
    # ---- input
    pytest.param(lambda m: m(torch.randn(T, B, I + 1)),
                 expect(ValueError, r"input", r"Expected 3", r"got 4"),
                 id="wrong-feature-size"),
    pytest.param(lambda m: m(torch.randn(T, I + 2)),
                 expect(ValueError, r"input", r"Expected 3", r"got 5"),
                 id="wrong-feature-size-unbatched"),
    pytest.param(lambda m: m(torch.randn(T)),
                 expect(ValueError, r"input", r"2D or 3D", r"1D", r"\(5,\)"),
                 id="1d-input"),
    pytest.param(lambda m: m(torch.randn(T, B, I, 1)),
                 expect(ValueError, r"input", r"2D or 3D", r"4D", r"\(5, 2, 3, 1\)"),
                 id="4d-input"),
    pytest.param(lambda m: m(torch.tensor(1.0)),
                 expect(ValueError, r"input", r"2D or 3D", r"0D"),
                 id="0d-input"),
    pytest.param(lambda m: m([[1.0, 2.0, 3.0]]),
                 expect(TypeError, r"input", r"Tensor or a PackedSequence", r"got list"),
                 id="input-a-list"),
    pytest.param(lambda m: m(None),
                 expect(TypeError, r"input", r"Tensor", r"NoneType"),
                 id="input-None"),
    pytest.param(lambda m: m(torch.ones(T, B, I, dtype=torch.int64)),
                 expect(TypeError, r"input", r"floating-point", r"torch\.int64"),
                 id="integer-input"),
    pytest.param(lambda m: m(torch.ones(T, B, I, dtype=torch.bool)),
                 expect(TypeError, r"input", r"floating-point", r"torch\.bool"),
                 id="bool-input"),
    pytest.param(lambda m: m(_x().double()),
                 expect(TypeError, r"input", r"torch\.float32", r"got torch\.float64"),
                 id="input-weight-dtype-mismatch"),
    pytest.param(lambda m: m.double()(_x()),
                 expect(TypeError, r"input", r"torch\.float64", r"got torch\.float32"),
                 id="input-weight-dtype-mismatch-double-module"),
    # ---- hx, batched
    pytest.param(lambda m: m(_x(), _hx(h_shape=(1, B, H + 1))),
                 expect(ValueError, r"h_0", r"\(1, 2, 4\)", r"got \(1, 2, 5\)"),
                 id="h0-wrong-shape"),
    pytest.param(lambda m: m(_x(), _hx(c_shape=(1, B + 1, H))),
                 expect(ValueError, r"c_0", r"\(1, 2, 4\)", r"got \(1, 3, 4\)"),
                 id="c0-wrong-shape"),
    pytest.param(lambda m: m(_x(), _hx(h_shape=(2, B, H))),
                 expect(ValueError, r"h_0", r"\(1, 2, 4\)", r"got \(2, 2, 4\)"),
                 id="h0-wrong-num-layers"),
    pytest.param(lambda m: m(_x(), _hx(h_shape=(B, H))),
                 expect(ValueError, r"h_0", r"3-D", r"got 2-D", r"\(2, 4\)"),
                 id="h0-2d-for-batched"),
    pytest.param(lambda m: m(_x(), _hx(c_shape=(1, 1, B, H))),
                 expect(ValueError, r"c_0", r"3-D", r"got 4-D", r"\(1, 1, 2, 4\)"),
                 id="c0-4d-for-batched"),
    # ---- hx, unbatched
    pytest.param(lambda m: m(torch.randn(T, I), _hx(h_shape=(1, 1, H), c_shape=(1, H))),
                 expect(ValueError, r"h_0", r"2-D", r"got 3-D", r"\(1, 1, 4\)"),
                 id="h0-3d-for-unbatched"),
    pytest.param(lambda m: m(torch.randn(T, I), _hx(h_shape=(1, H), c_shape=(H,))),
                 expect(ValueError, r"c_0", r"2-D", r"got 1-D", r"\(4,\)"),
                 id="c0-1d-for-unbatched"),
    pytest.param(lambda m: m(torch.randn(T, I), _hx(h_shape=(1, H + 2), c_shape=(1, H))),
                 expect(ValueError, r"h_0", r"\(1, 4\)", r"got \(1, 6\)"),
                 id="h0-wrong-shape-unbatched"),
    pytest.param(lambda m: m(torch.randn(T, I), _hx(h_shape=(1, H), c_shape=(1, H + 1))),
                 expect(ValueError, r"c_0", r"\(1, 4\)", r"got \(1, 5\)"),
                 id="c0-wrong-shape-unbatched"),
    # ---- hx container
    pytest.param(lambda m: m(_x(), torch.zeros(1, B, H)),
                 expect(TypeError, r"hx", r"tuple \(h_0, c_0\) of two tensors", r"got Tensor"),
                 id="hx-a-tensor"),
    pytest.param(lambda m: m(_x(), _hx()[:1]),
                 expect(TypeError, r"hx", r"two tensors", r"got .*\b1\b"),
                 id="hx-1-tuple"),
    pytest.param(lambda m: m(_x(), _hx() + _hx()[:1]),
                 expect(TypeError, r"hx", r"two tensors", r"got .*\b3\b"),
                 id="hx-3-tuple"),
    pytest.param(lambda m: m(_x(), (torch.zeros(1, B, H), None)),
                 expect(TypeError, r"hx", r"two tensors", r"got .*None"),
                 id="hx-with-None"),
    # ---- hx dtype
    pytest.param(lambda m: m(_x(),
                             (torch.zeros(1, B, H, dtype=torch.float64), torch.zeros(1, B, H))),
                 expect(TypeError, r"h_0", r"torch\.float32", r"got torch\.float64"),
                 id="h0-dtype-mismatch"),
    pytest.param(lambda m: m(_x(),
                             (torch.zeros(1, B, H), torch.zeros(1, B, H, dtype=torch.float16))),
                 expect(TypeError, r"c_0", r"torch\.float32", r"got torch\.float16"),
                 id="c0-dtype-mismatch"),
    # ---- devices ('meta' stands in for a second device)
    pytest.param(lambda m: m(_x().to("meta")),
                 expect(ValueError, r"input", r"device cpu", r"got meta"),
                 id="input-on-meta"),
    pytest.param(lambda m: m(_x(), (torch.zeros(1, B, H, device="meta"), torch.zeros(1, B, H))),
                 expect(ValueError, r"h_0", r"device cpu", r"got meta"),
                 id="h0-on-meta"),
    pytest.param(lambda m: m(_x(), (torch.zeros(1, B, H), torch.zeros(1, B, H, device="meta"))),
                 expect(ValueError, r"c_0", r"device cpu", r"got meta"),
                 id="c0-on-meta"),
    pytest.param(lambda m: m(_x(), lengths=torch.tensor([5, 3], device="meta")),
                 expect(ValueError, r"lengths", r"CPU or on the input's device cpu", r"got meta"),
                 id="lengths-on-meta"),
    pytest.param(lambda m: m.to("meta")(torch.randn(T, B, I, device="meta"),
                                        lengths=torch.tensor([5, 3], device="meta").float()),
                 expect(TypeError, r"lengths", r"integers", r"float32"),
                 id="float-lengths-on-meta-module"),
    # ---- PackedSequence
    pytest.param(lambda m: m(_packed(), lengths=[5, 3]),
                 expect(ValueError, r"lengths", r"None", r"PackedSequence", r"got lengths"),
                 id="packed-with-lengths"),
    pytest.param(lambda m: m(_packed(), lengths=torch.tensor([5, 3])),
                 expect(ValueError, r"lengths", r"None", r"PackedSequence"),
                 id="packed-with-lengths-tensor"),
    pytest.param(lambda m: m(_packed(), _hx(h_shape=(1, 3, H))),
                 expect(ValueError, r"h_0", r"\(1, 2, 4\)", r"got \(1, 3, 4\)"),
                 id="packed-with-wrong-hx"),
]


@pytest.mark.parametrize("call,check", MODULE_CASES)
def test_module_bad_input(call, check):
    check(lambda: call(_model()))


BATCH_FIRST_CASES = [
    pytest.param(lambda m: m(torch.randn(B, T, I), lengths=[5, 3, 1]),
                 expect(ValueError, r"lengths", r"\(2\)", r"got 3"), id="bf-lengths-count"),
    pytest.param(lambda m: m(torch.randn(B, T, I), lengths=[5, 7]),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"lengths\[1\] = 7"),
                 id="bf-length>T"),
    pytest.param(lambda m: m(torch.randn(B, T, I), (torch.zeros(1, T, H), torch.zeros(1, B, H))),
                 expect(ValueError, r"h_0", r"\(1, 2, 4\)", r"got \(1, 5, 4\)"),
                 id="bf-h0-time-as-batch"),
]


@pytest.mark.parametrize("call,check", BATCH_FIRST_CASES)
def test_module_bad_input_batch_first(call, check):
    check(lambda: call(_model(batch_first=True)))


DEEP_CASES = [  # 2 layers, bidirectional, proj_size=2: h_0 [4, B, 2], c_0 [4, B, 4]
    pytest.param(lambda m: m(_x(), (torch.zeros(2, B, 2), torch.zeros(4, B, H))),
                 expect(ValueError, r"h_0", r"\(4, 2, 2\)", r"got \(2, 2, 2\)"),
                 id="deep-h0-layers"),
    pytest.param(lambda m: m(_x(), (torch.zeros(4, B, H), torch.zeros(4, B, H))),
                 expect(ValueError, r"h_0", r"\(4, 2, 2\)", r"got \(4, 2, 4\)"),
                 id="deep-h0-not-proj"),
    pytest.param(lambda m: m(_x(), (torch.zeros(4, B, 2), torch.zeros(4, B, 2))),
                 expect(ValueError, r"c_0", r"\(4, 2, 4\)", r"got \(4, 2, 2\)"), id="deep-c0-proj"),
    pytest.param(lambda m: m(_x(), lengths=[5, 6]),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"= 6"), id="deep-length>T"),
]


@pytest.mark.parametrize("call,check", DEEP_CASES)
def test_module_bad_input_deep(call, check):
    torch.manual_seed(0)
    check(lambda: call(fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2)))


def _with_param(name, convert):
    m = _model()
    setattr(m, name, torch.nn.Parameter(convert(getattr(m, name).detach())))
    return m


def test_module_other_weight_dtype_mismatch():
    # A module whose parameters disagree is named by the parameter at fault.
    m = _with_param("weight_hh_l0", lambda w: w.double())
    expect(TypeError, r"weight_hh_l0", r"float32", r"got torch.float64")(lambda: m(_x()))


def test_module_other_weight_device_mismatch():
    # weight_hh_l0 on another device than input and weight_ih_l0: must raise, not return
    # uninitialised memory.
    m = _with_param("weight_hh_l0", lambda w: w.to("meta"))
    expect(ValueError, r"w_hh|weight_hh_l0", r"meta")(lambda: m(_x()))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("what", ["lengths", "h_0", "c_0"])
def test_module_cuda_tensor_with_cpu_input(what):
    m = _model()
    x = _x()
    h0, c0 = _hx()
    lengths = torch.tensor([5, 3])
    if what == "lengths":
        lengths = lengths.cuda()
    elif what == "h_0":
        h0 = h0.cuda()
    else:
        c0 = c0.cuda()
    expect(ValueError, what, r"cpu", r"cuda")(lambda: m(x, (h0, c0), lengths=lengths))


# --------------------------------------------------------------------------------------------
# Empty batches, T = 0, zero-length sequences: these are not errors.
# --------------------------------------------------------------------------------------------

CONFIGS = [
    pytest.param(dict(), id="plain"),
    pytest.param(dict(num_layers=2, bidirectional=True, proj_size=2), id="deep-bidir-proj"),
]


def _pair(cfg):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, **cfg).double()
    ours = fastlstm.LSTM(I, H, **cfg).double()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _state(cfg, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    D = 2 if cfg.get("bidirectional") else 1
    LD = cfg.get("num_layers", 1) * D
    Hout = cfg.get("proj_size", 0) or H
    h0 = torch.randn(LD, batch, Hout, dtype=torch.float64, generator=g, requires_grad=True)
    c0 = torch.randn(LD, batch, H, dtype=torch.float64, generator=g, requires_grad=True)
    return h0, c0, D * Hout


@pytest.mark.parametrize("cfg", CONFIGS)
def test_empty_batch_matches_nn_lstm(cfg):
    # nn.LSTM accepts B = 0 and returns empty outputs of the right shapes; so must fastlstm.
    ref, ours = _pair(cfg)
    x = torch.randn(T, 0, I, dtype=torch.float64, requires_grad=True)
    h0, c0, out = _state(cfg, 0)
    ro, (rh, rc) = ref(x, (h0, c0))
    for lengths in (None, [], torch.zeros(0, dtype=torch.int64)):
        o, (h, c) = ours(x, (h0, c0), lengths=lengths)
        assert o.shape == ro.shape == (T, 0, out)
        assert h.shape == rh.shape and c.shape == rc.shape
        (o.sum() + h.sum() + c.sum()).backward()
        assert x.grad.shape == x.shape and h0.grad.shape == h0.shape
    o, _ = ours(x)  # hx = None
    assert o.shape == (T, 0, out)


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("batch", [0, 3])
def test_zero_time_steps(cfg, batch):
    # nn.LSTM raises RuntimeError("Expected sequence length to be larger than 0 in RNN") for
    # T = 0. fastlstm treats it as a batch of zero-length sequences: empty output and
    # (h_n, c_n) = (h_0, c_0), gradients passed straight through. Pin both behaviours.
    ref, ours = _pair(cfg)
    x = torch.randn(0, batch, I, dtype=torch.float64, requires_grad=True)
    h0, c0, out = _state(cfg, batch)
    with pytest.raises(RuntimeError, match="larger than 0"):
        ref(x, (h0, c0))
    o, (h, c) = ours(x, (h0, c0), lengths=[0] * batch)
    assert o.shape == (0, batch, out)
    assert torch.equal(h, h0) and torch.equal(c, c0)
    gh, gc = torch.randn_like(h), torch.randn_like(c)
    torch.autograd.backward([h, c], [gh, gc])
    assert torch.equal(h0.grad, gh) and torch.equal(c0.grad, gc)
    o, (h, c) = ours(x, (h0.detach(), c0.detach()))  # lengths = None
    assert o.shape == (0, batch, out) and torch.equal(h, h0) and torch.equal(c, c0)


def test_zero_time_steps_unbatched():
    _, ours = _pair({})
    h0, c0 = torch.randn(1, H, dtype=torch.float64), torch.randn(1, H, dtype=torch.float64)
    o, (h, c) = ours(torch.randn(0, I, dtype=torch.float64), (h0, c0))
    assert o.shape == (0, H) and torch.equal(h, h0) and torch.equal(c, c0)


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_all_zero_lengths(cfg, as_tensor):
    # Every sequence empty: output exactly 0, (h_n, c_n) = (h_0, c_0), weight grads 0,
    # grad h_0 = grad h_n.
    _, ours = _pair(cfg)
    x = torch.randn(T, 3, I, dtype=torch.float64, requires_grad=True)
    h0, c0, out = _state(cfg, 3)
    lengths = torch.zeros(3, dtype=torch.int64) if as_tensor else [0, 0, 0]
    o, (h, c) = ours(x, (h0, c0), lengths=lengths)
    assert o.shape == (T, 3, out)
    assert torch.count_nonzero(o) == 0
    assert torch.equal(h, h0) and torch.equal(c, c0)
    go, gh, gc = torch.randn_like(o), torch.randn_like(h), torch.randn_like(c)
    torch.autograd.backward([o, h, c], [go, gh, gc])
    assert torch.equal(h0.grad, gh) and torch.equal(c0.grad, gc)
    assert torch.count_nonzero(x.grad) == 0
    for p in ours.parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0


def test_some_zero_lengths_keep_h0():
    # Mixed batch: only the zero-length rows keep h_0, the others move.
    _, ours = _pair({})
    h0, c0, _ = _state({}, 3)
    o, (h, c) = ours(torch.randn(T, 3, I, dtype=torch.float64), (h0, c0), lengths=[0, 4, 0])
    assert torch.count_nonzero(o[:, 0]) == 0 and torch.count_nonzero(o[:, 2]) == 0
    assert torch.count_nonzero(o[4:, 1]) == 0 and torch.count_nonzero(o[:4, 1]) > 0
    assert torch.equal(h[:, [0, 2]], h0[:, [0, 2]]) and torch.equal(c[:, [0, 2]], c0[:, [0, 2]])
    assert not torch.equal(h[:, 1], h0[:, 1])


# --------------------------------------------------------------------------------------------
# Raw op: torch.ops.fastlstm.lstm_layer_forward
#
# The native ops are built on PyTorch's stable ABI, whose kernels cannot raise TypeError: a
# dtype error from a direct torch.ops.fastlstm call is a ValueError. (fastlstm.LSTM and
# fastlstm.functional check dtypes in Python first and raise TypeError subclasses there.)
# --------------------------------------------------------------------------------------------

def _weights(D=1, bias=True, proj=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    Ho = proj or H
    ws = []
    for _ in range(D):
        ws += [torch.randn(4 * H, I, generator=g), torch.randn(4 * H, Ho, generator=g)]
        if bias:
            ws += [torch.randn(4 * H, generator=g), torch.randn(4 * H, generator=g)]
        if proj:
            ws += [torch.randn(proj, H, generator=g)]
    return [w.to(dtype) for w in ws]


def fwd_args(D=1, bias=True, proj=0):
    """Valid arguments of lstm_layer_forward, as a dict in schema order."""
    Ho = proj or H
    return dict(input=torch.randn(T, B, I), lengths=torch.tensor([5, 3]),
                h0=torch.zeros(D, B, Ho), c0=torch.zeros(D, B, H),
                weights=_weights(D, bias, proj), has_biases=bias, has_projections=proj > 0,
                bidirectional=D == 2)


def call_fwd(a):
    return LSTM_FWD(a["input"], a["lengths"], a["h0"], a["c0"], a["weights"], a["has_biases"],
                    a["has_projections"], a["bidirectional"])


def _set(key, value):
    def mutate(a):
        a[key] = value(a) if callable(value) else value
    return mutate


def _set_weight(k, value):
    def mutate(a):
        a["weights"][k] = value(a["weights"][k]) if callable(value) else value
    return mutate


def test_raw_forward_valid_args_run():
    # The baseline every raw case below mutates must itself be accepted.
    for kw in (dict(), dict(D=2), dict(bias=False), dict(proj=2), dict(D=2, proj=2)):
        out, h_n, c_n, reserve = call_fwd(fwd_args(**kw))
        assert out.shape[:2] == (T, B) and reserve.dim() == 1


RAW_FWD_CASES = [
    # ---- weight count
    pytest.param({}, _set("weights", lambda a: a["weights"][:3]),
                 expect(ValueError, r"weights", r"4 tensors", r"got 3"), id="3-weights"),
    pytest.param({}, _set("weights", []),
                 expect(ValueError, r"weights", r"4 tensors", r"got 0"), id="no-weights"),
    pytest.param({}, _set("bidirectional", True),
                 expect(ValueError, r"weights", r"8 tensors", r"got 4"), id="bidir-flag-4-weights"),
    pytest.param({}, _set("has_biases", False),
                 expect(ValueError, r"weights", r"2 tensors", r"got 4"),
                 id="no-bias-flag-4-weights"),
    pytest.param({"proj": 2}, _set("has_projections", False),
                 expect(ValueError, r"weights", r"4 tensors", r"got 5"),
                 id="no-proj-flag-5-weights"),
    pytest.param({}, _set("has_projections", True),
                 expect(ValueError, r"weights", r"5 tensors", r"got 4"), id="proj-flag-4-weights"),
    # ---- weight shapes
    pytest.param({}, _set_weight(0, torch.randn(4 * H, I + 2)),
                 expect(ValueError, r"w_ih", r"\[16, 3\]", r"got \[16, 5\]"), id="w_ih-shape"),
    pytest.param({}, _set_weight(1, torch.randn(4 * H, H + 1)),
                 expect(ValueError, r"w_hh", r"\[16, 4\]", r"got \[16, 5\]"), id="w_hh-shape"),
    pytest.param({}, _set_weight(1, torch.randn(4 * H - 1, H)),
                 expect(ValueError, r"w_hh", r"4\*H", r"got \[15, 4\]"), id="w_hh-rows-not-4H"),
    pytest.param({}, _set_weight(1, torch.randn(4 * H)),
                 expect(ValueError, r"w_hh", r"2-D", r"got \[16\]"), id="w_hh-1d"),
    pytest.param({}, _set_weight(2, torch.randn(4 * H - 1)),
                 expect(ValueError, r"b_ih", r"\[16\]", r"got \[15\]"), id="b_ih-shape"),
    pytest.param({}, _set_weight(3, torch.randn(4 * H, 1)),
                 expect(ValueError, r"b_hh", r"\[16\]", r"got \[16, 1\]"), id="b_hh-2d"),
    pytest.param({"proj": 2}, _set_weight(4, torch.randn(2, H + 1)),
                 expect(ValueError, r"w_hr", r"\[2, 4\]", r"got \[2, 5\]"), id="w_hr-shape"),
    pytest.param({"D": 2}, _set_weight(4, torch.randn(4 * H, I + 4)),
                 expect(ValueError, r"w_ih_reverse", r"\[16, 3\]", r"got \[16, 7\]"),
                 id="w_ih_reverse-shape"),
    pytest.param({"D": 2}, _set_weight(7, torch.randn(4 * H + 4)),
                 expect(ValueError, r"b_hh_reverse", r"\[16\]", r"got \[20\]"),
                 id="b_hh_reverse-shape"),
    pytest.param({}, _set("input", torch.randn(T, B, I + 1)),
                 expect(ValueError, r"w_ih", r"\[16, 4\]", r"got \[16, 3\]"),
                 id="input-features-vs-w_ih"),
    # ---- weight dtype
    pytest.param({}, _set_weight(0, lambda w: w.double()),
                 expect(ValueError, r"w_ih", r"Float", r"got Double"), id="w_ih-dtype"),
    pytest.param({}, _set_weight(3, lambda w: w.half()),
                 expect(ValueError, r"b_hh", r"Float", r"got Half"), id="b_hh-dtype"),
    pytest.param({"D": 2}, _set_weight(4, lambda w: w.double()),
                 expect(ValueError, r"w_ih_reverse", r"Float", r"got Double"),
                 id="w_ih_reverse-dtype"),
    # ---- h0 / c0
    pytest.param({}, _set("h0", torch.zeros(1, B, H + 1)),
                 expect(ValueError, r"h0", r"\[1, 2, 4\]", r"got \[1, 2, 5\]"), id="h0-shape"),
    pytest.param({}, _set("h0", torch.zeros(1, B + 1, H)),
                 expect(ValueError, r"h0", r"\[1, 2, 4\]", r"got \[1, 3, 4\]"), id="h0-batch"),
    pytest.param({}, _set("h0", torch.zeros(2, B, H)),
                 expect(ValueError, r"h0", r"\[1, 2, 4\]", r"got \[2, 2, 4\]"), id="h0-directions"),
    pytest.param({}, _set("h0", torch.zeros(B, H)),
                 expect(ValueError, r"h0", r"3-D", r"got \[2, 4\]"), id="h0-2d"),
    pytest.param({}, _set("c0", torch.zeros(1, B, H - 1)),
                 expect(ValueError, r"c0", r"\[1, 2, 4\]", r"got \[1, 2, 3\]"), id="c0-shape"),
    pytest.param({}, _set("c0", torch.zeros(1, 1, B, H)),
                 expect(ValueError, r"c0", r"3-D", r"got \[1, 1, 2, 4\]"), id="c0-4d"),
    pytest.param({"D": 2}, _set("c0", torch.zeros(1, B, H)),
                 expect(ValueError, r"c0", r"\[2, 2, 4\]", r"got \[1, 2, 4\]"), id="c0-bidir"),
    # With projections Hout comes from h0; a wrong h0 must be blamed on h0, not on w_hh.
    pytest.param({"proj": 2}, _set("h0", torch.zeros(1, B, 3)),
                 expect(ValueError, r"h0", r"\[1, 2, 2\]", r"got \[1, 2, 3\]"), id="h0-shape-proj"),
    pytest.param({}, _set("h0", lambda a: a["h0"].double()),
                 expect(ValueError, r"h0", r"Float", r"got Double"), id="h0-dtype"),
    pytest.param({}, _set("c0", lambda a: a["c0"].double()),
                 expect(ValueError, r"c0", r"Float", r"got Double"), id="c0-dtype"),
    # ---- lengths
    pytest.param({}, _set("lengths", torch.tensor([6, 3])),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"lengths\[0\] = 6"), id="length>T"),
    pytest.param({}, _set("lengths", torch.tensor([5, -1])),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"lengths\[1\] = -1"),
                 id="negative-length"),
    pytest.param({}, _set("lengths", torch.tensor([10**9, 3])),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"= 1000000000"), id="length-1e9"),
    pytest.param({}, _set("lengths", torch.tensor([3, -2**40])),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"= -1099511627776"),
                 id="length--2**40"),
    pytest.param({}, _set("lengths", torch.tensor([200, 3], dtype=torch.uint8)),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"= 200"), id="length>T-uint8"),
    pytest.param({}, _set("lengths", torch.tensor([5.0, 3.0])),
                 expect(ValueError, r"lengths", r"integer", r"got Float"), id="float-lengths"),
    pytest.param({}, _set("lengths", torch.tensor([True, True])),
                 expect(ValueError, r"lengths", r"integer", r"got Bool"), id="bool-lengths"),
    pytest.param({}, _set("lengths", torch.tensor([[5, 3]])),
                 expect(ValueError, r"lengths", r"1-D", r"\[1, 2\]"), id="2d-lengths"),
    pytest.param({}, _set("lengths", torch.tensor(5)),
                 expect(ValueError, r"lengths", r"1-D", r"0-D"), id="0d-lengths"),
    pytest.param({}, _set("lengths", torch.tensor([5])),
                 expect(ValueError, r"lengths", r"\(2\)", r"got 1"), id="lengths-count"),
    # ---- input
    pytest.param({}, _set("input", torch.randn(T, I)),
                 expect(ValueError, r"input", r"3-D", r"got 2-D", r"\[5, 3\]"), id="2d-input"),
    pytest.param({}, _set("input", torch.randn(1, T, B, I)),
                 expect(ValueError, r"input", r"3-D", r"got 4-D"), id="4d-input"),
    pytest.param({}, _set("input", torch.ones(T, B, I, dtype=torch.int32)),
                 expect(ValueError, r"input", r"floating-point", r"got Int"), id="int-input"),
    # ---- devices: the CPU input with one argument on 'meta' must raise, not dispatch to the
    # fake kernel and hand back uninitialised CPU memory.
    pytest.param({}, _set("h0", lambda a: a["h0"].to("meta")),
                 expect(ValueError, r"h0", r"cpu", r"meta"), id="h0-on-meta"),
    pytest.param({}, _set("c0", lambda a: a["c0"].to("meta")),
                 expect(ValueError, r"c0", r"cpu", r"meta"), id="c0-on-meta"),
    pytest.param({}, _set_weight(1, lambda w: w.to("meta")),
                 expect(ValueError, r"w_hh", r"cpu", r"meta"), id="w_hh-on-meta"),
    pytest.param({}, _set("lengths", lambda a: a["lengths"].to("meta")),
                 expect(ValueError, r"lengths", r"cpu", r"meta"), id="lengths-on-meta"),
    pytest.param({}, _set("input", lambda a: a["input"].to("meta")),
                 expect(ValueError, r"h0|input", r"cpu", r"meta"), id="input-on-meta"),
]


@pytest.mark.parametrize("kw,mutate,check", RAW_FWD_CASES)
def test_raw_forward_bad_args(kw, mutate, check):
    a = fwd_args(**kw)
    mutate(a)
    check(lambda: call_fwd(a))


META_FWD_CASES = [  # every tensor on 'meta' (what torch.compile's fake kernel sees)
    pytest.param(_set("weights", lambda a: a["weights"][:1]),
                 expect(ValueError, r"weights", r"4 tensors", r"got 1"), id="meta-1-weight"),
    pytest.param(_set("h0", torch.zeros(1, B, 7, device="meta")),
                 expect(ValueError, r"h0", r"\[1, 2, 4\]", r"got \[1, 2, 7\]"), id="meta-h0-shape"),
    pytest.param(_set("input", torch.randn(T, I, device="meta")),
                 expect(ValueError, r"input", r"3-D", r"2-D"), id="meta-2d-input"),
]


@pytest.mark.parametrize("mutate,check", META_FWD_CASES)
def test_raw_forward_bad_args_on_meta(mutate, check):
    a = fwd_args()
    for k in ("input", "h0", "c0"):
        a[k] = a[k].to("meta")
    a["weights"] = [w.to("meta") for w in a["weights"]]
    call_fwd(a)  # valid arguments on meta: fine
    mutate(a)
    check(lambda: call_fwd(a))


# --------------------------------------------------------------------------------------------
# Raw op: torch.ops.fastlstm.lstm_layer_backward
# --------------------------------------------------------------------------------------------

def bwd_args(D=1, bias=True, proj=0):
    a = fwd_args(D, bias, proj)
    out, h_n, c_n, reserve = call_fwd(a)
    g = torch.Generator().manual_seed(2)
    a.update(grad_output=torch.randn(out.shape, generator=g),
             grad_h_n=torch.randn(h_n.shape, generator=g),
             grad_c_n=torch.randn(c_n.shape, generator=g), reserve=reserve,
             input_requires_grad=True)
    return a


def call_bwd(a):
    return LSTM_BWD(a["grad_output"], a["grad_h_n"], a["grad_c_n"], a["input"], a["lengths"],
                    a["h0"], a["c0"], a["weights"], a["reserve"], a["has_biases"],
                    a["has_projections"], a["bidirectional"], a["input_requires_grad"])


def test_raw_backward_valid_args_run():
    for kw in (dict(), dict(D=2, proj=2)):
        a = bwd_args(**kw)
        grad_input, grad_h0, grad_c0, grad_w = call_bwd(a)
        assert grad_input.shape == a["input"].shape and grad_h0.shape == a["h0"].shape
        assert [g.shape for g in grad_w] == [w.shape for w in a["weights"]]
        a.update(grad_output=None, grad_h_n=None, grad_c_n=None)
        call_bwd(a)


# Bytes, D * round64(N * (5H * 4 + Hout * 4)) for the default float32 bwd_args(), with
# N = 5 + 3 valid tokens (LayerDims::reserve_bytes_per_dir in csrc/lstm.h): one row per
# valid token, none for padding.
RESERVE = 768

RAW_BWD_CASES = [
    # ---- reserve
    pytest.param({}, _set("reserve", lambda a: a["reserve"][:-1]),
                 expect(ValueError, r"reserve", rf"\[{RESERVE}\]", rf"got \[{RESERVE - 1}\]"),
                 id="reserve-short"),
    pytest.param({}, _set("reserve", lambda a: torch.cat([a["reserve"], a["reserve"][:1]])),
                 expect(ValueError, r"reserve", rf"\[{RESERVE}\]", rf"got \[{RESERVE + 1}\]"),
                 id="reserve-long"),
    pytest.param({}, _set("reserve", torch.empty(0, dtype=torch.uint8)),
                 expect(ValueError, r"reserve", rf"\[{RESERVE}\]", r"got \[0\]"),
                 id="reserve-empty"),
    pytest.param({}, _set("lengths", torch.tensor([5, 5])),
                 expect(ValueError, r"reserve", r"10 valid tokens", rf"got \[{RESERVE}\]"),
                 id="reserve-of-other-lengths"),
    pytest.param({}, _set("reserve", lambda a: a["reserve"].view(2, -1)),
                 expect(ValueError, r"reserve", r"1-D", rf"got \[2, {RESERVE // 2}\]"),
                 id="reserve-2d"),
    pytest.param({}, _set("reserve", lambda a: a["reserve"].double()),
                 expect(ValueError, r"reserve", r"uint8", r"Double"), id="reserve-dtype"),
    pytest.param({}, _set("reserve", lambda a: torch.stack([a["reserve"]] * 2, 1)[:, 0]),
                 expect(ValueError, r"reserve", r"contiguous"), id="reserve-noncontiguous"),
    pytest.param({"D": 2, "proj": 2},
                 _set("reserve", lambda a: a["reserve"][:832]),
                 expect(ValueError, r"reserve", r"\[1664\]", r"got \[832\]"),
                 id="reserve-one-direction"),
    pytest.param({}, _set("reserve", lambda a: a["reserve"].to("meta")),
                 expect(ValueError, r"reserve", r"cpu", r"meta"), id="reserve-on-meta"),
    # ---- incoming gradients
    pytest.param({}, _set("grad_output", torch.randn(T, B, H + 1)),
                 expect(ValueError, r"grad_output", r"\[5, 2, 4\]", r"got \[5, 2, 5\]"),
                 id="grad_output-shape"),
    pytest.param({}, _set("grad_output", torch.randn(T + 1, B, H)),
                 expect(ValueError, r"grad_output", r"\[5, 2, 4\]", r"got \[6, 2, 4\]"),
                 id="grad_output-steps"),
    pytest.param({}, _set("grad_output", torch.randn(T, B)),
                 expect(ValueError, r"grad_output", r"\[5, 2, 4\]", r"got \[5, 2\]"),
                 id="grad_output-2d"),
    pytest.param({"D": 2}, _set("grad_output", torch.randn(T, B, H)),
                 expect(ValueError, r"grad_output", r"\[5, 2, 8\]", r"got \[5, 2, 4\]"),
                 id="grad_output-one-direction"),
    pytest.param({}, _set("grad_h_n", torch.randn(1, B, H + 1)),
                 expect(ValueError, r"grad_h_n", r"\[1, 2, 4\]", r"got \[1, 2, 5\]"),
                 id="grad_h_n-shape"),
    pytest.param({}, _set("grad_h_n", torch.randn(B, H)),
                 expect(ValueError, r"grad_h_n", r"\[1, 2, 4\]", r"got \[2, 4\]"),
                 id="grad_h_n-2d"),
    pytest.param({"proj": 2}, _set("grad_h_n", torch.randn(1, B, H)),
                 expect(ValueError, r"grad_h_n", r"\[1, 2, 2\]", r"got \[1, 2, 4\]"),
                 id="grad_h_n-proj"),
    pytest.param({}, _set("grad_c_n", torch.randn(2, B, H)),
                 expect(ValueError, r"grad_c_n", r"\[1, 2, 4\]", r"got \[2, 2, 4\]"),
                 id="grad_c_n-shape"),
    pytest.param({}, _set("grad_output", lambda a: a["grad_output"].double()),
                 expect(ValueError, r"grad_output", r"Float", r"got Double"),
                 id="grad_output-dtype"),
    pytest.param({}, _set("grad_c_n", lambda a: a["grad_c_n"].double()),
                 expect(ValueError, r"grad_c_n", r"Float", r"got Double"), id="grad_c_n-dtype"),
    # ---- the forward's arguments, checked again
    pytest.param({}, _set("lengths", torch.tensor([6, 3])),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"lengths\[0\] = 6"), id="length>T"),
    pytest.param({}, _set("lengths", torch.tensor([-2**40, 3])),
                 expect(ValueError, r"lengths", r"\[0, T=5\]", r"= -1099511627776"),
                 id="negative-length"),
    pytest.param({}, _set("lengths", torch.tensor([5.0, 3.0])),
                 expect(ValueError, r"lengths", r"integer", r"got Float"), id="float-lengths"),
    pytest.param({}, _set("lengths", torch.tensor([5, 3, 1])),
                 expect(ValueError, r"lengths", r"\(2\)", r"got 3"), id="lengths-count"),
    pytest.param({}, _set("weights", lambda a: a["weights"][:2]),
                 expect(ValueError, r"weights", r"4 tensors", r"got 2"), id="2-weights"),
    pytest.param({}, _set_weight(0, torch.randn(4 * H, I + 1)),
                 expect(ValueError, r"w_ih", r"\[16, 3\]", r"got \[16, 4\]"), id="w_ih-shape"),
    pytest.param({}, _set("h0", torch.zeros(1, B, H + 1)),
                 expect(ValueError, r"h0", r"\[1, 2, 4\]", r"got \[1, 2, 5\]"), id="h0-shape"),
    pytest.param({}, _set("c0", torch.zeros(1, B + 1, H)),
                 expect(ValueError, r"c0", r"\[1, 2, 4\]", r"got \[1, 3, 4\]"), id="c0-shape"),
    pytest.param({}, _set("input", torch.randn(T, I)),
                 expect(ValueError, r"input", r"3-D", r"got 2-D"), id="2d-input"),
    pytest.param({}, _set("bidirectional", True),
                 expect(ValueError, r"weights", r"8 tensors", r"got 4"), id="bidir-flag"),
]


@pytest.mark.parametrize("kw,mutate,check", RAW_BWD_CASES)
def test_raw_backward_bad_args(kw, mutate, check):
    a = bwd_args(**kw)
    mutate(a)
    check(lambda: call_bwd(a))


@pytest.mark.parametrize("kw, x_shape, hx_shapes", [
    pytest.param({}, (T, B, I), ((1, B, H + 1), (1, B, H)), id="h0-batched"),
    pytest.param({}, (T, B, I), ((1, B, H), (1, B + 1, H)), id="c0-batched"),
    pytest.param({"num_layers": 2, "bidirectional": True}, (T, B, I),
                 ((3, B, H), (4, B, H)), id="h0-deep-bi"),
    pytest.param({}, (T, I), ((1, H + 2), (1, H)), id="h0-unbatched"),
    pytest.param({}, (T, I), ((1, H), (1, H + 1)), id="c0-unbatched"),
    pytest.param({"proj_size": 2}, (T, B, I), ((1, B, H), (1, B, H)), id="h0-proj"),
])
def test_hx_size_message_starts_with_nn_lstm_words(kw, x_shape, hx_shapes):
    """A wrong hx size: nn.LSTM's exact message first (PyTorch's own tests match
    `Expected hidden.*size.*got`), then fastlstm's detail naming h_0 or c_0."""
    x = torch.randn(x_shape)
    hx = tuple(torch.zeros(s) for s in hx_shapes)
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, **kw)
    with pytest.raises(RuntimeError) as ref_info:
        ref(x, hx)
    with pytest.raises(RuntimeError) as info:
        fastlstm.LSTM(I, H, **kw)(x, hx)
    msg, ref_msg = str(info.value), str(ref_info.value)
    assert msg.startswith(ref_msg + ";"), f"{msg!r} does not start with nn.LSTM's {ref_msg!r}"
    assert re.search(r"Expected hidden.*size.*got", msg)
    wrong = "h_0" if "hidden[0]" in ref_msg else "c_0"
    assert re.search(rf"fastlstm: hx: {wrong} must have shape", msg), msg
