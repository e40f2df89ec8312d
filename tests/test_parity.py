"""Parity of fastlstm.LSTM with torch.nn.LSTM (the judge), run through packing.

Expected values always come from nn.LSTM (see helpers.reference_forward), never from fastlstm.
Run with `pytest -s` to see the max abs diff of every compared quantity.
"""

import math
import random
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastlstm
from helpers import (LONG_PARAM_GRAD_SCALED_ATOL, as_list, assert_close, check_parity,
                     make_pair, padding_mask, param_grad_tolerance, random_lengths,
                     reference_forward, tol, upstream_grads)

F64 = torch.float64
F32 = torch.float32


def randn(*shape, dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=F64).to(dtype)


def make_hx(ref, B, dtype, seed=1, batched=True):
    D = 2 if ref.bidirectional else 1
    hout = ref.proj_size if ref.proj_size > 0 else ref.hidden_size
    lead = (ref.num_layers * D, B) if batched else (ref.num_layers * D,)
    return (randn(*lead, hout, dtype=dtype, seed=seed),
            randn(*lead, ref.hidden_size, dtype=dtype, seed=seed + 1))


def time_major_input(T, B, I, dtype, batch_first=False, seed=0):
    return randn(B, T, I, dtype=dtype, seed=seed) if batch_first else \
        randn(T, B, I, dtype=dtype, seed=seed)


# ---------------------------------------------------------------------------------------------
# The grid, along sensible axes.


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_layers_and_directions(num_layers, bidirectional):
    T, B, I, H = 7, 5, 4, 6
    ref, fast = make_pair(I, H, F64, num_layers=num_layers, bidirectional=bidirectional)
    lengths = [3, 7, 1, 5, 6]  # unsorted, one full, one of length 1
    check_parity(ref, fast, time_major_input(T, B, I, F64), lengths, make_hx(ref, B, F64))


@pytest.mark.parametrize("bidirectional,proj_size", [(False, 0), (True, 0), (True, 3)])
@pytest.mark.parametrize("kind", ["full", "random", "has_one", "has_zero", "all_zero"])
def test_length_kinds(kind, bidirectional, proj_size):
    T, B, I, H = 6, 6, 3, 5
    gen = torch.Generator().manual_seed(7)
    lengths = random_lengths(kind, B, T, gen)
    ref, fast = make_pair(I, H, F64, num_layers=2, bidirectional=bidirectional,
                          proj_size=proj_size)
    check_parity(ref, fast, time_major_input(T, B, I, F64), lengths, make_hx(ref, B, F64))


