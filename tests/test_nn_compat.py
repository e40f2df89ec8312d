"""nn.LSTM is the judge of what fails and how: constructor checks, the exception types of
forward errors, the fake kernels' exception types against the native ops', lengths snapshots
for the backward, numpy lengths."""

import re

import numpy as np
import pytest
import torch
from torch import nn

import fastlstm
from fastlstm import _ops

# --------------------------------------------------------------------------------------------
# Constructor: the same failing arguments fail with the same exception type as nn.LSTM.
# --------------------------------------------------------------------------------------------

CTOR_CASES = {
    "bias='x'": dict(bias="x"), "bias=0": dict(bias=0), "bias=1": dict(bias=1),
    "bias=None": dict(bias=None),
    "batch_first='False'": dict(batch_first="False"), "batch_first=1": dict(batch_first=1),
    "batch_first=0": dict(batch_first=0),
    "input_size=0": dict(input_size=0), "input_size=-1": dict(input_size=-1),
    "input_size=3.0": dict(input_size=3.0), "input_size='3'": dict(input_size="3"),
    "input_size=None": dict(input_size=None),
    "hidden_size=0": dict(hidden_size=0), "hidden_size=-1": dict(hidden_size=-1),
    "hidden_size=3.0": dict(hidden_size=3.0), "hidden_size='10'": dict(hidden_size="10"),
    "num_layers=0": dict(num_layers=0), "num_layers=-2": dict(num_layers=-2),
    "num_layers=2.0": dict(num_layers=2.0), "num_layers='2'": dict(num_layers="2"),
    "num_layers=None": dict(num_layers=None),
    "proj_size=-1": dict(proj_size=-1), "proj_size=4": dict(proj_size=4),
    "proj_size=9": dict(proj_size=9), "proj_size=1.0": dict(proj_size=1.0),
    "proj_size='1'": dict(proj_size="1"), "proj_size=None": dict(proj_size=None),
    "dropout=2": dict(dropout=2), "dropout=-0.1": dict(dropout=-0.1),
    "dropout=True": dict(dropout=True), "dropout='0.1'": dict(dropout="0.1"),
    "dropout='x'": dict(dropout="x"), "dropout=None": dict(dropout=None),
    "dropout=[0.1]": dict(dropout=[0.1]),
    "dtype=int64": dict(dtype=torch.int64),
    # accepted by both (nn.LSTM does not check these)
    "input_size=True": dict(input_size=True), "bidirectional=1": dict(bidirectional=1),
    "bidirectional='x'": dict(bidirectional="x"), "dropout=1": dict(dropout=1),
}


def _construct(cls, kw):
    args = dict(input_size=3, hidden_size=4, num_layers=2)
    args.update(kw)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(**args)


