"""torch's own test suite for nn.LSTM, run on fastlstm.LSTM.

torch.testing._internal.common_modules.module_db holds nn.LSTM's ModuleInfo: the sample
inputs (constructor arguments, forward inputs, a reference function) and the error inputs
(arguments that must raise, with the exception type and message). Every sample is run on
fastlstm.LSTM and on nn.LSTM with the same weights; outputs and gradients must match. Every
error input must raise the exception type nn.LSTM raises (and nn.LSTM must still raise it:
the oracle is checked too). A sample that cannot apply is skipped with the reason; the count
of skipped cases is pinned in test_skip_count.
"""

import copy
import io
import pickle
import sys
import types
import unittest
import warnings

import pytest
import torch
from torch import nn

import fastlstm

# torch.testing._internal.common_utils imports expecttest (a test dependency of torch, not of
# torch itself); a stub with the two names it uses is enough for module_db's sample functions.
try:
    import expecttest  # noqa: F401
except ImportError:
    _stub = types.ModuleType("expecttest")
    _stub.TestCase = unittest.TestCase
    _stub.ACCEPT = False
    sys.modules["expecttest"] = _stub

from torch.testing._internal.common_modules import ModuleErrorEnum, module_db  # noqa: E402

LSTM_INFO = next(m for m in module_db if m.module_cls is nn.LSTM)
DEVICE = "cpu"

# Reasons, by sample, for samples that cannot apply to fastlstm.LSTM. Empty today: every
# nn.LSTM sample in torch 2.14's module_db applies. Keys are the ids built in _cases().
SKIPS = {}


def _samples(dtype, training):
    return LSTM_INFO.module_inputs_func(LSTM_INFO, device=DEVICE, dtype=dtype,
                                        requires_grad=True, training=training)


def _sample_id(i, s, dtype, training):
    kw = s.constructor_input.kwargs
    flags = "+".join(short for k, short in (("bias", "bias"), ("batch_first", "bf"),
                                            ("bidirectional", "bidir")) if kw.get(k))
    shape = "x".join(map(str, s.forward_input.args[0].shape))
    hx = "-hx" if len(s.forward_input.args) > 1 else ""
    return (f"{str(dtype)[6:]}-{'train' if training else 'eval'}-{i}-in{shape}{hx}"
            f"-p{kw.get('proj_size', 0)}-{flags or 'none'}")


def _cases():
    out = []
    for dtype in LSTM_INFO.dtypes:
        for training in (True, False):
            for i, s in enumerate(_samples(dtype, training)):
                sid = _sample_id(i, s, dtype, training)
                marks = [pytest.mark.skip(reason=SKIPS[sid])] if sid in SKIPS else []
                out.append(pytest.param(dtype, training, i, id=sid, marks=marks))
    return out


CASES = _cases()


def _pair(sample, dtype, training):
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    torch.manual_seed(0)
    ref = nn.LSTM(*args, **kwargs).to(DEVICE, dtype)
    torch.manual_seed(0)
    ours = fastlstm.LSTM(*args, **kwargs).to(DEVICE, dtype)
    # Same seed, same registration order, same initialisation: the weights already agree.
    for (n1, p1), (n2, p2) in zip(ref.named_parameters(), ours.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    ref.train(training)
    ours.train(training)
    return ref, ours


def _flat(out):
    """(output, (h, c)) -> [output, h, c]"""
    return [out[0], out[1][0], out[1][1]]


def _fresh_inputs(sample):
    """A copy of the sample's forward inputs as new leaves (each module gets its own)."""
    def leaf(t):
        return t.detach().clone().requires_grad_(t.requires_grad)
    args = []
    for a in sample.forward_input.args:
        if isinstance(a, torch.Tensor):
            args.append(leaf(a))
        elif isinstance(a, tuple):
            args.append(tuple(leaf(t) for t in a))
        else:
            args.append(a)
    return args, dict(sample.forward_input.kwargs)


def _leaves(args):
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, tuple):
            out.extend(a)
    return [t for t in out if t.requires_grad]


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype,training,index", CASES)
def test_sample_matches_nn_lstm(dtype, training, index):
    sample = _samples(dtype, training)[index]
    ref, ours = _pair(sample, dtype, training)
    results = []
    for m in (ref, ours):
        args, kwargs = _fresh_inputs(sample)
        outs = _flat(m(*args, **kwargs))
        gen = torch.Generator().manual_seed(3)
        grads_out = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]
        wrt = _leaves(args) + list(m.parameters())
        grads = torch.autograd.grad(outs, wrt, grads_out)
        results.append((outs, grads))
    (ref_outs, ref_grads), (outs, grads) = results
    assert len(ref_grads) == len(grads)
    for r, o in zip(ref_outs, outs):
        assert r.shape == o.shape and r.dtype == o.dtype
        torch.testing.assert_close(o, r, **_tol(dtype))
    for r, g in zip(ref_grads, grads):
        torch.testing.assert_close(g, r, **_tol(dtype))