@pytest.mark.parametrize("proj_size", [0, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_flags(batch_first, bias, proj_size):
    T, B, I, H = 5, 4, 3, 4
    ref, fast = make_pair(I, H, F64, num_layers=2, bidirectional=True, bias=bias,
                          batch_first=batch_first, proj_size=proj_size)
    lengths = [2, 0, 5, 3]
    check_parity(ref, fast, time_major_input(T, B, I, F64, batch_first), lengths,
                 make_hx(ref, B, F64))


@pytest.mark.parametrize("T,B,I,H,lengths", [
    (6, 1, 3, 4, [6]),        # B = 1
    (6, 1, 3, 4, [4]),        # B = 1, shorter than T
    (5, 3, 3, 1, [5, 2, 0]),  # H = 1
    (5, 3, 1, 4, [1, 5, 3]),  # I = 1
    (1, 4, 3, 4, [1, 0, 1, 1]),  # T = 1
    (1, 1, 1, 1, [1]),        # everything 1
    (1, 1, 1, 1, [0]),        # a single empty sequence
])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_odd_sizes(T, B, I, H, lengths, bidirectional):
    ref, fast = make_pair(I, H, F64, num_layers=2, bidirectional=bidirectional)
    check_parity(ref, fast, time_major_input(T, B, I, F64), lengths, make_hx(ref, B, F64))


@pytest.mark.parametrize("view_kind", ["slice_features", "transposed", "strided_batch",
                                       "expanded", "batch_first_transposed"])
def test_non_contiguous_input(view_kind):
    T, B, I, H = 6, 4, 3, 5
    batch_first = view_kind == "batch_first_transposed"
    if view_kind == "slice_features":     # last dim has stride 2
        base, view = randn(T, B, 2 * I), (lambda t: t[..., ::2])
    elif view_kind == "transposed":        # (B, T, I) storage seen as (T, B, I)
        base, view = randn(B, T, I), (lambda t: t.transpose(0, 1))
    elif view_kind == "strided_batch":     # every other sequence of a larger batch
        base, view = randn(T, 2 * B, I), (lambda t: t[:, ::2])
    elif view_kind == "expanded":          # batch stride 0: one sequence repeated
        base, view = randn(T, 1, I), (lambda t: t.expand(T, B, I))
    else:                                  # (T, B, I) storage seen as (B, T, I)
        base, view = randn(T, B, I), (lambda t: t.transpose(0, 1))
    assert not view(base).is_contiguous()
    ref, fast = make_pair(I, H, F64, num_layers=2, bidirectional=True, batch_first=batch_first)
    check_parity(ref, fast, base, [6, 2, 0, 5], make_hx(ref, B, F64), view=view)


@pytest.mark.parametrize("layout", ["batch_first", "sliced", "strided_batch", "broadcast",
                                    "features_stride_2", "scalar_broadcast"])
def test_non_contiguous_grad_output(layout):
    """The backward gathers grad_output's rows by element offsets, without a copy where the last
    dim is contiguous: a gradient of any strides (a batch-first model's, which the op sees
    transposed; a slice; a broadcast) gives nn.LSTM's gradients, and bit for bit those of its
    contiguous copy."""
    T, B, I, H = 7, 4, 3, 5
    lengths = [7, 2, 0, 5]
    batch_first = layout == "batch_first"
    ref, fast = make_pair(I, H, F64, bidirectional=True, batch_first=batch_first)
    lead = (B, T) if batch_first else (T, B)
    if layout == "batch_first":          # contiguous [B, T, 2H]: time-major, it is transposed
        grad = randn(*lead, 2 * H, seed=3)
    elif layout == "sliced":             # the middle of wider rows
        grad = randn(*lead, 6 * H, seed=3)[..., H:3 * H]
    elif layout == "strided_batch":      # every other sequence of a larger batch
        grad = randn(T, 2 * B, 2 * H, seed=3)[:, ::2]
    elif layout == "broadcast":          # strides (0, 0, 1)
        grad = randn(2 * H, seed=3).expand(*lead, 2 * H)
    elif layout == "scalar_broadcast":   # strides (0, 0, 0), as out.sum() gives: copied
        grad = randn(1, seed=3).expand(*lead, 2 * H)
    else:                                # last dim stride 2: the op copies it
        grad = randn(*lead, 4 * H, seed=3)[..., ::2]
    assert batch_first or not grad.is_contiguous()
    x = time_major_input(T, B, I, F64, batch_first)

    def gradients(module, run, upstream):
        xl = x.clone().requires_grad_()
        names, params = zip(*module.named_parameters())
        grads = torch.autograd.grad(run(xl), [xl, *params], upstream)
        return dict(zip(["grad_input", *("grad." + n for n in names)], grads))

    want = gradients(ref, lambda xl: reference_forward(ref, xl, lengths)[0], grad)
    run_fast = lambda xl: fast(xl, lengths=torch.tensor(lengths))[0]  # noqa: E731
    got = gradients(fast, run_fast, grad)
    copy = gradients(fast, run_fast, grad.contiguous())
    assert set(got) == set(want)
    for name in want:
        assert_close(name, got[name], want[name], F64)
        assert torch.equal(got[name], copy[name]), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["scalar_broadcast", "features_stride_2"])
def test_copied_grad_output_in_every_dtype(dtype, layout, monkeypatch):
    """In a serial call (contended, csrc/cpu/contention.h) the CPU op copies a grad_output whose
    last dim is not contiguous itself, element by element at the dtype's width: every gradient
    equals that of grad_output.contiguous()."""
    monkeypatch.setenv("FASTLSTM_CPU_CONTENTION", "on")
    T, B, I, H = 9, 5, 6, 8
    torch.manual_seed(0)
    fast = fastlstm.LSTM(I, H, bidirectional=True).to(dtype)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([9, 3, 0, 7, 1])
    if layout == "scalar_broadcast":
        grad = torch.randn(1, dtype=dtype).expand(T, B, 2 * H)
    else:
        grad = torch.randn(T, B, 4 * H, dtype=dtype)[..., ::2]
    wrt = [x, *fast.parameters()]

    def gradients(upstream):
        return torch.autograd.grad(fast(x, lengths=lengths)[0], wrt, upstream)

    for got, want in zip(gradients(grad), gradients(grad.contiguous())):
        assert torch.equal(got, want)


@pytest.mark.parametrize("cfg", [
    dict(num_layers=1, bidirectional=False),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, bidirectional=True, proj_size=5),
    dict(num_layers=3, bidirectional=False, bias=False, batch_first=True),
], ids=["uni", "bi2", "bi2_proj", "uni3_nobias_bf"])
@pytest.mark.parametrize("kind", ["random", "has_zero"])
def test_float32(cfg, kind):
    T, B, I, H = 40, 8, 13, 32
    gen = torch.Generator().manual_seed(3)
    lengths = random_lengths(kind, B, T, gen)
    ref, fast = make_pair(I, H, F32, **cfg)
    x = time_major_input(T, B, I, F32, cfg.get("batch_first", False))
    check_parity(ref, fast, x, lengths, make_hx(ref, B, F32))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F64, F32])
def test_sizes_that_split_across_threads(dtype):
    """Large enough that the CPU kernels' parallel_for splits rows and tokens across threads
    (cell kernels: > 16384 / (4H) rows; row copies: > 16384 / C rows)."""
    T, B, I, H = 40, 150, 16, 64
    gen = torch.Generator().manual_seed(4)
    lengths = random_lengths("has_zero", B, T, gen)
    ref, fast = make_pair(I, H, dtype, num_layers=2, bidirectional=True)
    check_parity(ref, fast, time_major_input(T, B, I, dtype), lengths, make_hx(ref, B, dtype))