def _outcome(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 (the type is what we compare)
        return e
    return None


def _nn_lstm_checks_flags_and_input_size():
    """torch 2.10's nn.LSTM checks neither bias/batch_first's types nor input_size (torch 2.11
    added both); fastlstm.LSTM checks them on every torch (batch_first="False" would act as
    True), so there it raises where nn.LSTM accepts, or fails later with a RuntimeError."""
    try:
        nn.LSTM(0, 1, bias=0, device="meta")
    except (TypeError, ValueError):
        return True
    return False


OUR_EXTRA_CHECKS = r"(bias|batch_first) should be of type bool|input_size (should be|must be)"


@pytest.mark.parametrize("kw", list(CTOR_CASES.values()), ids=list(CTOR_CASES))
def test_constructor_fails_like_nn_lstm(kw):
    theirs = _outcome(lambda: _construct(nn.LSTM, kw))
    ours = _outcome(lambda: _construct(fastlstm.LSTM, kw))
    if (not _nn_lstm_checks_flags_and_input_size() and ours is not None and
            re.match(OUR_EXTRA_CHECKS, str(ours)) and
            (theirs is None or isinstance(theirs, RuntimeError))):
        return  # torch 2.10: a check of fastlstm.LSTM's that this nn.LSTM lacks
    if theirs is None:
        assert ours is None, f"nn.LSTM accepts {kw}, fastlstm.LSTM raised {ours!r}"
        return
    assert ours is not None, f"nn.LSTM raises {theirs!r} for {kw}, fastlstm.LSTM accepted it"
    assert type(ours) is type(theirs), (kw, ours, theirs)
    # Our message starts with nn.LSTM's own where nn.LSTM raises one of its checks.
    if "should be" in str(theirs) or "must be greater" in str(theirs) or \
            "smaller than" in str(theirs):
        assert str(ours).startswith(str(theirs)), (str(ours), str(theirs))


def test_constructor_values_named():
    # Our messages add the value received where nn.LSTM's do not.
    with pytest.raises(ValueError, match=r"input_size must be greater than zero, got 0"):
        fastlstm.LSTM(0, 4)
    with pytest.raises(ValueError, match=r"hidden_size must be greater than zero, got -1"):
        fastlstm.LSTM(3, -1)
    with pytest.raises(ValueError, match=r"proj_size .* smaller than hidden_size \(4\), got 4"):
        fastlstm.LSTM(3, 4, proj_size=4)


def test_batch_first_string_is_not_true():
    # batch_first="False" used to be accepted and behave as batch_first=True.
    with pytest.raises(TypeError, match="batch_first should be of type bool, got: str"):
        fastlstm.LSTM(3, 4, batch_first="False")


# --------------------------------------------------------------------------------------------
# Forward errors: catchable as the exception type nn.LSTM raises, message still ours.
# --------------------------------------------------------------------------------------------

def _x(dtype=torch.float32):
    return torch.randn(5, 2, 3, dtype=dtype)


def _with_weight(m, name, convert):
    setattr(m, name, nn.Parameter(convert(getattr(m, name).detach())))
    return m


FORWARD_CASES = {
    # name: (call, what our message must name)
    "input-dtype": (lambda m: m(_x(torch.float64)), r"input.*float32.*got torch\.float64"),
    "input-int": (lambda m: m(torch.ones(5, 2, 3, dtype=torch.int64)), r"input.*int64"),
    "input-4d": (lambda m: m(torch.randn(5, 2, 3, 1)), r"2D or 3D, got 4D"),
    "input-1d": (lambda m: m(torch.randn(5)), r"2D or 3D, got 1D"),
    "input-size": (lambda m: m(torch.randn(5, 2, 4)), r"input_size.*Expected 3, got 4"),
    "input-size-unbatched": (lambda m: m(torch.randn(5, 4)), r"input_size.*Expected 3, got 4"),
    "h0-batch": (lambda m: m(_x(), (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4))),
                 r"h_0.*\(1, 2, 4\).*got \(1, 3, 4\)"),
    "c0-hidden": (lambda m: m(_x(), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 5))),
                  r"c_0.*\(1, 2, 4\).*got \(1, 2, 5\)"),
    "h0-2d-batched": (lambda m: m(_x(), (torch.zeros(2, 4), torch.zeros(1, 2, 4))),
                      r"h_0.*3-D.*got 2-D"),
    "c0-3d-unbatched": (lambda m: m(torch.randn(5, 3), (torch.zeros(1, 4), torch.zeros(1, 1, 4))),
                        r"c_0.*2-D.*got 3-D"),
    "h0-dtype": (lambda m: m(_x(), (torch.zeros(1, 2, 4, dtype=torch.float64),
                                    torch.zeros(1, 2, 4))), r"h_0.*float32.*got torch\.float64"),
    "c0-dtype": (lambda m: m(_x(), (torch.zeros(1, 2, 4),
                                    torch.zeros(1, 2, 4, dtype=torch.float64))),
                 r"c_0.*float32.*got torch\.float64"),
    "h0-device": (lambda m: m(_x(), (torch.zeros(1, 2, 4, device="meta"), torch.zeros(1, 2, 4))),
                  r"h_0.*device cpu.*got meta"),
    "weight-dtype": (lambda m: _with_weight(m, "weight_hh_l0", lambda w: w.double())(_x()),
                     r"weight_hh_l0.*float32.*got torch\.float64"),
    "packed-h0-batch": (lambda m: m(nn.utils.rnn.pack_padded_sequence(_x(), [5, 3]),
                                    (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4))),
                        r"h_0.*\(1, 2, 4\).*got \(1, 3, 4\)"),
}


@pytest.mark.parametrize("call,pattern", list(FORWARD_CASES.values()), ids=list(FORWARD_CASES))
def test_forward_error_catchable_as_nn_lstm_error(call, pattern):
    torch.manual_seed(0)
    theirs = _outcome(lambda: call(nn.LSTM(3, 4)))
    ours = _outcome(lambda: call(fastlstm.LSTM(3, 4)))
    assert theirs is not None and ours is not None, (theirs, ours)
    # `except <nn.LSTM's type>` catches ours too.
    assert isinstance(ours, type(theirs)), f"{type(ours).__mro__} vs {type(theirs).__name__}"
    assert re.search(pattern, str(ours)), str(ours)