@pytest.mark.parametrize("dtype,training,index", CASES)
def test_sample_reference_fn(dtype, training, index):
    # The sample's own reference: the unbatched input run as a batch of one.
    sample = _samples(dtype, training)[index]
    assert sample.reference_fn is not None
    _, ours = _pair(sample, dtype, training)
    args, kwargs = _fresh_inputs(sample)
    expected = _flat(sample.reference_fn(ours, *args, **kwargs))
    got = _flat(ours(*args, **kwargs))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, **_tol(dtype))


@pytest.mark.parametrize("dtype,training,index",
                         [c for c in CASES if c.values[0] == torch.float64 and c.values[1]])
def test_sample_gradcheck(dtype, training, index):
    # TestModule.test_grad: gradcheck on the inputs and every parameter (float64).
    sample = _samples(dtype, training)[index]
    _, ours = _pair(sample, dtype, training)
    args, kwargs = _fresh_inputs(sample)
    params = list(ours.parameters())
    names = [n for n, _ in ours.named_parameters()]
    leaves = _leaves(args)

    def fn(*flat):
        inputs, ps = flat[:len(leaves)], flat[len(leaves):]
        it = iter(inputs)
        call_args = [next(it) if isinstance(a, torch.Tensor) else
                     tuple(next(it) for _ in a) if isinstance(a, tuple) else a for a in args]
        out = torch.func.functional_call(ours, dict(zip(names, ps)), tuple(call_args), kwargs)
        return tuple(_flat(out))

    assert torch.autograd.gradcheck(fn, tuple(leaves) + tuple(params))


@pytest.mark.parametrize("dtype,training,index",
                         [c for c in CASES if c.values[0] == torch.float32 and c.values[1]])
def test_sample_non_contiguous_and_pickle(dtype, training, index):
    # TestModule.test_non_contiguous_tensors and test_pickle, in short.
    sample = _samples(dtype, training)[index]
    ref, ours = _pair(sample, dtype, training)
    args, kwargs = _fresh_inputs(sample)

    def non_contiguous(t):
        return torch.repeat_interleave(t.detach(), 2, dim=-1)[..., ::2]
    nc_args = [non_contiguous(a) if isinstance(a, torch.Tensor) else
               tuple(non_contiguous(t) for t in a) if isinstance(a, tuple) else a for a in args]
    assert not nc_args[0].is_contiguous()
    expected = _flat(ref(*nc_args, **kwargs))
    for e, g in zip(expected, _flat(ours(*nc_args, **kwargs))):
        torch.testing.assert_close(g, e, **_tol(dtype))
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for copy_ in (loaded, pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        assert type(copy_) is fastlstm.LSTM
        for e, g in zip(expected, _flat(copy_(*nc_args, **kwargs))):
            torch.testing.assert_close(g, e, **_tol(dtype))


def _error_cases():
    out = []
    for dtype in LSTM_INFO.dtypes:
        errors = LSTM_INFO.module_error_inputs_func(LSTM_INFO, device=DEVICE, dtype=dtype,
                                                    requires_grad=False, training=True)
        for i, e in enumerate(errors):
            out.append(pytest.param(dtype, i, id=f"{str(dtype)[6:]}-{i}-{e.error_regex[:40]}"))
    return out


def _run_error_input(cls, error_input):
    mi = error_input.module_error_input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if error_input.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
            cls(*mi.constructor_input.args, **mi.constructor_input.kwargs)
            return
        m = cls(*mi.constructor_input.args, **mi.constructor_input.kwargs)
    m(*mi.forward_input.args, **mi.forward_input.kwargs)


@pytest.mark.parametrize("dtype,index", _error_cases())
def test_error_input_raises_nn_lstm_type(dtype, index):
    error_input = LSTM_INFO.module_error_inputs_func(LSTM_INFO, device=DEVICE, dtype=dtype,
                                                     requires_grad=False, training=True)[index]
    # The oracle: nn.LSTM raises exactly this.
    with pytest.raises(error_input.error_type, match=error_input.error_regex) as theirs:
        _run_error_input(nn.LSTM, error_input)
    assert type(theirs.value) is error_input.error_type
    with pytest.raises(error_input.error_type, match=error_input.error_regex) as ours:
        _run_error_input(fastlstm.LSTM, error_input)
    if error_input.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
        assert type(ours.value) is error_input.error_type


def test_skip_count():
    # Cases that run: 32 samples x 2 dtypes x train/eval = 128, none skipped; 14 error inputs
    # per dtype. A torch upgrade that changes these numbers should be looked at.
    skipped = [c for c in CASES if c.marks]
    assert len(skipped) == len(SKIPS) == 0
    assert len(CASES) == 128
    assert len(_error_cases()) == 28
