"""PackedSequence input without unpacking or repacking, and inter-layer dropout drawn on the
packed tokens (nn.LSTM's RNG use).

- torch.compile(fullgraph=True) over PackedSequence input compiles with no graph break
  (the old repacking graph-broke at repeat_interleave), with nn.LSTM's results;
- in training with dropout, the same seed gives nn.LSTM's masks on the CPU, both for
  PackedSequence input and for `lengths=` (judged by nn.LSTM over
  pack_padded_sequence(enforce_sorted=False)): outputs, states and gradients match.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import fastlstm
from helpers import assert_close, make_pair

F64 = torch.float64


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _packed_case(enforce_sorted, batch_first=False):
    T, B, I = 7, 5, 3
    # Ties (5, 5) on purpose: the sort order of equal lengths must be the one of pack_*.
    lengths = [7, 5, 5, 2, 1] if enforce_sorted else [5, 7, 1, 5, 2]
    x = _randn(B, T, I) if batch_first else _randn(T, B, I)
    return x, lengths


@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_compiles_fullgraph_without_graph_break(enforce_sorted, with_hx):
    ref, fast = make_pair(3, 4, F64, num_layers=2, bidirectional=True, proj_size=2)
    x, lengths = _packed_case(enforce_sorted)
    xc, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    packed = pack_padded_sequence(xc, lengths, enforce_sorted=enforce_sorted)
    hx = (_randn(4, 5, 2, seed=1), _randn(4, 5, 4, seed=2)) if with_hx else None
    torch._dynamo.reset()
    try:
        if enforce_sorted and not with_hx:
            # B is then the data value batch_sizes[0] (nn.LSTM reads it with int() too):
            # fullgraph needs capture_scalar_outputs (README, "Differences from nn.LSTM").
            ctx = torch._dynamo.config.patch(capture_scalar_outputs=True)
        else:
            ctx = torch._dynamo.config.patch({})
        with ctx:
            explained = torch._dynamo.explain(fast)(packed, hx)
            assert explained.graph_break_count == 0, explained.break_reasons
            torch._dynamo.reset()
            compiled = torch.compile(fast, fullgraph=True, backend="aot_eager")
            out, (h_n, c_n) = compiled(packed, hx)
    finally:
        torch._dynamo.reset()
    (g_compiled,) = torch.autograd.grad(out.data.pow(2).sum() + h_n.sum(), xc)
    expected, (eh, ec) = ref(pack_padded_sequence(xr, lengths, enforce_sorted=enforce_sorted),
                             hx)
    (g_expected,) = torch.autograd.grad(expected.data.pow(2).sum() + eh.sum(), xr)
    assert_close("compiled grad_input", g_compiled, g_expected)
    assert isinstance(out, PackedSequence)
    assert torch.equal(out.batch_sizes, expected.batch_sizes)
    assert_close("compiled packed output.data", out.data, expected.data)
    assert_close("compiled h_n", h_n, eh)
    assert_close("compiled c_n", c_n, ec)


def test_packed_forward_uses_no_unpack_or_repeat_interleave(monkeypatch):
    """The packed path must not call pad_packed_sequence nor repeat_interleave."""
    _, fast = make_pair(3, 4, F64, num_layers=2)
    x, lengths = _packed_case(False)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)

    def refuse(*args, **kwargs):
        raise AssertionError("the packed fast path must not unpack or repeat_interleave")

    import torch.nn.utils.rnn as rnn
    monkeypatch.setattr(rnn, "pad_packed_sequence", refuse)
    monkeypatch.setattr(torch, "repeat_interleave", refuse)
    import fastlstm.modules as modules
    if hasattr(modules, "pad_packed_sequence"):
        monkeypatch.setattr(modules, "pad_packed_sequence", refuse)
    out, _ = fast(packed)
    assert isinstance(out, PackedSequence)


@pytest.mark.parametrize("form", ["packed", "lengths"])
@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_masks_match_nn_lstm_seed_for_seed(bidirectional, enforce_sorted, form):
    """nn.LSTM over a PackedSequence draws each inter-layer dropout mask for the packed tokens
    [N, D*Hout] in packed order; fastlstm draws the same, so the same seed gives the same
    masks: outputs, states and every gradient match nn.LSTM (3 layers: two masks)."""
    p = 0.4
    ref, fast = make_pair(3, 5, F64, num_layers=3, dropout=p, bidirectional=bidirectional,
                          proj_size=3)
    ref.train()
    fast.train()
    x, lengths = _packed_case(enforce_sorted)
    T = x.shape[0]
    g = None
    results = []
    for model in (ref, fast):
        model.zero_grad()
        xl = x.clone().requires_grad_()
        packed = pack_padded_sequence(xl, lengths, enforce_sorted=enforce_sorted)
        torch.manual_seed(3)
        if model is ref:
            out, (h_n, c_n) = model(packed)
            out = pad_packed_sequence(out, total_length=T)[0]
        elif form == "packed":
            out, (h_n, c_n) = model(packed)
            out = pad_packed_sequence(out, total_length=T)[0]
        else:
            out, (h_n, c_n) = model(xl, lengths=lengths)
        if g is None:
            gen = torch.Generator().manual_seed(9)
            g = [torch.randn(t.shape, generator=gen, dtype=F64) for t in (out, h_n, c_n)]
        ((out * g[0]).sum() + (h_n * g[1]).sum() + (c_n * g[2]).sum()).backward()
        results.append((out, h_n, c_n, xl.grad,
                        {n: q.grad for n, q in model.named_parameters()}))
    (eo, eh, ec, egx, egw), (ao, ah, ac, agx, agw) = results
    # Sanity: dropout did act (eval gives something else).
    with torch.no_grad():
        ref.eval()
        plain = pad_packed_sequence(ref(pack_padded_sequence(
            x, lengths, enforce_sorted=enforce_sorted))[0], total_length=T)[0]
    assert (plain - eo).abs().max() > 1e-3
    assert_close("output (same seed)", ao, eo)
    assert_close("h_n (same seed)", ah, eh)
    assert_close("c_n (same seed)", ac, ec)
    assert_close("grad_input (same seed)", agx, egx)
    for name in egw:
        assert_close("grad." + name, agw[name], egw[name])


def test_dropout_without_lengths_still_matches_padded_nn_lstm():
    """lengths=None: nn.LSTM on padded input draws on the whole [T, B, D*H] tensor, and so
    does fastlstm (unchanged)."""
    ref, fast = make_pair(3, 5, F64, num_layers=2, dropout=0.5)
    x = _randn(6, 4, 3)
    torch.manual_seed(4)
    eo, (eh, ec) = ref(x)
    torch.manual_seed(4)
    ao, (ah, ac) = fast(x)
    assert_close("output", ao, eo)
    assert_close("h_n", ah, eh)