def test_old_exception_types_still_catch():
    # The types we raised before (ValueError for shapes and devices, TypeError for dtypes)
    # still catch the same errors.
    m = fastlstm.LSTM(3, 4)
    with pytest.raises(ValueError):
        m(torch.randn(5, 2, 4))
    with pytest.raises(TypeError):
        m(_x(torch.float64))
    with pytest.raises(ValueError):
        m(_x(), (torch.zeros(1, 2, 4, device="meta"), torch.zeros(1, 2, 4)))


# --------------------------------------------------------------------------------------------
# The fake kernel's checks (torch.compile, meta) raise the native op's exception types.
# --------------------------------------------------------------------------------------------

def _raw_cases():
    from test_bad_input import RAW_FWD_CASES
    return RAW_FWD_CASES


@pytest.mark.parametrize("kw,mutate,check", _raw_cases())
def test_fake_checks_raise_native_types(kw, mutate, check):
    from test_bad_input import call_fwd, fwd_args
    a = fwd_args(**kw)
    mutate(a)
    native = _outcome(lambda: call_fwd(a))
    fake = _outcome(lambda: _ops.check_layer_args(
        a["input"], a["lengths"], a["h0"], a["c0"], a["weights"], a["has_biases"],
        a["has_projections"], a["bidirectional"]))
    assert native is not None
    if fake is None:
        # Length values are read by the native op only (the fake cannot see them).
        assert "must lie in [0, T=" in str(native), native
        return
    # The native op raises ValueError for dtype errors (the stable ABI has no TypeError); the
    # fake's DTypeError is both a TypeError and a ValueError.
    assert isinstance(fake, type(native)), (fake, native)


# --------------------------------------------------------------------------------------------
# lengths: snapshot for the backward, numpy arrays.
# --------------------------------------------------------------------------------------------

def _grads(mutate):
    torch.manual_seed(0)
    m = fastlstm.LSTM(3, 4, bidirectional=True).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                    requires_grad=True)
    lengths = torch.tensor([5, 3])
    out, (h, c) = m(x, lengths=lengths)
    mutate(lengths)
    loss = out.sum() + h.sum() + c.sum()
    return torch.autograd.grad(loss, [x] + list(m.parameters()))


@pytest.mark.parametrize("how", ["inplace", "through-numpy"])
def test_changing_lengths_after_forward_does_not_change_gradients(how):
    expected = _grads(lambda lengths: None)

    def mutate(lengths):
        if how == "inplace":
            lengths[1] = 5                  # used to fail the autograd version check
        else:
            lengths.numpy()[1] = 5          # used to change the gradients silently
    got = _grads(mutate)
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint8, np.uint64])
def test_numpy_lengths_accepted(dtype):
    torch.manual_seed(0)
    m = fastlstm.LSTM(3, 4)
    x = torch.randn(5, 3, 3)
    lengths = np.array([5, 2, 4], dtype=dtype)
    out, (h, c) = m(x, lengths=lengths)
    ref_out, (ref_h, ref_c) = m(x, lengths=[5, 2, 4])
    assert torch.equal(out, ref_out) and torch.equal(h, ref_h) and torch.equal(c, ref_c)
    # pack_padded_sequence takes the same array
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    assert torch.equal(m(packed)[1][0], h)


@pytest.mark.parametrize("lengths,exc,pattern", [
    (np.array([5.0, 2.0]), TypeError, r"lengths.*integers.*float64"),
    (np.array([True, False]), TypeError, r"lengths.*integers.*bool"),
    (np.array([[5, 2]]), ValueError, r"lengths.*1-D.*\(1, 2\)"),
    (np.array([5, 6]), ValueError, r"lengths.*\[0, T=5\].*lengths\[1\] = 6"),
    (np.array([5, -1]), ValueError, r"lengths.*\[0, T=5\].*lengths\[1\] = -1"),
    (np.array([5, 2**64 - 1], dtype=np.uint64), ValueError, r"lengths.*\[0, T=5\]"),
    (np.array([5, 2, 1]), ValueError, r"lengths.*\(2\).*got 3"),
])
def test_bad_numpy_lengths(lengths, exc, pattern):
    m = fastlstm.LSTM(3, 4)
    with pytest.raises(exc, match=pattern):
        m(torch.randn(5, 2, 3), lengths=lengths)