def test_non_contiguous_hx():
    ref, fast = make_pair(3, 5, F64, num_layers=2, bidirectional=True, proj_size=2)
    h0, c0 = make_hx(ref, 4, F64)
    hx = tuple(t.transpose(0, 1).contiguous().transpose(0, 1) for t in (h0, c0))
    assert not hx[0].is_contiguous() and not hx[1].is_contiguous()
    check_parity(ref, fast, randn(6, 4, 3), [6, 0, 2, 5], hx)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_without_autograd(mode):
    ref, fast = make_pair(3, 5, F64, num_layers=2, bidirectional=True)
    x, lengths, hx = randn(6, 4, 3), [6, 1, 3, 4], make_hx(ref, 4, F64)
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with ctx:
        out, (h_n, c_n) = fast(x, hx, lengths=lengths)
    with torch.no_grad():
        e_out, e_h, e_c = reference_forward(ref, x, lengths, hx)
    assert not out.requires_grad
    assert_close("output", out, e_out)
    assert_close("h_n", h_n, e_h)
    assert_close("c_n", c_n, e_c)


@pytest.mark.parametrize("terms", [("output",), ("h_n",), ("c_n",), ("h_n", "c_n")])
def test_partial_losses(terms):
    """Gradients when only some of output / h_n / c_n feed the loss (undefined grads)."""
    ref, fast = make_pair(3, 4, F64, num_layers=2, bidirectional=True, proj_size=2)
    check_parity(ref, fast, randn(5, 4, 3), [5, 0, 2, 3], make_hx(ref, 4, F64), terms=terms)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_input_without_grad(bidirectional):
    ref, fast = make_pair(3, 4, F64, num_layers=2, bidirectional=bidirectional)
    check_parity(ref, fast, randn(5, 4, 3), [5, 0, 2, 3], make_hx(ref, 4, F64),
                 x_requires_grad=False)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_hx_none(bidirectional):
    ref, fast = make_pair(3, 4, F64, num_layers=2, bidirectional=bidirectional, proj_size=3)
    check_parity(ref, fast, randn(5, 4, 3), [5, 0, 2, 3], None)


def _sample_cases(n, seed=2024):
    rng = random.Random(seed)
    cases = []
    for k in range(n):
        H = rng.choice([1, 2, 4, 7, 16])
        c = dict(
            num_layers=rng.choice([1, 2, 3]), bidirectional=rng.random() < 0.5,
            batch_first=rng.random() < 0.5, bias=rng.random() < 0.7,
            proj_size=rng.choice([0, 0, rng.randrange(1, H)]) if H > 1 else 0,
            H=H, I=rng.choice([1, 3, 5, 9]), T=rng.choice([1, 2, 5, 9, 17]),
            B=rng.choice([1, 2, 3, 6, 11]),
            kind=rng.choice(["full", "random", "has_one", "has_zero"]),
            dtype=rng.choice([F64, F64, F32]), hx=rng.random() < 0.6,
            noncontig=rng.random() < 0.3, seed=k)
        cases.append(c)
    return cases


@pytest.mark.parametrize("case", _sample_cases(30), ids=lambda c: f"s{c['seed']}")
def test_random_sample(case):
    """A seeded random sample of the full cartesian grid."""
    c = case
    print(c)
    gen = torch.Generator().manual_seed(100 + c["seed"])
    lengths = random_lengths(c["kind"], c["B"], c["T"], gen)
    ref, fast = make_pair(c["I"], c["H"], c["dtype"], seed=c["seed"], num_layers=c["num_layers"],
                          bidirectional=c["bidirectional"], batch_first=c["batch_first"],
                          bias=c["bias"], proj_size=c["proj_size"])
    shape = (c["B"], c["T"]) if c["batch_first"] else (c["T"], c["B"])
    if c["noncontig"]:
        base, view = randn(*shape, 2 * c["I"], dtype=c["dtype"]), (lambda t: t[..., 1::2])
    else:
        base, view = randn(*shape, c["I"], dtype=c["dtype"]), (lambda t: t)
    hx = make_hx(ref, c["B"], c["dtype"]) if c["hx"] else None
    check_parity(ref, fast, base, lengths, hx, view=view)


class _PaddedLSTM(nn.LSTM):
    """A wrong candidate: nn.LSTM on the padded batch with outputs masked past the lengths (the
    classic mistake: h_n/c_n from step T-1, the reverse direction starting at T-1)."""

    def forward(self, input, hx=None, lengths=None):
        out, (h, c) = super().forward(input, hx)
        pad = padding_mask(lengths, out.shape[1 if self.batch_first else 0], self.batch_first)
        return out.masked_fill(pad[..., None], 0), (h, c)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_harness_rejects_padded_semantics(bidirectional):
    """check_parity must fail a candidate that ignores the lengths (so it can fail at all)."""
    ref, _ = make_pair(3, 4, F64, bidirectional=bidirectional)
    wrong = _PaddedLSTM(3, 4, bidirectional=bidirectional, dtype=F64)
    wrong.load_state_dict(ref.state_dict())
    with pytest.raises(AssertionError):
        check_parity(ref, wrong, randn(6, 3, 3), [6, 2, 4], make_hx(ref, 3, F64))
    # ...and passes it where lengths are all full (same semantics there).
    check_parity(ref, wrong, randn(6, 3, 3), [6, 6, 6], make_hx(ref, 3, F64))


# ---------------------------------------------------------------------------------------------
# Padding content never reaches a result.


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("batch_first", [False, True])
def test_nan_inf_padding(batch_first, dtype):
    T, B, I, H = 7, 5, 3, 4
    lengths = [7, 2, 0, 5, 1]
    ref, fast = make_pair(I, H, dtype, num_layers=2, bidirectional=True, proj_size=3,
                          batch_first=batch_first)
    clean = time_major_input(T, B, I, dtype, batch_first)
    pad = padding_mask(lengths, T, batch_first)
    poisoned = clean.clone()
    fill = torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype)
    poisoned[pad] = fill[torch.arange(int(pad.sum())) % 3][:, None].expand(-1, I)
    assert not torch.isfinite(poisoned).all()
    hx = make_hx(ref, B, dtype)
    # Upstream gradient of the output is NaN / Inf in the padding too: it must be ignored.
    grads = upstream_grads([(B, T, 6) if batch_first else (T, B, 6), (4, B, 3), (4, B, 4)],
                           dtype, seed=5)
    grads[0][pad] = math.nan
    grads[0][pad.roll(1, 0) & pad] = math.inf

    diffs = check_parity(ref, fast, poisoned, lengths, hx, grads=grads)
    assert set(diffs) >= {"output", "h_n", "c_n", "grad_input", "grad_h_0", "grad_c_0"}

    # And the results on poisoned input are those on clean input, all finite.
    results = []
    for x in (clean, poisoned):
        x = x.clone().requires_grad_()
        hxl = tuple(t.clone().requires_grad_() for t in hx)
        fast.zero_grad()
        out, (h_n, c_n) = fast(x, hxl, lengths=lengths)
        # The NaN / Inf upstream grads in the padding reach the op's backward as they are.
        ((out * grads[0]).sum() + (h_n * grads[1]).sum() + (c_n * grads[2]).sum()).backward()
        res = [out, h_n, c_n, x.grad, hxl[0].grad, hxl[1].grad] + \
            [p.grad.clone() for p in fast.parameters()]
        for r in res:
            assert torch.isfinite(r).all()
        results.append(res)
    for a, b in zip(*results):
        assert_close("poisoned vs clean", b, a, dtype)


# ---------------------------------------------------------------------------------------------
# Input forms.


@pytest.mark.parametrize("with_hx", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_sequence(bidirectional, enforce_sorted, batch_first, with_hx):
    T, B, I, H = 6, 4, 3, 5
    lengths = [6, 4, 4, 1] if enforce_sorted else [4, 6, 1, 4]
    ref, fast = make_pair(I, H, F64, num_layers=2, bidirectional=bidirectional, proj_size=2,
                          batch_first=batch_first)
    x = randn(B, T, I) if batch_first else randn(T, B, I)
    hx = make_hx(ref, B, F64)
    results = []
    for model in (ref, fast):
        xl = x.clone().requires_grad_()
        hxl = tuple(t.clone().requires_grad_() for t in hx) if with_hx else None
        packed = pack_padded_sequence(xl, lengths, batch_first=batch_first,
                                      enforce_sorted=enforce_sorted)
        model.zero_grad()
        out, (h_n, c_n) = model(packed, hxl)
        assert isinstance(out, PackedSequence)
        g = upstream_grads([out.data.shape, h_n.shape, c_n.shape], F64, seed=9)
        ((out.data * g[0]).sum() + (h_n * g[1]).sum() + (c_n * g[2]).sum()).backward()
        g_h0, g_c0 = (hxl[0].grad, hxl[1].grad) if with_hx else (h_n.new_zeros(0),) * 2
        results.append((out, h_n, c_n, xl.grad, g_h0, g_c0,
                        dict((n, p.grad) for n, p in model.named_parameters())))
    (eo, eh, ec, egx, egh, egc, egw), (ao, ah, ac, agx, agh, agc, agw) = results
    assert torch.equal(ao.batch_sizes, eo.batch_sizes)
    for name in ("sorted_indices", "unsorted_indices"):
        e, a = getattr(eo, name), getattr(ao, name)
        assert (e is None) == (a is None), name
        if e is not None:
            assert torch.equal(a, e), name
    assert_close("packed output.data", ao.data, eo.data)
    assert_close("h_n", ah, eh)
    assert_close("c_n", ac, ec)
    assert_close("grad_input", agx, egx)
    assert_close("grad_h_0", agh, egh)
    assert_close("grad_c_0", agc, egc)
    for name in egw:
        assert_close("grad." + name, agw[name], egw[name])


def test_packed_sequence_rejects_lengths():
    _, fast = make_pair(3, 4, F64)
    packed = pack_padded_sequence(randn(5, 2, 3), [5, 3])
    with pytest.raises(ValueError):
        fast(packed, lengths=[5, 3])


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("length", [None, 7, 4, 0, "tensor4"])
def test_unbatched(length, bidirectional):
    T, I, H = 7, 3, 5
    ref, fast = make_pair(I, H, F64, num_layers=2, bidirectional=bidirectional, proj_size=2)
    x = randn(T, I)
    h0, c0 = make_hx(ref, 1, F64, batched=False)
    assert h0.dim() == 2
    as_tensor = length == "tensor4"
    if as_tensor:
        length = 4
    n = T if length is None else length
    g = upstream_grads([(T, (2 if bidirectional else 1) * 2), h0.shape, c0.shape], F64, seed=4)
    results = []
    for model in (ref, fast):
        xl, h0l, c0l = (t.clone().requires_grad_() for t in (x, h0, c0))
        model.zero_grad()
        if model is ref:
            if n > 0:
                out, (h_n, c_n) = ref(xl[:n], (h0l, c0l))  # nn.LSTM unbatched on the prefix
                out = torch.cat([out, out.new_zeros(T - n, out.shape[1])])
            else:
                out, h_n, c_n = xl.new_zeros(T, g[0].shape[1]), h0l * 1, c0l * 1
        else:
            lengths = None if length is None else [length]
            if as_tensor:
                lengths = torch.tensor(lengths)
            out, (h_n, c_n) = fast(xl, (h0l, c0l), lengths=lengths)
        assert out.shape == (T, g[0].shape[1]) and h_n.shape == h0.shape
        ((out * g[0]).sum() + (h_n * g[1]).sum() + (c_n * g[2]).sum()).backward()
        grads = [xl.grad, h0l.grad, c0l.grad] + [
            p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        results.append([out, h_n, c_n] + grads)
    names = ["output", "h_n", "c_n", "grad_input", "grad_h_0", "grad_c_0"] + \
        ["grad." + n for n, _ in ref.named_parameters()]
    for name, e, a in zip(names, *results):
        assert_close(name, a if a is not None else torch.zeros_like(e),
                     e if e is not None else torch.zeros_like(a))
    assert torch.all(results[1][0][n:] == 0)


@pytest.mark.parametrize("form", ["list", "tuple", "int32_tensor", "int64_tensor",
                                  "strided_int64_tensor"])
def test_lengths_forms(form):
    lengths = [3, 6, 0, 1, 4]
    arg = {"list": lambda: list(lengths), "tuple": lambda: tuple(lengths),
           "int32_tensor": lambda: torch.tensor(lengths, dtype=torch.int32),
           "int64_tensor": lambda: torch.tensor(lengths, dtype=torch.int64),
           "strided_int64_tensor": lambda: torch.tensor([v for n in lengths for v in (n, 99)])[::2],
           }[form]()
    assert as_list(arg) == lengths
    ref, fast = make_pair(3, 4, F64, num_layers=2, bidirectional=True)
    check_parity(ref, fast, randn(6, 5, 3), lengths, make_hx(ref, 5, F64), lengths_arg=arg)


# ---------------------------------------------------------------------------------------------
# Parameters: names, init, state_dict.


@pytest.mark.parametrize("cfg", [
    dict(),
    dict(num_layers=3, bidirectional=True),
    dict(num_layers=2, bidirectional=True, proj_size=3, bias=False),
    dict(num_layers=2, proj_size=2, batch_first=True),
])
def test_same_seed_same_init(cfg):
    torch.manual_seed(123)
    ref = nn.LSTM(5, 7, **cfg)
    torch.manual_seed(123)
    fast = fastlstm.LSTM(5, 7, **cfg)
    ref_params = list(ref.named_parameters())
    fast_params = list(fast.named_parameters())
    assert [n for n, _ in fast_params] == [n for n, _ in ref_params]
    for (name, a), (_, b) in zip(ref_params, fast_params):
        assert a.shape == b.shape, name
        assert torch.equal(a, b), name
    assert list(ref.state_dict().keys()) == list(fast.state_dict().keys())
    assert fast._flat_weights_names == ref._flat_weights_names
    assert [[w.shape for w in ws] for ws in fast.all_weights] == \
        [[w.shape for w in ws] for ws in ref.all_weights]
    # The RNG is left in the same state too.
    torch.manual_seed(123)
    nn.LSTM(5, 7, **cfg)
    after_ref = torch.rand(3)
    torch.manual_seed(123)
    fastlstm.LSTM(5, 7, **cfg)
    assert torch.equal(torch.rand(3), after_ref)


@pytest.mark.parametrize("cfg", [dict(num_layers=2, bidirectional=True),
                                 dict(num_layers=2, bidirectional=True, proj_size=2)])
def test_state_dict_round_trip(cfg):
    x, lengths = randn(5, 3, 4), [5, 2, 3]
    torch.manual_seed(1)
    ref = nn.LSTM(4, 6, dtype=F64, **cfg)
    torch.manual_seed(2)
    fast = fastlstm.LSTM(4, 6, dtype=F64, **cfg)
    assert not torch.equal(ref.weight_ih_l0, fast.weight_ih_l0)

    # nn.LSTM -> fastlstm
    fast.load_state_dict(ref.state_dict())
    out_r, h_r, c_r = reference_forward(ref, x, lengths)
    out_f, (h_f, c_f) = fast(x, lengths=lengths)
    for name, a, e in (("output", out_f, out_r), ("h_n", h_f, h_r), ("c_n", c_f, c_r)):
        assert_close("nn->fast " + name, a, e)

    # fastlstm -> nn.LSTM (fresh weights on the fastlstm side first)
    with torch.no_grad():
        for p in fast.parameters():
            p.uniform_(-0.5, 0.5)
    ref2 = nn.LSTM(4, 6, dtype=F64, **cfg)
    ref2.load_state_dict(fast.state_dict())
    for (n, a), (_, b) in zip(ref2.named_parameters(), fast.named_parameters()):
        assert torch.equal(a, b), n
    out_r, h_r, c_r = reference_forward(ref2, x, lengths)
    out_f, (h_f, c_f) = fast(x, lengths=lengths)
    for name, a, e in (("output", out_f, out_r), ("h_n", h_f, h_r), ("c_n", c_f, c_r)):
        assert_close("fast->nn " + name, a, e)


# ---------------------------------------------------------------------------------------------
# A very long sequence.


@pytest.mark.slow
@pytest.mark.parametrize("bidirectional", [False, True])
def test_long_sequence(bidirectional):
    """T = 70000 with tiny sizes, lengths [70000, 12345]. nn.LSTM's packed CPU path takes ~7
    minutes to backpropagate 70000 steps, so the judge is nn.LSTM run per sequence on its own
    valid prefix, unpacked (identical semantics for one sequence): float32 values and
    gradients through oneDNN's fused kernel (< 1 s), and float64 values (no grad, ~2 s) for a
    tight check. fastlstm.reference (a Python loop per step) would take far longer.
    Tolerances: see helpers.LONG_PARAM_GRAD_SCALED_ATOL."""
    T, B, I, H = 70000, 2, 3, 4
    D = 2 if bidirectional else 1
    lengths = [70000, 12345]
    ref, fast = make_pair(I, H, F32, seed=0, bidirectional=bidirectional)
    x = randn(T, B, I, dtype=F32, seed=11)
    hx = make_hx(ref, B, F32, seed=12)
    g_out, g_h, g_c = upstream_grads([(T, B, D * H), (D, B, H), (D, B, H)], F32, seed=13)

    xf = x.clone().requires_grad_()
    hxf = tuple(t.clone().requires_grad_() for t in hx)
    out, (h_n, c_n) = fast(xf, hxf, lengths=lengths)
    ((out * g_out).sum() + (h_n * g_h).sum() + (c_n * g_c).sum()).backward()
    assert torch.all(out[lengths[1]:, 1] == 0)
    assert torch.all(xf.grad[lengths[1]:, 1] == 0)

    ref.zero_grad()
    t = tol(F32)
    for b, n in enumerate(lengths):
        xb = x[:n, b:b + 1].clone().requires_grad_()
        hb = tuple(h[:, b:b + 1].clone().requires_grad_() for h in hx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ob, (hnb, cnb) = ref(xb, hb)
        ((ob * g_out[:n, b:b + 1]).sum() + (hnb * g_h[:, b:b + 1]).sum() +
         (cnb * g_c[:, b:b + 1]).sum()).backward()  # parameter grads accumulate over b
        assert_close(f"output[b={b}]", out[:n, b:b + 1], ob, tolerance=t)
        assert_close(f"h_n[b={b}]", h_n[:, b:b + 1], hnb, tolerance=t)
        assert_close(f"c_n[b={b}]", c_n[:, b:b + 1], cnb, tolerance=t)
        assert_close(f"grad_input[b={b}]", xf.grad[:n, b:b + 1], xb.grad, tolerance=t)
        assert_close(f"grad_h_0[b={b}]", hxf[0].grad[:, b:b + 1], hb[0].grad, tolerance=t)
        assert_close(f"grad_c_0[b={b}]", hxf[1].grad[:, b:b + 1], hb[1].grad, tolerance=t)
    for (name, pr), (_, pf) in zip(ref.named_parameters(), fast.named_parameters()):
        assert_close("grad." + name, pf.grad, pr.grad,
                     tolerance=param_grad_tolerance(pr.grad, LONG_PARAM_GRAD_SCALED_ATOL))

    if not bidirectional:
        return
    # float64 values, tight (nn.LSTM's float64 CPU loop takes ~2 s: done once, bidirectional).
    ref64, fast64 = ref.double(), fast.double()
    x64, hx64 = x.double(), tuple(h.double() for h in hx)
    with torch.no_grad():
        out, (h_n, c_n) = fast64(x64, hx64, lengths=lengths)
        assert torch.all(out[lengths[1]:, 1] == 0)
        for b, n in enumerate(lengths):
            ob, (hnb, cnb) = ref64(x64[:n, b:b + 1], tuple(h[:, b:b + 1] for h in hx64))
            assert_close(f"f64 output[b={b}]", out[:n, b:b + 1], ob)
            assert_close(f"f64 h_n[b={b}]", h_n[:, b:b + 1], hnb)
            assert_close(f"f64 c_n[b={b}]", c_n[:, b:b + 1], cnb)


# ---------------------------------------------------------------------------------------------
# Dropout.


def test_dropout_warning_like_nn():
    with pytest.warns(UserWarning):
        fastlstm.LSTM(3, 4, num_layers=1, dropout=0.5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_eval_equals_no_dropout(bidirectional):
    ref, fast = make_pair(3, 5, F64, num_layers=3, dropout=0.6, bidirectional=bidirectional)
    ref.eval()
    fast.eval()
    check_parity(ref, fast, randn(6, 4, 3), [6, 0, 3, 1], make_hx(ref, 4, F64))


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("bidirectional,proj_size", [(False, 0), (True, 0), (True, 2)])
@pytest.mark.parametrize("lengths_kind", ["none", "full_list"])
def test_dropout_training_full_lengths_seeded(bidirectional, proj_size, dtype, lengths_kind):
    """All sequences full: nn.LSTM on the padded tensor and fastlstm both apply torch dropout
    to the [T, B, D*Hout] output of each layer but the last, so the same seed before each call
    gives the same masks, and the same outputs and gradients."""
    T, B, I, H, p = 6, 4, 3, 5, 0.4
    ref, fast = make_pair(I, H, dtype, num_layers=3, dropout=p, bidirectional=bidirectional,
                          proj_size=proj_size)
    assert ref.training and fast.training
    x, hx = randn(T, B, I, dtype=dtype), make_hx(ref, B, dtype)
    lengths = None if lengths_kind == "none" else [T] * B
    results = []
    for model in (ref, fast):
        xl = x.clone().requires_grad_()
        hxl = tuple(t.clone().requires_grad_() for t in hx)
        model.zero_grad()
        torch.manual_seed(77)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # oneDNN's "projections not supported" notice
            if model is ref:
                out, (h_n, c_n) = ref(xl, hxl)
            else:
                out, (h_n, c_n) = fast(xl, hxl, lengths=lengths)
        g = upstream_grads([out.shape, h_n.shape, c_n.shape], dtype, seed=3)
        ((out * g[0]).sum() + (h_n * g[1]).sum() + (c_n * g[2]).sum()).backward()
        results.append([out, h_n, c_n, xl.grad, hxl[0].grad, hxl[1].grad] +
                       [q.grad for q in model.parameters()])
    names = ["output", "h_n", "c_n", "grad_input", "grad_h_0", "grad_c_0"] + \
        ["grad." + n for n, _ in ref.named_parameters()]
    for name, e, a in zip(names, *results):
        assert_close(name, a, e)
    # Dropout really was on: eval mode differs.
    ref.eval()
    out_eval, _ = ref(x, hx)
    assert (out_eval - results[0][0]).abs().max() > 1e-3


def _transparent_second_layer(fast, bidirectional):
    """Sets layer 1 so that its output reveals its (dropped-out) input element by element:
    W_hh = 0, forget gate 0, g = tanh(x[k]) with direction d reading input features
    [d*H, (d+1)*H). Then out[t, b, d*H + k] = o * tanh(i * tanh(x2[t, b, d*H + k])), which is 0
    exactly when dropout zeroed x2[t, b, d*H + k] (layer 0's outputs are never exactly 0)."""
    H = fast.hidden_size
    i_bias, o_bias = 1.5, 0.5
    with torch.no_grad():
        for d, sfx in enumerate(["", "_reverse"][: 2 if bidirectional else 1]):
            w_ih = getattr(fast, "weight_ih_l1" + sfx)
            w_ih.zero_()
            w_ih[2 * H:3 * H, d * H:(d + 1) * H] = torch.eye(H, dtype=w_ih.dtype)
            getattr(fast, "weight_hh_l1" + sfx).zero_()
            b = getattr(fast, "bias_ih_l1" + sfx)
            b.zero_()
            b[:H], b[H:2 * H], b[3 * H:] = i_bias, -1e4, o_bias
            getattr(fast, "bias_hh_l1" + sfx).zero_()
    i, o = torch.sigmoid(torch.tensor(i_bias, dtype=F64)), torch.sigmoid(torch.tensor(o_bias,
                                                                                      dtype=F64))
    return lambda x2: o * torch.tanh(i * torch.tanh(x2))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_training_variable_lengths(bidirectional):
    """Variable lengths: nn.LSTM drops out packed data, so masks can't match seed for seed.
    With a second layer that reveals which of its inputs were dropped (see above) this checks:
    drop rate ~ p (binomial bounds), kept values scaled by 1/(1-p) (layer 0's output taken from
    nn.LSTM), padding exactly 0, h_n at each sequence's own last step, same seed -> same
    result, different seed -> different masks."""
    T, B, I, H, p = 30, 8, 3, 6, 0.3
    D = 2 if bidirectional else 1
    torch.manual_seed(0)
    fast = fastlstm.LSTM(I, H, num_layers=2, dropout=p, bidirectional=bidirectional, dtype=F64)
    layer1_of = _transparent_second_layer(fast, bidirectional)
    # Layer 0 alone as nn.LSTM, the judge of what enters the dropout.
    ref0 = nn.LSTM(I, H, bidirectional=bidirectional, dtype=F64)
    ref0.load_state_dict({k: v for k, v in fast.state_dict().items() if "_l0" in k})
    gen = torch.Generator().manual_seed(1)
    lengths = random_lengths("has_zero", B, T, gen)
    x = randn(T, B, I)
    with torch.no_grad():
        x1, _, _ = reference_forward(ref0, x, lengths)
    valid = ~padding_mask(lengths, T, False)

    torch.manual_seed(10)
    out, (h_n, c_n) = fast(x, lengths=lengths)
    torch.manual_seed(10)
    out_again, (h_again, c_again) = fast(x, lengths=lengths)
    torch.manual_seed(11)
    out_other, _ = fast(x, lengths=lengths)
    assert torch.equal(out, out_again) and torch.equal(h_n, h_again) and torch.equal(c_n, c_again)

    assert torch.all(out[~valid] == 0), "padding must stay exactly 0 in training mode"
    kept = out[valid] != 0                      # [N, D*H]
    n = kept.numel()
    drop_rate = 1 - kept.double().mean().item()
    sd = math.sqrt(p * (1 - p) / n)
    print(f"drop rate {drop_rate:.4f} over {n} elements (p = {p}, sd {sd:.4f})")
    assert abs(drop_rate - p) < 5 * sd
    # Kept values are layer 1 of (x1 / (1 - p)); dropped ones are 0.
    expected = torch.where(kept, layer1_of(x1[valid] / (1 - p)), torch.zeros_like(x1[valid]))
    assert_close("output given the mask", out[valid], expected)
    # h_n of layer 1 at each sequence's own last step (reverse: at step 0); c_n/h_n of layer 0
    # from nn.LSTM.
    with torch.no_grad():
        _, h0_ref, c0_ref = reference_forward(ref0, x, lengths)
    assert_close("h_n layer 0", h_n[:D], h0_ref)
    assert_close("c_n layer 0", c_n[:D], c0_ref)
    for b, length in enumerate(lengths):
        if length == 0:
            assert torch.all(h_n[D:, b] == 0)
            continue
        assert torch.equal(h_n[D, b], out[length - 1, b, :H])
        if bidirectional:
            assert torch.equal(h_n[D + 1, b], out[0, b, H:])
    # Another seed draws another mask, with about the same rate.
    kept_other = out_other[valid] != 0
    assert (kept_other != kept).double().mean() > 0.5 * 2 * p * (1 - p)
    # Eval mode: no dropout at all.
    fast.eval()
    out_eval, _ = fast(x, lengths=lengths)
    assert torch.all(out_eval[valid] != 0)
    assert_close("eval output", out_eval[valid], layer1_of(x1[valid]))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_training_variable_lengths_gradients(bidirectional):
    """Gradients in training mode with variable lengths: with the mask read off the output
    (see _transparent_second_layer), nn.LSTM layer 0 -> mask / (1-p) -> nn.LSTM layer 1
    (packed) is the judge for every gradient."""
    T, B, I, H, p = 9, 5, 3, 4, 0.5
    D = 2 if bidirectional else 1
    torch.manual_seed(0)
    fast = fastlstm.LSTM(I, H, num_layers=2, dropout=p, bidirectional=bidirectional, dtype=F64)
    _transparent_second_layer(fast, bidirectional)
    lengths = [9, 0, 4, 1, 6]
    x = randn(T, B, I)
    hx = make_hx(fast, B, F64)
    g = upstream_grads([(T, B, D * H), (2 * D, B, H), (2 * D, B, H)], F64, seed=2)

    xf = x.clone().requires_grad_()
    hxf = tuple(t.clone().requires_grad_() for t in hx)
    torch.manual_seed(5)
    out, (h_n, c_n) = fast(xf, hxf, lengths=lengths)
    ((out * g[0]).sum() + (h_n * g[1]).sum() + (c_n * g[2]).sum()).backward()
    valid = ~padding_mask(lengths, T, False)
    mask = (out.detach() != 0) & valid[:, :, None]
    assert 0 < mask.sum() < valid.sum() * D * H  # something was dropped, something kept

    refs = []
    for layer in range(2):
        r = nn.LSTM(I if layer == 0 else D * H, H, bidirectional=bidirectional, dtype=F64)
        r.load_state_dict({k.replace(f"_l{layer}", "_l0"): v
                           for k, v in fast.state_dict().items() if f"_l{layer}" in k})
        refs.append(r)
    xr = x.clone().requires_grad_()
    hxr = tuple(t.clone().requires_grad_() for t in hx)
    o0, h0n, c0n = reference_forward(refs[0], xr, lengths, (hxr[0][:D], hxr[1][:D]))
    x2 = o0 * mask / (1 - p)
    o1, h1n, c1n = reference_forward(refs[1], x2, lengths, (hxr[0][D:], hxr[1][D:]))
    h_ref, c_ref = torch.cat([h0n, h1n]), torch.cat([c0n, c1n])
    ((o1 * g[0]).sum() + (h_ref * g[1]).sum() + (c_ref * g[2]).sum()).backward()

    assert_close("output", out, o1)
    assert_close("h_n", h_n, h_ref)
    assert_close("c_n", c_n, c_ref)
    assert_close("grad_input", xf.grad, xr.grad)
    assert_close("grad_h_0", hxf[0].grad, hxr[0].grad)
    assert_close("grad_c_0", hxf[1].grad, hxr[1].grad)
    for name, pf in fast.named_parameters():
        layer = 0 if "_l0" in name else 1
        pr = getattr(refs[layer], name.replace(f"_l{layer}", "_l0"))
        assert_close("grad." + name, pf.grad, pr.grad)
